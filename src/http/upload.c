/*
 * upload.c - the HTTP side of XEP-0363 (the XMPP side and the store are
 * src/modules/upload/, upload.h): the route /upload/ of the service
 * "upload", PUT and GET (HEAD) of /upload/<id>/<name>, with CORS for
 * web clients.  Started from the front end's start (http.c).
 *
 * PUT: the Authorization field must carry the slot the service gave
 * ("Bearer <token>", slot.c), checked with no state: a token that does
 * not verify, or names another file, or has expired, is 403; a file
 * that exists (being uploaded or done) is 409; no Content-Length 411,
 * one other than the slot's size 400, over upload.max_file_size 413
 * (before the body is read); a Content-Type other than the slot's
 * (parameters and case aside) 400; beyond the owner's quota 413.  The
 * body is streamed to <id>.part: bytes are received straight into one
 * of two buffers of BUF_SIZE (the route's body_buf, so a byte is copied
 * once, by the kernel); a full one goes to two jobs of the upload work
 * queue at once, one writing it and one hashing it (SHA-256, in order:
 * a buffer's hash starts once the one before it is done), while the
 * other buffer fills; when both are full the request is paused
 * (pl_http_pause) until the first is free again.  So the loop never
 * waits for the disk, hashing and writing run side by side on the two
 * workers, memory per upload is two buffers, and the writes are large.
 * At the end a last job writes and hashes the rest, fsyncs,
 * has clamd scan the file when upload.clamd is set (src/core/clamd.c), writes the
 * sidecar and renames <id>.part to <id>; only then 201 Created.  An
 * infected file is deleted, answered 403 with the signature's name, and
 * its uploader told in a message from the service.
 *
 * GET and HEAD: pl_http_file (Range, ETag, 304, sendfile), the
 * Metalink/HTTP fields of RFC 6249 (Digest: SHA-256=..., Link to the
 * Metalink with rel=describedby, Link rel=duplicate for each live peer
 * the media module lists, doc/media.md), the
 * Content-Type as uploaded, Content-Disposition with the file name
 * (attachment except for images, audio, video and plain text),
 * X-Content-Type-Options: nosniff and a sandboxing
 * Content-Security-Policy, so an uploaded page or SVG cannot run script
 * in the server's origin.  A GET of the whole file, or of a range
 * reaching its end, counts as a download (the end of an offline hold).
 * GET <file-url>.meta4, or the file's URL with Accept:
 * application/metalink4+xml, is the file's Metalink 4 document (RFC
 * 5854; src/media/metalink.c): the server's URL, then the peers'.
 * PUT also hashes each piece (src/media/pieces.c, the size rule of
 * doc/media.md) beside the whole file, and its last job writes
 * <id>.pieces before the sidecar.
 *
 * Extending: a new check of PUT goes in put_head, in the order of the
 * statuses above.
 */
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "clamd.h"
#include "http/http.h"
#include "http/http_int.h"
#include "media/media.h"
#include "modules/media/media_int.h"
#include "modules/upload/upload.h"

#define BUF_SIZE (1u << 20)

enum {
    J_WRITE, /* write a full buffer */
    J_HASH,  /* hash it, at the same time */
    J_FINAL  /* the rest, fsync, scan, sidecar, rename */
};

struct put;

struct put_job {
    struct pl_work w;
    struct put *p;
    int kind; /* J_* */
    int buf;  /* the buffer it reads */
    size_t n; /* its bytes, fixed when submitted */
};

struct put {
    struct pl_http_req *r;       /* NULL once the connection went */
    struct pl_upload *u;         /* the host's service */
    struct upload_file *f;       /* the entry (not ready) */
    int fd;                      /* <id>.part */
    char *buf[2];                /* filling and writing */
    size_t len[2], cap[2];       /* bytes in each, their sizes */
    struct put_job jobs[2][2];   /* per buffer: J_WRITE, J_HASH */
    struct put_job fin;          /* J_FINAL */
    int pending[2];              /* jobs out per buffer */
    int cur;                     /* the buffer filling */
    uint64_t off[2];             /* file offset of each buffer's bytes */
    uint64_t written;            /* file offset of the filling buffer */
    unsigned final_out : 1;      /* J_FINAL is out */
    unsigned paused : 1;         /* the request is paused */
    unsigned finishing : 1;      /* the body is complete */
    unsigned failed : 1;         /* a write failed */
    struct pl_media_hasher hash; /* SHA-256 of the file and its pieces */
    int status;                  /* J_FINAL's verdict: 201, 403, 500... */
    char virus[160];             /* clamd's answer when not clean */
    char part[4200], path[4200], meta[4200], pieces[4200]; /* the files */
    char clamd[256];           /* upload.clamd, copied for the worker */
    struct pl_buf metatext;    /* the sidecar, written by J_FINAL */
    struct pl_conn_limits lim; /* the connection's own, restored after */
};

static int busy(const struct put *p)
{
    return p->pending[0] || p->pending[1] || p->final_out;
}

static struct pl_http_route route;

/* /upload/<id>/<name>: PL_OK with both, else PL_EINVAL. */
static int split_path(struct pl_str path, struct pl_str *id,
                      struct pl_str *name)
{
    static const char pre[] = "/upload/";
    size_t k = sizeof(pre) - 1;
    if (path.len < k + PL_UPLOAD_ID_LEN + 2 || memcmp(path.p, pre, k) != 0)
        return PL_EINVAL;
    *id = (struct pl_str){path.p + k, PL_UPLOAD_ID_LEN};
    if (!pl__upload_is_id(*id) || path.p[k + PL_UPLOAD_ID_LEN] != '/')
        return PL_EINVAL;
    *name = (struct pl_str){path.p + k + PL_UPLOAD_ID_LEN + 1,
                            path.len - k - PL_UPLOAD_ID_LEN - 1};
    if (!name->len || memchr(name->p, '/', name->len))
        return PL_EINVAL;
    return PL_OK;
}

/* The file id names on any host, and its service. */
static struct upload_file *find_file(struct pl_str id, struct pl_upload **uo)
{
    char key[PL_UPLOAD_ID_LEN + 1];
    memcpy(key, id.p, PL_UPLOAD_ID_LEN);
    key[PL_UPLOAD_ID_LEN] = '\0';
    for (int i = 0; pl_host_at(i); i++) {
        struct pl_upload *u = pl__upload_of(pl_host_at(i));
        struct upload_file *f = u ? pl_map_get(&u->files, key) : NULL;
        if (f) {
            *uo = u;
            return f;
        }
    }
    return NULL;
}

/* The media type of a Content-Type value (before ';', spaces trimmed). */
static struct pl_str media_type(struct pl_str v)
{
    const char *semi = memchr(v.p, ';', v.len);
    size_t n = semi ? (size_t)(semi - v.p) : v.len;
    while (n && (v.p[n - 1] == ' ' || v.p[n - 1] == '\t'))
        n--;
    return (struct pl_str){v.p, n};
}

/* ---- PUT ---- */

static void put_free(struct put *p)
{
    if (p->fd >= 0)
        close(p->fd);
    pl_free(p->buf[0]);
    pl_free(p->buf[1]);
    pl_media_hasher_free(&p->hash);
    pl_buf_reset(&p->metatext);
    pl_free(p);
}

/* The upload failed or was abandoned: its traces go. */
static void put_discard(struct put *p)
{
    if (p->fd >= 0) {
        close(p->fd);
        p->fd = -1;
    }
    unlink(p->part);
    unlink(p->pieces);
    if (!pl__upload_closing() && p->f) {
        pl__upload_usage_add(p->u, p->f->owner, -(int64_t)p->f->size);
        pl__upload_file_drop(p->u, p->f);
    }
    p->f = NULL;
    put_free(p);
}

/* pwrite: the write of one buffer runs beside the hash of the other. */
static int write_all(int fd, const char *b, size_t n, uint64_t off)
{
    while (n) {
        ssize_t k = pwrite(fd, b, n, (off_t)off);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return PL_EIO;
        b += k;
        n -= (size_t)k;
        off += (uint64_t)k;
    }
    return PL_OK;
}

/* J_FINAL's end: durable bytes, a verdict, the sidecar, then the name. */
static void put_final(struct put *p, struct pl_work *w)
{
    p->status = 500;
    if (fsync(p->fd) != 0) {
        w->result = PL_EIO;
        return;
    }
    unsigned char md[PL_MEDIA_HASH_LEN];
    if (pl_media_hasher_final(&p->hash, md) != PL_MEDIA_OK) {
        w->result = PL_EIO;
        return;
    }
    EVP_EncodeBlock((unsigned char *)p->f->sha256, md, (int)sizeof(md));
    if (p->clamd[0]) {
        int rc = pl_clamd_scan_fd(p->clamd, p->fd, 60, p->virus,
                                  sizeof(p->virus));
        if (rc == PL_EFORBIDDEN) {
            p->status = 403;
            w->result = rc;
            return;
        }
        if (rc != PL_OK) {
            p->status = 503;
            w->result = rc;
            return;
        }
    }
    /* The piece hashes, then the sidecar that names their size. */
    size_t plen = (size_t)p->hash.npieces * PL_MEDIA_HASH_LEN;
    if (pl__upload_write_file(p->pieces, p->hash.digests, plen) != PL_OK) {
        w->result = PL_EIO;
        return;
    }
    p->f->pieces = pl_malloc(plen ? plen : 1);
    memcpy(p->f->pieces, p->hash.digests, plen);
    p->f->npieces = p->hash.npieces;
    p->f->piece_size = p->hash.piece_size;
    pl__upload_meta_format(p->f, &p->metatext);
    if (pl__upload_write_file(p->meta, p->metatext.data + p->metatext.off,
                              p->metatext.len) != PL_OK ||
        rename(p->part, p->path) != 0) {
        unlink(p->meta);
        unlink(p->pieces);
        w->result = PL_EIO;
        return;
    }
    /* The directory entry too: a 201 means the file survives a crash. */
    char dir[4200];
    snprintf(dir, sizeof(dir), "%s", p->u->dir);
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    p->status = 201;
}

static void put_work(struct pl_work *w)
{
    struct put_job *j = (struct put_job *)w;
    struct put *p = j->p;
    const char *b = p->buf[j->buf];
    w->result = PL_OK;
    if (j->kind != J_WRITE &&
        pl_media_hasher_update(&p->hash, b, j->n) != PL_MEDIA_OK)
        w->result = PL_EIO; /* more bytes than announced: cannot be */
    if (j->kind != J_HASH && w->result == PL_OK)
        w->result = write_all(p->fd, b, j->n, p->off[j->buf]);
    if (j->kind == J_FINAL && w->result == PL_OK)
        put_final(p, w);
}

static void put_done(struct pl_work *w);

static void submit(struct put *p, struct put_job *j, int kind, int buf)
{
    j->p = p;
    j->kind = kind;
    j->buf = buf;
    j->n = p->len[buf];
    j->w.work = put_work;
    j->w.done = put_done;
    j->w.result = PL_OK;
    pl_workq_submit(pl__upload_workq(), pl_server_loop(), &j->w);
}

/* The filling buffer is full, or the body complete: its bytes go out. */
static void flush_cur(struct put *p)
{
    int i = p->cur;
    p->off[i] = p->written;
    p->written += p->len[i];
    if (p->finishing) {
        p->final_out = 1;
        submit(p, &p->fin, J_FINAL, i);
        return;
    }
    p->pending[i] = 2;
    submit(p, &p->jobs[i][0], J_WRITE, i);
    submit(p, &p->jobs[i][1], J_HASH, i);
    p->cur ^= 1;
}

static void finish(struct put *p, int result)
{
    struct pl_http_req *r = p->r;
    if (r->conn)
        pl_conn_set_limits(r->conn, &p->lim);
    if (result == PL_OK && p->status == 201) {
        close(p->fd);
        p->fd = -1;
        pl__upload_file_ready(p->u, p->f);
        pl_log_info("upload", "%s: %s uploaded by %s (%llu bytes)",
                    p->u->domain, p->f->id, p->f->owner,
                    (unsigned long long)p->f->size);
        p->f = NULL; /* the store's now */
        pl_http_respond(r, 201, "text/plain; charset=utf-8", "Created\n", 8);
        put_free(p);
        return;
    }
    if (p->status == 403) {
        char text[256];
        snprintf(text, sizeof(text), "infected: %s", p->virus);
        pl_log_warn("upload", "%s: %s from %s refused: %s", p->u->domain,
                    p->f->id, p->f->owner, p->virus);
        char msg[512];
        snprintf(msg, sizeof(msg),
                 "Your upload of %s was refused: the virus scanner found "
                 "%s. The file was deleted.",
                 p->f->name, p->virus);
        pl__upload_notify(p->u, p->f->owner, msg);
        pl_http_error(r, 403, text);
    } else if (p->status == 503) {
        pl_log_error("upload", "%s: cannot scan %s: %s", p->u->domain, p->f->id,
                     p->virus);
        pl_http_add_header(r, "Retry-After", "60");
        pl_http_error(r, 503, "virus scanner unavailable");
    } else {
        pl_log_error("upload", "%s: while storing %s: write failed",
                     p->u->domain, p->f->id);
        pl_http_error(r, 507, NULL);
    }
    put_discard(p);
}

static void put_done(struct pl_work *w)
{
    struct put_job *j = (struct put_job *)w;
    struct put *p = j->p;
    if (j->kind == J_FINAL)
        p->final_out = 0;
    else if (--p->pending[j->buf] == 0)
        p->len[j->buf] = 0; /* written and hashed: free to fill */
    if (w->result != PL_OK && j->kind != J_FINAL && !p->failed) {
        p->failed = 1;
        if (p->f)
            pl_log_error("upload", "%s: while writing %s: %s", p->u->domain,
                         p->f->id, pl_strerror(w->result));
    }
    if (busy(p))
        return; /* the other jobs first: they read p */
    if (pl__upload_closing()) {
        put_free(p);
        return;
    }
    if (!p->r) {
        /* The client went: nothing is kept, even a complete file. */
        unlink(p->path);
        unlink(p->meta);
        unlink(p->pieces);
        put_discard(p);
        return;
    }
    if (j->kind == J_FINAL) {
        finish(p, w->result);
        return;
    }
    if (p->failed) {
        struct pl_http_req *r = p->r;
        r->data = NULL;
        if (r->conn)
            pl_conn_set_limits(r->conn, &p->lim);
        pl_http_error(r, 507, NULL);
        put_discard(p);
        return;
    }
    if (p->finishing || p->len[p->cur] >= BUF_SIZE)
        flush_cur(p);
    if (p->paused && !p->finishing) {
        p->paused = 0;
        pl_http_resume(p->r);
    }
}

/* route.body_buf: the filling buffer's free end. */
static char *put_buf(struct pl_http_req *r, size_t *room)
{
    struct put *p = r->data;
    if (!p || p->failed || p->paused)
        return NULL;
    int i = p->cur;
    if (p->len[i] >= p->cap[i])
        return NULL;
    *room = p->cap[i] - p->len[i];
    return p->buf[i] + p->len[i];
}

static int put_body(struct pl_http_req *r, const char *b, size_t n)
{
    struct put *p = r->data;
    if (!p || p->failed)
        return 500;
    int i = p->cur;
    if (b != p->buf[i] + p->len[i]) { /* not received in place: copy */
        if (p->len[i] + n > p->cap[i]) {
            p->cap[i] = p->len[i] + n;
            p->buf[i] = pl_realloc(p->buf[i], p->cap[i]);
        }
        memcpy(p->buf[i] + p->len[i], b, n);
    }
    p->len[i] += n;
    if (p->len[i] < BUF_SIZE)
        return PL_OK;
    if (!p->pending[i ^ 1]) {
        flush_cur(p);
    } else if (!p->paused) {
        p->paused = 1; /* both full: wait for the disk */
        pl_http_pause(r);
    }
    return PL_OK;
}

static void put_request(struct pl_http_req *r)
{
    struct put *p = r->data;
    p->finishing = 1;
    if (!busy(p))
        flush_cur(p);
}

static int refuse(struct pl_http_req *r, int status, const char *text)
{
    pl_http_error(r, status, text);
    return PL_HANDLED;
}

static int put_head(struct pl_http_req *r, struct pl_str id, struct pl_str name)
{
    struct pl_str auth = pl_http_field(r, "Authorization");
    struct upload_slot s;
    if (auth.len < 8 || strncasecmp(auth.p, "Bearer ", 7) != 0)
        return refuse(r, 403, "no upload slot");
    struct pl_str token = {auth.p + 7, auth.len - 7};
    struct pl_host *h = NULL;
    struct pl_upload *u = NULL;
    if (pl__upload_slot_peek(token, &s) == PL_OK)
        h = pl_host_find(s.host);
    if (!(u = pl__upload_of(h)) ||
        pl__upload_slot_verify(token, u->key, &s) != PL_OK ||
        !pl_str_eq_c(id, s.id) || !pl_str_eq_c(name, s.name))
        return refuse(r, 403, "not a valid upload slot");
    if (s.expires < (int64_t)time(NULL))
        return refuse(r, 403, "upload slot expired");
    struct pl_upload *other;
    char done_path[4200];
    pl__upload_path(u, s.id, "", done_path, sizeof(done_path));
    /* The file may be another node's (a cluster sharing u->dir). */
    if (find_file(id, &other) || access(done_path, F_OK) == 0)
        return refuse(r, 409, "this slot was used");
    if (r->head->framing != PL_HTTP_LENGTH)
        return refuse(r, 411, NULL);
    uint64_t len = r->head->content_length;
    if (len > (uint64_t)u->max_file_size)
        return refuse(r, 413, "file too large");
    if (len != s.size)
        return refuse(r, 400, "Content-Length differs from the slot's size");
    struct pl_str ct = media_type(pl_http_field(r, "Content-Type"));
    struct pl_str want = media_type(pl_str_c(s.type));
    if (want.len && ct.len &&
        (ct.len != want.len || strncasecmp(ct.p, want.p, ct.len) != 0))
        return refuse(r, 400, "Content-Type differs from the slot's");
    if (!s.type[0] && ct.len && ct.len < sizeof(s.type)) {
        /* No type in the slot: the upload's own, if it is one. */
        memcpy(s.type, ct.p, ct.len);
        s.type[ct.len] = '\0';
        for (size_t i = 0; i < ct.len; i++)
            if ((unsigned char)s.type[i] < 0x20 ||
                (unsigned char)s.type[i] >= 0x7f)
                s.type[0] = '\0';
    }
    if (u->quota && pl__upload_usage(u, s.owner) + len > (uint64_t)u->quota)
        return refuse(r, 413, "upload quota exceeded");
    struct put *p = pl_calloc(1, sizeof(*p));
    p->u = u;
    p->fd = -1;
    pl__upload_path(u, s.id, ".part", p->part, sizeof(p->part));
    pl__upload_path(u, s.id, "", p->path, sizeof(p->path));
    pl__upload_path(u, s.id, ".meta", p->meta, sizeof(p->meta));
    pl__upload_path(u, s.id, ".pieces", p->pieces, sizeof(p->pieces));
    p->fd = open(p->part, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (p->fd < 0) {
        pl_log_error("upload", "%s: cannot create %s", u->domain, p->part);
        put_free(p);
        return refuse(r, errno == EEXIST ? 409 : 507, NULL);
    }
    for (int i = 0; i < 2; i++) {
        p->cap[i] = len < BUF_SIZE ? (size_t)len + 1 : BUF_SIZE;
        p->buf[i] = pl_malloc(p->cap[i]);
    }
    uint32_t psize = pl_media_piece_size(len, (uint32_t)u->min_piece,
                                         (uint32_t)u->max_piece,
                                         (uint32_t)u->max_pieces);
    if (pl_media_hasher_init(&p->hash, len, psize) != PL_MEDIA_OK) {
        close(p->fd);
        unlink(p->part);
        p->fd = -1;
        put_free(p);
        return refuse(r, 507, NULL);
    }
    snprintf(p->clamd, sizeof(p->clamd), "%s", u->clamd ? u->clamd : "");
    p->f = pl__upload_file_add(u, &s);
    pl__upload_usage_add(u, s.owner, (int64_t)len); /* reserved */
    /* The slot authorizes exactly this many bytes: they may come as fast
     * as upload.rate allows, not at the limits group's read_rate. */
    p->lim = r->conn->lim;
    struct pl_conn_limits fast = p->lim;
    fast.read_rate = u->rate ? (size_t)u->rate : (size_t)1 << 40;
    fast.read_burst = fast.read_rate < BUF_SIZE * 4 ? BUF_SIZE * 4
                                                    : fast.read_rate;
    pl_conn_set_limits(r->conn, &fast);
    p->r = r;
    r->data = p;
    return PL_OK;
}

/* ---- GET ---- */

/* Types a browser shows without running anything. */
static int is_passive(const char *type)
{
    static const char *const ok[] = {"image/png",  "image/jpeg", "image/gif",
                                     "image/webp", "image/avif", "text/plain",
                                     NULL};
    struct pl_str t = media_type(pl_str_c(type));
    for (int i = 0; ok[i]; i++)
        if (t.len == strlen(ok[i]) && strncasecmp(t.p, ok[i], t.len) == 0)
            return 1;
    return (t.len > 6 && strncasecmp(t.p, "audio/", 6) == 0) ||
           (t.len > 6 && strncasecmp(t.p, "video/", 6) == 0);
}

/* Content-Disposition (RFC 6266): an ASCII fallback and filename*. */
static void disposition(const struct upload_file *f, struct pl_buf *b)
{
    pl_buf_append_str(b, is_passive(f->type) ? "inline" : "attachment");
    pl_buf_append_str(b, "; filename=\"");
    for (const unsigned char *c = (const unsigned char *)f->name; *c; c++)
        pl_buf_append(b,
                      *c < 0x20 || *c >= 0x7f || *c == '"' || *c == '\\'
                          ? "_"
                          : (const char *)c,
                      1);
    pl_buf_append_str(b, "\"; filename*=UTF-8''");
    for (const unsigned char *c = (const unsigned char *)f->name; *c; c++) {
        if ((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
            (*c >= '0' && *c <= '9') || strchr("!#$&+-.^_`|~", *c))
            pl_buf_append(b, c, 1);
        else
            pl_buf_printf(b, "%%%02X", *c);
    }
}

/* Whether Accept names the Metalink type (RFC 6249: a client may ask for
 * the description instead of the file).  A q=0 on it refuses it. */
static int wants_metalink(struct pl_http_req *r)
{
    static const char type[] = "application/metalink4+xml";
    struct pl_str a = pl_http_field(r, "Accept");
    size_t k = sizeof(type) - 1;
    for (size_t i = 0; i + k <= a.len; i++) {
        if (strncasecmp(a.p + i, type, k) != 0)
            continue;
        size_t j = i + k;
        while (j < a.len && a.p[j] == ' ')
            j++;
        if (j == a.len || a.p[j] == ',')
            return 1;
        /* parameters: "q=0" (or 0.0...) refuses */
        const char *end = memchr(a.p + j, ',', a.len - j);
        size_t n = end ? (size_t)(end - (a.p + j)) : a.len - j;
        struct pl_str params = {a.p + j, n};
        const char *q = NULL;
        for (size_t x = 0; x + 2 <= params.len; x++)
            if ((params.p[x] == 'q' || params.p[x] == 'Q') &&
                params.p[x + 1] == '=')
                q = params.p + x + 2;
        if (!q)
            return 1;
        for (; q < params.p + params.len; q++)
            if (*q >= '1' && *q <= '9')
                return 1;
        return 0;
    }
    return 0;
}

/* The seat=HEX parameter of a Metalink GET (1 to 16 hex digits, not all
 * zero): 1 and *out, or 0 when there is none. */
static int seat_of(struct pl_str q, uint64_t *out)
{
    struct pl_str v;
    if (!pl_query_param(q, "seat", &v) || !v.len || v.len > 16)
        return 0;
    uint64_t x = 0;
    for (size_t k = 0; k < v.len; k++) {
        int d = pl_hex_value(v.p[k]);
        if (d < 0)
            return 0;
        x = x << 4 | (uint64_t)d;
    }
    if (!x)
        return 0;
    *out = x;
    return 1;
}

/*
 * Parked Metalink GETs: a download told to wait for peers may ask the
 * server to hold its answer (hold=MS, at most HOLD_MAX_MS) until a peer
 * of the file is listed (pl__upload_listed, from mod_media) or the time
 * is up, rather than ask again and again.  Few at a time (one per
 * waiting download), so a list.
 */
#define HOLD_MAX_MS 10000

struct park {
    struct park *next;
    struct pl_http_req *r;
    char id[PL_UPLOAD_ID_LEN + 1]; /* the file's id */
    char sha256[48];               /* its SHA-256, base64 */
    struct pl_timer timer;         /* the end of the hold */
};

static struct park *parked;

static void send_metalink(struct pl_http_req *r, struct pl_upload *u,
                          struct upload_file *f, int may_park);

/* Takes p out of the list and answers its request again (no second
 * hold), unless the request is gone. */
static void unpark(struct park *p)
{
    for (struct park **pp = &parked; *pp; pp = &(*pp)->next)
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    pl_timer_stop(&p->timer);
    struct pl_http_req *r = p->r;
    char id[PL_UPLOAD_ID_LEN + 1];
    memcpy(id, p->id, sizeof(id));
    pl_free(p);
    if (!r)
        return;
    r->data = NULL;
    struct pl_upload *u;
    struct upload_file *f = find_file((struct pl_str){id, PL_UPLOAD_ID_LEN},
                                      &u);
    if (!f || !f->ready)
        pl_http_error(r, 404, NULL);
    else
        send_metalink(r, u, f, 0);
}

static void park_expired(struct pl_timer *t)
{
    unpark(t->data);
}

void pl__upload_listed(const char *sha256)
{
    struct park *p = parked, *next;
    for (; p; p = next) {
        next = p->next;
        if (strcmp(p->sha256, sha256) == 0) {
            unpark(p);
            next = parked; /* answering may have changed the list */
        }
    }
}

/* Holds r (a Metalink GET told to wait) for up to ms. */
static void park(struct pl_http_req *r, const struct upload_file *f, long ms)
{
    struct park *p = pl_calloc(1, sizeof(*p));
    p->r = r;
    snprintf(p->id, sizeof(p->id), "%s", f->id);
    snprintf(p->sha256, sizeof(p->sha256), "%s", f->sha256);
    pl_timer_init(&p->timer, park_expired, p);
    pl_timer_start(pl_server_loop(), &p->timer,
                   (uint64_t)(ms > HOLD_MAX_MS ? HOLD_MAX_MS : ms));
    p->next = parked;
    parked = p;
    r->data = p;
}

/* The hold=MS parameter (1 .. 7 digits), 0 when none. */
static long hold_of(struct pl_str q)
{
    struct pl_str v;
    if (!pl_query_param(q, "hold", &v) || !v.len || v.len > 7)
        return 0;
    long ms = 0;
    for (size_t k = 0; k < v.len; k++) {
        if (v.p[k] < '0' || v.p[k] > '9')
            return 0;
        ms = ms * 10 + (v.p[k] - '0');
    }
    return ms;
}

/* The Metalink of f (RFC 5854): the server first, then its live peers. */
static void send_metalink(struct pl_http_req *r, struct pl_upload *u,
                          struct upload_file *f, int may_park)
{
    struct pl_buf url = {0}, origin = {0}, doc = {0};
    pl__upload_url(u, f->id, f->name, &url);
    pl_buf_printf(&origin, "%s.meta4", pl_buf_cstr(&url));
    struct pl_media *m = pl__media_of(u->host);
    struct media_sources peers = {0};
    if (m)
        pl__media_sources(m, f, &peers);
    struct pl_media_source *src = pl_calloc(peers.n + 1, sizeof(*src));
    src[0] = (struct pl_media_source){pl_buf_cstr(&url), 1};
    for (size_t i = 0; i < peers.n; i++)
        src[i + 1] = peers.v[i];
    unsigned char sha[PL_MEDIA_HASH_LEN];
    if (pl_media_parse_sha256(f->sha256, strlen(f->sha256), sha) !=
        PL_MEDIA_OK) {
        pl_http_error(r, 404, NULL);
        goto out;
    }
    /* pieces=0: a client reading it again for its sources, which has the
     * piece hashes already (a Metalink without <pieces> is one too). */
    struct pl_str pv;
    int no_pieces = pl_query_param(r->query, "pieces", &pv) &&
                    pl_str_eq_c(pv, "0");
    struct pl_media_info info = {
        .name = f->name,
        .size = f->size,
        .sha256 = sha,
        .piece_size = no_pieces ? 0 : f->piece_size,
        .npieces = no_pieces ? 0 : f->npieces,
        .pieces = no_pieces ? NULL : f->pieces,
        .origin = pl_buf_cstr(&origin),
        .published = f->created,
        .sources = src,
        .nsources = peers.n + 1,
    };
    /* A download preferring peers names its seat: with no peer to list,
     * it is a seed or it waits for them (mod_media.c). */
    uint64_t seat;
    if (m && peers.n == 0 && !r->is_head && seat_of(r->query, &seat))
        info.wait = pl__media_seat(m, f, seat);
    long hold = info.wait && may_park ? hold_of(r->query) : 0;
    if (hold > 0) {
        park(r, f, hold);
        goto out;
    }
    pl_media_metalink(&info, &doc);
    if (!r->is_head) {
        if (m)
            pl__media_counted(m, f, 0, 1);
        pl_stat_inc(media_metalinks);
    }
    pl_http_add_header(r, "Cache-Control", "no-store");
    pl_http_add_header(r, "Vary", "Accept");
    pl_http_add_header(r, "X-Content-Type-Options", "nosniff");
    pl_http_respond(r, 200, "application/metalink4+xml", doc.data + doc.off,
                    doc.len);
out:
    pl_free(src);
    pl__media_sources_free(&peers);
    pl_buf_reset(&url);
    pl_buf_reset(&origin);
    pl_buf_reset(&doc);
}

/* RFC 6249 on the file's answer: its digest (RFC 3230's Digest with
 * RFC 5843's SHA-256: base64 of the whole file, whatever range is
 * sent), its Metalink (rel=describedby), each live peer (rel=duplicate,
 * with its priority after the server's). */
static void metalink_http(struct pl_http_req *r, struct pl_upload *u,
                          struct upload_file *f)
{
    struct pl_buf b = {0};
    if (f->sha256[0]) {
        pl_buf_printf(&b, "SHA-256=%s", f->sha256);
        pl_http_add_header(r, "Digest", pl_buf_cstr(&b));
        pl_buf_reset(&b);
    }
    pl_buf_append_str(&b, "<");
    pl__upload_url(u, f->id, f->name, &b);
    pl_buf_append_str(&b, ".meta4>; rel=describedby; "
                          "type=\"application/metalink4+xml\"");
    pl_http_add_header(r, "Link", pl_buf_cstr(&b));
    pl_buf_reset(&b);
    struct pl_media *m = pl__media_of(u->host);
    if (!m)
        return;
    struct media_sources peers = {0};
    pl__media_sources(m, f, &peers);
    for (size_t i = 0; i < peers.n; i++) {
        pl_buf_printf(&b, "<%s>; rel=duplicate; pri=%d", peers.v[i].url,
                      peers.v[i].priority);
        pl_http_add_header(r, "Link", pl_buf_cstr(&b));
        pl_buf_reset(&b);
    }
    pl__media_sources_free(&peers);
}

static void look_up(struct pl_http_req *r, struct pl_str id);

static void get_request(struct pl_http_req *r, struct pl_str id,
                        struct pl_str name, int may_look)
{
    struct pl_upload *u;
    struct upload_file *f = find_file(id, &u);
    if (!f && may_look && pl_server_secret_shared()) {
        look_up(r, id);
        return;
    }
    if (!f || !f->ready) {
        pl_http_error(r, 404, NULL);
        return;
    }
    /* <file-url>.meta4 is the file's Metalink (a file named so itself is
     * served as the file). */
    size_t n = strlen(f->name);
    if (!pl_str_eq_c(name, f->name)) {
        if (name.len == n + 6 && memcmp(name.p, f->name, n) == 0 &&
            memcmp(name.p + n, ".meta4", 6) == 0)
            send_metalink(r, u, f, 1);
        else
            pl_http_error(r, 404, NULL);
        return;
    }
    if (wants_metalink(r)) {
        send_metalink(r, u, f, 1);
        return;
    }
    char path[4200];
    pl__upload_path(u, f->id, "", path, sizeof(path));
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        if (fd >= 0)
            close(fd);
        pl_http_error(r, 404, NULL);
        return;
    }
    struct pl_buf cd = {0};
    disposition(f, &cd);
    pl_http_add_header(r, "Content-Disposition", pl_buf_cstr(&cd));
    pl_buf_reset(&cd);
    pl_http_add_header(r, "X-Content-Type-Options", "nosniff");
    pl_http_add_header(r, "Content-Security-Policy",
                       "default-src 'none'; sandbox");
    pl_http_add_header(r, "Cache-Control", "private, max-age=86400");
    pl_http_add_header(r, "Vary", "Accept");
    metalink_http(r, u, f);
    /* The whole file, or a range through its last byte: a download. */
    if (!r->is_head) {
        struct pl_str range = pl_http_field(r, "Range");
        uint64_t a = 0, z = st.st_size ? (uint64_t)st.st_size - 1 : 0;
        int rc = range.len
                     ? pl__http_parse_range(range, (uint64_t)st.st_size, &a, &z)
                     : 0;
        if (rc == 0 || (rc == 1 && z + 1 == (uint64_t)st.st_size))
            pl__upload_fetched(u, f);
        /* What the server sends of it (the file's share in
         * parleyctl media status); a 304 or 416 sends nothing. */
        if (rc >= 0 && st.st_size && !pl_http_field(r, "If-None-Match").len) {
            uint64_t bytes = rc == 1 ? z - a + 1 : (uint64_t)st.st_size;
            pl_stat_add(media_server_bytes, (unsigned long)bytes);
            struct pl_media *m = pl__media_of(u->host);
            if (m)
                pl__media_counted(m, f, bytes, 0);
        }
    }
    if (u->max_send_rate || u->pace) {
        if (!u->pace)
            u->pace = pl_pace_new(pl_server_loop(), (uint64_t)u->max_send_rate);
        pl_pace_set_rate(u->pace, (uint64_t)u->max_send_rate);
        pl_http_set_pace(r, u->pace);
    }
    pl_http_file(r, fd, &st, f->type);
}

/*
 * In a cluster, a file this node's index does not have may be in the
 * directory all the same: stored by another node that shares it
 * (doc/cluster.md); a single server's index knows all of its files.
 * The upload work queue reads its sidecar off the loop; the GET is answered
 * when it is back (404 if no host has it).
 */
struct look {
    struct pl_work w;      /* first */
    struct pl_http_req *r; /* NULL once the request is gone */
    char id[PL_UPLOAD_ID_LEN + 1];
    int n;                 /* hosts with the upload service */
    struct pl_upload **u;  /* their state */
    char **dir, **domain;  /* their directories (copies) */
    struct upload_file *f; /* found, not indexed yet */
    int which;             /* in u[which] */
};

static void look_work(struct pl_work *w)
{
    struct look *l = (struct look *)w;
    for (int i = 0; i < l->n && !l->f; i++) {
        l->f = pl__upload_read_entry(l->domain[i], l->dir[i], l->id);
        l->which = i;
    }
}

static void look_done(struct pl_work *w)
{
    struct look *l = (struct look *)w;
    struct pl_http_req *r = l->r;
    if (r)
        r->data = NULL;
    int closing = pl__upload_closing(); /* the stores are going */
    if (l->f && !closing) {
        pl__upload_adopt(l->u[l->which], l->f);
        l->f = NULL;
    }
    pl__upload_entry_free(l->f);
    for (int i = 0; i < l->n; i++) {
        pl_free(l->dir[i]);
        pl_free(l->domain[i]);
    }
    pl_free(l->u);
    pl_free(l->dir);
    pl_free(l->domain);
    pl_free(l);
    struct pl_str id, name;
    if (!r || closing)
        return; /* the request went with its connection, or goes now */
    if (split_path(r->path, &id, &name) == PL_OK)
        get_request(r, id, name, 0);
    else
        pl_http_error(r, 404, NULL);
}

static void look_up(struct pl_http_req *r, struct pl_str id)
{
    struct look *l = pl_calloc(1, sizeof(*l));
    memcpy(l->id, id.p, PL_UPLOAD_ID_LEN);
    int n = 0;
    while (pl_host_at(n))
        n++;
    l->u = pl_calloc((size_t)n + 1, sizeof(*l->u));
    l->dir = pl_calloc((size_t)n + 1, sizeof(*l->dir));
    l->domain = pl_calloc((size_t)n + 1, sizeof(*l->domain));
    for (int i = 0; i < n; i++) {
        struct pl_upload *u = pl__upload_of(pl_host_at(i));
        if (!u || !u->opened)
            continue;
        l->u[l->n] = u;
        l->dir[l->n] = pl_strdup(u->dir);
        l->domain[l->n++] = pl_strdup(u->domain);
    }
    l->r = r;
    r->data = l;
    l->w.work = look_work;
    l->w.done = look_done;
    pl_workq_submit(pl__upload_workq(), pl_server_loop(), &l->w);
}

/* ---- the route ---- */

static int on_head(struct pl_http_req *r)
{
    struct pl_str id, name;
    if (split_path(r->path, &id, &name) != PL_OK)
        return refuse(r, 404, NULL);
    if (pl_str_eq_c(r->head->method, "PUT"))
        return put_head(r, id, name);
    return PL_OK;
}

static void on_request(struct pl_http_req *r)
{
    if (pl_str_eq_c(r->head->method, "PUT")) {
        put_request(r);
        return;
    }
    struct pl_str id, name;
    if (split_path(r->path, &id, &name) != PL_OK) {
        pl_http_error(r, 404, NULL);
        return;
    }
    get_request(r, id, name, 1);
}

static void on_abort(struct pl_http_req *r)
{
    if (r->data && !pl_str_eq_c(r->head->method, "PUT")) {
        struct park *k = parked;
        while (k && k != r->data)
            k = k->next;
        if (k) { /* a parked Metalink GET */
            r->data = NULL;
            k->r = NULL;
            unpark(k);
        } else { /* a GET whose file is looked up (look_done frees it) */
            struct look *l = r->data;
            r->data = NULL;
            l->r = NULL;
        }
        return;
    }
    struct put *p = r->data;
    if (!p)
        return;
    r->data = NULL;
    p->r = NULL;
    if (!busy(p))
        put_discard(p);
}

int pl__upload_http_start(void)
{
    uint64_t max = 0;
    for (int i = 0; pl_host_at(i); i++) {
        struct pl_upload *u = pl__upload_of(pl_host_at(i));
        if (u && (uint64_t)u->max_file_size > max)
            max = (uint64_t)u->max_file_size;
    }
    if (!max)
        return PL_OK; /* no host uploads: no route */
    route = (struct pl_http_route){
        .path = "/upload/",
        .service = "upload",
        .methods = "GET PUT",
        .max_body = max,
        .stream_body = 1,
        .cors = 1,
        .on_head = on_head,
        .on_body = put_body,
        .body_buf = put_buf,
        .on_request = on_request,
        .on_abort = on_abort,
    };
    return pl_http_route_add(&route);
}

void pl__upload_http_stop(void)
{
    while (parked) {
        struct park *p = parked;
        parked = p->next;
        pl_timer_stop(&p->timer);
        if (p->r) {
            p->r->data = NULL;
            pl_http_error(p->r, 503, NULL);
        }
        pl_free(p);
    }
    if (route.path)
        pl_http_route_remove(&route);
    route.path = NULL;
}
