/*
 * fetch.c - the head-end's "fetch" command (issue 17): a device
 * downloads a file into its cache from the server and its peers at once.
 *
 *   {"command": "fetch", "hash": "<SHA-256, hex or base64>"}
 *   {"command": "fetch", "url": "<the file's URL or its .meta4>"}
 *
 * (`parleyctl push --fetch FILE` writes such a payload, with both.)  The
 * cache is looked at first: a hit is answered at once, with no network.
 * Otherwise the Metalink comes from the URL (".meta4" added) or, for a
 * hash alone, from upload.<domain> over XMPP (the sources query's
 * metalink attribute); then a thread of its own runs pl_fetch_run
 * (src/media/fetch.h) while the session goes on.  Each turn of the
 * agent's loop (pl_agent_fetch_poll) takes what the threads left:
 * progress (a "fetch-progress" event about once a second), pieces that
 * failed their hash (reported to the server through share.c's queue), and
 * the end: the command's answer
 *
 *   {"reply-to": ID, "command": "fetch", "status": "ok"|"failed",
 *    "result": {"hash", "path", "size", "cached", "from_server",
 *               "from_peers", "seconds", "sources": [...]}}
 *
 * a <fetched/> to the server (doc/media.md: counted per file for
 * `parleyctl media status`) and, when verified, the file shared with the
 * other devices (share.c).  At most --max-fetches downloads run at once;
 * more wait their turn, and past 64 waiting the command is answered busy.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clients/agent/agent.h"
#include "media/fetch.h"
#include "media/media.h"

#define NS_MEDIA "urn:parley:media:0"
#define NS_HASHES "urn:xmpp:hashes:2"
#define MAX_WAITING 64

enum {
    J_WAITING, /* for a free slot */
    J_QUERY,   /* asking upload.<domain> for the Metalink */
    J_RUNNING, /* its thread runs */
};

struct bad_piece {
    long long piece;
    char *url;
};

struct pl_agent_fetch {
    struct pl_agent_fetch *next;
    struct pl_agent *a;
    char *to, *type, *id; /* the command, for the answer */
    unsigned char sha256[32];
    int have_hash;
    char *metalink_url;
    char iq_id[40];
    int state;
    long long started, next_progress;
    pthread_t th;
    volatile int stop;
    /* Written by the thread, under lock. */
    pthread_mutex_t lock;
    struct bad_piece *bad;
    int nbad;
    uint64_t done, total, from_server, from_peers;
    double rate;
    int active;
    int finished, rc;
    char err[512];
    char *path;
    json_t *sources;
};

/* ------------------------------------------------------------ answers */

static void answer(struct pl_agent_fetch *j, const char *status, json_t *result)
{
    json_t *r = json_object();
    if (j->id)
        json_object_set_new(r, "reply-to", json_string(j->id));
    json_object_set_new(r, "command", json_string("fetch"));
    json_object_set_new(r, "status", json_string(status));
    json_object_set_new(r, "result", result);
    pl_agent_send_json(j->to, j->type, r, j->a);
    json_decref(r);
}

static void answer_error(struct pl_agent *a, const char *to, const char *type,
                         const char *id, const char *err, const char *detail)
{
    json_t *r = json_object();
    if (id)
        json_object_set_new(r, "reply-to", json_string(id));
    json_object_set_new(r, "command", json_string("fetch"));
    json_object_set_new(r, "error", json_string(err));
    json_object_set_new(r, "detail", json_string(detail));
    pl_agent_send_json(to, type, r, a);
    json_decref(r);
}

static void job_free(struct pl_agent_fetch *j)
{
    for (int i = 0; i < j->nbad; i++)
        free(j->bad[i].url);
    free(j->bad);
    free(j->to);
    free(j->type);
    free(j->id);
    free(j->metalink_url);
    free(j->path);
    json_decref(j->sources);
    pthread_mutex_destroy(&j->lock);
    free(j);
}

/* ------------------------------------------------------------ the thread */

static void on_event(const struct pl_fetch_event *ev, void *ud)
{
    struct pl_agent_fetch *j = ud;
    pthread_mutex_lock(&j->lock);
    j->done = ev->done;
    j->total = ev->total;
    j->from_server = ev->from_server;
    j->from_peers = ev->from_peers;
    j->rate = ev->rate;
    j->active = ev->active;
    if (ev->kind == PL_FETCH_PIECE_BAD || ev->kind == PL_FETCH_FAILED) {
        j->bad = realloc(j->bad, sizeof(*j->bad) * (size_t)(j->nbad + 1));
        j->bad[j->nbad].piece = ev->kind == PL_FETCH_FAILED ? -1 : ev->piece;
        j->bad[j->nbad].url = ev->url ? strdup(ev->url) : NULL;
        j->nbad++;
    }
    if (ev->kind == PL_FETCH_DONE && ev->path) {
        free(j->path);
        j->path = strdup(ev->path);
    }
    if (ev->kind == PL_FETCH_DONE || ev->kind == PL_FETCH_FAILED ||
        ev->sources) {
        json_t *list = json_array();
        for (size_t i = 0; i < ev->nsources; i++) {
            const struct pl_fetch_source *s = &ev->sources[i];
            char url[512];
            snprintf(url, sizeof(url), "%s", s->url);
            char *q = strstr(url, "token=");
            if (q)
                q[-1] = '\0'; /* no tokens in answers or logs */
            json_array_append_new(list,
                                  json_pack("{s:s, s:b, s:I, s:i, s:b, s:b}",
                                            "url", url, "server", s->is_server,
                                            "bytes", (json_int_t)s->bytes,
                                            "bad_pieces", s->bad_pieces,
                                            "banned", s->banned, "lost",
                                            s->lost));
        }
        json_decref(j->sources);
        j->sources = list;
    }
    pthread_mutex_unlock(&j->lock);
}

static void *job_main(void *arg)
{
    struct pl_agent_fetch *j = arg;
    struct pl_agent *a = j->a;
    struct pl_mlink m = {0};
    int rc = -1;
    struct pl_fetch_opts mo = {.ca_file = a->o.ca_file,
                               .insecure = a->o.insecure};
    /* Preferring peers: a seat in the Metalink's URL, so that the server
     * makes this download a seed or tells it to wait for peers; the
     * Metalink is read again for peers that joined (src/media/fetch.c). */
    char *seat = a->media->prefer_peers ? pl_mlink_seat_url(j->metalink_url)
                                        : NULL;
    const char *ml = seat ? seat : j->metalink_url;
    if (pl_mlink_get(ml, &mo, 60000, &m, j->err, sizeof(j->err)) ==
        PL_MEDIA_OK) {
        if (j->have_hash && memcmp(m.sha256, j->sha256, 32)) {
            snprintf(j->err, sizeof(j->err),
                     "the Metalink describes another file");
        } else {
            memcpy(j->sha256, m.sha256, 32);
            j->have_hash = 1;
            struct pl_fetch_opts o = {.cache_dir = a->media->cache_dir,
                                      .ca_file = a->o.ca_file,
                                      .insecure = a->o.insecure,
                                      .server_last = a->media->prefer_peers,
                                      .refresh_url = seat};
            rc = pl_fetch_run(&m, &o, on_event, j, &j->stop);
            if (rc != PL_MEDIA_OK)
                snprintf(j->err, sizeof(j->err), "%s",
                         rc == PL_FETCH_ESOURCES   ? "every source failed"
                         : rc == PL_FETCH_EVERIFY  ? "the file failed "
                                                     "verification"
                         : rc == PL_FETCH_EIO      ? "the cache cannot be "
                                                     "written"
                         : rc == PL_FETCH_ESTOPPED ? "stopped"
                                                   : "download failed");
        }
    }
    pl_mlink_free(&m);
    free(seat);
    pthread_mutex_lock(&j->lock);
    j->rc = rc;
    j->finished = 1;
    pthread_mutex_unlock(&j->lock);
    return NULL;
}

static void start(struct pl_agent_fetch *j)
{
    j->state = J_RUNNING;
    j->started = pl_cl_now_ms();
    j->next_progress = j->started + 1000;
    if (pthread_create(&j->th, NULL, job_main, j) != 0) {
        snprintf(j->err, sizeof(j->err), "cannot start a thread");
        j->rc = -1;
        j->finished = 1;
        j->th = pthread_self();
    }
}

/* ------------------------------------------------------- XMPP query */

static int on_sources(xmpp_conn_t *conn, xmpp_stanza_t *st, void *ud)
{
    struct pl_agent *a = ud;
    const char *id = xmpp_stanza_get_id(st);
    struct pl_agent_fetch *j = a->media->fetches;
    while (j && (j->state != J_QUERY || !id || strcmp(j->iq_id, id)))
        j = j->next;
    if (!j)
        return 0;
    const char *type = xmpp_stanza_get_type(st);
    xmpp_stanza_t *q = xmpp_stanza_get_child_by_name_and_ns(st, "query",
                                                            NS_MEDIA);
    const char *ml = q ? xmpp_stanza_get_attribute(q, "metalink") : NULL;
    if ((type && !strcmp(type, "error")) || !ml) {
        snprintf(j->err, sizeof(j->err), "upload.%s: %s", a->domain,
                 type && !strcmp(type, "error") ? pl_cl_error_condition(st)
                                                : "no Metalink");
        j->rc = -1;
        j->finished = 1;
        j->state = J_RUNNING;
        j->th = pthread_self(); /* nothing to join */
        return 0;
    }
    j->metalink_url = strdup(ml);
    start(j);
    return 0;
}

static void ask_sources(struct pl_agent *a, struct pl_agent_fetch *j)
{
    static unsigned seq;
    snprintf(j->iq_id, sizeof(j->iq_id), "media-q%u", ++seq);
    char to[300], b64[64];
    snprintf(to, sizeof(to), "upload.%s", a->domain);
    pl_media_b64(j->sha256, 32, b64, sizeof(b64));
    xmpp_stanza_t *iq = xmpp_iq_new(a->ctx, "get", j->iq_id);
    xmpp_stanza_set_to(iq, to);
    xmpp_stanza_t *q = xmpp_stanza_new(a->ctx);
    xmpp_stanza_set_name(q, "query");
    xmpp_stanza_set_ns(q, NS_MEDIA);
    xmpp_stanza_t *h = xmpp_stanza_new(a->ctx);
    xmpp_stanza_set_name(h, "hash");
    xmpp_stanza_set_ns(h, NS_HASHES);
    xmpp_stanza_set_attribute(h, "algo", "sha-256");
    xmpp_stanza_t *t = xmpp_stanza_new(a->ctx);
    xmpp_stanza_set_text(t, b64);
    xmpp_stanza_add_child(h, t);
    xmpp_stanza_release(t);
    xmpp_stanza_add_child(q, h);
    xmpp_stanza_release(h);
    xmpp_stanza_add_child(iq, q);
    xmpp_stanza_release(q);
    xmpp_id_handler_add(a->conn, on_sources, j->iq_id, a);
    xmpp_send(a->conn, iq);
    xmpp_stanza_release(iq);
    j->state = J_QUERY;
}

/* ------------------------------------------------------------ commands */

static int count_jobs(struct pl_agent_media *m, int running)
{
    int n = 0;
    for (struct pl_agent_fetch *j = m->fetches; j; j = j->next)
        n += running ? j->state != J_WAITING : 1;
    return n;
}

int pl_agent_fetch_command(struct pl_agent *a, const char *from,
                           const char *type, const char *id, json_t *payload)
{
    const char *cmd = json_string_value(json_object_get(payload, "command"));
    if (!cmd || strcmp(cmd, "fetch") || !a->media)
        return 0;
    struct pl_agent_media *m = a->media;
    const char *hash = json_string_value(json_object_get(payload, "hash"));
    const char *url = json_string_value(json_object_get(payload, "url"));
    unsigned char sha[32];
    if ((!hash && !url) ||
        (hash && pl_media_parse_sha256(hash, strlen(hash), sha) != 0) ||
        (url && strncmp(url, "http://", 7) && strncmp(url, "https://", 8))) {
        answer_error(a, from, type, id, "bad-request",
                     "fetch needs \"hash\" (SHA-256) or \"url\" (http/https)");
        return 1;
    }
    char path[4096];
    if (hash && pl_cache_lookup(m->cache_dir, sha, path, sizeof(path)) == 1) {
        char hex[65];
        pl_media_hex(sha, 32, hex);
        struct pl_agent_fetch tmp = {.a = a,
                                     .to = (char *)from,
                                     .type = (char *)type,
                                     .id = (char *)id};
        answer(&tmp, "ok",
               json_pack("{s:s, s:s, s:b, s:i, s:i, s:f}", "hash", hex, "path",
                         path, "cached", 1, "from_server", 0, "from_peers", 0,
                         "seconds", 0.0));
        pl_agent_emit("fetched",
                      json_pack("{s:s, s:b}", "hash", hex, "cached", 1));
        pl_agent_media_share(a, sha, path);
        return 1;
    }
    if (count_jobs(m, 0) >= MAX_WAITING) {
        answer_error(a, from, type, id, "busy", "too many downloads waiting");
        return 1;
    }
    struct pl_agent_fetch *j = calloc(1, sizeof(*j));
    pthread_mutex_init(&j->lock, NULL);
    j->a = a;
    j->to = strdup(from);
    j->type = type ? strdup(type) : NULL;
    j->id = id ? strdup(id) : NULL;
    if (hash) {
        memcpy(j->sha256, sha, 32);
        j->have_hash = 1;
    }
    if (url) {
        size_t n = strlen(url);
        j->metalink_url = malloc(n + 7);
        snprintf(j->metalink_url, n + 7, "%s%s", url,
                 n > 6 && !strcmp(url + n - 6, ".meta4") ? "" : ".meta4");
    }
    j->state = J_WAITING;
    struct pl_agent_fetch **tail = &m->fetches;
    while (*tail)
        tail = &(*tail)->next;
    *tail = j;
    pl_agent_emit("fetch-queued",
                  json_pack("{s:s?, s:s?}", "id", id, "url", j->metalink_url));
    return 1;
}

/* ------------------------------------------------------------ the turn */

/* Ends job j (its thread finished): answers, reports, shares. */
static void finish(struct pl_agent *a, struct pl_agent_fetch *j)
{
    double secs = (double)(pl_cl_now_ms() - j->started) / 1000.0;
    char hex[65];
    pl_media_hex(j->sha256, 32, hex);
    json_t *res = json_pack("{s:s, s:I, s:b, s:I, s:I, s:f}", "hash", hex,
                            "size", (json_int_t)j->total, "cached", 0,
                            "from_server", (json_int_t)j->from_server,
                            "from_peers", (json_int_t)j->from_peers, "seconds",
                            secs);
    if (j->sources)
        json_object_set(res, "sources", j->sources);
    if (j->rc == PL_MEDIA_OK && j->path) {
        json_object_set_new(res, "path", json_string(j->path));
        pl_agent_emit("fetched", json_deep_copy(res));
        answer(j, "ok", res);
        if (a->state == PL_AGENT_UP && a->conn) {
            /* <fetched/>: counted per file by the server. */
            char to[300], b64[64], n1[24], n2[24];
            snprintf(to, sizeof(to), "upload.%s", a->domain);
            pl_media_b64(j->sha256, 32, b64, sizeof(b64));
            snprintf(n1, sizeof(n1), "%llu",
                     (unsigned long long)j->from_server);
            snprintf(n2, sizeof(n2), "%llu", (unsigned long long)j->from_peers);
            char *iid = xmpp_uuid_gen(a->ctx);
            xmpp_stanza_t *iq = xmpp_iq_new(a->ctx, "set", iid);
            xmpp_stanza_set_to(iq, to);
            xmpp_stanza_t *f = xmpp_stanza_new(a->ctx);
            xmpp_stanza_set_name(f, "fetched");
            xmpp_stanza_set_ns(f, NS_MEDIA);
            xmpp_stanza_set_attribute(f, "server-bytes", n1);
            xmpp_stanza_set_attribute(f, "peer-bytes", n2);
            xmpp_stanza_t *h = xmpp_stanza_new(a->ctx);
            xmpp_stanza_set_name(h, "hash");
            xmpp_stanza_set_ns(h, NS_HASHES);
            xmpp_stanza_set_attribute(h, "algo", "sha-256");
            xmpp_stanza_t *t = xmpp_stanza_new(a->ctx);
            xmpp_stanza_set_text(t, b64);
            xmpp_stanza_add_child(h, t);
            xmpp_stanza_release(t);
            xmpp_stanza_add_child(f, h);
            xmpp_stanza_release(h);
            xmpp_stanza_add_child(iq, f);
            xmpp_stanza_release(f);
            xmpp_send(a->conn, iq);
            xmpp_stanza_release(iq);
            xmpp_free(a->ctx, iid);
        }
        pl_agent_media_share(a, j->sha256, j->path);
    } else {
        json_object_set_new(res, "error", json_string(j->err));
        pl_agent_log("fetch %s failed: %s",
                     j->metalink_url ? j->metalink_url : hex, j->err);
        pl_agent_emit("fetch-failed", json_deep_copy(res));
        answer(j, "failed", res);
    }
}

void pl_agent_fetch_poll(struct pl_agent *a)
{
    struct pl_agent_media *m = a->media;
    if (!m)
        return;
    long long now = pl_cl_now_ms();
    int running = count_jobs(m, 1);
    for (struct pl_agent_fetch **pp = &m->fetches; *pp;) {
        struct pl_agent_fetch *j = *pp;
        if (j->state == J_WAITING && running < m->max_fetches) {
            if (j->metalink_url) {
                start(j);
                running++;
            } else if (a->state == PL_AGENT_UP && a->conn) {
                ask_sources(a, j);
                running++;
            }
        }
        if (j->state != J_RUNNING) {
            pp = &j->next;
            continue;
        }
        pthread_mutex_lock(&j->lock);
        for (int i = 0; i < j->nbad; i++) {
            pl_agent_media_report(a, j->sha256, j->bad[i].piece, j->bad[i].url);
            pl_agent_emit("piece-bad", json_pack("{s:I, s:s?}", "piece",
                                                 (json_int_t)j->bad[i].piece,
                                                 "source", j->bad[i].url));
            free(j->bad[i].url);
        }
        j->nbad = 0;
        int finished = j->finished;
        if (!finished && now >= j->next_progress) {
            j->next_progress = now + 1000;
            pl_agent_emit("fetch-progress",
                          json_pack("{s:s?, s:I, s:I, s:f, s:i}", "id", j->id,
                                    "done", (json_int_t)j->done, "total",
                                    (json_int_t)j->total, "rate", j->rate,
                                    "sources", j->active));
        }
        pthread_mutex_unlock(&j->lock);
        if (!finished) {
            pp = &j->next;
            continue;
        }
        if (!pthread_equal(j->th, pthread_self()))
            pthread_join(j->th, NULL);
        finish(a, j);
        *pp = j->next;
        job_free(j);
        running--;
    }
}

void pl_agent_fetch_stop(struct pl_agent *a)
{
    struct pl_agent_media *m = a->media;
    if (!m)
        return;
    for (struct pl_agent_fetch *j = m->fetches; j; j = j->next)
        j->stop = 1;
    while (m->fetches) {
        struct pl_agent_fetch *j = m->fetches;
        if (j->state == J_RUNNING && !pthread_equal(j->th, pthread_self()))
            pthread_join(j->th, NULL);
        m->fetches = j->next;
        job_free(j);
    }
}
