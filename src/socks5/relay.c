/*
 * relay.c - the connections of the SOCKS5 Bytestreams proxy (XEP-0065
 * §6): the SOCKS5 handshake (parse.c), pairing by hash, activation, and
 * the relay between the two parties.  API: socks5_int.h.
 *
 * A connection goes through four states: GREETING (method selection,
 * RFC 1928 §3), REQUEST (CONNECT with the hash as a domain name, §4),
 * WAIT (answered; waits for the requester's <activate/>) and RELAY.
 * Connections with the same hash form one transfer: the first to
 * connect (the target, XEP-0065 §6.3.2) and the second (the requester,
 * §6.3.4); a third is refused (X'02').  Nothing flows until activation
 * (§6.3.5); bytes a party sends before it are kept (at most one read)
 * and that party is not read further until then.
 *
 * Back-pressure: bytes read from one side are written to the other at
 * once; when that side has relay_buffer bytes queued, the reading side is
 * held (pl_conn_hold: its socket is not read, TCP pushes back on the
 * sender) until the queue is written (pl_conn_set_drain).  Memory per transfer
 * is bounded by relay_buffer plus one read batch, whatever the speeds.
 *
 * Limits (struct socks5_settings): handshake_timeout and
 * unmatched_timeout (a timer per connection, strict: trickling bytes does
 * not extend them), max_pending connections not yet relaying,
 * max_transfers and max_transfers_per_user (checked at activation),
 * max_transfer_size (both directions together), bandwidth_per_user (a
 * token bucket per requester shared by all of that user's transfers;
 * a transfer over it is held until the bucket is positive again), and
 * idle_timeout once relaying (bytes read or written count).
 *
 * When one party closes, the other gets what is queued for it, then is
 * closed too (XEP-0065 streams end with the connection).
 *
 * Extending: a new per-transfer limit is a field of struct xfer, checked
 * in relay().
 */
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "conn.h"
#include "error.h"
#include "log.h"
#include "map.h"
#include "server.h"
#include "socks5_int.h"
#include "stats.h"

#define EARLY_MAX 65536 /* bytes kept from a party before activation */

enum side_state {
    S_GREETING = 0, /* waiting for the method selection message */
    S_REQUEST,      /* waiting for the CONNECT request */
    S_WAIT,         /* answered; waiting for activation */
    S_RELAY,        /* activated: bytes flow */
};

struct xfer;

/* One connection to the proxy. */
struct side {
    struct pl_conn *conn;              /* NULL once closed */
    struct xfer *x;                    /* once its CONNECT is accepted */
    int state;                         /* enum side_state */
    uint8_t in[PL_SOCKS5_MAX_REQUEST]; /* handshake bytes */
    size_t inlen;                      /* bytes in in */
    struct pl_buf early;               /* bytes before activation */
    struct pl_timer timer;             /* handshake/unmatched deadline */
    unsigned bp : 1;                   /* held: the peer's output full */
    unsigned early_hold : 1;           /* held: data before activation */
    unsigned end_drained : 1; /* the peer is gone: close once written */
    struct side *prev, *next; /* every open side */
};

/* A requester's shared bandwidth bucket and transfer count. */
struct user {
    char *bare;         /* requester's bare JID (key) */
    double tokens;      /* bytes it may still relay now */
    uint64_t refill_ms; /* loop time of the last refill */
    unsigned active;    /* its active transfers */
};

/* The connections of one hash. */
struct xfer {
    char hash[PL_SOCKS5_HASH_LEN + 1]; /* DST.ADDR (key) */
    struct side *s[2];                 /* first (target), second */
    int active;                        /* activated */
    struct user *u;                    /* requester, once active */
    uint64_t bytes;                    /* relayed, both directions */
    uint64_t created_ms;               /* first CONNECT */
    uint64_t started_ms;               /* activation */
    struct pl_timer rate;              /* bandwidth wait */
    unsigned rate_hold : 1;            /* held by the user's bucket */
};

static struct side *sides;     /* every open connection */
static unsigned long nsides;   /* their number */
static unsigned long npending; /* not relaying (handshake or waiting) */
static unsigned long nactive;  /* active transfers */
static struct pl_map xfers;    /* hash -> struct xfer */
static struct pl_map users;    /* bare JID -> struct user */

static const struct pl_conn_ops ops;

static struct pl_loop *loop(void)
{
    return pl_server_loop();
}

static struct side *other(const struct xfer *x, const struct side *s)
{
    return x->s[0] == s ? x->s[1] : x->s[0];
}

static void update_hold(struct side *s)
{
    if (!s->conn || s->conn->closing)
        return;
    int hold = s->bp || s->early_hold || (s->x && s->x->rate_hold);
    pl_conn_hold(s->conn, hold);
}

static void end(struct side *s)
{
    if (s->conn)
        pl_conn_close(s->conn);
}

static void end_xfer(struct xfer *x)
{
    for (int i = 0; i < 2; i++)
        if (x->s[i])
            end(x->s[i]);
}

/* Answers the request with rep (0 with the echoed address) and, unless
 * it is a success, closes after the reply is written. */
static void reply(struct side *s, int rep, const struct pl_socks5_request *r)
{
    uint8_t out[PL_SOCKS5_MAX_REPLY];
    size_t n = pl_socks5_reply(out, rep, r);
    pl_conn_write(s->conn, out, n);
    if (rep != PL_SOCKS5_REP_OK) {
        pl_stat_inc(socks5_refused);
        end(s);
    }
}

/* ---- users ---- */

static struct user *user_get(const char *bare)
{
    struct user *u = pl_map_get(&users, bare);
    if (u)
        return u;
    u = pl_calloc(1, sizeof(*u));
    u->bare = pl_strdup(bare);
    u->tokens = (double)pl__socks5_settings()->bandwidth_per_user;
    u->refill_ms = pl_loop_now(loop());
    pl_map_put(&users, u->bare, u);
    return u;
}

static void user_release(struct user *u)
{
    if (--u->active)
        return;
    pl_map_del(&users, u->bare);
    pl_free(u->bare);
    pl_free(u);
}

/* Refills u's bucket: rate bytes a second, at most one second's worth. */
static void refill(struct user *u)
{
    long rate = pl__socks5_settings()->bandwidth_per_user;
    uint64_t now = pl_loop_now(loop());
    if (now > u->refill_ms) {
        u->tokens += (double)(now - u->refill_ms) * (double)rate / 1000.0;
        if (u->tokens > (double)rate)
            u->tokens = (double)rate;
        u->refill_ms = now;
    }
}

/* ---- transfers ---- */

static void xfer_free(struct xfer *x)
{
    if (pl_map_get(&xfers, x->hash) == x)
        pl_map_del(&xfers, x->hash);
    pl_timer_stop(&x->rate);
    if (x->active) {
        nactive--;
        pl_stat_dec(socks5_transfers_active);
        pl_log_info("socks5",
                    "transfer %.8s of %s ended: %llu bytes in %llu ms", x->hash,
                    x->u->bare, (unsigned long long)x->bytes,
                    (unsigned long long)(pl_loop_now(loop()) - x->started_ms));
        user_release(x->u);
    }
    pl_free(x);
}

static void schedule_rate(struct xfer *x)
{
    long rate = pl__socks5_settings()->bandwidth_per_user;
    double wait = rate > 0 ? -x->u->tokens * 1000.0 / (double)rate : 0;
    pl_timer_start(loop(), &x->rate, (uint64_t)wait + 1);
}

static void on_rate(struct pl_timer *t)
{
    struct xfer *x = t->data;
    refill(x->u);
    if (x->u->tokens < 0 && pl__socks5_settings()->bandwidth_per_user > 0) {
        schedule_rate(x);
        return;
    }
    x->rate_hold = 0;
    for (int i = 0; i < 2; i++)
        if (x->s[i])
            update_hold(x->s[i]);
}

/* Bytes from s go to its peer, within the limits. */
static void relay(struct side *s, const char *p, size_t n)
{
    const struct socks5_settings *S = pl__socks5_settings();
    struct xfer *x = s->x;
    struct side *peer = other(x, s);
    if (!peer || !peer->conn || peer->conn->closing)
        return; /* the transfer is ending */
    x->bytes += n;
    pl_stat_add(socks5_bytes, (unsigned long)n);
    if (S->max_transfer_size > 0 && x->bytes > (uint64_t)S->max_transfer_size) {
        pl_log_info("socks5",
                    "transfer %.8s of %s ended: over max_transfer_size "
                    "(%ld bytes)",
                    x->hash, x->u->bare, S->max_transfer_size);
        pl_stat_inc(socks5_refused);
        end_xfer(x);
        return;
    }
    pl_conn_write(peer->conn, p, n);
    if (peer->conn && !peer->conn->dead &&
        peer->conn->out.len >= (size_t)S->relay_buffer) {
        s->bp = 1;
        update_hold(s);
    }
    if (S->bandwidth_per_user > 0) {
        refill(x->u);
        x->u->tokens -= (double)n;
        if (x->u->tokens < 0 && !x->rate_hold) {
            x->rate_hold = 1;
            update_hold(s);
            update_hold(peer);
            schedule_rate(x);
        }
    }
}

/* ---- the handshake ---- */

static void on_deadline(struct pl_timer *t)
{
    struct side *s = t->data;
    if (!s->conn)
        return;
    pl_log_debug("socks5", "%s:%d: %s", s->conn->ip, s->conn->port,
                 s->state < S_WAIT ? "handshake timed out"
                                   : "not activated in time");
    pl_stat_inc(socks5_refused);
    end(s);
}

/* The CONNECT r of s was acceptable: join (or start) its transfer. */
static void join(struct side *s, const struct pl_socks5_request *r)
{
    const struct socks5_settings *S = pl__socks5_settings();
    struct xfer *x = pl_map_get(&xfers, r->addr);
    if (x && (x->active || (x->s[0] && x->s[1]))) {
        /* A third connection for one hash: XEP-0065 pairs two. */
        pl_log_info("socks5", "%s:%d: refused a third connection for %.8s",
                    s->conn->ip, s->conn->port, r->addr);
        reply(s, PL_SOCKS5_REP_NOT_ALLOWED, r);
        return;
    }
    if (!x) {
        x = pl_calloc(1, sizeof(*x));
        memcpy(x->hash, r->addr, sizeof(x->hash));
        x->created_ms = pl_loop_now(loop());
        pl_timer_init(&x->rate, on_rate, x);
        pl_map_put(&xfers, x->hash, x);
    }
    x->s[x->s[0] ? 1 : 0] = s;
    s->x = x;
    s->state = S_WAIT;
    reply(s, PL_SOCKS5_REP_OK, r);
    pl_conn_established(s->conn);
    pl_conn_set_idle(s->conn, 0, 0); /* our timer bounds the wait */
    pl_timer_start(loop(), &s->timer, (uint64_t)S->unmatched_timeout * 1000);
}

/* Bytes from a party before activation: kept, and the party held. */
static void keep_early(struct side *s, const uint8_t *p, size_t n)
{
    if (!n)
        return;
    if (s->early.len + n > EARLY_MAX) {
        end(s);
        return;
    }
    pl_buf_append(&s->early, p, n);
    s->early_hold = 1;
    update_hold(s);
}

static void handshake(struct side *s, const uint8_t *p, size_t n)
{
    for (;;) {
        size_t k = sizeof(s->in) - s->inlen;
        if (k > n)
            k = n;
        memcpy(s->in + s->inlen, p, k);
        s->inlen += k;
        p += k;
        n -= k;
        size_t used = 0;
        int v;
        if (s->state == S_GREETING) {
            v = pl_socks5_greeting(s->in, s->inlen, &used);
            if (v == PL_SOCKS5_MORE) {
                if (!n)
                    return;
                continue;
            }
            if (v == PL_SOCKS5_BAD_VERSION) {
                pl_stat_inc(socks5_refused);
                end(s);
                return;
            }
            /* RFC 1928 §3: X'FF' when no offered method is acceptable. */
            uint8_t ans[2] = {5, v == PL_SOCKS5_OK ? 0x00 : 0xff};
            pl_conn_write(s->conn, ans, 2);
            if (v != PL_SOCKS5_OK) {
                pl_stat_inc(socks5_refused);
                end(s);
                return;
            }
            s->state = S_REQUEST;
        } else {
            struct pl_socks5_request r;
            v = pl_socks5_request(s->in, s->inlen, &r, &used);
            if (v == PL_SOCKS5_MORE) {
                if (!n)
                    return;
                continue;
            }
            if (v == PL_SOCKS5_BAD_VERSION) {
                pl_stat_inc(socks5_refused);
                end(s);
                return;
            }
            if (v != PL_SOCKS5_OK) {
                reply(s, pl_socks5_verdict_rep(v), used ? &r : NULL);
                return;
            }
            join(s, &r);
            if (s->state != S_WAIT)
                return;
        }
        memmove(s->in, s->in + used, s->inlen - used);
        s->inlen -= used;
        if (s->state == S_WAIT) {
            keep_early(s, s->in, s->inlen);
            s->inlen = 0;
            if (s->conn && !s->conn->closing)
                keep_early(s, p, n);
            return;
        }
    }
}

/* ---- connection callbacks ---- */

static void on_data(struct pl_conn *c, const char *p, size_t n)
{
    struct side *s = c->data;
    if (s->state == S_RELAY)
        relay(s, p, n);
    else if (s->state == S_WAIT)
        keep_early(s, (const uint8_t *)p, n);
    else
        handshake(s, (const uint8_t *)p, n);
}

static void on_drained(struct pl_conn *c)
{
    struct side *s = c->data;
    if (s->end_drained) {
        end(s);
        return;
    }
    struct side *peer = s->x ? other(s->x, s) : NULL;
    if (peer && peer->bp) {
        peer->bp = 0;
        update_hold(peer);
    }
}

static void on_closed(struct pl_conn *c)
{
    struct side *s = c->data;
    s->conn = NULL;
    pl_timer_stop(&s->timer);
    if (s->state != S_RELAY)
        npending--;
    struct xfer *x = s->x;
    if (x) {
        x->s[x->s[0] == s ? 0 : 1] = NULL;
        struct side *peer = x->s[0] ? x->s[0] : x->s[1];
        if (!peer) {
            xfer_free(x);
        } else if (x->active && peer->conn) {
            /* The rest of the stream still goes to the peer: it is closed
             * once its queue is written (drained; the idle deadline bounds
             * a peer that stops reading), at once if nothing is queued. */
            peer->bp = 0;
            peer->end_drained = 1;
            if (!peer->conn->out.len)
                end(peer);
            else
                update_hold(peer);
        }
    }
    if (s->prev)
        s->prev->next = s->next;
    else
        sides = s->next;
    if (s->next)
        s->next->prev = s->prev;
    nsides--;
    pl_buf_reset(&s->early);
    pl_free(s);
}

static const struct pl_conn_ops ops = {
    .data = on_data,
    .closed = on_closed,
};

int pl__socks5_accept(struct pl_listen *l, struct pl_conn *c)
{
    (void)l;
    const struct socks5_settings *S = pl__socks5_settings();
    if (npending >= (unsigned long)S->max_pending) {
        pl_log_info("socks5", "%s:%d: refused: max_pending (%ld) reached",
                    c->ip, c->port, S->max_pending);
        pl_stat_inc(socks5_refused);
        return PL_ELIMIT;
    }
    struct side *s = pl_calloc(1, sizeof(*s));
    s->conn = c;
    pl_timer_init(&s->timer, on_deadline, s);
    /* The relay's own bounds replace the core's read rate (the bandwidth
     * is per user, bucket above) and size the output for relay_buffer
     * plus a read batch, so that a full queue holds, never drops. */
    struct pl_conn_limits lim = {
        .max_out = (size_t)S->relay_buffer * 2 + EARLY_MAX + 262144,
        .read_rate = (size_t)1 << 30,
        .read_burst = (size_t)1 << 30,
    };
    pl_conn_set_limits(c, &lim);
    pl_conn_set_handlers(c, &ops, s);
    pl_conn_set_drain(c, on_drained);
    s->next = sides;
    if (sides)
        sides->prev = s;
    sides = s;
    nsides++;
    npending++;
    pl_stat_inc(socks5_connections);
    pl_timer_start(loop(), &s->timer, (uint64_t)S->handshake_timeout * 1000);
    return PL_OK;
}

/* ---- activation ---- */

int pl__socks5_activate(const char *hash, const char *user, const char **why)
{
    const struct socks5_settings *S = pl__socks5_settings();
    struct xfer *x = pl_map_get(&xfers, hash);
    *why = NULL;
    if (!x) {
        *why = "no connection with this stream's hash";
        return PL_EITEM_NOT_FOUND;
    }
    if (x->active) {
        *why = "the bytestream is already active";
        return PL_ENOT_ALLOWED;
    }
    if (!x->s[0] || !x->s[1]) {
        *why = "only one party is connected to the proxy";
        return PL_ENOT_ALLOWED;
    }
    struct user *u = pl_map_get(&users, user);
    const char *over = NULL;
    if (nactive >= (unsigned long)S->max_transfers)
        over = "too many transfers through the proxy";
    else if (u && u->active >= (unsigned long)S->max_transfers_per_user)
        over = "too many transfers of this user at once";
    if (over) {
        pl_log_info("socks5", "refused transfer %.8s of %s: %s", hash, user,
                    over);
        pl_stat_inc(socks5_refused);
        *why = over;
        end_xfer(x);
        return PL_ERESOURCE_CONSTRAINT;
    }
    u = user_get(user);
    u->active++;
    x->u = u;
    x->active = 1;
    x->started_ms = pl_loop_now(loop());
    nactive++;
    pl_stat_inc(socks5_transfers);
    pl_stat_inc(socks5_transfers_active);
    pl_log_info("socks5", "transfer %.8s of %s activated", hash, user);
    for (int i = 0; i < 2; i++) {
        struct side *s = x->s[i];
        pl_timer_stop(&s->timer);
        s->state = S_RELAY;
        npending--;
        pl_conn_set_idle(s->conn, (uint32_t)(S->idle_timeout * 1000), 1);
    }
    /* What a party sent before activation goes first. */
    for (int i = 0; i < 2; i++) {
        struct side *s = x->s[i];
        if (!s || !s->conn || s->conn->closing)
            continue;
        if (s->early.len) {
            struct pl_str e = pl_buf_str(&s->early);
            relay(s, e.p, e.len);
            pl_buf_reset(&s->early);
        }
        s->early_hold = 0;
        update_hold(s);
    }
    return PL_OK;
}

/* ---- lifetime and operations ---- */

void pl__socks5_close_all(void)
{
    for (struct side *s = sides; s; s = s->next)
        end(s);
}

unsigned long pl__socks5_count(void)
{
    return nsides;
}

void pl__socks5_free(void)
{
    pl_map_clear(&xfers);
    pl_map_clear(&users);
}

struct admin_ud {
    json_t *pending; /* transfers waiting for activation */
    json_t *active;  /* relaying */
};

static void admin_one(const char *key, void *value, void *ud)
{
    struct admin_ud *a = ud;
    struct xfer *x = value;
    uint64_t now = pl_loop_now(loop());
    int parties = (x->s[0] != NULL) + (x->s[1] != NULL);
    if (!x->active) {
        json_array_append_new(a->pending,
                              json_pack("{s:s, s:i, s:I}", "hash", key,
                                        "connected", parties, "ms",
                                        (json_int_t)(now - x->created_ms)));
        return;
    }
    json_array_append_new(a->active,
                          json_pack("{s:s, s:s, s:I, s:I, s:b}", "hash", key,
                                    "requester", x->u->bare, "bytes",
                                    (json_int_t)x->bytes, "ms",
                                    (json_int_t)(now - x->started_ms),
                                    "throttled", x->rate_hold));
}

void pl__socks5_admin(json_t *a)
{
    struct admin_ud u = {json_array(), json_array()};
    pl_map_each(&xfers, admin_one, &u);
    json_object_set_new(a, "connections", json_integer((json_int_t)nsides));
    json_object_set_new(a, "pending", u.pending);
    json_object_set_new(a, "active", u.active);
}
