/*
 * smtp_listen.c - the SMTP/LMTP engine on core connections; see
 * smtp_listen.h.
 *
 * A struct session ties one pl_conn to one pl_smtp; the server keeps
 * them in a list so that closing it can end them.  pump() is the only
 * place bytes move from the engine to the connection.
 */
#include "gateway/mail/smtp_listen.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "alloc.h"
#include "error.h"
#include "log.h"
#include "tls.h"

struct session {
    struct pl_conn *c;          /* the connection, NULL once closed */
    struct pl_smtp *smtp;       /* the engine */
    struct pl_smtp_server *srv; /* owner */
    struct session *next;       /* server's list */
    struct session **prev;      /* link to us */
};

struct pl_smtp_server {
    struct pl_smtp_server_config cfg; /* copy, strings below */
    char *hostname;                   /* cfg.smtp.hostname */
    char *address;                    /* cfg.address */
    char *unix_path;                  /* cfg.unix_path */
    struct pl_loop *loop;             /* where it runs */
    struct pl_listener *tcp;          /* TCP listener, or NULL */
    struct pl_tls_host *tls;          /* STARTTLS context, or NULL */
    struct pl_io ux;                  /* unix socket watcher (fd -1) */
    struct session *sessions;         /* open ones */
    unsigned nsessions;               /* how many */
    unsigned closing : 1;             /* pl_smtp_server_close called */
};

void pl_smtp_server_config_default(struct pl_smtp_server_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    pl_smtp_config_default(&cfg->smtp);
    cfg->address = "127.0.0.1";
    cfg->timeout_ms = 300000;
    cfg->max_sessions = 1000;
}

static void pump(struct session *se);

static int on_event(void *data, struct pl_smtp *s,
                    const struct pl_smtp_event *ev,
                    struct pl_smtp_reply *replies)
{
    struct session *se = data;
    pl_smtp_event_fn *fn = se->srv->cfg.fn;
    return fn ? fn(se->srv->cfg.data, s, ev, replies) : PL_OK;
}

static void server_maybe_free(struct pl_smtp_server *srv)
{
    if (!srv->closing || srv->sessions)
        return;
    pl_tls_host_free(srv->tls);
    pl_free(srv->hostname);
    pl_free(srv->address);
    pl_free(srv->unix_path);
    pl_free(srv);
}

/* Moves replies to the connection within its cap; holds or resumes
 * reading; closes when the engine is done and everything is queued. */
static void pump(struct session *se)
{
    struct pl_conn *c = se->c;
    if (!c || c->closing)
        return;
    size_t cap = pl_smtp_config(se->smtp)->max_out;
    for (;;) {
        struct pl_str o = pl_smtp_output(se->smtp);
        if (!o.len || pl_conn_pending(c) >= cap)
            break;
        pl_conn_write(c, o.p, o.len);
        /* Sending frees room: the engine may answer more input. */
        pl_smtp_output_sent(se->smtp, o.len);
    }
    if (pl_smtp_is_done(se->smtp) && !pl_smtp_output(se->smtp).len) {
        pl_conn_close(c);
        return;
    }
    if (pl_smtp_tls_wanted(se->smtp) && !pl_smtp_output(se->smtp).len &&
        c->tls == PL_CONN_PLAIN && !c->want_tls && se->srv->tls) {
        /* The 220 is queued: TLS starts once it is written. */
        pl_conn_starttls(c, se->srv->tls->ctx);
    }
    int want = pl_smtp_wants_input(se->smtp) && pl_conn_pending(c) < cap;
    pl_conn_hold(c, !want);
}

static void on_data(struct pl_conn *c, const char *p, size_t n)
{
    struct session *se = c->data;
    pl_smtp_feed(se->smtp, p, n);
    pump(se);
}

static void on_tls_up(struct pl_conn *c)
{
    struct session *se = c->data;
    size_t dropped = pl_smtp_tls_discarded(se->smtp);
    if (dropped)
        pl_log_warn("smtp",
                    "%s: %zu plaintext bytes after STARTTLS "
                    "discarded (command injection?)",
                    c->ip, dropped);
    pl_smtp_tls_started(se->smtp);
    pump(se);
}

static void on_drain(struct pl_conn *c)
{
    pump(c->data);
}

static void on_timeout(struct pl_conn *c, int which)
{
    struct session *se = c->data;
    pl_log_info("smtp", "command timeout for %s, closing", c->ip);
    pl_smtp_timeout(se->smtp);
    pump(se);
    if (!c->closing)
        pl_conn_close(c);
}

static void on_closed(struct pl_conn *c)
{
    struct session *se = c->data;
    struct pl_smtp_server *srv = se->srv;
    if (srv->cfg.gone)
        srv->cfg.gone(srv->cfg.data, se->smtp);
    *se->prev = se->next;
    if (se->next)
        se->next->prev = se->prev;
    srv->nsessions--;
    pl_smtp_free(se->smtp);
    pl_free(se);
    server_maybe_free(srv);
}

static const struct pl_conn_ops smtp_conn_ops = {
    .data = on_data,
    .tls_up = on_tls_up,
    .closed = on_closed,
    .timeout = on_timeout,
};

static void start_session(struct pl_smtp_server *srv, int fd)
{
    struct session *se = pl_calloc(1, sizeof(*se));
    se->srv = srv;
    se->c = pl_conn_new(srv->loop, fd, &smtp_conn_ops, se, &srv->cfg.conn);
    struct pl_smtp_config sc = srv->cfg.smtp;
    sc.peer = se->c->ip[0] ? se->c->ip : NULL;
    se->smtp = pl_smtp_new(&sc, on_event, se);
    se->next = srv->sessions;
    se->prev = &srv->sessions;
    if (srv->sessions)
        srv->sessions->prev = &se->next;
    srv->sessions = se;
    srv->nsessions++;
    pl_conn_set_idle(se->c, srv->cfg.timeout_ms, 0);
    pl_conn_set_drain(se->c, on_drain);
    pl_conn_established(se->c);
    pl_conn_start(se->c, NULL);
    if (srv->nsessions > srv->cfg.max_sessions) {
        /* RFC 5321 §3.1: 421 instead of the greeting. */
        pl_smtp_shutdown(se->smtp);
        pl_smtp_output_sent(se->smtp, pl_smtp_output(se->smtp).len);
        pl_conn_write(se->c, "421 4.3.2 Too many connections\r\n", 33);
        pl_conn_close(se->c);
        return;
    }
    pump(se);
}

static void on_tcp_accept(struct pl_listener *l, int fd,
                          const struct sockaddr_storage *addr, void *data)
{
    start_session(data, fd);
}

static void on_unix_accept(struct pl_io *io, unsigned events)
{
    struct pl_smtp_server *srv = io->data;
    for (int i = 0; i < 64; i++) {
        int fd = accept4(io->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE)
                pl_log_warn("smtp", "out of file descriptors while "
                                    "accepting LMTP connections");
            return;
        }
        start_session(srv, fd);
    }
}

static int open_unix(struct pl_smtp_server *srv)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(srv->unix_path) >= sizeof(sa.sun_path))
        return PL_EINVAL;
    strcpy(sa.sun_path, srv->unix_path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return PL_EIO;
    unlink(srv->unix_path);
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
        listen(fd, 1024) < 0) {
        pl_log_error("smtp", "cannot listen on %s: %s", srv->unix_path,
                     strerror(errno));
        close(fd);
        return PL_EIO;
    }
    pl_io_init(&srv->ux, fd, on_unix_accept, srv);
    pl_io_set(srv->loop, &srv->ux, PL_IO_READ);
    return PL_OK;
}

int pl_smtp_server_open(struct pl_loop *loop,
                        const struct pl_smtp_server_config *cfg,
                        struct pl_smtp_server **out)
{
    struct pl_smtp_server *srv = pl_calloc(1, sizeof(*srv));
    srv->cfg = *cfg;
    srv->loop = loop;
    srv->ux.fd = -1;
    srv->hostname = pl_strdup(cfg->smtp.hostname ? cfg->smtp.hostname
                                                 : "localhost");
    srv->cfg.smtp.hostname = srv->hostname;
    srv->cfg.smtp.peer = NULL;
    if (!srv->cfg.conn.max_out)
        srv->cfg.conn.max_out = 1 << 20;
    if (!srv->cfg.conn.read_rate)
        srv->cfg.conn.read_rate = 64 << 20;
    if (!srv->cfg.conn.read_burst)
        srv->cfg.conn.read_burst = 64 << 20;
    if (!srv->cfg.max_sessions)
        srv->cfg.max_sessions = 1000;
    srv->cfg.tls_cert = srv->cfg.tls_key = NULL;
    int rc = PL_OK;
    if (cfg->smtp.tls != PL_SMTP_TLS_NONE) {
        if (!cfg->tls_cert || !cfg->tls_key || !cfg->tls_cert[0])
            rc = PL_ETLS;
        else if (cfg->tls_make_cert && access(cfg->tls_cert, R_OK) != 0)
            rc = pl_tls_ensure_selfsigned(srv->hostname, cfg->tls_cert,
                                          cfg->tls_key);
        if (rc == PL_OK)
            rc = pl_tls_host_load(srv->hostname, cfg->tls_cert, cfg->tls_key,
                                  &srv->tls);
        if (rc != PL_OK) {
            pl_log_error("smtp", "no certificate for STARTTLS (%s)",
                         cfg->tls_cert ? cfg->tls_cert : "none configured");
            pl_free(srv->hostname);
            pl_free(srv);
            return PL_ETLS;
        }
    }
    if (cfg->unix_path) {
        srv->unix_path = pl_strdup(cfg->unix_path);
        srv->cfg.unix_path = srv->unix_path;
        srv->cfg.address = NULL;
        rc = open_unix(srv);
    } else {
        srv->address = pl_strdup(cfg->address ? cfg->address : "127.0.0.1");
        srv->cfg.address = srv->address;
        rc = pl_listener_open(loop, srv->address, cfg->port, on_tcp_accept, srv,
                              &srv->tcp);
    }
    if (rc != PL_OK) {
        pl_tls_host_free(srv->tls);
        pl_free(srv->hostname);
        pl_free(srv->address);
        pl_free(srv->unix_path);
        pl_free(srv);
        return rc;
    }
    *out = srv;
    return PL_OK;
}

int pl_smtp_server_port(const struct pl_smtp_server *srv)
{
    if (!srv->tcp)
        return -1;
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    if (getsockname(pl__listener_fd(srv->tcp), (struct sockaddr *)&ss, &len) <
        0)
        return -1;
    if (ss.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return -1;
}

unsigned pl_smtp_server_sessions(const struct pl_smtp_server *srv)
{
    return srv->nsessions;
}

int pl_smtp_server_resume(struct pl_smtp *s,
                          const struct pl_smtp_reply *replies, size_t n)
{
    int rc = pl_smtp_resume(s, replies, n);
    if (rc == PL_OK)
        pump(pl_smtp_data(s));
    return rc;
}

void pl_smtp_server_close(struct pl_smtp_server *srv)
{
    if (!srv || srv->closing)
        return;
    srv->closing = 1;
    if (srv->tcp) {
        pl_listener_close(srv->tcp);
        srv->tcp = NULL;
    }
    if (srv->ux.fd >= 0) {
        pl_io_stop(&srv->ux);
        close(srv->ux.fd);
        srv->ux.fd = -1;
        unlink(srv->unix_path);
    }
    for (struct session *se = srv->sessions; se; se = se->next) {
        pl_smtp_shutdown(se->smtp);
        pump(se);
        if (se->c && !se->c->closing)
            pl_conn_close(se->c);
    }
    server_maybe_free(srv);
}
