/*
 * mod_storage_sqlite.c - the embedded SQLite storage driver.
 *
 * WAL journal, synchronous per storage.sqlite_synchronous (FULL by
 * default: what is acknowledged survives a power cut), versioned schema
 * migrations applied at open, prepared statements kept for the life of
 * the handle.  Runs only on the storage thread (see storage.h).
 *
 * Extending the schema: append a migration to `migrations`; never edit a
 * released one.
 */
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
};

enum {
    Q_ACCT_GET, Q_KEYS_GET, Q_ACCT_INS, Q_KEYS_PUT, Q_ACCT_DEL, Q_KEYS_DEL,
    Q_KV_DEL_USER, Q_LIST, Q_KV_GET, Q_KV_PUT, Q_KV_DEL, Q_KV_LIST,
    Q_KV_COUNT, Q_KV_CLEAR, Q_KV_SCAN,
    Q_KV_SCAN_STORE,
    Q_COUNT
};

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
};

struct db {
    sqlite3 *h;              /* connection */
    sqlite3_stmt *q[Q_COUNT]; /* prepared statements */
    int in_tx;               /* a transaction is open */
};

static int exec(struct db *d, const char *s)
{
    char *err = NULL;
    if (sqlite3_exec(d->h, s, NULL, NULL, &err) != SQLITE_OK) {
        pl_log_error("sqlite", "%s (while running: %.60s)",
                     err ? err : "error", s);
        sqlite3_free(err);
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
        pl_log_error("sqlite", "database schema %d is newer than this "
                     "parleyd (%d)", version, n);
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

static void db_close(void *p)
{
    struct db *d = p;
    if (!d)
        return;
    if (d->in_tx)
        exec(d, "COMMIT");
    for (int i = 0; i < Q_COUNT; i++)
        sqlite3_finalize(d->q[i]);
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

static int db_commit(void *p)
{
    struct db *d = p;
    if (!d->in_tx)
        return PL_OK;
    d->in_tx = 0;
    return exec(d, "COMMIT");
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
        rc = done(d, stmt(d, Q_KV_DEL_USER, host, user));
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

/* Hands each (text, blob) row of st to fn until it returns non-zero. */
static int each_row(sqlite3_stmt *st,
                    int (*fn)(const char *name, const void *data, size_t len,
                              void *ud),
                    void *ud)
{
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        if (fn((const char *)sqlite3_column_text(st, 0),
               sqlite3_column_blob(st, 1),
               (size_t)sqlite3_column_bytes(st, 1), ud)) {
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

static const struct pl_storage_driver driver = {
    .name = "sqlite",
    .open = db_open,
    .close = db_close,
    .begin = db_begin,
    .commit = db_commit,
    .account_get = account_get,
    .account_create = account_create,
    .account_update = account_update,
    .account_delete = account_delete,
    .account_list = account_list,
    .kv_get = kv_get,
    .kv_set = kv_set,
    .kv_list = kv_list,
    .kv_count = kv_count,
    .kv_clear = kv_clear,
    .kv_scan = kv_scan,
    .kv_scan_store = kv_scan_store,
};

const struct pl_module pl_mod_storage_sqlite = {
    .abi = PL_MODULE_ABI,
    .name = "storage_sqlite",
    .summary = "embedded SQLite storage",
    .storage = &driver,
};
