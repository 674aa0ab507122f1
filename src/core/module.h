/*
 * module.h - the module descriptor and the registry of built-in modules.
 *
 * A module is one constant `struct pl_module pl_mod_<name>` (see
 * ../shared/STYLE.md and src/modules/mod_ping.c); src/modules/modules.def
 * lists them, one line each, and that line is all the core needs to know.
 *
 * Two kinds share the descriptor:
 *  - Features (src/modules/): for each host that enables one, the core
 *    allocates state_size zeroed bytes, fills the options (group `group`,
 *    in the host's group or at top level) into it, registers its hooks with
 *    that state, and calls load.  Features listed are announced in the
 *    host's disco#info.  default_on puts it on hosts that list no modules.
 *  - Front ends (src/xmpp/, src/sip/, later src/http/): a server-wide
 *    `frontend` that serves listener protocols (listen.h) and has
 *    server-wide options, start, stop and reload.
 *
 * Per-session and per-host state: each module has an index, generated from
 * modules.def (PL_MODIDX_<name>), into struct pl_host.ctx; a module listed
 * with PL_MODULE_SESSION also has a slot in struct pl_session.ctx
 * (PL_SLOTIDX_<name>): pl_session_ctx(s, csi) is the csi module's slot of
 * session s, as nginx's ctx_index (a module without one does not
 * compile).  No enum of module names is written by hand.
 *
 * Extending: add a field at the end and bump PL_MODULE_ABI.
 */
#ifndef PL_MODULE_H
#define PL_MODULE_H

#include <stddef.h>

#include "config.h"
#include "hook.h"

#define PL_MODULE_ABI 2

struct pl_config;
struct pl_host;
struct pl_protocol;
struct pl_storage_driver;

/* Every built-in module's index (PL_MODIDX_ping, ...) and their count. */
enum pl_module_index {
#define PL_MODULE(name) PL_MODIDX_##name,
#define PL_MODULE_SESSION(name) PL_MODULE(name)
#include "../modules/modules.def"
#undef PL_MODULE_SESSION
#undef PL_MODULE
    PL_MODULE_COUNT
};

/* The per-session slots: one for each PL_MODULE_SESSION line, so that a
 * session carries pointers only for the modules that keep state in it. */
enum pl_session_slot {
#define PL_MODULE(name)
#define PL_MODULE_SESSION(name) PL_SLOTIDX_##name,
#include "../modules/modules.def"
#undef PL_MODULE_SESSION
#undef PL_MODULE
    PL_SESSION_SLOTS
};

/*
 * A front end: a way into the server (XMPP c2s, s2s, components; SIP;
 * later HTTP).  It serves the listener protocols it names (listen.h); its
 * options form the top-level group named by the module's group (or name)
 * and are read, checked and printed by the core like any other; the
 * settings struct lives as long as the configuration it came from (a
 * SIGHUP passes a new one to reload).
 */
struct pl_frontend {
    const struct pl_protocol *const *protocols; /* served, NULL-ended */
    const struct pl_option *options; /* server-wide options, or NULL */
    size_t settings_size;            /* struct the options fill */
    /* Extra checks beyond the options' own, at every load (--check-config,
     * start, SIGHUP); may fill more of settings. */
    int (*check)(struct pl_config *c, void *settings, char *err, size_t errlen);
    /* Frees what check added to settings (before the options' own). */
    void (*release)(void *settings);
    /* After the hosts are up, before the listeners open. */
    int (*start)(struct pl_config *c, void *settings);
    /* Shutdown: listeners are closed; end every connection. */
    void (*stop)(void);
    /* SIGHUP: new settings for new and, where it can, open connections. */
    void (*reload)(struct pl_config *c, void *settings);
    /* Connections still open (the shutdown drain waits for 0). */
    unsigned long (*count)(void);
    /* After the drain, before the hosts go: frees what start made. */
    void (*free)(void);
    /* Non-zero when these settings need the server secret shared through
     * the storage (the nodes of a cluster sign and verify each other's
     * tokens and dialback keys), or NULL: the secret in data_dir. */
    int (*shared_secret)(const void *settings);
};

struct pl_module {
    int abi;                         /* PL_MODULE_ABI */
    const char *name;                /* "ping" */
    const char *summary;             /* one line */
    const char *xeps;                /* "XEP-0199", informative */
    const char *const *deps;         /* modules it needs, NULL-ended */
    const char *const *features;     /* disco features, NULL-ended */
    const struct pl_option *options; /* NULL or {0}-ended */
    const struct pl_hook_def *hooks; /* NULL or {0}-ended */
    size_t state_size;               /* per-host state, zeroed */
    /* After options are read; may add hooks dynamically. */
    int (*load)(struct pl_host *h, void *state);
    /* After every module of the host is loaded. */
    int (*ready)(struct pl_host *h, void *state);
    /* Before the state is freed. */
    void (*unload)(struct pl_host *h, void *state);
    /* Provided service: a storage driver, or NULL. */
    const struct pl_storage_driver *storage;
    /* ABI 2. */
    int default_on;                     /* on for hosts listing no modules */
    const char *group;                  /* option group; NULL: name */
    const struct pl_frontend *frontend; /* a front end, or NULL */
};

struct pl_mod_inst {
    const struct pl_module *mod; /* descriptor */
    void *state;                 /* per-host state */
};

/* The option group of m (its group, else its name). */
static inline const char *pl_module_group(const struct pl_module *m)
{
    return m->group ? m->group : m->name;
}

/* Built-in module by name, or NULL. */
const struct pl_module *pl_module_find(const char *name);
/* Iterates the built-in modules: returns the i-th or NULL past the end. */
const struct pl_module *pl_module_at(int i);
/* Index of m in modules.def (PL_MODIDX_*), or -1 if it is not built in. */
int pl_module_index(const struct pl_module *m);
/* The provider of listener protocol name, or NULL; *owner (may be NULL)
 * receives the front-end module serving it. */
const struct pl_protocol *pl_module_protocol(const char *name,
                                             const struct pl_module **owner);
/* Appends the names of every listener protocol, comma-separated, to buf
 * (for error messages). */
void pl_module_protocol_names(char *buf, size_t len);
/*
 * Front ends' lifetime (parleyd): start runs every front end's start, then
 * opens the listeners (listen.h); stop closes the listeners, then stops
 * each front end; reload passes the new settings; count sums their open
 * connections.
 */
int pl__frontends_start(struct pl_config *c);
void pl__frontends_stop(void);
void pl__frontends_reload(struct pl_config *c);
unsigned long pl__frontends_count(void);
void pl__frontends_free(void);
/* Non-zero when a front end's settings in c ask for the shared secret. */
int pl__frontends_shared_secret(const struct pl_config *c);
/* Prints each module's options as configuration groups. */
void pl_module_print_options(FILE *f);

#endif
