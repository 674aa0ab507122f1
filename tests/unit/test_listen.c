/*
 * test_listen.c - listeners (listen.h): the entries' checks against the
 * front ends' protocols (unknown protocol named with the ones there are,
 * a transport the protocol does not serve, TLS over UDP, default
 * protocol and port), and the datagram path with a protocol of the
 * test's own: a datagram on a UDP entry reaches the provider with its
 * source, the provider's answer with pl_listen_sendto reaches the sender,
 * and a closed entry receives nothing more; held entries (pl_listen_hold)
 * have no socket until pl_listen_release, none after pl_listen_close_all.
 *
 * Extending: a new entry check is a row of check_rows; a new datagram case
 * opens its own entry with open_udp_entry().
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "alloc.h"
#include "config.h"
#include "error.h"
#include "listen.h"
#include "loop.h"
#include "server.h"
#include "unit.h"

/* ---- entries checked at load ---- */

static int load(const char *listeners, struct pl_config **out, char *err,
                size_t errlen)
{
    char set[512];
    snprintf(set, sizeof(set), "listeners=%s", listeners);
    char *sets[] = {set};
    return pl_config_load(NULL, sets, 1, out, err, errlen);
}

void test_listen_check(void)
{
    static const struct {
        const char *listeners; /* the listeners list */
        int rc;                /* expected from pl_config_load */
        const char *needle;    /* in the error, or NULL */
    } rows[] = {
        {"({ protocol = \"c2s\"; port = 5222; })", PL_OK, NULL},
        {"({ protocol = \"component\"; port = 5347; })", PL_OK, NULL},
        {"({ protocol = \"sipx\"; port = 5060; })", PL_EINVAL,
         "unknown listener protocol 'sipx' (available: c2s, s2s, component"},
        {"({ protocol = \"c2s\"; port = 5222; transport = \"udp\"; })",
         PL_EINVAL, "protocol c2s is not served over udp"},
        {"({ protocol = \"c2s\"; port = 5222; transport = \"sctp\"; })",
         PL_EINVAL, "transport must be tcp or udp"},
        {"({ protocol = \"c2s\"; port = 70000; })", PL_EINVAL,
         "needs a port 0-65535"},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        struct pl_config *c = NULL;
        char err[512] = "";
        int rc = load(rows[i].listeners, &c, err, sizeof(err));
        CHECK_INT(rc, rows[i].rc);
        if (rows[i].needle && !strstr(err, rows[i].needle)) {
            fprintf(stderr, "  row %zu: '%s' lacks '%s'\n", i, err,
                    rows[i].needle);
            CHECK(0);
        }
        pl_config_free(c);
    }
    /* No protocol: the first that listens by default (c2s); no port: the
     * protocol's own. */
    struct pl_config *c = NULL;
    char err[512];
    CHECK_INT(load("({ address = \"127.0.0.1\"; }, { protocol = "
                   "\"component\"; })",
                   &c, err, sizeof(err)),
              PL_OK);
    if (c) {
        CHECK_STR(c->listeners[0].protocol, "c2s");
        CHECK_INT(c->listeners[0].port, 5222);
        CHECK_INT(c->listeners[1].port, 5347);
        pl_config_free(c);
    }
}

/* ---- datagrams ---- */

static struct {
    struct pl_loop *loop;
    int got;       /* datagrams the provider saw */
    char last[64]; /* the last one's bytes */
    int from_port; /* and its source port */
} D;

static void on_datagram(struct pl_listen *l, char *p, size_t n,
                        const struct sockaddr_storage *from, socklen_t fromlen)
{
    D.got++;
    snprintf(D.last, sizeof(D.last), "%.*s", (int)n, p);
    D.from_port = ntohs(((const struct sockaddr_in *)from)->sin_port);
    char reply[80];
    int len = snprintf(reply, sizeof(reply), "pong:%.*s", (int)n, p);
    pl_listen_sendto(l, reply, (size_t)len, from, fromlen);
    pl_loop_stop(D.loop);
}

static const struct pl_protocol echo_protocol = {
    .name = "test-echo",
    .summary = "answers each datagram",
    .transports = PL_TRANSPORT_UDP,
    .datagram = on_datagram,
};

static void on_deadline(struct pl_timer *t)
{
    pl_loop_stop(t->loop);
}

/* Runs the loop until a datagram arrives or ms pass. */
static void run_for(int ms)
{
    struct pl_timer t;
    pl_timer_init(&t, on_deadline, NULL);
    pl_timer_start(D.loop, &t, (uint64_t)ms);
    pl_loop_run(D.loop);
    pl_timer_stop(&t);
}

static int open_udp_entry(struct pl_listen *l, struct pl_listener_conf *lc)
{
    memset(l, 0, sizeof(*l));
    memset(lc, 0, sizeof(*lc));
    lc->protocol = (char *)"test-echo";
    lc->address = (char *)"127.0.0.1";
    lc->port = 0; /* any: pl_listen_port tells */
    lc->transport = PL_TRANSPORT_UDP;
    lc->max_per_ip = lc->max_total = -1;
    l->proto = &echo_protocol;
    l->conf = lc;
    return pl__listen_open(l);
}

void test_listen_datagram(void)
{
    memset(&D, 0, sizeof(D));
    CHECK_INT(pl_loop_new(&D.loop), PL_OK);
    unsigned char secret[32] = {0};
    pl__server_set(D.loop, NULL, NULL, secret);
    struct pl_listen l;
    struct pl_listener_conf lc;
    CHECK_INT(open_udp_entry(&l, &lc), PL_OK);
    int port = pl_listen_port(&l);
    CHECK(port > 0);

    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in to = {0};
    to.sin_family = AF_INET;
    to.sin_port = htons((uint16_t)port);
    inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
    CHECK(sendto(fd, "hello", 5, 0, (struct sockaddr *)&to, sizeof(to)) == 5);
    run_for(5000);
    CHECK_INT(D.got, 1);
    CHECK_STR(D.last, "hello");
    CHECK_INT((int)l.datagrams, 1);
    struct sockaddr_in me;
    socklen_t ml = sizeof(me);
    getsockname(fd, (struct sockaddr *)&me, &ml);
    CHECK_INT(D.from_port, ntohs(me.sin_port));

    char buf[128];
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    ssize_t n = recv(fd, buf, sizeof(buf) - 1, 0);
    CHECK(n == 10);
    if (n > 0) {
        buf[n] = '\0';
        CHECK_STR(buf, "pong:hello");
    }

    /* Closed: nothing more reaches the provider. */
    pl__listen_close(&l);
    CHECK_INT(pl_listen_port(&l), -1);
    sendto(fd, "again", 5, 0, (struct sockaddr *)&to, sizeof(to));
    run_for(200);
    CHECK_INT(D.got, 1);
    CHECK_INT(pl_listen_sendto(&l, "x", 1, NULL, 0), PL_EINVAL);
    close(fd);
    pl__server_set(NULL, NULL, NULL, NULL);
    pl_loop_free(D.loop);
}

/* ---- held listeners (a cluster node until it has linked) ---- */

static int connects(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in to = {0};
    to.sin_family = AF_INET;
    to.sin_port = htons((uint16_t)port);
    inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
    int ok = connect(fd, (struct sockaddr *)&to, sizeof(to)) == 0;
    close(fd);
    return ok;
}

void test_listen_hold(void)
{
    struct pl_loop *loop;
    CHECK_INT(pl_loop_new(&loop), PL_OK);
    unsigned char secret[32] = {0};
    struct pl_config *c = NULL;
    char err[512] = "";
    CHECK_INT(load("({ protocol = \"c2s\"; address = \"127.0.0.1\"; "
                   "port = 0; })",
                   &c, err, sizeof(err)),
              PL_OK);
    if (!c) {
        pl_loop_free(loop);
        return;
    }
    pl__server_set(loop, c, NULL, secret);
    /* Held: the entry is there, its socket is not. */
    pl_listen_hold();
    CHECK_INT(pl_listen_held(), 1);
    CHECK_INT(pl__listen_start(c), PL_OK);
    CHECK(pl_listen_at(0) != NULL);
    CHECK_INT(pl_listen_port(pl_listen_at(0)), -1);
    /* Released: it listens. */
    CHECK_INT(pl_listen_release(), PL_OK);
    CHECK_INT(pl_listen_held(), 0);
    int port = pl_listen_port(pl_listen_at(0));
    CHECK(port > 0);
    CHECK(port > 0 && connects(port));
    CHECK_INT(pl_listen_release(), PL_OK); /* twice: nothing more */
    /* Closed for good: refused, the entry stays. */
    pl_listen_close_all();
    CHECK(pl_listen_at(0) != NULL);
    CHECK_INT(pl_listen_port(pl_listen_at(0)), -1);
    CHECK(port > 0 && !connects(port));
    pl__listen_free();
    pl__server_set(NULL, NULL, NULL, NULL);
    pl_config_free(c);
    pl_loop_free(loop);
}
