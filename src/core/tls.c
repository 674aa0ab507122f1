/*
 * tls.c - OpenSSL contexts, self-signed certificates and channel binding
 * data; see tls.h.
 */
#include "tls.h"
#include "tls_rec.h"

#include <errno.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <fcntl.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "alloc.h"
#include "error.h"
#include "log.h"

static int host_index = -1;

static void log_ssl(const char *what)
{
    unsigned long e;
    char buf[256];
    while ((e = ERR_get_error()) != 0) {
        ERR_error_string_n(e, buf, sizeof(buf));
        pl_log_error("tls", "%s: %s", what, buf);
    }
}

static int mkdirs(const char *path)
{
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s", path);
    char *slash = strrchr(tmp, '/');
    if (!slash)
        return PL_OK;
    *slash = '\0';
    for (char *p = tmp + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            mkdir(tmp, 0755);
            *p = '/';
        }
    }
    if (mkdir(tmp, 0755) < 0 && errno != EEXIST)
        return PL_EIO;
    return PL_OK;
}

static int add_ext(X509 *cert, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, cert, cert, NULL, NULL, 0);
    X509_EXTENSION *ex = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    if (!ex)
        return 0;
    int ok = X509_add_ext(cert, ex, -1);
    X509_EXTENSION_free(ex);
    return ok;
}

int pl_tls_ensure_selfsigned(const char *domain, const char *cert_path,
                             const char *key_path)
{
    if (access(cert_path, R_OK) == 0)
        return PL_OK;
    int rc = PL_ETLS;
    EVP_PKEY *pkey = EVP_EC_gen("P-256");
    X509 *cert = X509_new();
    FILE *f = NULL;
    if (!pkey || !cert)
        goto out;
    X509_set_version(cert, 2);
    unsigned char serial[16];
    RAND_bytes(serial, sizeof(serial));
    serial[0] &= 0x7f;
    BIGNUM *bn = BN_bin2bn(serial, sizeof(serial), NULL);
    BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert));
    BN_free(bn);
    X509_gmtime_adj(X509_getm_notBefore(cert), -3600);
    X509_gmtime_adj(X509_getm_notAfter(cert), 10L * 365 * 24 * 3600);
    X509_set_pubkey(cert, pkey);
    X509_NAME *name = X509_get_subject_name(cert);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                               (const unsigned char *)domain, -1, -1, 0);
    X509_set_issuer_name(cert, name);
    char san[1100];
    snprintf(san, sizeof(san), "DNS:%s, DNS:*.%s", domain, domain);
    if (!add_ext(cert, NID_subject_alt_name, san) ||
        !add_ext(cert, NID_basic_constraints, "critical,CA:FALSE") ||
        !add_ext(cert, NID_key_usage, "critical,digitalSignature") ||
        !add_ext(cert, NID_ext_key_usage, "serverAuth"))
        goto out;
    if (!X509_sign(cert, pkey, EVP_sha256()))
        goto out;
    if (mkdirs(cert_path) != PL_OK || mkdirs(key_path) != PL_OK)
        goto out;
    int fd = open(key_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || !(f = fdopen(fd, "w")))
        goto out;
    if (!PEM_write_PrivateKey(f, pkey, NULL, NULL, 0, NULL, NULL))
        goto out;
    fclose(f);
    f = fopen(cert_path, "w");
    if (!f || !PEM_write_X509(f, cert))
        goto out;
    pl_log_info("tls", "created a self-signed certificate for %s at %s", domain,
                cert_path);
    rc = PL_OK;
out:
    if (f)
        fclose(f);
    if (rc != PL_OK)
        log_ssl("while creating a self-signed certificate");
    X509_free(cert);
    EVP_PKEY_free(pkey);
    return rc;
}

/* RFC 5929 §4.1: the certificate's signature hash, SHA-256 for MD5/SHA-1. */
static void compute_endpoint(struct pl_tls_host *h)
{
    X509 *cert = SSL_CTX_get0_certificate(h->ctx);
    if (!cert)
        return;
    int md_nid = 0, pk_nid = 0;
    if (!OBJ_find_sigid_algs(X509_get_signature_nid(cert), &md_nid, &pk_nid))
        return;
    const EVP_MD *md = EVP_get_digestbynid(md_nid);
    if (!md || md_nid == NID_md5 || md_nid == NID_sha1)
        md = EVP_sha256();
    unsigned int len = 0;
    if (X509_digest(cert, md, h->endpoint, &len))
        h->endpoint_len = len;
}

/* XEP-0368 §3: direct TLS clients may offer ALPN "xmpp-client". */
static int on_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                   const unsigned char *in, unsigned int inlen, void *arg)
{
    static const unsigned char want[] = "\x0bxmpp-client";
    unsigned char *sel = NULL;
    if (SSL_select_next_proto(&sel, outlen, want, sizeof(want) - 1, in,
                              inlen) == OPENSSL_NPN_NEGOTIATED) {
        *out = sel;
        return SSL_TLSEXT_ERR_OK;
    }
    return SSL_TLSEXT_ERR_NOACK; /* no ALPN or another: go on without */
}

int pl_tls_host_load(const char *domain, const char *cert, const char *key,
                     struct pl_tls_host **out)
{
    if (host_index < 0)
        host_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx)
        goto fail;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE |
                                 SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS |
                              SSL_MODE_ENABLE_PARTIAL_WRITE |
                              SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
    /* TLS 1.3 tickets after a full handshake (server.tls_tickets sets a
     * host's; OpenSSL's default is 2). */
    SSL_CTX_set_num_tickets(ctx, 1);
    SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"parley", 6);
    SSL_CTX_set_alpn_select_cb(ctx, on_alpn, NULL);
    pl_tls_rec_keylog(ctx); /* secrets for pl_conn_tls_handover */
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        log_ssl("while loading the certificate");
        pl_log_error("tls", "cannot load certificate %s / key %s for %s", cert,
                     key, domain);
        goto fail;
    }
    struct pl_tls_host *h = pl_calloc(1, sizeof(*h));
    h->domain = pl_strdup(domain);
    h->ctx = ctx;
    SSL_CTX_set_ex_data(ctx, host_index, h);
    compute_endpoint(h);
    *out = h;
    return PL_OK;
fail:
    SSL_CTX_free(ctx);
    return PL_ETLS;
}

void pl_tls_host_free(struct pl_tls_host *h)
{
    if (!h)
        return;
    SSL_CTX_set_ex_data(h->ctx, host_index, NULL);
    SSL_CTX_free(h->ctx);
    pl_free(h->domain);
    pl_free(h);
}

static struct pl_tls_host *(*sni_lookup)(const char *name);

static int on_servername(SSL *ssl, int *al, void *arg)
{
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    if (!name || !sni_lookup)
        return SSL_TLSEXT_ERR_OK;
    struct pl_tls_host *h = sni_lookup(name);
    if (h && h->ctx != SSL_get_SSL_CTX(ssl))
        SSL_set_SSL_CTX(ssl, h->ctx);
    return SSL_TLSEXT_ERR_OK;
}

void pl_tls_set_sni(SSL_CTX *ctx,
                    struct pl_tls_host *(*lookup)(const char *name))
{
    sni_lookup = lookup;
    SSL_CTX_set_tlsext_servername_callback(ctx, on_servername);
}

int pl_tls_exporter(SSL *ssl, unsigned char *out, size_t len)
{
    static const char label[] = "EXPORTER-Channel-Binding";
    if (SSL_export_keying_material(ssl, out, len, label, sizeof(label) - 1,
                                   NULL, 0, 0) != 1)
        return PL_ETLS;
    return PL_OK;
}

struct pl_tls_host *pl_tls_host_of(SSL *ssl)
{
    if (host_index < 0)
        return NULL;
    return SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), host_index);
}

/* ---- server-to-server ---- */

static int on_verify_later(int ok, X509_STORE_CTX *x)
{
    return 1; /* pl_tls_verify_peer decides, with its own trust store */
}

int pl_tls_client_ctx(const char *cert, const char *key, SSL_CTX **out)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx)
        goto fail;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS |
                              SSL_MODE_ENABLE_PARTIAL_WRITE |
                              SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, on_verify_later);
    static const unsigned char alpn[] = "\x0bxmpp-server";
    SSL_CTX_set_alpn_protos(ctx, alpn, sizeof(alpn) - 1);
    if (cert && key &&
        (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
         SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
         SSL_CTX_check_private_key(ctx) != 1)) {
        log_ssl("while loading the certificate for outgoing connections");
        goto fail;
    }
    *out = ctx;
    return PL_OK;
fail:
    SSL_CTX_free(ctx);
    return PL_ETLS;
}

int pl_tls_store_load(const char *file, const char *dir, X509_STORE **out)
{
    X509_STORE *st = X509_STORE_new();
    if (!st)
        return PL_ETLS;
    int ok = 1;
    if ((!file || !*file) && (!dir || !*dir))
        ok = X509_STORE_set_default_paths(st) == 1;
    if (file && *file && X509_STORE_load_file(st, file) != 1)
        ok = 0;
    if (dir && *dir && X509_STORE_load_path(st, dir) != 1)
        ok = 0;
    if (!ok) {
        log_ssl("while loading trusted certificates");
        pl_log_error("tls",
                     "cannot load trusted certificates from '%s' / "
                     "'%s'",
                     file ? file : "", dir ? dir : "");
        X509_STORE_free(st);
        return PL_ETLS;
    }
    *out = st;
    return PL_OK;
}

/* RFC 6120 §13.7.1.4: id-on-xmppAddr (1.3.6.1.5.5.7.8.5) otherName. */
static int has_xmppaddr(GENERAL_NAMES *names, const char *domain)
{
    static ASN1_OBJECT *oid;
    if (!oid)
        oid = OBJ_txt2obj("1.3.6.1.5.5.7.8.5", 1);
    for (int i = 0; i < sk_GENERAL_NAME_num(names); i++) {
        GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);
        if (g->type != GEN_OTHERNAME || !oid ||
            OBJ_cmp(g->d.otherName->type_id, oid) != 0)
            continue;
        ASN1_TYPE *v = g->d.otherName->value;
        if (v->type != V_ASN1_UTF8STRING)
            continue;
        const unsigned char *p = ASN1_STRING_get0_data(v->value.utf8string);
        int n = ASN1_STRING_length(v->value.utf8string);
        if ((size_t)n == strlen(domain) &&
            strncasecmp((const char *)p, domain, (size_t)n) == 0)
            return 1;
    }
    return 0;
}

/* The DNS names of cert, for the log line when none matches. */
static void list_names(X509 *cert, char *out, size_t len)
{
    GENERAL_NAMES *names = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL,
                                            NULL);
    size_t used = 0;
    out[0] = '\0';
    for (int i = 0; names && i < sk_GENERAL_NAME_num(names); i++) {
        GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);
        if (g->type != GEN_DNS)
            continue;
        int w = snprintf(out + used, len - used, "%s%.*s", used ? ", " : "",
                         ASN1_STRING_length(g->d.dNSName),
                         (const char *)ASN1_STRING_get0_data(g->d.dNSName));
        if (w < 0 || (size_t)w >= len - used)
            break;
        used += (size_t)w;
    }
    GENERAL_NAMES_free(names);
    if (!used) {
        X509_NAME *subj = X509_get_subject_name(cert);
        if (X509_NAME_get_text_by_NID(subj, NID_commonName, out, (int)len) < 0)
            snprintf(out, len, "none");
    }
}

int pl_tls_verify_peer(SSL *ssl, X509_STORE *store, const char *domain,
                       char *why, size_t len)
{
    X509 *cert = SSL_get0_peer_certificate(ssl);
    if (!cert) {
        snprintf(why, len, "the peer presented no certificate");
        return PL_ETLS;
    }
    /* The server side's chain lacks the leaf; the client side's has it. */
    STACK_OF(X509) *chain = SSL_get_peer_cert_chain(ssl);
    X509_STORE_CTX *x = X509_STORE_CTX_new();
    int rc = PL_ETLS;
    if (!x || X509_STORE_CTX_init(x, store, cert, chain) != 1) {
        snprintf(why, len, "cannot check the certificate (out of memory)");
        goto out;
    }
    if (X509_verify_cert(x) != 1) {
        int e = X509_STORE_CTX_get_error(x);
        char names[200];
        list_names(cert, names, sizeof(names));
        snprintf(why, len, "certificate for %s not trusted: %s", names,
                 X509_verify_cert_error_string(e));
        goto out;
    }
    if (X509_check_host(cert, domain, 0, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS,
                        NULL) == 1) {
        rc = PL_OK;
        goto out;
    }
    GENERAL_NAMES *gn = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL,
                                         NULL);
    int xa = gn && has_xmppaddr(gn, domain);
    GENERAL_NAMES_free(gn);
    if (xa) {
        rc = PL_OK;
        goto out;
    }
    char names[200];
    list_names(cert, names, sizeof(names));
    snprintf(why, len, "certificate is not valid for %s (it names: %s)", domain,
             names);
out:
    X509_STORE_CTX_free(x);
    return rc;
}
