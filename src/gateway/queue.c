/*
 * queue.c - the SQLite queues, leases, outbox, links (queue.h).
 *
 * Schema (user_version 2): messages (one row per message, `pending` = 1
 * while it waits to be handed over), parts (one row per delivery report
 * of a part, so a repeated report counts once), history (history.c),
 * outbox, links, peers.  Every write that must be atomic runs inside
 * BEGIN IMMEDIATE, which takes SQLite's write lock up front: two
 * instances claiming at once serialize on it (busy_timeout waits), and
 * neither can read rows the other is about to take.
 */
#include <openssl/rand.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "error.h"
#include "gateway/queue.h"
#include "log.h"

#define STMT_CACHE 96

struct pl_gwq {
    sqlite3 *db; /* the connection */
    int batch;   /* pl_gwq_batch_begin() opened the transaction */
    int sp;      /* savepoints open inside it */
    /* Prepared statements, by the address of their SQL text (every
     * caller passes a string literal): compiling a statement cost more
     * than running it, some twenty times per SMS. */
    struct {
        const char *sql;
        sqlite3_stmt *st;
    } cache[STMT_CACHE];
    int ncache;
};

static const char *const state_names[PL_GW_NSTATES] = {
    "accepted",  "queued", "sending", "sent",
    "delivered", "failed", "expired", "refused",
};

const char *pl_gw_state_name(int state)
{
    return state >= 0 && state < PL_GW_NSTATES ? state_names[state] : NULL;
}

int pl_gw_state_parse(const char *s)
{
    for (int i = 0; i < PL_GW_NSTATES; i++)
        if (s && strcmp(s, state_names[i]) == 0)
            return i;
    return -1;
}

int pl_gw_state_is_final(int state)
{
    return state == PL_GW_DELIVERED || state == PL_GW_FAILED ||
           state == PL_GW_EXPIRED || state == PL_GW_REFUSED;
}

/* The first 6 bytes are the time in ms (big-endian), the other 10
 * random: ids made one after the other sort together, so the indexes on
 * them (messages, history, parts) grow at their right end instead of
 * dirtying a random page each per message, which every commit then
 * writes to the WAL.  80 random bits keep ids unique and unguessable
 * (a delivery report names its message by id). */
void pl_gw_new_id(char id[PL_GW_ID_LEN + 1])
{
    unsigned char r[PL_GW_ID_LEN / 2];
    if (RAND_bytes(r, sizeof(r)) != 1)
        pl_assert(!"RAND_bytes failed");
    uint64_t now = (uint64_t)pl_gw_now();
    for (int i = 0; i < 6; i++)
        r[i] = (unsigned char)(now >> (8 * (5 - i)));
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < sizeof(r); i++) {
        id[2 * i] = hex[r[i] >> 4];
        id[2 * i + 1] = hex[r[i] & 15];
    }
    id[PL_GW_ID_LEN] = '\0';
}

void pl_gw_msg_free(struct pl_gw_msg *m)
{
    if (!m)
        return;
    pl_free(m->dest);
    pl_free(m->src_channel);
    pl_free(m->src_addr);
    pl_free(m->dst_channel);
    pl_free(m->dst_addr);
    pl_free(m->sender_msgid);
    pl_free(m->return_path);
    pl_free(m->orig_headers);
    pl_free(m->orig_rcpt);
    pl_free(m->text);
    pl_free(m->subject);
    pl_free(m->links);
    pl_free(m);
}

int64_t pl_gw_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static const char SCHEMA[] =
    "CREATE TABLE IF NOT EXISTS messages("
    " id TEXT PRIMARY KEY, dest TEXT NOT NULL,"
    " src_channel TEXT NOT NULL, src_addr TEXT NOT NULL,"
    " dst_channel TEXT NOT NULL, dst_addr TEXT NOT NULL,"
    " sender_msgid TEXT, want_receipt INTEGER NOT NULL DEFAULT 0,"
    " text TEXT NOT NULL, subject TEXT, links TEXT,"
    " created INTEGER NOT NULL, expires INTEGER NOT NULL,"
    " next_attempt INTEGER NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,"
    " state TEXT NOT NULL, pending INTEGER NOT NULL DEFAULT 1,"
    " lease_owner TEXT, lease_until INTEGER NOT NULL DEFAULT 0,"
    " parts INTEGER NOT NULL DEFAULT 0,"
    " parts_done INTEGER NOT NULL DEFAULT 0,"
    " return_path TEXT, orig_headers TEXT, orig_rcpt TEXT);"
    "CREATE INDEX IF NOT EXISTS messages_due"
    " ON messages(dest, pending, next_attempt);"
    "CREATE INDEX IF NOT EXISTS messages_sender"
    " ON messages(src_addr, sender_msgid) WHERE sender_msgid IS NOT NULL;"
    "CREATE TABLE IF NOT EXISTS parts(id TEXT NOT NULL, part INTEGER NOT NULL,"
    " ok INTEGER NOT NULL, PRIMARY KEY(id, part));"
    "CREATE TABLE IF NOT EXISTS history(seq INTEGER PRIMARY KEY,"
    " id TEXT NOT NULL, at INTEGER NOT NULL, state TEXT NOT NULL,"
    " instance TEXT NOT NULL, detail TEXT);"
    "CREATE INDEX IF NOT EXISTS history_id ON history(id, seq);"
    "CREATE TABLE IF NOT EXISTS outbox(seq INTEGER PRIMARY KEY,"
    " xml TEXT NOT NULL, lease_owner TEXT,"
    " lease_until INTEGER NOT NULL DEFAULT 0);"
    "CREATE TABLE IF NOT EXISTS links(channel TEXT NOT NULL,"
    " jid TEXT NOT NULL, address TEXT NOT NULL, code TEXT,"
    " verified INTEGER NOT NULL, expires INTEGER NOT NULL,"
    " PRIMARY KEY(channel, jid));"
    "CREATE TABLE IF NOT EXISTS peers(address TEXT PRIMARY KEY,"
    " jid TEXT NOT NULL, at INTEGER NOT NULL,"
    " channel TEXT NOT NULL DEFAULT 'im');"
    "PRAGMA user_version = 2;";

/* Version 1 files: the columns version 2 added (an error when they are
 * there already is ignored). */
static const char *const MIGRATE[] = {
    "ALTER TABLE messages ADD COLUMN return_path TEXT",
    "ALTER TABLE messages ADD COLUMN orig_headers TEXT",
    "ALTER TABLE messages ADD COLUMN orig_rcpt TEXT",
    /* peers.channel: who last wrote to a number may be an e-mail
     * address (route.c); rows from before are IM users. */
    "ALTER TABLE peers ADD COLUMN channel TEXT NOT NULL DEFAULT 'im'",
};

struct sqlite3 *pl__gwq_db(struct pl_gwq *q)
{
    return q->db;
}

const char *pl_gwq_error(struct pl_gwq *q)
{
    return sqlite3_errmsg(q->db);
}

int pl_gwq_open(const char *path, int readonly, struct pl_gwq **out)
{
    /* No allocation statistics: each SQLite malloc and free would take a
     * global mutex for them (refused, harmlessly, once SQLite is up). */
    sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
    sqlite3 *db = NULL;
    int flags = readonly ? SQLITE_OPEN_READONLY
                         : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
    if (sqlite3_open_v2(path, &db, flags | SQLITE_OPEN_NOMUTEX, NULL) !=
        SQLITE_OK) {
        sqlite3_close(db);
        return PL_ESTORAGE;
    }
    sqlite3_busy_timeout(db, 10000);
    if (!readonly &&
        (sqlite3_exec(db, "PRAGMA journal_mode=WAL;", NULL, NULL, NULL) !=
             SQLITE_OK ||
         sqlite3_exec(db, "PRAGMA synchronous=FULL;", NULL, NULL, NULL) !=
             SQLITE_OK ||
         sqlite3_exec(db, SCHEMA, NULL, NULL, NULL) != SQLITE_OK)) {
        sqlite3_close(db);
        return PL_ESTORAGE;
    }
    for (size_t i = 0; !readonly && i < sizeof(MIGRATE) / sizeof(*MIGRATE); i++)
        sqlite3_exec(db, MIGRATE[i], NULL, NULL, NULL);
    struct pl_gwq *q = pl_calloc(1, sizeof(*q));
    q->db = db;
    *out = q;
    return PL_OK;
}

void pl_gwq_close(struct pl_gwq *q)
{
    if (!q)
        return;
    for (int i = 0; i < q->ncache; i++)
        sqlite3_finalize(q->cache[i].st);
    sqlite3_close(q->db);
    pl_free(q);
}

/* ---- helpers ---- */

/* One statement of no rows (BEGIN, SAVEPOINT, RELEASE, COMMIT...), from
 * the statement cache: every job of a batch opens and releases a
 * savepoint, which sqlite3_exec() would compile each time. */
static int exec(struct pl_gwq *q, const char *sql)
{
    sqlite3_stmt *st = pl__gwq_stmt(q, sql);
    if (!st)
        return PL_ESTORAGE;
    int rc = sqlite3_step(st);
    pl__gwq_release(q, st);
    return rc == SQLITE_DONE ? PL_OK : PL_ESTORAGE;
}

/* A function's own transaction, or a savepoint inside the batch's
 * (group commit): then an error undoes this function's writes only. */
static int begin(struct pl_gwq *q)
{
    if (!pl_gwq_in_batch(q))
        return exec(q, "BEGIN IMMEDIATE");
    int rc = exec(q, "SAVEPOINT gwq");
    if (rc == PL_OK)
        q->sp++;
    return rc;
}

static int end(struct pl_gwq *q, int rc)
{
    if (q->sp > 0) {
        q->sp--;
        if (rc != PL_OK)
            exec(q, "ROLLBACK TO gwq");
        if (exec(q, "RELEASE gwq") != PL_OK && rc == PL_OK)
            rc = PL_ESTORAGE;
        return rc;
    }
    if (rc == PL_OK && exec(q, "COMMIT") == PL_OK)
        return PL_OK;
    exec(q, "ROLLBACK");
    return rc == PL_OK ? PL_ESTORAGE : rc;
}

int pl_gwq_in_batch(struct pl_gwq *q)
{
    return q->batch && !sqlite3_get_autocommit(q->db);
}

int pl_gwq_batch_begin(struct pl_gwq *q)
{
    q->sp = 0;
    q->batch = exec(q, "BEGIN IMMEDIATE") == PL_OK;
    return q->batch ? PL_OK : PL_ESTORAGE;
}

int pl_gwq_batch_commit(struct pl_gwq *q)
{
    if (!q->batch)
        return PL_OK;
    q->batch = 0;
    q->sp = 0;
    if (sqlite3_get_autocommit(q->db))
        return PL_ESTORAGE; /* an error rolled the transaction back */
    if (exec(q, "COMMIT") == PL_OK)
        return PL_OK;
    exec(q, "ROLLBACK");
    return PL_ESTORAGE;
}

sqlite3_stmt *pl__gwq_stmt(struct pl_gwq *q, const char *sql)
{
    for (int i = 0; i < q->ncache; i++)
        if (q->cache[i].sql == sql)
            return q->cache[i].st;
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v3(q->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st,
                           NULL) != SQLITE_OK)
        return NULL;
    if (q->ncache < STMT_CACHE) {
        q->cache[q->ncache].sql = sql;
        q->cache[q->ncache++].st = st;
    }
    return st;
}

void pl__gwq_release(struct pl_gwq *q, sqlite3_stmt *st)
{
    if (!st)
        return;
    for (int i = 0; i < q->ncache; i++)
        if (q->cache[i].st == st) {
            /* Reset: a statement left mid-way would hold its read
             * snapshot open across transactions. */
            sqlite3_reset(st);
            sqlite3_clear_bindings(st);
            return;
        }
    sqlite3_finalize(st);
}

static void release(struct pl_gwq *q, sqlite3_stmt *st)
{
    pl__gwq_release(q, st);
}

/* Prepares sql (or takes it from the cache) and binds the arguments
 * described by types: 's' text (NULL allowed), 'i' int64, 'n' int.  The
 * caller gives it back with release(). */
static sqlite3_stmt *prepv(struct pl_gwq *q, const char *sql, const char *types,
                           va_list ap)
{
    sqlite3_stmt *st = pl__gwq_stmt(q, sql);
    if (!st)
        return NULL;
    for (int i = 0; types[i]; i++) {
        int rc;
        if (types[i] == 's') {
            const char *s = va_arg(ap, const char *);
            rc = s ? sqlite3_bind_text(st, i + 1, s, -1, SQLITE_TRANSIENT)
                   : sqlite3_bind_null(st, i + 1);
        } else if (types[i] == 'i') {
            rc = sqlite3_bind_int64(st, i + 1, va_arg(ap, int64_t));
        } else {
            rc = sqlite3_bind_int(st, i + 1, va_arg(ap, int));
        }
        if (rc != SQLITE_OK) {
            release(q, st);
            return NULL;
        }
    }
    return st;
}

static sqlite3_stmt *prep(struct pl_gwq *q, const char *sql, const char *types,
                          ...)
{
    va_list ap;
    va_start(ap, types);
    sqlite3_stmt *st = prepv(q, sql, types, ap);
    va_end(ap);
    return st;
}

/* Runs a statement that returns no rows; *changes gets the row count. */
static int run(struct pl_gwq *q, int *changes, const char *sql,
               const char *types, ...)
{
    va_list ap;
    va_start(ap, types);
    sqlite3_stmt *st = prepv(q, sql, types, ap);
    va_end(ap);
    if (!st)
        return PL_ESTORAGE;
    int rc = sqlite3_step(st);
    release(q, st);
    if (changes)
        *changes = sqlite3_changes(q->db);
    return rc == SQLITE_DONE ? PL_OK : PL_ESTORAGE;
}

static char *col_str(sqlite3_stmt *st, int i)
{
    const unsigned char *s = sqlite3_column_text(st, i);
    return s ? pl_strdup((const char *)s) : NULL;
}

#define MSG_COLS                                                               \
    "id, dest, src_channel, src_addr, dst_channel, dst_addr, sender_msgid,"    \
    " want_receipt, text, subject, links, created, expires, next_attempt,"     \
    " attempts, state, parts, parts_done, return_path, orig_headers,"          \
    " orig_rcpt"

static struct pl_gw_msg *row_to_msg(sqlite3_stmt *st)
{
    struct pl_gw_msg *m = pl_calloc(1, sizeof(*m));
    const unsigned char *id = sqlite3_column_text(st, 0);
    snprintf(m->id, sizeof(m->id), "%s", id ? (const char *)id : "");
    m->dest = col_str(st, 1);
    m->src_channel = col_str(st, 2);
    m->src_addr = col_str(st, 3);
    m->dst_channel = col_str(st, 4);
    m->dst_addr = col_str(st, 5);
    m->sender_msgid = col_str(st, 6);
    m->want_receipt = sqlite3_column_int(st, 7);
    m->text = col_str(st, 8);
    m->subject = col_str(st, 9);
    m->links = col_str(st, 10);
    m->created = sqlite3_column_int64(st, 11);
    m->expires = sqlite3_column_int64(st, 12);
    m->next_attempt = sqlite3_column_int64(st, 13);
    m->attempts = sqlite3_column_int(st, 14);
    m->state = pl_gw_state_parse((const char *)sqlite3_column_text(st, 15));
    m->parts = sqlite3_column_int(st, 16);
    m->parts_done = sqlite3_column_int(st, 17);
    m->return_path = col_str(st, 18);
    m->orig_headers = col_str(st, 19);
    m->orig_rcpt = col_str(st, 20);
    return m;
}

/* Steps st to its first row: PL_OK with the row there, PL_ENOT_FOUND
 * when there is none, PL_ESTORAGE on a step error. */
static int step_one(sqlite3_stmt *st)
{
    int s = sqlite3_step(st);
    return s == SQLITE_ROW    ? PL_OK
           : s == SQLITE_DONE ? PL_ENOT_FOUND
                              : PL_ESTORAGE;
}

/* Steps st to its end and returns an array of size-byte elements, one a
 * row, each filled from its row by fill (the caller frees the array and
 * what fill put in it); *k gets their number.  On a step error *rc is
 * PL_ESTORAGE and the rows collected so far are kept. */
static void *collect(sqlite3_stmt *st, size_t size,
                     void (*fill)(sqlite3_stmt *st, void *elem), int *k,
                     int *rc)
{
    char *v = NULL;
    for (;;) {
        int s = sqlite3_step(st);
        if (s == SQLITE_DONE)
            return v;
        if (s != SQLITE_ROW) {
            *rc = PL_ESTORAGE;
            return v;
        }
        v = pl_realloc(v, (size_t)(*k + 1) * size);
        fill(st, v + (size_t)*k * size);
        (*k)++;
    }
}

static void msg_row(sqlite3_stmt *st, void *elem)
{
    *(struct pl_gw_msg **)elem = row_to_msg(st);
}

static void out_row(sqlite3_stmt *st, void *elem)
{
    struct pl_gwq_out *o = elem;
    o->seq = sqlite3_column_int64(st, 0);
    o->xml = col_str(st, 1);
}

static int set_state(struct pl_gwq *q, const char *id, int state,
                     const char *instance, const char *detail, int pending)
{
    int rc = run(q, NULL,
                 "UPDATE messages SET state = ?, pending = ?, "
                 "lease_owner = NULL, lease_until = 0 WHERE id = ?",
                 "sns", pl_gw_state_name(state), pending, id);
    if (rc == PL_OK)
        rc = pl_gwq_history_add(q, id, state, instance, detail);
    return rc;
}

/* ---- messages ---- */

/* The message an IM sender's stanza already became: parleyd sends a
 * stanza again when the link it went down died before acknowledging it
 * (XEP-0198), and the instance may have committed it.  Same sender (full
 * JID), stanza id, recipient and text within the window: the same
 * stanza.  *dup gets its id ("" if none) and *state its state. */
static int find_dup(struct pl_gwq *q, const struct pl_gw_msg *m,
                    char dup[PL_GW_ID_LEN + 1], int *state)
{
    dup[0] = '\0';
    if (!m->sender_msgid || strcmp(m->src_channel, "im") != 0)
        return PL_OK;
    sqlite3_stmt *st = prep(q,
                            "SELECT id, state FROM messages"
                            " WHERE src_addr = ? AND sender_msgid = ?"
                            " AND src_channel = 'im' AND dst_addr = ?"
                            " AND text = ? AND created >= ? LIMIT 1",
                            "ssssi", m->src_addr, m->sender_msgid, m->dst_addr,
                            m->text,
                            (int64_t)(m->created - PL_GWQ_DUP_WINDOW_MS));
    if (!st)
        return PL_ESTORAGE;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        const unsigned char *id = sqlite3_column_text(st, 0);
        snprintf(dup, PL_GW_ID_LEN + 1, "%s", id ? (const char *)id : "");
        *state = pl_gw_state_parse((const char *)sqlite3_column_text(st, 1));
    }
    release(q, st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? PL_OK : PL_ESTORAGE;
}

int pl__gwq_insert_tx(struct pl_gwq *q, const struct pl_gw_msg *m,
                      const char *instance, const char *refused)
{
    char dup[PL_GW_ID_LEN + 1];
    int dstate = PL_GW_QUEUED;
    int rc = find_dup(q, m, dup, &dstate);
    if (rc == PL_OK && dup[0]) {
        /* Stored already: accepted again, nothing new (the trace says
         * so on the first copy). */
        return pl_gwq_history_add(q, dup, dstate < 0 ? PL_GW_QUEUED : dstate,
                                  instance,
                                  "the same stanza again (parleyd resent it)"
                                  "; dropped");
    }
    if (rc != PL_OK)
        return rc;
    rc = run(q, NULL,
             "INSERT INTO messages(id, dest, src_channel, src_addr,"
             " dst_channel, dst_addr, sender_msgid, want_receipt, text,"
             " subject, links, created, expires, next_attempt, state,"
             " pending, return_path, orig_headers, orig_rcpt)"
             " VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
             "sssssssnsssiiisnsss", m->id, m->dest, m->src_channel, m->src_addr,
             m->dst_channel, m->dst_addr, m->sender_msgid, m->want_receipt,
             m->text ? m->text : "", m->subject, m->links, m->created,
             m->expires, m->next_attempt, refused ? "refused" : "queued",
             refused ? 0 : 1, m->return_path, m->orig_headers, m->orig_rcpt);
    if (rc == PL_OK) {
        char detail[512];
        snprintf(detail, sizeof(detail), "%s %s -> %s %s", m->src_channel,
                 m->src_addr, m->dst_channel, m->dst_addr);
        rc = pl_gwq_history_add(q, m->id, PL_GW_ACCEPTED, instance, detail);
    }
    if (rc == PL_OK)
        rc = pl_gwq_history_add(q, m->id,
                                refused ? PL_GW_REFUSED : PL_GW_QUEUED,
                                instance, refused ? refused : m->dest);
    return rc;
}

int pl__gwq_begin(struct pl_gwq *q)
{
    return begin(q);
}

int pl__gwq_end(struct pl_gwq *q, int rc)
{
    return end(q, rc);
}

int pl_gwq_insert(struct pl_gwq *q, const struct pl_gw_msg *m,
                  const char *instance)
{
    int rc = begin(q);
    if (rc != PL_OK)
        return rc;
    return end(q, pl__gwq_insert_tx(q, m, instance, NULL));
}

int pl_gwq_claim(struct pl_gwq *q, const char *dest, const char *instance,
                 int64_t now, int64_t lease_ms, int max,
                 struct pl_gw_msg ***out, int *n)
{
    int rc = begin(q);
    if (rc != PL_OK)
        return rc;
    struct pl_gw_msg **v = NULL;
    int k = 0;
    sqlite3_stmt *st = prep(q,
                            "SELECT " MSG_COLS " FROM messages"
                            " WHERE dest = ? AND pending = 1"
                            " AND next_attempt <= ? AND lease_until < ?"
                            " ORDER BY next_attempt LIMIT ?",
                            "siin", dest, now, now, max);
    if (!st)
        rc = PL_ESTORAGE;
    if (rc == PL_OK)
        v = collect(st, sizeof(*v), msg_row, &k, &rc);
    release(q, st);
    for (int i = 0; i < k && rc == PL_OK; i++) {
        struct pl_gw_msg *m = v[i];
        char detail[96];
        if (m->expires <= now) {
            /* A message in doubt (its last holder died while sending)
             * expires like any other: never a late first attempt. */
            m->state = PL_GW_EXPIRED;
            rc = set_state(q, m->id, PL_GW_EXPIRED, instance,
                           "expired before it could be sent", 0);
            continue;
        }
        int in_doubt = m->state == PL_GW_SENDING;
        m->attempts++;
        m->state = PL_GW_SENDING;
        rc = run(q, NULL,
                 "UPDATE messages SET state = 'sending', attempts = ?,"
                 " lease_owner = ?, lease_until = ? WHERE id = ?",
                 "nsis", m->attempts, instance, now + lease_ms, m->id);
        snprintf(detail, sizeof(detail), "attempt %d%s", m->attempts,
                 in_doubt ? " (the previous holder's lease ran out)" : "");
        if (rc == PL_OK)
            rc = pl_gwq_history_add(q, m->id, PL_GW_SENDING, instance, detail);
    }
    rc = end(q, rc);
    if (rc != PL_OK) {
        for (int i = 0; i < k; i++)
            pl_gw_msg_free(v[i]);
        pl_free(v);
        return rc;
    }
    *out = v;
    *n = k;
    return PL_OK;
}

/* Whether instance still holds the lease on id: a holder
 * whose lease ran out (it was paused, say) must not overwrite what the
 * next holder did.  PL_ECONFLICT when it lost the lease. */
static int owned(struct pl_gwq *q, const char *id, const char *instance)
{
    sqlite3_stmt *st = prep(q,
                            "SELECT 1 FROM messages WHERE id = ? AND"
                            " lease_owner = ? AND pending = 1",
                            "ss", id, instance);
    if (!st)
        return PL_ESTORAGE;
    int s = sqlite3_step(st);
    release(q, st);
    return s == SQLITE_ROW    ? PL_OK
           : s == SQLITE_DONE ? PL_ECONFLICT
                              : PL_ESTORAGE;
}

int pl_gwq_sent(struct pl_gwq *q, const char *id, const char *instance,
                int parts, const char *detail, int *state)
{
    *state = PL_GW_SENT;
    int rc = begin(q);
    /* One statement for what owned(), two UPDATEs and a get() did: the
     * lease is checked in its WHERE (no row: lost), and it returns how
     * many parts were reported delivered before this commit
     * (pl_gwq_report counted them while the number was not known). */
    int done = 0;
    if (rc == PL_OK) {
        sqlite3_stmt *st = prep(q,
                                "UPDATE messages SET parts = ?, state = 'sent',"
                                " pending = 0, lease_owner = NULL,"
                                " lease_until = 0 WHERE id = ? AND"
                                " lease_owner = ? AND pending = 1"
                                " RETURNING parts_done",
                                "nss", parts, id, instance);
        int s = st ? sqlite3_step(st) : SQLITE_ERROR;
        if (s == SQLITE_ROW) {
            done = sqlite3_column_int(st, 0);
            s = sqlite3_step(st);
            rc = s == SQLITE_DONE ? PL_OK : PL_ESTORAGE;
        } else {
            rc = s == SQLITE_DONE ? PL_ECONFLICT : PL_ESTORAGE;
        }
        release(q, st);
    }
    if (rc == PL_OK)
        rc = pl_gwq_history_add(q, id, PL_GW_SENT, instance, detail);
    if (rc == PL_OK && parts > 0 && done >= parts) {
        rc = set_state(q, id, PL_GW_DELIVERED, instance,
                       "every part was reported delivered", 0);
        *state = PL_GW_DELIVERED;
    }
    rc = end(q, rc);
    if (rc != PL_OK)
        *state = PL_GW_SENT;
    return rc;
}

int pl_gwq_retry(struct pl_gwq *q, const char *id, const char *instance,
                 int64_t next_attempt, const char *detail, int *state)
{
    int rc = begin(q);
    if (rc == PL_OK)
        rc = owned(q, id, instance);
    int64_t expires = 0;
    if (rc == PL_OK) {
        sqlite3_stmt *st = prep(q, "SELECT expires FROM messages WHERE id = ?",
                                "s", id);
        if (st && sqlite3_step(st) == SQLITE_ROW)
            expires = sqlite3_column_int64(st, 0);
        else
            rc = PL_ESTORAGE;
        release(q, st);
    }
    int s = next_attempt >= expires ? PL_GW_EXPIRED : PL_GW_QUEUED;
    if (rc == PL_OK)
        rc = run(q, NULL, "UPDATE messages SET next_attempt = ? WHERE id = ?",
                 "is", next_attempt, id);
    if (rc == PL_OK)
        rc = set_state(q, id, s, instance, detail, s == PL_GW_QUEUED);
    rc = end(q, rc);
    if (rc == PL_OK)
        *state = s;
    return rc;
}

int pl_gwq_finish(struct pl_gwq *q, const char *id, const char *instance,
                  int state, const char *detail)
{
    int rc = begin(q);
    if (rc == PL_OK)
        rc = set_state(q, id, state, instance, detail, 0);
    return end(q, rc);
}

static int get(struct pl_gwq *q, const char *id, struct pl_gw_msg **out)
{
    sqlite3_stmt *st = prep(q,
                            "SELECT " MSG_COLS " FROM messages"
                            " WHERE id = ?",
                            "s", id);
    if (!st)
        return PL_ESTORAGE;
    int rc = step_one(st);
    if (rc == PL_OK)
        *out = row_to_msg(st);
    release(q, st);
    return rc;
}

int pl_gwq_get(struct pl_gwq *q, const char *id, struct pl_gw_msg **out)
{
    return get(q, id, out);
}

int pl_gwq_report(struct pl_gwq *q, const char *id, int part, int ok,
                  const char *instance, const char *detail,
                  struct pl_gw_msg **changed)
{
    *changed = NULL;
    int rc = begin(q);
    if (rc != PL_OK)
        return rc;
    struct pl_gw_msg *m = NULL;
    rc = get(q, id, &m);
    int added = 0;
    if (rc == PL_OK)
        rc = run(q, &added,
                 "INSERT OR IGNORE INTO parts(id, part, ok) VALUES(?,?,?)",
                 "snn", id, part, ok);
    if (rc == PL_OK && added && !pl_gw_state_is_final(m->state)) {
        char d[300];
        snprintf(d, sizeof(d), "part %d: %s", part, detail ? detail : "");
        if (!ok) {
            rc = set_state(q, id, PL_GW_FAILED, instance, d, 0);
            m->state = PL_GW_FAILED;
        } else {
            m->parts_done++;
            rc = run(q, NULL, "UPDATE messages SET parts_done = ? WHERE id = ?",
                     "ns", m->parts_done, id);
            if (rc == PL_OK && m->parts_done >= m->parts && m->parts > 0) {
                rc = set_state(q, id, PL_GW_DELIVERED, instance, d, 0);
                m->state = PL_GW_DELIVERED;
            } else if (rc == PL_OK) {
                rc = pl_gwq_history_add(q, id, m->state, instance, d);
                pl_gw_msg_free(m);
                m = NULL;
            }
        }
    } else if (m) {
        pl_gw_msg_free(m);
        m = NULL;
    }
    rc = end(q, rc);
    if (rc == PL_OK)
        *changed = m;
    else
        pl_gw_msg_free(m);
    return rc;
}

/* ---- outbox ---- */

int pl_gwq_outbox_add(struct pl_gwq *q, const char *xml)
{
    return run(q, NULL, "INSERT INTO outbox(xml) VALUES(?)", "s", xml);
}

int pl_gwq_outbox_claim(struct pl_gwq *q, const char *instance, int64_t now,
                        int64_t lease_ms, int max, struct pl_gwq_out **out,
                        int *n)
{
    int rc = begin(q);
    if (rc != PL_OK)
        return rc;
    struct pl_gwq_out *v = NULL;
    int k = 0;
    sqlite3_stmt *st = prep(q,
                            "SELECT seq, xml FROM outbox WHERE lease_until < ?"
                            " ORDER BY seq LIMIT ?",
                            "in", now, max);
    if (!st)
        rc = PL_ESTORAGE;
    if (rc == PL_OK)
        v = collect(st, sizeof(*v), out_row, &k, &rc);
    release(q, st);
    for (int i = 0; i < k && rc == PL_OK; i++)
        rc = run(q, NULL,
                 "UPDATE outbox SET lease_owner = ?, lease_until = ?"
                 " WHERE seq = ?",
                 "sii", instance, now + lease_ms, v[i].seq);
    rc = end(q, rc);
    if (rc != PL_OK) {
        for (int i = 0; i < k; i++)
            pl_free(v[i].xml);
        pl_free(v);
        return rc;
    }
    *out = v;
    *n = k;
    return PL_OK;
}

int pl_gwq_outbox_done(struct pl_gwq *q, int64_t seq)
{
    return run(q, NULL, "DELETE FROM outbox WHERE seq = ?", "i", seq);
}

int pl_gwq_outbox_release(struct pl_gwq *q, int64_t seq, const char *instance)
{
    return run(q, NULL,
               "UPDATE outbox SET lease_owner = NULL, lease_until = 0"
               " WHERE seq = ? AND lease_owner = ?",
               "is", seq, instance);
}

/* ---- links and peers ---- */

void pl_gwq_link_free(struct pl_gwq_link *l)
{
    if (!l)
        return;
    pl_free(l->jid);
    pl_free(l->address);
    pl_free(l->code);
    pl_free(l);
}

int pl_gwq_link_set(struct pl_gwq *q, const char *channel,
                    const struct pl_gwq_link *l)
{
    return run(q, NULL,
               "INSERT OR REPLACE INTO links(channel, jid, address, code,"
               " verified, expires) VALUES(?,?,?,?,?,?)",
               "ssssni", channel, l->jid, l->address, l->code, l->verified,
               l->expires);
}

int pl_gwq_link_get(struct pl_gwq *q, const char *channel, const char *jid,
                    struct pl_gwq_link **out)
{
    sqlite3_stmt *st = prep(q,
                            "SELECT jid, address, code, verified, expires"
                            " FROM links WHERE channel = ? AND jid = ?",
                            "ss", channel, jid);
    if (!st)
        return PL_ESTORAGE;
    int rc = step_one(st);
    if (rc == PL_OK) {
        struct pl_gwq_link *l = pl_calloc(1, sizeof(*l));
        l->jid = col_str(st, 0);
        l->address = col_str(st, 1);
        l->code = col_str(st, 2);
        l->verified = sqlite3_column_int(st, 3);
        l->expires = sqlite3_column_int64(st, 4);
        *out = l;
    }
    release(q, st);
    return rc;
}

int pl_gwq_link_remove(struct pl_gwq *q, const char *channel, const char *jid)
{
    int n = 0;
    int rc = run(q, &n, "DELETE FROM links WHERE channel = ? AND jid = ?", "ss",
                 channel, jid);
    return rc == PL_OK && n == 0 ? PL_ENOT_FOUND : rc;
}

static int one_string(struct pl_gwq *q, char **out, const char *sql,
                      const char *a, const char *b)
{
    sqlite3_stmt *st = b ? prep(q, sql, "ss", a, b) : prep(q, sql, "s", a);
    if (!st)
        return PL_ESTORAGE;
    int rc = step_one(st);
    if (rc == PL_OK)
        *out = col_str(st, 0);
    release(q, st);
    return rc;
}

int pl_gwq_link_owner(struct pl_gwq *q, const char *channel,
                      const char *address, char **jid)
{
    return one_string(q, jid,
                      "SELECT jid FROM links WHERE channel = ? AND"
                      " address = ? AND verified = 1",
                      channel, address);
}

int pl_gwq_thread_get(struct pl_gwq *q, const char *address, const char *jid,
                      char **msgid)
{
    return one_string(q, msgid,
                      "SELECT sender_msgid FROM messages WHERE"
                      " src_channel = 'mail' AND src_addr = ? AND"
                      " dst_addr = ? AND sender_msgid IS NOT NULL"
                      " ORDER BY created DESC LIMIT 1",
                      address, jid);
}

int pl_gwq_peer_set(struct pl_gwq *q, const char *address, const char *jid,
                    int64_t now)
{
    return pl_gwq_peer_set_in(q, address, "im", jid, now);
}

int pl_gwq_peer_get(struct pl_gwq *q, const char *address, char **jid)
{
    return one_string(q, jid,
                      "SELECT jid FROM peers WHERE address = ?"
                      " AND channel = 'im'",
                      address, NULL);
}

int pl_gwq_peer_set_in(struct pl_gwq *q, const char *address,
                       const char *channel, const char *peer, int64_t now)
{
    return run(q, NULL,
               "INSERT OR REPLACE INTO peers(address, jid, at, channel)"
               " VALUES(?,?,?,?)",
               "ssis", address, peer, now, channel);
}

int pl_gwq_peer_get_in(struct pl_gwq *q, const char *address, char **channel,
                       char **peer)
{
    sqlite3_stmt *st = prep(q,
                            "SELECT channel, jid FROM peers"
                            " WHERE address = ?",
                            "s", address);
    if (!st)
        return PL_ESTORAGE;
    int rc = step_one(st);
    if (rc == PL_OK) {
        *channel = col_str(st, 0);
        *peer = col_str(st, 1);
    }
    release(q, st);
    return rc;
}
