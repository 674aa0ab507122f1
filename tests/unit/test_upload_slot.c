/*
 * test_upload_slot.c - XEP-0363 slot tokens (src/modules/upload/slot.c):
 * what one signs verifies with the same key and decodes to the same
 * fields; another key, a changed byte of the payload or of the MAC is
 * PL_EFORBIDDEN; a malformed token (no '.', bad base64url, a missing or
 * extra field, a field longer than the slot holds, a size with a sign, a
 * version other than 1, an over-long token) is PL_EINVAL, both to peek
 * and to verify; file ids are 24 base64url characters.
 *
 * Extending: a malformed form is a row of bad_payloads.
 */
#include <stdio.h>
#include <string.h>

#include "modules/upload/upload.h"
#include "unit.h"

static const unsigned char key1[32] = "0123456789abcdef0123456789abcdef";
static const unsigned char key2[32] = "fedcba9876543210fedcba9876543210";

static void sample(struct upload_slot *s)
{
    memset(s, 0, sizeof(*s));
    snprintf(s->host, sizeof(s->host), "example.org");
    pl__upload_new_id(s->id);
    snprintf(s->name, sizeof(s->name), "r\xc3\xa9sum\xc3\xa9 (1).pdf");
    snprintf(s->type, sizeof(s->type), "application/pdf");
    snprintf(s->owner, sizeof(s->owner), "alice@example.org");
    s->size = 123456789012ULL;
    s->expires = 1893456000;
}

static void same(const struct upload_slot *a, const struct upload_slot *b)
{
    CHECK_STR(a->host, b->host);
    CHECK_STR(a->id, b->id);
    CHECK_STR(a->name, b->name);
    CHECK_STR(a->type, b->type);
    CHECK_STR(a->owner, b->owner);
    CHECK(a->size == b->size);
    CHECK(a->expires == b->expires);
}

void test_upload_slot_roundtrip(void)
{
    struct upload_slot s, got;
    sample(&s);
    CHECK(pl__upload_is_id(pl_str_c(s.id)));
    struct pl_buf t = {0};
    pl__upload_slot_sign(&s, key1, &t);
    struct pl_str tok = pl_buf_str(&t);
    CHECK_INT(pl__upload_slot_peek(tok, &got), PL_OK);
    CHECK_STR(got.host, "example.org");
    CHECK_INT(pl__upload_slot_verify(tok, key1, &got), PL_OK);
    same(&s, &got);
    /* No character outside base64url and the one '.'. */
    size_t dots = 0;
    for (size_t i = 0; i < tok.len; i++) {
        char c = tok.p[i];
        dots += c == '.';
        CHECK((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
              (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.');
    }
    CHECK(dots == 1);
    /* An empty type (any) survives too. */
    s.type[0] = '\0';
    pl_buf_reset(&t);
    pl__upload_slot_sign(&s, key1, &t);
    CHECK_INT(pl__upload_slot_verify(pl_buf_str(&t), key1, &got), PL_OK);
    CHECK_STR(got.type, "");
    pl_buf_reset(&t);
}

void test_upload_slot_forged(void)
{
    struct upload_slot s, got;
    sample(&s);
    struct pl_buf t = {0};
    pl__upload_slot_sign(&s, key1, &t);
    struct pl_str tok = pl_buf_str(&t);
    CHECK_INT(pl__upload_slot_verify(tok, key2, &got), PL_EFORBIDDEN);
    char copy[4096];
    CHECK(tok.len < sizeof(copy));
    const char *dot = memchr(tok.p, '.', tok.len);
    CHECK(dot != NULL);
    size_t at = dot ? (size_t)(dot - tok.p) : 0;
    /* Every byte of the payload and of the MAC matters. */
    int all = 1;
    for (size_t i = 0; i < tok.len; i++) {
        if (i == at)
            continue;
        memcpy(copy, tok.p, tok.len);
        copy[i] = copy[i] == 'A' ? 'B' : 'A';
        int rc = pl__upload_slot_verify((struct pl_str){copy, tok.len}, key1,
                                        &got);
        if (rc == PL_OK) {
            fprintf(stderr, "  byte %zu changed still verifies\n", i);
            all = 0;
        }
    }
    CHECK(all);
    /* A MAC cut short, or longer. */
    CHECK_INT(pl__upload_slot_verify((struct pl_str){tok.p, tok.len - 1}, key1,
                                     &got),
              PL_EFORBIDDEN);
    memcpy(copy, tok.p, tok.len);
    copy[tok.len] = 'A';
    CHECK_INT(pl__upload_slot_verify((struct pl_str){copy, tok.len + 1}, key1,
                                     &got),
              PL_EFORBIDDEN);
    pl_buf_reset(&t);
}

/* base64url of s, unpadded, into out. */
static void b64url(const char *s, char *out)
{
    static const char a[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t n = strlen(s), o = 0;
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)p[i] << 16 | (i + 1 < n ? p[i + 1] << 8 : 0) |
                     (i + 2 < n ? p[i + 2] : 0);
        out[o++] = a[v >> 18 & 63];
        out[o++] = a[v >> 12 & 63];
        if (i + 1 < n)
            out[o++] = a[v >> 6 & 63];
        if (i + 2 < n)
            out[o++] = a[v & 63];
    }
    out[o] = '\0';
}

static const char *const bad_payloads[] = {
    "2\nexample.org\nAAAAAAAAAAAAAAAAAAAAAAAA\na\nt\no@x\n1\n2", /* version */
    "1\nexample.org\nAAAAAAAAAAAAAAAAAAAAAAAA\na\nt\no@x\n1",    /* 7 fields */
    "1\nexample.org\nAAAAAAAAAAAAAAAAAAAAAAAA\na\nt\no@x\n1\n2\n3", /* 9 */
    "1\nexample.org\nAAAAAAAAAAAAAAAAAAAAAAAA\na\nt\no@x\n-1\n2",   /* sign */
    "1\nexample.org\nAAAAAAAAAAAAAAAAAAAAAAAA\na\nt\no@x\n+1\n2",
    "1\nexample.org\nAAAAAAAAAAAAAAAAAAAAAAAA\na\nt\no@x\n1x\n2", /* digits */
    "1\nexample.org\nAAAAAAAAAAAAAAAAAAAAAAAA\na\nt\no@x\n\n2",   /* empty */
    "1\nexample.org\nAAAAAAAAAAAAAAAAAAAAAAAAA\na\nt\no@x\n1\n2", /* long id */
    "",
};

void test_upload_slot_malformed(void)
{
    struct upload_slot got;
    char tok[8192], pay[4096];
    for (size_t i = 0; i < sizeof(bad_payloads) / sizeof(bad_payloads[0]);
         i++) {
        b64url(bad_payloads[i], pay);
        snprintf(tok, sizeof(tok), "%s.%s", pay,
                 "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
        int rc = pl__upload_slot_peek(pl_str_c(tok), &got);
        if (rc != PL_EINVAL)
            fprintf(stderr, "  row %zu peeks as %d\n", i, rc);
        CHECK_INT(rc, PL_EINVAL);
        CHECK_INT(pl__upload_slot_verify(pl_str_c(tok), key1, &got), PL_EINVAL);
    }
    /* A well-formed payload, but no '.', or bad base64url before it. */
    b64url("1\nexample.org\nAAAAAAAAAAAAAAAAAAAAAAAA\na\nt\no@x\n1\n2", pay);
    CHECK_INT(pl__upload_slot_peek(pl_str_c(pay), &got), PL_EINVAL);
    snprintf(tok, sizeof(tok), "%s.AAAA", pay);
    CHECK_INT(pl__upload_slot_peek(pl_str_c(tok), &got), PL_OK);
    CHECK_STR(got.host, "example.org");
    tok[3] = '+'; /* base64, not base64url */
    CHECK_INT(pl__upload_slot_peek(pl_str_c(tok), &got), PL_EINVAL);
    CHECK_INT(pl__upload_slot_peek(pl_str_c("A.AAAA"), &got), PL_EINVAL);
    /* A host longer than a slot holds. */
    char longhost[600];
    memset(longhost, 'h', sizeof(longhost) - 1);
    longhost[sizeof(longhost) - 1] = '\0';
    snprintf(tok, sizeof(tok),
             "1\n%s\nAAAAAAAAAAAAAAAAAAAAAAAA\na\nt\no@x\n1\n2", longhost);
    b64url(tok, pay);
    snprintf(tok, sizeof(tok), "%s.AAAA", pay);
    CHECK_INT(pl__upload_slot_peek(pl_str_c(tok), &got), PL_EINVAL);
    /* An over-long token. */
    memset(tok, 'A', 5000);
    tok[5000] = '.';
    tok[5001] = '\0';
    CHECK_INT(pl__upload_slot_peek(pl_str_c(tok), &got), PL_EINVAL);
}

void test_upload_slot_ids(void)
{
    char a[PL_UPLOAD_ID_LEN + 1], b[PL_UPLOAD_ID_LEN + 1];
    pl__upload_new_id(a);
    pl__upload_new_id(b);
    CHECK_INT((int)strlen(a), PL_UPLOAD_ID_LEN);
    CHECK(strcmp(a, b) != 0);
    CHECK(pl__upload_is_id(pl_str_c(a)));
    CHECK(!pl__upload_is_id(pl_str_c("short")));
    a[3] = '/';
    CHECK(!pl__upload_is_id(pl_str_c(a)));
    a[3] = '.';
    CHECK(!pl__upload_is_id(pl_str_c(a)));
}
