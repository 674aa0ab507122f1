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
};

/* Host serving domain (normalized), or NULL. */
struct pl_host *pl_host_find(const char *domain);
/* The i-th host or NULL. */
struct pl_host *pl_host_at(int i);
/* Module state of name on h, or NULL if not enabled there. */
void *pl_host_module_state(struct pl_host *h, const char *name);
/* Whether module name is enabled on h. */
int pl_host_has_module(struct pl_host *h, const char *name);

/* Server lifetime (parleyd main). */
int pl__hosts_init(struct pl_config *c);
void pl__hosts_free(void);
/* Validates every host's modules and module options (--check-config). */
int pl__hosts_check(struct pl_config *c, char *err, size_t errlen);
/* SIGHUP: new certificates for new connections. */
int pl__hosts_reload_tls(struct pl_config *c);

#endif
