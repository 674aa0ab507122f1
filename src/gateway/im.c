/*
 * im.c - the IM side of parley-gateway: stanzas parleyd routes to the
 * gateway's SMS domain, and the stanzas that report back to IM users.
 *
 * A <message/> with a <body/> to +15551234@sms.<host> is checked
 * (the localpart must normalize to E.164, the text must fit max_parts
 * SMS parts), stored in the "sms" queue (committed), and the SMS sender
 * is kicked.  Refusals are RFC 6120 §8.3 stanza errors with a <text/>:
 * jid-malformed (not a phone number), bad-request (no number at all),
 * not-acceptable (too long, or refused by the content checks, check.h),
 * internal-server-error (not stored; type wait: not checked), and the
 * policy's (policy.h: checked before the content checks and again in the
 * insert's job; refusals stored refused and answered by
 * pl__gw_im_refused).  Later
 * state changes come back as a XEP-0184 <received/> (delivered, only if
 * the sender asked with <request/> and gave an id) or as an error
 * message: recipient-unavailable (failed), remote-server-timeout
 * (expired), not-allowed (refused).  Messages without a body (chat
 * states, receipts) are dropped: SMS has nothing to carry them.  An
 * error message whose id is a queue id is parleyd bouncing an SMS or
 * e-mail the gateway delivered: that message fails and its sender is
 * told (pl__gw_mail_im_error_db).  On the mail domain, the same and
 * registration of an e-mail address (mailreg.c).
 *
 * Service discovery (XEP-0030) on the domain: identity gateway/sms (the
 * disco registry's category and type for SMS gateways, XEP-0100), the
 * features disco#info, disco#items, jabber:iq:register, urn:xmpp:receipts.
 *
 * Registration (XEP-0100 §4.1 over XEP-0077): a user links their own
 * phone number.  get: instructions and the <phone/> and <password/>
 * fields (or <registered/> with the linked number).  set with <phone/>
 * alone: a six-digit code goes to that number by SMS and the link waits,
 * unverified, for code_ttl.  set with <phone/> and the code as
 * <password/>: the link is verified (not-authorized if the code is wrong
 * or expired; conflict if another user has verified that number).  set
 * with <remove/>: the link is gone.  SMS from a number go to the IM user
 * who last wrote to it, else to the user who linked it (sms/kannel.c).
 */
#include <openssl/rand.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "alloc.h"
#include "error.h"
#include "gateway/address.h"
#include "gateway/check.h"
#include "gateway/core.h"
#include "gateway/mailreg.h"
#include "gateway/policy.h"
#include "gateway/sms/gsm.h"
#include "jid.h"
#include "log.h"
#include "stanza.h"

#define NS_DISCO_INFO "http://jabber.org/protocol/disco#info"
#define NS_DISCO_ITEMS "http://jabber.org/protocol/disco#items"
#define NS_REGISTER "jabber:iq:register"
#define NS_RECEIPTS "urn:xmpp:receipts"

/* ---- replies ---- */

/* A reply to st (from and to swapped, same id) named name of type. */
static struct pl_stanza *reply(struct pl_stanza *st, const char *type)
{
    struct pl_stanza *r = pl_stanza_new(pl_stanza_name(st), PL_NS_CLIENT);
    const char *id = pl_stanza_attr(st, "id");
    if (id)
        pl_stanza_set_attr(r, "id", id);
    pl_stanza_set_attr(r, "from", pl_stanza_attr(st, "to"));
    pl_stanza_set_attr(r, "to", pl_stanza_attr(st, "from"));
    pl_stanza_set_attr(r, "type", type);
    return r;
}

static void add_error(struct pl_stanza *r, const char *type, const char *cond,
                      const char *text)
{
    struct pl_node *e = pl_node_add_child(r, pl_stanza_root(r), "error",
                                          PL_NS_CLIENT);
    pl_node_set_attr(r, e, "type", type);
    pl_node_add_child(r, e, cond, PL_NS_STANZAS);
    if (text) {
        struct pl_node *t = pl_node_add_child(r, e, "text", PL_NS_STANZAS);
        pl_node_add_text(r, t, text, strlen(text));
    }
}

/* RFC 6120 §8.3: an error reply to st. */
static void send_error(struct pl_stanza *st, const char *type, const char *cond,
                       const char *text)
{
    struct pl_stanza *r = reply(st, "error");
    add_error(r, type, cond, text);
    pl_gwc_send(r);
    pl_stanza_unref(r);
}

char *pl__gw_im_report(const struct pl_gw_msg *m, const char *why)
{
    if (strcmp(m->src_channel, "im") != 0 || !pl_gw.c.sms_domain)
        return NULL;
    char from[1024];
    if (strcmp(m->dst_channel, "mail") == 0) {
        char *esc = NULL;
        if (pl_gw_escape(m->dst_addr, &esc) != PL_OK)
            return NULL;
        snprintf(from, sizeof(from), "%s@%s", esc, pl_gw.c.mail_domain);
        pl_free(esc);
    } else {
        snprintf(from, sizeof(from), "%s@%s", m->dst_addr, pl_gw.c.sms_domain);
    }
    struct pl_stanza *r = pl_stanza_new("message", PL_NS_CLIENT);
    pl_stanza_set_attr(r, "from", from);
    pl_stanza_set_attr(r, "to", m->src_addr);
    if (m->state == PL_GW_DELIVERED) {
        if (!m->want_receipt || !m->sender_msgid) {
            pl_stanza_unref(r);
            return NULL;
        }
        char id[PL_GW_ID_LEN + 1];
        pl_gw_new_id(id);
        pl_stanza_set_attr(r, "id", id);
        struct pl_node *rc = pl_node_add_child(r, pl_stanza_root(r), "received",
                                               NS_RECEIPTS);
        pl_node_set_attr(r, rc, "id", m->sender_msgid);
    } else if (m->state == PL_GW_FAILED || m->state == PL_GW_EXPIRED ||
               m->state == PL_GW_REFUSED) {
        if (m->sender_msgid)
            pl_stanza_set_attr(r, "id", m->sender_msgid);
        pl_stanza_set_attr(r, "type", "error");
        struct pl_node *b = pl_node_add_child(r, pl_stanza_root(r), "body",
                                              PL_NS_CLIENT);
        pl_node_add_text(r, b, m->text, strlen(m->text));
        char text[600];
        snprintf(text, sizeof(text), "%s %s: %s (message %s)",
                 m->state == PL_GW_EXPIRED  ? "expired, not delivered to"
                 : m->state == PL_GW_FAILED ? "delivery failed to"
                                            : "refused for",
                 m->dst_addr, why ? why : "", m->id);
        add_error(r, m->state == PL_GW_EXPIRED ? "wait" : "cancel",
                  m->state == PL_GW_EXPIRED  ? "remote-server-timeout"
                  : m->state == PL_GW_FAILED ? "recipient-unavailable"
                                             : "not-allowed",
                  text);
    } else {
        pl_stanza_unref(r);
        return NULL;
    }
    return pl__gw_xml(r);
}

/* ---- messages to SMS ---- */

struct accept_job {
    struct pl_work w;
    struct pl_gw_msg *m;      /* owned */
    struct pl_stanza *orig;   /* the user's message (a reference) */
    struct pl_gw_decision pd; /* the policy's (policy.h) */
    struct pl_gw_check chk;   /* the content checks (check.h) */
    void *hold;               /* the stanza's XEP-0198 ack (component.c) */
};

void pl__gw_im_refused(struct pl_stanza *st, const struct pl_gw_decision *d,
                       const char *id)
{
    const char *type, *cond;
    char text[600];
    pl_gw_policy_im_error(d, &type, &cond);
    if (d->record)
        snprintf(text, sizeof(text), "%s (message %s)", d->reason, id);
    else
        snprintf(text, sizeof(text), "%s", d->reason);
    send_error(st, type, cond, text);
}

static void accept_work(struct pl_work *w)
{
    struct accept_job *j = (struct accept_job *)w;
    w->result = pl__gw_admit_db(j->m, &j->pd, PL_GW_COMMIT_INSERT, &j->chk.v);
    if (w->result == PL_EPOLICY_VIOLATION || w->result == PL_EFORBIDDEN ||
        w->result == PL_EAGAIN)
        return; /* refused or not checked: accept_done tells the sender */
    if (w->result != PL_OK) {
        pl_log_error("im", "while storing message %s: %s", j->m->id,
                     pl_gwq_error(pl_gw.db));
    } else {
        /* Replies go to the user's bare JID: the resource may be gone. */
        const char *slash = strchr(j->m->src_addr, '/');
        char *bare = slash ? pl_strndup(j->m->src_addr,
                                        (size_t)(slash - j->m->src_addr))
                           : pl_strdup(j->m->src_addr);
        pl_gwq_peer_set(pl_gw.db, j->m->dst_addr, bare, pl_gw_now());
        pl_free(bare);
    }
}

static void accept_done(struct pl_work *w)
{
    struct accept_job *j = (struct accept_job *)w;
    if (w->result == PL_EPOLICY_VIOLATION)
        pl__gw_im_refused(j->orig, &j->pd, j->m->id);
    else if (w->result == PL_EFORBIDDEN || w->result == PL_EAGAIN)
        pl__gw_check_refusal(j->orig, w->result, &j->chk.v);
    else if (w->result != PL_OK)
        send_error(j->orig, "wait", "internal-server-error",
                   "the gateway could not store the message");
    else
        pl_gw_sms_kick();
    pl_gw_verdict_free(&j->chk.v);
    pl_log_debug("im", "message %s from %s to %s %s", j->m->id, j->m->src_addr,
                 j->m->dst_addr,
                 w->result == PL_OK                  ? "queued"
                 : w->result == PL_EPOLICY_VIOLATION ? j->pd.reason
                                                     : "not stored");
    pl_gw_msg_free(j->m);
    pl_stanza_unref(j->orig);
    pl_gwc_release(j->hold);
    pl_free(j);
}

static void im_error_back(struct pl_stanza *st);

static void on_message(struct pl_stanza *st, struct pl_jid *from,
                       struct pl_jid *to)
{
    const char *type = pl_stanza_attr(st, "type");
    if (type && strcmp(type, "error") == 0) {
        im_error_back(st); /* an SMS we delivered bounced */
        return;
    }
    if (type && strcmp(type, "groupchat") == 0)
        return;
    struct pl_node *root = pl_stanza_root(st);
    struct pl_node *body = pl_node_child(root, "body", PL_NS_CLIENT);
    if (!body)
        return; /* chat states, receipts: nothing SMS can carry */
    if (!to->local) {
        send_error(st, "modify", "bad-request",
                   "write to a phone number: +15551234@this domain");
        return;
    }
    char *number = NULL;
    if (pl_gw_e164(to->local, pl_gw.c.default_cc, &number) != PL_OK) {
        send_error(st, "modify", "jid-malformed",
                   "not a phone number (E.164: +<country><number>)");
        return;
    }
    size_t len = 0;
    const char *text = pl_node_text(st, body, &len);
    /* Files (XEP-0066 links) go in the text: the MMS equivalent. */
    char *links = pl_gw_media_oob(st);
    char *full = links ? pl_gw_media_text(text, len, links) : NULL;
    if (full) {
        text = full;
        len = strlen(full);
    }
    struct pl_gsm_plan plan;
    int rc = len > (size_t)pl_gw.c.max_text
                 ? PL_ELIMIT
                 : pl_gsm_plan(text, len, (unsigned)pl_gw.c.max_parts, &plan);
    if (rc != PL_OK) {
        pl_free(number);
        pl_free(links);
        pl_free(full);
        char why[160];
        snprintf(why, sizeof(why),
                 rc == PL_ELIMIT ? "too long for %ld SMS parts"
                                 : "no text to send (%ld parts allowed)",
                 pl_gw.c.max_parts);
        send_error(st, "modify", "not-acceptable", why);
        return;
    }
    pl_gsm_plan_free(&plan);
    struct pl_gw_msg *m = pl_calloc(1, sizeof(*m));
    pl_gw_new_id(m->id);
    m->dest = pl_strdup("sms");
    m->src_channel = pl_strdup("im");
    m->src_addr = pl_strdup(from->full);
    m->dst_channel = pl_strdup("sms");
    m->dst_addr = number;
    const char *id = pl_stanza_attr(st, "id");
    m->sender_msgid = id ? pl_strdup(id) : NULL;
    m->want_receipt = pl_node_child(root, "request", NS_RECEIPTS) != NULL;
    m->text = pl_strndup(text, len);
    m->links = links;
    pl_free(full);
    struct pl_node *subj = pl_node_child(root, "subject", PL_NS_CLIENT);
    if (subj)
        m->subject = pl_strdup(pl_node_text(st, subj, NULL));
    m->created = pl_gw_now();
    m->expires = m->created + pl_gw.c.expiry_ms;
    m->next_attempt = m->created;
    m->state = PL_GW_ACCEPTED;
    struct accept_job *j = pl_calloc(1, sizeof(*j));
    j->w.work = accept_work;
    j->w.done = accept_done;
    j->m = m;
    j->orig = pl_stanza_ref(st);
    j->hold = pl_gwc_hold();
    struct pl_gw_policy_req pr = {"im", from->bare, "sms", number};
    pl__gw_admit_submit(&j->w, pl_gw_policy_check(&pr, 0, &j->pd), &j->pd,
                        &j->chk, m);
}

void pl__gw_admit_submit(struct pl_work *w, int verdict,
                         const struct pl_gw_decision *pd,
                         struct pl_gw_check *chk, struct pl_gw_msg *m)
{
    if (verdict != PL_GW_ALLOW) {
        if (!pd->record) {
            /* Refused again within the second: answered, not stored. */
            w->result = PL_EPOLICY_VIOLATION;
            w->done(w);
            return;
        }
        pl_gw_db_submit(w); /* stored refused, no checks needed */
        return;
    }
    chk->m = m;
    chk->from = m->src_addr;
    chk->rcpt = m->dst_addr;
    pl_gw_check_submit(chk, w);
}

/* ---- registration (XEP-0100 / XEP-0077) ---- */

enum reg_op {
    REG_GET,
    REG_REQUEST,
    REG_VERIFY,
    REG_REMOVE
};

struct reg_job {
    struct pl_work w;
    int op;                   /* enum reg_op */
    char *jid;                /* the user's bare JID */
    char *phone;              /* E.164, or NULL */
    char *code;               /* REG_REQUEST: the new code; REG_VERIFY: given */
    struct pl_gwq_link *link; /* REG_GET: the link, or NULL */
    struct pl_stanza *iq;     /* the request (a reference) */
};

static void reg_work(struct pl_work *w)
{
    struct reg_job *j = (struct reg_job *)w;
    struct pl_gwq *q = pl_gw.db;
    switch (j->op) {
    case REG_GET:
        w->result = pl_gwq_link_get(q, "sms", j->jid, &j->link);
        if (w->result == PL_ENOT_FOUND)
            w->result = PL_OK;
        break;
    case REG_REMOVE: w->result = pl_gwq_link_remove(q, "sms", j->jid); break;
    case REG_REQUEST:
    case REG_VERIFY:
        w->result = pl__gw_reg_db("sms", j->jid, j->phone, j->op == REG_VERIFY,
                                  j->code);
        break;
    }
}

/* For mailreg.c too (database thread): request (verify 0: stores an
 * unverified link of jid to addr with code, expiring after code_ttl) or
 * verify (verify 1: the code stored for jid and addr is code) a link
 * of channel.  PL_ECONFLICT when another user owns addr;
 * PL_ENOT_AUTHORIZED when the code is wrong, expired or unknown. */
int pl__gw_reg_db(const char *channel, const char *jid, const char *addr,
                  int verify, const char *code)
{
    struct pl_gwq *q = pl_gw.db;
    char *owner = NULL;
    struct pl_gwq_link *l = NULL;
    int rc;
    if (pl_gwq_link_owner(q, channel, addr, &owner) == PL_OK &&
        strcmp(owner, jid) != 0) {
        pl_free(owner);
        return PL_ECONFLICT;
    }
    pl_free(owner);
    if (!verify) {
        struct pl_gwq_link nl = {(char *)jid, (char *)addr, (char *)code, 0,
                                 pl_gw_now() + pl_gw.c.code_ttl_ms};
        return pl_gwq_link_set(q, channel, &nl);
    }
    rc = pl_gwq_link_get(q, channel, jid, &l);
    /* E-mail addresses compare without case; phone numbers are E.164. */
    if (rc == PL_OK && (!l->code || strcasecmp(l->address, addr) != 0 ||
                        strcmp(l->code, code) != 0 || l->expires < pl_gw_now()))
        rc = PL_ENOT_AUTHORIZED;
    if (rc == PL_ENOT_FOUND)
        rc = PL_ENOT_AUTHORIZED;
    if (rc == PL_OK) {
        struct pl_gwq_link nl = {(char *)jid, l->address, NULL, 1, 0};
        rc = pl_gwq_link_set(q, channel, &nl);
    }
    pl_gwq_link_free(l);
    return rc;
}

/* For mailreg.c too: the XEP-0077 error reply to a registration iq that
 * failed with rc (pl__gw_reg_db's codes, PL_ENOT_FOUND: not registered);
 * what names the address ("number"). */
void pl__gw_reg_error(struct pl_stanza *iq, int rc, const char *what)
{
    char conflict[80];
    snprintf(conflict, sizeof(conflict), "another user has linked this %s",
             what);
    send_error(iq, rc == PL_ENOT_AUTHORIZED ? "auth" : "cancel",
               rc == PL_ECONFLICT         ? "conflict"
               : rc == PL_ENOT_AUTHORIZED ? "not-authorized"
               : rc == PL_ENOT_FOUND      ? "item-not-found"
                                          : "internal-server-error",
               rc == PL_ECONFLICT         ? conflict
               : rc == PL_ENOT_AUTHORIZED ? "wrong or expired verification code"
               : rc == PL_ENOT_FOUND      ? "not registered"
                                          : NULL);
}

static void reg_done(struct pl_work *w)
{
    struct reg_job *j = (struct reg_job *)w;
    struct pl_stanza *r = NULL;
    if (w->result == PL_OK) {
        r = reply(j->iq, "result");
        if (j->op == REG_GET) {
            struct pl_node *qn = pl_node_add_child(r, pl_stanza_root(r),
                                                   "query", NS_REGISTER);
            static const char instr[] =
                "Enter your phone number (E.164, +15551234) to receive a "
                "code by SMS; then register again with the number and the "
                "code as password.";
            if (j->link && j->link->verified)
                pl_node_add_child(r, qn, "registered", NS_REGISTER);
            struct pl_node *in = pl_node_add_child(r, qn, "instructions",
                                                   NS_REGISTER);
            pl_node_add_text(r, in, instr, sizeof(instr) - 1);
            struct pl_node *ph = pl_node_add_child(r, qn, "phone", NS_REGISTER);
            if (j->link && j->link->verified)
                pl_node_add_text(r, ph, j->link->address,
                                 strlen(j->link->address));
            pl_node_add_child(r, qn, "password", NS_REGISTER);
        } else if (j->op == REG_REQUEST) {
            char text[64];
            snprintf(text, sizeof(text), "Your Parley verification code: %s",
                     j->code);
            pl_gw_sms_system(j->phone, text);
        }
        pl_gwc_send(r);
    } else {
        pl__gw_reg_error(j->iq, w->result, "number");
    }
    pl_stanza_unref(r);
    pl_stanza_unref(j->iq);
    pl_free(j->jid);
    pl_free(j->phone);
    pl_free(j->code);
    pl_gwq_link_free(j->link);
    pl_free(j);
}

static void on_register(struct pl_stanza *st, struct pl_node *q,
                        struct pl_jid *from, int set)
{
    struct reg_job *j = pl_calloc(1, sizeof(*j));
    j->w.work = reg_work;
    j->w.done = reg_done;
    j->jid = pl_strdup(from->bare);
    j->op = REG_GET;
    if (set) {
        struct pl_node *ph = pl_node_child(q, "phone", NS_REGISTER);
        struct pl_node *pw = pl_node_child(q, "password", NS_REGISTER);
        if (pl_node_child(q, "remove", NS_REGISTER)) {
            j->op = REG_REMOVE;
        } else if (!ph || pl_gw_e164(pl_node_text(st, ph, NULL),
                                     pl_gw.c.default_cc, &j->phone) != PL_OK) {
            pl_free(j->jid);
            pl_free(j);
            send_error(st, "modify", "not-acceptable",
                       "a phone number (E.164) is required");
            return;
        } else if (pw && pl_node_text(st, pw, NULL)[0]) {
            j->op = REG_VERIFY;
            j->code = pl_strdup(pl_node_text(st, pw, NULL));
        } else {
            j->op = REG_REQUEST;
            unsigned r = 0;
            RAND_bytes((unsigned char *)&r, sizeof(r));
            char code[8];
            snprintf(code, sizeof(code), "%06u", r % 1000000);
            j->code = pl_strdup(code);
        }
    }
    j->iq = pl_stanza_ref(st);
    pl_gw_db_submit(&j->w);
}

/* ---- iq ---- */

static void on_disco_info(struct pl_stanza *st)
{
    struct pl_stanza *r = reply(st, "result");
    struct pl_node *q = pl_node_add_child(r, pl_stanza_root(r), "query",
                                          NS_DISCO_INFO);
    struct pl_node *id = pl_node_add_child(r, q, "identity", NS_DISCO_INFO);
    pl_node_set_attr(r, id, "category", "gateway");
    pl_node_set_attr(r, id, "type", "sms");
    pl_node_set_attr(r, id, "name", "SMS gateway");
    static const char *const feats[] = {NS_DISCO_INFO, NS_DISCO_ITEMS,
                                        NS_REGISTER, NS_RECEIPTS};
    for (size_t i = 0; i < sizeof(feats) / sizeof(feats[0]); i++) {
        struct pl_node *f = pl_node_add_child(r, q, "feature", NS_DISCO_INFO);
        pl_node_set_attr(r, f, "var", feats[i]);
    }
    pl_gwc_send(r);
    pl_stanza_unref(r);
}

static void on_iq(struct pl_stanza *st, struct pl_jid *from, struct pl_jid *to)
{
    const char *type = pl_stanza_attr(st, "type");
    if (!type || (strcmp(type, "get") != 0 && strcmp(type, "set") != 0))
        return; /* results and errors: we asked nothing */
    int set = strcmp(type, "set") == 0;
    struct pl_node *q = pl_node_first_elem(pl_stanza_root(st));
    if (!q) {
        send_error(st, "modify", "bad-request", NULL);
        return;
    }
    if (!to->local && !set && strcmp(q->ns, NS_DISCO_INFO) == 0 &&
        !pl_node_attr(q, "node")) {
        on_disco_info(st);
    } else if (!to->local && !set && strcmp(q->ns, NS_DISCO_ITEMS) == 0) {
        struct pl_stanza *r = reply(st, "result");
        pl_node_add_child(r, pl_stanza_root(r), "query", NS_DISCO_ITEMS);
        pl_gwc_send(r);
        pl_stanza_unref(r);
    } else if (!to->local && strcmp(q->ns, NS_REGISTER) == 0 &&
               strcmp(q->name, "query") == 0) {
        on_register(st, q, from, set);
    } else {
        send_error(st, "cancel", "service-unavailable", NULL);
    }
}

/* ---- the mail domain ---- */

struct imerr_job {
    struct pl_work w;
    char *id, *why;
};

static void imerr_work(struct pl_work *w)
{
    struct imerr_job *j = (struct imerr_job *)w;
    pl__gw_mail_im_error_db(j->id, j->why);
}

static void imerr_done(struct pl_work *w)
{
    struct imerr_job *j = (struct imerr_job *)w;
    pl_free(j->id);
    pl_free(j->why);
    pl_free(j);
    pl_gw_mail_kick();
    pl_gw_sms_kick();
}

static void on_mail_stanza(struct pl_stanza *st, const char *name,
                           struct pl_jid *from, struct pl_jid *to)
{
    const char *type = pl_stanza_attr(st, "type");
    if (strcmp(name, "iq") == 0) {
        if (!type || (strcmp(type, "get") != 0 && strcmp(type, "set") != 0))
            return;
        struct pl_node *q = pl_node_first_elem(pl_stanza_root(st));
        if (!to->local && strcmp(type, "get") == 0 && q &&
            strcmp(q->ns, NS_DISCO_INFO) == 0 && !pl_node_attr(q, "node")) {
            struct pl_stanza *r = reply(st, "result");
            struct pl_node *qn = pl_node_add_child(r, pl_stanza_root(r),
                                                   "query", NS_DISCO_INFO);
            struct pl_node *id = pl_node_add_child(r, qn, "identity",
                                                   NS_DISCO_INFO);
            pl_node_set_attr(r, id, "category", "gateway");
            pl_node_set_attr(r, id, "type", "smtp");
            pl_node_set_attr(r, id, "name", "E-mail gateway");
            static const char *const feats[] = {NS_DISCO_INFO, NS_DISCO_ITEMS,
                                                NS_REGISTER};
            for (size_t i = 0; i < 3; i++) {
                struct pl_node *fe = pl_node_add_child(r, qn, "feature",
                                                       NS_DISCO_INFO);
                pl_node_set_attr(r, fe, "var", feats[i]);
            }
            pl_gwc_send(r);
            pl_stanza_unref(r);
        } else if (!to->local && q && strcmp(q->ns, NS_REGISTER) == 0 &&
                   strcmp(q->name, "query") == 0) {
            /* XEP-0100: link an e-mail address (mailreg.c). */
            pl_gw_mail_register(st, q, from->bare, strcmp(type, "set") == 0);
        } else {
            send_error(st, "cancel", "service-unavailable", NULL);
        }
        return;
    }
    if (strcmp(name, "message") != 0)
        return;
    if (type && strcmp(type, "error") == 0) {
        im_error_back(st);
        return;
    }
    if (type && strcmp(type, "groupchat") == 0)
        return;
    if (!pl_node_child(pl_stanza_root(st), "body", PL_NS_CLIENT))
        return; /* chat states, receipts: nothing e-mail can carry */
    char *addr = NULL;
    if (!to->local || pl_gw_unescape(to->local, &addr) != PL_OK ||
        !strchr(addr, '@') || strchr(addr, '@') == addr ||
        !strchr(addr, '@')[1] || strchr(strchr(addr, '@') + 1, '@')) {
        pl_free(addr);
        send_error(st, "modify", "jid-malformed",
                   "write to an e-mail address: "
                   "alice\\40example.org@this domain");
        return;
    }
    pl_gw_mail_from_im(st, from->full, addr);
    pl_free(addr);
}

/* A message the gateway delivered to IM (from e-mail or SMS) bounced on
 * the IM side (no such user, no offline storage): the queue id is the
 * stanza id; the message fails and its sender hears of it. */
static void im_error_back(struct pl_stanza *st)
{
    const char *id = pl_stanza_attr(st, "id");
    if (!id || strlen(id) != PL_GW_ID_LEN)
        return;
    struct pl_node *e = pl_node_child(pl_stanza_root(st), "error",
                                      PL_NS_CLIENT);
    struct pl_node *cond = e ? pl_node_first_elem(e) : NULL;
    char why[160];
    snprintf(why, sizeof(why), "the IM server answered %s",
             cond ? cond->name : "an error");
    struct imerr_job *j = pl_calloc(1, sizeof(*j));
    j->w.work = imerr_work;
    j->w.done = imerr_done;
    j->id = pl_strdup(id);
    j->why = pl_strdup(why);
    pl_gw_db_submit(&j->w);
}

/* For mail/channel.c: the same stanza error replies. */
void pl__gw_im_error(struct pl_stanza *st, const char *type, const char *cond,
                     const char *text)
{
    send_error(st, type, cond, text);
}

/* For the IM senders of every channel: what the content checks said
 * (check.h): refused (PL_EFORBIDDEN) is not-acceptable, not checked
 * (PL_EAGAIN) an error to wait on; the text gives the reason. */
void pl__gw_check_refusal(struct pl_stanza *st, int result,
                          const struct pl_gw_verdict *v)
{
    if (result == PL_EFORBIDDEN)
        send_error(st, "modify", "not-acceptable", v->reason);
    else
        send_error(st, "wait", "internal-server-error", v->reason);
}

void pl_gw_im_stanza(struct pl_stanza *st)
{
    const char *f = pl_stanza_attr(st, "from");
    const char *t = pl_stanza_attr(st, "to");
    struct pl_jid *from = NULL, *to = NULL;
    if (!f || !t || pl_jid_parse(pl_str_c(f), &from) != PL_OK ||
        pl_jid_parse(pl_str_c(t), &to) != PL_OK) {
        pl_jid_free(from);
        pl_jid_free(to);
        return; /* parleyd addresses everything; ignore what is odd */
    }
    const char *name = pl_stanza_name(st);
    if (pl_gw_media_iq(st)) { /* an upload slot for an attachment */
        pl_jid_free(from);
        pl_jid_free(to);
        return;
    }
    if (pl_gw.c.mail_domain[0] &&
        strcmp(to->domain, pl_gw.c.mail_domain) == 0) {
        on_mail_stanza(st, name, from, to);
        pl_jid_free(from);
        pl_jid_free(to);
        return;
    }
    if (strcmp(to->domain, pl_gw.c.sms_domain) != 0) {
        pl_jid_free(from);
        pl_jid_free(to);
        return;
    }
    if (strcmp(name, "message") == 0)
        on_message(st, from, to);
    else if (strcmp(name, "iq") == 0)
        on_iq(st, from, to);
    /* Presence: the gateway keeps no rosters; nothing to answer. */
    pl_jid_free(from);
    pl_jid_free(to);
}
