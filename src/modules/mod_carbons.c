/*
 * mod_carbons.c - XEP-0280 Message Carbons (urn:xmpp:carbons:2): every
 * carbons-enabled resource of a user sees both sides of the user's
 * instant-messaging conversations.
 *
 *  - enable/disable: an IQ-set from the client (no 'to', or to its own
 *    bare JID or its server) flips the session's flag in the per-session
 *    the session's carbons slot (pl_session_ctx); repeats are not errors (§8.1).
 *  - <received/> (§6): after the router delivered an eligible message to
 *    an account ("message/delivered", fired with the set of sessions that
 *    got it), each other carbons-enabled session of that account gets a
 *    XEP-0297 wrapped copy from the bare JID.  The event comes after every
 *    message/bare and message/full handler, so copies carry what those
 *    added (the archive's <stanza-id/>).  Messages stored offline reach no
 *    session and make no copies.
 *  - <sent/> (§7): a client's eligible message ("message/outgoing", late,
 *    after filters such as blocking) goes to the sender's other
 *    carbons-enabled sessions, whether or not the sender enabled carbons.
 *  - Eligibility (§5 of 1.0.1, and XEP-0334): see eligible() below.
 *    <private/> (§8) is removed before delivery to the recipient and
 *    replaced by the XEP-0334 <no-copy/> hint it travels with, so the
 *    recipient's server-side copies are suppressed as well.
 *  - Errors to eligible messages are eligible: each session remembers the
 *    last `track_errors` (peer, id) pairs of eligible messages it sent or
 *    got (hashes only, and only while the account has a carbons-enabled
 *    session), and an error message matching one is copied too.
 *
 *  - Across the nodes of a cluster (doc/cluster.md): a session's
 *    enabled flag travels with its state (session/export, session/import;
 *    session/changed when it flips), so another node's session is
 *    copied to as a local one: copies are made once, on the node that
 *    routes the message or serves its sender, and reach the other nodes
 *    through their remote sessions.
 *
 * Extending: eligibility rules live in eligible(); new payloads typically
 * used in IM go into im_payload().
 */
#include "core/modapi.h"

#define NS_CARBONS "urn:xmpp:carbons:2"
#define NS_FORWARD "urn:xmpp:forward:0"
#define NS_HINTS "urn:xmpp:hints"
#define NS_MUC_USER "http://jabber.org/protocol/muc#user"

struct state {
    long track_errors; /* (peer, id) pairs remembered per session */
};

/* Per-session state, allocated on enable or when a pair is remembered. */
struct carbons {
    unsigned enabled : 1; /* the client enabled carbons */
    int next;             /* ring position */
    int n;                /* ring entries in use */
    uint64_t ring[];      /* hashes of "peer-bare\0id" */
};

static struct carbons *carbons_of(struct pl_session *s, const struct state *st)
{
    if (!pl_session_ctx(s, carbons)) {
        struct carbons *c = pl_calloc(1, sizeof(struct carbons) +
                                             (size_t)st->track_errors *
                                                 sizeof(uint64_t));
        pl_session_ctx(s, carbons) = c;
    }
    return pl_session_ctx(s, carbons);
}

static int is_enabled(const struct pl_session *s)
{
    const struct carbons *c = pl_session_ctx(s, carbons);
    return c && c->enabled;
}

static uint64_t pair_hash(const char *peer_bare, const char *id)
{
    char buf[2048];
    size_t a = strlen(peer_bare), b = strlen(id);
    if (a + b + 1 > sizeof(buf))
        return pl_hash(id, b) ^ pl_hash(peer_bare, a);
    memcpy(buf, peer_bare, a);
    buf[a] = 0;
    memcpy(buf + a + 1, id, b);
    return pl_hash(buf, a + b + 1);
}

/* Whether any session of the account has carbons enabled. */
static int account_wants(const char *bare)
{
    for (struct pl_session *s = pl_session_first(bare); s; s = s->next_res)
        if (is_enabled(s))
            return 1;
    return 0;
}

/* Remembers an eligible message so that an error to it is eligible too. */
static void remember(struct pl_session *s, const struct state *st,
                     const char *peer_bare, const char *id)
{
    if (!st->track_errors || !id || !account_wants(s->jid->bare))
        return;
    struct carbons *c = carbons_of(s, st);
    c->ring[c->next] = pair_hash(peer_bare, id);
    c->next = (c->next + 1) % (int)st->track_errors;
    if (c->n < st->track_errors)
        c->n++;
}

static int remembered(const char *bare, const char *peer_bare, const char *id)
{
    if (!id)
        return 0;
    uint64_t h = pair_hash(peer_bare, id);
    for (struct pl_session *s = pl_session_first(bare); s; s = s->next_res) {
        const struct carbons *c = pl_session_ctx(s, carbons);
        for (int i = 0; c && i < c->n; i++)
            if (c->ring[i] == h)
                return 1;
    }
    return 0;
}

/* Payloads typically used in IM (XEP-0280 §5: receipts, chat states,
 * markers). */
static int im_payload(const struct pl_node *root)
{
    for (const struct pl_node *n = pl_node_first_elem(root); n;
         n = pl_node_next_elem(n))
        if (strcmp(n->ns, "urn:xmpp:receipts") == 0 ||
            strcmp(n->ns, "http://jabber.org/protocol/chatstates") == 0 ||
            strcmp(n->ns, "urn:xmpp:chat-markers:0") == 0)
            return 1;
    return 0;
}

enum dir {
    INBOUND,
    OUTBOUND
};

/*
 * XEP-0280 §5 (1.0.1) with the MUC rules, and XEP-0334 §4.3 <no-copy/>.
 * user_bare/peer_bare: the account and the other party, for errors.
 */
static int eligible(struct pl_stanza *st, enum dir dir, const char *user_bare,
                    const char *peer_bare)
{
    struct pl_node *root = pl_stanza_root(st);
    const char *type = pl_stanza_attr(st, "type");
    if (!type)
        type = "normal";
    if (pl_node_child(root, "private", NS_CARBONS) ||
        pl_node_child(root, "no-copy", NS_HINTS))
        return 0;
    /* A carbon is never copied again (nor a forged one). */
    if (pl_node_child(root, "received", NS_CARBONS) ||
        pl_node_child(root, "sent", NS_CARBONS))
        return 0;
    if (strcmp(type, "groupchat") == 0)
        return 0;
    if (strcmp(type, "error") == 0)
        return remembered(user_bare, peer_bare, pl_stanza_attr(st, "id"));
    /* Invitations, direct (XEP-0249) or mediated (XEP-0045 §7.8.2). */
    if (pl_node_child(root, "x", "jabber:x:conference"))
        return 1;
    struct pl_node *muc = pl_node_child(root, "x", NS_MUC_USER);
    if (muc && pl_node_child(muc, "invite", NS_MUC_USER))
        return 1;
    /* A private message from a MUC occupant: the room already sends it
     * to every joined client.  One to an occupant is copied. */
    if (muc && dir == INBOUND)
        return 0;
    if (strcmp(type, "chat") == 0)
        return 1;
    if (strcmp(type, "normal") == 0 && pl_node_child(root, "body", NULL))
        return 1;
    return im_payload(root);
}

/* A XEP-0297 wrapped copy of st for session s (from the bare JID). */
static void send_copy(struct pl_session *s, struct pl_stanza *st,
                      const char *kind)
{
    struct pl_stanza *w = pl_stanza_new("message", PL_NS_CLIENT);
    struct pl_node *root = pl_stanza_root(w);
    const char *type = pl_stanza_attr(st, "type");
    pl_stanza_set_attr(w, "from", s->jid->bare);
    pl_stanza_set_attr(w, "to", s->jid->full);
    if (type)
        pl_stanza_set_attr(w, "type", type);
    struct pl_node *k = pl_node_add_child(w, root, kind, NS_CARBONS);
    struct pl_node *f = pl_node_add_child(w, k, "forwarded", NS_FORWARD);
    pl_node_add_copy(w, f, pl_stanza_root(st));
    pl_route_to_session(s, w);
    pl_stanza_unref(w);
}

/* <received/> copies, after the router delivered (doc/events.md). */
static int on_delivered(struct pl_event *ev, void *state)
{
    const struct pl_delivery *d = ev->data;
    const struct pl_jid *to = ev->to;
    if (!to || !to->local || !ev->from)
        return PL_PASS;
    if (!eligible(ev->stanza, INBOUND, to->bare, ev->from->bare))
        return PL_PASS;
    const char *type = pl_stanza_attr(ev->stanza, "type");
    struct pl_session *first_got = NULL;
    for (struct pl_session *s = pl_session_first(to->bare); s;
         s = s->next_res) {
        if (pl_delivery_reached(d, s)) {
            if (!first_got)
                first_got = s;
            continue;
        }
        if (is_enabled(s))
            send_copy(s, ev->stanza, "received");
    }
    if (first_got && (!type || strcmp(type, "error") != 0))
        remember(first_got, state, ev->from->bare,
                 pl_stanza_attr(ev->stanza, "id"));
    return PL_PASS;
}

/* <sent/> copies of a client's message (§7). */
static int on_outgoing(struct pl_event *ev, void *state)
{
    struct pl_session *origin = ev->session;
    if (!origin || !origin->jid || !ev->to)
        return PL_PASS;
    /* To the user's own account: the other resources see it as
     * recipients (and get <received/> copies), not as senders. */
    if (strcmp(ev->to->bare, origin->jid->bare) == 0)
        return PL_PASS;
    if (!eligible(ev->stanza, OUTBOUND, origin->jid->bare, ev->to->bare))
        return PL_PASS;
    const char *type = pl_stanza_attr(ev->stanza, "type");
    for (struct pl_session *s = pl_session_first(origin->jid->bare); s;
         s = s->next_res)
        if (s != origin && is_enabled(s))
            send_copy(s, ev->stanza, "sent");
    if (!type || strcmp(type, "error") != 0)
        remember(origin, state, ev->to->bare, pl_stanza_attr(ev->stanza, "id"));
    return PL_PASS;
}

/*
 * §8: the receiving server removes <private/> before delivery; the
 * <no-copy/> hint the sender adds with it (added here when missing)
 * keeps the message out of the recipient's carbons.
 */
static int on_incoming(struct pl_event *ev, void *state)
{
    struct pl_node *root = pl_stanza_root(ev->stanza);
    struct pl_node *priv = pl_node_child(root, "private", NS_CARBONS);
    if (!priv)
        return PL_PASS;
    pl_node_remove(ev->stanza, priv);
    if (!pl_node_child(root, "no-copy", NS_HINTS))
        pl_node_add_child(ev->stanza, root, "no-copy", NS_HINTS);
    return PL_PASS;
}

/* enable/disable, from the session itself only (§3, §4). */
static int toggle(struct pl_event *ev, void *state, int on)
{
    struct pl_session *s = ev->session;
    if (!s || !s->jid || !ev->from || strcmp(ev->from->full, s->jid->full))
        return PL_ENOT_ALLOWED; /* not a client of this server */
    if (ev->to && ev->to->local && strcmp(ev->to->bare, s->jid->bare) != 0)
        return PL_ENOT_ALLOWED; /* someone else's carbons */
    int was = is_enabled(s);
    if (on) {
        carbons_of(s, state)->enabled = 1;
    } else if (pl_session_ctx(s, carbons)) {
        ((struct carbons *)pl_session_ctx(s, carbons))->enabled = 0;
    }
    pl_route_result(ev->stanza);
    if (was != on) {
        /* Exported state changed (a cluster tells the other nodes). */
        struct pl_event ch =
            {"session/changed", ev->host, s, NULL, s->jid, NULL, NULL};
        pl_hook_fire(&ch);
    }
    return PL_HANDLED;
}

/* Other nodes of a cluster learn which sessions enabled carbons
 * (doc/cluster.md), and copy to them as to local ones. */
static int on_export(struct pl_event *ev, void *state)
{
    (void)state;
    if (is_enabled(ev->session))
        pl_buf_append_str(ev->data, "<enabled xmlns='" NS_CARBONS "'/>");
    return PL_PASS;
}

/* Another node's session: enabled or not as its node says. */
static int on_import(struct pl_event *ev, void *state)
{
    struct pl_session *s = ev->session;
    int on = pl_node_child(pl_stanza_root(ev->stanza), "enabled", NS_CARBONS) !=
             NULL;
    if (on)
        carbons_of(s, state)->enabled = 1;
    else if (pl_session_ctx(s, carbons))
        ((struct carbons *)pl_session_ctx(s, carbons))->enabled = 0;
    return PL_PASS;
}

static int on_enable(struct pl_event *ev, void *state)
{
    return toggle(ev, state, 1);
}

static int on_disable(struct pl_event *ev, void *state)
{
    return toggle(ev, state, 0);
}

static int on_closed(struct pl_event *ev, void *state)
{
    pl_free(pl_session_ctx(ev->session, carbons));
    pl_session_ctx(ev->session, carbons) = NULL;
    return PL_PASS;
}

static const struct pl_option options[] = {
    {"track_errors", PL_OPT_INT, "16", 0, 1024, NULL,
     "Eligible messages remembered per session (peer and id hashes) so "
     "that errors answering them are copied too; 0: errors never are.",
     offsetof(struct state, track_errors)},
    {0},
};

static const struct pl_hook_def hooks[] = {
    {"iq-set/bare/" NS_CARBONS ":enable", on_enable, 0},
    {"iq-set/bare/" NS_CARBONS ":disable", on_disable, 0},
    {"iq-set/host/" NS_CARBONS ":enable", on_enable, 0},
    {"iq-set/host/" NS_CARBONS ":disable", on_disable, 0},
    {"message/bare", on_incoming, -100},
    {"message/full", on_incoming, -100},
    {"message/delivered", on_delivered, 0},
    {"message/outgoing", on_outgoing, -100},
    {"session/closed", on_closed, 0},
    {"session/dropped", on_closed, 0},
    {"session/export", on_export, 0},
    {"session/import", on_import, 0},
    {0},
};

static const char *const features[] = {NS_CARBONS, NULL};

const struct pl_module pl_mod_carbons = {
    .abi = PL_MODULE_ABI,
    .default_on = 1,
    .name = "carbons",
    .summary = "copies a user's conversations to all of their clients",
    .xeps = "XEP-0280, XEP-0297, XEP-0334",
    .features = features,
    .options = options,
    .hooks = hooks,
    .state_size = sizeof(struct state),
};
