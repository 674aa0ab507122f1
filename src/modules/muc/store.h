/*
 * store.h - persistent rooms (XEP-0045 §10.1: a persistent room outlives
 * its occupants and the server's restarts).  One document per room in
 * the per-user key-value store: host = the service domain, user = the
 * room's localpart, store "muc", key "room"; the value is XML:
 *
 *   <room xmlns='urn:parley:muc:0' name=.. desc=.. ... >
 *     <subject nick='..'>text</subject>
 *     <aff jid='bare' aff='owner' nick='..' reason='..'/> ...
 *     <vCard xmlns='vcard-temp'>...</vCard>
 *   </room>
 *
 * Extending: a configuration field is one attribute here and in
 * pl__muc_store_load.
 */
#ifndef PL_MUC_STORE_H
#define PL_MUC_STORE_H

#include "room.h"

#define MUC_STORE "muc"
#define MUC_STORE_KEY "room"

/* Serializes r's persistent state into out. */
void pl__muc_store_dump(const struct muc_room *r, struct pl_buf *out);
/* Restores a room from a document made by pl__muc_store_dump; NULL if it does
 * not parse.  The room is unlocked and persistent. */
struct muc_room *pl__muc_store_load(const char *local, const char *service,
                                    const struct muc_config *defaults,
                                    const void *data, size_t len);

#endif
