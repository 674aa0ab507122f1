/*
 * fuzz_peer_request.c - libFuzzer target for the request parser of the
 * peer's HTTP server (src/media/peer.c, pl_peer_parse_request and
 * pl_peer_resolve_range; doc/media.md "Peers"): what any downloader on
 * the network can send a peer.
 *
 * Input: the first 8 bytes (little-endian) are a file size for the range
 * resolution; the rest is what arrives on the socket, parsed from a heap
 * copy of exactly those bytes (so ASan sees any read past them).
 *
 * Invariants checked (abort() on violation):
 * - the result is -431, -400, 0 or a length in 1 .. min(len, 8192);
 * - -431 only when at least PL_PEER_MAX_HEAD bytes came;
 * - a complete head (> 0) is incomplete (0) when its last byte is cut
 *   off, and parses to the same request when more bytes follow it;
 * - a token points inside the head;
 * - a resolved range lies inside the file: 206 has 1 .. size bytes from
 *   an offset below size; 200 is the whole file; 416 only with a range.
 *
 * Extending: a new invariant goes in check().
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "media/peer.h"

static void die(const char *what)
{
    fprintf(stderr, "fuzz_peer_request: invariant violated: %s\n", what);
    abort();
}

static void check_range(const struct pl_peer_req *r, uint64_t size)
{
    uint64_t off = 7, n = 7;
    int st = pl_peer_resolve_range(r, size, &off, &n);
    if (st == 200) {
        if (r->range != PL_PEER_RANGE_NONE || off != 0 || n != size)
            die("200 is not the whole file");
    } else if (st == 206) {
        if (r->range == PL_PEER_RANGE_NONE || n == 0 || off >= size ||
            n > size - off)
            die("206 outside the file");
    } else if (st == 416) {
        if (r->range == PL_PEER_RANGE_NONE)
            die("416 without a range");
    } else {
        die("resolve returned something else");
    }
}

static void check(const char *buf, size_t len, uint64_t size)
{
    struct pl_peer_req r;
    long rc = pl_peer_parse_request(buf, len, &r);
    if (rc == -431) {
        if (len < PL_PEER_MAX_HEAD)
            die("431 before the limit");
        return;
    }
    if (rc == -400 || rc == 0)
        return;
    if (rc < 0 || (size_t)rc > len || rc > PL_PEER_MAX_HEAD)
        die("length out of bounds");
    if (r.token && (r.token < buf || r.token + r.token_len > buf + (size_t)rc))
        die("token outside the head");
    if (r.method < PL_PEER_GET || r.method > PL_PEER_OTHER)
        die("method out of range");
    check_range(&r, size);

    struct pl_peer_req r2;
    char *cut = malloc((size_t)rc + 8);
    if (!cut)
        die("out of memory");
    memcpy(cut, buf, (size_t)rc - 1);
    if (pl_peer_parse_request(cut, (size_t)rc - 1, &r2) != 0)
        die("a head without its last byte is not incomplete");
    memcpy(cut, buf, (size_t)rc);
    memcpy(cut + rc, "GET / X", 7);
    if (pl_peer_parse_request(cut, (size_t)rc + 7, &r2) != rc ||
        r2.method != r.method || r2.keep_alive != r.keep_alive ||
        r2.is_media != r.is_media || r2.range != r.range ||
        r2.first != r.first || r2.last != r.last || r2.suffix != r.suffix ||
        r2.token_len != r.token_len ||
        (r.token && r2.token - cut != r.token - buf) ||
        memcmp(r2.sha256, r.sha256, 32) != 0)
        die("bytes after the head change the request");
    free(cut);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 8)
        return 0;
    uint64_t fsize = 0;
    for (int i = 7; i >= 0; i--)
        fsize = fsize << 8 | data[i];
    fsize &= (1ull << 40) - 1; /* up to 1 TiB */
    size_t n = size - 8;
    char *copy = malloc(n ? n : 1);
    if (!copy)
        die("out of memory");
    memcpy(copy, data + 8, n);
    check(copy, n, fsize);
    free(copy);
    return 0;
}
