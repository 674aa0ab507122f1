/*
 * mod_presence.c - presence (RFC 6121 §4): initial presence broadcast to
 * the contacts subscribed to the user, probes to the contacts the user is
 * subscribed to (answered from each resource's last presence), presence
 * to and from the user's other resources, directed presence, updates, and
 * unavailable presence on logout and on connection loss (with the last
 * status).  Fires "presence/initial" once per session after the first
 * available presence went out (offline delivery, pending requests).
 *
 * Rosters are read on the storage thread (roster/roster.h); everything
 * that concerns live sessions happens on the loop.
 */
#include <stdlib.h>

#include "roster/roster.h"


struct pres {
    unsigned initial_done : 1; /* first available presence went out */
    char **directed;           /* full/bare JIDs that got directed presence */
    int ndirected;
};

static struct pres *pres_of(struct pl_session *s)
{
    if (!pl_session_ctx(s, presence))
        pl_session_ctx(s, presence) = pl_calloc(1, sizeof(struct pres));
    return pl_session_ctx(s, presence);
}

static void pres_free(struct pres *p)
{
    if (!p)
        return;
    for (int i = 0; i < p->ndirected; i++)
        pl_free(p->directed[i]);
    pl_free(p->directed);
    pl_free(p);
}

enum kind {
    B_AVAILABLE,
    B_UNAVAILABLE,
    B_PROBE
};

struct job {
    struct pl_job base; /* the presence to send (held), the session
                                * that sent or is probed, the user */
    enum kind kind;
    char *full;   /* the session's full JID */
    char *prober; /* B_PROBE: who asks (full JID as sent) */
    char *prober_bare;
    int initial;     /* B_AVAILABLE: first available presence */
    char **directed; /* B_UNAVAILABLE after close: copies */
    int ndirected;
    struct pl_roster roster;    /* loaded roster */
    struct pl_roster_item item; /* B_PROBE: the prober's item */
    int found;                  /* B_PROBE: the item exists */
};

static void job_free(struct job *j)
{
    pl_free(j->full);
    pl_free(j->prober);
    pl_free(j->prober_bare);
    for (int i = 0; i < j->ndirected; i++)
        pl_free(j->directed[i]);
    pl_free(j->directed);
    pl_roster_free(&j->roster);
    pl_roster_item_free(&j->item);
    pl_job_free(j);
}

static struct job *job_new(enum kind kind, struct pl_session *s,
                           const char *host, const char *user)
{
    struct job *j = pl_job_new(sizeof(*j), NULL, s ? s->id : 0, host, user);
    j->kind = kind;
    if (s && s->jid)
        j->full = pl_strdup(s->jid->full);
    return j;
}

/* Moves the session's directed-presence recipients into j (§4.6.3). */
static void take_directed(struct job *j, struct pres *p)
{
    j->directed = p->directed;
    j->ndirected = p->ndirected;
    p->directed = NULL;
    p->ndirected = 0;
}

static int run(const struct pl_storage_driver *d, void *db, void *arg)
{
    struct job *j = arg;
    if (j->kind == B_PROBE) {
        int rc = pl_roster_load_item(d, db, j->base.host, j->base.user,
                                     j->prober_bare, &j->item);
        j->found = rc == PL_OK;
        return rc == PL_ENOT_FOUND ? PL_OK : rc;
    }
    return pl_roster_load(d, db, j->base.host, j->base.user, &j->roster);
}

/* Sends a copy of st from `from` to `to` (strings). */
static void send_copy(struct pl_stanza *st, const char *from, const char *to)
{
    struct pl_stanza *c = pl_stanza_copy(st);
    pl_route_as(c, from, to);
    pl_stanza_unref(c);
}

static void to_contacts(struct job *j, struct pl_stanza *st)
{
    for (int i = 0; i < j->roster.n; i++)
        if (pl_roster_has_from(&j->roster.v[i]))
            send_copy(st, j->full, j->roster.v[i].jid);
}

/* To the user's available resources, the sender included (§4.2.2). */
static void to_own(struct job *j, struct pl_stanza *st)
{
    for (struct pl_session *s = pl_session_first(j->base.bare); s;
         s = s->next_res) {
        if (!s->available)
            continue;
        struct pl_stanza *c = pl_stanza_copy(st);
        pl_stanza_set_attr(c, "from", j->full);
        pl_stanza_set_attr(c, "to", s->jid->full);
        pl_route_to_session(s, c);
        pl_stanza_unref(c);
    }
}

static void done(int rc, void *arg)
{
    struct job *j = arg;
    struct pl_session *s = j->base.sid ? pl_session_by_id(j->base.sid) : NULL;
    if (rc != PL_OK) {
        pl_log_error("mod_presence", "reading the roster of %s failed",
                     j->base.bare);
        job_free(j);
        return;
    }
    switch (j->kind) {
    case B_AVAILABLE:
        if (!s || !s->available)
            break; /* gone or unavailable meanwhile */
        to_contacts(j, j->base.st);
        to_own(j, j->base.st);
        if (j->initial) {
            /* §4.2.2: the other resources' presence to the new one. */
            for (struct pl_session *o = pl_session_first(j->base.bare); o;
                 o = o->next_res)
                if (o != s && o->available && o->presence)
                    send_copy(o->presence, o->jid->full, s->jid->full);
            /* §4.3.1: probes from the user's bare JID. */
            struct pl_stanza *probe = pl_stanza_new("presence", PL_NS_CLIENT);
            pl_stanza_set_attr(probe, "type", "probe");
            for (int i = 0; i < j->roster.n; i++)
                if (pl_roster_has_to(&j->roster.v[i]))
                    send_copy(probe, j->base.bare, j->roster.v[i].jid);
            pl_stanza_unref(probe);
            struct pl_event ev = {
                "presence/initial", s->host, s, j->base.st, s->jid, NULL, NULL};
            pl_hook_fire(&ev);
        }
        break;
    case B_UNAVAILABLE:
        to_contacts(j, j->base.st);
        to_own(j, j->base.st);
        for (int i = 0; i < j->ndirected; i++)
            send_copy(j->base.st, j->full, j->directed[i]);
        break;
    case B_PROBE: {
        if (!j->found || !pl_roster_has_from(&j->item)) {
            /* §4.3.2: not subscribed: reveal nothing. */
            break;
        }
        int n = 0;
        for (struct pl_session *o = pl_session_first(j->base.bare); o;
             o = o->next_res)
            if (o->available && o->presence) {
                send_copy(o->presence, o->jid->full, j->prober);
                n++;
            }
        if (!n) {
            struct pl_stanza *u = pl_stanza_new("presence", PL_NS_CLIENT);
            pl_stanza_set_attr(u, "type", "unavailable");
            send_copy(u, j->base.bare, j->prober);
            pl_stanza_unref(u);
        }
        break;
    }
    }
    job_free(j);
}

/* A client's presence without 'to' (the stream updated availability). */
static int on_broadcast(struct pl_event *ev, void *state)
{
    struct pl_session *s = ev->session;
    const char *type = pl_stanza_attr(ev->stanza, "type");
    if (!s || !s->jid || (type && strcmp(type, "unavailable") != 0))
        return PL_HANDLED; /* probes, errors, subscriptions: no meaning */
    struct pres *p = pres_of(s);
    struct job *j = job_new(type ? B_UNAVAILABLE : B_AVAILABLE, s,
                            ev->host->domain, s->jid->local);
    j->base.st = pl_stanza_copy(ev->stanza);
    pl_stanza_set_attr(j->base.st, "to", NULL);
    if (!type) {
        j->initial = !p->initial_done;
        p->initial_done = 1;
    } else {
        /* §4.6.3: unavailable also goes to directed recipients. */
        take_directed(j, p);
        p->initial_done = 0;
    }
    pl_storage_submit(pl_server_loop(), run, done, j);
    return PL_HANDLED;
}

/* Directed presence: remember who got it, to send unavailable later. */
static int on_outgoing(struct pl_event *ev, void *state)
{
    struct pl_session *s = ev->session;
    const char *type = pl_stanza_attr(ev->stanza, "type");
    if (!s || !s->jid || !ev->to || (type && strcmp(type, "unavailable")))
        return PL_PASS;
    struct pres *p = pres_of(s);
    const char *to = ev->to->full;
    int at = -1;
    for (int i = 0; i < p->ndirected; i++)
        if (strcmp(p->directed[i], to) == 0)
            at = i;
    if (!type && at < 0 && p->ndirected < 1000) {
        p->directed = pl_realloc(p->directed,
                                 (size_t)(p->ndirected + 1) * sizeof(char *));
        p->directed[p->ndirected++] = pl_strdup(to);
    } else if (type && at >= 0) {
        pl_free(p->directed[at]);
        p->directed[at] = p->directed[--p->ndirected];
    }
    return PL_PASS;
}

/* A probe for one of our users. */
static int on_probe(struct pl_event *ev, void *state)
{
    const char *type = pl_stanza_attr(ev->stanza, "type");
    if (!type || strcmp(type, "probe") != 0 || !ev->to || !ev->to->local ||
        !ev->from)
        return PL_PASS;
    struct job *j = job_new(B_PROBE, NULL, ev->host->domain, ev->to->local);
    j->prober = pl_strdup(ev->from->full);
    j->prober_bare = pl_strdup(ev->from->bare);
    pl_storage_submit(pl_server_loop(), run, done, j);
    return PL_HANDLED;
}

/* Connection loss or logout: unavailable with the last status. */
static int on_closed(struct pl_event *ev, void *state)
{
    struct pl_session *s = ev->session;
    struct pres *p = pl_session_ctx(s, presence);
    if (s->available && s->jid) {
        struct job *j = job_new(B_UNAVAILABLE, s, ev->host->domain,
                                s->jid->local);
        j->base.sid = 0; /* the session is gone */
        j->base.st = pl_stanza_new("presence", PL_NS_CLIENT);
        pl_stanza_set_attr(j->base.st, "type", "unavailable");
        struct pl_node *status = s->presence ? pl_node_child(pl_stanza_root(
                                                                 s->presence),
                                                             "status", NULL)
                                             : NULL;
        if (status)
            pl_node_add_copy(j->base.st, pl_stanza_root(j->base.st), status);
        if (p)
            take_directed(j, p);
        s->available = 0;
        pl_storage_submit(pl_server_loop(), run, done, j);
    }
    pres_free(p);
    pl_session_ctx(s, presence) = NULL;
    return PL_PASS;
}

static const struct pl_hook_def hooks[] = {
    {"presence/broadcast", on_broadcast, 0},
    {"presence/outgoing", on_outgoing, 0},
    {"presence/bare", on_probe, 5},
    {"presence/full", on_probe, 5},
    {"session/closed", on_closed, 0},
    {0},
};

static const char *const deps[] = {"roster", NULL};

const struct pl_module pl_mod_presence = {
    .abi = PL_MODULE_ABI,
    .default_on = 1,
    .name = "presence",
    .summary = "presence broadcast, probes and directed presence",
    .xeps = "RFC 6121 §4",
    .deps = deps,
    .hooks = hooks,
};
