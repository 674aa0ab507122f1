/*
 * mod_private.c - XEP-0049 Private XML Storage: each account keeps XML
 * fragments on the server, each identified by its root element's name
 * and namespace (bookmarks of XEP-0048 are the best-known user).
 *
 *   <iq type='set'><query xmlns='jabber:iq:private'><x xmlns='ns'>...</x>
 *       stores each child of <query/>, replacing what was stored under
 *       the same name and namespace; a child without attributes or
 *       content deletes it.
 *   <iq type='get'> with <query><x xmlns='ns'/></query> returns what is
 *       stored under that name and namespace, or the element as asked for
 *       (empty) when nothing is.  Several children may be asked at once.
 *
 * Errors (XEP-0049 §2.3 and §3): addressed to another account:
 * <forbidden/>; a <query/> without children, or a child in a reserved
 * namespace (jabber:client, jabber:server, jabber:iq:private, or none):
 * <not-acceptable/>; a fragment over max_size bytes, or more than
 * max_entries fragments for one account: <not-acceptable/> with a text
 * naming the limit.
 *
 * Storage: kv store "private", key "{namespace}name" (Clark notation),
 * value the serialized element (pl_node_serialize).
 *
 * Extending: a new reserved namespace is a line in `reserved`.
 */
#include "core/modapi.h"

#define NS_PRIVATE "jabber:iq:private"
#define STORE "private"

struct state {
    long max_size;    /* bytes of one stored element */
    long max_entries; /* stored elements per account */
};

/* Namespaces a client may not store under (XEP-0049 §2.3). */
static const char *const reserved[] = {
    PL_NS_CLIENT, PL_NS_SERVER, NS_PRIVATE, "", NULL,
};

struct entry {
    char *key;                /* "{ns}name" */
    const struct pl_node *el; /* the request's element (held stanza) */
    struct pl_buf data;       /* set: serialized; get: what was read */
    int found;                /* get: something was stored */
    int remove;               /* set: delete instead of store */
};

struct job {
    struct pl_job base; /* the request, held until the reply; the
                            * account */
    struct entry *e;    /* one per child of <query/> */
    int n;
    long max_entries;      /* set: the quota */
    struct pl_buf scratch; /* storage thread: existence checks */
};

static void job_free(struct job *j)
{
    for (int i = 0; i < j->n; i++) {
        pl_free(j->e[i].key);
        pl_buf_reset(&j->e[i].data);
    }
    pl_free(j->e);
    pl_buf_reset(&j->scratch);
    pl_job_free(j);
}

static int is_reserved(const char *ns)
{
    for (int i = 0; reserved[i]; i++)
        if (strcmp(ns, reserved[i]) == 0)
            return 1;
    return 0;
}

/* Whether el holds anything: children or attributes other than namespace
 * declarations. */
static int has_content(const struct pl_node *el)
{
    if (el->children)
        return 1;
    for (const struct pl_attr *a = el->attrs; a; a = a->next)
        if (a->ns ? strcmp(a->ns, "http://www.w3.org/2000/xmlns/") != 0
                  : strcmp(a->name, "xmlns") != 0)
            return 1;
    return 0;
}

static char *make_key(const struct pl_node *el)
{
    size_t n = strlen(el->ns) + strlen(el->name) + 3;
    char *k = pl_malloc(n);
    snprintf(k, n, "{%s}%s", el->ns, el->name);
    return k;
}

/* A job with one entry per child of the request's <query/>, a later
 * child replacing an earlier one of the same name and namespace.
 * Returns an error code for a request that cannot be served. */
static int job_new(struct pl_event *ev, struct job **out)
{
    struct pl_node *q = pl_stanza_payload(ev->stanza);
    size_t n = pl_node_count_elems(q);
    if (n == 0)
        return PL_ENOT_ACCEPTABLE; /* XEP-0049 §2.3: a child is required */
    for (struct pl_node *c = pl_node_first_elem(q); c; c = pl_node_next_elem(c))
        if (is_reserved(c->ns))
            return PL_ENOT_ACCEPTABLE;
    struct job *j = pl_job_new(sizeof(*j), ev->stanza, 0, ev->host->domain,
                               ev->to->local);
    j->e = pl_calloc(n, sizeof(*j->e));
    for (struct pl_node *c = pl_node_first_elem(q); c;
         c = pl_node_next_elem(c)) {
        char *key = make_key(c);
        int i = 0;
        while (i < j->n && strcmp(j->e[i].key, key) != 0)
            i++;
        if (i < j->n) {
            pl_free(key); /* the same fragment again: the last one counts */
            j->e[i].el = c;
        } else {
            j->e[j->n].key = key;
            j->e[j->n++].el = c;
        }
    }
    *out = j;
    return PL_OK;
}

/* ---------------------------------------------------------------- get */

static int get_run(const struct pl_storage_driver *d, void *db, void *arg)
{
    struct job *j = arg;
    for (int i = 0; i < j->n; i++) {
        int rc = d->kv_get(db, j->base.host, j->base.user, STORE, j->e[i].key,
                           &j->e[i].data);
        if (rc == PL_OK)
            j->e[i].found = 1;
        else if (rc != PL_ENOT_FOUND)
            return rc;
    }
    return PL_OK;
}

static void get_done(int rc, void *arg)
{
    struct job *j = arg;
    if (rc != PL_OK) {
        pl_log_error("mod_private",
                     "reading private XML of %s@%s failed: "
                     "%s",
                     j->base.user, j->base.host, pl_strerror(rc));
        pl_route_error(j->base.st, PL_EINTERNAL_SERVER_ERROR, NULL);
        job_free(j);
        return;
    }
    struct pl_stanza *r = pl_iq_result(j->base.st);
    struct pl_node *q = pl_node_add_child(r, pl_stanza_root(r), "query",
                                          NS_PRIVATE);
    for (int i = 0; i < j->n; i++) {
        struct entry *e = &j->e[i];
        struct pl_stanza *frag = NULL;
        if (e->found) {
            struct pl_str s = pl_buf_str(&e->data);
            if (pl_xml_parse_fragment(s.p, s.len, &frag) != PL_OK)
                pl_log_error("mod_private",
                             "stored private XML %s of "
                             "%s@%s does not parse",
                             e->key, j->base.user, j->base.host);
        }
        if (frag)
            pl_node_add_copy(r, q, pl_stanza_root(frag));
        else
            pl_node_add_child(r, q, e->el->name, e->el->ns);
        pl_stanza_unref(frag);
    }
    pl_route_reply(j->base.st, r);
    pl_stanza_unref(r);
    job_free(j);
}

static int on_get(struct pl_event *ev, void *state)
{
    if (!ev->to || !ev->to->local)
        return PL_PASS;
    if (!pl_event_is_self(ev))
        return PL_EFORBIDDEN; /* XEP-0049 §3: someone else's storage */
    struct job *j;
    int rc = job_new(ev, &j);
    if (rc != PL_OK)
        return rc;
    pl_storage_submit(pl_server_loop(), get_run, get_done, j);
    return PL_PENDING;
}

/* ---------------------------------------------------------------- set */

static int set_run(const struct pl_storage_driver *d, void *db, void *arg)
{
    struct job *j = arg;
    /* Check the quota before writing anything: no partial update. */
    long count, added = 0;
    int rc = d->kv_count(db, j->base.host, j->base.user, STORE, &count);
    if (rc != PL_OK)
        return rc;
    for (int i = 0; i < j->n; i++) {
        pl_buf_reset(&j->scratch);
        rc = d->kv_get(db, j->base.host, j->base.user, STORE, j->e[i].key,
                       &j->scratch);
        if (rc != PL_OK && rc != PL_ENOT_FOUND)
            return rc;
        if (rc == PL_ENOT_FOUND && !j->e[i].remove)
            added++;
        else if (rc == PL_OK && j->e[i].remove)
            added--;
    }
    if (added > 0 && count + added > j->max_entries)
        return PL_ELIMIT;
    for (int i = 0; i < j->n; i++) {
        struct pl_str s = pl_buf_str(&j->e[i].data);
        rc = d->kv_set(db, j->base.host, j->base.user, STORE, j->e[i].key,
                       j->e[i].remove ? NULL : s.p, s.len);
        if (rc != PL_OK)
            return rc;
    }
    return PL_OK;
}

static void set_done(int rc, void *arg)
{
    struct job *j = arg;
    if (rc == PL_OK) {
        pl_route_result(j->base.st);
    } else if (rc == PL_ELIMIT) {
        char text[96];
        snprintf(text, sizeof(text),
                 "At most %ld private XML elements may be stored.",
                 j->max_entries);
        pl_route_error(j->base.st, PL_ENOT_ACCEPTABLE, text);
    } else {
        pl_log_error("mod_private",
                     "storing private XML of %s@%s failed: "
                     "%s",
                     j->base.user, j->base.host, pl_strerror(rc));
        pl_route_error(j->base.st, PL_EINTERNAL_SERVER_ERROR, NULL);
    }
    job_free(j);
}

static int on_set(struct pl_event *ev, void *state)
{
    struct state *s = state;
    if (!ev->to || !ev->to->local)
        return PL_PASS;
    if (!pl_event_is_self(ev))
        return PL_EFORBIDDEN; /* XEP-0049 §3: someone else's storage */
    struct job *j;
    int rc = job_new(ev, &j);
    if (rc != PL_OK)
        return rc;
    j->max_entries = s->max_entries;
    for (int i = 0; i < j->n; i++) {
        struct entry *e = &j->e[i];
        if (!has_content(e->el)) {
            e->remove = 1;
            continue;
        }
        pl_node_serialize(e->el, "", PL_NS_CLIENT, &e->data);
        if ((long)e->data.len > s->max_size) {
            char text[128];
            snprintf(text, sizeof(text),
                     "A private XML element may have at most %ld bytes.",
                     s->max_size);
            pl_route_error(ev->stanza, PL_ENOT_ACCEPTABLE, text);
            job_free(j);
            return PL_HANDLED;
        }
    }
    pl_storage_submit(pl_server_loop(), set_run, set_done, j);
    return PL_PENDING;
}

static const char *const features[] = {NS_PRIVATE, NULL};

static const struct pl_option options[] = {
    {"max_size", PL_OPT_INT, "65536", 256, 16777216, NULL,
     "Largest element one account may store, in bytes of XML.",
     offsetof(struct state, max_size)},
    {"max_entries", PL_OPT_INT, "100", 1, 1000000, NULL,
     "Most elements (distinct name and namespace) one account may store.",
     offsetof(struct state, max_entries)},
    {0},
};

static const struct pl_hook_def hooks[] = {
    {"iq-get/bare/" NS_PRIVATE ":query", on_get, 0},
    {"iq-set/bare/" NS_PRIVATE ":query", on_set, 0},
    {0},
};

const struct pl_module pl_mod_private = {
    .abi = PL_MODULE_ABI,
    .default_on = 1,
    .name = "private",
    .summary = "private XML storage for each account",
    .xeps = "XEP-0049",
    .features = features,
    .options = options,
    .hooks = hooks,
    .state_size = sizeof(struct state),
};
