/*
 * random.c - buffered random bytes; see random.h.
 */
#include "random.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <string.h>

#include "log.h"

#define POOL 512

static _Thread_local unsigned char pool[POOL];
static _Thread_local size_t used = POOL; /* bytes handed out: all at start */
static pthread_once_t once = PTHREAD_ONCE_INIT;

/* In the child, on the thread that forked: its buffer is the parent's. */
static void drop_after_fork(void)
{
    OPENSSL_cleanse(pool, sizeof(pool));
    used = POOL;
}

static void register_fork_handler(void)
{
    pthread_atfork(NULL, NULL, drop_after_fork);
}

void pl_random(void *out, size_t n)
{
    unsigned char *o = out;
    if (n >= POOL) {
        pl_assert(RAND_bytes(o, (int)n) == 1);
        return;
    }
    if (used + n > POOL) {
        pthread_once(&once, register_fork_handler);
        pl_assert(RAND_bytes(pool, POOL) == 1);
        used = 0;
    }
    memcpy(o, pool + used, n);
    memset(pool + used, 0, n);
    used += n;
}
