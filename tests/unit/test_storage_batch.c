/*
 * test_storage_batch.c - group commit when something fails
 * (src/core/storage.c run_batch, the drivers' job savepoints): a batch
 * whose BEGIN or COMMIT fails completes every one of its jobs with
 * PL_ESTORAGE; a job failing alone loses only its own writes; the store
 * works again afterwards.
 *
 * Batches are made deterministic with a gate: a first job that blocks the
 * storage thread until the test has queued the batch under test, which
 * the thread then takes whole.  SQLite failures are real: a VFS over the
 * default one fails writes with SQLITE_FULL once armed (the COMMIT that
 * writes the WAL fails as on a full disk), and storage.sqlite_max_size
 * makes a large write fail with SQLITE_FULL inside a batch.  A fake driver
 * checks the retries.
 */
#include <errno.h>
#include <semaphore.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../../src/core/buf.h"
#include "../../src/core/config.h"
#include "../../src/core/error.h"
#include "../../src/core/server.h"
#include "../../src/core/storage.h"
#include "../support/inproc.h"
#include "unit.h"

static struct inproc E;

/* ---- a VFS that fails writes on demand ---- */

static sqlite3_vfs *base_vfs;
static sqlite3_vfs shim_vfs;
static atomic_int fail_writes; /* armed: every xWrite gets SQLITE_FULL */

struct shim_file {
    sqlite3_file f;     /* pMethods: shim_io */
    sqlite3_file *real; /* the base VFS's file, right after this struct */
};

#define REAL(p) (((struct shim_file *)(p))->real)

static int s_close(sqlite3_file *p)
{
    return REAL(p)->pMethods->xClose(REAL(p));
}
static int s_read(sqlite3_file *p, void *b, int n, sqlite3_int64 o)
{
    return REAL(p)->pMethods->xRead(REAL(p), b, n, o);
}
static int s_write(sqlite3_file *p, const void *b, int n, sqlite3_int64 o)
{
    if (atomic_load(&fail_writes))
        return SQLITE_FULL;
    return REAL(p)->pMethods->xWrite(REAL(p), b, n, o);
}
static int s_truncate(sqlite3_file *p, sqlite3_int64 n)
{
    return REAL(p)->pMethods->xTruncate(REAL(p), n);
}
static int s_sync(sqlite3_file *p, int f)
{
    return REAL(p)->pMethods->xSync(REAL(p), f);
}
static int s_size(sqlite3_file *p, sqlite3_int64 *n)
{
    return REAL(p)->pMethods->xFileSize(REAL(p), n);
}
static int s_lock(sqlite3_file *p, int l)
{
    return REAL(p)->pMethods->xLock(REAL(p), l);
}
static int s_unlock(sqlite3_file *p, int l)
{
    return REAL(p)->pMethods->xUnlock(REAL(p), l);
}
static int s_reserved(sqlite3_file *p, int *r)
{
    return REAL(p)->pMethods->xCheckReservedLock(REAL(p), r);
}
static int s_fcntl(sqlite3_file *p, int op, void *a)
{
    return REAL(p)->pMethods->xFileControl(REAL(p), op, a);
}
static int s_sector(sqlite3_file *p)
{
    return REAL(p)->pMethods->xSectorSize(REAL(p));
}
static int s_devchar(sqlite3_file *p)
{
    return REAL(p)->pMethods->xDeviceCharacteristics(REAL(p));
}
static int s_shmmap(sqlite3_file *p, int i, int sz, int ext, void volatile **pp)
{
    return REAL(p)->pMethods->xShmMap(REAL(p), i, sz, ext, pp);
}
static int s_shmlock(sqlite3_file *p, int off, int n, int fl)
{
    return REAL(p)->pMethods->xShmLock(REAL(p), off, n, fl);
}
static void s_shmbarrier(sqlite3_file *p)
{
    REAL(p)->pMethods->xShmBarrier(REAL(p));
}
static int s_shmunmap(sqlite3_file *p, int del)
{
    return REAL(p)->pMethods->xShmUnmap(REAL(p), del);
}
static int s_fetch(sqlite3_file *p, sqlite3_int64 o, int n, void **pp)
{
    return REAL(p)->pMethods->xFetch(REAL(p), o, n, pp);
}
static int s_unfetch(sqlite3_file *p, sqlite3_int64 o, void *q)
{
    return REAL(p)->pMethods->xUnfetch(REAL(p), o, q);
}

static sqlite3_io_methods shim_io = {
    3,         s_close,  s_read,    s_write,      s_truncate, s_sync,
    s_size,    s_lock,   s_unlock,  s_reserved,   s_fcntl,    s_sector,
    s_devchar, s_shmmap, s_shmlock, s_shmbarrier, s_shmunmap, s_fetch,
    s_unfetch,
};

static int s_open(sqlite3_vfs *v, const char *name, sqlite3_file *f, int flags,
                  int *out)
{
    struct shim_file *s = (struct shim_file *)f;
    s->real = (sqlite3_file *)(s + 1);
    int rc = base_vfs->xOpen(base_vfs, name, s->real, flags, out);
    f->pMethods = rc == SQLITE_OK && s->real->pMethods ? &shim_io : NULL;
    (void)v;
    return rc;
}

/* Makes the shim the default VFS (before the driver opens). */
static void shim_install(void)
{
    base_vfs = sqlite3_vfs_find(NULL);
    shim_vfs = *base_vfs;
    shim_vfs.zName = "failshim";
    shim_vfs.szOsFile = (int)sizeof(struct shim_file) + base_vfs->szOsFile;
    shim_vfs.xOpen = s_open;
    shim_io.iVersion = 3;
    CHECK(sqlite3_vfs_register(&shim_vfs, 1) == SQLITE_OK);
}

/* ---- jobs ---- */

enum op {
    OP_GATE,    /* blocks the storage thread until the test opens the gate */
    OP_SET,     /* kv_set key = value (len bytes) */
    OP_GET,     /* kv_get key */
    OP_ARM,     /* arms fail_writes: the batch's COMMIT fails */
    OP_PARTIAL, /* kv_set key, then fails as a second write would */
    OP_FAKE,    /* returns ret (fake driver) */
    OP_ADD,     /* kv_add key = value (len bytes of 'a' + len) */
};

struct tjob {
    enum op op;
    const char *key;
    size_t len;        /* OP_SET: value length (0: 1 byte) */
    int ret;           /* OP_FAKE */
    int ran;           /* run was called */
    int done;          /* done was called */
    int rc;            /* what done got */
    struct pl_buf out; /* OP_GET */
};

static sem_t gate_open, gate_reached;
static int ndone;

static int job_run(const struct pl_storage_driver *d, void *db, void *arg)
{
    struct tjob *j = arg;
    j->ran = 1;
    static char big[1 << 20];
    size_t len = j->len ? j->len : 1;
    switch (j->op) {
    case OP_GATE:
        sem_post(&gate_reached);
        while (sem_wait(&gate_open) != 0 && errno == EINTR)
            ;
        return PL_OK;
    case OP_SET:
        memset(big, 'v', len);
        return d->kv_set(db, "localhost", "u", "t", j->key, big, len);
    case OP_GET: return d->kv_get(db, "localhost", "u", "t", j->key, &j->out);
    case OP_ARM: atomic_store(&fail_writes, 1); return PL_OK;
    case OP_PARTIAL: {
        int rc = d->kv_set(db, "localhost", "u", "t", j->key, "p", 1);
        return rc == PL_OK ? PL_ESTORAGE : rc;
    }
    case OP_FAKE: return j->ret;
    case OP_ADD:
        memset(big, 'a' + (int)len, len);
        return d->kv_add(db, "localhost", "u", "t", j->key, big, len);
    }
    return PL_EINVAL;
}

static void job_done(int rc, void *arg)
{
    struct tjob *j = arg;
    j->rc = rc;
    j->done++;
    ndone++;
}

static void wait_sem(sem_t *s)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += INPROC_WAIT_MS / 1000;
    while (sem_timedwait(s, &ts) != 0 && errno == EINTR)
        ;
}

/*
 * Runs jobs[0..n) as one batch: the gate holds the storage thread (in a
 * batch of its own) while they are queued, then all complete.
 */
static void run_as_batch(struct tjob *jobs, int n, void (*while_held)(void))
{
    struct tjob gate = {.op = OP_GATE};
    sem_init(&gate_open, 0, 0);
    sem_init(&gate_reached, 0, 0);
    ndone = 0;
    pl_storage_submit(E.loop, job_run, job_done, &gate);
    wait_sem(&gate_reached);
    for (int i = 0; i < n; i++)
        pl_storage_submit(E.loop, job_run, job_done, &jobs[i]);
    if (while_held)
        while_held();
    sem_post(&gate_open);
    uint64_t deadline = inproc_now_ms() + INPROC_WAIT_MS;
    while (ndone < n + 1 && inproc_now_ms() < deadline)
        inproc_pump(&E, 5);
    CHECK_INT(ndone, n + 1);
    CHECK_INT(gate.rc, PL_OK);
    sem_destroy(&gate_open);
    sem_destroy(&gate_reached);
}

static void start(const char *name, const char *storage)
{
    inproc_mkdir(&E, name);
    E.storage = storage;
    inproc_start(&E, INPROC_SILENT,
                 "hosts = ( { domain = \"localhost\"; } );\n"
                 "modules = [ \"ping\" ];\n");
}

static void free_jobs(struct tjob *jobs, int n)
{
    for (int i = 0; i < n; i++)
        pl_buf_reset(&jobs[i].out);
}

/* A COMMIT that fails (disk full while writing the WAL): every job of the
 * batch fails, reads included, and nothing of it stays. */
void test_storage_commit_fails(void)
{
    shim_install();
    start("storage_commit_fails", "retry_delay = 0;");
    struct tjob a[] = {
        {.op = OP_SET, .key = "a"},
        {.op = OP_SET, .key = "b"},
        {.op = OP_GET, .key = "none"},
        {.op = OP_SET, .key = "c"},
        {.op = OP_ARM},
    };
    int n = (int)(sizeof(a) / sizeof(a[0]));
    run_as_batch(a, n, NULL);
    for (int i = 0; i < n; i++) {
        CHECK_INT(a[i].done, 1);
        CHECK_INT(a[i].ran, 1);
        CHECK_INT(a[i].rc, PL_ESTORAGE);
    }
    /* Space again: none of it was kept, and writes work. */
    atomic_store(&fail_writes, 0);
    struct tjob b[] = {
        {.op = OP_GET, .key = "a"},
        {.op = OP_GET, .key = "c"},
        {.op = OP_SET, .key = "a"},
        {.op = OP_GET, .key = "a"},
    };
    run_as_batch(b, 4, NULL);
    CHECK_INT(b[0].rc, PL_ENOT_FOUND);
    CHECK_INT(b[1].rc, PL_ENOT_FOUND);
    CHECK_INT(b[2].rc, PL_OK);
    CHECK_INT(b[3].rc, PL_OK);
    CHECK_INT(b[3].out.len, 1);
    /* And they last: a batch of their own reads them back. */
    struct tjob c[] = {{.op = OP_GET, .key = "a"}};
    run_as_batch(c, 1, NULL);
    CHECK_INT(c[0].rc, PL_OK);
    free_jobs(a, n);
    free_jobs(b, 4);
    free_jobs(c, 1);
    inproc_free(&E);
}

/*
 * Jobs fail inside a batch.  A write beyond sqlite_max_size gets
 * SQLITE_FULL, on which SQLite rolls the whole transaction back: the jobs
 * that ran before in it fail too, the ones after go on in a new
 * transaction.  A job whose second write fails after its first succeeded
 * loses its own writes only (its savepoint); the other jobs commit.
 */
void test_storage_job_fails_alone(void)
{
    start("storage_job_fails_alone", "sqlite_max_size = 262144;");
    struct tjob a[] = {
        {.op = OP_SET, .key = "before"},
        {.op = OP_SET, .key = "huge", .len = 1 << 20},
        {.op = OP_PARTIAL, .key = "partial"},
        {.op = OP_SET, .key = "after"},
    };
    run_as_batch(a, 4, NULL);
    CHECK_INT(a[0].rc, PL_ESTORAGE); /* rolled back with the batch */
    CHECK_INT(a[1].rc, PL_ESTORAGE);
    CHECK_INT(a[2].rc, PL_ESTORAGE);
    CHECK_INT(a[3].rc, PL_OK);
    for (int i = 0; i < 4; i++)
        CHECK_INT(a[i].ran, 1);
    struct tjob b[] = {
        {.op = OP_GET, .key = "before"},
        {.op = OP_GET, .key = "huge"},
        {.op = OP_GET, .key = "partial"},
        {.op = OP_GET, .key = "after"},
        {.op = OP_SET, .key = "small", .len = 1000},
    };
    run_as_batch(b, 5, NULL);
    CHECK_INT(b[0].rc, PL_ENOT_FOUND);
    CHECK_INT(b[1].rc, PL_ENOT_FOUND);
    CHECK_INT(b[2].rc, PL_ENOT_FOUND);
    CHECK_INT(b[3].rc, PL_OK);
    CHECK_INT(b[4].rc, PL_OK);
    free_jobs(a, 4);
    free_jobs(b, 5);
    inproc_free(&E);
}

/* ---- a driver that fails on demand: the retries ---- */

struct fake {
    /* armed by the test, applied at the next begin */
    int begin_fails;  /* BEGINs that fail */
    int commit_busy;  /* COMMITs that fail with PL_EAGAIN */
    int commit_fails; /* then fail for good */
    int lose_at;      /* job_end of the lose_at-th job says lost (1-based) */
    /* counted from that begin on */
    int begins, commits, rollbacks, jobs, undos;
};

static struct fake want, fk;
static atomic_int armed;

static int f_open(const struct pl_settings *s, void **db)
{
    (void)s;
    *db = &fk;
    return PL_OK;
}
static void f_close(void *db)
{
    (void)db;
}
static int f_begin(void *db)
{
    (void)db;
    if (atomic_exchange(&armed, 0))
        fk = want;
    fk.begins++;
    if (fk.begin_fails > 0) {
        fk.begin_fails--;
        return PL_ESTORAGE;
    }
    return PL_OK;
}
static int f_job_begin(void *db)
{
    (void)db;
    return PL_OK;
}
static int f_job_end(void *db, int undo)
{
    (void)db;
    fk.undos += undo != 0;
    return ++fk.jobs == fk.lose_at ? PL_ESTORAGE : PL_OK;
}
static int f_commit(void *db)
{
    (void)db;
    fk.commits++;
    if (fk.commit_busy > 0) {
        fk.commit_busy--;
        return PL_EAGAIN;
    }
    return fk.commit_fails ? PL_ESTORAGE : PL_OK;
}
static void f_rollback(void *db)
{
    (void)db;
    fk.rollbacks++;
}

static const struct pl_storage_driver fake_driver = {
    .name = "fake",
    .open = f_open,
    .close = f_close,
    .begin = f_begin,
    .job_begin = f_job_begin,
    .job_end = f_job_end,
    .commit = f_commit,
    .rollback = f_rollback,
};

static void arm(void)
{
    atomic_store(&armed, 1);
}

/* Four jobs under the fake driver armed with w; returns the counts. */
static struct fake fake_batch(struct fake w, struct tjob *jobs)
{
    want = w;
    run_as_batch(jobs, 4, arm);
    struct fake got = fk;
    /* The storage thread is idle: what is left of w must not reach the
     * next gate's batch. */
    memset(&fk, 0, sizeof(fk));
    return got;
}

void test_storage_batch_retries(void)
{
    start("storage_batch_retries", "");
    pl__storage_close();
    struct pl_settings s = E.cfg->s;
    s.storage_retries = 2;
    s.storage_retry_delay = 0;
    CHECK(pl__storage_open_driver(&fake_driver, &s) == PL_OK);
#define JOBS(r2)                                                               \
    {                                                                          \
        {.op = OP_FAKE}, {.op = OP_FAKE, .ret = (r2)}, {.op = OP_FAKE},        \
            {.op = OP_FAKE},                                                   \
    }

    /* BEGIN fails twice, the third try works: all commit. */
    struct tjob a[] = JOBS(PL_OK);
    struct fake f = fake_batch((struct fake){.begin_fails = 2}, a);
    CHECK_INT(f.begins, 3);
    CHECK_INT(f.rollbacks, 2);
    CHECK_INT(f.commits, 1);
    for (int i = 0; i < 4; i++)
        CHECK_INT(a[i].rc, PL_OK);

    /* BEGIN keeps failing: no job runs, each fails. */
    struct tjob b[] = JOBS(PL_OK);
    f = fake_batch((struct fake){.begin_fails = 100}, b);
    CHECK_INT(f.begins, 3);
    CHECK_INT(f.jobs, 0);
    CHECK_INT(f.commits, 0);
    for (int i = 0; i < 4; i++) {
        CHECK_INT(b[i].ran, 0);
        CHECK_INT(b[i].done, 1);
        CHECK_INT(b[i].rc, PL_ESTORAGE);
    }

    /* COMMIT busy twice, then through. */
    struct tjob c[] = JOBS(PL_OK);
    f = fake_batch((struct fake){.commit_busy = 2}, c);
    CHECK_INT(f.commits, 3);
    CHECK_INT(f.rollbacks, 0);
    for (int i = 0; i < 4; i++)
        CHECK_INT(c[i].rc, PL_OK);

    /* COMMIT stays busy: rolled back, every job fails. */
    struct tjob d[] = JOBS(PL_OK);
    f = fake_batch((struct fake){.commit_busy = 100}, d);
    CHECK_INT(f.commits, 3);
    CHECK_INT(f.rollbacks, 1);
    for (int i = 0; i < 4; i++)
        CHECK_INT(d[i].rc, PL_ESTORAGE);

    /* COMMIT fails for good: not tried again, every job fails. */
    struct tjob e[] = JOBS(PL_OK);
    f = fake_batch((struct fake){.commit_fails = 1}, e);
    CHECK_INT(f.commits, 1);
    CHECK_INT(f.rollbacks, 1);
    for (int i = 0; i < 4; i++)
        CHECK_INT(e[i].rc, PL_ESTORAGE);

    /* The transaction is lost under the second job: the first two fail,
     * the last two run in a new transaction, which commits. */
    struct tjob g[] = JOBS(PL_OK);
    f = fake_batch((struct fake){.lose_at = 2}, g);
    CHECK_INT(f.begins, 2);
    CHECK_INT(f.jobs, 4);
    CHECK_INT(f.commits, 1);
    CHECK_INT(f.rollbacks, 1);
    CHECK_INT(g[0].rc, PL_ESTORAGE);
    CHECK_INT(g[1].rc, PL_ESTORAGE);
    CHECK_INT(g[2].rc, PL_OK);
    CHECK_INT(g[3].rc, PL_OK);

    /* One job fails: its savepoint is undone, the others commit. */
    struct tjob h[] = JOBS(PL_ESTORAGE);
    f = fake_batch((struct fake){0}, h);
    CHECK_INT(f.undos, 1);
    CHECK_INT(f.commits, 1);
    CHECK_INT(h[0].rc, PL_OK);
    CHECK_INT(h[1].rc, PL_ESTORAGE);
    CHECK_INT(h[2].rc, PL_OK);
    CHECK_INT(h[3].rc, PL_OK);
#undef JOBS
    inproc_free(&E);
}

/*
 * The cluster's one secret (src/core/server.c pl__server_share_secret,
 * the drivers' kv_add): the first node's offer is stored and kept; a node
 * with another secret of its own gets the stored one; kv_add never
 * replaces a document.
 */
void test_storage_shared_secret(void)
{
    start("shared_secret", NULL);
    unsigned char first[32], other[32];
    memcpy(first, pl_server_secret().p, sizeof(first));
    CHECK(!pl_server_secret_shared());
    CHECK_INT(pl__server_share_secret(), PL_OK);
    CHECK(pl_server_secret_shared());
    CHECK(memcmp(pl_server_secret().p, first, sizeof(first)) == 0);
    memset(other, 7, sizeof(other));
    pl__server_set(E.loop, E.cfg, E.cpu, other);
    CHECK(!pl_server_secret_shared());
    CHECK(memcmp(pl_server_secret().p, other, sizeof(other)) == 0);
    CHECK_INT(pl__server_share_secret(), PL_OK);
    CHECK(memcmp(pl_server_secret().p, first, sizeof(first)) == 0);

    struct tjob j[3] = {{.op = OP_ADD, .key = "k", .len = 1},
                        {.op = OP_ADD, .key = "k", .len = 2},
                        {.op = OP_GET, .key = "k"}};
    for (int i = 0; i < 3; i++)
        pl_storage_submit(E.loop, job_run, job_done, &j[i]);
    inproc_drain(&E);
    CHECK_INT(j[0].rc, PL_OK);
    CHECK_INT(j[1].rc, PL_ECONFLICT);
    CHECK_INT(j[2].rc, PL_OK);
    CHECK_INT((int)j[2].out.len, 1);
    CHECK(j[2].out.len == 1 && j[2].out.data[j[2].out.off] == 'b');
    free_jobs(j, 3);
    inproc_free(&E);
}
