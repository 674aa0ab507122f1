/*
 * supervise.c - the supervisor of server.processes; see supervise.h.
 *
 * One thread, no event loop: the signals it handles are blocked and taken
 * with sigtimedwait(), SIGCHLD included, with a timeout that is the next
 * restart (or the stop deadline).  Each child is the same program run
 * again with --process I (exec, not a bare fork: a fresh process that
 * loads the configuration as a single parleyd does, and reloads it the
 * same way on SIGHUP).
 *
 * A rolling restart (SIGUSR2) runs a second generation in the other half
 * of 2N slots: the processes say when they are ready (PL_SIG_READY, with
 * their pid in the siginfo), then the old ones are quiesced and drained
 * one at a time (doc/cluster.md, "Draining and rolling restarts").
 */
#include "supervise.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "error.h"
#include "log.h"
#include "tls.h"

struct child {
    pid_t pid;           /* 0: not running */
    uint64_t started;    /* ms, monotonic */
    uint64_t restart_at; /* ms, when pid is 0 and not stopping */
    long delay;          /* ms before the next restart */
    int ready;           /* said PL_SIG_READY since its start */
    int active;          /* its slot is run (restarted when it dies) */
};

/* A rolling restart (SIGUSR2): the new generation starts in the other
 * half of the slots; once every new process is ready, the old ones stop
 * accepting, then are drained one at a time. */
enum roll {
    ROLL_NONE,
    ROLL_STARTING, /* new processes starting, old ones serving */
    ROLL_DRAINING, /* old ones closed; one of them draining at a time */
};

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* The certificates a single parleyd would make at its start: made once
 * here, so that the processes do not each write their own. */
static int prepare(const struct pl_config *c)
{
    size_t dl = strlen(c->s.data_dir);
    for (int i = 0; i < c->nhosts; i++) {
        const struct pl_host_conf *h = &c->hosts[i];
        if (strncmp(h->certificate, c->s.data_dir, dl) != 0 ||
            access(h->certificate, R_OK) == 0)
            continue;
        if (pl_tls_ensure_selfsigned(h->domain, h->certificate, h->key) !=
            PL_OK) {
            pl_log_error("supervise", "%s: cannot create a certificate",
                         h->domain);
            return PL_ETLS;
        }
    }
    return PL_OK;
}

static pid_t spawn(const char *exe, char **args, const sigset_t *old,
                   pid_t self)
{
    pid_t pid = fork();
    if (pid != 0)
        return pid; /* the child's pid, or -1 */
    /* The child: ends with the supervisor (even a SIGKILLed one). */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != self)
        _exit(1);
    sigprocmask(SIG_SETMASK, old, NULL);
    /* Who to signal (pl_supervisor_pid): never a parent that is not us. */
    char v[24];
    snprintf(v, sizeof(v), "%d", (int)self);
    setenv("PARLEY_SUPERVISOR", v, 1);
    execv(exe, args);
    fprintf(stderr, "parleyd: cannot run %s: %s\n", exe, strerror(errno));
    _exit(127);
}

static void send_all(struct child *k, int n, int signo)
{
    for (int i = 0; i < n; i++)
        if (k[i].pid > 0)
            kill(k[i].pid, signo);
}

pid_t pl_supervisor_pid(void)
{
    const char *e = getenv("PARLEY_SUPERVISOR");
    pid_t parent = getppid();
    if (pl_config_process() < 0 || !e || parent <= 1 ||
        strtol(e, NULL, 10) != (long)parent)
        return 0;
    return parent;
}

void pl_supervise_ready(void)
{
    pid_t sup = pl_supervisor_pid();
    if (sup)
        kill(sup, PL_SIG_READY);
}

/* The first old process still running (to drain next), or -1. */
static int next_old(const struct child *k, int from, int n)
{
    for (int i = from; i < from + n; i++)
        if (k[i].pid > 0)
            return i;
    return -1;
}

int pl_supervise(const struct pl_config *c, int argc, char **argv)
{
    int n = (int)c->s.processes;
    int slots = 2 * n; /* two generations during a rolling restart */
    char exe[PATH_MAX];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (len <= 0) {
        pl_log_error("supervise", "cannot find this program: %s",
                     strerror(errno));
        return 1;
    }
    exe[len] = '\0';
    if (prepare(c) != PL_OK)
        return 1;
    sigset_t mask, old;
    sigemptyset(&mask);
    int sigs[] = {SIGTERM, SIGINT,  SIGHUP,      SIGUSR1,
                  SIGUSR2, SIGCHLD, PL_SIG_READY};
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
        sigaddset(&mask, sigs[i]);
    sigprocmask(SIG_BLOCK, &mask, &old);
    /* Unblocked in the children: parleyd blocks what it handles itself. */
    sigset_t child_mask = old;
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
        sigdelset(&child_mask, sigs[i]);
    /* argv + "--process" I NULL, one vector per slot. */
    char ***args = pl_calloc((size_t)slots, sizeof(char **));
    for (int i = 0; i < slots; i++) {
        args[i] = pl_calloc((size_t)argc + 3, sizeof(char *));
        for (int a = 0; a < argc; a++)
            args[i][a] = argv[a];
        args[i][argc] = "--process";
        args[i][argc + 1] = pl_malloc(16);
        snprintf(args[i][argc + 1], 16, "%d", i);
    }
    struct child *k = pl_calloc((size_t)slots, sizeof(*k));
    pid_t self = getpid();
    uint64_t t = now_ms();
    for (int i = 0; i < n; i++) {
        k[i].delay = c->s.restart_delay;
        k[i].restart_at = t; /* started by the first pass below */
        k[i].active = 1;
    }
    pl_log_info("supervise", "supervisor (pid %d): %d processes%s", (int)self,
                n, c->s.processes_auto ? " (one per core)" : "");
    int stopping = 0, killed = 0;
    uint64_t deadline = 0;
    enum roll roll = ROLL_NONE;
    int base = 0;      /* first slot of the serving generation */
    int draining = -1; /* the old slot being drained */
    for (;;) {
        int alive = 0;
        /* Reap. */
        int status;
        pid_t pid;
        while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
            for (int i = 0; i < slots; i++) {
                if (k[i].pid != pid)
                    continue;
                int was_ready = k[i].ready;
                k[i].pid = 0;
                k[i].ready = 0;
                t = now_ms();
                if (WIFSIGNALED(status))
                    pl_log_warn("supervise",
                                "process %d (pid %d) killed by signal %d", i,
                                (int)pid, WTERMSIG(status));
                else
                    pl_log_info("supervise",
                                "process %d (pid %d) exited with status %d", i,
                                (int)pid, WEXITSTATUS(status));
                if (stopping || !k[i].active)
                    break;
                int fresh = roll != ROLL_NONE && (i < base || i >= base + n);
                if (roll == ROLL_STARTING && fresh && !was_ready) {
                    /* A new process that cannot start (a bad binary or
                     * configuration): the old generation keeps serving. */
                    pl_log_error("supervise",
                                 "rolling restart abandoned: process %d "
                                 "died before it was ready; the old "
                                 "processes keep serving",
                                 i);
                    for (int j = 0; j < slots; j++)
                        if (j < base || j >= base + n) {
                            k[j].active = 0;
                            if (k[j].pid > 0)
                                kill(k[j].pid, SIGTERM);
                        }
                    roll = ROLL_NONE;
                    break;
                }
                /* Healthy for a while: the next restart is prompt. */
                if (t - k[i].started >= (uint64_t)c->s.restart_delay_max)
                    k[i].delay = c->s.restart_delay;
                k[i].restart_at = t + (uint64_t)k[i].delay;
                pl_log_info("supervise", "process %d restarts in %ld ms", i,
                            k[i].delay);
                k[i].delay = k[i].delay * 2 > c->s.restart_delay_max
                                 ? c->s.restart_delay_max
                                 : k[i].delay * 2;
                break;
            }
        }
        /* Draining the old generation, one process at a time. */
        if (roll == ROLL_DRAINING && !stopping &&
            (draining < 0 || k[draining].pid == 0)) {
            draining = next_old(k, base, n);
            if (draining < 0) {
                base = base ? 0 : n;
                roll = ROLL_NONE;
                pl_log_info("supervise",
                            "rolling restart done: processes %d to %d serve",
                            base, base + n - 1);
            } else {
                pl_log_info("supervise", "draining process %d (pid %d)",
                            draining, (int)k[draining].pid);
                kill(k[draining].pid, SIGUSR2);
            }
        }
        t = now_ms();
        uint64_t next = t + 1000; /* wake up at least each second */
        for (int i = 0; i < slots; i++) {
            if (k[i].active && !k[i].pid && !stopping && k[i].restart_at <= t) {
                k[i].pid = spawn(exe, args[i], &child_mask, self);
                k[i].started = t;
                k[i].ready = 0;
                if (k[i].pid < 0) {
                    pl_log_error("supervise", "fork: %s", strerror(errno));
                    k[i].pid = 0;
                    k[i].restart_at = t + (uint64_t)k[i].delay;
                } else {
                    pl_log_info("supervise", "process %d started (pid %d)", i,
                                (int)k[i].pid);
                }
            }
            if (k[i].pid)
                alive++;
            else if (k[i].active && !stopping && k[i].restart_at < next)
                next = k[i].restart_at;
        }
        if (stopping && !alive)
            break;
        if (stopping && !killed && t >= deadline) {
            pl_log_warn("supervise",
                        "processes still running after %ld s: "
                        "killed",
                        c->s.stop_timeout);
            send_all(k, slots, SIGKILL);
            killed = 1;
        }
        if (stopping && !killed && deadline < next)
            next = deadline;
        uint64_t wait = next > t ? next - t : 0;
        struct timespec ts = {(time_t)(wait / 1000),
                              (long)(wait % 1000) * 1000000};
        siginfo_t si;
        memset(&si, 0, sizeof(si));
        int signo = sigtimedwait(&mask, &si, &ts);
        if (signo == PL_SIG_READY) {
            for (int i = 0; i < slots; i++)
                if (k[i].pid > 0 && k[i].pid == si.si_pid && !k[i].ready) {
                    k[i].ready = 1;
                    pl_log_info("supervise", "process %d (pid %d) is ready", i,
                                (int)k[i].pid);
                }
            if (roll != ROLL_STARTING || stopping)
                continue;
            int fresh = base ? 0 : n, all = 1;
            for (int i = fresh; i < fresh + n; i++)
                all &= k[i].ready;
            if (!all)
                continue;
            /* Every new process is ready: the old ones stop accepting
             * (new connections go to the new ones only), then drain. */
            pl_log_info("supervise",
                        "new processes %d to %d ready: processes %d to %d "
                        "stop accepting, then drain one at a time",
                        fresh, fresh + n - 1, base, base + n - 1);
            for (int i = base; i < base + n; i++) {
                k[i].active = 0; /* not restarted any more */
                if (k[i].pid > 0)
                    kill(k[i].pid, PL_SIG_QUIESCE);
            }
            roll = ROLL_DRAINING;
            draining = -1;
            continue;
        }
        switch (signo) {
        case SIGTERM:
        case SIGINT:
            pl_log_info("supervise", "signal %d: stopping %d processes", signo,
                        alive);
            if (!stopping)
                deadline = now_ms() + (uint64_t)c->s.stop_timeout * 1000;
            stopping = 1;
            send_all(k, slots, SIGTERM);
            break;
        case SIGUSR2:
            if (stopping || roll != ROLL_NONE) {
                pl_log_warn("supervise", "SIGUSR2: a rolling restart is %s",
                            stopping ? "not done while stopping"
                                     : "under way already");
                break;
            }
            {
                int fresh = base ? 0 : n;
                t = now_ms();
                for (int i = fresh; i < fresh + n; i++) {
                    k[i].active = 1;
                    k[i].ready = 0;
                    k[i].delay = c->s.restart_delay;
                    k[i].restart_at = t;
                }
                roll = ROLL_STARTING;
                pl_log_info("supervise",
                            "SIGUSR2: rolling restart: starting processes "
                            "%d to %d",
                            fresh, fresh + n - 1);
            }
            break;
        case SIGHUP:
        case SIGUSR1: send_all(k, slots, signo); break;
        default: /* SIGCHLD, or the timeout: reaped and restarted above */
            break;
        }
    }
    for (int i = 0; i < slots; i++) {
        pl_free(args[i][argc + 1]);
        pl_free(args[i]);
    }
    pl_free(args);
    pl_free(k);
    sigprocmask(SIG_SETMASK, &old, NULL);
    pl_log_info("supervise", "stopped");
    return 0;
}
