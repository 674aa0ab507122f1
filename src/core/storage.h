/*
 * storage.h - the storage interface: accounts with SCRAM and digest keys,
 * and a per-user key-value store for modules, behind a driver (SQLite first;
 * PostgreSQL later, behind the same interface).
 *
 * Driver functions are synchronous and run only on the storage thread,
 * inside a transaction the queue opens around each batch of jobs (group
 * commit: a burst of writes costs one fsync).  Completions run on the loop
 * after the batch committed, so nothing is acknowledged before it is
 * durable; a batch that did not commit completes every job with
 * PL_ESTORAGE (pl_storage_submit, doc/storage.md).  parleyctl calls the
 * driver directly (begin, calls, commit; rollback when commit fails).
 *
 * A module's job (the arg of pl_storage_submit) starts with struct pl_job,
 * the head every job shares: the request, the session and the account it
 * concerns.  pl_job_new allocates it, pl_job_free releases it.
 */
#ifndef PL_STORAGE_H
#define PL_STORAGE_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "config.h"
#include "digest.h"
#include "scram.h"

struct pl_loop;
struct pl_stanza;

/*
 * What an account stores instead of its password; account.h fills it from
 * a password.  A digest key may be missing (set == 0) where a SCRAM key is
 * not: accounts whose password was last set before digest keys existed,
 * and MD5 with server.digest_md5 off.
 */
struct pl_account {
    struct pl_scram_keys keys[PL_SCRAM_NHASH];   /* indexed by hash */
    struct pl_digest_key digest[PL_DIGEST_NALG]; /* HA1 for SIP, indexed
                                                  * by algorithm */
};

/* Message archives (XEP-0313): one per (host, owner, kind). */
enum pl_archive_kind {
    PL_ARCHIVE_USER = 0, /* owner: an account's localpart */
    PL_ARCHIVE_ROOM = 1, /* owner: a chat room's localpart (MUC) */
};

enum pl_archive_dir {
    PL_ARCHIVE_IN = 0,  /* received by the owner */
    PL_ARCHIVE_OUT = 1, /* sent by the owner */
};

/* One archived stanza, as appended and as returned by queries. */
struct pl_archive_item {
    long long key;        /* archive order, assigned by the driver */
    const char *sid;      /* XEP-0359 stanza-id, unique, never reused */
    long long ts;         /* microseconds since the epoch, when archived */
    const char *with;     /* peer's bare JID (room: occupant nick) */
    const char *with_res; /* peer's resource, or NULL */
    int dir;              /* enum pl_archive_dir */
    const char *xml;      /* standalone stanza XML (pl_node_serialize) */
    size_t xml_len;       /* its length */
};

/*
 * One page of a query.  The filters (with, start/end, lo/hi, ids) define
 * the result set; after/before (RSM) select a page of it.  Keys come from
 * archive_key; 0 means no bound.
 */
struct pl_archive_query {
    const char *with;        /* peer's bare JID or NULL for any */
    const char *with_res;    /* with it: only this resource, or NULL */
    long long start, end;    /* inclusive µs bounds; 0 means none */
    long long lo, hi;        /* filter: keys strictly between (after-id,
                             * before-id) */
    long long after, before; /* page: keys strictly between (RSM) */
    const char *const *ids;  /* only these stanza-ids, or NULL */
    int nids;                /* their number */
    long max;                /* rows wanted (the module asks max + 1) */
    int backward;            /* the last max rows, not the first */
    long count_cap;          /* count filtered results up to this many */
};

struct pl_storage_driver {
    const char *name; /* "sqlite" */
    int (*open)(const struct pl_settings *s, void **db);
    void (*close)(void *db);
    /*
     * A batch (storage.c): begin, then for each job job_begin, the job's
     * calls, job_end; then commit.  begin opens the batch's transaction;
     * an error means no transaction is open (the queue may try again).
     */
    int (*begin)(void *db);
    /* Marks where a job's writes start (a savepoint).  An error: the
     * batch's transaction is lost (as from job_end). */
    int (*job_begin)(void *db);
    /* Keeps the job's writes, or with undo != 0 takes every one of them
     * back (the job failed with PL_ESTORAGE: none of its writes may
     * stay).  PL_ESTORAGE when the batch's transaction itself is lost
     * (the database rolled it back, SQLite does on some SQLITE_FULL or
     * SQLITE_IOERR): the batch can no longer commit. */
    int (*job_end)(void *db, int undo);
    /* Commits the batch.  PL_OK only when everything it wrote is durable;
     * PL_EAGAIN when it failed for a passing reason (SQLITE_BUSY) and the
     * transaction is still open, so commit may be called again; any
     * other error: the batch did not commit, call rollback. */
    int (*commit)(void *db);
    /* Abandons the batch's transaction if one is open (after begin or
     * commit failed, or the transaction was lost): nothing written since
     * begin stays, and the handle is ready for the next begin. */
    void (*rollback)(void *db);
    /* PL_ENOT_FOUND if no such account. */
    int (*account_get)(void *db, const char *host, const char *user,
                       struct pl_account *out);
    /* PL_ECONFLICT if it exists. */
    int (*account_create)(void *db, const char *host, const char *user,
                          const struct pl_account *a);
    /* Replaces every key (SCRAM and digest: a key not set in a is
     * removed).  PL_ENOT_FOUND if it does not exist. */
    int (*account_update)(void *db, const char *host, const char *user,
                          const struct pl_account *a);
    /* Removes the account and all of its data. PL_ENOT_FOUND if absent. */
    int (*account_delete)(void *db, const char *host, const char *user);
    int (*account_list)(void *db, const char *host,
                        void (*fn)(const char *user, void *ud), void *ud);
    /* Per-user documents, by store and key.  PL_ENOT_FOUND if absent. */
    int (*kv_get)(void *db, const char *host, const char *user,
                  const char *store, const char *key, struct pl_buf *out);
    /* data NULL deletes. */
    int (*kv_set)(void *db, const char *host, const char *user,
                  const char *store, const char *key, const void *data,
                  size_t len);
    /* Stores the document only if there is none under that key (an
     * insert that does nothing otherwise, safe against another process
     * doing the same at the same moment): PL_ECONFLICT if one exists. */
    int (*kv_add)(void *db, const char *host, const char *user,
                  const char *store, const char *key, const void *data,
                  size_t len);
    /* Every document of one user's store, in key order (byte order).
     * fn returns non-zero to stop early. */
    int (*kv_list)(void *db, const char *host, const char *user,
                   const char *store,
                   int (*fn)(const char *key, const void *data, size_t len,
                             void *ud),
                   void *ud);
    /* Number of documents in one user's store. */
    int (*kv_count)(void *db, const char *host, const char *user,
                    const char *store, long *out);
    /* Removes every document of one user's store. */
    int (*kv_clear)(void *db, const char *host, const char *user,
                    const char *store);
    /* The document store/key of every user of host, in user order
     * (directory search); fn returns non-zero to stop early. */
    int (*kv_scan)(void *db, const char *host, const char *store,
                   const char *key,
                   int (*fn)(const char *user, const void *data, size_t len,
                             void *ud),
                   void *ud);
    /* Every document of one store for all users of host, in (user, key)
     * order (crash recovery of small stores); fn returns non-zero to
     * stop early. */
    int (*kv_scan_store)(void *db, const char *host, const char *store,
                         int (*fn)(const char *user, const char *key,
                                   const void *data, size_t len, void *ud),
                         void *ud);
    /* Message archive (XEP-0313) */
    /* Appends it (it->key is ignored); then, if limit > 0, removes the
     * oldest items beyond limit.  *key receives the new item's key. */
    int (*archive_append)(void *db, const char *host, const char *owner,
                          int kind, const struct pl_archive_item *it,
                          long limit, long long *key);
    /* The key of stanza-id sid in the archive; PL_ENOT_FOUND if absent. */
    int (*archive_key)(void *db, const char *host, const char *owner, int kind,
                       const char *sid, long long *key);
    /* Items matching q in archive order (ascending, or descending when
     * q->backward), at most q->max; fn returns non-zero to stop.
     * *count receives the size of the whole filtered result set (ignoring
     * after/before/max) when it costs at most q->count_cap index steps,
     * else -1. */
    int (*archive_query)(void *db, const char *host, const char *owner,
                         int kind, const struct pl_archive_query *q,
                         int (*fn)(const struct pl_archive_item *it, void *ud),
                         void *ud, long *count);
    /* The oldest item, then the newest (fn called twice, or never for an
     * empty archive): XEP-0313 metadata. */
    int (*archive_ends)(void *db, const char *host, const char *owner, int kind,
                        int (*fn)(const struct pl_archive_item *it, void *ud),
                        void *ud);
    /* Removes up to max items archived before ts (µs) from the archives
     * of kind on host; *removed receives how many (expiry). */
    int (*archive_expire)(void *db, const char *host, int kind, long long ts,
                          long max, long *removed);
    /* Removes one archive entirely (account_delete does it for users). */
    int (*archive_clear)(void *db, const char *host, const char *owner,
                         int kind);
    /* Whole-store walks, for parleyctl migrate; fn returns non-zero to
     * stop early.  Every account with its keys, in (host, user) order. */
    int (*account_all)(void *db,
                       int (*fn)(const char *host, const char *user,
                                 const struct pl_account *a, void *ud),
                       void *ud);
    /* Every document, in (host, user, store, key) order. */
    int (*kv_all)(void *db,
                  int (*fn)(const char *host, const char *user,
                            const char *store, const char *key,
                            const void *data, size_t len, void *ud),
                  void *ud);
    /* Every archived item, each archive's in archive order. */
    int (*archive_all)(void *db,
                       int (*fn)(const char *host, const char *owner, int kind,
                                 const struct pl_archive_item *it, void *ud),
                       void *ud);
};

/* Runs on the storage thread with the driver and its handle. */
typedef int pl_storage_run_fn(const struct pl_storage_driver *d, void *db,
                              void *arg);
/* Runs on the loop with run's result. */
typedef void pl_storage_done_fn(int rc, void *arg);

/*
 * Queues run(arg) on the storage thread; done(rc, arg) follows on loop.
 *
 * done gets run's result only when the transaction run was part of
 * committed; when it did not (BEGIN or COMMIT failed after
 * storage.retries tries, or the database rolled it back) each of its jobs
 * gets PL_ESTORAGE, whatever its run returned, and run may not have been
 * called at all.  A run that returns PL_ESTORAGE has none of its
 * writes kept (a savepoint per job); the other jobs of its batch commit.
 * So done must treat PL_ESTORAGE as "nothing happened": answer the
 * request with an error (a message: <resource-constraint/> type wait),
 * never as a success.  run is called at most once per job (it may fill
 * the job's own fields): a failed batch is not run again.
 */
void pl_storage_submit(struct pl_loop *loop, pl_storage_run_fn *run,
                       pl_storage_done_fn *done, void *arg);

/*
 * The head of a module's storage job, its first member:
 *
 *     struct job {
 *         struct pl_job base;  (first member)
 *         long max_items;      (the module's own fields)
 *     };
 *     struct job *j = pl_job_new(sizeof(*j), ev->stanza, sid, host, user);
 *     ...
 *     pl_storage_submit(pl_server_loop(), run, done, j);
 *
 * and done() frees the module's own fields, then calls pl_job_free(j).
 * The head owns everything it points to.  run() on the storage thread may
 * read it (and the stanza); only the loop changes it.
 */
struct pl_job {
    struct pl_stanza *st; /* the request (one reference held), or NULL */
    uint64_t sid;         /* requesting session's id, 0 if none */
    char *host;           /* the owner's domain (a copy) */
    char *user;           /* the owner's localpart: an account or a room
                           * (a copy), or NULL */
    char *bare;           /* "user@host", or NULL without user */
};

/*
 * A zeroed allocation of size bytes (at least sizeof(struct pl_job)),
 * whose head is filled in: st (may be NULL) gets a new reference, host is
 * copied, user (may be NULL) is copied and bare built from both.  Borrows
 * its arguments.  Never fails (allocation aborts).
 */
void *pl_job_new(size_t size, struct pl_stanza *st, uint64_t sid,
                 const char *host, const char *user);

/* Drops the head's stanza reference and strings, then frees job itself (a
 * pointer from pl_job_new; NULL is fine).  Free the module's own fields
 * first. */
void pl_job_free(void *job);

/*
 * Durability barriers.  A barrier counts storage jobs that must commit
 * before something may be acknowledged: XEP-0198 acks a client's stanza
 * only once every write its handling caused has committed (an offline
 * store, an archive entry, a roster change).  While a barrier is current
 * (pl_barrier_enter), every pl_storage_submit joins it, and a job's
 * completion runs with the job's barrier current again, so writes chained
 * from completions join too.  When the creator has released its own
 * reference and every joined job has completed, fn(arg) runs on the loop
 * (at once if nothing joined).  Loop thread only.
 */
struct pl_barrier;
typedef void pl_barrier_fn(void *arg);

/* A new barrier holding the creator's reference. */
struct pl_barrier *pl_barrier_new(pl_barrier_fn *fn, void *arg);
/* Makes b current (NULL: none); returns the previous one to restore. */
struct pl_barrier *pl_barrier_enter(struct pl_barrier *b);
/* Drops a reference; the last one runs fn and frees b. */
void pl_barrier_release(struct pl_barrier *b);
/* Detaches fn (its arg is going away); jobs still complete normally. */
void pl_barrier_cancel(struct pl_barrier *b);
/*
 * The current barrier with a reference added, or NULL.  A module that
 * parks a stanza to route it later (waiting for a list to load) keeps
 * this, enters it around the later routing, then releases it: the
 * stanza's writes stay part of its sender's acknowledgement.
 */
struct pl_barrier *pl_barrier_hold(void);

/* Driver by name among the modules' provided services. */
const struct pl_storage_driver *pl_storage_driver_find(const char *name);

/*
 * Outages.  A driver whose database cannot be reached (a lost connection
 * it keeps trying to restore, with the storage thread waiting) says so
 * with pl_storage_set_unavailable(1), and (0) once it is back; any
 * thread.  While it is unavailable, front ends refuse new requests with
 * <resource-constraint/> (type wait) instead of letting them wait for an
 * answer that cannot come yet; what was queued before completes later.
 */
void pl_storage_set_unavailable(int on);
int pl_storage_unavailable(void);

/* Server lifetime. */
int pl__storage_open(const struct pl_settings *s);
/* The same with a given driver (tests: a driver that fails on demand). */
int pl__storage_open_driver(const struct pl_storage_driver *d,
                            const struct pl_settings *s);
/* Waits for queued jobs, commits, closes (SIGTERM). */
void pl__storage_close(void);
size_t pl_storage_pending(void);

#endif
