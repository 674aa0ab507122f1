/*
 * fetch.c - pl_fetch_run (fetch.h, doc/media.md "The client"): one file
 * from the server and several peers at once, on one thread, with libcurl's
 * multi interface.
 *
 * Pieces: every source serves every piece (a peer announces only after it
 * verified the whole file), so each source with a free slot takes the
 * next missing piece (a Range request).  The bytes are hashed as they
 * arrive and written with pwrite at their place in <hex>.part; a piece
 * whose SHA-256 matches is marked in <hex>.have, so that a later run
 * resumes (after hashing again the pieces the bitmap claims: a crash may
 * have lost bytes the bitmap kept).  At most one request per piece writes
 * into the file; a duplicate (endgame) keeps its bytes in memory and
 * writes them only if it wins, so a late loser never overwrites a verified
 * piece.
 *
 * Scheduling: every source has a rate (bytes/s per request, from the
 * pieces it delivered, or from its first request while it runs).  Near the
 * end (no more unassigned pieces than the faster sources can take in one
 * round) a source three times slower than the best takes no new piece;
 * once every missing piece is in flight, a free source duplicates the
 * request expected to finish last when it should finish it sooner, and
 * the first verified copy cancels the other.  With server_last the server
 * takes pieces only once no peer is left (and duplicates in the endgame).
 *
 * Failures: a bad piece bans its source (PIECE_BAD, BANNED); an error
 * (refused, timeout, non-206, wrong Content-Range, more or fewer bytes, a
 * stall past stall_ms) counts against the source, and the second in a
 * row drops it (LOST); the server, the source of last resort, is paused
 * instead (0.5 s doubling to 8 s) and dropped at the eighth failure in a
 * row.  A 503 (a peer at its cap) pauses the source, 0.5
 * s doubling up to 8 s; the seventh in a row drops it.  A peer beyond max_peers replaces one that is
 * gone.  Nothing left: PL_FETCH_ESOURCES, the .part kept for a resume.
 *
 * Without piece hashes the file comes whole from one source at a time
 * (the server first), checked by the whole-file hash only.
 */
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/version.h"
#include "media/fetch.h"

#define HAVE_MAGIC "PLHAVE1\n"
#define HAVE_HDR 28 /* magic, size (8), piece size (4), pieces (8) */
#define MAX_DUP_PIECE (64u * 1024 * 1024) /* larger pieces: no endgame */
#define BUSY_TRIES 6                      /* 503 answers before LOST */
#define SERVER_TRIES 8   /* failures in a row before the server is LOST */
#define FAST_REFRESH 500 /* ms between Metalink reads when waiting */
#define HOLD_MS 2000     /* the server may hold such a read this long */
#define PEER_TRIES 50    /* and a peer, preferring peers (server_last) */

enum {
    S_RESERVE,
    S_ACTIVE,
    S_BANNED,
    S_LOST
};

struct src {
    int state;
    int priority;
    int slots;
    int inflight;
    int errors;           /* in a row */
    int busy;             /* 503 answers in a row */
    long long busy_until; /* asked nothing before (after a 503) */
    double rate;          /* bytes/s per request; 0: not known yet */
};

struct req {
    struct req *next;
    struct fetch *f;
    CURL *h;
    size_t src;
    uint64_t piece;
    uint64_t off, len, got;
    EVP_MD_CTX *md;
    unsigned char *buf; /* a duplicate's bytes (NULL: written in place) */
    long status;
    int checked; /* status and Content-Range accepted */
    int bad;     /* refused what came */
    char cr[128];
    long long t0, last;
};

struct fetch {
    const struct pl_mlink *m;
    struct pl_fetch_opts o;
    pl_fetch_cb *cb;
    void *ud;
    CURLM *multi;
    int fd, havefd;
    int whole;        /* no piece hashes: one request for everything */
    size_t whole_src; /* the source whose whole file came */
    uint64_t npieces;
    uint64_t psize;
    unsigned char *have;
    unsigned char *inflight; /* requests per piece (0..2) */
    uint64_t missing;
    uint64_t done, from_server, from_peers, received;
    struct src *s;
    struct pl_fetch_source *pub;
    size_t ns;
    struct req *reqs;
    int io_error;
    long long last_progress;
    long long next_refresh; /* opts.refresh_url: when to read it again */
    char *refresh_light;    /* the same with pieces=0 (no piece hashes) */
    int held;               /* the last read asked the server to hold it */
    struct verifier *ver;   /* the whole-file hash, as pieces come */
    int waiting;            /* the last Metalink said <wait/> */
    long long wait_until;   /* the server is held back till then at most */
    char **owned;           /* URLs of sources that joined later */
    size_t nowned;
    long long samp_t[8];
    uint64_t samp_b[8];
    unsigned nsamp;
    char part[4096], havep[4096], path[4096];
};

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t piece_len(const struct fetch *f, uint64_t i)
{
    if (f->whole)
        return f->m->size;
    return i + 1 < f->npieces ? f->psize
                              : f->m->size - f->psize * (f->npieces - 1);
}

static int has(const struct fetch *f, uint64_t i)
{
    return f->have[i / 8] >> (i % 8) & 1;
}

/* ---------------------------------------------------------------- events */

static double cur_rate(struct fetch *f)
{
    long long t = now_ms();
    unsigned k = f->nsamp % 8;
    f->samp_t[k] = t;
    f->samp_b[k] = f->received;
    f->nsamp++;
    /* The newest sample at least a second old, else the oldest. */
    unsigned n = f->nsamp < 8 ? f->nsamp : 8;
    for (unsigned j = 1; j < n; j++) {
        unsigned i = (f->nsamp - 1 - j) % 8;
        if (t - f->samp_t[i] >= 1000 || j == n - 1) {
            long long dt = t - f->samp_t[i];
            return dt > 0 ? (double)(f->received - f->samp_b[i]) * 1000.0 /
                                (double)dt
                          : 0;
        }
    }
    return 0;
}

static void emit(struct fetch *f, enum pl_fetch_ev kind, size_t src,
                 int64_t piece)
{
    if (!f->cb)
        return;
    struct pl_fetch_event ev = {
        .kind = kind,
        .url = src < f->ns ? f->pub[src].url : NULL,
        .piece = piece,
        .path = kind == PL_FETCH_DONE ? f->path : NULL,
        .done = f->done,
        .total = f->m->size,
        .from_server = f->from_server,
        .from_peers = f->from_peers,
        .sources = f->pub,
        .nsources = f->ns,
    };
    for (size_t i = 0; i < f->ns; i++)
        ev.active += f->s[i].inflight > 0;
    if (kind == PL_FETCH_PROGRESS)
        ev.rate = cur_rate(f);
    f->cb(&ev, f->ud);
}

/* -------------------------------------------------------------- requests */

static void req_free(struct fetch *f, struct req *r)
{
    struct req **pp = &f->reqs;
    while (*pp && *pp != r)
        pp = &(*pp)->next;
    if (*pp)
        *pp = r->next;
    if (r->h) {
        curl_multi_remove_handle(f->multi, r->h);
        curl_easy_cleanup(r->h);
    }
    EVP_MD_CTX_free(r->md);
    free(r->buf);
    f->s[r->src].inflight--;
    f->inflight[f->whole ? 0 : r->piece]--;
    free(r);
}

/* "bytes A-B/T" matching the request. */
static int range_ok(const struct req *r, uint64_t size)
{
    unsigned long long a, b, t;
    const char *s = r->cr;
    while (*s == ' ')
        s++;
    if (strncasecmp(s, "bytes ", 6) ||
        sscanf(s + 6, "%llu-%llu/%llu", &a, &b, &t) != 3)
        return 0;
    return a == r->off && b == r->off + r->len - 1 && t == size;
}

static size_t on_header(char *p, size_t sz, size_t n, void *ud)
{
    struct req *r = ud;
    size_t len = sz * n;
    if (len > 5 && !strncmp(p, "HTTP/", 5)) {
        const char *sp = memchr(p, ' ', len);
        r->status = sp ? strtol(sp + 1, NULL, 10) : 0;
        r->cr[0] = '\0';
    } else if (len > 14 && !strncasecmp(p, "Content-Range:", 14)) {
        size_t k = len - 14;
        while (k && (p[14 + k - 1] == '\r' || p[14 + k - 1] == '\n'))
            k--;
        if (k >= sizeof(r->cr))
            k = sizeof(r->cr) - 1;
        memcpy(r->cr, p + 14, k);
        r->cr[k] = '\0';
    }
    return len;
}

static size_t on_data(char *p, size_t sz, size_t n, void *ud)
{
    struct req *r = ud;
    struct fetch *f = r->f;
    size_t len = sz * n;
    if (!r->checked) {
        if (r->status == 206)
            r->checked = range_ok(r, f->m->size);
        else /* a 200 is the whole file: right only if that was asked */
            r->checked = r->status == 200 && r->off == 0 &&
                         r->len == f->m->size;
        if (!r->checked) {
            r->bad = 1;
            return 0;
        }
    }
    if (r->got + len > r->len) {
        r->bad = 1;
        return 0;
    }
    EVP_DigestUpdate(r->md, p, len);
    if (r->buf) {
        memcpy(r->buf + r->got, p, len);
    } else {
        size_t w = 0;
        while (w < len) {
            ssize_t k = pwrite(f->fd, p + w, len - w,
                               (off_t)(r->off + r->got + w));
            if (k < 0 && errno == EINTR)
                continue;
            if (k <= 0) {
                f->io_error = 1;
                return 0;
            }
            w += (size_t)k;
        }
    }
    r->got += len;
    f->received += len;
    r->last = now_ms();
    return len;
}

static int start(struct fetch *f, size_t si, uint64_t piece, int dup)
{
    struct req *r = calloc(1, sizeof(*r));
    if (!r)
        return -1;
    r->f = f;
    r->src = si;
    r->piece = piece;
    r->off = f->whole ? 0 : piece * f->psize;
    r->len = piece_len(f, piece);
    r->md = EVP_MD_CTX_new();
    r->h = curl_easy_init();
    if (dup)
        r->buf = malloc(r->len ? r->len : 1);
    if (!r->md || !r->h || (dup && !r->buf) ||
        !EVP_DigestInit_ex(r->md, EVP_sha256(), NULL)) {
        if (r->h)
            curl_easy_cleanup(r->h);
        EVP_MD_CTX_free(r->md);
        free(r->buf);
        free(r);
        return -1;
    }
    r->t0 = r->last = now_ms();
    CURL *h = r->h;
    char range[64];
    curl_easy_setopt(h, CURLOPT_URL, f->pub[si].url);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "parley/" PL_VERSION);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, f->o.connect_ms);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(h, CURLOPT_PRIVATE, r);
    if (f->o.ca_file)
        curl_easy_setopt(h, CURLOPT_CAINFO, f->o.ca_file);
    if (f->o.insecure) {
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    if (!f->whole) {
        snprintf(range, sizeof(range), "%llu-%llu", (unsigned long long)r->off,
                 (unsigned long long)(r->off + r->len - 1));
        curl_easy_setopt(h, CURLOPT_RANGE, range);
    }
    if (curl_multi_add_handle(f->multi, h) != CURLM_OK) {
        curl_easy_cleanup(h);
        EVP_MD_CTX_free(r->md);
        free(r->buf);
        free(r);
        return -1;
    }
    r->next = f->reqs;
    f->reqs = r;
    f->s[si].inflight++;
    f->inflight[f->whole ? 0 : piece]++;
    return 0;
}

/* --------------------------------------------------------------- sources */

/* Preferring peers, told to wait for them: the server takes no piece
 * until a peer is known, the Metalink stops saying <wait/>, or
 * wait_max_ms has passed. */
static int holding(const struct fetch *f, long long t)
{
    return f->o.server_last && f->waiting && t < f->wait_until;
}

static int usable(const struct fetch *f, size_t i)
{
    return f->s[i].state == S_ACTIVE || f->s[i].state == S_RESERVE;
}

static int peers_left(const struct fetch *f)
{
    for (size_t i = 0; i < f->ns; i++)
        if (!f->pub[i].is_server && usable(f, i))
            return 1;
    return 0;
}

static void activate_reserve(struct fetch *f)
{
    /* A peer pausing after a busy answer does not count, up to twice
     * max_peers in all: a reserve peer (one that joined since, say) works
     * while the busy ones are waited for. */
    int active = 0, all = 0;
    long long t = now_ms();
    for (size_t i = 0; i < f->ns; i++)
        if (!f->pub[i].is_server && f->s[i].state == S_ACTIVE) {
            all++;
            active += f->s[i].busy_until <= t;
        }
    while (active < f->o.max_peers && all < 2 * f->o.max_peers) {
        size_t best = f->ns;
        for (size_t i = 0; i < f->ns; i++)
            if (f->s[i].state == S_RESERVE &&
                (best == f->ns || f->s[i].priority < f->s[best].priority))
                best = i;
        if (best == f->ns)
            return;
        f->s[best].state = S_ACTIVE;
        active++;
        all++;
    }
}

static void drop(struct fetch *f, size_t si, int state)
{
    struct req *r = f->reqs, *next;
    f->s[si].state = state;
    if (state == S_BANNED)
        f->pub[si].banned = 1;
    else
        f->pub[si].lost = 1;
    for (; r; r = next) {
        next = r->next;
        if (r->src == si)
            req_free(f, r);
    }
    emit(f, state == S_BANNED ? PL_FETCH_BANNED : PL_FETCH_LOST, si, -1);
    activate_reserve(f);
}

static void src_error(struct fetch *f, size_t si)
{
    struct src *s = &f->s[si];
    if (s->state != S_ACTIVE)
        return;
    s->errors++;
    /* Preferring peers, a peer that refuses or cuts a request is most
     * likely overloaded (past its connection cap it closes at once): it
     * is paused as the server is, not dropped at the second failure. */
    if (!f->pub[si].is_server && !f->o.server_last) {
        if (s->errors >= 2)
            drop(f, si, S_LOST);
        return;
    }
    /* The server is the source of last resort: a refused or cut request
     * (its per-address connection cap, a restart) pauses it, 0.5 s
     * doubling to 8 s, and only SERVER_TRIES failures in a row drop it
     * (and so a peer when preferring peers). */
    long long t = now_ms();
    if (!f->pub[si].is_server) {
        /* An overloaded peer answers again within a moment: a short pause
         * with jitter; PEER_TRIES failures in a row (about 15 s) drop it. */
        if (s->errors >= PEER_TRIES) {
            drop(f, si, S_LOST);
            return;
        }
        s->busy_until = t + 200 + t % 200;
        activate_reserve(f);
        return;
    }
    if (s->errors >= SERVER_TRIES) {
        drop(f, si, S_LOST);
        return;
    }
    long long pause = 500LL << (s->errors - 1);
    s->busy_until = t + (pause > 8000 ? 8000 : pause);
}

/* Bytes/s per request of a source: from its pieces, else from a request
 * running for half a second; 0 when not known. */
static double src_rate(const struct fetch *f, size_t si)
{
    if (f->s[si].rate > 0)
        return f->s[si].rate;
    double best = 0;
    long long t = now_ms();
    for (const struct req *r = f->reqs; r; r = r->next)
        if (r->src == si && t - r->t0 >= 500) {
            double v = (double)r->got * 1000.0 / (double)(t - r->t0);
            if (v > best)
                best = v;
        }
    return best > 0 ? best : 0;
}

/* ------------------------------------------------------------ scheduling */

static uint64_t next_free_piece(const struct fetch *f)
{
    for (uint64_t i = 0; i < f->npieces; i++)
        if (!has(f, i) && !f->inflight[i])
            return i;
    return UINT64_MAX;
}

static uint64_t unassigned(const struct fetch *f)
{
    uint64_t n = 0;
    for (uint64_t i = 0; i < f->npieces; i++)
        n += !has(f, i) && !f->inflight[i];
    return n;
}

/* Whether source si, slow next to the best, should leave the remaining
 * pieces to faster sources. */
static int hold_back(const struct fetch *f, size_t si, double best)
{
    double mine = src_rate(f, si);
    if (mine <= 0 || best <= 0 || mine * 3 >= best)
        return 0;
    uint64_t faster_slots = 0;
    for (size_t i = 0; i < f->ns; i++)
        if (i != si && f->s[i].state == S_ACTIVE && src_rate(f, i) > mine * 3)
            faster_slots += (uint64_t)f->s[i].slots;
    return unassigned(f) <= faster_slots;
}

/* Milliseconds request r still needs, by its own pace (or its source's);
 * -1 when not known yet. */
static double remaining_ms(const struct fetch *f, const struct req *r)
{
    long long el = now_ms() - r->t0;
    double v = el >= 200 && r->got ? (double)r->got * 1000.0 / (double)el
                                   : src_rate(f, r->src);
    if (v <= 0)
        return el > 1000 ? 1e12 : -1; /* nothing yet after a second */
    return (double)(r->len - r->got) * 1000.0 / v;
}

/* The endgame: a request at another source that si should duplicate. */
static struct req *dup_candidate(const struct fetch *f, size_t si)
{
    if (f->whole || f->psize > MAX_DUP_PIECE)
        return NULL;
    double mine = src_rate(f, si);
    struct req *best = NULL;
    double best_gain = 0;
    for (struct req *r = f->reqs; r; r = r->next) {
        if (r->src == si || f->inflight[r->piece] > 1 || r->buf)
            continue;
        double rem = remaining_ms(f, r);
        if (rem < 0)
            continue;
        double own = mine > 0 ? (double)r->len * 1000.0 / mine : 2000;
        if (rem > own * 1.5 && rem - own > best_gain) {
            best = r;
            best_gain = rem - own;
        }
    }
    return best;
}

struct ranked {
    size_t i;
    double rate;
};

/* Fastest first; not known yet before all (it must get a piece to be
 * measured).  Rates are taken once before sorting: a comparator whose
 * answers change while qsort runs is undefined behaviour. */
static int cmp_rate_desc(const void *a, const void *b)
{
    double x = ((const struct ranked *)a)->rate;
    double y = ((const struct ranked *)b)->rate;
    if (x <= 0 || y <= 0)
        return (x > 0) - (y > 0);
    return x < y ? 1 : x > y ? -1 : 0;
}

static void schedule(struct fetch *f, int no_hold)
{
    struct ranked rk[PL_MLINK_MAX_URLS];
    size_t order[PL_MLINK_MAX_URLS];
    size_t n = 0;
    double best = 0;
    for (size_t i = 0; i < f->ns; i++)
        if (f->s[i].state == S_ACTIVE) {
            rk[n].i = i;
            rk[n].rate = src_rate(f, i);
            if (rk[n].rate > best)
                best = rk[n].rate;
            n++;
        }
    qsort(rk, n, sizeof(rk[0]), cmp_rate_desc);
    for (size_t k = 0; k < n; k++)
        order[k] = rk[k].i;
    if (f->whole) {
        /* One source at a time, the server (lowest priority) first. */
        if (f->reqs || f->missing == 0)
            return;
        size_t pick = f->ns;
        for (size_t k = 0; k < n; k++)
            if (pick == f->ns || f->s[order[k]].priority < f->s[pick].priority)
                pick = order[k];
        if (pick < f->ns && start(f, pick, 0, 0))
            f->io_error = 1;
        return;
    }
    int peers = peers_left(f);
    for (size_t k = 0; k < n; k++) {
        size_t si = order[k];
        struct src *s = &f->s[si];
        if (s->busy_until > now_ms())
            continue; /* busy: asked again after its pause */
        while (s->state == S_ACTIVE && s->inflight < s->slots) {
            uint64_t p = next_free_piece(f);
            int server_waits = f->pub[si].is_server && f->o.server_last &&
                               (peers || holding(f, now_ms()));
            if (p != UINT64_MAX && !server_waits) {
                if (!no_hold && hold_back(f, si, best))
                    break;
                if (start(f, si, p, 0)) {
                    f->io_error = 1;
                    return;
                }
                continue;
            }
            if (server_waits)
                break; /* nor a duplicate: the peers finish it */
            struct req *r = dup_candidate(f, si);
            if (!r || start(f, si, r->piece, 1))
                break;
        }
    }
}

/* ------------------------------------------------------ the whole hash */

/*
 * The whole file's SHA-256 is computed on a thread of its own while the
 * download runs: it reads back (from the page cache) the verified pieces
 * at the start of the file as they join up, so at the end only what came
 * last is left to hash.  A device is a source sooner (its last step is
 * short), and the hashing runs on another core than the download's.
 */
struct verifier {
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int fd;          /* the .part, read with pread */
    uint64_t ready;  /* bytes from 0 whose pieces are all verified
                        (written by the download's thread, locked) */
    uint64_t next;   /* the same, the download thread's own copy */
    uint64_t hashed; /* bytes hashed so far (the thread's) */
    int stop;        /* the download ended without a verified file */
    int failed;      /* a read failed */
    EVP_MD_CTX *md;
};

static void *verify_main(void *arg)
{
    struct verifier *v = arg;
    static const size_t cap = 1 << 20;
    unsigned char *buf = malloc(cap);
    pthread_mutex_lock(&v->mu);
    for (;;) {
        while (!v->stop && v->hashed == v->ready)
            pthread_cond_wait(&v->cv, &v->mu);
        if (v->stop || !buf)
            break;
        uint64_t off = v->hashed, end = v->ready;
        pthread_mutex_unlock(&v->mu);
        while (off < end) {
            size_t want = end - off < cap ? (size_t)(end - off) : cap;
            ssize_t k = pread(v->fd, buf, want, (off_t)off);
            if (k < 0 && errno == EINTR)
                continue;
            if (k <= 0)
                break;
            EVP_DigestUpdate(v->md, buf, (size_t)k);
            off += (uint64_t)k;
        }
        pthread_mutex_lock(&v->mu);
        if (off < end) {
            v->failed = 1; /* finish() reads the file itself */
            pthread_cond_broadcast(&v->cv);
            break;
        }
        v->hashed = off;
        pthread_cond_broadcast(&v->cv);
    }
    if (!buf)
        v->failed = 1;
    pthread_mutex_unlock(&v->mu);
    free(buf);
    return NULL;
}

/* The bytes from 0 whose pieces are all verified. */
static uint64_t verified_prefix(const struct fetch *f, uint64_t from_piece)
{
    uint64_t i = from_piece;
    while (i < f->npieces && (f->have[i / 8] & (1u << (i % 8))))
        i++;
    return i >= f->npieces ? f->m->size : i * f->psize;
}

/* Starts the verifier (NULL: finish() hashes the whole file itself). */
static void verifier_start(struct fetch *f)
{
    if (f->whole || !f->npieces)
        return;
    struct verifier *v = calloc(1, sizeof(*v));
    if (!v)
        return;
    v->fd = f->fd;
    v->md = EVP_MD_CTX_new();
    pthread_mutex_init(&v->mu, NULL);
    pthread_cond_init(&v->cv, NULL);
    v->ready = v->next = verified_prefix(f, 0);
    if (!v->md || !EVP_DigestInit_ex(v->md, EVP_sha256(), NULL) ||
        pthread_create(&v->th, NULL, verify_main, v) != 0) {
        EVP_MD_CTX_free(v->md);
        pthread_mutex_destroy(&v->mu);
        pthread_cond_destroy(&v->cv);
        free(v);
        return;
    }
    f->ver = v;
}

/* Piece i was verified: the verifier may go on. */
static void verifier_feed(struct fetch *f, uint64_t i)
{
    struct verifier *v = f->ver;
    if (!v || i != v->next / f->psize || v->next >= f->m->size)
        return; /* not the piece it waits for: nothing joins up */
    v->next = verified_prefix(f, i);
    pthread_mutex_lock(&v->mu);
    v->ready = v->next;
    pthread_cond_signal(&v->cv);
    pthread_mutex_unlock(&v->mu);
}

/* The whole file's digest: 0, or -1 when the verifier could not (then
 * finish() reads the file itself). */
static int verifier_end(struct fetch *f, unsigned char *out)
{
    struct verifier *v = f->ver;
    if (!v)
        return -1;
    pthread_mutex_lock(&v->mu);
    int ok = v->ready == f->m->size;
    if (ok)
        while (v->hashed < v->ready && !v->failed)
            pthread_cond_wait(&v->cv, &v->mu);
    ok = ok && !v->failed;
    v->stop = 1;
    pthread_cond_broadcast(&v->cv);
    pthread_mutex_unlock(&v->mu);
    pthread_join(v->th, NULL);
    unsigned dl;
    if (ok)
        EVP_DigestFinal_ex(v->md, out, &dl);
    EVP_MD_CTX_free(v->md);
    pthread_mutex_destroy(&v->mu);
    pthread_cond_destroy(&v->cv);
    free(v);
    f->ver = NULL;
    return ok ? 0 : -1;
}

/* ------------------------------------------------------------ completion */

static void set_have(struct fetch *f, uint64_t i)
{
    f->have[i / 8] |= (unsigned char)(1u << (i % 8));
    f->missing--;
    verifier_feed(f, i);
    if (f->havefd >= 0 &&
        pwrite(f->havefd, &f->have[i / 8], 1, (off_t)(HAVE_HDR + i / 8)) != 1)
        f->io_error = 1;
}

static void piece_good(struct fetch *f, struct req *r, long long t)
{
    size_t si = r->src;
    if (r->buf) {
        size_t w = 0;
        while (w < r->len) {
            ssize_t k = pwrite(f->fd, r->buf + w, r->len - w,
                               (off_t)(r->off + w));
            if (k < 0 && errno == EINTR)
                continue;
            if (k <= 0) {
                f->io_error = 1;
                return;
            }
            w += (size_t)k;
        }
    }
    if (!f->whole) {
        set_have(f, r->piece);
    } else {
        f->missing = 0;
        f->whole_src = si;
    }
    f->done += r->len;
    f->pub[si].bytes += r->len;
    if (f->pub[si].is_server)
        f->from_server += r->len;
    else
        f->from_peers += r->len;
    struct src *s = &f->s[si];
    s->errors = 0;
    s->busy = 0;
    long long el = t - r->t0 > 0 ? t - r->t0 : 1;
    double v = (double)r->len * 1000.0 / (double)el;
    s->rate = s->rate > 0 ? 0.7 * s->rate + 0.3 * v : v;
    /* The other copy in flight lost the race. */
    uint64_t piece = r->piece;
    req_free(f, r);
    struct req *o = f->reqs, *next;
    for (; o; o = next) {
        next = o->next;
        if (!f->whole && o->piece == piece)
            req_free(f, o);
    }
}

static void finished(struct fetch *f, struct req *r, CURLcode rc)
{
    size_t si = r->src;
    long long t = now_ms();
    if (rc == CURLE_OK && r->checked && r->got == r->len && !r->bad) {
        unsigned char d[EVP_MAX_MD_SIZE];
        unsigned dl = 0;
        EVP_DigestFinal_ex(r->md, d, &dl);
        if (f->whole || !memcmp(d, f->m->pieces + r->piece * PL_MEDIA_HASH_LEN,
                                PL_MEDIA_HASH_LEN)) {
            piece_good(f, r, t);
            return;
        }
        int64_t piece = (int64_t)r->piece;
        f->pub[si].bad_pieces++;
        req_free(f, r);
        emit(f, PL_FETCH_PIECE_BAD, si, piece);
        drop(f, si, S_BANNED);
        return;
    }
    if (r->status == 503) {
        /* Busy (a peer at its max_conns): a pause that doubles, 0.5 s to
         * 8 s, not an error; the seventh in a row drops the source. */
        struct src *s = &f->s[si];
        req_free(f, r);
        if (s->state != S_ACTIVE)
            return;
        /* Preferring peers, a busy one is waited for, never dropped:
         * the server would be the only other way. */
        if (++s->busy > BUSY_TRIES && !f->o.server_last) {
            drop(f, si, S_LOST);
            return;
        }
        long long pause = 500LL << (s->busy - 1);
        if (f->o.server_last)
            pause = 200 + t % 200; /* peers free up often: ask soon */
        s->busy_until = t + (pause > 8000 ? 8000 : pause);
        activate_reserve(f);
        return;
    }
    /* An empty answer (a 403 or 404 without a body) never reached
     * on_data: check the status here too. */
    req_free(f, r);
    src_error(f, si);
}

static void check_stalls(struct fetch *f)
{
    long long t = now_ms();
    struct req *r = f->reqs, *next;
    for (; r; r = next) {
        next = r->next;
        if (t - r->last > f->o.stall_ms) {
            size_t si = r->src;
            req_free(f, r);
            src_error(f, si);
            next = f->reqs; /* src_error may have freed others */
        }
    }
}

/* -------------------------------------------------------------- the file */

static int sha256_fd(int fd, uint64_t off, uint64_t len, unsigned char *out)
{
    static const size_t cap = 1 << 20;
    unsigned char *buf = malloc(cap);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    int rc = -1;
    if (!buf || !md || !EVP_DigestInit_ex(md, EVP_sha256(), NULL))
        goto out;
    while (len) {
        size_t want = len < cap ? (size_t)len : cap;
        ssize_t k = pread(fd, buf, want, (off_t)off);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            goto out;
        EVP_DigestUpdate(md, buf, (size_t)k);
        off += (uint64_t)k;
        len -= (uint64_t)k;
    }
    unsigned dl;
    EVP_DigestFinal_ex(md, out, &dl);
    rc = 0;
out:
    EVP_MD_CTX_free(md);
    free(buf);
    return rc;
}

/* Opens <hex>.part and <hex>.have; loads the bitmap of a matching earlier
 * run and hashes its pieces again.  0 or a PL_FETCH_* error. */
static int open_part(struct fetch *f)
{
    const struct pl_mlink *m = f->m;
    f->fd = open(f->part, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (f->fd < 0)
        return PL_FETCH_EIO;
    if (flock(f->fd, LOCK_EX | LOCK_NB) != 0)
        return PL_FETCH_EIO; /* another download of this file runs */
    size_t bm = (size_t)((f->npieces + 7) / 8);
    f->have = calloc(1, bm ? bm : 1);
    f->inflight = calloc(1, f->npieces ? f->npieces : 1);
    if (!f->have || !f->inflight)
        return PL_MEDIA_ENOMEM;
    f->missing = f->npieces;
    int resumed = 0;
    struct stat st;
    if (!f->whole) {
        unsigned char hdr[HAVE_HDR], want[HAVE_HDR];
        memcpy(want, HAVE_MAGIC, 8);
        for (int i = 0; i < 8; i++)
            want[8 + i] = (unsigned char)(m->size >> (8 * i));
        for (int i = 0; i < 4; i++)
            want[16 + i] = (unsigned char)(f->psize >> (8 * i));
        for (int i = 0; i < 8; i++)
            want[20 + i] = (unsigned char)(f->npieces >> (8 * i));
        f->havefd = open(f->havep, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        if (f->havefd < 0)
            return PL_FETCH_EIO;
        if (pread(f->havefd, hdr, HAVE_HDR, 0) == HAVE_HDR &&
            !memcmp(hdr, want, HAVE_HDR) &&
            pread(f->havefd, f->have, bm, HAVE_HDR) == (ssize_t)bm &&
            fstat(f->fd, &st) == 0 && (uint64_t)st.st_size == m->size) {
            resumed = 1;
            /* What the bitmap claims, checked against the bytes. */
            for (uint64_t i = 0; i < f->npieces; i++) {
                unsigned char d[PL_MEDIA_HASH_LEN];
                if (!has(f, i))
                    continue;
                if (sha256_fd(f->fd, i * f->psize, piece_len(f, i), d) ||
                    memcmp(d, m->pieces + i * PL_MEDIA_HASH_LEN,
                           PL_MEDIA_HASH_LEN)) {
                    f->have[i / 8] &= (unsigned char)~(1u << (i % 8));
                    continue;
                }
                f->missing--;
                f->done += piece_len(f, i);
            }
        } else {
            memset(f->have, 0, bm);
        }
        if (pwrite(f->havefd, want, HAVE_HDR, 0) != HAVE_HDR ||
            (bm && pwrite(f->havefd, f->have, bm, HAVE_HDR) != (ssize_t)bm))
            return PL_FETCH_EIO;
    }
    if (!resumed && (ftruncate(f->fd, 0) || ftruncate(f->fd, (off_t)m->size)))
        return PL_FETCH_EIO;
    return 0;
}

/* The whole file's hash, then the rename into the cache. */
static int finish(struct fetch *f)
{
    unsigned char d[PL_MEDIA_HASH_LEN];
    if (verifier_end(f, d) && sha256_fd(f->fd, 0, f->m->size, d))
        return PL_FETCH_EIO;
    if (memcmp(d, f->m->sha256, PL_MEDIA_HASH_LEN)) {
        size_t server = f->ns;
        for (size_t i = 0; i < f->ns && server == f->ns; i++)
            if (f->pub[i].is_server)
                server = i;
        if (server == f->ns)
            server = 0; /* no server listed: the document's first source */
        if (f->whole)
            server = f->whole_src; /* the bytes are that source's */
        unlink(f->part);
        if (f->havefd >= 0)
            unlink(f->havep);
        emit(f, PL_FETCH_FAILED, server, -1);
        return PL_FETCH_EVERIFY;
    }
    /* Read-only: a hard link made out of the cache (parley get -o) must
     * not be a way to change what the cache says is verified. */
    if (fchmod(f->fd, 0444) || fsync(f->fd) || rename(f->part, f->path) ||
        pl_cache_sync_dir(f->o.cache_dir))
        return PL_FETCH_EIO;
    if (f->havefd >= 0)
        unlink(f->havep);
    emit(f, PL_FETCH_DONE, f->ns, -1);
    return PL_MEDIA_OK;
}

/* ------------------------------------------------------------------- run */

/* Whether a source is only waiting out a busy answer. */
static int pausing(const struct fetch *f)
{
    long long t = now_ms();
    if (holding(f, t))
        return 1;
    for (size_t i = 0; i < f->ns; i++)
        if (f->s[i].state == S_ACTIVE && f->s[i].busy_until > t)
            return 1;
    return 0;
}

/* The length of url without its query (peers differ by path and host,
 * and a new token must not make a known peer new). */
static size_t url_key(const char *url)
{
    return strcspn(url, "?#");
}

/*
 * Reads opts.refresh_url again and adds the peers that joined since as
 * reserve sources (activated up to max_peers as others go).  A failed
 * read is only skipped: the download goes on with what it has.
 */
static void refresh(struct fetch *f)
{
    f->held = 0;
    struct pl_mlink m2 = {0};
    char err[256];
    /* With nothing to do but wait for a peer, the server may hold the
     * answer until one is listed (hold=, at most HOLD_MS). */
    char held[8192];
    const char *url = f->refresh_light ? f->refresh_light : f->o.refresh_url;
    long long t = now_ms();
    if (holding(f, t) && !peers_left(f) && f->refresh_light) {
        long ms = (long)(f->wait_until - t);
        if (ms > HOLD_MS)
            ms = HOLD_MS;
        if (ms > 0 && snprintf(held, sizeof(held), "%s&hold=%ld", url, ms) <
                          (int)sizeof(held)) {
            url = held;
            f->held = 1;
        }
    }
    if (pl_mlink_get(url, &f->o, 5000 + HOLD_MS, &m2, err, sizeof(err)) !=
            PL_MEDIA_OK ||
        memcmp(m2.sha256, f->m->sha256, PL_MEDIA_HASH_LEN)) {
        pl_mlink_free(&m2);
        return;
    }
    f->waiting = m2.wait;
    for (size_t k = 0; k < m2.nurls && f->ns < PL_MLINK_MAX_URLS; k++) {
        const char *u = m2.urls[k].url;
        if (m2.urls[k].priority == 1)
            continue; /* the server: there from the start */
        size_t n = url_key(u), i;
        for (i = 0; i < f->ns; i++)
            if (url_key(f->pub[i].url) == n && !strncmp(f->pub[i].url, u, n))
                break;
        if (i < f->ns)
            continue;
        struct src *ns = realloc(f->s, (f->ns + 1) * sizeof(*ns));
        if (ns)
            f->s = ns;
        struct pl_fetch_source *np = realloc(f->pub, (f->ns + 1) * sizeof(*np));
        if (np)
            f->pub = np;
        char **no = realloc(f->owned, (f->nowned + 1) * sizeof(*no));
        if (no)
            f->owned = no;
        char *copy = strdup(u);
        if (!ns || !np || !no || !copy) {
            free(copy);
            break;
        }
        f->owned[f->nowned++] = copy;
        memset(&f->s[f->ns], 0, sizeof(f->s[0]));
        memset(&f->pub[f->ns], 0, sizeof(f->pub[0]));
        f->pub[f->ns].url = copy;
        f->s[f->ns].priority = m2.urls[k].priority;
        f->s[f->ns].state = S_RESERVE;
        f->s[f->ns].slots = f->o.per_source;
        f->ns++;
    }
    pl_mlink_free(&m2);
    activate_reserve(f);
}

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;

static void curl_init(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

static int run(struct fetch *f, const volatile int *stop)
{
    int rc = open_part(f);
    if (rc)
        return rc;
    if (!f->missing)
        return finish(f);
    f->multi = curl_multi_init();
    if (!f->multi)
        return PL_MEDIA_ENOMEM;
    verifier_start(f);
    f->last_progress = 0;
    f->next_refresh = now_ms() + f->o.refresh_ms;
    f->waiting = f->m->wait;
    f->wait_until = now_ms() + f->o.wait_max_ms;
    if (f->o.refresh_url && !f->whole) {
        /* Read again for its sources only: the pieces are known. */
        size_t n = strlen(f->o.refresh_url) + 16;
        f->refresh_light = malloc(n);
        if (f->refresh_light)
            snprintf(f->refresh_light, n, "%s%cpieces=0", f->o.refresh_url,
                     strchr(f->o.refresh_url, '?') ? '&' : '?');
    }
    if (holding(f, now_ms()) || !peers_left(f))
        f->next_refresh = now_ms() + FAST_REFRESH;
    while (f->missing) {
        if (stop && *stop)
            return PL_FETCH_ESTOPPED;
        if (f->io_error)
            return PL_FETCH_EIO;
        schedule(f, 0);
        if (!f->reqs)
            schedule(f, 1);
        if (f->io_error)
            return PL_FETCH_EIO;
        if (!f->reqs && !pausing(f))
            return PL_FETCH_ESOURCES;
        int running;
        curl_multi_perform(f->multi, &running);
        CURLMsg *msg;
        int left, completed = 0;
        while ((msg = curl_multi_info_read(f->multi, &left))) {
            if (msg->msg != CURLMSG_DONE)
                continue;
            struct req *r = NULL;
            CURLcode res = msg->data.result;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&r);
            if (r)
                finished(f, r, res);
            completed++;
        }
        if (f->io_error)
            return PL_FETCH_EIO;
        check_stalls(f);
        long long t = now_ms();
        if (f->o.refresh_url && !f->whole && t >= f->next_refresh) {
            refresh(f);
            /* Often while waiting for peers or taking the server's bytes
             * for want of one, else every refresh_ms. */
            long long t2 = now_ms();
            long every = f->o.refresh_ms;
            if ((holding(f, t2) || !peers_left(f)) && every > FAST_REFRESH)
                every = FAST_REFRESH;
            /* A held read that the server kept a while paces itself:
             * ask again at once (one that came back at once did not). */
            if (f->held && t2 - t >= HOLD_MS / 2)
                every = 0;
            f->next_refresh = t2 + every;
        }
        if (t - f->last_progress >= 250) {
            f->last_progress = t;
            emit(f, PL_FETCH_PROGRESS, f->ns, -1);
        }
        /* A request that just ended freed a slot: fill it at once (a
         * wait here would idle every stream whose piece came in one go,
         * as on a fast network they all do). */
        if (f->missing && !completed)
            curl_multi_poll(f->multi, NULL, 0, 100, NULL);
    }
    emit(f, PL_FETCH_PROGRESS, f->ns, -1);
    return finish(f);
}

static void cleanup(struct fetch *f)
{
    if (f->ver) {
        unsigned char d[PL_MEDIA_HASH_LEN];
        verifier_end(f, d); /* ended early: stops the thread */
    }
    while (f->reqs)
        req_free(f, f->reqs);
    if (f->multi)
        curl_multi_cleanup(f->multi);
    if (f->fd >= 0)
        close(f->fd);
    if (f->havefd >= 0)
        close(f->havefd);
    free(f->have);
    free(f->inflight);
    free(f->s);
    free(f->pub);
    for (size_t i = 0; i < f->nowned; i++)
        free(f->owned[i]);
    free(f->owned);
    free(f->refresh_light);
}

/* An empty file: nothing to download; its hash is known. */
static int empty_file(struct fetch *f)
{
    unsigned char d[PL_MEDIA_HASH_LEN];
    unsigned dl;
    EVP_Digest("", 0, d, &dl, EVP_sha256(), NULL);
    if (memcmp(d, f->m->sha256, PL_MEDIA_HASH_LEN)) {
        emit(f, PL_FETCH_FAILED, f->ns, -1);
        return PL_FETCH_EVERIFY;
    }
    int fd = open(f->part, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return PL_FETCH_EIO;
    int bad = fsync(fd);
    close(fd);
    if (bad || rename(f->part, f->path) || pl_cache_sync_dir(f->o.cache_dir))
        return PL_FETCH_EIO;
    emit(f, PL_FETCH_DONE, f->ns, -1);
    return PL_MEDIA_OK;
}

int pl_fetch_run(const struct pl_mlink *m, const struct pl_fetch_opts *opts,
                 pl_fetch_cb *cb, void *ud, const volatile int *stop)
{
    struct fetch f = {.m = m, .cb = cb, .ud = ud, .fd = -1, .havefd = -1};
    if (!m || !opts || !opts->cache_dir || !m->nurls ||
        m->nurls > PL_MLINK_MAX_URLS ||
        (m->piece_size &&
         (!m->pieces ||
          m->npieces != pl_media_piece_count(m->size, m->piece_size))))
        return PL_MEDIA_EINVAL;
    f.o = *opts;
    if (f.o.max_peers == 0)
        f.o.max_peers = 8;
    else if (f.o.max_peers < 0)
        f.o.max_peers = 0; /* the server alone */
    if (f.o.per_source <= 0)
        f.o.per_source = 2;
    if (f.o.server_streams <= 0)
        f.o.server_streams = 4;
    if (f.o.stall_ms <= 0)
        f.o.stall_ms = 10000;
    if (f.o.connect_ms <= 0)
        f.o.connect_ms = 5000;
    if (f.o.refresh_ms <= 0)
        f.o.refresh_ms = 2000;
    if (f.o.wait_max_ms <= 0)
        f.o.wait_max_ms = 120000;
    if (pl_cache_path(f.o.cache_dir, m->sha256, NULL, f.path, sizeof(f.path)) ||
        pl_cache_path(f.o.cache_dir, m->sha256, ".part", f.part,
                      sizeof(f.part)) ||
        pl_cache_path(f.o.cache_dir, m->sha256, ".have", f.havep,
                      sizeof(f.havep)))
        return PL_MEDIA_EINVAL;
    f.ns = m->nurls;
    f.s = calloc(f.ns, sizeof(*f.s));
    f.pub = calloc(f.ns, sizeof(*f.pub));
    if (!f.s || !f.pub) {
        cleanup(&f);
        return PL_MEDIA_ENOMEM;
    }
    for (size_t i = 0; i < f.ns; i++) {
        f.pub[i].url = m->urls[i].url;
        f.pub[i].is_server = m->urls[i].priority == 1;
        f.s[i].priority = m->urls[i].priority;
        f.s[i].state = f.pub[i].is_server ? S_ACTIVE : S_RESERVE;
        f.s[i].slots = f.pub[i].is_server ? f.o.server_streams : f.o.per_source;
    }
    activate_reserve(&f);

    /* The cache first: a verified copy of the right size is the file. */
    struct stat st;
    if (pl_cache_lookup(f.o.cache_dir, m->sha256, f.path, sizeof(f.path))) {
        if (stat(f.path, &st) == 0 && (uint64_t)st.st_size == m->size) {
            f.done = m->size;
            emit(&f, PL_FETCH_DONE, f.ns, -1);
            cleanup(&f);
            return PL_MEDIA_OK;
        }
        unlink(f.path); /* not what its name says: fetch it again */
    }
    if (pl_cache_mkdirs(f.o.cache_dir)) {
        cleanup(&f);
        return PL_FETCH_EIO;
    }
    int rc;
    if (m->size == 0) {
        rc = empty_file(&f);
        cleanup(&f);
        return rc;
    }
    f.whole = m->piece_size == 0;
    f.psize = f.whole ? m->size : m->piece_size;
    f.npieces = f.whole ? 1 : m->npieces;
    pthread_once(&curl_once, curl_init);
    rc = run(&f, stop);
    cleanup(&f);
    return rc;
}

/* ------------------------------------------------------- the Metalink */

struct doc {
    char *p;
    size_t len;
    int too_big;
};

static size_t on_doc(char *p, size_t sz, size_t n, void *ud)
{
    struct doc *b = ud;
    size_t len = sz * n;
    if (b->len + len > PL_MLINK_MAX_DOC) {
        b->too_big = 1;
        return 0;
    }
    char *np = realloc(b->p, b->len + len + 1);
    if (!np)
        return 0;
    memcpy(np + b->len, p, len);
    b->p = np;
    b->len += len;
    b->p[b->len] = '\0';
    return len;
}

char *pl_mlink_seat_url(const char *url)
{
    unsigned char r[8];
    if (RAND_bytes(r, sizeof(r)) != 1)
        return NULL;
    r[0] |= 1; /* never all zero */
    size_t n = strlen(url) + 32;
    char *s = malloc(n);
    if (!s)
        return NULL;
    char hex[17];
    for (int i = 0; i < 8; i++)
        snprintf(hex + 2 * i, 3, "%02x", r[i]);
    snprintf(s, n, "%s%cseat=%s", url, strchr(url, '?') ? '&' : '?', hex);
    return s;
}

int pl_mlink_get(const char *url, const struct pl_fetch_opts *o,
                 long timeout_ms, struct pl_mlink *m, char *err, size_t errlen)
{
    struct doc b = {0};
    char errbuf[CURL_ERROR_SIZE] = "";
    CURL *h = curl_easy_init();
    if (!h) {
        snprintf(err, errlen, "no memory");
        return PL_MEDIA_ENOMEM;
    }
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "parley/" PL_VERSION);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS,
                     timeout_ms > 0 ? timeout_ms : 60000L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_doc);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    if (o && o->ca_file)
        curl_easy_setopt(h, CURLOPT_CAINFO, o->ca_file);
    if (o && o->insecure) {
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    CURLcode rc = curl_easy_perform(h);
    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(h);
    int out = PL_MEDIA_OK;
    if (rc != CURLE_OK) {
        snprintf(err, errlen, "%.200s: %s", url,
                 b.too_big ? "Metalink too large"
                 : *errbuf ? errbuf
                           : curl_easy_strerror(rc));
        out = b.too_big ? PL_MEDIA_EINVAL : PL_FETCH_ECONNECT;
    } else if (status != 200) {
        snprintf(err, errlen, "%.200s: HTTP status %ld", url, status);
        out = PL_MEDIA_EINVAL;
    } else {
        char why[256];
        if (pl_mlink_parse(b.p ? b.p : "", b.len, m, why, sizeof(why)) !=
            PL_MEDIA_OK) {
            snprintf(err, errlen, "Metalink refused: %.250s", why);
            out = PL_MEDIA_EINVAL;
        }
    }
    free(b.p);
    return out;
}
