/*
 * core.c - the glue of the running gateway (core.h): the database work
 * queue, the retry backoff, and reports through the outbox.
 *
 * The outbox drain: when this instance holds a component link (with
 * parleyd's max_links every instance holds its own), it claims outbox
 * rows (leased like messages, so no two instances send a row while the
 * lease lasts), sends each stanza, and deletes a row once parleyd has
 * acknowledged its stanza (XEP-0198; at once on a link without it).  A
 * row whose link died first is released (its lease dropped) and sent by
 * whichever instance claims it next (parleyd may have routed it already,
 * so a report can arrive twice, never not at all); a row this instance
 * has no link for waits for its lease to run out.  It runs on a kick (a report was
 * just written here) and on the poll timer (reports written by instances
 * that have no link).
 *
 * Group commit: the database work queue runs every job waiting at one
 * moment as a batch (work.h); the batch hook wraps it in one SQLite
 * transaction (queue.c turns each job's own into a savepoint), so a
 * burst costs one fsync instead of one per statement.  Completions run
 * only after the batch's COMMIT (work.c posts them then), so a sender is
 * still told "accepted" only once the message is durable; when the
 * COMMIT fails, every job of the batch completes with PL_ESTORAGE.
 */
#include <openssl/rand.h>
#include <stdatomic.h>
#include <string.h>

#include "alloc.h"
#include "error.h"
#include "gateway/check.h"
#include "gateway/core.h"
#include "gateway/cross.h"
#include "gateway/policy.h"
#include "log.h"
#include "stanza.h"
#include "xml.h"

struct pl_gw pl_gw;

/* ---- group commit ---- */

struct db_batch {
    atomic_int refs; /* the batch itself + its jobs not yet completed */
    int failed;      /* set before the completions are posted */
};

struct db_job {
    struct pl_work w;    /* first member */
    struct pl_work *job; /* the caller's */
    struct db_batch *b;  /* whose commit it depends on, or NULL */
};

static struct db_batch *cur; /* database thread only */

static void batch_release(struct db_batch *b)
{
    if (b && atomic_fetch_sub(&b->refs, 1) == 1)
        pl_free(b);
}

static void db_batch_hook(void *ctx, int begin)
{
    (void)ctx;
    if (begin) {
        cur = NULL;
        if (pl_gwq_batch_begin(pl_gw.db) != PL_OK) {
            pl_log_warn("gateway", "cannot begin a batch: %s",
                        pl_gwq_error(pl_gw.db));
            return; /* every job commits on its own */
        }
        cur = pl_calloc(1, sizeof(*cur));
        atomic_init(&cur->refs, 1);
        return;
    }
    if (!cur)
        return;
    if (pl_gwq_batch_commit(pl_gw.db) != PL_OK) {
        pl_log_error("gateway", "a batch did not commit: %s",
                     pl_gwq_error(pl_gw.db));
        cur->failed = 1;
    }
    batch_release(cur);
    cur = NULL;
}

static void db_work(struct pl_work *w)
{
    struct db_job *j = (struct db_job *)w;
    j->job->work(j->job);
    if (!cur)
        return; /* committed by itself */
    j->b = cur;
    atomic_fetch_add(&cur->refs, 1);
    if (!pl_gwq_in_batch(pl_gw.db)) {
        /* An error rolled the batch's transaction back: this job and
         * the ones before it are lost; the next ones commit alone. */
        pl_gwq_batch_commit(pl_gw.db); /* resets; fails */
        cur->failed = 1;
        batch_release(cur);
        cur = NULL;
    }
}

static void db_done(struct pl_work *w)
{
    struct db_job *j = (struct db_job *)w;
    if (j->b && j->b->failed)
        j->job->result = PL_ESTORAGE;
    batch_release(j->b);
    struct pl_work *job = j->job;
    pl_free(j);
    if (job->done)
        job->done(job);
}

struct pl_workq *pl__gw_dbq_new(void)
{
    return pl_workq_new("gw-db", 1, db_batch_hook, NULL);
}

void pl_gw_db_submit(struct pl_work *w)
{
    struct db_job *j = pl_calloc(1, sizeof(*j));
    j->w.work = db_work;
    j->w.done = db_done;
    j->job = w;
    w->loop = pl_gw.loop;
    pl_workq_submit(pl_gw.dbq, pl_gw.loop, &j->w);
}

int64_t pl_gw_backoff(int attempts)
{
    int64_t d = pl_gw.c.retry_base_ms;
    for (int i = 1; i < attempts && d < pl_gw.c.retry_max_ms; i++)
        d *= 2;
    if (d > pl_gw.c.retry_max_ms)
        d = pl_gw.c.retry_max_ms;
    /* +/- jitter percent, so instances and messages do not retry in step
     * against a destination that just came back. */
    int64_t span = d * pl_gw.c.retry_jitter / 100;
    if (span > 0) {
        uint32_t r = 0;
        RAND_bytes((unsigned char *)&r, sizeof(r));
        d += (int64_t)(r % (uint64_t)(2 * span + 1)) - span;
    }
    return d < 1 ? 1 : d;
}

char *pl__gw_xml(struct pl_stanza *st)
{
    struct pl_buf b = {0};
    pl_node_serialize(pl_stanza_root(st), NULL, NULL, &b);
    char *s = pl_strndup(b.data + b.off, b.len);
    pl_buf_reset(&b);
    pl_stanza_unref(st);
    return s;
}

void pl__gw_outbox_db(const char *xml)
{
    if (pl_gwq_outbox_add(pl_gw.db, xml) != PL_OK)
        pl_log_error("gateway", "while queueing a report: %s",
                     pl_gwq_error(pl_gw.db));
}

void pl__gw_report_db(const struct pl_gw_msg *m, const char *why)
{
    if (strcmp(m->src_channel, "mail") == 0) {
        pl__gw_mail_report_db(m, why);
        return;
    }
    if (strcmp(m->src_channel, "sms") == 0) {
        pl__gw_sms_report_db(m, why);
        return;
    }
    char *xml = pl__gw_im_report(m, why);
    if (xml)
        pl__gw_outbox_db(xml);
    pl_free(xml);
}

/* ---- the outbox drain ---- */

struct drain_job {
    struct pl_work w;
    struct pl_gwq_out *rows; /* claimed */
    int n;
};

static int draining;

/* Rows whose stanzas parleyd acknowledged, to delete. */
static struct {
    int64_t *v;
    int n, cap;
    int busy; /* a deletion job runs */
} acked;

struct delete_job {
    struct pl_work w;
    int64_t *seqs;
    int n;
};

static void delete_work(struct pl_work *w)
{
    struct delete_job *j = (struct delete_job *)w;
    for (int i = 0; i < j->n; i++)
        pl_gwq_outbox_done(pl_gw.db, j->seqs[i]);
}

static void delete_kick(void);

static void delete_done(struct pl_work *w)
{
    struct delete_job *j = (struct delete_job *)w;
    pl_free(j->seqs);
    pl_free(j);
    acked.busy = 0;
    delete_kick();
}

static void delete_kick(void)
{
    if (acked.busy || !acked.n)
        return;
    struct delete_job *j = pl_calloc(1, sizeof(*j));
    j->w.work = delete_work;
    j->w.done = delete_done;
    j->seqs = acked.v;
    j->n = acked.n;
    acked.v = NULL;
    acked.n = acked.cap = 0;
    acked.busy = 1;
    pl_gw_db_submit(&j->w);
}

struct release_job {
    struct pl_work w;
    int64_t seq;
};

static void release_work(struct pl_work *w)
{
    struct release_job *j = (struct release_job *)w;
    pl_gwq_outbox_release(pl_gw.db, j->seq, pl_gw.c.instance);
}

static void release_done(struct pl_work *w)
{
    pl_free(w);
}

/* Drops this instance's lease on row seq: the next drain of any instance
 * (its poll, or a link coming up) takes it. */
static void release_row(int64_t seq)
{
    struct release_job *j = pl_calloc(1, sizeof(*j));
    j->w.work = release_work;
    j->w.done = release_done;
    j->seq = seq;
    pl_gw_db_submit(&j->w);
}

/* pl_gwc_acked_fn: ud is the row's seq. */
static void row_acked(void *ud, int ok)
{
    int64_t *seq = ud;
    if (!ok) {
        /* The link died first: sent again without waiting for the
         * lease. */
        release_row(*seq);
    } else {
        if (acked.n == acked.cap) {
            acked.cap = acked.cap ? acked.cap * 2 : 64;
            acked.v = pl_realloc(acked.v, (size_t)acked.cap * sizeof(*acked.v));
        }
        acked.v[acked.n++] = *seq;
        delete_kick();
    }
    pl_free(seq);
}

static void claim_work(struct pl_work *w)
{
    struct drain_job *j = (struct drain_job *)w;
    w->result = pl_gwq_outbox_claim(pl_gw.db, pl_gw.c.instance, pl_gw_now(),
                                    pl_gw.c.lease_ms, 64, &j->rows, &j->n);
}

static void claim_done(struct pl_work *w)
{
    struct drain_job *j = (struct drain_job *)w;
    if (w->result != PL_OK)
        j->n = 0;
    for (int i = 0; i < j->n; i++) {
        struct pl_stanza *st = NULL;
        const char *x = j->rows[i].xml;
        int64_t *seq = pl_malloc(sizeof(*seq));
        *seq = j->rows[i].seq;
        if (pl_xml_parse_fragment(x, strlen(x), &st) != PL_OK) {
            pl_log_error("gateway", "outbox row %lld is not XML; dropped",
                         (long long)j->rows[i].seq);
            row_acked(seq, 1);
        } else if (pl_gwc_send_acked(st, row_acked, seq) != PL_OK) {
            /* No link for its domain here: the row waits for its lease
             * (released, the next drain would take the same rows again
             * and again, ahead of the others). */
            pl_free(seq);
        }
        pl_stanza_unref(st);
        pl_free(j->rows[i].xml);
    }
    int again = j->n == 64;
    pl_free(j->rows);
    pl_free(j);
    draining = 0;
    if (again)
        pl_gw_outbox_kick();
}

void pl_gw_outbox_kick(void)
{
    if (draining || !pl_gwc_ready())
        return;
    draining = 1;
    struct drain_job *j = pl_calloc(1, sizeof(*j));
    j->w.work = claim_work;
    j->w.done = claim_done;
    pl_gw_db_submit(&j->w);
}

int pl__gw_outcome_db(struct pl_gw_msg *m, enum pl_gw_outcome o, int parts,
                      const char *detail, const char *channel, int *state)
{
    struct pl_gwq *q = pl_gw.db;
    const char *me = pl_gw.c.instance;
    int rc;
    switch (o) {
    case PL_GW_OUT_SENT:
        rc = pl_gwq_sent(q, m->id, me, parts, detail, state);
        break;
    case PL_GW_OUT_RETRY: {
        char d[1300];
        int64_t wait = pl_gw_backoff(m->attempts);
        snprintf(d, sizeof(d), "%s; retry in %lld ms", detail, (long long)wait);
        rc = pl_gwq_retry(q, m->id, me, pl_gw_now() + wait, d, state);
        break;
    }
    default:
        rc = pl_gwq_finish(q, m->id, me, PL_GW_FAILED, detail);
        *state = PL_GW_FAILED;
    }
    if (rc == PL_OK && pl_gw_state_is_final(*state)) {
        m->state = *state;
        pl__gw_report_db(m, detail);
    } else if (rc == PL_ECONFLICT) {
        pl_log_warn(channel, "message %s: lease lost before the outcome (%s)",
                    m->id, detail);
    }
    return rc;
}

int pl__gw_admit_db(const struct pl_gw_msg *m, struct pl_gw_decision *d,
                    int mode, const struct pl_gw_verdict *v)
{
    if (d->verdict == PL_GW_ALLOW && v &&
        (v->verdict == PL_GW_CHECK_REFUSE ||
         v->verdict == PL_GW_CHECK_TEMPFAIL))
        return pl__gw_check_insert_db(m, v);
    int rc = pl__gw_policy_commit_db(m, d, mode);
    if (rc == PL_OK && v && v->note[0] && mode != PL_GW_COMMIT_PEEK)
        pl_gwq_history_add(pl_gw.db, m->id, PL_GW_QUEUED, pl_gw.c.instance,
                           v->note);
    return rc;
}
