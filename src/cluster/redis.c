/*
 * redis.c - hiredis's asynchronous API on our event loop.
 *
 * hiredis (0.14) asks its event library to start and stop watching the
 * socket for reading and writing (ac->ev.addRead ...); here those calls
 * set the events of one struct pl_io, and the loop's callback hands
 * readiness back with redisAsyncHandleRead/Write.  Nothing blocks: the
 * connect is non-blocking (an IP literal, no name lookup: cluster.c
 * checks the address) and every command is queued with a callback.
 * One connection per process; when it is lost, a timer reconnects every
 * retry_ms and on_up runs again (the cluster re-announces its sessions).
 */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/async.h>

#include "alloc.h"
#include "cluster_int.h"
#include "error.h"
#include "log.h"
#include "loop.h"
#include "server.h"

static struct {
    redisAsyncContext *ac; /* NULL while disconnected */
    struct pl_io io;       /* its socket */
    unsigned events;       /* what hiredis wants watched */
    int up;                /* connected */
    int stopping;          /* pl__redis_stop: no reconnect */
    struct pl_timer retry; /* reconnect */
    long retry_ms;
    char *host; /* IP literal, or NULL for path */
    int port;
    char *path;
    void (*on_up)(void);
    int warned; /* the "cannot connect" line was logged */
} R;

static void watch(void)
{
    if (R.ac)
        pl_io_set(pl_server_loop(), &R.io, R.events);
}

static void add_read(void *p)
{
    (void)p;
    R.events |= PL_IO_READ;
    watch();
}

static void del_read(void *p)
{
    (void)p;
    R.events &= ~PL_IO_READ;
    watch();
}

static void add_write(void *p)
{
    (void)p;
    R.events |= PL_IO_WRITE;
    watch();
}

static void del_write(void *p)
{
    (void)p;
    R.events &= ~PL_IO_WRITE;
    watch();
}

/* hiredis frees the context: stop watching its socket. */
static void cleanup(void *p)
{
    (void)p;
    pl_io_stop(&R.io);
    R.events = 0;
    R.ac = NULL;
    R.up = 0;
}

static void on_io(struct pl_io *io, unsigned events)
{
    (void)io;
    /* Either call may free the context (cleanup sets R.ac to NULL). */
    if ((events & PL_IO_READ) && R.ac)
        redisAsyncHandleRead(R.ac);
    if ((events & PL_IO_WRITE) && R.ac)
        redisAsyncHandleWrite(R.ac);
}

static void schedule_retry(void)
{
    if (!R.stopping && !pl_timer_active(&R.retry))
        pl_timer_start(pl_server_loop(), &R.retry, (uint64_t)R.retry_ms);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    if (status != REDIS_OK) {
        if (!R.warned)
            pl_log_warn("cluster", "redis %s: cannot connect: %s",
                        R.path ? R.path : R.host, ac->errstr);
        R.warned = 1;
        /* hiredis frees the context after this callback. */
        schedule_retry();
        return;
    }
    R.up = 1;
    R.warned = 0;
    pl_log_info("cluster", "redis %s: connected", R.path ? R.path : R.host);
    if (R.on_up)
        R.on_up();
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    (void)ac;
    R.up = 0;
    if (!R.stopping)
        pl_log_warn("cluster", "redis: connection lost (%s)",
                    status == REDIS_OK ? "closed" : ac->errstr);
    schedule_retry();
}

static void try_connect(void)
{
    redisAsyncContext *ac = R.path ? redisAsyncConnectUnix(R.path)
                                   : redisAsyncConnect(R.host, R.port);
    if (!ac) {
        schedule_retry();
        return;
    }
    if (ac->err) {
        if (!R.warned)
            pl_log_warn("cluster", "redis %s: %s", R.path ? R.path : R.host,
                        ac->errstr);
        R.warned = 1;
        redisAsyncFree(ac);
        schedule_retry();
        return;
    }
    R.ac = ac;
    R.events = 0;
    pl_io_init(&R.io, ac->c.fd, on_io, NULL);
    ac->ev.data = NULL;
    ac->ev.addRead = add_read;
    ac->ev.delRead = del_read;
    ac->ev.addWrite = add_write;
    ac->ev.delWrite = del_write;
    ac->ev.cleanup = cleanup;
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    /* The connect completes when the socket is writable. */
    add_write(NULL);
}

static void on_retry(struct pl_timer *t)
{
    (void)t;
    if (!R.ac && !R.stopping)
        try_connect();
}

int pl__redis_addr(const char *addr, char **host, int *port, char **path)
{
    *host = *path = NULL;
    *port = 0;
    if (addr[0] == '/') {
        *path = pl_strdup(addr);
        return PL_OK;
    }
    const char *colon = strrchr(addr, ':');
    if (!colon)
        return PL_EINVAL;
    size_t n = (size_t)(colon - addr);
    if (n >= 2 && addr[0] == '[' && addr[n - 1] == ']') {
        addr++;
        n -= 2;
    }
    *host = pl_calloc(1, n + 1);
    memcpy(*host, addr, n);
    *port = atoi(colon + 1);
    return PL_OK;
}

int pl__redis_start(const char *addr, long retry_ms, void (*on_up)(void))
{
    memset(&R, 0, sizeof(R));
    R.retry_ms = retry_ms;
    R.on_up = on_up;
    pl_timer_init(&R.retry, on_retry, NULL);
    if (pl__redis_addr(addr, &R.host, &R.port, &R.path) != PL_OK)
        return PL_EINVAL;
    try_connect();
    return PL_OK;
}

void pl__redis_stop(void)
{
    R.stopping = 1;
    pl_timer_stop(&R.retry);
    if (R.ac) {
        /* Pending callbacks run with a NULL reply; cleanup runs. */
        redisAsyncContext *ac = R.ac;
        redisAsyncFree(ac);
    }
    R.ac = NULL;
    R.up = 0;
    pl_free(R.host);
    pl_free(R.path);
    R.host = R.path = NULL;
}

int pl__redis_is_up(void)
{
    return R.up && R.ac;
}

/* hiredis's callback type carries the context; ours does not. */
struct call {
    pl__redis_fn *fn;
    void *ud;
};

static void on_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    (void)ac;
    struct call *c = priv;
    if (c->fn)
        c->fn(reply, c->ud);
    pl_free(c);
}

int pl__redis_cmd(pl__redis_fn *fn, void *ud, const char *fmt, ...)
{
    if (!pl__redis_is_up())
        return PL_ECLOSED;
    struct call *c = pl_calloc(1, sizeof(*c));
    c->fn = fn;
    c->ud = ud;
    va_list ap;
    va_start(ap, fmt);
    int rc = redisvAsyncCommand(R.ac, on_reply, c, fmt, ap);
    va_end(ap);
    if (rc != REDIS_OK) {
        pl_free(c);
        return PL_ECLOSED;
    }
    return PL_OK;
}

int pl__redis_cmdv(pl__redis_fn *fn, void *ud, int argc, const char **argv)
{
    if (!pl__redis_is_up())
        return PL_ECLOSED;
    struct call *c = pl_calloc(1, sizeof(*c));
    c->fn = fn;
    c->ud = ud;
    if (redisAsyncCommandArgv(R.ac, on_reply, c, argc, argv, NULL) !=
        REDIS_OK) {
        pl_free(c);
        return PL_ECLOSED;
    }
    return PL_OK;
}
