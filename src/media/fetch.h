/*
 * fetch.h - the client side of distributed media (doc/media.md, issue 17):
 * reading a Metalink, the local cache by hash, and downloading one file
 * from the server and several peers at once with every piece verified.
 * parley (`parley get`) and parley-agent (the head-end's "fetch" command)
 * use it; parleyd does not.
 *
 *   metalink_parse.c  pl_mlink_parse: a Metalink 4 document (expat) into
 *                     struct pl_mlink (size, SHA-256, piece hashes, URLs)
 *   cache.c           the cache directory: <dir>/<sha256 hex> holds a
 *                     verified file; <hex>.part and <hex>.have a download
 *                     in progress (resumed piece by piece)
 *   fetch.c           pl_fetch_run: libcurl multi over the sources,
 *                     piece scheduling, verification, bans, fallback
 *
 * Threads: pl_fetch_run blocks until the download ends (or *stop becomes
 * non-zero) and calls the event callback from the calling thread.  The
 * agent runs it on a thread of its own per download; parley runs it on
 * its main thread.  Nothing here touches XMPP: reports of bad pieces go
 * out through the callback, and the caller sends them to the server.
 *
 * Return codes are PL_MEDIA_* (media.h) or the PL_FETCH_* below.
 */
#ifndef PL_MEDIA_FETCH_H
#define PL_MEDIA_FETCH_H

#include <stddef.h>
#include <stdint.h>

#include "media/media.h"

#define PL_FETCH_ESOURCES (-10) /* every source failed or was banned */
#define PL_FETCH_EVERIFY (-11)  /* the whole file does not match */
#define PL_FETCH_EIO (-12)      /* the cache or output could not be written */
#define PL_FETCH_ESTOPPED (-13) /* *stop was set */
#define PL_FETCH_ECONNECT (-14) /* the Metalink's server could not be reached */

/* ---- metalink_parse.c ---- */

/* What pl_mlink_parse accepts at most (and at least). */
#define PL_MLINK_MAX_DOC (32u * 1024 * 1024) /* bytes of the document */
#define PL_MLINK_MAX_TEXT 8192u              /* bytes of one element */
#define PL_MLINK_MAX_NAME 255u               /* bytes of the file name */
#define PL_MLINK_MAX_URLS 1024u              /* http(s) urls kept */
#define PL_MLINK_MAX_PIECES (1u << 18)       /* piece hashes */
#define PL_MLINK_MIN_PIECE 1024u             /* bytes per piece */
#define PL_MLINK_MAX_PIECE (1u << 30)
#define PL_MLINK_MAX_SIZE (1ull << 44) /* bytes of the file (16 TiB) */

struct pl_mlink_url {
    char *url;    /* as listed (a peer's carries its token) */
    int priority; /* metalink:url priority; 999999 when absent */
};

struct pl_mlink {
    char *name;               /* file name (no directory part) */
    uint64_t size;            /* bytes */
    unsigned char sha256[32]; /* of the whole file */
    uint32_t piece_size;      /* 0: the document lists no pieces */
    uint64_t npieces;
    unsigned char *pieces;     /* npieces * 32 bytes */
    struct pl_mlink_url *urls; /* in document order */
    size_t nurls;
    int wait; /* Parley's <wait/>: seeds are taking it from the server,
                 wait for them to become peers (a seat was named) */
};

/*
 * Parses a Metalink 4 document (RFC 5854) that describes one file with a
 * sha-256 hash; pieces must be sha-256 and cover the size exactly.  Only
 * http and https URLs are kept.  PL_MEDIA_OK, or PL_MEDIA_EINVAL with a
 * message in err.
 */
int pl_mlink_parse(const char *xml, size_t len, struct pl_mlink *m, char *err,
                   size_t errlen);
void pl_mlink_free(struct pl_mlink *m);

/*
 * GETs the Metalink at url (http or https, with o's ca_file and insecure;
 * at most PL_MLINK_MAX_DOC bytes, timeout_ms in all) and parses it into
 * m.  PL_MEDIA_OK; PL_FETCH_ECONNECT when it could not be fetched (no
 * connection, TLS, timeout); PL_MEDIA_EINVAL for an HTTP status other
 * than 200, a document too large or not a valid Metalink.  err gets a
 * message (it names url).  fetch.c.
 */
struct pl_fetch_opts;
int pl_mlink_get(const char *url, const struct pl_fetch_opts *o,
                 long timeout_ms, struct pl_mlink *m, char *err, size_t errlen);

/* ---- cache.c ---- */

/* The path of the verified copy of sha256 in dir, into out; 1 if it is
 * there (a regular file), 0 if not. */
int pl_cache_lookup(const char *dir, const unsigned char *sha256, char *out,
                    size_t cap);
/* <dir>/<sha256 hex><suffix> into out; -1 if it does not fit. */
int pl_cache_path(const char *dir, const unsigned char *sha256,
                  const char *suffix, char *out, size_t cap);
/* Creates dir and its parents (mode 0700 for new ones); 0 or -1. */
int pl_cache_mkdirs(const char *dir);
/* fsync of a directory (after a rename into it); 0 or -1. */
int pl_cache_sync_dir(const char *dir);

/* ---- fetch.c ---- */

struct pl_fetch_opts {
    const char *cache_dir;   /* required: where the file is assembled */
    const char *ca_file;     /* trust anchors for https, or NULL */
    int insecure;            /* accept any certificate (tests only) */
    int max_peers;           /* peers used at once (0: 8; < 0: none) */
    int per_source;          /* requests in flight per peer (default 2) */
    int server_streams;      /* requests in flight to the server (default 4) */
    long stall_ms;           /* a request with no byte this long fails
                              (default 10000) */
    long connect_ms;         /* connect timeout (default 5000) */
    int server_last;         /* prefer peers: ask the server only for the
                              pieces no live peer is taking (default 0) */
    const char *refresh_url; /* the Metalink, read again every
                                refresh_ms for peers that joined since
                                (NULL: the sources are those of m) */
    long refresh_ms;         /* default 2000 when refresh_url is set */
    long wait_max_ms;        /* with server_last: the longest the server
                                is held back while the Metalink says
                                <wait/> and no peer is known (default
                                120000) */
};

/*
 * url with a new random seat=HEX parameter, for a download that prefers
 * peers: with it, the server's Metalink makes it a seed or tells it to
 * wait for peers (doc/media.md).  A new string, or NULL.
 */
char *pl_mlink_seat_url(const char *url);

enum pl_fetch_ev {
    PL_FETCH_PROGRESS,  /* bytes, rate, sources: about 4 a second */
    PL_FETCH_PIECE_BAD, /* piece from url failed its hash: report it */
    PL_FETCH_BANNED,    /* url will not be asked again */
    PL_FETCH_LOST,      /* url failed (refused, HTTP error, stalled) */
    PL_FETCH_DONE,      /* verified; path is the cached file */
    PL_FETCH_FAILED,    /* the whole-file hash failed: report it */
};

/* What a download got from one source. */
struct pl_fetch_source {
    const char *url;
    int is_server;  /* priority 1 in the Metalink */
    uint64_t bytes; /* good bytes received */
    int bad_pieces; /* pieces that failed their hash */
    int banned, lost;
};

struct pl_fetch_event {
    enum pl_fetch_ev kind;
    const char *url;      /* PIECE_BAD, BANNED, LOST */
    int64_t piece;        /* PIECE_BAD: index; FAILED: -1 */
    const char *path;     /* DONE */
    uint64_t done, total; /* bytes verified so far, file size */
    uint64_t from_server; /* verified bytes that came from the server */
    uint64_t from_peers;  /* and from peers */
    double rate;          /* bytes/s over the last second */
    int active;           /* sources with a request in flight */
    const struct pl_fetch_source *sources;
    size_t nsources;
};

typedef void pl_fetch_cb(const struct pl_fetch_event *ev, void *ud);

/*
 * Downloads the file m describes into opts->cache_dir: nothing to do if
 * the cache holds it (DONE at once, no network); otherwise every piece
 * from the sources at once, each verified against its hash, the whole
 * file last.  A source that serves a bad piece is banned; one that
 * fails is dropped; when no peer is left the server does the rest.
 * Returns PL_MEDIA_OK (path in the DONE event) or a PL_FETCH_* error.
 * cb may be NULL.  stop may be NULL.
 */
int pl_fetch_run(const struct pl_mlink *m, const struct pl_fetch_opts *opts,
                 pl_fetch_cb *cb, void *ud, const volatile int *stop);

#endif
