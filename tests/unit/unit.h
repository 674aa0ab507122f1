/*
 * unit.h - the tiny framework the C unit tests use.
 *
 * A test is `void test_<name>(void)` in tests/unit/test_<file>.c, listed in
 * list.h.  The runner (runner.c) forks one process per test with a timeout;
 * a test fails if any CHECK fails, if it crashes, or if it times out.
 */
#ifndef PL_UNIT_H
#define PL_UNIT_H

#include <stdio.h>
#include <string.h>

extern int unit_failures;

#define CHECK(cond)                                                            \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "  %s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, \
                    #cond);                                                    \
            unit_failures++;                                                   \
        }                                                                      \
    } while (0)

#define CHECK_INT(a, b)                                                        \
    do {                                                                       \
        long long a_ = (long long)(a), b_ = (long long)(b);                    \
        if (a_ != b_) {                                                        \
            fprintf(stderr, "  %s:%d: %s == %lld, expected %lld\n", __FILE__,  \
                    __LINE__, #a, a_, b_);                                     \
            unit_failures++;                                                   \
        }                                                                      \
    } while (0)

#define CHECK_STR(a, b)                                                        \
    do {                                                                       \
        const char *a_ = (a), *b_ = (b);                                       \
        if (!a_ || !b_ ? a_ != b_ : strcmp(a_, b_) != 0) {                     \
            fprintf(stderr, "  %s:%d: %s == \"%s\", expected \"%s\"\n",        \
                    __FILE__, __LINE__, #a, a_ ? a_ : "(null)",                \
                    b_ ? b_ : "(null)");                                       \
            unit_failures++;                                                   \
        }                                                                      \
    } while (0)

#endif
