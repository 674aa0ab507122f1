/*
 * s2s.c - server-to-server federation (see s2s.h): what the two
 * directions share, their lifetime, and the router's way out.
 *
 * Files:
 *   s2s.c       listeners and accept, start/stop/reload/count, the
 *               "route/remote" hook, `parleyctl s2s` (pl_s2s_links_json),
 *               and helpers every s2s file uses (settings, reasons, writes,
 *               connection limits, TLS contexts and peer checks)
 *   s2s_out.c   outgoing links: resolution, connect, TLS, features, queue
 *   s2s_in.c    incoming streams: features, SASL EXTERNAL, routing of what
 *               peers send
 *   dialback.c  XEP-0220 keys and db:result/db:verify, both ways
 *   framing.c   stream headers, ids and errors (shared with c2s)
 * The structures and the pl__s2s_* functions they share are in s2s_int.h.
 *
 * XEP-0288: with s2s.bidi, an outgoing link asks the peer to use it both
 * ways when the peer offers it, and an incoming stream whose peer asks
 * carries our stanzas to that peer too (only for the domain pairs it
 * authenticated), so two servers need one connection, not two.
 *
 * Objects are found again by id (DNS answers, verification results):
 * links live in two lists and die independently.
 *
 * Extending: a setting read by several files is read through
 * pl__s2s_settings(); state that both directions need lives here.
 */
#include "s2s_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "admin.h"
#include "alloc.h"
#include "conn.h"
#include "dns.h"
#include "error.h"
#include "hook.h"
#include "host.h"
#include "listen.h"
#include "log.h"
#include "loop.h"
#include "server.h"
#include "tls.h"
#include "xml.h"

const char *const pl__s2s_auth_names[] = {"none", "external", "dialback"};

const char *const pl__s2s_out_state_names[] = {
    "resolving",      "connecting", "negotiating",
    "authenticating", "ready",      "closing",
};


static struct pl_settings *S;
static const struct pl_s2s_settings *SS; /* the s2s group in force */
uint64_t pl__s2s_next_id = 1;
unsigned long pl__s2s_nconns;
static X509_STORE *store;    /* trusted authorities */
static SSL_CTX **client_ctx; /* per host index, outgoing TLS */
static int nclient_ctx;
static int started;

const struct pl_settings *pl__s2s_settings(void)
{
    return S;
}

const struct pl_s2s_settings *pl__s2s_conf(void)
{
    return SS;
}

void pl__s2s_whyf(char *out, size_t n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out, n, fmt, ap);
    va_end(ap);
}

int pl__s2s_allowed(const char *method)
{
    return pl_strlist_has(&SS->auth, method);
}

uint64_t pl__s2s_now_ms(void)
{
    return pl_loop_now(pl_server_loop());
}

void pl__s2s_write_str(struct pl_conn *c, const char *s)
{
    if (c)
        pl_conn_write(c, s, strlen(s));
}

void pl__s2s_write_buf(struct pl_conn *c, struct pl_buf *b)
{
    if (c)
        pl_conn_write(c, b->data + b->off, b->len);
    pl_buf_reset(b);
}

struct pl_conn_limits pl__s2s_conn_limits(void)
{
    struct pl_conn_limits lim = {(size_t)S->max_outbuf, (size_t)S->read_rate,
                                 (size_t)S->read_burst};
    return lim;
}

SSL_CTX *pl__s2s_client_ctx_for(const char *local)
{
    for (int i = 0; i < nclient_ctx; i++) {
        struct pl_host *h = pl_host_at(i);
        if (h && strcmp(h->domain, local) == 0)
            return client_ctx[i];
    }
    return NULL;
}

int pl__s2s_verify_peer(SSL *ssl, const char *domain, char *why, size_t n)
{
    return pl_tls_verify_peer(ssl, store, domain, why, n);
}

/* listen.h: a connection accepted on an s2s listener, within the limits;
 * the core starts it (TLS first on a direct TLS listener). */
static int s2s_accept(struct pl_listen *l, struct pl_conn *conn)
{
    /* Federation off: the listener stays, peers are turned away. */
    if (!started)
        return PL_ECLOSED;
    struct in *i = pl_calloc(1, sizeof(*i));
    i->id = pl__s2s_next_id++;
    i->conn = conn;
    pl_conn_set_handlers(conn, &pl__s2s_in_conn_ops, i);
    i->tls_mode = l->conf->tls;
    /* s2s.idle_timeout, traffic both ways (the core's deadlines). */
    pl_conn_set_idle(conn, (uint32_t)SS->idle_timeout * 1000, 1);
    pl__s2s_nconns++;
    i->next = pl__s2s_ins;
    if (pl__s2s_ins)
        pl__s2s_ins->prev = i;
    pl__s2s_ins = i;
    struct pl_xml_limits xl = {(size_t)S->max_stanza_size,
                               (unsigned)S->max_depth};
    i->xml = pl_xml_parser_new(&xl, &pl__s2s_in_xml_cb, i);
    /* Peers authenticate with their certificate (XEP-0178): ask for it. */
    pl_conn_set_tls_role(i->conn, 0, NULL, 1);
    return PL_OK;
}

/* ---- the router's side ---- */

static int on_route_remote(struct pl_event *ev, void *state)
{
    /* After the front end stopped (shutdown drain) no new link starts: the router
     * answers remote-server-not-found. */
    if (!SS->enable || !started || !ev->from || !ev->to || !ev->stanza)
        return PL_PASS;
    return pl__s2s_out_send(ev->host->domain, ev->to->domain, ev->stanza);
}

/* ---- lifetime ---- */

/* parleyctl s2s: the links (admin.h). */
static json_t *admin_s2s(json_t *req)
{
    (void)req;
    struct pl_buf b = {0};
    pl_s2s_links_json(&b);
    json_t *l = b.len ? json_loadb(b.data + b.off, b.len, 0, NULL) : NULL;
    pl_buf_reset(&b);
    if (!l)
        l = json_array();
    return json_pack("{s:b, s:o}", "ok", 1, "links", l);
}

static int s2s_start(struct pl_config *cfg, void *settings)
{
    SS = settings;
    pl_admin_add_op("s2s", admin_s2s);
    S = &cfg->s;
    if (!SS->enable)
        return PL_OK;
    if (pl_tls_store_load(SS->ca_file, SS->ca_dir, &store) != PL_OK)
        return PL_ETLS;
    if (pl_dns_init(pl_server_loop(), SS->resolver) != PL_OK)
        return PL_EIO;
    nclient_ctx = cfg->nhosts;
    client_ctx = pl_calloc((size_t)cfg->nhosts + 1, sizeof(*client_ctx));
    for (int k = 0; k < cfg->nhosts; k++) {
        struct pl_host *h = pl_host_at(k);
        const char *cert = h->tls ? h->conf->certificate : NULL;
        const char *key = h->tls ? h->conf->key : NULL;
        if (pl_tls_client_ctx(cert, key, &client_ctx[k]) != PL_OK)
            return PL_ETLS;
        /* Last: filters (blocking) see the stanza first. */
        pl_hook_add(h, "route/remote", on_route_remote, -1000, NULL);
    }
    started = 1;
    pl_log_info("s2s", "federation on: %d static route%s, resolver %s",
                SS->nroutes, SS->nroutes == 1 ? "" : "s",
                SS->resolver[0] ? SS->resolver : "of the system");
    return PL_OK;
}

static void s2s_stop(void)
{
    if (!started)
        return;
    started = 0;
    while (pl__s2s_outs) {
        struct out *o = pl__s2s_outs;
        while (o && o->detached)
            o = o->next;
        if (!o)
            break;
        if (o->state == O_READY) {
            pl__s2s_write_str(o->conn, "</stream:stream>");
            pl__s2s_out_detach(o);
        } else {
            pl__s2s_whyf(o->why, sizeof(o->why), "server shutting down");
            pl__s2s_out_fail(o, PL_EREMOTE_SERVER_TIMEOUT);
        }
    }
    for (struct in *i = pl__s2s_ins; i; i = i->next)
        pl__s2s_in_error(i, "system-shutdown", NULL);
    pl_dns_shutdown();
}

static void s2s_reload(struct pl_config *cfg, void *settings)
{
    SS = settings;
    S = &cfg->s;
    for (struct in *i = pl__s2s_ins; i; i = i->next)
        if (i->conn)
            pl_conn_set_idle(i->conn, (uint32_t)SS->idle_timeout * 1000, 1);
}

static unsigned long s2s_count(void)
{
    return pl__s2s_nconns;
}

static void json_str(struct pl_buf *b, const char *s)
{
    pl_buf_append_str(b, "\"");
    for (; s && *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            pl_buf_printf(b, "\\%c", c);
        else if (c < 0x20)
            pl_buf_printf(b, "\\u%04x", c);
        else
            pl_buf_append(b, s, 1);
    }
    pl_buf_append_str(b, "\"");
}

void pl_s2s_links_json(struct pl_buf *b)
{
    uint64_t now = pl__s2s_now_ms();
    int first = 1;
    pl_buf_append_str(b, "[");
    for (struct out *o = pl__s2s_outs; o; o = o->next) {
        pl_buf_append_str(b, first ? "{" : ",{");
        first = 0;
        pl_buf_append_str(b, "\"direction\":\"out\",\"local\":");
        json_str(b, o->local);
        pl_buf_append_str(b, ",\"remote\":");
        json_str(b, o->remote);
        pl_buf_printf(b,
                      ",\"state\":\"%s\",\"auth\":\"%s\",\"tls\":%s,"
                      "\"bidi\":%s,\"queued\":%zu,\"queued_bytes\":%zu,"
                      "\"age\":%llu,\"sent\":%lu,\"received\":%lu,"
                      "\"error\":",
                      pl__s2s_out_state_names[o->state],
                      pl__s2s_auth_names[o->auth], o->secure ? "true" : "false",
                      o->bidi ? "true" : "false", o->qn, o->qbytes,
                      (unsigned long long)((now - o->created_ms) / 1000),
                      o->sent, o->received);
        json_str(b, o->why);
        pl_buf_append_str(b, "}");
    }
    for (struct in *i = pl__s2s_ins; i; i = i->next) {
        pl_buf_append_str(b, first ? "{" : ",{");
        first = 0;
        pl_buf_append_str(b, "\"direction\":\"in\",\"local\":");
        json_str(b, i->host ? i->host->domain : "");
        pl_buf_append_str(b, ",\"remote\":");
        json_str(b, i->remote     ? i->remote
                    : i->pairs    ? i->pairs->from
                    : i->from_hdr ? i->from_hdr
                                  : "");
        int authed = i->remote || (i->pairs && i->pairs->valid);
        pl_buf_printf(b,
                      ",\"state\":\"%s\",\"auth\":\"%s\",\"tls\":%s,"
                      "\"bidi\":%s,\"queued\":0,\"queued_bytes\":0,"
                      "\"age\":%llu,\"sent\":%lu,\"received\":%lu,"
                      "\"error\":",
                      i->closing ? "closing"
                      : authed   ? "ready"
                                 : "negotiating",
                      pl__s2s_auth_names[i->auth], i->secure ? "true" : "false",
                      i->bidi ? "true" : "false",
                      (unsigned long long)((now - i->conn->opened_ms) / 1000),
                      i->sent, i->received);
        json_str(b, i->why);
        pl_buf_append_str(b, "}");
    }
    pl_buf_append_str(b, "]");
}

#define SS(field) offsetof(struct pl_s2s_settings, field)

static const struct pl_option options[] = {
    {"enable", PL_OPT_BOOL, "false", 0, 0, NULL,
     "Federate: exchange stanzas with other servers (RFC 6120 s2s).",
     SS(enable)},
    {"require_tls", PL_OPT_BOOL, "true", 0, 0, NULL,
     "Refuse server-to-server streams without TLS, both ways.",
     SS(require_tls)},
    {"bidi", PL_OPT_BOOL, "true", 0, 0, NULL,
     "One connection both ways with peers that offer it (XEP-0288).", SS(bidi)},
    {"auth", PL_OPT_STRLIST, "[\"external\", \"dialback\"]", 0, 0, NULL,
     "How peers authenticate, in order of preference: external (SASL "
     "EXTERNAL with a certificate, XEP-0178), dialback (XEP-0220).",
     SS(auth)},
    {"ca_file", PL_OPT_STRING, "\"\"", 0, 0, NULL,
     "PEM file of the certificate authorities trusted for peers' "
     "certificates; with ca_dir empty too, the system's.",
     SS(ca_file)},
    {"ca_dir", PL_OPT_STRING, "\"\"", 0, 0, NULL,
     "Directory of trusted authorities (OpenSSL hashed names).", SS(ca_dir)},
    {"connect_timeout", PL_OPT_INT, "20", 1, 3600, NULL,
     "Seconds to resolve, connect and authenticate a link; its queued "
     "stanzas then bounce with <remote-server-timeout/>.",
     SS(connect_timeout)},
    {"idle_timeout", PL_OPT_INT, "600", 5, 86400, NULL,
     "Seconds without a stanza either way before a link is closed.",
     SS(idle_timeout)},
    {"max_queue_bytes", PL_OPT_INT, "1048576", 1024, 1 << 30, NULL,
     "Bytes of stanzas queued for one remote domain while its link is "
     "set up; more bounce with <resource-constraint/>.",
     SS(max_queue_bytes)},
    {"resolver", PL_OPT_STRING, "\"\"", 0, 0, NULL,
     "DNS server as \"address:port\" for SRV and address lookups; empty: "
     "the system's (/etc/resolv.conf).",
     SS(resolver)},
    {"routes", PL_OPT_RAW, "()", 0, 0, NULL,
     "Static routes, before DNS: ( { domain = \"b.example\"; host = "
     "\"10.0.0.2\"; port = 5269; tls = \"starttls\"; } ) (tls: starttls or "
     "direct).",
     SS(routes_raw)},
    {0},
};

/* --check-config and every load: s2s.auth, s2s.resolver, and s2s.routes
 * read into the settings. */
static int check(struct pl_config *c, void *settings, char *err, size_t errlen)
{
    struct pl_s2s_settings *ss = settings;
    config_setting_t *grp = config_lookup(&c->cfg, "s2s");
    config_setting_t *at = grp ? config_setting_get_member(grp, "auth") : NULL;
    for (int i = 0; i < ss->auth.n; i++)
        if (strcmp(ss->auth.v[i], "external") != 0 &&
            strcmp(ss->auth.v[i], "dialback") != 0)
            return pl_config_where(err, errlen, at,
                                   "s2s.auth: '%s' is not external or dialback",
                                   ss->auth.v[i]);
    if (pl_dns_check_server(ss->resolver) != PL_OK)
        return pl_config_where(err, errlen,
                               grp ? config_setting_get_member(grp, "resolver")
                                   : NULL,
                               "s2s.resolver: '%s' is not address:port",
                               ss->resolver);
    config_setting_t *l = ss->routes_raw;
    if (!l)
        return PL_OK;
    if (!config_setting_is_list(l))
        return pl_config_where(err, errlen, l, "%s must be a list of groups",
                               "s2s.routes");
    int n = config_setting_length(l);
    ss->routes = pl_calloc((size_t)n + 1, sizeof(*ss->routes));
    for (int i = 0; i < n; i++) {
        config_setting_t *g = config_setting_get_elem(l, (unsigned)i);
        const char *domain = NULL, *host = NULL, *tls = "starttls";
        int port = 5269;
        if (!config_setting_is_group(g))
            return pl_config_where(err, errlen, g, "%s: each route is a group",
                                   "s2s.routes");
        config_setting_lookup_string(g, "domain", &domain);
        config_setting_lookup_string(g, "host", &host);
        config_setting_lookup_string(g, "tls", &tls);
        config_setting_t *ps = config_setting_get_member(g, "port");
        if (ps && (config_setting_type(ps) != CONFIG_TYPE_INT ||
                   (port = config_setting_get_int(ps)) < 1 || port > 65535))
            return pl_config_where(err, errlen, g, "%s: port must be 1-65535",
                                   "s2s.routes");
        char *norm = NULL;
        if (!domain || pl_jid_prep_domain(pl_str_c(domain), &norm) != PL_OK)
            return pl_config_where(err, errlen, g,
                                   "%s: a valid domain is needed",
                                   "s2s.routes");
        struct pl_s2s_route *r = &ss->routes[ss->nroutes++];
        r->domain = norm;
        if (!host || !*host)
            return pl_config_where(err, errlen, g, "%s: a host is needed",
                                   "s2s.routes");
        r->host = pl_strdup(host);
        r->port = port;
        if (strcmp(tls, "starttls") == 0)
            r->tls = PL_TLS_STARTTLS;
        else if (strcmp(tls, "direct") == 0)
            r->tls = PL_TLS_DIRECT;
        else
            return pl_config_where(
                err, errlen, g,
                "s2s.routes: tls must be starttls or direct, not "
                "'%s'",
                tls);
        config_setting_t *bad = NULL;
        for (int j = 0; j < config_setting_length(g); j++) {
            config_setting_t *m = config_setting_get_elem(g, (unsigned)j);
            const char *nm = config_setting_name(m);
            if (!nm || (strcmp(nm, "domain") && strcmp(nm, "host") &&
                        strcmp(nm, "port") && strcmp(nm, "tls")))
                bad = m;
        }
        if (bad)
            return pl_config_where(err, errlen, bad,
                                   "s2s.routes: unknown setting '%s'",
                                   config_setting_name(bad)
                                       ? config_setting_name(bad)
                                       : "?");
    }
    return PL_OK;
}

static void release(void *settings)
{
    struct pl_s2s_settings *ss = settings;
    for (int i = 0; i < ss->nroutes; i++) {
        pl_free(ss->routes[i].domain);
        pl_free(ss->routes[i].host);
    }
    pl_free(ss->routes);
    ss->routes = NULL;
    ss->nroutes = 0;
}

static const struct pl_protocol s2s_protocol = {
    .name = "s2s",
    .summary = "other XMPP servers (RFC 6120 federation)",
    .transports = PL_TRANSPORT_TCP,
    .default_port = 5269,
    .accept = s2s_accept,
};

static const struct pl_protocol *const protocols[] = {&s2s_protocol, NULL};

static const struct pl_frontend frontend = {
    .protocols = protocols,
    .options = options,
    .settings_size = sizeof(struct pl_s2s_settings),
    .check = check,
    .release = release,
    .start = s2s_start,
    .stop = s2s_stop,
    .reload = s2s_reload,
    .count = s2s_count,
};

const struct pl_module pl_mod_s2s = {
    .abi = PL_MODULE_ABI,
    .name = "s2s",
    .summary = "server-to-server streams: federation both ways",
    .xeps = "RFC 6120, XEP-0178, XEP-0220, XEP-0288",
    .frontend = &frontend,
};
