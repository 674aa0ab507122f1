/*
 * host.h - virtual hosts: a domain, its TLS context, its hooks and the
 * states of the modules it enables.
 */
#ifndef PL_HOST_H
#define PL_HOST_H

#include "config.h"
#include "map.h"
#include "module.h"
#include "tls.h"

struct pl_host {
    char *domain;              /* normalized domain */
    struct pl_host_conf *conf; /* its configuration (owned by config) */
    struct pl_tls_host *tls;   /* certificate context, NULL without TLS */
    struct pl_map hooks;       /* event name -> handler list */
    struct pl_mod_inst *mods;  /* enabled modules */
    int nmods;
    void *ctx[PL_MODULE_COUNT]; /* module states by index, NULL if off:
                                 * pl_host_ctx */
};

/* The state of module name on h (NULL if it is not enabled there), by
 * index: pl_host_ctx(h, muc). */
#define pl_host_ctx(h, name) ((h)->ctx[PL_MODIDX_##name])

/* Host serving domain (normalized), or NULL. */
struct pl_host *pl_host_find(const char *domain);
/* The i-th host or NULL. */
struct pl_host *pl_host_at(int i);
/* Module state of name on h, or NULL if not enabled there. */
void *pl_host_module_state(struct pl_host *h, const char *name);
/* Whether module name is enabled on h. */
int pl_host_has_module(struct pl_host *h, const char *name);

/*
 * Service subdomains: a module on host h claims domain (for example
 * "conference.example.org", XEP-0045) and the router hands every stanza
 * addressed to that domain or to a JID at it to h's hooks
 * "<prefix>/message", "<prefix>/presence" and "<prefix>/iq" (see
 * doc/routing.md).  Call from a module's load or ready.  The TLS
 * certificate of h is not involved: clients reach the service through
 * their own server.  With a name (copied), the domain is an item of h's
 * disco#items (pl_host_each_service; a service module claims through
 * pl_service_claim, service.h); NULL: not listed (components).
 * PL_ECONFLICT if domain is a host or already claimed; PL_EINVAL if
 * prefix is too long (over 40 bytes).  Claims last as long as the host.
 */
int pl_host_add_service(struct pl_host *h, const char *domain,
                        const char *prefix, const char *name);

typedef void pl_host_service_fn(const char *domain, const char *name, void *ud);
/* Calls fn for each service domain claimed on h with a name, in the order
 * of the claims. */
void pl_host_each_service(struct pl_host *h, pl_host_service_fn *fn, void *ud);

/* Owning host of a claimed service domain, or NULL; *events (may be NULL)
 * receives the event names {message, presence, iq} of the claim. */
struct pl_host *pl_host_find_service(const char *domain,
                                     const char *const **events);

/* Server lifetime (parleyd main). */
int pl__hosts_init(struct pl_config *c);
void pl__hosts_free(void);
/* Validates every host's modules and module options (--check-config). */
int pl__hosts_check(struct pl_config *c, char *err, size_t errlen);
/* SIGHUP: new certificates for new connections. */
int pl__hosts_reload_tls(struct pl_config *c);

#endif
