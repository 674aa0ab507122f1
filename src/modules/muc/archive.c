/*
 * archive.c - the room archive (XEP-0313 §3, §4 on a room JID): appends,
 * queries, the query form, clearing and expiry, each a storage job.  A
 * query page is built on the storage thread: every row becomes its whole
 * result <message/> there (parsed once, off the loop); the completion
 * only routes them and the <fin/>.
 */
#include <stdlib.h>
#include <sys/time.h>

#include "../mam/mam.h"
#include "archive.h"

#define NS_HINTS "urn:xmpp:hints"

int pl__muc_archivable(struct pl_stanza *m)
{
    struct pl_node *root = pl_stanza_root(m);
    if (pl_node_child(root, "no-store", NS_HINTS) ||
        pl_node_child(root, "no-permanent-store", NS_HINTS))
        return 0;
    return pl_node_child(root, "body", NULL) ||
           pl_node_child(root, "store", NS_HINTS) ||
           pl_node_child(root, "encrypted", "eu.siacs.conversations.axolotl") ||
           pl_node_child(root, "encrypted", "urn:xmpp:omemo:2");
}

long long pl__muc_archive_now(void)
{
    static long long last;
    struct timeval tv;
    gettimeofday(&tv, NULL);
    long long t = (long long)tv.tv_sec * 1000000LL + tv.tv_usec;
    last = t > last ? t : last + 1;
    return last;
}

/* ---- appending ---- */

struct append_job {
    struct pl_job base; /* host: the service, user: the room, bare: the
                         * room's JID (the archive's 'with') */
    char *nick, *sid;
    long long ts;
    struct pl_buf xml;
    long limit;
};

static int append_run(const struct pl_storage_driver *d, void *db, void *arg)
{
    struct append_job *j = arg;
    struct pl_archive_item it = {
        .sid = j->sid,
        .ts = j->ts,
        .with = j->base.bare,
        .with_res = j->nick,
        .dir = PL_ARCHIVE_IN,
        .xml = j->xml.data + j->xml.off,
        .xml_len = j->xml.len,
    };
    long long key;
    return d->archive_append(db, j->base.host, j->base.user, PL_ARCHIVE_ROOM,
                             &it, j->limit, &key);
}

static void append_done(int rc, void *arg)
{
    struct append_job *j = arg;
    if (rc != PL_OK)
        pl_log_error("mod_muc", "archiving a message of %s@%s failed: %s",
                     j->base.user, j->base.host, pl_strerror(rc));
    pl_free(j->nick);
    pl_free(j->sid);
    pl_buf_reset(&j->xml);
    pl_job_free(j);
}

void pl__muc_archive_append(const char *service, const char *room,
                            const char *nick, const char *sid,
                            struct pl_stanza *m, long limit)
{
    struct append_job *j = pl_job_new(sizeof(*j), NULL, 0, service, room);
    j->nick = pl_strdup(nick);
    j->sid = pl_strdup(sid);
    j->ts = pl__muc_archive_now();
    j->limit = limit;
    /* Standalone XML, forwarded later exactly as broadcast. */
    pl_node_serialize(pl_stanza_root(m), "", PL_NS_CLIENT, &j->xml);
    pl_storage_submit(pl_server_loop(), append_run, append_done, j);
}

/* ---- queries ---- */

struct query_job {
    struct pl_job base;    /* the request (held); host: the service, user:
                            * the room, bare: room@service */
    char *to_full;         /* requester */
    struct pl_mam_query q; /* parsed */
    long max, count_cap;
    struct pl_mam_page page; /* built on the storage thread */
};

static int query_run(const struct pl_storage_driver *d, void *db, void *arg)
{
    struct query_job *j = arg;
    return pl_mam_page_run(d, db, j->base.host, j->base.user, PL_ARCHIVE_ROOM,
                           &j->q, j->max, j->count_cap, j->to_full,
                           j->base.bare, &j->page);
}

static void query_free(struct query_job *j)
{
    pl_mam_page_free(&j->page);
    pl_mam_query_free(&j->q);
    pl_free(j->to_full);
    pl_job_free(j);
}

static void query_done(int rc, void *arg)
{
    struct query_job *j = arg;
    if (rc != PL_OK) {
        if (rc != PL_EITEM_NOT_FOUND)
            pl_log_error("mod_muc", "archive query of %s@%s failed",
                         j->base.user, j->base.host);
        pl_route_error(j->base.st,
                       rc == PL_EITEM_NOT_FOUND ? rc
                                                : PL_EINTERNAL_SERVER_ERROR,
                       NULL);
        query_free(j);
        return;
    }
    struct pl_jid *from = NULL, *to = NULL;
    if (pl_jid_parse(pl_str_c(j->base.bare), &from) == PL_OK &&
        pl_jid_parse(pl_str_c(j->to_full), &to) == PL_OK)
        for (long i = 0; i < j->page.n; i++)
            pl_route(j->page.msgs[i], from, to, NULL);
    pl_jid_free(from);
    pl_jid_free(to);
    struct pl_stanza *r = pl_mam_fin(j->base.st, &j->q, &j->page);
    pl_route_reply(j->base.st, r);
    pl_stanza_unref(r);
    query_free(j);
}

void pl__muc_archive_query(const char *service, const char *room,
                           struct pl_event *ev, long max_page, long count_cap)
{
    struct query_job *j = pl_job_new(sizeof(*j), ev->stanza, 0, service, room);
    const char *text = NULL;
    int rc = pl_mam_query_parse(ev->stanza, pl_stanza_payload(ev->stanza),
                                &j->q, &text);
    if (rc == PL_OK && j->q.nids > max_page) {
        rc = PL_EPOLICY_VIOLATION;
        text = "too many ids";
    }
    if (rc != PL_OK) {
        query_free(j);
        pl_route_error(ev->stanza, rc, text);
        return;
    }
    j->to_full = pl_strdup(ev->from->full);
    j->max = j->q.max < 0 || j->q.max > max_page ? max_page : j->q.max;
    j->count_cap = count_cap;
    pl_storage_submit(pl_server_loop(), query_run, query_done, j);
}

void pl__muc_archive_form(struct pl_event *ev)
{
    struct pl_stanza *r = pl_mam_form(ev->stanza);
    pl_route_reply(ev->stanza, r);
    pl_stanza_unref(r);
}

/* ---- clearing and expiry ---- */

struct clear_job {
    struct pl_job base; /* host: the service, user: the room or NULL (expiry
                         * of every room) */
    long long before;
    long max, removed;
    void (*done)(long removed, void *ud);
    void *ud;
};

static int clear_run(const struct pl_storage_driver *d, void *db, void *arg)
{
    struct clear_job *j = arg;
    if (j->base.user)
        return d->archive_clear(db, j->base.host, j->base.user,
                                PL_ARCHIVE_ROOM);
    return d->archive_expire(db, j->base.host, PL_ARCHIVE_ROOM, j->before,
                             j->max, &j->removed);
}

static void clear_done(int rc, void *arg)
{
    struct clear_job *j = arg;
    if (rc != PL_OK)
        pl_log_error("mod_muc", "%s the archive of %s%s%s failed",
                     j->base.user ? "clearing" : "expiring",
                     j->base.user ? j->base.user : "", j->base.user ? "@" : "",
                     j->base.host);
    if (j->done)
        j->done(rc == PL_OK ? j->removed : -1, j->ud);
    pl_job_free(j);
}

void pl__muc_archive_clear(const char *service, const char *room)
{
    struct clear_job *j = pl_job_new(sizeof(*j), NULL, 0, service, room);
    pl_storage_submit(pl_server_loop(), clear_run, clear_done, j);
}

void pl__muc_archive_expire(const char *service, long long before, long max,
                            void (*done)(long removed, void *ud), void *ud)
{
    struct clear_job *j = pl_job_new(sizeof(*j), NULL, 0, service, NULL);
    j->before = before;
    j->max = max;
    j->done = done;
    j->ud = ud;
    pl_storage_submit(pl_server_loop(), clear_run, clear_done, j);
}
