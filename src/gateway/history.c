/*
 * history.c - every state change of every message, and the two views
 * operators have of the queues (queue.h): a message's trace and the
 * depth per destination.
 *
 * `parleyctl gateway queue` and `parleyctl gateway trace ID` call these
 * on a read-only connection to the gateway's SQLite file, not through an
 * admin socket: the queue is shared by every instance (on one host or
 * several, over a shared file), so the file is the one place that sees
 * all of them, and it answers even when no instance is running, which
 * is exactly when an operator wants to know what is stuck.  WAL mode lets
 * the reader run beside the writers without blocking them.
 */
#include <sqlite3.h>
#include <stddef.h>

#include "error.h"
#include "gateway/queue.h"

int pl_gwq_history_add(struct pl_gwq *q, const char *id, int state,
                       const char *instance, const char *detail)
{
    static const char sql[] = "INSERT INTO history(id, at, state, instance,"
                              " detail) VALUES(?,?,?,?,?)";
    sqlite3_stmt *st = pl__gwq_stmt(q, sql);
    if (!st)
        return PL_ESTORAGE;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 2, pl_gw_now());
    sqlite3_bind_text(st, 3, pl_gw_state_name(state), -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, instance, -1, SQLITE_TRANSIENT);
    if (detail)
        sqlite3_bind_text(st, 5, detail, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(st);
    pl__gwq_release(q, st);
    return rc == SQLITE_DONE ? PL_OK : PL_ESTORAGE;
}

int pl_gwq_history_note(struct pl_gwq *q, const char *id, const char *instance,
                        const char *detail)
{
    /* One statement: the state is read where the row is written (no
     * message fetched for it). */
    static const char sql[] = "INSERT INTO history(id, at, state, instance,"
                              " detail) SELECT id, ?, state, ?, ?"
                              " FROM messages WHERE id = ?";
    sqlite3_stmt *st = pl__gwq_stmt(q, sql);
    if (!st)
        return PL_ESTORAGE;
    sqlite3_bind_int64(st, 1, pl_gw_now());
    sqlite3_bind_text(st, 2, instance, -1, SQLITE_TRANSIENT);
    if (detail)
        sqlite3_bind_text(st, 3, detail, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 4, id, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(st);
    pl__gwq_release(q, st);
    if (rc != SQLITE_DONE)
        return PL_ESTORAGE;
    return sqlite3_changes(pl__gwq_db(q)) > 0 ? PL_OK : PL_ENOT_FOUND;
}

int pl_gwq_trace(struct pl_gwq *q, const char *id, pl_gwq_trace_fn *fn,
                 void *ud)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(pl__gwq_db(q),
                           "SELECT at, state, instance, detail FROM history"
                           " WHERE id = ? ORDER BY seq",
                           -1, &st, NULL) != SQLITE_OK)
        return PL_ESTORAGE;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
    int n = 0, s;
    while ((s = sqlite3_step(st)) == SQLITE_ROW) {
        const unsigned char *d = sqlite3_column_text(st, 3);
        fn(ud, sqlite3_column_int64(st, 0),
           (const char *)sqlite3_column_text(st, 1),
           (const char *)sqlite3_column_text(st, 2), d ? (const char *)d : "");
        n++;
    }
    sqlite3_finalize(st);
    if (s != SQLITE_DONE)
        return PL_ESTORAGE;
    return n ? PL_OK : PL_ENOT_FOUND;
}

int pl_gwq_depth(struct pl_gwq *q, pl_gwq_depth_fn *fn, void *ud)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(pl__gwq_db(q),
                           "SELECT dest, state, count(*), min(created)"
                           " FROM messages WHERE state IN ('accepted',"
                           " 'queued', 'sending', 'sent')"
                           " GROUP BY dest, state ORDER BY dest, state",
                           -1, &st, NULL) != SQLITE_OK)
        return PL_ESTORAGE;
    int s;
    while ((s = sqlite3_step(st)) == SQLITE_ROW)
        fn(ud, (const char *)sqlite3_column_text(st, 0),
           (const char *)sqlite3_column_text(st, 1),
           (long)sqlite3_column_int64(st, 2), sqlite3_column_int64(st, 3));
    sqlite3_finalize(st);
    return s == SQLITE_DONE ? PL_OK : PL_ESTORAGE;
}
