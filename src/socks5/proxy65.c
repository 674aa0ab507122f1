/*
 * proxy65.c - the XMPP side of the SOCKS5 Bytestreams proxy (XEP-0065
 * §4, §6.3.5): `pl_mod_proxy65`, a host module serving proxy.<host>.
 *
 * The service domain (option domain, default proxy.<host>) is claimed
 * with pl_service_claim (service.h), so stanzas to it come to
 * "proxy65/iq" and the host's disco#items lists it (XEP-0065 §4).  It
 * answers:
 *   - disco#info: identity proxy/bytestreams, features bytestreams and
 *     disco#info (§4);
 *   - IQ get <query xmlns='http://jabber.org/protocol/bytestreams'/>:
 *     one <streamhost jid host port/> per socks5 listener (§4), or the
 *     configured host and port (behind NAT); <forbidden/> for a user the
 *     access option excludes, <not-allowed/> when no listener is open;
 *   - IQ set <query sid><activate>target</activate></query> (§6.3.5):
 *     the hash of sid + the sender's full JID + the target (both
 *     stringprepped) names the pair to activate; <item-not-found/> when
 *     no connection has that hash (a sender other than the requester
 *     computes another hash), <not-allowed/> when only one party is
 *     connected (or it is already active), <resource-constraint/> over
 *     the transfer limits of the socks5 group, <bad-request/> or
 *     <jid-malformed/> for a malformed request.
 *
 * The module is on by default but stays silent (claims nothing, lists
 * nothing) when there is no socks5 listener and no announced host and
 * port: a proxy nobody can reach is not advertised.
 *
 * Options (per host or in a top-level `proxy65` group): domain, name,
 * access ("local": users of this host, the default; "server": users of
 * any host of this server; "anyone": remote users too), host and port
 * (what <streamhost/> announces; default each listener's address, the
 * host's domain for a wildcard address, and its port).
 *
 * Extending: a new request is a branch of on_iq.
 */
#include <string.h>

#include "alloc.h"
#include "config.h"
#include "error.h"
#include "hook.h"
#include "host.h"
#include "jid.h"
#include "module.h"
#include "router.h"
#include "server.h"
#include "service.h"
#include "socks5_int.h"
#include "stanza.h"

#define NS_BYTESTREAMS "http://jabber.org/protocol/bytestreams"
#define MAX_SID 1023 /* bytes of a stream id we hash */

enum {
    ACCESS_LOCAL = 0,
    ACCESS_SERVER,
    ACCESS_ANYONE
};

struct p65 {
    /* options */
    char *domain_opt; /* "" means proxy.<host> */
    char *title;      /* name in disco */
    int access;       /* who may use it */
    char *announce;   /* streamhost host; "" means the listener's */
    long port;        /* streamhost port; 0 means the listener's */
    /* runtime */
    struct pl_host *host; /* owning host */
    char *domain;         /* service domain, NULL when silent */
};

static struct pl_node *add_el(struct pl_stanza *st, struct pl_node *parent,
                              const char *name, const char *ns)
{
    return pl_node_add_child(st, parent, name, ns);
}

static int wildcard(const char *a)
{
    return !a[0] || strcmp(a, "0.0.0.0") == 0 || strcmp(a, "::") == 0;
}

static int allowed(const struct p65 *s, const struct pl_jid *from)
{
    switch (s->access) {
    case ACCESS_ANYONE: return 1;
    case ACCESS_SERVER: return from->local && pl_host_find(from->domain);
    default: return from->local && strcmp(from->domain, s->host->domain) == 0;
    }
}

/* §4: where to connect.  Returns how many streamhosts were added. */
static int streamhosts(struct p65 *s, struct pl_stanza *res, struct pl_node *q)
{
    int n = 0;
    char port[16];
    for (int i = 0; pl_listen_at(i); i++) {
        struct pl_listen *l = pl_listen_at(i);
        if (l->proto != &pl__socks5_protocol)
            continue;
        const char *host = s->announce[0]               ? s->announce
                           : wildcard(l->conf->address) ? s->host->domain
                                                        : l->conf->address;
        snprintf(port, sizeof(port), "%ld",
                 s->port ? s->port : (long)pl_listen_port(l));
        struct pl_node *sh = add_el(res, q, "streamhost", NS_BYTESTREAMS);
        pl_node_set_attr(res, sh, "jid", s->domain);
        pl_node_set_attr(res, sh, "host", host);
        pl_node_set_attr(res, sh, "port", port);
        if (++n && s->announce[0])
            return n; /* one announced address stands for all */
    }
    if (!n && s->announce[0] && s->port) {
        snprintf(port, sizeof(port), "%ld", s->port);
        struct pl_node *sh = add_el(res, q, "streamhost", NS_BYTESTREAMS);
        pl_node_set_attr(res, sh, "jid", s->domain);
        pl_node_set_attr(res, sh, "host", s->announce);
        pl_node_set_attr(res, sh, "port", port);
        n++;
    }
    return n;
}

static const char *const features[] = {NS_BYTESTREAMS, PL_NS_DISCO_INFO,
                                       PL_NS_DISCO_ITEMS, NULL};

static const struct pl_service service = {
    .label = "proxy",
    .prefix = "proxy65",
    .category = "proxy",
    .type = "bytestreams",
    .features = features,
};

static int activate(struct p65 *s, struct pl_event *ev, struct pl_node *q)
{
    struct pl_stanza *st = ev->stanza;
    const char *sid = pl_node_attr(q, "sid");
    struct pl_node *a = pl_node_child(q, "activate", NS_BYTESTREAMS);
    if (!sid || !sid[0] || strlen(sid) > MAX_SID || !a)
        return PL_EBAD_REQUEST;
    size_t len = 0;
    const char *text = pl_node_text(st, a, &len);
    while (len && strchr(" \t\r\n", text[0])) {
        text++;
        len--;
    }
    while (len && strchr(" \t\r\n", text[len - 1]))
        len--;
    struct pl_jid *target = NULL;
    struct pl_str t = {text, len};
    if (!len || pl_jid_parse(t, &target) != PL_OK)
        return PL_EJID_MALFORMED;
    /* §6.3.5: SID + requester JID + target JID, stringprepped (the
     * router normalized 'from'; pl_jid_parse the target). */
    char hash[PL_SOCKS5_HASH_LEN + 1];
    pl_socks5_hash(sid, ev->from->full, target->full, hash);
    pl_jid_free(target);
    const char *why = NULL;
    int rc = pl__socks5_activate(hash, ev->from->bare, &why);
    if (rc != PL_OK) {
        pl_route_error(st, rc, why);
        return PL_HANDLED;
    }
    pl_route_result(st);
    return PL_HANDLED;
}

static int on_iq(struct pl_event *ev, void *state)
{
    struct p65 *s = state;
    struct pl_stanza *st = ev->stanza;
    const char *type = pl_stanza_attr(st, "type");
    if (!ev->from || !s->domain || !type ||
        (strcmp(type, "get") != 0 && strcmp(type, "set") != 0))
        return PL_HANDLED; /* results and errors end here */
    if (ev->to->local || ev->to->resource)
        return PL_ESERVICE_UNAVAILABLE; /* nobody lives at the proxy */
    int get = strcmp(type, "get") == 0;
    struct pl_node *q = pl_node_first_elem(pl_stanza_root(st));
    if (!q)
        return PL_EBAD_REQUEST;
    int info = strcmp(q->ns, PL_NS_DISCO_INFO) == 0;
    if (get && (info || strcmp(q->ns, PL_NS_DISCO_ITEMS) == 0)) {
        if (pl_node_attr(q, "node"))
            return PL_EITEM_NOT_FOUND;
        struct pl_stanza *res;
        if (info)
            res = pl_service_info(&service, s->title, st, NULL);
        else
            res = pl_service_items(st, NULL);
        pl_route_reply(st, res);
        pl_stanza_unref(res);
        return PL_HANDLED;
    }
    if (strcmp(q->ns, NS_BYTESTREAMS) != 0 || strcmp(q->name, "query") != 0)
        return PL_ESERVICE_UNAVAILABLE;
    /* §4: a user the proxy does not serve gets <forbidden/>. */
    if (!allowed(s, ev->from))
        return PL_EFORBIDDEN;
    if (!get)
        return activate(s, ev, q);
    struct pl_stanza *res = pl_iq_result(st);
    struct pl_node *rq = add_el(res, pl_stanza_root(res), "query",
                                NS_BYTESTREAMS);
    if (!streamhosts(s, res, rq)) {
        pl_stanza_unref(res);
        return PL_ENOT_ALLOWED; /* §4: unable to act as a StreamHost */
    }
    pl_route_reply(st, res);
    pl_stanza_unref(res);
    return PL_HANDLED;
}

/* Whether the proxy can be reached: a socks5 listener, or an announced
 * host and port. */
static int reachable(const struct p65 *s)
{
    if (s->announce[0] && s->port)
        return 1;
    struct pl_config *c = pl_server_config();
    for (int i = 0; c && i < c->nlisteners; i++)
        if (c->listeners[i].protocol &&
            strcmp(c->listeners[i].protocol, "socks5") == 0)
            return 1;
    return 0;
}

static int load(struct pl_host *h, void *state)
{
    struct p65 *s = state;
    s->host = h;
    if (!reachable(s))
        return PL_OK;
    return pl_service_claim(h, &service, s->domain_opt, s->title, &s->domain);
}

static void unload(struct pl_host *h, void *state)
{
    (void)h;
    struct p65 *s = state;
    pl_free(s->domain);
    s->domain = NULL;
}

static const char *const access_choices[] = {"local", "server", "anyone", NULL};

static const struct pl_option options[] = {
    {"domain", PL_OPT_STRING, "\"\"", 0, 0, NULL,
     "Proxy JID (a service domain); empty means proxy.<host>.",
     offsetof(struct p65, domain_opt)},
    {"name", PL_OPT_STRING, "\"SOCKS5 Bytestreams Service\"", 0, 0, NULL,
     "Name of the proxy in service discovery.", offsetof(struct p65, title)},
    {"access", PL_OPT_ENUM, "\"local\"", 0, 0, access_choices,
     "Who may discover and activate streams: local (users of this host), "
     "server (users of any host of this server) or anyone (remote users "
     "too); others get <forbidden/> (XEP-0065 §4).",
     offsetof(struct p65, access)},
    {"host", PL_OPT_STRING, "\"\"", 0, 0, NULL,
     "Host name or address <streamhost/> announces; empty: each socks5 "
     "listener's address (the host's domain for 0.0.0.0 or ::).",
     offsetof(struct p65, announce)},
    {"port", PL_OPT_INT, "0", 0, 65535, NULL,
     "Port <streamhost/> announces; 0: the listener's.  With host, the "
     "proxy is announced even without a socks5 listener here (one "
     "forwarded to it, or another machine's).",
     offsetof(struct p65, port)},
    {0},
};

static const struct pl_hook_def hooks[] = {
    {"proxy65/iq", on_iq, 0},
    {0},
};

const struct pl_module pl_mod_proxy65 = {
    .abi = PL_MODULE_ABI,
    .default_on = 1,
    .name = "proxy65",
    .summary = "SOCKS5 Bytestreams proxy on proxy.<host>: discovery, "
               "activation",
    .xeps = "XEP-0065",
    .options = options,
    .hooks = hooks,
    .state_size = sizeof(struct p65),
    .load = load,
    .unload = unload,
};
