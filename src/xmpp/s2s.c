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
    "resolving", "connecting", "negotiating", "authenticating", "ready",
    "closing",
};


static struct pl_settings *S;
static struct pl_config *C;
uint64_t pl__s2s_next_id = 1;
unsigned long pl__s2s_nconns;
static X509_STORE *store;        /* trusted authorities */
static SSL_CTX **client_ctx;     /* per host index, outgoing TLS */
static int nclient_ctx;
static int started;

const struct pl_settings *pl__s2s_settings(void)
{
    return S;
}

const struct pl_config *pl__s2s_config(void)
{
    return C;
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
    return pl_strlist_has(&S->s2s_auth, method);
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
    i->opened_ms = pl__s2s_now_ms();
    pl__s2s_nconns++;
    i->next = pl__s2s_ins;
    if (pl__s2s_ins)
        pl__s2s_ins->prev = i;
    pl__s2s_ins = i;
    struct pl_xml_limits xl = {(size_t)S->max_stanza_size,
                               (unsigned)S->max_depth};
    i->xml = pl_xml_parser_new(&xl, &pl__s2s_in_xml_cb, i);
    pl_timer_init(&i->timer, pl__s2s_on_in_timer, i);
    pl_timer_start(pl_server_loop(), &i->timer, 1000);
    /* Peers authenticate with their certificate (XEP-0178): ask for it. */
    pl_conn_set_tls_role(i->conn, 0, NULL, 1);
    return PL_OK;
}

/* ---- the router's side ---- */

static int on_route_remote(struct pl_event *ev, void *state)
{
    /* After the front end stopped (shutdown drain) no new link starts: the router
     * answers remote-server-not-found. */
    if (!S->s2s_enable || !started || !ev->from || !ev->to || !ev->stanza)
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
    (void)settings;
    pl_admin_add_op("s2s", admin_s2s);
    S = &cfg->s;
    C = cfg;
    if (!S->s2s_enable)
        return PL_OK;
    if (pl_tls_store_load(S->s2s_ca_file, S->s2s_ca_dir, &store) != PL_OK)
        return PL_ETLS;
    if (pl_dns_init(pl_server_loop(), S->s2s_resolver) != PL_OK)
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
                cfg->nroutes, cfg->nroutes == 1 ? "" : "s",
                S->s2s_resolver[0] ? S->s2s_resolver : "of the system");
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
    (void)settings;
    S = &cfg->s;
    C = cfg;
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
        pl_buf_printf(b, ",\"state\":\"%s\",\"auth\":\"%s\",\"tls\":%s,"
                         "\"bidi\":%s,\"queued\":%zu,\"queued_bytes\":%zu,"
                         "\"age\":%llu,\"sent\":%lu,\"received\":%lu,"
                         "\"error\":",
                      pl__s2s_out_state_names[o->state],
                      pl__s2s_auth_names[o->auth],
                      o->secure ? "true" : "false",
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
        json_str(b, i->remote ? i->remote
                    : i->pairs ? i->pairs->from
                    : i->from_hdr ? i->from_hdr : "");
        int authed = i->remote || (i->pairs && i->pairs->valid);
        pl_buf_printf(b, ",\"state\":\"%s\",\"auth\":\"%s\",\"tls\":%s,"
                         "\"bidi\":%s,\"queued\":0,\"queued_bytes\":0,"
                         "\"age\":%llu,\"sent\":%lu,\"received\":%lu,"
                         "\"error\":",
                      i->closing ? "closing" : authed ? "ready"
                                                      : "negotiating",
                      pl__s2s_auth_names[i->auth], i->secure ? "true" : "false",
                      i->bidi ? "true" : "false",
                      (unsigned long long)((now - i->opened_ms) / 1000),
                      i->sent, i->received);
        json_str(b, i->why);
        pl_buf_append_str(b, "}");
    }
    pl_buf_append_str(b, "]");
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
