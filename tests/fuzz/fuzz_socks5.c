/*
 * fuzz_socks5.c - libFuzzer target for the SOCKS5 handshake parser of
 * the XEP-0065 proxy (src/socks5/parse.c).
 *
 * Input: the bytes a client sends on one connection: a method selection
 * message, then (if it was acceptable) a request, then anything.  Each
 * message is parsed as the relay does, from a heap copy of exactly the
 * bytes given (so AddressSanitizer catches a read past them), on every
 * prefix of the input in turn, as bytes trickle in.
 *
 * Invariants checked (abort() on violation):
 * - a prefix gives MORE or a verdict; once a prefix gives a verdict,
 *   every longer one gives the same verdict and the same length used;
 * - the length used never exceeds the bytes given, and is the whole
 *   message (2 + NMETHODS, 7 + the domain's length) when it is known;
 * - an accepted request has a 40-digit lower-case hex address, command
 *   CONNECT and type domain; its reply echoes them and is at most
 *   PL_SOCKS5_MAX_REPLY bytes, as is the reply for every other verdict.
 *
 * Extending: a new invariant goes in stage().
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "socks5/parse.h"

static void die(const char *what)
{
    fprintf(stderr, "fuzz_socks5: invariant violated: %s\n", what);
    abort();
}

/* Parses the message at p[0..n) (greeting when req is NULL) on every
 * prefix; returns the final verdict and sets *used. */
static int stage(const uint8_t *p, size_t n, struct pl_socks5_request *req,
                 size_t *used)
{
    int final = PL_SOCKS5_MORE;
    size_t final_used = 0;
    for (size_t k = 0; k <= n; k++) {
        uint8_t *copy = malloc(k ? k : 1);
        if (!copy)
            die("out of memory");
        memcpy(copy, p, k);
        size_t u = 0;
        struct pl_socks5_request r;
        int v = req ? pl_socks5_request(copy, k, &r, &u)
                    : pl_socks5_greeting(copy, k, &u);
        free(copy);
        if (u > k)
            die("used more bytes than given");
        if (final != PL_SOCKS5_MORE) {
            if (v != final || u != final_used)
                die("a longer prefix changed the verdict");
            continue;
        }
        if (v == PL_SOCKS5_MORE)
            continue;
        final = v;
        final_used = u;
        if (req)
            *req = r;
    }
    *used = final_used;
    return final;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t used = 0;
    int v = stage(data, size, NULL, &used);
    if (v == PL_SOCKS5_MORE || v == PL_SOCKS5_BAD_VERSION)
        return 0;
    if (used != 2 + (size_t)data[1])
        die("greeting length");
    if (v != PL_SOCKS5_OK)
        return 0;
    data += used;
    size -= used;
    struct pl_socks5_request r;
    memset(&r, 0, sizeof(r));
    v = stage(data, size, &r, &used);
    if (v == PL_SOCKS5_MORE)
        return 0;
    if (used && used != 7 + (size_t)data[4])
        die("request length");
    uint8_t out[PL_SOCKS5_MAX_REPLY];
    size_t n = pl_socks5_reply(out,
                               v == PL_SOCKS5_OK ? PL_SOCKS5_REP_OK
                                                 : pl_socks5_verdict_rep(v),
                               v == PL_SOCKS5_OK ? &r : NULL);
    if (n > sizeof(out) || out[0] != 5)
        die("reply");
    if (v != PL_SOCKS5_OK)
        return 0;
    if (r.cmd != 1 || r.atyp != 3 || strlen(r.addr) != PL_SOCKS5_HASH_LEN)
        die("accepted request fields");
    for (size_t i = 0; i < PL_SOCKS5_HASH_LEN; i++)
        if (!strchr("0123456789abcdef", r.addr[i]))
            die("address not lower-case hex");
    if (n != 7 + PL_SOCKS5_HASH_LEN || out[3] != 3 ||
        memcmp(out + 5, r.addr, PL_SOCKS5_HASH_LEN) != 0 ||
        (unsigned)(out[n - 2] << 8 | out[n - 1]) != r.port)
        die("reply does not echo the request");
    return 0;
}
