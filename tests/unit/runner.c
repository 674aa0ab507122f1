/*
 * runner.c - runs the unit tests of list.h, each in its own process with a
 * timeout (as libuv test/runner.c).  Usage: runner [name-substring...]
 * Prints "ok <name>" / "FAIL <name>" and ends with "N passed, N failed".
 *
 * A test process ends with _exit (no atexit handlers of the code under
 * test), which would skip LeakSanitizer: in an ASan build each test runs
 * the leak check itself first, and a leak fails it.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "unit.h"

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNIT_LSAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) && !defined(UNIT_LSAN)
#define UNIT_LSAN 1
#endif
#ifdef UNIT_LSAN
#include <sanitizer/lsan_interface.h>
#endif

/* UNIT_LIST lets a developer build a runner for a subset. */
#ifndef UNIT_LIST
#define UNIT_LIST "list.h"
#endif

int unit_failures;

#define TEST(name) void test_##name(void);
#include UNIT_LIST
#undef TEST

struct test {
    const char *name;
    void (*fn)(void);
};

static const struct test tests[] = {
#define TEST(name) {#name, test_##name},
#include UNIT_LIST
#undef TEST
};

static int selected(const char *name, int argc, char **argv)
{
    if (argc < 2)
        return 1;
    for (int i = 1; i < argc; i++)
        if (strstr(name, argv[i]))
            return 1;
    return 0;
}

int main(int argc, char **argv)
{
    int passed = 0, failed = 0;
    unsigned timeout = getenv("UNIT_TIMEOUT")
                           ? (unsigned)atoi(getenv("UNIT_TIMEOUT"))
                           : 60;
    for (size_t i = 0; i < sizeof(tests) / sizeof(tests[0]); i++) {
        if (!selected(tests[i].name, argc, argv))
            continue;
        fflush(stdout);
        pid_t pid = fork();
        if (pid == 0) {
            alarm(timeout);
            tests[i].fn();
#ifdef UNIT_LSAN
            /* Non-zero when leaks were found (and detect_leaks is on);
             * the report is on stderr. */
            if (__lsan_do_recoverable_leak_check()) {
                fprintf(stderr, "  %s: memory leaked (report above)\n",
                        tests[i].name);
                unit_failures++;
            }
#endif
            fflush(stderr);
            _exit(unit_failures ? 1 : 0);
        }
        int status = 0;
        waitpid(pid, &status, 0);
        if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
            printf("ok %s\n", tests[i].name);
            passed++;
        } else {
            if (WIFSIGNALED(status))
                printf("FAIL %s (signal %d%s)\n", tests[i].name,
                       WTERMSIG(status),
                       WTERMSIG(status) == SIGALRM ? ", timeout" : "");
            else
                printf("FAIL %s\n", tests[i].name);
            failed++;
        }
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
