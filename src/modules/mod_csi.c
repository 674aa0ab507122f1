/*
 * mod_csi.c - XEP-0352 Client State Indication: while a client says it
 * is <inactive/>, non-urgent traffic waits in a per-session queue
 * (presence coalesced per sender, chat states, receipts, markers, PEP
 * events) so that an idle phone's radio stays asleep; an urgent stanza
 * (a message with a body, an error, an IQ, a subscription request) or
 * <active/> flushes the queue first, in order, then the stanza.
 *
 * Held stanzas are not yet sent, so they are not yet in the XEP-0198
 * queue: when the session ends they are flushed into the transport, and a
 * stream-managed session routes them again like its other unacknowledged
 * stanzas (sm.h).
 *
 * The session's output filter (resources.h) does the holding; the state
 * sits in the session's csi slot (pl_session_ctx).  Extending: urgency rules live in urgent().
 */
#include "core/modapi.h"

#include <stddef.h>
#include <string.h>

#define NS_CSI "urn:xmpp:csi:0"

struct state {
    long max_held; /* held stanzas before a forced flush */
};

struct csi {
    struct pl_session_filter f; /* in the session's output chain */
    const struct state *cfg;    /* module options */
    struct pl_stanza **held;    /* references, oldest first */
    size_t n, cap;              /* used and allocated */
};

static unsigned long flushes, coalesced; /* for the log */

/* Whether st must reach an inactive client now (XEP-0352 §6 leaves the
 * rules to the server; these follow what mobile clients expect). */
static int urgent(struct pl_stanza *st)
{
    const char *name = pl_stanza_name(st);
    const char *type = pl_stanza_attr(st, "type");
    struct pl_node *root = pl_stanza_root(st);
    if (strcmp(name, "iq") == 0)
        return 1;
    if (type && strcmp(type, "error") == 0)
        return 1;
    if (strcmp(name, "presence") == 0)
        return type && strcmp(type, "unavailable") != 0 &&
               strcmp(type, "probe") != 0; /* subscription requests */
    for (struct pl_node *c = pl_node_first_elem(root); c;
         c = pl_node_next_elem(c)) {
        if (strcmp(c->name, "body") == 0 || strcmp(c->name, "subject") == 0)
            return 1;
        /* OMEMO/OpenPGP payloads carry the body inside. */
        if (strcmp(c->name, "encrypted") == 0 ||
            strcmp(c->name, "openpgp") == 0)
            return 1;
        /* A call (XEP-0353) rings now. */
        if (strcmp(c->ns, "urn:xmpp:jingle-message:0") == 0)
            return 1;
    }
    return 0;
}

static int is_plain_presence(struct pl_stanza *st)
{
    const char *type = pl_stanza_attr(st, "type");
    return strcmp(pl_stanza_name(st), "presence") == 0 &&
           (!type || strcmp(type, "unavailable") == 0);
}

static void flush(struct pl_session *s, struct csi *c)
{
    size_t n = c->n;
    c->n = 0; /* sends below may come back through the filter: none held */
    for (size_t i = 0; i < n; i++) {
        pl_session_send_after(s, c->held[i], &c->f);
        pl_stanza_unref(c->held[i]);
    }
    if (n)
        flushes++;
}

static int filter(struct pl_session *s, struct pl_stanza *st,
                  struct pl_session_filter *f)
{
    struct csi *c = (struct csi *)f;
    if (urgent(st)) {
        flush(s, c);
        return 0;
    }
    if (is_plain_presence(st)) {
        /* Only the newest presence of each sender matters. */
        const char *from = pl_stanza_attr(st, "from");
        for (size_t i = 0; from && i < c->n; i++) {
            const char *hf = pl_stanza_attr(c->held[i], "from");
            if (hf && strcmp(hf, from) == 0 && is_plain_presence(c->held[i])) {
                pl_stanza_unref(c->held[i]);
                memmove(&c->held[i], &c->held[i + 1],
                        (c->n - i - 1) * sizeof(*c->held));
                c->n--;
                coalesced++;
                break;
            }
        }
    }
    if (c->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 16;
        c->held = pl_realloc(c->held, c->cap * sizeof(*c->held));
    }
    c->held[c->n++] = pl_stanza_ref(st);
    if ((long)c->n >= c->cfg->max_held)
        flush(s, c);
    return 1;
}

static void set_active(struct pl_session *s)
{
    struct csi *c = pl_session_ctx(s, csi);
    if (!c)
        return;
    /* What was held goes out through the filters after this one (stream
     * management) before this one leaves the chain. */
    flush(s, c);
    pl_session_filter_remove(s, &c->f);
    pl_session_ctx(s, csi) = NULL;
    pl_free(c->held);
    pl_free(c);
}

static int on_inactive(struct pl_event *ev, void *state)
{
    struct pl_session *s = ev->session;
    if (!pl_session_ctx(s, csi)) {
        struct csi *c = pl_calloc(1, sizeof(*c));
        c->cfg = state;
        c->f.fn = filter;
        c->f.priority = 100;
        pl_session_ctx(s, csi) = c;
        pl_session_filter_add(s, &c->f);
    }
    return PL_HANDLED;
}

static int on_active(struct pl_event *ev, void *state)
{
    (void)state;
    set_active(ev->session);
    return PL_HANDLED;
}

static int on_closed(struct pl_event *ev, void *state)
{
    (void)state;
    set_active(ev->session);
    return PL_PASS;
}

static int on_features(struct pl_event *ev, void *state)
{
    (void)state;
    pl_buf_append_str(ev->data, "<csi xmlns='" NS_CSI "'/>");
    return PL_PASS;
}

static void unload(struct pl_host *h, void *state)
{
    (void)h;
    (void)state;
    if (flushes || coalesced)
        pl_log_info("mod_csi", "%lu flushes, %lu presences coalesced", flushes,
                    coalesced);
}

static const struct pl_option options[] = {
    {"max_held", PL_OPT_INT, "256", 1, 100000, NULL,
     "Stanzas held for an inactive client before they are sent anyway.",
     offsetof(struct state, max_held)},
    {0},
};

static const struct pl_hook_def hooks[] = {
    {"stream-features", on_features, 0},
    {"stream-element/" NS_CSI ":inactive", on_inactive, 0},
    {"stream-element/" NS_CSI ":active", on_active, 0},
    /* Before mod_presence's unavailable broadcast and the XEP-0198 end. */
    {"session/closed", on_closed, 100},
    {0},
};

const struct pl_module pl_mod_csi = {
    .abi = PL_MODULE_ABI,
    .default_on = 1,
    .name = "csi",
    .summary = "holds non-urgent traffic while a client is inactive",
    .xeps = "XEP-0352",
    .options = options,
    .hooks = hooks,
    .state_size = sizeof(struct state),
    .unload = unload,
};
