/*
 * share.c - the agent's media cache and the peer it serves it from
 * (doc/media.md "Peers", issue 17).
 *
 * The cache (--cache DIR) holds verified files named by their SHA-256 in
 * hex (src/media/fetch.h).  With --serve ADDR:PORT the agent runs a peer
 * server (src/media/peer.h) and becomes a source of those files for the
 * other devices:
 *
 *   - at start a thread hashes every file of the cache again (a file
 *     whose content no longer matches its name is left out and logged):
 *     a peer announces only what it verified (XEP-0447);
 *   - a verified file is announced to upload.<domain> in two steps: first
 *     with max-concurrent='0' (kept by the server but not listed), whose
 *     answer is the file's token key; the file is then added to the peer
 *     server with that key, and announced again with --max-peers, which
 *     lists it.  So no downloader is sent to the peer before it can check
 *     their tokens;
 *   - every new session announces everything again (the server forgets a
 *     peer when its session ends);
 *   - a file deleted from the cache is withdrawn within a second; at
 *     shutdown everything is withdrawn.
 *
 * Failure reports of downloads (fetch.c) wait here until the session is
 * up, then go out as <report/> (doc/media.md).
 */
#include <dirent.h>
#include <errno.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "clients/agent/agent.h"
#include "media/fetch.h"
#include "media/media.h"
#include "media/peer.h"

#define NS_MEDIA "urn:parley:media:0"
#define NS_HASHES "urn:xmpp:hashes:2"

enum {
    F_NEW,       /* verified, not announced in this session */
    F_KEYING,    /* first announce (busy) sent, waiting for the key */
    F_LISTING,   /* served; second announce sent */
    F_LISTED,    /* the server lists us */
    F_REFUSED,   /* the server does not have it, or banned us */
    F_WITHDRAWN, /* deleted from the cache */
};

struct pl_agent_file {
    unsigned char sha256[32];
    char hex[65];
    char *path;
    int state;
    char iq_id[40]; /* the announce in flight */
};

/* The start-up verification: files found, hashed on a thread. */
struct scan {
    pthread_t th;
    pthread_mutex_t lock;
    char *dir;
    char **paths; /* verified, not yet taken by the loop */
    unsigned char (*sums)[32];
    int n, cap;
    int done; /* the thread finished */
};

/* ------------------------------------------------------------ options */

int pl_agent_media_opt(struct pl_agent *a, int argc, char **argv, int *i)
{
    static struct pl_agent_media m;
    const char *o = argv[*i];
    if (!strcmp(o, "--prefer-peers")) {
        if (!a->media) {
            m.max_peers = 4;
            m.max_fetches = 2;
            a->media = &m;
        }
        m.prefer_peers = 1;
        return 1;
    }
    if (strcmp(o, "--cache") && strcmp(o, "--serve") &&
        strcmp(o, "--serve-url") && strcmp(o, "--max-peers") &&
        strcmp(o, "--max-upload-rate") && strcmp(o, "--max-fetches"))
        return 0;
    if (*i + 1 >= argc)
        return -1;
    const char *v = argv[++*i];
    if (!a->media) {
        m.max_peers = 4;
        m.max_fetches = 2;
        a->media = &m;
    }
    char *end;
    if (!strcmp(o, "--cache")) {
        m.cache_dir = v;
    } else if (!strcmp(o, "--serve")) {
        m.listen = v;
    } else if (!strcmp(o, "--serve-url")) {
        m.url_base = v;
    } else if (!strcmp(o, "--max-peers")) {
        long n = strtol(v, &end, 10);
        if (*end || n < 1 || n > 1000)
            return -1;
        m.max_peers = (int)n;
    } else if (!strcmp(o, "--max-fetches")) {
        long n = strtol(v, &end, 10);
        if (*end || n < 1 || n > 64)
            return -1;
        m.max_fetches = (int)n;
    } else {
        unsigned long long n = strtoull(v, &end, 10);
        if (*end || *v == '-')
            return -1;
        m.max_rate = n;
    }
    return 1;
}

/* ----------------------------------------------------------- hashing */

/* The SHA-256 of the file at path; 0 or -1. */
static int hash_file(const char *path, unsigned char *out)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    int ok = c && EVP_DigestInit_ex(c, EVP_sha256(), NULL);
    static __thread unsigned char buf[1 << 16];
    size_t n;
    while (ok && (n = fread(buf, 1, sizeof(buf), f)) > 0)
        ok = EVP_DigestUpdate(c, buf, n);
    ok = ok && !ferror(f) && EVP_DigestFinal_ex(c, out, NULL);
    EVP_MD_CTX_free(c);
    fclose(f);
    return ok ? 0 : -1;
}

static int hex_name(const char *s, unsigned char *out)
{
    if (strlen(s) != 64)
        return 0;
    for (int i = 0; i < 64; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return pl_media_parse_sha256(s, 64, out) == PL_MEDIA_OK;
}

static void *scan_main(void *arg)
{
    struct scan *sc = arg;
    DIR *d = opendir(sc->dir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        unsigned char want[32], got[32];
        if (!hex_name(e->d_name, want))
            continue;
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", sc->dir, e->d_name);
        struct stat st;
        if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
            continue;
        if (hash_file(path, got) != 0 || memcmp(got, want, 32) != 0) {
            pl_agent_log("cache: %s does not match its name; not shared", path);
            continue;
        }
        pthread_mutex_lock(&sc->lock);
        if (sc->n == sc->cap) {
            sc->cap = sc->cap ? sc->cap * 2 : 16;
            sc->paths = realloc(sc->paths, sizeof(*sc->paths) * sc->cap);
            sc->sums = realloc(sc->sums, sizeof(*sc->sums) * sc->cap);
        }
        sc->paths[sc->n] = strdup(path);
        memcpy(sc->sums[sc->n], got, 32);
        sc->n++;
        pthread_mutex_unlock(&sc->lock);
    }
    if (d)
        closedir(d);
    pthread_mutex_lock(&sc->lock);
    sc->done = 1;
    pthread_mutex_unlock(&sc->lock);
    return NULL;
}

/* ------------------------------------------------------------- setup */

int pl_agent_media_init(struct pl_agent *a)
{
    struct pl_agent_media *m = a->media;
    if (!m)
        return 0;
    if (!m->cache_dir) {
        fprintf(stderr, "parley-agent: --serve, --max-* need --cache DIR\n");
        return -1;
    }
    if (mkdir(m->cache_dir, 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "parley-agent: %s: %s\n", m->cache_dir,
                strerror(errno));
        return -1;
    }
    if (m->listen) {
        struct pl_peer_opts po = {.listen = m->listen,
                                  .max_conns = m->max_peers,
                                  .rate = m->max_rate};
        char err[256];
        m->peer = pl_peer_start(&po, err, sizeof(err));
        if (!m->peer) {
            fprintf(stderr, "parley-agent: --serve %s: %s\n", m->listen, err);
            return -1;
        }
        if (!m->url_base) {
            /* http://ADDR:PORT as given, with the port actually bound. */
            const char *colon = strrchr(m->listen, ':');
            int hl = colon ? (int)(colon - m->listen) : 0;
            if (hl == 0 || !strncmp(m->listen, "0.0.0.0", (size_t)hl) ||
                !strncmp(m->listen, "[::]", (size_t)hl)) {
                fprintf(stderr, "parley-agent: --serve on a wildcard "
                                "address needs --serve-url\n");
                return -1;
            }
            snprintf(m->url_buf, sizeof(m->url_buf), "http://%.*s:%d", hl,
                     m->listen, pl_peer_port(m->peer));
            m->url_base = m->url_buf;
        }
        pl_agent_log("serving the cache at %s/m/", m->url_base);
    }
    struct scan *sc = calloc(1, sizeof(*sc));
    pthread_mutex_init(&sc->lock, NULL);
    sc->dir = strdup(m->cache_dir);
    if (pthread_create(&sc->th, NULL, scan_main, sc) != 0) {
        free(sc->dir);
        free(sc);
        fprintf(stderr, "parley-agent: cannot start a thread\n");
        return -1;
    }
    m->scan = sc;
    return 0;
}

/* --------------------------------------------------------- announcing */

static struct pl_agent_file *find_file(struct pl_agent_media *m,
                                       const unsigned char *sha256)
{
    for (int i = 0; i < m->nfiles; i++)
        if (!memcmp(m->files[i].sha256, sha256, 32))
            return &m->files[i];
    return NULL;
}

static xmpp_stanza_t *hash_el(xmpp_ctx_t *ctx, const unsigned char *sha256)
{
    char b64[64];
    pl_media_b64(sha256, 32, b64, sizeof(b64));
    xmpp_stanza_t *h = xmpp_stanza_new(ctx);
    xmpp_stanza_set_name(h, "hash");
    xmpp_stanza_set_ns(h, NS_HASHES);
    xmpp_stanza_set_attribute(h, "algo", "sha-256");
    xmpp_stanza_t *t = xmpp_stanza_new(ctx);
    xmpp_stanza_set_text(t, b64);
    xmpp_stanza_add_child(h, t);
    xmpp_stanza_release(t);
    return h;
}

/* An IQ set to upload.<domain> carrying <name xmlns=media> with the
 * file's hash; returns the payload element (borrowed) for more. */
static xmpp_stanza_t *media_iq(struct pl_agent *a, const char *type,
                               const char *name, const unsigned char *sha256,
                               const char *id, xmpp_stanza_t **iq)
{
    char to[300];
    snprintf(to, sizeof(to), "upload.%s", a->domain);
    *iq = xmpp_iq_new(a->ctx, type, id);
    xmpp_stanza_set_to(*iq, to);
    xmpp_stanza_t *p = xmpp_stanza_new(a->ctx);
    xmpp_stanza_set_name(p, name);
    xmpp_stanza_set_ns(p, NS_MEDIA);
    xmpp_stanza_t *h = hash_el(a->ctx, sha256);
    xmpp_stanza_add_child(p, h);
    xmpp_stanza_release(h);
    xmpp_stanza_add_child(*iq, p);
    xmpp_stanza_release(p);
    return p;
}

static int on_announced(xmpp_conn_t *conn, xmpp_stanza_t *st, void *ud);

static void announce(struct pl_agent *a, struct pl_agent_file *f, int listed)
{
    struct pl_agent_media *m = a->media;
    static unsigned seq;
    snprintf(f->iq_id, sizeof(f->iq_id), "media-a%u", ++seq);
    xmpp_stanza_t *iq;
    xmpp_stanza_t *p = media_iq(a, "set", "announce", f->sha256, f->iq_id, &iq);
    char n[16];
    snprintf(n, sizeof(n), "%d", listed ? m->max_peers : 0);
    xmpp_stanza_set_attribute(p, "max-concurrent", n);
    xmpp_stanza_t *src = xmpp_stanza_new(a->ctx);
    xmpp_stanza_set_name(src, "sources");
    xmpp_stanza_set_ns(src, "urn:xmpp:sfs:0");
    xmpp_stanza_t *u = xmpp_stanza_new(a->ctx);
    xmpp_stanza_set_name(u, "url-data");
    xmpp_stanza_set_ns(u, "http://jabber.org/protocol/url-data");
    char url[512];
    snprintf(url, sizeof(url), "%s/m/%s", m->url_base, f->hex);
    xmpp_stanza_set_attribute(u, "target", url);
    xmpp_stanza_add_child(src, u);
    xmpp_stanza_release(u);
    xmpp_stanza_add_child(p, src);
    xmpp_stanza_release(src);
    xmpp_id_handler_add(a->conn, on_announced, f->iq_id, a);
    xmpp_send(a->conn, iq);
    xmpp_stanza_release(iq);
    f->state = listed ? F_LISTING : F_KEYING;
}

static int on_announced(xmpp_conn_t *conn, xmpp_stanza_t *st, void *ud)
{
    struct pl_agent *a = ud;
    struct pl_agent_media *m = a->media;
    const char *id = xmpp_stanza_get_id(st);
    struct pl_agent_file *f = NULL;
    for (int i = 0; id && i < m->nfiles; i++)
        if (!strcmp(m->files[i].iq_id, id))
            f = &m->files[i];
    if (!f || (f->state != F_KEYING && f->state != F_LISTING))
        return 0;
    f->iq_id[0] = '\0';
    const char *type = xmpp_stanza_get_type(st);
    if (type && !strcmp(type, "error")) {
        const char *cond = pl_cl_error_condition(st);
        pl_agent_log("announce of %s refused: %s", f->hex, cond);
        pl_agent_emit("share-refused", json_pack("{s:s, s:s}", "hash", f->hex,
                                                 "condition", cond));
        pl_peer_remove(m->peer, f->sha256);
        f->state = F_REFUSED;
        return 0;
    }
    if (f->state == F_LISTING) {
        f->state = F_LISTED;
        pl_agent_emit("shared",
                      json_pack("{s:s, s:s}", "hash", f->hex, "path", f->path));
        return 0;
    }
    xmpp_stanza_t *k = xmpp_stanza_get_child_by_name_and_ns(st, "key",
                                                            NS_MEDIA);
    char *text = k ? xmpp_stanza_get_text(k) : NULL;
    unsigned char key[64];
    int klen = -1;
    if (text) {
        EVP_ENCODE_CTX *ec = EVP_ENCODE_CTX_new();
        int n1 = 0, n2 = 0;
        EVP_DecodeInit(ec);
        if (strlen(text) <= 64 &&
            EVP_DecodeUpdate(ec, key, &n1, (unsigned char *)text,
                             (int)strlen(text)) >= 0 &&
            EVP_DecodeFinal(ec, key + n1, &n2) > 0)
            klen = n1 + n2;
        EVP_ENCODE_CTX_free(ec);
        xmpp_free(a->ctx, text);
    }
    if (klen != PL_MEDIA_KEY_LEN) {
        pl_agent_log("announce of %s: no usable key in the answer", f->hex);
        f->state = F_REFUSED;
        return 0;
    }
    if (pl_peer_add(m->peer, f->sha256, key, f->path) != 0) {
        f->state = F_REFUSED;
        return 0;
    }
    announce(a, f, 1);
    return 0;
}

static void withdraw(struct pl_agent *a, struct pl_agent_file *f)
{
    if (a->state != PL_AGENT_UP || !a->conn)
        return;
    xmpp_stanza_t *iq;
    char *id = xmpp_uuid_gen(a->ctx);
    media_iq(a, "set", "withdraw", f->sha256, id, &iq);
    xmpp_send(a->conn, iq);
    xmpp_stanza_release(iq);
    xmpp_free(a->ctx, id);
}

void pl_agent_media_online(struct pl_agent *a)
{
    struct pl_agent_media *m = a->media;
    if (!m)
        return;
    for (int i = 0; i < m->nfiles; i++)
        if (m->files[i].state != F_WITHDRAWN)
            m->files[i].state = F_NEW; /* the new session knows nothing */
}

void pl_agent_media_share(struct pl_agent *a, const unsigned char *sha256,
                          const char *path)
{
    struct pl_agent_media *m = a->media;
    if (!m)
        return;
    struct pl_agent_file *f = find_file(m, sha256);
    if (f) {
        if (f->state == F_WITHDRAWN || f->state == F_REFUSED)
            f->state = F_NEW;
        if (strcmp(f->path, path)) {
            free(f->path);
            f->path = strdup(path);
        }
        return;
    }
    m->files = realloc(m->files, sizeof(*m->files) * (size_t)(m->nfiles + 1));
    f = &m->files[m->nfiles++];
    memset(f, 0, sizeof(*f));
    memcpy(f->sha256, sha256, 32);
    pl_media_hex(sha256, 32, f->hex);
    f->path = strdup(path);
    f->state = F_NEW;
}

/* -------------------------------------------------------------- reports */

void pl_agent_media_report(struct pl_agent *a, const unsigned char *sha256,
                           long long piece, const char *source)
{
    struct pl_agent_media *m = a->media;
    struct pl_agent_report *r = calloc(1, sizeof(*r));
    memcpy(r->sha256, sha256, 32);
    r->piece = piece;
    r->source = source ? strdup(source) : NULL;
    struct pl_agent_report **tail = &m->reports;
    while (*tail)
        tail = &(*tail)->next;
    *tail = r;
}

static void send_reports(struct pl_agent *a)
{
    struct pl_agent_media *m = a->media;
    while (m->reports) {
        struct pl_agent_report *r = m->reports;
        xmpp_stanza_t *iq;
        char *id = xmpp_uuid_gen(a->ctx);
        xmpp_stanza_t *p = media_iq(a, "set", "report", r->sha256, id, &iq);
        if (r->piece >= 0) {
            char n[24];
            snprintf(n, sizeof(n), "%lld", r->piece);
            xmpp_stanza_set_attribute(p, "piece", n);
        }
        if (r->source)
            xmpp_stanza_set_attribute(p, "source", r->source);
        xmpp_send(a->conn, iq);
        xmpp_stanza_release(iq);
        xmpp_free(a->ctx, id);
        m->reports = r->next;
        free(r->source);
        free(r);
    }
}

/* ------------------------------------------------------------ the turn */

static void take_scanned(struct pl_agent *a)
{
    struct pl_agent_media *m = a->media;
    struct scan *sc = m->scan;
    if (!sc)
        return;
    pthread_mutex_lock(&sc->lock);
    int done = sc->done;
    for (int i = 0; i < sc->n; i++) {
        pl_agent_media_share(a, sc->sums[i], sc->paths[i]);
        free(sc->paths[i]);
    }
    sc->n = 0;
    pthread_mutex_unlock(&sc->lock);
    if (!done)
        return;
    pthread_join(sc->th, NULL);
    pl_agent_emit("cache", json_pack("{s:s, s:i}", "dir", m->cache_dir, "files",
                                     m->nfiles));
    free(sc->paths);
    free(sc->sums);
    free(sc->dir);
    pthread_mutex_destroy(&sc->lock);
    free(sc);
    m->scan = NULL;
}

void pl_agent_media_poll(struct pl_agent *a)
{
    struct pl_agent_media *m = a->media;
    if (!m)
        return;
    take_scanned(a);
    long long now = pl_cl_now_ms();
    if (now >= m->next_check) {
        m->next_check = now + 1000;
        for (int i = 0; i < m->nfiles; i++) {
            struct pl_agent_file *f = &m->files[i];
            struct stat st;
            if (f->state == F_WITHDRAWN || stat(f->path, &st) == 0)
                continue;
            pl_agent_log("%s was deleted; withdrawn", f->path);
            if (m->peer)
                pl_peer_remove(m->peer, f->sha256);
            if (f->state == F_LISTED || f->state == F_LISTING)
                withdraw(a, f);
            f->state = F_WITHDRAWN;
            pl_agent_emit("withdrawn", json_pack("{s:s}", "hash", f->hex));
        }
    }
    if (a->state != PL_AGENT_UP || !a->conn)
        return;
    send_reports(a);
    if (!m->peer)
        return;
    for (int i = 0; i < m->nfiles; i++)
        if (m->files[i].state == F_NEW)
            announce(a, &m->files[i], 0);
}

void pl_agent_media_stop(struct pl_agent *a)
{
    struct pl_agent_media *m = a->media;
    if (!m)
        return;
    if (m->scan) {
        struct scan *sc = m->scan;
        pthread_join(sc->th, NULL);
        for (int i = 0; i < sc->n; i++)
            free(sc->paths[i]);
        free(sc->paths);
        free(sc->sums);
        free(sc->dir);
        pthread_mutex_destroy(&sc->lock);
        free(sc);
        m->scan = NULL;
    }
    for (int i = 0; i < m->nfiles; i++) {
        struct pl_agent_file *f = &m->files[i];
        if (f->state == F_LISTED || f->state == F_LISTING)
            withdraw(a, f);
        free(f->path);
    }
    free(m->files);
    m->files = NULL;
    m->nfiles = 0;
    while (m->reports) {
        struct pl_agent_report *r = m->reports;
        m->reports = r->next;
        free(r->source);
        free(r);
    }
    if (m->peer)
        pl_peer_stop(m->peer);
    m->peer = NULL;
}
