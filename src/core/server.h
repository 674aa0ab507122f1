/*
 * server.h - process-wide services a module or the core may need: the
 * loop, the configuration in force, the CPU work queue, the server secret.
 * parleyd.c builds them at start and swaps the configuration on SIGHUP.
 */
#ifndef PL_SERVER_H
#define PL_SERVER_H

#include "config.h"
#include "str.h"

struct pl_loop;
struct pl_workq;

struct pl_loop *pl_server_loop(void);
struct pl_config *pl_server_config(void);
/* Threads for CPU-heavy blocking work (PBKDF2). */
struct pl_workq *pl_server_cpu(void);
/*
 * 32 random bytes that key what the server signs and checks later: fake
 * SCRAM salts, dialback keys, upload slots, media tokens, SIP nonces, MUC
 * tokens.  Kept in <data_dir>/secret; in a cluster, the one every node
 * reads from the shared storage (pl__server_share_secret).
 */
struct pl_str pl_server_secret(void);
/* Non-zero when the secret is the cluster's (other nodes sign with it:
 * what they made may be found here too, e.g. their uploads). */
int pl_server_secret_shared(void);

/* Set by parleyd.c. */
void pl__server_set(struct pl_loop *loop, struct pl_config *c,
                    struct pl_workq *cpu, const unsigned char *secret);
void pl__server_set_config(struct pl_config *c);
/*
 * Makes the secret the one kept in the storage (store "server", key
 * "secret" of host "" user ""): this process's secret is offered with an
 * insert that does nothing when a secret is there already, then the
 * stored one is read back and replaces it.  Runs on the storage thread;
 * the loop runs (nothing else is on it yet: before the hosts and front
 * ends start) until it completes.  PL_OK, or the storage's error.
 */
int pl__server_share_secret(void);

/* PBKDF2 iterations for passwords set from now on (SCRAM keys); the c2s
 * front end sets it from c2s.scram_iterations.  Default 10000. */
void pl_server_set_scram_iterations(long n);
long pl_server_scram_iterations(void);

#endif
