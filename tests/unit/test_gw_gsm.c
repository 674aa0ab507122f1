/*
 * test_gw_gsm.c - the GSM 7-bit alphabet, packing, UCS-2 fallback and
 * concatenation limits (153 septets / 67 UCS-2 units per part).
 */
#include <stdint.h>
#include <stdlib.h>

#include "../../src/core/error.h"
#include "../../src/gateway/sms/gsm.h"
#include "unit.h"

void test_gw_gsm_alphabet(void)
{
    uint8_t s[32];
    size_t n = 0;
    /* Basic table, extension table (two septets each), CR/LF. */
    CHECK_INT(pl_gsm_septets("@£$", 4, s, sizeof(s), &n), PL_OK);
    CHECK_INT(n, 3);
    CHECK_INT(s[0], 0x00);
    CHECK_INT(s[1], 0x01);
    CHECK_INT(s[2], 0x02);
    CHECK_INT(pl_gsm_septets("€{", 4, s, sizeof(s), &n), PL_OK);
    CHECK_INT(n, 4);
    CHECK_INT(s[0], 0x1B);
    CHECK_INT(s[1], 0x65);
    CHECK_INT(s[2], 0x1B);
    CHECK_INT(s[3], 0x28);
    CHECK_INT(pl_gsm_char(0x65, 1), 0x20AC);
    CHECK_INT(pl_gsm_char(0x1B, 0), -1);
    CHECK_INT(pl_gsm_char(0x10, 0), 0x0394); /* Δ */
    /* Not in the alphabet: Cyrillic, emoji; invalid UTF-8. */
    CHECK_INT(pl_gsm_septets("Я", 2, s, sizeof(s), &n), PL_EINVAL);
    CHECK_INT(pl_gsm_septets("\xC0\x80", 2, s, sizeof(s), &n), PL_EINVAL);
    /* Every basic code point maps back to its septet. */
    for (uint8_t i = 0; i < 128; i++) {
        long cp = pl_gsm_char(i, 0);
        if (cp < 0)
            continue;
        char u[4];
        size_t l;
        if (cp < 0x80) {
            u[0] = (char)cp, l = 1;
        } else if (cp < 0x800) {
            u[0] = (char)(0xC0 | (cp >> 6));
            u[1] = (char)(0x80 | (cp & 0x3F)), l = 2;
        } else {
            u[0] = (char)(0xE0 | (cp >> 12));
            u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
            u[2] = (char)(0x80 | (cp & 0x3F)), l = 3;
        }
        CHECK_INT(pl_gsm_septets(u, l, s, sizeof(s), &n), PL_OK);
        CHECK_INT(n, 1);
        CHECK_INT(s[0], i);
    }
}

void test_gw_gsm_pack(void)
{
    /* TS 23.038 §6.1.2.1.1's classic: "hellohello" packs to
     * E8 32 9B FD 46 97 D9 EC 37. */
    static const uint8_t want[] = {0xE8, 0x32, 0x9B, 0xFD, 0x46,
                                   0x97, 0xD9, 0xEC, 0x37};
    uint8_t s[16], o[16];
    size_t n = 0;
    CHECK_INT(pl_gsm_septets("hellohello", 10, s, sizeof(s), &n), PL_OK);
    CHECK_INT(pl_gsm_pack(s, n, o), sizeof(want));
    CHECK(memcmp(o, want, sizeof(want)) == 0);
    uint8_t udh[6];
    pl_gsm_udh(udh, 0x42, 3, 2);
    CHECK(memcmp(udh, "\x05\x00\x03\x42\x03\x02", 6) == 0);
}

static char *repeat(const char *unit, size_t n)
{
    size_t l = strlen(unit);
    char *s = malloc(l * n + 1);
    for (size_t i = 0; i < n; i++)
        memcpy(s + i * l, unit, l);
    s[l * n] = '\0';
    return s;
}

void test_gw_gsm_split(void)
{
    struct pl_gsm_plan p;
    char *t = repeat("a", 160);
    CHECK_INT(pl_gsm_plan(t, 160, 10, &p), PL_OK);
    CHECK_INT(p.coding, PL_GSM_7BIT);
    CHECK_INT(p.nparts, 1);
    pl_gsm_plan_free(&p);
    free(t);
    /* 161 septets: two parts of 153 and 8. */
    t = repeat("a", 161);
    CHECK_INT(pl_gsm_plan(t, 161, 10, &p), PL_OK);
    CHECK_INT(p.nparts, 2);
    CHECK_INT(p.parts[0].units, 153);
    CHECK_INT(p.parts[1].units, 8);
    CHECK_INT(p.parts[1].off, 153);
    pl_gsm_plan_free(&p);
    free(t);
    /* An extension character never straddles two parts: 152 'a' then
     * '€' (2 septets) cannot fit the first part's last septet. */
    char *a = repeat("a", 152);
    char buf[400];
    snprintf(buf, sizeof(buf), "%s€bbbbbbbbbb", a);
    free(a);
    CHECK_INT(pl_gsm_plan(buf, strlen(buf), 10, &p), PL_OK);
    CHECK_INT(p.nparts, 2);
    CHECK_INT(p.parts[0].units, 152);
    CHECK_INT(p.parts[1].units, 12);
    pl_gsm_plan_free(&p);
    /* UCS-2: 70 in one, 71 in two (67 + 4). */
    t = repeat("Я", 70);
    CHECK_INT(pl_gsm_plan(t, strlen(t), 10, &p), PL_OK);
    CHECK_INT(p.coding, PL_GSM_UCS2);
    CHECK_INT(p.nparts, 1);
    pl_gsm_plan_free(&p);
    free(t);
    t = repeat("Я", 71);
    CHECK_INT(pl_gsm_plan(t, strlen(t), 10, &p), PL_OK);
    CHECK_INT(p.nparts, 2);
    CHECK_INT(p.parts[0].units, 67);
    CHECK_INT(p.parts[0].len, 67 * 2);
    CHECK_INT(p.parts[1].units, 4);
    pl_gsm_plan_free(&p);
    free(t);
    /* One non-GSM character switches the whole text to UCS-2; surrogate
     * pairs stay whole (66 'x' then an emoji: 68 units, 2 parts). */
    a = repeat("x", 66);
    snprintf(buf, sizeof(buf), "%s\xF0\x9F\x98\x80", a);
    free(a);
    CHECK_INT(pl_gsm_plan(buf, strlen(buf), 10, &p), PL_OK);
    CHECK_INT(p.coding, PL_GSM_UCS2);
    CHECK_INT(p.units, 68);
    CHECK_INT(p.nparts, 1);
    pl_gsm_plan_free(&p);
    a = repeat("x", 66);
    snprintf(buf, sizeof(buf), "%s\xF0\x9F\x98\x80yyyy", a);
    free(a);
    CHECK_INT(pl_gsm_plan(buf, strlen(buf), 10, &p), PL_OK);
    CHECK_INT(p.nparts, 2);
    CHECK_INT(p.parts[0].units, 66);
    CHECK_INT(p.parts[1].units, 6);
    pl_gsm_plan_free(&p);
    /* Limits: max_parts, empty and invalid text. */
    t = repeat("a", 153 * 3 + 1);
    struct pl_gsm_plan keep = {.nparts = 99};
    CHECK_INT(pl_gsm_plan(t, strlen(t), 3, &keep), PL_ELIMIT);
    CHECK_INT(keep.nparts, 99);
    CHECK_INT(pl_gsm_plan(t, strlen(t), 4, &p), PL_OK);
    CHECK_INT(p.nparts, 4);
    pl_gsm_plan_free(&p);
    free(t);
    CHECK_INT(pl_gsm_plan("", 0, 3, &keep), PL_EINVAL);
    CHECK_INT(pl_gsm_plan("a\xFF", 2, 3, &keep), PL_EINVAL);
}
