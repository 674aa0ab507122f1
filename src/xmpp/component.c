/*
 * component.c - external components (XEP-0114, jabber:component:accept):
 * trusted programs (an IRC gateway such as biboumi, the e-mail/SMS
 * gateway) that connect to the server and serve a domain of their own.
 *
 * Configuration: a listeners entry { protocol = "component"; port = 5347; }
 * and, in a host's group, the components it accepts:
 *   components = ( { domain = "irc.example.org"; secret = "..."; } );
 * Each domain is claimed as a service of that host (host.h), so stanzas to
 * the domain or to any JID at it come here ("component/message",
 * "component/presence", "component/iq") and go down the component's
 * connection; while it is not connected the router bounces them as for any
 * unavailable service (<service-unavailable/> for messages and requests).
 *
 * The stream (XEP-0114 §3): the component opens a stream to its domain; we
 * answer with a header carrying a fresh id; it proves the shared secret
 * with <handshake>hex(SHA-1(id + secret))</handshake> (compared in
 * constant time); we answer <handshake/>.  Then every stanza it sends
 * must come from its domain (or a JID at it) and is routed as any stanza
 * from that JID.  Errors are the RFC 6120 stream errors: host-unknown
 * (no such component), not-authorized (wrong secret, stanza before the
 * handshake), conflict (the component is already connected: the new
 * connection is refused and the working one kept), invalid-from,
 * improper-addressing, unsupported-stanza-type, and the XML parser's.
 * Connection limits, read rate limits, sizes and the handshake deadline
 * are the core's (listen.h, the limits group or the listeners entry): a
 * handshake must complete within handshake_timeout; a connected component
 * has no idle deadline (unless its entry sets idle_timeout), our
 * keepalives find dead ones.
 *
 * Stanzas the component sends are in jabber:component:accept; they enter
 * the server as jabber:client content (XEP-0114 §3: the namespaces carry
 * the same stanzas), so every module sees the namespace it expects.
 *
 * Operations: `parleyctl components` (admin op "components") lists every
 * configured component, whether it is connected, since when and from
 * where, and its stanza counts.
 *
 * Extending: a new per-component setting is a field of struct comp, read
 * in read_components().
 */
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <string.h>

#include "admin.h"
#include "alloc.h"
#include "conn.h"
#include "error.h"
#include "framing.h"
#include "hook.h"
#include "host.h"
#include "jid.h"
#include "listen.h"
#include "log.h"
#include "module.h"
#include "router.h"
#include "server.h"
#include "stanza.h"
#include "stats.h"
#include "xml.h"

#define NS_COMPONENT PL_NS_COMPONENT

/* One configured component. */
struct comp {
    char *domain;         /* normalized domain it serves */
    char *secret;         /* shared secret (from the configuration) */
    struct pl_host *host; /* the host whose service it is */
    struct link *link;    /* its authenticated connection, or NULL */
    uint64_t since_ms;    /* loop time the link authenticated */
    uint64_t in, out;     /* stanzas received from it, sent to it */
    uint64_t connects;    /* successful handshakes so far */
    uint64_t refusals;    /* failed handshakes and conflicts */
};

enum link_state {
    L_HEADER = 0, /* waiting for the component's stream header */
    L_HANDSHAKE,  /* header answered, waiting for <handshake/> */
    L_READY,      /* authenticated: stanzas flow */
};

/* One connection on a component listener. */
struct link {
    struct pl_conn *conn;      /* NULL once closed */
    struct pl_xml_parser *xml; /* stream parser */
    struct comp *comp;         /* named by the header, or NULL */
    int state;                 /* enum link_state */
    unsigned closing : 1;      /* stream error or close sent */
    unsigned header_sent : 1;  /* our stream header is out */
    char id[24];               /* stream id (hex) */
    uint64_t keepalive_ms;     /* loop time of the last keepalive */
    struct pl_timer timer;     /* keepalives, once connected */
    struct link *prev, *next;  /* all open links */
};

struct settings {
    long keepalive_interval; /* seconds between whitespace keepalives */
};

static struct comp *comps;
static int ncomps;
static struct link *links;
static unsigned long nlinks;
static const struct settings *C; /* in force */
static const struct pl_settings *S;

/* ---- configuration ---- */

static void comps_free(struct comp *v, int n)
{
    for (int i = 0; i < n; i++) {
        pl_free(v[i].domain);
        pl_free(v[i].secret);
    }
    pl_free(v);
}

/* Reads every host's `components` list into *out (domains normalized,
 * unique, not a host).  Host pointers are filled later (hosts may not
 * exist yet during --check-config). */
static int read_components(struct pl_config *c, struct comp **out, int *nout,
                           char *err, size_t errlen)
{
    struct comp *v = NULL;
    int n = 0;
    for (int h = 0; h < c->nhosts; h++) {
        config_setting_t *l = config_setting_get_member(c->hosts[h].group,
                                                        "components");
        if (!l)
            continue;
        if (!config_setting_is_list(l) && !config_setting_is_array(l)) {
            comps_free(v, n);
            return pl_config_where(err, errlen, l,
                                   "%s must be a list of groups", "components");
        }
        for (int i = 0; i < config_setting_length(l); i++) {
            config_setting_t *g = config_setting_get_elem(l, (unsigned)i);
            const char *domain = NULL, *secret = NULL;
            if (!config_setting_is_group(g) ||
                !config_setting_lookup_string(g, "domain", &domain) ||
                !config_setting_lookup_string(g, "secret", &secret) ||
                !secret[0]) {
                comps_free(v, n);
                return pl_config_where(
                    err, errlen, g,
                    "%s: each needs { domain = \"...\"; secret = "
                    "\"...\"; } with a non-empty secret",
                    "components");
            }
            for (int k = 0; k < config_setting_length(g); k++) {
                const char *key = config_setting_name(
                    config_setting_get_elem(g, (unsigned)k));
                if (strcmp(key, "domain") != 0 && strcmp(key, "secret") != 0) {
                    comps_free(v, n);
                    return pl_config_where(err, errlen, g,
                                           "components: unknown setting '%s'",
                                           key);
                }
            }
            char *norm = NULL;
            if (pl_jid_prep_domain(pl_str_c(domain), &norm) != PL_OK) {
                comps_free(v, n);
                return pl_config_where(err, errlen, g,
                                       "components: '%s' is not a valid domain",
                                       domain);
            }
            int dup = 0;
            for (int k = 0; k < c->nhosts; k++)
                dup |= strcmp(c->hosts[k].domain, norm) == 0;
            for (int k = 0; k < n; k++)
                dup |= strcmp(v[k].domain, norm) == 0;
            if (dup) {
                pl_free(norm);
                comps_free(v, n);
                return pl_config_where(
                    err, errlen, g,
                    "components: '%s' is a host or listed twice", domain);
            }
            v = pl_realloc(v, (size_t)(n + 1) * sizeof(*v));
            memset(&v[n], 0, sizeof(v[n]));
            v[n].domain = norm;
            v[n].secret = pl_strdup(secret);
            v[n].host = (struct pl_host *)(intptr_t)h; /* index for now */
            n++;
        }
    }
    *out = v;
    *nout = n;
    return PL_OK;
}

static int check(struct pl_config *c, void *settings, char *err, size_t errlen)
{
    (void)settings;
    struct comp *v;
    int n;
    int rc = read_components(c, &v, &n, err, errlen);
    if (rc == PL_OK)
        comps_free(v, n);
    return rc;
}

static struct comp *comp_find(const char *domain)
{
    for (int i = 0; i < ncomps; i++)
        if (strcmp(comps[i].domain, domain) == 0)
            return &comps[i];
    return NULL;
}

/* ---- output ---- */

static void out(struct link *l, const char *s)
{
    if (l->conn)
        pl_conn_write(l->conn, s, strlen(s));
}

static void send_header(struct link *l, const char *from)
{
    pl_stream_id(l->id, sizeof(l->id));
    struct pl_buf b = {0};
    /* XEP-0114 §3: no version, so no stream features. */
    pl_stream_header(&b, NS_COMPONENT, from, NULL, l->id, 0);
    if (l->conn)
        pl_conn_write(l->conn, b.data + b.off, b.len);
    pl_buf_reset(&b);
    l->header_sent = 1;
}

/* Ends the stream with an RFC 6120 §4.9.3 condition. */
static void stream_error(struct link *l, const char *cond, const char *text)
{
    if (l->closing || !l->conn)
        return;
    if (!l->header_sent)
        send_header(l, l->comp ? l->comp->domain : NULL);
    struct pl_buf b = {0};
    pl_stream_error_xml(&b, cond, text);
    pl_conn_write(l->conn, b.data + b.off, b.len);
    pl_buf_reset(&b);
    l->closing = 1;
    pl_stat_inc(stream_errors);
    pl_log_info("component", "%s:%d%s%s: stream error %s%s%s", l->conn->ip,
                l->conn->port, l->comp ? " " : "",
                l->comp ? l->comp->domain : "", cond, text ? ": " : "",
                text ? text : "");
    pl_conn_close(l->conn);
}

/* Writes st (borrowed) to the component, with 'to' written in when the
 * router's fan-out left it out. */
static void send_stanza(struct link *l, struct pl_stanza *st,
                        const struct pl_jid *to)
{
    struct pl_stanza *addressed = NULL;
    if (!pl_stanza_attr(st, "to") && to) {
        addressed = pl_stanza_copy(st);
        pl_stanza_set_attr(addressed, "to", to->full);
        st = addressed;
    }
    struct pl_str x = pl_stanza_serialize(st, NS_COMPONENT);
    pl_conn_write(l->conn, x.p, x.len);
    l->comp->out++;
    pl_stat_inc(stanzas_out);
    pl_stanza_unref(addressed);
}

/* ---- the router's side: stanzas to a component's domain ---- */

static int on_to_component(struct pl_event *ev, void *state)
{
    (void)state;
    struct comp *cp = ev->to ? comp_find(ev->to->domain) : NULL;
    if (!cp)
        return PL_PASS; /* another service of this host */
    struct link *l = cp->link;
    if (!l || !l->conn || l->closing)
        return PL_PASS; /* the router bounces it (service-unavailable) */
    send_stanza(l, ev->stanza, ev->to);
    return PL_HANDLED;
}

/* ---- the component's side ---- */

/* Every element of the stanza in the component namespace becomes
 * jabber:client content (see the file comment). */
static void to_client_ns(struct pl_node *n)
{
    if (n->ns && strcmp(n->ns, NS_COMPONENT) == 0)
        n->ns = PL_NS_CLIENT;
    for (struct pl_node *c = pl_node_first_elem(n); c; c = pl_node_next_elem(c))
        if (c->ns && strcmp(c->ns, NS_COMPONENT) == 0)
            to_client_ns(c);
}

static void on_stream_open(void *ud, struct pl_stanza *hdr)
{
    struct link *l = ud;
    struct pl_node *root = pl_stanza_root(hdr);
    const char *content = pl_node_attr(root, "xmlns");
    const char *to = pl_node_attr(root, "to");
    char *dom = NULL;
    if (to)
        pl_jid_prep_domain(pl_str_c(to), &dom);
    l->comp = dom ? comp_find(dom) : NULL;
    pl_free(dom);
    if (strcmp(root->ns, PL_NS_STREAMS) != 0 ||
        strcmp(root->name, "stream") != 0) {
        stream_error(l,
                     strcmp(root->ns, PL_NS_STREAMS) != 0 ? "invalid-namespace"
                                                          : "bad-format",
                     NULL);
    } else if (!content || strcmp(content, NS_COMPONENT) != 0) {
        stream_error(l, "invalid-namespace", "expected " NS_COMPONENT);
    } else if (!l->comp) {
        stream_error(l, "host-unknown", "no such component");
    } else {
        send_header(l, l->comp->domain);
        l->state = L_HANDSHAKE;
    }
}

/* Lower-case hex of SHA-1(id + secret) (XEP-0114 §3). */
static void expected_handshake(const struct link *l, char out[41])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    EVP_MD_CTX *x = EVP_MD_CTX_new();
    EVP_DigestInit_ex(x, EVP_sha1(), NULL);
    EVP_DigestUpdate(x, l->id, strlen(l->id));
    EVP_DigestUpdate(x, l->comp->secret, strlen(l->comp->secret));
    EVP_DigestFinal_ex(x, md, &mdlen);
    EVP_MD_CTX_free(x);
    static const char hex[] = "0123456789abcdef";
    for (unsigned i = 0; i < 20; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[40] = '\0';
}

static void on_handshake(struct link *l, struct pl_stanza *st)
{
    char want[41], got[41];
    expected_handshake(l, want);
    size_t n = 0;
    const char *text = pl_node_text(st, pl_stanza_root(st), &n);
    /* Hex digits compare case-insensitively; the length is public. */
    memset(got, 0, sizeof(got));
    for (size_t i = 0; i < n && i < 40; i++)
        got[i] = (char)(text[i] >= 'A' && text[i] <= 'F' ? text[i] + 32
                                                         : text[i]);
    int ok = n == 40 && CRYPTO_memcmp(got, want, 40) == 0;
    if (!ok) {
        l->comp->refusals++;
        stream_error(l, "not-authorized", "wrong handshake");
        return;
    }
    if (l->comp->link) {
        /* The working connection stays; the newcomer is told why. */
        l->comp->refusals++;
        stream_error(l, "conflict", "component already connected");
        return;
    }
    l->comp->link = l;
    l->comp->since_ms = pl_loop_now(l->conn->loop);
    l->comp->connects++;
    l->state = L_READY;
    pl_conn_established(l->conn);
    pl_timer_start(l->conn->loop, &l->timer, 5000);
    out(l, "<handshake/>");
    pl_log_info("component", "%s connected from %s:%d", l->comp->domain,
                l->conn->ip, l->conn->port);
}

static void route_from_component(struct link *l, struct pl_stanza *st)
{
    const char *f = pl_stanza_attr(st, "from");
    const char *t = pl_stanza_attr(st, "to");
    struct pl_jid *from = NULL, *to = NULL;
    if (!f || !t) {
        stream_error(l, "improper-addressing",
                     "a component's stanza needs 'from' and 'to'");
        return;
    }
    if (pl_jid_parse(pl_str_c(f), &from) != PL_OK ||
        strcmp(from->domain, l->comp->domain) != 0) {
        pl_jid_free(from);
        stream_error(l, "invalid-from", "not a JID of this component");
        return;
    }
    if (pl_jid_parse(pl_str_c(t), &to) != PL_OK) {
        /* The sender is known: a stanza error, not a stream error. */
        pl_route_error(st, PL_EJID_MALFORMED, NULL);
        pl_jid_free(from);
        return;
    }
    if (strcmp(f, from->full) != 0)
        pl_stanza_set_attr(st, "from", from->full);
    if (strcmp(t, to->full) != 0)
        pl_stanza_set_attr(st, "to", to->full);
    l->comp->in++;
    pl_stat_inc(stanzas_in);
    pl_route(st, from, to, NULL);
    pl_jid_free(from);
    pl_jid_free(to);
}

static void on_stanza(void *ud, struct pl_stanza *st)
{
    struct link *l = ud;
    struct pl_node *root = pl_stanza_root(st);
    if (l->closing) {
        /* nothing more is read from a closing stream */
    } else if (l->state == L_HANDSHAKE) {
        if (strcmp(root->ns, NS_COMPONENT) == 0 &&
            strcmp(root->name, "handshake") == 0)
            on_handshake(l, st);
        else
            stream_error(l, "not-authorized", "handshake first");
    } else if (!pl_stream_is_stanza(root, NS_COMPONENT)) {
        stream_error(l, "unsupported-stanza-type", NULL);
    } else {
        to_client_ns(root);
        route_from_component(l, st);
    }
    pl_stanza_unref(st);
}

static void close_stream(struct link *l)
{
    if (l->closing || !l->conn)
        return;
    out(l, "</stream:stream>");
    l->closing = 1;
    pl_conn_close(l->conn);
}

static void on_stream_close(void *ud)
{
    close_stream(ud);
}

static void on_xml_error(void *ud, enum pl_xml_error err, const char *text)
{
    stream_error(ud, pl_xml_error_condition(err), NULL);
    pl_log_debug("component", "XML error: %s", text ? text : "");
}

static const struct pl_xml_callbacks xml_cb = {on_stream_open, on_stanza,
                                               on_stream_close, on_xml_error};

/* ---- connections ---- */

static void on_data(struct pl_conn *conn, const char *p, size_t n)
{
    struct link *l = conn->data;
    pl_stat_add(bytes_in, n);
    if (!l->closing)
        pl_xml_parser_feed(l->xml, p, n);
}

static void on_closed(struct pl_conn *conn)
{
    struct link *l = conn->data;
    l->conn = NULL;
    if (l->prev)
        l->prev->next = l->next;
    else
        links = l->next;
    if (l->next)
        l->next->prev = l->prev;
    nlinks--;
    pl_timer_stop(&l->timer);
    if (l->comp && l->comp->link == l) {
        l->comp->link = NULL;
        pl_log_info("component", "%s disconnected", l->comp->domain);
    }
    pl_xml_parser_free(l->xml);
    pl_free(l);
}

/* conn.h: the core's deadlines (the handshake's; idle only if the
 * listeners entry sets one). */
static void on_timeout(struct pl_conn *conn, int which)
{
    stream_error(conn->data, "connection-timeout",
                 which == PL_CONN_TIMEOUT_HANDSHAKE ? "handshake took too long"
                                                    : NULL);
}

static const struct pl_conn_ops conn_ops = {
    .data = on_data,
    .closed = on_closed,
    .timeout = on_timeout,
};

/* l->timer once connected: whitespace keepalives. */
static void on_timer(struct pl_timer *t)
{
    struct link *l = t->data;
    if (!l->conn || l->closing)
        return;
    uint64_t now = pl_loop_now(l->conn->loop);
    if (C->keepalive_interval &&
        now - l->keepalive_ms >= (uint64_t)C->keepalive_interval * 1000) {
        /* RFC 6120 §4.6.1: whitespace keeps NATs open and finds dead
         * peers (the write fails). */
        out(l, " ");
        l->keepalive_ms = now;
    }
    pl_timer_start(l->conn->loop, &l->timer, 5000);
}

/* listen.h: a connection on a component listener, within the limits. */
static int comp_accept(struct pl_listen *ls, struct pl_conn *conn)
{
    (void)ls;
    struct link *l = pl_calloc(1, sizeof(*l));
    l->conn = conn;
    pl_conn_set_handlers(conn, &conn_ops, l);
    struct pl_xml_limits xl = {(size_t)S->max_stanza_size,
                               (unsigned)S->max_depth};
    l->xml = pl_xml_parser_new(&xl, &xml_cb, l);
    l->keepalive_ms = pl_loop_now(conn->loop);
    pl_timer_init(&l->timer, on_timer, l);
    /* The core watches the handshake; no idle deadline (keepalives). */
    pl_conn_set_idle(conn, 0, 0);
    l->next = links;
    if (links)
        links->prev = l;
    links = l;
    nlinks++;
    return PL_OK;
}

/* listen.h: over a connection limit (RFC 6120 §4.9.3.14/.18). */
static void comp_refuse(struct pl_listen *ls, struct pl_conn *conn, int why)
{
    (void)ls;
    pl_stream_refuse(conn, NS_COMPONENT, NULL, 0, why);
}

/* ---- operations ---- */

/* parleyctl components (admin.h). */
static json_t *admin_components(json_t *req)
{
    (void)req;
    json_t *v = json_array();
    uint64_t now = pl_loop_now(pl_server_loop());
    for (int i = 0; i < ncomps; i++) {
        const struct comp *cp = &comps[i];
        const struct link *l = cp->link;
        json_t *o = json_pack("{s:s, s:s, s:b, s:I, s:I, s:I, s:I}", "domain",
                              cp->domain, "host", cp->host->domain, "connected",
                              l != NULL, "stanzas_in", (json_int_t)cp->in,
                              "stanzas_out", (json_int_t)cp->out, "connects",
                              (json_int_t)cp->connects, "refused",
                              (json_int_t)cp->refusals);
        if (l && l->conn) {
            json_object_set_new(o, "peer", json_string(l->conn->ip));
            json_object_set_new(o, "port", json_integer(l->conn->port));
            json_object_set_new(o, "seconds",
                                json_integer(
                                    (json_int_t)((now - cp->since_ms) / 1000)));
        }
        json_array_append_new(v, o);
    }
    return json_pack("{s:b, s:o}", "ok", 1, "components", v);
}

/* ---- lifetime ---- */

static int comp_start(struct pl_config *c, void *settings)
{
    C = settings;
    S = &c->s;
    char err[512];
    if (read_components(c, &comps, &ncomps, err, sizeof(err)) != PL_OK) {
        pl_log_error("component", "%s", err);
        return PL_EINVAL;
    }
    for (int i = 0; i < ncomps; i++) {
        struct pl_host *h = pl_host_at((int)(intptr_t)comps[i].host);
        comps[i].host = h;
        int rc = pl_host_add_service(h, comps[i].domain, "component", NULL);
        if (rc != PL_OK) {
            pl_log_error("component",
                         "%s: the domain is already served "
                         "(a host or another service)",
                         comps[i].domain);
            return rc;
        }
        if (!pl_hook_has(h, "component/message")) {
            pl_hook_add(h, "component/message", on_to_component, 0, NULL);
            pl_hook_add(h, "component/presence", on_to_component, 0, NULL);
            pl_hook_add(h, "component/iq", on_to_component, 0, NULL);
        }
        pl_log_info("component", "%s accepted for %s", comps[i].domain,
                    h->domain);
    }
    pl_admin_add_op("components", admin_components);
    return PL_OK;
}

static void comp_stop(void)
{
    for (struct link *l = links; l; l = l->next)
        stream_error(l, "system-shutdown", NULL);
}

static void comp_free(void)
{
    comps_free(comps, ncomps);
    comps = NULL;
    ncomps = 0;
}

static void comp_reload(struct pl_config *c, void *settings)
{
    /* Components themselves change on restart (their domains are
     * claimed); limits and keepalives now. */
    C = settings;
    S = &c->s;
    struct pl_xml_limits xl = {(size_t)S->max_stanza_size,
                               (unsigned)S->max_depth};
    for (struct link *l = links; l; l = l->next)
        pl_xml_parser_set_limits(l->xml, &xl);
}

static unsigned long comp_count(void)
{
    return nlinks;
}

static const struct pl_option options[] = {
    {"keepalive_interval", PL_OPT_INT, "60", 0, 86400, NULL,
     "Seconds between whitespace keepalives sent to a connected component "
     "(0: never).",
     offsetof(struct settings, keepalive_interval)},
    {0},
};

static const struct pl_protocol component_protocol = {
    .name = "component",
    .summary = "external components (XEP-0114)",
    .transports = PL_TRANSPORT_TCP,
    .default_port = 5347,
    .accept = comp_accept,
    .refuse = comp_refuse,
};

static const struct pl_protocol *const protocols[] = {&component_protocol,
                                                      NULL};

static const struct pl_frontend frontend = {
    .protocols = protocols,
    .options = options,
    .settings_size = sizeof(struct settings),
    .check = check,
    .start = comp_start,
    .stop = comp_stop,
    .reload = comp_reload,
    .count = comp_count,
    .free = comp_free,
};

const struct pl_module pl_mod_component = {
    .abi = PL_MODULE_ABI,
    .name = "component",
    .summary = "external components: gateways and services on their own "
               "domains",
    .xeps = "XEP-0114",
    .frontend = &frontend,
};
