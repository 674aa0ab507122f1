/*
 * test_stream.c - the c2s stream (src/xmpp/c2s.c, sasl.c) driven in-process:
 * stream headers and their errors, SASL SCRAM over a plain stream, resource
 * binding and conflicts, and the first stanzas of a bound session.
 *
 * Each test builds a server the way src/parleyd.c does (configuration file
 * under a fresh /tmp directory, loop, CPU queue, storage, hosts, c2s) but
 * with no listener (tests/support/inproc.h): one end of a socketpair goes
 * to pl__c2s_accept_fd() as an accepted connection, the other end is the
 * client.  The client end is watched by the same loop, so the loop stops
 * as soon as the server wrote something (or after a 20 ms slice); expect()
 * compares the server's exact output, where '*' stands for the parts that
 * vary (stream ids, nonces, proofs) and matches any run of bytes other
 * than < > ' ".
 *
 * The SCRAM client is written here with OpenSSL (PBKDF2, HMAC), so a login
 * does not depend on the server's own SCRAM code.  Accounts are created
 * through the storage driver, or in-band (XEP-0077).
 *
 * Extending: a header or pre-authentication case is a row in a table; a
 * new situation after login starts from login_bind().
 */
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../src/core/account.h"
#include "../../src/core/alloc.h"
#include "../../src/core/buf.h"
#include "../../src/core/config.h"
#include "../../src/core/error.h"
#include "../../src/core/host.h"
#include "../../src/core/log.h"
#include "../../src/core/loop.h"
#include "../../src/core/module.h"
#include "../../src/core/resources.h"
#include "../../src/core/scram.h"
#include "../../src/core/server.h"
#include "../../src/core/storage.h"
#include "../../src/xmpp/c2s.h"
#include "../../src/core/work.h"
#include "../support/inproc.h"
#include "unit.h"

#if defined(__SANITIZE_ADDRESS__)
#define HAVE_LSAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define HAVE_LSAN 1
#endif
#endif
#ifdef HAVE_LSAN
#include <sanitizer/lsan_interface.h>
/* The runner ends each test with _exit(), which skips LeakSanitizer. */
#define LEAK_CHECK() CHECK(__lsan_do_recoverable_leak_check() == 0)
#else
#define LEAK_CHECK() ((void)0)
#endif

#define ITER 4096    /* the smallest scram_iterations allowed: fast tests */
#define WAIT_MS 1500 /* how long expect() waits for the server */

#define NS_SASL "urn:ietf:params:xml:ns:xmpp-sasl"
#define NS_BIND "urn:ietf:params:xml:ns:xmpp-bind"
#define NS_STREAMS_ERR "urn:ietf:params:xml:ns:xmpp-streams"
#define NS_STANZAS "urn:ietf:params:xml:ns:xmpp-stanzas"

/* What the client sends to open a stream. */
#define OPEN                                                                   \
    "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "               \
    "xmlns:stream='http://etherx.jabber.org/streams' to='localhost' "          \
    "version='1.0'>"
/* The server's stream header. */
#define HDR                                                                    \
    "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "               \
    "xmlns:stream='http://etherx.jabber.org/streams' version='1.0' "           \
    "xml:lang='en' id='*' from='localhost'>"
/* Features before authentication on a plain stream (no STARTTLS without a
 * TLS listener, no PLAIN and no -PLUS without TLS). */
#define FEAT_PRE                                                               \
    "<stream:features><mechanisms xmlns='" NS_SASL "'>"                        \
    "<mechanism>SCRAM-SHA-256</mechanism>"                                     \
    "<mechanism>SCRAM-SHA-1</mechanism></mechanisms>"                          \
    "<register xmlns='http://jabber.org/features/iq-register'/>"               \
    "</stream:features>"
/* Features after authentication. */
#define FEAT_POST                                                              \
    "<stream:features><bind xmlns='" NS_BIND                                   \
    "'/><sm xmlns='urn:xmpp:sm:3'/></stream:features>"
/* A stream error without text, and the end of the stream. */
#define SERR(cond)                                                             \
    "<stream:error><" cond " xmlns='" NS_STREAMS_ERR                           \
    "'/></stream:error></stream:stream>"
#define SERR_TEXT(cond, text)                                                  \
    "<stream:error><" cond " xmlns='" NS_STREAMS_ERR                           \
    "'/><text xmlns='" NS_STREAMS_ERR "' xml:lang='en'>" text                  \
    "</text></stream:error>"                                                   \
    "</stream:stream>"
#define SASL_FAIL(cond) "<failure xmlns='" NS_SASL "'><" cond "/></failure>"

/* ---- a server in this process ---- */

static struct inproc E; /* the server */

/*
 * Starts a server for "localhost" with modules ping and register (open),
 * plain c2s allowed, c2s_extra added to the c2s group and limits_extra to
 * the limits group.
 */
static void env_start_limits(const char *c2s_extra, const char *limits_extra)
{
    inproc_mkdir(&E, "parley-test-stream");
    inproc_start(&E, PL_LOG_ERROR,
                 "hosts = ( { domain = \"localhost\"; } );\n"
                 "modules = [ \"ping\", \"register\" ];\n"
                 "c2s: { require_encryption = false; scram_iterations = %d; "
                 "%s };\n"
                 "register: { policy = \"open\"; };\n"
                 "limits: { %s };\n",
                 ITER, c2s_extra ? c2s_extra : "",
                 limits_extra ? limits_extra : "");
}

static void env_start(const char *c2s_extra)
{
    env_start_limits(c2s_extra, NULL);
}

/* Ends every stream (<system-shutdown/>) and frees everything. */
static void env_stop(void)
{
    inproc_drain(&E);
    CHECK_INT(inproc_stop_frontends(&E), 0);
    CHECK_INT(pl_session_count(), 0);
    inproc_free(&E);
    LEAK_CHECK();
}

/* Creates user@localhost with the keys for password, as parleyctl does. */
static void add_user(const char *user, const char *password)
{
    const struct pl_storage_driver *d = pl_storage_driver_find("sqlite");
    inproc_need(&E, d != NULL, "the sqlite driver");
    void *db = NULL;
    inproc_need(&E, d->open(&E.cfg->s, &db) == PL_OK, "opening the database");
    struct pl_account a;
    inproc_need(&E,
                pl_account_set_password(&a, user, "localhost",
                                        pl_str_c(password), ITER, 1) == PL_OK,
                "deriving keys");
    d->begin(db);
    inproc_need(&E, d->account_create(db, "localhost", user, &a) == PL_OK,
                "creating an account");
    d->commit(db);
    d->close(db);
}

/* ---- the client end ---- */

struct client {
    struct pl_io io;  /* our end of the socketpair, watched by E.loop */
    struct pl_buf in; /* received, not matched yet */
    int eof;          /* the server closed its end */
    char *got;        /* what the last expect() matched */
};

static void on_client_io(struct pl_io *io, unsigned events)
{
    struct client *c = io->data;
    inproc_read(io, &c->in, &c->eof);
    pl_loop_stop(E.loop); /* let the test look */
}

static void cl_open(struct client *c)
{
    memset(c, 0, sizeof(*c));
    inproc_connect(&E, pl__c2s_accept_fd, &c->io, on_client_io, c);
}

static void cl_close(struct client *c)
{
    pl_io_stop(&c->io);
    close(c->io.fd);
    pl_buf_reset(&c->in);
    pl_free(c->got);
    c->got = NULL;
}

static void cl_send(struct client *c, const char *xml)
{
    CHECK_INT(inproc_write(&E, &c->io, xml, strlen(xml), NULL, WAIT_MS), PL_OK);
}

/*
 * Whether s[0..n) matches pat entirely; '*' matches any run of bytes other
 * than < > ' " (so it never spans an element or an attribute value).
 */
static int glob(const char *pat, const char *s, size_t n)
{
    while (*pat && *pat != '*') {
        if (!n || *s != *pat)
            return 0;
        pat++, s++, n--;
    }
    if (!*pat)
        return n == 0;
    for (size_t i = 0;; i++) {
        if (glob(pat + 1, s + i, n - i))
            return 1;
        if (i == n || s[i] == '<' || s[i] == '>' || s[i] == '\'' || s[i] == '"')
            return 0;
    }
}

/*
 * Waits until what the server sent next matches pat exactly, consumes it
 * and returns it (valid until the next expect on c); NULL and a failure
 * after wait ms (WAIT_MS for expect).
 */
static const char *expect_(struct client *c, const char *pat, unsigned wait,
                           const char *file, int line)
{
    uint64_t deadline = inproc_now_ms() + wait;
    struct pl_str in;
    for (;;) {
        in = pl_buf_str(&c->in);
        for (size_t k = 0; k <= in.len; k++)
            if (glob(pat, in.p ? in.p : "", k)) {
                pl_free(c->got);
                c->got = pl_strndup(in.p ? in.p : "", k);
                pl_buf_consume(&c->in, k);
                return c->got;
            }
        if (c->eof || inproc_now_ms() >= deadline)
            break;
        inproc_pump(&E, 20);
    }
    fprintf(stderr, "  %s:%d: expected\n    %s\n  got\n    %.*s%s\n", file,
            line, pat, (int)in.len, in.p ? in.p : "", c->eof ? "[EOF]" : "");
    unit_failures++;
    return NULL;
}
#define expect(c, pat) expect_((c), (pat), WAIT_MS, __FILE__, __LINE__)
#define expect_within(c, pat, ms) expect_((c), (pat), (ms), __FILE__, __LINE__)

/* Waits for the server to close, with nothing more sent before. */
static void expect_eof_(struct client *c, const char *file, int line)
{
    uint64_t deadline = inproc_now_ms() + WAIT_MS;
    while (!c->eof && inproc_now_ms() < deadline)
        inproc_pump(&E, 20);
    if (!c->eof || c->in.len) {
        struct pl_str in = pl_buf_str(&c->in);
        fprintf(stderr,
                "  %s:%d: expected the end of the connection, got "
                "\"%.*s\"%s\n",
                file, line, (int)in.len, in.p ? in.p : "",
                c->eof ? " then EOF" : " and no EOF");
        unit_failures++;
    }
}
#define expect_eof(c) expect_eof_((c), __FILE__, __LINE__)

/* Checks that the server sends nothing for a while (and stays open). */
static void expect_quiet_(struct client *c, const char *file, int line)
{
    uint64_t end = inproc_now_ms() + 60;
    while (inproc_now_ms() < end)
        inproc_pump(&E, 20);
    if (c->eof || c->in.len) {
        struct pl_str in = pl_buf_str(&c->in);
        fprintf(stderr, "  %s:%d: expected silence, got \"%.*s\"%s\n", file,
                line, (int)in.len, in.p ? in.p : "", c->eof ? " EOF" : "");
        unit_failures++;
    }
}
#define expect_quiet(c) expect_quiet_((c), __FILE__, __LINE__)

/* ---- SASL SCRAM, client side (RFC 5802 §3) ---- */

static void b64(const void *p, size_t n, struct pl_buf *out)
{
    pl_base64_encode(p, n, out);
}

/* The text between an element's start and end tags, base64-decoded. */
static int payload(const char *el, struct pl_buf *out)
{
    const char *a = el ? strchr(el, '>') : NULL;
    const char *b = el ? strrchr(el, '<') : NULL;
    if (!a || !b || b < a)
        return PL_EINVAL;
    return pl_base64_decode((struct pl_str){a + 1, (size_t)(b - a - 1)}, out);
}

/* Value of attribute k ("r", "s", "i", "v") in a SCRAM message. */
static char *scram_attr(const char *msg, char k)
{
    for (const char *p = msg; p && *p;
         p = strchr(p, ',') ? strchr(p, ',') + 1 : NULL)
        if (p[0] == k && p[1] == '=') {
            const char *e = strchr(p, ',');
            return pl_strndup(p + 2, e ? (size_t)(e - p - 2) : strlen(p + 2));
        }
    return NULL;
}

struct scram {
    enum pl_scram_hash h;         /* digest */
    char bare[256];               /* client-first-message-bare */
    unsigned char server_sig[64]; /* expected ServerSignature */
};

static const char *mech_of(enum pl_scram_hash h)
{
    return h == PL_SCRAM_SHA1 ? "SCRAM-SHA-1" : "SCRAM-SHA-256";
}

/* Sends <auth/> with client-first-message for user. */
static void scram_auth(struct client *c, struct scram *s, enum pl_scram_hash h,
                       const char *user)
{
    s->h = h;
    snprintf(s->bare, sizeof(s->bare), "n=%s,r=fyko+d2lbbFgONRv9qkxdawL", user);
    char first[300];
    snprintf(first, sizeof(first), "n,,%s", s->bare);
    struct pl_buf b = {0};
    pl_buf_printf(&b, "<auth xmlns='" NS_SASL "' mechanism='%s'>", mech_of(h));
    b64(first, strlen(first), &b);
    pl_buf_append_str(&b, "</auth>");
    cl_send(c, pl_buf_cstr(&b));
    pl_buf_reset(&b);
}

/*
 * Reads the server-first challenge and answers it with the proof for
 * password.  Returns 0 if the challenge was not there or malformed.
 */
static int scram_respond(struct client *c, struct scram *s,
                         const char *password)
{
    const char *ch = expect(c, "<challenge xmlns='" NS_SASL "'>*</challenge>");
    struct pl_buf sfirst = {0}, salt = {0}, am = {0}, out = {0};
    char *r = NULL, *salt64 = NULL, *iters = NULL;
    int ok = 0;
    if (!ch || payload(ch, &sfirst) != PL_OK)
        goto out;
    const char *sf = pl_buf_cstr(&sfirst);
    r = scram_attr(sf, 'r');
    salt64 = scram_attr(sf, 's');
    iters = scram_attr(sf, 'i');
    CHECK(r && strncmp(r, "fyko+d2lbbFgONRv9qkxdawL", 24) == 0 &&
          strlen(r) > 24);
    CHECK(iters && atoi(iters) == ITER);
    if (!r || !salt64 || !iters ||
        pl_base64_decode(pl_str_c(salt64), &salt) != PL_OK)
        goto out;
    const EVP_MD *md = s->h == PL_SCRAM_SHA1 ? EVP_sha1() : EVP_sha256();
    size_t hl = pl_scram_hash_len(s->h);
    unsigned char salted[64], ck[64], sk[64], stored[64], sig[64], proof[64];
    unsigned int n;
    PKCS5_PBKDF2_HMAC(password, (int)strlen(password),
                      (const unsigned char *)salt.data + salt.off,
                      (int)salt.len, atoi(iters), md, (int)hl, salted);
    HMAC(md, salted, (int)hl, (const unsigned char *)"Client Key", 10, ck, &n);
    HMAC(md, salted, (int)hl, (const unsigned char *)"Server Key", 10, sk, &n);
    EVP_Digest(ck, hl, stored, NULL, md, NULL);
    char without[300];
    snprintf(without, sizeof(without), "c=biws,r=%s", r);
    pl_buf_printf(&am, "%s,%s,%s", s->bare, sf, without);
    HMAC(md, stored, (int)hl, (const unsigned char *)pl_buf_cstr(&am), am.len,
         sig, &n);
    for (size_t i = 0; i < hl; i++)
        proof[i] = ck[i] ^ sig[i];
    HMAC(md, sk, (int)hl, (const unsigned char *)pl_buf_cstr(&am), am.len,
         s->server_sig, &n);
    struct pl_buf final = {0};
    pl_buf_printf(&final, "%s,p=", without);
    b64(proof, hl, &final);
    pl_buf_append_str(&out, "<response xmlns='" NS_SASL "'>");
    b64(pl_buf_cstr(&final), final.len, &out);
    pl_buf_append_str(&out, "</response>");
    pl_buf_reset(&final);
    cl_send(c, pl_buf_cstr(&out));
    ok = 1;
out:
    pl_free(r);
    pl_free(salt64);
    pl_free(iters);
    pl_buf_reset(&sfirst);
    pl_buf_reset(&salt);
    pl_buf_reset(&am);
    pl_buf_reset(&out);
    return ok;
}

/* Reads <success/> and checks the server's signature (mutual auth). */
static void scram_success(struct client *c, struct scram *s)
{
    const char *el = expect(c, "<success xmlns='" NS_SASL "'>*</success>");
    struct pl_buf v = {0}, want = {0};
    if (el && payload(el, &v) == PL_OK) {
        pl_buf_append_str(&want, "v=");
        b64(s->server_sig, pl_scram_hash_len(s->h), &want);
        CHECK_STR(pl_buf_cstr(&v), pl_buf_cstr(&want));
    } else {
        CHECK(!"a <success/> with server-final-message");
    }
    pl_buf_reset(&v);
    pl_buf_reset(&want);
}

/* Opens a stream and logs in as user with SCRAM-SHA-256. */
static void login(struct client *c, const char *user, const char *password)
{
    struct scram s;
    cl_send(c, OPEN);
    expect(c, HDR FEAT_PRE);
    scram_auth(c, &s, PL_SCRAM_SHA256, user);
    if (scram_respond(c, &s, password))
        scram_success(c, &s);
    cl_send(c, OPEN);
    expect(c, HDR FEAT_POST);
}

/* Binds resource (NULL: the server's choice); checks the result. */
static void bind_as(struct client *c, const char *jid, const char *resource)
{
    char req[1400], want[1400];
    if (resource)
        snprintf(req, sizeof(req),
                 "<iq type='set' id='bind1'><bind xmlns='" NS_BIND
                 "'><resource>%s</resource></bind></iq>",
                 resource);
    else
        snprintf(req, sizeof(req),
                 "<iq type='set' id='bind1'><bind xmlns='" NS_BIND "'/></iq>");
    snprintf(want, sizeof(want),
             "<iq type='result' id='bind1'><bind xmlns='" NS_BIND
             "'><jid>%s</jid></bind></iq>",
             jid);
    cl_send(c, req);
    expect(c, want);
}

static void login_bind(struct client *c, const char *user, const char *password,
                       const char *resource)
{
    char jid[1100];
    snprintf(jid, sizeof(jid), "%s@localhost/%s", user, resource);
    login(c, user, password);
    bind_as(c, jid, resource);
}

/* ---- stream headers ---- */

/* Headers the server accepts: answered with its header and features. */
void test_stream_header(void)
{
    static const char *const opens[] = {
        OPEN,
        /* No 'to': the first host; no XML declaration. */
        "<stream:stream xmlns='jabber:client' "
        "xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>",
        /* 'to' is normalized; another prefix; a minor version. */
        "<s:stream xmlns='jabber:client' xmlns:s='http://etherx.jabber.org/"
        "streams' to='LocalHost.' version='1.1' xml:lang='fr'>",
    };
    env_start(NULL);
    for (size_t i = 0; i < sizeof(opens) / sizeof(opens[0]); i++) {
        struct client c;
        cl_open(&c);
        cl_send(&c, opens[i]);
        expect(&c, HDR FEAT_PRE);
        cl_send(&c, " \n "); /* whitespace keepalives are ignored */
        expect_quiet(&c);
        /* The client closes: the server closes too (RFC 6120 §4.4). */
        cl_send(&c, i == 2 ? "</s:stream>" : "</stream:stream>");
        expect(&c, "</stream:stream>");
        expect_eof(&c);
        cl_close(&c);
    }
    env_stop();
}

/* Bad headers: our header (the RFC wants it first, §4.9.1.2), the stream
 * error, </stream:stream>, and the end of the connection. */
void test_stream_header_errors(void)
{
    static const struct {
        const char *send;
        const char *want;
    } rows[] = {
        /* Wrong stream namespace (§4.9.3.10). */
        {"<stream:stream xmlns='jabber:client' "
         "xmlns:stream='http://example.com/streams' to='localhost' "
         "version='1.0'>",
         HDR SERR("invalid-namespace")},
        /* Content namespace of s2s, or none (§4.8.2). */
        {"<stream:stream xmlns='jabber:server' "
         "xmlns:stream='http://etherx.jabber.org/streams' to='localhost' "
         "version='1.0'>",
         HDR SERR("invalid-namespace")},
        {"<stream:stream xmlns:stream='http://etherx.jabber.org/streams' "
         "to='localhost' version='1.0'>",
         HDR SERR("invalid-namespace")},
        /* Not a stream element (§4.9.3.1). */
        {"<stream:features xmlns='jabber:client' "
         "xmlns:stream='http://etherx.jabber.org/streams'>",
         HDR SERR("bad-format")},
        /* A domain we do not serve (§4.9.3.6), or not a domain. */
        {"<stream:stream xmlns='jabber:client' "
         "xmlns:stream='http://etherx.jabber.org/streams' "
         "to='example.org' version='1.0'>",
         HDR SERR("host-unknown")},
        {"<stream:stream xmlns='jabber:client' "
         "xmlns:stream='http://etherx.jabber.org/streams' "
         "to='a@b@c' version='1.0'>",
         HDR SERR("host-unknown")},
        /* No version, or below 1.0 (§4.9.3.25). */
        {"<stream:stream xmlns='jabber:client' "
         "xmlns:stream='http://etherx.jabber.org/streams' to='localhost'>",
         HDR SERR("unsupported-version")},
        {"<stream:stream xmlns='jabber:client' "
         "xmlns:stream='http://etherx.jabber.org/streams' to='localhost' "
         "version='0.9'>",
         HDR SERR("unsupported-version")},
        /* Not XML, or restricted XML (§11.1). */
        {"GET / HTTP/1.1\r\n", HDR SERR("not-well-formed")},
        {"<!DOCTYPE x><stream:stream/>", HDR SERR("restricted-xml")},
    };
    env_start(NULL);
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        struct client c;
        cl_open(&c);
        cl_send(&c, rows[i].send);
        if (!expect(&c, rows[i].want))
            fprintf(stderr, "  (row %zu)\n", i);
        expect_eof(&c);
        cl_close(&c);
    }
    CHECK_INT(pl__frontends_count(), 0);
    env_stop();
}

/* Before authentication, only SASL, STARTTLS and IQs a module allows
 * (XEP-0077 registration) are accepted. */
void test_stream_preauth_errors(void)
{
    static const struct {
        const char *send;
        const char *want;
    } rows[] = {
        /* A stanza (§4.9.3.12), an IQ no module takes before auth, an
         * attempt to bind. */
        {"<message to='localhost'><body>hi</body></message>",
         SERR("not-authorized")},
        {"<iq type='get' id='p' to='localhost'>"
         "<ping xmlns='urn:xmpp:ping'/></iq>",
         SERR("not-authorized")},
        {"<iq type='set' id='b'><bind xmlns='" NS_BIND "'/></iq>",
         SERR("not-authorized")},
        /* Content in the s2s namespace or no namespace (§4.8.2). */
        {"<message xmlns='jabber:server' to='localhost'/>",
         SERR("invalid-namespace")},
        {"<foo xmlns=''/>", SERR("invalid-namespace")},
        /* An unknown first-level element (§4.9.3.24). */
        {"<foo xmlns='urn:example:foo'/>", SERR("unsupported-stanza-type")},
        {"<success xmlns='" NS_SASL "'/>", SERR("unsupported-stanza-type")},
        /* A SASL response with no exchange in progress. */
        {"<response xmlns='" NS_SASL "'>biws</response>",
         SERR_TEXT("policy-violation", "no authentication in progress")},
        /* STARTTLS where it was not offered (RFC 6120 §5.4.2.2). */
        {"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>",
         "<failure xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"
         "</stream:stream>"},
        /* Comments are restricted XML. */
        {"<!-- hi -->", SERR("restricted-xml")},
    };
    env_start(NULL);
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        struct client c;
        cl_open(&c);
        cl_send(&c, OPEN);
        expect(&c, HDR FEAT_PRE);
        cl_send(&c, rows[i].send);
        if (!expect(&c, rows[i].want))
            fprintf(stderr, "  (row %zu)\n", i);
        expect_eof(&c);
        cl_close(&c);
    }
    env_stop();
}

/* ---- SASL ---- */

/* SCRAM-SHA-256 and SCRAM-SHA-1 over a plain stream, with and without an
 * initial response; the restarted stream offers <bind/>. */
void test_stream_sasl_scram(void)
{
    env_start(NULL);
    add_user("alice", "correct horse");
    for (int h = 0; h < PL_SCRAM_NHASH; h++) {
        struct client c;
        struct scram s;
        cl_open(&c);
        cl_send(&c, OPEN);
        expect(&c, HDR FEAT_PRE);
        scram_auth(&c, &s, (enum pl_scram_hash)h, "alice");
        if (scram_respond(&c, &s, "correct horse"))
            scram_success(&c, &s);
        /* RFC 6120 §6.4.6: a new header, features without SASL. */
        cl_send(&c, OPEN);
        expect(&c, HDR FEAT_POST);
        /* Authenticating again is a policy violation. */
        scram_auth(&c, &s, PL_SCRAM_SHA256, "alice");
        expect(&c, SERR_TEXT("policy-violation", "already authenticated"));
        expect_eof(&c);
        cl_close(&c);
    }

    /* No initial response: an empty challenge asks for it (§6.4.2). */
    struct client c;
    struct scram s;
    cl_open(&c);
    cl_send(&c, OPEN);
    expect(&c, HDR FEAT_PRE);
    cl_send(&c, "<auth xmlns='" NS_SASL "' mechanism='SCRAM-SHA-256'/>");
    expect(&c, "<challenge xmlns='" NS_SASL "'/>");
    s.h = PL_SCRAM_SHA256;
    snprintf(s.bare, sizeof(s.bare), "n=alice,r=fyko+d2lbbFgONRv9qkxdawL");
    struct pl_buf b = {0};
    pl_buf_append_str(&b, "<response xmlns='" NS_SASL "'>");
    const char *first = "n,,n=alice,r=fyko+d2lbbFgONRv9qkxdawL";
    b64(first, strlen(first), &b);
    pl_buf_append_str(&b, "</response>");
    cl_send(&c, pl_buf_cstr(&b));
    pl_buf_reset(&b);
    if (scram_respond(&c, &s, "correct horse"))
        scram_success(&c, &s);
    cl_send(&c, OPEN);
    expect(&c, HDR FEAT_POST);
    cl_close(&c);
    env_stop();
}

/* Failures that leave the stream open: <failure/> with the condition. */
void test_stream_sasl_failures(void)
{
    static const struct {
        const char *mech;     /* SCRAM exchange, or NULL: send raw */
        const char *user;     /* for SCRAM */
        const char *password; /* for SCRAM */
        const char *raw;      /* for NULL mech */
        const char *want;
    } rows[] = {
        /* Wrong password, unknown user: the same answer (RFC 6120
         * §6.5.10). */
        {"SCRAM-SHA-256", "alice", "wrong", NULL, SASL_FAIL("not-authorized")},
        {"SCRAM-SHA-1", "alice", "wrong", NULL, SASL_FAIL("not-authorized")},
        {"SCRAM-SHA-256", "nobody", "x", NULL, SASL_FAIL("not-authorized")},
        /* PLAIN is never offered without TLS; -PLUS needs TLS too. */
        {NULL, NULL, NULL,
         "<auth xmlns='" NS_SASL "' mechanism='PLAIN'>"
         "AGFsaWNlAGNvcnJlY3QgaG9yc2U=</auth>",
         SASL_FAIL("invalid-mechanism")},
        {NULL, NULL, NULL,
         "<auth xmlns='" NS_SASL "' mechanism='SCRAM-SHA-256-PLUS'>"
         "cD10bHMtZXhwb3J0ZXIsLG49YWxpY2Uscj1hYmM=</auth>",
         SASL_FAIL("invalid-mechanism")},
        {NULL, NULL, NULL, "<auth xmlns='" NS_SASL "' mechanism='DIGEST-MD5'/>",
         SASL_FAIL("invalid-mechanism")},
        {NULL, NULL, NULL, "<auth xmlns='" NS_SASL "'/>",
         SASL_FAIL("invalid-mechanism")},
        /* Not base64 (§6.4.5). */
        {NULL, NULL, NULL,
         "<auth xmlns='" NS_SASL "' mechanism='SCRAM-SHA-256'>"
         "!!not base64!!</auth>",
         SASL_FAIL("incorrect-encoding")},
        /* Not a SCRAM message. */
        {NULL, NULL, NULL,
         "<auth xmlns='" NS_SASL "' mechanism='SCRAM-SHA-256'>"
         "aGVsbG8=</auth>",
         SASL_FAIL("malformed-request")},
    };
    env_start(NULL);
    add_user("alice", "correct horse");
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        struct client c;
        cl_open(&c);
        cl_send(&c, OPEN);
        expect(&c, HDR FEAT_PRE);
        if (rows[i].mech) {
            struct scram s;
            enum pl_scram_hash h = strcmp(rows[i].mech, "SCRAM-SHA-1") == 0
                                       ? PL_SCRAM_SHA1
                                       : PL_SCRAM_SHA256;
            scram_auth(&c, &s, h, rows[i].user);
            scram_respond(&c, &s, rows[i].password);
        } else {
            cl_send(&c, rows[i].raw);
        }
        if (!expect(&c, rows[i].want))
            fprintf(stderr, "  (row %zu)\n", i);
        /* The stream stays open and a correct login still works. */
        struct scram s;
        scram_auth(&c, &s, PL_SCRAM_SHA256, "alice");
        if (scram_respond(&c, &s, "correct horse"))
            scram_success(&c, &s);
        cl_close(&c);
    }
    env_stop();
}

/* max_auth_failures (3) failures end the stream (RFC 6120 §6.4.5). */
void test_stream_sasl_three_failures(void)
{
    env_start(NULL);
    add_user("alice", "correct horse");
    struct client c;
    cl_open(&c);
    cl_send(&c, OPEN);
    expect(&c, HDR FEAT_PRE);
    for (int i = 0; i < 3; i++) {
        struct scram s;
        scram_auth(&c, &s, PL_SCRAM_SHA256, "alice");
        scram_respond(&c, &s, "wrong");
        expect(&c, SASL_FAIL("not-authorized"));
        if (i < 2)
            expect_quiet(&c);
    }
    expect(&c, "</stream:stream>");
    expect_eof(&c);
    cl_close(&c);

    /* Other failures count too. */
    cl_open(&c);
    cl_send(&c, OPEN);
    expect(&c, HDR FEAT_PRE);
    cl_send(&c, "<auth xmlns='" NS_SASL "' mechanism='PLAIN'>AGEAYg==</auth>"
                "<auth xmlns='" NS_SASL "' mechanism='X'>AGEAYg==</auth>"
                "<auth xmlns='" NS_SASL "' mechanism='SCRAM-SHA-1'>"
                "@@</auth>");
    expect(&c, SASL_FAIL("invalid-mechanism") SASL_FAIL("invalid-mechanism")
                   SASL_FAIL("incorrect-encoding") "</stream:stream>");
    expect_eof(&c);
    cl_close(&c);
    env_stop();
}

/* <abort/> answers <aborted/> and does not count as a failure; a new
 * exchange may follow. */
void test_stream_sasl_abort(void)
{
    env_start("max_auth_failures = 1;");
    add_user("alice", "correct horse");
    struct client c;
    struct scram s;
    cl_open(&c);
    cl_send(&c, OPEN);
    expect(&c, HDR FEAT_PRE);
    /* Before any exchange, after auth, after the challenge. */
    cl_send(&c, "<abort xmlns='" NS_SASL "'/>");
    expect(&c, SASL_FAIL("aborted"));
    scram_auth(&c, &s, PL_SCRAM_SHA256, "alice");
    expect(&c, "<challenge xmlns='" NS_SASL "'>*</challenge>");
    cl_send(&c, "<abort xmlns='" NS_SASL "'/>");
    expect(&c, SASL_FAIL("aborted"));
    scram_auth(&c, &s, PL_SCRAM_SHA256, "alice");
    cl_send(&c, "<abort xmlns='" NS_SASL "'/>");
    expect(&c, SASL_FAIL("aborted"));
    expect_quiet(&c); /* the pending lookup's answer is dropped */
    scram_auth(&c, &s, PL_SCRAM_SHA256, "alice");
    if (scram_respond(&c, &s, "correct horse"))
        scram_success(&c, &s);
    cl_send(&c, OPEN);
    expect(&c, HDR FEAT_POST);
    cl_close(&c);
    env_stop();
}

/*
 * An exchange aborted while its account lookup is pending must not lend
 * that account's keys to the next exchange: eve starts as herself, aborts,
 * and restarts as alice; her own password must not log her in as alice.
 */
void test_stream_sasl_abort_stale_lookup(void)
{
    env_start(NULL);
    add_user("alice", "alice's secret");
    add_user("eve", "eve's password");
    struct client c;
    struct scram s;
    cl_open(&c);
    cl_send(&c, OPEN);
    expect(&c, HDR FEAT_PRE);
    /* Sent before the loop runs again: the server reads all three at
     * once, before either lookup returns. */
    scram_auth(&c, &s, PL_SCRAM_SHA256, "eve");
    cl_send(&c, "<abort xmlns='" NS_SASL "'/>");
    scram_auth(&c, &s, PL_SCRAM_SHA256, "alice");
    expect(&c, SASL_FAIL("aborted"));
    if (scram_respond(&c, &s, "eve's password"))
        expect(&c, SASL_FAIL("not-authorized"));
    cl_close(&c);
    env_stop();
}

/* A storage job that holds the storage thread until released. */
static atomic_int gate_open;

static int gate_run(const struct pl_storage_driver *d, void *db, void *arg)
{
    for (int i = 0; i < 3000 && !atomic_load(&gate_open); i++)
        usleep(1000);
    return PL_OK;
}

/* Waits (without running the loop) until storage has nothing in flight. */
static void wait_storage_idle(void)
{
    for (int i = 0; i < 3000 && pl_storage_pending(); i++)
        usleep(1000);
}

/*
 * The same with the timing an attacker can arrange by keeping the storage
 * queue busy: eve's lookup completes, alice's is still queued, and eve
 * answers the challenge before alice's keys arrive.  The challenge must be
 * alice's, and eve's password must fail.
 */
void test_stream_sasl_abort_stale_race(void)
{
    env_start(NULL);
    add_user("alice", "alice's secret");
    add_user("eve", "eve's password");
    struct client c;
    struct scram s;
    cl_open(&c);
    cl_send(&c, OPEN);
    expect(&c, HDR FEAT_PRE);

    /* Eve's lookup waits behind a held storage thread. */
    atomic_store(&gate_open, 0);
    pl_storage_submit(E.loop, gate_run, NULL, NULL);
    scram_auth(&c, &s, PL_SCRAM_SHA256, "eve");
    cl_send(&c, "<abort xmlns='" NS_SASL "'/>");
    expect(&c, SASL_FAIL("aborted"));
    /* Queued for the server, read once the loop runs again. */
    scram_auth(&c, &s, PL_SCRAM_SHA256, "alice");
    /* Eve's lookup completes; its completion is posted, not run yet. */
    atomic_store(&gate_open, 1);
    wait_storage_idle();
    /* The next lookup (alice's) waits behind the held thread again. */
    atomic_store(&gate_open, 0);
    pl_storage_submit(E.loop, gate_run, NULL, NULL);
    /* The loop reads alice's <auth/>, then runs eve's completion. */
    uint64_t end = inproc_now_ms() + 200;
    while (!c.in.len && inproc_now_ms() < end)
        inproc_pump(&E, 20);
    int early = c.in.len > 0;
    if (early) {
        fprintf(stderr, "  a challenge came before alice's account was "
                        "read: eve's stale lookup answered alice's exchange\n");
        unit_failures++;
        if (scram_respond(&c, &s, "eve's password")) {
            end = inproc_now_ms() + 200;
            while (!c.in.len && inproc_now_ms() < end)
                inproc_pump(&E, 20);
        }
        if (c.in.len && strncmp(c.in.data + c.in.off, "<success", 8) == 0) {
            /* Show whose session eve got. */
            expect(&c, "<success xmlns='" NS_SASL "'>*</success>");
            cl_send(&c, OPEN "<iq type='set' id='b'><bind xmlns='" NS_BIND
                             "'/></iq>");
            const char *b = expect(&c, HDR FEAT_POST
                                   "<iq type='result' "
                                   "id='b'><bind xmlns='" NS_BIND "'><jid>*"
                                   "</jid></bind></iq>");
            fprintf(stderr, "  eve's password bound %s\n",
                    b ? strstr(b, "<jid>") : "?");
            unit_failures++;
            atomic_store(&gate_open, 1);
            cl_close(&c);
            env_stop();
            return;
        }
    }
    atomic_store(&gate_open, 1);
    if (!early)
        scram_respond(&c, &s, "eve's password");
    expect(&c, SASL_FAIL("not-authorized"));
    cl_close(&c);
    env_stop();
}

/* XEP-0077 in-band registration, then a SCRAM login with that password. */
void test_stream_sasl_inband_registered(void)
{
    env_start(NULL);
    struct client c;
    cl_open(&c);
    cl_send(&c, OPEN);
    expect(&c, HDR FEAT_PRE);
    cl_send(&c, "<iq type='set' id='reg1'><query xmlns='jabber:iq:register'>"
                "<username>bob</username><password>hunter2</password>"
                "</query></iq>");
    expect(&c, "<iq type='result' id='reg1'/>");
    struct scram s;
    scram_auth(&c, &s, PL_SCRAM_SHA1, "bob");
    if (scram_respond(&c, &s, "hunter2"))
        scram_success(&c, &s);
    cl_send(&c, OPEN);
    expect(&c, HDR FEAT_POST);
    bind_as(&c, "bob@localhost/phone", "phone");
    cl_close(&c);
    env_stop();
}

/* ---- binding ---- */

void test_stream_bind(void)
{
    env_start(NULL);
    add_user("alice", "correct horse");
    struct client c;

    /* Requested resource; the session is routable, its peer is local. */
    cl_open(&c);
    login_bind(&c, "alice", "correct horse", "balcony");
    struct pl_session *s = pl_session_by_full("alice@localhost/balcony");
    CHECK(s != NULL);
    if (s) {
        CHECK_STR(pl_session_ip(s), "local");
        CHECK_INT(pl_session_is_loopback(s), 1);
        CHECK_INT(pl_session_is_secure(s), 0);
    }
    /* Binding twice (RFC 6120 §7.7.2.1 allows one resource per stream). */
    cl_send(&c, "<iq type='set' id='b2'><bind xmlns='" NS_BIND
                "'><resource>other</resource></bind></iq>");
    expect(&c, "<iq type='error' id='b2'><bind xmlns='" NS_BIND
               "'><resource>other</resource></bind><error type='cancel'>"
               "<not-allowed xmlns='" NS_STANZAS "'/><text xmlns='" NS_STANZAS
               "'>already bound</text></error></iq>");
    cl_close(&c);

    /* The server's choice (§7.6.2.1). */
    cl_open(&c);
    login(&c, "alice", "correct horse");
    cl_send(&c, "<iq type='set' id='b1'><bind xmlns='" NS_BIND "'/></iq>");
    expect(&c, "<iq type='result' id='b1'><bind xmlns='" NS_BIND
               "'><jid>alice@localhost/parley-*</jid></bind></iq>");
    cl_close(&c);

    /* Invalid resources get bad-request (§7.7.2.1) and may be retried;
     * the stanza must come first. */
    char big[1100], req[1300];
    memset(big, 'r', 1024);
    big[1024] = '\0';
    const char *const bad[] = {"", "\xe2\x80\x8f\xd7\x90", big};
    cl_open(&c);
    login(&c, "alice", "correct horse");
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char want[1600];
        snprintf(req, sizeof(req),
                 "<iq type='set' id='b%zu'><bind xmlns='" NS_BIND
                 "'><resource>%s</resource></bind></iq>",
                 i, bad[i]);
        cl_send(&c, req);
        snprintf(want, sizeof(want),
                 "<iq type='error' id='b%zu'><bind xmlns='" NS_BIND
                 "'>%s%s%s</bind><error type='modify'><bad-request "
                 "xmlns='" NS_STANZAS "'/><text xmlns='" NS_STANZAS
                 "'>invalid resource</text></error></iq>",
                 i, bad[i][0] ? "<resource>" : "<resource/>", bad[i],
                 bad[i][0] ? "</resource>" : "");
        if (!expect(&c, want))
            fprintf(stderr, "  (bad resource %zu)\n", i);
    }
    bind_as(&c, "alice@localhost/ok", "ok");
    cl_close(&c);

    /* Authenticated but not bound: stanzas are refused. */
    cl_open(&c);
    login(&c, "alice", "correct horse");
    cl_send(&c, "<message to='alice@localhost'><body>x</body></message>");
    expect(&c, SERR_TEXT("not-authorized", "bind a resource first"));
    expect_eof(&c);
    cl_close(&c);
    env_stop();
}

/* A second stream binding the same full JID, per resource_conflict. */
void test_stream_bind_conflict(void)
{
    static const char *const policies[] = {"kick_old", "refuse", "rename"};
    for (size_t i = 0; i < 3; i++) {
        char extra[64];
        snprintf(extra, sizeof(extra), "resource_conflict = \"%s\";",
                 policies[i]);
        env_start(extra);
        add_user("alice", "correct horse");
        struct client a, b;
        cl_open(&a);
        login_bind(&a, "alice", "correct horse", "desk");
        cl_open(&b);
        login(&b, "alice", "correct horse");
        cl_send(&b, "<iq type='set' id='b2'><bind xmlns='" NS_BIND
                    "'><resource>desk</resource></bind></iq>");
        if (i == 0) {
            /* RFC 6120 §7.7.2.2: the old session ends with <conflict/>. */
            expect(&b, "<iq type='result' id='b2'><bind xmlns='" NS_BIND
                       "'><jid>alice@localhost/desk</jid></bind></iq>");
            expect(&a, SERR_TEXT("conflict", "replaced by a new session"));
            expect_eof(&a);
            struct pl_session *s = pl_session_by_full("alice@localhost/desk");
            CHECK(s != NULL && pl_session_first("alice@localhost") == s &&
                  s->next_res == NULL);
        } else if (i == 1) {
            expect(&b, "<iq type='error' id='b2'><bind xmlns='" NS_BIND
                       "'><resource>desk</resource></bind>"
                       "<error type='cancel'><conflict xmlns='" NS_STANZAS
                       "'/></error></iq>");
            expect_quiet(&a);
        } else {
            expect(&b, "<iq type='result' id='b2'><bind xmlns='" NS_BIND
                       "'><jid>alice@localhost/desk-*</jid></bind></iq>");
            expect_quiet(&a);
            CHECK(pl_session_by_full("alice@localhost/desk") != NULL);
        }
        cl_close(&a);
        cl_close(&b);
        env_stop();
    }
}

/* rename with a resource of the longest length: the renamed JID would be
 * too long, so the bind must fail with an error, not crash. */
void test_stream_bind_rename_long(void)
{
    env_start("resource_conflict = \"rename\";");
    add_user("alice", "correct horse");
    char res[1024], req[1200];
    memset(res, 'x', 1023);
    res[1023] = '\0';
    struct client a, b;
    cl_open(&a);
    login_bind(&a, "alice", "correct horse", res);
    cl_open(&b);
    login(&b, "alice", "correct horse");
    snprintf(req, sizeof(req),
             "<iq type='set' id='b2'><bind xmlns='" NS_BIND
             "'><resource>%s</resource></bind></iq>",
             res);
    cl_send(&b, req);
    expect(&b, "<iq type='error' id='b2'><bind xmlns='" NS_BIND
               "'><resource>*</resource></bind><error type='cancel'>"
               "<conflict xmlns='" NS_STANZAS "'/></error></iq>");
    expect_quiet(&a);
    cl_close(&a);
    cl_close(&b);
    env_stop();
}

/* ---- bound stanzas ---- */

/* RFC 6120 §8.2.3: malformed IQs get bad-request, the stream stays. */
void test_stream_bound_iq_errors(void)
{
    static const struct {
        const char *send, *want;
    } rows[] = {
        {"<iq type='get' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>",
         "<iq type='error'><ping xmlns='urn:xmpp:ping'/><error "
         "type='modify'><bad-request xmlns='" NS_STANZAS "'/></error></iq>"},
        {"<iq id='i2' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>",
         "<iq id='i2' type='error'><ping xmlns='urn:xmpp:ping'/><error "
         "type='modify'><bad-request xmlns='" NS_STANZAS "'/></error></iq>"},
        {"<iq type='fetch' id='i3'><ping xmlns='urn:xmpp:ping'/></iq>",
         "<iq type='error' id='i3'><ping xmlns='urn:xmpp:ping'/><error "
         "type='modify'><bad-request xmlns='" NS_STANZAS "'/></error></iq>"},
        {"<iq type='get' id='i4'/>",
         "<iq type='error' id='i4'><error type='modify'><bad-request "
         "xmlns='" NS_STANZAS "'/></error></iq>"},
        {"<iq type='get' id='i5'><a xmlns='urn:a'/><b xmlns='urn:b'/></iq>",
         "<iq type='error' id='i5'><a xmlns='urn:a'/><b xmlns='urn:b'/>"
         "<error type='modify'><bad-request xmlns='" NS_STANZAS
         "'/></error></iq>"},
        /* A 'to' that is not a JID. */
        {"<iq type='get' id='i6' to='a@b@c'><ping xmlns='urn:xmpp:ping'/>"
         "</iq>",
         "<iq type='error' id='i6'><ping xmlns='urn:xmpp:ping'/><error "
         "type='modify'><jid-malformed xmlns='" NS_STANZAS "'/></error></iq>"},
    };
    env_start(NULL);
    add_user("alice", "correct horse");
    struct client c;
    cl_open(&c);
    login_bind(&c, "alice", "correct horse", "balcony");
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        cl_send(&c, rows[i].send);
        if (!expect(&c, rows[i].want))
            fprintf(stderr, "  (row %zu)\n", i);
    }
    /* Still bound and working. */
    cl_send(&c, "<iq type='get' id='p1' to='localhost'>"
                "<ping xmlns='urn:xmpp:ping'/></iq>");
    expect(&c, "<iq type='result' id='p1' from='localhost' "
               "to='alice@localhost/balcony'/>");
    cl_close(&c);
    env_stop();
}

/* XEP-0199 ping to the server, an unknown IQ, a message to oneself with
 * 'from' stamped by the server (RFC 6120 §8.1.2.1). */
void test_stream_bound_stanzas(void)
{
    env_start(NULL);
    add_user("alice", "correct horse");
    struct client c;
    cl_open(&c);
    login_bind(&c, "alice", "correct horse", "balcony");

    cl_send(&c, "<iq type='get' id='p1' to='localhost'>"
                "<ping xmlns='urn:xmpp:ping'/></iq>");
    expect(&c, "<iq type='result' id='p1' from='localhost' "
               "to='alice@localhost/balcony'/>");
    /* Nobody handles this namespace (RFC 6120 §8.4). */
    cl_send(&c, "<iq type='get' id='u1' to='localhost'>"
                "<query xmlns='urn:example:nothing'/></iq>");
    expect(&c, "<iq type='error' id='u1' to='alice@localhost/balcony' "
               "from='localhost'><query "
               "xmlns='urn:example:nothing'/><error type='cancel'>"
               "<service-unavailable xmlns='" NS_STANZAS "'/></error></iq>");

    /* A forged 'from' is replaced by the full JID, a missing one added. */
    cl_send(&c, "<message from='mallory@evil.example/x' "
                "to='alice@localhost/balcony' type='chat' id='m1'>"
                "<body>hi me</body></message>");
    expect(&c, "<message from='alice@localhost/balcony' "
               "to='alice@localhost/balcony' type='chat' id='m1'>"
               "<body>hi me</body></message>");
    cl_send(&c, "<message to='Alice@LOCALHOST/balcony' id='m2'>"
                "<body>again</body></message>");
    expect(&c, "<message to='alice@localhost/balcony' id='m2' "
               "from='alice@localhost/balcony'><body>again</body>"
               "</message>");
    expect_quiet(&c);

    /* A clean close ends the session. */
    cl_send(&c, "</stream:stream>");
    expect(&c, "</stream:stream>");
    expect_eof(&c);
    inproc_pump(&E, 5);
    CHECK(pl_session_by_full("alice@localhost/balcony") == NULL);
    cl_close(&c);
    env_stop();
}

/* XEP-0198 on one stream: enable, counting, acks, the errors of §3/§4. */
void test_stream_sm(void)
{
#define SM_NS "urn:xmpp:sm:3"
    env_start(NULL);
    add_user("alice", "correct horse");
    struct client c;
    cl_open(&c);
    login_bind(&c, "alice", "correct horse", "balcony");
    cl_send(&c, "<a xmlns='" SM_NS "' h='0'/><r xmlns='" SM_NS "'/>");
    expect_quiet(&c); /* acks before <enable/> mean nothing */
    cl_send(&c, "<enable xmlns='" SM_NS "'/>");
    expect(&c, "<enabled xmlns='" SM_NS "'/>");
    cl_send(&c, "<iq type='get' id='p1' to='localhost'>"
                "<ping xmlns='urn:xmpp:ping'/></iq>");
    /* The server asks for an ack after what it sent. */
    expect(&c, "<iq type='result' id='p1' from='localhost' "
               "to='alice@localhost/balcony'/><r xmlns='" SM_NS "'/>");
    cl_send(&c, "<iq type='get' id='p2' to='localhost'>"
                "<ping xmlns='urn:xmpp:ping'/></iq>");
    /* One request at a time: no second <r/> before an <a/>. */
    expect(&c, "<iq type='result' id='p2' from='localhost' "
               "to='alice@localhost/balcony'/>");
    expect_quiet(&c);
    cl_send(&c, "<r xmlns='" SM_NS "'/>");
    expect(&c, "<a xmlns='" SM_NS "' h='2'/>");
    /* Acking one of two: the server asks again for the rest. */
    cl_send(&c, "<a xmlns='" SM_NS "' h='1'/>");
    expect(&c, "<r xmlns='" SM_NS "'/>");
    cl_send(&c, "<enable xmlns='" SM_NS "'/>");
    expect(&c, "<failed xmlns='" SM_NS
               "'><unexpected-request xmlns='" NS_STANZAS "'/></failed>");
    cl_send(&c, "<a xmlns='" SM_NS "' h='3'/>");
    expect(&c, "<stream:error><undefined-condition xmlns='"
               "urn:ietf:params:xml:ns:xmpp-streams'/><handled-count-too-high"
               " xmlns='" SM_NS "' h='3' send-count='2'/></stream:error>"
               "</stream:stream>");
    expect_eof(&c);
    cl_close(&c);
    env_stop();
#undef SM_NS
}

/* ---- deadlines (the core's, conn.h; c2s says how a stream ends) ---- */

#define SM_NS "urn:xmpp:sm:3"
#define TIMEOUT_ERR SERR_TEXT("connection-timeout", "handshake took too long")

/* Runs the loop for ms. */
static void pass_ms(unsigned ms)
{
    uint64_t end = inproc_now_ms() + ms;
    while (inproc_now_ms() < end)
        inproc_pump(&E, 20);
}

/* Sends a ping and expects its answer to jid. */
static void ping_ok(struct client *c, const char *jid)
{
    char want[300];
    cl_send(c, "<iq type='get' id='alive' to='localhost'>"
               "<ping xmlns='urn:xmpp:ping'/></iq>");
    snprintf(want, sizeof(want),
             "<iq type='result' id='alive' from='localhost' to='%s'/>", jid);
    expect(c, want);
}

/*
 * limits.handshake_timeout = 1: a silent connection and one that stopped
 * after the header get <connection-timeout/> (our header first when none
 * was sent, RFC 6120 §4.9.1.2); a stream bound in time is not touched.
 */
void test_stream_handshake_timeout(void)
{
    env_start_limits(NULL, "handshake_timeout = 1;");
    add_user("alice", "correct horse");
    struct client bound, silent, half;
    cl_open(&bound);
    login_bind(&bound, "alice", "correct horse", "desk");
    uint64_t t0 = inproc_now_ms();
    cl_open(&silent);
    cl_open(&half);
    cl_send(&half, OPEN);
    expect(&half, HDR FEAT_PRE);
    expect_within(&silent, HDR TIMEOUT_ERR, 5000);
    CHECK(inproc_now_ms() - t0 >= 900);
    expect_eof(&silent);
    expect_within(&half, TIMEOUT_ERR, 5000);
    expect_eof(&half);
    /* Its own deadline passed earlier: binding ended it. */
    CHECK(!bound.eof && bound.in.len == 0);
    ping_ok(&bound, "alice@localhost/desk");
    cl_close(&bound);
    cl_close(&silent);
    cl_close(&half);
    env_stop();
}

/*
 * XEP-0198 resumption moves a new connection into a bound session: that
 * connection is established too, whether the old one had gone (the
 * session hibernated) or was still open (it gets <conflict/>).
 */
void test_stream_resume_established(void)
{
    env_start_limits(NULL, "handshake_timeout = 1;");
    add_user("alice", "correct horse");
    struct client old, next;
    for (int still_open = 0; still_open < 2; still_open++) {
        cl_open(&old);
        login_bind(&old, "alice", "correct horse", "desk");
        cl_send(&old, "<enable xmlns='" SM_NS "' resume='true'/>");
        const char *en = expect(&old, "<enabled xmlns='" SM_NS "' id='*' "
                                      "resume='true' max='*'/>");
        char id[64] = "";
        const char *p = en ? strstr(en, "id='") : NULL;
        if (p)
            snprintf(id, sizeof(id), "%.*s", (int)strcspn(p + 4, "'"), p + 4);
        if (!still_open) {
            cl_close(&old);
            pass_ms(100); /* the server notices: the session hibernates */
        }
        cl_open(&next);
        uint64_t t0 = inproc_now_ms();
        login(&next, "alice", "correct horse");
        char resume[200], resumed[200];
        snprintf(resume, sizeof(resume),
                 "<resume xmlns='" SM_NS "' previd='%s' h='0'/>", id);
        snprintf(resumed, sizeof(resumed),
                 "<resumed xmlns='" SM_NS "' h='0' previd='%s'/>", id);
        cl_send(&next, resume);
        expect(&next, resumed);
        if (still_open) {
            expect(&old, SERR_TEXT("conflict",
                                   "session resumed on another connection"));
            expect_eof(&old);
            cl_close(&old);
        }
        /* Past the handshake deadline of the new connection. */
        uint64_t spent = inproc_now_ms() - t0;
        pass_ms(spent < 1500 ? (unsigned)(1500 - spent) : 0);
        CHECK(!next.eof);
        ping_ok(&next, "alice@localhost/desk");
        cl_close(&next);
        pass_ms(50);
    }
    env_stop();
}
#undef SM_NS
