/*
 * s2s_in.c - incoming server-to-server streams (RFC 6120): accepted by
 * the s2s listeners (on_accept in s2s.c), then
 *   header -> features -> [STARTTLS -> restart] ->
 *   SASL EXTERNAL (XEP-0178) -> restart, or dialback db:result pairs
 * and the routing of what they carry: every stanza must come from a domain
 * authenticated on its stream (else <invalid-from/>) to a domain served
 * here (else <host-unknown/>), and is then routed as any stanza from a
 * remote JID.  Dialback (<db:result/>, <db:verify/>) is in dialback.c.
 *
 * XEP-0288: a peer that sends <bidi/> may receive our stanzas on the same
 * stream (pl__s2s_in_send_bidi), for the domain pairs it authenticated.
 *
 * API in s2s_int.h: the stream's callbacks for on_accept
 * (pl__s2s_in_conn_ops, pl__s2s_in_xml_cb),
 * pl__s2s_in_error, pl__s2s_in_by_id, pl__s2s_in_pair,
 * pl__s2s_in_cert_valid_for, pl__s2s_in_send_bidi.
 *
 * Extending: a new stream feature is offered in in_features and handled
 * in in_stanza; fields of struct in are in s2s_int.h.
 */
#include "s2s_int.h"

#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "conn.h"
#include "error.h"
#include "framing.h"
#include "host.h"
#include "log.h"
#include "router.h"
#include "scram.h"
#include "server.h"
#include "stats.h"
#include "xml.h"

struct in *pl__s2s_ins; /* every incoming stream */

struct in *pl__s2s_in_by_id(uint64_t id)
{
    for (struct in *i = pl__s2s_ins; i; i = i->next)
        if (i->id == id)
            return i;
    return NULL;
}

static void in_send_header(struct in *i)
{
    struct pl_buf b = {0};
    pl_stream_id(i->sid, sizeof(i->sid));
    pl_stream_header(&b, PL_NS_SERVER,
                     i->host ? i->host->domain : pl_host_at(0)->domain,
                     i->from_hdr, i->sid, PL_STREAM_V1 | PL_STREAM_DIALBACK);
    pl__s2s_write_buf(i->conn, &b);
    i->header_sent = 1;
}

/* Ends the stream with an RFC 6120 §4.9.3 condition. */
void pl__s2s_in_error(struct in *i, const char *cond, const char *text)
{
    if (i->closing || !i->conn)
        return;
    if (!i->header_sent)
        in_send_header(i);
    struct pl_buf b = {0};
    pl_stream_error_xml(&b, cond, text);
    pl__s2s_write_buf(i->conn, &b);
    pl__s2s_whyf(i->why, sizeof(i->why), "stream error <%s/>%s%s sent", cond,
                 text ? ": " : "", text ? text : "");
    i->closing = 1;
    pl_stat_inc(stream_errors);
    pl_conn_close(i->conn);
}

int pl__s2s_in_cert_valid_for(struct in *i, const char *domain, char *why,
                              size_t n)
{
    if (!i->secure || !i->conn || !i->conn->ssl) {
        snprintf(why, n, "no TLS");
        return 0;
    }
    return pl__s2s_verify_peer(i->conn->ssl, domain, why, n) == PL_OK;
}

static void in_features(struct in *i)
{
    struct pl_buf b = {0};
    pl_buf_append_str(&b, "<stream:features>");
    if (!i->remote) {
        if (!i->secure && i->host && i->host->tls &&
            i->tls_mode != PL_TLS_NONE) {
            pl_buf_append_str(&b, "<starttls xmlns='" NS_TLS "'>");
            if (pl__s2s_conf()->require_tls)
                pl_buf_append_str(&b, "<required/>");
            pl_buf_append_str(&b, "</starttls>");
        }
        if (i->secure || !pl__s2s_conf()->require_tls) {
            if (i->secure && i->from_hdr && pl__s2s_allowed("external")) {
                char why[256];
                i->cert_ok = pl__s2s_in_cert_valid_for(i, i->from_hdr, why,
                                                       sizeof(why));
                i->cert_checked = 1;
                if (i->cert_ok)
                    pl_buf_append_str(&b, "<mechanisms xmlns='" NS_SASL "'>"
                                          "<mechanism>EXTERNAL</mechanism>"
                                          "</mechanisms>");
                else
                    pl_log_info("s2s",
                                "incoming link from %s (%s): no SASL "
                                "EXTERNAL: %s",
                                i->from_hdr, i->conn->ip, why);
            }
            if (pl__s2s_allowed("dialback"))
                pl_buf_append_str(&b, "<dialback xmlns='" NS_DB_FEATURE "'>"
                                      "<errors/></dialback>");
            if (pl__s2s_conf()->bidi)
                pl_buf_append_str(&b, "<bidi xmlns='" NS_BIDI_FEATURE "'/>");
        }
    }
    pl_buf_append_str(&b, "</stream:features>");
    pl__s2s_write_buf(i->conn, &b);
}

static void in_stream_open(void *ud, struct pl_stanza *hdr)
{
    struct in *i = ud;
    struct pl_node *root = pl_stanza_root(hdr);
    if (strcmp(root->ns, PL_NS_STREAMS) != 0 ||
        strcmp(root->name, "stream") != 0) {
        pl__s2s_in_error(i,
                         strcmp(root->ns, PL_NS_STREAMS) ? "invalid-namespace"
                                                         : "bad-format",
                         NULL);
        return;
    }
    const char *content = pl_node_attr(root, "xmlns");
    if (!content || strcmp(content, PL_NS_SERVER) != 0) {
        pl__s2s_in_error(i, "invalid-namespace", NULL);
        return;
    }
    const char *to = pl_node_attr(root, "to");
    const char *from = pl_node_attr(root, "from");
    struct pl_host *h = NULL;
    char *dom = NULL;
    if (to && pl_jid_prep_domain(pl_str_c(to), &dom) == PL_OK)
        h = pl_host_find(dom);
    pl_free(dom);
    if (!h) {
        pl__s2s_in_error(i, "host-unknown", NULL);
        return;
    }
    i->host = h;
    pl_free(i->from_hdr);
    i->from_hdr = NULL;
    if (from && pl_jid_prep_domain(pl_str_c(from), &i->from_hdr) != PL_OK) {
        pl__s2s_in_error(i, "invalid-from", NULL);
        return;
    }
    in_send_header(i);
    const char *ver = pl_node_attr(root, "version");
    if (!ver || strtol(ver, NULL, 10) < 1) {
        pl__s2s_in_error(i, "unsupported-version", NULL);
        return;
    }
    in_features(i);
}

static void in_restart(struct in *i)
{
    pl_xml_parser_stop(i->xml);
    pl_xml_parser_reset(i->xml);
    i->header_sent = 0;
}

static void in_sasl(struct in *i, struct pl_stanza *st)
{
    struct pl_node *root = pl_stanza_root(st);
    const char *mech = pl_node_attr(root, "mechanism");
    const char *cond = NULL;
    if (strcmp(root->name, "auth") != 0) {
        cond = "aborted";
    } else if (i->remote || !mech || strcmp(mech, "EXTERNAL") != 0 ||
               !pl__s2s_allowed("external") || !i->from_hdr) {
        cond = "invalid-mechanism";
    } else {
        size_t len = 0;
        const char *t = pl_node_text(st, root, &len);
        struct pl_buf az = {0};
        if (t && len && !(len == 1 && t[0] == '=') &&
            pl_base64_decode((struct pl_str){t, len}, &az) != PL_OK) {
            cond = "incorrect-encoding";
        } else if (az.len &&
                   (az.len != strlen(i->from_hdr) ||
                    memcmp(az.data + az.off, i->from_hdr, az.len) != 0)) {
            cond = "invalid-authzid"; /* XEP-0178 §2 step 8 */
        } else if (!i->cert_checked || !i->cert_ok) {
            cond = "not-authorized";
        }
        pl_buf_reset(&az);
    }
    if (cond) {
        struct pl_buf b = {0};
        pl_buf_printf(&b, "<failure xmlns='" NS_SASL "'><%s/></failure>", cond);
        pl__s2s_write_buf(i->conn, &b);
        pl_log_info("s2s",
                    "incoming link from %s (%s): SASL EXTERNAL "
                    "refused (%s)",
                    i->from_hdr ? i->from_hdr : "?", i->conn->ip, cond);
        return;
    }
    pl__s2s_write_str(i->conn, "<success xmlns='" NS_SASL "'/>");
    i->remote = pl_strdup(i->from_hdr);
    i->auth = A_EXTERNAL;
    pl_conn_established(i->conn);
    pl_log_info("s2s",
                "incoming link from %s (%s) authenticated with SASL "
                "EXTERNAL%s",
                i->remote, i->conn->ip, i->bidi ? " (bidirectional)" : "");
    in_restart(i);
}

struct pair *pl__s2s_in_pair(struct in *i, const char *from, const char *to)
{
    for (struct pair *p = i->pairs; p; p = p->next)
        if (strcmp(p->from, from) == 0 && strcmp(p->to, to) == 0)
            return p;
    return NULL;
}

/* A stanza on an authenticated stream (RFC 6120 §8.1.1.2, §8.1.2.2). */
static void in_route(struct in *i, struct pl_stanza *st)
{
    const char *f = pl_stanza_attr(st, "from");
    const char *t = pl_stanza_attr(st, "to");
    struct pl_jid *from = NULL, *to = NULL;
    if (!f || !t) {
        pl__s2s_in_error(i, "improper-addressing", NULL);
        return;
    }
    if (pl_jid_parse(pl_str_c(f), &from) != PL_OK) {
        pl__s2s_in_error(i, "invalid-from", NULL);
        goto out;
    }
    if (pl_jid_parse(pl_str_c(t), &to) != PL_OK) {
        /* The sender is known: a stanza error, not a stream error. */
        pl_route_error(st, PL_EJID_MALFORMED, NULL);
        goto out;
    }
    if (!pl_host_find(to->domain)) {
        pl__s2s_in_error(i, "host-unknown", NULL);
        goto out;
    }
    struct pair *p = pl__s2s_in_pair(i, from->domain, to->domain);
    int ok = (i->remote && strcmp(i->remote, from->domain) == 0) ||
             (p && p->valid);
    if (!ok) {
        pl__s2s_in_error(i, "invalid-from", NULL);
        goto out;
    }
    if (strcmp(f, from->full) != 0)
        pl_stanza_set_attr(st, "from", from->full);
    if (strcmp(t, to->full) != 0)
        pl_stanza_set_attr(st, "to", to->full);
    i->received++;
    pl_stat_inc(stanzas_in);
    pl_route(st, from, to, NULL);
out:
    pl_jid_free(from);
    pl_jid_free(to);
}

static void in_stanza(void *ud, struct pl_stanza *st)
{
    struct in *i = ud;
    struct pl_node *root = pl_stanza_root(st);
    if (i->closing)
        goto out;
    if (strcmp(root->ns, NS_TLS) == 0 && strcmp(root->name, "starttls") == 0) {
        if (i->secure || i->remote || !i->host || !i->host->tls ||
            i->tls_mode == PL_TLS_NONE) {
            pl__s2s_write_str(i->conn, "<failure xmlns='" NS_TLS "'/>"
                                       "</stream:stream>");
            i->closing = 1;
            pl_conn_close(i->conn);
            goto out;
        }
        pl__s2s_write_str(i->conn, "<proceed xmlns='" NS_TLS "'/>");
        in_restart(i);
        pl_conn_starttls(i->conn, i->host->tls->ctx);
        goto out;
    }
    if (strcmp(root->ns, NS_SASL) == 0) {
        if (!i->secure)
            pl__s2s_in_error(i, "policy-violation", "SASL EXTERNAL needs TLS");
        else
            in_sasl(i, st);
        goto out;
    }
    if (strcmp(root->ns, NS_BIDI) == 0 && strcmp(root->name, "bidi") == 0) {
        if (!pl__s2s_conf()->bidi ||
            (pl__s2s_conf()->require_tls && !i->secure))
            pl__s2s_in_error(i, "unsupported-stanza-type", NULL);
        else
            i->bidi = 1; /* XEP-0288 §2.2: no answer */
        goto out;
    }
    if (strcmp(root->ns, NS_DB) == 0 && strcmp(root->name, "result") == 0) {
        pl__s2s_in_db_result(i, st);
        goto out;
    }
    if (strcmp(root->ns, NS_DB) == 0 && strcmp(root->name, "verify") == 0) {
        pl__s2s_in_db_verify(i, st);
        goto out;
    }
    if (!pl_stream_is_stanza(root, PL_NS_SERVER)) {
        pl__s2s_in_error(i,
                         strcmp(root->ns, PL_NS_CLIENT) == 0 ||
                                 strcmp(root->ns, "") == 0
                             ? "invalid-namespace"
                             : "unsupported-stanza-type",
                         NULL);
        goto out;
    }
    if (!i->remote && !i->pairs) {
        pl__s2s_in_error(i, "not-authorized", NULL);
        goto out;
    }
    in_route(i, st);
out:
    pl_stanza_unref(st);
}

static void in_stream_close(void *ud)
{
    struct in *i = ud;
    if (i->closing || !i->conn)
        return;
    pl__s2s_write_str(i->conn, "</stream:stream>");
    i->closing = 1;
    pl_conn_close(i->conn);
}

static void in_xml_error(void *ud, enum pl_xml_error err, const char *text)
{
    struct in *i = ud;
    pl__s2s_in_error(i, pl_xml_error_condition(err), NULL);
}

const struct pl_xml_callbacks pl__s2s_in_xml_cb = {
    in_stream_open,
    in_stanza,
    in_stream_close,
    in_xml_error,
};

static void in_data(struct pl_conn *conn, const char *p, size_t n)
{
    struct in *i = conn->data;
    pl_stat_add(bytes_in, n);
    if (!i->closing)
        pl_xml_parser_feed(i->xml, p, n);
}

static void in_tls_up(struct pl_conn *conn)
{
    struct in *i = conn->data;
    i->secure = 1;
}

static void in_closed(struct pl_conn *conn)
{
    struct in *i = conn->data;
    i->conn = NULL;
    pl__s2s_nconns--;
    if (i->prev)
        i->prev->next = i->next;
    else
        pl__s2s_ins = i->next;
    if (i->next)
        i->next->prev = i->prev;
    if (!i->remote && !i->pairs)
        pl_log_info("s2s",
                    "incoming connection from %s:%d (%s) closed "
                    "before authentication%s%s%s%s",
                    conn->ip, conn->port,
                    i->from_hdr ? i->from_hdr : "domain unknown",
                    conn->error ? ": TLS: " : "",
                    conn->error ? conn->error : "", i->why[0] ? ": " : "",
                    i->why);
    else
        pl_log_info("s2s", "incoming link from %s closed (%lu stanzas)",
                    i->remote ? i->remote : i->pairs->from, i->received);
    pl_xml_parser_free(i->xml);
    while (i->pairs) {
        struct pair *p = i->pairs;
        i->pairs = p->next;
        pl_free(p->from);
        pl_free(p->to);
        pl_free(p);
    }
    pl_free(i->from_hdr);
    pl_free(i->remote);
    pl_free(i);
}

/*
 * conn.h: the core's deadlines.  Handshake: limits.handshake_timeout
 * until the stream is authenticated (pl_conn_established: EXTERNAL, or a
 * dialback pair verified), except while a dialback verification is in
 * flight (asked again a second later).  Idle: s2s.idle_timeout without a
 * byte either way (s2s.c sets it) ends the stream quietly: the next
 * stanza opens a new one.
 */
static void in_timeout(struct pl_conn *conn, int which)
{
    struct in *i = conn->data;
    if (which == PL_CONN_TIMEOUT_IDLE)
        in_stream_close(i);
    else if (!i->pairs)
        pl__s2s_in_error(i, "connection-timeout", "handshake took too long");
}

const struct pl_conn_ops pl__s2s_in_conn_ops = {
    .data = in_data,
    .tls_up = in_tls_up,
    .closed = in_closed,
    .timeout = in_timeout,
};

/* Writes st on an incoming bidirectional stream authenticated for
 * remote -> local, if there is one (XEP-0288 §2.2: EXTERNAL authenticates
 * the stream's 'to' domain, dialback each verified pair). */
int pl__s2s_in_send_bidi(const char *local, const char *remote,
                         struct pl_stanza *st)
{
    for (struct in *i = pl__s2s_ins; i; i = i->next) {
        if (!i->bidi || !i->conn || i->closing || !i->host)
            continue;
        struct pair *p = pl__s2s_in_pair(i, remote, local);
        int ok = (i->remote && strcmp(i->remote, remote) == 0 &&
                  strcmp(i->host->domain, local) == 0) ||
                 (p && p->valid);
        if (!ok)
            continue;
        struct pl_str x = pl_stanza_serialize(st, PL_NS_SERVER);
        pl_conn_write(i->conn, x.p, x.len);
        i->sent++;
        pl_stat_inc(stanzas_out);
        return 1;
    }
    return 0;
}
