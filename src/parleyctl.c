/*
 * parleyctl.c - administration from the shell, on the same configuration
 * and storage as parleyd (safe while it runs: SQLite WAL).
 *
 *   parleyctl [--config FILE] [--set key=value]... COMMAND
 *   parleyctl --help | --version    (standard output, exit 0)
 *     adduser JID [PASSWORD]   create an account (password from stdin if
 *                              omitted); its SCRAM and SIP digest keys
 *                              are derived as mod_register does
 *     passwd JID [PASSWORD]    set a new password (new keys of both kinds)
 *     deluser JID              remove an account and its data
 *     list [DOMAIN]            print accounts, one bare JID per line
 *     archive-fill JID PEER N  append N chat messages between JID and PEER
 *                              (alternating directions, 1 ms apart, ending
 *                              now) to JID's message archive, as mod_mam
 *                              writes them: for benchmarks and tests
 *     check                    configuration, certificates, ports
 *     push [--host D] [--ttl SEC] [--json]
 *          (--device ID[,ID...] | --group NAME | --all) (JSON | --fetch FILE)
 *                              push a JSON payload to devices; prints its id.
 *                              --fetch FILE (an uploaded file's id, SHA-256
 *                              or URL) pushes {"command":"fetch","hash":hex,
 *                              "url":..., "size":N}: "download this file"
 *     push status [--json] [--verbose] ID
 *                              delivered / pending / expired / failed counts
 *                              and the failures
 *     group add NAME DEVICE... | group remove NAME [DEVICE...] |
 *     group list [NAME]        device groups for push
 *     s2s [--json]             federation links: direction, domains, state,
 *                              authentication, queued stanzas, last error
 *     cluster [--json]         the cluster as this node sees it: nodes
 *                              (alive/dead, link address, epoch, last
 *                              seen), sessions per node, links (up,
 *                              bytes and stanzas each way, unacknowledged
 *                              stanzas, acknowledgement round trip),
 *                              this node's phase (starting, ready,
 *                              quiesced, draining), and another's in
 *                              place of "alive" when not ready
 *     cluster drain NODE       NODE stops accepting, ends its sessions
 *                              (cluster.drain_rate a second), stops
 *     cluster quiesce NODE     NODE stops accepting, keeps its sessions
 *     cluster restart          a rolling restart by this process's
 *                              supervisor (server.processes > 1)
 *     components [--json]      external components (XEP-0114): domain,
 *                              host, connected, links, peer, stanza
 *                              counts (JSON: held, resent, bounced)
 *     stats [--json]           the server's counters (src/core/stats.h)
 *                              and heap_in_use / heap_from_system (bytes)
 *     sip [--json]             SIP listeners, connections, transactions,
 *                              registrations
 *     sip ping [--json] ADDRESS:PORT
 *                              an OPTIONS over UDP from parleyd's SIP
 *                              listener: the answer's status, Timer E
 *                              retransmissions, milliseconds; exit 1 when
 *                              nothing answered (408 after Timer F)
 *     socks5 [--json]          the SOCKS5 Bytestreams proxy (XEP-0065):
 *                              listeners, connections, transfers waiting
 *                              for activation and active ones
 *     sessions [--json] [HOST] bound sessions: full JID, transport, address
 *     kick JID [TEXT]          end a session (full JID) or every session of
 *                              an account (bare JID); prints how many
 *     announce [--subject S] HOST TEXT
 *                              a message from HOST to each of its users
 *                              online; prints how many sessions got it
 *     token create [--read-only] NAME
 *                              a bearer token for the HTTP admin API,
 *                              printed once (only its SHA-256 is kept, in
 *                              <data_dir>/api_tokens)
 *     token list | token revoke NAME
 *     media [--json] status FILE | media [--json] list
 *                              an uploaded file's peers, bans, failure
 *                              reports and what the server sent of it
 *                              (FILE: id, SHA-256 or URL; doc/media.md)
 *   push, group, s2s, cluster, components, stats, sip, socks5, media, sessions,
 *   kick and announce talk to parleyd's admin socket
 *   (src/core/admin.h),
 *   whose path is --socket PATH, else server.admin_socket, else
 *   <data_dir>/admin.sock.
 *
 * Exit status: 0 success, 1 failure (message on stderr), 2 usage, 3 the
 * admin socket cannot be reached (parleyd not running, or no rights).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/ssl.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "core/account.h"
#include "core/alloc.h"
#include "core/config.h"
#include "core/error.h"
#include "core/jid.h"
#include "core/log.h"
#include "core/scram.h"
#include "core/module.h"
#include "core/stanza.h"
#include "xmpp/c2s.h"
#include "core/storage.h"
#include "core/version.h"
#include "http/token.h"
#include "gateway/queue.h"
#include "media/media.h"

static struct pl_config *config;
static const struct pl_storage_driver *drv;
static void *db;

/* The usage text on f; returns the usage exit status, 2. */
static int usage_to(FILE *f)
{
    fputs(
        "usage: parleyctl [--config FILE] [--set key=value]... COMMAND\n"
        "       parleyctl --help | --version\n"
        "  adduser JID [PASSWORD]\n  passwd JID [PASSWORD]\n"
        "  deluser JID\n  list [DOMAIN]\n  archive-fill JID PEER N\n"
        "  check\n"
        "  push [--host D] [--ttl SEC] [--json] (--device ID[,ID..] | "
        "--group NAME | --all) (JSON | --fetch FILE)\n"
        "  push status [--json] [--verbose] ID\n"
        "  group add NAME DEVICE... | group remove NAME [DEVICE...] | "
        "group list [NAME]\n"
        "  s2s [--json]\n  cluster [--json]\n"
        "  cluster drain NODE | cluster quiesce NODE | cluster restart\n"
        "  components [--json]\n  stats [--json]\n"
        "  sip [--json] | sip ping [--json] ADDRESS:PORT\n"
        "  socks5 [--json]\n"
        "  media [--json] status FILE | media [--json] list\n"
        "  sessions [--json] [HOST]\n  kick JID [TEXT]\n"
        "  announce [--subject S] HOST TEXT\n"
        "  token create [--read-only] NAME | token list | "
        "token revoke NAME\n"
        "  gateway [--queue FILE] [--json] queue | trace ID\n"
        "  migrate --from sqlite --to postgresql (or back)\n"
        "  (push, group, s2s, cluster, components, stats, sip, socks5, media, "
        "sessions, kick, "
        "announce: [--socket PATH] before the command)\n",
        f);
    return 2;
}

static int usage(void)
{
    return usage_to(stderr);
}

/* Ends a transaction: PL_OK once it committed; otherwise it is rolled
 * back and nothing of it stays (the caller reports a failure). */
static int commit(const struct pl_storage_driver *d, void *h)
{
    int rc = d->commit(h);
    if (rc == PL_OK)
        return PL_OK;
    d->rollback(h);
    fprintf(stderr, "parleyctl: commit failed: %s\n", pl_strerror(rc));
    return PL_ESTORAGE;
}

static int open_db(void)
{
    drv = pl_storage_driver_find(config->s.storage_driver);
    if (!drv) {
        fprintf(stderr, "parleyctl: unknown storage driver %s\n",
                config->s.storage_driver);
        return PL_EINVAL;
    }
    return drv->open(&config->s, &db);
}

static int parse_account(const char *arg, struct pl_jid **out)
{
    if (pl_jid_parse(pl_str_c(arg), out) != PL_OK || !(*out)->local ||
        (*out)->resource) {
        fprintf(stderr, "parleyctl: '%s' is not a bare JID user@domain\n", arg);
        return PL_EINVAL;
    }
    for (int i = 0; i < config->nhosts; i++)
        if (strcmp(config->hosts[i].domain, (*out)->domain) == 0)
            return PL_OK;
    fprintf(stderr, "parleyctl: %s is not a configured host\n", (*out)->domain);
    return PL_EINVAL;
}

static char *read_password(const char *arg)
{
    if (arg)
        return pl_strdup(arg);
    char line[4096];
    if (!fgets(line, sizeof(line), stdin))
        return NULL;
    line[strcspn(line, "\r\n")] = '\0';
    return pl_strdup(line);
}

/* SCRAM and digest keys for user@domain, as mod_register makes them. */
static int derive(const struct pl_jid *j, const char *password,
                  struct pl_account *a)
{
    const struct pl_c2s_settings *cs = config->frontend[PL_MODIDX_c2s];
    unsigned it = (unsigned)cs->scram_iterations;
    if (pl_account_set_password(a, j->local, j->domain, pl_str_c(password), it,
                                config->s.digest_md5) != PL_OK) {
        fputs("parleyctl: the password is not acceptable (SASLprep)\n", stderr);
        return PL_EINVAL;
    }
    return PL_OK;
}

static int set_password(const char *jid, const char *pw, int create)
{
    struct pl_jid *j = NULL;
    if (parse_account(jid, &j) != PL_OK)
        return 1;
    char *password = read_password(pw);
    struct pl_account a;
    int rc = 1;
    memset(&a, 0, sizeof(a));
    if (!password || !*password) {
        fputs("parleyctl: empty password\n", stderr);
        goto out;
    }
    if (derive(j, password, &a) != PL_OK || open_db() != PL_OK)
        goto out;
    drv->begin(db);
    int r = create ? drv->account_create(db, j->domain, j->local, &a)
                   : drv->account_update(db, j->domain, j->local, &a);
    if (commit(drv, db) != PL_OK && r == PL_OK)
        r = PL_ESTORAGE;
    if (r == PL_ECONFLICT)
        fprintf(stderr, "parleyctl: %s already exists\n", j->bare);
    else if (r == PL_ENOT_FOUND)
        fprintf(stderr, "parleyctl: no account %s\n", j->bare);
    else if (r != PL_OK)
        fprintf(stderr, "parleyctl: storage error\n");
    else
        rc = 0;
out:
    if (password) {
        OPENSSL_cleanse(password, strlen(password));
        pl_free(password);
    }
    OPENSSL_cleanse(&a, sizeof(a));
    pl_jid_free(j);
    return rc;
}

static int deluser(const char *jid)
{
    struct pl_jid *j = NULL;
    if (parse_account(jid, &j) != PL_OK || open_db() != PL_OK) {
        pl_jid_free(j);
        return 1;
    }
    drv->begin(db);
    int r = drv->account_delete(db, j->domain, j->local);
    if (commit(drv, db) != PL_OK && r == PL_OK)
        r = PL_ESTORAGE;
    if (r == PL_ENOT_FOUND)
        fprintf(stderr, "parleyctl: no account %s\n", j->bare);
    pl_jid_free(j);
    return r == PL_OK ? 0 : 1;
}


/* A XEP-0359 id as mod_mam makes them: 128 random bits, base64url. */
static void fill_sid(char out[24])
{
    static const char b64[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    unsigned char r[17] = {0};
    if (getrandom(r, 16, 0) != 16)
        abort();
    for (int i = 0, bit = 0; i < 22; i++) {
        int v = 0;
        for (int k = 0; k < 6; k++, bit++)
            v = v << 1 | (bit < 128 ? (r[bit / 8] >> (7 - bit % 8)) & 1 : 0);
        out[i] = b64[v];
    }
    out[22] = '\0';
}

static int archive_fill(const char *jid, const char *peer, const char *count)
{
    struct pl_jid *j = NULL, *p = NULL;
    char *end;
    long n = strtol(count, &end, 10);
    if (*end || n <= 0) {
        fprintf(stderr, "parleyctl: bad count %s\n", count);
        return 1;
    }
    if (parse_account(jid, &j) != PL_OK ||
        pl_jid_parse(pl_str_c(peer), &p) != PL_OK || open_db() != PL_OK) {
        fprintf(stderr, "parleyctl: bad JID\n");
        pl_jid_free(j);
        pl_jid_free(p);
        return 1;
    }
    struct timeval tv;
    gettimeofday(&tv, NULL);
    long long now = (long long)tv.tv_sec * 1000000LL + tv.tv_usec;
    char own[1100], other[1100];
    snprintf(own, sizeof(own), "%s/fill", j->bare);
    snprintf(other, sizeof(other), "%s", p->resource ? p->full : p->bare);
    int rc = PL_OK;
    struct pl_buf xml = {0};
    for (long i = 0; i < n && rc == PL_OK; i++) {
        if (i % 10000 == 0)
            drv->begin(db);
        int out = i % 2;
        /* The stanza as the router hands it to mod_mam. */
        struct pl_stanza *st = pl_stanza_new("message", PL_NS_CLIENT);
        char id[32], body[64];
        snprintf(id, sizeof(id), "fill%ld", i);
        snprintf(body, sizeof(body), "archived message %ld", i);
        pl_stanza_set_attr(st, "type", "chat");
        pl_stanza_set_attr(st, "id", id);
        pl_stanza_set_attr(st, "to", out ? other : own);
        pl_stanza_set_attr(st, "from", out ? own : other);
        struct pl_node *b = pl_node_add_child(st, pl_stanza_root(st), "body",
                                              PL_NS_CLIENT);
        pl_node_add_text(st, b, body, strlen(body));
        xml.len = xml.off = 0;
        pl_node_serialize(pl_stanza_root(st), "", PL_NS_CLIENT, &xml);
        char sid[24];
        fill_sid(sid);
        struct pl_archive_item it = {
            .sid = sid,
            .ts = now - (n - i) * 1000,
            .with = p->bare,
            .with_res = p->resource,
            .dir = out ? PL_ARCHIVE_OUT : PL_ARCHIVE_IN,
            .xml = xml.data,
            .xml_len = xml.len,
        };
        long long key;
        rc = drv->archive_append(db, j->domain, j->local, PL_ARCHIVE_USER, &it,
                                 0, &key);
        pl_stanza_unref(st);
        if ((i % 10000 == 9999 || i == n - 1) && commit(drv, db) != PL_OK &&
            rc == PL_OK)
            rc = PL_ESTORAGE;
    }
    if (commit(drv, db) != PL_OK && rc == PL_OK)
        rc = PL_ESTORAGE;
    pl_buf_reset(&xml);
    pl_jid_free(j);
    pl_jid_free(p);
    if (rc != PL_OK)
        fprintf(stderr, "parleyctl: archive-fill failed: %s\n",
                pl_strerror(rc));
    return rc == PL_OK ? 0 : 1;
}

static void print_user(const char *user, void *ud)
{
    printf("%s@%s\n", user, (const char *)ud);
}

static int list(const char *domain)
{
    if (open_db() != PL_OK)
        return 1;
    for (int i = 0; i < config->nhosts; i++) {
        const char *d = config->hosts[i].domain;
        if (domain && strcmp(domain, d) != 0)
            continue;
        if (drv->account_list(db, d, print_user, (void *)d) != PL_OK)
            return 1;
    }
    return 0;
}

static int check_port(const struct pl_listener_conf *l)
{
    struct sockaddr_storage ss = {0};
    socklen_t len;
    struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, l->address, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)l->port);
        len = sizeof(*a4);
    } else if (inet_pton(AF_INET6, l->address, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)l->port);
        len = sizeof(*a6);
    } else {
        printf("FAIL listener %s: not an IP address\n", l->address);
        return 1;
    }
    int udp = l->transport == 2; /* PL_TRANSPORT_UDP */
    int fd = socket(ss.ss_family, udp ? SOCK_DGRAM : SOCK_STREAM, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    int ok = bind(fd, (struct sockaddr *)&ss, len) == 0;
    int e = errno;
    close(fd);
    if (ok)
        printf("ok   listener %s %s port %d is free\n", l->address,
               udp ? "udp" : "tcp", l->port);
    else
        printf("%s listener %s %s port %d: %s\n",
               e == EADDRINUSE ? "note" : "FAIL", l->address,
               udp ? "udp" : "tcp", l->port,
               e == EADDRINUSE ? "in use (parleyd running?)" : strerror(e));
    return ok || e == EADDRINUSE ? 0 : 1;
}

static int check(void)
{
    int bad = 0;
    printf("ok   configuration %s\n",
           config->path ? config->path : "(defaults)");
    for (int i = 0; i < config->nhosts; i++) {
        struct pl_host_conf *h = &config->hosts[i];
        FILE *f = fopen(h->certificate, "r");
        if (!f) {
            printf("note host %s: no certificate yet at %s (parleyd creates "
                   "a self-signed one on start)\n",
                   h->domain, h->certificate);
            continue;
        }
        X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
        fclose(f);
        if (!x) {
            printf("FAIL host %s: %s is not a PEM certificate\n", h->domain,
                   h->certificate);
            bad = 1;
            continue;
        }
        int expired = X509_cmp_current_time(X509_get0_notAfter(x)) < 0;
        int matches = X509_check_host(x, h->domain, 0, 0, NULL) == 1;
        printf("%s host %s: certificate %s%s%s\n",
               expired || !matches ? "FAIL" : "ok  ", h->domain, h->certificate,
               expired ? " has expired" : "",
               matches ? "" : " does not name the domain");
        bad |= expired || !matches;
        X509_free(x);
    }
    for (int i = 0; i < config->nlisteners; i++)
        bad |= check_port(&config->listeners[i]);
    return bad;
}

/* ---- push and group: requests to parleyd's admin socket (mod fleet) */

static const char *socket_path;

/* Sends req (borrowed) and returns the answer (new reference) or NULL
 * with *rc set to the exit status. */
static json_t *admin_call(json_t *req, int *rc)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s",
             socket_path ? socket_path : config->s.admin_socket);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sa.sun_path)) {
        fprintf(stderr, "parleyctl: socket path too long: %s\n", path);
        *rc = 3;
        return NULL;
    }
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        fprintf(stderr, "parleyctl: cannot reach parleyd at %s: %s\n", path,
                strerror(errno));
        if (fd >= 0)
            close(fd);
        *rc = 3;
        return NULL;
    }
    struct timeval tv = {30, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    char *text = json_dumps(req, JSON_COMPACT);
    struct pl_buf out = {0};
    pl_buf_append_str(&out, text);
    pl_buf_append(&out, "\n", 1);
    free(text);
    while (out.len) {
        ssize_t w = write(fd, out.data + out.off, out.len);
        if (w <= 0)
            break;
        pl_buf_consume(&out, (size_t)w);
    }
    pl_buf_reset(&out);
    struct pl_buf in = {0};
    char buf[65536];
    json_t *ans = NULL;
    for (;;) {
        ssize_t r = read(fd, buf, sizeof(buf));
        if (r <= 0)
            break;
        pl_buf_append(&in, buf, (size_t)r);
        struct pl_str s = pl_buf_str(&in);
        const char *nl = memchr(s.p, '\n', s.len);
        if (nl) {
            ans = json_loadb(s.p, (size_t)(nl - s.p), 0, NULL);
            break;
        }
    }
    pl_buf_reset(&in);
    close(fd);
    if (!ans) {
        fprintf(stderr, "parleyctl: no answer from parleyd\n");
        *rc = 1;
        return NULL;
    }
    *rc = json_is_true(json_object_get(ans, "ok")) ? 0 : 1;
    if (*rc)
        fprintf(stderr, "parleyctl: %s: %s\n",
                json_string_value(json_object_get(ans, "error")),
                json_string_value(json_object_get(ans, "detail")));
    return ans;
}

static void print_json(json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
    if (s)
        puts(s);
    free(s);
}

/* The payload of `push --fetch FILE`: the file as parleyd's media module
 * resolves FILE (id, SHA-256 or URL; the same as `media status FILE`),
 * {"command":"fetch","hash":<hex>,"url":<file URL>,"size":N}; NULL with a
 * message when there is no such file (*rc 1) or no parleyd (*rc 3). */
static json_t *fetch_payload(const char *spec, int *rc)
{
    json_t *req = json_pack("{s:s, s:s}", "op", "media", "file", spec);
    json_t *ans = admin_call(req, rc);
    json_decref(req);
    json_t *f = json_object_get(ans, "file");
    const char *b64 = json_string_value(json_object_get(f, "sha256"));
    const char *url = json_string_value(json_object_get(f, "url"));
    json_t *size = json_object_get(f, "size");
    unsigned char raw[PL_MEDIA_HASH_LEN];
    char hex[2 * PL_MEDIA_HASH_LEN + 1];
    json_t *p = NULL;
    if (ans && !*rc) {
        if (!b64 || !url || !json_is_integer(size) ||
            pl_media_parse_sha256(b64, strlen(b64), raw) != PL_MEDIA_OK) {
            fprintf(stderr,
                    "parleyctl: %s: no SHA-256 known for that file "
                    "yet\n",
                    spec);
            *rc = 1;
        } else {
            pl_media_hex(raw, sizeof(raw), hex);
            p = json_pack("{s:s, s:s, s:s, s:O}", "command", "fetch", "hash",
                          hex, "url", url, "size", size);
        }
    }
    json_decref(ans);
    return p;
}

static int cmd_push(int n, char **a)
{
    int as_json = 0, verbose = 0;
    json_t *req = json_object();
    const char *payload = NULL, *status_id = NULL, *fetch = NULL;
    int rc = 2;
    if (n >= 1 && !strcmp(a[0], "status")) {
        json_object_set_new(req, "op", json_string("status"));
        for (int i = 1; i < n; i++) {
            if (!strcmp(a[i], "--json"))
                as_json = 1;
            else if (!strcmp(a[i], "--verbose"))
                verbose = 1;
            else if (!strcmp(a[i], "--host") && i + 1 < n)
                json_object_set_new(req, "host", json_string(a[++i]));
            else if (!status_id && a[i][0] != '-')
                status_id = a[i];
            else
                goto out;
        }
        if (!status_id)
            goto out;
        json_object_set_new(req, "id", json_string(status_id));
        if (verbose)
            json_object_set_new(req, "verbose", json_true());
    } else {
        json_object_set_new(req, "op", json_string("push"));
        int targets = 0;
        for (int i = 0; i < n; i++) {
            if (!strcmp(a[i], "--json")) {
                as_json = 1;
            } else if (!strcmp(a[i], "--all")) {
                json_object_set_new(req, "all", json_true());
                targets++;
            } else if (!strcmp(a[i], "--host") && i + 1 < n) {
                json_object_set_new(req, "host", json_string(a[++i]));
            } else if (!strcmp(a[i], "--ttl") && i + 1 < n) {
                char *end;
                long long t = strtoll(a[++i], &end, 10);
                if (*end || t <= 0)
                    goto out;
                json_object_set_new(req, "ttl", json_integer(t));
            } else if (!strcmp(a[i], "--group") && i + 1 < n) {
                json_object_set_new(req, "group", json_string(a[++i]));
                targets++;
            } else if (!strcmp(a[i], "--device") && i + 1 < n) {
                json_t *list = json_array();
                char *copy = pl_strdup(a[++i]), *save = NULL;
                for (char *t = strtok_r(copy, ",", &save); t;
                     t = strtok_r(NULL, ",", &save))
                    json_array_append_new(list, json_string(t));
                pl_free(copy);
                json_object_set_new(req, "device", list);
                targets++;
            } else if (!strcmp(a[i], "--fetch") && i + 1 < n && !fetch) {
                fetch = a[++i];
            } else if (!payload && (a[i][0] != '-' || !a[i][1])) {
                payload = a[i];
            } else {
                goto out;
            }
        }
        if (targets != 1 || !payload == !fetch)
            goto out;
        if (fetch) {
            json_t *p = fetch_payload(fetch, &rc);
            if (!p)
                goto out;
            json_object_set_new(req, "payload", p);
        } else {
            char line[65536];
            if (!strcmp(payload, "-")) {
                size_t r = fread(line, 1, sizeof(line) - 1, stdin);
                line[r] = '\0';
                payload = line;
            }
            json_error_t e;
            json_t *p = json_loads(payload, JSON_DECODE_ANY, &e);
            if (!p) {
                fprintf(stderr, "parleyctl: the payload is not JSON: %s\n",
                        e.text);
                rc = 1;
                goto out;
            }
            json_object_set_new(req, "payload", p);
        }
    }
    json_t *ans = admin_call(req, &rc);
    if (ans && !rc) {
        if (as_json) {
            json_object_del(ans, "ok");
            print_json(ans);
        } else if (status_id) {
            printf("push %s\n", status_id);
            const char *k[] = {"delivered", "pending", "expired", "failed"};
            for (int i = 0; i < 4; i++)
                printf("%s %lld\n", k[i],
                       (long long)json_integer_value(
                           json_object_get(ans, k[i])));
            json_t *f = json_object_get(ans, "failures");
            for (size_t i = 0; i < json_array_size(f); i++)
                printf("failure %s %s\n",
                       json_string_value(
                           json_object_get(json_array_get(f, i), "device")),
                       json_string_value(
                           json_object_get(json_array_get(f, i), "reason")));
        } else {
            printf("%s\n", json_string_value(json_object_get(ans, "id")));
        }
    }
    json_decref(ans);
out:
    if (rc == 2)
        usage();
    json_decref(req);
    return rc;
}

static int cmd_group(int n, char **a)
{
    if (n < 1)
        return usage();
    json_t *req = json_object();
    int rc = 2, as_json = 0;
    const char *sub = a[0];
    if (!strcmp(sub, "list") && n <= 3) {
        json_object_set_new(req, "op", json_string("group-list"));
        for (int i = 1; i < n; i++) {
            if (!strcmp(a[i], "--json"))
                as_json = 1;
            else
                json_object_set_new(req, "group", json_string(a[i]));
        }
    } else if ((!strcmp(sub, "add") && n >= 3) ||
               (!strcmp(sub, "remove") && n >= 2)) {
        json_object_set_new(req, "op",
                            json_string(!strcmp(sub, "add") ? "group-add"
                                                            : "group-remove"));
        json_object_set_new(req, "group", json_string(a[1]));
        if (n > 2) {
            json_t *d = json_array();
            for (int i = 2; i < n; i++)
                json_array_append_new(d, json_string(a[i]));
            json_object_set_new(req, "devices", d);
        }
    } else {
        json_decref(req);
        return usage();
    }
    json_t *ans = admin_call(req, &rc);
    if (ans && !rc) {
        json_t *g = json_object_get(ans, "groups");
        if (as_json) {
            json_object_del(ans, "ok");
            print_json(ans);
        } else if (g) {
            const char *name;
            json_t *members;
            json_object_foreach(g, name, members)
            {
                printf("%s", name);
                for (size_t i = 0; i < json_array_size(members); i++)
                    printf(" %s",
                           json_string_value(json_array_get(members, i)));
                printf("\n");
            }
        } else {
            printf("%s %lld\n",
                   json_string_value(json_object_get(ans, "group")),
                   (long long)json_integer_value(
                       json_object_get(ans, "members")));
        }
    }
    json_decref(ans);
    json_decref(req);
    return rc;
}

/* parleyctl s2s [--json]: the federation links (doc/s2s.md). */
static int cmd_s2s(int n, char **a)
{
    int as_json = n == 1 && strcmp(a[0], "--json") == 0;
    if (n > 1 || (n == 1 && !as_json))
        return usage();
    int rc = 0;
    json_t *req = json_pack("{s:s}", "op", "s2s");
    json_t *ans = admin_call(req, &rc);
    if (ans && !rc) {
        json_t *links = json_object_get(ans, "links");
        if (as_json) {
            print_json(links);
        } else {
            size_t i;
            json_t *l;
            printf("%-4s %-24s %-24s %-12s %-9s %6s %s\n", "dir", "local",
                   "remote", "state", "auth", "queued", "last error");
            json_array_foreach(links, i, l)
            {
                const char *err = json_string_value(
                    json_object_get(l, "error"));
                printf("%-4s %-24s %-24s %-12s %-9s %6lld %s\n",
                       json_string_value(json_object_get(l, "direction")),
                       json_string_value(json_object_get(l, "local")),
                       json_string_value(json_object_get(l, "remote")),
                       json_string_value(json_object_get(l, "state")),
                       json_string_value(json_object_get(l, "auth")),
                       (long long)json_integer_value(
                           json_object_get(l, "queued")),
                       err ? err : "");
            }
        }
    }
    json_decref(ans);
    json_decref(req);
    return rc;
}

/* "12 ms" from a JSON integer of microseconds or milliseconds, "-" when
 * null. */
static const char *ms_text(json_t *v, int micro, char *buf, size_t len)
{
    if (!json_is_integer(v))
        return "-";
    double ms = (double)json_integer_value(v) / (micro ? 1000.0 : 1.0);
    snprintf(buf, len, "%.*f ms", ms < 10 ? 2 : 0, ms);
    return buf;
}

/* parleyctl cluster [--json]: the nodes as this one sees them
 * (doc/cluster.md). */
/* parleyctl cluster drain|quiesce NODE, cluster restart: asks the node
 * (this one, or another through Redis) to stop accepting and, for drain,
 * to end its sessions, paced, then stop; restart asks this process's
 * supervisor for a rolling restart. */
static int cmd_cluster_act(int n, char **a)
{
    int restart = strcmp(a[0], "restart") == 0;
    if ((restart && n != 1) || (!restart && n != 2))
        return usage();
    int rc = 0;
    json_t *req = restart
                      ? json_pack("{s:s, s:b}", "op", "cluster", "restart", 1)
                      : json_pack("{s:s, s:s}", "op", "cluster", a[0], a[1]);
    json_t *ans = admin_call(req, &rc);
    if (ans && !rc) {
        if (restart)
            puts("rolling restart requested (the supervisor logs each "
                 "step)");
        else if (json_object_get(ans, "phase"))
            printf("node %s: %s\n", a[1],
                   json_string_value(json_object_get(ans, "phase")));
        else
            printf("node %s: %s requested (it acts at its next Redis "
                   "poll)\n",
                   a[1], a[0]);
    }
    json_decref(ans);
    json_decref(req);
    return rc;
}

static int cmd_cluster(int n, char **a)
{
    if (n >= 1 && (strcmp(a[0], "drain") == 0 || strcmp(a[0], "quiesce") == 0 ||
                   strcmp(a[0], "restart") == 0))
        return cmd_cluster_act(n, a);
    int as_json = n == 1 && strcmp(a[0], "--json") == 0;
    if (n > 1 || (n == 1 && !as_json))
        return usage();
    int rc = 0;
    json_t *req = json_pack("{s:s}", "op", "cluster");
    json_t *ans = admin_call(req, &rc);
    if (ans && !rc && as_json) {
        json_object_del(ans, "ok");
        print_json(ans);
    } else if (ans && !rc && !json_is_true(json_object_get(ans, "enabled"))) {
        puts("cluster: off (one process; cluster.enable, doc/cluster.md)");
    } else if (ans && !rc) {
        printf("node %s (epoch %s, %s), links on %s, redis %s (%s), %lld "
               "local sessions, %lld MUC rooms hosted\n",
               json_string_value(json_object_get(ans, "node")),
               json_string_value(json_object_get(ans, "epoch")),
               json_string_value(json_object_get(ans, "phase")),
               json_string_value(json_object_get(ans, "link")),
               json_string_value(json_object_get(ans, "redis")),
               json_is_true(json_object_get(ans, "redis_connected"))
                   ? "connected"
                   : "disconnected",
               (long long)json_integer_value(json_object_get(ans, "sessions")),
               (long long)json_integer_value(json_object_get(ans, "rooms")));
        printf("%-16s %-5s %-22s %-16s %8s %-9s %14s %14s %8s %10s %10s\n",
               "node", "state", "link address", "epoch", "sessions", "link",
               "sent B/st", "received B/st", "unacked", "oldest", "ack rtt");
        size_t i;
        json_t *o;
        json_array_foreach(json_object_get(ans, "nodes"), i, o)
        {
            const char *addr = json_string_value(json_object_get(o, "address"));
            const char *epoch = json_string_value(json_object_get(o, "epoch"));
            const char *state = json_string_value(json_object_get(o, "state"));
            const char *ph = json_string_value(json_object_get(o, "phase"));
            /* An alive node not serving normally says how: starting,
             * quiesced, draining (ready ones stay "alive"). */
            if (ph && ph[0] && strcmp(ph, "ready") != 0 &&
                strcmp(state, "alive") == 0)
                state = ph;
            json_t *l = json_object_get(o, "link");
            if (!l) {
                printf("%-16s %-5s %-22s %-16s %8s %-9s (dead for %lld s)\n",
                       json_string_value(json_object_get(o, "name")), state,
                       addr ? addr : "-", epoch ? epoch : "-", "-", "-",
                       (long long)json_integer_value(
                           json_object_get(o, "dead_ms")) /
                           1000);
                continue;
            }
            char sent[48], got[48], old[32], rtt[32];
            snprintf(sent, sizeof(sent), "%lld/%lld",
                     (long long)json_integer_value(
                         json_object_get(l, "bytes_sent")),
                     (long long)json_integer_value(
                         json_object_get(l, "stanzas_sent")));
            snprintf(got, sizeof(got), "%lld/%lld",
                     (long long)json_integer_value(
                         json_object_get(l, "bytes_received")),
                     (long long)json_integer_value(
                         json_object_get(l, "stanzas_received")));
            const char *up = json_is_true(json_object_get(l, "connected"))
                                 ? "connected"
                             : json_is_true(json_object_get(l, "out")) ||
                                     json_is_true(json_object_get(l, "in"))
                                 ? "half"
                                 : "down";
            printf("%-16s %-5s %-22s %-16s %8lld %-9s %14s %14s %8lld %10s "
                   "%10s\n",
                   json_string_value(json_object_get(o, "name")), state,
                   addr ? addr : "-", epoch ? epoch : "-",
                   (long long)json_integer_value(
                       json_object_get(o, "sessions")),
                   up, sent, got,
                   (long long)json_integer_value(json_object_get(l, "unacked")),
                   ms_text(json_object_get(l, "oldest_unacked_ms"), 0, old,
                           sizeof(old)),
                   ms_text(json_object_get(l, "ack_rtt_us"), 1, rtt,
                           sizeof(rtt)));
        }
    }
    json_decref(ans);
    json_decref(req);
    return rc;
}

/* parleyctl stats [--json]: the server's counters (src/core/stats.h),
 * one "name value" line each. */
static int cmd_stats(int n, char **a)
{
    int as_json = n == 1 && strcmp(a[0], "--json") == 0;
    if (n > 1 || (n == 1 && !as_json))
        return usage();
    int rc = 0;
    json_t *req = json_pack("{s:s}", "op", "stats");
    json_t *ans = admin_call(req, &rc);
    if (ans && !rc) {
        json_t *counters = json_object_get(ans, "counters");
        /* The allocator's figures print as two more lines. */
        json_t *mem = json_object_get(ans, "memory");
        if (json_is_object(counters) && json_is_object(mem))
            json_object_update(counters, mem);
        if (as_json) {
            print_json(counters);
        } else {
            const char *k;
            json_t *v;
            json_object_foreach(counters, k, v)
                printf("%s %lld\n", k, (long long)json_integer_value(v));
        }
    }
    json_decref(ans);
    json_decref(req);
    return rc;
}

/* parleyctl token create [--read-only] NAME | token list | token revoke
 * NAME: the HTTP admin API's bearer tokens (src/http/token.h). */
static void print_token(const char *name, int scope, long long created,
                        void *ud)
{
    (void)ud;
    char when[32] = "?";
    time_t t = (time_t)created;
    struct tm tm;
    if (gmtime_r(&t, &tm))
        strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
    printf("%s %s %s\n", name, pl_token_scope_name(scope), when);
}

static int cmd_token(int n, char **a)
{
    char path[4200];
    if (pl_token_path(config->s.data_dir, path, sizeof(path)) != PL_OK) {
        fputs("parleyctl: data_dir is too long\n", stderr);
        return 1;
    }
    int rc;
    if (n >= 2 && n <= 3 && strcmp(a[0], "create") == 0) {
        int scope = PL_TOKEN_ADMIN;
        const char *name = a[1];
        if (n == 3) {
            if (strcmp(a[1], "--read-only") != 0)
                return usage();
            scope = PL_TOKEN_READ;
            name = a[2];
        }
        char tok[PL_TOKEN_LEN + 1];
        rc = pl_token_create(path, name, scope, tok);
        if (rc == PL_OK) {
            puts(tok);
            OPENSSL_cleanse(tok, sizeof(tok));
            return 0;
        }
        if (rc == PL_EINVAL)
            fprintf(stderr,
                    "parleyctl: bad token name '%s' (1 to %d of "
                    "A-Z a-z 0-9 . _ -)\n",
                    name, PL_TOKEN_NAME_MAX);
        else if (rc == PL_ECONFLICT)
            fprintf(stderr, "parleyctl: a token named %s exists\n", name);
        else
            fprintf(stderr, "parleyctl: cannot write %s: %s\n", path,
                    strerror(errno));
        return 1;
    }
    if (n == 1 && strcmp(a[0], "list") == 0) {
        if (pl_token_list(path, print_token, NULL) != PL_OK) {
            fprintf(stderr, "parleyctl: cannot read %s\n", path);
            return 1;
        }
        return 0;
    }
    if (n == 2 && strcmp(a[0], "revoke") == 0) {
        rc = pl_token_revoke(path, a[1]);
        if (rc == PL_ENOT_FOUND)
            fprintf(stderr, "parleyctl: no token named %s\n", a[1]);
        else if (rc != PL_OK)
            fprintf(stderr, "parleyctl: cannot write %s\n", path);
        return rc == PL_OK ? 0 : 1;
    }
    return usage();
}

/* parleyctl sessions [--json] [HOST]: who is online (mod_admin). */
static int cmd_sessions(int n, char **a)
{
    int as_json = 0;
    json_t *req = json_pack("{s:s}", "op", "sessions");
    for (int i = 0; i < n; i++) {
        if (strcmp(a[i], "--json") == 0)
            as_json = 1;
        else if (a[i][0] != '-' && !json_object_get(req, "host"))
            json_object_set_new(req, "host", json_string(a[i]));
        else {
            json_decref(req);
            return usage();
        }
    }
    int rc = 0;
    json_t *ans = admin_call(req, &rc);
    json_t *list = json_object_get(ans, "sessions");
    if (ans && !rc && as_json) {
        print_json(list);
    } else if (ans && !rc) {
        size_t i;
        json_t *s;
        json_array_foreach(list, i, s)
            printf("%s %s %s%s\n", json_string_value(json_object_get(s, "jid")),
                   json_string_value(json_object_get(s, "transport")),
                   json_string_value(json_object_get(s, "ip")),
                   json_is_true(json_object_get(s, "secure")) ? " secure" : "");
    }
    json_decref(ans);
    json_decref(req);
    return rc;
}

/* parleyctl kick JID [TEXT]: ends a session (full JID) or all of an
 * account's (bare JID). */
static int cmd_kick(int n, char **a)
{
    if (n < 1 || n > 2)
        return usage();
    json_t *req = json_pack("{s:s, s:s}", "op", "kick", "jid", a[0]);
    struct pl_jid *j = NULL;
    if (pl_jid_parse(pl_str_c(a[0]), &j) == PL_OK)
        json_object_set_new(req, "host", json_string(j->domain));
    pl_jid_free(j);
    if (n == 2)
        json_object_set_new(req, "text", json_string(a[1]));
    int rc = 0;
    json_t *ans = admin_call(req, &rc);
    if (ans && !rc)
        printf("%lld\n",
               (long long)json_integer_value(json_object_get(ans, "kicked")));
    json_decref(ans);
    json_decref(req);
    return rc;
}

/* parleyctl announce [--subject S] HOST TEXT: a message to every user of
 * HOST online. */
static int cmd_announce(int n, char **a)
{
    const char *subject = NULL;
    if (n >= 2 && strcmp(a[0], "--subject") == 0) {
        subject = a[1];
        a += 2;
        n -= 2;
    }
    if (n != 2)
        return usage();
    json_t *req = json_pack("{s:s, s:s, s:s}", "op", "announce", "host", a[0],
                            "body", a[1]);
    if (subject)
        json_object_set_new(req, "subject", json_string(subject));
    int rc = 0;
    json_t *ans = admin_call(req, &rc);
    if (ans && !rc)
        printf("%lld\n", (long long)json_integer_value(
                             json_object_get(ans, "delivered")));
    json_decref(ans);
    json_decref(req);
    return rc;
}

/* parleyctl components [--json]: external components (XEP-0114). */
static int cmd_components(int n, char **a)
{
    int as_json = n == 1 && strcmp(a[0], "--json") == 0;
    if (n > 1 || (n == 1 && !as_json))
        return usage();
    int rc = 0;
    json_t *req = json_pack("{s:s}", "op", "components");
    json_t *ans = admin_call(req, &rc);
    if (ans && !rc) {
        json_t *v = json_object_get(ans, "components");
        if (as_json) {
            print_json(v);
        } else {
            size_t i;
            json_t *c;
            printf("%-28s %-20s %-13s %-6s %-22s %8s %10s %10s\n", "domain",
                   "host", "state", "links", "peer", "seconds", "stanzas in",
                   "out");
            json_array_foreach(v, i, c)
            {
                int up = json_is_true(json_object_get(c, "connected"));
                char peer[64] = "";
                if (up)
                    snprintf(peer, sizeof(peer), "%s:%lld",
                             json_string_value(json_object_get(c, "peer")),
                             (long long)json_integer_value(
                                 json_object_get(c, "port")));
                char nl[32];
                snprintf(nl, sizeof(nl), "%lld/%lld",
                         (long long)json_integer_value(
                             json_object_get(c, "links")),
                         (long long)json_integer_value(
                             json_object_get(c, "max_links")));
                printf("%-28s %-20s %-13s %-6s %-22s %8lld %10lld %10lld\n",
                       json_string_value(json_object_get(c, "domain")),
                       json_string_value(json_object_get(c, "host")),
                       up ? "connected" : "disconnected", nl, peer,
                       (long long)json_integer_value(
                           json_object_get(c, "seconds")),
                       (long long)json_integer_value(
                           json_object_get(c, "stanzas_in")),
                       (long long)json_integer_value(
                           json_object_get(c, "stanzas_out")));
            }
        }
    }
    json_decref(ans);
    json_decref(req);
    return rc;
}

/* parleyctl sip [--json] | sip ping [--json] ADDRESS:PORT (doc/sip.md). */
static int cmd_sip(int n, char **a)
{
    int ping = n >= 1 && strcmp(a[0], "ping") == 0;
    if (ping) {
        n--;
        a++;
    }
    int as_json = n >= 1 && strcmp(a[0], "--json") == 0;
    if (as_json) {
        n--;
        a++;
    }
    if (ping ? n != 1 : n != 0)
        return usage();
    int rc = 0;
    json_t *req = ping ? json_pack("{s:s, s:s}", "op", "sip-ping", "target",
                                   a[0])
                       : json_pack("{s:s}", "op", "sip");
    json_t *ans = admin_call(req, &rc);
    if (ans && !rc && ping) {
        int answered = json_is_true(json_object_get(ans, "answered"));
        if (as_json)
            print_json(ans);
        else
            printf("%lld %s (%lld retransmissions, %lld ms)\n",
                   (long long)json_integer_value(json_object_get(ans, "code")),
                   json_string_value(json_object_get(ans, "reason")),
                   (long long)json_integer_value(
                       json_object_get(ans, "retransmissions")),
                   (long long)json_integer_value(json_object_get(ans, "ms")));
        rc = answered ? 0 : 1;
    } else if (ans && !rc) {
        if (as_json) {
            print_json(ans);
        } else {
            size_t i;
            json_t *l;
            printf("%-9s %-24s %6s %s\n", "transport", "address", "port",
                   "traffic");
            json_array_foreach(json_object_get(ans, "listeners"), i, l)
            {
                int udp = json_object_get(l, "datagrams") != NULL;
                printf("%-9s %-24s %6lld %lld %s\n",
                       json_string_value(json_object_get(l, "transport")),
                       json_string_value(json_object_get(l, "address")),
                       (long long)json_integer_value(
                           json_object_get(l, "port")),
                       (long long)json_integer_value(
                           json_object_get(l, udp ? "datagrams" : "accepted")),
                       udp ? "datagrams" : "connections accepted");
            }
            json_t *c = json_object_get(ans, "connections");
            json_t *t = json_object_get(ans, "transactions");
            printf("connections: tcp %lld, tls %lld\n",
                   (long long)json_integer_value(json_object_get(c, "tcp")),
                   (long long)json_integer_value(json_object_get(c, "tls")));
            printf("transactions: server %lld, client %lld\n",
                   (long long)json_integer_value(json_object_get(t, "server")),
                   (long long)json_integer_value(json_object_get(t, "client")));
            json_t *regs = json_object_get(ans, "registrations");
            printf("registrations: %zu\n", json_array_size(regs));
            if (json_array_size(regs))
                printf("%-32s %-9s %8s %-12s %s\n", "aor", "transport",
                       "expires", "resource", "contact");
            json_array_foreach(regs, i, l)
            {
                printf("%-32s %-9s %7llds %-12s %s\n",
                       json_string_value(json_object_get(l, "aor")),
                       json_string_value(json_object_get(l, "transport")),
                       (long long)json_integer_value(
                           json_object_get(l, "expires_in")),
                       json_string_value(json_object_get(l, "resource")),
                       json_string_value(json_object_get(l, "contact")));
            }
        }
    }
    json_decref(ans);
    json_decref(req);
    return rc;
}

/* An integer member of o. */
static long long jint(json_t *o, const char *k)
{
    return (long long)json_integer_value(json_object_get(o, k));
}

static const char *jstr(json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "";
}

/* parleyctl media [--json] status FILE | list: an uploaded file's sources,
 * what the server sent of it, its failure reports (mod_media,
 * doc/media.md); FILE is its id, SHA-256 (hex or base64) or URL. */
static int cmd_media(int n, char **a)
{
    int as_json = n > 0 && strcmp(a[0], "--json") == 0;
    if (as_json)
        a++, n--;
    json_t *req;
    if (n == 2 && strcmp(a[0], "status") == 0)
        req = json_pack("{s:s, s:s}", "op", "media", "file", a[1]);
    else if (n == 1 && strcmp(a[0], "list") == 0)
        req = json_pack("{s:s}", "op", "media");
    else
        return usage();
    int rc = 0;
    json_t *ans = admin_call(req, &rc);
    json_t *f = json_object_get(ans, "file");
    if (ans && !rc && as_json) {
        print_json(f ? f : json_object_get(ans, "files"));
    } else if (ans && !rc && f) {
        size_t i;
        json_t *x;
        printf("file %s (%s), %lld bytes\n", jstr(f, "name"), jstr(f, "id"),
               jint(f, "size"));
        printf("sha-256 %s, %lld pieces of %lld bytes\n", jstr(f, "sha256"),
               jint(f, "pieces"), jint(f, "piece_size"));
        printf("server %s: %lld bytes sent in %lld GETs, %lld Metalinks, "
               "%lld queries\n",
               jstr(f, "url"), jint(f, "server_bytes"), jint(f, "server_gets"),
               jint(f, "metalinks"), jint(f, "queries"));
        printf("holders: %lld (%lld fetched reports: %lld bytes from the "
               "server, %lld from peers, %.1f%% from peers)\n",
               jint(f, "holders"), jint(f, "fetched"),
               jint(f, "client_server_bytes"), jint(f, "client_peer_bytes"),
               json_real_value(json_object_get(f, "peer_percent")));
        json_t *peers = json_object_get(f, "peers");
        printf("peers: %zu\n", json_array_size(peers));
        json_array_foreach(peers, i, x)
            printf("  %s %s max %lld%s\n", jstr(x, "jid"), jstr(x, "url"),
                   jint(x, "max_concurrent"),
                   jint(x, "failures") ? " demoted" : "");
        json_t *bans = json_object_get(f, "bans");
        printf("banned: %zu\n", json_array_size(bans));
        json_array_foreach(bans, i, x)
            printf("  %s %s until %lld\n", jstr(x, "jid"), jstr(x, "url"),
                   jint(x, "until"));
        json_t *reps = json_object_get(f, "reports");
        printf("failure reports: %lld\n", jint(f, "reports_total"));
        json_array_foreach(reps, i, x)
            printf("  %lld %s piece %lld from %s: %s\n", jint(x, "at"),
                   jstr(x, "reporter"), jint(x, "piece"), jstr(x, "source"),
                   jstr(x, "result"));
    } else if (ans && !rc) {
        size_t i;
        json_t *x;
        json_array_foreach(json_object_get(ans, "files"), i, x)
            printf("%s %s %lld bytes, %zu peers, %lld sent, %lld reports, "
                   "%lld holders, %.1f%% from peers\n",
                   jstr(x, "id"), jstr(x, "name"), jint(x, "size"),
                   json_array_size(json_object_get(x, "peers")),
                   jint(x, "server_bytes"), jint(x, "reports_total"),
                   jint(x, "holders"),
                   json_real_value(json_object_get(x, "peer_percent")));
    }
    json_decref(ans);
    json_decref(req);
    return rc;
}

/* parleyctl socks5 [--json]: the SOCKS5 Bytestreams proxy (doc/socks5.md). */
static int cmd_socks5(int n, char **a)
{
    int as_json = n == 1 && strcmp(a[0], "--json") == 0;
    if (n > 1 || (n == 1 && !as_json))
        return usage();
    int rc = 0;
    json_t *req = json_pack("{s:s}", "op", "socks5");
    json_t *ans = admin_call(req, &rc);
    if (ans && !rc && as_json) {
        print_json(ans);
    } else if (ans && !rc) {
        size_t i;
        json_t *l;
        json_array_foreach(json_object_get(ans, "listeners"), i, l)
        {
            printf("listener %s:%lld, %lld accepted, %lld refused\n",
                   json_string_value(json_object_get(l, "address")),
                   (long long)json_integer_value(json_object_get(l, "port")),
                   (long long)json_integer_value(
                       json_object_get(l, "accepted")),
                   (long long)json_integer_value(
                       json_object_get(l, "refused")));
        }
        printf("connections: %lld\n", (long long)json_integer_value(
                                          json_object_get(ans, "connections")));
        json_t *p = json_object_get(ans, "pending");
        printf("waiting for activation: %zu\n", json_array_size(p));
        json_array_foreach(p, i, l)
        {
            printf("  %s  %lld of 2 connected, %lld ms\n",
                   json_string_value(json_object_get(l, "hash")),
                   (long long)json_integer_value(
                       json_object_get(l, "connected")),
                   (long long)json_integer_value(json_object_get(l, "ms")));
        }
        json_t *v = json_object_get(ans, "active");
        printf("active: %zu\n", json_array_size(v));
        json_array_foreach(v, i, l)
        {
            printf("  %s  %s  %lld bytes, %lld ms%s\n",
                   json_string_value(json_object_get(l, "hash")),
                   json_string_value(json_object_get(l, "requester")),
                   (long long)json_integer_value(json_object_get(l, "bytes")),
                   (long long)json_integer_value(json_object_get(l, "ms")),
                   json_is_true(json_object_get(l, "throttled")) ? ", throttled"
                                                                 : "");
        }
    }
    json_decref(ans);
    json_decref(req);
    return rc;
}

/* ---- parley-gateway: its SQLite queue, read-only (history.c says why
 * the file and not an admin socket) ---- */

static void print_depth(void *ud, const char *dest, const char *state,
                        long count, int64_t oldest)
{
    json_t *arr = ud;
    if (arr) {
        json_array_append_new(arr, json_pack("{s:s, s:s, s:I, s:I}", "dest",
                                             dest, "state", state, "count",
                                             (json_int_t)count, "oldest_ms",
                                             (json_int_t)oldest));
        return;
    }
    printf("%-8s %-10s %8ld  oldest %llds ago\n", dest, state, count,
           (long long)((pl_gw_now() - oldest) / 1000));
}

static void print_trace(void *ud, int64_t at, const char *state,
                        const char *instance, const char *detail)
{
    json_t *arr = ud;
    if (arr) {
        json_array_append_new(arr, json_pack("{s:I, s:s, s:s, s:s}", "at_ms",
                                             (json_int_t)at, "state", state,
                                             "instance", instance, "detail",
                                             detail));
        return;
    }
    time_t t = (time_t)(at / 1000);
    struct tm tm;
    char when[32];
    gmtime_r(&t, &tm);
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
    printf("%s.%03dZ %-10s %-8s %s\n", when, (int)(at % 1000), state, instance,
           detail);
}

static int cmd_gateway(int n, char **a)
{
    const char *queue = "/var/lib/parley-gateway/queue.db";
    int json = 0, i = 0;
    for (; i < n; i++) {
        if (strcmp(a[i], "--queue") == 0 && i + 1 < n)
            queue = a[++i];
        else if (strcmp(a[i], "--json") == 0)
            json = 1;
        else
            break;
    }
    int is_queue = i + 1 == n && strcmp(a[i], "queue") == 0;
    int is_trace = i + 2 == n && strcmp(a[i], "trace") == 0;
    if (!is_queue && !is_trace)
        return usage();
    struct pl_gwq *q = NULL;
    if (pl_gwq_open(queue, 1, &q) != PL_OK) {
        fprintf(stderr, "parleyctl: cannot open the gateway queue %s\n", queue);
        return 1;
    }
    json_t *arr = json ? json_array() : NULL;
    int rc = is_queue ? pl_gwq_depth(q, print_depth, arr)
                      : pl_gwq_trace(q, a[i + 1], print_trace, arr);
    if (rc == PL_ENOT_FOUND)
        fprintf(stderr, "parleyctl: no message %s\n", a[i + 1]);
    else if (rc != PL_OK)
        fprintf(stderr, "parleyctl: %s: %s\n", queue, pl_gwq_error(q));
    if (arr && rc == PL_OK)
        print_json(arr);
    json_decref(arr);
    pl_gwq_close(q);
    return rc == PL_OK ? 0 : 1;
}

/* ---- migrate: one storage driver's data into another's ---- */

struct migration {
    const struct pl_storage_driver *to; /* destination driver */
    void *db;                           /* its handle */
    long n;                             /* rows copied in this batch */
    long accounts, docs, items;         /* copied (or counted) */
    int rc;                             /* first failure */
};

/* Commits every 500 rows: a batch as parleyd's own. */
static int mig_step(struct migration *m, int rc)
{
    if (rc != PL_OK) {
        m->rc = rc;
        return 1;
    }
    if (++m->n % 500 == 0) {
        if (commit(m->to, m->db) != PL_OK) {
            m->rc = PL_ESTORAGE;
            return 1;
        }
        m->to->begin(m->db);
    }
    return 0;
}

static int mig_account(const char *host, const char *user,
                       const struct pl_account *a, void *ud)
{
    struct migration *m = ud;
    m->accounts++;
    return mig_step(m, m->to->account_create(m->db, host, user, a));
}

static int mig_doc(const char *host, const char *user, const char *store,
                   const char *key, const void *data, size_t len, void *ud)
{
    struct migration *m = ud;
    m->docs++;
    return mig_step(m, m->to->kv_set(m->db, host, user, store, key,
                                     data ? data : "", len));
}

static int mig_item(const char *host, const char *owner, int kind,
                    const struct pl_archive_item *it, void *ud)
{
    struct migration *m = ud;
    long long key;
    m->items++;
    return mig_step(m, m->to->archive_append(m->db, host, owner, kind, it, 0,
                                             &key));
}

static int count_account(const char *host, const char *user,
                         const struct pl_account *a, void *ud)
{
    ((struct migration *)ud)->accounts++;
    return 0;
}

static int count_doc(const char *host, const char *user, const char *store,
                     const char *key, const void *data, size_t len, void *ud)
{
    ((struct migration *)ud)->docs++;
    return 0;
}

static int count_item(const char *host, const char *owner, int kind,
                      const struct pl_archive_item *it, void *ud)
{
    ((struct migration *)ud)->items++;
    return 0;
}

/* Counts what a store holds; PL_OK or the walk's error. */
static int mig_count(const struct pl_storage_driver *d, void *h,
                     struct migration *c)
{
    int rc = d->account_all(h, count_account, c);
    if (rc == PL_OK)
        rc = d->kv_all(h, count_doc, c);
    if (rc == PL_OK)
        rc = d->archive_all(h, count_item, c);
    return rc;
}

/*
 * parleyctl migrate --from DRIVER --to DRIVER: copies every account (with
 * its SCRAM and digest keys), every per-user document (rosters, offline
 * messages, vCards, PEP, rooms, fleet state...) and every archive, in
 * archive order, from one driver's store to another's, as the
 * configuration (and --set) describes both; the destination must be
 * empty.  Then counts both and says whether they match.
 */
static int cmd_migrate(int n, char **a)
{
    const char *from = NULL, *to = NULL;
    for (int i = 0; i + 1 < n; i += 2) {
        if (strcmp(a[i], "--from") == 0)
            from = a[i + 1];
        else if (strcmp(a[i], "--to") == 0)
            to = a[i + 1];
    }
    if (!from || !to || n != 4)
        return usage();
    const struct pl_storage_driver *src = pl_storage_driver_find(from);
    const struct pl_storage_driver *dst = pl_storage_driver_find(to);
    if (!src || !dst || src == dst || !src->account_all || !dst->account_all) {
        fprintf(stderr,
                "parleyctl: cannot migrate from '%s' to '%s' "
                "(two different drivers: sqlite, postgresql)\n",
                from, to);
        return 2;
    }
    void *sdb = NULL, *ddb = NULL;
    int rc = 1;
    struct migration m = {.to = dst}, before = {0}, after = {0}, have = {0};
    if (src->open(&config->s, &sdb) != PL_OK) {
        fprintf(stderr, "parleyctl: cannot open the %s store\n", from);
        goto out;
    }
    if (dst->open(&config->s, &ddb) != PL_OK) {
        fprintf(stderr, "parleyctl: cannot open the %s store\n", to);
        goto out;
    }
    m.db = ddb;
    if (mig_count(dst, ddb, &have) != PL_OK) {
        fprintf(stderr, "parleyctl: cannot read the %s store\n", to);
        goto out;
    }
    if (have.accounts || have.docs || have.items) {
        fprintf(stderr,
                "parleyctl: the %s store is not empty (%ld accounts, %ld "
                "documents, %ld archived messages); nothing copied\n",
                to, have.accounts, have.docs, have.items);
        goto out;
    }
    dst->begin(ddb);
    int r = src->account_all(sdb, mig_account, &m);
    if (r == PL_OK && m.rc == PL_OK)
        r = src->kv_all(sdb, mig_doc, &m);
    if (r == PL_OK && m.rc == PL_OK)
        r = src->archive_all(sdb, mig_item, &m);
    if (r == PL_OK && m.rc == PL_OK)
        r = commit(dst, ddb);
    else
        dst->rollback(ddb);
    if (r != PL_OK || m.rc != PL_OK) {
        fprintf(stderr,
                "parleyctl: migration failed (%s) after %ld "
                "accounts, %ld documents, %ld archived messages\n",
                pl_strerror(r != PL_OK ? r : m.rc), m.accounts, m.docs,
                m.items);
        goto out;
    }
    /* Verify: both stores counted again (parleyd should not be writing
     * to the source meanwhile; if it is, the counts say so). */
    if (mig_count(src, sdb, &before) != PL_OK ||
        mig_count(dst, ddb, &after) != PL_OK) {
        fprintf(stderr, "parleyctl: cannot count the stores\n");
        goto out;
    }
    printf("copied %ld accounts, %ld documents, %ld archived messages from "
           "%s to %s\n",
           m.accounts, m.docs, m.items, from, to);
    if (before.accounts != after.accounts || before.docs != after.docs ||
        before.items != after.items) {
        fprintf(stderr,
                "parleyctl: counts differ: %s has %ld/%ld/%ld, %s has "
                "%ld/%ld/%ld (accounts/documents/messages)\n",
                from, before.accounts, before.docs, before.items, to,
                after.accounts, after.docs, after.items);
        goto out;
    }
    printf("verified: %s and %s both hold %ld accounts, %ld documents, %ld "
           "archived messages\n",
           from, to, after.accounts, after.docs, after.items);
    rc = 0;
out:
    if (sdb)
        src->close(sdb);
    if (ddb)
        dst->close(ddb);
    return rc;
}

int main(int argc, char **argv)
{
    const char *path = NULL;
    char **sets = pl_calloc((size_t)argc, sizeof(char *));
    int nsets = 0, i = 1, rc;
    for (; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0) {
            usage_to(stdout);
            rc = 0;
            goto out;
        } else if (strcmp(argv[i], "--version") == 0) {
            puts("parleyctl " PL_VERSION);
            rc = 0;
            goto out;
        } else if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
            path = argv[++i];
        } else if (strcmp(argv[i], "--set") == 0 && i + 1 < argc) {
            sets[nsets++] = argv[++i];
        } else if (strcmp(argv[i], "--socket") == 0 && i + 1 < argc) {
            socket_path = argv[++i];
        } else {
            break;
        }
    }
    if (i >= argc) {
        rc = usage();
        goto out;
    }
    pl_log_set_level(PL_LOG_WARN);
    char err[512];
    if (pl_config_load(path, sets, nsets, &config, err, sizeof(err)) != PL_OK) {
        fprintf(stderr, "parleyctl: %s\n", err);
        rc = 1;
        goto out;
    }
    const char *cmd = argv[i];
    int n = argc - i - 1;
    char **a = argv + i + 1;
    if (strcmp(cmd, "adduser") == 0 && (n == 1 || n == 2))
        rc = set_password(a[0], n == 2 ? a[1] : NULL, 1);
    else if (strcmp(cmd, "passwd") == 0 && (n == 1 || n == 2))
        rc = set_password(a[0], n == 2 ? a[1] : NULL, 0);
    else if (strcmp(cmd, "deluser") == 0 && n == 1)
        rc = deluser(a[0]);
    else if (strcmp(cmd, "list") == 0 && n <= 1)
        rc = list(n ? a[0] : NULL);
    else if (strcmp(cmd, "archive-fill") == 0 && n == 3)
        rc = archive_fill(a[0], a[1], a[2]);
    else if (strcmp(cmd, "check") == 0 && n == 0)
        rc = check();
    else if (strcmp(cmd, "push") == 0)
        rc = cmd_push(n, a);
    else if (strcmp(cmd, "group") == 0)
        rc = cmd_group(n, a);
    else if (strcmp(cmd, "s2s") == 0)
        rc = cmd_s2s(n, a);
    else if (strcmp(cmd, "cluster") == 0)
        rc = cmd_cluster(n, a);
    else if (strcmp(cmd, "components") == 0)
        rc = cmd_components(n, a);
    else if (strcmp(cmd, "stats") == 0)
        rc = cmd_stats(n, a);
    else if (strcmp(cmd, "sip") == 0)
        rc = cmd_sip(n, a);
    else if (strcmp(cmd, "socks5") == 0)
        rc = cmd_socks5(n, a);
    else if (strcmp(cmd, "media") == 0)
        rc = cmd_media(n, a);
    else if (strcmp(cmd, "token") == 0)
        rc = cmd_token(n, a);
    else if (strcmp(cmd, "sessions") == 0)
        rc = cmd_sessions(n, a);
    else if (strcmp(cmd, "kick") == 0)
        rc = cmd_kick(n, a);
    else if (strcmp(cmd, "announce") == 0)
        rc = cmd_announce(n, a);
    else if (strcmp(cmd, "gateway") == 0)
        rc = cmd_gateway(n, a);
    else if (strcmp(cmd, "migrate") == 0)
        rc = cmd_migrate(n, a);
    else
        rc = usage();
    if (db)
        drv->close(db);
    pl_config_free(config);
out:
    pl_free(sets);
    return rc;
}
