/*
 * c2s.h - client-to-server XML streams (RFC 6120): stream headers and
 * features, STARTTLS, direct TLS (XEP-0368), SASL (SCRAM-SHA-1/-256 and
 * their -PLUS forms, PLAIN inside TLS), resource binding, timeouts, and
 * every stream error by the RFC's name.  Once bound, a stream is a
 * struct pl_session and its stanzas go to the router with 'from' stamped.
 *
 * Modules take part through hooks: "stream-features" and
 * "stream-features/preauth" (append to the struct pl_buf in ev->data),
 * "iq-<type>/preauth/<ns>:<name>" (IQs allowed before authentication, such
 * as XEP-0077 registration), "session/bound" and "session/closed".
 */
#ifndef PL_C2S_H
#define PL_C2S_H

#include "config.h"
#include "resources.h"

/*
 * The front end is pl_mod_c2s (module.h): it serves the listeners with
 * protocol "c2s"; its options are the `c2s` group.
 */

/* c2s.resource_conflict: binding a full JID already in use. */
enum {
    PL_CONFLICT_KICK_OLD = 0,
    PL_CONFLICT_REFUSE,
    PL_CONFLICT_RENAME
};

struct pl_c2s_settings {
    int require_encryption;    /* no SASL or stanzas before TLS */
    int allow_plain;           /* offer PLAIN inside TLS */
    int channel_binding;       /* offer SCRAM-*-PLUS */
    int tls_unique;            /* accept tls-unique binding too */
    int resource_conflict;     /* PL_CONFLICT_* */
    long max_auth_failures;    /* per connection */
    long auth_failures_per_ip; /* per address within the window */
    long auth_failure_window;  /* seconds */
    long scram_iterations;     /* PBKDF2 rounds for new passwords */
    long keepalive_interval;   /* seconds between whitespace pings, 0 off */
    int sm_enable;             /* offer XEP-0198 */
    long sm_resume_timeout;    /* seconds a dropped session waits */
    long sm_max_queue;         /* unacknowledged stanzas kept */
    int sm_durable;            /* store unacknowledged messages */
};

/* The c2s settings in force, or NULL before the front end started.  Stream
 * management (sm.c) reads its part here, whatever transport drives it. */
const struct pl_c2s_settings *pl_c2s_settings(void);

/*
 * Internal, for tests: treats fd as an accepted connection (as a listener
 * of enum pl_tls_mode tls_mode would), after the front end started.  Takes
 * ownership of fd and makes it non-blocking; a socketpair end works (its
 * peer reads as "local", loopback).  PL_EINVAL before the front end started, PL_EIO
 * if fd is not usable; on failure fd stays the caller's.
 */
int pl__c2s_accept_fd(int fd, int tls_mode);


#endif
