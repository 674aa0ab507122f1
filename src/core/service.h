/*
 * service.h - a service on a domain of its own, <label>.<host> unless
 * configured: chat rooms on conference.<host> (XEP-0045), the SOCKS5
 * proxy on proxy.<host> (XEP-0065), file upload on upload.<host>
 * (XEP-0363).  What they have in common: the claim of the domain, the
 * item that lists it in the host's disco#items, and the XEP-0030 answers
 * of the service itself.
 *
 * A module describes its service once (struct pl_service), claims it
 * from load() with pl_service_claim() (then stanzas to the domain come
 * to its hooks "<prefix>/message", "<prefix>/presence", "<prefix>/iq",
 * host.h), and answers disco#info and disco#items queries to the domain
 * with the replies pl_service_info() and pl_service_items() build,
 * adding what is its own (a XEP-0128 form, the rooms) before routing
 * them.  mod_disco lists every claimed service under its name in the
 * host's disco#items (XEP-0030 §4.1), in the order of the claims.
 *
 * Extending: a new service is a struct pl_service and the calls above;
 * what every service answers alike belongs here.
 */
#ifndef PL_SERVICE_H
#define PL_SERVICE_H

#include "host.h"
#include "stanza.h"

#define PL_NS_DISCO_INFO "http://jabber.org/protocol/disco#info"
#define PL_NS_DISCO_ITEMS "http://jabber.org/protocol/disco#items"

struct pl_service {
    const char *label;           /* default domain: <label>.<host> */
    const char *prefix;          /* its events, and its log lines */
    const char *category;        /* XEP-0030 identity category */
    const char *type;            /* and type */
    const char *const *features; /* disco#info features, NULL-ended */
};

/*
 * Claims for s on h the domain domain_opt, or <label>.<host> when it is
 * NULL or empty, normalized (RFC 7622 domainpart), and lists it under
 * name (copied; NULL: not listed) in h's disco#items.  *domain receives
 * the normalized domain (the caller frees it with pl_free).  Call from a
 * module's load.  PL_EINVAL if it is not a domain, PL_ECONFLICT if a host
 * or another service has it; the reason is logged, and on failure
 * nothing is claimed and *domain is untouched.
 */
int pl_service_claim(struct pl_host *h, const struct pl_service *s,
                     const char *domain_opt, const char *name, char **domain);

/*
 * The disco#info result for the request req (borrowed) to a service s
 * named name: s's identity (with name if not NULL) and features, in
 * order.  Returns a new reference; *query (may be NULL) receives its
 * <query/> for more (XEP-0128 forms).  The caller routes it
 * (pl_route_reply) and unrefs it.
 */
struct pl_stanza *pl_service_info(const struct pl_service *s, const char *name,
                                  struct pl_stanza *req,
                                  struct pl_node **query);

/* The disco#items result for req (borrowed), with no item yet: as
 * pl_service_info. */
struct pl_stanza *pl_service_items(struct pl_stanza *req,
                                   struct pl_node **query);

#endif
