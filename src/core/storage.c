/*
 * storage.c - the storage queue: one thread, one open driver handle,
 * batches wrapped in a transaction; durability barriers; the head shared
 * by the modules' jobs (pl_job_new/pl_job_free).  See storage.h.
 */
#include "storage.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "error.h"
#include "log.h"
#include "module.h"
#include "stanza.h"
#include "stats.h"
#include "work.h"

struct job {
    struct pl_work w;           /* queue link; first member */
    pl_storage_run_fn *run;     /* storage-thread part */
    pl_storage_done_fn *done;   /* loop part */
    void *arg;                  /* caller's request */
    struct pl_barrier *barrier; /* joined barrier, or NULL */
    int rc;                     /* run's result; PL_ESTORAGE: no commit */
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

static long retries;     /* storage.retries */
static long retry_delay; /* storage.retry_delay, ms */

/* On the storage thread, between two tries. */
/* Monotonic milliseconds (the storage thread has no loop clock). */
static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void pause_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (ms > 0 && nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static long next_delay(long ms)
{
    return ms < 30000 ? ms * 2 : ms;
}

/* Jobs from first up to stop (excluded) did not commit: none of them may
 * look successful. */
static void fail_jobs(struct pl_work *first, struct pl_work *stop,
                      const char *why)
{
    size_t n = 0;
    for (struct pl_work *w = first; w != stop; w = w->next, n++)
        ((struct job *)w)->rc = PL_ESTORAGE;
    pl_log_error("storage", "%s: %zu jobs fail", why, n);
}

/*
 * Runs the jobs from first on in one transaction.  Returns NULL when they
 * all completed (committed or failed), or the first job not run yet when
 * the database rolled the transaction back under a job: the jobs before
 * it fail, and the rest may go on in a new transaction.
 */
static struct pl_work *run_part(struct pl_work *first)
{
    long delay = retry_delay;
    int rc = driver->begin(db);
    for (long i = 0; rc != PL_OK && i < retries; i++) {
        driver->rollback(db);
        pl_log_warn("storage", "begin failed (%s); trying again in %ld ms",
                    pl_strerror(rc), delay);
        pause_ms(delay);
        delay = next_delay(delay);
        rc = driver->begin(db);
    }
    if (rc != PL_OK) {
        driver->rollback(db);
        fail_jobs(first, NULL, "begin failed");
        return NULL;
    }
    uint64_t t0 = now_ms();
    for (struct pl_work *w = first; w; w = w->next) {
        struct job *j = (struct job *)w;
        pl_stat_inc(storage_jobs);
        int lost = driver->job_begin(db) != PL_OK;
        if (!lost) {
            j->rc = j->run(driver, db, j->arg);
            lost = driver->job_end(db, j->rc == PL_ESTORAGE) != PL_OK;
        }
        if (lost) {
            /* w included, so that every part makes progress. */
            driver->rollback(db);
            fail_jobs(first, w->next, "the transaction was rolled back");
            return w->next;
        }
    }
    uint64_t t1 = now_ms();
    pl_stat_add(storage_run_ms, (unsigned long)(t1 - t0));
    delay = retry_delay;
    rc = driver->commit(db);
    for (long i = 0; rc == PL_EAGAIN && i < retries; i++) {
        pl_log_warn("storage", "commit busy; trying again in %ld ms", delay);
        pause_ms(delay);
        delay = next_delay(delay);
        rc = driver->commit(db);
    }
    pl_stat_add(storage_commit_ms, (unsigned long)(now_ms() - t1));
    if (rc != PL_OK) {
        driver->rollback(db);
        fail_jobs(first, NULL, "commit failed");
    } else {
        pl_stat_inc(storage_commits);
    }
    return NULL;
}

/*
 * One batch, normally in one transaction (group commit).  BEGIN is tried
 * again (nothing ran yet), and so is a COMMIT the driver calls passing
 * (busy, transaction still open).  Each job runs once, inside a savepoint
 * that a job failing with PL_ESTORAGE rolls back alone.  When the
 * transaction cannot commit, it is rolled back and its jobs get
 * PL_ESTORAGE.  Jobs that ran are never run again (their run may have
 * filled the job's own fields); jobs not run yet when the database rolled
 * the transaction back go on in a new one.
 */
static void run_batch(void *ctx, struct pl_work *first)
{
    (void)ctx;
    while (first)
        first = run_part(first);
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
    j->w.work = NULL; /* run_batch runs it */
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
    const struct pl_storage_driver *d = pl_storage_driver_find(
        s->storage_driver);
    if (!d) {
        pl_log_error("storage", "unknown storage driver '%s'",
                     s->storage_driver);
        return PL_EINVAL;
    }
    return pl__storage_open_driver(d, s);
}

int pl__storage_open_driver(const struct pl_storage_driver *d,
                            const struct pl_settings *s)
{
    int rc = d->open(s, &db);
    if (rc != PL_OK)
        return rc;
    driver = d;
    retries = s->storage_retries;
    retry_delay = s->storage_retry_delay;
    queue = pl_workq_new_batched("storage", run_batch, NULL);
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
