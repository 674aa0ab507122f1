/*
 * client.c - shared libstrophe plumbing for parley and parley-agent; see
 * client.h.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "clients/client.h"

#define NS_TLS "urn:ietf:params:xml:ns:xmpp-tls"
#define NS_STREAMS "http://etherx.jabber.org/streams"

const char pl_cl_opts_help[] =
    "  --server HOST      connect to HOST instead of the JID's domain\n"
    "  --port N           TCP port (default 5222)\n"
    "  --ca-file FILE     trust the certificates in FILE (PEM)\n"
    "  --insecure         trust any certificate (tests only)\n"
    "  --direct-tls       TLS from the first byte (XEP-0368)\n"
    "  --plain            allow an unencrypted connection\n"
    "  --timeout SEC      bound on each wait (default 20)\n"
    "  --debug            print the XMPP traffic on stderr\n";

static int cert_refused;
static int auth_failed;
static int debug_log;

int pl_cl_parse_opt(struct pl_cl_opts *o, int argc, char **argv, int *i)
{
    const char *a = argv[*i];
    const char *v = *i + 1 < argc ? argv[*i + 1] : NULL;
    if (!strcmp(a, "--insecure")) {
        o->insecure = 1;
        return 1;
    }
    if (!strcmp(a, "--direct-tls")) {
        o->direct_tls = 1;
        return 1;
    }
    if (!strcmp(a, "--plain")) {
        o->plain = 1;
        return 1;
    }
    if (!strcmp(a, "--debug")) {
        o->debug = 1;
        return 1;
    }
    if (strcmp(a, "--server") && strcmp(a, "--port") &&
        strcmp(a, "--ca-file") && strcmp(a, "--timeout"))
        return 0;
    if (!v)
        return -1;
    (*i)++;
    if (!strcmp(a, "--server")) {
        o->server = v;
    } else if (!strcmp(a, "--port")) {
        long p = strtol(v, NULL, 10);
        if (p <= 0 || p > 65535)
            return -1;
        o->port = (unsigned short)p;
    } else if (!strcmp(a, "--ca-file")) {
        o->ca_file = v;
    } else {
        double s = strtod(v, NULL);
        if (s <= 0)
            return -1;
        o->timeout_ms = (long)(s * 1000);
    }
    return 1;
}


/*
 * COMPAT libstrophe 0.12: the connection handler gets no reason when SASL
 * fails (the stream just closes), so the log is watched for the "auth"
 * area's error, and printed only with --debug.
 */
static void on_log(void *ud, xmpp_log_level_t level, const char *area,
                   const char *msg)
{
    if (!strcmp(area, "auth") && level == XMPP_LEVEL_ERROR)
        auth_failed = 1;
    if (debug_log)
        fprintf(stderr, "%s %s %s\n", area,
                level == XMPP_LEVEL_ERROR  ? "ERROR"
                : level == XMPP_LEVEL_WARN ? "WARN"
                : level == XMPP_LEVEL_INFO ? "INFO"
                                           : "DEBUG",
                msg);
}

static xmpp_log_t logger = {on_log, NULL};

int pl_cl_auth_failed(void)
{
    return auth_failed;
}

xmpp_ctx_t *pl_cl_ctx_new(const struct pl_cl_opts *o)
{
    debug_log = o->debug;
    return xmpp_ctx_new(NULL, &logger);
}

/* libstrophe asks here when the chain or name does not verify: refuse,
 * and remember why the connection failed. */
static int on_certfail(const xmpp_tlscert_t *cert, const char *errormsg)
{
    cert_refused = 1;
    fprintf(stderr, "TLS: certificate refused: %s\n", errormsg);
    return 0;
}

int pl_cl_cert_refused(void)
{
    return cert_refused;
}

xmpp_conn_t *pl_cl_conn_new(xmpp_ctx_t *ctx, const struct pl_cl_opts *o,
                            const char *jid, const char *password)
{
    xmpp_conn_t *conn = xmpp_conn_new(ctx);
    if (!conn)
        return NULL;
    cert_refused = 0; /* the flags describe the latest connection */
    auth_failed = 0;
    long flags = 0;
    if (!o->plain)
        flags |= XMPP_CONN_FLAG_MANDATORY_TLS;
    if (o->direct_tls)
        flags |= XMPP_CONN_FLAG_LEGACY_SSL;
    if (o->insecure)
        flags |= XMPP_CONN_FLAG_TRUST_TLS;
    xmpp_conn_set_flags(conn, flags);
    if (o->ca_file)
        xmpp_conn_set_cafile(conn, o->ca_file);
    xmpp_conn_set_certfail_handler(conn, on_certfail);
    if (jid)
        xmpp_conn_set_jid(conn, jid);
    if (password)
        xmpp_conn_set_pass(conn, password);
    return conn;
}

/* ------------------------------------------------------ registration */

struct reg {
    const char *user, *password;
    int done;  /* finished, rc is final */
    int rc;    /* PL_EXIT_* */
    int sent;  /* the register IQ went out */
    char *err; /* message buffer */
    size_t errlen;
};

static void reg_finish(xmpp_conn_t *conn, struct reg *r, int rc,
                       const char *msg)
{
    if (r->done)
        return;
    r->done = 1;
    r->rc = rc;
    if (msg)
        snprintf(r->err, r->errlen, "%s", msg);
    xmpp_disconnect(conn);
}

static int reg_result(xmpp_conn_t *conn, xmpp_stanza_t *st, void *ud)
{
    struct reg *r = ud;
    const char *type = xmpp_stanza_get_type(st);
    if (type && !strcmp(type, "result")) {
        reg_finish(conn, r, PL_EXIT_OK, NULL);
    } else {
        const char *cond = pl_cl_error_condition(st);
        char msg[160];
        snprintf(msg, sizeof(msg), "registration refused: %s", cond);
        reg_finish(conn, r,
                   !strcmp(cond, "conflict") ? PL_EXIT_CONFLICT
                                             : PL_EXIT_STANZA,
                   msg);
    }
    return 0;
}

static void send_register(xmpp_conn_t *conn, struct reg *r)
{
    xmpp_ctx_t *ctx = xmpp_conn_get_context(conn);
    xmpp_stanza_t *iq = xmpp_iq_new(ctx, "set", "reg1");
    xmpp_stanza_t *q = xmpp_stanza_new(ctx);
    xmpp_stanza_set_name(q, "query");
    xmpp_stanza_set_ns(q, PL_NS_REGISTER);
    const char *names[] = {"username", "password"};
    const char *vals[] = {r->user, r->password};
    for (int i = 0; i < 2; i++) {
        xmpp_stanza_t *f = xmpp_stanza_new(ctx);
        xmpp_stanza_t *t = xmpp_stanza_new(ctx);
        xmpp_stanza_set_name(f, names[i]);
        xmpp_stanza_set_text(t, vals[i]);
        xmpp_stanza_add_child(f, t);
        xmpp_stanza_add_child(q, f);
        xmpp_stanza_release(t);
        xmpp_stanza_release(f);
    }
    xmpp_stanza_add_child(iq, q);
    xmpp_stanza_release(q);
    xmpp_id_handler_add(conn, reg_result, "reg1", r);
    xmpp_send(conn, iq);
    xmpp_stanza_release(iq);
    r->sent = 1;
}

static int reg_proceed(xmpp_conn_t *conn, xmpp_stanza_t *st, void *ud)
{
    struct reg *r = ud;
    if (strcmp(xmpp_stanza_get_name(st), "proceed") != 0) {
        reg_finish(conn, r, PL_EXIT_TLS, "the server refused STARTTLS");
        return 0;
    }
    if (xmpp_conn_tls_start(conn) != 0) {
        reg_finish(conn, r, PL_EXIT_TLS, "TLS handshake failed");
        return 0;
    }
    xmpp_conn_open_stream_default(conn);
    return 0;
}

static int reg_features(xmpp_conn_t *conn, xmpp_stanza_t *st, void *ud)
{
    struct reg *r = ud;
    xmpp_stanza_t *tls = xmpp_stanza_get_child_by_name_and_ns(st, "starttls",
                                                              NS_TLS);
    if (!xmpp_conn_is_secured(conn) && tls) {
        xmpp_handler_add(conn, reg_proceed, NS_TLS, NULL, NULL, r);
        xmpp_send_raw_string(conn, "<starttls xmlns='%s'/>", NS_TLS);
        return 1;
    }
    if (!xmpp_conn_is_secured(conn) &&
        !(xmpp_conn_get_flags(conn) & XMPP_CONN_FLAG_LEGACY_SSL)) {
        reg_finish(conn, r, PL_EXIT_TLS,
                   "the server offers no TLS (use --plain to allow that)");
        return 0;
    }
    if (!r->sent)
        send_register(conn, r);
    return 0;
}

static void reg_conn(xmpp_conn_t *conn, xmpp_conn_event_t ev, int error,
                     xmpp_stream_error_t *se, void *ud)
{
    struct reg *r = ud;
    if (ev == XMPP_CONN_RAW_CONNECT) {
        xmpp_handler_add(conn, reg_features, NS_STREAMS, "features", NULL, r);
        xmpp_conn_open_stream_default(conn);
    } else if (ev == XMPP_CONN_DISCONNECT || ev == XMPP_CONN_FAIL) {
        if (!r->done) {
            r->done = 1;
            r->rc = cert_refused ? PL_EXIT_TLS : PL_EXIT_CONNECT;
            snprintf(r->err, r->errlen, "%s",
                     cert_refused ? "certificate not trusted"
                                  : "connection failed or closed");
        }
    }
}

int pl_cl_register(xmpp_ctx_t *ctx, const struct pl_cl_opts *o,
                   const char *domain, const char *user, const char *password,
                   char *err, size_t errlen)
{
    struct reg r = {user, password, 0, PL_EXIT_FAILURE, 0, err, errlen};
    err[0] = '\0';
    xmpp_conn_t *conn = pl_cl_conn_new(ctx, o, NULL, NULL);
    if (!conn)
        return PL_EXIT_FAILURE;
    /* libstrophe takes the stream's 'to' from the JID's domain. */
    xmpp_conn_set_jid(conn, domain);
    if (xmpp_connect_raw(conn, o->server ? o->server : domain, o->port,
                         reg_conn, &r) != 0) {
        xmpp_conn_release(conn);
        snprintf(err, errlen, "cannot connect");
        return PL_EXIT_CONNECT;
    }
    long long deadline = pl_cl_now_ms() +
                         (o->timeout_ms ? o->timeout_ms : 20000);
    int closing = 0;
    while (pl_cl_now_ms() < deadline) {
        xmpp_run_once(ctx, 50);
        if (r.done && !closing) {
            closing = 1;
            deadline = pl_cl_now_ms() + 2000; /* let the close finish */
        }
        if (r.done && !xmpp_conn_is_connected(conn) &&
            !xmpp_conn_is_connecting(conn))
            break;
    }
    if (!r.done) {
        snprintf(err, errlen, "registration timed out");
        r.rc = PL_EXIT_TIMEOUT;
        xmpp_disconnect(conn);
        for (int i = 0; i < 20 && xmpp_conn_is_connected(conn); i++)
            xmpp_run_once(ctx, 50);
    }
    xmpp_conn_release(conn);
    return r.rc;
}

const char *pl_cl_error_condition(xmpp_stanza_t *st)
{
    xmpp_stanza_t *e = xmpp_stanza_get_child_by_name(st, "error");
    if (!e)
        return "undefined-condition";
    for (xmpp_stanza_t *c = xmpp_stanza_get_children(e); c;
         c = xmpp_stanza_get_next(c)) {
        const char *ns = xmpp_stanza_get_ns(c);
        const char *name = xmpp_stanza_get_name(c);
        if (name && ns && !strcmp(ns, PL_NS_STANZAS) && strcmp(name, "text"))
            return name;
    }
    return "undefined-condition";
}

long long pl_cl_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void pl_cl_timestamp(char *buf, size_t len)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ",
             tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
             tm.tm_min, tm.tm_sec, (long)(tv.tv_usec / 1000));
}
