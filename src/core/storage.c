/*
 * storage.c - the storage queue: one thread, one open driver handle,
 * batches wrapped in a transaction; durability barriers; the head shared
 * by the modules' jobs (pl_job_new/pl_job_free).  See storage.h.
 */
#include "storage.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "error.h"
#include "log.h"
#include "module.h"
#include "stanza.h"
#include "work.h"

struct job {
    struct pl_work w;           /* queue link; first member */
    pl_storage_run_fn *run;     /* storage-thread part */
    pl_storage_done_fn *done;   /* loop part */
    void *arg;                  /* caller's request */
    struct pl_barrier *barrier; /* joined barrier, or NULL */
    int rc;                     /* run's result */
};

struct pl_barrier {
    long refs;         /* creator + joined jobs not yet completed */
    pl_barrier_fn *fn; /* runs when refs drops to 0; NULL if cancelled */
    void *arg;         /* fn's argument */
};

static struct pl_barrier *current; /* loop thread only */

static const struct pl_storage_driver *driver;
static void *db;
static struct pl_workq *queue;
static atomic_int unavailable; /* set by the driver, read by the loop */

static void batch(void *ctx, int begin)
{
    int rc = begin ? driver->begin(db) : driver->commit(db);
    if (rc != PL_OK)
        pl_log_error("storage", "%s failed", begin ? "begin" : "commit");
}

static void job_work(struct pl_work *w)
{
    struct job *j = (struct job *)w;
    j->rc = j->run(driver, db, j->arg);
}

static void job_done(struct pl_work *w)
{
    struct job *j = (struct job *)w;
    struct pl_barrier *b = j->barrier;
    struct pl_barrier *prev = pl_barrier_enter(b);
    if (j->done)
        j->done(j->rc, j->arg);
    pl_barrier_enter(prev);
    pl_free(j);
    if (b)
        pl_barrier_release(b);
}

struct pl_barrier *pl_barrier_new(pl_barrier_fn *fn, void *arg)
{
    struct pl_barrier *b = pl_malloc(sizeof(*b));
    b->refs = 1;
    b->fn = fn;
    b->arg = arg;
    return b;
}

struct pl_barrier *pl_barrier_enter(struct pl_barrier *b)
{
    struct pl_barrier *prev = current;
    current = b;
    return prev;
}

void pl_barrier_release(struct pl_barrier *b)
{
    if (--b->refs > 0)
        return;
    if (current == b)
        current = NULL;
    if (b->fn)
        b->fn(b->arg);
    pl_free(b);
}

struct pl_barrier *pl_barrier_hold(void)
{
    if (current)
        current->refs++;
    return current;
}

void pl_barrier_cancel(struct pl_barrier *b)
{
    b->fn = NULL;
}

void pl_storage_submit(struct pl_loop *loop, pl_storage_run_fn *run,
                       pl_storage_done_fn *done, void *arg)
{
    struct job *j = pl_calloc(1, sizeof(*j));
    j->w.work = job_work;
    j->w.done = job_done;
    j->run = run;
    j->done = done;
    j->arg = arg;
    if (current) {
        j->barrier = current;
        current->refs++;
    }
    pl_workq_submit(queue, loop, &j->w);
}

void *pl_job_new(size_t size, struct pl_stanza *st, uint64_t sid,
                 const char *host, const char *user)
{
    pl_assert(size >= sizeof(struct pl_job) && host);
    struct pl_job *j = pl_calloc(1, size);
    j->st = st ? pl_stanza_ref(st) : NULL;
    j->sid = sid;
    j->host = pl_strdup(host);
    if (user) {
        j->user = pl_strdup(user);
        size_t n = strlen(user) + strlen(host) + 2;
        j->bare = pl_malloc(n);
        snprintf(j->bare, n, "%s@%s", user, host);
    }
    return j;
}

void pl_job_free(void *job)
{
    struct pl_job *j = job;
    if (!j)
        return;
    pl_stanza_unref(j->st);
    pl_free(j->host);
    pl_free(j->user);
    pl_free(j->bare);
    pl_free(j);
}

const struct pl_storage_driver *pl_storage_driver_find(const char *name)
{
    const struct pl_module *m;
    for (int i = 0; (m = pl_module_at(i)); i++)
        if (m->storage && strcmp(m->storage->name, name) == 0)
            return m->storage;
    return NULL;
}

int pl__storage_open(const struct pl_settings *s)
{
    driver = pl_storage_driver_find(s->storage_driver);
    if (!driver) {
        pl_log_error("storage", "unknown storage driver '%s'",
                     s->storage_driver);
        return PL_EINVAL;
    }
    int rc = driver->open(s, &db);
    if (rc != PL_OK)
        return rc;
    queue = pl_workq_new("storage", 1, batch, NULL);
    return PL_OK;
}

void pl__storage_close(void)
{
    if (queue)
        pl_workq_free(queue); /* runs what is queued, then joins */
    queue = NULL;
    if (driver && db)
        driver->close(db);
    db = NULL;
}

void pl_storage_set_unavailable(int on)
{
    atomic_store(&unavailable, on != 0);
}

int pl_storage_unavailable(void)
{
    return atomic_load(&unavailable);
}

size_t pl_storage_pending(void)
{
    return queue ? pl_workq_pending(queue) : 0;
}
