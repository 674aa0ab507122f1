/*
 * dispatch.c - a received SIP message's way in: parse, check, match to a
 * transaction, answer or pass to the method's handler.  See sip_int.h.
 *
 * Responses go to their client transaction (transaction.c) or are
 * dropped.  A request goes through, in this order:
 *   1. framing and parsing: a message too large gets 513 (RFC 3261
 *      §21.5.7), a datagram whose body is shorter than its Content-Length
 *      or a stream without a usable one gets 400 (§18.3), and a message
 *      libosip2 refuses gets 400 - each only when a response can be
 *      addressed (a top Via and a CSeq, what the client matches answers
 *      on, §17.1.3: RFC 4475 §3.3.1 asks for a 400 even without From, To
 *      and Call-ID); otherwise it is dropped and counted;
 *   2. the stateless checks of pl__sip_check_request (below), answered
 *      without a transaction (§8.2.7: the same request always gets the
 *      same answer, with the same To tag, so a retransmission is answered
 *      the same way without keeping state for a flood of bad requests);
 *   3. ACK: this server sends no 2xx to INVITE and rejects INVITE
 *      statelessly, so every ACK is absorbed (§8.2.7, a stateless UAS
 *      ignores ACK);
 *   4. a retransmission of a request with a transaction (§17.2.3) is
 *      absorbed: the transaction resends its answer, the handler never
 *      sees it again;
 *   5. CANCEL: 200 when it matches a server transaction (which, being
 *      non-INVITE, is not affected, §9.2), else 481;
 *   6. a new server transaction, and the method's handler.
 *
 * The checks (pl__sip_check_request), in RFC order: the syntax
 * libosip2 let through (the exact start line §7.1, single-valued fields
 * once, CSeq within 32 bits and naming the request's method, Max-Forwards
 * 0-255, the mandatory From, To, Call-ID of §8.1.1: 400), too many header
 * fields (513), the version (505), an unknown method (501 with Allow, RFC
 * 4475 §3.1.1.2); then what a relaying server checks first (§16.3): the
 * Request-URI scheme (416) and Max-Forwards 0 (483, unless the method's
 * handler is the final recipient, SIP_M_LOCAL, or the Request-URI has no
 * user part: a request to the server itself, such as OPTIONS sip:domain);
 * then the UAS checks of §8.2: a method known but not served (405 with
 * Allow, §8.2.1), a Request-URI host that is none of ours (404, §8.2.2.1:
 * "If the Request-URI does not identify an address that the UAS is
 * willing to accept requests for, it SHOULD reject the request with a
 * 404"; 403 is for To policies, §8.2.2.1 too), an option tag in Require
 * this server does not support (420 with Unsupported, §8.2.2.3).
 * Max-Forwards may be absent (§16.3 step 3: the check passes; RFC 2543
 * clients send none).
 *
 * Extending: a method's handler is its row in pl__sip_methods; an
 * extension this server implements adds its option tag to supported[].
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "alloc.h"
#include "error.h"
#include "host.h"
#include "jid.h"
#include "log.h"
#include "map_addr.h"
#include "sip_int.h"
#include "stats.h"

static void options(struct sip_txn *t, osip_message_t *req);

#define PIDF "application/pidf+xml" /* pidf.h PL_PIDF_CONTENT_TYPE */

/* Every method this server knows; a NULL fn is answered 405 with Allow
 * until a later part serves it. */
const struct sip_method pl__sip_methods[] = {
    {"REGISTER", pl__sip_register, SIP_M_LOCAL, NULL},   /* RFC 3261 §10 */
    {"MESSAGE", pl__sip_message, 0, "text/plain"},       /* RFC 3428 */
    {"INFO", pl__sip_message, 0, "text/plain"},          /* RFC 6086: page-mode
                                                          * outside a dialog */
    {"SUBSCRIBE", pl__sip_subscribe, SIP_M_LOCAL, NULL}, /* RFC 6665 */
    {"NOTIFY", NULL, 0, NULL},                           /* RFC 6665 */
    {"PUBLISH", pl__sip_publish, SIP_M_LOCAL, PIDF},     /* RFC 3903 */
    {"OPTIONS", options, 0, NULL},                       /* RFC 3261 §11 */
    {"INVITE", NULL, 0, NULL},                           /* no calls: 405 */
    {"ACK", NULL, 0, NULL},                              /* absorbed (step 3) */
    {"CANCEL", NULL, 0, NULL},                           /* step 5 */
    {"BYE", NULL, 0, NULL},
    {"PRACK", NULL, 0, NULL},  /* RFC 3262 */
    {"UPDATE", NULL, 0, NULL}, /* RFC 3311 */
    {"REFER", NULL, 0, NULL},  /* RFC 3515 */
    {NULL, NULL, 0, NULL},
};

/* Option tags (RFC 3261 §19.2) of the extensions this server supports. */
static const char *const supported[] = {"path", NULL}; /* RFC 3327 */

static const struct sip_method *method_row(const char *name)
{
    for (int i = 0; name && pl__sip_methods[i].name; i++)
        if (strcmp(pl__sip_methods[i].name, name) == 0)
            return &pl__sip_methods[i];
    return NULL;
}

/* Joins the rows' names (served only) or accept types. */
static const char *join(int accept_types)
{
    static char allow[256], accept[256];
    char *out = accept_types ? accept : allow;
    if (out[0])
        return out;
    size_t n = 0;
    for (int i = 0; pl__sip_methods[i].name; i++) {
        const struct sip_method *m = &pl__sip_methods[i];
        const char *s = accept_types ? m->accept : m->fn ? m->name : NULL;
        if (!s || (accept_types && strstr(out, s)))
            continue;
        n += (size_t)snprintf(out + n, sizeof(allow) - n, "%s%s", n ? ", " : "",
                              s);
        if (n >= sizeof(allow))
            break;
    }
    return out;
}

const char *pl__sip_allow(void)
{
    return join(0);
}

static const char *supported_list(void)
{
    static char s[128];
    size_t n = 0;
    s[0] = '\0';
    for (int i = 0; supported[i]; i++)
        n += (size_t)snprintf(s + n, sizeof(s) - n, "%s%s", n ? ", " : "",
                              supported[i]);
    return s;
}

static int is_supported(const char *tag, size_t len)
{
    for (int i = 0; supported[i]; i++)
        if (strlen(supported[i]) == len &&
            strncasecmp(supported[i], tag, len) == 0)
            return 1;
    return 0;
}

struct pl_host *pl__sip_request_host(osip_message_t *req)
{
    if (!req->req_uri || !req->req_uri->host)
        return NULL;
    char host[256];
    size_t n = strlen(req->req_uri->host);
    if (n >= sizeof(host))
        return NULL;
    for (size_t i = 0; i <= n; i++) {
        char c = req->req_uri->host[i];
        host[i] = c >= 'A' && c <= 'Z' ? (char)(c + 32) : c;
    }
    /* A fully qualified name may end in a dot. */
    if (n > 1 && host[n - 1] == '.')
        host[n - 1] = '\0';
    struct pl_host *h = pl_host_find(host);
    if (!h && pl__sip_is_local_address(host))
        h = pl_host_at(0);
    return h;
}

struct pl_jid *pl__sip_request_user(osip_message_t *req, struct pl_host **h)
{
    *h = pl__sip_request_host(req);
    struct pl_jid *who = NULL;
    if (pl__sip_uri_jid(req->req_uri, &who) != PL_OK || !*h || !who->local ||
        strcmp(who->domain, (*h)->domain) != 0) {
        pl_jid_free(who);
        return NULL;
    }
    return who;
}

int pl__sip_presence_request(struct sip_txn *t, osip_message_t *req,
                             int stopping, int user, struct pl_host **h,
                             struct pl_jid **who)
{
    *h = pl__sip_request_host(req);
    *who = NULL;
    if (stopping) {
        pl__sip_reply_stopping(t);
        return 0;
    }
    if (!pl__sip_is_presence_event(pl__sip_header(req, "Event", 0))) {
        const char *hdrs[] = {"Allow-Events", "presence", NULL};
        pl__sip_reply(t, 489, NULL, hdrs);
        return 0;
    }
    if (user && !(*who = pl__sip_request_user(req, h))) {
        pl__sip_reply(t, 404, NULL, NULL);
        return 0;
    }
    return 1;
}

/* ---- the checks ---- */

/* Whether the Request-URI's host is a host of ours or one of our
 * addresses. */
static int uri_is_ours(osip_message_t *req)
{
    return pl__sip_request_host(req) ||
           (req->req_uri->host && pl__sip_is_local_address(req->req_uri->host));
}

static void verdict(struct sip_verdict *v, int code, const char *reason)
{
    v->code = code;
    v->reason = reason;
}

/* 1*DIGIT within max; -1 if not. */
static long long number(const char *s, long long max)
{
    if (!s || !*s || strlen(s) > 12)
        return -1;
    long long n = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return -1;
        n = n * 10 + (*s - '0');
    }
    return n <= max ? n : -1;
}

static int sip_scheme(const char *s, size_t n)
{
    return (n == 3 && strncasecmp(s, "sip", 3) == 0) ||
           (n == 4 && strncasecmp(s, "sips", 4) == 0);
}

void pl__sip_check_request(osip_message_t *req, int parsed,
                           const struct sip_start *sl,
                           const struct sip_scan *scan, struct sip_verdict *v)
{
    memset(v, 0, sizeof(*v));
    if (!pl__sip_addressable(req)) {
        verdict(v, -1, NULL);
        return;
    }
    if (!parsed) {
        /* A well-formed start line with another scheme: RFC 4475
         * §3.3.3 asks for 416 whatever the parser thinks of the URI. */
        if (sl->ok && !sip_scheme(sl->scheme.p, sl->scheme.len))
            verdict(v, 416, NULL);
        else
            verdict(v, 400, "Malformed Request");
        return;
    }
    if (!sl->ok) {
        verdict(v, 400, "Malformed Request-Line");
        return;
    }
    if (scan->dup) {
        static const char *const names[] = {
            "Duplicate From",         "Duplicate To",
            "Duplicate Call-ID",      "Duplicate CSeq",
            "Duplicate Max-Forwards", "Duplicate Content-Length",
            "Duplicate Content-Type",
        };
        int i = 0;
        while (!(scan->dup & (1u << i)))
            i++;
        verdict(v, 400, names[i]);
        return;
    }
    if (!req->from || !req->to || !req->call_id || !req->call_id->number) {
        verdict(v, 400,
                !req->from ? "Missing From"
                : !req->to ? "Missing To"
                           : "Missing Call-ID");
        return;
    }
    if (number(req->cseq->number, 4294967295LL) < 0) {
        verdict(v, 400, "Bad CSeq");
        return;
    }
    if (!req->sip_method || strcmp(req->cseq->method, req->sip_method) != 0) {
        /* An unknown method is 501 whatever its CSeq (RFC 4475 §3.1.2.16
         * prefers that). */
        if (!method_row(req->sip_method)) {
            verdict(v, 501, NULL);
            v->hdr_name = "Allow";
            snprintf(v->hdr_value, sizeof(v->hdr_value), "%s", pl__sip_allow());
        } else {
            verdict(v, 400, "CSeq Method Mismatch");
        }
        return;
    }
    const char *mf = pl__sip_header(req, "max-forwards", 0);
    long long hops = mf ? number(mf, 255) : 70;
    if (hops < 0) {
        verdict(v, 400, "Bad Max-Forwards");
        return;
    }
    if ((long)scan->nheaders > pl__sip_settings()->max_headers) {
        verdict(v, 513, "Too Many Header Fields");
        return;
    }
    if (strcasecmp(req->sip_version, "SIP/2.0") != 0) {
        verdict(v, 505, NULL);
        return;
    }
    const struct sip_method *row = method_row(req->sip_method);
    if (!row) {
        verdict(v, 501, NULL);
        v->hdr_name = "Allow";
        snprintf(v->hdr_value, sizeof(v->hdr_value), "%s", pl__sip_allow());
        return;
    }
    /* §8.2.2.3: Require is ignored in ACK and CANCEL; neither goes on to
     * a handler. */
    if (strcmp(row->name, "ACK") == 0 || strcmp(row->name, "CANCEL") == 0)
        return;
    osip_uri_t *u = req->req_uri;
    if (!u || !u->scheme || !sip_scheme(u->scheme, strlen(u->scheme))) {
        verdict(v, 416, NULL);
        return;
    }
    if (!u->host || !u->host[0]) {
        verdict(v, 400, "Malformed Request-URI");
        return;
    }
    if (hops == 0 && u->username && u->username[0] &&
        !(row->flags & SIP_M_LOCAL)) {
        verdict(v, 483, NULL);
        return;
    }
    if (!row->fn) {
        verdict(v, 405, NULL);
        v->hdr_name = "Allow";
        snprintf(v->hdr_value, sizeof(v->hdr_value), "%s", pl__sip_allow());
        return;
    }
    if (!(row->flags & SIP_M_ANY_DOMAIN) && !uri_is_ours(req)) {
        verdict(v, 404, NULL);
        return;
    }
    /* Require: every option tag, however the values were split. */
    size_t n = 0;
    const char *val;
    for (int i = 0; (val = pl__sip_header(req, "require", i)); i++) {
        const char *s = val;
        while (*s) {
            while (*s == ' ' || *s == '\t' || *s == ',')
                s++;
            const char *e = s;
            while (*e && *e != ',' && *e != ' ' && *e != '\t')
                e++;
            if (e > s && !is_supported(s, (size_t)(e - s)) &&
                n + (size_t)(e - s) + 3 < sizeof(v->hdr_value))
                n += (size_t)snprintf(v->hdr_value + n,
                                      sizeof(v->hdr_value) - n, "%s%.*s",
                                      n ? ", " : "", (int)(e - s), s);
            s = e;
        }
    }
    if (n) {
        verdict(v, 420, NULL);
        v->hdr_name = "Unsupported";
    }
}

/* ---- answers without a transaction ---- */

/* Whether back (an answer parsed back) keeps what the client matches
 * it on (§17.1.3): the top Via's sent-by and branch, and the CSeq. */
static int same_match_fields(osip_message_t *req, osip_message_t *back)
{
    osip_via_t *va = osip_list_get(&req->vias, 0);
    osip_via_t *vb = osip_list_get(&back->vias, 0);
    const char *ba = pl__sip_branch(req), *bb = pl__sip_branch(back);
    return back->cseq && req->cseq && back->cseq->number &&
           back->cseq->method &&
           strcmp(back->cseq->number, req->cseq->number) == 0 &&
           strcmp(back->cseq->method, req->cseq->method) == 0 && va && vb &&
           vb->host && strcasecmp(va->host, vb->host) == 0 &&
           (va->port ? vb->port && strcmp(va->port, vb->port) == 0
                     : vb->port == NULL) &&
           (ba ? bb && strcmp(ba, bb) == 0 : bb == NULL);
}

char *pl__sip_stateless_bytes(osip_message_t *req, const struct sip_verdict *v,
                              size_t *len)
{
    char tag[17];
    pl__sip_make_tag(req, tag);
    osip_message_t *r = pl__sip_response_build(req, v->code, v->reason, tag);
    if (!r)
        return NULL;
    if (v->hdr_name)
        osip_message_set_header(r, v->hdr_name, v->hdr_value);
    char *s = pl__sip_serialize(r, len);
    osip_message_free(r);
    if (s) {
        /* Every field copied must read back as written: libosip2 takes
         * some Via or From forms leniently (a COMPAT-mended NUL, a
         * comment) that it then writes in a form it refuses.  Such an
         * answer could not be matched by its client: none is sent.  The
         * refusals are the rare path; one more parse is cheap there. */
        osip_message_t *back = NULL;
        osip_message_init(&back);
        int ok = osip_message_parse(back, s, *len) == 0 &&
                 same_match_fields(req, back);
        osip_message_free(back);
        if (!ok) {
            pl_free(s);
            return NULL;
        }
    }
    return s;
}

/* Answers req with v (or code, reason) without a transaction. */
static void reply_stateless(osip_message_t *req, const struct sip_flow *dest,
                            const struct sip_verdict *v)
{
    size_t len = 0;
    char *s = pl__sip_stateless_bytes(req, v, &len);
    if (!s) {
        pl_stat_inc(sip_dropped);
        return;
    }
    pl__sip_flow_send(dest, s, len);
    pl_free(s);
    pl_stat_inc(sip_responses_out);
}

static void reply_code(osip_message_t *req, const struct sip_flow *dest,
                       int code, const char *reason, const char *hname,
                       const char *hvalue)
{
    struct sip_verdict v;
    memset(&v, 0, sizeof(v));
    v.code = code;
    v.reason = reason;
    v.hdr_name = hname;
    if (hvalue)
        snprintf(v.hdr_value, sizeof(v.hdr_value), "%s", hvalue);
    reply_stateless(req, dest, &v);
}

static void log_refusal(const struct sip_flow *f, osip_message_t *req, int code,
                        const char *reason)
{
    if (pl_log_get_level() < PL_LOG_DEBUG)
        return;
    char ip[64];
    int port;
    pl__sip_flow_peer(f, ip, sizeof(ip), &port);
    pl_log_debug("sip", "%s %s:%d: %s answered %d %s",
                 pl__sip_transport_name(f->transport), ip, port,
                 req && req->sip_method ? req->sip_method : "request", code,
                 reason ? reason : pl_sip_reason(code));
}

static void drop(const struct sip_flow *f, const char *why)
{
    pl_stat_inc(sip_dropped);
    if (pl_log_get_level() < PL_LOG_DEBUG)
        return;
    char ip[64];
    int port;
    pl__sip_flow_peer(f, ip, sizeof(ip), &port);
    pl_log_debug("sip", "%s %s:%d: dropped: %s",
                 pl__sip_transport_name(f->transport), ip, port, why);
}

/* 200 to a CANCEL that matches a server transaction, else 481. */
static void cancel(osip_message_t *req, const struct sip_flow *dest)
{
    int found = 0;
    for (int i = 0; !found && pl__sip_methods[i].name; i++) {
        const char *m = pl__sip_methods[i].name;
        if (strcmp(m, "CANCEL") == 0 || strcmp(m, "ACK") == 0)
            continue;
        char *key = pl__sip_txn_key(req, m);
        found = pl__sip_txn_match(key) != NULL;
        pl_free(key);
    }
    reply_code(req, dest, found ? 200 : 481, NULL, NULL, NULL);
}

void pl__sip_judge(int kind, char *p, size_t n, const struct sip_scan *scan,
                   int stream, osip_message_t **out, int *is_response,
                   struct sip_verdict *v)
{
    memset(v, 0, sizeof(*v));
    *out = NULL;
    *is_response = 0;
    if (!p || !n) {
        verdict(v, -1,
                kind == SIP_FRAME_TOO_LARGE
                    ? "too large, no header section to answer"
                    : "no header section to answer");
        return;
    }
    struct sip_start sl;
    pl__sip_start_line(p, n, &sl);
    osip_message_t *m = NULL;
    int parsed = 0;
    size_t hlen = scan->hlen && scan->hlen <= n ? scan->hlen : n;
    int multipart = 0;
    if (kind == SIP_FRAME_MSG) {
        int rc = pl__sip_parse(p, n, scan, &m);
        multipart = rc == PL_EFEATURE_NOT_IMPLEMENTED;
        parsed = rc == PL_OK || multipart;
    } else
        pl__sip_parse_headers(p, hlen, &m);
    *out = m;
    *is_response = sl.is_response;
    if (sl.is_response) {
        /* §18.3 for a short body, RFC 4475 §3.1.2.18 for a code out of
         * range: responses are never answered, only dropped. */
        if (kind != SIP_FRAME_MSG || !parsed || !sl.ok ||
            !pl__sip_addressable(m) || m->status_code != sl.status ||
            number(m->cseq->number, 4294967295LL) < 0)
            verdict(v, -1, "malformed response");
        return;
    }
    if (!pl__sip_addressable(m)) {
        verdict(v, -1, "malformed request, no Via or CSeq to answer");
        return;
    }
    if (kind == SIP_FRAME_TOO_LARGE) {
        verdict(v, 513, NULL);
    } else if (kind == SIP_FRAME_SHORT) {
        verdict(v, 400, "Body Shorter Than Content-Length");
    } else if (kind == SIP_FRAME_BAD) {
        verdict(v, 400,
                scan->clen_bad             ? "Bad Content-Length"
                : scan->clen < 0 && stream ? "Missing Content-Length"
                                           : "Malformed Request");
    } else {
        pl__sip_check_request(m, parsed, &sl, scan, v);
        if (!v->code && multipart) {
            /* §21.4.13: 415 lists what is understood.  No handler takes
             * a multipart body (see pl__sip_parse). */
            verdict(v, 415, "Multipart Bodies Not Supported");
            v->hdr_name = "Accept";
            snprintf(v->hdr_value, sizeof(v->hdr_value), "%s",
                     "text/plain, application/pidf+xml");
        }
    }
    v->minimal = !parsed;
}

static void receive_request(const struct sip_flow *flow, int kind,
                            osip_message_t *req, const struct sip_verdict *v)
{
    pl_stat_inc(sip_requests_in);
    if (v->code < 0) {
        pl_stat_inc(sip_malformed);
        drop(flow, v->reason);
        osip_message_free(req);
        return;
    }
    struct sip_flow dest;
    pl__sip_response_flow(req, flow, &dest);
    if (v->code) {
        if (kind == SIP_FRAME_TOO_LARGE || v->code == 513)
            pl_stat_inc(sip_too_large);
        else if (v->code == 400)
            pl_stat_inc(sip_malformed);
        log_refusal(flow, req, v->code, v->reason);
        pl_stat_inc(sip_rejected);
        reply_stateless(req, &dest, v);
        osip_message_free(req);
        return;
    }
    if (strcmp(req->sip_method, "ACK") == 0) {
        osip_message_free(req); /* step 3 */
        return;
    }
    char *key = pl__sip_txn_key(req, NULL);
    struct sip_txn *t = pl__sip_txn_match(key);
    if (t) {
        pl__sip_txn_retransmission(t);
        pl_free(key);
        osip_message_free(req);
        return;
    }
    if (strcmp(req->sip_method, "CANCEL") == 0) {
        pl_free(key);
        cancel(req, &dest);
        osip_message_free(req);
        return;
    }
    if (!key || pl__sip_txn_count(0) + pl__sip_txn_count(1) >=
                    (unsigned long)pl__sip_settings()->max_transactions) {
        pl_stat_inc(sip_rejected);
        reply_code(req, &dest, key ? 503 : 400,
                   key ? NULL : "Malformed Request", key ? "Retry-After" : NULL,
                   "5");
        pl_free(key);
        osip_message_free(req);
        return;
    }
    const struct sip_method *row = method_row(req->sip_method);
    t = pl__sip_txn_new(req, key, &dest);
    if (!t)
        return;
    pl_stat_inc(sip_requests_handled);
    row->fn(t, t->req);
}

void pl__sip_receive(const struct sip_flow *flow, int kind, char *p, size_t n,
                     const struct sip_scan *scan)
{
    osip_message_t *m = NULL;
    int is_response = 0;
    struct sip_verdict v;
    pl__sip_judge(kind, p, n, scan, flow->transport != SIP_UDP, &m,
                  &is_response, &v);
    if (!m) {
        if (kind == SIP_FRAME_TOO_LARGE)
            pl_stat_inc(sip_too_large);
        else
            pl_stat_inc(sip_malformed);
        drop(flow, v.reason ? v.reason : "unparsable");
        return;
    }
    if (is_response) {
        pl_stat_inc(sip_responses_in);
        if (v.code < 0) {
            pl_stat_inc(sip_malformed);
            drop(flow, v.reason);
            osip_message_free(m);
            return;
        }
        pl__sip_txn_response(m, flow);
        return;
    }
    receive_request(flow, kind, m, &v);
}

/* ---- OPTIONS (RFC 3261 §11.2) ---- */

static void options(struct sip_txn *t, osip_message_t *req)
{
    (void)req;
    osip_message_t *r = pl__sip_response_new(t, 200, NULL);
    if (!r)
        return;
    osip_message_set_header(r, "Allow", pl__sip_allow());
    osip_message_set_header(r, "Accept", join(1));
    osip_message_set_header(r, "Accept-Encoding", "identity");
    osip_message_set_header(r, "Accept-Language", "en");
    osip_message_set_header(r, "Supported", supported_list());
    pl__sip_reply_msg(t, r);
}
