/*
 * live.c - this node's liveness key, refreshed by a thread of its own
 * (doc/cluster.md, "Liveness").
 *
 * The key says "this node runs"; the others call a node dead when it is
 * missing.  Refreshed from the event loop, it also said "this node's loop
 * got a timer through within ttl", and on a machine short of CPU that is
 * not the same: a busy loop is not favoured by the scheduler, and
 * make bench-cluster saw loops 3 to 18 s late while their nodes worked
 * (slowly) and their links carried traffic.  Called dead, such a node is
 * dropped and linked again by every other node, each time a snapshot of
 * all its sessions: more work on a machine already short, and the churn
 * did not settle.  A thread that sleeps between refreshes is woken
 * promptly even then (it wants a few microseconds of CPU).
 *
 * It still needs the loop to run: the loop's beat (every ttl/3) says so
 * (pl__live_set), and a loop that has not beaten for stall_limit ms is
 * taken as wedged: the thread stops refreshing, the key expires, the
 * others call the node dead.  The thread's connection is blocking (its
 * own; the loop's Redis connection stays asynchronous), with ttl/3 as
 * the timeout of each command, reconnecting at the next refresh.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "cluster_int.h"
#include "error.h"
#include "log.h"
#include "loop.h"
#include "server.h"

static struct {
    pthread_t thread;
    int running;
    pthread_mutex_t mu; /* guards what follows, up to the atomics */
    pthread_cond_t cv;  /* a new value, or stop */
    int stop;
    int dirty;     /* the value changed: write it now */
    char key[512]; /* empty until the loop's first beat */
    char val[512];
    long ttl;
    long stall_limit;
    char *host, *path; /* Redis */
    int port;
    atomic_uint_fast64_t loop_ms; /* monotonic ms of the loop's last beat */
    atomic_int beaten;            /* a refresh succeeded since Redis came up */
    atomic_int wedged_said;       /* the stall was logged */
} L = {.mu = PTHREAD_MUTEX_INITIALIZER};

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void presumed_dead(void *data)
{
    (void)data;
    pl__cluster_presumed_dead();
}

static redisContext *connect_redis(long timeout_ms)
{
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    redisContext *c = L.path ? redisConnectUnixWithTimeout(L.path, tv)
                             : redisConnectWithTimeout(L.host, L.port, tv);
    if (c && !c->err && redisSetTimeout(c, tv) == REDIS_OK)
        return c;
    if (c)
        redisFree(c);
    return NULL;
}

/* One refresh: SET key val PX ttl GET.  Returns the context to keep. */
static redisContext *refresh(redisContext *c, const char *key, const char *val,
                             long ttl)
{
    if (!c)
        c = connect_redis(ttl / 3 > 0 ? ttl / 3 : 1);
    if (!c)
        return NULL; /* the loop's connection logs Redis being away */
    redisReply *r = redisCommand(c, "SET %s %s PX %ld GET", key, val, ttl);
    if (!r) {
        redisFree(c);
        return NULL;
    }
    if (r->type == REDIS_REPLY_NIL && atomic_load(&L.beaten))
        pl_loop_post(pl_server_loop(), presumed_dead, NULL);
    if (r->type == REDIS_REPLY_NIL || r->type == REDIS_REPLY_STRING)
        atomic_store(&L.beaten, 1);
    freeReplyObject(r);
    return c;
}

static void *run(void *arg)
{
    (void)arg;
    redisContext *c = NULL;
    pthread_mutex_lock(&L.mu);
    while (!L.stop) {
        char key[sizeof(L.key)], val[sizeof(L.val)];
        memcpy(key, L.key, sizeof(key));
        memcpy(val, L.val, sizeof(val));
        long ttl = L.ttl, limit = L.stall_limit;
        L.dirty = 0;
        pthread_mutex_unlock(&L.mu);
        uint64_t now = mono_ms(), seen = atomic_load(&L.loop_ms);
        if (key[0] && now - seen <= (uint64_t)limit) {
            c = refresh(c, key, val, ttl);
        } else if (key[0] && !atomic_exchange(&L.wedged_said, 1)) {
            pl_log_error("cluster",
                         "the event loop has not run for %llu ms "
                         "(cluster.stall_limit %ld): the liveness key is "
                         "left to expire",
                         (unsigned long long)(now - seen), limit);
        }
        pthread_mutex_lock(&L.mu);
        if (L.stop || L.dirty)
            continue;
        struct timespec at;
        clock_gettime(CLOCK_MONOTONIC, &at);
        long wait = (L.ttl > 0 ? L.ttl : 3000) / 3;
        at.tv_sec += wait / 1000;
        at.tv_nsec += (wait % 1000) * 1000000L;
        if (at.tv_nsec >= 1000000000L) {
            at.tv_sec++;
            at.tv_nsec -= 1000000000L;
        }
        while (!L.stop && !L.dirty &&
               pthread_cond_timedwait(&L.cv, &L.mu, &at) != ETIMEDOUT)
            ;
    }
    pthread_mutex_unlock(&L.mu);
    if (c)
        redisFree(c);
    return NULL;
}

int pl__live_start(const char *addr, long stall_limit_ms)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&L.cv, &ca);
    pthread_condattr_destroy(&ca);
    L.stop = L.dirty = 0;
    L.key[0] = L.val[0] = 0;
    L.stall_limit = stall_limit_ms;
    atomic_store(&L.loop_ms, mono_ms());
    atomic_store(&L.beaten, 0);
    atomic_store(&L.wedged_said, 0);
    if (pl__redis_addr(addr, &L.host, &L.port, &L.path) != PL_OK)
        return PL_EINVAL;
    if (pthread_create(&L.thread, NULL, run, NULL) != 0) {
        pl_free(L.host);
        pl_free(L.path);
        L.host = L.path = NULL;
        return PL_ENOMEM;
    }
    L.running = 1;
    return PL_OK;
}

void pl__live_set(const char *key, const char *val, long ttl_ms)
{
    atomic_store(&L.loop_ms, mono_ms());
    if (atomic_exchange(&L.wedged_said, 0))
        pl_log_warn("cluster", "the event loop runs again: the liveness key "
                               "is refreshed again");
    pthread_mutex_lock(&L.mu);
    if (strcmp(L.key, key) || strcmp(L.val, val) || L.ttl != ttl_ms) {
        snprintf(L.key, sizeof(L.key), "%s", key);
        snprintf(L.val, sizeof(L.val), "%s", val);
        L.ttl = ttl_ms;
        L.dirty = 1;
        pthread_cond_signal(&L.cv);
    }
    pthread_mutex_unlock(&L.mu);
}

void pl__live_reset(void)
{
    atomic_store(&L.beaten, 0);
}

void pl__live_stop(void)
{
    if (!L.running)
        return;
    pthread_mutex_lock(&L.mu);
    L.stop = 1;
    pthread_cond_signal(&L.cv);
    pthread_mutex_unlock(&L.mu);
    pthread_join(L.thread, NULL);
    pthread_cond_destroy(&L.cv);
    L.running = 0;
    pl_free(L.host);
    pl_free(L.path);
    L.host = L.path = NULL;
}
