/*
 * fuzz_media_token.c - libFuzzer target for what a peer parses from its
 * downloaders (src/media/token.c, pieces.c; doc/media.md): a token, and
 * a SHA-256 in hex or base64.
 *
 * Input: the first byte picks the mode.
 * - Even: the rest is a token, checked with a fixed file key and hash at
 *   a fixed time, from a heap copy of exactly those bytes.
 * - Odd: the rest is a SHA-256 spelling, parsed.
 *
 * Invariants checked (abort() on violation):
 * - a token check returns OK, EINVAL, EFORGED or EEXPIRED; one that is
 *   genuine (OK or EEXPIRED) is the very token made again for its expiry
 *   (one spelling per token), and is EFORGED with another key or hash;
 * - a parsed SHA-256 is printed back as the input (hex: lowercased;
 *   base64: exactly), so no two spellings name one hash.
 *
 * Extending: a new invariant goes in check_token() or check_hash().
 */
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "media/media.h"

static const unsigned char key[32] = "fuzz-key-fuzz-key-fuzz-key-fuzz";
static const unsigned char other[32] = "another-key-another-key-another";
static const unsigned char sha[32] = "0123456789abcdef0123456789abcde";

static void die(const char *what)
{
    fprintf(stderr, "fuzz_media_token: invariant violated: %s\n", what);
    abort();
}

static void check_token(const uint8_t *p, size_t n)
{
    char *copy = malloc(n ? n : 1);
    if (!copy)
        die("out of memory");
    memcpy(copy, p, n);
    int64_t exp = 0;
    int rc = pl_media_token_check(key, sha, copy, n, 1800000000, &exp);
    if (rc != PL_MEDIA_OK && rc != PL_MEDIA_EINVAL && rc != PL_MEDIA_EFORGED &&
        rc != PL_MEDIA_EEXPIRED)
        die("check returned something else");
    if (rc == PL_MEDIA_OK || rc == PL_MEDIA_EEXPIRED) {
        char again[PL_MEDIA_TOKEN_LEN + 1];
        if (pl_media_token_make(key, sha, exp, again, sizeof(again)) !=
                PL_MEDIA_OK ||
            strlen(again) != n || memcmp(again, copy, n) != 0)
            die("a genuine token has another spelling");
        if (pl_media_token_check(other, sha, copy, n, 0, NULL) !=
                PL_MEDIA_EFORGED ||
            pl_media_token_check(key, other, copy, n, 0, NULL) !=
                PL_MEDIA_EFORGED)
            die("a genuine token checks with another key or hash");
    }
    free(copy);
}

static void check_hash(const uint8_t *p, size_t n)
{
    unsigned char d[32];
    char out[72];
    if (pl_media_parse_sha256((const char *)p, n, d) != PL_MEDIA_OK)
        return;
    if (n == 64) {
        pl_media_hex(d, 32, out);
        for (size_t i = 0; i < 64; i++)
            if (out[i] != tolower(p[i]))
                die("hex does not print back");
    } else {
        pl_media_b64(d, 32, out, sizeof(out));
        if (n != 44 || memcmp(out, p, 44) != 0)
            die("base64 does not print back");
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!size)
        return 0;
    if (data[0] & 1)
        check_hash(data + 1, size - 1);
    else
        check_token(data + 1, size - 1);
    return 0;
}
