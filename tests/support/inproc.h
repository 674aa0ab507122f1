/*
 * inproc.h - a Parley server inside a test process, for the unit tests
 * and fuzz targets that drive the real front ends without a listener
 * (tests/unit/test_stream.c, test_http_server.c, tests/fuzz/fuzz_c2s.c,
 * fuzz_web.c).  It is built as src/parleyd.c builds one: configuration
 * file under a fresh /tmp directory, loop, CPU queue, storage, hosts with
 * their modules, front ends.  A test then hands one end of a socketpair to
 * a front end's accept_fd function and watches the other on e->loop.
 *
 * API, in the order a test calls it:
 *   inproc_mkdir()   the data directory, /tmp/<name>.XXXXXX (a test may
 *                    put files there before the server starts)
 *   inproc_start()   writes <dir>/parleyd.conf: the head all share
 *                    (data_dir, log_level "error", one worker, SQLite
 *                    without fsync and e->storage, no listener), then
 *                    the caller's part (hosts, modules, groups); starts
 *                    the server on it
 *   inproc_pump()    runs the loop for at most ms (less if a callback
 *                    stops it, as a client end that received bytes does)
 *   inproc_busy(), inproc_drain()   storage or CPU jobs in flight; waits
 *                    for them
 *   inproc_stop_frontends()   ends every connection (as a stop does) and
 *                    returns how many are left after INPROC_WAIT_MS
 *   inproc_free()    frees the server and removes the directory
 * inproc_need() ends the process (status 1) when a set-up step failed;
 * inproc_remove_dir() is for an atexit handler.
 *
 * Client ends: inproc_connect() makes a socketpair, hands one end to a
 * front end as an accepted plain connection and watches the other;
 * inproc_read() and inproc_write() move the bytes (the test keeps its
 * own struct: what it received, whether the server closed).
 *
 * There is one server per process: the core's services are global
 * (server.h).  Extending: what every in-process server needs goes here;
 * what only fuzz targets share goes in tests/fuzz/fuzz_common.c.
 */
#ifndef PL_TEST_INPROC_H
#define PL_TEST_INPROC_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "log.h"
#include "loop.h"

struct pl_config;
struct pl_loop;
struct pl_workq;

/* How long inproc_drain() and inproc_stop_frontends() wait at most. */
#define INPROC_WAIT_MS 3000
/* For inproc_start(): no log line at all, not even errors. */
#define INPROC_SILENT ((enum pl_log_level) - 1)

struct inproc {
    const char *name;      /* the test's name, in messages and dir */
    char dir[64];          /* temporary data_dir, "" once removed */
    struct pl_config *cfg; /* from dir/parleyd.conf */
    struct pl_loop *loop;  /* the server's loop, also the clients' */
    struct pl_workq *cpu;  /* CPU workers (PBKDF2) */
    const char *storage;   /* more settings of the storage group, or NULL
                            * (set between inproc_mkdir and _start) */
};

/* Monotonic milliseconds. */
uint64_t inproc_now_ms(void);

/* Makes e->dir; clears the rest of e.  name must outlive e. */
void inproc_mkdir(struct inproc *e, const char *name);

/*
 * Writes the configuration (the head, then fmt formatted), loads
 * it and starts the server, with log_level (INPROC_SILENT: none) for the
 * process.  Any failure ends the process (inproc_need).
 */
void inproc_start(struct inproc *e, enum pl_log_level log_level,
                  const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* If !ok: says that the set-up step what failed, removes e->dir, exit(1). */
void inproc_need(struct inproc *e, int ok, const char *what);

void inproc_pump(struct inproc *e, unsigned ms);
int inproc_busy(struct inproc *e);
void inproc_drain(struct inproc *e);
unsigned long inproc_stop_frontends(struct inproc *e);
void inproc_free(struct inproc *e);
void inproc_remove_dir(struct inproc *e);

/* A front end's pl__<proto>_accept_fd (c2s.h, http_int.h). */
typedef int inproc_accept_fn(int fd, int tls_mode);

/*
 * Opens a client end: a socketpair whose one end accept takes as an
 * accepted plain connection; io is initialized on the other with cb and
 * data, watched for reading on e->loop.  Ends the process (inproc_need)
 * if either fails.  The test closes it with pl_io_stop and close.
 */
void inproc_connect(struct inproc *e, inproc_accept_fn *accept,
                    struct pl_io *io, pl_io_fn *cb, void *data);

/*
 * Appends what io's descriptor holds to buf (for cb of inproc_connect).
 * At the end of the stream, or on an error, stops io and sets *eof.
 * Returns the bytes read.
 */
size_t inproc_read(struct pl_io *io, struct pl_buf *buf, int *eof);

/*
 * Writes p[0..len) on io's descriptor, running e's loop in 1 ms slices
 * while the socket is full.  PL_OK once all is written; PL_ECLOSED if the
 * server closed first (a write fails, or *eof is set; eof may be NULL);
 * PL_EAGAIN if limit_ms passed.
 */
int inproc_write(struct inproc *e, struct pl_io *io, const char *p, size_t len,
                 const int *eof, unsigned limit_ms);

#endif
