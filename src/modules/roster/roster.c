/*
 * roster.c - roster items, their encoding and the RFC 6121 subscription
 * state machine; see roster.h.
 */
#include "roster.h"

#include <stdlib.h>

static const char *const sub_names[] = {"none", "to", "from", "both"};

const char *pl_roster_sub_name(int sub)
{
    return sub >= 0 && sub <= 3 ? sub_names[sub] : "none";
}

/* Adding or removing the "to" and "from" halves of a subscription. */
static int add_to(int s)
{
    return s == PL_SUB_NONE ? PL_SUB_TO : s == PL_SUB_FROM ? PL_SUB_BOTH : s;
}
static int add_from(int s)
{
    return s == PL_SUB_NONE ? PL_SUB_FROM : s == PL_SUB_TO ? PL_SUB_BOTH : s;
}
static int del_to(int s)
{
    return s == PL_SUB_TO ? PL_SUB_NONE : s == PL_SUB_BOTH ? PL_SUB_FROM : s;
}
static int del_from(int s)
{
    return s == PL_SUB_FROM ? PL_SUB_NONE : s == PL_SUB_BOTH ? PL_SUB_TO : s;
}

int pl_roster_outbound(struct pl_roster_item *it, const char *type)
{
    if (strcmp(type, "subscribe") == 0) {
        /* §3.1.2: the user asks; the item shows ask='subscribe'. */
        int r = PL_R_ROUTE;
        if (!pl_roster_has_to(it) && (!it->ask || it->hidden)) {
            it->ask = 1;
            it->hidden = 0;
            r |= PL_R_CHANGED;
        }
        return r;
    }
    if (strcmp(type, "subscribed") == 0) {
        if (it->pending_in) {
            /* §3.1.5: approving the contact's request. */
            it->pending_in = 0;
            it->sub = add_from(it->sub);
            it->approved = 0;
            it->hidden = 0;
            return PL_R_CHANGED | PL_R_ROUTE | PL_R_SEND_PRESENCE |
                   PL_R_DROP_PENDING;
        }
        if (pl_roster_has_from(it))
            return 0; /* already subscribed: nothing to route */
        if (!it->approved) {
            /* §3.4: pre-approval, not routed. */
            it->approved = 1;
            return PL_R_CHANGED;
        }
        return 0;
    }
    if (strcmp(type, "unsubscribe") == 0) {
        /* §3.3.2: the user cancels their subscription to the contact. */
        int r = PL_R_ROUTE;
        if (pl_roster_has_to(it) || it->ask) {
            it->sub = del_to(it->sub);
            it->ask = 0;
            r |= PL_R_CHANGED;
        }
        return r;
    }
    if (strcmp(type, "unsubscribed") == 0) {
        /* §3.2.2: cancel or deny the contact's subscription. */
        int r = PL_R_ROUTE;
        if (pl_roster_has_from(it) || it->pending_in || it->approved) {
            if (pl_roster_has_from(it))
                r |= PL_R_SEND_UNAVAIL;
            it->sub = del_from(it->sub);
            it->pending_in = 0;
            it->approved = 0;
            r |= PL_R_CHANGED | PL_R_DROP_PENDING;
        }
        return r;
    }
    return 0;
}

int pl_roster_inbound(struct pl_roster_item *it, const char *type)
{
    if (strcmp(type, "subscribe") == 0) {
        if (pl_roster_has_from(it))
            return PL_R_AUTOREPLY; /* §3.1.3: already subscribed */
        if (it->approved) {
            /* §3.4: pre-approved: accept for the user. */
            it->approved = 0;
            it->sub = add_from(it->sub);
            it->hidden = 0;
            return PL_R_CHANGED | PL_R_AUTOREPLY | PL_R_SEND_PRESENCE;
        }
        int r = PL_R_DELIVER | PL_R_KEEP_PENDING;
        if (!it->pending_in) {
            it->pending_in = 1;
            r |= PL_R_CHANGED;
        }
        return r;
    }
    if (strcmp(type, "subscribed") == 0) {
        /* §3.1.6: only if the user asked. */
        if (!it->ask || pl_roster_has_to(it)) {
            if (it->ask) {
                it->ask = 0;
                return PL_R_CHANGED;
            }
            return 0;
        }
        it->ask = 0;
        it->sub = add_to(it->sub);
        return PL_R_CHANGED | PL_R_DELIVER;
    }
    if (strcmp(type, "unsubscribe") == 0) {
        /* §3.3.3: the contact no longer wants the user's presence. */
        if (pl_roster_has_from(it) || it->pending_in) {
            int r = PL_R_CHANGED | PL_R_DROP_PENDING;
            if (pl_roster_has_from(it))
                r |= PL_R_DELIVER | PL_R_SEND_UNAVAIL;
            it->sub = del_from(it->sub);
            it->pending_in = 0;
            return r;
        }
        return 0;
    }
    if (strcmp(type, "unsubscribed") == 0) {
        /* §3.2.3: the contact denies or cancels the user's subscription. */
        if (pl_roster_has_to(it) || it->ask) {
            it->sub = del_to(it->sub);
            it->ask = 0;
            return PL_R_CHANGED | PL_R_DELIVER;
        }
        return 0;
    }
    return 0;
}

/*
 * Encoding: "<sub><ask><pending><approved><hidden>\t<name>\t<g1>\t<g2>...",
 * with tab, newline and backslash in names escaped; compact and quick to
 * read back on every presence broadcast.
 */
static void put_escaped(struct pl_buf *b, const char *s)
{
    for (; *s; s++) {
        if (*s == '\t' || *s == '\\')
            pl_buf_append(b, "\\", 1);
        pl_buf_append(b, s, 1);
    }
}

void pl_roster_item_encode(const struct pl_roster_item *it, struct pl_buf *out)
{
    char flags[6] = {(char)('0' + it->sub),      it->ask ? '1' : '0',
                     it->pending_in ? '1' : '0', it->approved ? '1' : '0',
                     it->hidden ? '1' : '0',     '\0'};
    pl_buf_append_str(out, flags);
    pl_buf_append(out, "\t", 1);
    if (it->name)
        put_escaped(out, it->name);
    for (int i = 0; i < it->ngroups; i++) {
        pl_buf_append(out, "\t", 1);
        put_escaped(out, it->groups[i]);
    }
}

/* Reads one tab-separated, backslash-escaped field. */
static const char *field(const char *p, const char *end, char **out)
{
    struct pl_buf b = {0};
    while (p < end && *p != '\t') {
        if (*p == '\\' && p + 1 < end)
            p++;
        pl_buf_append(&b, p, 1);
        p++;
    }
    *out = pl_strdup(b.len ? pl_buf_cstr(&b) : "");
    pl_buf_reset(&b);
    return p < end ? p + 1 : NULL;
}

int pl_roster_item_decode(const char *jid, const void *data, size_t len,
                          struct pl_roster_item *out)
{
    const char *p = data, *end = p + len;
    memset(out, 0, sizeof(*out));
    if (len < 6 || p[0] < '0' || p[0] > '3' || p[5] != '\t')
        return PL_EINVAL;
    out->sub = p[0] - '0';
    out->ask = p[1] == '1';
    out->pending_in = p[2] == '1';
    out->approved = p[3] == '1';
    out->hidden = p[4] == '1';
    out->jid = pl_strdup(jid);
    p += 6;
    char *name;
    p = field(p, end, &name);
    if (*name)
        out->name = name;
    else
        pl_free(name);
    while (p) {
        char *g;
        p = field(p, end, &g);
        out->groups = pl_realloc(out->groups,
                                 (size_t)(out->ngroups + 1) * sizeof(char *));
        out->groups[out->ngroups++] = g;
    }
    return PL_OK;
}

void pl_roster_item_free(struct pl_roster_item *it)
{
    pl_free(it->jid);
    pl_free(it->name);
    for (int i = 0; i < it->ngroups; i++)
        pl_free(it->groups[i]);
    pl_free(it->groups);
    memset(it, 0, sizeof(*it));
}

void pl_roster_item_copy(struct pl_roster_item *out,
                         const struct pl_roster_item *it)
{
    *out = *it;
    out->jid = it->jid ? pl_strdup(it->jid) : NULL;
    out->name = it->name ? pl_strdup(it->name) : NULL;
    out->groups = it->ngroups ? pl_calloc((size_t)it->ngroups, sizeof(char *))
                              : NULL;
    for (int i = 0; i < it->ngroups; i++)
        out->groups[i] = pl_strdup(it->groups[i]);
}

void pl_roster_item_xml(struct pl_stanza *st, struct pl_node *query,
                        const struct pl_roster_item *it)
{
    struct pl_node *n = pl_node_add_child(st, query, "item", PL_NS_ROSTER);
    pl_node_set_attr(st, n, "jid", it->jid);
    if (it->name)
        pl_node_set_attr(st, n, "name", it->name);
    pl_node_set_attr(st, n, "subscription", pl_roster_sub_name(it->sub));
    if (it->ask)
        pl_node_set_attr(st, n, "ask", "subscribe");
    if (it->approved)
        pl_node_set_attr(st, n, "approved", "true");
    for (int i = 0; i < it->ngroups; i++) {
        struct pl_node *g = pl_node_add_child(st, n, "group", PL_NS_ROSTER);
        pl_node_add_text(st, g, it->groups[i], strlen(it->groups[i]));
    }
}

void pl_roster_free(struct pl_roster *r)
{
    for (int i = 0; i < r->n; i++)
        pl_roster_item_free(&r->v[i]);
    pl_free(r->v);
    memset(r, 0, sizeof(*r));
}

int pl_roster_load_item(const struct pl_storage_driver *d, void *db,
                        const char *host, const char *user, const char *contact,
                        struct pl_roster_item *out)
{
    struct pl_buf b = {0};
    int rc = d->kv_get(db, host, user, "roster", contact, &b);
    if (rc == PL_OK)
        rc = pl_roster_item_decode(contact, b.data + b.off, b.len, out);
    pl_buf_reset(&b);
    return rc;
}

static int bump(const struct pl_storage_driver *d, void *db, const char *host,
                const char *user, long *ver)
{
    struct pl_buf b = {0};
    long v = 0;
    if (d->kv_get(db, host, user, "roster_meta", "ver", &b) == PL_OK)
        v = strtol(pl_buf_cstr(&b), NULL, 10);
    pl_buf_reset(&b);
    v++;
    char s[24];
    int n = snprintf(s, sizeof(s), "%ld", v);
    *ver = v;
    return d->kv_set(db, host, user, "roster_meta", "ver", s, (size_t)n);
}

int pl_roster_save_item(const struct pl_storage_driver *d, void *db,
                        const char *host, const char *user,
                        const struct pl_roster_item *it, long *ver)
{
    int rc;
    if (it->hidden && !it->pending_in && !it->approved && !it->ask &&
        it->sub == PL_SUB_NONE) {
        rc = d->kv_set(db, host, user, "roster", it->jid, NULL, 0);
    } else {
        struct pl_buf b = {0};
        pl_roster_item_encode(it, &b);
        rc = d->kv_set(db, host, user, "roster", it->jid, b.data + b.off,
                       b.len);
        pl_buf_reset(&b);
    }
    return rc == PL_OK ? bump(d, db, host, user, ver) : rc;
}

int pl_roster_delete_item(const struct pl_storage_driver *d, void *db,
                          const char *host, const char *user,
                          const char *contact, long *ver)
{
    int rc = d->kv_set(db, host, user, "roster", contact, NULL, 0);
    if (rc == PL_OK)
        rc = d->kv_set(db, host, user, "roster_pending", contact, NULL, 0);
    return rc == PL_OK ? bump(d, db, host, user, ver) : rc;
}

static int collect(const char *key, const void *data, size_t len, void *ud)
{
    struct pl_roster *r = ud;
    struct pl_roster_item it;
    if (pl_roster_item_decode(key, data, len, &it) != PL_OK)
        return 0; /* skip a corrupt document rather than lose the rest */
    r->v = pl_realloc(r->v, (size_t)(r->n + 1) * sizeof(*r->v));
    r->v[r->n++] = it;
    return 0;
}

int pl_roster_load(const struct pl_storage_driver *d, void *db,
                   const char *host, const char *user, struct pl_roster *out)
{
    memset(out, 0, sizeof(*out));
    int rc = d->kv_list(db, host, user, "roster", collect, out);
    struct pl_buf b = {0};
    if (rc == PL_OK &&
        d->kv_get(db, host, user, "roster_meta", "ver", &b) == PL_OK)
        out->ver = strtol(pl_buf_cstr(&b), NULL, 10);
    pl_buf_reset(&b);
    return rc;
}

void pl_roster_push(const char *user_bare, const struct pl_roster_item *it,
                    int removed, long ver)
{
    for (struct pl_session *s = pl_session_first(user_bare); s;
         s = s->next_res) {
        if (!pl_session_is_interested(s))
            continue;
        struct pl_stanza *st = pl_stanza_new("iq", PL_NS_CLIENT);
        char id[32], v[24];
        snprintf(id, sizeof(id), "push%ld", ver);
        snprintf(v, sizeof(v), "%ld", ver);
        pl_stanza_set_attr(st, "type", "set");
        pl_stanza_set_attr(st, "id", id);
        pl_stanza_set_attr(st, "to", s->jid->full);
        struct pl_node *q = pl_node_add_child(st, pl_stanza_root(st), "query",
                                              PL_NS_ROSTER);
        pl_node_set_attr(st, q, "ver", v);
        if (removed) {
            struct pl_node *n = pl_node_add_child(st, q, "item", PL_NS_ROSTER);
            pl_node_set_attr(st, n, "jid", it->jid);
            pl_node_set_attr(st, n, "subscription", "remove");
        } else {
            pl_roster_item_xml(st, q, it);
        }
        pl_route_to_session(s, st);
        pl_stanza_unref(st);
    }
}
