/*
 * scram.c - SCRAM server side (RFC 5802, RFC 7677), SASLprep (RFC 4013),
 * key derivation and strict base64 (RFC 4648); see scram.h.
 *
 * API: pl_saslprep(), pl_scram_derive(), pl_scram_verify_password(),
 * pl_scram_fake_keys(), the pl_scram_server_* state machine and
 * pl_base64_encode()/pl_base64_decode().
 *
 * The server state machine runs START -> CLIENT_FIRST -> SERVER_FIRST ->
 * DONE.  A step called out of order returns PL_EINVAL.  client_first and
 * server_first leave the state alone when they fail, so the caller decides;
 * client_final is one attempt per exchange whatever its result, so a nonce
 * is never verified twice.
 *
 * Parsing splits messages on ',' (no attribute value may contain one) and
 * checks each attribute against the ABNF of RFC 5802 §7.  Every message is
 * checked once up front to be UTF-8 without NUL, so later code can treat
 * fields as text.
 *
 * To extend:
 * - a new hash (e.g. SHA-512, RFC 7677 style): add it to enum pl_scram_hash
 *   and PL_SCRAM_NHASH in scram.h, then a row in hashes[] below;
 * - a new channel binding type: add its name to cb_types[]; the caller
 *   supplies its data to pl_scram_server_client_final().
 */
#include "scram.h"

#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <pthread.h>

#include <unictype.h>
#include <uninorm.h>
#include <unistr.h>

#include "alloc.h"
#include "error.h"
#include "log.h"
#include "random.h"

#define SALT_LEN 16         /* bytes of a fresh random salt */
#define SERVER_NONCE_LEN 24 /* random bytes, 32 base64 characters */

static const struct {
    const char *name; /* as in the mechanism name */
    size_t len;       /* digest bytes */
} hashes[PL_SCRAM_NHASH] = {
    [PL_SCRAM_SHA1] = {"SHA-1", 20},
    [PL_SCRAM_SHA256] = {"SHA-256", 32},
};

/*
 * Channel binding types a -PLUS mechanism accepts (RFC 9266, RFC 5929).
 * COMPAT: tls-unique is kept for clients that know nothing else (slixmpp
 * 1.8 asks for it whatever the TLS version); the stream layer supplies the
 * data and refuses it where it cannot.
 */
static const char *const cb_types[] = {
    "tls-exporter",
    "tls-server-end-point",
    "tls-unique",
};

enum state {
    ST_START,        /* waiting for client-first-message */
    ST_CLIENT_FIRST, /* parsed it, waiting for keys */
    ST_SERVER_FIRST, /* sent server-first-message */
    ST_DONE,         /* client-final-message seen, success or not */
};

struct pl_scram_server {
    enum pl_scram_hash hash;   /* digest of the mechanism */
    int plus;                  /* this is the -PLUS mechanism */
    int offers_plus;           /* -PLUS was advertised (downgrade check) */
    enum state state;          /* where the exchange is */
    char cbflag;               /* gs2-cbind-flag: 'n', 'y' or 'p' */
    const char *cb_type;       /* one of cb_types[] or NULL */
    char *username;            /* decoded and SASLprep'd */
    char *authzid;             /* decoded, NULL when absent */
    char *gs2;                 /* gs2-header as received */
    size_t gs2_len;            /* its length */
    char *bare;                /* client-first-message-bare */
    size_t bare_len;           /* its length */
    char *cnonce;              /* client nonce */
    char *test_snonce;         /* server nonce forced by a test, or NULL */
    char *nonce;               /* client nonce + server nonce */
    char *sfirst;              /* server-first-message */
    size_t sfirst_len;         /* its length */
    struct pl_scram_keys keys; /* the user's (or fake) keys */
};

/* ---- hashes ---- */

static int hash_ok(enum pl_scram_hash h)
{
    return (unsigned)h < PL_SCRAM_NHASH;
}

size_t pl_scram_hash_len(enum pl_scram_hash h)
{
    return hash_ok(h) ? hashes[h].len : 0;
}

const char *pl_scram_hash_name(enum pl_scram_hash h)
{
    return hash_ok(h) ? hashes[h].name : NULL;
}

/*
 * The digests, fetched once: EVP_sha256() and HMAC() look the algorithm
 * up in OpenSSL's provider store at every use (a lock and a lookup, and
 * HMAC() a MAC context besides), which was most of a login's SCRAM cost.
 */
static EVP_MD *fetched[PL_SCRAM_NHASH];
static pthread_once_t fetch_once = PTHREAD_ONCE_INIT;

static void fetch_digests(void)
{
    fetched[PL_SCRAM_SHA1] = EVP_MD_fetch(NULL, "SHA1", NULL);
    fetched[PL_SCRAM_SHA256] = EVP_MD_fetch(NULL, "SHA2-256", NULL);
}

static const EVP_MD *md(enum pl_scram_hash h)
{
    pthread_once(&fetch_once, fetch_digests);
    const EVP_MD *m = fetched[h];
    if (m)
        return m;
    return h == PL_SCRAM_SHA1 ? EVP_sha1() : EVP_sha256();
}

/* HMAC-H(key, data) into out (the digest length of h): RFC 2104 over
 * the fetched digest, H((K ^ opad) || H((K ^ ipad) || data)). */
int pl_scram_hmac(enum pl_scram_hash h, const void *key, size_t klen,
                  const void *data, size_t dlen, unsigned char *out)
{
    enum {
        BLOCK = 64
    }; /* SHA-1's and SHA-256's block size */
    const EVP_MD *m = md(h);
    unsigned char k[BLOCK] = {0}, pad[BLOCK], inner[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    int rc = PL_EIO;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx)
        return PL_EIO;
    if (klen > BLOCK) {
        if (!EVP_Digest(key, klen, k, &n, m, NULL))
            goto out;
    } else if (klen) {
        memcpy(k, key, klen);
    }
    for (int i = 0; i < BLOCK; i++)
        pad[i] = k[i] ^ 0x36;
    if (!EVP_DigestInit_ex2(ctx, m, NULL) ||
        !EVP_DigestUpdate(ctx, pad, BLOCK) ||
        (dlen && !EVP_DigestUpdate(ctx, data, dlen)) ||
        !EVP_DigestFinal_ex(ctx, inner, &n))
        goto out;
    for (int i = 0; i < BLOCK; i++)
        pad[i] = k[i] ^ 0x5c;
    if (!EVP_DigestInit_ex2(ctx, m, NULL) ||
        !EVP_DigestUpdate(ctx, pad, BLOCK) ||
        !EVP_DigestUpdate(ctx, inner, n) || !EVP_DigestFinal_ex(ctx, out, &n))
        goto out;
    rc = PL_OK;
out:
    EVP_MD_CTX_free(ctx);
    OPENSSL_cleanse(k, sizeof(k));
    OPENSSL_cleanse(pad, sizeof(pad));
    OPENSSL_cleanse(inner, sizeof(inner));
    return rc;
}

static int digest(enum pl_scram_hash h, const void *data, size_t len,
                  unsigned char *out)
{
    if (!EVP_Digest(data, len, out, NULL, md(h), NULL))
        return PL_EIO;
    return PL_OK;
}

/* ---- base64 (RFC 4648 §4) ---- */

static const char b64[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Base64 digit values by byte, -1 for the rest: a login decodes two
 * SASL payloads, and every vCard photo comes through here. */
/* clang-format off */
static const signed char b64_table[256] = {
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 62, -1, -1, -1, 63,
    52, 53, 54, 55, 56, 57, 58, 59, 60, 61, -1, -1, -1, -1, -1, -1,
    -1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14,
    15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, -1, -1, -1, -1, -1,
    -1, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40,
    41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
};
/* clang-format on */

static int b64_value(unsigned char c)
{
    return b64_table[c];
}

void pl_base64_encode(const unsigned char *in, size_t len, struct pl_buf *out)
{
    char q[4];

    for (size_t i = 0; i < len; i += 3) {
        size_t left = len - i;
        unsigned long v = (unsigned long)in[i] << 16;
        if (left > 1)
            v |= (unsigned long)in[i + 1] << 8;
        if (left > 2)
            v |= in[i + 2];
        q[0] = b64[(v >> 18) & 63];
        q[1] = b64[(v >> 12) & 63];
        q[2] = left > 1 ? b64[(v >> 6) & 63] : '=';
        q[3] = left > 2 ? b64[v & 63] : '=';
        pl_buf_append(out, q, 4);
    }
}

/*
 * Validates the whole input before touching out, so that a failure has no
 * side effect.  Non-zero bits left over before the padding are accepted
 * (RFC 4648 §3.5 lets decoders choose).
 */
int pl_base64_decode(struct pl_str in, struct pl_buf *out)
{
    const unsigned char *s = (const unsigned char *)in.p;
    size_t pad = 0;

    if (in.len % 4)
        return PL_EINVAL;
    if (in.len && s[in.len - 1] == '=')
        pad = in.len >= 2 && s[in.len - 2] == '=' ? 2 : 1;
    for (size_t i = 0; i < in.len - pad; i++)
        if (b64_value(s[i]) < 0)
            return PL_EINVAL;

    /* Decoded a block at a time: one append per 768 bytes. */
    unsigned char block[768];
    size_t n = 0;
    for (size_t i = 0; i < in.len; i += 4) {
        unsigned long v = 0;
        for (size_t j = 0; j < 4; j++) {
            int d = i + j < in.len - pad ? b64_value(s[i + j]) : 0;
            v = v << 6 | (unsigned long)d;
        }
        block[n] = (unsigned char)(v >> 16);
        block[n + 1] = (unsigned char)(v >> 8);
        block[n + 2] = (unsigned char)v;
        n += i + 4 == in.len ? 3 - pad : 3;
        if (n + 3 > sizeof(block)) {
            pl_buf_append(out, block, n);
            n = 0;
        }
    }
    pl_buf_append(out, block, n);
    return PL_OK;
}

/* Decodes base64 into dst, which holds cap bytes; longer is PL_EINVAL. */
static int b64_decode_fixed(struct pl_str in, unsigned char *dst, size_t cap,
                            size_t *len)
{
    struct pl_buf b = {0};
    int rc = pl_base64_decode(in, &b);

    if (rc == PL_OK && b.len > cap)
        rc = PL_EINVAL;
    if (rc == PL_OK) {
        if (b.len)
            memcpy(dst, b.data + b.off, b.len);
        *len = b.len;
    }
    if (b.data)
        OPENSSL_cleanse(b.data, b.cap);
    pl_buf_reset(&b);
    return rc;
}

/* ---- SASLprep (RFC 4013, profile of RFC 3454) ---- */

struct range {
    uint32_t lo, hi; /* inclusive */
};

/* RFC 3454 B.1, "commonly mapped to nothing". */
static const struct range map_to_nothing[] = {
    {0x00AD, 0x00AD}, {0x034F, 0x034F}, {0x1806, 0x1806}, {0x180B, 0x180D},
    {0x200B, 0x200D}, {0x2060, 0x2060}, {0xFE00, 0xFE0F}, {0xFEFF, 0xFEFF},
};

/* RFC 3454 C.1.2, non-ASCII space characters. */
static const struct range non_ascii_space[] = {
    {0x00A0, 0x00A0}, {0x1680, 0x1680}, {0x2000, 0x200B},
    {0x202F, 0x202F}, {0x205F, 0x205F}, {0x3000, 0x3000},
};

/*
 * RFC 4013 §2.3 prohibited output: C.1.2, C.2.1, C.2.2, C.3, C.4 (but the
 * U+xFFFE/U+xFFFF pairs, tested in code), C.5, C.6, C.7, C.8, C.9.
 */
static const struct range prohibited[] = {
    /* C.1.2 */
    {0x00A0, 0x00A0},
    {0x1680, 0x1680},
    {0x2000, 0x200B},
    {0x202F, 0x202F},
    {0x205F, 0x205F},
    {0x3000, 0x3000},
    /* C.2.1 */
    {0x0000, 0x001F},
    {0x007F, 0x007F},
    /* C.2.2 */
    {0x0080, 0x009F},
    {0x06DD, 0x06DD},
    {0x070F, 0x070F},
    {0x180E, 0x180E},
    {0x200C, 0x200D},
    {0x2028, 0x2029},
    {0x2060, 0x2063},
    {0x206A, 0x206F},
    {0xFEFF, 0xFEFF},
    {0xFFF9, 0xFFFC},
    {0x1D173, 0x1D17A},
    /* C.3 */
    {0xE000, 0xF8FF},
    {0xF0000, 0xFFFFD},
    {0x100000, 0x10FFFD},
    /* C.4 */
    {0xFDD0, 0xFDEF},
    /* C.5 */
    {0xD800, 0xDFFF},
    /* C.6 */
    {0xFFF9, 0xFFFD},
    /* C.7 */
    {0x2FF0, 0x2FFB},
    /* C.8 */
    {0x0340, 0x0341},
    {0x200E, 0x200F},
    {0x202A, 0x202E},
    {0x206A, 0x206F},
    /* C.9 */
    {0xE0001, 0xE0001},
    {0xE0020, 0xE007F},
};

static int in_table(const struct range *t, size_t n, uint32_t c)
{
    for (size_t i = 0; i < n; i++)
        if (c >= t[i].lo && c <= t[i].hi)
            return 1;
    return 0;
}

#define IN_TABLE(t, c) in_table((t), sizeof(t) / sizeof((t)[0]), (c))

static int is_prohibited(uint32_t c)
{
    if (c > 0x10FFFF || (c & 0xFFFE) == 0xFFFE) /* C.4 noncharacters */
        return 1;
    if (IN_TABLE(prohibited, c))
        return 1;
    /*
     * A.1 lists what Unicode 3.2 left unassigned.  libunistring knows a
     * later Unicode, so Cn is a subset of A.1: code points assigned since
     * 3.2 pass.  RFC 4013 §2.5 prohibits unassigned code points in stored
     * strings, which is what usernames and passwords are.
     */
    return uc_is_general_category(c, UC_CATEGORY_Cn);
}

/* RFC 3454 §6 with D.1/D.2 approximated by today's bidi classes. */
static int bidi_ok(const uint32_t *s, size_t n)
{
    int has_ral = 0, has_l = 0;

    for (size_t i = 0; i < n; i++) {
        int b = uc_bidi_category(s[i]);
        if (b == UC_BIDI_R || b == UC_BIDI_AL)
            has_ral = 1;
        else if (b == UC_BIDI_L)
            has_l = 1;
    }
    if (!has_ral)
        return 1;
    if (has_l)
        return 0;
    int first = uc_bidi_category(s[0]), last = uc_bidi_category(s[n - 1]);
    return (first == UC_BIDI_R || first == UC_BIDI_AL) &&
           (last == UC_BIDI_R || last == UC_BIDI_AL);
}

/*
 * U+200B is in both B.1 and C.1.2 and RFC 4013 gives no order; we apply
 * B.1 first, so it maps to nothing (COMPAT: libidn's profile maps it to a
 * space instead, so such a password differs between the two).
 *
 * The intermediate buffers may hold a password, so they are wiped.
 * u32_normalize() allocates with malloc(), hence free() for its result.
 */
int pl_saslprep(struct pl_str in, char **out)
{
    const uint8_t *s = (const uint8_t *)in.p;
    uint32_t *mapped = NULL, *norm = NULL;
    size_t n = 0, nlen = 0;
    char *res = NULL;
    int rc = PL_EINVAL;

    if (in.len >= SIZE_MAX / 16)
        return PL_EINVAL;
    if (in.len && u8_check(s, in.len))
        return PL_EINVAL;

    /* RFC 4013 §2.1 mapping. */
    mapped = pl_malloc((in.len + 1) * sizeof(*mapped));
    for (size_t i = 0; i < in.len;) {
        ucs4_t c;
        int k = u8_mbtoucr(&c, s + i, in.len - i);
        if (k <= 0)
            goto fail;
        i += (size_t)k;
        if (IN_TABLE(map_to_nothing, c))
            continue;
        mapped[n++] = IN_TABLE(non_ascii_space, c) ? 0x20 : c;
    }

    /* RFC 4013 §2.2 normalization. */
    if (n) {
        norm = u32_normalize(UNINORM_NFKC, mapped, n, NULL, &nlen);
        if (!norm) {
            rc = PL_ENOMEM;
            goto fail;
        }
    }

    /* §2.3 prohibited output, §2.4 bidi. */
    for (size_t i = 0; i < nlen; i++)
        if (is_prohibited(norm[i]))
            goto fail;
    if (nlen && !bidi_ok(norm, nlen))
        goto fail;

    if (nlen > SIZE_MAX / 4 - 1)
        goto fail;
    res = pl_malloc(nlen * 4 + 1);
    size_t o = 0;
    for (size_t i = 0; i < nlen; i++) {
        int k = u8_uctomb((uint8_t *)res + o, norm[i], 4);
        if (k <= 0)
            goto fail;
        o += (size_t)k;
    }
    res[o] = '\0';
    *out = res;
    res = NULL;
    rc = PL_OK;
fail:
    if (res) {
        OPENSSL_cleanse(res, nlen * 4 + 1);
        pl_free(res);
    }
    if (norm) {
        OPENSSL_cleanse(norm, nlen * sizeof(*norm));
        free(norm);
    }
    OPENSSL_cleanse(mapped, (in.len + 1) * sizeof(*mapped));
    pl_free(mapped);
    return rc;
}

static void free_secret_str(char *s)
{
    if (s) {
        OPENSSL_cleanse(s, strlen(s));
        pl_free(s);
    }
}

/* ---- key derivation ---- */

int pl_scram_derive(enum pl_scram_hash h, struct pl_str password,
                    const unsigned char *salt, size_t salt_len,
                    unsigned iterations, struct pl_scram_keys *out)
{
    unsigned char salted[PL_SCRAM_MAX_KEY], client_key[PL_SCRAM_MAX_KEY];
    struct pl_scram_keys k;
    char *prep = NULL;
    size_t plen;
    int rc;

    if (!hash_ok(h) || iterations == 0 || iterations > INT_MAX)
        return PL_EINVAL;
    if (salt && (salt_len == 0 || salt_len > PL_SCRAM_MAX_SALT))
        return PL_EINVAL;
    rc = pl_saslprep(password, &prep);
    if (rc != PL_OK)
        return rc;

    memset(&k, 0, sizeof(k));
    rc = PL_EINVAL;
    plen = strlen(prep);
    if (plen == 0 || plen > INT_MAX)
        goto fail;
    k.hash = h;
    k.iterations = iterations;
    if (salt) {
        memcpy(k.salt, salt, salt_len);
        k.salt_len = salt_len;
    } else {
        rc = PL_EIO;
        if (RAND_bytes(k.salt, SALT_LEN) != 1)
            goto fail;
        k.salt_len = SALT_LEN;
    }

    size_t hl = hashes[h].len;
    rc = PL_EIO;
    if (!PKCS5_PBKDF2_HMAC(prep, (int)plen, k.salt, (int)k.salt_len,
                           (int)iterations, md(h), (int)hl, salted))
        goto fail;
    rc = pl_scram_hmac(h, salted, hl, "Client Key", 10, client_key);
    if (rc == PL_OK)
        rc = digest(h, client_key, hl, k.stored_key);
    if (rc == PL_OK)
        rc = pl_scram_hmac(h, salted, hl, "Server Key", 10, k.server_key);
    if (rc == PL_OK)
        *out = k;
fail:
    OPENSSL_cleanse(salted, sizeof(salted));
    OPENSSL_cleanse(client_key, sizeof(client_key));
    OPENSSL_cleanse(&k, sizeof(k));
    free_secret_str(prep);
    return rc;
}

int pl_scram_verify_password(const struct pl_scram_keys *keys,
                             struct pl_str password)
{
    struct pl_scram_keys k;
    int ok;

    if (!keys || !hash_ok(keys->hash) || keys->salt_len == 0 ||
        keys->salt_len > PL_SCRAM_MAX_SALT)
        return 0;
    if (pl_scram_derive(keys->hash, password, keys->salt, keys->salt_len,
                        keys->iterations, &k) != PL_OK)
        return 0;
    ok = CRYPTO_memcmp(k.stored_key, keys->stored_key,
                       hashes[keys->hash].len) == 0;
    OPENSSL_cleanse(&k, sizeof(k));
    return ok;
}

/*
 * seed = HMAC-SHA256(secret, hash-name || username); the salt and each key
 * are then HMAC-SHA256(seed, label), truncated.  Hash names differ in their
 * fifth byte, so the concatenation is unambiguous.
 */
void pl_scram_fake_keys(enum pl_scram_hash h, struct pl_str username,
                        struct pl_str secret, unsigned iterations,
                        struct pl_scram_keys *out)
{
    unsigned char seed[32], t[32];
    size_t nlen, hl;
    char *msg;
    int rc;

    pl_assert(hash_ok(h));
    pl_assert(iterations >= 1);
    nlen = strlen(hashes[h].name);
    hl = hashes[h].len;
    msg = pl_malloc(nlen + username.len + 1);
    memcpy(msg, hashes[h].name, nlen);
    if (username.len)
        memcpy(msg + nlen, username.p, username.len);
    rc = pl_scram_hmac(PL_SCRAM_SHA256, secret.p, secret.len, msg,
                       nlen + username.len, seed);
    pl_free(msg);
    pl_assert(rc == PL_OK);

    memset(out, 0, sizeof(*out));
    out->hash = h;
    out->iterations = iterations;
    rc = pl_scram_hmac(PL_SCRAM_SHA256, seed, sizeof(seed), "salt", 4, t);
    pl_assert(rc == PL_OK);
    memcpy(out->salt, t, SALT_LEN);
    out->salt_len = SALT_LEN;
    rc = pl_scram_hmac(PL_SCRAM_SHA256, seed, sizeof(seed), "StoredKey", 9, t);
    pl_assert(rc == PL_OK);
    memcpy(out->stored_key, t, hl);
    rc = pl_scram_hmac(PL_SCRAM_SHA256, seed, sizeof(seed), "ServerKey", 9, t);
    pl_assert(rc == PL_OK);
    memcpy(out->server_key, t, hl);
    OPENSSL_cleanse(seed, sizeof(seed));
    OPENSSL_cleanse(t, sizeof(t));
}

/* ---- message parsing helpers ---- */

/* A cursor over the ','-separated attributes of a message. */
struct fields {
    const char *p;   /* next unread byte */
    const char *end; /* one past the last byte */
    int done;        /* the last field has been taken */
};

static int field_next(struct fields *f, struct pl_str *out)
{
    const char *c;

    if (f->done)
        return 0;
    c = memchr(f->p, ',', (size_t)(f->end - f->p));
    if (!c) {
        *out = (struct pl_str){f->p, (size_t)(f->end - f->p)};
        f->p = f->end;
        f->done = 1;
    } else {
        *out = (struct pl_str){f->p, (size_t)(c - f->p)};
        f->p = c + 1;
    }
    return 1;
}

/* Is f "<name>=..."?  Then *val gets what follows the '='. */
static int is_attr(struct pl_str f, char name, struct pl_str *val)
{
    if (f.len < 2 || f.p[0] != name || f.p[1] != '=')
        return 0;
    *val = (struct pl_str){f.p + 2, f.len - 2};
    return 1;
}

static int is_alpha(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

/*
 * attr-val = ALPHA "=" value, value = 1*value-char (RFC 5802 §7).  "m" is
 * reserved and MUST fail authentication when present (RFC 5802 §5.1).
 */
static int extension_ok(struct pl_str f)
{
    return f.len >= 3 && is_alpha(f.p[0]) && f.p[1] == '=' && f.p[0] != 'm';
}

/* UTF-8 without NUL: value-char of RFC 5802 §7 (plus ',' and '='). */
static int text_ok(struct pl_str m)
{
    return m.len && !memchr(m.p, '\0', m.len) &&
           !u8_check((const uint8_t *)m.p, m.len);
}

/* printable = %x21-2B / %x2D-7E, one or more. */
static int nonce_ok(struct pl_str n)
{
    if (n.len == 0)
        return 0;
    for (size_t i = 0; i < n.len; i++) {
        unsigned char c = (unsigned char)n.p[i];
        if (c < 0x21 || c > 0x7E || c == ',')
            return 0;
    }
    return 1;
}

/*
 * saslname = 1*(value-safe-char / "=2C" / "=3D"): decodes into a new
 * string.  Any other '=' fails (RFC 5802 §5.1).
 */
static int saslname_decode(struct pl_str in, char **out)
{
    char *d;
    size_t o = 0;

    if (in.len == 0)
        return PL_EINVAL;
    d = pl_malloc(in.len + 1);
    for (size_t i = 0; i < in.len; i++) {
        if (in.p[i] != '=') {
            d[o++] = in.p[i];
            continue;
        }
        if (in.len - i < 3) {
            pl_free(d);
            return PL_EINVAL;
        }
        if (in.p[i + 1] == '2' && in.p[i + 2] == 'C') {
            d[o++] = ',';
        } else if (in.p[i + 1] == '3' && in.p[i + 2] == 'D') {
            d[o++] = '=';
        } else {
            pl_free(d);
            return PL_EINVAL;
        }
        i += 2;
    }
    d[o] = '\0';
    *out = d;
    return PL_OK;
}

/* cb-name = 1*(ALPHA / DIGIT / "." / "-") */
static int cb_name_ok(struct pl_str n)
{
    if (n.len == 0)
        return 0;
    for (size_t i = 0; i < n.len; i++) {
        char c = n.p[i];
        if (!is_alpha(c) && !(c >= '0' && c <= '9') && c != '.' && c != '-')
            return 0;
    }
    return 1;
}

static const char *cb_lookup(struct pl_str n)
{
    for (size_t i = 0; i < sizeof(cb_types) / sizeof(cb_types[0]); i++)
        if (pl_str_eq_c(n, cb_types[i]))
            return cb_types[i];
    return NULL;
}

/* ---- server state machine ---- */

struct pl_scram_server *pl_scram_server_new(enum pl_scram_hash h, int plus,
                                            int server_offers_plus)
{
    struct pl_scram_server *s;

    pl_assert(hash_ok(h));
    s = pl_calloc(1, sizeof(*s));
    s->hash = h;
    s->plus = plus != 0;
    s->offers_plus = server_offers_plus != 0;
    s->state = ST_START;
    return s;
}

void pl_scram_server_free(struct pl_scram_server *s)
{
    if (!s)
        return;
    pl_free(s->username);
    pl_free(s->authzid);
    pl_free(s->gs2);
    pl_free(s->bare);
    pl_free(s->cnonce);
    pl_free(s->test_snonce);
    pl_free(s->nonce);
    pl_free(s->sfirst);
    OPENSSL_cleanse(s, sizeof(*s));
    pl_free(s);
}

void pl__scram_server_set_nonce(struct pl_scram_server *s, const char *nonce)
{
    pl_assert(nonce_ok(pl_str_c(nonce)));
    pl_free(s->test_snonce);
    s->test_snonce = pl_strdup(nonce);
}

const char *pl_scram_server_authzid(const struct pl_scram_server *s)
{
    return s->authzid;
}

/*
 * RFC 5802 §6: a -PLUS mechanism needs "p=" with a type we support; a
 * plain one must not get "p=", nor "y" when -PLUS was on offer (that client
 * saw no -PLUS, so someone removed it).
 */
static int cb_policy(const struct pl_scram_server *s, char flag,
                     const char *type)
{
    if (s->plus)
        return flag == 'p' && type ? PL_OK : PL_ENOT_AUTHORIZED;
    if (flag == 'p')
        return PL_ENOT_AUTHORIZED;
    if (flag == 'y' && s->offers_plus)
        return PL_ENOT_AUTHORIZED;
    return PL_OK;
}

int pl_scram_server_client_first(struct pl_scram_server *s, struct pl_str msg,
                                 const char **username, const char **cb_type)
{
    struct fields f;
    struct pl_str flag, az, user, nonce, ext, val, bare;
    char cbflag;
    const char *type = NULL;
    char *authzid = NULL, *raw_user = NULL, *prep = NULL;
    int rc = PL_EINVAL;

    if (s->state != ST_START || !text_ok(msg))
        return PL_EINVAL;
    f = (struct fields){msg.p, msg.p + msg.len, 0};

    /* gs2-header = gs2-cbind-flag "," [ authzid ] "," */
    if (!field_next(&f, &flag) || !field_next(&f, &az) || f.done)
        return PL_EINVAL;
    if (pl_str_eq_c(flag, "n") || pl_str_eq_c(flag, "y")) {
        cbflag = flag.p[0];
    } else if (is_attr(flag, 'p', &val) && cb_name_ok(val)) {
        cbflag = 'p';
        type = cb_lookup(val);
    } else {
        return PL_EINVAL;
    }
    if (az.len) {
        if (!is_attr(az, 'a', &val))
            return PL_EINVAL;
        rc = saslname_decode(val, &authzid);
        if (rc != PL_OK)
            return rc;
        rc = PL_EINVAL;
    }
    bare = (struct pl_str){f.p, (size_t)(f.end - f.p)};

    /* client-first-message-bare = [reserved-mext ","] username "," nonce
     * ["," extensions]; we support no mandatory extension. */
    if (!field_next(&f, &user) || !is_attr(user, 'n', &user))
        goto fail;
    if (!field_next(&f, &nonce) || !is_attr(nonce, 'r', &nonce) ||
        !nonce_ok(nonce))
        goto fail;
    while (field_next(&f, &ext))
        if (!extension_ok(ext))
            goto fail;
    if (saslname_decode(user, &raw_user) != PL_OK)
        goto fail;

    rc = cb_policy(s, cbflag, type);
    if (rc != PL_OK)
        goto fail;

    /* RFC 5802 §5.1: the server SHOULD abort if SASLprep fails or gives an
     * empty string. */
    rc = pl_saslprep(pl_str_c(raw_user), &prep);
    if (rc != PL_OK)
        goto fail;
    if (!*prep) {
        rc = PL_EINVAL;
        goto fail;
    }

    s->cbflag = cbflag;
    s->cb_type = type;
    s->authzid = authzid;
    s->username = prep;
    s->gs2_len = (size_t)(bare.p - msg.p);
    s->gs2 = pl_strndup(msg.p, s->gs2_len);
    s->bare_len = bare.len;
    s->bare = pl_strndup(bare.p, bare.len);
    s->cnonce = pl_strndup(nonce.p, nonce.len);
    s->state = ST_CLIENT_FIRST;
    pl_free(raw_user);
    *username = s->username;
    *cb_type = s->cb_type;
    return PL_OK;
fail:
    pl_free(authzid);
    pl_free(raw_user);
    pl_free(prep);
    return rc;
}

int pl_scram_server_first(struct pl_scram_server *s,
                          const struct pl_scram_keys *keys, struct pl_buf *out)
{
    struct pl_buf m = {0}, sn = {0};

    if (s->state != ST_CLIENT_FIRST || keys->hash != s->hash ||
        keys->iterations == 0 || keys->salt_len == 0 ||
        keys->salt_len > PL_SCRAM_MAX_SALT)
        return PL_EINVAL;

    if (s->test_snonce) {
        pl_buf_append_str(&sn, s->test_snonce);
    } else {
        unsigned char r[SERVER_NONCE_LEN];
        pl_random(r, sizeof(r));
        /* 24 bytes make 32 characters of base64 and no padding: all
         * printable, none a ','. */
        pl_base64_encode(r, sizeof(r), &sn);
    }

    /* server-first-message = [reserved-mext ","] nonce "," salt ","
     * iteration-count ["," extensions] */
    pl_buf_printf(&m, "r=%s%s,s=", s->cnonce, pl_buf_cstr(&sn));
    pl_base64_encode(keys->salt, keys->salt_len, &m);
    pl_buf_printf(&m, ",i=%u", keys->iterations);

    s->nonce = pl_malloc(strlen(s->cnonce) + sn.len + 1);
    strcpy(s->nonce, s->cnonce);
    strcat(s->nonce, pl_buf_cstr(&sn));
    s->sfirst_len = m.len;
    s->sfirst = pl_strndup(pl_buf_cstr(&m), m.len);
    s->keys = *keys;
    s->state = ST_SERVER_FIRST;
    pl_buf_append(out, s->sfirst, s->sfirst_len);
    pl_buf_reset(&m);
    pl_buf_reset(&sn);
    return PL_OK;
}

/* Checks c=: base64 of the gs2-header, followed by cb_data for "p". */
static int check_binding(const struct pl_scram_server *s, struct pl_str c,
                         const unsigned char *cb_data, size_t cb_len)
{
    struct pl_buf got = {0}, want = {0};
    int rc;

    if (pl_base64_decode(c, &got) != PL_OK)
        return PL_EINVAL;
    pl_buf_append(&want, s->gs2, s->gs2_len);
    rc = PL_OK;
    if (s->cbflag == 'p') {
        if (!cb_data || cb_len == 0)
            rc = PL_ENOT_AUTHORIZED; /* nothing to bind to */
        else
            pl_buf_append(&want, cb_data, cb_len);
    }
    if (rc == PL_OK &&
        (got.len != want.len ||
         CRYPTO_memcmp(pl_buf_cstr(&got), pl_buf_cstr(&want), got.len) != 0))
        rc = PL_ENOT_AUTHORIZED;
    pl_buf_reset(&got);
    pl_buf_reset(&want);
    return rc;
}

int pl_scram_server_client_final(struct pl_scram_server *s, struct pl_str msg,
                                 const unsigned char *cb_data, size_t cb_len,
                                 struct pl_buf *out)
{
    struct fields f;
    struct pl_str c, r, fld, proof_b64 = {NULL, 0};
    unsigned char proof[PL_SCRAM_MAX_KEY], sig[PL_SCRAM_MAX_KEY];
    unsigned char key[PL_SCRAM_MAX_KEY], stored[PL_SCRAM_MAX_KEY];
    struct pl_buf am = {0};
    size_t hl = hashes[s->hash].len, plen = 0, without_len = 0;
    int rc = PL_EINVAL;

    if (s->state != ST_SERVER_FIRST)
        return PL_EINVAL;
    s->state = ST_DONE; /* one attempt per exchange, whatever the result */
    if (!text_ok(msg))
        return PL_EINVAL;
    f = (struct fields){msg.p, msg.p + msg.len, 0};

    /* client-final-message = channel-binding "," nonce ["," extensions]
     * "," proof */
    if (!field_next(&f, &c) || !is_attr(c, 'c', &c))
        return PL_EINVAL;
    if (!field_next(&f, &r) || !is_attr(r, 'r', &r))
        return PL_EINVAL;
    while (field_next(&f, &fld)) {
        if (is_attr(fld, 'p', &proof_b64)) {
            if (!f.done)
                return PL_EINVAL; /* the proof comes last */
            without_len = (size_t)(fld.p - 1 - msg.p);
        } else if (!extension_ok(fld)) {
            return PL_EINVAL;
        }
    }
    if (!proof_b64.p)
        return PL_EINVAL;
    if (b64_decode_fixed(proof_b64, proof, sizeof(proof), &plen) != PL_OK ||
        plen != hl)
        return PL_EINVAL;

    rc = check_binding(s, c, cb_data, cb_len);
    if (rc != PL_OK)
        goto done;
    if (!pl_str_eq_c(r, s->nonce)) {
        rc = PL_ENOT_AUTHORIZED;
        goto done;
    }

    /* AuthMessage = client-first-message-bare + "," +
     * server-first-message + "," + client-final-message-without-proof */
    pl_buf_append(&am, s->bare, s->bare_len);
    pl_buf_append(&am, ",", 1);
    pl_buf_append(&am, s->sfirst, s->sfirst_len);
    pl_buf_append(&am, ",", 1);
    pl_buf_append(&am, msg.p, without_len);

    /* ClientKey = ClientProof XOR HMAC(StoredKey, AuthMessage), and
     * H(ClientKey) must be StoredKey. */
    rc = pl_scram_hmac(s->hash, s->keys.stored_key, hl, am.data + am.off,
                       am.len, sig);
    if (rc != PL_OK)
        goto done;
    for (size_t i = 0; i < hl; i++)
        key[i] = proof[i] ^ sig[i];
    rc = digest(s->hash, key, hl, stored);
    if (rc != PL_OK)
        goto done;
    if (CRYPTO_memcmp(stored, s->keys.stored_key, hl) != 0) {
        rc = PL_ENOT_AUTHORIZED;
        goto done;
    }

    /* server-final-message = "v=" base64(HMAC(ServerKey, AuthMessage)) */
    rc = pl_scram_hmac(s->hash, s->keys.server_key, hl, am.data + am.off,
                       am.len, sig);
    if (rc != PL_OK)
        goto done;
    pl_buf_append(out, "v=", 2);
    pl_base64_encode(sig, hl, out);
done:
    OPENSSL_cleanse(proof, sizeof(proof));
    OPENSSL_cleanse(sig, sizeof(sig));
    OPENSSL_cleanse(key, sizeof(key));
    OPENSSL_cleanse(stored, sizeof(stored));
    pl_buf_reset(&am);
    return rc;
}
