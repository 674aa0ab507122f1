/*
 * s2s_int.h - what the files of server-to-server federation share;
 * internal to src/xmpp/, not for modules (they see s2s.h).
 *
 * Files (see s2s.c): s2s.c (lifetime, listeners, hook, shared helpers),
 * s2s_out.c (outgoing links), s2s_in.c (incoming streams), dialback.c
 * (XEP-0220 both ways).  Functions and variables shared between them are
 * pl__s2s_*; everything else is static.  Objects that can die
 * independently are found again by id (pl__s2s_in_by_id), never kept by
 * pointer across a callback.
 *
 * Extending: a field goes in its struct here with a trailing comment; a
 * function another s2s file needs gets a pl__s2s_ name and a line below,
 * under the file that defines it.
 */
#ifndef PL_S2S_INT_H
#define PL_S2S_INT_H

#include <openssl/ssl.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "buf.h"
#include "conn.h"
#include "loop.h"
#include "s2s.h"
#include "stanza.h"
#include "xml.h"

#define NS_TLS "urn:ietf:params:xml:ns:xmpp-tls"
#define NS_SASL "urn:ietf:params:xml:ns:xmpp-sasl"
#define NS_DB "jabber:server:dialback"
#define NS_DB_FEATURE "urn:xmpp:features:dialback"
#define NS_BIDI "urn:xmpp:bidi"
#define NS_BIDI_FEATURE "urn:xmpp:features:bidi"

struct pl_settings;
struct pl_config;

/* How a link or stream was authenticated (pl__s2s_auth_names). */
enum auth {
    A_NONE = 0,
    A_EXTERNAL,
    A_DIALBACK
};

/* ---- outgoing ---- */

enum out_state {
    O_RESOLVING = 0, /* DNS */
    O_CONNECTING,    /* TCP */
    O_STREAM,        /* header sent, negotiating */
    O_AUTH,          /* EXTERNAL or dialback key sent */
    O_READY,         /* authenticated: stanzas flow */
    O_CLOSING,       /* closed on purpose, waiting for the socket */
};

struct target {
    char *host; /* name or IP literal */
    int port;   /* TCP port */
    int tls;    /* PL_TLS_STARTTLS or PL_TLS_DIRECT */
    int prio;   /* SRV priority (sorting) */
    int weight; /* SRV weight (sorting) */
};

/* A db:verify this server must send for one of its incoming streams. */
struct verify {
    char *id;            /* the incoming stream's id */
    char *key;           /* the key the originating server sent */
    uint64_t in_id;      /* the incoming stream (struct in id) */
    unsigned sent : 1;   /* written on the link */
    struct verify *next; /* more for the same link */
};

struct out {
    uint64_t id;                    /* for DNS answers and lookups */
    char *local, *remote;           /* domains: ours and the peer's */
    int state;                      /* enum out_state */
    int auth;                       /* enum auth once ready */
    struct pl_conn *conn;           /* NULL until connected */
    int fd;                         /* connecting socket, -1 if none */
    struct pl_io cio;               /* watches fd while connecting */
    struct pl_xml_parser *xml;      /* the peer's stream */
    struct target *targets;         /* where to connect, in order */
    int ntargets, ti;               /* count, current */
    struct sockaddr_storage *addrs; /* the current target's addresses */
    int naddrs, ai;                 /* count, current */
    int srv_left;                   /* SRV answers outstanding */
    struct target *srv;             /* SRV targets gathered so far */
    int nsrv;                       /* their count */
    int srv_dot;                    /* an SRV answer said "no service" */
    char srv_why[96];               /* the last SRV failure */
    struct pl_stanza **q;           /* queued until ready (refs) */
    size_t qn, qcap, qbytes;        /* count, capacity, bytes */
    struct verify *verifies;        /* db:verify to send on this link */
    char sid[128];                  /* the peer's stream id */
    char why[384];                  /* the last problem, for logs and ctl */
    unsigned secure : 1;            /* TLS is up */
    unsigned cert_ok : 1;           /* the peer's certificate is valid */
    unsigned ext_failed : 1;        /* SASL EXTERNAL was refused */
    unsigned fatal : 1;             /* no point trying other addresses */
    unsigned detached : 1;          /* out of the lookup list */
    unsigned bidi : 1;              /* XEP-0288 requested: the peer may
                                   * send its stanzas back on this link */
    unsigned long sent;             /* stanzas written */
    unsigned long received;         /* stanzas routed (bidi) */
    uint64_t created_ms;            /* loop time at creation */
    uint64_t last_ms;               /* loop time of the last stanza */
    struct pl_timer timer;          /* connect deadline, then idle checks */
    struct out *next;               /* all links */
};

/* ---- incoming ---- */

struct pair {
    char *from;        /* the peer's domain */
    char *to;          /* our domain */
    int valid;         /* dialback verified (or certificate) */
    struct pair *next; /* more on the stream */
};

struct in {
    uint64_t id;               /* for verification results */
    struct pl_conn *conn;      /* NULL once closed */
    struct pl_xml_parser *xml; /* stream parser */
    struct pl_host *host;      /* named by the header's 'to' */
    char *from_hdr;            /* the header's 'from', normalized, or NULL */
    char *remote;              /* domain authenticated by EXTERNAL */
    struct pair *pairs;        /* dialback domain pairs */
    int tls_mode;              /* listener's enum pl_tls_mode */
    int auth;                  /* enum auth, for ctl */
    char sid[24];              /* our stream id */
    char why[256];             /* why it ended, for the log */
    unsigned secure : 1;       /* TLS is up */
    unsigned header_sent : 1;  /* our header is out */
    unsigned closing : 1;      /* error or close sent */
    unsigned cert_checked : 1; /* cert_ok is known for from_hdr */
    unsigned cert_ok : 1;      /* certificate valid for from_hdr */
    unsigned bidi : 1;         /* XEP-0288: we may send to the peer here */
    unsigned long received;    /* stanzas routed */
    unsigned long sent;        /* stanzas written (bidi) */
    struct in *prev, *next;    /* all incoming streams */
};

/* ---- s2s.c ---- */

extern const char *const pl__s2s_auth_names[];      /* by enum auth */
extern const char *const pl__s2s_out_state_names[]; /* by enum out_state */
extern uint64_t pl__s2s_next_id;     /* ids of links and streams */
extern unsigned long pl__s2s_nconns; /* open connections, both ways */

/* The settings and configuration in force (the front end's start and reload). */
const struct pl_settings *pl__s2s_settings(void);

/* s2s.routes: a remote domain reached at a fixed host and port. */
struct pl_s2s_route {
    char *domain; /* normalized remote domain */
    char *host;   /* host name or IP literal */
    int port;     /* TCP port */
    int tls;      /* PL_TLS_STARTTLS or PL_TLS_DIRECT */
};

/* The `s2s` group (the front end's options; routes read by its check). */
struct pl_s2s_settings {
    int enable;                   /* federate at all */
    int require_tls;              /* both ways */
    int bidi;                     /* XEP-0288 */
    struct pl_strlist auth;       /* "external", "dialback", in order */
    char *ca_file, *ca_dir;       /* trusted authorities, "" = system */
    long connect_timeout;         /* seconds to set a link up */
    long idle_timeout;            /* seconds without a stanza */
    long max_queue_bytes;         /* queued while a link is set up */
    char *resolver;               /* "address:port" or "" */
    config_setting_t *routes_raw; /* the routes list as written */
    struct pl_s2s_route *routes;  /* parsed, normalized */
    int nroutes;
};

/* The s2s group in force. */
const struct pl_s2s_settings *pl__s2s_conf(void);
/* snprintf for reasons, which may be cut (no truncation warning). */
void pl__s2s_whyf(char *out, size_t n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Whether s2s.auth allows method ("external", "dialback"). */
int pl__s2s_allowed(const char *method);
/* The loop's time in milliseconds. */
uint64_t pl__s2s_now_ms(void);
/* Write s, or b's bytes (then reset b), on c if it is not NULL. */
void pl__s2s_write_str(struct pl_conn *c, const char *s);
void pl__s2s_write_buf(struct pl_conn *c, struct pl_buf *b);
/* Buffer and rate limits for a new connection, from the settings. */
struct pl_conn_limits pl__s2s_conn_limits(void);
/* The client TLS context of our domain local, or NULL. */
SSL_CTX *pl__s2s_client_ctx_for(const char *local);
/* Whether the peer's certificate on ssl is valid for domain (RFC 6125)
 * under the trusted authorities (s2s.ca_file, ca_dir); why says why not. */
int pl__s2s_verify_peer(SSL *ssl, const char *domain, char *why, size_t n);

/* ---- s2s_out.c ---- */

extern struct out *pl__s2s_outs; /* every link */

/* The link local -> remote that takes new stanzas (not detached), or
 * NULL. */
struct out *pl__s2s_out_find(const char *local, const char *remote);
/* A new link, not started yet (pl__s2s_out_start may end it at once). */
struct out *pl__s2s_out_new(const char *local, const char *remote);
/* Resolves, then connects (may fail and free o before returning). */
void pl__s2s_out_start(struct out *o);
/* Hands st (borrowed) to the link local -> remote (see s2s_out.c). */
int pl__s2s_out_send(const char *local, const char *remote,
                     struct pl_stanza *st);
/* Authenticated with auth (enum auth): sends what queued. */
void pl__s2s_out_ready(struct out *o, int auth);
/* Closes the connection and fails the link (after the socket is gone);
 * stream_close writes </stream:stream> first. */
void pl__s2s_out_abort(struct out *o, int stream_close);
/* Bounces every queued stanza with code and ends the link. */
void pl__s2s_out_fail(struct out *o, int code);
/* Ends the link's life: unreachable for new stanzas, freed once its
 * socket is gone. */
void pl__s2s_out_detach(struct out *o);

/* ---- s2s_in.c ---- */

extern struct in *pl__s2s_ins; /* every incoming stream */

/* The callbacks of an incoming stream, for on_accept (s2s.c). */
extern const struct pl_conn_ops pl__s2s_in_conn_ops;
extern const struct pl_xml_callbacks pl__s2s_in_xml_cb;
/* The open incoming stream with this id, or NULL. */
struct in *pl__s2s_in_by_id(uint64_t id);
/* Ends the stream with an RFC 6120 §4.9.3 condition (text may be NULL). */
void pl__s2s_in_error(struct in *i, const char *cond, const char *text);
/* i's dialback pair from -> to, or NULL. */
struct pair *pl__s2s_in_pair(struct in *i, const char *from, const char *to);
/* Whether the peer's certificate on i is valid for domain. */
int pl__s2s_in_cert_valid_for(struct in *i, const char *domain, char *why,
                              size_t n);
/* Writes st on an incoming bidirectional stream authenticated for
 * remote -> local, if there is one (1), else 0. */
int pl__s2s_in_send_bidi(const char *local, const char *remote,
                         struct pl_stanza *st);

/* ---- dialback.c ---- */

/* Sends our dialback key on the link o (<db:result/>). */
void pl__s2s_out_db_key(struct out *o);
/* <db:result/> or <db:verify/> received on the link o. */
void pl__s2s_out_db(struct out *o, struct pl_stanza *st);
/* Sends the db:verify requests queued on o not yet sent. */
void pl__s2s_out_send_verifies(struct out *o);
/* <db:result/> and <db:verify/> received on the incoming stream i. */
void pl__s2s_in_db_result(struct in *i, struct pl_stanza *st);
void pl__s2s_in_db_verify(struct in *i, struct pl_stanza *st);
/* Outcome of a db:verify for incoming stream in_id: type "valid",
 * "invalid", or NULL when the originating server could not be reached. */
void pl__s2s_in_answer_verify(uint64_t in_id, const char *local,
                              const char *remote, const char *type);

#endif
