/*
 * main.c - parley: options, login, the synchronous IQ helper, received
 * stanzas as JSON, and output.  Commands are in commands.c.
 *
 *   parley [options] COMMAND [ARGS...]
 *   parley --help | --version       (standard output, exit 0)
 *
 * The account comes from --jid/--password or PARLEY_JID/PARLEY_PASSWORD
 * (a password on the command line is visible to other local users; the
 * environment or "--password -" (read a line from stdin) is better).
 * Exit codes are the PL_EXIT_* of client.h (README "parley").
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clients/cli/cli.h"
#include "core/version.h"

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
    interrupted = 1;
}

int pl_cli_interrupted(void)
{
    return interrupted;
}

/* The usage text on f; returns PL_EXIT_USAGE. */
static int usage_to(FILE *f)
{
    fprintf(f,
            "usage: parley [options] COMMAND [ARGS...]\n"
            "       parley --help | --version\n"
            "  --jid JID          account (or PARLEY_JID)\n"
            "  --password PW      password (or PARLEY_PASSWORD; - reads "
            "stdin)\n"
            "  --resource NAME    resource to bind\n"
            "  --json             JSON output\n%s\ncommands:\n%s"
            "exit codes: 0 ok, 1 other failure, 2 usage, 3 connection, "
            "4 TLS,\n  5 authentication, 6 error reply, 7 timeout, "
            "8 account exists\n",
            pl_cl_opts_help, pl_cli_commands_help);
    return PL_EXIT_USAGE;
}

static int usage(void)
{
    return usage_to(stderr);
}

xmpp_stanza_t *pl_cli_elem(xmpp_ctx_t *ctx, const char *name, const char *ns)
{
    xmpp_stanza_t *e = xmpp_stanza_new(ctx);
    xmpp_stanza_set_name(e, name);
    if (ns)
        xmpp_stanza_set_ns(e, ns);
    return e;
}

void pl_cli_adopt(xmpp_stanza_t *parent, xmpp_stanza_t *child)
{
    xmpp_stanza_add_child(parent, child);
    xmpp_stanza_release(child);
}

xmpp_stanza_t *pl_cli_add_text(xmpp_ctx_t *ctx, xmpp_stanza_t *parent,
                               const char *name, const char *text)
{
    xmpp_stanza_t *e = pl_cli_elem(ctx, name, NULL);
    if (text && *text) {
        xmpp_stanza_t *t = xmpp_stanza_new(ctx);
        xmpp_stanza_set_text(t, text);
        pl_cli_adopt(e, t);
    }
    pl_cli_adopt(parent, e);
    return e;
}

void pl_cli_out(struct pl_cli *c, json_t *obj, const char *text)
{
    if (c->json && obj) {
        char *s = json_dumps(obj, JSON_COMPACT | JSON_SORT_KEYS);
        if (s) {
            puts(s);
            free(s);
        }
    } else if (!c->json && text) {
        fputs(text, stdout);
        if (*text && text[strlen(text) - 1] != '\n')
            fputc('\n', stdout);
    }
    fflush(stdout);
    json_decref(obj);
}

int pl_cli_stanza_error(struct pl_cli *c, const char *what,
                        xmpp_stanza_t *reply)
{
    const char *cond = reply ? pl_cl_error_condition(reply)
                             : "undefined-condition";
    xmpp_stanza_t *e = reply ? xmpp_stanza_get_child_by_name(reply, "error")
                             : NULL;
    xmpp_stanza_t *t = e ? xmpp_stanza_get_child_by_name_and_ns(e, "text",
                                                                PL_NS_STANZAS)
                         : NULL;
    char *text = t ? xmpp_stanza_get_text(t) : NULL;
    fprintf(stderr, "parley: %s: %s%s%s\n", what, cond, text ? ": " : "",
            text ? text : "");
    if (c->json)
        pl_cli_out(c,
                   json_pack("{s:s, s:s, s:s?}", "error", cond, "while", what,
                             "text", text),
                   NULL);
    if (text)
        xmpp_free(c->ctx, text);
    return PL_EXIT_STANZA;
}

/* ------------------------------------------------------------ session */

static void on_conn(xmpp_conn_t *conn, xmpp_conn_event_t ev, int error,
                    xmpp_stream_error_t *se, void *ud)
{
    struct pl_cli *c = ud;
    if (ev == XMPP_CONN_CONNECT) {
        c->connected = 1;
        return;
    }
    if (ev != XMPP_CONN_DISCONNECT && ev != XMPP_CONN_FAIL)
        return;
    if (c->connected) {
        c->connected = 0;
        if (!c->failed)
            c->failed = PL_EXIT_CONNECT;
        return;
    }
    /* Before login: a refused certificate, SASL failure, or anything
     * else (socket errors, stream errors, a refused TCP connection). */
    if (pl_cl_cert_refused())
        c->failed = PL_EXIT_TLS;
    else if (pl_cl_auth_failed())
        c->failed = PL_EXIT_AUTH;
    else
        c->failed = PL_EXIT_CONNECT;
    if (se && se->type == XMPP_SE_NOT_AUTHORIZED)
        c->failed = PL_EXIT_AUTH;
}

json_t *pl_cli_stanza_json(xmpp_stanza_t *st)
{
    const char *name = xmpp_stanza_get_name(st);
    json_t *o = json_pack("{s:s, s:s?, s:s?, s:s?, s:s?}", "kind", name, "from",
                          xmpp_stanza_get_from(st), "to",
                          xmpp_stanza_get_to(st), "type",
                          xmpp_stanza_get_type(st), "id",
                          xmpp_stanza_get_id(st));
    const char *kids[] = {"body",   "subject",  "thread", "show",
                          "status", "priority", "nick"};
    for (size_t i = 0; i < sizeof(kids) / sizeof(kids[0]); i++) {
        xmpp_stanza_t *k = xmpp_stanza_get_child_by_name(st, kids[i]);
        char *t = k ? xmpp_stanza_get_text(k) : NULL;
        if (k)
            json_object_set_new(o, kids[i], json_string(t ? t : ""));
        if (t)
            xmpp_free(xmpp_stanza_get_context(st), t);
    }
    xmpp_stanza_t *j = xmpp_stanza_get_child_by_name_and_ns(st, "json",
                                                            PL_NS_JSON);
    if (j) {
        char *t = xmpp_stanza_get_text(j);
        json_t *v = t ? json_loads(t, JSON_DECODE_ANY, NULL) : NULL;
        json_object_set_new(o, "json", v ? v : json_string(t ? t : ""));
        if (!v)
            json_object_set_new(o, "json_malformed", json_true());
        if (t)
            xmpp_free(xmpp_stanza_get_context(st), t);
    }
    xmpp_stanza_t *r = xmpp_stanza_get_child_by_name_and_ns(st, "received",
                                                            PL_NS_RECEIPTS);
    if (r)
        json_object_set_new(o, "receipt_for",
                            json_string(xmpp_stanza_get_attribute(r, "id")
                                            ?: ""));
    const char *type = xmpp_stanza_get_type(st);
    if (type && !strcmp(type, "error"))
        json_object_set_new(o, "error", json_string(pl_cl_error_condition(st)));
    char *xml = NULL;
    size_t len = 0;
    if (xmpp_stanza_to_text(st, &xml, &len) == 0) {
        json_object_set_new(o, "xml", json_stringn(xml, len));
        xmpp_free(xmpp_stanza_get_context(st), xml);
    }
    return o;
}

/* Whether st is a stanza (RFC 6120 §8: message, presence, iq of the
 * client namespace), not a nonza such as XEP-0198's <r/>, <a/> and
 * <enabled/>, which libstrophe also hands to handlers without a name. */
static int is_stanza(xmpp_stanza_t *st)
{
    const char *name = xmpp_stanza_get_name(st);
    const char *ns = xmpp_stanza_get_ns(st);
    if (!name || (ns && strcmp(ns, "jabber:client")))
        return 0;
    return !strcmp(name, "message") || !strcmp(name, "presence") ||
           !strcmp(name, "iq");
}

static int on_stanza(xmpp_conn_t *conn, xmpp_stanza_t *st, void *ud)
{
    struct pl_cli *c = ud;
    if (!is_stanza(st))
        return 1;
    const char *name = xmpp_stanza_get_name(st);
    const char *type = xmpp_stanza_get_type(st);
    if (!strcmp(name, "iq")) {
        if (!type || (strcmp(type, "get") && strcmp(type, "set")))
            return 1; /* answers are for pl_cli_iq's id handlers */
        xmpp_stanza_t *r;
        if (!strcmp(type, "get") &&
            xmpp_stanza_get_child_by_name_and_ns(st, "ping", PL_NS_PING)) {
            r = xmpp_stanza_reply(st);
            xmpp_stanza_set_type(r, "result");
        } else if (!strcmp(type, "set") &&
                   xmpp_stanza_get_child_by_name_and_ns(st, "query",
                                                        "jabber:iq:roster")) {
            /* RFC 6121 §2.1.6: acknowledge roster pushes. */
            r = xmpp_iq_new(c->ctx, "result", xmpp_stanza_get_id(st));
            if (xmpp_stanza_get_from(st))
                xmpp_stanza_set_to(r, xmpp_stanza_get_from(st));
        } else {
            r = xmpp_stanza_reply_error(st, "cancel", "service-unavailable",
                                        NULL);
        }
        xmpp_send(conn, r);
        xmpp_stanza_release(r);
    }
    if (!strcmp(name, "message") && xmpp_stanza_get_id(st) &&
        xmpp_stanza_get_from(st) &&
        xmpp_stanza_get_child_by_name_and_ns(st, "request", PL_NS_RECEIPTS) &&
        (!type || strcmp(type, "error"))) {
        /* XEP-0184 §5.1 */
        xmpp_stanza_t *m = xmpp_message_new(c->ctx, NULL,
                                            xmpp_stanza_get_from(st), NULL);
        xmpp_stanza_t *rc = pl_cli_elem(c->ctx, "received", PL_NS_RECEIPTS);
        xmpp_stanza_set_attribute(rc, "id", xmpp_stanza_get_id(st));
        pl_cli_adopt(m, rc);
        xmpp_send(conn, m);
        xmpp_stanza_release(m);
    }
    if (c->listening && (!c->room || (xmpp_stanza_get_from(st) &&
                                      !strncmp(xmpp_stanza_get_from(st),
                                               c->room, strlen(c->room))))) {
        json_t *o = pl_cli_stanza_json(st);
        /* listen prints JSON lines whatever --json says. */
        char *s = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
        if (s) {
            puts(s);
            fflush(stdout);
            free(s);
        }
        json_decref(o);
        c->printed++;
    }
    return 1;
}

int pl_cli_login(struct pl_cli *c)
{
    char full[1024];
    const char *jid = c->jid;
    if (c->resource && !strchr(c->jid, '/')) {
        snprintf(full, sizeof(full), "%s/%s", c->jid, c->resource);
        jid = full;
    }
    c->conn = pl_cl_conn_new(c->ctx, &c->o, jid, c->password);
    xmpp_handler_add(c->conn, on_stanza, NULL, NULL, NULL, c);
    if (xmpp_connect_client(c->conn, c->o.server, c->o.port, on_conn, c) != 0) {
        fprintf(stderr, "parley: cannot connect\n");
        return PL_EXIT_CONNECT;
    }
    long long deadline = pl_cl_now_ms() + c->o.timeout_ms;
    while (!c->connected && !c->failed && !interrupted &&
           pl_cl_now_ms() < deadline)
        xmpp_run_once(c->ctx, 50);
    if (c->connected)
        return PL_EXIT_OK;
    int rc = c->failed ? c->failed : PL_EXIT_TIMEOUT;
    const char *what[] = {[PL_EXIT_CONNECT] = "connection failed",
                          [PL_EXIT_TLS] = "TLS failed",
                          [PL_EXIT_AUTH] = "authentication failed",
                          [PL_EXIT_TIMEOUT] = "login timed out"};
    fprintf(stderr, "parley: %s\n", what[rc] ? what[rc] : "login failed");
    if (c->json)
        pl_cli_out(c,
                   json_pack("{s:s}", "error",
                             what[rc] ? what[rc] : "login failed"),
                   NULL);
    return rc;
}

struct iq_wait {
    xmpp_stanza_t *reply;
    int done;
};

static int on_iq_reply(xmpp_conn_t *conn, xmpp_stanza_t *st, void *ud)
{
    struct iq_wait *w = ud;
    w->reply = xmpp_stanza_copy(st);
    w->done = 1;
    return 0;
}

int pl_cli_iq(struct pl_cli *c, xmpp_stanza_t *iq, xmpp_stanza_t **reply)
{
    static unsigned seq;
    char id[32];
    if (!xmpp_stanza_get_id(iq)) {
        snprintf(id, sizeof(id), "parley%u", ++seq);
        xmpp_stanza_set_id(iq, id);
    }
    struct iq_wait w = {NULL, 0};
    xmpp_id_handler_add(c->conn, on_iq_reply, xmpp_stanza_get_id(iq), &w);
    xmpp_send(c->conn, iq);
    long long deadline = pl_cl_now_ms() + c->o.timeout_ms;
    while (!w.done && c->connected && !interrupted && pl_cl_now_ms() < deadline)
        xmpp_run_once(c->ctx, 50);
    if (!w.done) {
        xmpp_id_handler_delete(c->conn, on_iq_reply, xmpp_stanza_get_id(iq));
        fprintf(stderr, "parley: %s\n",
                c->connected ? "no answer in time" : "connection lost");
        return c->connected ? PL_EXIT_TIMEOUT : PL_EXIT_CONNECT;
    }
    *reply = w.reply;
    const char *type = xmpp_stanza_get_type(w.reply);
    return type && !strcmp(type, "result") ? PL_EXIT_OK : PL_EXIT_STANZA;
}

int pl_cli_run(struct pl_cli *c, long ms, const int *done)
{
    long long deadline = ms > 0 ? pl_cl_now_ms() + ms : 0;
    while (c->connected && !interrupted && !(done && *done) &&
           (!deadline || pl_cl_now_ms() < deadline))
        xmpp_run_once(c->ctx, 50);
    return c->connected || interrupted || (done && *done) ? PL_EXIT_OK
                                                          : PL_EXIT_CONNECT;
}

void pl_cli_logout(struct pl_cli *c)
{
    if (!c->conn)
        return;
    if (c->connected) {
        xmpp_disconnect(c->conn);
        for (int i = 0; i < 40 && xmpp_conn_is_connected(c->conn); i++)
            xmpp_run_once(c->ctx, 50);
    }
    xmpp_conn_release(c->conn);
    c->conn = NULL;
}

int main(int argc, char **argv)
{
    static struct pl_cli c;
    c.o.timeout_ms = 20000;
    c.jid = getenv("PARLEY_JID");
    c.password = getenv("PARLEY_PASSWORD");
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        int r = pl_cl_parse_opt(&c.o, argc, argv, &i);
        if (r < 0)
            return usage();
        if (r > 0)
            continue;
        if (!strcmp(argv[i], "--json"))
            c.json = 1;
        else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage_to(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--version")) {
            puts("parley " PL_VERSION);
            return 0;
        } else if (i + 1 < argc && !strcmp(argv[i], "--jid"))
            c.jid = argv[++i];
        else if (i + 1 < argc && !strcmp(argv[i], "--password"))
            c.password = argv[++i];
        else if (i + 1 < argc && !strcmp(argv[i], "--resource"))
            c.resource = argv[++i];
        else
            return usage();
    }
    if (i >= argc)
        return usage();
    static char line[1024];
    if (c.password && !strcmp(c.password, "-")) {
        if (!fgets(line, sizeof(line), stdin))
            return usage();
        line[strcspn(line, "\r\n")] = '\0';
        c.password = line;
    }
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    xmpp_initialize();
    c.ctx = pl_cl_ctx_new(&c.o);
    int rc;
    if (pl_cli_command_is_offline(argv[i])) {
        rc = pl_cli_command(&c, argc - i, argv + i);
    } else if (!c.jid || !c.password) {
        fprintf(stderr, "parley: need --jid and --password (or PARLEY_JID "
                        "and PARLEY_PASSWORD)\n");
        rc = PL_EXIT_USAGE;
    } else {
        rc = pl_cli_login(&c);
        if (rc == PL_EXIT_OK)
            rc = pl_cli_command(&c, argc - i, argv + i);
        pl_cli_logout(&c);
    }
    if (c.conn)
        xmpp_conn_release(c.conn);
    xmpp_ctx_free(c.ctx);
    xmpp_shutdown();
    return rc;
}
