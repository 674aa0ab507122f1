/*
 * conn.c - connections and listeners; see conn.h.
 *
 * The connection's timer serves, one at a time: the read rate limit's
 * pause (on_resume), the bounded flush before a close (on_linger), and
 * otherwise the deadlines (on_deadline, armed by watch()).
 */
#include "conn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <stdio.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <unistd.h>

#include "alloc.h"
#include "error.h"
#include "log.h"
#include "listen.h"
#include "stats.h"
#include "tls_rec.h"

#define READ_CHUNK 65536
#define CLOSE_LINGER_MS 3000
#define KEEP_OUT 16384       /* output buffer kept between flushes */
#define FILE_PIECE 16384     /* file bytes read per piece under TLS */
#define FLUSH_MAX (1u << 20) /* bytes written per flush: others' turn */

static void on_io(struct pl_io *io, unsigned events);
static void flush(struct pl_conn *c);
static void handshake(struct pl_conn *c);
static void watch(struct pl_conn *c, uint64_t at_least);
static void update_interest(struct pl_conn *c);

/* ---- paces (pl_pace_new): a shared budget of file bytes per second ---- */

#define PACE_WAIT (-2)          /* file_piece: not this connection's turn yet */
#define PACE_SLICE (256 * 1024) /* a turn at least: fewer turns, same pace */

struct pl_pace {
    struct pl_loop *loop;
    uint64_t rate;               /* bytes per second, 0: no limit */
    double tokens;               /* bytes that may go now */
    uint64_t at_ms;              /* loop clock of the last refill */
    struct pl_conn *head, *tail; /* waiting for a turn, in order */
    struct pl_timer timer;       /* the next turn */
    unsigned refs;               /* connections sending under it, +1 */
};

static size_t pace_slice(const struct pl_pace *p)
{
    uint64_t s = p->rate / 1000;
    return s < PACE_SLICE ? PACE_SLICE : (size_t)s;
}

static void pace_refill(struct pl_pace *p)
{
    uint64_t now = pl_loop_now(p->loop);
    if (now > p->at_ms)
        p->tokens += (double)p->rate * (double)(now - p->at_ms) / 1000.0;
    p->at_ms = now;
    /* At most a tenth of a second's worth saved up (two slices at
     * least): a late timer costs no throughput, an idle pace no burst. */
    double cap = (double)p->rate / 10;
    if (cap < 2.0 * (double)pace_slice(p))
        cap = 2.0 * (double)pace_slice(p);
    if (p->tokens > cap)
        p->tokens = cap;
}

static void pace_unref(struct pl_pace *p)
{
    if (--p->refs == 0) {
        pl_timer_stop(&p->timer);
        pl_free(p);
    }
}

static void pace_unlink(struct pl_conn *c)
{
    struct pl_pace *p = c->sf_pace;
    if (!c->pace_wait)
        return;
    if (c->pace_prev)
        c->pace_prev->pace_next = c->pace_next;
    else
        p->head = c->pace_next;
    if (c->pace_next)
        c->pace_next->pace_prev = c->pace_prev;
    else
        p->tail = c->pace_prev;
    c->pace_next = c->pace_prev = NULL;
    c->pace_wait = 0;
}

/* The file is sent, or the connection is gone: it leaves its pace. */
static void pace_leave(struct pl_conn *c)
{
    struct pl_pace *p = c->sf_pace;
    if (!p)
        return;
    pace_unlink(c);
    c->pace_turn = 0;
    c->sf_pace = NULL;
    pace_unref(p);
}

/* What the first in line takes in its turn: a slice, or what is left of
 * its file when that is less (a small file does not wait for a slice). */
static double pace_need(const struct pl_pace *p)
{
    double want = (double)pace_slice(p);
    if ((double)p->head->sf_left < want)
        want = (double)p->head->sf_left;
    return want < 1 ? 1 : want;
}

static void pace_arm(struct pl_pace *p)
{
    if (!p->head || pl_timer_active(&p->timer))
        return;
    double need = pace_need(p) - p->tokens;
    uint64_t ms = need > 0 ? (uint64_t)(need * 1000.0 / (double)p->rate) : 0;
    pl_timer_start(p->loop, &p->timer, ms ? ms : 1);
}

static void pace_enqueue(struct pl_conn *c)
{
    struct pl_pace *p = c->sf_pace;
    c->pace_wait = 1;
    c->pace_prev = p->tail;
    c->pace_next = NULL;
    if (p->tail)
        p->tail->pace_next = c;
    else
        p->head = c;
    p->tail = c;
    update_interest(c); /* no writes watched until its turn */
    pace_arm(p);
}

/* Whether c may send file bytes now, and at most how many (*cap). */
static int pace_take(struct pl_conn *c, size_t *cap)
{
    struct pl_pace *p = c->sf_pace;
    if (!p || !p->rate)
        return 1;
    if (c->pace_wait)
        return 0;
    pace_refill(p);
    if (p->tokens < 1 || (p->head && !c->pace_turn)) {
        pace_enqueue(c);
        return 0;
    }
    c->pace_turn = 0;
    size_t s = pace_slice(p);
    if ((double)s > p->tokens)
        s = (size_t)p->tokens;
    if (*cap > s)
        *cap = s;
    return 1;
}

static void pace_spent(struct pl_conn *c, size_t n)
{
    if (c->sf_pace && c->sf_pace->rate)
        c->sf_pace->tokens -= (double)n;
}

/* Turns for the waiting connections, in order, while the budget lasts. */
static void on_pace(struct pl_timer *t)
{
    struct pl_pace *p = t->data;
    p->refs++;
    pace_refill(p);
    while (p->head && (!p->rate || p->tokens >= pace_need(p))) {
        struct pl_conn *c = p->head;
        pace_unlink(c);
        c->pace_turn = 1;
        flush(c); /* may queue c again, at the tail */
    }
    pace_arm(p);
    pace_unref(p);
}

struct pl_pace *pl_pace_new(struct pl_loop *loop, uint64_t rate)
{
    struct pl_pace *p = pl_calloc(1, sizeof(*p));
    p->loop = loop;
    p->rate = rate;
    p->at_ms = pl_loop_now(loop);
    p->refs = 1;
    pl_timer_init(&p->timer, on_pace, p);
    return p;
}

void pl_pace_set_rate(struct pl_pace *p, uint64_t rate)
{
    if (!p || p->rate == rate)
        return;
    pace_refill(p);
    p->rate = rate;
    pl_timer_stop(&p->timer);
    if (p->head)
        pl_timer_start(p->loop, &p->timer, 0);
}

void pl_pace_free(struct pl_pace *p)
{
    if (!p)
        return;
    pl_pace_set_rate(p, 0); /* the waiting ones finish unpaced */
    pace_unref(p);
}

/* c->ip, c->port and c->is_loopback from c->addr. */
static void set_peer(struct pl_conn *c)
{
    if (c->addr.ss_family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)&c->addr;
        inet_ntop(AF_INET, &a->sin_addr, c->ip, sizeof(c->ip));
        c->port = ntohs(a->sin_port);
        c->is_loopback = (ntohl(a->sin_addr.s_addr) >> 24) == 127;
    } else if (c->addr.ss_family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&c->addr;
        inet_ntop(AF_INET6, &a->sin6_addr, c->ip, sizeof(c->ip));
        c->port = ntohs(a->sin6_port);
        c->is_loopback = IN6_IS_ADDR_LOOPBACK(&a->sin6_addr) ||
                         (IN6_IS_ADDR_V4MAPPED(&a->sin6_addr) &&
                          a->sin6_addr.s6_addr[12] == 127);
    } else if (c->addr.ss_family == AF_UNIX) {
        /* A local socket (a socketpair in tests): no address, same host. */
        snprintf(c->ip, sizeof(c->ip), "local");
        c->is_loopback = 1;
    }
}

static struct pl_conn *conn_init(struct pl_loop *loop, int fd,
                                 const struct pl_conn_ops *ops, void *data,
                                 const struct pl_conn_limits *lim)
{
    struct pl_conn *c = pl_calloc(1, sizeof(*c));
    c->loop = loop;
    c->ops = ops;
    c->data = data;
    c->lim = *lim;
    c->tokens = (double)lim->read_burst;
    c->refill_ms = pl_loop_now(loop);
    c->last_read_ms = c->refill_ms;
    c->last_write_ms = c->refill_ms;
    c->opened_ms = c->refill_ms;
    pl_io_init(&c->io, fd, on_io, c);
    pl_timer_init(&c->timer, NULL, c);
    c->sf_fd = -1;
    return c;
}

struct pl_conn *pl_conn_new(struct pl_loop *loop, int fd,
                            const struct pl_conn_ops *ops, void *data,
                            const struct pl_conn_limits *lim)
{
    struct pl_conn *c = conn_init(loop, fd, ops, data, lim);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    socklen_t len = sizeof(c->addr);
    if (getpeername(fd, (struct sockaddr *)&c->addr, &len) == 0)
        set_peer(c);
    return c;
}

struct pl_conn *pl_conn_accepted(struct pl_loop *loop, int fd,
                                 const struct sockaddr_storage *peer,
                                 const struct pl_conn_ops *ops, void *data,
                                 const struct pl_conn_limits *lim)
{
    struct pl_conn *c = conn_init(loop, fd, ops, data, lim);
    c->addr = *peer;
    set_peer(c);
    return c;
}

void pl_conn_trim(struct pl_conn *c)
{
    if (!c->out.len)
        pl_buf_reset(&c->out);
}

void pl_conn_set_limits(struct pl_conn *c, const struct pl_conn_limits *l)
{
    c->lim = *l;
}

/* Deadlines. */

/* The deadlines in force for c, in ms (0: none). */
static void deadlines(const struct pl_conn *c, uint64_t *handshake_ms,
                      uint64_t *idle_ms)
{
    *handshake_ms = 0;
    *idle_ms = c->idle_set ? c->idle_ms : 0;
    if (c->listen)
        pl__listen_deadlines(c, handshake_ms, idle_ms);
    if (c->established)
        *handshake_ms = 0;
}

static uint64_t last_activity(const struct pl_conn *c)
{
    if (c->count_writes && c->last_write_ms > c->last_read_ms)
        return c->last_write_ms;
    return c->last_read_ms;
}

static void on_deadline(struct pl_timer *t)
{
    struct pl_conn *c = t->data;
    if (c->closing || c->paused)
        return;
    uint64_t hs, idle;
    deadlines(c, &hs, &idle);
    uint64_t now = pl_loop_now(c->loop);
    int waiting = 0;
    /* The handshake's first, then idleness: both may have passed. */
    int which[2] = {0, 0};
    if (hs && now - c->opened_ms >= hs)
        which[0] = PL_CONN_TIMEOUT_HANDSHAKE;
    if (idle && now - last_activity(c) >= idle)
        which[1] = PL_CONN_TIMEOUT_IDLE;
    for (int i = 0; i < 2; i++) {
        if (!which[i])
            continue;
        if (!c->ops->timeout) {
            pl_conn_close(c);
            return;
        }
        c->ops->timeout(c, which[i]);
        if (c->closing)
            return;
        waiting = 1; /* the protocol waits for something: ask again */
    }
    watch(c, waiting ? 1000 : 0);
}

/*
 * Arms the timer for the nearest deadline, at least at_least ms away; a
 * paused or closing connection's timer is busy (on_resume calls this
 * again, a closing one needs none).
 */
static void watch(struct pl_conn *c, uint64_t at_least)
{
    if (c->closing || c->paused)
        return;
    uint64_t hs, idle;
    deadlines(c, &hs, &idle);
    uint64_t now = pl_loop_now(c->loop), wait = UINT64_MAX;
    if (hs) {
        uint64_t due = c->opened_ms + hs;
        wait = due > now ? due - now : 0;
    }
    if (idle) {
        uint64_t due = last_activity(c) + idle;
        uint64_t w = due > now ? due - now : 0;
        if (w < wait)
            wait = w;
    }
    if (wait == UINT64_MAX) {
        pl_timer_stop(&c->timer);
        return;
    }
    c->timer.cb = on_deadline;
    pl_timer_start(c->loop, &c->timer, wait < at_least ? at_least : wait);
}

void pl_conn_established(struct pl_conn *c)
{
    /* Lazily: the timer, if set for the handshake, re-arms when it fires. */
    c->established = 1;
}

void pl_conn_set_idle(struct pl_conn *c, uint32_t ms, int count_writes)
{
    c->idle_ms = ms;
    c->idle_set = 1;
    c->count_writes = count_writes ? 1 : 0;
    watch(c, 0); /* the new deadline may come sooner */
}

/* The handshake takes any certificate; the protocol judges it after. */
static int accept_any_cert(int ok, X509_STORE_CTX *x)
{
    return 1;
}

void pl_conn_set_tls_role(struct pl_conn *c, int client, const char *sni,
                          int want_cert)
{
    c->tls_client = client ? 1 : 0;
    c->tls_want_cert = want_cert ? 1 : 0;
    pl_free(c->tls_sni);
    c->tls_sni = sni ? pl_strdup(sni) : NULL;
}

/* Sealed TLS records not written yet (after the hand-over). */
static size_t unsent(const struct pl_conn *c)
{
    return c->rec ? pl_tls_rec_unsent(c->rec) : 0;
}

/* pl_conn_tls_handover, once nothing is in flight inside OpenSSL. */
static void try_handover(struct pl_conn *c)
{
    if (!c->handover || !c->ssl || c->tls != PL_CONN_TLS || c->out.len ||
        c->sf_left || c->dead || c->closing)
        return;
    struct pl_tls_rec *r = NULL;
    int rc = pl_tls_rec_take(c->ssl, &r);
    if (rc == PL_EAGAIN)
        return;
    c->handover = 0;
    if (rc != PL_OK)
        return; /* TLS 1.2, or another cipher: OpenSSL goes on */
    SSL_free(c->ssl);
    c->ssl = NULL;
    c->rec = r;
    pl_stat_inc(tls_handovers);
}

void pl_conn_tls_handover(struct pl_conn *c)
{
    if (!c->ssl || c->tls_client || c->dead)
        return;
    c->handover = 1;
    try_handover(c);
}

static int begin_tls(struct pl_conn *c, SSL_CTX *ctx)
{
    c->ssl = SSL_new(ctx);
    if (!c->ssl)
        return PL_ETLS;
    SSL_set_fd(c->ssl, c->io.fd);
    if (c->tls_client) {
        SSL_set_connect_state(c->ssl);
        if (c->tls_sni)
            SSL_set_tlsext_host_name(c->ssl, c->tls_sni);
    } else {
        SSL_set_accept_state(c->ssl);
        if (c->tls_want_cert)
            SSL_set_verify(c->ssl, SSL_VERIFY_PEER | SSL_VERIFY_CLIENT_ONCE,
                           accept_any_cert);
        else
            pl_tls_rec_watch(c->ssl); /* for pl_conn_tls_handover */
    }
    c->tls = PL_CONN_HANDSHAKE;
    return PL_OK;
}

void pl_conn_start(struct pl_conn *c, SSL_CTX *ctx)
{
    if (ctx && begin_tls(c, ctx) != PL_OK) {
        pl_conn_close(c);
        return;
    }
    pl_io_set(c->loop, &c->io, PL_IO_READ);
    watch(c, 0);
    if (ctx && c->tls_client)
        handshake(c); /* the client speaks first (ClientHello) */
}

/* The socket is gone: tell the protocol, then free, after this batch. */
static void finish(void *data)
{
    struct pl_conn *c = data;
    if (c->ops->closed)
        c->ops->closed(c);
    pl__listen_release(c);
    pl_buf_reset(&c->out);
    pl_buf_reset(&c->sf_after);
    pl_free(c->tls_sni);
    pl_free(c->error);
    pl_free(c);
}

/*
 * Ends the connection now; its closed callback comes after this batch of
 * events.  graceful: everything we had to say went out (pl_conn_close),
 * so the socket is closed the way that cannot lose it on the peer's side:
 * see pl_loop_close_lingering.
 */
static void end(struct pl_conn *c, int graceful)
{
    if (c->dead)
        return;
    c->dead = 1;
    c->closing = 1;
    pl_timer_stop(&c->timer);
    pace_leave(c);
    if (c->ssl) {
        if (c->tls == PL_CONN_TLS)
            SSL_shutdown(c->ssl); /* close_notify, do not wait for reply */
        else
            graceful = 0;
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    if (c->rec) {
        pl_tls_rec_close_notify(c->rec, c->io.fd);
        pl_tls_rec_free(c->rec);
        c->rec = NULL;
    }
    if (graceful && !(c->peer_done && c->tls == PL_CONN_PLAIN))
        pl_loop_close_lingering(c->loop, &c->io, CLOSE_LINGER_MS);
    else
        pl_io_close(&c->io);
    ERR_clear_error();
    pl_loop_defer(c->loop, finish, c);
}

static void destroy(struct pl_conn *c)
{
    end(c, 0);
}

static void on_linger(struct pl_timer *t)
{
    destroy(t->data);
}

void pl_conn_peer_done(struct pl_conn *c)
{
    c->peer_done = 1;
}

void pl_conn_close(struct pl_conn *c)
{
    if (c->closing)
        return;
    c->closing = 1;
    if ((c->out.len || c->sf_left || unsent(c)) &&
        c->tls != PL_CONN_HANDSHAKE) {
        flush(c);
        if (c->dead)
            return;
        if (c->out.len || c->sf_left || unsent(c)) {
            /* Give a slow peer a bounded time to read the stream error. */
            pl_io_set(c->loop, &c->io, PL_IO_WRITE);
            c->timer.cb = on_linger;
            pl_timer_start(c->loop, &c->timer, CLOSE_LINGER_MS);
            return;
        }
    }
    end(c, c->tls != PL_CONN_HANDSHAKE);
}

static void deferred_flush(void *data)
{
    struct pl_conn *c = data;
    c->flush_queued = 0;
    if (!c->dead)
        flush(c);
}

void pl_conn_write(struct pl_conn *c, const void *p, size_t n)
{
    if (c->dead || n == 0)
        return;
    /* Behind a file being sent: after it. */
    pl_buf_append(c->sf_left ? &c->sf_after : &c->out, p, n);
    if (c->out.len + c->sf_after.len > c->lim.max_out) {
        pl_log_info("conn",
                    "%s:%d: disconnecting a slow reader (%zu bytes "
                    "queued)",
                    c->ip, c->port, c->out.len);
        pl_buf_reset(&c->out);
        destroy(c);
        return;
    }
    if (!c->flush_queued) {
        c->flush_queued = 1;
        pl_loop_defer(c->loop, deferred_flush, c);
    }
}

void pl_conn_starttls(struct pl_conn *c, SSL_CTX *ctx)
{
    c->want_tls = 1;
    c->pending_ctx = ctx;
    flush(c);
}

static unsigned interest(struct pl_conn *c)
{
    unsigned ev = 0;
    /* Held: read only to notice the peer going, until bytes wait. */
    if (!c->paused && !c->closing && !(c->held && c->held_full))
        ev |= PL_IO_READ;
    if (c->out.len || unsent(c) || c->want_tls || (c->sf_left && !c->pace_wait))
        ev |= PL_IO_WRITE;
    if (c->tls == PL_CONN_HANDSHAKE)
        ev |= PL_IO_READ;
    return ev;
}

static void update_interest(struct pl_conn *c)
{
    if (!c->dead)
        pl_io_set(c->loop, &c->io, interest(c));
}

/*
 * The next piece of the file of pl_conn_sendfile when the buffer is
 * empty: under TLS read into the buffer (0, or -1 on error); plain, sent
 * with sendfile(2) (bytes sent, 0 when the socket is full, -1 on error).
 */
static ssize_t file_piece(struct pl_conn *c)
{
    size_t cap = c->tls != PL_CONN_PLAIN ? FILE_PIECE : FLUSH_MAX;
    if (!pace_take(c, &cap))
        return PACE_WAIT;
    size_t want = c->sf_left > cap ? cap : (size_t)c->sf_left;
    ssize_t n;
    if (c->tls != PL_CONN_PLAIN) {
        char buf[FILE_PIECE];
        n = pread(c->sf_fd, buf, want, (off_t)c->sf_off);
        if (n <= 0)
            return -1; /* an error, or shorter than announced */
        pace_spent(c, (size_t)n);
        pl_buf_append(&c->out, buf, (size_t)n);
        c->sf_off += (uint64_t)n;
        c->sf_left -= (uint64_t)n;
        return 0;
    }
    off_t off = (off_t)c->sf_off;
    n = sendfile(c->io.fd, c->sf_fd, &off, want);
    if (n < 0)
        return errno == EAGAIN || errno == EINTR ? 0 : -1;
    if (n == 0)
        return -1; /* the file is shorter than announced */
    pace_spent(c, (size_t)n);
    c->sf_off += (uint64_t)n;
    c->sf_left -= (uint64_t)n;
    return n;
}

/* The file is sent: what was written meanwhile comes next. */
static void file_done(struct pl_conn *c)
{
    struct pl_str a = pl_buf_str(&c->sf_after);
    if (!c->sf_left)
        pace_leave(c);
    if (c->sf_left || !a.len)
        return;
    pl_buf_append(&c->out, a.p, a.len);
    pl_buf_reset(&c->sf_after);
}

static void flush(struct pl_conn *c)
{
    if (c->tls == PL_CONN_HANDSHAKE)
        return;
    size_t written = 0;
    if (unsent(c) && pl_tls_rec_flush(c->rec, c->io.fd) < 0) {
        destroy(c);
        return;
    }
    while ((c->out.len || c->sf_left) && written < FLUSH_MAX) {
        ssize_t n;
        if (!c->out.len) {
            n = file_piece(c);
            if (n == PACE_WAIT)
                break;
            if (n < 0) {
                pl_log_info("conn", "%s:%d: cannot read the file being sent",
                            c->ip, c->port);
                destroy(c);
                return;
            }
            if (c->tls != PL_CONN_PLAIN) {
                file_done(c);
                continue; /* a piece to encrypt is in the buffer */
            }
            if (n == 0)
                break;
            written += (size_t)n;
            c->bytes_out += (uint64_t)n;
            c->last_write_ms = pl_loop_now(c->loop);
            pl_stat_add(bytes_out, (unsigned long)n);
            file_done(c);
            continue;
        }
        struct pl_str s = pl_buf_str(&c->out);
        if (c->ssl) {
            ERR_clear_error();
            int r = SSL_write(c->ssl, s.p,
                              (int)(s.len > (1u << 30) ? (1u << 30) : s.len));
            if (r <= 0) {
                int e = SSL_get_error(c->ssl, r);
                if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ)
                    break;
                destroy(c);
                return;
            }
            n = r;
        } else if (c->rec) {
            n = pl_tls_rec_write(c->rec, c->io.fd, s.p, s.len);
            if (n < 0) {
                if (errno == EAGAIN)
                    break;
                destroy(c);
                return;
            }
        } else {
            n = send(c->io.fd, s.p, s.len, MSG_NOSIGNAL);
            if (n < 0) {
                if (errno == EAGAIN || errno == EINTR)
                    break;
                destroy(c);
                return;
            }
        }
        written += (size_t)n;
        c->bytes_out += (uint64_t)n;
        c->last_write_ms = pl_loop_now(c->loop);
        pl_stat_add(bytes_out, (unsigned long)n);
        pl_buf_consume(&c->out, (size_t)n);
    }
    if (!c->out.len && !c->sf_left && !unsent(c)) {
        /* A busy connection keeps a small buffer for the next burst (no
         * malloc per stanza); pl_conn_trim gives it back when idle. */
        if (c->out.cap > KEEP_OUT)
            pl_buf_reset(&c->out);
        if (c->want_tls) {
            c->want_tls = 0;
            if (begin_tls(c, c->pending_ctx) != PL_OK) {
                destroy(c);
                return;
            }
            if (c->tls_client) {
                handshake(c); /* the client speaks first */
                return;
            }
        }
        if (c->closing) {
            end(c, 1);
            return;
        }
        try_handover(c);
        if (written && c->drain) {
            c->drain(c); /* may write again: a flush is deferred then */
            if (c->dead)
                return;
        }
    }
    update_interest(c);
}

int pl_conn_sendfile(struct pl_conn *c, int fd, uint64_t off, uint64_t len)
{
    return pl_conn_sendfile_paced(c, fd, off, len, NULL);
}

int pl_conn_sendfile_paced(struct pl_conn *c, int fd, uint64_t off,
                           uint64_t len, struct pl_pace *p)
{
    if (c->sf_left)
        return PL_EAGAIN;
    if (c->dead || len == 0)
        return PL_OK;
    if (p) {
        p->refs++;
        c->sf_pace = p;
    }
    c->sf_fd = fd;
    c->sf_off = off;
    c->sf_left = len;
    if (!c->flush_queued) {
        c->flush_queued = 1;
        pl_loop_defer(c->loop, deferred_flush, c);
    }
    return PL_OK;
}

uint64_t pl_conn_pending(const struct pl_conn *c)
{
    return c->out.len + c->sf_left + c->sf_after.len + unsent(c);
}

void pl_conn_set_drain(struct pl_conn *c, void (*fn)(struct pl_conn *c))
{
    c->drain = fn;
}

static void do_read(struct pl_conn *c);

static void deferred_read(void *data)
{
    struct pl_conn *c = data;
    c->read_queued = 0;
    if (!c->dead && !c->closing && !c->held && !c->paused)
        do_read(c);
}

/*
 * Bytes TLS already holds (a record read whole, handed out in parts) raise
 * no event of the socket: when reading stops with some left (the read
 * rate's pause, the turn's end, a hold), a deferred read takes them, or
 * the peer that sent its last words in them would wait for ever.
 */
static void read_buffered(struct pl_conn *c)
{
    int ready = (c->ssl && c->tls == PL_CONN_TLS && SSL_has_pending(c->ssl)) ||
                (c->rec && pl_tls_rec_pending(c->rec));
    if (ready && !c->read_queued) {
        c->read_queued = 1;
        pl_loop_defer(c->loop, deferred_read, c);
    }
}

void pl_conn_hold(struct pl_conn *c, int hold)
{
    if (c->dead)
        return;
    c->held = hold ? 1 : 0;
    c->held_full = 0;
    update_interest(c);
    if (!hold)
        read_buffered(c);
}

static void handshake(struct pl_conn *c)
{
    ERR_clear_error();
    int r = SSL_do_handshake(c->ssl);
    if (r == 1) {
        c->tls = PL_CONN_TLS;
        pl_stat_inc(tls_handshakes);
        if (c->ops->tls_up)
            c->ops->tls_up(c);
        if (!c->dead)
            flush(c);
        return;
    }
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        update_interest(c);
        return;
    }
    pl_log_debug("conn", "%s:%d: TLS handshake failed", c->ip, c->port);
    pl_stat_inc(tls_handshake_failures);
    if (!c->error) {
        char why[256] = "connection closed during the handshake";
        unsigned long err = ERR_peek_last_error();
        if (err)
            ERR_error_string_n(err, why, sizeof(why));
        else if (e == SSL_ERROR_SYSCALL && errno)
            snprintf(why, sizeof(why), "%s", strerror(errno));
        c->error = pl_strdup(why);
    }
    destroy(c);
}

static void on_resume(struct pl_timer *t)
{
    struct pl_conn *c = t->data;
    c->paused = 0;
    update_interest(c);
    watch(c, 0); /* the timer is the deadlines' again */
    read_buffered(c);
}

static void refill(struct pl_conn *c)
{
    uint64_t now = pl_loop_now(c->loop);
    if (now > c->refill_ms) {
        c->tokens += (double)(now - c->refill_ms) * (double)c->lim.read_rate /
                     1000.0;
        if (c->tokens > (double)c->lim.read_burst)
            c->tokens = (double)c->lim.read_burst;
        c->refill_ms = now;
    }
}

static void do_read(struct pl_conn *c)
{
    char buf[READ_CHUNK];
    refill(c);
    /* Bounded work per event so one connection cannot starve others. */
    for (int rounds = 0; rounds < 4 && !c->closing; rounds++) {
        if (c->tokens < 1) {
            c->paused = 1;
            update_interest(c);
            c->timer.cb = on_resume;
            uint64_t wait = (uint64_t)((1 - c->tokens) * 1000.0 /
                                       (double)c->lim.read_rate) +
                            1;
            pl_timer_start(c->loop, &c->timer, wait < 10 ? 10 : wait);
            return;
        }
        char *dst = buf;
        size_t cap = READ_CHUNK, room = 0;
        char *own = c->ops->rbuf ? c->ops->rbuf(c, &room) : NULL;
        if (own && room) {
            dst = own;
            cap = room < INT_MAX ? room : INT_MAX;
        }
        size_t want = c->tokens < (double)cap ? (size_t)c->tokens : cap;
        ssize_t n;
        if (c->ssl) {
            ERR_clear_error();
            int r = SSL_read(c->ssl, dst, (int)want);
            if (r <= 0) {
                int e = SSL_get_error(c->ssl, r);
                if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
                    try_handover(c); /* OpenSSL holds nothing now */
                    return;
                }
                destroy(c);
                return;
            }
            n = r;
        } else if (c->rec) {
            n = pl_tls_rec_read(c->rec, c->io.fd, dst, want);
            if (pl_tls_rec_unsent(c->rec) && !c->flush_queued) {
                c->flush_queued = 1; /* a KeyUpdate to answer */
                pl_loop_defer(c->loop, deferred_flush, c);
            }
            if (n < 0 && errno == EAGAIN)
                return;
            if (n <= 0) {
                destroy(c);
                return;
            }
        } else {
            n = recv(c->io.fd, dst, want, 0);
            if (n < 0 && (errno == EAGAIN || errno == EINTR))
                return;
            if (n <= 0) {
                destroy(c);
                return;
            }
        }
        c->tokens -= (double)n;
        c->bytes_in += (uint64_t)n;
        c->last_read_ms = pl_loop_now(c->loop);
        c->ops->data(c, dst, (size_t)n);
        if (c->dead || c->want_tls || c->held)
            return;
        if ((size_t)n < want && !(c->ssl && SSL_pending(c->ssl)) &&
            !(c->rec && pl_tls_rec_pending(c->rec)))
            return;
    }
    read_buffered(c); /* the turn is over; the rest comes after others' */
}

static void on_io(struct pl_io *io, unsigned events)
{
    struct pl_conn *c = io->data;
    if (c->dead)
        return;
    if (c->tls == PL_CONN_HANDSHAKE) {
        handshake(c);
        if (c->dead || c->tls != PL_CONN_TLS)
            return;
    }
    if (events & PL_IO_WRITE) {
        flush(c);
        if (c->dead)
            return;
    }
    if ((events & PL_IO_READ) && !c->paused) {
        if (c->held && !c->closing) {
            /* Held: only whether the peer went (the bytes stay). */
            char b;
            ssize_t n = recv(c->io.fd, &b, 1, MSG_PEEK);
            if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
                destroy(c);
                return;
            }
            if (n > 0) {
                c->held_full = 1;
                update_interest(c);
            }
            return;
        }
        if (c->closing) {
            /* Draining to close: discard input, notice EOF. */
            char sink[4096];
            ssize_t n = recv(c->io.fd, sink, sizeof(sink), 0);
            if (n == 0 || (n < 0 && errno != EAGAIN))
                destroy(c);
            return;
        }
        do_read(c);
    }
}

/* Listeners. */

struct pl_listener {
    struct pl_io io;  /* listening socket */
    pl_accept_fn *fn; /* per accepted socket */
    void *data;       /* for fn */
};

static void on_accept(struct pl_io *io, unsigned events)
{
    struct pl_listener *l = io->data;
    for (int i = 0; i < 64; i++) {
        struct sockaddr_storage addr;
        socklen_t len = sizeof(addr);
        int fd = accept4(io->fd, (struct sockaddr *)&addr, &len,
                         SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE)
                pl_log_warn("conn", "out of file descriptors while "
                                    "accepting connections");
            return;
        }
        l->fn(l, fd, &addr, l->data);
    }
}

int pl__listener_fd(const struct pl_listener *l)
{
    return l->io.fd;
}

int pl_listener_open(struct pl_loop *loop, const char *address, int port,
                     pl_accept_fn *fn, void *data, struct pl_listener **out)
{
    return pl_listener_open_shared(loop, address, port, 0, fn, data, out);
}

int pl_listener_open_shared(struct pl_loop *loop, const char *address, int port,
                            int shared, pl_accept_fn *fn, void *data,
                            struct pl_listener **out)
{
    struct sockaddr_storage ss;
    socklen_t sslen;
    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, address, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)port);
        sslen = sizeof(*a4);
    } else if (inet_pton(AF_INET6, address, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        sslen = sizeof(*a6);
    } else {
        pl_log_error("conn", "listener address '%s' is not an IP address",
                     address);
        return PL_EINVAL;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                    0);
    if (fd < 0)
        return PL_EIO;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    /* Accepted sockets inherit it (pl_conn_accepted). */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (ss.ss_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (shared &&
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0) {
        pl_log_error("conn", "SO_REUSEPORT on %s port %d: %s", address, port,
                     strerror(errno));
        close(fd);
        return PL_EIO;
    }
    if (bind(fd, (struct sockaddr *)&ss, sslen) < 0 || listen(fd, 1024) < 0) {
        pl_log_error("conn", "cannot listen on %s port %d: %s", address, port,
                     strerror(errno));
        close(fd);
        return PL_EIO;
    }
    struct pl_listener *l = pl_calloc(1, sizeof(*l));
    l->fn = fn;
    l->data = data;
    pl_io_init(&l->io, fd, on_accept, l);
    pl_io_set(loop, &l->io, PL_IO_READ);
    *out = l;
    return PL_OK;
}

void pl_listener_close(struct pl_listener *l)
{
    if (!l)
        return;
    pl_io_stop(&l->io);
    close(l->io.fd);
    pl_free(l);
}
