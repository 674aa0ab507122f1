/*
 * fuzz_scram.c - libFuzzer target for the SCRAM server state machine,
 * SASLprep and base64 (scram.c).
 *
 * Input: one flag byte, then up to five fields separated by NUL bytes
 * (which no SCRAM message may contain, so the separator costs nothing):
 *   client-first-message NUL client-final-message NUL password NUL
 *   channel-binding data NUL base64 text
 * Flag bits: 0 SHA-256 instead of SHA-1, 1 the -PLUS mechanism, 2 -PLUS
 * was offered, 3 build a correct client-final-message from the password
 * (the field is then appended as extensions before the proof), 4 use a
 * fixed server nonce, 5 call steps out of order first.
 *
 * Invariants checked (abort() on violation):
 * - results are PL_OK or the documented PL_EINVAL / PL_ENOT_AUTHORIZED /
 *   PL_EFORBIDDEN; a failed step leaves the output buffer untouched;
 * - server-first-message starts "r=" + client nonce, and its nonce,
 *   salt and iteration count are well formed;
 * - with a correct proof and no extension, client_final succeeds exactly
 *   when the channel binding is satisfiable, and its "v=" is the
 *   ServerSignature of RFC 5802 §3 computed here independently; a success
 *   without a correct proof is a violation;
 * - after client_final every step returns PL_EINVAL;
 * - SASLprep is idempotent on what it accepts;
 * - base64: decode(encode(x)) == x, encoded length 4*ceil(n/3), and
 *   decoding what decode accepted re-encodes to something that decodes to
 *   the same bytes; a refused decode leaves out untouched.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "alloc.h"
#include "buf.h"
#include "error.h"
#include "log.h"
#include "scram.h"

#define NFIELDS 5
#define ITERATIONS 2 /* PBKDF2 rounds: correctness needs no more */

static void die(const char *what, struct pl_str a)
{
    fprintf(stderr, "fuzz_scram: invariant violated: %s\n", what);
    fprintf(stderr, "  data: %.*s\n", (int)a.len, a.p ? a.p : "");
    abort();
}

static void check_rc(int rc, const char *what)
{
    if (rc != PL_OK && rc != PL_EINVAL && rc != PL_ENOT_AUTHORIZED &&
        rc != PL_EFORBIDDEN)
        die(what, pl_str_c(pl_strerror(rc)));
}

/* ---- base64 and SASLprep ---- */

static void check_base64(struct pl_str text, struct pl_str raw)
{
    struct pl_buf out = {0}, enc = {0}, dec = {0};

    /* A refused decode leaves what out held. */
    pl_buf_append(&out, "x", 1);
    int rc = pl_base64_decode(text, &out);
    if (rc != PL_OK && rc != PL_EINVAL)
        die("pl_base64_decode: unexpected code", text);
    if (rc != PL_OK && (out.len != 1 || out.data[out.off] != 'x'))
        die("pl_base64_decode changed out on failure", text);
    if (rc == PL_OK) {
        if (out.len - 1 > text.len / 4 * 3)
            die("pl_base64_decode: too many bytes", text);
        /* Re-encoding may canonicalize the padding bits, but the bytes
         * must survive. */
        pl_base64_encode((const unsigned char *)out.data + out.off + 1,
                         out.len - 1, &enc);
        if (pl_base64_decode(pl_buf_str(&enc), &dec) != PL_OK ||
            dec.len != out.len - 1 ||
            (dec.len &&
             memcmp(dec.data + dec.off, out.data + out.off + 1, dec.len)))
            die("base64 re-encoding lost bytes", text);
        if (enc.len != text.len)
            die("base64 re-encoding changed the length", text);
    }
    pl_buf_reset(&out);
    pl_buf_reset(&enc);
    pl_buf_reset(&dec);

    /* Any bytes survive a round trip. */
    pl_base64_encode((const unsigned char *)raw.p, raw.len, &enc);
    if (enc.len != (raw.len + 2) / 3 * 4)
        die("base64 encoded length", raw);
    if (pl_base64_decode(pl_buf_str(&enc), &dec) != PL_OK ||
        dec.len != raw.len ||
        (raw.len && memcmp(dec.data + dec.off, raw.p, raw.len)))
        die("base64 round trip", raw);
    pl_buf_reset(&enc);
    pl_buf_reset(&dec);
}

static void check_saslprep(struct pl_str in)
{
    char *a = NULL, *b = NULL;
    int rc = pl_saslprep(in, &a);
    if (rc != PL_OK && rc != PL_EINVAL)
        die("pl_saslprep: unexpected code", in);
    if (rc != PL_OK)
        return;
    if (pl_saslprep(pl_str_c(a), &b) != PL_OK)
        die("pl_saslprep refuses its own output", pl_str_c(a));
    if (strcmp(a, b) != 0)
        die("pl_saslprep is not idempotent", pl_str_c(a));
    pl_free(a);
    pl_free(b);
}

/* ---- the exchange ---- */

static const EVP_MD *md(enum pl_scram_hash h)
{
    return h == PL_SCRAM_SHA1 ? EVP_sha1() : EVP_sha256();
}

static void hmac(enum pl_scram_hash h, const void *key, size_t klen,
                 const void *data, size_t dlen, unsigned char *out)
{
    static const unsigned char empty[1];
    unsigned n = 0;
    if (!HMAC(md(h), key, (int)klen, dlen ? data : empty, dlen, out, &n))
        abort();
}

/* Keys for the password if it is usable (returns 1), else the fake keys. */
static int make_keys(enum pl_scram_hash h, const char *user,
                     struct pl_str password, struct pl_scram_keys *k,
                     unsigned char *salted)
{
    static const unsigned char salt[] = "QSXCR+Q6sek8bf92";
    char *prep = NULL;
    if (pl_scram_derive(h, password, salt, sizeof(salt) - 1, ITERATIONS, k) ==
            PL_OK &&
        pl_saslprep(password, &prep) == PL_OK) {
        size_t hl = pl_scram_hash_len(h);
        if (!PKCS5_PBKDF2_HMAC(prep, (int)strlen(prep), salt,
                               (int)sizeof(salt) - 1, ITERATIONS, md(h),
                               (int)hl, salted))
            abort();
        if (!pl_scram_verify_password(k, password))
            die("pl_scram_verify_password refuses the password", password);
        pl_free(prep);
        return 1;
    }
    pl_free(prep);
    pl_scram_fake_keys(h, pl_str_c(user), PL_STR("secret"), ITERATIONS, k);
    memset(salted, 0, PL_SCRAM_MAX_KEY);
    return 0;
}

/* Bytes of the client-first-message after the gs2-header. */
static struct pl_str first_bare(struct pl_str msg)
{
    const char *c1 = memchr(msg.p, ',', msg.len), *c2 = NULL;
    if (c1)
        c2 = memchr(c1 + 1, ',', msg.len - (size_t)(c1 + 1 - msg.p));
    if (!c2)
        abort(); /* client_first accepted it */
    return (struct pl_str){c2 + 1, msg.len - (size_t)(c2 + 1 - msg.p)};
}

static void out_of_order(struct pl_scram_server *s,
                         const struct pl_scram_keys *k, const char *when)
{
    struct pl_buf out = {0};
    const char *u = NULL, *t = NULL;
    if (pl_scram_server_client_first(s, PL_STR("n,,n=u,r=abc"), &u, &t) !=
            PL_EINVAL ||
        pl_scram_server_first(s, k, &out) != PL_EINVAL ||
        pl_scram_server_client_final(s, PL_STR("c=biws,r=abc,p=AAAA"), NULL, 0,
                                     &out) != PL_EINVAL ||
        out.len != 0)
        die("a step out of order did not fail", pl_str_c(when));
    pl_buf_reset(&out);
}

static void exchange(unsigned flags, struct pl_str *f)
{
    enum pl_scram_hash h = flags & 1 ? PL_SCRAM_SHA256 : PL_SCRAM_SHA1;
    int plus = (flags >> 1) & 1, offers = (flags >> 2) & 1;
    size_t hl = pl_scram_hash_len(h);
    struct pl_scram_server *s = pl_scram_server_new(h, plus, offers || plus);
    struct pl_scram_keys keys;
    unsigned char salted[PL_SCRAM_MAX_KEY];
    struct pl_buf sfirst = {0}, final = {0}, sfinal = {0};
    const char *user = NULL, *cbt = NULL;

    if (flags & 0x20) {
        /* Before client_first only client_first works. */
        struct pl_buf out = {0};
        pl_scram_fake_keys(h, PL_STR("u"), PL_STR("k"), 1, &keys);
        if (pl_scram_server_first(s, &keys, &out) != PL_EINVAL ||
            pl_scram_server_client_final(s, f[1], NULL, 0, &out) != PL_EINVAL ||
            out.len != 0)
            die("a step before client_first did not fail", f[1]);
    }
    if (flags & 0x10)
        pl__scram_server_set_nonce(s, "3rfcNHYJY1ZVvWVs7j");

    int rc = pl_scram_server_client_first(s, f[0], &user, &cbt);
    check_rc(rc, "client_first: unexpected code");
    if (rc != PL_OK) {
        /* The state stays at START: a good message still works. */
        if (pl_scram_server_client_first(s, PL_STR("n,,n=user,r=abc"), &user,
                                         &cbt) !=
            (plus ? PL_ENOT_AUTHORIZED : PL_OK))
            die("client_first after a failure", f[0]);
        goto out;
    }
    if (!user || !*user)
        die("client_first accepted an empty username", f[0]);
    /* The type reported is the one the gs2-header names ("p=<type>,"). */
    if (cbt && (f[0].len < strlen(cbt) + 3 || memcmp(f[0].p, "p=", 2) != 0 ||
                memcmp(f[0].p + 2, cbt, strlen(cbt)) != 0 ||
                f[0].p[2 + strlen(cbt)] != ','))
        die("channel binding type is not the one requested", f[0]);
    if (plus && !cbt)
        die("-PLUS accepted without a channel binding type", f[0]);
    (void)pl_scram_server_authzid(s);

    int real = make_keys(h, user, f[2], &keys, salted);
    rc = pl_scram_server_first(s, &keys, &sfirst);
    if (rc != PL_OK)
        die("server_first failed", f[0]);
    struct pl_str sf = pl_buf_str(&sfirst);
    struct pl_str bare = first_bare(f[0]);
    /* bare has "n=...,r=<cnonce>[,ext]": the server nonce extends it. */
    const char *r = strstr(pl_buf_cstr(&sfirst), ",s=");
    if (sf.len < 3 || memcmp(sf.p, "r=", 2) != 0 || !r)
        die("server-first-message shape", sf);
    for (const char *c = sf.p + 2; c < r; c++)
        if (*c < 0x21 || *c > 0x7e || *c == ',')
            die("server nonce has a bad character", sf);
    struct pl_str nonce = {sf.p + 2, (size_t)(r - sf.p - 2)};

    if (flags & 0x08) {
        /* A correct client-final-message, f[1] as extensions. */
        struct pl_buf cb = {0}, am = {0};
        size_t gs2_len = (size_t)(bare.p - f[0].p);
        int cbflag_p = f[0].p[0] == 'p';
        pl_buf_append(&cb, f[0].p, gs2_len);
        if (cbflag_p) /* RFC 5802 §7: cbind-input */
            pl_buf_append(&cb, f[3].p, f[3].len);
        pl_buf_append_str(&final, "c=");
        pl_base64_encode((const unsigned char *)cb.data + cb.off, cb.len,
                         &final);
        pl_buf_append_str(&final, ",r=");
        pl_buf_append(&final, nonce.p, nonce.len);
        if (f[1].len) {
            pl_buf_append_str(&final, ",");
            pl_buf_append(&final, f[1].p, f[1].len);
        }
        pl_buf_append(&am, bare.p, bare.len);
        pl_buf_append_str(&am, ",");
        pl_buf_append(&am, sf.p, sf.len);
        pl_buf_append_str(&am, ",");
        pl_buf_append(&am, final.data + final.off, final.len);

        unsigned char ckey[PL_SCRAM_MAX_KEY], stored[PL_SCRAM_MAX_KEY];
        unsigned char csig[PL_SCRAM_MAX_KEY], proof[PL_SCRAM_MAX_KEY];
        unsigned char skey[PL_SCRAM_MAX_KEY], ssig[PL_SCRAM_MAX_KEY];
        unsigned n = 0;
        hmac(h, salted, hl, "Client Key", 10, ckey);
        if (!EVP_Digest(ckey, hl, stored, &n, md(h), NULL))
            abort();
        hmac(h, stored, hl, am.data + am.off, am.len, csig);
        for (size_t i = 0; i < hl; i++)
            proof[i] = ckey[i] ^ csig[i];
        hmac(h, salted, hl, "Server Key", 10, skey);
        hmac(h, skey, hl, am.data + am.off, am.len, ssig);
        pl_buf_append_str(&final, ",p=");
        pl_base64_encode(proof, hl, &final);

        rc = pl_scram_server_client_final(s, pl_buf_str(&final),
                                          f[3].len
                                              ? (const unsigned char *)f[3].p
                                              : NULL,
                                          f[3].len, &sfinal);
        check_rc(rc, "client_final: unexpected code");
        /* 'p' binds to data; with none there is nothing to prove. */
        int cb_ok = !cbflag_p || f[3].len;
        if (rc == PL_OK) {
            struct pl_buf want = {0};
            pl_buf_append_str(&want, "v=");
            pl_base64_encode(ssig, hl, &want);
            if (!real || !pl_str_eq(pl_buf_str(&want), pl_buf_str(&sfinal)))
                die("server-final-message is not ServerSignature",
                    pl_buf_str(&sfinal));
            pl_buf_reset(&want);
        } else if (real && cb_ok && f[1].len == 0) {
            die("a correct client-final-message was refused",
                pl_buf_str(&final));
        }
        pl_buf_reset(&cb);
        pl_buf_reset(&am);
    } else {
        rc = pl_scram_server_client_final(s, f[1],
                                          f[3].len
                                              ? (const unsigned char *)f[3].p
                                              : NULL,
                                          f[3].len, &sfinal);
        check_rc(rc, "client_final: unexpected code");
        /* Without the password nobody forges a proof. */
        if (rc == PL_OK)
            die("client_final accepted a message not built from the keys",
                f[1]);
    }
    if (rc != PL_OK && sfinal.len)
        die("client_final wrote output on failure", pl_buf_str(&sfinal));
    out_of_order(s, &keys, "after client_final");
out:
    pl_scram_server_free(s);
    pl_buf_reset(&sfirst);
    pl_buf_reset(&final);
    pl_buf_reset(&sfinal);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    pl_log_set_level(PL_LOG_ERROR);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    unsigned flags = data[0];
    /* Each field in a heap copy of its exact size, so ASan sees overreads. */
    char *copy = pl_malloc(size);
    memcpy(copy, data + 1, size - 1);
    struct pl_str f[NFIELDS];
    const char *p = copy, *end = copy + size - 1;
    char *fields[NFIELDS] = {0};
    for (int i = 0; i < NFIELDS; i++) {
        const char *z = p < end ? memchr(p, '\0', (size_t)(end - p)) : NULL;
        size_t n = z ? (size_t)(z - p) : (size_t)(end - p);
        if (i == NFIELDS - 1)
            n = (size_t)(end - p); /* the last field may hold NULs */
        fields[i] = pl_malloc(n ? n : 1);
        if (n)
            memcpy(fields[i], p, n);
        f[i] = (struct pl_str){fields[i], n};
        p = p + n < end ? p + n + 1 : end;
    }

    exchange(flags, f);
    check_saslprep(f[2]);
    check_saslprep(f[4]);
    check_base64(f[4], (struct pl_str){copy, size - 1});

    for (int i = 0; i < NFIELDS; i++)
        pl_free(fields[i]);
    pl_free(copy);
    return 0;
}
