/*
 * mod_admin.c - operations on who is online, for the admin socket
 * (admin.h) and so for parleyctl and the HTTP admin API
 * (src/http/admin_api.c), which both reach them through it:
 *
 *   "admin/sessions" {host optional}: every bound session (of host, or of
 *       every host): full JID, transport (c2s, websocket, bosh, sip), peer
 *       address, encrypted, priority, available.
 *   "admin/kick" {jid, text optional}: ends the session of a full JID, or
 *       every session of a bare one, with a policy-violation stream error
 *       (the transport's equivalent elsewhere); answers how many ended.
 *   "admin/announce" {host, body, subject optional}: a message from the
 *       host to every session of its users online; answers how many.
 *
 * Each handler takes the request when it concerns its host and passes it
 * on otherwise (the admin socket fires the event on each host in turn).
 * A new operation is a handler and a row of hooks[], plus doc/admin.md.
 */
#include "core/modapi.h"

static void answer(uint64_t cid, json_t *a)
{
    pl_admin_answer(cid, a);
    json_decref(a);
}

static void answer_error(uint64_t cid, const char *cond, const char *detail)
{
    answer(cid, json_pack("{s:b, s:s, s:s}", "ok", 0, "error", cond, "detail",
                          detail));
}

/* Session ids matching a host (NULL: any), collected first: acting on
 * sessions while walking the table is not allowed. */
struct pick {
    const struct pl_host *host; /* NULL: every host */
    uint64_t *ids;              /* grown as needed */
    size_t n, cap;
};

static void pick_one(struct pl_session *s, void *ud)
{
    struct pick *p = ud;
    if (p->host && s->host != p->host)
        return;
    if (p->n == p->cap) {
        p->cap = p->cap ? p->cap * 2 : 64;
        p->ids = pl_realloc(p->ids, p->cap * sizeof(*p->ids));
    }
    p->ids[p->n++] = s->id;
}

static int on_sessions(struct pl_event *ev, void *state)
{
    (void)state;
    struct pl_admin_request *ar = ev->data;
    struct pick p = {0};
    p.host = json_object_get(ar->req, "host") ? ev->host : NULL;
    pl_session_each(pick_one, &p);
    json_t *list = json_array();
    for (size_t i = 0; i < p.n; i++) {
        struct pl_session *s = pl_session_by_id(p.ids[i]);
        if (!s || !s->jid)
            continue;
        json_array_append_new(list, json_pack("{s:s, s:s, s:s, s:b, s:i, s:b}",
                                              "jid", s->jid->full, "transport",
                                              pl_session_transport(s), "ip",
                                              pl_session_ip(s), "secure",
                                              pl_session_is_secure(s),
                                              "priority", s->priority,
                                              "available", (int)s->available));
    }
    pl_free(p.ids);
    answer(ar->cid, json_pack("{s:b, s:o}", "ok", 1, "sessions", list));
    return PL_HANDLED;
}

static int on_kick(struct pl_event *ev, void *state)
{
    (void)state;
    struct pl_admin_request *ar = ev->data;
    const char *arg = json_string_value(json_object_get(ar->req, "jid"));
    const char *text = json_string_value(json_object_get(ar->req, "text"));
    struct pl_jid *j = NULL;
    if (!arg || pl_jid_parse(pl_str_c(arg), &j) != PL_OK || !j->local) {
        pl_jid_free(j);
        answer_error(ar->cid, "jid-malformed", "jid must be user@host[/res]");
        return PL_HANDLED;
    }
    if (strcmp(j->domain, ev->host->domain) != 0) {
        pl_jid_free(j);
        return PL_PASS; /* another host's */
    }
    if (!text || !*text)
        text = "ended by the administrator";
    int n = 0;
    struct pl_session *s;
    while ((s = j->resource ? pl_session_by_full(j->full)
                            : pl_session_first(j->bare))) {
        s->ops->close(s, "policy-violation", text);
        pl_session_unregister(s);
        n++;
        if (j->resource)
            break;
    }
    if (n)
        pl_log_info("mod_admin", "ended %d session(s) of %s", n, j->full);
    pl_jid_free(j);
    if (n)
        answer(ar->cid, json_pack("{s:b, s:i}", "ok", 1, "kicked", n));
    else
        answer_error(ar->cid, "item-not-found", "no such session");
    return PL_HANDLED;
}

/* The message of an announcement (subject may be NULL or empty). */
static struct pl_stanza *announcement(const struct pl_host *h,
                                      const char *subject, size_t slen,
                                      const char *body, size_t blen)
{
    struct pl_stanza *m = pl_stanza_new("message", PL_NS_CLIENT);
    pl_stanza_set_attr(m, "from", h->domain);
    if (subject && slen) {
        struct pl_node *e = pl_node_add_child(m, pl_stanza_root(m), "subject",
                                              PL_NS_CLIENT);
        pl_node_add_text(m, e, subject, slen);
    }
    struct pl_node *b = pl_node_add_child(m, pl_stanza_root(m), "body",
                                          PL_NS_CLIENT);
    pl_node_add_text(m, b, body, blen);
    return m;
}

/* m to every session of host h served by this process (another node's
 * users, in a cluster, get it from their node); returns how many. */
static int announce_here(struct pl_host *h, struct pl_stanza *m)
{
    struct pick p = {h, NULL, 0, 0};
    pl_session_each(pick_one, &p);
    int n = 0;
    for (size_t i = 0; i < p.n; i++) {
        struct pl_session *s = pl_session_by_id(p.ids[i]);
        if (!s || !s->jid || s->elsewhere)
            continue;
        /* A copy per session: each gets its own 'to'. */
        struct pl_stanza *c = pl_stanza_copy(m);
        pl_stanza_set_attr(c, "to", s->jid->full);
        pl_route_to_session(s, c);
        pl_stanza_unref(c);
        n++;
    }
    pl_free(p.ids);
    return n;
}

static int on_announce(struct pl_event *ev, void *state)
{
    (void)state;
    struct pl_admin_request *ar = ev->data;
    const char *body = json_string_value(json_object_get(ar->req, "body"));
    const char *subject = json_string_value(
        json_object_get(ar->req, "subject"));
    if (!json_object_get(ar->req, "host")) {
        answer_error(ar->cid, "bad-request", "host is required");
        return PL_HANDLED;
    }
    if (!body || !*body) {
        answer_error(ar->cid, "bad-request", "body is required");
        return PL_HANDLED;
    }
    size_t slen = subject ? strlen(subject) : 0;
    struct pl_stanza *m = announcement(ev->host, subject, slen, body,
                                       strlen(body));
    int n = announce_here(ev->host, m);
    pl_stanza_unref(m);
    /* The other nodes of a cluster, each to its own users (doc/cluster.md):
     * "<subject length>\n<subject><body>". */
    struct pl_buf t = {0};
    pl_buf_printf(&t, "%zu\n", slen);
    pl_buf_append(&t, subject ? subject : "", slen);
    pl_buf_append(&t, body, strlen(body));
    struct pl_str x = pl_buf_str(&t);
    struct pl_data_change c = {"admin", ev->host->domain, x.p, x.len};
    struct pl_event e2 =
        {"user/data-changed", ev->host, NULL, NULL, NULL, NULL, &c};
    pl_hook_fire(&e2);
    pl_buf_reset(&t);
    pl_log_info("mod_admin", "announcement to %d session(s) of %s", n,
                ev->host->domain);
    answer(ar->cid, json_pack("{s:b, s:i}", "ok", 1, "delivered", n));
    return PL_HANDLED;
}

/* Another node's announcement: to this node's users. */
static int on_elsewhere(struct pl_event *ev, void *state)
{
    (void)state;
    const struct pl_data_change *c = ev->data;
    if (!c || strcmp(c->module, "admin") != 0 ||
        strcmp(c->bare, ev->host->domain) != 0)
        return PL_PASS;
    const char *nl = memchr(c->payload, '\n', c->len);
    char *end = NULL;
    size_t slen = nl ? strtoul(c->payload, &end, 10) : 0;
    if (!nl || end != nl || slen > c->len - (size_t)(nl + 1 - c->payload))
        return PL_PASS;
    const char *subject = nl + 1;
    const char *body = subject + slen;
    size_t blen = c->len - (size_t)(body - c->payload);
    struct pl_stanza *m = announcement(ev->host, subject, slen, body, blen);
    int n = announce_here(ev->host, m);
    pl_stanza_unref(m);
    pl_log_info("mod_admin",
                "announcement from another node to %d "
                "session(s) of %s",
                n, ev->host->domain);
    return PL_PASS;
}

static const struct pl_hook_def hooks[] = {
    {"admin/sessions", on_sessions, 0},
    {"admin/kick", on_kick, 0},
    {"admin/announce", on_announce, 0},
    {"user/data-changed-elsewhere", on_elsewhere, 0},
    {0},
};

const struct pl_module pl_mod_admin = {
    .abi = PL_MODULE_ABI,
    .default_on = 1,
    .name = "admin",
    .summary = "admin socket operations on online users: sessions, kick, "
               "announce",
    .hooks = hooks,
};
