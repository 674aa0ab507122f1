/*
 * map_im.c - SIP MESSAGE <-> XMPP <message/> (RFC 3428, RFC 7572); the API
 * and the choices are in map_im.h.
 *
 * Text handling: a SIP body becomes XML character data, so it must be
 * UTF-8 and hold only characters XML 1.0 allows (§2.2): CR LF and lone CR
 * become LF, other C0 controls, U+FFFE and U+FFFF become U+FFFD.
 * Header values that become XML (Subject) or XML that becomes header
 * values (<subject/>, <thread/>, xml:lang) are reduced to one line of the
 * characters their grammar allows.
 *
 * Extending: see map_im.h.
 */
#include "map_im.h"

#include <string.h>
#include <strings.h>
#include <unistr.h>

#include "alloc.h"
#include "buf.h"
#include "error.h"
#include "jid.h"
#include "log.h"
#include "map_addr.h"
#include "xml.h"

/* ---- Content-Type ---- */

/* RFC 3261 §25.1 token characters. */
static int is_token_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || (c && strchr("-.!%*_+`'~", c));
}

static size_t skip_ws(struct pl_str v, size_t i)
{
    while (i < v.len && (v.p[i] == ' ' || v.p[i] == '\t' || v.p[i] == '\r' ||
                         v.p[i] == '\n'))
        i++;
    return i;
}

static size_t scan_token(struct pl_str v, size_t i)
{
    while (i < v.len && is_token_char((unsigned char)v.p[i]))
        i++;
    return i;
}

int pl_sip_media_type_parse(struct pl_str v, struct pl_sip_media_type *out)
{
    struct pl_sip_media_type mt = {{NULL, 0}, {NULL, 0}, {NULL, 0}};
    int have_charset = 0;
    size_t i = skip_ws(v, 0), e = scan_token(v, i);
    if (e == i)
        return PL_EINVAL;
    mt.type = (struct pl_str){v.p + i, e - i};
    i = skip_ws(v, e);
    if (i >= v.len || v.p[i] != '/')
        return PL_EINVAL;
    i = skip_ws(v, i + 1);
    e = scan_token(v, i);
    if (e == i)
        return PL_EINVAL;
    mt.subtype = (struct pl_str){v.p + i, e - i};
    i = skip_ws(v, e);
    while (i < v.len) {
        if (v.p[i] != ';')
            return PL_EINVAL;
        i = skip_ws(v, i + 1);
        e = scan_token(v, i);
        if (e == i)
            return PL_EINVAL;
        struct pl_str name = {v.p + i, e - i};
        i = skip_ws(v, e);
        if (i >= v.len || v.p[i] != '=')
            return PL_EINVAL;
        i = skip_ws(v, i + 1);
        struct pl_str val;
        if (i < v.len && v.p[i] == '"') {
            size_t s = ++i;
            while (i < v.len && v.p[i] != '"') {
                if (v.p[i] == '\\')
                    i++;
                i++;
            }
            if (i >= v.len)
                return PL_EINVAL;
            val = (struct pl_str){v.p + s, i - s};
            i++;
        } else {
            e = scan_token(v, i);
            if (e == i)
                return PL_EINVAL;
            val = (struct pl_str){v.p + i, e - i};
            i = e;
        }
        if (name.len == 7 && strncasecmp(name.p, "charset", 7) == 0) {
            if (have_charset)
                return PL_EINVAL;
            have_charset = 1;
            mt.charset = val;
        }
        i = skip_ws(v, i);
    }
    *out = mt;
    return PL_OK;
}

static int str_ieq(struct pl_str a, const char *b)
{
    size_t n = strlen(b);
    return a.len == n && strncasecmp(a.p, b, n) == 0;
}

int pl_sip_media_type_is(const struct pl_sip_media_type *mt, const char *type,
                         const char *subtype)
{
    return str_ieq(mt->type, type) && str_ieq(mt->subtype, subtype);
}

/* ---- text ---- */

/*
 * Appends the UTF-8 text s[0..n) as XML-safe text: CRLF and CR to LF, C0
 * controls but TAB and LF, U+FFFE and U+FFFF to U+FFFD.  PL_EINVAL if s is
 * not UTF-8 (surrogates and code points over U+10FFFF included).
 */
static int xml_text(const char *s, size_t n, struct pl_buf *b)
{
    static const char repl[] = "\xef\xbf\xbd";
    if (u8_check((const uint8_t *)s, n) != NULL)
        return PL_EINVAL;
    size_t i = 0;
    while (i < n) {
        ucs4_t c;
        int len = u8_mbtouc(&c, (const uint8_t *)s + i, n - i);
        if (c == '\r') {
            pl_buf_append(b, "\n", 1);
            if (i + 1 < n && s[i + 1] == '\n')
                len++;
        } else if ((c < 0x20 && c != '\t' && c != '\n') || c == 0xfffe ||
                   c == 0xffff) {
            pl_buf_append(b, repl, 3);
        } else {
            pl_buf_append(b, s + i, (size_t)len);
        }
        i += (size_t)len;
    }
    return PL_OK;
}

/* One line of text, for a header or a short element: controls become
 * spaces, then leading and trailing spaces go; at most max bytes, cut at a
 * character boundary.  s must be UTF-8.  NULL if nothing is left. */
static char *one_line(const char *s, size_t n, size_t max)
{
    struct pl_buf b = {0};
    size_t i = 0;
    while (i < n) {
        int len = u8_mblen((const uint8_t *)s + i, n - i);
        if (len <= 0)
            len = 1;
        if (b.len + (size_t)len > max)
            break;
        unsigned char c = (unsigned char)s[i];
        if (len == 1 && (c < 0x20 || c == 0x7f))
            c = ' ';
        if (!(c == ' ' && b.len == 0))
            pl_buf_append(&b, len == 1 ? (const char *)&c : s + i, (size_t)len);
        i += (size_t)len;
    }
    while (b.len && b.data[b.len - 1] == ' ')
        b.len--;
    char *r = b.len ? pl_strndup(b.data, b.len) : NULL;
    pl_buf_reset(&b);
    return r;
}

/* RFC 5646 in its simple form, which Content-Language (RFC 3261 §20.13)
 * and xml:lang share: 1*8ALPHA *("-" 1*8alphanum).  The first of a
 * comma-separated list counts; NULL if it is not a tag. */
static char *language_tag(const char *s, size_t n)
{
    size_t i = 0;
    while (i < n && (s[i] == ' ' || s[i] == '\t'))
        i++;
    size_t start = i, sub = 0;
    int first = 1;
    for (; i < n && s[i] != ',' && s[i] != ' ' && s[i] != '\t'; i++) {
        unsigned char c = (unsigned char)s[i];
        int alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
        if (c == '-') {
            if (sub == 0)
                return NULL;
            sub = 0;
            first = 0;
        } else if (alpha || (!first && c >= '0' && c <= '9')) {
            if (++sub > 8)
                return NULL;
        } else {
            return NULL;
        }
    }
    if (i == start || sub == 0)
        return NULL;
    return pl_strndup(s + start, i - start);
}

/* RFC 3261 §25.1: callid = word [ "@" word ]. */
static int is_word_char(unsigned char c)
{
    return is_token_char(c) || (c && strchr("()<>:\\\"/[]?{}", c));
}

static int is_call_id(const char *s, size_t n)
{
    if (n == 0 || n > 128)
        return 0;
    int ats = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '@') {
            if (++ats > 1 || i == 0 || i + 1 == n)
                return 0;
        } else if (!is_word_char((unsigned char)s[i])) {
            return 0;
        }
    }
    return 1;
}

/* ---- SIP -> XMPP ---- */

static int fail(int *status, int sip, int code)
{
    *status = sip;
    return code;
}

int pl_sip_im_to_xmpp(const struct pl_sip_im_in *in,
                      const struct pl_sip_im_opts *opts, struct pl_stanza **out,
                      int *status)
{
    static const struct pl_sip_im_opts defaults = {0, 0, 0};
    if (!opts)
        opts = &defaults;
    size_t max = opts->max_body ? opts->max_body : PL_SIP_IM_MAX_BODY;

    /* The recipient first: a request to nobody gets 404 whatever it is. */
    struct pl_jid *to = NULL, *from = NULL, *tmp = NULL;
    unsigned to_flags = opts->addr_flags &
                        (PL_SIP_MAP_SIPS | PL_SIP_MAP_NO_GRUU);
    int rc = pl_sip_uri_to_jid(in->request_uri, to_flags, &to, NULL);
    if (rc == PL_EFEATURE_NOT_IMPLEMENTED)
        return fail(status, 416, rc);
    if (rc == PL_EFORBIDDEN)
        return fail(status, 403, rc);
    if (rc != PL_OK)
        return fail(status, 404, PL_EITEM_NOT_FOUND);
    /* RFC 7247 §8 is about the recipient: a sips: From is fine. */
    if (pl_sip_uri_to_jid(in->from_uri, PL_SIP_MAP_SIPS, &from, NULL) !=
        PL_OK) {
        pl_jid_free(to);
        return fail(status, 400, PL_EBAD_REQUEST);
    }
    if (in->from_resource) {
        rc = pl_jid_make(from->local, from->domain, in->from_resource, &tmp);
        pl_jid_free(from);
        from = tmp;
        if (rc != PL_OK) {
            pl_jid_free(to);
            return fail(status, 400, PL_EBAD_REQUEST);
        }
    }

    struct pl_buf text = {0}, ids = {0};
    char *subject = NULL, *lang = NULL;
    int sip = 400;
    rc = PL_EBAD_REQUEST;
    struct pl_sip_media_type mt;
    if (in->body.len == 0 || in->content_type.len == 0 ||
        pl_sip_media_type_parse(in->content_type, &mt) != PL_OK)
        goto fail;
    if (!pl_sip_media_type_is(&mt, "text", "plain") ||
        (mt.charset.len && !str_ieq(mt.charset, "utf-8") &&
         !str_ieq(mt.charset, "us-ascii"))) {
        sip = 415;
        rc = PL_ENOT_ACCEPTABLE;
        goto fail;
    }
    if (in->body.len > max) {
        sip = 413;
        rc = PL_EPOLICY_VIOLATION;
        goto fail;
    }
    if (str_ieq(mt.charset, "us-ascii"))
        for (size_t i = 0; i < in->body.len; i++)
            if ((unsigned char)in->body.p[i] >= 0x80)
                goto fail;
    if (xml_text(in->body.p, in->body.len, &text) != PL_OK)
        goto fail;
    if (in->subject.len) {
        if (u8_check((const uint8_t *)in->subject.p, in->subject.len))
            goto fail;
        subject = one_line(in->subject.p, in->subject.len, 1024);
    }
    if (in->language.len)
        lang = language_tag(in->language.p, in->language.len);

    /* Built as text and parsed: the parser is the one public way to an
     * xml:lang attribute, and everything written here is escaped. */
    struct pl_buf x = {0};
    pl_buf_append_str(&x, "<message xmlns='jabber:client' from='");
    pl_buf_append_escaped(&x, from->full, strlen(from->full), 1);
    pl_buf_append_str(&x, "' to='");
    pl_buf_append_escaped(&x, to->full, strlen(to->full), 1);
    pl_buf_append_str(&x,
                      opts->type_normal ? "' type='normal'" : "' type='chat'");
    if (in->id.len) {
        char *id = one_line(in->id.p, in->id.len, 256);
        if (id && xml_text(id, strlen(id), &ids) == PL_OK) {
            pl_buf_append_str(&x, " id='");
            pl_buf_append_escaped(&x, ids.data, ids.len, 1);
            pl_buf_append_str(&x, "'");
        }
        pl_free(id);
    }
    if (lang) {
        pl_buf_append_str(&x, " xml:lang='");
        pl_buf_append_str(&x, lang); /* letters, digits, '-' */
        pl_buf_append_str(&x, "'");
    }
    pl_buf_append_str(&x, ">");
    if (subject) {
        pl_buf_append_str(&x, "<subject>");
        pl_buf_append_escaped(&x, subject, strlen(subject), 0);
        pl_buf_append_str(&x, "</subject>");
    }
    pl_buf_append_str(&x, "<body>");
    pl_buf_append_escaped(&x, text.data, text.len, 0);
    pl_buf_append_str(&x, "</body>");
    if (in->call_id.len && is_call_id(in->call_id.p, in->call_id.len)) {
        pl_buf_append_str(&x, "<thread>");
        pl_buf_append_escaped(&x, in->call_id.p, in->call_id.len, 0);
        pl_buf_append_str(&x, "</thread>");
    }
    pl_buf_append_str(&x, "</message>");
    struct pl_stanza *m = NULL;
    rc = pl_xml_parse_fragment(x.data, x.len, &m);
    pl_buf_reset(&x);
    pl_assert(rc == PL_OK); /* only escaped, checked text went in */
    *out = m;
    rc = PL_OK;
    sip = 200;
fail:
    *status = sip;
    pl_buf_reset(&text);
    pl_buf_reset(&ids);
    pl_free(subject);
    pl_free(lang);
    pl_jid_free(to);
    pl_jid_free(from);
    return rc;
}

/* ---- XMPP -> SIP ---- */

/* xml:lang of el, inherited from its ancestors; NULL if none. */
static const char *lang_of(const struct pl_node *el)
{
    for (; el; el = el->parent) {
        const char *l = pl_node_attr_ns(el, PL_NS_XML, "lang");
        if (l)
            return l;
    }
    return NULL;
}

/* The child name (in the stanza's namespace) to use among several with
 * xml:lang (RFC 6121 §5.2.3): the one in the stanza's own language, else
 * the first. */
static struct pl_node *pick_lang(struct pl_node *root, const char *name)
{
    const char *want = lang_of(root);
    struct pl_node *first = NULL;
    for (struct pl_node *c = pl_node_first_elem(root); c;
         c = pl_node_next_elem(c)) {
        if (strcmp(c->name, name) != 0 || strcmp(c->ns, root->ns) != 0)
            continue;
        if (!first)
            first = c;
        const char *l = lang_of(c);
        if (!want ? !pl_node_attr_ns(c, PL_NS_XML, "lang")
                  : l && strcasecmp(l, want) == 0)
            return c;
    }
    return first;
}

void pl_sip_im_out_clear(struct pl_sip_im_out *o)
{
    pl_free(o->request_uri);
    pl_free(o->from_uri);
    pl_free(o->body);
    pl_free(o->subject);
    pl_free(o->call_id);
    pl_free(o->language);
    memset(o, 0, sizeof(*o));
}

int pl_sip_im_from_xmpp(struct pl_stanza *msg,
                        const struct pl_sip_im_opts *opts,
                        struct pl_sip_im_out *out)
{
    static const struct pl_sip_im_opts defaults = {0, 0, 0};
    if (!opts)
        opts = &defaults;
    size_t max = opts->max_body ? opts->max_body : PL_SIP_IM_MAX_BODY;
    memset(out, 0, sizeof(*out));
    struct pl_node *root = pl_stanza_root(msg);
    const char *type = pl_stanza_attr(msg, "type");
    if (type && strcmp(type, "error") == 0)
        return PL_OK; /* never bounce a bounce */
    struct pl_node *body = pick_lang(root, "body");
    if (!body)
        return PL_OK; /* chat state, receipt, marker...: nothing for SIP */
    if (type && strcmp(type, "groupchat") == 0)
        return PL_ESERVICE_UNAVAILABLE;

    const char *to_s = pl_stanza_attr(msg, "to");
    const char *from_s = pl_stanza_attr(msg, "from");
    struct pl_jid *to = NULL, *from = NULL;
    struct pl_sip_im_out o = {0};
    int rc = PL_EJID_MALFORMED;
    if (!to_s || !from_s || pl_jid_parse(pl_str_c(to_s), &to) != PL_OK ||
        pl_jid_parse(pl_str_c(from_s), &from) != PL_OK ||
        pl_sip_jid_to_uri(to, PL_SIP_SCHEME_SIP,
                          opts->addr_flags & PL_SIP_MAP_GRUU,
                          &o.request_uri) != PL_OK ||
        pl_sip_jid_to_uri(from, PL_SIP_SCHEME_SIP, PL_SIP_MAP_GRUU,
                          &o.from_uri) != PL_OK)
        goto done;

    size_t n = 0;
    const char *text = pl_node_text(msg, body, &n);
    rc = PL_EPOLICY_VIOLATION;
    if (n > max)
        goto done;
    o.content_type = PL_SIP_IM_CONTENT_TYPE;
    o.body = pl_strndup(text, n);
    o.body_len = n;
    struct pl_node *subj = pick_lang(root, "subject");
    if (subj) {
        const char *s = pl_node_text(msg, subj, &n);
        o.subject = one_line(s, n, 1024);
    }
    struct pl_node *thread = pl_node_child(root, "thread", root->ns);
    if (thread) {
        const char *t = pl_node_text(msg, thread, &n);
        if (is_call_id(t, n))
            o.call_id = pl_strndup(t, n);
    }
    const char *l = lang_of(body);
    if (l)
        o.language = language_tag(l, strlen(l));
    *out = o;
    memset(&o, 0, sizeof(o));
    rc = PL_OK;
done:
    pl_sip_im_out_clear(&o);
    pl_jid_free(to);
    pl_jid_free(from);
    return rc;
}
