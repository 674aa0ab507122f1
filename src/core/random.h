/*
 * random.h - random bytes for the hot path: nonces, stream ids, parser
 * hash salts.
 *
 * OpenSSL's RAND_bytes makes a system call each time (its fork check);
 * a login asks for random bytes five times, on a machine where a system
 * call costs about 2 µs.  pl_random serves them from a small per-thread
 * buffer filled by RAND_bytes, wiping what it hands out.  A forked child
 * drops the forking thread's buffer, so parent and child never share a
 * byte.  Long-lived secrets (salts, keys) keep calling RAND_bytes.
 */
#ifndef PL_RANDOM_H
#define PL_RANDOM_H

#include <stddef.h>

/* Fills out with n random bytes; aborts only if OpenSSL cannot. */
void pl_random(void *out, size_t n);

#endif
