/*
 * bench/parley-load.c - XMPP client load generator for `make bench` (issue 9).
 *
 * One single-threaded epoll loop drives thousands of non-blocking client
 * streams against any XMPP server (Parley, Prosody, ejabberd).  Each stream
 * optionally upgrades with STARTTLS (OpenSSL), authenticates with
 * SCRAM-SHA-256, SCRAM-SHA-1 or PLAIN, binds a resource, and then takes part
 * in one scenario (--mode):
 *
 *   probe     log one user in; report which features the server has
 *             (roster, offline storage) so the bench can skip what is missing
 *   register  create --users accounts with XEP-0077, --rate per second
 *   login     log --users sessions in and out again; logins/s and server CPU
 *   idle      log --users sessions in and hold them; server RSS and kernel
 *             socket memory per session, then keep them for --hold seconds
 *   chat      --pairs P pairs of sessions send each other chat messages,
 *             either with --window W messages in flight per direction (max
 *             throughput) or at a fixed total --rate msg/s; every body holds
 *             the sender, a sequence number and a send timestamp, so the
 *             receiver measures end-to-end latency and counts lost and
 *             duplicated messages
 *   roster    give each of --users accounts --contacts mutual subscriptions
 *             to its neighbours (setup for presence)
 *   presence  --users sessions with rosters come online, then each sends
 *             --rounds presence updates; every contact must receive each one
 *   offline   --pairs senders send --msgs messages each to an offline
 *             partner, who then logs in and must receive all of them
 *   resume    a resumption storm (XEP-0198 §5): --users sessions log in,
 *             enable stream management with resume='true' and keep the
 *             <enabled id/>; each sends --msgs messages to its neighbour
 *             and leaves those it receives unacknowledged; then every
 *             connection is reset at once (SO_LINGER 0: RST, as a network
 *             drop or a client crash looks to the server), and when the
 *             server is idle again all reconnect, --concurrency in flight:
 *             STARTTLS if --tls, SASL, <resume previd h/>.  Measures the
 *             storm from the first reconnect to the last <resumed/> and to
 *             the last resent stanza, each session's latency from its own
 *             connect, <failed/> answers, and server CPU
 *   muc       --users sessions join one room (XEP-0045) on --muc-domain
 *             (conference.<domain>): the first creates it and submits an
 *             instant-room form, the rest join, --concurrency at a time;
 *             then the room gets --rate groupchat messages/s from the
 *             occupants in turn, and every occupant must receive every
 *             message exactly once (bitmaps per occupant: missing
 *             deliveries, room messages that missed an occupant or reached
 *             none; an error bounce is an error, not a delivery); CPU per
 *             delivered message, latency, join time and CPU per join
 *
 * Transport: plain TCP, STARTTLS (--tls), or XMPP over WebSocket (--ws
 * PATH, RFC 7395, plain ws): an HTTP upgrade, then one masked text frame
 * per top-level element each way (see "XMPP over WebSocket" below); the
 * modes' logic is the same over both.
 *
 * Results: one JSON object on one line on stdout; progress on stderr.
 * --help and --version print to stdout and exit 0; a bad command line
 * prints the usage on stderr and exits 2.
 * With --server-pid the generator reads the server's CPU time (utime+stime
 * from /proc/PID/stat) and VmRSS itself at the exact phase boundaries.
 *
 * Connections bind one of --src-ips loopback source addresses (127.0.1.x)
 * before connect, with IP_BIND_ADDRESS_NO_PORT, so one generator is not
 * limited to one address's ephemeral ports.  The open-file limit (20,000
 * here) caps one process at about 19,000 sessions: run several for more.
 *
 * SCRAM: a client derives SaltedPassword with PBKDF2 once per account and
 * keeps it, as real clients do; --key-cache FILE keeps the derived keys
 * between runs so that the measured logins cost the generator a few HMACs,
 * not a PBKDF2.  The server's cost is the same either way.
 *
 * Incoming XML is cut into top-level stanzas by a small tokenizer (tags,
 * quotes, comments, CDATA); stanzas are then inspected with string searches.
 * That is enough for the replies servers send to a client and far cheaper
 * than a full parser; the generator must never be the bottleneck.
 *
 * Extending: add a mode to enum mode and mode_names, its per-stanza logic in
 * on_message/on_presence/on_iq (or, for non-stanza elements such as
 * XEP-0198's, a handler called from on_stanza like on_sm), and its phase
 * driver in main().
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
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
#include "core/version.h"

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

/* ---- options and global state ---- */

enum mode {
    M_PROBE,
    M_REGISTER,
    M_LOGIN,
    M_IDLE,
    M_CHAT,
    M_ROSTER,
    M_PRESENCE,
    M_OFFLINE,
    M_RESUME,
    M_MUC
};
static const char *const mode_names[] = {"probe",    "register", "login",
                                         "idle",     "chat",     "roster",
                                         "presence", "offline",  "resume",
                                         "muc"};

enum mech {
    MECH_NONE,
    MECH_SCRAM256,
    MECH_SCRAM1,
    MECH_PLAIN
};
static const char *const mech_names[] = {"none", "SCRAM-SHA-256", "SCRAM-SHA-1",
                                         "PLAIN"};

static struct {
    enum mode mode;
    const char *host;       /* server address */
    int port;               /* server port */
    int port2;              /* odd sessions' server port (0: port) */
    const char *domain;     /* XMPP domain */
    int tls;                /* use STARTTLS */
    int mech;               /* forced mechanism, MECH_NONE = best offered */
    const char *prefix;     /* user name prefix */
    const char *password;   /* every account's password */
    long first;             /* first user number */
    long users;             /* number of users (register/login/idle/...) */
    long pairs;             /* chat/offline pairs */
    int concurrency;        /* handshakes in flight */
    double rate;            /* connections/s, or messages/s in chat */
    int window;             /* chat: messages in flight per direction */
    double duration;        /* chat: measured seconds */
    double warmup;          /* chat: unmeasured seconds before */
    double drain;           /* seconds to wait for the last messages */
    double timeout;         /* bound on any setup phase */
    double hold;            /* idle: seconds to keep sessions afterwards */
    double settle;          /* idle: seconds to wait before measuring RSS */
    int present;            /* idle: send available presence, answer
                            * XEP-0184 receipt requests (fleet push) */
    int src_ips;            /* source addresses 127.0.1.1 .. */
    int src_base;           /* third octet of the source addresses */
    int server_pid;         /* server to measure, 0 = none */
    const char *key_cache;  /* SCRAM key cache file */
    const char *label;      /* copied into the JSON result */
    int pad;                /* extra body bytes per chat message */
    int contacts;           /* roster: contacts per user (even) */
    int rounds;             /* presence: updates per user */
    int msgs;               /* offline: messages per pair; resume: per
                              session, left unacknowledged */
    double storm_delay;     /* resume: quiet seconds before the storm */
    int storm_conc;         /* resume: reconnections in flight, 0: as
                              concurrency */
    const char *room;       /* muc: room localpart */
    const char *muc_domain; /* muc: service domain, NULL = conference.<d> */
    const char *ws;         /* XMPP over WebSocket at this path, or NULL */
    int sync;               /* wait for a line on stdin before measuring */
    int verbose;            /* progress on stderr; 3 dumps stanzas */
} O = {
    .mode = M_PROBE,
    .host = "127.0.0.1",
    .port = 5222,
    .domain = "localhost",
    .prefix = "bench",
    .password = "benchpass",
    .users = 100,
    .pairs = 100,
    .concurrency = 200,
    .window = 10,
    .duration = 10,
    .warmup = 2,
    .drain = 15,
    .timeout = 300,
    .settle = 2,
    .src_ips = 8,
    .src_base = 1,
    .contacts = 10,
    .rounds = 5,
    .msgs = 10,
    .room = "benchroom",
    .verbose = 1,
};

struct buf {
    char *p;      /* storage */
    uint32_t len; /* bytes held */
    uint32_t cap; /* bytes allocated */
    uint32_t off; /* out: bytes already written */
};

struct scram {
    int hash;               /* MECH_SCRAM256 or MECH_SCRAM1 */
    char cfb[160];          /* client-first-message-bare */
    char nonce[40];         /* client nonce */
    unsigned char ssig[64]; /* expected ServerSignature */
    int dlen;               /* digest length */
};

enum state {
    S_FREE,
    S_CONNECTING,
    S_FEATURES,
    S_STARTTLS,
    S_TLSHS,
    S_REGISTER,
    S_AUTH,
    S_BIND,
    S_SESSION,
    S_READY,
    S_CLOSING
};

struct sess {
    int fd;               /* socket, -1 when free */
    uint32_t id;          /* index in sessions[] */
    long user;            /* user number */
    uint8_t st;           /* enum state */
    uint8_t tls_done;     /* STARTTLS completed */
    uint8_t authed;       /* SASL succeeded */
    uint8_t dirty;        /* listed in the dirty list */
    uint8_t restart;      /* stream restarted during parse */
    uint8_t sess_req;     /* features required <session/> */
    uint8_t counted;      /* finished its setup (ok or failed) */
    uint8_t online;       /* sent initial presence */
    int depth;            /* XML depth, 1 = inside the stream */
    uint32_t scan;        /* tokenizer position in in.p */
    uint32_t stz;         /* start of the current stanza */
    SSL *ssl;             /* TLS, NULL before STARTTLS */
    struct buf in, out;   /* received, to send */
    struct scram *sc;     /* SCRAM state during auth */
    char *jid;            /* full JID bound */
    uint32_t partner;     /* chat/offline partner session */
    uint64_t tx;          /* messages sent */
    uint64_t rx;          /* messages received (all) */
    uint64_t rx_next;     /* next sequence expected from the partner */
    uint64_t rx_dup;      /* duplicates received */
    uint32_t *pnext;      /* presence: next seq per neighbour */
    uint32_t got;         /* subscriptions / offline messages received */
    uint64_t t_start;     /* ns: connect issued */
    uint8_t sm;           /* enum sm_state */
    char *sm_id;          /* resume: <enabled id/> of the session */
    uint32_t h_in;        /* resume: stanzas received since <enable/> */
    uint32_t h_acked;     /* resume: last h sent in <a/> */
    uint32_t resend_left; /* resume: stanzas the server still owes */
    uint8_t joined;       /* muc: own presence (status 110) came */
    uint8_t join_sent;    /* muc: join presence sent */
    uint8_t *seen;        /* muc: bitmap of room messages received */
    uint8_t ws_up;        /* ws: the 101 came; frames flow both ways */
    struct buf raw;       /* ws: bytes received, not yet decoded */
    struct buf wire;      /* ws: bytes to send (upgrade request, frames) */
    char ws_accept[32];   /* ws: the Sec-WebSocket-Accept expected */
};

/* XEP-0198 state of a session (resume mode). */
enum sm_state {
    SM_OFF,
    SM_ENABLING,
    SM_ON,
    SM_RESUMING
};

static struct sess *sessions; /* all sessions of this run */
static uint32_t nsess;        /* sessions in use */
static uint32_t *dirty;       /* sessions with output to flush */
static uint32_t ndirty;
static int ep; /* epoll descriptor */
static SSL_CTX *ssl_ctx;
static volatile sig_atomic_t stop_flag;

/* Counters of the current phase. */
static struct {
    long started, ready, failed, closed_ok, exists, disconnects;
    long inflight; /* connecting or handshaking */
    uint64_t tx, rx, dup, err_msgs;
    uint64_t gaps; /* sequence numbers skipped: lost */
    long subs_sent, subs_got;
    long roster_ok, roster_err; /* roster get answers */
    long sm_failed;             /* <failed/> to <enable/> or <resume/> */
    long sm_missing;            /* stream management not offered */
    char fail_reason[8][96];
    long fail_count[8];
    int mech_used;
} C;

/* ---- small helpers ---- */

static void logf_(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logf_(const char *fmt, ...)
{
    if (!O.verbose)
        return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr,
            "parley-load[%s]: ", O.label ? O.label : mode_names[O.mode]);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static void die(const char *msg)
{
    fprintf(stderr, "parley-load: %s\n", msg);
    exit(2);
}

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n);
    if (!q && n)
        die("out of memory");
    return q;
}

static void buf_reserve(struct buf *b, uint32_t n)
{
    if (b->cap - b->len >= n)
        return;
    uint32_t cap = b->cap ? b->cap : 1024;
    while (cap - b->len < n)
        cap *= 2;
    b->p = xrealloc(b->p, cap);
    b->cap = cap;
}

static void buf_free(struct buf *b)
{
    free(b->p);
    memset(b, 0, sizeof(*b));
}

/* ---- server accounting from /proc ---- */

/* Server CPU time (user + system, all threads) in microseconds. */
static double server_cpu_us(void)
{
    unsigned long ticks;
    if (!O.server_pid || bench_proc_stat(O.server_pid, &ticks, NULL) < 0)
        return 0;
    return bench_ticks_us(ticks);
}

/* Server VmRSS in KiB. */
static long server_rss_kib(void)
{
    return O.server_pid ? bench_proc_kib(O.server_pid, "status", "VmRSS:") : 0;
}

/* Kernel TCP buffer memory (all sockets) in KiB, from /proc/net/sockstat. */
static long sockstat_mem_kib(void)
{
    FILE *f = fopen("/proc/net/sockstat", "r");
    if (!f)
        return 0;
    char line[256];
    long mem = 0;
    while (fgets(line, sizeof(line), f)) {
        char *m = strstr(line, "TCP:");
        if (m && (m = strstr(line, " mem ")))
            mem = atol(m + 5);
    }
    fclose(f);
    return mem * (sysconf(_SC_PAGESIZE) / 1024);
}

/* ---- latency histogram: 1 µs steps to 2 ms, then ~0.1 % steps ---- */

#define H_LIN 2048
#define H_SUB 1024
#define H_NB (H_LIN + 54 * H_SUB)
static uint32_t hist[H_NB];
static uint64_t hist_n, hist_max;

static int hist_bucket(uint64_t us)
{
    if (us < H_LIN)
        return (int)us;
    int e = 63 - __builtin_clzll(us); /* >= 11 */
    int b = H_LIN + (e - 11) * H_SUB + (int)((us >> (e - 10)) & (H_SUB - 1));
    return b < H_NB ? b : H_NB - 1;
}

static uint64_t hist_value(int b)
{
    if (b < H_LIN)
        return (uint64_t)b;
    int e = (b - H_LIN) / H_SUB + 11;
    uint64_t sub = (uint64_t)((b - H_LIN) % H_SUB);
    return ((uint64_t)1 << e) + (sub << (e - 10));
}

static void hist_add(uint64_t us)
{
    hist[hist_bucket(us)]++;
    hist_n++;
    if (us > hist_max)
        hist_max = us;
}

static void hist_reset(void)
{
    memset(hist, 0, sizeof(hist));
    hist_n = hist_max = 0;
}

static uint64_t hist_pct(double p)
{
    if (!hist_n)
        return 0;
    uint64_t want = (uint64_t)(p * (double)hist_n);
    if (want >= hist_n)
        want = hist_n - 1;
    uint64_t seen = 0;
    for (int b = 0; b < H_NB; b++) {
        seen += hist[b];
        if (seen > want)
            return hist_value(b);
    }
    return hist_max;
}

/* ---- JSON result ---- */

/* A member of the object: the '{' or a comma first. */
static void jfield(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void jfield(const char *fmt, ...)
{
    jadd("%c", jlength() ? ',' : '{');
    va_list ap;
    va_start(ap, fmt);
    vjadd(fmt, ap);
    va_end(ap);
}

static void jstr(const char *key, const char *val)
{
    jfield("\"%s\":", key);
    jquote(val);
}

static void j_common(void)
{
    jfield("\"json\":1");
    jstr("mode", mode_names[O.mode]);
    if (O.label)
        jstr("label", O.label);
    jfield("\"tls\":%d", O.tls);
    if (O.ws)
        jstr("transport", "websocket");
    jstr("mech", mech_names[C.mech_used]);
}

static void j_failures(void)
{
    jfield("\"failed\":%ld", C.failed);
    for (int i = 0; i < 8 && C.fail_count[i]; i++) {
        char k[32];
        snprintf(k, sizeof(k), "fail%d", i);
        char v[128];
        snprintf(v, sizeof(v), "%ld x %s", C.fail_count[i], C.fail_reason[i]);
        jstr(k, v);
    }
}

/* The generator's own CPU use over a measured phase: utime+stime per
 * second of wall time, and whether it was the limit (its core nearly
 * full, so the server was not saturated and a rate is a floor). */
#define GEN_LIMITED_UTIL 0.92

static void j_gen(double gcpu_s, double wall_s)
{
    double u = wall_s > 0 ? gcpu_s / wall_s : 0;
    jfield("\"gen_cpu_util\":%.3f,\"gen_limited\":%d", u, u > GEN_LIMITED_UTIL);
}

/* The server's CPU over a measured phase: utime+stime in µs (raw, so
 * that bench/run can combine several generator processes) and its share
 * of a core. */
static void j_server_cpu(double cpu_us, double wall_s)
{
    if (!O.server_pid)
        return;
    jfield("\"server_cpu_us\":%.0f", cpu_us);
    if (wall_s > 0)
        jfield("\"server_cpu_util\":%.3f", cpu_us / 1e6 / wall_s);
}

/* --sync: several generator processes (bench/run) start their measured
 * phase together.  Prints "ready" on stdout and waits for a line on stdin
 * (EOF counts too).  The sessions are idle meanwhile. */
static void sync_barrier(void)
{
    if (!O.sync)
        return;
    printf("ready\n");
    fflush(stdout);
    char line[64];
    if (!fgets(line, sizeof(line), stdin))
        logf_("--sync: stdin closed; starting");
}

/* ---- base64 and SCRAM ---- */

static int b64enc(const unsigned char *in, int n, char *out)
{
    return EVP_EncodeBlock((unsigned char *)out, in, n);
}

/* Decodes base64 text of length n; returns the decoded length or -1. */
static int b64dec(const char *in, int n, unsigned char *out)
{
    while (n > 0 &&
           (in[n - 1] == ' ' || in[n - 1] == '\n' || in[n - 1] == '\r'))
        n--;
    if (n % 4)
        return -1;
    int r = EVP_DecodeBlock(out, (const unsigned char *)in, n);
    if (r < 0)
        return -1;
    if (n >= 1 && in[n - 1] == '=')
        r--;
    if (n >= 2 && in[n - 2] == '=')
        r--;
    return r;
}

static const EVP_MD *mech_md(int m)
{
    return m == MECH_SCRAM256 ? EVP_sha256() : EVP_sha1();
}

/* SaltedPassword cache keyed by (user, hash); see --key-cache. */
struct kentry {
    long user;              /* user number, -1 = empty */
    int hash;               /* mechanism */
    unsigned iter;          /* PBKDF2 iterations */
    unsigned char slen;     /* salt length */
    unsigned char salt[64]; /* salt */
    unsigned char sp[32];   /* SaltedPassword */
};
static struct kentry *kc;
static struct kentry memo = {.user = -1}; /* the last PBKDF2 (user 0) */
static size_t kc_cap, kc_n;
static int kc_dirty;
static long pbkdf2_count;

static size_t kc_slot(long user, int hash)
{
    uint64_t h = (uint64_t)user * 0x9E3779B97F4A7C15ull + (uint64_t)hash;
    size_t i = (size_t)(h >> 17) & (kc_cap - 1);
    while (kc[i].user != -1 && !(kc[i].user == user && kc[i].hash == hash))
        i = (i + 1) & (kc_cap - 1);
    return i;
}

static void kc_put(const struct kentry *e)
{
    if ((kc_n + 1) * 2 > kc_cap) {
        size_t oc = kc_cap;
        struct kentry *old = kc;
        kc_cap = oc ? oc * 2 : 4096;
        kc = xrealloc(NULL, kc_cap * sizeof(*kc));
        for (size_t i = 0; i < kc_cap; i++)
            kc[i].user = -1;
        kc_n = 0;
        for (size_t i = 0; i < oc; i++)
            if (old[i].user != -1)
                kc_put(&old[i]);
        free(old);
    }
    size_t i = kc_slot(e->user, e->hash);
    if (kc[i].user == -1)
        kc_n++;
    kc[i] = *e;
}

static void hex(const unsigned char *p, int n, char *out)
{
    for (int i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", p[i]);
}

static int unhex(const char *s, unsigned char *out, int max)
{
    int n = 0;
    while (s[0] && s[1] && n < max) {
        unsigned v;
        if (sscanf(s, "%2x", &v) != 1)
            break;
        out[n++] = (unsigned char)v;
        s += 2;
    }
    return n;
}

static void kc_load(void)
{
    if (!O.key_cache)
        return;
    FILE *f = fopen(O.key_cache, "r");
    if (!f)
        return;
    char line[512], salt[160], sp[80];
    struct kentry e;
    while (fgets(line, sizeof(line), f)) {
        if (sscanf(line, "%ld %d %u %159s %79s", &e.user, &e.hash, &e.iter,
                   salt, sp) != 5)
            continue;
        e.slen = (unsigned char)unhex(salt, e.salt, sizeof(e.salt));
        if (unhex(sp, e.sp, 32) < 20)
            continue;
        kc_put(&e);
    }
    fclose(f);
}

static void kc_save(void)
{
    if (!O.key_cache || !kc_dirty)
        return;
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s.tmp%d", O.key_cache, (int)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f)
        return;
    char salt[160], sp[80];
    for (size_t i = 0; i < kc_cap; i++) {
        if (kc[i].user == -1)
            continue;
        hex(kc[i].salt, kc[i].slen, salt);
        hex(kc[i].sp, 32, sp);
        fprintf(f, "%ld %d %u %s %s\n", kc[i].user, kc[i].hash, kc[i].iter,
                salt, sp);
    }
    fclose(f);
    rename(tmp, O.key_cache);
}

static void user_name(long u, char *out, size_t n)
{
    snprintf(out, n, "%s%ld", O.prefix, u);
}

/* ---- output queueing ---- */

static void mark_dirty(struct sess *s)
{
    if (!s->dirty) {
        s->dirty = 1;
        dirty[ndirty++] = s->id;
    }
}

static char *out_space(struct sess *s, uint32_t n)
{
    buf_reserve(&s->out, n);
    mark_dirty(s);
    return s->out.p + s->out.len;
}

static void out_mem(struct sess *s, const char *p, size_t n)
{
    memcpy(out_space(s, (uint32_t)n), p, n);
    s->out.len += (uint32_t)n;
}

static void out_str(struct sess *s, const char *p)
{
    out_mem(s, p, strlen(p));
}

static void outf(struct sess *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void outf(struct sess *s, const char *fmt, ...)
{
    char tmp[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n > 0)
        out_mem(s, tmp, (size_t)n < sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1);
}

static void send_header(struct sess *s)
{
    if (O.ws) {
        /* RFC 7395 §3.3.1: the framing namespace's <open/>. */
        outf(s,
             "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='%s' "
             "version='1.0'/>",
             O.domain);
        return;
    }
    outf(s,
         "<?xml version='1.0'?><stream:stream to='%s' xmlns='jabber:client' "
         "xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>",
         O.domain);
}

/* ---- session lifecycle ---- */

static void close_sess(struct sess *s);
static void on_ready(struct sess *s);

static void fail(struct sess *s, const char *why)
{
    int i;
    for (i = 0; i < 8; i++) {
        if (!C.fail_count[i]) {
            snprintf(C.fail_reason[i], sizeof(C.fail_reason[i]), "%s", why);
            break;
        }
        if (strcmp(C.fail_reason[i], why) == 0)
            break;
    }
    if (i < 8)
        C.fail_count[i]++;
    if (s->st == S_READY)
        C.disconnects++;
    else if (!s->counted) {
        s->counted = 1;
        C.failed++;
        C.inflight--;
    }
    if (O.verbose > 1)
        logf_("session %s%ld: %s", O.prefix, s->user, why);
    close_sess(s);
}

static void close_sess(struct sess *s)
{
    if (s->fd < 0)
        return;
    if (s->ssl) {
        SSL_free(s->ssl);
        s->ssl = NULL;
    }
    close(s->fd);
    s->fd = -1;
    buf_free(&s->in);
    buf_free(&s->out);
    buf_free(&s->raw);
    buf_free(&s->wire);
    s->ws_up = 0;
    free(s->sc);
    s->sc = NULL;
    s->st = S_FREE;
}

/* Sends the closing tag, then closes; the server's reply is not awaited. */
static void end_stream(struct sess *s)
{
    out_str(s, O.ws ? "<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>"
                    : "</stream:stream>");
    s->st = S_CLOSING;
}

static void ws_upgrade_request(struct sess *s);

static int sess_start(struct sess *s)
{
    struct sockaddr_in src = {0}, dst = {0};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (O.src_ips > 0) {
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
        src.sin_family = AF_INET;
        src.sin_addr.s_addr = htonl((127u << 24) | ((unsigned)O.src_base << 8) |
                                    (1u + (unsigned)(s->user % O.src_ips)));
        if (bind(fd, (struct sockaddr *)&src, sizeof(src)) < 0) {
            close(fd);
            return -1;
        }
    }
    dst.sin_family = AF_INET;
    /* --port2: the odd sessions on another node of a cluster, so that
     * every chat pair (i, i ^ 1) and half of each roster neighbourhood
     * spans two nodes. */
    dst.sin_port = htons((uint16_t)(O.port2 && (s->id & 1) ? O.port2 : O.port));
    inet_pton(AF_INET, O.host, &dst.sin_addr);
    if (connect(fd, (struct sockaddr *)&dst, sizeof(dst)) < 0 &&
        errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    struct epoll_event ev = {EPOLLIN | EPOLLOUT | EPOLLET | EPOLLRDHUP,
                             {.u32 = s->id}};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
        close(fd);
        return -1;
    }
    s->fd = fd;
    s->t_start = now_ns();
    s->st = S_CONNECTING;
    s->tls_done = s->authed = s->restart = s->sess_req = 0;
    s->counted = s->online = 0;
    s->depth = 0;
    s->scan = s->stz = 0;
    if (O.ws)
        ws_upgrade_request(s);
    send_header(s);
    C.started++;
    C.inflight++;
    return 0;
}

/* ---- raw I/O through TLS or the socket ---- */

/* Returns >0 bytes, 0 on EOF, -1 would block, -2 error. */
static int io_read(struct sess *s, char *p, int n)
{
    if (s->ssl) {
        int r = SSL_read(s->ssl, p, n);
        if (r > 0)
            return r;
        int e = SSL_get_error(s->ssl, r);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
            return -1;
        if (e == SSL_ERROR_ZERO_RETURN)
            return 0;
        ERR_clear_error();
        return -2;
    }
    ssize_t r = read(s->fd, p, (size_t)n);
    if (r > 0)
        return (int)r;
    if (r == 0)
        return 0;
    return (errno == EAGAIN || errno == EINTR) ? -1 : -2;
}

static int io_write(struct sess *s, const char *p, int n)
{
    if (s->ssl) {
        int r = SSL_write(s->ssl, p, n);
        if (r > 0)
            return r;
        int e = SSL_get_error(s->ssl, r);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
            return -1;
        ERR_clear_error();
        return -2;
    }
    ssize_t r = send(s->fd, p, (size_t)n, MSG_NOSIGNAL);
    if (r >= 0)
        return (int)r;
    return (errno == EAGAIN || errno == EINTR) ? -1 : -2;
}


/* ---- XMPP over WebSocket (RFC 7395; RFC 6455 client side) ----
 *
 * With --ws PATH the connection opens with an HTTP upgrade request
 * (queued in s->wire) and waits for the 101.  The generator still queues
 * plain XML in s->out; at flush time ws_encode() cuts it into top-level
 * elements and sends each as one masked text frame.  Received frames are
 * decoded from s->raw into s->in behind a synthetic <stream:stream> root,
 * injected after the 101 and after each stream restart, so parse() sees
 * stanzas at depth 1 as over TCP.  Buffers are per session and grow once:
 * nothing is allocated per message. */

static const char ws_root[] = "<stream:stream>";
static uint32_t ws_rng = 2463534242u; /* xorshift32 state: masking keys */

static uint32_t ws_rand(void)
{
    ws_rng ^= ws_rng << 13;
    ws_rng ^= ws_rng >> 17;
    ws_rng ^= ws_rng << 5;
    return ws_rng;
}

static void ws_root_in(struct sess *s)
{
    buf_reserve(&s->in, sizeof(ws_root));
    memcpy(s->in.p + s->in.len, ws_root, sizeof(ws_root) - 1);
    s->in.len += sizeof(ws_root) - 1;
}

/* Queues the opening handshake (RFC 6455 §4.1) and the expected accept. */
static void ws_upgrade_request(struct sess *s)
{
    unsigned char key[16], dig[20];
    char k64[32], cat[96];
    RAND_bytes(key, sizeof(key));
    b64enc(key, sizeof(key), k64);
    int n = snprintf(cat, sizeof(cat), "%s258EAFA5-E914-47DA-95CA-C5AB0DC85B11",
                     k64);
    EVP_Digest(cat, (size_t)n, dig, NULL, EVP_sha1(), NULL);
    b64enc(dig, sizeof(dig), s->ws_accept);
    buf_reserve(&s->wire, 1024);
    n = snprintf(s->wire.p + s->wire.len, 1024,
                 "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\n"
                 "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                 "Sec-WebSocket-Version: 13\r\n"
                 "Sec-WebSocket-Protocol: xmpp\r\n\r\n",
                 O.ws, O.domain, k64);
    if (n > 0 && n < 1024)
        s->wire.len += (uint32_t)n;
}

/* Appends one masked frame (RFC 6455 §5.2, §5.3) whose payload is the
 * pieces p[0..k) of lengths n[0..k). */
static void ws_frame(struct sess *s, int opcode, const char *const *p,
                     const size_t *n, int k)
{
    uint64_t len = 0;
    for (int i = 0; i < k; i++)
        len += n[i];
    buf_reserve(&s->wire, (uint32_t)len + 14);
    unsigned char *o = (unsigned char *)s->wire.p + s->wire.len;
    uint32_t h = 0;
    o[h++] = (unsigned char)(0x80 | opcode);
    if (len < 126) {
        o[h++] = (unsigned char)(0x80 | len);
    } else if (len < 65536) {
        o[h++] = 0x80 | 126;
        o[h++] = (unsigned char)(len >> 8);
        o[h++] = (unsigned char)len;
    } else {
        o[h++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            o[h++] = (unsigned char)(len >> (8 * i));
    }
    uint32_t m = ws_rand();
    unsigned char mk[4];
    memcpy(mk, &m, 4);
    memcpy(o + h, mk, 4);
    h += 4;
    unsigned char *d = o + h;
    size_t j = 0;
    for (int i = 0; i < k; i++)
        for (size_t x = 0; x < n[i]; x++, j++)
            d[j] = (unsigned char)p[i][x] ^ mk[j & 3];
    s->wire.len += h + (uint32_t)len;
}

/* One top-level element as one text frame; a stanza without a namespace
 * gets xmlns='jabber:client' (RFC 7395 §3.3.3). */
static void ws_element(struct sess *s, const char *e, size_t n)
{
    static const char ns[] = " xmlns='jabber:client'";
    size_t i = 1;
    while (i < n && e[i] != ' ' && e[i] != '>' && e[i] != '/')
        i++;
    size_t nl = i - 1;
    int stanza = (nl == 7 && memcmp(e + 1, "message", 7) == 0) ||
                 (nl == 8 && memcmp(e + 1, "presence", 8) == 0) ||
                 (nl == 2 && memcmp(e + 1, "iq", 2) == 0);
    if (stanza) {
        const char *gt = memchr(e, '>', n);
        size_t tl = gt ? (size_t)(gt - e) : n;
        if (!memmem(e, tl, " xmlns=", 7)) {
            const char *p[3] = {e, ns, e + i};
            size_t l[3] = {i, sizeof(ns) - 1, n - i};
            ws_frame(s, 1, p, l, 3);
            return;
        }
    }
    const char *p[1] = {e};
    size_t l[1] = {n};
    ws_frame(s, 1, p, l, 1);
}

/* Frames every complete top-level element queued in s->out (a small
 * quote-aware tokenizer); an incomplete tail stays for the next flush. */
static void ws_encode(struct sess *s)
{
    char *b = s->out.p;
    uint32_t len = s->out.len, pos = 0, start = 0, done = 0;
    int depth = 0;
    while (pos < len) {
        char *lt = memchr(b + pos, '<', len - pos);
        if (!lt)
            break;
        pos = (uint32_t)(lt - b);
        if (depth == 0)
            start = pos;
        uint32_t q = pos + 1;
        char quote = 0;
        for (; q < len; q++) {
            char c = b[q];
            if (quote) {
                if (c == quote)
                    quote = 0;
            } else if (c == '\'' || c == '"') {
                quote = c;
            } else if (c == '>') {
                break;
            }
        }
        if (q >= len)
            break;
        char c1 = b[pos + 1];
        pos = q + 1;
        if (c1 == '?' || c1 == '!') {
            if (depth == 0)
                done = pos;
            continue;
        }
        if (c1 == '/')
            depth--;
        else if (b[q - 1] != '/')
            depth++;
        if (depth <= 0) {
            depth = 0;
            ws_element(s, b + start, pos - start);
            done = pos;
        }
    }
    if (done) {
        memmove(b, b + done, len - done);
        s->out.len = len - done;
    }
}

static void parse(struct sess *s);
static void stream_closed(struct sess *s);

/* Decodes s->raw: the upgrade answer, then frames (server frames are not
 * masked; continuation payloads append; pings get pongs; a close frame
 * ends the stream).  Text goes to s->in, then parse(). */
static void ws_input(struct sess *s)
{
    char *b = s->raw.p;
    uint32_t len = s->raw.len, pos = 0;
    if (!s->ws_up) {
        char *e = memmem(b, len, "\r\n\r\n", 4);
        if (!e) {
            if (len > 16384)
                fail(s, "websocket: upgrade answer too long");
            return;
        }
        uint32_t hl = (uint32_t)(e - b) + 4;
        if (hl < 12 || memcmp(b, "HTTP/1.1 101", 12) != 0) {
            char why[96];
            const char *eol = memchr(b, '\r', hl);
            snprintf(why, sizeof(why), "websocket upgrade refused: %.*s",
                     (int)(eol && eol - b < 48 ? eol - b : 48), b);
            fail(s, why);
            return;
        }
        if (!memmem(b, hl, s->ws_accept, strlen(s->ws_accept))) {
            fail(s, "websocket: wrong Sec-WebSocket-Accept");
            return;
        }
        s->ws_up = 1;
        pos = hl;
        ws_root_in(s);
        mark_dirty(s); /* the <open/> waits in s->out */
    }
    while (s->fd >= 0 && len - pos >= 2) {
        unsigned char *f = (unsigned char *)b + pos;
        uint32_t avail = len - pos, h = 2;
        uint64_t n = f[1] & 0x7f;
        if (f[1] & 0x80) {
            fail(s, "websocket: masked server frame");
            return;
        }
        if (n == 126) {
            if (avail < 4)
                break;
            n = ((uint64_t)f[2] << 8) | f[3];
            h = 4;
        } else if (n == 127) {
            if (avail < 10)
                break;
            n = 0;
            for (int i = 0; i < 8; i++)
                n = (n << 8) | f[2 + i];
            h = 10;
        }
        if (n > (64u << 20)) {
            fail(s, "websocket: frame larger than 64 MiB");
            return;
        }
        if (avail < h + n)
            break;
        const char *pl = (const char *)f + h;
        pos += h + (uint32_t)n;
        switch (f[0] & 0x0f) {
        case 0: /* continuation */
        case 1: /* text */
            buf_reserve(&s->in, (uint32_t)n + 1);
            memcpy(s->in.p + s->in.len, pl, n);
            s->in.len += (uint32_t)n;
            parse(s);
            break;
        case 8: stream_closed(s); return;
        case 9: {
            const char *p[1] = {pl};
            size_t l[1] = {(size_t)n};
            ws_frame(s, 10, p, l, 1);
            mark_dirty(s);
            break;
        }
        case 10: break;
        default: fail(s, "websocket: binary or unknown frame"); return;
        }
    }
    if (s->fd < 0)
        return;
    memmove(b, b + pos, len - pos);
    s->raw.len = len - pos;
}

static void flush(struct sess *s)
{
    if (s->fd < 0 || s->st == S_CONNECTING || s->st == S_TLSHS)
        return;
    struct buf *w = &s->out;
    if (O.ws) {
        if (s->ws_up)
            ws_encode(s);
        w = &s->wire;
    }
    while (w->off < w->len) {
        int r = io_write(s, w->p + w->off, (int)(w->len - w->off));
        if (r > 0)
            w->off += (uint32_t)r;
        else if (r == -1)
            return;
        else {
            fail(s, "write error");
            return;
        }
    }
    w->off = w->len = 0;
    if (s->st == S_CLOSING && (!O.ws || s->out.len == 0)) {
        if (!s->counted) {
            s->counted = 1;
            C.inflight--;
        }
        close_sess(s);
    }
}

/* ---- stanza inspection helpers ---- */

/* Finds attribute `name` in the start tag at p (len n). */
static int attr(const char *p, size_t n, const char *name, const char **v,
                size_t *vl)
{
    const char *end = memchr(p, '>', n);
    if (!end)
        end = p + n;
    size_t nl = strlen(name);
    for (const char *q = p + 1; q + nl + 2 < end; q++) {
        if ((q[-1] == ' ' || q[-1] == '\t' || q[-1] == '\n' || q[-1] == '\r') &&
            memcmp(q, name, nl) == 0 && q[nl] == '=' &&
            (q[nl + 1] == '\'' || q[nl + 1] == '"')) {
            char quote = q[nl + 1];
            const char *s = q + nl + 2;
            const char *e = memchr(s, quote, (size_t)(end - s));
            if (!e)
                return 0;
            *v = s;
            *vl = (size_t)(e - s);
            return 1;
        }
    }
    return 0;
}

static int attr_is(const char *p, size_t n, const char *name, const char *val)
{
    const char *v;
    size_t vl;
    return attr(p, n, name, &v, &vl) && vl == strlen(val) &&
           memcmp(v, val, vl) == 0;
}

static int has(const char *p, size_t n, const char *needle)
{
    return memmem(p, n, needle, strlen(needle)) != NULL;
}

/* Element name of the stanza, without prefix; returns its length. */
static size_t elname(const char *p, size_t n, const char **name)
{
    size_t i = 1;
    while (i < n && p[i] != ' ' && p[i] != '>' && p[i] != '/' && p[i] != '\t' &&
           p[i] != '\n' && p[i] != '\r')
        i++;
    const char *s = p + 1;
    const char *colon = memchr(s, ':', i - 1);
    if (colon)
        s = colon + 1;
    *name = s;
    return (size_t)(p + i - s);
}

/* Text content of the first <tag>...</tag> (no attributes on tag). */
static int child_text(const char *p, size_t n, const char *open,
                      const char *close, const char **t, size_t *tl)
{
    const char *a = memmem(p, n, open, strlen(open));
    if (!a)
        return 0;
    a += strlen(open);
    const char *b = memmem(a, (size_t)(p + n - a), close, strlen(close));
    if (!b)
        return 0;
    *t = a;
    *tl = (size_t)(b - a);
    return 1;
}

/* Name of the first child element inside an error or stream error. */
static void error_cond(const char *p, size_t n, char *out, size_t on)
{
    const char *e = memmem(p, n, "urn:ietf:params:xml:ns:xmpp-", 28);
    snprintf(out, on, "unknown error");
    if (!e)
        return;
    const char *lt = e;
    while (lt > p && *lt != '<')
        lt--;
    size_t i = 1;
    while (lt + i < p + n && lt[i] != ' ' && lt[i] != '/' && lt[i] != '>')
        i++;
    snprintf(out, on, "%.*s", (int)(i - 1), lt + 1);
}

/* ---- SASL ---- */

static void send_auth(struct sess *s, const char *f, size_t fn)
{
    int m = O.mech;
    if (m == MECH_NONE) {
        if (has(f, fn, "<mechanism>SCRAM-SHA-256</mechanism>"))
            m = MECH_SCRAM256;
        else if (has(f, fn, "<mechanism>SCRAM-SHA-1</mechanism>"))
            m = MECH_SCRAM1;
        else if (has(f, fn, "<mechanism>PLAIN</mechanism>"))
            m = MECH_PLAIN;
        else {
            fail(s, "no usable SASL mechanism offered");
            return;
        }
    } else {
        char want[64];
        snprintf(want, sizeof(want), "<mechanism>%s</mechanism>",
                 mech_names[m]);
        if (!has(f, fn, want)) {
            fail(s, "requested SASL mechanism not offered");
            return;
        }
    }
    C.mech_used = m;
    char user[64];
    user_name(s->user, user, sizeof(user));
    char raw[256], b64[400];
    if (m == MECH_PLAIN) {
        int n = snprintf(raw, sizeof(raw), "%c%s%c%s", 0, user, 0, O.password);
        b64enc((unsigned char *)raw, n, b64);
        outf(s,
             "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' "
             "mechanism='PLAIN'>%s</auth>",
             b64);
    } else {
        struct scram *sc = calloc(1, sizeof(*sc));
        if (!sc)
            die("out of memory");
        s->sc = sc;
        sc->hash = m;
        sc->dlen = m == MECH_SCRAM256 ? 32 : 20;
        unsigned char rnd[18];
        RAND_bytes(rnd, sizeof(rnd));
        b64enc(rnd, sizeof(rnd), sc->nonce);
        snprintf(sc->cfb, sizeof(sc->cfb), "n=%s,r=%s", user, sc->nonce);
        int n = snprintf(raw, sizeof(raw), "n,,%s", sc->cfb);
        b64enc((unsigned char *)raw, n, b64);
        outf(s,
             "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' "
             "mechanism='%s'>%s</auth>",
             mech_names[m], b64);
    }
    s->st = S_AUTH;
}

static void scram_challenge(struct sess *s, const char *p, size_t n)
{
    struct scram *sc = s->sc;
    const char *t;
    size_t tl;
    const char *gt = memchr(p, '>', n);
    if (!sc || !gt) {
        fail(s, "unexpected SASL challenge");
        return;
    }
    t = gt + 1;
    const char *lt = memchr(t, '<', (size_t)(p + n - t));
    tl = lt ? (size_t)(lt - t) : 0;
    unsigned char sf[512];
    if (tl >= sizeof(sf) * 4 / 3) {
        fail(s, "SCRAM challenge too long");
        return;
    }
    int sfl = b64dec(t, (int)tl, sf);
    if (sfl < 0) {
        fail(s, "bad base64 in SCRAM challenge");
        return;
    }
    sf[sfl] = 0;
    if (sfl > 2 && sf[0] == 'v' && sf[1] == '=') {
        /* Final server message sent as a challenge (RFC 6120 §6.4.2
         * allows it); answer with an empty response. */
        out_str(s, "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>");
        return;
    }
    /* server-first-message: r=nonce,s=salt,i=iterations */
    char *r = strstr((char *)sf, "r="), *sa = strstr((char *)sf, ",s="),
         *it = strstr((char *)sf, ",i=");
    if (!r || !sa || !it || strncmp(r + 2, sc->nonce, strlen(sc->nonce)) != 0) {
        fail(s, "bad SCRAM server-first-message");
        return;
    }
    char *rend = strchr(r, ',');
    size_t nonce_len = (size_t)(rend - (r + 2));
    char *send_ = strchr(sa + 3, ',');
    size_t salt_b64_len = send_ ? (size_t)(send_ - (sa + 3)) : strlen(sa + 3);
    unsigned char salt[128];
    int slen = b64dec(sa + 3, (int)salt_b64_len, salt);
    unsigned iter = (unsigned)strtoul(it + 3, NULL, 10);
    if (slen <= 0 || slen > 64 || iter == 0) {
        fail(s, "bad SCRAM salt or iteration count");
        return;
    }
    const EVP_MD *md = mech_md(sc->hash);
    struct kentry e;
    size_t slot = kc_cap ? kc_slot(s->user, sc->hash) : 0;
    if (kc_cap && kc[slot].user == s->user && kc[slot].iter == iter &&
        kc[slot].slen == slen &&
        memcmp(kc[slot].salt, salt, (size_t)slen) == 0) {
        e = kc[slot];
    } else if (memo.user == 0 && memo.hash == sc->hash && memo.iter == iter &&
               memo.slen == slen &&
               memcmp(memo.salt, salt, (size_t)slen) == 0) {
        /* SaltedPassword depends on the password, salt and count only:
         * accounts provisioned with one salt (bench/cluster.py's million)
         * cost one PBKDF2, not one each. */
        e = memo;
        e.user = s->user;
    } else {
        e.user = s->user;
        e.hash = sc->hash;
        e.iter = iter;
        e.slen = (unsigned char)slen;
        memcpy(e.salt, salt, (size_t)slen);
        PKCS5_PBKDF2_HMAC(O.password, (int)strlen(O.password), salt, slen,
                          (int)iter, md, sc->dlen, e.sp);
        pbkdf2_count++;
        memo = e;
        memo.user = 0;
        kc_put(&e);
        kc_dirty = 1;
    }
    unsigned char ck[64], stk[64], sk[64], csig[64], proof[64];
    unsigned dl = 0;
    HMAC(md, e.sp, sc->dlen, (const unsigned char *)"Client Key", 10, ck, &dl);
    EVP_Digest(ck, (size_t)sc->dlen, stk, NULL, md, NULL);
    HMAC(md, e.sp, sc->dlen, (const unsigned char *)"Server Key", 10, sk, &dl);
    char cfwp[256], am[1024];
    int cl = snprintf(cfwp, sizeof(cfwp), "c=biws,r=%.*s", (int)nonce_len,
                      r + 2);
    int al = snprintf(am, sizeof(am), "%s,%s,%s", sc->cfb, (char *)sf, cfwp);
    if (cl <= 0 || al <= 0 || (size_t)al >= sizeof(am)) {
        fail(s, "SCRAM message too long");
        return;
    }
    HMAC(md, stk, sc->dlen, (unsigned char *)am, (size_t)al, csig, &dl);
    for (int i = 0; i < sc->dlen; i++)
        proof[i] = ck[i] ^ csig[i];
    HMAC(md, sk, sc->dlen, (unsigned char *)am, (size_t)al, sc->ssig, &dl);
    char pb[128], msg[512], mb[800];
    b64enc(proof, sc->dlen, pb);
    int ml = snprintf(msg, sizeof(msg), "%s,p=%s", cfwp, pb);
    b64enc((unsigned char *)msg, ml, mb);
    outf(s, "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>%s</response>",
         mb);
}

static int scram_verify(struct sess *s, const char *p, size_t n)
{
    struct scram *sc = s->sc;
    if (!sc)
        return 1;
    const char *gt = memchr(p, '>', n);
    const char *t = gt ? gt + 1 : p + n;
    const char *lt = memchr(t, '<', (size_t)(p + n - t));
    size_t tl = lt ? (size_t)(lt - t) : 0;
    if (tl == 0 || (gt && gt[-1] == '/'))
        return 1; /* v= came earlier as a challenge */
    unsigned char v[256];
    if (tl >= 300)
        return 0;
    int vl = b64dec(t, (int)tl, v);
    if (vl < 3)
        return 0;
    v[vl] = 0;
    char exp[128];
    b64enc(sc->ssig, sc->dlen, exp);
    return strncmp((char *)v, "v=", 2) == 0 && strcmp((char *)v + 2, exp) == 0;
}

/* ---- stream restart and setup flow ---- */

static void restart_stream(struct sess *s)
{
    s->restart = 1;
    s->depth = 0;
    send_header(s);
}

static void start_tls(struct sess *s)
{
    s->ssl = SSL_new(ssl_ctx);
    if (!s->ssl) {
        fail(s, "SSL_new failed");
        return;
    }
    SSL_set_fd(s->ssl, s->fd);
    SSL_set_connect_state(s->ssl);
    SSL_set_tlsext_host_name(s->ssl, O.domain);
    s->st = S_TLSHS;
    s->restart = 1;
    mark_dirty(s); /* flush_dirty() sends the ClientHello */
}

static void tls_step(struct sess *s)
{
    int r = SSL_do_handshake(s->ssl);
    if (r == 1) {
        s->tls_done = 1;
        s->st = S_FEATURES;
        s->depth = 0;
        s->in.len = s->scan = s->stz = 0;
        send_header(s);
        flush(s);
        return;
    }
    int e = SSL_get_error(s->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
        return;
    ERR_clear_error();
    fail(s, "TLS handshake failed");
}

static void send_register(struct sess *s)
{
    char user[64];
    user_name(s->user, user, sizeof(user));
    outf(s,
         "<iq type='set' id='reg'><query xmlns='jabber:iq:register'>"
         "<username>%s</username><password>%s</password></query></iq>",
         user, O.password);
    s->st = S_REGISTER;
}

static void on_features(struct sess *s, const char *p, size_t n)
{
    if (O.tls && !s->tls_done) {
        if (!has(p, n, "<starttls")) {
            fail(s, "server offers no STARTTLS");
            return;
        }
        out_str(s, "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
        s->st = S_STARTTLS;
        return;
    }
    if (!s->authed) {
        if (O.mode == M_REGISTER)
            send_register(s);
        else
            send_auth(s, p, n);
        return;
    }
    if (O.mode == M_RESUME && !has(p, n, "urn:xmpp:sm:3")) {
        C.sm_missing++;
        fail(s, "server offers no stream management");
        return;
    }
    if (O.mode == M_RESUME && s->sm_id) {
        /* XEP-0198 §5: resume instead of binding. */
        outf(s, "<resume xmlns='urn:xmpp:sm:3' previd='%s' h='%" PRIu32 "'/>",
             s->sm_id, s->h_acked);
        s->sm = SM_RESUMING;
        s->st = S_BIND;
        return;
    }
    /* RFC 6121 §1.4 leaves <session/> optional; send it only if required. */
    const char *se = memmem(p, n, "<session", 8);
    s->sess_req = se && !memmem(se, (size_t)(p + n - se), "<optional", 9);
    outf(s, "<iq type='set' id='bind'><bind "
            "xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
            "<resource>r</resource></bind></iq>");
    s->st = S_BIND;
}

static void setup_done(struct sess *s)
{
    if (!s->counted) {
        s->counted = 1;
        C.inflight--;
        C.ready++;
    }
    s->st = S_READY;
    on_ready(s);
}

/* The resource is bound (and the session established if required). */
static void bound(struct sess *s)
{
    if (O.mode == M_RESUME) {
        /* Setup ends with <enabled/>, not with the bind result. */
        out_str(s, "<enable xmlns='urn:xmpp:sm:3' resume='true'/>");
        s->sm = SM_ENABLING;
        return;
    }
    setup_done(s);
}

/* ---- chat ---- */

static struct {
    int sending;          /* senders may send */
    int rate_mode;        /* --rate given */
    uint64_t sent_target; /* rate mode: messages due so far */
    double t0;            /* rate mode: start of sending */
    uint32_t rr;          /* rate mode: next sender */
    uint64_t throttled;   /* rate mode: due but window full */
    int measuring;        /* record latency */
} CH;

static void chat_send(struct sess *s)
{
    struct sess *p = &sessions[s->partner];
    if (!p->jid)
        return;
    uint64_t seq = s->tx++;
    char *o = out_space(s, 256 + (uint32_t)strlen(p->jid) + (uint32_t)O.pad);
    int n = sprintf(o,
                    "<message to='%s' type='chat' id='m%" PRIx64
                    "'><body>K,%" PRIu32 ",%" PRIu64 ",%" PRIu64,
                    p->jid, seq, s->id, seq, now_ns());
    if (O.pad > 0) {
        o[n++] = ',';
        memset(o + n, 'x', (size_t)O.pad);
        n += O.pad;
    }
    memcpy(o + n, "</body></message>", 17);
    n += 17;
    s->out.len += (uint32_t)n;
    C.tx++;
}

static uint64_t parse_u64(const char **pp, const char *end)
{
    uint64_t v = 0;
    const char *p = *pp;
    while (p < end && *p >= '0' && *p <= '9')
        v = v * 10 + (uint64_t)(*p++ - '0');
    if (p < end && *p == ',')
        p++;
    *pp = p;
    return v;
}

static void muc_message(struct sess *s, const char *p, size_t n);

static void on_message(struct sess *s, const char *p, size_t n)
{
    if (O.mode == M_MUC) {
        muc_message(s, p, n);
        return;
    }
    const char *gt = memchr(p, '>', n);
    if (O.present && gt && has(p, n, "urn:xmpp:json:0")) {
        /* A fleet push: count it and acknowledge it (XEP-0184 §5.1). */
        const char *id, *from;
        size_t il, fl;
        C.rx++;
        if (attr(p, (size_t)(gt - p), "id", &id, &il) &&
            has(p, n, "urn:xmpp:receipts")) {
            if (!attr(p, (size_t)(gt - p), "from", &from, &fl)) {
                from = O.domain;
                fl = strlen(O.domain);
            }
            outf(s,
                 "<message to='%.*s'><received xmlns='urn:xmpp:receipts'"
                 " id='%.*s'/></message>",
                 (int)fl, from, (int)il, id);
        }
        return;
    }
    if (gt && attr_is(p, (size_t)(gt - p), "type", "error")) {
        C.err_msgs++;
        return;
    }
    const char *b = memmem(p, n, "<body>K,", 8);
    if (!b) {
        const char *b2 = memmem(p, n, "<body>", 6);
        if (b2 && O.mode == M_OFFLINE && b2 + 8 < p + n && b2[6] == 'O') {
            /* Offline message "O,seq". */
            const char *q = b2 + 8;
            uint64_t seq = parse_u64(&q, p + n);
            s->rx++;
            C.rx++;
            if (seq < s->rx_next) {
                s->rx_dup++;
                C.dup++;
            } else {
                s->rx_next = seq + 1;
            }
        }
        return;
    }
    const char *q = b + 8, *end = p + n;
    uint64_t from = parse_u64(&q, end);
    uint64_t seq = parse_u64(&q, end);
    uint64_t ts = parse_u64(&q, end);
    s->rx++;
    C.rx++;
    if (seq < s->rx_next) {
        s->rx_dup++;
        C.dup++;
    } else {
        /* One sender, one receiver: delivery is in order (RFC 6120
         * §10.1), so a skipped sequence number is a lost message. */
        C.gaps += seq - s->rx_next;
        s->rx_next = seq + 1;
    }
    if (CH.measuring) {
        uint64_t t = now_ns();
        hist_add(t > ts ? (t - ts) / 1000 : 0);
    }
    /* Window mode: a delivery frees a slot of the sender. */
    if (CH.sending && !CH.rate_mode && from < nsess) {
        struct sess *snd = &sessions[from];
        struct sess *rcv = &sessions[snd->partner];
        if (snd->fd >= 0 && snd->st == S_READY &&
            snd->tx - rcv->rx_next < (uint64_t)O.window)
            chat_send(snd);
    }
}

/* ---- muc ---- */

static struct {
    char room[512]; /* room bare JID */
    uint32_t cap;   /* messages the bitmaps can hold */
    uint64_t sent;  /* room messages sent (global sequence) */
    long joined, join_errors, inflight;
    int created, configured;
    char join_error[96];
    uint32_t rr;     /* next sender */
    uint64_t unique; /* first receipts */
} MU;

static void muc_join(struct sess *s)
{
    s->join_sent = 1;
    MU.inflight++;
    outf(s,
         "<presence to='%s/u%ld'><x xmlns='http://jabber.org/protocol/muc'>"
         "<history maxstanzas='0'/></x></presence>",
         MU.room, s->user);
}

static void muc_presence(struct sess *s, const char *p, size_t n,
                         const char *from, size_t fl, int typed,
                         const char *type, size_t tl)
{
    size_t rl = strlen(MU.room);
    if (fl <= rl || memcmp(from, MU.room, rl) != 0 || from[rl] != '/')
        return;
    if (typed && tl == 5 && memcmp(type, "error", 5) == 0) {
        if (!s->joined && s->join_sent) {
            char cond[64];
            error_cond(p, n, cond, sizeof(cond));
            snprintf(MU.join_error, sizeof(MU.join_error), "join: %s", cond);
            MU.join_errors++;
            MU.inflight--;
            s->join_sent = 0;
        }
        return;
    }
    if (typed || s->joined)
        return;
    if (!has(p, n, "code='110'") && !has(p, n, "code=\"110\""))
        return;
    s->joined = 1;
    MU.joined++;
    MU.inflight--;
    if (s->id == 0) {
        MU.created = 1;
        if (has(p, n, "code='201'") || has(p, n, "code=\"201\""))
            outf(s,
                 "<iq type='set' id='muccfg' to='%s'><query xmlns='http://"
                 "jabber.org/protocol/muc#owner'><x xmlns='jabber:x:data' "
                 "type='submit'/></query></iq>",
                 MU.room);
        else
            MU.configured = 1;
    }
}

static void muc_send(struct sess *s)
{
    uint64_t g = MU.sent++;
    outf(s,
         "<message to='%s' type='groupchat' id='g%" PRIu64 "'><body>G,%" PRIu64
         ",%" PRIu64 "</body></message>",
         MU.room, g, g, now_ns());
    C.tx++;
}

static void muc_message(struct sess *s, const char *p, size_t n)
{
    /* A bounce (type='error') may carry the original body: it is an
     * error, not a delivery. */
    const char *gt = memchr(p, '>', n);
    if (gt && attr_is(p, (size_t)(gt - p), "type", "error")) {
        C.err_msgs++;
        return;
    }
    const char *b = memmem(p, n, "<body>G,", 8);
    if (!b)
        return;
    const char *q = b + 8, *end = p + n;
    uint64_t g = parse_u64(&q, end);
    uint64_t ts = parse_u64(&q, end);
    C.rx++;
    if (g >= MU.cap || !s->seen)
        return;
    uint8_t bit = (uint8_t)(1u << (g & 7));
    if (s->seen[g >> 3] & bit) {
        C.dup++;
        return;
    }
    s->seen[g >> 3] |= bit;
    MU.unique++;
    if (CH.measuring) {
        uint64_t t = now_ns();
        hist_add(t > ts ? (t - ts) / 1000 : 0);
    }
}

/* ---- roster and presence ---- */

static long nusers_group; /* users taking part in roster/presence */

static long neighbour(long u, int k)
{
    /* k in [0, contacts): offsets -K/2..-1, 1..K/2 within the group. */
    int half = O.contacts / 2;
    long off = k < half ? (long)(k - half) : (long)(k - half + 1);
    long base = O.first;
    return base +
           ((u - base + off) % nusers_group + nusers_group) % nusers_group;
}

static void send_subscribes(struct sess *s)
{
    char jid[128];
    for (int k = 0; k < O.contacts; k++) {
        user_name(neighbour(s->user, k), jid, sizeof(jid));
        outf(s, "<presence to='%s@%s' type='subscribe'/>", jid, O.domain);
        C.subs_sent++;
    }
}

/* Neighbour slot of user u as seen from s, or -1. */
static int neighbour_slot(struct sess *s, long u)
{
    for (int k = 0; k < O.contacts; k++)
        if (neighbour(s->user, k) == u)
            return k;
    return -1;
}

static long user_from_jid(const char *v, size_t vl)
{
    size_t pl = strlen(O.prefix);
    if (vl <= pl || memcmp(v, O.prefix, pl) != 0)
        return -1;
    long u = 0;
    size_t i = pl;
    if (i >= vl || v[i] < '0' || v[i] > '9')
        return -1;
    while (i < vl && v[i] >= '0' && v[i] <= '9')
        u = u * 10 + (v[i++] - '0');
    return u;
}

static void on_presence(struct sess *s, const char *p, size_t n)
{
    const char *gt = memchr(p, '>', n);
    size_t hl = gt ? (size_t)(gt - p) : n;
    const char *from;
    size_t fl;
    if (!attr(p, hl, "from", &from, &fl))
        return;
    const char *type;
    size_t tl;
    int typed = attr(p, hl, "type", &type, &tl);
    if (O.mode == M_MUC) {
        muc_presence(s, p, n, from, fl, typed, type, tl);
        return;
    }
    if (typed && tl == 9 && memcmp(type, "subscribe", 9) == 0) {
        const char *slash = memchr(from, '/', fl);
        size_t bl = slash ? (size_t)(slash - from) : fl;
        outf(s, "<presence to='%.*s' type='subscribed'/>", (int)bl, from);
        return;
    }
    if (typed && tl == 10 && memcmp(type, "subscribed", 10) == 0) {
        s->got++;
        C.subs_got++;
        return;
    }
    if (typed)
        return;
    /* Available presence: updates carry <status>P,seq,ts</status>. */
    const char *t;
    size_t tln;
    if (!child_text(p, n, "<status>P,", "</status>", &t, &tln))
        return;
    long u = user_from_jid(from, fl);
    if (u == s->user)
        return; /* our own presence reflected back */
    int k = s->pnext ? neighbour_slot(s, u) : -1;
    const char *q = t, *end = t + tln;
    uint64_t seq = parse_u64(&q, end);
    uint64_t ts = parse_u64(&q, end);
    C.rx++;
    if (k >= 0) {
        if (seq < s->pnext[k]) {
            C.dup++;
        } else {
            s->pnext[k] = (uint32_t)seq + 1;
        }
    }
    if (CH.measuring) {
        uint64_t tn = now_ns();
        hist_add(tn > ts ? (tn - ts) / 1000 : 0);
    }
}

/* ---- iq ---- */

static int probe_roster = -1, probe_offline = -1, probe_register = -1;

static void on_iq(struct sess *s, const char *p, size_t n)
{
    const char *gt = memchr(p, '>', n);
    size_t hl = gt ? (size_t)(gt - p) : n;
    const char *id, *type;
    size_t il = 0, tl = 0;
    attr(p, hl, "id", &id, &il);
    if (!attr(p, hl, "type", &type, &tl))
        return;
    int result = tl == 6 && memcmp(type, "result", 6) == 0;
    int error = tl == 5 && memcmp(type, "error", 5) == 0;
    if (!result && !error) {
        /* A request from the server (ping, roster push): answer it. */
        const char *from;
        size_t fl;
        int hf = attr(p, hl, "from", &from, &fl);
        if (tl == 3 && memcmp(type, "set", 3) == 0 &&
            has(p, n, "jabber:iq:roster"))
            outf(s, "<iq type='result' id='%.*s'/>", (int)il, id);
        else if (has(p, n, "urn:xmpp:ping"))
            outf(s, "<iq type='result' id='%.*s'%s%.*s%s/>", (int)il, id,
                 hf ? " to='" : "", hf ? (int)fl : 0, hf ? from : "",
                 hf ? "'" : "");
        else
            outf(s,
                 "<iq type='error' id='%.*s'%s%.*s%s><error type='cancel'>"
                 "<service-unavailable xmlns='urn:ietf:params:xml:ns:"
                 "xmpp-stanzas'/></error></iq>",
                 (int)il, id, hf ? " to='" : "", hf ? (int)fl : 0,
                 hf ? from : "", hf ? "'" : "");
        return;
    }
    char cond[64];
    if (il == 3 && memcmp(id, "reg", 3) == 0) {
        if (result) {
            C.closed_ok++;
        } else {
            error_cond(p, n, cond, sizeof(cond));
            if (strcmp(cond, "conflict") == 0) {
                C.exists++;
            } else {
                char why[96];
                snprintf(why, sizeof(why), "registration refused: %s", cond);
                fail(s, why);
                return;
            }
        }
        if (!s->counted) {
            s->counted = 1;
            C.inflight--;
            C.ready++;
        }
        end_stream(s);
        return;
    }
    if (il == 4 && memcmp(id, "bind", 4) == 0) {
        if (!result) {
            error_cond(p, n, cond, sizeof(cond));
            char why[96];
            snprintf(why, sizeof(why), "bind failed: %s", cond);
            fail(s, why);
            return;
        }
        const char *j;
        size_t jl;
        if (!child_text(p, n, "<jid>", "</jid>", &j, &jl)) {
            fail(s, "bind result without jid");
            return;
        }
        free(s->jid);
        s->jid = strndup(j, jl);
        if (s->sess_req) {
            out_str(s, "<iq type='set' id='sess'><session "
                       "xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>");
            s->st = S_SESSION;
            return;
        }
        bound(s);
        return;
    }
    if (il == 4 && memcmp(id, "sess", 4) == 0) {
        if (!result) {
            fail(s, "session establishment failed");
            return;
        }
        bound(s);
        return;
    }
    if (il == 6 && memcmp(id, "muccfg", 6) == 0) {
        if (result)
            MU.configured = 1;
        else {
            error_cond(p, n, cond, sizeof(cond));
            snprintf(MU.join_error, sizeof(MU.join_error),
                     "room configuration refused: %s", cond);
            MU.configured = -1;
        }
        return;
    }
    if (il == 2 && memcmp(id, "rg", 2) == 0) {
        probe_roster = result;
        if (result)
            C.roster_ok++;
        else
            C.roster_err++;
        return;
    }
    if (il == 2 && memcmp(id, "di", 2) == 0) {
        probe_offline = result && has(p, n, "msgoffline");
        probe_register = result && has(p, n, "jabber:iq:register");
        return;
    }
}

/* ---- stream management (resume) ---- */

static struct {
    int hold_acks; /* leave received stanzas unacknowledged */
    int storm;     /* reconnecting: record latencies */
    uint64_t t0;   /* ns: the storm's first connect */
    uint64_t last_resumed, last_resent; /* ns: latest of each */
    uint64_t *lat_resumed, *lat_resent; /* µs from the session's connect */
    uint64_t *at_resumed;               /* µs from t0 */
    uint64_t resent;                    /* stanzas received again */
} RS;

/* A stanza of the server's count arrived on s (XEP-0198 §4). */
static void sm_count(struct sess *s)
{
    if (s->sm != SM_ON)
        return;
    s->h_in++;
    if (s->resend_left && RS.storm) {
        RS.resent++;
        if (--s->resend_left == 0) {
            uint64_t t = now_ns();
            RS.lat_resent[s->id] = (t - s->t_start) / 1000;
            if (t > RS.last_resent)
                RS.last_resent = t;
        }
    }
}

/* <enabled/>, <resumed/>, <failed/>, <r/>, <a/>; returns 0 if not one. */
static int on_sm(struct sess *s, const char *name, size_t nl, const char *p,
                 size_t n)
{
    const char *v;
    size_t vl;
    if (nl == 7 && memcmp(name, "enabled", 7) == 0) {
        if (!attr(p, n, "id", &v, &vl) || !attr_is(p, n, "resume", "true")) {
            fail(s, "<enabled/> without resumption");
            return 1;
        }
        free(s->sm_id);
        s->sm_id = strndup(v, vl);
        s->sm = SM_ON;
        s->h_in = s->h_acked = 0;
        setup_done(s);
    } else if (nl == 7 && memcmp(name, "resumed", 7) == 0) {
        /* The server resends what follows the h we gave (§5). */
        uint64_t t = now_ns();
        s->sm = SM_ON;
        s->h_in = s->h_acked;
        RS.lat_resumed[s->id] = (t - s->t_start) / 1000;
        RS.at_resumed[s->id] = (t - RS.t0) / 1000;
        if (t > RS.last_resumed)
            RS.last_resumed = t;
        if (!s->resend_left) {
            RS.lat_resent[s->id] = RS.lat_resumed[s->id];
            if (t > RS.last_resent)
                RS.last_resent = t;
        }
        setup_done(s);
    } else if (nl == 6 && memcmp(name, "failed", 6) == 0) {
        char why[96], cond[64];
        error_cond(p, n, cond, sizeof(cond));
        snprintf(why, sizeof(why), "<%s> failed: %s",
                 s->sm == SM_RESUMING ? "resume" : "enable", cond);
        C.sm_failed++;
        fail(s, why);
    } else if (nl == 1 && name[0] == 'r') {
        if (s->sm == SM_ON && !RS.hold_acks) {
            outf(s, "<a xmlns='urn:xmpp:sm:3' h='%" PRIu32 "'/>", s->h_in);
            s->h_acked = s->h_in;
        }
    } else if (nl == 1 && name[0] == 'a') {
        /* The server's count of ours: nothing to resend here. */
    } else {
        return 0;
    }
    return 1;
}

/* ---- stanza dispatch ---- */

static void on_stanza(struct sess *s, const char *p, size_t n)
{
    if (O.verbose > 2)
        fprintf(stderr, "RECV %s%ld: %.*s\n", O.prefix, s->user, (int)n, p);
    const char *name;
    size_t nl = elname(p, n, &name);
    if (nl == 7 && memcmp(name, "message", 7) == 0) {
        sm_count(s);
        on_message(s, p, n);
    } else if (nl == 8 && memcmp(name, "presence", 8) == 0) {
        sm_count(s);
        on_presence(s, p, n);
    } else if (nl == 2 && memcmp(name, "iq", 2) == 0) {
        sm_count(s);
        on_iq(s, p, n);
    } else if (O.mode == M_RESUME && on_sm(s, name, nl, p, n)) {
        /* handled */
    } else if (nl == 8 && memcmp(name, "features", 8) == 0) {
        on_features(s, p, n);
    } else if (nl == 7 && memcmp(name, "proceed", 7) == 0) {
        flush(s);
        start_tls(s);
    } else if (nl == 9 && memcmp(name, "challenge", 9) == 0) {
        scram_challenge(s, p, n);
    } else if (nl == 7 && memcmp(name, "success", 7) == 0) {
        if (!scram_verify(s, p, n)) {
            fail(s, "SCRAM server signature mismatch");
            return;
        }
        free(s->sc);
        s->sc = NULL;
        s->authed = 1;
        s->st = S_FEATURES;
        restart_stream(s);
    } else if (nl == 7 && memcmp(name, "failure", 7) == 0) {
        char why[96], cond[64];
        const char *c = memmem(p, n, "><", 2);
        snprintf(cond, sizeof(cond), "?");
        if (c) {
            size_t i = 2;
            while (c + i < p + n && c[i] != ' ' && c[i] != '/' && c[i] != '>')
                i++;
            snprintf(cond, sizeof(cond), "%.*s", (int)(i - 2), c + 2);
        }
        snprintf(why, sizeof(why), "%s failure: %s",
                 s->st == S_STARTTLS ? "STARTTLS" : "SASL", cond);
        fail(s, why);
    } else if (O.ws && nl == 5 && memcmp(name, "close", 5) == 0) {
        stream_closed(s); /* RFC 7395 §3.6: the server ends the stream */
    } else if (nl == 5 && memcmp(name, "error", 5) == 0) {
        char why[96], cond[64];
        error_cond(p, n, cond, sizeof(cond));
        snprintf(why, sizeof(why), "stream error: %s", cond);
        fail(s, why);
    }
}

/* The server ended the stream (</stream:stream>, or over WebSocket
 * <close/> or a close frame). */
static void stream_closed(struct sess *s)
{
    if (s->st == S_CLOSING) {
        if (!s->counted) {
            s->counted = 1;
            C.inflight--;
        }
        close_sess(s);
        return;
    }
    if (s->st == S_READY)
        C.disconnects++;
    if (!s->counted) {
        s->counted = 1;
        C.inflight--;
        C.failed++;
    }
    close_sess(s);
}

/* Cuts top-level stanzas out of s->in and hands them to on_stanza. */
static void parse(struct sess *s)
{
    char *b = s->in.p;
    uint32_t len = s->in.len, pos = s->scan;
    while (pos < len && s->fd >= 0) {
        char *lt = memchr(b + pos, '<', len - pos);
        if (!lt) {
            pos = len;
            break;
        }
        pos = (uint32_t)(lt - b);
        uint32_t q = pos + 1;
        if (q >= len)
            break;
        uint32_t end;
        if (b[q] == '!') {
            /* Comment or CDATA: skip to its terminator. */
            const char *term = (len - q > 2 && b[q + 1] == '[') ? "]]>" : "-->";
            char *e = memmem(b + q, len - q, term, 3);
            if (!e)
                break;
            pos = (uint32_t)(e - b) + 3;
            continue;
        }
        char quote = 0;
        for (; q < len; q++) {
            char c = b[q];
            if (quote) {
                if (c == quote)
                    quote = 0;
            } else if (c == '\'' || c == '"') {
                quote = c;
            } else if (c == '>') {
                break;
            }
        }
        if (q >= len)
            break; /* incomplete tag */
        end = q + 1;
        char c1 = b[pos + 1];
        if (c1 == '?') {
            pos = end;
            continue;
        }
        if (c1 == '/') {
            s->depth--;
            if (s->depth == 1) {
                on_stanza(s, b + s->stz, end - s->stz);
            } else if (s->depth <= 0) {
                /* </stream:stream> */
                stream_closed(s);
                return;
            }
        } else if (b[q - 1] == '/') {
            if (s->depth == 1)
                on_stanza(s, b + pos, end - pos);
        } else if (s->depth == 0) {
            s->depth = 1; /* stream header */
            if (s->st == S_CONNECTING || s->st == S_FEATURES)
                s->st = S_FEATURES;
        } else {
            if (s->depth == 1)
                s->stz = pos;
            s->depth++;
        }
        pos = end;
        if (s->restart || s->fd < 0)
            break;
    }
    if (s->fd < 0)
        return;
    if (s->restart) {
        s->restart = 0;
        s->in.len = s->scan = s->stz = 0;
        if (O.ws)
            ws_root_in(s); /* the next <open/> answers at depth 1 */
        return;
    }
    uint32_t base = s->depth >= 2 ? s->stz : pos;
    if (base > 0) {
        memmove(b, b + base, len - base);
        s->in.len = len - base;
        if (s->depth >= 2)
            s->stz -= base;
        pos -= base;
    }
    s->scan = pos;
}

/*
 * Reads what the socket holds.  Edge-triggered, so until EAGAIN; but a
 * plain socket's short read took all there was (a later byte raises a
 * new edge), so it needs no second read to hear EAGAIN: half the reads,
 * and the generator's own cost per login is mostly system calls.  Not
 * under TLS (a read returns one record) nor with the peer's FIN flagged
 * (the end is still to be read).
 */
static void do_read(struct sess *s, uint32_t ev)
{
    while (s->fd >= 0 && s->st != S_TLSHS) {
        struct buf *rb = O.ws ? &s->raw : &s->in;
        buf_reserve(rb, 16384);
        if (rb->len > (64u << 20)) {
            fail(s, "stanza larger than 64 MiB");
            return;
        }
        int room = (int)(rb->cap - rb->len);
        int drained_if_short = !s->ssl &&
                               !(ev & (EPOLLRDHUP | EPOLLHUP | EPOLLERR));
        int r = io_read(s, rb->p + rb->len, room);
        if (r > 0) {
            rb->len += (uint32_t)r;
            if (O.ws)
                ws_input(s);
            else
                parse(s);
            if (drained_if_short && r < room)
                return;
            continue;
        }
        if (r == -1)
            return;
        if (s->st == S_CLOSING) {
            close_sess(s);
            return;
        }
        fail(s, r == 0 ? "connection closed by server" : "read error");
        return;
    }
}

static void on_event(struct sess *s, uint32_t ev)
{
    if (s->fd < 0)
        return;
    if (s->st == S_CONNECTING) {
        int err = 0;
        socklen_t l = sizeof(err);
        /* Writable without an error flagged: connected. */
        if (ev & (EPOLLERR | EPOLLHUP))
            getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &l);
        if ((ev & (EPOLLERR | EPOLLHUP)) && !err)
            err = ECONNREFUSED;
        if (err) {
            char why[96];
            snprintf(why, sizeof(why), "connect: %s", strerror(err));
            fail(s, why);
            return;
        }
        if (!(ev & EPOLLOUT))
            return;
        s->st = S_FEATURES;
        flush(s);
    }
    if (s->st == S_TLSHS) {
        tls_step(s);
        if (s->fd < 0 || s->st == S_TLSHS)
            return;
    }
    if (ev & EPOLLOUT)
        flush(s);
    if (s->fd >= 0 && (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)))
        do_read(s, ev);
}

static void flush_dirty(void)
{
    for (uint32_t i = 0; i < ndirty; i++) {
        struct sess *s = &sessions[dirty[i]];
        s->dirty = 0;
        if (s->fd >= 0)
            flush(s);
        /* A start_tls() during parse leaves a handshake to begin. */
        if (s->fd >= 0 && s->st == S_TLSHS && !s->tls_done)
            tls_step(s);
    }
    ndirty = 0;
}

/* Runs the loop for up to `max_s` seconds or until done() is true. */
static void (*tick_fn)(void);
static int poll_ms = 100;

static void run_loop(double max_s, int (*done)(void))
{
    struct epoll_event evs[1024];
    double end = now_s() + max_s;
    while (!stop_flag) {
        if (done && done())
            return;
        double left = end - now_s();
        if (left <= 0)
            return;
        int to = poll_ms;
        if (left * 1000 < to)
            to = (int)(left * 1000) + 1;
        int n = epoll_wait(ep, evs, 1024, to);
        for (int i = 0; i < n; i++)
            on_event(&sessions[evs[i].data.u32], evs[i].events);
        if (tick_fn)
            tick_fn();
        flush_dirty();
    }
}

/* ---- connection pacing for setup phases ---- */

static uint32_t pace_next,
    pace_end; /* sessions [pace_next, pace_end) to start */
static double pace_t0;

static void pace_tick(void)
{
    double el = now_s() - pace_t0;
    while (pace_next < pace_end && C.inflight < O.concurrency) {
        if (O.rate > 0 && O.mode != M_CHAT && O.mode != M_MUC &&
            (double)(pace_next + 1) > el * O.rate + 1)
            break;
        struct sess *s = &sessions[pace_next++];
        if (sess_start(s) < 0) {
            C.started++;
            C.inflight++;
            fail(s, "socket/connect failed (out of ports or files?)");
        }
    }
}

static int pace_done(void)
{
    return pace_next >= pace_end && C.inflight <= 0;
}

/* Starts sessions [from, to) and runs until all are set up (bounded). */
static double setup_range(uint32_t from, uint32_t to)
{
    double t0 = now_s();
    pace_next = from;
    pace_end = to;
    pace_t0 = t0;
    void (*saved)(void) = tick_fn;
    tick_fn = pace_tick;
    int saved_poll = poll_ms;
    poll_ms = O.rate > 0 ? 2 : 20;
    pace_tick();
    flush_dirty();
    run_loop(O.timeout, pace_done);
    tick_fn = saved;
    poll_ms = saved_poll;
    if (!pace_done()) {
        long stuck = C.inflight;
        for (uint32_t i = from; i < to; i++)
            if (sessions[i].fd >= 0 && !sessions[i].counted)
                fail(&sessions[i], "setup timed out");
        logf_("setup timed out with %ld sessions in flight", stuck);
    }
    return now_s() - t0;
}

static void on_ready(struct sess *s)
{
    switch (O.mode) {
    case M_LOGIN: end_stream(s); break;
    case M_MUC: out_str(s, "<presence/>"); break;
    case M_PROBE:
        outf(s,
             "<iq type='get' id='rg'><query xmlns='jabber:iq:roster'/></iq>"
             "<iq type='get' id='di' to='%s'><query "
             "xmlns='http://jabber.org/protocol/disco#info'/></iq>",
             O.domain);
        break;
    default: break;
    }
}

static void alloc_sessions(uint32_t n)
{
    sessions = calloc(n, sizeof(*sessions));
    dirty = calloc(n, sizeof(*dirty));
    if (!sessions || !dirty)
        die("out of memory");
    for (uint32_t i = 0; i < n; i++) {
        sessions[i].fd = -1;
        sessions[i].id = i;
        sessions[i].user = O.first + (long)i;
    }
    nsess = n;
}

static void close_all(void)
{
    for (uint32_t i = 0; i < nsess; i++)
        if (sessions[i].fd >= 0)
            end_stream(&sessions[i]);
    flush_dirty();
    for (uint32_t i = 0; i < nsess; i++)
        close_sess(&sessions[i]);
}

/* ---- rate-mode chat sender ---- */

static void rate_tick(void)
{
    if (!CH.sending)
        return;
    uint64_t due = (uint64_t)((now_s() - CH.t0) * O.rate);
    uint32_t senders = nsess;
    uint32_t tried = 0;
    while (CH.sent_target < due) {
        struct sess *s = &sessions[CH.rr];
        CH.rr = (CH.rr + 1) % senders;
        struct sess *p = &sessions[s->partner];
        if (s->fd >= 0 && s->st == S_READY &&
            s->tx - p->rx_next < (uint64_t)O.window) {
            chat_send(s);
            CH.sent_target++;
            tried = 0;
        } else if (++tried >= senders) {
            CH.throttled += due - CH.sent_target;
            CH.sent_target = due;
            break;
        }
    }
}

static uint64_t chat_outstanding(void)
{
    uint64_t o = 0;
    for (uint32_t i = 0; i < nsess; i++) {
        struct sess *s = &sessions[i];
        struct sess *p = &sessions[s->partner];
        if (p->fd >= 0 && s->tx > p->rx_next)
            o += s->tx - p->rx_next;
    }
    return o;
}

static int drained(void)
{
    return chat_outstanding() == 0;
}

static int offline_done(void)
{
    return C.rx - C.dup >= C.tx;
}

static int probe_done(void)
{
    return probe_roster >= 0 && probe_offline >= 0;
}

static int live_sessions(void)
{
    int n = 0;
    for (uint32_t i = 0; i < nsess; i++)
        n += sessions[i].fd >= 0 && sessions[i].st == S_READY;
    return n;
}

static void on_signal(int sig)
{
    (void)sig;
    stop_flag = 1;
}

/* ---- modes ---- */

static int run_chat(void)
{
    uint32_t n = (uint32_t)(2 * O.pairs);
    alloc_sessions(n);
    for (uint32_t i = 0; i < n; i++)
        sessions[i].partner = i ^ 1;
    double t = setup_range(0, n);
    logf_("%ld of %u sessions logged in in %.1f s", C.ready, n, t);
    j_common();
    jfield("\"pairs\":%ld", O.pairs);
    if (C.ready < (long)n) {
        jfield("\"status\":\"setup_failed\"");
        j_failures();
        jflush();
        return 2;
    }
    sync_barrier();
    CH.rate_mode = O.rate > 0;
    if (CH.rate_mode)
        jfield("\"rate\":%.0f", O.rate);
    else
        jfield("\"window\":%d", O.window);
    C.tx = C.rx = C.dup = C.gaps = 0;
    CH.sending = 1;
    CH.t0 = now_s();
    if (CH.rate_mode) {
        tick_fn = rate_tick;
        poll_ms = 1;
    } else {
        for (uint32_t i = 0; i < n; i++)
            for (int k = 0; k < O.window; k++)
                chat_send(&sessions[i]);
        flush_dirty();
    }
    run_loop(O.warmup, NULL);
    /* Measured interval. */
    hist_reset();
    CH.measuring = 1;
    double cpu0 = server_cpu_us(), gcpu0 = bench_self_cpu_s(), t0 = now_s();
    uint64_t rx0 = C.rx, thr0 = CH.throttled;
    run_loop(O.duration, NULL);
    double t1 = now_s();
    uint64_t rx1 = C.rx;
    double gcpu1 = bench_self_cpu_s();
    CH.sending = 0;
    run_loop(O.drain, drained);
    double cpu2 = server_cpu_us(), t2 = now_s();
    uint64_t rx2 = C.rx;
    CH.measuring = 0;
    /* Lost: skipped sequence numbers.  Undelivered: still missing at the
     * end of the drain with nothing sent after them (an overloaded server
     * still holding them, or lost at the tail); reported apart. */
    uint64_t uniq = C.rx - C.dup;
    uint64_t missing = C.tx > uniq ? C.tx - uniq : 0;
    uint64_t lost = C.gaps;
    uint64_t undelivered = missing > lost ? missing - lost : 0;
    double mps = (double)(rx1 - rx0) / (t1 - t0);
    uint64_t thr = CH.throttled - thr0;
    jfield("\"status\":\"%s\"", (lost || C.dup || C.disconnects) ? "errors"
                                : (undelivered || thr) ? "not_sustained"
                                                       : "ok");
    jfield("\"sent\":%" PRIu64 ",\"received\":%" PRIu64, C.tx, C.rx);
    jfield("\"lost\":%" PRIu64 ",\"dup\":%" PRIu64 ",\"undelivered\":%" PRIu64
           ",\"error_msgs\":%" PRIu64,
           lost, C.dup, undelivered, C.err_msgs);
    jfield("\"disconnects\":%ld", C.disconnects);
    jfield("\"msgs_per_s\":%.0f", mps);
    jfield("\"measured_s\":%.2f,\"drain_s\":%.2f", t1 - t0, t2 - t1);
    if (O.server_pid && rx2 > rx0)
        jfield("\"cpu_us_per_msg\":%.2f", (cpu2 - cpu0) / (double)(rx2 - rx0));
    jfield("\"measured_rx\":%" PRIu64, rx2 - rx0);
    j_server_cpu(cpu2 - cpu0, t2 - t0);
    j_gen(gcpu1 - gcpu0, t1 - t0);
    jfield("\"lat_n\":%" PRIu64 ",\"p50_us\":%" PRIu64 ",\"p99_us\":%" PRIu64
           ",\"p999_us\":%" PRIu64 ",\"max_us\":%" PRIu64,
           hist_n, hist_pct(0.50), hist_pct(0.99), hist_pct(0.999), hist_max);
    if (CH.rate_mode)
        jfield("\"throttled\":%" PRIu64, CH.throttled - thr0);
    logf_("%.0f msg/s, p50 %" PRIu64 " us, p99 %" PRIu64 " us, lost %" PRIu64
          ", dup %" PRIu64 ", undelivered %" PRIu64,
          mps, hist_pct(0.5), hist_pct(0.99), lost, C.dup, undelivered);
    jflush();
    close_all();
    return 0;
}

static int run_offline(void)
{
    /* Senders [0, P) are online; receivers [P, 2P) log in later. */
    uint32_t P = (uint32_t)O.pairs, n = 2 * P;
    alloc_sessions(n);
    for (uint32_t i = 0; i < P; i++) {
        sessions[i].partner = i + P;
        sessions[i + P].partner = i;
    }
    j_common();
    jfield("\"pairs\":%ld,\"msgs\":%d", O.pairs, O.msgs);
    setup_range(0, P);
    if (C.ready < O.pairs) {
        jfield("\"status\":\"setup_failed\"");
        j_failures();
        jflush();
        return 2;
    }
    double cpu0 = server_cpu_us(), t0 = now_s(), gcpu0 = bench_self_cpu_s();
    char jid[128];
    for (uint32_t i = 0; i < P; i++) {
        user_name(sessions[i + P].user, jid, sizeof(jid));
        for (int k = 0; k < O.msgs; k++) {
            outf(&sessions[i],
                 "<message to='%s@%s' type='chat'><body>O,%d"
                 "</body></message>",
                 jid, O.domain, k);
            C.tx++;
        }
    }
    flush_dirty();
    /* Storage is asynchronous: wait until the server is idle (bounded). */
    double lastcpu = server_cpu_us();
    for (int i = 0; i < 600 && !stop_flag; i++) {
        run_loop(0.5, NULL);
        double c = server_cpu_us();
        if (c - lastcpu < 0.02 * 0.5e6 && i >= 2)
            break;
        lastcpu = c;
    }
    double cpu1 = server_cpu_us(), t1 = now_s(), gcpu1 = bench_self_cpu_s();
    if (C.err_msgs) {
        jfield("\"status\":\"unsupported\",\"error_msgs\":%" PRIu64,
               C.err_msgs);
        jflush();
        close_all();
        return 3;
    }
    long before = C.ready;
    setup_range(P, n);
    if (C.ready - before < O.pairs) {
        jfield("\"status\":\"setup_failed\"");
        j_failures();
        jflush();
        return 2;
    }
    /* Flush happens on initial presence. */
    double t2 = now_s(), cpu2 = server_cpu_us(), gcpu2 = bench_self_cpu_s();
    for (uint32_t i = P; i < n; i++)
        out_str(&sessions[i], "<presence/>");
    flush_dirty();
    run_loop(O.drain + (double)O.pairs * O.msgs / 2000.0, offline_done);
    double t3 = now_s(), cpu3 = server_cpu_us(), gcpu3 = bench_self_cpu_s();
    uint64_t lost = C.tx > C.rx - C.dup ? C.tx - (C.rx - C.dup) : 0;
    jfield("\"status\":\"%s\"", lost || C.dup ? "errors" : "ok");
    jfield("\"sent\":%" PRIu64 ",\"received\":%" PRIu64 ",\"lost\":%" PRIu64
           ",\"dup\":%" PRIu64,
           C.tx, C.rx, lost, C.dup);
    /* Both measured phases: storing, then the flush at login. */
    j_server_cpu((cpu1 - cpu0) + (cpu3 - cpu2), (t1 - t0) + (t3 - t2));
    j_gen((gcpu1 - gcpu0) + (gcpu3 - gcpu2), (t1 - t0) + (t3 - t2));
    jfield("\"store_s\":%.2f,\"flush_s\":%.2f", t1 - t0, t3 - t2);
    if (O.server_pid && C.tx) {
        jfield("\"store_cpu_us_per_msg\":%.2f", (cpu1 - cpu0) / (double)C.tx);
        if (C.rx)
            jfield("\"flush_cpu_us_per_msg\":%.2f",
                   (cpu3 - cpu2) / (double)C.rx);
    }
    jflush();
    close_all();
    return 0;
}

static int rosters_done(void)
{
    return C.roster_ok + C.roster_err >= (long)nsess;
}

/* Every session requests its roster: RFC 6121 §2.1.6 makes it an
 * "interested resource", and only those receive subscription state changes
 * (Prosody follows that to the letter).  Returns 0 if rosters are missing. */
static int get_rosters(void)
{
    for (uint32_t i = 0; i < nsess; i++)
        out_str(&sessions[i], "<iq type='get' id='rg'><query "
                              "xmlns='jabber:iq:roster'/></iq>");
    flush_dirty();
    run_loop(60, rosters_done);
    return C.roster_ok > 0 && C.roster_err == 0;
}

static int subs_done(void)
{
    return C.subs_got >= C.subs_sent;
}

static int run_roster(void)
{
    uint32_t n = (uint32_t)O.users;
    nusers_group = O.users;
    alloc_sessions(n);
    double t = setup_range(0, n);
    j_common();
    jfield("\"users\":%ld,\"contacts\":%d", O.users, O.contacts);
    if (C.ready < (long)n) {
        jfield("\"status\":\"setup_failed\"");
        j_failures();
        jflush();
        return 2;
    }
    logf_("%u sessions in %.1f s; subscribing", n, t);
    if (!get_rosters()) {
        jfield("\"status\":\"unsupported\"");
        jflush();
        close_all();
        return 3;
    }
    double cpu0 = server_cpu_us(), t0 = now_s(), gcpu0 = bench_self_cpu_s();
    for (uint32_t i = 0; i < n; i++) {
        out_str(&sessions[i], "<presence/>");
        send_subscribes(&sessions[i]);
    }
    flush_dirty();
    run_loop(O.timeout, subs_done);
    double t1 = now_s(), gcpu1 = bench_self_cpu_s(), cpu1 = server_cpu_us();
    jfield("\"status\":\"%s\"", subs_done() ? "ok" : "incomplete");
    jfield("\"subscriptions\":%ld,\"confirmed\":%ld,\"seconds\":%.2f",
           C.subs_sent, C.subs_got, t1 - t0);
    if (O.server_pid && C.subs_got)
        jfield("\"cpu_us_per_subscription\":%.1f",
               (cpu1 - cpu0) / (double)C.subs_got);
    j_server_cpu(cpu1 - cpu0, t1 - t0);
    j_gen(gcpu1 - gcpu0, t1 - t0);
    jflush();
    close_all();
    return subs_done() ? 0 : 2;
}

static int pres_done(void)
{
    return C.rx >= C.tx;
}

static int run_presence(void)
{
    uint32_t n = (uint32_t)O.users;
    nusers_group = O.users;
    alloc_sessions(n);
    for (uint32_t i = 0; i < n; i++) {
        sessions[i].pnext = calloc((size_t)O.contacts, sizeof(uint32_t));
        if (!sessions[i].pnext)
            die("out of memory");
    }
    setup_range(0, n);
    j_common();
    jfield("\"users\":%ld,\"contacts\":%d,\"rounds\":%d", O.users, O.contacts,
           O.rounds);
    if (C.ready < (long)n) {
        jfield("\"status\":\"setup_failed\"");
        j_failures();
        jflush();
        return 2;
    }
    if (!get_rosters()) {
        jfield("\"status\":\"unsupported\"");
        jflush();
        close_all();
        return 3;
    }
    /* Initial presence from everyone, then settle. */
    double cpu0 = server_cpu_us(), t0 = now_s();
    for (uint32_t i = 0; i < n; i++)
        out_str(&sessions[i], "<presence/>");
    flush_dirty();
    run_loop(3, NULL);
    double cpu1 = server_cpu_us(), t1 = now_s();
    C.rx = C.tx = C.dup = 0;
    for (uint32_t i = 0; i < n; i++)
        memset(sessions[i].pnext, 0, (size_t)O.contacts * sizeof(uint32_t));
    hist_reset();
    CH.measuring = 1;
    double cpu2 = server_cpu_us(), t2 = now_s(), gcpu2 = bench_self_cpu_s();
    for (int r = 0; r < O.rounds && !stop_flag; r++) {
        for (uint32_t i = 0; i < n; i++) {
            outf(&sessions[i],
                 "<presence><status>P,%d,%" PRIu64 "</status></presence>", r,
                 now_ns());
            C.tx += (uint64_t)O.contacts;
        }
        flush_dirty();
        run_loop(O.drain, pres_done);
    }
    double cpu3 = server_cpu_us(), t3 = now_s(), gcpu3 = bench_self_cpu_s();
    CH.measuring = 0;
    uint64_t lost = C.tx > C.rx - C.dup ? C.tx - (C.rx - C.dup) : 0;
    jfield("\"status\":\"%s\"", lost || C.dup ? "errors" : "ok");
    jfield("\"expected\":%" PRIu64 ",\"received\":%" PRIu64 ",\"lost\":%" PRIu64
           ",\"dup\":%" PRIu64,
           C.tx, C.rx, lost, C.dup);
    jfield("\"initial_s\":%.2f,\"updates_s\":%.2f", t1 - t0, t3 - t2);
    if (O.server_pid) {
        jfield("\"initial_cpu_us_per_user\":%.1f", (cpu1 - cpu0) / (double)n);
        if (C.rx)
            jfield("\"cpu_us_per_delivered_presence\":%.2f",
                   (cpu3 - cpu2) / (double)C.rx);
    }
    jfield("\"deliveries_per_s\":%.0f", (double)C.rx / (t3 - t2));
    j_server_cpu(cpu3 - cpu2, t3 - t2);
    j_gen(gcpu3 - gcpu2, t3 - t2);
    jfield("\"p50_us\":%" PRIu64 ",\"p99_us\":%" PRIu64 ",\"max_us\":%" PRIu64,
           hist_pct(0.5), hist_pct(0.99), hist_max);
    jflush();
    close_all();
    return 0;
}

static int delivered(void)
{
    return C.rx >= C.tx;
}

/* Waits (bounded) until the server's CPU use falls below 2 %. */
static void wait_server_idle(double max_s)
{
    double last = server_cpu_us(), end = now_s() + max_s;
    for (int i = 0; now_s() < end && !stop_flag; i++) {
        run_loop(0.5, NULL);
        double c = server_cpu_us();
        if (c - last < 0.02 * 0.5e6 && i >= 1)
            break;
        last = c;
    }
}

/* Resets every connection at once: SO_LINGER 0 makes close() send RST
 * without a TLS close_notify or </stream:stream>, so each session is
 * left for resumption. */
static void drop_all(void)
{
    struct linger lg = {1, 0};
    for (uint32_t i = 0; i < nsess; i++) {
        struct sess *s = &sessions[i];
        if (s->fd < 0)
            continue;
        setsockopt(s->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
        close_sess(s);
    }
    ndirty = 0;
}

static int resent_done(void)
{
    for (uint32_t i = 0; i < nsess; i++)
        if (sessions[i].fd >= 0 && sessions[i].st == S_READY &&
            sessions[i].resend_left)
            return 0;
    return 1;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Sorts the recorded values of v (UINT64_MAX = none) in place; returns
 * how many there are. */
static uint32_t sort_recorded(uint64_t *v, uint32_t n)
{
    qsort(v, n, sizeof(*v), cmp_u64);
    uint32_t k = 0;
    while (k < n && v[k] != UINT64_MAX)
        k++;
    return k;
}

static double pct_ms(const uint64_t *v, uint32_t k, double p)
{
    if (!k)
        return 0;
    uint32_t i = (uint32_t)(p * (double)k);
    return (double)v[i < k ? i : k - 1] / 1000.0;
}

static int run_resume(void)
{
    uint32_t n = (uint32_t)O.users;
    alloc_sessions(n);
    RS.lat_resumed = malloc(n * sizeof(uint64_t));
    RS.lat_resent = malloc(n * sizeof(uint64_t));
    RS.at_resumed = malloc(n * sizeof(uint64_t));
    if (!RS.lat_resumed || !RS.lat_resent || !RS.at_resumed)
        die("out of memory");
    for (uint32_t i = 0; i < n; i++) {
        sessions[i].partner = (i + 1) % n;
        RS.lat_resumed[i] = RS.lat_resent[i] = RS.at_resumed[i] = UINT64_MAX;
    }
    double t = setup_range(0, n);
    logf_("%ld of %u sessions bound with stream management in %.1f s", C.ready,
          n, t);
    j_common();
    jfield("\"users\":%u,\"msgs\":%d,\"concurrency\":%d", n, O.msgs,
           O.storm_conc > 0 ? O.storm_conc : O.concurrency);
    if (C.ready < (long)n) {
        jfield("\"status\":\"%s\"",
               C.sm_missing ? "unsupported" : "setup_failed");
        j_failures();
        jflush();
        close_all();
        return C.sm_missing ? 3 : 2;
    }
    jfield("\"setup_s\":%.2f", t);
    /* Messages that arrive but stay unacknowledged: a client that went
     * away before it could process them. */
    RS.hold_acks = 1;
    C.tx = C.rx = C.dup = C.gaps = 0;
    for (uint32_t i = 0; i < n; i++)
        for (int k = 0; k < O.msgs; k++)
            chat_send(&sessions[i]);
    flush_dirty();
    run_loop(O.drain + (double)n * O.msgs / 5000.0, delivered);
    uint64_t owed = 0;
    for (uint32_t i = 0; i < n; i++) {
        struct sess *s = &sessions[i];
        s->resend_left = s->h_in - s->h_acked;
        owed += s->resend_left;
    }
    jfield("\"sent_before_drop\":%" PRIu64 ",\"received_before_drop\":%" PRIu64
           ",\"unacked\":%" PRIu64,
           C.tx, C.rx, owed);
    /* Storage the messages caused (durable copies) is not the drop's. */
    wait_server_idle(120);
    /* The drop, then quiet: the server notices each reset and keeps the
     * session waiting; that work is measured apart from the storm. */
    double cpu_d0 = server_cpu_us(), td0 = now_s();
    drop_all();
    wait_server_idle(120);
    double cpu_d1 = server_cpu_us(), td1 = now_s();
    /* bench/run starts a profiler on this line (BENCH_PERF). */
    logf_("server idle after the drop; storm in %.1f s", O.storm_delay);
    run_loop(O.storm_delay, NULL);
    if (O.server_pid)
        jfield("\"drop_cpu_s\":%.3f", (cpu_d1 - cpu_d0) / 1e6);
    jfield("\"drop_to_storm_s\":%.2f", td1 - td0);
    /* The storm: only its own failures are reported. */
    memset(C.fail_reason, 0, sizeof(C.fail_reason));
    memset(C.fail_count, 0, sizeof(C.fail_count));
    C.ready = C.failed = C.started = C.inflight = C.disconnects = 0;
    C.sm_failed = C.sm_missing = 0;
    RS.hold_acks = 0;
    RS.storm = 1;
    if (O.storm_conc > 0)
        O.concurrency = O.storm_conc;
    double gcpu0 = bench_self_cpu_s(), cpu0 = server_cpu_us(), t0 = now_s();
    RS.t0 = now_ns();
    setup_range(0, n);
    double cpu1 = server_cpu_us();
    run_loop(O.drain, resent_done);
    double cpu2 = server_cpu_us(), t2 = now_s(), gcpu2 = bench_self_cpu_s();
    long resumed = C.ready;
    double storm_s = RS.last_resumed > RS.t0
                         ? (double)(RS.last_resumed - RS.t0) / 1e9
                         : 0;
    double resent_s = RS.last_resent > RS.t0
                          ? (double)(RS.last_resent - RS.t0) / 1e9
                          : 0;
    uint64_t missing = 0; /* owed to sessions that resumed, not resent */
    for (uint32_t i = 0; i < n; i++)
        if (sessions[i].st == S_READY)
            missing += sessions[i].resend_left;
    jfield("\"status\":\"%s\"",
           resumed == (long)n && !missing && RS.resent == owed ? "ok"
                                                               : "errors");
    jfield("\"resumed\":%ld,\"resume_failed\":%ld", resumed, C.sm_failed);
    jfield("\"resent_expected\":%" PRIu64 ",\"resent\":%" PRIu64
           ",\"resent_missing\":%" PRIu64,
           owed, RS.resent, missing);
    jfield("\"storm_s\":%.3f,\"storm_resent_s\":%.3f", storm_s, resent_s);
    if (storm_s > 0)
        jfield("\"resumes_per_s\":%.0f", (double)resumed / storm_s);
    if (O.server_pid) {
        jfield("\"server_cpu_s\":%.3f,\"server_cpu_to_resumed_s\":%.3f",
               (cpu2 - cpu0) / 1e6, (cpu1 - cpu0) / 1e6);
        if (resumed)
            jfield("\"cpu_us_per_resume\":%.0f",
                   (cpu2 - cpu0) / (double)resumed);
    }
    j_server_cpu(cpu2 - cpu0, t2 - t0);
    j_gen(gcpu2 - gcpu0, t2 - t0);
    uint32_t k = sort_recorded(RS.lat_resumed, n);
    jfield("\"resume_p50_ms\":%.1f,\"resume_p90_ms\":%.1f,"
           "\"resume_p99_ms\":%.1f,\"resume_max_ms\":%.1f",
           pct_ms(RS.lat_resumed, k, 0.5), pct_ms(RS.lat_resumed, k, 0.9),
           pct_ms(RS.lat_resumed, k, 0.99), pct_ms(RS.lat_resumed, k, 1.0));
    k = sort_recorded(RS.lat_resent, n);
    jfield("\"resent_p50_ms\":%.1f,\"resent_p99_ms\":%.1f,"
           "\"resent_max_ms\":%.1f",
           pct_ms(RS.lat_resent, k, 0.5), pct_ms(RS.lat_resent, k, 0.99),
           pct_ms(RS.lat_resent, k, 1.0));
    k = sort_recorded(RS.at_resumed, n);
    jfield("\"half_resumed_s\":%.3f,\"p99_resumed_s\":%.3f",
           pct_ms(RS.at_resumed, k, 0.5) / 1000,
           pct_ms(RS.at_resumed, k, 0.99) / 1000);
    logf_("%ld of %u resumed in %.2f s (resent %" PRIu64 " of %" PRIu64
          " in %.2f s), %ld <failed/>",
          resumed, n, storm_s, RS.resent, owed, resent_s, C.sm_failed);
    j_failures();
    jflush();
    close_all();
    return resumed == (long)n ? 0 : 1;
}

static int run_setup_mode(void)
{
    uint32_t n = O.mode == M_PROBE ? 1 : (uint32_t)O.users;
    alloc_sessions(n);
    long rss0 = server_rss_kib(), sk0 = sockstat_mem_kib();
    if (O.mode == M_LOGIN || O.mode == M_REGISTER)
        sync_barrier();
    double cpu0 = server_cpu_us(), gcpu0 = bench_self_cpu_s();
    double t = setup_range(0, n);
    double cpu1 = server_cpu_us(), gcpu1 = bench_self_cpu_s();
    j_common();
    jfield("\"users\":%u", n);
    if (O.mode != M_PROBE) {
        /* The setup phase (registrations, logins, or the idle sessions'
         * logins) is the measured one. */
        j_server_cpu(cpu1 - cpu0, t);
        j_gen(gcpu1 - gcpu0, t);
    }
    switch (O.mode) {
    case M_PROBE:
        run_loop(5, probe_done);
        jfield("\"status\":\"%s\"", C.ready == 1 ? "ok" : "setup_failed");
        jfield(
            "\"login\":%d,\"roster\":%d,\"offline\":%d,\"register_feature\":%d",
            C.ready == 1, probe_roster == 1, probe_offline == 1,
            probe_register == 1);
        break;
    case M_REGISTER:
        jfield("\"status\":\"%s\"", C.failed ? "errors" : "ok");
        jfield("\"registered\":%ld,\"existed\":%ld", C.closed_ok, C.exists);
        jfield("\"seconds\":%.2f,\"per_s\":%.1f", t, (double)C.ready / t);
        if (O.server_pid && C.ready)
            jfield("\"cpu_us_per_op\":%.0f", (cpu1 - cpu0) / (double)C.ready);
        break;
    case M_LOGIN:
        jfield("\"status\":\"%s\"", C.failed ? "errors" : "ok");
        jfield("\"logins\":%ld,\"seconds\":%.2f,\"per_s\":%.1f", C.ready, t,
               (double)C.ready / t);
        jfield("\"pbkdf2\":%ld", pbkdf2_count);
        if (O.server_pid && C.ready)
            jfield("\"cpu_us_per_op\":%.0f", (cpu1 - cpu0) / (double)C.ready);
        break;
    case M_IDLE: {
        if (O.present) {
            for (uint32_t i = 0; i < n; i++)
                out_str(&sessions[i], "<presence/>");
            flush_dirty();
        }
        /* Let the server finish post-login work, then measure. */
        run_loop(O.settle, NULL);
        long rss1 = server_rss_kib(), sk1 = sockstat_mem_kib();
        int live = live_sessions();
        jfield("\"status\":\"%s\"",
               C.failed || live < (int)n ? "errors" : "ok");
        jfield("\"sessions\":%d,\"seconds\":%.2f,\"per_s\":%.1f", live, t,
               (double)C.ready / t);
        jfield("\"pbkdf2\":%ld", pbkdf2_count);
        if (O.server_pid) {
            jfield("\"rss_before_kib\":%ld,\"rss_after_kib\":%ld", rss0, rss1);
            if (live)
                jfield("\"rss_per_session_kib\":%.2f",
                       (double)(rss1 - rss0) / live);
        }
        jfield("\"sockmem_before_kib\":%ld,\"sockmem_after_kib\":%ld", sk0,
               sk1);
        if (live)
            jfield("\"sockmem_per_session_kib\":%.3f",
                   (double)(sk1 - sk0) / live);
        break;
    }
    default: break;
    }
    j_failures();
    jflush();
    if (O.mode == M_IDLE && O.hold > 0) {
        logf_("holding %d sessions for up to %.0f s", live_sessions(), O.hold);
        run_loop(O.hold, NULL);
        if (O.present)
            printf("{\"json_messages\":%" PRIu64 "}\n", (uint64_t)C.rx);
    }
    close_all();
    return C.failed ? 1 : 0;
}

/* Joins in flight are bounded by --concurrency. */
static uint32_t muc_next_join;

static void muc_join_tick(void)
{
    if (MU.configured != 1)
        return;
    while (muc_next_join < nsess && MU.inflight < O.concurrency) {
        struct sess *s = &sessions[muc_next_join++];
        if (s->fd >= 0 && s->st == S_READY)
            muc_join(s);
    }
}

static int muc_joins_done(void)
{
    return MU.configured < 0 || (muc_next_join >= nsess && MU.inflight <= 0);
}

static int muc_owner_ready(void)
{
    return MU.configured != 0 || MU.join_errors > 0;
}

static void muc_rate_tick(void)
{
    if (!CH.sending)
        return;
    uint64_t due = (uint64_t)((now_s() - CH.t0) * O.rate);
    uint32_t tried = 0;
    while (MU.sent < due && MU.sent < MU.cap) {
        struct sess *s = &sessions[MU.rr];
        MU.rr = (MU.rr + 1) % nsess;
        if (s->fd >= 0 && s->joined) {
            muc_send(s);
            tried = 0;
        } else if (++tried >= nsess) {
            stop_flag = 1; /* every occupant is gone: the server died */
            break;
        }
    }
}

static int muc_drained(void)
{
    return MU.unique >= MU.sent * (uint64_t)MU.joined;
}

static int run_muc(void)
{
    uint32_t n = (uint32_t)O.users;
    char dom[300];
    snprintf(dom, sizeof(dom), "conference.%s", O.domain);
    snprintf(MU.room, sizeof(MU.room), "%s@%s", O.room,
             O.muc_domain ? O.muc_domain : dom);
    alloc_sessions(n);
    double t = setup_range(0, n);
    logf_("%ld of %u sessions logged in in %.1f s", C.ready, n, t);
    j_common();
    jfield("\"occupants\":%u", n);
    if (C.ready < (long)n) {
        jfield("\"status\":\"setup_failed\"");
        j_failures();
        jflush();
        return 2;
    }
    /* The owner creates and configures the room. */
    muc_next_join = 1;
    muc_join(&sessions[0]);
    flush_dirty();
    run_loop(30, muc_owner_ready);
    if (MU.configured != 1) {
        jfield("\"status\":\"setup_failed\",\"reason\":\"%s\"",
               MU.join_error[0] ? MU.join_error : "room not created");
        jflush();
        return 2;
    }
    /* Everyone else joins; each join fans out to those present. */
    double jcpu0 = server_cpu_us(), jt0 = now_s();
    tick_fn = muc_join_tick;
    poll_ms = 2;
    muc_join_tick();
    flush_dirty();
    run_loop(O.timeout, muc_joins_done);
    double jcpu1 = server_cpu_us(), jt1 = now_s();
    tick_fn = NULL;
    logf_("%ld of %u joined in %.1f s", MU.joined, n, jt1 - jt0);
    jfield("\"joined\":%ld,\"join_errors\":%ld", MU.joined, MU.join_errors);
    jfield("\"join_s\":%.2f", jt1 - jt0);
    if (O.server_pid && MU.joined > 1)
        jfield("\"join_cpu_us_per_join\":%.0f",
               (jcpu1 - jcpu0) / (double)(MU.joined - 1));
    if (MU.joined < (long)n) {
        jfield("\"status\":\"setup_failed\",\"reason\":\"%s\"",
               MU.join_error[0] ? MU.join_error : "joins timed out");
        jflush();
        close_all();
        return 2;
    }
    /* Bitmaps for every message the run can send. */
    MU.cap = (uint32_t)(O.rate * (O.warmup + O.duration) * 1.2 + 64);
    for (uint32_t i = 0; i < n; i++)
        sessions[i].seen = calloc(MU.cap / 8 + 1, 1);
    C.tx = C.rx = C.dup = C.err_msgs = 0;
    run_loop(1, NULL); /* let the join traffic settle */
    CH.sending = 1;
    CH.t0 = now_s();
    tick_fn = muc_rate_tick;
    poll_ms = 1;
    run_loop(O.warmup, NULL);
    hist_reset();
    CH.measuring = 1;
    double cpu0 = server_cpu_us(), gcpu0 = bench_self_cpu_s(), t0 = now_s();
    uint64_t rx0 = C.rx, sent0 = MU.sent;
    run_loop(O.duration, NULL);
    double t1 = now_s(), gcpu1 = bench_self_cpu_s();
    uint64_t sent1 = MU.sent;
    CH.sending = 0;
    run_loop(O.drain, muc_drained);
    double cpu2 = server_cpu_us(), t2 = now_s();
    uint64_t rx2 = C.rx;
    CH.measuring = 0;
    uint64_t expected = MU.sent * (uint64_t)MU.joined;
    uint64_t missing = expected > MU.unique ? expected - MU.unique : 0;
    /* Room messages that did not reach every occupant, and those that
     * reached none. */
    uint64_t incomplete = 0, unreached = 0;
    for (uint64_t g = 0; g < MU.sent && g < MU.cap; g++) {
        uint8_t bit = (uint8_t)(1u << (g & 7));
        long got = 0;
        for (uint32_t i = 0; i < n; i++)
            if (sessions[i].seen && (sessions[i].seen[g >> 3] & bit))
                got++;
        if (got < MU.joined)
            incomplete++;
        if (!got)
            unreached++;
    }
    jfield("\"status\":\"%s\"", C.dup || C.disconnects || C.err_msgs ? "errors"
                                : missing ? "not_sustained"
                                          : "ok");
    jfield("\"rate\":%.0f,\"room_msgs\":%" PRIu64 ",\"measured_msgs\":%" PRIu64,
           O.rate, MU.sent, sent1 - sent0);
    jfield("\"expected\":%" PRIu64 ",\"received\":%" PRIu64 ",\"dup\":%" PRIu64
           ",\"missing\":%" PRIu64,
           expected, C.rx, C.dup, missing);
    jfield("\"incomplete_room_msgs\":%" PRIu64
           ",\"undelivered_room_msgs\":%" PRIu64 ",\"error_msgs\":%" PRIu64,
           incomplete, unreached, C.err_msgs);
    jfield("\"lost\":0,\"disconnects\":%ld", C.disconnects);
    jfield("\"deliveries_per_s\":%.0f", (double)(rx2 - rx0) / (t2 - t0));
    jfield("\"measured_s\":%.2f,\"drain_s\":%.2f", t1 - t0, t2 - t1);
    if (O.server_pid && rx2 > rx0) {
        jfield("\"cpu_us_per_delivery\":%.3f",
               (cpu2 - cpu0) / (double)(rx2 - rx0));
        jfield("\"cpu_us_per_room_msg\":%.1f",
               (cpu2 - cpu0) / (double)(sent1 - sent0 ? sent1 - sent0 : 1));
    }
    j_server_cpu(cpu2 - cpu0, t2 - t0);
    j_gen(gcpu1 - gcpu0, t1 - t0);
    jfield("\"lat_n\":%" PRIu64 ",\"p50_us\":%" PRIu64 ",\"p99_us\":%" PRIu64
           ",\"p999_us\":%" PRIu64 ",\"max_us\":%" PRIu64,
           hist_n, hist_pct(0.50), hist_pct(0.99), hist_pct(0.999), hist_max);
    logf_("muc: %" PRIu64 " room messages to %ld occupants, p50 %" PRIu64
          " us, p99 %" PRIu64 " us, dup %" PRIu64 ", missing %" PRIu64,
          MU.sent, MU.joined, hist_pct(0.5), hist_pct(0.99), C.dup, missing);
    jflush();
    close_all();
    return 0;
}

/* The usage text on f, then exit(code). */
static void usage_exit(FILE *f, int code)
{
    fprintf(
        f,
        "usage: parley-load --mode MODE [options]\n"
        "       parley-load --help | --version\n"
        "modes: probe register login idle chat roster presence offline resume "
        "muc\n"
        "  --host ADDR --port N --domain D   server (127.0.0.1 5222 "
        "localhost)\n"
        "  --port2 N              odd sessions connect to port N (another "
        "cluster\n"
        "                         node: chat pairs and rosters span two "
        "nodes)\n"
        "  --tls                  STARTTLS before SASL\n"
        "  --ws PATH              XMPP over WebSocket (RFC 7395) at PATH "
        "(plain ws;\n"
        "                         modes probe register login idle chat)\n"
        "  --mech M               SCRAM-SHA-256 | SCRAM-SHA-1 | PLAIN (best "
        "offered)\n"
        "  --prefix P --first N --users N --password PW   accounts P<N>...\n"
        "  --concurrency N        handshakes in flight (200)\n"
        "  --rate R               connections/s (register/login/idle) or "
        "total\n"
        "                         messages/s (chat; default: window mode)\n"
        "  --pairs P --window W   chat pairs, messages in flight per direction "
        "(10)\n"
        "  --duration S --warmup S --drain S   chat phases (10, 2, 15)\n"
        "  --pad N                extra bytes in each chat body\n"
        "  --contacts K --rounds R   roster size (10), presence updates (5)\n"
        "  --msgs M               offline messages per pair; resume: messages\n"
        "                         each session sends its neighbour before the "
        "drop,\n"
        "                         which the neighbour leaves unacknowledged "
        "(10)\n"
        "  --storm-delay S        resume: quiet seconds between the drop and "
        "the\n"
        "                         storm, after the server is idle again (0)\n"
        "  --storm-concurrency N  resume: reconnections in flight in the "
        "storm\n"
        "                         (--concurrency, which the setup logins use)\n"
        "  --room R --muc-domain D   muc: room localpart (benchroom), service\n"
        "                         (conference.<domain>); --users occupants\n"
        "  --hold S --settle S    idle: keep sessions S seconds; wait before "
        "RSS\n"
        "  --present              idle: send presence, acknowledge fleet "
        "pushes\n"
        "  --timeout S            bound on setup phases (300)\n"
        "  --src-ips N --src-base B   source addresses 127.0.B.1..N (8, 1)\n"
        "  --server-pid PID       read server CPU and RSS from /proc\n"
        "  --key-cache FILE       keep SCRAM SaltedPassword between runs\n"
        "  --sync                 chat, login, register: print \"ready\" on "
        "stdout\n"
        "                         after the setup and start the measured "
        "phase\n"
        "                         on a line from stdin (several processes "
        "at once)\n"
        "  --label TEXT --quiet\n");
    exit(code);
}

static void usage(void)
{
    usage_exit(stderr, 2);
}

int main(int argc, char **argv)
{
    static const struct option lo[] = {{"mode", 1, 0, 'm'},
                                       {"host", 1, 0, 'H'},
                                       {"port", 1, 0, 'p'},
                                       {"port2", 1, 0, 'Q'},
                                       {"domain", 1, 0, 'd'},
                                       {"tls", 0, 0, 'T'},
                                       {"mech", 1, 0, 'M'},
                                       {"prefix", 1, 0, 'P'},
                                       {"first", 1, 0, 'f'},
                                       {"users", 1, 0, 'u'},
                                       {"password", 1, 0, 'w'},
                                       {"pairs", 1, 0, 'n'},
                                       {"concurrency", 1, 0, 'c'},
                                       {"rate", 1, 0, 'r'},
                                       {"window", 1, 0, 'W'},
                                       {"duration", 1, 0, 'D'},
                                       {"warmup", 1, 0, 'U'},
                                       {"drain", 1, 0, 'R'},
                                       {"timeout", 1, 0, 't'},
                                       {"hold", 1, 0, 'h'},
                                       {"settle", 1, 0, 'S'},
                                       {"present", 0, 0, 'Y'},
                                       {"src-ips", 1, 0, 'i'},
                                       {"src-base", 1, 0, 'b'},
                                       {"server-pid", 1, 0, 's'},
                                       {"key-cache", 1, 0, 'k'},
                                       {"label", 1, 0, 'l'},
                                       {"pad", 1, 0, 'x'},
                                       {"contacts", 1, 0, 'C'},
                                       {"rounds", 1, 0, 'o'},
                                       {"msgs", 1, 0, 'g'},
                                       {"quiet", 0, 0, 'q'},
                                       {"verbose", 0, 0, 'v'},
                                       {"storm-delay", 1, 0, 'y'},
                                       {"storm-concurrency", 1, 0, 'J'},
                                       {"room", 1, 0, 'Z'},
                                       {"muc-domain", 1, 0, 'z'},
                                       {"ws", 1, 0, 'X'},
                                       {"help", 0, 0, 'A'},
                                       {"sync", 0, 0, 'K'},
                                       {"version", 0, 0, 'V'},
                                       {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (c) {
        case 'm': {
            int found = 0;
            for (size_t i = 0; i < sizeof(mode_names) / sizeof(*mode_names);
                 i++)
                if (strcmp(optarg, mode_names[i]) == 0) {
                    O.mode = (enum mode)i;
                    found = 1;
                }
            if (!found)
                usage();
            break;
        }
        case 'H': O.host = optarg; break;
        case 'p': O.port = atoi(optarg); break;
        case 'Q': O.port2 = atoi(optarg); break;
        case 'd': O.domain = optarg; break;
        case 'T': O.tls = 1; break;
        case 'M':
            for (int i = 1; i < 4; i++)
                if (strcmp(optarg, mech_names[i]) == 0)
                    O.mech = i;
            if (!O.mech && strcmp(optarg, "auto") != 0)
                usage();
            break;
        case 'P': O.prefix = optarg; break;
        case 'f': O.first = atol(optarg); break;
        case 'u': O.users = atol(optarg); break;
        case 'w': O.password = optarg; break;
        case 'n': O.pairs = atol(optarg); break;
        case 'c': O.concurrency = atoi(optarg); break;
        case 'r': O.rate = atof(optarg); break;
        case 'W': O.window = atoi(optarg); break;
        case 'D': O.duration = atof(optarg); break;
        case 'U': O.warmup = atof(optarg); break;
        case 'R': O.drain = atof(optarg); break;
        case 't': O.timeout = atof(optarg); break;
        case 'h': O.hold = atof(optarg); break;
        case 'S': O.settle = atof(optarg); break;
        case 'Y': O.present = 1; break;
        case 'i': O.src_ips = atoi(optarg); break;
        case 'b': O.src_base = atoi(optarg); break;
        case 's': O.server_pid = atoi(optarg); break;
        case 'k': O.key_cache = optarg; break;
        case 'l': O.label = optarg; break;
        case 'x': O.pad = atoi(optarg); break;
        case 'C': O.contacts = atoi(optarg) & ~1; break;
        case 'o': O.rounds = atoi(optarg); break;
        case 'g': O.msgs = atoi(optarg); break;
        case 'y': O.storm_delay = atof(optarg); break;
        case 'J': O.storm_conc = atoi(optarg); break;
        case 'q': O.verbose = 0; break;
        case 'v': O.verbose++; break;
        case 'Z': O.room = optarg; break;
        case 'z': O.muc_domain = optarg; break;
        case 'X': O.ws = optarg; break;
        case 'K': O.sync = 1; break;
        case 'A': usage_exit(stdout, 0); break;
        case 'V': puts("parley-load " PL_VERSION); exit(0);
        default: usage();
        }
    }
    if (O.users < 1 || O.pairs < 1 || O.window < 1 || O.concurrency < 1 ||
        O.src_ips < 0 || O.src_ips > 254 || O.contacts < 2 ||
        ((O.mode == M_ROSTER || O.mode == M_PRESENCE) && O.contacts >= O.users))
        usage();
    if (O.ws && (O.tls || O.mode == M_RESUME || O.ws[0] != '/'))
        usage();
    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        die("epoll_create1 failed");
    ssl_ctx = SSL_CTX_new(TLS_client_method());
    if (!ssl_ctx)
        die("SSL_CTX_new failed");
    SSL_CTX_set_verify(ssl_ctx, SSL_VERIFY_NONE, NULL);
    SSL_CTX_set_mode(ssl_ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
                                  SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                                  SSL_MODE_RELEASE_BUFFERS);
    kc_load();
    int rc;
    switch (O.mode) {
    case M_CHAT: rc = run_chat(); break;
    case M_OFFLINE: rc = run_offline(); break;
    case M_ROSTER: rc = run_roster(); break;
    case M_PRESENCE: rc = run_presence(); break;
    case M_RESUME: rc = run_resume(); break;
    case M_MUC: rc = run_muc(); break;
    default: rc = run_setup_mode(); break;
    }
    kc_save();
    return rc;
}
