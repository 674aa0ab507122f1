/*
 * parleyd.c - the server process: command line, start-up, signals,
 * shutdown.
 *
 *   parleyd --config FILE [--set key=value]... [--check-config]
 *   parleyd --print-default-config
 *   parleyd --help | --version      (standard output, exit 0)
 *
 * With server.processes > 1 (or "auto") it is a supervisor
 * (core/supervise.h): it runs itself again N times with --process I
 * (internal: process I of N, a node of the cluster), and passes its
 * signals on to them.
 *
 * Runs in the foreground and logs to stderr.  SIGTERM/SIGINT stop it
 * cleanly (streams closed with <system-shutdown/>, storage flushed);
 * SIGHUP reloads the configuration's limits and log level and the
 * certificates, without dropping sessions.  SIGUSR1 logs the counters
 * (stats.h) and the server-to-server links (s2s.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <openssl/rand.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/admin.h"
#include "core/alloc.h"
#include "core/config.h"
#include "core/error.h"
#include "core/host.h"
#include "core/iq.h"
#include "core/listen.h"
#include "core/log.h"
#include "core/loop.h"
#include "core/module.h"
#include "xmpp/s2s.h"
#include "core/server.h"
#include "core/stats.h"
#include "core/storage.h"
#include "core/supervise.h"
#include "core/version.h"
#include "core/work.h"

static const char *config_path;
static char **sets;
static int nsets;
static struct pl_config *config;
static struct pl_config *old_configs[64]; /* kept: modules may hold
                                            * pointers into them */
static int nold;

static void usage(FILE *f)
{
    fputs("usage: parleyd --config FILE [--set key=value]... "
          "[--check-config]\n"
          "       parleyd --print-default-config\n"
          "       parleyd --help | --version\n",
          f);
}

static int load_secret(const char *dir, unsigned char *secret)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/secret", dir);
    int fd = open(path, O_RDONLY);
    if (fd >= 0) {
        ssize_t n = read(fd, secret, 32);
        close(fd);
        if (n == 32)
            return PL_OK;
    }
    if (RAND_bytes(secret, 32) != 1)
        return PL_EIO;
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || write(fd, secret, 32) != 32) {
        pl_log_error("parleyd", "cannot write %s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return PL_EIO;
    }
    fsync(fd);
    close(fd);
    return PL_OK;
}

static void on_stop(struct pl_loop *loop, int signo, void *data)
{
    pl_log_info("parleyd", "signal %d: shutting down", signo);
    pl_loop_stop(loop);
}

static void on_reload(struct pl_loop *loop, int signo, void *data)
{
    char err[512];
    struct pl_config *c = NULL;
    if (pl_config_load(config_path, sets, nsets, &c, err, sizeof(err)) !=
        PL_OK) {
        pl_log_error("parleyd", "reload refused: %s", err);
        return;
    }
    if (c->nhosts != config->nhosts || c->nlisteners != config->nlisteners)
        pl_log_warn("parleyd", "reload: hosts and listeners change only on "
                               "restart");
    pl_log_set_level((enum pl_log_level)c->s.log_level);
    pl__hosts_reload_tls(c);
    pl__frontends_reload(c);
    pl__server_set_config(c);
    if (nold < 64)
        old_configs[nold++] = config;
    config = c;
    pl_log_info("parleyd", "configuration reloaded");
}

static void on_stats(struct pl_loop *loop, int signo, void *data)
{
    pl_log_info("parleyd", "counters follow (SIGUSR1)");
    pl_stats_print(stderr);
    struct pl_buf b = {0};
    pl_s2s_links_json(&b);
    if (b.len > 2) /* not "[]" */
        pl_log_info("parleyd", "s2s links: %.*s", (int)b.len, b.data + b.off);
    pl_buf_reset(&b);
    fflush(stderr);
}

/*
 * Shutdown drain: streams are closing; their last work (unavailable
 * presence, storage jobs and their completions) must finish before storage
 * closes.  Stops after two quiet ticks in a row, or after 5 s.
 */
struct drain {
    int rounds; /* ticks so far */
    int quiet;  /* consecutive ticks with nothing left */
};

static void on_drain(struct pl_timer *t)
{
    struct drain *d = t->data;
    /* Lingering sockets too: the clients read their stream's end. */
    int idle = pl__frontends_count() == 0 && pl_storage_pending() == 0 &&
               pl_workq_pending(pl_server_cpu()) == 0 &&
               pl_loop_lingering(t->loop) == 0;
    d->quiet = idle ? d->quiet + 1 : 0;
    if (d->quiet >= 2 || ++d->rounds > 50)
        pl_loop_stop(t->loop);
    else
        pl_timer_start(t->loop, t, 100);
}

int main(int argc, char **argv)
{
    int check = 0, process = -1;
    sets = pl_calloc((size_t)argc, sizeof(char *));
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--process") == 0 && i + 1 < argc) {
            char *end;
            long v = strtol(argv[++i], &end, 10);
            if (*end || v < 0 || v >= 1024) {
                usage(stderr);
                return 2;
            }
            process = (int)v;
        } else if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
            config_path = argv[++i];
        } else if (strcmp(argv[i], "--set") == 0 && i + 1 < argc) {
            sets[nsets++] = argv[++i];
        } else if (strcmp(argv[i], "--check-config") == 0) {
            check = 1;
        } else if (strcmp(argv[i], "--print-default-config") == 0) {
            pl_config_print_default(stdout);
            pl_module_print_options(stdout);
            return 0;
        } else if (strcmp(argv[i], "--version") == 0) {
            puts("parleyd " PL_VERSION);
            return 0;
        } else if (strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
    }
    char err[512];
    pl__config_set_process(process);
    pl_log_set_process(process);
    if (pl_config_load(config_path, sets, nsets, &config, err, sizeof(err)) !=
        PL_OK) {
        fprintf(stderr, "parleyd: %s\n", err);
        return 1;
    }
    pl_log_set_level((enum pl_log_level)config->s.log_level);
    if (check) {
        if (pl__hosts_check(config, err, sizeof(err)) != PL_OK) {
            fprintf(stderr, "parleyd: %s\n", err);
            return 1;
        }
        printf("configuration OK: %d hosts, %d listeners\n", config->nhosts,
               config->nlisteners);
        return 0;
    }
    if (process < 0 && config->s.processes > 1) {
        /* The supervisor: the secret (fake SCRAM salts) is made once, for
         * every process to read the same. */
        mkdir(config->s.data_dir, 0700);
        unsigned char secret[32];
        int rc = load_secret(config->s.data_dir, secret) != PL_OK
                     ? 1
                     : pl_supervise(config, argc, argv);
        pl_config_free(config);
        pl_free(sets);
        return rc;
    }
    signal(SIGPIPE, SIG_IGN);
    /* Block the signals we handle before any thread starts, so that they
     * reach the loop's signalfd and never a worker thread. */
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGHUP);
    sigaddset(&mask, SIGUSR1);
    /* A cluster node's: drain (SIGUSR2), stop accepting (from the
     * supervisor); src/cluster/cluster.c handles them. */
    sigaddset(&mask, SIGUSR2);
    sigaddset(&mask, PL_SIG_QUIESCE);
    pthread_sigmask(SIG_BLOCK, &mask, NULL);
    mkdir(config->s.data_dir, 0700);
    unsigned char secret[32];
    if (load_secret(config->s.data_dir, secret) != PL_OK)
        return 1;
    struct pl_loop *loop;
    if (pl_loop_new(&loop) != PL_OK)
        return 1;
    struct pl_workq *cpu = pl_workq_new("cpu", (int)config->s.workers, NULL,
                                        NULL);
    pl__server_set(loop, config, cpu, secret);
    int rc = 1;
    if (pl__storage_open(&config->s) != PL_OK)
        goto out;
    if (pl__hosts_check(config, err, sizeof(err)) != PL_OK) {
        pl_log_error("parleyd", "%s", err);
        goto out;
    }
    /* A cluster: every node signs and verifies with one secret (dialback
     * keys, upload slots...), the one in the shared storage.  Never go on
     * with this node's own: its signatures would fail on the others. */
    if (pl__frontends_shared_secret(config) &&
        pl__server_share_secret() != PL_OK) {
        pl_log_error("parleyd",
                     "cannot read or store the cluster's server "
                     "secret in the storage (%s); not starting",
                     config->s.storage_driver);
        goto out;
    }
    if (pl__hosts_init(config) != PL_OK)
        goto out;
    pl_loop_on_signal(loop, SIGTERM, on_stop, NULL);
    pl_loop_on_signal(loop, SIGINT, on_stop, NULL);
    pl_loop_on_signal(loop, SIGHUP, on_reload, NULL);
    pl_loop_on_signal(loop, SIGUSR1, on_stats, NULL);
    int admin = 0;
    if (pl__frontends_start(config) != PL_OK)
        goto settle;
    admin = strcmp(config->s.admin_socket, "off") != 0;
    if (admin && pl_admin_open(config->s.admin_socket) != PL_OK) {
        admin = 0;
        goto settle;
    }
    pl_log_info("parleyd", "ready (pid %d)", (int)getpid());
    pl_loop_run(loop);
    rc = 0;
    /* Shutdown: end every stream, give them a moment to flush.  A start
     * that failed once the hosts had loaded comes here too: what they
     * asked of the storage (sm recovery, rooms) finishes and is answered
     * before they are freed. */
settle:
    if (admin)
        pl_admin_close();
    if (rc == 0)
        pl__frontends_stop();
    pl__iq_shutdown(); /* waiting requests get their NULL answer */
    struct pl_timer drain;
    struct drain dstate = {0, 0};
    pl_timer_init(&drain, on_drain, &dstate);
    pl_timer_start(loop, &drain, 0);
    pl_loop_run(loop);
out:
    pl__frontends_free();
    pl__storage_close();
    pl_workq_free(cpu);
    pl__hosts_free();
    pl_loop_free(loop);
    pl_log_info("parleyd", "stopped");
    for (int i = 0; i < nold; i++)
        pl_config_free(old_configs[i]);
    pl_config_free(config);
    pl_free(sets);
    return rc;
}
