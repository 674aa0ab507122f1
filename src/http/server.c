/*
 * server.c - the HTTP/1.1 server behind the "http" listener protocol: one
 * struct http_conn per connection, the request parser (parse.h) fed from
 * its bytes, the route table, the request's life of http.h, and the
 * responses.  API: http.h (routes, requests, responses), http_int.h (the
 * front end's side).
 *
 * A connection is in one of these states:
 *   C_HEAD     reading a head (request_timeout from its first byte, or
 *              keepalive_timeout while nothing of it came);
 *   C_BODY     reading the body of a routed request (body_timeout between
 *              bytes, not while the consumer paused it);
 *   C_HANDLER  the request is complete and the route's handler answers
 *              (no deadline of ours: the handler's business);
 *   C_SENDING  the answer is queued, its file or stream still going.
 * Outside C_HEAD and C_BODY the connection's reading is held (conn.h,
 * pl_conn_hold): no pipelining, bytes of a next request wait, first in
 * our buffer (what was read with the previous one) then in the kernel.
 * When the answer is complete the connection closes (Connection: close,
 * max_requests, an error) or goes back to C_HEAD with what is left.
 *
 * Paths (r->path): the target's path percent-decoded.  Refused with 400
 * before any route: an escaped NUL, an escaped '/' (%2F: a route or a
 * file name could not tell it from a separator, so it is never
 * accepted), "." and ".." segments, escaped or not (no normalization: a
 * client that sends them is not a browser, and refusing closes every
 * traversal trick at once).  Empty segments ("//") are kept; the static
 * files refuse them.  An absolute-form target (RFC 9112 §3.2.2) gives
 * its authority as the Host.
 *
 * Extending: a new response helper writes through head_out() and ends
 * with complete(); a new rule of the request goes in on_head_ready().
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "error.h"
#include "hook.h"
#include "host.h"
#include "http/http_int.h"
#include "listen.h"
#include "log.h"
#include "server.h"
#include "stats.h"

enum {
    C_HEAD,
    C_BODY,
    C_HANDLER,
    C_SENDING
};

struct http_conn;

/* A request and its answer; pub first: r is a struct http_req. */
struct http_req {
    struct pl_http_req pub;    /* what handlers see */
    struct http_conn *hc;      /* its connection, NULL once gone */
    struct pl_buf hdrs;        /* fields added, "Name: value\r\n" */
    char host[256];            /* Host, lowercased, without the port */
    struct pl_str authority;   /* Host as received (or the target's) */
    char *path_buf;            /* r->path's bytes */
    unsigned started : 1;      /* the status line is out */
    unsigned done : 1;         /* the answer is complete */
    unsigned chunked : 1;      /* the stream is chunked */
    unsigned close : 1;        /* close after this answer */
    unsigned body_skipped : 1; /* on_head took over: body not read */
    unsigned paused : 1;       /* pl_http_pause */
    int file_fd;               /* pl_http_file: the file, or -1 */
    struct pl_pace *pace;      /* pl_http_set_pace, or NULL */
    void (*drain)(struct pl_http_req *r); /* pl_http_on_drain */
    int status;                           /* of the answer */
};

struct http_conn {
    struct pl_conn *conn;          /* NULL once closed */
    struct pl_listen *listen;      /* accepted by */
    struct pl_http_parser parser;  /* the current request's */
    struct pl_buf in;              /* read, not parsed yet */
    struct http_req *req;          /* the current request, or NULL */
    int state;                     /* C_* */
    unsigned nreq;                 /* requests begun on it */
    struct pl_timer timer;         /* request, body or keep-alive deadline */
    uint64_t head_ms;              /* first byte of the head, 0: none yet */
    uint64_t body_ms;              /* last body progress */
    unsigned queued : 1;           /* a deferred resume is pending */
    unsigned gone : 1;             /* closed while queued: freed by it */
    unsigned established : 1;      /* pl_conn_established called */
    int busy;                      /* in a route's callback: not freed */
    struct http_conn *prev, *next; /* all connections */
};

static struct http_conn *conns;
static unsigned long nconns;

/* Routes, longest path first among equals of order added. */
static const struct pl_http_route **routes;
static int nroutes;

static void process(struct http_conn *hc);
static void complete(struct http_req *q);
static void arm(struct http_conn *hc);

static struct pl_loop *loop_of(struct http_conn *hc)
{
    return hc->conn ? hc->conn->loop : pl_server_loop();
}

static uint64_t now_ms(struct http_conn *hc)
{
    return pl_loop_now(loop_of(hc));
}

/* ---- reasons, dates ---- */

const char *pl_http_reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 406: return "Not Acceptable";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 412: return "Precondition Failed";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 416: return "Range Not Satisfiable";
    case 417: return "Expectation Failed";
    case 426: return "Upgrade Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    case 507: return "Insufficient Storage";
    default: return "";
    }
}

static const char *const wdays[] = {"Sun", "Mon", "Tue", "Wed",
                                    "Thu", "Fri", "Sat"};
static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                     "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

void pl__http_format_date(time_t t, char *out, size_t len)
{
    struct tm tm;
    gmtime_r(&t, &tm);
    /* By hand: strftime's names follow the locale. */
    snprintf(out, len, "%s, %02d %s %04d %02d:%02d:%02d GMT",
             wdays[tm.tm_wday % 7], tm.tm_mday, months[tm.tm_mon % 12],
             tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

static int digits(const char *p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return 0;
        v = v * 10 + (p[i] - '0');
    }
    *out = v;
    return 1;
}

int pl__http_parse_date(struct pl_str v, time_t *t)
{
    /* "Sun, 06 Nov 1994 08:49:37 GMT": 29 bytes exactly. */
    const char *p = v.p;
    if (v.len != 29 || p[3] != ',' || p[4] != ' ' || p[7] != ' ' ||
        p[11] != ' ' || p[16] != ' ' || p[19] != ':' || p[22] != ':' ||
        p[25] != ' ' || memcmp(p + 26, "GMT", 3) != 0)
        return PL_EINVAL;
    int wday = -1, mon = -1;
    for (int i = 0; i < 7; i++)
        if (memcmp(p, wdays[i], 3) == 0)
            wday = i;
    for (int i = 0; i < 12; i++)
        if (memcmp(p + 8, months[i], 3) == 0)
            mon = i;
    int day, year, h, m, s;
    if (wday < 0 || mon < 0 || !digits(p + 5, 2, &day) ||
        !digits(p + 12, 4, &year) || !digits(p + 17, 2, &h) ||
        !digits(p + 20, 2, &m) || !digits(p + 23, 2, &s) || day < 1 ||
        day > 31 || h > 23 || m > 59 || s > 60 || year < 1970)
        return PL_EINVAL;
    struct tm tm = {0};
    tm.tm_year = year - 1900;
    tm.tm_mon = mon;
    tm.tm_mday = day;
    tm.tm_hour = h;
    tm.tm_min = m;
    tm.tm_sec = s;
    *t = timegm(&tm);
    return PL_OK;
}

/* ---- paths ---- */

int pl__http_path_decode(const char *p, size_t n, char *out, size_t cap,
                         size_t *outlen)
{
    size_t o = 0, seg = 0; /* seg: where the current segment starts */
    if (n == 0 || p[0] != '/' || cap < n)
        return PL_EINVAL;
    for (size_t i = 0; i <= n; i++) {
        if (i == n || p[i] == '?' || p[i] == '/') {
            /* The end of a segment: "." and ".." are refused. */
            size_t len = o - seg;
            if (i > 0 && ((len == 1 && out[seg] == '.') ||
                          (len == 2 && out[seg] == '.' && out[seg + 1] == '.')))
                return PL_EINVAL;
            if (i == n || p[i] == '?')
                break;
            out[o++] = '/';
            seg = o;
            continue;
        }
        char c = p[i];
        if (c == '%') {
            int hi = i + 2 < n ? pl_hex_value(p[i + 1]) : -1;
            int lo = i + 2 < n ? pl_hex_value(p[i + 2]) : -1;
            if (hi < 0 || lo < 0)
                return PL_EINVAL;
            c = (char)(hi * 16 + lo);
            if (c == '\0' || c == '/')
                return PL_EINVAL;
            i += 2;
        }
        out[o++] = c;
    }
    *outlen = o;
    return PL_OK;
}

/* ---- Range ---- */

static int parse_u64(const char *p, size_t n, uint64_t *out)
{
    uint64_t v = 0;
    if (n == 0 || n > 19)
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return 0;
        v = v * 10 + (uint64_t)(p[i] - '0');
    }
    *out = v;
    return 1;
}

int pl__http_parse_range(struct pl_str v, uint64_t size, uint64_t *first,
                         uint64_t *last)
{
    const char *p = v.p;
    size_t n = v.len;
    if (n < 6 || strncasecmp(p, "bytes=", 6) != 0)
        return 0;
    p += 6;
    n -= 6;
    while (n && (*p == ' ' || *p == '\t')) {
        p++;
        n--;
    }
    while (n && (p[n - 1] == ' ' || p[n - 1] == '\t'))
        n--;
    if (memchr(p, ',', n))
        return 0; /* several ranges: the whole representation */
    const char *dash = memchr(p, '-', n);
    if (!dash)
        return 0;
    size_t a = (size_t)(dash - p), b = n - a - 1;
    uint64_t x, y;
    if (a == 0) {
        /* suffix-range: the last y bytes. */
        if (!parse_u64(dash + 1, b, &y))
            return 0;
        if (y == 0 || size == 0)
            return -1;
        *first = y >= size ? 0 : size - y;
        *last = size - 1;
        return 1;
    }
    if (!parse_u64(p, a, &x))
        return 0;
    if (b == 0) {
        y = UINT64_MAX;
    } else {
        if (!parse_u64(dash + 1, b, &y))
            return 0;
        if (y < x)
            return 0; /* invalid: ignored (RFC 9110 §14.1.1) */
    }
    if (x >= size)
        return -1;
    *first = x;
    *last = y >= size ? size - 1 : y;
    return 1;
}

/* ---- routes ---- */

int pl_http_route_add(const struct pl_http_route *rt)
{
    pl_assert(rt && rt->path && rt->path[0] == '/' && rt->service &&
              rt->methods && rt->on_request);
    for (int i = 0; i < nroutes; i++)
        if (strcmp(routes[i]->path, rt->path) == 0)
            return PL_ECONFLICT;
    routes = pl_realloc(routes, (size_t)(nroutes + 1) * sizeof(*routes));
    routes[nroutes++] = rt;
    return PL_OK;
}

void pl_http_route_remove(const struct pl_http_route *rt)
{
    for (int i = 0; i < nroutes; i++)
        if (routes[i] == rt) {
            memmove(&routes[i], &routes[i + 1],
                    (size_t)(nroutes - i - 1) * sizeof(*routes));
            nroutes--;
            return;
        }
}

void pl__http_routes_free(void)
{
    pl_free(routes);
    routes = NULL;
    nroutes = 0;
}

static int is_loopback_address(const char *a)
{
    return strncmp(a, "127.", 4) == 0 || strcmp(a, "::1") == 0;
}

/* Whether listener l serves service (http.h: its `services`, else every
 * public one, and the operator ones on loopback). */
static int serves(const struct pl_listen *l, const char *service)
{
    const struct pl_listener_conf *lc = l ? l->conf : NULL;
    config_setting_t *s = lc && lc->group
                              ? config_setting_get_member(lc->group, "services")
                              : NULL;
    if (s) {
        for (int i = 0; i < config_setting_length(s); i++) {
            const char *name = config_setting_get_string_elem(s, i);
            if (name && strcmp(name, service) == 0)
                return 1;
        }
        return 0;
    }
    if (strcmp(service, "metrics") == 0 || strcmp(service, "admin") == 0)
        return lc && lc->address && is_loopback_address(lc->address);
    return 1;
}

static const struct pl_http_route *find_route(const struct pl_listen *l,
                                              struct pl_str path)
{
    const struct pl_http_route *best = NULL;
    size_t best_len = 0;
    for (int i = 0; i < nroutes; i++) {
        const struct pl_http_route *rt = routes[i];
        size_t n = strlen(rt->path);
        int prefix = rt->path[n - 1] == '/';
        int match = prefix ? path.len >= n && memcmp(path.p, rt->path, n) == 0
                           : pl_str_eq_c(path, rt->path);
        if (match && (!best || n > best_len) && serves(l, rt->service)) {
            best = rt;
            best_len = n;
        }
    }
    return best;
}

/* Whether the space-separated list has method (HEAD where GET is). */
static int allows(const char *list, struct pl_str method)
{
    const char *p = list;
    while (*p) {
        while (*p == ' ')
            p++;
        const char *e = p;
        while (*e && *e != ' ')
            e++;
        struct pl_str m = {p, (size_t)(e - p)};
        if (m.len && (pl_str_eq(m, method) ||
                      (pl_str_eq_c(method, "HEAD") && pl_str_eq_c(m, "GET"))))
            return 1;
        p = e;
    }
    return 0;
}

/* "GET, HEAD, POST, OPTIONS" from a route's methods. */
static void allow_list(const char *list, struct pl_buf *b)
{
    const char *p = list;
    int get = 0, head = 0, options = 0, first = 1;
    while (*p) {
        while (*p == ' ')
            p++;
        const char *e = p;
        while (*e && *e != ' ')
            e++;
        if (e > p) {
            pl_buf_printf(b, "%s%.*s", first ? "" : ", ", (int)(e - p), p);
            first = 0;
            get |= e - p == 3 && memcmp(p, "GET", 3) == 0;
            head |= e - p == 4 && memcmp(p, "HEAD", 4) == 0;
            options |= e - p == 7 && memcmp(p, "OPTIONS", 7) == 0;
        }
        p = e;
    }
    if (get && !head)
        pl_buf_append_str(b, ", HEAD");
    if (!options)
        pl_buf_append_str(b, first ? "OPTIONS" : ", OPTIONS");
}

/* The methods of RFC 9110 §9 and PATCH (RFC 5789); others are 501. */
static int is_known_method(struct pl_str m)
{
    static const char *const known[] = {"GET",    "HEAD",    "POST",    "PUT",
                                        "DELETE", "CONNECT", "OPTIONS", "TRACE",
                                        "PATCH",  NULL};
    for (int i = 0; known[i]; i++)
        if (pl_str_eq_c(m, known[i]))
            return 1;
    return 0;
}

/* ---- requests ---- */

static struct http_req *Q(struct pl_http_req *r)
{
    return (struct http_req *)r;
}

struct pl_str pl_http_field(const struct pl_http_req *r, const char *name)
{
    struct pl_str v = {NULL, 0};
    if (r->head)
        pl_http_header_get(r->head, name, &v);
    return v;
}

int pl_http_add_header(struct pl_http_req *r, const char *name,
                       const char *value)
{
    if (strpbrk(name, "\r\n:") || strpbrk(value, "\r\n") || !name[0])
        return PL_EINVAL;
    pl_buf_printf(&Q(r)->hdrs, "%s: %s\r\n", name, value);
    return PL_OK;
}

static int origin_allowed(const struct http_req *q, int *star)
{
    const struct pl_strlist *l = pl__http_cors_origins(q->pub.host);
    *star = 0;
    if (!q->pub.origin.len)
        return 0;
    for (int i = 0; i < l->n; i++) {
        if (strcmp(l->v[i], "*") == 0) {
            *star = 1;
            return 1;
        }
        if (pl_str_eq_c(q->pub.origin, l->v[i]))
            return 1;
    }
    return 0;
}

int pl_http_origin_allowed(const struct pl_http_req *r)
{
    const struct http_req *q = (const struct http_req *)r;
    if (!r->origin.len)
        return 1; /* not a browser: nothing to protect */
    /* The page's own origin: the authority it asked for, over http or
     * https (a listener declared secure may sit behind a TLS proxy). */
    struct pl_str a = q->authority.len ? q->authority : r->head->host;
    struct pl_str o = r->origin;
    size_t skip = 0;
    if (o.len > 7 && memcmp(o.p, "http://", 7) == 0)
        skip = 7;
    else if (o.len > 8 && memcmp(o.p, "https://", 8) == 0)
        skip = 8;
    if (skip && a.len && o.len - skip == a.len &&
        strncasecmp(o.p + skip, a.p, a.len) == 0)
        return 1;
    int star;
    return origin_allowed(q, &star);
}

static void count_status(int status)
{
    if (status < 200)
        pl_stat_inc(http_responses_1xx);
    else if (status < 300)
        pl_stat_inc(http_responses_2xx);
    else if (status < 400)
        pl_stat_inc(http_responses_3xx);
    else if (status < 500)
        pl_stat_inc(http_responses_4xx);
    else
        pl_stat_inc(http_responses_5xx);
}

static void conn_write(struct http_conn *hc, const void *p, size_t n)
{
    if (!hc || !hc->conn)
        return;
    pl_stat_add(http_bytes_out, (unsigned long)n);
    pl_conn_write(hc->conn, p, n);
}

/*
 * Writes the status line and fields of q's answer: length is the
 * Content-Length (-1: chunked, or until the close for HTTP/1.0, -2: no
 * Content-Length at all).
 */
static void head_out(struct http_req *q, int status, const char *ctype,
                     int64_t length)
{
    const struct http_settings *S = pl__http_settings();
    struct http_conn *hc = q->hc;
    struct pl_buf b = {0};
    char date[40];
    q->status = status;
    q->started = 1;
    if ((hc && hc->nreq >= (unsigned)S->max_requests) ||
        (q->pub.head && !q->pub.head->keep_alive))
        q->close = 1;
    int v10 = q->pub.head && q->pub.head->version == 10;
    if (length == -1 && v10)
        q->close = 1; /* no chunked for HTTP/1.0: the close ends it */
    if (length == -1 && !v10)
        q->chunked = 1;
    pl__http_format_date(time(NULL), date, sizeof(date));
    pl_buf_printf(&b, "HTTP/1.1 %d %s\r\nDate: %s\r\n", status,
                  pl_http_reason(status), date);
    if (S->server_name && S->server_name[0])
        pl_buf_printf(&b, "Server: %s\r\n", S->server_name);
    if (ctype)
        pl_buf_printf(&b, "Content-Type: %s\r\n", ctype);
    if (length >= 0)
        pl_buf_printf(&b, "Content-Length: %lld\r\n", (long long)length);
    else if (q->chunked)
        pl_buf_append_str(&b, "Transfer-Encoding: chunked\r\n");
    int star;
    if (q->pub.route && q->pub.route->cors && origin_allowed(q, &star)) {
        if (star)
            pl_buf_append_str(&b, "Access-Control-Allow-Origin: *\r\n");
        else
            pl_buf_printf(&b,
                          "Access-Control-Allow-Origin: %.*s\r\n"
                          "Vary: Origin\r\n",
                          (int)q->pub.origin.len, q->pub.origin.p);
    }
    struct pl_str h = pl_buf_str(&q->hdrs);
    if (h.len)
        pl_buf_append(&b, h.p, h.len);
    if (q->close)
        pl_buf_append_str(&b, "Connection: close\r\n");
    else if (v10)
        pl_buf_append_str(&b, "Connection: keep-alive\r\n");
    pl_buf_append_str(&b, "\r\n");
    struct pl_str s = pl_buf_str(&b);
    conn_write(hc, s.p, s.len);
    pl_buf_reset(&b);
    count_status(status);
}

void pl_http_respond(struct pl_http_req *r, int status,
                     const char *content_type, const void *body, size_t n)
{
    struct http_req *q = Q(r);
    pl_assert(!q->started);
    head_out(q, status, content_type,
             status == 204 || status == 304 ? -2 : (int64_t)n);
    if (!r->is_head && n && status != 204 && status != 304)
        conn_write(q->hc, body, n);
    complete(q);
}

void pl_http_error(struct pl_http_req *r, int status, const char *text)
{
    char body[256];
    int n = snprintf(body, sizeof(body), "%s\n",
                     text ? text : pl_http_reason(status));
    if (n < 0 || (size_t)n >= sizeof(body))
        n = (int)sizeof(body) - 1;
    if (status >= 400 && Q(r)->hc && Q(r)->hc->state == C_BODY)
        Q(r)->close = 1; /* the rest of the body will not be read */
    pl_http_respond(r, status, "text/plain; charset=utf-8", body, (size_t)n);
}

void pl_http_begin(struct pl_http_req *r, int status, const char *content_type,
                   int64_t length)
{
    struct http_req *q = Q(r);
    pl_assert(!q->started);
    if (q->hc && q->hc->state == C_BODY)
        q->close = 1;
    head_out(q, status, content_type, length < 0 ? -1 : length);
    if (q->hc)
        q->hc->state = C_SENDING;
}

void pl_http_write(struct pl_http_req *r, const void *p, size_t n)
{
    struct http_req *q = Q(r);
    if (!n || r->is_head || q->done)
        return;
    if (q->chunked) {
        char len[24];
        int k = snprintf(len, sizeof(len), "%zx\r\n", n);
        conn_write(q->hc, len, (size_t)k);
        conn_write(q->hc, p, n);
        conn_write(q->hc, "\r\n", 2);
    } else {
        conn_write(q->hc, p, n);
    }
}

void pl_http_end(struct pl_http_req *r)
{
    struct http_req *q = Q(r);
    if (q->chunked && !r->is_head)
        conn_write(q->hc, "0\r\n\r\n", 5);
    complete(q);
}

size_t pl_http_writable(const struct pl_http_req *r)
{
    const struct http_req *q = (const struct http_req *)r;
    if (!q->hc || !q->hc->conn)
        return 0;
    uint64_t pending = pl_conn_pending(q->hc->conn);
    size_t max = q->hc->conn->lim.max_out;
    return pending >= max ? 0 : max - (size_t)pending;
}

static void on_conn_drain(struct pl_conn *c);

static void deferred_drain(void *data);

void pl_http_on_drain(struct pl_http_req *r, void (*fn)(struct pl_http_req *))
{
    struct http_req *q = Q(r);
    q->drain = fn;
    if (q->hc && q->hc->conn && fn && !pl_conn_pending(q->hc->conn) &&
        !q->hc->queued) {
        /* Nothing queued: no flush will say so, say it next turn. */
        q->hc->queued = 1;
        pl_loop_defer(q->hc->conn->loop, deferred_drain, q->hc);
    }
}

void pl_http_pause(struct pl_http_req *r)
{
    struct http_req *q = Q(r);
    q->paused = 1;
    if (q->hc && q->hc->conn)
        pl_conn_hold(q->hc->conn, 1);
}

static void resume_later(struct http_conn *hc);

void pl_http_resume(struct pl_http_req *r)
{
    struct http_req *q = Q(r);
    if (!q->paused)
        return;
    q->paused = 0;
    if (q->hc && q->hc->conn && q->hc->state == C_BODY) {
        q->hc->body_ms = now_ms(q->hc);
        /* pl_http_pause held the connection's reading: let it go. */
        if (q->hc->conn)
            pl_conn_hold(q->hc->conn, 0);
        arm(q->hc);
        resume_later(q->hc); /* bytes already read come first */
    }
}

void pl_http_base_url(const struct pl_http_req *r, const char *scheme,
                      struct pl_buf *b)
{
    const struct http_req *q = (const struct http_req *)r;
    /* The scheme the client used: TLS here, or (on a listener declared
     * secure) the https a TLS-terminating proxy says it came over; a
     * loopback listener declared secure is still plain for its clients. */
    struct pl_str fwd = pl_http_field(r, "X-Forwarded-Proto");
    int tls = r->conn && r->conn->tls == PL_CONN_TLS;
    if (!tls && r->secure && fwd.len == 5 &&
        strncasecmp(fwd.p, "https", 5) == 0)
        tls = 1;
    const char *s = scheme;
    if (tls && strcmp(scheme, "ws") == 0)
        s = "wss";
    else if (tls && strcmp(scheme, "http") == 0)
        s = "https";
    pl_buf_printf(b, "%s://", s);
    if (q->authority.len)
        pl_buf_append(b, q->authority.p, q->authority.len);
    else if (r->host)
        pl_buf_append_str(b, r->host->domain);
    else if (pl_host_at(0))
        pl_buf_append_str(b, pl_host_at(0)->domain);
    else
        pl_buf_append_str(b, "localhost");
}

/* ---- files ---- */

/* Whether an If-None-Match list names etag (weak comparison, RFC 9110
 * §13.1.2), or is "*". */
static int etag_listed(struct pl_str list, const char *etag)
{
    size_t n = strlen(etag);
    const char *p = list.p, *end = list.p + list.len;
    while (p < end) {
        while (p < end && (*p == ' ' || *p == '\t' || *p == ','))
            p++;
        const char *e = p;
        while (e < end && *e != ',')
            e++;
        const char *t = e;
        while (t > p && (t[-1] == ' ' || t[-1] == '\t'))
            t--;
        struct pl_str tag = {p, (size_t)(t - p)};
        if (pl_str_eq_c(tag, "*"))
            return 1;
        if (tag.len > 2 && memcmp(tag.p, "W/", 2) == 0) {
            tag.p += 2;
            tag.len -= 2;
        }
        if (tag.len == n && memcmp(tag.p, etag, n) == 0)
            return 1;
        p = e;
    }
    return 0;
}

void pl_http_file(struct pl_http_req *r, int fd, const struct stat *st,
                  const char *content_type)
{
    struct http_req *q = Q(r);
    char etag[80], lm[40], buf[128];
    uint64_t size = (uint64_t)st->st_size;
    snprintf(etag, sizeof(etag), "\"%llx-%llx-%llx\"", (unsigned long long)size,
             (unsigned long long)st->st_mtim.tv_sec * 1000000000ull +
                 (unsigned long long)st->st_mtim.tv_nsec,
             (unsigned long long)st->st_ino);
    pl__http_format_date(st->st_mtime, lm, sizeof(lm));
    pl_http_add_header(r, "ETag", etag);
    pl_http_add_header(r, "Last-Modified", lm);
    pl_http_add_header(r, "Accept-Ranges", "bytes");
    struct pl_str inm = pl_http_field(r, "If-None-Match");
    struct pl_str ims = pl_http_field(r, "If-Modified-Since");
    time_t since;
    if ((inm.len && etag_listed(inm, etag)) ||
        (!inm.len && ims.len && pl__http_parse_date(ims, &since) == PL_OK &&
         st->st_mtime <= since)) {
        close(fd);
        pl_http_respond(r, 304, NULL, NULL, 0);
        return;
    }
    uint64_t first = 0, last = size ? size - 1 : 0;
    int partial = 0;
    struct pl_str range = pl_http_field(r, "Range");
    struct pl_str ifr = pl_http_field(r, "If-Range");
    if (range.len && pl_str_eq_c(r->head->method, "GET") &&
        (!ifr.len || pl_str_eq_c(ifr, etag))) {
        partial = pl__http_parse_range(range, size, &first, &last);
        if (partial < 0) {
            close(fd);
            snprintf(buf, sizeof(buf), "bytes */%llu",
                     (unsigned long long)size);
            pl_http_add_header(r, "Content-Range", buf);
            pl_http_error(r, 416, NULL);
            return;
        }
    }
    if (partial) {
        snprintf(buf, sizeof(buf), "bytes %llu-%llu/%llu",
                 (unsigned long long)first, (unsigned long long)last,
                 (unsigned long long)size);
        pl_http_add_header(r, "Content-Range", buf);
    }
    uint64_t len = size ? last - first + 1 : 0;
    head_out(q, partial ? 206 : 200, content_type, (int64_t)len);
    if (r->is_head || !len || !q->hc || !q->hc->conn) {
        close(fd);
        complete(q);
        return;
    }
    q->file_fd = fd;
    q->hc->state = C_SENDING;
    pl_stat_add(http_bytes_out, (unsigned long)len);
    pl_conn_sendfile_paced(q->hc->conn, fd, first, len, q->pace);
}

void pl_http_set_pace(struct pl_http_req *r, struct pl_pace *p)
{
    Q(r)->pace = p;
}

/* ---- connection life ---- */

static void req_free(struct http_req *q)
{
    if (!q)
        return;
    if (q->file_fd >= 0)
        close(q->file_fd);
    pl_buf_reset(&q->hdrs);
    pl_buf_reset(&q->pub.body);
    pl_free(q->path_buf);
    pl_free(q);
}

/* After a route's callback: 1 if hc is gone (upgraded) and freed. */
static int unbusy(struct http_conn *hc)
{
    hc->busy--;
    if (!hc->gone)
        return 0;
    if (!hc->busy && !hc->queued)
        pl_free(hc);
    return 1;
}

static void deferred_resume(void *data)
{
    struct http_conn *hc = data;
    hc->queued = 0;
    if (hc->gone) {
        if (!hc->busy)
            pl_free(hc);
        return;
    }
    if (hc->req && hc->req->drain && hc->state == C_SENDING) {
        void (*fn)(struct pl_http_req *) = hc->req->drain;
        hc->req->drain = NULL;
        fn(&hc->req->pub);
        return;
    }
    process(hc);
}

static void deferred_drain(void *data)
{
    deferred_resume(data);
}

static void resume_later(struct http_conn *hc)
{
    if (hc->queued || !hc->conn || hc->conn->closing)
        return;
    hc->queued = 1;
    pl_loop_defer(hc->conn->loop, deferred_resume, hc);
}

/* The answer to q is complete (queued, its file sent). */
static void complete(struct http_req *q)
{
    struct http_conn *hc = q->hc;
    q->done = 1;
    if (!hc) {
        req_free(q); /* the connection went first */
        return;
    }
    hc->req = NULL;
    int close_it = q->close || q->body_skipped || !q->pub.head ||
                   !q->pub.head->keep_alive;
    req_free(q);
    if (!hc->conn)
        return;
    if (close_it) {
        pl_conn_close(hc->conn);
        return;
    }
    hc->state = C_HEAD;
    hc->head_ms = 0;
    pl_conn_hold(hc->conn, 0);
    pl_conn_trim(hc->conn);
    arm(hc);
    if (pl_buf_str(&hc->in).len)
        resume_later(hc); /* a next request is already here */
}

static void on_conn_drain(struct pl_conn *c)
{
    struct http_conn *hc = c->data;
    struct http_req *q = hc->req;
    if (!q || hc->state != C_SENDING)
        return;
    if (q->file_fd >= 0 && !c->sf_left) {
        close(q->file_fd);
        q->file_fd = -1;
        complete(q);
        return;
    }
    if (q->drain) {
        void (*fn)(struct pl_http_req *) = q->drain;
        q->drain = NULL;
        fn(&q->pub);
    }
}

/* An answer made by the server itself, before or instead of a route:
 * status with a short text, and the end of the connection. */
static void fail_conn(struct http_conn *hc, int status)
{
    struct http_req *q = hc->req;
    if (!q) {
        q = pl_calloc(1, sizeof(*q));
        q->hc = hc;
        q->file_fd = -1;
        q->pub.conn = hc->conn;
        hc->req = q;
    } else if (q->started) {
        pl_conn_close(hc->conn);
        return;
    } else if (hc->state == C_BODY && q->pub.route && q->pub.route->on_abort) {
        /* The route saw the head (and maybe body bytes) and waits for
         * on_request: it will not come. */
        q->pub.route->on_abort(&q->pub);
    }
    q->close = 1;
    hc->state = C_HANDLER;
    pl_conn_hold(hc->conn, 1);
    pl_http_error(&q->pub, status, NULL);
}

/* The deadline of the state (see the file comment). */
static void on_timer(struct pl_timer *t)
{
    struct http_conn *hc = t->data;
    const struct http_settings *S = pl__http_settings();
    if (!hc->conn || hc->conn->closing)
        return;
    uint64_t now = now_ms(hc);
    if (hc->state == C_HEAD) {
        if (!hc->head_ms) {
            /* Not a byte of a request: keep-alive ran out, or a client
             * (a browser's preconnection) never spoke.  No answer. */
            pl_conn_close(hc->conn);
            return;
        }
        pl_log_info("http", "%s:%d: request head not complete in time",
                    hc->conn->ip, hc->conn->port);
        fail_conn(hc, 408);
        return;
    }
    if (hc->state == C_BODY) {
        if (hc->req && hc->req->paused)
            return; /* re-armed on resume */
        uint64_t due = hc->body_ms + (uint64_t)S->body_timeout * 1000;
        if (now < due) {
            pl_timer_start(loop_of(hc), &hc->timer, due - now);
            return;
        }
        pl_log_info("http", "%s:%d: request body stalled", hc->conn->ip,
                    hc->conn->port);
        fail_conn(hc, 408);
    }
}

/* Arms the deadline of the state. */
static void arm(struct http_conn *hc)
{
    const struct http_settings *S = pl__http_settings();
    uint64_t ms = 0, now = now_ms(hc);
    if (hc->state == C_HEAD) {
        if (hc->head_ms) {
            uint64_t due = hc->head_ms + (uint64_t)S->request_timeout * 1000;
            ms = due > now ? due - now : 1;
        } else {
            ms = (uint64_t)(hc->nreq ? S->keepalive_timeout
                                     : S->request_timeout) *
                 1000;
        }
    } else if (hc->state == C_BODY) {
        ms = (uint64_t)S->body_timeout * 1000;
    } else {
        pl_timer_stop(&hc->timer);
        return;
    }
    pl_timer_start(loop_of(hc), &hc->timer, ms);
}

/* Host (or the absolute-form target's authority) into q. */
static int set_host(struct http_req *q, struct pl_str authority)
{
    q->authority = authority;
    const char *p = authority.p;
    size_t n = authority.len;
    if (n && p[0] == '[') {
        const char *e = memchr(p, ']', n);
        n = e ? (size_t)(e - p) + 1 : n;
    } else if (n) {
        /* n 0: no Host (HTTP/1.0), and p may be NULL */
        const char *colon = memchr(p, ':', n);
        if (colon)
            n = (size_t)(colon - p);
    }
    if (n && p[n - 1] == '.')
        n--; /* a fully qualified name */
    if (n >= sizeof(q->host))
        return PL_EINVAL;
    for (size_t i = 0; i < n; i++)
        q->host[i] = (char)tolower((unsigned char)p[i]);
    q->host[n] = '\0';
    q->pub.host = n ? pl_host_find(q->host) : NULL;
    return PL_OK;
}

/* The head is here: the checks of http.h, the route's on_head.  Returns
 * 1 to go on reading the body, 0 when answered (or taken over). */
static int on_head_ready(struct http_conn *hc)
{
    const struct http_settings *S = pl__http_settings();
    const struct pl_http_request *h = &hc->parser.req;
    struct http_req *q = pl_calloc(1, sizeof(*q));
    q->hc = hc;
    q->file_fd = -1;
    q->pub.head = h;
    q->pub.conn = hc->conn;
    q->pub.secure = hc->conn->tls == PL_CONN_TLS || hc->listen->conf->secure;
    q->pub.is_head = pl_str_eq_c(h->method, "HEAD");
    hc->req = q;
    hc->nreq++;
    pl_stat_inc(http_requests);
    if (!hc->established) {
        hc->established = 1;
        pl_conn_established(hc->conn);
    }
    struct pl_str target = h->target;
    struct pl_str authority = h->host;
    if (!is_known_method(h->method)) {
        fail_conn(hc, 501);
        return 0;
    }
    if (h->form == PL_HTTP_AUTHORITY) {
        fail_conn(hc, 501); /* CONNECT: no tunnels here */
        return 0;
    }
    if (h->form == PL_HTTP_ASTERISK) {
        /* OPTIONS * (RFC 9110 §9.3.7): the server, not a resource. */
        pl_http_add_header(&q->pub, "Allow", "GET, HEAD, POST, OPTIONS");
        if (h->framing != PL_HTTP_NO_BODY)
            q->close = 1;
        hc->state = C_HANDLER;
        pl_conn_hold(hc->conn, 1);
        pl_http_respond(&q->pub, 204, NULL, NULL, 0);
        return 0;
    }
    if (h->form == PL_HTTP_ABSOLUTE) {
        /* scheme "://" authority path: the authority is the Host. */
        const char *s = memchr(target.p, ':', target.len);
        size_t off = s ? (size_t)(s - target.p) + 1 : target.len;
        if (off + 2 > target.len || target.p[off] != '/' ||
            target.p[off + 1] != '/') {
            fail_conn(hc, 400);
            return 0;
        }
        off += 2;
        size_t end = off;
        while (end < target.len && target.p[end] != '/' && target.p[end] != '?')
            end++;
        authority = (struct pl_str){target.p + off, end - off};
        target = end < target.len
                     ? (struct pl_str){target.p + end, target.len - end}
                     : PL_STR("/");
        if (authority.len == 0 || target.p[0] == '?') {
            fail_conn(hc, 400);
            return 0;
        }
    }
    if (set_host(q, authority) != PL_OK) {
        fail_conn(hc, 400);
        return 0;
    }
    q->path_buf = pl_malloc(target.len + 1);
    size_t plen;
    if (pl__http_path_decode(target.p, target.len, q->path_buf, target.len + 1,
                             &plen) != PL_OK) {
        fail_conn(hc, 400);
        return 0;
    }
    q->pub.path = (struct pl_str){q->path_buf, plen};
    const char *qm = memchr(target.p, '?', target.len);
    if (qm)
        q->pub.query = (struct pl_str){qm + 1, target.len -
                                                   (size_t)(qm + 1 - target.p)};
    q->pub.origin = pl_http_field(&q->pub, "Origin");
    const struct pl_http_route *rt = find_route(hc->listen, q->pub.path);
    q->pub.route = rt;
    /* Expect (RFC 9110 §10.1.1): only 100-continue is known. */
    struct pl_str expect = pl_http_field(&q->pub, "Expect");
    int want_continue = 0;
    if (expect.len) {
        if (expect.len == 12 && strncasecmp(expect.p, "100-continue", 12) == 0)
            want_continue = h->version == 11;
        else {
            fail_conn(hc, 417);
            return 0;
        }
    }
    if (!rt) {
        if (h->framing != PL_HTTP_NO_BODY)
            q->close = 1; /* the body is not read */
        hc->state = C_HANDLER;
        pl_conn_hold(hc->conn, 1);
        pl_http_error(&q->pub, 404, NULL);
        return 0;
    }
    int preflight = pl_str_eq_c(h->method, "OPTIONS");
    if (preflight) {
        if (h->framing != PL_HTTP_NO_BODY)
            q->close = 1;
        hc->state = C_HANDLER;
        pl_conn_hold(hc->conn, 1);
        struct pl_buf allow = {0};
        allow_list(rt->methods, &allow);
        struct pl_str acrm = pl_http_field(&q->pub,
                                           "Access-Control-Request-Method");
        int star;
        if (rt->cors && q->pub.origin.len && acrm.len) {
            /* A CORS preflight (Fetch standard, CORS protocol). */
            if (!origin_allowed(q, &star)) {
                pl_buf_reset(&allow);
                pl_http_error(&q->pub, 403, NULL);
                return 0;
            }
            pl_http_add_header(&q->pub, "Access-Control-Allow-Methods",
                               pl_buf_cstr(&allow));
            struct pl_str acrh =
                pl_http_field(&q->pub, "Access-Control-Request-Headers");
            if (acrh.len && acrh.len < 1024) {
                char v[1024];
                memcpy(v, acrh.p, acrh.len);
                v[acrh.len] = '\0';
                pl_http_add_header(&q->pub, "Access-Control-Allow-Headers", v);
            }
            pl_http_add_header(&q->pub, "Access-Control-Max-Age", "86400");
        } else {
            pl_http_add_header(&q->pub, "Allow", pl_buf_cstr(&allow));
        }
        pl_buf_reset(&allow);
        pl_http_respond(&q->pub, 204, NULL, NULL, 0);
        return 0;
    }
    if (!allows(rt->methods, h->method)) {
        struct pl_buf allow = {0};
        allow_list(rt->methods, &allow);
        pl_http_add_header(&q->pub, "Allow", pl_buf_cstr(&allow));
        pl_buf_reset(&allow);
        if (h->framing != PL_HTTP_NO_BODY)
            q->close = 1;
        hc->state = C_HANDLER;
        pl_conn_hold(hc->conn, 1);
        pl_http_error(&q->pub, 405, NULL);
        return 0;
    }
    uint64_t max = rt->max_body ? rt->max_body : (uint64_t)S->max_body;
    if (h->framing == PL_HTTP_LENGTH && h->content_length > max) {
        fail_conn(hc, 413);
        return 0;
    }
    if (rt->on_head) {
        hc->state = C_HANDLER; /* an answer from on_head is complete */
        pl_conn_hold(hc->conn, 1);
        /* Taken over, the body is not read: the connection cannot go on. */
        q->body_skipped = h->framing != PL_HTTP_NO_BODY;
        hc->busy++;
        int rc = rt->on_head(&q->pub);
        if (unbusy(hc))
            return 0; /* upgraded */
        if (rc == PL_HANDLED)
            return 0; /* answered, or to be answered later */
        q->body_skipped = 0;
        hc->state = C_HEAD;
        pl_conn_hold(hc->conn, 0);
        if (rc != PL_OK) {
            fail_conn(hc, rc >= 400 && rc < 600 ? rc : 500);
            return 0;
        }
    }
    if (want_continue && h->framing != PL_HTTP_NO_BODY) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        conn_write(hc, cont, sizeof(cont) - 1);
        count_status(100);
    }
    hc->state = C_BODY;
    hc->body_ms = now_ms(hc);
    arm(hc);
    return 1;
}

/* Input of process(): the connection's buffer, or bytes straight from a
 * read (on_data) while nothing is buffered, so body bytes are not copied
 * on their way to the route. */
struct input {
    const char *p; /* the read's bytes, or NULL: hc->in */
    size_t n, off; /* their length, how many were used */
};

static struct pl_str input_str(struct http_conn *hc, const struct input *x)
{
    if (!x->p)
        return pl_buf_str(&hc->in);
    return (struct pl_str){x->p + x->off, x->n - x->off};
}

static void input_used(struct http_conn *hc, struct input *x, size_t used)
{
    if (x->p)
        x->off += used;
    else
        pl_buf_consume(&hc->in, used);
}

/* What the read brought and is not used yet goes to the buffer: before
 * anything that may read it from there (an upgrade, the next request)
 * or wait. */
static void input_keep(struct http_conn *hc, struct input *x)
{
    if (x->p && x->off < x->n)
        pl_buf_append(&hc->in, x->p + x->off, x->n - x->off);
    x->p = NULL;
}

/* Parses what is buffered (or x), as far as the state allows. */
static void process_input(struct http_conn *hc, struct input *x)
{
    const struct http_settings *S = pl__http_settings();
    while (hc->conn && !hc->conn->closing) {
        if ((hc->state != C_HEAD && hc->state != C_BODY) ||
            (hc->state == C_BODY && hc->req && hc->req->paused)) {
            input_keep(hc, x);
            return;
        }
        struct pl_str in = input_str(hc, x);
        if (hc->state == C_HEAD && in.len && !hc->head_ms) {
            hc->head_ms = now_ms(hc);
            arm(hc);
        }
        size_t used = 0;
        struct pl_str body = {NULL, 0};
        enum pl_http_event ev = pl_http_parse(&hc->parser, in.p, in.len, &used,
                                              &body);
        input_used(hc, x, used);
        pl_stat_add(http_bytes_in, (unsigned long)used);
        switch (ev) {
        case PL_HTTP_MORE:
            if (!pl_buf_str(&hc->in).len)
                pl_buf_reset(&hc->in);
            return;
        case PL_HTTP_ERROR:
            fail_conn(hc, hc->parser.status ? hc->parser.status : 400);
            return;
        case PL_HTTP_HEAD:
            input_keep(hc, x);
            if (!on_head_ready(hc))
                return;
            break;
        case PL_HTTP_BODY: {
            struct http_req *q = hc->req;
            const struct pl_http_route *rt = q->pub.route;
            uint64_t max = rt->max_body ? rt->max_body : (uint64_t)S->max_body;
            q->pub.body_len += body.len;
            hc->body_ms = now_ms(hc);
            if (q->pub.body_len > max) {
                fail_conn(hc, 413);
                return;
            }
            if (rt->stream_body && rt->on_body) {
                hc->busy++;
                int rc = rt->on_body(&q->pub, body.p, body.len);
                if (unbusy(hc))
                    return;
                if (rc != PL_OK) {
                    hc->state = C_HANDLER; /* its own refusal: no abort */
                    fail_conn(hc, rc >= 400 && rc < 600 ? rc : 500);
                    return;
                }
            } else if (!rt->stream_body) {
                pl_buf_append(&q->pub.body, body.p, body.len);
            }
            break;
        }
        case PL_HTTP_DONE: {
            input_keep(hc, x);
            struct http_req *q = hc->req;
            if (!q)
                break; /* answered at its head already */
            hc->state = C_HANDLER;
            pl_timer_stop(&hc->timer);
            pl_conn_hold(hc->conn, 1);
            q->pub.route->on_request(&q->pub);
            return;
        }
        }
    }
}

static void process(struct http_conn *hc)
{
    struct input x = {NULL, 0, 0};
    process_input(hc, &x);
}

static void on_data(struct pl_conn *c, const char *p, size_t n)
{
    struct http_conn *hc = c->data;
    if (hc->state != C_HEAD && hc->state != C_BODY) {
        pl_buf_append(&hc->in, p, n);
        pl_conn_hold(c, 1);
        return;
    }
    if (pl_buf_str(&hc->in).len) {
        pl_buf_append(&hc->in, p, n);
        process(hc);
        return;
    }
    struct input x = {p, n, 0};
    process_input(hc, &x);
}

/* conn.h rbuf: a Content-Length body the route receives in place. */
static char *on_rbuf(struct pl_conn *c, size_t *room)
{
    struct http_conn *hc = c->data;
    struct http_req *q = hc->req;
    if (hc->state != C_BODY || !q || q->paused || pl_buf_str(&hc->in).len ||
        !q->pub.route->body_buf)
        return NULL;
    uint64_t left = pl_http_parse_body_left(&hc->parser);
    if (!left)
        return NULL;
    char *b = q->pub.route->body_buf(&q->pub, room);
    if (b && *room > left)
        *room = (size_t)left;
    return b;
}

static void unlink_conn(struct http_conn *hc)
{
    if (hc->prev)
        hc->prev->next = hc->next;
    else
        conns = hc->next;
    if (hc->next)
        hc->next->prev = hc->prev;
    hc->prev = hc->next = NULL;
    nconns--;
}

static void on_closed(struct pl_conn *c)
{
    struct http_conn *hc = c->data;
    struct http_req *q = hc->req;
    hc->conn = NULL;
    pl_timer_stop(&hc->timer);
    unlink_conn(hc);
    if (q) {
        hc->req = NULL;
        q->hc = NULL;
        q->pub.conn = NULL;
        if (!q->done && q->pub.route && q->pub.route->on_abort &&
            (hc->state == C_HANDLER || hc->state == C_SENDING ||
             hc->state == C_BODY))
            q->pub.route->on_abort(&q->pub);
        req_free(q);
    }
    pl_http_parser_free(&hc->parser);
    pl_buf_reset(&hc->in);
    if (hc->queued || hc->busy)
        hc->gone = 1; /* deferred_resume or unbusy frees it */
    else
        pl_free(hc);
}

/* On the core's deadlines (handshake): the connection just ends. */
static void on_timeout(struct pl_conn *c, int which)
{
    (void)which;
    pl_conn_close(c);
}

static const struct pl_conn_ops conn_ops = {
    .data = on_data,
    .closed = on_closed,
    .timeout = on_timeout,
    .rbuf = on_rbuf,
};

static int http_accept(struct pl_listen *l, struct pl_conn *c)
{
    const struct http_settings *S = pl__http_settings();
    struct http_conn *hc = pl_calloc(1, sizeof(*hc));
    hc->conn = c;
    hc->listen = l;
    struct pl_http_limits lim = {
        .max_line = (size_t)S->max_line,
        .max_header_bytes = (size_t)S->max_header_bytes,
        .max_headers = (unsigned)S->max_headers,
        .max_body = UINT64_MAX, /* per route: checked here */
    };
    pl_http_parser_init(&hc->parser, &lim);
    pl_timer_init(&hc->timer, on_timer, hc);
    hc->next = conns;
    if (conns)
        conns->prev = hc;
    conns = hc;
    nconns++;
    pl_conn_set_handlers(c, &conn_ops, hc);
    pl_conn_set_drain(c, on_conn_drain);
    /* Our deadlines replace the core's idle one (an entry's still wins). */
    pl_conn_set_idle(c, 0, 0);
    hc->state = C_HEAD;
    arm(hc);
    return PL_OK;
}

static void http_refuse(struct pl_listen *l, struct pl_conn *c, int why)
{
    (void)l;
    (void)why;
    char date[40], buf[256];
    pl__http_format_date(time(NULL), date, sizeof(date));
    int n = snprintf(buf, sizeof(buf),
                     "HTTP/1.1 503 Service Unavailable\r\nDate: %s\r\n"
                     "Content-Type: text/plain; charset=utf-8\r\n"
                     "Content-Length: 20\r\nRetry-After: 10\r\n"
                     "Connection: close\r\n\r\nService Unavailable\n",
                     date);
    pl_conn_write(c, buf, (size_t)n);
    count_status(503);
}

/* ---- upgrade ---- */

/* Leftover bytes for the new protocol, delivered after the hand-over. */
struct leftover {
    struct pl_conn *conn; /* alive: its close is deferred after this */
    size_t n;             /* bytes */
    char p[];             /* the bytes */
};

static void deliver_leftover(void *data)
{
    struct leftover *lo = data;
    struct pl_conn *c = lo->conn;
    if (!c->closing) {
        pl_conn_hold(c, 0);
        if (lo->n && c->ops->data)
            c->ops->data(c, lo->p, lo->n);
    }
    pl_free(lo);
}

struct pl_conn *pl_http_upgrade(struct pl_http_req *r,
                                const struct pl_conn_ops *ops, void *data)
{
    struct http_req *q = Q(r);
    struct http_conn *hc = q->hc;
    pl_assert(hc && hc->conn && !q->started);
    struct pl_conn *c = hc->conn;
    struct pl_buf b = {0};
    pl_buf_append_str(&b, "HTTP/1.1 101 Switching Protocols\r\n");
    struct pl_str h = pl_buf_str(&q->hdrs);
    if (h.len)
        pl_buf_append(&b, h.p, h.len);
    pl_buf_append_str(&b, "\r\n");
    struct pl_str s = pl_buf_str(&b);
    conn_write(hc, s.p, s.len);
    pl_buf_reset(&b);
    count_status(101);
    /* Bytes after the request (its body included if it was not read). */
    struct pl_str rest = pl_buf_str(&hc->in);
    struct leftover *lo = pl_malloc(sizeof(*lo) + rest.len);
    lo->conn = c;
    lo->n = rest.len;
    if (rest.len)
        memcpy(lo->p, rest.p, rest.len);
    pl_conn_hold(c, 1);
    pl_conn_set_drain(c, NULL);
    pl_conn_set_handlers(c, ops, data);
    if (c->closing)
        pl_free(lo); /* its end is already on the way: nothing to give */
    else
        pl_loop_defer(c->loop, deliver_leftover, lo);
    hc->conn = NULL;
    hc->req = NULL;
    pl_timer_stop(&hc->timer);
    unlink_conn(hc);
    q->hc = NULL;
    req_free(q);
    pl_http_parser_free(&hc->parser);
    pl_buf_reset(&hc->in);
    if (hc->queued || hc->busy)
        hc->gone = 1;
    else
        pl_free(hc);
    return c;
}

/* ---- the front end's side ---- */

unsigned long pl__http_conn_count(void)
{
    return nconns;
}

void pl__http_conns_close(void)
{
    for (struct http_conn *hc = conns; hc; hc = hc->next)
        if (hc->conn)
            pl_conn_close(hc->conn);
}

const struct pl_protocol pl__http_protocol = {
    .name = "http",
    .summary = "HTTP/1.1 (RFC 9112): WebSocket, BOSH, uploads, discovery, "
               "files",
    .transports = PL_TRANSPORT_TCP,
    .default_port = 5280,
    .default_tls_port = 5281,
    .listen_by_default = 1,
    .accept = http_accept,
    .refuse = http_refuse,
};

int pl__http_route_served(const struct pl_http_req *r, const char *path)
{
    const struct http_req *q = (const struct http_req *)r;
    if (!q->hc)
        return 0;
    const struct pl_http_route *rt = find_route(q->hc->listen, pl_str_c(path));
    return rt != NULL;
}

int pl__http_accept_fd(int fd, int tls_mode)
{
    return pl__listen_accept_fd("http", tls_mode, fd);
}
