/*
 * strophe_client.c - a libstrophe client that logs in to Parley, chats
 * with a peer and pings the server; driven by tests/interop/test_strophe.py.
 *
 * Usage: strophe_client HOST PORT JID PASSWORD PEER_JID [direct]
 *        strophe_client roster HOST PORT JID PASSWORD CONTACT_JID [direct]
 *
 * Connects to HOST:PORT with TLS mandatory (STARTTLS, or XEP-0368 direct
 * TLS with "direct"), trusting the server's self-signed certificate;
 * authenticates as JID, sends available presence, a chat message to
 * PEER_JID and an XEP-0199 ping to the server, then waits for the ping
 * result and for a chat message from PEER_JID (any resource).  Every wait
 * is bounded: STROPHE_CLIENT_TIMEOUT seconds in all (default 20).
 * STROPHE_DEBUG=1 logs libstrophe's traffic to stderr.
 *
 * Prints one "step: ..." line per milestone and exits 0 on success; on
 * failure prints "FAIL: why" and exits 1 (2 for bad usage).
 *
 * The "roster" mode (tests/interop/test_im_roster.py) fetches the roster
 * (RFC 6121 §2.1.3), prints "step: roster ver=V items=N", sends available
 * presence and prints "READY"; then prints every roster push as "push:
 * jid=J name=N subscription=S ask=A groups=G1,G2 ver=V from=F", answers it
 * with a result (§2.1.6) and exits 0 once a push removed CONTACT_JID after
 * an earlier push had added or changed it.  A push whose 'from' is neither
 * absent nor the client's bare JID is reported and fails the run (§2.1.6:
 * a client must ignore it).
 *
 * To extend: add a flag to struct state, set it from a handler, and test
 * it in done() and in the final report.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <strophe.h>

#define PING_ID "strophe-ping-1"
#define MESSAGE_BODY "hello from libstrophe"

struct state {
    xmpp_ctx_t *ctx;    /* libstrophe context */
    const char *peer;   /* peer's JID as given (bare or full) */
    char *peer_bare;    /* peer's bare JID, owned */
    const char *domain; /* server domain, borrowed from the JID */
    int connected;      /* XMPP_CONN_CONNECT seen */
    int secured;        /* TLS was active at connect */
    int ping_ok;        /* result for PING_ID received */
    int ping_error;     /* error for PING_ID received */
    int got_message;    /* chat message from the peer received */
    int disconnected;   /* the connection ended or failed */
    int stream_error;   /* a stream error was received */
    char why[512];      /* first failure reason */
};

static void fail(struct state *st, const char *why)
{
    if (!st->why[0])
        snprintf(st->why, sizeof(st->why), "%s", why);
}

static int done(const struct state *st)
{
    return st->disconnected || (st->ping_ok && st->got_message);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int ping_handler(xmpp_conn_t *conn, xmpp_stanza_t *stanza, void *data)
{
    struct state *st = data;
    const char *type = xmpp_stanza_get_type(stanza);
    (void)conn;
    if (type && strcmp(type, "result") == 0) {
        st->ping_ok = 1;
        printf("step: ping result from %s\n", xmpp_stanza_get_from(stanza)
                                                  ? xmpp_stanza_get_from(stanza)
                                                  : "(no from)");
    } else {
        st->ping_error = 1;
        fail(st, "ping answered with an error");
    }
    fflush(stdout);
    return 0; /* one-shot */
}

static int message_handler(xmpp_conn_t *conn, xmpp_stanza_t *stanza, void *data)
{
    struct state *st = data;
    const char *from = xmpp_stanza_get_from(stanza);
    const char *type = xmpp_stanza_get_type(stanza);
    char *body = xmpp_message_get_body(stanza);
    char *from_bare = from ? xmpp_jid_bare(st->ctx, from) : NULL;
    (void)conn;

    printf("step: message type=%s from=%s body=%s\n", type ? type : "-",
           from ? from : "-", body ? body : "-");
    if (type && strcmp(type, "error") == 0) {
        fail(st, "received an error message (see the step above)");
    } else if (from_bare && strcmp(from_bare, st->peer_bare) == 0 && body &&
               body[0]) {
        st->got_message = 1;
    }
    fflush(stdout);
    if (body)
        xmpp_free(st->ctx, body);
    if (from_bare)
        xmpp_free(st->ctx, from_bare);
    return 1; /* keep the handler */
}

static void send_stanzas(xmpp_conn_t *conn, struct state *st)
{
    xmpp_stanza_t *pres, *msg, *iq, *ping;

    pres = xmpp_presence_new(st->ctx);
    xmpp_send(conn, pres);
    xmpp_stanza_release(pres);

    msg = xmpp_message_new(st->ctx, "chat", st->peer, "strophe-msg-1");
    xmpp_message_set_body(msg, MESSAGE_BODY);
    xmpp_send(conn, msg);
    xmpp_stanza_release(msg);

    iq = xmpp_iq_new(st->ctx, "get", PING_ID);
    xmpp_stanza_set_to(iq, st->domain);
    ping = xmpp_stanza_new(st->ctx);
    xmpp_stanza_set_name(ping, "ping");
    xmpp_stanza_set_ns(ping, "urn:xmpp:ping");
    xmpp_stanza_add_child(iq, ping);
    xmpp_stanza_release(ping);
    xmpp_id_handler_add(conn, ping_handler, PING_ID, st);
    xmpp_send(conn, iq);
    xmpp_stanza_release(iq);
    printf("step: sent presence, chat message to %s, ping to %s\n", st->peer,
           st->domain);
    fflush(stdout);
}

static void conn_handler(xmpp_conn_t *conn, xmpp_conn_event_t status, int error,
                         xmpp_stream_error_t *stream_error, void *data)
{
    struct state *st = data;
    char buf[256];

    if (status == XMPP_CONN_CONNECT) {
        st->connected = 1;
        st->secured = xmpp_conn_is_secured(conn);
        printf("step: logged in as %s (tls %s)\n",
               xmpp_conn_get_bound_jid(conn) ? xmpp_conn_get_bound_jid(conn)
                                             : "?",
               st->secured ? "yes" : "NO");
        fflush(stdout);
        if (!st->secured) {
            fail(st, "session is not encrypted despite MANDATORY_TLS");
            xmpp_disconnect(conn);
            return;
        }
        xmpp_handler_add(conn, message_handler, NULL, "message", NULL, st);
        send_stanzas(conn, st);
        return;
    }
    st->disconnected = 1;
    if (stream_error) {
        st->stream_error = 1;
        snprintf(buf, sizeof(buf), "stream error type %d: %s",
                 (int)stream_error->type,
                 stream_error->text ? stream_error->text : "(no text)");
        fail(st, buf);
    } else if (!st->connected) {
        snprintf(buf, sizeof(buf),
                 "connection failed before login (event %d, error %d); "
                 "authentication or TLS failed",
                 (int)status, error);
        fail(st, buf);
    } else if (!(st->ping_ok && st->got_message)) {
        snprintf(buf, sizeof(buf), "disconnected early (event %d, error %d)",
                 (int)status, error);
        fail(st, buf);
    }
}

/* ---- roster mode ---- */

#define ROSTER_ID "strophe-roster-1"
#define NS_ROSTER "jabber:iq:roster"

struct roster_state {
    xmpp_ctx_t *ctx;     /* libstrophe context */
    const char *contact; /* the contact whose pushes end the run */
    char *own_bare;      /* our bare JID, owned */
    int connected;       /* XMPP_CONN_CONNECT seen */
    int have_roster;     /* roster result received */
    int pushes;          /* pushes about the contact, before removal */
    int removed;         /* the contact's removal was pushed */
    int disconnected;    /* the connection ended or failed */
    char why[512];       /* first failure reason */
};

static void rfail(struct roster_state *st, const char *why)
{
    if (!st->why[0])
        snprintf(st->why, sizeof(st->why), "%s", why);
}

/* Prints one roster item; returns its subscription (borrowed). */
static const char *print_item(const char *what, xmpp_stanza_t *item,
                              const char *ver, const char *from)
{
    const char *jid = xmpp_stanza_get_attribute(item, "jid");
    const char *name = xmpp_stanza_get_attribute(item, "name");
    const char *sub = xmpp_stanza_get_attribute(item, "subscription");
    const char *ask = xmpp_stanza_get_attribute(item, "ask");
    xmpp_stanza_t *g;
    int first = 1;

    printf("%s: jid=%s name=%s subscription=%s ask=%s groups=", what,
           jid ? jid : "-", name ? name : "-", sub ? sub : "-",
           ask ? ask : "-");
    for (g = xmpp_stanza_get_children(item); g; g = xmpp_stanza_get_next(g)) {
        const char *gn = xmpp_stanza_get_name(g);
        char *text;
        if (!gn || strcmp(gn, "group") != 0)
            continue;
        text = xmpp_stanza_get_text(g);
        printf("%s%s", first ? "" : ",", text ? text : "");
        first = 0;
        if (text)
            xmpp_free(xmpp_stanza_get_context(g), text);
    }
    printf(" ver=%s from=%s\n", ver ? ver : "-", from ? from : "-");
    fflush(stdout);
    return sub;
}

static int push_handler(xmpp_conn_t *conn, xmpp_stanza_t *stanza, void *data)
{
    struct roster_state *st = data;
    const char *from = xmpp_stanza_get_from(stanza);
    xmpp_stanza_t *q = xmpp_stanza_get_child_by_ns(stanza, NS_ROSTER);
    xmpp_stanza_t *item, *reply;
    const char *ver = q ? xmpp_stanza_get_attribute(q, "ver") : NULL;

    if (from && strcmp(from, st->own_bare) != 0) {
        /* RFC 6121 §2.1.6: not a push from our own server. */
        printf("step: ignored a roster set from %s\n", from);
        rfail(st, "roster push with a foreign 'from'");
        fflush(stdout);
        return 1;
    }
    for (item = q ? xmpp_stanza_get_children(q) : NULL; item;
         item = xmpp_stanza_get_next(item)) {
        const char *jid, *sub;
        if (!xmpp_stanza_get_name(item) ||
            strcmp(xmpp_stanza_get_name(item), "item") != 0)
            continue;
        sub = print_item("push", item, ver, from);
        jid = xmpp_stanza_get_attribute(item, "jid");
        if (jid && strcmp(jid, st->contact) == 0) {
            if (sub && strcmp(sub, "remove") == 0)
                st->removed = st->pushes > 0;
            else
                st->pushes++;
        }
    }
    /* Not xmpp_stanza_reply(): it needs a 'from', which a push lacks. */
    reply = xmpp_iq_new(st->ctx, "result", xmpp_stanza_get_id(stanza));
    xmpp_send(conn, reply);
    xmpp_stanza_release(reply);
    return 1; /* keep the handler */
}

static int roster_result_handler(xmpp_conn_t *conn, xmpp_stanza_t *stanza,
                                 void *data)
{
    struct roster_state *st = data;
    const char *type = xmpp_stanza_get_type(stanza);
    xmpp_stanza_t *q = xmpp_stanza_get_child_by_ns(stanza, NS_ROSTER);
    xmpp_stanza_t *item, *pres;
    int n = 0;

    if (!type || strcmp(type, "result") != 0) {
        rfail(st, "roster get answered with an error");
        xmpp_disconnect(conn);
        return 0;
    }
    for (item = q ? xmpp_stanza_get_children(q) : NULL; item;
         item = xmpp_stanza_get_next(item))
        if (xmpp_stanza_get_name(item) &&
            strcmp(xmpp_stanza_get_name(item), "item") == 0) {
            print_item("item", item, NULL, NULL);
            n++;
        }
    st->have_roster = 1;
    printf("step: roster ver=%s items=%d\n",
           q && xmpp_stanza_get_attribute(q, "ver")
               ? xmpp_stanza_get_attribute(q, "ver")
               : "-",
           n);
    pres = xmpp_presence_new(st->ctx);
    xmpp_send(conn, pres);
    xmpp_stanza_release(pres);
    printf("READY\n");
    fflush(stdout);
    return 0; /* one-shot */
}

static void roster_conn_handler(xmpp_conn_t *conn, xmpp_conn_event_t status,
                                int error, xmpp_stream_error_t *stream_error,
                                void *data)
{
    struct roster_state *st = data;
    char buf[256];
    xmpp_stanza_t *iq, *q;

    if (status == XMPP_CONN_CONNECT) {
        st->connected = 1;
        printf("step: logged in as %s\n", xmpp_conn_get_bound_jid(conn)
                                              ? xmpp_conn_get_bound_jid(conn)
                                              : "?");
        fflush(stdout);
        xmpp_handler_add(conn, push_handler, NS_ROSTER, "iq", "set", st);
        iq = xmpp_iq_new(st->ctx, "get", ROSTER_ID);
        q = xmpp_stanza_new(st->ctx);
        xmpp_stanza_set_name(q, "query");
        xmpp_stanza_set_ns(q, NS_ROSTER);
        xmpp_stanza_add_child(iq, q);
        xmpp_stanza_release(q);
        xmpp_id_handler_add(conn, roster_result_handler, ROSTER_ID, st);
        xmpp_send(conn, iq);
        xmpp_stanza_release(iq);
        return;
    }
    st->disconnected = 1;
    if (stream_error) {
        snprintf(buf, sizeof(buf), "stream error type %d: %s",
                 (int)stream_error->type,
                 stream_error->text ? stream_error->text : "(no text)");
        rfail(st, buf);
    } else if (!st->removed) {
        snprintf(buf, sizeof(buf),
                 "disconnected (event %d, error %d) "
                 "before the contact's removal was pushed",
                 (int)status, error);
        rfail(st, buf);
    }
}

static int roster_main(int argc, char **argv)
{
    struct roster_state st;
    xmpp_log_t *log = NULL;
    xmpp_conn_t *conn;
    long flags = XMPP_CONN_FLAG_MANDATORY_TLS | XMPP_CONN_FLAG_TRUST_TLS;

    double limit = 20, deadline;
    const char *env;
    int rc;

    /* argv[0] is "roster". */
    if (argc < 6 || argc > 7 || (argc == 7 && strcmp(argv[6], "direct"))) {
        fprintf(stderr, "usage: strophe_client roster HOST PORT JID "
                        "PASSWORD CONTACT_JID [direct]\n");
        return 2;
    }
    if (argc == 7)
        flags |= XMPP_CONN_FLAG_LEGACY_SSL;
    env = getenv("STROPHE_CLIENT_TIMEOUT");
    if (env && atof(env) > 0)
        limit = atof(env);

    memset(&st, 0, sizeof(st));
    st.contact = argv[5];
    xmpp_initialize();
    if (getenv("STROPHE_DEBUG"))
        log = xmpp_get_default_logger(XMPP_LEVEL_DEBUG);
    st.ctx = xmpp_ctx_new(NULL, log);
    st.own_bare = xmpp_jid_bare(st.ctx, argv[3]);

    conn = xmpp_conn_new(st.ctx);
    xmpp_conn_set_flags(conn, flags);
    xmpp_conn_set_jid(conn, argv[3]);
    xmpp_conn_set_pass(conn, argv[4]);
    if (xmpp_connect_client(conn, argv[1], (unsigned short)atoi(argv[2]),
                            roster_conn_handler, &st) != XMPP_EOK) {
        printf("FAIL: xmpp_connect_client refused to start\n");
        return 1;
    }
    deadline = now() + limit;
    while (!st.disconnected && !st.removed && now() < deadline)
        xmpp_run_once(st.ctx, 100);
    if (!st.removed) {
        char buf[160];
        snprintf(buf, sizeof(buf),
                 "timed out after %.0f s (connected=%d roster=%d "
                 "pushes=%d removed=%d)",
                 limit, st.connected, st.have_roster, st.pushes, st.removed);
        rfail(&st, buf);
    }
    rc = st.removed && !st.why[0] ? 0 : 1;
    if (st.connected && !st.disconnected) {
        xmpp_disconnect(conn);
        deadline = now() + 5;
        while (!st.disconnected && now() < deadline)
            xmpp_run_once(st.ctx, 100);
    }
    if (rc == 0)
        printf("OK: roster fetched, %d push(es) about %s, then its removal\n",
               st.pushes, st.contact);
    else
        printf("FAIL: %s\n", st.why[0] ? st.why : "unknown");
    fflush(stdout);
    xmpp_free(st.ctx, st.own_bare);
    xmpp_conn_release(conn);
    xmpp_ctx_free(st.ctx);
    xmpp_shutdown();
    return rc;
}

int main(int argc, char **argv)
{
    struct state st;
    xmpp_log_t *log = NULL;
    xmpp_conn_t *conn;
    long flags = XMPP_CONN_FLAG_MANDATORY_TLS | XMPP_CONN_FLAG_TRUST_TLS;
    double limit = 20, deadline;
    const char *env;
    char *at;
    int rc;

    /* libstrophe 0.12 negotiates stream management (XEP-0198) and may
     * answer a last <r/> after its own </stream:stream>, when the server
     * has closed: every network program ignores SIGPIPE. */
    signal(SIGPIPE, SIG_IGN);

    if (argc > 1 && strcmp(argv[1], "roster") == 0)
        return roster_main(argc - 1, argv + 1);
    if (argc < 6 || argc > 7 || (argc == 7 && strcmp(argv[6], "direct"))) {
        fprintf(stderr,
                "usage: %s HOST PORT JID PASSWORD PEER_JID "
                "[direct]\n",
                argv[0]);
        return 2;
    }
    if (argc == 7)
        flags |= XMPP_CONN_FLAG_LEGACY_SSL; /* XEP-0368 direct TLS */
    env = getenv("STROPHE_CLIENT_TIMEOUT");
    if (env && atof(env) > 0)
        limit = atof(env);

    memset(&st, 0, sizeof(st));
    st.peer = argv[5];
    at = strchr(argv[3], '@');
    st.domain = at ? at + 1 : argv[3];

    xmpp_initialize();
    if (getenv("STROPHE_DEBUG"))
        log = xmpp_get_default_logger(XMPP_LEVEL_DEBUG);
    st.ctx = xmpp_ctx_new(NULL, log);
    st.peer_bare = xmpp_jid_bare(st.ctx, st.peer);
    /* The domain must not carry the resource of a full JID. */
    {
        static char domain[256];
        size_t n = strcspn(st.domain, "/");
        if (n >= sizeof(domain))
            n = sizeof(domain) - 1;
        memcpy(domain, st.domain, n);
        domain[n] = '\0';
        st.domain = domain;
    }

    conn = xmpp_conn_new(st.ctx);
    xmpp_conn_set_flags(conn, flags);
    xmpp_conn_set_jid(conn, argv[3]);
    xmpp_conn_set_pass(conn, argv[4]);
    if (xmpp_connect_client(conn, argv[1], (unsigned short)atoi(argv[2]),
                            conn_handler, &st) != XMPP_EOK) {
        printf("FAIL: xmpp_connect_client refused to start\n");
        return 1;
    }

    deadline = now() + limit;
    while (!done(&st) && now() < deadline)
        xmpp_run_once(st.ctx, 100);

    if (!done(&st)) {
        char buf[160];
        snprintf(buf, sizeof(buf),
                 "timed out after %.0f s (connected=%d ping_ok=%d "
                 "got_message=%d)",
                 limit, st.connected, st.ping_ok, st.got_message);
        fail(&st, buf);
    }
    rc = (st.ping_ok && st.got_message && st.secured && !st.why[0]) ? 0 : 1;

    if (st.connected && !st.disconnected) {
        /* Close the stream properly, bounded as well. */
        xmpp_disconnect(conn);
        deadline = now() + 5;
        while (!st.disconnected && now() < deadline)
            xmpp_run_once(st.ctx, 100);
    }
    if (rc == 0)
        printf("OK: logged in over TLS, ping answered, message from %s "
               "received\n",
               st.peer_bare);
    else
        printf("FAIL: %s\n", st.why[0] ? st.why : "unknown");
    fflush(stdout);

    xmpp_free(st.ctx, st.peer_bare);
    xmpp_conn_release(conn);
    xmpp_ctx_free(st.ctx);
    xmpp_shutdown();
    return rc;
}
