/*
 * store.c - the uploaded files of a host (see upload.h for the layout):
 * the in-memory index read from the sidecars at start, the bytes stored
 * per owner (the quota), sidecar writes and expiry, both off the loop on
 * the upload work queue.
 *
 * Expiry: a file is removed once its expiry passed (upload.file_expiry
 * after the upload; 0 keeps it forever).  A file held for an offline
 * recipient (mod_upload.c) and never downloaded whole follows its own
 * clock instead, upload.held_expiry from the hold; once downloaded, the
 * ordinary expiry applies again.  Expiry runs every
 * upload.cleanup_interval seconds: the expired entries leave the index
 * on the loop, a worker unlinks their files, then the event
 * "upload/expired" fires on the host (data: the number removed).
 *
 * A file's piece hashes (<id>.pieces, written with the sidecar by the
 * upload's last job) are read with it and kept in memory: 32 bytes per
 * piece, so at most upload.max_pieces * 32 bytes per file below
 * max_piece * max_pieces bytes (doc/media.md).
 *
 * Extending: a new sidecar key is a line in meta_format and meta_parse.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "media/media.h"
#include "upload.h"

static struct pl_workq *workq;
static int closing;
static int nopen; /* hosts whose store is open */

struct pl_workq *pl__upload_workq(void)
{
    if (!workq)
        workq = pl_workq_new("upload", 2, NULL, NULL);
    return workq;
}

int pl__upload_closing(void)
{
    return closing;
}

struct pl_upload *pl__upload_of(struct pl_host *h)
{
    return h ? pl_host_ctx(h, upload) : NULL;
}

void pl__upload_path(const struct pl_upload *u, const char *id,
                     const char *suffix, char *out, size_t len)
{
    snprintf(out, len, "%s/%s%s", u->dir, id, suffix);
}

/* ---- usage ---- */

uint64_t pl__upload_usage(struct pl_upload *u, const char *owner)
{
    uint64_t *v = pl_map_get(&u->usage, owner);
    return v ? *v : 0;
}

void pl__upload_usage_add(struct pl_upload *u, const char *owner, int64_t delta)
{
    uint64_t *v = pl_map_get(&u->usage, owner);
    if (!v) {
        if (delta <= 0)
            return;
        v = pl_calloc(1, sizeof(*v));
        pl_map_put(&u->usage, owner, v);
    }
    if (delta < 0 && (uint64_t)-delta >= *v) {
        pl_free(pl_map_del(&u->usage, owner));
        return;
    }
    *v = (uint64_t)((int64_t)*v + delta);
}

/* ---- entries ---- */

static void file_free(struct upload_file *f)
{
    pl_free(f->pieces);
    pl_free(f->owner);
    pl_free(f->name);
    pl_free(f->type);
    pl_free(f->held_for);
    pl_free(f);
}

struct upload_file *pl__upload_file_add(struct pl_upload *u,
                                        const struct upload_slot *s)
{
    struct upload_file *f = pl_calloc(1, sizeof(*f));
    memcpy(f->id, s->id, sizeof(f->id));
    f->owner = pl_strdup(s->owner);
    f->name = pl_strdup(s->name);
    f->type = pl_strdup(s->type[0] ? s->type : "application/octet-stream");
    f->size = s->size;
    f->created = (int64_t)time(NULL);
    f->expires = u->file_expiry ? f->created + u->file_expiry : 0;
    pl_map_put(&u->files, f->id, f);
    return f;
}

/* ---- the index by hash ---- */

struct same_hash {
    const struct upload_file *gone; /* the file leaving */
    struct upload_file *other;      /* another ready copy, if any */
};

static void find_same(const char *key, void *value, void *ud)
{
    (void)key;
    struct same_hash *s = ud;
    struct upload_file *f = value;
    if (f != s->gone && f->ready && !s->other &&
        strcmp(f->sha256, s->gone->sha256) == 0)
        s->other = f;
}

static void index_hash(struct pl_upload *u, struct upload_file *f)
{
    if (f->sha256[0] && !pl_map_get(&u->by_hash, f->sha256))
        pl_map_put(&u->by_hash, f->sha256, f);
}

/* f leaves the index; another copy of the same bytes takes its place. */
static void unindex_hash(struct pl_upload *u, struct upload_file *f)
{
    if (!f->sha256[0] || pl_map_get(&u->by_hash, f->sha256) != f)
        return;
    pl_map_del(&u->by_hash, f->sha256);
    struct same_hash s = {f, NULL};
    pl_map_each(&u->files, find_same, &s);
    if (s.other)
        pl_map_put(&u->by_hash, f->sha256, s.other);
}

void pl__upload_file_ready(struct pl_upload *u, struct upload_file *f)
{
    f->ready = 1;
    index_hash(u, f);
}

struct upload_file *pl__upload_by_hash(struct pl_upload *u, const char *sha256)
{
    return pl_map_get(&u->by_hash, sha256);
}

void pl__upload_file_drop(struct pl_upload *u, struct upload_file *f)
{
    if (pl_map_get(&u->files, f->id) == f)
        pl_map_del(&u->files, f->id);
    unindex_hash(u, f);
    file_free(f);
}

/* ---- sidecars ---- */

void pl__upload_meta_format(const struct upload_file *f, struct pl_buf *out)
{
    pl_buf_printf(out,
                  "owner %s\nname %s\ntype %s\nsize %llu\ncreated %lld\n"
                  "expires %lld\nsha256 %s\nfetched %d\n",
                  f->owner, f->name, f->type, (unsigned long long)f->size,
                  (long long)f->created, (long long)f->expires, f->sha256,
                  f->fetched);
    if (f->piece_size)
        pl_buf_printf(out, "piece_size %lu\n", (unsigned long)f->piece_size);
    if (f->held_for)
        pl_buf_printf(out, "held_for %s\nhold_expires %lld\n", f->held_for,
                      (long long)f->hold_expires);
}

/* Parses a sidecar (NUL-terminated text) into f; PL_EINVAL if a
 * required key is missing. */
static int meta_parse(char *text, struct upload_file *f)
{
    int have = 0;
    for (char *line = text; line && *line;) {
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = '\0';
        char *sp = strchr(line, ' ');
        if (sp) {
            *sp = '\0';
            const char *k = line, *v = sp + 1;
            if (strcmp(k, "owner") == 0 && !f->owner) {
                f->owner = pl_strdup(v);
                have |= 1;
            } else if (strcmp(k, "name") == 0 && !f->name) {
                f->name = pl_strdup(v);
                have |= 2;
            } else if (strcmp(k, "type") == 0 && !f->type) {
                f->type = pl_strdup(v);
                have |= 4;
            } else if (strcmp(k, "size") == 0) {
                f->size = strtoull(v, NULL, 10);
                have |= 8;
            } else if (strcmp(k, "created") == 0) {
                f->created = strtoll(v, NULL, 10);
            } else if (strcmp(k, "expires") == 0) {
                f->expires = strtoll(v, NULL, 10);
            } else if (strcmp(k, "sha256") == 0) {
                snprintf(f->sha256, sizeof(f->sha256), "%s", v);
            } else if (strcmp(k, "fetched") == 0) {
                f->fetched = atoi(v);
            } else if (strcmp(k, "held_for") == 0 && !f->held_for) {
                f->held_for = pl_strdup(v);
            } else if (strcmp(k, "hold_expires") == 0) {
                f->hold_expires = strtoll(v, NULL, 10);
            } else if (strcmp(k, "piece_size") == 0) {
                unsigned long ps = strtoul(v, NULL, 10);
                f->piece_size = ps <= UINT32_MAX ? (uint32_t)ps : 0;
            }
        }
        line = nl ? nl + 1 : NULL;
    }
    return have == 15 ? PL_OK : PL_EINVAL;
}

int pl__upload_write_file(const char *path, const void *data, size_t len)
{
    char tmp[4200];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return PL_EIO;
    const char *p = data;
    while (len) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            close(fd);
            unlink(tmp);
            return PL_EIO;
        }
        p += n;
        len -= (size_t)n;
    }
    if (fsync(fd) != 0 || close(fd) != 0 || rename(tmp, path) != 0) {
        unlink(tmp);
        return PL_EIO;
    }
    return PL_OK;
}

struct save_job {
    struct pl_work w;    /* first */
    struct pl_upload *u; /* the host's state */
    char id[PL_UPLOAD_ID_LEN + 1];
    char path[4096];    /* the sidecar */
    struct pl_buf text; /* its new content */
};

static void save_work(struct pl_work *w)
{
    struct save_job *j = (struct save_job *)w;
    w->result = pl__upload_write_file(j->path, j->text.data + j->text.off,
                                      j->text.len);
}

static void save_done(struct pl_work *w)
{
    struct save_job *j = (struct save_job *)w;
    struct pl_upload *u = j->u;
    if (!closing) {
        if (w->result != PL_OK)
            pl_log_error("upload", "while saving %s: cannot write", j->path);
        struct upload_file *f = pl_map_get(&u->files, j->id);
        if (f) {
            f->saving = 0;
            if (f->dirty) {
                f->dirty = 0;
                pl__upload_meta_save(u, f);
            }
        }
    }
    pl_buf_reset(&j->text);
    pl_free(j);
}

void pl__upload_meta_save(struct pl_upload *u, struct upload_file *f)
{
    if (f->saving) {
        f->dirty = 1; /* written again when this one is done: in order */
        return;
    }
    struct save_job *j = pl_calloc(1, sizeof(*j));
    j->u = u;
    memcpy(j->id, f->id, sizeof(j->id));
    pl__upload_path(u, f->id, ".meta", j->path, sizeof(j->path));
    pl__upload_meta_format(f, &j->text);
    j->w.work = save_work;
    j->w.done = save_done;
    f->saving = 1;
    pl_workq_submit(pl__upload_workq(), pl_server_loop(), &j->w);
}

void pl__upload_fetched(struct pl_upload *u, struct upload_file *f)
{
    if (f->fetched)
        return;
    f->fetched = 1;
    if (f->held_for)
        pl_log_info("upload", "%s: %s held for %s was fetched", u->domain,
                    f->id, f->held_for);
    pl__upload_meta_save(u, f);
}

void pl__upload_hold(struct pl_upload *u, struct upload_file *f,
                     const char *recipient)
{
    int64_t until = (int64_t)time(NULL) + u->held_expiry;
    if (!f->held_for)
        f->held_for = pl_strdup(recipient);
    /* A later hold (another offline recipient) extends the first. */
    if (until > f->hold_expires)
        f->hold_expires = until;
    f->fetched = 0;
    pl__upload_meta_save(u, f);
}

/* ---- opening ---- */

static int mkdirs(const char *path)
{
    char buf[4096];
    snprintf(buf, sizeof(buf), "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, 0700) != 0 && errno != EEXIST)
            return PL_EIO;
        *p = '/';
    }
    if (mkdir(buf, 0700) != 0 && errno != EEXIST)
        return PL_EIO;
    return PL_OK;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* Reads f's piece hashes (<id>.pieces in dfd); without a whole list the
 * file has none until pl__upload_backfill hashes it again. */
static void load_pieces(const char *domain, int dfd, struct upload_file *f)
{
    char name[PL_UPLOAD_ID_LEN + 8];
    snprintf(name, sizeof(name), "%s.pieces", f->id);
    uint64_t n = (f->size + f->piece_size - 1) / f->piece_size;
    size_t len = (size_t)n * 32;
    struct stat st;
    int fd = n <= (1u << 26)
                 ? openat(dfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
                 : -1;
    if (fd >= 0 && fstat(fd, &st) == 0 && (uint64_t)st.st_size == len) {
        f->pieces = pl_malloc(len ? len : 1);
        size_t got = 0;
        while (got < len) {
            ssize_t k = read(fd, f->pieces + got, len - got);
            if (k < 0 && errno == EINTR)
                continue;
            if (k <= 0)
                break;
            got += (size_t)k;
        }
        if (got == len)
            f->npieces = n;
        else
            pl_free(f->pieces), f->pieces = NULL;
    }
    if (fd >= 0)
        close(fd);
    if (!f->pieces) {
        pl_log_warn("upload", "%s: %s: piece hashes missing, hashing again",
                    domain, f->id);
        f->piece_size = 0;
    }
}

/* The complete file id of dfd (its bytes, sidecar and piece hashes) as a
 * new entry, not indexed; NULL if it is not there whole. */
static struct upload_file *read_entry(const char *domain, int dfd,
                                      const char *id)
{
    struct stat st;
    if (fstatat(dfd, id, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode))
        return NULL;
    char name[PL_UPLOAD_ID_LEN + 6];
    snprintf(name, sizeof(name), "%s.meta", id);
    int fd = openat(dfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return NULL;
    char text[8192];
    ssize_t got = read(fd, text, sizeof(text) - 1);
    close(fd);
    if (got <= 0)
        return NULL;
    text[got] = '\0';
    struct upload_file *f = pl_calloc(1, sizeof(*f));
    memcpy(f->id, id, sizeof(f->id));
    if (meta_parse(text, f) != PL_OK || f->size != (uint64_t)st.st_size) {
        pl_log_warn("upload", "%s: ignoring %s: bad sidecar", domain, name);
        file_free(f);
        return NULL;
    }
    if (f->piece_size)
        load_pieces(domain, dfd, f);
    f->ready = 1;
    return f;
}

static void index_entry(struct pl_upload *u, struct upload_file *f)
{
    pl_map_put(&u->files, f->id, f);
    index_hash(u, f);
    pl__upload_usage_add(u, f->owner, (int64_t)f->size);
}

/*
 * Whether name (in dfd) changed in the last age seconds.  In a cluster
 * whose nodes share the directory, a node that starts leaves such files
 * alone: another node may be writing them (an upload in progress, a
 * sidecar written just before its file is renamed into place).  A single
 * server passes age 0: nobody else writes there.
 */
static int fresh(int dfd, const char *name, long age)
{
    struct stat st;
    return age > 0 && fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
           st.st_mtime > time(NULL) - age;
}

/* Reads the sidecar name (in dirfd) into the index. */
static void load_one(struct pl_upload *u, int dfd, const char *name, long age)
{
    char id[PL_UPLOAD_ID_LEN + 1];
    size_t n = strlen(name) - 5;
    struct stat st;
    if (n != PL_UPLOAD_ID_LEN || !pl__upload_is_id((struct pl_str){name, n}))
        return;
    memcpy(id, name, n);
    id[n] = '\0';
    if (fstatat(dfd, id, &st, AT_SYMLINK_NOFOLLOW) != 0 ||
        !S_ISREG(st.st_mode)) {
        if (fresh(dfd, name, age))
            return; /* another node's, about to be renamed into place */
        /* The bytes never arrived (a crash before the rename). */
        unlinkat(dfd, name, 0);
        char pieces[PL_UPLOAD_ID_LEN + 8];
        snprintf(pieces, sizeof(pieces), "%s.pieces", id);
        unlinkat(dfd, pieces, 0);
        return;
    }
    struct upload_file *f = read_entry(u->domain, dfd, id);
    if (f)
        index_entry(u, f);
}

struct upload_file *pl__upload_read_entry(const char *domain, const char *dir,
                                          const char *id)
{
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return NULL;
    struct upload_file *f = read_entry(domain, dfd, id);
    close(dfd);
    return f;
}

struct upload_file *pl__upload_adopt(struct pl_upload *u, struct upload_file *f)
{
    struct upload_file *known = pl_map_get(&u->files, f->id);
    if (known) {
        file_free(f);
        return known;
    }
    index_entry(u, f);
    return f;
}

void pl__upload_entry_free(struct upload_file *f)
{
    if (f)
        file_free(f);
}

int pl__upload_store_open(struct pl_upload *u)
{
    if (mkdirs(u->dir) != PL_OK) {
        pl_log_error("upload", "%s: cannot create %s", u->domain, u->dir);
        return PL_EIO;
    }
    DIR *d = opendir(u->dir);
    if (!d) {
        pl_log_error("upload", "%s: cannot open %s", u->domain, u->dir);
        return PL_EIO;
    }
    struct dirent *e;
    unsigned long n = 0;
    long age = pl_server_secret_shared() ? u->slot_expiry : 0;
    while ((e = readdir(d))) {
        if (ends_with(e->d_name, ".part") || ends_with(e->d_name, ".tmp")) {
            if (!fresh(dirfd(d), e->d_name, age))
                unlinkat(dirfd(d), e->d_name, 0); /* interrupted */
        } else if (ends_with(e->d_name, ".meta")) {
            load_one(u, dirfd(d), e->d_name, age), n++;
        }
    }
    /* Piece hashes whose file never got its sidecar (a crash between
     * the two writes). */
    rewinddir(d);
    while ((e = readdir(d))) {
        size_t k = strlen(e->d_name);
        if (k == PL_UPLOAD_ID_LEN + 7 && ends_with(e->d_name, ".pieces")) {
            char id[PL_UPLOAD_ID_LEN + 1];
            memcpy(id, e->d_name, PL_UPLOAD_ID_LEN);
            id[PL_UPLOAD_ID_LEN] = '\0';
            if (!pl_map_get(&u->files, id) && !fresh(dirfd(d), e->d_name, age))
                unlinkat(dirfd(d), e->d_name, 0);
        }
    }
    closedir(d);
    pl_log_info("upload", "%s: %lu files in %s", u->domain,
                (unsigned long)u->files.count, u->dir);
    (void)n;
    nopen++;
    closing = 0;
    return PL_OK;
}

static void free_file(const char *key, void *value, void *ud)
{
    (void)key;
    (void)ud;
    struct upload_file *f = value;
    if (f->ready)
        file_free(f);
    /* An upload in progress belongs to its request (src/http/upload.c),
     * which frees it when it ends. */
}

static void free_usage(const char *key, void *value, void *ud)
{
    (void)key;
    (void)ud;
    pl_free(value);
}

void pl__upload_store_close(struct pl_upload *u)
{
    if (--nopen == 0 && workq) {
        closing = 1;
        /* Runs what is queued; completions then only free. */
        pl_workq_free(workq);
        workq = NULL;
    }
    pl_timer_stop(&u->timer);
    pl_map_each(&u->files, free_file, NULL);
    pl_map_clear(&u->files);
    pl_map_clear(&u->by_hash);
    pl_map_each(&u->usage, free_usage, NULL);
    pl_map_clear(&u->usage);
}

/* ---- piece hashes of files stored without them ---- */

/* One file hashed again, off the loop, one after the other (the upload
 * queue's other worker stays free for uploads). */
struct backfill_job {
    struct pl_work w;    /* first */
    struct pl_upload *u; /* the host's state */
    char id[PL_UPLOAD_ID_LEN + 1];
    char path[4200], pieces[4200]; /* the bytes, the hashes to write */
    uint64_t size;                 /* bytes expected */
    char sha256[48];               /* the sidecar's whole-file hash */
    struct pl_media_hasher h;      /* the hashes */
    int mismatch;                  /* the bytes are not the sidecar's */
};

static void backfill_next(struct pl_upload *u);

static void backfill_work(struct pl_work *w)
{
    struct backfill_job *j = (struct backfill_job *)w;
    w->result = PL_EIO;
    int fd = open(j->path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return;
    size_t cap = 1u << 20;
    char *buf = pl_malloc(cap);
    uint64_t left = j->size;
    while (left) {
        ssize_t n = read(fd, buf, left < cap ? (size_t)left : cap);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        pl_media_hasher_update(&j->h, buf, (size_t)n);
        left -= (uint64_t)n;
    }
    pl_free(buf);
    close(fd);
    unsigned char md[PL_MEDIA_HASH_LEN];
    char b64[48];
    if (left || pl_media_hasher_final(&j->h, md) != PL_MEDIA_OK)
        return;
    pl_media_b64(md, sizeof(md), b64, sizeof(b64));
    if (strcmp(b64, j->sha256) != 0) {
        j->mismatch = 1;
        return;
    }
    w->result = pl__upload_write_file(j->pieces, j->h.digests,
                                      (size_t)j->h.npieces * 32);
}

static void backfill_done(struct pl_work *w)
{
    struct backfill_job *j = (struct backfill_job *)w;
    struct pl_upload *u = j->u;
    if (!closing) {
        struct upload_file *f = pl_map_get(&u->files, j->id);
        if (j->mismatch)
            pl_log_error("upload",
                         "%s: %s does not match its SHA-256: "
                         "no piece hashes",
                         u->domain, j->id);
        else if (w->result != PL_OK)
            pl_log_warn("upload", "%s: cannot hash the pieces of %s", u->domain,
                        j->id);
        else if (f && f->ready && !f->pieces && f->size == j->size) {
            size_t len = (size_t)j->h.npieces * 32;
            f->pieces = pl_malloc(len ? len : 1);
            memcpy(f->pieces, j->h.digests, len);
            f->npieces = j->h.npieces;
            f->piece_size = j->h.piece_size;
            pl__upload_meta_save(u, f);
            pl_log_info("upload", "%s: %s: %llu piece hashes added", u->domain,
                        j->id, (unsigned long long)f->npieces);
        }
        u->backfilling = 0;
        backfill_next(u);
    }
    pl_media_hasher_free(&j->h);
    pl_free(j);
}

struct first_missing {
    struct upload_file *f; /* a ready file without piece hashes */
};

static void find_missing(const char *key, void *value, void *ud)
{
    (void)key;
    struct first_missing *m = ud;
    struct upload_file *f = value;
    if (!m->f && f->ready && !f->pieces && f->sha256[0] && !f->no_pieces)
        m->f = f;
}

static void backfill_next(struct pl_upload *u)
{
    struct first_missing m = {NULL};
    if (u->backfilling)
        return;
    pl_map_each(&u->files, find_missing, &m);
    struct upload_file *f = m.f;
    if (!f)
        return;
    f->no_pieces = 1; /* tried once, whatever comes of it */
    struct backfill_job *j = pl_calloc(1, sizeof(*j));
    uint32_t ps = pl_media_piece_size(f->size, (uint32_t)u->min_piece,
                                      (uint32_t)u->max_piece,
                                      (uint32_t)u->max_pieces);
    if (pl_media_hasher_init(&j->h, f->size, ps) != PL_MEDIA_OK) {
        pl_free(j);
        return;
    }
    j->u = u;
    memcpy(j->id, f->id, sizeof(j->id));
    pl__upload_path(u, f->id, "", j->path, sizeof(j->path));
    pl__upload_path(u, f->id, ".pieces", j->pieces, sizeof(j->pieces));
    j->size = f->size;
    snprintf(j->sha256, sizeof(j->sha256), "%s", f->sha256);
    j->w.work = backfill_work;
    j->w.done = backfill_done;
    u->backfilling = 1;
    pl_workq_submit(pl__upload_workq(), pl_server_loop(), &j->w);
}

void pl__upload_backfill(struct pl_upload *u)
{
    backfill_next(u);
}

/* ---- expiry ---- */

struct expire_job {
    struct pl_work w;    /* first */
    struct pl_upload *u; /* the host's state */
    char dir[4096];      /* its directory */
    char (*ids)[PL_UPLOAD_ID_LEN + 1];
    size_t n, cap;
};

struct collect {
    struct pl_upload *u;
    struct expire_job *j;
    int64_t now;
};

static int64_t deadline(const struct upload_file *f)
{
    if (f->held_for && !f->fetched)
        return f->hold_expires;
    return f->expires;
}

static void collect_expired(const char *key, void *value, void *ud)
{
    (void)key;
    struct collect *c = ud;
    struct upload_file *f = value;
    int64_t due = deadline(f);
    if (!f->ready || f->saving || !due || due > c->now)
        return;
    struct expire_job *j = c->j;
    if (j->n == j->cap) {
        j->cap = j->cap ? j->cap * 2 : 16;
        j->ids = pl_realloc(j->ids, j->cap * sizeof(*j->ids));
    }
    memcpy(j->ids[j->n++], f->id, PL_UPLOAD_ID_LEN + 1);
}

static void expire_work(struct pl_work *w)
{
    struct expire_job *j = (struct expire_job *)w;
    char path[4200];
    for (size_t i = 0; i < j->n; i++) {
        snprintf(path, sizeof(path), "%s/%s", j->dir, j->ids[i]);
        unlink(path);
        snprintf(path, sizeof(path), "%s/%s.meta", j->dir, j->ids[i]);
        unlink(path);
        snprintf(path, sizeof(path), "%s/%s.pieces", j->dir, j->ids[i]);
        unlink(path);
    }
}

static void expire_done(struct pl_work *w)
{
    struct expire_job *j = (struct expire_job *)w;
    if (!closing) {
        struct pl_upload *u = j->u;
        u->cleaning = 0;
        if (j->n)
            pl_log_info("upload", "%s: %lu expired files removed", u->domain,
                        (unsigned long)j->n);
        struct pl_event ev =
            {"upload/expired", u->host, NULL, NULL, NULL, NULL, &j->n};
        pl_hook_fire(&ev);
    }
    pl_free(j->ids);
    pl_free(j);
}

void pl__upload_cleanup(struct pl_upload *u)
{
    if (u->cleaning)
        return;
    struct expire_job *j = pl_calloc(1, sizeof(*j));
    j->u = u;
    snprintf(j->dir, sizeof(j->dir), "%s", u->dir);
    struct collect c = {u, j, (int64_t)time(NULL)};
    pl_map_each(&u->files, collect_expired, &c);
    /* Out of the index first: no download starts on a file going away
     * (one already started keeps its open descriptor). */
    for (size_t i = 0; i < j->n; i++) {
        struct upload_file *f = pl_map_del(&u->files, j->ids[i]);
        if (!f)
            continue;
        unindex_hash(u, f);
        pl__upload_usage_add(u, f->owner, -(int64_t)f->size);
        file_free(f);
    }
    j->w.work = expire_work;
    j->w.done = expire_done;
    u->cleaning = 1;
    pl_workq_submit(pl__upload_workq(), pl_server_loop(), &j->w);
}
