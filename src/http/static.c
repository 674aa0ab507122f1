/*
 * static.c - static files under a route prefix: pl_http_static_add() (API
 * in http.h) and the `http.static` entries of the configuration.
 *
 * The request's path (already percent-decoded, without "." or ".."
 * segments: server.c) below the prefix is walked one component at a time
 * with openat(2) from the root directory's descriptor, each with
 * O_NOFOLLOW: a symbolic link anywhere is refused (ELOOP or ENOTDIR), so
 * no path leaves the root whatever the files are.  Empty components
 * ("a//b") and names starting with '.' (".git", ".htpasswd") are refused
 * too; only regular files are served.  Everything refused or missing is
 * 404 (nothing tells a client what exists).  A directory is served as
 * its index.html; a directory named without its final '/' is redirected
 * (301) to it, so that relative links of the page work.  A directory's
 * owner may add response fields to every answer it gives
 * (pl_http_static_header: the web client's Content-Security-Policy).
 *
 * Extending: a new MIME type is a row of mime[].
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "alloc.h"
#include "error.h"
#include "http/http_int.h"
#include "log.h"

static const struct {
    const char *ext;  /* without the dot, lowercase */
    const char *type; /* Content-Type */
} mime[] = {
    {"html", "text/html; charset=utf-8"},
    {"htm", "text/html; charset=utf-8"},
    {"js", "text/javascript; charset=utf-8"},
    {"mjs", "text/javascript; charset=utf-8"},
    {"css", "text/css; charset=utf-8"},
    {"json", "application/json"},
    {"map", "application/json"},
    {"wasm", "application/wasm"},
    {"svg", "image/svg+xml"},
    {"png", "image/png"},
    {"jpg", "image/jpeg"},
    {"jpeg", "image/jpeg"},
    {"gif", "image/gif"},
    {"webp", "image/webp"},
    {"ico", "image/vnd.microsoft.icon"},
    {"woff", "font/woff"},
    {"woff2", "font/woff2"},
    {"ttf", "font/ttf"},
    {"txt", "text/plain; charset=utf-8"},
    {"xml", "application/xml"},
    {"webmanifest", "application/manifest+json"},
};

const char *pl__http_mime_type(const char *name)
{
    const char *dot = strrchr(name, '.');
    const char *slash = strrchr(name, '/');
    if (dot && (!slash || dot > slash))
        for (size_t i = 0; i < sizeof(mime) / sizeof(mime[0]); i++)
            if (strcasecmp(dot + 1, mime[i].ext) == 0)
                return mime[i].type;
    return "application/octet-stream";
}

/* A response field every answer of a directory carries. */
struct static_field {
    char *name, *value;        /* owned copies */
    struct static_field *next; /* in the order added */
};

/* One served directory. */
struct static_dir {
    struct pl_http_route route;  /* prefix, service, handler */
    char *prefix;                /* owned copy */
    char *service;               /* owned copy */
    int dirfd;                   /* the root, O_PATH */
    struct static_field *fields; /* added to every answer */
    struct static_dir *next;     /* all of them */
};

static struct static_dir *dirs;

static int bad_name(const char *s, size_t n)
{
    return n == 0 || s[0] == '.' || n > 255;
}

static void on_static(struct pl_http_req *r)
{
    const struct static_dir *d = r->route->arg;
    size_t plen = strlen(d->prefix);
    const char *p = r->path.p + plen, *end = r->path.p + r->path.len;
    char name[256 + 16];
    for (const struct static_field *f = d->fields; f; f = f->next)
        pl_http_add_header(r, f->name, f->value);
    int fd = dup(d->dirfd);
    if (fd < 0) {
        pl_http_error(r, 500, NULL);
        return;
    }
    /* Directories, one component at a time. */
    for (;;) {
        const char *slash = memchr(p, '/', (size_t)(end - p));
        if (!slash)
            break;
        size_t n = (size_t)(slash - p);
        if (bad_name(p, n))
            goto not_found;
        memcpy(name, p, n);
        name[n] = '\0';
        int next = openat(fd, name,
                          O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        close(fd);
        fd = next;
        if (fd < 0)
            goto not_found_closed;
        p = slash + 1;
    }
    int is_index = p == end;
    size_t n = (size_t)(end - p);
    if (is_index)
        snprintf(name, sizeof(name), "index.html");
    else if (bad_name(p, n))
        goto not_found;
    else {
        memcpy(name, p, n);
        name[n] = '\0';
    }
    int f = openat(fd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
    close(fd);
    if (f < 0)
        goto not_found_closed;
    struct stat st;
    if (fstat(f, &st) < 0) {
        close(f);
        goto not_found_closed;
    }
    if (S_ISDIR(st.st_mode) && !is_index) {
        close(f);
        struct pl_buf loc = {0};
        pl_buf_append(&loc, r->path.p, r->path.len);
        pl_buf_append_str(&loc, "/");
        /* The decoded path holds no CR or LF only if the client sent
         * none: pl_http_add_header refuses them. */
        if (pl_http_add_header(r, "Location", pl_buf_cstr(&loc)) != PL_OK) {
            pl_buf_reset(&loc);
            goto not_found_closed;
        }
        pl_buf_reset(&loc);
        pl_http_error(r, 301, NULL);
        return;
    }
    if (!S_ISREG(st.st_mode)) {
        close(f);
        goto not_found_closed;
    }
    pl_http_file(r, f, &st, pl__http_mime_type(name));
    return;
not_found:
    close(fd);
not_found_closed:
    pl_http_error(r, 404, NULL);
}

int pl_http_static_add(const char *prefix, const char *root,
                       const char *service)
{
    size_t n = strlen(prefix);
    if (n < 1 || prefix[0] != '/' || prefix[n - 1] != '/')
        return PL_EINVAL;
    int fd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        pl_log_error("http", "cannot serve %s: %s", root, strerror(errno));
        return PL_EIO;
    }
    struct static_dir *d = pl_calloc(1, sizeof(*d));
    d->prefix = pl_strdup(prefix);
    d->service = pl_strdup(service ? service : "static");
    d->dirfd = fd;
    d->route.path = d->prefix;
    d->route.service = d->service;
    d->route.methods = "GET";
    d->route.on_request = on_static;
    d->route.arg = d;
    int rc = pl_http_route_add(&d->route);
    if (rc != PL_OK) {
        close(fd);
        pl_free(d->prefix);
        pl_free(d->service);
        pl_free(d);
        return rc;
    }
    d->next = dirs;
    dirs = d;
    return PL_OK;
}

int pl_http_static_header(const char *prefix, const char *name,
                          const char *value)
{
    if (strpbrk(name, "\r\n:") || strpbrk(value, "\r\n") || !*name)
        return PL_EINVAL;
    struct static_dir *d = dirs;
    while (d && strcmp(d->prefix, prefix) != 0)
        d = d->next;
    if (!d)
        return PL_EINVAL;
    struct static_field *f = pl_calloc(1, sizeof(*f)), **at = &d->fields;
    f->name = pl_strdup(name);
    f->value = pl_strdup(value);
    while (*at)
        at = &(*at)->next;
    *at = f;
    return PL_OK;
}

int pl__http_static_start(const struct http_settings *s)
{
    config_setting_t *l = s->statics;
    for (int i = 0; l && i < config_setting_length(l); i++) {
        config_setting_t *g = config_setting_get_elem(l, (unsigned)i);
        const char *path = NULL, *root = NULL, *svc = NULL;
        config_setting_lookup_string(g, "path", &path);
        config_setting_lookup_string(g, "root", &root);
        config_setting_lookup_string(g, "service", &svc);
        if (!path || !root || pl_http_static_add(path, root, svc) != PL_OK) {
            pl_log_error("http", "cannot serve http.static entry %d", i + 1);
            return PL_EINVAL;
        }
    }
    return PL_OK;
}

void pl__http_static_free(void)
{
    while (dirs) {
        struct static_dir *d = dirs;
        dirs = d->next;
        pl_http_route_remove(&d->route);
        close(d->dirfd);
        while (d->fields) {
            struct static_field *f = d->fields;
            d->fields = f->next;
            pl_free(f->name);
            pl_free(f->value);
            pl_free(f);
        }
        pl_free(d->prefix);
        pl_free(d->service);
        pl_free(d);
    }
}
