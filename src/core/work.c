/*
 * work.c - thread-backed work queues with completions posted to the
 * submitting loop; see work.h.
 */
#include "work.h"

#include <pthread.h>
#include <stdatomic.h>

#include "alloc.h"
#include "log.h"
#include "loop.h"

struct pl_workq {
    const char *name;     /* for logs */
    pthread_mutex_t lock; /* guards head, tail, stopping */
    pthread_cond_t cond;  /* signalled on submit and stop */
    struct pl_work *head; /* FIFO of waiting jobs */
    struct pl_work *tail;
    int stopping;          /* set by pl_workq_free */
    int nthreads;          /* worker count */
    pthread_t *threads;    /* workers */
    pl_batch_fn *batch;    /* transaction hooks or NULL */
    pl_batch_run_fn *run;  /* runs whole batches, or NULL */
    void *ctx;             /* for batch */
    atomic_size_t pending; /* submitted, not completed */
    /* A loop thread's submissions wake the workers once, after the
     * loop's batch of events (wake_later): jobs, not wake-ups. */
    struct pl_loop *wake_loop; /* where wake_later is deferred, or NULL */
};

static void complete(void *data)
{
    struct pl_work *w = data;
    w->done(w);
}

static void *worker(void *arg)
{
    struct pl_workq *q = arg;
    pthread_mutex_lock(&q->lock);
    for (;;) {
        while (!q->head && !q->stopping)
            pthread_cond_wait(&q->cond, &q->lock);
        if (!q->head && q->stopping)
            break;
        /* Take everything queued now: one batch. */
        struct pl_work *batch = q->head;
        q->head = q->tail = NULL;
        if (q->nthreads > 1 && batch->next) {
            /* With several threads, take one job and leave the rest. */
            q->head = batch->next;
            q->tail = q->head;
            while (q->tail->next)
                q->tail = q->tail->next;
            batch->next = NULL;
            pthread_cond_signal(&q->cond);
        }
        pthread_mutex_unlock(&q->lock);
        struct pl_work *w;
        if (q->run) {
            q->run(q->ctx, batch);
        } else {
            if (q->batch)
                q->batch(q->ctx, 1);
            for (w = batch; w; w = w->next)
                w->work(w);
            if (q->batch)
                q->batch(q->ctx, 0);
        }
        /* Completions only after the batch is durable. */
        w = batch;
        while (w) {
            struct pl_work *next = w->next;
            /* Post first: when pending reads 0, every completion is at
             * least queued on its loop (shutdown drains on that). */
            if (w->done)
                pl_loop_post(w->loop, complete, w);
            atomic_fetch_sub(&q->pending, 1);
            w = next;
        }
        pthread_mutex_lock(&q->lock);
    }
    pthread_mutex_unlock(&q->lock);
    return NULL;
}

static struct pl_workq *new_queue(const char *name, int nthreads,
                                  pl_batch_fn *batch, pl_batch_run_fn *run,
                                  void *ctx)
{
    struct pl_workq *q = pl_calloc(1, sizeof(*q));
    q->name = name;
    q->nthreads = nthreads < 1 ? 1 : nthreads;
    q->batch = batch;
    q->run = run;
    q->ctx = ctx;
    pthread_mutex_init(&q->lock, NULL);
    pthread_cond_init(&q->cond, NULL);
    q->threads = pl_calloc((size_t)q->nthreads, sizeof(pthread_t));
    for (int i = 0; i < q->nthreads; i++)
        if (pthread_create(&q->threads[i], NULL, worker, q) != 0) {
            pl_log_error("work", "cannot start %s worker thread", name);
            pl_assert(0);
        }
    return q;
}

struct pl_workq *pl_workq_new(const char *name, int nthreads,
                              pl_batch_fn *batch, void *ctx)
{
    return new_queue(name, nthreads, batch, NULL, ctx);
}

struct pl_workq *pl_workq_new_batched(const char *name, pl_batch_run_fn *run,
                                      void *ctx)
{
    return new_queue(name, 1, NULL, run, ctx);
}

static void wake_later(void *data)
{
    struct pl_workq *q = data;
    pthread_mutex_lock(&q->lock);
    q->wake_loop = NULL;
    pthread_mutex_unlock(&q->lock);
    pthread_cond_signal(&q->cond);
}

/*
 * Submitted from a running loop, the job waits for the end of the loop's
 * batch of events before the workers hear of it: a burst (a hundred
 * logins each asking for its account) becomes one batch, one wake-up of
 * the worker and one of the loop instead of one each per job, and on a
 * busy core the worker does not preempt the loop once per job.  From
 * any other thread, or with another loop's wake-up already pending, the
 * workers are woken at once.
 */
void pl_workq_submit(struct pl_workq *q, struct pl_loop *loop,
                     struct pl_work *w)
{
    w->loop = loop;
    w->next = NULL;
    atomic_fetch_add(&q->pending, 1);
    struct pl_loop *here = pl_loop_running();
    int later = 0;
    pthread_mutex_lock(&q->lock);
    if (q->tail)
        q->tail->next = w;
    else
        q->head = w;
    q->tail = w;
    if (here && (!q->wake_loop || q->wake_loop == here) && !q->stopping) {
        later = 1;
        if (!q->wake_loop) {
            q->wake_loop = here;
            pl_loop_defer(here, wake_later, q);
        }
    }
    pthread_mutex_unlock(&q->lock);
    if (!later)
        pthread_cond_signal(&q->cond);
}

size_t pl_workq_pending(struct pl_workq *q)
{
    return atomic_load(&q->pending);
}

void pl_workq_free(struct pl_workq *q)
{
    if (!q)
        return;
    pthread_mutex_lock(&q->lock);
    q->stopping = 1;
    if (q->wake_loop) /* only ever this thread's loop: see submit */
        pl_loop_undefer(q->wake_loop, wake_later, q);
    q->wake_loop = NULL;
    pthread_cond_broadcast(&q->cond);
    pthread_mutex_unlock(&q->lock);
    for (int i = 0; i < q->nthreads; i++)
        pthread_join(q->threads[i], NULL);
    pthread_mutex_destroy(&q->lock);
    pthread_cond_destroy(&q->cond);
    pl_free(q->threads);
    pl_free(q);
}
