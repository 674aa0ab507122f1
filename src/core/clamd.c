/*
 * clamd.c - virus scanning through clamd's INSTREAM command (clamd(8),
 * "zINSTREAM"; API in clamd.h): the data goes in chunks, each a 4-byte
 * length in network order and the bytes, ended by a zero length; clamd
 * answers "stream: OK" or "stream: <signature> FOUND".  A blocking
 * client with timeouts, for worker threads: the upload service's
 * (src/http/upload.c) and parley-gateway's content checks
 * (src/gateway/check.c); a loop never calls it.
 *
 * clamd refuses streams over its StreamMaxLength (25 MiB by default):
 * its configuration must allow upload.max_file_size (doc/upload.md) and
 * the gateway's mail.max_size (doc/gateway.md).
 *
 * Extending: another clamd command is another request line; keep the
 * "z" (NUL-terminated) form.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "alloc.h"
#include "clamd.h"
#include "error.h"

#define CHUNK (256 * 1024)

static int dial(const char *addr, int timeout_s)
{
    struct timeval tv = {timeout_s, 0};
    int fd = -1;
    if (addr[0] == '/') {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        if (strlen(addr) >= sizeof(sa.sun_path))
            return -1;
        strcpy(sa.sun_path, addr);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            return -1;
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
            close(fd);
            return -1;
        }
        return fd;
    }
    char host[256];
    const char *colon = strrchr(addr, ':');
    if (!colon || (size_t)(colon - addr) >= sizeof(host))
        return -1;
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = '\0';
    if (host[0] == '[' && host[strlen(host) - 1] == ']') {
        memmove(host, host + 1, strlen(host));
        host[strlen(host) - 1] = '\0';
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res, *ai;
    if (getaddrinfo(host, colon + 1, &hints, &res) != 0)
        return -1;
    for (ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            continue;
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
            break;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    return fd;
}

static int send_all(int fd, const void *p, size_t n)
{
    const char *b = p;
    while (n) {
        ssize_t k = send(fd, b, n, MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return PL_EIO;
        b += k;
        n -= (size_t)k;
    }
    return PL_OK;
}

/* Where the bytes come from: a file (pread) or memory. */
struct source {
    int fd;        /* the file, or -1 */
    const char *p; /* memory when fd < 0 */
    size_t n;      /* its length */
};

/* Up to max bytes at off into buf: the count, 0 at the end, -1 on error. */
static ssize_t take(const struct source *src, off_t off, char *buf, size_t max)
{
    if (src->fd < 0) {
        size_t left = (size_t)off < src->n ? src->n - (size_t)off : 0;
        size_t k = left < max ? left : max;
        memcpy(buf, src->p + off, k);
        return (ssize_t)k;
    }
    for (;;) {
        ssize_t n = pread(src->fd, buf, max, off);
        if (n < 0 && errno == EINTR)
            continue;
        return n;
    }
}

static int scan(const char *addr, const struct source *src, int timeout_s,
                char *virus, size_t len)
{
    static const char cmd[] = "zINSTREAM";
    char reply[512];
    size_t got = 0;
    int rc = PL_EIO;
    snprintf(virus, len, "clamd at %s unreachable", addr);
    int fd = dial(addr, timeout_s > 0 ? timeout_s : 1);
    if (fd < 0)
        return PL_EIO;
    char *buf = pl_malloc(CHUNK + 4);
    off_t off = 0;
    if (send_all(fd, cmd, sizeof(cmd)) != PL_OK)
        goto out;
    for (;;) {
        ssize_t n = take(src, off, buf + 4, CHUNK);
        if (n < 0) {
            snprintf(virus, len, "cannot read the data to scan");
            goto out;
        }
        uint32_t be = htonl((uint32_t)n);
        memcpy(buf, &be, 4);
        if (send_all(fd, buf, (size_t)n + 4) != PL_OK)
            break; /* clamd may have answered (size limit): read it */
        if (n == 0)
            break;
        off += n;
    }
    while (got < sizeof(reply) - 1) {
        ssize_t n = recv(fd, reply + got, sizeof(reply) - 1 - got, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
        if (memchr(reply, '\0', got))
            break;
    }
    reply[got] = '\0';
    size_t rl = strlen(reply);
    while (rl && (reply[rl - 1] == '\n' || reply[rl - 1] == '\r'))
        reply[--rl] = '\0';
    const char *v = strncmp(reply, "stream: ", 8) == 0 ? reply + 8 : reply;
    if (strcmp(v, "OK") == 0) {
        rc = PL_OK;
    } else if (rl > 6 && strcmp(reply + rl - 6, " FOUND") == 0) {
        snprintf(virus, len, "%.*s", (int)(strlen(v) - 6), v);
        rc = PL_EFORBIDDEN;
    } else {
        snprintf(virus, len, "clamd: %s", got ? reply : "no answer");
    }
out:
    pl_free(buf);
    close(fd);
    return rc;
}

int pl_clamd_scan_fd(const char *addr, int fd, int timeout_s, char *virus,
                     size_t len)
{
    struct source src = {fd, NULL, 0};
    return scan(addr, &src, timeout_s, virus, len);
}

int pl_clamd_scan_mem(const char *addr, const void *p, size_t n, int timeout_s,
                      char *virus, size_t len)
{
    struct source src = {-1, p, n};
    return scan(addr, &src, timeout_s, virus, len);
}
