/*
 * route.c - the cross-channel routing of the running gateway (cross.h):
 * e-mail recipients that are phone numbers, e-mail into the sms queue,
 * SMS into the mail queue, the RFC 3461 parameters a DSN needs, and the
 * report SMS to phone senders.  Everything here but
 * pl__gw_mail_rcpt_number runs on the database thread.
 *
 * Tables: dsn_params (message id -> NOTIFY bits, ORCPT, ENVID), created
 * here on first use; peers (queue.c) with its channel column: the last
 * correspondent of a phone number, an IM user or an e-mail address.
 *
 * Loops: a report is a "system" message, and system messages are never
 * reported on (pl__gw_report_db only reports im, mail and sms senders);
 * nothing is reported to the gateway's own sender number.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <sqlite3.h>

#include "alloc.h"
#include "error.h"
#include "gateway/address.h"
#include "gateway/core.h"
#include "gateway/cross.h"
#include "log.h"

/* ---- e-mail recipients that are phone numbers ---- */

char *pl__gw_mail_rcpt_number(const char *rcpt)
{
    if (!pl_gw.c.mail_to_sms || !pl_gw.c.mail_domain[0])
        return NULL;
    const char *at = strrchr(rcpt, '@');
    if (!at || at == rcpt || strcasecmp(at + 1, pl_gw.c.mail_sms_domain) != 0)
        return NULL;
    char local[80];
    if ((size_t)(at - rcpt) >= sizeof(local))
        return NULL;
    memcpy(local, rcpt, (size_t)(at - rcpt));
    local[at - rcpt] = '\0';
    char *num = NULL;
    if (pl_gw_e164(local, pl_gw.c.default_cc, &num) != PL_OK)
        return NULL;
    return num;
}

/* ---- RFC 3461 parameters ---- */

static int dsn_table(void)
{
    static int ready;
    if (!ready && sqlite3_exec(pl__gwq_db(pl_gw.db),
                               "CREATE TABLE IF NOT EXISTS dsn_params("
                               "id TEXT PRIMARY KEY, notify INTEGER NOT NULL,"
                               " orcpt TEXT, envid TEXT)",
                               NULL, NULL, NULL) == SQLITE_OK)
        ready = 1;
    return ready;
}

void pl__gw_dsn_params_set_db(const char *id, unsigned notify,
                              const char *orcpt, const char *envid)
{
    if ((!notify && !orcpt && !envid) || !dsn_table())
        return;
    sqlite3_stmt *st = NULL;
    sqlite3 *db = pl__gwq_db(pl_gw.db);
    if (sqlite3_prepare_v2(db,
                           "INSERT OR REPLACE INTO dsn_params(id, notify,"
                           " orcpt, envid) VALUES(?,?,?,?)",
                           -1, &st, NULL) != SQLITE_OK)
        return;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int(st, 2, (int)notify);
    if (orcpt)
        sqlite3_bind_text(st, 3, orcpt, -1, SQLITE_TRANSIENT);
    if (envid)
        sqlite3_bind_text(st, 4, envid, -1, SQLITE_TRANSIENT);
    if (sqlite3_step(st) != SQLITE_DONE)
        pl_log_warn("mail", "message %s: DSN parameters not stored: %s", id,
                    sqlite3_errmsg(db));
    sqlite3_finalize(st);
}

void pl__gw_dsn_params_get_db(const char *id, unsigned *notify, char **orcpt,
                              char **envid)
{
    *notify = 0;
    *orcpt = *envid = NULL;
    sqlite3_stmt *st = NULL;
    if (!dsn_table() ||
        sqlite3_prepare_v2(pl__gwq_db(pl_gw.db),
                           "SELECT notify, orcpt, envid FROM dsn_params"
                           " WHERE id = ?",
                           -1, &st, NULL) != SQLITE_OK)
        return;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
    if (sqlite3_step(st) == SQLITE_ROW) {
        *notify = (unsigned)sqlite3_column_int(st, 0);
        const unsigned char *o = sqlite3_column_text(st, 1);
        const unsigned char *e = sqlite3_column_text(st, 2);
        *orcpt = o ? pl_strdup((const char *)o) : NULL;
        *envid = e ? pl_strdup((const char *)e) : NULL;
    }
    sqlite3_finalize(st);
}

/* ---- e-mail to SMS ---- */

int pl__gw_mail_to_sms_db(const char *number, const char *sender,
                          const char *return_path, const char *subject,
                          const char *text, const char *hdr, const char *rcpt,
                          unsigned notify, const char *orcpt, const char *envid)
{
    char *sms = NULL;
    int cut = 0;
    if (pl_gw_mail_sms_text(sender, subject, text, (unsigned)pl_gw.c.max_parts,
                            &sms, &cut) != PL_OK)
        return PL_EINVAL;
    struct pl_gw_msg m = {0};
    pl_gw_new_id(m.id);
    m.dest = (char *)"sms";
    m.src_channel = (char *)"mail";
    m.src_addr = (char *)sender;
    m.dst_channel = (char *)"sms";
    m.dst_addr = (char *)number;
    m.text = sms;
    m.subject = (char *)subject;
    m.return_path = (char *)return_path;
    m.orig_headers = (char *)hdr;
    m.orig_rcpt = (char *)rcpt;
    m.created = m.next_attempt = pl_gw_now();
    m.expires = m.created + pl_gw.c.expiry_ms;
    int rc = pl_gwq_insert(pl_gw.db, &m, pl_gw.c.instance);
    if (rc == PL_OK) {
        pl__gw_dsn_params_set_db(m.id, notify, orcpt, envid);
        if (cut) {
            char d[96];
            snprintf(d, sizeof(d), "text cut to fit %ld SMS parts",
                     pl_gw.c.max_parts);
            pl_gwq_history_add(pl_gw.db, m.id, PL_GW_QUEUED, pl_gw.c.instance,
                               d);
        }
        /* An SMS reply from that number goes back to the sender. */
        pl_gwq_peer_set_in(pl_gw.db, number, "mail", sender, pl_gw_now());
    } else {
        pl_log_error("mail", "while storing an e-mail for %s: %s", number,
                     pl_gwq_error(pl_gw.db));
    }
    pl_free(sms);
    return rc;
}

/* ---- SMS to e-mail ---- */

/* Records a refused message from a phone and reports it. */
static void refuse(const char *number, const char *dst_channel, const char *dst,
                   const char *text, const char *why)
{
    struct pl_gw_msg m = {0};
    pl_gw_new_id(m.id);
    m.dest = (char *)dst_channel;
    m.src_channel = (char *)"sms";
    m.src_addr = (char *)number;
    m.dst_channel = (char *)dst_channel;
    m.dst_addr = (char *)dst;
    m.text = (char *)text;
    m.created = m.next_attempt = pl_gw_now();
    m.expires = m.created + pl_gw.c.expiry_ms;
    if (pl_gwq_insert(pl_gw.db, &m, pl_gw.c.instance) != PL_OK ||
        pl_gwq_finish(pl_gw.db, m.id, pl_gw.c.instance, PL_GW_REFUSED, why) !=
            PL_OK)
        return;
    m.state = PL_GW_REFUSED;
    pl__gw_report_db(&m, why);
}

int pl__gw_sms_to_mail_db(const char *number, const char *text)
{
    if (!pl_gw.c.sms_to_mail || !pl_gw.c.mail_domain[0])
        return 0;
    char *addr = NULL, *body = NULL, *channel = NULL, *peer = NULL;
    int rc = pl_gw_sms_mail_split(text, &addr, &body);
    if (rc == PL_EINVAL) {
        refuse(number, "mail", "(none)", text,
               "no text after the e-mail address");
        return 1;
    }
    if (rc != PL_OK) {
        if (pl_gwq_peer_get_in(pl_gw.db, number, &channel, &peer) != PL_OK ||
            strcmp(channel, "mail") != 0) {
            pl_free(channel);
            pl_free(peer);
            return 0; /* for the IM side */
        }
        addr = peer;
        body = pl_strdup(text);
        pl_free(channel);
    }
    if ((size_t)strlen(body) > (size_t)pl_gw.c.mail_max_text) {
        refuse(number, "mail", addr, body, "too long for an e-mail");
    } else {
        struct pl_gw_msg m = {0};
        char subject[64];
        snprintf(subject, sizeof(subject), "SMS from %s", number);
        pl_gw_new_id(m.id);
        m.dest = (char *)"mail";
        m.src_channel = (char *)"sms";
        m.src_addr = (char *)number;
        m.dst_channel = (char *)"mail";
        m.dst_addr = addr;
        m.text = body;
        m.subject = subject;
        m.created = m.next_attempt = pl_gw_now();
        m.expires = m.created + pl_gw.c.expiry_ms;
        if (pl_gwq_insert(pl_gw.db, &m, pl_gw.c.instance) != PL_OK)
            pl_log_error("sms", "while storing an SMS for %s: %s", addr,
                         pl_gwq_error(pl_gw.db));
    }
    pl_free(addr);
    pl_free(body);
    return 1;
}

/* ---- reports to phone senders ---- */

void pl__gw_sms_report_db(const struct pl_gw_msg *m, const char *why)
{
    if (!pl_gw.c.sms_reports || strcmp(m->src_channel, "sms") != 0)
        return;
    const char *tmpl = m->state == PL_GW_DELIVERED ? pl_gw.c.report_delivered
                       : m->state == PL_GW_FAILED  ? pl_gw.c.report_failed
                       : m->state == PL_GW_EXPIRED ? pl_gw.c.report_expired
                       : m->state == PL_GW_REFUSED ? pl_gw.c.report_refused
                                                   : NULL;
    if (!tmpl || !tmpl[0])
        return;
    /* Never to the gateway's own number (a report would answer itself). */
    char *own = NULL;
    if (pl_gw.c.sms_sender[0] &&
        pl_gw_e164(pl_gw.c.sms_sender, pl_gw.c.default_cc, &own) == PL_OK &&
        strcmp(own, m->src_addr) == 0) {
        pl_free(own);
        return;
    }
    pl_free(own);
    /* The recipient as the phone user knows it: an IM user's bare JID. */
    char dst[600];
    const char *slash = strchr(m->dst_addr, '/');
    snprintf(dst, sizeof(dst), "%.*s",
             slash ? (int)(slash - m->dst_addr) : (int)strlen(m->dst_addr),
             m->dst_addr);
    char *text = pl_gw_report_text(tmpl, dst, why ? why : "", m->id);
    if (!text[0]) {
        pl_free(text);
        return;
    }
    struct pl_gw_msg r = {0};
    pl_gw_new_id(r.id);
    r.dest = (char *)"sms";
    r.src_channel = (char *)"system";
    r.src_addr = pl_gw.c.sms_domain;
    r.dst_channel = (char *)"sms";
    r.dst_addr = m->src_addr;
    r.sender_msgid = (char *)m->id; /* the message it reports on */
    r.text = text;
    r.created = r.next_attempt = pl_gw_now();
    r.expires = r.created + pl_gw.c.expiry_ms;
    if (pl_gwq_insert(pl_gw.db, &r, pl_gw.c.instance) != PL_OK)
        pl_log_error("sms", "while queueing the report on %s: %s", m->id,
                     pl_gwq_error(pl_gw.db));
    pl_free(text);
}
