/*
 * map_addr.c - SIP URIs <-> JIDs and SIP status codes <-> XMPP stanza
 * errors (RFC 7247 §6, §7); the API and the choices are in map_addr.h.
 *
 * URI syntax is RFC 3261 §25.1 for sip/sips (userinfo, hostport,
 * uri-parameters, headers) and RFC 3860/3859 for im/pres (a mailbox and
 * optional headers).  Every URI byte must be printable ASCII (RFC 3986:
 * anything else is percent-encoded), which rules out CR, LF, NUL and
 * spaces before any other check.
 *
 * Extending: a new error mapping is a row in status_table or cond_table;
 * keep both sorted as the RFC's tables are.
 */
#include "map_addr.h"

#include <idn2.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistr.h>

#include "alloc.h"
#include "buf.h"
#include "error.h"
#include "log.h"
#include "router.h"

/* ---- character classes ---- */

static int is_alnum(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9');
}

/* RFC 3261 §25.1: unreserved = alphanum / mark. */
static int is_unreserved(unsigned char c)
{
    return is_alnum(c) || (c && strchr("-_.!~*'()", c));
}

/* user = 1*( unreserved / escaped / user-unreserved ) */
static int is_user_char(unsigned char c)
{
    return is_unreserved(c) || (c && strchr("&=+$,;?/", c));
}

/* paramchar = param-unreserved / unreserved / escaped */
static int is_param_char(unsigned char c)
{
    return is_unreserved(c) || (c && strchr("[]/:&+$", c));
}

/* RFC 5322 atext, the im/pres local part (RFC 7247 §6.2). */
static int is_atext(unsigned char c)
{
    return is_alnum(c) || (c && strchr("!#$&'*+-/=?^_`{|}~", c));
}

/* ---- percent-encoding ---- */

int pl_sip_pct_decode(struct pl_str s, char **out, size_t *len)
{
    char *r = pl_malloc(s.len + 1);
    size_t n = 0;
    for (size_t i = 0; i < s.len; i++) {
        unsigned char c = (unsigned char)s.p[i];
        if (c == '%') {
            int hi = i + 2 < s.len ? pl_hex_value((unsigned char)s.p[i + 1])
                                   : -1;
            int lo = i + 2 < s.len ? pl_hex_value((unsigned char)s.p[i + 2])
                                   : -1;
            if (hi < 0 || lo < 0) {
                pl_free(r);
                return PL_EINVAL;
            }
            r[n++] = (char)(hi << 4 | lo);
            i += 2;
        } else {
            r[n++] = (char)c;
        }
    }
    r[n] = '\0';
    *out = r;
    if (len)
        *len = n;
    return PL_OK;
}

/* Appends s[0..n), percent-encoding every byte keep() refuses. */
static void pct_encode(struct pl_buf *b, const char *s, size_t n,
                       int (*keep)(unsigned char))
{
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (keep(c)) {
            pl_buf_append(b, &s[i], 1);
        } else {
            char e[3] = {'%', hex[c >> 4], hex[c & 15]};
            pl_buf_append(b, e, 3);
        }
    }
}

/* ---- XEP-0106 ---- */

/* The characters XEP-0106 escapes, and their escape codes. */
static const char esc_chars[] = " \"&'/:<>@\\";
static const char *const esc_codes[] = {"20", "22", "26", "27", "2f",
                                        "3a", "3c", "3e", "40", "5c"};

/* If s[0..n) starts with an escape code (two hex digits, any case),
 * returns the character it stands for, else 0. */
static char esc_lookup(const char *s, size_t n)
{
    if (n < 2)
        return 0;
    for (size_t k = 0; k < sizeof(esc_codes) / sizeof(esc_codes[0]); k++)
        if (strncasecmp(s, esc_codes[k], 2) == 0)
            return esc_chars[k];
    return 0;
}

/*
 * XEP-0106 escaping of a decoded user part (RFC 7247 §6.4 step 5): the
 * ten characters become \hh, except that a backslash stays itself unless
 * an escape code follows it.  A leading or trailing space cannot be
 * escaped (XEP-0106 §4.2): PL_EJID_MALFORMED.
 */
static int xep0106_escape(const char *s, size_t n, struct pl_buf *b)
{
    if (n > 0 && (s[0] == ' ' || s[n - 1] == ' '))
        return PL_EJID_MALFORMED;
    for (size_t i = 0; i < n; i++) {
        const char *at = memchr(esc_chars, s[i], sizeof(esc_chars) - 1);
        if (!at || s[i] == '\0' ||
            (s[i] == '\\' && !esc_lookup(s + i + 1, n - i - 1))) {
            pl_buf_append(b, &s[i], 1);
            continue;
        }
        pl_buf_append(b, "\\", 1);
        pl_buf_append_str(b, esc_codes[at - esc_chars]);
    }
    return PL_OK;
}

/* The reverse (RFC 7247 §6.5 step 3): \hh of the ten codes to the
 * character; any other backslash stays. */
static void xep0106_unescape(const char *s, struct pl_buf *b)
{
    size_t n = strlen(s);
    for (size_t i = 0; i < n; i++) {
        char c = s[i] == '\\' ? esc_lookup(s + i + 1, n - i - 1) : 0;
        if (c) {
            pl_buf_append(b, &c, 1);
            i += 2;
        } else {
            pl_buf_append(b, &s[i], 1);
        }
    }
}

/* ---- URI -> JID ---- */

static const struct {
    const char *name;
    enum pl_sip_scheme scheme;
} schemes[] = {
    {"sip", PL_SIP_SCHEME_SIP},
    {"sips", PL_SIP_SCHEME_SIPS},
    {"im", PL_SIP_SCHEME_IM},
    {"pres", PL_SIP_SCHEME_PRES},
};

/* The parts of a URI, borrowed from it. */
struct uri_parts {
    enum pl_sip_scheme scheme;
    struct pl_str user; /* still percent-encoded; len 0 when absent */
    struct pl_str host; /* as written, brackets kept for IPv6 */
    struct pl_str gr;   /* "gr" value, percent-encoded; p NULL if none */
    int gr_seen;        /* a "gr" parameter was read, with or without value */
};

/* host = hostname / IPv4address / IPv6reference; returns its length in
 * s[0..n) (0 if none). */
static size_t scan_host(const char *s, size_t n)
{
    size_t i = 0;
    if (n > 0 && s[0] == '[') {
        for (i = 1; i < n && (pl_hex_value((unsigned char)s[i]) >= 0 ||
                              s[i] == ':' || s[i] == '.');
             i++)
            ;
        return i < n && s[i] == ']' && i > 1 ? i + 1 : 0;
    }
    while (i < n &&
           (is_alnum((unsigned char)s[i]) || s[i] == '-' || s[i] == '.'))
        i++;
    return i;
}

/* uri-parameters: *( ";" pname ["=" pvalue] ), up to '?' or the end;
 * records "gr".  Returns the bytes read, or 0 on a syntax error. */
static size_t scan_params(const char *s, size_t n, struct uri_parts *u, int *ok)
{
    size_t i = 0;
    *ok = 1;
    while (i < n && s[i] == ';') {
        size_t name = ++i;
        while (i < n && is_param_char((unsigned char)s[i]) && s[i] != '=')
            i++;
        if (i == name) {
            *ok = 0;
            return 0;
        }
        size_t name_len = i - name, val = i, val_len = 0;
        int has_val = 0;
        if (i < n && s[i] == '=') {
            has_val = 1;
            val = ++i;
            while (i < n && (is_param_char((unsigned char)s[i]) ||
                             s[i] == '%' || s[i] == '='))
                i++;
            val_len = i - val;
        }
        if (name_len == 2 && strncasecmp(s + name, "gr", 2) == 0) {
            /* RFC 3261 §19.1.4: a parameter appears at most once. */
            if (u->gr_seen) {
                *ok = 0;
                return 0;
            }
            u->gr_seen = 1;
            if (has_val && val_len > 0)
                u->gr = (struct pl_str){s + val, val_len};
        }
    }
    return i;
}

static int parse_uri(struct pl_str uri, struct uri_parts *u)
{
    memset(u, 0, sizeof(*u));
    for (size_t i = 0; i < uri.len; i++) {
        unsigned char c = (unsigned char)uri.p[i];
        if (c < 0x21 || c > 0x7e)
            return PL_EJID_MALFORMED;
    }
    const char *colon = uri.len ? memchr(uri.p, ':', uri.len) : NULL;
    if (!colon || colon == uri.p)
        return PL_EJID_MALFORMED;
    size_t slen = (size_t)(colon - uri.p);
    if (!((uri.p[0] >= 'a' && uri.p[0] <= 'z') ||
          (uri.p[0] >= 'A' && uri.p[0] <= 'Z')))
        return PL_EJID_MALFORMED;
    for (size_t i = 1; i < slen; i++)
        if (!is_alnum((unsigned char)uri.p[i]) && !strchr("+-.", uri.p[i]))
            return PL_EJID_MALFORMED;
    for (size_t k = 0; k < sizeof(schemes) / sizeof(schemes[0]); k++)
        if (strlen(schemes[k].name) == slen &&
            strncasecmp(uri.p, schemes[k].name, slen) == 0)
            u->scheme = schemes[k].scheme;
    if (!u->scheme)
        return PL_EFEATURE_NOT_IMPLEMENTED;

    const char *s = colon + 1;
    size_t n = uri.len - slen - 1;
    /* The user part ends at the first '@': '@' is allowed nowhere else. */
    const char *at = n ? memchr(s, '@', n) : NULL;
    int sip = u->scheme == PL_SIP_SCHEME_SIP || u->scheme == PL_SIP_SCHEME_SIPS;
    if (at) {
        u->user = (struct pl_str){s, (size_t)(at - s)};
        if (u->user.len == 0)
            return PL_EJID_MALFORMED;
        for (size_t i = 0; i < u->user.len; i++) {
            unsigned char c = (unsigned char)s[i];
            /* A ':' would start a password (RFC 3261 §19.1.1), which an
             * address must not carry. */
            if (c != '%' && !(sip ? is_user_char(c) : is_atext(c) || c == '.'))
                return PL_EJID_MALFORMED;
        }
        n -= (size_t)(at - s) + 1;
        s = at + 1;
    } else if (!sip) {
        return PL_EJID_MALFORMED; /* im:/pres: name a mailbox */
    }
    size_t h = scan_host(s, n);
    if (h == 0)
        return PL_EJID_MALFORMED;
    u->host = (struct pl_str){s, h};
    s += h;
    n -= h;
    if (sip && n > 0 && s[0] == ':') {
        size_t d = 1;
        unsigned long port = 0;
        while (d < n && s[d] >= '0' && s[d] <= '9' && d <= 5)
            port = port * 10 + (unsigned long)(s[d++] - '0');
        if (d == 1 || port > 65535)
            return PL_EJID_MALFORMED;
        s += d;
        n -= d;
    }
    if (sip) {
        int ok;
        size_t p = scan_params(s, n, u, &ok);
        if (!ok)
            return PL_EJID_MALFORMED;
        s += p;
        n -= p;
    }
    /* Headers ("?" ...) say nothing about the address. */
    if (n > 0 && s[0] != '?')
        return PL_EJID_MALFORMED;
    return PL_OK;
}

int pl_sip_uri_to_jid(struct pl_str uri, unsigned flags, struct pl_jid **out,
                      enum pl_sip_scheme *scheme)
{
    struct uri_parts u;
    int rc = parse_uri(uri, &u);
    if (rc != PL_OK)
        return rc;
    if (u.scheme == PL_SIP_SCHEME_SIPS && !(flags & PL_SIP_MAP_SIPS))
        return PL_EFORBIDDEN;

    char *user = NULL, *host = NULL, *res = NULL;
    size_t user_len = 0, res_len = 0;
    struct pl_buf local = {0};
    rc = PL_EJID_MALFORMED;
    if (u.user.len) {
        if (pl_sip_pct_decode(u.user, &user, &user_len) != PL_OK ||
            u8_check((const uint8_t *)user, user_len) != NULL ||
            xep0106_escape(user, user_len, &local) != PL_OK ||
            memchr(user, '\0', user_len))
            goto done;
    }
    /* The host is plain ASCII (checked by scan_host). */
    host = pl_strndup(u.host.p, u.host.len);
    if (u.gr.p && !(flags & PL_SIP_MAP_NO_GRUU)) {
        if (pl_sip_pct_decode(u.gr, &res, &res_len) != PL_OK ||
            memchr(res, '\0', res_len) ||
            u8_check((const uint8_t *)res, res_len) != NULL)
            goto done;
    }
    rc = pl_jid_make(u.user.len ? pl_buf_cstr(&local) : NULL, host,
                     res && !(flags & PL_SIP_MAP_NO_GRUU) ? res : NULL, out);
    if (rc != PL_OK)
        rc = PL_EJID_MALFORMED;
    else if (scheme)
        *scheme = u.scheme;
done:
    pl_free(user);
    pl_free(host);
    pl_free(res);
    pl_buf_reset(&local);
    return rc;
}

/* ---- JID -> URI ---- */

static int keep_user(unsigned char c)
{
    return is_user_char(c);
}

static int keep_atext(unsigned char c)
{
    return is_atext(c); /* RFC 7247 §6.5 step 5: ( ) , . ; [ \ ] encoded */
}

static int keep_param(unsigned char c)
{
    return is_param_char(c);
}

/* The domainpart as a SIP host: ASCII as is, IDNs as A-labels. */
static int host_of(const char *domain, struct pl_buf *b)
{
    int ascii = 1;
    for (const char *p = domain; *p; p++)
        if ((unsigned char)*p >= 0x80)
            ascii = 0;
    if (ascii) {
        pl_buf_append_str(b, domain);
        return PL_OK;
    }
    uint8_t *ace = NULL;
    int irc = idn2_lookup_u8((const uint8_t *)domain, &ace,
                             IDN2_NONTRANSITIONAL);
    if (irc != IDN2_OK) {
        idn2_free(ace);
        return PL_EJID_MALFORMED;
    }
    pl_buf_append_str(b, (const char *)ace);
    idn2_free(ace);
    return PL_OK;
}

int pl_sip_jid_to_uri(const struct pl_jid *jid, enum pl_sip_scheme scheme,
                      unsigned flags, char **out)
{
    struct pl_buf b = {0}, local = {0};
    int sip = scheme == PL_SIP_SCHEME_SIP || scheme == PL_SIP_SCHEME_SIPS;
    for (size_t k = 0; k < sizeof(schemes) / sizeof(schemes[0]); k++)
        if (schemes[k].scheme == scheme) {
            pl_buf_append_str(&b, schemes[k].name);
            pl_buf_append(&b, ":", 1);
        }
    pl_assert(b.len > 0);
    if (jid->local) {
        xep0106_unescape(jid->local, &local);
        pct_encode(&b, local.data, local.len, sip ? keep_user : keep_atext);
        pl_buf_append(&b, "@", 1);
        pl_buf_reset(&local);
    }
    if (host_of(jid->domain, &b) != PL_OK) {
        pl_buf_reset(&b);
        return PL_EJID_MALFORMED;
    }
    if (sip && jid->resource && (flags & PL_SIP_MAP_GRUU)) {
        pl_buf_append_str(&b, ";gr=");
        pct_encode(&b, jid->resource, strlen(jid->resource), keep_param);
    }
    *out = pl_strdup(pl_buf_cstr(&b));
    pl_buf_reset(&b);
    return PL_OK;
}

/* ---- errors: XMPP -> SIP (RFC 7247 §7.1, Table 2) ---- */

static const struct {
    const char *cond;
    int full, bare; /* status about a full JID, about a bare JID */
} cond_table[] = {
    {"bad-request", 400, 400},
    {"conflict", 400, 400},
    {"feature-not-implemented", 405, 501}, /* note 1 */
    {"forbidden", 403, 603},               /* note 2 */
    {"gone", 410, 410},                    /* note 3: 301 with an address */
    {"internal-server-error", 500, 500},
    {"item-not-found", 404, 604},
    {"jid-malformed", 400, 400},
    {"not-acceptable", 406, 606},
    {"not-allowed", 403, 403},
    {"not-authorized", 401, 401},
    {"policy-violation", 403, 403},
    {"recipient-unavailable", 480, 600},
    {"redirect", 302, 302},
    {"registration-required", 407, 407},
    {"remote-server-not-found", 404, 404}, /* note 4: 404 or 408 */
    {"remote-server-timeout", 408, 408},
    {"resource-constraint", 500, 500},
    {"service-unavailable", 403, 403}, /* note 5: not 503 */
    {"subscription-required", 400, 400},
    {"undefined-condition", 400, 400},
    {"unexpected-request", 491, 491},
};

int pl_sip_status_for_condition(const char *cond, unsigned flags)
{
    for (size_t k = 0; cond && k < sizeof(cond_table) / sizeof(cond_table[0]);
         k++) {
        if (strcmp(cond, cond_table[k].cond) != 0)
            continue;
        if (strcmp(cond, "gone") == 0 && (flags & PL_SIP_ERR_NEW_ADDRESS))
            return 301;
        return flags & PL_SIP_ERR_BARE ? cond_table[k].bare
                                       : cond_table[k].full;
    }
    return 400;
}

/* A Reason-Phrase from free text: one line of UTF-8 (controls become
 * spaces, runs of spaces one), trimmed, at most max bytes cut at a character
 * boundary; NULL if s is not UTF-8 or nothing is left. */
static char *reason_from(const char *s, size_t n, size_t max)
{
    if (u8_check((const uint8_t *)s, n) != NULL)
        return NULL;
    struct pl_buf b = {0};
    size_t i = 0;
    while (i < n) {
        int len = u8_mblen((const uint8_t *)s + i, n - i);
        if (len <= 0)
            len = 1; /* NUL */
        unsigned char c = (unsigned char)s[i];
        if (len == 1 && (c < 0x20 || c == 0x7f))
            c = ' ';
        if (len == 1 && c == ' ') {
            if (b.len && b.data[b.len - 1] != ' ') {
                if (b.len + 1 > max)
                    break;
                pl_buf_append(&b, " ", 1);
            }
        } else {
            if (b.len + (size_t)len > max)
                break;
            pl_buf_append(&b, len == 1 ? (const char *)&c : s + i, (size_t)len);
        }
        i += (size_t)len;
    }
    while (b.len && b.data[b.len - 1] == ' ')
        b.len--;
    char *r = b.len ? pl_strndup(b.data, b.len) : NULL;
    pl_buf_reset(&b);
    return r;
}

/* An xmpp: URI (RFC 5122, without query or fragment), a JID, or a sip/sips
 * URI, as a sip: URI; NULL if it is none of these. */
static char *address_to_sip(const char *text, size_t n)
{
    while (n > 0 && strchr(" \t\r\n", text[0])) {
        text++;
        n--;
    }
    while (n > 0 && strchr(" \t\r\n", text[n - 1]))
        n--;
    if (n == 0)
        return NULL;
    struct pl_jid *j = NULL;
    char *uri = NULL;
    if ((n >= 4 && strncasecmp(text, "sip:", 4) == 0) ||
        (n >= 5 && strncasecmp(text, "sips:", 5) == 0)) {
        if (pl_sip_uri_to_jid((struct pl_str){text, n}, PL_SIP_MAP_SIPS, &j,
                              NULL) == PL_OK)
            uri = pl_strndup(text, n);
        pl_jid_free(j);
        return uri;
    }
    if (n >= 5 && strncasecmp(text, "xmpp:", 5) == 0) {
        text += 5;
        n -= 5;
        if (n >= 2 && text[0] == '/' && text[1] == '/')
            return NULL; /* an authority: not an address */
        const char *q = memchr(text, '?', n);
        if (q)
            n = (size_t)(q - text);
        const char *f = memchr(text, '#', n);
        if (f)
            n = (size_t)(f - text);
        char *dec = NULL;
        size_t dlen = 0;
        if (pl_sip_pct_decode((struct pl_str){text, n}, &dec, &dlen) != PL_OK)
            return NULL;
        if (pl_jid_parse((struct pl_str){dec, dlen}, &j) == PL_OK)
            pl_sip_jid_to_uri(j, PL_SIP_SCHEME_SIP, PL_SIP_MAP_GRUU, &uri);
        pl_free(dec);
    } else if (pl_jid_parse((struct pl_str){text, n}, &j) == PL_OK) {
        pl_sip_jid_to_uri(j, PL_SIP_SCHEME_SIP, PL_SIP_MAP_GRUU, &uri);
    }
    pl_jid_free(j);
    return uri;
}

int pl_sip_error_from_stanza(struct pl_stanza *err, struct pl_sip_error *out)
{
    memset(out, 0, sizeof(*out));
    out->status = 500;
    struct pl_node *root = pl_stanza_root(err);
    struct pl_node *e = pl_node_child(root, "error", NULL);
    if (!e)
        return PL_EINVAL;
    const char *cond = NULL;
    struct pl_node *cond_el = NULL, *text_el = NULL;
    for (struct pl_node *c = pl_node_first_elem(e); c;
         c = pl_node_next_elem(c)) {
        if (strcmp(c->ns, PL_NS_STANZAS) != 0)
            continue;
        if (strcmp(c->name, "text") == 0) {
            if (!text_el)
                text_el = c;
        } else if (!cond_el) {
            cond_el = c;
            cond = c->name;
        }
    }
    /* The error is about the address the bounced stanza went to, which is
     * the error's 'from'. */
    const char *from = pl_stanza_attr(err, "from");
    unsigned flags = 0;
    struct pl_jid *fj = NULL;
    if (from && pl_jid_parse(pl_str_c(from), &fj) == PL_OK && !fj->resource)
        flags |= PL_SIP_ERR_BARE;
    pl_jid_free(fj);
    if (cond_el &&
        (strcmp(cond, "gone") == 0 || strcmp(cond, "redirect") == 0)) {
        size_t n = 0;
        const char *t = pl_node_text(err, cond_el, &n);
        out->contact = address_to_sip(t, n);
        if (out->contact)
            flags |= PL_SIP_ERR_NEW_ADDRESS;
    }
    out->status = pl_sip_status_for_condition(cond, flags);
    if (text_el) {
        size_t n = 0;
        const char *t = pl_node_text(err, text_el, &n);
        out->reason = reason_from(t, n, 128);
    }
    return PL_OK;
}

void pl_sip_error_clear(struct pl_sip_error *e)
{
    pl_free(e->reason);
    pl_free(e->contact);
    e->reason = e->contact = NULL;
}

/* ---- errors: SIP -> XMPP (RFC 7247 §7.2, Table 3) ---- */

static const struct {
    int status;
    const char *cond;
} status_table[] = {
    {300, "redirect"},
    {301, "gone"},
    {302, "redirect"},
    {305, "redirect"},
    {380, "not-acceptable"},
    {400, "bad-request"},
    {401, "not-authorized"},
    {402, "bad-request"},
    {403, "forbidden"},
    {404, "item-not-found"},
    {405, "feature-not-implemented"},
    {406, "not-acceptable"},
    {407, "registration-required"},
    {408, "remote-server-timeout"},
    {410, "gone"},
    {413, "policy-violation"},
    {414, "policy-violation"},
    {415, "not-acceptable"},
    {416, "not-acceptable"},
    {420, "feature-not-implemented"},
    {421, "not-acceptable"},
    {423, "resource-constraint"},
    {430, "recipient-unavailable"},
    {439, "feature-not-implemented"},
    {440, "policy-violation"},
    {480, "recipient-unavailable"},
    {481, "item-not-found"},
    {482, "not-acceptable"},
    {483, "not-acceptable"},
    {484, "item-not-found"},
    {485, "item-not-found"},
    {486, "recipient-unavailable"},
    {487, "recipient-unavailable"},
    {488, "not-acceptable"},
    {489, "policy-violation"},
    {491, "unexpected-request"},
    {493, "bad-request"},
    {500, "internal-server-error"},
    {501, "feature-not-implemented"},
    {502, "remote-server-not-found"},
    {503, "internal-server-error"},
    {504, "remote-server-timeout"},
    {505, "not-acceptable"},
    {513, "policy-violation"},
    {600, "recipient-unavailable"},
    {603, "recipient-unavailable"},
    {604, "item-not-found"},
    {606, "not-acceptable"},
};

/* RFC 6120 §8.3.3: each condition's usual error type, and the PL_E* code
 * closest to it. */
static const struct {
    const char *cond, *type;
    int code;
} cond_info[] = {
    {"bad-request", "modify", PL_EBAD_REQUEST},
    {"feature-not-implemented", "cancel", PL_EFEATURE_NOT_IMPLEMENTED},
    {"forbidden", "auth", PL_EFORBIDDEN},
    {"gone", "cancel", PL_EITEM_NOT_FOUND},
    {"internal-server-error", "cancel", PL_EINTERNAL_SERVER_ERROR},
    {"item-not-found", "cancel", PL_EITEM_NOT_FOUND},
    {"not-acceptable", "modify", PL_ENOT_ACCEPTABLE},
    {"not-authorized", "auth", PL_ENOT_AUTHORIZED},
    {"policy-violation", "modify", PL_EPOLICY_VIOLATION},
    {"recipient-unavailable", "wait", PL_ERECIPIENT_UNAVAILABLE},
    {"redirect", "modify", PL_ERECIPIENT_UNAVAILABLE},
    {"registration-required", "auth", PL_ENOT_AUTHORIZED},
    {"remote-server-not-found", "cancel", PL_EREMOTE_SERVER_NOT_FOUND},
    {"remote-server-timeout", "wait", PL_EREMOTE_SERVER_TIMEOUT},
    {"resource-constraint", "wait", PL_ERESOURCE_CONSTRAINT},
    {"unexpected-request", "wait", PL_EUNEXPECTED_REQUEST},
};

int pl_sip_condition_for_status(int status, const char **cond,
                                const char **type)
{
    const char *c = NULL;
    if (status >= 300 && status <= 699) {
        for (size_t k = 0; k < sizeof(status_table) / sizeof(status_table[0]);
             k++)
            if (status_table[k].status == status)
                c = status_table[k].cond;
        if (!c) {
            static const char *const by_class[] = {"redirect", "bad-request",
                                                   "internal-server-error",
                                                   "recipient-unavailable"};
            c = by_class[status / 100 - 3];
        }
    }
    if (cond)
        *cond = c;
    if (type)
        *type = NULL;
    if (!c)
        return PL_OK;
    for (size_t k = 0; k < sizeof(cond_info) / sizeof(cond_info[0]); k++) {
        if (strcmp(cond_info[k].cond, c) == 0) {
            if (type)
                *type = cond_info[k].type;
            return cond_info[k].code;
        }
    }
    pl_assert(0); /* every condition of status_table is in cond_info */
    return PL_EUNDEFINED_CONDITION;
}

struct pl_stanza *pl_sip_error_reply(struct pl_stanza *st, int status,
                                     struct pl_str reason,
                                     struct pl_str contact)
{
    const char *cond, *type;
    int code = pl_sip_condition_for_status(status, &cond, &type);
    if (code == PL_OK)
        return NULL;
    struct pl_stanza *r = pl_stanza_error_reply(st, code, NULL);
    if (!r)
        return NULL;
    struct pl_node *root = pl_stanza_root(r);
    struct pl_node *e = pl_node_child(root, "error", root->ns);
    pl_assert(e);
    /* Replace the condition that code stands for with the exact one. */
    struct pl_node *old;
    while ((old = pl_node_first_elem(e)))
        pl_node_remove(r, old);
    pl_node_set_attr(r, e, "type", type);
    struct pl_node *c = pl_node_add_child(r, e, cond, PL_NS_STANZAS);
    if (contact.len &&
        (strcmp(cond, "gone") == 0 || strcmp(cond, "redirect") == 0)) {
        struct pl_jid *j = NULL;
        if (pl_sip_uri_to_jid(contact, PL_SIP_MAP_SIPS, &j, NULL) == PL_OK) {
            pl_node_add_text(r, c, "xmpp:", 5);
            pl_node_add_text(r, c, j->full, strlen(j->full));
            pl_jid_free(j);
        }
    }
    char *text = reason.len ? reason_from(reason.p, reason.len, 1024) : NULL;
    if (text) {
        struct pl_node *t = pl_node_add_child(r, e, "text", PL_NS_STANZAS);
        pl_node_add_text(r, t, text, strlen(text));
        pl_free(text);
    }
    return r;
}

/* ---- reason phrases ---- */

static const struct {
    int status;
    const char *reason;
} reasons[] = {
    {100, "Trying"},
    {180, "Ringing"},
    {181, "Call Is Being Forwarded"},
    {182, "Queued"},
    {183, "Session Progress"},
    {200, "OK"},
    {202, "Accepted"},
    {204, "No Notification"},
    {300, "Multiple Choices"},
    {301, "Moved Permanently"},
    {302, "Moved Temporarily"},
    {305, "Use Proxy"},
    {380, "Alternative Service"},
    {400, "Bad Request"},
    {401, "Unauthorized"},
    {402, "Payment Required"},
    {403, "Forbidden"},
    {404, "Not Found"},
    {405, "Method Not Allowed"},
    {406, "Not Acceptable"},
    {407, "Proxy Authentication Required"},
    {408, "Request Timeout"},
    {410, "Gone"},
    {412, "Conditional Request Failed"},
    {413, "Request Entity Too Large"},
    {414, "Request-URI Too Long"},
    {415, "Unsupported Media Type"},
    {416, "Unsupported URI Scheme"},
    {420, "Bad Extension"},
    {421, "Extension Required"},
    {423, "Interval Too Brief"},
    {480, "Temporarily Unavailable"},
    {481, "Call/Transaction Does Not Exist"},
    {482, "Loop Detected"},
    {483, "Too Many Hops"},
    {484, "Address Incomplete"},
    {485, "Ambiguous"},
    {486, "Busy Here"},
    {487, "Request Terminated"},
    {488, "Not Acceptable Here"},
    {489, "Bad Event"},
    {491, "Request Pending"},
    {493, "Undecipherable"},
    {500, "Server Internal Error"},
    {501, "Not Implemented"},
    {502, "Bad Gateway"},
    {503, "Service Unavailable"},
    {504, "Server Time-out"},
    {505, "Version Not Supported"},
    {513, "Message Too Large"},
    {600, "Busy Everywhere"},
    {603, "Decline"},
    {604, "Does Not Exist Anywhere"},
    {606, "Not Acceptable"},
};

const char *pl_sip_reason(int status)
{
    for (size_t k = 0; k < sizeof(reasons) / sizeof(reasons[0]); k++)
        if (reasons[k].status == status)
            return reasons[k].reason;
    return status < 200 ? "Progress" : status < 300 ? "Success" : "Failure";
}
