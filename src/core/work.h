/*
 * work.h - work queues: blocking jobs run on worker threads, and their
 * completions run back on the loop that submitted them.
 *
 * A queue has one or more threads.  A single-thread queue can take all
 * jobs waiting at one moment as one batch: with batch hooks around it
 * (the gateway's database), or run whole by a batch function (the storage
 * queue, which runs it in one transaction, group commit: one fsync for a
 * burst, and fails every job of a batch that does not commit).  Key
 * derivation uses a general queue with a thread per core.
 *
 * Ownership: the caller owns struct pl_work (usually embedded in a larger
 * request struct) until done_fn runs; done_fn may free it.
 */
#ifndef PL_WORK_H
#define PL_WORK_H

#include <stddef.h>

struct pl_loop;
struct pl_work;
struct pl_workq;

typedef void pl_work_fn(struct pl_work *w); /* on a worker thread */
typedef void pl_done_fn(struct pl_work *w); /* on the submitting loop */
/* Around each batch, on the worker thread (for transactions). */
typedef void pl_batch_fn(void *ctx, int begin);
/*
 * Runs a whole batch on the worker thread instead of begin, every work,
 * end: first is the batch's first job, linked through next (do not change
 * the links).  It calls each job's work, or leaves some out and marks
 * them failed in the job's own way (a transaction that could not commit).
 * Completions are posted after it returns.
 */
typedef void pl_batch_run_fn(void *ctx, struct pl_work *first);

struct pl_work {
    pl_work_fn *work;     /* the blocking part */
    pl_done_fn *done;     /* the completion, may be NULL */
    struct pl_loop *loop; /* where done runs */
    struct pl_work *next; /* queue link */
    int result;           /* free for the job's own use */
};

/* nthreads >= 1; batch may be NULL. */
struct pl_workq *pl_workq_new(const char *name, int nthreads,
                              pl_batch_fn *batch, void *ctx);
/* One thread; each batch runs through run (the storage queue). */
struct pl_workq *pl_workq_new_batched(const char *name, pl_batch_run_fn *run,
                                      void *ctx);
/* Queues w; its done runs on loop.  Never blocks. */
void pl_workq_submit(struct pl_workq *q, struct pl_loop *loop,
                     struct pl_work *w);
/* Runs every queued job, then stops and joins the threads (shutdown). */
void pl_workq_free(struct pl_workq *q);
/* Jobs waiting or running. */
size_t pl_workq_pending(struct pl_workq *q);

#endif
