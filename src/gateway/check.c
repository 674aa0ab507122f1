/*
 * check.c - the content checks of parley-gateway (check.h): clamd for
 * viruses, rspamd for spam, on the "check" work queue, and the verdict's
 * effect on what is stored.
 *
 * Order: clamd first (a virus is refused whatever its spam score), then
 * rspamd.  E-mail goes to both as received (clamd decodes MIME parts
 * itself; rspamd reads the whole message).  A text from IM or SMS goes
 * to clamd as it is and to rspamd inside a minimal RFC 5322 message
 * (Date, Message-ID, From, To, Subject, text/plain UTF-8), so that
 * rspamd's rules about missing headers do not score the wrapping.
 *
 * A refused message is stored with next_attempt at its expiry before it
 * is finished as refused, so no instance can claim it in between.
 */
#include "gateway/check.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "buf.h"
#include "clamd.h"
#include "error.h"
#include "gateway/core.h"
#include "log.h"

static struct pl_workq *checkq;

int pl_gw_check_enabled(void)
{
    return (pl_gw.c.clamd && pl_gw.c.clamd[0]) ||
           (pl_gw.c.rspamd_url && pl_gw.c.rspamd_url[0]);
}

int pl_gw_check_start(void)
{
    if (!pl_gw_check_enabled())
        return PL_OK;
    checkq = pl_workq_new("gw-check", (int)pl_gw.c.check_workers, NULL, NULL);
    pl_log_info("check", "content checks:%s%s%s%s, %s when a checker is down",
                pl_gw.c.clamd[0] ? " clamd at " : "", pl_gw.c.clamd,
                pl_gw.c.rspamd_url[0] ? " rspamd at " : "", pl_gw.c.rspamd_url,
                strcmp(pl_gw.c.check_fail, "open") == 0 ? "pass unchecked"
                                                        : "try again later");
    return PL_OK;
}

void pl_gw_check_stop(void)
{
    if (checkq)
        pl_workq_free(checkq);
    checkq = NULL;
}

/* ---- the policy ---- */

int pl_gw_spam_decide(const struct pl_rspamd_result *r,
                      const struct pl_gw_spam_policy *p)
{
    int over_reject = p->reject_score > 0 &&
                      r->score >= (double)p->reject_score;
    int over_tag = p->tag_score > 0 && r->score >= (double)p->tag_score;
    if (r->action == PL_RSPAMD_REJECT || over_reject)
        return p->reject_tags ? PL_GW_CHECK_TAG : PL_GW_CHECK_REFUSE;
    if (r->action == PL_RSPAMD_SOFT_REJECT)
        return PL_GW_CHECK_TEMPFAIL;
    if (r->action == PL_RSPAMD_ADD_HEADER ||
        r->action == PL_RSPAMD_REWRITE_SUBJECT || over_tag)
        return PL_GW_CHECK_TAG;
    return PL_GW_CHECK_PASS; /* no action; greylist: we do not greylist */
}

char *pl_gw_check_subject(const struct pl_gw_verdict *v, const char *orig)
{
    if (v->verdict != PL_GW_CHECK_TAG)
        return NULL;
    if (v->subject)
        return pl_strdup(v->subject);
    const char *tag = pl_gw.c.spam_tag ? pl_gw.c.spam_tag : "";
    if (!tag[0])
        return NULL;
    size_t n = strlen(tag) + (orig ? strlen(orig) : 0) + 1;
    char *s = pl_malloc(n);
    snprintf(s, n, "%s%s", tag, orig ? orig : "");
    return s;
}

void pl_gw_verdict_free(struct pl_gw_verdict *v)
{
    pl_free(v->subject);
    v->subject = NULL;
}

/* ---- running the checks (worker thread) ---- */

/* Appends what and detail to v->note (truncated if need be). */
static void note(struct pl_gw_verdict *v, const char *what, const char *detail)
{
    size_t off = strlen(v->note);
    int n = snprintf(v->note + off, sizeof(v->note) - off, "%s%s%s",
                     off ? "; " : "checks: ", what, detail);
    (void)n;
}

/* A checker failed (err): TEMPFAIL when check.fail is closed, else a
 * note.  Returns 1 when the verdict is final. */
static int down(struct pl_gw_verdict *v, const char *err)
{
    if (strcmp(pl_gw.c.check_fail, "open") != 0) {
        v->verdict = PL_GW_CHECK_TEMPFAIL;
        snprintf(v->reason, sizeof(v->reason),
                 "not checked (%s); try again later", err);
        return 1;
    }
    note(v, "not checked: ", err);
    return 0;
}

/* The minimal message rspamd gets for a text. */
static void wrap(const struct pl_gw_check *c, const char *text,
                 const char *subject, struct pl_buf *b)
{
    char line[1200], date[64];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S +0000", &tm);
    const char *from = c->from ? c->from : "";
    size_t fl = strcspn(from, "/\r\n"); /* a JID's resource is no address */
    snprintf(line, sizeof(line),
             "Date: %s\r\nMessage-ID: <%s@%s>\r\nFrom: <%.*s%s%s>\r\n", date,
             c->m ? c->m->id : "text", pl_gw.c.sms_domain, (int)fl, from,
             memchr(from, '@', fl) ? "" : "@",
             memchr(from, '@', fl) ? "" : pl_gw.c.sms_domain);
    pl_buf_append_str(b, line);
    if (c->rcpt && !strpbrk(c->rcpt, "\r\n")) {
        snprintf(line, sizeof(line), "To: <%s>\r\n", c->rcpt);
        pl_buf_append_str(b, line);
    }
    if (subject && !strpbrk(subject, "\r\n")) {
        snprintf(line, sizeof(line), "Subject: %.1000s\r\n", subject);
        pl_buf_append_str(b, line);
    }
    pl_buf_append_str(b, "MIME-Version: 1.0\r\n"
                         "Content-Type: text/plain; charset=utf-8\r\n"
                         "Content-Transfer-Encoding: 8bit\r\n\r\n");
    pl_buf_append_str(b, text);
    pl_buf_append_str(b, "\r\n");
}

void pl__gw_check_run(struct pl_gw_check *c)
{
    struct pl_gw_verdict *v = &c->v;
    const char *text = c->m ? c->m->text : c->text;
    const char *data = c->raw ? c->raw : text ? text : "";
    size_t len = c->raw ? c->rawlen : strlen(data);
    char err[300];
    if (pl_gw.c.clamd[0]) {
        int tmo = (int)((pl_gw.c.check_timeout_ms + 999) / 1000);
        int rc = pl_clamd_scan_mem(pl_gw.c.clamd, data, len, tmo, err,
                                   sizeof(err));
        if (rc == PL_EFORBIDDEN) {
            v->verdict = PL_GW_CHECK_REFUSE;
            v->virus = 1;
            snprintf(v->reason, sizeof(v->reason), "virus found: %s", err);
            return;
        }
        if (rc != PL_OK && down(v, err))
            return;
        if (rc == PL_OK)
            note(v, "clamd: ", "clean");
    }
    if (!pl_gw.c.rspamd_url[0])
        return;
    struct pl_buf wrapped = {0};
    if (!c->raw) {
        wrap(c, data, c->m ? c->m->subject : NULL, &wrapped);
        data = wrapped.data + wrapped.off;
        len = wrapped.len;
    }
    struct pl_rspamd_request rq = {
        .url = pl_gw.c.rspamd_url,
        .timeout_ms = pl_gw.c.check_timeout_ms,
        .msg = data,
        .len = len,
        .from = c->from && strchr(c->from, '@') && c->raw ? c->from : NULL,
        .rcpt = c->rcpt,
        .helo = c->helo,
        .id = c->m ? c->m->id : NULL,
    };
    struct pl_rspamd_result r;
    int rc = pl_rspamd_check(&rq, &r, err, sizeof(err));
    pl_buf_reset(&wrapped);
    if (rc != PL_OK) {
        down(v, err);
        return;
    }
    struct pl_gw_spam_policy pol = {pl_gw.c.spam_reject_score,
                                    pl_gw.c.spam_tag_score,
                                    strcmp(pl_gw.c.spam_on_reject, "tag") == 0};
    int d = pl_gw_spam_decide(&r, &pol);
    char said[300];
    snprintf(said, sizeof(said), "%s, score %.2f%s%.120s%s%s%.100s",
             pl_rspamd_action_name(r.action), r.score, r.symbols[0] ? " (" : "",
             r.symbols, r.symbols[0] ? ")" : "", r.message[0] ? ": " : "",
             r.message);
    if (d == PL_GW_CHECK_REFUSE || d == PL_GW_CHECK_TEMPFAIL) {
        v->verdict = d;
        snprintf(v->reason, sizeof(v->reason), "%s: rspamd says %s",
                 d == PL_GW_CHECK_REFUSE ? "refused as spam"
                                         : "spam check asks for a retry",
                 said);
    } else {
        v->verdict = d;
        note(v, d == PL_GW_CHECK_TAG ? "rspamd (tagged as spam): " : "rspamd: ",
             said);
        if (d == PL_GW_CHECK_TAG && r.subject) {
            v->subject = r.subject;
            r.subject = NULL;
        }
    }
    pl_rspamd_result_free(&r);
}

/* ---- the stages ---- */

static void check_work(struct pl_work *w)
{
    pl__gw_check_run((struct pl_gw_check *)w);
}

static void check_done(struct pl_work *w)
{
    struct pl_gw_check *c = (struct pl_gw_check *)w;
    if (c->m && c->v.verdict == PL_GW_CHECK_TAG) {
        char *s = pl_gw_check_subject(&c->v, c->m->subject);
        if (s) {
            pl_free(c->m->subject);
            c->m->subject = s;
        }
    }
    if (c->v.verdict == PL_GW_CHECK_REFUSE ||
        c->v.verdict == PL_GW_CHECK_TEMPFAIL)
        pl_log_info("check", "message from %s: %s", c->from ? c->from : "?",
                    c->v.reason);
    pl_gw_db_submit(c->next);
}

void pl_gw_check_submit(struct pl_gw_check *c, struct pl_work *next)
{
    c->next = next;
    if (!checkq) {
        pl_gw_db_submit(next);
        return;
    }
    c->w.work = check_work;
    c->w.done = check_done;
    pl_workq_submit(checkq, pl_gw.loop, &c->w);
}

int pl__gw_check_insert_db(const struct pl_gw_msg *m,
                           const struct pl_gw_verdict *v)
{
    struct pl_gwq *q = pl_gw.db;
    const char *me = pl_gw.c.instance;
    if (v->verdict == PL_GW_CHECK_TEMPFAIL)
        return PL_EAGAIN;
    if (v->verdict == PL_GW_CHECK_REFUSE) {
        /* Stored refused in one transaction: never seen as queued. */
        int rc = pl__gwq_begin(q);
        if (rc == PL_OK)
            rc = pl__gwq_end(q, pl__gwq_insert_tx(q, m, me, v->reason));
        return rc == PL_OK ? PL_EFORBIDDEN : rc;
    }
    int rc = pl_gwq_insert(q, m, me);
    if (rc == PL_OK && v->note[0])
        pl_gwq_history_add(q, m->id, PL_GW_QUEUED, me, v->note);
    return rc;
}
