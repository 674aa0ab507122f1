/*
 * test_work.c - work queues (work.h): jobs a running loop submits during
 * one batch of events reach the worker as one batch, woken once after
 * the loop's batch; jobs from another thread wake the worker at once;
 * pl_workq_free runs what waits even if its wake-up was still deferred.
 */
#include <dirent.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "alloc.h"
#include "error.h"
#include "loop.h"
#include "unit.h"
#include "work.h"

static atomic_int batches, ran;
static int done_count;
static struct pl_loop *L;
static int check_deferred; /* the worker is known to sleep */

static void hooks(void *ctx, int begin)
{
    (void)ctx;
    if (begin)
        atomic_fetch_add(&batches, 1);
}

static void job(struct pl_work *w)
{
    (void)w;
    atomic_fetch_add(&ran, 1);
}

static void job_done(struct pl_work *w)
{
    (void)w;
    if (++done_count == 8)
        pl_loop_stop(L);
}

static struct pl_workq *Q;
static struct pl_work works[8];

/* A handler of the loop submitting a burst. */
static void on_ready(struct pl_io *io, unsigned events)
{
    (void)events;
    char c;
    (void)!read(io->fd, &c, 1);
    pl_io_stop(io);
    for (int i = 0; i < 8; i++) {
        works[i].work = job;
        works[i].done = job_done;
        pl_workq_submit(Q, L, &works[i]);
    }
    /* Nothing woke the sleeping worker yet: the loop's batch is not
     * over. */
    if (check_deferred) {
        usleep(20000);
        CHECK_INT(atomic_load(&ran), 0);
    }
}

static void on_ready_free(struct pl_io *io, unsigned events)
{
    on_ready(io, events);
    pl_workq_free(Q); /* runs the 8, cancels the deferred wake-up */
    Q = NULL;
}

/* Whether every other thread of the process sleeps (state S): the
 * worker waits for jobs. */
static int others_asleep(void)
{
    DIR *d = opendir("/proc/self/task");
    if (!d)
        return 0;
    int asleep = 1;
    struct dirent *e;
    pid_t self = (pid_t)syscall(SYS_gettid);
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.' || atoi(e->d_name) == self)
            continue;
        char path[300], buf[256];
        snprintf(path, sizeof(path), "/proc/self/task/%s/stat", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        size_t n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[n] = 0;
        const char *st = strrchr(buf, ')');
        if (!st || st[1] != ' ' || st[2] != 'S')
            asleep = 0;
    }
    closedir(d);
    return asleep;
}

static void on_guard(struct pl_timer *t)
{
    pl_loop_stop(t->loop);
}

/* Runs L until the completions stop it (5 s at most), the handler
 * called once for a pipe made readable. */
static void run_handler(pl_io_fn *handler)
{
    int p[2];
    CHECK(pipe(p) == 0);
    CHECK(write(p[1], "x", 1) == 1);
    struct pl_io io;
    pl_io_init(&io, p[0], handler, NULL);
    pl_io_set(L, &io, PL_IO_READ);
    struct pl_timer guard;
    pl_timer_init(&guard, on_guard, NULL);
    pl_timer_start(L, &guard, 5000);
    pl_loop_run(L);
    pl_timer_stop(&guard);
    close(p[0]);
    close(p[1]);
}

void test_work_burst_one_batch(void)
{
    CHECK_INT(pl_loop_new(&L), PL_OK);
    Q = pl_workq_new("test", 1, hooks, NULL);
    /* The worker must be waiting for jobs, not starting. */
    for (int i = 0; i < 5000 && !others_asleep(); i++)
        usleep(1000);
    CHECK(others_asleep());
    check_deferred = 1;
    run_handler(on_ready);
    CHECK_INT(done_count, 8);
    CHECK_INT(atomic_load(&ran), 8);
    CHECK_INT(atomic_load(&batches), 1);
    pl_workq_free(Q);
    pl_loop_free(L);
}

static void *submitter(void *arg)
{
    struct pl_work *w = arg;
    w->work = job;
    w->done = NULL;
    pl_workq_submit(Q, L, w);
    return NULL;
}

/* From a thread that runs no loop the worker is woken at once.  A queue
 * freed while a loop's wake-up of it is still deferred runs its jobs
 * anyway and the deferred call is cancelled (the sanitizers would see a
 * use after free otherwise). */
void test_work_wake(void)
{
    CHECK_INT(pl_loop_new(&L), PL_OK);
    Q = pl_workq_new("test", 1, NULL, NULL);
    struct pl_work w = {0};
    pthread_t t;
    CHECK(pthread_create(&t, NULL, submitter, &w) == 0);
    pthread_join(t, NULL);
    for (int i = 0; i < 500 && atomic_load(&ran) < 1; i++)
        usleep(1000);
    CHECK_INT(atomic_load(&ran), 1);

    pl_workq_free(Q);

    /* Submitted and freed inside one handler: the wake-up was deferred. */
    atomic_store(&ran, 0);
    done_count = 0;
    Q = pl_workq_new("test", 1, NULL, NULL);
    run_handler(on_ready_free);
    CHECK_INT(atomic_load(&ran), 8);
    CHECK_INT(done_count, 8);
    pl_loop_free(L);
}
