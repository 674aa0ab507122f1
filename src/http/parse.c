/*
 * parse.c - the HTTP/1.1 request parser of parse.h: a machine fed one
 * byte at a time for the head and the chunked framing, and spans of the
 * input for body bytes, so that any split of the input gives the same
 * events, the same bytes and the same errors.
 *
 * What it enforces, from RFC 9112 unless said otherwise:
 * - request-line = method SP request-target SP HTTP-version, single SPs
 *   (§3); empty lines before it are skipped (§2.2); a line over
 *   max_line is 414 (§3); the target is origin-form, absolute-form,
 *   authority-form (CONNECT only) or asterisk-form (OPTIONS only)
 *   (§3.2), of URI characters with valid %XX escapes; HTTP/1.0 and
 *   HTTP/1.1, HTTP/1.x above as 1.1 (RFC 9110 §6.2), another major
 *   version 505 (RFC 9110 §15.6.6), a malformed version 400;
 * - lines end in CRLF or a bare LF (§2.2); a CR elsewhere is 400;
 * - field-name is a token with no whitespace before the colon (§5.1),
 *   a line starting with whitespace (obs-fold, or after the start line)
 *   is 400 (§5.2, §2.2); values hold no CTL but HTAB (RFC 9110 §5.5);
 *   over max_header_bytes or max_headers is 431;
 * - exactly one Host for HTTP/1.1, at most one for 1.0, with a valid
 *   uri-host[:port] (§3.2);
 * - framing (§6): Transfer-Encoding in HTTP/1.0 is 400 (§6.1); with
 *   Content-Length too 400 (§6.3 allows a server to reject it);
 *   chunked not final or repeated 400 (§6.3, §7); another coding 501
 *   (§6.1); Content-Length digits, repeated only with equal values
 *   (RFC 9110 §8.6), else 400; over max_body 413; neither: no body;
 * - chunked (§7.1): hex size, extensions checked and ignored, CRLF after
 *   size lines and data (the LF-only allowance of §2.2 is for the start
 *   line and fields), trailer fields like header fields, counted
 *   against the same limits and discarded (RFC 9110 §6.5.1 allows it);
 *   decoded bytes over max_body 413;
 * - keep-alive (§9.3): "close" in Connection ends; otherwise HTTP/1.1
 *   persists, HTTP/1.0 only with "keep-alive".
 *
 * The head is copied into one growing buffer (bounded by the limits);
 * fields are recorded as offsets and become spans when the head is
 * complete.
 */
#include <string.h>

#include "alloc.h"
#include "http/parse.h"

enum {
    S_START,     /* before the request line; empty lines skipped */
    S_START_CR,  /* CR of an empty line before it */
    S_METHOD,    /* method */
    S_TARGET,    /* request-target */
    S_VERSION,   /* HTTP-version */
    S_RL_CR,     /* CR after the version */
    S_FSTART,    /* start of a field line or the empty line */
    S_NAME,      /* field-name */
    S_VALUE,     /* field-value */
    S_FCR,       /* CR ending a field line */
    S_HEND_CR,   /* CR of the empty line */
    S_HEAD_DONE, /* head reported; the next call starts the body */
    S_BODY_LEN,  /* Content-Length bytes */
    C_SIZE,      /* chunk-size */
    C_EXT_BWS,   /* whitespace before ";" */
    C_EXT_NAME0, /* after ";", before the name */
    C_EXT_NAME,  /* chunk-ext-name */
    C_EXT_AFTER, /* whitespace after the name */
    C_EXT_VAL0,  /* after "=" */
    C_EXT_TOKEN, /* token value */
    C_EXT_QS,    /* quoted-string value */
    C_EXT_QP,    /* after a backslash in it */
    C_EXT_QEND,  /* after the closing quote */
    C_SIZE_LF,   /* LF ending a size line */
    C_DATA,      /* chunk-data */
    C_DATA_CR,   /* CR after it */
    C_DATA_LF,   /* LF after it */
    S_END,       /* complete; DONE reported on the next call */
    S_FINISHED,  /* DONE reported; the next call starts a request */
    S_ERROR,     /* status set; sticky */
};

/* Returned by step(): go on. */
#define STEP_ON (-1)

static int is_tchar(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
        (c >= '0' && c <= '9'))
        return 1;
    return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static int is_hex(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
           (c >= 'A' && c <= 'F');
}

static int hex_value(unsigned char c)
{
    if (c <= '9')
        return c - '0';
    return (c | 0x20) - 'a' + 10;
}

static int is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static int is_ws(unsigned char c)
{
    return c == ' ' || c == '\t';
}

/* field-vchar, SP or HTAB (RFC 9110 §5.5): no CTL but HTAB. */
static int is_value_char(unsigned char c)
{
    return c == '\t' || (c >= 0x20 && c != 0x7f);
}

/* URI characters (RFC 3986 §2): unreserved, reserved but "#", and "%". */
static int is_target_char(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
        (c >= '0' && c <= '9'))
        return 1;
    return c && strchr("-._~!$&'()*+,;=:/?@[]%", c) != NULL;
}

/* Whether s equals the literal lit, ignoring ASCII case. */
static int name_is(struct pl_str s, const char *lit)
{
    size_t n = strlen(lit);
    if (s.len != n)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char a = (unsigned char)s.p[i], b = (unsigned char)lit[i];
        if ((a >= 'A' && a <= 'Z' ? a + 32 : a) !=
            (b >= 'A' && b <= 'Z' ? b + 32 : b))
            return 0;
    }
    return 1;
}

static struct pl_str trim(struct pl_str s)
{
    while (s.len && is_ws((unsigned char)s.p[0])) {
        s.p++;
        s.len--;
    }
    while (s.len && is_ws((unsigned char)s.p[s.len - 1]))
        s.len--;
    return s;
}

/* Splits the next element off a comma-separated list (RFC 9110 §5.6.1),
 * trimmed; returns 0 at the end. */
static int next_element(struct pl_str *list, struct pl_str *elem)
{
    if (!list->p || list->len == 0)
        return 0;
    const char *comma = memchr(list->p, ',', list->len);
    size_t n = comma ? (size_t)(comma - list->p) : list->len;
    *elem = trim((struct pl_str){list->p, n});
    if (comma) {
        list->p += n + 1;
        list->len -= n + 1;
    } else {
        list->p += n;
        list->len = 0;
        if (n == 0)
            return 0;
    }
    return 1;
}

static int fail(struct pl_http_parser *p, int status)
{
    p->status = status;
    p->state = S_ERROR;
    return PL_HTTP_ERROR;
}

static void put(struct pl_http_parser *p, char c)
{
    if (p->len == p->cap) {
        p->cap = p->cap ? p->cap * 2 : 256;
        p->buf = pl_realloc(p->buf, p->cap);
    }
    p->buf[p->len++] = c;
}

void pl_http_parser_init(struct pl_http_parser *p,
                         const struct pl_http_limits *lim)
{
    memset(p, 0, sizeof(*p));
    p->lim = *lim;
    p->state = S_START;
}

void pl_http_parser_free(struct pl_http_parser *p)
{
    pl_free(p->buf);
    pl_free(p->offs);
    pl_free(p->hdrs);
    p->buf = NULL;
    p->offs = NULL;
    p->hdrs = NULL;
    p->cap = p->offcap = p->hcap = 0;
    p->state = S_ERROR;
    p->status = 0;
}

/* Forgets the previous message, keeping the buffers. */
static void reset_message(struct pl_http_parser *p)
{
    memset(&p->req, 0, sizeof(p->req));
    p->status = 0;
    p->consumed = 0;
    p->state = S_START;
    p->len = 0;
    p->noffs = 0;
    p->line = p->hbytes = 0;
    p->nfields = 0;
    p->mlen = p->tlen = p->vlen = 0;
    p->fname = p->fcolon = p->fvs = p->fve = 0;
    p->fval = 0;
    p->left = p->body = 0;
    p->hexdigits = 0;
    p->trailer = 0;
}

/* unreserved or sub-delims (RFC 3986 §2.2, §2.3). */
static int is_reg_char(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
        (c >= '0' && c <= '9'))
        return 1;
    return c && strchr("-._~!$&'()*+,;=", c) != NULL;
}

/* A uri-host [":" port] (RFC 3986 §3.2.2, §3.2.3); port_required for
 * authority-form.  host may be empty only when the whole is. */
static int valid_authority(struct pl_str s, int port_required)
{
    size_t i = 0;
    if (s.len && s.p[0] == '[') {
        const char *close = memchr(s.p, ']', s.len);
        if (!close || close == s.p + 1)
            return 0;
        for (const char *q = s.p + 1; q < close; q++)
            if (*q != ':' && !is_reg_char((unsigned char)*q))
                return 0;
        i = (size_t)(close - s.p) + 1;
    } else {
        for (; i < s.len && s.p[i] != ':'; i++) {
            unsigned char c = (unsigned char)s.p[i];
            if (c == '%') {
                if (i + 2 >= s.len || !is_hex((unsigned char)s.p[i + 1]) ||
                    !is_hex((unsigned char)s.p[i + 2]))
                    return 0;
                i += 2;
            } else if (!is_reg_char(c))
                return 0;
        }
        if (i == 0 && s.len)
            return 0;
    }
    if (i == s.len)
        return !port_required;
    if (s.p[i] != ':')
        return 0;
    size_t digits = 0;
    for (i++; i < s.len; i++, digits++)
        if (!is_digit((unsigned char)s.p[i]))
            return 0;
    return !port_required || digits > 0;
}

/* Checks the request line once it is complete; 0 or a status. */
static int check_request_line(struct pl_http_parser *p)
{
    const char *v = p->buf + p->mlen + 1 + p->tlen + 1;
    if (p->vlen != 8)
        return 400;
    if (v[5] != '1')
        return 505;
    p->req.version = v[7] == '0' ? 10 : 11;
    struct pl_str m = {p->buf, p->mlen};
    struct pl_str t = {p->buf + p->mlen + 1, p->tlen};
    for (size_t i = 0; i < t.len; i++)
        if (t.p[i] == '%' &&
            (i + 2 >= t.len || !is_hex((unsigned char)t.p[i + 1]) ||
             !is_hex((unsigned char)t.p[i + 2])))
            return 400;
    int connect = pl_str_eq_c(m, "CONNECT");
    if (t.len == 1 && t.p[0] == '*') {
        if (!pl_str_eq_c(m, "OPTIONS"))
            return 400;
        p->req.form = PL_HTTP_ASTERISK;
    } else if (connect) {
        if (!valid_authority(t, 1))
            return 400;
        p->req.form = PL_HTTP_AUTHORITY;
    } else if (t.p[0] == '/') {
        p->req.form = PL_HTTP_ORIGIN;
    } else {
        /* scheme ":" (RFC 3986 §3.1). */
        size_t i = 0;
        unsigned char c = (unsigned char)t.p[0];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')))
            return 400;
        for (i = 1; i < t.len; i++) {
            c = (unsigned char)t.p[i];
            if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                  is_digit(c) || c == '+' || c == '-' || c == '.'))
                break;
        }
        if (i == t.len || t.p[i] != ':')
            return 400;
        p->req.form = PL_HTTP_ABSOLUTE;
    }
    return 0;
}

/* Content-Length (RFC 9110 §8.6): digits, or a list of equal values.
 * Sets *canon to the digits without leading zeros; 0 or 400. */
static int cl_value(struct pl_str v, struct pl_str *canon, int *have)
{
    struct pl_str e;
    int any = 0;
    /* Not a list field: no empty element, not even a last one. */
    if (v.len == 0 || v.p[v.len - 1] == ',')
        return 400;
    while (next_element(&v, &e)) {
        if (e.len == 0)
            return 400;
        for (size_t i = 0; i < e.len; i++)
            if (!is_digit((unsigned char)e.p[i]))
                return 400;
        while (e.len > 1 && e.p[0] == '0') {
            e.p++;
            e.len--;
        }
        if (*have && !pl_str_eq(*canon, e))
            return 400;
        *canon = e;
        *have = 1;
        any = 1;
    }
    return any ? 0 : 400;
}

/* The framing and connection rules on a complete head; 0 or a status. */
static int check_head(struct pl_http_parser *p)
{
    struct pl_http_request *r = &p->req;
    unsigned hosts = 0;
    int te = 0, te_n = 0, te_last_chunked = 0, te_bad = 0, te_unknown = 0;
    int cl = 0, cl_bad = 0, close = 0, keep = 0;
    struct pl_str canon = {NULL, 0};
    for (unsigned i = 0; i < r->nheaders; i++) {
        struct pl_str n = r->headers[i].name, v = r->headers[i].value, e;
        if (name_is(n, "host")) {
            if (hosts++ == 0)
                r->host = v;
        } else if (name_is(n, "content-length")) {
            if (cl_value(v, &canon, &cl))
                cl_bad = 1;
        } else if (name_is(n, "transfer-encoding")) {
            te = 1;
            while (next_element(&v, &e)) {
                if (e.len == 0)
                    continue;
                size_t k = 0;
                while (k < e.len && is_tchar((unsigned char)e.p[k]))
                    k++;
                struct pl_str name = {e.p, k};
                struct pl_str rest = trim((struct pl_str){e.p + k, e.len - k});
                if (k == 0 || (rest.len && rest.p[0] != ';')) {
                    te_bad = 1;
                    continue;
                }
                if (te_last_chunked)
                    te_bad = 1; /* chunked before another coding */
                te_n++;
                te_last_chunked = name_is(name, "chunked") && !rest.len;
                if (!te_last_chunked)
                    te_unknown = 1;
            }
        } else if (name_is(n, "connection")) {
            while (next_element(&v, &e)) {
                if (name_is(e, "close"))
                    close = 1;
                else if (name_is(e, "keep-alive"))
                    keep = 1;
            }
        }
    }
    if (hosts > 1 || (r->version == 11 && hosts == 0) ||
        !valid_authority(r->host, 0))
        return 400;
    if (te) {
        /* §6.1: TE in HTTP/1.0 is faulty framing; §6.3: with CL too. */
        if (r->version == 10 || cl || cl_bad || te_bad || te_n == 0)
            return 400;
        /* §6.3: chunked must be the final coding. */
        if (!te_last_chunked)
            return 400;
        if (te_unknown)
            return 501;
        r->framing = PL_HTTP_CHUNKED;
    } else if (cl || cl_bad) {
        if (cl_bad)
            return 400;
        uint64_t n = 0;
        for (size_t i = 0; i < canon.len; i++) {
            unsigned d = (unsigned)(canon.p[i] - '0');
            if (n > (UINT64_MAX - d) / 10)
                return 413;
            n = n * 10 + d;
        }
        if (n > p->lim.max_body)
            return 413;
        r->framing = PL_HTTP_LENGTH;
        r->content_length = n;
    } else {
        r->framing = PL_HTTP_NO_BODY;
    }
    r->keep_alive = close ? 0 : r->version == 11 ? 1 : keep;
    return 0;
}

/* The head is complete: makes the spans, then checks it. */
static int head_done(struct pl_http_parser *p)
{
    struct pl_http_request *r = &p->req;
    r->method = (struct pl_str){p->buf, p->mlen};
    r->target = (struct pl_str){p->buf + p->mlen + 1, p->tlen};
    if (p->noffs > p->hcap) {
        p->hcap = p->noffs;
        p->hdrs = pl_realloc(p->hdrs, p->hcap * sizeof(*p->hdrs));
    }
    for (unsigned i = 0; i < p->noffs; i++) {
        size_t *o = p->offs + 4 * i;
        p->hdrs[i].name = (struct pl_str){p->buf + o[0], o[1] - o[0]};
        p->hdrs[i].value = (struct pl_str){p->buf + o[2], o[3] - o[2]};
    }
    r->headers = p->noffs ? p->hdrs : NULL;
    r->nheaders = p->noffs;
    int st = check_head(p);
    if (st)
        return fail(p, st);
    p->state = S_HEAD_DONE;
    return PL_HTTP_HEAD;
}

static void field_end(struct pl_http_parser *p)
{
    p->state = S_FSTART;
    if (p->trailer)
        return;
    if (p->noffs == p->offcap) {
        p->offcap = p->offcap ? p->offcap * 2 : 16;
        p->offs = pl_realloc(p->offs, p->offcap * 4 * sizeof(*p->offs));
    }
    size_t *o = p->offs + 4 * p->noffs++;
    o[0] = p->fname;
    o[1] = p->fcolon;
    o[2] = p->fval ? p->fvs : p->fcolon + 1;
    o[3] = p->fval ? p->fve : p->fcolon + 1;
}

/* The end of a field section: the head, or the trailers (message done). */
static int section_end(struct pl_http_parser *p)
{
    if (p->trailer) {
        p->state = S_FINISHED;
        return PL_HTTP_DONE;
    }
    return head_done(p);
}

/* A byte of a chunk-size line: counted against max_line. */
static int size_line_byte(struct pl_http_parser *p)
{
    return ++p->line > p->lim.max_line ? fail(p, 400) : STEP_ON;
}

/* One byte of a chunk extension (§7.1.1), checked and ignored:
 * chunk-ext = *( BWS ";" BWS name [ BWS "=" BWS ( token / quoted ) ] ). */
static int ext_byte(struct pl_http_parser *p, unsigned char c)
{
    if (size_line_byte(p) != STEP_ON)
        return PL_HTTP_ERROR;
    int st = p->state;
    if (c == '\r' &&
        (st == C_EXT_NAME || st == C_EXT_TOKEN || st == C_EXT_QEND)) {
        p->state = C_SIZE_LF;
        return STEP_ON;
    }
    switch (st) {
    case C_EXT_BWS:
        if (c == ';')
            p->state = C_EXT_NAME0;
        else if (!is_ws(c))
            return fail(p, 400);
        return STEP_ON;
    case C_EXT_NAME0:
        if (is_tchar(c))
            p->state = C_EXT_NAME;
        else if (!is_ws(c))
            return fail(p, 400);
        return STEP_ON;
    case C_EXT_NAME:
    case C_EXT_AFTER:
        if (c == ';')
            p->state = C_EXT_NAME0;
        else if (c == '=')
            p->state = C_EXT_VAL0;
        else if (is_ws(c))
            p->state = C_EXT_AFTER;
        else if (!(st == C_EXT_NAME && is_tchar(c)))
            return fail(p, 400);
        return STEP_ON;
    case C_EXT_VAL0:
        if (c == '"')
            p->state = C_EXT_QS;
        else if (is_tchar(c))
            p->state = C_EXT_TOKEN;
        else if (!is_ws(c))
            return fail(p, 400);
        return STEP_ON;
    case C_EXT_TOKEN:
    case C_EXT_QEND:
        if (c == ';')
            p->state = C_EXT_NAME0;
        else if (is_ws(c))
            p->state = C_EXT_BWS;
        else if (!(st == C_EXT_TOKEN && is_tchar(c)))
            return fail(p, 400);
        return STEP_ON;
    case C_EXT_QS:
        /* qdtext or quoted-pair (RFC 9110 §5.6.4). */
        if (c == '"')
            p->state = C_EXT_QEND;
        else if (c == '\\')
            p->state = C_EXT_QP;
        else if (!is_value_char(c))
            return fail(p, 400);
        return STEP_ON;
    default: /* C_EXT_QP */
        if (!is_value_char(c))
            return fail(p, 400);
        p->state = C_EXT_QS;
        return STEP_ON;
    }
}

/* One byte of the head, of chunk framing or of trailers. */
static int step(struct pl_http_parser *p, unsigned char c)
{
    const struct pl_http_limits *lim = &p->lim;
    switch (p->state) {
    case S_START:
        if (c == '\r' || c == '\n') {
            /* §2.2: empty lines before the request line are skipped,
             * as many as max_line bytes. */
            if (++p->line > lim->max_line)
                return fail(p, 400);
            if (c == '\r')
                p->state = S_START_CR;
            return STEP_ON;
        }
        if (!is_tchar(c))
            return fail(p, 400);
        p->line = 0;
        p->state = S_METHOD;
        /* fall through */
    case S_METHOD:
        if (++p->line > lim->max_line)
            return fail(p, 414);
        if (c == ' ' && p->mlen) {
            put(p, ' ');
            p->state = S_TARGET;
            return STEP_ON;
        }
        if (!is_tchar(c))
            return fail(p, 400);
        put(p, (char)c);
        p->mlen++;
        return STEP_ON;
    case S_START_CR:
        if (c != '\n')
            return fail(p, 400);
        p->state = S_START;
        return STEP_ON;
    case S_TARGET:
        if (++p->line > lim->max_line)
            return fail(p, 414);
        if (c == ' ' && p->tlen) {
            put(p, ' ');
            p->state = S_VERSION;
            return STEP_ON;
        }
        if (!is_target_char(c))
            return fail(p, 400);
        put(p, (char)c);
        p->tlen++;
        return STEP_ON;
    case S_VERSION:
        if (c == '\r' || c == '\n') {
            if (p->vlen != 8)
                return fail(p, 400);
            if (c == '\r') {
                p->state = S_RL_CR;
                return STEP_ON;
            }
            break;
        }
        if (++p->line > lim->max_line)
            return fail(p, 414);
        if (p->vlen >= 8 ||
            (p->vlen < 5 && c != (unsigned char)"HTTP/"[p->vlen]) ||
            (p->vlen == 6 && c != '.') ||
            ((p->vlen == 5 || p->vlen == 7) && !is_digit(c)))
            return fail(p, 400);
        put(p, (char)c);
        p->vlen++;
        return STEP_ON;
    case S_RL_CR:
        if (c != '\n')
            return fail(p, 400);
        break;
    case S_FSTART:
        if (c == '\r') {
            p->state = S_HEND_CR;
            return STEP_ON;
        }
        if (c == '\n')
            return section_end(p);
        if (++p->nfields > lim->max_headers)
            return fail(p, 431);
        if (++p->hbytes > lim->max_header_bytes)
            return fail(p, 431);
        /* Whitespace here is an obs-fold (§5.2) or whitespace after the
         * start line (§2.2): both refused. */
        if (!is_tchar(c))
            return fail(p, 400);
        p->fname = p->len;
        p->fval = 0;
        if (!p->trailer)
            put(p, (char)c);
        p->state = S_NAME;
        return STEP_ON;
    case S_NAME:
        if (++p->hbytes > lim->max_header_bytes)
            return fail(p, 431);
        if (c == ':') {
            p->fcolon = p->len;
            if (!p->trailer)
                put(p, ':');
            p->state = S_VALUE;
            return STEP_ON;
        }
        if (!is_tchar(c))
            return fail(p, 400); /* §5.1: whitespace before the colon */
        if (!p->trailer)
            put(p, (char)c);
        return STEP_ON;
    case S_VALUE:
        if (++p->hbytes > lim->max_header_bytes)
            return fail(p, 431);
        if (c == '\r') {
            p->state = S_FCR;
            return STEP_ON;
        }
        if (c == '\n') {
            field_end(p);
            return STEP_ON;
        }
        if (!is_value_char(c))
            return fail(p, 400);
        if (!is_ws(c)) {
            if (!p->fval)
                p->fvs = p->len;
            p->fval = 1;
            p->fve = p->len + 1;
        }
        if (!p->trailer)
            put(p, (char)c);
        return STEP_ON;
    case S_FCR:
        if (++p->hbytes > lim->max_header_bytes)
            return fail(p, 431);
        if (c != '\n')
            return fail(p, 400);
        field_end(p);
        return STEP_ON;
    case S_HEND_CR:
        if (c != '\n')
            return fail(p, 400);
        return section_end(p);
    case C_SIZE:
        if (size_line_byte(p) != STEP_ON)
            return PL_HTTP_ERROR;
        if (is_hex(c)) {
            unsigned d = (unsigned)hex_value(c);
            uint64_t room = lim->max_body - p->body;
            if (d > room || p->left > (room - d) / 16)
                return fail(p, 413);
            p->left = p->left * 16 + d;
            p->hexdigits = 1;
            return STEP_ON;
        }
        if (!p->hexdigits)
            return fail(p, 400);
        if (c == '\r')
            p->state = C_SIZE_LF;
        else if (c == ';')
            p->state = C_EXT_NAME0;
        else if (is_ws(c))
            p->state = C_EXT_BWS;
        else
            return fail(p, 400);
        return STEP_ON;
    case C_EXT_BWS:
    case C_EXT_NAME0:
    case C_EXT_NAME:
    case C_EXT_AFTER:
    case C_EXT_VAL0:
    case C_EXT_TOKEN:
    case C_EXT_QS:
    case C_EXT_QP:
    case C_EXT_QEND: return ext_byte(p, c);
    case C_SIZE_LF:
        if (c != '\n')
            return fail(p, 400);
        if (p->left) {
            p->state = C_DATA;
        } else {
            /* last-chunk: the trailer section follows (§7.1.2). */
            p->trailer = 1;
            p->state = S_FSTART;
        }
        return STEP_ON;
    case C_DATA_CR:
        if (c != '\r')
            return fail(p, 400);
        p->state = C_DATA_LF;
        return STEP_ON;
    case C_DATA_LF:
        if (c != '\n')
            return fail(p, 400);
        p->state = C_SIZE;
        p->line = 0;
        p->hexdigits = 0;
        return STEP_ON;
    default: return fail(p, 400);
    }
    /* The request line is complete. */
    int st = check_request_line(p);
    if (st)
        return fail(p, st);
    p->state = S_FSTART;
    return STEP_ON;
}

/* After PL_HTTP_HEAD: where the body starts. */
static void start_body(struct pl_http_parser *p)
{
    switch (p->req.framing) {
    case PL_HTTP_CHUNKED:
        p->state = C_SIZE;
        p->line = 0;
        p->hexdigits = 0;
        p->left = 0;
        break;
    case PL_HTTP_LENGTH:
        p->left = p->req.content_length;
        p->state = p->left ? S_BODY_LEN : S_END;
        break;
    default: p->state = S_END;
    }
}

uint64_t pl_http_parse_body_left(const struct pl_http_parser *p)
{
    if (p->state == S_BODY_LEN)
        return p->left;
    if (p->state == S_HEAD_DONE && p->req.framing == PL_HTTP_LENGTH)
        return p->req.content_length;
    return 0;
}

enum pl_http_event pl_http_parse(struct pl_http_parser *p, const char *data,
                                 size_t len, size_t *used, struct pl_str *body)
{
    *used = 0;
    body->p = NULL;
    body->len = 0;
    if (p->state == S_ERROR)
        return PL_HTTP_ERROR;
    if (p->state == S_FINISHED)
        reset_message(p);
    if (p->state == S_HEAD_DONE)
        start_body(p);
    if (p->state == S_END) {
        p->state = S_FINISHED;
        return PL_HTTP_DONE;
    }
    size_t i = 0;
    while (i < len) {
        if (p->state == S_BODY_LEN || p->state == C_DATA) {
            size_t n = len - i;
            if ((uint64_t)n > p->left)
                n = (size_t)p->left;
            body->p = data + i;
            body->len = n;
            p->left -= n;
            p->body += n;
            p->consumed += n;
            if (!p->left)
                p->state = p->state == S_BODY_LEN ? S_END : C_DATA_CR;
            *used = i + n;
            return PL_HTTP_BODY;
        }
        int ev = step(p, (unsigned char)data[i]);
        if (ev == PL_HTTP_ERROR) {
            *used = i;
            return PL_HTTP_ERROR;
        }
        i++;
        p->consumed++;
        if (ev != STEP_ON) {
            *used = i;
            return (enum pl_http_event)ev;
        }
    }
    *used = i;
    return PL_HTTP_MORE;
}

unsigned pl_http_header_get(const struct pl_http_request *r, const char *name,
                            struct pl_str *value)
{
    unsigned n = 0;
    value->p = NULL;
    value->len = 0;
    for (unsigned i = 0; i < r->nheaders; i++) {
        if (!name_is(r->headers[i].name, name))
            continue;
        if (n++ == 0)
            *value = r->headers[i].value;
    }
    return n;
}
