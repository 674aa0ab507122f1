/*
 * cross.c - the text rules of the cross-channel directions (cross.h):
 * fitting a text into SMS parts, the SMS made from an e-mail, the
 * address at the start of an SMS for e-mail, report templates, and when
 * an e-mail sender gets a DSN (RFC 3461 NOTIFY).  No state, no I/O.
 */
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "buf.h"
#include "error.h"
#include "gateway/cross.h"
#include "gateway/gateway.h"
#include "gateway/mail/smtp.h"
#include "gateway/sms/gsm.h"

static const char ELLIPSIS[] = "...";

/* Whether text[0..n) + suffix fits max_parts parts. */
static int fits(const char *text, size_t n, const char *suffix,
                unsigned max_parts, int *bad)
{
    struct pl_buf b = {0};
    pl_buf_append(&b, text, n);
    pl_buf_append_str(&b, suffix);
    struct pl_gsm_plan plan;
    int rc = pl_gsm_plan(b.data + b.off, b.len, max_parts, &plan);
    pl_buf_reset(&b);
    if (rc == PL_OK)
        pl_gsm_plan_free(&plan);
    if (rc == PL_EINVAL && bad)
        *bad = 1;
    return rc == PL_OK;
}

/* n moved back to the start of the UTF-8 character it is inside. */
static size_t boundary(const char *text, size_t n)
{
    while (n > 0 && ((unsigned char)text[n] & 0xc0) == 0x80)
        n--;
    return n;
}

/* The longest prefix binary search finds that fits with suffix (the
 * GSM 7-bit prefixes and the UCS-2 ones are each monotonic). */
static size_t search(const char *text, size_t len, const char *suffix,
                     unsigned max_parts)
{
    size_t lo = 0, hi = len; /* lo fits (or is 0), hi + 1 does not */
    while (lo < hi) {
        size_t mid = boundary(text, lo + (hi - lo + 1) / 2);
        if (mid <= lo) {
            /* The character starting after lo: try all of it. */
            size_t next = lo + 1;
            while (next < hi && ((unsigned char)text[next] & 0xc0) == 0x80)
                next++;
            if (fits(text, next, suffix, max_parts, NULL))
                lo = next;
            else
                hi = lo;
            continue;
        }
        if (fits(text, mid, suffix, max_parts, NULL))
            lo = mid;
        else
            hi = mid - 1;
    }
    return boundary(text, lo);
}

int pl_gw_sms_fit(const char *text, size_t len, unsigned max_parts, size_t *fit)
{
    int bad = 0;
    if (fits(text, len, "", max_parts, &bad)) {
        *fit = len;
        return PL_OK;
    }
    if (bad && len > 0)
        return PL_EINVAL;
    *fit = search(text, len, "", max_parts);
    return PL_ELIMIT;
}

/* Appends s squeezed: CR dropped, trailing spaces of each line dropped,
 * runs of blank lines made one, leading and trailing blank lines gone. */
static void squeeze(struct pl_buf *b, const char *s)
{
    size_t start = b->len;
    int blank_run = 0;
    while (*s) {
        size_t n = strcspn(s, "\n");
        size_t e = n;
        while (e > 0 &&
               (s[e - 1] == ' ' || s[e - 1] == '\t' || s[e - 1] == '\r'))
            e--;
        if (e == 0) {
            blank_run++;
        } else {
            if (b->len > start)
                pl_buf_append_str(b, blank_run ? "\n\n" : "\n");
            pl_buf_append(b, s, e);
            blank_run = 0;
        }
        s += n;
        if (*s == '\n')
            s++;
    }
}

int pl_gw_mail_sms_text(const char *sender, const char *subject,
                        const char *text, unsigned max_parts, char **out,
                        int *cut)
{
    struct pl_buf sub = {0}, body = {0}, b = {0};
    squeeze(&sub, subject ? subject : "");
    squeeze(&body, text ? text : "");
    if (sub.len == 0 && body.len == 0) {
        pl_buf_reset(&sub);
        pl_buf_reset(&body);
        return PL_EINVAL;
    }
    pl_buf_printf(&b, "%s: ", sender);
    if (sub.len) {
        /* A subject is one line. */
        for (size_t i = 0; i < sub.len; i++)
            if (sub.data[sub.off + i] == '\n')
                sub.data[sub.off + i] = ' ';
        pl_buf_append(&b, sub.data + sub.off, sub.len);
        if (body.len)
            pl_buf_append_str(&b, "\n");
    }
    pl_buf_append(&b, body.data + body.off, body.len);
    pl_buf_reset(&sub);
    pl_buf_reset(&body);
    const char *t = b.data + b.off;
    size_t fit = 0;
    int rc = pl_gw_sms_fit(t, b.len, max_parts, &fit);
    *cut = 0;
    if (rc == PL_EINVAL) {
        pl_buf_reset(&b);
        return PL_EINVAL;
    }
    if (rc == PL_ELIMIT) {
        fit = search(t, b.len, ELLIPSIS, max_parts);
        /* Not in the middle of a word's trailing spaces. */
        while (fit > 0 && (t[fit - 1] == ' ' || t[fit - 1] == '\n'))
            fit--;
        struct pl_buf c = {0};
        pl_buf_append(&c, t, fit);
        pl_buf_append_str(&c, ELLIPSIS);
        *out = pl_strndup(c.data + c.off, c.len);
        pl_buf_reset(&c);
        *cut = 1;
    } else {
        *out = pl_strndup(t, b.len);
    }
    pl_buf_reset(&b);
    return PL_OK;
}

int pl_gw_sms_mail_split(const char *text, char **addr, char **body)
{
    const char *p = text;
    while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
        p++;
    size_t n = strcspn(p, " \t\r\n");
    size_t an = n;
    while (an > 0 && (p[an - 1] == ':' || p[an - 1] == ','))
        an--;
    if (an == 0 || an > 254 || !memchr(p, '@', an))
        return PL_ENOT_FOUND;
    char path[260], mbox[300];
    snprintf(path, sizeof(path), "<%.*s>", (int)an, p);
    size_t used = 0;
    if (pl_smtp_parse_path(pl_str_c(path), 1, 0, mbox, sizeof(mbox), &used) !=
            PL_OK ||
        used != strlen(path))
        return PL_ENOT_FOUND;
    const char *at = strrchr(mbox, '@');
    /* A domain name with a dot (not an address literal, not "localhost"):
     * "me@home" at the start of a chat is more likely words. */
    if (!at || !strchr(at + 1, '.') || at[1] == '[')
        return PL_ENOT_FOUND;
    const char *r = p + n;
    while (*r == ' ' || *r == '\t' || *r == '\r' || *r == '\n')
        r++;
    size_t rl = strlen(r);
    while (rl > 0 && (r[rl - 1] == ' ' || r[rl - 1] == '\t' ||
                      r[rl - 1] == '\r' || r[rl - 1] == '\n'))
        rl--;
    if (rl == 0)
        return PL_EINVAL;
    *addr = pl_strdup(mbox);
    *body = pl_strndup(r, rl);
    return PL_OK;
}

char *pl_gw_report_text(const char *tmpl, const char *addr, const char *why,
                        const char *id)
{
    struct pl_buf b = {0};
    for (const char *p = tmpl; *p; p++) {
        if (*p != '%' || !p[1]) {
            pl_buf_append(&b, p, 1);
            continue;
        }
        const char *v = NULL;
        switch (p[1]) {
        case 'a': v = addr; break;
        case 'r': v = why; break;
        case 'i': v = id; break;
        case '%': v = "%"; break;
        }
        if (!v && p[1] != 'a' && p[1] != 'r' && p[1] != 'i') {
            pl_buf_append(&b, p, 1);
            continue;
        }
        pl_buf_append_str(&b, v ? v : "");
        p++;
    }
    const char *t = b.len ? b.data + b.off : "";
    size_t fit = b.len;
    if (b.len && pl_gw_sms_fit(t, b.len, 1, &fit) == PL_ELIMIT) {
        fit = search(t, b.len, ELLIPSIS, 1);
        char *r = pl_malloc(fit + sizeof(ELLIPSIS));
        memcpy(r, t, fit);
        memcpy(r + fit, ELLIPSIS, sizeof(ELLIPSIS));
        pl_buf_reset(&b);
        return r;
    }
    char *r = pl_strndup(t, fit);
    pl_buf_reset(&b);
    return r;
}

int pl_gw_dsn_wanted(unsigned notify, int state)
{
    if (state == PL_GW_DELIVERED)
        return (notify & PL_SMTP_NOTIFY_SUCCESS) != 0;
    if (state == PL_GW_FAILED || state == PL_GW_EXPIRED ||
        state == PL_GW_REFUSED)
        return notify == 0 || (notify & PL_SMTP_NOTIFY_FAILURE) != 0;
    return 0;
}
