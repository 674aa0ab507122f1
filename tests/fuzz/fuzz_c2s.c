/*
 * fuzz_c2s.c - libFuzzer target for the stanza handling of client
 * sessions: the c2s stream state machine (src/xmpp/c2s.c, sasl.c) with
 * stream management (c2s_sm.c, sm.c), the router and the default modules,
 * run in-process on a real loop with SQLite storage, as src/parleyd.c
 * builds them.
 *
 * Set-up (once, fuzz_server_start() of fuzz_common.h): a configuration
 * with one host "localhost", the default modules, registration open,
 * require_encryption = false, no listener.
 * There is no TLS in this target: streams are plain, so STARTTLS is never
 * offered, SASL PLAIN is refused (parleyd offers it only inside TLS) and
 * logins go through SCRAM.  Accounts alice (password "wonderland") and bob
 * ("builder") exist; the rate and failure limits are raised so that one
 * input cannot lock out the next.
 *
 * Input: the bytes a client writes, cut by separator bytes that never
 * occur in UTF-8:
 *   0xff  what came before is written; the loop runs until quiet (no
 *         output, no storage or CPU job in flight), so feeds are split
 *   0xfe  also opens another connection (at most MAX_CONNS), which gets
 *         the next bytes; the earlier ones stay open (resource conflicts,
 *         a resumption while the old connection lives)
 *   0xfd  like 0xfe but closes the current connection first (XEP-0198
 *         hibernation, then <resume/> on the new one)
 * Before a piece is written, these tokens in it are replaced:
 *   {scram1} {scram256}  the base64 client-final-message answering the
 *         last SCRAM challenge on this connection, for alice with the
 *         client-first-message "n,,n=alice,r=fyko+d2lbbFgONRv9qkxdawL"
 *         (the server's nonce is random: the fuzzer could never guess it;
 *         fuzz_common.c computes it)
 *   {previd}  the id of the last <enabled/> the server sent on any
 *         connection of this input
 *
 * After the last piece, every connection is closed, sessions left
 * hibernating are ended (kicked, as an account removal does), and the
 * accounts are reset (every account deleted with its data, alice and bob
 * created again, "user/deleted" fired) so that no input sees what an
 * earlier one stored.
 *
 * Invariants checked (abort() on violation):
 * - what the server wrote on each connection is a well-formed prefix of
 *   XML streams (expat, not restricted), a new stream only after SASL
 *   <success/>, each rooted at <stream:stream>;
 * - every <stream:error/> holds exactly one RFC 6120 §4.9.3 condition and
 *   nothing follows it but the end of the stream;
 * - after the input, pl__frontends_count() and pl_session_count() return to 0 and
 *   no server-initiated IQ still waits (pl_iq_pending());
 * - the loop goes quiet within FUZZ_TIME_LIMIT_MS after each piece and after
 *   the end (bounded time per input);
 * - LeakSanitizer (on in the fuzz build) checks the heap at exit.
 *
 * Extending: a new token is a case in substitute(); a new invariant on the
 * server's output goes in the expat handlers (struct doc).
 */
#include <expat.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "alloc.h"
#include "buf.h"
#include "error.h"
#include "fuzz_common.h"
#include "iq.h"
#include "loop.h"
#include "resources.h"
#include "scram.h"
#include "stats.h"
#include "module.h"
#include "xmpp/c2s.h"

#define MAX_CONNS 4 /* connections one input may open */

#define NS_STREAMS "http://etherx.jabber.org/streams"
#define NS_STREAM_ERR "urn:ietf:params:xml:ns:xmpp-streams"
#define NS_SASL "urn:ietf:params:xml:ns:xmpp-sasl"
#define NS_BIND "urn:ietf:params:xml:ns:xmpp-bind"
#define SEP '\x01' /* expat's namespace separator */

static struct inproc E; /* the server, fuzz_server_start() */

static void die(const char *what, struct pl_str detail)
{
    fprintf(stderr, "fuzz_c2s: invariant violated: %s\n", what);
    if (detail.len)
        fprintf(stderr, "  %.*s\n", (int)detail.len, detail.p);
    abort();
}

static const struct pl_str none = {"", 0};

/* ---- the client side ---- */

struct client {
    struct pl_io io;   /* our end of the socketpair, on E.loop */
    struct pl_buf out; /* everything the server wrote */
    int open;          /* fd still ours */
    int eof;           /* the server closed its end */
};

static struct client conns[MAX_CONNS];
static int nconns_open;        /* entries of conns in use */
static unsigned long received; /* bytes read from the server, all conns */
static char previd[128];       /* the last <enabled id/> seen */

static void on_client_io(struct pl_io *io, unsigned events)
{
    struct client *c = io->data;
    received += inproc_read(io, &c->out, &c->eof);
}

static void settle(const char *what)
{
    fuzz_settle(&E, &received, what);
}

static void cl_open(void)
{
    struct client *c = &conns[nconns_open];
    memset(c, 0, sizeof(*c));
    inproc_connect(&E, pl__c2s_accept_fd, &c->io, on_client_io, c);
    c->open = 1;
    nconns_open++;
}

static void cl_write(struct client *c, const char *p, size_t len)
{
    /* When the server closed, the rest is lost, as on a net. */
    if (inproc_write(&E, &c->io, p, len, &c->eof, FUZZ_TIME_LIMIT_MS) ==
        PL_EAGAIN)
        die("the server stopped reading", none);
}

/* ---- checking what the server wrote ---- */


static int is_condition(const char *name)
{
    for (size_t i = 0; pl_stream_conditions[i]; i++)
        if (strcmp(name, pl_stream_conditions[i]) == 0)
            return 1;
    return 0;
}

/* One XML document (stream) of the server's output. */
struct doc {
    XML_Parser p;        /* expat, with namespaces */
    struct pl_str all;   /* this document's bytes onwards, for messages */
    int depth;           /* open elements */
    int in_error;        /* inside <stream:error/> */
    int conditions;      /* defined conditions in it */
    int after_error;     /* a stream error ended */
    int closed;          /* </stream:stream> seen */
    int capture;         /* inside <bind><jid> of an iq */
    int in_iq_bind;      /* depth-3 <bind/> inside a depth-2 <iq/> */
    size_t restart;      /* bytes up to the end of SASL <success/> */
    struct pl_buf jid;   /* text of <jid/> being captured */
    struct pl_buf *jids; /* bound JIDs, NUL-separated */
};

/* Splits expat's "ns\1local" (or "local"). */
static const char *local_of(const char *name, struct pl_str *ns)
{
    const char *s = strchr(name, SEP);
    if (!s) {
        *ns = (struct pl_str){"", 0};
        return name;
    }
    *ns = (struct pl_str){name, (size_t)(s - name)};
    return s + 1;
}

static void XMLCALL on_start(void *ud, const XML_Char *name,
                             const XML_Char **attrs)
{
    struct doc *d = ud;
    struct pl_str ns;
    const char *local = local_of(name, &ns);
    d->depth++;
    if (d->depth == 1) {
        if (!pl_str_eq(ns, PL_STR(NS_STREAMS)) || strcmp(local, "stream"))
            die("a stream that is not <stream:stream>", d->all);
        return;
    }
    if (d->depth == 2) {
        if (d->after_error)
            die("an element after the stream error", d->all);
        d->in_error = pl_str_eq(ns, PL_STR(NS_STREAMS)) &&
                      strcmp(local, "error") == 0;
        d->conditions = 0;
        d->in_iq_bind = strcmp(local, "iq") == 0 ? 1 : 0;
        return;
    }
    if (d->depth == 3) {
        if (d->in_error && pl_str_eq(ns, PL_STR(NS_STREAM_ERR)) &&
            strcmp(local, "text") != 0) {
            if (!is_condition(local))
                die("a stream error condition RFC 6120 does not define",
                    pl_str_c(local));
            d->conditions++;
        }
        if (d->in_iq_bind)
            d->in_iq_bind = pl_str_eq(ns, PL_STR(NS_BIND)) &&
                                    strcmp(local, "bind") == 0
                                ? 2
                                : 1;
        return;
    }
    if (d->depth == 4 && d->in_iq_bind == 2 && pl_str_eq(ns, PL_STR(NS_BIND)) &&
        strcmp(local, "jid") == 0) {
        d->capture = 1;
        pl_buf_reset(&d->jid);
    }
}

static void XMLCALL on_end(void *ud, const XML_Char *name)
{
    struct doc *d = ud;
    struct pl_str ns;
    const char *local = local_of(name, &ns);
    if (d->depth == 4 && d->capture) {
        d->capture = 0;
        pl_buf_append(d->jids, d->jid.data ? d->jid.data + d->jid.off : "",
                      d->jid.len);
        pl_buf_append(d->jids, "", 1);
        pl_buf_reset(&d->jid);
    }
    if (d->depth == 3 && d->in_iq_bind == 2)
        d->in_iq_bind = 1;
    if (d->depth == 2) {
        if (d->in_error) {
            if (d->conditions != 1)
                die("a stream error without exactly one condition", d->all);
            d->in_error = 0;
            d->after_error = 1;
        }
        if (pl_str_eq(ns, PL_STR(NS_SASL)) && strcmp(local, "success") == 0) {
            /* RFC 6120 §6.4.6: a new stream follows. */
            d->restart = (size_t)(XML_GetCurrentByteIndex(d->p) +
                                  XML_GetCurrentByteCount(d->p));
            XML_StopParser(d->p, XML_TRUE);
        }
    }
    if (d->depth == 1)
        d->closed = 1;
    d->depth--;
}

static void XMLCALL on_text(void *ud, const XML_Char *s, int len)
{
    struct doc *d = ud;
    if (d->capture)
        pl_buf_append(&d->jid, s, (size_t)len);
}

/*
 * Checks the whole output of one connection; appends the JIDs it bound to
 * jids.  A SASL success restarts the stream: the bytes after it are a new
 * document.
 */
static void check_output(struct pl_str out, struct pl_buf *jids)
{
    size_t base = 0;
    while (base < out.len) {
        struct doc d;
        memset(&d, 0, sizeof(d));
        d.all = (struct pl_str){out.p + base, out.len - base};
        d.jids = jids;
        d.p = XML_ParserCreateNS(NULL, SEP);
        if (!d.p)
            abort();
        XML_SetUserData(d.p, &d);
        XML_SetElementHandler(d.p, on_start, on_end);
        XML_SetCharacterDataHandler(d.p, on_text);
        enum XML_Status st = XML_Parse(d.p, out.p + base, (int)(out.len - base),
                                       0);
        if (st == XML_STATUS_ERROR) {
            fprintf(stderr, "fuzz_c2s: expat: %s at byte %ld\n",
                    XML_ErrorString(XML_GetErrorCode(d.p)),
                    (long)XML_GetCurrentByteIndex(d.p));
            die("the server's output is not well-formed XML", d.all);
        }
        XML_ParserFree(d.p);
        pl_buf_reset(&d.jid);
        if (st != XML_STATUS_SUSPENDED)
            break;
        if (d.restart == 0 || d.restart > out.len - base)
            abort();
        base += d.restart;
    }
}

/* ---- tokens ---- */

/* Remembers the id of each <enabled/> the server sent. */
static void note_enabled(struct pl_str out)
{
    const char *p = out.p, *end = out.p + out.len;
    while (p && (p = memmem(p, (size_t)(end - p), "<enabled ", 9))) {
        const char *gt = memchr(p, '>', (size_t)(end - p));
        const char *id = memmem(p, (size_t)(end - p), " id='", 5);
        p += 9;
        if (!gt || !id || id > gt)
            continue;
        id += 5;
        const char *q = memchr(id, '\'', (size_t)(gt - id));
        if (q && (size_t)(q - id) < sizeof(previd)) {
            memcpy(previd, id, (size_t)(q - id));
            previd[q - id] = '\0';
        }
    }
}

/* Writes piece to c with the tokens replaced (see the file comment). */
static void substitute(struct client *c, const char *p, size_t len,
                       struct pl_buf *dst)
{
    struct pl_str out = pl_buf_str(&c->out);
    if (!out.p)
        out = none;
    for (size_t k = 0; k < len;) {
        size_t n = 0;
        if (p[k] == '{')
            n = fuzz_token((struct pl_str){p + k, len - k}, out, previd, dst);
        if (!n) {
            pl_buf_append(dst, p + k, 1);
            n = 1;
        }
        k += n;
    }
}

/* ---- set-up ---- */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    inproc_mkdir(&E, "fuzz_c2s");
    fuzz_server_start(&E, "FUZZ_C2S_LOG", "");
    return 0;
}

/* ---- one input ---- */

/* Ends the sessions bound on this input that outlived their connection. */
static void kick_left(struct pl_buf *jids)
{
    for (size_t off = 0; off < jids->len;) {
        const char *full = jids->data + jids->off + off;
        off += strlen(full) + 1;
        struct pl_session *s = pl_session_by_full(full);
        if (s)
            s->ops->close(s, "system-shutdown", NULL);
    }
}

static void cl_close(struct client *c, struct pl_buf *jids)
{
    if (!c->open)
        return;
    pl_io_stop(&c->io);
    close(c->io.fd);
    c->open = 0;
    struct pl_str out = pl_buf_str(&c->out);
    check_output(out.p ? out : none, jids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *in = (const char *)data;
    struct pl_buf jids = {0}, piece = {0};
    uint64_t start = inproc_now_ms();
    nconns_open = 0;
    previd[0] = '\0';
    cl_open();
    size_t from = 0;
    for (size_t k = 0; k <= size; k++) {
        unsigned char b = k < size ? data[k] : 0xff;
        if (b < 0xfd)
            continue;
        struct client *c = &conns[nconns_open - 1];
        substitute(c, in + from, k - from, &piece);
        cl_write(c, piece.data ? piece.data + piece.off : "", piece.len);
        pl_buf_reset(&piece);
        from = k + 1;
        settle("after a piece of input");
        for (int i = 0; i < nconns_open; i++)
            note_enabled(pl_buf_str(&conns[i].out).p ? pl_buf_str(&conns[i].out)
                                                     : none);
        if (b == 0xff || nconns_open == MAX_CONNS)
            continue;
        if (b == 0xfd) {
            cl_close(c, &jids);
            settle("after closing a connection");
        }
        cl_open();
    }
    for (int i = 0; i < nconns_open; i++)
        cl_close(&conns[i], &jids);
    uint64_t deadline = inproc_now_ms() + FUZZ_TIME_LIMIT_MS;
    while (pl__frontends_count() && inproc_now_ms() < deadline)
        inproc_pump(&E, 1);
    settle("after closing every connection");
    if (pl__frontends_count())
        die("connections left after the client closed them", none);
    kick_left(&jids);
    settle("after ending hibernated sessions");
    if (pl_session_count()) {
        char n[32];
        snprintf(n, sizeof(n), "%lu", pl_session_count());
        die("sessions left after every connection ended", pl_str_c(n));
    }
    if (pl_iq_pending()) {
        char n[32];
        snprintf(n, sizeof(n), "%lu", pl_iq_pending());
        die("server IQs still waiting for sessions that ended", pl_str_c(n));
    }
    fuzz_reset_accounts(&E, &received);
    for (int i = 0; i < nconns_open; i++)
        pl_buf_reset(&conns[i].out);
    pl_buf_reset(&jids);
    if (inproc_now_ms() - start > 4 * FUZZ_TIME_LIMIT_MS)
        die("one input took too long", none);
    return 0;
}
