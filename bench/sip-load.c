/*
 * bench/sip-load.c - SIP load generator over UDP for `make bench` (issue
 * 14): drives Parley's SIP front end and Kamailio the same way.
 *
 * Every user agent (UA) is a UDP socket of its own on 127.0.0.1, all in
 * one epoll loop.  A UA registers with digest authentication (RFC 3261
 * §22, RFC 7616): a REGISTER without credentials, the 401's challenge
 * answered with MD5 (--alg md5, the default) or SHA-256, then 200.  Later
 * requests (MESSAGE, PUBLISH, SUBSCRIBE) carry Proxy-Authorization made
 * from the last nonce with the next nonce count, as a UA that caches
 * credentials does (RFC 7616 §3.4); a 401/407 (a stale nonce, an nc the
 * server refused) is answered with the new challenge and counted
 * ("reauth").  Requests are retransmitted per RFC 3261 §17.1.2 (T1 500 ms,
 * doubling up to T2 4 s) until a final answer or 32 s (a timeout).
 * Requests the server sends (MESSAGE, NOTIFY) are answered 200 at once.
 *
 * Modes (--mode):
 *   register  --users N UAs register, --concurrency at a time: REGISTER
 *             with digest per second and server CPU per registration; the
 *             server's memory before and --settle seconds after (the
 *             registrations stay: Expires 3600)
 *   message   --pairs P: UA i sends MESSAGEs to UA P+i, --window W in
 *             flight per sender (a slot is freed by the final answer); for
 *             --warmup then --duration seconds, then a drain.  Each body
 *             is "K,<sender>,<seq>,<send time ns>": the receiving UA (this
 *             process) measures latency and counts lost and duplicated
 *             messages (a bitmap per receiver; a retransmission of the
 *             same request, same Via branch, is not a duplicate)
 *   xmpp      as message, but the receivers are XMPP clients (plain TCP,
 *             SCRAM-SHA-256, a bound resource, initial presence) of the
 *             same accounts on --xmpp-port: SIP to XMPP through Parley
 *   publish   UA 0 is the presentity, UAs 1..--watchers SUBSCRIBE to its
 *             presence (Event: presence) and answer every NOTIFY; then the
 *             presentity PUBLISHes (RFC 3903: the first makes the
 *             publication, then SIP-If-Match) at --rate per second for
 *             --duration seconds, each PIDF note "P,<seq>,<send time>":
 *             NOTIFYs delivered per second, server CPU per NOTIFY,
 *             latency from PUBLISH to NOTIFY, each watcher must see each
 *             state once
 *
 * Server accounting (--server-pid): CPU is utime+stime from /proc/PID/stat
 * of the server process and of its child processes (Kamailio forks its
 * workers; Parley is one process with threads), read at the phase
 * boundaries; memory is the main process's VmRSS and the Pss of the
 * process and its children (smaps_rollup), which shares Kamailio's shared
 * memory out between its processes.
 *
 * Results: one JSON object on one line on stdout, progress on stderr.
 * Every wait is bounded (--timeout for a setup phase).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common.h"

/* ---- options ---- */

enum mode {
    M_REGISTER,
    M_MESSAGE,
    M_XMPP,
    M_PUBLISH
};
static const char *const mode_names[] = {"register", "message", "xmpp",
                                         "publish"};

static struct {
    enum mode mode;
    const char *host; /* server address */
    int port;         /* SIP UDP port */
    int xmpp_port;    /* xmpp mode: c2s port */
    const char *domain;
    const char *prefix;
    const char *password;
    long first;      /* first user number */
    long users;      /* register: UAs */
    long pairs;      /* message/xmpp: senders (and receivers) */
    int window;      /* messages in flight per sender */
    int concurrency; /* register: registrations in flight */
    int watchers;    /* publish: watchers */
    double rate;     /* publish: PUBLISH per second */
    double duration; /* measured seconds */
    double warmup;   /* unmeasured seconds before */
    double drain;    /* bound on the drain */
    double settle;   /* register: seconds before the memory is read */
    double timeout;  /* bound on a setup phase */
    int sha256;      /* answer challenges with SHA-256, else MD5 */
    int server_pid;  /* 0 = no accounting */
    const char *label;
    int verbose;
} O = {
    .mode = M_REGISTER,
    .host = "127.0.0.1",
    .port = 5060,
    .xmpp_port = 5222,
    .domain = "localhost",
    .prefix = "sipu",
    .password = "benchpass",
    .users = 1000,
    .pairs = 100,
    .window = 10,
    .concurrency = 50,
    .watchers = 100,
    .rate = 20,
    .duration = 10,
    .warmup = 2,
    .drain = 35,
    .settle = 0,
    .timeout = 120,
    .verbose = 1,
};

/* ---- state ---- */

enum kind {
    K_REGISTER,
    K_MESSAGE,
    K_PUBLISH,
    K_SUBSCRIBE
};
static const char *const kind_names[] = {"REGISTER", "MESSAGE", "PUBLISH",
                                         "SUBSCRIBE"};

struct ua {
    int fd;            /* UDP socket, or the XMPP receiver's TCP socket */
    int xmpp;          /* an XMPP receiver (xmpp mode) */
    uint16_t port;     /* local port */
    long user;         /* user number */
    char name[32];     /* user name: prefix and number */
    char tag[20];      /* From tag */
    char nonce[160];   /* last challenge's nonce, "" = none yet */
    char realm[96];    /* its realm */
    char opaque[96];   /* its opaque, "" = none */
    int qop;           /* it offered qop=auth */
    uint32_t nc;       /* nonce count used last */
    uint32_t cseq;     /* last CSeq (REGISTER, PUBLISH: one Call-ID) */
    int registered;    /* REGISTER answered 200 */
    uint32_t partner;  /* message: the receiver's index */
    uint64_t tx;       /* messages sent (first transmissions) */
    uint32_t inflight; /* messages awaiting a final answer */
    uint64_t ok;       /* final 2xx received for its messages */
    uint8_t *seen;     /* receiver: bitmap of sequence numbers */
    uint64_t seen_cap; /* bits in seen */
    uint64_t uniq;     /* receiver: distinct messages received */
    int subscribed;    /* watcher: SUBSCRIBE answered 2xx */
    long notifies;     /* watcher: NOTIFYs received */
    char etag[128];    /* presentity: SIP-ETag of its publication */
    char *in;          /* XMPP: bytes received and not yet consumed */
    size_t inlen, incap;
};

struct txn {
    uint32_t gen; /* generation: part of the branch */
    int used;
    uint32_t ua;
    int kind;
    uint64_t seq; /* message sequence number */
    uint32_t cseq;
    char callid[64];
    char *req; /* the bytes sent, for retransmissions */
    int reqlen;
    double t_first;  /* first transmission */
    double t_next;   /* next retransmission */
    double interval; /* current retransmission interval */
    int reauths;     /* challenges answered for this request */
};

static struct ua *uas;
static uint32_t nua;
static struct txn *txns;
static uint32_t ntxn, *txfree, nfree;
static int ep;
static struct sockaddr_in server;
static volatile sig_atomic_t stop_flag;

/* Counters of the run. */
static struct {
    uint64_t sent, retrans, reauth, timeouts, failures, ok, rx, dup, rx_retrans,
        bad;
    uint64_t notifies, reqs_in;
    int fail_code;
    char fail_reason[96];
} C;

/* Latency samples (µs) of the measured phase. */
static uint32_t *lat;
static size_t nlat, latcap;
static int measuring;

/* ---- helpers ---- */

static void logf_(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logf_(const char *fmt, ...)
{
    if (!O.verbose)
        return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "sip-load: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static void die(const char *msg)
{
    fprintf(stderr, "sip-load: %s: %s\n", msg, strerror(errno));
    exit(1);
}

static void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (!p)
        die("out of memory");
    return p;
}

static void lat_add(uint64_t us)
{
    if (!measuring)
        return;
    if (nlat == latcap) {
        if (latcap >= (size_t)1 << 24)
            return;
        latcap = latcap ? latcap * 2 : 65536;
        lat = xrealloc(lat, latcap * sizeof(*lat));
    }
    lat[nlat++] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static uint32_t lat_pct(double p)
{
    if (!nlat)
        return 0;
    size_t i = (size_t)(p / 100.0 * (double)(nlat - 1) + 0.5);
    return lat[i < nlat ? i : nlat - 1];
}

/* ---- server accounting ---- */

static int *spids; /* the server process and its children */
static int nspid;

/* The server's processes: its pid and every descendant (Kamailio's
 * workers are children of the main process; their children too). */
static void find_server_pids(void)
{
    if (!O.server_pid)
        return;
    nspid = 0;
    spids = xrealloc(spids, sizeof(int));
    spids[nspid++] = O.server_pid;
    for (int round = 0; round < 3; round++) {
        DIR *d = opendir("/proc");
        if (!d)
            return;
        struct dirent *e;
        while ((e = readdir(d))) {
            if (!isdigit((unsigned char)e->d_name[0]))
                continue;
            int pid = atoi(e->d_name), pp = 0, known = 0;
            if (bench_proc_stat(pid, NULL, &pp) < 0)
                continue;
            for (int i = 0; i < nspid; i++)
                known |= spids[i] == pid;
            for (int i = 0; !known && i < nspid; i++)
                if (spids[i] == pp) {
                    spids = xrealloc(spids, sizeof(int) * (size_t)(nspid + 1));
                    spids[nspid++] = pid;
                    break;
                }
        }
        closedir(d);
    }
}

static double server_cpu_us(void)
{
    unsigned long t = 0;
    for (int i = 0; i < nspid; i++) {
        unsigned long ticks;
        if (bench_proc_stat(spids[i], &ticks, NULL) == 0)
            t += ticks;
    }
    return bench_ticks_us(t);
}

static long server_rss_kib(void)
{
    return O.server_pid ? bench_proc_kib(O.server_pid, "status", "VmRSS:") : 0;
}

static long server_pss_kib(void)
{
    long t = 0;
    for (int i = 0; i < nspid; i++)
        t += bench_proc_kib(spids[i], "smaps_rollup", "Pss:");
    return t;
}

/* ---- JSON result ---- */

static void jstr(const char *key, const char *val)
{
    jadd(",\"%s\":", key);
    jquote(val);
}

static void jcommon(void)
{
    jadd("{\"json\":1");
    jstr("mode", mode_names[O.mode]);
    if (O.label)
        jstr("label", O.label);
    jstr("digest", O.sha256 ? "SHA-256" : "MD5");
    jadd(",\"sent\":%" PRIu64 ",\"retransmissions\":%" PRIu64
         ",\"reauth\":%" PRIu64 ",\"timeouts\":%" PRIu64
         ",\"failures\":%" PRIu64,
         C.sent, C.retrans, C.reauth, C.timeouts, C.failures);
    if (C.failures)
        jadd(",\"fail_code\":%d", C.fail_code);
    if (C.fail_reason[0])
        jstr("fail_reason", C.fail_reason);
}

/* The generator's CPU use over the measured phase, and whether it was the
 * limit (its core nearly full: the server was not saturated, so a rate is
 * a floor); the same threshold as parley-load's. */
static void jgen(double gcpu_s, double wall_s)
{
    double u = wall_s > 0 ? gcpu_s / wall_s : 0;
    jadd(",\"gen_cpu_util\":%.3f,\"gen_limited\":%d", u, u > 0.92);
}

static void jlatency(void)
{
    if (!nlat)
        return;
    qsort(lat, nlat, sizeof(*lat), cmp_u32);
    jadd(",\"p50_us\":%u,\"p90_us\":%u,\"p99_us\":%u,\"max_us\":%u",
         lat_pct(50), lat_pct(90), lat_pct(99), lat[nlat - 1]);
}

/* ---- digest (RFC 7616) ---- */

static void hash_hex(const char *s, size_t n, char *out)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int ml = 0;
    EVP_Digest(s, n, md, &ml, O.sha256 ? EVP_sha256() : EVP_md5(), NULL);
    for (unsigned i = 0; i < ml; i++)
        sprintf(out + 2 * i, "%02x", md[i]);
    out[2 * ml] = 0;
}

/* Writes "Authorization: Digest ...\r\n" (or Proxy-) for method and uri
 * with the UA's nonce and the next nonce count. */
static int auth_header(struct ua *u, const char *hname, const char *method,
                       const char *uri, char *out, size_t on)
{
    char buf[512], ha1[129], ha2[129], resp[129], cnonce[17];
    int n = snprintf(buf, sizeof(buf), "%s:%s:%s", u->name, u->realm,
                     O.password);
    hash_hex(buf, (size_t)n, ha1);
    n = snprintf(buf, sizeof(buf), "%s:%s", method, uri);
    hash_hex(buf, (size_t)n, ha2);
    const char *alg = O.sha256 ? "SHA-256" : "MD5";
    char op[128] = "";
    if (u->opaque[0])
        snprintf(op, sizeof(op), ", opaque=\"%s\"", u->opaque);
    if (!u->qop) {
        n = snprintf(buf, sizeof(buf), "%s:%s:%s", ha1, u->nonce, ha2);
        hash_hex(buf, (size_t)n, resp);
        return snprintf(out, on,
                        "%s: Digest username=\"%s\", realm=\"%s\", "
                        "nonce=\"%s\", uri=\"%s\", response=\"%s\", "
                        "algorithm=%s%s\r\n",
                        hname, u->name, u->realm, u->nonce, uri, resp, alg, op);
    }
    u->nc++;
    snprintf(cnonce, sizeof(cnonce), "%08x%08x", (unsigned)rand(),
             (unsigned)u->nc);
    n = snprintf(buf, sizeof(buf), "%s:%s:%08x:%s:auth:%s", ha1, u->nonce,
                 u->nc, cnonce, ha2);
    hash_hex(buf, (size_t)n, resp);
    return snprintf(out, on,
                    "%s: Digest username=\"%s\", realm=\"%s\", "
                    "nonce=\"%s\", uri=\"%s\", response=\"%s\", "
                    "algorithm=%s, cnonce=\"%s\", qop=auth, nc=%08x%s\r\n",
                    hname, u->name, u->realm, u->nonce, uri, resp, alg, cnonce,
                    u->nc, op);
}

/* The value of parameter name in a challenge (quoted or not). */
static int chal_param(const char *p, const char *end, const char *name,
                      char *out, size_t on)
{
    size_t nl = strlen(name);
    for (const char *q = p; q + nl < end; q++) {
        if (strncasecmp(q, name, nl) != 0 || q[nl] != '=')
            continue;
        if (q > p && (isalnum((unsigned char)q[-1]) || q[-1] == '-'))
            continue;
        q += nl + 1;
        const char *v = q, *ve;
        if (*v == '"') {
            v++;
            ve = memchr(v, '"', (size_t)(end - v));
            if (!ve)
                return 0;
        } else {
            ve = v;
            while (ve < end && *ve != ',' && *ve != ' ' && *ve != '\r')
                ve++;
        }
        size_t n = (size_t)(ve - v);
        if (n >= on)
            return 0;
        memcpy(out, v, n);
        out[n] = 0;
        return 1;
    }
    return 0;
}

/* ---- SIP message parsing ---- */

struct hdr {
    const char *v; /* value, trimmed */
    int n;
};

struct msg {
    int is_resp;
    int code;
    const char *method; /* request */
    int mlen;
    struct hdr via[16];
    int nvia;
    struct hdr from, to, callid, cseq, etag;
    struct hdr auth[4]; /* WWW-/Proxy-Authenticate */
    int nauth;
    const char *body;
    int blen;
    const char *start; /* the start line */
    int slen;
};

static int hname_is(const char *p, int n, const char *longn, char compact)
{
    int ln = (int)strlen(longn);
    return (n == ln && strncasecmp(p, longn, (size_t)ln) == 0) ||
           (compact && n == 1 && tolower((unsigned char)*p) == compact);
}

static int parse_msg(const char *p, int n, struct msg *m)
{
    memset(m, 0, sizeof(*m));
    const char *end = p + n, *eol = memmem(p, (size_t)n, "\r\n", 2);
    if (!eol)
        return -1;
    m->start = p;
    m->slen = (int)(eol - p);
    if (n > 8 && memcmp(p, "SIP/2.0 ", 8) == 0) {
        m->is_resp = 1;
        m->code = atoi(p + 8);
    } else {
        const char *sp = memchr(p, ' ', (size_t)(eol - p));
        if (!sp)
            return -1;
        m->method = p;
        m->mlen = (int)(sp - p);
    }
    const char *l = eol + 2;
    while (l < end) {
        const char *le = memmem(l, (size_t)(end - l), "\r\n", 2);
        if (!le)
            return -1;
        if (le == l) {
            m->body = le + 2;
            m->blen = (int)(end - m->body);
            break;
        }
        const char *c = memchr(l, ':', (size_t)(le - l));
        if (c) {
            int hn = (int)(c - l);
            while (hn > 0 && (l[hn - 1] == ' ' || l[hn - 1] == '\t'))
                hn--;
            const char *v = c + 1;
            while (v < le && (*v == ' ' || *v == '\t'))
                v++;
            struct hdr h = {v, (int)(le - v)};
            if (hname_is(l, hn, "Via", 'v')) {
                /* One Via header may hold several values. */
                const char *s = v;
                while (s < le && m->nvia < 16) {
                    const char *cm = memchr(s, ',', (size_t)(le - s));
                    const char *e2 = cm ? cm : le;
                    m->via[m->nvia].v = s;
                    m->via[m->nvia++].n = (int)(e2 - s);
                    if (!cm)
                        break;
                    s = cm + 1;
                    while (s < le && *s == ' ')
                        s++;
                }
            } else if (hname_is(l, hn, "From", 'f'))
                m->from = h;
            else if (hname_is(l, hn, "To", 't'))
                m->to = h;
            else if (hname_is(l, hn, "Call-ID", 'i'))
                m->callid = h;
            else if (hname_is(l, hn, "CSeq", 0))
                m->cseq = h;
            else if (hname_is(l, hn, "SIP-ETag", 0))
                m->etag = h;
            else if ((hname_is(l, hn, "WWW-Authenticate", 0) ||
                      hname_is(l, hn, "Proxy-Authenticate", 0)) &&
                     m->nauth < 4)
                m->auth[m->nauth++] = h;
        }
        l = le + 2;
    }
    return 0;
}

/* The branch parameter of a Via value: our own are
 * z9hG4bK-<slot>.<gen> in hex. */
static int our_branch(const struct hdr *via, uint32_t *slot, uint32_t *gen)
{
    const char *b = memmem(via->v, (size_t)via->n, "branch=z9hG4bK-", 15);
    if (!b)
        return 0;
    char *e;
    unsigned long s = strtoul(b + 15, &e, 16);
    if (*e != '.')
        return 0;
    unsigned long g = strtoul(e + 1, NULL, 16);
    *slot = (uint32_t)s;
    *gen = (uint32_t)g;
    return 1;
}

static uint64_t fnv(const char *p, int n)
{
    uint64_t h = 1469598103934665603ull;
    for (int i = 0; i < n; i++)
        h = (h ^ (unsigned char)p[i]) * 1099511628211ull;
    return h;
}

/* ---- transactions ---- */

static uint32_t txn_new(uint32_t ua, int kind)
{
    uint32_t i;
    if (nfree) {
        i = txfree[--nfree];
    } else {
        if (ntxn % 1024 == 0)
            txns = xrealloc(txns, sizeof(*txns) * (ntxn + 1024));
        i = ntxn++;
        memset(&txns[i], 0, sizeof(txns[i]));
        txfree = xrealloc(txfree, sizeof(*txfree) * ntxn);
    }
    struct txn *t = &txns[i];
    uint32_t gen = t->gen + 1;
    char *req = t->req;
    memset(t, 0, sizeof(*t));
    t->gen = gen;
    t->req = req;
    t->used = 1;
    t->ua = ua;
    t->kind = kind;
    return i;
}

static void txn_free(uint32_t i)
{
    txns[i].used = 0;
    txns[i].gen++;
    txfree[nfree++] = i;
}

static uint32_t txns_live(void)
{
    return ntxn - nfree;
}

static void send_raw(struct ua *u, const char *p, int n)
{
    if (sendto(u->fd, p, (size_t)n, 0, (struct sockaddr *)&server,
               sizeof(server)) < 0 &&
        errno != EAGAIN && errno != ENOBUFS)
        C.bad++;
}

static void build_body(uint32_t ti, char *body, size_t bn);

/* Writes request i (its current CSeq, a fresh branch) and sends it. */
static void txn_send(uint32_t i)
{
    struct txn *t = &txns[i];
    struct ua *u = &uas[t->ua];
    char ruri[160], to[176], extra[1024] = "", body[1024] = "", auth[1024];
    const char *method = kind_names[t->kind];
    const char *ctype = "";
    int el = 0;
    switch (t->kind) {
    case K_REGISTER:
        snprintf(ruri, sizeof(ruri), "sip:%s", O.domain);
        snprintf(to, sizeof(to), "<sip:%s@%s>", u->name, O.domain);
        el = snprintf(extra, sizeof(extra),
                      "Contact: <sip:%s@127.0.0.1:%u>\r\nExpires: 3600\r\n",
                      u->name, u->port);
        break;
    case K_MESSAGE:
        snprintf(ruri, sizeof(ruri), "sip:%s@%s", uas[u->partner].name,
                 O.domain);
        snprintf(to, sizeof(to), "<%s>", ruri);
        ctype = "text/plain";
        build_body(i, body, sizeof(body));
        break;
    case K_PUBLISH:
        snprintf(ruri, sizeof(ruri), "sip:%s@%s", u->name, O.domain);
        snprintf(to, sizeof(to), "<%s>", ruri);
        el = snprintf(extra, sizeof(extra),
                      "Event: presence\r\nExpires: 3600\r\n");
        ctype = "application/pidf+xml";
        build_body(i, body, sizeof(body));
        break;
    case K_SUBSCRIBE:
        snprintf(ruri, sizeof(ruri), "sip:%s@%s", uas[0].name, O.domain);
        snprintf(to, sizeof(to), "<%s>", ruri);
        el = snprintf(extra, sizeof(extra),
                      "Contact: <sip:%s@127.0.0.1:%u>\r\nEvent: presence\r\n"
                      "Accept: application/pidf+xml\r\nExpires: 3600\r\n",
                      u->name, u->port);
        break;
    }
    if (t->kind == K_PUBLISH && u->etag[0])
        el += snprintf(extra + el, sizeof(extra) - (size_t)el,
                       "SIP-If-Match: %s\r\n", u->etag);
    auth[0] = 0;
    if (u->nonce[0])
        auth_header(u,
                    t->kind == K_REGISTER ? "Authorization"
                                          : "Proxy-Authorization",
                    method, ruri, auth, sizeof(auth));
    size_t bl = strlen(body);
    char ct[80] = "";
    if (*ctype)
        snprintf(ct, sizeof(ct), "Content-Type: %s\r\n", ctype);
    t->req = xrealloc(t->req, 2048 + bl + strlen(auth) + strlen(extra));
    t->reqlen = sprintf(t->req,
                        "%s %s SIP/2.0\r\n"
                        "Via: SIP/2.0/UDP 127.0.0.1:%u;branch=z9hG4bK-%x.%x;"
                        "rport\r\n"
                        "Max-Forwards: 70\r\n"
                        "From: <sip:%s@%s>;tag=%s\r\n"
                        "To: %s\r\n"
                        "Call-ID: %s\r\n"
                        "CSeq: %u %s\r\n"
                        "User-Agent: parley-sip-load\r\n"
                        "%s%s%s"
                        "Content-Length: %zu\r\n\r\n%s",
                        method, ruri, u->port, i, t->gen, u->name, O.domain,
                        u->tag, to, t->callid, t->cseq, method, extra, auth, ct,
                        bl, body);
    double now = now_s();
    t->t_next = now + 0.5;
    t->interval = 0.5;
    send_raw(u, t->req, t->reqlen);
    C.sent++;
}

/* Starts a request of kind from UA ua; returns its slot. */
static uint32_t request(uint32_t ua, int kind, uint64_t seq)
{
    struct ua *u = &uas[ua];
    uint32_t i = txn_new(ua, kind);
    struct txn *t = &txns[i];
    t->seq = seq;
    t->t_first = now_s();
    if (kind == K_REGISTER || kind == K_PUBLISH) {
        /* One Call-ID per UA and kind, CSeq counting up (RFC 3261
         * §10.2, RFC 3903 §4). */
        t->cseq = ++u->cseq;
        snprintf(t->callid, sizeof(t->callid), "%s-%s-%ld@127.0.0.1",
                 kind == K_REGISTER ? "r" : "p", u->tag, u->user);
    } else {
        t->cseq = 1;
        snprintf(t->callid, sizeof(t->callid), "%c%" PRIx64 "-%s-%ld",
                 kind == K_MESSAGE ? 'm' : 's', seq, u->tag, u->user);
    }
    txn_send(i);
    return i;
}

/* Retransmissions (Timer E) and timeouts (Timer F, 32 s). */
static void txn_timers(void)
{
    double now = now_s();
    for (uint32_t i = 0; i < ntxn; i++) {
        struct txn *t = &txns[i];
        if (!t->used || now < t->t_next)
            continue;
        if (now - t->t_first > 32) {
            C.timeouts++;
            if (!C.fail_reason[0])
                snprintf(C.fail_reason, sizeof(C.fail_reason), "%s timed out",
                         kind_names[t->kind]);
            struct ua *u = &uas[t->ua];
            if (t->kind == K_MESSAGE && u->inflight)
                u->inflight--;
            txn_free(i);
            continue;
        }
        send_raw(&uas[t->ua], t->req, t->reqlen);
        C.retrans++;
        t->interval = t->interval * 2 > 4 ? 4 : t->interval * 2;
        t->t_next = now + t->interval;
    }
}

/* ---- mode state ---- */

static struct {
    int sending;      /* message: senders keep their windows full */
    uint64_t rx_meas; /* deliveries counted in the measured phase */
    /* publish */
    uint64_t pub_seq;   /* PUBLISHes sent with a state */
    uint64_t pub_meas0; /* first sequence number measured */
    int pub_busy;       /* a PUBLISH awaits its answer */
    uint64_t pub_ok, pub_late;
    uint64_t notify_meas; /* NOTIFYs with a measured state */
    double t_last_rx;     /* time of the last delivery */
} R;

static void build_body(uint32_t ti, char *body, size_t bn)
{
    struct txn *t = &txns[ti];
    struct ua *u = &uas[t->ua];
    if (t->kind == K_MESSAGE) {
        snprintf(body, bn, "K,%u,%" PRIu64 ",%" PRIu64, t->ua, t->seq,
                 now_ns());
        return;
    }
    snprintf(body, bn,
             "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n"
             "<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" "
             "entity=\"sip:%s@%s\">\r\n"
             "<tuple id=\"t1\"><status><basic>open</basic></status>"
             "<note>P,%" PRIu64 ",%" PRIu64 "</note></tuple>\r\n"
             "</presence>\r\n",
             u->name, O.domain, t->seq, now_ns());
}

static void msg_send(uint32_t ua)
{
    struct ua *u = &uas[ua];
    u->inflight++;
    request(ua, K_MESSAGE, u->tx++);
}

/* A body "K,<sender>,<seq>,<ns>" delivered to receiver rcv (SIP or
 * XMPP). */
static void delivered(struct ua *rcv, const char *p, const char *end)
{
    uint64_t v[3] = {0, 0, 0};
    for (int k = 0; k < 3; k++) {
        while (p < end && *p >= '0' && *p <= '9')
            v[k] = v[k] * 10 + (uint64_t)(*p++ - '0');
        if (p < end && *p == ',')
            p++;
    }
    uint64_t seq = v[1];
    C.rx++;
    if (seq >= rcv->seen_cap) {
        uint64_t cap = rcv->seen_cap ? rcv->seen_cap : 4096;
        while (cap <= seq)
            cap *= 2;
        rcv->seen = xrealloc(rcv->seen, (size_t)(cap / 8));
        memset(rcv->seen + rcv->seen_cap / 8, 0,
               (size_t)((cap - rcv->seen_cap) / 8));
        rcv->seen_cap = cap;
    }
    if (rcv->seen[seq / 8] & (1u << (seq % 8))) {
        C.dup++;
        return;
    }
    rcv->seen[seq / 8] |= (uint8_t)(1u << (seq % 8));
    rcv->uniq++;
    if (measuring) {
        R.rx_meas++;
        uint64_t t = now_ns();
        lat_add(t > v[2] ? (t - v[2]) / 1000 : 0);
    }
    R.t_last_rx = now_s();
}

/* ---- incoming SIP ---- */

/* Answers request m received by u with 200 (copying what §8.2.6.2 asks). */
static void answer(struct ua *u, const struct msg *m,
                   const struct sockaddr_in *from)
{
    char out[4096];
    int n = snprintf(out, sizeof(out), "SIP/2.0 200 OK\r\n");
    for (int i = 0; i < m->nvia && n < (int)sizeof(out) - 512; i++)
        n += snprintf(out + n, sizeof(out) - (size_t)n, "Via: %.*s\r\n",
                      m->via[i].n, m->via[i].v);
    int tagged = m->to.v && memmem(m->to.v, (size_t)m->to.n, ";tag=", 5);
    n += snprintf(out + n, sizeof(out) - (size_t)n,
                  "From: %.*s\r\nTo: %.*s%s%s\r\nCall-ID: %.*s\r\n"
                  "CSeq: %.*s\r\nContact: <sip:%s@127.0.0.1:%u>\r\n"
                  "Content-Length: 0\r\n\r\n",
                  m->from.n, m->from.v, m->to.n, m->to.v,
                  tagged ? "" : ";tag=", tagged ? "" : u->tag, m->callid.n,
                  m->callid.v, m->cseq.n, m->cseq.v, u->name, u->port);
    if (n >= (int)sizeof(out))
        return;
    sendto(u->fd, out, (size_t)n, 0, (const struct sockaddr *)from,
           sizeof(*from));
}

/* Requests seen (a hash of the receiving UA, top Via and CSeq) in two
 * generations of open-addressing tables: a retransmission (Timer E, up
 * to 32 s later) is found in one of them, however many requests came in
 * between, as long as a generation holds more than 32 s of requests. */
#define SEEN_BITS 21
static uint64_t *seen_cur, *seen_old;
static uint32_t seen_n;

static int seen_in(const uint64_t *t, uint64_t h, int add)
{
    uint32_t mask = (1u << SEEN_BITS) - 1;
    for (uint32_t i = (uint32_t)h & mask;; i = (i + 1) & mask) {
        if (t[i] == h)
            return 1;
        if (!t[i]) {
            if (add)
                ((uint64_t *)t)[i] = h;
            return 0;
        }
    }
}

static int seen_before(struct ua *u, const struct msg *m)
{
    if (!m->nvia)
        return 0;
    if (!seen_cur) {
        seen_cur = calloc((size_t)1 << SEEN_BITS, sizeof(uint64_t));
        seen_old = calloc((size_t)1 << SEEN_BITS, sizeof(uint64_t));
        if (!seen_cur || !seen_old)
            die("calloc");
    }
    uint64_t h = fnv(m->via[0].v, m->via[0].n) ^
                 (fnv(m->cseq.v, m->cseq.n) * 31) ^ ((uint64_t)u->port << 40);
    h |= 1; /* 0 marks a free slot */
    if (seen_in(seen_old, h, 0) || seen_in(seen_cur, h, 1))
        return 1;
    if (++seen_n >= (1u << (SEEN_BITS - 1))) {
        uint64_t *t = seen_old;
        seen_old = seen_cur;
        seen_cur = t;
        memset(seen_cur, 0, sizeof(uint64_t) << SEEN_BITS);
        seen_n = 0;
    }
    return 0;
}

static void on_request(struct ua *u, const struct msg *m,
                       const struct sockaddr_in *from)
{
    C.reqs_in++;
    answer(u, m, from);
    if (seen_before(u, m)) {
        C.rx_retrans++;
        return;
    }
    const char *end = m->body + m->blen;
    if (m->mlen == 7 && memcmp(m->method, "MESSAGE", 7) == 0) {
        const char *k = m->body ? memmem(m->body, (size_t)m->blen, "K,", 2)
                                : NULL;
        if (k)
            delivered(u, k + 2, end);
        return;
    }
    if (m->mlen == 6 && memcmp(m->method, "NOTIFY", 6) == 0) {
        u->notifies++;
        C.notifies++;
        const char *k = m->body ? memmem(m->body, (size_t)m->blen, ">P,", 3)
                                : NULL;
        if (!k)
            return;
        uint64_t seq = 0, ts = 0;
        const char *p = k + 3;
        while (p < end && isdigit((unsigned char)*p))
            seq = seq * 10 + (uint64_t)(*p++ - '0');
        if (p < end && *p == ',')
            p++;
        while (p < end && isdigit((unsigned char)*p))
            ts = ts * 10 + (uint64_t)(*p++ - '0');
        /* Each watcher must see each state once: the bitmap of the
         * receiver, indexed by the PUBLISH's sequence number. */
        uint64_t dup0 = C.dup, rx0 = C.rx;
        char b[64];
        int bn = snprintf(b, sizeof(b), "0,%" PRIu64 ",%" PRIu64, seq, ts);
        int meas = measuring;
        measuring = measuring && seq >= R.pub_meas0;
        delivered(u, b, b + bn);
        measuring = meas;
        if (C.dup == dup0 && C.rx > rx0 && seq >= R.pub_meas0 && R.pub_meas0)
            R.notify_meas++;
    }
}

static void on_response(struct ua *u, const struct msg *m)
{
    uint32_t slot, gen;
    if (!m->nvia || !our_branch(&m->via[0], &slot, &gen) || slot >= ntxn)
        return;
    struct txn *t = &txns[slot];
    if (!t->used || t->gen != gen || &uas[t->ua] != u)
        return; /* a late retransmitted answer */
    if (m->code < 200) {
        t->t_next = now_s() + 4; /* §17.1.2.2: retransmit at T2 now */
        return;
    }
    if ((m->code == 401 || m->code == 407) && m->nauth && t->reauths < 4) {
        /* Pick the challenge of our algorithm (Parley offers SHA-256 and
         * MD5, RFC 8760 §2.4), remember its nonce, send again with the
         * next CSeq (§22.2). */
        const char *want = O.sha256 ? "SHA-256" : "MD5";
        for (int i = 0; i < m->nauth; i++) {
            const char *p = m->auth[i].v, *e = p + m->auth[i].n;
            char alg[32] = "MD5", q[64] = "";
            chal_param(p, e, "algorithm", alg, sizeof(alg));
            if (strcasecmp(alg, want) != 0)
                continue;
            if (!chal_param(p, e, "nonce", u->nonce, sizeof(u->nonce)))
                continue;
            chal_param(p, e, "realm", u->realm, sizeof(u->realm));
            u->opaque[0] = 0;
            chal_param(p, e, "opaque", u->opaque, sizeof(u->opaque));
            u->qop = chal_param(p, e, "qop", q, sizeof(q)) &&
                     strstr(q, "auth") != NULL;
            u->nc = 0;
            if (t->kind == K_REGISTER || t->kind == K_PUBLISH)
                t->cseq = ++u->cseq;
            else
                t->cseq++;
            /* The first challenge of a registration is the protocol, not
             * a re-authentication. */
            if (!(t->kind == K_REGISTER && !u->registered && !t->reauths &&
                  t->cseq <= 2))
                C.reauth++;
            t->reauths++;
            t->gen++; /* a new branch: a new transaction */
            txn_send(slot);
            return;
        }
    }
    int ok = m->code < 300;
    if (!ok) {
        C.failures++;
        C.fail_code = m->code;
        if (!C.fail_reason[0])
            snprintf(C.fail_reason, sizeof(C.fail_reason), "%s: %.*s",
                     kind_names[t->kind], m->slen > 60 ? 60 : m->slen,
                     m->start);
    }
    switch (t->kind) {
    case K_REGISTER:
        if (ok) {
            u->registered = 1;
            C.ok++;
        }
        break;
    case K_MESSAGE:
        if (u->inflight)
            u->inflight--;
        if (ok)
            u->ok++;
        if (R.sending && u->inflight < (uint32_t)O.window)
            msg_send((uint32_t)(u - uas));
        break;
    case K_PUBLISH:
        R.pub_busy = 0;
        if (ok && m->etag.v && m->etag.n < (int)sizeof(u->etag)) {
            memcpy(u->etag, m->etag.v, (size_t)m->etag.n);
            u->etag[m->etag.n] = 0;
            R.pub_ok++;
        }
        break;
    case K_SUBSCRIBE:
        if (ok)
            u->subscribed = 1;
        break;
    }
    txn_free(slot);
}

static void sip_read(struct ua *u)
{
    char buf[65536];
    for (int k = 0; k < 64; k++) {
        struct sockaddr_in from;
        socklen_t fl = sizeof(from);
        ssize_t n = recvfrom(u->fd, buf, sizeof(buf) - 1, 0,
                             (struct sockaddr *)&from, &fl);
        if (n <= 0)
            return;
        buf[n] = 0;
        struct msg m;
        if (parse_msg(buf, (int)n, &m) < 0) {
            C.bad++;
            continue;
        }
        if (m.is_resp)
            on_response(u, &m);
        else
            on_request(u, &m, &from);
    }
}

/* ---- XMPP receivers (xmpp mode): plain TCP, SCRAM-SHA-256 ---- */

static int b64enc(const unsigned char *in, int n, char *out)
{
    return EVP_EncodeBlock((unsigned char *)out, in, n);
}

static int b64dec(const char *in, int n, unsigned char *out)
{
    int k = EVP_DecodeBlock(out, (const unsigned char *)in, n);
    if (k < 0)
        return -1;
    while (n > 0 && in[n - 1] == '=') {
        k--;
        n--;
    }
    return k;
}

/* Reads from blocking fd until needle (or "failure") is in buf. */
static int x_expect(int fd, char *buf, size_t cap, size_t *len,
                    const char *needle)
{
    double end = now_s() + 15;
    while (now_s() < end) {
        buf[*len] = 0;
        if (strstr(buf, needle))
            return 1;
        if (strstr(buf, "<failure") || strstr(buf, "type='error'") ||
            strstr(buf, "type=\"error\"") || strstr(buf, "</stream:stream>"))
            return 0;
        if (*len + 1 >= cap)
            return 0;
        ssize_t n = read(fd, buf + *len, cap - 1 - *len);
        if (n <= 0)
            return 0;
        *len += (size_t)n;
    }
    return 0;
}

static int x_write(int fd, const char *s)
{
    size_t n = strlen(s);
    return write(fd, s, n) == (ssize_t)n;
}

static const char *x_stream_header(char *out, size_t n)
{
    snprintf(out, n,
             "<?xml version='1.0'?><stream:stream to='%s' version='1.0' "
             "xmlns='jabber:client' "
             "xmlns:stream='http://etherx.jabber.org/streams'>",
             O.domain);
    return out;
}

/* Logs receiver u in (blocking, bounded by a socket timeout), leaves the
 * socket non-blocking in epoll.  Returns 0 on success. */
static int xmpp_login(struct ua *u, uint32_t idx)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct timeval tv = {10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    struct sockaddr_in a = server;
    a.sin_port = htons((uint16_t)O.xmpp_port);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0)
        goto fail;
    size_t cap = 16384, len = 0;
    char *buf = malloc(cap), hdr[512], out[1024];
    if (!buf)
        goto fail;
    unsigned char rnd[12];
    char cnonce[32], cfb[128];
    RAND_bytes(rnd, sizeof(rnd));
    b64enc(rnd, sizeof(rnd), cnonce);
    snprintf(cfb, sizeof(cfb), "n=%s,r=%s", u->name, cnonce);
    char gs2[160], b64[512];
    int gl = snprintf(gs2, sizeof(gs2), "n,,%s", cfb);
    b64enc((unsigned char *)gs2, gl, b64);
    snprintf(out, sizeof(out),
             "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' "
             "mechanism='SCRAM-SHA-256'>%s</auth>",
             b64);
    if (!x_write(fd, x_stream_header(hdr, sizeof(hdr))) ||
        !x_expect(fd, buf, cap, &len, "</stream:features>") ||
        !x_write(fd, out) || !x_expect(fd, buf, cap, &len, "</challenge>"))
        goto fail_buf;
    /* server-first-message */
    char *c = strstr(buf, "<challenge"), *ce;
    c = c ? strchr(c, '>') : NULL;
    ce = c ? strstr(c, "</challenge>") : NULL;
    if (!c || !ce)
        goto fail_buf;
    unsigned char sfm[512];
    int sl = b64dec(c + 1, (int)(ce - c - 1), sfm);
    if (sl <= 0 || sl >= (int)sizeof(sfm))
        goto fail_buf;
    sfm[sl] = 0;
    char *r = strstr((char *)sfm, "r="), *s = strstr((char *)sfm, ",s="),
         *it = strstr((char *)sfm, ",i=");
    if (!r || !s || !it)
        goto fail_buf;
    char nonce[256];
    snprintf(nonce, sizeof(nonce), "%.*s", (int)(s - r - 2), r + 2);
    unsigned char salt[128], salted[32], ckey[32], skey[32], stored[32],
        sig[32], proof[32], ssig[32];
    char *se = strchr(s + 3, ',');
    int saltl = b64dec(s + 3, se ? (int)(se - s - 3) : (int)strlen(s + 3),
                       salt);
    int iters = atoi(it + 3);
    if (saltl <= 0 || iters <= 0)
        goto fail_buf;
    PKCS5_PBKDF2_HMAC(O.password, (int)strlen(O.password), salt, saltl, iters,
                      EVP_sha256(), 32, salted);
    unsigned int ml = 32;
    HMAC(EVP_sha256(), salted, 32, (const unsigned char *)"Client Key", 10,
         ckey, &ml);
    EVP_Digest(ckey, 32, stored, NULL, EVP_sha256(), NULL);
    char cfwp[320], am[1024];
    snprintf(cfwp, sizeof(cfwp), "c=biws,r=%s", nonce);
    int al = snprintf(am, sizeof(am), "%s,%s,%s", cfb, (char *)sfm, cfwp);
    HMAC(EVP_sha256(), stored, 32, (unsigned char *)am, (size_t)al, sig, &ml);
    for (int i = 0; i < 32; i++)
        proof[i] = ckey[i] ^ sig[i];
    HMAC(EVP_sha256(), salted, 32, (const unsigned char *)"Server Key", 10,
         skey, &ml);
    HMAC(EVP_sha256(), skey, 32, (unsigned char *)am, (size_t)al, ssig, &ml);
    (void)ssig;
    char pb[64], cfin[512];
    b64enc(proof, 32, pb);
    int cl = snprintf(cfin, sizeof(cfin), "%s,p=%s", cfwp, pb);
    b64enc((unsigned char *)cfin, cl, b64);
    snprintf(out, sizeof(out),
             "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>%s"
             "</response>",
             b64);
    len = 0;
    if (!x_write(fd, out) || !x_expect(fd, buf, cap, &len, "<success"))
        goto fail_buf;
    len = 0;
    snprintf(out, sizeof(out),
             "<iq type='set' id='b1'><bind "
             "xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>r%u"
             "</resource></bind></iq>",
             idx);
    if (!x_write(fd, x_stream_header(hdr, sizeof(hdr))) ||
        !x_expect(fd, buf, cap, &len, "</stream:features>") ||
        !x_write(fd, out) || !x_expect(fd, buf, cap, &len, "</iq>"))
        goto fail_buf;
    /* Initial presence: a message to the bare JID goes to available
     * resources (RFC 6121 §8.5.2.1.1). */
    len = 0;
    if (!x_write(fd, "<presence/>"))
        goto fail_buf;
    free(buf);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    u->fd = fd;
    u->xmpp = 1;
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = idx};
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    return 0;
fail_buf:
    if (!C.fail_reason[0])
        snprintf(C.fail_reason, sizeof(C.fail_reason), "xmpp login: %.80s",
                 buf);
    free(buf);
fail:
    close(fd);
    return -1;
}

static void xmpp_read(struct ua *u)
{
    for (;;) {
        if (u->incap - u->inlen < 16384) {
            u->incap = u->incap ? u->incap * 2 : 65536;
            u->in = xrealloc(u->in, u->incap);
        }
        ssize_t n = read(u->fd, u->in + u->inlen, u->incap - u->inlen - 1);
        if (n <= 0) {
            if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
                epoll_ctl(ep, EPOLL_CTL_DEL, u->fd, NULL);
                close(u->fd);
                u->fd = -1;
                C.bad++;
            }
            break;
        }
        u->inlen += (size_t)n;
    }
    /* Each complete <message/> ends with </message>: the body of one. */
    size_t off = 0;
    for (;;) {
        char *e = memmem(u->in + off, u->inlen - off, "</message>", 10);
        if (!e)
            break;
        char *k = memmem(u->in + off, (size_t)(e - (u->in + off)), "<body>K,",
                         8);
        if (k)
            delivered(u, k + 8, e);
        off = (size_t)(e - u->in) + 10;
    }
    if (off) {
        memmove(u->in, u->in + off, u->inlen - off);
        u->inlen -= off;
    }
}

/* ---- the loop ---- */

static void (*tick)(void);

static void run_loop(double max_s, int (*done)(void))
{
    struct epoll_event evs[256];
    double end = now_s() + max_s, next_timer = 0;
    while (!stop_flag && now_s() < end && !(done && done())) {
        int n = epoll_wait(ep, evs, 256, 5);
        for (int i = 0; i < n; i++) {
            struct ua *u = &uas[evs[i].data.u32];
            if (u->xmpp)
                xmpp_read(u);
            else
                sip_read(u);
        }
        double now = now_s();
        if (now >= next_timer) {
            txn_timers();
            next_timer = now + 0.05;
        }
        if (tick)
            tick();
    }
}

static void alloc_uas(uint32_t n, int xmpp_from)
{
    uas = calloc(n, sizeof(*uas));
    if (!uas)
        die("calloc");
    nua = n;
    for (uint32_t i = 0; i < n; i++) {
        struct ua *u = &uas[i];
        u->user = O.first + (long)i;
        snprintf(u->name, sizeof(u->name), "%s%ld", O.prefix, u->user);
        snprintf(u->tag, sizeof(u->tag), "%x%x", (unsigned)rand(), i);
        u->fd = -1;
        if (xmpp_from >= 0 && i >= (uint32_t)xmpp_from)
            continue;
        int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
        if (fd < 0)
            die("socket (raise the open-file limit?)");
        int sz = 1 << 20;
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
        struct sockaddr_in a = {.sin_family = AF_INET};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t al = sizeof(a);
        if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
            getsockname(fd, (struct sockaddr *)&a, &al) < 0)
            die("bind");
        u->fd = fd;
        u->port = ntohs(a.sin_port);
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = i};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    }
}

/* Registers UAs [from, to), --concurrency at a time (bounded by
 * --timeout); returns the seconds taken. */
static uint32_t reg_next, reg_to;
static int reg_inflight(void)
{
    return (int)txns_live();
}

static void reg_tick(void)
{
    while (reg_next < reg_to && reg_inflight() < O.concurrency)
        request(reg_next++, K_REGISTER, 0);
}

static int reg_done(void)
{
    return reg_next >= reg_to && txns_live() == 0;
}

static double register_range(uint32_t from, uint32_t to)
{
    double t0 = now_s();
    reg_next = from;
    reg_to = to;
    tick = reg_tick;
    reg_tick();
    run_loop(O.timeout, reg_done);
    tick = NULL;
    return now_s() - t0;
}

static long registered(uint32_t from, uint32_t to)
{
    long n = 0;
    for (uint32_t i = from; i < to; i++)
        n += uas[i].registered;
    return n;
}

static void on_signal(int sig)
{
    (void)sig;
    stop_flag = 1;
}

/* ---- modes ---- */

static int run_register(void)
{
    alloc_uas((uint32_t)O.users, -1);
    find_server_pids();
    long rss0 = server_rss_kib(), pss0 = server_pss_kib();
    double cpu0 = server_cpu_us(), g0 = bench_self_cpu_s();
    double secs = register_range(0, nua);
    double cpu1 = server_cpu_us(), g1 = bench_self_cpu_s();
    long ok = registered(0, nua);
    long rss1 = server_rss_kib(), pss1 = server_pss_kib();
    if (O.settle > 0) {
        /* Let transactions end (64*T1) before the memory is read. */
        run_loop(O.settle, NULL);
        rss1 = server_rss_kib();
        pss1 = server_pss_kib();
    }
    logf_("%ld of %u registered in %.2f s", ok, nua, secs);
    jcommon();
    jstr("status", ok == (long)nua ? "ok" : "incomplete");
    jadd(",\"users\":%u,\"registered\":%ld,\"seconds\":%.3f,"
         "\"per_s\":%.1f",
         nua, ok, secs, secs > 0 ? (double)ok / secs : 0);
    if (O.server_pid && ok) {
        jadd(",\"cpu_us_per_op\":%.1f,\"server_cpu_util\":%.3f",
             (cpu1 - cpu0) / (double)ok, (cpu1 - cpu0) / 1e6 / secs);
        jadd(",\"server_procs\":%d,\"rss_before_kib\":%ld,"
             "\"rss_after_kib\":%ld,\"rss_per_contact_kib\":%.3f,"
             "\"pss_before_kib\":%ld,\"pss_after_kib\":%ld,"
             "\"pss_per_contact_kib\":%.3f,\"settle_s\":%.0f",
             nspid, rss0, rss1, (double)(rss1 - rss0) / (double)ok, pss0, pss1,
             (double)(pss1 - pss0) / (double)ok, O.settle);
    }
    jgen(g1 - g0, secs);
    jflush();
    return ok == (long)nua ? 0 : 1;
}

static int all_quiet(void)
{
    return txns_live() == 0;
}

static int run_message(void)
{
    uint32_t p = (uint32_t)O.pairs;
    int x = O.mode == M_XMPP;
    alloc_uas(2 * p, x ? (int)p : -1);
    find_server_pids();
    /* Setup: every SIP UA registers; XMPP receivers log in. */
    double rs = register_range(0, x ? p : 2 * p);
    long ok = registered(0, x ? p : 2 * p);
    long xok = 0;
    if (x)
        for (uint32_t i = p; i < 2 * p; i++)
            xok += xmpp_login(&uas[i], i) == 0;
    logf_("setup: %ld registered in %.2f s, %ld XMPP receivers", ok, rs, xok);
    if (ok < (long)(x ? p : 2 * p) || (x && xok < (long)p)) {
        jcommon();
        jstr("status", "setup_failed");
        jadd(",\"registered\":%ld,\"xmpp_logged_in\":%ld", ok, xok);
        jflush();
        return 1;
    }
    for (uint32_t i = 0; i < p; i++)
        uas[i].partner = p + i;
    run_loop(0.5, NULL);
    memset(&C, 0, sizeof(C));
    R.sending = 1;
    for (uint32_t i = 0; i < p; i++)
        for (int k = 0; k < O.window; k++)
            msg_send(i);
    run_loop(O.warmup, NULL);
    double g0 = bench_self_cpu_s(), cpu0 = server_cpu_us(), t0 = now_s();
    measuring = 1;
    R.rx_meas = 0;
    run_loop(O.duration, NULL);
    measuring = 0;
    double t1 = now_s(), cpu1 = server_cpu_us(), g1 = bench_self_cpu_s();
    uint64_t meas = R.rx_meas;
    R.sending = 0;
    run_loop(O.drain, all_quiet);
    run_loop(0.3, NULL); /* deliveries answered before they arrived */
    uint64_t sent = 0, uniq = 0, acked = 0;
    for (uint32_t i = 0; i < p; i++) {
        sent += uas[i].tx;
        acked += uas[i].ok;
        uniq += uas[p + i].uniq;
    }
    uint64_t lost = sent > uniq ? sent - uniq : 0;
    double secs = t1 - t0;
    logf_("%" PRIu64 " sent, %" PRIu64 " received once, %" PRIu64
          " dup, %" PRIu64 " lost; %.0f msg/s",
          sent, uniq, C.dup, lost, (double)meas / secs);
    jcommon();
    jstr("status", lost || C.dup || C.timeouts ? "errors" : "ok");
    jadd(",\"pairs\":%u,\"window\":%d,\"messages\":%" PRIu64
         ",\"received\":%" PRIu64 ",\"acked\":%" PRIu64 ",\"lost\":%" PRIu64
         ",\"dup\":%" PRIu64 ",\"rx_retransmissions\":%" PRIu64
         ",\"measured\":%" PRIu64 ",\"msgs_per_s\":%.1f",
         p, O.window, sent, uniq, acked, lost, C.dup, C.rx_retrans, meas,
         (double)meas / secs);
    if (O.server_pid && meas)
        jadd(",\"cpu_us_per_msg\":%.2f,\"server_cpu_util\":%.3f,"
             "\"server_procs\":%d",
             (cpu1 - cpu0) / (double)meas, (cpu1 - cpu0) / 1e6 / secs, nspid);
    jgen(g1 - g0, secs);
    jlatency();
    jflush();
    return lost || C.dup ? 1 : 0;
}

static double pub_t0;

static void pub_tick(void)
{
    if (!R.sending || R.pub_busy)
        return;
    double due = pub_t0 + (double)(R.pub_seq - R.pub_meas0) / O.rate;
    double now = now_s();
    if (now < due)
        return;
    if (now - due > 1.0 / O.rate)
        R.pub_late++;
    R.pub_busy = 1;
    request(0, K_PUBLISH, R.pub_seq++);
}

static int subs_done(void)
{
    for (uint32_t i = 1; i < nua; i++)
        if (!uas[i].subscribed || uas[i].notifies < 1)
            return 0;
    return txns_live() == 0;
}

static uint64_t pub_want;

static int pub_drained(void)
{
    if (R.pub_busy)
        return 0;
    if (R.notify_meas >= pub_want)
        return 1;
    return txns_live() == 0 && now_s() - R.t_last_rx > 3;
}

static int pub_idle(void)
{
    return !R.pub_busy;
}

static int run_publish(void)
{
    uint32_t n = (uint32_t)O.watchers + 1;
    alloc_uas(n, -1);
    find_server_pids();
    double rs = register_range(0, n);
    long ok = registered(0, n);
    /* The presentity's first state, then the subscriptions. */
    R.pub_busy = 1;
    request(0, K_PUBLISH, R.pub_seq++);
    run_loop(O.timeout, pub_idle);
    for (uint32_t i = 1; i < n; i++)
        request(i, K_SUBSCRIBE, 0);
    run_loop(O.timeout, subs_done);
    long subs = 0;
    for (uint32_t i = 1; i < n; i++)
        subs += uas[i].subscribed && uas[i].notifies > 0;
    logf_("setup: %ld registered in %.2f s, publication %s, %ld watchers "
          "subscribed",
          ok, rs, uas[0].etag[0] ? "made" : "failed", subs);
    if (ok < (long)n || !uas[0].etag[0] || subs < (long)n - 1) {
        jcommon();
        jstr("status", "setup_failed");
        jadd(",\"registered\":%ld,\"subscribed\":%ld", ok, subs);
        jflush();
        return 1;
    }
    run_loop(1.0, NULL);
    uint64_t setup_notifies = C.notifies;
    memset(&C, 0, sizeof(C));
    R.pub_meas0 = R.pub_seq;
    double g0 = bench_self_cpu_s(), cpu0 = server_cpu_us();
    pub_t0 = now_s();
    R.sending = 1;
    measuring = 1;
    tick = pub_tick;
    run_loop(O.duration, NULL);
    R.sending = 0;
    /* Until the last NOTIFY of the last state, or 3 s without one once
     * nothing is pending (bounded by --drain). */
    pub_want = (R.pub_seq - R.pub_meas0) * (uint64_t)O.watchers;
    uint64_t want = pub_want;
    run_loop(O.drain, pub_drained);
    measuring = 0;
    tick = NULL;
    double t1 = R.t_last_rx > pub_t0 ? R.t_last_rx : now_s();
    double cpu1 = server_cpu_us(), g1 = bench_self_cpu_s();
    double secs = t1 - pub_t0;
    uint64_t pubs = R.pub_seq - R.pub_meas0;
    uint64_t missing = want > R.notify_meas ? want - R.notify_meas : 0;
    logf_("%" PRIu64 " PUBLISH, %" PRIu64 " NOTIFY (%" PRIu64
          " of the states), %" PRIu64 " missing, %" PRIu64 " dup",
          pubs, C.notifies, R.notify_meas, missing, C.dup);
    jcommon();
    jstr("status", missing || C.dup || C.timeouts ? "errors" : "ok");
    jadd(",\"watchers\":%d,\"rate\":%.1f,\"publishes\":%" PRIu64
         ",\"publish_ok\":%" PRIu64 ",\"publish_late\":%" PRIu64
         ",\"notifies\":%" PRIu64 ",\"expected\":%" PRIu64
         ",\"received\":%" PRIu64 ",\"missing\":%" PRIu64 ",\"dup\":%" PRIu64
         ",\"setup_notifies\":%" PRIu64 ",\"seconds\":%.3f"
         ",\"notifies_per_s\":%.1f",
         O.watchers, O.rate, pubs, R.pub_ok, R.pub_late, C.notifies, want,
         R.notify_meas, missing, C.dup, setup_notifies, secs,
         secs > 0 ? (double)C.notifies / secs : 0);
    if (O.server_pid && C.notifies)
        jadd(",\"cpu_us_per_notify\":%.2f,\"cpu_us_per_publish\":%.1f,"
             "\"server_cpu_util\":%.3f,\"server_procs\":%d",
             (cpu1 - cpu0) / (double)C.notifies,
             pubs ? (cpu1 - cpu0) / (double)pubs : 0,
             (cpu1 - cpu0) / 1e6 / secs, nspid);
    jgen(g1 - g0, secs);
    jlatency();
    jflush();
    return missing || C.dup ? 1 : 0;
}

/* ---- main ---- */

static void usage_exit(FILE *f, int code)
{
    fprintf(f,
            "usage: sip-load --mode register|message|xmpp|publish [options]\n"
            "  --host ADDR --port N     SIP server, UDP (127.0.0.1 5060)\n"
            "  --xmpp-port N            xmpp mode: c2s port (5222)\n"
            "  --domain D               SIP and XMPP domain (localhost)\n"
            "  --prefix P --first N --password PW   accounts P<N>... (sipu, "
            "0,\n"
            "                           benchpass)\n"
            "  --users N --concurrency C   register: UAs (1000), in flight "
            "(50)\n"
            "  --settle S               register: seconds before the memory "
            "is\n"
            "                           read again (0)\n"
            "  --pairs P --window W     message/xmpp: senders, in flight each "
            "(100, 10)\n"
            "  --watchers N --rate R    publish: watchers (100), PUBLISH/s "
            "(20)\n"
            "  --duration S --warmup S --drain S   phases (10, 2, 35)\n"
            "  --timeout S              bound on a setup phase (120)\n"
            "  --alg md5|sha256         digest algorithm answered (md5)\n"
            "  --server-pid PID         server CPU (with its children) and "
            "memory\n"
            "  --label TEXT --quiet\n");
    exit(code);
}

int main(int argc, char **argv)
{
    static const struct option lo[] = {{"mode", 1, 0, 'm'},
                                       {"host", 1, 0, 'H'},
                                       {"port", 1, 0, 'p'},
                                       {"xmpp-port", 1, 0, 'x'},
                                       {"domain", 1, 0, 'd'},
                                       {"prefix", 1, 0, 'P'},
                                       {"first", 1, 0, 'f'},
                                       {"password", 1, 0, 'w'},
                                       {"users", 1, 0, 'u'},
                                       {"concurrency", 1, 0, 'c'},
                                       {"settle", 1, 0, 'S'},
                                       {"pairs", 1, 0, 'n'},
                                       {"window", 1, 0, 'W'},
                                       {"watchers", 1, 0, 'N'},
                                       {"rate", 1, 0, 'r'},
                                       {"duration", 1, 0, 'D'},
                                       {"warmup", 1, 0, 'U'},
                                       {"drain", 1, 0, 'R'},
                                       {"timeout", 1, 0, 't'},
                                       {"alg", 1, 0, 'a'},
                                       {"server-pid", 1, 0, 's'},
                                       {"label", 1, 0, 'l'},
                                       {"quiet", 0, 0, 'q'},
                                       {"help", 0, 0, 'h'},
                                       {0, 0, 0, 0}};
    int c, mode = -1;
    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (c) {
        case 'm':
            for (int i = 0; i < 4; i++)
                if (strcmp(optarg, mode_names[i]) == 0)
                    mode = i;
            break;
        case 'H': O.host = optarg; break;
        case 'p': O.port = atoi(optarg); break;
        case 'x': O.xmpp_port = atoi(optarg); break;
        case 'd': O.domain = optarg; break;
        case 'P': O.prefix = optarg; break;
        case 'f': O.first = atol(optarg); break;
        case 'w': O.password = optarg; break;
        case 'u': O.users = atol(optarg); break;
        case 'c': O.concurrency = atoi(optarg); break;
        case 'S': O.settle = atof(optarg); break;
        case 'n': O.pairs = atol(optarg); break;
        case 'W': O.window = atoi(optarg); break;
        case 'N': O.watchers = atoi(optarg); break;
        case 'r': O.rate = atof(optarg); break;
        case 'D': O.duration = atof(optarg); break;
        case 'U': O.warmup = atof(optarg); break;
        case 'R': O.drain = atof(optarg); break;
        case 't': O.timeout = atof(optarg); break;
        case 'a':
            O.sha256 = strcasecmp(optarg, "sha256") == 0 ||
                       strcasecmp(optarg, "SHA-256") == 0;
            break;
        case 's': O.server_pid = atoi(optarg); break;
        case 'l': O.label = optarg; break;
        case 'q': O.verbose = 0; break;
        case 'h': usage_exit(stdout, 0); break;
        default: usage_exit(stderr, 2);
        }
    }
    if (mode < 0 || optind != argc || O.users < 1 || O.pairs < 1 ||
        O.window < 1 || O.concurrency < 1 || O.watchers < 1 || O.rate <= 0)
        usage_exit(stderr, 2);
    O.mode = (enum mode)mode;
    srand((unsigned)(getpid() ^ (unsigned)time(NULL)));
    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    server.sin_family = AF_INET;
    server.sin_port = htons((uint16_t)O.port);
    if (inet_pton(AF_INET, O.host, &server.sin_addr) != 1)
        usage_exit(stderr, 2);
    ep = epoll_create1(0);
    if (ep < 0)
        die("epoll_create1");
    switch (O.mode) {
    case M_REGISTER: return run_register();
    case M_MESSAGE:
    case M_XMPP: return run_message();
    case M_PUBLISH: return run_publish();
    }
    return 2;
}
