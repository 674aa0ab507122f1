/*
 * auth.c - digest authentication of SIP requests (RFC 3261 §22, RFC 8760)
 * against the accounts XMPP uses: the registrar challenges REGISTER with
 * 401 and WWW-Authenticate, the message handler challenges MESSAGE and
 * INFO with 407 and Proxy-Authenticate (it acts for the domain as a proxy
 * would, §22.3).  The digest itself (nonces, replay table, the check) is
 * core/digest.h; this file finds the credentials in a request, checks what
 * digest.h leaves to its caller, reads the account on the storage thread
 * (never on the loop) and answers the failures.  API: sip_int.h
 * ("Digest authentication of requests").
 *
 * Order of the checks: no credentials for the realm (the host's domain):
 * challenge; a parameter unquotable, missing, or an algorithm or qop not
 * offered: 400 (RFC 7616 §3.4); a nonce this server did not make:
 * challenge at once, without reading storage (a flood of forged nonces
 * costs no lookups); a uri parameter that is not the Request-URI: 400
 * (RFC 2617 §3.2.2.5, which RFC 8760 keeps: the credentials must be for
 * this request); then the account is read and pl_digest_verify decides:
 * OK, STALE (challenge with stale=true), BAD (challenge, counted as an
 * authentication failure), INVALID (400).
 *
 * Extending: a new algorithm needs only digest.c's table and a row in
 * offered(); Authentication-Info (RFC 7616 §3.5) would go in the OK path.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/crypto.h>

#include "alloc.h"
#include "digest.h"
#include "error.h"
#include "hook.h"
#include "host.h"
#include "jid.h"
#include "log.h"
#include "server.h"
#include "sip_int.h"
#include "stats.h"
#include "storage.h"

static struct pl_digest *D;

/* ---- the key cache ----
 *
 * The digest keys of the accounts that authenticated lately, so that a
 * registered user's next requests (a MESSAGE every few seconds from a
 * busy phone) are checked on the loop without a storage read, and in the
 * order they came (a read finishing out of order made nonce counts look
 * replayed).  An entry lives sip.auth_cache_ttl seconds from its read:
 * that bounds how long keys changed outside this process (parleyctl
 * passwd) still work.  A password change through XEP-0077 and an account
 * removal drop the entry at once (user/password, user/deleted).  Entries
 * are made only for accounts that exist, at most sip.auth_cache_max. */

struct cached {
    uint64_t until;                           /* loop time (ms) */
    struct pl_digest_key key[PL_DIGEST_NALG]; /* the account's */
};

static struct pl_map cache;     /* "user@host" -> struct cached */
static struct pl_timer sweeper; /* drops expired entries */

static uint64_t now_ms(void)
{
    return pl_loop_now(pl_server_loop());
}

static void cache_drop(const char *bare)
{
    struct cached *c = pl_map_del(&cache, bare);
    if (c) {
        OPENSSL_cleanse(c, sizeof(*c));
        pl_free(c);
    }
}

static const struct cached *cache_get(const char *bare)
{
    struct cached *c = pl_map_get(&cache, bare);
    if (c && c->until <= now_ms()) {
        cache_drop(bare);
        c = NULL;
    }
    return c;
}

static void cache_put(const char *bare, const struct pl_account *a)
{
    const struct sip_settings *S = pl__sip_settings();
    if (S->auth_cache_ttl <= 0)
        return;
    struct cached *c = pl_map_get(&cache, bare);
    if (!c) {
        if ((long)cache.count >= S->auth_cache_max)
            return;
        c = pl_calloc(1, sizeof(*c));
        pl_map_put(&cache, bare, c);
    }
    c->until = now_ms() + (uint64_t)S->auth_cache_ttl * 1000;
    memcpy(c->key, a->digest, sizeof(c->key));
}

struct sweep_ctx {
    char **dead;
    size_t n, cap;
    uint64_t now;
};

static void sweep_one(const char *key, void *value, void *ud)
{
    struct sweep_ctx *sc = ud;
    const struct cached *c = value;
    if (c->until > sc->now)
        return;
    if (sc->n == sc->cap) {
        sc->cap = sc->cap ? sc->cap * 2 : 64;
        sc->dead = pl_realloc(sc->dead, sc->cap * sizeof(*sc->dead));
    }
    sc->dead[sc->n++] = pl_strdup(key);
}

static void on_sweep(struct pl_timer *t)
{
    (void)t;
    struct sweep_ctx sc = {NULL, 0, 0, now_ms()};
    pl_map_each(&cache, sweep_one, &sc);
    for (size_t i = 0; i < sc.n; i++) {
        cache_drop(sc.dead[i]);
        pl_free(sc.dead[i]);
    }
    pl_free(sc.dead);
    long ttl = pl__sip_settings()->auth_cache_ttl;
    if (ttl > 0)
        pl_timer_start(pl_server_loop(), &sweeper, (uint64_t)ttl * 1000);
}

static int on_account_changed(struct pl_event *ev, void *state)
{
    (void)state;
    const char *user = ev->data;
    if (!user || !ev->host)
        return PL_PASS;
    size_t n = strlen(user) + strlen(ev->host->domain) + 2;
    char *bare = pl_malloc(n);
    snprintf(bare, n, "%s@%s", user, ev->host->domain);
    cache_drop(bare);
    pl_free(bare);
    return PL_PASS;
}

size_t pl__sip_auth_cached(void)
{
    return cache.count;
}

int pl__sip_auth_start(void)
{
    struct pl_digest_conf conf = PL_DIGEST_CONF_DEFAULT;
    conf.nonce_lifetime = pl__sip_settings()->nonce_lifetime;
    D = pl_digest_new(pl_server_secret(), &conf);
    if (!D)
        return PL_EINVAL;
    for (int i = 0; pl_host_at(i); i++) {
        struct pl_host *h = pl_host_at(i);
        pl_hook_add(h, "user/password", on_account_changed, 0, NULL);
        pl_hook_add(h, "user/deleted", on_account_changed, 0, NULL);
    }
    pl_timer_init(&sweeper, on_sweep, NULL);
    long ttl = pl__sip_settings()->auth_cache_ttl;
    if (ttl > 0)
        pl_timer_start(pl_server_loop(), &sweeper, (uint64_t)ttl * 1000);
    return PL_OK;
}

static void drop_each(const char *key, void *value, void *ud)
{
    (void)key;
    (void)ud;
    OPENSSL_cleanse(value, sizeof(struct cached));
    pl_free(value);
}

void pl__sip_auth_free(void)
{
    pl_timer_stop(&sweeper);
    pl_map_each(&cache, drop_each, NULL);
    pl_map_clear(&cache);
    pl_digest_free(D);
    D = NULL;
}

size_t pl__sip_auth_tracked(void)
{
    return D ? pl_digest_tracked(D) : 0;
}


/* COMPAT: whether the request's User-Agent is one that fails a
 * challenge set holding an algorithm it does not know, instead of
 * ignoring that challenge (RFC 8760 §2.4): the sip.md5_only_agents
 * prefixes (baresip 1.0.0 on libre: ENOSYS on SHA-256). */
static int md5_only(struct sip_txn *t)
{
    const char *ua = pl__sip_header(pl__sip_txn_request(t), "User-Agent", 0);
    const struct pl_strlist *l = &pl__sip_settings()->md5_only_agents;
    for (int i = 0; ua && i < l->n; i++)
        if (strncmp(ua, l->v[i], strlen(l->v[i])) == 0)
            return 1;
    return 0;
}

/* 401 / 407 with one challenge per algorithm offered, the preferred first
 * (RFC 8760 §2.3), sharing one nonce. */
static void challenge(struct sip_txn *t, struct pl_host *h, int proxy,
                      int stale)
{
    int md5 = pl_server_config()->s.digest_md5;
    int sha256 = !(md5 && md5_only(t));
    char nonce[PL_DIGEST_NONCE_LEN + 1];
    struct pl_str realm = pl_str_c(h->domain);
    pl_digest_nonce(D, realm, time(NULL), nonce);
    struct pl_buf sha = {0}, m5 = {0};
    const char *name = proxy ? "Proxy-Authenticate" : "WWW-Authenticate";
    const char *hdrs[5] = {NULL, NULL, NULL, NULL, NULL};
    int n = 0;
    if (sha256) {
        pl_digest_challenge(realm, nonce, NULL, PL_DIGEST_SHA256, stale, &sha);
        pl_buf_append(&sha, "", 1);
        hdrs[n++] = name;
        hdrs[n++] = sha.data + sha.off;
    }
    if (md5) {
        pl_digest_challenge(realm, nonce, NULL, PL_DIGEST_MD5, stale, &m5);
        pl_buf_append(&m5, "", 1);
        hdrs[n++] = name;
        hdrs[n++] = m5.data + m5.off;
    }
    pl__sip_reply(t, proxy ? 407 : 401, NULL, hdrs);
    pl_buf_reset(&sha);
    pl_buf_reset(&m5);
}

/* The credentials of the request for realm, or NULL. */
static osip_authorization_t *credentials(osip_message_t *req, int proxy,
                                         const char *realm)
{
    osip_list_t *l = proxy ? &req->proxy_authorizations : &req->authorizations;
    for (int i = 0; i < osip_list_size(l); i++) {
        osip_authorization_t *a = osip_list_get(l, i);
        if (!a->auth_type || strcasecmp(a->auth_type, "Digest") != 0 ||
            !a->realm)
            continue;
        struct pl_buf r = {0};
        int ok = pl_digest_unquote(pl_str_c(a->realm), &r) == PL_OK &&
                 r.len == strlen(realm) &&
                 strncasecmp(r.data + r.off, realm, r.len) == 0;
        pl_buf_reset(&r);
        if (ok)
            return a;
    }
    return NULL;
}

/* One authentication in progress: the parameters, unquoted, and the
 * account once read. */
enum {
    P_USERNAME,
    P_REALM,
    P_NONCE,
    P_URI,
    P_RESPONSE,
    P_ALGORITHM,
    P_QOP,
    P_NC,
    P_CNONCE,
    P_N
};

struct auth_job {
    struct pl_job base;     /* host, user (the prepared localpart) */
    uint64_t txn;           /* the request's transaction */
    struct pl_host *h;      /* its host (hosts live as long as we do) */
    int proxy;              /* 407 rather than 401 */
    unsigned flags;         /* SIP_AUTH_* */
    char *as;               /* the identity claimed: "local@domain" */
    size_t as_local;        /* the length of its localpart */
    const char *refusal;    /* the 403's reason phrase (a constant) */
    sip_auth_fn *cb;        /* the caller */
    void *arg;              /* its argument */
    struct pl_buf p[P_N];   /* the parameters, each NUL-ended */
    int has[P_N];           /* present in the request */
    char method[32];        /* the request's method */
    struct pl_account acct; /* read on the storage thread */
    int found;              /* the account exists */
};

static void job_free(struct auth_job *j)
{
    for (int i = 0; i < P_N; i++)
        pl_buf_reset(&j->p[i]);
    memset(&j->acct, 0, sizeof(j->acct)); /* keys are secret */
    pl_free(j->as);
    pl_job_free(j);
}

static struct pl_str param(const struct auth_job *j, int i)
{
    if (!j->has[i])
        return (struct pl_str){NULL, 0};
    return (struct pl_str){j->p[i].data + j->p[i].off, j->p[i].len - 1};
}

/* Unquotes a present parameter into j->p[i]; PL_EINVAL if malformed. */
static int take(struct auth_job *j, int i, const char *v)
{
    if (!v)
        return PL_OK;
    if (pl_digest_unquote(pl_str_c(v), &j->p[i]) != PL_OK)
        return PL_EINVAL;
    pl_buf_append(&j->p[i], "", 1);
    j->has[i] = 1;
    return PL_OK;
}

static int same(const char *a, const char *b, int nocase)
{
    if (!a || !b)
        return !a && !b;
    return nocase ? strcasecmp(a, b) == 0 : strcmp(a, b) == 0;
}

/* Whether the digest-uri names the Request-URI: scheme, user, host and
 * port compared (RFC 3261 §19.1.4 for those parts; parameters ignored, as
 * UAs differ in which they repeat). */
static int uri_matches(const char *digest_uri, const osip_uri_t *ruri)
{
    osip_uri_t *u = NULL;
    if (osip_uri_init(&u) != 0)
        return 0;
    int ok = osip_uri_parse(u, digest_uri) == 0 &&
             same(u->scheme, ruri->scheme, 1) &&
             same(u->username, ruri->username, 0) &&
             same(u->host, ruri->host, 1) &&
             same(u->port && u->port[0] ? u->port : NULL,
                  ruri->port && ruri->port[0] ? ruri->port : NULL, 0);
    osip_uri_free(u);
    return ok;
}

static int run(const struct pl_storage_driver *d, void *db, void *arg)
{
    struct auth_job *j = arg;
    int rc = d->account_get(db, j->base.host, j->base.user, &j->acct);
    j->found = rc == PL_OK;
    return rc == PL_ENOT_FOUND ? PL_OK : rc;
}

static void finish(struct auth_job *j, struct sip_txn *t)
{
    struct pl_digest_params p = {
        .username = param(j, P_USERNAME),
        .realm = param(j, P_REALM),
        .nonce = param(j, P_NONCE),
        .uri = param(j, P_URI),
        .response = param(j, P_RESPONSE),
        .algorithm = param(j, P_ALGORITHM),
        .qop = param(j, P_QOP),
        .nc = param(j, P_NC),
        .cnonce = param(j, P_CNONCE),
        .method = pl_str_c(j->method),
    };
    enum pl_digest_alg alg = PL_DIGEST_MD5;
    const unsigned char *ha1 = NULL;
    if (j->found && pl_digest_alg_parse(p.algorithm, &alg) == PL_OK &&
        j->acct.digest[alg].set)
        ha1 = j->acct.digest[alg].ha1;
    enum pl_digest_result r = pl_digest_verify(D, pl_str_c(j->h->domain), &p,
                                               ha1, time(NULL));
    pl_log_debug("sip", "digest for %s@%s: %s",
                 j->base.user ? j->base.user : "?", j->h->domain,
                 pl_digest_result_name(r));
    switch (r) {
    case PL_DIGEST_OK:
        pl_stat_inc(auth_success);
        if (!j->base.user || strlen(j->base.user) != j->as_local ||
            memcmp(j->base.user, j->as, j->as_local) != 0) {
            /* A good password for an account the request does not
             * speak for (RFC 3261 §10.3 step 3 for REGISTER). */
            pl_stat_inc(sip_auth_failures);
            pl__sip_reply(t, 403, j->refusal, NULL);
            break;
        }
        j->cb(j->arg, t,
              (j->flags & SIP_AUTH_FLOW)
                  ? pl__sip_binding_from(j->as, pl__sip_txn_flow(t))
                  : NULL);
        return;
    case PL_DIGEST_STALE: challenge(t, j->h, j->proxy, 1); break;
    case PL_DIGEST_BAD:
        pl_stat_inc(sip_auth_failures);
        pl_log_info("sip", "authentication failed for %.*s at %s",
                    (int)p.username.len, p.username.p, j->h->domain);
        challenge(t, j->h, j->proxy, 0);
        break;
    case PL_DIGEST_INVALID:
        pl_stat_inc(sip_auth_failures);
        pl__sip_reply(t, 400, "Malformed Credentials", NULL);
        break;
    }
    j->cb(j->arg, NULL, NULL);
}

static void done(int rc, void *arg)
{
    struct auth_job *j = arg;
    struct sip_txn *t = pl__sip_txn_find(j->txn);
    if (t && !pl__sip_txn_request(t))
        t = NULL; /* answered meanwhile (the transaction layer's guard) */
    if (!t) {
        j->cb(j->arg, NULL, NULL);
    } else if (rc != PL_OK) {
        pl_log_error("sip", "while reading the account %s: %s", j->base.bare,
                     pl_strerror(rc));
        pl__sip_reply(t, 500, NULL, NULL);
        j->cb(j->arg, NULL, NULL);
    } else {
        if (j->found)
            cache_put(j->base.bare, &j->acct);
        finish(j, t);
    }
    job_free(j);
}

void pl__sip_auth(struct sip_txn *t, struct pl_host *h, const struct pl_jid *as,
                  const char *refusal, unsigned flags, sip_auth_fn *cb,
                  void *arg)
{
    if (flags & SIP_AUTH_FLOW) {
        struct pl_session *s = pl__sip_binding_on_conn(as->bare,
                                                       pl__sip_txn_flow(t),
                                                       pl__sip_txn_request(t));
        if (s) {
            /* The connection its registration authenticated. */
            cb(arg, t, s);
            return;
        }
    }
    int proxy = (flags & SIP_AUTH_PROXY) != 0;
    osip_message_t *req = pl__sip_txn_request(t);
    osip_authorization_t *a = credentials(req, proxy, h->domain);
    if (!a) {
        challenge(t, h, proxy, 0);
        cb(arg, NULL, NULL);
        return;
    }
    struct auth_job *j = pl_job_new(sizeof(*j), NULL, 0, h->domain, NULL);
    j->txn = t->id;
    j->h = h;
    j->proxy = proxy;
    j->flags = flags;
    j->as = pl_strdup(as->bare);
    j->as_local = strlen(as->local);
    j->refusal = refusal;
    j->cb = cb;
    j->arg = arg;
    snprintf(j->method, sizeof(j->method), "%s",
             req->sip_method ? req->sip_method : "");
    int bad = take(j, P_USERNAME, a->username) || take(j, P_REALM, a->realm) ||
              take(j, P_NONCE, a->nonce) || take(j, P_URI, a->uri) ||
              take(j, P_RESPONSE, a->response) ||
              take(j, P_ALGORITHM, a->algorithm) ||
              take(j, P_QOP, a->message_qop) || take(j, P_NC, a->nonce_count) ||
              take(j, P_CNONCE, a->cnonce);
    if (bad || !j->has[P_USERNAME] || !j->has[P_NONCE] || !j->has[P_URI] ||
        !j->has[P_RESPONSE]) {
        pl_stat_inc(sip_auth_failures);
        pl__sip_reply(t, 400, "Malformed Credentials", NULL);
        goto answered;
    }
    if (!pl_digest_nonce_check(D, pl_str_c(h->domain), param(j, P_NONCE))) {
        pl_stat_inc(sip_auth_failures);
        challenge(t, h, proxy, 0);
        goto answered;
    }
    if (!uri_matches(j->p[P_URI].data + j->p[P_URI].off, req->req_uri)) {
        pl_stat_inc(sip_auth_failures);
        pl__sip_reply(t, 400, "Credentials For Another URI", NULL);
        goto answered;
    }
    char *local = NULL;
    struct pl_str u = param(j, P_USERNAME);
    if (pl_jid_prep_local(u, &local) != PL_OK || strlen(local) != u.len ||
        memcmp(local, u.p, u.len) != 0) {
        /* No account has that name as written: the fake key decides,
         * with the same work as a wrong password. */
        pl_free(local);
        finish(j, t);
        job_free(j);
        return;
    }
    j->base.user = local;
    size_t n = strlen(local) + strlen(h->domain) + 2;
    j->base.bare = pl_malloc(n);
    snprintf(j->base.bare, n, "%s@%s", local, h->domain);
    const struct cached *c = cache_get(j->base.bare);
    if (c) {
        memcpy(j->acct.digest, c->key, sizeof(c->key));
        j->found = 1;
        pl_stat_inc(sip_auth_cache_hits);
        finish(j, t);
        job_free(j);
        return;
    }
    pl_storage_submit(pl_server_loop(), run, done, j);
    return;
answered:
    job_free(j);
    cb(arg, NULL, NULL);
}
