/*
 * buf.c - growable byte buffers; see buf.h.
 */
#include "buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"

static void reserve(struct pl_buf *b, size_t extra)
{
    if (b->off + b->len + extra + 1 <= b->cap)
        return;
    if (b->off) { /* compact before growing */
        memmove(b->data, b->data + b->off, b->len);
        b->off = 0;
        if (b->len + extra + 1 <= b->cap)
            return;
    }
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra + 1)
        cap *= 2;
    b->data = pl_realloc(b->data, cap);
    b->cap = cap;
}

void pl_buf_append(struct pl_buf *b, const void *p, size_t n)
{
    if (!n)
        return;
    reserve(b, n);
    memcpy(b->data + b->off + b->len, p, n);
    b->len += n;
}

void pl_buf_append_str(struct pl_buf *b, const char *s)
{
    pl_buf_append(b, s, strlen(s));
}

void pl_buf_printf(struct pl_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n <= 0)
        return;
    reserve(b, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(b->data + b->off + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void pl_buf_append_escaped(struct pl_buf *b, const char *s, size_t n, int attr)
{
    size_t start = 0;
    for (size_t i = 0; i < n; i++) {
        const char *rep = NULL;
        switch (s[i]) {
        case '&': rep = "&amp;"; break;
        case '<': rep = "&lt;"; break;
        case '>': rep = "&gt;"; break;
        case '\'': rep = attr ? "&apos;" : NULL; break;
        case '"': rep = attr ? "&quot;" : NULL; break;
        default: break;
        }
        if (rep) {
            pl_buf_append(b, s + start, i - start);
            pl_buf_append_str(b, rep);
            start = i + 1;
        }
    }
    pl_buf_append(b, s + start, n - start);
}

void pl_buf_consume(struct pl_buf *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
        b->off = 0;
        return;
    }
    b->off += n;
    b->len -= n;
}

void pl_buf_reset(struct pl_buf *b)
{
    pl_free(b->data);
    b->data = NULL;
    b->len = b->off = b->cap = 0;
}

const char *pl_buf_cstr(struct pl_buf *b)
{
    reserve(b, 0);
    b->data[b->off + b->len] = '\0';
    return b->data + b->off;
}
