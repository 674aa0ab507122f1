/*
 * test_tls_rec.c - the TLS 1.3 record layer (tls_rec.h) against RFC 8448's
 * simple 1-RTT trace (§3): the application keys from the traffic
 * secrets, the client's application data and close_notify records
 * opened, the server's sealed byte for byte (its first record after the
 * NewSessionTicket: sequence 1); then what §5 and §6 of RFC 8446 say of
 * bad records: a wrong tag, an oversized or unprotected record, a record
 * cut anywhere and read a few bytes at a time.
 *
 * The whole hand-over from OpenSSL, with a real OpenSSL client, is in
 * test_conn.c (conn_tls_handover).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "error.h"
#include "tls_rec.h"
#include "unit.h"

/* RFC 8448 §3. */
static const char c_secret[] =
    "9e40646ce79a7f9dc05af8889bce6552875afa0b06df0087"
    "f792ebb7c17504a5";
static const char s_secret[] =
    "a11af9f05531f856ad47116b45a950328204b4f44bfb6b3a"
    "4b4f1f3fcb631643";
static const char c_app_rec[] =
    "17030300"
    "43a23f7054b62c94d0affafe8228ba55cbefacea42f914aa66bcab3f2b9819a8a5b46b395b"
    "d54a9a20441e2b62974e1f5a6292a2977014bd1e3deae63aeebb21694915e4";
static const char s_app_rec[] =
    "17030300"
    "432e937e11ef4ac740e538ad36005fc4a46932fc3225d05f82aa1b36e30efaf97d90e6dffc"
    "602dcb501a59a8fcc49c4bf2e5f0a21c0047c2abf332540dd032e167c2955d";
static const char c_alert_rec[] = "1703030013c987276065566"
                                  "6b74d7ff1153efd6db6d0b0e3";
static const char s_alert_rec[] = "1703030013b58fd67166ebf"
                                  "599d24720cfbe7efa7a8864a9";

static size_t unhex(const char *h, unsigned char *out)
{
    size_t n = 0;
    for (; h[0] && h[1]; h += 2) {
        unsigned v;
        sscanf(h, "%2x", &v);
        out[n++] = (unsigned char)v;
    }
    return n;
}

/* The server's record layer of the trace, and a socketpair to it. */
static struct pl_tls_rec *server(int sv[2], uint64_t rseq, uint64_t wseq)
{
    unsigned char cs[32], ss[32];
    unhex(c_secret, cs);
    unhex(s_secret, ss);
    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) == 0);
    struct pl_tls_rec *r = pl_tls_rec_new(0x1301, cs, ss, rseq, wseq);
    CHECK(r != NULL);
    return r;
}

void test_tls_rec_rfc8448_keys(void)
{
    unsigned char sec[32], key[16], iv[12], want[16];
    unhex(s_secret, sec);
    CHECK_INT(pl_tls_rec_expand_label(0x1301, sec, "key", key, 16), PL_OK);
    unhex("9f02283b6c9c07efc26bb9f2ac92e356", want);
    CHECK(memcmp(key, want, 16) == 0);
    CHECK_INT(pl_tls_rec_expand_label(0x1301, sec, "iv", iv, 12), PL_OK);
    unhex("cf782b88dd83549aadf1e984", want);
    CHECK(memcmp(iv, want, 12) == 0);
    unhex(c_secret, sec);
    CHECK_INT(pl_tls_rec_expand_label(0x1301, sec, "key", key, 16), PL_OK);
    unhex("17422dda596ed5d9acd890e3c63f5051", want);
    CHECK(memcmp(key, want, 16) == 0);
    CHECK_INT(pl_tls_rec_expand_label(0x1301, sec, "iv", iv, 12), PL_OK);
    unhex("5b78923dee08579033e523d9", want);
    CHECK(memcmp(iv, want, 12) == 0);
    CHECK_INT(pl_tls_rec_expand_label(0x9999, sec, "iv", iv, 12), PL_EINVAL);
}

void test_tls_rec_rfc8448_records(void)
{
    int sv[2];
    struct pl_tls_rec *r = server(sv, 0, 1);
    unsigned char in[128], out[128], want[128];
    char got[64];
    size_t n = unhex(c_app_rec, in);
    CHECK_INT(n, 72);
    n += unhex(c_alert_rec, in + n);
    CHECK(write(sv[1], in, n) == (ssize_t)n);
    CHECK_INT(pl_tls_rec_read(r, sv[0], got, sizeof(got)), 50);
    for (int i = 0; i < 50; i++)
        CHECK_INT((unsigned char)got[i], i);
    CHECK_INT(pl_tls_rec_read(r, sv[0], got, sizeof(got)), 0); /* close */
    unsigned char payload[50];
    for (int i = 0; i < 50; i++)
        payload[i] = (unsigned char)i;
    CHECK_INT(pl_tls_rec_write(r, sv[0], payload, 50), 50);
    CHECK_INT(pl_tls_rec_unsent(r), 0);
    CHECK_INT(read(sv[1], out, sizeof(out)), 72);
    CHECK(memcmp(out, want, unhex(s_app_rec, want)) == 0);
    pl_tls_rec_close_notify(r, sv[0]);
    CHECK_INT(read(sv[1], out, sizeof(out)), 24);
    CHECK(memcmp(out, want, unhex(s_alert_rec, want)) == 0);
    pl_tls_rec_free(r);
    close(sv[0]);
    close(sv[1]);
}

/* A record arriving a byte at a time, read a few bytes at a time. */
void test_tls_rec_partial(void)
{
    int sv[2];
    struct pl_tls_rec *r = server(sv, 0, 1);
    unsigned char in[128];
    size_t n = unhex(c_app_rec, in);
    char got[64];
    for (size_t i = 0; i + 1 < n; i++) {
        CHECK(write(sv[1], in + i, 1) == 1);
        CHECK_INT(pl_tls_rec_read(r, sv[0], got, sizeof(got)), -1);
        CHECK_INT(errno, EAGAIN);
        CHECK_INT(pl_tls_rec_pending(r), 0);
    }
    CHECK(write(sv[1], in + n - 1, 1) == 1);
    size_t total = 0;
    while (total < 50) {
        ssize_t k = pl_tls_rec_read(r, sv[0], got + total, 7);
        CHECK(k > 0 && k <= 7);
        if (k <= 0)
            break;
        total += (size_t)k;
        CHECK_INT(pl_tls_rec_pending(r), total < 50);
    }
    for (int i = 0; i < 50; i++)
        CHECK_INT((unsigned char)got[i], i);
    CHECK_INT(pl_tls_rec_read(r, sv[0], got, sizeof(got)), -1);
    CHECK_INT(errno, EAGAIN);
    pl_tls_rec_free(r);
    close(sv[0]);
    close(sv[1]);
}

/*
 * Bad records end the connection with the alert §5.2 names, sealed under
 * the server's key: the client's view of the trace opens it and reads a
 * fatal alert (ECONNRESET).
 */
static void bad_record(const unsigned char *rec, size_t n)
{
    int sv[2];
    struct pl_tls_rec *r = server(sv, 0, 1);
    char got[64];
    CHECK(write(sv[1], rec, n) == (ssize_t)n);
    CHECK_INT(pl_tls_rec_read(r, sv[0], got, sizeof(got)), -1);
    CHECK_INT(errno, EPROTO);
    CHECK_INT(pl_tls_rec_read(r, sv[0], got, sizeof(got)), -1);
    CHECK_INT(pl_tls_rec_write(r, sv[0], "x", 1), -1);
    CHECK_INT(errno, EPROTO);
    pl_tls_rec_close_notify(r, sv[0]); /* sends the alert, nothing more */
    unsigned char cs[32], ss[32];
    unhex(c_secret, cs);
    unhex(s_secret, ss);
    struct pl_tls_rec *cl = pl_tls_rec_new(0x1301, ss, cs, 1, 1);
    unsigned char wire[64];
    ssize_t w = read(sv[1], wire, sizeof(wire));
    CHECK_INT(w, 24);
    /* Open it by hand: the client's view reads the alert as fatal. */
    int pv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, pv) == 0);
    CHECK(write(pv[1], wire, (size_t)w) == w);
    CHECK_INT(pl_tls_rec_read(cl, pv[0], got, sizeof(got)), -1);
    CHECK_INT(errno, ECONNRESET);
    pl_tls_rec_free(cl);
    pl_tls_rec_free(r);
    close(pv[0]);
    close(pv[1]);
    close(sv[0]);
    close(sv[1]);
}

void test_tls_rec_bad_records(void)
{
    unsigned char rec[72];
    unhex(c_app_rec, rec);
    rec[40] ^= 1; /* bad_record_mac */
    bad_record(rec, sizeof(rec));
    unhex(c_app_rec, rec);
    rec[0] = 22; /* an unprotected handshake record: unexpected_message */
    bad_record(rec, sizeof(rec));
    unsigned char big[5] = {23, 3, 3, 0x41, 0x01}; /* 2^14 + 257 */
    bad_record(big, sizeof(big));
    unsigned char tiny[5 + 16] = {23, 3, 3, 0, 16}; /* no room for a type */
    bad_record(tiny, sizeof(tiny));
}

/* Records in both directions between two record layers, past a size
 * that takes several records and several sends. */
void test_tls_rec_bulk(void)
{
    unsigned char cs[48], ss[48];
    for (int i = 0; i < 48; i++) {
        cs[i] = (unsigned char)i;
        ss[i] = (unsigned char)(100 + i);
    }
    for (unsigned suite = 0x1301; suite <= 0x1303; suite++) {
        struct pl_tls_rec *a = pl_tls_rec_new(suite, cs, ss, 5, 9);
        struct pl_tls_rec *b = pl_tls_rec_new(suite, ss, cs, 9, 5);
        CHECK(a && b);
        int sv[2];
        CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) == 0);
        enum {
            N = 300000
        };
        static unsigned char src[N], dst[N];
        for (size_t i = 0; i < N; i++)
            src[i] = (unsigned char)(i * 7 + suite);
        size_t sent = 0, got = 0;
        int rounds = 0;
        while (got < N && rounds++ < 100000) {
            if (sent < N) {
                ssize_t w = pl_tls_rec_write(b, sv[1], src + sent, N - sent);
                if (w > 0)
                    sent += (size_t)w;
                else
                    CHECK_INT(errno, EAGAIN);
            } else {
                pl_tls_rec_flush(b, sv[1]);
            }
            ssize_t k = pl_tls_rec_read(a, sv[0], dst + got, 1000 + got % 5000);
            if (k > 0)
                got += (size_t)k;
            else
                CHECK_INT(errno, EAGAIN);
        }
        CHECK_INT(got, N);
        CHECK(memcmp(src, dst, N) == 0);
        pl_tls_rec_free(a);
        pl_tls_rec_free(b);
        close(sv[0]);
        close(sv[1]);
    }
}
