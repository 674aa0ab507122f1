/*
 * media.c - files through parley-gateway: e-mail attachments stored on
 * parleyd's HTTP upload service (XEP-0363) and sent on as links, and
 * files named by XEP-0066 links in IM messages attached to e-mail or
 * written into SMS text (the MMS equivalent).
 *
 * E-mail to IM (pl__gw_media_mail_db, from mail/channel.c): an e-mail
 * with attachments is not handed to IM at once.  Its attachments (at
 * most media.max_count, each at most media.max_size bytes; the others are
 * dropped with a note in the text) are stored in the media_parts table
 * of the queue file, then the message goes to the "upload" queue, all
 * before the SMTP/LMTP reply.  The instance holding the component link
 * claims that queue one message at a time: for each part not stored yet
 * it asks media.upload_service for a slot (an iq from the mail domain;
 * parleyd's upload.components must list that domain), PUTs the bytes
 * with libcurl on the "media" work queue, and records the GET URL of the
 * part (so a retry, after a restart too, goes on where it stopped).  With
 * every part stored, the message goes out in one transaction (lease
 * checked): to IM a stanza whose body is the text and one URL per line,
 * with one jabber:x:oob <x/> per file; to any other channel (SMS) it is
 * queued again there with the URLs in its text.  The URLs are kept in
 * the message's links column.  A slot refused as too large
 * (<file-too-large/>) or a PUT answered 413 drops that part with a note;
 * any other failure (no link, no answer, 5xx) retries the message with
 * the usual backoff, and expiry reports it (a DSN for e-mail).
 *
 * IM to e-mail and SMS (pl_gw_media_oob, im.c and mail/channel.c): the
 * <url/>s of jabber:x:oob elements become the message's links.  SMS
 * carries them in its text.  E-mail (pl__gw_media_fetch, on an SMTP
 * worker) fetches each link with libcurl (no redirects, http/https only,
 * at most media.max_size bytes) only when it starts with one of
 * media.fetch_from (the upload service's URL: nothing else is fetched,
 * so a message cannot make the gateway request arbitrary URLs) and
 * attaches it; the link is listed in the text either way.  A file that is
 * too large or gone (4xx) is left as a link with a note; a temporary
 * failure (no answer, 5xx) retries the e-mail.
 *
 * Threads: the slot requests and the scheduling on the loop, SQL on the
 * database thread, HTTP on the "media" work queue (media.workers) and,
 * for fetches, on the SMTP workers.
 */
#include <curl/curl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "alloc.h"
#include "buf.h"
#include "error.h"
#include "gateway/address.h"
#include "gateway/core.h"
#include "gateway/mail/mime.h"
#include "log.h"
#include "loop.h"
#include "stanza.h"

#define NS_UPLOAD "urn:xmpp:http:upload:0"
#define NS_OOB "jabber:x:oob"
#define MAX_URL 2048

/* One stored attachment of a message in the upload queue. */
struct part {
    int n;               /* its number in the message */
    char *name, *type;   /* file name, media type */
    size_t size;         /* bytes */
    unsigned char *data; /* the bytes while not uploaded */
    char *url;           /* GET URL once uploaded */
    char *note;          /* why it was dropped, or NULL */
};

/* The message being uploaded (one per instance at a time). */
struct job {
    struct pl_work w;
    struct pl_gw_msg *m; /* claimed, or NULL */
    struct part *parts;
    size_t nparts, i; /* the part being stored */
    char *put_url;    /* the slot */
    char *get_url;    /* its GET URL */
    char *hdr[3];     /* the slot's headers, "Name: value" */
    int put_rc;       /* PL_OK, PL_ELIMIT (413), PL_EAGAIN */
    char detail[600]; /* why a retry */
    int state;        /* the state the outcome reached */
};

static struct {
    int started, stopping, busy;
    struct pl_workq *q;      /* PUTs */
    struct pl_timer poll;    /* queue poll */
    struct pl_timer timeout; /* the slot request's */
    struct job *cur;         /* the message being uploaded */
    char slot_id[PL_GW_ID_LEN + 2];
} X;

static int enabled(void)
{
    return pl_gw.c.mail_domain[0] && pl_gw.c.media_service[0];
}

/* ---- the media_parts table (database thread) ---- */

static int schema_ok;

static sqlite3 *db(void)
{
    sqlite3 *d = pl__gwq_db(pl_gw.db);
    if (!schema_ok &&
        sqlite3_exec(d,
                     "CREATE TABLE IF NOT EXISTS media_parts("
                     " id TEXT NOT NULL, n INTEGER NOT NULL,"
                     " name TEXT NOT NULL, type TEXT NOT NULL,"
                     " size INTEGER NOT NULL, data BLOB, url TEXT,"
                     " note TEXT, created INTEGER NOT NULL,"
                     " PRIMARY KEY(id, n))",
                     NULL, NULL, NULL) == SQLITE_OK)
        schema_ok = 1;
    return d;
}

static void human_size(char *buf, size_t n, size_t size)
{
    if (size >= 1024 * 1024)
        snprintf(buf, n, "%.1f MB", (double)size / (1024.0 * 1024.0));
    else if (size >= 1024)
        snprintf(buf, n, "%.1f KB", (double)size / 1024.0);
    else
        snprintf(buf, n, "%zu bytes", size);
}

static void note_too_large(struct pl_buf *b, const char *name, size_t size)
{
    char s[32], lim[32];
    human_size(s, sizeof(s), size);
    human_size(lim, sizeof(lim), (size_t)pl_gw.c.media_max_size);
    pl_buf_printf(b, "[attachment %s (%s) not delivered: larger than %s]", name,
                  s, lim);
}

static void add_line(struct pl_buf *b, const char *s)
{
    if (b->len && b->data[b->off + b->len - 1] != '\n')
        pl_buf_append_str(b, "\n");
    pl_buf_append_str(b, s);
}

/* A file name the upload service takes (XEP-0363 puts it in the URL):
 * no '/', '\\' or control characters, not "." or "..", at most 200
 * bytes cut at a character boundary; new string. */
static char *clean_name(const char *in)
{
    size_t n = in ? strlen(in) : 0;
    if (n > 200) {
        n = 200;
        while (n && ((unsigned char)in[n] & 0xc0) == 0x80)
            n--;
    }
    char *s = pl_strndup(in ? in : "", n);
    for (unsigned char *p = (unsigned char *)s; *p; p++)
        if (*p < 0x20 || *p == 0x7f || *p == '/' || *p == '\\')
            *p = '_';
    if (!*s || strcmp(s, ".") == 0 || strcmp(s, "..") == 0) {
        pl_free(s);
        s = pl_strdup("file");
    }
    return s;
}

/* A media type the upload service takes (token/token, visible ASCII,
 * shorter than 128 bytes), else application/octet-stream. */
static const char *clean_type(const char *t)
{
    const char *slash = t ? strchr(t, '/') : NULL;
    if (!slash || slash == t || !slash[1] || strlen(t) >= 128)
        return "application/octet-stream";
    for (const unsigned char *p = (const unsigned char *)t; *p; p++)
        if (*p <= 0x20 || *p >= 0x7f || *p == '"' || *p == '\\')
            return "application/octet-stream";
    return t;
}

int pl__gw_media_mail_db(const struct pl_gw_msg *m,
                         const struct pl_mail_msg *mm)
{
    sqlite3 *d = db();
    struct pl_buf text = {0}, note = {0};
    pl_buf_append_str(&text, m->text);
    int rc = pl__gwq_begin(pl_gw.db); /* a savepoint in a batch */
    int began = rc == PL_OK;
    size_t k = 0, over = 0;
    for (size_t i = 0; i < mm->natt && rc == PL_OK; i++) {
        const struct pl_mail_attachment *a = &mm->att[i];
        if (k >= (size_t)pl_gw.c.media_max_count) {
            over++;
            continue;
        }
        if (a->len > (size_t)pl_gw.c.media_max_size) {
            pl_buf_reset(&note);
            note_too_large(&note, a->name, a->len);
            add_line(&text, pl_buf_cstr(&note));
            continue;
        }
        sqlite3_stmt *st = NULL;
        if (sqlite3_prepare_v2(d,
                               "INSERT OR REPLACE INTO media_parts(id, n,"
                               " name, type, size, data, created)"
                               " VALUES(?,?,?,?,?,?,?)",
                               -1, &st, NULL) != SQLITE_OK) {
            rc = PL_ESTORAGE;
            break;
        }
        char *name = clean_name(a->name);
        sqlite3_bind_text(st, 1, m->id, -1, SQLITE_STATIC);
        sqlite3_bind_int(st, 2, (int)k);
        sqlite3_bind_text(st, 3, name, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 4, clean_type(a->type), -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 5, (sqlite3_int64)a->len);
        sqlite3_bind_blob64(st, 6, a->data, a->len, SQLITE_STATIC);
        sqlite3_bind_int64(st, 7, pl_gw_now());
        if (sqlite3_step(st) != SQLITE_DONE)
            rc = PL_ESTORAGE;
        sqlite3_finalize(st);
        pl_free(name);
        k++;
    }
    if (began)
        rc = pl__gwq_end(pl_gw.db, rc);
    if (over) {
        pl_buf_reset(&note);
        pl_buf_printf(&note,
                      "[%zu more attachment%s not delivered: at most %ld "
                      "per message]",
                      over, over == 1 ? "" : "s", pl_gw.c.media_max_count);
        add_line(&text, pl_buf_cstr(&note));
    }
    if (mm->dropped) {
        pl_buf_reset(&note);
        pl_buf_printf(&note, "[%u part%s of the e-mail left out]", mm->dropped,
                      mm->dropped == 1 ? "" : "s");
        add_line(&text, pl_buf_cstr(&note));
    }
    if (rc == PL_OK) {
        /* The parts are committed first: a message in the queue always
         * finds its parts (parts without a message are removed later). */
        struct pl_gw_msg c = *m;
        c.dest = (char *)"upload";
        c.text = (char *)pl_buf_cstr(&text);
        rc = pl_gwq_insert(pl_gw.db, &c, pl_gw.c.instance);
    }
    pl_buf_reset(&text);
    pl_buf_reset(&note);
    return rc;
}

static void parts_free(struct part *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        pl_free(v[i].name);
        pl_free(v[i].type);
        pl_free(v[i].data);
        pl_free(v[i].url);
        pl_free(v[i].note);
    }
    pl_free(v);
}

static char *col(sqlite3_stmt *st, int i)
{
    const unsigned char *s = sqlite3_column_text(st, i);
    return s ? pl_strdup((const char *)s) : NULL;
}

static int load_parts(struct job *j)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db(),
                           "SELECT n, name, type, size, url, note, data"
                           " FROM media_parts WHERE id = ? ORDER BY n",
                           -1, &st, NULL) != SQLITE_OK)
        return PL_ESTORAGE;
    sqlite3_bind_text(st, 1, j->m->id, -1, SQLITE_STATIC);
    int s;
    while ((s = sqlite3_step(st)) == SQLITE_ROW) {
        j->parts = pl_realloc(j->parts, (j->nparts + 1) * sizeof(*j->parts));
        struct part *p = &j->parts[j->nparts++];
        memset(p, 0, sizeof(*p));
        p->n = sqlite3_column_int(st, 0);
        p->name = col(st, 1);
        p->type = col(st, 2);
        p->size = (size_t)sqlite3_column_int64(st, 3);
        p->url = col(st, 4);
        p->note = col(st, 5);
        if (!p->url && !p->note) {
            const void *b = sqlite3_column_blob(st, 6);
            size_t n = (size_t)sqlite3_column_bytes(st, 6);
            p->data = pl_malloc(n + 1);
            if (n)
                memcpy(p->data, b, n);
            p->size = n;
        }
    }
    sqlite3_finalize(st);
    return s == SQLITE_DONE ? PL_OK : PL_ESTORAGE;
}

static void delete_parts(const char *id)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db(), "DELETE FROM media_parts WHERE id = ?", -1,
                           &st, NULL) != SQLITE_OK)
        return;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    sqlite3_step(st);
    sqlite3_finalize(st);
}

/* ---- the upload queue (loop, with database and HTTP jobs) ---- */

static void next_part(struct job *j);

static void job_free(struct job *j)
{
    pl_gw_msg_free(j->m);
    parts_free(j->parts, j->nparts);
    pl_free(j->put_url);
    pl_free(j->get_url);
    for (int i = 0; i < 3; i++)
        pl_free(j->hdr[i]);
    pl_free(j);
}

static void end_done(struct pl_work *w)
{
    struct job *j = (struct job *)w;
    job_free(j);
    X.cur = NULL;
    X.busy = 0;
    pl_gw_outbox_kick();
    pl_gw_mail_kick();
    pl_gw_sms_kick();
    pl_gw_media_kick();
}

static void retry_work(struct pl_work *w)
{
    struct job *j = (struct job *)w;
    pl__gw_outcome_db(j->m, PL_GW_OUT_RETRY, 0, j->detail, "media", &j->state);
}

/* A temporary failure: the message waits for its next attempt. */
static void retry(struct job *j, const char *why)
{
    char d[sizeof(j->detail)];
    snprintf(d, sizeof(d), "storing the attachments: %.500s", why);
    memcpy(j->detail, d, sizeof(d));
    pl_log_info("media", "message %s: %s", j->m->id, j->detail);
    j->w.work = retry_work;
    j->w.done = end_done;
    pl_gw_db_submit(&j->w);
}

static int owned(sqlite3 *d, const char *id)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(d,
                           "SELECT 1 FROM messages WHERE id = ? AND"
                           " lease_owner = ? AND pending = 1",
                           -1, &st, NULL) != SQLITE_OK)
        return PL_ESTORAGE;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, pl_gw.c.instance, -1, SQLITE_STATIC);
    int s = sqlite3_step(st);
    sqlite3_finalize(st);
    return s == SQLITE_ROW    ? PL_OK
           : s == SQLITE_DONE ? PL_ECONFLICT
                              : PL_ESTORAGE;
}

static int run_sql(sqlite3 *d, const char *sql, const char *a, const char *b,
                   const char *c, const char *e)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(d, sql, -1, &st, NULL) != SQLITE_OK)
        return PL_ESTORAGE;
    const char *v[4] = {a, b, c, e};
    for (int i = 0; i < 4 && i < sqlite3_bind_parameter_count(st); i++)
        sqlite3_bind_text(st, i + 1, v[i], -1, SQLITE_STATIC);
    int s = sqlite3_step(st);
    sqlite3_finalize(st);
    return s == SQLITE_DONE ? PL_OK : PL_ESTORAGE;
}

/* The IM stanza for m: body text and URLs, one oob element per file. */
static char *im_stanza(const struct pl_gw_msg *m, const char *body,
                       const struct part *parts, size_t n)
{
    char *esc = NULL;
    if (pl_gw_escape(m->src_addr, &esc) != PL_OK)
        return NULL;
    char from[1024];
    snprintf(from, sizeof(from), "%s@%s", esc, pl_gw.c.mail_domain);
    pl_free(esc);
    struct pl_stanza *st = pl_stanza_new("message", PL_NS_CLIENT);
    pl_stanza_set_attr(st, "from", from);
    pl_stanza_set_attr(st, "to", m->dst_addr);
    pl_stanza_set_attr(st, "type", "normal");
    pl_stanza_set_attr(st, "id", m->id);
    struct pl_node *root = pl_stanza_root(st);
    if (m->subject) {
        struct pl_node *s = pl_node_add_child(st, root, "subject",
                                              PL_NS_CLIENT);
        pl_node_add_text(st, s, m->subject, strlen(m->subject));
    }
    struct pl_node *b = pl_node_add_child(st, root, "body", PL_NS_CLIENT);
    pl_node_add_text(st, b, body, strlen(body));
    if (m->sender_msgid) {
        struct pl_node *th = pl_node_add_child(st, root, "thread",
                                               PL_NS_CLIENT);
        pl_node_add_text(st, th, m->sender_msgid, strlen(m->sender_msgid));
    }
    for (size_t i = 0; i < n; i++) {
        if (!parts[i].url)
            continue;
        struct pl_node *x = pl_node_add_child(st, root, "x", NS_OOB);
        struct pl_node *u = pl_node_add_child(st, x, "url", NS_OOB);
        pl_node_add_text(st, u, parts[i].url, strlen(parts[i].url));
        struct pl_node *ds = pl_node_add_child(st, x, "desc", NS_OOB);
        pl_node_add_text(st, ds, parts[i].name, strlen(parts[i].name));
    }
    return pl__gw_xml(st);
}

static void finish_work(struct pl_work *w)
{
    struct job *j = (struct job *)w;
    struct pl_gw_msg *m = j->m;
    struct pl_buf body = {0}, links = {0};
    pl_buf_append_str(&body, m->text);
    for (size_t i = 0; i < j->nparts; i++)
        if (j->parts[i].note)
            add_line(&body, j->parts[i].note);
    size_t nurl = 0;
    for (size_t i = 0; i < j->nparts; i++) {
        if (!j->parts[i].url)
            continue;
        add_line(&links, j->parts[i].url);
        nurl++;
    }
    if (nurl) {
        /* A body that is just the URL shows inline in Conversations. */
        if (body.len)
            pl_buf_append_str(&body, "\n\n");
        pl_buf_append(&body, links.data + links.off, links.len);
    }
    const char *text = pl_buf_cstr(&body);
    const char *lk = nurl ? pl_buf_cstr(&links) : NULL;
    sqlite3 *d = db();
    char detail[160];
    int rc = pl__gwq_begin(pl_gw.db); /* a savepoint in a batch */
    int began = rc == PL_OK;
    if (rc == PL_OK)
        rc = owned(d, m->id);
    if (rc == PL_OK && strcmp(m->dst_channel, "im") == 0) {
        char *xml = im_stanza(m, text, j->parts, j->nparts);
        rc = xml ? pl_gwq_outbox_add(pl_gw.db, xml) : PL_EINVAL;
        pl_free(xml);
        if (rc == PL_OK)
            rc = run_sql(d,
                         "UPDATE messages SET state = 'sent', pending = 0,"
                         " lease_owner = NULL, lease_until = 0, parts = 1,"
                         " links = ?, text = ? WHERE id = ?",
                         lk, text, m->id, NULL);
        snprintf(detail, sizeof(detail),
                 "handed to parleyd with %zu file link%s", nurl,
                 nurl == 1 ? "" : "s");
        if (rc == PL_OK)
            rc = pl_gwq_history_add(pl_gw.db, m->id, PL_GW_SENT,
                                    pl_gw.c.instance, detail);
    } else if (rc == PL_OK) {
        /* Another channel (SMS): queued there, the links in its text. */
        char now[24];
        snprintf(now, sizeof(now), "%lld", (long long)pl_gw_now());
        rc = run_sql(d,
                     "UPDATE messages SET dest = dst_channel, state ="
                     " 'queued', pending = 1, lease_owner = NULL,"
                     " lease_until = 0, attempts = 0, links = ?, text = ?,"
                     " next_attempt = CAST(? AS INTEGER) WHERE id = ?",
                     lk, text, now, m->id);
        snprintf(detail, sizeof(detail), "%zu file%s stored; to %s", nurl,
                 nurl == 1 ? "" : "s", m->dst_channel);
        if (rc == PL_OK)
            rc = pl_gwq_history_add(pl_gw.db, m->id, PL_GW_QUEUED,
                                    pl_gw.c.instance, detail);
    }
    if (rc == PL_OK)
        delete_parts(m->id);
    if (began)
        rc = pl__gwq_end(pl_gw.db, rc);
    if (rc != PL_OK) {
        if (rc == PL_ECONFLICT)
            pl_log_warn("media", "message %s: lease lost before the end",
                        m->id);
        else
            pl_log_error("media", "message %s: not recorded: %s", m->id,
                         pl_gwq_error(pl_gw.db));
    } else {
        pl_log_debug("media", "message %s: %s", m->id, detail);
    }
    pl_buf_reset(&body);
    pl_buf_reset(&links);
}

static void part_done(struct pl_work *w)
{
    struct job *j = (struct job *)w;
    j->i++;
    next_part(j);
}

static void part_work(struct pl_work *w)
{
    struct job *j = (struct job *)w;
    struct part *p = &j->parts[j->i];
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db(),
                           "UPDATE media_parts SET url = ?, note = ?,"
                           " data = NULL WHERE id = ? AND n = ?",
                           -1, &st, NULL) != SQLITE_OK)
        return;
    sqlite3_bind_text(st, 1, p->url, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, p->note, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, j->m->id, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 4, p->n);
    if (sqlite3_step(st) != SQLITE_DONE)
        pl_log_error("media", "message %s: part %d not recorded: %s", j->m->id,
                     p->n, pl_gwq_error(pl_gw.db));
    sqlite3_finalize(st);
}

/* Part i is done (url) or dropped (note): recorded, then the next. */
static void part_end(struct job *j, const char *note)
{
    struct part *p = &j->parts[j->i];
    pl_free(p->data);
    p->data = NULL;
    if (note) {
        p->note = pl_strdup(note);
    } else {
        p->url = j->get_url;
        j->get_url = NULL;
    }
    j->w.work = part_work;
    j->w.done = part_done;
    pl_gw_db_submit(&j->w);
}

/* The upload's read state (the part's bytes from off). */
struct reader {
    const unsigned char *p;
    size_t left;
};

static size_t read_cb(char *buf, size_t sz, size_t n, void *ud)
{
    struct reader *r = ud;
    size_t k = sz * n < r->left ? sz * n : r->left;
    memcpy(buf, r->p, k);
    r->p += k;
    r->left -= k;
    return k;
}

static size_t discard(char *p, size_t sz, size_t n, void *ud)
{
    (void)p;
    (void)ud;
    return sz * n;
}

/* The PUT of the current part (a media worker). */
static void put_work(struct pl_work *w)
{
    struct job *j = (struct job *)w;
    struct part *p = &j->parts[j->i];
    CURL *c = curl_easy_init();
    if (!c) {
        j->put_rc = PL_EAGAIN;
        snprintf(j->detail, sizeof(j->detail), "no libcurl handle");
        return;
    }
    struct reader r = {p->data, p->size};
    struct curl_slist *h = NULL;
    char ct[200];
    snprintf(ct, sizeof(ct), "Content-Type: %s", p->type);
    h = curl_slist_append(h, ct);
    h = curl_slist_append(h, "Expect:");
    for (int i = 0; i < 3; i++)
        if (j->hdr[i])
            h = curl_slist_append(h, j->hdr[i]);
    curl_easy_setopt(c, CURLOPT_URL, j->put_url);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(c, CURLOPT_READFUNCTION, read_cb);
    curl_easy_setopt(c, CURLOPT_READDATA, &r);
    curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, (curl_off_t)p->size);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, pl_gw.c.media_timeout_ms);
    CURLcode cc = curl_easy_perform(c);
    long code = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    if (cc == CURLE_OK && code >= 200 && code < 300) {
        j->put_rc = PL_OK;
    } else if (cc == CURLE_OK && code == 413) {
        j->put_rc = PL_ELIMIT;
    } else {
        j->put_rc = PL_EAGAIN;
        if (cc != CURLE_OK)
            snprintf(j->detail, sizeof(j->detail), "PUT: %s",
                     curl_easy_strerror(cc));
        else
            snprintf(j->detail, sizeof(j->detail), "PUT answered %ld", code);
    }
}

static void put_done(struct pl_work *w)
{
    struct job *j = (struct job *)w;
    struct part *p = &j->parts[j->i];
    if (X.stopping) {
        retry(j, "shutting down");
    } else if (j->put_rc == PL_OK) {
        pl_log_debug("media", "message %s: %s stored as %s", j->m->id, p->name,
                     j->get_url);
        part_end(j, NULL);
    } else if (j->put_rc == PL_ELIMIT) {
        struct pl_buf b = {0};
        note_too_large(&b, p->name, p->size);
        part_end(j, pl_buf_cstr(&b));
        pl_buf_reset(&b);
    } else {
        char why[sizeof(j->detail)];
        snprintf(why, sizeof(why), "%s", j->detail);
        retry(j, why);
    }
}

/* A slot's header value is fit for an HTTP field (no CR, LF, NUL). */
static char *header(const char *name, const char *value)
{
    if (!value || strpbrk(value, "\r\n"))
        return NULL;
    size_t n = strlen(name) + strlen(value) + 3;
    char *s = pl_malloc(n);
    snprintf(s, n, "%s: %s", name, value);
    return s;
}

static int good_url(const char *u)
{
    if (!u || strlen(u) > MAX_URL ||
        (strncmp(u, "http://", 7) != 0 && strncmp(u, "https://", 8) != 0))
        return 0;
    for (const unsigned char *p = (const unsigned char *)u; *p; p++)
        if (*p <= 0x20 || *p == 0x7f)
            return 0;
    return 1;
}

/* The upload service answered the slot request (loop). */
static void on_slot(struct job *j, struct pl_stanza *st, int ok)
{
    struct pl_node *root = pl_stanza_root(st);
    if (!ok) {
        struct pl_node *e = pl_node_child(root, "error", PL_NS_CLIENT);
        struct pl_node *cond = e ? pl_node_first_elem(e) : NULL;
        if (e && pl_node_child(e, "file-too-large", NS_UPLOAD)) {
            struct pl_buf b = {0};
            note_too_large(&b, j->parts[j->i].name, j->parts[j->i].size);
            part_end(j, pl_buf_cstr(&b));
            pl_buf_reset(&b);
            return;
        }
        if (cond && strcmp(cond->name, "bad-request") == 0) {
            /* This file can never be stored: the others still can. */
            char note[400];
            snprintf(note, sizeof(note),
                     "[attachment %.200s not delivered: refused by the "
                     "file service]",
                     j->parts[j->i].name);
            part_end(j, note);
            return;
        }
        char why[200];
        snprintf(why, sizeof(why), "the upload service refused a slot (%s)",
                 cond ? cond->name : "error");
        retry(j, why);
        return;
    }
    struct pl_node *slot = pl_node_child(root, "slot", NS_UPLOAD);
    struct pl_node *put = slot ? pl_node_child(slot, "put", NS_UPLOAD) : NULL;
    struct pl_node *get = slot ? pl_node_child(slot, "get", NS_UPLOAD) : NULL;
    const char *pu = put ? pl_node_attr(put, "url") : NULL;
    const char *gu = get ? pl_node_attr(get, "url") : NULL;
    if (!good_url(pu) || !good_url(gu)) {
        retry(j, "the upload service gave no usable slot");
        return;
    }
    j->put_url = pl_strdup(pu);
    j->get_url = pl_strdup(gu);
    /* XEP-0363 §4: only Authorization, Cookie and Expires are allowed. */
    int k = 0;
    for (struct pl_node *h = pl_node_first_elem(put); h && k < 3;
         h = pl_node_next_elem(h)) {
        const char *name = pl_node_attr(h, "name");
        if (strcmp(h->name, "header") != 0 || !name ||
            (strcasecmp(name, "Authorization") != 0 &&
             strcasecmp(name, "Cookie") != 0 &&
             strcasecmp(name, "Expires") != 0))
            continue;
        char *v = header(name, pl_node_text(st, h, NULL));
        if (v)
            j->hdr[k++] = v;
    }
    j->w.work = put_work;
    j->w.done = put_done;
    pl_workq_submit(X.q, pl_gw.loop, &j->w);
}

int pl_gw_media_iq(struct pl_stanza *st)
{
    const char *id = pl_stanza_attr(st, "id");
    const char *type = pl_stanza_attr(st, "type");
    if (!X.cur || !X.slot_id[0] || !id || !type || strcmp(id, X.slot_id) != 0 ||
        strcmp(pl_stanza_name(st), "iq") != 0)
        return 0;
    const char *from = pl_stanza_attr(st, "from");
    if (!from || strcmp(from, pl_gw.c.media_service) != 0)
        return 0;
    int ok = strcmp(type, "result") == 0;
    if (!ok && strcmp(type, "error") != 0)
        return 0;
    X.slot_id[0] = '\0';
    pl_timer_stop(&X.timeout);
    on_slot(X.cur, st, ok);
    return 1;
}

static void on_timeout(struct pl_timer *t)
{
    (void)t;
    X.slot_id[0] = '\0';
    if (X.cur)
        retry(X.cur, "the upload service did not answer");
}

/* Asks for a slot for the next part not stored, or ends the message. */
static void next_part(struct job *j)
{
    while (j->i < j->nparts && (j->parts[j->i].url || j->parts[j->i].note))
        j->i++;
    if (X.stopping) {
        retry(j, "shutting down");
        return;
    }
    if (j->i == j->nparts) {
        j->w.work = finish_work;
        j->w.done = end_done;
        pl_gw_db_submit(&j->w);
        return;
    }
    struct part *p = &j->parts[j->i];
    pl_free(j->put_url);
    pl_free(j->get_url);
    j->put_url = j->get_url = NULL;
    for (int i = 0; i < 3; i++) {
        pl_free(j->hdr[i]);
        j->hdr[i] = NULL;
    }
    X.slot_id[0] = 'm';
    pl_gw_new_id(X.slot_id + 1);
    struct pl_stanza *iq = pl_stanza_new("iq", PL_NS_CLIENT);
    pl_stanza_set_attr(iq, "type", "get");
    pl_stanza_set_attr(iq, "id", X.slot_id);
    pl_stanza_set_attr(iq, "from", pl_gw.c.mail_domain);
    pl_stanza_set_attr(iq, "to", pl_gw.c.media_service);
    struct pl_node *r = pl_node_add_child(iq, pl_stanza_root(iq), "request",
                                          NS_UPLOAD);
    char size[24];
    snprintf(size, sizeof(size), "%zu", p->size);
    pl_node_set_attr(iq, r, "filename", p->name);
    pl_node_set_attr(iq, r, "size", size);
    pl_node_set_attr(iq, r, "content-type", p->type);
    int rc = pl_gwc_send(iq);
    pl_stanza_unref(iq);
    if (rc != PL_OK) {
        X.slot_id[0] = '\0';
        retry(j, "no component link to parleyd");
        return;
    }
    pl_timer_start(pl_gw.loop, &X.timeout, (uint64_t)pl_gw.c.media_timeout_ms);
}

static void claim_work(struct pl_work *w)
{
    struct job *j = (struct job *)w;
    struct pl_gw_msg **v = NULL;
    int n = 0;
    db();
    w->result = pl_gwq_claim(pl_gw.db, "upload", pl_gw.c.instance, pl_gw_now(),
                             pl_gw.c.lease_ms, 1, &v, &n);
    if (w->result != PL_OK || n == 0) {
        pl_free(v);
        return;
    }
    j->m = v[0];
    pl_free(v);
    if (j->m->state == PL_GW_EXPIRED) {
        pl__gw_report_db(j->m, "its expiry passed");
        delete_parts(j->m->id);
        return;
    }
    w->result = load_parts(j);
}

static void claim_done(struct pl_work *w)
{
    struct job *j = (struct job *)w;
    if (w->result != PL_OK || !j->m || j->m->state != PL_GW_SENDING ||
        X.stopping) {
        int again = j->m != NULL && w->result == PL_OK && !X.stopping;
        job_free(j);
        X.busy = 0;
        if (again) { /* an expired one: DSNs to send, maybe more due */
            pl_gw_outbox_kick();
            pl_gw_mail_kick();
            pl_gw_media_kick();
        }
        return;
    }
    X.cur = j;
    next_part(j);
}

void pl_gw_media_kick(void)
{
    if (!X.started || X.busy || X.stopping || !pl_gwc_ready())
        return;
    X.busy = 1;
    struct job *j = pl_calloc(1, sizeof(*j));
    j->w.work = claim_work;
    j->w.done = claim_done;
    pl_gw_db_submit(&j->w);
}

static void on_poll(struct pl_timer *t)
{
    pl_gw_media_kick();
    pl_timer_start(pl_gw.loop, t, (uint64_t)pl_gw.c.poll_ms);
}

/* Parts whose message never got stored (a crash between the two
 * commits) or is gone: removed a day later. */
static void sweep_work(struct pl_work *w)
{
    char at[24];
    snprintf(at, sizeof(at), "%lld", (long long)(pl_gw_now() - 86400000));
    run_sql(db(),
            "DELETE FROM media_parts WHERE created < CAST(? AS INTEGER) AND"
            " id NOT IN (SELECT id FROM messages WHERE pending = 1)",
            at, NULL, NULL, NULL);
    (void)w;
}

static void sweep_done(struct pl_work *w)
{
    pl_free(w);
}

int pl_gw_media_start(void)
{
    if (!enabled())
        return PL_OK;
    X.q = pl_workq_new("gw-media", (int)pl_gw.c.media_workers, NULL, NULL);
    pl_timer_init(&X.poll, on_poll, NULL);
    pl_timer_init(&X.timeout, on_timeout, NULL);
    pl_timer_start(pl_gw.loop, &X.poll, 0);
    struct pl_work *w = pl_calloc(1, sizeof(*w));
    w->work = sweep_work;
    w->done = sweep_done;
    pl_gw_db_submit(w);
    X.started = 1;
    return PL_OK;
}

void pl_gw_media_stop(void)
{
    if (!X.started)
        return;
    X.stopping = 1;
    pl_timer_stop(&X.poll);
    pl_timer_stop(&X.timeout);
    if (X.cur && X.slot_id[0]) {
        /* Waiting for a slot: the lease runs out, another instance (or
         * this one restarted) goes on from the parts recorded. */
        X.slot_id[0] = '\0';
        job_free(X.cur);
        X.cur = NULL;
    }
    pl_workq_free(X.q);
    X.q = NULL;
}

/* ---- links in IM messages ---- */

char *pl_gw_media_oob(struct pl_stanza *st)
{
    struct pl_buf b = {0};
    long n = 0;
    for (struct pl_node *x = pl_node_first_elem(pl_stanza_root(st));
         x && n < pl_gw.c.media_max_count; x = pl_node_next_elem(x)) {
        if (strcmp(x->name, "x") != 0 || strcmp(x->ns, NS_OOB) != 0)
            continue;
        struct pl_node *u = pl_node_child(x, "url", NS_OOB);
        const char *url = u ? pl_node_text(st, u, NULL) : NULL;
        if (!good_url(url))
            continue;
        add_line(&b, url);
        n++;
    }
    if (!b.len)
        return NULL;
    char *s = pl_strdup(pl_buf_cstr(&b));
    pl_buf_reset(&b);
    return s;
}

char *pl_gw_media_text(const char *text, size_t len, const char *links)
{
    struct pl_buf b = {0};
    pl_buf_append(&b, text, len);
    char *t = pl_strndup(text, len);
    for (const char *p = links; p && *p;) {
        size_t n = strcspn(p, "\n");
        char *u = pl_strndup(p, n);
        if (!strstr(t, u)) {
            if (b.len)
                pl_buf_append_str(&b, " ");
            pl_buf_append_str(&b, u);
        }
        pl_free(u);
        p += n + (p[n] == '\n');
    }
    pl_free(t);
    char *s = pl_strdup(pl_buf_cstr(&b));
    pl_buf_reset(&b);
    return s;
}

/* ---- fetching linked files for e-mail (an SMTP worker) ---- */

/* Whether url lies under one of media.fetch_from (comma list of base
 * URLs): the prefix must match and end at a '/' boundary, so
 * "http://h:1" does not admit "http://h:12/" or "http://h:1@evil/". */
int pl__gw_media_fetch_allowed(const char *url)
{
    const char *p = pl_gw.c.media_fetch_from;
    if (strstr(url, "/..") || strstr(url, "/%2e") || strstr(url, "/%2E"))
        return 0;
    while (*p) {
        while (*p == ' ' || *p == ',')
            p++;
        size_t n = strcspn(p, ", ");
        if (n && strncmp(url, p, n) == 0) {
            /* The prefix must cover the whole authority: the URL's path
             * starts inside it or right after it. */
            const char *auth = strstr(url, "://");
            const char *path = auth ? strchr(auth + 3, '/') : NULL;
            if (path && (size_t)(path - url) <= n &&
                (p[n - 1] == '/' || url[n] == '/' || url[n] == '\0'))
                return 1;
        }
        p += n;
    }
    return 0;
}

struct sink {
    unsigned char *data;
    size_t len, max;
    int over;
};

static size_t on_body(char *p, size_t sz, size_t n, void *ud)
{
    struct sink *s = ud;
    size_t k = sz * n;
    if (s->len + k > s->max) {
        s->over = 1;
        return 0;
    }
    s->data = pl_realloc(s->data, s->len + k + 1);
    memcpy(s->data + s->len, p, k);
    s->len += k;
    return k;
}

/* The last path segment of url, percent-decoded (a file name). */
static char *url_name(const char *url)
{
    const char *e = url + strcspn(url, "?#");
    const char *s = e;
    while (s > url && s[-1] != '/')
        s--;
    struct pl_buf b = {0};
    for (const char *p = s; p < e; p++) {
        int h1, h2;
        if (*p == '%' && e - p >= 3 && sscanf(p + 1, "%1x%1x", &h1, &h2) == 2) {
            unsigned char c = (unsigned char)(h1 * 16 + h2);
            if (c >= 0x20 && c != '/' && c != '\\' && c != 0x7f)
                pl_buf_append(&b, &c, 1);
            p += 2;
        } else {
            pl_buf_append(&b, p, 1);
        }
    }
    char *r = pl_strdup(b.len ? pl_buf_cstr(&b) : "file");
    pl_buf_reset(&b);
    return r;
}

/* One GET: PL_OK (bytes in s), PL_ELIMIT (too large), PL_ENOT_FOUND
 * (4xx: gone), PL_EAGAIN (no answer, 5xx). */
static int fetch(const char *url, struct sink *s, char **type, char *why,
                 size_t whylen)
{
    CURL *c = curl_easy_init();
    if (!c) {
        snprintf(why, whylen, "no libcurl handle");
        return PL_EAGAIN;
    }
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(c, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)s->max);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, s);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, pl_gw.c.media_timeout_ms);
    CURLcode cc = curl_easy_perform(c);
    long code = 0;
    char *ct = NULL;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &ct);
    if (ct && strlen(ct) < 128 && !strpbrk(ct, "\r\n"))
        *type = pl_strndup(ct, strcspn(ct, "; "));
    curl_easy_cleanup(c);
    if (s->over || cc == CURLE_FILESIZE_EXCEEDED)
        return PL_ELIMIT;
    if (cc == CURLE_OK && code == 200)
        return PL_OK;
    if (cc == CURLE_OK && code >= 400 && code < 500 && code != 408 &&
        code != 429) {
        snprintf(why, whylen, "%ld", code);
        return PL_ENOT_FOUND;
    }
    if (cc != CURLE_OK)
        snprintf(why, whylen, "%s", curl_easy_strerror(cc));
    else
        snprintf(why, whylen, "HTTP %ld", code);
    return PL_EAGAIN;
}

int pl__gw_media_fetch(const char *text, const char *links,
                       struct pl_gw_media_files *f, char *why, size_t whylen)
{
    memset(f, 0, sizeof(*f));
    struct pl_buf t = {0};
    pl_buf_append_str(&t, text);
    int rc = PL_OK;
    for (const char *p = links; p && *p && rc == PL_OK;) {
        size_t n = strcspn(p, "\n");
        char *url = pl_strndup(p, n);
        p += n + (p[n] == '\n');
        if (!good_url(url)) {
            pl_free(url);
            continue;
        }
        f->links = pl_realloc(f->links, (f->nlinks + 1) * sizeof(*f->links));
        struct pl_mail_link *l = &f->links[f->nlinks++];
        memset(l, 0, sizeof(*l));
        l->url = url;
        l->name = url_name(url);
        if (!pl_gw.c.media_fetch_from[0] || !pl__gw_media_fetch_allowed(url))
            continue;
        struct sink s = {NULL, 0, (size_t)pl_gw.c.media_max_size, 0};
        char *type = NULL, err[256] = "";
        int r = fetch(url, &s, &type, err, sizeof(err));
        if (r == PL_OK) {
            f->att = pl_realloc(f->att, (f->natt + 1) * sizeof(*f->att));
            struct pl_mail_attachment *a = &f->att[f->natt++];
            a->name = pl_strdup(l->name);
            a->type = type ? type : pl_strdup("application/octet-stream");
            a->data = s.data ? s.data : pl_calloc(1, 1);
            a->len = s.len;
            l->type = a->type;
            l->size = s.len;
            continue;
        }
        pl_free(type);
        pl_free(s.data);
        if (r == PL_ELIMIT) {
            char lim[32];
            human_size(lim, sizeof(lim), (size_t)pl_gw.c.media_max_size);
            char note[300];
            snprintf(note, sizeof(note),
                     "[%s not attached: larger than %s; use the link]", l->name,
                     lim);
            add_line(&t, "");
            add_line(&t, note);
        } else if (r == PL_ENOT_FOUND) {
            char note[300];
            snprintf(note, sizeof(note),
                     "[%s not attached: the file server answered %s]", l->name,
                     err);
            add_line(&t, "");
            add_line(&t, note);
        } else {
            snprintf(why, whylen, "fetching %s: %s", url, err);
            rc = PL_EAGAIN;
        }
    }
    f->text = pl_strdup(pl_buf_cstr(&t));
    pl_buf_reset(&t);
    if (rc != PL_OK)
        pl__gw_media_files_free(f);
    return rc;
}

void pl__gw_media_files_free(struct pl_gw_media_files *f)
{
    for (size_t i = 0; i < f->nlinks; i++) {
        pl_free((char *)f->links[i].url);
        pl_free((char *)f->links[i].name);
    }
    pl_free(f->links);
    for (size_t i = 0; i < f->natt; i++) {
        pl_free(f->att[i].name);
        pl_free(f->att[i].type);
        pl_free(f->att[i].data);
    }
    pl_free(f->att);
    pl_free(f->text);
    memset(f, 0, sizeof(*f));
}
