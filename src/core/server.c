/*
 * server.c - the process-wide services; see server.h.
 */
#include "server.h"

#include <string.h>

#include "error.h"
#include "log.h"
#include "loop.h"
#include "storage.h"

static struct pl_loop *loop;
static struct pl_config *config;
static struct pl_workq *cpu;
static unsigned char secret[32];
static int secret_shared; /* secret is the cluster's */

struct pl_loop *pl_server_loop(void)
{
    return loop;
}
struct pl_config *pl_server_config(void)
{
    return config;
}
struct pl_workq *pl_server_cpu(void)
{
    return cpu;
}

struct pl_str pl_server_secret(void)
{
    return (struct pl_str){(const char *)secret, sizeof(secret)};
}

int pl_server_secret_shared(void)
{
    return secret_shared;
}

void pl__server_set(struct pl_loop *l, struct pl_config *c, struct pl_workq *q,
                    const unsigned char *s)
{
    loop = l;
    config = c;
    cpu = q;
    secret_shared = 0;
    if (s)
        memcpy(secret, s, sizeof(secret));
}

void pl__server_set_config(struct pl_config *c)
{
    config = c;
}

/* The shared secret's job: offered, then read back. */
struct share_job {
    unsigned char secret[32]; /* in: ours; out: the stored one */
    int created;              /* ours was stored */
    int rc;                   /* the completion's result */
    int done;
};

static int share_run(const struct pl_storage_driver *d, void *db, void *arg)
{
    struct share_job *j = arg;
    int rc = d->kv_add(db, "", "", "server", "secret", j->secret,
                       sizeof(j->secret));
    if (rc != PL_OK && rc != PL_ECONFLICT)
        return rc;
    j->created = rc == PL_OK;
    struct pl_buf b = {0};
    rc = d->kv_get(db, "", "", "server", "secret", &b);
    if (rc == PL_OK && b.len != sizeof(j->secret)) {
        pl_log_error("server",
                     "the stored server secret has %zu bytes, "
                     "not %zu",
                     b.len, sizeof(j->secret));
        rc = PL_EINVAL;
    }
    if (rc == PL_OK)
        memcpy(j->secret, b.data + b.off, sizeof(j->secret));
    pl_buf_reset(&b);
    return rc;
}

static void share_done(int rc, void *arg)
{
    struct share_job *j = arg;
    j->rc = rc;
    j->done = 1;
    pl_loop_stop(loop);
}

int pl__server_share_secret(void)
{
    struct share_job j;
    /* A batch that failed (PL_ESTORAGE: the database went away, or
     * another node stored its secret while ours was being replayed after
     * a lost connection) wrote nothing: offer again. */
    for (int tries = 0; tries < 3; tries++) {
        memset(&j, 0, sizeof(j));
        j.rc = PL_EIO;
        memcpy(j.secret, secret, sizeof(secret));
        pl_storage_submit(loop, share_run, share_done, &j);
        pl_loop_run(loop);
        if (!j.done) /* the loop stopped for another reason */
            return PL_EIO;
        if (j.rc != PL_ESTORAGE)
            break;
    }
    if (j.rc != PL_OK)
        return j.rc;
    memcpy(secret, j.secret, sizeof(secret));
    secret_shared = 1;
    pl_log_info("server", "server secret: the cluster's, %s the shared storage",
                j.created ? "this node's stored in" : "read from");
    return PL_OK;
}

static long scram_iterations = 10000;

void pl_server_set_scram_iterations(long n)
{
    scram_iterations = n;
}

long pl_server_scram_iterations(void)
{
    return scram_iterations;
}
