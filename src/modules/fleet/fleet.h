/*
 * fleet.h - internals shared by the fleet module's two files:
 *   fleet.c  the module: pushes, groups, receipts, TTL expiry, storage
 *   device.c device ids: what a push target names
 *
 * Requests come from the core's admin socket (src/core/admin.h) as the
 * events "admin/push", "admin/status", "admin/group-add|remove|list"; the
 * answer goes back through pl_admin_answer() (at once, or after a storage
 * commit) with the client's id, so a client that went away in between is
 * simply not found.
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


#endif
