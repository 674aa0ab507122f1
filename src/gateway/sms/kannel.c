/*
 * kannel.c - SMS through Kannel: sendsms requests out, delivery reports
 * and mobile-originated messages in.
 *
 * Out: the "sms" queue is claimed in batches (queue.c leases); each
 * message is planned by gsm.c and every part goes to smsbox's sendsms
 * (HTTP GET through libcurl, on the "http" work queue) with its coding
 * (0: GSM 7-bit, 2: UCS-2), charset=UTF-8, the concatenation UDH when
 * there are several parts, dlr-mask, and a dlr-url that carries the queue
 * id and the part number back: <callback.url>/dlr?id=ID&part=N&type=%d.
 * Kannel's answer decides: 2xx sent; 5xx, 408, 429 or no answer (Kannel
 * down) a temporary failure, retried with backoff until the message
 * expires; other 4xx (bad credentials, a number Kannel refuses) failed.
 *
 * In: a small HTTP listener (callback.address/port) parsed by the core's
 * strict parser (src/http/parse.h), answering GET only:
 *   /dlr?id=&part=&type=   Kannel's delivery report: type 1 delivered to
 *                          the phone, 2 not delivered, 16 refused by the
 *                          SMSC (both fail the message), 4 and 8
 *                          (queued, accepted by the SMSC) go to the
 *                          history only.
 *   /mo?from=&to=&text=    an SMS from a phone (smsbox sms-service
 *                          get-url with %p, %P, %a): one starting with
 *                          an e-mail address, or answering an e-mail's
 *                          SMS, goes by e-mail (route.c); otherwise to
 *                          the IM user who last wrote to that number,
 *                          else to the user who linked it, as a chat
 *                          message from +NUMBER@sms.<host>; with neither
 *                          it is refused (recorded, and reported to the
 *                          phone by SMS), as it is when the content
 *                          checks refuse it (check.h).  The policy
 *                          (policy.h) is asked first; its refusals are
 *                          stored and told to the phone by SMS (at most
 *                          once per policy.sms_notice).
 * A report or an SMS is answered only once its database job committed
 * (so a "200 OK" means it is stored): "200 OK" with an empty body
 * (smsbox's omit-empty then sends nothing back to the phone), "503" when
 * it could not be stored, or a 4xx for a malformed request.  Connections
 * persist (HTTP/1.1 keep-alive, RFC 9112 section 9.3) unless the client
 * or an error says otherwise: smsbox reuses them, which saves an accept,
 * a close and their epoll calls per report; while a request waits for
 * its commit, a pipelined one waits (the connection is then not read).
 *
 * Connections: the HTTP workers take libcurl handles from a pool and put
 * them back, so each keeps its connection to smsbox open (HTTP/1.1
 * keep-alive) instead of a connect, a socket pair and a close per part.
 *
 * Idempotency: Kannel has no request key, so a message is sent again
 * only when its lease ran out without an outcome (its holder died or
 * hung between the request and the commit): the window is the time
 * between Kannel's answer and the commit of "sent", a few milliseconds.
 */
#include <curl/curl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "alloc.h"
#include "conn.h"
#include "error.h"
#include "gateway/address.h"
#include "gateway/check.h"
#include "gateway/core.h"
#include "gateway/cross.h"
#include "gateway/policy.h"
#include "gateway/sms/gsm.h"
#include "http/parse.h"
#include "log.h"
#include "stanza.h"

static struct {
    int claiming;                 /* a claim job is out */
    long inflight;                /* messages being sent */
    struct pl_timer poll;         /* queue poll */
    struct pl_listener *listener; /* callback listener */
    int stopping;
} K;

/* ---- sending ---- */

/* Idle libcurl handles (each with its open connection); freed at exit,
 * after the HTTP work queue has stopped. */
static struct {
    pthread_mutex_t lock;
    CURL *h[64];
    int n;
} pool = {PTHREAD_MUTEX_INITIALIZER, {0}, 0};

static CURL *handle_get(void)
{
    CURL *c = NULL;
    pthread_mutex_lock(&pool.lock);
    if (pool.n > 0)
        c = pool.h[--pool.n];
    pthread_mutex_unlock(&pool.lock);
    return c ? c : curl_easy_init();
}

static void handle_put(CURL *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&pool.lock);
    if (pool.n < (int)(sizeof(pool.h) / sizeof(pool.h[0]))) {
        pool.h[pool.n++] = c;
        c = NULL;
    }
    pthread_mutex_unlock(&pool.lock);
    curl_easy_cleanup(c);
}

static void pool_free(void)
{
    pthread_mutex_lock(&pool.lock);
    while (pool.n > 0)
        curl_easy_cleanup(pool.h[--pool.n]);
    pthread_mutex_unlock(&pool.lock);
}

static size_t discard(char *p, size_t size, size_t n, void *data)
{
    (void)p;
    (void)data;
    return size * n;
}

enum outcome {
    O_SENT = PL_GW_OUT_SENT,
    O_RETRY = PL_GW_OUT_RETRY,
    O_FAILED = PL_GW_OUT_FAILED
};

struct send_job {
    struct pl_work w;
    struct pl_gw_msg *m; /* owned */
    int outcome;         /* enum outcome */
    int parts;           /* parts sent */
    char detail[256];    /* for the history */
    int state;           /* after the database step */
};

static void append_param(CURL *c, struct pl_buf *u, const char *name,
                         const char *val, size_t len)
{
    char *e = curl_easy_escape(c, val, (int)len);
    pl_buf_printf(u, "&%s=%s", name, e ? e : "");
    curl_free(e);
}

/* One sendsms request; returns the outcome and fills detail. */
static int sendsms(CURL *c, const struct pl_gw_msg *m, const char *text,
                   size_t len, int coding, const uint8_t *udh, int part,
                   char *detail, size_t dlen)
{
    struct pl_buf u = {0};
    pl_buf_append_str(&u, pl_gw.c.sendsms_url);
    pl_buf_append_str(&u, strchr(pl_gw.c.sendsms_url, '?') ? "" : "?");
    append_param(c, &u, "username", pl_gw.c.kannel_user,
                 strlen(pl_gw.c.kannel_user));
    append_param(c, &u, "password", pl_gw.c.kannel_pass,
                 strlen(pl_gw.c.kannel_pass));
    append_param(c, &u, "to", m->dst_addr, strlen(m->dst_addr));
    if (pl_gw.c.sms_sender[0])
        append_param(c, &u, "from", pl_gw.c.sms_sender,
                     strlen(pl_gw.c.sms_sender));
    append_param(c, &u, "text", text, len);
    pl_buf_printf(&u, "&charset=UTF-8&coding=%d", coding);
    if (udh)
        append_param(c, &u, "udh", (const char *)udh, 6);
    if (pl_gw.c.dlr_mask) {
        char dlr[1024];
        snprintf(dlr, sizeof(dlr), "%s/dlr?id=%s&part=%d&type=%%d",
                 pl_gw.c.cb_url, m->id, part);
        pl_buf_printf(&u, "&dlr-mask=%ld", pl_gw.c.dlr_mask);
        append_param(c, &u, "dlr-url", dlr, strlen(dlr));
    }
    curl_easy_setopt(c, CURLOPT_URL, pl_buf_cstr(&u));
    curl_easy_setopt(c, CURLOPT_TIMEOUT, pl_gw.c.kannel_timeout);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
    CURLcode rc = curl_easy_perform(c);
    pl_buf_reset(&u);
    if (rc != CURLE_OK) {
        snprintf(detail, dlen, "kannel unreachable: %s",
                 curl_easy_strerror(rc));
        return O_RETRY;
    }
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    snprintf(detail, dlen, "kannel answered %ld", status);
    if (status >= 200 && status < 300)
        return O_SENT;
    if (status >= 500 || status == 408 || status == 429)
        return O_RETRY;
    return O_FAILED;
}

static void send_work(struct pl_work *w)
{
    struct send_job *j = (struct send_job *)w;
    struct pl_gw_msg *m = j->m;
    struct pl_gsm_plan plan;
    if (pl_gsm_plan(m->text, strlen(m->text), (unsigned)pl_gw.c.max_parts,
                    &plan) != PL_OK) {
        j->outcome = O_FAILED;
        snprintf(j->detail, sizeof(j->detail), "text does not fit SMS");
        return;
    }
    CURL *c = handle_get();
    /* The reference tells this message's parts from another's. */
    /* (From the id's random end: its start is the time.) */
    uint8_t ref = (uint8_t)strtoul((char[]){m->id[PL_GW_ID_LEN - 2],
                                            m->id[PL_GW_ID_LEN - 1], 0},
                                   NULL, 16);
    j->outcome = O_SENT;
    for (unsigned i = 0; c && i < plan.nparts && j->outcome == O_SENT; i++) {
        uint8_t udh[6];
        if (plan.nparts > 1)
            pl_gsm_udh(udh, ref, (uint8_t)plan.nparts, (uint8_t)(i + 1));
        j->outcome = sendsms(c, m, m->text + plan.parts[i].off,
                             plan.parts[i].len, plan.coding,
                             plan.nparts > 1 ? udh : NULL, (int)i + 1,
                             j->detail, sizeof(j->detail));
        if (j->outcome == O_SENT)
            j->parts++;
    }
    if (!c) {
        j->outcome = O_RETRY;
        snprintf(j->detail, sizeof(j->detail), "curl_easy_init failed");
    }
    if (j->outcome == O_SENT)
        snprintf(j->detail, sizeof(j->detail), "kannel accepted %d part%s (%s)",
                 j->parts, j->parts == 1 ? "" : "s",
                 plan.coding == PL_GSM_7BIT ? "GSM 7-bit" : "UCS-2");
    if (j->outcome == O_SENT)
        handle_put(c);
    else
        curl_easy_cleanup(c); /* a connection in doubt is not reused */
    pl_gsm_plan_free(&plan);
}

/* The outcome, in the database; reports when final. */
static void outcome_work(struct pl_work *w)
{
    struct send_job *j = (struct send_job *)w;
    w->result = pl__gw_outcome_db(j->m, (enum pl_gw_outcome)j->outcome,
                                  j->parts, j->detail, "sms", &j->state);
}

static void outcome_done(struct pl_work *w)
{
    struct send_job *j = (struct send_job *)w;
    pl_log_debug("sms", "message %s: %s", j->m->id, j->detail);
    pl_gw_msg_free(j->m);
    pl_free(j);
    K.inflight--;
    pl_gw_outbox_kick();
    pl_gw_sms_kick();
}

static void send_done(struct pl_work *w)
{
    w->work = outcome_work;
    w->done = outcome_done;
    pl_gw_db_submit(w);
}

struct claim_job {
    struct pl_work w;
    int max;
    struct pl_gw_msg **v;
    int n;
};

static void claim_work(struct pl_work *w)
{
    struct claim_job *j = (struct claim_job *)w;
    w->result = pl_gwq_claim(pl_gw.db, "sms", pl_gw.c.instance, pl_gw_now(),
                             pl_gw.c.lease_ms, j->max, &j->v, &j->n);
    for (int i = 0; w->result == PL_OK && i < j->n; i++)
        if (j->v[i]->state == PL_GW_EXPIRED)
            pl__gw_report_db(j->v[i], "its expiry passed");
}

static void claim_done(struct pl_work *w)
{
    struct claim_job *j = (struct claim_job *)w;
    K.claiming = 0;
    int full = w->result == PL_OK && j->n == j->max;
    if (w->result != PL_OK)
        j->n = 0;
    int expired = 0;
    for (int i = 0; i < j->n; i++) {
        if (j->v[i]->state != PL_GW_SENDING) {
            expired = 1;
            pl_gw_msg_free(j->v[i]);
            continue;
        }
        struct send_job *s = pl_calloc(1, sizeof(*s));
        s->w.work = send_work;
        s->w.done = send_done;
        s->m = j->v[i];
        K.inflight++;
        pl_workq_submit(pl_gw.httpq, pl_gw.loop, &s->w);
    }
    pl_free(j->v);
    pl_free(j);
    if (expired)
        pl_gw_outbox_kick();
    if (full)
        pl_gw_sms_kick();
}

void pl_gw_sms_kick(void)
{
    if (K.claiming || K.stopping || K.inflight >= pl_gw.c.batch)
        return;
    K.claiming = 1;
    struct claim_job *j = pl_calloc(1, sizeof(*j));
    j->w.work = claim_work;
    j->w.done = claim_done;
    j->max = (int)(pl_gw.c.batch - K.inflight);
    pl_gw_db_submit(&j->w);
}

static void on_poll(struct pl_timer *t)
{
    pl_gw_sms_kick();
    pl_gw_outbox_kick();
    pl_timer_start(pl_gw.loop, t, (uint64_t)pl_gw.c.poll_ms);
}

/* ---- system messages (verification codes) ---- */

struct sys_job {
    struct pl_work w;
    struct pl_gw_msg *m;
};

static void sys_work(struct pl_work *w)
{
    struct sys_job *j = (struct sys_job *)w;
    w->result = pl_gwq_insert(pl_gw.db, j->m, pl_gw.c.instance);
}

static void sys_done(struct pl_work *w)
{
    struct sys_job *j = (struct sys_job *)w;
    if (w->result != PL_OK)
        pl_log_error("sms", "while storing a system SMS to %s", j->m->dst_addr);
    pl_gw_msg_free(j->m);
    pl_free(j);
    pl_gw_sms_kick();
}

void pl_gw_sms_system(const char *address, const char *text)
{
    struct pl_gw_msg *m = pl_calloc(1, sizeof(*m));
    pl_gw_new_id(m->id);
    m->dest = pl_strdup("sms");
    m->src_channel = pl_strdup("system");
    m->src_addr = pl_strdup(pl_gw.c.sms_domain);
    m->dst_channel = pl_strdup("sms");
    m->dst_addr = pl_strdup(address);
    m->text = pl_strdup(text);
    m->created = m->next_attempt = pl_gw_now();
    m->expires = m->created + pl_gw.c.code_ttl_ms;
    struct sys_job *j = pl_calloc(1, sizeof(*j));
    j->w.work = sys_work;
    j->w.done = sys_done;
    j->m = m;
    pl_gw_db_submit(&j->w);
}

/* ---- the callback listener ---- */

struct cb_conn {
    struct pl_conn *conn;
    struct pl_http_parser p;
    int closing;             /* answered with Connection: close */
    int keep;                /* the current request may persist */
    int held;                /* reading stopped (pl_conn_hold) */
    struct cb_conn **waiter; /* the job that will answer, or NULL */
    struct pl_buf rest;      /* bytes read after a waiting request */
};

/* The decoded value of query parameter name in target (new string), or
 * NULL. */
static char *param(struct pl_str target, const char *name)
{
    const char *q = memchr(target.p, '?', target.len);
    if (!q)
        return NULL;
    const char *end = target.p + target.len;
    size_t nl = strlen(name);
    for (const char *p = q + 1; p < end;) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        if (!amp)
            amp = end;
        if ((size_t)(amp - p) > nl && memcmp(p, name, nl) == 0 &&
            p[nl] == '=') {
            const char *v = p + nl + 1;
            char *out = pl_malloc((size_t)(amp - v) + 1), *o = out;
            for (; v < amp; v++) {
                int h, l;
                if (*v == '+') {
                    *o++ = ' ';
                } else if (*v == '%' && amp - v > 2 &&
                           (h = pl_hex_value(v[1])) >= 0 &&
                           (l = pl_hex_value(v[2])) >= 0) {
                    *o++ = (char)(h * 16 + l);
                    v += 2;
                } else if (*v == '%') {
                    pl_free(out);
                    return NULL; /* malformed escape */
                } else {
                    *o++ = *v;
                }
            }
            *o = '\0';
            if (memchr(out, '\0', (size_t)(o - out))) {
                pl_free(out);
                return NULL;
            }
            return out;
        }
        p = amp + 1;
    }
    return NULL;
}

static void answer(struct cb_conn *cc, int status, const char *reason)
{
    if (cc->closing || !cc->conn)
        return;
    int close = !cc->keep || status >= 500 || status == 400;
    char h[160];
    int n = snprintf(h, sizeof(h),
                     "HTTP/1.1 %d %s\r\nContent-Length: 0\r\n%s\r\n", status,
                     reason, close ? "Connection: close\r\n" : "");
    pl_conn_write(cc->conn, h, (size_t)n);
    if (close) {
        cc->closing = 1;
        pl_conn_close(cc->conn);
    }
}

/* The request of cc waits for job's commit (slot is the job's pointer
 * back to cc).  Reading stops only when more bytes come meanwhile (a
 * client pipelining): two epoll calls a request saved otherwise. */
static void wait_for(struct cb_conn *cc, struct cb_conn **slot)
{
    *slot = cc;
    cc->waiter = slot;
}

static void cb_feed(struct cb_conn *cc, const char *p, size_t n);

/* A job's database step is done: its answer (rc its result), then the
 * requests that came meanwhile. */
static void answer_after(struct cb_conn *cc, int rc)
{
    if (!cc)
        return; /* the connection closed first */
    cc->waiter = NULL;
    if (rc == PL_ESTORAGE)
        answer(cc, 503, "Service Unavailable");
    else
        answer(cc, 200, "OK");
    if (cc->closing)
        return;
    struct pl_buf rest = cc->rest;
    memset(&cc->rest, 0, sizeof(cc->rest));
    cb_feed(cc, rest.data + rest.off, rest.len);
    pl_buf_reset(&rest);
    if (!cc->closing && !cc->waiter && cc->held) {
        cc->held = 0;
        pl_conn_hold(cc->conn, 0);
    }
}

struct dlr_job {
    struct pl_work w;
    struct cb_conn *cc; /* to answer, NULL once it closed */
    char *id;
    int part, type;
    struct pl_gw_msg *changed;
};

static void dlr_work(struct pl_work *w)
{
    struct dlr_job *j = (struct dlr_job *)w;
    char d[64];
    snprintf(d, sizeof(d), "kannel delivery report type %d", j->type);
    if (j->type == 1 || j->type == 2 || j->type == 16) {
        w->result = pl_gwq_report(pl_gw.db, j->id, j->part, j->type == 1,
                                  pl_gw.c.instance, d, &j->changed);
        if (j->changed)
            pl__gw_report_db(j->changed, j->type == 1
                                             ? "delivered"
                                             : "the SMSC reports it was not "
                                               "delivered");
    } else {
        snprintf(d, sizeof(d), "part %d: kannel report type %d%s", j->part,
                 j->type,
                 j->type == 8   ? " (accepted by the SMSC)"
                 : j->type == 4 ? " (queued on the SMSC)"
                                : "");
        w->result = pl_gwq_history_note(pl_gw.db, j->id, pl_gw.c.instance, d);
    }
}

static void dlr_done(struct pl_work *w)
{
    struct dlr_job *j = (struct dlr_job *)w;
    if (w->result != PL_OK)
        pl_log_info("sms", "delivery report for %s (part %d, type %d): %s",
                    j->id, j->part, j->type,
                    w->result == PL_ENOT_FOUND ? "no such message"
                                               : "not stored");
    answer_after(j->cc, w->result);
    if (j->changed)
        pl_gw_outbox_kick();
    pl_gw_msg_free(j->changed);
    pl_free(j->id);
    pl_free(j);
}

/* Hands an SMS stored as id to its IM user through the outbox; database
 * thread. */
static void deliver_mo(struct pl_gwq *q, const char *id, const char *number,
                       const char *jid, const char *text)
{
    struct pl_stanza *st = pl_stanza_new("message", PL_NS_CLIENT);
    char from[256];
    snprintf(from, sizeof(from), "%s@%s", number, pl_gw.c.sms_domain);
    pl_stanza_set_attr(st, "from", from);
    pl_stanza_set_attr(st, "to", jid);
    pl_stanza_set_attr(st, "type", "chat");
    pl_stanza_set_attr(st, "id", id);
    struct pl_node *b = pl_node_add_child(st, pl_stanza_root(st), "body",
                                          PL_NS_CLIENT);
    pl_node_add_text(st, b, text, strlen(text));
    char *xml = pl__gw_xml(st);
    pl__gw_outbox_db(xml);
    pl_free(xml);
    pl_gwq_finish(q, id, pl_gw.c.instance, PL_GW_SENT, "handed to parleyd");
}

struct mo_job {
    struct pl_work w;
    struct cb_conn *cc; /* to answer, NULL once it closed */
    char *from, *text;
    struct pl_gw_decision pd; /* the policy's (policy.h) */
    int no_user;              /* refused: nobody to deliver to */
    struct pl_gw_check chk;   /* the content checks (check.h) */
    int mail;                 /* it went to the mail queue (route.c) */
};

static void mo_work(struct pl_work *w)
{
    struct mo_job *j = (struct mo_job *)w;
    struct pl_gwq *q = pl_gw.db;
    char *jid = NULL;
    /* Not checked (a checker down, check.fail closed) is refused: Kannel
     * has its answer already, nothing would try again. */
    if (j->chk.v.verdict == PL_GW_CHECK_TEMPFAIL)
        j->chk.v.verdict = PL_GW_CHECK_REFUSE;
    /* Refused already (the policy on the loop, the content checks): it is
     * stored refused below, wherever it was going. */
    int refused = j->pd.verdict != PL_GW_ALLOW ||
                  j->chk.v.verdict == PL_GW_CHECK_REFUSE;
    /* "bob@example.org hello", or a reply to an e-mail's SMS. */
    if (!refused && (j->mail = pl__gw_sms_to_mail_db(j->from, j->text)) != 0)
        return;
    if (pl_gwq_peer_get(q, j->from, &jid) != PL_OK)
        pl_gwq_link_owner(q, "sms", j->from, &jid);
    struct pl_gw_msg m = {0};
    pl_gw_new_id(m.id);
    m.dest = (char *)"im";
    m.src_channel = (char *)"sms";
    m.src_addr = j->from;
    m.dst_channel = (char *)"im";
    m.dst_addr = jid ? jid : (char *)"(nobody)";
    m.text = j->text;
    m.created = m.next_attempt = pl_gw_now();
    m.expires = m.created + pl_gw.c.expiry_ms;
    if (!jid && !refused) {
        /* Stored refused like a policy refusal, reported by SMS below. */
        j->no_user = 1;
        j->pd.verdict = PL_GW_DENY;
        j->pd.record = 1;
        snprintf(j->pd.reason, sizeof(j->pd.reason),
                 "no one wrote to or linked this number");
    }
    w->result = pl__gw_admit_db(&m, &j->pd, PL_GW_COMMIT_INSERT, &j->chk.v);
    if (w->result == PL_OK) {
        deliver_mo(q, m.id, j->from, jid, j->text);
    } else if ((w->result == PL_EPOLICY_VIOLATION && j->no_user) ||
               w->result == PL_EFORBIDDEN) {
        /* Nobody to give it to, or the checks refused it: the report SMS
         * (route.c).  Policy refusals are told in mo_done, rate-limited. */
        m.state = PL_GW_REFUSED;
        pl__gw_report_db(&m, w->result == PL_EFORBIDDEN ? j->chk.v.reason
                                                        : j->pd.reason);
    }
    pl_free(jid);
}

static void mo_done(struct pl_work *w)
{
    struct mo_job *j = (struct mo_job *)w;
    answer_after(j->cc, w->result);
    /* A policy refusal is told to the phone by SMS, at most once per
     * policy.sms_notice per number (each one costs an SMS). */
    if (w->result == PL_EPOLICY_VIOLATION && !j->no_user &&
        pl_gw_policy_sms_notice(j->from, 0)) {
        char text[161];
        snprintf(text, sizeof(text), "Not delivered: %.145s", j->pd.reason);
        pl_gw_sms_system(j->from, text);
    }
    if (j->mail)
        pl_gw_mail_kick();
    pl_free(j->from);
    pl_free(j->text);
    pl_gw_verdict_free(&j->chk.v);
    pl_free(j);
    pl_gw_outbox_kick();
    pl_gw_sms_kick(); /* a report SMS may be waiting */
}

static void on_request(struct cb_conn *cc)
{
    struct pl_http_request *r = &cc->p.req;
    if (!pl_str_eq_c(r->method, "GET")) {
        answer(cc, 405, "Method Not Allowed");
        return;
    }
    struct pl_str t = r->target;
    size_t path_len = t.len;
    const char *qm = memchr(t.p, '?', t.len);
    if (qm)
        path_len = (size_t)(qm - t.p);
    struct pl_str path = {t.p, path_len};
    if (pl_str_eq_c(path, "/dlr")) {
        char *id = param(t, "id"), *part = param(t, "part"),
             *type = param(t, "type");
        int ok = id && part && type && strlen(id) == PL_GW_ID_LEN &&
                 atoi(part) > 0 && atoi(type) > 0;
        if (ok) {
            struct dlr_job *j = pl_calloc(1, sizeof(*j));
            j->w.work = dlr_work;
            j->w.done = dlr_done;
            j->id = id;
            id = NULL;
            j->part = atoi(part);
            j->type = atoi(type);
            wait_for(cc, &j->cc);
            pl_gw_db_submit(&j->w);
        }
        pl_free(id);
        pl_free(part);
        pl_free(type);
        if (!ok)
            answer(cc, 400, "Bad Request");
    } else if (pl_str_eq_c(path, "/mo")) {
        char *from = param(t, "from"), *text = param(t, "text");
        char *num = NULL;
        if (from && text &&
            pl_gw_e164(from, pl_gw.c.default_cc, &num) == PL_OK) {
            struct mo_job *j = pl_calloc(1, sizeof(*j));
            j->w.work = mo_work;
            j->w.done = mo_done;
            j->from = num;
            j->text = text;
            text = NULL;
            struct pl_gw_policy_req pr = {"sms", num, "im", NULL};
            wait_for(cc, &j->cc);
            if (pl_gw_policy_check(&pr, 0, &j->pd) != PL_GW_ALLOW) {
                pl_gw_db_submit(&j->w); /* refused: no checks needed */
            } else {
                j->chk.text = j->text;
                j->chk.from = j->from;
                pl_gw_check_submit(&j->chk, &j->w);
            }
        } else {
            answer(cc, 400, "Bad Request");
        }
        pl_free(from);
        pl_free(text);
    } else {
        answer(cc, 404, "Not Found");
    }
}

/* Parses requests until one waits for its commit, the connection
 * closes, or the bytes run out; bytes after a waiting request are kept
 * for answer_after(). */
static void cb_feed(struct cb_conn *cc, const char *p, size_t n)
{
    while (!cc->closing) {
        if (cc->waiter) {
            if (n) {
                pl_buf_append(&cc->rest, p, n);
                if (!cc->held) {
                    cc->held = 1;
                    pl_conn_hold(cc->conn, 1);
                }
            }
            return;
        }
        size_t used = 0;
        struct pl_str body;
        enum pl_http_event ev = pl_http_parse(&cc->p, p, n, &used, &body);
        p += used;
        n -= used;
        if (ev == PL_HTTP_ERROR) {
            cc->keep = 0;
            answer(cc, cc->p.status, "Bad Request");
        } else if (ev == PL_HTTP_DONE) {
            on_request(cc);
        } else if (ev == PL_HTTP_HEAD) {
            cc->keep = cc->p.req.keep_alive;
        } else if (ev == PL_HTTP_MORE) {
            break;
        }
    }
}

static void cb_data(struct pl_conn *c, const char *p, size_t n)
{
    cb_feed(c->data, p, n);
}

static void cb_closed(struct pl_conn *c)
{
    struct cb_conn *cc = c->data;
    if (cc->waiter)
        *cc->waiter = NULL; /* its job completes without answering */
    pl_buf_reset(&cc->rest);
    pl_http_parser_free(&cc->p);
    pl_free(cc);
}

static const struct pl_conn_ops cb_ops = {
    .data = cb_data,
    .closed = cb_closed,
};

static void cb_accept(struct pl_listener *l, int fd,
                      const struct sockaddr_storage *addr, void *data)
{
    (void)l;
    (void)addr;
    (void)data;
    struct pl_conn_limits lim = {1u << 20, 1u << 20, 1u << 20};
    struct cb_conn *cc = pl_calloc(1, sizeof(*cc));
    struct pl_http_limits hl = {8192, 16384, 64, (uint64_t)pl_gw.c.cb_max_body};
    pl_http_parser_init(&cc->p, &hl);
    cc->conn = pl_conn_new(pl_gw.loop, fd, &cb_ops, cc, &lim);
    pl_conn_set_idle(cc->conn, 10000, 0);
    pl_conn_start(cc->conn, NULL);
}

int pl_gw_sms_start(void)
{
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return PL_EIO;
    atexit(pool_free);
    int rc = pl_listener_open(pl_gw.loop, pl_gw.c.cb_address,
                              (int)pl_gw.c.cb_port, cb_accept, NULL,
                              &K.listener);
    if (rc != PL_OK) {
        pl_log_error("sms", "cannot listen on %s:%ld for Kannel",
                     pl_gw.c.cb_address, pl_gw.c.cb_port);
        return rc;
    }
    pl_timer_init(&K.poll, on_poll, NULL);
    pl_timer_start(pl_gw.loop, &K.poll, 0);
    return PL_OK;
}

void pl_gw_sms_stop(void)
{
    K.stopping = 1;
    pl_timer_stop(&K.poll);
    if (K.listener)
        pl_listener_close(K.listener);
    K.listener = NULL;
}
