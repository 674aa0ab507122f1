/*
 * mod_extdisco.c - XEP-0215 External Service Discovery (urn:xmpp:extdisco:2)
 * for STUN and TURN servers, with time-limited TURN credentials.
 *
 * Services are configured as RFC 7064/7065 URIs:
 *     "stun:stun.example.org", "turn:turn.example.org:3478?transport=udp",
 *     "turns:turn.example.org:5349?transport=tcp", "turn:[2001:db8::1]"
 * (ports default to 3478, 5349 for turns; transport to udp, tcp for
 * turns).  With a `secret` shared with the TURN server (coturn's
 * use-auth-secret / static-auth-secret, the "TURN REST API"), turn and
 * turns services are restricted and credentials are made per request:
 *     username = "<expiry, Unix time>:<requester's bare JID>"
 *     password = base64(HMAC-SHA1(secret, username))
 * with expires = now + ttl in XEP-0082 form.  They are put in the
 * services list too (inline_credentials) since most clients never send
 * the §4.3 <credentials/> request.
 *
 * Only clients of this host are answered; others get <forbidden/>
 * (XEP-0215 §3).
 */
#include <time.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "core/modapi.h"

#define NS_EXTDISCO "urn:xmpp:extdisco:2"

struct service {
    char type[8]; /* stun, turn, turns */
    char *host;   /* name or address, without brackets */
    long port;
    char transport[4]; /* udp, tcp */
};

struct state {
    struct pl_strlist uris; /* configured services */
    char *secret;           /* TURN REST API shared secret, "" for none */
    long ttl;               /* credential lifetime, seconds */
    int inline_credentials; /* credentials in the services list */
    struct service *v;      /* parsed uris */
    int n;
};

/* RFC 7064 §3.1 / RFC 7065 §3.1 URI; PL_EINVAL if it is not one. */
static int parse_uri(const char *uri, struct service *out)
{
    const char *p = strchr(uri, ':');
    if (!p || p - uri > 5)
        return PL_EINVAL;
    size_t tl = (size_t)(p - uri);
    memcpy(out->type, uri, tl);
    out->type[tl] = 0;
    int secure = strcmp(out->type, "turns") == 0;
    if (strcmp(out->type, "stun") && strcmp(out->type, "turn") && !secure)
        return PL_EINVAL;
    p++;
    const char *hs = p, *he;
    if (*p == '[') {
        hs = p + 1;
        he = strchr(hs, ']');
        if (!he)
            return PL_EINVAL;
        p = he + 1;
    } else {
        he = p + strcspn(p, ":?");
        p = he;
    }
    if (he == hs)
        return PL_EINVAL;
    out->port = secure ? 5349 : 3478;
    if (*p == ':') {
        char *end;
        out->port = strtol(p + 1, &end, 10);
        if (end == p + 1 || out->port < 1 || out->port > 65535)
            return PL_EINVAL;
        p = end;
    }
    strcpy(out->transport, secure ? "tcp" : "udp");
    if (*p == '?') {
        if (strcmp(p, "?transport=udp") == 0 && !secure)
            strcpy(out->transport, "udp");
        else if (strcmp(p, "?transport=tcp") == 0)
            strcpy(out->transport, "tcp");
        else
            return PL_EINVAL;
    } else if (*p) {
        return PL_EINVAL;
    }
    out->host = pl_malloc((size_t)(he - hs) + 1);
    memcpy(out->host, hs, (size_t)(he - hs));
    out->host[he - hs] = 0;
    return PL_OK;
}

static int restricted(const struct state *s, const struct service *sv)
{
    return s->secret && s->secret[0] && strcmp(sv->type, "stun") != 0;
}

/* Adds <service/> for sv; with credentials when asked and restricted. */
static void add_service(struct pl_stanza *r, struct pl_node *parent,
                        const struct state *s, const struct service *sv,
                        const char *user, int creds)
{
    struct pl_node *n = pl_node_add_child(r, parent, "service", NS_EXTDISCO);
    char port[8];
    snprintf(port, sizeof(port), "%ld", sv->port);
    pl_node_set_attr(r, n, "type", sv->type);
    pl_node_set_attr(r, n, "host", sv->host);
    pl_node_set_attr(r, n, "port", port);
    pl_node_set_attr(r, n, "transport", sv->transport);
    if (!restricted(s, sv))
        return;
    pl_node_set_attr(r, n, "restricted", "true");
    if (!creds)
        return;
    time_t exp = time(NULL) + (time_t)s->ttl;
    char username[1100], expires[32];
    snprintf(username, sizeof(username), "%lld:%s", (long long)exp, user);
    struct tm tm;
    gmtime_r(&exp, &tm);
    strftime(expires, sizeof(expires), "%Y-%m-%dT%H:%M:%SZ", &tm);
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    HMAC(EVP_sha1(), s->secret, (int)strlen(s->secret),
         (const unsigned char *)username, strlen(username), mac, &maclen);
    struct pl_buf pw = {0};
    pl_base64_encode(mac, maclen, &pw);
    pl_node_set_attr(r, n, "username", username);
    pl_node_set_attr(r, n, "password", pl_buf_cstr(&pw));
    pl_node_set_attr(r, n, "expires", expires);
    pl_buf_reset(&pw);
}

/* Only this host's own clients learn about its relays. */
static int local_client(struct pl_event *ev)
{
    return ev->session && ev->from && ev->from->local &&
           strcmp(ev->from->domain, ev->host->domain) == 0;
}

static int on_services(struct pl_event *ev, void *state)
{
    const struct state *s = state;
    if (!local_client(ev))
        return PL_EFORBIDDEN;
    const char *type = pl_node_attr(pl_stanza_payload(ev->stanza), "type");
    struct pl_stanza *r = pl_iq_result(ev->stanza);
    struct pl_node *q = pl_node_add_child(r, pl_stanza_root(r), "services",
                                          NS_EXTDISCO);
    if (type)
        pl_node_set_attr(r, q, "type", type);
    for (int i = 0; i < s->n; i++)
        if (!type || strcmp(type, s->v[i].type) == 0)
            add_service(r, q, s, &s->v[i], ev->from->bare,
                        s->inline_credentials);
    pl_route_reply(ev->stanza, r);
    pl_stanza_unref(r);
    return PL_HANDLED;
}

/* §3.3: credentials for the services matching host, type (and port). */
static int on_credentials(struct pl_event *ev, void *state)
{
    const struct state *s = state;
    if (!local_client(ev))
        return PL_EFORBIDDEN;
    struct pl_node *want = pl_node_child(pl_stanza_payload(ev->stanza),
                                         "service", NS_EXTDISCO);
    const char *host = want ? pl_node_attr(want, "host") : NULL;
    const char *type = want ? pl_node_attr(want, "type") : NULL;
    const char *port = want ? pl_node_attr(want, "port") : NULL;
    if (!host || !type)
        return PL_EBAD_REQUEST;
    struct pl_stanza *r = pl_iq_result(ev->stanza);
    struct pl_node *q = pl_node_add_child(r, pl_stanza_root(r), "credentials",
                                          NS_EXTDISCO);
    int n = 0;
    for (int i = 0; i < s->n; i++) {
        const struct service *sv = &s->v[i];
        if (strcmp(sv->host, host) || strcmp(sv->type, type) ||
            (port && strtol(port, NULL, 10) != sv->port) || !restricted(s, sv))
            continue;
        add_service(r, q, s, sv, ev->from->bare, 1);
        n++;
    }
    if (!n) {
        pl_stanza_unref(r);
        return PL_EITEM_NOT_FOUND;
    }
    pl_route_reply(ev->stanza, r);
    pl_stanza_unref(r);
    return PL_HANDLED;
}

static int load(struct pl_host *h, void *state)
{
    struct state *s = state;
    s->v = pl_calloc((size_t)s->uris.n + 1, sizeof(*s->v));
    for (int i = 0; i < s->uris.n; i++) {
        if (parse_uri(s->uris.v[i], &s->v[s->n]) != PL_OK) {
            pl_log_error("mod_extdisco",
                         "%s: extdisco.services: '%s' is not a stun:, turn: "
                         "or turns: URI (RFC 7064, RFC 7065)",
                         h->domain, s->uris.v[i]);
            return PL_EINVAL;
        }
        s->n++;
    }
    return PL_OK;
}

static void unload(struct pl_host *h, void *state)
{
    struct state *s = state;
    for (int i = 0; i < s->n; i++)
        pl_free(s->v[i].host);
    pl_free(s->v);
    s->v = NULL;
    s->n = 0;
}

static const struct pl_option options[] = {
    {"services", PL_OPT_STRLIST, "[]", 0, 0, NULL,
     "STUN/TURN servers as URIs: \"stun:host[:port]\", "
     "\"turn:host[:port][?transport=udp|tcp]\", \"turns:host[:port]\".",
     offsetof(struct state, uris)},
    {"secret", PL_OPT_STRING, "\"\"", 0, 0, NULL,
     "Secret shared with the TURN server (coturn static-auth-secret); "
     "empty: TURN services are listed without credentials.",
     offsetof(struct state, secret)},
    {"ttl", PL_OPT_INT, "86400", 60, 2592000, NULL,
     "Seconds TURN credentials stay valid.", offsetof(struct state, ttl)},
    {"inline_credentials", PL_OPT_BOOL, "true", 0, 0, NULL,
     "Put TURN credentials in the services list as well as answering "
     "<credentials/> requests.",
     offsetof(struct state, inline_credentials)},
    {0},
};

static const struct pl_hook_def hooks[] = {
    {"iq-get/host/" NS_EXTDISCO ":services", on_services, 0},
    {"iq-get/host/" NS_EXTDISCO ":credentials", on_credentials, 0},
    {0},
};

static const char *const features[] = {NS_EXTDISCO, NULL};

const struct pl_module pl_mod_extdisco = {
    .abi = PL_MODULE_ABI,
    .name = "extdisco",
    .summary = "announces STUN/TURN servers with time-limited credentials",
    .xeps = "XEP-0215",
    .features = features,
    .options = options,
    .hooks = hooks,
    .state_size = sizeof(struct state),
    .load = load,
    .unload = unload,
};
