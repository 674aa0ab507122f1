/*
 * mod_upload.c - XEP-0363 HTTP File Upload on upload.<host>, and buffered
 * transfer of files to offline users (doc/upload.md).
 *
 * The module claims its service domain (pl_service_claim, prefix
 * "upload"), which lists it in the host's disco#items.  The service answers
 * disco#info (identity store/file, the feature urn:xmpp:http:upload:0
 * and the XEP-0128 form with max-file-size, XEP-0363 §3) and slot
 * requests (§4): a local user asks for filename, size and content-type
 * and gets a PUT URL with an Authorization field carrying a signed slot
 * (slot.c) and the GET URL, both <url>/upload/<id>/<filename>.  Errors
 * (§5): <not-acceptable/> with <file-too-large><max-file-size/> over
 * upload.max_file_size; <resource-constraint/> (wait) with <retry
 * stamp/> over the owner's quota; <not-allowed/> for users of other
 * hosts; <bad-request/> for a name or type that cannot go in a URL or a
 * header.  The HTTP side is src/http/upload.c, the files store.c.
 *
 * Offline users: a message to an account with no available resource
 * that carries an XEP-0066 <x xmlns='jabber:x:oob'><url/></x> naming a
 * file its sender uploaded here is the offer of a file.  Before the
 * offline store keeps it ("message/offline", priority 10, ahead of
 * mod_offline), the file is held for the recipient (store.c: it then
 * lives until its first complete download or upload.held_expiry), and
 * the stored copy gains the file's XEP-0446 metadata (media type, name,
 * size, XEP-0300 SHA-256) so the recipient can check what it fetches.
 *
 * Extending: a new IQ of the service is a branch in on_iq.
 */
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "upload.h"

#define NS_OOB "jabber:x:oob"
#define NS_FILE_META "urn:xmpp:file:metadata:0"
#define NS_HASHES "urn:xmpp:hashes:2"
#define NS_XDATA "jabber:x:data"

/* ev->data of "message/offline" fired again with the metadata added. */
static const char refired = 0;

static struct pl_node *add_el(struct pl_stanza *st, struct pl_node *parent,
                              const char *name, const char *ns)
{
    return pl_node_add_child(st, parent, name, ns);
}

static void add_text_el(struct pl_stanza *st, struct pl_node *parent,
                        const char *name, const char *ns, const char *text)
{
    struct pl_node *e = add_el(st, parent, name, ns);
    pl_node_add_text(st, e, text, strlen(text));
}

void pl__upload_notify(struct pl_upload *u, const char *owner, const char *text)
{
    struct pl_stanza *m = pl_stanza_new("message", PL_NS_CLIENT);
    pl_stanza_set_attr(m, "type", "normal");
    add_text_el(m, pl_stanza_root(m), "body", PL_NS_CLIENT, text);
    if (pl_route_as(m, u->domain, owner) != PL_OK)
        pl_log_warn("upload", "%s: cannot tell %s", u->domain, owner);
    pl_stanza_unref(m);
}

/* ---- disco ---- */

static const char *const features[] = {PL_NS_UPLOAD, PL_NS_DISCO_INFO,
                                       PL_NS_DISCO_ITEMS, NULL};

static const struct pl_service service = {
    .label = "upload",
    .prefix = "upload",
    .category = "store",
    .type = "file",
    .features = features,
};

static void disco_info(struct pl_upload *u, struct pl_stanza *st)
{
    struct pl_node *q;
    struct pl_stanza *res = pl_service_info(&service, u->title, st, &q);
    /* The media module answers on this service too (doc/media.md). */
    if (pl_host_ctx(u->host, media)) {
        struct pl_node *mf = add_el(res, q, "feature", PL_NS_DISCO_INFO);
        pl_node_set_attr(res, mf, "var", PL_NS_MEDIA);
    }
    /* XEP-0128 extended information: max-file-size (XEP-0363 §3). */
    struct pl_node *x = add_el(res, q, "x", NS_XDATA);
    pl_node_set_attr(res, x, "type", "result");
    struct pl_node *f = add_el(res, x, "field", NS_XDATA);
    pl_node_set_attr(res, f, "var", "FORM_TYPE");
    pl_node_set_attr(res, f, "type", "hidden");
    add_text_el(res, f, "value", NS_XDATA, PL_NS_UPLOAD);
    f = add_el(res, x, "field", NS_XDATA);
    pl_node_set_attr(res, f, "var", "max-file-size");
    char n[24];
    snprintf(n, sizeof(n), "%ld", u->max_file_size);
    add_text_el(res, f, "value", NS_XDATA, n);
    pl_route_reply(st, res);
    pl_stanza_unref(res);
}

/* ---- slots ---- */

/* An error reply to st with an extra child of <error/> (may be NULL). */
static void send_error(struct pl_stanza *st, int code, const char *text,
                       const char *extra, const char *max, int64_t retry)
{
    struct pl_stanza *r = pl_stanza_error_reply(st, code, text);
    if (!r)
        return;
    struct pl_node *e = pl_node_child(pl_stanza_root(r), "error", NULL);
    if (e && extra) {
        struct pl_node *x = add_el(r, e, extra, PL_NS_UPLOAD);
        if (max)
            add_text_el(r, x, "max-file-size", PL_NS_UPLOAD, max);
        if (retry) {
            char stamp[32];
            struct tm tm;
            time_t t = (time_t)retry;
            gmtime_r(&t, &tm);
            strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%SZ", &tm);
            pl_node_set_attr(r, x, "stamp", stamp);
        }
    }
    pl_route_reply(st, r);
    pl_stanza_unref(r);
}

/* A file name fit for a URL path segment and a sidecar line: not empty,
 * not "." or "..", no '/', '\\' or control character, at most 255
 * bytes (what file systems allow).  Other bytes are percent-encoded. */
static int good_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 255 || strcmp(s, ".") == 0 || strcmp(s, "..") == 0)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f || c == '/' || c == '\\')
            return 0;
    }
    return 1;
}

/* A media type as RFC 9110 §8.3.1 has it (token "/" token, parameters
 * with visible characters), short enough for the slot. */
static int good_type(const char *s)
{
    size_t n = strlen(s);
    const char *slash = strchr(s, '/');
    if (n == 0 || n >= 128 || !slash || slash == s || !slash[1])
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c >= 0x7f || c == '"' || c == '\\')
            return 0;
    }
    return 1;
}

static int parse_size(const char *s, uint64_t *out)
{
    if (!s || !*s || strlen(s) > 19)
        return 0;
    uint64_t v = 0;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return 0;
        v = v * 10 + (uint64_t)(*p - '0');
    }
    *out = v;
    return 1;
}

void pl__upload_url(const struct pl_upload *u, const char *id, const char *name,
                    struct pl_buf *b)
{
    pl_buf_printf(b, "%s/upload/%s/", u->url, id);
    for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
            (*p >= '0' && *p <= '9') || strchr("-._~", *p))
            pl_buf_append(b, p, 1);
        else
            pl_buf_printf(b, "%%%02X", *p);
    }
}

struct retry_ud {
    const char *owner; /* whose files */
    int64_t first;     /* earliest expiry among them, 0: none */
};

static void earliest(const char *key, void *value, void *ud)
{
    (void)key;
    struct retry_ud *r = ud;
    struct upload_file *f = value;
    int64_t due = f->held_for && !f->fetched ? f->hold_expires : f->expires;
    if (f->ready && due && strcmp(f->owner, r->owner) == 0 &&
        (!r->first || due < r->first))
        r->first = due;
}

/* Whether domain is one of upload.components: an XEP-0114 component
 * (parley-gateway storing e-mail attachments) allowed to ask for slots.
 * parleyd stamps a component's stanzas with its own domain, so the from
 * cannot be forged by anyone else. */
static int component_allowed(const struct pl_upload *u, const char *domain)
{
    for (int i = 0; i < u->components.n; i++)
        if (strcmp(u->components.v[i], domain) == 0)
            return 1;
    return 0;
}

static int request_slot(struct pl_upload *u, struct pl_event *ev,
                        struct pl_node *q)
{
    struct pl_stanza *st = ev->stanza;
    /* Only this host's users store files here, and the components named
     * in upload.components (whose files belong to the domain). */
    int comp = component_allowed(u, ev->from->domain);
    if (!comp &&
        (!ev->from->local || strcmp(ev->from->domain, u->host->domain) != 0)) {
        send_error(st, PL_ENOT_ALLOWED, "only local users may upload", NULL,
                   NULL, 0);
        return PL_HANDLED;
    }
    const char *name = pl_node_attr(q, "filename");
    const char *type = pl_node_attr(q, "content-type");
    uint64_t size;
    if (!name || !parse_size(pl_node_attr(q, "size"), &size))
        return PL_EBAD_REQUEST;
    if (!good_name(name)) {
        send_error(st, PL_EBAD_REQUEST, "unusable file name", NULL, NULL, 0);
        return PL_HANDLED;
    }
    if (type && *type && !good_type(type)) {
        send_error(st, PL_EBAD_REQUEST, "unusable content type", NULL, NULL, 0);
        return PL_HANDLED;
    }
    if (size > (uint64_t)u->max_file_size) {
        char text[96], max[24];
        snprintf(max, sizeof(max), "%ld", u->max_file_size);
        snprintf(text, sizeof(text),
                 "File too large. The maximum file size is %ld bytes",
                 u->max_file_size);
        send_error(st, PL_ENOT_ACCEPTABLE, text, "file-too-large", max, 0);
        return PL_HANDLED;
    }
    const char *owner = comp ? ev->from->domain : ev->from->bare;
    if (u->quota && pl__upload_usage(u, owner) + size > (uint64_t)u->quota) {
        struct retry_ud r = {owner, 0};
        pl_map_each(&u->files, earliest, &r);
        char text[128];
        snprintf(text, sizeof(text), "Quota reached: %ld bytes per user",
                 u->quota);
        send_error(st, PL_ERESOURCE_CONSTRAINT, text, r.first ? "retry" : NULL,
                   NULL, r.first);
        return PL_HANDLED;
    }
    struct upload_slot s = {0};
    snprintf(s.host, sizeof(s.host), "%s", u->host->domain);
    pl__upload_new_id(s.id);
    snprintf(s.name, sizeof(s.name), "%s", name);
    snprintf(s.type, sizeof(s.type), "%s", type ? type : "");
    snprintf(s.owner, sizeof(s.owner), "%s", owner);
    if (strcmp(s.owner, owner) != 0)
        return PL_EBAD_REQUEST; /* a JID longer than a slot holds */
    s.size = size;
    s.expires = (int64_t)time(NULL) + u->slot_expiry;
    struct pl_buf url = {0}, auth = {0};
    pl__upload_url(u, s.id, name, &url);
    pl_buf_append_str(&auth, "Bearer ");
    pl__upload_slot_sign(&s, u->key, &auth);
    struct pl_stanza *res = pl_iq_result(st);
    struct pl_node *slot = add_el(res, pl_stanza_root(res), "slot",
                                  PL_NS_UPLOAD);
    struct pl_node *put = add_el(res, slot, "put", PL_NS_UPLOAD);
    pl_node_set_attr(res, put, "url", pl_buf_cstr(&url));
    struct pl_node *h = add_el(res, put, "header", PL_NS_UPLOAD);
    pl_node_set_attr(res, h, "name", "Authorization");
    pl_node_add_text(res, h, auth.data + auth.off, auth.len);
    struct pl_node *get = add_el(res, slot, "get", PL_NS_UPLOAD);
    pl_node_set_attr(res, get, "url", pl_buf_cstr(&url));
    pl_route_reply(st, res);
    pl_stanza_unref(res);
    pl_log_info("upload", "%s: slot %s for %s (%s, %llu bytes)", u->domain,
                s.id, owner, name, (unsigned long long)size);
    pl_buf_reset(&url);
    pl_buf_reset(&auth);
    return PL_HANDLED;
}

static int on_iq(struct pl_event *ev, void *state)
{
    struct pl_upload *u = state;
    struct pl_stanza *st = ev->stanza;
    const char *type = pl_stanza_attr(st, "type");
    if (!ev->from || !type ||
        (strcmp(type, "get") != 0 && strcmp(type, "set") != 0))
        return PL_HANDLED;
    if (ev->to->local || ev->to->resource)
        return PL_ESERVICE_UNAVAILABLE;
    int get = strcmp(type, "get") == 0;
    struct pl_node *q = pl_stanza_payload(st);
    if (!q)
        return PL_EBAD_REQUEST;
    if (get && strcmp(q->ns, PL_NS_DISCO_INFO) == 0 &&
        strcmp(q->name, "query") == 0) {
        if (pl_node_attr(q, "node"))
            return PL_EITEM_NOT_FOUND;
        disco_info(u, st);
        return PL_HANDLED;
    }
    if (get && strcmp(q->ns, PL_NS_DISCO_ITEMS) == 0 &&
        strcmp(q->name, "query") == 0) {
        struct pl_stanza *res = pl_service_items(st, NULL);
        pl_route_reply(st, res);
        pl_stanza_unref(res);
        return PL_HANDLED;
    }
    if (get && strcmp(q->ns, PL_NS_UPLOAD) == 0 &&
        strcmp(q->name, "request") == 0)
        return request_slot(u, ev, q);
    return PL_ESERVICE_UNAVAILABLE;
}

static int on_other(struct pl_event *ev, void *state)
{
    (void)ev;
    (void)state;
    return PL_HANDLED; /* messages and presence to the service: dropped */
}

/* ---- offline transfer ---- */

/* The file a URL names on one of this server's upload services. */
static struct upload_file *file_of_url(const char *url, struct pl_upload **uout)
{
    for (int i = 0; pl_host_at(i); i++) {
        struct pl_upload *u = pl__upload_of(pl_host_at(i));
        if (!u || !u->url)
            continue;
        size_t n = strlen(u->url);
        if (strncmp(url, u->url, n) != 0 || strncmp(url + n, "/upload/", 8))
            continue;
        const char *id = url + n + 8;
        const char *slash = strchr(id, '/');
        if (!slash ||
            !pl__upload_is_id((struct pl_str){id, (size_t)(slash - id)}))
            return NULL;
        char key[PL_UPLOAD_ID_LEN + 1];
        memcpy(key, id, PL_UPLOAD_ID_LEN);
        key[PL_UPLOAD_ID_LEN] = '\0';
        struct upload_file *f = pl_map_get(&u->files, key);
        *uout = u;
        return f && f->ready ? f : NULL;
    }
    return NULL;
}

static int on_offline(struct pl_event *ev, void *state)
{
    (void)state;
    if (ev->data == &refired || !ev->from || !ev->to)
        return PL_PASS;
    struct pl_node *root = pl_stanza_root(ev->stanza);
    struct pl_node *x = pl_node_child(root, "x", NS_OOB);
    struct pl_node *un = x ? pl_node_child(x, "url", NULL) : NULL;
    if (!un)
        return PL_PASS;
    struct pl_upload *u = NULL;
    struct upload_file *f = file_of_url(pl_node_text(ev->stanza, un, NULL), &u);
    /* Only the uploader can make the server keep a file longer. */
    if (!f || strcmp(f->owner, ev->from->bare) != 0)
        return PL_PASS;
    char *bare = pl_strdup(ev->to->bare);
    pl__upload_hold(u, f, bare);
    pl_log_info("upload", "%s: %s held for %s", u->domain, f->id, bare);
    pl_free(bare);
    /* The stored copy says what the file is (XEP-0446, XEP-0300). */
    struct pl_stanza *c = pl_stanza_copy(ev->stanza);
    struct pl_node *meta = add_el(c, pl_stanza_root(c), "file", NS_FILE_META);
    add_text_el(c, meta, "media-type", NS_FILE_META, f->type);
    add_text_el(c, meta, "name", NS_FILE_META, f->name);
    char n[24];
    snprintf(n, sizeof(n), "%llu", (unsigned long long)f->size);
    add_text_el(c, meta, "size", NS_FILE_META, n);
    if (f->sha256[0]) {
        struct pl_node *h = add_el(c, meta, "hash", NS_HASHES);
        pl_node_set_attr(c, h, "algo", "sha-256");
        pl_node_add_text(c, h, f->sha256, strlen(f->sha256));
    }
    struct pl_event again = *ev;
    again.stanza = c;
    again.data = (void *)&refired;
    int rc = pl_hook_fire(&again);
    pl_stanza_unref(c);
    return rc == PL_PASS ? PL_HANDLED : rc;
}

/* ---- lifetime ---- */

static void on_timer(struct pl_timer *t)
{
    struct pl_upload *u = t->data;
    pl__upload_cleanup(u);
    pl_timer_start(pl_server_loop(), &u->timer,
                   (uint64_t)u->cleanup_interval * 1000);
}

/* The base URL when upload.url is not set: the first HTTP listener with
 * direct TLS, else the first plain one, named by the host's domain. */
static char *default_url(const char *domain)
{
    struct pl_config *c = pl_server_config();
    const struct pl_listener_conf *plain = NULL, *tls = NULL;
    for (int i = 0; c && i < c->nlisteners; i++) {
        const struct pl_listener_conf *l = &c->listeners[i];
        if (!l->protocol || strcmp(l->protocol, "http") != 0)
            continue;
        if (l->tls == PL_TLS_DIRECT && !tls)
            tls = l;
        else if (l->tls != PL_TLS_DIRECT && !plain)
            plain = l;
    }
    char buf[1200];
    if (tls || !plain)
        snprintf(buf, sizeof(buf), "https://%s:%d", domain,
                 tls ? tls->port : 5281);
    else
        snprintf(buf, sizeof(buf), "%s://%s:%d",
                 plain->secure ? "https" : "http", domain, plain->port);
    return pl_strdup(buf);
}

static int load(struct pl_host *h, void *state)
{
    struct pl_upload *u = state;
    u->host = h;
    if ((u->min_piece & (u->min_piece - 1)) ||
        (u->max_piece & (u->max_piece - 1)) || u->min_piece > u->max_piece) {
        pl_log_error("upload",
                     "%s: min_piece and max_piece must be powers "
                     "of two, min_piece <= max_piece",
                     h->domain);
        return PL_EINVAL;
    }
    int rc = pl_service_claim(h, &service, u->domain_opt, u->title, &u->domain);
    if (rc != PL_OK)
        return rc;
    char buf[1100];
    if (u->url_opt && *u->url_opt) {
        u->url = pl_strdup(u->url_opt);
        size_t n = strlen(u->url);
        while (n && u->url[n - 1] == '/')
            u->url[--n] = '\0';
    } else {
        u->url = default_url(h->domain);
    }
    if (u->dir_opt && *u->dir_opt) {
        u->dir = pl_strdup(u->dir_opt);
    } else {
        struct pl_config *c = pl_server_config();
        snprintf(buf, sizeof(buf), "%s/upload/%s",
                 c && c->s.data_dir ? c->s.data_dir : ".", h->domain);
        u->dir = pl_strdup(buf);
    }
    /* The slot key: the server secret, bound to this host. */
    struct pl_str sec = pl_server_secret();
    snprintf(buf, sizeof(buf), "xep-0363 slot key for %s", h->domain);
    unsigned int len = sizeof(u->key);
    HMAC(EVP_sha256(), sec.p, (int)sec.len, (const unsigned char *)buf,
         strlen(buf), u->key, &len);
    pl_timer_init(&u->timer, on_timer, u);
    rc = pl__upload_store_open(u);
    u->opened = rc == PL_OK;
    return rc;
}

static int ready(struct pl_host *h, void *state)
{
    (void)h;
    struct pl_upload *u = state;
    /* Files stored before piece hashes were kept get them now. */
    pl__upload_backfill(u);
    /* A first run soon after start (files that expired while down). */
    pl_timer_start(pl_server_loop(), &u->timer,
                   (uint64_t)(u->cleanup_interval < 5 ? u->cleanup_interval
                                                      : 5) *
                       1000);
    return PL_OK;
}

static void unload(struct pl_host *h, void *state)
{
    (void)h;
    struct pl_upload *u = state;
    pl_pace_free(u->pace);
    u->pace = NULL;
    if (u->opened)
        pl__upload_store_close(u);
    pl_free(u->domain);
    pl_free(u->url);
    pl_free(u->dir);
}

static const struct pl_option options[] = {
    {"domain", PL_OPT_STRING, "\"\"", 0, 0, NULL,
     "Service domain; \"\" means upload.<host>.",
     offsetof(struct pl_upload, domain_opt)},
    {"title", PL_OPT_STRING, "\"HTTP File Upload\"", 0, 0, NULL,
     "Service name shown in disco.", offsetof(struct pl_upload, title)},
    {"url", PL_OPT_STRING, "\"\"", 0, 0, NULL,
     "Base URL of the HTTP side as clients reach it "
     "(\"https://example.org:5281\"); \"\" means the first HTTP listener "
     "with direct TLS (else the first plain one) named by the host's "
     "domain.",
     offsetof(struct pl_upload, url_opt)},
    {"dir", PL_OPT_STRING, "\"\"", 0, 0, NULL,
     "Storage directory; \"\" means <data_dir>/upload/<host>.",
     offsetof(struct pl_upload, dir_opt)},
    {"clamd", PL_OPT_STRING, "\"\"", 0, 0, NULL,
     "clamd to scan every upload with before it is accepted: the path of "
     "its Unix socket (\"/run/clamav/clamd.ctl\") or \"host:port\"; \"\" "
     "scans nothing.  An infected file is refused (403) and its uploader "
     "told.",
     offsetof(struct pl_upload, clamd)},
    {"max_file_size", PL_OPT_INT, "104857600", 0, 1L << 42, NULL,
     "Largest file in bytes, announced in disco (XEP-0128) and enforced "
     "on slot requests and uploads.",
     offsetof(struct pl_upload, max_file_size)},
    {"quota", PL_OPT_INT, "1073741824", 0, 1L << 50, NULL,
     "Bytes a user may have stored at once (0: no limit); a slot request "
     "beyond it gets <resource-constraint/> with <retry/>.",
     offsetof(struct pl_upload, quota)},
    {"slot_expiry", PL_OPT_INT, "300", 1, 86400, NULL,
     "Seconds a PUT URL stays valid after the slot was given.",
     offsetof(struct pl_upload, slot_expiry)},
    {"file_expiry", PL_OPT_INT, "2592000", 0, 1L << 40, NULL,
     "Seconds an uploaded file is kept (30 days); 0 keeps files forever.",
     offsetof(struct pl_upload, file_expiry)},
    {"held_expiry", PL_OPT_INT, "1209600", 1, 1L << 40, NULL,
     "Seconds a file offered to an offline user is kept for them while "
     "nobody downloads it (14 days), whatever file_expiry says.",
     offsetof(struct pl_upload, held_expiry)},
    {"rate", PL_OPT_INT, "0", 0, 1L << 40, NULL,
     "Bytes per second the body of an authorized upload may arrive at "
     "(the limits group's read_rate is for everything else); 0 means no "
     "limit but the disk's.",
     offsetof(struct pl_upload, rate)},
    {"max_send_rate", PL_OPT_INT, "0", 0, 1L << 40, NULL,
     "Bytes per second that every download of this host's files may take "
     "together (all GETs, the server's share of a Metalink download "
     "included); the downloads take turns of 256 KiB, so each "
     "moves at the same pace.  A head-end that shares its uplink sets it "
     "below the link's rate, and peers (doc/media.md) carry the rest; 0 "
     "means no limit.",
     offsetof(struct pl_upload, max_send_rate)},
    {"components", PL_OPT_STRLIST, "[]", 0, 0, NULL,
     "Component domains (XEP-0114) that may ask for slots besides the "
     "host's users, e.g. [\"mail.example.org\"] for parley-gateway "
     "storing e-mail attachments; their files count against the quota "
     "of the component's domain.",
     offsetof(struct pl_upload, components)},
    {"cleanup_interval", PL_OPT_INT, "3600", 1, 86400, NULL,
     "Seconds between runs of the expiry job.",
     offsetof(struct pl_upload, cleanup_interval)},
    {"min_piece", PL_OPT_INT, "262144", 16384, 1L << 30, NULL,
     "Smallest piece in bytes (a power of two): each upload's pieces are "
     "hashed as it arrives (SHA-256, doc/media.md); pieces double from "
     "here until the file has at most max_pieces of them.",
     offsetof(struct pl_upload, min_piece)},
    {"max_piece", PL_OPT_INT, "16777216", 16384, 1L << 30, NULL,
     "Largest piece in bytes (a power of two, at least min_piece).",
     offsetof(struct pl_upload, max_piece)},
    {"max_pieces", PL_OPT_INT, "2048", 1, 1L << 20, NULL,
     "Pieces a file is cut into at most, unless that would need pieces "
     "larger than max_piece.",
     offsetof(struct pl_upload, max_pieces)},
    {0},
};

static const struct pl_hook_def hooks[] = {
    {"upload/iq", on_iq, 0},
    {"upload/message", on_other, 0},
    {"upload/presence", on_other, 0},
    {"message/offline", on_offline, 10},
    {0},
};

const struct pl_module pl_mod_upload = {
    .abi = PL_MODULE_ABI,
    .name = "upload",
    .summary = "HTTP File Upload on upload.<host>, files kept for offline "
               "users",
    .xeps = "XEP-0363, XEP-0066, XEP-0446, XEP-0300",
    .options = options,
    .hooks = hooks,
    .state_size = sizeof(struct pl_upload),
    .load = load,
    .ready = ready,
    .unload = unload,
};
