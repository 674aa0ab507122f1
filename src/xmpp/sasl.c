/*
 * sasl.c - SASL on c2s streams (RFC 6120 §6): the mechanisms offered,
 * PLAIN (RFC 4616, only inside TLS) and SCRAM-SHA-1/-256 with their -PLUS
 * forms (RFC 5802, RFC 7677), channel binding (tls-exporter, RFC 9266;
 * tls-server-end-point and optionally tls-unique, RFC 5929; XEP-0440
 * advertises them), authzid checks, bounded retries per stream and a
 * per-address failure window.  API in c2s_int.h: pl__c2s_sasl_features,
 * pl__c2s_on_sasl, pl__c2s_sasl_stop.
 *
 * Blocking steps run off the loop: the account lookup on the storage
 * thread, PBKDF2 for PLAIN on a CPU worker.  Their completions find the
 * stream again by session id, and only if it is still in the same
 * exchange (sasl_gen): after <abort/> and a new <auth/> an old lookup must
 * not answer.  Unknown accounts get fake keys and cost the same time.
 *
 * Extending: a new mechanism is a value of enum mech (c2s_int.h), a name
 * in mech_names, an offer in pl__c2s_sasl_features and a step function
 * called from pl__c2s_on_sasl.
 */
#include "c2s_int.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "config.h"
#include "conn.h"
#include "error.h"
#include "host.h"
#include "log.h"
#include "map.h"
#include "scram.h"
#include "server.h"
#include "stats.h"
#include "storage.h"
#include "tls.h"
#include "work.h"

static const char *const mech_names[] = {
    "",
    "PLAIN",
    "SCRAM-SHA-1",
    "SCRAM-SHA-256",
    "SCRAM-SHA-1-PLUS",
    "SCRAM-SHA-256-PLUS",
};

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
    if (f && now - f->since >=
                 (uint64_t)pl_c2s_settings()->auth_failure_window * 1000) {
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

static int cb_available(struct c2s *c)
{
    return c->secure && pl_c2s_settings()->channel_binding;
}

void pl__c2s_sasl_features(struct c2s *c, struct pl_buf *b)
{
    pl_buf_append_str(b, "<mechanisms xmlns='" NS_SASL "'>");
    c->plus_offered = 0;
    if (cb_available(c)) {
        pl_buf_append_str(b, "<mechanism>SCRAM-SHA-256-PLUS</mechanism>"
                             "<mechanism>SCRAM-SHA-1-PLUS</mechanism>");
        c->plus_offered = 1;
    }
    pl_buf_append_str(b, "<mechanism>SCRAM-SHA-256</mechanism>"
                         "<mechanism>SCRAM-SHA-1</mechanism>");
    if (pl__c2s_encrypted(c) && pl_c2s_settings()->allow_plain)
        pl_buf_append_str(b, "<mechanism>PLAIN</mechanism>");
    pl_buf_append_str(b, "</mechanisms>");
    if (c->plus_offered)
        /* XEP-0440: the channel-binding types we support. */
        pl_buf_append_str(b, "<sasl-channel-binding xmlns='urn:xmpp:sasl-cb:0'>"
                             "<channel-binding type='tls-exporter'/>"
                             "<channel-binding type='tls-server-end-point'/>"
                             "</sasl-channel-binding>");
}

static void sasl_failure(struct c2s *c, const char *cond)
{
    struct pl_buf b = {0};
    pl_buf_printf(&b, "<failure xmlns='" NS_SASL "'><%s/></failure>", cond);
    pl__c2s_out_buf(c, &b);
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
        struct fails *f = fails_of(c->conn->ip, pl_loop_now(c->conn->loop), 1);
        if (++f->count == pl_c2s_settings()->auth_failures_per_ip)
            pl_log_warn("c2s",
                        "%s: %ld authentication failures, refusing "
                        "attempts for up to %ld s",
                        c->conn->ip, f->count,
                        pl_c2s_settings()->auth_failure_window);
    }
    if (++c->auth_failures >= pl_c2s_settings()->max_auth_failures)
        pl__c2s_close_stream(c); /* RFC 6120 §6.4.5: bounded retries */
}

static void sasl_success(struct c2s *c, const char *data, size_t len)
{
    struct pl_buf b = {0};
    pl_buf_append_str(&b, "<success xmlns='" NS_SASL "'>");
    if (data)
        pl_base64_encode((const unsigned char *)data, len, &b);
    pl_buf_append_str(&b, "</success>");
    pl__c2s_out_buf(c, &b);
    pl_buf_reset(&b);
    pl_scram_server_free(c->scram);
    c->scram = NULL;
    c->authed = 1;
    pl_stat_inc(auth_success);
    pl_log_info("c2s", "%s:%d: %s@%s authenticated with %s", c->conn->ip,
                c->conn->port, c->user, c->host->domain, mech_names[c->mech]);
    if (pl_c2s_settings()->tls_handover)
        pl_conn_tls_handover(c->conn); /* channel binding is done */
    pl__c2s_restart(c);
}

static void send_challenge(struct c2s *c, struct pl_str data)
{
    struct pl_buf b = {0};
    pl_buf_append_str(&b, "<challenge xmlns='" NS_SASL "'>");
    pl_base64_encode((const unsigned char *)data.p, data.len, &b);
    pl_buf_append_str(&b, "</challenge>");
    pl__c2s_out_buf(c, &b);
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
    struct pl_work w;       /* for the PBKDF2 step (first member) */
    uint64_t sid;           /* stream's session id */
    unsigned gen;           /* the stream's sasl_gen at submission */
    char *host, *user;      /* copies */
    struct pl_account acct; /* result */
    char *password;         /* PLAIN only, wiped after use */
    size_t password_len;
    int rc; /* lookup result */
    int ok; /* PLAIN verification result */
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
            pl_log_error("c2s", "account lookup failed: %s", pl_strerror(rc));
        /* Unknown user: a stable fake salt; the proof will not match. */
        pl_scram_fake_keys((enum pl_scram_hash)h, pl_str_c(r->user),
                           pl_server_secret(),
                           (unsigned)pl_c2s_settings()->scram_iterations,
                           &keys);
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
                           (unsigned)pl_c2s_settings()->scram_iterations,
                           &r->acct.keys[1]);
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
    if (!n1 || !n2 || n2 + 1 > end ||
        memchr(n2 + 1, 0, (size_t)(end - n2 - 1))) {
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

static int channel_binding(struct c2s *c, const char *type, unsigned char *buf,
                           size_t *len)
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
    if (strcmp(type, "tls-unique") == 0 && pl_c2s_settings()->tls_unique) {
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
        if (rc == PL_OK && !authzid_ok(c, pl_scram_server_authzid(c->scram))) {
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
    if (c->cbtype[0] && channel_binding(c, c->cbtype, cbdata, &cblen) != PL_OK)
        rc = PL_ENOT_AUTHORIZED;
    if (rc == PL_OK)
        rc = pl_scram_server_client_final(c->scram, msg, cblen ? cbdata : NULL,
                                          cblen, &b);
    if (rc == PL_OK) {
        struct pl_str v = pl_buf_str(&b);
        char *copy = pl_strndup(v.p, v.len);
        sasl_success(c, copy, v.len);
        pl_free(copy);
    } else {
        sasl_failure(c,
                     rc == PL_EINVAL ? "malformed-request" : "not-authorized");
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

void pl__c2s_on_sasl(struct c2s *c, struct pl_stanza *st)
{
    const char *name = pl_stanza_name(st);
    if (c->authed) {
        pl__c2s_stream_error(c, "policy-violation", "already authenticated");
        return;
    }
    if (!pl__c2s_encrypted(c) && pl_c2s_settings()->require_encryption) {
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
            pl__c2s_stream_error(c, "policy-violation",
                                 "authentication in progress");
            return;
        }
        struct fails *f = fails_of(c->conn->ip, pl_loop_now(c->conn->loop), 0);
        if (f && f->count >= pl_c2s_settings()->auth_failures_per_ip) {
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
            (mech == M_PLAIN &&
             !(pl__c2s_encrypted(c) && pl_c2s_settings()->allow_plain))) {
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
            enum pl_scram_hash h = (mech == M_SCRAM_SHA1 ||
                                    mech == M_SCRAM_SHA1_PLUS)
                                       ? PL_SCRAM_SHA1
                                       : PL_SCRAM_SHA256;
            c->scram = pl_scram_server_new(h, plus, c->plus_offered);
        }
        if (empty) {
            /* No initial response: ask for it with an empty challenge. */
            pl__c2s_out(c, "<challenge xmlns='" NS_SASL "'/>");
            goto out;
        }
    } else if (strcmp(name, "response") == 0) {
        if (c->mech == M_NONE) {
            pl__c2s_stream_error(c, "policy-violation",
                                 "no authentication in progress");
            return;
        }
        if (decode_payload(st, &data, &empty) != PL_OK) {
            sasl_failure(c, "incorrect-encoding");
            goto out;
        }
    } else {
        pl__c2s_stream_error(c, "unsupported-stanza-type", NULL);
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

void pl__c2s_sasl_stop(void)
{
    pl_map_each(&auth_fails, free_value, NULL);
    pl_map_clear(&auth_fails);
}
