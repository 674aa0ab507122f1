/*
 * test_digest.c - HTTP Digest authentication (src/core/digest.h) against
 * RFC 7616 §3.9.1's example (Mufasa, MD5 and SHA-256), nonces, replays,
 * stale and tampered nonces, wrong realms and users, malformed parameters,
 * the RFC 2069 form, the bounded replay table; the keys a password gives
 * (account.h); and the digest keys in the SQLite driver, including a
 * database made by an older parleyd (schema 3, before digest keys).
 *
 * A small client written here with OpenSSL computes responses, so that
 * the tests beyond the RFC example do not depend on digest.c's own code.
 */
#include <openssl/evp.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../src/core/account.h"
#include "../../src/core/alloc.h"
#include "../../src/core/buf.h"
#include "../../src/core/digest.h"
#include "../../src/core/error.h"
#include "../../src/core/scram.h"
#include "../../src/core/storage.h"
#include "unit.h"

#define REALM "localhost"
#define T0 1700000000 /* a time, in seconds */

static struct pl_str S(const char *s) {
    return pl_str_c(s);
}

static const char secret[32] = "0123456789abcdef0123456789abcdef";

static struct pl_str SECRET(void) {
    return (struct pl_str){secret, sizeof(secret)};
}

/* ---- the test's own client (OpenSSL only) ---- */

/* Lowercase hex of H(text) into out. */
static void
hhex(const char *alg, const char *text, char *out)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    const EVP_MD *m = strcmp(alg, "SHA-256") == 0 ? EVP_sha256() : EVP_md5();
    EVP_Digest(text, strlen(text), md, &n, m, NULL);
    for (unsigned i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", md[i]);
}

/* The response a client with password computes (qop NULL: RFC 2069). */
static void client_response(const char *alg, const char *user,
                            const char *realm, const char *password,
                            const char *method, const char *uri,
                            const char *nonce, const char *nc,
                            const char *cnonce, const char *qop, char *out)
{
    char a[1024], ha1[129], ha2[129];
    snprintf(a, sizeof(a), "%s:%s:%s", user, realm, password);
    hhex(alg, a, ha1);
    snprintf(a, sizeof(a), "%s:%s", method, uri);
    hhex(alg, a, ha2);
    if (qop)
        snprintf(a, sizeof(a), "%s:%s:%s:%s:%s:%s", ha1, nonce, nc, cnonce, qop,
                 ha2);
    else
        snprintf(a, sizeof(a), "%s:%s:%s", ha1, nonce, ha2);
    hhex(alg, a, out);
}

/* A request as the registrar would see it, fields filled by req(). */
struct req {
    char response[129];        /* hex */
    char nc[16];               /* nonce count */
    struct pl_digest_params p; /* points into the above and literals */
};

/*
 * A response of user with password to nonce, with nonce count nc (0: no
 * qop, the RFC 2069 form).  realm is the one the client puts in (and
 * hashes).
 */
static void req(struct req *r, const char *alg, const char *user,
                const char *realm, const char *password, const char *nonce,
                unsigned nc)
{
    static const char uri[] = "sip:localhost", cnonce[] = "0a4f113b";
    memset(r, 0, sizeof(*r));
    snprintf(r->nc, sizeof(r->nc), "%08x", nc);
    client_response(alg, user, realm, password, "REGISTER", uri, nonce, r->nc,
                    cnonce, nc ? "auth" : NULL, r->response);
    r->p.username = S(user);
    r->p.realm = S(realm);
    r->p.nonce = S(nonce);
    r->p.uri = S(uri);
    r->p.response = S(r->response);
    r->p.algorithm = S(alg);
    r->p.method = S("REGISTER");
    if (nc) {
        r->p.qop = S("auth");
        r->p.nc = S(r->nc);
        r->p.cnonce = S(cnonce);
    }
}

/* The key an account with password stores for alg. */
static void key(enum pl_digest_alg a, const char *user, const char *password,
                unsigned char *ha1)
{
    CHECK_INT(pl_digest_ha1(a, S(user), S(REALM), S(password), ha1), PL_OK);
}

static enum pl_digest_result verify(struct pl_digest *d, struct req *r,
                                    const unsigned char *ha1, time_t now)
{
    return pl_digest_verify(d, S(REALM), &r->p, ha1, now);
}

/* ---- RFC 7616 §3.9.1 ---- */

void test_digest_rfc7616(void)
{
    static const char *const want[PL_DIGEST_NALG] = {
        [PL_DIGEST_MD5] = "8ca523f5e9506fed4657c9700eebdbec",
        [PL_DIGEST_SHA256] = "753927fa0e85d155564e2e272a28d1802ca10daf4496794"
                             "697cf8db5856cb6c1",
    };
    static const char *const want_ha1[PL_DIGEST_NALG] = {
        [PL_DIGEST_MD5] = "3d78807defe7de2157e2b0b6573a855f",
        [PL_DIGEST_SHA256] = "7987c64c30e25f1b74be53f966b49b90f2808aa92faf9a0"
                             "0262392d7b4794232",
    };
    for (int a = 0; a < PL_DIGEST_NALG; a++) {
        unsigned char ha1[PL_DIGEST_MAX_LEN];
        char hex[2 * PL_DIGEST_MAX_LEN + 1];
        CHECK_INT(pl_digest_ha1((enum pl_digest_alg)a, S("Mufasa"),
                                S("http-auth@example.org"), S("Circle of Life"),
                                ha1),
                  PL_OK);
        for (size_t i = 0; i < pl_digest_len((enum pl_digest_alg)a); i++)
            sprintf(hex + 2 * i, "%02x", ha1[i]);
        CHECK_STR(hex, want_ha1[a]);
        struct pl_digest_params p = {
            .username = S("Mufasa"),
            .realm = S("http-auth@example.org"),
            .nonce = S("7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"),
            .uri = S("/dir/index.html"),
            .algorithm = S(pl_digest_alg_name((enum pl_digest_alg)a)),
            .qop = S("auth"),
            .nc = S("00000001"),
            .cnonce = S("f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"),
            .method = S("GET"),
        };
        CHECK_INT(pl_digest_response(ha1, &p, hex), PL_OK);
        CHECK_STR(hex, want[a]);
        if (a == PL_DIGEST_MD5) {
            /* The RFC 2069 form of the same request, computed apart. */
            p.qop = p.nc = p.cnonce = (struct pl_str){NULL, 0};
            CHECK_INT(pl_digest_response(ha1, &p, hex), PL_OK);
            CHECK_STR(hex, "7b2cc3b30e75b4777ea31027084363fd");
        }
    }
}

void test_digest_alg_parse(void)
{
    enum pl_digest_alg a = PL_DIGEST_SHA256;
    CHECK_INT(pl_digest_alg_parse(S(""), &a), PL_OK);
    CHECK_INT(a, PL_DIGEST_MD5); /* RFC 7616 §3.3: absent means MD5 */
    CHECK_INT(pl_digest_alg_parse(S("sha-256"), &a), PL_OK);
    CHECK_INT(a, PL_DIGEST_SHA256);
    CHECK_INT(pl_digest_alg_parse(S("md5"), &a), PL_OK);
    CHECK_INT(a, PL_DIGEST_MD5);
    CHECK_INT(pl_digest_alg_parse(S("MD5-sess"), &a), PL_EINVAL);
    CHECK_INT(pl_digest_alg_parse(S("SHA-512-256"), &a), PL_EINVAL);
    CHECK_INT(pl_digest_alg_parse(S("SHA-2566"), &a), PL_EINVAL);
    CHECK_INT(pl_digest_len(PL_DIGEST_MD5), 16);
    CHECK_INT(pl_digest_len(PL_DIGEST_SHA256), 32);
    CHECK_STR(pl_digest_alg_name(PL_DIGEST_SHA256), "SHA-256");
}

/* ---- verification ---- */

void test_digest_verify_ok(void)
{
    struct pl_digest *d = pl_digest_new(SECRET(), NULL);
    const char *algs[] = {"MD5", "SHA-256"};
    for (int a = 0; a < PL_DIGEST_NALG; a++) {
        unsigned char ha1[PL_DIGEST_MAX_LEN];
        char nonce[PL_DIGEST_NONCE_LEN + 1], other[PL_DIGEST_NONCE_LEN + 1];
        struct req r;
        key((enum pl_digest_alg)a, "alice", "s3cret", ha1);
        pl_digest_nonce(d, S(REALM), T0, nonce);
        CHECK_INT(strlen(nonce), PL_DIGEST_NONCE_LEN);
        pl_digest_nonce(d, S(REALM), T0, other);
        CHECK(strcmp(nonce, other) != 0); /* unique even in one second */

        req(&r, algs[a], "alice", REALM, "s3cret", nonce, 1);
        CHECK_INT(verify(d, &r, ha1, T0 + 1), PL_DIGEST_OK);
        /* Each nc once: the same request again is a replay. */
        CHECK_INT(verify(d, &r, ha1, T0 + 2), PL_DIGEST_STALE);
        req(&r, algs[a], "alice", REALM, "s3cret", nonce, 3);
        CHECK_INT(verify(d, &r, ha1, T0 + 3), PL_DIGEST_OK);
        /* 2 arrives after 3 (a datagram sent again): accepted once, in
         * the window below the highest count. */
        req(&r, algs[a], "alice", REALM, "s3cret", nonce, 2);
        CHECK_INT(verify(d, &r, ha1, T0 + 4), PL_DIGEST_OK);
        CHECK_INT(verify(d, &r, ha1, T0 + 4), PL_DIGEST_STALE);
        req(&r, algs[a], "alice", REALM, "s3cret", nonce, 3);
        CHECK_INT(verify(d, &r, ha1, T0 + 4), PL_DIGEST_STALE);
        req(&r, algs[a], "alice", REALM, "s3cret", nonce, 4);
        CHECK_INT(verify(d, &r, ha1, T0 + 5), PL_DIGEST_OK);
        /* A jump past the window: what is now too far below is stale
         * (used or not), what is inside it is still accepted once. */
        req(&r, algs[a], "alice", REALM, "s3cret", nonce, 100);
        CHECK_INT(verify(d, &r, ha1, T0 + 5), PL_DIGEST_OK);
        req(&r, algs[a], "alice", REALM, "s3cret", nonce, 5);
        CHECK_INT(verify(d, &r, ha1, T0 + 5), PL_DIGEST_STALE);
        req(&r, algs[a], "alice", REALM, "s3cret", nonce, 36);
        CHECK_INT(verify(d, &r, ha1, T0 + 5), PL_DIGEST_STALE);
        req(&r, algs[a], "alice", REALM, "s3cret", nonce, 37);
        CHECK_INT(verify(d, &r, ha1, T0 + 5), PL_DIGEST_OK);
        CHECK_INT(verify(d, &r, ha1, T0 + 5), PL_DIGEST_STALE);
        req(&r, algs[a], "alice", REALM, "s3cret", nonce, 99);
        CHECK_INT(verify(d, &r, ha1, T0 + 5), PL_DIGEST_OK);
        req(&r, algs[a], "alice", REALM, "s3cret", nonce, 100);
        CHECK_INT(verify(d, &r, ha1, T0 + 5), PL_DIGEST_STALE);
        /* Uppercase hex in the response is the same digest. */
        req(&r, algs[a], "alice", REALM, "s3cret", other, 1);
        for (char *c = r.response; *c; c++)
            if (*c >= 'a' && *c <= 'f')
                *c = (char)(*c - 'a' + 'A');
        CHECK_INT(verify(d, &r, ha1, T0 + 5), PL_DIGEST_OK);
    }
    CHECK_INT(pl_digest_tracked(d), 4);
    pl_digest_free(d);
}

void test_digest_stale_nonce(void)
{
    struct pl_digest_conf conf = {60, 64, 1};
    struct pl_digest *d = pl_digest_new(SECRET(), &conf);
    unsigned char ha1[PL_DIGEST_MAX_LEN];
    char nonce[PL_DIGEST_NONCE_LEN + 1];
    struct req r;
    key(PL_DIGEST_SHA256, "alice", "s3cret", ha1);
    pl_digest_nonce(d, S(REALM), T0, nonce);
    req(&r, "SHA-256", "alice", REALM, "s3cret", nonce, 1);
    /* Right password, expired nonce: stale (re-challenge, stale=true). */
    CHECK_INT(verify(d, &r, ha1, T0 + 61), PL_DIGEST_STALE);
    /* Wrong password on the same expired nonce: bad, not stale. */
    req(&r, "SHA-256", "alice", REALM, "guess", nonce, 1);
    CHECK_INT(verify(d, &r, ha1, T0 + 61), PL_DIGEST_BAD);
    /* Within its lifetime it was good, and nothing was recorded. */
    req(&r, "SHA-256", "alice", REALM, "s3cret", nonce, 1);
    CHECK_INT(verify(d, &r, ha1, T0 + 60), PL_DIGEST_OK);
    CHECK_INT(verify(d, &r, ha1, T0 + 60), PL_DIGEST_STALE);
    CHECK_INT(pl_digest_tracked(d), 1);

    /* A nonce from an earlier run (same secret, another epoch) is stale
     * when answered right, since its uses before are unknown, though this
     * run issued a nonce with the same serial number and never saw it. */
    pl_digest_free(d);
    struct pl_digest *before = pl_digest_new(SECRET(), &conf);
    pl_digest_nonce(before, S(REALM), T0, nonce);
    pl_digest_free(before);
    d = pl_digest_new(SECRET(), &conf);
    char mine[PL_DIGEST_NONCE_LEN + 1];
    for (int i = 0; i < 3; i++)
        pl_digest_nonce(d, S(REALM), T0, mine);
    req(&r, "SHA-256", "alice", REALM, "s3cret", nonce, 1);
    CHECK_INT(verify(d, &r, ha1, T0 + 1), PL_DIGEST_STALE);
    req(&r, "SHA-256", "alice", REALM, "guess", nonce, 1);
    CHECK_INT(verify(d, &r, ha1, T0 + 1), PL_DIGEST_BAD);
    req(&r, "SHA-256", "alice", REALM, "s3cret", mine, 1);
    CHECK_INT(verify(d, &r, ha1, T0 + 1), PL_DIGEST_OK);
    pl_digest_free(d);
}

void test_digest_wrong(void)
{
    struct pl_digest *d = pl_digest_new(SECRET(), NULL);
    unsigned char ha1[PL_DIGEST_MAX_LEN];
    char nonce[PL_DIGEST_NONCE_LEN + 1];
    struct req r;
    key(PL_DIGEST_MD5, "alice", "s3cret", ha1);
    pl_digest_nonce(d, S(REALM), T0, nonce);

    req(&r, "MD5", "alice", REALM, "S3cret", nonce, 1);
    CHECK_INT(verify(d, &r, ha1, T0), PL_DIGEST_BAD);
    /* Credentials for another realm, right password. */
    req(&r, "MD5", "alice", "example.org", "s3cret", nonce, 1);
    CHECK_INT(verify(d, &r, ha1, T0), PL_DIGEST_BAD);
    /* Computed for our realm but naming another. */
    req(&r, "MD5", "alice", REALM, "s3cret", nonce, 1);
    r.p.realm = S("example.org");
    CHECK_INT(verify(d, &r, ha1, T0), PL_DIGEST_BAD);
    /* The response for another method or uri than the request's. */
    req(&r, "MD5", "alice", REALM, "s3cret", nonce, 1);
    r.p.method = S("INVITE");
    CHECK_INT(verify(d, &r, ha1, T0), PL_DIGEST_BAD);
    /* Unknown user, or no key for the algorithm: a fake key, bad. */
    req(&r, "MD5", "nobody", REALM, "s3cret", nonce, 1);
    CHECK_INT(verify(d, &r, NULL, T0), PL_DIGEST_BAD);
    /* Even a client that knew the fake key would need the secret. */
    unsigned char fake[PL_DIGEST_MAX_LEN], fake2[PL_DIGEST_MAX_LEN];
    pl_digest_fake_ha1(PL_DIGEST_MD5, S("nobody"), S(REALM), SECRET(), fake);
    pl_digest_fake_ha1(PL_DIGEST_MD5, S("nobody"), S(REALM), SECRET(), fake2);
    CHECK(memcmp(fake, fake2, 16) == 0); /* stable */
    pl_digest_fake_ha1(PL_DIGEST_MD5, S("nobodz"), S(REALM), SECRET(), fake2);
    CHECK(memcmp(fake, fake2, 16) != 0);
    /* Nothing bad was recorded: the right answer still works once. */
    CHECK_INT(pl_digest_tracked(d), 0);
    req(&r, "MD5", "alice", REALM, "s3cret", nonce, 1);
    CHECK_INT(verify(d, &r, ha1, T0), PL_DIGEST_OK);
    pl_digest_free(d);
}

void test_digest_tampered_nonce(void)
{
    struct pl_digest *d = pl_digest_new(SECRET(), NULL);
    unsigned char ha1[PL_DIGEST_MAX_LEN];
    char nonce[PL_DIGEST_NONCE_LEN + 1];
    struct req r;
    key(PL_DIGEST_SHA256, "alice", "s3cret", ha1);
    pl_digest_nonce(d, S(REALM), T0, nonce);

    CHECK(pl_digest_nonce_check(d, S(REALM), S(nonce)));
    CHECK(!pl_digest_nonce_check(d, S("example.org"), S(nonce)));
    /* Each position changed (the time moved back, the serial, the mac),
     * answered with the right password: not ours, so bad. */
    for (int i = 0; i < PL_DIGEST_NONCE_LEN; i += 7) {
        char t[PL_DIGEST_NONCE_LEN + 1];
        memcpy(t, nonce, sizeof(t));
        t[i] = t[i] == '0' ? '1' : '0';
        CHECK(!pl_digest_nonce_check(d, S(REALM), S(t)));
        req(&r, "SHA-256", "alice", REALM, "s3cret", t, 1);
        CHECK_INT(verify(d, &r, ha1, T0), PL_DIGEST_BAD);
    }
    /* Truncated, lengthened, not hex. */
    const char *odd[] = {"", "00", "zz"};
    for (size_t i = 0; i < sizeof(odd) / sizeof(odd[0]); i++) {
        req(&r, "SHA-256", "alice", REALM, "s3cret", odd[i], 1);
        CHECK_INT(verify(d, &r, ha1, T0),
                  odd[i][0] ? PL_DIGEST_BAD : PL_DIGEST_INVALID);
    }
    char longer[PL_DIGEST_NONCE_LEN + 3];
    snprintf(longer, sizeof(longer), "%s00", nonce);
    req(&r, "SHA-256", "alice", REALM, "s3cret", longer, 1);
    CHECK_INT(verify(d, &r, ha1, T0), PL_DIGEST_BAD);

    /* A nonce issued for another realm of this server. */
    char elsewhere[PL_DIGEST_NONCE_LEN + 1];
    pl_digest_nonce(d, S("example.org"), T0, elsewhere);
    req(&r, "SHA-256", "alice", REALM, "s3cret", elsewhere, 1);
    CHECK_INT(verify(d, &r, ha1, T0), PL_DIGEST_BAD);

    /* A nonce made by a server with another secret. */
    char ss[32];
    memset(ss, 'x', sizeof(ss));
    struct pl_digest *other = pl_digest_new((struct pl_str){ss, sizeof(ss)},
                                            NULL);
    char foreign[PL_DIGEST_NONCE_LEN + 1];
    pl_digest_nonce(other, S(REALM), T0, foreign);
    pl_digest_free(other);
    req(&r, "SHA-256", "alice", REALM, "s3cret", foreign, 1);
    CHECK_INT(verify(d, &r, ha1, T0), PL_DIGEST_BAD);

    /* The genuine one still works. */
    req(&r, "SHA-256", "alice", REALM, "s3cret", nonce, 1);
    CHECK_INT(verify(d, &r, ha1, T0), PL_DIGEST_OK);
    CHECK_INT(pl_digest_tracked(d), 1);
    pl_digest_free(d);
}

void test_digest_invalid(void)
{
    struct pl_digest_conf strict = {300, 64, 0};
    struct pl_digest *d = pl_digest_new(SECRET(), NULL);
    struct pl_digest *d2 = pl_digest_new(SECRET(), &strict);
    unsigned char ha1[PL_DIGEST_MAX_LEN];
    char nonce[PL_DIGEST_NONCE_LEN + 1];
    struct req r;
    key(PL_DIGEST_MD5, "alice", "s3cret", ha1);
    pl_digest_nonce(d, S(REALM), T0, nonce);

#define INVALID_IF(change)                                                     \
    do {                                                                       \
        req(&r, "MD5", "alice", REALM, "s3cret", nonce, 1);                    \
        change;                                                                \
        CHECK_INT(verify(d, &r, ha1, T0), PL_DIGEST_INVALID);                  \
    } while (0)
    INVALID_IF(r.p.cnonce = S(""));
    INVALID_IF(r.p.nc = S("1"));
    INVALID_IF(r.p.nc = S("0000000g"));
    INVALID_IF(r.p.nc = S("00000000"));
    INVALID_IF(r.p.nc = S("000000001"));
    INVALID_IF(r.p.qop = S("auth-int"));
    INVALID_IF(r.p.algorithm = S("MD5-sess"));
    INVALID_IF(r.p.algorithm = S("SHA-512-256"));
    INVALID_IF(r.p.response = S("8ca523f5e9506fed4657c9700eebdbe"));
    INVALID_IF(r.p.response = S(""));
    INVALID_IF(r.p.username = S(""));
    INVALID_IF(r.p.uri = S(""));
    INVALID_IF(r.p.method = S(""));
    /* Without qop, no nc or cnonce (RFC 2617 §3.2.2). */
    INVALID_IF(r.p.qop = S(""));
#undef INVALID_IF
    /* Without qop, SHA-256 is not RFC 2069: invalid. */
    req(&r, "SHA-256", "alice", REALM, "s3cret", nonce, 0);
    CHECK_INT(verify(d, &r, ha1, T0), PL_DIGEST_INVALID);
    /* RFC 2069 turned off: a right MD5 response without qop is refused. */
    pl_digest_nonce(d2, S(REALM), T0, nonce);
    req(&r, "MD5", "alice", REALM, "s3cret", nonce, 0);
    CHECK_INT(pl_digest_verify(d2, S(REALM), &r.p, ha1, T0), PL_DIGEST_INVALID);
    CHECK_INT(pl_digest_tracked(d), 0);
    CHECK_STR(pl_digest_result_name(PL_DIGEST_INVALID), "invalid");
    pl_digest_free(d);
    pl_digest_free(d2);
}

void test_digest_rfc2069(void)
{
    struct pl_digest *d = pl_digest_new(SECRET(), NULL);
    unsigned char ha1[PL_DIGEST_MAX_LEN];
    char nonce[PL_DIGEST_NONCE_LEN + 1];
    struct req r;
    key(PL_DIGEST_MD5, "alice", "s3cret", ha1);
    pl_digest_nonce(d, S(REALM), T0, nonce);
    req(&r, "MD5", "alice", REALM, "s3cret", nonce, 0);
    CHECK_INT(verify(d, &r, ha1, T0), PL_DIGEST_OK);
    /* Once only: without nc the uses cannot be counted. */
    CHECK_INT(verify(d, &r, ha1, T0), PL_DIGEST_STALE);
    req(&r, "MD5", "alice", REALM, "s3cret", nonce, 2);
    CHECK_INT(verify(d, &r, ha1, T0), PL_DIGEST_STALE);
    req(&r, "MD5", "alice", REALM, "wrong", nonce, 0);
    CHECK_INT(verify(d, &r, ha1, T0), PL_DIGEST_BAD);
    /* A nonce used with qop cannot then be used without. */
    pl_digest_nonce(d, S(REALM), T0, nonce);
    req(&r, "MD5", "alice", REALM, "s3cret", nonce, 1);
    CHECK_INT(verify(d, &r, ha1, T0), PL_DIGEST_OK);
    req(&r, "MD5", "alice", REALM, "s3cret", nonce, 0);
    CHECK_INT(verify(d, &r, ha1, T0), PL_DIGEST_STALE);
    pl_digest_free(d);
}

void test_digest_replay_table(void)
{
    struct pl_digest_conf conf = {60, 16, 1};
    struct pl_digest *d = pl_digest_new(SECRET(), &conf);
    unsigned char ha1[PL_DIGEST_MAX_LEN];
    char first[PL_DIGEST_NONCE_LEN + 1], unused[PL_DIGEST_NONCE_LEN + 1];
    char nonce[PL_DIGEST_NONCE_LEN + 1];
    struct req r;
    key(PL_DIGEST_SHA256, "alice", "s3cret", ha1);

    /* A flood of forged requests records nothing. */
    pl_digest_nonce(d, S(REALM), T0, first);
    for (int i = 0; i < 1000; i++) {
        req(&r, "SHA-256", "alice", REALM, "guess", first, (unsigned)i + 1);
        CHECK_INT(verify(d, &r, ha1, T0), PL_DIGEST_BAD);
    }
    CHECK_INT(pl_digest_tracked(d), 0);

    req(&r, "SHA-256", "alice", REALM, "s3cret", first, 1);
    CHECK_INT(verify(d, &r, ha1, T0), PL_DIGEST_OK);
    pl_digest_nonce(d, S(REALM), T0, unused);
    /* 100 more nonces used: the table stays at 16 entries. */
    for (int i = 0; i < 100; i++) {
        pl_digest_nonce(d, S(REALM), T0, nonce);
        req(&r, "SHA-256", "alice", REALM, "s3cret", nonce, 1);
        CHECK_INT(verify(d, &r, ha1, T0 + 1), PL_DIGEST_OK);
        CHECK(pl_digest_tracked(d) <= 16);
    }
    CHECK_INT(pl_digest_tracked(d), 16);
    /* The first nonce was forgotten: its next use is not trusted (its
     * replay even less), and neither is a nonce issued before the last
     * one forgotten, used or not. */
    req(&r, "SHA-256", "alice", REALM, "s3cret", first, 2);
    CHECK_INT(verify(d, &r, ha1, T0 + 2), PL_DIGEST_STALE);
    req(&r, "SHA-256", "alice", REALM, "s3cret", first, 1);
    CHECK_INT(verify(d, &r, ha1, T0 + 2), PL_DIGEST_STALE);
    req(&r, "SHA-256", "alice", REALM, "s3cret", unused, 1);
    CHECK_INT(verify(d, &r, ha1, T0 + 2), PL_DIGEST_STALE);
    /* A recent one is still counted; a fresh one works. */
    req(&r, "SHA-256", "alice", REALM, "s3cret", nonce, 1);
    CHECK_INT(verify(d, &r, ha1, T0 + 2), PL_DIGEST_STALE);
    req(&r, "SHA-256", "alice", REALM, "s3cret", nonce, 2);
    CHECK_INT(verify(d, &r, ha1, T0 + 2), PL_DIGEST_OK);
    pl_digest_nonce(d, S(REALM), T0 + 2, nonce);
    req(&r, "SHA-256", "alice", REALM, "s3cret", nonce, 1);
    CHECK_INT(verify(d, &r, ha1, T0 + 2), PL_DIGEST_OK);

    /* Later, old entries give way to new ones; a nonce issued after
     * every one forgotten, used or not, stays good. */
    time_t t1 = T0 + 1000;
    pl_digest_nonce(d, S(REALM), t1, unused);
    for (int i = 0; i < 16; i++) {
        pl_digest_nonce(d, S(REALM), t1, nonce);
        req(&r, "SHA-256", "alice", REALM, "s3cret", nonce, 1);
        CHECK_INT(verify(d, &r, ha1, t1), PL_DIGEST_OK);
    }
    req(&r, "SHA-256", "alice", REALM, "s3cret", unused, 1);
    CHECK_INT(verify(d, &r, ha1, t1), PL_DIGEST_OK);
    CHECK_INT(pl_digest_tracked(d), 16);
    pl_digest_free(d);
}

/* ---- challenges and quoted strings ---- */

void test_digest_challenge(void)
{
    struct pl_buf b = {0};
    pl_digest_challenge(S(REALM), "abc", NULL, PL_DIGEST_SHA256, 0, &b);
    CHECK_STR(pl_buf_cstr(&b), "Digest realm=\"localhost\", nonce=\"abc\", "
                               "algorithm=SHA-256, qop=\"auth\"");
    b.len = b.off = 0;
    pl_digest_challenge(S("a\"b\\c"), "n", "o\"p", PL_DIGEST_MD5, 1, &b);
    CHECK_STR(pl_buf_cstr(&b),
              "Digest realm=\"a\\\"b\\\\c\", nonce=\"n\", opaque=\"o\\\"p\", "
              "algorithm=MD5, qop=\"auth\", stale=true");
    /* What the challenge quotes, pl_digest_unquote gives back. */
    b.len = b.off = 0;
    CHECK_INT(pl_digest_unquote(S("\"a\\\"b\\\\c\""), &b), PL_OK);
    CHECK_STR(pl_buf_cstr(&b), "a\"b\\c");
    pl_buf_reset(&b);
}

void test_digest_unquote(void)
{
    static const struct {
        const char *in, *out; /* out NULL: PL_EINVAL */
    } cases[] = {
        {"\"Mufasa\"", "Mufasa"}, {"auth", "auth"},
        {"00000001", "00000001"}, {"\"\"", ""},
        {"\"a b\"", "a b"},       {"\"\\a\"", "a"},
        {"\"unterminated", NULL}, {"\"", NULL},
        {"\"a\"b", NULL},         {"\"a\\\"", NULL},
        {"\"a\rb\"", NULL},       {"\"\\\n\"", NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct pl_buf b = {0};
        pl_buf_append(&b, "x", 1);
        int rc = pl_digest_unquote(S(cases[i].in), &b);
        if (cases[i].out) {
            CHECK_INT(rc, PL_OK);
            CHECK_INT(b.len, strlen(cases[i].out) + 1);
            CHECK(memcmp(pl_buf_cstr(&b) + 1, cases[i].out,
                         strlen(cases[i].out)) == 0);
        } else {
            CHECK_INT(rc, PL_EINVAL);
            CHECK_INT(b.len, 1); /* untouched */
        }
        pl_buf_reset(&b);
    }
}

/* ---- the keys of a password ---- */

static void hex_of(const unsigned char *p, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", p[i]);
}

void test_digest_account_keys(void)
{
    struct pl_account a;
    char hex[2 * PL_DIGEST_MAX_LEN + 1], want[129];
    CHECK_INT(pl_account_set_password(&a, "alice", REALM, S("pw"), 4096, 1),
              PL_OK);
    CHECK(a.digest[PL_DIGEST_MD5].set && a.digest[PL_DIGEST_SHA256].set);
    hex_of(a.digest[PL_DIGEST_MD5].ha1, 16, hex);
    hhex("MD5", "alice:localhost:pw", want);
    CHECK_STR(hex, want);
    hex_of(a.digest[PL_DIGEST_SHA256].ha1, 32, hex);
    hhex("SHA-256", "alice:localhost:pw", want);
    CHECK_STR(hex, want);
    CHECK_INT(a.keys[PL_SCRAM_SHA1].iterations, 4096);
    CHECK(pl_scram_verify_password(&a.keys[PL_SCRAM_SHA1], S("pw")));
    CHECK(pl_scram_verify_password(&a.keys[PL_SCRAM_SHA256], S("pw")));
    CHECK(!pl_scram_verify_password(&a.keys[PL_SCRAM_SHA256], S("pW")));

    /* MD5 keys off: SHA-256 only. */
    CHECK_INT(pl_account_set_password(&a, "alice", REALM, S("pw"), 4096, 0),
              PL_OK);
    CHECK(!a.digest[PL_DIGEST_MD5].set && a.digest[PL_DIGEST_SHA256].set);

    /* The password's bytes are hashed as given (no SASLprep): U+00A0 is
     * mapped to a space for SCRAM, not for digest. */
    CHECK_INT(pl_account_set_password(&a, "bob", REALM,
                                      S("a\xc2\xa0"
                                        "b"),
                                      4096, 1),
              PL_OK);
    hex_of(a.digest[PL_DIGEST_MD5].ha1, 16, hex);
    hhex("MD5",
         "bob:localhost:a\xc2\xa0"
         "b",
         want);
    CHECK_STR(hex, want);
    CHECK(pl_scram_verify_password(&a.keys[PL_SCRAM_SHA256], S("a b")));

    /* A password SASLprep refuses (a control character): nothing. */
    CHECK_INT(pl_account_set_password(&a, "alice", REALM, S("a\x07"), 4096, 1),
              PL_EINVAL);
    CHECK(!a.digest[PL_DIGEST_MD5].set && !a.digest[PL_DIGEST_SHA256].set);
    CHECK_INT(a.keys[PL_SCRAM_SHA1].iterations, 0);
}

/* ---- the SQLite driver ---- */

struct dbenv {
    char dir[64];         /* a fresh directory */
    char path[96];        /* the database in it */
    struct pl_settings s; /* what the driver reads */
    const struct pl_storage_driver *drv;
};

static void dbenv_init(struct dbenv *e)
{
    memset(e, 0, sizeof(*e));
    snprintf(e->dir, sizeof(e->dir), "/tmp/parley-digest-XXXXXX");
    CHECK(mkdtemp(e->dir) != NULL);
    snprintf(e->path, sizeof(e->path), "%s/parley.db", e->dir);
    e->s.data_dir = e->dir;
    e->s.sqlite_path = e->path;
    e->s.sqlite_synchronous = 0;
    e->drv = pl_storage_driver_find("sqlite");
    CHECK(e->drv != NULL);
}

static void dbenv_done(struct dbenv *e)
{
    char p[128];
    static const char *const files[] = {"", "-wal", "-shm"};
    for (size_t i = 0; i < 3; i++) {
        snprintf(p, sizeof(p), "%s%s", e->path, files[i]);
        unlink(p);
    }
    rmdir(e->dir);
}

/* Rows of digest_keys for user, read with SQLite itself. */
static int digest_rows(struct dbenv *e, const char *user)
{
    sqlite3 *h = NULL;
    sqlite3_stmt *st = NULL;
    int n = -1;
    if (sqlite3_open(e->path, &h) == SQLITE_OK &&
        sqlite3_prepare_v2(h,
                           "SELECT count(*) FROM digest_keys WHERE user = ?1",
                           -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, user, -1, SQLITE_STATIC);
        if (sqlite3_step(st) == SQLITE_ROW)
            n = sqlite3_column_int(st, 0);
    }
    sqlite3_finalize(st);
    sqlite3_close(h);
    return n;
}

void test_digest_sqlite_keys(void)
{
    struct dbenv e;
    void *db = NULL;
    struct pl_account a, got;
    dbenv_init(&e);
    CHECK_INT(e.drv->open(&e.s, &db), PL_OK);
    CHECK_INT(pl_account_set_password(&a, "alice", REALM, S("pw"), 4096, 1),
              PL_OK);
    e.drv->begin(db);
    CHECK_INT(e.drv->account_create(db, REALM, "alice", &a), PL_OK);
    e.drv->commit(db);
    CHECK_INT(e.drv->account_get(db, REALM, "alice", &got), PL_OK);
    for (int i = 0; i < PL_DIGEST_NALG; i++) {
        CHECK(got.digest[i].set);
        CHECK(memcmp(got.digest[i].ha1, a.digest[i].ha1,
                     pl_digest_len((enum pl_digest_alg)i)) == 0);
    }
    CHECK_INT(digest_rows(&e, "alice"), 2);

    /* A new password without MD5 keys removes the old MD5 key. */
    CHECK_INT(pl_account_set_password(&a, "alice", REALM, S("pw2"), 4096, 0),
              PL_OK);
    e.drv->begin(db);
    CHECK_INT(e.drv->account_update(db, REALM, "alice", &a), PL_OK);
    e.drv->commit(db);
    CHECK_INT(e.drv->account_get(db, REALM, "alice", &got), PL_OK);
    CHECK(!got.digest[PL_DIGEST_MD5].set);
    CHECK(got.digest[PL_DIGEST_SHA256].set &&
          memcmp(got.digest[PL_DIGEST_SHA256].ha1,
                 a.digest[PL_DIGEST_SHA256].ha1, 32) == 0);
    CHECK_INT(digest_rows(&e, "alice"), 1);

    /* Removing the account removes its keys. */
    e.drv->begin(db);
    CHECK_INT(e.drv->account_delete(db, REALM, "alice"), PL_OK);
    e.drv->commit(db);
    CHECK_INT(digest_rows(&e, "alice"), 0);
    e.drv->close(db);
    dbenv_done(&e);
}

/* Schema 3, as parleyd wrote it before digest keys (migrations 1 to 3 of
 * mod_storage_sqlite.c, frozen), with one account. */
static const char old_schema[] =
    "CREATE TABLE accounts (host TEXT NOT NULL, user TEXT NOT NULL,"
    " created INTEGER NOT NULL, PRIMARY KEY (host, user));"
    "CREATE TABLE scram_keys (host TEXT NOT NULL, user TEXT NOT NULL,"
    " hash INTEGER NOT NULL, iterations INTEGER NOT NULL, salt BLOB NOT NULL,"
    " stored_key BLOB NOT NULL, server_key BLOB NOT NULL,"
    " PRIMARY KEY (host, user, hash));"
    "CREATE TABLE kv (host TEXT NOT NULL, user TEXT NOT NULL,"
    " store TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL,"
    " PRIMARY KEY (host, user, store, key));"
    "CREATE INDEX kv_by_store ON kv (host, store, key);"
    "CREATE TABLE archives (aid INTEGER PRIMARY KEY, host TEXT NOT NULL,"
    " owner TEXT NOT NULL, kind INTEGER NOT NULL,"
    " n INTEGER NOT NULL DEFAULT 0, UNIQUE (host, owner, kind));"
    "CREATE TABLE archive (id INTEGER PRIMARY KEY, aid INTEGER NOT NULL,"
    " sid TEXT NOT NULL, ts INTEGER NOT NULL, peer TEXT NOT NULL,"
    " peer_res TEXT, dir INTEGER NOT NULL, xml BLOB NOT NULL);"
    "CREATE UNIQUE INDEX archive_by_sid ON archive (sid);"
    "CREATE INDEX archive_by_aid ON archive (aid, id);"
    "CREATE INDEX archive_by_peer ON archive (aid, peer, id);"
    "CREATE INDEX archive_by_ts ON archive (aid, ts);"
    "CREATE TRIGGER archive_ins AFTER INSERT ON archive BEGIN"
    " UPDATE archives SET n = n + 1 WHERE aid = new.aid; END;"
    "CREATE TRIGGER archive_del AFTER DELETE ON archive BEGIN"
    " UPDATE archives SET n = n - 1 WHERE aid = old.aid; END;"
    "PRAGMA user_version = 3;";

void test_digest_sqlite_migration(void)
{
    struct dbenv e;
    sqlite3 *h = NULL;
    sqlite3_stmt *st = NULL;
    struct pl_scram_keys k;
    struct pl_account got, a;
    void *db = NULL;
    dbenv_init(&e);

    CHECK_INT(pl_scram_derive(PL_SCRAM_SHA256, S("old-pw"), NULL, 0, 4096, &k),
              PL_OK);
    CHECK_INT(sqlite3_open(e.path, &h), SQLITE_OK);
    CHECK_INT(sqlite3_exec(h, old_schema, NULL, NULL, NULL), SQLITE_OK);
    CHECK_INT(sqlite3_exec(h,
                           "INSERT INTO accounts VALUES ('localhost', 'old',"
                           " 0)",
                           NULL, NULL, NULL),
              SQLITE_OK);
    CHECK_INT(sqlite3_prepare_v2(h,
                                 "INSERT INTO scram_keys VALUES ('localhost',"
                                 " 'old', 1, ?1, ?2, ?3, ?4)",
                                 -1, &st, NULL),
              SQLITE_OK);
    sqlite3_bind_int(st, 1, (int)k.iterations);
    sqlite3_bind_blob(st, 2, k.salt, (int)k.salt_len, SQLITE_STATIC);
    sqlite3_bind_blob(st, 3, k.stored_key, 32, SQLITE_STATIC);
    sqlite3_bind_blob(st, 4, k.server_key, 32, SQLITE_STATIC);
    CHECK_INT(sqlite3_step(st), SQLITE_DONE);
    sqlite3_finalize(st);
    sqlite3_close(h);

    /* parleyd opens it: migrated, the account intact, no digest keys. */
    CHECK_INT(e.drv->open(&e.s, &db), PL_OK);
    CHECK_INT(e.drv->account_get(db, REALM, "old", &got), PL_OK);
    CHECK(pl_scram_verify_password(&got.keys[PL_SCRAM_SHA256], S("old-pw")));
    CHECK(!got.digest[PL_DIGEST_MD5].set && !got.digest[PL_DIGEST_SHA256].set);
    CHECK_INT(digest_rows(&e, "old"), 0);
    /* Setting the password again stores them. */
    CHECK_INT(pl_account_set_password(&a, "old", REALM, S("new-pw"), 4096, 1),
              PL_OK);
    e.drv->begin(db);
    CHECK_INT(e.drv->account_update(db, REALM, "old", &a), PL_OK);
    e.drv->commit(db);
    CHECK_INT(e.drv->account_get(db, REALM, "old", &got), PL_OK);
    CHECK(got.digest[PL_DIGEST_MD5].set && got.digest[PL_DIGEST_SHA256].set);
    CHECK_INT(digest_rows(&e, "old"), 2);
    e.drv->close(db);

    CHECK_INT(sqlite3_open(e.path, &h), SQLITE_OK);
    CHECK_INT(sqlite3_prepare_v2(h, "PRAGMA user_version", -1, &st, NULL),
              SQLITE_OK);
    CHECK_INT(sqlite3_step(st), SQLITE_ROW);
    CHECK(sqlite3_column_int(st, 0) >= 4);
    sqlite3_finalize(st);
    sqlite3_close(h);
    dbenv_done(&e);
}
