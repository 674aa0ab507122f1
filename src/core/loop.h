/*
 * loop.h - the event loop: epoll for sockets, a timer heap, signals through
 * signalfd, and cross-thread wakeups through eventfd.
 *
 * One struct pl_loop runs on one thread and never blocks; everything that
 * could block (SQL, fsync, key derivation, DNS) goes to a work queue
 * (work.h) whose completions come back here.  Nothing in the loop is
 * global, so a later step can run one loop per core with connections
 * sharded across them.
 *
 * Deferred calls (pl_loop_defer) run after the current batch of events;
 * connections use them to coalesce all writes of one iteration into one
 * syscall.
 */
#ifndef PL_LOOP_H
#define PL_LOOP_H

#include <stdint.h>

struct pl_loop;
struct pl_io;
struct pl_timer;

#define PL_IO_READ 1u
#define PL_IO_WRITE 4u

typedef void pl_io_fn(struct pl_io *io, unsigned events);
typedef void pl_timer_fn(struct pl_timer *t);
typedef void pl_signal_fn(struct pl_loop *loop, int signo, void *data);
typedef void pl_defer_fn(void *data);

struct pl_io {
    struct pl_loop *loop; /* set by pl_io_start */
    int fd;               /* watched descriptor */
    unsigned events;      /* PL_IO_READ | PL_IO_WRITE currently watched */
    pl_io_fn *cb;         /* called with the ready events */
    void *data;           /* owner's pointer */
};

struct pl_timer {
    struct pl_loop *loop; /* set by pl_timer_start */
    uint64_t when;        /* due time, ms on the loop clock */
    long heap_index;      /* position in the heap, -1 when stopped */
    pl_timer_fn *cb;      /* called once when due */
    void *data;           /* owner's pointer */
};

int pl_loop_new(struct pl_loop **out);
void pl_loop_free(struct pl_loop *loop);
/* Runs until pl_loop_stop; returns PL_OK. */
int pl_loop_run(struct pl_loop *loop);
void pl_loop_stop(struct pl_loop *loop);
/* Monotonic milliseconds, cached per iteration. */
uint64_t pl_loop_now(const struct pl_loop *loop);

void pl_io_init(struct pl_io *io, int fd, pl_io_fn *cb, void *data);
/* Starts or changes the watched events (0 stops).  A watcher stopped
 * while the loop handles a batch of events gets none of the batch's
 * events still to come: its owner may free it right away. */
int pl_io_set(struct pl_loop *loop, struct pl_io *io, unsigned events);
void pl_io_stop(struct pl_io *io);
/* Stops watching io and closes its descriptor.  Closing drops the
 * descriptor from epoll by itself, so this makes no epoll_ctl call: io's
 * descriptor must be its socket's only one (no dup, no fork without
 * exec). */
void pl_io_close(struct pl_io *io);

void pl_timer_init(struct pl_timer *t, pl_timer_fn *cb, void *data);
/* (Re)arms t to fire after ms milliseconds. */
void pl_timer_start(struct pl_loop *loop, struct pl_timer *t, uint64_t ms);
void pl_timer_stop(struct pl_timer *t);
static inline int pl_timer_active(const struct pl_timer *t)
{
    return t->heap_index >= 0;
}

/* Routes signo to cb on the loop thread (blocks it for other threads). */
int pl_loop_on_signal(struct pl_loop *loop, int signo, pl_signal_fn *cb,
                      void *data);

/* Calls fn(data) once after the current batch of events (same thread). */
void pl_loop_defer(struct pl_loop *loop, pl_defer_fn *fn, void *data);
/* Cancels the deferred calls of fn(data) not yet run (same thread). */
void pl_loop_undefer(struct pl_loop *loop, pl_defer_fn *fn, void *data);
/* The loop running on the calling thread, or NULL. */
struct pl_loop *pl_loop_running(void);

/*
 * Cross-thread: makes the loop call fn(data) on its own thread soon.
 * Safe from any thread.
 */
void pl_loop_post(struct pl_loop *loop, pl_defer_fn *fn, void *data);

/*
 * Closes io's socket gracefully: ends our direction (FIN) now, then
 * reads and throws away what the peer still sends until it closes its
 * side too, or ms have passed, and only then closes it.  io is stopped
 * (its owner may free it); a watch it had moves to the loop's own.  Closing a socket
 * with unread input answers with a reset, and a reset can destroy what
 * the peer had not read yet: the last words sent it (a stream error).
 * The loop owns the socket from now on; past PL_LOOP_MAX_LINGERING
 * sockets at once, or if the socket cannot be shut down (the peer reset
 * it), it is closed at once, as pl_io_close.
 */
#define PL_LOOP_MAX_LINGERING 4096
void pl_loop_close_lingering(struct pl_loop *loop, struct pl_io *io,
                             uint64_t ms);
/* Sockets waiting so. */
unsigned pl_loop_lingering(const struct pl_loop *loop);

#endif
