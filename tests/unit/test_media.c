/*
 * test_media.c - what src/media/ computes (media.h, doc/media.md):
 *
 *   media_piece_rule    the piece size rule at and around its limits;
 *   media_hasher        piece and whole-file SHA-256 fed in odd chunks
 *                       against one-shot digests of each slice; too many
 *                       or too few bytes are refused;
 *   media_parse_sha256  hex and base64 spellings, and what is neither;
 *   media_metalink      the document parsed back with expat and held to
 *                       RFC 5854's structure: one metalink root in
 *                       urn:ietf:params:xml:ns:metalink, one file with a
 *                       name, size, sha-256 hash (64 hex digits), pieces
 *                       with length and type and one hash per piece, the
 *                       urls with priorities in 1..999999, escaping;
 *   media_token         a token checks with its file's key at any time
 *                       before its expiry; after it PL_MEDIA_EEXPIRED;
 *                       another file's key, another hash, any changed
 *                       character PL_MEDIA_EFORGED (or EINVAL when it is
 *                       no longer base64url); wrong lengths EINVAL.
 */
#include <expat.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "media/media.h"
#include "unit.h"

void test_media_piece_rule(void)
{
    const uint32_t K = 1024, M = 1024 * 1024;
    static const struct {
        uint64_t size;
        uint32_t piece;
        uint64_t count;
    } rows[] = {
        {0, 256 * 1024, 0},
        {1, 256 * 1024, 1},
        {256 * 1024, 256 * 1024, 1},
        {256 * 1024 + 1, 256 * 1024, 2},
        {100ull * 1024 * 1024, 256 * 1024, 400},
        {512ull * 1024 * 1024, 256 * 1024, 2048},
        {512ull * 1024 * 1024 + 1, 512 * 1024, 1025},
        {200ull * 1024 * 1024 * 10, 1024 * 1024, 2000},
        {32ull << 30, 16 * 1024 * 1024, 2048},
        {(32ull << 30) + 1, 16 * 1024 * 1024, 2049},
        {1ull << 40, 16 * 1024 * 1024, 65536},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        uint32_t p = pl_media_piece_size(rows[i].size, PL_MEDIA_MIN_PIECE,
                                         PL_MEDIA_MAX_PIECE,
                                         PL_MEDIA_MAX_PIECES);
        CHECK_INT(p, rows[i].piece);
        CHECK_INT(pl_media_piece_count(rows[i].size, p), rows[i].count);
    }
    /* Other bounds: min 64 KiB, max 1 MiB, 10 pieces. */
    CHECK_INT(pl_media_piece_size(640 * K, 64 * K, M, 10), 64 * K);
    CHECK_INT(pl_media_piece_size(640 * K + 1, 64 * K, M, 10), 128 * K);
    CHECK_INT(pl_media_piece_size(100 * M, 64 * K, M, 10), M);
    CHECK_INT(pl_media_piece_size(5, 64 * K, 64 * K, 1), 64 * K);
}

static void sha(const unsigned char *p, size_t n, unsigned char *out)
{
    unsigned int len = 32;
    EVP_Digest(p, n, out, &len, EVP_sha256(), NULL);
}

void test_media_hasher(void)
{
    const uint32_t piece = 4096;
    static const size_t sizes[] = {0, 1, 4095, 4096, 4097, 3 * 4096, 100000};
    for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
        size_t size = sizes[s];
        unsigned char *data = malloc(size + 1);
        for (size_t i = 0; i < size; i++)
            data[i] = (unsigned char)(i * 7 + i / 251);
        struct pl_media_hasher h;
        CHECK_INT(pl_media_hasher_init(&h, size, piece), PL_MEDIA_OK);
        /* Odd chunk sizes, crossing piece boundaries anywhere. */
        size_t off = 0, step = 1;
        while (off < size) {
            size_t k = step < size - off ? step : size - off;
            CHECK_INT(pl_media_hasher_update(&h, data + off, k), PL_MEDIA_OK);
            off += k;
            step = step * 3 + 1;
        }
        unsigned char whole[32], want[32];
        CHECK_INT(pl_media_hasher_final(&h, whole), PL_MEDIA_OK);
        sha(data, size, want);
        CHECK(memcmp(whole, want, 32) == 0);
        uint64_t n = pl_media_piece_count(size, piece);
        CHECK_INT(h.npieces, n);
        CHECK_INT(h.done, n);
        for (uint64_t i = 0; i < n; i++) {
            size_t a = (size_t)i * piece;
            size_t len = size - a < piece ? size - a : piece;
            sha(data + a, len, want);
            CHECK(memcmp(h.digests + i * 32, want, 32) == 0);
        }
        pl_media_hasher_free(&h);
        free(data);
    }
    /* More bytes than announced; fewer. */
    struct pl_media_hasher h;
    unsigned char buf[10] = {0}, out[32];
    CHECK_INT(pl_media_hasher_init(&h, 5, piece), PL_MEDIA_OK);
    CHECK_INT(pl_media_hasher_update(&h, buf, 10), PL_MEDIA_EINVAL);
    CHECK_INT(pl_media_hasher_update(&h, buf, 4), PL_MEDIA_OK);
    CHECK_INT(pl_media_hasher_final(&h, out), PL_MEDIA_EINVAL);
    pl_media_hasher_free(&h);
    CHECK_INT(pl_media_hasher_init(&h, 5, 0), PL_MEDIA_EINVAL);
    pl_media_hasher_free(&h);
}

void test_media_parse_sha256(void)
{
    unsigned char d[32], got[32];
    sha((const unsigned char *)"abc", 3, d);
    char hex[65], b64[45];
    pl_media_hex(d, 32, hex);
    CHECK_STR(hex, "ba7816bf8f01cfea414140de5dae2223"
                   "b00361a396177a9cb410ff61f20015ad");
    pl_media_b64(d, 32, b64, sizeof(b64));
    CHECK_STR(b64, "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=");
    CHECK_INT(pl_media_parse_sha256(hex, 64, got), PL_MEDIA_OK);
    CHECK(memcmp(got, d, 32) == 0);
    memset(got, 0, 32);
    CHECK_INT(pl_media_parse_sha256(b64, 44, got), PL_MEDIA_OK);
    CHECK(memcmp(got, d, 32) == 0);
    static const char *const bad[] = {
        "",
        "ba7816bf",
        "ga7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0",
        "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa1=", /* stray bits */
        "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=", /* base64url */
        "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAF===",
        NULL,
    };
    for (int i = 0; bad[i]; i++)
        CHECK_INT(pl_media_parse_sha256(bad[i], strlen(bad[i]), got),
                  PL_MEDIA_EINVAL);
}

/* ---- the Metalink, parsed back ---- */

#define NS_ML "urn:ietf:params:xml:ns:metalink"

struct walk {
    int depth;
    char path[512]; /* "metalink/file/pieces/hash" */
    int roots, files, sizes, hashes, pieces, piece_hashes, urls, origins;
    int bad;         /* a structural fault seen */
    char text[4096]; /* the current element's text */
    size_t tlen;
    char name[256]; /* file name */
    char size[32];  /* size text */
    char whole[80]; /* file hash text */
    char first_piece[80];
    char urls_seen[8][256];
    int priorities[8];
};

static const char *attr(const XML_Char **a, const char *name)
{
    for (int i = 0; a[i]; i += 2)
        if (strcmp(a[i], name) == 0)
            return a[i + 1];
    return NULL;
}

static int is_hex64(const char *s)
{
    if (strlen(s) != 64)
        return 0;
    for (const char *p = s; *p; p++)
        if (!strchr("0123456789abcdef", *p))
            return 0;
    return 1;
}

static void on_start(void *ud, const XML_Char *name, const XML_Char **a)
{
    struct walk *w = ud;
    const char *sep = strchr(name, '|');
    if (!sep || strncmp(name, NS_ML, strlen(NS_ML)) != 0 ||
        (size_t)(sep - name) != strlen(NS_ML))
        w->bad++; /* every element in the Metalink namespace */
    const char *local = sep ? sep + 1 : name;
    size_t n = strlen(w->path);
    snprintf(w->path + n, sizeof(w->path) - n, "%s%s", n ? "/" : "", local);
    w->depth++;
    w->tlen = 0;
    w->text[0] = '\0';
    if (strcmp(w->path, "metalink") == 0)
        w->roots++;
    else if (strcmp(w->path, "metalink/file") == 0) {
        const char *nm = attr(a, "name");
        w->files++;
        snprintf(w->name, sizeof(w->name), "%s", nm ? nm : "");
        if (!nm)
            w->bad++;
    } else if (strcmp(w->path, "metalink/file/hash") == 0) {
        const char *t = attr(a, "type");
        if (!t || strcmp(t, "sha-256") != 0)
            w->bad++;
    } else if (strcmp(w->path, "metalink/file/pieces") == 0) {
        const char *t = attr(a, "type"), *l = attr(a, "length");
        w->pieces++;
        if (!t || strcmp(t, "sha-256") != 0 || !l || atol(l) != 4096)
            w->bad++;
    } else if (strcmp(w->path, "metalink/file/url") == 0) {
        const char *p = attr(a, "priority");
        long v = p ? atol(p) : 0;
        if (v < 1 || v > 999999)
            w->bad++;
        if (w->urls < 8)
            w->priorities[w->urls] = (int)v;
    }
}

static void on_text(void *ud, const XML_Char *s, int len)
{
    struct walk *w = ud;
    if (w->tlen + (size_t)len < sizeof(w->text)) {
        memcpy(w->text + w->tlen, s, (size_t)len);
        w->tlen += (size_t)len;
        w->text[w->tlen] = '\0';
    }
}

/* Copies src into dst (cap bytes), cut short if need be. */
static void keep(char *dst, size_t cap, const char *src)
{
    size_t n = strlen(src);
    if (n >= cap)
        n = cap - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

static void on_end(void *ud, const XML_Char *name)
{
    (void)name;
    struct walk *w = ud;
    if (strcmp(w->path, "metalink/file/size") == 0) {
        w->sizes++;
        keep(w->size, sizeof(w->size), w->text);
    } else if (strcmp(w->path, "metalink/file/hash") == 0) {
        w->hashes++;
        keep(w->whole, sizeof(w->whole), w->text);
        if (!is_hex64(w->text))
            w->bad++;
    } else if (strcmp(w->path, "metalink/file/pieces/hash") == 0) {
        if (!w->piece_hashes)
            keep(w->first_piece, sizeof(w->first_piece), w->text);
        w->piece_hashes++;
        if (!is_hex64(w->text))
            w->bad++;
    } else if (strcmp(w->path, "metalink/file/url") == 0) {
        if (w->urls < 8)
            keep(w->urls_seen[w->urls], 256, w->text);
        w->urls++;
    } else if (strcmp(w->path, "metalink/origin") == 0) {
        w->origins++;
    }
    char *slash = strrchr(w->path, '/');
    if (slash)
        *slash = '\0';
    else
        w->path[0] = '\0';
    w->depth--;
    w->tlen = 0;
}

void test_media_metalink(void)
{
    size_t size = 10000;
    unsigned char *data = malloc(size);
    for (size_t i = 0; i < size; i++)
        data[i] = (unsigned char)(i % 253);
    struct pl_media_hasher h;
    unsigned char whole[32];
    CHECK_INT(pl_media_hasher_init(&h, size, 4096), PL_MEDIA_OK);
    CHECK_INT(pl_media_hasher_update(&h, data, size), PL_MEDIA_OK);
    CHECK_INT(pl_media_hasher_final(&h, whole), PL_MEDIA_OK);
    const struct pl_media_source src[] = {
        {"https://files.example.org/upload/ID/a%20b.bin", 1},
        {"http://10.0.0.7:8080/m/x?token=abc&x=<y>", 2},
        {"http://10.0.0.8:8080/m/x", 0}, /* clamped to 1 */
    };
    struct pl_media_info m = {
        .name = "firmware \"v2\" <&>.bin",
        .size = size,
        .sha256 = whole,
        .piece_size = 4096,
        .npieces = h.npieces,
        .pieces = h.digests,
        .origin = "https://files.example.org/upload/ID/a%20b.bin.meta4",
        .published = 1796000000,
        .sources = src,
        .nsources = 3,
    };
    struct pl_buf b = {0};
    pl_media_metalink(&m, &b);
    struct walk w = {0};
    XML_Parser p = XML_ParserCreateNS("UTF-8", '|');
    XML_SetUserData(p, &w);
    XML_SetElementHandler(p, on_start, on_end);
    XML_SetCharacterDataHandler(p, on_text);
    int ok = XML_Parse(p, b.data + b.off, (int)b.len, 1) == XML_STATUS_OK;
    XML_ParserFree(p);
    CHECK(ok);
    CHECK_INT(w.bad, 0);
    CHECK_INT(w.roots, 1);
    CHECK_INT(w.files, 1);
    CHECK_INT(w.sizes, 1);
    CHECK_INT(w.hashes, 1);
    CHECK_INT(w.pieces, 1);
    CHECK_INT(w.piece_hashes, 3);
    CHECK_INT(w.urls, 3);
    CHECK_INT(w.origins, 1);
    CHECK_STR(w.name, "firmware \"v2\" <&>.bin");
    CHECK_STR(w.size, "10000");
    char hex[65];
    pl_media_hex(whole, 32, hex);
    CHECK_STR(w.whole, hex);
    sha(data, 4096, whole);
    pl_media_hex(whole, 32, hex);
    CHECK_STR(w.first_piece, hex);
    CHECK_STR(w.urls_seen[1], "http://10.0.0.7:8080/m/x?token=abc&x=<y>");
    CHECK_INT(w.priorities[0], 1);
    CHECK_INT(w.priorities[1], 2);
    CHECK_INT(w.priorities[2], 1);
    CHECK(strstr(pl_buf_cstr(&b), "<published>2026-") != NULL);
    /* An empty file: no pieces element. */
    pl_buf_reset(&b);
    m.size = 0;
    m.npieces = 0;
    pl_media_metalink(&m, &b);
    CHECK(strstr(pl_buf_cstr(&b), "<pieces") == NULL);
    pl_buf_reset(&b);
    pl_media_hasher_free(&h);
    free(data);
}

/* ---- tokens ---- */

void test_media_token(void)
{
    unsigned char media_key[32], other_key[32], sha1[32], sha2[32];
    unsigned char k1[32], k2[32], k1b[32];
    memset(media_key, 0x11, 32);
    memset(other_key, 0x22, 32);
    sha((const unsigned char *)"file one", 8, sha1);
    sha((const unsigned char *)"file two", 8, sha2);
    pl_media_file_key(media_key, sha1, k1);
    pl_media_file_key(media_key, sha2, k2);
    pl_media_file_key(other_key, sha1, k1b);
    CHECK(memcmp(k1, k2, 32) != 0);
    CHECK(memcmp(k1, k1b, 32) != 0);
    char t[PL_MEDIA_TOKEN_LEN + 1];
    int64_t exp = 1800000000, got = 0;
    CHECK_INT(pl_media_token_make(k1, sha1, exp, t, 10), PL_MEDIA_EINVAL);
    CHECK_INT(pl_media_token_make(k1, sha1, exp, t, sizeof(t)), PL_MEDIA_OK);
    CHECK_INT(strlen(t), PL_MEDIA_TOKEN_LEN);
    CHECK(strspn(t, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                    "0123456789-_") == PL_MEDIA_TOKEN_LEN);
    size_t n = strlen(t);
    CHECK_INT(pl_media_token_check(k1, sha1, t, n, exp - 1000, &got),
              PL_MEDIA_OK);
    CHECK_INT(got, exp);
    CHECK_INT(pl_media_token_check(k1, sha1, t, n, exp, NULL), PL_MEDIA_OK);
    /* Expired: one second late. */
    CHECK_INT(pl_media_token_check(k1, sha1, t, n, exp + 1, NULL),
              PL_MEDIA_EEXPIRED);
    /* Another file's key, the same key for another hash, another
     * server's key. */
    CHECK_INT(pl_media_token_check(k2, sha1, t, n, exp - 1, NULL),
              PL_MEDIA_EFORGED);
    CHECK_INT(pl_media_token_check(k1, sha2, t, n, exp - 1, NULL),
              PL_MEDIA_EFORGED);
    CHECK_INT(pl_media_token_check(k1b, sha1, t, n, exp - 1, NULL),
              PL_MEDIA_EFORGED);
    /* Every character changed in turn: never accepted. */
    for (size_t i = 0; i < n; i++) {
        char f[PL_MEDIA_TOKEN_LEN + 1];
        memcpy(f, t, sizeof(f));
        f[i] = f[i] == 'A' ? 'B' : 'A';
        int rc = pl_media_token_check(k1, sha1, f, n, exp - 1, NULL);
        CHECK(rc == PL_MEDIA_EFORGED || rc == PL_MEDIA_EINVAL);
    }
    /* A later expiry written into a genuine token (the forger's try):
     * the MAC no longer matches. */
    char later[PL_MEDIA_TOKEN_LEN + 1];
    CHECK_INT(pl_media_token_make(k1, sha1, exp + 3600, later, sizeof(later)),
              PL_MEDIA_OK);
    char mixed[PL_MEDIA_TOKEN_LEN + 1];
    memcpy(mixed, later, 12); /* version and expiry of the later one */
    memcpy(mixed + 12, t + 12, sizeof(mixed) - 12);
    CHECK_INT(pl_media_token_check(k1, sha1, mixed, n, exp + 10, NULL),
              PL_MEDIA_EFORGED);
    /* Lengths and alphabets. */
    CHECK_INT(pl_media_token_check(k1, sha1, t, n - 1, exp - 1, NULL),
              PL_MEDIA_EINVAL);
    CHECK_INT(pl_media_token_check(k1, sha1, "", 0, exp - 1, NULL),
              PL_MEDIA_EINVAL);
    CHECK_INT(pl_media_token_check(k1, sha1, NULL, 0, exp - 1, NULL),
              PL_MEDIA_EINVAL);
    char plus[PL_MEDIA_TOKEN_LEN + 1];
    memcpy(plus, t, sizeof(plus));
    plus[3] = '+';
    CHECK_INT(pl_media_token_check(k1, sha1, plus, n, exp - 1, NULL),
              PL_MEDIA_EINVAL);
}
