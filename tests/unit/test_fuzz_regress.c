/*
 * test_fuzz_regress.c - regressions found by the fuzz targets in
 * tests/fuzz/.  Each test replays one minimized input (also kept in
 * tests/fuzz/corpus/<target>/crash_<name>) and checks the property the
 * target found violated, so the bug stays fixed once it is.
 */
#include <stdlib.h>

#include "../../src/core/alloc.h"
#include "../../src/core/error.h"
#include "../../src/core/jid.h"
#include "unit.h"

/*
 * fuzz_jid, corpus/jid/crash_alabel_disallowed: the A-label "xn--bsha"
 * decodes to U+2476 U+2476 ("⑶⑶"), which IDNA2008 disallows (RFC 5892;
 * UTS #46 maps it to "(3)").  An accepted domain must be a fixed point of
 * preparation (RFC 7622 §3.2.1: A-labels are converted to U-labels, and
 * the U-label must itself be valid), so either "xn--bsha" is refused, or
 * what it becomes parses back to itself.  Refusing is what RFC 5891 §5.4
 * asks: an A-label is valid only if its U-label converts back to it.
 */
void test_fuzz_jid_alabel_disallowed(void)
{
    static const char *const in[] = {"xn--bsha", "XN--BSHA.example",
                                     "user@xn--bsha.example/r"};
    for (size_t i = 0; i < sizeof(in) / sizeof(in[0]); i++) {
        struct pl_jid *j = NULL;
        int rc = pl_jid_parse(pl_str_c(in[i]), &j);
        if (rc != PL_OK) {
            CHECK_INT(rc, PL_EJID_MALFORMED);
            continue;
        }
        struct pl_jid *again = NULL;
        int rc2 = pl_jid_parse(pl_str_c(j->full), &again);
        if (rc2 != PL_OK)
            fprintf(stderr, "  \"%s\" became \"%s\", which is refused\n",
                    in[i], j->full);
        CHECK_INT(rc2, PL_OK);
        if (again)
            CHECK_STR(again->full, j->full);
        pl_jid_free(again);
        pl_jid_free(j);
    }
    char *d = NULL;
    int rc = pl_jid_prep_domain(PL_STR("xn--bsha"), &d);
    if (rc == PL_OK) {
        char *again = NULL;
        CHECK_INT(pl_jid_prep_domain(pl_str_c(d), &again), PL_OK);
        CHECK_STR(again, d);
        pl_free(again);
        pl_free(d);
    }
}
