/*
 * store.c - serialization of persistent rooms; see store.h.
 */
#include "store.h"

#include <stdlib.h>

#define NS_STORE "urn:parley:muc:0"

static void set_str(struct pl_stanza *st, struct pl_node *el, const char *name,
                    const char *v)
{
    if (v)
        pl_node_set_attr(st, el, name, v);
}

static void set_long(struct pl_stanza *st, struct pl_node *el, const char *name,
                     long v)
{
    char num[32];
    snprintf(num, sizeof(num), "%ld", v);
    pl_node_set_attr(st, el, name, num);
}

struct aff_ud {
    struct pl_stanza *st;
    struct pl_node *root;
};

static void dump_aff(const char *key, void *value, void *ud)
{
    struct aff_ud *u = ud;
    const struct muc_aff_entry *e = value;
    struct pl_node *a = pl_node_add_child(u->st, u->root, "aff", NS_STORE);
    pl_node_set_attr(u->st, a, "jid", key);
    pl_node_set_attr(u->st, a, "aff", pl__muc_aff_name(e->aff));
    set_str(u->st, a, "nick", e->nick);
    set_str(u->st, a, "reason", e->reason);
}

void pl__muc_store_dump(const struct muc_room *r, struct pl_buf *out)
{
    const struct muc_config *c = &r->cfg;
    struct pl_stanza *st = pl_stanza_new("room", NS_STORE);
    struct pl_node *root = pl_stanza_root(st);
    set_str(st, root, "name", c->name);
    set_str(st, root, "desc", c->desc);
    set_str(st, root, "lang", c->lang);
    set_str(st, root, "password", c->password);
    set_str(st, root, "pubsub", c->pubsub);
    set_long(st, root, "public", c->public_room);
    set_long(st, root, "members-only", c->members_only);
    set_long(st, root, "moderated", c->moderated);
    set_long(st, root, "password-protected", c->password_protected);
    set_long(st, root, "whois-anyone", c->whois_anyone);
    set_long(st, root, "change-subject", c->change_subject);
    set_long(st, root, "allow-invites", c->allow_invites);
    set_long(st, root, "allow-pm", c->allow_pm);
    set_long(st, root, "logging", c->logging);
    set_long(st, root, "voice-requests", c->voice_requests);
    set_long(st, root, "max-users", c->max_users);
    set_long(st, root, "max-history", c->max_history);
    set_long(st, root, "presence-broadcast", (long)c->presence_bc);
    set_long(st, root, "member-list", (long)c->member_list);
    if (r->subject) {
        struct pl_node *s = pl_node_add_child(st, root, "subject", NS_STORE);
        set_str(st, s, "nick", r->subject_nick);
        pl_node_add_text(st, s, r->subject, strlen(r->subject));
    }
    struct aff_ud u = {st, root};
    pl_map_each(&r->affs, dump_aff, &u);
    pl_node_serialize(root, "", PL_NS_CLIENT, out);
    if (r->vcard) {
        /* The vCard is kept as the XML it came in: spliced in before the
         * closing tag. */
        struct pl_str s = pl_buf_str(out);
        if (s.len > 2 && s.p[s.len - 2] == '/') {
            out->len -= 2;
            pl_buf_append_str(out, ">");
        } else {
            out->len -= strlen("</room>");
        }
        pl_buf_append_str(out, r->vcard);
        pl_buf_append_str(out, "</room>");
    }
    pl_stanza_unref(st);
}

static long attr_long(const struct pl_node *el, const char *name, long def)
{
    const char *v = pl_node_attr(el, name);
    return v ? strtol(v, NULL, 10) : def;
}

struct muc_room *pl__muc_store_load(const char *local, const char *service,
                                    const struct muc_config *defaults,
                                    const void *data, size_t len)
{
    struct pl_stanza *st;
    if (pl_xml_parse_fragment(data, len, &st) != PL_OK)
        return NULL;
    struct pl_node *root = pl_stanza_root(st);
    struct muc_room *r = NULL;
    if (strcmp(root->name, "room") != 0 || strcmp(root->ns, NS_STORE) != 0)
        goto out;
    r = pl__muc_room_new(local, service, defaults);
    if (!r)
        goto out;
    struct muc_config *c = &r->cfg;
    pl__muc_set_str(&c->name, pl_node_attr(root, "name"));
    pl__muc_set_str(&c->desc, pl_node_attr(root, "desc"));
    pl__muc_set_str(&c->lang, pl_node_attr(root, "lang"));
    pl__muc_set_str(&c->password, pl_node_attr(root, "password"));
    pl__muc_set_str(&c->pubsub, pl_node_attr(root, "pubsub"));
    c->persistent = 1;
    c->public_room = (int)attr_long(root, "public", c->public_room);
    c->members_only = (int)attr_long(root, "members-only", 0);
    c->moderated = (int)attr_long(root, "moderated", 0);
    c->password_protected = (int)attr_long(root, "password-protected", 0);
    c->whois_anyone = (int)attr_long(root, "whois-anyone", 0);
    c->change_subject = (int)attr_long(root, "change-subject", 0);
    c->allow_invites = (int)attr_long(root, "allow-invites", 0);
    c->allow_pm = (int)attr_long(root, "allow-pm", 0);
    if (c->allow_pm < 0 || c->allow_pm > MUC_PM_NONE)
        c->allow_pm = MUC_PM_ANYONE;
    c->logging = (int)attr_long(root, "logging", 0);
    c->voice_requests = (int)attr_long(root, "voice-requests", 1);
    c->max_users = attr_long(root, "max-users", 0);
    c->max_history = attr_long(root, "max-history", c->max_history);
    c->presence_bc = (unsigned)attr_long(root, "presence-broadcast",
                                         MUC_ROLES_ALL);
    c->member_list = (unsigned)attr_long(root, "member-list", MUC_ROLES_ALL);
    for (struct pl_node *e = pl_node_first_elem(root); e;
         e = pl_node_next_elem(e)) {
        if (strcmp(e->name, "subject") == 0) {
            pl__muc_set_str(&r->subject, pl_node_text(st, e, NULL));
            pl__muc_set_str(&r->subject_nick, pl_node_attr(e, "nick"));
        } else if (strcmp(e->name, "aff") == 0) {
            const char *jid = pl_node_attr(e, "jid");
            int aff = pl__muc_aff_parse(pl_node_attr(e, "aff"));
            if (!jid || aff < 0)
                continue;
            pl__muc_aff_set(r, jid, aff, pl_node_attr(e, "reason"));
            const char *nick = pl_node_attr(e, "nick");
            if (nick)
                pl__muc_nick_register(r, jid, nick);
        } else if (strcmp(e->name, "vCard") == 0) {
            struct pl_buf b = {0};
            pl_node_serialize(e, "", PL_NS_CLIENT, &b);
            r->vcard = pl_strdup(pl_buf_cstr(&b));
            pl_buf_reset(&b);
        }
    }
out:
    pl_stanza_unref(st);
    return r;
}
