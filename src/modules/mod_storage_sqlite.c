/*
 * mod_storage_sqlite.c - the embedded SQLite storage driver.
 *
 * WAL journal, synchronous per storage.sqlite_synchronous (FULL by
 * default: what is acknowledged survives a power cut), versioned schema
 * migrations applied at open, prepared statements kept for the life of
 * the handle.  Runs only on the storage thread (see storage.h).
 *
 * Accounts: a row in accounts, their SCRAM keys in scram_keys and their
 * digest keys (HA1 per algorithm, for SIP) in digest_keys, all replaced
 * together when a password is set.
 *
 * Extending the schema: append a migration to `migrations`; never edit a
 * released one.
 */
#include <limits.h>
#include <sqlite3.h>
#include <sys/stat.h>

#include "core/modapi.h"

static const char *const migrations[] = {
    /* 1: accounts and their SCRAM keys, per-user documents. */
    "CREATE TABLE accounts (host TEXT NOT NULL, user TEXT NOT NULL,"
    " created INTEGER NOT NULL, PRIMARY KEY (host, user));"
    "CREATE TABLE scram_keys (host TEXT NOT NULL, user TEXT NOT NULL,"
    " hash INTEGER NOT NULL, iterations INTEGER NOT NULL, salt BLOB NOT NULL,"
    " stored_key BLOB NOT NULL, server_key BLOB NOT NULL,"
    " PRIMARY KEY (host, user, hash));"
    "CREATE TABLE kv (host TEXT NOT NULL, user TEXT NOT NULL,"
    " store TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL,"
    " PRIMARY KEY (host, user, store, key));",
    /* 2: directory lookups by store and key across users. */
    "CREATE INDEX kv_by_store ON kv (host, store, key);",
    /* 3: message archives (XEP-0313).  One row per archive (a user's or a
     * room's) with its item count, kept by triggers so that limits and
     * RSM counts cost no scan; items keyed by the rowid (archive order),
     * with an index for each way a page is found: by archive, by peer,
     * by time, and by stanza-id. */
    "CREATE TABLE archives (aid INTEGER PRIMARY KEY, host TEXT NOT NULL,"
    " owner TEXT NOT NULL, kind INTEGER NOT NULL,"
    " n INTEGER NOT NULL DEFAULT 0, UNIQUE (host, owner, kind));"
    "CREATE TABLE archive (id INTEGER PRIMARY KEY, aid INTEGER NOT NULL,"
    " sid TEXT NOT NULL, ts INTEGER NOT NULL, peer TEXT NOT NULL,"
    " peer_res TEXT, dir INTEGER NOT NULL, xml BLOB NOT NULL);"
    "CREATE UNIQUE INDEX archive_by_sid ON archive (sid);"
    "CREATE INDEX archive_by_aid ON archive (aid, id);"
    "CREATE INDEX archive_by_peer ON archive (aid, peer, id);"
    "CREATE INDEX archive_by_ts ON archive (aid, ts);"
    "CREATE TRIGGER archive_ins AFTER INSERT ON archive BEGIN"
    " UPDATE archives SET n = n + 1 WHERE aid = new.aid; END;"
    "CREATE TRIGGER archive_del AFTER DELETE ON archive BEGIN"
    " UPDATE archives SET n = n - 1 WHERE aid = old.aid; END;",
    /* 4: digest keys for SIP (RFC 7616 HA1, one row per algorithm), set
     * with the SCRAM keys from now on.  Accounts whose password was set
     * before have none until it is set again (doc/security.md). */
    "CREATE TABLE digest_keys (host TEXT NOT NULL, user TEXT NOT NULL,"
    " alg INTEGER NOT NULL, ha1 BLOB NOT NULL,"
    " PRIMARY KEY (host, user, alg));",
};

enum {
    Q_ACCT_GET,
    Q_KEYS_GET,
    Q_ACCT_INS,
    Q_KEYS_PUT,
    Q_ACCT_DEL,
    Q_KEYS_DEL,
    Q_KV_DEL_USER,
    Q_LIST,
    Q_KV_GET,
    Q_KV_PUT,
    Q_KV_DEL,
    Q_KV_LIST,
    Q_KV_COUNT,
    Q_KV_CLEAR,
    Q_KV_SCAN,
    Q_KV_SCAN_STORE,
    Q_ARC_AID,
    Q_ARC_NEW,
    Q_ARC_INS,
    Q_ARC_TRIM,
    Q_ARC_KEY,
    Q_ARC_TS_LO,
    Q_ARC_TS_HI,
    Q_ARC_FWD,
    Q_ARC_BWD,
    Q_ARC_PEER_FWD,
    Q_ARC_PEER_BWD,
    Q_ARC_CNT,
    Q_ARC_PEER_CNT,
    Q_ARC_LIST,
    Q_ARC_EXPIRE,
    Q_ARC_CLEAR,
    Q_ARC_DROP,
    Q_DIGEST_GET,
    Q_DIGEST_PUT,
    Q_DIGEST_DEL,
    Q_KV_ADD,
    Q_COUNT
};

/* The columns of an item, in struct pl_archive_item order. */
#define ARC_COLS "id, sid, ts, peer, peer_res, dir, xml"
/* Page conditions: ?2 < id < ?3, ?4 <= ts <= ?5. */
#define ARC_PAGE "id > ?2 AND id < ?3 AND ts >= ?4 AND ts <= ?5"
#define ARC_PEER "peer = ?7 AND (?8 IS NULL OR peer_res = ?8)"

static const char *const sql[Q_COUNT] = {
    "SELECT 1 FROM accounts WHERE host = ?1 AND user = ?2",
    "SELECT hash, iterations, salt, stored_key, server_key FROM scram_keys"
    " WHERE host = ?1 AND user = ?2",
    "INSERT INTO accounts (host, user, created) VALUES (?1, ?2,"
    " strftime('%s','now'))",
    "INSERT OR REPLACE INTO scram_keys VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    "DELETE FROM accounts WHERE host = ?1 AND user = ?2",
    "DELETE FROM scram_keys WHERE host = ?1 AND user = ?2",
    "DELETE FROM kv WHERE host = ?1 AND user = ?2",
    "SELECT user FROM accounts WHERE host = ?1 ORDER BY user",
    "SELECT value FROM kv WHERE host = ?1 AND user = ?2 AND store = ?3"
    " AND key = ?4",
    "INSERT OR REPLACE INTO kv VALUES (?1, ?2, ?3, ?4, ?5)",
    "DELETE FROM kv WHERE host = ?1 AND user = ?2 AND store = ?3"
    " AND key = ?4",
    "SELECT key, value FROM kv WHERE host = ?1 AND user = ?2 AND store = ?3"
    " ORDER BY key",
    "SELECT count(*) FROM kv WHERE host = ?1 AND user = ?2 AND store = ?3",
    "DELETE FROM kv WHERE host = ?1 AND user = ?2 AND store = ?3",
    "SELECT user, value FROM kv WHERE host = ?1 AND store = ?2 AND key = ?3"
    " ORDER BY user",
    "SELECT user, key, value FROM kv WHERE host = ?1 AND store = ?2"
    " ORDER BY user, key",
    "SELECT aid, n FROM archives WHERE host = ?1 AND owner = ?2"
    " AND kind = ?3",
    "INSERT INTO archives (host, owner, kind) VALUES (?1, ?2, ?3)",
    "INSERT INTO archive (aid, sid, ts, peer, peer_res, dir, xml)"
    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    "DELETE FROM archive WHERE id IN (SELECT id FROM archive"
    " INDEXED BY archive_by_aid WHERE aid = ?1 ORDER BY id LIMIT ?2)",
    "SELECT id FROM archive WHERE sid = ?1 AND aid = ?2",
    "SELECT id FROM archive INDEXED BY archive_by_ts WHERE aid = ?1"
    " AND ts >= ?2 ORDER BY ts, id LIMIT 1",
    "SELECT id FROM archive INDEXED BY archive_by_ts WHERE aid = ?1"
    " AND ts <= ?2 ORDER BY ts DESC, id DESC LIMIT 1",
    "SELECT " ARC_COLS " FROM archive INDEXED BY archive_by_aid"
    " WHERE aid = ?1 AND " ARC_PAGE " ORDER BY id LIMIT ?6",
    "SELECT " ARC_COLS " FROM archive INDEXED BY archive_by_aid"
    " WHERE aid = ?1 AND " ARC_PAGE " ORDER BY id DESC LIMIT ?6",
    "SELECT " ARC_COLS " FROM archive INDEXED BY archive_by_peer"
    " WHERE aid = ?1 AND " ARC_PEER " AND " ARC_PAGE " ORDER BY id LIMIT ?6",
    "SELECT " ARC_COLS " FROM archive INDEXED BY archive_by_peer"
    " WHERE aid = ?1 AND " ARC_PEER " AND " ARC_PAGE
    " ORDER BY id DESC LIMIT ?6",
    "SELECT count(*) FROM (SELECT 1 FROM archive INDEXED BY archive_by_aid"
    " WHERE aid = ?1 AND " ARC_PAGE " LIMIT ?6)",
    "SELECT count(*) FROM (SELECT 1 FROM archive INDEXED BY archive_by_peer"
    " WHERE aid = ?1 AND " ARC_PEER " AND " ARC_PAGE " LIMIT ?6)",
    "SELECT aid FROM archives WHERE host = ?1 AND kind = ?2 AND n > 0",
    "DELETE FROM archive WHERE id IN (SELECT id FROM archive"
    " INDEXED BY archive_by_ts WHERE aid = ?1 AND ts < ?2 LIMIT ?3)",
    "DELETE FROM archive WHERE aid = ?1",
    "DELETE FROM archives WHERE aid = ?1",
    "SELECT alg, ha1 FROM digest_keys WHERE host = ?1 AND user = ?2",
    "INSERT OR REPLACE INTO digest_keys VALUES (?1, ?2, ?3, ?4)",
    "DELETE FROM digest_keys WHERE host = ?1 AND user = ?2",
    "INSERT OR IGNORE INTO kv VALUES (?1, ?2, ?3, ?4, ?5)",
};

struct db {
    sqlite3 *h;               /* connection */
    sqlite3_stmt *q[Q_COUNT]; /* prepared statements */
    int in_tx;                /* a transaction is open */
    int lost;                 /* SQLite rolled it back: the batch failed */
    sqlite3_stmt *sp[3];      /* SP_*: each job's savepoint, prepared once */
};

enum {
    SP_BEGIN,
    SP_RELEASE,
    SP_UNDO
};
static const char *const sp_sql[3] = {"SAVEPOINT job", "RELEASE job",
                                      "ROLLBACK TO job"};

static int exec(struct db *d, const char *s)
{
    char *err = NULL;
    if (sqlite3_exec(d->h, s, NULL, NULL, &err) != SQLITE_OK) {
        pl_log_error("sqlite", "%s (while running: %.60s)", err ? err : "error",
                     s);
        sqlite3_free(err);
        return PL_ESTORAGE;
    }
    return PL_OK;
}

/* A job's savepoint statement (prepared on first use: one per job on
 * every write, so not parsed each time). */
static int savepoint(struct db *d, int which)
{
    sqlite3_stmt **st = &d->sp[which];
    if (!*st &&
        sqlite3_prepare_v2(d->h, sp_sql[which], -1, st, NULL) != SQLITE_OK) {
        pl_log_error("sqlite", "%s: %s", sp_sql[which], sqlite3_errmsg(d->h));
        *st = NULL;
        return PL_ESTORAGE;
    }
    int rc = sqlite3_step(*st);
    sqlite3_reset(*st);
    if (rc != SQLITE_DONE) {
        pl_log_error("sqlite", "%s: %s", sp_sql[which], sqlite3_errmsg(d->h));
        return PL_ESTORAGE;
    }
    return PL_OK;
}

static int migrate(struct db *d)
{
    sqlite3_stmt *st;
    int version = 0;
    if (sqlite3_prepare_v2(d->h, "PRAGMA user_version", -1, &st, NULL) ==
        SQLITE_OK) {
        if (sqlite3_step(st) == SQLITE_ROW)
            version = sqlite3_column_int(st, 0);
        sqlite3_finalize(st);
    }
    int n = (int)(sizeof(migrations) / sizeof(migrations[0]));
    if (version > n) {
        pl_log_error("sqlite",
                     "database schema %d is newer than this "
                     "parleyd (%d)",
                     version, n);
        return PL_ESTORAGE;
    }
    for (int v = version; v < n; v++) {
        char pragma[64];
        snprintf(pragma, sizeof(pragma), "PRAGMA user_version = %d", v + 1);
        if (exec(d, "BEGIN IMMEDIATE") != PL_OK)
            return PL_ESTORAGE;
        if (exec(d, migrations[v]) != PL_OK || exec(d, pragma) != PL_OK) {
            exec(d, "ROLLBACK");
            return PL_ESTORAGE;
        }
        if (exec(d, "COMMIT") != PL_OK)
            return PL_ESTORAGE;
        pl_log_info("sqlite", "schema migrated to version %d", v + 1);
    }
    return PL_OK;
}

/* storage.sqlite_max_size: max_page_count from bytes (never below the
 * pages the file already has: SQLite keeps those). */
static int set_max_size(struct db *d, long bytes)
{
    sqlite3_stmt *st;
    long long page = 4096;
    if (sqlite3_prepare_v2(d->h, "PRAGMA page_size", -1, &st, NULL) ==
        SQLITE_OK) {
        if (sqlite3_step(st) == SQLITE_ROW)
            page = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
    }
    long long pages = (long long)bytes / (page > 0 ? page : 4096);
    char pragma[64];
    snprintf(pragma, sizeof(pragma), "PRAGMA max_page_count = %lld",
             pages > 0 ? pages : 1);
    return exec(d, pragma);
}

static void db_close(void *p)
{
    struct db *d = p;
    if (!d)
        return;
    if (d->in_tx)
        exec(d, "COMMIT");
    for (int i = 0; i < Q_COUNT; i++)
        sqlite3_finalize(d->q[i]);
    for (int i = 0; i < 3; i++)
        sqlite3_finalize(d->sp[i]);
    sqlite3_close(d->h);
    pl_free(d);
}

static int db_open(const struct pl_settings *s, void **out)
{
    static const char *const sync[] = {"OFF", "NORMAL", "FULL"};
    struct db *d = pl_calloc(1, sizeof(*d));
    mkdir(s->data_dir, 0700);
    if (sqlite3_open_v2(s->sqlite_path, &d->h,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                            SQLITE_OPEN_NOMUTEX,
                        NULL) != SQLITE_OK) {
        pl_log_error("sqlite", "cannot open %s: %s", s->sqlite_path,
                     d->h ? sqlite3_errmsg(d->h) : "out of memory");
        goto fail;
    }
    sqlite3_busy_timeout(d->h, 5000);
    char pragmas[160];
    snprintf(pragmas, sizeof(pragmas),
             "PRAGMA journal_mode = WAL; PRAGMA synchronous = %s;"
             " PRAGMA foreign_keys = ON;",
             sync[s->sqlite_synchronous]);
    if (exec(d, pragmas) != PL_OK || migrate(d) != PL_OK)
        goto fail;
    if (s->sqlite_max_size > 0 && set_max_size(d, s->sqlite_max_size) != PL_OK)
        goto fail;
    for (int i = 0; i < Q_COUNT; i++)
        if (sqlite3_prepare_v3(d->h, sql[i], -1, SQLITE_PREPARE_PERSISTENT,
                               &d->q[i], NULL) != SQLITE_OK) {
            pl_log_error("sqlite", "prepare: %s", sqlite3_errmsg(d->h));
            goto fail;
        }
    *out = d;
    return PL_OK;
fail:
    db_close(d);
    return PL_ESTORAGE;
}

static int db_begin(void *p)
{
    struct db *d = p;
    if (d->in_tx)
        return PL_OK;
    int rc = exec(d, "BEGIN IMMEDIATE");
    d->in_tx = rc == PL_OK;
    return rc;
}

/* SQLite rolled the whole transaction back by itself (it may, on
 * SQLITE_FULL, SQLITE_IOERR, SQLITE_BUSY or SQLITE_NOMEM). */
static int tx_lost(struct db *d)
{
    if (d->in_tx && sqlite3_get_autocommit(d->h)) {
        pl_log_error("sqlite", "the transaction was rolled back: %s",
                     sqlite3_errmsg(d->h));
        d->in_tx = 0;
        d->lost = 1;
    }
    return d->lost;
}

static int db_job_begin(void *p)
{
    struct db *d = p;
    if (!d->in_tx)
        return d->lost ? PL_ESTORAGE : PL_OK;
    if (tx_lost(d) || savepoint(d, SP_BEGIN) != PL_OK)
        return PL_ESTORAGE;
    return PL_OK;
}

static int db_job_end(void *p, int undo)
{
    struct db *d = p;
    if (!d->in_tx)
        return d->lost ? PL_ESTORAGE : PL_OK;
    if (tx_lost(d))
        return PL_ESTORAGE;
    int rc = undo && savepoint(d, SP_UNDO) != PL_OK ? PL_ESTORAGE
                                                    : savepoint(d, SP_RELEASE);
    if (rc != PL_OK) {
        tx_lost(d);
        d->lost = 1; /* cannot tell what the savepoint holds */
        return PL_ESTORAGE;
    }
    return PL_OK;
}

static int db_commit(void *p)
{
    struct db *d = p;
    if (d->lost)
        return PL_ESTORAGE;
    if (!d->in_tx)
        return PL_OK;
    if (sqlite3_exec(d->h, "COMMIT", NULL, NULL, NULL) == SQLITE_OK) {
        d->in_tx = 0;
        return PL_OK;
    }
    int code = sqlite3_errcode(d->h);
    pl_log_error("sqlite", "commit: %s", sqlite3_errmsg(d->h));
    if (tx_lost(d))
        return PL_ESTORAGE;
    /* Still open: busy can pass; anything else is rolled back. */
    return code == SQLITE_BUSY ? PL_EAGAIN : PL_ESTORAGE;
}

static void db_rollback(void *p)
{
    struct db *d = p;
    if (!sqlite3_get_autocommit(d->h))
        exec(d, "ROLLBACK");
    d->in_tx = 0;
    d->lost = 0;
}

static sqlite3_stmt *stmt(struct db *d, int q, const char *host,
                          const char *user)
{
    sqlite3_stmt *st = d->q[q];
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    sqlite3_bind_text(st, 1, host, -1, SQLITE_STATIC);
    if (user)
        sqlite3_bind_text(st, 2, user, -1, SQLITE_STATIC);
    return st;
}

static int done(struct db *d, sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc == SQLITE_CONSTRAINT)
        return PL_ECONFLICT;
    if (rc != SQLITE_DONE) {
        pl_log_error("sqlite", "%s", sqlite3_errmsg(d->h));
        return PL_ESTORAGE;
    }
    return PL_OK;
}

static int account_get(void *p, const char *host, const char *user,
                       struct pl_account *out)
{
    struct db *d = p;
    memset(out, 0, sizeof(*out));
    sqlite3_stmt *st = stmt(d, Q_ACCT_GET, host, user);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_ROW)
        return rc == SQLITE_DONE ? PL_ENOT_FOUND : PL_ESTORAGE;
    st = stmt(d, Q_KEYS_GET, host, user);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        int h = sqlite3_column_int(st, 0);
        if (h < 0 || h >= PL_SCRAM_NHASH)
            continue;
        struct pl_scram_keys *k = &out->keys[h];
        size_t kl = pl_scram_hash_len((enum pl_scram_hash)h);
        int sl = sqlite3_column_bytes(st, 2);
        if (sl > PL_SCRAM_MAX_SALT || sqlite3_column_bytes(st, 3) != (int)kl ||
            sqlite3_column_bytes(st, 4) != (int)kl)
            continue;
        k->hash = (enum pl_scram_hash)h;
        k->iterations = (unsigned)sqlite3_column_int(st, 1);
        k->salt_len = (size_t)sl;
        memcpy(k->salt, sqlite3_column_blob(st, 2), (size_t)sl);
        memcpy(k->stored_key, sqlite3_column_blob(st, 3), kl);
        memcpy(k->server_key, sqlite3_column_blob(st, 4), kl);
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE)
        return PL_ESTORAGE;
    st = stmt(d, Q_DIGEST_GET, host, user);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        int a = sqlite3_column_int(st, 0);
        if (a < 0 || a >= PL_DIGEST_NALG ||
            sqlite3_column_bytes(st, 1) !=
                (int)pl_digest_len((enum pl_digest_alg)a))
            continue;
        memcpy(out->digest[a].ha1, sqlite3_column_blob(st, 1),
               pl_digest_len((enum pl_digest_alg)a));
        out->digest[a].set = 1;
    }
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? PL_OK : PL_ESTORAGE;
}

static int put_keys(struct db *d, const char *host, const char *user,
                    const struct pl_account *a)
{
    int rc = done(d, stmt(d, Q_KEYS_DEL, host, user));
    for (int h = 0; h < PL_SCRAM_NHASH && rc == PL_OK; h++) {
        const struct pl_scram_keys *k = &a->keys[h];
        if (!k->iterations)
            continue;
        size_t kl = pl_scram_hash_len((enum pl_scram_hash)h);
        sqlite3_stmt *st = stmt(d, Q_KEYS_PUT, host, user);
        sqlite3_bind_int(st, 3, h);
        sqlite3_bind_int(st, 4, (int)k->iterations);
        sqlite3_bind_blob(st, 5, k->salt, (int)k->salt_len, SQLITE_STATIC);
        sqlite3_bind_blob(st, 6, k->stored_key, (int)kl, SQLITE_STATIC);
        sqlite3_bind_blob(st, 7, k->server_key, (int)kl, SQLITE_STATIC);
        rc = done(d, st);
    }
    if (rc == PL_OK)
        rc = done(d, stmt(d, Q_DIGEST_DEL, host, user));
    for (int alg = 0; alg < PL_DIGEST_NALG && rc == PL_OK; alg++) {
        const struct pl_digest_key *k = &a->digest[alg];
        if (!k->set)
            continue;
        sqlite3_stmt *st = stmt(d, Q_DIGEST_PUT, host, user);
        sqlite3_bind_int(st, 3, alg);
        sqlite3_bind_blob(st, 4, k->ha1,
                          (int)pl_digest_len((enum pl_digest_alg)alg),
                          SQLITE_STATIC);
        rc = done(d, st);
    }
    return rc;
}

static int account_create(void *p, const char *host, const char *user,
                          const struct pl_account *a)
{
    struct db *d = p;
    int rc = done(d, stmt(d, Q_ACCT_INS, host, user));
    if (rc != PL_OK)
        return rc;
    return put_keys(d, host, user, a);
}

static int account_update(void *p, const char *host, const char *user,
                          const struct pl_account *a)
{
    struct db *d = p;
    sqlite3_stmt *st = stmt(d, Q_ACCT_GET, host, user);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_ROW)
        return rc == SQLITE_DONE ? PL_ENOT_FOUND : PL_ESTORAGE;
    return put_keys(d, host, user, a);
}

static int archive_clear(void *p, const char *host, const char *owner,
                         int kind);

static int account_delete(void *p, const char *host, const char *user)
{
    struct db *d = p;
    int rc = done(d, stmt(d, Q_ACCT_DEL, host, user));
    if (rc != PL_OK)
        return rc;
    if (sqlite3_changes(d->h) == 0)
        return PL_ENOT_FOUND;
    rc = done(d, stmt(d, Q_KEYS_DEL, host, user));
    if (rc == PL_OK)
        rc = done(d, stmt(d, Q_DIGEST_DEL, host, user));
    if (rc == PL_OK)
        rc = done(d, stmt(d, Q_KV_DEL_USER, host, user));
    if (rc == PL_OK)
        rc = archive_clear(d, host, user, PL_ARCHIVE_USER);
    return rc;
}

static int account_list(void *p, const char *host,
                        void (*fn)(const char *user, void *ud), void *ud)
{
    struct db *d = p;
    sqlite3_stmt *st = stmt(d, Q_LIST, host, NULL);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        fn((const char *)sqlite3_column_text(st, 0), ud);
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? PL_OK : PL_ESTORAGE;
}

static int kv_get(void *p, const char *host, const char *user,
                  const char *store, const char *key, struct pl_buf *out)
{
    struct db *d = p;
    sqlite3_stmt *st = stmt(d, Q_KV_GET, host, user);
    sqlite3_bind_text(st, 3, store, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, key, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        pl_buf_append(out, sqlite3_column_blob(st, 0),
                      (size_t)sqlite3_column_bytes(st, 0));
    sqlite3_reset(st);
    if (rc == SQLITE_ROW)
        return PL_OK;
    return rc == SQLITE_DONE ? PL_ENOT_FOUND : PL_ESTORAGE;
}

static int kv_set(void *p, const char *host, const char *user,
                  const char *store, const char *key, const void *data,
                  size_t len)
{
    struct db *d = p;
    sqlite3_stmt *st = stmt(d, data ? Q_KV_PUT : Q_KV_DEL, host, user);
    sqlite3_bind_text(st, 3, store, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, key, -1, SQLITE_STATIC);
    if (data)
        sqlite3_bind_blob(st, 5, data, (int)len, SQLITE_STATIC);
    return done(d, st);
}

static int kv_add(void *p, const char *host, const char *user,
                  const char *store, const char *key, const void *data,
                  size_t len)
{
    struct db *d = p;
    sqlite3_stmt *st = stmt(d, Q_KV_ADD, host, user);
    sqlite3_bind_text(st, 3, store, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, key, -1, SQLITE_STATIC);
    sqlite3_bind_blob(st, 5, data, (int)len, SQLITE_STATIC);
    int rc = done(d, st);
    if (rc == PL_OK && sqlite3_changes(d->h) == 0)
        rc = PL_ECONFLICT;
    return rc;
}

/* Hands each (text, blob) row of st to fn until it returns non-zero. */
static int each_row(sqlite3_stmt *st,
                    int (*fn)(const char *name, const void *data, size_t len,
                              void *ud),
                    void *ud)
{
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        if (fn((const char *)sqlite3_column_text(st, 0),
               sqlite3_column_blob(st, 1), (size_t)sqlite3_column_bytes(st, 1),
               ud)) {
            rc = SQLITE_DONE;
            break;
        }
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? PL_OK : PL_ESTORAGE;
}

static int kv_list(void *p, const char *host, const char *user,
                   const char *store,
                   int (*fn)(const char *key, const void *data, size_t len,
                             void *ud),
                   void *ud)
{
    struct db *d = p;
    sqlite3_stmt *st = stmt(d, Q_KV_LIST, host, user);
    sqlite3_bind_text(st, 3, store, -1, SQLITE_STATIC);
    return each_row(st, fn, ud);
}

static int kv_count(void *p, const char *host, const char *user,
                    const char *store, long *out)
{
    struct db *d = p;
    sqlite3_stmt *st = stmt(d, Q_KV_COUNT, host, user);
    sqlite3_bind_text(st, 3, store, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    *out = rc == SQLITE_ROW ? (long)sqlite3_column_int64(st, 0) : 0;
    sqlite3_reset(st);
    return rc == SQLITE_ROW ? PL_OK : PL_ESTORAGE;
}

static int kv_clear(void *p, const char *host, const char *user,
                    const char *store)
{
    struct db *d = p;
    sqlite3_stmt *st = stmt(d, Q_KV_CLEAR, host, user);
    sqlite3_bind_text(st, 3, store, -1, SQLITE_STATIC);
    return done(d, st);
}

static int kv_scan(void *p, const char *host, const char *store,
                   const char *key,
                   int (*fn)(const char *user, const void *data, size_t len,
                             void *ud),
                   void *ud)
{
    struct db *d = p;
    sqlite3_stmt *st = stmt(d, Q_KV_SCAN, host, NULL);
    sqlite3_bind_text(st, 2, store, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, key, -1, SQLITE_STATIC);
    return each_row(st, fn, ud);
}

static int kv_scan_store(void *p, const char *host, const char *store,
                         int (*fn)(const char *user, const char *key,
                                   const void *data, size_t len, void *ud),
                         void *ud)
{
    struct db *d = p;
    sqlite3_stmt *st = stmt(d, Q_KV_SCAN_STORE, host, NULL);
    sqlite3_bind_text(st, 2, store, -1, SQLITE_STATIC);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        if (fn((const char *)sqlite3_column_text(st, 0),
               (const char *)sqlite3_column_text(st, 1),
               sqlite3_column_blob(st, 2), (size_t)sqlite3_column_bytes(st, 2),
               ud)) {
            rc = SQLITE_DONE;
            break;
        }
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? PL_OK : PL_ESTORAGE;
}

/* ---- message archives ---- */

/* The archive's row id and item count; with create, made if absent.
 * PL_ENOT_FOUND when absent and not created. */
static int archive_id(struct db *d, const char *host, const char *owner,
                      int kind, int create, long long *aid, long long *n)
{
    for (int tries = 0; tries < 2; tries++) {
        sqlite3_stmt *st = stmt(d, Q_ARC_AID, host, owner);
        sqlite3_bind_int(st, 3, kind);
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            *aid = sqlite3_column_int64(st, 0);
            if (n)
                *n = sqlite3_column_int64(st, 1);
        }
        sqlite3_reset(st);
        if (rc == SQLITE_ROW)
            return PL_OK;
        if (rc != SQLITE_DONE)
            return PL_ESTORAGE;
        if (!create || tries)
            return PL_ENOT_FOUND;
        st = stmt(d, Q_ARC_NEW, host, owner);
        sqlite3_bind_int(st, 3, kind);
        if (done(d, st) != PL_OK)
            return PL_ESTORAGE;
    }
    return PL_ENOT_FOUND;
}

static sqlite3_stmt *arc_stmt(struct db *d, int q, long long aid)
{
    sqlite3_stmt *st = d->q[q];
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    sqlite3_bind_int64(st, 1, aid);
    return st;
}

static int archive_append(void *p, const char *host, const char *owner,
                          int kind, const struct pl_archive_item *it,
                          long limit, long long *key)
{
    struct db *d = p;
    long long aid, n = 0;
    int rc = archive_id(d, host, owner, kind, 1, &aid, &n);
    if (rc != PL_OK)
        return rc;
    sqlite3_stmt *st = arc_stmt(d, Q_ARC_INS, aid);
    sqlite3_bind_text(st, 2, it->sid, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, it->ts);
    sqlite3_bind_text(st, 4, it->with, -1, SQLITE_STATIC);
    if (it->with_res)
        sqlite3_bind_text(st, 5, it->with_res, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 6, it->dir);
    sqlite3_bind_blob(st, 7, it->xml, (int)it->xml_len, SQLITE_STATIC);
    rc = done(d, st);
    if (rc != PL_OK)
        return rc;
    if (key)
        *key = sqlite3_last_insert_rowid(d->h);
    /* n was read before this insert. */
    if (limit > 0 && n + 1 > limit) {
        st = arc_stmt(d, Q_ARC_TRIM, aid);
        sqlite3_bind_int64(st, 2, n + 1 - limit);
        rc = done(d, st);
    }
    return rc;
}

static int archive_key(void *p, const char *host, const char *owner, int kind,
                       const char *sid, long long *key)
{
    struct db *d = p;
    long long aid;
    int rc = archive_id(d, host, owner, kind, 0, &aid, NULL);
    if (rc != PL_OK)
        return rc;
    sqlite3_stmt *st = d->q[Q_ARC_KEY];
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    sqlite3_bind_text(st, 1, sid, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, aid);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        *key = sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    if (rc == SQLITE_ROW)
        return PL_OK;
    return rc == SQLITE_DONE ? PL_ENOT_FOUND : PL_ESTORAGE;
}

/* Steps st, handing each row to fn until it returns non-zero. */
static int arc_rows(sqlite3_stmt *st,
                    int (*fn)(const struct pl_archive_item *it, void *ud),
                    void *ud)
{
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct pl_archive_item it = {
            .key = sqlite3_column_int64(st, 0),
            .sid = (const char *)sqlite3_column_text(st, 1),
            .ts = sqlite3_column_int64(st, 2),
            .with = (const char *)sqlite3_column_text(st, 3),
            .with_res = (const char *)sqlite3_column_text(st, 4),
            .dir = sqlite3_column_int(st, 5),
            .xml = sqlite3_column_blob(st, 6),
            .xml_len = (size_t)sqlite3_column_bytes(st, 6),
        };
        if (fn(&it, ud)) {
            rc = SQLITE_DONE;
            break;
        }
    }
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? PL_OK : PL_ESTORAGE;
}

/* One key from a single-column query, 0 if none. */
static int arc_one_key(sqlite3_stmt *st, long long *out)
{
    int rc = sqlite3_step(st);
    *out = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    sqlite3_reset(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? PL_OK : PL_ESTORAGE;
}

/* Binds the page conditions ?2..?8 of the ARC_PAGE/ARC_PEER queries. */
static void arc_bind_page(sqlite3_stmt *st, const struct pl_archive_query *q,
                          long long lo, long long hi, long long limit)
{
    sqlite3_bind_int64(st, 2, lo);
    sqlite3_bind_int64(st, 3, hi);
    sqlite3_bind_int64(st, 4, q->start);
    sqlite3_bind_int64(st, 5, q->end ? q->end : LLONG_MAX);
    sqlite3_bind_int64(st, 6, limit);
    if (q->with) {
        sqlite3_bind_text(st, 7, q->with, -1, SQLITE_STATIC);
        if (q->with_res)
            sqlite3_bind_text(st, 8, q->with_res, -1, SQLITE_STATIC);
    }
}

/* The 'ids' filter: few rows found through the stanza-id index. */
static int arc_query_ids(struct db *d, long long aid,
                         const struct pl_archive_query *q, long long lo,
                         long long hi,
                         int (*fn)(const struct pl_archive_item *it, void *ud),
                         void *ud)
{
    struct pl_buf sqlb = {0};
    pl_buf_append_str(&sqlb, "SELECT " ARC_COLS " FROM archive WHERE"
                             " aid = ?1 AND " ARC_PAGE);
    if (q->with)
        pl_buf_append_str(&sqlb, " AND " ARC_PEER);
    pl_buf_append_str(&sqlb, " AND sid IN (");
    for (int i = 0; i < q->nids; i++)
        pl_buf_printf(&sqlb, "%s?%d", i ? ", " : "", 9 + i);
    pl_buf_printf(&sqlb, ") ORDER BY id %s LIMIT ?6",
                  q->backward ? "DESC" : "ASC");
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(d->h, pl_buf_cstr(&sqlb), -1, &st, NULL);
    pl_buf_reset(&sqlb);
    if (rc != SQLITE_OK) {
        pl_log_error("sqlite", "prepare: %s", sqlite3_errmsg(d->h));
        return PL_ESTORAGE;
    }
    sqlite3_bind_int64(st, 1, aid);
    arc_bind_page(st, q, lo, hi, q->max);
    for (int i = 0; i < q->nids; i++)
        sqlite3_bind_text(st, 9 + i, q->ids[i], -1, SQLITE_STATIC);
    rc = arc_rows(st, fn, ud);
    sqlite3_finalize(st);
    return rc;
}

static int archive_query(void *p, const char *host, const char *owner, int kind,
                         const struct pl_archive_query *q,
                         int (*fn)(const struct pl_archive_item *it, void *ud),
                         void *ud, long *count)
{
    struct db *d = p;
    long long aid, n;
    *count = 0;
    int rc = archive_id(d, host, owner, kind, 0, &aid, &n);
    if (rc == PL_ENOT_FOUND)
        return PL_OK; /* nothing archived yet */
    if (rc != PL_OK)
        return rc;
    /* The filter as a key range: the time bounds become the keys of the
     * first and last item inside them (timestamps grow with keys), so
     * every page is a range scan of one index. */
    long long lo = q->lo, hi = q->hi ? q->hi : LLONG_MAX, k;
    if (q->start) {
        sqlite3_stmt *st = arc_stmt(d, Q_ARC_TS_LO, aid);
        sqlite3_bind_int64(st, 2, q->start);
        if ((rc = arc_one_key(st, &k)) != PL_OK)
            return rc;
        if (!k)
            return PL_OK;
        if (k - 1 > lo)
            lo = k - 1;
    }
    if (q->end) {
        sqlite3_stmt *st = arc_stmt(d, Q_ARC_TS_HI, aid);
        sqlite3_bind_int64(st, 2, q->end);
        if ((rc = arc_one_key(st, &k)) != PL_OK)
            return rc;
        if (!k)
            return PL_OK;
        if (k + 1 < hi)
            hi = k + 1;
    }
    if (lo >= hi - 1)
        return PL_OK;
    /* RSM <count/>: the archive's own count when nothing filters, else a
     * count bounded by count_cap (XEP-0059 §2.6 lets it be omitted). */
    int filtered = q->with || q->start || q->end || q->lo || q->hi || q->ids;
    if (!filtered) {
        *count = (long)n;
    } else if (q->ids) {
        *count = -1;
    } else {
        sqlite3_stmt *st = arc_stmt(d, q->with ? Q_ARC_PEER_CNT : Q_ARC_CNT,
                                    aid);
        arc_bind_page(st, q, lo, hi, q->count_cap + 1);
        rc = sqlite3_step(st);
        long long c = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
        sqlite3_reset(st);
        if (rc != SQLITE_ROW)
            return PL_ESTORAGE;
        *count = c > q->count_cap ? -1 : (long)c;
    }
    if (q->after > lo)
        lo = q->after;
    if (q->before && q->before < hi)
        hi = q->before;
    if (q->max <= 0 || lo >= hi - 1)
        return PL_OK;
    if (q->ids)
        return arc_query_ids(d, aid, q, lo, hi, fn, ud);
    int which = q->with ? (q->backward ? Q_ARC_PEER_BWD : Q_ARC_PEER_FWD)
                        : (q->backward ? Q_ARC_BWD : Q_ARC_FWD);
    sqlite3_stmt *st = arc_stmt(d, which, aid);
    arc_bind_page(st, q, lo, hi, q->max);
    return arc_rows(st, fn, ud);
}

static int archive_ends(void *p, const char *host, const char *owner, int kind,
                        int (*fn)(const struct pl_archive_item *it, void *ud),
                        void *ud)
{
    struct db *d = p;
    long long aid;
    int rc = archive_id(d, host, owner, kind, 0, &aid, NULL);
    if (rc == PL_ENOT_FOUND)
        return PL_OK;
    struct pl_archive_query q = {.max = 1};
    for (int i = 0; i < 2 && rc == PL_OK; i++) {
        sqlite3_stmt *st = arc_stmt(d, i ? Q_ARC_BWD : Q_ARC_FWD, aid);
        arc_bind_page(st, &q, 0, LLONG_MAX, 1);
        rc = arc_rows(st, fn, ud);
    }
    return rc;
}

static int archive_expire(void *p, const char *host, int kind, long long ts,
                          long max, long *removed)
{
    struct db *d = p;
    *removed = 0;
    /* The archives first: deleting fires triggers on that table. */
    long long *aids = NULL;
    size_t na = 0, cap = 0;
    sqlite3_stmt *st = d->q[Q_ARC_LIST];
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    sqlite3_bind_text(st, 1, host, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 2, kind);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (na == cap) {
            cap = cap ? cap * 2 : 64;
            aids = pl_realloc(aids, cap * sizeof(*aids));
        }
        aids[na++] = sqlite3_column_int64(st, 0);
    }
    sqlite3_reset(st);
    rc = rc == SQLITE_DONE ? PL_OK : PL_ESTORAGE;
    for (size_t i = 0; i < na && rc == PL_OK && *removed < max; i++) {
        st = arc_stmt(d, Q_ARC_EXPIRE, aids[i]);
        sqlite3_bind_int64(st, 2, ts);
        sqlite3_bind_int64(st, 3, max - *removed);
        rc = done(d, st);
        if (rc == PL_OK)
            *removed += sqlite3_changes(d->h);
    }
    pl_free(aids);
    return rc;
}

static int archive_clear(void *p, const char *host, const char *owner, int kind)
{
    struct db *d = p;
    long long aid;
    int rc = archive_id(d, host, owner, kind, 0, &aid, NULL);
    if (rc == PL_ENOT_FOUND)
        return PL_OK;
    if (rc != PL_OK)
        return rc;
    /* The archive row first, so the per-item trigger has nothing to
     * update. */
    rc = done(d, arc_stmt(d, Q_ARC_DROP, aid));
    if (rc == PL_OK)
        rc = done(d, arc_stmt(d, Q_ARC_CLEAR, aid));
    return rc;
}

/* ---- whole-store walks (parleyctl migrate) ---- */

/* Prepares a statement used once. */
static sqlite3_stmt *once(struct db *d, const char *q)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(d->h, q, -1, &st, NULL) != SQLITE_OK) {
        pl_log_error("sqlite", "prepare: %s", sqlite3_errmsg(d->h));
        return NULL;
    }
    return st;
}

static int account_all(void *p,
                       int (*fn)(const char *host, const char *user,
                                 const struct pl_account *a, void *ud),
                       void *ud)
{
    struct db *d = p;
    sqlite3_stmt *st = once(d, "SELECT host, user FROM accounts"
                               " ORDER BY host, user");
    if (!st)
        return PL_ESTORAGE;
    int rc, r = PL_OK;
    struct pl_account a;
    while (r == PL_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *host = (const char *)sqlite3_column_text(st, 0);
        const char *user = (const char *)sqlite3_column_text(st, 1);
        r = account_get(d, host, user, &a);
        if (r == PL_OK && fn(host, user, &a, ud))
            break;
    }
    if (r == PL_OK && rc != SQLITE_ROW && rc != SQLITE_DONE)
        r = PL_ESTORAGE;
    sqlite3_finalize(st);
    memset(&a, 0, sizeof(a));
    return r;
}

static int kv_all(void *p,
                  int (*fn)(const char *host, const char *user,
                            const char *store, const char *key,
                            const void *data, size_t len, void *ud),
                  void *ud)
{
    struct db *d = p;
    sqlite3_stmt *st = once(d, "SELECT host, user, store, key, value FROM kv"
                               " ORDER BY host, user, store, key");
    if (!st)
        return PL_ESTORAGE;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        if (fn((const char *)sqlite3_column_text(st, 0),
               (const char *)sqlite3_column_text(st, 1),
               (const char *)sqlite3_column_text(st, 2),
               (const char *)sqlite3_column_text(st, 3),
               sqlite3_column_blob(st, 4), (size_t)sqlite3_column_bytes(st, 4),
               ud)) {
            rc = SQLITE_DONE;
            break;
        }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? PL_OK : PL_ESTORAGE;
}

static int archive_all(void *p,
                       int (*fn)(const char *host, const char *owner, int kind,
                                 const struct pl_archive_item *it, void *ud),
                       void *ud)
{
    struct db *d = p;
    sqlite3_stmt *st = once(d, "SELECT a.host, a.owner, a.kind, i.id, i.sid,"
                               " i.ts, i.peer, i.peer_res, i.dir, i.xml"
                               " FROM archive i JOIN archives a"
                               " ON a.aid = i.aid ORDER BY i.id");
    if (!st)
        return PL_ESTORAGE;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct pl_archive_item it = {
            .key = sqlite3_column_int64(st, 3),
            .sid = (const char *)sqlite3_column_text(st, 4),
            .ts = sqlite3_column_int64(st, 5),
            .with = (const char *)sqlite3_column_text(st, 6),
            .with_res = (const char *)sqlite3_column_text(st, 7),
            .dir = sqlite3_column_int(st, 8),
            .xml = sqlite3_column_blob(st, 9),
            .xml_len = (size_t)sqlite3_column_bytes(st, 9),
        };
        if (fn((const char *)sqlite3_column_text(st, 0),
               (const char *)sqlite3_column_text(st, 1),
               sqlite3_column_int(st, 2), &it, ud)) {
            rc = SQLITE_DONE;
            break;
        }
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? PL_OK : PL_ESTORAGE;
}

static const struct pl_storage_driver driver = {
    .name = "sqlite",
    .open = db_open,
    .close = db_close,
    .begin = db_begin,
    .job_begin = db_job_begin,
    .job_end = db_job_end,
    .commit = db_commit,
    .rollback = db_rollback,
    .account_get = account_get,
    .account_create = account_create,
    .account_update = account_update,
    .account_delete = account_delete,
    .account_list = account_list,
    .kv_get = kv_get,
    .kv_set = kv_set,
    .kv_add = kv_add,
    .kv_list = kv_list,
    .kv_count = kv_count,
    .kv_clear = kv_clear,
    .kv_scan = kv_scan,
    .kv_scan_store = kv_scan_store,
    .archive_append = archive_append,
    .archive_key = archive_key,
    .archive_query = archive_query,
    .archive_ends = archive_ends,
    .archive_expire = archive_expire,
    .archive_clear = archive_clear,
    .account_all = account_all,
    .kv_all = kv_all,
    .archive_all = archive_all,
};

const struct pl_module pl_mod_storage_sqlite = {
    .abi = PL_MODULE_ABI,
    .name = "storage_sqlite",
    .summary = "embedded SQLite storage",
    .storage = &driver,
};
