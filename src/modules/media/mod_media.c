/*
 * mod_media.c - the file information service for distributed media
 * (doc/media.md): which peers can serve an uploaded file, tokens for
 * downloading from them, and reports of pieces that failed verification.
 * It answers on the upload service (upload.<host>, mod_upload.c), whose
 * files it describes; the HTTP side (src/http/upload.c) asks it for the
 * peers to put in a file's Metalink and Link fields (media_int.h).
 *
 * XMPP, namespace urn:parley:media:0 (PL_NS_MEDIA), IQs to upload.<host>
 * from local users of the host; a file is named by its SHA-256 as an
 * XEP-0300 <hash xmlns='urn:xmpp:hashes:2' algo='sha-256'/>:
 *
 *   get <query><hash/></query>: the file's sources as an XEP-0447
 *       <file-sharing xmlns='urn:xmpp:sfs:0'> (XEP-0446 metadata with
 *       the hash, <sources> of XEP-0103 <url-data target=.../>: the
 *       server's URL first, then the peers' with a token), inside
 *       <query metalink='<file-url>.meta4'>.
 *   set <announce max-concurrent='N'><hash/><sources xmlns=
 *       'urn:xmpp:sfs:0'><url-data target='http://peer/...'/></sources>
 *       </announce>: the sending session serves the file at that URL
 *       (XEP-0447 "attaching a source", made to the server); the answer
 *       <key> is the file's token key (base64), with which the peer
 *       checks its downloaders' tokens offline (src/media/token.c).
 *       Again from the same session: an update (URL, max-concurrent;
 *       0 means busy, not listed).
 *   set <withdraw><hash/></withdraw>: the session no longer serves it.
 *   set <report piece='I' source='URL'><hash/></report>: piece I (none:
 *       the whole file) from URL failed verification.
 *   set <fetched server-bytes='N' peer-bytes='M'><hash/></fetched>: the
 *       sender holds a verified copy, of which N bytes came from the
 *       server and M from peers.  Counted per file: the accounts holding
 *       it (those that said so, and live peers), the bytes of each kind.
 *
 * A peer is listed only while its session is bound: "session/closed"
 * withdraws everything it announced.  A report naming a peer's URL
 * demotes that peer (listed after the others); media.ban_reports
 * reports ban it from that file for media.ban_time seconds (its bare
 * JID: another resource cannot announce it again).  Reports are logged,
 * counted (media_reports, media_peer_bans) and kept per file (the last
 * media.max_reports) for "admin/media" (parleyctl media status FILE).
 *
 * Seeds: a download that prefers peers names a random seat in its
 * Metalink GETs (<file-url>.meta4?seat=HEX, src/http/upload.c).  While
 * no peer serves the file, media.seed_copies of them take it from the
 * server and the others are told to wait (<wait/> in the Metalink) for
 * those to become peers: a push to a thousand devices costs the server
 * seed_copies copies.  A seat not renewed for media.seat_timeout ms is
 * free again.
 *
 * State is in memory, per host, by content hash: it goes with the last
 * uploaded copy of the file ("upload/expired").
 *
 * Extending: a new request is a branch of on_iq; a new per-file counter
 * a field of struct media_file and a key of file_json.
 */
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "media_int.h"

#define NS_HASHES "urn:xmpp:hashes:2"
#define NS_SFS "urn:xmpp:sfs:0"
#define NS_FILE_META "urn:xmpp:file:metadata:0"
#define NS_URL_DATA "http://jabber.org/protocol/url-data"
#define MAX_OVER 16 /* a <fetched/> count is at most this many files */

/* A session serving a file. */
struct media_peer {
    struct media_peer *next;  /* in the file's list */
    struct media_peer *snext; /* in the session's list */
    struct media_file *mf;    /* the file */
    uint64_t session;         /* the session's id */
    char *jid;                /* its full JID */
    char *bare;               /* its account */
    char *url;                /* where it serves the file */
    long max_concurrent;      /* downloads at once it takes; 0: busy */
    int64_t since;            /* when it announced */
    unsigned failures;        /* reports naming it */
};

/* An account that may not serve a file until a time. */
struct media_ban {
    struct media_ban *next; /* the file's next ban */
    char *bare;             /* the account */
    char *url;              /* the URL it served bad pieces at */
    int64_t until;          /* end of the ban */
};

/* A verification failure reported. */
struct media_report {
    int64_t at;         /* when */
    char *reporter;     /* who (full JID) */
    long piece;         /* piece index, -1: the whole file */
    char *source;       /* the URL that served it */
    const char *result; /* what came of it: "banned", "demoted", ... */
};

/* A downloader preferring peers that was told to take the file from the
 * server (a seed), by the seat it names in its Metalink GETs. */
struct media_seat {
    uint64_t id;     /* the client's random seat number */
    int64_t seen_ms; /* its last Metalink GET (monotonic ms) */
};

/* What the service knows of a file, by its SHA-256. */
struct media_file {
    char sha256[48];              /* base64, the key */
    unsigned char raw[32];        /* the same, bytes */
    struct media_peer *peers;     /* live peers */
    unsigned npeers;              /* their count */
    struct media_ban *bans;       /* banned accounts */
    uint64_t server_bytes;        /* bytes the server sent of it */
    unsigned long server_gets;    /* GETs answered with bytes */
    unsigned long metalinks;      /* Metalinks served */
    unsigned long queries;        /* XMPP source queries */
    unsigned long reports_total;  /* reports received */
    unsigned long fetched;        /* <fetched/> reports received */
    uint64_t client_server_bytes; /* their server-bytes, summed */
    uint64_t client_peer_bytes;   /* their peer-bytes, summed */
    struct pl_map holders;        /* bare JIDs that said fetched (-> mf) */
    struct media_report *reports; /* the last max_reports, a ring */
    size_t nreports, next_report; /* filled, next slot */
    unsigned rotate;              /* where the next list starts */
    struct media_seat *seats;     /* seed_copies of them, when used */
    unsigned nseats;              /* taken */
    unsigned long waits;          /* Metalinks that said wait */
};

struct pl_media {
    /* options */
    long token_lifetime; /* seconds a peer token is valid */
    long max_sources;    /* peers listed per answer */
    long max_peers;      /* peers tracked per file */
    long max_announces;  /* files one session may announce */
    long ban_reports;    /* reports that ban a peer */
    long ban_time;       /* seconds a ban lasts */
    long max_reports;    /* reports kept per file */
    long seed_copies;    /* downloads from the server while none is a peer */
    long seat_timeout;   /* ms a seat lives without a Metalink GET */
    /* runtime */
    struct pl_host *host;   /* owning host */
    unsigned char key[32];  /* the media key (token.c) */
    struct pl_map files;    /* base64 SHA-256 -> struct media_file * */
    struct pl_map sessions; /* session id -> first struct media_peer */
};

struct pl_media *pl__media_of(struct pl_host *h)
{
    return h ? pl_host_ctx(h, media) : NULL;
}

/* ---- files and peers ---- */

static struct media_file *file_get(struct pl_media *m, const char *sha256,
                                   int create)
{
    struct media_file *mf = pl_map_get(&m->files, sha256);
    if (mf || !create)
        return mf;
    mf = pl_calloc(1, sizeof(*mf));
    snprintf(mf->sha256, sizeof(mf->sha256), "%s", sha256);
    if (pl_media_parse_sha256(sha256, strlen(sha256), mf->raw) != PL_MEDIA_OK)
        memset(mf->raw, 0, sizeof(mf->raw));
    pl_map_put(&m->files, mf->sha256, mf);
    return mf;
}

static void session_key(uint64_t id, char *out, size_t len)
{
    snprintf(out, len, "%llu", (unsigned long long)id);
}

static void peer_free(struct media_peer *p)
{
    pl_free(p->jid);
    pl_free(p->bare);
    pl_free(p->url);
    pl_free(p);
    pl_stat_dec(media_peers);
    pl_stat_inc(media_withdrawals);
}

/* Takes p out of its file's list. */
static void unlink_file(struct media_peer *p)
{
    for (struct media_peer **pp = &p->mf->peers; *pp; pp = &(*pp)->next) {
        if (*pp == p) {
            *pp = p->next;
            p->mf->npeers--;
            return;
        }
    }
}

/* Takes p out of its session's list. */
static void unlink_session(struct pl_media *m, struct media_peer *p)
{
    char key[24];
    session_key(p->session, key, sizeof(key));
    struct media_peer *first = pl_map_get(&m->sessions, key);
    if (first == p) {
        if (p->snext)
            pl_map_put(&m->sessions, key, p->snext);
        else
            pl_map_del(&m->sessions, key);
        return;
    }
    for (struct media_peer *q = first; q; q = q->snext) {
        if (q->snext == p) {
            q->snext = p->snext;
            return;
        }
    }
}

static void peer_remove(struct pl_media *m, struct media_peer *p)
{
    unlink_file(p);
    unlink_session(m, p);
    peer_free(p);
}

static void file_free(struct pl_media *m, struct media_file *mf)
{
    pl_free(mf->seats);
    while (mf->peers)
        peer_remove(m, mf->peers);
    while (mf->bans) {
        struct media_ban *b = mf->bans;
        mf->bans = b->next;
        pl_free(b->bare);
        pl_free(b->url);
        pl_free(b);
    }
    for (size_t i = 0; i < mf->nreports; i++) {
        pl_free(mf->reports[i].reporter);
        pl_free(mf->reports[i].source);
    }
    pl_free(mf->reports);
    pl_map_clear(&mf->holders);
    pl_free(mf);
}

/* The ban of bare on mf, if one is running (expired ones go). */
static struct media_ban *banned(struct media_file *mf, const char *bare,
                                int64_t now)
{
    for (struct media_ban **bp = &mf->bans; *bp;) {
        struct media_ban *b = *bp;
        if (b->until <= now) {
            *bp = b->next;
            pl_free(b->bare);
            pl_free(b->url);
            pl_free(b);
            continue;
        }
        if (strcmp(b->bare, bare) == 0)
            return b;
        bp = &b->next;
    }
    return NULL;
}

/* ---- sources ---- */

/* url + "?token=" (or "&token=") + a fresh token for mf. */
static char *with_token(struct pl_media *m, struct media_file *mf,
                        const char *url, int64_t now)
{
    unsigned char fk[PL_MEDIA_KEY_LEN];
    char tok[PL_MEDIA_TOKEN_LEN + 1];
    pl_media_file_key(m->key, mf->raw, fk);
    pl_media_token_make(fk, mf->raw, now + m->token_lifetime, tok, sizeof(tok));
    struct pl_buf b = {0};
    pl_buf_printf(&b, "%s%ctoken=%s", url, strchr(url, '?') ? '&' : '?', tok);
    char *s = pl_strdup(pl_buf_cstr(&b));
    pl_buf_reset(&b);
    return s;
}

void pl__media_sources(struct pl_media *m, const struct upload_file *f,
                       struct media_sources *out)
{
    memset(out, 0, sizeof(*out));
    struct media_file *mf = f->sha256[0] ? file_get(m, f->sha256, 0) : NULL;
    if (!mf || !mf->npeers)
        return;
    /* Those with room, from a start that moves on at every answer. */
    struct media_peer **c = pl_calloc(mf->npeers, sizeof(*c));
    size_t n = 0, k = 0;
    for (struct media_peer *p = mf->peers; p; p = p->next)
        if (p->max_concurrent > 0)
            c[n++] = p;
    struct media_peer **order = pl_calloc(n ? n : 1, sizeof(*order));
    size_t start = n ? mf->rotate++ % n : 0;
    for (size_t i = 0; i < n; i++)
        order[i] = c[(start + i) % n];
    /* The least reported first (stable: the rotation holds among
     * equals). */
    for (size_t i = 1; i < n; i++) {
        struct media_peer *p = order[i];
        size_t j = i;
        while (j > 0 && order[j - 1]->failures > p->failures) {
            order[j] = order[j - 1];
            j--;
        }
        order[j] = p;
    }
    if (n > (size_t)m->max_sources)
        n = (size_t)m->max_sources;
    out->v = pl_calloc(n ? n : 1, sizeof(*out->v));
    int64_t now = (int64_t)time(NULL);
    for (k = 0; k < n; k++) {
        unsigned f2 = order[k]->failures;
        out->v[k].url = with_token(m, mf, order[k]->url, now);
        out->v[k].priority = 2 + (int)(f2 > 1000 ? 1000 : f2);
    }
    out->n = n;
    pl_free(order);
    pl_free(c);
}

void pl__media_sources_free(struct media_sources *s)
{
    for (size_t i = 0; i < s->n; i++)
        pl_free((char *)s->v[i].url);
    pl_free(s->v);
    memset(s, 0, sizeof(*s));
}

void pl__media_counted(struct pl_media *m, const struct upload_file *f,
                       uint64_t bytes, int metalink)
{
    if (!f->sha256[0])
        return;
    struct media_file *mf = file_get(m, f->sha256, 1);
    if (metalink) {
        mf->metalinks++;
        return;
    }
    mf->server_bytes += bytes;
    mf->server_gets++;
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int pl__media_seat(struct pl_media *m, const struct upload_file *f,
                   uint64_t seat)
{
    if (!m->seed_copies || !f->sha256[0])
        return 0;
    struct media_file *mf = file_get(m, f->sha256, 1);
    int64_t now = mono_ms();
    unsigned k = 0;
    int mine = 0;
    /* Seats not renewed within seat_timeout are free again: a seed that
     * died or finished (and then serves, so nobody waits anyway). */
    for (unsigned i = 0; i < mf->nseats; i++) {
        if (now - mf->seats[i].seen_ms > m->seat_timeout)
            continue;
        if (mf->seats[i].id == seat) {
            mf->seats[i].seen_ms = now;
            mine = 1;
        }
        mf->seats[k++] = mf->seats[i];
    }
    mf->nseats = k;
    if (mine)
        return 0;
    if (mf->nseats < (unsigned long)m->seed_copies) {
        if (!mf->seats)
            mf->seats = pl_calloc((size_t)m->seed_copies, sizeof(*mf->seats));
        mf->seats[mf->nseats++] = (struct media_seat){seat, now};
        pl_log_info("media", "%s: seed %u of %ld for %s", m->host->domain,
                    mf->nseats, m->seed_copies, f->id);
        return 0;
    }
    mf->waits++;
    return 1;
}

/* ---- XMPP ---- */

/* The file a request names by its <hash/>: PL_OK with *fo, *uo and the
 * base64 spelling in b64; PL_EBAD_REQUEST or PL_EITEM_NOT_FOUND. */
static int file_of(struct pl_media *m, struct pl_stanza *st, struct pl_node *q,
                   struct upload_file **fo, struct pl_upload **uo)
{
    struct pl_upload *u = pl__upload_of(m->host);
    struct pl_node *h = pl_node_child(q, "hash", NS_HASHES);
    const char *algo = h ? pl_node_attr(h, "algo") : NULL;
    if (!u || !h || !algo || strcmp(algo, "sha-256") != 0)
        return PL_EBAD_REQUEST;
    size_t len;
    const char *text = pl_node_text(st, h, &len);
    unsigned char raw[32];
    char b64[48];
    if (pl_media_parse_sha256(text, len, raw) != PL_MEDIA_OK)
        return PL_EBAD_REQUEST;
    pl_media_b64(raw, sizeof(raw), b64, sizeof(b64));
    struct upload_file *f = pl__upload_by_hash(u, b64);
    if (!f)
        return PL_EITEM_NOT_FOUND;
    *fo = f;
    *uo = u;
    return PL_OK;
}

static struct pl_node *add_el(struct pl_stanza *st, struct pl_node *parent,
                              const char *name, const char *ns)
{
    return pl_node_add_child(st, parent, name, ns);
}

static void add_text_el(struct pl_stanza *st, struct pl_node *parent,
                        const char *name, const char *ns, const char *text)
{
    struct pl_node *e = add_el(st, parent, name, ns);
    pl_node_add_text(st, e, text, strlen(text));
}

static int query(struct pl_media *m, struct pl_event *ev, struct pl_node *q)
{
    struct upload_file *f;
    struct pl_upload *u;
    int rc = file_of(m, ev->stanza, q, &f, &u);
    if (rc != PL_OK)
        return rc;
    struct pl_buf url = {0}, meta = {0};
    pl__upload_url(u, f->id, f->name, &url);
    pl_buf_printf(&meta, "%s.meta4", pl_buf_cstr(&url));
    struct pl_stanza *res = pl_iq_result(ev->stanza);
    struct pl_node *r = add_el(res, pl_stanza_root(res), "query", PL_NS_MEDIA);
    pl_node_set_attr(res, r, "metalink", pl_buf_cstr(&meta));
    /* XEP-0447 §3.1: <file-sharing> with XEP-0446 metadata, then
     * <sources>. */
    struct pl_node *fs = add_el(res, r, "file-sharing", NS_SFS);
    pl_node_set_attr(res, fs, "disposition", "attachment");
    struct pl_node *file = add_el(res, fs, "file", NS_FILE_META);
    add_text_el(res, file, "media-type", NS_FILE_META, f->type);
    add_text_el(res, file, "name", NS_FILE_META, f->name);
    char n[24];
    snprintf(n, sizeof(n), "%llu", (unsigned long long)f->size);
    add_text_el(res, file, "size", NS_FILE_META, n);
    struct pl_node *h = add_el(res, file, "hash", NS_HASHES);
    pl_node_set_attr(res, h, "algo", "sha-256");
    pl_node_add_text(res, h, f->sha256, strlen(f->sha256));
    struct pl_node *srcs = add_el(res, fs, "sources", NS_SFS);
    struct pl_node *ud = add_el(res, srcs, "url-data", NS_URL_DATA);
    pl_node_set_attr(res, ud, "target", pl_buf_cstr(&url));
    struct media_sources peers;
    pl__media_sources(m, f, &peers);
    for (size_t i = 0; i < peers.n; i++) {
        ud = add_el(res, srcs, "url-data", NS_URL_DATA);
        pl_node_set_attr(res, ud, "target", peers.v[i].url);
    }
    pl__media_sources_free(&peers);
    file_get(m, f->sha256, 1)->queries++;
    pl_stat_inc(media_queries);
    pl_route_reply(ev->stanza, res);
    pl_stanza_unref(res);
    pl_buf_reset(&url);
    pl_buf_reset(&meta);
    return PL_HANDLED;
}

/* An http(s) URL fit for a Link field and a Metalink: visible ASCII but
 * for what would end or break them, a host part, no fragment. */
static int good_url(const char *s)
{
    size_t n = strlen(s), k;
    if (strncmp(s, "http://", 7) == 0)
        k = 7;
    else if (strncmp(s, "https://", 8) == 0)
        k = 8;
    else
        return 0;
    if (n <= k || n > 2048 || s[k] == '/')
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c >= 0x7f || strchr("<>\"\\^`{|}#", c))
            return 0;
    }
    return 1;
}

static struct media_peer *session_peer(struct pl_media *m, uint64_t sid,
                                       struct media_file *mf, size_t *count)
{
    char key[24];
    session_key(sid, key, sizeof(key));
    struct media_peer *found = NULL;
    *count = 0;
    for (struct media_peer *p = pl_map_get(&m->sessions, key); p;
         p = p->snext) {
        (*count)++;
        if (p->mf == mf)
            found = p;
    }
    return found;
}

static int parse_long(const char *s, long max, long *out)
{
    if (!s || !*s || strlen(s) > 9)
        return 0;
    long v = 0;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return 0;
        v = v * 10 + (*p - '0');
    }
    if (v > max)
        return 0;
    *out = v;
    return 1;
}

static int announce(struct pl_media *m, struct pl_event *ev, struct pl_node *q)
{
    struct pl_session *s = ev->session;
    if (!s || !s->jid || strcmp(s->jid->full, ev->from->full) != 0)
        return PL_ENOT_ALLOWED; /* only a bound session of ours */
    struct upload_file *f;
    struct pl_upload *u;
    int rc = file_of(m, ev->stanza, q, &f, &u);
    if (rc != PL_OK)
        return rc;
    struct pl_node *srcs = pl_node_child(q, "sources", NS_SFS);
    struct pl_node *ud = srcs ? pl_node_child(srcs, "url-data", NS_URL_DATA)
                              : NULL;
    const char *url = ud ? pl_node_attr(ud, "target") : NULL;
    long maxc = 1;
    const char *mc = pl_node_attr(q, "max-concurrent");
    if (!url || !good_url(url) || (mc && !parse_long(mc, 100000, &maxc))) {
        pl_route_error(ev->stanza, PL_EBAD_REQUEST,
                       "an http(s) url-data target and a max-concurrent "
                       "from 0 are needed");
        return PL_HANDLED;
    }
    struct media_file *mf = file_get(m, f->sha256, 1);
    int64_t now = (int64_t)time(NULL);
    if (banned(mf, ev->from->bare, now)) {
        pl_route_error(ev->stanza, PL_EFORBIDDEN,
                       "banned as a source of this file after failed "
                       "verifications");
        return PL_HANDLED;
    }
    size_t count;
    struct media_peer *p = session_peer(m, s->id, mf, &count);
    if (!p && mf->npeers >= (unsigned long)m->max_peers) {
        pl_route_error(ev->stanza, PL_ERESOURCE_CONSTRAINT,
                       "enough peers serve this file");
        return PL_HANDLED;
    }
    if (!p && count >= (size_t)m->max_announces) {
        pl_route_error(ev->stanza, PL_ERESOURCE_CONSTRAINT,
                       "this session announced too many files");
        return PL_HANDLED;
    }
    if (!p) {
        p = pl_calloc(1, sizeof(*p));
        p->mf = mf;
        p->session = s->id;
        p->jid = pl_strdup(ev->from->full);
        p->bare = pl_strdup(ev->from->bare);
        p->since = now;
        p->next = mf->peers;
        mf->peers = p;
        mf->npeers++;
        char key[24];
        session_key(s->id, key, sizeof(key));
        p->snext = pl_map_get(&m->sessions, key);
        pl_map_put(&m->sessions, key, p);
        pl_stat_inc(media_peers);
    } else {
        pl_free(p->url);
    }
    p->url = pl_strdup(url);
    int listed = p->max_concurrent <= 0 && maxc > 0;
    p->max_concurrent = maxc;
    pl_stat_inc(media_announces);
    pl_log_info("media", "%s: %s serves %s at %s (%ld at once)",
                m->host->domain, p->jid, f->id, url, maxc);
    /* The answer: the file's token key, for checking downloaders. */
    unsigned char fk[PL_MEDIA_KEY_LEN];
    char b64[48];
    pl_media_file_key(m->key, mf->raw, fk);
    pl_media_b64(fk, sizeof(fk), b64, sizeof(b64));
    struct pl_stanza *res = pl_iq_result(ev->stanza);
    struct pl_node *k = add_el(res, pl_stanza_root(res), "key", PL_NS_MEDIA);
    pl_node_set_attr(res, k, "algo", "hmac-sha-256");
    pl_node_add_text(res, k, b64, strlen(b64));
    pl_route_reply(ev->stanza, res);
    pl_stanza_unref(res);
    /* Downloads parked waiting for a peer of this file get it now. */
    if (listed)
        pl__upload_listed(mf->sha256);
    return PL_HANDLED;
}

static int withdraw(struct pl_media *m, struct pl_event *ev, struct pl_node *q)
{
    struct upload_file *f;
    struct pl_upload *u;
    int rc = file_of(m, ev->stanza, q, &f, &u);
    if (rc != PL_OK)
        return rc;
    struct media_file *mf = file_get(m, f->sha256, 0);
    size_t count;
    struct media_peer *p = mf && ev->session
                               ? session_peer(m, ev->session->id, mf, &count)
                               : NULL;
    if (!p)
        return PL_EITEM_NOT_FOUND;
    pl_log_info("media", "%s: %s withdrew from %s", m->host->domain, p->jid,
                f->id);
    peer_remove(m, p);
    pl_route_result(ev->stanza);
    return PL_HANDLED;
}

/* source without its token parameter (where peers' URLs carry it). */
static void strip_token(const char *source, char *out, size_t len)
{
    snprintf(out, len, "%s", source);
    for (char *t = out; (t = strstr(t, "token=")); t++) {
        if (t > out && (t[-1] == '?' || t[-1] == '&')) {
            t[-1] = '\0';
            return;
        }
    }
}

static void keep_report(struct pl_media *m, struct media_file *mf,
                        const char *reporter, long piece, const char *source,
                        const char *result)
{
    mf->reports_total++;
    if (m->max_reports == 0)
        return;
    if (!mf->reports)
        mf->reports = pl_calloc((size_t)m->max_reports, sizeof(*mf->reports));
    struct media_report *r = &mf->reports[mf->next_report];
    if (mf->nreports == (size_t)m->max_reports) {
        pl_free(r->reporter);
        pl_free(r->source);
    } else {
        mf->nreports++;
    }
    r->at = (int64_t)time(NULL);
    r->reporter = pl_strdup(reporter);
    r->piece = piece;
    r->source = pl_strdup(source);
    r->result = result;
    mf->next_report = (mf->next_report + 1) % (size_t)m->max_reports;
}

static int report(struct pl_media *m, struct pl_event *ev, struct pl_node *q)
{
    struct upload_file *f;
    struct pl_upload *u;
    int rc = file_of(m, ev->stanza, q, &f, &u);
    if (rc != PL_OK)
        return rc;
    const char *source = pl_node_attr(q, "source");
    const char *pa = pl_node_attr(q, "piece");
    long piece = -1;
    if (!source || !*source || strlen(source) > 4096 ||
        (pa && (!parse_long(pa, 999999999, &piece) ||
                (f->npieces && (uint64_t)piece >= f->npieces)))) {
        pl_route_error(ev->stanza, PL_EBAD_REQUEST,
                       "a source URL and a piece index of the file are "
                       "needed");
        return PL_HANDLED;
    }
    for (const char *c = source; *c; c++)
        if ((unsigned char)*c < 0x20)
            return PL_EBAD_REQUEST;
    struct media_file *mf = file_get(m, f->sha256, 1);
    char bare[4200];
    strip_token(source, bare, sizeof(bare));
    struct pl_buf own = {0};
    pl__upload_url(u, f->id, f->name, &own);
    const char *result = "unknown source";
    struct media_peer *bad = NULL;
    for (struct media_peer *p = mf->peers; p; p = p->next)
        if (strcmp(p->url, bare) == 0)
            bad = p;
    if (strcmp(bare, pl_buf_cstr(&own)) == 0) {
        result = "server";
        pl_log_error("media",
                     "%s: %s says the server's copy of %s is bad "
                     "(piece %ld)",
                     m->host->domain, ev->from->full, f->id, piece);
    } else if (bad) {
        bad->failures++;
        if (bad->failures >= (unsigned long)m->ban_reports) {
            struct media_ban *b = pl_calloc(1, sizeof(*b));
            b->bare = pl_strdup(bad->bare);
            b->url = pl_strdup(bad->url);
            b->until = (int64_t)time(NULL) + m->ban_time;
            b->next = mf->bans;
            mf->bans = b;
            pl_log_warn("media", "%s: %s banned as a source of %s for %lds",
                        m->host->domain, bad->jid, f->id, m->ban_time);
            peer_remove(m, bad);
            pl_stat_inc(media_peer_bans);
            result = "banned";
        } else {
            result = "demoted";
        }
    }
    pl_log_warn("media", "%s: %s reports piece %ld of %s from %s: %s",
                m->host->domain, ev->from->full, piece, f->id, bare, result);
    keep_report(m, mf, ev->from->full, piece, bare, result);
    pl_stat_inc(media_reports);
    pl_buf_reset(&own);
    pl_route_result(ev->stanza);
    return PL_HANDLED;
}

/* A decimal count of at most 15 digits (below 2^53: exact in JSON). */
static int parse_u64(const char *s, uint64_t *out)
{
    if (!s || !*s || strlen(s) > 15)
        return 0;
    uint64_t v = 0;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return 0;
        v = v * 10 + (uint64_t)(*p - '0');
    }
    *out = v;
    return 1;
}

/* Accounts holding mf: those that reported it fetched, and live peers
 * not among them (counted once per account). */
static unsigned long holders(struct media_file *mf)
{
    unsigned long n = (unsigned long)mf->holders.count;
    for (struct media_peer *p = mf->peers; p; p = p->next) {
        if (pl_map_get(&mf->holders, p->bare))
            continue;
        int seen = 0;
        for (struct media_peer *q = mf->peers; q != p; q = q->next)
            if (strcmp(q->bare, p->bare) == 0)
                seen = 1;
        n += !seen;
    }
    return n;
}

static int fetched(struct pl_media *m, struct pl_event *ev, struct pl_node *q)
{
    struct upload_file *f;
    struct pl_upload *u;
    int rc = file_of(m, ev->stanza, q, &f, &u);
    if (rc != PL_OK)
        return rc;
    uint64_t sb = 0, pb = 0;
    /* Bounded: one download does not take more than MAX_OVER times the
     * file from either side (retries, pieces refused and fetched again),
     * so one report cannot skew the file's totals without limit. */
    uint64_t cap = f->size * MAX_OVER + 1048576;
    if (!parse_u64(pl_node_attr(q, "server-bytes"), &sb) ||
        !parse_u64(pl_node_attr(q, "peer-bytes"), &pb) || sb > cap ||
        pb > cap) {
        pl_route_error(ev->stanza, PL_EBAD_REQUEST,
                       "server-bytes and peer-bytes: byte counts of one "
                       "download of this file");
        return PL_HANDLED;
    }
    struct media_file *mf = file_get(m, f->sha256, 1);
    mf->fetched++;
    mf->client_server_bytes += sb;
    mf->client_peer_bytes += pb;
    pl_map_put(&mf->holders, ev->from->bare, mf);
    pl_stat_inc(media_fetched);
    pl_log_info("media",
                "%s: %s holds %s: %llu bytes from the server, %llu from "
                "peers",
                m->host->domain, ev->from->full, f->id, (unsigned long long)sb,
                (unsigned long long)pb);
    pl_route_result(ev->stanza);
    return PL_HANDLED;
}

static int on_iq(struct pl_event *ev, void *state)
{
    struct pl_media *m = state;
    struct pl_node *q = pl_stanza_payload(ev->stanza);
    const char *type = pl_stanza_attr(ev->stanza, "type");
    if (!q || !type || strcmp(q->ns, PL_NS_MEDIA) != 0)
        return PL_PASS;
    if (strcmp(type, "get") != 0 && strcmp(type, "set") != 0)
        return PL_HANDLED;
    if (ev->to->local || ev->to->resource)
        return PL_ESERVICE_UNAVAILABLE;
    /* The hash of a file stands for the file: only this host's users. */
    if (!ev->from || !ev->from->local ||
        strcmp(ev->from->domain, m->host->domain) != 0)
        return PL_ENOT_ALLOWED;
    int get = strcmp(type, "get") == 0;
    if (get && strcmp(q->name, "query") == 0)
        return query(m, ev, q);
    if (!get && strcmp(q->name, "announce") == 0)
        return announce(m, ev, q);
    if (!get && strcmp(q->name, "withdraw") == 0)
        return withdraw(m, ev, q);
    if (!get && strcmp(q->name, "report") == 0)
        return report(m, ev, q);
    if (!get && strcmp(q->name, "fetched") == 0)
        return fetched(m, ev, q);
    return PL_EFEATURE_NOT_IMPLEMENTED;
}

static int on_closed(struct pl_event *ev, void *state)
{
    struct pl_media *m = state;
    if (!ev->session)
        return PL_PASS;
    char key[24];
    session_key(ev->session->id, key, sizeof(key));
    struct media_peer *p = pl_map_del(&m->sessions, key);
    while (p) {
        struct media_peer *next = p->snext;
        pl_log_info("media", "%s: %s went offline: no longer a source of %s",
                    m->host->domain, p->jid, p->mf->sha256);
        unlink_file(p);
        peer_free(p);
        p = next;
    }
    return PL_PASS;
}

/* ---- expiry ---- */

struct sweep {
    struct pl_media *m;
    struct pl_upload *u;
    char (*gone)[48];
    size_t n, cap;
};

static void find_gone(const char *key, void *value, void *ud)
{
    (void)value;
    struct sweep *s = ud;
    if (s->u && pl__upload_by_hash(s->u, key))
        return;
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 16;
        s->gone = pl_realloc(s->gone, s->cap * sizeof(*s->gone));
    }
    snprintf(s->gone[s->n++], 48, "%s", key);
}

static int on_expired(struct pl_event *ev, void *state)
{
    struct pl_media *m = state;
    struct sweep s = {m, pl__upload_of(ev->host), NULL, 0, 0};
    pl_map_each(&m->files, find_gone, &s);
    for (size_t i = 0; i < s.n; i++) {
        struct media_file *mf = pl_map_del(&m->files, s.gone[i]);
        if (mf)
            file_free(m, mf);
    }
    pl_free(s.gone);
    return PL_PASS;
}

/* ---- admin: parleyctl media ---- */

static json_t *file_json(struct pl_media *m, struct pl_upload *u,
                         struct upload_file *f, int full)
{
    struct media_file *mf = f->sha256[0] ? file_get(m, f->sha256, 0) : NULL;
    struct pl_buf url = {0};
    pl__upload_url(u, f->id, f->name, &url);
    json_t *o = json_pack("{s:s, s:s, s:s, s:I, s:s, s:s, s:I, s:I}", "id",
                          f->id, "name", f->name, "owner", f->owner, "size",
                          (json_int_t)f->size, "sha256", f->sha256, "url",
                          pl_buf_cstr(&url), "piece_size",
                          (json_int_t)f->piece_size, "pieces",
                          (json_int_t)f->npieces);
    pl_buf_reset(&url);
    json_object_set_new(o, "server_bytes",
                        json_integer(mf ? (json_int_t)mf->server_bytes : 0));
    json_object_set_new(o, "server_gets",
                        json_integer(mf ? (json_int_t)mf->server_gets : 0));
    json_object_set_new(o, "metalinks",
                        json_integer(mf ? (json_int_t)mf->metalinks : 0));
    json_object_set_new(o, "queries",
                        json_integer(mf ? (json_int_t)mf->queries : 0));
    json_object_set_new(o, "seeds",
                        json_integer(mf ? (json_int_t)mf->nseats : 0));
    json_object_set_new(o, "waits",
                        json_integer(mf ? (json_int_t)mf->waits : 0));
    json_object_set_new(o, "reports_total",
                        json_integer(mf ? (json_int_t)mf->reports_total : 0));
    uint64_t csb = mf ? mf->client_server_bytes : 0;
    uint64_t cpb = mf ? mf->client_peer_bytes : 0;
    json_object_set_new(o, "holders",
                        json_integer(mf ? (json_int_t)holders(mf) : 0));
    json_object_set_new(o, "fetched",
                        json_integer(mf ? (json_int_t)mf->fetched : 0));
    json_object_set_new(o, "client_server_bytes",
                        json_integer((json_int_t)csb));
    json_object_set_new(o, "client_peer_bytes", json_integer((json_int_t)cpb));
    /* The share of the downloaded bytes that came from peers. */
    json_object_set_new(o, "peer_percent",
                        json_real(csb + cpb ? 100.0 * (double)cpb /
                                                  (double)(csb + cpb)
                                            : 0.0));
    json_t *peers = json_array();
    int64_t now = (int64_t)time(NULL);
    for (struct media_peer *p = mf ? mf->peers : NULL; p; p = p->next)
        json_array_append_new(peers,
                              json_pack("{s:s, s:s, s:I, s:I, s:I, s:b}", "jid",
                                        p->jid, "url", p->url, "max_concurrent",
                                        (json_int_t)p->max_concurrent, "since",
                                        (json_int_t)p->since, "failures",
                                        (json_int_t)p->failures, "demoted",
                                        p->failures > 0));
    json_object_set_new(o, "peers", peers);
    if (!full)
        return o;
    json_t *bans = json_array();
    if (mf)
        banned(mf, "", now); /* drops the expired ones */
    for (struct media_ban *b = mf ? mf->bans : NULL; b; b = b->next)
        json_array_append_new(bans, json_pack("{s:s, s:s, s:I}", "jid", b->bare,
                                              "url", b->url, "until",
                                              (json_int_t)b->until));
    json_object_set_new(o, "bans", bans);
    json_t *reps = json_array();
    for (size_t i = 0; mf && i < mf->nreports; i++) {
        /* Oldest first. */
        size_t k = mf->nreports < (size_t)m->max_reports
                       ? i
                       : (mf->next_report + i) % mf->nreports;
        struct media_report *r = &mf->reports[k];
        json_array_append_new(reps, json_pack("{s:I, s:s, s:I, s:s, s:s}", "at",
                                              (json_int_t)r->at, "reporter",
                                              r->reporter, "piece",
                                              (json_int_t)r->piece, "source",
                                              r->source, "result", r->result));
    }
    json_object_set_new(o, "reports", reps);
    return o;
}

/* The file spec names on u: a file id, its SHA-256 (hex or base64), or
 * a URL with /upload/<id>/ in it. */
static struct upload_file *find_spec(struct pl_upload *u, const char *spec)
{
    size_t n = strlen(spec);
    unsigned char raw[32];
    char b64[48];
    if (pl__upload_is_id((struct pl_str){spec, n}))
        return pl_map_get(&u->files, spec);
    if (pl_media_parse_sha256(spec, n, raw) == PL_MEDIA_OK) {
        pl_media_b64(raw, sizeof(raw), b64, sizeof(b64));
        return pl__upload_by_hash(u, b64);
    }
    const char *p = strstr(spec, "/upload/");
    if (p && strlen(p + 8) >= PL_UPLOAD_ID_LEN) {
        char id[PL_UPLOAD_ID_LEN + 1];
        memcpy(id, p + 8, PL_UPLOAD_ID_LEN);
        id[PL_UPLOAD_ID_LEN] = '\0';
        if (pl__upload_is_id((struct pl_str){id, PL_UPLOAD_ID_LEN}))
            return pl_map_get(&u->files, id);
    }
    return NULL;
}

struct list_ud {
    struct pl_media *m;
    struct pl_upload *u;
    json_t *files;
};

static void list_one(const char *key, void *value, void *ud)
{
    (void)key;
    struct list_ud *l = ud;
    struct upload_file *f = value;
    if (f->ready)
        json_array_append_new(l->files, file_json(l->m, l->u, f, 0));
}

static int on_admin(struct pl_event *ev, void *state)
{
    (void)state;
    struct pl_admin_request *ar = ev->data;
    const char *spec = json_string_value(json_object_get(ar->req, "file"));
    json_t *ans = NULL;
    /* Every host with the module: the answer says which has the file. */
    for (int i = 0; pl_host_at(i) && !ans; i++) {
        struct pl_host *h = pl_host_at(i);
        struct pl_media *m = pl__media_of(h);
        struct pl_upload *u = pl__upload_of(h);
        if (!m || !u)
            continue;
        if (!spec) {
            continue;
        }
        struct upload_file *f = find_spec(u, spec);
        if (f && f->ready)
            ans = json_pack("{s:b, s:s, s:o}", "ok", 1, "host", h->domain,
                            "file", file_json(m, u, f, 1));
    }
    if (!spec) {
        json_t *files = json_array();
        for (int i = 0; pl_host_at(i); i++) {
            struct pl_host *h = pl_host_at(i);
            struct list_ud l = {pl__media_of(h), pl__upload_of(h), files};
            if (l.m && l.u)
                pl_map_each(&l.u->files, list_one, &l);
        }
        ans = json_pack("{s:b, s:o}", "ok", 1, "files", files);
    }
    if (!ans)
        ans = json_pack("{s:b, s:s, s:s}", "ok", 0, "error", "item-not-found",
                        "detail", "no uploaded file by that id, hash or URL");
    pl_admin_answer(ar->cid, ans);
    json_decref(ans);
    return PL_HANDLED;
}

/* ---- lifetime ---- */

static int load(struct pl_host *h, void *state)
{
    struct pl_media *m = state;
    m->host = h;
    if (!pl_host_ctx(h, upload)) {
        pl_log_error("media", "%s: the media module needs the upload module",
                     h->domain);
        return PL_EINVAL;
    }
    /* The media key: the server secret, bound to this host. */
    struct pl_str sec = pl_server_secret();
    char label[1100];
    snprintf(label, sizeof(label), "parley media key for %s", h->domain);
    unsigned int len = sizeof(m->key);
    HMAC(EVP_sha256(), sec.p, (int)sec.len, (const unsigned char *)label,
         strlen(label), m->key, &len);
    return PL_OK;
}

static void free_one(const char *key, void *value, void *ud)
{
    (void)key;
    struct pl_media *m = ud;
    struct media_file *mf = value;
    /* Peers only: their sessions' lists go with the map below. */
    while (mf->peers) {
        struct media_peer *p = mf->peers;
        mf->peers = p->next;
        mf->npeers--;
        peer_free(p);
    }
    (void)m;
}

static void free_file(const char *key, void *value, void *ud)
{
    (void)key;
    file_free(ud, value);
}

static void unload(struct pl_host *h, void *state)
{
    (void)h;
    struct pl_media *m = state;
    pl_map_each(&m->files, free_one, m);
    pl_map_clear(&m->sessions);
    pl_map_each(&m->files, free_file, m);
    pl_map_clear(&m->files);
}

static const struct pl_option options[] = {
    {"token_lifetime", PL_OPT_INT, "600", 10, 86400, NULL,
     "Seconds a token for downloading from peers stays valid (peers check "
     "it against their own clock).",
     offsetof(struct pl_media, token_lifetime)},
    {"max_sources", PL_OPT_INT, "16", 0, 1000, NULL,
     "Peers listed per Metalink, Link fields or XMPP answer (in turn, so "
     "that downloaders spread over the peers).",
     offsetof(struct pl_media, max_sources)},
    {"max_peers", PL_OPT_INT, "1000", 1, 1000000, NULL,
     "Peers tracked per file; an announce beyond is <resource-constraint/>.",
     offsetof(struct pl_media, max_peers)},
    {"max_announces", PL_OPT_INT, "100", 1, 100000, NULL,
     "Files one session may announce at once.",
     offsetof(struct pl_media, max_announces)},
    {"ban_reports", PL_OPT_INT, "1", 1, 1000, NULL,
     "Reports of a bad piece that ban a peer from a file (fewer demote "
     "it: listed after the others).",
     offsetof(struct pl_media, ban_reports)},
    {"ban_time", PL_OPT_INT, "86400", 1, 1L << 30, NULL,
     "Seconds a banned account may not serve that file.",
     offsetof(struct pl_media, ban_time)},
    {"max_reports", PL_OPT_INT, "32", 0, 10000, NULL,
     "Reports kept per file for parleyctl media status (all are logged "
     "and counted).",
     offsetof(struct pl_media, max_reports)},
    {"seed_copies", PL_OPT_INT, "2", 0, 64, NULL,
     "Downloads preferring peers (a Metalink GET with seat=) that take a "
     "file from the server while no peer serves it; the others wait for "
     "them to become peers. 0: nobody waits.",
     offsetof(struct pl_media, seed_copies)},
    {"seat_timeout", PL_OPT_INT, "5000", 500, 600000, NULL,
     "Milliseconds a seed keeps its seat without reading the Metalink "
     "again (a seed that died frees it after this).",
     offsetof(struct pl_media, seat_timeout)},
    {0},
};

static const struct pl_hook_def hooks[] = {
    {"upload/iq", on_iq, 10},
    {"session/closed", on_closed, 0},
    {"upload/expired", on_expired, 0},
    {"admin/media", on_admin, 0},
    {0},
};

const struct pl_module pl_mod_media = {
    .abi = PL_MODULE_ABI,
    .name = "media",
    .summary = "file information for peer-assisted downloads: peers, "
               "tokens, failure reports, on upload.<host>",
    .xeps = "XEP-0447, XEP-0446, XEP-0300, XEP-0103",
    .options = options,
    .hooks = hooks,
    .state_size = sizeof(struct pl_media),
    .load = load,
    .unload = unload,
};
