/*
 * publish.c - PUBLISH (RFC 3903) of the presence event package (RFC 3856):
 * a SIP user's own state, in PIDF (pidf.h), becomes the XMPP presence of
 * its registration's session, so that XMPP friends (and later SIP
 * watchers) see online, away, busy and status text.  API: sip_int.h
 * ("Presence publication").
 *
 * Who publishes: the Request-URI is the presentity, a user of one of our
 * hosts (404 otherwise); the From must be the same user (403).  The
 * authentication is MESSAGE's (im.c): a request over a TCP/TLS connection
 * holding a registration of that user is trusted, anything else is
 * challenged with 407 and the authenticated user must be the presentity's
 * (403).  Event must be "presence" (489 with Allow-Events otherwise).
 *
 * Event state compositor, RFC 3903 §6: each publication has an entity tag
 * (SIP-ETag), new after every successful PUBLISH; a PUBLISH with a body
 * and no SIP-If-Match makes a publication, SIP-If-Match without a body
 * refreshes it, with a body modifies it, with Expires: 0 removes it; an
 * unknown or another user's tag gets 412.  Expiry: the Expires header,
 * else DEFAULT_EXPIRES (RFC 3856 §6.4 suggests an hour), cut to
 * sip.max_expires; above 0 and below sip.min_expires: 423 with
 * Min-Expires.  At most sip.max_contacts publications per presentity (403
 * past it).  Publications live in memory only.
 *
 * Whose presence: the registration (binding) of the presentity over the
 * flow the PUBLISH came in on (the TCP/TLS connection, or the UDP source
 * address) if there is one, else every binding of the presentity; a
 * publication from a UA with no registration is kept (and answered 200)
 * but changes no session.  The state is routed as that session's
 * presence (pl__sip_binding_publish: open is available with <show/>,
 * <status/>, <priority/>; closed is unavailable, RFC 8048 §5.2.1).  When
 * a publication is removed or expires, the binding goes back to the
 * presence its registration gives (available): the state it published is
 * gone (RFC 3903 §6).  Logout as phones do it: a PUBLISH of closed state
 * (friends see unavailable), then REGISTER Expires: 0 (the session ends).
 *
 * Extending: other event packages are rows of the Event check; SUBSCRIBE
 * watchers of a presentity read its state from the sessions, not from
 * here.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "alloc.h"
#include "error.h"
#include "host.h"
#include "log.h"
#include "map.h"
#include "map_addr.h"
#include "pidf.h"
#include "resources.h"
#include "server.h"
#include "sip_int.h"
#include "stats.h"

#define DEFAULT_EXPIRES 3600 /* RFC 3856 §6.4 */

/* One publication: a presentity's state from one PUBLISH chain. */
struct pub {
    char etag[17];         /* its current entity tag (the map's key) */
    char *bare;            /* the presentity, user@host */
    uint64_t sid;          /* the binding it drives, 0: all of bare's */
    struct pl_pidf state;  /* the published state */
    uint64_t expires_at;   /* loop time (ms) */
    struct pl_timer timer; /* expiry */
};

static struct pl_map pubs;   /* etag -> struct pub */
static struct pl_map counts; /* bare -> publications (uintptr_t) */
static int stopping;         /* shutdown began */

static uint64_t now_ms(void)
{
    return pl_loop_now(pl_server_loop());
}

static uintptr_t count_of(const char *bare)
{
    return (uintptr_t)pl_map_get(&counts, bare);
}

static void count_add(const char *bare, int d)
{
    uintptr_t n = count_of(bare) + (uintptr_t)(intptr_t)d;
    if (n)
        pl_map_put(&counts, bare, (void *)n);
    else
        pl_map_del(&counts, bare);
}

/* Gives p's state (NULL: the registration's own) to the sessions it
 * drives. */
static void apply(struct pub *p, const struct pl_pidf *state)
{
    if (p->sid) {
        struct pl_session *s = pl_session_by_id(p->sid);
        if (s && pl__sip_is_binding(s))
            pl__sip_binding_publish(s, state);
        return;
    }
    /* Every binding: collect first, routing may change the list. */
    uint64_t ids[64];
    size_t n = 0;
    for (struct pl_session *s = pl_session_first(p->bare); s && n < 64;
         s = s->next_res)
        if (pl__sip_is_binding(s))
            ids[n++] = s->id;
    for (size_t i = 0; i < n; i++) {
        struct pl_session *s = pl_session_by_id(ids[i]);
        if (s)
            pl__sip_binding_publish(s, state);
    }
}

static void pub_free(struct pub *p)
{
    pl_timer_stop(&p->timer);
    pl_map_del(&pubs, p->etag);
    count_add(p->bare, -1);
    pl_pidf_clear(&p->state);
    pl_free(p->bare);
    pl_free(p);
}

/* Removes p; revert: its sessions go back to their own presence. */
static void pub_remove(struct pub *p, int revert, const char *why)
{
    pl_log_debug("sip", "publication %s of %s removed: %s", p->etag, p->bare,
                 why);
    if (revert)
        apply(p, NULL);
    pub_free(p);
}

static void on_expire(struct pl_timer *t)
{
    pub_remove(t->data, 1, "expired");
}

/* A fresh entity tag for p (RFC 3903 §6 step 7: one per success). */
static void retag(struct pub *p)
{
    if (p->etag[0])
        pl_map_del(&pubs, p->etag);
    do
        pl__sip_random(p->etag, sizeof(p->etag));
    while (pl_map_get(&pubs, p->etag));
    pl_map_put(&pubs, p->etag, p);
}

static void set_expiry(struct pub *p, long seconds)
{
    p->expires_at = now_ms() + (uint64_t)seconds * 1000;
    pl_timer_start(pl_server_loop(), &p->timer, (uint64_t)seconds * 1000);
}

static void reply_ok(struct sip_txn *t, const char *etag, long expires)
{
    char e[24];
    snprintf(e, sizeof(e), "%ld", expires);
    const char *hdrs[] = {"SIP-ETag", etag, "Expires", e, NULL};
    const char *h0[] = {"Expires", e, NULL};
    pl__sip_reply(t, 200, NULL, etag ? hdrs : h0);
    pl_stat_inc(sip_publications);
}

/* The request is from the presentity bare (authenticated), its binding
 * on this flow s or NULL. */
static void proceed(struct sip_txn *t, const char *bare, struct pl_session *s)
{
    const struct sip_settings *S = pl__sip_settings();
    osip_message_t *req = pl__sip_txn_request(t);
    long expires = pl__sip_expires(t, DEFAULT_EXPIRES);
    if (expires < 0)
        return;
    osip_body_t *body = NULL;
    osip_message_get_body(req, 0, &body);
    int has_body = body && body->body && body->length > 0;
    struct pl_pidf state = {0};
    if (has_body) {
        char *ctype = NULL;
        if (req->content_type)
            osip_content_type_to_str(req->content_type, &ctype);
        int rc = pl_pidf_check_type(pl_str_c(ctype ? ctype : ""));
        osip_free(ctype);
        if (rc != PL_OK) {
            const char *hdrs[] = {"Accept", PL_PIDF_CONTENT_TYPE, NULL};
            pl__sip_reply(t, 415, NULL, hdrs);
            return;
        }
        rc = pl_pidf_parse((struct pl_str){body->body, body->length}, NULL,
                           &state);
        if (rc != PL_OK) {
            pl__sip_reply(t, rc == PL_ELIMIT ? 413 : 400,
                          rc == PL_ELIMIT ? NULL : "Bad PIDF Document", NULL);
            return;
        }
    }
    const char *match = pl__sip_header(req, "SIP-If-Match", 0);
    if (match) {
        struct pub *p = pl_map_get(&pubs, match);
        if (!p || strcmp(p->bare, bare) != 0) {
            pl_pidf_clear(&state);
            pl__sip_reply(t, 412, NULL, NULL);
            return;
        }
        if (expires == 0) {
            pl_pidf_clear(&state);
            pub_remove(p, 1, "Expires: 0");
            reply_ok(t, NULL, 0);
            return;
        }
        retag(p);
        set_expiry(p, expires);
        if (has_body) {
            pl_pidf_clear(&p->state);
            p->state = state;
            apply(p, &p->state);
        }
        reply_ok(t, p->etag, expires);
        return;
    }
    if (!has_body) {
        /* §6 step 4: an initial PUBLISH carries state. */
        pl__sip_reply(t, 400, "Missing Body", NULL);
        return;
    }
    if (expires == 0) {
        /* Made and removed at once: nothing to keep or show. */
        pl_pidf_clear(&state);
        reply_ok(t, NULL, 0);
        return;
    }
    if ((long)count_of(bare) >= S->max_contacts) {
        pl_pidf_clear(&state);
        pl__sip_reply(t, 403, "Too Many Publications", NULL);
        return;
    }
    struct pub *p = pl_calloc(1, sizeof(*p));
    p->bare = pl_strdup(bare);
    p->sid = s ? s->id : 0;
    p->state = state;
    pl_timer_init(&p->timer, on_expire, p);
    retag(p);
    count_add(bare, 1);
    set_expiry(p, expires);
    pl_log_debug("sip", "publication %s of %s", p->etag, bare);
    apply(p, &p->state);
    reply_ok(t, p->etag, expires);
}

static void authed(void *arg, struct sip_txn *t, struct pl_session *s)
{
    struct pl_jid *who = arg;
    if (t)
        proceed(t, who->bare, s);
    pl_jid_free(who);
}

void pl__sip_publish(struct sip_txn *t, osip_message_t *req)
{
    struct pl_host *h;
    struct pl_jid *who;
    if (!pl__sip_presence_request(t, req, stopping, 1, &h, &who))
        return;
    struct pl_jid *sender = NULL;
    int rc = pl__sip_uri_jid(req->from ? req->from->url : NULL, &sender);
    if (rc != PL_OK || strcmp(sender->bare, who->bare) != 0) {
        /* One publishes one's own presence only. */
        pl_jid_free(sender);
        pl_jid_free(who);
        pl__sip_reply(t, 403, "Not The Presentity", NULL);
        return;
    }
    pl_jid_free(sender);
    pl__sip_auth(t, h, who, "Not The Authenticated User",
                 SIP_AUTH_FLOW | SIP_AUTH_PROXY, authed, who);
}

/* ---- the part ---- */

static int start(struct pl_config *c)
{
    (void)c;
    stopping = 0;
    return PL_OK;
}

static void drop_all(void)
{
    size_t n;
    void **v = pl__sip_map_values(&pubs, &n);
    for (size_t i = 0; i < n; i++)
        pub_free(v[i]);
    pl_free(v);
    pl_map_clear(&pubs);
    pl_map_clear(&counts);
}

/* Shutdown: the bindings end with their own unavailable presence. */
static void stop(void)
{
    stopping = 1;
    drop_all();
}

static json_t *admin_row(void *value, uint64_t now)
{
    struct pub *p = value;
    const char *basic = p->state.basic == PL_PIDF_OPEN     ? "open"
                        : p->state.basic == PL_PIDF_CLOSED ? "closed"
                                                           : "none";
    const char *show = pl_show_name(p->state.show);
    return json_pack("{s:s, s:s, s:s, s:s, s:I}", "presentity", p->bare, "etag",
                     p->etag, "basic", basic, "show", show ? show : "",
                     "expires_in", pl__sip_seconds_left(p->expires_at, now));
}

static void admin(json_t *answer)
{
    pl__sip_admin_list(answer, "publications", &pubs, admin_row);
}

const struct sip_part pl__sip_publisher = {
    .name = "publish",
    .start = start,
    .stop = stop,
    .free = drop_all,
    .admin = admin,
    .flow_closed = NULL,
};
