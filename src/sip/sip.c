/*
 * sip.c - the SIP front end (RFC 3261): `pl_mod_sip`, serving the
 * listener protocol "sip" over UDP, TCP and TLS (transport.c), with its
 * server-wide options (the `sip` group), their checks, its lifetime, the
 * parts that keep state beyond one request, and its operations.  The
 * files of src/sip/ and their API: sip_int.h.
 *
 * Configuration:
 *   listeners = (
 *     { protocol = "sip"; transport = "udp"; address = "0.0.0.0"; },
 *     { protocol = "sip"; address = "0.0.0.0"; },             # TCP 5060
 *     { protocol = "sip"; address = "0.0.0.0"; tls = "direct"; } # 5061
 *   );
 *   sip: { max_message_size = 65535; max_headers = 256;
 *          t1 = 500; t2 = 4000; t4 = 5000; max_transactions = 100000;
 *          max_contacts = 10; default_expires = 3600; min_expires = 60;
 *          max_expires = 86400; nonce_lifetime = 300;
 *          md5_only_agents = ["baresip v0.", "baresip v1.0."];
 *          offline_messages = "store";
 *          presence_authorization = "roster";
 *          presence_notify_interval = 1000; };
 * Nothing listens for SIP unless an entry says so.  SIP has no STARTTLS:
 * tls = "starttls" written in a sip entry is a configuration error; an
 * entry without tls is plain.
 *
 * Operations (admin socket, admin.h):
 *   "sip"       (parleyctl sip) the listeners with their transport,
 *               address, port and traffic, open connections, server and
 *               client transactions, and each part's own members;
 *   "sip-ping"  (parleyctl sip ping ADDRESS:PORT) sends an OPTIONS
 *               (RFC 3261 §11) over UDP as a client transaction and
 *               answers with the final status, the retransmissions Timer
 *               E made and the time taken: a reachability test for
 *               operators, and the way tests watch the client transaction
 *               on the wire.
 *
 * Parts (pl__sip_parts): the registrar (registrar.c), page-mode
 * messages (im.c) and presence publication (publish.c).
 *
 * Extending: a new setting is a field of struct sip_settings, a row of
 * options[] and, when it depends on others, a line in check(); a new part
 * (presence) is a struct sip_part in pl__sip_parts[].
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin.h"
#include "alloc.h"
#include "error.h"
#include "hook.h"
#include "host.h"
#include "listen.h"
#include "log.h"
#include "map_addr.h"
#include "module.h"
#include "server.h"
#include "sip_int.h"

/* The parts started with the front end, in order (stopped and freed in
 * reverse). */
const struct sip_part *const pl__sip_parts[] = {&pl__sip_registrar, &pl__sip_im,
                                                &pl__sip_publisher,
                                                &pl__sip_subscriber, NULL};

static const struct sip_settings defaults = {
    .max_message_size = 65535,
    .max_headers = 256,
    .t1 = 500,
    .t2 = 4000,
    .t4 = 5000,
    .max_transactions = 100000,
    .max_contacts = 10,
    .default_expires = 3600,
    .min_expires = 60,
    .max_expires = 86400,
    .nonce_lifetime = 300,
    .offline_messages = SIP_OFFLINE_STORE,
    .presence_authorization = SIP_PRESENCE_ROSTER,
    .presence_notify_interval = 1000,
    .auth_cache_ttl = 60,
    .auth_cache_max = 100000,
};

static const char *const offline_choices[] = {"store", "reject", NULL};
static const char *const presence_choices[] = {"roster", "open", NULL};
static const struct sip_settings *S = &defaults;
static int started;

const struct sip_settings *pl__sip_settings(void)
{
    return S;
}

void pl__sip_set_settings(const struct sip_settings *s)
{
    S = s ? s : &defaults;
}

/* ---- configuration ---- */

static const struct pl_option options[] = {
    {"max_message_size", PL_OPT_INT, "65535", 1024, 16777216, NULL,
     "Largest SIP message accepted, start line, header fields and body, in "
     "bytes, over UDP, TCP and TLS; a larger request gets 513 Message Too "
     "Large (RFC 3261 §21.5.7) when it can be addressed (a UDP datagram "
     "never holds more than 65507 bytes).",
     offsetof(struct sip_settings, max_message_size)},
    {"max_headers", PL_OPT_INT, "256", 16, 100000, NULL,
     "Most header fields in one SIP message; a request with more gets 513.",
     offsetof(struct sip_settings, max_headers)},
    {"t1", PL_OPT_INT, "500", 1, 60000, NULL,
     "RFC 3261 T1 in milliseconds, the round-trip estimate: UDP requests "
     "of the server are resent after T1, 2*T1... (Timer E), transactions "
     "last 64*T1 (Timers F and J).",
     offsetof(struct sip_settings, t1)},
    {"t2", PL_OPT_INT, "4000", 1, 600000, NULL,
     "RFC 3261 T2 in milliseconds: the longest interval between "
     "retransmissions of a non-INVITE request; at least t1.",
     offsetof(struct sip_settings, t2)},
    {"t4", PL_OPT_INT, "5000", 0, 600000, NULL,
     "RFC 3261 T4 in milliseconds, how long a message may stay in the "
     "network: a client transaction absorbs retransmitted answers that "
     "long (Timer K, UDP).",
     offsetof(struct sip_settings, t4)},
    {"max_transactions", PL_OPT_INT, "100000", 1, 100000000, NULL,
     "Most server and client transactions at once (a UDP one lasts 64*T1 "
     "after its answer); past it new requests get 503 with Retry-After.",
     offsetof(struct sip_settings, max_transactions)},
    {"max_contacts", PL_OPT_INT, "10", 1, 1000, NULL,
     "Registrar: most bindings (registered contacts) per address of record; "
     "a REGISTER that would make more gets 403.  Each is also a resource "
     "of the account (limits.max_resources_per_user applies too).",
     offsetof(struct sip_settings, max_contacts)},
    {"default_expires", PL_OPT_INT, "3600", 1, 4294967295L, NULL,
     "Registrar: seconds a binding lasts when the REGISTER names no expiry "
     "(RFC 3261 §10.2.1.1).",
     offsetof(struct sip_settings, default_expires)},
    {"min_expires", PL_OPT_INT, "60", 1, 3600, NULL,
     "Registrar: a shorter expiry (other than 0) is refused with 423 "
     "Interval Too Brief and Min-Expires (RFC 3261 §10.3 step 7).",
     offsetof(struct sip_settings, min_expires)},
    {"max_expires", PL_OPT_INT, "86400", 1, 4294967295L, NULL,
     "Registrar: a longer expiry is cut to this many seconds.",
     offsetof(struct sip_settings, max_expires)},
    {"nonce_lifetime", PL_OPT_INT, "300", 10, 86400, NULL,
     "Seconds a digest nonce is accepted; then the client is challenged "
     "again with stale=true (RFC 7616 §3.3).",
     offsetof(struct sip_settings, nonce_lifetime)},
    {"auth_cache_ttl", PL_OPT_INT, "60", 0, 3600, NULL,
     "Seconds the digest keys of an account that authenticated stay in "
     "memory, so that its next requests need no storage read; 0: always "
     "read.  A password changed by parleyctl passwd while parleyd runs "
     "may still work this long (XEP-0077 changes and removals take effect "
     "at once).",
     offsetof(struct sip_settings, auth_cache_ttl)},
    {"auth_cache_max", PL_OPT_INT, "100000", 0, 100000000, NULL,
     "Accounts whose digest keys are cached at most (about 150 bytes "
     "each); beyond, keys are read from storage each time.",
     offsetof(struct sip_settings, auth_cache_max)},
    {"offline_messages", PL_OPT_ENUM, "\"store\"", 0, 0, offline_choices,
     "A MESSAGE to a user with no available session: \"store\" keeps it in "
     "the offline store like an XMPP message (202 Accepted), \"reject\" "
     "answers 480 Temporarily Unavailable.",
     offsetof(struct sip_settings, offline_messages)},
    {"presence_authorization", PL_OPT_ENUM, "\"roster\"", 0, 0,
     presence_choices,
     "Who may SUBSCRIBE to a user's presence: \"roster\" a watcher whose "
     "roster has a subscription to the user ('to' or 'both'); anyone else "
     "makes an RFC 6121 subscription request and waits (pending) for the "
     "user's answer; \"open\" every authenticated user of the same host.",
     offsetof(struct sip_settings, presence_authorization)},
    {"presence_notify_interval", PL_OPT_INT, "1000", 0, 3600000, NULL,
     "Shortest time in milliseconds between two NOTIFYs of one "
     "subscription: changes in between are coalesced, the latest wins.",
     offsetof(struct sip_settings, presence_notify_interval)},
    {"md5_only_agents", PL_OPT_STRLIST, "[\"baresip v0.\", \"baresip v1.0.\"]",
     0, 0, NULL,
     "User-Agent prefixes that get only the MD5 digest challenge (with "
     "server.digest_md5 on): clients on libre before it skipped unknown "
     "algorithms fail a REGISTER whose 401 offers SHA-256 too (baresip "
     "1.0.0 answers ENOSYS) instead of using the MD5 one (RFC 8760 §2.4).",
     offsetof(struct sip_settings, md5_only_agents)},
    {0},
};

static int check(struct pl_config *c, void *settings, char *err, size_t errlen)
{
    const struct sip_settings *s = settings;
    if (s->t2 < s->t1)
        return pl_config_where(err, errlen, pl_config_group(c, "sip"),
                               "%s: t2 must be at least t1", "sip");
    if (s->min_expires > s->max_expires ||
        s->default_expires < s->min_expires ||
        s->default_expires > s->max_expires)
        return pl_config_where(err, errlen, pl_config_group(c, "sip"),
                               "%s: min_expires <= default_expires <= "
                               "max_expires is required",
                               "sip");
    for (int i = 0; i < c->nlisteners; i++) {
        struct pl_listener_conf *lc = &c->listeners[i];
        if (!lc->protocol || strcmp(lc->protocol, "sip") != 0 ||
            lc->tls != PL_TLS_STARTTLS)
            continue;
        /* An entry's tls is "starttls" when absent: only a written one is
         * an error; an absent one means plain (and is logged so). */
        if (lc->group && config_setting_get_member(lc->group, "tls"))
            return pl_config_where(
                err, errlen, lc->group,
                "%s: SIP has no STARTTLS: tls = \"direct\" (SIP over TLS, "
                "port 5061) or \"none\"",
                "listener sip");
        lc->tls = PL_TLS_NONE;
    }
    return PL_OK;
}

/* ---- operations ---- */

struct values_ctx {
    void **v;      /* the values so far */
    size_t n, cap; /* count and room */
};

static void add_value(const char *key, void *value, void *ud)
{
    (void)key;
    struct values_ctx *vc = ud;
    if (vc->n == vc->cap) {
        vc->cap = vc->cap ? vc->cap * 2 : 16;
        vc->v = pl_realloc(vc->v, vc->cap * sizeof(*vc->v));
    }
    vc->v[vc->n++] = value;
}

void **pl__sip_map_values(const struct pl_map *m, size_t *n)
{
    struct values_ctx vc = {NULL, 0, 0};
    pl_map_each(m, add_value, &vc);
    *n = vc.n;
    return vc.v;
}

void pl__sip_admin_list(json_t *answer, const char *key, const struct pl_map *m,
                        sip_row_fn *row)
{
    size_t n;
    void **v = pl__sip_map_values(m, &n);
    json_t *l = json_array();
    uint64_t now = pl_loop_now(pl_server_loop());
    for (size_t i = 0; i < n; i++)
        json_array_append_new(l, row(v[i], now));
    pl_free(v);
    json_object_set_new(answer, key, l);
}

json_int_t pl__sip_seconds_left(uint64_t at, uint64_t now)
{
    return (json_int_t)(at > now ? (at - now + 999) / 1000 : 0);
}

static json_t *admin_sip(json_t *req)
{
    (void)req;
    json_t *ls = json_array();
    for (int i = 0; pl_listen_at(i); i++) {
        struct pl_listen *l = pl_listen_at(i);
        if (l->proto != &pl__sip_protocol)
            continue;
        int udp = l->transport == PL_TRANSPORT_UDP;
        int tls = l->conf->tls == PL_TLS_DIRECT;
        json_t *o = json_pack("{s:s, s:s, s:i}", "transport",
                              udp   ? "udp"
                              : tls ? "tls"
                                    : "tcp",
                              "address", l->conf->address, "port",
                              pl_listen_port(l));
        if (udp) {
            json_object_set_new(o, "datagrams",
                                json_integer((json_int_t)l->datagrams));
            json_object_set_new(o, "send_drops",
                                json_integer((json_int_t)l->send_drops));
        } else {
            json_object_set_new(o, "accepted",
                                json_integer((json_int_t)l->accepted));
            json_object_set_new(o, "refused",
                                json_integer((json_int_t)l->refused));
        }
        json_array_append_new(ls, o);
    }
    json_t *a = json_pack("{s:b, s:o, s:{s:I, s:I}, s:{s:I, s:I}}", "ok", 1,
                          "listeners", ls, "connections", "tcp",
                          (json_int_t)pl__sip_conn_count(SIP_TCP), "tls",
                          (json_int_t)pl__sip_conn_count(SIP_TLS),
                          "transactions", "server",
                          (json_int_t)pl__sip_txn_count(0), "client",
                          (json_int_t)pl__sip_txn_count(1));
    for (int i = 0; pl__sip_parts[i]; i++)
        if (pl__sip_parts[i]->admin)
            pl__sip_parts[i]->admin(a);
    return a;
}

/* One pending `parleyctl sip ping`. */
struct ping {
    uint64_t cid;      /* the admin client */
    json_t *tag;       /* its request's tag, or NULL */
    uint64_t start_ms; /* loop time sent */
};

static void ping_done(void *arg, int code, osip_message_t *resp,
                      unsigned retransmissions)
{
    struct ping *p = arg;
    uint64_t ms = pl_loop_now(pl_server_loop()) - p->start_ms;
    const char *reason = resp && resp->reason_phrase ? resp->reason_phrase
                                                     : pl_sip_reason(code);
    json_t *a = json_pack("{s:b, s:i, s:s, s:b, s:i, s:I}", "ok", 1, "code",
                          code, "reason", reason, "answered", resp != NULL,
                          "retransmissions", (int)retransmissions, "ms",
                          (json_int_t)ms);
    if (p->tag)
        json_object_set(a, "tag", p->tag);
    pl_admin_answer(p->cid, a);
    json_decref(a);
    json_decref(p->tag);
    pl_free(p);
}

static void admin_error(uint64_t cid, json_t *req, const char *cond,
                        const char *detail)
{
    json_t *a = json_pack("{s:b, s:s, s:s}", "ok", 0, "error", cond, "detail",
                          detail);
    json_t *tag = json_object_get(req, "tag");
    if (tag)
        json_object_set(a, "tag", tag);
    pl_admin_answer(cid, a);
    json_decref(a);
}

/* "admin/sip-ping" {target: "ADDRESS:PORT"}: see the file comment. */
static int on_admin_ping(struct pl_event *ev, void *state)
{
    (void)state;
    struct pl_admin_request *r = ev->data;
    const char *target = json_string_value(json_object_get(r->req, "target"));
    char ip[64] = "";
    int port = 0;
    if (target) {
        const char *colon = strrchr(target, ':');
        size_t n = colon ? (size_t)(colon - target) : 0;
        if (n > 1 && target[0] == '[' && target[n - 1] == ']')
            snprintf(ip, sizeof(ip), "%.*s", (int)n - 2, target + 1);
        else if (n && n < sizeof(ip))
            snprintf(ip, sizeof(ip), "%.*s", (int)n, target);
        port = colon ? atoi(colon + 1) : 0;
    }
    struct sip_flow f;
    if (!ip[0] || pl__sip_udp_flow(ip, port, &f) != PL_OK) {
        admin_error(r->cid, r->req, "bad-request",
                    "target must be ADDRESS:PORT, with a sip listener over "
                    "udp of that address family");
        return PL_HANDLED;
    }
    char uri[128], from[320];
    snprintf(uri, sizeof(uri), strchr(ip, ':') ? "sip:[%s]:%d" : "sip:%s:%d",
             ip, port);
    snprintf(from, sizeof(from), "<sip:parley@%s>", ev->host->domain);
    osip_message_t *m = NULL;
    if (pl__sip_request_new("OPTIONS", uri, from, uri, &m) != PL_OK) {
        admin_error(r->cid, r->req, "bad-request", "cannot build the request");
        return PL_HANDLED;
    }
    struct ping *p = pl_calloc(1, sizeof(*p));
    p->cid = r->cid;
    p->tag = json_incref(json_object_get(r->req, "tag"));
    p->start_ms = pl_loop_now(pl_server_loop());
    int rc = pl__sip_request_send(&f, m, ping_done, p, NULL);
    if (rc != PL_OK) {
        json_decref(p->tag);
        pl_free(p);
        admin_error(r->cid, r->req, "service-unavailable", pl_strerror(rc));
    }
    return PL_HANDLED;
}

/* ---- lifetime ---- */

static int sip_start(struct pl_config *c, void *settings)
{
    S = settings;
    pl__sip_osip_init();
    pl__sip_addresses_load(c);
    pl__sip_txn_init();
    started = 1;
    for (int i = 0; pl__sip_parts[i]; i++)
        if (pl__sip_parts[i]->start && pl__sip_parts[i]->start(c) != PL_OK) {
            pl_log_error("sip", "%s failed to start", pl__sip_parts[i]->name);
            return PL_EINVAL;
        }
    pl_admin_add_op("sip", admin_sip);
    for (int i = 0; pl_host_at(i); i++)
        pl_hook_add(pl_host_at(i), "admin/sip-ping", on_admin_ping, 0, NULL);
    return PL_OK;
}

static void sip_stop(void)
{
    int n = 0;
    while (pl__sip_parts[n])
        n++;
    while (n--)
        if (pl__sip_parts[n]->stop)
            pl__sip_parts[n]->stop();
    pl__sip_conns_close();
}

static void sip_reload(struct pl_config *c, void *settings)
{
    S = settings;
    pl__sip_addresses_load(c);
}

static unsigned long sip_count(void)
{
    return pl__sip_conn_count(SIP_TCP) + pl__sip_conn_count(SIP_TLS);
}

static void sip_free(void)
{
    if (!started)
        return;
    started = 0;
    pl__sip_txn_free();
    int n = 0;
    while (pl__sip_parts[n])
        n++;
    while (n--)
        if (pl__sip_parts[n]->free)
            pl__sip_parts[n]->free();
    pl__sip_addresses_free();
    S = &defaults;
}

static const struct pl_protocol *const protocols[] = {&pl__sip_protocol, NULL};

static const struct pl_frontend frontend = {
    .protocols = protocols,
    .options = options,
    .settings_size = sizeof(struct sip_settings),
    .check = check,
    .start = sip_start,
    .stop = sip_stop,
    .reload = sip_reload,
    .count = sip_count,
    .free = sip_free,
};

const struct pl_module pl_mod_sip = {
    .abi = PL_MODULE_ABI,
    .name = "sip",
    .summary = "SIP front end: UDP, TCP and TLS transports, transactions",
    .xeps = "RFC 3261, RFC 3581, RFC 5626 keep-alives",
    .frontend = &frontend,
};
