/*
 * test_random.c - pl_random (random.h): bytes differ from call to call,
 * across a refill of the per-thread buffer and in a forked child, which
 * never gets the parent's next bytes.
 */
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "random.h"
#include "unit.h"

void test_random_bytes(void)
{
    unsigned char a[32], b[32], zero[32] = {0};
    pl_random(a, sizeof(a));
    for (int i = 0; i < 100; i++) { /* past a refill of the buffer */
        pl_random(b, sizeof(b));
        CHECK(memcmp(a, b, sizeof(a)) != 0);
        CHECK(memcmp(b, zero, sizeof(b)) != 0);
    }
    unsigned char big[2048];
    pl_random(big, sizeof(big)); /* larger than the buffer */
    CHECK(memcmp(big, big + 1024, 32) != 0);

    /* Parent and child after a fork: different bytes. */
    pl_random(a, 8); /* the buffer holds unused bytes now */
    int p[2];
    CHECK(pipe(p) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        unsigned char c[32];
        pl_random(c, sizeof(c));
        _exit(write(p[1], c, sizeof(c)) == (ssize_t)sizeof(c) ? 0 : 1);
    }
    CHECK(pid > 0);
    unsigned char child[32];
    CHECK(read(p[0], child, sizeof(child)) == (ssize_t)sizeof(child));
    pl_random(b, sizeof(b));
    CHECK(memcmp(child, b, sizeof(b)) != 0);
    int st;
    CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0);
    close(p[0]);
    close(p[1]);
}
