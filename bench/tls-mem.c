/*
 * bench/tls-mem.c - what an idle TLS connection costs inside OpenSSL, by
 * allocation site (`make bench-tls-mem`, or `BENCH_ONLY=tlsidle
 * bench/run`, which runs it beside the server-side measurement).
 *
 * The program installs counting allocators (CRYPTO_set_mem_functions)
 * before OpenSSL allocates anything, makes the server context with
 * Parley's own pl_tls_host_load (src/core/tls.c, so the options are the
 * server's), and opens N connections over socketpairs, each with a client
 * SSL of a separate context.  Every server-side connection is driven as
 * parleyd drives it: SSL_new, SSL_set_fd, the handshake, a few reads and
 * writes of stream-sized records both ways (the STARTTLS stream, SASL and
 * bind), after which it is idle.
 * Allocations made while server-side calls run are charged to the server;
 * the client's are not counted.  Each block's header records its size
 * and the OpenSSL source line that asked for it, so the result is the
 * live server-side bytes per connection, per allocation site, after each
 * phase:
 *
 *   new        SSL_new + SSL_set_fd
 *   handshake  after SSL_do_handshake returned 1 (tickets sent)
 *   data       after the application data exchange: idle (with
 *              SSL_MODE_RELEASE_BUFFERS no record buffer is left)
 *
 * Bytes are what OpenSSL's blocks offer it (malloc_usable_size: the
 * request and glibc's rounding); glibc's own 8-byte header per block is
 * not in them, so the idle block count is printed beside the total.  The
 * site table is printed for the idle state, largest first, with the
 * phase that allocated each site first.
 *
 *   build/bench/tls-mem [--sessions N] [--tls12] [--json]
 *                       [--client-suites LIST] [--keep-buffers]
 *                       [--tickets N] CERT KEY
 *
 * --json prints one JSON object (per-phase totals per connection and the
 * twelve largest sites) instead of the table.  The other options are the
 * variants weighed in bench/results/2026-12-07-tls-idle.md: the client
 * offers only LIST (TLS 1.3 suites: what another suite costs), the
 * server without SSL_MODE_RELEASE_BUFFERS, N session tickets instead of
 * OpenSSL's 2.
 */
#include <malloc.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/tls.h"

/* ---- counting allocator ---- */

#define MAX_SITES 4096

struct site {
    const char *file; /* OpenSSL source file, NULL: unused slot */
    int line;         /* and line */
    long live;        /* server-side bytes live now */
    long blocks;      /* server-side blocks live now */
    int phase;        /* the phase that first allocated here */
};

struct hdr {
    size_t site; /* index in sites, or MAX_SITES: not counted */
    size_t pad;  /* keeps the payload 16-byte aligned */
};

static struct site sites[MAX_SITES];
static int charging;     /* allocations are the server's while set */
static int phase;        /* 0 new, 1 handshake, 2 data */
static long live_total;  /* server-side bytes live now */
static long live_blocks; /* and blocks */

static size_t site_of(const char *file, int line)
{
    if (!charging)
        return MAX_SITES;
    size_t h = ((size_t)(uintptr_t)file * 31u + (size_t)line) % MAX_SITES;
    for (size_t i = 0; i < MAX_SITES; i++) {
        size_t k = (h + i) % MAX_SITES;
        if (!sites[k].file) {
            sites[k].file = file ? file : "?";
            sites[k].line = line;
            sites[k].phase = phase;
            return k;
        }
        if (sites[k].file == (file ? file : "?") && sites[k].line == line)
            return k;
    }
    return MAX_SITES;
}

static void account(struct hdr *h, long sign)
{
    if (h->site >= MAX_SITES)
        return;
    /* What the block offers OpenSSL: its request and the rounding, not
     * our header nor glibc's (8 bytes a block, counted apart). */
    long n = (long)(malloc_usable_size(h) - sizeof(*h));
    sites[h->site].live += sign * n;
    sites[h->site].blocks += sign;
    live_total += sign * n;
    live_blocks += sign;
}

static void *count_malloc(size_t n, const char *file, int line)
{
    struct hdr *h = malloc(sizeof(*h) + n);
    if (!h)
        return NULL;
    h->site = site_of(file, line);
    account(h, 1);
    return h + 1;
}

static void count_free(void *p, const char *file, int line)
{
    (void)file;
    (void)line;
    if (!p)
        return;
    struct hdr *h = (struct hdr *)p - 1;
    account(h, -1);
    free(h);
}

static void *count_realloc(void *p, size_t n, const char *file, int line)
{
    if (!p)
        return count_malloc(n, file, line);
    struct hdr *h = (struct hdr *)p - 1;
    account(h, -1);
    size_t site = h->site;
    struct hdr *g = realloc(h, sizeof(*g) + n);
    if (!g) {
        account(h, 1);
        return NULL;
    }
    /* A block keeps the site that made it; the server's grows count. */
    g->site = site < MAX_SITES ? site : site_of(file, line);
    account(g, 1);
    return g + 1;
}

/* ---- connections ---- */

struct pair {
    SSL *srv; /* the server side, as parleyd holds it */
    SSL *cli; /* the client side */
    int fd[2];
};

static int hs_done(SSL *s)
{
    return SSL_is_init_finished(s);
}

/* Drives both handshakes over the socketpair until both are done. */
static int handshake(struct pair *p)
{
    for (int i = 0; i < 100; i++) {
        if (!hs_done(p->cli)) {
            int r = SSL_do_handshake(p->cli);
            if (r <= 0 && SSL_get_error(p->cli, r) != SSL_ERROR_WANT_READ)
                return -1;
        }
        if (!hs_done(p->srv)) {
            charging = 1;
            int r = SSL_do_handshake(p->srv);
            charging = 0;
            if (r <= 0 && SSL_get_error(p->srv, r) != SSL_ERROR_WANT_READ)
                return -1;
        }
        if (hs_done(p->cli) && hs_done(p->srv))
            return 0;
    }
    return -1;
}

/* n bytes one way; the reader reads until it has them all. */
static int send_recv(SSL *w, SSL *r, size_t n, int server_writes)
{
    static char buf[20000];
    memset(buf, 'x', n);
    charging = server_writes;
    int k = SSL_write(w, buf, (int)n);
    charging = 0;
    if (k != (int)n)
        return -1;
    size_t got = 0;
    while (got < n) {
        charging = !server_writes;
        k = SSL_read(r, buf, (int)sizeof(buf));
        charging = 0;
        if (k <= 0)
            return -1;
        got += (size_t)k;
    }
    return 0;
}

/* What a STARTTLS session exchanges from the handshake to being bound:
 * stream headers, features, SASL (SCRAM: three round trips), the second
 * stream, bind, session, presence; sizes in bytes as parley-load sees
 * them.  The client also reads the server's tickets here (TLS 1.3). */
static int exchange(struct pair *p)
{
    static const size_t up[] = {180, 160, 120, 180, 140, 120, 110};
    static const size_t down[] = {420, 170, 130, 330, 160, 130, 300};
    for (size_t i = 0; i < sizeof(up) / sizeof(up[0]); i++) {
        if (send_recv(p->cli, p->srv, up[i], 0) ||
            send_recv(p->srv, p->cli, down[i], 1))
            return -1;
    }
    return 0;
}

static const char *const phases[] = {"new", "handshake", "data"};
static long phase_new, phase_hs, phase_data;

static int cmp_site(const void *a, const void *b)
{
    const struct site *x = a, *y = b;
    return x->live < y->live ? 1 : x->live > y->live ? -1 : 0;
}

static const char *base(const char *f)
{
    const char *s = strstr(f, "ssl/");
    if (!s)
        s = strstr(f, "crypto/");
    if (!s)
        s = strstr(f, "providers/");
    return s ? s : f;
}

int main(int argc, char **argv)
{
    int n = 1000, tls12 = 0, json = 0;
    const char *suites = NULL; /* the client's TLS 1.3 offer */
    int keep = 0;              /* without SSL_MODE_RELEASE_BUFFERS */
    int tickets = -1;          /* SSL_CTX_set_num_tickets, -1: default */
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (strcmp(argv[i], "--sessions") == 0 && i + 1 < argc)
            n = atoi(argv[++i]);
        else if (strcmp(argv[i], "--tls12") == 0)
            tls12 = 1;
        else if (strcmp(argv[i], "--json") == 0)
            json = 1;
        else if (strcmp(argv[i], "--client-suites") == 0 && i + 1 < argc)
            suites = argv[++i];
        else if (strcmp(argv[i], "--keep-buffers") == 0)
            keep = 1;
        else if (strcmp(argv[i], "--tickets") == 0 && i + 1 < argc)
            tickets = atoi(argv[++i]);
        else
            break;
    }
    if (argc - i != 2 || n <= 0) {
        fprintf(stderr, "usage: tls-mem [--sessions N] [--tls12] [--json] "
                        "[--client-suites LIST] [--keep-buffers] "
                        "[--tickets N] CERT KEY\n");
        return 2;
    }
    if (!CRYPTO_set_mem_functions(count_malloc, count_realloc, count_free)) {
        fprintf(stderr, "tls-mem: OpenSSL allocated before main\n");
        return 1;
    }
    struct pl_tls_host *host;
    if (pl_tls_host_load("localhost", argv[i], argv[i + 1], &host) != 0)
        return 1;
    if (keep)
        SSL_CTX_clear_mode(host->ctx, SSL_MODE_RELEASE_BUFFERS);
    if (tickets >= 0)
        SSL_CTX_set_num_tickets(host->ctx, (size_t)tickets);
    SSL_CTX *cctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_verify(cctx, SSL_VERIFY_NONE, NULL);
    if (tls12)
        SSL_CTX_set_max_proto_version(cctx, TLS1_2_VERSION);
    if (suites && SSL_CTX_set_ciphersuites(cctx, suites) != 1)
        return 2;
    struct pair *ps = calloc((size_t)n, sizeof(*ps));
    if (!cctx || !ps)
        return 1;
    long t0 = live_total, b0 = live_blocks;
    for (int k = 0; k < n; k++) {
        struct pair *p = &ps[k];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, p->fd) < 0) {
            perror("socketpair");
            return 1;
        }
        charging = 1;
        p->srv = SSL_new(host->ctx);
        SSL_set_fd(p->srv, p->fd[0]);
        SSL_set_accept_state(p->srv);
        charging = 0;
        p->cli = SSL_new(cctx);
        SSL_set_fd(p->cli, p->fd[1]);
        SSL_set_connect_state(p->cli);
    }
    phase_new = live_total - t0;
    phase = 1;
    for (int k = 0; k < n; k++) {
        if (handshake(&ps[k])) {
            fprintf(stderr, "tls-mem: handshake %d failed\n", k);
            ERR_print_errors_fp(stderr);
            return 1;
        }
    }
    phase_hs = live_total - t0;
    phase = 2;
    for (int k = 0; k < n; k++) {
        if (exchange(&ps[k])) {
            fprintf(stderr, "tls-mem: exchange %d failed\n", k);
            ERR_print_errors_fp(stderr);
            return 1;
        }
    }
    phase_data = live_total - t0;
    double blocks = (double)(live_blocks - b0) / n;
    const char *version = SSL_get_version(ps[0].srv);
    const char *cipher = SSL_get_cipher_name(ps[0].srv);
    qsort(sites, MAX_SITES, sizeof(sites[0]), cmp_site);
    if (json) {
        printf("{\"sessions\":%d,\"version\":\"%s\",\"cipher\":\"%s\","
               "\"new\":%.0f,\"handshake\":%.0f,\"data\":%.0f,"
               "\"blocks\":%.1f,\"sites\":[",
               n, version, cipher, (double)phase_new / n, (double)phase_hs / n,
               (double)phase_data / n, blocks);
        for (int k = 0; k < 12 && sites[k].live > 0; k++)
            printf("%s{\"site\":\"%s:%d\",\"phase\":\"%s\",\"bytes\":%.0f,"
                   "\"blocks\":%.2f}",
                   k ? "," : "", base(sites[k].file), sites[k].line,
                   phases[sites[k].phase], (double)sites[k].live / n,
                   (double)sites[k].blocks / n);
        printf("]}\n");
    } else {
        printf("%d server connections, %s %s, OpenSSL %s\n", n, version, cipher,
               OpenSSL_version(OPENSSL_VERSION));
        printf("server-side OpenSSL bytes per connection:\n"
               "  after SSL_new      %8.0f\n  after handshake    %8.0f\n"
               "  after data (idle)  %8.0f in %.1f blocks\n",
               (double)phase_new / n, (double)phase_hs / n,
               (double)phase_data / n, blocks);
        printf("idle, by allocation site (bytes and blocks per "
               "connection):\n");
        for (int k = 0; k < MAX_SITES && sites[k].live > 0; k++) {
            if ((double)sites[k].live / n < 8)
                break;
            printf("  %8.0f %6.2f  %-9s %s:%d\n", (double)sites[k].live / n,
                   (double)sites[k].blocks / n, phases[sites[k].phase],
                   base(sites[k].file), sites[k].line);
        }
    }
    for (int k = 0; k < n; k++) {
        SSL_free(ps[k].srv);
        SSL_free(ps[k].cli);
        close(ps[k].fd[0]);
        close(ps[k].fd[1]);
    }
    free(ps);
    SSL_CTX_free(cctx);
    pl_tls_host_free(host);
    return 0;
}
