/*
 * binding.c - the registrar's rules as pure functions (no loop, no
 * sessions), RFC 3261 §10.3 steps 6 to 8: which binding a Contact
 * refreshes or removes, what expiry it gets, when a whole REGISTER is
 * refused.  registrar.c applies the plan; tests/unit/test_sip_reg.c
 * checks it.  API: sip_int.h ("Registration rules").
 *
 * Choices where RFC 3261 leaves one:
 *   - a request that would leave more than max_contacts bindings is
 *     refused whole with 403 (§10.3 commits all or nothing);
 *   - a Contact with a +sip.instance parameter (RFC 5626 §4.1) is matched
 *     on it, so a UA whose address changed replaces its old binding
 *     instead of adding one (without outbound's reg-id: one flow per
 *     instance);
 *   - an out-of-order refresh (same Call-ID, CSeq not higher) is 500:
 *     "the update MUST be aborted and the request fails" names no code.
 *
 * Extending: a new rule is a check in pl__sip_reg_plan before the counts,
 * with a case in the unit test.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "alloc.h"
#include "buf.h"
#include "sip_int.h"

long pl__sip_delta_seconds(const char *s)
{
    if (!s)
        return -1;
    while (*s == ' ' || *s == '\t')
        s++;
    if (*s == '"') /* a quoted expires parameter, as some UAs write it */
        s++;
    long long n = 0;
    int digits = 0;
    for (; *s >= '0' && *s <= '9'; s++) {
        n = n * 10 + (*s - '0');
        if (++digits > 10)
            return -1;
    }
    if (*s == '"')
        s++;
    while (*s == ' ' || *s == '\t')
        s++;
    if (!digits || *s)
        return -1;
    /* §20.19: a value past 2^32-1 is taken as 2^32-1. */
    return n > 4294967295LL ? 4294967295L : (long)n;
}

int pl__sip_reg_plan(const struct sip_reg_have *have, int nhave,
                     const struct sip_reg_want *want, int nwant, int star,
                     long hdr_expires, const char *call_id, uint32_t cseq,
                     const struct sip_reg_limits *lim, struct sip_reg_op *ops)
{
    if (star) {
        /* Step 6: "*" alone, with Expires: 0. */
        if (nwant || hdr_expires != 0)
            return 400;
        for (int i = 0; i < nhave; i++) {
            if (have[i].call_id && call_id &&
                strcmp(have[i].call_id, call_id) == 0 && cseq <= have[i].cseq)
                return 500;
            ops[i].have = i;
            ops[i].expires = 0;
        }
        return 200;
    }
    int count = nhave;
    for (int i = 0; i < nwant; i++) {
        ops[i].have = -1;
        long e = want[i].expires >= 0 ? want[i].expires
                 : hdr_expires >= 0   ? hdr_expires
                                      : lim->def;
        if (e > 0 && e < lim->min)
            return 423;
        ops[i].expires = e > lim->max ? lim->max : e;
        for (int k = 0; k < i; k++)
            if (strcmp(want[k].key, want[i].key) == 0)
                ops[i].have = -2;
        if (ops[i].have == -2)
            continue;
        for (int k = 0; k < nhave; k++)
            if (strcmp(have[k].key, want[i].key) == 0)
                ops[i].have = k;
        int h = ops[i].have;
        if (h >= 0) {
            /* Step 7: same Call-ID, the CSeq must have grown. */
            if (have[h].call_id && call_id &&
                strcmp(have[h].call_id, call_id) == 0 && cseq <= have[h].cseq)
                return 500;
            if (ops[i].expires == 0)
                count--;
        } else if (ops[i].expires > 0) {
            count++;
        }
    }
    if (count > nhave && count > lim->max_contacts)
        return 403;
    return 200;
}

static void lower_into(struct pl_buf *b, const char *s)
{
    for (; s && *s; s++) {
        char c = *s >= 'A' && *s <= 'Z' ? (char)(*s + 32) : *s;
        pl_buf_append(b, &c, 1);
    }
}

char *pl__sip_contact_key(osip_contact_t *c)
{
    if (!c || !c->url)
        return NULL;
    struct pl_buf b = {0};
    osip_generic_param_t *inst = NULL;
    if (osip_contact_param_get_byname(c, "+sip.instance", &inst) == 0 && inst &&
        inst->gvalue && inst->gvalue[0]) {
        pl_buf_append(&b, "i:", 2);
        pl_buf_append(&b, inst->gvalue, strlen(inst->gvalue));
    } else {
        osip_uri_t *u = c->url;
        pl_buf_append(&b, "u:", 2);
        lower_into(&b, u->scheme ? u->scheme : "sip");
        pl_buf_append(&b, ":", 1);
        if (u->username) {
            pl_buf_append(&b, u->username, strlen(u->username));
            pl_buf_append(&b, "@", 1);
        }
        lower_into(&b, u->host);
        if (u->port && u->port[0]) {
            pl_buf_append(&b, ":", 1);
            pl_buf_append(&b, u->port, strlen(u->port));
        }
        osip_uri_param_t *tp = NULL;
        if (osip_uri_uparam_get_byname(u, "transport", &tp) == 0 && tp &&
            tp->gvalue) {
            pl_buf_append(&b, ";transport=", 11);
            lower_into(&b, tp->gvalue);
        }
    }
    char *out = pl_malloc(b.len + 1);
    memcpy(out, b.data + b.off, b.len);
    out[b.len] = '\0';
    pl_buf_reset(&b);
    return out;
}

void pl__sip_reg_resource(const char *key, char out[13])
{
    /* FNV-1a, 64 bits, folded to 32: a stable name, not a secret. */
    uint64_t h = 1469598103934665603ULL;
    for (const unsigned char *p = (const unsigned char *)key; *p; p++) {
        h ^= *p;
        h *= 1099511628211ULL;
    }
    snprintf(out, 13, "sip-%08x", (unsigned)((h >> 32) ^ (h & 0xffffffffu)));
}
