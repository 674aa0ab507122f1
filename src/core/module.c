/*
 * module.c - the registry of built-in modules, generated from
 * src/modules/modules.def; see module.h.
 */
#include "module.h"

#include <string.h>

#define PL_MODULE(name) extern const struct pl_module pl_mod_##name;
#include "../modules/modules.def"
#undef PL_MODULE

static const struct pl_module *const all[] = {
#define PL_MODULE(name) &pl_mod_##name,
#include "../modules/modules.def"
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

void pl_module_print_options(FILE *f)
{
    for (int i = 0; all[i]; i++) {
        if (!all[i]->options || !all[i]->options[0].name)
            continue;
        fprintf(f, "# Module %s: %s (%s)\n", all[i]->name, all[i]->summary,
                all[i]->xeps ? all[i]->xeps : "");
        pl_config_print_group(f, all[i]->name, all[i]->options, "");
    }
}
