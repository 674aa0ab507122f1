/*
 * fuzz_upload_slot.c - libFuzzer target for XEP-0363 slot tokens
 * (src/modules/upload/slot.c), the text a PUT's Authorization field
 * carries, unauthenticated, to the HTTP front end.
 *
 * Input: the first byte picks the mode.
 * - Even: the rest is a token, checked as a PUT does (peek, then verify
 *   with a fixed key), from a heap copy of exactly those bytes.
 * - Odd: the rest is split at newlines into the slot's fields (host, id,
 *   name, type, owner, size, expires), signed, and checked back.
 *
 * Invariants checked (abort() on violation):
 * - peek and verify return PL_OK, PL_EINVAL or (verify) PL_EFORBIDDEN;
 * - a token that verifies also peeks, to the same fields, and signing
 *   those fields again gives the very same token (one spelling per slot);
 * - a signed slot verifies with its key, to the same fields, and is
 *   PL_EFORBIDDEN with another key.
 *
 * Extending: a new invariant goes in check_token() or check_sign().
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "modules/upload/upload.h"

static const unsigned char key[32] = "fuzz-key-fuzz-key-fuzz-key-fuzz";
static const unsigned char other[32] = "another-key-another-key-another";

static void die(const char *what)
{
    fprintf(stderr, "fuzz_upload_slot: invariant violated: %s\n", what);
    abort();
}

static int same(const struct upload_slot *a, const struct upload_slot *b)
{
    return !strcmp(a->host, b->host) && !strcmp(a->id, b->id) &&
           !strcmp(a->name, b->name) && !strcmp(a->type, b->type) &&
           !strcmp(a->owner, b->owner) && a->size == b->size &&
           a->expires == b->expires;
}

static void check_token(const uint8_t *p, size_t n)
{
    char *copy = malloc(n ? n : 1);
    if (!copy)
        die("out of memory");
    memcpy(copy, p, n);
    struct pl_str tok = {copy, n};
    struct upload_slot a, b;
    int rp = pl__upload_slot_peek(tok, &a);
    int rv = pl__upload_slot_verify(tok, key, &b);
    if (rp != PL_OK && rp != PL_EINVAL)
        die("peek returned something else");
    if (rv != PL_OK && rv != PL_EINVAL && rv != PL_EFORBIDDEN)
        die("verify returned something else");
    if (rv == PL_OK) {
        if (rp != PL_OK || !same(&a, &b))
            die("verified but does not peek the same");
        struct pl_buf again = {0};
        pl__upload_slot_sign(&b, key, &again);
        struct pl_str t2 = pl_buf_str(&again);
        if (t2.len != n || memcmp(t2.p, copy, n) != 0)
            die("a verified token has another spelling");
        pl_buf_reset(&again);
    }
    free(copy);
}

/* The n bytes at p up to the next newline (or the end) into out. */
static const uint8_t *take(const uint8_t *p, const uint8_t *end, char *out,
                           size_t cap)
{
    size_t i = 0;
    while (p < end && *p != '\n') {
        if (i + 1 < cap && *p)
            out[i++] = (char)*p;
        p++;
    }
    out[i] = '\0';
    return p < end ? p + 1 : p;
}

static void check_sign(const uint8_t *p, size_t n)
{
    const uint8_t *end = p + n;
    struct upload_slot s, got;
    memset(&s, 0, sizeof(s));
    char num[32];
    p = take(p, end, s.host, sizeof(s.host));
    p = take(p, end, s.id, sizeof(s.id));
    p = take(p, end, s.name, sizeof(s.name));
    p = take(p, end, s.type, sizeof(s.type));
    p = take(p, end, s.owner, sizeof(s.owner));
    p = take(p, end, num, sizeof(num));
    s.size = strtoull(num, NULL, 10);
    take(p, end, num, sizeof(num));
    s.expires = (int64_t)(strtoull(num, NULL, 10) >> 1);
    struct pl_buf t = {0};
    pl__upload_slot_sign(&s, key, &t);
    struct pl_str tok = pl_buf_str(&t);
    int rc = pl__upload_slot_verify(tok, key, &got);
    if (tok.len <= 4096) { /* decode()'s bound on a token */
        if (rc != PL_OK)
            die("a signed slot does not verify");
        if (!same(&s, &got))
            die("a signed slot verifies to other fields");
        if (pl__upload_slot_verify(tok, other, &got) != PL_EFORBIDDEN)
            die("a signed slot verifies with another key");
    }
    pl_buf_reset(&t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!size)
        return 0;
    if (data[0] & 1)
        check_sign(data + 1, size - 1);
    else
        check_token(data + 1, size - 1);
    return 0;
}
