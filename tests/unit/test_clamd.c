/*
 * test_clamd.c - the clamd client (src/core/clamd.c) against a fake
 * clamd on a Unix socket in a thread: the INSTREAM framing (the command,
 * chunks of at most 256 KiB with their length, the zero length at the
 * end) reassembled into the bytes sent, from memory and from a file;
 * the answers OK, FOUND and anything else; nobody listening.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <arpa/inet.h>

#include "../../src/core/clamd.h"
#include "../../src/core/error.h"
#include "unit.h"

struct fake {
    int lfd;            /* listening */
    const char *answer; /* NULL: OK unless the data holds "EVIL" */
    unsigned char *got; /* the bytes reassembled */
    size_t n;           /* their count */
    size_t max_chunk;   /* the largest chunk seen */
    int framing_ok;     /* the command, then well-formed chunks */
};

static int read_all(int fd, void *p, size_t n)
{
    unsigned char *b = p;
    while (n) {
        ssize_t k = read(fd, b, n);
        if (k <= 0)
            return -1;
        b += k;
        n -= (size_t)k;
    }
    return 0;
}

static void *serve(void *arg)
{
    struct fake *f = arg;
    int fd = accept(f->lfd, NULL, NULL);
    if (fd < 0)
        return NULL;
    char cmd[10];
    f->framing_ok = read_all(fd, cmd, sizeof(cmd)) == 0 &&
                    memcmp(cmd, "zINSTREAM", 10) == 0;
    for (;;) {
        uint32_t be;
        if (!f->framing_ok || read_all(fd, &be, 4) != 0) {
            f->framing_ok = 0;
            break;
        }
        size_t len = ntohl(be);
        if (len == 0)
            break;
        if (len > f->max_chunk)
            f->max_chunk = len;
        f->got = realloc(f->got, f->n + len);
        if (read_all(fd, f->got + f->n, len) != 0) {
            f->framing_ok = 0;
            break;
        }
        f->n += len;
    }
    const char *a = f->answer;
    if (!a)
        a = f->n >= 4 && memmem(f->got, f->n, "EVIL", 4)
                ? "stream: Fake.Sig FOUND"
                : "stream: OK";
    ssize_t w = write(fd, a, strlen(a) + 1);
    (void)w;
    close(fd);
    return NULL;
}

/* Runs one scan of data (or of the file fd when fd >= 0) against a fake
 * answering answer; returns the client's result. */
static int scan_with(struct fake *f, const char *path, const void *data,
                     size_t n, int fd, char *virus, size_t vlen)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    unlink(path);
    f->lfd = socket(AF_UNIX, SOCK_STREAM, 0);
    CHECK(bind(f->lfd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
    CHECK(listen(f->lfd, 1) == 0);
    pthread_t t;
    pthread_create(&t, NULL, serve, f);
    int rc = fd >= 0 ? pl_clamd_scan_fd(path, fd, 5, virus, vlen)
                     : pl_clamd_scan_mem(path, data, n, 5, virus, vlen);
    pthread_join(t, NULL);
    close(f->lfd);
    unlink(path);
    return rc;
}

void test_clamd_instream(void)
{
    char path[64], virus[128];
    snprintf(path, sizeof(path), "/tmp/parley-unit-clamd-%d", (int)getpid());
    struct fake f = {0};
    CHECK_INT(scan_with(&f, path, "hello", 5, -1, virus, sizeof(virus)), PL_OK);
    CHECK(f.framing_ok && f.n == 5 && memcmp(f.got, "hello", 5) == 0);
    free(f.got);

    /* 600 KiB: three chunks, none over 256 KiB, reassembled exactly. */
    size_t big = 600 * 1024;
    unsigned char *b = malloc(big);
    for (size_t i = 0; i < big; i++)
        b[i] = (unsigned char)(i * 7 + 3);
    memcpy(b + big - 10, "EVIL", 4);
    f = (struct fake){0};
    CHECK_INT(scan_with(&f, path, b, big, -1, virus, sizeof(virus)),
              PL_EFORBIDDEN);
    CHECK_STR(virus, "Fake.Sig");
    CHECK(f.framing_ok && f.n == big && memcmp(f.got, b, big) == 0);
    CHECK(f.max_chunk == 256 * 1024);
    free(f.got);

    /* The same from a file (pread from offset 0, whatever the offset). */
    char tmpl[] = "/tmp/parley-unit-clamd-file-XXXXXX";
    int fd = mkstemp(tmpl);
    CHECK(fd >= 0 && write(fd, b, big) == (ssize_t)big);
    f = (struct fake){0};
    CHECK_INT(scan_with(&f, path, NULL, 0, fd, virus, sizeof(virus)),
              PL_EFORBIDDEN);
    CHECK(f.framing_ok && f.n == big && memcmp(f.got, b, big) == 0);
    free(f.got);
    close(fd);
    unlink(tmpl);
    free(b);

    /* Nothing at all is a stream too (just the end marker). */
    f = (struct fake){0};
    CHECK_INT(scan_with(&f, path, "", 0, -1, virus, sizeof(virus)), PL_OK);
    CHECK(f.framing_ok && f.n == 0);

    /* Anything but OK or FOUND: an error, with clamd's words. */
    f = (struct fake){.answer = "INSTREAM size limit exceeded. ERROR"};
    CHECK_INT(scan_with(&f, path, "x", 1, -1, virus, sizeof(virus)), PL_EIO);
    CHECK_STR(virus, "clamd: INSTREAM size limit exceeded. ERROR");
    free(f.got);

    /* Nobody there. */
    CHECK_INT(pl_clamd_scan_mem(path, "x", 1, 1, virus, sizeof(virus)), PL_EIO);
    CHECK(strstr(virus, "unreachable") != NULL);
    CHECK_INT(pl_clamd_scan_mem("127.0.0.1:1", "x", 1, 1, virus, sizeof(virus)),
              PL_EIO);
    CHECK_INT(pl_clamd_scan_mem("no-port", "x", 1, 1, virus, sizeof(virus)),
              PL_EIO);
}
