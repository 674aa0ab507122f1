/*
 * inproc.c - a Parley server inside a test process; see inproc.h.
 */
#include "inproc.h"

#include <errno.h>
#include <ftw.h>
#include <openssl/rand.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "error.h"
#include "host.h"
#include "loop.h"
#include "module.h"
#include "server.h"
#include "storage.h"
#include "work.h"

uint64_t inproc_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int rm_entry(const char *path, const struct stat *sb, int flag,
                    struct FTW *ftw)
{
    return remove(path);
}

void inproc_remove_dir(struct inproc *e)
{
    if (e->dir[0])
        nftw(e->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    e->dir[0] = '\0';
}

void inproc_need(struct inproc *e, int ok, const char *what)
{
    if (ok)
        return;
    fprintf(stderr, "%s: setup failed: %s\n", e->name, what);
    inproc_remove_dir(e);
    exit(1);
}

void inproc_mkdir(struct inproc *e, const char *name)
{
    memset(e, 0, sizeof(*e));
    e->name = name;
    snprintf(e->dir, sizeof(e->dir), "/tmp/%s.XXXXXX", name);
    inproc_need(e, mkdtemp(e->dir) != NULL, "mkdtemp");
}

void inproc_start(struct inproc *e, enum pl_log_level log_level,
                  const char *fmt, ...)
{
    char path[128];
    snprintf(path, sizeof(path), "%s/parleyd.conf", e->dir);
    FILE *f = fopen(path, "w");
    inproc_need(e, f != NULL, "writing the configuration");
    fprintf(f,
            "server: { data_dir = \"%s\"; log_level = \"error\"; "
            "workers = 1; };\n"
            "storage: { sqlite_synchronous = \"off\"; %s };\n"
            "listeners = ();\n",
            e->dir, e->storage ? e->storage : "");
    va_list ap;
    va_start(ap, fmt);
    vfprintf(f, fmt, ap);
    va_end(ap);
    inproc_need(e, fclose(f) == 0, "writing the configuration");
    char err[512];
    int rc = pl_config_load(path, NULL, 0, &e->cfg, err, sizeof(err));
    if (rc != PL_OK)
        fprintf(stderr, "%s: %s\n", e->name, err);
    inproc_need(e, rc == PL_OK, "loading the configuration");
    pl_log_set_level(log_level);
    inproc_need(e, pl_loop_new(&e->loop) == PL_OK, "pl_loop_new");
    e->cpu = pl_workq_new("cpu", (int)e->cfg->s.workers, NULL, NULL);
    inproc_need(e, e->cpu != NULL, "pl_workq_new");
    unsigned char secret[32];
    RAND_bytes(secret, sizeof(secret));
    pl__server_set(e->loop, e->cfg, e->cpu, secret);
    inproc_need(e, pl__storage_open(&e->cfg->s) == PL_OK, "pl__storage_open");
    inproc_need(e, pl__hosts_init(e->cfg) == PL_OK, "pl__hosts_init");
    inproc_need(e, pl__frontends_start(e->cfg) == PL_OK, "pl__frontends_start");
}

static void on_slice_end(struct pl_timer *t)
{
    pl_loop_stop(t->loop);
}

void inproc_pump(struct inproc *e, unsigned ms)
{
    struct pl_timer t;
    pl_timer_init(&t, on_slice_end, NULL);
    pl_timer_start(e->loop, &t, ms);
    pl_loop_run(e->loop);
    pl_timer_stop(&t);
}

int inproc_busy(struct inproc *e)
{
    return pl_storage_pending() || pl_workq_pending(e->cpu);
}

void inproc_drain(struct inproc *e)
{
    uint64_t deadline = inproc_now_ms() + INPROC_WAIT_MS;
    while (inproc_busy(e) && inproc_now_ms() < deadline)
        inproc_pump(e, 5);
    inproc_pump(e, 1); /* completions posted by the last jobs */
}

unsigned long inproc_stop_frontends(struct inproc *e)
{
    pl__frontends_stop();
    uint64_t deadline = inproc_now_ms() + INPROC_WAIT_MS;
    while (pl__frontends_count() && inproc_now_ms() < deadline)
        inproc_pump(e, 5);
    return pl__frontends_count();
}

void inproc_free(struct inproc *e)
{
    inproc_drain(e);
    pl__frontends_free();
    pl__storage_close();
    pl_workq_free(e->cpu);
    inproc_pump(e, 1);
    pl__hosts_free();
    pl__server_set(NULL, NULL, NULL, NULL);
    pl_loop_free(e->loop);
    pl_config_free(e->cfg);
    e->cfg = NULL;
    e->loop = NULL;
    e->cpu = NULL;
    inproc_remove_dir(e);
}

void inproc_connect(struct inproc *e, inproc_accept_fn *accept,
                    struct pl_io *io, pl_io_fn *cb, void *data)
{
    int sv[2];
    inproc_need(e,
                socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                           0, sv) == 0,
                "socketpair");
    inproc_need(e, accept(sv[0], PL_TLS_NONE) == PL_OK,
                "handing a connection to the front end");
    pl_io_init(io, sv[1], cb, data);
    pl_io_set(e->loop, io, PL_IO_READ);
}

size_t inproc_read(struct pl_io *io, struct pl_buf *buf, int *eof)
{
    char b[4096];
    size_t got = 0;
    for (;;) {
        ssize_t n = read(io->fd, b, sizeof(b));
        if (n > 0) {
            pl_buf_append(buf, b, (size_t)n);
            got += (size_t)n;
            continue;
        }
        if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
            *eof = 1;
            pl_io_stop(io);
        }
        return got;
    }
}

int inproc_write(struct inproc *e, struct pl_io *io, const char *p, size_t len,
                 const int *eof, unsigned limit_ms)
{
    uint64_t deadline = inproc_now_ms() + limit_ms;
    size_t off = 0;
    while (off < len) {
        if (eof && *eof)
            return PL_ECLOSED;
        ssize_t n = send(io->fd, p + off, len - off, MSG_NOSIGNAL);
        if (n > 0) {
            off += (size_t)n;
        } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
            return PL_ECLOSED;
        } else {
            inproc_pump(e, 1);
            if (inproc_now_ms() > deadline)
                return PL_EAGAIN;
        }
    }
    return PL_OK;
}
