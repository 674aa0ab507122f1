/*
 * message.c - SIP messages through libosip2's parser (osipparser2):
 * set-up, parsing, header look-ups, responses built per RFC 3261
 * §8.2.6.2, requests of the server's own, tags and random tokens.  See
 * sip_int.h for the API.
 *
 * libosip2 allocates through alloc.h (osip_set_allocators: out of memory
 * aborts as everywhere in Parley) and its trace goes to the debug log.
 * Its parser is used for what it is good at (the grammar of each header
 * field); framing, the start line's exact syntax, duplicate single-valued
 * fields and the checks of RFC 3261 §8.2 are ours (frame.c, dispatch.c).
 *
 * When libosip2 refuses a message, a minimal parse takes the start line
 * and the fields a response needs (Via, From, To, Call-ID, CSeq), each on
 * its own, so that a malformed request can still be answered 400 when the
 * fault is elsewhere (RFC 4475 §3.1.2 asks for that).
 *
 * COMPAT libosip2 5.3: its parser works on C strings, so a quoted-pair
 * escaping a NUL (legal, RFC 4475 §3.1.1.2) would cut the message short;
 * such a NUL is given to it as the character '0' (only the display name
 * of a To or From changes).
 *
 * Extending: a new compact header form is a row of compact[].
 */
#include <openssl/rand.h>
#include <stdarg.h>
#include <strings.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "error.h"
#include "jid.h"
#include "log.h"
#include "map.h"
#include "map_addr.h"
#include "server.h"
#include "sip_int.h"

/* ---- set-up ---- */

static void trace(const char *file, int line, osip_trace_level_t level,
                  const char *fmt, va_list ap)
{
    (void)file;
    (void)line;
    (void)level;
    if (pl_log_get_level() < PL_LOG_DEBUG)
        return;
    char buf[256];
    vsnprintf(buf, sizeof(buf), fmt, ap);
    size_t n = strlen(buf);
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        buf[--n] = '\0';
    pl_log_debug("sip", "libosip2: %s", buf);
}

static void osip_free_cb(void *p)
{
    pl_free(p);
}

void pl__sip_osip_init(void)
{
    static int done;
    if (done)
        return;
    done = 1;
    osip_set_allocators(pl_malloc, pl_realloc, osip_free_cb);
    /* Fatal, bug and error reports (levels below 3), to the debug log. */
    osip_trace_initialize_func(TRACE_LEVEL3, trace);
    parser_init();
}

/* ---- look-ups ---- */

static int lower(int c)
{
    return c >= 'A' && c <= 'Z' ? c + 32 : c;
}

/* Compact forms of the fields libosip2 keeps generically (RFC 3261
 * §7.3.3 and the extensions'); libosip2 expands v f t i m l c e itself. */
static const char *const compact[][2] = {
    {"supported", "k"},       {"event", "o"},
    {"allow-events", "u"},    {"subject", "s"},
    {"refer-to", "r"},        {"referred-by", "b"},
    {"session-expires", "x"}, {"accept-contact", "a"},
    {"reject-contact", "j"},  {"request-disposition", "d"},
    {"identity", "y"},        {"identity-info", "n"},
};

const char *pl__sip_header(const osip_message_t *m, const char *name, int pos)
{
    if (!m)
        return NULL;
    const char *alias = NULL;
    for (size_t i = 0; i < sizeof(compact) / sizeof(compact[0]); i++)
        if (strcasecmp(name, compact[i][0]) == 0)
            alias = compact[i][1];
    int k = 0;
    for (int i = 0; i < osip_list_size(&m->headers); i++) {
        osip_header_t *h = osip_list_get(&m->headers, i);
        if (!h->hname || (strcasecmp(h->hname, name) != 0 &&
                          (!alias || strcasecmp(h->hname, alias) != 0)))
            continue;
        if (k++ == pos)
            return h->hvalue ? h->hvalue : "";
    }
    return NULL;
}

int pl__sip_has_option(const osip_message_t *m, const char *name,
                       const char *tag)
{
    size_t tl = strlen(tag);
    const char *v;
    for (int i = 0; (v = pl__sip_header(m, name, i)); i++) {
        const char *p = v;
        while (*p) {
            while (*p == ' ' || *p == '\t' || *p == ',')
                p++;
            const char *e = p;
            while (*e && *e != ',' && *e != ' ' && *e != '\t')
                e++;
            if ((size_t)(e - p) == tl && strncasecmp(p, tag, tl) == 0)
                return 1;
            p = e;
        }
    }
    return 0;
}

const char *pl__sip_from_tag(const osip_message_t *m)
{
    osip_generic_param_t *p = NULL;
    if (!m || !m->from)
        return NULL;
    osip_from_get_tag(m->from, &p);
    return p && p->gvalue ? p->gvalue : NULL;
}

const char *pl__sip_to_tag(const osip_message_t *m)
{
    osip_generic_param_t *p = NULL;
    if (!m || !m->to)
        return NULL;
    osip_to_get_tag(m->to, &p);
    return p && p->gvalue ? p->gvalue : NULL;
}

const char *pl__sip_branch(const osip_message_t *m)
{
    osip_via_t *v = m ? osip_list_get(&m->vias, 0) : NULL;
    osip_generic_param_t *p = NULL;
    if (!v)
        return NULL;
    osip_via_param_get_byname(v, "branch", &p);
    return p && p->gvalue ? p->gvalue : NULL;
}

/* Whether a Via's sent-by reads as RFC 3261's host [":" port]: a name or
 * IPv4 address (letters, digits, '-', '.', and '_' some stacks use), or an
 * IPv6 reference (libosip2 keeps it without brackets); port digits.  A
 * libosip2 lenient enough to take "a$b (comment)" for a host would write
 * a response that does not parse back to the same sent-by. */
static int sent_by_ok(const osip_via_t *v)
{
    if (!v->host || !v->host[0] || strlen(v->host) > 255)
        return 0;
    for (const char *c = v->host; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
              (*c >= '0' && *c <= '9') || *c == '-' || *c == '.' || *c == '_' ||
              *c == ':' || *c == '[' || *c == ']'))
            return 0;
    if (v->port) {
        if (!v->port[0] || strlen(v->port) > 5)
            return 0;
        for (const char *c = v->port; *c; c++)
            if (*c < '0' || *c > '9')
                return 0;
    }
    return 1;
}

int pl__sip_addressable(const osip_message_t *req)
{
    osip_via_t *v = req ? osip_list_get(&req->vias, 0) : NULL;
    return v && sent_by_ok(v) && req->cseq && req->cseq->number &&
           req->cseq->method;
}

/* ---- addresses ---- */

char *pl__sip_uri_str(osip_uri_t *u)
{
    char *s = NULL;
    if (!u || osip_uri_to_str(u, &s) != 0)
        return NULL;
    char *out = pl_strdup(s);
    osip_free(s);
    return out;
}

int pl__sip_uri_jid(osip_uri_t *u, struct pl_jid **out)
{
    *out = NULL;
    char *text = pl__sip_uri_str(u);
    if (!text)
        return PL_EJID_MALFORMED;
    int rc = pl_sip_uri_to_jid(pl_str_c(text),
                               PL_SIP_MAP_SIPS | PL_SIP_MAP_NO_GRUU, out, NULL);
    pl_free(text);
    return rc;
}

int pl__sip_is_presence_event(const char *ev)
{
    if (!ev)
        return 0;
    size_t n = strcspn(ev, "; \t");
    return n == 8 && strncmp(ev, "presence", 8) == 0;
}

/* ---- parsing ---- */

static char *dup_span(struct pl_str s)
{
    char *d = osip_malloc(s.len + 1);
    memcpy(d, s.p, s.len);
    d[s.len] = '\0';
    return d;
}

int pl__sip_parse_headers(const char *p, size_t hlen, osip_message_t **out)
{
    osip_message_t *m = NULL;
    osip_message_init(&m);
    struct sip_start sl;
    pl__sip_start_line(p, hlen, &sl);
    if (!sl.is_response && sl.method.len)
        osip_message_set_method(m, dup_span(sl.method));
    if (sl.version.len)
        osip_message_set_version(m, dup_span(sl.version));
    if (sl.is_response)
        osip_message_set_status_code(m, sl.status);
    size_t pos = 0;
    struct pl_str name, value;
    while (pl__sip_header_next(p, hlen, &pos, &name, &value)) {
        char nm[16];
        /* A NUL would cut the value short in libosip2's C strings: such
         * a field is taken as absent. */
        if (!name.len || name.len >= sizeof(nm) ||
            memchr(value.p, '\0', value.len) || memchr(name.p, '\0', name.len))
            continue;
        for (size_t i = 0; i < name.len; i++)
            nm[i] = (char)lower((unsigned char)name.p[i]);
        nm[name.len] = '\0';
        char *v = pl__sip_unfold(value);
        if (strcmp(nm, "via") == 0 || strcmp(nm, "v") == 0) {
            /* Each value on its own: a bad one does not hide the top
             * (libosip2 lower-cases the name in place: a copy). */
            char hn[] = "via";
            osip_message_set_multiple_header(m, hn, v);
        } else if ((strcmp(nm, "from") == 0 || strcmp(nm, "f") == 0) &&
                   !m->from) {
            osip_message_set_from(m, v);
        } else if ((strcmp(nm, "to") == 0 || strcmp(nm, "t") == 0) && !m->to) {
            osip_message_set_to(m, v);
        } else if ((strcmp(nm, "call-id") == 0 || strcmp(nm, "i") == 0) &&
                   !m->call_id) {
            osip_message_set_call_id(m, v);
        } else if (strcmp(nm, "cseq") == 0 && !m->cseq) {
            osip_message_set_cseq(m, v);
        }
        pl_free(v);
    }
    /* libosip2 is lenient with a lone field but does not always read
     * back what it then writes: keep only the From, To and Via fields
     * that survive the round trip, so that a 400 is something the client
     * can parse (a lost top Via leaves the request unaddressable). */
    char *s = NULL;
    osip_from_t *f = NULL;
    if (m->from && (osip_from_to_str(m->from, &s) != 0 ||
                    osip_from_init(&f) != 0 || osip_from_parse(f, s) != 0)) {
        osip_from_free(m->from);
        m->from = NULL;
    }
    osip_from_free(f);
    osip_free(s);
    s = NULL;
    f = NULL;
    if (m->to && (osip_to_to_str(m->to, &s) != 0 || osip_to_init(&f) != 0 ||
                  osip_to_parse(f, s) != 0)) {
        osip_to_free(m->to);
        m->to = NULL;
    }
    osip_to_free(f);
    osip_free(s);
    for (int i = 0; i < osip_list_size(&m->vias);) {
        osip_via_t *v = osip_list_get(&m->vias, i), *back = NULL;
        s = NULL;
        int ok = osip_via_to_str(v, &s) == 0 && osip_via_init(&back) == 0 &&
                 osip_via_parse(back, s) == 0 && back->host;
        osip_via_free(back);
        osip_free(s);
        if (ok) {
            i++;
            continue;
        }
        osip_list_remove(&m->vias, i);
        osip_via_free(v);
        if (i == 0) {
            /* No top Via: nothing to answer (and no other Via may take
             * its place). */
            while (osip_list_size(&m->vias) > 0) {
                v = osip_list_get(&m->vias, 0);
                osip_list_remove(&m->vias, 0);
                osip_via_free(v);
            }
            break;
        }
    }
    *out = m;
    return PL_OK;
}

/* Whether a field name is Content-Length (or its compact form). */
static int is_content_length(struct pl_str name)
{
    return (name.len == 14 && strncasecmp(name.p, "content-length", 14) == 0) ||
           (name.len == 1 && lower((unsigned char)name.p[0]) == 'l');
}

/*
 * Takes the Content-Length fields out of the header section p[0..hlen)
 * in place: what follows each moves down over it (nothing moves when
 * there is none; one CRLF when it is the last field, as usual).  Returns
 * the section's new length; the bytes after it, up to hlen, are stale.
 * The other fields keep their bytes and their order.
 */
static size_t drop_content_length(char *p, size_t hlen)
{
    size_t pos = 0, kept = 0, w = 0;
    struct pl_str name, value;
    /* Only bytes before pos are written: the walk reads on from pos. */
    while (pl__sip_header_next(p, hlen, &pos, &name, &value)) {
        if (!is_content_length(name))
            continue;
        size_t start = (size_t)(name.p - p);
        if (w != kept)
            memmove(p + w, p + kept, start - kept);
        w += start - kept;
        kept = pos;
    }
    if (!kept)
        return hlen;
    memmove(p + w, p + kept, hlen - kept);
    return w + (hlen - kept);
}

/*
 * libosip2 is given the header section alone, without its Content-Length
 * fields (so that it expects no body), and the body is attached as bytes
 * afterwards: libosip2 never parses a body.  Its MIME parser leaks (5.3:
 * a body part's second Content-Type, in osip_body_parse_mime), and where
 * it finds the end of the header section need not be where the framing
 * did, so that a message could look multipart to it and not to us
 * (fuzz_sip found both).  A multipart body is left out (*multipart set):
 * Parley takes none.  As libosip2 does, a body is kept only when there
 * is a Content-Type with a type and subtype.  The section is p[0..hlen)
 * (drop_content_length done), the body p[body..n).
 */
static int parse_split(const char *p, size_t hlen, size_t body, size_t n,
                       const struct sip_scan *scan, osip_message_t *m,
                       int *multipart)
{
    *multipart = 0;
    int rc = osip_message_parse(m, p, hlen);
    if (rc != 0)
        return rc;
    const osip_content_type_t *ct = m->content_type;
    if (ct && ct->type && ct->subtype) {
        if (strcasecmp(ct->type, "multipart") == 0)
            *multipart = 1;
        else if (n > body && osip_message_set_body(m, p + body, n - body) != 0)
            return -1;
    }
    if (scan->clen >= 0) {
        char len[24];
        snprintf(len, sizeof(len), "%ld", scan->clen);
        osip_content_length_free(m->content_length);
        m->content_length = NULL;
        rc = osip_message_set_content_length(m, len);
    }
    return rc;
}

int pl__sip_parse(char *p, size_t n, const struct sip_scan *scan,
                  osip_message_t **out)
{
    *out = NULL;
    char *copy = NULL;
    if (scan->nul) {
        /* See the file comment (COMPAT). */
        copy = pl_malloc(n);
        memcpy(copy, p, n);
        for (size_t i = 1; i < scan->hlen && i < n; i++)
            if (copy[i] == '\0' && copy[i - 1] == '\\')
                copy[i] = '0';
        p = copy;
    }
    osip_message_t *m = NULL;
    osip_message_init(&m);
    size_t hlen = scan->hlen < n ? scan->hlen : n, body = hlen;
    int multipart = 0, rc = -1;
    if (!memchr(p, '\0', hlen)) {
        hlen = drop_content_length(p, hlen);
        rc = parse_split(p, hlen, body, n, scan, m, &multipart);
    }
    if (rc == 0) {
        pl_free(copy);
        *out = m;
        return multipart ? PL_EFEATURE_NOT_IMPLEMENTED : PL_OK;
    }
    osip_message_free(m);
    /* The same fields (the minimal pass takes no Content-Length). */
    pl__sip_parse_headers(p, hlen, out);
    pl_free(copy);
    return PL_EINVAL;
}

/* ---- responses ---- */

osip_message_t *pl__sip_response_build(osip_message_t *req, int code,
                                       const char *reason, const char *to_tag)
{
    if (!pl__sip_addressable(req))
        return NULL;
    osip_message_t *r = NULL;
    osip_message_init(&r);
    osip_message_set_version(r, osip_strdup("SIP/2.0"));
    osip_message_set_status_code(r, code);
    osip_message_set_reason_phrase(r,
                                   osip_strdup(reason ? reason
                                                      : pl_sip_reason(code)));
    for (int i = 0; i < osip_list_size(&req->vias); i++) {
        osip_via_t *v = osip_list_get(&req->vias, i), *c = NULL;
        if (osip_via_clone(v, &c) == 0)
            osip_list_add(&r->vias, c, -1);
    }
    if (req->from)
        osip_from_clone(req->from, &r->from);
    if (req->to) {
        osip_to_clone(req->to, &r->to);
        if (r->to && code > 100 && to_tag && !pl__sip_to_tag(req))
            osip_to_set_tag(r->to, osip_strdup(to_tag));
    }
    if (req->call_id)
        osip_call_id_clone(req->call_id, &r->call_id);
    osip_cseq_clone(req->cseq, &r->cseq);
    return r;
}

char *pl__sip_serialize(osip_message_t *m, size_t *len)
{
    char *s = NULL;
    size_t n = 0;
    if (osip_message_to_str(m, &s, &n) != 0 || !s)
        return NULL;
    *len = n;
    /* libosip2 writes into a buffer of at least 8 KiB whatever the
     * message's size; transactions keep the result for 64*T1 (Timer J)
     * or until Timer K, so it is copied to its own size: 8 KiB per UDP
     * transaction was most of parleyd's memory under a registration
     * burst (bench/sip-load).  osip_malloc is pl_malloc: pl_free frees
     * both. */
    char *out = pl_strndup(s, n);
    pl_free(s);
    return out;
}

void pl__sip_make_tag(const osip_message_t *req, char out[17])
{
    struct pl_buf b = {0};
    struct pl_str secret = pl_server_secret();
    pl_buf_append(&b, secret.p, secret.len);
    const char *parts[4] = {
        req->call_id && req->call_id->number ? req->call_id->number : "",
        pl__sip_from_tag(req),
        req->cseq && req->cseq->number ? req->cseq->number : "",
        pl__sip_branch(req),
    };
    for (int i = 0; i < 4; i++) {
        pl_buf_append(&b, "|", 1);
        if (parts[i])
            pl_buf_append_str(&b, parts[i]);
    }
    if (req->call_id && req->call_id->host) {
        pl_buf_append(&b, "@", 1);
        pl_buf_append_str(&b, req->call_id->host);
    }
    struct pl_str s = pl_buf_str(&b);
    uint64_t h = pl_hash(s.p, s.len);
    pl_buf_reset(&b);
    snprintf(out, 17, "%016llx", (unsigned long long)h);
}

void pl__sip_random(char *out, size_t n)
{
    static const char digits[] = "0123456789abcdefghijklmnopqrstuv";
    unsigned char r[64];
    if (!n)
        return;
    size_t k = n - 1 < sizeof(r) ? n - 1 : sizeof(r);
    if (RAND_bytes(r, (int)k) != 1)
        pl_assert(!"RAND_bytes failed");
    for (size_t i = 0; i < k; i++)
        out[i] = digits[r[i] & 31];
    out[k] = '\0';
}

int pl__sip_request_new(const char *method, const char *uri, const char *from,
                        const char *to, osip_message_t **out)
{
    *out = NULL;
    osip_message_t *m = NULL;
    osip_uri_t *u = NULL;
    osip_message_init(&m);
    osip_message_set_method(m, osip_strdup(method));
    osip_message_set_version(m, osip_strdup("SIP/2.0"));
    if (osip_uri_init(&u) != 0 || osip_uri_parse(u, uri) != 0) {
        osip_uri_free(u);
        goto fail;
    }
    osip_message_set_uri(m, u);
    if (osip_message_set_from(m, from) != 0 || osip_message_set_to(m, to) != 0)
        goto fail;
    char tag[17], cid[25], cseq[64];
    pl__sip_random(tag, sizeof(tag));
    pl__sip_random(cid, sizeof(cid));
    osip_from_set_tag(m->from, osip_strdup(tag));
    snprintf(cseq, sizeof(cseq), "1 %s", method);
    if (osip_message_set_call_id(m, cid) != 0 ||
        osip_message_set_cseq(m, cseq) != 0 ||
        osip_message_set_header(m, "Max-Forwards", "70") != 0)
        goto fail;
    *out = m;
    return PL_OK;
fail:
    osip_message_free(m);
    return PL_EINVAL;
}
