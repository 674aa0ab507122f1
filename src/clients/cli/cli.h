/*
 * cli.h - parley, the command-line client: what main.c (options, login,
 * the synchronous helpers, output) gives commands.c (one function per
 * command).
 *
 * Commands run sequentially on a logged-in session: pl_cli_iq() sends an
 * IQ and runs libstrophe until its answer (or the timeout), so each command
 * reads like a script.  Output goes through pl_cli_out(): a JSON object
 * with --json, otherwise the text the command gives.
 */
#ifndef PL_CLI_H
#define PL_CLI_H

#include <jansson.h>
#include <strophe.h>

#include "clients/client.h"

struct pl_cli {
    struct pl_cl_opts o;
    const char *jid;      /* --jid or PARLEY_JID */
    const char *password; /* --password, PARLEY_PASSWORD or stdin */
    const char *resource; /* --resource */
    int json;             /* --json */
    xmpp_ctx_t *ctx;
    xmpp_conn_t *conn;
    int connected;    /* logged in */
    int failed;       /* PL_EXIT_* of a failed login or lost link */
    int listening;    /* print received stanzas (listen, room) */
    long printed;     /* stanzas printed */
    const char *room; /* room JID being shown (room command) */
};

/* Logs in (connect, TLS, SASL, bind); PL_EXIT_OK or the failure code. */
int pl_cli_login(struct pl_cli *c);
/* Sends iq (borrowed; an id is set if missing) and waits for the reply:
 * PL_EXIT_OK with *reply (new reference) for a result, PL_EXIT_STANZA
 * with *reply for an error, PL_EXIT_TIMEOUT or PL_EXIT_CONNECT. */
int pl_cli_iq(struct pl_cli *c, xmpp_stanza_t *iq, xmpp_stanza_t **reply);
/* Runs the session for ms milliseconds (0: until a signal) or until
 * *done becomes non-zero. */
int pl_cli_run(struct pl_cli *c, long ms, const int *done);
/* Whether SIGINT or SIGTERM arrived. */
int pl_cli_interrupted(void);
/* Closes the stream cleanly (bounded). */
void pl_cli_logout(struct pl_cli *c);

/* Prints obj (takes ownership) as JSON with --json, else text (may be
 * NULL for nothing). */
void pl_cli_out(struct pl_cli *c, json_t *obj, const char *text);
/* Reports a stanza error reply (condition and text) on stderr and, with
 * --json, as {"error": ...} on stdout; returns PL_EXIT_STANZA. */
int pl_cli_stanza_error(struct pl_cli *c, const char *what,
                        xmpp_stanza_t *reply);
/* A received stanza as a JSON object (listen, room). */
json_t *pl_cli_stanza_json(xmpp_stanza_t *st);

/* Builders. */
xmpp_stanza_t *pl_cli_elem(xmpp_ctx_t *ctx, const char *name, const char *ns);
/* Appends <name>text</name> to parent; returns the child (borrowed). */
xmpp_stanza_t *pl_cli_add_text(xmpp_ctx_t *ctx, xmpp_stanza_t *parent,
                               const char *name, const char *text);
/* Appends child to parent and drops the caller's reference. */
void pl_cli_adopt(xmpp_stanza_t *parent, xmpp_stanza_t *child);

/* commands.c: runs argv[0] with its arguments; returns PL_EXIT_*. */
int pl_cli_command(struct pl_cli *c, int argc, char **argv);
/* Whether argv[0] needs no login (register). */
int pl_cli_command_is_offline(const char *name);
extern const char pl_cli_commands_help[];
/* get.c: `parley get` (distributed media, doc/media.md). */
int pl_cli_cmd_get(struct pl_cli *c, int argc, char **argv);

/* share.c: `parley share`, serving files as a peer (doc/media.md). */
int pl_cli_cmd_share(struct pl_cli *c, int argc, char **argv);

#endif
