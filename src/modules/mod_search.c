/*
 * mod_search.c - XEP-0055 Jabber Search: the server's domain answers
 * directory searches over its users' vCards.
 *
 *   <iq type='get' to='host'><query xmlns='jabber:iq:search'/></iq>
 *       returns instructions, the legacy fields (<first/> <last/> <nick/>
 *       <email/>, only those that are searchable here) and an XEP-0004 form
 *       (FORM_TYPE jabber:iq:search) with every searchable field, "jid"
 *       included (XEP-0055 §3 keeps that one out of the legacy fields).
 *   <iq type='set'> with legacy fields or a submitted form searches: every
 *       non-empty field must match (AND); a field matches when the value
 *       searched for, case-folded, occurs anywhere in the user's value,
 *       case-folded (substring, not prefix).  "jid" matches against the
 *       username, or against the bare JID when the value contains '@'.
 *       A field that is not searchable here matches nothing, so asking
 *       for it reveals nothing.  Results come back in the request's shape:
 *       legacy <item jid='...'><first/>...</item> (all four children, as
 *       the schema wants; those not searchable stay empty), or a form of
 *       type 'result' with <reported/> and <item/>s.  At most max_results
 *       users, in username order; XEP-0055 has no way to say more exist.
 *
 * Privacy: `enabled_fields` says what may be searched and shown (e-mail
 * is off by default); `access` says who may search ("local": accounts of
 * this host; "all": any sender, remote ones included).
 *
 * Data: the "directory" documents mod_vcard writes beside each vCard (see
 * mod_vcard.c for their format), scanned with the driver's kv_scan on the
 * storage thread.  A search by "jid" alone lists accounts instead, so
 * users who never published a vCard can be found by name too.
 *
 * Extending: a new field is a row in `fields` plus its index line in
 * mod_vcard.c.
 */
#include <stdint.h>
#include <stdlib.h>
#include <unicase.h>
#include <uninorm.h>

#include "core/modapi.h"

#define NS_SEARCH "jabber:iq:search"
#define NS_XDATA "jabber:x:data"
#define STORE_DIR "directory"

enum {
    F_FIRST,
    F_LAST,
    F_NICK,
    F_EMAIL,
    F_JID,
    NFIELDS
};
#define NLEGACY F_JID /* fields with a legacy element: first..email */

static const struct {
    const char *name;  /* form var, legacy element, directory field */
    const char *label; /* form label */
} fields[NFIELDS] = {
    {"first", "Given Name"},    {"last", "Family Name"},
    {"nick", "Nickname"},       {"email", "Email Address"},
    {"jid", "Username or JID"},
};

enum {
    ACCESS_LOCAL = 0,
    ACCESS_ALL
};
static const char *const access_modes[] = {"local", "all", NULL};

struct state {
    struct pl_strlist enabled_fields; /* option: searchable field names */
    int access;                       /* ACCESS_*: who may search */
    long max_results;                 /* users per answer */
    unsigned enabled;                 /* bit per F_* from enabled_fields */
};

static int field_index(const char *name)
{
    for (int i = 0; i < NFIELDS; i++)
        if (strcmp(fields[i].name, name) == 0)
            return i;
    return -1;
}

static int is_enabled(const struct state *s, int f)
{
    return (s->enabled >> f) & 1;
}

/* ------------------------------------------------------------- folding */

/* Case-folded copy of s[0..n) (Unicode default case folding, NFKC, as
 * mod_vcard indexes), trimmed; a new string. */
static char *fold(const char *s, size_t n)
{
    while (n > 0 && (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n')) {
        s++;
        n--;
    }
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' ||
                     s[n - 1] == '\n'))
        n--;
    uint8_t small[256];
    size_t len = sizeof(small);
    uint8_t *r = u8_casefold((const uint8_t *)s, n, NULL, UNINORM_NFKC, small,
                             &len);
    char *out;
    if (!r) {
        out = pl_strndup(s, n);
        for (char *p = out; *p; p++)
            if (*p >= 'A' && *p <= 'Z')
                *p = (char)(*p + 32);
        return out;
    }
    out = pl_strndup((const char *)r, len);
    if (r != small)
        free(r); /* libunistring's own allocation */
    return out;
}

/* ----------------------------------------------------------- the search */

struct hit {
    char *user;           /* localpart */
    char *value[NLEGACY]; /* first value of each field as written, or NULL */
};

struct job {
    struct pl_job base; /* the request, held until the reply; host:
                             * the domain searched */
    int form;           /* answer with a data form */
    unsigned shown;     /* bit per F_* that answers may show */
    char *key[NFIELDS]; /* folded value searched for, or NULL */
    long max;           /* max_results */
    struct hit *hits;   /* found so far */
    long nhits;
    struct pl_buf scratch; /* storage thread: a directory document */
};

static void job_free(struct job *j)
{
    for (long i = 0; i < j->nhits; i++) {
        pl_free(j->hits[i].user);
        for (int f = 0; f < NLEGACY; f++)
            pl_free(j->hits[i].value[f]);
    }
    pl_free(j->hits);
    for (int f = 0; f < NFIELDS; f++)
        pl_free(j->key[f]);
    pl_buf_reset(&j->scratch);
    pl_job_free(j);
}

/* One parsed line of a directory document (spans into the document). */
struct line {
    int field;             /* F_*, or -1 for a field unknown here */
    const char *val, *key; /* as written, folded */
    size_t val_len, key_len;
};

/* Parses the line starting at *p (before end); advances *p past it.
 * Returns 0 at the end of the document or on a malformed line. */
static int next_line(const char **p, const char *end, struct line *l)
{
    while (*p < end) {
        const char *s = *p;
        const char *nl = memchr(s, '\n', (size_t)(end - s));
        const char *e = nl ? nl : end;
        *p = nl ? nl + 1 : end;
        const char *t1 = memchr(s, '\t', (size_t)(e - s));
        const char *t2 = t1 ? memchr(t1 + 1, '\t', (size_t)(e - t1 - 1)) : NULL;
        if (!t2)
            continue; /* malformed: skip it */
        l->field = -1;
        for (int f = 0; f < NLEGACY; f++)
            if ((size_t)(t1 - s) == strlen(fields[f].name) &&
                memcmp(s, fields[f].name, (size_t)(t1 - s)) == 0)
                l->field = f;
        l->val = t1 + 1;
        l->val_len = (size_t)(t2 - t1 - 1);
        l->key = t2 + 1;
        l->key_len = (size_t)(e - t2 - 1);
        return 1;
    }
    return 0;
}

static int jid_matches(const struct job *j, const char *user)
{
    const char *key = j->key[F_JID];
    if (!key)
        return 1;
    if (!strchr(key, '@'))
        return strstr(user, key) != NULL;
    char bare[2100];
    snprintf(bare, sizeof(bare), "%s@%s", user, j->base.host);
    return strstr(bare, key) != NULL;
}

/* Whether the document doc[0..len) matches every vCard field asked for. */
static int doc_matches(const struct job *j, const char *doc, size_t len)
{
    for (int f = 0; f < NLEGACY; f++) {
        if (!j->key[f])
            continue;
        size_t klen = strlen(j->key[f]);
        int found = 0;
        const char *p = doc;
        struct line l;
        while (!found && next_line(&p, doc + len, &l))
            found = l.field == f &&
                    memmem(l.key, l.key_len, j->key[f], klen) != NULL;
        if (!found)
            return 0;
    }
    return 1;
}

/* Appends a hit for user with the values shown from doc[0..len). */
static void add_hit(struct job *j, const char *user, const char *doc,
                    size_t len)
{
    j->hits = pl_realloc(j->hits, (size_t)(j->nhits + 1) * sizeof(*j->hits));
    struct hit *h = &j->hits[j->nhits++];
    memset(h, 0, sizeof(*h));
    h->user = pl_strdup(user);
    const char *p = doc;
    struct line l;
    while (doc && next_line(&p, doc + len, &l))
        if (l.field >= 0 && !h->value[l.field] && ((j->shown >> l.field) & 1))
            h->value[l.field] = pl_strndup(l.val, l.val_len);
}

/* kv_scan callback: one user's directory document. */
static int scan_one(const char *user, const void *data, size_t len, void *ud)
{
    struct job *j = ud;
    if (jid_matches(j, user) && doc_matches(j, data, len))
        add_hit(j, user, data, len);
    return j->nhits >= j->max; /* enough: stop */
}

/* account_list callback, for a search by "jid" alone. */
static void list_one(const char *user, void *ud)
{
    struct job *j = ud;
    if (j->nhits < j->max && jid_matches(j, user))
        add_hit(j, user, NULL, 0);
}

static int search_run(const struct pl_storage_driver *d, void *db, void *arg)
{
    struct job *j = arg;
    int jid_only = 1;
    for (int f = 0; f < NLEGACY; f++)
        if (j->key[f])
            jid_only = 0;
    if (!jid_only)
        return d->kv_scan(db, j->base.host, STORE_DIR, "", scan_one, j);
    int rc = d->account_list(db, j->base.host, list_one, j);
    /* Fill in what the users' vCards show, if they have one. */
    for (long i = 0; rc == PL_OK && i < j->nhits; i++) {
        struct hit *h = &j->hits[i];
        pl_buf_reset(&j->scratch);
        int r = d->kv_get(db, j->base.host, h->user, STORE_DIR, "",
                          &j->scratch);
        if (r == PL_OK) {
            struct pl_str doc = pl_buf_str(&j->scratch);
            const char *p = doc.p;
            struct line l;
            while (p && next_line(&p, doc.p + doc.len, &l))
                if (l.field >= 0 && !h->value[l.field] &&
                    ((j->shown >> l.field) & 1))
                    h->value[l.field] = pl_strndup(l.val, l.val_len);
        } else if (r != PL_ENOT_FOUND) {
            rc = r;
        }
    }
    return rc;
}

/* --------------------------------------------------------- the replies */

static struct pl_node *add_text(struct pl_stanza *st, struct pl_node *parent,
                                const char *name, const char *ns,
                                const char *text)
{
    struct pl_node *n = pl_node_add_child(st, parent, name, ns);
    if (text && *text)
        pl_node_add_text(st, n, text, strlen(text));
    return n;
}

static struct pl_node *add_field(struct pl_stanza *st, struct pl_node *parent,
                                 const char *var, const char *type,
                                 const char *label, const char *value)
{
    struct pl_node *f = pl_node_add_child(st, parent, "field", NS_XDATA);
    if (type)
        pl_node_set_attr(st, f, "type", type);
    pl_node_set_attr(st, f, "var", var);
    if (label)
        pl_node_set_attr(st, f, "label", label);
    if (value)
        add_text(st, f, "value", NS_XDATA, value);
    return f;
}

static struct pl_node *add_form(struct pl_stanza *st, struct pl_node *q,
                                const char *type)
{
    struct pl_node *x = pl_node_add_child(st, q, "x", NS_XDATA);
    pl_node_set_attr(st, x, "type", type);
    add_field(st, x, "FORM_TYPE", "hidden", NULL, NS_SEARCH);
    return x;
}

static void search_done(int rc, void *arg)
{
    struct job *j = arg;
    if (rc != PL_OK) {
        pl_log_error("mod_search", "searching the directory of %s failed: %s",
                     j->base.host, pl_strerror(rc));
        pl_route_error(j->base.st, PL_EINTERNAL_SERVER_ERROR, NULL);
        job_free(j);
        return;
    }
    struct pl_stanza *r = pl_iq_result(j->base.st);
    struct pl_node *q = pl_node_add_child(r, pl_stanza_root(r), "query",
                                          NS_SEARCH);
    if (j->form) {
        struct pl_node *x = add_form(r, q, "result");
        struct pl_node *rep = pl_node_add_child(r, x, "reported", NS_XDATA);
        add_field(r, rep, "jid", "jid-single", "JID", NULL);
        for (int f = 0; f < NLEGACY; f++)
            if ((j->shown >> f) & 1)
                add_field(r, rep, fields[f].name, "text-single",
                          fields[f].label, NULL);
        for (long i = 0; i < j->nhits; i++) {
            struct hit *h = &j->hits[i];
            struct pl_node *it = pl_node_add_child(r, x, "item", NS_XDATA);
            char bare[2100];
            snprintf(bare, sizeof(bare), "%s@%s", h->user, j->base.host);
            add_field(r, it, "jid", NULL, NULL, bare);
            for (int f = 0; f < NLEGACY; f++)
                if ((j->shown >> f) & 1)
                    add_field(r, it, fields[f].name, NULL, NULL,
                              h->value[f] ? h->value[f] : "");
        }
    } else {
        for (long i = 0; i < j->nhits; i++) {
            struct hit *h = &j->hits[i];
            struct pl_node *it = pl_node_add_child(r, q, "item", NS_SEARCH);
            char bare[2100];
            snprintf(bare, sizeof(bare), "%s@%s", h->user, j->base.host);
            pl_node_set_attr(r, it, "jid", bare);
            for (int f = 0; f < NLEGACY; f++)
                add_text(r, it, fields[f].name, NS_SEARCH, h->value[f]);
        }
    }
    pl_route_reply(j->base.st, r);
    pl_stanza_unref(r);
    job_free(j);
}

/* ------------------------------------------------------------ handlers */

static int may_search(const struct state *s, const struct pl_event *ev)
{
    if (!ev->from)
        return 0;
    if (s->access == ACCESS_ALL)
        return 1;
    return ev->from->local && strcmp(ev->from->domain, ev->host->domain) == 0;
}

static int on_get(struct pl_event *ev, void *state)
{
    struct state *s = state;
    if (!may_search(s, ev))
        return PL_EFORBIDDEN;
    struct pl_stanza *r = pl_iq_result(ev->stanza);
    struct pl_node *q = pl_node_add_child(r, pl_stanza_root(r), "query",
                                          NS_SEARCH);
    struct pl_buf text = {0};
    pl_buf_printf(&text,
                  "Fill in one or more fields to search for users of %s. "
                  "Letter case does not matter and any part of a value "
                  "matches; at most %ld users are listed.",
                  ev->host->domain, s->max_results);
    add_text(r, q, "instructions", NS_SEARCH, pl_buf_cstr(&text));
    for (int f = 0; f < NLEGACY; f++)
        if (is_enabled(s, f))
            pl_node_add_child(r, q, fields[f].name, NS_SEARCH);
    struct pl_node *x = add_form(r, q, "form");
    add_text(r, x, "title", NS_XDATA, "User Directory Search");
    add_text(r, x, "instructions", NS_XDATA, pl_buf_cstr(&text));
    for (int f = 0; f < NFIELDS; f++)
        if (is_enabled(s, f))
            add_field(r, x, fields[f].name, "text-single", fields[f].label,
                      NULL);
    pl_buf_reset(&text);
    pl_route_reply(ev->stanza, r);
    pl_stanza_unref(r);
    return PL_HANDLED;
}

/* Records one field of the request; returns 0 if it cannot match. */
static int take(struct job *j, const struct state *s, struct pl_stanza *st,
                const char *name, const struct pl_node *valnode)
{
    size_t n;
    const char *v = pl_node_text(st, valnode, &n);
    char *key = fold(v, n);
    if (!*key) {
        pl_free(key); /* an empty field asks for nothing */
        return 1;
    }
    int f = field_index(name);
    if (f < 0 || !is_enabled(s, f)) {
        pl_free(key); /* not searchable here: nothing can match */
        return 0;
    }
    pl_free(j->key[f]);
    j->key[f] = key;
    return 1;
}

static int on_set(struct pl_event *ev, void *state)
{
    struct state *s = state;
    if (!may_search(s, ev))
        return PL_EFORBIDDEN;
    struct pl_node *q = pl_stanza_payload(ev->stanza);
    struct pl_node *x = pl_node_child(q, "x", NS_XDATA);
    struct job *j = pl_job_new(sizeof(*j), ev->stanza, 0, ev->host->domain,
                               NULL);
    j->max = s->max_results;
    j->shown = s->enabled & ((1u << NLEGACY) - 1);
    int possible = 1;
    if (x) {
        const char *type = pl_node_attr(x, "type");
        if (!type || strcmp(type, "submit") != 0) {
            job_free(j);
            return PL_EBAD_REQUEST; /* XEP-0004 §3.1: submit a form */
        }
        j->form = 1;
        for (struct pl_node *f = pl_node_first_elem(x); f;
             f = pl_node_next_elem(f)) {
            const char *var = pl_node_attr(f, "var");
            struct pl_node *v = pl_node_child(f, "value", NS_XDATA);
            if (strcmp(f->name, "field") || strcmp(f->ns, NS_XDATA) || !var ||
                !v || strcmp(var, "FORM_TYPE") == 0)
                continue;
            possible &= take(j, s, ev->stanza, var, v);
        }
    } else {
        for (struct pl_node *c = pl_node_first_elem(q); c;
             c = pl_node_next_elem(c))
            if (strcmp(c->ns, NS_SEARCH) == 0 && field_index(c->name) >= 0 &&
                field_index(c->name) < NLEGACY)
                possible &= take(j, s, ev->stanza, c->name, c);
    }
    int any = !possible;
    for (int f = 0; f < NFIELDS; f++)
        if (j->key[f])
            any = 1;
    if (!any) {
        pl_route_error(ev->stanza, PL_EBAD_REQUEST,
                       "Fill in at least one field.");
        job_free(j);
        return PL_HANDLED;
    }
    if (!possible) {
        search_done(PL_OK, j); /* an empty result, without storage */
        return PL_HANDLED;
    }
    pl_storage_submit(pl_server_loop(), search_run, search_done, j);
    return PL_PENDING;
}

static int load(struct pl_host *h, void *state)
{
    struct state *s = state;
    for (int i = 0; i < s->enabled_fields.n; i++) {
        int f = field_index(s->enabled_fields.v[i]);
        if (f < 0) {
            pl_log_error("mod_search",
                         "%s: search.enabled_fields: unknown field '%s' "
                         "(known: first, last, nick, email, jid)",
                         h->domain, s->enabled_fields.v[i]);
            return PL_EINVAL;
        }
        s->enabled |= 1u << f;
    }
    return PL_OK;
}

/* mod_vcard writes the directory this module reads. */
static const char *const deps[] = {"vcard", NULL};
static const char *const features[] = {NS_SEARCH, NULL};

static const struct pl_option options[] = {
    {"enabled_fields", PL_OPT_STRLIST,
     "[\"nick\", \"first\", \"last\", "
     "\"jid\"]",
     0, 0, NULL,
     "Fields users may search by and see in results: first, last, nick, "
     "email, jid (e-mail is off by default, for privacy).",
     offsetof(struct state, enabled_fields)},
    {"access", PL_OPT_ENUM, "\"local\"", 0, 0, access_modes,
     "Who may search: local (accounts of this host) or all (any sender).",
     offsetof(struct state, access)},
    {"max_results", PL_OPT_INT, "50", 1, 10000, NULL,
     "Most users listed in one answer.", offsetof(struct state, max_results)},
    {0},
};

static const struct pl_hook_def hooks[] = {
    {"iq-get/host/" NS_SEARCH ":query", on_get, 0},
    {"iq-set/host/" NS_SEARCH ":query", on_set, 0},
    {0},
};

const struct pl_module pl_mod_search = {
    .abi = PL_MODULE_ABI,
    .default_on = 1,
    .name = "search",
    .summary = "user directory search over vCards",
    .xeps = "XEP-0055, XEP-0004",
    .deps = deps,
    .features = features,
    .options = options,
    .hooks = hooks,
    .state_size = sizeof(struct state),
    .load = load,
};
