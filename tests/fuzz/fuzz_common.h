/*
 * fuzz_common.h - what the in-process fuzz targets of client streams
 * (fuzz_c2s.c, fuzz_web.c) share: their server and its accounts, the
 * settling of its loop, and the SCRAM client side that answers a
 * challenge the server sent, since the server's nonce is random and the
 * fuzzer could never guess the proof.
 *
 * API:
 * - fuzz_server_start() starts the server in e (its directory made with
 *   inproc_mkdir(), tests/support/inproc.h): one host "localhost", the
 *   default modules, registration open, require_encryption = false,
 *   scram_iterations = FUZZ_ITER, no listener, and every limit that counts
 *   across connections from one address raised, then extra (more groups);
 *   silent unless the environment has log_env (then every debug line).
 *   It derives the keys of fuzz_users once and resets the accounts; the
 *   directory is removed at exit.
 * - fuzz_settle() runs the loop until quiet (see there) or aborts.
 * - fuzz_reset_accounts() deletes every account of localhost with its
 *   data, creates fuzz_users again, fires "user/deleted" for each deleted
 *   one (as an account removal does: caches forget them), and settles.
 * - fuzz_token() replaces the tokens both targets know: {scram1} and
 *   {scram256} (fuzz_scram_final for fuzz_users[0]) and {previd}.
 * - fuzz_scram_final() appends the base64 client-final-message for the
 *   account user/password answering the last SASL <challenge/> found in
 *   the server's output (any framing around it: a TCP stream, WebSocket
 *   frames, BOSH bodies), the client-first-message having been
 *   "n,,n=<user>,r=" FUZZ_SCRAM_CNONCE; a wrong one if there is none.
 */
#ifndef FUZZ_COMMON_H
#define FUZZ_COMMON_H

#include "../support/inproc.h"
#include "buf.h"
#include "scram.h"
#include "str.h"

#define FUZZ_ITER 4096          /* the smallest scram_iterations allowed */
#define FUZZ_TIME_LIMIT_MS 5000 /* to go quiet after a piece or the end */
#define FUZZ_NUSERS 2           /* entries of fuzz_users */

/* The accounts every input starts with: alice ("wonderland"), bob
 * ("builder"). */
struct fuzz_user {
    const char *user;     /* local part, on localhost */
    const char *password; /* in clear, for the SCRAM client side */
};
extern const struct fuzz_user fuzz_users[FUZZ_NUSERS];

/* The client nonce of the seeds' client-first-messages. */
#define FUZZ_SCRAM_CNONCE "fyko+d2lbbFgONRv9qkxdawL"

void fuzz_server_start(struct inproc *e, const char *log_env,
                       const char *extra);

/*
 * Runs e's loop until quiet: three turns in a row in which *received (the
 * bytes the client ends read; NULL: no client end yet) did not change and
 * no storage or CPU job was in flight (completions are posted before a
 * job stops counting, and run on the next turn).  Aborts, naming what, if
 * that takes longer than FUZZ_TIME_LIMIT_MS.
 */
void fuzz_settle(struct inproc *e, const unsigned long *received,
                 const char *what);

void fuzz_reset_accounts(struct inproc *e, const unsigned long *received);

/*
 * If rest starts with {scram1}, {scram256} or {previd}: appends its
 * replacement to dst (the client-final-message answering the last
 * challenge in challenge, previd) and returns the token's length; else
 * returns 0.
 */
size_t fuzz_token(struct pl_str rest, struct pl_str challenge,
                  const char *previd, struct pl_buf *dst);

void fuzz_scram_final(struct pl_str out, enum pl_scram_hash h, const char *user,
                      const char *password, struct pl_buf *dst);

#endif
