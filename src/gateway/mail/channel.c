/*
 * channel.c - the e-mail channel of parley-gateway: IM to e-mail through
 * a relay, e-mail (SMTP or LMTP, e.g. from Postfix) to IM, and delivery
 * status notifications (RFC 3464) back to e-mail senders.
 *
 * Out (pl_gw_mail_from_im, pl_gw_mail_kick): a message from an IM user
 * to alice\40example.org@mail.<host> is stored in the "mail" queue; the
 * queue is claimed in batches like "sms" (queue.c leases) and each
 * message is built by mime.c (From: the user's localpart at the first of
 * mail.recipient_domains, so a reply comes back through the inbound
 * side; Message-ID <queue id@mail.hostname>; In-Reply-To the Message-ID
 * of the last e-mail that correspondent sent the user) and sent by
 * send.c on the "smtp" work queue.  2xx: sent; 4xx or no answer: queued
 * again with backoff until it expires; 5xx: failed.  Failed and expired
 * are reported to the IM sender as error messages (im.c).  DSNs queued
 * by this file go through the same queue, with a null reverse-path.
 *
 * In (the listeners of mail.lmtp and mail.smtp, smtp_listen.c): each
 * RCPT is resolved on the database thread: a verified link of channel
 * "mail" (the address a user linked), else local@D for D one of
 * mail.recipient_domains is local@mail.im_host; anything else is
 * 550 5.1.1 at RCPT.  The policy (policy.h) decides at RCPT too (550 5.7.1
 * denied, 451 4.7.1 rate or quota); DATA counts the daily quota.  DATA is answered only once the message is
 * committed, one row per recipient (LMTP: one reply each): it is parsed
 * by mime.c and handed to the IM user, through the outbox, as a message
 * from the sender's escaped address at the mail domain, with its
 * subject and text, and recorded as sent.  If parleyd answers with an
 * error (no such account), the message fails and its sender gets a DSN.
 * Before it is stored, the content checks (check.h) see the message as
 * received: a virus is 550 5.7.1 and spam 554 5.7.1 at the end of DATA
 * (stored as refused, no DSN), a checker down with check.fail closed
 * 451 4.7.1; tagged spam gets check.spam.tag before its subject.  An IM
 * sender refused by them gets a stanza error (im.c).
 *
 * Threads: the loop runs the listeners and the scheduling; SQL and MIME
 * parsing run on the database thread, SMTP out on the "smtp" threads.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "alloc.h"
#include "error.h"
#include "gateway/address.h"
#include "gateway/check.h"
#include "gateway/core.h"
#include "gateway/cross.h"
#include "gateway/mail/dsn.h"
#include "gateway/mail/mime.h"
#include "gateway/mail/send.h"
#include "gateway/mail/smtp_listen.h"
#include "gateway/policy.h"
#include "jid.h"
#include "log.h"
#include "stanza.h"

struct pending; /* an inbound verdict being worked out */

static struct {
    int claiming;
    long inflight;
    struct pl_timer poll;
    struct pl_smtp_server *lmtp_unix, *lmtp_tcp, *smtp_tcp;
    struct pl_mail_relay relay;
    char relay_host[256];
    struct pending *pending; /* list, so a closed session is forgotten */
    int stopping;
} M;

/* ---- addresses ---- */

/* The n-th (0-based) of the comma-separated recipient domains into out;
 * 0 if there is none. */
static int rcpt_domain(size_t n, char *out, size_t outlen)
{
    const char *p = pl_gw.c.mail_rcpt_domains;
    for (;;) {
        while (*p == ' ' || *p == ',')
            p++;
        if (!*p)
            return 0;
        size_t len = strcspn(p, ", ");
        if (n-- == 0) {
            snprintf(out, outlen, "%.*s", (int)len, p);
            return 1;
        }
        p += len;
    }
}

/* The IM user (bare JID, new string) an inbound recipient belongs to, or
 * NULL.  Database thread. */
static char *resolve_rcpt(const char *rcpt)
{
    char *jid = NULL;
    if (pl_gwq_link_owner(pl_gw.db, "mail", rcpt, &jid) == PL_OK)
        return jid;
    const char *at = strrchr(rcpt, '@');
    if (!at || at == rcpt)
        return NULL;
    char d[256];
    for (size_t i = 0; rcpt_domain(i, d, sizeof(d)); i++) {
        if (strcasecmp(d, at + 1) != 0)
            continue;
        char buf[600];
        snprintf(buf, sizeof(buf), "%.*s@%s", (int)(at - rcpt), rcpt,
                 pl_gw.c.mail_im_host);
        struct pl_jid *j = NULL;
        if (pl_jid_parse(pl_str_c(buf), &j) != PL_OK)
            return NULL;
        char *r = j->local && !j->resource ? pl_strdup(j->bare) : NULL;
        pl_jid_free(j);
        return r;
    }
    return NULL;
}

/* ---- out: IM to e-mail ---- */

struct accept_job {
    struct pl_work w;
    struct pl_gw_msg *m;
    struct pl_stanza *orig;
    struct pl_gw_decision pd; /* the policy's (policy.h) */
    struct pl_gw_check chk;   /* the content checks (check.h) */
    void *hold;               /* the stanza's XEP-0198 ack (component.c) */
};

static void accept_work(struct pl_work *w)
{
    struct accept_job *j = (struct accept_job *)w;
    w->result = pl__gw_admit_db(j->m, &j->pd, PL_GW_COMMIT_INSERT, &j->chk.v);
    if (w->result != PL_OK && w->result != PL_EPOLICY_VIOLATION &&
        w->result != PL_EFORBIDDEN && w->result != PL_EAGAIN)
        pl_log_error("mail", "while storing message %s: %s", j->m->id,
                     pl_gwq_error(pl_gw.db));
}

static void accept_done(struct pl_work *w)
{
    struct accept_job *j = (struct accept_job *)w;
    if (w->result == PL_EPOLICY_VIOLATION)
        pl__gw_im_refused(j->orig, &j->pd, j->m->id);
    else if (w->result == PL_EFORBIDDEN || w->result == PL_EAGAIN)
        pl__gw_check_refusal(j->orig, w->result, &j->chk.v);
    else if (w->result != PL_OK)
        pl__gw_im_error(j->orig, "wait", "internal-server-error",
                        "the gateway could not store the message");
    else
        pl_gw_mail_kick();
    pl_gw_verdict_free(&j->chk.v);
    pl_gw_msg_free(j->m);
    pl_stanza_unref(j->orig);
    pl_gwc_release(j->hold);
    pl_free(j);
}

void pl_gw_mail_from_im(struct pl_stanza *st, const char *from_full,
                        const char *addr)
{
    struct pl_jid *from = NULL;
    if (pl_jid_parse(pl_str_c(from_full), &from) != PL_OK || !from->local ||
        strcmp(from->domain, pl_gw.c.mail_im_host) != 0) {
        pl_jid_free(from);
        char why[300];
        snprintf(why, sizeof(why), "only users of %s can send e-mail here",
                 pl_gw.c.mail_im_host);
        pl__gw_im_error(st, "cancel", "not-allowed", why);
        return;
    }
    struct pl_node *root = pl_stanza_root(st);
    struct pl_node *body = pl_node_child(root, "body", PL_NS_CLIENT);
    size_t len = 0;
    const char *text = pl_node_text(st, body, &len);
    if (len == 0 || len > (size_t)pl_gw.c.mail_max_text) {
        char why[160];
        snprintf(why, sizeof(why), "the text must be 1 to %ld bytes",
                 pl_gw.c.mail_max_text);
        pl__gw_im_error(st, "modify", "not-acceptable", why);
        pl_jid_free(from);
        return;
    }
    struct pl_gw_msg *m = pl_calloc(1, sizeof(*m));
    pl_gw_new_id(m->id);
    m->dest = pl_strdup("mail");
    m->src_channel = pl_strdup("im");
    m->src_addr = pl_strdup(from_full);
    m->dst_channel = pl_strdup("mail");
    m->dst_addr = pl_strdup(addr);
    const char *id = pl_stanza_attr(st, "id");
    m->sender_msgid = id ? pl_strdup(id) : NULL;
    m->want_receipt = 0;
    m->text = pl_strndup(text, len);
    m->links = pl_gw_media_oob(st); /* fetched and attached (media.c) */
    struct pl_node *subj = pl_node_child(root, "subject", PL_NS_CLIENT);
    if (subj)
        m->subject = pl_strdup(pl_node_text(st, subj, NULL));
    m->created = m->next_attempt = pl_gw_now();
    m->expires = m->created + pl_gw.c.expiry_ms;
    struct accept_job *j = pl_calloc(1, sizeof(*j));
    j->w.work = accept_work;
    j->w.done = accept_done;
    j->m = m;
    j->orig = pl_stanza_ref(st);
    j->hold = pl_gwc_hold();
    struct pl_gw_policy_req pr = {"im", from->bare, "mail", addr};
    int v = pl_gw_policy_check(&pr, 0, &j->pd);
    pl_jid_free(from);
    pl__gw_admit_submit(&j->w, v, &j->pd, &j->chk, m);
}

enum outcome {
    O_SENT = PL_GW_OUT_SENT,
    O_RETRY = PL_GW_OUT_RETRY,
    O_FAILED = PL_GW_OUT_FAILED
};

struct send_job {
    struct pl_work w;
    struct pl_gw_msg *m;
    char *in_reply_to; /* thread, or NULL */
    int outcome;
    char detail[1200];
    int state;
};

static void send_work(struct pl_work *w)
{
    struct send_job *j = (struct send_job *)w;
    struct pl_gw_msg *m = j->m;
    struct pl_buf msg = {0};
    char from[600] = "";
    int rc = PL_OK;
    if (strcmp(m->src_channel, "system") == 0) {
        pl_buf_append_str(&msg, m->text); /* a DSN, built already */
    } else if (strcmp(m->src_channel, "sms") == 0) {
        /* From the number at the SMS mail domain: a reply comes back as
         * e-mail -> SMS (route.c). */
        char mid[PL_GW_ID_LEN + 300];
        snprintf(from, sizeof(from), "%s@%s", m->src_addr,
                 pl_gw.c.mail_sms_domain);
        snprintf(mid, sizeof(mid), "%s@%s", m->id, pl_gw.c.mail_hostname);
        const char *to[1] = {m->dst_addr};
        struct pl_mail_out o = {
            .from = from,
            .from_name = m->src_addr,
            .to = to,
            .nto = 1,
            .subject = m->subject,
            .text = m->text,
            .in_reply_to = j->in_reply_to,
            .id_domain = pl_gw.c.mail_hostname,
            .message_id = mid,
        };
        rc = pl_mail_build(&o, &msg, NULL);
    } else {
        char dom[256] = "", mid[PL_GW_ID_LEN + 300];
        rcpt_domain(0, dom, sizeof(dom));
        const char *at = strchr(m->src_addr, '@');
        const char *slash = strchr(m->src_addr, '/');
        size_t blen = slash ? (size_t)(slash - m->src_addr)
                            : strlen(m->src_addr);
        char bare[600];
        snprintf(bare, sizeof(bare), "%.*s", (int)blen, m->src_addr);
        snprintf(from, sizeof(from), "%.*s@%s",
                 at ? (int)(at - m->src_addr) : 0, m->src_addr, dom);
        snprintf(mid, sizeof(mid), "%s@%s", m->id, pl_gw.c.mail_hostname);
        const char *to[1] = {m->dst_addr};
        struct pl_gw_media_files f = {0};
        if (m->links && pl__gw_media_fetch(m->text, m->links, &f, j->detail,
                                           sizeof(j->detail)) != PL_OK) {
            j->outcome = O_RETRY; /* a file server down: the e-mail waits */
            pl_buf_reset(&msg);
            return;
        }
        struct pl_mail_out o = {
            .from = from,
            .from_name = bare,
            .to = to,
            .nto = 1,
            .subject = m->subject,
            .text = f.text ? f.text : m->text,
            .links = f.links,
            .nlinks = f.nlinks,
            .att = f.att,
            .natt = f.natt,
            .in_reply_to = j->in_reply_to,
            .id_domain = pl_gw.c.mail_hostname,
            .message_id = mid,
        };
        rc = pl_mail_build(&o, &msg, NULL);
        pl__gw_media_files_free(&f);
    }
    if (rc != PL_OK) {
        j->outcome = O_FAILED;
        snprintf(j->detail, sizeof(j->detail),
                 "the e-mail could not be "
                 "built (bad address?)");
        pl_buf_reset(&msg);
        return;
    }
    const char *to[1] = {m->dst_addr};
    struct pl_mail_send_result res;
    rc = pl_mail_send(&M.relay, from, to, 1,
                      (struct pl_str){msg.data + msg.off, msg.len}, &res);
    pl_buf_reset(&msg);
    j->outcome = rc == PL_OK ? O_SENT : rc == PL_EAGAIN ? O_RETRY : O_FAILED;
    /* res.text carries the reply code when there was a reply. */
    snprintf(j->detail, sizeof(j->detail), "relay %s: %s%s%s", M.relay_host,
             rc == PL_OK ? "accepted: " : "",
             res.code ? "" : "no answer: ", res.text);
}

static void outcome_work(struct pl_work *w)
{
    struct send_job *j = (struct send_job *)w;
    w->result = pl__gw_outcome_db(j->m, (enum pl_gw_outcome)j->outcome, 1,
                                  j->detail, "mail", &j->state);
}

static void outcome_done(struct pl_work *w)
{
    struct send_job *j = (struct send_job *)w;
    pl_log_debug("mail", "message %s: %s", j->m->id, j->detail);
    pl_gw_msg_free(j->m);
    pl_free(j->in_reply_to);
    pl_free(j);
    M.inflight--;
    pl_gw_outbox_kick();
    pl_gw_mail_kick();
}

static void send_done(struct pl_work *w)
{
    w->work = outcome_work;
    w->done = outcome_done;
    pl_gw_db_submit(w);
}

struct claim_job {
    struct pl_work w;
    int max;
    struct pl_gw_msg **v;
    char **irt; /* In-Reply-To per message */
    int n;
    int dsn; /* DSNs were queued (kick again) */
};

static void claim_work(struct pl_work *w)
{
    struct claim_job *j = (struct claim_job *)w;
    w->result = pl_gwq_claim(pl_gw.db, "mail", pl_gw.c.instance, pl_gw_now(),
                             pl_gw.c.lease_ms, j->max, &j->v, &j->n);
    if (w->result != PL_OK)
        return;
    j->irt = pl_calloc((size_t)j->n + 1, sizeof(*j->irt));
    for (int i = 0; i < j->n; i++) {
        struct pl_gw_msg *m = j->v[i];
        if (m->state == PL_GW_EXPIRED) {
            pl__gw_report_db(m, "its expiry passed");
        } else if (strcmp(m->src_channel, "sms") == 0) {
            pl_gwq_thread_get(pl_gw.db, m->dst_addr, m->src_addr, &j->irt[i]);
        } else if (strcmp(m->src_channel, "im") == 0) {
            const char *slash = strchr(m->src_addr, '/');
            char *bare = slash ? pl_strndup(m->src_addr,
                                            (size_t)(slash - m->src_addr))
                               : pl_strdup(m->src_addr);
            pl_gwq_thread_get(pl_gw.db, m->dst_addr, bare, &j->irt[i]);
            pl_free(bare);
        }
    }
}

static void claim_done(struct pl_work *w)
{
    struct claim_job *j = (struct claim_job *)w;
    M.claiming = 0;
    int full = w->result == PL_OK && j->n == j->max;
    if (w->result != PL_OK)
        j->n = 0;
    int expired = 0;
    for (int i = 0; i < j->n; i++) {
        if (j->v[i]->state != PL_GW_SENDING) {
            expired = 1;
            pl_gw_msg_free(j->v[i]);
            pl_free(j->irt[i]);
            continue;
        }
        struct send_job *s = pl_calloc(1, sizeof(*s));
        s->w.work = send_work;
        s->w.done = send_done;
        s->m = j->v[i];
        s->in_reply_to = j->irt[i];
        M.inflight++;
        pl_workq_submit(pl_gw.smtpq, pl_gw.loop, &s->w);
    }
    pl_free(j->v);
    pl_free(j->irt);
    pl_free(j);
    if (expired) {
        pl_gw_outbox_kick();
        full = 1; /* DSNs for expired e-mail may wait */
    }
    if (full)
        pl_gw_mail_kick();
}

void pl_gw_mail_kick(void)
{
    if (!pl_gw.c.mail_domain[0] || M.claiming || M.stopping ||
        M.inflight >= pl_gw.c.batch)
        return;
    M.claiming = 1;
    struct claim_job *j = pl_calloc(1, sizeof(*j));
    j->w.work = claim_work;
    j->w.done = claim_done;
    j->max = (int)(pl_gw.c.batch - M.inflight);
    pl_gw_db_submit(&j->w);
}

static void on_poll(struct pl_timer *t)
{
    pl_gw_mail_kick();
    pl_timer_start(pl_gw.loop, t, (uint64_t)pl_gw.c.poll_ms);
}

/* ---- reports to e-mail senders ---- */

void pl__gw_mail_report_db(const struct pl_gw_msg *m, const char *why)
{
    /* RFC 5321 §4.5.5: never a notification to the null reverse-path. */
    if (!m->return_path || !m->return_path[0])
        return;
    /* RFC 3461: what the sender asked for with NOTIFY (cross.c). */
    unsigned notify = 0;
    char *orcpt = NULL, *envid = NULL;
    pl__gw_dsn_params_get_db(m->id, &notify, &orcpt, &envid);
    if (!pl_gw_dsn_wanted(notify, m->state)) {
        pl_free(orcpt);
        pl_free(envid);
        return;
    }
    int ok = m->state == PL_GW_DELIVERED;
    const char *semi = orcpt ? strchr(orcpt, ';') : NULL;
    char diag[700];
    snprintf(diag, sizeof(diag), "X-Parley; %s (message %s)",
             why ? why : pl_gw_state_name(m->state), m->id);
    struct pl_dsn_rcpt r = {
        .final_recipient = m->orig_rcpt ? m->orig_rcpt : m->dst_addr,
        .original_recipient = semi ? semi + 1 : NULL,
        .action = ok ? PL_DSN_DELIVERED : PL_DSN_FAILED,
        /* RFC 3463: 5.4.7 delivery time expired; 5.1.1 no such user;
         * 5.0.0 the SMS side said no. */
        .status = ok                                   ? "2.0.0"
                  : m->state == PL_GW_EXPIRED          ? "5.4.7"
                  : strcmp(m->dst_channel, "sms") == 0 ? "5.0.0"
                                                       : "5.1.1",
        .diagnostic = diag,
        .last_attempt = (time_t)(pl_gw_now() / 1000),
    };
    char mta[300];
    snprintf(mta, sizeof(mta), "%s", pl_gw.c.mail_hostname);
    const char *hdr = m->orig_headers ? m->orig_headers : "";
    struct pl_dsn d = {
        .reporting_mta = mta,
        .from = pl_gw.c.mail_from,
        .to = m->return_path,
        .arrival = (time_t)(m->created / 1000),
        .envelope_id = envid,
        .rcpts = &r,
        .nrcpts = 1,
        .original = {hdr, strlen(hdr)},
        .id_domain = pl_gw.c.mail_hostname,
    };
    struct pl_buf out = {0};
    if (pl_dsn_build(&d, &out, NULL) != PL_OK) {
        pl_log_warn("mail", "message %s: no DSN could be built for %s", m->id,
                    m->return_path);
        pl_buf_reset(&out);
        pl_free(orcpt);
        pl_free(envid);
        return;
    }
    pl_free(orcpt);
    pl_free(envid);
    struct pl_gw_msg n = {0};
    pl_gw_new_id(n.id);
    n.dest = (char *)"mail";
    n.src_channel = (char *)"system";
    n.src_addr = pl_gw.c.mail_from;
    n.dst_channel = (char *)"mail";
    n.dst_addr = m->return_path;
    n.sender_msgid = (char *)m->id; /* the message it reports on */
    n.text = (char *)pl_buf_cstr(&out);
    n.subject = (char *)"delivery status notification";
    n.created = n.next_attempt = pl_gw_now();
    n.expires = n.created + pl_gw.c.expiry_ms;
    if (pl_gwq_insert(pl_gw.db, &n, pl_gw.c.instance) != PL_OK)
        pl_log_error("mail", "while queueing the DSN for %s: %s", m->id,
                     pl_gwq_error(pl_gw.db));
    pl_buf_reset(&out);
}

void pl__gw_mail_im_error_db(const char *id, const char *why)
{
    struct pl_gw_msg *m = NULL;
    if (pl_gwq_get(pl_gw.db, id, &m) != PL_OK)
        return;
    if ((strcmp(m->src_channel, "mail") == 0 ||
         strcmp(m->src_channel, "sms") == 0) &&
        strcmp(m->dst_channel, "im") == 0 && !pl_gw_state_is_final(m->state) &&
        pl_gwq_finish(pl_gw.db, id, pl_gw.c.instance, PL_GW_FAILED, why) ==
            PL_OK) {
        m->state = PL_GW_FAILED;
        pl__gw_report_db(m, why);
    }
    pl_gw_msg_free(m);
}

/* ---- in: e-mail to IM ---- */

struct pending {
    struct pl_work w;
    struct pending *next;
    struct pl_smtp *s; /* NULL once the session closed */
    int lmtp;          /* one verdict per recipient */
    char *rcpt;        /* RCPT: the address */
    char *from;        /* DATA: the reverse-path */
    char **rcpts;      /* DATA: the recipients */
    size_t nrcpts;
    char *raw; /* DATA: the message */
    size_t rawlen;
    int *ok;     /* per recipient: 1 stored, 0 retry, -1 refused (no text) */
    int rcpt_ok; /* RCPT: resolved */
    int ours;    /* RCPT: the domain is one of recipient_domains */
    int policy;  /* RCPT: pl__gw_policy_commit_db's answer */
    char id[PL_GW_ID_LEN + 1];    /* RCPT: the refusal's record */
    struct pl_gw_decision pd;     /* RCPT: the check; DATA: the quota */
    char *helo;                   /* DATA: the client's HELO */
    struct pl_gw_check chk;       /* DATA: the content checks (check.h) */
    struct pl_smtp_reply refusal; /* DATA: a permanent refusal, or 0 */
    unsigned *notify;             /* DATA: RFC 3461 NOTIFY per recipient */
    char **orcpt;                 /* DATA: ORCPT per recipient, or NULL */
    char *envid;                  /* DATA: ENVID, or NULL */
};

static void pending_unlink(struct pending *p)
{
    for (struct pending **pp = &M.pending; *pp; pp = &(*pp)->next)
        if (*pp == p) {
            *pp = p->next;
            break;
        }
}

static void pending_free(struct pending *p)
{
    pl_free(p->rcpt);
    pl_free(p->from);
    for (size_t i = 0; i < p->nrcpts; i++) {
        pl_free(p->rcpts[i]);
        if (p->orcpt)
            pl_free(p->orcpt[i]);
    }
    pl_free(p->rcpts);
    pl_free(p->orcpt);
    pl_free(p->notify);
    pl_free(p->envid);
    pl_free(p->raw);
    pl_free(p->ok);
    pl_free(p->helo);
    pl_gw_verdict_free(&p->chk.v);
    pl_free(p);
}

/* The policy's sender of an envelope: the reverse-path, "<>" for none. */
static const char *envelope_sender(const char *from)
{
    return from && from[0] ? from : "<>";
}

static void rcpt_work(struct pl_work *w)
{
    struct pending *p = (struct pending *)w;
    char *jid = resolve_rcpt(p->rcpt);
    int sms = 0;
    if (!jid && (jid = pl__gw_mail_rcpt_number(p->rcpt)) != NULL)
        sms = 1; /* e-mail -> SMS */
    p->rcpt_ok = jid != NULL;
    if (jid) {
        /* The policy (policy.h): a refusal is stored with its reason, an
         * allowed recipient only has its link and quota looked at. */
        struct pl_gw_msg m = {0};
        pl_gw_new_id(m.id);
        m.dest = (char *)(sms ? "sms" : "im");
        m.src_channel = (char *)"mail";
        m.src_addr = (char *)envelope_sender(p->from);
        m.dst_channel = m.dest;
        m.dst_addr = jid;
        m.text = (char *)"";
        m.return_path = p->from;
        m.orig_rcpt = p->rcpt;
        m.created = m.next_attempt = pl_gw_now();
        m.expires = m.created;
        memcpy(p->id, m.id, sizeof(p->id));
        p->policy = pl__gw_policy_commit_db(&m, &p->pd, PL_GW_COMMIT_PEEK);
    }
    pl_free(jid);
    const char *at = strrchr(p->rcpt, '@');
    char d[256];
    for (size_t i = 0; at && !p->ours && rcpt_domain(i, d, sizeof(d)); i++)
        p->ours = strcasecmp(d, at + 1) == 0;
}

static void rcpt_done(struct pl_work *w)
{
    struct pending *p = (struct pending *)w;
    pending_unlink(p);
    if (p->s) {
        struct pl_smtp_reply r = {250, "2.1.5", "recipient ok"};
        char text[500];
        /* Not a domain of ours (nor a linked address): the gateway does
         * not relay (RFC 5321 §3.6.2 leaves that to policy; RFC 3463
         * X.7.1, delivery not authorized), rather than X.1.1. */
        if (!p->rcpt_ok && !p->ours) {
            r = (struct pl_smtp_reply){550, "5.7.1", "relaying denied"};
        } else if (!p->rcpt_ok) {
            r = (struct pl_smtp_reply){550, "5.1.1", "no such user here"};
        } else if (p->policy == PL_EPOLICY_VIOLATION) {
            pl_gw_policy_smtp(&p->pd, &r.code, &r.enh);
            if (p->pd.record)
                snprintf(text, sizeof(text), "%s (message %s)", p->pd.reason,
                         p->id);
            else
                snprintf(text, sizeof(text), "%s", p->pd.reason);
            r.text = text;
        } else if (p->policy != PL_OK) {
            r = (struct pl_smtp_reply){451, "4.3.0", "try again later"};
        }
        pl_smtp_server_resume(p->s, &r, 1);
    }
    pending_free(p);
}

/* The header section of raw (up to the empty line), new string. */
static char *header_section(const char *raw, size_t len)
{
    const char *e = NULL;
    for (size_t i = 0; i + 3 < len; i++)
        if (memcmp(raw + i, "\r\n\r\n", 4) == 0) {
            e = raw + i + 2;
            break;
        }
    size_t n = e ? (size_t)(e - raw) : len;
    if (n > 65536)
        n = 65536;
    return pl_strndup(raw, n);
}

static void data_work(struct pl_work *w)
{
    struct pending *p = (struct pending *)w;
    struct pl_mail_limits lim;
    pl_mail_limits_default(&lim);
    lim.max_text = (size_t)pl_gw.c.mail_max_text;
    struct pl_mail_msg *mm = NULL;
    p->ok = pl_calloc(p->nrcpts + 1, sizeof(*p->ok));
    /* Refusals that a retry cannot change are 5xx: a 4xx would have the
     * sending MTA try again until the message expires there. */
    if (pl_mail_parse((struct pl_str){p->raw, p->rawlen}, &lim, &mm) != PL_OK) {
        p->refusal = (struct pl_smtp_reply){554, "5.6.0",
                                            "message structure not accepted"};
        return;
    }
    /* Whom the IM user sees and answers: the From, else the envelope. */
    char *sender = mm->from && strchr(mm->from, '@') ? mm->from : p->from;
    char *esc = NULL;
    if (!sender[0] || pl_gw_escape(sender, &esc) != PL_OK) {
        p->refusal = (struct pl_smtp_reply){550, "5.1.7",
                                            "no usable sender address"};
        pl_mail_msg_free(mm);
        return;
    }
    char imfrom[1024];
    snprintf(imfrom, sizeof(imfrom), "%s@%s", esc, pl_gw.c.mail_domain);
    pl_free(esc);
    char *hdr = header_section(p->raw, p->rawlen);
    char *tagged = pl_gw_check_subject(&p->chk.v, mm->subject);
    if (tagged) {
        pl_free(mm->subject);
        mm->subject = tagged;
    }
    for (size_t i = 0; i < p->nrcpts; i++) {
        char *jid = resolve_rcpt(p->rcpts[i]);
        char *num = jid ? NULL : pl__gw_mail_rcpt_number(p->rcpts[i]);
        if (num && (p->chk.v.verdict == PL_GW_CHECK_REFUSE ||
                    p->chk.v.verdict == PL_GW_CHECK_TEMPFAIL)) {
            pl_free(num); /* the checks' reply refuses it (data_done) */
            continue;
        }
        if (num) {
            int rc = pl__gw_mail_to_sms_db(num, sender, p->from, mm->subject,
                                           mm->text, hdr, p->rcpts[i],
                                           p->notify[i], p->orcpt[i], p->envid);
            p->ok[i] = rc == PL_OK ? 1 : rc == PL_EINVAL ? -1 : 0;
            pl_free(num);
            continue;
        }
        if (!jid)
            continue; /* resolved at RCPT; a link removed since */
        struct pl_gw_msg m = {0};
        pl_gw_new_id(m.id);
        m.dest = (char *)"im";
        m.src_channel = (char *)"mail";
        m.src_addr = sender;
        m.dst_channel = (char *)"im";
        m.dst_addr = jid;
        m.sender_msgid = mm->message_id;
        m.text = mm->text;
        m.subject = mm->subject;
        m.return_path = p->from;
        m.orig_headers = hdr;
        m.orig_rcpt = p->rcpts[i];
        m.created = m.next_attempt = pl_gw_now();
        m.expires = m.created + pl_gw.c.expiry_ms;
        int rc;
        if (p->chk.v.verdict == PL_GW_CHECK_REFUSE ||
            p->chk.v.verdict == PL_GW_CHECK_TEMPFAIL) {
            rc = pl__gw_check_insert_db(&m, &p->chk.v);
        } else if (mm->natt && pl_gw.c.media_service[0]) {
            /* Attachments: stored through the upload service first;
             * allowed at RCPT, counted in the sender's quota now. */
            rc = pl__gw_media_mail_db(&m, mm);
            if (rc == PL_OK &&
                pl__gw_policy_commit_db(&m, &p->pd, PL_GW_COMMIT_TALLY) !=
                    PL_OK)
                pl_log_error("mail", "while counting an e-mail for %s: %s", jid,
                             pl_gwq_error(pl_gw.db));
            if (rc == PL_OK) {
                /* media.c sends it once its files are stored */
                if (p->chk.v.note[0])
                    pl_gwq_history_add(pl_gw.db, m.id, PL_GW_QUEUED,
                                       pl_gw.c.instance, p->chk.v.note);
                p->ok[i] = 1;
            } else {
                pl_log_error("mail", "while storing an e-mail for %s: %s", jid,
                             pl_gwq_error(pl_gw.db));
            }
            pl_free(jid);
            continue;
        } else {
            /* Allowed at RCPT: counted in the sender's daily quota now. */
            rc = pl__gw_policy_commit_db(&m, &p->pd, PL_GW_COMMIT_COUNT);
        }
        if (rc == PL_OK && p->chk.v.note[0])
            pl_gwq_history_add(pl_gw.db, m.id, PL_GW_QUEUED, pl_gw.c.instance,
                               p->chk.v.note);
        if (rc != PL_OK) {
            if (rc != PL_EFORBIDDEN && rc != PL_EAGAIN)
                pl_log_error("mail", "while storing an e-mail for %s: %s", jid,
                             pl_gwq_error(pl_gw.db));
            pl_free(jid);
            continue;
        }
        p->ok[i] = 1;
        pl__gw_dsn_params_set_db(m.id, p->notify[i], p->orcpt[i], p->envid);
        struct pl_stanza *st = pl_stanza_new("message", PL_NS_CLIENT);
        pl_stanza_set_attr(st, "from", imfrom);
        pl_stanza_set_attr(st, "to", jid);
        pl_stanza_set_attr(st, "type", "normal");
        pl_stanza_set_attr(st, "id", m.id);
        struct pl_node *root = pl_stanza_root(st);
        if (mm->subject) {
            struct pl_node *sn = pl_node_add_child(st, root, "subject",
                                                   PL_NS_CLIENT);
            pl_node_add_text(st, sn, mm->subject, strlen(mm->subject));
        }
        struct pl_node *b = pl_node_add_child(st, root, "body", PL_NS_CLIENT);
        pl_node_add_text(st, b, mm->text, strlen(mm->text));
        if (mm->message_id) {
            struct pl_node *th = pl_node_add_child(st, root, "thread",
                                                   PL_NS_CLIENT);
            pl_node_add_text(st, th, mm->message_id, strlen(mm->message_id));
        }
        char *xml = pl__gw_xml(st);
        pl__gw_outbox_db(xml);
        pl_free(xml);
        pl_gwq_finish(pl_gw.db, m.id, pl_gw.c.instance, PL_GW_SENT,
                      "handed to parleyd");
        pl_free(jid);
    }
    pl_free(hdr);
    pl_mail_msg_free(mm);
}

static void data_done(struct pl_work *w)
{
    struct pending *p = (struct pending *)w;
    pending_unlink(p);
    if (p->s) {
        size_t n = p->lmtp ? p->nrcpts : 1;
        struct pl_smtp_reply *r = pl_calloc(n, sizeof(*r));
        /* SMTP has one verdict: any not stored, try again; none
         * stored and some refused, refused (a refused SMS recipient next
         * to stored ones is only logged). */
        int all = 1, any = 0, refused = 0;
        for (size_t i = 0; i < p->nrcpts; i++) {
            all &= p->ok[i] != 0;
            any |= p->ok[i] == 1;
            refused |= p->ok[i] < 0;
        }
        if (!p->lmtp && all && any && refused)
            pl_log_warn("mail",
                        "an e-mail from <%s>: a recipient had "
                        "nothing to send as SMS; the others took it",
                        p->from);
        const struct pl_gw_verdict *v = &p->chk.v;
        for (size_t i = 0; i < n; i++) {
            /* w->result: the batch that stored it did not commit */
            int ok = w->result != PL_OK ? 0
                     : p->lmtp          ? p->ok[i]
                     : !all             ? 0
                     : any              ? 1
                                        : -1;
            r[i] = ok > 0   ? (struct pl_smtp_reply){250, "2.0.0", "queued"}
                   : ok < 0 ? (struct pl_smtp_reply){554, "5.6.0",
                                                     "no text to send as SMS"}
                   : p->refusal.code
                       ? p->refusal
                       : (struct pl_smtp_reply){451, "4.3.0",
                                                "not stored, try again"};
            /* The content checks decided during DATA: the client hears it
             * now, so no DSN is needed (RFC 5321 §4.2.5; RFC 3463 5.7.1
             * refused, 4.7.1 try later); 550 for a virus, 554 for spam,
             * as clamav-milter and rspamd's milter answer. */
            if (v->verdict == PL_GW_CHECK_REFUSE)
                r[i] = (struct pl_smtp_reply){v->virus ? 550 : 554, "5.7.1",
                                              v->reason};
            else if (v->verdict == PL_GW_CHECK_TEMPFAIL)
                r[i] = (struct pl_smtp_reply){451, "4.7.1", v->reason};
        }
        pl_smtp_server_resume(p->s, r, n);
        pl_free(r);
    }
    pending_free(p);
    pl_gw_outbox_kick();
    pl_gw_media_kick();
}

static int on_event(void *data, struct pl_smtp *s,
                    const struct pl_smtp_event *ev,
                    struct pl_smtp_reply *replies)
{
    (void)replies;
    if (ev->type != PL_SMTP_EV_RCPT && ev->type != PL_SMTP_EV_DATA)
        return PL_OK;
    struct pending *p = pl_calloc(1, sizeof(*p));
    p->s = s;
    p->lmtp = data != NULL;
    if (ev->type == PL_SMTP_EV_RCPT) {
        p->rcpt = pl_strdup(ev->rcpt);
        p->from = pl_strdup(ev->from ? ev->from : "");
        /* A phone number at the SMS domain is e-mail -> SMS (route.c). */
        char *num = pl__gw_mail_rcpt_number(p->rcpt);
        struct pl_gw_policy_req pr = {"mail", envelope_sender(p->from),
                                      num ? "sms" : "im", num ? num : p->rcpt};
        pl_gw_policy_check(&pr, 0, &p->pd);
        pl_free(num);
        p->w.work = rcpt_work;
        p->w.done = rcpt_done;
    } else {
        struct pl_gw_policy_req pr = {"mail", envelope_sender(ev->from), "im",
                                      NULL};
        pl_gw_policy_quota_of(&pr, &p->pd);
        p->from = pl_strdup(ev->from ? ev->from : "");
        p->nrcpts = ev->nrcpts;
        p->rcpts = pl_calloc(ev->nrcpts + 1, sizeof(*p->rcpts));
        for (size_t i = 0; i < ev->nrcpts; i++)
            p->rcpts[i] = pl_strdup(ev->rcpts[i]);
        p->notify = pl_calloc(ev->nrcpts + 1, sizeof(*p->notify));
        p->orcpt = pl_calloc(ev->nrcpts + 1, sizeof(*p->orcpt));
        for (size_t i = 0; i < ev->nrcpts; i++) {
            p->notify[i] = ev->notifies ? ev->notifies[i] : 0;
            p->orcpt[i] = ev->orcpts && ev->orcpts[i] ? pl_strdup(ev->orcpts[i])
                                                      : NULL;
        }
        p->envid = ev->envid ? pl_strdup(ev->envid) : NULL;
        p->raw = pl_strndup(ev->message.p, ev->message.len);
        p->rawlen = ev->message.len;
        p->helo = ev->helo ? pl_strdup(ev->helo) : NULL;
        p->w.work = data_work;
        p->w.done = data_done;
    }
    p->next = M.pending;
    M.pending = p;
    if (ev->type == PL_SMTP_EV_DATA) {
        p->chk.raw = p->raw;
        p->chk.rawlen = p->rawlen;
        p->chk.from = p->from;
        p->chk.rcpt = p->nrcpts ? p->rcpts[0] : NULL;
        p->chk.helo = p->helo;
        pl_gw_check_submit(&p->chk, &p->w);
        return PL_EAGAIN;
    }
    pl_gw_db_submit(&p->w);
    return PL_EAGAIN;
}

static void on_gone(void *data, struct pl_smtp *s)
{
    (void)data;
    for (struct pending *p = M.pending; p; p = p->next)
        if (p->s == s)
            p->s = NULL;
}

static int listen_on(int lmtp, const char *address, int port, const char *path,
                     struct pl_smtp_server **out)
{
    struct pl_smtp_server_config cfg;
    pl_smtp_server_config_default(&cfg);
    cfg.smtp.proto = lmtp ? PL_SMTP_LMTP : PL_SMTP_SMTP;
    cfg.smtp.hostname = pl_gw.c.mail_hostname;
    cfg.smtp.max_size = (size_t)pl_gw.c.mail_max_size;
    cfg.smtp.max_rcpts = (unsigned)pl_gw.c.mail_max_rcpts;
    cfg.address = address;
    cfg.port = port;
    cfg.unix_path = path;
    cfg.timeout_ms = (uint32_t)pl_gw.c.mail_timeout_ms;
    cfg.max_sessions = (unsigned)pl_gw.c.mail_max_sessions;
    cfg.fn = on_event;
    cfg.data = lmtp ? (void *)&M : NULL; /* non-NULL: LMTP */
    cfg.gone = on_gone;
    /* STARTTLS on the SMTP port (mail.smtp.tls; unset: when a certificate
     * is there or can be made). */
    const char *tls = lmtp ? "none" : pl_gw.c.smtp_tls;
    cfg.smtp.tls = strcmp(tls, "required") == 0 ? PL_SMTP_TLS_REQUIRE
                   : strcmp(tls, "none") == 0   ? PL_SMTP_TLS_NONE
                                                : PL_SMTP_TLS_OFFER;
    cfg.tls_cert = pl_gw.c.smtp_tls_cert;
    cfg.tls_key = pl_gw.c.smtp_tls_key;
    cfg.tls_make_cert = (int)pl_gw.c.smtp_tls_make;
    int rc = pl_smtp_server_open(pl_gw.loop, &cfg, out);
    if (rc == PL_ETLS && !tls[0]) {
        pl_log_warn("mail", "SMTP without STARTTLS: no certificate");
        cfg.smtp.tls = PL_SMTP_TLS_NONE;
        rc = pl_smtp_server_open(pl_gw.loop, &cfg, out);
    }
    if (rc != PL_OK)
        pl_log_error("mail", "cannot listen for %s on %s",
                     lmtp ? "LMTP" : "SMTP", path ? path : address);
    return rc;
}

/* mail.relay.url into M.relay. */
static int parse_relay(void)
{
    const char *u = pl_gw.c.relay_url;
    int direct = strncmp(u, "smtps://", 8) == 0;
    u += direct ? 8 : 7;
    size_t hl = strcspn(u, ":/");
    if (hl == 0 || hl >= sizeof(M.relay_host))
        return PL_EINVAL;
    memcpy(M.relay_host, u, hl);
    M.relay_host[hl] = '\0';
    M.relay.host = M.relay_host;
    M.relay.port = u[hl] == ':' ? atoi(u + hl + 1) : 0;
    M.relay.tls = direct ? PL_MAIL_TLS_DIRECT
                  : strcmp(pl_gw.c.relay_tls, "require") == 0
                      ? PL_MAIL_TLS_REQUIRE
                  : strcmp(pl_gw.c.relay_tls, "try") == 0 ? PL_MAIL_TLS_TRY
                                                          : PL_MAIL_TLS_NONE;
    M.relay.no_verify = (int)pl_gw.c.relay_no_verify;
    M.relay.ca_file = pl_gw.c.relay_ca_file[0] ? pl_gw.c.relay_ca_file : NULL;
    M.relay.user = pl_gw.c.relay_user[0] ? pl_gw.c.relay_user : NULL;
    M.relay.password = pl_gw.c.relay_pass;
    M.relay.helo = pl_gw.c.mail_hostname;
    M.relay.connect_timeout_ms = pl_gw.c.relay_connect_timeout_ms;
    M.relay.timeout_ms = pl_gw.c.relay_timeout_ms;
    return PL_OK;
}

int pl_gw_mail_start(void)
{
    if (parse_relay() != PL_OK) {
        pl_log_error("mail", "bad mail.relay.url %s", pl_gw.c.relay_url);
        return PL_EINVAL;
    }
    if (pl_gw.c.lmtp_socket[0] &&
        listen_on(1, NULL, 0, pl_gw.c.lmtp_socket, &M.lmtp_unix) != PL_OK)
        return PL_EIO;
    if (pl_gw.c.lmtp_port &&
        listen_on(1, pl_gw.c.lmtp_address, (int)pl_gw.c.lmtp_port, NULL,
                  &M.lmtp_tcp) != PL_OK)
        return PL_EIO;
    if (pl_gw.c.smtp_port &&
        listen_on(0, pl_gw.c.smtp_address, (int)pl_gw.c.smtp_port, NULL,
                  &M.smtp_tcp) != PL_OK)
        return PL_EIO;
    pl_timer_init(&M.poll, on_poll, NULL);
    pl_timer_start(pl_gw.loop, &M.poll, 0);
    return PL_OK;
}

void pl_gw_mail_stop(void)
{
    M.stopping = 1;
    pl_timer_stop(&M.poll);
    struct pl_smtp_server **v[] = {&M.lmtp_unix, &M.lmtp_tcp, &M.smtp_tcp};
    for (size_t i = 0; i < 3; i++)
        if (*v[i]) {
            pl_smtp_server_close(*v[i]);
            *v[i] = NULL;
        }
}
