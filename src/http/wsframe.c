/*
 * wsframe.c - RFC 6455 frames, server side; see wsframe.h.
 *
 * The reader follows RFC 6455 §5: a header (2 bytes, then 2 or 8 of
 * extended length, then the 4-byte masking key every client frame
 * carries, §5.3), then the payload, unmasked as it comes.  Text and
 * continuation frames make a message (§5.4), control frames (close,
 * ping, pong: at most 125 bytes, never fragmented, §5.5) may come
 * between the fragments of one.  A message is handed on whole, once its
 * UTF-8 is checked over all of it (§8.1).
 *
 * Memory: nothing is kept at a frame boundary.  A frame whose payload
 * is whole in the bytes read, final and not the end of a fragmented
 * message (the usual case: one stanza, one frame, one read) is unmasked
 * into a buffer on the stack and handed on from there.  Otherwise its
 * payload is unmasked into r->part, sized for the rest of the frame at
 * once (a message is at most max bytes, told by each header), and part
 * is freed when the message (or the control frame) is over.  An idle
 * connection therefore costs sizeof(struct pl_ws_in) and nothing on the
 * heap, and nothing is allocated and freed per message in the usual
 * case; wslay's event API, used before, kept about 9 KiB of buffers per
 * connection, whose holes fragmented the heap of idle sessions.
 *
 * Failures (wsframe.h, pl_ws_in_feed) are told as soon as the header
 * shows them, before its payload is read; a text message that is not
 * UTF-8 when it is whole.
 */
#include "wsframe.h"

#include <string.h>

#include "alloc.h"

/* A payload whole in one read and at most this long is unmasked on the
 * stack; a longer one goes through r->part. */
#define STACK_PAYLOAD 4096

size_t pl_ws_header(unsigned char h[10], unsigned opcode, uint64_t len)
{
    h[0] = (unsigned char)(0x80 | (opcode & 0x0f));
    if (len < 126) {
        h[1] = (unsigned char)len;
        return 2;
    }
    if (len <= 0xffff) {
        h[1] = 126;
        h[2] = (unsigned char)(len >> 8);
        h[3] = (unsigned char)len;
        return 4;
    }
    h[1] = 127;
    for (int i = 0; i < 8; i++)
        h[2 + i] = (unsigned char)(len >> (56 - 8 * i));
    return 10;
}

int pl_ws_utf8_valid(const char *p, size_t n)
{
    const unsigned char *s = (const unsigned char *)p;
    size_t i = 0;
    while (i < n) {
        /* ASCII, eight bytes at a time. */
        if (n - i >= 8) {
            uint64_t v;
            memcpy(&v, s + i, 8);
            if (!(v & 0x8080808080808080ull)) {
                i += 8;
                continue;
            }
        }
        unsigned c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        /* RFC 3629 §4: the second byte's range depends on the first. */
        size_t k;
        unsigned lo = 0x80, hi = 0xbf;
        if (c >= 0xc2 && c <= 0xdf) {
            k = 1;
        } else if (c >= 0xe0 && c <= 0xef) {
            k = 2;
            if (c == 0xe0)
                lo = 0xa0; /* no overlong form */
            else if (c == 0xed)
                hi = 0x9f; /* no surrogate */
        } else if (c >= 0xf0 && c <= 0xf4) {
            k = 3;
            if (c == 0xf0)
                lo = 0x90; /* no overlong form */
            else if (c == 0xf4)
                hi = 0x8f; /* nothing above U+10FFFF */
        } else {
            return 0;
        }
        if (n - i - 1 < k || s[i + 1] < lo || s[i + 1] > hi)
            return 0;
        for (size_t j = 2; j <= k; j++)
            if ((s[i + j] & 0xc0) != 0x80)
                return 0;
        i += k + 1;
    }
    return 1;
}

/* dst = src XOR the key, from its byte off (RFC 6455 §5.3). */
static void unmask(unsigned char *dst, const unsigned char *src, size_t n,
                   const unsigned char key[4], unsigned off)
{
    unsigned char k[8];
    for (int i = 0; i < 8; i++)
        k[i] = key[(off + (unsigned)i) & 3];
    uint64_t m;
    memcpy(&m, k, 8);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t v;
        memcpy(&v, src + i, 8);
        v ^= m;
        memcpy(dst + i, &v, 8);
    }
    for (; i < n; i++)
        dst[i] = src[i] ^ k[i & 7];
}

/* Frees part. */
static void drop(struct pl_ws_in *r)
{
    pl_free(r->part);
    r->part = NULL;
    r->plen = r->pcap = r->mlen = 0;
}

void pl_ws_in_free(struct pl_ws_in *r)
{
    drop(r);
    memset(r, 0, sizeof(*r));
}

static int fail(struct pl_ws_in *r, int code)
{
    drop(r);
    r->done = 1;
    return code;
}

/* A close frame's status code may be sent (RFC 6455 §7.4). */
static int code_valid(unsigned code)
{
    return (code >= 1000 && code <= 1011 && code != 1004 && code != 1005 &&
            code != 1006) ||
           (code >= 3000 && code <= 4999);
}

/* The header's first two bytes: 0, or the code to fail with. */
static int frame_check(const struct pl_ws_in *r)
{
    unsigned b0 = r->hdr[0], b1 = r->hdr[1];
    unsigned op = b0 & 0x0f;
    if (b0 & 0x70)
        return PL_WS_PROTOCOL; /* RSV bits: no extension (§5.2) */
    if (!(b1 & 0x80))
        return PL_WS_PROTOCOL; /* unmasked (§5.1) */
    switch (op) {
    case PL_WS_CLOSE:
    case PL_WS_PING:
    case PL_WS_PONG:
        if (!(b0 & 0x80) || (b1 & 0x7f) > 125)
            return PL_WS_PROTOCOL; /* §5.5 */
        return 0;
    case PL_WS_CONT:
        return r->frag ? 0 : PL_WS_PROTOCOL; /* nothing to continue */
    case PL_WS_TEXT:
    case PL_WS_BINARY:
        if (r->frag)
            return PL_WS_PROTOCOL; /* the last message is not over */
        return op == PL_WS_BINARY ? PL_WS_UNSUPPORTED : 0;
    default: return PL_WS_PROTOCOL; /* reserved opcode */
    }
}

/* The header's length: 2, 4 or 10 bytes before the masking key. */
static unsigned len_bytes(const struct pl_ws_in *r)
{
    unsigned len7 = r->hdr[1] & 0x7f;
    return len7 == 126 ? 4 : len7 == 127 ? 10 : 2;
}

/* The header is whole: 0, or the code to fail with. */
static int frame_begin(struct pl_ws_in *r, uint64_t max)
{
    unsigned lb = len_bytes(r);
    uint64_t len = r->hdr[1] & 0x7f;
    if (lb == 4) {
        len = (uint64_t)r->hdr[2] << 8 | r->hdr[3];
        if (len < 126)
            return PL_WS_PROTOCOL; /* not the shortest form (§5.2) */
    } else if (lb == 10) {
        len = 0;
        for (int i = 0; i < 8; i++)
            len = len << 8 | r->hdr[2 + i];
        if (len < 0x10000 || len >> 63)
            return PL_WS_PROTOCOL; /* not the shortest form, or MSB */
    }
    r->op = r->hdr[0] & 0x0f;
    r->fin = !!(r->hdr[0] & 0x80);
    if (r->op < 8) {
        if (len + r->mlen > max) /* both below 2^63 */
            return PL_WS_TOO_BIG;
        r->frag = !r->fin;
    }
    memcpy(r->mask, r->hdr + lb, 4);
    r->moff = 0;
    r->left = len;
    r->hlen = 0;
    return 0;
}

/* The frame is over; its payload is pl[0..n) (a data frame's: the
 * whole message when final).  0, or the code to fail with. */
static int frame_end(struct pl_ws_in *r, const unsigned char *pl, size_t n,
                     const struct pl_ws_in_ops *ops, void *ud)
{
    const char *s = n ? (const char *)pl : "";
    if (r->op < 8) {
        if (!r->fin) {
            r->mlen = r->plen; /* a fragment more */
            return 0;
        }
        if (!pl_ws_utf8_valid(s, n))
            return PL_WS_NOT_UTF8;
        int stop = ops->text(ud, s, n);
        drop(r);
        if (stop)
            r->done = 1;
        return 0;
    }
    if (r->op == PL_WS_CLOSE) {
        unsigned code = 0;
        if (n == 1)
            return PL_WS_PROTOCOL;
        if (n >= 2) {
            code = (unsigned)pl[0] << 8 | pl[1];
            if (!code_valid(code))
                return PL_WS_PROTOCOL;
            if (!pl_ws_utf8_valid(s + 2, n - 2))
                return PL_WS_NOT_UTF8;
        }
        drop(r);
        r->done = 1;
        ops->close(ud, code);
        return 0;
    }
    if (r->op == PL_WS_PING)
        ops->ping(ud, s, n);
    /* The control frame's bytes leave part; the message's stay. */
    r->plen = r->mlen;
    if (!r->plen)
        drop(r);
    return 0;
}

int pl_ws_in_feed(struct pl_ws_in *r, const char *p, size_t n, uint64_t max,
                  const struct pl_ws_in_ops *ops, void *ud)
{
    const unsigned char *s = (const unsigned char *)p;
    unsigned char tmp[STACK_PAYLOAD];
    int rc;
    while (n && !r->done) {
        if (!r->left) {
            /* The header, byte by byte (at most 14). */
            r->hdr[r->hlen++] = *s++;
            n--;
            if (r->hlen == 2 && (rc = frame_check(r)) != 0)
                return fail(r, rc);
            if (r->hlen < 2 || r->hlen < len_bytes(r) + 4)
                continue;
            if ((rc = frame_begin(r, max)) != 0)
                return fail(r, rc);
            if (r->left)
                continue;
            /* An empty frame: over already. */
            rc = r->op < 8
                     ? frame_end(r, (unsigned char *)r->part, r->plen, ops, ud)
                     : frame_end(r, NULL, 0, ops, ud);
            if (rc)
                return fail(r, rc);
            continue;
        }
        int ctl = r->op >= 8;
        size_t k = r->left < n ? (size_t)r->left : n;
        if (k == r->left && k <= sizeof(tmp) &&
            (ctl ? r->plen == r->mlen : r->fin && !r->plen)) {
            /* The whole frame is here and nothing of its message was
             * kept: unmasked on the stack, handed on from there. */
            unmask(tmp, s, k, r->mask, 0);
            s += k;
            n -= k;
            r->left = 0;
            if ((rc = frame_end(r, tmp, k, ops, ud)) != 0)
                return fail(r, rc);
            continue;
        }
        /* Kept in part, room made for the rest of the frame at once. */
        if (r->plen + r->left > r->pcap) {
            r->pcap = r->plen + (size_t)r->left;
            r->part = pl_realloc(r->part, r->pcap);
        }
        unmask((unsigned char *)r->part + r->plen, s, k, r->mask, r->moff);
        r->moff = (unsigned char)((r->moff + k) & 3);
        r->plen += k;
        r->left -= k;
        s += k;
        n -= k;
        if (r->left)
            continue;
        rc = ctl ? frame_end(r, (unsigned char *)r->part + r->mlen,
                             r->plen - r->mlen, ops, ud)
                 : frame_end(r, (unsigned char *)r->part, r->plen, ops, ud);
        if (rc)
            return fail(r, rc);
    }
    return 0;
}
