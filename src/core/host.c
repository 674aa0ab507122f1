/*
 * host.c - virtual hosts: TLS contexts and per-host module instances; see
 * host.h.
 */
#include "host.h"

#include <string.h>
#include <unistd.h>

#include "alloc.h"
#include "error.h"
#include "log.h"

static struct pl_host *hosts;
static int nhosts;

/* Service subdomains claimed by modules (few: a linear scan is cheaper
 * than hashing). */
struct service {
    char *domain;          /* normalized, owned */
    char *name;            /* in the owner's disco#items; NULL: not listed */
    struct pl_host *host;  /* owner */
    char names[3][56];     /* "<prefix>/message", "/presence", "/iq" */
    const char *events[3]; /* pointers into names */
};
static struct service *services;
static int nservices;

int pl_host_add_service(struct pl_host *h, const char *domain,
                        const char *prefix, const char *name)
{
    if (strlen(prefix) > 40)
        return PL_EINVAL;
    if (pl_host_find(domain) || pl_host_find_service(domain, NULL))
        return PL_ECONFLICT;
    services = pl_realloc(services,
                          (size_t)(nservices + 1) * sizeof(*services));
    struct service *sv = &services[nservices++];
    sv->domain = pl_strdup(domain);
    sv->name = name ? pl_strdup(name) : NULL;
    sv->host = h;
    static const char *const kinds[3] = {"message", "presence", "iq"};
    for (int i = 0; i < 3; i++) {
        snprintf(sv->names[i], sizeof(sv->names[i]), "%s/%s", prefix, kinds[i]);
    }
    /* The array may move on the next claim: events are re-pointed on
     * lookup, not kept from here. */
    return PL_OK;
}

struct pl_host *pl_host_find_service(const char *domain,
                                     const char *const **events)
{
    for (int i = 0; i < nservices; i++)
        if (strcmp(services[i].domain, domain) == 0) {
            struct service *sv = &services[i];
            if (events) {
                for (int k = 0; k < 3; k++)
                    sv->events[k] = sv->names[k];
                *events = sv->events;
            }
            return sv->host;
        }
    return NULL;
}

void pl_host_each_service(struct pl_host *h, pl_host_service_fn *fn, void *ud)
{
    for (int i = 0; i < nservices; i++)
        if (services[i].host == h && services[i].name)
            fn(services[i].domain, services[i].name, ud);
}

struct pl_host *pl_host_find(const char *domain)
{
    for (int i = 0; i < nhosts; i++)
        if (strcmp(hosts[i].domain, domain) == 0)
            return &hosts[i];
    return NULL;
}

struct pl_host *pl_host_at(int i)
{
    return i >= 0 && i < nhosts ? &hosts[i] : NULL;
}

void *pl_host_module_state(struct pl_host *h, const char *name)
{
    const struct pl_module *m = pl_module_find(name);
    int i = m ? pl_module_index(m) : -1;
    return i >= 0 ? h->ctx[i] : NULL;
}

int pl_host_has_module(struct pl_host *h, const char *name)
{
    for (int i = 0; i < h->nmods; i++)
        if (strcmp(h->mods[i].mod->name, name) == 0)
            return 1;
    return 0;
}

static struct pl_tls_host *sni_lookup(const char *name)
{
    struct pl_host *h = pl_host_find(name);
    return h ? h->tls : NULL;
}

static int load_tls(struct pl_config *c, struct pl_host *h,
                    struct pl_tls_host **out)
{
    struct pl_host_conf *hc = h->conf;
    /* A missing certificate is made only where parleyd keeps its own. */
    size_t dl = strlen(c->s.data_dir);
    int ours = strncmp(hc->certificate, c->s.data_dir, dl) == 0;
    if (access(hc->certificate, R_OK) != 0) {
        if (!ours) {
            pl_log_error("host", "%s: certificate %s is not readable",
                         h->domain, hc->certificate);
            return PL_ETLS;
        }
        int rc = pl_tls_ensure_selfsigned(h->domain, hc->certificate, hc->key);
        if (rc != PL_OK)
            return rc;
    }
    int rc = pl_tls_host_load(h->domain, hc->certificate, hc->key, out);
    if (rc == PL_OK) {
        pl_tls_set_sni((*out)->ctx, sni_lookup);
        SSL_CTX_set_num_tickets((*out)->ctx, (size_t)c->s.tls_tickets);
    }
    return rc;
}

static int add_module(struct pl_host *h, const char *name, int depth, char *err,
                      size_t errlen)
{
    if (pl_host_has_module(h, name))
        return PL_OK;
    const struct pl_module *m = pl_module_find(name);
    if (!m || depth > 16) {
        snprintf(err, errlen, "host %s: unknown module '%s'", h->domain, name);
        return PL_EINVAL;
    }
    if (m->frontend) {
        snprintf(err, errlen,
                 "host %s: '%s' is a front end, not a host module (it "
                 "serves the listeners that name its protocols)",
                 h->domain, name);
        return PL_EINVAL;
    }
    if (m->abi != PL_MODULE_ABI) {
        snprintf(err, errlen, "module %s: ABI %d, core has %d", name, m->abi,
                 PL_MODULE_ABI);
        return PL_EINVAL;
    }
    for (int i = 0; m->deps && m->deps[i]; i++)
        if (add_module(h, m->deps[i], depth + 1, err, errlen) != PL_OK)
            return PL_EINVAL;
    h->mods = pl_realloc(h->mods, (size_t)(h->nmods + 1) * sizeof(*h->mods));
    struct pl_mod_inst *mi = &h->mods[h->nmods++];
    mi->mod = m;
    mi->state = pl_calloc(1, m->state_size ? m->state_size : 1);
    h->ctx[pl_module_index(m)] = mi->state;
    return PL_OK;
}

static int start_modules(struct pl_config *c, struct pl_host *h, char *err,
                         size_t errlen)
{
    for (int i = 0; i < h->conf->modules.n; i++)
        if (add_module(h, h->conf->modules.v[i], 0, err, errlen) != PL_OK)
            return PL_EINVAL;
    for (int i = 0; i < h->nmods; i++) {
        struct pl_mod_inst *mi = &h->mods[i];
        const struct pl_module *m = mi->mod;
        if (m->options &&
            pl_config_apply(m->options,
                            config_setting_get_member(h->conf->group,
                                                      pl_module_group(m)),
                            config_lookup(&c->cfg, pl_module_group(m)),
                            mi->state, 1, err, errlen) != PL_OK)
            return PL_EINVAL;
        for (const struct pl_hook_def *hd = m->hooks; hd && hd->event; hd++)
            pl_hook_add(h, hd->event, hd->fn, hd->priority, mi->state);
        if (m->load && m->load(h, mi->state) != PL_OK) {
            snprintf(err, errlen, "host %s: module %s failed to load",
                     h->domain, m->name);
            return PL_EINVAL;
        }
    }
    for (int i = 0; i < h->nmods; i++)
        if (h->mods[i].mod->ready &&
            h->mods[i].mod->ready(h, h->mods[i].state) != PL_OK) {
            snprintf(err, errlen, "host %s: module %s failed to start",
                     h->domain, h->mods[i].mod->name);
            return PL_EINVAL;
        }
    return PL_OK;
}

int pl__hosts_init(struct pl_config *c)
{
    hosts = pl_calloc((size_t)c->nhosts, sizeof(*hosts));
    nhosts = c->nhosts;
    for (int i = 0; i < c->nhosts; i++) {
        hosts[i].domain = pl_strdup(c->hosts[i].domain);
        hosts[i].conf = &c->hosts[i];
    }
    for (int i = 0; i < nhosts; i++) {
        if (load_tls(c, &hosts[i], &hosts[i].tls) != PL_OK)
            return PL_ETLS;
        char err[512];
        if (start_modules(c, &hosts[i], err, sizeof(err)) != PL_OK) {
            pl_log_error("host", "%s", err);
            return PL_EINVAL;
        }
        pl_log_info("host", "serving %s with %d modules", hosts[i].domain,
                    hosts[i].nmods);
    }
    return PL_OK;
}

int pl__hosts_check(struct pl_config *c, char *err, size_t errlen)
{
    for (int i = 0; i < c->nhosts; i++) {
        static struct pl_host h; /* large (ctx): not on the stack */
        memset(&h, 0, sizeof(h));
        h.domain = c->hosts[i].domain;
        h.conf = &c->hosts[i];
        int rc = PL_OK;
        for (int j = 0; j < h.conf->modules.n && rc == PL_OK; j++)
            rc = add_module(&h, h.conf->modules.v[j], 0, err, errlen);
        for (int j = 0; j < h.nmods; j++) {
            const struct pl_module *m = h.mods[j].mod;
            if (rc == PL_OK && m->options)
                rc = pl_config_apply(m->options,
                                     config_setting_get_member(h.conf->group,
                                                               pl_module_group(
                                                                   m)),
                                     config_lookup(&c->cfg, pl_module_group(m)),
                                     h.mods[j].state, 1, err, errlen);
            if (m->options)
                pl_config_release(m->options, h.mods[j].state);
            pl_free(h.mods[j].state);
        }
        pl_free(h.mods);
        if (rc != PL_OK)
            return rc;
    }
    return PL_OK;
}

int pl__hosts_reload_tls(struct pl_config *c)
{
    for (int i = 0; i < nhosts && i < c->nhosts; i++) {
        struct pl_tls_host *t = NULL;
        hosts[i].conf = &c->hosts[i];
        if (load_tls(c, &hosts[i], &t) != PL_OK) {
            pl_log_error("host", "%s: keeping the old certificate",
                         hosts[i].domain);
            continue;
        }
        /* Sessions hold their SSL objects, which reference the old
         * context; OpenSSL frees it when the last one goes. */
        pl_tls_host_free(hosts[i].tls);
        hosts[i].tls = t;
        pl_log_info("host", "%s: certificate reloaded", hosts[i].domain);
    }
    return PL_OK;
}

void pl__hosts_free(void)
{
    for (int i = 0; i < nhosts; i++) {
        struct pl_host *h = &hosts[i];
        for (int j = h->nmods - 1; j >= 0; j--) {
            if (h->mods[j].mod->unload)
                h->mods[j].mod->unload(h, h->mods[j].state);
            if (h->mods[j].mod->options)
                pl_config_release(h->mods[j].mod->options, h->mods[j].state);
            pl_free(h->mods[j].state);
        }
        pl_free(h->mods);
        pl__hook_clear(h);
        pl_tls_host_free(h->tls);
        pl_free(h->domain);
    }
    pl_free(hosts);
    hosts = NULL;
    nhosts = 0;
    for (int i = 0; i < nservices; i++) {
        pl_free(services[i].domain);
        pl_free(services[i].name);
    }
    pl_free(services);
    services = NULL;
    nservices = 0;
}
