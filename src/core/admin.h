/*
 * admin.h - parleyd's local admin socket: a Unix-domain stream socket
 * (server.admin_socket, default <data_dir>/admin.sock) created 0600, so
 * that only parleyd's own account (and root) can connect; a peer of another
 * uid is refused as well.  parleyctl talks to it (push, group, s2s).
 *
 * Protocol: one JSON object per line each way; each request
 * {"op": ..., "host": optional domain, "tag": optional, ...} gets exactly one
 * answer {"ok": true|false, ...}, with "tag" echoed.  Server-wide ops that
 * front ends register (pl_admin_add_op: "s2s", "components") are answered
 * first; any other op fires the event
 * "admin/<op>" on the named host (or on each host in turn until a handler
 * takes it) with a struct pl_admin_request in ev->data; the handler answers
 * with pl_admin_answer, at once or later (after a storage commit).  Nobody
 * taking it: "feature-not-implemented".  doc/admin.md lists the operations.
 */
#ifndef PL_ADMIN_H
#define PL_ADMIN_H

#include <jansson.h>
#include <stdint.h>

struct pl_admin_request {
    uint64_t cid; /* the client, for pl_admin_answer */
    json_t *req;  /* the request (borrowed) */
};

/*
 * A server-wide operation (not a host's): fn answers req (borrowed) with a
 * new JSON object {"ok": ...}; the caller echoes the tag.  Registered by
 * front ends at start; a name registered twice keeps the first.
 */
typedef json_t *pl_admin_op_fn(json_t *req);
void pl_admin_add_op(const char *op, pl_admin_op_fn *fn);

/* Opens the socket at path (mode 0600).  PL_OK, PL_EINVAL, PL_EIO. */
int pl_admin_open(const char *path);
/* Closes it and every client, removes the path. */
void pl_admin_close(void);
/* Sends answer (borrowed) to client cid if it is still connected (or to
 * the pl_admin_call it names). */
void pl_admin_answer(uint64_t cid, json_t *answer);

/*
 * Runs the operation req (borrowed) from inside parleyd exactly as if a
 * socket client had sent it (the HTTP admin API, src/http/admin_api.c):
 * the same server-wide ops and "admin/<op>" handlers answer it.
 * done(arg, answer) fires exactly once with the answer (borrowed), maybe
 * before pl_admin_call returns, unless pl_admin_cancel(id) came first.
 * Returns the call's id (a client id: handlers cannot tell the two apart).
 */
typedef void pl_admin_done_fn(void *arg, json_t *answer);
uint64_t pl_admin_call(json_t *req, pl_admin_done_fn *done, void *arg);
/* The caller is gone: done will not fire.  An answered id is ignored. */
void pl_admin_cancel(uint64_t id);

#endif
