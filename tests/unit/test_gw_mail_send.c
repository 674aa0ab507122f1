/*
 * test_gw_mail_send.c - outbound SMTP (src/gateway/mail/send.c, libcurl)
 * against the gateway's own SMTP listener (smtp_listen.c) on a loop
 * thread: accepted, refused (5xx: permanent), deferred (4xx: temporary),
 * nobody listening (temporary), and the message arriving intact (libcurl
 * dot-stuffs, the engine unstuffs).
 */
#include <pthread.h>
#include <string.h>

#include "alloc.h"
#include "buf.h"
#include "error.h"
#include "gateway/mail/send.h"
#include "gateway/mail/smtp_listen.h"
#include "loop.h"
#include "unit.h"

struct got {
    struct pl_buf msg;   /* last message received */
    struct pl_buf rcpts; /* "a,b," */
};

static int on_event(void *data, struct pl_smtp *s,
                    const struct pl_smtp_event *ev,
                    struct pl_smtp_reply *replies)
{
    struct got *g = data;
    if (ev->type == PL_SMTP_EV_RCPT) {
        if (strncmp(ev->rcpt, "nobody@", 7) == 0)
            replies[0] = (struct pl_smtp_reply){550, "5.1.1", "No such user"};
        else if (strncmp(ev->rcpt, "busy@", 5) == 0)
            replies[0] = (struct pl_smtp_reply){450, "4.2.1", "Try later"};
    } else if (ev->type == PL_SMTP_EV_DATA) {
        pl_buf_reset(&g->msg);
        pl_buf_append(&g->msg, ev->message.p, ev->message.len);
        for (size_t i = 0; i < ev->nrcpts; i++)
            pl_buf_printf(&g->rcpts, "%s,", ev->rcpts[i]);
    }
    return PL_OK;
}

struct ctx {
    struct pl_loop *loop;
    struct pl_smtp_server *srv;
};

static void *run_loop(void *data)
{
    pl_loop_run(data);
    return NULL;
}

static void stop(void *data)
{
    struct ctx *c = data;
    pl_smtp_server_close(c->srv);
    pl_loop_stop(c->loop);
}

void test_gw_mail_send(void)
{
    struct ctx c;
    struct got g = {0};
    CHECK_INT(pl_loop_new(&c.loop), PL_OK);
    struct pl_smtp_server_config cfg;
    pl_smtp_server_config_default(&cfg);
    cfg.smtp.hostname = "gw.example.org";
    cfg.port = 0;
    cfg.fn = on_event;
    cfg.data = &g;
    CHECK_INT(pl_smtp_server_open(c.loop, &cfg, &c.srv), PL_OK);
    int port = pl_smtp_server_port(c.srv);
    CHECK(port > 0);
    pthread_t th;
    pthread_create(&th, NULL, run_loop, c.loop);

    struct pl_mail_relay relay = {.host = "127.0.0.1",
                                  .port = port,
                                  .helo = "client.example",
                                  .timeout_ms = 10000};
    const char *msg = "From: a@example.org\r\nTo: b@example.org\r\n"
                      "Subject: dots\r\n\r\n.leading dot\r\n..two\r\n"
                      "last\r\n";
    const char *ok[] = {"b@example.org", "c@example.org"};
    struct pl_mail_send_result res;
    CHECK_INT(pl_mail_send(&relay, "a@example.org", ok, 2, pl_str_c(msg), &res),
              PL_OK);
    CHECK_INT(res.code, 250);
    CHECK(strstr(res.text, "2.0.0") != NULL);
    CHECK(!res.temporary && !res.permanent);

    const char *no[] = {"nobody@example.org"};
    CHECK_INT(pl_mail_send(&relay, "", no, 1, pl_str_c(msg), &res), PL_EINVAL);
    CHECK_INT(res.code, 550);
    CHECK(res.permanent && !res.temporary);
    CHECK(strstr(res.text, "550 5.1.1 No such user") != NULL);

    const char *busy[] = {"busy@example.org"};
    CHECK_INT(pl_mail_send(&relay, "a@example.org", busy, 1, pl_str_c(msg),
                           &res),
              PL_EAGAIN);
    CHECK_INT(res.code, 450);
    CHECK(res.temporary && !res.permanent);

    const char *bad[] = {"x>@y"};
    CHECK_INT(pl_mail_send(&relay, "a@example.org", bad, 1, pl_str_c(msg),
                           &res),
              PL_EINVAL);

    pl_loop_post(c.loop, stop, &c);
    pthread_join(th, NULL);

    /* Nobody listens there any more: temporary, no code. */
    CHECK_INT(pl_mail_send(&relay, "a@example.org", ok, 1, pl_str_c(msg), &res),
              PL_EAGAIN);
    CHECK_INT(res.code, 0);
    CHECK(res.temporary);

    const char *s = pl_buf_cstr(&g.msg);
    CHECK(strncmp(s, "Received: from client.example (127.0.0.1)", 41) == 0);
    CHECK(strstr(s, "\r\n\r\n.leading dot\r\n..two\r\nlast\r\n") != NULL);
    CHECK_STR(pl_buf_cstr(&g.rcpts), "b@example.org,c@example.org,");
    pl_buf_reset(&g.msg);
    pl_buf_reset(&g.rcpts);
    pl_loop_free(c.loop);
}
