/*
 * mod_push.c - XEP-0357 Push Notifications: a client registers an app
 * server (a pubsub service of its vendor, with a node for this device);
 * when a message arrives while the device cannot get it (its stream-
 * managed session is hibernated, or the account has no available
 * resource), the server publishes a notification to that node, and the
 * app server wakes the device through the phone platform's push service.
 *
 *   <iq type='set'><enable xmlns='urn:xmpp:push:0' jid node>[form]</enable>
 *       registers (jid, node) for the sending resource; the optional
 *       publish-options form is sent back with every notification (it
 *       usually holds the device's secret).
 *   <iq type='set'><disable xmlns='urn:xmpp:push:0' jid [node]/>
 *       removes that registration, or every one with that jid.
 *
 * Notifications are <iq type='set'> from the account's bare JID with
 * <pubsub><publish node><item><notification xmlns='urn:xmpp:push:0'>;
 * the summary form (urn:xmpp:push:summary) carries message-count always,
 * last-message-sender and last-message-body only when the operator turns
 * them on (they leave the server for a third party's infrastructure).
 *
 * Storage: kv store "push", key "<jid>\t<node>", value the registration
 * as XML (<enable jid node resource>form</enable>).  Registrations
 * survive restarts; they are per device, not per session.
 *
 * Extending: what counts as worth a push lives in worth_pushing().
 */
#include "core/modapi.h"

#define NS_PUSH "urn:xmpp:push:0"
#define NS_PUBSUB "http://jabber.org/protocol/pubsub"
#define NS_DATA "jabber:x:data"
#define STORE "push"

struct state {
    int include_sender;   /* last-message-sender in the summary */
    int include_body;     /* last-message-body in the summary */
    long max_per_user;    /* registrations per account */
    long body_chars;      /* last-message-body is cut to this many bytes */
    int disable_on_error; /* an app server's error removes the registration */
};

static struct pl_map unread; /* bare JID -> messages since last login */

/* ---------------------------------------------------------- registering */

struct reg_job {
    struct pl_job base;  /* the request, until the reply; the account */
    char *key;           /* "<jid>\t<node>", or "<jid>\t" for disable */
    struct pl_buf value; /* enable: the registration */
    int disable;         /* remove instead of add */
    long max;            /* registrations per account */
};

/* A job for the account the IQ is addressed to; takes ownership of key. */
static struct reg_job *reg_new(struct pl_event *ev, char *key)
{
    struct reg_job *j = pl_job_new(sizeof(*j), ev->stanza, 0, ev->host->domain,
                                   ev->to->local);
    j->key = key;
    return j;
}

static void reg_free(struct reg_job *j)
{
    pl_free(j->key);
    pl_buf_reset(&j->value);
    pl_job_free(j);
}

struct prefix_scan {
    const char *prefix; /* keys to collect */
    struct pl_buf keys; /* NUL-separated */
    long count;         /* all keys */
    int exists;         /* the exact key is there */
    const char *exact;  /* key to look for */
};

static int scan_key(const char *key, const void *data, size_t len, void *ud)
{
    struct prefix_scan *p = ud;
    (void)data;
    (void)len;
    p->count++;
    if (p->exact && strcmp(key, p->exact) == 0)
        p->exists = 1;
    if (p->prefix && strncmp(key, p->prefix, strlen(p->prefix)) == 0)
        pl_buf_append(&p->keys, key, strlen(key) + 1);
    return 0;
}

static int reg_run(const struct pl_storage_driver *d, void *db, void *arg)
{
    struct reg_job *j = arg;
    struct prefix_scan p = {0};
    if (j->disable) {
        /* A key without a node after the tab removes every node. */
        size_t kl = strlen(j->key);
        if (j->key[kl - 1] == '\t')
            p.prefix = j->key;
        else
            p.exact = j->key;
    } else {
        p.exact = j->key;
    }
    int rc = d->kv_list(db, j->base.host, j->base.user, STORE, scan_key, &p);
    if (rc != PL_OK)
        goto out;
    if (j->disable) {
        if (p.exists)
            rc = d->kv_set(db, j->base.host, j->base.user, STORE, j->key, NULL,
                           0);
        for (const char *k = p.keys.data;
             rc == PL_OK && k && k < p.keys.data + p.keys.len;
             k += strlen(k) + 1)
            rc = d->kv_set(db, j->base.host, j->base.user, STORE, k, NULL, 0);
    } else if (!p.exists && p.count >= j->max) {
        rc = PL_ELIMIT;
    } else {
        rc = d->kv_set(db, j->base.host, j->base.user, STORE, j->key,
                       j->value.data, j->value.len);
    }
out:
    pl_buf_reset(&p.keys);
    return rc;
}

static void reg_done(int rc, void *arg)
{
    struct reg_job *j = arg;
    if (rc == PL_OK) {
        pl_route_result(j->base.st);
    } else if (rc == PL_ELIMIT) {
        char text[96];
        snprintf(text, sizeof(text),
                 "At most %ld push registrations per account.", j->max);
        pl_route_error(j->base.st, PL_ERESOURCE_CONSTRAINT, text);
    } else {
        pl_log_error("mod_push",
                     "while storing a push registration of "
                     "%s@%s: %s",
                     j->base.user, j->base.host, pl_strerror(rc));
        pl_route_error(j->base.st, PL_EINTERNAL_SERVER_ERROR, NULL);
    }
    reg_free(j);
}

/* Checks jid (and node) of <enable/> or <disable/>; builds the key. */
static int reg_key(struct pl_node *el, int need_node, char **key)
{
    const char *jid = pl_node_attr(el, "jid");
    const char *node = pl_node_attr(el, "node");
    struct pl_jid *j = NULL;
    if (!jid || pl_jid_parse(pl_str_c(jid), &j) != PL_OK)
        return PL_EBAD_REQUEST;
    if ((need_node && (!node || !*node)) || (node && strchr(node, '\t'))) {
        pl_jid_free(j);
        return PL_EBAD_REQUEST;
    }
    size_t n = strlen(j->full) + (node ? strlen(node) : 0) + 2;
    *key = pl_malloc(n);
    snprintf(*key, n, "%s\t%s", j->full, node ? node : "");
    pl_jid_free(j);
    return PL_OK;
}

static int on_enable(struct pl_event *ev, void *state)
{
    struct state *s = state;
    if (!ev->to || !ev->to->local)
        return PL_PASS;
    if (!pl_event_is_self(ev))
        return PL_EFORBIDDEN;
    struct pl_node *el = pl_stanza_payload(ev->stanza);
    char *key;
    int rc = reg_key(el, 1, &key);
    if (rc != PL_OK)
        return rc;
    struct reg_job *j = reg_new(ev, key);
    j->max = s->max_per_user;
    /* Kept as the client sent it, plus the resource it came from. */
    struct pl_stanza *copy = pl_stanza_new("enable", NS_PUSH);
    struct pl_node *root = pl_stanza_root(copy);
    *strchr(key, '\t') = '\0'; /* the normalized JID, for the key */
    pl_node_set_attr(copy, root, "jid", key);
    key[strlen(key)] = '\t';
    pl_node_set_attr(copy, root, "node", pl_node_attr(el, "node"));
    pl_node_set_attr(copy, root, "resource",
                     ev->from->resource ? ev->from->resource : "");
    struct pl_node *form = pl_node_child(el, "x", NS_DATA);
    if (form)
        pl_node_add_copy(copy, root, form);
    pl_node_serialize(root, "", PL_NS_CLIENT, &j->value);
    pl_stanza_unref(copy);
    pl_storage_submit(pl_server_loop(), reg_run, reg_done, j);
    return PL_PENDING;
}

static int on_disable(struct pl_event *ev, void *state)
{
    (void)state;
    if (!ev->to || !ev->to->local)
        return PL_PASS;
    if (!pl_event_is_self(ev))
        return PL_EFORBIDDEN;
    char *key;
    int rc = reg_key(pl_stanza_payload(ev->stanza), 0, &key);
    if (rc != PL_OK)
        return rc;
    struct reg_job *j = reg_new(ev, key);
    j->disable = 1;
    pl_storage_submit(pl_server_loop(), reg_run, reg_done, j);
    return PL_PENDING;
}

/* ---------------------------------------------------------- notifying */

struct notify_job {
    struct pl_job base;      /* the account */
    const struct state *cfg; /* options */
    char *resource;          /* only registrations of it, or NULL: all */
    char *sender;            /* last-message-sender */
    char *body;              /* last-message-body, or NULL */
    unsigned long count;     /* message-count */
    struct pl_buf regs;      /* registrations, NUL-separated XML */
};

static int collect(const char *key, const void *data, size_t len, void *ud)
{
    struct notify_job *j = ud;
    (void)key;
    pl_buf_append(&j->regs, data, len);
    pl_buf_append(&j->regs, "", 1);
    return 0;
}

static int notify_run(const struct pl_storage_driver *d, void *db, void *arg)
{
    struct notify_job *j = arg;
    return d->kv_list(db, j->base.host, j->base.user, STORE, collect, j);
}

static void add_field(struct pl_stanza *st, struct pl_node *x, const char *var,
                      const char *value)
{
    struct pl_node *f = pl_node_add_child(st, x, "field", NS_DATA);
    pl_node_set_attr(st, f, "var", var);
    struct pl_node *v = pl_node_add_child(st, f, "value", NS_DATA);
    pl_node_add_text(st, v, value, strlen(value));
}

/* An app server answered a notification with an error (XEP-0357 §7.1):
 * the device is gone or the registration is stale, so it is removed. */
struct answer {
    struct pl_job base; /* the account */
    char *key;          /* the registration */
};

static int drop_run(const struct pl_storage_driver *d, void *db, void *arg)
{
    struct answer *a = arg;
    return d->kv_set(db, a->base.host, a->base.user, STORE, a->key, NULL, 0);
}

static void answer_free(int rc, void *arg)
{
    struct answer *a = arg;
    (void)rc;
    pl_free(a->key);
    pl_job_free(a);
}

static void on_answer(struct pl_stanza *reply, void *arg)
{
    struct answer *a = arg;
    const char *type = reply ? pl_stanza_attr(reply, "type") : NULL;
    if (a->key && type && strcmp(type, "error") == 0) {
        pl_log_info("mod_push",
                    "%s@%s: app server refused a notification; "
                    "registration removed",
                    a->base.user, a->base.host);
        struct pl_barrier *prev = pl_barrier_enter(NULL);
        pl_storage_submit(pl_server_loop(), drop_run, answer_free, a);
        pl_barrier_enter(prev);
        return;
    }
    answer_free(PL_OK, a);
}

static void publish(struct notify_job *j, struct pl_node *reg)
{
    const char *jid = pl_node_attr(reg, "jid");
    const char *node = pl_node_attr(reg, "node");
    if (!jid || !node)
        return;
    struct pl_stanza *iq = pl_stanza_new("iq", PL_NS_CLIENT);
    struct pl_node *root = pl_stanza_root(iq);
    char id[40];
    static unsigned long seq;
    snprintf(id, sizeof(id), "push-%lu", ++seq);
    pl_node_set_attr(iq, root, "type", "set");
    pl_node_set_attr(iq, root, "id", id); /* replaced by pl_iq_request */
    struct pl_node *ps = pl_node_add_child(iq, root, "pubsub", NS_PUBSUB);
    struct pl_node *pub = pl_node_add_child(iq, ps, "publish", NS_PUBSUB);
    pl_node_set_attr(iq, pub, "node", node);
    struct pl_node *item = pl_node_add_child(iq, pub, "item", NS_PUBSUB);
    struct pl_node *n = pl_node_add_child(iq, item, "notification", NS_PUSH);
    struct pl_node *x = pl_node_add_child(iq, n, "x", NS_DATA);
    pl_node_set_attr(iq, x, "type", "submit");
    add_field(iq, x, "FORM_TYPE", "urn:xmpp:push:summary");
    char cnt[24];
    snprintf(cnt, sizeof(cnt), "%lu", j->count);
    add_field(iq, x, "message-count", cnt);
    if (j->cfg->include_sender && j->sender)
        add_field(iq, x, "last-message-sender", j->sender);
    if (j->cfg->include_body && j->body)
        add_field(iq, x, "last-message-body", j->body);
    /* XEP-0357 §7: the publish-options given at enable go along. */
    struct pl_node *form = pl_node_child(reg, "x", NS_DATA);
    if (form) {
        struct pl_node *po = pl_node_add_child(iq, ps, "publish-options",
                                               NS_PUBSUB);
        pl_node_add_copy(iq, po, form);
    }
    struct answer *a = pl_job_new(sizeof(*a), NULL, 0, j->base.host,
                                  j->base.user);
    if (j->cfg->disable_on_error) {
        size_t kl = strlen(jid) + strlen(node) + 2;
        a->key = pl_malloc(kl);
        snprintf(a->key, kl, "%s\t%s", jid, node);
    }
    if (pl_iq_request(iq, j->base.bare, jid, on_answer, a, 30000) != PL_OK) {
        pl_log_warn("mod_push", "%s: unusable app server JID %s", j->base.bare,
                    jid);
        answer_free(PL_OK, a);
    }
    pl_stanza_unref(iq);
}

static void notify_done(int rc, void *arg)
{
    struct notify_job *j = arg;
    if (rc != PL_OK) {
        pl_log_error("mod_push",
                     "while reading push registrations of "
                     "%s@%s: %s",
                     j->base.user, j->base.host, pl_strerror(rc));
    } else {
        for (const char *p = j->regs.data; p && p < j->regs.data + j->regs.len;
             p += strlen(p) + 1) {
            struct pl_stanza *reg = NULL;
            if (pl_xml_parse_fragment(p, strlen(p), &reg) != PL_OK)
                continue;
            const char *res = pl_node_attr(pl_stanza_root(reg), "resource");
            if (!j->resource || (res && strcmp(res, j->resource) == 0))
                publish(j, pl_stanza_root(reg));
            pl_stanza_unref(reg);
        }
    }
    pl_buf_reset(&j->regs);
    pl_free(j->resource);
    pl_free(j->sender);
    pl_free(j->body);
    pl_job_free(j);
}

/* Messages a person would want to be woken for. */
static int worth_pushing(struct pl_stanza *st)
{
    if (strcmp(pl_stanza_name(st), "message") != 0)
        return 0;
    const char *type = pl_stanza_attr(st, "type");
    if (type && (strcmp(type, "error") == 0 || strcmp(type, "headline") == 0))
        return 0;
    struct pl_node *root = pl_stanza_root(st);
    return pl_node_child(root, "body", NULL) ||
           pl_node_child(root, "encrypted", NULL);
}

static void notify(struct pl_event *ev, const struct state *s,
                   const struct pl_jid *to, const char *resource)
{
    if (!worth_pushing(ev->stanza) || !to || !to->local)
        return;
    uintptr_t n = (uintptr_t)pl_map_get(&unread, to->bare) + 1;
    pl_map_put(&unread, to->bare, (void *)n);
    struct notify_job *j = pl_job_new(sizeof(*j), NULL, 0, to->domain,
                                      to->local);
    j->cfg = s;
    j->resource = resource ? pl_strdup(resource) : NULL;
    j->count = n;
    const char *from = pl_stanza_attr(ev->stanza, "from");
    j->sender = from ? pl_strdup(from) : NULL;
    struct pl_node *b = pl_node_child(pl_stanza_root(ev->stanza), "body", NULL);
    if (b) {
        size_t len;
        const char *t = pl_node_text(ev->stanza, b, &len);
        if ((long)len > s->body_chars) {
            len = (size_t)s->body_chars;
            while (len && ((unsigned char)t[len] & 0xc0) == 0x80)
                len--; /* do not cut a UTF-8 sequence */
        }
        j->body = pl_malloc(len + 1);
        memcpy(j->body, t, len);
        j->body[len] = '\0';
    }
    /* Not part of the sender's durability: a push is best effort. */
    struct pl_barrier *prev = pl_barrier_enter(NULL);
    pl_storage_submit(pl_server_loop(), notify_run, notify_done, j);
    pl_barrier_enter(prev);
}

static int on_offline(struct pl_event *ev, void *state)
{
    notify(ev, state, ev->to, NULL);
    return PL_PASS;
}

static int on_held(struct pl_event *ev, void *state)
{
    struct pl_session *s = ev->session;
    if (s->jid)
        notify(ev, state, s->jid, s->jid->resource);
    return PL_PASS;
}

static int on_bound(struct pl_event *ev, void *state)
{
    (void)state;
    if (ev->session->jid)
        pl_map_del(&unread, ev->session->jid->bare);
    return PL_PASS;
}

/* XEP-0357 §4.1: clients look for the feature on their own account. */
static int on_account_info(struct pl_event *ev, void *state)
{
    (void)state;
    if (!pl_event_is_self(ev))
        return PL_PASS;
    struct pl_node *f = pl_node_add_child(ev->stanza, ev->data, "feature",
                                          PL_NS_DISCO_INFO);
    pl_node_set_attr(ev->stanza, f, "var", NS_PUSH);
    return PL_PASS;
}

static void unload(struct pl_host *h, void *state)
{
    (void)h;
    (void)state;
    pl_map_clear(&unread);
}

static const char *const features[] = {NS_PUSH, NULL};

static const struct pl_option options[] = {
    {"include_sender", PL_OPT_BOOL, "false", 0, 0, NULL,
     "Put the sender's JID in notifications (it leaves the server for the "
     "app vendor's and the phone platform's push services).",
     offsetof(struct state, include_sender)},
    {"include_body", PL_OPT_BOOL, "false", 0, 0, NULL,
     "Put the message text in notifications (same caveat).",
     offsetof(struct state, include_body)},
    {"body_chars", PL_OPT_INT, "256", 1, 4096, NULL,
     "Bytes of message text in a notification.",
     offsetof(struct state, body_chars)},
    {"disable_on_error", PL_OPT_BOOL, "true", 0, 0, NULL,
     "Remove a registration when its app server answers a notification "
     "with an error (XEP-0357 §7.1).",
     offsetof(struct state, disable_on_error)},
    {"max_per_user", PL_OPT_INT, "10", 1, 1000, NULL,
     "Push registrations (devices) per account.",
     offsetof(struct state, max_per_user)},
    {0},
};

static const struct pl_hook_def hooks[] = {
    {"iq-set/bare/" NS_PUSH ":enable", on_enable, 0},
    {"iq-set/bare/" NS_PUSH ":disable", on_disable, 0},
    /* Before mod_offline stores it (it stops the event). */
    {"message/offline", on_offline, 50},
    {"session/held", on_held, 0},
    {"session/bound", on_bound, 0},
    {"disco-info/account", on_account_info, 0},
    {0},
};

const struct pl_module pl_mod_push = {
    .abi = PL_MODULE_ABI,
    .default_on = 1,
    .name = "push",
    .summary = "push notifications to app servers for sleeping devices",
    .xeps = "XEP-0357",
    .features = features,
    .options = options,
    .hooks = hooks,
    .state_size = sizeof(struct state),
    .unload = unload,
};
