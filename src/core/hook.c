/*
 * hook.c - per-host event dispatch; see hook.h.  Each host maps event
 * names to an array of handlers sorted by priority.
 */
#include "hook.h"

#include <string.h>

#include "alloc.h"
#include "host.h"
#include "jid.h"

struct handler {
    pl_hook_fn *fn; /* the handler */
    void *state;    /* its module's per-host state */
    int priority;   /* sort key, descending */
};

struct hook_list {
    struct handler *v; /* sorted by priority, descending */
    int n;             /* count */
};

void pl_hook_add(struct pl_host *h, const char *event, pl_hook_fn *fn,
                 int priority, void *state)
{
    struct hook_list *l = pl_map_get(&h->hooks, event);
    if (!l) {
        l = pl_calloc(1, sizeof(*l));
        pl_map_put(&h->hooks, event, l);
    }
    l->v = pl_realloc(l->v, (size_t)(l->n + 1) * sizeof(*l->v));
    int i = l->n;
    while (i > 0 && l->v[i - 1].priority < priority) {
        l->v[i] = l->v[i - 1];
        i--;
    }
    l->v[i] = (struct handler){fn, state, priority};
    l->n++;
}

int pl_hook_has(struct pl_host *h, const char *event)
{
    return pl_map_get(&h->hooks, event) != NULL;
}

int pl_hook_fire(struct pl_event *ev)
{
    struct hook_list *l = pl_map_get(&ev->host->hooks, ev->name);
    if (!l)
        return PL_PASS;
    for (int i = 0; i < l->n; i++) {
        int rc = l->v[i].fn(ev, l->v[i].state);
        if (rc != PL_PASS)
            return rc;
    }
    return PL_PASS;
}

static void free_list(const char *key, void *value, void *ud)
{
    struct hook_list *l = value;
    pl_free(l->v);
    pl_free(l);
}

void pl__hook_clear(struct pl_host *h)
{
    pl_map_each(&h->hooks, free_list, NULL);
    pl_map_clear(&h->hooks);
}

int pl_event_is_self(const struct pl_event *ev)
{
    return ev->from && ev->to && ev->from->local && ev->to->local &&
           strcmp(ev->from->bare, ev->to->bare) == 0;
}
