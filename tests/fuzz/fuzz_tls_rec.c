/*
 * fuzz_tls_rec.c - libFuzzer target for the TLS 1.3 record reader
 * (src/core/tls_rec.c) of a connection handed over from OpenSSL.
 *
 * A fuzzer cannot forge AEAD tags, so the input describes what a client
 * holding the keys sends, and this target seals it with the client's
 * side of fixed secrets (suite chosen by byte 0: 0x1301..0x1303):
 *   byte 1     seeds how much each read asks for (1 .. 20000 bytes)
 *   then pieces: kind, length (2 bytes, big-endian, capped by what is
 *   left), bytes:
 *     kind 0      the bytes go to the socket as they are (garbage,
 *                 truncated or unprotected records)
 *     kind 1..255 a sealed record of inner content type kind - 1 (so
 *                 application data, handshake such as KeyUpdate,
 *                 alerts, types that are not allowed, and 0, which the
 *                 reader takes for padding), padded with
 *                 (kind * 7) % 64 zero bytes; a well-formed KeyUpdate
 *                 renews the sender's key as a real client would
 * The server's reader reads everything after each piece.  Invariants
 * (abort() on violation):
 * - the plaintext handed out is exactly the application data sealed, in
 *   order, as long as the reader has not failed or ended;
 * - a read returns at most what was asked; after a failure (-1 with
 *   an errno other than EAGAIN) or the end (0) every read says the
 *   same again;
 * - LeakSanitizer checks the heap at exit (the reader frees what it
 *   held for a partial record).
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "buf.h"
#include "tls_rec.h"

static void die(const char *what)
{
    fprintf(stderr, "fuzz_tls_rec: invariant violated: %s\n", what);
    abort();
}

struct state {
    struct pl_tls_rec *srv;
    int fd[2];
    struct pl_buf want;  /* application data sealed, not read yet */
    int ended;           /* 0 or -1 returned once */
    int end_rc, end_err; /* what it was */
    uint32_t seed;
};

static size_t next_want(struct state *st)
{
    st->seed = st->seed * 1103515245u + 12345u;
    return 1 + (st->seed >> 8) % 20000;
}

static void drain(struct state *st)
{
    static char got[20000];
    for (int i = 0; i < 100000; i++) {
        size_t want = next_want(st);
        ssize_t n = pl_tls_rec_read(st->srv, st->fd[0], got, want);
        if (n < 0 && errno == EAGAIN) {
            if (st->ended)
                die("EAGAIN after the end");
            return;
        }
        if (n > (ssize_t)want)
            die("more than asked");
        if (n <= 0) {
            if (st->ended &&
                (n != st->end_rc || (n < 0 && errno != st->end_err)))
                die("the end said differently");
            st->ended = 1;
            st->end_rc = (int)n;
            st->end_err = n < 0 ? errno : 0;
            return;
        }
        if (st->ended)
            die("data after the end");
        struct pl_str w = pl_buf_str(&st->want);
        if ((size_t)n > w.len || memcmp(w.p, got, (size_t)n) != 0)
            die("plaintext differs from what was sealed");
        pl_buf_consume(&st->want, (size_t)n);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    unsigned suite = 0x1301 + data[0] % 3;
    unsigned char cs[48], ss[48];
    for (int i = 0; i < 48; i++) {
        cs[i] = (unsigned char)(i * 3 + 1);
        ss[i] = (unsigned char)(i * 5 + 2);
    }
    struct state st = {0};
    st.seed = data[1];
    st.srv = pl_tls_rec_new(suite, cs, ss, 0, 0);
    struct pl_tls_rec *cl = pl_tls_rec_new(suite, ss, cs, 0, 0);
    if (!st.srv || !cl ||
        socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, st.fd) != 0)
        die("set-up");
    int big = 1 << 20;
    setsockopt(st.fd[1], SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
    static unsigned char rec[70000];
    size_t at = 2;
    while (at + 3 <= size) {
        int kind = data[at];
        size_t len = (size_t)data[at + 1] << 8 | data[at + 2];
        at += 3;
        if (len > size - at)
            len = size - at;
        const unsigned char *p = data + at;
        at += len;
        const void *out = p;
        size_t n = len;
        if (kind) {
            int type = kind - 1;
            if (len > 20000)
                len = 20000;
            n = pl_tls_rec_seal_raw(cl, type, p, len, (size_t)(kind * 7) % 64,
                                    rec);
            if (!n)
                die("seal");
            out = rec;
            /* What the reader finds (RFC 8446 §5.4): the content type is
             * the last byte that is not zero, so a type 0 record means
             * whatever its content ends with. */
            size_t m = len;
            int etype = type;
            if (!type) {
                while (m && !p[m - 1])
                    m--;
                etype = m ? p[--m] : -1;
            }
            if (etype == 23 && !st.ended &&
                len + 1 + (size_t)(kind * 7) % 64 <= 16385)
                pl_buf_append(&st.want, p, m);
        }
        if (write(st.fd[1], out, n) != (ssize_t)n)
            die("socketpair write");
        drain(&st);
    }
    shutdown(st.fd[1], SHUT_WR);
    drain(&st);
    pl_tls_rec_free(st.srv);
    pl_tls_rec_free(cl);
    pl_buf_reset(&st.want);
    close(st.fd[0]);
    close(st.fd[1]);
    return 0;
}
