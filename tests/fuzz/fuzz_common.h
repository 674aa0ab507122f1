/*
 * fuzz_common.h - what the in-process fuzz targets of client streams
 * (fuzz_c2s.c, fuzz_web.c) share: the SCRAM client side that answers a
 * challenge the server sent, since the server's nonce is random and the
 * fuzzer could never guess the proof.
 *
 * API: fuzz_scram_final() appends the base64 client-final-message for
 * the account user/password answering the last SASL <challenge/> found
 * in the server's output (any framing around it: a TCP stream, WebSocket
 * frames, BOSH bodies), the client-first-message having been
 * "n,,n=<user>,r=" FUZZ_SCRAM_CNONCE; a wrong one if there is none.
 */
#ifndef FUZZ_COMMON_H
#define FUZZ_COMMON_H

#include "buf.h"
#include "scram.h"
#include "str.h"

/* The client nonce of the seeds' client-first-messages. */
#define FUZZ_SCRAM_CNONCE "fyko+d2lbbFgONRv9qkxdawL"

void fuzz_scram_final(struct pl_str out, enum pl_scram_hash h, const char *user,
                      const char *password, struct pl_buf *dst);

#endif
