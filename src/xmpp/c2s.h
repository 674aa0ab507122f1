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

/* Opens every c2s listener of c.  PL_EIO if one cannot listen. */
int pl_c2s_start(struct pl_config *c);
/* Closes listeners and ends every stream with <system-shutdown/>. */
void pl_c2s_stop(void);
/* SIGHUP: new limits for new and existing connections. */
void pl_c2s_reload(struct pl_config *c);
/* Open c2s connections (bound or not). */
unsigned long pl_c2s_count(void);

/*
 * Internal, for tests: treats fd as an accepted connection (as a listener
 * of enum pl_tls_mode tls_mode would), after pl_c2s_start.  Takes
 * ownership of fd and makes it non-blocking; a socketpair end works (its
 * peer reads as "local", loopback).  PL_EINVAL before pl_c2s_start, PL_EIO
 * if fd is not usable; on failure fd stays the caller's.
 */
int pl__c2s_accept_fd(int fd, int tls_mode);

/* The session's peer address ("127.0.0.1") and whether it is loopback. */
const char *pl_session_ip(const struct pl_session *s);
int pl_session_is_loopback(const struct pl_session *s);
/* Whether the session's stream is encrypted. */
int pl_session_is_secure(const struct pl_session *s);

#endif
