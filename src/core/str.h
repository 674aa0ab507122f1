/*
 * str.h - struct pl_str, a borrowed byte span (pointer + length).
 *
 * Network bytes are never assumed NUL-terminated; code that reads them takes
 * a pl_str.  A pl_str never owns its bytes.
 */
#ifndef PL_STR_H
#define PL_STR_H

#include <stddef.h>
#include <string.h>

struct pl_str {
    const char *p; /* first byte, may be NULL when len == 0 */
    size_t len;    /* number of bytes */
};

#define PL_STR(lit) ((struct pl_str){(lit), sizeof(lit) - 1})

static inline struct pl_str pl_str_c(const char *s)
{
    return (struct pl_str){s, s ? strlen(s) : 0};
}

static inline int pl_str_eq(struct pl_str a, struct pl_str b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.p, b.p, a.len) == 0);
}

static inline int pl_str_eq_c(struct pl_str a, const char *b)
{
    return pl_str_eq(a, pl_str_c(b));
}

/* The value of a hexadecimal digit, -1 if c is not one. */
static inline int pl_hex_value(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* The value of the first parameter name= of a URL query (name=value
 * pairs separated by '&', left undecoded): 1 and *v (maybe empty), or 0
 * when there is none. */
static inline int pl_query_param(struct pl_str q, const char *name,
                                 struct pl_str *v)
{
    size_t n = strlen(name), i = 0;
    while (i < q.len) {
        size_t e = i;
        while (e < q.len && q.p[e] != '&')
            e++;
        if (e - i > n && q.p[i + n] == '=' && memcmp(q.p + i, name, n) == 0) {
            *v = (struct pl_str){q.p + i + n + 1, e - i - n - 1};
            return 1;
        }
        i = e + 1;
    }
    return 0;
}

#endif
