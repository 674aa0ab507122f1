/*
 * test_gw_queue.c - the gateway queue's leases: a claimed message is not
 * claimed again until its lease runs out; two processes claiming from
 * one file at once never take the same message; retries, expiry,
 * delivery reports counted once per part; the history records it all.
 */
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../src/core/alloc.h"
#include "../../src/core/error.h"
#include "../../src/gateway/queue.h"
#include "unit.h"

static char *tmp_db(void)
{
    static char path[64];
    snprintf(path, sizeof(path), "/tmp/test_gw_queue.%d.db", (int)getpid());
    unlink(path);
    return path;
}

static void cleanup(const char *path)
{
    char p[80];
    unlink(path);
    snprintf(p, sizeof(p), "%s-wal", path);
    unlink(p);
    snprintf(p, sizeof(p), "%s-shm", path);
    unlink(p);
}

static void add(struct pl_gwq *q, const char *text, int64_t now,
                int64_t expires, char id[PL_GW_ID_LEN + 1])
{
    struct pl_gw_msg m = {0};
    pl_gw_new_id(m.id);
    m.dest = (char *)"sms";
    m.src_channel = (char *)"im";
    m.src_addr = (char *)"alice@localhost/desk";
    m.dst_channel = (char *)"sms";
    m.dst_addr = (char *)"+15551234567";
    m.text = (char *)text;
    m.created = now;
    m.expires = expires;
    m.next_attempt = now;
    CHECK_INT(pl_gwq_insert(q, &m, "test"), PL_OK);
    if (id)
        memcpy(id, m.id, sizeof(m.id));
}

static void free_all(struct pl_gw_msg **v, int n)
{
    for (int i = 0; i < n; i++)
        pl_gw_msg_free(v[i]);
    pl_free(v);
}

static int nhist;
static char last_state[16];
static void count_hist(void *ud, int64_t at, const char *state,
                       const char *instance, const char *detail)
{
    nhist++;
    snprintf(last_state, sizeof(last_state), "%s", state ? state : "");
}

void test_gw_queue_lease(void)
{
    char *path = tmp_db();
    struct pl_gwq *q = NULL;
    CHECK_INT(pl_gwq_open(path, 0, &q), PL_OK);
    int64_t now = 1000000;
    char id[PL_GW_ID_LEN + 1];
    add(q, "hello", now, now + 60000, id);
    struct pl_gw_msg **v = NULL;
    int n = 0;
    CHECK_INT(pl_gwq_claim(q, "sms", "A", now, 5000, 10, &v, &n), PL_OK);
    CHECK_INT(n, 1);
    CHECK_STR(v[0]->id, id);
    CHECK_INT(v[0]->attempts, 1);
    CHECK_INT(v[0]->state, PL_GW_SENDING);
    free_all(v, n);
    /* Leased: nobody else takes it before the lease runs out. */
    CHECK_INT(pl_gwq_claim(q, "sms", "B", now + 4999, 5000, 10, &v, &n), PL_OK);
    CHECK_INT(n, 0);
    free_all(v, n);
    /* A's lease ran out (A died): B takes it, attempt 2. */
    CHECK_INT(pl_gwq_claim(q, "sms", "B", now + 5001, 5000, 10, &v, &n), PL_OK);
    CHECK_INT(n, 1);
    CHECK_INT(v[0]->attempts, 2);
    free_all(v, n);
    /* A, back, cannot record anything on a message it lost. */
    int st0 = -1;
    CHECK_INT(pl_gwq_sent(q, id, "A", 1, "late", &st0), PL_ECONFLICT);
    /* B: a temporary failure, queued for later. */
    int st = -1;
    CHECK_INT(pl_gwq_retry(q, id, "B", now + 20000, "down", &st), PL_OK);
    CHECK_INT(st, PL_GW_QUEUED);
    CHECK_INT(pl_gwq_claim(q, "sms", "B", now + 19999, 5000, 10, &v, &n),
              PL_OK);
    CHECK_INT(n, 0);
    free_all(v, n);
    CHECK_INT(pl_gwq_claim(q, "sms", "B", now + 20000, 5000, 10, &v, &n),
              PL_OK);
    CHECK_INT(n, 1);
    free_all(v, n);
    CHECK_INT(pl_gwq_sent(q, id, "B", 2, "kannel: 2 parts", &st0), PL_OK);
    CHECK_INT(st0, PL_GW_SENT);
    /* Sent: not claimable any more. */
    CHECK_INT(pl_gwq_claim(q, "sms", "B", now + 99999, 5000, 10, &v, &n),
              PL_OK);
    CHECK_INT(n, 0);
    free_all(v, n);
    /* Reports: part 1 twice counts once; part 2 completes it. */
    struct pl_gw_msg *m = NULL;
    CHECK_INT(pl_gwq_report(q, id, 1, 1, "B", "dlr 1", &m), PL_OK);
    CHECK(m == NULL);
    CHECK_INT(pl_gwq_report(q, id, 1, 1, "B", "dlr 1", &m), PL_OK);
    CHECK(m == NULL);
    CHECK_INT(pl_gwq_report(q, id, 2, 1, "B", "dlr 1", &m), PL_OK);
    CHECK(m != NULL && m->state == PL_GW_DELIVERED);
    pl_gw_msg_free(m);
    CHECK_INT(pl_gwq_report(q, id, 2, 1, "B", "dlr 1", &m), PL_OK);
    CHECK(m == NULL);
    CHECK_INT(pl_gwq_report(q, "nosuch", 1, 1, "B", "x", &m), PL_ENOT_FOUND);
    /* accepted, queued, sending, sending, queued, sending, sent,
     * part 1 (sent), delivered. */
    nhist = 0;
    CHECK_INT(pl_gwq_trace(q, id, count_hist, NULL), PL_OK);
    CHECK_INT(nhist, 9);
    /* A note (an intermediate report) is a row in the current state. */
    CHECK_INT(pl_gwq_history_note(q, id, "B", "type 8"), PL_OK);
    CHECK_INT(pl_gwq_history_note(q, "nosuch", "B", "x"), PL_ENOT_FOUND);
    nhist = 0;
    last_state[0] = '\0';
    CHECK_INT(pl_gwq_trace(q, id, count_hist, NULL), PL_OK);
    CHECK_INT(nhist, 10);
    CHECK_STR(last_state, "delivered");
    /* Expiry: a due message past its deadline comes back expired. */
    add(q, "late", now, now + 10, id);
    CHECK_INT(pl_gwq_claim(q, "sms", "A", now + 10, 5000, 10, &v, &n), PL_OK);
    CHECK_INT(n, 1);
    CHECK_INT(v[0]->state, PL_GW_EXPIRED);
    free_all(v, n);
    /* A retry past the expiry expires it. */
    add(q, "retry", now, now + 1000, id);
    CHECK_INT(pl_gwq_claim(q, "sms", "A", now, 500, 10, &v, &n), PL_OK);
    CHECK_INT(n, 1);
    free_all(v, n);
    CHECK_INT(pl_gwq_retry(q, id, "A", now + 2000, "down", &st), PL_OK);
    CHECK_INT(st, PL_GW_EXPIRED);
    pl_gwq_close(q);
    cleanup(path);
}

/* Two processes claim from one file as fast as they can: every message
 * is taken exactly once. */
void test_gw_queue_two_claimers(void)
{
    char *path = tmp_db();
    struct pl_gwq *q = NULL;
    CHECK_INT(pl_gwq_open(path, 0, &q), PL_OK);
    int64_t now = 5000000;
    enum {
        N = 200
    };
    for (int i = 0; i < N; i++)
        add(q, "x", now, now + 600000, NULL);
    pl_gwq_close(q);
    int fds[2][2];
    pid_t pid[2];
    for (int k = 0; k < 2; k++) {
        CHECK(pipe(fds[k]) == 0);
        pid[k] = fork();
        if (pid[k] == 0) {
            struct pl_gwq *c = NULL;
            if (pl_gwq_open(path, 0, &c) != PL_OK)
                _exit(2);
            const char *me = k ? "B" : "A";
            for (;;) {
                struct pl_gw_msg **v = NULL;
                int n = 0;
                if (pl_gwq_claim(c, "sms", me, now, 60000, 3, &v, &n) != PL_OK)
                    _exit(3);
                if (n == 0)
                    break;
                for (int i = 0; i < n; i++) {
                    if (write(fds[k][1], v[i]->id, PL_GW_ID_LEN) !=
                        PL_GW_ID_LEN)
                        _exit(4);
                    int sst;
                    if (pl_gwq_sent(c, v[i]->id, me, 1, "ok", &sst) != PL_OK)
                        _exit(5);
                }
                free_all(v, n);
            }
            pl_gwq_close(c);
            _exit(0);
        }
        close(fds[k][1]);
    }
    static char ids[2 * N + 2][PL_GW_ID_LEN + 1];
    int total = 0, per[2] = {0, 0};
    for (int k = 0; k < 2; k++) {
        char buf[PL_GW_ID_LEN];
        while (read(fds[k][0], buf, sizeof(buf)) == sizeof(buf) &&
               total < 2 * N + 2) {
            memcpy(ids[total], buf, PL_GW_ID_LEN);
            ids[total++][PL_GW_ID_LEN] = '\0';
            per[k]++;
        }
        close(fds[k][0]);
        int status = 0;
        waitpid(pid[k], &status, 0);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    CHECK_INT(total, N);
    int dups = 0;
    for (int i = 0; i < total; i++)
        for (int j = i + 1; j < total; j++)
            dups += strcmp(ids[i], ids[j]) == 0;
    CHECK_INT(dups, 0);
    fprintf(stderr, "  A took %d, B took %d\n", per[0], per[1]);
    cleanup(path);
}

/* A fast SMSC reports delivery before the send is recorded: the reports
 * are counted, and the send's commit finds them and makes the message
 * delivered (to be reported), not merely sent. */
void test_gw_queue_report_first(void)
{
    char *path = tmp_db();
    struct pl_gwq *q = NULL;
    CHECK_INT(pl_gwq_open(path, 0, &q), PL_OK);
    int64_t now = 1000000;
    char id[PL_GW_ID_LEN + 1];
    add(q, "fast", now, now + 60000, id);
    struct pl_gw_msg **v = NULL;
    int n = 0;
    CHECK_INT(pl_gwq_claim(q, "sms", "A", now, 5000, 10, &v, &n), PL_OK);
    CHECK_INT(n, 1);
    free_all(v, n);
    struct pl_gw_msg *m = NULL;
    CHECK_INT(pl_gwq_report(q, id, 1, 1, "A", "dlr 1", &m), PL_OK);
    CHECK(m == NULL); /* the number of parts is not known yet */
    CHECK_INT(pl_gwq_report(q, id, 2, 1, "A", "dlr 2", &m), PL_OK);
    CHECK(m == NULL);
    int st = -1;
    CHECK_INT(pl_gwq_sent(q, id, "A", 2, "kannel: 2 parts", &st), PL_OK);
    CHECK_INT(st, PL_GW_DELIVERED);
    CHECK_INT(pl_gwq_get(q, id, &m), PL_OK);
    CHECK_INT(m ? m->state : -1, PL_GW_DELIVERED);
    pl_gw_msg_free(m);
    /* One part reported of three: sent, not delivered. */
    add(q, "slow", now, now + 60000, id);
    CHECK_INT(pl_gwq_claim(q, "sms", "A", now, 5000, 10, &v, &n), PL_OK);
    CHECK_INT(n, 1);
    free_all(v, n);
    CHECK_INT(pl_gwq_report(q, id, 1, 1, "A", "dlr 1", &m), PL_OK);
    CHECK_INT(pl_gwq_sent(q, id, "A", 3, "kannel: 3 parts", &st), PL_OK);
    CHECK_INT(st, PL_GW_SENT);
    pl_gwq_close(q);
    cleanup(path);
}

/* parleyd sends a stanza again when the component link it went down died
 * unacknowledged (XEP-0198): the copy is not stored twice; an id reused
 * with another text or recipient, or after the window, is a new message. */
static int count_pending(struct pl_gwq *q, int64_t now)
{
    struct pl_gw_msg **v = NULL;
    int n = 0;
    CHECK_INT(pl_gwq_claim(q, "sms", "X", now, 1000, 100, &v, &n), PL_OK);
    free_all(v, n);
    return n;
}

void test_gw_queue_duplicate(void)
{
    char *path = tmp_db();
    struct pl_gwq *q = NULL;
    CHECK_INT(pl_gwq_open(path, 0, &q), PL_OK);
    int64_t now = 5000000;
    struct pl_gw_msg m = {0};
    m.dest = (char *)"sms";
    m.src_channel = (char *)"im";
    m.src_addr = (char *)"alice@localhost/desk";
    m.dst_channel = (char *)"sms";
    m.dst_addr = (char *)"+15551234567";
    m.sender_msgid = (char *)"stanza-1";
    m.text = (char *)"hello";
    m.created = m.next_attempt = now;
    m.expires = now + PL_GWQ_DUP_WINDOW_MS * 3;
    char first[PL_GW_ID_LEN + 1];
    pl_gw_new_id(m.id);
    memcpy(first, m.id, sizeof(first));
    CHECK_INT(pl_gwq_insert(q, &m, "A"), PL_OK);
    /* The copy, seconds later, through another instance. */
    pl_gw_new_id(m.id);
    m.created = m.next_attempt = now + 5000;
    CHECK_INT(pl_gwq_insert(q, &m, "B"), PL_OK);
    CHECK_INT(count_pending(q, now + 6000), 1);
    struct pl_gw_msg *got = NULL;
    CHECK_INT(pl_gwq_get(q, m.id, &got), PL_ENOT_FOUND);
    nhist = 0;
    CHECK_INT(pl_gwq_trace(q, first, count_hist, NULL), PL_OK);
    CHECK_INT(nhist, 4); /* accepted, queued, the copy, sending */
    /* Same id, other text; other recipient; no id: new messages. */
    m.text = (char *)"hello again";
    pl_gw_new_id(m.id);
    CHECK_INT(pl_gwq_insert(q, &m, "A"), PL_OK);
    m.text = (char *)"hello";
    m.dst_addr = (char *)"+15550000000";
    pl_gw_new_id(m.id);
    CHECK_INT(pl_gwq_insert(q, &m, "A"), PL_OK);
    m.dst_addr = (char *)"+15551234567";
    m.sender_msgid = NULL;
    pl_gw_new_id(m.id);
    CHECK_INT(pl_gwq_insert(q, &m, "A"), PL_OK);
    CHECK_INT(count_pending(q, now + 6000), 3);
    /* After the window the id may be reused. */
    m.sender_msgid = (char *)"stanza-1";
    m.created = m.next_attempt = now + PL_GWQ_DUP_WINDOW_MS + 1;
    pl_gw_new_id(m.id);
    CHECK_INT(pl_gwq_insert(q, &m, "A"), PL_OK);
    CHECK_INT(pl_gwq_get(q, m.id, &got), PL_OK);
    pl_gw_msg_free(got);
    pl_gwq_close(q);
    cleanup(path);
}

/* An outbox row whose link died before parleyd acknowledged it is
 * released by its holder (only by its holder) and claimable at once. */
void test_gw_queue_outbox_release(void)
{
    char *path = tmp_db();
    struct pl_gwq *q = NULL;
    CHECK_INT(pl_gwq_open(path, 0, &q), PL_OK);
    CHECK_INT(pl_gwq_outbox_add(q, "<message/>"), PL_OK);
    struct pl_gwq_out *v = NULL;
    int n = 0;
    int64_t now = 1000;
    CHECK_INT(pl_gwq_outbox_claim(q, "A", now, 60000, 10, &v, &n), PL_OK);
    CHECK_INT(n, 1);
    int64_t seq = n ? v[0].seq : 0;
    for (int i = 0; i < n; i++)
        pl_free(v[i].xml);
    pl_free(v);
    CHECK_INT(pl_gwq_outbox_claim(q, "B", now, 60000, 10, &v, &n), PL_OK);
    CHECK_INT(n, 0);
    pl_free(v);
    CHECK_INT(pl_gwq_outbox_release(q, seq, "B"), PL_OK); /* not B's */
    CHECK_INT(pl_gwq_outbox_claim(q, "B", now, 60000, 10, &v, &n), PL_OK);
    CHECK_INT(n, 0);
    pl_free(v);
    CHECK_INT(pl_gwq_outbox_release(q, seq, "A"), PL_OK);
    CHECK_INT(pl_gwq_outbox_claim(q, "B", now, 60000, 10, &v, &n), PL_OK);
    CHECK_INT(n, 1);
    for (int i = 0; i < n; i++)
        pl_free(v[i].xml);
    pl_free(v);
    pl_gwq_close(q);
    cleanup(path);
}
