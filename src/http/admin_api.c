/*
 * admin_api.c - the HTTP admin API under /api/ (service "admin"): JSON
 * in, JSON out, for a bearer token made with `parleyctl token create`
 * (token.h).  Each endpoint is an operation of the admin socket, run with
 * pl_admin_call (admin.h), so the API does exactly what the socket's
 * clients (parleyctl) get, through the same handlers:
 *
 *   GET    /api/users[?host=D]        "users"        200 {users}
 *   POST   /api/users {jid,password}  "user-add"     201, 409 if it exists
 *   DELETE /api/users/JID             "user-delete"  200, 404
 *   GET    /api/sessions[?host=D]     "sessions"     200 {sessions}
 *   POST   /api/sessions/JID/kick     "kick"         200 {kicked}, 404
 *          [{text}]                   (JID bare: every session; full: one)
 *   POST   /api/announce {host,body[,subject]}
 *                                     "announce"     200 {delivered}
 *   POST   /api/fleet/push {payload, device|group|all[, host, ttl]}
 *                                     "push"         202 {id}
 *   GET    /api/fleet/push/ID         "status"       200 {delivered...}
 *   GET    /api/stats                 "stats"        200 {counters, memory}
 *   GET    /api/cluster               "cluster"      200 {enabled, node, nodes}
 *   POST   /api/cluster/nodes/NODE/drain   (or /quiesce)
 *                                     "cluster"      200 {node, ...}
 *   POST   /api/cluster/restart       "cluster"      200 {restart}
 *   GET    /api/media[/FILE]          "media"        200 {files} / {host, file}
 *
 * Errors have a JSON body {"error": CONDITION, "detail": TEXT}: 401 with
 * WWW-Authenticate: Bearer without a token or with one that is not valid
 * (revoked, unknown); 403 for a "read" token on anything but GET; 404 for
 * an unknown path or object; 405 with Allow; 400 for a body that is not a
 * JSON object or lacks a field; 409 on conflict; 501 when the module
 * providing the operation is off; 500 otherwise.  Every call is logged at
 * info level: address, token name, method, path, status.
 *
 * Extending: an endpoint is a row in map_request() building the op's
 * request; the op itself belongs in the module that owns the data, where
 * the admin socket gets it too.
 */
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "admin.h"
#include "alloc.h"
#include "error.h"
#include "host.h"
#include "http/http_int.h"
#include "http/token.h"
#include "jid.h"
#include "log.h"
#include "server.h"
#include "stats.h"

#define PREFIX "/api/"
#define JSON_TYPE "application/json"

/* One call in flight. */
struct call {
    struct pl_http_req *r;           /* NULL once it is answered */
    uint64_t id;                     /* the pl_admin_call */
    int in_call;                     /* inside pl_admin_call */
    int answered;                    /* done came */
    int ok_status;                   /* 200, 201, 202 */
    char who[PL_TOKEN_NAME_MAX + 1]; /* the token's name */
    char ip[INET6_ADDRSTRLEN];       /* the client's, for the log */
    char method[8];                  /* for the log */
    char path[256];                  /* for the log (cut) */
};

/* By the caller's copies: once answered or aborted, r and its
 * connection are gone. */
static void log_call(const char *ip, const char *who, const char *method,
                     const char *path, int status)
{
    pl_log_info("admin_api", "%s: token %s: %s %s: %d", ip, who, method, path,
                status);
}

/* Answers with body (borrowed) or an error object, and logs. */
static void send_json(struct pl_http_req *r, const char *who, int status,
                      json_t *body)
{
    char ip[INET6_ADDRSTRLEN], method[8], path[256];
    snprintf(ip, sizeof(ip), "%s", r->conn ? r->conn->ip : "-");
    snprintf(method, sizeof(method), "%.*s", (int)r->head->method.len,
             r->head->method.p);
    snprintf(path, sizeof(path), "%.*s", (int)r->path.len, r->path.p);
    char *s = json_dumps(body, JSON_COMPACT);
    pl_http_add_header(r, "Cache-Control", "no-store");
    pl_http_respond(r, status, JSON_TYPE, s ? s : "{}", s ? strlen(s) : 2);
    free(s);
    log_call(ip, who, method, path, status);
}

static void send_error(struct pl_http_req *r, const char *who, int status,
                       const char *cond, const char *detail)
{
    json_t *e = json_pack("{s:s, s:s}", "error", cond, "detail", detail);
    send_json(r, who, status, e);
    json_decref(e);
}

/* The HTTP status of an admin answer's error condition. */
static int status_of(const char *cond)
{
    static const struct {
        const char *cond;
        int status;
    } map[] = {
        {"item-not-found", 404},      {"conflict", 409},
        {"bad-request", 400},         {"jid-malformed", 400},
        {"not-acceptable", 400},      {"feature-not-implemented", 501},
        {"forbidden", 403},           {"not-allowed", 403},
        {"service-unavailable", 503}, {"resource-constraint", 503},
        {"policy-violation", 400},
    };
    for (size_t i = 0; cond && i < sizeof(map) / sizeof(map[0]); i++)
        if (strcmp(map[i].cond, cond) == 0)
            return map[i].status;
    return 500;
}

static void on_answer(void *arg, json_t *answer)
{
    struct call *k = arg;
    k->answered = 1;
    if (k->r) {
        json_t *a = json_deep_copy(answer);
        json_object_del(a, "tag");
        if (json_is_true(json_object_get(a, "ok"))) {
            json_object_del(a, "ok");
            send_json(k->r, k->who, k->ok_status, a);
        } else {
            const char *cond = json_string_value(json_object_get(a, "error"));
            json_object_del(a, "ok");
            send_json(k->r, k->who, status_of(cond), a);
        }
        json_decref(a);
        k->r = NULL;
    }
    if (!k->in_call)
        pl_free(k);
}

static void on_abort(struct pl_http_req *r)
{
    struct call *k = r->data;
    if (!k)
        return;
    pl_admin_cancel(k->id);
    log_call(k->ip, k->who, k->method, k->path, 499);
    pl_free(k);
    r->data = NULL;
}

/* ---- authentication ---- */

/* The bearer token's name and scope: PL_OK, or answers 401 (or 500). */
static int authenticate(struct pl_http_req *r, char *who, int *scope)
{
    struct pl_str v = pl_http_field(r, "Authorization");
    const char *realm = "Bearer realm=\"parley\"";
    if (v.len < 7 || strncasecmp(v.p, "Bearer ", 7) != 0) {
        pl_http_add_header(r, "WWW-Authenticate", realm);
        send_error(r, "-", 401, "not-authorized", "a bearer token is needed");
        return PL_ENOT_AUTHORIZED;
    }
    struct pl_str t = {v.p + 7, v.len - 7};
    while (t.len && t.p[0] == ' ') {
        t.p++;
        t.len--;
    }
    while (t.len && t.p[t.len - 1] == ' ')
        t.len--;
    char path[4200];
    const char *dir = pl_server_config()->s.data_dir;
    int rc = pl_token_path(dir, path, sizeof(path));
    if (rc == PL_OK)
        rc = pl_token_check(path, t, who, scope);
    if (rc == PL_ENOT_FOUND) {
        pl_http_add_header(r, "WWW-Authenticate",
                           "Bearer realm=\"parley\", error=\"invalid_token\"");
        send_error(r, "-", 401, "not-authorized", "the token is not valid");
        return rc;
    }
    if (rc != PL_OK) {
        pl_log_error("admin_api", "while reading the API tokens in %s", path);
        send_error(r, "-", 500, "internal-server-error", "token store");
        return rc;
    }
    return PL_OK;
}

/* ---- requests ---- */

/* The value of key in the query string (raw, not decoded; new string), or
 * NULL. */
static char *query_arg(const struct pl_http_req *r, const char *key)
{
    size_t kl = strlen(key);
    const char *p = r->query.p, *end = r->query.p + r->query.len;
    while (p && p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *e = amp ? amp : end;
        if ((size_t)(e - p) > kl && memcmp(p, key, kl) == 0 && p[kl] == '=')
            return pl_strndup(p + kl + 1, (size_t)(e - p - kl - 1));
        p = amp ? amp + 1 : NULL;
    }
    return NULL;
}

/* A JID in the path or body as (host, user): PL_OK or PL_EJID_MALFORMED. */
static int split_jid(json_t *req, const char *s, size_t n, int bare_only)
{
    struct pl_jid *j = NULL;
    if (pl_jid_parse((struct pl_str){s, n}, &j) != PL_OK || !j->local ||
        (bare_only && j->resource)) {
        pl_jid_free(j);
        return PL_EJID_MALFORMED;
    }
    json_object_set_new(req, "host", json_string(j->domain));
    json_object_set_new(req, "user", json_string(j->local));
    json_object_set_new(req, "jid",
                        json_string(j->resource ? j->full : j->bare));
    pl_jid_free(j);
    return PL_OK;
}

struct mapped {
    json_t *req;       /* the admin request */
    int ok_status;     /* on success */
    const char *allow; /* methods of the path, for 405 */
    int status;        /* an error found while mapping, or 0 */
    const char *cond;  /* its condition */
    const char *detail;
};

static int is(struct pl_str s, const char *c)
{
    return pl_str_eq_c(s, c);
}

static int starts(struct pl_str s, const char *c)
{
    size_t n = strlen(c);
    return s.len >= n && memcmp(s.p, c, n) == 0;
}

static int ends(struct pl_str s, const char *c)
{
    size_t n = strlen(c);
    return s.len >= n && memcmp(s.p + s.len - n, c, n) == 0;
}

static void fail(struct mapped *m, int status, const char *cond,
                 const char *detail)
{
    m->status = status;
    m->cond = cond;
    m->detail = detail;
}

/* Copies the listed members of body into req. */
static void copy_fields(json_t *req, json_t *body, const char *const *keys)
{
    for (int i = 0; keys[i]; i++) {
        json_t *v = json_object_get(body, keys[i]);
        if (v)
            json_object_set(req, keys[i], v);
    }
}

static void need_string(struct mapped *m, json_t *body, const char *key)
{
    if (!m->status && !json_is_string(json_object_get(body, key)))
        fail(m, 400, "bad-request", key);
}

/* Builds the admin request for method and path (after /api/), body
 * parsed (NULL if none). */
static void map_request(struct pl_http_req *r, struct pl_str method,
                        struct pl_str p, json_t *body, struct mapped *m)
{
    int get = is(method, "GET") || is(method, "HEAD");
    int post = is(method, "POST"), del = is(method, "DELETE");
    json_t *req = m->req;
    m->ok_status = 200;
    char *host = query_arg(r, "host");
    if (is(p, "users")) {
        m->allow = "GET, HEAD, POST";
        if (get) {
            json_object_set_new(req, "op", json_string("users"));
        } else if (post) {
            json_object_set_new(req, "op", json_string("user-add"));
            need_string(m, body, "jid");
            need_string(m, body, "password");
            const char *jid = json_string_value(json_object_get(body, "jid"));
            if (!m->status && split_jid(req, jid, strlen(jid), 1) != PL_OK)
                fail(m, 400, "jid-malformed", "jid must be user@host");
            if (!m->status)
                json_object_set(req, "password",
                                json_object_get(body, "password"));
            m->ok_status = 201;
        }
    } else if (starts(p, "users/") && p.len > 6) {
        m->allow = "DELETE";
        if (del) {
            json_object_set_new(req, "op", json_string("user-delete"));
            if (split_jid(req, p.p + 6, p.len - 6, 1) != PL_OK)
                fail(m, 400, "jid-malformed", "user@host expected");
        }
    } else if (is(p, "sessions")) {
        m->allow = "GET, HEAD";
        if (get)
            json_object_set_new(req, "op", json_string("sessions"));
    } else if (starts(p, "sessions/") && ends(p, "/kick") && p.len > 9 + 5) {
        m->allow = "POST";
        if (post) {
            json_object_set_new(req, "op", json_string("kick"));
            if (split_jid(req, p.p + 9, p.len - 9 - 5, 0) != PL_OK)
                fail(m, 400, "jid-malformed", "user@host[/resource] expected");
            json_object_del(req, "user");
            static const char *const keys[] = {"text", NULL};
            copy_fields(req, body, keys);
        }
    } else if (is(p, "announce")) {
        m->allow = "POST";
        if (post) {
            json_object_set_new(req, "op", json_string("announce"));
            need_string(m, body, "host");
            need_string(m, body, "body");
            static const char *const keys[] = {"host", "body", "subject", NULL};
            copy_fields(req, body, keys);
        }
    } else if (is(p, "fleet/push")) {
        m->allow = "POST";
        if (post) {
            json_object_set_new(req, "op", json_string("push"));
            static const char *const keys[] = {"host",  "ttl",    "all",
                                               "group", "device", "payload",
                                               NULL};
            if (!json_object_get(body, "payload"))
                fail(m, 400, "bad-request", "payload");
            copy_fields(req, body, keys);
            m->ok_status = 202;
        }
    } else if (starts(p, "fleet/push/") && p.len > 11) {
        m->allow = "GET, HEAD";
        if (get) {
            json_object_set_new(req, "op", json_string("status"));
            json_object_set_new(req, "id", json_stringn(p.p + 11, p.len - 11));
            char *v = query_arg(r, "verbose");
            if (v && strcmp(v, "0") != 0)
                json_object_set_new(req, "verbose", json_true());
            pl_free(v);
        }
    } else if (is(p, "media")) {
        m->allow = "GET, HEAD";
        if (get)
            json_object_set_new(req, "op", json_string("media"));
    } else if (starts(p, "media/") && p.len > 6) {
        m->allow = "GET, HEAD";
        if (get) {
            json_object_set_new(req, "op", json_string("media"));
            json_object_set_new(req, "file", json_stringn(p.p + 6, p.len - 6));
        }
    } else if (is(p, "cluster")) {
        m->allow = "GET, HEAD";
        if (get)
            json_object_set_new(req, "op", json_string("cluster"));
    } else if (is(p, "cluster/restart")) {
        m->allow = "POST";
        if (post) {
            json_object_set_new(req, "op", json_string("cluster"));
            json_object_set_new(req, "restart", json_true());
        }
    } else if (starts(p, "cluster/nodes/") && p.len > 14) {
        /* POST /api/cluster/nodes/NODE/drain (or /quiesce) */
        struct pl_str rest = {p.p + 14, p.len - 14};
        const char *slash = memrchr(rest.p, '/', rest.len);
        m->allow = "POST";
        if (!slash || slash == rest.p) {
            fail(m, 404, "item-not-found", "no such endpoint");
        } else {
            size_t nl = (size_t)(slash - rest.p);
            struct pl_str act = {slash + 1, rest.len - nl - 1};
            const char *what = act.len == 5 && !memcmp(act.p, "drain", 5)
                                   ? "drain"
                               : act.len == 7 && !memcmp(act.p, "quiesce", 7)
                                   ? "quiesce"
                                   : NULL;
            if (!what)
                fail(m, 404, "item-not-found", "no such endpoint");
            else if (post) {
                json_object_set_new(req, "op", json_string("cluster"));
                json_object_set_new(req, what, json_stringn(rest.p, nl));
            }
        }
    } else if (is(p, "stats")) {
        m->allow = "GET, HEAD";
        if (get)
            json_object_set_new(req, "op", json_string("stats"));
    } else {
        fail(m, 404, "item-not-found", "no such endpoint");
    }
    if (!m->status && m->allow && !json_object_get(req, "op"))
        fail(m, 405, "not-allowed", "method not allowed here");
    if (!m->status && host && !json_object_get(req, "host"))
        json_object_set_new(req, "host", json_string(host));
    if (!m->status && json_object_get(req, "host") &&
        !pl_host_find(json_string_value(json_object_get(req, "host"))))
        fail(m, 404, "item-not-found", "no such host");
    pl_free(host);
}

static void on_request(struct pl_http_req *r)
{
    pl_stat_inc(admin_api_requests);
    char who[PL_TOKEN_NAME_MAX + 1];
    int scope = PL_TOKEN_READ;
    if (authenticate(r, who, &scope) != PL_OK)
        return;
    struct pl_str method = r->head->method;
    struct pl_str p = {r->path.p + strlen(PREFIX),
                       r->path.len - strlen(PREFIX)};
    json_t *body = NULL;
    if (r->body.len) {
        json_error_t e;
        body = json_loadb(r->body.data + r->body.off, r->body.len,
                          JSON_REJECT_DUPLICATES, &e);
        if (!body || !json_is_object(body)) {
            json_decref(body);
            send_error(r, who, 400, "bad-request",
                       "the body must be a JSON object");
            return;
        }
    }
    struct mapped m = {json_object(), 0, NULL, 0, NULL, NULL};
    map_request(r, method, p, body, &m);
    json_decref(body);
    if (!m.status && scope == PL_TOKEN_READ && !is(method, "GET") &&
        !is(method, "HEAD"))
        fail(&m, 403, "forbidden", "this token may only read");
    if (m.status) {
        if (m.status == 405)
            pl_http_add_header(r, "Allow", m.allow);
        send_error(r, who, m.status, m.cond, m.detail);
        json_decref(m.req);
        return;
    }
    struct call *k = pl_calloc(1, sizeof(*k));
    k->r = r;
    k->ok_status = m.ok_status;
    memcpy(k->who, who, sizeof(k->who));
    snprintf(k->ip, sizeof(k->ip), "%s", r->conn->ip);
    snprintf(k->method, sizeof(k->method), "%.*s", (int)method.len, method.p);
    snprintf(k->path, sizeof(k->path), "%.*s", (int)r->path.len, r->path.p);
    r->data = k;
    k->in_call = 1;
    k->id = pl_admin_call(m.req, on_answer, k);
    k->in_call = 0;
    json_decref(m.req);
    if (k->answered)
        pl_free(k); /* answered at once: r is gone */
}

static const struct pl_http_route route = {
    .path = PREFIX,
    .service = "admin",
    .methods = "GET POST DELETE",
    .max_body = 65536,
    .on_request = on_request,
    .on_abort = on_abort,
};

int pl__admin_api_start(void)
{
    return pl_http_route_add(&route);
}

void pl__admin_api_stop(void)
{
    pl_http_route_remove(&route);
    pl_token_forget();
}
