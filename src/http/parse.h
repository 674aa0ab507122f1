/*
 * parse.h - a strict, incremental HTTP/1.1 request parser (RFC 9112, RFC
 * 9110) as pure functions: no sockets, no loop.
 *
 * API: pl_http_parser_init() with the caller's limits, then
 * pl_http_parse() on bytes as they arrive, in any split; it returns one
 * event per call and says how many bytes it used:
 *   PL_HTTP_MORE  every byte given was used; feed more.
 *   PL_HTTP_HEAD  the head is complete: p->req holds the method, target,
 *                 version, fields, framing and keep-alive decision.
 *   PL_HTTP_BODY  *body is decoded body bytes (a span of the input).
 *   PL_HTTP_DONE  the message is complete; bytes after it (pipelined
 *                 requests) are the caller's.  The next call starts the
 *                 next request, and p->req is then no longer valid.
 *   PL_HTTP_ERROR p->status is the status to answer (400, 413, 414, 431,
 *                 501, 505); the connection is to be closed.  Sticky.
 * pl_http_parser_free() releases the head buffer.  Extending: a new rule
 * of the head goes in check_head() (parse.c), a new event here.
 */
#ifndef PL_HTTP_PARSE_H
#define PL_HTTP_PARSE_H

#include <stddef.h>
#include <stdint.h>

#include "str.h"

/* Limits, given by the caller. */
struct pl_http_limits {
    size_t max_line;         /* request-line bytes, without CRLF (414) */
    size_t max_header_bytes; /* field lines with their ends (431) */
    unsigned max_headers;    /* field lines (431); trailers count too */
    uint64_t max_body;       /* decoded body bytes (413) */
};

enum pl_http_event {
    PL_HTTP_MORE,
    PL_HTTP_HEAD,
    PL_HTTP_BODY,
    PL_HTTP_DONE,
    PL_HTTP_ERROR,
};

enum pl_http_form {
    PL_HTTP_ORIGIN,    /* /path?query (RFC 9112 §3.2.1) */
    PL_HTTP_ABSOLUTE,  /* scheme:... (§3.2.2) */
    PL_HTTP_AUTHORITY, /* host:port, CONNECT only (§3.2.3) */
    PL_HTTP_ASTERISK,  /* *, OPTIONS only (§3.2.4) */
};

enum pl_http_framing {
    PL_HTTP_NO_BODY, /* neither Content-Length nor Transfer-Encoding */
    PL_HTTP_LENGTH,  /* Content-Length */
    PL_HTTP_CHUNKED, /* Transfer-Encoding: chunked */
};

struct pl_http_header {
    struct pl_str name;  /* as received (compare ignoring case) */
    struct pl_str value; /* without leading and trailing whitespace */
};

/* A request's head; its spans point into the parser's buffer and live
 * until the call after PL_HTTP_DONE, pl_http_parser_free() or an error. */
struct pl_http_request {
    struct pl_str method;           /* token, case-sensitive */
    struct pl_str target;           /* request-target as received */
    enum pl_http_form form;         /* which form target has */
    int version;                    /* 10 or 11 */
    struct pl_http_header *headers; /* in order received */
    unsigned nheaders;              /* entries of headers */
    struct pl_str host;             /* the Host value, empty if none */
    enum pl_http_framing framing;   /* how the body is delimited */
    uint64_t content_length;        /* for PL_HTTP_LENGTH */
    int keep_alive;                 /* RFC 9112 §9.3: may persist */
};

/* Parser state; fields other than req, status and consumed are private. */
struct pl_http_parser {
    struct pl_http_limits lim;   /* copy of the caller's limits */
    struct pl_http_request req;  /* valid from PL_HTTP_HEAD to DONE */
    int status;                  /* after PL_HTTP_ERROR: status to send */
    uint64_t consumed;           /* bytes of this message used so far */
    int state;                   /* where the byte machine is */
    char *buf;                   /* head bytes, owned */
    size_t len, cap;             /* used and allocated bytes of buf */
    size_t *offs;                /* per field: name, colon, vstart, vend */
    unsigned noffs, offcap;      /* fields recorded, allocated */
    struct pl_http_header *hdrs; /* req.headers' storage, owned */
    unsigned hcap;               /* entries allocated in hdrs */
    int trailer;                 /* the field machine reads trailers */
    size_t line;                 /* bytes of the current line so far */
    size_t hbytes;               /* field-line bytes so far */
    unsigned nfields;            /* field lines so far */
    size_t mlen, tlen, vlen;     /* method, target, version bytes */
    size_t fname, fcolon;        /* current field's name and colon in buf */
    size_t fvs, fve;             /* its value's bounds in buf */
    int fval;                    /* a value byte other than OWS seen */
    uint64_t left;               /* body or chunk bytes still to come */
    uint64_t body;               /* decoded body bytes so far */
    int hexdigits;               /* digits of the current chunk size */
};

void pl_http_parser_init(struct pl_http_parser *p,
                         const struct pl_http_limits *lim);
void pl_http_parser_free(struct pl_http_parser *p);

/*
 * Parses data[0..len): borrows data for the call; returns an event and
 * sets *used to the bytes used (on PL_HTTP_ERROR, the bytes before the
 * offending one).  On PL_HTTP_BODY, *body spans decoded bytes inside
 * data.  Call again with the rest until PL_HTTP_MORE; after PL_HTTP_BODY
 * ends a Content-Length body, or after PL_HTTP_HEAD of a request without
 * a body, PL_HTTP_DONE comes on the next call even with len 0.
 */
enum pl_http_event pl_http_parse(struct pl_http_parser *p, const char *data,
                                 size_t len, size_t *used, struct pl_str *body);
/* Bytes of a Content-Length body still to come once the head is parsed:
 * the next that many bytes are body, nothing else; 0 in any other state
 * (a chunked body among them). */
uint64_t pl_http_parse_body_left(const struct pl_http_parser *p);

/* The first field named name (ASCII case ignored) and how many there are;
 * *value is empty when none. */
unsigned pl_http_header_get(const struct pl_http_request *r, const char *name,
                            struct pl_str *value);

#endif
