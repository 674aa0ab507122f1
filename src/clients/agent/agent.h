/*
 * agent.h - parley-agent, the device daemon: one XMPP session per device
 * (set-top box, embedded Linux), identified by a MAC address, carrying
 * XEP-0335 JSON commands from the head-end to handler executables.
 *
 *   identity.c  MAC address -> JID localpart; the state file (0600)
 *   dispatch.c  JSON commands -> handler processes (stdin/stdout,
 *               timeout) -> JSON results
 *   main.c      options, connection, XEP-0198 via libstrophe, reconnect
 *               with exponential backoff and jitter, XEP-0199 pings,
 *               XEP-0184 receipts
 */
#ifndef PL_AGENT_H
#define PL_AGENT_H

#include <stddef.h>
#include <sys/types.h>

#include <jansson.h>

/* ---- identity.c */

/* Parses "00:1A:2b-3c..." (colons, dashes or nothing between bytes) into
 * the localpart "001a2b3c4d5e" (13 bytes with NUL).  -1 if not 6 bytes. */
int pl_agent_mac_localpart(const char *mac, char out[13]);
/* Reads /sys/class/net/IFACE/address into out (>= 32 bytes); -1 if not. */
int pl_agent_read_mac(const char *iface, char *out, size_t len);

struct pl_agent_state {
    char *jid;      /* bare JID, owned */
    char *secret;   /* password, owned */
    int registered; /* the account is known to exist */
};

/* Loads path; 1 if it exists and parsed, 0 if absent, -1 on error (msg
 * on stderr).  Tightens the file's mode to 0600 if it was wider. */
int pl_agent_state_load(const char *path, struct pl_agent_state *st);
/* Writes atomically (temporary file, fsync, rename) with mode 0600. */
int pl_agent_state_save(const char *path, const struct pl_agent_state *st);
void pl_agent_state_free(struct pl_agent_state *st);
/* 32 random bytes as 64 hex characters into out[65]; -1 on failure. */
int pl_agent_secret_new(char out[65]);

/* ---- dispatch.c */

struct pl_handler {
    char *name; /* command name */
    char *path; /* executable */
};

/* Called with a finished job's reply object (borrowed). */
typedef void pl_reply_fn(const char *to, const char *type, json_t *reply,
                         void *ud);

struct pl_dispatch {
    struct pl_handler *handlers; /* configured per command name */
    int nhandlers;
    char *handler_dir;   /* or executables found by name here */
    long timeout_ms;     /* per job */
    int max_jobs;        /* running at once */
    size_t max_output;   /* bytes of stdout kept */
    struct pl_job *jobs; /* running */
    int njobs;
    pl_reply_fn *reply; /* where results go */
    void *ud;
};

/*
 * Handles one JSON payload (text, from the XEP-0335 <json/> element) of
 * message id from 'from': malformed JSON, a payload without a command,
 * an unknown command or a full job table are answered at once through
 * d->reply; a known command starts its handler and is answered when it
 * ends or times out.
 */
void pl_dispatch_payload(struct pl_dispatch *d, const char *from,
                         const char *type, const char *id, const char *text);
/* Feeds running jobs, reaps the finished and kills the late ones. */
void pl_dispatch_poll(struct pl_dispatch *d);
/* Kills and reaps every job (shutdown). */
void pl_dispatch_stop(struct pl_dispatch *d);

#endif
