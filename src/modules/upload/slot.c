/*
 * slot.c - upload slot tokens (see upload.h): what a slot grants, signed
 * so that a PUT is checked with no state kept between the slot request
 * and the upload.
 *
 * A token is base64url(payload) "." base64url(HMAC-SHA256(key, payload)),
 * payload "1\n" host "\n" id "\n" name "\n" type "\n" owner "\n" size
 * "\n" expires: the slot's fields, none of which may hold a newline
 * (mod_upload.c refuses such requests).  The key is derived per host from
 * the server secret (mod_upload.c), so a token of one host is worthless
 * on another, and a restart keeps slots valid.  The client sends it back
 * in the Authorization field the slot names ("Bearer <token>").
 *
 * Extending: a new field goes at the end of the payload with a new
 * version number in front.
 */
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "upload.h"

static const char b64url[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static void enc(const unsigned char *in, size_t n, struct pl_buf *out)
{
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)in[i] << 16;
        if (i + 1 < n)
            v |= (unsigned)in[i + 1] << 8;
        if (i + 2 < n)
            v |= in[i + 2];
        char c[4] = {b64url[(v >> 18) & 63], b64url[(v >> 12) & 63],
                     b64url[(v >> 6) & 63], b64url[v & 63]};
        pl_buf_append(out, c, i + 2 < n ? 4 : i + 1 < n ? 3 : 2);
    }
}

static int val(char c)
{
    const char *p = c ? strchr(b64url, c) : NULL;
    return p ? (int)(p - b64url) : -1;
}

/* Unpadded, canonical base64url into out (at least n * 3 / 4 bytes). */
static int dec(const char *in, size_t n, unsigned char *out, size_t *outlen)
{
    size_t o = 0;
    if (n % 4 == 1)
        return PL_EINVAL;
    for (size_t i = 0; i < n; i += 4) {
        unsigned v = 0;
        size_t k = n - i < 4 ? n - i : 4;
        for (size_t j = 0; j < 4; j++) {
            int d = j < k ? val(in[i + j]) : 0;
            if (d < 0)
                return PL_EINVAL;
            v = v << 6 | (unsigned)d;
        }
        /* Canonical only: the bits past the last byte must be zero
         * (RFC 4648 §3.5), or one token would have several spellings. */
        if ((k == 2 && (v & 0xffff)) || (k == 3 && (v & 0xff)))
            return PL_EINVAL;
        out[o++] = (unsigned char)(v >> 16);
        if (k > 2)
            out[o++] = (unsigned char)(v >> 8);
        if (k > 3)
            out[o++] = (unsigned char)v;
    }
    *outlen = o;
    return PL_OK;
}

void pl__upload_new_id(char *id)
{
    unsigned char rnd[PL_UPLOAD_ID_LEN * 3 / 4];
    ssize_t got = getrandom(rnd, sizeof(rnd), 0);
    pl_assert(got == (ssize_t)sizeof(rnd));
    struct pl_buf b = {0};
    enc(rnd, sizeof(rnd), &b);
    pl_assert(b.len == PL_UPLOAD_ID_LEN);
    memcpy(id, b.data + b.off, PL_UPLOAD_ID_LEN);
    id[PL_UPLOAD_ID_LEN] = '\0';
    pl_buf_reset(&b);
}

int pl__upload_is_id(struct pl_str s)
{
    if (s.len != PL_UPLOAD_ID_LEN)
        return 0;
    for (size_t i = 0; i < s.len; i++)
        if (val(s.p[i]) < 0)
            return 0;
    return 1;
}

static void mac(const unsigned char *key, const void *p, size_t n,
                unsigned char *out)
{
    unsigned int len = 32;
    HMAC(EVP_sha256(), key, 32, p, n, out, &len);
}

void pl__upload_slot_sign(const struct upload_slot *s, const unsigned char *key,
                          struct pl_buf *out)
{
    struct pl_buf p = {0};
    pl_buf_printf(&p, "1\n%s\n%s\n%s\n%s\n%s\n%llu\n%lld", s->host, s->id,
                  s->name, s->type, s->owner, (unsigned long long)s->size,
                  (long long)s->expires);
    unsigned char m[32];
    mac(key, p.data + p.off, p.len, m);
    enc((const unsigned char *)p.data + p.off, p.len, out);
    pl_buf_append(out, ".", 1);
    enc(m, sizeof(m), out);
    pl_buf_reset(&p);
}

/* Copies the n bytes at p into out (cap bytes with the NUL). */
static int field(const char *p, size_t n, char *out, size_t cap)
{
    if (n >= cap)
        return PL_EINVAL;
    memcpy(out, p, n);
    out[n] = '\0';
    return PL_OK;
}

static int parse_u(const char *p, size_t n, unsigned long long *out)
{
    char buf[24];
    if (n == 0 || field(p, n, buf, sizeof(buf)) != PL_OK)
        return PL_EINVAL;
    char *end;
    if (buf[0] == '-' || buf[0] == '+')
        return PL_EINVAL;
    *out = strtoull(buf, &end, 10);
    return *end ? PL_EINVAL : PL_OK;
}

/* Decodes the payload part of token into s; *dot gets the '.'. */
static int decode(struct pl_str token, struct upload_slot *s,
                  unsigned char *raw, size_t *rawlen, const char **dot)
{
    const char *d = memchr(token.p, '.', token.len);
    if (!d || token.len > 4096)
        return PL_EINVAL;
    size_t plen = (size_t)(d - token.p);
    if (dec(token.p, plen, raw, rawlen) != PL_OK)
        return PL_EINVAL;
    *dot = d;
    /* Eight fields separated by newlines. */
    const char *f[8];
    size_t fl[8];
    const char *p = (const char *)raw, *end = p + *rawlen;
    for (int i = 0; i < 8; i++) {
        const char *nl = i < 7 ? memchr(p, '\n', (size_t)(end - p)) : end;
        if (!nl)
            return PL_EINVAL;
        f[i] = p;
        fl[i] = (size_t)(nl - p);
        p = nl + 1;
    }
    if (memchr(f[7], '\n', fl[7]) || fl[0] != 1 || f[0][0] != '1')
        return PL_EINVAL;
    unsigned long long size, exp;
    memset(s, 0, sizeof(*s));
    if (field(f[1], fl[1], s->host, sizeof(s->host)) != PL_OK ||
        field(f[2], fl[2], s->id, sizeof(s->id)) != PL_OK ||
        field(f[3], fl[3], s->name, sizeof(s->name)) != PL_OK ||
        field(f[4], fl[4], s->type, sizeof(s->type)) != PL_OK ||
        field(f[5], fl[5], s->owner, sizeof(s->owner)) != PL_OK ||
        parse_u(f[6], fl[6], &size) != PL_OK ||
        parse_u(f[7], fl[7], &exp) != PL_OK)
        return PL_EINVAL;
    if (memchr(f[1], '\0', fl[1]) || memchr(f[3], '\0', fl[3]) ||
        memchr(f[4], '\0', fl[4]) || memchr(f[5], '\0', fl[5]))
        return PL_EINVAL;
    s->size = size;
    s->expires = (int64_t)exp;
    return PL_OK;
}

int pl__upload_slot_peek(struct pl_str token, struct upload_slot *s)
{
    unsigned char raw[4096];
    size_t n;
    const char *dot;
    return decode(token, s, raw, &n, &dot);
}

int pl__upload_slot_verify(struct pl_str token, const unsigned char *key,
                           struct upload_slot *s)
{
    unsigned char raw[4096], want[32], got[40];
    size_t n, glen;
    const char *dot;
    int rc = decode(token, s, raw, &n, &dot);
    if (rc != PL_OK)
        return rc;
    size_t mlen = token.len - (size_t)(dot + 1 - token.p);
    if (mlen != 43 || dec(dot + 1, mlen, got, &glen) != PL_OK || glen != 32)
        return PL_EFORBIDDEN;
    mac(key, raw, n, want);
    if (CRYPTO_memcmp(want, got, 32) != 0)
        return PL_EFORBIDDEN;
    return PL_OK;
}
