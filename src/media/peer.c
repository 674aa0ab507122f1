/*
 * peer.c - a client serving the files of its cache to other clients
 * (peer.h, doc/media.md "Peers"): HTTP/1.1 GET and HEAD of
 * /m/<sha256 hex>, one bytes= Range, keep-alive, for requests carrying a
 * token the server issued (pl_media_token_check with the file's key).
 *
 * One thread, one poll loop, plain non-blocking sockets.  Each
 * connection reads a request head (pl_peer_parse_request, at most
 * PL_PEER_MAX_HEAD bytes), answers it from the file opened for that
 * request (a file removed with pl_peer_remove takes no new requests; one
 * being sent finishes), sends the body with sendfile as the socket takes
 * it, then reads the next request.  Past max_conns a connection gets
 * 503 with Retry-After: 1 and is closed.  The rate cap is a token bucket
 * over all connections: when it is empty no connection writes a body
 * byte, and poll sleeps until it refills.  A connection idle (or slow to
 * send its head) for idle_ms is closed.
 *
 * The table of files is shared with the caller's threads under a mutex;
 * so are the stats.  pl_peer_stop wakes the loop through a pipe.
 *
 * Only libc (and token.c, libcrypto): the clients link this file.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/str.h"
#include "media/peer.h"

#define OUT_CAP 1024       /* a response head */
#define CHUNK (256 * 1024) /* body bytes per sendfile at most */
#define EXTRA_CONNS 16     /* sockets held past max_conns to say 503 */
#define DRAIN_MS 1000      /* reading after our last answer, before close */

/* ------------------------------------------------------------ parser */

static int is_tchar(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
           (c >= 'A' && c <= 'Z') || (c && strchr("!#$%&'*+-.^_`|~", c));
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Whether s (n bytes) is name, ignoring case. */
static int eq(const char *s, size_t n, const char *name)
{
    return n == strlen(name) && !strncasecmp(s, name, n);
}

/* Whether the comma-separated list s (n bytes) has the token t. */
static int list_has(const char *s, size_t n, const char *t)
{
    size_t i = 0;
    while (i < n) {
        while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == ','))
            i++;
        size_t b = i;
        while (i < n && s[i] != ',')
            i++;
        size_t e = i;
        while (e > b && (s[e - 1] == ' ' || s[e - 1] == '\t'))
            e--;
        if (e > b && eq(s + b, e - b, t))
            return 1;
    }
    return 0;
}

/* A decimal number of at most 19 digits into *v; 0 or -1. */
static int number(const char *s, size_t n, uint64_t *v)
{
    if (n == 0 || n > 19)
        return -1;
    uint64_t x = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        x = x * 10 + (uint64_t)(s[i] - '0');
    }
    *v = x;
    return 0;
}

/* "bytes=a-b", "bytes=a-" or "bytes=-n" (RFC 9110 §14.1.2) into r; any
 * other value (several ranges, another unit, garbage) leaves no range. */
static void parse_range(const char *s, size_t n, struct pl_peer_req *r)
{
    r->range = PL_PEER_RANGE_NONE;
    if (n < 6 || strncasecmp(s, "bytes=", 6) != 0)
        return;
    s += 6, n -= 6;
    while (n && (*s == ' ' || *s == '\t'))
        s++, n--;
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        n--;
    const char *dash = memchr(s, '-', n);
    if (!dash)
        return;
    size_t a = (size_t)(dash - s), b = n - a - 1;
    uint64_t x, y;
    if (a == 0) {
        if (number(dash + 1, b, &x) < 0)
            return;
        r->range = PL_PEER_RANGE_SUFFIX;
        r->suffix = x;
    } else if (number(s, a, &x) == 0) {
        if (b == 0)
            y = UINT64_MAX;
        else if (number(dash + 1, b, &y) < 0 || y < x)
            return;
        r->range = PL_PEER_RANGE_SPAN;
        r->first = x;
        r->last = y;
    }
}

/* The query of the target: the first token= parameter. */
static void query_token(const char *q, size_t n, struct pl_peer_req *r)
{
    struct pl_str v;
    if (pl_query_param((struct pl_str){q, n}, "token", &v)) {
        r->token = v.p;
        r->token_len = v.len;
    }
}

static void parse_target(const char *t, size_t n, struct pl_peer_req *r)
{
    /* absolute-form (RFC 9112 §3.2.2): skip scheme and authority */
    if (n > 7 && (!strncasecmp(t, "http://", 7) ||
                  (n > 8 && !strncasecmp(t, "https://", 8)))) {
        const char *p = memchr(t + 7, '/', n - 7);
        if (!p)
            return;
        n -= (size_t)(p - t);
        t = p;
    }
    const char *q = memchr(t, '?', n);
    size_t plen = q ? (size_t)(q - t) : n;
    if (q)
        query_token(q + 1, n - plen - 1, r);
    if (plen != 3 + 64 || memcmp(t, "/m/", 3) != 0)
        return;
    for (size_t i = 0; i < 32; i++) {
        int h = hexval(t[3 + 2 * i]), l = hexval(t[4 + 2 * i]);
        if (h < 0 || l < 0)
            return;
        r->sha256[i] = (unsigned char)(h << 4 | l);
    }
    r->is_media = 1;
}

long pl_peer_parse_request(const char *buf, size_t len, struct pl_peer_req *r)
{
    memset(r, 0, sizeof(*r));
    size_t start = 0; /* RFC 9112 §2.2: empty lines before a request */
    while (start < len && start < 4 &&
           (buf[start] == '\r' || buf[start] == '\n'))
        start++;
    size_t lim = len < PL_PEER_MAX_HEAD ? len : PL_PEER_MAX_HEAD;
    size_t end = 0; /* just past the empty line */
    for (size_t i = start; i < lim; i++)
        if (buf[i] == '\n' && i > start) {
            if (i + 1 < lim && buf[i + 1] == '\n') {
                end = i + 2;
                break;
            }
            if (i + 2 < lim && buf[i + 1] == '\r' && buf[i + 2] == '\n') {
                end = i + 3;
                break;
            }
        }
    if (!end)
        return len >= PL_PEER_MAX_HEAD ? -431 : 0;

    /* request-line: method SP target SP HTTP/1.x */
    const char *p = buf + start, *e = buf + end;
    const char *eol = memchr(p, '\n', (size_t)(e - p));
    size_t ll = (size_t)(eol - p);
    if (ll && p[ll - 1] == '\r')
        ll--;
    const char *sp1 = memchr(p, ' ', ll);
    if (!sp1 || sp1 == p)
        return -400;
    for (const char *c = p; c < sp1; c++)
        if (!is_tchar((unsigned char)*c))
            return -400;
    const char *t = sp1 + 1;
    const char *sp2 = memchr(t, ' ', ll - (size_t)(t - p));
    if (!sp2 || sp2 == t || (size_t)(p + ll - sp2 - 1) != 8)
        return -400;
    for (const char *c = t; c < sp2; c++)
        if ((unsigned char)*c <= ' ' || *c == 0x7f)
            return -400;
    if (*t != '/' && strncasecmp(t, "http://", 7) != 0 &&
        strncasecmp(t, "https://", 8) != 0)
        return -400;
    const char *v = sp2 + 1;
    if (memcmp(v, "HTTP/1.", 7) != 0 || (v[7] != '0' && v[7] != '1'))
        return -400;
    int http11 = v[7] == '1';
    size_t ml = (size_t)(sp1 - p);
    r->method = eq(p, ml, "GET") && !memcmp(p, "GET", 3)     ? PL_PEER_GET
                : eq(p, ml, "HEAD") && !memcmp(p, "HEAD", 4) ? PL_PEER_HEAD
                                                             : PL_PEER_OTHER;
    parse_target(t, (size_t)(sp2 - t), r);

    /* fields */
    int host = 0, conn_close = 0, conn_keep = 0, nrange = 0;
    const char *range = NULL, *auth = NULL;
    size_t range_len = 0, auth_len = 0;
    p = eol + 1;
    for (;;) {
        eol = memchr(p, '\n', (size_t)(e - p));
        ll = (size_t)(eol - p);
        if (ll && p[ll - 1] == '\r')
            ll--;
        if (ll == 0)
            break;
        const char *colon = memchr(p, ':', ll);
        if (!colon || colon == p) /* also obs-fold: a line starting blank */
            return -400;
        for (const char *c = p; c < colon; c++)
            if (!is_tchar((unsigned char)*c))
                return -400;
        size_t nl = (size_t)(colon - p);
        const char *val = colon + 1, *vend = p + ll;
        while (val < vend && (*val == ' ' || *val == '\t'))
            val++;
        while (vend > val && (vend[-1] == ' ' || vend[-1] == '\t'))
            vend--;
        for (const char *c = val; c < vend; c++)
            if ((unsigned char)*c < ' ' && *c != '\t')
                return -400;
        size_t vl = (size_t)(vend - val);
        if (eq(p, nl, "host")) {
            if (host++)
                return -400;
        } else if (eq(p, nl, "connection")) {
            conn_close |= list_has(val, vl, "close");
            conn_keep |= list_has(val, vl, "keep-alive");
        } else if (eq(p, nl, "range")) {
            range = val, range_len = vl, nrange++;
        } else if (eq(p, nl, "authorization")) {
            auth = val, auth_len = vl;
        } else if (eq(p, nl, "transfer-encoding")) {
            return -400;
        } else if (eq(p, nl, "content-length")) {
            uint64_t cl;
            if (number(val, vl, &cl) < 0 || cl != 0)
                return -400;
        }
        p = eol + 1;
    }
    if (http11 && !host) /* RFC 9112 §3.2 */
        return -400;
    r->keep_alive = http11 ? !conn_close : conn_keep && !conn_close;
    if (nrange == 1)
        parse_range(range, range_len, r);
    if (!r->token && auth && auth_len > 7 && !strncasecmp(auth, "Bearer ", 7)) {
        const char *a = auth + 7;
        while (a < auth + auth_len && *a == ' ')
            a++;
        r->token = a;
        r->token_len = (size_t)(auth + auth_len - a);
    }
    return (long)end;
}

int pl_peer_resolve_range(const struct pl_peer_req *r, uint64_t size,
                          uint64_t *off, uint64_t *n)
{
    if (r->range == PL_PEER_RANGE_SPAN) {
        if (r->first >= size)
            return 416;
        uint64_t last = r->last >= size ? size - 1 : r->last;
        *off = r->first;
        *n = last - r->first + 1;
        return 206;
    }
    if (r->range == PL_PEER_RANGE_SUFFIX) {
        if (r->suffix == 0 || size == 0)
            return 416;
        *n = r->suffix > size ? size : r->suffix;
        *off = size - *n;
        return 206;
    }
    *off = 0;
    *n = size;
    return 200;
}

/* ------------------------------------------------------------ server */

struct entry {
    unsigned char sha256[32];
    unsigned char key[32];
    char *path;
};

enum {
    C_READ,
    C_WRITE,
    C_DRAIN
};

struct conn {
    int fd;
    int state;
    int busy;        /* past max_conns: answer 503 and close */
    int close_after; /* close once this answer is out */
    long long last;  /* ms of the last progress */
    char in[PL_PEER_MAX_HEAD];
    size_t inlen;
    char out[OUT_CAP];
    size_t outlen, outoff;
    int file;      /* open for the body, or -1 */
    off_t off;     /* next body byte */
    uint64_t left; /* body bytes still to send */
};

struct pl_peer {
    struct pl_peer_opts o;
    int lfd, port;
    int wake[2];
    pthread_t thread;
    pthread_mutex_t mu;
    struct entry *files;
    size_t nfiles, capfiles;
    struct pl_peer_stats st;
    atomic_int stop;
    struct conn **conns;
    size_t nconns, capconns;
    double tokens; /* the rate bucket */
    double burst;
    long long refilled;
};

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    return fl < 0 ? -1 : fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

static void stat_add(struct pl_peer *p, uint64_t *field, uint64_t n)
{
    pthread_mutex_lock(&p->mu);
    *field += n;
    pthread_mutex_unlock(&p->mu);
}

/* Looks sha256 up: its key and a copy of its path (malloc), or NULL. */
static char *lookup(struct pl_peer *p, const unsigned char *sha256,
                    unsigned char *key)
{
    char *path = NULL;
    pthread_mutex_lock(&p->mu);
    for (size_t i = 0; i < p->nfiles; i++)
        if (!memcmp(p->files[i].sha256, sha256, 32)) {
            memcpy(key, p->files[i].key, 32);
            path = strdup(p->files[i].path);
            break;
        }
    pthread_mutex_unlock(&p->mu);
    return path;
}

static const char *reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 206: return "Partial Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 416: return "Range Not Satisfiable";
    case 431: return "Request Header Fields Too Large";
    case 503: return "Service Unavailable";
    default: return "Error";
    }
}

/* Writes the head of an answer into c->out; extra: more fields (each
 * ending in CRLF) or "". */
static void head(struct conn *c, int status, uint64_t length, const char *extra)
{
    char date[64];
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
    int n = snprintf(c->out, sizeof(c->out),
                     "HTTP/1.1 %d %s\r\nDate: %s\r\nServer: parley-peer\r\n"
                     "Content-Length: %llu\r\nAccept-Ranges: bytes\r\n"
                     "%sConnection: %s\r\n\r\n",
                     status, reason(status), date, (unsigned long long)length,
                     extra, c->close_after ? "close" : "keep-alive");
    c->outlen = n > 0 && (size_t)n < sizeof(c->out) ? (size_t)n : 0;
    c->outoff = 0;
}

/* An answer without a file: a short text body (none for HEAD). */
static void simple(struct conn *c, int status, int is_head, const char *extra)
{
    char body[64];
    int bl = snprintf(body, sizeof(body), "%s\n", reason(status));
    head(c, status, (uint64_t)bl, extra);
    if (!is_head && c->outlen + (size_t)bl < sizeof(c->out)) {
        memcpy(c->out + c->outlen, body, (size_t)bl);
        c->outlen += (size_t)bl;
    }
    c->state = C_WRITE;
}

/* Answers the request head parsed into r. */
static void answer(struct pl_peer *p, struct conn *c, long rc,
                   const struct pl_peer_req *r)
{
    c->close_after = 0;
    if (rc < 0) {
        c->close_after = 1;
        simple(c, (int)-rc, 0, "");
        return;
    }
    int is_head = r->method == PL_PEER_HEAD;
    c->close_after = !r->keep_alive;
    if (c->busy) {
        c->close_after = 1;
        stat_add(p, &p->st.busy, 1);
        simple(c, 503, is_head, "Retry-After: 1\r\n");
        return;
    }
    if (r->method == PL_PEER_OTHER) {
        simple(c, 405, 0, "Allow: GET, HEAD\r\n");
        return;
    }
    unsigned char key[32];
    char *path = r->is_media ? lookup(p, r->sha256, key) : NULL;
    if (!path) {
        simple(c, 404, is_head, "");
        return;
    }
    if (!r->token || !r->token_len) {
        free(path);
        stat_add(p, &p->st.refused, 1);
        simple(c, 401, is_head,
               "WWW-Authenticate: Bearer realm=\"parley media\"\r\n");
        return;
    }
    int trc = pl_media_token_check(key, r->sha256, r->token, r->token_len,
                                   (int64_t)time(NULL), NULL);
    if (trc != PL_MEDIA_OK) {
        free(path);
        stat_add(p, &p->st.refused, 1);
        simple(c, 403, is_head, "");
        return;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    free(path);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode)) {
        if (fd >= 0)
            close(fd);
        simple(c, 404, is_head, "");
        return;
    }
    uint64_t size = (uint64_t)sb.st_size, off = 0, n = 0;
    int status = pl_peer_resolve_range(r, size, &off, &n);
    char extra[160];
    if (status == 416) {
        close(fd);
        snprintf(extra, sizeof(extra), "Content-Range: bytes */%llu\r\n",
                 (unsigned long long)size);
        simple(c, 416, is_head, extra);
        return;
    }
    if (status == 206)
        snprintf(extra, sizeof(extra),
                 "Content-Type: application/octet-stream\r\n"
                 "Content-Range: bytes %llu-%llu/%llu\r\n",
                 (unsigned long long)off, (unsigned long long)(off + n - 1),
                 (unsigned long long)size);
    else
        snprintf(extra, sizeof(extra),
                 "Content-Type: application/octet-stream\r\n");
    head(c, status, n, extra);
    stat_add(p, &p->st.requests, 1);
    if (is_head || n == 0) {
        close(fd);
    } else {
        c->file = fd;
        c->off = (off_t)off;
        c->left = n;
    }
    c->state = C_WRITE;
}

static void conn_free(struct conn *c)
{
    if (c->file >= 0)
        close(c->file);
    close(c->fd);
    free(c);
}

/* Tries to parse and answer what c holds; 0 if it waits for more. */
static int take_request(struct pl_peer *p, struct conn *c)
{
    struct pl_peer_req r;
    long rc = pl_peer_parse_request(c->in, c->inlen, &r);
    if (rc == 0)
        return 0;
    answer(p, c, rc, &r);
    if (rc > 0) {
        memmove(c->in, c->in + rc, c->inlen - (size_t)rc);
        c->inlen -= (size_t)rc;
    } else {
        c->inlen = 0;
    }
    return 1;
}

static void refill(struct pl_peer *p, long long now)
{
    if (!p->o.rate)
        return;
    p->tokens += (double)(now - p->refilled) * (double)p->o.rate / 1000.0;
    if (p->tokens > p->burst)
        p->tokens = p->burst;
    p->refilled = now;
}

/* Sends what c has to send; -1 to close it. */
static int do_write(struct pl_peer *p, struct conn *c, long long now)
{
    while (c->outoff < c->outlen) {
        ssize_t w = send(c->fd, c->out + c->outoff, c->outlen - c->outoff,
                         MSG_NOSIGNAL);
        if (w < 0)
            return errno == EAGAIN || errno == EINTR ? 0 : -1;
        c->outoff += (size_t)w;
        c->last = now;
    }
    while (c->left) {
        size_t n = c->left > CHUNK ? CHUNK : (size_t)c->left;
        if (p->o.rate) {
            refill(p, now);
            if (p->tokens < 1)
                return 0;
            if ((double)n > p->tokens)
                n = (size_t)p->tokens;
        }
        ssize_t w = sendfile(c->fd, c->file, &c->off, n);
        if (w < 0)
            return errno == EAGAIN || errno == EINTR ? 0 : -1;
        if (w == 0) /* the file shrank under us */
            return -1;
        c->left -= (uint64_t)w;
        c->last = now;
        if (p->o.rate)
            p->tokens -= (double)w;
        stat_add(p, &p->st.bytes, (uint64_t)w);
        if ((size_t)w < n)
            return 0;
    }
    if (c->file >= 0) {
        close(c->file);
        c->file = -1;
    }
    if (c->close_after) {
        shutdown(c->fd, SHUT_WR);
        c->state = C_DRAIN;
        c->last = now;
        return 0;
    }
    c->state = C_READ;
    c->last = now;
    /* a pipelined request may be waiting already */
    if (take_request(p, c))
        return do_write(p, c, now);
    return 0;
}

/* Reads from c; -1 to close it. */
static int do_read(struct pl_peer *p, struct conn *c, long long now)
{
    if (c->state == C_DRAIN) {
        char sink[4096];
        ssize_t n = recv(c->fd, sink, sizeof(sink), 0);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
            return -1;
        return 0;
    }
    if (c->state != C_READ || c->inlen >= sizeof(c->in))
        return 0;
    ssize_t n = recv(c->fd, c->in + c->inlen, sizeof(c->in) - c->inlen, 0);
    if (n == 0)
        return -1;
    if (n < 0)
        return errno == EAGAIN || errno == EINTR ? 0 : -1;
    c->inlen += (size_t)n;
    if (take_request(p, c))
        return do_write(p, c, now);
    return 0;
}

static void accept_all(struct pl_peer *p, long long now)
{
    for (;;) {
        int fd = accept4(p->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;
        size_t active = 0;
        for (size_t i = 0; i < p->nconns; i++)
            active += !p->conns[i]->busy;
        if (p->nconns >= (size_t)p->o.max_conns + EXTRA_CONNS) {
            close(fd);
            stat_add(p, &p->st.busy, 1);
            continue;
        }
        if (p->nconns == p->capconns) {
            size_t cap = p->capconns ? 2 * p->capconns : 8;
            struct conn **nc = realloc(p->conns, cap * sizeof(*nc));
            if (!nc) {
                close(fd);
                continue;
            }
            p->conns = nc;
            p->capconns = cap;
        }
        struct conn *c = calloc(1, sizeof(*c));
        if (!c) {
            close(fd);
            continue;
        }
        c->fd = fd;
        c->file = -1;
        c->state = C_READ;
        c->last = now;
        c->busy = active >= (size_t)p->o.max_conns;
        p->conns[p->nconns++] = c;
    }
}

static void *run(void *arg)
{
    struct pl_peer *p = arg;
    struct pollfd *pfd = NULL;
    size_t cappfd = 0;
    size_t rot = 0;
    /* sendfile to a socket the other side closed raises SIGPIPE in this
     * thread: keep it blocked here (the error comes back as EPIPE) */
    sigset_t pipe_set;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, NULL);
    while (!atomic_load(&p->stop)) {
        long long now = now_ms();
        refill(p, now);
        int bucket_empty = p->o.rate && p->tokens < 1;
        if (cappfd < p->nconns + 2) {
            size_t cap = p->nconns + 16;
            struct pollfd *np = realloc(pfd, cap * sizeof(*np));
            if (!np) {
                poll(NULL, 0, 100);
                continue;
            }
            pfd = np;
            cappfd = cap;
        }
        pfd[0] = (struct pollfd){.fd = p->wake[0], .events = POLLIN};
        pfd[1] = (struct pollfd){.fd = p->lfd, .events = POLLIN};
        long timeout = p->o.idle_ms;
        for (size_t i = 0; i < p->nconns; i++) {
            struct conn *c = p->conns[i];
            short ev = 0;
            if (c->state == C_READ || c->state == C_DRAIN)
                ev = POLLIN;
            else if (c->outoff < c->outlen || !bucket_empty)
                ev = POLLOUT;
            else
                c->last = now; /* waiting for the bucket is not idling */
            pfd[2 + i] = (struct pollfd){.fd = c->fd, .events = ev};
            long left = (c->state == C_DRAIN ? DRAIN_MS : p->o.idle_ms) -
                        (long)(now - c->last);
            if (left < timeout)
                timeout = left < 0 ? 0 : left;
        }
        if (bucket_empty) {
            double want = p->burst < 4096 ? p->burst : 4096;
            long ms = (long)((want - p->tokens) * 1000.0 / (double)p->o.rate);
            if (ms < 1)
                ms = 1;
            if (ms < timeout)
                timeout = ms;
        }
        size_t n = p->nconns;
        int rc = poll(pfd, n + 2, (int)timeout);
        if (rc < 0 && errno != EINTR)
            break;
        now = now_ms();
        if (rc > 0 && (pfd[0].revents & POLLIN)) {
            char b[64];
            while (read(p->wake[0], b, sizeof(b)) > 0)
                ;
        }
        /* rotate the order so that a small bucket is shared fairly */
        rot = n ? (rot + 1) % n : 0;
        for (size_t k = 0; k < n; k++) {
            size_t i = (k + rot) % n;
            struct conn *c = p->conns[i];
            short re = pfd[2 + i].revents;
            int bad = 0;
            if (re & (POLLIN | POLLHUP | POLLERR))
                bad = do_read(p, c, now) < 0;
            if (!bad && c->state == C_WRITE && (re & (POLLOUT | POLLERR)))
                bad = do_write(p, c, now) < 0;
            if (!bad && c->state == C_WRITE && bucket_empty && c->left)
                bad = do_write(p, c, now) < 0;
            long lim = c->state == C_DRAIN ? DRAIN_MS : p->o.idle_ms;
            if (bad || now - c->last >= lim) {
                conn_free(c);
                p->conns[i] = NULL;
            }
        }
        size_t j = 0;
        for (size_t i = 0; i < n; i++)
            if (p->conns[i])
                p->conns[j++] = p->conns[i];
        p->nconns = j;
        if (rc > 0 && (pfd[1].revents & POLLIN))
            accept_all(p, now);
        pthread_mutex_lock(&p->mu);
        p->st.conns = 0;
        for (size_t i = 0; i < p->nconns; i++)
            p->st.conns += !p->conns[i]->busy;
        pthread_mutex_unlock(&p->mu);
    }
    free(pfd);
    return NULL;
}

/* "ADDR:PORT" or "[v6]:PORT" into host and port. */
static int split_listen(const char *s, char *host, size_t hcap, char *port,
                        size_t pcap)
{
    const char *colon;
    if (*s == '[') {
        const char *rb = strchr(s, ']');
        if (!rb || rb[1] != ':')
            return -1;
        snprintf(host, hcap, "%.*s", (int)(rb - s - 1), s + 1);
        colon = rb + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon)
            return -1;
        snprintf(host, hcap, "%.*s", (int)(colon - s), s);
    }
    snprintf(port, pcap, "%s", colon + 1);
    return *port ? 0 : -1;
}

struct pl_peer *pl_peer_start(const struct pl_peer_opts *o, char *err,
                              size_t errlen)
{
    char host[256], port[32];
    if (split_listen(o->listen ? o->listen : "127.0.0.1:0", host, sizeof(host),
                     port, sizeof(port)) < 0) {
        snprintf(err, errlen, "listen address %s: not ADDR:PORT",
                 o->listen ? o->listen : "");
        return NULL;
    }
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    int gai = getaddrinfo(*host ? host : NULL, port, &hints, &ai);
    if (gai) {
        snprintf(err, errlen, "listen address %s: %s", o->listen,
                 gai_strerror(gai));
        return NULL;
    }
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd >= 0)
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (fd < 0 || bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 ||
        listen(fd, 64) < 0 || nonblock(fd) < 0) {
        snprintf(err, errlen, "listen on %s: %s", o->listen, strerror(errno));
        if (fd >= 0)
            close(fd);
        freeaddrinfo(ai);
        return NULL;
    }
    freeaddrinfo(ai);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    getsockname(fd, (struct sockaddr *)&ss, &sl);
    struct pl_peer *p = calloc(1, sizeof(*p));
    if (!p) {
        close(fd);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    p->o = *o;
    p->o.listen = NULL;
    if (p->o.max_conns <= 0)
        p->o.max_conns = 4;
    if (p->o.idle_ms <= 0)
        p->o.idle_ms = 15000;
    if (p->o.rate) {
        p->burst = (double)p->o.rate / 10;
        double floor = p->o.rate < 8192 ? (double)p->o.rate : 8192;
        if (p->burst < floor)
            p->burst = floor;
        p->tokens = p->burst;
    }
    p->refilled = now_ms();
    p->lfd = fd;
    p->port = ss.ss_family == AF_INET6
                  ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                  : ntohs(((struct sockaddr_in *)&ss)->sin_port);
    pthread_mutex_init(&p->mu, NULL);
    if (pipe2(p->wake, O_NONBLOCK | O_CLOEXEC) < 0 ||
        pthread_create(&p->thread, NULL, run, p) != 0) {
        snprintf(err, errlen, "peer thread: %s", strerror(errno));
        close(fd);
        pthread_mutex_destroy(&p->mu);
        free(p);
        return NULL;
    }
    return p;
}

int pl_peer_port(const struct pl_peer *p)
{
    return p->port;
}

int pl_peer_add(struct pl_peer *p, const unsigned char *sha256,
                const unsigned char *file_key, const char *path)
{
    char *copy = strdup(path);
    if (!copy)
        return -1;
    pthread_mutex_lock(&p->mu);
    for (size_t i = 0; i < p->nfiles; i++)
        if (!memcmp(p->files[i].sha256, sha256, 32)) {
            free(p->files[i].path);
            p->files[i].path = copy;
            memcpy(p->files[i].key, file_key, 32);
            pthread_mutex_unlock(&p->mu);
            return 0;
        }
    if (p->nfiles == p->capfiles) {
        size_t cap = p->capfiles ? 2 * p->capfiles : 8;
        struct entry *nf = realloc(p->files, cap * sizeof(*nf));
        if (!nf) {
            pthread_mutex_unlock(&p->mu);
            free(copy);
            return -1;
        }
        p->files = nf;
        p->capfiles = cap;
    }
    struct entry *e = &p->files[p->nfiles++];
    memcpy(e->sha256, sha256, 32);
    memcpy(e->key, file_key, 32);
    e->path = copy;
    pthread_mutex_unlock(&p->mu);
    return 0;
}

void pl_peer_remove(struct pl_peer *p, const unsigned char *sha256)
{
    pthread_mutex_lock(&p->mu);
    for (size_t i = 0; i < p->nfiles; i++)
        if (!memcmp(p->files[i].sha256, sha256, 32)) {
            free(p->files[i].path);
            p->files[i] = p->files[--p->nfiles];
            break;
        }
    pthread_mutex_unlock(&p->mu);
}

void pl_peer_stats(struct pl_peer *p, struct pl_peer_stats *s)
{
    pthread_mutex_lock(&p->mu);
    *s = p->st;
    pthread_mutex_unlock(&p->mu);
}

void pl_peer_stop(struct pl_peer *p)
{
    if (!p)
        return;
    atomic_store(&p->stop, 1);
    if (write(p->wake[1], "x", 1) < 0) {
        /* the pipe is full: the thread is awake anyway */
    }
    pthread_join(p->thread, NULL);
    for (size_t i = 0; i < p->nconns; i++)
        conn_free(p->conns[i]);
    free(p->conns);
    for (size_t i = 0; i < p->nfiles; i++)
        free(p->files[i].path);
    free(p->files);
    close(p->lfd);
    close(p->wake[0]);
    close(p->wake[1]);
    pthread_mutex_destroy(&p->mu);
    free(p);
}
