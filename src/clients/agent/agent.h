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
#include <strophe.h>

#include "clients/client.h"

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


/* ---- main.c: the agent itself */

enum pl_agent_conn {
    PL_AGENT_DOWN,
    PL_AGENT_CONNECTING,
    PL_AGENT_UP
};

#define PL_AGENT_SEEN_IDS 128

struct pl_agent {
    struct pl_cl_opts o;
    const char *domain;
    const char *resource;
    const char *state_path;
    const char *token;
    const char **controllers;
    int ncontrollers;
    long backoff_min, backoff_max;    /* ms */
    long ping_interval, ping_timeout; /* ms */
    int no_sm;
    int auto_approve;
    const char *status;
    struct pl_agent_state st;
    char localpart[13];
    char full_jid[512];
    xmpp_ctx_t *ctx;
    xmpp_conn_t *conn;
    int state;   /* PL_AGENT_DOWN, PL_AGENT_CONNECTING, PL_AGENT_UP */
    int attempt; /* reconnects since the last success */
    long long reconnect_at;
    long long next_ping, ping_sent;
    unsigned ping_seq;
    int ping_pending;
    int auth_suspect; /* drops before login without another cause */
    char *seen[PL_AGENT_SEEN_IDS]; /* ids of payloads already handled */
    int seen_next;
    struct pl_dispatch d;
    struct pl_agent_media *media; /* media.c; NULL without --cache */
};

/* A line of log on stderr with a timestamp. */
void pl_agent_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* One event line on stdout (JSON with "event" and "ts"); takes ev. */
void pl_agent_emit(const char *name, json_t *ev);
/* Sends the JSON reply (borrowed) to 'to' as an XEP-0335 message. */
void pl_agent_send_json(const char *to, const char *type, json_t *reply,
                        void *a);


/* ---- share.c: the cache served to other devices (issue 17) */

struct pl_peer;
struct pl_agent_file;
struct pl_agent_fetch;

struct pl_agent_media {
    const char *cache_dir;       /* --cache */
    const char *listen;          /* --serve ADDR:PORT, or NULL */
    const char *url_base;        /* --serve-url, or http://ADDR:PORT */
    char url_buf[300];           /* url_base when made from listen */
    int max_peers;               /* --max-peers: downloads served at once */
    unsigned long long max_rate; /* --max-upload-rate, bytes/s (0: none) */
    int max_fetches;             /* --max-fetches: downloads at once */
    int prefer_peers;            /* --prefer-peers: the server last */
    struct pl_peer *peer;        /* the peer server, or NULL */
    struct pl_agent_file *files; /* verified files of the cache */
    int nfiles;
    void *scan;                      /* the start-up verification */
    struct pl_agent_fetch *fetches;  /* downloads (fetch.c) */
    struct pl_agent_report *reports; /* to send when connected */
    long long next_check;            /* monotonic ms: files still there? */
};

/* A failure report (doc/media.md "Report") waiting for the session. */
struct pl_agent_report {
    struct pl_agent_report *next;
    unsigned char sha256[32];
    long long piece; /* -1: the whole file */
    char *source;
};
/* Queues a report and sends it when the session is up. */
void pl_agent_media_report(struct pl_agent *a, const unsigned char *sha256,
                           long long piece, const char *source);


/*
 * Options --cache DIR, --serve ADDR:PORT, --serve-url URL,
 * --max-peers N, --max-upload-rate BYTES, --max-fetches N,
 * --prefer-peers; share.c parses them
 * (pl_agent_media_opt: 1 if argv[*i] was one, advancing *i; 0 if not; -1
 * on a bad value).  pl_agent_media_init sets a->media up when --cache was
 * given: the peer server runs, every verified file of the cache is
 * served.  On each new session pl_agent_media_online announces them all
 * to upload.<domain>; pl_agent_media_share serves and announces one more
 * (a download just verified).  pl_agent_media_poll runs each loop turn
 * (finished downloads, reports to send); pl_agent_media_stop withdraws
 * and stops.
 */
int pl_agent_media_opt(struct pl_agent *a, int argc, char **argv, int *i);
int pl_agent_media_init(struct pl_agent *a);
void pl_agent_media_online(struct pl_agent *a);
void pl_agent_media_share(struct pl_agent *a, const unsigned char *sha256,
                          const char *path);
void pl_agent_media_poll(struct pl_agent *a);
void pl_agent_media_stop(struct pl_agent *a);

/* ---- fetch.c: the head-end's "fetch" command (issue 17) */

/*
 * {"command": "fetch", "hash": "<sha-256 hex or base64>"} or with "url":
 * "<file or .meta4 URL>": downloads into the cache on a thread of its
 * own (src/media/fetch.h), answers the command with the result (bytes
 * from server and peers, sources, time), reports bad pieces to the
 * server and shares the verified file (pl_agent_media_share).  Returns 1
 * if the payload was a fetch command (answered now or later), 0 if it
 * is for the dispatcher.
 */
int pl_agent_fetch_command(struct pl_agent *a, const char *from,
                           const char *type, const char *id, json_t *payload);
/* Each loop turn: finished downloads, their answers and reports. */
void pl_agent_fetch_poll(struct pl_agent *a);
/* Stops running downloads (shutdown). */
void pl_agent_fetch_stop(struct pl_agent *a);

#endif
