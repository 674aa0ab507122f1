/*
 * fuzz_jid.c - libFuzzer target for JID parsing and preparation (jid.c).
 *
 * Input: the bytes of an address, as a peer would put them in a 'to' or
 * 'from' attribute (any bytes: jid.c must refuse what is not UTF-8).
 *
 * Invariants checked (abort() on violation):
 * - pl_jid_parse() returns PL_OK or PL_EJID_MALFORMED and nothing else;
 * - an accepted JID is consistent: domain non-empty, bare is
 *   [local "@"] domain, full is bare ["/" resource], each part 1..1023
 *   bytes, no '@' or '/' in the localpart, no '/' in the domainpart;
 * - preparation is idempotent: full parses back to the same JID, and bare
 *   to the same bare JID;
 * - the part-wise functions agree: pl_jid_prep_local/domain/resource of
 *   each prepared part give the part back, and pl_jid_make() of the parts
 *   gives the same full JID;
 * - pl_jid_bare() and pl_jid_dup() copy faithfully.
 * The part-wise functions are also run on the raw input, which must give
 * PL_OK or PL_EJID_MALFORMED (or PL_ENOMEM-free failures: anything but a
 * crash); whatever they accept must be a fixed point too.
 *
 * Extending: add checks in check_jid().
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "error.h"
#include "jid.h"
#include "log.h"

static void die(const char *what, const char *a, const char *b)
{
    fprintf(stderr, "fuzz_jid: invariant violated: %s\n", what);
    fprintf(stderr, "  first:  %s\n", a ? a : "(null)");
    fprintf(stderr, "  second: %s\n", b ? b : "(null)");
    abort();
}

static int streq(const char *a, const char *b)
{
    return !a || !b ? a == b : strcmp(a, b) == 0;
}

static void check_rc(int rc, const char *what)
{
    if (rc != PL_OK && rc != PL_EJID_MALFORMED)
        die("unexpected error code", what, pl_strerror(rc));
}

static void check_part(const char *part)
{
    size_t n = strlen(part);
    if (n == 0 || n > 1023)
        die("part length out of 1..1023", part, part);
}

/* prep(p) must be p. */
static void fixed_point(int (*prep)(struct pl_str, char **), const char *p,
                        const char *what)
{
    char *again = NULL;
    int rc = prep(pl_str_c(p), &again);
    if (rc != PL_OK)
        die(what, p, "(refused)");
    if (strcmp(again, p) != 0)
        die(what, p, again);
    pl_free(again);
}

static void same_jid(const struct pl_jid *a, const struct pl_jid *b,
                     const char *what)
{
    if (!streq(a->local, b->local) || !streq(a->domain, b->domain) ||
        !streq(a->resource, b->resource) || !streq(a->bare, b->bare) ||
        !streq(a->full, b->full))
        die(what, a->full, b->full);
}

static void check_jid(const struct pl_jid *j)
{
    if (!j->domain || !j->bare || !j->full)
        die("missing domain, bare or full", j->full, j->bare);
    check_part(j->domain);
    if (strchr(j->domain, '/'))
        die("'/' in the domainpart", j->domain, j->full);
    if (j->local) {
        check_part(j->local);
        if (strpbrk(j->local, "@/"))
            die("'@' or '/' in the localpart", j->local, j->full);
    }
    if (j->resource)
        check_part(j->resource);

    /* bare and full are built from the parts. */
    size_t ll = j->local ? strlen(j->local) : 0, dl = strlen(j->domain);
    size_t bl = strlen(j->bare);
    if (bl != (j->local ? ll + 1 : 0) + dl ||
        (j->local &&
         (strncmp(j->bare, j->local, ll) != 0 || j->bare[ll] != '@')) ||
        strcmp(j->bare + bl - dl, j->domain) != 0)
        die("bare is not [local@]domain", j->bare, j->full);
    if (j->resource) {
        if (strncmp(j->full, j->bare, bl) != 0 || j->full[bl] != '/' ||
            strcmp(j->full + bl + 1, j->resource) != 0)
            die("full is not bare/resource", j->full, j->bare);
    } else if (strcmp(j->full, j->bare) != 0) {
        die("full differs from bare without a resource", j->full, j->bare);
    }

    /* Idempotence: what we store parses back to itself. */
    struct pl_jid *again = NULL;
    int rc = pl_jid_parse(pl_str_c(j->full), &again);
    if (rc != PL_OK)
        die("prepared full JID does not parse", j->full, pl_strerror(rc));
    same_jid(j, again, "full JID does not re-parse to itself");
    pl_jid_free(again);

    again = NULL;
    rc = pl_jid_parse(pl_str_c(j->bare), &again);
    if (rc != PL_OK)
        die("prepared bare JID does not parse", j->bare, pl_strerror(rc));
    if (again->resource || !streq(again->bare, j->bare))
        die("bare JID does not re-parse to itself", j->bare, again->full);
    pl_jid_free(again);

    /* The part-wise API agrees with the parser. */
    if (j->local)
        fixed_point(pl_jid_prep_local, j->local, "prep_local moved a part");
    fixed_point(pl_jid_prep_domain, j->domain, "prep_domain moved a part");
    if (j->resource)
        fixed_point(pl_jid_prep_resource, j->resource,
                    "prep_resource moved a part");
    again = NULL;
    rc = pl_jid_make(j->local, j->domain, j->resource, &again);
    if (rc != PL_OK)
        die("pl_jid_make refused the parts", j->full, pl_strerror(rc));
    same_jid(j, again, "pl_jid_make differs from pl_jid_parse");
    pl_jid_free(again);

    struct pl_jid *b = pl_jid_bare(j), *d = pl_jid_dup(j);
    if (b->resource || !streq(b->bare, j->bare) || !streq(b->full, j->bare))
        die("pl_jid_bare", j->full, b->full);
    same_jid(j, d, "pl_jid_dup");
    pl_jid_free(b);
    pl_jid_free(d);
}

static void check_prep(int (*prep)(struct pl_str, char **), struct pl_str in,
                       const char *what)
{
    char *out = NULL;
    int rc = prep(in, &out);
    check_rc(rc, what);
    if (rc != PL_OK)
        return;
    check_part(out);
    fixed_point(prep, out, what);
    pl_free(out);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    pl_log_set_level(PL_LOG_ERROR);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A copy of exactly size bytes, so ASan sees any overread. */
    char *buf = pl_malloc(size ? size : 1);
    if (size)
        memcpy(buf, data, size);
    struct pl_str in = {size ? buf : NULL, size};

    struct pl_jid *j = NULL;
    int rc = pl_jid_parse(in, &j);
    check_rc(rc, "pl_jid_parse");
    if (rc == PL_OK) {
        check_jid(j);
        pl_jid_free(j);
    } else if (j) {
        die("out parameter set on failure", "", "");
    }

    check_prep(pl_jid_prep_local, in, "prep_local is not idempotent");
    check_prep(pl_jid_prep_domain, in, "prep_domain is not idempotent");
    check_prep(pl_jid_prep_resource, in, "prep_resource is not idempotent");

    pl_free(buf);
    return 0;
}
