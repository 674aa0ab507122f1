/*
 * test_conn.c - the core's connection deadlines (conn.h) on a bare
 * connection (one end of a socketpair, no listener): a protocol's own idle
 * policy (pl_conn_set_idle) postponed by reads and, only with
 * count_writes, by writes; a protocol that leaves the connection open is
 * asked again a second later; without a timeout handler the core closes.
 * Also the listeners entries' own handshake_timeout and idle_timeout
 * (config.c), with the limits group's bounds.
 *
 * The handshake deadline needs a listener: test_stream.c covers it through
 * c2s (stream_handshake_timeout, stream_resume_established).
 *
 * And the close that cannot lose the last words (pl_loop_close_lingering),
 * and the read rate's pause under TLS that cannot strand them either.
 *
 * Extending: a new deadline case is a function that opens a connection
 * with open_conn() and runs the loop with run_until().
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <sys/socket.h>
#include <unistd.h>

#include "alloc.h"
#include "config.h"
#include "conn.h"
#include "error.h"
#include "loop.h"
#include "tls.h"
#include "unit.h"

static struct {
    struct pl_loop *loop;
    int peer;       /* the other end of the socketpair */
    int fired[3];   /* timeouts received, by enum pl_conn_timeout */
    uint64_t at[2]; /* loop time of the first two */
    int leave_open; /* timeouts to leave open before closing */
    int closed;     /* ops->closed ran */
} T;

static void t_data(struct pl_conn *c, const char *p, size_t n)
{
    (void)c;
    (void)p;
    (void)n;
}

static void t_closed(struct pl_conn *c)
{
    (void)c;
    T.closed++;
    pl_loop_stop(T.loop);
}

static void t_timeout(struct pl_conn *c, int which)
{
    int n = T.fired[1] + T.fired[2];
    if (n < 2)
        T.at[n] = pl_loop_now(T.loop);
    T.fired[which]++;
    if (T.leave_open > 0)
        T.leave_open--;
    else
        pl_conn_close(c);
    pl_loop_stop(T.loop);
}

static const struct pl_conn_ops ops = {
    .data = t_data,
    .closed = t_closed,
    .timeout = t_timeout,
};

static const struct pl_conn_ops ops_no_timeout = {
    .data = t_data,
    .closed = t_closed,
};

static void on_guard(struct pl_timer *t)
{
    pl_loop_stop(t->loop);
}

/* Runs loop for ms (a guard timer stops it). */
static void run_for(struct pl_loop *loop, unsigned ms)
{
    struct pl_timer guard;
    pl_timer_init(&guard, on_guard, NULL);
    pl_timer_start(loop, &guard, ms);
    pl_loop_run(loop);
    pl_timer_stop(&guard);
}

/* Runs the loop until *flag is at least want, or for ms at most. */
static void run_until(const int *flag, int want, unsigned ms)
{
    struct pl_timer guard;
    pl_timer_init(&guard, on_guard, NULL);
    pl_timer_start(T.loop, &guard, ms);
    uint64_t end = pl_loop_now(T.loop) + ms;
    while ((!flag || *flag < want) && pl_loop_now(T.loop) < end &&
           pl_timer_active(&guard))
        pl_loop_run(T.loop);
    pl_timer_stop(&guard);
}

static struct pl_conn *open_conn(const struct pl_conn_ops *o, uint32_t idle,
                                 int count_writes)
{
    memset(&T, 0, sizeof(T));
    CHECK_INT(pl_loop_new(&T.loop), PL_OK);
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0,
                     sv) == 0);
    T.peer = sv[1];
    struct pl_conn_limits lim = {1 << 20, 1 << 20, 1 << 20};
    struct pl_conn *c = pl_conn_new(T.loop, sv[0], o, NULL, &lim);
    pl_conn_set_idle(c, idle, count_writes);
    pl_conn_start(c, NULL);
    return c;
}

static void close_all(void)
{
    run_until(&T.closed, 1, 2000);
    CHECK_INT(T.closed, 1);
    close(T.peer);
    pl_loop_free(T.loop);
}

/* A byte read postpones the idle deadline by the whole idle time. */
void test_conn_idle_read(void)
{
    struct pl_conn *c = open_conn(&ops, 150, 0);
    uint64_t t0 = pl_loop_now(T.loop);
    run_until(NULL, 0, 80);
    CHECK_INT(T.fired[PL_CONN_TIMEOUT_IDLE], 0);
    CHECK(write(T.peer, "x", 1) == 1);
    run_until(NULL, 0, 20); /* the connection reads it */
    uint64_t read_at = c->last_read_ms;
    CHECK(read_at >= t0 + 80);
    run_until(&T.fired[PL_CONN_TIMEOUT_IDLE], 1, 2000);
    CHECK_INT(T.fired[PL_CONN_TIMEOUT_IDLE], 1);
    CHECK_INT(T.fired[PL_CONN_TIMEOUT_HANDSHAKE], 0);
    CHECK(T.at[0] >= read_at + 150);
    close_all();
}

/* Writes do not count as activity unless the protocol says so. */
void test_conn_idle_writes(void)
{
    for (int count = 0; count < 2; count++) {
        struct pl_conn *c = open_conn(&ops, 150, count);
        uint64_t t0 = pl_loop_now(T.loop);
        run_until(NULL, 0, 80);
        pl_conn_write(c, "y", 1);
        run_until(NULL, 0, 20); /* flushed */
        uint64_t wrote_at = c->last_write_ms;
        CHECK(wrote_at >= t0 + 80);
        run_until(&T.fired[PL_CONN_TIMEOUT_IDLE], 1, 2000);
        CHECK_INT(T.fired[PL_CONN_TIMEOUT_IDLE], 1);
        if (count)
            CHECK(T.at[0] >= wrote_at + 150);
        else
            CHECK(T.at[0] >= t0 + 150 && T.at[0] < wrote_at + 150);
        close_all();
    }
}

/* A protocol that leaves the connection open is asked again a second
 * later (it waits for something); no idle policy: no deadline at all. */
void test_conn_timeout_again(void)
{
    open_conn(&ops, 50, 0);
    T.leave_open = 1;
    run_until(&T.fired[PL_CONN_TIMEOUT_IDLE], 2, 4000);
    CHECK_INT(T.fired[PL_CONN_TIMEOUT_IDLE], 2);
    CHECK(T.at[1] >= T.at[0] + 1000);
    close_all();

    struct pl_conn *c = open_conn(&ops, 0, 0);
    run_until(NULL, 0, 300);
    CHECK_INT(T.fired[PL_CONN_TIMEOUT_IDLE], 0);
    CHECK(!pl_timer_active(&c->timer));
    pl_conn_close(c);
    close_all();
}

/* Without a timeout handler the core closes the connection itself. */
void test_conn_timeout_default(void)
{
    struct pl_conn *c = open_conn(&ops_no_timeout, 50, 0);
    (void)c;
    run_until(&T.closed, 1, 2000);
    CHECK_INT(T.closed, 1);
    CHECK_INT(T.fired[PL_CONN_TIMEOUT_IDLE], 0);
    char b[8];
    CHECK(read(T.peer, b, sizeof(b)) == 0); /* the peer sees the end */
    close(T.peer);
    pl_loop_free(T.loop);
}

/* listeners entries: their own deadlines, within the limits' bounds. */
void test_conn_listener_timeouts(void)
{
    static const struct {
        const char *entry;
        long handshake, idle; /* -1: the limits group's */
        const char *err;      /* in the error, or NULL if accepted */
    } t[] = {
        {"{ protocol = \"c2s\"; port = 5222; }", -1, -1, NULL},
        {"{ protocol = \"c2s\"; port = 5222; handshake_timeout = 1; }", 1, -1,
         NULL},
        {"{ protocol = \"c2s\"; port = 5222; idle_timeout = 60; "
         "handshake_timeout = 3600; }",
         3600, 60, NULL},
        {"{ protocol = \"c2s\"; port = 5222; handshake_timeout = 0; }", 0, 0,
         "handshake_timeout must be between 1 and 3600"},
        {"{ protocol = \"c2s\"; port = 5222; idle_timeout = 9; }", 0, 0,
         "idle_timeout must be between 10 and 86400"},
        {"{ protocol = \"c2s\"; port = 5222; idle_timeout = \"60\"; }", 0, 0,
         "idle_timeout must be an integer"},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        char set[300], err[512] = "";
        snprintf(set, sizeof(set), "listeners=(%s)", t[i].entry);
        char *sets[] = {set};
        struct pl_config *c = NULL;
        int rc = pl_config_load(NULL, sets, 1, &c, err, sizeof(err));
        if (t[i].err) {
            CHECK(rc != PL_OK);
            if (!strstr(err, t[i].err))
                fprintf(stderr, "  %s: got \"%s\"\n", t[i].entry, err);
            CHECK(strstr(err, t[i].err) != NULL);
        } else {
            CHECK_INT(rc, PL_OK);
            if (c && c->nlisteners == 1) {
                CHECK_INT(c->listeners[0].handshake_timeout, t[i].handshake);
                CHECK_INT(c->listeners[0].idle_timeout, t[i].idle);
            }
        }
        pl_config_free(c);
    }
}

/* ---- pl_conn_hold, pl_conn_sendfile, the drain callback ---- */

static struct {
    char got[64]; /* bytes handed to ops->data */
    size_t n;     /* how many */
    int drains;   /* drain callbacks */
} H;

static void h_data(struct pl_conn *c, const char *p, size_t n)
{
    (void)c;
    for (size_t i = 0; i < n && H.n < sizeof(H.got) - 1; i++)
        H.got[H.n++] = p[i];
    pl_loop_stop(T.loop);
}

static void h_drain(struct pl_conn *c)
{
    (void)c;
    H.drains++;
}

static const struct pl_conn_ops hold_ops = {
    .data = h_data,
    .closed = t_closed,
};

/* Held: nothing is read, the bytes wait; resumed: they come. */
void test_conn_hold(void)
{
    memset(&H, 0, sizeof(H));
    struct pl_conn *c = open_conn(&hold_ops, 0, 0);
    pl_conn_hold(c, 1);
    CHECK(write(T.peer, "abc", 3) == 3);
    run_until(NULL, 0, 100);
    CHECK_INT(H.n, 0);
    pl_conn_hold(c, 0);
    run_until(NULL, 0, 100);
    CHECK_INT(H.n, 3);
    CHECK(memcmp(H.got, "abc", 3) == 0);
    /* A held connection still notices the peer going. */
    pl_conn_hold(c, 1);
    close(T.peer);
    T.peer = -1;
    run_until(&T.closed, 1, 2000);
    CHECK_INT(T.closed, 1);
    pl_loop_free(T.loop);
}

/* A file after queued bytes, larger than the socket buffer: it all
 * arrives in order, and the drain callback says when. */
void test_conn_sendfile(void)
{
    memset(&H, 0, sizeof(H));
    char path[] = "/tmp/parley-test-sendfile-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    unlink(path);
    enum {
        SIZE = 300000
    };
    static char data[SIZE];
    for (int i = 0; i < SIZE; i++)
        data[i] = (char)('a' + i % 26);
    CHECK(write(fd, data, SIZE) == SIZE);
    struct pl_conn *c = open_conn(&hold_ops, 0, 0);
    pl_conn_set_drain(c, h_drain);
    pl_conn_write(c, "HEAD", 4);
    CHECK_INT(pl_conn_sendfile(c, fd, 10, SIZE - 10), PL_OK);
    CHECK_INT(pl_conn_sendfile(c, fd, 0, 1), PL_EAGAIN);
    CHECK_INT(pl_conn_pending(c), 4 + SIZE - 10);
    pl_conn_write(c, "TAIL", 4);
    static char got[SIZE + 16];
    size_t n = 0;
    for (int i = 0; i < 2000 && n < 4 + SIZE - 10 + 4; i++) {
        run_until(NULL, 0, 2);
        ssize_t k = read(T.peer, got + n, sizeof(got) - n);
        if (k > 0)
            n += (size_t)k;
    }
    CHECK_INT(n, 4 + SIZE - 10 + 4);
    CHECK(memcmp(got, "HEAD", 4) == 0);
    CHECK(memcmp(got + 4, data + 10, SIZE - 10) == 0);
    CHECK(memcmp(got + 4 + SIZE - 10, "TAIL", 4) == 0);
    run_until(NULL, 0, 10);
    CHECK(H.drains >= 1);
    CHECK_INT(pl_conn_pending(c), 0);
    /* A file shorter than announced ends the connection. */
    CHECK_INT(pl_conn_sendfile(c, fd, SIZE - 5, 10), PL_OK);
    for (int i = 0; i < 1000 && !T.closed; i++) {
        run_until(NULL, 0, 2);
        char sink[64];
        (void)!read(T.peer, sink, sizeof(sink));
    }
    CHECK_INT(T.closed, 1);
    close(fd);
    close(T.peer);
    pl_loop_free(T.loop);
}

/* Two ends of a TCP connection over loopback (a reset is TCP's). */
static void tcp_pair(int *ours, int *theirs)
{
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    CHECK(bind(l, (struct sockaddr *)&a, sizeof(a)) == 0);
    CHECK(listen(l, 1) == 0);
    CHECK(getsockname(l, (struct sockaddr *)&a, &len) == 0);
    *theirs = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(connect(*theirs, (struct sockaddr *)&a, sizeof(a)) == 0);
    *ours = accept4(l, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    CHECK(*ours >= 0);
    close(l);
}

/* A fresh loop in T and a started connection on our end of a TCP pair. */
static struct pl_conn *tcp_conn(int *theirs)
{
    memset(&T, 0, sizeof(T));
    CHECK_INT(pl_loop_new(&T.loop), PL_OK);
    int ours;
    tcp_pair(&ours, theirs);
    struct pl_conn_limits lim = {1 << 20, 1 << 20, 1 << 20};
    struct pl_conn *c = pl_conn_new(T.loop, ours, &ops, NULL, &lim);
    pl_conn_start(c, NULL);
    return c;
}

/* Closes c after its last words, "</stream:stream>": the protocol hears
 * of it, `lingering` sockets wait, and the peer reads the words and then
 * the end (a FIN, not a reset). */
static void close_after_last_words(struct pl_conn *c, int theirs, int lingering)
{
    pl_conn_write(c, "</stream:stream>", 16);
    pl_conn_close(c);
    run_until(&T.closed, 1, 2000);
    CHECK_INT(T.closed, 1);
    CHECK_INT(pl_loop_lingering(T.loop), lingering);
    char b[64];
    CHECK(read(theirs, b, sizeof(b)) == 16);
    CHECK(read(theirs, b, sizeof(b)) == 0); /* the end, not a reset */
}

static int lingering_none(void)
{
    return pl_loop_lingering(T.loop) == 0;
}

/*
 * A connection closed with the peer's input unread (the peer was writing
 * when it was told to go) ends with a FIN, not a reset: the peer reads
 * the last words and then the end, and may still write meanwhile.  The
 * protocol hears of the close at once; the socket stays until the peer
 * closes too, or the linger time passed.
 */
void test_conn_close_lingers(void)
{
    int ours, theirs;
    char b[64];
    struct pl_conn *c = tcp_conn(&theirs);
    pl_conn_hold(c, 1); /* what the peer writes stays unread */
    CHECK(write(theirs, "<message/>", 10) == 10);
    run_until(NULL, 0, 20);
    close_after_last_words(c, theirs, 1);
    CHECK(write(theirs, "<r/>", 4) == 4); /* still read (and dropped) */
    run_until(NULL, 0, 20);
    CHECK(write(theirs, "<r/>", 4) == 4);
    close(theirs);
    for (int i = 0; i < 100 && !lingering_none(); i++)
        run_until(NULL, 0, 10);
    CHECK_INT(pl_loop_lingering(T.loop), 0);

    /* A peer that never closes: the socket goes after the linger time
     * (pl_loop_free closes what still lingers). */
    tcp_pair(&ours, &theirs);
    CHECK(write(theirs, "x", 1) == 1);
    struct pl_io unwatched;
    pl_io_init(&unwatched, ours, NULL, NULL);
    pl_loop_close_lingering(T.loop, &unwatched, 30);
    CHECK_INT(pl_loop_lingering(T.loop), 1);
    for (int i = 0; i < 100 && !lingering_none(); i++)
        run_until(NULL, 0, 10);
    CHECK_INT(pl_loop_lingering(T.loop), 0);
    CHECK(read(theirs, b, sizeof(b)) == 0);
    close(theirs);
    tcp_pair(&ours, &theirs);
    pl_io_init(&unwatched, ours, NULL, NULL);
    pl_loop_close_lingering(T.loop, &unwatched, 60000);
    pl_loop_free(T.loop);
    CHECK(read(theirs, b, sizeof(b)) == 0);
    close(theirs);
}

/*
 * A peer that closed its stream said its last words: over plain TCP the
 * close does not linger (no shutdown, no watch moved) and the peer still
 * reads everything, then the end (a FIN: nothing of ours was unread).
 */
void test_conn_close_peer_done(void)
{
    int theirs;
    struct pl_conn *c = tcp_conn(&theirs);
    pl_conn_peer_done(c);
    close_after_last_words(c, theirs, 0);
    close(theirs);
    pl_loop_free(T.loop);
}

/*
 * A listener's socket has TCP_NODELAY, so what it accepts has it without
 * a call of its own; pl_conn_accepted takes the peer's address from
 * accept4 instead of asking for it.
 */
static int accepted_fd = -1;
static struct sockaddr_storage accepted_addr;

static void on_accepted(struct pl_listener *l, int fd,
                        const struct sockaddr_storage *addr, void *data)
{
    (void)l;
    (void)data;
    accepted_fd = fd;
    accepted_addr = *addr;
    pl_loop_stop(T.loop);
}

void test_conn_accepted(void)
{
    memset(&T, 0, sizeof(T));
    CHECK_INT(pl_loop_new(&T.loop), PL_OK);
    struct pl_listener *l;
    CHECK_INT(pl_listener_open(T.loop, "127.0.0.1", 0, on_accepted, NULL, &l),
              PL_OK);
    struct sockaddr_in a;
    socklen_t len = sizeof(a);
    CHECK(getsockname(pl__listener_fd(l), (struct sockaddr *)&a, &len) == 0);
    int theirs = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(connect(theirs, (struct sockaddr *)&a, sizeof(a)) == 0);
    struct sockaddr_in mine;
    len = sizeof(mine);
    CHECK(getsockname(theirs, (struct sockaddr *)&mine, &len) == 0);
    run_until(NULL, 0, 2000);
    CHECK(accepted_fd >= 0);
    int nodelay = 0;
    len = sizeof(nodelay);
    CHECK(getsockopt(accepted_fd, IPPROTO_TCP, TCP_NODELAY, &nodelay, &len) ==
          0);
    CHECK_INT(nodelay, 1);
    struct pl_conn_limits lim = {1 << 20, 1 << 20, 1 << 20};
    struct pl_conn *c = pl_conn_accepted(T.loop, accepted_fd, &accepted_addr,
                                         &ops, NULL, &lim);
    CHECK_STR(c->ip, "127.0.0.1");
    CHECK_INT(c->port, ntohs(mine.sin_port));
    CHECK(c->is_loopback);
    pl_conn_start(c, NULL);
    pl_conn_write(c, "hi", 2);
    pl_conn_close(c);
    run_until(&T.closed, 1, 2000);
    char b[8];
    CHECK(read(theirs, b, sizeof(b)) == 2);
    close(theirs);
    pl_listener_close(l);
    pl_loop_free(T.loop);
}

/* Two watchers ready in one batch of events: the first one's handler
 * stops and frees the second (a node found dead while its connect
 * completes, src/cluster/link.c): the second's handler is not called. */
static struct pl_io *victim;
static int victim_calls, killer_calls;
static int kill_by_close; /* pl_io_close the victim (not ours to free) */

static void on_victim(struct pl_io *io, unsigned events)
{
    (void)io;
    (void)events;
    victim_calls++;
}

static void on_killer(struct pl_io *io, unsigned events)
{
    (void)events;
    killer_calls++;
    pl_io_stop(io);
    if (victim && kill_by_close) {
        pl_io_close(victim);
        victim = NULL;
    } else if (victim) {
        pl_io_stop(victim);
        pl_free(victim); /* the sanitizers see a later use */
        victim = NULL;
    }
}

/* pl_io_close voids the batch's events still to come, as pl_io_stop,
 * and leaves nothing registered: a new socket on the same number is
 * watched afresh and only its own events come. */
void test_loop_io_close(void)
{
    struct pl_loop *loop;
    CHECK_INT(pl_loop_new(&loop), PL_OK);
    for (int round = 0; round < 2; round++) {
        int a[2], b[2];
        CHECK(pipe(a) == 0 && pipe(b) == 0);
        CHECK(write(a[1], "x", 1) == 1 && write(b[1], "x", 1) == 1);
        struct pl_io closer, doomed;
        killer_calls = victim_calls = 0;
        pl_io_init(&closer, round ? b[0] : a[0], on_killer, NULL);
        pl_io_init(&doomed, round ? a[0] : b[0], on_victim, NULL);
        pl_io_set(loop, &closer, PL_IO_READ);
        pl_io_set(loop, &doomed, PL_IO_READ);
        victim = &doomed;
        kill_by_close = 1;
        int doomed_fd = doomed.fd;
        run_for(loop, 50);
        CHECK_INT(killer_calls, 1);
        CHECK(victim_calls <= 1);
        if (victim) /* the doomed one went first */
            pl_io_close(&doomed);
        victim = NULL;
        kill_by_close = 0;
        CHECK(fcntl(doomed_fd, F_GETFD) < 0); /* closed */
        /* The same number again, for a pipe of its own. */
        int c[2];
        CHECK(pipe(c) == 0);
        int fresh = c[0] == doomed_fd ? c[0] : dup2(c[0], doomed_fd);
        struct pl_io again;
        victim_calls = 0;
        pl_io_init(&again, fresh, on_victim, NULL);
        CHECK_INT(pl_io_set(loop, &again, PL_IO_READ), PL_OK);
        run_for(loop, 20);
        CHECK_INT(victim_calls, 0); /* nothing written to it yet */
        CHECK(write(c[1], "y", 1) == 1);
        run_for(loop, 50);
        CHECK(victim_calls >= 1);
        pl_io_close(&again);
        if (fresh != c[0])
            close(c[0]);
        close(c[1]);
        close(a[1]);
        close(b[1]);
        close(closer.fd);
    }
    pl_loop_free(loop);
}

void test_loop_stop_in_batch(void)
{
    struct pl_loop *loop;
    CHECK_INT(pl_loop_new(&loop), PL_OK);
    int a[2], b[2];
    CHECK(pipe(a) == 0 && pipe(b) == 0);
    CHECK(write(a[1], "x", 1) == 1 && write(b[1], "x", 1) == 1);
    /* Both orders: epoll's order within a batch is its own. */
    for (int round = 0; round < 2; round++) {
        struct pl_io killer;
        victim = pl_calloc(1, sizeof(*victim));
        victim_calls = killer_calls = 0;
        pl_io_init(&killer, round ? b[0] : a[0], on_killer, NULL);
        pl_io_init(victim, round ? a[0] : b[0], on_victim, NULL);
        pl_io_set(loop, &killer, PL_IO_READ);
        pl_io_set(loop, victim, PL_IO_READ);
        run_for(loop, 50);
        CHECK_INT(killer_calls, 1);
        /* Either the victim went first (called once, then freed) or it
         * was voided; never called after its free. */
        CHECK(victim_calls <= 1);
        if (victim) {
            pl_io_stop(victim);
            pl_free(victim);
            victim = NULL;
        }
    }
    close(a[0]);
    close(a[1]);
    close(b[0]);
    close(b[1]);
    pl_loop_free(loop);
}

/*
 * TLS decrypts a record whole and hands it out a part at a time: a read
 * rate pause that stops in the middle of one leaves the rest in OpenSSL's
 * buffer, where no socket event will ever announce it.  A client that
 * sends its last stanzas in one record and then waits for the answer (an
 * XEP-0198 <r/>) waited for ever.  Here the burst is 1 KiB of a 16,000
 * byte record and the peer sends nothing more: all of it must come.
 */
enum {
    TLS_RECORD = 16000
};

static struct {
    int fd;            /* the client's end, blocking */
    SSL_CTX *ctx;      /* client context */
    int ok;            /* handshake and write went through */
    size_t got;        /* bytes the server's conn was handed */
    volatile int stop; /* the client may close */
} L;

static void *tls_client(void *arg)
{
    (void)arg;
    SSL *ssl = SSL_new(L.ctx);
    SSL_set_fd(ssl, L.fd);
    static char rec[TLS_RECORD];
    memset(rec, 'r', sizeof(rec));
    if (SSL_connect(ssl) == 1 && SSL_write(ssl, rec, TLS_RECORD) == TLS_RECORD)
        L.ok = 1;
    while (!L.stop)
        usleep(1000);
    SSL_free(ssl);
    return NULL;
}

static void l_data(struct pl_conn *c, const char *p, size_t n)
{
    (void)c;
    (void)p;
    L.got += n;
}

/* A self-signed host in a fresh directory, for the TLS tests. */
struct tls_files {
    char dir[32], cert[64], key[64];
};

static struct pl_tls_host *tls_host(struct tls_files *f)
{
    snprintf(f->dir, sizeof(f->dir), "/tmp/parley-test-tls-XXXXXX");
    CHECK(mkdtemp(f->dir) != NULL);
    snprintf(f->cert, sizeof(f->cert), "%s/c.pem", f->dir);
    snprintf(f->key, sizeof(f->key), "%s/k.pem", f->dir);
    struct pl_tls_host *h = NULL;
    CHECK_INT(pl_tls_ensure_selfsigned("localhost", f->cert, f->key), PL_OK);
    CHECK_INT(pl_tls_host_load("localhost", f->cert, f->key, &h), PL_OK);
    return h;
}

static void tls_host_free(struct pl_tls_host *h, struct tls_files *f)
{
    pl_tls_host_free(h);
    unlink(f->cert);
    unlink(f->key);
    rmdir(f->dir);
}

/* A loop in T and a socketpair: sv[0] non-blocking for the server's
 * conn, sv[1] blocking for the client thread (T.peer). */
static void tls_pair(int sv[2])
{
    CHECK_INT(pl_loop_new(&T.loop), PL_OK);
    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    CHECK(fcntl(sv[0], F_SETFL, O_NONBLOCK) == 0);
    T.peer = sv[1];
}

static const struct pl_conn_ops tls_ops = {
    .data = l_data,
    .closed = t_closed,
};

void test_conn_tls_rate_pause(void)
{
    struct tls_files f;
    struct pl_tls_host *h = tls_host(&f);
    memset(&T, 0, sizeof(T));
    memset(&L, 0, sizeof(L));
    int sv[2];
    tls_pair(sv);
    L.fd = sv[1];
    L.ctx = SSL_CTX_new(TLS_client_method());
    struct pl_conn_limits lim = {1 << 20, 65536, 1024};
    struct pl_conn *c = pl_conn_new(T.loop, sv[0], &tls_ops, NULL, &lim);
    pl_conn_start(c, h->ctx);
    pthread_t th;
    CHECK(pthread_create(&th, NULL, tls_client, NULL) == 0);
    for (int i = 0; i < 500 && L.got < TLS_RECORD; i++)
        run_until(NULL, 0, 10);
    L.stop = 1;
    pthread_join(th, NULL);
    CHECK_INT(L.ok, 1);
    CHECK_INT(L.got, TLS_RECORD);
    pl_conn_close(c);
    close_all();
    SSL_CTX_free(L.ctx);
    tls_host_free(h, &f);
}

/*
 * pl_conn_tls_handover with a real OpenSSL client, for each TLS 1.3
 * suite and for TLS 1.2 (which keeps OpenSSL): lines are answered
 * "ack:<line>"; after the first the server hands its records over, and
 * the client goes on as if nothing happened: more lines, a KeyUpdate it
 * requests (answered by ours), 100 KB each way, then close_notify.
 */
enum {
    BIG = 100000
};

static struct {
    int fd;
    SSL_CTX *ctx;
    int steps;      /* client steps that went through */
    int rec_seen;   /* lines the server read after the hand-over */
    int lines;      /* lines the server read */
    size_t big_got; /* bytes of the big line */
    char line[64];  /* the line being read (short ones) */
    size_t line_len;
    SSL_SESSION *sess; /* in: to resume; out: the session to resume next */
    int reused;        /* the handshake resumed HO.sess */
} HO;

static int client_line(SSL *ssl, const char *want, size_t n)
{
    static char got[BIG + 2];
    size_t have = 0;
    while (have < n) {
        int r = SSL_read(ssl, got + have, (int)(n - have));
        if (r <= 0)
            return 0;
        have += (size_t)r;
    }
    return memcmp(got, want, n) == 0;
}

static void *handover_client(void *arg)
{
    (void)arg;
    SSL *ssl = SSL_new(HO.ctx);
    SSL_set_fd(ssl, HO.fd);
    if (HO.sess)
        SSL_set_session(ssl, HO.sess);
    static char big[BIG + 1], bigans[BIG + 1];
    memset(big, 'b', BIG);
    big[BIG] = '\n';
    memset(bigans, 'B', BIG);
    bigans[BIG] = '\n';
    if (SSL_connect(ssl) != 1)
        goto out;
    HO.reused = SSL_session_reused(ssl);
    HO.steps++;
    if (SSL_write(ssl, "one\n", 4) != 4 || !client_line(ssl, "ack:one\n", 8))
        goto out;
    HO.steps++;
    if (SSL_write(ssl, "two\n", 4) != 4 || !client_line(ssl, "ack:two\n", 8))
        goto out;
    HO.steps++;
    if (SSL_version(ssl) == TLS1_3_VERSION &&
        SSL_key_update(ssl, SSL_KEY_UPDATE_REQUESTED) != 1)
        goto out;
    if (SSL_write(ssl, "three\n", 6) != 6 ||
        !client_line(ssl, "ack:three\n", 10))
        goto out;
    HO.steps++;
    if (SSL_write(ssl, "four\n", 5) != 5 || !client_line(ssl, "ack:four\n", 9))
        goto out;
    HO.steps++;
    if (SSL_write(ssl, big, BIG + 1) != BIG + 1 ||
        !client_line(ssl, bigans, BIG + 1))
        goto out;
    HO.steps++;
    SSL_shutdown(ssl); /* close_notify */
    char b;
    if (SSL_read(ssl, &b, 1) == 0 &&
        SSL_get_error(ssl, 0) == SSL_ERROR_ZERO_RETURN)
        HO.steps++; /* the server's close_notify came back */
out:
    if (HO.sess)
        SSL_SESSION_free(HO.sess);
    /* A TLS 1.3 ticket read with the answers, if the server sent one. */
    HO.sess = SSL_get1_session(ssl);
    if (HO.sess && !SSL_SESSION_is_resumable(HO.sess)) {
        SSL_SESSION_free(HO.sess);
        HO.sess = NULL;
    }
    SSL_free(ssl);
    return NULL;
}

static void ho_data(struct pl_conn *c, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] == 'b') {
            HO.big_got++;
            continue;
        }
        if (p[i] != '\n') {
            if (HO.line_len < sizeof(HO.line) - 1)
                HO.line[HO.line_len++] = p[i];
            continue;
        }
        HO.lines++;
        if (c->rec)
            HO.rec_seen++;
        if (HO.big_got) {
            static char ans[BIG + 1];
            memset(ans, 'B', BIG);
            ans[BIG] = '\n';
            pl_conn_write(c, ans, BIG + 1);
            HO.big_got = 0;
            continue;
        }
        char out[80];
        int k = snprintf(out, sizeof(out), "ack:%.*s\n", (int)HO.line_len,
                         HO.line);
        pl_conn_write(c, out, (size_t)k);
        HO.line_len = 0;
        if (HO.lines == 1)
            pl_conn_tls_handover(c);
    }
}

static const struct pl_conn_ops handover_ops = {
    .data = ho_data,
    .closed = t_closed,
};

/* One connection through the hand-over; *sess: the session to resume
 * (NULL: a full handshake), and the one to resume next. */
static void handover_once(struct pl_tls_host *h, const char *suites, int tls12,
                          int want_rec, SSL_SESSION **sess)
{
    memset(&T, 0, sizeof(T));
    memset(&HO, 0, sizeof(HO));
    HO.sess = *sess;
    int sv[2];
    tls_pair(sv);
    HO.fd = sv[1];
    HO.ctx = SSL_CTX_new(TLS_client_method());
    if (suites)
        SSL_CTX_set_ciphersuites(HO.ctx, suites);
    if (tls12)
        SSL_CTX_set_max_proto_version(HO.ctx, TLS1_2_VERSION);
    struct pl_conn_limits lim = {1 << 20, 1 << 20, 1 << 20};
    struct pl_conn *c = pl_conn_new(T.loop, sv[0], &handover_ops, NULL, &lim);
    pl_conn_start(c, h->ctx);
    pthread_t th;
    CHECK(pthread_create(&th, NULL, handover_client, NULL) == 0);
    run_until(&T.closed, 1, 20000);
    pthread_join(th, NULL);
    CHECK_INT(HO.steps, 7);
    CHECK_INT(HO.lines, 5);
    CHECK_INT(HO.rec_seen, want_rec ? 4 : 0);
    CHECK_INT(T.closed, 1);
    close(T.peer);
    pl_loop_free(T.loop);
    SSL_CTX_free(HO.ctx);
    *sess = HO.sess;
}

static void handover_with(const char *suites, int tls12, int want_rec)
{
    struct tls_files f;
    struct pl_tls_host *h = tls_host(&f);
    SSL_SESSION *sess = NULL;
    handover_once(h, suites, tls12, want_rec, &sess);
    CHECK_INT(HO.reused, 0);
    if (sess)
        SSL_SESSION_free(sess);
    tls_host_free(h, &f);
}

void test_conn_tls_handover(void)
{
    handover_with("TLS_AES_128_GCM_SHA256", 0, 1);
    handover_with("TLS_AES_256_GCM_SHA384", 0, 1);
    handover_with("TLS_CHACHA20_POLY1305_SHA256", 0, 1);
    handover_with(NULL, 1, 0); /* TLS 1.2 keeps OpenSSL */
}

/*
 * After a full handshake the server sends one TLS 1.3 ticket
 * (server.tls_tickets, default 1): the client's next connection resumes
 * with it (a PSK handshake, no certificate) and the hand-over works the
 * same after it; each resumption brings a ticket for the next.  With no
 * tickets the client has nothing to resume.
 */
void test_conn_tls_resume(void)
{
    struct tls_files f;
    struct pl_tls_host *h = tls_host(&f);
    SSL_SESSION *sess = NULL;
    handover_once(h, NULL, 0, 1, &sess);
    CHECK_INT(HO.reused, 0);
    CHECK(sess != NULL);
    for (int i = 0; i < 2; i++) {
        handover_once(h, NULL, 0, 1, &sess);
        CHECK_INT(HO.reused, 1);
        CHECK(sess != NULL);
    }
    if (sess)
        SSL_SESSION_free(sess);
    sess = NULL;
    SSL_CTX_set_num_tickets(h->ctx, 0);
    handover_once(h, NULL, 0, 1, &sess);
    CHECK(sess == NULL);
    tls_host_free(h, &f);
}
