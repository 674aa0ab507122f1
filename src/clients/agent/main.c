/*
 * main.c - parley-agent: options, the session and its life cycle.
 *
 * One XMPP session to the head-end, kept up forever:
 *   - identity: the JID localpart is the MAC address of --interface (or
 *     --mac, for tests) in lower-case hex; the first start registers the
 *     account (XEP-0077) with a generated secret kept in the state file
 *     (0600), or uses the operator's provisioning --token as the password;
 *   - XEP-0198: libstrophe enables stream management when the server
 *     offers it, and after a drop the agent carries the old connection's
 *     SM state into the new one (xmpp_conn_get_sm_state/set_sm_state), so
 *     the session resumes and unacknowledged stanzas are resent; when the
 *     server cannot resume (restart) libstrophe binds a fresh session;
 *   - reconnect with exponential backoff and "equal jitter": attempt n
 *     waits d/2 + random(d/2) with d = min(max, min * 2^n), so a
 *     head-end restart does not bring every box back in the same second;
 *   - XEP-0199 pings every --ping-interval (each answer is a "pong"
 *     event); no answer within --ping-timeout drops the connection (and
 *     so reconnects);
 *   - XEP-0335 JSON commands (dispatch.c) from the server's domain or a
 *     --controller JID, with XEP-0184 receipts for every message that asks.
 *
 * stdout carries one JSON object per event (for scripts and tests);
 * stderr carries the log.  See README "parley-agent".
 */
#include <curl/curl.h>
#include <errno.h>
#include <malloc.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "clients/agent/agent.h"
#include "clients/client.h"
#include "core/version.h"

static volatile sig_atomic_t stopping;

static void on_signal(int sig)
{
    stopping = 1;
}

void pl_agent_log(const char *fmt, ...)
{
    char ts[40];
    pl_cl_timestamp(ts, sizeof(ts));
    fprintf(stderr, "%s parley-agent: ", ts);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

void pl_agent_emit(const char *name, json_t *ev)
{
    char ts[40];
    pl_cl_timestamp(ts, sizeof(ts));
    if (!ev)
        ev = json_object();
    json_object_set_new(ev, "ts", json_string(ts));
    json_object_set_new(ev, "event", json_string(name));
    char *s = json_dumps(ev, JSON_COMPACT | JSON_SORT_KEYS);
    if (s) {
        fputs(s, stdout);
        fputc('\n', stdout);
        fflush(stdout);
        free(s);
    }
    json_decref(ev);
}

/* The usage text on f; returns PL_EXIT_USAGE. */
static int usage_to(FILE *f)
{
    fprintf(f,
            "usage: parley-agent --domain DOMAIN (--interface IF | --mac MAC)"
            " [options]\n"
            "       parley-agent --help | --version\n"
            "  --state-file PATH      secret and JID (default "
            "/var/lib/parley-agent/state.json)\n"
            "  --token TOKEN          provisioning token (the password the "
            "operator created)\n"
            "  --resource NAME        resource (default agent)\n"
            "  --handler NAME=PATH    executable for command NAME "
            "(repeatable)\n"
            "  --handler-dir DIR      executables named after commands\n"
            "  --handler-timeout SEC  kill a handler after SEC (default 30)\n"
            "  --max-jobs N           handlers running at once (default 4)\n"
            "  --controller JID       may send commands, besides DOMAIN "
            "(repeatable)\n"
            "  --backoff-min MS       first reconnect delay (default 1000)\n"
            "  --backoff-max MS       longest reconnect delay (default "
            "300000)\n"
            "  --ping-interval SEC    XEP-0199 ping period (default 60)\n"
            "  --ping-timeout SEC     drop after SEC without pong "
            "(default 20)\n"
            "  --status TEXT          presence status text\n"
            "  --no-auto-approve      do not approve subscriptions from "
            "DOMAIN\n"
            "  --no-sm                disable XEP-0198\n"
            "  --cache DIR            media cache: the \"fetch\" command "
            "downloads into it\n"
            "  --serve ADDR:PORT      serve the cache to other devices "
            "(peer)\n"
            "  --serve-url URL        the peer's base URL as others reach "
            "it\n"
            "  --max-peers N          downloads served at once (default "
            "4)\n"
            "  --max-upload-rate B    bytes/s served, all downloads "
            "(default: no cap)\n"
            "  --max-fetches N        downloads at once (default 2)\n"
            "  --prefer-peers         fetch from peers, the server only "
            "when none is left\n%s",
            pl_cl_opts_help);
    return PL_EXIT_USAGE;
}

static int usage(void)
{
    return usage_to(stderr);
}

/* ------------------------------------------------------------ sending */

static xmpp_stanza_t *elem(xmpp_ctx_t *ctx, const char *name, const char *ns)
{
    xmpp_stanza_t *e = xmpp_stanza_new(ctx);
    xmpp_stanza_set_name(e, name);
    if (ns)
        xmpp_stanza_set_ns(e, ns);
    return e;
}

static void add_text_child(xmpp_ctx_t *ctx, xmpp_stanza_t *parent,
                           xmpp_stanza_t *child, const char *text)
{
    xmpp_stanza_t *t = xmpp_stanza_new(ctx);
    xmpp_stanza_set_text(t, text);
    xmpp_stanza_add_child(child, t);
    xmpp_stanza_release(t);
    xmpp_stanza_add_child(parent, child);
    xmpp_stanza_release(child);
}

static void send_messages(struct pl_agent *a, json_t *list);

/* pl_reply_fn: a JSON reply in an XEP-0335 container. */
void pl_agent_send_json(const char *to, const char *type, json_t *reply,
                        void *ud)
{
    struct pl_agent *a = ud;
    /* A handler's result may ask for messages to other boxes or users. */
    json_t *res = json_object_get(reply, "result");
    json_t *msgs = json_is_object(res) ? json_object_get(res, "messages")
                                       : NULL;
    if (json_is_array(msgs))
        send_messages(a, msgs);
    char *text = json_dumps(reply, JSON_COMPACT);
    if (!text)
        return;
    pl_agent_emit("reply", json_pack("{s:s, s:O}", "to", to, "reply", reply));
    if (a->state != PL_AGENT_UP || !a->conn) {
        /* With XEP-0198 libstrophe keeps what it could not send; without
         * a connection the reply is lost, like any stanza of a box that
         * is down; the head-end's receipt tracking shows it. */
        pl_agent_log("not connected: reply to %s dropped", to);
        free(text);
        return;
    }
    char *id = xmpp_uuid_gen(a->ctx);
    xmpp_stanza_t *m = xmpp_message_new(a->ctx,
                                        type && !strcmp(type, "chat") ? "chat"
                                                                      : NULL,
                                        to, id);
    add_text_child(a->ctx, m, elem(a->ctx, "json", PL_NS_JSON), text);
    xmpp_send(a->conn, m);
    xmpp_stanza_release(m);
    xmpp_free(a->ctx, id);
    free(text);
}

/*
 * Box-to-box: a handler's JSON result {"messages": [{"to": JID, "json":
 * VALUE} or {"to": JID, "body": TEXT}, ...]} makes the agent send those
 * messages (XEP-0335 with a receipt request, or a chat body); answers come
 * back as "result" events.  At most 16 per result.
 */
static void send_messages(struct pl_agent *a, json_t *list)
{
    if (a->state != PL_AGENT_UP || !a->conn)
        return;
    for (size_t i = 0; i < json_array_size(list) && i < 16; i++) {
        json_t *m = json_array_get(list, i);
        const char *to = json_string_value(json_object_get(m, "to"));
        json_t *payload = json_object_get(m, "json");
        const char *body = json_string_value(json_object_get(m, "body"));
        if (!to || (!payload && !body))
            continue;
        char *id = xmpp_uuid_gen(a->ctx);
        xmpp_stanza_t *st = xmpp_message_new(a->ctx, payload ? NULL : "chat",
                                             to, id);
        if (payload) {
            char *text = json_dumps(payload, JSON_COMPACT | JSON_ENCODE_ANY);
            if (text)
                add_text_child(a->ctx, st, elem(a->ctx, "json", PL_NS_JSON),
                               text);
            free(text);
            xmpp_stanza_t *rq = elem(a->ctx, "request", PL_NS_RECEIPTS);
            xmpp_stanza_add_child(st, rq);
            xmpp_stanza_release(rq);
        } else {
            xmpp_message_set_body(st, body);
        }
        xmpp_send(a->conn, st);
        xmpp_stanza_release(st);
        pl_agent_emit("sent", json_pack("{s:s, s:s}", "to", to, "id", id));
        xmpp_free(a->ctx, id);
    }
}

static void send_receipt(struct pl_agent *a, const char *to, const char *id)
{
    char *rid = xmpp_uuid_gen(a->ctx);
    xmpp_stanza_t *m = xmpp_message_new(a->ctx, NULL, to, rid);
    xmpp_stanza_t *r = elem(a->ctx, "received", PL_NS_RECEIPTS);
    xmpp_stanza_set_attribute(r, "id", id);
    xmpp_stanza_add_child(m, r);
    xmpp_stanza_release(r);
    xmpp_send(a->conn, m);
    xmpp_stanza_release(m);
    xmpp_free(a->ctx, rid);
}

static void send_presence(struct pl_agent *a)
{
    xmpp_stanza_t *p = xmpp_presence_new(a->ctx);
    if (a->status)
        add_text_child(a->ctx, p, elem(a->ctx, "status", NULL), a->status);
    xmpp_send(a->conn, p);
    xmpp_stanza_release(p);
}

/* ----------------------------------------------------------- handlers */

static int bare_eq(const char *jid, const char *bare)
{
    size_t n = strcspn(jid, "/");
    return strlen(bare) == n && strncasecmp(jid, bare, n) == 0;
}

static int may_command(struct pl_agent *a, const char *from)
{
    if (bare_eq(from, a->domain))
        return 1;
    for (int i = 0; i < a->ncontrollers; i++)
        if (bare_eq(from, a->controllers[i]))
            return 1;
    return 0;
}

/* Whether id was handled already (a redelivery after a reconnect). */
static int seen_before(struct pl_agent *a, const char *id)
{
    for (int i = 0; i < PL_AGENT_SEEN_IDS; i++)
        if (a->seen[i] && !strcmp(a->seen[i], id))
            return 1;
    free(a->seen[a->seen_next]);
    a->seen[a->seen_next] = strdup(id);
    a->seen_next = (a->seen_next + 1) % PL_AGENT_SEEN_IDS;
    return 0;
}

static int on_message(xmpp_conn_t *conn, xmpp_stanza_t *st, void *ud)
{
    struct pl_agent *a = ud;
    const char *type = xmpp_stanza_get_type(st);
    const char *from = xmpp_stanza_get_from(st);
    const char *id = xmpp_stanza_get_id(st);
    if (!from)
        from = a->domain; /* RFC 6120 §8.1.2.1: from the server */
    if (type && !strcmp(type, "error")) {
        pl_agent_emit("error",
                      json_pack("{s:s, s:s?, s:s}", "from", from, "id", id,
                                "condition", pl_cl_error_condition(st)));
        return 1;
    }
    xmpp_stanza_t *rcv = xmpp_stanza_get_child_by_name_and_ns(st, "received",
                                                              PL_NS_RECEIPTS);
    if (rcv) {
        pl_agent_emit("receipt",
                      json_pack("{s:s, s:s?}", "from", from, "id",
                                xmpp_stanza_get_attribute(rcv, "id")));
        return 1;
    }
    xmpp_stanza_t *json = xmpp_stanza_get_child_by_name_and_ns(st, "json",
                                                               PL_NS_JSON);
    /* XEP-0184 §5.1: acknowledge on receipt, before processing. */
    if (id &&
        xmpp_stanza_get_child_by_name_and_ns(st, "request", PL_NS_RECEIPTS))
        send_receipt(a, from, id);
    if (json) {
        if (id && seen_before(a, id)) {
            pl_agent_emit("duplicate",
                          json_pack("{s:s, s:s}", "from", from, "id", id));
            return 1;
        }
        char *text = xmpp_stanza_get_text(json);
        json_t *doc = text ? json_loads(text, 0, NULL) : NULL;
        if (json_is_object(doc) && json_object_get(doc, "reply-to")) {
            /* An answer to something this box sent (box-to-box): reported,
             * never answered, so two boxes cannot bounce errors forever. */
            pl_agent_emit("result",
                          json_pack("{s:s, s:O}", "from", from, "result", doc));
            json_decref(doc);
            xmpp_free(a->ctx, text);
            return 1;
        }
        json_decref(doc);
        pl_agent_emit("payload", json_pack("{s:s, s:s?, s:s}", "from", from,
                                           "id", id, "json", text ? text : ""));
        if (!may_command(a, from)) {
            json_t *r = json_pack("{s:s?, s:s, s:s}", "reply-to", id, "error",
                                  "forbidden", "detail",
                                  "not a controller of this device");
            pl_agent_send_json(from, type, r, a);
            json_decref(r);
        } else {
            json_t *p = text ? json_loads(text, 0, NULL) : NULL;
            if (!json_is_object(p) ||
                !pl_agent_fetch_command(a, from, type, id, p))
                pl_dispatch_payload(&a->d, from, type, id, text ? text : "");
            json_decref(p);
        }
        xmpp_free(a->ctx, text);
        return 1;
    }
    xmpp_stanza_t *body = xmpp_stanza_get_child_by_name(st, "body");
    if (body) {
        char *text = xmpp_stanza_get_text(body);
        pl_agent_emit("message",
                      json_pack("{s:s, s:s?, s:s}", "from", from, "type", type,
                                "body", text ? text : ""));
        xmpp_free(a->ctx, text);
    }
    return 1;
}

static int on_iq(xmpp_conn_t *conn, xmpp_stanza_t *st, void *ud)
{
    struct pl_agent *a = ud;
    const char *type = xmpp_stanza_get_type(st);
    if (!type || (strcmp(type, "get") && strcmp(type, "set")))
        return 1;
    xmpp_stanza_t *reply;
    if (!strcmp(type, "get") &&
        xmpp_stanza_get_child_by_name_and_ns(st, "ping", PL_NS_PING)) {
        reply = xmpp_stanza_reply(st);
        xmpp_stanza_set_type(reply, "result");
    } else {
        /* RFC 6120 §8.4: an IQ nobody here understands. */
        reply = xmpp_stanza_reply_error(st, "cancel", "service-unavailable",
                                        NULL);
    }
    xmpp_send(a->conn, reply);
    xmpp_stanza_release(reply);
    return 1;
}

static int on_presence(xmpp_conn_t *conn, xmpp_stanza_t *st, void *ud)
{
    struct pl_agent *a = ud;
    const char *type = xmpp_stanza_get_type(st);
    const char *from = xmpp_stanza_get_from(st);
    if (!from)
        return 1;
    if (type && !strcmp(type, "subscribe")) {
        const char *at = strchr(from, '@');
        int same = at && !strcasecmp(at + 1, a->domain);
        xmpp_stanza_t *p = xmpp_presence_new(a->ctx);
        xmpp_stanza_set_to(p, from);
        xmpp_stanza_set_type(p, same && a->auto_approve ? "subscribed"
                                                        : "unsubscribed");
        xmpp_send(a->conn, p);
        xmpp_stanza_release(p);
    }
    pl_agent_emit("presence", json_pack("{s:s, s:s}", "from", from, "type",
                                        type ? type : "available"));
    return 1;
}

static int on_pong(xmpp_conn_t *conn, xmpp_stanza_t *st, void *ud)
{
    struct pl_agent *a = ud;
    a->ping_pending = 0;
    const char *type = xmpp_stanza_get_type(st);
    pl_agent_emit("pong",
                  json_pack("{s:s, s:I}", "type", type ? type : "", "rtt_ms",
                            (json_int_t)(pl_cl_now_ms() - a->ping_sent)));
    return 0;
}

static void send_ping(struct pl_agent *a)
{
    char id[32];
    snprintf(id, sizeof(id), "ping-%u", ++a->ping_seq);
    xmpp_stanza_t *iq = xmpp_iq_new(a->ctx, "get", id);
    xmpp_stanza_set_to(iq, a->domain);
    xmpp_stanza_t *p = elem(a->ctx, "ping", PL_NS_PING);
    xmpp_stanza_add_child(iq, p);
    xmpp_stanza_release(p);
    xmpp_id_handler_add(a->conn, on_pong, id, a);
    xmpp_send(a->conn, iq);
    xmpp_stanza_release(iq);
    a->ping_pending = 1;
    a->ping_sent = pl_cl_now_ms();
}

/* --------------------------------------------------------- life cycle */

static long long jittered_delay(struct pl_agent *a)
{
    long long d = a->backoff_min;
    for (int i = 0; i < a->attempt && d < a->backoff_max; i++)
        d *= 2;
    if (d > a->backoff_max)
        d = a->backoff_max;
    long long half = d / 2;
    return half + (half > 0 ? random() % (half + 1) : 0);
}

static void schedule_reconnect(struct pl_agent *a, const char *why)
{
    long long d = jittered_delay(a);
    a->attempt++;
    a->state = PL_AGENT_DOWN;
    a->reconnect_at = pl_cl_now_ms() + d;
    pl_agent_log("%s; reconnect attempt %d in %lld ms", why, a->attempt, d);
    pl_agent_emit("reconnect",
                  json_pack("{s:s, s:i, s:I}", "reason", why, "attempt",
                            a->attempt, "delay_ms", (json_int_t)d));
}

static void on_conn(xmpp_conn_t *conn, xmpp_conn_event_t ev, int error,
                    xmpp_stream_error_t *se, void *ud)
{
    struct pl_agent *a = ud;
    if (ev == XMPP_CONN_CONNECT) {
        a->state = PL_AGENT_UP;
        a->attempt = 0;
        a->auth_suspect = 0;
        a->ping_pending = 0;
        a->next_ping = pl_cl_now_ms() + a->ping_interval;
        const char *bound = xmpp_conn_get_bound_jid(conn);
        pl_agent_log("connected as %s", bound ? bound : "?");
        send_presence(a);
        pl_agent_media_online(a);
        /* Give back what the TLS and SASL set-up freed (RSS on small
         * devices: README "parley-agent"). */
        malloc_trim(0);
        pl_agent_emit("connected",
                      json_pack("{s:s, s:b}", "jid", bound ? bound : "",
                                "secured", xmpp_conn_is_secured(conn)));
        return;
    }
    if (ev != XMPP_CONN_DISCONNECT && ev != XMPP_CONN_FAIL)
        return;
    int was_up = a->state == PL_AGENT_UP;
    char why[160];
    if (se)
        snprintf(why, sizeof(why), "stream error %d%s%s", (int)se->type,
                 se->text ? ": " : "", se->text ? se->text : "");
    else if (error)
        snprintf(why, sizeof(why), "connection lost: %s", strerror(error));
    else if (pl_cl_cert_refused())
        snprintf(why, sizeof(why), "certificate not trusted");
    else if (!was_up && pl_cl_auth_failed())
        snprintf(why, sizeof(why), "authentication failed");
    else
        snprintf(why, sizeof(why),
                 was_up ? "disconnected" : "closed before login");
    if (!was_up && pl_cl_auth_failed())
        a->auth_suspect++;
    pl_agent_emit("disconnected", json_pack("{s:s}", "reason", why));
    if (stopping) {
        a->state = PL_AGENT_DOWN;
        return;
    }
    schedule_reconnect(a, why);
}

static int ensure_account(struct pl_agent *a)
{
    if (a->st.registered)
        return 0;
    char err[256];
    int rc = pl_cl_register(a->ctx, &a->o, a->domain, a->localpart,
                            a->st.secret, err, sizeof(err));
    if (rc == PL_EXIT_OK) {
        pl_agent_log("registered %s", a->st.jid);
        pl_agent_emit("registered", json_pack("{s:s}", "jid", a->st.jid));
    } else if (rc == PL_EXIT_CONFLICT) {
        /* Registered earlier (a crash before the state was saved) or by
         * the operator: logging in tells whether the secret is right. */
        pl_agent_log("%s exists already; trying to log in", a->st.jid);
    } else {
        pl_agent_log("registration of %s failed: %s", a->st.jid, err);
        return -1;
    }
    a->st.registered = 1;
    return pl_agent_state_save(a->state_path, &a->st) == 0 ? 0 : -1;
}

static void connect_now(struct pl_agent *a)
{
    if (a->auth_suspect >= 2 && !a->token) {
        /* The account may have been removed: provision it again (the
         * server answers conflict if it exists with another secret). */
        a->auth_suspect = 0;
        a->st.registered = 0;
    }
    if (ensure_account(a) != 0) {
        schedule_reconnect(a, "registration failed");
        return;
    }
    xmpp_sm_state_t *sm = NULL;
    if (a->conn) {
        if (!a->no_sm)
            sm = xmpp_conn_get_sm_state(a->conn);
        xmpp_conn_release(a->conn);
    }
    a->conn = pl_cl_conn_new(a->ctx, &a->o, a->full_jid, a->st.secret);
    if (!a->conn) {
        if (sm)
            xmpp_free_sm_state(sm);
        schedule_reconnect(a, "out of memory");
        return;
    }
    if (a->no_sm)
        xmpp_conn_set_flags(a->conn, xmpp_conn_get_flags(a->conn) |
                                         XMPP_CONN_FLAG_DISABLE_SM);
    if (sm && xmpp_conn_set_sm_state(a->conn, sm) != 0)
        xmpp_free_sm_state(sm);
    xmpp_handler_add(a->conn, on_message, NULL, "message", NULL, a);
    xmpp_handler_add(a->conn, on_iq, NULL, "iq", NULL, a);
    xmpp_handler_add(a->conn, on_presence, NULL, "presence", NULL, a);
    a->state = PL_AGENT_CONNECTING;
    if (xmpp_connect_client(a->conn, a->o.server, a->o.port, on_conn, a) != 0)
        schedule_reconnect(a, "cannot start a connection");
}

static int setup_identity(struct pl_agent *a, const char *iface,
                          const char *mac)
{
    char buf[64];
    if (iface) {
        if (pl_agent_read_mac(iface, buf, sizeof(buf)) != 0) {
            fprintf(stderr, "parley-agent: no MAC address for %s\n", iface);
            return -1;
        }
        mac = buf;
    }
    if (pl_agent_mac_localpart(mac, a->localpart) != 0) {
        fprintf(stderr, "parley-agent: '%s' is not a MAC address\n", mac);
        return -1;
    }
    char bare[300];
    snprintf(bare, sizeof(bare), "%s@%s", a->localpart, a->domain);
    snprintf(a->full_jid, sizeof(a->full_jid), "%s/%s", bare, a->resource);
    int rc = pl_agent_state_load(a->state_path, &a->st);
    if (rc < 0)
        return -1;
    if (rc == 1 && strcmp(a->st.jid, bare) != 0) {
        fprintf(stderr, "parley-agent: %s belongs to %s, not %s\n",
                a->state_path, a->st.jid, bare);
        return -1;
    }
    if (rc == 1 && a->token && strcmp(a->token, a->st.secret) != 0) {
        /* A new token from the operator replaces the kept secret. */
        free(a->st.secret);
        a->st.secret = strdup(a->token);
        a->st.registered = 1;
        return pl_agent_state_save(a->state_path, &a->st);
    }
    if (rc == 1)
        return 0;
    char secret[65];
    if (!a->token && pl_agent_secret_new(secret) != 0) {
        fprintf(stderr, "parley-agent: no randomness for a secret\n");
        return -1;
    }
    a->st.jid = strdup(bare);
    a->st.secret = strdup(a->token ? a->token : secret);
    /* A token means the operator created the account. */
    a->st.registered = a->token != NULL;
    return pl_agent_state_save(a->state_path, &a->st);
}

static int add_handler(struct pl_agent *a, const char *spec)
{
    const char *eq = strchr(spec, '=');
    if (!eq || eq == spec || !eq[1])
        return -1;
    a->d.handlers = realloc(a->d.handlers, sizeof(*a->d.handlers) *
                                               (size_t)(a->d.nhandlers + 1));
    a->d.handlers[a->d.nhandlers].name = strndup(spec, (size_t)(eq - spec));
    a->d.handlers[a->d.nhandlers].path = strdup(eq + 1);
    a->d.nhandlers++;
    return 0;
}

int main(int argc, char **argv)
{
    static struct pl_agent a;
    a.resource = "agent";
    a.state_path = "/var/lib/parley-agent/state.json";
    a.backoff_min = 1000;
    a.backoff_max = 300000;
    a.ping_interval = 60000;
    a.ping_timeout = 20000;
    a.auto_approve = 1;
    a.o.timeout_ms = 20000;
    a.d.timeout_ms = 30000;
    a.d.max_jobs = 4;
    a.d.max_output = 65536;
    a.d.reply = pl_agent_send_json;
    a.d.ud = &a;
    const char *iface = NULL, *mac = NULL;
    a.controllers = calloc((size_t)argc, sizeof(char *));
    for (int i = 1; i < argc; i++) {
        int r = pl_cl_parse_opt(&a.o, argc, argv, &i);
        if (r == 0)
            r = pl_agent_media_opt(&a, argc, argv, &i);
        if (r < 0)
            return usage();
        if (r > 0)
            continue;
        const char *o = argv[i];
        if (!strcmp(o, "--no-sm")) {
            a.no_sm = 1;
            continue;
        }
        if (!strcmp(o, "--no-auto-approve")) {
            a.auto_approve = 0;
            continue;
        }
        if (!strcmp(o, "--help") || !strcmp(o, "-h")) {
            usage_to(stdout);
            return 0;
        }
        if (!strcmp(o, "--version")) {
            puts("parley-agent " PL_VERSION);
            return 0;
        }
        if (i + 1 >= argc)
            return usage();
        const char *v = argv[++i];
        if (!strcmp(o, "--domain"))
            a.domain = v;
        else if (!strcmp(o, "--interface"))
            iface = v;
        else if (!strcmp(o, "--mac"))
            mac = v;
        else if (!strcmp(o, "--state-file"))
            a.state_path = v;
        else if (!strcmp(o, "--token"))
            a.token = v;
        else if (!strcmp(o, "--resource"))
            a.resource = v;
        else if (!strcmp(o, "--status"))
            a.status = v;
        else if (!strcmp(o, "--handler")) {
            if (add_handler(&a, v) != 0)
                return usage();
        } else if (!strcmp(o, "--handler-dir"))
            a.d.handler_dir = strdup(v);
        else if (!strcmp(o, "--handler-timeout"))
            a.d.timeout_ms = (long)(strtod(v, NULL) * 1000);
        else if (!strcmp(o, "--max-jobs"))
            a.d.max_jobs = atoi(v);
        else if (!strcmp(o, "--controller"))
            a.controllers[a.ncontrollers++] = v;
        else if (!strcmp(o, "--backoff-min"))
            a.backoff_min = atol(v);
        else if (!strcmp(o, "--backoff-max"))
            a.backoff_max = atol(v);
        else if (!strcmp(o, "--ping-interval"))
            a.ping_interval = (long)(strtod(v, NULL) * 1000);
        else if (!strcmp(o, "--ping-timeout"))
            a.ping_timeout = (long)(strtod(v, NULL) * 1000);
        else
            return usage();
    }
    if (!a.domain || (!iface == !mac) || a.backoff_min <= 0 ||
        a.backoff_max < a.backoff_min || a.ping_interval <= 0 ||
        a.ping_timeout <= 0 || a.d.timeout_ms <= 0 || a.d.max_jobs <= 0)
        return usage();
    if (setup_identity(&a, iface, mac) != 0)
        return PL_EXIT_FAILURE;
    curl_global_init(CURL_GLOBAL_DEFAULT); /* before any thread */
    if (pl_agent_media_init(&a) != 0)
        return PL_EXIT_FAILURE;
    srandom((unsigned)(time(NULL) ^ getpid() ^ (a.localpart[11] << 16)));
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    xmpp_initialize();
    a.ctx = pl_cl_ctx_new(&a.o);
    pl_agent_log("starting as %s", a.full_jid);
    connect_now(&a);
    while (!stopping) {
        xmpp_run_once(a.ctx, a.d.njobs ? 20 : a.media ? 50 : 200);
        long long now = pl_cl_now_ms();
        if (a.d.njobs)
            pl_dispatch_poll(&a.d);
        pl_agent_fetch_poll(&a);
        pl_agent_media_poll(&a);
        if (a.state == PL_AGENT_DOWN && now >= a.reconnect_at)
            connect_now(&a);
        if (a.state == PL_AGENT_UP) {
            if (a.ping_pending && now - a.ping_sent >= a.ping_timeout) {
                pl_agent_log("no answer to ping in %ld ms", a.ping_timeout);
                a.ping_pending = 0;
                xmpp_disconnect(a.conn);
            } else if (!a.ping_pending && now >= a.next_ping) {
                send_ping(&a);
                a.next_ping = now + a.ping_interval;
            }
        }
    }
    pl_agent_log("stopping");
    pl_dispatch_stop(&a.d);
    pl_agent_fetch_stop(&a);
    pl_agent_media_stop(&a); /* withdraws while still connected */
    if (a.conn && (a.state == PL_AGENT_UP || a.state == PL_AGENT_CONNECTING)) {
        xmpp_disconnect(a.conn);
        for (int i = 0; i < 40 && xmpp_conn_is_connected(a.conn); i++)
            xmpp_run_once(a.ctx, 50);
    }
    if (a.conn)
        xmpp_conn_release(a.conn);
    xmpp_ctx_free(a.ctx);
    xmpp_shutdown();
    pl_agent_state_free(&a.st);
    for (int i = 0; i < PL_AGENT_SEEN_IDS; i++)
        free(a.seen[i]);
    for (int i = 0; i < a.d.nhandlers; i++) {
        free(a.d.handlers[i].name);
        free(a.d.handlers[i].path);
    }
    free(a.d.handlers);
    free(a.d.handler_dir);
    free(a.controllers);
    return 0;
}
