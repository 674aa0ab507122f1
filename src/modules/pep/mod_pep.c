/*
 * mod_pep.c - the Personal Eventing Protocol (XEP-0163): a publish-
 * subscribe service (the XEP-0060 subset PEP needs) on every account's
 * bare JID, with implicit subscriptions from presence and entity
 * capabilities (XEP-0115 "+notify").
 *
 * Requests (to one's own bare JID, or without 'to'):
 *   pubsub <publish node><item id?>payload</item></publish>
 *          [<publish-options>form</publish-options>]     XEP-0060 §7.1
 *          the node is created on first publish (auto-create); with
 *          publish-options an existing node must have that configuration,
 *          else <conflict/> + <precondition-not-met/> (§7.1.5); a new one
 *          gets it.
 *   pubsub <retract node notify?><item id/></retract>       §7.2
 *   pubsub <create node/>[<configure>form</configure>]      §8.1
 *   pubsub <items node max_items?>[<item id/>...]</items>   §6.5, also by
 *          others, subject to the node's access model: open (anyone),
 *          presence and roster (contacts with a subscription 'from' or
 *          'both'), whitelist (the owner only).
 *   pubsub#owner <configure node/> get and set, <default/>, <delete/>,
 *          <purge/>                                          §8.2-§8.5
 * Explicit subscriptions are not implemented: <feature-not-implemented/>
 * with <unsupported feature='subscribe'/> (§6.1.3.13).
 *
 * Notifications: headline <message/> with <event/> from the owner's bare
 * JID to every available resource that has "<node>+notify" in its
 * verified capabilities, among the owner's own resources and (unless
 * the access model is whitelist) the resources of the contacts with a
 * subscription 'from' or 'both'.  When a session's capabilities are
 * learned, it gets the last item of every node it wants of its own
 * account and of every contact it is subscribed to (XEP-0163 §4.3.4).
 *
 * Entity capabilities: the first available presence with a <c/>
 * (XEP-0115 §4) whose ver is unknown triggers a disco#info query from the
 * server's domain to that full JID (core iq.h); the answer is hashed
 * (§5.1) and kept only if it matches (§5.4); a mismatch or no answer
 * means no "+notify" for that session.  Verified ver -> nodes is a
 * process-wide cache of caps_cache_size entries (least recently used
 * first out).  Per-session state: the session's pep slot (pl_session_ctx).
 *
 * Compatibility (XEP-0402 §5.3, advertised as urn:xmpp:bookmarks:1#compat
 * and #compat-pep): publishing or retracting in urn:xmpp:bookmarks:1
 * rewrites the XEP-0048 <storage xmlns='storage:bookmarks'/> both in
 * private XML (XEP-0049, mod_private's store) and in the PEP node
 * storage:bookmarks; storing bookmarks through either old way updates the
 * urn:xmpp:bookmarks:1 items, notifying only changed and removed ones.
 * XEP-0398 (urn:xmpp:pep-vcard-conversion:0): a new avatar in
 * urn:xmpp:avatar:metadata puts the image of urn:xmpp:avatar:data into
 * the vCard's PHOTO (mod_vcard's store); a vCard with a PHOTO publishes
 * data and metadata; the hash is injected into available presence.
 *
 * Storage (kv store of the account): store "pep" lists the nodes (key:
 * node name); store "pep:<node>" holds document "config" (one
 * "key=value" line each, with the item sequence counter), documents
 * "i:<seq as 16 hex digits>" = "<item id>\n<payload XML>" (key order is
 * publication order) and "x:<item id>" = the seq (lookup by id).  All of
 * a request runs in one storage job, so it is committed before the reply
 * and the notifications go out.
 *
 * Extending: a node configuration field is a member of struct cfg, a
 * case in cfg_apply(), a line in cfg_encode()/cfg_decode() and a field in
 * cfg_form().
 */
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdlib.h>

#include "../roster/roster.h"
#include "caps.h"

#define NS_PUBSUB "http://jabber.org/protocol/pubsub"
#define NS_OWNER NS_PUBSUB "#owner"
#define NS_EVENT NS_PUBSUB "#event"
#define NS_PERRORS NS_PUBSUB "#errors"
#define NS_XDATA "jabber:x:data"
#define NS_PUBOPTS NS_PUBSUB "#publish-options"
#define NS_NODECFG NS_PUBSUB "#node_config"
#define NS_BM2 "urn:xmpp:bookmarks:1"
#define NS_BM "storage:bookmarks"
#define NS_AV_DATA "urn:xmpp:avatar:data"
#define NS_AV_META "urn:xmpp:avatar:metadata"
#define NS_VCARD "vcard-temp"
#define NS_VCARD_UPDATE "vcard-temp:x:update"
#define NS_CONVERSION "urn:xmpp:pep-vcard-conversion:0"
#define PRIVATE_BM_KEY "{" NS_BM "}storage" /* mod_private's key */
#define NODE_MAX 1023 /* bytes of a node name or an item id */


struct state {
    long max_nodes;         /* nodes per account */
    long max_items;         /* largest max_items a node may have */
    long default_max_items; /* max_items of a new node */
    long max_item_size;     /* bytes of one item's payload */
    long caps_cache_size;   /* verified ver strings kept */
    long caps_timeout;      /* seconds to wait for a disco#info answer */
    int bookmarks_compat;   /* XEP-0402 §5.3 conversion */
    int vcard_conversion;   /* XEP-0398 conversion */
    struct pl_map hashes;   /* online account -> avatar SHA-1 (char *) */
};

/* ------------------------------------------------------- node config */

enum {
    AM_OPEN,
    AM_PRESENCE,
    AM_ROSTER,
    AM_WHITELIST
};
static const char *const access_names[] = {"open", "presence", "roster",
                                           "whitelist", NULL};
enum {
    SL_NEVER,
    SL_ON_SUB,
    SL_ON_SUB_AND_PRESENCE
};
static const char *const sendlast_names[] = {"never", "on_sub",
                                             "on_sub_and_presence", NULL};

struct cfg {
    int access;             /* AM_* */
    int persist;            /* pubsub#persist_items */
    long max_items;         /* pubsub#max_items */
    int send_last;          /* SL_* */
    int notify_retract;     /* pubsub#notify_retract */
    int notify_delete;      /* pubsub#notify_delete */
    int deliver_payloads;   /* pubsub#deliver_payloads */
    int deliver_notif;      /* pubsub#deliver_notifications */
    char title[256];        /* pubsub#title */
    unsigned long long seq; /* last item sequence number (not config) */
};

static void cfg_default(struct cfg *c, const struct state *s)
{
    memset(c, 0, sizeof(*c));
    c->access = AM_PRESENCE;
    c->persist = 1;
    c->max_items = s->default_max_items;
    c->send_last = SL_ON_SUB_AND_PRESENCE;
    c->notify_retract = 1;
    c->notify_delete = 1;
    c->deliver_payloads = 1;
    c->deliver_notif = 1;
}

/* Whether two configurations agree (the sequence does not count). */
static int cfg_same(const struct cfg *a, const struct cfg *b)
{
    return a->access == b->access && a->persist == b->persist &&
           a->max_items == b->max_items && a->send_last == b->send_last &&
           a->notify_retract == b->notify_retract &&
           a->notify_delete == b->notify_delete &&
           a->deliver_payloads == b->deliver_payloads &&
           a->deliver_notif == b->deliver_notif &&
           strcmp(a->title, b->title) == 0;
}

static int index_of(const char *const *names, const char *v)
{
    for (int i = 0; names[i]; i++)
        if (strcmp(names[i], v) == 0)
            return i;
    return -1;
}

static int parse_bool(const char *v, int *out)
{
    if (strcmp(v, "1") == 0 || strcmp(v, "true") == 0)
        *out = 1;
    else if (strcmp(v, "0") == 0 || strcmp(v, "false") == 0)
        *out = 0;
    else
        return PL_EINVAL;
    return PL_OK;
}

/* Applies one form field.  PL_EINVAL: bad value; PL_ENOT_FOUND: a field
 * this service does not know. */
static int cfg_apply(struct cfg *c, const char *var, const char *v,
                     const struct state *s)
{
    if (strcmp(var, "FORM_TYPE") == 0)
        return PL_OK;
    if (strcmp(var, "pubsub#access_model") == 0) {
        int i = index_of(access_names, v);
        if (i < 0)
            return PL_EINVAL;
        c->access = i;
    } else if (strcmp(var, "pubsub#persist_items") == 0) {
        return parse_bool(v, &c->persist);
    } else if (strcmp(var, "pubsub#max_items") == 0) {
        if (strcmp(v, "max") == 0) {
            c->max_items = s->max_items;
        } else {
            char *end;
            long n = strtol(v, &end, 10);
            if (!*v || *end || n < 1 || n > s->max_items)
                return PL_EINVAL;
            c->max_items = n;
        }
    } else if (strcmp(var, "pubsub#send_last_published_item") == 0) {
        int i = index_of(sendlast_names, v);
        if (i < 0)
            return PL_EINVAL;
        c->send_last = i;
    } else if (strcmp(var, "pubsub#notify_retract") == 0) {
        return parse_bool(v, &c->notify_retract);
    } else if (strcmp(var, "pubsub#notify_delete") == 0) {
        return parse_bool(v, &c->notify_delete);
    } else if (strcmp(var, "pubsub#deliver_payloads") == 0) {
        return parse_bool(v, &c->deliver_payloads);
    } else if (strcmp(var, "pubsub#deliver_notifications") == 0) {
        return parse_bool(v, &c->deliver_notif);
    } else if (strcmp(var, "pubsub#title") == 0) {
        snprintf(c->title, sizeof(c->title), "%s", v);
        for (char *p = c->title; *p; p++)
            if (*p == '\n' || *p == '\r')
                *p = ' ';
    } else {
        return PL_ENOT_FOUND;
    }
    return PL_OK;
}

static void cfg_encode(const struct cfg *c, struct pl_buf *out)
{
    pl_buf_printf(out,
                  "access=%d\npersist=%d\nmax=%ld\nsendlast=%d\nretract=%d\n"
                  "delete=%d\npayloads=%d\nnotif=%d\nseq=%llu\ntitle=%s\n",
                  c->access, c->persist, c->max_items, c->send_last,
                  c->notify_retract, c->notify_delete, c->deliver_payloads,
                  c->deliver_notif, c->seq, c->title);
}

static void cfg_decode(const char *p, size_t len, struct cfg *c,
                       const struct state *s)
{
    cfg_default(c, s);
    char *copy = pl_strndup(p, len), *save = NULL;
    for (char *line = strtok_r(copy, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        char *eq = strchr(line, '=');
        if (!eq)
            continue;
        *eq++ = '\0';
        if (strcmp(line, "title") == 0) {
            snprintf(c->title, sizeof(c->title), "%s", eq);
            continue;
        }
        long long v = strtoll(eq, NULL, 10);
        if (strcmp(line, "access") == 0 && v >= 0 && v <= AM_WHITELIST)
            c->access = (int)v;
        else if (strcmp(line, "persist") == 0)
            c->persist = v != 0;
        else if (strcmp(line, "max") == 0 && v > 0)
            c->max_items = (long)v;
        else if (strcmp(line, "sendlast") == 0 && v >= 0 && v <= 2)
            c->send_last = (int)v;
        else if (strcmp(line, "retract") == 0)
            c->notify_retract = v != 0;
        else if (strcmp(line, "delete") == 0)
            c->notify_delete = v != 0;
        else if (strcmp(line, "payloads") == 0)
            c->deliver_payloads = v != 0;
        else if (strcmp(line, "notif") == 0)
            c->deliver_notif = v != 0;
        else if (strcmp(line, "seq") == 0)
            c->seq = strtoull(eq, NULL, 10);
    }
    pl_free(copy);
}

/* ------------------------------------------------------------- forms */

struct field {
    const char *var;   /* borrowed from the request */
    const char *value; /* first value, "" if none */
};

/* The fields of a data form <x/> (borrowed from st). */
static struct field *form_fields(struct pl_stanza *st, const struct pl_node *x,
                                 int *n)
{
    size_t cnt = pl_node_count_elems(x);
    struct field *f = pl_calloc(cnt + 1, sizeof(*f));
    *n = 0;
    for (struct pl_node *c = pl_node_first_elem(x); c;
         c = pl_node_next_elem(c)) {
        const char *var = pl_node_attr(c, "var");
        if (strcmp(c->name, "field") != 0 || !var)
            continue;
        struct pl_node *v = pl_node_child(c, "value", NULL);
        f[*n].var = var;
        f[(*n)++].value = v ? pl_node_text(st, v, NULL) : "";
    }
    return f;
}

static void form_field(struct pl_stanza *r, struct pl_node *x, const char *var,
                       const char *type, const char *label, const char *value,
                       const char *const *options)
{
    struct pl_node *f = pl_node_add_child(r, x, "field", NS_XDATA);
    pl_node_set_attr(r, f, "var", var);
    if (type)
        pl_node_set_attr(r, f, "type", type);
    if (label)
        pl_node_set_attr(r, f, "label", label);
    for (int i = 0; options && options[i]; i++) {
        struct pl_node *o = pl_node_add_child(r, f, "option", NS_XDATA);
        struct pl_node *v = pl_node_add_child(r, o, "value", NS_XDATA);
        pl_node_add_text(r, v, options[i], strlen(options[i]));
    }
    struct pl_node *v = pl_node_add_child(r, f, "value", NS_XDATA);
    pl_node_add_text(r, v, value, strlen(value));
}

/* The node configuration form (XEP-0060 §8.2.1) under parent. */
static void cfg_form(struct pl_stanza *r, struct pl_node *parent,
                     const struct cfg *c)
{
    char num[32];
    struct pl_node *x = pl_node_add_child(r, parent, "x", NS_XDATA);
    pl_node_set_attr(r, x, "type", "form");
    form_field(r, x, "FORM_TYPE", "hidden", NULL, NS_NODECFG, NULL);
    form_field(r, x, "pubsub#title", "text-single", "A friendly name", c->title,
               NULL);
    form_field(r, x, "pubsub#access_model", "list-single",
               "Who may subscribe and retrieve items", access_names[c->access],
               access_names);
    form_field(r, x, "pubsub#persist_items", "boolean", "Persist items",
               c->persist ? "1" : "0", NULL);
    snprintf(num, sizeof(num), "%ld", c->max_items);
    form_field(r, x, "pubsub#max_items", "text-single",
               "Max number of items to persist", num, NULL);
    form_field(r, x, "pubsub#send_last_published_item", "list-single",
               "When to send the last published item",
               sendlast_names[c->send_last], sendlast_names);
    form_field(r, x, "pubsub#deliver_notifications", "boolean",
               "Deliver event notifications", c->deliver_notif ? "1" : "0",
               NULL);
    form_field(r, x, "pubsub#deliver_payloads", "boolean",
               "Deliver payloads with event notifications",
               c->deliver_payloads ? "1" : "0", NULL);
    form_field(r, x, "pubsub#notify_retract", "boolean",
               "Notify subscribers when items are removed",
               c->notify_retract ? "1" : "0", NULL);
    form_field(r, x, "pubsub#notify_delete", "boolean",
               "Notify subscribers when the node is deleted",
               c->notify_delete ? "1" : "0", NULL);
}

/* ------------------------------------------------------------ errors */

/*
 * Sends an error reply to req with condition code, and when app is not
 * NULL a pubsub#errors element (feature: its 'feature' attribute).
 */
static void reply_error(struct pl_stanza *req, int code, const char *app,
                        const char *feature, const char *text)
{
    struct pl_stanza *r = pl_stanza_error_reply(req, code, text);
    if (!r)
        return;
    struct pl_node *root = pl_stanza_root(r);
    struct pl_node *e = pl_node_child(root, "error", NULL);
    if (app && e) {
        struct pl_node *a = pl_node_add_child(r, e, app, NS_PERRORS);
        if (feature)
            pl_node_set_attr(r, a, "feature", feature);
    }
    /* As pl_route_reply: the error goes from the addressee of req. */
    const char *to = pl_stanza_attr(r, "to");
    const char *from = pl_stanza_attr(r, "from");
    struct pl_jid *tj = NULL, *fj = NULL;
    if (to && pl_jid_parse(pl_str_c(to), &tj) == PL_OK) {
        if (!from || pl_jid_parse(pl_str_c(from), &fj) != PL_OK) {
            pl_stanza_set_attr(r, "from", NULL);
            fj = pl_jid_bare(tj);
        }
        pl_route(r, fj, tj, NULL);
    }
    pl_jid_free(tj);
    pl_jid_free(fj);
    pl_stanza_unref(r);
}

/* ---------------------------------------------------- caps (XEP-0115) */

/* A verified ver: the nodes its features ask notifications for. */
struct centry {
    char *key;    /* "<hash> <ver>" */
    char **nodes; /* "<node>" of each "<node>+notify" */
    int n;
    struct centry *newer; /* LRU list */
    struct centry *older;
};

/* A disco#info query in flight for one ver. */
struct cquery {
    char *key;      /* "<hash> <ver>" */
    char *algo;     /* hash name */
    char *ver;      /* the announced ver */
    uint64_t *sids; /* sessions waiting for it */
    int n;
    struct state *st; /* the host that asked (cache size) */
};

/* Process-wide: one loop serves every host. */
static struct pl_map caps_cache;    /* key -> struct centry */
static struct pl_map caps_inflight; /* key -> struct cquery */
static struct centry *lru_newest, *lru_oldest;

/* Per session (the session's pep slot (pl_session_ctx)). */
struct csess {
    char *key;    /* the ver announced last, or NULL */
    char **nodes; /* "+notify" nodes once verified */
    int n;
    unsigned known : 1; /* nodes is final for key */
};

static void strs_free(char **v, int n)
{
    for (int i = 0; i < n; i++)
        pl_free(v[i]);
    pl_free(v);
}

static char **strs_copy(char *const *v, int n)
{
    char **c = pl_calloc((size_t)n + 1, sizeof(char *));
    for (int i = 0; i < n; i++)
        c[i] = pl_strdup(v[i]);
    return c;
}

static struct csess *csess_of(struct pl_session *s)
{
    if (!pl_session_ctx(s, pep))
        pl_session_ctx(s, pep) = pl_calloc(1, sizeof(struct csess));
    return pl_session_ctx(s, pep);
}

static int wants(const struct pl_session *s, const char *node)
{
    const struct csess *c = pl_session_ctx(s, pep);
    if (!c || !c->known)
        return 0;
    for (int i = 0; i < c->n; i++)
        if (strcmp(c->nodes[i], node) == 0)
            return 1;
    return 0;
}

static void lru_unlink(struct centry *e)
{
    if (e->newer)
        e->newer->older = e->older;
    else
        lru_newest = e->older;
    if (e->older)
        e->older->newer = e->newer;
    else
        lru_oldest = e->newer;
    e->newer = e->older = NULL;
}

static void lru_push(struct centry *e)
{
    e->older = lru_newest;
    e->newer = NULL;
    if (lru_newest)
        lru_newest->newer = e;
    lru_newest = e;
    if (!lru_oldest)
        lru_oldest = e;
}

static struct centry *cache_get(const char *key)
{
    struct centry *e = pl_map_get(&caps_cache, key);
    if (e) {
        lru_unlink(e);
        lru_push(e);
    }
    return e;
}

static void centry_free(struct centry *e)
{
    pl_free(e->key);
    strs_free(e->nodes, e->n);
    pl_free(e);
}

static void cache_put(struct centry *e, long max)
{
    pl_map_put(&caps_cache, e->key, e);
    lru_push(e);
    while ((long)caps_cache.count > max && lru_oldest) {
        struct centry *old = lru_oldest;
        lru_unlink(old);
        pl_map_del(&caps_cache, old->key);
        centry_free(old);
    }
}

static void send_last_items(struct pl_session *s);

/* The session's "+notify" nodes are known: last items follow. */
static void caps_learned(struct pl_session *s, const struct centry *e)
{
    struct csess *c = csess_of(s);
    strs_free(c->nodes, c->n);
    c->nodes = e ? strs_copy(e->nodes, e->n) : NULL;
    c->n = e ? e->n : 0;
    c->known = 1;
    if (c->n)
        send_last_items(s);
}

static void cquery_free(struct cquery *q)
{
    pl_free(q->key);
    pl_free(q->algo);
    pl_free(q->ver);
    pl_free(q->sids);
    pl_free(q);
}

static void on_disco(struct pl_stanza *reply, void *arg)
{
    struct cquery *q = arg;
    pl_map_del(&caps_inflight, q->key);
    struct centry *e = NULL;
    const char *type = reply ? pl_stanza_attr(reply, "type") : NULL;
    struct pl_node *query = reply ? pl_stanza_payload(reply) : NULL;
    if (type && strcmp(type, "result") == 0 && query &&
        strcmp(query->ns, PL_NS_DISCO_INFO) == 0) {
        if (pl__pep_caps_verify(reply, query, q->algo, q->ver)) {
            e = pl_calloc(1, sizeof(*e));
            e->key = pl_strdup(q->key);
            size_t cnt = pl_node_count_elems(query);
            e->nodes = pl_calloc(cnt + 1, sizeof(char *));
            for (struct pl_node *f = pl_node_first_elem(query); f;
                 f = pl_node_next_elem(f)) {
                const char *var = pl_node_attr(f, "var");
                size_t len = var ? strlen(var) : 0;
                if (strcmp(f->name, "feature") == 0 && len > 7 &&
                    strcmp(var + len - 7, "+notify") == 0)
                    e->nodes[e->n++] = pl_strndup(var, len - 7);
            }
            cache_put(e, q->st->caps_cache_size);
        } else {
            /* XEP-0115 §5.4: a mismatch is not cached nor used. */
            pl_log_warn("mod_pep",
                        "caps ver %s does not match the "
                        "disco#info answer: ignored",
                        q->ver);
        }
    }
    for (int i = 0; i < q->n; i++) {
        struct pl_session *s = pl_session_by_id(q->sids[i]);
        struct csess *c = s ? pl_session_ctx(s, pep) : NULL;
        if (!c || !c->key || strcmp(c->key, q->key) != 0)
            continue; /* gone, or announced something else since */
        if (e)
            caps_learned(s, e);
        else
            c->known = 1; /* final: no notifications */
    }
    cquery_free(q);
}

/* Reads the <c/> of an available presence (XEP-0115 §4). */
static void caps_presence(struct state *st, struct pl_session *s,
                          struct pl_stanza *pres)
{
    struct csess *c = csess_of(s);
    struct pl_node *cn = pl_node_child(pl_stanza_root(pres), "c", PL_NS_CAPS);
    const char *hash = cn ? pl_node_attr(cn, "hash") : NULL;
    const char *ver = cn ? pl_node_attr(cn, "ver") : NULL;
    const char *node = cn ? pl_node_attr(cn, "node") : NULL;
    if (!hash || !ver || !node || !*ver) {
        /* No (or legacy) caps: nothing to notify about. */
        pl_free(c->key);
        c->key = NULL;
        if (!c->known)
            caps_learned(s, NULL);
        return;
    }
    size_t kl = strlen(hash) + strlen(ver) + 2;
    char *key = pl_malloc(kl);
    snprintf(key, kl, "%s %s", hash, ver);
    if (c->key && strcmp(c->key, key) == 0) {
        pl_free(key); /* unchanged: a presence update */
        return;
    }
    pl_free(c->key);
    c->key = key;
    c->known = 0;
    struct centry *e = cache_get(key);
    if (e) {
        caps_learned(s, e);
        return;
    }
    struct cquery *q = pl_map_get(&caps_inflight, key);
    if (q) {
        q->sids = pl_realloc(q->sids, (size_t)(q->n + 1) * sizeof(uint64_t));
        q->sids[q->n++] = s->id;
        return;
    }
    q = pl_calloc(1, sizeof(*q));
    q->key = pl_strdup(key);
    q->algo = pl_strdup(hash);
    q->ver = pl_strdup(ver);
    q->st = st;
    q->sids = pl_malloc(sizeof(uint64_t));
    q->sids[q->n++] = s->id;
    struct pl_stanza *iq = pl_stanza_new("iq", PL_NS_CLIENT);
    pl_stanza_set_attr(iq, "type", "get");
    struct pl_node *qn = pl_node_add_child(iq, pl_stanza_root(iq), "query",
                                           PL_NS_DISCO_INFO);
    size_t nl = strlen(node) + strlen(ver) + 2;
    char *nv = pl_malloc(nl);
    snprintf(nv, nl, "%s#%s", node, ver);
    pl_node_set_attr(iq, qn, "node", nv);
    pl_free(nv);
    pl_map_put(&caps_inflight, q->key, q);
    if (pl_iq_request(iq, s->host->domain, s->jid->full, on_disco, q,
                      (unsigned)st->caps_timeout * 1000u) != PL_OK) {
        pl_map_del(&caps_inflight, q->key);
        cquery_free(q);
        c->known = 1;
    }
    pl_stanza_unref(iq);
}

/* ------------------------------------------------------------- jobs */

enum op {
    OP_PUBLISH,
    OP_RETRACT,
    OP_ITEMS,
    OP_CREATE,
    OP_DELETE,
    OP_PURGE,
    OP_CFG_GET,
    OP_CFG_SET,
    OP_LAST,      /* last items for a session whose caps were learned */
    OP_LEGACY_BM, /* XEP-0048 bookmarks stored in private XML */
    OP_VCARD,     /* a vCard with a photo was stored (XEP-0398) */
    OP_HASH,      /* read the avatar hash at login (XEP-0398 §4) */
};

enum {
    N_ITEM,
    N_RETRACT,
    N_DELETE,
    N_PURGE
};

/* A notification to send once the job committed. */
struct note {
    int kind; /* N_* */
    char *node;
    char *id;      /* item id (N_ITEM, N_RETRACT) */
    char *payload; /* serialized payload, N_ITEM (may be NULL) */
    int access;    /* the node's access model */
    struct note *next;
};

/* An item read for a reply or a last-item delivery. */
struct item {
    char *from; /* owner bare JID (OP_LAST) */
    char *node;
    char *id;
    char *payload;
};

struct job {
    struct pl_job base; /* the request (or NULL) and the account */
    enum op op;
    struct state *s; /* the host's module state */
    char *requester; /* bare JID asking, or NULL (the server) */
    char *node;
    char *item_id;      /* publish/retract; NULL: generated */
    char *payload;      /* publish: serialized payload or NULL */
    struct field *opts; /* publish-options / configure fields */
    int nopts;
    int has_opts;
    int notify; /* retract@notify: -1 absent, 0, 1 */
    char **ids; /* items: requested ids */
    int nids;
    long max_req; /* items: max_items, 0 = all */
    char **nodes; /* OP_LAST: its "+notify" nodes */
    int nnodes;
    char *photo_type; /* OP_VCARD */
    char *photo_b64;  /* OP_VCARD */
    /* results */
    int err;             /* PL_E* condition for the reply */
    const char *app;     /* pubsub#errors element or NULL */
    const char *feature; /* its 'feature' */
    char *err_text;      /* text or NULL */
    struct cfg cfg;      /* the node's configuration */
    struct item *items;
    int nitems;
    struct note *notes;
    struct note **notes_tail;
    struct pl_roster roster; /* the owner's, for notifications */
    char *hash;              /* OP_HASH / conversions: new avatar hash */
    int hash_set;            /* hash is meaningful ("" = none) */
    struct pl_buf scratch;
};

static struct job *job_new(enum op op, struct state *s, const char *host,
                           const char *user)
{
    struct job *j = pl_job_new(sizeof(*j), NULL, 0, host, user);
    j->op = op;
    j->s = s;
    j->notify = -1;
    j->notes_tail = &j->notes;
    return j;
}

static void job_free(struct job *j)
{
    pl_free(j->requester);
    pl_free(j->node);
    pl_free(j->item_id);
    pl_free(j->payload);
    pl_free(j->opts);
    strs_free(j->ids, j->nids);
    strs_free(j->nodes, j->nnodes);
    pl_free(j->photo_type);
    pl_free(j->photo_b64);
    pl_free(j->err_text);
    for (int i = 0; i < j->nitems; i++) {
        pl_free(j->items[i].from);
        pl_free(j->items[i].node);
        pl_free(j->items[i].id);
        pl_free(j->items[i].payload);
    }
    pl_free(j->items);
    while (j->notes) {
        struct note *n = j->notes;
        j->notes = n->next;
        pl_free(n->node);
        pl_free(n->id);
        pl_free(n->payload);
        pl_free(n);
    }
    pl_roster_free(&j->roster);
    pl_free(j->hash);
    pl_buf_reset(&j->scratch);
    pl_job_free(j);
}

static int fail(struct job *j, int code, const char *app, const char *feature)
{
    j->err = code;
    j->app = app;
    j->feature = feature;
    return PL_OK;
}

static void add_note(struct job *j, int kind, const char *node, const char *id,
                     const char *payload, int access)
{
    struct note *n = pl_calloc(1, sizeof(*n));
    n->kind = kind;
    n->node = pl_strdup(node);
    n->id = id ? pl_strdup(id) : NULL;
    n->payload = payload ? pl_strdup(payload) : NULL;
    n->access = access;
    *j->notes_tail = n;
    j->notes_tail = &n->next;
}

static void add_item(struct job *j, const char *from, const char *node,
                     const char *id, const char *payload)
{
    j->items = pl_realloc(j->items,
                          (size_t)(j->nitems + 1) * sizeof(struct item));
    struct item *it = &j->items[j->nitems++];
    it->from = from ? pl_strdup(from) : NULL;
    it->node = pl_strdup(node);
    it->id = pl_strdup(id);
    it->payload = payload ? pl_strdup(payload) : NULL;
}

/* ------------------------------------------- storage thread: nodes */

/* The store of a node of one account, into a buffer of PL_STORE_LEN. */
#define STORE_LEN (NODE_MAX + 8)
static void store_of(const char *node, char *out)
{
    snprintf(out, STORE_LEN, "pep:%s", node);
}

struct db {
    const struct pl_storage_driver *d;
    void *db;
    const char *host;
    const char *user;
};

static int cfg_load(struct db *b, const char *node, struct cfg *c,
                    const struct state *s)
{
    char store[STORE_LEN];
    struct pl_buf buf = {0};
    store_of(node, store);
    int rc = b->d->kv_get(b->db, b->host, b->user, store, "config", &buf);
    if (rc == PL_OK)
        cfg_decode(buf.data ? buf.data + buf.off : "", buf.len, c, s);
    pl_buf_reset(&buf);
    return rc;
}

static int cfg_save(struct db *b, const char *node, const struct cfg *c)
{
    char store[STORE_LEN];
    struct pl_buf buf = {0};
    store_of(node, store);
    cfg_encode(c, &buf);
    int rc = b->d->kv_set(b->db, b->host, b->user, store, "config",
                          buf.data + buf.off, buf.len);
    pl_buf_reset(&buf);
    return rc;
}

/* Creates a node (checking the per-account limit). */
static int node_create(struct db *b, const char *node, const struct cfg *c,
                       long max_nodes)
{
    long n = 0;
    int rc = b->d->kv_count(b->db, b->host, b->user, "pep", &n);
    if (rc != PL_OK)
        return rc;
    if (n >= max_nodes)
        return PL_ELIMIT;
    rc = b->d->kv_set(b->db, b->host, b->user, "pep", node, "", 0);
    return rc == PL_OK ? cfg_save(b, node, c) : rc;
}

/* Items of a node in publication order (callback context). */
struct ilist {
    char **keys;     /* "i:..." keys */
    char **ids;      /* item ids */
    char **payloads; /* payloads */
    int n;
};

static int ilist_add(const char *key, const void *data, size_t len, void *ud)
{
    struct ilist *l = ud;
    if (strncmp(key, "i:", 2) != 0)
        return 0;
    const char *p = data, *nl = memchr(p, '\n', len);
    if (!nl)
        return 0;
    l->keys = pl_realloc(l->keys, (size_t)(l->n + 1) * sizeof(char *));
    l->ids = pl_realloc(l->ids, (size_t)(l->n + 1) * sizeof(char *));
    l->payloads = pl_realloc(l->payloads, (size_t)(l->n + 1) * sizeof(char *));
    l->keys[l->n] = pl_strdup(key);
    l->ids[l->n] = pl_strndup(p, (size_t)(nl - p));
    l->payloads[l->n] = pl_strndup(nl + 1, len - (size_t)(nl - p) - 1);
    l->n++;
    return 0;
}

static void ilist_free(struct ilist *l)
{
    strs_free(l->keys, l->n);
    strs_free(l->ids, l->n);
    strs_free(l->payloads, l->n);
    memset(l, 0, sizeof(*l));
}

static int items_load(struct db *b, const char *node, struct ilist *l)
{
    char store[STORE_LEN];
    store_of(node, store);
    return b->d->kv_list(b->db, b->host, b->user, store, ilist_add, l);
}

/* Payload of one item by id; PL_ENOT_FOUND if absent. */
static int item_get(struct db *b, const char *node, const char *id,
                    struct pl_buf *out)
{
    char store[STORE_LEN], key[NODE_MAX + 8];
    struct pl_buf seq = {0};
    store_of(node, store);
    snprintf(key, sizeof(key), "x:%s", id);
    int rc = b->d->kv_get(b->db, b->host, b->user, store, key, &seq);
    if (rc == PL_OK) {
        snprintf(key, sizeof(key), "i:%.*s", (int)seq.len, seq.data + seq.off);
        struct pl_buf doc = {0};
        rc = b->d->kv_get(b->db, b->host, b->user, store, key, &doc);
        if (rc == PL_OK) {
            const char *p = doc.data + doc.off;
            const char *nl = memchr(p, '\n', doc.len);
            if (nl)
                pl_buf_append(out, nl + 1, doc.len - (size_t)(nl - p) - 1);
        }
        pl_buf_reset(&doc);
    }
    pl_buf_reset(&seq);
    return rc;
}

static int item_del(struct db *b, const char *node, const char *id)
{
    char store[STORE_LEN], key[NODE_MAX + 8];
    struct pl_buf seq = {0};
    store_of(node, store);
    snprintf(key, sizeof(key), "x:%s", id);
    int rc = b->d->kv_get(b->db, b->host, b->user, store, key, &seq);
    if (rc == PL_OK)
        rc = b->d->kv_set(b->db, b->host, b->user, store, key, NULL, 0);
    if (rc == PL_OK) {
        char ikey[32];
        snprintf(ikey, sizeof(ikey), "i:%.*s", (int)seq.len,
                 seq.data + seq.off);
        rc = b->d->kv_set(b->db, b->host, b->user, store, ikey, NULL, 0);
    }
    pl_buf_reset(&seq);
    return rc;
}

/* Stores an item (replacing one with the same id, which becomes the
 * newest), trims the node to its max_items and saves the config. */
static int item_put(struct db *b, const char *node, struct cfg *c,
                    const char *id, const char *payload)
{
    char store[STORE_LEN], key[NODE_MAX + 8], ikey[32], seqs[24];
    store_of(node, store);
    int rc = item_del(b, node, id);
    if (rc != PL_OK && rc != PL_ENOT_FOUND)
        return rc;
    snprintf(seqs, sizeof(seqs), "%016llx", ++c->seq);
    snprintf(ikey, sizeof(ikey), "i:%s", seqs);
    snprintf(key, sizeof(key), "x:%s", id);
    struct pl_buf doc = {0};
    pl_buf_printf(&doc, "%s\n%s", id, payload ? payload : "");
    rc = b->d->kv_set(b->db, b->host, b->user, store, ikey, doc.data + doc.off,
                      doc.len);
    pl_buf_reset(&doc);
    if (rc == PL_OK)
        rc = b->d->kv_set(b->db, b->host, b->user, store, key, seqs,
                          strlen(seqs));
    if (rc != PL_OK)
        return rc;
    /* XEP-0060 §7.1.1: without persistence only the last item stays. */
    long keep = c->persist ? c->max_items : 1;
    struct ilist l = {0};
    rc = items_load(b, node, &l);
    for (int i = 0; rc == PL_OK && i < l.n - keep; i++)
        rc = item_del(b, node, l.ids[i]);
    ilist_free(&l);
    return rc == PL_OK ? cfg_save(b, node, c) : rc;
}

/* Ensures node exists with c's configuration (created if absent). */
static int node_ensure(struct db *b, const char *node, struct cfg *c,
                       const struct state *s)
{
    struct cfg want = *c;
    int rc = cfg_load(b, node, c, s);
    if (rc == PL_ENOT_FOUND) {
        *c = want;
        rc = node_create(b, node, c, s->max_nodes + 8); /* server's own */
    }
    return rc;
}

/* ------------------------------------ storage thread: conversions */

static void bm_cfg(struct cfg *c, const struct state *s)
{
    cfg_default(c, s);
    c->access = AM_WHITELIST; /* XEP-0223 private storage */
    c->max_items = s->max_items;
    c->send_last = SL_NEVER;
}

/*
 * One bookmarked room in the other format (XEP-0402 §5.3): the name,
 * autojoin as true/false, and the nick and password children, from `from`
 * (in st; children in ns_from, NULL: any namespace) to `to` (in out;
 * children in ns_to).
 */
static void copy_conference(struct pl_stanza *st, const struct pl_node *from,
                            const char *ns_from, struct pl_stanza *out,
                            struct pl_node *to, const char *ns_to)
{
    const char *name = pl_node_attr(from, "name");
    const char *aj = pl_node_attr(from, "autojoin");
    if (name)
        pl_node_set_attr(out, to, "name", name);
    int on = aj && (strcmp(aj, "1") == 0 || strcmp(aj, "true") == 0);
    pl_node_set_attr(out, to, "autojoin", on ? "true" : "false");
    static const char *const kids[] = {"nick", "password", NULL};
    for (int k = 0; kids[k]; k++) {
        struct pl_node *e = pl_node_child(from, kids[k], ns_from);
        if (!e)
            continue;
        size_t tl;
        const char *t = pl_node_text(st, e, &tl);
        pl_node_add_text(out, pl_node_add_child(out, to, kids[k], ns_to), t,
                         tl);
    }
}

/* XEP-0402 §5.3: urn:xmpp:bookmarks:1 items as one XEP-0048 <storage/>
 * in private XML and (compat-pep) the storage:bookmarks node. */
static int bm_to_legacy(struct db *b, struct job *j)
{
    struct ilist l = {0};
    int rc = items_load(b, NS_BM2, &l);
    if (rc != PL_OK)
        return rc;
    struct pl_stanza *out = pl_stanza_new("storage", NS_BM);
    struct pl_node *root = pl_stanza_root(out);
    for (int i = 0; i < l.n; i++) {
        struct pl_stanza *p = NULL;
        if (pl_xml_parse_fragment(l.payloads[i], strlen(l.payloads[i]), &p) !=
            PL_OK)
            continue;
        struct pl_node *conf = pl_stanza_root(p);
        if (strcmp(conf->name, "conference") == 0 &&
            strcmp(conf->ns, NS_BM2) == 0) {
            struct pl_node *c = pl_node_add_child(out, root, "conference",
                                                  NS_BM);
            pl_node_set_attr(out, c, "jid", l.ids[i]);
            copy_conference(p, conf, NS_BM2, out, c, NS_BM);
        }
        pl_stanza_unref(p);
    }
    ilist_free(&l);
    struct pl_buf xml = {0};
    pl_node_serialize(root, "", PL_NS_CLIENT, &xml);
    pl_stanza_unref(out);
    rc = b->d->kv_set(b->db, b->host, b->user, "private", PRIVATE_BM_KEY,
                      xml.data + xml.off, xml.len);
    if (rc == PL_OK) {
        struct cfg c;
        bm_cfg(&c, j->s);
        rc = node_ensure(b, NS_BM, &c, j->s);
        if (rc == PL_OK)
            rc = item_put(b, NS_BM, &c, "current", pl_buf_cstr(&xml));
        if (rc == PL_OK)
            add_note(j, N_ITEM, NS_BM, "current", pl_buf_cstr(&xml), c.access);
    }
    pl_buf_reset(&xml);
    return rc;
}

/* XEP-0402 §5.3.2: an old-style <storage/> updates the bookmarks:1
 * items, notifying only what changed.  to_private / to_pep say which old
 * copies to rewrite too (the one written by the client is current). */
static int bm_from_legacy(struct db *b, struct job *j, const char *xml,
                          int to_private, int to_pep)
{
    struct pl_stanza *st = NULL;
    if (pl_xml_parse_fragment(xml, strlen(xml), &st) != PL_OK)
        return PL_OK; /* not ours to judge: stored as sent */
    struct pl_node *root = pl_stanza_root(st);
    struct cfg c;
    bm_cfg(&c, j->s);
    int rc = node_ensure(b, NS_BM2, &c, j->s);
    struct ilist l = {0};
    if (rc == PL_OK)
        rc = items_load(b, NS_BM2, &l);
    char **seen = pl_calloc(pl_node_count_elems(root) + 1, sizeof(char *));
    int nseen = 0;
    for (struct pl_node *e = pl_node_first_elem(root); rc == PL_OK && e;
         e = pl_node_next_elem(e)) {
        const char *jid = pl_node_attr(e, "jid");
        if (strcmp(e->name, "conference") != 0 || !jid || !*jid ||
            strlen(jid) > NODE_MAX)
            continue;
        struct pl_stanza *p = pl_stanza_new("conference", NS_BM2);
        struct pl_node *pr = pl_stanza_root(p);
        copy_conference(st, e, NULL, p, pr, NS_BM2);
        struct pl_buf pay = {0};
        pl_node_serialize(pr, "", PL_NS_CLIENT, &pay);
        pl_stanza_unref(p);
        int same = 0;
        for (int i = 0; i < l.n; i++)
            if (strcmp(l.ids[i], jid) == 0 &&
                strcmp(l.payloads[i], pl_buf_cstr(&pay)) == 0)
                same = 1;
        seen[nseen++] = pl_strdup(jid);
        if (!same) {
            rc = item_put(b, NS_BM2, &c, jid, pl_buf_cstr(&pay));
            if (rc == PL_OK)
                add_note(j, N_ITEM, NS_BM2, jid, pl_buf_cstr(&pay), c.access);
        }
        pl_buf_reset(&pay);
    }
    for (int i = 0; rc == PL_OK && i < l.n; i++) {
        int keep = 0;
        for (int k = 0; k < nseen; k++)
            if (strcmp(seen[k], l.ids[i]) == 0)
                keep = 1;
        if (keep)
            continue;
        rc = item_del(b, NS_BM2, l.ids[i]);
        if (rc == PL_OK)
            add_note(j, N_RETRACT, NS_BM2, l.ids[i], NULL, c.access);
    }
    strs_free(seen, nseen);
    ilist_free(&l);
    struct pl_buf norm = {0};
    pl_node_serialize(root, "", PL_NS_CLIENT, &norm);
    pl_stanza_unref(st);
    if (rc == PL_OK && to_private)
        rc = b->d->kv_set(b->db, b->host, b->user, "private", PRIVATE_BM_KEY,
                          norm.data + norm.off, norm.len);
    if (rc == PL_OK && to_pep) {
        struct cfg pc;
        bm_cfg(&pc, j->s);
        rc = node_ensure(b, NS_BM, &pc, j->s);
        if (rc == PL_OK)
            rc = item_put(b, NS_BM, &pc, "current", pl_buf_cstr(&norm));
        if (rc == PL_OK)
            add_note(j, N_ITEM, NS_BM, "current", pl_buf_cstr(&norm),
                     pc.access);
    }
    pl_buf_reset(&norm);
    return rc;
}

/* Lower-case hex SHA-1 of data into out[41]. */
static void sha1_hex(const void *data, size_t len, char *out)
{
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    EVP_Digest(data, len, d, &n, EVP_sha1(), NULL);
    for (unsigned i = 0; i < n && i < 20; i++)
        snprintf(out + 2 * i, 3, "%02x", d[i]);
    out[40] = '\0';
}

/* Base64 text without whitespace (vCard BINVAL is often folded). */
static char *b64_clean(const char *s, size_t len)
{
    char *o = pl_malloc(len + 1);
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        if (s[i] != ' ' && s[i] != '\n' && s[i] != '\r' && s[i] != '\t')
            o[n++] = s[i];
    o[n] = '\0';
    return o;
}

/* XEP-0398 §3.1: the new avatar (metadata payload) into the vCard. */
static int avatar_to_vcard(struct db *b, struct job *j, const char *meta)
{
    struct pl_stanza *m = NULL;
    if (pl_xml_parse_fragment(meta, strlen(meta), &m) != PL_OK)
        return PL_OK;
    struct pl_node *info = NULL;
    for (struct pl_node *e = pl_node_first_elem(pl_stanza_root(m)); e;
         e = pl_node_next_elem(e))
        if (strcmp(e->name, "info") == 0 && !pl_node_attr(e, "url") &&
            pl_node_attr(e, "id")) {
            info = e;
            break;
        }
    int empty = pl_node_count_elems(pl_stanza_root(m)) == 0;
    char *b64 = NULL;
    const char *type = info ? pl_node_attr(info, "type") : NULL;
    if (info) {
        struct pl_buf data = {0};
        if (item_get(b, NS_AV_DATA, pl_node_attr(info, "id"), &data) == PL_OK) {
            struct pl_stanza *ds = NULL;
            if (pl_xml_parse_fragment(data.data + data.off, data.len, &ds) ==
                PL_OK) {
                size_t tl;
                const char *t = pl_node_text(ds, pl_stanza_root(ds), &tl);
                b64 = b64_clean(t, tl);
                pl_stanza_unref(ds);
            }
        }
        pl_buf_reset(&data);
        /* §3.1: the id is the image's SHA-1. */
        struct pl_buf bin = {0};
        char hex[41];
        if (b64 && pl_base64_decode(pl_str_c(b64), &bin) == PL_OK) {
            sha1_hex(bin.data + bin.off, bin.len, hex);
            if (strcmp(hex, pl_node_attr(info, "id")) != 0) {
                pl_free(b64);
                b64 = NULL;
            } else {
                j->hash = pl_strdup(hex);
                j->hash_set = 1;
            }
        } else {
            pl_free(b64);
            b64 = NULL;
        }
        pl_buf_reset(&bin);
    }
    if (!b64 && !empty) {
        pl_stanza_unref(m);
        return PL_OK; /* nothing we can convert (external URL only) */
    }
    struct pl_buf old = {0};
    struct pl_stanza *vc = NULL;
    int rc = b->d->kv_get(b->db, b->host, b->user, "vcard", "", &old);
    if (rc == PL_OK)
        pl_xml_parse_fragment(old.data + old.off, old.len, &vc);
    else if (rc != PL_ENOT_FOUND)
        goto out;
    if (!vc)
        vc = pl_stanza_new("vCard", NS_VCARD);
    struct pl_node *root = pl_stanza_root(vc);
    struct pl_node *ph;
    while ((ph = pl_node_child(root, "PHOTO", NULL)))
        pl_node_remove(vc, ph);
    if (b64) {
        ph = pl_node_add_child(vc, root, "PHOTO", NS_VCARD);
        if (type)
            pl_node_add_text(vc, pl_node_add_child(vc, ph, "TYPE", NS_VCARD),
                             type, strlen(type));
        pl_node_add_text(vc, pl_node_add_child(vc, ph, "BINVAL", NS_VCARD), b64,
                         strlen(b64));
    } else {
        pl_free(j->hash);
        j->hash = pl_strdup("");
        j->hash_set = 1;
    }
    struct pl_buf xml = {0};
    pl_node_serialize(root, "", PL_NS_CLIENT, &xml);
    rc = b->d->kv_set(b->db, b->host, b->user, "vcard", "", xml.data + xml.off,
                      xml.len);
    pl_buf_reset(&xml);
    pl_stanza_unref(vc);
out:
    pl_buf_reset(&old);
    pl_free(b64);
    pl_stanza_unref(m);
    return rc;
}

/* XEP-0398 §3.2: a vCard photo published as data and metadata. */
static int vcard_to_avatar(struct db *b, struct job *j)
{
    struct pl_buf bin = {0};
    if (pl_base64_decode(pl_str_c(j->photo_b64), &bin) != PL_OK || !bin.len) {
        pl_buf_reset(&bin);
        return PL_OK;
    }
    char hex[41];
    sha1_hex(bin.data + bin.off, bin.len, hex);
    size_t bytes = bin.len;
    pl_buf_reset(&bin);
    j->hash = pl_strdup(hex);
    j->hash_set = 1;
    struct pl_buf cur = {0};
    int rc = item_get(b, NS_AV_META, hex, &cur);
    pl_buf_reset(&cur);
    if (rc == PL_OK) {
        struct ilist l = {0};
        rc = items_load(b, NS_AV_META, &l);
        int newest = rc == PL_OK && l.n && strcmp(l.ids[l.n - 1], hex) == 0;
        ilist_free(&l);
        if (newest)
            return PL_OK; /* already the current avatar */
    }
    struct cfg c;
    cfg_default(&c, j->s);
    rc = node_ensure(b, NS_AV_DATA, &c, j->s);
    struct pl_buf p = {0};
    pl_buf_append_str(&p, "<data xmlns='" NS_AV_DATA "'>");
    pl_buf_append_str(&p, j->photo_b64);
    pl_buf_append_str(&p, "</data>");
    if (rc == PL_OK)
        rc = item_put(b, NS_AV_DATA, &c, hex, pl_buf_cstr(&p));
    if (rc == PL_OK)
        add_note(j, N_ITEM, NS_AV_DATA, hex, pl_buf_cstr(&p), c.access);
    pl_buf_reset(&p);
    cfg_default(&c, j->s);
    if (rc == PL_OK)
        rc = node_ensure(b, NS_AV_META, &c, j->s);
    pl_buf_printf(&p,
                  "<metadata xmlns='" NS_AV_META "'><info id='%s' "
                  "bytes='%zu'",
                  hex, bytes);
    if (j->photo_type) {
        pl_buf_append_str(&p, " type='");
        pl_buf_append_escaped(&p, j->photo_type, strlen(j->photo_type), 1);
        pl_buf_append_str(&p, "'");
    }
    pl_buf_append_str(&p, "/></metadata>");
    if (rc == PL_OK)
        rc = item_put(b, NS_AV_META, &c, hex, pl_buf_cstr(&p));
    if (rc == PL_OK)
        add_note(j, N_ITEM, NS_AV_META, hex, pl_buf_cstr(&p), c.access);
    pl_buf_reset(&p);
    return rc;
}

/* The avatar hash for presence: the vCard photo's SHA-1, "" if none. */
static int read_hash(struct db *b, struct job *j)
{
    struct pl_buf old = {0};
    struct pl_stanza *vc = NULL;
    int rc = b->d->kv_get(b->db, b->host, b->user, "vcard", "", &old);
    j->hash_set = 1;
    if (rc == PL_OK &&
        pl_xml_parse_fragment(old.data + old.off, old.len, &vc) == PL_OK) {
        struct pl_node *ph = pl_node_child(pl_stanza_root(vc), "PHOTO", NULL);
        struct pl_node *bv = ph ? pl_node_child(ph, "BINVAL", NULL) : NULL;
        if (bv) {
            size_t tl;
            const char *t = pl_node_text(vc, bv, &tl);
            char *b64 = b64_clean(t, tl);
            struct pl_buf bin = {0};
            if (pl_base64_decode(pl_str_c(b64), &bin) == PL_OK && bin.len) {
                char hex[41];
                sha1_hex(bin.data + bin.off, bin.len, hex);
                j->hash = pl_strdup(hex);
            }
            pl_buf_reset(&bin);
            pl_free(b64);
        }
        pl_stanza_unref(vc);
    }
    pl_buf_reset(&old);
    if (!j->hash)
        j->hash = pl_strdup("");
    return rc == PL_ENOT_FOUND ? PL_OK : rc;
}

/* ------------------------------------------- storage thread: ops */

/* Whether the requester may read the node (XEP-0060 §6.5.9). */
static int may_read(struct db *b, struct job *j)
{
    if (!j->requester || strcmp(j->requester, j->base.bare) == 0 ||
        j->cfg.access == AM_OPEN)
        return PL_OK;
    if (j->cfg.access == AM_WHITELIST)
        return fail(j, PL_ENOT_ALLOWED, "closed-node", NULL), PL_EFORBIDDEN;
    struct pl_roster_item it = {0};
    int rc = pl_roster_load_item(b->d, b->db, b->host, b->user, j->requester,
                                 &it);
    int ok = rc == PL_OK && pl_roster_has_from(&it);
    pl_roster_item_free(&it);
    if (rc != PL_OK && rc != PL_ENOT_FOUND)
        return rc;
    if (ok)
        return PL_OK;
    if (j->cfg.access == AM_ROSTER)
        fail(j, PL_ENOT_AUTHORIZED, "not-in-roster-group", NULL);
    else
        fail(j, PL_ENOT_AUTHORIZED, "presence-subscription-required", NULL);
    return PL_EFORBIDDEN;
}

static int apply_opts(struct job *j, struct cfg *c)
{
    for (int i = 0; i < j->nopts; i++) {
        int rc = cfg_apply(c, j->opts[i].var, j->opts[i].value, j->s);
        if (rc != PL_OK)
            return rc;
    }
    return PL_OK;
}

static int run_publish(struct db *b, struct job *j)
{
    int rc = cfg_load(b, j->node, &j->cfg, j->s);
    if (rc == PL_OK && j->has_opts) {
        struct cfg want = j->cfg;
        /* XEP-0060 §7.1.5: every option is a precondition. */
        if (apply_opts(j, &want) != PL_OK || !cfg_same(&want, &j->cfg))
            return fail(j, PL_ECONFLICT, "precondition-not-met", NULL);
    } else if (rc == PL_ENOT_FOUND) {
        cfg_default(&j->cfg, j->s);
        if (j->has_opts && apply_opts(j, &j->cfg) != PL_OK)
            return fail(j, PL_ECONFLICT, "precondition-not-met", NULL);
        rc = node_create(b, j->node, &j->cfg, j->s->max_nodes);
        if (rc == PL_ELIMIT)
            return fail(j, PL_ENOT_ALLOWED, "max-nodes-exceeded", NULL);
    }
    if (rc != PL_OK)
        return rc;
    rc = item_put(b, j->node, &j->cfg, j->item_id, j->payload);
    if (rc != PL_OK)
        return rc;
    add_note(j, N_ITEM, j->node, j->item_id, j->payload, j->cfg.access);
    if (j->s->bookmarks_compat && strcmp(j->node, NS_BM2) == 0)
        rc = bm_to_legacy(b, j);
    else if (j->s->bookmarks_compat && strcmp(j->node, NS_BM) == 0 &&
             j->payload)
        rc = bm_from_legacy(b, j, j->payload, 1, 0);
    else if (j->s->vcard_conversion && strcmp(j->node, NS_AV_META) == 0 &&
             j->payload)
        rc = avatar_to_vcard(b, j, j->payload);
    return rc;
}

static int run_retract(struct db *b, struct job *j)
{
    int rc = cfg_load(b, j->node, &j->cfg, j->s);
    if (rc == PL_ENOT_FOUND)
        return fail(j, PL_EITEM_NOT_FOUND, NULL, NULL);
    if (rc == PL_OK)
        rc = item_del(b, j->node, j->item_id);
    if (rc == PL_ENOT_FOUND)
        return fail(j, PL_EITEM_NOT_FOUND, NULL, NULL);
    if (rc != PL_OK)
        return rc;
    /* §7.2.2.1: notify per the request, else per notify_retract. */
    if (j->notify == 1 || (j->notify < 0 && j->cfg.notify_retract))
        add_note(j, N_RETRACT, j->node, j->item_id, NULL, j->cfg.access);
    if (j->s->bookmarks_compat && strcmp(j->node, NS_BM2) == 0)
        rc = bm_to_legacy(b, j);
    return rc;
}

static int run_items(struct db *b, struct job *j)
{
    int rc = cfg_load(b, j->node, &j->cfg, j->s);
    if (rc == PL_ENOT_FOUND)
        return fail(j, PL_EITEM_NOT_FOUND, NULL, NULL);
    if (rc != PL_OK)
        return rc;
    rc = may_read(b, j);
    if (rc == PL_EFORBIDDEN)
        return PL_OK; /* j->err says why */
    if (rc != PL_OK)
        return rc;
    if (j->nids) {
        for (int i = 0; i < j->nids; i++) {
            struct pl_buf p = {0};
            rc = item_get(b, j->node, j->ids[i], &p);
            if (rc == PL_OK)
                add_item(j, NULL, j->node, j->ids[i], pl_buf_cstr(&p));
            pl_buf_reset(&p);
            if (rc != PL_OK && rc != PL_ENOT_FOUND)
                return rc;
        }
        return PL_OK;
    }
    struct ilist l = {0};
    rc = items_load(b, j->node, &l);
    int from = j->max_req > 0 && l.n > j->max_req ? l.n - (int)j->max_req : 0;
    for (int i = from; rc == PL_OK && i < l.n; i++)
        add_item(j, NULL, j->node, l.ids[i], l.payloads[i]);
    ilist_free(&l);
    return rc;
}

static int run_create(struct db *b, struct job *j)
{
    int rc = cfg_load(b, j->node, &j->cfg, j->s);
    if (rc == PL_OK)
        return fail(j, PL_ECONFLICT, NULL, NULL); /* §8.1.3 */
    if (rc != PL_ENOT_FOUND)
        return rc;
    cfg_default(&j->cfg, j->s);
    if (apply_opts(j, &j->cfg) != PL_OK)
        return fail(j, PL_ENOT_ACCEPTABLE, NULL, NULL);
    rc = node_create(b, j->node, &j->cfg, j->s->max_nodes);
    if (rc == PL_ELIMIT)
        return fail(j, PL_ENOT_ALLOWED, "max-nodes-exceeded", NULL);
    return rc;
}

static int run_delete(struct db *b, struct job *j, int purge)
{
    int rc = cfg_load(b, j->node, &j->cfg, j->s);
    if (rc == PL_ENOT_FOUND)
        return fail(j, PL_EITEM_NOT_FOUND, NULL, NULL);
    if (rc != PL_OK)
        return rc;
    char store[STORE_LEN];
    store_of(j->node, store);
    rc = b->d->kv_clear(b->db, b->host, b->user, store);
    if (rc == PL_OK && purge)
        rc = cfg_save(b, j->node, &j->cfg);
    else if (rc == PL_OK)
        rc = b->d->kv_set(b->db, b->host, b->user, "pep", j->node, NULL, 0);
    if (rc == PL_OK && (purge || j->cfg.notify_delete))
        add_note(j, purge ? N_PURGE : N_DELETE, j->node, NULL, NULL,
                 j->cfg.access);
    if (rc == PL_OK && j->s->bookmarks_compat && strcmp(j->node, NS_BM2) == 0)
        rc = bm_to_legacy(b, j);
    return rc;
}

static int run_cfg(struct db *b, struct job *j, int set)
{
    int rc = cfg_load(b, j->node, &j->cfg, j->s);
    if (rc == PL_ENOT_FOUND)
        return fail(j, PL_EITEM_NOT_FOUND, NULL, NULL);
    if (rc != PL_OK || !set)
        return rc;
    struct cfg c = j->cfg;
    if (apply_opts(j, &c) != PL_OK)
        return fail(j, PL_ENOT_ACCEPTABLE, NULL, NULL); /* §8.2.5.3 */
    j->cfg = c;
    return cfg_save(b, j->node, &c);
}

/* Last items of the account's and its contacts' nodes (XEP-0163 §4.3.4). */
static int run_last(const struct pl_storage_driver *d, void *db, struct job *j)
{
    int rc = pl_roster_load(d, db, j->base.host, j->base.user, &j->roster);
    if (rc != PL_OK)
        return rc;
    for (int t = -1; t < j->roster.n; t++) {
        const char *who = t < 0 ? j->base.bare : j->roster.v[t].jid;
        if (t >= 0 && !pl_roster_has_to(&j->roster.v[t]))
            continue;
        const char *at = strchr(who, '@');
        if (!at || strcmp(at + 1, j->base.host) != 0)
            continue; /* remote contacts: their own server's job */
        char *local = pl_strndup(who, (size_t)(at - who));
        struct db b = {d, db, j->base.host, local};
        for (int i = 0; rc == PL_OK && i < j->nnodes; i++) {
            struct cfg c;
            if (cfg_load(&b, j->nodes[i], &c, j->s) != PL_OK)
                continue;
            if (c.send_last == SL_NEVER || (t >= 0 && c.access == AM_WHITELIST))
                continue;
            struct ilist l = {0};
            rc = items_load(&b, j->nodes[i], &l);
            if (rc == PL_OK && l.n)
                add_item(j, who, j->nodes[i], l.ids[l.n - 1],
                         l.payloads[l.n - 1]);
            ilist_free(&l);
        }
        pl_free(local);
    }
    return rc;
}

static int run(const struct pl_storage_driver *d, void *db, void *arg)
{
    struct job *j = arg;
    struct db b = {d, db, j->base.host, j->base.user};
    int rc = PL_OK;
    switch (j->op) {
    case OP_PUBLISH: rc = run_publish(&b, j); break;
    case OP_RETRACT: rc = run_retract(&b, j); break;
    case OP_ITEMS: rc = run_items(&b, j); break;
    case OP_CREATE: rc = run_create(&b, j); break;
    case OP_DELETE: rc = run_delete(&b, j, 0); break;
    case OP_PURGE: rc = run_delete(&b, j, 1); break;
    case OP_CFG_GET: rc = run_cfg(&b, j, 0); break;
    case OP_CFG_SET: rc = run_cfg(&b, j, 1); break;
    case OP_LAST: return run_last(d, db, j);
    case OP_LEGACY_BM: rc = bm_from_legacy(&b, j, j->payload, 0, 1); break;
    case OP_VCARD: rc = vcard_to_avatar(&b, j); break;
    case OP_HASH: return read_hash(&b, j);
    }
    /* Notifications need the owner's contacts. */
    if (rc == PL_OK && !j->err && j->notes)
        rc = pl_roster_load(d, db, j->base.host, j->base.user, &j->roster);
    return rc;
}

/* -------------------------------------------------- loop: delivery */

static void msg_id(char *out, size_t n)
{
    static unsigned long long counter;
    unsigned r = 0;
    if (RAND_bytes((unsigned char *)&r, sizeof(r)) != 1)
        r = 0;
    snprintf(out, n, "pep-%llx-%08x", ++counter, r);
}

/* Appends <item id>payload</item> (payload parsed from storage). */
static void add_item_xml(struct pl_stanza *r, struct pl_node *parent,
                         const char *id, const char *payload)
{
    struct pl_node *it = pl_node_add_child(r, parent, "item", parent->ns);
    pl_node_set_attr(r, it, "id", id);
    struct pl_stanza *p = NULL;
    if (payload && *payload &&
        pl_xml_parse_fragment(payload, strlen(payload), &p) == PL_OK)
        pl_node_add_copy(r, it, pl_stanza_root(p));
    pl_stanza_unref(p);
}

/* The <message/> of one notification (new reference). */
static struct pl_stanza *event_message(const char *from, const char *node,
                                       int kind, const char *id,
                                       const char *payload)
{
    char mid[48];
    struct pl_stanza *m = pl_stanza_new("message", PL_NS_CLIENT);
    pl_stanza_set_attr(m, "type", "headline");
    pl_stanza_set_attr(m, "from", from);
    msg_id(mid, sizeof(mid));
    pl_stanza_set_attr(m, "id", mid);
    struct pl_node *ev = pl_node_add_child(m, pl_stanza_root(m), "event",
                                           NS_EVENT);
    struct pl_node *el;
    if (kind == N_DELETE || kind == N_PURGE) {
        el = pl_node_add_child(m, ev, kind == N_DELETE ? "delete" : "purge",
                               NS_EVENT);
        pl_node_set_attr(m, el, "node", node);
        return m;
    }
    el = pl_node_add_child(m, ev, "items", NS_EVENT);
    pl_node_set_attr(m, el, "node", node);
    if (kind == N_RETRACT) {
        struct pl_node *r = pl_node_add_child(m, el, "retract", NS_EVENT);
        pl_node_set_attr(m, r, "id", id);
    } else {
        add_item_xml(m, el, id, payload);
    }
    return m;
}

static void deliver_to(struct pl_stanza *m, struct pl_session *s)
{
    struct pl_stanza *c = pl_stanza_copy(m);
    pl_stanza_set_attr(c, "to", s->jid->full);
    pl_route_to_session(s, c);
    pl_stanza_unref(c);
}

/* Sends one notification to every interested resource. */
static void notify(struct job *j, const struct note *n)
{
    struct pl_stanza *m = event_message(j->base.bare, n->node, n->kind, n->id,
                                        n->payload);
    for (struct pl_session *s = pl_session_first(j->base.bare); s;
         s = s->next_res)
        if (s->available && wants(s, n->node))
            deliver_to(m, s);
    if (n->access != AM_WHITELIST)
        for (int i = 0; i < j->roster.n; i++) {
            if (!pl_roster_has_from(&j->roster.v[i]))
                continue;
            for (struct pl_session *s = pl_session_first(j->roster.v[i].jid); s;
                 s = s->next_res)
                if (s->available && wants(s, n->node))
                    deliver_to(m, s);
        }
    pl_stanza_unref(m);
}

static void set_hash(struct state *s, const char *bare, const char *hash)
{
    char *old = pl_map_get(&s->hashes, bare);
    if (!old && !pl_session_first(bare))
        return; /* nobody online: nothing to inject into */
    pl_map_put(&s->hashes, bare, pl_strdup(hash));
    pl_free(old);
}

static void done(int rc, void *arg)
{
    struct job *j = arg;
    if (rc != PL_OK) {
        pl_log_error("mod_pep", "storage failed for %s: %s", j->base.bare,
                     pl_strerror(rc));
        if (j->base.st)
            pl_route_error(j->base.st, PL_EINTERNAL_SERVER_ERROR, NULL);
        job_free(j);
        return;
    }
    if (j->err) {
        reply_error(j->base.st, j->err, j->app, j->feature, j->err_text);
        job_free(j);
        return;
    }
    if (j->hash_set && j->hash)
        set_hash(j->s, j->base.bare, j->hash);
    if (j->op == OP_LAST) {
        struct pl_session *s = pl_session_by_id(j->base.sid);
        for (int i = 0; s && i < j->nitems; i++) {
            struct item *it = &j->items[i];
            struct pl_stanza *m = event_message(it->from, it->node, N_ITEM,
                                                it->id, it->payload);
            deliver_to(m, s);
            pl_stanza_unref(m);
        }
        job_free(j);
        return;
    }
    if (j->base.st) {
        struct pl_stanza *r = pl_iq_result(j->base.st);
        struct pl_node *root = pl_stanza_root(r);
        if (j->op == OP_PUBLISH) {
            struct pl_node *ps = pl_node_add_child(r, root, "pubsub",
                                                   NS_PUBSUB);
            struct pl_node *pb = pl_node_add_child(r, ps, "publish", NS_PUBSUB);
            pl_node_set_attr(r, pb, "node", j->node);
            struct pl_node *it = pl_node_add_child(r, pb, "item", NS_PUBSUB);
            pl_node_set_attr(r, it, "id", j->item_id);
        } else if (j->op == OP_ITEMS) {
            struct pl_node *ps = pl_node_add_child(r, root, "pubsub",
                                                   NS_PUBSUB);
            struct pl_node *is = pl_node_add_child(r, ps, "items", NS_PUBSUB);
            pl_node_set_attr(r, is, "node", j->node);
            for (int i = 0; i < j->nitems; i++)
                add_item_xml(r, is, j->items[i].id, j->items[i].payload);
        } else if (j->op == OP_CFG_GET &&
                   strcmp(pl_stanza_attr(j->base.st, "type"), "get") == 0) {
            struct pl_node *ps = pl_node_add_child(r, root, "pubsub", NS_OWNER);
            struct pl_node *c = pl_node_add_child(r, ps, "configure", NS_OWNER);
            pl_node_set_attr(r, c, "node", j->node);
            cfg_form(r, c, &j->cfg);
        }
        pl_route_reply(j->base.st, r);
        pl_stanza_unref(r);
    }
    for (struct note *n = j->notes; n; n = n->next)
        notify(j, n);
    job_free(j);
}

static void send_last_items(struct pl_session *s)
{
    struct state *st = pl_host_module_state(s->host, "pep");
    struct csess *c = pl_session_ctx(s, pep);
    if (!st || !c || !c->n || !s->jid || !s->jid->local)
        return;
    struct job *j = job_new(OP_LAST, st, s->host->domain, s->jid->local);
    j->base.sid = s->id;
    j->nodes = strs_copy(c->nodes, c->n);
    j->nnodes = c->n;
    pl_storage_submit(pl_server_loop(), run, done, j);
}

/* ------------------------------------------------- loop: requests */

static struct job *request_job(struct pl_event *ev, struct state *s, enum op op,
                               const char *node)
{
    struct job *j = job_new(op, s, ev->host->domain, ev->to->local);
    j->base.st = pl_stanza_ref(ev->stanza);
    j->requester = ev->from ? pl_strdup(ev->from->bare) : NULL;
    j->node = pl_strdup(node);
    return j;
}

/* Reads a data form of the expected FORM_TYPE into j's options. */
static int read_form(struct pl_event *ev, struct job *j,
                     const struct pl_node *parent, const char *form_type)
{
    struct pl_node *x = parent ? pl_node_child(parent, "x", NS_XDATA) : NULL;
    if (!x)
        return PL_OK;
    j->opts = form_fields(ev->stanza, x, &j->nopts);
    j->has_opts = 1;
    for (int i = 0; i < j->nopts; i++)
        if (strcmp(j->opts[i].var, "FORM_TYPE") == 0 &&
            strcmp(j->opts[i].value, form_type) != 0)
            return PL_EBAD_REQUEST;
    return PL_OK;
}

static void new_item_id(char *out, size_t n)
{
    unsigned char r[8];
    if (RAND_bytes(r, sizeof(r)) != 1)
        memset(r, 0, sizeof(r));
    snprintf(out, n, "%02x%02x%02x%02x%02x%02x%02x%02x", r[0], r[1], r[2], r[3],
             r[4], r[5], r[6], r[7]);
}

static int bad_node(const char *node)
{
    return !node || !*node || strlen(node) > NODE_MAX;
}

static int on_pubsub_set(struct pl_event *ev, void *state)
{
    struct state *s = state;
    if (!ev->to || !ev->to->local)
        return PL_PASS;
    struct pl_node *ps = pl_stanza_payload(ev->stanza);
    struct pl_node *act = pl_node_first_elem(ps);
    if (!act)
        return PL_EBAD_REQUEST;
    const char *node = pl_node_attr(act, "node");
    const char *name = act->name;
    if (strcmp(name, "subscribe") == 0 || strcmp(name, "unsubscribe") == 0 ||
        strcmp(name, "options") == 0) {
        reply_error(ev->stanza, PL_EFEATURE_NOT_IMPLEMENTED, "unsupported",
                    strcmp(name, "options") == 0 ? "subscription-options"
                                                 : "subscribe",
                    NULL);
        return PL_HANDLED;
    }
    if (strcmp(name, "publish") != 0 && strcmp(name, "retract") != 0 &&
        strcmp(name, "create") != 0)
        return PL_EBAD_REQUEST;
    if (!pl_event_is_self(ev))
        return PL_EFORBIDDEN; /* XEP-0163 §4: only the owner publishes */
    if (bad_node(node)) {
        if (strcmp(name, "create") == 0)
            reply_error(ev->stanza, PL_ENOT_ACCEPTABLE, "nodeid-required", NULL,
                        NULL);
        else
            reply_error(ev->stanza, PL_EBAD_REQUEST, "nodeid-required", NULL,
                        NULL);
        return PL_HANDLED;
    }
    struct job *j;
    if (strcmp(name, "publish") == 0) {
        size_t nitems = 0;
        struct pl_node *item = NULL;
        for (struct pl_node *c = pl_node_first_elem(act); c;
             c = pl_node_next_elem(c))
            if (strcmp(c->name, "item") == 0) {
                item = c;
                nitems++;
            }
        if (nitems != 1) {
            /* §7.1.3.5/§7.1.3.6: exactly one item (no batches here). */
            reply_error(ev->stanza, PL_EBAD_REQUEST,
                        nitems ? "invalid-payload" : "item-required", NULL,
                        NULL);
            return PL_HANDLED;
        }
        size_t npay = pl_node_count_elems(item);
        if (npay != 1) {
            reply_error(ev->stanza, PL_EBAD_REQUEST,
                        npay ? "invalid-payload" : "payload-required", NULL,
                        NULL);
            return PL_HANDLED;
        }
        j = request_job(ev, s, OP_PUBLISH, node);
        const char *id = pl_node_attr(item, "id");
        char gen[24];
        if (!id || !*id) {
            new_item_id(gen, sizeof(gen));
            id = gen;
        }
        if (strlen(id) > NODE_MAX) {
            job_free(j);
            return PL_ENOT_ACCEPTABLE;
        }
        j->item_id = pl_strdup(id);
        struct pl_buf p = {0};
        pl_node_serialize(pl_node_first_elem(item), "", PL_NS_CLIENT, &p);
        if ((long)p.len > s->max_item_size) {
            pl_buf_reset(&p);
            job_free(j);
            reply_error(ev->stanza, PL_ENOT_ACCEPTABLE, "payload-too-big", NULL,
                        NULL);
            return PL_HANDLED;
        }
        j->payload = pl_strdup(pl_buf_cstr(&p));
        pl_buf_reset(&p);
        struct pl_node *po = pl_node_child(ps, "publish-options", NS_PUBSUB);
        if (read_form(ev, j, po, NS_PUBOPTS) != PL_OK) {
            job_free(j);
            reply_error(ev->stanza, PL_EBAD_REQUEST, "invalid-options", NULL,
                        NULL);
            return PL_HANDLED;
        }
    } else if (strcmp(name, "retract") == 0) {
        struct pl_node *item = pl_node_child(act, "item", NULL);
        const char *id = item ? pl_node_attr(item, "id") : NULL;
        if (!id || !*id) {
            reply_error(ev->stanza, PL_EBAD_REQUEST, "item-required", NULL,
                        NULL);
            return PL_HANDLED;
        }
        j = request_job(ev, s, OP_RETRACT, node);
        j->item_id = pl_strdup(id);
        const char *nt = pl_node_attr(act, "notify");
        if (nt)
            j->notify = strcmp(nt, "1") == 0 || strcmp(nt, "true") == 0;
    } else {
        j = request_job(ev, s, OP_CREATE, node);
        struct pl_node *cf = pl_node_child(ps, "configure", NS_PUBSUB);
        if (read_form(ev, j, cf, NS_NODECFG) != PL_OK) {
            job_free(j);
            return PL_EBAD_REQUEST;
        }
    }
    pl_storage_submit(pl_server_loop(), run, done, j);
    return PL_PENDING;
}

static int on_pubsub_get(struct pl_event *ev, void *state)
{
    struct state *s = state;
    if (!ev->to || !ev->to->local)
        return PL_PASS;
    struct pl_node *act = pl_node_first_elem(pl_stanza_payload(ev->stanza));
    if (!act)
        return PL_EBAD_REQUEST;
    if (strcmp(act->name, "subscriptions") == 0 ||
        strcmp(act->name, "affiliations") == 0 ||
        strcmp(act->name, "options") == 0) {
        reply_error(ev->stanza, PL_EFEATURE_NOT_IMPLEMENTED, "unsupported",
                    strcmp(act->name, "subscriptions") == 0
                        ? "retrieve-subscriptions"
                    : strcmp(act->name, "affiliations") == 0
                        ? "retrieve-affiliations"
                        : "subscription-options",
                    NULL);
        return PL_HANDLED;
    }
    if (strcmp(act->name, "items") != 0)
        return PL_EBAD_REQUEST;
    const char *node = pl_node_attr(act, "node");
    if (bad_node(node)) {
        reply_error(ev->stanza, PL_EBAD_REQUEST, "nodeid-required", NULL, NULL);
        return PL_HANDLED;
    }
    struct job *j = request_job(ev, s, OP_ITEMS, node);
    const char *mi = pl_node_attr(act, "max_items");
    if (mi) {
        char *end;
        j->max_req = strtol(mi, &end, 10);
        if (!*mi || *end || j->max_req < 1) {
            job_free(j);
            return PL_EBAD_REQUEST;
        }
    }
    size_t n = pl_node_count_elems(act);
    j->ids = pl_calloc(n + 1, sizeof(char *));
    for (struct pl_node *c = pl_node_first_elem(act); c;
         c = pl_node_next_elem(c)) {
        const char *id = pl_node_attr(c, "id");
        if (strcmp(c->name, "item") == 0 && id)
            j->ids[j->nids++] = pl_strdup(id);
    }
    pl_storage_submit(pl_server_loop(), run, done, j);
    return PL_PENDING;
}

static int on_owner(struct pl_event *ev, void *state)
{
    struct state *s = state;
    if (!ev->to || !ev->to->local)
        return PL_PASS;
    int set = strcmp(pl_stanza_attr(ev->stanza, "type"), "set") == 0;
    struct pl_node *ps = pl_stanza_payload(ev->stanza);
    struct pl_node *act = pl_node_first_elem(ps);
    if (!act)
        return PL_EBAD_REQUEST;
    if (!pl_event_is_self(ev))
        return PL_EFORBIDDEN;
    if (!set && strcmp(act->name, "default") == 0) {
        struct cfg c;
        cfg_default(&c, s);
        struct pl_stanza *r = pl_iq_result(ev->stanza);
        struct pl_node *p = pl_node_add_child(r, pl_stanza_root(r), "pubsub",
                                              NS_OWNER);
        cfg_form(r, pl_node_add_child(r, p, "default", NS_OWNER), &c);
        pl_route_reply(ev->stanza, r);
        pl_stanza_unref(r);
        return PL_HANDLED;
    }
    const char *node = pl_node_attr(act, "node");
    enum op op;
    if (strcmp(act->name, "configure") == 0)
        op = set ? OP_CFG_SET : OP_CFG_GET;
    else if (set && strcmp(act->name, "delete") == 0)
        op = OP_DELETE;
    else if (set && strcmp(act->name, "purge") == 0)
        op = OP_PURGE;
    else if (strcmp(act->name, "subscriptions") == 0 ||
             strcmp(act->name, "affiliations") == 0) {
        reply_error(ev->stanza, PL_EFEATURE_NOT_IMPLEMENTED, "unsupported",
                    strcmp(act->name, "subscriptions") == 0
                        ? "manage-subscriptions"
                        : "modify-affiliations",
                    NULL);
        return PL_HANDLED;
    } else
        return PL_EBAD_REQUEST;
    if (bad_node(node)) {
        reply_error(ev->stanza, PL_EBAD_REQUEST, "nodeid-required", NULL, NULL);
        return PL_HANDLED;
    }
    struct job *j = request_job(ev, s, op, node);
    if (op == OP_CFG_SET) {
        struct pl_node *x = pl_node_child(act, "x", NS_XDATA);
        const char *xt = x ? pl_node_attr(x, "type") : NULL;
        if (!x || !xt) {
            job_free(j);
            return PL_EBAD_REQUEST;
        }
        if (strcmp(xt, "cancel") == 0)
            j->op = OP_CFG_GET; /* §8.2.4: nothing changes; empty result */
        else if (read_form(ev, j, act, NS_NODECFG) != PL_OK) {
            job_free(j);
            return PL_EBAD_REQUEST;
        }
    }
    pl_storage_submit(pl_server_loop(), run, done, j);
    return PL_PENDING;
}

/* ------------------------------------------------ loop: other hooks */

static int on_presence(struct pl_event *ev, void *state)
{
    struct state *s = state;
    struct pl_session *sess = ev->session;
    const char *type = pl_stanza_attr(ev->stanza, "type");
    if (!sess || !sess->jid || type)
        return PL_PASS;
    if (s->vcard_conversion) {
        /* XEP-0398 §4: the avatar hash in every available presence. */
        const char *hash = pl_map_get(&s->hashes, sess->jid->bare);
        struct pl_node *root = pl_stanza_root(ev->stanza);
        struct pl_node *x = pl_node_child(root, "x", NS_VCARD_UPDATE);
        if (hash && *hash && (!x || !pl_node_child(x, "photo", NULL))) {
            if (!x)
                x = pl_node_add_child(ev->stanza, root, "x", NS_VCARD_UPDATE);
            struct pl_node *p = pl_node_add_child(ev->stanza, x, "photo",
                                                  NS_VCARD_UPDATE);
            pl_node_add_text(ev->stanza, p, hash, strlen(hash));
        }
    }
    caps_presence(s, sess, ev->stanza);
    return PL_PASS;
}

static int on_bound(struct pl_event *ev, void *state)
{
    struct state *s = state;
    struct pl_session *sess = ev->session;
    if (!s->vcard_conversion || !sess || !sess->jid ||
        pl_map_get(&s->hashes, sess->jid->bare))
        return PL_PASS;
    pl_map_put(&s->hashes, sess->jid->bare, pl_strdup(""));
    struct job *j = job_new(OP_HASH, s, ev->host->domain, sess->jid->local);
    pl_storage_submit(pl_server_loop(), run, done, j);
    return PL_PASS;
}

static int on_closed(struct pl_event *ev, void *state)
{
    struct state *s = state;
    struct pl_session *sess = ev->session;
    struct csess *c = pl_session_ctx(sess, pep);
    if (c) {
        pl_free(c->key);
        strs_free(c->nodes, c->n);
        pl_free(c);
        pl_session_ctx(sess, pep) = NULL;
    }
    if (sess->jid) {
        int others = 0;
        for (struct pl_session *o = pl_session_first(sess->jid->bare); o;
             o = o->next_res)
            if (o != sess)
                others = 1;
        if (!others)
            pl_free(pl_map_del(&s->hashes, sess->jid->bare));
    }
    return PL_PASS;
}

/* XEP-0049 storage of XEP-0048 bookmarks: mirrored (mod_private stores
 * the element itself after this handler passes). */
static int on_private_set(struct pl_event *ev, void *state)
{
    struct state *s = state;
    if (!s->bookmarks_compat || !pl_event_is_self(ev))
        return PL_PASS;
    struct pl_node *q = pl_stanza_payload(ev->stanza);
    struct pl_node *bm = q ? pl_node_child(q, "storage", NS_BM) : NULL;
    if (!bm || (!bm->children && !bm->attrs))
        return PL_PASS;
    struct job *j = job_new(OP_LEGACY_BM, s, ev->host->domain, ev->to->local);
    struct pl_buf p = {0};
    pl_node_serialize(bm, "", PL_NS_CLIENT, &p);
    j->payload = pl_strdup(pl_buf_cstr(&p));
    pl_buf_reset(&p);
    pl_storage_submit(pl_server_loop(), run, done, j);
    return PL_PASS;
}

/* XEP-0398 §3.2: a vCard with a photo (mod_vcard stores it after this
 * handler passes). */
static int on_vcard_set(struct pl_event *ev, void *state)
{
    struct state *s = state;
    if (!s->vcard_conversion || !pl_event_is_self(ev))
        return PL_PASS;
    struct pl_node *vc = pl_stanza_payload(ev->stanza);
    struct pl_node *ph = vc ? pl_node_child(vc, "PHOTO", NULL) : NULL;
    struct pl_node *bv = ph ? pl_node_child(ph, "BINVAL", NULL) : NULL;
    if (!bv)
        return PL_PASS;
    struct pl_node *ty = pl_node_child(ph, "TYPE", NULL);
    size_t tl;
    const char *t = pl_node_text(ev->stanza, bv, &tl);
    struct job *j = job_new(OP_VCARD, s, ev->host->domain, ev->to->local);
    j->photo_b64 = b64_clean(t, tl);
    if (ty)
        j->photo_type = pl_strdup(pl_node_text(ev->stanza, ty, NULL));
    pl_storage_submit(pl_server_loop(), run, done, j);
    return PL_PASS;
}

static const char *const account_features[] = {
    NS_PUBSUB,
    NS_PUBSUB "#access-open",
    NS_PUBSUB "#access-presence",
    NS_PUBSUB "#access-roster",
    NS_PUBSUB "#access-whitelist",
    NS_PUBSUB "#auto-create",
    NS_PUBSUB "#auto-subscribe",
    NS_PUBSUB "#config-node",
    NS_PUBSUB "#config-node-max",
    NS_PUBSUB "#create-and-configure",
    NS_PUBSUB "#create-nodes",
    NS_PUBSUB "#delete-items",
    NS_PUBSUB "#delete-nodes",
    NS_PUBSUB "#filtered-notifications",
    NS_PUBSUB "#item-ids",
    NS_PUBSUB "#last-published",
    NS_PUBSUB "#multi-items",
    NS_PUBSUB "#persistent-items",
    NS_PUBSUB "#presence-notifications",
    NS_PUBSUB "#publish",
    NS_PUBSUB "#publish-options",
    NS_PUBSUB "#purge-nodes",
    NS_PUBSUB "#retract-items",
    NS_PUBSUB "#retrieve-default",
    NS_PUBSUB "#retrieve-items",
    NULL,
};

static int on_account_info(struct pl_event *ev, void *state)
{
    struct state *s = state;
    struct pl_stanza *r = ev->stanza;
    struct pl_node *q = ev->data;
    struct pl_node *id = pl_node_add_child(r, q, "identity", PL_NS_DISCO_INFO);
    pl_node_set_attr(r, id, "category", "pubsub");
    pl_node_set_attr(r, id, "type", "pep");
    for (int i = 0; account_features[i]; i++) {
        struct pl_node *f = pl_node_add_child(r, q, "feature",
                                              PL_NS_DISCO_INFO);
        pl_node_set_attr(r, f, "var", account_features[i]);
    }
    static const char *const bm[] = {NS_BM2 "#compat", NS_BM2 "#compat-pep",
                                     NULL};
    static const char *const cv[] = {NS_CONVERSION, NULL};
    const char *const *extra[] = {s->bookmarks_compat ? bm : NULL,
                                  s->vcard_conversion ? cv : NULL};
    for (int k = 0; k < 2; k++)
        for (int i = 0; extra[k] && extra[k][i]; i++) {
            struct pl_node *f = pl_node_add_child(r, q, "feature",
                                                  PL_NS_DISCO_INFO);
            pl_node_set_attr(r, f, "var", extra[k][i]);
        }
    return PL_PASS;
}

static int load(struct pl_host *h, void *state)
{
    return PL_OK;
}

static void free_hash(const char *key, void *value, void *ud)
{
    pl_free(value);
}

static void unload(struct pl_host *h, void *state)
{
    struct state *s = state;
    pl_map_each(&s->hashes, free_hash, NULL);
    pl_map_clear(&s->hashes);
    /* The caps cache is process-wide: freed with the last host. */
    while (lru_oldest) {
        struct centry *e = lru_oldest;
        lru_unlink(e);
        pl_map_del(&caps_cache, e->key);
        centry_free(e);
    }
    pl_map_clear(&caps_cache);
}

static const struct pl_option options[] = {
    {"max_nodes", PL_OPT_INT, "100", 1, 100000, NULL,
     "Most PEP nodes one account may have.", offsetof(struct state, max_nodes)},
    {"max_items", PL_OPT_INT, "256", 1, 100000, NULL,
     "Largest pubsub#max_items a node may have ('max' means this).",
     offsetof(struct state, max_items)},
    {"default_max_items", PL_OPT_INT, "1", 1, 100000, NULL,
     "pubsub#max_items of a node created without that option.",
     offsetof(struct state, default_max_items)},
    {"max_item_size", PL_OPT_INT, "262144", 256, 16777216, NULL,
     "Largest item payload, in bytes of XML.",
     offsetof(struct state, max_item_size)},
    {"caps_cache_size", PL_OPT_INT, "10000", 1, 10000000, NULL,
     "Verified entity capabilities (XEP-0115 ver strings) kept in memory.",
     offsetof(struct state, caps_cache_size)},
    {"caps_timeout", PL_OPT_INT, "30", 1, 3600, NULL,
     "Seconds to wait for a client's disco#info answer.",
     offsetof(struct state, caps_timeout)},
    {"bookmarks_compat", PL_OPT_BOOL, "true", 0, 0, NULL,
     "Keep XEP-0048 bookmarks (private XML and PEP) and XEP-0402 in step.",
     offsetof(struct state, bookmarks_compat)},
    {"vcard_conversion", PL_OPT_BOOL, "true", 0, 0, NULL,
     "Convert between XEP-0084 avatars and the vCard photo (XEP-0398).",
     offsetof(struct state, vcard_conversion)},
    {0},
};

static const struct pl_hook_def hooks[] = {
    {"iq-set/bare/" NS_PUBSUB ":pubsub", on_pubsub_set, 0},
    {"iq-get/bare/" NS_PUBSUB ":pubsub", on_pubsub_get, 0},
    {"iq-set/bare/" NS_OWNER ":pubsub", on_owner, 0},
    {"iq-get/bare/" NS_OWNER ":pubsub", on_owner, 0},
    {"iq-set/bare/jabber:iq:private:query", on_private_set, 10},
    {"iq-set/bare/" NS_VCARD ":vCard", on_vcard_set, 10},
    {"presence/broadcast", on_presence, 10},
    {"session/bound", on_bound, 0},
    {"session/closed", on_closed, 0},
    {"disco-info/account", on_account_info, 0},
    {0},
};

static const char *const deps[] = {"roster", "presence", NULL};

const struct pl_module pl_mod_pep = {
    .abi = PL_MODULE_ABI,
    .default_on = 1,
    .name = "pep",
    .summary = "personal eventing: pubsub on every account, entity caps",
    .xeps = "XEP-0163, XEP-0060, XEP-0115, XEP-0223, XEP-0402, XEP-0398",
    .deps = deps,
    .options = options,
    .hooks = hooks,
    .state_size = sizeof(struct state),
    .load = load,
    .unload = unload,
};
