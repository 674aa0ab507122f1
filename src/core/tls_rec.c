/*
 * tls_rec.c - TLS 1.3 records after the handshake (tls_rec.h).
 *
 * Bytes read live in one of two places.  While a read call runs they are
 * in a per-thread scratch buffer (64 KiB: several records per recv);
 * when it returns, whatever is left (a record's undelivered plaintext, a
 * partial record) moves to a heap buffer of exactly that size, so an
 * idle connection holds none.  Inside the buffer the plaintext being
 * handed out, [off, off + plain), always lies before the ciphertext not
 * opened yet, [coff, coff + ciph): records are opened in place.
 *
 * Sealing goes through a second per-thread scratch buffer (up to four
 * full records per send); a record the socket did not take waits in
 * `wire` and goes first next time.
 */
#include "tls_rec.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <pthread.h>
#include <string.h>
#include <sys/socket.h>

#include "alloc.h"
#include "buf.h"
#include "error.h"

enum {
    HDR = 5,                      /* type, legacy version, length */
    TAG = 16,                     /* every TLS 1.3 AEAD's tag */
    IV = 12,                      /* and nonce */
    MAX_PLAIN = 16384,            /* §5.1: 2^14 per record */
    MAX_INNER = MAX_PLAIN + 1,    /* §5.4: with the content type */
    MAX_CIPHER = MAX_PLAIN + 256, /* §5.2 */
    READ_SCRATCH = 65536,         /* bytes read per recv */
    SEAL_RECORDS = 4,             /* records sealed per send */
    SEAL_SCRATCH = SEAL_RECORDS * (HDR + MAX_PLAIN + 1 + TAG),
    CT_ALERT = 21,
    CT_HANDSHAKE = 22,
    CT_APPDATA = 23,
    HS_KEY_UPDATE = 24,
    A_CLOSE_NOTIFY = 0,
    A_UNEXPECTED = 10,
    A_BAD_MAC = 20,
    A_OVERFLOW = 22,
    A_ILLEGAL = 47,
    A_DECODE = 50,
    A_INTERNAL = 80,
    A_USER_CANCELED = 90,
};

/* Our write key is renewed after this many records: far below AES-GCM's
 * 2^24.5 full-size records per key (§5.5). */
#define REKEY_RECORDS (1ull << 23)

struct suite {
    unsigned id;      /* IANA number */
    const char *name; /* OpenSSL's cipher name */
    const char *md;   /* the hash of its key schedule */
    unsigned keylen;
    unsigned hashlen;
};

static const struct suite suites[] = {
    {0x1301, "AES-128-GCM", "SHA256", 16, 32},
    {0x1302, "AES-256-GCM", "SHA384", 32, 48},
    {0x1303, "ChaCha20-Poly1305", "SHA256", 32, 32},
};
#define NSUITES (sizeof(suites) / sizeof(suites[0]))

static EVP_CIPHER *ciphers[NSUITES];
static const EVP_MD *mds[NSUITES];
static int cap_index = -1;
static pthread_once_t once = PTHREAD_ONCE_INIT;

struct dir {
    unsigned char secret[48]; /* application traffic secret, current */
    unsigned char key[32];
    unsigned char iv[IV];
    uint64_t seq;
};

struct pl_tls_rec {
    unsigned char suite; /* index into suites */
    struct dir rd, wr;
    char *buf;           /* bytes read (heap, or the scratch) */
    uint32_t off, plain; /* plaintext being handed out */
    uint32_t coff, ciph; /* ciphertext not opened yet */
    struct pl_buf wire;  /* sealed, not written yet */
    unsigned char hs[5]; /* a KeyUpdate being put together */
    unsigned char hs_len;
    unsigned on_scratch : 1;    /* buf is the thread's scratch */
    unsigned eof : 1;           /* close_notify received */
    unsigned failed : 1;        /* a fatal alert went or came */
    unsigned peer_failed : 1;   /* ... came: ECONNRESET, else EPROTO */
    unsigned update_queued : 1; /* our KeyUpdate waits in wire */
};

/* What a watched SSL gathers during the handshake. */
struct capture {
    unsigned char csecret[48], ssecret[48];
    unsigned char clen, slen;
    unsigned rset : 1, wset : 1, updated : 1;
    uint64_t rhdr, whdr;   /* records read / written */
    uint64_t rbase, wbase; /* ... up to each side's Finished */
};

static void cap_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx,
                     long argl, void *argp)
{
    (void)parent;
    (void)ad;
    (void)idx;
    (void)argl;
    (void)argp;
    if (ptr) {
        OPENSSL_cleanse(ptr, sizeof(struct capture));
        pl_free(ptr);
    }
}

static void init_once(void)
{
    cap_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, cap_free);
    for (size_t i = 0; i < NSUITES; i++) {
        ciphers[i] = EVP_CIPHER_fetch(NULL, suites[i].name, NULL);
        mds[i] = EVP_get_digestbyname(suites[i].md);
    }
}

static int suite_index(unsigned id)
{
    pthread_once(&once, init_once);
    for (size_t i = 0; i < NSUITES; i++)
        if (suites[i].id == id && ciphers[i] && mds[i])
            return (int)i;
    return -1;
}

/* ---- key schedule (RFC 8446 §7.1, §7.3) ---- */

static int expand_label(int s, const unsigned char *secret, const char *label,
                        unsigned char *out, size_t len)
{
    size_t ll = strlen(label);
    if (len > suites[s].hashlen || ll > 240)
        return PL_EINVAL;
    /* HkdfLabel (length, "tls13 " label, empty context), then HKDF-Expand's
     * counter: one block, as no output here is longer than the hash. */
    unsigned char info[2 + 1 + 6 + 240 + 1 + 1];
    size_t n = 0;
    info[n++] = (unsigned char)(len >> 8);
    info[n++] = (unsigned char)len;
    info[n++] = (unsigned char)(6 + ll);
    memcpy(info + n, "tls13 ", 6);
    n += 6;
    memcpy(info + n, label, ll);
    n += ll;
    info[n++] = 0;
    info[n++] = 1;
    unsigned char t[EVP_MAX_MD_SIZE];
    unsigned int tl = 0;
    if (!HMAC(mds[s], secret, (int)suites[s].hashlen, info, n, t, &tl) ||
        tl < len)
        return PL_ETLS;
    memcpy(out, t, len);
    OPENSSL_cleanse(t, sizeof(t));
    return PL_OK;
}

int pl_tls_rec_expand_label(unsigned suite, const unsigned char *secret,
                            const char *label, unsigned char *out, size_t len)
{
    int s = suite_index(suite);
    return s < 0 ? PL_EINVAL : expand_label(s, secret, label, out, len);
}

static int set_keys(int s, struct dir *d)
{
    d->seq = 0;
    if (expand_label(s, d->secret, "key", d->key, suites[s].keylen) != PL_OK ||
        expand_label(s, d->secret, "iv", d->iv, IV) != PL_OK)
        return PL_ETLS;
    return PL_OK;
}

/* §7.2: application_traffic_secret_N+1. */
static int next_secret(int s, struct dir *d)
{
    unsigned char n[48];
    if (expand_label(s, d->secret, "traffic upd", n, suites[s].hashlen) !=
        PL_OK)
        return PL_ETLS;
    memcpy(d->secret, n, suites[s].hashlen);
    OPENSSL_cleanse(n, sizeof(n));
    return set_keys(s, d);
}

struct pl_tls_rec *pl_tls_rec_new(unsigned suite, const unsigned char *rsecret,
                                  const unsigned char *wsecret, uint64_t rseq,
                                  uint64_t wseq)
{
    int s = suite_index(suite);
    if (s < 0)
        return NULL;
    struct pl_tls_rec *r = pl_calloc(1, sizeof(*r));
    r->suite = (unsigned char)s;
    memcpy(r->rd.secret, rsecret, suites[s].hashlen);
    memcpy(r->wr.secret, wsecret, suites[s].hashlen);
    if (set_keys(s, &r->rd) != PL_OK || set_keys(s, &r->wr) != PL_OK) {
        pl_tls_rec_free(r);
        return NULL;
    }
    r->rd.seq = rseq;
    r->wr.seq = wseq;
    return r;
}

void pl_tls_rec_free(struct pl_tls_rec *r)
{
    if (!r)
        return;
    if (!r->on_scratch)
        pl_free(r->buf);
    pl_buf_reset(&r->wire);
    OPENSSL_cleanse(r, sizeof(*r));
    pl_free(r);
}

/* ---- taking over from OpenSSL ---- */

static void on_msg(int write_p, int version, int type, const void *buf,
                   size_t len, SSL *ssl, void *arg)
{
    (void)version;
    (void)arg;
    struct capture *k = SSL_get_ex_data(ssl, cap_index);
    if (!k)
        return;
    if (type == SSL3_RT_HEADER) {
        if (write_p)
            k->whdr++;
        else
            k->rhdr++;
        return;
    }
    if (type != SSL3_RT_HANDSHAKE || len < 1)
        return;
    unsigned char mt = ((const unsigned char *)buf)[0];
    if (mt == SSL3_MT_FINISHED) {
        /* The record that carried it was counted: the next one is the
         * first under the application traffic key, sequence 0. */
        if (write_p) {
            k->wbase = k->whdr;
            k->wset = 1;
        } else {
            k->rbase = k->rhdr;
            k->rset = 1;
        }
    } else if (mt == SSL3_MT_KEY_UPDATE) {
        k->updated = 1; /* the logged secrets are stale */
    }
}

static int unhex(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

static void on_keylog(const SSL *ssl, const char *line)
{
    static const char cl[] = "CLIENT_TRAFFIC_SECRET_0 ";
    static const char sl[] = "SERVER_TRAFFIC_SECRET_0 ";
    struct capture *k = SSL_get_ex_data(ssl, cap_index);
    if (!k)
        return;
    unsigned char *dst;
    unsigned char *dlen;
    if (strncmp(line, cl, sizeof(cl) - 1) == 0) {
        dst = k->csecret;
        dlen = &k->clen;
    } else if (strncmp(line, sl, sizeof(sl) - 1) == 0) {
        dst = k->ssecret;
        dlen = &k->slen;
    } else {
        return;
    }
    const char *hex = strrchr(line, ' ');
    if (!hex)
        return;
    hex++;
    size_t n = 0;
    *dlen = 0;
    while (hex[0] && hex[1] && n < 48) {
        int hi = unhex(hex[0]), lo = unhex(hex[1]);
        if (hi < 0 || lo < 0)
            return;
        dst[n++] = (unsigned char)(hi << 4 | lo);
        hex += 2;
    }
    if (!hex[0])
        *dlen = (unsigned char)n;
}

void pl_tls_rec_keylog(SSL_CTX *ctx)
{
    pthread_once(&once, init_once);
    SSL_CTX_set_keylog_callback(ctx, on_keylog);
}

int pl_tls_rec_watch(SSL *ssl)
{
    pthread_once(&once, init_once);
    if (cap_index < 0)
        return PL_ETLS;
    struct capture *k = pl_calloc(1, sizeof(*k));
    if (!SSL_set_ex_data(ssl, cap_index, k)) {
        pl_free(k);
        return PL_ETLS;
    }
    SSL_set_msg_callback(ssl, on_msg);
    return PL_OK;
}

int pl_tls_rec_take(SSL *ssl, struct pl_tls_rec **out)
{
    *out = NULL;
    pthread_once(&once, init_once);
    struct capture *k = SSL_get_ex_data(ssl, cap_index);
    if (!k || k->updated || SSL_version(ssl) != TLS1_3_VERSION ||
        SSL_get_shutdown(ssl))
        return PL_ETLS;
    if (!k->rset || !k->wset)
        return PL_EAGAIN; /* the handshake is not over */
    if (SSL_has_pending(ssl) || SSL_pending(ssl))
        return PL_EAGAIN; /* a record, or part of one, inside OpenSSL */
    const SSL_CIPHER *c = SSL_get_current_cipher(ssl);
    int s = c ? suite_index(SSL_CIPHER_get_protocol_id(c)) : -1;
    if (s < 0)
        return PL_ETLS;
    int server = SSL_is_server(ssl);
    const unsigned char *rs = server ? k->csecret : k->ssecret;
    const unsigned char *ws = server ? k->ssecret : k->csecret;
    if (k->clen != suites[s].hashlen || k->slen != suites[s].hashlen)
        return PL_ETLS;
    *out = pl_tls_rec_new(suites[s].id, rs, ws, k->rhdr - k->rbase,
                          k->whdr - k->wbase);
    return *out ? PL_OK : PL_ETLS;
}

/* ---- records ---- */

static EVP_CIPHER_CTX *thread_ctx(void)
{
    static _Thread_local EVP_CIPHER_CTX *x;
    if (!x)
        x = EVP_CIPHER_CTX_new();
    return x;
}

static char *read_scratch(void)
{
    static _Thread_local char *p;
    if (!p)
        p = pl_malloc(READ_SCRATCH);
    return p;
}

static unsigned char *seal_scratch(void)
{
    static _Thread_local unsigned char *p;
    if (!p)
        p = pl_malloc(SEAL_SCRATCH);
    return p;
}

static void nonce_of(const struct dir *d, unsigned char *nonce)
{
    memcpy(nonce, d->iv, IV);
    for (int i = 0; i < 8; i++)
        nonce[IV - 1 - i] ^= (unsigned char)(d->seq >> (8 * i));
}

/*
 * Seals one record: header, then p (n bytes) and the content type,
 * encrypted, then the tag.  Returns its size, 0 on a library failure.
 */
static size_t seal_padded(struct pl_tls_rec *r, int type, const void *p,
                          size_t n, size_t pad, unsigned char *out)
{
    static const unsigned char zeros[256];
    size_t len = n + 1 + pad + TAG;
    out[0] = CT_APPDATA;
    out[1] = 3;
    out[2] = 3;
    out[3] = (unsigned char)(len >> 8);
    out[4] = (unsigned char)len;
    unsigned char nonce[IV], ct = (unsigned char)type;
    nonce_of(&r->wr, nonce);
    EVP_CIPHER_CTX *x = thread_ctx();
    int l = 0, ok = x && EVP_EncryptInit_ex2(x, ciphers[r->suite], r->wr.key,
                                             nonce, NULL) == 1;
    ok = ok && EVP_EncryptUpdate(x, NULL, &l, out, HDR) == 1;
    if (n)
        ok = ok && EVP_EncryptUpdate(x, out + HDR, &l, p, (int)n) == 1;
    ok = ok && EVP_EncryptUpdate(x, out + HDR + n, &l, &ct, 1) == 1;
    for (size_t done = 0; ok && done < pad;) {
        size_t k = pad - done < sizeof(zeros) ? pad - done : sizeof(zeros);
        ok = EVP_EncryptUpdate(x, out + HDR + n + 1 + done, &l, zeros,
                               (int)k) == 1;
        done += k;
    }
    ok = ok && EVP_EncryptFinal_ex(x, out + HDR + n + 1 + pad, &l) == 1;
    ok = ok && EVP_CIPHER_CTX_ctrl(x, EVP_CTRL_AEAD_GET_TAG, TAG,
                                   out + HDR + n + 1 + pad) == 1;
    if (!ok)
        return 0;
    r->wr.seq++;
    return HDR + len;
}

static size_t seal(struct pl_tls_rec *r, int type, const void *p, size_t n,
                   unsigned char *out)
{
    return seal_padded(r, type, p, n, 0, out);
}

size_t pl_tls_rec_seal_raw(struct pl_tls_rec *r, int type, const void *p,
                           size_t n, size_t pad, unsigned char *out)
{
    size_t w = seal_padded(r, type, p, n, pad, out);
    const unsigned char *m = p;
    if (w && type == CT_HANDSHAKE && n == 5 && m[0] == HS_KEY_UPDATE && !m[1] &&
        !m[2] && m[3] == 1 && next_secret(r->suite, &r->wr) != PL_OK)
        return 0;
    return w;
}

/* A fatal alert (§6.2): sealed for sending, and the connection fails. */
static int fatal(struct pl_tls_rec *r, int desc)
{
    if (!r->failed) {
        unsigned char a[2] = {2, (unsigned char)desc};
        unsigned char rec[HDR + 2 + 1 + TAG];
        size_t n = seal(r, CT_ALERT, a, 2, rec);
        if (n)
            pl_buf_append(&r->wire, rec, n);
        r->failed = 1;
    }
    errno = EPROTO;
    return -1;
}

/* Our KeyUpdate (§4.6.3), under the current key; then the next key. */
static int key_update_out(struct pl_tls_rec *r, int request)
{
    if (r->update_queued && !request)
        return PL_OK; /* one answers any number of requests */
    unsigned char m[5] = {HS_KEY_UPDATE, 0, 0, 1, (unsigned char)request};
    unsigned char rec[HDR + 5 + 1 + TAG];
    size_t n = seal(r, CT_HANDSHAKE, m, 5, rec);
    if (!n || next_secret(r->suite, &r->wr) != PL_OK)
        return PL_ETLS;
    pl_buf_append(&r->wire, rec, n);
    r->update_queued = 1;
    return PL_OK;
}

static int on_handshake(struct pl_tls_rec *r, const unsigned char *p, size_t n)
{
    if (!n)
        return fatal(r, A_UNEXPECTED); /* §5.1: no empty fragments */
    for (size_t i = 0; i < n; i++) {
        r->hs[r->hs_len++] = p[i];
        if (r->hs_len == 4) {
            /* After the handshake a client sends only KeyUpdate. */
            if (r->hs[0] != HS_KEY_UPDATE)
                return fatal(r, A_UNEXPECTED);
            if (r->hs[1] || r->hs[2] || r->hs[3] != 1)
                return fatal(r, A_DECODE);
        } else if (r->hs_len == 5) {
            int req = r->hs[4];
            r->hs_len = 0;
            if (req > 1)
                return fatal(r, A_ILLEGAL);
            if (next_secret(r->suite, &r->rd) != PL_OK)
                return fatal(r, A_INTERNAL);
            if (req && key_update_out(r, 0) != PL_OK)
                return fatal(r, A_INTERNAL);
        }
    }
    return 1;
}

static int on_alert(struct pl_tls_rec *r, const unsigned char *p, size_t n)
{
    if (n != 2)
        return fatal(r, A_DECODE);
    if (p[1] == A_CLOSE_NOTIFY) {
        r->eof = 1;
        return 1;
    }
    if (p[1] == A_USER_CANCELED)
        return 1;  /* §6.1: a close_notify follows */
    r->failed = 1; /* §6.2: the peer ends the connection */
    r->peer_failed = 1;
    errno = ECONNRESET;
    return -1;
}

/* Opens the record at coff if it is whole: 1 opened, 0 more bytes are
 * needed, -1 the connection failed (errno set). */
static int open_one(struct pl_tls_rec *r)
{
    if (r->ciph < HDR)
        return 0;
    unsigned char *h = (unsigned char *)r->buf + r->coff;
    size_t len = (size_t)h[3] << 8 | h[4];
    if (h[0] != CT_APPDATA)
        return fatal(r, A_UNEXPECTED); /* §5: only protected records now */
    if (len > MAX_CIPHER || (len > TAG && len - TAG > MAX_INNER))
        return fatal(r, A_OVERFLOW);
    if (r->ciph < HDR + len)
        return 0;
    if (len < TAG + 1)
        return fatal(r, A_BAD_MAC);
    unsigned char *ct = h + HDR;
    size_t m = len - TAG;
    unsigned char nonce[IV];
    nonce_of(&r->rd, nonce);
    EVP_CIPHER_CTX *x = thread_ctx();
    int l = 0, ok = x && EVP_DecryptInit_ex2(x, ciphers[r->suite], r->rd.key,
                                             nonce, NULL) == 1;
    ok = ok && EVP_DecryptUpdate(x, NULL, &l, h, HDR) == 1;
    ok = ok && EVP_DecryptUpdate(x, ct, &l, ct, (int)m) == 1;
    ok = ok && EVP_CIPHER_CTX_ctrl(x, EVP_CTRL_AEAD_SET_TAG, TAG, ct + m) == 1;
    ok = ok && EVP_DecryptFinal_ex(x, ct + l, &l) == 1;
    if (!ok)
        return fatal(r, A_BAD_MAC);
    r->rd.seq++;
    while (m > 0 && ct[m - 1] == 0)
        m--; /* §5.4: padding */
    if (m == 0)
        return fatal(r, A_UNEXPECTED);
    int type = ct[--m];
    uint32_t at = r->coff + HDR;
    r->coff += (uint32_t)(HDR + len);
    r->ciph -= (uint32_t)(HDR + len);
    if (r->hs_len && type != CT_HANDSHAKE)
        return fatal(r, A_UNEXPECTED); /* §5.1: no interleaving */
    switch (type) {
    case CT_APPDATA:
        r->off = at;
        r->plain = (uint32_t)m;
        return 1;
    case CT_HANDSHAKE: return on_handshake(r, ct, m);
    case CT_ALERT: return on_alert(r, ct, m);
    default: return fatal(r, A_UNEXPECTED);
    }
}

/* Reads more into the scratch buffer: > 0, 0 at the socket's end, -1. */
static ssize_t fill(struct pl_tls_rec *r, int fd)
{
    char *s = read_scratch();
    if (!r->on_scratch) {
        /* Only a partial record can be left here (plain is 0). */
        if (r->ciph)
            memcpy(s, r->buf + r->coff, r->ciph);
        pl_free(r->buf);
        r->buf = s;
        r->on_scratch = 1;
    } else if (r->coff && r->ciph) {
        memmove(s, s + r->coff, r->ciph);
    }
    r->coff = r->off = 0;
    ssize_t n;
    do
        n = recv(fd, s + r->ciph, READ_SCRATCH - r->ciph, 0);
    while (n < 0 && errno == EINTR);
    if (n > 0)
        r->ciph += (uint32_t)n;
    return n;
}

/* Nothing may stay in the scratch buffer between calls. */
static void settle(struct pl_tls_rec *r)
{
    if (!r->on_scratch)
        return;
    char *s = r->buf;
    r->on_scratch = 0;
    r->buf = NULL;
    if (!r->plain && !r->ciph) {
        r->off = r->coff = 0;
        return;
    }
    r->buf = pl_malloc((size_t)r->plain + r->ciph);
    memcpy(r->buf, s + r->off, r->plain);
    memcpy(r->buf + r->plain, s + r->coff, r->ciph);
    r->off = 0;
    r->coff = r->plain;
}

ssize_t pl_tls_rec_read(struct pl_tls_rec *r, int fd, void *dst, size_t want)
{
    if (r->failed) {
        errno = r->peer_failed ? ECONNRESET : EPROTO;
        return -1;
    }
    ssize_t ret;
    for (;;) {
        if (r->eof) {
            ret = 0;
            break;
        }
        if (r->plain) {
            size_t n = r->plain < want ? r->plain : want;
            memcpy(dst, r->buf + r->off, n);
            r->off += (uint32_t)n;
            r->plain -= (uint32_t)n;
            ret = (ssize_t)n;
            break;
        }
        int o = open_one(r);
        if (o < 0) {
            ret = -1;
            break;
        }
        if (o > 0)
            continue;
        ret = fill(r, fd);
        if (ret <= 0)
            break;
    }
    int e = errno;
    if (!r->plain && !r->ciph && !r->on_scratch) {
        pl_free(r->buf); /* all handed out */
        r->buf = NULL;
        r->off = r->coff = 0;
    }
    settle(r);
    errno = e;
    return ret;
}

int pl_tls_rec_pending(const struct pl_tls_rec *r)
{
    if (r->plain || r->eof)
        return 1;
    if (r->ciph < HDR)
        return 0;
    const unsigned char *h = (const unsigned char *)r->buf + r->coff;
    return r->ciph >= HDR + ((size_t)h[3] << 8 | h[4]);
}

size_t pl_tls_rec_unsent(const struct pl_tls_rec *r)
{
    return r->wire.len;
}

int pl_tls_rec_flush(struct pl_tls_rec *r, int fd)
{
    while (r->wire.len) {
        struct pl_str s = pl_buf_str(&r->wire);
        ssize_t n = send(fd, s.p, s.len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return errno == EAGAIN ? 0 : -1;
        }
        pl_buf_consume(&r->wire, (size_t)n);
    }
    pl_buf_reset(&r->wire);
    r->update_queued = 0;
    return 1;
}

ssize_t pl_tls_rec_write(struct pl_tls_rec *r, int fd, const void *p, size_t n)
{
    if (r->failed) {
        errno = EPROTO;
        return -1;
    }
    int f = pl_tls_rec_flush(r, fd);
    if (f <= 0) {
        if (f == 0)
            errno = EAGAIN;
        return -1;
    }
    if (r->wr.seq >= REKEY_RECORDS && key_update_out(r, 0) != PL_OK) {
        fatal(r, A_INTERNAL);
        return -1;
    }
    unsigned char *out = seal_scratch();
    size_t used = 0, taken = 0;
    while (taken < n && used + HDR + MAX_PLAIN + 1 + TAG <= SEAL_SCRATCH) {
        size_t c = n - taken < MAX_PLAIN ? n - taken : MAX_PLAIN;
        size_t w = seal(r, CT_APPDATA, (const char *)p + taken, c, out + used);
        if (!w) {
            fatal(r, A_INTERNAL);
            return -1;
        }
        used += w;
        taken += c;
    }
    /* A KeyUpdate just queued goes before these records. */
    if (r->wire.len) {
        pl_buf_append(&r->wire, out, used);
        if (pl_tls_rec_flush(r, fd) < 0)
            return -1;
        return (ssize_t)taken;
    }
    size_t sent = 0;
    while (sent < used) {
        ssize_t w = send(fd, out + sent, used - sent, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN)
                return -1;
            break;
        }
        sent += (size_t)w;
    }
    if (sent < used)
        pl_buf_append(&r->wire, out + sent, used - sent);
    return (ssize_t)taken;
}

void pl_tls_rec_close_notify(struct pl_tls_rec *r, int fd)
{
    /* §6.1: ours, also in answer to the peer's. */
    if (!r->failed) {
        unsigned char a[2] = {1, A_CLOSE_NOTIFY};
        unsigned char rec[HDR + 2 + 1 + TAG];
        size_t n = seal(r, CT_ALERT, a, 2, rec);
        if (n)
            pl_buf_append(&r->wire, rec, n);
    }
    pl_tls_rec_flush(r, fd);
}
