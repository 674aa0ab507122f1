/*
 * websocket.c - XMPP over WebSocket (RFC 7395); see websocket.h.
 *
 * The opening handshake (RFC 6455 §4.2.1) is checked here: GET over
 * HTTP/1.1, Upgrade: websocket, Connection: Upgrade, a
 * Sec-WebSocket-Key of 16 bytes in base64 (400 otherwise),
 * Sec-WebSocket-Version 13 (426 with the version we speak otherwise),
 * the subprotocol "xmpp" offered (RFC 7395 §3.1; 400 otherwise), and
 * the Origin allowed for the host (403 otherwise: pl_http_origin_allowed).
 * A request without Upgrade gets 426.
 *
 * After the 101, wslay (its event API, server side) reads the frames:
 * it unmasks them, refuses unmasked client frames (RFC 6455 §5.1: close
 * 1002), reassembles fragmented messages up to the largest stanza
 * (limits.max_stanza_size; close 1009 beyond), checks that text is
 * UTF-8 (close 1007), answers pings and the closing handshake.  Each
 * whole text message goes to the client stream (pl_c2s_input); a binary
 * message closes with 1003.  What the stream writes, one element per
 * call, leaves as one unmasked text frame written straight onto the
 * connection's buffer (header, then the pieces: no copy besides the
 * connection's own), with the namespace declarations a standalone
 * element needs (RFC 7395 §3.3.3).  Control frames (pong, close, ping
 * as keepalive) go through wslay; frames are never interleaved, as the
 * connection takes every byte wslay hands it.
 *
 * Idle: wslay's context is about 9 KiB (two 4 KiB frame buffers), four
 * times an idle c2s session.  When the stream naps (idle 2 s,
 * c2s.h) and the client's bytes end on a frame boundary outside a
 * fragmented message, with nothing queued, the context is freed; the
 * next byte or control frame makes a fresh one (track() follows the
 * frame boundaries: headers byte by byte, payloads skipped whole).
 *
 * Ending: the client's <close/> is answered with <close/> and a close
 * frame (1000), then the connection closes once flushed; a stream error
 * is <stream:error/>, <close/>, the close frame.  A connection that ends
 * without <close/> is a lost connection: a stream-managed session waits
 * for resumption as over TCP.
 *
 * Extending: a new check of the handshake goes in handshake_error().
 */
#include "websocket.h"

#include <openssl/sha.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <wslay/wslay.h>

#include "alloc.h"
#include "xmpp/c2s.h"
#include "config.h"
#include "error.h"
#include "xmpp/framing.h"
#include "http.h"
#include "log.h"
#include "scram.h"
#include "server.h"
#include "stanza.h"
#include "stats.h"

/* RFC 6455 §1.3: appended to the key before hashing. */
#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

struct ws {
    struct pl_conn *conn;        /* the upgraded connection */
    wslay_event_context_ptr ctx; /* frame reader, control frames; NULL
                                  * while napping */
    struct c2s *c;               /* its stream; NULL once gone */
    const char *in;              /* bytes wslay may read now */
    size_t inlen;                /* how many */
    uint64_t left;               /* payload bytes of the current frame */
    unsigned char hdr[14];       /* a frame header being received */
    unsigned char hlen;          /* its bytes so far */
    unsigned in_recv : 1;        /* inside wslay_event_recv */
    unsigned closing : 1;        /* close frame queued: no more data */
    unsigned frag : 1;           /* inside a fragmented message */
};

static const struct wslay_event_callbacks callbacks;
static int ctx_get(struct ws *w);

/* ---- the handshake ---- */

/* Whether the comma-separated list value holds token (ASCII case
 * ignored, whitespace around items ignored). */
static int list_has(struct pl_str value, const char *token)
{
    size_t tl = strlen(token);
    size_t i = 0;
    while (i < value.len) {
        while (i < value.len &&
               (value.p[i] == ' ' || value.p[i] == '\t' || value.p[i] == ','))
            i++;
        size_t s = i;
        while (i < value.len && value.p[i] != ',')
            i++;
        size_t e = i;
        while (e > s && (value.p[e - 1] == ' ' || value.p[e - 1] == '\t'))
            e--;
        if (e - s == tl && strncasecmp(value.p + s, token, tl) == 0)
            return 1;
    }
    return 0;
}

/* 0 when the request is a WebSocket handshake we accept, else the status
 * to answer (with *why for the text). */
static int handshake_error(struct pl_http_req *r, const char **why)
{
    struct pl_str upgrade = pl_http_field(r, "Upgrade");
    if (!upgrade.len) {
        *why = "this resource speaks WebSocket only";
        return 426;
    }
    if (r->head->version < 11 || !list_has(upgrade, "websocket") ||
        !list_has(pl_http_field(r, "Connection"), "upgrade")) {
        *why = "not a WebSocket handshake";
        return 400;
    }
    struct pl_str version = pl_http_field(r, "Sec-WebSocket-Version");
    if (!pl_str_eq_c(version, "13")) {
        *why = "WebSocket version 13 only";
        return 426;
    }
    struct pl_str key = pl_http_field(r, "Sec-WebSocket-Key");
    struct pl_buf raw = {0};
    int bad = pl_base64_decode(key, &raw) != PL_OK || raw.len != 16;
    pl_buf_reset(&raw);
    if (bad) {
        *why = "Sec-WebSocket-Key must be 16 bytes in base64";
        return 400;
    }
    if (!list_has(pl_http_field(r, "Sec-WebSocket-Protocol"), "xmpp")) {
        *why = "the xmpp subprotocol (RFC 7395) must be offered";
        return 400;
    }
    if (!pl_http_origin_allowed(r)) {
        *why = "origin not allowed";
        return 403;
    }
    return 0;
}

/* ---- frames out ---- */

static void frame_header(struct pl_conn *conn, size_t len)
{
    unsigned char h[10];
    size_t n;
    h[0] = 0x81; /* FIN, text */
    if (len < 126) {
        h[1] = (unsigned char)len;
        n = 2;
    } else if (len <= 0xffff) {
        h[1] = 126;
        h[2] = (unsigned char)(len >> 8);
        h[3] = (unsigned char)len;
        n = 4;
    } else {
        h[1] = 127;
        for (int i = 0; i < 8; i++)
            h[2 + i] = (unsigned char)((uint64_t)len >> (56 - 8 * i));
        n = 10;
    }
    pl_conn_write(conn, h, n);
}

/* struct pl_c2s_transport.element: one text frame. */
static void ws_element(void *t, const struct pl_str *v, int n)
{
    struct ws *w = t;
    if (w->closing || !n || v[0].len < 2)
        return;
    size_t k;
    const char *extra = pl_stream_standalone_ns(v, n, &k);
    size_t el = strlen(extra);
    size_t len = el;
    for (int i = 0; i < n; i++)
        len += v[i].len;
    frame_header(w->conn, len);
    pl_conn_write(w->conn, v[0].p, k);
    if (el)
        pl_conn_write(w->conn, extra, el);
    pl_conn_write(w->conn, v[0].p + k, v[0].len - k);
    for (int i = 1; i < n; i++)
        pl_conn_write(w->conn, v[i].p, v[i].len);
    pl_stat_inc(ws_messages_out);
}

static void text(struct ws *w, const char *s)
{
    struct pl_str v = {s, strlen(s)};
    ws_element(w, &v, 1);
}

/* Hands wslay's queued control frames to the connection; closes it
 * once wslay has nothing more to read or write (closing handshake done
 * or failed). */
static void pump(struct ws *w)
{
    if (w->in_recv || !w->conn || !w->ctx)
        return;
    if (wslay_event_send(w->ctx) != 0 ||
        (!wslay_event_want_read(w->ctx) && !wslay_event_want_write(w->ctx)) ||
        (w->closing && !wslay_event_want_write(w->ctx)))
        pl_conn_close(w->conn);
}

/* struct pl_c2s_transport.header: RFC 7395 §3.4. */
static void ws_header(void *t, const char *from, const char *id)
{
    struct ws *w = t;
    struct pl_buf b = {0};
    pl_buf_append_str(&b, "<open xmlns='" PL_NS_FRAMING "' from='");
    pl_buf_append_escaped(&b, from, strlen(from), 1);
    pl_buf_append_str(&b, "' id='");
    pl_buf_append_escaped(&b, id, strlen(id), 1);
    pl_buf_append_str(&b, "' version='1.0' xml:lang='en'/>");
    struct pl_str v = pl_buf_str(&b);
    ws_element(w, &v, 1);
    pl_buf_reset(&b);
}

/* struct pl_c2s_transport.close: <close/>, then the closing handshake. */
static void ws_close(void *t)
{
    struct ws *w = t;
    if (w->closing)
        return;
    text(w, "<close xmlns='" PL_NS_FRAMING "'/>");
    if (ctx_get(w) != 0) {
        pl_conn_close(w->conn);
        return;
    }
    w->closing = 1;
    wslay_event_queue_close(w->ctx, WSLAY_CODE_NORMAL_CLOSURE, NULL, 0);
    pump(w);
}

/* struct pl_c2s_transport.keepalive: a ping (RFC 7395 §3.8: no
 * whitespace keepalives over WebSocket). */
static void ws_keepalive(void *t)
{
    struct ws *w = t;
    if (w->closing || ctx_get(w) != 0)
        return;
    struct wslay_event_msg m = {WSLAY_PING, NULL, 0};
    wslay_event_queue_msg(w->ctx, &m);
    pump(w);
}

/* struct pl_c2s_transport.nap: frees wslay's context between frames. */
static void ws_nap(void *t)
{
    struct ws *w = t;
    if (!w->ctx || w->in_recv || w->closing || w->hlen || w->left || w->frag ||
        wslay_event_get_queued_msg_count(w->ctx) ||
        wslay_event_want_write(w->ctx) || !wslay_event_want_read(w->ctx))
        return;
    wslay_event_context_free(w->ctx);
    w->ctx = NULL;
}

static void ws_attach(void *t, struct c2s *c)
{
    struct ws *w = t;
    w->c = c;
}

static const struct pl_c2s_transport transport = {
    .name = "websocket",
    .header = ws_header,
    .element = ws_element,
    .close = ws_close,
    .keepalive = ws_keepalive,
    .nap = ws_nap,
    .attach = ws_attach,
};

/* ---- wslay's callbacks ---- */

static ssize_t on_recv(wslay_event_context_ptr ctx, uint8_t *buf, size_t len,
                       int flags, void *ud)
{
    (void)flags;
    struct ws *w = ud;
    if (!w->inlen) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    size_t n = len < w->inlen ? len : w->inlen;
    memcpy(buf, w->in, n);
    w->in += n;
    w->inlen -= n;
    return (ssize_t)n;
}

static ssize_t on_send(wslay_event_context_ptr ctx, const uint8_t *data,
                       size_t len, int flags, void *ud)
{
    (void)ctx;
    (void)flags;
    struct ws *w = ud;
    pl_conn_write(w->conn, data, len);
    return (ssize_t)len;
}

static void on_msg(wslay_event_context_ptr ctx,
                   const struct wslay_event_on_msg_recv_arg *arg, void *ud)
{
    struct ws *w = ud;
    if (w->closing || !w->c)
        return;
    if (arg->opcode == WSLAY_TEXT_FRAME) {
        pl_stat_inc(ws_messages_in);
        pl_c2s_input(w->c, (const char *)arg->msg, arg->msg_length);
    } else if (arg->opcode == WSLAY_BINARY_FRAME) {
        /* RFC 7395 §3.2: XMPP goes in text frames only. */
        w->closing = 1;
        wslay_event_queue_close(ctx, WSLAY_CODE_UNSUPPORTED_DATA,
                                (const uint8_t *)"text frames only", 16);
    } else if (arg->opcode == WSLAY_CONNECTION_CLOSE) {
        w->closing = 1; /* wslay answers the close frame */
    }
}

/* ---- the upgraded connection ---- */

/* Follows the client's frame boundaries over the n bytes at p (only
 * headers are looked at), so that ws_nap() knows when wslay holds no
 * partial frame.  Sizes and masks are wslay's to check. */
static void track(struct ws *w, const unsigned char *p, size_t n)
{
    while (n) {
        if (w->left) {
            size_t k = w->left < n ? (size_t)w->left : n;
            w->left -= k;
            p += k;
            n -= k;
            continue;
        }
        w->hdr[w->hlen++] = *p++;
        n--;
        if (w->hlen < 2)
            continue;
        unsigned len7 = w->hdr[1] & 0x7f;
        unsigned need = 2 + (w->hdr[1] & 0x80 ? 4 : 0) +
                        (len7 == 126   ? 2
                         : len7 == 127 ? 8
                                       : 0);
        if (w->hlen < need)
            continue;
        uint64_t len = len7;
        if (len7 == 126)
            len = (uint64_t)w->hdr[2] << 8 | w->hdr[3];
        else if (len7 == 127)
            for (int i = 0; i < 8; i++)
                len = (i ? len << 8 : 0) | w->hdr[2 + i];
        if ((w->hdr[0] & 0x0f) < 8) /* data frames, not control */
            w->frag = !(w->hdr[0] & 0x80);
        w->left = len;
        w->hlen = 0;
    }
}

static int ctx_init(struct ws *w)
{
    if (wslay_event_context_server_init(&w->ctx, &callbacks, w) != 0) {
        w->ctx = NULL;
        return -1;
    }
    /* A message is one stanza: the stanza limit plus some slack for the
     * declarations a standalone element repeats. */
    const struct pl_settings *s = &pl_server_config()->s;
    wslay_event_config_set_max_recv_msg_length(w->ctx,
                                               (uint64_t)s->max_stanza_size +
                                                   1024);
    return 0;
}

/* wslay's context, made again after a nap; -1 when out of memory. */
static int ctx_get(struct ws *w)
{
    return w->ctx ? 0 : ctx_init(w);
}

static void on_data(struct pl_conn *conn, const char *p, size_t n)
{
    struct ws *w = conn->data;
    if (ctx_get(w) != 0) {
        pl_conn_close(conn);
        return;
    }
    track(w, (const unsigned char *)p, n);
    w->in = p;
    w->inlen = n;
    w->in_recv = 1;
    int rc = wslay_event_recv(w->ctx);
    w->in_recv = 0;
    w->inlen = 0;
    if (rc != 0) {
        pl_conn_close(conn);
        return;
    }
    pump(w);
}

static void on_closed(struct pl_conn *conn)
{
    struct ws *w = conn->data;
    w->conn = NULL;
    if (w->c)
        pl_c2s_gone(w->c);
    if (w->ctx)
        wslay_event_context_free(w->ctx);
    pl_free(w);
}

static void on_timeout(struct pl_conn *conn, int which)
{
    struct ws *w = conn->data;
    if (w->c && !w->closing)
        pl_c2s_timeout(w->c, which);
    else
        pl_conn_close(conn);
}

static const struct pl_conn_ops ws_ops = {
    .data = on_data,
    .closed = on_closed,
    .timeout = on_timeout,
};

static const struct wslay_event_callbacks callbacks = {
    .recv_callback = on_recv,
    .send_callback = on_send,
    .on_msg_recv_callback = on_msg,
};

/* The route's on_request: the handshake, then the stream. */
static void on_request(struct pl_http_req *r)
{
    const char *why = NULL;
    int status = handshake_error(r, &why);
    if (status) {
        if (status == 426) {
            pl_http_add_header(r, "Upgrade", "websocket");
            pl_http_add_header(r, "Sec-WebSocket-Version", "13");
        }
        pl_http_error(r, status, why);
        return;
    }
    /* RFC 6455 §4.2.2: base64(SHA-1(key + GUID)). */
    struct pl_str key = pl_http_field(r, "Sec-WebSocket-Key");
    char kg[128];
    int kl = snprintf(kg, sizeof(kg), "%.*s" WS_GUID, (int)key.len, key.p);
    unsigned char md[SHA_DIGEST_LENGTH];
    SHA1((const unsigned char *)kg, (size_t)kl, md);
    struct pl_buf accept = {0};
    pl_base64_encode(md, sizeof(md), &accept);
    pl_http_add_header(r, "Upgrade", "websocket");
    pl_http_add_header(r, "Connection", "Upgrade");
    pl_http_add_header(r, "Sec-WebSocket-Accept", pl_buf_cstr(&accept));
    pl_http_add_header(r, "Sec-WebSocket-Protocol", "xmpp");
    pl_buf_reset(&accept);

    struct ws *w = pl_calloc(1, sizeof(*w));
    if (ctx_init(w) != 0) {
        pl_free(w);
        pl_http_error(r, 503, NULL);
        return;
    }
    const struct pl_settings *s = &pl_server_config()->s;
    int secure = r->secure;
    w->conn = pl_http_upgrade(r, &ws_ops, w);
    /* The stream's idle deadline now, not HTTP's keep-alive (an entry's
     * own idle_timeout still wins, listen.h). */
    pl_conn_set_idle(w->conn, (uint32_t)s->idle_timeout * 1000, 0);
    w->c = pl_c2s_open(w->conn, &transport, w, secure);
    if (!w->c) {
        w->closing = 1;
        wslay_event_queue_close(w->ctx, WSLAY_CODE_GOING_AWAY, NULL, 0);
        pump(w);
        return;
    }
    pl_stat_inc(ws_sessions);
}

static const struct pl_http_route route = {
    .path = PL_WEBSOCKET_PATH,
    .service = "websocket",
    .methods = "GET",
    .on_request = on_request,
};

int pl__websocket_start(void)
{
    return pl_http_route_add(&route);
}

void pl__websocket_stop(void)
{
    pl_http_route_remove(&route);
}
