/*
 * fuzz_web.c - libFuzzer target for the live HTTP front end: the HTTP/1.1
 * server (src/http/server.c: request handling, routes, chunked bodies,
 * Expect, upgrade), XMPP over WebSocket (src/http/websocket.c: the
 * RFC 6455 handshake, then frames read by src/http/wsframe.c into the
 * client stream of src/xmpp/c2s.c) and BOSH (src/http/bosh.c: sessions, rids,
 * restarts, terminate), run in-process on a real loop with SQLite
 * storage, as src/parleyd.c builds them.
 *
 * Set-up (once, fuzz_server_start() of fuzz_common.h): as fuzz_c2s.c, a
 * configuration with one host "localhost", the default modules,
 * registration open, no listener and no TLS (SCRAM logins); accounts
 * alice ("wonderland") and bob ("builder"); a static directory at /files/
 * (index.html, a.txt, sub/b.css, .hidden, and link.txt, a symbolic
 * link).  Connections are socketpairs handed to pl__http_accept_fd.
 *
 * Input: pieces cut by separator bytes that never occur in UTF-8:
 *   0xff  what came before is written; the loop runs until quiet (no
 *         output, no storage or CPU job in flight)
 *   0xfe  also opens another connection (at most MAX_CONNS), which gets
 *         the next pieces; the earlier ones stay open
 * The first byte of the input, and the first after each 0xfe, is the
 * connection's mode: 'h' raw HTTP, 'w' WebSocket, 'b' BOSH (any other
 * byte: its value modulo 3 in that order).
 *   raw HTTP   each piece is written as it is;
 *   WebSocket  a valid upgrade request to /xmpp-websocket is written
 *              when the connection opens; then each piece's first byte
 *              says how the rest is framed (a client frame, masked by
 *              the harness):
 *                't' text  'T' text, not final  'n' continuation
 *                'N' continuation, not final  'b' binary  'p' ping
 *                'P' pong  'x' close  'u' text, unmasked  'r' raw bytes
 *              any other byte: opcode = low 4 bits, not final if 0x10,
 *              unmasked if 0x20, RSV1 if 0x40;
 *   BOSH       each piece is the body of a keep-alive POST /http-bind
 *              with its Content-Length ('r' first: raw bytes instead).
 * Before a piece is written, these tokens in it are replaced:
 *   {scram1} {scram256}  the base64 client-final-message for alice
 *         answering the last SCRAM challenge on any connection of the
 *         input (fuzz_common.h; client nonce FUZZ_SCRAM_CNONCE)
 *   {sid}  the last BOSH sid the server answered
 *   {rid}  the next rid (1000 first); {rid=} the last one again;
 *         {rid+2} skips one
 *   {previd}  the id of the last <enabled/> the server sent
 *
 * After the last piece, every connection is closed, the BOSH sessions
 * are ended (the BOSH service is stopped and started again), sessions
 * left hibernating are ended, and the accounts are reset.
 *
 * Invariants checked (abort() on violation):
 * - what the server wrote on each connection is a series of well-formed
 *   HTTP/1.1 answers (status line, fields, Content-Length or chunked
 *   consistent with the bytes, nothing after Connection: close), and
 *   after a 101, well-formed WebSocket frames from a server (final,
 *   unmasked, no RSV bit, known opcodes, control frames of at most 125
 *   bytes, a valid close code, nothing after the close frame), each text
 *   frame one whole namespace-well-formed XML element with a namespace;
 * - each text/xml answer (BOSH) is one XML <body/> of the httpbind
 *   namespace whose children have a namespace;
 * - the loop goes quiet within FUZZ_TIME_LIMIT_MS after each piece;
 * - after the input, pl__frontends_count(), pl__bosh_sessions() and
 *   pl_session_count() return to 0;
 * - LeakSanitizer (on in the fuzz build) checks the heap at exit.
 *
 * Debugging: FUZZ_WEB_LOG=1 logs the server's debug messages,
 * FUZZ_WEB_DUMP=1 prints what each connection received.
 *
 * Extending: a new token is a case in substitute(); a new mode a case in
 * cl_open() and write_piece(); a new invariant on the output goes in
 * check_http(), check_frames() or check_xml().
 */
#include <expat.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "alloc.h"
#include "buf.h"
#include "error.h"
#include "fuzz_common.h"
#include "http/http_int.h"
#include "loop.h"
#include "module.h"
#include "resources.h"
#include "scram.h"

#define MAX_CONNS 4    /* connections one input may open */
#define FIRST_RID 1000 /* {rid} the first time */

#define NS_HTTPBIND "http://jabber.org/protocol/httpbind"
#define SEP '\x01' /* expat's namespace separator */

enum {
    M_HTTP,
    M_WS,
    M_BOSH
};

static struct inproc E; /* the server, fuzz_server_start() */

static const struct pl_str none = {"", 0};

static void die(const char *what, struct pl_str detail)
{
    fprintf(stderr, "fuzz_web: invariant violated: %s\n", what);
    if (detail.len)
        fprintf(stderr, "  %.*s\n",
                (int)(detail.len > 2000 ? 2000 : detail.len), detail.p);
    abort();
}

/* ---- the client side ---- */

struct client {
    struct pl_io io;      /* our end of the socketpair, on E.loop */
    struct pl_buf out;    /* everything the server wrote */
    int mode;             /* M_HTTP, M_WS, M_BOSH */
    int open;             /* fd still ours */
    int eof;              /* the server closed its end */
    struct pl_buf sent;   /* every byte written to the server */
    unsigned long rx_seq; /* the value of rx_count at its last read */
};

static struct client conns[MAX_CONNS];
static int nconns_open;        /* entries of conns in use */
static unsigned long received; /* bytes read from the server, all conns */
static unsigned long rx_count; /* reads with bytes, all conns */
static char previd[128];       /* the last <enabled id/> seen */
static char sid[64];           /* the last BOSH sid seen */
static uint64_t last_rid;      /* the last rid a token gave */

static struct pl_str out_of(const struct client *c)
{
    struct pl_str s = pl_buf_str(&c->out);
    return s.p ? s : none;
}

static void on_client_io(struct pl_io *io, unsigned events)
{
    struct client *c = io->data;
    size_t n = inproc_read(io, &c->out, &c->eof);
    received += n;
    if (n)
        c->rx_seq = ++rx_count;
}

static void settle(const char *what)
{
    fuzz_settle(&E, &received, what);
}

static void cl_write(struct client *c, const char *p, size_t len)
{
    pl_buf_append(&c->sent, p, len);
    /* When the server closed, the rest is lost, as on a net. */
    if (inproc_write(&E, &c->io, p, len, &c->eof, FUZZ_TIME_LIMIT_MS) ==
        PL_EAGAIN)
        die("the server stopped reading", none);
}

static void write_str(struct client *c, const char *s)
{
    cl_write(c, s, strlen(s));
}

static void cl_open(unsigned char mode_byte)
{
    struct client *c = &conns[nconns_open];
    memset(c, 0, sizeof(*c));
    switch (mode_byte) {
    case 'h': c->mode = M_HTTP; break;
    case 'w': c->mode = M_WS; break;
    case 'b': c->mode = M_BOSH; break;
    default: c->mode = mode_byte % 3;
    }
    inproc_connect(&E, pl__http_accept_fd, &c->io, on_client_io, c);
    c->open = 1;
    nconns_open++;
    if (c->mode == M_WS) {
        write_str(c, "GET /xmpp-websocket HTTP/1.1\r\n"
                     "Host: localhost\r\n"
                     "Upgrade: websocket\r\n"
                     "Connection: Upgrade\r\n"
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\n"
                     "Sec-WebSocket-Protocol: xmpp\r\n\r\n");
        settle("after the WebSocket handshake");
    }
}

/* ---- tokens ---- */

static int has_prefix(struct pl_str s, struct pl_str prefix)
{
    return s.len >= prefix.len && memcmp(s.p, prefix.p, prefix.len) == 0;
}

/* The value of the last attr='...' (attr with its leading space and
 * "='") in out, into v (cap bytes), if one fits. */
static void note_attr(struct pl_str out, const char *attr, char *v, size_t cap)
{
    size_t al = strlen(attr);
    const char *p = out.p, *end = out.p + out.len;
    while (p && (p = memmem(p, (size_t)(end - p), attr, al))) {
        p += al;
        const char *q = memchr(p, '\'', (size_t)(end - p));
        if (q && (size_t)(q - p) < cap) {
            memcpy(v, p, (size_t)(q - p));
            v[q - p] = '\0';
        }
    }
}

/* The tokens from what every connection received so far. */
static void note_tokens(void)
{
    for (int i = 0; i < nconns_open; i++) {
        struct pl_str out = out_of(&conns[i]);
        note_attr(out, " sid='", sid, sizeof(sid));
        const char *p = out.p, *end = out.p + out.len;
        while (p && (p = memmem(p, (size_t)(end - p), "<enabled ", 9))) {
            const char *gt = memchr(p, '>', (size_t)(end - p));
            p += 9;
            if (gt)
                note_attr((struct pl_str){p, (size_t)(gt - p)}, " id='", previd,
                          sizeof(previd));
        }
    }
}

/* The output of the connection that last received bytes among those
 * that hold a SCRAM challenge (over BOSH, the answer holding it may come
 * on any of the session's connections). */
static struct pl_str challenge_out(void)
{
    static const char open[] = "<challenge ";
    struct pl_str best = none;
    unsigned long best_seq = 0;
    for (int i = 0; i < nconns_open; i++) {
        struct pl_str out = out_of(&conns[i]);
        if (memmem(out.p, out.len, open, sizeof(open) - 1) &&
            conns[i].rx_seq >= best_seq) {
            best = out;
            best_seq = conns[i].rx_seq;
        }
    }
    return best;
}

/* The length of the BOSH token at the start of rest, its replacement
 * appended to dst; 0 if there is none. */
static size_t bosh_token(struct pl_str rest, struct pl_buf *dst)
{
    static const struct {
        const char *token;
        int step; /* added to last_rid first */
    } rids[] = {{"{rid}", 1}, {"{rid=}", 0}, {"{rid+2}", 2}};
    if (has_prefix(rest, PL_STR("{sid}"))) {
        pl_buf_append_str(dst, sid);
        return strlen("{sid}");
    }
    for (size_t i = 0; i < sizeof(rids) / sizeof(rids[0]); i++)
        if (has_prefix(rest, pl_str_c(rids[i].token))) {
            char n[32];
            last_rid += (uint64_t)rids[i].step;
            snprintf(n, sizeof(n), "%llu", (unsigned long long)last_rid);
            pl_buf_append_str(dst, n);
            return strlen(rids[i].token);
        }
    return 0;
}

/* Replaces the tokens of piece into dst (see the file comment). */
static void substitute(const char *p, size_t len, struct pl_buf *dst)
{
    /* What a token could need, looked for only if there may be one. */
    struct pl_str challenge = memchr(p, '{', len) ? challenge_out() : none;
    for (size_t k = 0; k < len;) {
        struct pl_str rest = {p + k, len - k};
        size_t n = 0;
        if (p[k] == '{') {
            n = fuzz_token(rest, challenge, previd, dst);
            if (!n)
                n = bosh_token(rest, dst);
        }
        if (!n) {
            pl_buf_append(dst, p + k, 1);
            n = 1;
        }
        k += n;
    }
}

/* ---- writing a piece ---- */

/* A client frame (RFC 6455 §5.2): b0 is FIN, RSV and opcode; masked with
 * a fixed key unless told otherwise. */
static void ws_frame(struct pl_buf *f, unsigned char b0, int masked,
                     struct pl_str payload)
{
    static const unsigned char key[4] = {0x37, 0xfa, 0x21, 0x3d};
    unsigned char h[14];
    size_t n = 2, len = payload.len;
    h[0] = b0;
    if (len < 126) {
        h[1] = (unsigned char)len;
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
    if (masked) {
        h[1] |= 0x80;
        memcpy(h + n, key, 4);
        n += 4;
    }
    pl_buf_append(f, h, n);
    for (size_t i = 0; i < len; i++) {
        char ch = (char)(payload.p[i] ^ (masked ? key[i % 4] : 0));
        pl_buf_append(f, &ch, 1);
    }
}

/* Writes piece (tokens replaced) to c as its mode says. */
static void write_piece(struct client *c, const char *p, size_t len)
{
    struct pl_buf sub = {0}, w = {0};
    if (c->mode == M_HTTP) {
        substitute(p, len, &sub);
        struct pl_str s = pl_buf_str(&sub);
        if (s.len)
            cl_write(c, s.p, s.len);
    } else if (c->mode == M_WS && len) {
        unsigned char f = (unsigned char)p[0];
        substitute(p + 1, len - 1, &sub);
        struct pl_str s = pl_buf_str(&sub);
        if (!s.p)
            s = none;
        int masked = 1;
        unsigned char b0;
        switch (f) {
        case 't': b0 = 0x81; break;
        case 'T': b0 = 0x01; break;
        case 'n': b0 = 0x80; break;
        case 'N': b0 = 0x00; break;
        case 'b': b0 = 0x82; break;
        case 'p': b0 = 0x89; break;
        case 'P': b0 = 0x8a; break;
        case 'x': b0 = 0x88; break;
        case 'u':
            b0 = 0x81;
            masked = 0;
            break;
        case 'r':
            b0 = 0;
            masked = -1;
            break;
        default:
            b0 = (unsigned char)((f & 0x0f) | (f & 0x10 ? 0 : 0x80) |
                                 (f & 0x40 ? 0x40 : 0));
            masked = !(f & 0x20);
        }
        if (masked < 0)
            pl_buf_append(&w, s.p, s.len);
        else
            ws_frame(&w, b0, masked, s);
        struct pl_str ws = pl_buf_str(&w);
        if (ws.len)
            cl_write(c, ws.p, ws.len);
    } else if (c->mode == M_BOSH && len) {
        int raw = p[0] == 'r';
        substitute(p + raw, len - (size_t)raw, &sub);
        struct pl_str s = pl_buf_str(&sub);
        if (!s.p)
            s = none;
        if (!raw)
            pl_buf_printf(&w,
                          "POST /http-bind HTTP/1.1\r\nHost: localhost\r\n"
                          "Content-Type: text/xml; charset=utf-8\r\n"
                          "Content-Length: %zu\r\n\r\n",
                          s.len);
        pl_buf_append(&w, s.p, s.len);
        struct pl_str ws = pl_buf_str(&w);
        if (ws.len)
            cl_write(c, ws.p, ws.len);
    }
    pl_buf_reset(&sub);
    pl_buf_reset(&w);
}

/* ---- checking what the server wrote ---- */

struct xcheck {
    int depth;       /* open elements */
    int bosh;        /* the root must be an httpbind <body/> */
    int elements;    /* top-level elements */
    const char *bad; /* what was wrong, or NULL */
};

static void XMLCALL on_start(void *ud, const XML_Char *name,
                             const XML_Char **attrs)
{
    (void)attrs;
    struct xcheck *x = ud;
    const char *sep = strchr(name, SEP);
    x->depth++;
    if (x->depth == 1) {
        x->elements++;
        if (x->bosh && (!sep || (size_t)(sep - name) != strlen(NS_HTTPBIND) ||
                        strncmp(name, NS_HTTPBIND, strlen(NS_HTTPBIND)) ||
                        strcmp(sep + 1, "body")))
            x->bad = "a BOSH answer that is not an httpbind <body/>";
        else if (!x->bosh && !sep)
            x->bad = "a WebSocket element without a namespace";
    } else if (x->depth == 2 && x->bosh && !sep) {
        x->bad = "an element of a BOSH body without a namespace";
    }
}

static void XMLCALL on_end(void *ud, const XML_Char *name)
{
    (void)name;
    struct xcheck *x = ud;
    x->depth--;
}

/* One whole XML element, namespace-well-formed; bosh: a BOSH body. */
static void check_xml(struct pl_str s, int bosh, struct pl_str all)
{
    struct xcheck x = {0, bosh, 0, NULL};
    XML_Parser p = XML_ParserCreateNS("UTF-8", SEP);
    if (!p)
        abort();
    XML_SetUserData(p, &x);
    XML_SetElementHandler(p, on_start, on_end);
    enum XML_Status st = XML_Parse(p, s.p, (int)s.len, 1);
    if (st == XML_STATUS_ERROR) {
        fprintf(stderr, "fuzz_web: expat: %s at byte %ld of\n%.*s\n",
                XML_ErrorString(XML_GetErrorCode(p)),
                (long)XML_GetCurrentByteIndex(p), (int)s.len, s.p);
        XML_ParserFree(p);
        die(bosh ? "a BOSH answer that is not well-formed XML"
                 : "a WebSocket text frame that is not well-formed XML",
            all);
    }
    XML_ParserFree(p);
    if (x.bad) {
        fprintf(stderr, "fuzz_web: in %.*s\n", (int)s.len, s.p);
        die(x.bad, all);
    }
    if (x.elements != 1)
        die("not exactly one XML element", s);
}

/* Valid close codes a server sends (RFC 6455 §7.4). */
static int close_code_ok(unsigned code)
{
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1011) ||
           (code >= 3000 && code <= 4999);
}

/* The server's frames after a 101 (RFC 6455 §5). */
static void check_frames(struct pl_str s, struct pl_str all)
{
    const unsigned char *u = (const unsigned char *)s.p;
    size_t pos = 0;
    int closed = 0;
    while (pos < s.len) {
        if (closed)
            die("a frame after the close frame", all);
        if (s.len - pos < 2)
            die("a truncated frame header", all);
        unsigned b0 = u[pos], b1 = u[pos + 1];
        unsigned op = b0 & 0x0f;
        pos += 2;
        if (!(b0 & 0x80))
            die("a fragmented frame from the server", all);
        if (b0 & 0x70)
            die("an RSV bit set by the server", all);
        if (b1 & 0x80)
            die("a masked frame from the server (RFC 6455 §5.1)", all);
        if (op != 1 && op != 8 && op != 9 && op != 10)
            die("a frame of an opcode the server never sends", all);
        uint64_t len = b1 & 0x7f;
        if (len == 126) {
            if (s.len - pos < 2)
                die("a truncated frame length", all);
            len = (uint64_t)u[pos] << 8 | u[pos + 1];
            pos += 2;
            if (len < 126)
                die("a frame length not in its shortest form", all);
        } else if (len == 127) {
            if (s.len - pos < 8)
                die("a truncated frame length", all);
            len = 0;
            for (int i = 0; i < 8; i++)
                len = len << 8 | u[pos + (size_t)i];
            pos += 8;
            if (len <= 0xffff || len >> 63)
                die("a frame length not in its shortest form", all);
        }
        if (len > s.len - pos)
            die("a truncated frame", all);
        struct pl_str payload = {s.p + pos, (size_t)len};
        pos += (size_t)len;
        if (op >= 8 && len > 125)
            die("a control frame over 125 bytes", all);
        if (op == 1)
            check_xml(payload, 0, all);
        if (op == 8) {
            closed = 1;
            if (len == 1)
                die("a close frame with a one-byte payload", all);
            if (len >= 2 &&
                !close_code_ok((unsigned)u[pos - len] << 8 | u[pos - len + 1]))
                die("a close frame with an invalid code", all);
        }
    }
}

/* The end of the line at s[pos..), or die. */
static size_t line_end(struct pl_str s, size_t pos, struct pl_str all)
{
    const char *e = memmem(s.p + pos, s.len - pos, "\r\n", 2);
    if (!e)
        die("a truncated HTTP answer head", all);
    size_t end = (size_t)(e - s.p);
    for (size_t i = pos; i < end; i++)
        if (s.p[i] == '\n' || s.p[i] == '\r' || s.p[i] == '\0')
            die("a bare CR, LF or NUL in an HTTP answer head", all);
    return end;
}

static int field_is(struct pl_str line, const char *name, struct pl_str *v)
{
    size_t n = strlen(name);
    if (line.len < n + 1 || strncasecmp(line.p, name, n) || line.p[n] != ':')
        return 0;
    size_t i = n + 1;
    while (i < line.len && line.p[i] == ' ')
        i++;
    *v = (struct pl_str){line.p + i, line.len - i};
    return 1;
}

/* The server's answers on one connection (see the file comment). */
static void check_http(const struct client *c)
{
    /* A HEAD request may have been written (in pieces, perhaps): its
     * answer has a Content-Length but no body. */
    struct pl_str w = pl_buf_str(&c->sent);
    int sent_head = w.p && memmem(w.p, w.len, "HEAD", 4);
    struct pl_str s = out_of(c);
    struct pl_str all = s;
    size_t pos = 0;
    while (pos < s.len) {
        size_t e = line_end(s, pos, all);
        struct pl_str line = {s.p + pos, e - pos};
        if (line.len < 13 || memcmp(line.p, "HTTP/1.1 ", 9) ||
            line.p[9] < '1' || line.p[9] > '5' || line.p[10] < '0' ||
            line.p[10] > '9' || line.p[11] < '0' || line.p[11] > '9' ||
            line.p[12] != ' ')
            die("a malformed HTTP status line", all);
        int status = atoi(line.p + 9);
        pos = e + 2;
        long long clen = -1;
        int chunked = 0, close = 0, xml = 0, upgrade = 0;
        for (;;) {
            e = line_end(s, pos, all);
            line = (struct pl_str){s.p + pos, e - pos};
            pos = e + 2;
            if (!line.len)
                break;
            const char *colon = memchr(line.p, ':', line.len);
            if (!colon || colon == line.p)
                die("a malformed HTTP field", all);
            for (const char *q = line.p; q < colon; q++)
                if (*q <= ' ' || *q >= 127)
                    die("a malformed HTTP field name", all);
            struct pl_str v;
            if (field_is(line, "Content-Length", &v)) {
                if (clen >= 0)
                    die("two Content-Length fields", all);
                char *end;
                char num[32];
                if (!v.len || v.len >= sizeof(num))
                    die("a bad Content-Length", all);
                memcpy(num, v.p, v.len);
                num[v.len] = '\0';
                clen = strtoll(num, &end, 10);
                if (*end || clen < 0)
                    die("a bad Content-Length", all);
            } else if (field_is(line, "Transfer-Encoding", &v)) {
                if (!pl_str_eq_c(v, "chunked"))
                    die("a transfer coding other than chunked", all);
                chunked = 1;
            } else if (field_is(line, "Connection", &v)) {
                close = pl_str_eq_c(v, "close");
            } else if (field_is(line, "Content-Type", &v)) {
                xml = v.len >= 8 && strncmp(v.p, "text/xml", 8) == 0;
            } else if (field_is(line, "Upgrade", &v)) {
                upgrade = pl_str_eq_c(v, "websocket");
            }
        }
        if (chunked && clen >= 0)
            die("both Content-Length and chunked", all);
        if (status == 101) {
            if (!upgrade || clen >= 0 || chunked)
                die("a 101 that is not a WebSocket upgrade", all);
            check_frames((struct pl_str){s.p + pos, s.len - pos}, all);
            return;
        }
        if (status < 200)
            continue; /* 100 Continue: the answer follows */
        struct pl_buf body = {0};
        if (status == 204 || status == 304) {
            if (chunked || (status == 204 && clen >= 0))
                die("a body announced for a 204 or 304", all);
        } else if (chunked) {
            for (;;) {
                e = line_end(s, pos, all);
                char *end;
                unsigned long long n = strtoull(s.p + pos, &end, 16);
                if (end != s.p + e || e == pos)
                    die("a malformed chunk size", all);
                pos = e + 2;
                if (n > s.len - pos || s.len - pos - n < 2 ||
                    memcmp(s.p + pos + n, "\r\n", 2))
                    die("a truncated chunk", all);
                if (!n)
                    break; /* no trailer fields from us */
                pl_buf_append(&body, s.p + pos, (size_t)n);
                pos += (size_t)n + 2;
            }
            pos += 2;
        } else if (clen >= 0) {
            size_t rest = s.len - pos;
            int fits = (uint64_t)clen <= rest;
            int next_ok = fits && ((uint64_t)clen == rest ||
                                   has_prefix((struct pl_str){s.p + pos + clen,
                                                              rest - clen},
                                              PL_STR("HTTP/1.1 ")));
            int head_ok = sent_head &&
                          (rest == 0 ||
                           has_prefix((struct pl_str){s.p + pos, rest},
                                      PL_STR("HTTP/1.1 ")));
            if (!next_ok && head_ok)
                clen = 0; /* the answer to a HEAD */
            else if (!fits)
                die("an HTTP body shorter than its Content-Length", all);
            pl_buf_append(&body, s.p + pos, (size_t)clen);
            pos += (size_t)clen;
        } else {
            if (!close)
                die("an HTTP answer without length on a kept connection", all);
            pl_buf_append(&body, s.p + pos, s.len - pos);
            pos = s.len;
        }
        struct pl_str b = pl_buf_str(&body);
        if (xml && status == 200 && b.len)
            check_xml(b, 1, all);
        else if (xml && status == 200 && !sent_head)
            die("an empty text/xml answer", all);
        pl_buf_reset(&body);
        if (close && pos < s.len)
            die("bytes after an answer with Connection: close", all);
    }
}

/* ---- set-up ---- */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    inproc_mkdir(&E, "fuzz_web");
    char path[128];
    /* A static directory: files with Range, ETag, 304, HEAD, index.html
     * and a symbolic link that must not be followed. */
    static const struct {
        const char *name;
        const char *text; /* NULL: a directory */
    } files[] = {
        {"www", NULL},
        {"www/index.html", "<html><body>parley</body></html>\n"},
        {"www/a.txt", "0123456789abcdefghijklmnopqrstuvwxyz\n"},
        {"www/sub", NULL},
        {"www/sub/b.css", "body { color: black; }\n"},
        {"www/.hidden", "secret\n"},
    };
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", E.dir, files[i].name);
        if (!files[i].text) {
            inproc_need(&E, mkdir(path, 0700) == 0, "mkdir");
            continue;
        }
        FILE *w = fopen(path, "w");
        inproc_need(&E, w && fputs(files[i].text, w) >= 0 && fclose(w) == 0,
                    "writing a static file");
    }
    snprintf(path, sizeof(path), "%s/www/link.txt", E.dir);
    inproc_need(&E, symlink("a.txt", path) == 0, "symlink");
    /* Small HTTP limits, so that the fuzzer reaches them. */
    char http[256];
    snprintf(http, sizeof(http),
             "http: { max_line = 512; max_headers = 24; bosh_max_hold = 2; "
             "bosh_max_sessions_per_ip = 1000; static = ( { path = "
             "\"/files/\"; root = \"%s/www\"; } ); };\n",
             E.dir);
    fuzz_server_start(&E, "FUZZ_WEB_LOG", http);
    return 0;
}

/* ---- one input ---- */

static void collect_session(struct pl_session *s, void *ud)
{
    struct pl_buf *ids = ud;
    pl_buf_append(ids, &s->id, sizeof(s->id));
}

/* Ends the sessions that outlived their connection (hibernating). */
static void kick_left(void)
{
    struct pl_buf ids = {0};
    pl_session_each(collect_session, &ids);
    for (size_t off = 0; off + sizeof(uint64_t) <= ids.len;
         off += sizeof(uint64_t)) {
        uint64_t id;
        memcpy(&id, ids.data + ids.off + off, sizeof(id));
        struct pl_session *s = pl_session_by_id(id);
        if (s)
            s->ops->close(s, "system-shutdown", NULL);
    }
    pl_buf_reset(&ids);
}

static void cl_close(struct client *c)
{
    if (!c->open)
        return;
    pl_io_stop(&c->io);
    close(c->io.fd);
    c->open = 0;
    if (getenv("FUZZ_WEB_DUMP")) {
        struct pl_str out = out_of(c);
        fprintf(stderr, "fuzz_web: connection %d got:\n", (int)(c - conns));
        fwrite(out.p, 1, out.len, stderr);
        fputc('\n', stderr);
    }
    check_http(c);
}

static void count_left(const char *what, unsigned long n)
{
    if (!n)
        return;
    char s[32];
    snprintf(s, sizeof(s), "%lu", n);
    die(what, pl_str_c(s));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *in = (const char *)data;
    uint64_t start = inproc_now_ms();
    nconns_open = 0;
    previd[0] = sid[0] = '\0';
    last_rid = FIRST_RID - 1;
    if (!size)
        return 0;
    cl_open(data[0]);
    size_t from = 1;
    for (size_t k = 1; k <= size; k++) {
        unsigned char b = k < size ? data[k] : 0xff;
        if (b < 0xfe)
            continue;
        struct client *c = &conns[nconns_open - 1];
        write_piece(c, in + from, k - from);
        from = k + 1;
        settle("after a piece of input");
        note_tokens();
        if (b == 0xff || nconns_open == MAX_CONNS)
            continue;
        if (k + 1 >= size)
            break;
        cl_open(data[k + 1]);
        from = k + 2;
        k++;
    }
    for (int i = 0; i < nconns_open; i++)
        cl_close(&conns[i]);
    settle("after closing every connection");
    /* BOSH sessions outlive their requests: end them as a stop does.  A
     * connection whose request is held with more bytes behind it reads
     * nothing (no pipelining), so it notices its client's close only once
     * answered: that is now. */
    pl__bosh_stop();
    inproc_need(&E, pl__bosh_start(&pl__http_settings()->bosh) == PL_OK,
                "pl__bosh_start");
    uint64_t deadline = inproc_now_ms() + FUZZ_TIME_LIMIT_MS;
    while (pl__frontends_count() && inproc_now_ms() < deadline)
        inproc_pump(&E, 1);
    settle("after ending the BOSH sessions");
    count_left("connections left after the client closed them",
               pl__frontends_count());
    count_left("BOSH sessions left", pl__bosh_sessions());
    kick_left();
    settle("after ending hibernated sessions");
    count_left("sessions left after every connection ended",
               pl_session_count());
    fuzz_reset_accounts(&E, &received);
    for (int i = 0; i < nconns_open; i++) {
        pl_buf_reset(&conns[i].out);
        pl_buf_reset(&conns[i].sent);
    }
    if (inproc_now_ms() - start > 4 * FUZZ_TIME_LIMIT_MS)
        die("one input took too long", none);
    return 0;
}
