/*
 * admin.c - parleyd's local admin socket (see admin.h): a Unix-domain
 * stream socket
 * (default <data_dir>/admin.sock) created with mode 0600, so only the
 * account parleyd runs as (and root) can connect: the file mode is the
 * credential.  As a second check, a peer whose SO_PEERCRED uid is neither
 * parleyd's nor root is refused.
 *
 * Protocol: one JSON object per line each way.  Every request gets exactly
 * one answer line, in request order per client is not guaranteed (answers
 * that wait for a storage commit come later); requests carry an optional
 * "tag" echoed in the answer.  doc/admin.md lists the operations.
 * A line over 1 MiB, or bytes that are not JSON, get an error answer; the
 * former also closes the connection.
 */
#include <malloc.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "admin.h"

#include "alloc.h"
#include "buf.h"
#include "error.h"
#include "hook.h"
#include "host.h"
#include "log.h"
#include "loop.h"
#include "server.h"
#include "stats.h"

#define MAX_LINE (1024 * 1024)

struct client {
    uint64_t id;         /* for answers that come later */
    struct pl_io io;     /* socket watcher */
    struct pl_buf in;    /* bytes of an incomplete line */
    struct pl_buf out;   /* answers not yet written */
    int closing;         /* close once out is written */
    struct client *next; /* in the list of clients */
};

/* An operation run from inside parleyd (pl_admin_call). */
struct call {
    uint64_t id;            /* in the clients' id space */
    pl_admin_done_fn *done; /* gets the answer */
    void *arg;              /* done's */
    struct call *next;      /* in the list of calls */
};

static struct call *calls;
static struct pl_io listen_io;
static int listen_fd = -1;
static char *sock_path;
static struct client *clients;
static uint64_t next_id = 1;

static void client_free(struct client *c)
{
    for (struct client **p = &clients; *p; p = &(*p)->next)
        if (*p == c) {
            *p = c->next;
            break;
        }
    pl_io_stop(&c->io);
    close(c->io.fd);
    pl_buf_reset(&c->in);
    pl_buf_reset(&c->out);
    pl_free(c);
}

static void flush(struct client *c)
{
    while (c->out.len) {
        ssize_t n = write(c->io.fd, c->out.data + c->out.off, c->out.len);
        if (n > 0) {
            pl_buf_consume(&c->out, (size_t)n);
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            pl_io_set(pl_server_loop(), &c->io, PL_IO_READ | PL_IO_WRITE);
            return;
        }
        client_free(c); /* the peer went away */
        return;
    }
    pl_buf_reset(&c->out);
    if (c->closing) {
        client_free(c);
        return;
    }
    pl_io_set(pl_server_loop(), &c->io, PL_IO_READ);
}

/* Takes call id out of the list: the call, or NULL. */
static struct call *call_take(uint64_t id)
{
    for (struct call **p = &calls; *p; p = &(*p)->next)
        if ((*p)->id == id) {
            struct call *k = *p;
            *p = k->next;
            return k;
        }
    return NULL;
}

void pl_admin_answer(uint64_t cid, json_t *answer)
{
    struct client *c = clients;
    while (c && c->id != cid)
        c = c->next;
    if (!c) {
        struct call *k = call_take(cid);
        if (k) {
            k->done(k->arg, answer);
            pl_free(k);
        }
        return;
    }
    char *s = json_dumps(answer, JSON_COMPACT);
    if (!s)
        return;
    pl_buf_append_str(&c->out, s);
    pl_buf_append(&c->out, "\n", 1);
    free(s);
    flush(c);
}

static void answer_error(struct client *c, const char *err, const char *detail)
{
    json_t *a = json_pack("{s:b, s:s, s:s}", "ok", 0, "error", err, "detail",
                          detail);
    pl_admin_answer(c->id, a);
    json_decref(a);
}

/* Server-wide operations (pl_admin_add_op). */
struct server_op {
    char name[32];      /* op */
    pl_admin_op_fn *fn; /* answers it */
};
static struct server_op server_ops[16];
static int nserver_ops;

void pl_admin_add_op(const char *op, pl_admin_op_fn *fn)
{
    if (nserver_ops == (int)(sizeof(server_ops) / sizeof(server_ops[0])) ||
        strlen(op) >= sizeof(server_ops[0].name))
        return;
    for (int i = 0; i < nserver_ops; i++)
        if (strcmp(server_ops[i].name, op) == 0)
            return;
    snprintf(server_ops[nserver_ops].name, sizeof(server_ops[0].name), "%s",
             op);
    server_ops[nserver_ops++].fn = fn;
}

static pl_admin_op_fn *op_find(const char *op)
{
    for (int i = 0; i < nserver_ops; i++)
        if (strcmp(server_ops[i].name, op) == 0)
            return server_ops[i].fn;
    return NULL;
}

/* Server-wide operations, then "admin/<op>" on the named host (or each
 * host in turn until one takes it). */
static void dispatch(uint64_t cid, json_t *req)
{
    const char *op = json_string_value(json_object_get(req, "op"));
    const char *hn = json_string_value(json_object_get(req, "host"));
    json_t *tag = json_object_get(req, "tag");
    json_t *a = NULL;
    if (!op) {
        a = json_pack("{s:b, s:s, s:s}", "ok", 0, "error", "bad-request",
                      "detail", "no op");
    } else if (op_find(op)) {
        a = op_find(op)(req);
    } else if (strcmp(op, "stats") == 0) {
        json_t *c = json_object();
#define X(name)                                                                \
    json_object_set_new(c, #name,                                              \
                        json_integer((json_int_t)atomic_load_explicit(         \
                            &pl_stats.name, memory_order_relaxed)));
        PL_STATS_FIELDS(X)
#undef X
        /* The allocator's view (every arena): what live objects hold,
         * and what it took from the system, fragmentation included. */
        struct mallinfo2 mi = mallinfo2();
        json_t *m = json_pack("{s:I, s:I}", "heap_in_use",
                              (json_int_t)(mi.uordblks + mi.hblkhd),
                              "heap_from_system",
                              (json_int_t)(mi.arena + mi.hblkhd));
        a = json_pack("{s:b, s:o, s:o}", "ok", 1, "counters", c, "memory", m);
    } else {
        char ev_name[128];
        snprintf(ev_name, sizeof(ev_name), "admin/%s", op);
        struct pl_admin_request r = {cid, req};
        struct pl_host *h;
        int rc = PL_PASS, found = 0;
        for (int i = 0; rc == PL_PASS && (h = pl_host_at(i)); i++) {
            if (hn && strcmp(h->domain, hn) != 0)
                continue;
            found = 1;
            struct pl_event ev = {ev_name, h, NULL, NULL, NULL, NULL, &r};
            rc = pl_hook_fire(&ev);
        }
        if (rc == PL_PASS) {
            const char *cond = found ? "feature-not-implemented"
                                     : "item-not-found";
            const char *why = found ? "unknown op (is its module enabled?)"
                                    : "no such host";
            /* (Plain variables: jansson got garbage for the ternaries
             * written inline in the argument list with gcc -O2.) */
            a = json_pack("{s:b, s:s, s:s}", "ok", 0, "error", cond, "detail",
                          why);
        }
    }
    if (a) {
        if (tag)
            json_object_set(a, "tag", tag);
        pl_admin_answer(cid, a);
        json_decref(a);
    }
}

uint64_t pl_admin_call(json_t *req, pl_admin_done_fn *done, void *arg)
{
    struct call *k = pl_calloc(1, sizeof(*k));
    k->id = next_id++;
    k->done = done;
    k->arg = arg;
    k->next = calls;
    calls = k;
    uint64_t id = k->id;
    dispatch(id, req); /* k may be answered and freed here */
    return id;
}

void pl_admin_cancel(uint64_t id)
{
    pl_free(call_take(id));
}

static void on_line(struct client *c, const char *p, size_t n)
{
    json_error_t e;
    json_t *req = json_loadb(p, n, JSON_REJECT_DUPLICATES, &e);
    if (!req || !json_is_object(req)) {
        answer_error(c, "bad-request", req ? "not a JSON object" : e.text);
        json_decref(req);
        return;
    }
    dispatch(c->id, req);
    json_decref(req);
}

static void on_client(struct pl_io *io, unsigned events)
{
    struct client *c = io->data;
    uint64_t id = c->id;
    if (events & PL_IO_WRITE) {
        flush(c);
        /* flush may have freed c. */
        struct client *k = clients;
        while (k && k->id != id)
            k = k->next;
        if (!k)
            return;
    }
    if (!(events & PL_IO_READ) || c->closing)
        return;
    char buf[16384];
    ssize_t n = read(io->fd, buf, sizeof(buf));
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
        client_free(c);
        return;
    }
    if (n < 0)
        return;
    pl_buf_append(&c->in, buf, (size_t)n);
    for (;;) {
        struct pl_str s = pl_buf_str(&c->in);
        const char *nl = s.len ? memchr(s.p, '\n', s.len) : NULL;
        if (!nl)
            break;
        size_t len = (size_t)(nl - s.p);
        on_line(c, s.p, len);
        /* The answer may have failed and freed c. */
        struct client *k = clients;
        while (k && k->id != id)
            k = k->next;
        if (!k)
            return;
        pl_buf_consume(&c->in, len + 1);
    }
    if (c->in.len > MAX_LINE) {
        pl_buf_reset(&c->in);
        c->closing = 1;
        answer_error(c, "policy-violation", "request line over 1 MiB");
    }
}

static void on_accept(struct pl_io *io, unsigned events)
{
    for (;;) {
        int fd = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;
        struct ucred cred;
        socklen_t len = sizeof(cred);
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 ||
            (cred.uid != 0 && cred.uid != geteuid())) {
            pl_log_warn("admin", "admin socket: refused a peer of uid %ld",
                        (long)cred.uid);
            close(fd);
            continue;
        }
        struct client *c = pl_calloc(1, sizeof(*c));
        c->id = next_id++;
        c->next = clients;
        clients = c;
        pl_io_init(&c->io, fd, on_client, c);
        pl_io_set(pl_server_loop(), &c->io, PL_IO_READ);
    }
}

int pl_admin_open(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sa.sun_path)) {
        pl_log_error("admin", "admin socket path %s is too long", path);
        return PL_EINVAL;
    }
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return PL_EIO;
    /* A socket file left by a crash is removed only when nobody answers
     * on it (another parleyd on the same data_dir keeps its own). */
    int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (probe >= 0 && connect(probe, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
        close(probe);
        close(fd);
        pl_log_error("admin", "admin socket %s is in use", path);
        return PL_EIO;
    }
    if (probe >= 0)
        close(probe);
    unlink(path);
    mode_t old = umask(077); /* created 0600: no window with wider rights */
    int rc = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
    umask(old);
    if (rc != 0 || chmod(path, 0600) != 0 || listen(fd, 64) != 0) {
        pl_log_error("admin", "while opening the admin socket %s: %s", path,
                     strerror(errno));
        close(fd);
        return PL_EIO;
    }
    listen_fd = fd;
    sock_path = pl_strdup(path);
    pl_io_init(&listen_io, fd, on_accept, NULL);
    pl_io_set(pl_server_loop(), &listen_io, PL_IO_READ);
    pl_log_info("admin", "admin socket at %s", path);
    return PL_OK;
}

void pl_admin_close(void)
{
    while (clients)
        client_free(clients);
    while (calls)
        pl_free(call_take(calls->id));
    if (listen_fd >= 0) {
        pl_io_stop(&listen_io);
        close(listen_fd);
        listen_fd = -1;
        unlink(sock_path);
    }
    pl_free(sock_path);
    sock_path = NULL;
}
