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
 * "component/presence", "component/iq") and go down one of the
 * component's connections; while none is connected the router bounces
 * them as for any unavailable service (<service-unavailable/> for
 * messages and requests).
 *
 * Several links per domain (`max_links` in the component's entry, default
 * 8): several instances of a component (gateway hosts sharing a queue)
 * connect at once and share its traffic.  A stanza goes to the link that
 * wins a rendezvous hash of (sender's bare JID, recipient's bare JID)
 * with the link's number: one conversation stays on one link while the
 * set of links does not change, so its stanzas keep their order (a
 * round robin would let two instances commit one user's messages to one
 * number out of order), and when a link comes or goes only the
 * conversations it wins or won move.  The (max_links+1)-th connection
 * gets <conflict/>.
 *
 * Stream management (XEP-0198) on a component link: a component stream
 * has no features (no version), so the component just sends
 * <enable xmlns='urn:xmpp:sm:3'/> after the handshake; we answer
 * <enabled/> (no resumption: the other links, or the component
 * reconnecting, take over).  Stanzas routed to a link in the moment
 * between <handshake/> and its decision wait (up to sm_enable_wait ms,
 * or until it sends anything else) so none is sent unprotected.  Then we
 * keep every stanza written until the component's <a h/> covers it
 * (comp_sm.h), asking with <r/> a few ms after a write; when a link dies
 * with stanzas unacknowledged they go to the domain's other live links,
 * or wait for one to come back for up to sm_hold seconds (with the new
 * stanzas for the domain, in order) and are then bounced.  A resent
 * stanza may have been handled already: the component drops duplicates
 * (by sender and stanza id).  Inbound, h counts a component's stanza
 * once every storage write its routing caused has committed (a
 * durability barrier, storage.h), so <a h/> is a promise.
 *
 * The stream (XEP-0114 §3): the component opens a stream to its domain; we
 * answer with a header carrying a fresh id; it proves the shared secret
 * with <handshake>hex(SHA-1(id + secret))</handshake> (compared in
 * constant time); we answer <handshake/>.  Then every stanza it sends
 * must come from its domain (or a JID at it) and is routed as any stanza
 * from that JID.  Errors are the RFC 6120 stream errors: host-unknown
 * (no such component), not-authorized (wrong secret, stanza before the
 * handshake), conflict (every link of the component is in use: the new
 * connection is refused and the working ones kept), invalid-from,
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
#include "comp_sm.h"
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
#include "storage.h"
#include "xml.h"

#define NS_COMPONENT PL_NS_COMPONENT
#define NS_SM "urn:xmpp:sm:3"
#define MAX_LINKS_DEFAULT 8
#define MAX_LINKS_LIMIT 64 /* as in the message of read_components */

/* One configured component. */
struct comp {
    char *domain;         /* normalized domain it serves */
    char *secret;         /* shared secret (from the configuration) */
    long max_links;       /* connections at once */
    struct pl_host *host; /* the host whose service it is */
    struct link **ready;  /* its authenticated links (max_links slots) */
    int nready;
    struct pl_csq held; /* waiting for a link; t: deadline (loop ms) */
    struct pl_timer held_timer;
    uint64_t since_ms; /* loop time a link last authenticated */
    uint64_t in, out;  /* stanzas received from it, sent to it */
    uint64_t connects; /* successful handshakes so far */
    uint64_t refusals; /* failed handshakes and conflicts */
    uint64_t resent;   /* unacknowledged stanzas sent again (or held) */
    uint64_t bounced;  /* held stanzas bounced after sm_hold */
};

enum link_state {
    L_HEADER = 0, /* waiting for the component's stream header */
    L_HANDSHAKE,  /* header answered, waiting for <handshake/> */
    L_READY,      /* authenticated: stanzas flow */
};

enum sm_state {
    SM_UNDECIDED = 0, /* ready, <enable/> may still come */
    SM_OFF,           /* the component did not enable it */
    SM_ON,            /* XEP-0198 enabled */
};

/* One connection on a component listener. */
struct link {
    struct pl_conn *conn;      /* NULL once closed */
    struct pl_xml_parser *xml; /* stream parser */
    struct comp *comp;         /* named by the header, or NULL */
    int state;                 /* enum link_state */
    int sm_state;              /* enum sm_state, once ready */
    unsigned closing : 1;      /* stream error or close sent */
    unsigned header_sent : 1;  /* our stream header is out */
    unsigned a_owed : 1;       /* an <r/> got a lagging h */
    char id[24];               /* stream id (hex) */
    uint64_t uid;              /* unique among links (hashing, barriers) */
    uint64_t keepalive_ms;     /* loop time of the last keepalive */
    struct pl_timer timer;     /* keepalives, once connected */
    struct pl_timer smtimer;   /* the enable wait; then <r/> coalescing */
    struct pl_csm sm;          /* XEP-0198 counters and unacked queue */
    uint32_t r_at;             /* out_count when the last <r/> went */
    struct pl_csq early;       /* routed while SM_UNDECIDED */
    struct link *prev, *next;  /* all open links */
};

struct settings {
    long keepalive_interval; /* seconds between whitespace keepalives */
    long sm_hold;            /* seconds unacked stanzas wait for a link */
    long sm_max_unacked;     /* per link, and held per component */
    long sm_enable_wait;     /* ms a new link may take to send <enable/> */
};

static struct comp *comps;
static int ncomps;
static struct link *links;
static unsigned long nlinks;
static uint64_t next_uid = 1;
static int stopping;             /* shutdown: nothing is requeued */
static const struct settings *C; /* in force */
static const struct pl_settings *S;

/* ---- configuration ---- */

static void comps_free(struct comp *v, int n)
{
    for (int i = 0; i < n; i++) {
        pl_free(v[i].domain);
        pl_free(v[i].secret);
        pl_free(v[i].ready);
        pl_timer_stop(&v[i].held_timer);
        pl_csq_clear(&v[i].held);
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
            int max_links = MAX_LINKS_DEFAULT;
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
                if (strcmp(key, "domain") != 0 && strcmp(key, "secret") != 0 &&
                    strcmp(key, "max_links") != 0) {
                    comps_free(v, n);
                    return pl_config_where(err, errlen, g,
                                           "components: unknown setting '%s'",
                                           key);
                }
            }
            config_setting_t *ml = config_setting_get_member(g, "max_links");
            if (ml && (config_setting_type(ml) != CONFIG_TYPE_INT ||
                       (max_links = config_setting_get_int(ml)) < 1 ||
                       max_links > MAX_LINKS_LIMIT)) {
                comps_free(v, n);
                return pl_config_where(err, errlen, ml,
                                       "components: %s must be an integer "
                                       "from 1 to 64",
                                       "max_links");
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
            v[n].max_links = max_links;
            pl_timer_init(&v[n].held_timer, NULL, NULL);
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

/* Writes st (borrowed, addressed) on l now; kept until acknowledged when
 * XEP-0198 is on. */
static void write_stanza(struct link *l, struct pl_stanza *st)
{
    struct pl_str x = pl_stanza_serialize(st, NS_COMPONENT);
    pl_conn_write(l->conn, x.p, x.len);
    l->comp->out++;
    pl_stat_inc(stanzas_out);
    if (l->sm_state != SM_ON)
        return;
    pl_csm_sent(&l->sm, st, pl_loop_now(l->conn->loop));
    if ((long)pl_csm_unacked(&l->sm) > C->sm_max_unacked) {
        stream_error(l, "resource-constraint",
                     "too many unacknowledged stanzas");
        return;
    }
    /* One <r/> for whatever a burst wrote (see on_smtimer). */
    if (!pl_timer_active(&l->smtimer))
        pl_timer_start(l->conn->loop, &l->smtimer, 5);
}

/* Hands st (borrowed) to l: written, or kept until l has decided about
 * stream management. */
static void link_send(struct link *l, struct pl_stanza *st)
{
    if (l->sm_state == SM_UNDECIDED)
        pl_csq_push(&l->early, st, 0);
    else
        write_stanza(l, st);
}

/* FNV-1a of the bare JID in attribute name of st (up to the '/'). */
static uint64_t hash_bare(uint64_t h, struct pl_stanza *st, const char *name)
{
    const char *v = pl_stanza_attr(st, name);
    for (const char *p = v ? v : ""; *p && *p != '/'; p++) {
        h ^= (unsigned char)*p;
        h *= 0x100000001b3ull;
    }
    h ^= 0xff; /* separates the two JIDs */
    return h * 0x100000001b3ull;
}

/* splitmix64's finalizer: a good mix of a 64-bit value. */
static uint64_t mix(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* The live link of cp that wins the rendezvous hash of st's
 * conversation (see the file comment), or NULL. */
static struct link *pick_link(struct comp *cp, struct pl_stanza *st)
{
    uint64_t h = hash_bare(hash_bare(0xcbf29ce484222325ull, st, "from"), st,
                           "to");
    struct link *best = NULL;
    uint64_t best_score = 0;
    for (int i = 0; i < cp->nready; i++) {
        struct link *l = cp->ready[i];
        if (!l->conn || l->closing)
            continue;
        uint64_t score = mix(h ^ (l->uid * 0x9e3779b97f4a7c15ull));
        if (!best || score > best_score) {
            best = l;
            best_score = score;
        }
    }
    return best;
}

static void held_fire(struct pl_timer *t);

/* Keeps st (borrowed) for cp until a link comes or sm_hold passes. */
static void hold(struct comp *cp, struct pl_stanza *st, uint64_t now)
{
    if ((long)cp->held.len >= C->sm_max_unacked) {
        cp->bounced++;
        pl_route_error(st, PL_ESERVICE_UNAVAILABLE, NULL);
        return;
    }
    pl_csq_push(&cp->held, st, now + (uint64_t)C->sm_hold * 1000);
    if (!pl_timer_active(&cp->held_timer))
        pl_timer_start(pl_server_loop(), &cp->held_timer,
                       (uint64_t)C->sm_hold * 1000);
}

/* Sends what cp holds on its live links, oldest first; with expired set,
 * what is past its deadline and finds no link is bounced. */
static void release_held(struct comp *cp, int expired)
{
    uint64_t now = pl_loop_now(pl_server_loop());
    const struct pl_csq_item *it;
    while ((it = pl_csq_front(&cp->held))) {
        struct link *l = pick_link(cp, it->st);
        if (!l && !(expired && it->t <= now))
            break;
        struct pl_stanza *st = pl_csq_pop(&cp->held, NULL);
        if (l) {
            link_send(l, st);
        } else {
            cp->bounced++;
            pl_route_error(st, PL_ESERVICE_UNAVAILABLE, NULL);
        }
        pl_stanza_unref(st);
    }
    pl_timer_stop(&cp->held_timer);
    if ((it = pl_csq_front(&cp->held)))
        pl_timer_start(pl_server_loop(), &cp->held_timer,
                       it->t > now ? it->t - now : 0);
}

static void held_fire(struct pl_timer *t)
{
    release_held(t->data, 1);
}

/* A stanza of a link that died (unacknowledged or never written): to
 * another live link, or held. */
static void requeue(struct comp *cp, struct pl_stanza *st)
{
    struct link *l = cp->held.len ? NULL : pick_link(cp, st);
    cp->resent++;
    if (l) {
        link_send(l, st);
    } else {
        hold(cp, st, pl_loop_now(pl_server_loop()));
    }
}

/* ---- the router's side: stanzas to a component's domain ---- */

static int on_to_component(struct pl_event *ev, void *state)
{
    (void)state;
    struct comp *cp = ev->to ? comp_find(ev->to->domain) : NULL;
    if (!cp)
        return PL_PASS; /* another service of this host */
    struct pl_stanza *st = ev->stanza, *addressed = NULL;
    if (!pl_stanza_attr(st, "to") && ev->to) {
        /* The router's fan-out left 'to' out: written in, as the
         * stanza may be kept and sent again. */
        addressed = pl_stanza_copy(st);
        pl_stanza_set_attr(addressed, "to", ev->to->full);
        st = addressed;
    }
    int rc = PL_HANDLED;
    if (cp->held.len) {
        /* Stanzas of a dead link wait for one to come back: the new
         * ones wait behind them, in order. */
        hold(cp, st, pl_loop_now(pl_server_loop()));
    } else {
        struct link *l = pick_link(cp, st);
        if (l)
            link_send(l, st);
        else
            rc = PL_PASS; /* the router bounces it (service-unavailable) */
    }
    pl_stanza_unref(addressed);
    return rc;
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
    struct comp *cp = l->comp;
    if (cp->nready >= cp->max_links) {
        /* The working connections stay; the newcomer is told why. */
        cp->refusals++;
        stream_error(l, "conflict",
                     cp->max_links == 1 ? "component already connected"
                                        : "every link of the component "
                                          "is in use (max_links)");
        return;
    }
    cp->ready[cp->nready++] = l;
    cp->since_ms = pl_loop_now(l->conn->loop);
    cp->connects++;
    l->state = L_READY;
    l->sm_state = SM_UNDECIDED;
    pl_conn_established(l->conn);
    pl_timer_start(l->conn->loop, &l->timer, 5000);
    pl_timer_start(l->conn->loop, &l->smtimer, (uint64_t)C->sm_enable_wait);
    out(l, "<handshake/>");
    pl_log_info("component", "%s connected from %s:%d (link %d of %ld)",
                cp->domain, l->conn->ip, l->conn->port, cp->nready,
                cp->max_links);
}

/* The link decided about stream management (on: <enabled/> is out):
 * what waited for it goes now, then what the domain held. */
static void sm_decided(struct link *l, int state)
{
    l->sm_state = state;
    pl_timer_stop(&l->smtimer);
    struct pl_stanza *st;
    while (!l->closing && (st = pl_csq_pop(&l->early, NULL))) {
        write_stanza(l, st);
        pl_stanza_unref(st);
    }
    if (!l->closing)
        release_held(l->comp, 0);
}

/* Writes <a h/> with the inbound stanzas handled so far. */
static void write_a(struct link *l)
{
    char b[80];
    snprintf(b, sizeof(b), "<a xmlns='" NS_SM "' h='%u'/>", l->sm.in_handled);
    out(l, b);
    l->a_owed = l->sm.in_handled != l->sm.in_seen;
}

/* An XEP-0198 element from the component. */
static void on_sm(struct link *l, struct pl_stanza *st)
{
    const char *name = pl_stanza_name(st);
    if (strcmp(name, "enable") == 0) {
        if (l->sm_state != SM_UNDECIDED) {
            out(l,
                "<failed xmlns='" NS_SM
                "'><unexpected-request xmlns='" PL_NS_STANZAS "'/></failed>");
            return;
        }
        pl_csm_enable(&l->sm);
        out(l, "<enabled xmlns='" NS_SM "'/>");
        pl_log_debug("component", "%s: stream management on (link %llu)",
                     l->comp->domain, (unsigned long long)l->uid);
        sm_decided(l, SM_ON);
    } else if (l->sm_state != SM_ON) {
        stream_error(l, "unsupported-stanza-type",
                     "stream management is not enabled");
    } else if (strcmp(name, "r") == 0) {
        write_a(l);
    } else if (strcmp(name, "a") == 0) {
        uint32_t h = 0;
        if (pl_csm_parse_h(pl_stanza_attr(st, "h"), &h) != PL_OK) {
            stream_error(l, "bad-format", "h must be a 32-bit count");
        } else if (pl_csm_ack(&l->sm, h) != PL_OK) {
            char b[300];
            snprintf(
                b, sizeof(b),
                "<stream:error><undefined-condition xmlns='" PL_NS_STREAM_ERRORS
                "'/><handled-count-too-high xmlns='" NS_SM
                "' h='%u' send-count='%u'/></stream:error>",
                h, l->sm.out_count);
            out(l, b);
            l->closing = 1;
            pl_stat_inc(stream_errors);
            pl_conn_close(l->conn);
        }
    } else {
        stream_error(l, "unsupported-stanza-type", NULL);
    }
}

struct in_ctx {
    uint64_t uid; /* the link, if it still exists */
    uint32_t seq;
};

/* A component's stanza is handled (its writes committed). */
static void in_done(void *arg)
{
    struct in_ctx *ctx = arg;
    struct link *l = links;
    while (l && l->uid != ctx->uid)
        l = l->next;
    if (l && l->conn && l->sm_state == SM_ON &&
        pl_csm_in_done(&l->sm, ctx->seq) && l->a_owed) {
        /* An <r/> was answered with a lagging h: unrequested acks are
         * allowed (XEP-0198 §4). */
        write_a(l);
    }
    pl_free(ctx);
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
    } else if (root->ns && strcmp(root->ns, NS_SM) == 0) {
        on_sm(l, st);
    } else if (!pl_stream_is_stanza(root, NS_COMPONENT)) {
        stream_error(l, "unsupported-stanza-type", NULL);
    } else {
        if (l->sm_state == SM_UNDECIDED)
            sm_decided(l, SM_OFF); /* it would have enabled first */
        to_client_ns(root);
        if (l->sm_state == SM_ON) {
            struct in_ctx *ctx = pl_malloc(sizeof(*ctx));
            ctx->uid = l->uid;
            ctx->seq = pl_csm_in_begin(&l->sm);
            struct pl_barrier *b = pl_barrier_new(in_done, ctx);
            struct pl_barrier *prev = pl_barrier_enter(b);
            route_from_component(l, st);
            pl_barrier_enter(prev);
            pl_barrier_release(b);
        } else {
            route_from_component(l, st);
        }
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
    pl_timer_stop(&l->smtimer);
    struct comp *cp = l->comp;
    for (int i = 0; cp && i < cp->nready; i++) {
        if (cp->ready[i] != l)
            continue;
        cp->ready[i] = cp->ready[--cp->nready];
        size_t n = pl_csm_unacked(&l->sm) + l->early.len;
        if (n)
            pl_log_info("component",
                        "%s disconnected (%d links left); %zu stanzas it "
                        "did not acknowledge are sent again",
                        cp->domain, cp->nready, n);
        else
            pl_log_info("component", "%s disconnected (%d links left)",
                        cp->domain, cp->nready);
        break;
    }
    /* What it did not acknowledge, then what it never got, in order. */
    struct pl_stanza *st;
    if (stopping)
        cp = NULL;
    while ((st = pl_csq_pop(&l->sm.unacked, NULL))) {
        if (cp)
            requeue(cp, st);
        pl_stanza_unref(st);
    }
    while ((st = pl_csq_pop(&l->early, NULL))) {
        if (cp)
            requeue(cp, st);
        pl_stanza_unref(st);
    }
    pl_csm_free(&l->sm);
    pl_csq_clear(&l->early);
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

/* l->smtimer: the enable wait ran out, or it is time for an <r/>. */
static void on_smtimer(struct pl_timer *t)
{
    struct link *l = t->data;
    if (!l->conn || l->closing)
        return;
    if (l->sm_state == SM_UNDECIDED) {
        sm_decided(l, SM_OFF);
    } else if (l->sm_state == SM_ON && l->r_at != l->sm.out_count &&
               pl_csm_unacked(&l->sm)) {
        l->r_at = l->sm.out_count;
        out(l, "<r xmlns='" NS_SM "'/>");
    }
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
    pl_timer_init(&l->smtimer, on_smtimer, l);
    l->uid = next_uid++;
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
        const struct link *l = cp->nready ? cp->ready[0] : NULL;
        json_t *o = json_pack("{s:s, s:s, s:b, s:I, s:I, s:I, s:I}", "domain",
                              cp->domain, "host", cp->host->domain, "connected",
                              l != NULL, "stanzas_in", (json_int_t)cp->in,
                              "stanzas_out", (json_int_t)cp->out, "connects",
                              (json_int_t)cp->connects, "refused",
                              (json_int_t)cp->refusals);
        json_object_set_new(o, "links", json_integer(cp->nready));
        json_object_set_new(o, "max_links", json_integer(cp->max_links));
        json_object_set_new(o, "held", json_integer((json_int_t)cp->held.len));
        json_object_set_new(o, "resent", json_integer((json_int_t)cp->resent));
        json_object_set_new(o, "bounced",
                            json_integer((json_int_t)cp->bounced));
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
        comps[i].ready = pl_calloc((size_t)comps[i].max_links,
                                   sizeof(*comps[i].ready));
        pl_timer_init(&comps[i].held_timer, held_fire, &comps[i]);
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
    /* What is held or unacknowledged now is dropped with the process:
     * its senders' stanzas were accepted by nobody. */
    stopping = 1;
    for (int i = 0; i < ncomps; i++) {
        pl_timer_stop(&comps[i].held_timer);
        pl_csq_clear(&comps[i].held);
    }
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
    {"sm_hold", PL_OPT_INT, "60", 0, 86400, NULL,
     "Seconds the stanzas a component link left unacknowledged (XEP-0198) "
     "when it died wait for another link of the domain before they are "
     "bounced (0: bounced at once when no other link is live).",
     offsetof(struct settings, sm_hold)},
    {"sm_max_unacked", PL_OPT_INT, "10000", 16, 10000000, NULL,
     "Stanzas a component link may leave unacknowledged before it is "
     "closed, and stanzas held for a component at most.",
     offsetof(struct settings, sm_max_unacked)},
    {"sm_enable_wait", PL_OPT_INT, "200", 0, 10000, NULL,
     "Milliseconds a new component link has to send <enable/> (XEP-0198) "
     "before stanzas go to it unprotected; it ends sooner when the "
     "component sends anything else.",
     offsetof(struct settings, sm_enable_wait)},
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
    .xeps = "XEP-0114, XEP-0198",
    .frontend = &frontend,
};
