/*
 * dialback.c - Server Dialback (XEP-0220) both ways, on the links of
 * s2s_out.c and the streams of s2s_in.c.
 *
 * Originating side: an outgoing link sends our key as <db:result/>
 * (pl__s2s_out_db_key) and takes the peer's verdict (pl__s2s_out_db).
 * Receiving side: a <db:result/> on an incoming stream
 * (pl__s2s_in_db_result) is checked with <db:verify/> over an outgoing
 * link to the claimed domain (queued on it, pl__s2s_out_send_verifies),
 * or accepted at once when the peer's certificate is valid for that
 * domain (XEP-0344 §2.4); the answer comes back through pl__s2s_out_db to
 * pl__s2s_in_answer_verify.  Authoritative side: a <db:verify/> from a
 * receiving server is answered on any incoming stream
 * (pl__s2s_in_db_verify).
 *
 * Keys follow XEP-0185: HMAC-SHA256 keyed with SHA-256 of the server
 * secret over "receiving originating stream-id", so no state is kept for
 * them.  Errors are stanza errors (XEP-0220 §2.4, <errors/> offered).
 *
 * Extending: a new dialback element is a branch in pl__s2s_out_db or in
 * in_stanza (s2s_in.c); the key derivation is dialback_key alone.
 */
#include "s2s_int.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "conn.h"
#include "error.h"
#include "host.h"
#include "log.h"
#include "server.h"

/* XEP-0185 §3: the dialback key for a stream. */
static void dialback_key(const char *receiving, const char *originating,
                         const char *sid, char *out, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    struct pl_str secret = pl_server_secret();
    unsigned char h[SHA256_DIGEST_LENGTH];
    char hk[2 * SHA256_DIGEST_LENGTH + 1];
    SHA256((const unsigned char *)secret.p, secret.len, h);
    for (int i = 0; i < SHA256_DIGEST_LENGTH; i++) {
        hk[2 * i] = hex[h[i] >> 4];
        hk[2 * i + 1] = hex[h[i] & 15];
    }
    hk[2 * SHA256_DIGEST_LENGTH] = '\0';
    struct pl_buf msg = {0};
    pl_buf_printf(&msg, "%s %s %s", receiving, originating, sid);
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int mlen = 0;
    HMAC(EVP_sha256(), hk, (int)strlen(hk),
         (const unsigned char *)msg.data + msg.off, msg.len, mac, &mlen);
    pl_buf_reset(&msg);
    size_t i;
    for (i = 0; i < mlen && 2 * i + 2 < n; i++) {
        out[2 * i] = hex[mac[i] >> 4];
        out[2 * i + 1] = hex[mac[i] & 15];
    }
    out[2 * i] = '\0';
}

/* A dialback element: <db:NAME from to [id] [type]>[key]</db:NAME>. */
static void db_element(struct pl_conn *c, const char *name, const char *from,
                       const char *to, const char *id, const char *type,
                       const char *key, const char *error)
{
    struct pl_buf b = {0};
    pl_buf_printf(&b, "<db:%s from='", name);
    pl_buf_append_escaped(&b, from, strlen(from), 1);
    pl_buf_append_str(&b, "' to='");
    pl_buf_append_escaped(&b, to, strlen(to), 1);
    pl_buf_append_str(&b, "'");
    if (id) {
        pl_buf_append_str(&b, " id='");
        pl_buf_append_escaped(&b, id, strlen(id), 1);
        pl_buf_append_str(&b, "'");
    }
    if (type)
        pl_buf_printf(&b, " type='%s'", type);
    if (key) {
        pl_buf_append_str(&b, ">");
        pl_buf_append_escaped(&b, key, strlen(key), 0);
        pl_buf_printf(&b, "</db:%s>", name);
    } else if (error) {
        /* XEP-0220 §2.4: errors as stanza errors. */
        pl_buf_printf(&b,
                      "><error type='cancel'><%s xmlns='" PL_NS_STANZAS
                      "'/></error></db:%s>",
                      error, name);
    } else {
        pl_buf_append_str(&b, "/>");
    }
    pl__s2s_write_buf(c, &b);
}

/* Sends the db:verify requests not yet sent (the stream is usable). */
void pl__s2s_out_send_verifies(struct out *o)
{
    for (struct verify *v = o->verifies; v; v = v->next) {
        if (v->sent)
            continue;
        v->sent = 1;
        db_element(o->conn, "verify", o->local, o->remote, v->id, NULL, v->key,
                   NULL);
    }
}

/* XEP-0220 §2.1.1: our key for the link o, as <db:result/>. */
void pl__s2s_out_db_key(struct out *o)
{
    char key[2 * EVP_MAX_MD_SIZE + 1];
    dialback_key(o->remote, o->local, o->sid, key, sizeof(key));
    db_element(o->conn, "result", o->local, o->remote, NULL, NULL, key, NULL);
}

/* <db:result> or <db:verify> on our outgoing link o: the answer to our
 * key, or to a db:verify we sent for an incoming stream. */
void pl__s2s_out_db(struct out *o, struct pl_stanza *st)
{
    struct pl_node *root = pl_stanza_root(st);
    const char *type = pl_node_attr(root, "type");
    if (strcmp(root->name, "result") == 0 && o->state == O_READY) {
        /* XEP-0288 §4: a 'valid' we did not ask for proves nothing; a
         * dialback request from the peer over a bidi link is not taken
         * (it can use a stream of its own). */
        if (!type) {
            const char *f = pl_node_attr(root, "from");
            const char *t = pl_node_attr(root, "to");
            if (f && t)
                db_element(o->conn, "result", t, f, NULL, "error", NULL,
                           "feature-not-implemented");
        }
    } else if (strcmp(root->name, "result") == 0) {
        if (type && strcmp(type, "valid") == 0) {
            pl__s2s_out_ready(o, A_DIALBACK);
        } else {
            struct pl_node *e = pl_node_child(root, "error", NULL);
            struct pl_node *c = e ? pl_node_first_elem(e) : NULL;
            pl__s2s_whyf(o->why, sizeof(o->why),
                         "dialback: %s %s our key for %s%s%s%s", o->remote,
                         type && strcmp(type, "invalid") == 0
                             ? "rejected"
                             : "could not verify",
                         o->local, c ? " (" : "", c ? c->name : "",
                         c ? ")" : "");
            pl__s2s_out_abort(o, 1);
        }
    } else if (strcmp(root->name, "verify") == 0) {
        const char *id = pl_node_attr(root, "id");
        struct verify **pp = &o->verifies, *v;
        while ((v = *pp) && !(v->sent && id && strcmp(v->id, id) == 0))
            pp = &v->next;
        if (v) {
            *pp = v->next;
            pl__s2s_in_answer_verify(v->in_id, o->local, o->remote,
                                     type && strcmp(type, "valid") == 0
                                         ? "valid"
                                         : "invalid");
            pl_free(v->id);
            pl_free(v->key);
            pl_free(v);
        }
    }
}

/* Outcome of a db:verify for incoming stream in_id: type "valid",
 * "invalid", or NULL when the originating server could not be reached. */
void pl__s2s_in_answer_verify(uint64_t in_id, const char *local,
                              const char *remote, const char *type)
{
    struct in *i = pl__s2s_in_by_id(in_id);
    if (!i || !i->conn || i->closing)
        return;
    struct pair *p = pl__s2s_in_pair(i, remote, local);
    if (!p)
        return;
    if (type && strcmp(type, "valid") == 0) {
        p->valid = 1;
        if (!i->auth)
            i->auth = A_DIALBACK;
        pl_conn_established(i->conn);
        pl_log_info("s2s",
                    "incoming link from %s (%s) to %s authenticated "
                    "with dialback%s",
                    remote, i->conn->ip, local,
                    i->bidi ? " (bidirectional)" : "");
        db_element(i->conn, "result", local, remote, NULL, "valid", NULL, NULL);
        return;
    }
    pl_log_warn("s2s", "incoming link from %s (%s) to %s: dialback %s", remote,
                i->conn->ip, local,
                type ? "key rejected by the authoritative server"
                     : "could not reach the authoritative server");
    db_element(i->conn, "result", local, remote, NULL,
               type ? "invalid" : "error", NULL,
               type ? NULL : "remote-server-not-found");
    /* XEP-0220 §2.3.1: the pair stays unauthenticated. */
    for (struct pair **pp = &i->pairs; *pp; pp = &(*pp)->next)
        if (*pp == p) {
            *pp = p->next;
            pl_free(p->from);
            pl_free(p->to);
            pl_free(p);
            break;
        }
}

/* <db:result> from an originating server: verify its key. */
void pl__s2s_in_db_result(struct in *i, struct pl_stanza *st)
{
    struct pl_node *root = pl_stanza_root(st);
    const char *f = pl_node_attr(root, "from"), *t = pl_node_attr(root, "to");
    char *from = NULL, *to = NULL;
    size_t klen = 0;
    const char *key = pl_node_text(st, root, &klen);
    if (!pl__s2s_allowed("dialback")) {
        pl__s2s_in_error(i, "not-authorized", "dialback is not allowed here");
        goto out;
    }
    if (pl__s2s_conf()->require_tls && !i->secure) {
        pl__s2s_in_error(i, "policy-violation", "TLS is required");
        goto out;
    }
    if (!f || pl_jid_prep_domain(pl_str_c(f), &from) != PL_OK ||
        pl_host_find(from)) {
        /* Not a domain, or one of ours: nobody else speaks for it. */
        pl__s2s_in_error(i, "invalid-from", NULL);
        goto out;
    }
    if (!t || pl_jid_prep_domain(pl_str_c(t), &to) != PL_OK ||
        !pl_host_find(to)) {
        db_element(i->conn, "result", t ? t : i->host->domain, from, NULL,
                   "error", NULL, "item-not-found");
        goto out;
    }
    if (!key || !klen) {
        pl__s2s_in_error(i, "bad-format", "dialback key missing");
        goto out;
    }
    struct pair *p = pl__s2s_in_pair(i, from, to);
    if (p && p->valid) {
        db_element(i->conn, "result", to, from, NULL, "valid", NULL, NULL);
        goto out;
    }
    if (!p) {
        p = pl_calloc(1, sizeof(*p));
        p->from = pl_strdup(from);
        p->to = pl_strdup(to);
        p->next = i->pairs;
        i->pairs = p;
    }
    /* The claimed domain's own certificate is as good as its answer
     * (XEP-0344 §2.4); otherwise ask it (XEP-0220 §2.2). */
    char why[256];
    if (pl__s2s_allowed("external") &&
        pl__s2s_in_cert_valid_for(i, from, why, sizeof(why))) {
        pl__s2s_in_answer_verify(i->id, to, from, "valid");
        goto out;
    }
    struct out *o = pl__s2s_out_find(to, from);
    int fresh = !o;
    if (!o)
        o = pl__s2s_out_new(to, from);
    struct verify *v = pl_calloc(1, sizeof(*v));
    v->id = pl_strdup(i->sid);
    v->key = pl_strndup(key, klen);
    v->in_id = i->id;
    v->next = o->verifies;
    o->verifies = v;
    if (fresh)
        pl__s2s_out_start(o); /* may answer (error) and end the link at once */
    else if (o->conn && (o->state == O_AUTH || o->state == O_READY))
        pl__s2s_out_send_verifies(o);
out:
    pl_free(from);
    pl_free(to);
}

/* <db:verify> from a receiving server: we are the authoritative one. */
void pl__s2s_in_db_verify(struct in *i, struct pl_stanza *st)
{
    struct pl_node *root = pl_stanza_root(st);
    const char *f = pl_node_attr(root, "from"), *t = pl_node_attr(root, "to");
    const char *id = pl_node_attr(root, "id");
    size_t klen = 0;
    const char *key = pl_node_text(st, root, &klen);
    char *from = NULL, *to = NULL;
    if (!f || !t || !id || pl_jid_prep_domain(pl_str_c(f), &from) != PL_OK ||
        pl_jid_prep_domain(pl_str_c(t), &to) != PL_OK) {
        pl__s2s_in_error(i, "bad-format", "db:verify needs from, to and id");
        goto out;
    }
    if (!pl_host_find(to)) {
        db_element(i->conn, "verify", t, from, id, "error", NULL,
                   "item-not-found");
        goto out;
    }
    char want[2 * EVP_MAX_MD_SIZE + 1];
    dialback_key(from, to, id, want, sizeof(want));
    int ok = key && klen == strlen(want) && CRYPTO_memcmp(key, want, klen) == 0;
    db_element(i->conn, "verify", to, from, id, ok ? "valid" : "invalid", NULL,
               NULL);
    pl_log_info("s2s", "dialback verify from %s for %s: %s", from, to,
                ok ? "valid" : "invalid");
out:
    pl_free(from);
    pl_free(to);
}
