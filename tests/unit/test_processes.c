/*
 * test_processes.c - server.processes (config.c, supervise.h): the
 * setting takes an integer or "auto" (one per online core), more than one
 * needs the cluster group and the PostgreSQL driver (the cluster module
 * refuses the rest), and process I of them gets its own admin socket
 * (<path>.I), node name (<node>-I) and link port (port + I).
 *
 * Extending: a new refusal is a row of rows[].
 */
#include <string.h>
#include <unistd.h>

#include "cluster/cluster_int.h"
#include "config.h"
#include "error.h"
#include "module.h"
#include "unit.h"

#define CLUSTER                                                                \
    "cluster={ enable = true; node = \"n\"; redis = \"127.0.0.1:1\"; "         \
    "link = \"127.0.0.1:5290\"; secret = \"0123456789abcdef\"; }"
#define PG "storage.driver=\"postgresql\""

static int load(const char *a, const char *b, const char *c,
                struct pl_config **out, char *err, size_t errlen)
{
    char *sets[3];
    int n = 0;
    if (a)
        sets[n++] = (char *)a;
    if (b)
        sets[n++] = (char *)b;
    if (c)
        sets[n++] = (char *)c;
    return pl_config_load(NULL, sets, n, out, err, errlen);
}

static const struct pl_cluster_settings *cluster_of(struct pl_config *c)
{
    for (int i = 0; pl_module_at(i); i++)
        if (strcmp(pl_module_at(i)->name, "cluster") == 0)
            return c->frontend[i];
    return NULL;
}

void test_processes_config(void)
{
    static const struct {
        const char *a, *b, *c;
        int rc;
        const char *needle; /* in the error */
    } rows[] = {
        {"server.processes=2", NULL, NULL, PL_EINVAL,
         "needs the cluster group"},
        {"server.processes=2", CLUSTER, NULL, PL_EINVAL, "shared database"},
        {"server.processes=\"auto\"", CLUSTER, NULL, PL_EINVAL,
         "shared database"},
        {"server.processes=\"many\"", CLUSTER, PG, PL_EINVAL,
         "must be an integer"},
        {"server.processes=0", CLUSTER, PG, PL_EINVAL, "between 1 and"},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        struct pl_config *c = NULL;
        char err[512] = "";
        CHECK_INT(load(rows[i].a, rows[i].b, rows[i].c, &c, err, sizeof(err)),
                  rows[i].rc);
        if (!strstr(err, rows[i].needle)) {
            fprintf(stderr, "  row %zu: '%s' lacks '%s'\n", i, err,
                    rows[i].needle);
            CHECK(0);
        }
        pl_config_free(c);
    }
    /* The default: one process, no supervisor. */
    struct pl_config *c = NULL;
    char err[512] = "";
    CHECK_INT(load(NULL, NULL, NULL, &c, err, sizeof(err)), PL_OK);
    CHECK_INT(c->s.processes, 1);
    CHECK_INT(c->s.processes_auto, 0);
    pl_config_free(c);
    /* "auto": the online cores. */
    CHECK_INT(load("server.processes=\"auto\"", CLUSTER, PG, &c, err,
                   sizeof(err)),
              PL_OK);
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    CHECK_INT(c->s.processes, cores > 1 ? cores : 1);
    CHECK_INT(c->s.processes_auto, 1);
    const struct pl_cluster_settings *s = cluster_of(c);
    CHECK(s != NULL);
    CHECK_STR(s->node, "n"); /* the supervisor's view: unchanged */
    pl_config_free(c);
    /* Process 2 of them. */
    pl__config_set_process(2);
    CHECK_INT(load("server.processes=3", CLUSTER, PG, &c, err, sizeof(err)),
              PL_OK);
    pl__config_set_process(-1);
    CHECK_STR(c->s.admin_socket, "var/admin.sock.2");
    s = cluster_of(c);
    CHECK_STR(s->node, "n-2");
    CHECK_STR(s->link, "127.0.0.1:5292");
    pl_config_free(c);
    /* No room for port + I. */
    pl__config_set_process(3);
    CHECK_INT(load("server.processes=4",
                   "cluster={ enable = true; node = \"n\"; link = "
                   "\"127.0.0.1:65534\"; secret = \"0123456789abcdef\"; }",
                   PG, &c, err, sizeof(err)),
              PL_EINVAL);
    pl__config_set_process(-1);
    CHECK(strstr(err, "room for port + 3") != NULL);
}
