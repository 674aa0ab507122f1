/*
 * fuzz_common.c - the server, its accounts and the SCRAM client side of
 * the in-process fuzz targets; see fuzz_common.h.
 */
#include "fuzz_common.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "alloc.h"
#include "error.h"
#include "hook.h"
#include "host.h"
#include "loop.h"
#include "storage.h"

#define NS_SASL "urn:ietf:params:xml:ns:xmpp-sasl"

const struct fuzz_user fuzz_users[FUZZ_NUSERS] = {{"alice", "wonderland"},
                                                  {"bob", "builder"}};

static struct {
    struct inproc *e;                    /* the target's server */
    struct pl_account acct[FUZZ_NUSERS]; /* keys of fuzz_users, derived once */
} F;

/* ---- the server ---- */

static void remove_dir(void)
{
    inproc_remove_dir(F.e);
}

void fuzz_server_start(struct inproc *e, const char *log_env, const char *extra)
{
    signal(SIGPIPE, SIG_IGN); /* as parleyd does */
    F.e = e;
    atexit(remove_dir);
    /* Hibernated sessions are ended after each input, so
     * sm_resume_timeout keeps its default. */
    inproc_start(
        e, getenv(log_env) ? PL_LOG_DEBUG : INPROC_SILENT,
        "hosts = ( { domain = \"localhost\"; } );\n"
        "limits: { read_rate = 1073741824; read_burst = 1073741824; };\n"
        "c2s: { require_encryption = false; scram_iterations = %d; "
        "auth_failures_per_ip = 1000000; auth_failure_window = 1; };\n"
        "register: { policy = \"open\"; per_ip_per_minute = 1000000; "
        "};\n%s",
        FUZZ_ITER, extra);
    for (size_t i = 0; i < FUZZ_NUSERS; i++) {
        struct pl_str pw = pl_str_c(fuzz_users[i].password);
        inproc_need(e,
                    pl_scram_derive(PL_SCRAM_SHA1, pw, NULL, 0, FUZZ_ITER,
                                    &F.acct[i].keys[PL_SCRAM_SHA1]) == PL_OK &&
                        pl_scram_derive(PL_SCRAM_SHA256, pw, NULL, 0, FUZZ_ITER,
                                        &F.acct[i].keys[PL_SCRAM_SHA256]) ==
                            PL_OK,
                    "deriving keys");
    }
    fuzz_reset_accounts(e, NULL);
}

void fuzz_settle(struct inproc *e, const unsigned long *received,
                 const char *what)
{
    uint64_t deadline = inproc_now_ms() + FUZZ_TIME_LIMIT_MS;
    int quiet = 0;
    while (quiet < 3) {
        unsigned long before = received ? *received : 0;
        int was_busy = inproc_busy(e);
        inproc_pump(e, 0);
        if (was_busy)
            usleep(100); /* the storage or CPU thread works */
        if ((received && *received != before) || was_busy || inproc_busy(e))
            quiet = 0;
        else
            quiet++;
        if (inproc_now_ms() > deadline) {
            fprintf(stderr,
                    "%s: invariant violated: the server did not go quiet\n"
                    "  %s\n",
                    e->name, what);
            abort();
        }
    }
}

/* ---- accounts ---- */

struct reset {
    struct pl_buf names; /* accounts found, NUL-separated */
};

static void collect_user(const char *user, void *ud)
{
    struct pl_buf *b = ud;
    pl_buf_append(b, user, strlen(user) + 1);
}

static int reset_run(const struct pl_storage_driver *d, void *db, void *arg)
{
    struct reset *r = arg;
    int rc = d->account_list(db, "localhost", collect_user, &r->names);
    if (rc != PL_OK)
        return rc;
    for (size_t off = 0; off < r->names.len;) {
        const char *u = r->names.data + r->names.off + off;
        off += strlen(u) + 1;
        rc = d->account_delete(db, "localhost", u);
        if (rc != PL_OK)
            return rc;
    }
    for (size_t i = 0; i < FUZZ_NUSERS; i++) {
        rc = d->account_create(db, "localhost", fuzz_users[i].user, &F.acct[i]);
        if (rc != PL_OK)
            return rc;
    }
    return PL_OK;
}

static void reset_done(int rc, void *arg)
{
    struct reset *r = arg;
    if (rc != PL_OK) {
        fprintf(stderr, "%s: resetting the accounts: %d\n", F.e->name, rc);
        abort();
    }
    for (size_t off = 0; off < r->names.len;) {
        char *u = r->names.data + r->names.off + off;
        off += strlen(u) + 1;
        struct pl_event ev = {"user/deleted",
                              pl_host_find("localhost"),
                              NULL,
                              NULL,
                              NULL,
                              NULL,
                              u};
        pl_hook_fire(&ev);
    }
    pl_buf_reset(&r->names);
    pl_free(r);
}

void fuzz_reset_accounts(struct inproc *e, const unsigned long *received)
{
    struct reset *r = pl_calloc(1, sizeof(*r));
    pl_storage_submit(e->loop, reset_run, reset_done, r);
    fuzz_settle(e, received, "resetting the accounts");
}

/* ---- tokens ---- */

static int starts(struct pl_str s, const char *prefix)
{
    size_t n = strlen(prefix);
    return s.len >= n && memcmp(s.p, prefix, n) == 0;
}

size_t fuzz_token(struct pl_str rest, struct pl_str challenge,
                  const char *previd, struct pl_buf *dst)
{
    static const struct {
        const char *token;
        enum pl_scram_hash h;
    } scram[] = {{"{scram1}", PL_SCRAM_SHA1}, {"{scram256}", PL_SCRAM_SHA256}};
    for (size_t i = 0; i < sizeof(scram) / sizeof(scram[0]); i++)
        if (starts(rest, scram[i].token)) {
            fuzz_scram_final(challenge, scram[i].h, fuzz_users[0].user,
                             fuzz_users[0].password, dst);
            return strlen(scram[i].token);
        }
    if (starts(rest, "{previd}")) {
        pl_buf_append_str(dst, previd);
        return strlen("{previd}");
    }
    return 0;
}

/* ---- the SCRAM client side ---- */

/* The text between the last <challenge ...> of out and its end tag. */
static int last_challenge(struct pl_str out, struct pl_buf *decoded)
{
    static const char open[] = "<challenge xmlns='" NS_SASL "'>";
    const char *found = NULL;
    for (const char *p = out.p; p && p < out.p + out.len;) {
        p = memmem(p, (size_t)(out.p + out.len - p), open, sizeof(open) - 1);
        if (p)
            found = p++;
    }
    if (!found)
        return PL_ENOT_FOUND;
    const char *s = found + sizeof(open) - 1;
    const char *e = memmem(s, (size_t)(out.p + out.len - s), "</", 2);
    if (!e)
        return PL_ENOT_FOUND;
    return pl_base64_decode((struct pl_str){s, (size_t)(e - s)}, decoded);
}

/* Value of attribute k in a SCRAM message, or NULL. */
static char *scram_attr(const char *msg, char k)
{
    for (const char *p = msg; p; p = strchr(p, ','), p = p ? p + 1 : NULL)
        if (p[0] == k && p[1] == '=') {
            const char *e = strchr(p, ',');
            return pl_strndup(p + 2, e ? (size_t)(e - p - 2) : strlen(p + 2));
        }
    return NULL;
}

/* SaltedPassword (RFC 5802 §3), PBKDF2 once per hash, password, salt and
 * count: the accounts keep theirs between inputs. */
static const unsigned char *salted_password(enum pl_scram_hash h,
                                            const char *pw,
                                            const struct pl_buf *salt,
                                            long iters)
{
    static struct {
        char pw[64];              /* the password */
        unsigned char salt[64];   /* as received */
        size_t salt_len;          /* its length, 0: empty slot */
        long iters;               /* PBKDF2 rounds */
        unsigned char salted[64]; /* SaltedPassword */
    } cache[PL_SCRAM_NHASH];
    if (salt->len > sizeof(cache[h].salt) || strlen(pw) >= sizeof(cache[h].pw))
        return NULL;
    const unsigned char *sp = (const unsigned char *)salt->data + salt->off;
    if (cache[h].salt_len != salt->len || cache[h].iters != iters ||
        strcmp(cache[h].pw, pw) != 0 ||
        memcmp(cache[h].salt, sp, salt->len) != 0) {
        const EVP_MD *md = h == PL_SCRAM_SHA1 ? EVP_sha1() : EVP_sha256();
        PKCS5_PBKDF2_HMAC(pw, (int)strlen(pw), sp, (int)salt->len, (int)iters,
                          md, (int)pl_scram_hash_len(h), cache[h].salted);
        memcpy(cache[h].salt, sp, salt->len);
        cache[h].salt_len = salt->len;
        cache[h].iters = iters;
        strcpy(cache[h].pw, pw);
    }
    return cache[h].salted;
}

void fuzz_scram_final(struct pl_str out, enum pl_scram_hash h, const char *user,
                      const char *password, struct pl_buf *dst)
{
    struct pl_buf sfirst = {0}, salt = {0}, am = {0}, final = {0};
    char *r = NULL, *s = NULL, *i = NULL;
    if (last_challenge(out, &sfirst) != PL_OK)
        goto fallback;
    const char *sf = pl_buf_cstr(&sfirst);
    r = scram_attr(sf, 'r');
    s = scram_attr(sf, 's');
    i = scram_attr(sf, 'i');
    long iters = i ? strtol(i, NULL, 10) : 0;
    if (!r || !s || iters < 1 || iters > 100000 ||
        pl_base64_decode(pl_str_c(s), &salt) != PL_OK)
        goto fallback;
    const unsigned char *salted = salted_password(h, password, &salt, iters);
    if (!salted)
        goto fallback;
    const EVP_MD *md = h == PL_SCRAM_SHA1 ? EVP_sha1() : EVP_sha256();
    size_t hl = pl_scram_hash_len(h);
    unsigned char ck[64], stored[64], sig[64], proof[64];
    unsigned int n;
    HMAC(md, salted, (int)hl, (const unsigned char *)"Client Key", 10, ck, &n);
    EVP_Digest(ck, hl, stored, NULL, md, NULL);
    pl_buf_printf(&am, "n=%s,r=" FUZZ_SCRAM_CNONCE ",%s,c=biws,r=%s", user, sf,
                  r);
    HMAC(md, stored, (int)hl, (const unsigned char *)pl_buf_cstr(&am), am.len,
         sig, &n);
    for (size_t k = 0; k < hl; k++)
        proof[k] = ck[k] ^ sig[k];
    pl_buf_printf(&final, "c=biws,r=%s,p=", r);
    pl_base64_encode(proof, hl, &final);
    pl_base64_encode((const unsigned char *)pl_buf_cstr(&final), final.len,
                     dst);
    goto done;
fallback:
    pl_buf_append_str(dst, "Yz1iaXdzLHI9eCxwPXg="); /* c=biws,r=x,p=x */
done:
    pl_free(r);
    pl_free(s);
    pl_free(i);
    pl_buf_reset(&sfirst);
    pl_buf_reset(&salt);
    pl_buf_reset(&am);
    pl_buf_reset(&final);
}
