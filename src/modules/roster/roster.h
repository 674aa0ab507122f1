/*
 * roster.h - the roster model shared by mod_roster and mod_presence:
 * items, their storage encoding, and the subscription state machine of
 * RFC 6121 §3 and Appendix A as pure functions (unit-tested on their own).
 *
 * Items live in the per-user document store "roster", one document per
 * contact (key: the contact's bare JID); the roster version is the
 * document "ver" of store "roster_meta"; an inbound subscription request
 * waiting for the user's answer is kept in store "roster_pending" (key:
 * contact) so it can be delivered again at the next login (§3.1.3).
 * Functions marked "storage thread" run only inside pl_storage_submit jobs.
 */
#ifndef PL_ROSTER_H
#define PL_ROSTER_H

#include "core/modapi.h"

#define PL_NS_ROSTER "jabber:iq:roster"

enum pl_sub {
    PL_SUB_NONE = 0,
    PL_SUB_TO,   /* the user receives the contact's presence */
    PL_SUB_FROM, /* the contact receives the user's presence */
    PL_SUB_BOTH,
};

struct pl_roster_item {
    char *jid;     /* contact's bare JID (normalized) */
    char *name;    /* handle, or NULL */
    char **groups; /* group names */
    int ngroups;
    int sub;                 /* enum pl_sub */
    unsigned ask : 1;        /* pending out: the user asked to subscribe */
    unsigned pending_in : 1; /* pending in: the contact asked */
    unsigned approved : 1;   /* pre-approved (§3.4) */
    unsigned hidden : 1;     /* not in the user's roster yet (only a
                             * pending request or a pre-approval) */
};

/* What a transition asks the caller to do (bit flags). */
enum {
    PL_R_CHANGED = 1 << 0,       /* save the item and push it */
    PL_R_ROUTE = 1 << 1,         /* outbound: route the stanza to the contact */
    PL_R_DELIVER = 1 << 2,       /* inbound: deliver to the user's resources */
    PL_R_AUTOREPLY = 1 << 3,     /* inbound: answer 'subscribed' for the user */
    PL_R_SEND_PRESENCE = 1 << 4, /* send the user's presence to contact */
    PL_R_SEND_UNAVAIL = 1 << 5,  /* send 'unavailable' to the contact */
    PL_R_KEEP_PENDING = 1 << 6,  /* store the request for redelivery */
    PL_R_DROP_PENDING = 1 << 7,  /* forget a stored request */
};

/*
 * The user sends presence of type `type` (subscribe, subscribed,
 * unsubscribe, unsubscribed) to the contact whose item is it (a zeroed,
 * hidden item if the contact is not in the roster).  Returns PL_R_* flags.
 */
int pl_roster_outbound(struct pl_roster_item *it, const char *type);
/* The contact's presence of type `type` arrives for the user. */
int pl_roster_inbound(struct pl_roster_item *it, const char *type);

const char *pl_roster_sub_name(int sub);
/* Whether the contact receives the user's presence. */
static inline int pl_roster_has_from(const struct pl_roster_item *it)
{
    return it->sub == PL_SUB_FROM || it->sub == PL_SUB_BOTH;
}
/* Whether the user receives the contact's presence. */
static inline int pl_roster_has_to(const struct pl_roster_item *it)
{
    return it->sub == PL_SUB_TO || it->sub == PL_SUB_BOTH;
}

/* Encoding for storage; decode returns PL_EINVAL on a corrupt document. */
void pl_roster_item_encode(const struct pl_roster_item *it, struct pl_buf *out);
int pl_roster_item_decode(const char *jid, const void *data, size_t len,
                          struct pl_roster_item *out);
void pl_roster_item_free(struct pl_roster_item *it); /* the fields */
/* Deep copy of the fields into out. */
void pl_roster_item_copy(struct pl_roster_item *out,
                         const struct pl_roster_item *it);
/* Appends <item/> to query (roster get, push). */
void pl_roster_item_xml(struct pl_stanza *st, struct pl_node *query,
                        const struct pl_roster_item *it);

/* A whole roster as loaded on the storage thread. */
struct pl_roster {
    struct pl_roster_item *v; /* items, hidden ones included */
    int n;
    long ver; /* roster version */
};
void pl_roster_free(struct pl_roster *r);

/* Storage thread.  PL_ENOT_FOUND when the contact has no item. */
int pl_roster_load_item(const struct pl_storage_driver *d, void *db,
                        const char *host, const char *user, const char *contact,
                        struct pl_roster_item *out);
/* Storage thread: saves (or deletes an empty hidden item) and bumps the
 * version into *ver. */
int pl_roster_save_item(const struct pl_storage_driver *d, void *db,
                        const char *host, const char *user,
                        const struct pl_roster_item *it, long *ver);
/* Storage thread: removes the item and bumps the version. */
int pl_roster_delete_item(const struct pl_storage_driver *d, void *db,
                          const char *host, const char *user,
                          const char *contact, long *ver);
int pl_roster_load(const struct pl_storage_driver *d, void *db,
                   const char *host, const char *user, struct pl_roster *out);

/*
 * Loop: pushes item (subscription='remove' when removed) with version ver
 * to every resource of user_bare that asked for the roster (§2.1.6).
 */
void pl_roster_push(const char *user_bare, const struct pl_roster_item *it,
                    int removed, long ver);

#endif
