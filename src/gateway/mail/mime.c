/*
 * mime.c - parsing and building e-mail messages with GMime; see mime.h.
 *
 * Parsing walks GMime's tree once (walk()): the first inline text/plain
 * leaf is the text, else the first inline text/html converted; every
 * other leaf, and every attached message (message/rfc822, kept whole), is
 * an attachment within the limits.  Strings from GMime are UTF-8
 * already (it decodes RFC 2047 words); part bodies are converted here
 * (to_utf8()).
 *
 * The HTML converter is a small state machine over the bytes: it needs
 * no well-formed input and never fails.
 *
 * Extending: new header fields go in pl_mail_parse() and struct
 * pl_mail_msg; new part kinds in walk().
 */
#include "gateway/mail/mime.h"

#include <gmime/gmime.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "alloc.h"
#include "error.h"

static pthread_once_t gmime_once = PTHREAD_ONCE_INIT;

static void gmime_init_once(void)
{
    g_mime_init();
}

void pl__mail_gmime_init(void)
{
    pthread_once(&gmime_once, gmime_init_once);
}

void pl_mail_limits_default(struct pl_mail_limits *lim)
{
    lim->max_attachments = 20;
    lim->max_attachment_bytes = 25 * 1024 * 1024;
    lim->max_depth = 8;
    lim->max_text = 256 * 1024;
}

/* ---- UTF-8. */

/* A pl_strndup of p with invalid UTF-8 replaced by U+FFFD. */
static char *valid_utf8(const char *p, size_t n)
{
    gchar *v = g_utf8_make_valid(p, (gssize)n);
    char *r = pl_strdup(v);
    g_free(v);
    return r;
}

/* Bytes in charset (NULL: UTF-8, else Windows-1252) to UTF-8; counts a
 * charset that cannot be used in m->bad_charset. */
static char *to_utf8(const char *p, size_t n, const char *charset,
                     struct pl_mail_msg *m)
{
    if (!p || n == 0)
        return pl_strdup("");
    if (!charset) {
        if (g_utf8_validate(p, (gssize)n, NULL) && !memchr(p, 0, n))
            return pl_strndup(p, n);
        charset = "windows-1252";
    }
    const char *name = g_mime_charset_iconv_name(charset);
    if (strcasecmp(name, "UTF-8") == 0 || strcasecmp(name, "US-ASCII") == 0 ||
        strcasecmp(charset, "us-ascii") == 0) {
        if (!g_utf8_validate(p, (gssize)n, NULL))
            m->bad_charset++;
        return valid_utf8(p, n);
    }
    gsize written = 0;
    GError *err = NULL;
    gchar *u = g_convert_with_fallback(p, (gssize)n, "UTF-8", name, "?", NULL,
                                       &written, &err);
    if (!u) {
        g_clear_error(&err);
        m->bad_charset++;
        return valid_utf8(p, n);
    }
    char *r = valid_utf8(u, written);
    g_free(u);
    return r;
}

/* ---- HTML to text. */

struct entity {
    const char *name; /* without & and ; */
    const char *utf8; /* replacement */
};

static const struct entity entities[] = {
    {"amp", "&"},
    {"lt", "<"},
    {"gt", ">"},
    {"quot", "\""},
    {"apos", "'"},
    {"nbsp", " "},
    {"copy", "\xc2\xa9"},
    {"reg", "\xc2\xae"},
    {"laquo", "\xc2\xab"},
    {"raquo", "\xc2\xbb"},
    {"euro", "\xe2\x82\xac"},
    {"hellip", "\xe2\x80\xa6"},
    {"mdash", "\xe2\x80\x94"},
    {"ndash", "\xe2\x80\x93"},
    {"lsquo", "\xe2\x80\x98"},
    {"rsquo", "\xe2\x80\x99"},
    {"ldquo", "\xe2\x80\x9c"},
    {"rdquo", "\xe2\x80\x9d"},
    {"bull", "\xe2\x80\xa2"},
    {"middot", "\xc2\xb7"},
    {"deg", "\xc2\xb0"},
    {"times", "\xc3\x97"},
};

static void put_codepoint(struct pl_buf *b, unsigned long cp)
{
    char tmp[8];
    if (cp == 0 || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        cp = 0xfffd;
    int n = g_unichar_to_utf8((gunichar)cp, tmp);
    pl_buf_append(b, tmp, (size_t)n);
}

/* Decodes the entity at p ('&'); returns bytes used, 0 if none. */
static size_t entity(const char *p, const char *e, struct pl_buf *b)
{
    const char *semi = memchr(p, ';',
                              (size_t)(e - p) < 12 ? (size_t)(e - p) : 12);
    if (!semi)
        return 0;
    const char *name = p + 1;
    size_t n = (size_t)(semi - name);
    if (n >= 2 && name[0] == '#') {
        unsigned long cp = 0;
        int hex = name[1] == 'x' || name[1] == 'X';
        const char *d = name + 1 + hex;
        if (d == semi)
            return 0;
        for (; d < semi; d++) {
            int v = hex ? g_ascii_xdigit_value(*d) : g_ascii_digit_value(*d);
            if (v < 0)
                return 0;
            cp = cp * (hex ? 16 : 10) + (unsigned long)v;
            if (cp > 0x10ffff)
                cp = 0x110000;
        }
        put_codepoint(b, cp);
        return (size_t)(semi - p) + 1;
    }
    for (size_t i = 0; i < sizeof(entities) / sizeof(entities[0]); i++) {
        if (strlen(entities[i].name) == n &&
            memcmp(entities[i].name, name, n) == 0) {
            pl_buf_append_str(b, entities[i].utf8);
            return (size_t)(semi - p) + 1;
        }
    }
    return 0;
}

/* Tag names that end a line, and those whose content is skipped. */
static int is_block(const char *t, size_t n)
{
    static const char *const blocks[] = {"p",      "div",     "br",
                                         "li",     "tr",      "h1",
                                         "h2",     "h3",      "h4",
                                         "h5",     "h6",      "blockquote",
                                         "ul",     "ol",      "table",
                                         "pre",    "hr",      "dt",
                                         "dd",     "section", "article",
                                         "header", "footer",  "title",
                                         "address"};
    for (size_t i = 0; i < sizeof(blocks) / sizeof(blocks[0]); i++)
        if (strlen(blocks[i]) == n && strncasecmp(blocks[i], t, n) == 0)
            return 1;
    return 0;
}

/* The value of attribute attr in the tag text [p, e), or NULL. */
static char *tag_attr(const char *p, const char *e, const char *attr)
{
    size_t an = strlen(attr);
    while (p < e) {
        while (p < e && !g_ascii_isalpha(*p))
            p++;
        const char *name = p;
        while (p < e && (g_ascii_isalnum(*p) || *p == '-'))
            p++;
        size_t nn = (size_t)(p - name);
        while (p < e && *p == ' ')
            p++;
        if (p >= e || *p != '=')
            continue;
        p++;
        while (p < e && *p == ' ')
            p++;
        const char *v = p, *ve;
        if (p < e && (*p == '"' || *p == '\'')) {
            char q = *p++;
            v = p;
            while (p < e && *p != q)
                p++;
            ve = p;
            if (p < e)
                p++;
        } else {
            while (p < e && *p != ' ' && *p != '>')
                p++;
            ve = p;
        }
        if (nn == an && strncasecmp(name, attr, an) == 0) {
            struct pl_buf b = {0};
            for (const char *q = v; q < ve;) {
                size_t used = *q == '&' ? entity(q, ve, &b) : 0;
                if (used) {
                    q += used;
                } else {
                    pl_buf_append(&b, q, 1);
                    q++;
                }
            }
            char *r = pl_strdup(pl_buf_cstr(&b));
            pl_buf_reset(&b);
            return r;
        }
    }
    return NULL;
}

struct h2t {
    struct pl_buf *out; /* destination */
    size_t start;       /* out->len at the start */
    int space;          /* a space is due before the next word */
    int newlines;       /* line ends already at the end (0..2) */
    int pre;            /* inside <pre> */
};

static void h2t_newline(struct h2t *h, int want)
{
    if (h->out->len == h->start)
        return; /* no blank lines first */
    while (h->newlines < want) {
        pl_buf_append(h->out, "\n", 1);
        h->newlines++;
    }
    h->space = 0;
}

static void h2t_char(struct h2t *h, const char *p, size_t n)
{
    if (h->space && h->newlines == 0 && h->out->len > h->start)
        pl_buf_append(h->out, " ", 1);
    h->space = 0;
    pl_buf_append(h->out, p, n);
    h->newlines = 0;
}

void pl_mail_html_to_text(struct pl_str html, struct pl_buf *out)
{
    const char *p = html.p, *e = p ? html.p + html.len : NULL;
    struct h2t h = {out, out->len, 0, 2, 0};
    char *href = NULL;
    while (p && p < e) {
        if (*p == '<') {
            if (e - p >= 4 && memcmp(p, "<!--", 4) == 0) {
                const char *end = g_strstr_len(p + 4, e - p - 4, "-->");
                p = end ? end + 3 : e;
                continue;
            }
            const char *gt = memchr(p, '>', (size_t)(e - p));
            if (!gt)
                break;
            const char *t = p + 1;
            int closing = t < gt && *t == '/';
            if (closing)
                t++;
            const char *te = t;
            while (te < gt && (g_ascii_isalnum(*te)))
                te++;
            size_t tn = (size_t)(te - t);
            /* Skipped content: script, style, head. */
            if (!closing && ((tn == 6 && strncasecmp(t, "script", 6) == 0) ||
                             (tn == 5 && strncasecmp(t, "style", 5) == 0) ||
                             (tn == 4 && strncasecmp(t, "head", 4) == 0))) {
                char endtag[10];
                snprintf(endtag, sizeof(endtag), "</%.*s", (int)tn, t);
                const char *q = gt + 1;
                const char *found = NULL;
                for (; q + strlen(endtag) <= e; q++) {
                    if (strncasecmp(q, endtag, strlen(endtag)) == 0) {
                        found = q;
                        break;
                    }
                }
                if (!found) {
                    p = e;
                    continue;
                }
                const char *fgt = memchr(found, '>', (size_t)(e - found));
                p = fgt ? fgt + 1 : e;
                continue;
            }
            if (tn == 3 && strncasecmp(t, "pre", 3) == 0)
                h.pre = !closing;
            if (tn == 1 && (*t == 'a' || *t == 'A')) {
                if (!closing) {
                    pl_free(href);
                    href = tag_attr(te, gt, "href");
                } else if (href) {
                    if (*href && strncasecmp(href, "mailto:", 7) != 0) {
                        h.space = 1;
                        h2t_char(&h, "<", 1);
                        pl_buf_append_str(out, href);
                        pl_buf_append(out, ">", 1);
                    }
                    pl_free(href);
                    href = NULL;
                }
            } else if (tn == 2 && strncasecmp(t, "li", 2) == 0 && !closing) {
                h2t_newline(&h, 1);
                h2t_char(&h, "- ", 2);
            } else if (tn == 3 && strncasecmp(t, "img", 3) == 0) {
                char *alt = tag_attr(te, gt, "alt");
                if (alt && *alt) {
                    h2t_char(&h, "[", 1);
                    pl_buf_append_str(out, alt);
                    pl_buf_append(out, "]", 1);
                }
                pl_free(alt);
            } else if (tn && is_block(t, tn)) {
                int para = (tn == 1 && (*t == 'p' || *t == 'P')) ||
                           (tn == 2 && (t[0] == 'h' || t[0] == 'H')) ||
                           (tn == 10 && strncasecmp(t, "blockquote", 10) == 0);
                h2t_newline(&h, para ? 2 : 1);
            } else if ((tn == 2 && (strncasecmp(t, "td", 2) == 0 ||
                                    strncasecmp(t, "th", 2) == 0)) &&
                       !closing) {
                h.space = 1;
            }
            p = gt + 1;
            continue;
        }
        if (*p == '&') {
            struct pl_buf tmp = {0};
            size_t used = entity(p, e, &tmp);
            if (used) {
                struct pl_str s = pl_buf_str(&tmp);
                if (s.len == 1 && s.p[0] == ' ' && !h.pre)
                    h2t_char(&h, " ", 1);
                else
                    h2t_char(&h, s.p, s.len);
                pl_buf_reset(&tmp);
                p += used;
                continue;
            }
            pl_buf_reset(&tmp);
        }
        if (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') {
            if (h.pre) {
                if (*p == '\n') {
                    pl_buf_append(out, "\n", 1);
                    h.newlines = 1;
                } else if (*p != '\r') {
                    pl_buf_append(out, p, 1);
                    h.newlines = 0;
                }
            } else {
                h.space = 1;
            }
            p++;
            continue;
        }
        h2t_char(&h, p, 1);
        p++;
    }
    pl_free(href);
    /* No trailing blank lines or spaces. */
    while (out->len > h.start && (out->data[out->off + out->len - 1] == '\n' ||
                                  out->data[out->off + out->len - 1] == ' '))
        out->len--;
}

/* ---- Parsing. */

struct walk {
    const struct pl_mail_limits *lim;
    struct pl_mail_msg *m;
    size_t att_bytes; /* kept so far */
    int have_plain;   /* the text is from text/plain */
    char *html;       /* first text/html, converted, until the end */
};

/* The decoded content of a leaf (transfer encoding undone). */
static GByteArray *part_bytes(GMimePart *part, GMimeStream **keep)
{
    GMimeDataWrapper *dw = g_mime_part_get_content(part);
    GMimeStream *s = g_mime_stream_mem_new();
    if (dw)
        g_mime_data_wrapper_write_to_stream(dw, s);
    *keep = s;
    return g_mime_stream_mem_get_byte_array(GMIME_STREAM_MEM(s));
}

static void add_attachment(struct walk *w, const char *name, const char *type,
                           const void *p, size_t n)
{
    struct pl_mail_msg *m = w->m;
    if (m->natt >= w->lim->max_attachments ||
        n > w->lim->max_attachment_bytes - w->att_bytes) {
        m->dropped++;
        return;
    }
    m->att = pl_realloc(m->att, (m->natt + 1) * sizeof(*m->att));
    struct pl_mail_attachment *a = &m->att[m->natt++];
    char made[32];
    if (!name || !*name) {
        snprintf(made, sizeof(made), "part-%zu", m->natt);
        name = made;
    }
    a->name = valid_utf8(name, strlen(name));
    a->type = pl_strdup(type);
    a->data = pl_malloc(n ? n : 1);
    if (n)
        memcpy(a->data, p, n);
    a->len = n;
    w->att_bytes += n;
}

static void set_text(struct walk *w, char *t)
{
    size_t n = strlen(t);
    if (n > w->lim->max_text) {
        /* Cut at a character boundary. */
        n = w->lim->max_text;
        while (n && ((unsigned char)t[n] & 0xc0) == 0x80)
            n--;
        t[n] = '\0';
        w->m->dropped++;
    }
    pl_free(w->m->text);
    w->m->text = t;
}

static void walk(struct walk *w, GMimeObject *obj, unsigned depth)
{
    if (depth > w->lim->max_depth) {
        w->m->dropped++;
        return;
    }
    GMimeContentType *ct = g_mime_object_get_content_type(obj);
    if (GMIME_IS_MULTIPART(obj)) {
        GMimeMultipart *mp = GMIME_MULTIPART(obj);
        int n = g_mime_multipart_get_count(mp);
        for (int i = 0; i < n; i++)
            walk(w, g_mime_multipart_get_part(mp, i), depth + 1);
        return;
    }
    if (GMIME_IS_MESSAGE_PART(obj)) {
        /* An attached message is kept whole, as the file it is. */
        GMimeMessage *inner = g_mime_message_part_get_message(
            GMIME_MESSAGE_PART(obj));
        if (!inner)
            return;
        GMimeStream *s = g_mime_stream_mem_new();
        g_mime_object_write_to_stream(GMIME_OBJECT(inner), NULL, s);
        GByteArray *ba = g_mime_stream_mem_get_byte_array(GMIME_STREAM_MEM(s));
        const char *subj = g_mime_message_get_subject(inner);
        char name[80];
        snprintf(name, sizeof(name), "%.60s.eml",
                 subj && *subj ? subj : "message");
        for (char *q = name; *q; q++)
            if (*q == '/' || *q == '\\')
                *q = '_';
        add_attachment(w, name, "message/rfc822", ba->data, ba->len);
        g_object_unref(s);
        return;
    }
    if (!GMIME_IS_PART(obj))
        return;
    GMimePart *part = GMIME_PART(obj);
    char *type = ct ? g_mime_content_type_get_mime_type(ct)
                    : g_strdup("text/plain");
    int plain = ct && g_mime_content_type_is_type(ct, "text", "plain");
    int html = ct && g_mime_content_type_is_type(ct, "text", "html");
    int attach = g_mime_part_is_attachment(part);
    GMimeStream *keep = NULL;
    GByteArray *ba = part_bytes(part, &keep);
    if ((plain || html) && !attach) {
        const char *cs = ct ? g_mime_content_type_get_parameter(ct, "charset")
                            : NULL;
        char *t = to_utf8((const char *)ba->data, ba->len, cs, w->m);
        if (plain && !w->have_plain) {
            w->have_plain = 1;
            set_text(w, t);
            t = NULL;
        } else if (html && !w->html) {
            struct pl_buf b = {0};
            pl_mail_html_to_text(pl_str_c(t), &b);
            w->html = pl_strdup(pl_buf_cstr(&b));
            pl_buf_reset(&b);
        }
        pl_free(t);
    } else {
        add_attachment(w, g_mime_part_get_filename(part), type, ba->data,
                       ba->len);
    }
    g_object_unref(keep);
    g_free(type);
}

/* An upper bound on nesting, from the raw bytes: "multipart" and
 * "message/" tokens.  GMime's parser recurses once per level. */
static size_t containers(struct pl_str raw)
{
    size_t n = 0;
    for (size_t i = 0; i + 8 <= raw.len; i++) {
        char c = raw.p[i] | 0x20;
        if (c == 'm' && ((i + 9 <= raw.len &&
                          strncasecmp(raw.p + i, "multipart", 9) == 0) ||
                         strncasecmp(raw.p + i, "message/", 8) == 0))
            n++;
    }
    return n;
}

static char *first_addr(InternetAddressList *l, char **name)
{
    if (name)
        *name = NULL;
    int n = l ? internet_address_list_length(l) : 0;
    for (int i = 0; i < n; i++) {
        InternetAddress *a = internet_address_list_get_address(l, i);
        if (!INTERNET_ADDRESS_IS_MAILBOX(a))
            continue;
        const char *addr = internet_address_mailbox_get_addr(
            INTERNET_ADDRESS_MAILBOX(a));
        if (!addr || !*addr)
            continue;
        const char *nm = internet_address_get_name(a);
        if (name && nm && *nm)
            *name = valid_utf8(nm, strlen(nm));
        return valid_utf8(addr, strlen(addr));
    }
    return NULL;
}

static void add_addrs(struct pl_mail_msg *m, InternetAddressList *l)
{
    int n = l ? internet_address_list_length(l) : 0;
    for (int i = 0; i < n && m->nto < 1000; i++) {
        InternetAddress *a = internet_address_list_get_address(l, i);
        if (INTERNET_ADDRESS_IS_GROUP(a)) {
            add_addrs(m, internet_address_group_get_members(
                             INTERNET_ADDRESS_GROUP(a)));
            continue;
        }
        const char *addr = internet_address_mailbox_get_addr(
            INTERNET_ADDRESS_MAILBOX(a));
        if (!addr || !*addr)
            continue;
        m->to = pl_realloc(m->to, (m->nto + 1) * sizeof(*m->to));
        m->to[m->nto++] = valid_utf8(addr, strlen(addr));
    }
}

static char *dup_opt(const char *s)
{
    return s && *s ? valid_utf8(s, strlen(s)) : NULL;
}

int pl_mail_parse(struct pl_str raw, const struct pl_mail_limits *lim,
                  struct pl_mail_msg **out)
{
    struct pl_mail_limits def;
    if (!lim) {
        pl_mail_limits_default(&def);
        lim = &def;
    }
    if (containers(raw) > PL_MAIL_MAX_CONTAINERS)
        return PL_ELIMIT;
    pl__mail_gmime_init();
    GMimeStream *s = g_mime_stream_mem_new_with_buffer(raw.p ? raw.p : "",
                                                       raw.len);
    GMimeParser *parser = g_mime_parser_new_with_stream(s);
    GMimeMessage *msg = g_mime_parser_construct_message(parser, NULL);
    g_object_unref(parser);
    g_object_unref(s);
    if (!msg)
        return PL_EINVAL;
    struct pl_mail_msg *m = pl_calloc(1, sizeof(*m));
    m->from = first_addr(g_mime_message_get_from(msg), &m->from_name);
    if (!m->from)
        m->from = first_addr(g_mime_message_get_sender(msg), &m->from_name);
    add_addrs(m, g_mime_message_get_to(msg));
    add_addrs(m, g_mime_message_get_cc(msg));
    m->subject = dup_opt(g_mime_message_get_subject(msg));
    m->message_id = dup_opt(g_mime_message_get_message_id(msg));
    const char *irt = g_mime_object_get_header(GMIME_OBJECT(msg),
                                               "In-Reply-To");
    if (irt) {
        GMimeReferences *refs = g_mime_references_parse(NULL, irt);
        if (refs && g_mime_references_length(refs) > 0)
            m->in_reply_to = dup_opt(g_mime_references_get_message_id(refs, 0));
        if (refs)
            g_mime_references_free(refs);
    }
    struct walk w = {lim, m, 0, 0, NULL};
    GMimeObject *top = g_mime_message_get_mime_part(msg);
    if (top)
        walk(&w, top, 0);
    if (!w.have_plain && w.html) {
        set_text(&w, w.html);
        w.html = NULL;
        m->text_from_html = 1;
    }
    pl_free(w.html);
    if (!m->text)
        m->text = pl_strdup("");
    g_object_unref(msg);
    *out = m;
    return PL_OK;
}

void pl_mail_msg_free(struct pl_mail_msg *m)
{
    if (!m)
        return;
    pl_free(m->from);
    pl_free(m->from_name);
    for (size_t i = 0; i < m->nto; i++)
        pl_free(m->to[i]);
    pl_free(m->to);
    pl_free(m->subject);
    pl_free(m->message_id);
    pl_free(m->in_reply_to);
    pl_free(m->text);
    for (size_t i = 0; i < m->natt; i++) {
        pl_free(m->att[i].name);
        pl_free(m->att[i].type);
        pl_free(m->att[i].data);
    }
    pl_free(m->att);
    pl_free(m);
}

/* ---- Building. */

/* Adds one mailbox to a header list; 0 if addr is not an addr-spec. */
static int add_mailbox(GMimeMessage *msg, GMimeAddressType t, const char *name,
                       const char *addr)
{
    if (!addr || !*addr || strpbrk(addr, "<>,;\r\n\"") || !strchr(addr, '@'))
        return 0;
    g_mime_message_add_mailbox(msg, t, name ? name : "", addr);
    return 1;
}

static void human_size(char *buf, size_t n, size_t size)
{
    if (size >= 1024 * 1024)
        snprintf(buf, n, "%.1f MB", (double)size / (1024.0 * 1024.0));
    else if (size >= 1024)
        snprintf(buf, n, "%.1f KB", (double)size / 1024.0);
    else
        snprintf(buf, n, "%zu bytes", size);
}

/* One attached file, base64 (RFC 2045 §6.8), its name RFC 2231-encoded
 * when not ASCII, added to mp. */
static void add_file(GMimeMultipart *mp, const struct pl_mail_attachment *a)
{
    const char *type = a->type && strchr(a->type, '/') ? a->type
                                                       : "application/"
                                                         "octet-stream";
    GMimeContentType *ct = g_mime_content_type_parse(NULL, type);
    GMimePart *p =
        g_mime_part_new_with_type(g_mime_content_type_get_media_type(ct),
                                  g_mime_content_type_get_media_subtype(ct));
    g_object_unref(ct);
    GMimeStream *s = g_mime_stream_mem_new();
    g_mime_stream_write(s, (const char *)a->data, a->len);
    g_mime_stream_reset(s);
    GMimeDataWrapper *w =
        g_mime_data_wrapper_new_with_stream(s, GMIME_CONTENT_ENCODING_DEFAULT);
    g_mime_part_set_content(p, w);
    g_object_unref(w);
    g_object_unref(s);
    g_mime_part_set_content_encoding(p, GMIME_CONTENT_ENCODING_BASE64);
    g_mime_object_set_disposition(GMIME_OBJECT(p), "attachment");
    if (a->name && *a->name)
        g_mime_part_set_filename(p, a->name);
    g_mime_multipart_add(mp, GMIME_OBJECT(p));
    g_object_unref(p);
}

int pl_mail_build(const struct pl_mail_out *o, struct pl_buf *out,
                  char **message_id)
{
    if (!o->text || !o->nto || !o->to)
        return PL_EINVAL;
    pl__mail_gmime_init();
    GMimeMessage *msg = g_mime_message_new(TRUE);
    int rc = PL_EINVAL;
    if (!add_mailbox(msg, GMIME_ADDRESS_TYPE_FROM, o->from_name, o->from))
        goto done;
    for (size_t i = 0; i < o->nto; i++)
        if (!add_mailbox(msg, GMIME_ADDRESS_TYPE_TO, NULL, o->to[i]))
            goto done;
    if (o->subject)
        g_mime_message_set_subject(msg, o->subject, "utf-8");
    GDateTime *date = o->date ? g_date_time_new_from_unix_utc(o->date)
                              : g_date_time_new_now_utc();
    g_mime_message_set_date(msg, date);
    g_date_time_unref(date);
    char *id = o->message_id && *o->message_id &&
                       !strpbrk(o->message_id, "<>\r\n ")
                   ? g_strdup(o->message_id)
                   : g_mime_utils_generate_message_id(
                         o->id_domain && *o->id_domain ? o->id_domain
                                                       : "localhost");
    g_mime_message_set_message_id(msg, id);
    if (o->in_reply_to && *o->in_reply_to &&
        !strpbrk(o->in_reply_to, "<>\r\n ")) {
        char *ref = g_strdup_printf("<%s>", o->in_reply_to);
        g_mime_object_set_header(GMIME_OBJECT(msg), "In-Reply-To", ref, NULL);
        g_mime_object_set_header(GMIME_OBJECT(msg), "References", ref, NULL);
        g_free(ref);
    }

    /* The text, then the links to the uploaded files. */
    GString *body = g_string_new(NULL);
    gchar *valid = g_utf8_make_valid(o->text, -1);
    g_string_append(body, valid);
    g_free(valid);
    if (o->nlinks) {
        g_string_append(body, body->len ? "\n\n" : "");
        g_string_append(body, o->nlinks == 1 ? "Attached file:\n"
                                             : "Attached files:\n");
        for (size_t i = 0; i < o->nlinks; i++) {
            const struct pl_mail_link *l = &o->links[i];
            char size[32] = "";
            if (l->size)
                human_size(size, sizeof(size), l->size);
            g_string_append_printf(body, "- %s%s%s%s%s%s\n  %s\n",
                                   l->name ? l->name : "file",
                                   l->type || l->size ? " (" : "",
                                   l->type ? l->type : "",
                                   l->type && l->size ? ", " : "", size,
                                   l->type || l->size ? ")" : "", l->url);
        }
    }
    GMimeTextPart *part = g_mime_text_part_new_with_subtype("plain");
    g_mime_text_part_set_text(part, body->str);
    g_string_free(body, TRUE);
    /* 7bit if it is, else quoted-printable or base64 (RFC 2045 §6). */
    g_mime_part_set_content_encoding(
        GMIME_PART(part),
        g_mime_part_get_best_content_encoding(GMIME_PART(part),
                                              GMIME_ENCODING_CONSTRAINT_7BIT));
    if (o->natt) {
        GMimeMultipart *mp = g_mime_multipart_new_with_subtype("mixed");
        g_mime_multipart_add(mp, GMIME_OBJECT(part));
        for (size_t i = 0; i < o->natt; i++)
            add_file(mp, &o->att[i]);
        g_mime_message_set_mime_part(msg, GMIME_OBJECT(mp));
        g_object_unref(mp);
    } else {
        g_mime_message_set_mime_part(msg, GMIME_OBJECT(part));
    }
    g_object_unref(part);

    GMimeFormatOptions *fo = g_mime_format_options_new();
    g_mime_format_options_set_newline_format(fo, GMIME_NEWLINE_FORMAT_DOS);
    GMimeStream *s = g_mime_stream_mem_new();
    g_mime_object_write_to_stream(GMIME_OBJECT(msg), fo, s);
    GByteArray *ba = g_mime_stream_mem_get_byte_array(GMIME_STREAM_MEM(s));
    pl_buf_append(out, ba->data, ba->len);
    g_object_unref(s);
    g_mime_format_options_free(fo);
    if (message_id)
        *message_id = pl_strdup(id);
    g_free(id);
    rc = PL_OK;
done:
    g_object_unref(msg);
    return rc;
}
