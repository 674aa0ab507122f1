/*
 * gw_smtp_probe.c - a test program: the gateway's SMTP/LMTP listener
 * (src/gateway/mail/smtp_listen.c) with a fixed policy, writing what it
 * receives as JSON lines on stdout, for tests/interop/test_gateway_mail.py
 * (swaks is the client).
 *
 *   gw_smtp_probe [--lmtp] [--port N | --unix PATH] [--max-size N]
 *                 [--max-rcpts N] [--max-errors N]
 *
 * First line: {"ready": PORT} (-1 on a unix socket).  Then one line per
 * event: {"event":"mail","from":...}, {"event":"rcpt","rcpt":...},
 * {"event":"data","rcpts":[...],"size":N,"subject":...,"text":...,
 * "attachments":N,"from":...,"message_id":...,"in_reply_to":...,
 * "env_from":...} (the message parsed with mime.c; a delivery status
 * notification adds "dsn_action", "dsn_status", "dsn_recipient" and
 * "dsn_envid" of its first recipient, read by dsn.c; with --save DIR,
 * the raw message is also written to DIR/N.eml, named in "file", for
 * checks independent of mime.c).
 * Policy: recipients whose local part starts with "reject" get 550
 * 5.1.1, "defer" 450 4.2.1; in LMTP, recipients starting with "full"
 * get 452 4.2.2 after DATA.  SIGTERM or SIGINT ends it (exit 0).
 *
 *   gw_smtp_probe --send HOST:PORT --from ADDR --to ADDR [--subject S]
 *
 * instead builds a message (mime.c, pl_mail_build) from --subject and
 * the text on stdin, sends it (send.c, pl_mail_send) and prints
 * {"rc":..., "code":N, "text":..., "temporary":b, "permanent":b,
 * "message_id":...}; exit 0 whatever the relay said.
 */
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "alloc.h"
#include "buf.h"
#include "gateway/mail/dsn.h"
#include "gateway/mail/mime.h"
#include "gateway/mail/send.h"
#include "gateway/mail/smtp_listen.h"
#include "log.h"
#include "loop.h"

static int lmtp;
static const char *save_dir; /* --save: raw messages go here */
static int saved;            /* messages saved so far */

static void emit(json_t *o)
{
    char *s = json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII);
    if (s) {
        printf("%s\n", s);
        fflush(stdout);
        free(s);
    }
    json_decref(o);
}

static int on_event(void *data, struct pl_smtp *s,
                    const struct pl_smtp_event *ev,
                    struct pl_smtp_reply *replies)
{
    switch (ev->type) {
    case PL_SMTP_EV_HELO:
        emit(json_pack("{s:s,s:s}", "event", "helo", "helo", ev->helo));
        break;
    case PL_SMTP_EV_MAIL:
        emit(json_pack("{s:s,s:s,s:I,s:b,s:b}", "event", "mail", "from",
                       ev->from, "size", (json_int_t)ev->size, "8bit",
                       ev->body_8bit, "smtputf8", ev->smtputf8));
        break;
    case PL_SMTP_EV_RCPT:
        emit(json_pack("{s:s,s:s}", "event", "rcpt", "rcpt", ev->rcpt));
        if (strncmp(ev->rcpt, "reject", 6) == 0)
            replies[0] = (struct pl_smtp_reply){550, "5.1.1", "No such user"};
        else if (strncmp(ev->rcpt, "defer", 5) == 0)
            replies[0] = (struct pl_smtp_reply){450, "4.2.1", "Try later"};
        break;
    case PL_SMTP_EV_DATA: {
        json_t *rc = json_array();
        for (size_t i = 0; i < ev->nrcpts; i++) {
            json_array_append_new(rc, json_string(ev->rcpts[i]));
            if (lmtp && strncmp(ev->rcpts[i], "full", 4) == 0)
                replies[i] = (struct pl_smtp_reply){452, "4.2.2",
                                                    "Mailbox full"};
        }
        json_t *o = json_pack("{s:s,s:o,s:I}", "event", "data", "rcpts", rc,
                              "size", (json_int_t)ev->message.len);
        if (save_dir) {
            char path[4096];
            snprintf(path, sizeof(path), "%s/%d.eml", save_dir, ++saved);
            FILE *f = fopen(path, "wb");
            if (f) {
                fwrite(ev->message.p, 1, ev->message.len, f);
                fclose(f);
                json_object_set_new(o, "file", json_string(path));
            }
        }
        struct pl_mail_msg *m = NULL;
        int prc = pl_mail_parse(ev->message, NULL, &m);
        json_object_set_new(o, "parse", json_string(pl_strerror(prc)));
        if (m) {
            json_object_set_new(o, "subject",
                                m->subject ? json_string(m->subject)
                                           : json_null());
            json_object_set_new(o, "from",
                                m->from ? json_string(m->from) : json_null());
            json_object_set_new(o, "text", json_string(m->text));
            json_object_set_new(o, "message_id",
                                m->message_id ? json_string(m->message_id)
                                              : json_null());
            json_object_set_new(o, "in_reply_to",
                                m->in_reply_to ? json_string(m->in_reply_to)
                                               : json_null());
            json_object_set_new(o, "attachments",
                                json_integer((json_int_t)m->natt));
            pl_mail_msg_free(m);
        }
        json_object_set_new(o, "env_from", json_string(ev->from));
        struct pl_dsn_report *d = NULL;
        if (pl_dsn_parse(ev->message, &d) == PL_OK) {
            const struct pl_dsn_report_rcpt *r0 = &d->rcpts[0];
            const char *act = pl_dsn_action_name(r0->action);
            json_object_set_new(o, "dsn_action", json_string(act ? act : "?"));
            json_object_set_new(o, "dsn_status",
                                json_string(r0->status ? r0->status : ""));
            json_object_set_new(o, "dsn_recipient",
                                json_string(r0->final_recipient
                                                ? r0->final_recipient
                                                : ""));
            json_object_set_new(o, "dsn_envid",
                                d->envelope_id ? json_string(d->envelope_id)
                                               : json_null());
            pl_dsn_report_free(d);
        }
        emit(o);
        break;
    }
    }
    return PL_OK;
}

static int send_mode(const char *hostport, const char *from, const char *to,
                     const char *subject)
{
    char host[256];
    const char *colon = strrchr(hostport, ':');
    if (!colon || (size_t)(colon - hostport) >= sizeof(host))
        return 2;
    memcpy(host, hostport, (size_t)(colon - hostport));
    host[colon - hostport] = '\0';
    struct pl_buf text = {0};
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), stdin)) > 0)
        pl_buf_append(&text, chunk, n);
    const char *tos[] = {to};
    struct pl_mail_link link = {"https://upload.gw.test/f/1/photo.jpg",
                                "photo.jpg", "image/jpeg", 2048};
    struct pl_mail_out o = {.from = from,
                            .from_name = "Probe",
                            .to = tos,
                            .nto = 1,
                            .subject = subject,
                            .text = pl_buf_cstr(&text),
                            .links = &link,
                            .nlinks = 1,
                            .id_domain = "gw.test"};
    struct pl_buf msg = {0};
    char *id = NULL;
    if (pl_mail_build(&o, &msg, &id) != PL_OK) {
        fprintf(stderr, "gw_smtp_probe: cannot build the message\n");
        return 1;
    }
    struct pl_mail_relay relay = {.host = host,
                                  .port = atoi(colon + 1),
                                  .helo = "gw.test",
                                  .timeout_ms = 20000,
                                  .connect_timeout_ms = 5000};
    struct pl_mail_send_result res;
    int rc = pl_mail_send(&relay, from, tos, 1, pl_buf_str(&msg), &res);
    emit(json_pack("{s:s,s:i,s:s,s:b,s:b,s:s}", "rc", pl_strerror(rc), "code",
                   res.code, "text", res.text, "temporary", res.temporary,
                   "permanent", res.permanent, "message_id", id));
    pl_free(id);
    pl_buf_reset(&msg);
    pl_buf_reset(&text);
    return 0;
}

static void on_signal(struct pl_loop *loop, int signo, void *data)
{
    pl_smtp_server_close(data);
    pl_loop_stop(loop);
}

int main(int argc, char **argv)
{
    struct pl_smtp_server_config cfg;
    pl_smtp_server_config_default(&cfg);
    cfg.smtp.hostname = "gw.test";
    cfg.fn = on_event;
    cfg.timeout_ms = 20000;
    const char *send = NULL, *from = NULL, *to = NULL, *subject = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--send") == 0 && v) {
            send = argv[++i];
        } else if (strcmp(a, "--from") == 0 && v) {
            from = argv[++i];
        } else if (strcmp(a, "--to") == 0 && v) {
            to = argv[++i];
        } else if (strcmp(a, "--subject") == 0 && v) {
            subject = argv[++i];
        } else if (strcmp(a, "--lmtp") == 0) {
            lmtp = 1;
            cfg.smtp.proto = PL_SMTP_LMTP;
        } else if (strcmp(a, "--port") == 0 && v) {
            cfg.port = atoi(v);
            i++;
        } else if (strcmp(a, "--unix") == 0 && v) {
            cfg.unix_path = v;
            i++;
        } else if (strcmp(a, "--max-size") == 0 && v) {
            cfg.smtp.max_size = strtoul(v, NULL, 10);
            i++;
        } else if (strcmp(a, "--max-rcpts") == 0 && v) {
            cfg.smtp.max_rcpts = (unsigned)strtoul(v, NULL, 10);
            i++;
        } else if (strcmp(a, "--save") == 0 && v) {
            save_dir = v;
            i++;
        } else if (strcmp(a, "--max-errors") == 0 && v) {
            cfg.smtp.max_errors = (unsigned)strtoul(v, NULL, 10);
            i++;
        } else {
            fprintf(
                stderr,
                "usage: %s [--lmtp] [--port N | --unix PATH] [--max-size N] "
                "[--max-rcpts N] [--max-errors N] [--save DIR]\n",
                argv[0]);
            return 2;
        }
    }
    pl_log_set_level(PL_LOG_WARN);
    signal(SIGPIPE, SIG_IGN);
    if (send)
        return from && to ? send_mode(send, from, to, subject) : 2;
    struct pl_loop *loop;
    struct pl_smtp_server *srv;
    if (pl_loop_new(&loop) != PL_OK ||
        pl_smtp_server_open(loop, &cfg, &srv) != PL_OK) {
        fprintf(stderr, "gw_smtp_probe: cannot listen\n");
        return 1;
    }
    pl_loop_on_signal(loop, SIGTERM, on_signal, srv);
    pl_loop_on_signal(loop, SIGINT, on_signal, srv);
    printf("{\"ready\": %d}\n", pl_smtp_server_port(srv));
    fflush(stdout);
    pl_loop_run(loop);
    pl_loop_free(loop);
    return 0;
}
