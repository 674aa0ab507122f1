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
 * After the 101, the frames are read by wsframe.c (pl_ws_in): it
 * unmasks them, refuses unmasked client frames (RFC 6455 §5.1: close
 * 1002) and every other frame the RFC forbids (1002), reassembles
 * fragmented messages up to the largest stanza (limits.max_stanza_size
 * and 1 KiB; close 1009 beyond, told by the frame header), checks that
 * text is UTF-8 (close 1007) and refuses binary frames (RFC 7395 §3.2:
 * close 1003).  Each whole text message goes to the client stream
 * (pl_c2s_input); a ping is answered with a pong, the client's close
 * frame with a close frame of its code.  What the stream writes, one
 * element per call, leaves as one unmasked text frame written straight
 * onto the connection's buffer (header, then the pieces: no copy besides
 * the connection's own), with the namespace declarations a standalone
 * element needs (RFC 7395 §3.3.3); control frames (pong, close, ping as
 * keepalive) are written the same way, so frames are never interleaved.
 *
 * Memory: an idle WebSocket session costs struct ws (about 100 bytes:
 * the frame reader's state) beside its stream, and nothing else: the
 * reader keeps nothing on the heap between frames (wsframe.c), and the
 * stream frees its parser when it naps (c2s.h), so there is no
 * transport-level nap.  wslay's event API, used before, kept a context
 * of about 9 KiB from the upgrade and freed it at the nap; the session's
 * own objects had been allocated around it, and the holes stayed
 * resident after malloc_trim (the pages at their edges, and those shared
 * with live objects): 2.1 to 2.3 KiB per idle session more than over
 * TCP, against 0.04 to 0.10 KiB now (bench/results/2026-12-07-ws.md).
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
#include "wsframe.h"

/* RFC 6455 §1.3: appended to the key before hashing. */
#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

struct ws {
    struct pl_conn *conn; /* the upgraded connection */
    struct c2s *c;        /* its stream; NULL once gone */
    struct pl_ws_in in;   /* the client's frames */
    unsigned closing : 1; /* close frame sent: nothing more in or out */
};

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

/* One control frame: opcode, payload pl[0..n) (n <= 125). */
static void control(struct ws *w, unsigned opcode, const void *pl, size_t n)
{
    unsigned char h[10];
    pl_conn_write(w->conn, h, pl_ws_header(h, opcode, n));
    if (n)
        pl_conn_write(w->conn, pl, n);
}

/* The closing handshake from our side: a close frame with code (0: none)
 * and why, then the connection closes once the bytes are out (RFC 6455
 * §7.1.1: the server closes TCP first).  Nothing is read or sent after. */
static void fail(struct ws *w, unsigned code, const char *why)
{
    if (w->closing)
        return;
    unsigned char b[2 + 123];
    size_t n = 0;
    if (code) {
        size_t wl = why ? strlen(why) : 0;
        if (wl > 123)
            wl = 123;
        b[0] = (unsigned char)(code >> 8);
        b[1] = (unsigned char)code;
        if (wl)
            memcpy(b + 2, why, wl);
        n = 2 + wl;
    }
    control(w, PL_WS_CLOSE, b, n);
    w->closing = 1;
    pl_conn_close(w->conn);
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
    unsigned char h[10];
    pl_conn_write(w->conn, h, pl_ws_header(h, PL_WS_TEXT, len));
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
    fail(w, PL_WS_NORMAL, NULL);
}

/* struct pl_c2s_transport.keepalive: a ping (RFC 7395 §3.8: no
 * whitespace keepalives over WebSocket). */
static void ws_keepalive(void *t)
{
    struct ws *w = t;
    if (!w->closing)
        control(w, PL_WS_PING, NULL, 0);
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
    .attach = ws_attach,
};

/* ---- frames in (struct pl_ws_in_ops) ---- */

static int on_text(void *ud, const char *p, size_t n)
{
    struct ws *w = ud;
    if (w->closing || !w->c)
        return 1;
    pl_stat_inc(ws_messages_in);
    pl_c2s_input(w->c, p, n);
    return w->closing;
}

static void on_ping(void *ud, const char *p, size_t n)
{
    struct ws *w = ud;
    if (!w->closing)
        control(w, PL_WS_PONG, p, n);
}

/* The client's close frame: answered with its code (RFC 6455 §5.5.1);
 * the stream sees a lost connection unless it ended with <close/>. */
static void on_close(void *ud, unsigned code)
{
    fail(ud, code, NULL);
}

static const struct pl_ws_in_ops in_ops = {
    .text = on_text,
    .ping = on_ping,
    .close = on_close,
};

/* ---- the upgraded connection ---- */

static void on_data(struct pl_conn *conn, const char *p, size_t n)
{
    struct ws *w = conn->data;
    if (w->closing)
        return;
    /* A message is one stanza: the stanza limit plus some slack for the
     * declarations a standalone element repeats. */
    const struct pl_settings *s = &pl_server_config()->s;
    int code = pl_ws_in_feed(&w->in, p, n, (uint64_t)s->max_stanza_size + 1024,
                             &in_ops, w);
    if (code)
        fail(w, (unsigned)code,
             code == PL_WS_UNSUPPORTED ? "text frames only" : NULL);
}

static void on_closed(struct pl_conn *conn)
{
    struct ws *w = conn->data;
    w->conn = NULL;
    if (w->c)
        pl_c2s_gone(w->c);
    pl_ws_in_free(&w->in);
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
    const struct pl_settings *s = &pl_server_config()->s;
    int secure = r->secure;
    w->conn = pl_http_upgrade(r, &ws_ops, w);
    /* The stream's idle deadline now, not HTTP's keep-alive (an entry's
     * own idle_timeout still wins, listen.h). */
    pl_conn_set_idle(w->conn, (uint32_t)s->idle_timeout * 1000, 0);
    w->c = pl_c2s_open(w->conn, &transport, w, secure);
    if (!w->c) {
        fail(w, PL_WS_GOING_AWAY, NULL);
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
