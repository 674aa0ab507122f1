/*
 * loop.c - epoll event loop with a binary timer heap, signalfd and an
 * eventfd-backed queue for calls posted from other threads, and the
 * sockets it closes gracefully (pl_loop_close_lingering).  See loop.h.
 */
#include "loop.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "error.h"
#include "log.h"

struct call {
    pl_defer_fn *fn;
    void *data;
};

struct calls {
    struct call *v;
    size_t len, cap;
};

struct sig {
    int signo;
    pl_signal_fn *cb;
    void *data;
};

/* A socket closing gracefully: pl_loop_close_lingering. */
struct lingerer {
    struct pl_io io;
    struct pl_timer timer;
    struct pl_loop *loop;
    struct lingerer *prev, *next;
};

struct pl_loop {
    int epfd;                   /* epoll instance */
    int stop;                   /* set by pl_loop_stop */
    uint64_t now;               /* cached monotonic ms */
    struct pl_timer **heap;     /* min-heap by when */
    size_t nheap, capheap;      /* heap size and capacity */
    struct calls deferred;      /* pl_loop_defer queue */
    struct pl_io post_io;       /* eventfd for pl_loop_post */
    pthread_mutex_t post_lock;  /* guards posted */
    struct calls posted;        /* pl_loop_post queue */
    struct pl_io sig_io;        /* signalfd */
    sigset_t sigmask;           /* signals routed here */
    struct sig sigs[8];         /* handlers */
    int nsigs;                  /* handlers in use */
    struct lingerer *lingering; /* pl_loop_close_lingering */
    unsigned nlingering;
    /* The batch of events being handled: a watcher stopped meanwhile
     * has its events still to come voided (its owner may free it). */
    struct epoll_event *batch;
    int batch_next, batch_len;
};

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void calls_push(struct calls *c, pl_defer_fn *fn, void *data)
{
    if (c->len == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 16;
        c->v = pl_realloc(c->v, c->cap * sizeof(*c->v));
    }
    c->v[c->len++] = (struct call){fn, data};
}

static void on_post(struct pl_io *io, unsigned events)
{
    struct pl_loop *loop = io->data;
    uint64_t n;
    ssize_t r = read(io->fd, &n, sizeof(n));
    (void)r;
    pthread_mutex_lock(&loop->post_lock);
    struct calls batch = loop->posted;
    memset(&loop->posted, 0, sizeof(loop->posted));
    pthread_mutex_unlock(&loop->post_lock);
    for (size_t i = 0; i < batch.len; i++)
        batch.v[i].fn(batch.v[i].data);
    pl_free(batch.v);
}

static void on_signal(struct pl_io *io, unsigned events)
{
    struct pl_loop *loop = io->data;
    struct signalfd_siginfo si;
    while (read(io->fd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
        for (int i = 0; i < loop->nsigs; i++)
            if (loop->sigs[i].signo == (int)si.ssi_signo)
                loop->sigs[i].cb(loop, (int)si.ssi_signo, loop->sigs[i].data);
    }
}

int pl_loop_new(struct pl_loop **out)
{
    struct pl_loop *loop = pl_calloc(1, sizeof(*loop));
    loop->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (loop->epfd < 0)
        goto fail;
    loop->now = mono_ms();
    pthread_mutex_init(&loop->post_lock, NULL);
    int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (efd < 0)
        goto fail;
    pl_io_init(&loop->post_io, efd, on_post, loop);
    pl_io_set(loop, &loop->post_io, PL_IO_READ);
    sigemptyset(&loop->sigmask);
    loop->sig_io.fd = -1;
    *out = loop;
    return PL_OK;
fail:
    if (loop->epfd >= 0)
        close(loop->epfd);
    pl_free(loop);
    return PL_EIO;
}

static void linger_end(struct lingerer *l)
{
    struct pl_loop *loop = l->loop;
    pl_timer_stop(&l->timer);
    pl_io_close(&l->io);
    if (l->prev)
        l->prev->next = l->next;
    else
        loop->lingering = l->next;
    if (l->next)
        l->next->prev = l->prev;
    loop->nlingering--;
    pl_free(l);
}

void pl_loop_free(struct pl_loop *loop)
{
    if (!loop)
        return;
    while (loop->lingering)
        linger_end(loop->lingering);
    close(loop->post_io.fd);
    if (loop->sig_io.fd >= 0)
        close(loop->sig_io.fd);
    close(loop->epfd);
    pthread_mutex_destroy(&loop->post_lock);
    pl_free(loop->heap);
    pl_free(loop->deferred.v);
    pl_free(loop->posted.v);
    pl_free(loop);
}

uint64_t pl_loop_now(const struct pl_loop *loop)
{
    return loop->now;
}

void pl_loop_stop(struct pl_loop *loop)
{
    loop->stop = 1;
}

void pl_io_init(struct pl_io *io, int fd, pl_io_fn *cb, void *data)
{
    memset(io, 0, sizeof(*io));
    io->fd = fd;
    io->cb = cb;
    io->data = data;
}

/* The events of io still to come in this batch are voided. */
static void forget(struct pl_loop *loop, struct pl_io *io)
{
    for (int i = loop->batch_next; i < loop->batch_len; i++)
        if (loop->batch[i].data.ptr == io)
            loop->batch[i].data.ptr = NULL;
}

/* What epoll is told to watch for io's events. */
static struct epoll_event io_event(struct pl_io *io, unsigned events)
{
    struct epoll_event ev = {0};
    ev.data.ptr = io;
    if (events & PL_IO_READ)
        ev.events |= EPOLLIN | EPOLLRDHUP;
    if (events & PL_IO_WRITE)
        ev.events |= EPOLLOUT;
    return ev;
}

int pl_io_set(struct pl_loop *loop, struct pl_io *io, unsigned events)
{
    if (events == io->events && io->loop)
        return PL_OK;
    struct epoll_event ev = io_event(io, events);
    int r;
    if (!io->loop)
        r = epoll_ctl(loop->epfd, EPOLL_CTL_ADD, io->fd, &ev);
    else if (events == 0)
        r = epoll_ctl(loop->epfd, EPOLL_CTL_DEL, io->fd, NULL);
    else
        r = epoll_ctl(loop->epfd, EPOLL_CTL_MOD, io->fd, &ev);
    if (r < 0)
        return PL_EIO;
    io->loop = events ? loop : NULL;
    io->events = events;
    if (!events)
        forget(loop, io);
    return PL_OK;
}

void pl_io_stop(struct pl_io *io)
{
    if (io->loop)
        pl_io_set(io->loop, io, 0);
}

void pl_io_close(struct pl_io *io)
{
    if (io->loop)
        forget(io->loop, io);
    io->loop = NULL;
    io->events = 0;
    close(io->fd);
}

/* Timer heap. */

static void heap_swap(struct pl_loop *loop, size_t a, size_t b)
{
    struct pl_timer *t = loop->heap[a];
    loop->heap[a] = loop->heap[b];
    loop->heap[b] = t;
    loop->heap[a]->heap_index = (long)a;
    loop->heap[b]->heap_index = (long)b;
}

static void heap_up(struct pl_loop *loop, size_t i)
{
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (loop->heap[p]->when <= loop->heap[i]->when)
            break;
        heap_swap(loop, p, i);
        i = p;
    }
}

static void heap_down(struct pl_loop *loop, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < loop->nheap && loop->heap[l]->when < loop->heap[m]->when)
            m = l;
        if (r < loop->nheap && loop->heap[r]->when < loop->heap[m]->when)
            m = r;
        if (m == i)
            break;
        heap_swap(loop, i, m);
        i = m;
    }
}

void pl_timer_init(struct pl_timer *t, pl_timer_fn *cb, void *data)
{
    memset(t, 0, sizeof(*t));
    t->heap_index = -1;
    t->cb = cb;
    t->data = data;
}

void pl_timer_stop(struct pl_timer *t)
{
    if (t->heap_index < 0)
        return;
    struct pl_loop *loop = t->loop;
    size_t i = (size_t)t->heap_index;
    loop->nheap--;
    if (i != loop->nheap) {
        loop->heap[i] = loop->heap[loop->nheap];
        loop->heap[i]->heap_index = (long)i;
        heap_down(loop, i);
        heap_up(loop, i);
    }
    t->heap_index = -1;
}

void pl_timer_start(struct pl_loop *loop, struct pl_timer *t, uint64_t ms)
{
    pl_timer_stop(t);
    t->loop = loop;
    t->when = loop->now + ms;
    if (loop->nheap == loop->capheap) {
        loop->capheap = loop->capheap ? loop->capheap * 2 : 64;
        loop->heap = pl_realloc(loop->heap,
                                loop->capheap * sizeof(*loop->heap));
    }
    loop->heap[loop->nheap] = t;
    t->heap_index = (long)loop->nheap;
    loop->nheap++;
    heap_up(loop, loop->nheap - 1);
}

static void run_timers(struct pl_loop *loop)
{
    while (loop->nheap && loop->heap[0]->when <= loop->now) {
        struct pl_timer *t = loop->heap[0];
        pl_timer_stop(t);
        t->cb(t);
    }
}

int pl_loop_on_signal(struct pl_loop *loop, int signo, pl_signal_fn *cb,
                      void *data)
{
    if (loop->nsigs == (int)(sizeof(loop->sigs) / sizeof(loop->sigs[0])))
        return PL_ELIMIT;
    sigaddset(&loop->sigmask, signo);
    if (pthread_sigmask(SIG_BLOCK, &loop->sigmask, NULL) != 0)
        return PL_EIO;
    int fd = signalfd(loop->sig_io.fd, &loop->sigmask,
                      SFD_NONBLOCK | SFD_CLOEXEC);
    if (fd < 0)
        return PL_EIO;
    if (loop->sig_io.fd < 0) {
        pl_io_init(&loop->sig_io, fd, on_signal, loop);
        pl_io_set(loop, &loop->sig_io, PL_IO_READ);
    }
    loop->sigs[loop->nsigs++] = (struct sig){signo, cb, data};
    return PL_OK;
}

void pl_loop_defer(struct pl_loop *loop, pl_defer_fn *fn, void *data)
{
    calls_push(&loop->deferred, fn, data);
}

static void cancelled(void *data)
{
    (void)data;
}

void pl_loop_undefer(struct pl_loop *loop, pl_defer_fn *fn, void *data)
{
    for (size_t i = 0; i < loop->deferred.len; i++)
        if (loop->deferred.v[i].fn == fn && loop->deferred.v[i].data == data)
            loop->deferred.v[i].fn = cancelled;
}

static _Thread_local struct pl_loop *running;

struct pl_loop *pl_loop_running(void)
{
    return running;
}

void pl_loop_post(struct pl_loop *loop, pl_defer_fn *fn, void *data)
{
    pthread_mutex_lock(&loop->post_lock);
    int wake = loop->posted.len == 0;
    calls_push(&loop->posted, fn, data);
    pthread_mutex_unlock(&loop->post_lock);
    if (wake) {
        uint64_t one = 1;
        ssize_t r = write(loop->post_io.fd, &one, sizeof(one));
        (void)r;
    }
}

static void run_deferred(struct pl_loop *loop)
{
    /* Deferred calls may defer more; run until the queue is empty. */
    for (size_t i = 0; i < loop->deferred.len; i++) {
        struct call c = loop->deferred.v[i];
        c.fn(c.data);
    }
    loop->deferred.len = 0;
}

int pl_loop_run(struct pl_loop *loop)
{
    struct epoll_event evs[256];
    /* A run inside a handler (none today) keeps the outer batch's. */
    struct epoll_event *outer = loop->batch;
    int outer_next = loop->batch_next, outer_len = loop->batch_len;
    struct pl_loop *outer_running = running;
    running = loop;
    loop->stop = 0;
    while (!loop->stop) {
        int timeout = -1;
        if (loop->deferred.len)
            timeout = 0;
        else if (loop->nheap) {
            uint64_t due = loop->heap[0]->when;
            timeout = due <= loop->now ? 0 : (int)(due - loop->now);
        }
        int n = epoll_wait(loop->epfd, evs, 256, timeout);
        if (n < 0 && errno != EINTR) {
            pl_log_error("loop", "epoll_wait: %s", strerror(errno));
            running = outer_running;
            return PL_EIO;
        }
        loop->now = mono_ms();
        loop->batch = evs;
        loop->batch_len = n;
        for (int i = 0; i < n; i++) {
            struct pl_io *io = evs[i].data.ptr;
            loop->batch_next = i + 1;
            if (!io)
                continue; /* stopped by an earlier event's handler */
            unsigned ev = 0;
            if (evs[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
                ev |= PL_IO_READ;
            if (evs[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP))
                ev |= PL_IO_WRITE;
            io->cb(io, ev & (io->events | PL_IO_READ));
            /* Run deferred work between events so writes coalesce per
             * batch but do not wait behind a long batch. */
        }
        loop->batch_len = 0;
        run_deferred(loop);
        run_timers(loop);
        run_deferred(loop);
    }
    loop->batch = outer;
    loop->batch_next = outer_next;
    loop->batch_len = outer_len;
    running = outer_running;
    return PL_OK;
}

/* ---- lingering close ---- */

static void on_linger_io(struct pl_io *io, unsigned events)
{
    (void)events;
    struct lingerer *l = io->data;
    char sink[4096];
    /* Bounded work per event; the timer bounds the whole. */
    for (int i = 0; i < 16; i++) {
        ssize_t n = recv(io->fd, sink, sizeof(sink), 0);
        if (n > 0)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        break; /* the peer closed (or the socket failed) */
    }
    linger_end(l);
}

static void on_linger_timer(struct pl_timer *t)
{
    linger_end(t->data);
}

void pl_loop_close_lingering(struct pl_loop *loop, struct pl_io *io,
                             uint64_t ms)
{
    int fd = io->fd;
    if (loop->nlingering >= PL_LOOP_MAX_LINGERING ||
        shutdown(fd, SHUT_WR) < 0) {
        pl_io_close(io);
        return;
    }
    struct lingerer *l = pl_calloc(1, sizeof(*l));
    l->loop = loop;
    pl_io_init(&l->io, fd, on_linger_io, l);
    if (io->loop == loop) {
        /* The watch moves to the lingerer: one epoll_ctl, not two. */
        struct epoll_event ev = io_event(&l->io, PL_IO_READ);
        forget(loop, io);
        io->loop = NULL;
        io->events = 0;
        if (epoll_ctl(loop->epfd, EPOLL_CTL_MOD, fd, &ev) == 0) {
            l->io.loop = loop;
            l->io.events = PL_IO_READ;
        } else {
            epoll_ctl(loop->epfd, EPOLL_CTL_DEL, fd, NULL);
        }
    } else if (io->loop) {
        pl_io_stop(io);
    }
    pl_timer_init(&l->timer, on_linger_timer, l);
    l->next = loop->lingering;
    if (l->next)
        l->next->prev = l;
    loop->lingering = l;
    loop->nlingering++;
    if (pl_io_set(loop, &l->io, PL_IO_READ) != PL_OK) {
        linger_end(l);
        return;
    }
    pl_timer_start(loop, &l->timer, ms);
}

unsigned pl_loop_lingering(const struct pl_loop *loop)
{
    return loop->nlingering;
}
