/*
 * address.c - XEP-0106 escaping and E.164 normalization (address.h).
 *
 * Both run at the edge: a JID's localpart at the SMS domain goes through
 * pl_gw_e164 before anything is stored, so the queue, the history and
 * Kannel only ever see "+<digits>"; a localpart at the mail domain goes
 * through pl_gw_unescape.  Nothing here allocates except the result.
 */
#include <string.h>

#include "alloc.h"
#include "error.h"
#include "gateway/address.h"

/* XEP-0106 §3.1, the table: character and its two hex digits. */
static const struct {
    char c;
    char hex[3];
} esc[] = {
    {' ', "20"}, {'"', "22"}, {'&', "26"}, {'\'', "27"}, {'/', "2f"},
    {':', "3a"}, {'<', "3c"}, {'>', "3e"}, {'@', "40"},  {'\\', "5c"},
};
#define NESC (sizeof(esc) / sizeof(esc[0]))

/* The character that the escape sequence at p ("\xx") stands for, or 0. */
static char sequence_at(const char *p)
{
    if (p[0] != '\\' || !p[1] || !p[2])
        return 0;
    for (size_t i = 0; i < NESC; i++)
        if (p[1] == esc[i].hex[0] && p[2] == esc[i].hex[1])
            return esc[i].c;
    return 0;
}

int pl_gw_escape(const char *in, char **out)
{
    size_t n = strlen(in);
    if (n == 0 || in[0] == ' ' || in[n - 1] == ' ')
        return PL_EINVAL;
    char *r = pl_malloc(3 * n + 1), *w = r;
    for (const char *p = in; *p; p++) {
        size_t i = 0;
        while (i < NESC && esc[i].c != *p)
            i++;
        /* §3.2: a backslash is escaped only where it would otherwise be
         * read back as the start of an escape sequence. */
        if (i < NESC && (*p != '\\' || sequence_at(p))) {
            *w++ = '\\';
            *w++ = esc[i].hex[0];
            *w++ = esc[i].hex[1];
        } else {
            *w++ = *p;
        }
    }
    *w = '\0';
    *out = r;
    return PL_OK;
}

int pl_gw_unescape(const char *in, char **out)
{
    size_t n = strlen(in);
    if (n == 0)
        return PL_EINVAL;
    char *r = pl_malloc(n + 1), *w = r;
    for (const char *p = in; *p;) {
        char c = sequence_at(p);
        if (c) {
            *w++ = c;
            p += 3;
        } else {
            *w++ = *p++;
        }
    }
    *w = '\0';
    *out = r;
    return PL_OK;
}

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static int is_separator(char c)
{
    return c == ' ' || c == '.' || c == '-' || c == '(' || c == ')';
}

int pl_gw_e164(const char *in, const char *default_cc, char **out)
{
    char digits[32];
    size_t nd = 0;
    const char *p = in;
    int intl = 0;
    if (*p == '+') {
        intl = 1;
        p++;
        if (!is_digit(*p))
            return PL_EINVAL;
    }
    for (; *p; p++) {
        if (is_separator(*p))
            continue;
        if (!is_digit(*p) || nd >= sizeof(digits) - 1)
            return PL_EINVAL;
        digits[nd++] = *p;
    }
    digits[nd] = '\0';
    const char *d = digits;
    char buf[40];
    if (!intl && nd > 2 && d[0] == '0' && d[1] == '0') {
        d += 2; /* 00: the international prefix */
    } else if (!intl) {
        if (!default_cc || !default_cc[0])
            return PL_EINVAL;
        for (const char *c = default_cc; *c; c++)
            if (!is_digit(*c))
                return PL_EINVAL;
        if (d[0] == '0')
            d++; /* the national trunk prefix */
        if (strlen(default_cc) + strlen(d) >= sizeof(buf))
            return PL_EINVAL;
        strcpy(buf, default_cc);
        strcat(buf, d);
        d = buf;
    }
    size_t len = strlen(d);
    /* A country code never starts with 0; E.164 has at most 15 digits. */
    if (len < 6 || len > 15 || d[0] == '0')
        return PL_EINVAL;
    char *r = pl_malloc(len + 2);
    r[0] = '+';
    memcpy(r + 1, d, len + 1);
    *out = r;
    return PL_OK;
}
