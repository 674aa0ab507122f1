/*
 * digest.c - HTTP Digest authentication for the server side (RFC 7616, as
 * RFC 3261 §22 and RFC 8760 use it in SIP); see digest.h.
 *
 * API: pl_digest_len(), pl_digest_alg_name(), pl_digest_alg_parse(),
 * pl_digest_ha1(), pl_digest_fake_ha1(), pl_digest_unquote(), the verifier
 * pl_digest_new()/pl_digest_free(), pl_digest_nonce(),
 * pl_digest_nonce_check(), pl_digest_challenge(), pl_digest_verify(), pl_digest_response(),
 * pl_digest_result_name(), pl_digest_tracked().
 *
 * A nonce is hex(ts[8] epoch[4] seq[8] mac[16]): ts the issue time in
 * seconds, epoch a random number drawn when the verifier is made, seq a
 * counter of the nonces it issued, all big-endian, and mac the first 16
 * bytes of HMAC-SHA-256(realm key, the 20 bytes before it), where the realm
 * key is HMAC-SHA-256(nonce key, realm) and the nonce key is derived from
 * the server secret.  Within an epoch seq names a nonce, so the replay
 * table is keyed by it.
 *
 * The replay table is a fixed array of entries used in turn (the slot
 * reused is always the oldest entry) and a chained hash index over them.
 * watermark is the highest seq of an evicted entry: a nonce of this epoch
 * with seq <= watermark that is not in the table may have been used, so it
 * is stale; one above it that is not in the table was never used.  (If the
 * evicted entry's nonce had expired, so had every nonce it makes suspect:
 * nonces are issued in seq order.)
 *
 * To extend with an algorithm: a row in algs[] and a value in enum
 * pl_digest_alg (digest.h).
 */
#include "digest.h"

#include <stdint.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "alloc.h"
#include "error.h"
#include "log.h"

#define NONCE_RAW 36            /* bytes behind the hex digits */
#define NONCE_SIGNED 20         /* ts, epoch, seq: what the mac covers */
#define NONCE_MAC 16            /* bytes of HMAC-SHA-256 kept */
#define NO_MORE_USES UINT32_MAX /* nc of a nonce used without qop */

static const struct {
    const char *name;          /* as in the algorithm parameter */
    size_t len;                /* digest bytes */
    const EVP_MD *(*md)(void); /* OpenSSL's */
} algs[PL_DIGEST_NALG] = {
    [PL_DIGEST_MD5] = {"MD5", 16, EVP_md5},
    [PL_DIGEST_SHA256] = {"SHA-256", 32, EVP_sha256},
};

struct entry {
    uint64_t seq;  /* the nonce's serial number */
    uint64_t seen; /* bit i: nc - i was accepted (the replay window) */
    uint32_t nc;   /* highest nonce count accepted with it */
    int32_t next;  /* next entry in its hash chain, or -1 */
};

/* Nonce counts accepted out of order: a client with requests in flight
 * over UDP may have a lower count arrive after a higher one (a datagram
 * dropped and sent again); within this many below the highest, each
 * count is still accepted once, as anti-replay windows do (RFC 4303
 * §3.4.3).  Older ones are stale. */
#define NC_WINDOW 64

struct pl_digest {
    unsigned char *secret;       /* the server secret (a copy) */
    size_t secret_len;           /* its length */
    unsigned char nonce_key[32]; /* HMAC key of nonces */
    uint32_t epoch;              /* random, per verifier */
    uint64_t seq;                /* serial of the last nonce issued */
    uint64_t watermark;          /* see the top of this file */
    long lifetime;               /* seconds a nonce is good for */
    int rfc2069;                 /* accept MD5 without qop, once */
    struct entry *e;             /* max entries */
    size_t max;                  /* table size */
    size_t used;                 /* entries in use */
    size_t cursor;               /* the slot to fill next */
    int32_t *buckets;            /* mask + 1 chain heads, -1 empty */
    size_t mask;                 /* buckets - 1, a power of two less 1 */
};

/* ---- algorithms and hex ---- */

static int alg_ok(enum pl_digest_alg a)
{
    return (unsigned)a < PL_DIGEST_NALG;
}

size_t pl_digest_len(enum pl_digest_alg a)
{
    return alg_ok(a) ? algs[a].len : 0;
}

const char *pl_digest_alg_name(enum pl_digest_alg a)
{
    return alg_ok(a) ? algs[a].name : NULL;
}

/* s equals the ASCII literal lit, ignoring case. */
static int ieq(struct pl_str s, const char *lit)
{
    size_t n = strlen(lit);

    if (s.len != n)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s.p[i], l = (unsigned char)lit[i];
        if (c >= 'A' && c <= 'Z')
            c = (unsigned char)(c - 'A' + 'a');
        if (l >= 'A' && l <= 'Z')
            l = (unsigned char)(l - 'A' + 'a');
        if (c != l)
            return 0;
    }
    return 1;
}

int pl_digest_alg_parse(struct pl_str s, enum pl_digest_alg *out)
{
    if (s.len == 0) {
        *out = PL_DIGEST_MD5;
        return PL_OK;
    }
    for (int a = 0; a < PL_DIGEST_NALG; a++)
        if (ieq(s, algs[a].name)) {
            *out = (enum pl_digest_alg)a;
            return PL_OK;
        }
    return PL_EINVAL;
}

static void to_hex(const unsigned char *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";

    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
}

/* Exactly 2 * n hex digits (either case) into n bytes; 0 if not. */
static int from_hex(struct pl_str s, unsigned char *out, size_t n)
{
    if (s.len != 2 * n)
        return 0;
    for (size_t i = 0; i < n; i++) {
        int hi = pl_hex_value(s.p[2 * i]), lo = pl_hex_value(s.p[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return 0;
        out[i] = (unsigned char)(hi << 4 | lo);
    }
    return 1;
}

/* ---- hashing ---- */

/* H(parts[0] || parts[1] || ...) with algorithm a into out. */
static int hash_parts(enum pl_digest_alg a, const struct pl_str *parts,
                      size_t n, unsigned char *out)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = ctx && EVP_DigestInit_ex(ctx, algs[a].md(), NULL);

    for (size_t i = 0; ok && i < n; i++)
        if (parts[i].len)
            ok = EVP_DigestUpdate(ctx, parts[i].p, parts[i].len);
    ok = ok && EVP_DigestFinal_ex(ctx, out, NULL);
    EVP_MD_CTX_free(ctx);
    return ok ? PL_OK : PL_EIO;
}

int pl_digest_ha1(enum pl_digest_alg a, struct pl_str user, struct pl_str realm,
                  struct pl_str password, unsigned char *out)
{
    const struct pl_str colon = PL_STR(":");

    if (!alg_ok(a))
        return PL_EINVAL;
    struct pl_str parts[] = {user, colon, realm, colon, password};
    return hash_parts(a, parts, sizeof(parts) / sizeof(parts[0]), out);
}

/* HMAC-SHA-256(key, parts...) into out (32 bytes). */
static void hmac_parts(const unsigned char *key, size_t klen,
                       const struct pl_str *parts, size_t n, unsigned char *out)
{
    size_t total = 0, off = 0;
    unsigned int olen = 0;

    for (size_t i = 0; i < n; i++)
        total += parts[i].len;
    unsigned char *buf = pl_malloc(total ? total : 1);
    for (size_t i = 0; i < n; i++) {
        if (parts[i].len)
            memcpy(buf + off, parts[i].p, parts[i].len);
        off += parts[i].len;
    }
    /* HMAC() fails only when OpenSSL itself is broken; it wants a key
     * pointer even for an empty key. */
    pl_assert(HMAC(EVP_sha256(), klen ? key : buf, (int)klen, buf, total, out,
                   &olen));
    OPENSSL_cleanse(buf, total);
    pl_free(buf);
}

void pl_digest_fake_ha1(enum pl_digest_alg a, struct pl_str user,
                        struct pl_str realm, struct pl_str secret,
                        unsigned char *out)
{
    static const char label[] = "parley digest fake HA1";
    unsigned char mac[32];

    pl_assert(alg_ok(a));
    /* NUL separators: no two (algorithm, realm, user) give one input. */
    struct pl_str parts[] = {
        {label, sizeof(label)},
        {algs[a].name, strlen(algs[a].name) + 1},
        realm,
        PL_STR("\0"),
        user,
    };
    hmac_parts((const unsigned char *)secret.p, secret.len, parts,
               sizeof(parts) / sizeof(parts[0]), mac);
    memcpy(out, mac, algs[a].len);
    OPENSSL_cleanse(mac, sizeof(mac));
}

/* ---- quoted strings ---- */

int pl_digest_unquote(struct pl_str in, struct pl_buf *out)
{
    size_t i;

    if (in.len == 0)
        return PL_OK;
    if (in.p[0] != '"') {
        pl_buf_append(out, in.p, in.len);
        return PL_OK;
    }
    /* quoted-string = DQUOTE *(qdtext / quoted-pair) DQUOTE, RFC 3261
     * §25.1; checked whole before anything is written. */
    for (i = 1; i < in.len; i++) {
        unsigned char c = (unsigned char)in.p[i];
        if (c == '\\') {
            if (++i >= in.len)
                return PL_EINVAL;
            c = (unsigned char)in.p[i];
            if (c == '\r' || c == '\n' || c > 0x7f)
                return PL_EINVAL;
        } else if (c == '"') {
            break;
        } else if ((c < 0x20 && c != '\t') || c == 0x7f) {
            return PL_EINVAL;
        }
    }
    if (i != in.len - 1)
        return PL_EINVAL; /* unterminated, or bytes after the quote */
    for (i = 1; i < in.len - 1; i++) {
        if (in.p[i] == '\\')
            i++;
        pl_buf_append(out, in.p + i, 1);
    }
    return PL_OK;
}

static void append_quoted(struct pl_buf *out, struct pl_str s)
{
    pl_buf_append(out, "\"", 1);
    for (size_t i = 0; i < s.len; i++) {
        if (s.p[i] == '"' || s.p[i] == '\\')
            pl_buf_append(out, "\\", 1);
        pl_buf_append(out, s.p + i, 1);
    }
    pl_buf_append(out, "\"", 1);
}

/* ---- the verifier ---- */

struct pl_digest *pl_digest_new(struct pl_str secret,
                                const struct pl_digest_conf *conf)
{
    static const struct pl_digest_conf defaults = PL_DIGEST_CONF_DEFAULT;
    static const char label[] = "parley digest nonce key";
    struct pl_digest *d = pl_calloc(1, sizeof(*d));
    size_t nb = 1;

    if (!conf)
        conf = &defaults;
    pl_assert(conf->nonce_lifetime >= 10 && conf->nonce_lifetime <= 86400);
    pl_assert(conf->max_nonces >= 16 && conf->max_nonces <= 16777216);
    d->secret_len = secret.len;
    d->secret = pl_malloc(secret.len ? secret.len : 1);
    if (secret.len)
        memcpy(d->secret, secret.p, secret.len);
    struct pl_str parts[] = {{label, sizeof(label) - 1}};
    hmac_parts(d->secret, d->secret_len, parts, 1, d->nonce_key);
    pl_assert(RAND_bytes((unsigned char *)&d->epoch, sizeof(d->epoch)) == 1);
    d->lifetime = conf->nonce_lifetime;
    d->rfc2069 = conf->rfc2069 != 0;
    d->max = (size_t)conf->max_nonces;
    d->e = pl_calloc(d->max, sizeof(*d->e));
    while (nb < d->max)
        nb <<= 1;
    d->mask = nb - 1;
    d->buckets = pl_malloc(nb * sizeof(*d->buckets));
    for (size_t i = 0; i < nb; i++)
        d->buckets[i] = -1;
    return d;
}

void pl_digest_free(struct pl_digest *d)
{
    if (!d)
        return;
    OPENSSL_cleanse(d->secret, d->secret_len);
    OPENSSL_cleanse(d->nonce_key, sizeof(d->nonce_key));
    pl_free(d->secret);
    pl_free(d->e);
    pl_free(d->buckets);
    pl_free(d);
}

size_t pl_digest_tracked(const struct pl_digest *d)
{
    return d->used;
}

static void put_be(unsigned char *p, uint64_t v, int n)
{
    for (int i = n - 1; i >= 0; i--, v >>= 8)
        p[i] = (unsigned char)v;
}

static uint64_t get_be(const unsigned char *p, int n)
{
    uint64_t v = 0;

    for (int i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

/* The mac of raw's first NONCE_SIGNED bytes for realm (32 bytes). */
static void nonce_mac(const struct pl_digest *d, struct pl_str realm,
                      const unsigned char *raw, unsigned char *mac)
{
    unsigned char rkey[32];
    struct pl_str r[] = {realm};
    struct pl_str n[] = {{(const char *)raw, NONCE_SIGNED}};

    hmac_parts(d->nonce_key, sizeof(d->nonce_key), r, 1, rkey);
    hmac_parts(rkey, sizeof(rkey), n, 1, mac);
    OPENSSL_cleanse(rkey, sizeof(rkey));
}

void pl_digest_nonce(struct pl_digest *d, struct pl_str realm, time_t now,
                     char out[PL_DIGEST_NONCE_LEN + 1])
{
    unsigned char raw[NONCE_RAW], mac[32];

    put_be(raw, (uint64_t)now, 8);
    put_be(raw + 8, d->epoch, 4);
    put_be(raw + 12, ++d->seq, 8);
    nonce_mac(d, realm, raw, mac);
    memcpy(raw + NONCE_SIGNED, mac, NONCE_MAC);
    to_hex(raw, NONCE_RAW, out);
    out[PL_DIGEST_NONCE_LEN] = '\0';
}

/* Decodes and authenticates a nonce of ours for realm; 0 if it is not. */
static int nonce_open(const struct pl_digest *d, struct pl_str realm,
                      struct pl_str nonce, time_t *ts, uint32_t *epoch,
                      uint64_t *seq)
{
    unsigned char raw[NONCE_RAW], mac[32];

    if (!from_hex(nonce, raw, NONCE_RAW))
        return 0;
    nonce_mac(d, realm, raw, mac);
    if (CRYPTO_memcmp(mac, raw + NONCE_SIGNED, NONCE_MAC) != 0)
        return 0;
    *ts = (time_t)get_be(raw, 8);
    *epoch = (uint32_t)get_be(raw + 8, 4);
    *seq = get_be(raw + 12, 8);
    return 1;
}

int pl_digest_nonce_check(const struct pl_digest *d, struct pl_str realm,
                          struct pl_str nonce)
{
    time_t ts;
    uint32_t epoch;
    uint64_t seq;

    return nonce_open(d, realm, nonce, &ts, &epoch, &seq);
}

void pl_digest_challenge(struct pl_str realm, const char *nonce,
                         const char *opaque, enum pl_digest_alg a, int stale,
                         struct pl_buf *out)
{
    pl_assert(nonce && alg_ok(a));
    /* RFC 7616 §3.3: realm, nonce, opaque and qop quoted; algorithm and
     * stale not. */
    pl_buf_append_str(out, "Digest realm=");
    append_quoted(out, realm);
    pl_buf_append_str(out, ", nonce=");
    append_quoted(out, pl_str_c(nonce));
    if (opaque) {
        pl_buf_append_str(out, ", opaque=");
        append_quoted(out, pl_str_c(opaque));
    }
    pl_buf_append_str(out, ", algorithm=");
    pl_buf_append_str(out, algs[a].name);
    pl_buf_append_str(out, ", qop=\"auth\"");
    if (stale)
        pl_buf_append_str(out, ", stale=true");
}

const char *pl_digest_result_name(enum pl_digest_result r)
{
    switch (r) {
    case PL_DIGEST_OK: return "ok";
    case PL_DIGEST_STALE: return "stale";
    case PL_DIGEST_BAD: return "bad";
    case PL_DIGEST_INVALID: return "invalid";
    }
    return "?";
}

/* ---- the replay table ---- */

static size_t bucket_of(const struct pl_digest *d, uint64_t seq)
{
    return (size_t)((seq * 0x9E3779B97F4A7C15ull) >> 32) & d->mask;
}

static struct entry *find(struct pl_digest *d, uint64_t seq)
{
    for (int32_t i = d->buckets[bucket_of(d, seq)]; i >= 0; i = d->e[i].next)
        if (d->e[i].seq == seq)
            return &d->e[i];
    return NULL;
}

/* Records a nonce's first use, evicting the oldest entry if full. */
static void track(struct pl_digest *d, uint64_t seq, uint32_t nc)
{
    size_t i = d->cursor;
    struct entry *e = &d->e[i];
    int32_t *pp;

    if (d->used == d->max) {
        pp = &d->buckets[bucket_of(d, e->seq)];
        while (*pp != (int32_t)i)
            pp = &d->e[*pp].next;
        *pp = e->next;
        if (e->seq > d->watermark)
            d->watermark = e->seq;
    } else {
        d->used++;
    }
    d->cursor = (i + 1) % d->max;
    e->seq = seq;
    e->nc = nc;
    e->seen = 1;
    pp = &d->buckets[bucket_of(d, seq)];
    e->next = *pp;
    *pp = (int32_t)i;
}

/* ---- verification ---- */

/* nc-value = 8LHEX (RFC 3261 §25.1), either case accepted. */
static int parse_nc(struct pl_str s, uint32_t *nc)
{
    unsigned char b[4];

    if (!from_hex(s, b, 4))
        return 0;
    *nc = (uint32_t)get_be(b, 4);
    return 1;
}

/*
 * The response RFC 7616 §3.4.1 (with qop) or RFC 2069 (without) defines,
 * binary, into out.
 */
static int expected(enum pl_digest_alg a, const unsigned char *ha1,
                    const struct pl_digest_params *p, int qop,
                    unsigned char *out)
{
    const struct pl_str colon = PL_STR(":");
    size_t hl = algs[a].len;
    unsigned char ha2[PL_DIGEST_MAX_LEN];
    char h1[2 * PL_DIGEST_MAX_LEN], h2[2 * PL_DIGEST_MAX_LEN];
    struct pl_str a2[] = {p->method, colon, p->uri};
    int rc = hash_parts(a, a2, 3, ha2);

    if (rc != PL_OK)
        return rc;
    to_hex(ha1, hl, h1);
    to_hex(ha2, hl, h2);
    struct pl_str k1 = {h1, 2 * hl}, k2 = {h2, 2 * hl};
    if (qop) {
        /* KD(H(A1), nonce:nc:cnonce:qop:H(A2)) */
        struct pl_str kd[] = {k1,        colon, p->nonce, colon, p->nc, colon,
                              p->cnonce, colon, p->qop,   colon, k2};
        rc = hash_parts(a, kd, sizeof(kd) / sizeof(kd[0]), out);
    } else {
        /* KD(H(A1), nonce:H(A2)) */
        struct pl_str kd[] = {k1, colon, p->nonce, colon, k2};
        rc = hash_parts(a, kd, sizeof(kd) / sizeof(kd[0]), out);
    }
    OPENSSL_cleanse(h1, sizeof(h1));
    return rc;
}

int pl_digest_response(const unsigned char *ha1,
                       const struct pl_digest_params *p, char *out)
{
    enum pl_digest_alg a;
    unsigned char r[PL_DIGEST_MAX_LEN];
    int qop = p->qop.len > 0, rc;

    if (pl_digest_alg_parse(p->algorithm, &a) != PL_OK ||
        (qop && !ieq(p->qop, "auth")))
        return PL_EINVAL;
    rc = expected(a, ha1, p, qop, r);
    if (rc == PL_OK) {
        to_hex(r, algs[a].len, out);
        out[2 * algs[a].len] = '\0';
    }
    return rc;
}

enum pl_digest_result pl_digest_verify(struct pl_digest *d, struct pl_str realm,
                                       const struct pl_digest_params *p,
                                       const unsigned char *ha1, time_t now)
{
    enum pl_digest_alg a;
    unsigned char got[PL_DIGEST_MAX_LEN], want[PL_DIGEST_MAX_LEN];
    unsigned char fake[PL_DIGEST_MAX_LEN];
    struct pl_str secret = {(const char *)d->secret, d->secret_len};
    uint32_t nc = 0, epoch;
    uint64_t seq;
    time_t ts;
    size_t hl;
    int qop, same;

    pl_assert(p);
    /* Missing or malformed parameters, or what was not offered. */
    if (pl_digest_alg_parse(p->algorithm, &a) != PL_OK)
        return PL_DIGEST_INVALID;
    hl = algs[a].len;
    if (!p->username.len || !p->nonce.len || !p->uri.len || !p->method.len ||
        !from_hex(p->response, got, hl))
        return PL_DIGEST_INVALID;
    qop = p->qop.len > 0;
    if (qop) {
        if (!ieq(p->qop, "auth") || !parse_nc(p->nc, &nc) || nc == 0 ||
            !p->cnonce.len)
            return PL_DIGEST_INVALID;
    } else if (p->nc.len || p->cnonce.len || !d->rfc2069 ||
               a != PL_DIGEST_MD5) {
        /* RFC 2617 §3.2.2: no cnonce or nc without qop. */
        return PL_DIGEST_INVALID;
    }

    /* Credentials for another realm, or a nonce we did not make. */
    if (!pl_str_eq(p->realm, realm) ||
        !nonce_open(d, realm, p->nonce, &ts, &epoch, &seq))
        return PL_DIGEST_BAD;

    /* The fake key is made every time, so that an unknown user costs what
     * a known one does. */
    pl_digest_fake_ha1(a, p->username, realm, secret, fake);
    if (expected(a, ha1 ? ha1 : fake, p, qop, want) != PL_OK) {
        pl_log_error("digest", "%s failed in OpenSSL", algs[a].name);
        same = 0;
    } else {
        same = CRYPTO_memcmp(want, got, hl) == 0;
    }
    OPENSSL_cleanse(fake, sizeof(fake));
    OPENSSL_cleanse(want, sizeof(want));
    if (!same)
        return PL_DIGEST_BAD;

    /* The right response: now is the nonce still good, and unused? */
    if (now - ts > d->lifetime || ts - now > d->lifetime)
        return PL_DIGEST_STALE;
    if (epoch != d->epoch || seq == 0 || seq > d->seq)
        return PL_DIGEST_STALE;
    struct entry *e = find(d, seq);
    if (e) {
        /* Without qop nc is 0 here: an RFC 2069 response can never reuse
         * a nonce; and one used without qop has NO_MORE_USES, so no count
         * is above it or within the window below it. */
        if (nc == 0)
            return PL_DIGEST_STALE; /* without qop: once per nonce */
        if (nc > e->nc) {
            uint32_t up = nc - e->nc;
            e->seen = up >= NC_WINDOW ? 1 : (e->seen << up) | 1;
            e->nc = nc;
            return PL_DIGEST_OK;
        }
        uint32_t back = e->nc - nc;
        if (back >= NC_WINDOW || (e->seen >> back) & 1)
            return PL_DIGEST_STALE; /* replayed, or too old to tell */
        e->seen |= (uint64_t)1 << back;
        return PL_DIGEST_OK;
    }
    if (seq <= d->watermark)
        return PL_DIGEST_STALE; /* forgotten: it may have been used */
    track(d, seq, qop ? nc : NO_MORE_USES);
    return PL_DIGEST_OK;
}
