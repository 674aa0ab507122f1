/*
 * gsm.c - GSM 7-bit default alphabet, UCS-2 and concatenated SMS
 * (gsm.h).
 *
 * The alphabet is a 128-entry table of code points (TS 23.038 §6.2.1) and
 * the extension table's ten characters (§6.2.1.1); encoding searches them
 * (texts are short; a reverse index would buy nothing measurable).
 * Splitting counts units character by character and cuts before the
 * character that would overflow the part, so a two-septet extension
 * character or a surrogate pair always stays whole.
 */
#include <string.h>

#include "alloc.h"
#include "error.h"
#include "gateway/sms/gsm.h"

/* TS 23.038 §6.2.1; 0x1B is the escape to the extension table. */
static const uint16_t basic[128] = {
    0x0040, 0x00A3, 0x0024, 0x00A5, 0x00E8, 0x00E9, 0x00F9, 0x00EC, 0x00F2,
    0x00C7, 0x000A, 0x00D8, 0x00F8, 0x000D, 0x00C5, 0x00E5, 0x0394, 0x005F,
    0x03A6, 0x0393, 0x039B, 0x03A9, 0x03A0, 0x03A8, 0x03A3, 0x0398, 0x039E,
    0xFFFF, 0x00C6, 0x00E6, 0x00DF, 0x00C9, 0x0020, 0x0021, 0x0022, 0x0023,
    0x00A4, 0x0025, 0x0026, 0x0027, 0x0028, 0x0029, 0x002A, 0x002B, 0x002C,
    0x002D, 0x002E, 0x002F, 0x0030, 0x0031, 0x0032, 0x0033, 0x0034, 0x0035,
    0x0036, 0x0037, 0x0038, 0x0039, 0x003A, 0x003B, 0x003C, 0x003D, 0x003E,
    0x003F, 0x00A1, 0x0041, 0x0042, 0x0043, 0x0044, 0x0045, 0x0046, 0x0047,
    0x0048, 0x0049, 0x004A, 0x004B, 0x004C, 0x004D, 0x004E, 0x004F, 0x0050,
    0x0051, 0x0052, 0x0053, 0x0054, 0x0055, 0x0056, 0x0057, 0x0058, 0x0059,
    0x005A, 0x00C4, 0x00D6, 0x00D1, 0x00DC, 0x00A7, 0x00BF, 0x0061, 0x0062,
    0x0063, 0x0064, 0x0065, 0x0066, 0x0067, 0x0068, 0x0069, 0x006A, 0x006B,
    0x006C, 0x006D, 0x006E, 0x006F, 0x0070, 0x0071, 0x0072, 0x0073, 0x0074,
    0x0075, 0x0076, 0x0077, 0x0078, 0x0079, 0x007A, 0x00E4, 0x00F6, 0x00F1,
    0x00FC, 0x00E0,
};

/* TS 23.038 §6.2.1.1: the extension table's characters (after ESC). */
static const struct {
    uint8_t code;
    uint16_t cp;
} ext[] = {
    {0x0A, 0x000C}, {0x14, 0x005E}, {0x28, 0x007B}, {0x29, 0x007D},
    {0x2F, 0x005C}, {0x3C, 0x005B}, {0x3D, 0x007E}, {0x3E, 0x005D},
    {0x40, 0x007C}, {0x65, 0x20AC},
};
#define NEXT (sizeof(ext) / sizeof(ext[0]))

long pl_gsm_char(uint8_t s, int is_ext)
{
    if (s > 0x7F)
        return -1;
    if (!is_ext)
        return basic[s] == 0xFFFF ? -1 : basic[s];
    for (size_t i = 0; i < NEXT; i++)
        if (ext[i].code == s)
            return ext[i].cp;
    return -1;
}

/* Septets for code point cp: 1 (*a), 2 (ESC, *a), or 0 if none. */
static int gsm_code(uint32_t cp, uint8_t *a)
{
    for (unsigned i = 0; i < 128; i++)
        if (basic[i] == cp && i != 0x1B) {
            *a = (uint8_t)i;
            return 1;
        }
    for (size_t i = 0; i < NEXT; i++)
        if (ext[i].cp == cp) {
            *a = ext[i].code;
            return 2;
        }
    return 0;
}

/* Decodes one UTF-8 character at p (n bytes left): its length, or 0 if
 * invalid (overlong, surrogate, beyond U+10FFFF, truncated). */
static size_t utf8_next(const unsigned char *p, size_t n, uint32_t *cp)
{
    if (n == 0)
        return 0;
    if (p[0] < 0x80) {
        *cp = p[0];
        return 1;
    }
    size_t len;
    uint32_t c, min;
    if ((p[0] & 0xE0) == 0xC0) {
        len = 2, c = p[0] & 0x1F, min = 0x80;
    } else if ((p[0] & 0xF0) == 0xE0) {
        len = 3, c = p[0] & 0x0F, min = 0x800;
    } else if ((p[0] & 0xF8) == 0xF0) {
        len = 4, c = p[0] & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xC0) != 0x80)
            return 0;
        c = (c << 6) | (p[i] & 0x3F);
    }
    if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
        return 0;
    *cp = c;
    return len;
}

int pl_gsm_septets(const char *text, size_t len, uint8_t *out, size_t cap,
                   size_t *n)
{
    const unsigned char *p = (const unsigned char *)text;
    size_t k = 0;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        size_t l = utf8_next(p + i, len - i, &cp);
        uint8_t a;
        int w = l ? gsm_code(cp, &a) : 0;
        if (!w)
            return PL_EINVAL;
        if (k + (size_t)w <= cap) {
            if (w == 2)
                out[k] = 0x1B;
            out[k + (size_t)w - 1] = a;
        }
        k += (size_t)w;
        i += l;
    }
    *n = k;
    return k > cap ? PL_ELIMIT : PL_OK;
}

size_t pl_gsm_pack(const uint8_t *septets, size_t n, uint8_t *out)
{
    size_t bytes = (7 * n + 7) / 8;
    memset(out, 0, bytes);
    for (size_t i = 0; i < n; i++) {
        size_t bit = 7 * i;
        unsigned v = septets[i] & 0x7F;
        out[bit / 8] |= (uint8_t)(v << (bit % 8));
        if (bit % 8 > 1)
            out[bit / 8 + 1] |= (uint8_t)(v >> (8 - bit % 8));
    }
    return bytes;
}

void pl_gsm_udh(uint8_t out[6], uint8_t ref, uint8_t total, uint8_t seq)
{
    out[0] = 5;    /* UDH length */
    out[1] = 0x00; /* IEI: concatenated SMS, 8-bit reference */
    out[2] = 3;    /* IE length */
    out[3] = ref;
    out[4] = total;
    out[5] = seq;
}

int pl_gsm_plan(const char *text, size_t len, unsigned max_parts,
                struct pl_gsm_plan *plan)
{
    const unsigned char *p = (const unsigned char *)text;
    if (len == 0 || max_parts == 0 || max_parts > PL_GSM_MAX_PARTS)
        return PL_EINVAL;
    /* First pass: validity, the coding and the total. */
    int gsm = 1;
    unsigned septets = 0, ucs2 = 0;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        size_t l = utf8_next(p + i, len - i, &cp);
        if (!l)
            return PL_EINVAL;
        uint8_t a;
        int w = gsm_code(cp, &a);
        if (!w)
            gsm = 0;
        septets += (unsigned)w;
        ucs2 += cp > 0xFFFF ? 2 : 1;
        i += l;
    }
    enum pl_gsm_coding coding = gsm ? PL_GSM_7BIT : PL_GSM_UCS2;
    unsigned total = gsm ? septets : ucs2;
    unsigned single = gsm ? 160 : 70, per = gsm ? 153 : 67;
    unsigned cap = total <= single ? single : per;
    /* Second pass: cut into parts of at most cap units. */
    struct pl_gsm_part *parts = NULL;
    unsigned n = 0;
    size_t start = 0;
    unsigned used = 0;
    for (size_t i = 0; i <= len;) {
        uint32_t cp = 0;
        size_t l = i < len ? utf8_next(p + i, len - i, &cp) : 0;
        unsigned w = 0;
        if (i < len) {
            uint8_t a;
            w = gsm ? (unsigned)gsm_code(cp, &a) : (cp > 0xFFFF ? 2u : 1u);
        }
        if (i == len || used + w > cap) {
            if (n == max_parts) {
                pl_free(parts);
                return PL_ELIMIT;
            }
            parts = pl_realloc(parts, (n + 1) * sizeof(*parts));
            parts[n].off = start;
            parts[n].len = i - start;
            parts[n].units = used;
            n++;
            if (i == len)
                break;
            start = i;
            used = 0;
        }
        used += w;
        i += l;
    }
    plan->coding = coding;
    plan->units = total;
    plan->nparts = n;
    plan->parts = parts;
    return PL_OK;
}

void pl_gsm_plan_free(struct pl_gsm_plan *plan)
{
    pl_free(plan->parts);
    plan->parts = NULL;
    plan->nparts = 0;
}
