/*
 * transaction.c - the non-INVITE transactions of RFC 3261 §17: the server
 * transaction (§17.2.2, "NIST") that absorbs retransmitted requests and
 * answers them with the response already sent, and the client transaction
 * (§17.1.2, "NICT") that resends a request of the server's own until a
 * final response or Timer F.  See sip_int.h for the API.
 *
 * Why not libosip2's own transaction layer (osip2/osip.h): in 5.3, as
 * Debian builds it (without libdict), osip_transaction_find walks a linked
 * list of every transaction of the kind for each incoming message, and its
 * timers are polled: osip_timers_*_execute and osip_timers_gettimeout walk
 * every transaction each time, and osip_*_execute copies the list into an
 * array per call.  With tens of thousands of transactions in their
 * Completed state (a UDP one lives 64*T1 = 32 s after its answer) that is
 * linear work per packet and per tick.  The state machines themselves are
 * small, so they are written here: transactions sit in hash tables keyed
 * by the §17.2.3 / §17.1.3 matching rules, each with timers of the event
 * loop (loop.h), armed only for the next event it waits for.
 *
 * Server side, per §17.2.2: Trying (the request is with the handler) ->
 * Proceeding (a 1xx was sent) -> Completed (the final response was sent;
 * every retransmission of the request gets it again) until Timer J,
 * 64*T1 over UDP, 0 over TCP/TLS; then the transaction is gone.  A
 * handler that never answers is a bug: after 64*T1 (the client gave up at
 * Timer F by then) the transaction answers 500 itself and says so in the
 * log, so that its memory is not held for ever.
 *
 * Client side, per §17.1.2: Trying, with Timer E (T1, doubling, at most
 * T2) over UDP and Timer F (64*T1) -> Proceeding on a 1xx (Timer E at T2)
 * -> Completed on a final response, absorbing its retransmissions until
 * Timer K (T4 over UDP, 0 over TCP/TLS).  Timer F: the callback gets 408;
 * a send failure at the start: an error code, no callback.
 *
 * Keys: §17.2.3 with the magic cookie: "3|branch|sent-by|method" (ACK
 * counts as INVITE); without it (RFC 2543 clients), "2|Request-URI|From
 * tag|Call-ID|CSeq number|method|top Via[|To tag]" (the To tag left out
 * for INVITE/ACK, whose ACK carries the tag of our answer).  Client keys
 * are "branch|CSeq method" (§17.1.3).
 *
 * Extending: an INVITE server transaction would be another state set on
 * the same table (keys already fold ACK into INVITE).
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "alloc.h"
#include "error.h"
#include "log.h"
#include "map.h"
#include "server.h"
#include "sip_int.h"
#include "stats.h"

/* A non-INVITE client transaction (§17.1.2). */
struct sip_ctxn {
    uint64_t id;              /* pl__sip_request_abandon's handle */
    int state;                /* enum sip_txn_state */
    char *key;                /* in clients: "branch|METHOD" */
    struct sip_flow flow;     /* where the request goes */
    char *req;                /* the request, serialized */
    size_t req_len;           /* its length */
    uint64_t interval;        /* Timer E's next interval, ms */
    unsigned retransmissions; /* Timer E resends so far */
    struct pl_timer timer;    /* Timer E, then Timer K */
    struct pl_timer timer_f;  /* Timer F */
    sip_client_fn *cb;        /* completion, NULL once called or abandoned */
    void *arg;                /* its argument */
};

static struct pl_map servers;    /* key -> struct sip_txn */
static struct pl_map server_ids; /* hex id -> struct sip_txn */
static struct pl_map clients;    /* key -> struct sip_ctxn */
static struct pl_map client_ids; /* hex id -> struct sip_ctxn */
static uint64_t next_id;

static struct pl_loop *loop(void)
{
    return pl_server_loop();
}

static void id_key(uint64_t id, char out[17])
{
    snprintf(out, 17, "%016llx", (unsigned long long)id);
}

unsigned long pl__sip_txn_count(int client)
{
    return (unsigned long)(client ? clients.count : servers.count);
}

static int over_limit(void)
{
    return servers.count + clients.count >=
           (size_t)pl__sip_settings()->max_transactions;
}

/* ---- keys ---- */

/* Appends s lower-cased. */
static void append_lower(struct pl_buf *b, const char *s)
{
    for (; s && *s; s++) {
        char c = *s >= 'A' && *s <= 'Z' ? (char)(*s + 32) : *s;
        pl_buf_append(b, &c, 1);
    }
}

char *pl__sip_txn_key(osip_message_t *req, const char *method)
{
    osip_via_t *v = osip_list_get(&req->vias, 0);
    if (!v || !v->host || !req->cseq || !req->cseq->number)
        return NULL;
    if (!method)
        method = req->sip_method;
    if (!method)
        return NULL;
    if (strcmp(method, "ACK") == 0)
        method = "INVITE";
    struct pl_buf b = {0};
    const char *branch = pl__sip_branch(req);
    if (branch && strncmp(branch, "z9hG4bK", 7) == 0 && branch[7]) {
        pl_buf_append_str(&b, "3|");
        pl_buf_append_str(&b, branch);
        pl_buf_append(&b, "|", 1);
        append_lower(&b, v->host);
        if (v->port) {
            pl_buf_append(&b, ":", 1);
            pl_buf_append_str(&b, v->port);
        }
    } else {
        /* RFC 2543 compatibility (§17.2.3). */
        char *ruri = NULL, *via = NULL;
        if (!req->req_uri || osip_uri_to_str(req->req_uri, &ruri) != 0 ||
            osip_via_to_str(v, &via) != 0 || !req->call_id ||
            !req->call_id->number) {
            osip_free(ruri);
            osip_free(via);
            pl_buf_reset(&b);
            return NULL;
        }
        const char *ft = pl__sip_from_tag(req), *tt = pl__sip_to_tag(req);
        pl_buf_printf(&b, "2|%s|%s|%s%s%s|%s|%s", ruri, ft ? ft : "",
                      req->call_id->number, req->call_id->host ? "@" : "",
                      req->call_id->host ? req->call_id->host : "",
                      req->cseq->number, via);
        if (strcmp(method, "INVITE") != 0 && tt) {
            pl_buf_append(&b, "|", 1);
            pl_buf_append_str(&b, tt);
        }
        osip_free(ruri);
        osip_free(via);
    }
    pl_buf_append(&b, "|", 1);
    pl_buf_append_str(&b, method);
    char *key = pl_strdup(pl_buf_cstr(&b));
    pl_buf_reset(&b);
    return key;
}

/* ---- server transactions ---- */

static void txn_destroy(struct sip_txn *t)
{
    char id[17];
    id_key(t->id, id);
    pl_map_del(&servers, t->key);
    pl_map_del(&server_ids, id);
    pl_timer_stop(&t->timer);
    if (t->req)
        osip_message_free(t->req);
    pl_free(t->resp);
    pl_free(t->key);
    pl_free(t);
}

static void on_server_timer(struct pl_timer *tm)
{
    struct sip_txn *t = tm->data;
    if (t->state == SIP_TXN_COMPLETED) {
        txn_destroy(t); /* Timer J */
        return;
    }
    /* Unanswered for 64*T1: see the file comment. */
    pl_log_warn("sip", "no answer to %s within %ld ms: 500 sent",
                t->req && t->req->sip_method ? t->req->sip_method : "request",
                64 * pl__sip_settings()->t1);
    pl__sip_reply(t, 500, NULL, NULL);
}

struct sip_txn *pl__sip_txn_match(const char *key)
{
    return key ? pl_map_get(&servers, key) : NULL;
}

struct sip_txn *pl__sip_txn_find(uint64_t id)
{
    char k[17];
    id_key(id, k);
    return pl_map_get(&server_ids, k);
}

void pl__sip_txn_retransmission(struct sip_txn *t)
{
    pl_stat_inc(sip_retransmissions);
    if (t->resp)
        pl__sip_flow_send(&t->flow, t->resp, t->resp_len);
}

struct sip_txn *pl__sip_txn_new(osip_message_t *req, char *key,
                                const struct sip_flow *flow)
{
    if (over_limit() || pl_map_get(&servers, key)) {
        osip_message_free(req);
        pl_free(key);
        return NULL;
    }
    struct sip_txn *t = pl_calloc(1, sizeof(*t));
    t->id = ++next_id;
    t->state = SIP_TXN_TRYING;
    t->key = key;
    t->flow = *flow;
    t->req = req;
    pl__sip_make_tag(req, t->tag);
    pl_timer_init(&t->timer, on_server_timer, t);
    pl_timer_start(loop(), &t->timer, (uint64_t)(64 * pl__sip_settings()->t1));
    char id[17];
    id_key(t->id, id);
    pl_map_put(&servers, key, t);
    pl_map_put(&server_ids, id, t);
    pl_stat_inc(sip_transactions);
    return t;
}

osip_message_t *pl__sip_response_new(struct sip_txn *t, int code,
                                     const char *reason)
{
    return t->req ? pl__sip_response_build(t->req, code, reason, t->tag) : NULL;
}

int pl__sip_reply_msg(struct sip_txn *t, osip_message_t *resp)
{
    if (!resp)
        return PL_EINVAL;
    if (t->state == SIP_TXN_COMPLETED || resp->status_code < 100) {
        osip_message_free(resp);
        return PL_EINVAL;
    }
    size_t len = 0;
    char *s = pl__sip_serialize(resp, &len);
    int code = resp->status_code;
    osip_message_free(resp);
    if (!s)
        return PL_EINVAL;
    pl_free(t->resp);
    t->resp = s;
    t->resp_len = len;
    t->code = code;
    pl_stat_inc(sip_responses_out);
    /* A transport error (§17.2.4) ends nothing early here: the
     * transaction keeps its answer for retransmissions until Timer J. */
    pl__sip_flow_send(&t->flow, s, len);
    if (code < 200) {
        t->state = SIP_TXN_PROCEEDING;
        return PL_OK;
    }
    t->state = SIP_TXN_COMPLETED;
    osip_message_free(t->req);
    t->req = NULL;
    /* Timer J; 0 over a reliable transport, still from the loop so that
     * the caller may look at t until it returns. */
    pl_timer_start(loop(), &t->timer,
                   pl__sip_flow_reliable(&t->flow)
                       ? 0
                       : (uint64_t)(64 * pl__sip_settings()->t1));
    return PL_OK;
}

int pl__sip_reply(struct sip_txn *t, int code, const char *reason,
                  const char *const *hdrs)
{
    osip_message_t *r = pl__sip_response_new(t, code, reason);
    if (!r)
        return PL_EINVAL;
    for (int i = 0; hdrs && hdrs[i] && hdrs[i + 1]; i += 2)
        osip_message_set_header(r, hdrs[i], hdrs[i + 1]);
    return pl__sip_reply_msg(t, r);
}

int pl__sip_reply_stopping(struct sip_txn *t)
{
    const char *hdrs[] = {"Retry-After", "30", NULL};
    return pl__sip_reply(t, 503, NULL, hdrs);
}

int pl__sip_reply_too_brief(struct sip_txn *t, long min)
{
    char v[24];
    snprintf(v, sizeof(v), "%ld", min);
    const char *hdrs[] = {"Min-Expires", v, NULL};
    return pl__sip_reply(t, 423, NULL, hdrs);
}

long pl__sip_expires(struct sip_txn *t, long dflt)
{
    const struct sip_settings *S = pl__sip_settings();
    const char *e = pl__sip_header(pl__sip_txn_request(t), "Expires", 0);
    long v = e ? pl__sip_delta_seconds(e) : dflt;
    if (v < 0) {
        pl__sip_reply(t, 400, "Bad Expires", NULL);
        return -1;
    }
    if (v > 0 && v < S->min_expires) {
        pl__sip_reply_too_brief(t, S->min_expires);
        return -1;
    }
    return v > S->max_expires ? S->max_expires : v;
}

/* ---- client transactions ---- */

static void ctxn_destroy(struct sip_ctxn *c)
{
    char id[17];
    id_key(c->id, id);
    pl_map_del(&clients, c->key);
    pl_map_del(&client_ids, id);
    pl_timer_stop(&c->timer);
    pl_timer_stop(&c->timer_f);
    pl_free(c->req);
    pl_free(c->key);
    pl_free(c);
}

/* Calls the completion once. */
static void complete(struct sip_ctxn *c, int code, osip_message_t *resp)
{
    sip_client_fn *cb = c->cb;
    c->cb = NULL;
    if (cb)
        cb(c->arg, code, resp, c->retransmissions);
}

static void on_timer_f(struct pl_timer *tm)
{
    struct sip_ctxn *c = tm->data;
    pl_stat_inc(sip_client_timeouts);
    pl_timer_stop(&c->timer);
    complete(c, 408, NULL);
    ctxn_destroy(c);
}

static void on_client_timer(struct pl_timer *tm)
{
    struct sip_ctxn *c = tm->data;
    if (c->state == SIP_TXN_COMPLETED) {
        ctxn_destroy(c); /* Timer K */
        return;
    }
    /* Timer E (UDP only). */
    const struct sip_settings *s = pl__sip_settings();
    c->retransmissions++;
    pl_stat_inc(sip_client_retransmissions);
    pl__sip_flow_send(&c->flow, c->req, c->req_len);
    if (c->state == SIP_TXN_PROCEEDING)
        c->interval = (uint64_t)s->t2;
    else if (c->interval * 2 < (uint64_t)s->t2)
        c->interval *= 2;
    else
        c->interval = (uint64_t)s->t2;
    pl_timer_start(loop(), &c->timer, c->interval);
}

/* Adds the top Via of this server over flow with a fresh branch; the
 * branch goes to out (at least 40 bytes). */
static int add_via(osip_message_t *req, const struct sip_flow *flow,
                   char *branch, size_t blen)
{
    char sent_by[300], rnd[25], value[400];
    pl__sip_flow_sent_by(flow, sent_by, sizeof(sent_by));
    pl__sip_random(rnd, sizeof(rnd));
    snprintf(branch, blen, "z9hG4bK%s", rnd);
    snprintf(value, sizeof(value), "SIP/2.0/%s %s;branch=%s;rport",
             pl__sip_transport_name(flow->transport), sent_by, branch);
    osip_via_t *v = NULL;
    if (osip_via_init(&v) != 0 || osip_via_parse(v, value) != 0) {
        osip_via_free(v);
        return PL_EINVAL;
    }
    osip_list_add(&req->vias, v, 0);
    return PL_OK;
}

int pl__sip_request_send(const struct sip_flow *flow, osip_message_t *req,
                         sip_client_fn *cb, void *arg, uint64_t *id)
{
    int rc = PL_EINVAL;
    char branch[48];
    if (!req->sip_method || !req->req_uri || !req->from || !req->to ||
        !req->call_id || !req->cseq || !req->cseq->method ||
        strcmp(req->sip_method, "INVITE") == 0 ||
        strcmp(req->sip_method, "ACK") == 0 ||
        strcmp(req->sip_method, req->cseq->method) != 0)
        goto fail;
    if (over_limit()) {
        rc = PL_ELIMIT;
        goto fail;
    }
    if (!pl__sip_flow_alive(flow)) {
        rc = PL_ECLOSED;
        goto fail;
    }
    if (add_via(req, flow, branch, sizeof(branch)) != PL_OK)
        goto fail;
    size_t len = 0;
    char *s = pl__sip_serialize(req, &len);
    if (!s)
        goto fail;
    rc = pl__sip_flow_send(flow, s, len);
    if (rc != PL_OK && rc != PL_EAGAIN) {
        pl_free(s);
        goto fail;
    }
    struct sip_ctxn *c = pl_calloc(1, sizeof(*c));
    c->id = ++next_id;
    c->state = SIP_TXN_TRYING;
    struct pl_buf k = {0};
    pl_buf_printf(&k, "%s|%s", branch, req->cseq->method);
    c->key = pl_strdup(pl_buf_cstr(&k));
    pl_buf_reset(&k);
    c->flow = *flow;
    c->req = s;
    c->req_len = len;
    c->cb = cb;
    c->arg = arg;
    const struct sip_settings *st = pl__sip_settings();
    pl_timer_init(&c->timer, on_client_timer, c);
    pl_timer_init(&c->timer_f, on_timer_f, c);
    pl_timer_start(loop(), &c->timer_f, (uint64_t)(64 * st->t1));
    if (!pl__sip_flow_reliable(flow)) {
        c->interval = (uint64_t)st->t1;
        pl_timer_start(loop(), &c->timer, c->interval);
    }
    char idk[17];
    id_key(c->id, idk);
    pl_map_put(&clients, c->key, c);
    pl_map_put(&client_ids, idk, c);
    pl_stat_inc(sip_client_requests);
    if (id)
        *id = c->id;
    osip_message_free(req);
    return PL_OK;
fail:
    osip_message_free(req);
    return rc == PL_OK ? PL_EINVAL : rc;
}

void pl__sip_request_abandon(uint64_t id)
{
    char k[17];
    id_key(id, k);
    struct sip_ctxn *c = pl_map_get(&client_ids, k);
    if (c)
        c->cb = NULL;
}

void pl__sip_txn_response(osip_message_t *resp, const struct sip_flow *flow)
{
    (void)flow;
    const char *branch = pl__sip_branch(resp);
    struct sip_ctxn *c = NULL;
    if (branch && resp->cseq && resp->cseq->method) {
        struct pl_buf k = {0};
        pl_buf_printf(&k, "%s|%s", branch, resp->cseq->method);
        c = pl_map_get(&clients, pl_buf_cstr(&k));
        pl_buf_reset(&k);
    }
    if (!c) {
        /* §18.1.2: not ours, or after Timer K: a stray, dropped. */
        pl_stat_inc(sip_dropped);
        osip_message_free(resp);
        return;
    }
    int code = resp->status_code;
    if (c->state == SIP_TXN_COMPLETED) {
        osip_message_free(resp); /* a retransmission of the answer */
        return;
    }
    if (code < 200) {
        c->state = SIP_TXN_PROCEEDING;
        osip_message_free(resp);
        return;
    }
    c->state = SIP_TXN_COMPLETED;
    pl_timer_stop(&c->timer);
    pl_timer_stop(&c->timer_f);
    complete(c, code, resp);
    osip_message_free(resp);
    /* Timer K. */
    pl_timer_start(loop(), &c->timer,
                   pl__sip_flow_reliable(&c->flow)
                       ? 0
                       : (uint64_t)pl__sip_settings()->t4);
}

/* ---- lifetime ---- */

void pl__sip_txn_init(void)
{
}

static void collect(const char *key, void *value, void *ud)
{
    (void)key;
    struct pl_buf *b = ud;
    pl_buf_append(b, &value, sizeof(value));
}

void pl__sip_txn_free(void)
{
    struct pl_buf b = {0};
    pl_map_each(&servers, collect, &b);
    struct pl_str s = pl_buf_str(&b);
    for (size_t i = 0; i + sizeof(void *) <= s.len; i += sizeof(void *)) {
        struct sip_txn *t;
        memcpy(&t, s.p + i, sizeof(t));
        txn_destroy(t);
    }
    pl_buf_reset(&b);
    pl_map_each(&clients, collect, &b);
    s = pl_buf_str(&b);
    for (size_t i = 0; i + sizeof(void *) <= s.len; i += sizeof(void *)) {
        struct sip_ctxn *c;
        memcpy(&c, s.p + i, sizeof(c));
        complete(c, 503, NULL);
        ctxn_destroy(c);
    }
    pl_buf_reset(&b);
    pl_map_clear(&servers);
    pl_map_clear(&server_ids);
    pl_map_clear(&clients);
    pl_map_clear(&client_ids);
}
