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

#endif
