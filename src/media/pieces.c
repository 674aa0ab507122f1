/*
 * pieces.c - the piece size rule and the SHA-256 of a file and of its
 * pieces (media.h), plus the hex and base64 spellings of a digest.
 *
 * The rule (doc/media.md): pieces start at min_piece (256 KiB) and
 * double until the file has at most max_pieces (2048) of them or they
 * reach max_piece (16 MiB).  So a small file is one piece, a piece is
 * never smaller than what is worth a request of its own, and a file's
 * list of piece hashes stays bounded (2048 * 32 bytes) up to 32 GiB.
 *
 * Only libc and libcrypto: the clients link this file.
 */
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#include "media/media.h"

uint32_t pl_media_piece_size(uint64_t size, uint32_t min_piece,
                             uint32_t max_piece, uint32_t max_pieces)
{
    uint64_t p = min_piece ? min_piece : 1;
    if (max_pieces == 0)
        max_pieces = 1;
    while (p < max_piece && (size + p - 1) / p > max_pieces)
        p *= 2;
    if (p > max_piece && max_piece)
        p = max_piece;
    return (uint32_t)p;
}

uint64_t pl_media_piece_count(uint64_t size, uint32_t piece_size)
{
    return piece_size ? (size + piece_size - 1) / piece_size : 0;
}

int pl_media_hasher_init(struct pl_media_hasher *h, uint64_t size,
                         uint32_t piece_size)
{
    memset(h, 0, sizeof(*h));
    if (!piece_size)
        return PL_MEDIA_EINVAL;
    h->size = size;
    h->piece_size = piece_size;
    h->npieces = pl_media_piece_count(size, piece_size);
    if (h->npieces > SIZE_MAX / PL_MEDIA_HASH_LEN)
        return PL_MEDIA_EINVAL;
    h->whole = EVP_MD_CTX_new();
    h->piece = EVP_MD_CTX_new();
    h->digests = malloc(h->npieces ? h->npieces * PL_MEDIA_HASH_LEN : 1);
    if (!h->whole || !h->piece || !h->digests ||
        !EVP_DigestInit_ex(h->whole, EVP_sha256(), NULL) ||
        !EVP_DigestInit_ex(h->piece, EVP_sha256(), NULL)) {
        pl_media_hasher_free(h);
        return PL_MEDIA_ENOMEM;
    }
    return PL_MEDIA_OK;
}

/* Ends the current piece into the next digest and starts another. */
static void end_piece(struct pl_media_hasher *h)
{
    unsigned int n = 0;
    EVP_DigestFinal_ex(h->piece, h->digests + h->done * PL_MEDIA_HASH_LEN, &n);
    h->done++;
    EVP_DigestInit_ex(h->piece, EVP_sha256(), NULL);
}

int pl_media_hasher_update(struct pl_media_hasher *h, const void *p, size_t n)
{
    const unsigned char *b = p;
    if (n > h->size - h->fed)
        return PL_MEDIA_EINVAL;
    EVP_DigestUpdate(h->whole, b, n);
    while (n) {
        uint64_t room = h->piece_size - h->fed % h->piece_size;
        size_t k = room < n ? (size_t)room : n;
        EVP_DigestUpdate(h->piece, b, k);
        h->fed += k;
        b += k;
        n -= k;
        if (h->fed % h->piece_size == 0)
            end_piece(h);
    }
    return PL_MEDIA_OK;
}

int pl_media_hasher_final(struct pl_media_hasher *h, unsigned char *whole)
{
    if (h->fed != h->size)
        return PL_MEDIA_EINVAL;
    if (h->fed % h->piece_size)
        end_piece(h); /* the short last piece */
    unsigned int n = 0;
    EVP_DigestFinal_ex(h->whole, whole, &n);
    return h->done == h->npieces ? PL_MEDIA_OK : PL_MEDIA_EINVAL;
}

unsigned char *pl_media_hasher_take(struct pl_media_hasher *h)
{
    unsigned char *d = h->digests;
    h->digests = NULL;
    return d;
}

void pl_media_hasher_free(struct pl_media_hasher *h)
{
    if (h->whole)
        EVP_MD_CTX_free(h->whole);
    if (h->piece)
        EVP_MD_CTX_free(h->piece);
    free(h->digests);
    h->whole = h->piece = NULL;
    h->digests = NULL;
}

void pl_media_hex(const unsigned char *p, size_t n, char *out)
{
    static const char d[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = d[p[i] >> 4];
        out[2 * i + 1] = d[p[i] & 15];
    }
    out[2 * n] = '\0';
}

void pl_media_b64(const unsigned char *p, size_t n, char *out, size_t cap)
{
    if (cap < 4 * ((n + 2) / 3) + 1) {
        if (cap)
            out[0] = '\0';
        return;
    }
    EVP_EncodeBlock((unsigned char *)out, p, (int)n);
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int pl_media_parse_sha256(const char *s, size_t len, unsigned char *out)
{
    if (len == 64) {
        for (size_t i = 0; i < 32; i++) {
            int a = hexval(s[2 * i]), b = hexval(s[2 * i + 1]);
            if (a < 0 || b < 0)
                return PL_MEDIA_EINVAL;
            out[i] = (unsigned char)(a << 4 | b);
        }
        return PL_MEDIA_OK;
    }
    if (len != 44 || s[43] != '=' || s[42] == '=')
        return PL_MEDIA_EINVAL;
    unsigned char buf[33];
    for (size_t i = 0; i < 43; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
              (c >= '0' && c <= '9') || c == '+' || c == '/'))
            return PL_MEDIA_EINVAL;
    }
    if (EVP_DecodeBlock(buf, (const unsigned char *)s, 44) != 33)
        return PL_MEDIA_EINVAL;
    /* Canonical only: the last character carries no stray bits. */
    char again[45];
    EVP_EncodeBlock((unsigned char *)again, buf, 32);
    if (memcmp(again, s, 44) != 0)
        return PL_MEDIA_EINVAL;
    memcpy(out, buf, 32);
    return PL_MEDIA_OK;
}
