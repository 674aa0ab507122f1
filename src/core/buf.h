/*
 * buf.h - struct pl_buf, a growable byte buffer.
 *
 * Used for serialization and for outgoing data that a socket could not take
 * yet.  A buffer holds no memory until the first append, and pl_buf_reset()
 * gives it back, so an idle connection holds no buffer memory.
 */
#ifndef PL_BUF_H
#define PL_BUF_H

#include <stddef.h>

#include "str.h"

struct pl_buf {
    char *data; /* heap bytes, NULL until first append */
    size_t len; /* bytes in use, starting at data + off */
    size_t off; /* consumed prefix not yet compacted */
    size_t cap; /* allocated size */
};

void pl_buf_append(struct pl_buf *b, const void *p, size_t n);
void pl_buf_append_str(struct pl_buf *b, const char *s);
void pl_buf_printf(struct pl_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Appends s with XML escaping of & < > and, when attr, ' and ". */
void pl_buf_append_escaped(struct pl_buf *b, const char *s, size_t n, int attr);
/* Drops n bytes from the front. */
void pl_buf_consume(struct pl_buf *b, size_t n);
/* Frees the memory; the buffer is empty and reusable. */
void pl_buf_reset(struct pl_buf *b);
/* Returns the unconsumed bytes as a span (borrowed). */
static inline struct pl_str pl_buf_str(const struct pl_buf *b)
{
    return (struct pl_str){b->data ? b->data + b->off : NULL, b->len};
}
/* NUL-terminates (without counting the NUL) and returns the bytes. */
const char *pl_buf_cstr(struct pl_buf *b);

#endif
