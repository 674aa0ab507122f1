/*
 * socks5_int.h - what the files of src/socks5/ share (not a public API).
 *
 *   parse.c    the SOCKS5 handshake, pure (parse.h)
 *   relay.c    connections: handshake, pairing by hash, activation, the
 *              relay with back-pressure, the limits, the transfer table
 *   socks5.c   pl_mod_socks5: the front end serving listener protocol
 *              "socks5", its `socks5` options, lifetime, operations
 *   proxy65.c  pl_mod_proxy65: the XMPP side on proxy.<host> (disco,
 *              streamhost discovery, activation), a host module
 *
 * Extending: a new limit is a field here, a row of options[] in socks5.c
 * and its check in relay.c.
 */
#ifndef PL_SOCKS5_INT_H
#define PL_SOCKS5_INT_H

#include <jansson.h>

#include "listen.h"
#include "parse.h"

/* The `socks5` group (socks5.c options[]); times in seconds. */
struct socks5_settings {
    long handshake_timeout;      /* accept to a complete CONNECT */
    long unmatched_timeout;      /* CONNECT to activation */
    long idle_timeout;           /* an activated transfer with no traffic */
    long max_transfer_size;      /* bytes relayed per transfer; 0: none */
    long bandwidth_per_user;     /* bytes/s per requester; 0: none */
    long max_transfers_per_user; /* active transfers of one requester */
    long max_transfers;          /* active transfers in all */
    long max_pending;            /* connections not yet activated */
    long relay_buffer;           /* bytes queued to one side before the
                                  * other is no longer read */
};

/* socks5.c */
extern const struct pl_protocol pl__socks5_protocol;
const struct socks5_settings *pl__socks5_settings(void);

/* relay.c */
int pl__socks5_accept(struct pl_listen *l, struct pl_conn *c);
/*
 * Activates the pending transfer of hash for user (the requester's bare
 * JID, whose limits apply).  PL_OK: both connections now relay;
 * PL_EITEM_NOT_FOUND: no connection with that hash; PL_ENOT_ALLOWED:
 * only one party is connected, or it is already active;
 * PL_ERESOURCE_CONSTRAINT: over max_transfers or max_transfers_per_user
 * (both connections are closed).  *why says which, for the error text.
 */
int pl__socks5_activate(const char *hash, const char *user, const char **why);
/* Ends every connection (shutdown). */
void pl__socks5_close_all(void);
/* Open connections. */
unsigned long pl__socks5_count(void);
/* Frees the tables once every connection is gone. */
void pl__socks5_free(void);
/* Adds the pending and active transfers to an operation's answer. */
void pl__socks5_admin(json_t *a);

#endif
