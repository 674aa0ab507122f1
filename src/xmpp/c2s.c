/*
 * c2s.c - client-to-server XML streams; see c2s.h.
 *
 * State machine (RFC 6120 §4-§7):
 *   header -> features -> [STARTTLS -> restart] -> SASL -> restart ->
 *   bind -> bound (stanzas routed)
 * Any violation ends the stream with the stream error the RFC names
 * (§4.9.3), preceded by our stream header if it was not sent yet
 * (§4.9.1.2).  Blocking steps (account lookup, PBKDF2 for PLAIN) run off
 * the loop; their completions find the stream again by session id.
 */
#include "c2s.h"

#include <arpa/inet.h>
#include <malloc.h>
#include <fcntl.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "conn.h"
#include "error.h"
#include "framing.h"
#include "host.h"
#include "log.h"
#include "loop.h"
#include "map.h"
#include "router.h"
#include "scram.h"
#include "server.h"
#include "sm.h"
#include "stats.h"
#include "storage.h"
#include "work.h"
#include "xml.h"

#define NS_TLS "urn:ietf:params:xml:ns:xmpp-tls"
#define NS_SASL "urn:ietf:params:xml:ns:xmpp-sasl"
#define NS_BIND "urn:ietf:params:xml:ns:xmpp-bind"

enum state {
    ST_HEADER = 0, /* waiting for the (re)started stream header */
    ST_FEATURES,   /* header answered; negotiating */
    ST_BOUND,      /* resource bound; routing stanzas */
};

enum mech {
    M_NONE = 0,
    M_PLAIN,
    M_SCRAM_SHA1,
    M_SCRAM_SHA256,
    M_SCRAM_SHA1_PLUS,
    M_SCRAM_SHA256_PLUS,
};

static const char *const mech_names[] = {
    "", "PLAIN", "SCRAM-SHA-1", "SCRAM-SHA-256", "SCRAM-SHA-1-PLUS",
    "SCRAM-SHA-256-PLUS",
};

struct c2s_listener {
    struct pl_listener *l; /* socket */
    int tls;               /* enum pl_tls_mode */
};

struct c2s {
    struct pl_session sess;       /* the routable part; sess.impl == this */
    struct pl_conn *conn;         /* NULL once closed */
    struct pl_xml_parser *xml;    /* stream parser */
    struct pl_host *host;         /* host named by the stream's 'to' */
    int state;                    /* enum state */
    int tls_mode;                 /* listener's enum pl_tls_mode */
    unsigned secure : 1;          /* TLS is up */
    unsigned authed : 1;          /* SASL succeeded */
    unsigned header_sent : 1;     /* our stream header is out */
    unsigned closing : 1;         /* stream error or close sent */
    unsigned plus_offered : 1;    /* -PLUS mechanisms were offered */
    unsigned sasl_busy : 1;       /* waiting on storage or a worker */
    unsigned no_resume : 1;       /* ended on purpose: no hibernation */
    unsigned hibernated : 1;      /* XEP-0198: connection gone, session
                                   * kept for resumption */
    unsigned sasl_gen;            /* SASL exchanges started or aborted */
    int mech;                     /* enum mech in progress */
    int auth_failures;            /* SASL failures so far */
    struct pl_scram_server *scram; /* SCRAM exchange in progress */
    char *user;                   /* authenticated (or claimed) localpart */
    char cbtype[24];              /* channel binding type of this exchange */
    char id[24];                  /* stream id */
    struct pl_timer timer;        /* handshake and idle deadlines */
    struct pl_timer rtimer;       /* XEP-0198: a <resume/> waiting */
    char *resume_previd;          /* that <resume/>'s previd */
    uint32_t resume_h;            /* and its h */
    int resume_tries;             /* polls so far */
    uint64_t opened_ms;           /* loop time at accept */
    uint64_t keepalive_ms;        /* loop time of the last keepalive */
    struct c2s *prev, *next;      /* all open streams */
};

static struct c2s_listener *listeners;
static int nlisteners;
static struct pl_map per_ip;   /* ip -> connection count */

static unsigned long nconns;
static struct pl_settings *S;  /* settings in force */
static struct c2s *all;        /* every open stream */
static struct pl_map resumable; /* XEP-0198 id -> struct c2s */
static int stopping;           /* pl_c2s_stop ran */

static void free_value(const char *key, void *value, void *ud)
{
    pl_free(value);
}

static struct pl_map auth_fails; /* ip -> struct fails */

struct fails {
    uint64_t since; /* loop time the window began */
    long count;     /* failures in it */
};

/* Per-address SASL failure count in the current window. */
static struct fails *fails_of(const char *ip, uint64_t now, int create)
{
    struct fails *f = pl_map_get(&auth_fails, ip);
    if (f && now - f->since >= (uint64_t)S->auth_failure_window * 1000) {
        f->since = now;
        f->count = 0;
    }
    if (!f && create) {
        if (auth_fails.count > 100000) { /* bound memory under a spray */
            struct pl_map old = auth_fails;
            memset(&auth_fails, 0, sizeof(auth_fails));
            pl_map_each(&old, free_value, NULL);
            pl_map_clear(&old);
        }
        f = pl_calloc(1, sizeof(*f));
        f->since = now;
        pl_map_put(&auth_fails, ip, f);
    }
    return f;
}
static unsigned long napped;   /* parsers freed since the last trim */
static struct pl_timer trim_timer; /* hands freed memory back */
static struct pl_work trim_work;   /* malloc_trim off the loop */
static int trim_busy;              /* trim_work is queued */

static const struct pl_session_ops session_ops;

/* ---- output ---- */

static void out(struct c2s *c, const char *s)
{
    if (c->conn)
        pl_conn_write(c->conn, s, strlen(s));
}

static void out_buf(struct c2s *c, struct pl_buf *b)
{
    if (c->conn)
        pl_conn_write(c->conn, b->data + b->off, b->len);
}

static void send_header(struct c2s *c)
{
    struct pl_buf b = {0};
    pl_stream_id(c->id, 17); /* 64 random bits */
    const char *from = c->host ? c->host->domain : pl_host_at(0)->domain;
    pl_stream_header(&b, PL_NS_CLIENT, from, NULL, c->id,
                     PL_STREAM_V1 | PL_STREAM_LANG);
    out_buf(c, &b);
    pl_buf_reset(&b);
    c->header_sent = 1;
}

/* Ends the stream with an RFC 6120 §4.9.3 condition. */
static void stream_error(struct c2s *c, const char *cond, const char *text)
{
    if (c->closing || !c->conn)
        return;
    if (!c->header_sent)
        send_header(c);
    struct pl_buf b = {0};
    pl_stream_error_xml(&b, cond, text);
    out_buf(c, &b);
    pl_buf_reset(&b);
    c->closing = 1;
    /* A client that went silent may come back and resume (XEP-0198 §5);
     * any other stream error ends the session. */
    if (strcmp(cond, "connection-timeout") != 0)
        c->no_resume = 1;
    pl_stat_inc(stream_errors);
    pl_log_debug("c2s", "%s:%d: stream error %s%s%s", c->conn->ip,
                 c->conn->port, cond, text ? ": " : "", text ? text : "");
    pl_conn_close(c->conn);
}

static void close_stream(struct c2s *c)
{
    if (c->closing || !c->conn)
        return;
    out(c, "</stream:stream>");
    c->closing = 1;
    c->no_resume = 1; /* a closed stream ends the session (XEP-0198 §7) */
    pl_conn_close(c->conn);
}

static void send_stanza(struct pl_session *s, struct pl_stanza *st)
{
    struct c2s *c = s->impl;
    if (s->sm) {
        pl_sm_send(s, st);
        return;
    }
    if (!c->conn || c->closing)
        return;
    struct pl_str x = pl_stanza_serialize(st, PL_NS_CLIENT);
    pl_conn_write(c->conn, x.p, x.len);
}

/* The cached serialization with " to='...'" spliced in after the root's
 * name: a fan-out (a room's broadcast) serializes once for everyone. */
static void send_stanza_to(struct pl_session *s, struct pl_stanza *st,
                           const char *to)
{
    struct c2s *c = s->impl;
    if (!c->conn || c->closing)
        return;
    struct pl_str x = pl_stanza_serialize(st, PL_NS_CLIENT);
    size_t k = 1;
    while (k < x.len && x.p[k] != ' ' && x.p[k] != '>' && x.p[k] != '/')
        k++;
    char head[1200];
    struct pl_buf b = {0};
    size_t tl = strlen(to);
    size_t n = 0;
    int plain = tl < sizeof(head) - 8 && !strpbrk(to, "'&<>\"");
    if (plain) {
        memcpy(head, " to='", 5);
        memcpy(head + 5, to, tl);
        head[5 + tl] = '\'';
        n = tl + 6;
    } else {
        pl_buf_append_str(&b, " to='");
        pl_buf_append_escaped(&b, to, tl, 1);
        pl_buf_append_str(&b, "'");
    }
    pl_conn_write(c->conn, x.p, k);
    if (plain)
        pl_conn_write(c->conn, head, n);
    else
        pl_conn_write(c->conn, b.data + b.off, b.len);
    pl_conn_write(c->conn, x.p + k, x.len - k);
    pl_buf_reset(&b);
}

static void on_resume_timeout(struct pl_timer *t);
static void on_timer(struct pl_timer *t);
static void on_resume_poll(struct pl_timer *t);
static void c2s_free(struct c2s *c);
static void end_session(struct c2s *c);

static void kick(struct pl_session *s, const char *cond, const char *text)
{
    struct c2s *c = s->impl;
    c->no_resume = 1;
    if (c->hibernated) {
        /* Ends on the next loop turn: the caller still holds s. */
        pl_timer_start(pl_server_loop(), &c->timer, 0);
        return;
    }
    stream_error(c, cond, text);
}

static const struct pl_session_ops session_ops = {send_stanza, kick,
                                                  send_stanza_to};

/* ---- features ---- */

static int tls_available(struct c2s *c)
{
    return c->host && c->host->tls && c->tls_mode != PL_TLS_NONE;
}

static int cb_available(struct c2s *c)
{
    return c->secure && S->channel_binding;
}

static void send_features(struct c2s *c)
{
    struct pl_buf b = {0};
    pl_buf_append_str(&b, "<stream:features>");
    if (!c->authed) {
        int need_tls = !c->secure && tls_available(c);
        if (need_tls) {
            pl_buf_append_str(&b, "<starttls xmlns='" NS_TLS "'>");
            if (S->require_encryption)
                pl_buf_append_str(&b, "<required/>");
            pl_buf_append_str(&b, "</starttls>");
        }
        if (c->secure || !S->require_encryption) {
            pl_buf_append_str(&b, "<mechanisms xmlns='" NS_SASL "'>");
            c->plus_offered = 0;
            if (cb_available(c)) {
                pl_buf_append_str(&b,
                                  "<mechanism>SCRAM-SHA-256-PLUS</mechanism>"
                                  "<mechanism>SCRAM-SHA-1-PLUS</mechanism>");
                c->plus_offered = 1;
            }
            pl_buf_append_str(&b, "<mechanism>SCRAM-SHA-256</mechanism>"
                                  "<mechanism>SCRAM-SHA-1</mechanism>");
            if (c->secure && S->allow_plain)
                pl_buf_append_str(&b, "<mechanism>PLAIN</mechanism>");
            pl_buf_append_str(&b, "</mechanisms>");
            if (c->plus_offered)
                /* XEP-0440: the channel-binding types we support. */
                pl_buf_append_str(&b,
                    "<sasl-channel-binding xmlns='urn:xmpp:sasl-cb:0'>"
                    "<channel-binding type='tls-exporter'/>"
                    "<channel-binding type='tls-server-end-point'/>"
                    "</sasl-channel-binding>");
            struct pl_event ev = {"stream-features/preauth", c->host,
                                  &c->sess, NULL, NULL, NULL, &b};
            pl_hook_fire(&ev);
        }
    } else {
        pl_buf_append_str(&b, "<bind xmlns='" NS_BIND "'/>");
        if (S->sm_enable)
            pl_buf_append_str(&b, "<sm xmlns='" PL_NS_SM "'/>");
        struct pl_event ev = {"stream-features", c->host, &c->sess, NULL,
                              NULL, NULL, &b};
        pl_hook_fire(&ev);
    }
    pl_buf_append_str(&b, "</stream:features>");
    out_buf(c, &b);
    pl_buf_reset(&b);
}

/* ---- stream header ---- */

static void on_stream_open(void *ud, struct pl_stanza *hdr)
{
    struct c2s *c = ud;
    struct pl_node *root = pl_stanza_root(hdr);
    if (strcmp(root->ns, PL_NS_STREAMS) != 0) {
        stream_error(c, "invalid-namespace", NULL);
        return;
    }
    if (strcmp(root->name, "stream") != 0) {
        stream_error(c, "bad-format", NULL);
        return;
    }
    /* §4.8.2: the content namespace of a c2s stream is jabber:client. */
    const char *content = pl_node_attr(root, "xmlns");
    if (!content || strcmp(content, PL_NS_CLIENT) != 0) {
        stream_error(c, "invalid-namespace", NULL);
        return;
    }
    const char *to = pl_node_attr(root, "to");
    struct pl_host *h = NULL;
    if (to) {
        char *dom = NULL;
        if (pl_jid_prep_domain(pl_str_c(to), &dom) == PL_OK)
            h = pl_host_find(dom);
        pl_free(dom);
    } else {
        h = c->host ? c->host : pl_host_at(0);
    }
    if (!h || (c->host && h != c->host)) {
        stream_error(c, "host-unknown", NULL);
        return;
    }
    c->host = h;
    const char *ver = pl_node_attr(root, "version");
    send_header(c);
    if (!ver || strtol(ver, NULL, 10) < 1) {
        stream_error(c, "unsupported-version", NULL);
        return;
    }
    c->state = ST_FEATURES;
    send_features(c);
}

static void restart(struct c2s *c)
{
    pl_xml_parser_stop(c->xml);
    pl_xml_parser_reset(c->xml);
    c->state = ST_HEADER;
    c->header_sent = 0;
}

/* ---- SASL ---- */

static void sasl_failure(struct c2s *c, const char *cond)
{
    struct pl_buf b = {0};
    pl_buf_printf(&b, "<failure xmlns='" NS_SASL "'><%s/></failure>", cond);
    out_buf(c, &b);
    pl_buf_reset(&b);
    pl_scram_server_free(c->scram);
    c->scram = NULL;
    c->mech = M_NONE;
    if (strcmp(cond, "aborted") == 0)
        return;
    pl_stat_inc(auth_failures);
    pl_log_info("c2s", "%s:%d: authentication failed for '%s' (%s)",
                c->conn->ip, c->conn->port, c->user ? c->user : "", cond);
    if (strcmp(cond, "not-authorized") == 0) {
        struct fails *f = fails_of(c->conn->ip, pl_loop_now(c->conn->loop),
                                   1);
        if (++f->count == S->auth_failures_per_ip)
            pl_log_warn("c2s", "%s: %ld authentication failures, refusing "
                        "attempts for up to %ld s", c->conn->ip, f->count,
                        S->auth_failure_window);
    }
    if (++c->auth_failures >= S->max_auth_failures)
        close_stream(c); /* RFC 6120 §6.4.5: bounded retries */
}

static void sasl_success(struct c2s *c, const char *data, size_t len)
{
    struct pl_buf b = {0};
    pl_buf_append_str(&b, "<success xmlns='" NS_SASL "'>");
    if (data)
        pl_base64_encode((const unsigned char *)data, len, &b);
    pl_buf_append_str(&b, "</success>");
    out_buf(c, &b);
    pl_buf_reset(&b);
    pl_scram_server_free(c->scram);
    c->scram = NULL;
    c->authed = 1;
    pl_stat_inc(auth_success);
    pl_log_info("c2s", "%s:%d: %s@%s authenticated with %s", c->conn->ip,
                c->conn->port, c->user, c->host->domain,
                mech_names[c->mech]);
    restart(c);
}

static void send_challenge(struct c2s *c, struct pl_str data)
{
    struct pl_buf b = {0};
    pl_buf_append_str(&b, "<challenge xmlns='" NS_SASL "'>");
    pl_base64_encode((const unsigned char *)data.p, data.len, &b);
    pl_buf_append_str(&b, "</challenge>");
    out_buf(c, &b);
    pl_buf_reset(&b);
}

/* Checks an authzid against the authenticated account. */
static int authzid_ok(struct c2s *c, const char *authzid)
{
    if (!authzid || !*authzid)
        return 1;
    struct pl_jid *j = NULL;
    int ok = pl_jid_parse(pl_str_c(authzid), &j) == PL_OK && j->local &&
             !j->resource && strcmp(j->local, c->user) == 0 &&
             strcmp(j->domain, c->host->domain) == 0;
    pl_jid_free(j);
    return ok;
}

struct sasl_req {
    struct pl_work w;          /* for the PBKDF2 step (first member) */
    uint64_t sid;              /* stream's session id */
    unsigned gen;              /* the stream's sasl_gen at submission */
    char *host, *user;         /* copies */
    struct pl_account acct;    /* result */
    char *password;            /* PLAIN only, wiped after use */
    size_t password_len;
    int rc;                    /* lookup result */
    int ok;                    /* PLAIN verification result */
};

static void sasl_req_free(struct sasl_req *r)
{
    if (r->password) {
        OPENSSL_cleanse(r->password, r->password_len);
        pl_free(r->password);
    }
    OPENSSL_cleanse(&r->acct, sizeof(r->acct));
    pl_free(r->host);
    pl_free(r->user);
    pl_free(r);
}

static int lookup_run(const struct pl_storage_driver *d, void *db, void *arg)
{
    struct sasl_req *r = arg;
    return d->account_get(db, r->host, r->user, &r->acct);
}

/*
 * The stream r was made for, if it is still open and still in the same
 * exchange.  After <abort/> and a new <auth/>, the old exchange's lookup
 * must not answer the new one: its keys are another account's.
 */
static struct c2s *live(const struct sasl_req *r)
{
    struct pl_session *s = pl_session_by_id(r->sid);
    if (!s)
        return NULL;
    struct c2s *c = s->impl;
    if (!c->conn || c->closing || c->sasl_gen != r->gen)
        return NULL;
    c->sasl_busy = 0;
    return c;
}

static void scram_lookup_done(int rc, void *arg)
{
    struct sasl_req *r = arg;
    struct c2s *c = live(r);
    if (!c || !c->scram) {
        sasl_req_free(r);
        return;
    }
    int h = (c->mech == M_SCRAM_SHA1 || c->mech == M_SCRAM_SHA1_PLUS)
                ? PL_SCRAM_SHA1
                : PL_SCRAM_SHA256;
    struct pl_scram_keys keys;
    if (rc == PL_OK && r->acct.keys[h].iterations) {
        keys = r->acct.keys[h];
    } else {
        if (rc != PL_OK && rc != PL_ENOT_FOUND)
            pl_log_error("c2s", "account lookup failed: %s",
                         pl_strerror(rc));
        /* Unknown user: a stable fake salt; the proof will not match. */
        pl_scram_fake_keys((enum pl_scram_hash)h, pl_str_c(r->user),
                           pl_server_secret(),
                           (unsigned)S->scram_iterations, &keys);
        RAND_bytes(keys.stored_key, sizeof(keys.stored_key));
    }
    struct pl_buf b = {0};
    if (pl_scram_server_first(c->scram, &keys, &b) == PL_OK)
        send_challenge(c, pl_buf_str(&b));
    else
        sasl_failure(c, "temporary-auth-failure");
    pl_buf_reset(&b);
    OPENSSL_cleanse(&keys, sizeof(keys));
    sasl_req_free(r);
}

static void plain_verify_work(struct pl_work *w)
{
    struct sasl_req *r = (struct sasl_req *)w;
    struct pl_str pw = {r->password, r->password_len};
    r->ok = 0;
    for (int h = 0; h < PL_SCRAM_NHASH && !r->ok; h++)
        if (r->acct.keys[h].iterations) {
            r->ok = pl_scram_verify_password(&r->acct.keys[h], pw);
            break;
        }
}

static void plain_verify_done(struct pl_work *w)
{
    struct sasl_req *r = (struct sasl_req *)w;
    struct c2s *c = live(r);
    if (c) {
        if (r->ok)
            sasl_success(c, NULL, 0);
        else
            sasl_failure(c, "not-authorized");
    }
    sasl_req_free(r);
}

static void plain_lookup_done(int rc, void *arg)
{
    struct sasl_req *r = arg;
    struct c2s *c = live(r);
    if (!c) {
        sasl_req_free(r);
        return;
    }
    if (rc != PL_OK) {
        /* Same cost for unknown users, so timing reveals nothing. */
        pl_scram_fake_keys(PL_SCRAM_SHA256, pl_str_c(r->user),
                           pl_server_secret(),
                           (unsigned)S->scram_iterations, &r->acct.keys[1]);
        r->acct.keys[0].iterations = 0;
        RAND_bytes(r->acct.keys[1].stored_key, 32);
    }
    c->sasl_busy = 1;
    r->w.work = plain_verify_work;
    r->w.done = plain_verify_done;
    pl_workq_submit(pl_server_cpu(), pl_server_loop(), &r->w);
}

static struct sasl_req *new_req(struct c2s *c)
{
    struct sasl_req *r = pl_calloc(1, sizeof(*r));
    r->sid = c->sess.id;
    r->gen = c->sasl_gen;
    r->host = pl_strdup(c->host->domain);
    r->user = pl_strdup(c->user);
    c->sasl_busy = 1;
    return r;
}

static int set_user(struct c2s *c, const char *name)
{
    char *local = NULL;
    if (pl_jid_prep_local(pl_str_c(name), &local) != PL_OK)
        return PL_EINVAL;
    pl_free(c->user);
    c->user = local;
    return PL_OK;
}

static void sasl_plain(struct c2s *c, struct pl_str msg)
{
    /* RFC 4616: [authzid] NUL authcid NUL passwd */
    const char *p = msg.p, *end = msg.p + msg.len;
    const char *n1 = memchr(p, 0, msg.len);
    const char *n2 = n1 ? memchr(n1 + 1, 0, (size_t)(end - n1 - 1)) : NULL;
    if (!n1 || !n2 || n2 + 1 > end || memchr(n2 + 1, 0, (size_t)(end - n2 - 1))) {
        sasl_failure(c, "malformed-request");
        return;
    }
    char *authzid = pl_strndup(p, (size_t)(n1 - p));
    char *authcid = pl_strndup(n1 + 1, (size_t)(n2 - n1 - 1));
    char *prepped = NULL;
    int rc = pl_saslprep(pl_str_c(authcid), &prepped);
    if (rc == PL_OK)
        rc = set_user(c, prepped);
    pl_free(prepped);
    pl_free(authcid);
    if (rc != PL_OK || n2 + 1 == end) {
        pl_free(authzid);
        sasl_failure(c, "not-authorized");
        return;
    }
    if (!authzid_ok(c, authzid)) {
        pl_free(authzid);
        sasl_failure(c, "invalid-authzid");
        return;
    }
    pl_free(authzid);
    struct sasl_req *r = new_req(c);
    r->password_len = (size_t)(end - n2 - 1);
    r->password = pl_strndup(n2 + 1, r->password_len);
    pl_storage_submit(pl_server_loop(), lookup_run, plain_lookup_done, r);
}

static int channel_binding(struct c2s *c, const char *type,
                           unsigned char *buf, size_t *len)
{
    if (!type) {
        *len = 0;
        return PL_OK;
    }
    if (!c->conn->ssl)
        return PL_EINVAL;
    if (strcmp(type, "tls-exporter") == 0) {
        *len = 32;
        return pl_tls_exporter(c->conn->ssl, buf, 32);
    }
    if (strcmp(type, "tls-unique") == 0 && S->tls_unique) {
        /* RFC 5929 §3.1: the first Finished message of the handshake:
         * the client's in a full handshake, ours in a resumption.
         * COMPAT: clients compute the same over TLS 1.3 (slixmpp). */
        size_t n = SSL_session_reused(c->conn->ssl)
                       ? SSL_get_finished(c->conn->ssl, buf, 64)
                       : SSL_get_peer_finished(c->conn->ssl, buf, 64);
        if (n == 0 || n > 64)
            return PL_EINVAL;
        *len = n;
        return PL_OK;
    }
    if (strcmp(type, "tls-server-end-point") == 0) {
        struct pl_tls_host *th = pl_tls_host_of(c->conn->ssl);
        if (!th || !th->endpoint_len)
            return PL_EINVAL;
        memcpy(buf, th->endpoint, th->endpoint_len);
        *len = th->endpoint_len;
        return PL_OK;
    }
    return PL_EINVAL;
}

static void scram_step(struct c2s *c, struct pl_str msg)
{
    if (c->sasl_busy) {
        sasl_failure(c, "malformed-request");
        return;
    }
    if (!c->user) {
        /* client-first-message */
        const char *user = NULL, *cb = NULL;
        int rc = pl_scram_server_client_first(c->scram, msg, &user, &cb);
        if (rc == PL_OK && set_user(c, user) != PL_OK)
            rc = PL_ENOT_AUTHORIZED;
        if (rc == PL_OK) {
            unsigned char tmp[64];
            size_t n;
            if (cb && (strlen(cb) >= sizeof(c->cbtype) ||
                       channel_binding(c, cb, tmp, &n) != PL_OK))
                rc = PL_ENOT_AUTHORIZED;
            else
                snprintf(c->cbtype, sizeof(c->cbtype), "%s", cb ? cb : "");
        }
        if (rc == PL_OK &&
            !authzid_ok(c, pl_scram_server_authzid(c->scram))) {
            sasl_failure(c, "invalid-authzid");
            return;
        }
        if (rc != PL_OK) {
            sasl_failure(c, rc == PL_EINVAL ? "malformed-request"
                                            : "not-authorized");
            return;
        }
        pl_storage_submit(pl_server_loop(), lookup_run, scram_lookup_done,
                          new_req(c));
        return;
    }
    /* client-final-message */
    unsigned char cbdata[64];
    size_t cblen = 0;
    struct pl_buf b = {0};
    int rc = PL_OK;
    /* The binding type was fixed by client-first-message. */
    if (c->cbtype[0] &&
        channel_binding(c, c->cbtype, cbdata, &cblen) != PL_OK)
        rc = PL_ENOT_AUTHORIZED;
    if (rc == PL_OK)
        rc = pl_scram_server_client_final(c->scram, msg,
                                          cblen ? cbdata : NULL, cblen, &b);
    if (rc == PL_OK) {
        struct pl_str v = pl_buf_str(&b);
        char *copy = pl_strndup(v.p, v.len);
        sasl_success(c, copy, v.len);
        pl_free(copy);
    } else {
        sasl_failure(c, rc == PL_EINVAL ? "malformed-request"
                                        : "not-authorized");
    }
    pl_buf_reset(&b);
}

static int decode_payload(struct pl_stanza *st, struct pl_buf *b, int *empty)
{
    size_t len;
    const char *t = pl_node_text(st, pl_stanza_root(st), &len);
    *empty = len == 0;
    if (len == 1 && t[0] == '=')
        return PL_OK; /* RFC 6120 §6.4.2: '=' is an empty response */
    return pl_base64_decode((struct pl_str){t, len}, b);
}

static void on_sasl(struct c2s *c, struct pl_stanza *st)
{
    const char *name = pl_stanza_name(st);
    if (c->authed) {
        stream_error(c, "policy-violation", "already authenticated");
        return;
    }
    if (!c->secure && S->require_encryption) {
        sasl_failure(c, "encryption-required");
        return;
    }
    if (strcmp(name, "abort") == 0) {
        c->sasl_busy = 0;
        c->sasl_gen++; /* a pending lookup is now stale */
        pl_free(c->user);
        c->user = NULL;
        sasl_failure(c, "aborted");
        return;
    }
    struct pl_buf data = {0};
    int empty;
    if (strcmp(name, "auth") == 0) {
        if (c->mech != M_NONE || c->sasl_busy) {
            stream_error(c, "policy-violation", "authentication in progress");
            return;
        }
        struct fails *f = fails_of(c->conn->ip, pl_loop_now(c->conn->loop),
                                   0);
        if (f && f->count >= S->auth_failures_per_ip) {
            /* Back off a guessing address until its window ends. */
            sasl_failure(c, "temporary-auth-failure");
            return;
        }
        const char *m = pl_stanza_attr(st, "mechanism");
        int mech = M_NONE;
        for (int i = 1; m && i <= M_SCRAM_SHA256_PLUS; i++)
            if (strcmp(m, mech_names[i]) == 0)
                mech = i;
        int plus = mech == M_SCRAM_SHA1_PLUS || mech == M_SCRAM_SHA256_PLUS;
        if (mech == M_NONE || (plus && !c->plus_offered) ||
            (mech == M_PLAIN && !(c->secure && S->allow_plain))) {
            sasl_failure(c, "invalid-mechanism");
            return;
        }
        if (decode_payload(st, &data, &empty) != PL_OK) {
            sasl_failure(c, "incorrect-encoding");
            goto out;
        }
        c->mech = mech;
        c->sasl_gen++;
        pl_free(c->user);
        c->user = NULL;
        c->cbtype[0] = '\0';
        if (mech != M_PLAIN) {
            enum pl_scram_hash h =
                (mech == M_SCRAM_SHA1 || mech == M_SCRAM_SHA1_PLUS)
                    ? PL_SCRAM_SHA1
                    : PL_SCRAM_SHA256;
            c->scram = pl_scram_server_new(h, plus, c->plus_offered);
        }
        if (empty) {
            /* No initial response: ask for it with an empty challenge. */
            out(c, "<challenge xmlns='" NS_SASL "'/>");
            goto out;
        }
    } else if (strcmp(name, "response") == 0) {
        if (c->mech == M_NONE) {
            stream_error(c, "policy-violation", "no authentication in "
                                                "progress");
            return;
        }
        if (decode_payload(st, &data, &empty) != PL_OK) {
            sasl_failure(c, "incorrect-encoding");
            goto out;
        }
    } else {
        stream_error(c, "unsupported-stanza-type", NULL);
        return;
    }
    if (c->mech == M_PLAIN) {
        if (c->sasl_busy)
            sasl_failure(c, "malformed-request");
        else
            sasl_plain(c, pl_buf_str(&data));
    } else {
        scram_step(c, pl_buf_str(&data));
    }
out:
    if (data.data)
        OPENSSL_cleanse(data.data, data.cap);
    pl_buf_reset(&data);
}

/* ---- binding ---- */

static void reply_iq_error(struct c2s *c, struct pl_stanza *st, int code,
                           const char *text)
{
    struct pl_stanza *r = pl_stanza_error_reply(st, code, text);
    if (!r)
        return;
    pl_stanza_set_attr(r, "from", NULL);
    pl_stanza_set_attr(r, "to", NULL);
    send_stanza(&c->sess, r);
    pl_stanza_unref(r);
}

static void random_resource(char *buf, size_t len)
{
    unsigned char raw[8];
    RAND_bytes(raw, sizeof(raw));
    snprintf(buf, len, "parley-%02x%02x%02x%02x%02x%02x%02x%02x", raw[0],
             raw[1], raw[2], raw[3], raw[4], raw[5], raw[6], raw[7]);
}

static void on_bind(struct c2s *c, struct pl_stanza *st, struct pl_node *bind)
{
    if (c->state == ST_BOUND) {
        reply_iq_error(c, st, PL_ENOT_ALLOWED, "already bound");
        return;
    }
    struct pl_node *res = pl_node_child(bind, "resource", NS_BIND);
    char *resource = NULL;
    char rnd[40];
    if (res) {
        size_t len;
        const char *t = pl_node_text(st, res, &len);
        if (pl_jid_prep_resource((struct pl_str){t, len}, &resource) !=
            PL_OK) {
            reply_iq_error(c, st, PL_EBAD_REQUEST, "invalid resource");
            return;
        }
    } else {
        random_resource(rnd, sizeof(rnd));
        resource = pl_strdup(rnd);
    }
    struct pl_jid *jid = NULL;
    if (pl_jid_make(c->user, c->host->domain, resource, &jid) != PL_OK) {
        pl_free(resource);
        reply_iq_error(c, st, PL_EBAD_REQUEST, "invalid resource");
        return;
    }
    pl_free(resource);
    struct pl_session *old = pl_session_by_full(jid->full);
    if (old) {
        if (S->resource_conflict == PL_CONFLICT_REFUSE) {
            pl_jid_free(jid);
            reply_iq_error(c, st, PL_ECONFLICT, NULL);
            return;
        }
        if (S->resource_conflict == PL_CONFLICT_RENAME) {
            random_resource(rnd, sizeof(rnd));
            struct pl_jid *j2 = NULL;
            char *r2 = NULL;
            size_t n = strlen(jid->resource) + strlen(rnd) + 2;
            r2 = pl_malloc(n);
            snprintf(r2, n, "%s-%s", jid->resource, rnd + 7);
            int mrc = pl_jid_make(c->user, c->host->domain, r2, &j2);
            pl_free(r2);
            pl_jid_free(jid);
            if (mrc != PL_OK) {
                /* Too long with the suffix: refuse instead. */
                reply_iq_error(c, st, PL_ECONFLICT, NULL);
                return;
            }
            jid = j2;
        } else {
            /* RFC 6120 §7.7.2.2: terminate the old session. */
            old->ops->kick(old, "conflict", "replaced by a new session");
            pl_session_unregister(old);
        }
    }
    c->sess.jid = jid;
    c->sess.host = c->host;
    int rc = pl_session_register(&c->sess, (int)S->max_resources_per_user);
    if (rc != PL_OK) {
        c->sess.jid = NULL;
        pl_jid_free(jid);
        reply_iq_error(c, st, rc, rc == PL_ERESOURCE_CONSTRAINT
                                      ? "too many resources"
                                      : NULL);
        return;
    }
    c->state = ST_BOUND;
    pl_stat_inc(sessions_bound);
    struct pl_stanza *r = pl_iq_result(st);
    struct pl_node *b = pl_node_add_child(r, pl_stanza_root(r), "bind",
                                          NS_BIND);
    struct pl_node *j = pl_node_add_child(r, b, "jid", NS_BIND);
    pl_node_add_text(r, j, jid->full, strlen(jid->full));
    send_stanza(&c->sess, r);
    pl_stanza_unref(r);
    pl_log_info("c2s", "%s:%d: bound %s", c->conn->ip, c->conn->port,
                jid->full);
    struct pl_event ev = {"session/bound", c->host, &c->sess, NULL, jid,
                          NULL, NULL};
    pl_hook_fire(&ev);
}

/* ---- stanzas ---- */

static void update_presence(struct c2s *c, struct pl_stanza *st)
{
    const char *type = pl_stanza_attr(st, "type");
    if (type && strcmp(type, "unavailable") != 0)
        return; /* subscriptions and probes do not change availability */
    if (type) {
        c->sess.available = 0;
    } else {
        c->sess.available = 1;
        struct pl_node *p = pl_node_child(pl_stanza_root(st), "priority",
                                          NULL);
        int prio = 0;
        if (p) {
            const char *t = pl_node_text(st, p, NULL);
            long v = strtol(t, NULL, 10);
            prio = v < -128 ? -128 : v > 127 ? 127 : (int)v;
        }
        c->sess.priority = prio;
    }
    pl_stanza_unref(c->sess.presence);
    c->sess.presence = pl_stanza_ref(st);
}

static void on_bound_stanza(struct c2s *c, struct pl_stanza *st)
{
    struct pl_node *root = pl_stanza_root(st);
    const char *name = root->name;
    const char *type = pl_stanza_attr(st, "type");
    if (strcmp(name, "iq") == 0) {
        /* RFC 6120 §8.2.3: id and type are required, one child for
         * get/set. */
        int getset = type && (strcmp(type, "get") == 0 ||
                              strcmp(type, "set") == 0);
        if (!pl_stanza_attr(st, "id") || !type ||
            (!getset && strcmp(type, "result") != 0 &&
             strcmp(type, "error") != 0) ||
            (getset && pl_node_count_elems(root) != 1)) {
            reply_iq_error(c, st, PL_EBAD_REQUEST, NULL);
            return;
        }
    }
    /* RFC 6120 §8.1.2.1: the server adds or overrides 'from'. */
    pl_stanza_set_attr(st, "from", c->sess.jid->full);
    const char *to = pl_stanza_attr(st, "to");
    struct pl_jid *tj = NULL;
    if (to && pl_jid_parse(pl_str_c(to), &tj) != PL_OK) {
        reply_iq_error(c, st, PL_EJID_MALFORMED, NULL);
        return;
    }
    if (tj && strcmp(to, tj->full) != 0)
        pl_stanza_set_attr(st, "to", tj->full); /* normalized form */
    if (!tj && strcmp(name, "presence") == 0)
        update_presence(c, st);
    pl_route(st, c->sess.jid, tj, &c->sess);
    pl_jid_free(tj);
}

static void on_preauth_iq(struct c2s *c, struct pl_stanza *st)
{
    char ev[512];
    pl_iq_event_name(st, "preauth", ev, sizeof(ev));
    if (!c->host || !pl_hook_has(c->host, ev) ||
        (!c->secure && S->require_encryption)) {
        stream_error(c, "not-authorized", NULL);
        return;
    }
    struct pl_event e = {ev, c->host, &c->sess, st, NULL, NULL, NULL};
    int rc = pl_hook_fire(&e);
    if (rc < 0)
        reply_iq_error(c, st, rc, NULL);
}

/* ---- stream management (XEP-0198; the state lives in sm.c) ---- */

static void sm_write(struct pl_session *s, const char *p, size_t n)
{
    struct c2s *c = s->impl;
    if (c->conn && !c->closing)
        pl_conn_write(c->conn, p, n);
}

static int sm_connected(struct pl_session *s)
{
    struct c2s *c = s->impl;
    return c->conn && !c->closing;
}

static void sm_overflow(struct pl_session *s)
{
    struct c2s *c = s->impl;
    if (c->hibernated) {
        if (!c->no_resume) {
            c->no_resume = 1;
            pl_timer_start(pl_server_loop(), &c->timer, 0);
        }
        return;
    }
    stream_error(c, "resource-constraint", "too many unacknowledged stanzas");
}

static const struct pl_sm_io sm_io = {sm_write, sm_connected, sm_overflow};

static void sm_failed(struct c2s *c, const char *cond, const struct pl_sm *sm)
{
    char b[256];
    if (sm)
        snprintf(b, sizeof(b),
                 "<failed xmlns='" PL_NS_SM "' h='%u'><%s xmlns='"
                 PL_NS_STANZAS "'/></failed>",
                 pl_sm_handled(sm), cond);
    else
        snprintf(b, sizeof(b),
                 "<failed xmlns='" PL_NS_SM "'><%s xmlns='" PL_NS_STANZAS
                 "'/></failed>",
                 cond);
    out(c, b);
}

/* XEP-0198 §4: h is an unsigned 32-bit integer. */
static int parse_h(struct pl_stanza *st, uint32_t *h)
{
    const char *v = pl_stanza_attr(st, "h");
    if (!v || !*v || strlen(v) > 10)
        return PL_EINVAL;
    unsigned long long x = 0;
    for (const char *p = v; *p; p++) {
        if (*p < '0' || *p > '9')
            return PL_EINVAL;
        x = x * 10 + (unsigned)(*p - '0');
    }
    if (x > 0xffffffffULL)
        return PL_EINVAL;
    *h = (uint32_t)x;
    return PL_OK;
}

static void sm_ack(struct c2s *c, uint32_t h)
{
    uint32_t sent;
    if (pl_sm_ack(&c->sess, h, &sent) != PL_OK) {
        /* XEP-0198 §4: more acknowledged than was sent. */
        if (c->closing || !c->conn)
            return;
        char b[320];
        snprintf(b, sizeof(b),
                 "<stream:error><undefined-condition xmlns='"
                 PL_NS_STREAM_ERRORS "'/><handled-count-too-high xmlns='"
                 PL_NS_SM "' h='%u' send-count='%u'/></stream:error>"
                 "</stream:stream>",
                 h, sent);
        out(c, b);
        c->closing = 1;
        c->no_resume = 1;
        pl_stat_inc(stream_errors);
        pl_conn_close(c->conn);
    }
}

/* Moves the connection-side fields between a and b (resumption). */
static void swap_transport(struct c2s *a, struct c2s *b)
{
#define SWAP(f)                                                               \
    do {                                                                      \
        __typeof__(a->f) t_ = a->f;                                           \
        a->f = b->f;                                                          \
        b->f = t_;                                                            \
    } while (0)
    SWAP(conn);
    SWAP(xml);
    SWAP(tls_mode);
    SWAP(opened_ms);
    SWAP(keepalive_ms);
#undef SWAP
    unsigned t = a->secure;
    a->secure = b->secure;
    b->secure = t;
    t = a->header_sent;
    a->header_sent = b->header_sent;
    b->header_sent = t;
    t = a->closing;
    a->closing = b->closing;
    b->closing = t;
    char id[sizeof(a->id)];
    memcpy(id, a->id, sizeof(id));
    memcpy(a->id, b->id, sizeof(id));
    memcpy(b->id, id, sizeof(id));
    struct c2s *both[2] = {a, b};
    for (int i = 0; i < 2; i++) {
        if (both[i]->conn)
            both[i]->conn->data = both[i];
        if (both[i]->xml)
            pl_xml_parser_set_ud(both[i]->xml, both[i]);
    }
}

/*
 * <resume/> on the authenticated, unbound stream c: c's connection moves
 * into the old session o, and c is freed (or, if o's old connection was
 * still open, c takes that one over and closes it with <conflict/>).
 */
static void resume_try(struct c2s *c, const char *previd, uint32_t h);

static void on_resume_poll(struct pl_timer *t)
{
    struct c2s *c = t->data;
    char *previd = c->resume_previd;
    c->resume_previd = NULL;
    if (c->conn && !c->closing)
        resume_try(c, previd, c->resume_h); /* may free c */
    pl_free(previd);
}

static void sm_resume(struct c2s *c, struct pl_stanza *st)
{
    if (c->state == ST_BOUND || c->resume_previd) {
        sm_failed(c, "unexpected-request", NULL);
        return;
    }
    const char *previd = pl_stanza_attr(st, "previd");
    uint32_t h;
    if (!previd || parse_h(st, &h) != PL_OK) {
        sm_failed(c, "bad-request", NULL);
        return;
    }
    resume_try(c, previd, h);
}

static void resume_try(struct c2s *c, const char *previd, uint32_t h)
{
    struct c2s *o = pl_map_get(&resumable, previd);
    /* Only the same account may resume a session (XEP-0198 §9). */
    if (!o || o == c || o->no_resume || o->host != c->host || !o->user ||
        !c->user || strcmp(o->user, c->user) != 0) {
        sm_failed(c, "item-not-found", NULL);
        return;
    }
    /* <resumed h/> tells the client which stanzas it need not send again:
     * wait (briefly, polling) until the old session's writes committed so
     * that h covers everything it received, and none is sent twice. */
    if (pl_sm_pending(o->sess.sm) && c->resume_tries < 2500) {
        c->resume_tries++;
        c->resume_previd = pl_strdup(previd);
        c->resume_h = h;
        pl_timer_start(c->conn->loop, &c->rtimer, 2);
        return;
    }
    if (o->hibernated) {
        swap_transport(o, c);
        /* o takes c's place in the list of open streams. */
        o->prev = c->prev;
        o->next = c->next;
        if (o->prev)
            o->prev->next = o;
        else
            all = o;
        if (o->next)
            o->next->prev = o;
        c->prev = c->next = NULL;
        o->hibernated = 0;
        pl_timer_stop(&o->timer);
        pl_timer_init(&o->timer, on_timer, o);
        pl_timer_start(o->conn->loop, &o->timer, 5000);
        pl_session_unregister(&c->sess);
        c2s_free(c);
    } else {
        /* The old connection has not noticed it is dead yet. */
        swap_transport(o, c);
        stream_error(c, "conflict", "session resumed on another connection");
    }
    pl_stat_inc(sm_resumed);
    char b[160];
    snprintf(b, sizeof(b), "<resumed xmlns='" PL_NS_SM "' h='%u' previd='%s'/>",
             pl_sm_handled(o->sess.sm), previd);
    out(o, b);
    pl_log_info("c2s", "%s:%d: resumed %s", o->conn->ip, o->conn->port,
                o->sess.jid->full);
    sm_ack(o, h);
    if (!o->closing)
        pl_sm_resend(&o->sess);
}

/* XEP-0198 elements after authentication. */
static void on_sm(struct c2s *c, struct pl_stanza *st)
{
    const char *name = pl_stanza_name(st);
    struct pl_sm *sm = c->sess.sm;
    if (strcmp(name, "enable") == 0) {
        /* §3: only after binding, and only once. */
        if (c->state != ST_BOUND || sm) {
            sm_failed(c, "unexpected-request", NULL);
            return;
        }
        const char *r = pl_stanza_attr(st, "resume");
        int resume = r && (strcmp(r, "true") == 0 || strcmp(r, "1") == 0);
        const char *mx = pl_stanza_attr(st, "max");
        long max = mx ? strtol(mx, NULL, 10) : 0;
        pl_sm_enable(&c->sess, &sm_io, resume, max);
        if (pl_sm_id(c->sess.sm))
            pl_map_put(&resumable, pl_sm_id(c->sess.sm), c);
    } else if (strcmp(name, "r") == 0) {
        if (sm)
            pl_sm_request(&c->sess);
    } else if (strcmp(name, "a") == 0) {
        uint32_t h;
        if (!sm)
            return;
        if (parse_h(st, &h) != PL_OK)
            stream_error(c, "invalid-xml", "bad 'h' in <a/>");
        else
            sm_ack(c, h);
    } else if (strcmp(name, "resume") == 0) {
        sm_resume(c, st);
    } else {
        stream_error(c, "unsupported-stanza-type", NULL);
    }
}

static void on_stanza(void *ud, struct pl_stanza *st)
{
    struct c2s *c = ud;
    struct pl_node *root = pl_stanza_root(st);
    pl_stat_inc(stanzas_in);
    if (c->closing)
        goto out;
    if (strcmp(root->ns, NS_TLS) == 0 && strcmp(root->name, "starttls") == 0) {
        if (c->secure || c->authed || !tls_available(c)) {
            out(c, "<failure xmlns='" NS_TLS "'/></stream:stream>");
            c->closing = 1;
            pl_conn_close(c->conn);
            goto out;
        }
        out(c, "<proceed xmlns='" NS_TLS "'/>");
        restart(c);
        pl_conn_starttls(c->conn, c->host->tls->ctx);
        goto out;
    }
    if (strcmp(root->ns, NS_SASL) == 0) {
        on_sasl(c, st);
        goto out;
    }
    if (strcmp(root->ns, PL_NS_CLIENT) != 0 &&
        strcmp(root->ns, PL_NS_STREAMS) != 0 && !c->authed) {
        /* The content namespace must be jabber:client (§4.8.2). */
        if (strcmp(root->ns, "") == 0 || strcmp(root->ns, PL_NS_SERVER) == 0) {
            stream_error(c, "invalid-namespace", NULL);
            goto out;
        }
    }
    if (!c->authed) {
        if (strcmp(root->name, "iq") == 0 &&
            strcmp(root->ns, PL_NS_CLIENT) == 0) {
            on_preauth_iq(c, st);
            goto out;
        }
        stream_error(c, pl_stream_is_stanza(root, PL_NS_CLIENT)
                            ? "not-authorized"
                            : "unsupported-stanza-type",
                     NULL);
        goto out;
    }
    if (strcmp(root->ns, PL_NS_SM) == 0 && S->sm_enable) {
        on_sm(c, st); /* may free c (resumption) */
        goto out;
    }
    if (!pl_stream_is_stanza(root, PL_NS_CLIENT)) {
        if (strcmp(root->ns, "") == 0 || strcmp(root->ns, PL_NS_SERVER) == 0)
            stream_error(c, "invalid-namespace", NULL);
        else {
            /* Unknown top-level elements (a later module may claim them
             * through "stream-element/<ns>:<name>"). */
            char ev[512];
            snprintf(ev, sizeof(ev), "stream-element/%s:%s", root->ns,
                     root->name);
            struct pl_event e = {ev, c->host, &c->sess, st, NULL, NULL, NULL};
            if (pl_hook_fire(&e) == PL_PASS)
                stream_error(c, "unsupported-stanza-type", NULL);
        }
        goto out;
    }
    if (c->state != ST_BOUND) {
        struct pl_node *bind = pl_node_child(root, "bind", NS_BIND);
        if (strcmp(root->name, "iq") == 0 && bind &&
            pl_stanza_attr(st, "type") &&
            strcmp(pl_stanza_attr(st, "type"), "set") == 0) {
            on_bind(c, st, bind);
            goto out;
        }
        stream_error(c, "not-authorized", "bind a resource first");
        goto out;
    }
    struct pl_barrier *b = c->sess.sm ? pl_sm_in_begin(&c->sess) : NULL;
    struct pl_node *bind = pl_node_child(root, "bind", NS_BIND);
    if (bind && strcmp(root->name, "iq") == 0)
        on_bind(c, st, bind);
    else
        on_bound_stanza(c, st);
    if (b)
        pl_sm_in_end(b);
out:
    pl_stanza_unref(st);
}

static void on_stream_close(void *ud)
{
    struct c2s *c = ud;
    close_stream(c);
}

static void on_xml_error(void *ud, enum pl_xml_error err, const char *text)
{
    struct c2s *c = ud;
    stream_error(c, pl_xml_error_condition(err), NULL);
    pl_log_debug("c2s", "XML error: %s", text ? text : "");
}

static const struct pl_xml_callbacks xml_cb = {
    on_stream_open, on_stanza, on_stream_close, on_xml_error,
};

/* ---- connection events ---- */

static void on_data(struct pl_conn *conn, const char *p, size_t n)
{
    struct c2s *c = conn->data;
    pl_stat_add(bytes_in, n);
    if (!c->closing)
        pl_xml_parser_feed(c->xml, p, n);
}

static void on_tls_up(struct pl_conn *conn)
{
    struct c2s *c = conn->data;
    /* With direct TLS, SNI only chose the certificate; the stream header
     * that follows names the host. */
    c->secure = 1;
}

/* Frees what a c2s holds once it has neither connection nor session. */
static void c2s_free(struct c2s *c)
{
    pl_timer_stop(&c->timer);
    pl_timer_stop(&c->rtimer);
    pl_free(c->resume_previd);
    pl_xml_parser_free(c->xml);
    pl_scram_server_free(c->scram);
    pl_stanza_unref(c->sess.presence);
    pl_jid_free(c->sess.jid);
    pl_free(c->user);
    pl_free(c);
}

/* The session is over (its connection is already gone). */
static void end_session(struct c2s *c)
{
    if (c->sess.sm && pl_sm_id(c->sess.sm) &&
        pl_map_get(&resumable, pl_sm_id(c->sess.sm)) == c)
        pl_map_del(&resumable, pl_sm_id(c->sess.sm));
    if (c->sess.jid) {
        pl_session_unregister(&c->sess);
        if (c->state == ST_BOUND) {
            /* Also for sessions replaced by a newer one (already out of
             * the table): modules clean up and broadcast unavailable. */
            struct pl_event ev = {"session/closed", c->host, &c->sess, NULL,
                                  c->sess.jid, NULL, NULL};
            pl_hook_fire(&ev);
            pl_log_info("c2s", "closed %s", c->sess.jid->full);
        }
    } else {
        pl_session_unregister(&c->sess);
    }
    /* After the unavailable broadcast, so that messages routed again do
     * not come back here. */
    pl_sm_end(&c->sess);
    c2s_free(c);
}

static void on_resume_timeout(struct pl_timer *t)
{
    struct c2s *c = t->data;
    if (!c->no_resume)
        pl_log_info("c2s", "%s: not resumed in time", c->sess.jid->full);
    end_session(c);
}

/* XEP-0198 §5: the connection is gone but the session stays, queueing
 * what it is sent, until the client resumes or the timeout ends it. */
static void hibernate(struct c2s *c)
{
    c->hibernated = 1;
    pl_xml_parser_free(c->xml);
    c->xml = NULL;
    pl_scram_server_free(c->scram);
    c->scram = NULL;
    pl_timer_init(&c->timer, on_resume_timeout, c);
    pl_timer_start(pl_server_loop(), &c->timer,
                   (uint64_t)pl_sm_max(c->sess.sm) * 1000);
    pl_stat_inc(sm_hibernated);
    pl_log_info("c2s", "%s: connection lost, waiting %ld s for resumption",
                c->sess.jid->full, pl_sm_max(c->sess.sm));
}

static void on_closed(struct pl_conn *conn)
{
    struct c2s *c = conn->data;
    c->conn = NULL;
    if (c->prev)
        c->prev->next = c->next;
    else
        all = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
    pl_timer_stop(&c->timer);
    nconns--;
    pl_stat_dec(connections_open);
    uintptr_t n = (uintptr_t)pl_map_get(&per_ip, conn->ip);
    if (n <= 1)
        pl_map_del(&per_ip, conn->ip);
    else
        pl_map_put(&per_ip, conn->ip, (void *)(n - 1));
    if (c->state == ST_BOUND && c->sess.sm && pl_sm_id(c->sess.sm) &&
        !c->no_resume && !stopping) {
        hibernate(c);
        return;
    }
    end_session(c);
}

static const struct pl_conn_ops conn_ops = {on_data, on_tls_up, on_closed};

static void on_timer(struct pl_timer *t)
{
    struct c2s *c = t->data;
    if (!c->conn || c->closing)
        return;
    uint64_t now = pl_loop_now(c->conn->loop);
    if (c->state != ST_BOUND &&
        now - c->opened_ms >= (uint64_t)S->handshake_timeout * 1000) {
        stream_error(c, "connection-timeout", "handshake took too long");
        return;
    }
    if (now - c->conn->last_read_ms >= (uint64_t)S->idle_timeout * 1000) {
        stream_error(c, "connection-timeout", NULL);
        return;
    }
    if (S->keepalive_interval && c->state == ST_BOUND &&
        now - c->keepalive_ms >= (uint64_t)S->keepalive_interval * 1000 &&
        now - c->conn->last_read_ms >= (uint64_t)S->keepalive_interval * 1000) {
        out(c, " ");
        c->keepalive_ms = now;
    }
    /* An idle stream gives back its XML parser (about 10 KiB) until the
     * next byte arrives (xml.h, pl_xml_parser_nap). */
    if (c->state == ST_BOUND && now - c->conn->last_read_ms >= 2000) {
        napped += (unsigned long)pl_xml_parser_nap(c->xml);
        pl_conn_trim(c->conn);
    }
    uint64_t next = c->state != ST_BOUND ? 1000 : 5000;
    pl_timer_start(c->conn->loop, &c->timer, next);
}

/* Takes ownership of fd, an accepted socket, and starts its stream. */
static void accept_fd(int fd, int tls_mode)
{
    struct pl_conn_limits lim = {(size_t)S->max_outbuf, (size_t)S->read_rate,
                                 (size_t)S->read_burst};
    struct c2s *c = pl_calloc(1, sizeof(*c));
    c->conn = pl_conn_new(pl_server_loop(), fd, &conn_ops, c, &lim);
    c->tls_mode = tls_mode;
    c->next = all;
    if (all)
        all->prev = c;
    all = c;
    uintptr_t n = (uintptr_t)pl_map_get(&per_ip, c->conn->ip);
    pl_map_put(&per_ip, c->conn->ip, (void *)(n + 1));
    nconns++;
    pl_stat_inc(connections_open);
    c->sess.impl = c;
    c->sess.ops = &session_ops;
    pl_session_init(&c->sess);
    struct pl_xml_limits xl = {(size_t)S->max_stanza_size,
                               (unsigned)S->max_depth};
    c->xml = pl_xml_parser_new(&xl, &xml_cb, c);
    c->opened_ms = pl_loop_now(c->conn->loop);
    pl_timer_init(&c->timer, on_timer, c);
    pl_timer_init(&c->rtimer, on_resume_poll, c);
    int over_ip = (long)(n + 1) > S->max_connections_per_ip;
    if (over_ip || (long)nconns > S->max_connections) {
        pl_stat_inc(connections_refused);
        /* Logged when the limit is first crossed, not per connection. */
        if ((long)n == S->max_connections_per_ip ||
            (long)nconns == S->max_connections + 1)
            pl_log_warn("c2s", "%s: refusing connections (%s limit)",
                        c->conn->ip, over_ip ? "per-address" : "total");
        if (tls_mode == PL_TLS_DIRECT) {
            c->closing = 1; /* no TLS work for a refused peer */
            pl_conn_close(c->conn);
        } else {
            /* RFC 6120 §4.9.3.14/.18: say why, then close. */
            pl_conn_start(c->conn, NULL);
            stream_error(c, over_ip ? "policy-violation"
                                    : "resource-constraint",
                         over_ip ? "too many connections from your address"
                                : "server is full");
        }
        return;
    }
    pl_stat_inc(connections_accepted);
    pl_timer_start(c->conn->loop, &c->timer, 1000);
    SSL_CTX *ctx = NULL;
    if (tls_mode == PL_TLS_DIRECT) {
        struct pl_host *h = pl_host_at(0);
        if (!h->tls) {
            c->closing = 1;
            pl_conn_close(c->conn);
            return;
        }
        ctx = h->tls->ctx;
    }
    pl_conn_start(c->conn, ctx);
}

static void on_accept(struct pl_listener *l, int fd,
                      const struct sockaddr_storage *addr, void *data)
{
    struct c2s_listener *cl = data;
    accept_fd(fd, cl->tls);
}

int pl__c2s_accept_fd(int fd, int tls_mode)
{
    if (!S || !pl_server_loop() || fd < 0)
        return PL_EINVAL;
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return PL_EIO;
    accept_fd(fd, tls_mode);
    return PL_OK;
}

/*
 * Freed parsers leave holes in the heap that glibc keeps; malloc_trim
 * returns those pages to the kernel.  It walks the heap, so it runs on a
 * worker thread, at most once per interval and only after naps.
 */
static void trim_run(struct pl_work *w)
{
    malloc_trim(0);
}

static void trim_done(struct pl_work *w)
{
    trim_busy = 0;
}

static void on_trim_timer(struct pl_timer *t)
{
    if (napped >= 16 && !trim_busy) {
        napped = 0;
        trim_busy = 1;
        trim_work.work = trim_run;
        trim_work.done = trim_done;
        pl_workq_submit(pl_server_cpu(), pl_server_loop(), &trim_work);
    }
    pl_timer_start(pl_server_loop(), t, 10000);
}

int pl_c2s_start(struct pl_config *cfg)
{
    S = &cfg->s;
    pl_timer_init(&trim_timer, on_trim_timer, NULL);
    pl_timer_start(pl_server_loop(), &trim_timer, 10000);
    listeners = pl_calloc((size_t)cfg->nlisteners + 1, sizeof(*listeners));
    for (int i = 0; i < cfg->nlisteners; i++) {
        struct pl_listener_conf *lc = &cfg->listeners[i];
        if (strcmp(lc->protocol, "c2s") != 0)
            continue;
        struct c2s_listener *cl = &listeners[nlisteners];
        cl->tls = lc->tls;
        int rc = pl_listener_open(pl_server_loop(), lc->address, lc->port,
                                  on_accept, cl, &cl->l);
        if (rc != PL_OK)
            return rc;
        nlisteners++;
        pl_log_info("c2s", "listening on %s port %d (%s)", lc->address,
                    lc->port,
                    lc->tls == PL_TLS_DIRECT ? "direct TLS"
                    : lc->tls == PL_TLS_STARTTLS ? "STARTTLS" : "plain");
    }
    /* Messages a crash left unacknowledged go to their accounts again. */
    pl_sm_recover();
    return PL_OK;
}

static void collect_hibernated(const char *key, void *value, void *ud)
{
    (void)key;
    struct c2s ***v = ud;
    struct c2s *c = value;
    if (!c->hibernated)
        return;
    size_t n = 0;
    while (*v && (*v)[n])
        n++;
    *v = pl_realloc(*v, (n + 2) * sizeof(**v));
    (*v)[n] = c;
    (*v)[n + 1] = NULL;
}

void pl_c2s_stop(void)
{
    pl_timer_stop(&trim_timer);
    pl_map_each(&auth_fails, free_value, NULL);
    pl_map_clear(&auth_fails);
    stopping = 1;
    for (struct c2s *c = all; c; c = c->next)
        stream_error(c, "system-shutdown", NULL);
    /* Hibernated sessions end now: their messages go offline. */
    struct c2s **h = NULL;
    size_t nh = 0;
    pl_map_each(&resumable, collect_hibernated, &h);
    while (h && h[nh])
        nh++;
    for (size_t i = 0; i < nh; i++)
        end_session(h[i]);
    pl_free(h);
    for (int i = 0; i < nlisteners; i++)
        pl_listener_close(listeners[i].l);
    pl_free(listeners);
    listeners = NULL;
    nlisteners = 0;
}

void pl_c2s_reload(struct pl_config *cfg)
{
    S = &cfg->s;
    struct pl_conn_limits lim = {(size_t)S->max_outbuf, (size_t)S->read_rate,
                                 (size_t)S->read_burst};
    struct pl_xml_limits xl = {(size_t)S->max_stanza_size,
                               (unsigned)S->max_depth};
    for (struct c2s *c = all; c; c = c->next) {
        if (c->conn)
            pl_conn_set_limits(c->conn, &lim);
        pl_xml_parser_set_limits(c->xml, &xl);
    }
}

unsigned long pl_c2s_count(void)
{
    return nconns;
}

const char *pl_session_ip(const struct pl_session *s)
{
    const struct c2s *c = s->impl;
    return c->conn ? c->conn->ip : "";
}

int pl_session_is_loopback(const struct pl_session *s)
{
    const struct c2s *c = s->impl;
    return c->conn && c->conn->is_loopback;
}

int pl_session_is_secure(const struct pl_session *s)
{
    const struct c2s *c = s->impl;
    return c->secure;
}
