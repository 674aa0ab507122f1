/*
 * web.c - the web client (service "web"): Converse.js and Parley's page
 * for it, served at /chat/ from the directory http.web_root (built by
 * `make web` from web/: doc/web.md), with the page's security fields on
 * every answer:
 *   Content-Security-Policy   http.web_csp: scripts, styles, images and
 *                             connections from the page's own origin only
 *                             ('self' also matches ws:// and wss:// to it,
 *                             CSP Level 3 §6.7.2.7), WebAssembly allowed
 *                             ('wasm-unsafe-eval': Converse's OMEMO)
 *   X-Content-Type-Options    nosniff
 *   Referrer-Policy           no-referrer
 * "/chat" itself is redirected (301) to "/chat/", so that the page's
 * relative links work.  A web_root that cannot be opened is a warning,
 * not an error: the server runs without the web client.
 *
 * API (http_int.h): pl__http_web_start(settings), pl__http_web_stop().
 * Extending: another field for the page is a line of start().
 */
#include <errno.h>
#include <string.h>
#include <sys/stat.h>

#include "error.h"
#include "http/http_int.h"
#include "log.h"

#define WEB_PREFIX "/chat/"

static int serving; /* the static directory and the redirect are added */

static void on_bare(struct pl_http_req *r)
{
    if (pl_http_add_header(r, "Location", WEB_PREFIX) != PL_OK) {
        pl_http_error(r, 500, NULL);
        return;
    }
    pl_http_error(r, 301, NULL);
}

static const struct pl_http_route bare_route = {
    .path = "/chat",
    .service = "web",
    .methods = "GET",
    .on_request = on_bare,
};

int pl__http_web_start(const struct http_settings *s)
{
    const char *root = s->web_root;
    struct stat st;
    if (!root || !*root)
        return PL_OK; /* web_root = "": no web client */
    int bad = stat(root, &st) < 0 ? errno : 0;
    if (bad || !S_ISDIR(st.st_mode)) {
        pl_log_warn("http",
                    "web client not served: %s: %s (build it with "
                    "`make web`, or set http.web_root)",
                    root, bad ? strerror(bad) : "not a directory");
        return PL_OK;
    }
    int rc = pl_http_static_add(WEB_PREFIX, root, "web");
    if (rc != PL_OK)
        return rc;
    if (*s->web_csp)
        rc = pl_http_static_header(WEB_PREFIX, "Content-Security-Policy",
                                   s->web_csp);
    if (rc == PL_OK)
        rc = pl_http_static_header(WEB_PREFIX, "X-Content-Type-Options",
                                   "nosniff");
    if (rc == PL_OK)
        rc = pl_http_static_header(WEB_PREFIX, "Referrer-Policy",
                                   "no-referrer");
    if (rc == PL_OK)
        rc = pl_http_route_add(&bare_route);
    if (rc != PL_OK) {
        pl_log_error("http", "cannot serve the web client at %s", WEB_PREFIX);
        return rc;
    }
    serving = 1;
    pl_log_info("http", "web client at %s from %s", WEB_PREFIX, root);
    return PL_OK;
}

void pl__http_web_stop(void)
{
    /* The directory goes with the other static ones
     * (pl__http_static_free). */
    if (serving)
        pl_http_route_remove(&bare_route);
    serving = 0;
}
