/*
 * module.c - the registry of built-in modules, generated from
 * src/modules/modules.def; see module.h.
 */
#include "module.h"

#include <string.h>

#include "error.h"
#include "listen.h"
#include "log.h"

#define PL_MODULE(name) extern const struct pl_module pl_mod_##name;
#define PL_MODULE_SESSION(name) PL_MODULE(name)
#include "../modules/modules.def"
#undef PL_MODULE_SESSION
#undef PL_MODULE

static const struct pl_module *const all[] = {
#define PL_MODULE(name) &pl_mod_##name,
#define PL_MODULE_SESSION(name) PL_MODULE(name)
#include "../modules/modules.def"
#undef PL_MODULE_SESSION
#undef PL_MODULE
    NULL,
};

const struct pl_module *pl_module_find(const char *name)
{
    for (int i = 0; all[i]; i++)
        if (strcmp(all[i]->name, name) == 0)
            return all[i];
    return NULL;
}

const struct pl_module *pl_module_at(int i)
{
    if (i < 0 || i >= (int)(sizeof(all) / sizeof(all[0])) - 1)
        return NULL;
    return all[i];
}

int pl_module_index(const struct pl_module *m)
{
    for (int i = 0; all[i]; i++)
        if (all[i] == m)
            return i;
    return -1;
}

const struct pl_protocol *pl_module_protocol(const char *name,
                                             const struct pl_module **owner)
{
    for (int i = 0; all[i]; i++) {
        const struct pl_frontend *fe = all[i]->frontend;
        for (int k = 0; fe && fe->protocols && fe->protocols[k]; k++)
            if (strcmp(fe->protocols[k]->name, name) == 0) {
                if (owner)
                    *owner = all[i];
                return fe->protocols[k];
            }
    }
    return NULL;
}

void pl_module_protocol_names(char *buf, size_t len)
{
    size_t used = 0;
    if (len)
        buf[0] = '\0';
    for (int i = 0; all[i]; i++) {
        const struct pl_frontend *fe = all[i]->frontend;
        for (int k = 0; fe && fe->protocols && fe->protocols[k]; k++) {
            int n = snprintf(buf + used, len - used, "%s%s", used ? ", " : "",
                             fe->protocols[k]->name);
            if (n < 0 || (size_t)n >= len - used)
                return;
            used += (size_t)n;
        }
    }
}

int pl__frontends_start(struct pl_config *c)
{
    for (int i = 0; all[i]; i++) {
        const struct pl_frontend *fe = all[i]->frontend;
        if (fe && fe->start) {
            int rc = fe->start(c, c->frontend[i]);
            if (rc != PL_OK) {
                pl_log_error("parleyd", "front end %s failed to start",
                             all[i]->name);
                return rc;
            }
        }
    }
    return pl__listen_start(c);
}

void pl__frontends_stop(void)
{
    pl__listen_stop();
    for (int i = 0; all[i]; i++)
        if (all[i]->frontend && all[i]->frontend->stop)
            all[i]->frontend->stop();
}

void pl__frontends_reload(struct pl_config *c)
{
    pl__listen_reload(c);
    for (int i = 0; all[i]; i++)
        if (all[i]->frontend && all[i]->frontend->reload)
            all[i]->frontend->reload(c, c->frontend[i]);
}

int pl__frontends_shared_secret(const struct pl_config *c)
{
    for (int i = 0; all[i]; i++) {
        const struct pl_frontend *fe = all[i]->frontend;
        if (fe && fe->shared_secret && c->frontend[i] &&
            fe->shared_secret(c->frontend[i]))
            return 1;
    }
    return 0;
}

unsigned long pl__frontends_count(void)
{
    unsigned long n = 0;
    for (int i = 0; all[i]; i++)
        if (all[i]->frontend && all[i]->frontend->count)
            n += all[i]->frontend->count();
    return n;
}

void pl__frontends_free(void)
{
    for (int i = 0; all[i]; i++)
        if (all[i]->frontend && all[i]->frontend->free)
            all[i]->frontend->free();
    pl__listen_free();
}

void pl_module_print_options(FILE *f)
{
    for (int i = 0; all[i]; i++) {
        const struct pl_frontend *fe = all[i]->frontend;
        if (fe && fe->options && fe->options[0].name) {
            fprintf(f, "# Front end %s: %s\n", all[i]->name, all[i]->summary);
            pl_config_print_group(f, pl_module_group(all[i]), fe->options, "");
        }
        if (!all[i]->options || !all[i]->options[0].name)
            continue;
        fprintf(f, "# Module %s: %s (%s)\n", all[i]->name, all[i]->summary,
                all[i]->xeps ? all[i]->xeps : "");
        pl_config_print_group(f, pl_module_group(all[i]), all[i]->options, "");
    }
}
