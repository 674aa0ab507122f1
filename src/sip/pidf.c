/*
 * pidf.c - PIDF/RPID documents <-> XMPP presence (RFC 3863, RFC 4480,
 * RFC 8048); the API and the mapping rules are in pidf.h.
 *
 * Reading parses the whole body with the restricted XML parser under
 * limits (xml.h: no DTD, so no entity expansion; a size and a depth cap),
 * then walks only the elements it knows, by namespace and local name, a
 * fixed number of levels deep: the work is linear in the document and
 * nothing recurses on the input except the mustUnderstand check, bounded
 * by the depth limit.
 *
 * Extending: see pidf.h.
 */
#include "pidf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistr.h>

#include "alloc.h"
#include "error.h"
#include "log.h"
#include "map_addr.h"
#include "map_im.h"
#include "xml.h"

/* ---- show ---- */

static const struct {
    const char *name;
    enum pl_show show;
} shows[] = {
    {"chat", PL_SHOW_CHAT},
    {"away", PL_SHOW_AWAY},
    {"xa", PL_SHOW_XA},
    {"dnd", PL_SHOW_DND},
};

const char *pl_show_name(enum pl_show s)
{
    for (size_t k = 0; k < sizeof(shows) / sizeof(shows[0]); k++)
        if (shows[k].show == s)
            return shows[k].name;
    return NULL;
}

enum pl_show pl_show_parse(const char *s)
{
    for (size_t k = 0; s && k < sizeof(shows) / sizeof(shows[0]); k++)
        if (strcmp(shows[k].name, s) == 0)
            return shows[k].show;
    return PL_SHOW_NONE;
}

/* RFC 4480 §3.2 activities and the <show/> each stands for. */
static const struct {
    const char *name;
    enum pl_show show;
} activities[] = {
    {"appointment", PL_SHOW_DND},
    {"away", PL_SHOW_AWAY},
    {"breakfast", PL_SHOW_AWAY},
    {"busy", PL_SHOW_DND},
    {"dinner", PL_SHOW_AWAY},
    {"holiday", PL_SHOW_XA},
    {"in-transit", PL_SHOW_AWAY},
    {"looking-for-work", PL_SHOW_NONE},
    {"lunch", PL_SHOW_AWAY},
    {"meal", PL_SHOW_AWAY},
    {"meeting", PL_SHOW_DND},
    {"on-the-phone", PL_SHOW_DND},
    {"other", PL_SHOW_NONE},
    {"performance", PL_SHOW_DND},
    {"permanent-absence", PL_SHOW_XA},
    {"playing", PL_SHOW_AWAY},
    {"presentation", PL_SHOW_DND},
    {"shopping", PL_SHOW_AWAY},
    {"sleeping", PL_SHOW_XA},
    {"spectator", PL_SHOW_AWAY},
    {"steering", PL_SHOW_DND},
    {"travel", PL_SHOW_XA},
    {"tv", PL_SHOW_AWAY},
    {"unknown", PL_SHOW_NONE},
    {"vacation", PL_SHOW_XA},
    {"working", PL_SHOW_NONE},
    {"worship", PL_SHOW_DND},
};

/* ---- Content-Type ---- */

int pl_pidf_check_type(struct pl_str content_type)
{
    struct pl_sip_media_type mt;
    if (pl_sip_media_type_parse(content_type, &mt) != PL_OK ||
        !pl_sip_media_type_is(&mt, "application", "pidf+xml"))
        return PL_ENOT_ACCEPTABLE;
    if (mt.charset.len &&
        !(mt.charset.len == 5 && strncasecmp(mt.charset.p, "utf-8", 5) == 0))
        return PL_ENOT_ACCEPTABLE;
    return PL_OK;
}

/* ---- reading ---- */

/* What one tuple says. */
struct tuple {
    enum pl_pidf_basic basic; /* its <basic/> */
    int has_show;             /* it has an XMPP <show/> */
    enum pl_show show;        /* that <show/> */
    enum pl_show activity;    /* from RPID activities inside it */
    int has_activity;         /* it has RPID activities */
    int priority;             /* contact priority 0..127 or -1 */
    int counts;               /* an IM service of the presentity */
    struct pl_node *note;     /* its first <note/> */
};

/* What the whole document says besides its tuples. */
struct doc {
    struct pl_stanza *st;  /* the parsed document */
    struct pl_node *note;  /* first <note/> of <presence/> */
    struct pl_node *pnote; /* first <dm:note/> of the person */
    struct pl_node *anote; /* <rpid:note/> or <rpid:other/> of activities */
    enum pl_show activity; /* from the person's activities */
    int has_activity;      /* the person has activities */
    int idle;              /* the person's user-input is idle */
    int person;            /* a <dm:person/> was read (the first counts) */
};

static int is(const struct pl_node *el, const char *ns, const char *name)
{
    return strcmp(el->ns, ns) == 0 && strcmp(el->name, name) == 0;
}

/* The text of el without leading and trailing whitespace. */
static struct pl_str trimmed(struct pl_stanza *st, const struct pl_node *el)
{
    size_t n = 0;
    const char *t = pl_node_text(st, el, &n);
    while (n > 0 && strchr(" \t\r\n", t[0])) {
        t++;
        n--;
    }
    while (n > 0 && strchr(" \t\r\n", t[n - 1]))
        n--;
    return (struct pl_str){t, n};
}

static int str_eq(struct pl_str s, const char *c)
{
    return s.len == strlen(c) && memcmp(s.p, c, s.len) == 0;
}

static int str_ieq(struct pl_str s, const char *c)
{
    return s.len == strlen(c) && strncasecmp(s.p, c, s.len) == 0;
}

/* mustUnderstand="1"/"true", unqualified or in the PIDF namespace. */
static int must_understand(const struct pl_node *el)
{
    for (const struct pl_attr *a = el->attrs; a; a = a->next)
        if (strcmp(a->name, "mustUnderstand") == 0 &&
            (!a->ns || strcmp(a->ns, PL_NS_PIDF) == 0) &&
            (strcmp(a->value, "1") == 0 || strcmp(a->value, "true") == 0))
            return 1;
    return 0;
}

/* Whether el holds an element outside ns marked mustUnderstand (RFC 3863
 * §4.2.3): then el as a whole is not understood. */
static int has_foreign_must(const struct pl_node *el, const char *ns)
{
    for (struct pl_node *c = pl_node_first_elem(el); c;
         c = pl_node_next_elem(c)) {
        if (strcmp(c->ns, ns) != 0 && must_understand(c))
            return 1;
        if (has_foreign_must(c, ns))
            return 1;
    }
    return 0;
}

/* RFC 4480 §3.2: the least available show of the activities, and their
 * note (or <other/> text) in *note. */
static enum pl_show read_activities(const struct pl_node *el,
                                    struct pl_node **note)
{
    enum pl_show show = PL_SHOW_NONE;
    for (struct pl_node *c = pl_node_first_elem(el); c;
         c = pl_node_next_elem(c)) {
        if (strcmp(c->ns, PL_NS_RPID) != 0)
            continue;
        if (strcmp(c->name, "note") == 0 || strcmp(c->name, "other") == 0) {
            if (!*note)
                *note = c;
            continue;
        }
        for (size_t k = 0; k < sizeof(activities) / sizeof(activities[0]); k++)
            if (strcmp(c->name, activities[k].name) == 0 &&
                activities[k].show < show)
                show = activities[k].show;
    }
    return show;
}

/* An XMPP <show/> extension element (RFC 8048 §6.2 note 7). */
static void read_show(struct pl_stanza *st, const struct pl_node *el,
                      struct tuple *t)
{
    if (t->has_show || has_foreign_must(el, PL_NS_CLIENT))
        return;
    struct pl_str v = trimmed(st, el);
    for (size_t k = 0; k < sizeof(shows) / sizeof(shows[0]); k++)
        if (str_eq(v, shows[k].name)) {
            t->show = shows[k].show;
            t->has_show = 1;
        }
}

/* An extension child of <tuple/> or <status/> this file understands. */
static void read_extension(struct doc *d, const struct pl_node *el,
                           struct tuple *t)
{
    if (is(el, PL_NS_CLIENT, "show")) {
        read_show(d->st, el, t);
    } else if (is(el, PL_NS_RPID, "activities") &&
               !has_foreign_must(el, PL_NS_RPID)) {
        enum pl_show s = read_activities(el, &d->anote);
        if (!t->has_activity || s < t->activity)
            t->activity = s;
        t->has_activity = 1;
    }
}

/* RFC 3863 §4.1.5 qvalue: 0(.d{0,3})? or 1(.0{0,3})?, to 0..127. */
static int read_priority(const char *v)
{
    if (!v || (v[0] != '0' && v[0] != '1'))
        return -1;
    int milli = (v[0] - '0') * 1000, scale = 100;
    const char *p = v + 1;
    if (*p == '.') {
        for (p++; *p >= '0' && *p <= '9' && scale > 0; p++, scale /= 10)
            milli += (*p - '0') * scale;
    }
    if (*p != '\0' || milli > 1000)
        return -1;
    return (milli * 127 + 500) / 1000;
}

/* Whether a <contact/> URI reaches an IM service of the presentity. */
static int im_contact(struct pl_str uri)
{
    static const char *const im[] = {"sip:", "sips:", "im:", "pres:", "xmpp:"};
    for (size_t k = 0; k < sizeof(im) / sizeof(im[0]); k++) {
        size_t n = strlen(im[k]);
        if (uri.len >= n && strncasecmp(uri.p, im[k], n) == 0)
            return 1;
    }
    return 0;
}

static void read_tuple(struct doc *d, const struct pl_node *el, struct tuple *t)
{
    memset(t, 0, sizeof(*t));
    t->priority = -1;
    t->counts = 1;
    for (struct pl_node *c = pl_node_first_elem(el); c;
         c = pl_node_next_elem(c)) {
        if (is(c, PL_NS_PIDF, "status")) {
            for (struct pl_node *s = pl_node_first_elem(c); s;
                 s = pl_node_next_elem(s)) {
                if (is(s, PL_NS_PIDF, "basic") && t->basic == PL_PIDF_NONE) {
                    struct pl_str v = trimmed(d->st, s);
                    if (str_ieq(v, "open"))
                        t->basic = PL_PIDF_OPEN;
                    else if (str_ieq(v, "closed"))
                        t->basic = PL_PIDF_CLOSED;
                } else {
                    read_extension(d, s, t);
                }
            }
        } else if (is(c, PL_NS_PIDF, "contact")) {
            struct pl_str v = trimmed(d->st, c);
            if (v.len && !im_contact(v))
                t->counts = 0;
            t->priority = read_priority(pl_node_attr(c, "priority"));
        } else if (is(c, PL_NS_PIDF, "note")) {
            if (!t->note)
                t->note = c;
        } else if (is(c, PL_NS_RPID, "relationship")) {
            /* RFC 4480 §3.9: a service reaching someone else. */
            struct pl_node *r = pl_node_first_elem(c);
            if (r && !is(r, PL_NS_RPID, "self"))
                t->counts = 0;
        } else {
            read_extension(d, c, t);
        }
    }
}

static void read_person(struct doc *d, const struct pl_node *el)
{
    for (struct pl_node *c = pl_node_first_elem(el); c;
         c = pl_node_next_elem(c)) {
        if (is(c, PL_NS_RPID, "activities") &&
            !has_foreign_must(c, PL_NS_RPID)) {
            enum pl_show s = read_activities(c, &d->anote);
            if (!d->has_activity || s < d->activity)
                d->activity = s;
            d->has_activity = 1;
        } else if (is(c, PL_NS_RPID, "user-input")) {
            if (str_eq(trimmed(d->st, c), "idle"))
                d->idle = 1;
        } else if (is(c, PL_NS_PIDF_DM, "note")) {
            if (!d->pnote)
                d->pnote = c;
        }
    }
}

/* Copies the note text of el (trimmed, at most max bytes, cut at a
 * character boundary) and its xml:lang into p. */
static void take_note(struct pl_pidf *p, struct pl_stanza *st,
                      const struct pl_node *el, size_t max)
{
    struct pl_str v = trimmed(st, el);
    if (v.len == 0)
        return;
    size_t n = v.len;
    if (n > max) {
        n = max;
        while (n > 0 && ((unsigned char)v.p[n] & 0xc0) == 0x80)
            n--;
        while (n > 0 && strchr(" \t\r\n", v.p[n - 1]))
            n--;
        if (n == 0)
            return;
    }
    p->note = pl_strndup(v.p, n);
    for (const struct pl_node *e = el; e; e = e->parent) {
        const char *l = pl_node_attr_ns(e, PL_NS_XML, "lang");
        if (l) {
            p->note_lang = pl_strdup(l);
            break;
        }
    }
}

int pl_pidf_parse(struct pl_str doc, const struct pl_pidf_limits *limits,
                  struct pl_pidf *out)
{
    size_t max_size = limits && limits->max_size ? limits->max_size
                                                 : PL_PIDF_MAX_SIZE;
    unsigned max_depth = limits && limits->max_depth ? limits->max_depth
                                                     : PL_PIDF_MAX_DEPTH;
    size_t max_note = limits && limits->max_note ? limits->max_note
                                                 : PL_PIDF_MAX_NOTE;
    if (doc.len > max_size)
        return PL_ELIMIT;
    struct pl_xml_limits xl = {max_size, max_depth};
    struct pl_stanza *st = NULL;
    if (pl_xml_parse_fragment_limited(doc.p, doc.len, &xl, &st) != PL_OK) {
        /* Tell a limit from bad XML: the same text without limits. */
        struct pl_xml_limits none = {max_size, 0};
        if (pl_xml_parse_fragment_limited(doc.p, doc.len, &none, &st) ==
            PL_OK) {
            pl_stanza_unref(st);
            return PL_ELIMIT;
        }
        return PL_EINVAL;
    }
    struct pl_node *root = pl_stanza_root(st);
    if (!is(root, PL_NS_PIDF, "presence")) {
        pl_stanza_unref(st);
        return PL_EINVAL;
    }

    struct doc d = {st, NULL, NULL, NULL, PL_SHOW_NONE, 0, 0, 0};
    struct tuple best = {0}, cur;
    int have_best = 0;
    enum pl_pidf_basic basic = PL_PIDF_NONE;
    /* The tuples that count; if none does, all of them. */
    for (int all = 0; all < 2 && !have_best; all++) {
        for (struct pl_node *c = pl_node_first_elem(root); c;
             c = pl_node_next_elem(c)) {
            if (!is(c, PL_NS_PIDF, "tuple"))
                continue;
            read_tuple(&d, c, &cur);
            if (!all && !cur.counts)
                continue;
            if (cur.basic == PL_PIDF_OPEN)
                basic = PL_PIDF_OPEN;
            else if (cur.basic == PL_PIDF_CLOSED && basic == PL_PIDF_NONE)
                basic = PL_PIDF_CLOSED;
            /* Rank: open first, then the most available show, then the
             * highest priority; the first of equals stays. */
            int better = !have_best;
            if (have_best) {
                int co = cur.basic == PL_PIDF_OPEN;
                int bo = best.basic == PL_PIDF_OPEN;
                enum pl_show cs = cur.has_show ? cur.show : PL_SHOW_NONE;
                enum pl_show bs = best.has_show ? best.show : PL_SHOW_NONE;
                better = co != bo   ? co > bo
                         : cs != bs ? cs > bs
                                    : cur.priority > best.priority;
            }
            if (better) {
                best = cur;
                have_best = 1;
            }
        }
    }
    for (struct pl_node *c = pl_node_first_elem(root); c;
         c = pl_node_next_elem(c)) {
        if (is(c, PL_NS_PIDF, "note") && !d.note) {
            d.note = c;
        } else if (is(c, PL_NS_PIDF_DM, "person") && !d.person) {
            d.person = 1;
            read_person(&d, c);
        }
    }

    struct pl_pidf p = {basic, PL_SHOW_NONE, NULL, NULL, -1, NULL};
    if (basic == PL_PIDF_OPEN) {
        if (best.has_show)
            p.show = best.show;
        else if (d.has_activity)
            p.show = d.activity;
        else if (best.has_activity)
            p.show = best.activity;
        else if (d.idle)
            p.show = PL_SHOW_AWAY;
    }
    if (have_best)
        p.priority = best.priority;
    struct pl_node *note = have_best && best.note ? best.note
                           : d.note               ? d.note
                           : d.pnote              ? d.pnote
                                                  : d.anote;
    if (note)
        take_note(&p, st, note, max_note);
    const char *entity = pl_node_attr(root, "entity");
    if (entity)
        p.entity = pl_strdup(entity);
    pl_stanza_unref(st);
    *out = p;
    return PL_OK;
}

void pl_pidf_clear(struct pl_pidf *p)
{
    pl_free(p->note);
    pl_free(p->note_lang);
    pl_free(p->entity);
    p->note = p->note_lang = p->entity = NULL;
}

/* ---- PIDF -> <presence/> ---- */

/* Whether s can be an XML attribute or text as is (UTF-8 already). */
static int xml_ok(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p < 0x20 && *p != '\t' && *p != '\n' && *p != '\r')
            return 0;
    return u8_check((const uint8_t *)s, strlen(s)) == NULL;
}

/* Appends text as XML character data: & < > escaped, and CR as a
 * character reference, which the parser would otherwise turn into LF. */
static void append_text(struct pl_buf *b, const char *s)
{
    const char *cr;
    while ((cr = strchr(s, '\r'))) {
        pl_buf_append_escaped(b, s, (size_t)(cr - s), 0);
        pl_buf_append_str(b, "&#13;");
        s = cr + 1;
    }
    pl_buf_append_escaped(b, s, strlen(s), 0);
}

/* RFC 5646 simple form, as map_im.c checks Content-Language. */
static int is_lang(const char *s)
{
    size_t sub = 0;
    if (!*s)
        return 0;
    for (; *s; s++) {
        if (*s == '-') {
            if (sub == 0)
                return 0;
            sub = 0;
        } else if ((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
                   (*s >= '0' && *s <= '9')) {
            if (++sub > 8)
                return 0;
        } else {
            return 0;
        }
    }
    return sub > 0;
}

struct pl_stanza *pl_pidf_to_presence(const struct pl_pidf *p, const char *from,
                                      const char *to)
{
    if (!xml_ok(from) || (to && !xml_ok(to)) || (p->note && !xml_ok(p->note)))
        return NULL;
    /* Text and parse: the one public way to an xml:lang attribute. */
    struct pl_buf x = {0};
    pl_buf_append_str(&x, "<presence xmlns='jabber:client' from='");
    pl_buf_append_escaped(&x, from, strlen(from), 1);
    pl_buf_append_str(&x, "'");
    if (to) {
        pl_buf_append_str(&x, " to='");
        pl_buf_append_escaped(&x, to, strlen(to), 1);
        pl_buf_append_str(&x, "'");
    }
    int open = p->basic == PL_PIDF_OPEN;
    if (!open)
        pl_buf_append_str(&x, " type='unavailable'");
    pl_buf_append_str(&x, ">");
    const char *show = open ? pl_show_name(p->show) : NULL;
    if (show)
        pl_buf_printf(&x, "<show>%s</show>", show);
    if (p->note) {
        pl_buf_append_str(&x, "<status");
        if (p->note_lang && is_lang(p->note_lang))
            pl_buf_printf(&x, " xml:lang='%s'", p->note_lang);
        pl_buf_append_str(&x, ">");
        append_text(&x, p->note);
        pl_buf_append_str(&x, "</status>");
    }
    if (p->priority >= 0 && p->priority <= 127)
        pl_buf_printf(&x, "<priority>%d</priority>", p->priority);
    pl_buf_append_str(&x, "</presence>");
    struct pl_stanza *st = NULL;
    if (pl_xml_parse_fragment(x.data, x.len, &st) != PL_OK)
        st = NULL;
    pl_buf_reset(&x);
    return st;
}

/* ---- <presence/> -> PIDF ---- */

static const char *lang_of(const struct pl_node *el)
{
    for (; el; el = el->parent) {
        const char *l = pl_node_attr_ns(el, PL_NS_XML, "lang");
        if (l)
            return l;
    }
    return NULL;
}

/* Whether el is in language want (NULL: has no xml:lang of its own). */
static int lang_match(const struct pl_node *el, const char *want)
{
    const char *l = pl_node_attr_ns(el, PL_NS_XML, "lang");
    return want ? l == NULL || strcasecmp(l, want) == 0 : l == NULL;
}

int pl_pidf_from_presence(struct pl_stanza *presence, struct pl_pidf *out)
{
    struct pl_node *root = pl_stanza_root(presence);
    const char *type = pl_stanza_attr(presence, "type");
    struct pl_pidf p = {PL_PIDF_OPEN, PL_SHOW_NONE, NULL, NULL, -1, NULL};
    if (strcmp(root->name, "presence") != 0)
        return PL_EINVAL;
    if (type && strcmp(type, "unavailable") == 0)
        p.basic = PL_PIDF_CLOSED;
    else if (type)
        return PL_EINVAL;
    const char *want = lang_of(root);
    struct pl_node *status = NULL;
    for (struct pl_node *c = pl_node_first_elem(root); c;
         c = pl_node_next_elem(c)) {
        if (strcmp(c->ns, root->ns) != 0)
            continue;
        if (strcmp(c->name, "show") == 0 && p.basic == PL_PIDF_OPEN) {
            p.show = pl_show_parse(pl_node_text(presence, c, NULL));
        } else if (strcmp(c->name, "priority") == 0) {
            const char *v = pl_node_text(presence, c, NULL);
            char *end;
            long n = strtol(v, &end, 10);
            if (end != v && *end == '\0' && n >= 0 && n <= 127)
                p.priority = (int)n;
        } else if (strcmp(c->name, "status") == 0) {
            /* RFC 6121 §4.7.2.2: the one in the stanza's language, else
             * the first. */
            if (!status || (!lang_match(status, want) && lang_match(c, want)))
                status = c;
        }
    }
    if (status) {
        size_t n = 0;
        const char *t = pl_node_text(presence, status, &n);
        if (n) {
            p.note = pl_strndup(t, n);
            const char *l = lang_of(status);
            if (l)
                p.note_lang = pl_strdup(l);
        }
    }
    *out = p;
    return PL_OK;
}

/* ---- writing ---- */

/* xs:ID from a resource: "ID-" then [A-Za-z0-9.-] as is, other bytes _hh
 * (so that two resources never share an id). */
static void tuple_id(struct pl_buf *b, const char *res)
{
    static const char hex[] = "0123456789abcdef";
    pl_buf_append_str(b, "ID-");
    for (const unsigned char *p = (const unsigned char *)res; *p; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
            (*p >= '0' && *p <= '9') || *p == '.' || *p == '-') {
            pl_buf_append(b, (const char *)p, 1);
        } else {
            char e[3] = {'_', hex[*p >> 4], hex[*p & 15]};
            pl_buf_append(b, e, 3);
        }
    }
}

/* RFC 8048 §6.2 note 6: XMPP priority 0..127 as a qvalue. */
static void qvalue(struct pl_buf *b, int prio)
{
    int milli = prio * 1000 / 127;
    if (milli >= 1000)
        pl_buf_append_str(b, "1");
    else if (milli == 0)
        pl_buf_append_str(b, "0");
    else
        pl_buf_printf(b, "0.%03d", milli);
}

/* One <tuple/>; id NULL: from the resource. */
static int write_tuple(struct pl_buf *b, const struct pl_pidf_tuple *t,
                       const char *id)
{
    const struct pl_pidf *s = t->state;
    char *contact = NULL;
    if (pl_sip_jid_to_uri(t->jid, PL_SIP_SCHEME_SIP, PL_SIP_MAP_GRUU,
                          &contact) != PL_OK)
        return PL_EJID_MALFORMED;
    pl_buf_append_str(b, "<tuple id=\"");
    if (id)
        pl_buf_append_str(b, id);
    else
        tuple_id(b, t->jid->resource ? t->jid->resource : "");
    pl_buf_append_str(b, "\">\n<status><basic>");
    int open = s->basic == PL_PIDF_OPEN;
    pl_buf_append_str(b, open ? "open" : "closed");
    pl_buf_append_str(b, "</basic></status>\n");
    const char *show = open ? pl_show_name(s->show) : NULL;
    if (show)
        pl_buf_printf(b, "<show xmlns=\"jabber:client\">%s</show>\n", show);
    pl_buf_append_str(b, "<contact");
    if (s->priority >= 0 && s->priority <= 127) {
        pl_buf_append_str(b, " priority=\"");
        qvalue(b, s->priority);
        pl_buf_append_str(b, "\"");
    }
    pl_buf_append_str(b, ">");
    pl_buf_append_escaped(b, contact, strlen(contact), 0);
    pl_buf_append_str(b, "</contact>\n");
    pl_free(contact);
    if (s->note) {
        /* COMPAT baresip: a bare <note>; the language travels in
         * Content-Language (RFC 8048 Table 1). */
        pl_buf_append_str(b, "<note>");
        append_text(b, s->note);
        pl_buf_append_str(b, "</note>\n");
    }
    pl_buf_append_str(b, "</tuple>\n");
    return PL_OK;
}

int pl_pidf_write(const struct pl_jid *entity, const struct pl_pidf_tuple *t,
                  size_t n, struct pl_buf *out)
{
    struct pl_buf b = {0};
    char *pres = NULL;
    struct pl_jid *bare = pl_jid_bare(entity);
    int rc = pl_sip_jid_to_uri(bare, PL_SIP_SCHEME_PRES, 0, &pres);
    if (rc != PL_OK)
        goto done;
    pl_buf_append_str(&b, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                          "<presence xmlns=\"" PL_NS_PIDF "\"\n"
                          " xmlns:dm=\"" PL_NS_PIDF_DM "\"\n"
                          " xmlns:rpid=\"" PL_NS_RPID "\"\n"
                          " entity=\"");
    pl_buf_append_escaped(&b, pres, strlen(pres), 1);
    pl_buf_append_str(&b, "\">\n");
    enum pl_show best = PL_SHOW_NONE;
    int any_open = 0;
    for (size_t i = 0; i < n; i++) {
        rc = write_tuple(&b, &t[i], NULL);
        if (rc != PL_OK)
            goto done;
        if (t[i].state->basic == PL_PIDF_OPEN &&
            (!any_open || t[i].state->show > best)) {
            best = t[i].state->show;
            any_open = 1;
        }
    }
    if (n == 0) {
        struct pl_pidf closed = {PL_PIDF_CLOSED, PL_SHOW_NONE, NULL,
                                 NULL,           -1,           NULL};
        struct pl_pidf_tuple off = {bare, &closed};
        rc = write_tuple(&b, &off, "offline");
        if (rc != PL_OK)
            goto done;
    }
    if (any_open && best < PL_SHOW_NONE) {
        pl_buf_append_str(&b, "<dm:person id=\"p\"><rpid:activities>");
        pl_buf_append_str(&b, best == PL_SHOW_DND ? "<rpid:busy/>"
                                                  : "<rpid:away/>");
        pl_buf_append_str(&b, "</rpid:activities></dm:person>\n");
    }
    pl_buf_append_str(&b, "</presence>\n");
    pl_buf_append(out, b.data, b.len);
    rc = PL_OK;
done:
    pl_buf_reset(&b);
    pl_free(pres);
    pl_jid_free(bare);
    return rc;
}
