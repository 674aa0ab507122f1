/*
 * share.c - `parley share`: serve files to other clients as a peer
 * (doc/media.md "Peers", issue 17).
 *
 *   parley share [--listen ADDR:PORT] [--url BASE] [--max-peers N]
 *                [--max-rate BYTES] FILE...
 *
 * For each FILE: its SHA-256 over the whole file (which verifies every
 * piece the server hashed), then the server's word on it (a
 * urn:parley:media:0 <query> to upload.<domain>: it must be there with
 * the same size).  Only then is it served and announced, in this order
 * (XEP-0447: a source is attached only once verified): an announce with
 * max-concurrent='0' (kept by the server but not listed) gets the file's
 * token key, the peer server (src/media/peer.c) takes the file with that
 * key, and a second announce with max-concurrent N lists it at
 * BASE/m/<hex>.
 *
 * Then it stays online serving until SIGINT or SIGTERM, checks every
 * second that each file is still there (stat: gone, replaced or resized
 * means withdrawn), and prints stats every few seconds; at the end it
 * withdraws what is left and stops the server.  With --json the events
 * are JSON lines: {"shared":...}, {"stats":...}, {"withdrawn":...},
 * {"stopped":...}.
 */
#include <arpa/inet.h>
#include <netdb.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "clients/cli/cli.h"
#include "media/peer.h"

#define NS_MEDIA "urn:parley:media:0"
#define NS_HASHES "urn:xmpp:hashes:2"
#define NS_SFS "urn:xmpp:sfs:0"
#define NS_URL_DATA "http://jabber.org/protocol/url-data"
#define NS_FILE_META "urn:xmpp:file:metadata:0"
#define STATS_MS 2000

struct shared {
    const char *path;
    unsigned char sha[32];
    char hex[65], b64[48];
    uint64_t size;
    dev_t dev;
    ino_t ino;
    int live; /* announced and served */
};

/* SHA-256 of the file at path; its size and identity into s. */
static int hash_file(struct shared *s, char *err, size_t errlen)
{
    FILE *f = fopen(s->path, "rb");
    struct stat sb;
    if (!f || fstat(fileno(f), &sb) < 0 || !S_ISREG(sb.st_mode)) {
        snprintf(err, errlen, "%s: not a readable file", s->path);
        if (f)
            fclose(f);
        return -1;
    }
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
    static unsigned char buf[1 << 20];
    size_t n;
    uint64_t total = 0;
    while ((n = fread(buf, 1, sizeof(buf), f)) > 0) {
        EVP_DigestUpdate(ctx, buf, n);
        total += n;
    }
    int bad = ferror(f);
    fclose(f);
    EVP_DigestFinal_ex(ctx, s->sha, NULL);
    EVP_MD_CTX_free(ctx);
    if (bad || total != (uint64_t)sb.st_size) {
        snprintf(err, errlen, "%s: read error or changed while hashed",
                 s->path);
        return -1;
    }
    s->size = total;
    s->dev = sb.st_dev;
    s->ino = sb.st_ino;
    pl_media_hex(s->sha, 32, s->hex);
    pl_media_b64(s->sha, 32, s->b64, sizeof(s->b64));
    return 0;
}

static xmpp_stanza_t *media_iq(struct pl_cli *c, const char *type,
                               const char *to, const char *name,
                               const struct shared *s, xmpp_stanza_t **el)
{
    xmpp_stanza_t *iq = xmpp_iq_new(c->ctx, type, NULL);
    xmpp_stanza_set_to(iq, to);
    xmpp_stanza_t *q = pl_cli_elem(c->ctx, name, NS_MEDIA);
    xmpp_stanza_t *h = pl_cli_elem(c->ctx, "hash", NS_HASHES);
    xmpp_stanza_set_attribute(h, "algo", "sha-256");
    xmpp_stanza_t *t = xmpp_stanza_new(c->ctx);
    xmpp_stanza_set_text(t, s->b64);
    pl_cli_adopt(h, t);
    pl_cli_adopt(q, h);
    xmpp_stanza_add_child(iq, q);
    if (el)
        *el = q;
    xmpp_stanza_release(q);
    return iq;
}

struct wait {
    xmpp_stanza_t *reply;
    int done;
};

static int on_reply(xmpp_conn_t *conn, xmpp_stanza_t *st, void *ud)
{
    struct wait *w = ud;
    w->reply = xmpp_stanza_copy(st);
    w->done = 1;
    return 0;
}

/* Like pl_cli_iq, but also after a signal (the withdrawals at the end)
 * and bounded by ms. */
static int iq_now(struct pl_cli *c, xmpp_stanza_t *iq, long ms,
                  xmpp_stanza_t **reply)
{
    static unsigned seq;
    char id[32];
    snprintf(id, sizeof(id), "share%u", ++seq);
    xmpp_stanza_set_id(iq, id);
    struct wait w = {NULL, 0};
    xmpp_id_handler_add(c->conn, on_reply, id, &w);
    xmpp_send(c->conn, iq);
    long long end = pl_cl_now_ms() + ms;
    while (!w.done && c->connected && pl_cl_now_ms() < end)
        xmpp_run_once(c->ctx, 50);
    if (!w.done) {
        xmpp_id_handler_delete(c->conn, on_reply, id);
        return c->connected ? PL_EXIT_TIMEOUT : PL_EXIT_CONNECT;
    }
    *reply = w.reply;
    const char *type = xmpp_stanza_get_type(w.reply);
    return type && !strcmp(type, "result") ? PL_EXIT_OK : PL_EXIT_STANZA;
}

/* Asks the server about s: PL_EXIT_OK if it has it with that size. */
static int check_server(struct pl_cli *c, const char *service, struct shared *s)
{
    xmpp_stanza_t *r = NULL;
    xmpp_stanza_t *iq = media_iq(c, "get", service, "query", s, NULL);
    int rc = pl_cli_iq(c, iq, &r);
    xmpp_stanza_release(iq);
    if (rc == PL_EXIT_STANZA) {
        char what[600];
        snprintf(what, sizeof(what), "%s: the server", s->path);
        pl_cli_stanza_error(c, what, r);
    }
    if (rc != PL_EXIT_OK) {
        if (r)
            xmpp_stanza_release(r);
        return rc;
    }
    xmpp_stanza_t *q = xmpp_stanza_get_child_by_name_and_ns(r, "query",
                                                            NS_MEDIA);
    xmpp_stanza_t *fs = q ? xmpp_stanza_get_child_by_name_and_ns(q,
                                                                 "file-sharing",
                                                                 NS_SFS)
                          : NULL;
    xmpp_stanza_t *f = fs ? xmpp_stanza_get_child_by_name_and_ns(fs, "file",
                                                                 NS_FILE_META)
                          : NULL;
    xmpp_stanza_t *sz = f ? xmpp_stanza_get_child_by_name(f, "size") : NULL;
    char *text = sz ? xmpp_stanza_get_text(sz) : NULL;
    unsigned long long size = text ? strtoull(text, NULL, 10) : 0;
    int ok = text && size == s->size;
    if (text)
        xmpp_free(c->ctx, text);
    xmpp_stanza_release(r);
    if (!ok) {
        fprintf(stderr,
                "parley: %s: the server's file of that hash has "
                "another size\n",
                s->path);
        if (c->json)
            pl_cli_out(c,
                       json_pack("{s:s, s:s}", "error", "size-mismatch", "file",
                                 s->path),
                       NULL);
        return PL_EXIT_FAILURE;
    }
    return PL_EXIT_OK;
}

/* Announces s at url, n at once; with key non-NULL takes the file key
 * from the answer. */
static int announce(struct pl_cli *c, const char *service, struct shared *s,
                    const char *url, int n, unsigned char *key)
{
    xmpp_stanza_t *a;
    xmpp_stanza_t *iq = media_iq(c, "set", service, "announce", s, &a);
    char num[16];
    snprintf(num, sizeof(num), "%d", n);
    xmpp_stanza_set_attribute(a, "max-concurrent", num);
    xmpp_stanza_t *srcs = pl_cli_elem(c->ctx, "sources", NS_SFS);
    xmpp_stanza_t *ud = pl_cli_elem(c->ctx, "url-data", NS_URL_DATA);
    xmpp_stanza_set_attribute(ud, "target", url);
    pl_cli_adopt(srcs, ud);
    pl_cli_adopt(a, srcs);
    xmpp_stanza_t *r = NULL;
    int rc = pl_cli_iq(c, iq, &r);
    xmpp_stanza_release(iq);
    if (rc == PL_EXIT_STANZA) {
        char what[600];
        snprintf(what, sizeof(what), "%s: announcing", s->path);
        pl_cli_stanza_error(c, what, r);
    }
    if (rc == PL_EXIT_OK && key) {
        xmpp_stanza_t *k = xmpp_stanza_get_child_by_name_and_ns(r, "key",
                                                                NS_MEDIA);
        char *text = k ? xmpp_stanza_get_text(k) : NULL;
        unsigned char raw[48];
        if (!text || strlen(text) != 44 ||
            EVP_DecodeBlock(raw, (const unsigned char *)text, 44) != 33) {
            fprintf(stderr, "parley: %s: no file key in the answer\n", s->path);
            rc = PL_EXIT_FAILURE;
        } else {
            memcpy(key, raw, 32);
        }
        if (text)
            xmpp_free(c->ctx, text);
    }
    if (r)
        xmpp_stanza_release(r);
    return rc;
}

static json_t *stats_json(struct pl_peer *p)
{
    struct pl_peer_stats st;
    pl_peer_stats(p, &st);
    return json_pack("{s:I, s:I, s:I, s:I, s:i}", "bytes", (json_int_t)st.bytes,
                     "requests", (json_int_t)st.requests, "refused",
                     (json_int_t)st.refused, "busy", (json_int_t)st.busy,
                     "conns", st.conns);
}

static void print_stats(struct pl_cli *c, struct pl_peer *p, const char *key)
{
    struct pl_peer_stats st;
    pl_peer_stats(p, &st);
    char text[256];
    snprintf(text, sizeof(text),
             "%s: %llu bytes served in %llu requests, %llu refused, "
             "%llu busy, %d connections",
             key, (unsigned long long)st.bytes, (unsigned long long)st.requests,
             (unsigned long long)st.refused, (unsigned long long)st.busy,
             st.conns);
    pl_cli_out(c, json_pack("{s:o}", key, stats_json(p)), text);
}

static void withdraw(struct pl_cli *c, const char *service, struct pl_peer *p,
                     struct shared *s, const char *why)
{
    pl_peer_remove(p, s->sha);
    s->live = 0;
    xmpp_stanza_t *r = NULL;
    xmpp_stanza_t *iq = media_iq(c, "set", service, "withdraw", s, NULL);
    int rc = c->connected ? iq_now(c, iq, 5000, &r) : PL_EXIT_CONNECT;
    xmpp_stanza_release(iq);
    if (r)
        xmpp_stanza_release(r);
    char text[700];
    snprintf(text, sizeof(text), "withdrew %s (%s)%s", s->path, why,
             rc == PL_EXIT_OK ? "" : ": the server did not confirm");
    pl_cli_out(c,
               json_pack("{s:{s:s, s:s, s:s, s:b}}", "withdrawn", "file",
                         s->path, "hash", s->hex, "reason", why, "confirmed",
                         rc == PL_EXIT_OK),
               text);
}

/* Whether s is still the file that was hashed. */
static int still_there(const struct shared *s)
{
    struct stat sb;
    return stat(s->path, &sb) == 0 && sb.st_dev == s->dev &&
           sb.st_ino == s->ino && (uint64_t)sb.st_size == s->size;
}

/* The address others reach this host at when the peer listens on a
 * wildcard one: the local end of a route towards the XMPP server. */
static int local_addr(struct pl_cli *c, char *out, size_t cap)
{
    const char *host = c->o.server;
    char dom[512];
    if (!host) {
        const char *at = strchr(c->jid, '@');
        snprintf(dom, sizeof(dom), "%.*s",
                 (int)strcspn(at ? at + 1 : c->jid, "/"), at ? at + 1 : c->jid);
        host = dom;
    }
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_socktype = SOCK_DGRAM;
    if (getaddrinfo(host, "5222", &hints, &ai) != 0)
        return -1;
    int fd = socket(ai->ai_family, SOCK_DGRAM, 0);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    int rc = fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) == 0 &&
                     getsockname(fd, (struct sockaddr *)&ss, &sl) == 0
                 ? 0
                 : -1;
    if (fd >= 0)
        close(fd);
    freeaddrinfo(ai);
    if (rc < 0)
        return -1;
    char a[INET6_ADDRSTRLEN];
    if (ss.ss_family == AF_INET6) {
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, a,
                  sizeof(a));
        snprintf(out, cap, "[%s]", a);
    } else {
        inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, a,
                  sizeof(a));
        snprintf(out, cap, "%s", a);
    }
    return 0;
}

/* The URL base: --url, or http://<listen address>:<port>. */
static int make_base(struct pl_cli *c, const char *listen, int port, char *out,
                     size_t cap)
{
    char host[300];
    if (listen[0] == '[') {
        snprintf(host, sizeof(host), "%.*s",
                 (int)(strchr(listen, ']') - listen + 1), listen);
    } else {
        snprintf(host, sizeof(host), "%.*s",
                 (int)(strrchr(listen, ':') - listen), listen);
    }
    if (!*host || !strcmp(host, "0.0.0.0") || !strcmp(host, "[::]")) {
        if (local_addr(c, host, sizeof(host)) < 0)
            return -1;
    }
    snprintf(out, cap, "http://%s:%d", host, port);
    return 0;
}

int pl_cli_cmd_share(struct pl_cli *c, int argc, char **argv)
{
    const char *listen = "0.0.0.0:0", *base_opt = NULL;
    long max_peers = 4;
    unsigned long long rate = 0;
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        char *end = NULL;
        if (i + 1 >= argc)
            return PL_EXIT_USAGE;
        if (!strcmp(argv[i], "--listen")) {
            listen = argv[++i];
        } else if (!strcmp(argv[i], "--url")) {
            base_opt = argv[++i];
        } else if (!strcmp(argv[i], "--max-peers")) {
            max_peers = strtol(argv[++i], &end, 10);
            if (*end || max_peers < 1 || max_peers > 10000)
                return PL_EXIT_USAGE;
        } else if (!strcmp(argv[i], "--max-rate")) {
            rate = strtoull(argv[++i], &end, 10);
            if (*end || argv[i][0] == '-')
                return PL_EXIT_USAGE;
        } else {
            return PL_EXIT_USAGE;
        }
    }
    if (i >= argc || (!strchr(listen, ':')) ||
        (listen[0] == '[' && !strchr(listen, ']')))
        return PL_EXIT_USAGE;
    int nfiles = argc - i;
    struct shared *files = calloc((size_t)nfiles, sizeof(*files));
    if (!files)
        return PL_EXIT_FAILURE;
    char service[600];
    const char *at = strchr(c->jid, '@');
    snprintf(service, sizeof(service), "upload.%.*s",
             (int)strcspn(at ? at + 1 : c->jid, "/"), at ? at + 1 : c->jid);

    /* 1. verify: the whole file's hash, and the server's word on it */
    char err[600];
    int rc = PL_EXIT_OK;
    for (int k = 0; k < nfiles && rc == PL_EXIT_OK; k++) {
        files[k].path = argv[i + k];
        if (hash_file(&files[k], err, sizeof(err)) < 0) {
            fprintf(stderr, "parley: %s\n", err);
            if (c->json)
                pl_cli_out(c, json_pack("{s:s}", "error", err), NULL);
            rc = PL_EXIT_FAILURE;
            break;
        }
        rc = check_server(c, service, &files[k]);
    }
    if (rc != PL_EXIT_OK) {
        free(files);
        return rc;
    }

    /* 2. the peer server */
    struct pl_peer_opts po = {listen, (int)max_peers, rate, 15000};
    struct pl_peer *p = pl_peer_start(&po, err, sizeof(err));
    if (!p) {
        fprintf(stderr, "parley: %s\n", err);
        if (c->json)
            pl_cli_out(c, json_pack("{s:s}", "error", err), NULL);
        free(files);
        return PL_EXIT_FAILURE;
    }
    char base[600];
    if (base_opt) {
        snprintf(base, sizeof(base), "%s", base_opt);
        size_t bl = strlen(base);
        while (bl && base[bl - 1] == '/')
            base[--bl] = '\0';
    } else if (make_base(c, listen, pl_peer_port(p), base, sizeof(base)) < 0) {
        fprintf(stderr,
                "parley: no address to announce for %s: give "
                "--url\n",
                listen);
        pl_peer_stop(p);
        free(files);
        return PL_EXIT_USAGE;
    }

    /* 3. serve and announce each: busy first (for the key), then open */
    int live = 0;
    for (int k = 0; k < nfiles && rc == PL_EXIT_OK; k++) {
        struct shared *s = &files[k];
        char url[800];
        snprintf(url, sizeof(url), "%s/m/%s", base, s->hex);
        unsigned char key[32];
        rc = announce(c, service, s, url, 0, key);
        if (rc == PL_EXIT_OK && pl_peer_add(p, s->sha, key, s->path) < 0)
            rc = PL_EXIT_FAILURE;
        if (rc == PL_EXIT_OK)
            rc = announce(c, service, s, url, (int)max_peers, NULL);
        if (rc != PL_EXIT_OK)
            break;
        s->live = 1;
        live++;
        char text[1000];
        snprintf(text, sizeof(text), "sharing %s (%llu bytes) at %s", s->path,
                 (unsigned long long)s->size, url);
        pl_cli_out(c,
                   json_pack("{s:{s:s, s:s, s:I, s:s, s:i}}", "shared", "file",
                             s->path, "hash", s->hex, "size",
                             (json_int_t)s->size, "url", url, "port",
                             pl_peer_port(p)),
                   text);
    }

    /* 4. online until a signal, the connection's end or no file left */
    long long next_check = pl_cl_now_ms() + 1000;
    long long next_stats = pl_cl_now_ms() + STATS_MS;
    struct pl_peer_stats shown;
    memset(&shown, 0, sizeof(shown));
    while (rc == PL_EXIT_OK && live > 0 && c->connected &&
           !pl_cli_interrupted()) {
        xmpp_run_once(c->ctx, 50);
        long long now = pl_cl_now_ms();
        if (now >= next_check) {
            next_check = now + 1000;
            for (int k = 0; k < nfiles; k++)
                if (files[k].live && !still_there(&files[k])) {
                    withdraw(c, service, p, &files[k], "deleted");
                    live--;
                }
        }
        if (now >= next_stats) {
            /* JSON lines always (a heartbeat for scripts), text only
             * when something changed */
            struct pl_peer_stats st;
            pl_peer_stats(p, &st);
            next_stats = now + STATS_MS;
            if (c->json || memcmp(&st, &shown, sizeof(st)) != 0)
                print_stats(c, p, "stats");
            shown = st;
        }
    }
    if (rc == PL_EXIT_OK && !c->connected && !pl_cli_interrupted()) {
        fprintf(stderr, "parley: connection lost\n");
        rc = PL_EXIT_CONNECT;
    }

    /* 5. withdraw what is left, stop serving */
    for (int k = 0; k < nfiles; k++)
        if (files[k].live)
            withdraw(c, service, p, &files[k],
                     pl_cli_interrupted() ? "stopped" : "error");
    print_stats(c, p, "stopped");
    pl_peer_stop(p);
    free(files);
    return rc;
}
