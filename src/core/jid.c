/*
 * jid.c - parsing and normalization of XMPP addresses (RFC 7622).
 *
 * Purpose: turn untrusted bytes into a struct pl_jid whose parts are in
 * canonical form, so that the rest of the server compares JIDs with
 * strcmp().  Input is hostile by assumption (this is a fuzz target): any
 * byte string either yields a JID or PL_EJID_MALFORMED, never a crash.
 *
 * API (jid.h): pl_jid_parse(), pl_jid_make(), pl_jid_bare(), pl_jid_dup(),
 * pl_jid_free() and the part-wise pl_jid_prep_local(), pl_jid_prep_domain()
 * and pl_jid_prep_resource().
 *
 * What each part goes through:
 *   localpart   PRECIS UsernameCaseMapped (RFC 8265 §3.3): width mapping,
 *               toLowerCase, NFC, the Bidi Rule (RFC 5893), then the
 *               IdentifierClass (RFC 8264 §9) and the RFC 7622 §3.3.1
 *               exclusions " & ' / : < > @.
 *   domainpart  RFC 7622 §3.2: one trailing label separator dropped; an
 *               IPv4 literal or a bracketed IPv6 literal, both stored in
 *               inet_ntop() form, or else an IDNA2008 name checked by
 *               libidn2 (UTS #46 non-transitional mapping), whose A-label
 *               form must be letters, digits and hyphens, and which is
 *               stored as lowercase U-labels (A-labels are converted, as
 *               RFC 7622 §3.2.1 requires).
 *   resourcepart  PRECIS OpaqueString (RFC 8265 §4.2): non-ASCII spaces to
 *               U+0020, NFC, then the FreeformClass.
 * The mapping rules run before the class check, in the order of RFC 8264
 * §7, so fullwidth input is accepted in its mapped form.  The mappings are
 * then applied a second time and must change nothing: preparing an already
 * prepared part is the identity, so a stored JID parses back to itself.
 *
 * Memory: a struct pl_jid and its five strings are one pl_malloc() block.
 * libunistring and libidn2 allocate with malloc() internally; their results
 * are copied or freed here and never escape.
 *
 * How to extend: a new PRECIS profile is a struct profile (a map function,
 * the base class, whether the Bidi Rule applies, extra ASCII exclusions).
 * The derived property of RFC 8264 §9 lives in cp_class() and the
 * contextual rules of RFC 5892 Appendix A in context_ok(); keep their
 * steps in the order the RFCs give.
 */
#include "jid.h"

#include <arpa/inet.h>
#include <idn2.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unicase.h>
#include <unictype.h>
#include <uninorm.h>
#include <unistr.h>

#include "alloc.h"
#include "error.h"
#include "log.h"

/* RFC 7622 §3.1: every part is 1..1023 bytes once prepared. */
#define PART_MAX 1023

/*
 * Bound on a part before preparation.  No mapping used here shrinks text
 * by a factor of three or more (a fullwidth letter is three bytes, its
 * ASCII form one), apart from what IDNA maps to nothing, which a real name
 * does not carry by the kilobyte.  Refusing longer parts at once bounds the
 * work a peer can ask for.
 */
#define PART_RAW_MAX (4 * PART_MAX)

/* RFC 8264 §8 derived property values, as far as this file needs them. */
enum cp_prop {
    CP_PVALID,     /* allowed anywhere */
    CP_CONTEXTJ,   /* allowed if RFC 5892 A.1/A.2 holds */
    CP_CONTEXTO,   /* allowed if one of RFC 5892 A.3-A.9 holds */
    CP_DISALLOWED, /* refused (also UNASSIGNED) */
};

/* Rules 1-4 of RFC 8264 §7; returns a new pl_malloc'd array or NULL. */
typedef uint32_t *map_fn(const uint32_t *s, size_t n, size_t *outn);

struct profile {
    map_fn *map;        /* width, additional, case and normalization rules */
    int freeform;       /* FreeformClass rather than IdentifierClass */
    int bidi;           /* apply the RFC 5893 Bidi Rule */
    const char *forbid; /* further ASCII characters refused */
};

/* Facts about a whole string that contextual rules look at. */
struct context {
    int kana_han;          /* has a Hiragana, Katakana or Han character */
    int arabic_digits;     /* has one of U+0660..U+0669 */
    int ext_arabic_digits; /* has one of U+06F0..U+06F9 */
    const uc_script_t *greek;
    const uc_script_t *hebrew;
};

static int in_range(ucs4_t c, ucs4_t lo, ucs4_t hi)
{
    return c >= lo && c <= hi;
}

static int has_category(ucs4_t c, uint32_t mask)
{
    return uc_is_general_category_withtable(c, mask);
}

/* Takes ownership of r, a malloc()ed libunistring result. */
static uint32_t *own(uint32_t *r, size_t n)
{
    if (!r)
        return NULL;
    uint32_t *c = pl_malloc(n * sizeof(*c));
    memcpy(c, r, n * sizeof(*c));
    free(r);
    return c;
}

/* Valid UTF-8 of 1..max bytes, without NUL (which u8_check() accepts). */
static int is_text(const char *p, size_t n, size_t max)
{
    return p && n > 0 && n <= max && !memchr(p, '\0', n) &&
           !u8_check((const uint8_t *)p, n);
}

/* Decodes p[0..n) into a new array of code points. */
static int decode(const char *p, size_t n, uint32_t **out, size_t *outn)
{
    if (!is_text(p, n, PART_RAW_MAX))
        return PL_EJID_MALFORMED;
    const uint8_t *s = (const uint8_t *)p;
    uint32_t *u = pl_malloc(n * sizeof(*u));
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        ucs4_t c;
        i += (size_t)u8_mbtouc_unsafe(&c, s + i, n - i);
        u[k++] = c;
    }
    *out = u;
    *outn = k;
    return PL_OK;
}

/* UTF-8 encodes s[0..n) as a new string of 1..PART_MAX bytes. */
static int encode(const uint32_t *s, size_t n, char **out, size_t *outlen)
{
    size_t len = 0;
    for (size_t i = 0; i < n; i++)
        len += s[i] < 0x80 ? 1 : s[i] < 0x800 ? 2 : s[i] < 0x10000 ? 3 : 4;
    if (len == 0 || len > PART_MAX)
        return PL_EJID_MALFORMED;
    char *p = pl_malloc(len + 1);
    size_t off = 0;
    for (size_t i = 0; i < n; i++)
        off += (size_t)u8_uctomb((uint8_t *)p + off, s[i],
                                 (ptrdiff_t)(len - off));
    p[len] = '\0';
    *out = p;
    *outlen = len;
    return PL_OK;
}

/* RFC 8264 §9.17 HasCompat: toNFKC(cp) != cp. */
static int has_compat(ucs4_t c)
{
    ucs4_t d[UC_DECOMPOSITION_MAX_LENGTH];
    int tag;
    if (uc_decomposition(c, &tag, d) < 0)
        return 0;
    if (tag != UC_DECOMP_CANONICAL)
        return 1;
    /*
     * A canonical mapping can still differ under NFKC: singletons such as
     * U+212B do not recompose, and U+1E9B hides a compatibility mapping
     * one level down.  Ask NFKC itself.
     */
    uint32_t buf[UC_DECOMPOSITION_MAX_LENGTH];
    size_t len = UC_DECOMPOSITION_MAX_LENGTH;
    uint32_t *r = u32_normalize(UNINORM_NFKC, &c, 1, buf, &len);
    if (!r)
        return 1; /* out of memory: refusing is the safe answer */
    int differs = len != 1 || r[0] != c;
    if (r != buf)
        free(r);
    return differs;
}

/* RFC 8264 §9.9 OldHangulJamo: Hangul_Syllable_Type L, V or T. */
static int is_old_hangul_jamo(ucs4_t c)
{
    return in_range(c, 0x1100, 0x11ff) || in_range(c, 0xa960, 0xa97c) ||
           in_range(c, 0xd7b0, 0xd7c6) || in_range(c, 0xd7cb, 0xd7fb);
}

/* RFC 5892 §2.6, which RFC 8264 §9.6 adopts as its Exceptions. */
static const struct {
    ucs4_t lo, hi;     /* code point range */
    enum cp_prop prop; /* its fixed property */
} exceptions[] = {
    {0x00df, 0x00df, CP_PVALID},     /* LATIN SMALL LETTER SHARP S */
    {0x03c2, 0x03c2, CP_PVALID},     /* GREEK SMALL LETTER FINAL SIGMA */
    {0x06fd, 0x06fe, CP_PVALID},     /* ARABIC SIGN SINDHI AMPERSAND.. */
    {0x0f0b, 0x0f0b, CP_PVALID},     /* TIBETAN MARK INTERSYLLABIC TSHEG */
    {0x3007, 0x3007, CP_PVALID},     /* IDEOGRAPHIC NUMBER ZERO */
    {0x00b7, 0x00b7, CP_CONTEXTO},   /* MIDDLE DOT */
    {0x0375, 0x0375, CP_CONTEXTO},   /* GREEK LOWER NUMERAL SIGN */
    {0x05f3, 0x05f4, CP_CONTEXTO},   /* HEBREW PUNCTUATION GERESH.. */
    {0x30fb, 0x30fb, CP_CONTEXTO},   /* KATAKANA MIDDLE DOT */
    {0x0660, 0x0669, CP_CONTEXTO},   /* ARABIC-INDIC DIGITS */
    {0x06f0, 0x06f9, CP_CONTEXTO},   /* EXTENDED ARABIC-INDIC DIGITS */
    {0x0640, 0x0640, CP_DISALLOWED}, /* ARABIC TATWEEL */
    {0x07fa, 0x07fa, CP_DISALLOWED}, /* NKO LAJANYALAN */
    {0x302e, 0x302f, CP_DISALLOWED}, /* HANGUL SINGLE/DOUBLE DOT TONE.. */
    {0x3031, 0x3035, CP_DISALLOWED}, /* VERTICAL KANA REPEAT MARKS */
    {0x303b, 0x303b, CP_DISALLOWED}, /* VERTICAL IDEOGRAPHIC ITERATION.. */
};

/*
 * The derived property of RFC 8264 §8, step by step: freeform selects
 * FreeformClass, where ID_DIS becomes PVALID.
 */
static enum cp_prop cp_class(ucs4_t c, int freeform)
{
    enum cp_prop id_dis = freeform ? CP_PVALID : CP_DISALLOWED;

    /* Exceptions (§9.6, RFC 5892 §2.6). */
    for (size_t i = 0; i < sizeof(exceptions) / sizeof(exceptions[0]); i++)
        if (in_range(c, exceptions[i].lo, exceptions[i].hi))
            return exceptions[i].prop;
    /* BackwardCompatible (§9.7) is empty; ASCII is always assigned. */
    if (c >= 0x21 && c <= 0x7e) /* ASCII7 (§9.11) */
        return CP_PVALID;
    if (c == 0x200c || c == 0x200d) /* JoinControl (§9.8) */
        return CP_CONTEXTJ;
    if (has_category(c, UC_CATEGORY_MASK_Cn)) /* Unassigned (§9.10) */
        return CP_DISALLOWED;
    if (is_old_hangul_jamo(c))
        return CP_DISALLOWED;
    if (uc_is_property_default_ignorable_code_point(c) ||
        uc_is_property_not_a_character(c)) /* PrecisIgnorable (§9.13) */
        return CP_DISALLOWED;
    if (has_category(c, UC_CATEGORY_MASK_Cc)) /* Controls (§9.12) */
        return CP_DISALLOWED;
    if (has_compat(c))
        return id_dis;
    if (has_category(c, UC_CATEGORY_MASK_Ll | UC_CATEGORY_MASK_Lu |
                            UC_CATEGORY_MASK_Lo | UC_CATEGORY_MASK_Nd |
                            UC_CATEGORY_MASK_Lm | UC_CATEGORY_MASK_Mn |
                            UC_CATEGORY_MASK_Mc)) /* LetterDigits */
        return CP_PVALID;
    /* OtherLetterDigits, Spaces, Symbols, Punctuation (§9.15-9.16). */
    if (has_category(c, UC_CATEGORY_MASK_Lt | UC_CATEGORY_MASK_Nl |
                            UC_CATEGORY_MASK_No | UC_CATEGORY_MASK_Me |
                            UC_CATEGORY_MASK_Zs | UC_CATEGORY_MASK_S |
                            UC_CATEGORY_MASK_P))
        return id_dis;
    return CP_DISALLOWED; /* Cf, Cs, Co, Zl, Zp */
}

/* RFC 5892 Appendix A.1 ZERO WIDTH NON-JOINER. */
static int zwnj_ok(const uint32_t *s, size_t n, size_t i)
{
    if (i > 0 && uc_combining_class(s[i - 1]) == UC_CCC_VR)
        return 1;
    /* (Joining_Type:{L,D})(Joining_Type:T)*\u200C(Joining_Type:T)*
     * (Joining_Type:{R,D}) */
    size_t j = i;
    while (j > 0 && uc_joining_type(s[j - 1]) == UC_JOINING_TYPE_T)
        j--;
    if (j == 0)
        return 0;
    int jt = uc_joining_type(s[j - 1]);
    if (jt != UC_JOINING_TYPE_L && jt != UC_JOINING_TYPE_D)
        return 0;
    for (j = i + 1; j < n; j++)
        if (uc_joining_type(s[j]) != UC_JOINING_TYPE_T)
            break;
    if (j == n)
        return 0;
    jt = uc_joining_type(s[j]);
    return jt == UC_JOINING_TYPE_R || jt == UC_JOINING_TYPE_D;
}

/* The contextual rule for s[i], from RFC 5892 Appendix A. */
static int context_ok(const uint32_t *s, size_t n, size_t i,
                      const struct context *cx)
{
    ucs4_t c = s[i];
    if (c == 0x200c)
        return zwnj_ok(s, n, i);
    if (c == 0x200d) /* A.2 ZERO WIDTH JOINER */
        return i > 0 && uc_combining_class(s[i - 1]) == UC_CCC_VR;
    if (c == 0x00b7) /* A.3 MIDDLE DOT, as in Catalan "l·l" */
        return i > 0 && i + 1 < n && s[i - 1] == 'l' && s[i + 1] == 'l';
    if (c == 0x0375) /* A.4 GREEK LOWER NUMERAL SIGN (KERAIA) */
        return i + 1 < n && cx->greek && uc_is_script(s[i + 1], cx->greek);
    if (c == 0x05f3 || c == 0x05f4) /* A.5, A.6 HEBREW GERESH, GERSHAYIM */
        return i > 0 && cx->hebrew && uc_is_script(s[i - 1], cx->hebrew);
    if (c == 0x30fb) /* A.7 KATAKANA MIDDLE DOT */
        return cx->kana_han;
    if (in_range(c, 0x0660, 0x0669)) /* A.8 ARABIC-INDIC DIGITS */
        return !cx->ext_arabic_digits;
    if (in_range(c, 0x06f0, 0x06f9)) /* A.9 EXTENDED ARABIC-INDIC DIGITS */
        return !cx->arabic_digits;
    return 0;
}

static void scan_context(const uint32_t *s, size_t n, struct context *cx)
{
    const uc_script_t *hira = uc_script_byname("Hiragana");
    const uc_script_t *kata = uc_script_byname("Katakana");
    const uc_script_t *han = uc_script_byname("Han");

    memset(cx, 0, sizeof(*cx));
    cx->greek = uc_script_byname("Greek");
    cx->hebrew = uc_script_byname("Hebrew");
    for (size_t i = 0; i < n; i++) {
        ucs4_t c = s[i];
        if (in_range(c, 0x0660, 0x0669))
            cx->arabic_digits = 1;
        else if (in_range(c, 0x06f0, 0x06f9))
            cx->ext_arabic_digits = 1;
        /* The dot itself does not count (RFC 5892 erratum 3312). */
        else if (c != 0x30fb && ((hira && uc_is_script(c, hira)) ||
                                 (kata && uc_is_script(c, kata)) ||
                                 (han && uc_is_script(c, han))))
            cx->kana_han = 1;
    }
}

/* RFC 8264 §9 over a whole prepared string, plus extra ASCII refusals. */
static int check_class(const uint32_t *s, size_t n, int freeform,
                       const char *forbid)
{
    struct context cx;
    int scanned = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < 0x80 && s[i] != 0 && strchr(forbid, (int)s[i]))
            return PL_EJID_MALFORMED;
        switch (cp_class(s[i], freeform)) {
        case CP_PVALID: break;
        case CP_CONTEXTJ:
        case CP_CONTEXTO:
            if (!scanned) {
                scan_context(s, n, &cx);
                scanned = 1;
            }
            if (!context_ok(s, n, i, &cx))
                return PL_EJID_MALFORMED;
            break;
        default: return PL_EJID_MALFORMED;
        }
    }
    return PL_OK;
}

/*
 * The Bidi Rule of RFC 5893 §2, which RFC 8265 §3.3.1 applies to strings
 * holding right-to-left characters (an "RTL label": R, AL or AN); others
 * pass untouched.
 */
static int bidi_ok(const uint32_t *s, size_t n)
{
    int rtl = 0, en = 0, an = 0;
    for (size_t i = 0; i < n; i++) {
        int b = uc_bidi_class(s[i]);
        if (b == UC_BIDI_R || b == UC_BIDI_AL || b == UC_BIDI_AN)
            rtl = 1;
    }
    if (!rtl)
        return 1;
    int first = uc_bidi_class(s[0]);
    if (first != UC_BIDI_R && first != UC_BIDI_AL) /* rule 1 (L: rule 2) */
        return 0;
    for (size_t i = 0; i < n; i++) {
        switch (uc_bidi_class(s[i])) { /* rule 2 */
        case UC_BIDI_EN: en = 1; break;
        case UC_BIDI_AN: an = 1; break;
        case UC_BIDI_R:
        case UC_BIDI_AL:
        case UC_BIDI_ES:
        case UC_BIDI_CS:
        case UC_BIDI_ET:
        case UC_BIDI_ON:
        case UC_BIDI_BN:
        case UC_BIDI_NSM: break;
        default: return 0;
        }
    }
    if (en && an) /* rule 4 */
        return 0;
    size_t j = n; /* rule 3: the end, before trailing NSMs */
    while (j > 0 && uc_bidi_class(s[j - 1]) == UC_BIDI_NSM)
        j--;
    if (j == 0)
        return 0;
    int last = uc_bidi_class(s[j - 1]);
    return last == UC_BIDI_R || last == UC_BIDI_AL || last == UC_BIDI_EN ||
           last == UC_BIDI_AN;
}

/* UsernameCaseMapped rules (RFC 8265 §3.3.1): width, case, NFC. */
static uint32_t *map_username(const uint32_t *s, size_t n, size_t *outn)
{
    uint32_t *w = pl_malloc(n * sizeof(*w));
    for (size_t i = 0; i < n; i++) {
        ucs4_t d[UC_DECOMPOSITION_MAX_LENGTH];
        int tag;
        w[i] = s[i];
        /* UAX #11 <wide> and <narrow> mappings are single code points. */
        if (uc_decomposition(s[i], &tag, d) == 1 &&
            (tag == UC_DECOMP_WIDE || tag == UC_DECOMP_NARROW))
            w[i] = d[0];
    }
    /* Unicode toLowerCase(), language independent, then NFC. */
    uint32_t *r = u32_tolower(w, n, NULL, UNINORM_NFC, NULL, outn);
    pl_free(w);
    return own(r, *outn);
}

/* OpaqueString rules (RFC 8265 §4.2.1): non-ASCII spaces, then NFC. */
static uint32_t *map_opaque(const uint32_t *s, size_t n, size_t *outn)
{
    uint32_t *w = pl_malloc(n * sizeof(*w));
    for (size_t i = 0; i < n; i++)
        w[i] = has_category(s[i], UC_CATEGORY_MASK_Zs) ? 0x20 : s[i];
    uint32_t *r = u32_normalize(UNINORM_NFC, w, n, NULL, outn);
    pl_free(w);
    return own(r, *outn);
}

static const struct profile username_case_mapped = {
    map_username, 0, 1, "\"&'/:<>@", /* RFC 7622 §3.3.1 */
};

static const struct profile opaque_string = {map_opaque, 1, 0, ""};

/* Whether p[0..n) is printable ASCII (0x20..0x7e) only. */
static int is_printable_ascii(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)p[i] < 0x20 || (unsigned char)p[i] > 0x7e)
            return 0;
    return 1;
}

/*
 * The hot path: nearly every JID on the wire is ASCII, where both PRECIS
 * profiles reduce to a table check (and lowercasing for usernames): no
 * decoding, normalization or Bidi work.  Same results as the full path.
 */
static int prep_ascii(const struct profile *pr, const char *p, size_t n,
                      char **out, size_t *outlen)
{
    if (n == 0 || n > PART_MAX)
        return PL_EJID_MALFORMED;
    char *r = pl_malloc(n + 1);
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (!pr->freeform) {
            if (c == ' ' || strchr(pr->forbid, c)) {
                pl_free(r);
                return PL_EJID_MALFORMED;
            }
            if (c >= 'A' && c <= 'Z')
                c = (char)(c - 'A' + 'a');
        }
        r[i] = c;
    }
    r[n] = '\0';
    *out = r;
    *outlen = n;
    return PL_OK;
}

/* Enforces profile on p[0..n); on success *out is a new string. */
static int prep_precis(const struct profile *pr, const char *p, size_t n,
                       char **out, size_t *outlen)
{
    if (is_printable_ascii(p, n))
        return prep_ascii(pr, p, n, out, outlen);
    uint32_t *in = NULL, *m1 = NULL, *m2 = NULL;
    size_t nin = 0, n1 = 0, n2 = 0;
    int rc = decode(p, n, &in, &nin);
    if (rc < 0)
        return rc;
    rc = PL_ENOMEM;
    if (!(m1 = pr->map(in, nin, &n1)))
        goto fail;
    rc = PL_EJID_MALFORMED;
    if (n1 == 0)
        goto fail;
    rc = PL_ENOMEM;
    if (!(m2 = pr->map(m1, n1, &n2)))
        goto fail;
    /* RFC 8264 §7 wants stable output; refuse what a second pass moves. */
    rc = PL_EJID_MALFORMED;
    if (n1 != n2 || memcmp(m1, m2, n1 * sizeof(*m1)) != 0)
        goto fail;
    if (check_class(m1, n1, pr->freeform, pr->forbid) < 0)
        goto fail;
    if (pr->bidi && !bidi_ok(m1, n1))
        goto fail;
    rc = encode(m1, n1, out, outlen);
fail:
    pl_free(in);
    pl_free(m1);
    pl_free(m2);
    return rc;
}

/*
 * Length of p[0..n) without one final label separator: ".", or one of the
 * dots UTS #46 maps to it (U+3002, U+FF0E, U+FF61).
 */
static size_t strip_dot(const char *p, size_t n)
{
    static const char *const dots[] = {"\xe3\x80\x82", "\xef\xbc\x8e",
                                       "\xef\xbd\xa1"};
    if (n >= 1 && p[n - 1] == '.')
        return n - 1;
    for (size_t i = 0; i < sizeof(dots) / sizeof(dots[0]); i++)
        if (n >= 3 && memcmp(p + n - 3, dots[i], 3) == 0)
            return n - 3;
    return n;
}

/* An RFC 3986 IPv6address in brackets, stored in inet_ntop() form. */
static int prep_ipv6(const char *p, size_t n, char **out, size_t *outlen)
{
    char in[INET6_ADDRSTRLEN], text[INET6_ADDRSTRLEN];
    unsigned char addr[16];
    if (n < 3 || p[n - 1] != ']' || n - 2 >= sizeof(in))
        return PL_EJID_MALFORMED;
    memcpy(in, p + 1, n - 2);
    in[n - 2] = '\0';
    if (inet_pton(AF_INET6, in, addr) != 1 ||
        !inet_ntop(AF_INET6, addr, text, sizeof(text)))
        return PL_EJID_MALFORMED;
    size_t len = strlen(text);
    char *s = pl_malloc(len + 3);
    s[0] = '[';
    memcpy(s + 1, text, len);
    s[len + 1] = ']';
    s[len + 2] = '\0';
    *out = s;
    *outlen = len + 2;
    return PL_OK;
}

/* A dotted-quad IPv4 literal; returns 0 if p[0..n) is not one. */
static int prep_ipv4(const char *p, size_t n, char **out, size_t *outlen)
{
    char in[INET_ADDRSTRLEN], text[INET_ADDRSTRLEN];
    unsigned char addr[4];
    if (n >= sizeof(in))
        return 0;
    for (size_t i = 0; i < n; i++)
        if (p[i] != '.' && (p[i] < '0' || p[i] > '9'))
            return 0;
    memcpy(in, p, n);
    in[n] = '\0';
    if (inet_pton(AF_INET, in, addr) != 1 ||
        !inet_ntop(AF_INET, addr, text, sizeof(text)))
        return 0;
    *outlen = strlen(text);
    *out = pl_strndup(text, *outlen);
    return 1;
}

/*
 * The A-label form of a name: labels of 1..63 letters, digits and hyphens
 * (RFC 5890 §2.3.1, RFC 1123 §2.1), no hyphen at either end, and a last
 * label that is not all digits (RFC 3696 §2), so that a bad IPv4 literal
 * is not mistaken for a name.  libidn2 without STD3 rules lets "_", " " or
 * "@" through, and with them it silently drops them, so this is our job.
 */
static int ldh_ok(const char *s)
{
    size_t label = 0;
    int digits = 1;
    char prev = '.';
    for (;; s++) {
        char c = *s;
        if (c == '.' || c == '\0') {
            if (label == 0 || label > 63 || prev == '-')
                return 0;
            if (c == '\0')
                return !digits;
            label = 0;
            digits = 1;
            prev = c;
            continue;
        }
        if (c == '-' ? label == 0
                     : !(c >= 'a' && c <= 'z') && !(c >= '0' && c <= '9'))
            return 0;
        if (c < '0' || c > '9')
            digits = 0;
        label++;
        prev = c;
    }
}

/* An IDNA2008 name (RFC 7622 §3.2.2), stored as lowercase U-labels. */
static int prep_idna(const char *p, size_t n, char **out, size_t *outlen)
{
    char *in = pl_strndup(p, n);
    uint8_t *ace = NULL;
    char *u = NULL;
    int rc = PL_EJID_MALFORMED;
    int irc = idn2_lookup_u8((const uint8_t *)in, &ace,
                             IDN2_NONTRANSITIONAL | IDN2_NFC_INPUT);
    if (irc != IDN2_OK) {
        ace = NULL;
        rc = irc == IDN2_MALLOC ? PL_ENOMEM : PL_EJID_MALFORMED;
        goto fail;
    }
    if (!ldh_ok((const char *)ace))
        goto fail;
    irc = idn2_to_unicode_8z8z((const char *)ace, &u, 0);
    if (irc != IDN2_OK) {
        u = NULL;
        rc = irc == IDN2_MALLOC ? PL_ENOMEM : PL_EJID_MALFORMED;
        goto fail;
    }
    size_t len = strlen(u);
    if (len == 0 || len > PART_MAX)
        goto fail;
    {
        /* RFC 5891 §5.4: an A-label is valid only if its U-label converts
         * back to it; the stored form must be a fixed point. */
        uint8_t *again = NULL;
        irc = idn2_lookup_u8((const uint8_t *)u, &again,
                             IDN2_NONTRANSITIONAL | IDN2_NFC_INPUT);
        int same = irc == IDN2_OK &&
                   strcasecmp((const char *)again, (const char *)ace) == 0;
        idn2_free(again);
        if (!same)
            goto fail;
    }
    *out = pl_strndup(u, len);
    *outlen = len;
    rc = PL_OK;
fail:
    pl_free(in);
    idn2_free(ace);
    idn2_free(u);
    return rc;
}

static int prep_domain(const char *p, size_t n, char **out, size_t *outlen)
{
    if (!is_text(p, n, PART_RAW_MAX))
        return PL_EJID_MALFORMED;
    n = strip_dot(p, n); /* RFC 7622 §3.2 */
    if (n == 0)
        return PL_EJID_MALFORMED;
    if (p[0] == '[')
        return prep_ipv6(p, n, out, outlen);
    if (prep_ipv4(p, n, out, outlen))
        return PL_OK;
    if (n <= 253 && is_printable_ascii(p, n)) {
        /* ASCII names without A-labels need no IDNA round trip. */
        char *d = pl_malloc(n + 1);
        int alabel = 0;
        for (size_t i = 0; i < n; i++) {
            char c = p[i];
            d[i] = c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
            /* "??--" labels are A-labels or reserved (RFC 5891 §4.2.3.1):
             * leave them to libidn2. */
            if ((i == 0 || p[i - 1] == '.') && n - i >= 4 && p[i + 2] == '-' &&
                p[i + 3] == '-')
                alabel = 1;
        }
        d[n] = '\0';
        if (!alabel) {
            if (!ldh_ok(d)) {
                pl_free(d);
                return PL_EJID_MALFORMED;
            }
            *out = d;
            *outlen = n;
            return PL_OK;
        }
        pl_free(d);
    }
    return prep_idna(p, n, out, outlen);
}

static char *put(char *q, const char *s, size_t n)
{
    memcpy(q, s, n);
    q[n] = '\0';
    return q + n + 1;
}

/* One block: the struct, then local, domain, resource, bare and full. */
static struct pl_jid *build(const char *l, size_t ll, const char *d, size_t dl,
                            const char *r, size_t rl)
{
    size_t bl = (l ? ll + 1 : 0) + dl;
    size_t fl = bl + (r ? rl + 1 : 0);
    size_t size = sizeof(struct pl_jid) + (l ? ll + 1 : 0) + dl + 1 +
                  (r ? rl + 1 : 0) + bl + 1 + (r ? fl + 1 : 0);
    struct pl_jid *j = pl_malloc(size);
    char *q = (char *)(j + 1);

    j->local = l ? q : NULL;
    if (l)
        q = put(q, l, ll);
    j->domain = q;
    q = put(q, d, dl);
    j->resource = r ? q : NULL;
    if (r)
        q = put(q, r, rl);
    char *bare = q;
    if (l) {
        memcpy(q, l, ll);
        q[ll] = '@';
        q += ll + 1;
    }
    q = put(q, d, dl);
    j->bare = bare;
    j->full = bare;
    if (r) {
        j->full = q;
        memcpy(q, bare, bl);
        q[bl] = '/';
        put(q + bl + 1, r, rl);
    }
    return j;
}

/* Prepares whichever parts are given (l and r may be NULL) and builds. */
static int make(const struct pl_str *l, struct pl_str d, const struct pl_str *r,
                struct pl_jid **out)
{
    char *lp = NULL, *dp = NULL, *rp = NULL;
    size_t ll = 0, dl = 0, rl = 0;
    int rc = PL_OK;
    if (l &&
        (rc = prep_precis(&username_case_mapped, l->p, l->len, &lp, &ll)) < 0)
        goto fail;
    if ((rc = prep_domain(d.p, d.len, &dp, &dl)) < 0)
        goto fail;
    if (r && (rc = prep_precis(&opaque_string, r->p, r->len, &rp, &rl)) < 0)
        goto fail;
    *out = build(lp, ll, dp, dl, rp, rl);
fail:
    pl_free(lp);
    pl_free(dp);
    pl_free(rp);
    return rc;
}

int pl_jid_parse(struct pl_str in, struct pl_jid **out)
{
    pl_assert(out != NULL);
    if (!is_text(in.p, in.len, SIZE_MAX))
        return PL_EJID_MALFORMED;
    /*
     * RFC 7622 §3.1: the resourcepart is everything after the first "/";
     * before it, the localpart is what precedes the first "@".  UTF-8
     * never hides an ASCII byte inside a multibyte sequence.
     */
    const char *p = in.p;
    const char *slash = memchr(p, '/', in.len);
    size_t pre = slash ? (size_t)(slash - p) : in.len;
    const char *at = memchr(p, '@', pre);
    struct pl_str local = {p, 0}, domain = {p, pre}, res = {NULL, 0};
    if (at) {
        local.len = (size_t)(at - p);
        domain = (struct pl_str){at + 1, pre - local.len - 1};
    }
    if (slash)
        res = (struct pl_str){slash + 1, in.len - pre - 1};
    return make(at ? &local : NULL, domain, slash ? &res : NULL, out);
}

int pl_jid_make(const char *local, const char *domain, const char *resource,
                struct pl_jid **out)
{
    pl_assert(domain != NULL && out != NULL);
    struct pl_str l = pl_str_c(local), r = pl_str_c(resource);
    return make(local ? &l : NULL, pl_str_c(domain), resource ? &r : NULL, out);
}

struct pl_jid *pl_jid_bare(const struct pl_jid *j)
{
    pl_assert(j != NULL);
    return build(j->local, j->local ? strlen(j->local) : 0, j->domain,
                 strlen(j->domain), NULL, 0);
}

struct pl_jid *pl_jid_dup(const struct pl_jid *j)
{
    pl_assert(j != NULL);
    return build(j->local, j->local ? strlen(j->local) : 0, j->domain,
                 strlen(j->domain), j->resource,
                 j->resource ? strlen(j->resource) : 0);
}

void pl_jid_free(struct pl_jid *j)
{
    pl_free(j);
}

int pl_jid_prep_local(struct pl_str in, char **out)
{
    size_t len;
    pl_assert(out != NULL);
    return prep_precis(&username_case_mapped, in.p, in.len, out, &len);
}

int pl_jid_prep_domain(struct pl_str in, char **out)
{
    size_t len;
    pl_assert(out != NULL);
    return prep_domain(in.p, in.len, out, &len);
}

int pl_jid_prep_resource(struct pl_str in, char **out)
{
    size_t len;
    pl_assert(out != NULL);
    return prep_precis(&opaque_string, in.p, in.len, out, &len);
}
