/*
 * main.c - parley-gateway, the message gateway between IM (parleyd, as an
 * XEP-0114 component), SMS (Kannel) and e-mail: its own process.
 *
 *   parley-gateway --config FILE [--check-config]
 *   parley-gateway --help
 *
 * Reads its own libconfig file (etc/parley-gateway.conf documents every
 * setting), opens the SQLite queue, starts the database and HTTP work
 * queues, the component links (component.c), the SMS transport
 * (sms/kannel.c), the e-mail channel (mail/channel.c) when mail.domain
 * is set and the content checks (check.c) when check.clamd or
 * check.rspamd is set, then runs the loop.  SIGTERM/SIGINT stop it: the link
 * is closed, in-flight requests finish, and whatever was not recorded
 * stays leased until its lease runs out (another instance, or this one
 * restarted, takes it then).  See doc/gateway.md for the architecture.
 *
 * Extending: a new setting is a field of struct pl_gw_conf (core.h) and
 * a row of the table below; the policy group (lists, per-user rules) is
 * read by policy.c.
 */
#include <arpa/inet.h>
#include <libconfig.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "alloc.h"
#include "error.h"
#include "gateway/check.h"
#include "gateway/core.h"
#include "gateway/policy.h"
#include "log.h"
#include "loop.h"

#define OFF(f) offsetof(struct pl_gw_conf, f)

/* One setting: path, string default or integer default with bounds, the
 * scale its value is multiplied by (seconds to ms). */
static const struct opt {
    const char *path;
    int is_str;
    const char *sdef;
    long idef, min, max, scale;
    size_t off;
} opts[] = {
    {"instance", 1, "gw1", 0, 0, 0, 0, OFF(instance)},
    {"data_dir", 1, "/var/lib/parley-gateway", 0, 0, 0, 0, OFF(data_dir)},
    {"queue", 1, "queue.db", 0, 0, 0, 0, OFF(queue_path)},
    {"component.host", 1, "127.0.0.1", 0, 0, 0, 0, OFF(comp_host)},
    {"component.port", 0, NULL, 5347, 1, 65535, 1, OFF(comp_port)},
    {"component.secret", 1, "", 0, 0, 0, 0, OFF(comp_secret)},
    {"component.reconnect_min", 0, NULL, 1000, 10, 600000, 1,
     OFF(reconnect_min_ms)},
    {"component.reconnect_max", 0, NULL, 30000, 10, 3600000, 1,
     OFF(reconnect_max_ms)},
    {"component.max_stanza", 0, NULL, 262144, 4096, 16777216, 1,
     OFF(max_stanza)},
    {"sms.domain", 1, "", 0, 0, 0, 0, OFF(sms_domain)},
    {"sms.default_country", 1, "", 0, 0, 0, 0, OFF(default_cc)},
    {"sms.sender", 1, "", 0, 0, 0, 0, OFF(sms_sender)},
    {"sms.max_parts", 0, NULL, 10, 1, 255, 1, OFF(max_parts)},
    {"sms.max_text", 0, NULL, 4096, 1, 65536, 1, OFF(max_text)},
    {"sms.code_ttl", 0, NULL, 600, 10, 86400, 1000, OFF(code_ttl_ms)},
    {"sms.kannel.sendsms_url", 1, "http://127.0.0.1:13013/cgi-bin/sendsms", 0,
     0, 0, 0, OFF(sendsms_url)},
    {"sms.kannel.user", 1, "", 0, 0, 0, 0, OFF(kannel_user)},
    {"sms.kannel.password", 1, "", 0, 0, 0, 0, OFF(kannel_pass)},
    {"sms.kannel.timeout", 0, NULL, 10, 1, 300, 1, OFF(kannel_timeout)},
    {"sms.kannel.dlr_mask", 0, NULL, 31, 0, 31, 1, OFF(dlr_mask)},
    {"sms.callback.address", 1, "127.0.0.1", 0, 0, 0, 0, OFF(cb_address)},
    {"sms.callback.port", 0, NULL, 13080, 1, 65535, 1, OFF(cb_port)},
    {"sms.callback.url", 1, "", 0, 0, 0, 0, OFF(cb_url)},
    {"sms.callback.max_body", 0, NULL, 65536, 0, 16777216, 1, OFF(cb_max_body)},
    {"mail.domain", 1, "", 0, 0, 0, 0, OFF(mail_domain)},
    {"mail.hostname", 1, "", 0, 0, 0, 0, OFF(mail_hostname)},
    {"mail.im_host", 1, "", 0, 0, 0, 0, OFF(mail_im_host)},
    {"mail.recipient_domains", 1, "", 0, 0, 0, 0, OFF(mail_rcpt_domains)},
    {"mail.from", 1, "", 0, 0, 0, 0, OFF(mail_from)},
    {"mail.lmtp.socket", 1, "", 0, 0, 0, 0, OFF(lmtp_socket)},
    {"mail.lmtp.address", 1, "127.0.0.1", 0, 0, 0, 0, OFF(lmtp_address)},
    {"mail.lmtp.port", 0, NULL, 0, 0, 65535, 1, OFF(lmtp_port)},
    {"mail.smtp.address", 1, "127.0.0.1", 0, 0, 0, 0, OFF(smtp_address)},
    {"mail.smtp.port", 0, NULL, 0, 0, 65535, 1, OFF(smtp_port)},
    {"mail.smtp.tls", 1, "", 0, 0, 0, 0, OFF(smtp_tls)},
    {"mail.smtp.tls_cert", 1, "", 0, 0, 0, 0, OFF(smtp_tls_cert)},
    {"mail.smtp.tls_key", 1, "", 0, 0, 0, 0, OFF(smtp_tls_key)},
    {"mail.max_size", 0, NULL, 10485760, 1024, 1073741824, 1,
     OFF(mail_max_size)},
    {"mail.max_rcpts", 0, NULL, 100, 1, 10000, 1, OFF(mail_max_rcpts)},
    {"mail.max_text", 0, NULL, 65536, 64, 16777216, 1, OFF(mail_max_text)},
    {"mail.timeout", 0, NULL, 300, 1, 3600, 1000, OFF(mail_timeout_ms)},
    {"mail.max_sessions", 0, NULL, 1000, 1, 100000, 1, OFF(mail_max_sessions)},
    {"mail.relay.url", 1, "smtp://127.0.0.1:25", 0, 0, 0, 0, OFF(relay_url)},
    {"mail.relay.starttls", 1, "try", 0, 0, 0, 0, OFF(relay_tls)},
    {"mail.relay.no_verify", 0, NULL, 0, 0, 1, 1, OFF(relay_no_verify)},
    {"mail.relay.ca_file", 1, "", 0, 0, 0, 0, OFF(relay_ca_file)},
    {"mail.relay.user", 1, "", 0, 0, 0, 0, OFF(relay_user)},
    {"mail.relay.password", 1, "", 0, 0, 0, 0, OFF(relay_pass)},
    {"mail.relay.connect_timeout", 0, NULL, 30, 1, 600, 1000,
     OFF(relay_connect_timeout_ms)},
    {"mail.relay.timeout", 0, NULL, 100, 1, 3600, 1000, OFF(relay_timeout_ms)},
    {"mail.workers", 0, NULL, 4, 1, 64, 1, OFF(smtp_workers)},
    {"media.upload_service", 1, "", 0, 0, 0, 0, OFF(media_service)},
    {"media.fetch_from", 1, "", 0, 0, 0, 0, OFF(media_fetch_from)},
    {"media.max_size", 0, NULL, 10485760, 1, 1073741824, 1,
     OFF(media_max_size)},
    {"media.max_count", 0, NULL, 5, 1, 100, 1, OFF(media_max_count)},
    {"media.timeout", 0, NULL, 60, 1, 3600, 1000, OFF(media_timeout_ms)},
    {"media.workers", 0, NULL, 2, 1, 64, 1, OFF(media_workers)},
    {"mail.sms_domain", 1, "", 0, 0, 0, 0, OFF(mail_sms_domain)},
    {"mail.to_sms", 0, NULL, 1, 0, 1, 1, OFF(mail_to_sms)},
    {"sms.to_mail", 0, NULL, 1, 0, 1, 1, OFF(sms_to_mail)},
    {"sms.report.enabled", 0, NULL, 1, 0, 1, 1, OFF(sms_reports)},
    {"sms.report.delivered", 1, "Delivered to %a", 0, 0, 0, 0,
     OFF(report_delivered)},
    {"sms.report.failed", 1, "Not delivered to %a: %r", 0, 0, 0, 0,
     OFF(report_failed)},
    {"sms.report.expired", 1, "Not delivered to %a in time", 0, 0, 0, 0,
     OFF(report_expired)},
    {"sms.report.refused", 1, "Not delivered: %r", 0, 0, 0, 0,
     OFF(report_refused)},
    {"retry.base", 0, NULL, 2000, 10, 3600000, 1, OFF(retry_base_ms)},
    {"retry.max", 0, NULL, 300000, 10, 86400000, 1, OFF(retry_max_ms)},
    {"retry.jitter", 0, NULL, 20, 0, 100, 1, OFF(retry_jitter)},
    {"retry.expiry", 0, NULL, 86400, 1, 2592000, 1000, OFF(expiry_ms)},
    {"queue_lease", 0, NULL, 120, 1, 3600, 1000, OFF(lease_ms)},
    {"queue_poll", 0, NULL, 500, 10, 60000, 1, OFF(poll_ms)},
    {"queue_batch", 0, NULL, 32, 1, 1000, 1, OFF(batch)},
    {"http_workers", 0, NULL, 4, 1, 64, 1, OFF(http_workers)},
    {"check.clamd", 1, "", 0, 0, 0, 0, OFF(clamd)},
    {"check.rspamd", 1, "", 0, 0, 0, 0, OFF(rspamd_url)},
    {"check.timeout", 0, NULL, 30, 1, 600, 1000, OFF(check_timeout_ms)},
    {"check.fail", 1, "closed", 0, 0, 0, 0, OFF(check_fail)},
    {"check.workers", 0, NULL, 4, 1, 64, 1, OFF(check_workers)},
    {"check.spam.reject_score", 0, NULL, 0, 0, 10000, 1,
     OFF(spam_reject_score)},
    {"check.spam.tag_score", 0, NULL, 0, 0, 10000, 1, OFF(spam_tag_score)},
    {"check.spam.on_reject", 1, "refuse", 0, 0, 0, 0, OFF(spam_on_reject)},
    {"check.spam.tag", 1, "[SPAM] ", 0, 0, 0, 0, OFF(spam_tag)},
};

static int load(const char *path, struct pl_gw_conf *c, const char **level)
{
    config_t cf;
    config_init(&cf);
    if (!config_read_file(&cf, path)) {
        fprintf(stderr, "parley-gateway: %s:%d: %s\n",
                config_error_file(&cf) ? config_error_file(&cf) : path,
                config_error_line(&cf), config_error_text(&cf));
        config_destroy(&cf);
        return PL_EINVAL;
    }
    int rc = PL_OK;
    for (size_t i = 0; i < sizeof(opts) / sizeof(opts[0]) && rc == PL_OK; i++) {
        const struct opt *o = &opts[i];
        char *field = (char *)c + o->off;
        config_setting_t *s = config_lookup(&cf, o->path);
        if (o->is_str) {
            const char *v = o->sdef;
            if (s && !(v = config_setting_get_string(s))) {
                fprintf(stderr, "parley-gateway: %s:%d: %s must be a string\n",
                        path, config_setting_source_line(s), o->path);
                rc = PL_EINVAL;
                break;
            }
            *(char **)field = pl_strdup(v);
        } else {
            long v = o->idef;
            if (s) {
                if (config_setting_type(s) != CONFIG_TYPE_INT) {
                    fprintf(stderr,
                            "parley-gateway: %s:%d: %s must be an integer\n",
                            path, config_setting_source_line(s), o->path);
                    rc = PL_EINVAL;
                    break;
                }
                v = (long)config_setting_get_int(s);
            }
            if (v < o->min || v > o->max) {
                fprintf(stderr,
                        "parley-gateway: %s must be between %ld and %ld\n",
                        o->path, o->min, o->max);
                rc = PL_EINVAL;
                break;
            }
            *(long *)field = v * o->scale;
        }
    }
    if (rc == PL_OK)
        rc = pl_gw_policy_load(&cf, path); /* the policy group: policy.c */
    const char *lv = "info";
    config_lookup_string(&cf, "log_level", &lv);
    *level = strdup(lv);
    config_destroy(&cf);
    if (rc != PL_OK)
        return rc;
    const char *why = NULL;
    struct in6_addr a;
    if (!c->comp_secret[0])
        why = "component.secret is required";
    else if (inet_pton(AF_INET, c->comp_host, &a) != 1 &&
             inet_pton(AF_INET6, c->comp_host, &a) != 1)
        why = "component.host must be an IP address";
    else if (!c->sms_domain[0])
        why = "sms.domain is required (the component's domain)";
    else if (!c->cb_url[0])
        why = "sms.callback.url is required (how Kannel reaches us)";
    else if (c->lease_ms <= c->kannel_timeout * 1000 * c->max_parts)
        why = "queue_lease must outlast sms.kannel.timeout times "
              "sms.max_parts (a message must not be taken while sent)";
    else if (c->mail_domain[0] && !c->mail_im_host[0])
        why = "mail.im_host is required with mail.domain";
    else if (c->mail_domain[0] && !c->mail_rcpt_domains[0])
        why = "mail.recipient_domains is required with mail.domain";
    else if (c->mail_domain[0] && strcmp(c->relay_tls, "none") != 0 &&
             strcmp(c->relay_tls, "try") != 0 &&
             strcmp(c->relay_tls, "require") != 0)
        why = "mail.relay.starttls must be none, try or require";
    else if (c->smtp_tls[0] && strcmp(c->smtp_tls, "none") != 0 &&
             strcmp(c->smtp_tls, "starttls") != 0 &&
             strcmp(c->smtp_tls, "required") != 0)
        why = "mail.smtp.tls must be none, starttls or required";
    else if (!c->smtp_tls_cert[0] != !c->smtp_tls_key[0])
        why = "mail.smtp.tls_cert and mail.smtp.tls_key go together";
    else if (c->mail_domain[0] && strncmp(c->relay_url, "smtp://", 7) != 0 &&
             strncmp(c->relay_url, "smtps://", 8) != 0)
        why = "mail.relay.url must be smtp://HOST[:PORT] or smtps://...";
    else if (c->mail_domain[0] && c->lease_ms <= c->relay_timeout_ms)
        why = "queue_lease must outlast mail.relay.timeout";
    else if (c->media_service[0] && !c->mail_domain[0])
        why = "media.upload_service needs mail.domain (slots are asked "
              "for from the mail domain)";
    else if (c->retry_max_ms < c->retry_base_ms)
        why = "retry.max must be at least retry.base";
    else if (strcmp(c->check_fail, "open") != 0 &&
             strcmp(c->check_fail, "closed") != 0)
        why = "check.fail must be open or closed";
    else if (strcmp(c->spam_on_reject, "refuse") != 0 &&
             strcmp(c->spam_on_reject, "tag") != 0)
        why = "check.spam.on_reject must be refuse or tag";
    else if (c->rspamd_url[0] && strncmp(c->rspamd_url, "http://", 7) != 0 &&
             strncmp(c->rspamd_url, "https://", 8) != 0)
        why = "check.rspamd must be http://HOST:PORT (rspamd's normal worker)";
    if (why) {
        fprintf(stderr, "parley-gateway: %s: %s\n", path, why);
        return PL_EINVAL;
    }
    if (c->mail_domain[0] && !c->mail_hostname[0]) {
        pl_free(c->mail_hostname);
        c->mail_hostname = pl_strdup(c->mail_domain);
    }
    if (!c->mail_sms_domain[0]) {
        pl_free(c->mail_sms_domain);
        c->mail_sms_domain = pl_strdup(c->sms_domain);
    }
    if (c->mail_domain[0] && !c->mail_from[0]) {
        size_t n = strlen(c->mail_hostname) + 16;
        pl_free(c->mail_from);
        c->mail_from = pl_malloc(n);
        snprintf(c->mail_from, n, "MAILER-DAEMON@%s", c->mail_hostname);
    }
    if (!c->smtp_tls_cert[0]) {
        /* Ours, in data_dir: made self-signed on the first start. */
        size_t n = strlen(c->data_dir) + 32;
        pl_free(c->smtp_tls_cert);
        pl_free(c->smtp_tls_key);
        c->smtp_tls_cert = pl_malloc(n);
        c->smtp_tls_key = pl_malloc(n);
        snprintf(c->smtp_tls_cert, n, "%s/smtp-cert.pem", c->data_dir);
        snprintf(c->smtp_tls_key, n, "%s/smtp-key.pem", c->data_dir);
        c->smtp_tls_make = 1;
    }
    if (c->queue_path[0] != '/') {
        size_t n = strlen(c->data_dir) + strlen(c->queue_path) + 2;
        char *p = pl_malloc(n);
        snprintf(p, n, "%s/%s", c->data_dir, c->queue_path);
        pl_free(c->queue_path);
        c->queue_path = p;
    }
    return PL_OK;
}

static void on_stop(struct pl_loop *loop, int signo, void *data)
{
    (void)data;
    pl_log_info("gateway", "signal %d: shutting down", signo);
    pl_loop_stop(loop);
}

static void on_ready(void)
{
    pl_gw_outbox_kick();
}

int main(int argc, char **argv)
{
    const char *config = NULL;
    int check = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
            config = argv[++i];
        } else if (strcmp(argv[i], "--check-config") == 0) {
            check = 1;
        } else if (strcmp(argv[i], "--help") == 0) {
            puts("usage: parley-gateway --config FILE [--check-config]");
            return 0;
        } else {
            fputs("usage: parley-gateway --config FILE [--check-config]\n",
                  stderr);
            return 2;
        }
    }
    if (!config) {
        fputs("usage: parley-gateway --config FILE [--check-config]\n", stderr);
        return 2;
    }
    const char *level = NULL;
    if (load(config, &pl_gw.c, &level) != PL_OK)
        return 1;
    int lv = pl_log_level_parse(level);
    if (lv < 0) {
        fprintf(stderr, "parley-gateway: unknown log_level '%s'\n", level);
        return 1;
    }
    pl_log_set_level((enum pl_log_level)lv);
    free((char *)level); /* strdup'ed by load() */
    if (check) {
        char pol[400];
        pl_gw_policy_describe(pol, sizeof(pol));
        printf("configuration OK: instance %s, %s%s%s\n%s\n", pl_gw.c.instance,
               pl_gw.c.sms_domain, pl_gw.c.mail_domain[0] ? ", " : "",
               pl_gw.c.mail_domain, pol);
        return 0;
    }
    signal(SIGPIPE, SIG_IGN);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    mkdir(pl_gw.c.data_dir, 0700);
    if (pl_gwq_open(pl_gw.c.queue_path, 0, &pl_gw.db) != PL_OK) {
        pl_log_error("gateway", "cannot open the queue %s", pl_gw.c.queue_path);
        return 1;
    }
    if (pl_loop_new(&pl_gw.loop) != PL_OK)
        return 1;
    pl_gw.dbq = pl__gw_dbq_new();
    pl_gw.httpq = pl_workq_new("gw-http", (int)pl_gw.c.http_workers, NULL,
                               NULL);
    pl_loop_on_signal(pl_gw.loop, SIGTERM, on_stop, NULL);
    pl_loop_on_signal(pl_gw.loop, SIGINT, on_stop, NULL);
    pl_gw.smtpq = pl_workq_new("gw-smtp", (int)pl_gw.c.smtp_workers, NULL,
                               NULL);
    if (pl_gw_check_start() != PL_OK || pl_gw_sms_start() != PL_OK)
        return 1;
    if (pl_gw_media_start() != PL_OK)
        return 1;
    if (pl_gw.c.mail_domain[0] && pl_gw_mail_start() != PL_OK)
        return 1;
    pl_gwc_start(pl_gw_im_stanza, on_ready);
    pl_log_info("gateway", "instance %s serving %s, queue %s", pl_gw.c.instance,
                pl_gw.c.sms_domain, pl_gw.c.queue_path);
    pl_loop_run(pl_gw.loop);
    pl_gw_sms_stop();
    if (pl_gw.c.mail_domain[0])
        pl_gw_mail_stop();
    pl_gw_media_stop();
    pl_gwc_stop();
    /* Let the link's close and the last completions run. */
    pl_gw_check_stop();
    pl_workq_free(pl_gw.smtpq);
    pl_workq_free(pl_gw.httpq);
    pl_workq_free(pl_gw.dbq);
    pl_gwq_close(pl_gw.db);
    pl_gw_policy_free();
    pl_log_info("gateway", "stopped");
    return 0;
}
