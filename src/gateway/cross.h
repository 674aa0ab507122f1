/*
 * cross.h - the cross-channel directions of parley-gateway: e-mail to
 * SMS, SMS to e-mail, status reports to SMS senders, DSN requests.
 *
 * The text rules here are pure functions (cross.c, unit-tested in
 * tests/unit/test_gw_cross.c); the routing that uses the queue and the
 * configuration is in route.c (database thread), called from
 * mail/channel.c, sms/kannel.c and core.c at one point each.
 *
 * Rules (doc/gateway.md, "Across channels"):
 *  - e-mail -> SMS: RCPT TO:<NUMBER@sms mail domain> (NUMBER E.164 or
 *    national, normalized by pl_gw_e164).  The SMS text is
 *    "SENDER: SUBJECT\nTEXT" (no subject: "SENDER: TEXT"), blank lines
 *    and trailing spaces squeezed, cut at a character boundary with
 *    "..." to fit sms.max_parts parts.
 *  - SMS -> e-mail: an SMS whose first word is an e-mail address
 *    ("bob@example.org hello", a ':' or ',' after the address allowed)
 *    goes to that address, the rest of the text as the body.  Otherwise
 *    it goes where the number's last correspondent is (the IM user or
 *    e-mail address that last wrote to it: peers table), else to the
 *    user who linked the number.
 *  - Reports to SMS senders: one SMS per final state, from a template
 *    (%a the recipient, %r the reason, %i the queue id, %% a percent
 *    sign), cut to one SMS; never for a message the gateway made itself.
 */
#ifndef PL_GW_CROSS_H
#define PL_GW_CROSS_H

#include <stddef.h>

struct pl_gw_msg;

/*
 * The longest prefix of text (len bytes of UTF-8) that fits max_parts
 * SMS parts, ending at a character boundary: *fit gets its length.
 * Returns PL_OK (the whole text fits), PL_ELIMIT (*fit < len), or
 * PL_EINVAL (invalid UTF-8).
 */
int pl_gw_sms_fit(const char *text, size_t len, unsigned max_parts,
                  size_t *fit);

/*
 * The SMS text for an e-mail from sender with subject (or NULL) and
 * text: "SENDER: SUBJECT\nTEXT", squeezed and cut with "..." to fit
 * max_parts parts (new string in *out).  *cut gets 1 when it was cut.
 * PL_EINVAL when nothing but the sender would be left (no subject, no
 * text).
 */
int pl_gw_mail_sms_text(const char *sender, const char *subject,
                        const char *text, unsigned max_parts, char **out,
                        int *cut);

/*
 * An SMS that starts with an e-mail address: *addr gets the address and
 * *body the rest of the text, trimmed (new strings).  PL_ENOT_FOUND when
 * the first word is not an address (local@domain, with a dot in the
 * domain, by RFC 5321 syntax); PL_EINVAL when the address is there but
 * nothing follows it.
 */
int pl_gw_sms_mail_split(const char *text, char **addr, char **body);

/*
 * Expands a report template (%a addr, %r why, %i id, %% '%'; anything
 * else after '%' stays as it is), then cuts the result to one SMS
 * (pl_gw_sms_fit).  New string; "" for an empty template.
 */
char *pl_gw_report_text(const char *tmpl, const char *addr, const char *why,
                        const char *id);

/*
 * Whether an e-mail sender asked for (or by default gets) a DSN for a
 * message that reached state (enum pl_gw_state) given its RCPT NOTIFY=
 * bits (PL_SMTP_NOTIFY_*, 0 when not given): RFC 3461 §4.1 - delivered
 * only with SUCCESS; failed, expired or refused unless NOTIFY was given
 * without FAILURE (NEVER, or SUCCESS alone).
 */
int pl_gw_dsn_wanted(unsigned notify, int state);

/* ---- route.c: the running gateway (database thread unless said) ---- */

/* The phone number (E.164, new string) an inbound e-mail recipient
 * stands for (local@<sms mail domain>), or NULL. */
char *pl__gw_mail_rcpt_number(const char *rcpt);
/*
 * Stores an e-mail for the sms queue: sender (From or envelope),
 * return_path for the DSN, hdr its header section, orcpt the RCPT as
 * given; notify/orcpt/envid from RFC 3461 kept for the report.  PL_OK
 * stored, PL_EINVAL nothing to send (a permanent refusal), other codes
 * a storage error.  The number's peer becomes the sender's address.
 */
int pl__gw_mail_to_sms_db(const char *number, const char *sender,
                          const char *return_path, const char *subject,
                          const char *text, const char *hdr, const char *rcpt,
                          unsigned notify, const char *orcpt,
                          const char *envid);
/* Records RFC 3461 parameters of message id (for its DSN). */
void pl__gw_dsn_params_set_db(const char *id, unsigned notify,
                              const char *orcpt, const char *envid);
/* The NOTIFY bits (0 if none were given), ORCPT and ENVID (new strings
 * or NULL) of message id. */
void pl__gw_dsn_params_get_db(const char *id, unsigned *notify, char **orcpt,
                              char **envid);
/*
 * An SMS from number (E.164): when it names an e-mail address first, or
 * the number's last correspondent was an e-mail address, it is queued
 * in the mail queue and 1 is returned (the caller kicks the mail
 * channel); 0 leaves it to the IM routing (also when sms.to_mail is off
 * or there is no mail channel).  A refusal (an address with nothing
 * after it, a text over mail.max_text) is recorded, reported, and also
 * returns 1.
 */
int pl__gw_sms_to_mail_db(const char *number, const char *text);
/* The report SMS for m's sender when m came from a phone (core.c). */
void pl__gw_sms_report_db(const struct pl_gw_msg *m, const char *why);

#endif
