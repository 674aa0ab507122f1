/*
 * identity.c - a device's identity: its MAC address as the JID localpart,
 * and the state file that keeps the generated secret.
 *
 * The localpart is the address in lower-case hex without separators: a
 * colon may not appear unescaped in a localpart (RFC 7622 §3.3.1 allows
 * it, but XEP-0106 and most servers treat it as reserved), and lower case
 * is what nodeprep yields anyway, so the JID is stable.
 *
 * The state file is JSON {"jid": ..., "secret": ..., "registered": bool},
 * written to a temporary file with mode 0600, synced, then renamed over
 * the old one, so a power cut leaves either the old or the new file.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "clients/agent/agent.h"

int pl_agent_mac_localpart(const char *mac, char out[13])
{
    int n = 0;
    for (const char *p = mac; *p; p++) {
        if (*p == ':' || *p == '-' || *p == '.')
            continue;
        if (!isxdigit((unsigned char)*p) || n >= 12)
            return -1;
        out[n++] = (char)tolower((unsigned char)*p);
    }
    if (n != 12)
        return -1;
    out[12] = '\0';
    return 0;
}

int pl_agent_read_mac(const char *iface, char *out, size_t len)
{
    if (strchr(iface, '/') || !*iface)
        return -1;
    char path[256];
    snprintf(path, sizeof(path), "/sys/class/net/%s/address", iface);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    int ok = fgets(out, (int)len, f) != NULL;
    fclose(f);
    if (!ok)
        return -1;
    out[strcspn(out, "\r\n")] = '\0';
    return 0;
}

int pl_agent_state_load(const char *path, struct pl_agent_state *st)
{
    memset(st, 0, sizeof(*st));
    struct stat sb;
    if (stat(path, &sb) != 0)
        return errno == ENOENT ? 0 : -1;
    if ((sb.st_mode & 077) && chmod(path, 0600) != 0) {
        fprintf(stderr, "parley-agent: cannot restrict %s to 0600\n", path);
        return -1;
    }
    json_error_t e;
    json_t *doc = json_load_file(path, 0, &e);
    if (!doc) {
        fprintf(stderr, "parley-agent: %s: %s (line %d)\n", path, e.text,
                e.line);
        return -1;
    }
    const char *jid = json_string_value(json_object_get(doc, "jid"));
    const char *secret = json_string_value(json_object_get(doc, "secret"));
    if (!jid || !secret || !*secret) {
        fprintf(stderr, "parley-agent: %s lacks jid or secret\n", path);
        json_decref(doc);
        return -1;
    }
    st->jid = strdup(jid);
    st->secret = strdup(secret);
    st->registered = json_is_true(json_object_get(doc, "registered"));
    json_decref(doc);
    return 1;
}

int pl_agent_state_save(const char *path, const struct pl_agent_state *st)
{
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    json_t *doc = json_pack("{s:s, s:s, s:b}", "jid", st->jid, "secret",
                            st->secret, "registered", st->registered);
    char *text = doc ? json_dumps(doc, JSON_INDENT(1)) : NULL;
    json_decref(doc);
    if (!text)
        return -1;
    unlink(tmp);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    int rc = -1;
    if (fd < 0)
        goto out;
    size_t n = strlen(text);
    if (write(fd, text, n) == (ssize_t)n && write(fd, "\n", 1) == 1 &&
        fsync(fd) == 0)
        rc = 0;
    close(fd);
    if (rc == 0 && rename(tmp, path) != 0)
        rc = -1;
    if (rc != 0)
        unlink(tmp);
out:
    if (rc != 0)
        fprintf(stderr, "parley-agent: cannot write %s: %s\n", path,
                strerror(errno));
    free(text);
    return rc;
}

void pl_agent_state_free(struct pl_agent_state *st)
{
    free(st->jid);
    free(st->secret);
    memset(st, 0, sizeof(*st));
}

int pl_agent_secret_new(char out[65])
{
    unsigned char b[32];
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, b, sizeof(b));
    close(fd);
    if (n != (ssize_t)sizeof(b))
        return -1;
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", b[i]);
    return 0;
}
