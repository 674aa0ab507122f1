/*
 * http_int.h - what the files of src/http/ share and nothing else sees:
 * the `http` group's settings (http.c), the listener protocol and the
 * connection table (server.c), the static directories (static.c), the
 * discovery documents (hostmeta.c), the web client (web.c), and the pure helpers the fuzz target
 * reaches (path decoding, Range, HTTP dates).
 */
#ifndef PL_HTTP_INT_H
#define PL_HTTP_INT_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "config.h"
#include "http/bosh.h"
#include "http/http.h"
#include "listen.h"
#include "str.h"

/* The `http` group (http.c): limits and behaviour of the server. */
struct http_settings {
    long max_line;                /* request-line bytes (414) */
    long max_header_bytes;        /* field-line bytes (431) */
    long max_headers;             /* field lines (431) */
    long max_body;                /* default body limit of routes (413) */
    long request_timeout;         /* seconds for a whole head (408) */
    long body_timeout;            /* seconds without body progress (408) */
    long keepalive_timeout;       /* seconds idle between requests */
    long max_requests;            /* requests per connection */
    char *server_name;            /* Server field, "" for none */
    struct pl_strlist cors;       /* cors_origins of hosts without their own */
    config_setting_t *statics;    /* the `static` list (checked) */
    struct pl_bosh_settings bosh; /* bosh_* options (bosh.h) */
    char *web_root;               /* the web client's files (web.c) */
    char *web_csp;                /* its Content-Security-Policy */
    /* Filled by check(): per host (same order as config hosts). */
    struct pl_strlist *host_cors; /* NULL entries' n = -1: none set */
    int nhost_cors;
    char **host_domains; /* borrowed from the config, for lookup */
};

const struct http_settings *pl__http_settings(void);

/* server.c */
extern const struct pl_protocol pl__http_protocol;
unsigned long pl__http_conn_count(void);
void pl__http_conns_close(void);
void pl__http_routes_free(void);
/* For tests: fd (one end of a socketpair) as a connection accepted by
 * an http listener with tls_mode (pl__listen_accept_fd). */
int pl__http_accept_fd(int fd, int tls_mode);
/* Whether a route serves path on the listener r came through. */
int pl__http_route_served(const struct pl_http_req *r, const char *path);

/*
 * Percent-decodes the path part of an origin-form target (up to '?') into
 * out (cap bytes, at least the input's length): PL_OK with *outlen, or
 * PL_EINVAL for an escaped NUL or '/', a "." or ".." segment (escaped or
 * not), a path not starting with '/', or a bad escape.
 */
int pl__http_path_decode(const char *p, size_t n, char *out, size_t cap,
                         size_t *outlen);

/*
 * A Range field against a representation of size bytes (RFC 9110
 * §14.1.2): 1 with [*first, *last] for one satisfiable range; 0 to
 * ignore it (not bytes=, malformed, or several ranges: the whole
 * representation is sent); -1 unsatisfiable (416).
 */
int pl__http_parse_range(struct pl_str v, uint64_t size, uint64_t *first,
                         uint64_t *last);

/* An HTTP-date (IMF-fixdate, RFC 9110 §5.6.7; the obsolete forms are
 * not accepted): PL_OK with *t, else PL_EINVAL. */
int pl__http_parse_date(struct pl_str v, time_t *t);
/* IMF-fixdate of t into out (at least 30 bytes). */
void pl__http_format_date(time_t t, char *out, size_t len);

/* The CORS origins configured for host (NULL: the server-wide list). */
const struct pl_strlist *pl__http_cors_origins(const struct pl_host *h);

/* static.c: serves the `static` entries of the configuration. */
int pl__http_static_start(const struct http_settings *s);
void pl__http_static_free(void);
/* The MIME type for a file name, by extension. */
const char *pl__http_mime_type(const char *name);

/* metrics.c: GET /metrics; admin_api.c: /api/. */
int pl__metrics_start(void);
void pl__metrics_stop(void);
int pl__admin_api_start(void);
void pl__admin_api_stop(void);

/* web.c: the web client at /chat/ (service "web"). */
int pl__http_web_start(const struct http_settings *s);
void pl__http_web_stop(void);

/* hostmeta.c: XEP-0156 routes. */
int pl__http_hostmeta_start(void);
void pl__http_hostmeta_stop(void);

#endif
