/*
 * http.c - the HTTP front end: `pl_mod_http`, serving the listener
 * protocol "http" (server.c) over TCP, plain or with direct TLS, with its
 * server-wide options (the `http` group), their checks and its lifetime.
 * The API for the parts of Parley that answer HTTP is http.h; what the
 * files of src/http/ share is http_int.h; doc/http.md describes it all.
 *
 * Configuration:
 *   listeners = (
 *     { protocol = "http"; address = "0.0.0.0"; },                 # 5280
 *     { protocol = "http"; address = "0.0.0.0"; tls = "direct"; }, # 5281
 *     { protocol = "http"; address = "127.0.0.1"; port = 5290;
 *       services = ["metrics", "admin"]; } );
 *   http: { max_line = 8192; max_header_bytes = 65536; max_headers = 100;
 *           max_body = 1048576; request_timeout = 30; body_timeout = 60;
 *           keepalive_timeout = 60; max_requests = 1000;
 *           server_name = "Parley"; cors_origins = [];
           web_root = "web/dist"; web_csp = "default-src 'self'; ...";
 *           static = ( { path = "/files/"; root = "/srv/files"; } ); };
 *   hosts = ( { domain = "example.org";
 *               http = { cors_origins = ["https://app.example.org"]; }; } );
 * Without a `listeners` list, 127.0.0.1:5280 (plain) and 127.0.0.1:5281
 * (direct TLS, with the hosts' certificates) listen.  HTTP has no
 * STARTTLS: tls = "starttls" written in an http entry is a configuration
 * error; an entry without tls is plain.  An entry's `services` lists the
 * services it serves (see http.h); a name no part of Parley provides is
 * an error.
 *
 * Extending: a new setting is a field of struct http_settings
 * (http_int.h), a row of options[] and, when it needs more than bounds,
 * a line in check(); a new service is a route table started from
 * http_start().
 */
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "error.h"
#include "host.h"
#include "http/http_int.h"
#include "http/websocket.h"
#include "listen.h"
#include "log.h"
#include "module.h"
#include "modules/upload/upload.h"

/* The web client's default Content-Security-Policy (doc/web.md): no
 * double quote in it (it is also the option's default, in quotes). */
#define PL_WEB_CSP                                                             \
    "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; "               \
    "style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "           \
    "media-src 'self' blob:; connect-src 'self'; object-src 'none'; "          \
    "base-uri 'self'; form-action 'self'; frame-ancestors 'self'"

static const struct http_settings defaults = {
    .max_line = 8192,
    .max_header_bytes = 65536,
    .max_headers = 100,
    .max_body = 1048576,
    .request_timeout = 30,
    .body_timeout = 60,
    .keepalive_timeout = 60,
    .max_requests = 1000,
    .server_name = "Parley",
    .web_root = "web/dist",
    .web_csp = PL_WEB_CSP,
};
static const struct http_settings *S = &defaults;
static int started;

const struct http_settings *pl__http_settings(void)
{
    return S;
}

/* The services a listeners entry may name. */
static const char *const known_services[] = {"websocket", "bosh",     "upload",
                                             "web",       "hostmeta", "metrics",
                                             "admin",     "static",   NULL};

static const struct pl_option options[] = {
    {"max_line", PL_OPT_INT, "8192", 256, 1048576, NULL,
     "Longest request line (method, target, version) in bytes; a longer "
     "one is answered 414 URI Too Long and the connection closed.",
     offsetof(struct http_settings, max_line)},
    {"max_header_bytes", PL_OPT_INT, "65536", 1024, 16777216, NULL,
     "Most bytes of header (and trailer) field lines of one request; more "
     "is answered 431 Request Header Fields Too Large.",
     offsetof(struct http_settings, max_header_bytes)},
    {"max_headers", PL_OPT_INT, "100", 8, 10000, NULL,
     "Most header (and trailer) field lines of one request; more is "
     "answered 431.",
     offsetof(struct http_settings, max_headers)},
    {"max_body", PL_OPT_INT, "1048576", 0, 1L << 40, NULL,
     "Largest request body in bytes for routes that set no limit of their "
     "own; a larger one is answered 413 Content Too Large.",
     offsetof(struct http_settings, max_body)},
    {"request_timeout", PL_OPT_INT, "30", 1, 3600, NULL,
     "Seconds a request's whole head may take to arrive, from its first "
     "byte (from the accept for the first request): a client trickling "
     "bytes (slowloris) gets 408 Request Timeout and is closed.",
     offsetof(struct http_settings, request_timeout)},
    {"body_timeout", PL_OPT_INT, "60", 1, 3600, NULL,
     "Seconds a request body may go without a byte arriving (unless its "
     "consumer paused it); then 408 and the connection is closed.",
     offsetof(struct http_settings, body_timeout)},
    {"keepalive_timeout", PL_OPT_INT, "60", 1, 3600, NULL,
     "Seconds a connection may stay idle between an answer and the next "
     "request's first byte; then it is closed.",
     offsetof(struct http_settings, keepalive_timeout)},
    {"max_requests", PL_OPT_INT, "1000", 1, 1000000, NULL,
     "Requests served on one connection; the last answer says "
     "Connection: close.",
     offsetof(struct http_settings, max_requests)},
    {"server_name", PL_OPT_STRING, "\"Parley\"", 0, 0, NULL,
     "The Server field of answers (no version: nothing to fingerprint); "
     "\"\" sends none.",
     offsetof(struct http_settings, server_name)},
    {"cors_origins", PL_OPT_STRLIST, "[]", 0, 0, NULL,
     "Origins (\"https://app.example.org\", or \"*\" for any) whose pages "
     "may call the routes that allow CORS (host-meta, BOSH...); a host's "
     "own http.cors_origins replaces this list for requests to it.",
     offsetof(struct http_settings, cors)},
    {"bosh_max_wait", PL_OPT_INT, "60", 1, 3600, NULL,
     "BOSH (XEP-0124): the longest a request is held waiting for data, in "
     "seconds; a client asking more gets this.",
     offsetof(struct http_settings, bosh.max_wait)},
    {"bosh_max_inactivity", PL_OPT_INT, "60", 5, 3600, NULL,
     "BOSH: seconds a session may go with no request held before it is "
     "over (a stream-managed one then waits for resumption).",
     offsetof(struct http_settings, bosh.max_inactivity)},
    {"bosh_max_hold", PL_OPT_INT, "1", 1, 3, NULL,
     "BOSH: requests held at once at most (the 'hold' granted).",
     offsetof(struct http_settings, bosh.max_hold)},
    {"bosh_max_sessions_per_ip", PL_OPT_INT, "100", 1, 1000000, NULL,
     "BOSH: open sessions from one address; one more is refused with "
     "condition='policy-violation'.",
     offsetof(struct http_settings, bosh.max_sessions_per_ip)},
    {"bosh_max_pause", PL_OPT_INT, "120", 0, 3600, NULL,
     "BOSH: the longest pause a client may ask (XEP-0124 §10, the "
     "'maxpause' granted): its held requests are answered and the session "
     "may then go that long without one; 0 offers no pausing.",
     offsetof(struct http_settings, bosh.max_pause)},
    {"web_root", PL_OPT_STRING, "\"web/dist\"", 0, 0, NULL,
     "The web client's files (Converse.js and Parley's page, built by "
     "`make web`), served at /chat/ by the \"web\" service; relative to "
     "the working directory; \"\" serves none.  A directory that is "
     "missing is a warning at start, not an error (doc/web.md).",
     offsetof(struct http_settings, web_root)},
    {"web_csp", PL_OPT_STRING, "\"" PL_WEB_CSP "\"", 0, 0, NULL,
     "The Content-Security-Policy field of every answer under /chat/; "
     "the default lets the page load and connect to its own origin only "
     "('self' covers its ws:// or wss:// URL) and compile WebAssembly "
     "(Converse's OMEMO); \"\" sends none.",
     offsetof(struct http_settings, web_csp)},
    {"static", PL_OPT_RAW, NULL, 0, 0, NULL,
     "Directories served as static files: a list of { path = \"/files/\"; "
     "root = \"/srv/files\"; } (path ends with '/'; index.html for "
     "directories; symbolic links are not followed).",
     offsetof(struct http_settings, statics)},
    {0},
};

static int is_known_service(const char *s)
{
    for (int i = 0; known_services[i]; i++)
        if (strcmp(known_services[i], s) == 0)
            return 1;
    return 0;
}

static int check_strlist(config_setting_t *l, const char *what, char *err,
                         size_t errlen)
{
    if (!config_setting_is_array(l) && !config_setting_is_list(l))
        return pl_config_where(err, errlen, l, "%s must be a list of strings",
                               what);
    for (int i = 0; i < config_setting_length(l); i++)
        if (!config_setting_get_string_elem(l, i))
            return pl_config_where(err, errlen, l,
                                   "%s must be a list of strings", what);
    return PL_OK;
}

static int check_static(config_setting_t *l, char *err, size_t errlen)
{
    if (!l)
        return PL_OK;
    if (!config_setting_is_list(l))
        return pl_config_where(err, errlen, l, "%s must be a list of groups",
                               "http.static");
    for (int i = 0; i < config_setting_length(l); i++) {
        config_setting_t *g = config_setting_get_elem(l, (unsigned)i);
        const char *path = NULL, *root = NULL;
        if (!config_setting_is_group(g) ||
            !config_setting_lookup_string(g, "path", &path) ||
            !config_setting_lookup_string(g, "root", &root))
            return pl_config_where(err, errlen, g,
                                   "%s: each entry is { path = \"/x/\"; "
                                   "root = \"/dir\"; }",
                                   "http.static");
        size_t n = strlen(path);
        if (n < 1 || path[0] != '/' || path[n - 1] != '/')
            return pl_config_where(err, errlen, g,
                                   "%s: path must start and end with '/'",
                                   "http.static");
        if (root[0] != '/')
            return pl_config_where(err, errlen, g,
                                   "%s: root must be an absolute path",
                                   "http.static");
        const char *svc = NULL;
        if (config_setting_lookup_string(g, "service", &svc) &&
            !is_known_service(svc))
            return pl_config_where(err, errlen, g,
                                   "http.static: unknown service '%s'", svc);
    }
    return PL_OK;
}

static void release(void *settings)
{
    struct http_settings *s = settings;
    for (int i = 0; i < s->nhost_cors; i++) {
        for (int j = 0; j < s->host_cors[i].n; j++)
            pl_free(s->host_cors[i].v[j]);
        pl_free(s->host_cors[i].v);
    }
    pl_free(s->host_cors);
    pl_free(s->host_domains);
    s->host_cors = NULL;
    s->host_domains = NULL;
    s->nhost_cors = 0;
}

static int check(struct pl_config *c, void *settings, char *err, size_t errlen)
{
    struct http_settings *s = settings;
    if (check_static(s->statics, err, errlen) != PL_OK)
        return PL_EINVAL;
    for (int i = 0; i < c->nlisteners; i++) {
        struct pl_listener_conf *lc = &c->listeners[i];
        if (!lc->protocol || strcmp(lc->protocol, "http") != 0)
            continue;
        config_setting_t *svc = lc->group
                                    ? config_setting_get_member(lc->group,
                                                                "services")
                                    : NULL;
        if (svc) {
            if (check_strlist(svc, "services", err, errlen) != PL_OK)
                return PL_EINVAL;
            for (int j = 0; j < config_setting_length(svc); j++) {
                const char *name = config_setting_get_string_elem(svc, j);
                if (!is_known_service(name))
                    return pl_config_where(
                        err, errlen, svc,
                        "listener http: unknown service '%s' (websocket, "
                        "bosh, upload, web, hostmeta, static, metrics, "
                        "admin)",
                        name);
            }
        }
        if (lc->tls != PL_TLS_STARTTLS)
            continue;
        /* An entry's tls is "starttls" when absent: only a written one is
         * an error; an absent one means plain. */
        if (lc->group && config_setting_get_member(lc->group, "tls"))
            return pl_config_where(err, errlen, lc->group,
                                   "%s: HTTP has no STARTTLS: tls = "
                                   "\"direct\" (HTTPS, port 5281) or \"none\"",
                                   "listener http");
        lc->tls = PL_TLS_NONE;
    }
    /* Per host: http = { cors_origins = [...]; } in the host's group. */
    s->host_cors = pl_calloc((size_t)c->nhosts + 1, sizeof(*s->host_cors));
    s->host_domains = pl_calloc((size_t)c->nhosts + 1, sizeof(char *));
    s->nhost_cors = c->nhosts;
    for (int i = 0; i < c->nhosts; i++) {
        s->host_domains[i] = c->hosts[i].domain;
        s->host_cors[i].n = -1;
        config_setting_t *g = c->hosts[i].group
                                  ? config_setting_get_member(c->hosts[i].group,
                                                              "http")
                                  : NULL;
        if (!g)
            continue;
        if (!config_setting_is_group(g))
            return pl_config_where(err, errlen, g, "%s must be a group",
                                   "host http");
        for (int k = 0; k < config_setting_length(g); k++) {
            config_setting_t *m = config_setting_get_elem(g, (unsigned)k);
            if (strcmp(config_setting_name(m), "cors_origins") != 0)
                return pl_config_where(err, errlen, m,
                                       "host http: unknown setting '%s'",
                                       config_setting_name(m));
        }
        config_setting_t *l = config_setting_get_member(g, "cors_origins");
        if (!l)
            continue;
        if (check_strlist(l, "cors_origins", err, errlen) != PL_OK)
            return PL_EINVAL;
        struct pl_strlist *out = &s->host_cors[i];
        out->n = 0;
        out->v = pl_calloc((size_t)config_setting_length(l) + 1,
                           sizeof(char *));
        for (int j = 0; j < config_setting_length(l); j++)
            out->v[out->n++] = pl_strdup(config_setting_get_string_elem(l, j));
    }
    return PL_OK;
}

const struct pl_strlist *pl__http_cors_origins(const struct pl_host *h)
{
    for (int i = 0; h && i < S->nhost_cors; i++)
        if (S->host_cors[i].n >= 0 && S->host_domains[i] &&
            strcmp(S->host_domains[i], h->domain) == 0)
            return &S->host_cors[i];
    return &S->cors;
}

/* ---- lifetime ---- */

static int http_start(struct pl_config *c, void *settings)
{
    (void)c;
    S = settings;
    started = 1;
    if (pl__http_hostmeta_start() != PL_OK ||
        pl__http_static_start(S) != PL_OK || pl__http_web_start(S) != PL_OK ||
        pl__websocket_start() != PL_OK || pl__bosh_start(&S->bosh) != PL_OK ||
        pl__metrics_start() != PL_OK || pl__admin_api_start() != PL_OK ||
        pl__upload_http_start() != PL_OK)
        return PL_EINVAL;
    return PL_OK;
}

static void http_stop(void)
{
    pl__bosh_stop();
    pl__http_conns_close();
}

static void http_reload(struct pl_config *c, void *settings)
{
    (void)c;
    /* New limits for new requests; static directories change on restart
     * (their routes keep pointers into the first settings' strings). */
    S = settings;
}

static unsigned long http_count(void)
{
    return pl__http_conn_count();
}

static void http_free(void)
{
    if (!started)
        return;
    started = 0;
    pl__http_web_stop();
    pl__http_static_free();
    pl__http_hostmeta_stop();
    pl__websocket_stop();
    pl__metrics_stop();
    pl__admin_api_stop();
    pl__upload_http_stop();
    pl__http_routes_free();
    S = &defaults;
}

static const struct pl_protocol *const protocols[] = {&pl__http_protocol, NULL};

static const struct pl_frontend frontend = {
    .protocols = protocols,
    .options = options,
    .settings_size = sizeof(struct http_settings),
    .check = check,
    .release = release,
    .start = http_start,
    .stop = http_stop,
    .reload = http_reload,
    .count = http_count,
    .free = http_free,
};

const struct pl_module pl_mod_http = {
    .abi = PL_MODULE_ABI,
    .name = "http",
    .summary = "HTTP/1.1 front end: routes for WebSocket, BOSH, uploads, "
               "discovery and static files",
    .xeps = "RFC 9110, RFC 9112, XEP-0156",
    .frontend = &frontend,
};
