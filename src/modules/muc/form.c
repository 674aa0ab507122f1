/*
 * form.c - room configuration and information forms; see form.h.
 */
#include "form.h"

#include <stdlib.h>

#define RC "muc#roomconfig_"

struct pl_node *pl__muc_form_new(struct pl_stanza *st, struct pl_node *parent,
                                 const char *type, const char *form_type)
{
    struct pl_node *x = pl_node_add_child(st, parent, "x", NS_DATA);
    pl_node_set_attr(st, x, "type", type);
    if (form_type)
        pl__muc_form_field(st, x, "FORM_TYPE", "hidden", NULL, form_type);
    return x;
}

void pl__muc_form_value(struct pl_stanza *st, struct pl_node *field,
                        const char *value)
{
    struct pl_node *v = pl_node_add_child(st, field, "value", NS_DATA);
    pl_node_add_text(st, v, value, strlen(value));
}

struct pl_node *pl__muc_form_field(struct pl_stanza *st, struct pl_node *form,
                                   const char *var, const char *type,
                                   const char *label, const char *value)
{
    struct pl_node *f = pl_node_add_child(st, form, "field", NS_DATA);
    pl_node_set_attr(st, f, "var", var);
    if (type)
        pl_node_set_attr(st, f, "type", type);
    if (label)
        pl_node_set_attr(st, f, "label", label);
    if (value)
        pl__muc_form_value(st, f, value);
    return f;
}

void pl__muc_form_option(struct pl_stanza *st, struct pl_node *field,
                         const char *label, const char *value)
{
    struct pl_node *o = pl_node_add_child(st, field, "option", NS_DATA);
    if (label)
        pl_node_set_attr(st, o, "label", label);
    pl__muc_form_value(st, o, value);
}

struct pl_node *pl__muc_form_get(const struct pl_node *form, const char *var)
{
    for (struct pl_node *f = pl_node_first_elem(form); f;
         f = pl_node_next_elem(f)) {
        const char *v = pl_node_attr(f, "var");
        if (strcmp(f->name, "field") == 0 && v && strcmp(v, var) == 0)
            return f;
    }
    return NULL;
}

const char *pl__muc_form_text(struct pl_stanza *st, const struct pl_node *form,
                              const char *var)
{
    struct pl_node *f = pl__muc_form_get(form, var);
    if (!f)
        return NULL;
    struct pl_node *v = pl_node_child(f, "value", NULL);
    return v ? pl_node_text(st, v, NULL) : "";
}

const char *pl__muc_form_type(struct pl_stanza *st, const struct pl_node *form)
{
    return pl__muc_form_text(st, form, "FORM_TYPE");
}

static const char *b(int v)
{
    return v ? "1" : "0";
}

static const char *const pm_values[] = {"anyone", "participants", "moderators",
                                        "none"};

static void roles_field(struct pl_stanza *st, struct pl_node *x,
                        const char *var, const char *label, unsigned bits)
{
    struct pl_node *f = pl__muc_form_field(st, x, var, "list-multi", label,
                                           NULL);
    for (int r = MUC_ROLE_MODERATOR; r >= MUC_ROLE_VISITOR; r--)
        pl__muc_form_option(st, f, NULL, pl__muc_role_name(r));
    for (int r = MUC_ROLE_MODERATOR; r >= MUC_ROLE_VISITOR; r--)
        if (bits & MUC_ROLEBIT(r))
            pl__muc_form_value(st, f, pl__muc_role_name(r));
}

struct jids_ud {
    struct pl_stanza *st;
    struct pl_node *field;
    int aff;
};

static void add_jid_of(const char *key, void *value, void *ud)
{
    struct jids_ud *u = ud;
    if (((struct muc_aff_entry *)value)->aff == u->aff)
        pl__muc_form_value(u->st, u->field, key);
}

void pl__muc_config_form(struct pl_stanza *st, struct pl_node *parent,
                         const struct muc_room *r, long service_max_users)
{
    const struct muc_config *c = &r->cfg;
    struct pl_node *x = pl__muc_form_new(st, parent, "form",
                                         "http://jabber.org/protocol/"
                                         "muc#roomconfig");
    struct pl_node *t = pl_node_add_child(st, x, "title", NS_DATA);
    const char *title = "Room configuration";
    pl_node_add_text(st, t, title, strlen(title));
    pl__muc_form_field(st, x, RC "roomname", "text-single", "Name",
                       c->name ? c->name : "");
    pl__muc_form_field(st, x, RC "roomdesc", "text-single", "Description",
                       c->desc ? c->desc : "");
    pl__muc_form_field(st, x, RC "lang", "text-single", "Language",
                       c->lang ? c->lang : "");
    pl__muc_form_field(st, x, RC "persistentroom", "boolean",
                       "Persistent (kept when empty and across restarts)",
                       b(c->persistent));
    pl__muc_form_field(st, x, RC "publicroom", "boolean",
                       "Listed in the room directory", b(c->public_room));
    pl__muc_form_field(st, x, RC "membersonly", "boolean", "Members only",
                       b(c->members_only));
    pl__muc_form_field(st, x, RC "moderatedroom", "boolean",
                       "Moderated (visitors need voice to speak)",
                       b(c->moderated));
    pl__muc_form_field(st, x, RC "passwordprotectedroom", "boolean",
                       "Password required to enter", b(c->password_protected));
    pl__muc_form_field(st, x, RC "roomsecret", "text-private", "Password",
                       c->password ? c->password : "");
    struct pl_node *f = pl__muc_form_field(st, x, RC "whois", "list-single",
                                           "Who may discover real JIDs",
                                           c->whois_anyone ? "anyone"
                                                           : "moderators");
    pl__muc_form_option(st, f, "Moderators only", "moderators");
    pl__muc_form_option(st, f, "Anyone", "anyone");
    pl__muc_form_field(st, x, RC "changesubject", "boolean",
                       "Participants may change the subject",
                       b(c->change_subject));
    pl__muc_form_field(st, x, RC "allowinvites", "boolean",
                       "Participants may invite others", b(c->allow_invites));
    f = pl__muc_form_field(st, x, RC "allowpm", "list-single",
                           "Who may send private messages",
                           pm_values[c->allow_pm]);
    pl__muc_form_option(st, f, "Anyone", "anyone");
    pl__muc_form_option(st, f, "Anyone with voice", "participants");
    pl__muc_form_option(st, f, "Moderators only", "moderators");
    pl__muc_form_option(st, f, "Nobody", "none");
    char num[32];
    snprintf(num, sizeof(num), "%ld",
             c->max_users ? c->max_users : service_max_users);
    f = pl__muc_form_field(st, x, RC "maxusers", "list-single",
                           "Maximum number of occupants", num);
    static const long choices[] = {10,  20,   30,    50,    100,
                                   500, 1000, 10000, 100000};
    for (size_t i = 0; i < sizeof(choices) / sizeof(*choices); i++) {
        if (service_max_users && choices[i] > service_max_users)
            break;
        char v[32];
        snprintf(v, sizeof(v), "%ld", choices[i]);
        pl__muc_form_option(st, f, NULL, v);
    }
    roles_field(st, x, RC "presencebroadcast",
                "Roles whose presence is broadcast", c->presence_bc);
    roles_field(st, x, RC "getmemberlist",
                "Roles that may retrieve the member list", c->member_list);
    pl__muc_form_field(st, x, RC "enablelogging", "boolean",
                       "Archive the room's messages (XEP-0313)", b(c->logging));
    snprintf(num, sizeof(num), "%ld", c->max_history);
    pl__muc_form_field(st, x, "muc#maxhistoryfetch", "text-single",
                       "Messages of history sent on entering", num);
    pl__muc_form_field(st, x, RC "allowvoicerequests", "boolean",
                       "Visitors may request voice", b(c->voice_requests));
    pl__muc_form_field(st, x, RC "pubsub", "text-single",
                       "Associated publish-subscribe node",
                       c->pubsub ? c->pubsub : "");
    struct jids_ud u = {st, NULL, MUC_AFF_ADMIN};
    u.field = pl__muc_form_field(st, x, RC "roomadmins", "jid-multi",
                                 "Room admins", NULL);
    pl_map_each(&r->affs, add_jid_of, &u);
    u.aff = MUC_AFF_OWNER;
    u.field = pl__muc_form_field(st, x, RC "roomowners", "jid-multi",
                                 "Room owners", NULL);
    pl_map_each(&r->affs, add_jid_of, &u);
}

/* Boolean per XEP-0004 §3.3: "0", "1", "false", "true". */
static int parse_bool(const char *s, int *out)
{
    if (!s)
        return 0;
    if (strcmp(s, "1") == 0 || strcmp(s, "true") == 0)
        *out = 1;
    else if (strcmp(s, "0") == 0 || strcmp(s, "false") == 0 || !*s)
        *out = 0;
    else
        return -1;
    return 1;
}

static int parse_long(const char *s, long lo, long hi, long *out)
{
    if (!s)
        return 0;
    if (strcmp(s, "none") == 0 || !*s) {
        *out = 0;
        return 1;
    }
    char *end;
    long v = strtol(s, &end, 10);
    if (*end || v < lo || v > hi)
        return -1;
    *out = v;
    return 1;
}

static int parse_roles(struct pl_stanza *st, const struct pl_node *form,
                       const char *var, unsigned *out)
{
    struct pl_node *f = pl__muc_form_get(form, var);
    if (!f)
        return 0;
    unsigned bits = 0;
    for (struct pl_node *v = pl_node_first_elem(f); v;
         v = pl_node_next_elem(v)) {
        if (strcmp(v->name, "value") != 0)
            continue;
        int r = pl__muc_role_parse(pl_node_text(st, v, NULL));
        if (r <= MUC_ROLE_NONE)
            return -1;
        bits |= MUC_ROLEBIT(r);
    }
    *out = bits;
    return 1;
}

/* Collects the JIDs of a jid-multi field, normalized; NULL-ended array
 * (owned) or NULL when the field is absent; *bad when one is not a
 * JID. */
static char **parse_jids(struct pl_stanza *st, const struct pl_node *form,
                         const char *var, int *bad)
{
    struct pl_node *f = pl__muc_form_get(form, var);
    if (!f)
        return NULL;
    size_t n = 0;
    char **v = pl_calloc(pl_node_count_elems(f) + 1, sizeof(*v));
    for (struct pl_node *e = pl_node_first_elem(f); e;
         e = pl_node_next_elem(e)) {
        if (strcmp(e->name, "value") != 0)
            continue;
        const char *t = pl_node_text(st, e, NULL);
        if (!*t)
            continue;
        struct pl_jid *j;
        if (pl_jid_parse(pl_str_c(t), &j) != PL_OK) {
            *bad = 1;
            continue;
        }
        v[n++] = pl_strdup(j->bare);
        pl_jid_free(j);
    }
    return v;
}

static void free_jids(char **v)
{
    for (size_t i = 0; v && v[i]; i++)
        pl_free(v[i]);
    pl_free(v);
}

static int in_list(char **v, const char *s)
{
    for (size_t i = 0; v && v[i]; i++)
        if (strcmp(v[i], s) == 0)
            return 1;
    return 0;
}

struct demote {
    char **keep; /* JIDs listed in the field */
    int aff;     /* affiliation the field lists */
    char **drop; /* collected: entries of aff not listed */
    size_t n;
};

static void collect_demote(const char *key, void *value, void *ud)
{
    struct demote *d = ud;
    if (((struct muc_aff_entry *)value)->aff == d->aff &&
        !in_list(d->keep, key)) {
        d->drop = pl_realloc(d->drop, (d->n + 1) * sizeof(*d->drop));
        d->drop[d->n++] = pl_strdup(key);
    }
}

/* Makes the set of JIDs with affiliation aff equal to list. */
static void apply_aff_list(struct muc_room *r, char **list, int aff)
{
    struct demote d = {list, aff, NULL, 0};
    pl_map_each(&r->affs, collect_demote, &d);
    for (size_t i = 0; i < d.n; i++) {
        pl__muc_aff_set(r, d.drop[i], MUC_AFF_NONE, NULL);
        pl_free(d.drop[i]);
    }
    pl_free(d.drop);
    for (size_t i = 0; list[i]; i++)
        pl__muc_aff_set(r, list[i], aff, NULL);
}

int pl__muc_config_submit(struct muc_room *r, struct pl_stanza *st,
                          const struct pl_node *form, long service_max_users,
                          long service_max_history, const char **why)
{
    struct muc_config c;
    pl__muc_config_copy(&c, &r->cfg);
    int rc = PL_ENOT_ACCEPTABLE;
    const char *s;
    int bad = 0;
    char **admins = NULL, **owners = NULL;
#define BOOL(var, field)                                                       \
    if (parse_bool(pl__muc_form_text(st, form, RC var), &c.field) < 0) {       \
        *why = "Not a boolean: " RC var;                                       \
        goto out;                                                              \
    }
    BOOL("persistentroom", persistent)
    BOOL("publicroom", public_room)
    BOOL("membersonly", members_only)
    BOOL("moderatedroom", moderated)
    BOOL("passwordprotectedroom", password_protected)
    BOOL("changesubject", change_subject)
    BOOL("allowinvites", allow_invites)
    BOOL("enablelogging", logging)
    BOOL("allowvoicerequests", voice_requests)
#undef BOOL
    if ((s = pl__muc_form_text(st, form, RC "roomname")))
        pl__muc_set_str(&c.name, s);
    if ((s = pl__muc_form_text(st, form, RC "roomdesc")))
        pl__muc_set_str(&c.desc, s);
    if ((s = pl__muc_form_text(st, form, RC "lang")))
        pl__muc_set_str(&c.lang, s);
    if ((s = pl__muc_form_text(st, form, RC "roomsecret")))
        pl__muc_set_str(&c.password, s);
    if ((s = pl__muc_form_text(st, form, RC "pubsub")))
        pl__muc_set_str(&c.pubsub, s);
    if ((s = pl__muc_form_text(st, form, RC "whois"))) {
        if (strcmp(s, "anyone") == 0)
            c.whois_anyone = 1;
        else if (strcmp(s, "moderators") == 0)
            c.whois_anyone = 0;
        else {
            *why = "whois must be 'moderators' or 'anyone'";
            goto out;
        }
    }
    if ((s = pl__muc_form_text(st, form, RC "allowpm"))) {
        int i = 0;
        while (i < 4 && strcmp(s, pm_values[i]) != 0)
            i++;
        if (i == 4) {
            *why = "allowpm must be anyone, participants, moderators or "
                   "none";
            goto out;
        }
        c.allow_pm = i;
    }
    if (parse_long(pl__muc_form_text(st, form, RC "maxusers"), 0,
                   service_max_users ? service_max_users : 1000000000L,
                   &c.max_users) < 0) {
        *why = "maxusers is above the service's limit";
        goto out;
    }
    if (parse_long(pl__muc_form_text(st, form, "muc#maxhistoryfetch"), 0,
                   service_max_history, &c.max_history) < 0) {
        *why = "maxhistoryfetch is above the service's limit";
        goto out;
    }
    if (parse_roles(st, form, RC "presencebroadcast", &c.presence_bc) < 0 ||
        parse_roles(st, form, RC "getmemberlist", &c.member_list) < 0) {
        *why = "Unknown role in a role list";
        goto out;
    }
    if (c.password_protected && !c.password) {
        *why = "A password-protected room needs a password";
        goto out;
    }
    admins = parse_jids(st, form, RC "roomadmins", &bad);
    owners = parse_jids(st, form, RC "roomowners", &bad);
    if (bad) {
        *why = "Not a JID in roomadmins or roomowners";
        goto out;
    }
    if (owners && !owners[0]) {
        rc = PL_ECONFLICT; /* §10.9: a room keeps at least one owner */
        *why = "A room needs at least one owner";
        goto out;
    }
    /* Everything checked: apply. */
    if (owners)
        apply_aff_list(r, owners, MUC_AFF_OWNER);
    if (admins) {
        for (size_t i = 0; admins[i]; i++)
            if (in_list(owners, admins[i]))
                admins[i][0] = '\0';
        size_t k = 0;
        for (size_t i = 0; admins[i]; i++)
            if (admins[i][0])
                admins[k++] = admins[i];
            else
                pl_free(admins[i]);
        admins[k] = NULL;
        apply_aff_list(r, admins, MUC_AFF_ADMIN);
    }
    pl__muc_config_release(&r->cfg);
    r->cfg = c;
    memset(&c, 0, sizeof(c));
    rc = PL_OK;
out:
    free_jids(admins);
    free_jids(owners);
    pl__muc_config_release(&c);
    return rc;
}

void pl__muc_roominfo_form(struct pl_stanza *st, struct pl_node *parent,
                           const struct muc_room *r)
{
    struct pl_node *x = pl__muc_form_new(st, parent, "result",
                                         "http://jabber.org/protocol/"
                                         "muc#roominfo");
    char num[32];
    snprintf(num, sizeof(num), "%zu", r->nocc);
    pl__muc_form_field(st, x, "muc#roominfo_occupants", NULL,
                       "Number of occupants", num);
    pl__muc_form_field(st, x, "muc#roominfo_description", NULL, "Description",
                       r->cfg.desc ? r->cfg.desc : "");
    pl__muc_form_field(st, x, "muc#roominfo_subject", NULL, "Subject",
                       r->subject ? r->subject : "");
    pl__muc_form_field(st, x, "muc#roominfo_subjectmod", "boolean",
                       "Participants may change the subject",
                       b(r->cfg.change_subject));
    if (r->cfg.lang)
        pl__muc_form_field(st, x, "muc#roominfo_lang", NULL, "Language",
                           r->cfg.lang);
    if (r->cfg.pubsub)
        pl__muc_form_field(st, x, "muc#roominfo_pubsub", NULL,
                           "Publish-subscribe node", r->cfg.pubsub);
    snprintf(num, sizeof(num), "%ld", r->cfg.max_history);
    pl__muc_form_field(st, x, "muc#maxhistoryfetch", NULL,
                       "Messages of history sent on entering", num);
    pl__muc_form_field(st, x, RC "roomname", NULL, "Name",
                       r->cfg.name ? r->cfg.name : "");
    if (r->avatar_hash[0])
        pl__muc_form_field(st, x, "muc#roominfo_avatarhash", "text-multi",
                           "Avatar hash", r->avatar_hash);
    struct jids_ud u = {st, NULL, MUC_AFF_OWNER};
    if (r->cfg.whois_anyone) {
        u.field = pl__muc_form_field(st, x, "muc#roominfo_contactjid",
                                     "jid-multi", "Contact addresses", NULL);
        pl_map_each(&r->affs, add_jid_of, &u);
    }
}
