/*
 * media.h - what the server and the clients share about distributed
 * media (doc/media.md): the piece size rule and piece hashing
 * (pieces.c), peer download tokens (token.c), the Metalink 4 document
 * (metalink.c).
 *
 * pieces.c and token.c need only libc and OpenSSL's libcrypto, so the
 * clients (parley, parley-agent) link them as they are: a peer checks
 * the tokens of its downloaders with pl_media_token_check and the key it
 * got when it announced itself, without asking the server.  metalink.c
 * writes into a struct pl_buf: it is the server's.
 *
 * Return codes are PL_MEDIA_* (0 or negative), not the core's PL_E*,
 * so that these files stand alone.
 *
 * Extending: a new hash algorithm is a new piece type string and its
 * digest size; a new token field goes after the expiry with a new
 * version byte (the old version stays verifiable until it expires).
 */
#ifndef PL_MEDIA_H
#define PL_MEDIA_H

#include <stddef.h>
#include <stdint.h>

#define PL_MEDIA_OK 0
#define PL_MEDIA_EINVAL (-1)   /* malformed input or bad argument */
#define PL_MEDIA_EFORGED (-2)  /* the MAC does not match */
#define PL_MEDIA_EEXPIRED (-3) /* a genuine token past its expiry */
#define PL_MEDIA_ENOMEM (-4)   /* allocation failed */

#define PL_MEDIA_HASH_LEN 32  /* SHA-256 */
#define PL_MEDIA_KEY_LEN 32   /* HMAC-SHA256 keys */
#define PL_MEDIA_TOKEN_LEN 55 /* characters of a token (version 1) */

/* Defaults of the piece size rule (the media group's options). */
#define PL_MEDIA_MIN_PIECE (256u * 1024)
#define PL_MEDIA_MAX_PIECE (16u * 1024 * 1024)
#define PL_MEDIA_MAX_PIECES 2048u

/* ---- pieces.c ---- */

/*
 * The piece size for a file of size bytes: the smallest power of two
 * from min_piece up, at most max_piece, that cuts the file into at most
 * max_pieces pieces; max_piece when even that gives more (so beyond
 * max_piece * max_pieces bytes the count grows past max_pieces).
 * min_piece and max_piece are powers of two, min_piece <= max_piece.
 */
uint32_t pl_media_piece_size(uint64_t size, uint32_t min_piece,
                             uint32_t max_piece, uint32_t max_pieces);
/* Pieces of piece_size in size bytes (the last may be short); 0 for an
 * empty file. */
uint64_t pl_media_piece_count(uint64_t size, uint32_t piece_size);

/* SHA-256 of a whole file and of each of its pieces, fed in order. */
struct pl_media_hasher {
    void *whole;            /* EVP_MD_CTX of the whole file */
    void *piece;            /* EVP_MD_CTX of the current piece */
    uint64_t size;          /* bytes expected */
    uint64_t fed;           /* bytes so far */
    uint32_t piece_size;    /* bytes per piece */
    uint64_t npieces;       /* pieces expected */
    uint64_t done;          /* pieces finished */
    unsigned char *digests; /* npieces * 32 bytes (malloc) */
};

/* Starts h for size bytes in pieces of piece_size.  PL_MEDIA_ENOMEM,
 * PL_MEDIA_EINVAL (piece_size 0). */
int pl_media_hasher_init(struct pl_media_hasher *h, uint64_t size,
                         uint32_t piece_size);
/* Feeds n bytes.  PL_MEDIA_EINVAL past the size announced. */
int pl_media_hasher_update(struct pl_media_hasher *h, const void *p, size_t n);
/* Ends the last piece; whole gets the file's SHA-256.  PL_MEDIA_EINVAL
 * if fewer bytes than announced came. */
int pl_media_hasher_final(struct pl_media_hasher *h, unsigned char *whole);
/* Takes the digests out of h (the caller frees them with free()). */
unsigned char *pl_media_hasher_take(struct pl_media_hasher *h);
void pl_media_hasher_free(struct pl_media_hasher *h);

/* Lowercase hex of n bytes into out (2n + 1 bytes). */
void pl_media_hex(const unsigned char *p, size_t n, char *out);
/* Standard padded base64 of a SHA-256 (45 bytes with the NUL). */
void pl_media_b64(const unsigned char *p, size_t n, char *out, size_t cap);
/* A SHA-256 written as 64 hex digits or 44 characters of base64 (as
 * XEP-0300 and the Digest field write it) into out.  PL_MEDIA_EINVAL
 * for anything else. */
int pl_media_parse_sha256(const char *s, size_t len, unsigned char *out);

/* ---- token.c ---- */

/*
 * A file's token key: HMAC-SHA256(media_key, "parley media file key" 0
 * sha256).  The server gives it to a peer that announces the file;
 * with it the peer checks tokens for that file and no other.
 */
void pl_media_file_key(const unsigned char *media_key,
                       const unsigned char *sha256, unsigned char *out);
/*
 * A token for downloading the file sha256 from its peers until expires
 * (seconds since the epoch), signed with file_key, into out (cap at
 * least PL_MEDIA_TOKEN_LEN + 1): base64url, no padding, URL-safe.
 * PL_MEDIA_EINVAL if out is too small.
 */
int pl_media_token_make(const unsigned char *file_key,
                        const unsigned char *sha256, int64_t expires, char *out,
                        size_t cap);
/*
 * Checks token (len bytes) for the file sha256 with its file_key at time
 * now: PL_MEDIA_OK; PL_MEDIA_EINVAL if it is not a token; PL_MEDIA_EFORGED
 * if its MAC does not match (another file, another key, altered bytes);
 * PL_MEDIA_EEXPIRED if it is genuine but expired.  Constant time in the
 * MAC comparison.  *expires (may be NULL) gets the expiry when genuine.
 */
int pl_media_token_check(const unsigned char *file_key,
                         const unsigned char *sha256, const char *token,
                         size_t len, int64_t now, int64_t *expires);

/* ---- metalink.c (server: writes into a struct pl_buf) ---- */

struct pl_buf;

/* A download location of the Metalink. */
struct pl_media_source {
    const char *url; /* absolute URL, token included for a peer */
    int priority;    /* 1 (first) .. 999999, as metalink:url */
};

/* What a Metalink describes: one file. */
struct pl_media_info {
    const char *name;                      /* file name */
    uint64_t size;                         /* bytes */
    const unsigned char *sha256;           /* of the whole file */
    uint32_t piece_size;                   /* 0: no <pieces> */
    uint64_t npieces;                      /* digests in pieces */
    const unsigned char *pieces;           /* npieces * 32 bytes */
    const char *origin;                    /* the document's URL or NULL */
    int64_t published;                     /* seconds since the epoch */
    const struct pl_media_source *sources; /* in the order given */
    size_t nsources;
    int wait; /* <wait/>: wait for peers */
};

/* The Metalink 4 document (RFC 5854) of m, appended to out. */
void pl_media_metalink(const struct pl_media_info *m, struct pl_buf *out);

#endif
