/*
 * peer.h - a client serving the files of its cache to other clients
 * (doc/media.md "Peers", issue 17): a small HTTP/1.1 server, GET and
 * HEAD of /m/<sha256 hex> with Range, only for a request that carries a
 * token the server issued for that file (?token= or Authorization:
 * Bearer), checked offline with the file's key (pl_media_token_check).
 * parley (`parley share`) and parley-agent run one.
 *
 * It runs on a thread of its own (pl_peer_start) with its own poll loop:
 * the caller's XMPP loop never waits on a downloader.  Files are added
 * (after the caller verified every piece and announced them) and removed
 * from any thread.
 *
 * Caps: connections at once (past it: 503 with Retry-After), bytes per
 * second over all connections (a token bucket), header size and request
 * time (slow clients are dropped).
 */
#ifndef PL_MEDIA_PEER_H
#define PL_MEDIA_PEER_H

#include <stddef.h>
#include <stdint.h>

#include "media/media.h"

struct pl_peer_opts {
    const char *listen; /* "ADDR:PORT" ("[v6]:PORT"); port 0: any */
    int max_conns;      /* downloads served at once (default 4) */
    uint64_t rate;      /* bytes/s over all downloads, 0: no cap */
    long idle_ms;       /* a connection idle this long is closed
                             (default 15000) */
};

struct pl_peer;

/* Binds and starts the serving thread.  NULL with a message in err. */
struct pl_peer *pl_peer_start(const struct pl_peer_opts *o, char *err,
                              size_t errlen);
/* The port bound (useful with port 0). */
int pl_peer_port(const struct pl_peer *p);
/* Serves path as the file sha256, whose token key is file_key.  Replaces
 * an earlier entry of the same hash.  0 or -1 (no memory). */
int pl_peer_add(struct pl_peer *p, const unsigned char *sha256,
                const unsigned char *file_key, const char *path);
/* Stops serving sha256 (downloads already running finish). */
void pl_peer_remove(struct pl_peer *p, const unsigned char *sha256);

struct pl_peer_stats {
    uint64_t bytes;    /* body bytes sent */
    uint64_t requests; /* answered 200/206 */
    uint64_t refused;  /* 401/403: no token, forged or expired */
    uint64_t busy;     /* 503: max_conns reached */
    int conns;         /* open now */
};
void pl_peer_stats(struct pl_peer *p, struct pl_peer_stats *s);

/* Stops the thread, closes every connection, frees p. */
void pl_peer_stop(struct pl_peer *p);

/* ---- the request parser (exposed for tests/unit and the fuzz target) */

#define PL_PEER_MAX_HEAD 8192 /* request line and fields, bytes at most */

enum {
    PL_PEER_GET = 1,
    PL_PEER_HEAD,
    PL_PEER_OTHER
};
enum {
    PL_PEER_RANGE_NONE,
    PL_PEER_RANGE_SPAN,
    PL_PEER_RANGE_SUFFIX
};

/* One request head, parsed.  Pointers point into the parsed buffer. */
struct pl_peer_req {
    int method;               /* PL_PEER_GET, _HEAD, _OTHER */
    int keep_alive;           /* HTTP/1.1 without "close", or 1.0 asking */
    int is_media;             /* target is /m/<64 hex digits> */
    unsigned char sha256[32]; /* its hash when is_media */
    const char *token;        /* ?token= or Authorization: Bearer, or NULL */
    size_t token_len;         /* may be 0: present but empty */
    int range;                /* PL_PEER_RANGE_*: one bytes= range */
    uint64_t first, last;     /* SPAN: last UINT64_MAX when open ("a-") */
    uint64_t suffix;          /* SUFFIX: the last n bytes ("-n") */
};

/*
 * Parses the request head at the start of buf (len bytes): the bytes the
 * head takes (> 0), 0 if it is not complete yet, -400 if it is malformed,
 * -431 if no head ends within PL_PEER_MAX_HEAD bytes.  A Range that is
 * not one well-formed bytes= range is ignored (RFC 9110 §14.2: the whole
 * file is served).  A request with a body is malformed (GET and HEAD
 * carry none here).
 */
long pl_peer_parse_request(const char *buf, size_t len, struct pl_peer_req *r);
/*
 * What r's range means for a file of size bytes: 200 (no range: *off 0,
 * *n size), 206 (*off, *n the span, clipped to the file) or 416 (not
 * satisfiable).
 */
int pl_peer_resolve_range(const struct pl_peer_req *r, uint64_t size,
                          uint64_t *off, uint64_t *n);

#endif
