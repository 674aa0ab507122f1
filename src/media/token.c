/*
 * token.c - tokens for downloading a file from its peers (media.h,
 * doc/media.md "Tokens").
 *
 * Keys: the server derives a media key per host from its secret
 * (mod_media.c), and from it one key per file, file_key =
 * HMAC-SHA256(media_key, "parley media file key" 0 sha256).  A peer that
 * announces a file gets that file's key in the answer.
 *
 * A token (version 1) is base64url, unpadded, of 41 bytes: the version
 * (1), the expiry (8 bytes, big-endian seconds since the epoch) and
 * HMAC-SHA256(file_key, "parley media token" 0 version sha256 expiry).
 * The file's hash is inside the MAC, and the key is the file's own, so a
 * token for one file is worthless for another, a peer can only make
 * tokens for the files it announced (and may fetch anyway), and nobody
 * else can make one at all.  The peer checks a token offline, with no
 * state: the MAC (in constant time), then the expiry against its clock.
 *
 * Only libc and libcrypto: the clients link this file.
 */
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <string.h>

#include "media/media.h"

#define RAW_LEN 41 /* version, expiry, MAC */

static const char b64url[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

void pl_media_file_key(const unsigned char *media_key,
                       const unsigned char *sha256, unsigned char *out)
{
    static const char label[] = "parley media file key"; /* with its NUL */
    unsigned char msg[sizeof(label) + PL_MEDIA_HASH_LEN];
    memcpy(msg, label, sizeof(label));
    memcpy(msg + sizeof(label), sha256, PL_MEDIA_HASH_LEN);
    unsigned int n = PL_MEDIA_KEY_LEN;
    HMAC(EVP_sha256(), media_key, PL_MEDIA_KEY_LEN, msg, sizeof(msg), out, &n);
}

static void mac(const unsigned char *key, const unsigned char *sha256,
                const unsigned char *head, unsigned char *out)
{
    static const char label[] = "parley media token";
    unsigned char msg[sizeof(label) + 9 + PL_MEDIA_HASH_LEN];
    memcpy(msg, label, sizeof(label));
    msg[sizeof(label)] = head[0];
    memcpy(msg + sizeof(label) + 1, sha256, PL_MEDIA_HASH_LEN);
    memcpy(msg + sizeof(label) + 1 + PL_MEDIA_HASH_LEN, head + 1, 8);
    unsigned int n = 32;
    HMAC(EVP_sha256(), key, PL_MEDIA_KEY_LEN, msg, sizeof(msg), out, &n);
}

int pl_media_token_make(const unsigned char *file_key,
                        const unsigned char *sha256, int64_t expires, char *out,
                        size_t cap)
{
    if (cap < PL_MEDIA_TOKEN_LEN + 1 || expires < 0)
        return PL_MEDIA_EINVAL;
    unsigned char raw[RAW_LEN + 1] = {1};
    uint64_t e = (uint64_t)expires;
    for (int i = 0; i < 8; i++)
        raw[1 + i] = (unsigned char)(e >> (56 - 8 * i));
    mac(file_key, sha256, raw, raw + 9);
    size_t o = 0;
    for (size_t i = 0; i < RAW_LEN; i += 3) {
        unsigned v = (unsigned)raw[i] << 16 | (unsigned)raw[i + 1] << 8;
        if (i + 2 < RAW_LEN)
            v |= raw[i + 2];
        out[o++] = b64url[v >> 18 & 63];
        out[o++] = b64url[v >> 12 & 63];
        out[o++] = b64url[v >> 6 & 63];
        if (i + 2 < RAW_LEN)
            out[o++] = b64url[v & 63];
    }
    out[o] = '\0';
    return o == PL_MEDIA_TOKEN_LEN ? PL_MEDIA_OK : PL_MEDIA_EINVAL;
}

static int val(char c)
{
    const char *p = c ? memchr(b64url, c, 64) : NULL;
    return p ? (int)(p - b64url) : -1;
}

int pl_media_token_check(const unsigned char *file_key,
                         const unsigned char *sha256, const char *token,
                         size_t len, int64_t now, int64_t *expires)
{
    unsigned char raw[RAW_LEN + 2], want[32];
    if (!token || len != PL_MEDIA_TOKEN_LEN)
        return PL_MEDIA_EINVAL;
    size_t o = 0;
    for (size_t i = 0; i < len; i += 4) {
        unsigned v = 0;
        size_t k = len - i < 4 ? len - i : 4;
        for (size_t j = 0; j < 4; j++) {
            int d = j < k ? val(token[i + j]) : 0;
            if (d < 0)
                return PL_MEDIA_EINVAL;
            v = v << 6 | (unsigned)d;
        }
        raw[o++] = (unsigned char)(v >> 16);
        raw[o++] = (unsigned char)(v >> 8);
        if (k == 4)
            raw[o++] = (unsigned char)v;
        else if (v & 0xff)
            return PL_MEDIA_EINVAL; /* stray bits: not canonical */
    }
    if (o != RAW_LEN || raw[0] != 1)
        return PL_MEDIA_EINVAL;
    mac(file_key, sha256, raw, want);
    if (CRYPTO_memcmp(want, raw + 9, 32) != 0)
        return PL_MEDIA_EFORGED;
    uint64_t e = 0;
    for (int i = 0; i < 8; i++)
        e = e << 8 | raw[1 + i];
    if (e > INT64_MAX)
        return PL_MEDIA_EFORGED;
    if (expires)
        *expires = (int64_t)e;
    return now > (int64_t)e ? PL_MEDIA_EEXPIRED : PL_MEDIA_OK;
}
