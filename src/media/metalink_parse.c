/*
 * metalink_parse.c - a Metalink 4 document (RFC 5854) into struct
 * pl_mlink (fetch.h), as a downloader reads it before it starts: expat,
 * strict, bounded.
 *
 * Accepted: one metalink:metalink root holding exactly one metalink:file
 * whose name has no directory part; its size (decimal, at most
 * PL_MLINK_MAX_SIZE); exactly one whole-file hash of type sha-256 (hashes
 * of other types are skipped); at most one pieces element of type sha-256
 * whose hashes cover the size exactly (pieces of other types are skipped);
 * its url elements (http and https kept, other schemes skipped; at least
 * one kept), each with an optional priority 1..999999.  Anything else of
 * the metalink namespace or of another one is skipped, with its content.
 * A DOCTYPE (and so any entity declaration) is refused: no expansion.
 *
 * Bounds: the document (PL_MLINK_MAX_DOC), each text (PL_MLINK_MAX_TEXT),
 * pieces (PL_MLINK_MAX_PIECES), urls (PL_MLINK_MAX_URLS), nesting.
 *
 * Extending: another element of file is a case in on_start / on_end.
 */
#include <expat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "media/fetch.h"

#define NS_ML "urn:ietf:params:xml:ns:metalink"
#define SEP '|'
#define WAIT_EL "urn:parley:media:0|wait"
#define MAX_DEPTH 32

enum where {
    W_OTHER,
    W_ROOT,
    W_FILE,
    W_SIZE,
    W_HASH,
    W_PIECES,
    W_PHASH,
    W_URL,
};

struct parse {
    XML_Parser xp;
    struct pl_mlink *m;
    char *err;
    size_t errlen;
    int failed;
    int depth;
    enum where stack[MAX_DEPTH];
    int skip; /* depth below which everything is skipped (0: none) */
    int files, sizes, hashes, pieces_seen;
    int hash_is_sha256;   /* the whole hash being read */
    int in_sha256_pieces; /* inside the pieces we keep */
    uint64_t pieces_cap;  /* allocated hashes */
    int url_priority;     /* of the url being read */
    char text[PL_MLINK_MAX_TEXT + 1];
    size_t tlen;
};

static void fail(struct parse *p, const char *msg)
{
    if (!p->failed) {
        p->failed = 1;
        snprintf(p->err, p->errlen, "%s", msg);
    }
    XML_StopParser(p->xp, XML_FALSE);
}

/* Whether name (expat's "ns|local") is local in the Metalink namespace. */
static int is(const char *name, const char *local)
{
    size_t n = strlen(NS_ML);
    return !strncmp(name, NS_ML, n) && name[n] == SEP &&
           !strcmp(name + n + 1, local);
}

static const char *attr(const char **atts, const char *name)
{
    for (int i = 0; atts[i]; i += 2)
        if (!strcmp(atts[i], name))
            return atts[i + 1];
    return NULL;
}

/* Decimal digits only, no sign or space, at most max: 0 with *out, or
 * -1. */
static int parse_u64(const char *s, uint64_t max, uint64_t *out)
{
    uint64_t v = 0;
    if (!*s)
        return -1;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return -1;
        if (v > (max - (uint64_t)(*s - '0')) / 10)
            return -1;
        v = v * 10 + (uint64_t)(*s - '0');
    }
    *out = v;
    return 0;
}

static int is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* The text read, without the XML white space around it. */
static char *trimmed(struct parse *p)
{
    char *s = p->text;
    size_t n = p->tlen;
    while (n && is_space(s[n - 1]))
        n--;
    s[n] = '\0';
    while (*s && is_space(*s))
        s++;
    return s;
}

static int hex_sha256(const char *s, unsigned char *out)
{
    return strlen(s) == 2 * PL_MEDIA_HASH_LEN &&
           pl_media_parse_sha256(s, strlen(s), out) == PL_MEDIA_OK;
}

static void on_start(void *ud, const char *name, const char **atts)
{
    struct parse *p = ud;
    if (p->failed)
        return;
    if (p->depth >= MAX_DEPTH) {
        fail(p, "nested too deep");
        return;
    }
    enum where parent = p->depth ? p->stack[p->depth - 1] : W_OTHER;
    enum where w = W_OTHER;
    p->depth++;
    if (p->skip) {
        p->stack[p->depth - 1] = W_OTHER;
        return;
    }
    if (p->depth == 1) {
        if (!is(name, "metalink")) {
            fail(p, "not a Metalink 4 document");
            return;
        }
        w = W_ROOT;
    } else if (parent == W_ROOT && is(name, "file")) {
        const char *n = attr(atts, "name");
        if (++p->files > 1) {
            fail(p, "more than one file");
            return;
        }
        if (!n || !*n || strchr(n, '/') || strchr(n, '\\') || !strcmp(n, ".") ||
            !strcmp(n, "..") || strlen(n) > PL_MLINK_MAX_NAME) {
            fail(p, "file name missing or not a plain name");
            return;
        }
        for (const char *c = n; *c; c++)
            if ((unsigned char)*c < 0x20 || *c == 0x7f) {
                fail(p, "control character in the file name");
                return;
            }
        p->m->name = strdup(n);
        if (!p->m->name) {
            fail(p, "out of memory");
            return;
        }
        w = W_FILE;
    } else if (parent == W_FILE && is(name, "size")) {
        w = W_SIZE;
    } else if (parent == W_FILE && is(name, "hash")) {
        const char *t = attr(atts, "type");
        p->hash_is_sha256 = t && !strcmp(t, "sha-256");
        w = W_HASH;
    } else if (parent == W_FILE && is(name, "pieces")) {
        const char *t = attr(atts, "type");
        const char *l = attr(atts, "length");
        uint64_t len;
        if (!t || strcmp(t, "sha-256")) {
            p->skip = p->depth; /* another algorithm: not ours */
            p->stack[p->depth - 1] = W_OTHER;
            return;
        }
        if (++p->pieces_seen > 1) {
            fail(p, "more than one sha-256 pieces element");
            return;
        }
        if (!l || parse_u64(l, PL_MLINK_MAX_PIECE, &len) ||
            len < PL_MLINK_MIN_PIECE) {
            fail(p, "pieces length missing or out of bounds");
            return;
        }
        p->m->piece_size = (uint32_t)len;
        p->in_sha256_pieces = 1;
        w = W_PIECES;
    } else if (parent == W_PIECES && is(name, "hash")) {
        w = W_PHASH;
    } else if (parent == W_FILE && is(name, "url")) {
        const char *pr = attr(atts, "priority");
        uint64_t v = 999999;
        if (pr && (parse_u64(pr, 999999, &v) || v < 1)) {
            fail(p, "url priority out of 1..999999");
            return;
        }
        p->url_priority = (int)v;
        w = W_URL;
    } else if (parent == W_FILE && !strcmp(name, WAIT_EL)) {
        /* Parley's foreign markup: wait for peers (mod_media.c). */
        p->m->wait = 1;
        p->skip = p->depth;
    } else {
        /* Anything else (generator, origin, published, description,
         * metaurl, signature, extensions): skipped with its content. */
        p->skip = p->depth;
    }
    p->stack[p->depth - 1] = w;
    p->tlen = 0;
}

static void on_text(void *ud, const char *s, int len)
{
    struct parse *p = ud;
    if (p->failed || p->skip || !p->depth)
        return;
    enum where w = p->stack[p->depth - 1];
    if (w != W_SIZE && w != W_HASH && w != W_PHASH && w != W_URL) {
        for (int i = 0; i < len; i++)
            if (!is_space(s[i])) {
                fail(p, "text where only elements belong");
                return;
            }
        return;
    }
    if (p->tlen + (size_t)len > PL_MLINK_MAX_TEXT) {
        fail(p, "element text too long");
        return;
    }
    memcpy(p->text + p->tlen, s, (size_t)len);
    p->tlen += (size_t)len;
}

static int is_http_url(const char *u)
{
    if (strncasecmp(u, "http://", 7) && strncasecmp(u, "https://", 8))
        return 0;
    const char *host = u + (u[4] == ':' ? 7 : 8);
    if (!*host || *host == '/')
        return 0;
    for (const char *c = u; *c; c++)
        if ((unsigned char)*c <= 0x20 || *c == 0x7f || *c == '"' || *c == '<' ||
            *c == '>' || *c == '\\')
            return 0;
    return 1;
}

static void add_url(struct parse *p, const char *u)
{
    struct pl_mlink *m = p->m;
    if (!is_http_url(u))
        return; /* ftp, magnet, relative, malformed: not a source for us */
    if (m->nurls >= PL_MLINK_MAX_URLS) {
        fail(p, "too many urls");
        return;
    }
    struct pl_mlink_url *n = realloc(m->urls, (m->nurls + 1) * sizeof(*n));
    if (!n) {
        fail(p, "out of memory");
        return;
    }
    m->urls = n;
    n[m->nurls].url = strdup(u);
    if (!n[m->nurls].url) {
        fail(p, "out of memory");
        return;
    }
    n[m->nurls++].priority = p->url_priority;
}

static void add_piece(struct parse *p, const char *s)
{
    struct pl_mlink *m = p->m;
    unsigned char d[PL_MEDIA_HASH_LEN];
    if (!hex_sha256(s, d)) {
        fail(p, "a piece hash is not 64 hex digits");
        return;
    }
    if (m->npieces >= PL_MLINK_MAX_PIECES) {
        fail(p, "too many pieces");
        return;
    }
    if (m->npieces == p->pieces_cap) {
        uint64_t cap = p->pieces_cap ? p->pieces_cap * 2 : 64;
        unsigned char *n = realloc(m->pieces, cap * PL_MEDIA_HASH_LEN);
        if (!n) {
            fail(p, "out of memory");
            return;
        }
        m->pieces = n;
        p->pieces_cap = cap;
    }
    memcpy(m->pieces + m->npieces++ * PL_MEDIA_HASH_LEN, d, PL_MEDIA_HASH_LEN);
}

static void on_end(void *ud, const char *name)
{
    struct parse *p = ud;
    if (p->failed)
        return;
    enum where w = p->stack[p->depth - 1];
    if (p->skip) {
        if (p->skip == p->depth)
            p->skip = 0;
        p->depth--;
        return;
    }
    p->depth--;
    char *s = trimmed(p);
    switch (w) {
    case W_SIZE:
        if (++p->sizes > 1 || parse_u64(s, PL_MLINK_MAX_SIZE, &p->m->size))
            fail(p, "size repeated, malformed or too large");
        break;
    case W_HASH:
        if (!p->hash_is_sha256)
            break;
        if (++p->hashes > 1 || !hex_sha256(s, p->m->sha256))
            fail(p, "sha-256 hash repeated or not 64 hex digits");
        break;
    case W_PHASH: add_piece(p, s); break;
    case W_URL: add_url(p, s); break;
    case W_PIECES: p->in_sha256_pieces = 0; break;
    default: break;
    }
    p->tlen = 0;
}

static void on_doctype(void *ud, const char *name, const char *sysid,
                       const char *pubid, int has_internal_subset)
{
    fail(ud, "a DOCTYPE is not allowed");
}

void pl_mlink_free(struct pl_mlink *m)
{
    if (!m)
        return;
    free(m->name);
    free(m->pieces);
    for (size_t i = 0; i < m->nurls; i++)
        free(m->urls[i].url);
    free(m->urls);
    memset(m, 0, sizeof(*m));
}

int pl_mlink_parse(const char *xml, size_t len, struct pl_mlink *m, char *err,
                   size_t errlen)
{
    static char dummy[1];
    struct parse *p = calloc(1, sizeof(*p));
    memset(m, 0, sizeof(*m));
    if (!err || !errlen) {
        err = dummy;
        errlen = sizeof(dummy);
    }
    err[0] = '\0';
    if (!p) {
        snprintf(err, errlen, "out of memory");
        return PL_MEDIA_ENOMEM;
    }
    if (len > PL_MLINK_MAX_DOC) {
        snprintf(err, errlen, "document too large");
        free(p);
        return PL_MEDIA_EINVAL;
    }
    p->m = m;
    p->err = err;
    p->errlen = errlen;
    p->xp = XML_ParserCreateNS(NULL, SEP);
    if (!p->xp) {
        snprintf(err, errlen, "out of memory");
        free(p);
        return PL_MEDIA_ENOMEM;
    }
    XML_SetUserData(p->xp, p);
    XML_SetElementHandler(p->xp, on_start, on_end);
    XML_SetCharacterDataHandler(p->xp, on_text);
    XML_SetStartDoctypeDeclHandler(p->xp, on_doctype);
    if (XML_Parse(p->xp, xml, (int)len, 1) != XML_STATUS_OK && !p->failed) {
        snprintf(err, errlen, "XML: %s at line %lu",
                 XML_ErrorString(XML_GetErrorCode(p->xp)),
                 (unsigned long)XML_GetCurrentLineNumber(p->xp));
        p->failed = 1;
    }
    XML_ParserFree(p->xp);
    if (!p->failed) {
        const char *why = NULL;
        if (!p->files)
            why = "no file element";
        else if (!p->sizes)
            why = "no size";
        else if (!p->hashes)
            why = "no sha-256 hash of the file";
        else if (!m->nurls)
            why = "no http or https url";
        else if (p->pieces_seen &&
                 m->npieces != pl_media_piece_count(m->size, m->piece_size))
            why = "the pieces do not cover the size exactly";
        if (why) {
            snprintf(err, errlen, "%s", why);
            p->failed = 1;
        }
    }
    int failed = p->failed;
    free(p);
    if (failed) {
        pl_mlink_free(m);
        return PL_MEDIA_EINVAL;
    }
    if (!m->npieces)
        m->piece_size = 0; /* an empty file: nothing to cut */
    return PL_MEDIA_OK;
}
