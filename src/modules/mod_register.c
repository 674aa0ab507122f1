/*
 * mod_register.c - XEP-0077 In-Band Registration: account creation before
 * authentication (policy: open, closed, or only from listed networks; rate
 * limited per IP), password change and account removal after it.
 *
 * Password keys (SCRAM, and digest keys for SIP: account.h) are derived
 * on the CPU work queue (PBKDF2 is slow by design) and stored through the
 * storage queue; the reply is sent only after the account is durably
 * written.
 *
 * The same jobs serve the admin socket (admin.h), and through it the
 * HTTP admin API: "admin/user-add" {host, user, password}, "admin/user-
 * delete" {host, user} and "admin/users" {host optional}; their answers
 * come once the write is durable, as the XEP-0077 replies do.
 */
#include <arpa/inet.h>
#include <time.h>

#include "core/modapi.h"

#define NS_REGISTER "jabber:iq:register"

enum {
    POLICY_OPEN = 0,
    POLICY_CLOSED,
    POLICY_NETWORKS
};
static const char *const policies[] = {"open", "closed", "networks", NULL};

struct rate {
    time_t window; /* start of the current minute */
    long count;    /* registrations in it */
};

struct state {
    int policy;                 /* POLICY_* */
    struct pl_strlist networks; /* CIDRs for POLICY_NETWORKS */
    long per_ip_per_minute;     /* registration rate per IP */
    long min_password_length;   /* shortest password accepted */
    struct pl_map rates;        /* ip -> struct rate */
    struct pl_host *host;       /* our host */
};

static int in_network(const char *ip, const char *cidr)
{
    char net[64];
    int bits = -1;
    const char *slash = strchr(cidr, '/');
    size_t n = slash ? (size_t)(slash - cidr) : strlen(cidr);
    if (n >= sizeof(net))
        return 0;
    memcpy(net, cidr, n);
    net[n] = '\0';
    unsigned char a[16], b[16];
    int len;
    if (inet_pton(AF_INET, net, b) == 1 && inet_pton(AF_INET, ip, a) == 1)
        len = 4;
    else if (inet_pton(AF_INET6, net, b) == 1 &&
             inet_pton(AF_INET6, ip, a) == 1)
        len = 16;
    else
        return 0;
    bits = slash ? atoi(slash + 1) : len * 8;
    for (int i = 0; i < len && bits > 0; i++, bits -= 8) {
        unsigned char mask = bits >= 8 ? 0xff
                                       : (unsigned char)(0xff << (8 - bits));
        if ((a[i] & mask) != (b[i] & mask))
            return 0;
    }
    return 1;
}

static int allowed(struct state *s, struct pl_session *sess)
{
    if (s->policy == POLICY_OPEN)
        return 1;
    if (s->policy == POLICY_CLOSED)
        return 0;
    const char *ip = pl_session_ip(sess);
    for (int i = 0; i < s->networks.n; i++)
        if (in_network(ip, s->networks.v[i]))
            return 1;
    return 0;
}

static int rate_ok(struct state *s, const char *ip)
{
    time_t now = time(NULL);
    struct rate *r = pl_map_get(&s->rates, ip);
    if (!r) {
        if (s->rates.count > 100000) /* bound memory under a spray */
            pl_map_clear(&s->rates);
        r = pl_calloc(1, sizeof(*r));
        pl_map_put(&s->rates, ip, r);
    }
    if (now - r->window >= 60) {
        r->window = now;
        r->count = 0;
    }
    if (r->count >= s->per_ip_per_minute)
        return 0;
    r->count++;
    return 1;
}

/* Replies on the session itself (before binding there is no JID). */
static void reply(struct pl_event *ev, struct pl_stanza *r)
{
    if (ev->session && !ev->session->jid) {
        pl_session_send(ev->session, r);
        return;
    }
    pl_route_reply(ev->stanza, r);
}

static void reply_error(struct pl_event *ev, struct pl_stanza *st, int code,
                        const char *text)
{
    struct pl_stanza *r = pl_stanza_error_reply(st, code, text);
    if (!r)
        return;
    if (ev->session && !ev->session->jid) {
        pl_stanza_set_attr(r, "to", NULL);
        pl_stanza_set_attr(r, "from", NULL);
    }
    reply(ev, r);
    pl_stanza_unref(r);
}

static int on_features(struct pl_event *ev, void *state)
{
    if (allowed(state, ev->session))
        pl_buf_append_str(ev->data, "<register xmlns='"
                                    "http://jabber.org/features/iq-register'"
                                    "/>");
    return PL_PASS;
}

static int on_get(struct pl_event *ev, void *state)
{
    struct pl_session *sess = ev->session;
    int authed = sess && sess->jid;
    if (authed && ev->to && ev->to->local &&
        strcmp(ev->to->bare, sess->jid->bare) != 0)
        return PL_PASS;
    if (!authed && !allowed(state, sess))
        return PL_ENOT_ALLOWED;
    struct pl_stanza *r = pl_iq_result(ev->stanza);
    struct pl_node *q = pl_node_add_child(r, pl_stanza_root(r), "query",
                                          NS_REGISTER);
    if (authed) {
        pl_node_add_child(r, q, "registered", NS_REGISTER);
        struct pl_node *u = pl_node_add_child(r, q, "username", NS_REGISTER);
        pl_node_add_text(r, u, sess->jid->local, strlen(sess->jid->local));
    } else {
        static const char text[] = "Choose a username and password.";
        struct pl_node *i = pl_node_add_child(r, q, "instructions",
                                              NS_REGISTER);
        pl_node_add_text(r, i, text, sizeof(text) - 1);
        pl_node_add_child(r, q, "username", NS_REGISTER);
    }
    pl_node_add_child(r, q, "password", NS_REGISTER);
    reply(ev, r);
    pl_stanza_unref(r);
    return PL_HANDLED;
}

/* An account write in flight: PBKDF2 on the CPU queue, then storage. */
struct job {
    struct pl_job base;     /* the request, held; requesting session;
                                * the account */
    struct pl_work w;       /* CPU step */
    int create;             /* create (1) or change password (0) */
    char *password;         /* wiped after derivation */
    long iterations;        /* PBKDF2 rounds */
    int digest_md5;         /* also an MD5 digest key (server.digest_md5) */
    struct pl_account acct; /* derived keys */
    int rc;
    uint64_t admin; /* an admin request's client id, or 0 */
};

/* The answer to an admin request: ok, or the condition of rc. */
static void admin_answer(uint64_t cid, int rc, const char *detail)
{
    json_t *a;
    if (rc == PL_OK) {
        a = json_pack("{s:b}", "ok", 1);
    } else {
        const char *cond, *type;
        pl_error_condition(rc, &cond, &type);
        a = json_pack("{s:b, s:s, s:s}", "ok", 0, "error", cond, "detail",
                      detail ? detail : pl_strerror(rc));
    }
    pl_admin_answer(cid, a);
    json_decref(a);
}

static void job_free(struct job *j)
{
    if (j->password) {
        OPENSSL_cleanse(j->password, strlen(j->password));
        pl_free(j->password);
    }
    OPENSSL_cleanse(&j->acct, sizeof(j->acct)); /* HA1 opens the account */
    pl_job_free(j);
}

static struct job *job_of(struct pl_work *w)
{
    return (struct job *)((char *)w - offsetof(struct job, w));
}

static void job_reply(struct job *j, int rc)
{
    if (j->admin) {
        admin_answer(j->admin, rc,
                     rc == PL_ECONFLICT         ? "the account exists"
                     : rc == PL_ENOT_ACCEPTABLE ? "password not acceptable"
                                                : NULL);
        return;
    }
    struct pl_session *s = pl_session_by_id(j->base.sid);
    struct pl_event ev = {NULL, pl_host_find(j->base.host),
                          s,    j->base.st,
                          NULL, NULL,
                          NULL};
    if (!s && !pl_stanza_attr(j->base.st, "from"))
        return; /* the unauthenticated requester left */
    if (rc == PL_OK) {
        struct pl_stanza *r = pl_iq_result(j->base.st);
        reply(&ev, r);
        pl_stanza_unref(r);
    } else {
        reply_error(&ev, j->base.st, rc,
                    rc == PL_ECONFLICT ? "the username is taken" : NULL);
    }
}

static int store_run(const struct pl_storage_driver *d, void *db, void *arg)
{
    struct job *j = arg;
    if (j->create)
        return d->account_create(db, j->base.host, j->base.user, &j->acct);
    return d->account_update(db, j->base.host, j->base.user, &j->acct);
}

static void store_done(int rc, void *arg)
{
    struct job *j = arg;
    if (rc == PL_OK) {
        pl_log_info("mod_register", "%s %s@%s",
                    j->create ? "registered" : "changed the password of",
                    j->base.user, j->base.host);
        if (j->create) {
            pl_stat_inc(registrations);
        } else {
            /* Caches of the old keys drop them (the SIP digest cache). */
            struct pl_event ev = {"user/password",
                                  pl_host_find(j->base.host),
                                  NULL,
                                  NULL,
                                  NULL,
                                  NULL,
                                  j->base.user};
            pl_hook_fire(&ev);
        }
    } else if (rc != PL_ECONFLICT) {
        pl_log_error("mod_register", "storing %s@%s failed: %s", j->base.user,
                     j->base.host, pl_strerror(rc));
        rc = PL_EINTERNAL_SERVER_ERROR;
    }
    job_reply(j, rc);
    job_free(j);
}

static void derive_work(struct pl_work *w)
{
    struct job *j = job_of(w);
    /* SCRAM keys for XMPP and digest keys for SIP, realm = the host. */
    j->rc = pl_account_set_password(&j->acct, j->base.user, j->base.host,
                                    pl_str_c(j->password),
                                    (unsigned)j->iterations, j->digest_md5);
    OPENSSL_cleanse(j->password, strlen(j->password));
}

static void derive_done(struct pl_work *w)
{
    struct job *j = job_of(w);
    if (j->rc != PL_OK) {
        job_reply(j, PL_ENOT_ACCEPTABLE);
        job_free(j);
        return;
    }
    pl_storage_submit(pl_server_loop(), store_run, store_done, j);
}

static struct job *new_job(struct pl_event *ev, const char *user,
                           const char *password, int create)
{
    struct job *j = pl_job_new(sizeof(*j), ev->stanza,
                               ev->session ? ev->session->id : 0,
                               ev->host->domain, user);
    j->w.work = derive_work;
    j->w.done = derive_done;
    j->create = create;
    j->password = pl_strdup(password);
    j->iterations = pl_server_scram_iterations();
    j->digest_md5 = pl_server_config()->s.digest_md5;
    return j;
}

/* Account removal: the head and, for the admin socket, the client. */
struct removal {
    struct pl_job base; /* the request (NULL from admin), the account */
    uint64_t admin;     /* an admin request's client id, or 0 */
};

static int remove_run(const struct pl_storage_driver *d, void *db, void *arg)
{
    struct pl_job *r = arg;
    return d->account_delete(db, r->host, r->user);
}

static void remove_done(int rc, void *arg)
{
    struct pl_job *r = arg;
    uint64_t admin = ((struct removal *)arg)->admin;
    if (admin)
        admin_answer(admin, rc == PL_ENOT_FOUND ? PL_EITEM_NOT_FOUND : rc,
                     rc == PL_ENOT_FOUND ? "no such account" : NULL);
    struct pl_host *h = pl_host_find(r->host);
    struct pl_session *s = pl_session_by_id(r->sid);
    struct pl_event ev = {"user/deleted", h, s, r->st, NULL, NULL, r->user};
    if (rc == PL_OK) {
        if (s && r->st) {
            struct pl_stanza *res = pl_iq_result(r->st);
            reply(&ev, res);
            pl_stanza_unref(res);
        }
        pl_log_info("mod_register", "removed %s@%s", r->user, r->host);
        pl_hook_fire(&ev);
        /* XEP-0077 §3.2: every session of the account ends. */
        struct pl_session *o;
        while ((o = pl_session_first(r->bare))) {
            o->ops->close(o, "not-authorized", "account removed");
            pl_session_unregister(o);
        }
    } else if (s && r->st) {
        reply_error(&ev, r->st,
                    rc == PL_ENOT_FOUND ? PL_EITEM_NOT_FOUND
                                        : PL_EINTERNAL_SERVER_ERROR,
                    NULL);
    }
    pl_job_free(r);
}

static const char *child_text(struct pl_stanza *st, struct pl_node *q,
                              const char *name)
{
    struct pl_node *n = pl_node_child(q, name, NS_REGISTER);
    return n ? pl_node_text(st, n, NULL) : NULL;
}

static int on_set(struct pl_event *ev, void *state)
{
    struct state *s = state;
    struct pl_session *sess = ev->session;
    int authed = sess && sess->jid;
    if (authed && ev->to && ev->to->local &&
        strcmp(ev->to->bare, sess->jid->bare) != 0)
        return PL_PASS;
    struct pl_node *q = pl_stanza_payload(ev->stanza);
    if (pl_node_child(q, "remove", NS_REGISTER)) {
        if (!authed)
            return PL_ENOT_AUTHORIZED;
        /* XEP-0077 §3.2: <remove/> must be the only child. */
        if (pl_node_count_elems(q) != 1)
            return PL_EBAD_REQUEST;
        struct pl_job *r = pl_job_new(sizeof(struct removal), ev->stanza,
                                      sess->id, ev->host->domain,
                                      sess->jid->local);
        pl_storage_submit(pl_server_loop(), remove_run, remove_done, r);
        return PL_HANDLED;
    }
    const char *user = child_text(ev->stanza, q, "username");
    const char *password = child_text(ev->stanza, q, "password");
    if (!user || !password || !*user || !*password)
        return PL_ENOT_ACCEPTABLE; /* XEP-0077 §3.1: missing fields */
    if ((long)strlen(password) < s->min_password_length) {
        reply_error(ev, ev->stanza, PL_ENOT_ACCEPTABLE, "password too short");
        return PL_HANDLED;
    }
    char *local = NULL;
    if (pl_jid_prep_local(pl_str_c(user), &local) != PL_OK)
        return PL_EJID_MALFORMED;
    int rc = PL_HANDLED;
    if (authed) {
        /* XEP-0077 §3.3: change of the requester's own password only. */
        if (strcmp(local, sess->jid->local) != 0)
            rc = PL_ENOT_AUTHORIZED;
        else
            pl_workq_submit(pl_server_cpu(), pl_server_loop(),
                            &new_job(ev, local, password, 0)->w);
    } else if (!allowed(s, sess)) {
        rc = PL_ENOT_ALLOWED;
    } else if (!rate_ok(s, pl_session_ip(sess))) {
        rc = PL_ERESOURCE_CONSTRAINT;
        pl_log_info("mod_register", "%s: registration rate limit reached",
                    pl_session_ip(sess));
    } else {
        pl_workq_submit(pl_server_cpu(), pl_server_loop(),
                        &new_job(ev, local, password, 1)->w);
    }
    pl_free(local);
    return rc;
}

/* ---- the admin socket's account operations ---- */

/* The request's "user" as a prepared localpart (new string), or NULL after
 * answering bad-request. */
static char *admin_user(struct pl_admin_request *ar)
{
    const char *u = json_string_value(json_object_get(ar->req, "user"));
    char *local = NULL;
    if (!u || !*u || pl_jid_prep_local(pl_str_c(u), &local) != PL_OK) {
        admin_answer(ar->cid, PL_EJID_MALFORMED, "bad or missing user");
        return NULL;
    }
    return local;
}

/* "admin/user-add" {host, user, password}: as an in-band registration,
 * without the policy (the operator decides). */
static int on_admin_user_add(struct pl_event *ev, void *state)
{
    (void)state;
    struct pl_admin_request *ar = ev->data;
    const char *pw = json_string_value(json_object_get(ar->req, "password"));
    char *local = admin_user(ar);
    if (!local)
        return PL_HANDLED;
    if (!pw || !*pw) {
        admin_answer(ar->cid, PL_ENOT_ACCEPTABLE, "missing password");
    } else {
        struct pl_event e = *ev;
        e.stanza = NULL;
        e.session = NULL;
        struct job *j = new_job(&e, local, pw, 1);
        j->admin = ar->cid;
        pl_workq_submit(pl_server_cpu(), pl_server_loop(), &j->w);
    }
    pl_free(local);
    return PL_HANDLED;
}

/* "admin/user-delete" {host, user}: as XEP-0077 <remove/>. */
static int on_admin_user_delete(struct pl_event *ev, void *state)
{
    (void)state;
    struct pl_admin_request *ar = ev->data;
    char *local = admin_user(ar);
    if (!local)
        return PL_HANDLED;
    struct removal *r = pl_job_new(sizeof(*r), NULL, 0, ev->host->domain,
                                   local);
    r->admin = ar->cid;
    pl_storage_submit(pl_server_loop(), remove_run, remove_done, r);
    pl_free(local);
    return PL_HANDLED;
}

/* "admin/users" {host optional}: the accounts, as bare JIDs. */
struct listing {
    uint64_t admin;  /* the client */
    char **domains;  /* hosts to list, NULL-ended (copies) */
    json_t *users;   /* filled on the storage thread */
    const char *cur; /* the host being listed */
};

static void list_one(const char *user, void *ud)
{
    struct listing *l = ud;
    char bare[2100];
    snprintf(bare, sizeof(bare), "%s@%s", user, l->cur);
    json_array_append_new(l->users, json_string(bare));
}

static int list_run(const struct pl_storage_driver *d, void *db, void *arg)
{
    struct listing *l = arg;
    int rc = PL_OK;
    for (int i = 0; l->domains[i] && rc == PL_OK; i++) {
        l->cur = l->domains[i];
        rc = d->account_list(db, l->cur, list_one, l);
    }
    return rc;
}

static void list_done(int rc, void *arg)
{
    struct listing *l = arg;
    if (rc == PL_OK) {
        json_t *a = json_pack("{s:b, s:O}", "ok", 1, "users", l->users);
        pl_admin_answer(l->admin, a);
        json_decref(a);
    } else {
        admin_answer(l->admin, rc, NULL);
    }
    for (int i = 0; l->domains[i]; i++)
        pl_free(l->domains[i]);
    pl_free(l->domains);
    json_decref(l->users);
    pl_free(l);
}

static int on_admin_users(struct pl_event *ev, void *state)
{
    (void)state;
    struct pl_admin_request *ar = ev->data;
    int all = !json_object_get(ar->req, "host");
    struct listing *l = pl_calloc(1, sizeof(*l));
    int n = 0;
    while (pl_host_at(n))
        n++;
    l->admin = ar->cid;
    l->users = json_array();
    l->domains = pl_calloc((size_t)n + 1, sizeof(char *));
    for (int i = 0, k = 0; i < n; i++) {
        struct pl_host *h = pl_host_at(i);
        if (all || h == ev->host)
            l->domains[k++] = pl_strdup(h->domain);
    }
    pl_storage_submit(pl_server_loop(), list_run, list_done, l);
    return PL_HANDLED;
}

static int load(struct pl_host *h, void *state)
{
    ((struct state *)state)->host = h;
    return PL_OK;
}

static void free_rate(const char *k, void *v, void *ud)
{
    pl_free(v);
}

static void unload(struct pl_host *h, void *state)
{
    struct state *s = state;
    pl_map_each(&s->rates, free_rate, NULL);
    pl_map_clear(&s->rates);
}

static const char *const features[] = {NS_REGISTER, NULL};

static const struct pl_option options[] = {
    {"policy", PL_OPT_ENUM, "\"networks\"", 0, 0, policies,
     "Who may create accounts: open, closed, or networks (listed below).",
     offsetof(struct state, policy)},
    {"networks", PL_OPT_STRLIST, "[\"127.0.0.0/8\", \"::1/128\"]", 0, 0, NULL,
     "Address ranges allowed to register when policy is networks.",
     offsetof(struct state, networks)},
    {"per_ip_per_minute", PL_OPT_INT, "5", 1, 1000000, NULL,
     "Accounts one IP address may create per minute.",
     offsetof(struct state, per_ip_per_minute)},
    {"min_password_length", PL_OPT_INT, "1", 1, 1024, NULL,
     "Shortest password accepted, in bytes.",
     offsetof(struct state, min_password_length)},
    {0},
};

static const struct pl_hook_def hooks[] = {
    {"stream-features/preauth", on_features, 0},
    {"iq-get/preauth/" NS_REGISTER ":query", on_get, 0},
    {"iq-set/preauth/" NS_REGISTER ":query", on_set, 0},
    {"iq-get/host/" NS_REGISTER ":query", on_get, 0},
    {"iq-set/host/" NS_REGISTER ":query", on_set, 0},
    {"iq-get/bare/" NS_REGISTER ":query", on_get, 0},
    {"iq-set/bare/" NS_REGISTER ":query", on_set, 0},
    {"admin/user-add", on_admin_user_add, 0},
    {"admin/user-delete", on_admin_user_delete, 0},
    {"admin/users", on_admin_users, 0},
    {0},
};

const struct pl_module pl_mod_register = {
    .abi = PL_MODULE_ABI,
    .default_on = 1,
    .name = "register",
    .summary = "in-band registration, password change, account removal",
    .xeps = "XEP-0077",
    .features = features,
    .options = options,
    .hooks = hooks,
    .state_size = sizeof(struct state),
    .load = load,
    .unload = unload,
};
