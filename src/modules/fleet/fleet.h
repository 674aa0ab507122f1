/*
 * fleet.h - internals shared by the fleet module's two files:
 *   fleet.c  the module: pushes, groups, receipts, TTL expiry, storage
 *   admin.c  the local admin socket (Unix domain, 0600) and its protocol
 *   device.c device ids: what a push target names
 *
 * admin.c parses a request line into a JSON object and calls
 * pl__fleet_request(); the answer comes back through pl__fleet_answer()
 * (at once, or after a storage commit) with the client's id, so a client
 * that went away in between is simply not found.
 */
#ifndef PL_FLEET_H
#define PL_FLEET_H

#include <jansson.h>
#include <stdint.h>

#include "core/modapi.h"

/* device.c: the localpart a target names ("00:1A:2B:3C:4D:5E" ->
 * "001a2b3c4d5e"; "alice" stays); 1, or 0 if it cannot be one. */
int pl__fleet_device_norm(const char *in, char *out, size_t len);
/* device.c: whether user is a device id (12 lower-case hex digits). */
int pl__fleet_is_device_id(const char *user);

/* fleet.c: handles one request (borrowed) from admin client cid. */
void pl__fleet_request(uint64_t cid, json_t *req);
/* admin.c: sends answer (borrowed) to client cid if it is still there. */
void pl__fleet_answer(uint64_t cid, json_t *answer);
/* admin.c: opens the socket at path (mode 0600); PL_OK or PL_EIO. */
int pl__fleet_admin_open(const char *path);
/* admin.c: closes the socket and every client, removes the path. */
void pl__fleet_admin_close(void);

#endif
