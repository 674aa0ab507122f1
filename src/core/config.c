/*
 * config.c - configuration loading, overrides, validation and the default
 * configuration printer; see config.h.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "alloc.h"
#include "error.h"
#include "jid.h"
#include "listen.h"
#include "module.h"
#include "log.h"

#define S(field) offsetof(struct pl_settings, field)

static const char *const log_levels[] = {"error", "warn", "info", "debug",
                                         NULL};
static const char *const sync_modes[] = {"off", "normal", "full", NULL};
static const char *const auto_word[] = {"auto", NULL};
static int process_index = -1; /* parleyd --process I (supervise.h) */

void pl__config_set_process(int index)
{
    process_index = index;
}

int pl_config_process(void)
{
    return process_index;
}

static const struct pl_option server_opts[] = {
    {"data_dir", PL_OPT_STRING, "\"var\"", 0, 0, NULL,
     "Directory for certificates, the database and secrets.", S(data_dir)},
    {"log_level", PL_OPT_ENUM, "\"info\"", 0, 0, log_levels,
     "Least severe level logged to stderr: error, warn, info, debug.",
     S(log_level)},
    {"workers", PL_OPT_INT, "2", 1, 64, NULL,
     "Threads for blocking work (password hashing).", S(workers)},
    {"admin_socket", PL_OPT_STRING, "\"\"", 0, 0, NULL,
     "Path of the local admin socket used by parleyctl (mode 0600, "
     "parleyd's own uid and root only); empty: <data_dir>/admin.sock; "
     "\"off\": none.",
     S(admin_socket)},
    {"digest_md5", PL_OPT_BOOL, "true", 0, 0, NULL,
     "Also store the MD5 digest key H(user:realm:password) when a password "
     "is set, for SIP phones without SHA-256 (RFC 8760); weaker than the "
     "SHA-256 and SCRAM keys (doc/security.md).",
     S(digest_md5)},
    {"tls_tickets", PL_OPT_INT, "1", 0, 16, NULL,
     "TLS 1.3 session tickets sent after a full handshake: a client that "
     "keeps one resumes its next connection without the certificate and "
     "key exchange of a full handshake; 0: no resumption.  OpenSSL's "
     "default is 2, for clients that open connections in parallel; an "
     "XMPP client holds one, and a ticket costs the server an encryption "
     "and a record per login.",
     S(tls_tickets)},
    {"processes", PL_OPT_INT, "1", 1, 1024, auto_word,
     "Server processes on this machine, or \"auto\" (one per online "
     "core).  More than 1 (or \"auto\") starts a supervisor that runs them "
     "as nodes of a cluster sharing the client ports (SO_REUSEPORT); needs "
     "the cluster group and storage.driver = \"postgresql\" "
     "(doc/cluster.md).",
     S(processes)},
    {"restart_delay", PL_OPT_INT, "100", 1, 3600000, NULL,
     "Milliseconds the supervisor waits before restarting a process that "
     "died; doubled at each death in a row, up to restart_delay_max.",
     S(restart_delay)},
    {"restart_delay_max", PL_OPT_INT, "30000", 1, 3600000, NULL,
     "Longest wait before a restart; a process that ran this long is "
     "healthy again (the next wait is restart_delay).",
     S(restart_delay_max)},
    {"stop_timeout", PL_OPT_INT, "30", 1, 3600, NULL,
     "Seconds the supervisor waits for its processes to stop cleanly "
     "after SIGTERM before it kills them (SIGKILL).",
     S(stop_timeout)},
    {0},
};

static const struct pl_option storage_opts[] = {
    {"driver", PL_OPT_STRING, "\"sqlite\"", 0, 0, NULL,
     "Storage driver: sqlite or postgresql.", S(storage_driver)},
    {"postgresql", PL_OPT_STRING, "\"\"", 0, 0, NULL,
     "PostgreSQL connection string (libpq: \"host=... dbname=... "
     "user=...\" or a postgresql:// URI), for driver postgresql.",
     S(postgresql)},
    {"sqlite_path", PL_OPT_STRING, "\"\"", 0, 0, NULL,
     "SQLite database file; empty means <data_dir>/parley.db.", S(sqlite_path)},
    {"sqlite_synchronous", PL_OPT_ENUM, "\"full\"", 0, 0, sync_modes,
     "SQLite fsync policy: full makes every acknowledged write durable.",
     S(sqlite_synchronous)},
    {"sqlite_max_size", PL_OPT_INT, "0", 0, 1L << 50, NULL,
     "Largest size of the SQLite database in bytes (rounded down to "
     "pages); writes beyond it fail as on a full disk.  0: no limit.",
     S(sqlite_max_size)},
    {"retries", PL_OPT_INT, "3", 0, 100, NULL,
     "Times a batch whose BEGIN failed, or whose COMMIT failed with the "
     "database busy, is tried again before every job of the batch fails.",
     S(storage_retries)},
    {"retry_delay", PL_OPT_INT, "50", 0, 60000, NULL,
     "Milliseconds before the first of those retries; each next one "
     "waits twice as long (on the storage thread).",
     S(storage_retry_delay)},
    {0},
};

static const struct pl_option limits_opts[] = {
    {"max_stanza_size", PL_OPT_INT, "262144", 1024, 64 << 20, NULL,
     "Largest stanza in bytes; larger gets <policy-violation/>.",
     S(max_stanza_size)},
    {"max_depth", PL_OPT_INT, "48", 4, 1000, NULL,
     "Deepest element nesting inside a stanza; deeper gets "
     "<policy-violation/>.",
     S(max_depth)},
    {"handshake_timeout", PL_OPT_INT, "30", 1, 3600, NULL,
     "Seconds to complete TLS, SASL and resource binding.",
     S(handshake_timeout)},
    {"idle_timeout", PL_OPT_INT, "900", 10, 86400, NULL,
     "Seconds without any byte from a client before it is disconnected "
     "(<connection-timeout/>).",
     S(idle_timeout)},
    {"max_connections_per_ip", PL_OPT_INT, "100", 1, 1000000, NULL,
     "Simultaneous connections from one IP address.",
     S(max_connections_per_ip)},
    {"max_connections", PL_OPT_INT, "100000", 1, 10000000, NULL,
     "Simultaneous connections in all (bounded by the open-file limit).",
     S(max_connections)},
    {"max_outbuf", PL_OPT_INT, "1048576", 4096, 1 << 30, NULL,
     "Bytes queued to a slow reader before it is disconnected.", S(max_outbuf)},
    {"read_rate", PL_OPT_INT, "65536", 1024, 1 << 30, NULL,
     "Sustained bytes per second read from one connection; faster senders "
     "are paused, not buffered.",
     S(read_rate)},
    {"read_burst", PL_OPT_INT, "262144", 1024, 1 << 30, NULL,
     "Bytes a connection may send at once above read_rate.", S(read_burst)},
    {"max_resources_per_user", PL_OPT_INT, "10", 1, 1000, NULL,
     "Simultaneous resources of one account; more get "
     "<resource-constraint/>.",
     S(max_resources_per_user)},
    {0},
};

static const struct pl_option top_opts[] = {
    /* The default is every module whose descriptor says default_on
     * (default_modules). */
    {"modules", PL_OPT_STRLIST, "[]", 0, 0, NULL,
     "Modules enabled on every host that does not list its own.", S(modules)},
    {0},
};

static const struct {
    const char *group;
    const struct pl_option *opts;
} core_groups[] = {
    {"server", server_opts},
    {"storage", storage_opts},
    {"limits", limits_opts},
};

int pl_strlist_has(const struct pl_strlist *l, const char *s)
{
    for (int i = 0; i < l->n; i++)
        if (strcmp(l->v[i], s) == 0)
            return 1;
    return 0;
}

static void strlist_free(struct pl_strlist *l)
{
    for (int i = 0; i < l->n; i++)
        pl_free(l->v[i]);
    pl_free(l->v);
    l->v = NULL;
    l->n = 0;
}

int pl_config_where(char *err, size_t errlen, config_setting_t *s,
                    const char *fmt, const char *name)
{
    const char *file = s ? config_setting_source_file(s) : NULL;
    int line = s ? (int)config_setting_source_line(s) : 0;
    char msg[256];
    snprintf(msg, sizeof(msg), fmt, name);
    if (file)
        snprintf(err, errlen, "%s:%d: %s", file, line, msg);
    else
        snprintf(err, errlen, "%s", msg);
    return PL_EINVAL;
}

static int where(char *err, size_t errlen, config_setting_t *s, const char *fmt,
                 const char *name)
{
    return pl_config_where(err, errlen, s, fmt, name);
}

static int read_strlist(config_setting_t *s, struct pl_strlist *out)
{
    if (config_setting_type(s) != CONFIG_TYPE_ARRAY &&
        config_setting_type(s) != CONFIG_TYPE_LIST)
        return PL_EINVAL;
    int n = config_setting_length(s);
    struct pl_strlist l = {pl_calloc((size_t)n + 1, sizeof(char *)), 0};
    for (int i = 0; i < n; i++) {
        const char *v = config_setting_get_string_elem(s, i);
        if (!v) {
            strlist_free(&l);
            return PL_EINVAL;
        }
        l.v[l.n++] = pl_strdup(v);
    }
    *out = l;
    return PL_OK;
}

/* Reads one value of opt from s into base. */
static int read_value(const struct pl_option *o, config_setting_t *s,
                      void *base, char *err, size_t errlen)
{
    char *field = (char *)base + o->offset;
    switch (o->type) {
    case PL_OPT_INT: {
        long long v;
        const char *word = config_setting_get_string(s);
        if (word && o->choices) {
            /* An integer or one of the words: the i-th is stored -(i+1). */
            for (int i = 0; o->choices[i]; i++)
                if (strcmp(word, o->choices[i]) == 0) {
                    *(long *)field = -(long)(i + 1);
                    return PL_OK;
                }
        }
        if (config_setting_type(s) == CONFIG_TYPE_INT)
            v = config_setting_get_int(s);
        else if (config_setting_type(s) == CONFIG_TYPE_INT64)
            v = config_setting_get_int64(s);
        else
            return where(err, errlen, s, "%s must be an integer", o->name);
        if (v < o->min || v > o->max) {
            char m[200];
            snprintf(m, sizeof(m), "%%s must be between %ld and %ld", o->min,
                     o->max);
            return where(err, errlen, s, m, o->name);
        }
        *(long *)field = (long)v;
        return PL_OK;
    }
    case PL_OPT_BOOL:
        if (config_setting_type(s) != CONFIG_TYPE_BOOL)
            return where(err, errlen, s, "%s must be true or false", o->name);
        *(int *)field = config_setting_get_bool(s);
        return PL_OK;
    case PL_OPT_STRING: {
        const char *v = config_setting_get_string(s);
        if (!v)
            return where(err, errlen, s, "%s must be a string", o->name);
        pl_free(*(char **)field);
        *(char **)field = pl_strdup(v);
        return PL_OK;
    }
    case PL_OPT_ENUM: {
        const char *v = config_setting_get_string(s);
        if (v)
            for (int i = 0; o->choices[i]; i++)
                if (strcmp(v, o->choices[i]) == 0) {
                    *(int *)field = i;
                    return PL_OK;
                }
        return where(err, errlen, s, "%s has an unknown value", o->name);
    }
    case PL_OPT_RAW:
        if (!config_setting_is_aggregate(s))
            return where(err, errlen, s, "%s must be a list or a group",
                         o->name);
        *(config_setting_t **)field = s;
        return PL_OK;
    case PL_OPT_STRLIST: {
        struct pl_strlist l;
        if (read_strlist(s, &l) != PL_OK)
            return where(err, errlen, s, "%s must be a list of strings",
                         o->name);
        strlist_free((struct pl_strlist *)field);
        *(struct pl_strlist *)field = l;
        return PL_OK;
    }
    }
    return PL_EINVAL;
}

/* Parses a default written in libconfig syntax into a temporary tree. */
static int read_default(const struct pl_option *o, void *base)
{
    if (o->type == PL_OPT_RAW) {
        *(config_setting_t **)((char *)base + o->offset) = NULL;
        return PL_OK;
    }
    config_t tmp;
    config_init(&tmp);
    char text[512];
    snprintf(text, sizeof(text), "v = %s;", o->def);
    int rc = PL_EINVAL;
    if (config_read_string(&tmp, text) == CONFIG_TRUE) {
        char err[64];
        rc = read_value(o, config_lookup(&tmp, "v"), base, err, sizeof(err));
    }
    config_destroy(&tmp);
    pl_assert(rc == PL_OK); /* defaults are code, they must parse */
    return rc;
}

int pl_config_apply(const struct pl_option *opts, config_setting_t *group,
                    config_setting_t *fallback, void *base, int strict,
                    char *err, size_t errlen)
{
    if (group && strict) {
        for (int i = 0; i < config_setting_length(group); i++) {
            config_setting_t *m = config_setting_get_elem(group, (unsigned)i);
            const char *name = config_setting_name(m);
            int known = 0;
            for (const struct pl_option *o = opts; o->name; o++)
                if (name && strcmp(name, o->name) == 0)
                    known = 1;
            if (!known)
                return where(err, errlen, m, "unknown setting '%s'",
                             name ? name : "?");
        }
    }
    for (const struct pl_option *o = opts; o->name; o++) {
        config_setting_t *s = NULL;
        if (group)
            s = config_setting_get_member(group, o->name);
        if (!s && fallback)
            s = config_setting_get_member(fallback, o->name);
        int rc = s ? read_value(o, s, base, err, errlen)
                   : read_default(o, base);
        if (rc != PL_OK)
            return rc;
    }
    return PL_OK;
}

void pl_config_release(const struct pl_option *opts, void *base)
{
    for (const struct pl_option *o = opts; o->name; o++) {
        char *field = (char *)base + o->offset;
        if (o->type == PL_OPT_STRING) {
            pl_free(*(char **)field);
            *(char **)field = NULL;
        } else if (o->type == PL_OPT_STRLIST) {
            strlist_free((struct pl_strlist *)field);
        }
    }
}

/* --set key=value. */

static config_setting_t *copy_into(config_setting_t *parent, const char *name,
                                   config_setting_t *src)
{
    int type = config_setting_type(src);
    config_setting_t *d = config_setting_add(parent, name, type);
    if (!d)
        return NULL;
    switch (type) {
    case CONFIG_TYPE_INT:
        config_setting_set_int(d, config_setting_get_int(src));
        break;
    case CONFIG_TYPE_INT64:
        config_setting_set_int64(d, config_setting_get_int64(src));
        break;
    case CONFIG_TYPE_FLOAT:
        config_setting_set_float(d, config_setting_get_float(src));
        break;
    case CONFIG_TYPE_BOOL:
        config_setting_set_bool(d, config_setting_get_bool(src));
        break;
    case CONFIG_TYPE_STRING:
        config_setting_set_string(d, config_setting_get_string(src));
        break;
    default:
        for (int i = 0; i < config_setting_length(src); i++) {
            config_setting_t *e = config_setting_get_elem(src, (unsigned)i);
            if (!copy_into(d,
                           type == CONFIG_TYPE_GROUP ? config_setting_name(e)
                                                     : NULL,
                           e))
                return NULL;
        }
    }
    return d;
}

static int apply_set(config_t *cfg, const char *set, char *err, size_t errlen)
{
    const char *eq = strchr(set, '=');
    if (!eq || eq == set) {
        snprintf(err, errlen, "--set %s: expected key=value", set);
        return PL_EINVAL;
    }
    /* Names joined by single dots: strtok_r() below would skip an empty
     * name, and a key of dots alone would name nothing. */
    for (const char *k = set; k < eq; k++) {
        if (*k == '.' && (k == set || k + 1 == eq || k[1] == '.')) {
            snprintf(err, errlen, "--set %s: empty name in the key", set);
            return PL_EINVAL;
        }
    }
    char *key = pl_strndup(set, (size_t)(eq - set));
    const char *value = eq + 1;
    config_t tmp;
    config_init(&tmp);
    char *text = pl_malloc(strlen(value) * 2 + 16);
    sprintf(text, "v = %s;", value);
    if (config_read_string(&tmp, text) != CONFIG_TRUE) {
        /* Not libconfig syntax: take the value as a string. */
        config_destroy(&tmp);
        config_init(&tmp);
        char *p = text + sprintf(text, "v = \"");
        for (const char *q = value; *q; q++) {
            if (*q == '"' || *q == '\\')
                *p++ = '\\';
            *p++ = *q;
        }
        strcpy(p, "\";");
        config_read_string(&tmp, text);
    }
    pl_free(text);
    config_setting_t *v = config_lookup(&tmp, "v");
    int rc = PL_EINVAL;
    if (!v) {
        snprintf(err, errlen, "--set %s: cannot read the value", set);
        goto out;
    }
    config_setting_t *parent = config_root_setting(cfg);
    char *save = NULL, *part = strtok_r(key, ".", &save);
    while (part) {
        char *next = strtok_r(NULL, ".", &save);
        config_setting_t *child;
        if (part[0] == '[') {
            child = config_setting_get_elem(parent, (unsigned)atoi(part + 1));
            if (!child) {
                snprintf(err, errlen, "--set %s: no element %s", set, part);
                goto out;
            }
        } else {
            child = config_setting_get_member(parent, part);
        }
        if (!next) {
            if (child && part[0] != '[')
                config_setting_remove(parent, part);
            else if (child) {
                snprintf(err, errlen, "--set %s: cannot replace a list element",
                         set);
                goto out;
            }
            if (!copy_into(parent, part, v)) {
                snprintf(err, errlen, "--set %s: cannot set here", set);
                goto out;
            }
            rc = PL_OK;
            break;
        }
        if (!child)
            child = config_setting_add(parent, part, CONFIG_TYPE_GROUP);
        if (!child) {
            snprintf(err, errlen, "--set %s: %s is not a group", set, part);
            goto out;
        }
        parent = child;
        part = next;
    }
out:
    config_destroy(&tmp);
    pl_free(key);
    return rc;
}

/* Listeners and hosts. */

/* An entry's own value of the limits option name (with its bounds), or
 * -1 when the entry has none. */
static int entry_limit(config_setting_t *g, const char *name, long *out,
                       char *err, size_t errlen)
{
    *out = -1;
    config_setting_t *m = config_setting_get_member(g, name);
    if (!m)
        return PL_OK;
    for (const struct pl_option *o = limits_opts; o->name; o++) {
        if (strcmp(o->name, name) != 0)
            continue;
        struct pl_settings tmp;
        memset(&tmp, 0, sizeof(tmp));
        int rc = read_value(o, m, &tmp, err, errlen);
        if (rc == PL_OK)
            *out = *(long *)((char *)&tmp + o->offset);
        return rc;
    }
    return PL_EINVAL;
}

static int read_listeners(struct pl_config *c, char *err, size_t errlen)
{
    config_setting_t *l = config_lookup(&c->cfg, "listeners");
    if (!l)
        return PL_OK; /* defaults added by the caller */
    if (!config_setting_is_list(l))
        return where(err, errlen, l, "%s must be a list of groups",
                     "listeners");
    int n = config_setting_length(l);
    c->listeners = pl_calloc((size_t)n + 1, sizeof(*c->listeners));
    for (int i = 0; i < n; i++) {
        config_setting_t *g = config_setting_get_elem(l, (unsigned)i);
        struct pl_listener_conf *lc = &c->listeners[c->nlisteners++];
        /* No protocol: the first that listens by default (listen.c). */
        const char *proto = NULL, *addr = "127.0.0.1", *tls = "starttls";
        const char *transport = "tcp";
        int port = 0, secure = 0, per_ip = -1, total = -1;
        int udp_buffer = 1 << 20;
        if (!config_setting_is_group(g))
            return where(err, errlen, g, "%s: each entry is a { group }",
                         "listeners");
        config_setting_lookup_string(g, "protocol", &proto);
        config_setting_lookup_string(g, "address", &addr);
        config_setting_lookup_string(g, "tls", &tls);
        config_setting_lookup_string(g, "transport", &transport);
        config_setting_lookup_bool(g, "secure", &secure);
        config_setting_lookup_int(g, "max_connections_per_ip", &per_ip);
        config_setting_lookup_int(g, "max_connections", &total);
        if (config_setting_get_member(g, "udp_buffer") &&
            (config_setting_lookup_int(g, "udp_buffer", &udp_buffer) !=
                 CONFIG_TRUE ||
             udp_buffer < 0 || udp_buffer > (1 << 30)))
            return where(err, errlen, g,
                         "%s: udp_buffer is 0 to 1073741824 bytes", "listener");
        lc->udp_buffer = udp_buffer;
        lc->group = g;
        lc->protocol = proto ? pl_strdup(proto) : NULL;
        lc->address = pl_strdup(addr);
        lc->secure = secure;
        /* A missing port is the protocol's default (listen.c). */
        if (config_setting_get_member(g, "port") &&
            (config_setting_lookup_int(g, "port", &port) != CONFIG_TRUE ||
             port < 0 || port > 65535))
            return where(err, errlen, g, "%s needs a port 0-65535", "listener");
        lc->port = config_setting_get_member(g, "port") ? port : -1;
        lc->max_per_ip = per_ip;
        lc->max_total = total;
        if (entry_limit(g, "handshake_timeout", &lc->handshake_timeout, err,
                        errlen) != PL_OK ||
            entry_limit(g, "idle_timeout", &lc->idle_timeout, err, errlen) !=
                PL_OK)
            return PL_EINVAL;
        if (strcmp(transport, "tcp") == 0)
            lc->transport = 1; /* PL_TRANSPORT_TCP */
        else if (strcmp(transport, "udp") == 0)
            lc->transport = 2; /* PL_TRANSPORT_UDP */
        else
            return where(err, errlen, g,
                         "transport must be tcp or udp, not '%s'", transport);
        if (strcmp(tls, "starttls") == 0)
            lc->tls = PL_TLS_STARTTLS;
        else if (strcmp(tls, "direct") == 0)
            lc->tls = PL_TLS_DIRECT;
        else if (strcmp(tls, "none") == 0)
            lc->tls = PL_TLS_NONE;
        else
            return where(err, errlen, g,
                         "tls must be starttls, direct or none, not '%s'", tls);
    }
    return PL_OK;
}

static int read_hosts(struct pl_config *c, char *err, size_t errlen)
{
    config_setting_t *l = config_lookup(&c->cfg, "hosts");
    if (!l || !config_setting_is_list(l) || config_setting_length(l) == 0)
        return where(err, errlen, l,
                     "%s: at least one host { domain = \"...\"; } is needed",
                     "hosts");
    int n = config_setting_length(l);
    c->hosts = pl_calloc((size_t)n, sizeof(*c->hosts));
    for (int i = 0; i < n; i++) {
        config_setting_t *g = config_setting_get_elem(l, (unsigned)i);
        struct pl_host_conf *h = &c->hosts[c->nhosts++];
        const char *domain = NULL, *cert = NULL, *key = NULL;
        config_setting_lookup_string(g, "domain", &domain);
        char *norm = NULL;
        if (!domain || pl_jid_prep_domain(pl_str_c(domain), &norm) != PL_OK)
            return where(err, errlen, g, "%s: a valid domain is needed",
                         "host");
        for (int j = 0; j < i; j++)
            if (strcmp(c->hosts[j].domain, norm) == 0) {
                pl_free(norm);
                return where(err, errlen, g, "host '%s' is listed twice",
                             domain);
            }
        h->domain = norm;
        h->group = g;
        char path[4096];
        if (config_setting_lookup_string(g, "certificate", &cert))
            h->certificate = pl_strdup(cert);
        else {
            snprintf(path, sizeof(path), "%s/certs/%s.crt", c->s.data_dir,
                     norm);
            h->certificate = pl_strdup(path);
        }
        if (config_setting_lookup_string(g, "key", &key))
            h->key = pl_strdup(key);
        else {
            snprintf(path, sizeof(path), "%s/certs/%s.key", c->s.data_dir,
                     norm);
            h->key = pl_strdup(path);
        }
        config_setting_t *mods = config_setting_get_member(g, "modules");
        if (mods) {
            if (read_strlist(mods, &h->modules) != PL_OK)
                return where(err, errlen, mods, "%s must be a list of strings",
                             "modules");
        } else {
            h->modules.v = pl_calloc((size_t)c->s.modules.n + 1,
                                     sizeof(char *));
            for (int j = 0; j < c->s.modules.n; j++)
                h->modules.v[h->modules.n++] = pl_strdup(c->s.modules.v[j]);
        }
    }
    return PL_OK;
}


/* Without a listeners list: what the protocols ask for (listen.h). */
static void default_listeners(struct pl_config *c)
{
    int cap = 0;
    for (int i = 0; pl_module_at(i); i++) {
        const struct pl_frontend *fe = pl_module_at(i)->frontend;
        for (int k = 0; fe && fe->protocols && fe->protocols[k]; k++) {
            const struct pl_protocol *p = fe->protocols[k];
            if (!p->listen_by_default)
                continue;
            int ports[2] = {p->default_port, p->default_tls_port};
            int tls[2] = {PL_TLS_STARTTLS, PL_TLS_DIRECT};
            for (int j = 0; j < 2; j++) {
                if (!ports[j])
                    continue;
                if (c->nlisteners == cap) {
                    cap = cap ? 2 * cap : 4;
                    c->listeners = pl_realloc(c->listeners,
                                              (size_t)cap *
                                                  sizeof(*c->listeners));
                }
                struct pl_listener_conf *lc = &c->listeners[c->nlisteners++];
                memset(lc, 0, sizeof(*lc));
                lc->protocol = pl_strdup(p->name);
                lc->address = pl_strdup("127.0.0.1");
                lc->port = ports[j];
                lc->tls = tls[j];
                lc->transport = PL_TRANSPORT_TCP;
                lc->max_per_ip = -1;
                lc->max_total = -1;
                lc->handshake_timeout = -1;
                lc->idle_timeout = -1;
            }
        }
    }
}

/* Without a top-level modules list: every module on by default. */
static void default_modules(struct pl_strlist *l)
{
    for (int i = 0; l->v && l->v[i]; i++)
        pl_free(l->v[i]);
    pl_free(l->v);
    l->v = pl_calloc(PL_MODULE_COUNT + 1, sizeof(char *));
    l->n = 0;
    for (int i = 0; pl_module_at(i); i++)
        if (pl_module_at(i)->default_on)
            l->v[l->n++] = pl_strdup(pl_module_at(i)->name);
}

config_setting_t *pl_config_group(struct pl_config *c, const char *name)
{
    return config_lookup(&c->cfg, name);
}

int pl_config_load(const char *path, char *const *sets, int nsets,
                   struct pl_config **out, char *err, size_t errlen)
{
    struct pl_config *c = pl_calloc(1, sizeof(*c));
    config_init(&c->cfg);
    if (path) {
        c->path = pl_strdup(path);
        if (config_read_file(&c->cfg, path) != CONFIG_TRUE) {
            if (config_error_type(&c->cfg) == CONFIG_ERR_FILE_IO)
                snprintf(err, errlen, "%s: cannot read file", path);
            else
                snprintf(err, errlen, "%s:%d: %s",
                         config_error_file(&c->cfg) ? config_error_file(&c->cfg)
                                                    : path,
                         config_error_line(&c->cfg),
                         config_error_text(&c->cfg));
            goto fail;
        }
    }
    for (int i = 0; i < nsets; i++)
        if (apply_set(&c->cfg, sets[i], err, errlen) != PL_OK)
            goto fail;
    for (size_t i = 0; i < sizeof(core_groups) / sizeof(core_groups[0]); i++)
        if (pl_config_apply(core_groups[i].opts,
                            config_lookup(&c->cfg, core_groups[i].group), NULL,
                            &c->s, 1, err, errlen) != PL_OK)
            goto fail;
    if (pl_config_apply(top_opts, NULL, config_root_setting(&c->cfg), &c->s, 0,
                        err, errlen) != PL_OK)
        goto fail;
    if (!config_lookup(&c->cfg, "modules"))
        default_modules(&c->s.modules);
    if (!c->s.sqlite_path[0]) {
        pl_free(c->s.sqlite_path);
        size_t n = strlen(c->s.data_dir) + 16;
        c->s.sqlite_path = pl_malloc(n);
        snprintf(c->s.sqlite_path, n, "%s/parley.db", c->s.data_dir);
    }
    if (c->s.processes == -1) { /* "auto" */
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        c->s.processes_auto = 1;
        c->s.processes = n > 1 ? (n > 1024 ? 1024 : n) : 1;
    }
    if (!c->s.admin_socket[0]) {
        pl_free(c->s.admin_socket);
        size_t n = strlen(c->s.data_dir) + 16;
        c->s.admin_socket = pl_malloc(n);
        snprintf(c->s.admin_socket, n, "%s/admin.sock", c->s.data_dir);
    }
    if (process_index >= 0 && strcmp(c->s.admin_socket, "off") != 0) {
        /* One admin socket per process: <path>.<index>. */
        size_t n = strlen(c->s.admin_socket) + 16;
        char *p = pl_malloc(n);
        snprintf(p, n, "%s.%d", c->s.admin_socket, process_index);
        pl_free(c->s.admin_socket);
        c->s.admin_socket = p;
    }
    if (read_listeners(c, err, errlen) != PL_OK)
        goto fail;
    if (!config_lookup(&c->cfg, "listeners"))
        default_listeners(c);
    if (!config_lookup(&c->cfg, "hosts")) {
        config_setting_t *h = config_setting_add(config_root_setting(&c->cfg),
                                                 "hosts", CONFIG_TYPE_LIST);
        config_setting_t *g = config_setting_add(h, NULL, CONFIG_TYPE_GROUP);
        config_setting_set_string(config_setting_add(g, "domain",
                                                     CONFIG_TYPE_STRING),
                                  "localhost");
    }
    if (read_hosts(c, err, errlen) != PL_OK)
        goto fail;
    if (pl__listen_check(c, err, errlen) != PL_OK)
        goto fail;
    /* Front ends' own groups (module.h, struct pl_frontend). */
    c->frontend = pl_calloc(PL_MODULE_COUNT, sizeof(void *));
    for (int i = 0; pl_module_at(i); i++) {
        const struct pl_module *m = pl_module_at(i);
        const struct pl_frontend *fe = m->frontend;
        if (!fe)
            continue;
        c->frontend[i] = pl_calloc(1,
                                   fe->settings_size ? fe->settings_size : 1);
        if (fe->options &&
            pl_config_apply(fe->options,
                            config_lookup(&c->cfg, pl_module_group(m)), NULL,
                            c->frontend[i], 1, err, errlen) != PL_OK)
            goto fail;
        if (fe->check && fe->check(c, c->frontend[i], err, errlen) != PL_OK)
            goto fail;
    }
    *out = c;
    return PL_OK;
fail:
    pl_config_free(c);
    return PL_EINVAL;
}

void pl_config_free(struct pl_config *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < sizeof(core_groups) / sizeof(core_groups[0]); i++)
        pl_config_release(core_groups[i].opts, &c->s);
    pl_config_release(top_opts, &c->s);
    for (int i = 0; c->frontend && pl_module_at(i); i++) {
        const struct pl_frontend *fe = pl_module_at(i)->frontend;
        if (fe && fe->release && c->frontend[i])
            fe->release(c->frontend[i]);
        if (fe && fe->options && c->frontend[i])
            pl_config_release(fe->options, c->frontend[i]);
        pl_free(c->frontend[i]);
    }
    pl_free(c->frontend);
    for (int i = 0; i < c->nlisteners; i++) {
        pl_free(c->listeners[i].protocol);
        pl_free(c->listeners[i].address);
    }
    pl_free(c->listeners);
    for (int i = 0; i < c->nhosts; i++) {
        pl_free(c->hosts[i].domain);
        pl_free(c->hosts[i].certificate);
        pl_free(c->hosts[i].key);
        strlist_free(&c->hosts[i].modules);
    }
    pl_free(c->hosts);
    pl_free(c->path);
    config_destroy(&c->cfg);
    pl_free(c);
}

void pl_config_print_group(FILE *f, const char *group,
                           const struct pl_option *opts, const char *indent)
{
    fprintf(f, "%s%s: {\n", indent, group);
    for (const struct pl_option *o = opts; o->name; o++) {
        fprintf(f, "%s  # %s\n", indent, o->help);
        if (o->type == PL_OPT_INT)
            fprintf(f, "%s  # (%ld to %ld)\n", indent, o->min, o->max);
        fprintf(f, "%s  %s = %s;\n", indent, o->name, o->def);
    }
    fprintf(f, "%s};\n\n", indent);
}

void pl_config_print_default(FILE *f)
{
    fputs("# parleyd configuration (libconfig syntax: "
          "https://hyperrealm.github.io/libconfig/).\n"
          "# Every setting shown has its default value; remove what you do "
          "not change.\n"
          "# Any setting can be overridden on the command line with\n"
          "#   --set group.key=value   (lists: --set 'modules=[\"ping\"]')\n\n",
          f);
    for (size_t i = 0; i < sizeof(core_groups) / sizeof(core_groups[0]); i++)
        pl_config_print_group(f, core_groups[i].group, core_groups[i].opts, "");
    fputs("# Where parleyd accepts connections.  protocol: one a front end "
          "serves:\n",
          f);
    for (int i = 0; pl_module_at(i); i++) {
        const struct pl_frontend *fe = pl_module_at(i)->frontend;
        for (int k = 0; fe && fe->protocols && fe->protocols[k]; k++)
            fprintf(f, "#   %s: %s (port %d)\n", fe->protocols[k]->name,
                    fe->protocols[k]->summary, fe->protocols[k]->default_port);
    }
    fputs("# tls: starttls (upgraded by the protocol), direct (TLS from the "
          "first byte)\n# or none; transport: tcp or udp; secure = true "
          "for a listener behind a\n# TLS-terminating proxy; "
          "max_connections_per_ip, max_connections, handshake_timeout\n# and "
          "idle_timeout override the limits group for this entry (its\n# "
          "idle_timeout also wins over a front end's own idle policy);\n# "
          "udp_buffer: a UDP socket's receive and send buffers (1048576\n# "
          "bytes; 0: the system's default).\n"
          "listeners = (\n",
          f);
    struct pl_config d = {0};
    default_listeners(&d);
    for (int i = 0; i < d.nlisteners; i++) {
        fprintf(f,
                "  { protocol = \"%s\"; address = \"%s\"; port = %d; "
                "tls = \"%s\"; }%s\n",
                d.listeners[i].protocol, d.listeners[i].address,
                d.listeners[i].port,
                d.listeners[i].tls == PL_TLS_DIRECT ? "direct" : "starttls",
                i + 1 < d.nlisteners ? "," : "");
        pl_free(d.listeners[i].protocol);
        pl_free(d.listeners[i].address);
    }
    pl_free(d.listeners);
    fputs(");\n\n"
          "# Virtual hosts.  certificate and key default to\n"
          "# <data_dir>/certs/<domain>.crt and .key, created self-signed on "
          "first start.\n# A host may list its own modules and override any "
          "module group, e.g.\n#   register: { policy = \"closed\"; };\n"
          "hosts = (\n  { domain = \"localhost\"; }\n);\n\n",
          f);
    struct pl_strlist mods = {0};
    default_modules(&mods);
    fprintf(f, "# %s\nmodules = [", top_opts[0].help);
    for (int i = 0; i < mods.n; i++)
        fprintf(f, "%s\"%s\"", i ? ", " : "", mods.v[i]);
    fputs("];\n\n", f);
    strlist_free(&mods);
}
