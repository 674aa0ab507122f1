/*
 * client.h - what parley (the command-line client) and parley-agent (the
 * device daemon) share on top of libstrophe: connection options and their
 * TLS policy, in-band registration (XEP-0077) over a raw stream, exit
 * codes, and small helpers for XEP-0335 JSON containers.
 *
 * TLS: certificates are verified by default (libstrophe checks the chain
 * against the system store or --ca-file and the name against the domain);
 * --insecure trusts any certificate and is meant for tests only.  TLS is
 * mandatory unless --plain is given.
 *
 * Extending: add a field to struct pl_cl_opts, parse it in
 * pl_cl_parse_opt, apply it in pl_cl_conn_new.
 */
#ifndef PL_CLIENT_H
#define PL_CLIENT_H

#include <strophe.h>

#define PL_NS_JSON "urn:xmpp:json:0"
#define PL_NS_RECEIPTS "urn:xmpp:receipts"
#define PL_NS_REGISTER "jabber:iq:register"
#define PL_NS_PING "urn:xmpp:ping"
#define PL_NS_STANZAS "urn:ietf:params:xml:ns:xmpp-stanzas"

/* Exit codes shared by parley and parley-agent (documented in README). */
enum {
    PL_EXIT_OK = 0,
    PL_EXIT_FAILURE = 1,  /* anything not listed below */
    PL_EXIT_USAGE = 2,    /* bad command line */
    PL_EXIT_CONNECT = 3,  /* could not connect, or the connection broke */
    PL_EXIT_TLS = 4,      /* TLS failed: certificate not trusted, ... */
    PL_EXIT_AUTH = 5,     /* authentication refused */
    PL_EXIT_STANZA = 6,   /* the server or peer answered with an error */
    PL_EXIT_TIMEOUT = 7,  /* no answer in time */
    PL_EXIT_CONFLICT = 8, /* registration: the account exists */
};

struct pl_cl_opts {
    const char *server;  /* host to connect to; NULL: the JID's domain */
    unsigned short port; /* 0: default (5222, or SRV by libstrophe) */
    const char *ca_file; /* PEM trust anchors, or NULL for the system's */
    int insecure;        /* trust any certificate (tests only) */
    int direct_tls;      /* XEP-0368 TLS from the first byte */
    int plain;           /* allow an unencrypted stream */
    int debug;           /* libstrophe's traffic on stderr */
    long timeout_ms;     /* bound on each wait */
};

/* Recognizes one connection option at argv[*i] (advancing *i past its
 * value); returns 1 if it was one, 0 if not, -1 on a missing value. */
int pl_cl_parse_opt(struct pl_cl_opts *o, int argc, char **argv, int *i);
/* The option summary for usage messages. */
extern const char pl_cl_opts_help[];

/* A libstrophe context with logging per o->debug (new reference). */
xmpp_ctx_t *pl_cl_ctx_new(const struct pl_cl_opts *o);
/* A connection with o's TLS policy, jid and password set; resets the
 * flags below, which describe the latest connection. */
xmpp_conn_t *pl_cl_conn_new(xmpp_ctx_t *ctx, const struct pl_cl_opts *o,
                            const char *jid, const char *password);
/* Whether a certificate was refused (set by the certfail hook). */
int pl_cl_cert_refused(void);
/* Whether SASL authentication failed (libstrophe said so in its log). */
int pl_cl_auth_failed(void);

/*
 * In-band registration (XEP-0077 §3.1) of user@domain with password over a
 * raw stream (STARTTLS first unless o->plain).  Blocks, bounded by
 * o->timeout_ms.  Returns PL_EXIT_OK, PL_EXIT_CONFLICT when the account
 * exists, or another PL_EXIT_* code; err gets a message.
 */
int pl_cl_register(xmpp_ctx_t *ctx, const struct pl_cl_opts *o,
                   const char *domain, const char *user, const char *password,
                   char *err, size_t errlen);

/* The defined-condition element name of an error stanza, or
 * "undefined-condition". */
const char *pl_cl_error_condition(xmpp_stanza_t *st);

/* Monotonic milliseconds. */
long long pl_cl_now_ms(void);
/* Wall-clock "2026-11-22T04:25:25.123Z" into buf (>= 32 bytes). */
void pl_cl_timestamp(char *buf, size_t len);

#endif
