/*
 * get.c - `parley get`: one file of the server's distributed media
 * (doc/media.md "The client"), from the local cache, or from the server
 * and its peers at once with every piece verified (src/media/fetch.h).
 *
 *   parley get [--cache DIR] [-o FILE] [--max-peers N] [--server-last]
 *              [--stall SEC] HASH|URL
 *
 * HASH (SHA-256, hex or base64): the cache first; else the Metalink's URL
 * from upload.<domain> (urn:parley:media:0 query).  URL: the file's URL
 * (".meta4" appended unless it ends so) or its Metalink's.  The Metalink
 * comes over libcurl with the session's TLS options (--ca-file,
 * --insecure).
 *
 * The XMPP session stays alive during the download: the fetch callback
 * runs libstrophe once per event (about 4 a second), and each bad piece
 * (or a whole-file failure) is reported to the server at once, answers
 * collected before the command ends.  After a download, <fetched/> tells
 * the server how many bytes came from it and from peers (an error answer,
 * from a server without it, is ignored).
 *
 * Output: a progress line rewritten on a terminal's stderr; with --json,
 * one JSON object per line on stdout (progress, piece-bad, banned, lost,
 * failed, done).  Peer URLs are printed without their token.
 * Exit codes: 0, 1 (verification failed, no source left, cache not
 * writable), 3 (connection), 6 (error answer, e.g. item-not-found).
 */
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "clients/cli/cli.h"
#include "core/version.h"
#include "media/fetch.h"

#define NS_MEDIA "urn:parley:media:0"
#define NS_HASHES "urn:xmpp:hashes:2"

struct get {
    struct pl_cli *c;
    char domain[512]; /* upload.<domain> */
    unsigned char sha[PL_MEDIA_HASH_LEN];
    int tty;            /* progress line on stderr */
    int line;           /* a progress line is showing */
    volatile int stop;  /* SIGINT/SIGTERM seen */
    int pending;        /* reports awaiting their answer */
    int reports;        /* sent */
    int failed_reports; /* answered with an error */
    char path[4096];    /* DONE's */
    int done;
    uint64_t from_server, from_peers;
    json_t *sources;
};

/* url without its token= query parameter, into out. */
static void strip_token(const char *url, char *out, size_t cap)
{
    snprintf(out, cap, "%s", url ? url : "");
    char *q = strchr(out, '?');
    if (!q)
        return;
    char *w = q + 1, *p = q + 1;
    while (*p) {
        size_t n = strcspn(p, "&");
        if (strncmp(p, "token=", 6)) {
            if (w != q + 1)
                *w++ = '&';
            memmove(w, p, n);
            w += n;
        }
        p += n;
        if (*p == '&')
            p++;
    }
    *w = '\0';
    if (w == q + 1)
        *q = '\0'; /* nothing else in the query */
}

static void human(double v, char *out, size_t cap)
{
    const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int i = 0;
    while (v >= 1024 && i < 4) {
        v /= 1024;
        i++;
    }
    snprintf(out, cap, i ? "%.1f %s" : "%.0f %s", v, u[i]);
}

static void clear_line(struct get *g)
{
    if (g->line) {
        fputs("\r\033[K", stderr);
        g->line = 0;
    }
}

/* ------------------------------------------------------------- reports */

static int on_report_answer(xmpp_conn_t *conn, xmpp_stanza_t *st, void *ud)
{
    struct get *g = ud;
    const char *type = xmpp_stanza_get_type(st);
    g->pending--;
    if (!type || strcmp(type, "result")) {
        g->failed_reports++;
        fprintf(stderr, "parley: report refused: %s\n",
                pl_cl_error_condition(st));
    }
    return 0;
}

static xmpp_stanza_t *hash_elem(struct get *g)
{
    char b64[64];
    pl_media_b64(g->sha, PL_MEDIA_HASH_LEN, b64, sizeof(b64));
    xmpp_stanza_t *h = pl_cli_elem(g->c->ctx, "hash", NS_HASHES);
    xmpp_stanza_set_attribute(h, "algo", "sha-256");
    xmpp_stanza_t *t = xmpp_stanza_new(g->c->ctx);
    xmpp_stanza_set_text(t, b64);
    pl_cli_adopt(h, t);
    return h;
}

/* Sends a failure report now (piece < 0: the whole file); its answer is
 * counted by on_report_answer. */
static void report(struct get *g, const char *url, int64_t piece)
{
    static unsigned seq;
    struct pl_cli *c = g->c;
    if (!c->connected)
        return;
    char id[32], num[32];
    snprintf(id, sizeof(id), "report%u", ++seq);
    xmpp_stanza_t *iq = xmpp_iq_new(c->ctx, "set", id);
    xmpp_stanza_set_to(iq, g->domain);
    xmpp_stanza_t *r = pl_cli_elem(c->ctx, "report", NS_MEDIA);
    if (piece >= 0) {
        snprintf(num, sizeof(num), "%lld", (long long)piece);
        xmpp_stanza_set_attribute(r, "piece", num);
    }
    if (url)
        xmpp_stanza_set_attribute(r, "source", url);
    pl_cli_adopt(r, hash_elem(g));
    pl_cli_adopt(iq, r);
    xmpp_id_handler_add(c->conn, on_report_answer, id, g);
    xmpp_send(c->conn, iq);
    xmpp_stanza_release(iq);
    g->pending++;
    g->reports++;
}

/* ---------------------------------------------------------------- events */

static json_t *sources_json(const struct pl_fetch_event *ev)
{
    json_t *a = json_array();
    char u[4096];
    for (size_t i = 0; i < ev->nsources; i++) {
        const struct pl_fetch_source *s = &ev->sources[i];
        strip_token(s->url, u, sizeof(u));
        json_array_append_new(a,
                              json_pack("{s:s, s:b, s:I, s:i, s:b, s:b}", "url",
                                        u, "server", s->is_server, "bytes",
                                        (json_int_t)s->bytes, "bad_pieces",
                                        s->bad_pieces, "banned", s->banned,
                                        "lost", s->lost));
    }
    return a;
}

static void on_event(const struct pl_fetch_event *ev, void *ud)
{
    struct get *g = ud;
    struct pl_cli *c = g->c;
    char u[4096], a[32], b[32], r[32];
    strip_token(ev->url, u, sizeof(u));
    switch (ev->kind) {
    case PL_FETCH_PROGRESS:
        if (c->json) {
            pl_cli_out(c,
                       json_pack("{s:s, s:I, s:I, s:f, s:i, s:I, s:I}", "event",
                                 "progress", "done", (json_int_t)ev->done,
                                 "total", (json_int_t)ev->total, "rate",
                                 ev->rate, "active", ev->active, "from_server",
                                 (json_int_t)ev->from_server, "from_peers",
                                 (json_int_t)ev->from_peers),
                       NULL);
        } else if (g->tty) {
            human((double)ev->done, a, sizeof(a));
            human((double)ev->total, b, sizeof(b));
            human(ev->rate, r, sizeof(r));
            fprintf(stderr, "\r\033[K%s / %s  %s/s  %d source%s", a, b, r,
                    ev->active, ev->active == 1 ? "" : "s");
            g->line = 1;
        }
        break;
    case PL_FETCH_PIECE_BAD:
        report(g, ev->url, ev->piece);
        clear_line(g);
        fprintf(stderr, "parley: piece %lld from %s failed its hash\n",
                (long long)ev->piece, u);
        if (c->json)
            pl_cli_out(c,
                       json_pack("{s:s, s:s, s:I}", "event", "piece-bad",
                                 "source", u, "piece", (json_int_t)ev->piece),
                       NULL);
        break;
    case PL_FETCH_BANNED:
    case PL_FETCH_LOST:
        clear_line(g);
        fprintf(stderr, "parley: %s %s\n", u,
                ev->kind == PL_FETCH_BANNED ? "banned" : "lost");
        if (c->json)
            pl_cli_out(c,
                       json_pack("{s:s, s:s}", "event",
                                 ev->kind == PL_FETCH_BANNED ? "banned"
                                                             : "lost",
                                 "source", u),
                       NULL);
        break;
    case PL_FETCH_FAILED:
        report(g, ev->url, -1);
        clear_line(g);
        fprintf(stderr, "parley: the file does not match its SHA-256\n");
        if (c->json)
            pl_cli_out(c,
                       json_pack("{s:s, s:s?}", "event", "failed", "source",
                                 ev->url ? u : NULL),
                       NULL);
        break;
    case PL_FETCH_DONE:
        g->done = 1;
        snprintf(g->path, sizeof(g->path), "%s", ev->path);
        g->from_server = ev->from_server;
        g->from_peers = ev->from_peers;
        json_decref(g->sources);
        g->sources = sources_json(ev);
        break;
    }
    /* Keep the session alive (pings, report answers) meanwhile. */
    if (c->connected)
        xmpp_run_once(c->ctx, 0);
    if (pl_cli_interrupted())
        g->stop = 1;
}

/* ------------------------------------------------------------ Metalink */

/* GET url into *m: PL_EXIT_OK, PL_EXIT_CONNECT, or PL_EXIT_FAILURE (an
 * HTTP error or a document that is not a valid Metalink). */
static int get_metalink(struct pl_cli *c, const char *url, struct pl_mlink *m)
{
    struct pl_fetch_opts o = {.ca_file = c->o.ca_file,
                              .insecure = c->o.insecure};
    char err[512];
    int rc = pl_mlink_get(url, &o, c->o.timeout_ms, m, err, sizeof(err));
    if (rc == PL_MEDIA_OK)
        return PL_EXIT_OK;
    fprintf(stderr, "parley: %s\n", err);
    if (c->json)
        pl_cli_out(c, json_pack("{s:s}", "error", err), NULL);
    return rc == PL_FETCH_ECONNECT ? PL_EXIT_CONNECT : PL_EXIT_FAILURE;
}

/* The Metalink's URL of the file sha from upload.<domain>. */
static int ask_sources(struct get *g, char *out, size_t cap)
{
    struct pl_cli *c = g->c;
    xmpp_stanza_t *iq = xmpp_iq_new(c->ctx, "get", NULL);
    xmpp_stanza_set_to(iq, g->domain);
    xmpp_stanza_t *q = pl_cli_elem(c->ctx, "query", NS_MEDIA);
    pl_cli_adopt(q, hash_elem(g));
    pl_cli_adopt(iq, q);
    xmpp_stanza_t *r = NULL;
    int rc = pl_cli_iq(c, iq, &r);
    xmpp_stanza_release(iq);
    if (rc == PL_EXIT_STANZA)
        pl_cli_stanza_error(c, "media query", r);
    const char *ml = NULL;
    if (rc == PL_EXIT_OK) {
        xmpp_stanza_t *a = xmpp_stanza_get_child_by_name_and_ns(r, "query",
                                                                NS_MEDIA);
        ml = a ? xmpp_stanza_get_attribute(a, "metalink") : NULL;
        if (!ml || (strncmp(ml, "http://", 7) && strncmp(ml, "https://", 8))) {
            fprintf(stderr, "parley: the answer names no Metalink\n");
            rc = PL_EXIT_FAILURE;
        } else {
            snprintf(out, cap, "%s", ml);
        }
    }
    if (r)
        xmpp_stanza_release(r);
    return rc;
}

/* ----------------------------------------------------------- -o FILE */

/* path's bytes at dst: a hard link when on the same file system, else a
 * copy; through a temporary name and a rename.  0 or -1 (errno). */
static int place(const char *path, const char *dst)
{
    char tmp[4200];
    snprintf(tmp, sizeof(tmp), "%s.parley-%ld", dst, (long)getpid());
    unlink(tmp);
    if (link(path, tmp) == 0)
        goto done;
    int in = open(path, O_RDONLY | O_CLOEXEC);
    if (in < 0)
        return -1;
    int out = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (out < 0) {
        close(in);
        return -1;
    }
    char buf[1 << 16];
    ssize_t k;
    int bad = 0;
    while ((k = read(in, buf, sizeof(buf))) != 0) {
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0 || write(out, buf, (size_t)k) != k) {
            bad = 1;
            break;
        }
    }
    close(in);
    if (fsync(out))
        bad = 1;
    if (close(out))
        bad = 1;
    if (bad) {
        unlink(tmp);
        return -1;
    }
done:
    if (rename(tmp, dst)) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

/* ----------------------------------------------------------- command */

static int usage_get(void)
{
    fprintf(stderr, "usage: parley get [--cache DIR] [-o FILE] [--max-peers "
                    "N] [--server-last]\n                  [--stall SEC] "
                    "HASH|URL\n");
    return PL_EXIT_USAGE;
}

static void default_cache(char *out, size_t cap)
{
    const char *x = getenv("XDG_CACHE_HOME");
    const char *home = getenv("HOME");
    if (x && *x == '/')
        snprintf(out, cap, "%s/parley/media", x);
    else
        snprintf(out, cap, "%s/.cache/parley/media",
                 home && *home ? home : ".");
}

int pl_cli_cmd_get(struct pl_cli *c, int argc, char **argv)
{
    const char *cache = NULL, *outfile = NULL, *what = NULL;
    struct pl_fetch_opts o = {0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        char *end;
        if (!strcmp(a, "--cache") && i + 1 < argc) {
            cache = argv[++i];
        } else if (!strcmp(a, "-o") && i + 1 < argc) {
            outfile = argv[++i];
        } else if (!strcmp(a, "--max-peers") && i + 1 < argc) {
            long v = strtol(argv[++i], &end, 10);
            if (*end || v < 0 || v > 1000)
                return usage_get();
            o.max_peers = v ? (int)v : -1;
        } else if (!strcmp(a, "--server-last")) {
            o.server_last = 1;
        } else if (!strcmp(a, "--stall") && i + 1 < argc) {
            double v = strtod(argv[++i], &end);
            if (*end || !(v > 0) || v > 3600)
                return usage_get();
            o.stall_ms = (long)(v * 1000);
        } else if (a[0] == '-' || what) {
            return usage_get();
        } else {
            what = a;
        }
    }
    if (!what)
        return usage_get();
    struct get g = {.c = c, .tty = !c->json && isatty(2)};
    const char *at = strchr(c->jid, '@');
    snprintf(g.domain, sizeof(g.domain), "upload.%.*s",
             (int)strcspn(at ? at + 1 : c->jid, "/"), at ? at + 1 : c->jid);
    char cdir[4096], mlurl[8192];
    if (cache)
        snprintf(cdir, sizeof(cdir), "%s", cache);
    else
        default_cache(cdir, sizeof(cdir));
    int is_url = !strncmp(what, "http://", 7) || !strncmp(what, "https://", 8);
    int rc;
    struct pl_mlink m = {0};
    long long t0 = pl_cl_now_ms();
    int cached = 0;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (!is_url) {
        if (pl_media_parse_sha256(what, strlen(what), g.sha) != PL_MEDIA_OK) {
            fprintf(stderr,
                    "parley: %s is neither a SHA-256 (hex or base64) "
                    "nor an http(s) URL\n",
                    what);
            return usage_get();
        }
        /* The cache first: no question to anyone. */
        if (pl_cache_lookup(cdir, g.sha, g.path, sizeof(g.path))) {
            cached = g.done = 1;
            g.sources = json_array();
            goto done;
        }
        rc = ask_sources(&g, mlurl, sizeof(mlurl));
        if (rc != PL_EXIT_OK)
            return rc;
    } else {
        size_t n = strlen(what);
        snprintf(mlurl, sizeof(mlurl), "%s%s", what,
                 n > 6 && !strcmp(what + n - 6, ".meta4") ? "" : ".meta4");
    }
    /* Preferring peers: a seat in the Metalink's URL, read again for
     * peers that joined since (a seed, or told to wait for them). */
    char *seat = o.server_last ? pl_mlink_seat_url(mlurl) : NULL;
    o.refresh_url = seat;
    rc = get_metalink(c, seat ? seat : mlurl, &m);
    if (rc != PL_EXIT_OK) {
        free(seat);
        return rc;
    }
    if (is_url)
        memcpy(g.sha, m.sha256, PL_MEDIA_HASH_LEN);
    else if (memcmp(g.sha, m.sha256, PL_MEDIA_HASH_LEN)) {
        fprintf(stderr, "parley: the Metalink describes another file\n");
        pl_mlink_free(&m);
        free(seat);
        return PL_EXIT_FAILURE;
    }
    o.cache_dir = cdir;
    o.ca_file = c->o.ca_file;
    o.insecure = c->o.insecure;
    int frc = pl_fetch_run(&m, &o, on_event, &g, &g.stop);
    clear_line(&g);
    pl_mlink_free(&m);
    free(seat);
    /* The reports' answers (each was sent when its failure was seen). */
    long long deadline = pl_cl_now_ms() + c->o.timeout_ms;
    while (g.pending > 0 && c->connected && pl_cl_now_ms() < deadline)
        xmpp_run_once(c->ctx, 50);
    if (frc != PL_MEDIA_OK) {
        const char *why = frc == PL_FETCH_EVERIFY    ? "verification failed"
                          : frc == PL_FETCH_ESOURCES ? "no source left"
                          : frc == PL_FETCH_ESTOPPED ? "interrupted"
                          : frc == PL_FETCH_EIO      ? "cannot write the cache "
                                                       "(or it is in use)"
                                                     : "download failed";
        fprintf(stderr, "parley: %s\n", why);
        if (c->json)
            pl_cli_out(c,
                       json_pack("{s:s, s:i}", "error", why, "reports",
                                 g.reports),
                       NULL);
        json_decref(g.sources);
        return PL_EXIT_FAILURE;
    }
    cached = !g.from_server && !g.from_peers;
    if (!cached) {
        /* How much came from the server and from peers (issue 17's
         * "media status"); a server without it answers an error. */
        char sb[32], pb[32];
        snprintf(sb, sizeof(sb), "%llu", (unsigned long long)g.from_server);
        snprintf(pb, sizeof(pb), "%llu", (unsigned long long)g.from_peers);
        xmpp_stanza_t *iq = xmpp_iq_new(c->ctx, "set", NULL);
        xmpp_stanza_set_to(iq, g.domain);
        xmpp_stanza_t *fe = pl_cli_elem(c->ctx, "fetched", NS_MEDIA);
        xmpp_stanza_set_attribute(fe, "server-bytes", sb);
        xmpp_stanza_set_attribute(fe, "peer-bytes", pb);
        pl_cli_adopt(fe, hash_elem(&g));
        pl_cli_adopt(iq, fe);
        xmpp_stanza_t *r = NULL;
        if (c->connected)
            pl_cli_iq(c, iq, &r);
        xmpp_stanza_release(iq);
        if (r)
            xmpp_stanza_release(r);
    }
done:
    if (outfile && place(g.path, outfile)) {
        fprintf(stderr, "parley: %s: %s\n", outfile, strerror(errno));
        json_decref(g.sources);
        return PL_EXIT_FAILURE;
    }
    double secs = (double)(pl_cl_now_ms() - t0) / 1000.0;
    char text[9000];
    snprintf(text, sizeof(text),
             "%s%s%s (%llu bytes from the server, %llu "
             "from peers, %.1f s%s)",
             outfile ? outfile : g.path, outfile ? " from " : "",
             outfile ? g.path : "", (unsigned long long)g.from_server,
             (unsigned long long)g.from_peers, secs,
             cached ? ", from the cache" : "");
    pl_cli_out(c,
               json_pack("{s:s, s:s, s:s?, s:I, s:I, s:f, s:b, s:o, s:i}",
                         "event", "done", "path", g.path, "output", outfile,
                         "from_server", (json_int_t)g.from_server, "from_peers",
                         (json_int_t)g.from_peers, "seconds", secs, "cached",
                         cached, "sources",
                         g.sources ? g.sources : json_array(), "reports",
                         g.reports),
               text);
    return PL_EXIT_OK;
}
