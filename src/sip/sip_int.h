/*
 * sip_int.h - what the files of the SIP front end (src/sip/) share: the
 * `sip` settings, flows (where a message came from and where answers go),
 * framing, parsing and checking with libosip2's parser, the transaction
 * layer (RFC 3261 §17) and the method handlers that later parts fill in.
 *
 * The files, one concern each:
 *   frame.c        header scanning and message framing, no network
 *                  (streams: RFC 3261 §7.5, §18.3, RFC 5626 §3.5.1
 *                  keep-alives; datagrams: §18.3)
 *   message.c      libosip2 set-up, parsing (full, and the minimal
 *                  parse that still addresses a 400), header helpers,
 *                  responses (§8.2.6.2), new requests, tags
 *   transaction.c  server (§17.2.2) and client (§17.1.2) non-INVITE
 *                  transactions in a hash table, on the loop's timers
 *   transport.c    the "sip" listener protocols: UDP datagrams, TCP and
 *                  TLS connections, sending over a flow, response routing
 *                  (§18.2.2 with received, RFC 3581 rport)
 *   dispatch.c     a received message's way in: checks in RFC order,
 *                  stateless rejections (§8.2.7), transaction matching,
 *                  the method table and the OPTIONS handler
 *   sip.c          the front end: `sip` options, --check-config, start
 *                  and stop, `parleyctl sip`, the parts table
 *   binding.c      the registrar's rules (RFC 3261 §10.3), pure functions
 *   auth.c         digest authentication of requests (§22, RFC 8760)
 *   route.c        route sets from Path (RFC 3327) and Record-Route
 *                  (§12.1.1), requests along them (§12.2.1.1)
 *   registrar.c    REGISTER and the bindings, each a session (part)
 *   im.c           MESSAGE and INFO both ways, RFC 3428 (part)
 *   publish.c      PUBLISH of presence, RFC 3903 (part)
 *   subscribe.c    SUBSCRIBE/NOTIFY of presence, RFC 6665 (part)
 *
 * Names: functions and globals shared between these files are
 * pl__sip_*; types and macros keep the folder's short prefix (sip_,
 * SIP_), as doc/conventions.md says.
 *
 * For a method handler (the registrar, MESSAGE, presence):
 *   - fill the method's row of pl__sip_methods (dispatch.c) with a
 *     sip_method_fn; it runs once per new request, after every
 *     transport and RFC 3261 §8.2 check (the request is well formed, its
 *     Request-URI is sip/sips at one of our hosts unless the row says
 *     SIP_M_ANY_DOMAIN, Require lists nothing unknown);
 *   - answer with pl__sip_reply / pl__sip_reply_msg, at once or later:
 *     keep t->id and find the transaction again with pl__sip_txn_find;
 *     retransmissions are absorbed meanwhile and answered with the final
 *     response once there is one, so a request is never handled twice;
 *   - send requests of the server's own (MESSAGE, NOTIFY) with
 *     pl__sip_request_new and pl__sip_request_send over the flow a
 *     request came in on (pl__sip_txn_flow, copied: a flow is a value);
 *   - state that lives beyond a request (registrations, subscriptions)
 *     is a struct sip_part in pl__sip_parts (sip.c): start, stop, free
 *     and its members of `parleyctl sip`.
 */
#ifndef PL_SIP_INT_H
#define PL_SIP_INT_H

#include <jansson.h>
#include <osipparser2/osip_parser.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "buf.h"
#include "config.h"
#include "listen.h"
#include "loop.h"
#include "map.h"
#include "str.h"

struct pl_host;
struct pl_conn;
struct pl_jid;
struct pl_session;
struct pl_stanza;

/* ------------------------------------------------------------------ */
/* Settings: the `sip` group (sip.c documents each).                   */

struct sip_settings {
    long max_message_size; /* bytes of one message, headers and body */
    long max_headers;      /* header fields in one message */
    long t1;               /* RFC 3261 T1, ms (RTT estimate) */
    long t2;               /* T2, ms (longest retransmit interval) */
    long t4;               /* T4, ms (a message's longest life) */
    long max_transactions; /* server and client transactions at once */
    long max_contacts;     /* registrar: bindings per address of record */
    long default_expires;  /* registrar: seconds when the UA names none */
    long min_expires;      /* registrar: shorter is 423 (RFC 3261 §10.3) */
    long max_expires;      /* registrar: longer is cut to this */
    long nonce_lifetime;   /* digest nonces are good this long, seconds */
    int offline_messages;  /* enum sip_offline: MESSAGE to no one online */
    struct pl_strlist md5_only_agents; /* User-Agent prefixes challenged
                                        * with MD5 alone (COMPAT) */
    int presence_authorization;        /* enum sip_presence_auth */
    long presence_notify_interval;     /* ms between NOTIFYs of a dialog */
    long auth_cache_ttl;               /* seconds digest keys are cached */
    long auth_cache_max;               /* accounts in that cache at most */
};

/* Who may watch a presentity (SUBSCRIBE). */
enum sip_presence_auth {
    SIP_PRESENCE_ROSTER = 0, /* the watcher's roster says 'to' or 'both',
                              * else an RFC 6121 request, pending */
    SIP_PRESENCE_OPEN = 1,   /* every authenticated user of the host */
};

/* What a MESSAGE to a user with no available session gets. */
enum sip_offline {
    SIP_OFFLINE_STORE = 0,  /* stored like XMPP messages, 202 Accepted */
    SIP_OFFLINE_REJECT = 1, /* 480 Temporarily Unavailable */
};

/* The settings in force (never NULL once the front end started; the
 * defaults before, for tests and the fuzz target). */
const struct sip_settings *pl__sip_settings(void);
/* Tests and the fuzz target: settings to use instead (borrowed). */
void pl__sip_set_settings(const struct sip_settings *s);

/* ------------------------------------------------------------------ */
/* Flows: a transport and a peer.                                      */

enum sip_transport {
    SIP_UDP = 1, /* datagrams on a listener's socket */
    SIP_TCP,     /* a connection accepted by a plain listener */
    SIP_TLS,     /* a connection accepted by a tls = "direct" listener */
};

/*
 * Where a message came from, and where answers and requests go back: a
 * value, copied freely.  A stream flow names its connection by id (the
 * connection may be gone: sending then fails with PL_ECLOSED); a UDP flow
 * names the listener whose socket sends (listeners live until the process
 * ends) and the peer's address.
 */
struct sip_flow {
    int transport;                /* enum sip_transport */
    struct pl_listen *listen;     /* the listener it came in on */
    uint64_t conn;                /* stream: connection id; UDP: 0 */
    struct sockaddr_storage addr; /* the peer (source of what came in) */
    socklen_t addrlen;            /* 0: none */
};

/* Sends bytes over f (copied).  PL_OK; PL_ECLOSED if the connection is
 * gone; PL_EAGAIN if the UDP socket buffer is full (dropped: SIP
 * retransmits); PL_EIO, PL_EINVAL otherwise. */
int pl__sip_flow_send(const struct sip_flow *f, const void *p, size_t n);
/* Whether f's connection is still open (always 1 for UDP). */
int pl__sip_flow_alive(const struct sip_flow *f);
/* Whether f is reliable (TCP, TLS): no retransmissions on it. */
static inline int pl__sip_flow_reliable(const struct sip_flow *f)
{
    return f->transport != SIP_UDP;
}
/* "UDP", "TCP" or "TLS": the Via transport of f. */
const char *pl__sip_transport_name(int transport);
/* The peer's address as text and its port (ip of at least 46 bytes). */
void pl__sip_flow_peer(const struct sip_flow *f, char *ip, size_t iplen,
                       int *port);
/* Sets the peer's port of f (UDP: where a datagram goes). */
void pl__sip_flow_set_port(struct sip_flow *f, int port);
/* The sent-by (host[:port]) this server writes in its Via over f, and
 * the host part alone for Contact URIs; buf of at least 300 bytes. */
void pl__sip_flow_sent_by(const struct sip_flow *f, char *buf, size_t len);

/* ------------------------------------------------------------------ */
/* Framing (frame.c): no network, for the transports, tests and fuzzing. */

/* Single-valued header fields counted by pl__sip_scan (bits). */
enum sip_single {
    SIP_H_FROM = 1u << 0,
    SIP_H_TO = 1u << 1,
    SIP_H_CALL_ID = 1u << 2,
    SIP_H_CSEQ = 1u << 3,
    SIP_H_MAX_FORWARDS = 1u << 4,
    SIP_H_CONTENT_LENGTH = 1u << 5,
    SIP_H_CONTENT_TYPE = 1u << 6,
};

/* What pl__sip_scan learnt of a header section. */
struct sip_scan {
    size_t hlen;          /* start line + headers + the empty line, bytes */
    long clen;            /* Content-Length, -1 if absent */
    int clen_bad;         /* Content-Length not 1*DIGIT, too large, or twice
                         * with different values */
    unsigned nheaders;    /* header fields (continuation lines not counted) */
    unsigned seen;        /* enum sip_single bits present */
    unsigned dup;         /* enum sip_single bits present more than once */
    unsigned nul : 1;     /* a NUL byte somewhere in the header section */
    unsigned lf_only : 1; /* lines end in LF without CR (tolerated) */
};

/*
 * Scans p[0..n) for the end of a header section (an empty line after
 * the start line; lines end in CRLF, or LF alone).  PL_OK with *s filled
 * when found; PL_EAGAIN when not (more bytes needed, or the datagram has
 * no empty line).  Never reads past n.
 */
int pl__sip_scan(const char *p, size_t n, struct sip_scan *s);

/*
 * Iterates the header fields of the header section p[0..hlen): *pos
 * starts at 0 (the start line is skipped); each call yields the next
 * field's name and raw value (continuation lines included, leading and
 * trailing whitespace trimmed).  Returns 1 while there is one, 0 at the
 * end.  A line without a colon is yielded with an empty name.
 */
int pl__sip_header_next(const char *p, size_t hlen, size_t *pos,
                        struct pl_str *name, struct pl_str *value);

/* Copies value with each line folding (CRLF or LF, then SP/HT) turned
 * into one space; returns a new string (pl_free). */
char *pl__sip_unfold(struct pl_str value);

/* The start line, checked to the letter of RFC 3261 §7.1 / §7.2. */
struct sip_start {
    int is_response;       /* "SIP/..." first */
    int ok;                /* exactly METHOD SP URI SP VERSION, or VERSION
                           * SP 3DIGIT SP reason, with the grammar's
                           * characters */
    struct pl_str method;  /* request: the method token */
    struct pl_str uri;     /* request: the Request-URI */
    struct pl_str scheme;  /* request: the URI's scheme (before ':') */
    int scheme_ok;         /* the scheme is RFC 3986 syntax */
    struct pl_str version; /* "SIP/2.0" (either kind) */
    int status;            /* response: 100..699, 0 if malformed */
};
void pl__sip_start_line(const char *p, size_t n, struct sip_start *sl);

enum sip_frame {
    SIP_FRAME_MORE = 0,  /* stream: nothing complete yet */
    SIP_FRAME_MSG,       /* a whole message */
    SIP_FRAME_PING,      /* a double-CRLF keep-alive (stream: answer CRLF;
                          * datagram: only line ends, ignored) */
    SIP_FRAME_TOO_LARGE, /* over max_message_size: header section given
                          * (513 if it can be addressed); a stream drops
                          * the body and goes on */
    SIP_FRAME_SHORT,     /* datagram: body shorter than Content-Length
                          * (§18.3: 400 for a request, drop a response) */
    SIP_FRAME_BAD,       /* no usable Content-Length on a stream (§18.3),
                          * a malformed one, or no end of the headers
                          * within the limit: header section given when
                          * there is one; a stream is dead after it */
};

/* One framed unit: p[0..n) is the message (MSG) or, for the others, the
 * header section as far as it is known (n may be 0). */
struct sip_frame_out {
    char *p;              /* borrowed (the caller's or the framer's bytes,
                           * writable): valid until the next call */
    size_t n;             /* bytes */
    struct sip_scan scan; /* of the header section, when known */
};

/* A stream's framing state (one per TCP/TLS connection). */
struct sip_framer {
    struct pl_buf in;     /* bytes received, not yet framed */
    size_t consume;       /* bytes the last result spans, dropped on the next
                        * call */
    size_t scanned;       /* bytes of in already searched for the end of the
                        * header section (resumed there: no rescans) */
    size_t hlen;          /* the pending message's header section, once
                        * found (0: not yet) */
    struct sip_scan scan; /* and what it says, scanned once */
    uint64_t skip;        /* body bytes of a too-large message to drop */
    unsigned dead : 1;    /* after SIP_FRAME_BAD: framing lost */
};

/* Appends bytes (copied). */
void pl__sip_framer_feed(struct sip_framer *f, const char *p, size_t n);
/* The next unit (enum sip_frame); max is max_message_size. */
int pl__sip_framer_next(struct sip_framer *f, size_t max,
                        struct sip_frame_out *out);
/* Frees the buffer (an idle connection holds none). */
void pl__sip_framer_free(struct sip_framer *f);
/* Frames one datagram (enum sip_frame, never MORE). */
int pl__sip_frame_datagram(char *p, size_t n, size_t max,
                           struct sip_frame_out *out);

/* ------------------------------------------------------------------ */
/* Messages (message.c).                                               */

/* Once per process: libosip2's parser tables, allocators (alloc.h) and
 * its trace routed to the debug log. */
void pl__sip_osip_init(void);

/*
 * Parses a framed message.  *out receives a new message (osip_message_free)
 * or NULL.  PL_OK: fully parsed.  PL_EFEATURE_NOT_IMPLEMENTED: a multipart
 * body (Content-Type multipart/...): the header section is parsed, the
 * body left out (no part is ever parsed).  PL_EINVAL: libosip2 refused it; *out is
 * then a minimal message holding what could be parsed of the start line
 * and of Via, From, To, Call-ID and CSeq alone, enough to address a 400 (or
 * NULL when even that failed).  scan is the header section's (hlen used).
 * p[0..n) is the caller's to change, and changed: the header section's
 * Content-Length fields are taken out in place (libosip2 is to read none;
 * the length is scan's), the fields after them moved down.  The start
 * line and the body stay where they were; parse the bytes once.
 */
int pl__sip_parse(char *p, size_t n, const struct sip_scan *scan,
                  osip_message_t **out);
/* Like the minimal pass of pl__sip_parse, for a header section only
 * (a message too large to parse whole). */
int pl__sip_parse_headers(const char *p, size_t hlen, osip_message_t **out);

/* Whether a response can be addressed to req: a top Via with a host and
 * a CSeq with number and method (what §17.1.3 matches on). */
int pl__sip_addressable(const osip_message_t *req);

/*
 * The first value of header name in m, whatever case or form (long or
 * compact, "Supported" or "k"), among the fields libosip2 keeps
 * generically (not Via, From, To, Call-ID, CSeq, Contact...).  Borrowed;
 * NULL if absent.  pos > 0: the pos-th value (comma lists are split).
 */
const char *pl__sip_header(const osip_message_t *m, const char *name, int pos);
/* u as text (pl_free), or NULL. */
char *pl__sip_uri_str(osip_uri_t *u);
/* The bare JID of an address in a request (RFC 7247 §4: sips allowed, a
 * GRUU's instance ignored): PL_OK and *out (pl_jid_free), or the mapping's
 * error (PL_EJID_MALFORMED for a NULL u). */
int pl__sip_uri_jid(osip_uri_t *u, struct pl_jid **out);
/* Whether an Event value names the presence package (RFC 6665 §8.2.1:
 * the token before any parameter, compared as written). */
int pl__sip_is_presence_event(const char *ev);
/* Whether the option-tag list header `name` (Supported, Require) of m
 * names tag, in any of its fields, case-insensitively. */
int pl__sip_has_option(const osip_message_t *m, const char *name,
                       const char *tag);
/* The tag parameter of From / To, or NULL. */
const char *pl__sip_from_tag(const osip_message_t *m);
const char *pl__sip_to_tag(const osip_message_t *m);
/* The top Via's branch, or NULL. */
const char *pl__sip_branch(const osip_message_t *m);

/*
 * A response to req following RFC 3261 §8.2.6.2: SIP/2.0 code reason,
 * the request's Via fields in order (with the received and rport the
 * transport wrote into the top one), From, Call-ID, CSeq, and To with
 * to_tag added when it has none (none for 100).  req may be a minimal
 * message (missing fields are left out).  NULL if req cannot be
 * addressed.  Returns a new message: add fields, then send it with
 * pl__sip_reply_msg or serialize it.
 */
osip_message_t *pl__sip_response_build(osip_message_t *req, int code,
                                       const char *reason, const char *to_tag);
/* Serializes m: a new string (pl_free) and its length; NULL on failure. */
char *pl__sip_serialize(osip_message_t *m, size_t *len);
/* The To tag this server gives its responses to req: a keyed hash of
 * Call-ID, From tag, CSeq and branch (the same for a retransmission,
 * §8.2.7), 16 hex digits. */
void pl__sip_make_tag(const osip_message_t *req, char out[17]);
/* Random token of n-1 characters (branch, Call-ID, tags). */
void pl__sip_random(char *out, size_t n);

/*
 * A new request of the server's own: METHOD uri SIP/2.0 with To (to),
 * From (from, with a fresh tag), a fresh Call-ID, CSeq 1 METHOD and
 * Max-Forwards: 70.  from and to are name-addr or addr-spec strings.
 * The caller may add fields and a body (osip_message_set_*), then send
 * it with pl__sip_request_send.  PL_EINVAL if a value does not parse.
 */
int pl__sip_request_new(const char *method, const char *uri, const char *from,
                        const char *to, osip_message_t **out);

/* ------------------------------------------------------------------ */
/* Transactions (transaction.c).                                       */

enum sip_txn_state {
    SIP_TXN_TRYING = 1, /* request passed up, nothing sent */
    SIP_TXN_PROCEEDING, /* a provisional response sent (server) or received
                     * (client) */
    SIP_TXN_COMPLETED,  /* final response sent (server) or received (client);
                     * absorbing retransmissions until Timer J / K */
};

/* A non-INVITE server transaction (RFC 3261 §17.2.2). */
struct sip_txn {
    uint64_t id;           /* for async handlers: pl__sip_txn_find */
    int state;             /* enum sip_txn_state */
    char *key;             /* in the table (§17.2.3) */
    struct sip_flow flow;  /* where responses go (§18.2.2 applied) */
    osip_message_t *req;   /* the request, until the final response */
    char *resp;            /* the last response sent, serialized */
    size_t resp_len;       /* its length */
    int code;              /* its status code, 0 before any */
    char tag[17];          /* our To tag for it */
    struct pl_timer timer; /* Timer J, or the guard while unanswered */
};

/* A request's transaction key, §17.2.3 (branch with the magic cookie,
 * sent-by, method; ACK counts as INVITE), or the RFC 2543 fallback
 * (Request-URI, From tag, Call-ID, CSeq, top Via; To tag but for
 * INVITE/ACK).  method overrides the request's (NULL: its own).  Returns
 * a new string (pl_free) or NULL if req lacks what is needed. */
char *pl__sip_txn_key(osip_message_t *req, const char *method);

/* The transaction a request is a retransmission of, or NULL. */
struct sip_txn *pl__sip_txn_match(const char *key);
/* Absorbs a retransmission (§17.2.2): resends the last response, if any. */
void pl__sip_txn_retransmission(struct sip_txn *t);
/* A new server transaction for req (takes ownership) under key (taken),
 * answering over flow.  NULL past max_transactions (req and key freed). */
struct sip_txn *pl__sip_txn_new(osip_message_t *req, char *key,
                                const struct sip_flow *flow);
/* The transaction with this id, NULL once it ended. */
struct sip_txn *pl__sip_txn_find(uint64_t id);
/* The request (borrowed; NULL after the final response). */
static inline osip_message_t *pl__sip_txn_request(struct sip_txn *t)
{
    return t->req;
}
/* Where the transaction's responses go (and its requester's flow). */
static inline const struct sip_flow *pl__sip_txn_flow(const struct sip_txn *t)
{
    return &t->flow;
}

/*
 * Answers the transaction's request with resp (takes ownership, usually
 * from pl__sip_response_new).  1xx: Proceeding (sent, and resent on
 * retransmissions); 200-699: Completed, the request is freed, Timer J
 * starts (64*T1 over UDP, 0 over TCP/TLS).  PL_OK; PL_EINVAL after a
 * final response (resp is freed: §17.2.2 discards it).
 */
int pl__sip_reply_msg(struct sip_txn *t, osip_message_t *resp);
/* A response to t's request (pl__sip_response_build with t's tag);
 * reason NULL: the standard phrase. */
osip_message_t *pl__sip_response_new(struct sip_txn *t, int code,
                                     const char *reason);
/* Answers with code and, if hdrs, the fields hdrs[0]: hdrs[1], hdrs[2]:
 * hdrs[3]... (NULL-ended). */
int pl__sip_reply(struct sip_txn *t, int code, const char *reason,
                  const char *const *hdrs);
/* 503 with Retry-After: 30, the answer to new work while the front end
 * shuts down. */
int pl__sip_reply_stopping(struct sip_txn *t);
/* 423 Interval Too Brief with Min-Expires: min (RFC 3261 §10.3 step 7,
 * RFC 3903 §6, RFC 6665 §4.2.1.1). */
int pl__sip_reply_too_brief(struct sip_txn *t, long min);
/*
 * The expiry t's request asks for: its Expires (dflt without one), cut to
 * sip.max_expires.  -1 when t was answered instead: 400 for a value that
 * is not delta-seconds, 423 for one below sip.min_expires other than 0.
 */
long pl__sip_expires(struct sip_txn *t, long dflt);

/*
 * Completion of a client transaction, exactly once unless abandoned:
 * code is the final response's status (200-699) with resp (borrowed), or
 * 408 with resp NULL when Timer F fired (RFC 3261 §8.1.3.1), or 503 with
 * resp NULL when the front end shuts down first.  retransmissions: how
 * many times Timer E resent the request.
 */
typedef void sip_client_fn(void *arg, int code, osip_message_t *resp,
                           unsigned retransmissions);

/*
 * Sends req (takes ownership, from pl__sip_request_new) over flow as a
 * new non-INVITE client transaction (RFC 3261 §17.1.2): a top Via with
 * this server's sent-by, a fresh z9hG4bK branch and rport is added, and
 * Content-Length; over UDP the request is resent per Timer E (T1,
 * doubling up to T2; T2 after a provisional response) until a final
 * response or Timer F (64*T1).  PL_OK and *id (may be NULL); PL_ECLOSED
 * when the flow's connection is gone, PL_ELIMIT past max_transactions,
 * PL_EINVAL for INVITE, ACK or a request missing a mandatory field: then
 * req is freed and cb never fires.  A TCP/TLS connection that closes
 * before the answer: Timer F (408).  cb may send again or abandon.
 */
int pl__sip_request_send(const struct sip_flow *flow, osip_message_t *req,
                         sip_client_fn *cb, void *arg, uint64_t *id);
/* The caller's arg is going away: cb will not fire for transaction id
 * (which runs to its end all the same). */
void pl__sip_request_abandon(uint64_t id);
/* A response arrived over flow (takes ownership): to its client
 * transaction (§17.1.3: branch and CSeq method), else dropped. */
void pl__sip_txn_response(osip_message_t *resp, const struct sip_flow *flow);

/* Server and client transactions now. */
unsigned long pl__sip_txn_count(int client);
/* Start (settings in force), and the end: every transaction is dropped;
 * pending client transactions complete with 503 first, so that their
 * owners free what they hold. */
void pl__sip_txn_init(void);
void pl__sip_txn_free(void);

/* ------------------------------------------------------------------ */
/* Dispatch (dispatch.c).                                              */

/* A method handler: a new request (borrowed, also pl__sip_txn_request)
 * in its transaction t, to answer now or later. */
typedef void sip_method_fn(struct sip_txn *t, osip_message_t *req);

/* Row flags of the method table. */
#define SIP_M_LOCAL                                                            \
    1u /* this server is the request's final
                             * recipient even for a user's address
                             * (registrar, presence agent): Max-Forwards 0
                             * is no error (RFC 3261 §16.3 step 3) */
#define SIP_M_ANY_DOMAIN                                                       \
    2u /* Request-URI hosts that are not ours reach
                             * the handler (it answers 404 itself) */

struct sip_method {
    const char *name;   /* "REGISTER", exactly as on the wire */
    sip_method_fn *fn;  /* NULL: known, not served: 405 with Allow */
    unsigned flags;     /* SIP_M_* */
    const char *accept; /* body types its handler takes ("text/plain"),
                         * for the Accept of OPTIONS; NULL: none */
};

/* Every method this server knows (RFC 3261 and the extensions it may
 * serve), NULL-named at the end; dispatch.c. */
extern const struct sip_method pl__sip_methods[];

/* A framed unit arrived over flow (enum sip_frame kind): parse, check,
 * match, answer or pass to a handler.  p[0..n) borrowed, and changed in
 * place (pl__sip_parse). */
void pl__sip_receive(const struct sip_flow *flow, int kind, char *p, size_t n,
                     const struct sip_scan *scan);

/*
 * The checks of a request, in order, without state: RFC 3261 §7 syntax
 * the parser let through, §8.1.1 mandatory fields, §8.2.1 methods,
 * §8.2.2 Request-URI and Require, §16.3 Max-Forwards.  Returns 0 when
 * the request may go on, else the status to answer (reason, and the
 * extra field *hdr_name: *hdr_value when set: Allow, Unsupported).  -1:
 * drop it silently.  For the fuzz target and tests too.
 */
struct sip_verdict {
    int code;             /* 0, -1 or a status */
    const char *reason;   /* static text, NULL: the standard phrase */
    const char *hdr_name; /* an extra field of the answer, or NULL */
    char hdr_value[256];  /* its value */
    int minimal;          /* the request only went through the minimal
                           * parse (libosip2 refused it whole) */
};

/*
 * The bytes of the stateless answer v->code to req (our tag, v's reason
 * and extra field): a new string (pl_free) and its length, or NULL when
 * req cannot be addressed or when the answer would not parse back with
 * the same top Via sent-by and branch
 * and CSeq (libosip2 writes some lenient fields in a form it reads
 * otherwise or not at all: such an answer is not sent).
 */
char *pl__sip_stateless_bytes(osip_message_t *req, const struct sip_verdict *v,
                              size_t *len);
void pl__sip_check_request(osip_message_t *req, int parsed,
                           const struct sip_start *sl,
                           const struct sip_scan *scan, struct sip_verdict *v);

/*
 * What becomes of a framed unit, without a network (the fuzz target and
 * tests use it; pl__sip_receive acts on it): *out receives the parsed
 * message (new, or NULL when nothing parsed), *is_response says which
 * kind; v->code is 0 when a response may go to its client transaction or
 * a request on to transaction matching, -1 when it is dropped (v->reason
 * says why), else the status a request is answered with statelessly.
 * stream: it came over TCP/TLS.  p is changed in place (pl__sip_parse).
 */
void pl__sip_judge(int kind, char *p, size_t n, const struct sip_scan *scan,
                   int stream, osip_message_t **out, int *is_response,
                   struct sip_verdict *v);

/* The host whose domain is the Request-URI's host (the first host for
 * one of this server's addresses), or NULL. */
struct pl_host *pl__sip_request_host(osip_message_t *req);
/* The Request-URI as an account's address on the request's host: its JID
 * (pl_jid_free) and *h; NULL when it names no user of that host. */
struct pl_jid *pl__sip_request_user(osip_message_t *req, struct pl_host **h);
/* The checks every PUBLISH and SUBSCRIBE passes first: 1, with *h the
 * request's host (pl__sip_request_host) and, when user, *who its
 * presentity (pl__sip_request_user; pl_jid_free); 0 when t was answered:
 * 503 while stopping, 489 with Allow-Events for an Event other than
 * presence, 404 (user only) for no user of ours. */
int pl__sip_presence_request(struct sip_txn *t, osip_message_t *req,
                             int stopping, int user, struct pl_host **h,
                             struct pl_jid **who);
/* The Allow value: every method with a handler ("OPTIONS, ..."). */
const char *pl__sip_allow(void);

/* ------------------------------------------------------------------ */
/* Transport (transport.c).                                            */

/* The listener protocols of the front end ("sip" over UDP and TCP). */
extern const struct pl_protocol pl__sip_protocol;
/* Open TCP/TLS connections now (per transport: SIP_TCP, SIP_TLS). */
unsigned long pl__sip_conn_count(int transport);
/* UDP datagrams received over the listeners' life. */
unsigned long pl__sip_udp_datagrams(void);
/* Shutdown: closes every connection. */
void pl__sip_conns_close(void);
/* Whether host (a Request-URI's, lower case) is one of this server's IP
 * addresses (listeners' and, for wildcard ones, the interfaces'). */
int pl__sip_is_local_address(const char *host);
void pl__sip_addresses_load(const struct pl_config *c);
void pl__sip_addresses_free(void);
/*
 * The destination of responses to req received over flow, RFC 3261
 * §18.2.1-2 and RFC 3581: writes received= into the top Via when its
 * host is not the source address, fills rport= when asked; the answer
 * goes to the source address, at the rport or sent-by port (default
 * 5060) over UDP, over the same connection for TCP/TLS.  maddr is not
 * followed (a response only ever goes to the request's source).
 */
void pl__sip_response_flow(osip_message_t *req, const struct sip_flow *flow,
                           struct sip_flow *out);
/* A UDP flow to ip:port from the first UDP listener (for `parleyctl sip
 * ping`).  PL_EINVAL if none listens or ip is not an address. */
int pl__sip_udp_flow(const char *ip, int port, struct sip_flow *out);

/* ------------------------------------------------------------------ */
/* Route sets (route.c): RFC 3261 §12.1.1, §12.2.1.1, RFC 3327.         */

/* The proxies a request of the server's own goes through, first hop
 * first: each a name-addr "<uri>" with the URI's parameters as received
 * (lr tells a loose router).  A value; {0} is the empty set. */
struct sip_route_set {
    int n;    /* routes */
    char **v; /* each a new string */
};
void pl__sip_routes_free(struct sip_route_set *rs);
/* dst (freed first) becomes a copy of src. */
void pl__sip_routes_copy(struct sip_route_set *dst,
                         const struct sip_route_set *src);
/* The route set of req's Path header fields, in order (RFC 3327 §5.3;
 * comma lists split): PL_OK (n may be 0), PL_EINVAL when a value is not a
 * name-addr with a sip/sips URI or there are more than 16 (out empty). */
int pl__sip_routes_from_path(const osip_message_t *req,
                             struct sip_route_set *out);
/* The UAS route set of a dialog-forming req: its Record-Route URIs in
 * order (RFC 3261 §12.1.1).  Same results. */
int pl__sip_routes_from_rr(const osip_message_t *req,
                           struct sip_route_set *out);
/* "<a>, <b>": a header value of the whole set (a new string). */
char *pl__sip_routes_join(const struct sip_route_set *rs);
/* Whether a route ("<uri>") has the lr parameter (a loose router). */
int pl__sip_route_is_loose(const char *route);
/*
 * Sets req's Request-URI and Route fields (those it had are dropped) for
 * remote target `target` along rs, RFC 3261 §12.2.1.1: empty set or loose
 * first route: Request-URI target, Route the set; a strict first route:
 * Request-URI its URI (no method parameter, no headers), Route the rest
 * and then <target>.  PL_EINVAL if target or a route does not parse.
 */
int pl__sip_routes_apply(osip_message_t *req, const struct sip_route_set *rs,
                         const char *target);
/*
 * The flow a request along rs goes out on, given base, the flow of the
 * request rs was learnt from: base itself, except over UDP when the first
 * route's host is base's peer address (an IP literal, no DNS) with a sip
 * URI and no transport other than udp: then base's peer at that route's
 * port (5060 when none).  Returns 1 when the port was taken from the
 * route.  Never another host than base's peer: a Path or Record-Route
 * cannot aim the server's requests at a third party.
 */
int pl__sip_route_flow(const struct sip_flow *base,
                       const struct sip_route_set *rs, struct sip_flow *out);

/* ------------------------------------------------------------------ */
/* Registration rules (binding.c): RFC 3261 §10.3 steps 6-8 as pure    */
/* functions over one address of record, for the registrar and tests.  */

/* The registrar's expiry and size limits (from struct sip_settings). */
struct sip_reg_limits {
    long def;          /* expiry when neither Contact nor Expires says */
    long min;          /* shorter (and not 0): 423 Interval Too Brief */
    long max;          /* longer: cut to this */
    long max_contacts; /* bindings per address of record */
};

/* A binding the address of record has (borrowed strings). */
struct sip_reg_have {
    const char *key;     /* pl__sip_contact_key() of its contact */
    const char *call_id; /* of the REGISTER that made or last refreshed it */
    uint32_t cseq;       /* and its CSeq number */
};

/* A Contact of the REGISTER (borrowed). */
struct sip_reg_want {
    const char *key; /* pl__sip_contact_key() */
    long expires;    /* its expires parameter, -1 if none or malformed */
};

/* What becomes of one Contact of the request (or, for "*", of one
 * binding). */
struct sip_reg_op {
    int have;     /* index of the binding it refreshes or removes, -1: a new
                   * one (none is made when expires is 0), -2: the same
                   * contact twice in the request, ignored */
    long expires; /* seconds granted; 0: remove */
};

/*
 * Plans a REGISTER on an address of record with nhave bindings: star for
 * "Contact: *", nwant Contacts otherwise (0: a query), hdr_expires the
 * Expires header (-1 absent or malformed), call_id and cseq the request's.
 * Fills ops (nwant entries, or nhave for star) and returns 200, or the
 * status that refuses the whole request (nothing may change, §10.3):
 *   400  "*" with other Contacts or an expiry other than 0 (step 6);
 *   423  an expiry above 0 and below lim->min (step 7: answer with
 *        Min-Expires: lim->min);
 *   500  a binding refreshed or removed by a request with its Call-ID and
 *        a CSeq not above the one it has (steps 6 and 7: out of order);
 *   403  more than lim->max_contacts bindings would result.
 * Expiry of a Contact: its expires parameter, else the Expires header,
 * else lim->def; above lim->max it becomes lim->max.  A Contact matches a
 * binding with the same key.
 */
int pl__sip_reg_plan(const struct sip_reg_have *have, int nhave,
                     const struct sip_reg_want *want, int nwant, int star,
                     long hdr_expires, const char *call_id, uint32_t cseq,
                     const struct sip_reg_limits *lim, struct sip_reg_op *ops);

/* A delta-seconds value (RFC 3261 §25.1: 1*DIGIT, at most 2^32-1), or -1
 * for NULL or malformed. */
long pl__sip_delta_seconds(const char *s);

/*
 * The key a Contact is matched on: "i:" and its +sip.instance value (RFC
 * 5626 §4.1: the same UA across address changes) when it has one, else
 * "u:" and its URI with the scheme and host in lower case, the user as
 * written, the port, and the transport parameter if any (the other URI
 * parameters are not compared).  A new string (pl_free), NULL if the
 * contact has no URI.
 */
char *pl__sip_contact_key(osip_contact_t *c);
/* The resource of a binding with that key: "sip-" and 8 hex digits of a
 * hash of it (stable across refreshes and restarts). */
void pl__sip_reg_resource(const char *key, char out[13]);

/* ------------------------------------------------------------------ */
/* Digest authentication of requests (auth.c), RFC 3261 §22, RFC 8760. */

/*
 * The outcome of pl__sip_auth: t is the request's transaction, s the
 * session of the sender's binding on the request's flow (NULL when it has
 * none, or SIP_AUTH_FLOW was not asked).  t NULL: the request was answered
 * already (a challenge, 400, 403) or its transaction is gone; there is
 * nothing left to do but free arg.
 */
typedef void sip_auth_fn(void *arg, struct sip_txn *t, struct pl_session *s);

enum {
    /* A request over the TCP/TLS connection of one of as's bindings needs
     * no credentials (the REGISTER authenticated the connection). */
    SIP_AUTH_FLOW = 1,
    /* Challenge as a proxy: 407 and Proxy-Authenticate (§22.3); else as a
     * registrar or UAS: 401 and WWW-Authenticate. */
    SIP_AUTH_PROXY = 2,
};

/*
 * Authenticates t's request as the account as (the address it speaks
 * for: the From of a MESSAGE, the To of a REGISTER) on host h: its
 * Authorization (Proxy-Authorization) credentials for h's realm (the
 * domain) are checked on the loop (nonce, Request-URI, RFC 8760 §2.6) and
 * the account is read on the storage thread.  Without credentials, or
 * with a wrong password, an unknown user, a nonce this server did not
 * make: 401 (407) with one challenge per algorithm, SHA-256 first, MD5
 * when server.digest_md5 is on; a stale nonce or a replayed nonce count:
 * the same with stale=true; malformed credentials or a uri that is not the
 * Request-URI: 400; good credentials of another account than as: 403 with
 * the reason phrase refusal (a constant; NULL: "Forbidden").  cb fires
 * exactly once, maybe before this returns.
 */
void pl__sip_auth(struct sip_txn *t, struct pl_host *h, const struct pl_jid *as,
                  const char *refusal, unsigned flags, sip_auth_fn *cb,
                  void *arg);
int pl__sip_auth_start(void);
void pl__sip_auth_free(void);
/* Nonces in the replay table (parleyctl sip). */
size_t pl__sip_auth_tracked(void);
/* Accounts whose digest keys are cached (parleyctl sip). */
size_t pl__sip_auth_cached(void);

/* ------------------------------------------------------------------ */
/* Registrar (registrar.c): bindings, each a session.                  */

extern const struct sip_part pl__sip_registrar;
void pl__sip_register(struct sip_txn *t, osip_message_t *req);

/* Whether s is a registration's session (its impl is the binding). */
int pl__sip_is_binding(const struct pl_session *s);
/* The binding's flow (where requests for it go: the first hop of its
 * Path, else the REGISTER's flow), Contact URI and route set (its
 * REGISTER's Path, RFC 3327; empty without one).  s must be a binding. */
const struct sip_flow *pl__sip_binding_flow(const struct pl_session *s);
const char *pl__sip_binding_contact(const struct pl_session *s);
const struct sip_route_set *pl__sip_binding_route(const struct pl_session *s);
/* The session of a binding of bare ("user@host") registered without a
 * Path over the same TCP/TLS connection as f, where req (received over f)
 * came from the UA itself: one Via.  NULL for UDP flows, a request that
 * came through a proxy (its connection carries other users' requests
 * too), or none. */
struct pl_session *pl__sip_binding_on_conn(const char *bare,
                                           const struct sip_flow *f,
                                           const osip_message_t *req);
/* The session of a binding of bare that came from f's peer address and
 * transport (UDP: the same source), or NULL. */
struct pl_session *pl__sip_binding_from(const char *bare,
                                        const struct sip_flow *f);
/* Routes state (NULL: the registration's own, available) as the presence
 * of the binding's session s (publish.c): open is available with its
 * <show/>, <status/> and <priority/>, closed or none unavailable. */
struct pl_pidf;
void pl__sip_binding_publish(struct pl_session *s, const struct pl_pidf *state);
/* Removes the binding whose session has id sid, if it still exists:
 * unavailable presence, then the session ends (why: for the log). */
void pl__sip_binding_drop(uint64_t sid, const char *why);

/* ------------------------------------------------------------------ */
/* Page-mode messages (im.c): MESSAGE and INFO, RFC 3428.              */

extern const struct sip_part pl__sip_im;
/* MESSAGE, and INFO outside a dialog: SIP -> XMPP. */
void pl__sip_message(struct sip_txn *t, osip_message_t *req);
/* A <message/> for a binding's session: XMPP -> SIP (borrowed). */
void pl__sip_im_deliver(struct pl_session *s, struct pl_stanza *st);

/* ------------------------------------------------------------------ */
/* Presence publication (publish.c): PUBLISH, RFC 3903.                */

extern const struct sip_part pl__sip_publisher;
void pl__sip_publish(struct sip_txn *t, osip_message_t *req);

/* ------------------------------------------------------------------ */
/* Presence subscriptions (subscribe.c): SUBSCRIBE/NOTIFY, RFC 6665.   */

extern const struct sip_part pl__sip_subscriber;
void pl__sip_subscribe(struct sip_txn *t, osip_message_t *req);

/* ------------------------------------------------------------------ */
/* Parts (sip.c): state beyond one request, started with the front end. */

struct sip_part {
    const char *name;                   /* "registrar" */
    int (*start)(struct pl_config *c);  /* after the transaction layer */
    void (*stop)(void);                 /* shutdown begins */
    void (*free)(void);                 /* after the connections are gone */
    void (*admin)(json_t *answer);      /* adds members to `parleyctl sip` */
    void (*flow_closed)(uint64_t conn); /* a TCP/TLS connection closed */
};
extern const struct sip_part *const pl__sip_parts[];

/* Every value of m, in a new array (pl_free; NULL when m is empty) of *n:
 * a snapshot to walk while the walk changes m. */
void **pl__sip_map_values(const struct pl_map *m, size_t *n);
/* A row of a part's listing for one value of its map; now is the loop's
 * time (ms).  Returns a new reference. */
typedef json_t *sip_row_fn(void *value, uint64_t now);
/* A part's `parleyctl sip` member: answer[key] becomes the array of the
 * rows of every value of m. */
void pl__sip_admin_list(json_t *answer, const char *key, const struct pl_map *m,
                        sip_row_fn *row);
/* Seconds from now until at (both ms), rounded up; 0 once past: the
 * expires_in of the listings. */
json_int_t pl__sip_seconds_left(uint64_t at, uint64_t now);

#endif
