/*
 * media_int.h - what the media module (mod_media.c, doc/media.md)
 * offers the HTTP side of uploads (src/http/upload.c): the live peers of
 * a file as sources for its Metalink and its Link fields, and the count
 * of what the server itself sent of it.
 */
#ifndef PL_MEDIA_INT_H
#define PL_MEDIA_INT_H

#include <stdint.h>

#include "media/media.h"
#include "modules/upload/upload.h"

struct pl_media;

/* The peers of a file as download locations (a new list). */
struct media_sources {
    struct pl_media_source *v; /* url (token included), priority */
    size_t n;                  /* entries */
};

/* The media state of host h, NULL when the module is off there. */
struct pl_media *pl__media_of(struct pl_host *h);
/*
 * The live peers of f with room (max-concurrent above 0), each URL with
 * a fresh token, at most media.max_sources of them, the least reported
 * first, in turn (a rotating start spreads downloaders over peers),
 * priorities from 2 on (the server is 1).  Empty when none.  Free with
 * pl__media_sources_free.
 */
void pl__media_sources(struct pl_media *m, const struct upload_file *f,
                       struct media_sources *out);
void pl__media_sources_free(struct media_sources *s);
/* The server answered a GET of f with bytes of it, or (metalink) with its
 * Metalink. */
void pl__media_counted(struct pl_media *m, const struct upload_file *f,
                       uint64_t bytes, int metalink);

/*
 * A Metalink GET of f naming a seat (a download that prefers peers, with
 * no listed peer to take them from): 0 if that download takes the file
 * from the server (it holds one of the media.seed_copies seats, or gets
 * a free one; renewed at each GET), 1 if it should wait for peers (the
 * Metalink then says so).
 */
int pl__media_seat(struct pl_media *m, const struct upload_file *f,
                   uint64_t seat);

#endif
