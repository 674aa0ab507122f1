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
#include "conn.h"
#include "resources.h"
#include "str.h"

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
    int tls_handover;          /* Parley's TLS 1.3 records after SASL */
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

/*
 * Client streams over another transport: XMPP over WebSocket (RFC 7395,
 * src/http/websocket.c) and BOSH (XEP-0206, src/http/bosh.c).  The transport owns the connection
 * (its pl_conn_ops), frames what the stream writes, and hands the stream
 * each whole element it receives.  The stream itself (SASL, binding,
 * stream management, every module) is the same as over TCP: a
 * transport changes only how the stream opens and closes, and how
 * elements are delimited.
 *
 * What differs from a TCP stream: the client opens (and after SASL
 * restarts) the stream with <open xmlns='urn:ietf:params:xml:ns:xmpp-
 * framing' to='...' version='1.0'/> and ends it with <close .../>; no
 * STARTTLS is offered (the connection is TLS or the listener declared
 * secure, or it is not); each element the stream writes is one call of
 * element(); a stream error is the element <stream:error/> followed by
 * close().
 */
struct c2s;

struct pl_c2s_transport {
    const char *name; /* "websocket", for logs */
    /* The stream's opening answer: from (our domain) and its id. */
    void (*header)(void *t, const char *from, const char *id);
    /* One whole top-level element, the concatenation of v[0..n): v[0]
     * starts with '<' and the element's name.  Namespace declarations a
     * standalone element needs (xmlns='jabber:client' on stanzas,
     * xmlns:stream on stream:*) are the transport's to add. */
    void (*element)(void *t, const struct pl_str *v, int n);
    /* Ends the stream (after a stream error element, if any) and closes
     * the connection once the bytes are out. */
    void (*close)(void *t);
    /* Keeps an idle connection alive (a WebSocket ping). */
    void (*keepalive)(void *t);
    /* Optional: the stream has been idle 2 s; the transport may give back
     * memory until its next byte (as the stream frees its parser). */
    void (*nap)(void *t);
    /* XEP-0198 resumption moved the transport to another stream: from
     * now on, c is the stream to call. */
    void (*attach)(void *t, struct c2s *c);
};

/* The framing namespace of RFC 7395 (<open/>, <close/>). */
#define PL_NS_FRAMING "urn:ietf:params:xml:ns:xmpp-framing"

/*
 * A new client stream on conn, whose handlers the transport keeps:
 * secure says whether conn counts as encrypted (TLS, or a listener
 * declared secure).  NULL before the front end started.
 */
struct c2s *pl_c2s_open(struct pl_conn *conn, const struct pl_c2s_transport *tr,
                        void *t, int secure);
/* One whole element from the client (a WebSocket text message): more or
 * less than exactly one element is <not-well-formed/>. */
void pl_c2s_input(struct c2s *c, const char *p, size_t n);
/* Zero or more whole elements from the client (a BOSH body's children);
 * half an element is <not-well-formed/>. */
void pl_c2s_feed(struct c2s *c, const char *p, size_t n);
/* The transport's connection is gone (last call for c from it). */
void pl_c2s_gone(struct c2s *c);
/* A deadline of the connection passed (enum pl_conn_timeout). */
void pl_c2s_timeout(struct c2s *c, int which);


#endif
