/*
 * fuzz_config.c - libFuzzer target for configuration loading (config.c):
 * the libconfig file, `--set` overrides, the schema checks, and
 * pl_config_apply() as modules call it on their groups.
 *
 * Input: the file's bytes, then up to four `--set` strings, each after a
 * NUL byte.  The file goes to one temporary file in /tmp per process
 * (unlinked at once, rewritten for every input, read through
 * /proc/self/fd) and pl_config_load() reads it; then every result is
 * freed, so LeakSanitizer checks the error paths.
 *
 * Inputs containing "@include" are skipped: libconfig would read whatever
 * file they name (even /dev/stdin, which blocks), which tests the file
 * system rather than the parser, and the configuration is the operator's
 * own file anyway.
 *
 * Invariants checked (abort() on violation): PL_OK or PL_EINVAL with a
 * non-empty NUL-terminated message; on success at least one host, every
 * domain normalized (pl_jid_prep_domain() gives it back), listener ports
 * in 0..65535, limits within their documented bounds.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "alloc.h"
#include "config.h"
#include "error.h"
#include "jid.h"
#include "log.h"

#define MAX_SETS 4

static int fd = -1;   /* the temporary file, already unlinked */
static char path[64]; /* /proc/self/fd/<fd>, which libconfig opens */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char tmp[] = "/tmp/fuzz_config.XXXXXX";
    pl_log_set_level(PL_LOG_ERROR);
    fd = mkstemp(tmp);
    if (fd < 0) {
        perror("fuzz_config: mkstemp");
        abort();
    }
    /* Nothing to clean up, however the process ends (crash, -merge). */
    unlink(tmp);
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    return 0;
}

static void die(const char *what, const char *detail)
{
    fprintf(stderr, "fuzz_config: invariant violated: %s (%s)\n", what,
            detail ? detail : "");
    abort();
}

/* A module's options, of every type, as a module would declare them. */
struct fake_state {
    long n;
    int flag;
    char *s;
    int choice;
    struct pl_strlist list;
};
static const char *const choices[] = {"open", "closed", "networks", NULL};
static const struct pl_option fake_opts[] = {
    {"n", PL_OPT_INT, "5", 1, 60, NULL, "an integer",
     offsetof(struct fake_state, n)},
    {"flag", PL_OPT_BOOL, "false", 0, 0, NULL, "a boolean",
     offsetof(struct fake_state, flag)},
    {"s", PL_OPT_STRING, "\"x\"", 0, 0, NULL, "a string",
     offsetof(struct fake_state, s)},
    {"policy", PL_OPT_ENUM, "\"open\"", 0, 0, choices, "an enum",
     offsetof(struct fake_state, choice)},
    {"networks", PL_OPT_STRLIST, "[\"127.0.0.0/8\"]", 0, 0, NULL, "a list",
     offsetof(struct fake_state, list)},
    {0},
};

static void apply_fake(config_setting_t *group, config_setting_t *fallback,
                       int strict)
{
    struct fake_state st;
    char err[256];
    memset(&st, 0, sizeof(st));
    err[0] = '\0';
    int rc = pl_config_apply(fake_opts, group, fallback, &st, strict, err,
                             sizeof(err));
    if (rc != PL_OK && rc != PL_EINVAL)
        die("pl_config_apply: unexpected code", pl_strerror(rc));
    if (rc == PL_OK &&
        (st.n < 1 || st.n > 60 || !st.s || st.choice < 0 || st.choice > 2))
        die("pl_config_apply: value out of bounds", st.s);
    pl_config_release(fake_opts, &st);
}

static void check(struct pl_config *c)
{
    if (c->nhosts < 1)
        die("no host", "");
    for (int i = 0; i < c->nhosts; i++) {
        char *again = NULL;
        if (pl_jid_prep_domain(pl_str_c(c->hosts[i].domain), &again) != PL_OK ||
            strcmp(again, c->hosts[i].domain) != 0)
            die("host domain not normalized", c->hosts[i].domain);
        pl_free(again);
        if (!c->hosts[i].certificate || !c->hosts[i].key)
            die("host without certificate or key path", c->hosts[i].domain);
        for (int j = 0; j < c->hosts[i].modules.n; j++)
            if (!c->hosts[i].modules.v[j])
                die("NULL module name", c->hosts[i].domain);
        /* Module options as host.c reads them: the module's group inside
         * the host, then the top-level one. */
        apply_fake(config_setting_get_member(c->hosts[i].group, "register"),
                   pl_config_group(c, "register"), 1);
    }
    for (int i = 0; i < c->nlisteners; i++)
        if (c->listeners[i].port < 0 || c->listeners[i].port > 65535 ||
            !c->listeners[i].address || !c->listeners[i].protocol)
            die("listener", c->listeners[i].address);
    const struct pl_settings *s = &c->s;
    if (s->max_stanza_size < 1024 || s->max_depth < 4 || s->max_depth > 1000 ||
        s->workers < 1 || s->workers > 64 || !s->data_dir || !s->sqlite_path ||
        !s->sqlite_path[0] || !s->storage_driver)
        die("settings out of bounds", s->data_dir);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (memmem(data, size, "@include", 8))
        return 0;
    const char *p = (const char *)data, *end = p + size;
    const char *z = memchr(p, '\0', size);
    size_t flen = z ? (size_t)(z - p) : size;

    if (ftruncate(fd, 0) != 0 ||
        (flen && pwrite(fd, p, flen, 0) != (ssize_t)flen))
        die("cannot write the temporary file", path);

    char *sets[MAX_SETS];
    int nsets = 0;
    p = z ? z + 1 : end;
    while (p < end && nsets < MAX_SETS) {
        const char *e = memchr(p, '\0', (size_t)(end - p));
        size_t n = e ? (size_t)(e - p) : (size_t)(end - p);
        sets[nsets++] = pl_strndup(p, n);
        p = e ? e + 1 : end;
    }

    struct pl_config *c = NULL;
    char err[512];
    memset(err, 0x55, sizeof(err));
    int rc = pl_config_load(path, sets, nsets, &c, err, sizeof(err));
    if (rc == PL_OK) {
        if (!c)
            die("PL_OK without a configuration", "");
        check(c);
        pl_config_free(c);
    } else if (rc != PL_EINVAL) {
        die("unexpected code", pl_strerror(rc));
    } else if (!memchr(err, '\0', sizeof(err)) || !err[0]) {
        die("error message empty or not terminated", "");
    }
    for (int i = 0; i < nsets; i++)
        pl_free(sets[i]);
    return 0;
}
