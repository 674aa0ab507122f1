/*
 * core.h - the running gateway: its configuration, its loop and work
 * queues, and the glue every channel uses (the database worker, reports
 * back to senders through the outbox).
 *
 * Threads: the loop (main.c) runs the component link (component.c), the
 * IM side (im.c), the Kannel callback listener and the send scheduling
 * (sms/kannel.c).  Everything that blocks goes to a work queue: SQL to
 * "db" (one thread, which owns the SQLite connection), HTTP requests to
 * Kannel to "http" (http_workers threads).  Completions come back to the
 * loop.
 *
 * Reports: a state change a sender must hear of becomes a stanza in the
 * outbox table (pl_gw_report); any instance with a component link sends
 * outbox rows (pl_gw_outbox_kick) and deletes each once parleyd has
 * acknowledged it (XEP-0198, pl_gwc_send_acked), so a report outlives
 * the instance that wrote it and a link that died, and an instance
 * without a link (an older parleyd takes one per domain) still does its
 * share of the sending.
 */
#ifndef PL_GW_CORE_H
#define PL_GW_CORE_H

#include <stddef.h>
#include <stdint.h>

#include "gateway/gateway.h"
#include "gateway/queue.h"
#include "work.h"

struct pl_loop;
struct pl_stanza;

struct pl_gw_conf {
    char *instance;   /* this instance's name (leases, history) */
    char *data_dir;   /* where relative paths live */
    char *queue_path; /* the SQLite file */
    int log_level;    /* enum pl_log_level */
    /* The parleyd component link. */
    char *comp_host;       /* parleyd's component listener address */
    long comp_port;        /* its port */
    char *comp_secret;     /* the shared secret */
    long reconnect_min_ms; /* first reconnect delay */
    long reconnect_max_ms; /* backoff cap */
    long max_stanza;       /* bytes of one stanza from parleyd */
    /* SMS. */
    char *sms_domain;    /* "sms.<host>"; NULL: no SMS channel */
    char *default_cc;    /* country code for national numbers, or "" */
    char *sms_sender;    /* the gateway's own number (Kannel from) */
    long max_parts;      /* concatenated parts at most */
    long max_text;       /* bytes of one message's text */
    char *sendsms_url;   /* Kannel smsbox sendsms URL */
    char *kannel_user;   /* sendsms-user username */
    char *kannel_pass;   /* its password */
    long kannel_timeout; /* seconds per HTTP request */
    long dlr_mask;       /* Kannel dlr-mask */
    char *cb_address;    /* callback listener address */
    long cb_port;        /* its port */
    char *cb_url;        /* how Kannel reaches it (dlr-url base) */
    long cb_max_body;    /* bytes of a callback request body */
    long code_ttl_ms;    /* a verification code's life */
    /* E-mail (mail/channel.c). */
    char *mail_domain;       /* "mail.<host>"; "" : no e-mail channel */
    char *mail_hostname;     /* greeting, Message-IDs, DSN reporting MTA */
    char *mail_im_host;      /* the XMPP domain of the users */
    char *mail_rcpt_domains; /* accepted recipient domains, comma list */
    char *mail_from;         /* From of the gateway's own mail (DSNs) */
    char *lmtp_socket;       /* LMTP unix socket path, or "" */
    char *lmtp_address;      /* LMTP TCP address */
    long lmtp_port;          /* its port, 0: none */
    char *smtp_address;      /* SMTP TCP address */
    long smtp_port;          /* its port, 0: none */
    char *smtp_tls;          /* "", none, starttls, required */
    char *smtp_tls_cert;     /* STARTTLS certificate (PEM chain) */
    char *smtp_tls_key;      /* its key */
    long smtp_tls_make;      /* 1: cert is ours, made if missing */
    long mail_max_size;      /* bytes of one inbound message */
    long mail_max_rcpts;     /* recipients per transaction */
    long mail_max_text;      /* bytes of text delivered to IM / sent */
    long mail_timeout_ms;    /* inbound command timeout */
    long mail_max_sessions;  /* inbound sessions at once */
    char *relay_url;         /* smtp://host:port or smtps://host:port */
    char *relay_tls;         /* none, try, require */
    long relay_no_verify;    /* 1: do not verify the relay's certificate */
    char *relay_ca_file;     /* CA bundle, "" for the system's */
    char *relay_user;        /* AUTH user, "" for none */
    char *relay_pass;        /* its password */
    long relay_connect_timeout_ms; /* connect timeout */
    long relay_timeout_ms;         /* whole transaction */
    long smtp_workers;             /* threads sending mail */
    /* Files (media.c). */
    char *media_service;    /* XEP-0363 service ("upload.<host>"), or "" */
    char *media_fetch_from; /* URL prefixes files are fetched from */
    long media_max_size;    /* bytes of one file */
    long media_max_count;   /* files per message */
    long media_timeout_ms;  /* one slot request or HTTP transfer */
    long media_workers;     /* threads uploading */
    /* Across channels (route.c). */
    char *mail_sms_domain;  /* mail domain of phone numbers (sms.domain) */
    long mail_to_sms;       /* 1: e-mail to NUMBER@mail_sms_domain */
    long sms_to_mail;       /* 1: SMS starting with an address to e-mail */
    long sms_reports;       /* 1: final states reported to SMS senders */
    char *report_delivered; /* report templates (%a %r %i), "" : none */
    char *report_failed;
    char *report_expired;
    char *report_refused;
    /* Retries and queues. */
    long retry_base_ms; /* first retry delay */
    long retry_max_ms;  /* backoff cap */
    long retry_jitter;  /* percent of the delay, +/- */
    long expiry_ms;     /* a message's life in the queue */
    long lease_ms;      /* how long a claim holds a message */
    long poll_ms;       /* queue poll interval */
    long batch;         /* messages claimed at once */
    long http_workers;  /* threads sending to Kannel */
    /* Content checks (check.c). */
    char *clamd;            /* clamd socket or host:port, "": none */
    char *rspamd_url;       /* rspamd normal worker URL, "": none */
    long check_timeout_ms;  /* per checker and message */
    char *check_fail;       /* checker down: "closed" or "open" */
    long spam_reject_score; /* refuse at or above, 0: rspamd decides */
    long spam_tag_score;    /* tag at or above, 0: rspamd decides */
    char *spam_on_reject;   /* rspamd's reject: "refuse" or "tag" */
    char *spam_tag;         /* subject prefix of tagged messages */
    long check_workers;     /* threads talking to the checkers */
};

struct pl_gw {
    struct pl_gw_conf c;    /* in force */
    struct pl_loop *loop;   /* the one loop */
    struct pl_workq *dbq;   /* SQL (one thread) */
    struct pl_workq *httpq; /* HTTP to Kannel */
    struct pl_workq *smtpq; /* SMTP to the relay */
    struct pl_gwq *db;      /* used only on dbq's thread */
};

extern struct pl_gw pl_gw;

/* Runs w on the database thread (w->work may use pl_gw.db); w->done runs
 * once what w->work wrote is committed (group commit, core.c), with
 * w->result PL_ESTORAGE if that commit failed. */
void pl_gw_db_submit(struct pl_work *w);
/* The database work queue, with the group-commit hooks (main.c). */
struct pl_workq *pl__gw_dbq_new(void);
/* Milliseconds of backoff before attempt n+1 (after n failures). */
int64_t pl_gw_backoff(int attempts);

/*
 * Reports m's current state to its sender when the state calls for it
 * (IM: delivered with a receipt asked for; failed, expired, refused as
 * an error message, through the outbox; e-mail: a DSN as NOTIFY asks;
 * SMS: a report SMS, route.c).  Runs on the database thread.
 */
void pl__gw_report_db(const struct pl_gw_msg *m, const char *why);

struct pl_gw_decision;
struct pl_gw_verdict;
/*
 * Admits m into its queue on the database thread, after the two gates
 * every inbound path passes: the policy (policy.h; d, its loop-side
 * decision, with mode an enum pl_gw_commit) and the content checks
 * (check.h; v, their verdict, or NULL when none ran).  A refusal the
 * policy made on the loop wins; then a refusal or a "not checked" of the
 * checks (stored refused / not stored, the quota untouched); then the
 * policy's own database step, which counts the quota and stores m, and
 * the checkers' note goes into m's history.  Returns PL_OK (queued),
 * PL_EPOLICY_VIOLATION (d says why), PL_EFORBIDDEN or PL_EAGAIN (the
 * checks; v says why) or a storage error.
 */
int pl__gw_admit_db(const struct pl_gw_msg *m, struct pl_gw_decision *d,
                    int mode, const struct pl_gw_verdict *v);

/* What a channel's attempt to send a message came to. */
enum pl_gw_outcome {
    PL_GW_OUT_SENT,  /* the next hop took it (in parts pieces) */
    PL_GW_OUT_RETRY, /* a temporary failure: again after the backoff */
    PL_GW_OUT_FAILED /* a permanent failure */
};

/*
 * Records the outcome of sending m (leased by this instance) on the
 * database thread: sent, queued again after pl_gw_backoff(), or failed;
 * a final state (delivered, failed, expired) is reported to the sender
 * (pl__gw_report_db).  *state gets the state reached.  PL_ECONFLICT when
 * the lease was lost meanwhile (logged for channel, nothing recorded).
 */
int pl__gw_outcome_db(struct pl_gw_msg *m, enum pl_gw_outcome o, int parts,
                      const char *detail, const char *channel, int *state);
/* Standalone XML of st (for the outbox); takes ownership of st. */
char *pl__gw_xml(struct pl_stanza *st);
/* Queues xml (a serialized stanza) in the outbox; database thread. */
void pl__gw_outbox_db(const char *xml);
/* Sends outbox rows if this instance holds the link (loop thread). */
void pl_gw_outbox_kick(void);

/* ---- component.c ---- */
typedef void pl_gwc_stanza_fn(struct pl_stanza *st); /* borrowed */
/* Connects (and reconnects forever) to parleyd as c.sms_domain. */
int pl_gwc_start(pl_gwc_stanza_fn *on_stanza, void (*on_ready)(void));
/* Writes st (borrowed) on the link; PL_ECLOSED when there is none. */
int pl_gwc_send(struct pl_stanza *st);
/* Called once for a stanza sent with pl_gwc_send_acked: ok 1 when
 * parleyd acknowledged it (XEP-0198), 0 when the link died first. */
typedef void pl_gwc_acked_fn(void *ud, int ok);
/* pl_gwc_send, then fn(ud, ok) later (at once without XEP-0198). */
int pl_gwc_send_acked(struct pl_stanza *st, pl_gwc_acked_fn *fn, void *ud);
int pl_gwc_ready(void);
/* While a stanza from parleyd is being handled (loop thread): keeps it
 * from counting as handled (XEP-0198 <a h/>) until pl_gwc_release(), for
 * work that reaches the database thread through another queue first (the
 * content checks).  NULL when there is nothing to hold; release takes
 * NULL too. */
void *pl_gwc_hold(void);
void pl_gwc_release(void *hold);
void pl_gwc_stop(void);

/* ---- im.c ---- */
void pl_gw_im_stanza(struct pl_stanza *st);
/* Builds the stanza telling an IM sender about m; NULL if none. */
char *pl__gw_im_report(const struct pl_gw_msg *m, const char *why);
/* An error reply to st (RFC 6120 §8.3), sent at once. */
void pl__gw_im_error(struct pl_stanza *st, const char *type, const char *cond,
                     const char *text);
/* Registration (XEP-0077) shared with mailreg.c: the link request or
 * verification (database thread) and the error reply for its result. */
int pl__gw_reg_db(const char *channel, const char *jid, const char *addr,
                  int verify, const char *code);
void pl__gw_reg_error(struct pl_stanza *iq, int rc, const char *what);
/* The error reply for a policy refusal (policy.h) of message id. */
struct pl_gw_decision;
void pl__gw_im_refused(struct pl_stanza *st, const struct pl_gw_decision *d,
                       const char *id);
/* For the IM senders of every channel: after the policy's verdict
 * (pd filled by pl_gw_policy_check) on m, the job w (its done set) goes
 * on: refused and not recorded, done at once with PL_EPOLICY_VIOLATION;
 * refused and recorded, to the database (no checks); allowed, to the
 * content checks chk (check.h), filled in here from m (borrowed). */
struct pl_gw_check;
void pl__gw_admit_submit(struct pl_work *w, int verdict,
                         const struct pl_gw_decision *pd,
                         struct pl_gw_check *chk, struct pl_gw_msg *m);
/* An SMS from address arrived for the IM side (database thread): the
 * message stanza for the user it belongs to, or NULL (refused). */

/* ---- sms/kannel.c ---- */
int pl_gw_sms_start(void);
void pl_gw_sms_kick(void);
void pl_gw_sms_stop(void);
/* Queues a system SMS (verification code) to address; loop thread. */
void pl_gw_sms_system(const char *address, const char *text);

/* ---- mail/channel.c ---- */
int pl_gw_mail_start(void);
void pl_gw_mail_kick(void);
void pl_gw_mail_stop(void);
/* A message from an IM user to addr (unescaped e-mail address) at the
 * mail domain; loop thread.  Answers the user itself on refusal. */
void pl_gw_mail_from_im(struct pl_stanza *st, const char *from_full,
                        const char *addr);
/* An IM error came back for message id (database thread): when it was
 * an e-mail or an SMS delivered to IM, fails it and reports it (a DSN,
 * a report SMS). */
void pl__gw_mail_im_error_db(const char *id, const char *why);
/* The report for an e-mail sender of m (a DSN queued as mail), database
 * thread; called by pl__gw_report_db. */
void pl__gw_mail_report_db(const struct pl_gw_msg *m, const char *why);

/* ---- media.c ---- */
struct pl_mail_msg;
struct pl_mail_link;
struct pl_mail_attachment;
int pl_gw_media_start(void);
void pl_gw_media_kick(void);
void pl_gw_media_stop(void);
/* An iq answering the media side's slot request: handled (1) or not (0);
 * loop thread. */
int pl_gw_media_iq(struct pl_stanza *st);
/* The jabber:x:oob URLs of a message (http/https, at most
 * media.max_count), one per line, new string; NULL when none. */
char *pl_gw_media_oob(struct pl_stanza *st);
/* text (len bytes) followed by each of links (one per line) it does not
 * hold yet, space-separated: what SMS carries; new string. */
char *pl_gw_media_text(const char *text, size_t len, const char *links);
/* An e-mail with attachments for IM user m->dst_addr (database thread):
 * its files (within the limits; notes in the text for the rest) and m
 * stored in the "upload" queue, committed.  PL_OK or PL_ESTORAGE. */
int pl__gw_media_mail_db(const struct pl_gw_msg *m,
                         const struct pl_mail_msg *mm);
/* What an e-mail from IM carries: its text with notes, the links listed,
 * the files fetched from media.fetch_from. */
struct pl_gw_media_files {
    char *text;
    struct pl_mail_link *links;
    size_t nlinks;
    struct pl_mail_attachment *att;
    size_t natt;
};
/* Fetches the links of an e-mail (an SMTP worker; blocks).  PL_EAGAIN
 * (why says what) when a fetch failed for now: retry the e-mail. */
int pl__gw_media_fetch(const char *text, const char *links,
                       struct pl_gw_media_files *f, char *why, size_t whylen);
void pl__gw_media_files_free(struct pl_gw_media_files *f);
/* Whether url may be fetched: under one of media.fetch_from, the prefix
 * covering its whole scheme and authority, no ".." segment. */
int pl__gw_media_fetch_allowed(const char *url);

#endif
