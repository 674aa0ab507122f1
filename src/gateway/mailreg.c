/*
 * mailreg.c - XEP-0100 registration on the mail domain: an IM user links
 * their own e-mail address, verified by a code sent there by e-mail
 * (through the "mail" queue and the relay, like any outgoing mail).
 *
 * jabber:iq:register (XEP-0077) on mail.<host>: get answers instructions
 * with <email/> and <password/> (and <registered/> with the linked
 * address); set with <email/> alone stores an unverified link and queues
 * the six-digit code; set with <email/> and the code as <password/>
 * verifies it (not-authorized when wrong or past sms.code_ttl, conflict
 * when another user verified that address); <remove/> drops the link.
 * A verified link of channel "mail" makes e-mail to that address that
 * reaches the gateway go to the user (mail/channel.c resolves it first).
 *
 * API: pl_gw_mail_register (loop thread), called by im.c.
 */
#include <openssl/rand.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "alloc.h"
#include "error.h"
#include "gateway/core.h"
#include "gateway/mail/mime.h"
#include "gateway/mail/smtp.h"
#include "gateway/mailreg.h"
#include "jid.h"
#include "log.h"
#include "stanza.h"

#define NS_REGISTER "jabber:iq:register"

enum {
    R_GET,
    R_REQUEST,
    R_VERIFY,
    R_REMOVE
};

struct mreg_job {
    struct pl_work w;
    int op;
    char *jid, *email, *code;
    struct pl_gwq_link *link; /* R_GET */
    struct pl_stanza *iq;
};

/* Queues the e-mail with the code (database thread). */
static int queue_code(const char *email, const char *code, const char *jid)
{
    char text[300], mid[PL_GW_ID_LEN + 300];
    snprintf(text, sizeof(text),
             "Your Parley verification code: %s\n\n"
             "Someone (%s) asked to link this address to an IM account.\n"
             "If it was not you, ignore this message.\n",
             code, jid);
    struct pl_gw_msg m = {0};
    pl_gw_new_id(m.id);
    snprintf(mid, sizeof(mid), "%s@%s", m.id, pl_gw.c.mail_hostname);
    const char *to[1] = {email};
    struct pl_mail_out o = {
        .from = pl_gw.c.mail_from,
        .from_name = "Parley",
        .to = to,
        .nto = 1,
        .subject = "Your Parley verification code",
        .text = text,
        .id_domain = pl_gw.c.mail_hostname,
        .message_id = mid,
    };
    struct pl_buf b = {0};
    int rc = pl_mail_build(&o, &b, NULL);
    if (rc == PL_OK) {
        m.dest = (char *)"mail";
        m.src_channel = (char *)"system";
        m.src_addr = pl_gw.c.mail_from;
        m.dst_channel = (char *)"mail";
        m.dst_addr = (char *)email;
        m.text = (char *)pl_buf_cstr(&b);
        m.subject = (char *)"verification code";
        m.created = m.next_attempt = pl_gw_now();
        m.expires = m.created + pl_gw.c.code_ttl_ms;
        rc = pl_gwq_insert(pl_gw.db, &m, pl_gw.c.instance);
    }
    pl_buf_reset(&b);
    return rc;
}

static void mreg_work(struct pl_work *w)
{
    struct mreg_job *j = (struct mreg_job *)w;
    struct pl_gwq *q = pl_gw.db;
    switch (j->op) {
    case R_GET:
        w->result = pl_gwq_link_get(q, "mail", j->jid, &j->link);
        if (w->result == PL_ENOT_FOUND)
            w->result = PL_OK;
        break;
    case R_REMOVE: w->result = pl_gwq_link_remove(q, "mail", j->jid); break;
    default:
        w->result = pl__gw_reg_db("mail", j->jid, j->email, j->op == R_VERIFY,
                                  j->code);
        if (w->result == PL_OK && j->op == R_REQUEST)
            w->result = queue_code(j->email, j->code, j->jid);
        break;
    }
}

static struct pl_stanza *result_of(struct pl_stanza *st)
{
    struct pl_stanza *r = pl_stanza_new("iq", PL_NS_CLIENT);
    const char *id = pl_stanza_attr(st, "id");
    if (id)
        pl_stanza_set_attr(r, "id", id);
    pl_stanza_set_attr(r, "from", pl_stanza_attr(st, "to"));
    pl_stanza_set_attr(r, "to", pl_stanza_attr(st, "from"));
    pl_stanza_set_attr(r, "type", "result");
    return r;
}

static void mreg_done(struct pl_work *w)
{
    struct mreg_job *j = (struct mreg_job *)w;
    if (w->result == PL_OK) {
        struct pl_stanza *r = result_of(j->iq);
        if (j->op == R_GET) {
            struct pl_node *qn = pl_node_add_child(r, pl_stanza_root(r),
                                                   "query", NS_REGISTER);
            static const char instr[] =
                "Enter your e-mail address to receive a code by e-mail; "
                "then register again with the address and the code as "
                "password.";
            int reg = j->link && j->link->verified;
            if (reg)
                pl_node_add_child(r, qn, "registered", NS_REGISTER);
            struct pl_node *in = pl_node_add_child(r, qn, "instructions",
                                                   NS_REGISTER);
            pl_node_add_text(r, in, instr, sizeof(instr) - 1);
            struct pl_node *em = pl_node_add_child(r, qn, "email", NS_REGISTER);
            if (reg)
                pl_node_add_text(r, em, j->link->address,
                                 strlen(j->link->address));
            pl_node_add_child(r, qn, "password", NS_REGISTER);
        }
        pl_gwc_send(r);
        pl_stanza_unref(r);
        if (j->op == R_REQUEST)
            pl_gw_mail_kick();
    } else {
        pl__gw_reg_error(j->iq, w->result, "address");
    }
    pl_stanza_unref(j->iq);
    pl_free(j->jid);
    pl_free(j->email);
    pl_free(j->code);
    pl_gwq_link_free(j->link);
    pl_free(j);
}

/* Whether addr is one of the gateway's own domains (nothing to link). */
static int own_domain(const char *addr)
{
    const char *d = strrchr(addr, '@') + 1;
    if (strcasecmp(d, pl_gw.c.mail_sms_domain) == 0 ||
        strcasecmp(d, pl_gw.c.mail_domain) == 0)
        return 1;
    const char *p = pl_gw.c.mail_rcpt_domains;
    size_t dl = strlen(d);
    while (*p) {
        while (*p == ' ' || *p == ',')
            p++;
        size_t n = strcspn(p, ", ");
        if (n == dl && strncasecmp(p, d, n) == 0)
            return 1;
        p += n;
    }
    return 0;
}

void pl_gw_mail_register(struct pl_stanza *st, struct pl_node *q,
                         const char *bare, int set)
{
    struct mreg_job *j = pl_calloc(1, sizeof(*j));
    j->w.work = mreg_work;
    j->w.done = mreg_done;
    j->jid = pl_strdup(bare);
    j->op = R_GET;
    if (set) {
        struct pl_node *em = pl_node_child(q, "email", NS_REGISTER);
        struct pl_node *pw = pl_node_child(q, "password", NS_REGISTER);
        char path[600], mbox[300];
        size_t used = 0;
        const char *e = em ? pl_node_text(st, em, NULL) : "";
        snprintf(path, sizeof(path), "<%s>", e);
        if (pl_node_child(q, "remove", NS_REGISTER)) {
            j->op = R_REMOVE;
        } else if (!em || strlen(e) > 254 ||
                   pl_smtp_parse_path(pl_str_c(path), 1, 0, mbox, sizeof(mbox),
                                      &used) != PL_OK ||
                   used != strlen(path) || !strchr(mbox, '@') ||
                   own_domain(mbox)) {
            pl_free(j->jid);
            pl_free(j);
            pl__gw_im_error(st, "modify", "not-acceptable",
                            "an e-mail address of another domain is "
                            "required");
            return;
        } else {
            j->email = pl_strdup(mbox);
            if (pw && pl_node_text(st, pw, NULL)[0]) {
                j->op = R_VERIFY;
                j->code = pl_strdup(pl_node_text(st, pw, NULL));
            } else {
                j->op = R_REQUEST;
                unsigned r = 0;
                RAND_bytes((unsigned char *)&r, sizeof(r));
                char code[8];
                snprintf(code, sizeof(code), "%06u", r % 1000000);
                j->code = pl_strdup(code);
            }
        }
    }
    j->iq = pl_stanza_ref(st);
    pl_gw_db_submit(&j->w);
}
