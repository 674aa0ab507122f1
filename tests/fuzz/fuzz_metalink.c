/*
 * fuzz_metalink.c - libFuzzer target for the downloader's Metalink reader
 * (src/media/metalink_parse.c, fetch.h): a document from anywhere on the
 * network (the server's, or one a hostile party slipped in between).
 *
 * Input: the bytes are the document.
 *
 * Invariants checked (abort() on violation):
 * - pl_mlink_parse returns OK or EINVAL (ENOMEM only without memory), and
 *   a refusal leaves the struct empty with a message;
 * - an accepted document obeys the rules: a plain name, a size within the
 *   bound, pieces that cover the size exactly (or none), at least one
 *   url, each http(s) with a priority in 1..999999;
 * - what was accepted, written again by the server's writer
 *   (pl_media_metalink), parses to the same values.
 *
 * Extending: a new rule goes in check().
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/buf.h"
#include "media/fetch.h"

static void die(const char *what)
{
    fprintf(stderr, "fuzz_metalink: invariant violated: %s\n", what);
    abort();
}

static void check(const struct pl_mlink *m)
{
    if (!m->name || !*m->name || strchr(m->name, '/'))
        die("accepted name");
    if (m->size > PL_MLINK_MAX_SIZE)
        die("size past the bound");
    if (m->piece_size) {
        if (!m->pieces ||
            m->npieces != pl_media_piece_count(m->size, m->piece_size))
            die("pieces do not cover the size");
    } else if (m->npieces) {
        die("pieces without a piece size");
    }
    if (!m->nurls)
        die("no url");
    for (size_t i = 0; i < m->nurls; i++) {
        if (strncasecmp(m->urls[i].url, "http://", 7) &&
            strncasecmp(m->urls[i].url, "https://", 8))
            die("a url that is not http(s)");
        if (m->urls[i].priority < 1 || m->urls[i].priority > 999999)
            die("priority out of range");
    }
}

static void same(const struct pl_mlink *a, const struct pl_mlink *b)
{
    if (strcmp(a->name, b->name) || a->size != b->size ||
        memcmp(a->sha256, b->sha256, 32) || a->piece_size != b->piece_size ||
        a->npieces != b->npieces || a->nurls != b->nurls ||
        (a->npieces && memcmp(a->pieces, b->pieces, a->npieces * 32)))
        die("the document written again reads otherwise");
    for (size_t i = 0; i < a->nurls; i++)
        if (strcmp(a->urls[i].url, b->urls[i].url) ||
            a->urls[i].priority != b->urls[i].priority)
            die("a url written again reads otherwise");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *copy = malloc(size ? size : 1);
    if (!copy)
        return 0;
    memcpy(copy, data, size);
    struct pl_mlink m;
    char err[128] = "";
    int rc = pl_mlink_parse(copy, size, &m, err, sizeof(err));
    free(copy);
    if (rc == PL_MEDIA_ENOMEM)
        return 0;
    if (rc == PL_MEDIA_EINVAL) {
        if (!err[0] || m.name || m.urls || m.pieces || m.nurls)
            die("a refusal without a message or with leftovers");
        return 0;
    }
    if (rc != PL_MEDIA_OK)
        die("another return code");
    check(&m);
    struct pl_media_source *src = calloc(m.nurls, sizeof(*src));
    if (!src)
        die("out of memory");
    for (size_t i = 0; i < m.nurls; i++) {
        src[i].url = m.urls[i].url;
        src[i].priority = m.urls[i].priority;
    }
    struct pl_media_info info = {
        .name = m.name,
        .size = m.size,
        .sha256 = m.sha256,
        .piece_size = m.piece_size,
        .npieces = m.npieces,
        .pieces = m.pieces,
        .published = 1796000000,
        .sources = src,
        .nsources = m.nurls,
    };
    struct pl_buf b = {0};
    pl_media_metalink(&info, &b);
    struct pl_mlink again;
    if (pl_mlink_parse(pl_buf_cstr(&b), b.len, &again, err, sizeof(err)) !=
        PL_MEDIA_OK)
        die(err);
    same(&m, &again);
    pl_mlink_free(&again);
    pl_buf_reset(&b);
    free(src);
    pl_mlink_free(&m);
    return 0;
}
