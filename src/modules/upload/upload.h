/*
 * upload.h - HTTP File Upload (XEP-0363) and buffered transfer for offline
 * users: what the files of src/modules/upload/ and the HTTP side
 * (src/http/upload.c) share, and nothing else sees.
 *
 *   mod_upload.c  the module: options, upload.<host> (disco, slot IQ),
 *                 the offline hold (message/offline), the cleanup timer
 *   slot.c        slot tokens: HMAC-SHA256 signed, checked without state
 *   store.c       the files of a host: index, sidecars, quota, expiry
 *   src/http/upload.c   PUT (streamed to disk off the loop) and GET
 *   src/core/clamd.c    virus scanning through clamd (INSTREAM, clamd.h)
 *
 * Storage (doc/upload.md): each host has a directory (upload.dir, else
 * <data_dir>/upload/<host>); a file is <id> (the bytes) and <id>.meta
 * (a sidecar of "key value" lines: owner, name, type, size, created,
 * expires, sha256, held_for, hold_expires, fetched, piece_size) and
 * <id>.pieces (the SHA-256 of each piece, 32 bytes each, in order: see
 * doc/media.md for the piece size rule); <id>.part is an upload in
 * progress.  Both hashes are computed while the upload is received.  The sidecars are read into memory when the host
 * starts (an index by id and the bytes stored per owner for the quota);
 * every change is written to the sidecar off the loop.  Ready files are
 * also indexed by their SHA-256 (the media module finds them so).
 *
 * Extending: a new per-file attribute is a field of struct upload_file,
 * a line in store.c's meta_format/meta_parse.
 */
#ifndef PL_UPLOAD_H
#define PL_UPLOAD_H

#include <stdint.h>

#include "core/modapi.h"

#define PL_NS_UPLOAD "urn:xmpp:http:upload:0"
#define PL_NS_MEDIA "urn:parley:media:0" /* doc/media.md */
#define PL_UPLOAD_ID_LEN 24              /* base64url characters of a file id */

/* A file of the store, uploading or ready. */
struct upload_file {
    char id[PL_UPLOAD_ID_LEN + 1]; /* random, base64url */
    char *owner;                   /* uploader's bare JID */
    char *name;                    /* file name as requested (the URL's) */
    char *type;                    /* content type as uploaded */
    uint64_t size;                 /* bytes */
    int64_t created;               /* seconds since the epoch */
    int64_t expires;               /* removed after this (0: never) */
    char *held_for;                /* bare JID of an offline recipient,
                                    * or NULL: kept until hold_expires
                                    * or the first complete download */
    int64_t hold_expires;          /* end of the hold */
    int fetched;                   /* downloaded whole at least once */
    char sha256[48];               /* base64 SHA-256 of the bytes, "" while
                                    * uploading */
    uint32_t piece_size;           /* bytes per piece, 0: no piece hashes
                                    * (a file stored before they were) */
    uint64_t npieces;              /* digests in pieces */
    unsigned char *pieces;         /* npieces * 32 bytes, or NULL */
    int no_pieces;                 /* hashing them again was tried */
    int ready;                     /* complete: served by GET */
    int saving;                    /* a sidecar write is out */
    int dirty;                     /* changed since that write began */
};

/* A host's upload service: the module's per-host state. */
struct pl_upload {
    /* options */
    char *domain_opt;      /* "" means upload.<host> */
    char *title;           /* service name in disco */
    char *url_opt;         /* base URL of the HTTP side, "" derived */
    char *dir_opt;         /* storage directory, "" derived */
    char *clamd;           /* clamd socket ("/path" or "host:port"), ""
                             * for none */
    long max_file_size;    /* bytes, announced and enforced */
    long quota;            /* bytes stored per user, 0 = no limit */
    long slot_expiry;      /* seconds a PUT URL stays valid */
    long file_expiry;      /* seconds a file is kept, 0 = forever */
    long held_expiry;      /* seconds a file held for an offline user is
                             * kept when nobody fetches it */
    long cleanup_interval; /* seconds between expiry runs */
    long min_piece;        /* piece size rule (doc/media.md): smallest */
    long max_piece;        /* largest piece */
    long max_pieces;       /* pieces a file is cut into at most */
    long rate;             /* bytes/s an upload's body may arrive at,
                            * 0 = no limit */
    long max_send_rate;    /* bytes/s of all downloads together, 0 = no
                            * limit */
    /* Component domains that may ask for slots (owner: the domain). */
    struct pl_strlist components;
    /* runtime */
    struct pl_host *host;  /* owning host */
    char *domain;          /* service domain */
    char *url;             /* base URL, no trailing '/' */
    char *dir;             /* storage directory */
    struct pl_map files;   /* id -> struct upload_file * */
    struct pl_map by_hash; /* base64 SHA-256 -> a ready upload_file * */
    struct pl_map usage;   /* owner bare JID -> uint64_t * bytes */
    struct pl_timer timer; /* expiry runs */
    struct pl_pace *pace;  /* max_send_rate over every download */
    int cleaning;          /* an expiry job is out */
    int backfilling;       /* a job hashes a file's pieces */
    int opened;            /* the store is open (load got that far) */
    unsigned char key[32]; /* slot MAC key, from the server secret */
};

/* ---- slot.c ---- */

/* What a slot grants: PUT of exactly size bytes of type to id/name. */
struct upload_slot {
    char host[256];                /* the XMPP host */
    char id[PL_UPLOAD_ID_LEN + 1]; /* file id */
    char name[256];                /* file name */
    char type[128];                /* content type, "" for any */
    char owner[512];               /* uploader's bare JID */
    uint64_t size;                 /* bytes */
    int64_t expires;               /* seconds since the epoch */
};

/* A new random file id into id (PL_UPLOAD_ID_LEN + 1 bytes). */
void pl__upload_new_id(char *id);
/* Whether s is a well-formed file id. */
int pl__upload_is_id(struct pl_str s);
/* The token for s, signed with key (32 bytes), appended to out. */
void pl__upload_slot_sign(const struct upload_slot *s, const unsigned char *key,
                          struct pl_buf *out);
/* Reads the host out of token (unverified: to find the key) into s.
 * PL_EINVAL if malformed. */
int pl__upload_slot_peek(struct pl_str token, struct upload_slot *s);
/* Checks token's MAC with key and decodes it into s.  PL_EINVAL if
 * malformed, PL_EFORBIDDEN if the MAC does not match.  Expiry is the
 * caller's to check. */
int pl__upload_slot_verify(struct pl_str token, const unsigned char *key,
                           struct upload_slot *s);

/* ---- store.c ---- */

/* The upload state of host (NULL if the module is off there). */
struct pl_upload *pl__upload_of(struct pl_host *h);
/* Opens u's directory (creating it), removes leftovers of interrupted
 * uploads and reads the sidecars.  PL_EIO if the directory cannot be
 * made. */
int pl__upload_store_open(struct pl_upload *u);
void pl__upload_store_close(struct pl_upload *u);
/* Bytes stored (and reserved by uploads in progress) by owner. */
uint64_t pl__upload_usage(struct pl_upload *u, const char *owner);
void pl__upload_usage_add(struct pl_upload *u, const char *owner,
                          int64_t delta);
/* A new entry for an upload starting (not ready): takes the strings. */
struct upload_file *pl__upload_file_add(struct pl_upload *u,
                                        const struct upload_slot *s);
/* f is complete: served from now on, and found by its hash. */
void pl__upload_file_ready(struct pl_upload *u, struct upload_file *f);
/* The ready file whose SHA-256 is sha256 (base64), or NULL. */
struct upload_file *pl__upload_by_hash(struct pl_upload *u, const char *sha256);
/* Forgets f (an upload that failed), without touching the disk. */
void pl__upload_file_drop(struct pl_upload *u, struct upload_file *f);
/* Another node of a cluster sharing dir may have stored a file this
 * node's index does not know.  Any thread: the complete file id of dir
 * as a new entry, not indexed, or NULL. */
struct upload_file *pl__upload_read_entry(const char *domain, const char *dir,
                                          const char *id);
/* Loop: indexes f (read by pl__upload_read_entry) unless its id is known
 * by now (f is freed then); returns the indexed entry. */
struct upload_file *pl__upload_adopt(struct pl_upload *u,
                                     struct upload_file *f);
/* Frees an entry that was never indexed (NULL is fine). */
void pl__upload_entry_free(struct upload_file *f);
/* "<dir>/<id><suffix>" into out. */
void pl__upload_path(const struct pl_upload *u, const char *id,
                     const char *suffix, char *out, size_t len);
/* The sidecar of f into out (on the loop; written by a worker). */
void pl__upload_meta_format(const struct upload_file *f, struct pl_buf *out);
/* Writes data to path atomically (temp, fsync, rename).  Worker thread. */
int pl__upload_write_file(const char *path, const void *data, size_t len);
/* Writes f's sidecar off the loop (after a change). */
void pl__upload_meta_save(struct pl_upload *u, struct upload_file *f);
/* A complete download of f: ends its hold. */
void pl__upload_fetched(struct pl_upload *u, struct upload_file *f);
/* Holds f for recipient (bare JID) for u->held_expiry seconds. */
void pl__upload_hold(struct pl_upload *u, struct upload_file *f,
                     const char *recipient);
/* Hashes the pieces of the files stored without piece hashes (before
 * they were kept), one file at a time off the loop; a file whose bytes
 * do not match its SHA-256 is logged and left without. */
void pl__upload_backfill(struct pl_upload *u);
/* One expiry run (off the loop); *removed gets the count when done. */
void pl__upload_cleanup(struct pl_upload *u);
/* The work queue for file jobs (created on first use). */
struct pl_workq *pl__upload_workq(void);
/* Whether the module is being unloaded (completions only free). */
int pl__upload_closing(void);

/* ---- mod_upload.c ---- */

/* The URL of file id/name: <url>/upload/<id>/<name percent-encoded>,
 * appended to b. */
void pl__upload_url(const struct pl_upload *u, const char *id, const char *name,
                    struct pl_buf *b);

/* Tells owner (bare JID) in a message from the service. */
void pl__upload_notify(struct pl_upload *u, const char *owner,
                       const char *text);

/* ---- src/http/upload.c ---- */

int pl__upload_http_start(void);
void pl__upload_http_stop(void);
/* A peer of the file with this SHA-256 (base64) is now listed: the
 * Metalink GETs parked waiting for one (hold=, doc/media.md "Seeds") are
 * answered now. */
void pl__upload_listed(const char *sha256);

#endif
