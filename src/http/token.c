/*
 * token.c - the admin API's bearer tokens in <data_dir>/api_tokens; see
 * token.h for the file's format and the API.
 */
#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "error.h"
#include "http/token.h"

struct entry {
    char name[PL_TOKEN_NAME_MAX + 1]; /* [A-Za-z0-9._-]+ */
    int scope;                        /* enum pl_token_scope */
    long long created;                /* Unix time */
    unsigned char hash[32];           /* SHA-256 of the token */
};

static const char *const scopes[] = {"admin", "read", NULL};

const char *pl_token_scope_name(int scope)
{
    return scope >= 0 && scope <= PL_TOKEN_READ ? scopes[scope] : "?";
}

int pl_token_path(const char *data_dir, char *out, size_t len)
{
    int n = snprintf(out, len, "%s/%s", data_dir, PL_TOKEN_FILE);
    return n > 0 && (size_t)n < len ? PL_OK : PL_EINVAL;
}

static int name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > PL_TOKEN_NAME_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

static int unhex(const char *s, unsigned char *out, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int v = 0;
        for (int k = 0; k < 2; k++) {
            char c = s[2 * i + k];
            int d = c >= '0' && c <= '9'   ? c - '0'
                    : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                           : -1;
            if (d < 0)
                return PL_EINVAL;
            v = v * 16 + d;
        }
        out[i] = (unsigned char)v;
    }
    return PL_OK;
}

/* Reads the file into a new array: PL_OK with *out (NULL-free even when
 * empty) and *n; a missing file is an empty list; a bad line is skipped. */
static int load(const char *path, struct entry **out, int *n)
{
    *out = pl_calloc(1, sizeof(**out));
    *n = 0;
    FILE *f = fopen(path, "re");
    if (!f)
        return errno == ENOENT ? PL_OK : PL_EIO;
    char line[512];
    int cap = 1;
    while (fgets(line, sizeof(line), f)) {
        char name[PL_TOKEN_NAME_MAX + 2], scope[16], hex[80];
        long long created;
        if (sscanf(line, "%65s %15s %lld %79s", name, scope, &created, hex) !=
                4 ||
            !name_ok(name) || strlen(hex) != 64)
            continue;
        struct entry e = {0};
        memcpy(e.name, name, strlen(name) + 1); /* name_ok: fits */
        e.scope = -1;
        for (int i = 0; scopes[i]; i++)
            if (strcmp(scopes[i], scope) == 0)
                e.scope = i;
        e.created = created;
        if (e.scope < 0 || unhex(hex, e.hash, 32) != PL_OK)
            continue;
        if (*n == cap) {
            cap *= 2;
            *out = pl_realloc(*out, (size_t)cap * sizeof(**out));
        }
        (*out)[(*n)++] = e;
    }
    int rc = ferror(f) ? PL_EIO : PL_OK;
    fclose(f);
    return rc;
}

/* Writes the list to path through a temporary file renamed over it. */
static int save(const char *path, const struct entry *v, int n)
{
    char tmp[4200];
    if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
        return PL_EINVAL;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return PL_EIO;
    FILE *f = fdopen(fd, "w");
    if (!f) {
        close(fd);
        unlink(tmp);
        return PL_EIO;
    }
    for (int i = 0; i < n; i++) {
        fprintf(f, "%s %s %lld ", v[i].name, scopes[v[i].scope], v[i].created);
        for (int k = 0; k < 32; k++)
            fprintf(f, "%02x", v[i].hash[k]);
        fputc('\n', f);
    }
    int ok = fflush(f) == 0 && fsync(fileno(f)) == 0;
    ok = fclose(f) == 0 && ok;
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        return PL_EIO;
    }
    return PL_OK;
}

static void sha256(const char *p, size_t n, unsigned char out[32])
{
    unsigned int len = 32;
    if (!EVP_Digest(p, n, out, &len, EVP_sha256(), NULL))
        abort(); /* no SHA-256: nothing can be checked safely */
}

int pl_token_create(const char *path, const char *name, int scope,
                    char out[PL_TOKEN_LEN + 1])
{
    if (!name_ok(name) || scope < 0 || scope > PL_TOKEN_READ)
        return PL_EINVAL;
    struct entry *v;
    int n, rc = load(path, &v, &n);
    if (rc != PL_OK)
        goto out;
    for (int i = 0; i < n; i++)
        if (strcmp(v[i].name, name) == 0) {
            rc = PL_ECONFLICT;
            goto out;
        }
    unsigned char r[32];
    if (getrandom(r, sizeof(r), 0) != (ssize_t)sizeof(r)) {
        rc = PL_EIO;
        goto out;
    }
    memcpy(out, "plt_", 4);
    for (int k = 0; k < 32; k++)
        snprintf(out + 4 + 2 * k, 3, "%02x", r[k]);
    OPENSSL_cleanse(r, sizeof(r));
    v = pl_realloc(v, (size_t)(n + 1) * sizeof(*v));
    struct entry *e = &v[n++];
    memset(e, 0, sizeof(*e));
    snprintf(e->name, sizeof(e->name), "%s", name);
    e->scope = scope;
    e->created = (long long)time(NULL);
    sha256(out, PL_TOKEN_LEN, e->hash);
    rc = save(path, v, n);
    if (rc != PL_OK)
        OPENSSL_cleanse(out, PL_TOKEN_LEN + 1);
out:
    pl_free(v);
    return rc;
}

int pl_token_revoke(const char *path, const char *name)
{
    struct entry *v;
    int n, rc = load(path, &v, &n);
    if (rc == PL_OK) {
        int k = 0;
        for (int i = 0; i < n; i++)
            if (strcmp(v[i].name, name) != 0)
                v[k++] = v[i];
        rc = k == n ? PL_ENOT_FOUND : save(path, v, k);
    }
    pl_free(v);
    return rc;
}

int pl_token_list(const char *path,
                  void (*fn)(const char *name, int scope, long long created,
                             void *ud),
                  void *ud)
{
    struct entry *v;
    int n, rc = load(path, &v, &n);
    for (int i = 0; rc == PL_OK && i < n; i++)
        fn(v[i].name, v[i].scope, v[i].created, ud);
    pl_free(v);
    return rc;
}

/* parleyd's copy of the file, and what it was read from. */
static struct entry *cached;
static int ncached;
static struct stat cached_st;
static int have_cache;

void pl_token_forget(void)
{
    if (cached)
        OPENSSL_cleanse(cached, (size_t)ncached * sizeof(*cached));
    pl_free(cached);
    cached = NULL;
    ncached = 0;
    have_cache = 0;
}

int pl_token_check(const char *path, struct pl_str token,
                   char name[PL_TOKEN_NAME_MAX + 1], int *scope)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        if (errno != ENOENT)
            return PL_EIO;
        memset(&st, 0, sizeof(st)); /* no file: no token */
    }
    if (!have_cache || st.st_ino != cached_st.st_ino ||
        st.st_size != cached_st.st_size ||
        st.st_mtim.tv_sec != cached_st.st_mtim.tv_sec ||
        st.st_mtim.tv_nsec != cached_st.st_mtim.tv_nsec) {
        pl_token_forget();
        if (load(path, &cached, &ncached) != PL_OK) {
            pl_token_forget();
            return PL_EIO;
        }
        cached_st = st;
        have_cache = 1;
    }
    unsigned char h[32];
    sha256(token.p, token.len, h);
    /* Every entry is compared, all 32 bytes each: the time taken says
     * nothing about which hash came close. */
    int found = -1;
    for (int i = 0; i < ncached; i++) {
        int eq = CRYPTO_memcmp(h, cached[i].hash, 32) == 0;
        found = eq ? i : found;
    }
    if (found < 0)
        return PL_ENOT_FOUND;
    snprintf(name, PL_TOKEN_NAME_MAX + 1, "%s", cached[found].name);
    *scope = cached[found].scope;
    return PL_OK;
}
