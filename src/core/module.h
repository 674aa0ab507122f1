/*
 * module.h - the module descriptor and the registry of built-in modules.
 *
 * A module is one constant `struct pl_module pl_mod_<name>` (see
 * ../shared/STYLE.md and src/modules/mod_ping.c); modules.def lists them.
 * For each host that enables it, the core allocates state_size zeroed
 * bytes, fills the options into it, registers its hooks with that state,
 * and calls load.  Features listed are announced in the host's disco#info.
 *
 * Extending: add a field at the end and bump PL_MODULE_ABI.
 */
#ifndef PL_MODULE_H
#define PL_MODULE_H

#include <stddef.h>

#include "config.h"
#include "hook.h"

#define PL_MODULE_ABI 1

struct pl_host;
struct pl_storage_driver;

struct pl_module {
    int abi;                           /* PL_MODULE_ABI */
    const char *name;                  /* "ping" */
    const char *summary;               /* one line */
    const char *xeps;                  /* "XEP-0199", informative */
    const char *const *deps;           /* modules it needs, NULL-ended */
    const char *const *features;       /* disco features, NULL-ended */
    const struct pl_option *options;   /* NULL or {0}-ended */
    const struct pl_hook_def *hooks;   /* NULL or {0}-ended */
    size_t state_size;                 /* per-host state, zeroed */
    /* After options are read; may add hooks dynamically. */
    int (*load)(struct pl_host *h, void *state);
    /* After every module of the host is loaded. */
    int (*ready)(struct pl_host *h, void *state);
    /* Before the state is freed. */
    void (*unload)(struct pl_host *h, void *state);
    /* Provided service: a storage driver, or NULL. */
    const struct pl_storage_driver *storage;
};

struct pl_mod_inst {
    const struct pl_module *mod; /* descriptor */
    void *state;                 /* per-host state */
};

/* Built-in module by name, or NULL. */
const struct pl_module *pl_module_find(const char *name);
/* Iterates the built-in modules: returns the i-th or NULL past the end. */
const struct pl_module *pl_module_at(int i);
/* Prints each module's options as configuration groups. */
void pl_module_print_options(FILE *f);

#endif
