/*
 * config.h - configuration: libconfig files, `--set` overrides, and the
 * schema that validates them, fills defaults and documents every setting.
 *
 * The core's settings are declared once, in the table in config.c (path,
 * type, default, bounds, help); modules declare theirs in their descriptor
 * (struct pl_option, module.h) and are read with pl_config_apply().  The
 * same tables print `--print-default-config`, so the documentation cannot
 * drift from the code.  Errors name the file and line.
 *
 * Extending: add a field to struct pl_settings and a row to the table.
 */
#ifndef PL_CONFIG_H
#define PL_CONFIG_H

#include <libconfig.h>
#include <stddef.h>
#include <stdio.h>

enum pl_opt_type {
    PL_OPT_INT = 1, /* long, checked against min/max */
    PL_OPT_BOOL,    /* int 0/1 */
    PL_OPT_STRING,  /* char *, owned by the settings */
    PL_OPT_ENUM,    /* int index into choices */
    PL_OPT_STRLIST, /* struct pl_strlist */
    PL_OPT_RAW,     /* config_setting_t * (a list or group its owner
                      * reads and checks); NULL when absent */
};

struct pl_strlist {
    char **v; /* owned strings */
    int n;    /* count */
};

struct pl_option {
    const char *name;           /* key, may contain dots for core groups */
    enum pl_opt_type type;      /* value type */
    const char *def;            /* default, in libconfig syntax */
    long min, max;              /* bounds for PL_OPT_INT */
    const char *const *choices; /* NULL-terminated, for PL_OPT_ENUM; for
                                 * PL_OPT_INT, words accepted besides an
                                 * integer: the i-th is stored -(i+1) */
    const char *help;           /* one line, printed as a comment */
    size_t offset;              /* where the value goes in the state struct */
};

enum pl_tls_mode {
    PL_TLS_NONE = 0, /* plain (STARTTLS offered only if certificates) */
    PL_TLS_STARTTLS, /* STARTTLS offered (required per c2s.require_encryption) */
    PL_TLS_DIRECT,   /* TLS from the first byte (XEP-0368) */
};

struct pl_listener_conf {
    char *protocol;          /* served by the front end naming it */
    char *address;           /* IPv4 or IPv6 literal */
    int port;                /* TCP or UDP port */
    int tls;                 /* enum pl_tls_mode */
    int transport;           /* enum pl_transport (listen.h) */
    int secure;              /* behind a TLS-terminating proxy or on
                              * loopback: treat as encrypted */
    long max_per_ip;         /* connections per address, this protocol */
    long max_total;          /* connections in all, this protocol */
    long handshake_timeout;  /* seconds, or -1: the limits group's */
    long idle_timeout;       /* seconds, or -1: the limits group's */
    long udp_buffer;         /* UDP: socket buffers asked for, bytes; 0: the
                              * system's default */
    config_setting_t *group; /* the entry, for the provider's own keys */
};

struct pl_host_conf {
    char *domain;              /* normalized domain */
    char *certificate;         /* PEM chain path */
    char *key;                 /* PEM key path */
    struct pl_strlist modules; /* enabled modules */
    config_setting_t *group;   /* the host's group, for module options */
};

struct pl_settings {
    /* server */
    char *data_dir;
    int log_level;
    long workers;
    char *admin_socket;     /* resolved: never empty */
    int digest_md5;         /* store MD5 digest keys with new passwords */
    long tls_tickets;       /* TLS 1.3 tickets after a full handshake */
    long processes;         /* resolved ("auto": online cores), >= 1 */
    int processes_auto;     /* it was "auto" */
    long restart_delay;     /* ms before restarting a dead process (doubling) */
    long restart_delay_max; /* ms, the longest such wait */
    long stop_timeout;      /* s to wait for processes after SIGTERM */
    /* storage */
    char *storage_driver;
    char *sqlite_path;
    int sqlite_synchronous;
    long sqlite_max_size;     /* bytes, 0: no limit */
    long storage_retries;     /* tries of a failed BEGIN or busy COMMIT */
    long storage_retry_delay; /* ms before the first retry (doubling) */
    char *postgresql;         /* libpq connection string (driver postgresql) */
    /* limits */
    long max_stanza_size;
    long max_depth;
    long handshake_timeout;
    long idle_timeout;
    long max_connections_per_ip;
    long max_connections;
    long max_outbuf;
    long read_rate;
    long read_burst;
    long max_resources_per_user;
    /* modules enabled on hosts that do not list their own */
    struct pl_strlist modules;
};

struct pl_config {
    config_t cfg;         /* parsed tree, kept for modules */
    char *path;           /* file it came from */
    struct pl_settings s; /* core settings */
    struct pl_listener_conf *listeners;
    int nlisteners;
    struct pl_host_conf *hosts;
    int nhosts;
    void **frontend; /* each front end's settings, by
                                        * module index (module.h) */
};

/*
 * Loads path (NULL: built-in defaults only), then applies each "key=value"
 * of sets in order.  On error returns PL_EINVAL with a message naming file
 * and line in err.
 */
int pl_config_load(const char *path, char *const *sets, int nsets,
                   struct pl_config **out, char *err, size_t errlen);
void pl_config_free(struct pl_config *c);

/*
 * Reads opts from group (then fallback, either may be NULL) into the struct
 * at base, applying defaults.  Unknown keys in group are errors when strict.
 */
int pl_config_apply(const struct pl_option *opts, config_setting_t *group,
                    config_setting_t *fallback, void *base, int strict,
                    char *err, size_t errlen);
/* Frees strings and lists that pl_config_apply stored in base. */
void pl_config_release(const struct pl_option *opts, void *base);

/* Prints a group of options with their help as a commented block. */
void pl_config_print_group(FILE *f, const char *group,
                           const struct pl_option *opts, const char *indent);
/* Prints the core part of the default configuration. */
void pl_config_print_default(FILE *f);

/*
 * Writes "file:line: " and the message (fmt with one %s, arg) to err, the
 * place being setting s's (none if s is NULL); returns PL_EINVAL.  For
 * the checks of front ends and modules that read their own settings.
 */
int pl_config_where(char *err, size_t errlen, config_setting_t *s,
                    const char *fmt, const char *arg);

/* Looks up a top-level group by name (NULL if absent). */
config_setting_t *pl_config_group(struct pl_config *c, const char *name);

int pl_strlist_has(const struct pl_strlist *l, const char *s);

/* Which process of server.processes this is (parleyd --process I, set
 * before the configuration is loaded: it makes server.admin_socket
 * "<path>.<I>", and the cluster module derives the node name and link
 * port from it); -1 in a single process or in the supervisor. */
void pl__config_set_process(int index);
int pl_config_process(void);

#endif
