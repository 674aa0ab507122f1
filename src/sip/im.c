/*
 * im.c - page-mode instant messages (RFC 3428) between SIP and everyone
 * else: a MESSAGE (or an INFO outside a dialog with a text body, the
 * legacy equivalent) becomes a <message/> routed like any client's, and a
 * <message/> delivered to a registration's session becomes a MESSAGE sent
 * to its contact.  The mapping is map_im.c's (RFC 7572); this file does the
 * authentication, routing, answers and retries.  API: sip_int.h
 * ("Page-mode messages").
 *
 * SIP -> anything.
 *   - Who sends: the From URI must be a user of one of our hosts (403
 *     otherwise: this server relays for nobody else).  A request that
 *     comes over a TCP/TLS connection on which that user holds a
 *     registration is trusted as that user (the REGISTER on that very
 *     connection was authenticated, and nobody else can write on it);
 *     anything else, UDP always (a source address is easy to forge), is
 *     challenged with 407 Proxy-Authenticate (auth.c), and the
 *     authenticated user must be the From's (403).
 *   - The sender's session is the registration of that user over that
 *     flow (TCP/TLS: the connection; UDP: the source address), else the
 *     request is routed from the user's bare JID without a session (then
 *     carbons and outgoing hooks, which need a sending session, do not
 *     see it).  'from' is always stamped by the server.
 *   - Once: a retransmission is absorbed by the transaction layer; the
 *     same request in a new transaction (same sender, Call-ID and CSeq)
 *     within 64*T1 gets the first one's answer and is not routed again
 *     (at most DEDUP_MAX remembered, the oldest forgotten first).
 *   - Answers: 200 when the router handed it to a session
 *     ("message/delivered"), 202 when offline storage committed it
 *     ("message/stored", mod_offline) or when it left for another server
 *     (whose outcome is unknown here), 404 when the recipient is a user of
 *     ours that does not exist, 480 instead of storing with
 *     sip.offline_messages = "reject", and for an error the router or a
 *     module sends back, RFC 7247 Table 2 (pl_sip_error_from_stanza).  A
 *     module may hold the message and route it later (the blocking list
 *     while it loads): its id and sender tell it.  A request with no
 *     outcome after WAIT_MS (or 32*T1, before the transaction layer's own
 *     500) is answered 202.
 *
 * Anything -> SIP (pl__sip_im_deliver, for the registrar's sessions).
 *   - The <message/> is mapped (bodiless ones are dropped, as RFC 7572
 *     says) and sent as a MESSAGE to the binding's Contact over its flow
 *     (along its Path, RFC 3327: Route fields, to the first hop),
 *     retransmitted over UDP until a final response or Timer F.  Over UDP
 *     a body is limited to 1300 bytes less room for the header fields (RFC
 *     3428 §8: no fragmented MESSAGE on a congestion-unsafe path); larger
 *     bounces <policy-violation/>.
 *   - 2xx: delivered.  No answer (Timer F, 408), 480, 486 or 5xx: the UA
 *     cannot take messages now; its binding is removed (it comes back with
 *     its next REGISTER) and the message is routed again to the account,
 *     so another resource or offline storage takes it, as stream
 *     management does with unacknowledged stanzas.  Any other failure (3xx,
 *     4xx, 6xx) is a refusal: the sender gets the error of RFC 7247 Table
 *     3 (pl_sip_error_reply).
 *
 * Extending: another body type is map_im.c's; a new outcome is a hook
 * here that completes the op with its status.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "alloc.h"
#include "error.h"
#include "hook.h"
#include "host.h"
#include "log.h"
#include "map.h"
#include "map_addr.h"
#include "map_im.h"
#include "resources.h"
#include "router.h"
#include "server.h"
#include "sip_int.h"
#include "stats.h"
#include "storage.h"

#define DEDUP_MAX 4096 /* requests remembered for deduplication */
#define WAIT_MS 10000  /* longest wait for an outcome before 202 */
#define MAX_WAITERS 8  /* transactions answered by one op */
#define UDP_LIMIT 1300 /* RFC 3428 §8 */
#define UDP_HEADERS 500

struct dedup;

/* A MESSAGE from SIP in flight, known by its stanza's id. */
struct op {
    char id[40];               /* the stanza's 'id' */
    struct pl_stanza *st;      /* the message (one reference) */
    struct pl_jid *from, *to;  /* its sender (stamped) and addressee */
    uint64_t sid;              /* the sending session, 0: none */
    uint64_t txn[MAX_WAITERS]; /* transactions to answer */
    int ntxn;                  /* how many */
    struct dedup *dd;          /* its deduplication entry, or NULL */
    struct pl_timer timer;     /* WAIT_MS */
    int err;                   /* an error came back while routing */
    char *err_reason;          /* its Reason-Phrase */
    char *err_contact;         /* and Contact (3xx), or NULL */
    unsigned delivered : 1;    /* handed to a session */
    unsigned routing : 1;      /* inside pl_route */
};

/* A request seen lately: sender, Call-ID, CSeq. */
struct dedup {
    char *key;          /* "user@host\ncall-id\ncseq" */
    int code;           /* its final status, 0 while pending */
    uint64_t at;        /* loop time seen */
    struct op *op;      /* while pending */
    struct dedup *next; /* FIFO, oldest first */
};

static struct pl_map ops;    /* id -> struct op */
static struct pl_map dedups; /* key -> struct dedup */
static struct dedup *dd_head, *dd_tail;
static size_t ndedup;
static uint64_t serial;

static uint64_t now_ms(void)
{
    return pl_loop_now(pl_server_loop());
}

/* ---- deduplication ---- */

static void dedup_drop_head(void)
{
    struct dedup *d = dd_head;
    dd_head = d->next;
    if (!dd_head)
        dd_tail = NULL;
    pl_map_del(&dedups, d->key);
    if (d->op)
        d->op->dd = NULL;
    pl_free(d->key);
    pl_free(d);
    ndedup--;
}

static void dedup_expire(void)
{
    uint64_t window = (uint64_t)pl__sip_settings()->t1 * 64;
    uint64_t now = now_ms();
    while (dd_head &&
           (ndedup > DEDUP_MAX || (dd_head->at + window < now && !dd_head->op)))
        dedup_drop_head();
}

static struct dedup *dedup_add(const char *key)
{
    struct dedup *d = pl_calloc(1, sizeof(*d));
    d->key = pl_strdup(key);
    d->at = now_ms();
    if (dd_tail)
        dd_tail->next = d;
    else
        dd_head = d;
    dd_tail = d;
    pl_map_put(&dedups, d->key, d);
    ndedup++;
    dedup_expire();
    return d;
}

/* ---- SIP -> anything: outcomes ---- */

static void op_free(struct op *op)
{
    pl_timer_stop(&op->timer);
    pl_map_del(&ops, op->id);
    if (op->dd)
        op->dd->op = NULL;
    pl_stanza_unref(op->st);
    pl_jid_free(op->from);
    pl_jid_free(op->to);
    pl_free(op->err_reason);
    pl_free(op->err_contact);
    pl_free(op);
}

/* Answers every transaction of op and ends it. */
static void complete(struct op *op, int code, const char *reason,
                     const char *const *hdrs)
{
    for (int i = 0; i < op->ntxn; i++) {
        struct sip_txn *t = pl__sip_txn_find(op->txn[i]);
        if (t)
            pl__sip_reply(t, code, reason, hdrs);
    }
    if (op->dd)
        op->dd->code = code;
    if (code >= 200 && code < 300)
        pl_stat_inc(sip_messages_in);
    pl_log_debug("sip", "message %s from %s to %s: %d", op->id, op->from->full,
                 op->to->full, code);
    op_free(op);
}

static void on_wait(struct pl_timer *t)
{
    struct op *op = t->data;
    pl_log_info("sip", "message %s to %s: no outcome, answered 202", op->id,
                op->to->full);
    complete(op, 202, NULL, NULL);
}

/* The op a stanza with this id belongs to, if it is from its sender. */
static struct op *op_of(struct pl_stanza *st)
{
    const char *id = pl_stanza_attr(st, "id");
    return id && strncmp(id, "sipm-", 5) == 0 ? pl_map_get(&ops, id) : NULL;
}

/* Whether st is op's message (or its copy: a module that held it, as the
 * blocking list does while it loads, routes a copy later): same id, same
 * sender, to the same account. */
static int is_ours(const struct op *op, struct pl_stanza *st,
                   const struct pl_jid *to)
{
    const char *from = pl_stanza_attr(st, "from");
    return from && strcmp(from, op->from->full) == 0 &&
           (!to || strcmp(to->bare, op->to->bare) == 0);
}

/* "message/delivered": the router gave it to a session. */
static int on_delivered(struct pl_event *ev, void *state)
{
    (void)state;
    struct op *op = op_of(ev->stanza);
    if (!op || !is_ours(op, ev->stanza, ev->to))
        return PL_PASS;
    if (op->routing)
        op->delivered = 1;
    else
        complete(op, 200, NULL, NULL);
    return PL_PASS;
}

/* "message/stored": offline storage committed it. */
static int on_stored(struct pl_event *ev, void *state)
{
    (void)state;
    struct op *op = op_of(ev->stanza);
    if (op && !op->routing && is_ours(op, ev->stanza, NULL))
        complete(op, 202, NULL, NULL);
    return PL_PASS;
}

/* Answers op with the status for an error stanza's contents. */
static void complete_error(struct op *op, int code, const char *reason,
                           const char *contact)
{
    const char *hdrs[] = {"Contact", contact, NULL};
    complete(op, code, reason, contact ? hdrs : NULL);
}

/* "message/bare", "message/full": an error about one of ours comes back
 * to its sender. */
static int on_error(struct pl_event *ev, void *state)
{
    (void)state;
    const char *type = pl_stanza_attr(ev->stanza, "type");
    if (!type || strcmp(type, "error") != 0 || !ev->to)
        return PL_PASS;
    struct op *op = op_of(ev->stanza);
    if (!op || strcmp(ev->to->bare, op->from->bare) != 0)
        return PL_PASS;
    struct pl_sip_error e;
    pl_sip_error_from_stanza(ev->stanza, &e);
    const char *reason = e.reason ? e.reason : pl_sip_reason(e.status);
    if (op->routing) {
        /* The router still uses op's stanza: answered once it returns. */
        if (!op->err) {
            op->err = e.status;
            op->err_reason = pl_strdup(reason);
            op->err_contact = e.contact ? pl_strdup(e.contact) : NULL;
        }
    } else {
        complete_error(op, e.status, reason, e.contact);
    }
    pl_sip_error_clear(&e);
    return PL_HANDLED;
}

/* How long an op waits for an outcome: WAIT_MS, and well before the
 * transaction layer answers an unanswered request itself (64*T1). */
static uint64_t wait_ms(void)
{
    uint64_t t = (uint64_t)pl__sip_settings()->t1 * 32;
    return t < WAIT_MS ? t : WAIT_MS;
}

/* Routes op's stanza and answers what is known at once. */
static void route_op(struct op *op)
{
    struct pl_session *origin = op->sid ? pl_session_by_id(op->sid) : NULL;
    if (op->sid && !origin) {
        /* The registration went meanwhile: from the bare JID. */
        struct pl_jid *bare = pl_jid_bare(op->from);
        pl_jid_free(op->from);
        op->from = bare;
        pl_stanza_set_attr(op->st, "from", bare->full);
    }
    struct pl_host *h = pl_host_find(op->to->domain);
    op->routing = 1;
    pl_route(op->st, op->from, op->to, origin);
    op->routing = 0;
    if (op->err)
        complete_error(op, op->err, op->err_reason, op->err_contact);
    else if (op->delivered)
        complete(op, 200, NULL, NULL);
    else if (!h)
        complete(op, 202, NULL, NULL); /* another server's, or a service */
    else
        pl_timer_start(pl_server_loop(), &op->timer, wait_ms());
}

/* Whether bare has a session that takes messages sent to it (RFC 6121
 * §8.5.2.1: available, non-negative priority). */
static int has_available(const char *bare)
{
    for (struct pl_session *s = pl_session_first(bare); s; s = s->next_res)
        if (s->available && s->priority >= 0)
            return 1;
    return 0;
}

struct exists_job {
    struct pl_job base; /* the recipient's account */
    char id[40];        /* the op */
};

static int exists_run(const struct pl_storage_driver *d, void *db, void *arg)
{
    struct exists_job *j = arg;
    struct pl_account a;
    int rc = d->account_get(db, j->base.host, j->base.user, &a);
    memset(&a, 0, sizeof(a));
    return rc;
}

static void exists_done(int rc, void *arg)
{
    struct exists_job *j = arg;
    struct op *op = pl_map_get(&ops, j->id);
    if (!op) {
        /* gone (shutdown) */
    } else if (rc == PL_ENOT_FOUND) {
        complete(op, 404, NULL, NULL);
    } else if (rc != PL_OK) {
        complete(op, 500, NULL, NULL);
    } else if (pl__sip_settings()->offline_messages == SIP_OFFLINE_REJECT &&
               !has_available(op->to->bare)) {
        complete(op, 480, NULL, NULL);
    } else {
        route_op(op);
    }
    pl_job_free(j);
}

/* ---- SIP -> anything: the request ---- */

static struct pl_str hdr(osip_message_t *m, const char *name)
{
    const char *v = pl__sip_header(m, name, 0);
    return v ? pl_str_c(v) : (struct pl_str){NULL, 0};
}

/* The request is from sender (authenticated), its session s or NULL. */
static void proceed(struct sip_txn *t, struct pl_jid *sender,
                    struct pl_session *s)
{
    osip_message_t *req = pl__sip_txn_request(t);
    char *call_id = NULL;
    osip_call_id_to_str(req->call_id, &call_id);
    size_t kn = strlen(sender->bare) + strlen(call_id ? call_id : "") +
                strlen(req->cseq->number) + 3;
    char *key = pl_malloc(kn);
    snprintf(key, kn, "%s\n%s\n%s", sender->bare, call_id ? call_id : "",
             req->cseq->number);
    dedup_expire();
    struct dedup *d = pl_map_get(&dedups, key);
    if (d) {
        pl_log_debug("sip", "a MESSAGE again in a new transaction: %s",
                     call_id ? call_id : "");
        if (d->code)
            pl__sip_reply(t, d->code, NULL, NULL);
        else if (d->op && d->op->ntxn < MAX_WAITERS)
            d->op->txn[d->op->ntxn++] = t->id;
        else
            pl__sip_reply(t, 500, NULL, NULL);
        goto out;
    }
    char id[40];
    char rnd[9];
    pl__sip_random(rnd, sizeof(rnd));
    snprintf(id, sizeof(id), "sipm-%llx-%s", (unsigned long long)++serial, rnd);
    char *ruri = pl__sip_uri_str(req->req_uri);
    char *from = pl__sip_uri_str(req->from->url);
    char *ctype = NULL;
    if (req->content_type)
        osip_content_type_to_str(req->content_type, &ctype);
    osip_body_t *body = NULL;
    osip_message_get_body(req, 0, &body);
    struct pl_sip_im_in in = {
        .request_uri = pl_str_c(ruri ? ruri : ""),
        .from_uri = pl_str_c(from ? from : ""),
        .from_resource = s ? s->jid->resource : NULL,
        .content_type = ctype ? pl_str_c(ctype) : (struct pl_str){NULL, 0},
        .body = body ? (struct pl_str){body->body, body->length}
                     : (struct pl_str){NULL, 0},
        .call_id = pl_str_c(call_id ? call_id : ""),
        .subject = hdr(req, "Subject"),
        .language = hdr(req, "Content-Language"),
        .id = pl_str_c(id),
    };
    struct pl_sip_im_opts opts = {0, 0, PL_SIP_MAP_SIPS | PL_SIP_MAP_NO_GRUU};
    struct pl_stanza *st = NULL;
    int status = 0;
    int rc = pl_sip_im_to_xmpp(&in, &opts, &st, &status);
    pl_free(ruri);
    pl_free(from);
    osip_free(ctype);
    struct pl_jid *tj = NULL;
    if (rc == PL_OK &&
        pl_jid_parse(pl_str_c(pl_stanza_attr(st, "to")), &tj) != PL_OK) {
        rc = PL_EITEM_NOT_FOUND;
        status = 404;
    }
    if (rc != PL_OK) {
        const char *hdrs[] = {"Accept", PL_SIP_IM_ACCEPT, NULL};
        pl__sip_reply(t, status, NULL, status == 415 ? hdrs : NULL);
        pl_stanza_unref(st);
        goto out;
    }
    struct op *op = pl_calloc(1, sizeof(*op));
    snprintf(op->id, sizeof(op->id), "%s", id);
    pl_stanza_set_attr(st, "id", id);
    op->st = st;
    op->from = s ? pl_jid_dup(s->jid) : pl_jid_dup(sender);
    pl_stanza_set_attr(st, "from", op->from->full);
    op->to = tj;
    op->sid = s ? s->id : 0;
    op->txn[op->ntxn++] = t->id;
    op->dd = dedup_add(key);
    op->dd->op = op;
    pl_timer_init(&op->timer, on_wait, op);
    pl_map_put(&ops, op->id, op);
    struct pl_host *h = pl_host_find(tj->domain);
    if (h && tj->local && !pl_session_first(tj->bare)) {
        /* Nobody online: is there such a user (404 if not, RFC 7247
         * §7.1: the router alone would say service-unavailable, 403)? */
        struct exists_job *j = pl_job_new(sizeof(*j), NULL, 0, h->domain,
                                          tj->local);
        snprintf(j->id, sizeof(j->id), "%s", op->id);
        pl_storage_submit(pl_server_loop(), exists_run, exists_done, j);
    } else if (h && tj->local &&
               pl__sip_settings()->offline_messages == SIP_OFFLINE_REJECT &&
               !has_available(tj->bare)) {
        complete(op, 480, NULL, NULL);
    } else {
        route_op(op);
    }
out:
    pl_free(key);
    osip_free(call_id);
}

static void authed(void *arg, struct sip_txn *t, struct pl_session *s)
{
    struct pl_jid *sender = arg;
    if (t)
        proceed(t, sender, s);
    pl_jid_free(sender);
}

void pl__sip_message(struct sip_txn *t, osip_message_t *req)
{
    if (strcmp(req->sip_method, "INFO") == 0 && pl__sip_to_tag(req)) {
        /* Inside a dialog: this server has none (RFC 6086 §4.2.1). */
        pl__sip_reply(t, 481, NULL, NULL);
        return;
    }
    struct pl_jid *sender = NULL;
    int rc = pl__sip_uri_jid(req->from ? req->from->url : NULL, &sender);
    struct pl_host *h = rc == PL_OK ? pl_host_find(sender->domain) : NULL;
    if (rc != PL_OK || !h || !sender->local) {
        /* Only our users send through us. */
        pl_jid_free(sender);
        pl__sip_reply(t, rc == PL_OK ? 403 : 400,
                      rc == PL_OK ? "Not A User Of This Server" : NULL, NULL);
        return;
    }
    pl__sip_auth(t, h, sender, "From Is Not The Authenticated User",
                 SIP_AUTH_FLOW | SIP_AUTH_PROXY, authed, sender);
}

/* ---- anything -> SIP ---- */

struct out_msg {
    struct pl_stanza *st; /* the message (one reference) */
    uint64_t sid;         /* the binding's session */
};

/* Whether a final status says "not now" rather than "never". */
static int transient(int code)
{
    return code == 408 || code == 480 || code == 486 ||
           (code >= 500 && code < 600);
}

/* Sends a stanza built by the server to its 'to'. */
static void route_built(struct pl_stanza *r)
{
    const char *f = pl_stanza_attr(r, "from");
    const char *to = pl_stanza_attr(r, "to");
    if (f && to)
        pl_route_as(r, f, to);
}

/* The binding could not take st: to the account again (another resource
 * or offline storage), without the binding. */
static void reroute(struct pl_stanza *st, uint64_t sid, int code)
{
    pl__sip_binding_drop(sid, code == 408 ? "no answer to a MESSAGE"
                                          : "a MESSAGE refused for now");
    struct pl_stanza *c = pl_stanza_copy(st);
    struct pl_node *dl = pl_node_child(pl_stanza_root(c), "delay",
                                       "urn:xmpp:delay");
    if (dl)
        pl_node_remove(c, dl);
    const char *to = pl_stanza_attr(c, "to");
    const char *from = pl_stanza_attr(c, "from");
    struct pl_jid *tj = NULL;
    if (to && from && pl_jid_parse(pl_str_c(to), &tj) == PL_OK) {
        pl_log_info("sip", "message to %s: %d, routed to %s again", to, code,
                    tj->bare);
        pl_route_as(c, from, tj->bare);
    }
    pl_jid_free(tj);
    pl_stanza_unref(c);
}

static void on_answer(void *arg, int code, osip_message_t *resp,
                      unsigned retransmissions)
{
    (void)retransmissions;
    struct out_msg *m = arg;
    if (code >= 200 && code < 300) {
        pl_stat_inc(sip_messages_out);
    } else if (code == 503 && !resp) {
        pl_log_info("sip", "message to %s not confirmed before shutdown",
                    pl_stanza_attr(m->st, "to"));
    } else if (transient(code)) {
        reroute(m->st, m->sid, code);
    } else {
        const char *reason = resp && resp->reason_phrase ? resp->reason_phrase
                                                         : "";
        char *contact = NULL;
        osip_contact_t *ct = resp ? osip_list_get(&resp->contacts, 0) : NULL;
        if (ct && ct->url)
            osip_uri_to_str(ct->url, &contact);
        struct pl_stanza *r = pl_sip_error_reply(m->st, code, pl_str_c(reason),
                                                 pl_str_c(contact ? contact
                                                                  : ""));
        osip_free(contact);
        if (r) {
            route_built(r);
            pl_stanza_unref(r);
        }
    }
    pl_stanza_unref(m->st);
    pl_free(m);
}

static void send_failed(void *arg)
{
    struct out_msg *om = arg;
    reroute(om->st, om->sid, 503);
    pl_stanza_unref(om->st);
    pl_free(om);
}

void pl__sip_im_deliver(struct pl_session *s, struct pl_stanza *st)
{
    const struct sip_flow *flow = pl__sip_binding_flow(s);
    struct pl_sip_im_opts opts = {0, 0, 0};
    if (!pl__sip_flow_reliable(flow))
        opts.max_body = UDP_LIMIT - UDP_HEADERS;
    struct pl_sip_im_out o;
    int rc = pl_sip_im_from_xmpp(st, &opts, &o);
    if (rc != PL_OK) {
        pl_route_error(st, rc, NULL);
        return;
    }
    if (!o.body) {
        pl_sip_im_out_clear(&o);
        return; /* no SIP form (chat states, receipts...) */
    }
    size_t fn = strlen(o.from_uri) + 3, tn = strlen(o.request_uri) + 3;
    char *from = pl_malloc(fn), *to = pl_malloc(tn);
    snprintf(from, fn, "<%s>", o.from_uri);
    snprintf(to, tn, "<%s>", o.request_uri);
    osip_message_t *m = NULL;
    rc = pl__sip_request_new("MESSAGE", pl__sip_binding_contact(s), from, to,
                             &m);
    pl_free(from);
    pl_free(to);
    /* Along the binding's Path (RFC 3327 §5.4): a preloaded Route. */
    if (rc == PL_OK)
        rc = pl__sip_routes_apply(m, pl__sip_binding_route(s),
                                  pl__sip_binding_contact(s));
    if (rc == PL_OK) {
        osip_message_set_content_type(m, o.content_type);
        osip_message_set_body(m, o.body, o.body_len);
        if (o.subject)
            osip_message_set_header(m, "Subject", o.subject);
        if (o.language)
            osip_message_set_header(m, "Content-Language", o.language);
    }
    pl_sip_im_out_clear(&o);
    if (rc != PL_OK) {
        osip_message_free(m);
        pl_route_error(st, PL_EJID_MALFORMED, NULL);
        return;
    }
    struct out_msg *om = pl_calloc(1, sizeof(*om));
    om->st = pl_stanza_ref(st);
    om->sid = s->id;
    rc = pl__sip_request_send(flow, m, on_answer, om, NULL);
    if (rc != PL_OK) {
        /* The connection is gone or too many transactions: not now.  On
         * the next turn: the router may be walking the account's sessions
         * (the binding ends, the message is routed to them again). */
        pl_loop_defer(pl_server_loop(), send_failed, om);
    }
}

/* ---- the part ---- */

static int start(struct pl_config *c)
{
    (void)c;
    for (int i = 0; pl_host_at(i); i++) {
        struct pl_host *h = pl_host_at(i);
        pl_hook_add(h, "message/delivered", on_delivered, 0, NULL);
        pl_hook_add(h, "message/stored", on_stored, 0, NULL);
        pl_hook_add(h, "message/bare", on_error, 2000, NULL);
        pl_hook_add(h, "message/full", on_error, 2000, NULL);
    }
    return PL_OK;
}

static void collect_op(const char *key, void *value, void *ud)
{
    (void)key;
    struct op ***v = ud;
    *(*v)++ = value;
}

static void stop(void)
{
    size_t n = ops.count;
    struct op **all = pl_calloc(n + 1, sizeof(*all)), **p = all;
    pl_map_each(&ops, collect_op, &p);
    for (size_t i = 0; i < n; i++)
        complete(all[i], 503, NULL, NULL);
    pl_free(all);
}

static void part_free(void)
{
    stop();
    while (dd_head)
        dedup_drop_head();
    pl_map_clear(&ops);
    pl_map_clear(&dedups);
}

static void admin(json_t *answer)
{
    json_object_set_new(answer, "messages_pending",
                        json_integer((json_int_t)ops.count));
}

const struct sip_part pl__sip_im = {
    .name = "im",
    .start = start,
    .stop = stop,
    .free = part_free,
    .admin = admin,
};
