/*
 * mam.c - archive queries, XEP-0082 times and archiving preferences;
 * see mam.h.
 */
#include "mam.h"

#include <ctype.h>
#include <stdlib.h>
#include <time.h>

void pl_mam_query_free(struct pl_mam_query *q)
{
    pl_free(q->queryid);
    pl_free(q->with);
    pl_free(q->with_res);
    pl_free(q->after_id);
    pl_free(q->before_id);
    for (int i = 0; i < q->nids; i++)
        pl_free(q->ids[i]);
    pl_free(q->ids);
    pl_free(q->after);
    pl_free(q->before);
    memset(q, 0, sizeof(*q));
    q->max = -1;
}

/* n decimal digits at s into *v. */
static int digits(const char *s, int n, int *v)
{
    *v = 0;
    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i]))
            return 0;
        *v = *v * 10 + (s[i] - '0');
    }
    return 1;
}

int pl_mam_time_parse(const char *s, long long *us)
{
    /* CCYY-MM-DDThh:mm:ss[.sss]TZD (XEP-0082 §3.2). */
    int y, mo, d, h, mi, sec;
    if (strlen(s) < 20 || !digits(s, 4, &y) || s[4] != '-' ||
        !digits(s + 5, 2, &mo) || s[7] != '-' || !digits(s + 8, 2, &d) ||
        s[10] != 'T' || !digits(s + 11, 2, &h) || s[13] != ':' ||
        !digits(s + 14, 2, &mi) || s[16] != ':' || !digits(s + 17, 2, &sec))
        return PL_EINVAL;
    if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60)
        return PL_EINVAL;
    const char *p = s + 19;
    long frac = 0;
    if (*p == '.') {
        p++;
        int n = 0;
        while (isdigit((unsigned char)*p)) {
            if (n < 6) {
                frac = frac * 10 + (*p - '0');
                n++;
            }
            p++;
        }
        if (n == 0)
            return PL_EINVAL;
        while (n++ < 6)
            frac *= 10;
    }
    long off = 0;
    if (*p == 'Z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int oh, om;
        if (!digits(p + 1, 2, &oh) || p[3] != ':' || !digits(p + 4, 2, &om) ||
            oh > 23 || om > 59)
            return PL_EINVAL;
        off = (oh * 60L + om) * 60L * (*p == '-' ? -1 : 1);
        p += 6;
    } else {
        return PL_EINVAL;
    }
    if (*p)
        return PL_EINVAL;
    struct tm tm = {0};
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = sec;
    time_t t = timegm(&tm);
    if (t == (time_t)-1 && !(y == 1969 && mo == 12 && d == 31))
        return PL_EINVAL;
    *us = ((long long)t - off) * 1000000LL + frac;
    return PL_OK;
}

void pl_mam_time_format(long long us, char *buf, size_t n)
{
    time_t t = (time_t)(us / 1000000LL);
    long frac = (long)(us % 1000000LL);
    if (frac < 0) {
        frac += 1000000;
        t--;
    }
    struct tm tm;
    gmtime_r(&t, &tm);
    snprintf(buf, n, "%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, frac);
}

/* Text of the first <value/> of a form field, NULL if none. */
static const char *field_value(struct pl_stanza *st, const struct pl_node *f)
{
    struct pl_node *v = pl_node_child(f, "value", PL_NS_XDATA);
    return v ? pl_node_text(st, v, NULL) : NULL;
}

static int fail(const char **text, const char *why, int code)
{
    *text = why;
    return code;
}

/* The query form (XEP-0313 §4.1). */
static int parse_form(struct pl_stanza *st, const struct pl_node *x,
                      struct pl_mam_query *q, const char **text)
{
    const char *type = pl_node_attr(x, "type");
    if (type && strcmp(type, "submit") != 0)
        return fail(text, "the form must be of type 'submit'", PL_EBAD_REQUEST);
    for (struct pl_node *f = pl_node_first_elem(x); f;
         f = pl_node_next_elem(f)) {
        if (strcmp(f->name, "field") != 0 || strcmp(f->ns, PL_NS_XDATA))
            continue;
        const char *var = pl_node_attr(f, "var");
        const char *v = field_value(st, f);
        if (!var)
            return fail(text, "a field without 'var'", PL_EBAD_REQUEST);
        if (strcmp(var, "FORM_TYPE") == 0) {
            if (!v || strcmp(v, PL_NS_MAM) != 0)
                return fail(text, "FORM_TYPE must be urn:xmpp:mam:2",
                            PL_EBAD_REQUEST);
        } else if (strcmp(var, "with") == 0) {
            struct pl_jid *j;
            if (!v || pl_jid_parse(pl_str_c(v), &j) != PL_OK)
                return fail(text, "'with' is not a valid JID", PL_EBAD_REQUEST);
            pl_free(q->with);
            pl_free(q->with_res);
            q->with = pl_strdup(j->bare);
            q->with_res = j->resource ? pl_strdup(j->resource) : NULL;
            pl_jid_free(j);
        } else if (strcmp(var, "start") == 0 || strcmp(var, "end") == 0) {
            long long t;
            if (!v || pl_mam_time_parse(v, &t) != PL_OK)
                return fail(text,
                            "'start' and 'end' must be XEP-0082 "
                            "DateTime values",
                            PL_EBAD_REQUEST);
            if (var[0] == 's')
                q->start = t > 0 ? t : 1;
            else
                q->end = t > 0 ? t : 1;
        } else if (strcmp(var, "after-id") == 0 ||
                   strcmp(var, "before-id") == 0) {
            if (!v || !*v)
                return fail(text, "an empty message id", PL_EBAD_REQUEST);
            char **dst = var[0] == 'a' ? &q->after_id : &q->before_id;
            pl_free(*dst);
            *dst = pl_strdup(v);
        } else if (strcmp(var, "ids") == 0) {
            for (struct pl_node *e = pl_node_first_elem(f); e;
                 e = pl_node_next_elem(e)) {
                if (strcmp(e->name, "value") != 0)
                    continue;
                const char *id = pl_node_text(st, e, NULL);
                if (!*id)
                    return fail(text, "an empty message id", PL_EBAD_REQUEST);
                q->ids = pl_realloc(q->ids,
                                    (size_t)(q->nids + 1) * sizeof(*q->ids));
                q->ids[q->nids++] = pl_strdup(id);
            }
            if (!q->nids)
                return fail(text, "'ids' without a value", PL_EBAD_REQUEST);
        } else {
            /* XEP-0313 §4.1.5: unknown fields are refused. */
            return fail(text, "unsupported query field",
                        PL_EFEATURE_NOT_IMPLEMENTED);
        }
    }
    return PL_OK;
}

/* The XEP-0059 <set/>. */
static int parse_rsm(struct pl_stanza *st, const struct pl_node *set,
                     struct pl_mam_query *q, const char **text)
{
    for (struct pl_node *e = pl_node_first_elem(set); e;
         e = pl_node_next_elem(e)) {
        if (strcmp(e->ns, PL_NS_RSM) != 0)
            continue;
        const char *v = pl_node_text(st, e, NULL);
        if (strcmp(e->name, "max") == 0) {
            char *end;
            long n = strtol(v, &end, 10);
            if (!*v || *end || n < 0)
                return fail(text, "<max/> must be a non-negative integer",
                            PL_EBAD_REQUEST);
            q->max = n;
        } else if (strcmp(e->name, "after") == 0) {
            if (!*v)
                return fail(text, "an empty <after/>", PL_EBAD_REQUEST);
            pl_free(q->after);
            q->after = pl_strdup(v);
        } else if (strcmp(e->name, "before") == 0) {
            pl_free(q->before);
            q->before = pl_strdup(v);
        } else if (strcmp(e->name, "index") == 0) {
            /* XEP-0059 §2.5: index paging is optional. */
            return fail(text, "paging by index is not supported",
                        PL_EFEATURE_NOT_IMPLEMENTED);
        }
    }
    return PL_OK;
}

int pl_mam_query_parse(struct pl_stanza *st, const struct pl_node *query,
                       struct pl_mam_query *out, const char **text)
{
    memset(out, 0, sizeof(*out));
    out->max = -1;
    *text = NULL;
    const char *qid = pl_node_attr(query, "queryid");
    if (qid)
        out->queryid = pl_strdup(qid);
    int rc = PL_OK;
    for (struct pl_node *e = pl_node_first_elem(query); e && rc == PL_OK;
         e = pl_node_next_elem(e)) {
        if (strcmp(e->name, "x") == 0 && strcmp(e->ns, PL_NS_XDATA) == 0)
            rc = parse_form(st, e, out, text);
        else if (strcmp(e->name, "set") == 0 && strcmp(e->ns, PL_NS_RSM) == 0)
            rc = parse_rsm(st, e, out, text);
        else if (strcmp(e->name, "flip-page") == 0 &&
                 strcmp(e->ns, PL_NS_MAM) == 0)
            out->flip = 1;
    }
    if (rc == PL_OK && out->start && out->end && out->start > out->end)
        rc = fail(text, "'start' is after 'end'", PL_EBAD_REQUEST);
    if (rc != PL_OK)
        pl_mam_query_free(out);
    return rc;
}

/* ---- preferences ---- */

static const char *const default_names[] = {"always", "never", "roster"};

const char *pl_mam_default_name(int def)
{
    return def >= 0 && def <= 2 ? default_names[def] : "always";
}

int pl_mam_default_parse(const char *s)
{
    for (int i = 0; i < 3; i++)
        if (s && strcmp(s, default_names[i]) == 0)
            return i;
    return -1;
}

void pl_mam_prefs_free(struct pl_mam_prefs *p)
{
    for (int i = 0; i < p->nalways; i++)
        pl_free(p->always[i]);
    for (int i = 0; i < p->nnever; i++)
        pl_free(p->never[i]);
    pl_free(p->always);
    pl_free(p->never);
    memset(p, 0, sizeof(*p));
}

static int parse_list(struct pl_stanza *st, const struct pl_node *el, long max,
                      char ***v, int *n)
{
    if (!el)
        return PL_OK;
    for (struct pl_node *j = pl_node_first_elem(el); j;
         j = pl_node_next_elem(j)) {
        if (strcmp(j->name, "jid") != 0 || strcmp(j->ns, PL_NS_MAM) != 0)
            continue;
        struct pl_jid *jid;
        if (*n >= max ||
            pl_jid_parse(pl_str_c(pl_node_text(st, j, NULL)), &jid) != PL_OK)
            return PL_EBAD_REQUEST;
        *v = pl_realloc(*v, (size_t)(*n + 1) * sizeof(**v));
        (*v)[(*n)++] = pl_strdup(jid->full);
        pl_jid_free(jid);
    }
    return PL_OK;
}

int pl_mam_prefs_parse(struct pl_stanza *st, const struct pl_node *el,
                       long max_jids, struct pl_mam_prefs *out)
{
    memset(out, 0, sizeof(*out));
    out->def = pl_mam_default_parse(pl_node_attr(el, "default"));
    if (out->def < 0)
        return PL_EBAD_REQUEST;
    int rc = parse_list(st, pl_node_child(el, "always", PL_NS_MAM), max_jids,
                        &out->always, &out->nalways);
    if (rc == PL_OK)
        rc = parse_list(st, pl_node_child(el, "never", PL_NS_MAM), max_jids,
                        &out->never, &out->nnever);
    if (rc != PL_OK)
        pl_mam_prefs_free(out);
    return rc;
}

void pl_mam_prefs_build(const struct pl_mam_prefs *p, struct pl_stanza *st,
                        struct pl_node *parent)
{
    struct pl_node *el = pl_node_add_child(st, parent, "prefs", PL_NS_MAM);
    pl_node_set_attr(st, el, "default", pl_mam_default_name(p->def));
    struct pl_node *a = pl_node_add_child(st, el, "always", PL_NS_MAM);
    for (int i = 0; i < p->nalways; i++) {
        struct pl_node *j = pl_node_add_child(st, a, "jid", PL_NS_MAM);
        pl_node_add_text(st, j, p->always[i], strlen(p->always[i]));
    }
    struct pl_node *n = pl_node_add_child(st, el, "never", PL_NS_MAM);
    for (int i = 0; i < p->nnever; i++) {
        struct pl_node *j = pl_node_add_child(st, n, "jid", PL_NS_MAM);
        pl_node_add_text(st, j, p->never[i], strlen(p->never[i]));
    }
}

/* Whether list entry e names peer (see pl_mam_prefs_decide). */
static int matches(const char *e, const char *peer)
{
    size_t el = strlen(e);
    if (strncmp(peer, e, el) == 0 && (peer[el] == '\0' || peer[el] == '/'))
        return 1; /* the same JID, or the bare JID of a full peer */
    if (!strchr(e, '@') && !strchr(e, '/')) {
        /* A domain: any JID at it. */
        const char *at = strchr(peer, '@');
        const char *dom = at ? at + 1 : peer;
        return strncmp(dom, e, el) == 0 && (dom[el] == '\0' || dom[el] == '/');
    }
    return 0;
}

int pl_mam_prefs_decide(const struct pl_mam_prefs *p, const char *peer)
{
    for (int i = 0; i < p->nnever; i++)
        if (matches(p->never[i], peer))
            return 0;
    for (int i = 0; i < p->nalways; i++)
        if (matches(p->always[i], peer))
            return 1;
    return p->def == PL_MAM_ALWAYS ? 1 : p->def == PL_MAM_NEVER ? 0 : -1;
}

/* ---- shared by the user and room archives ---- */

struct pl_stanza *pl_mam_result(const char *to, const char *from,
                                const char *queryid,
                                const struct pl_archive_item *it)
{
    char stamp[48];
    pl_mam_time_format(it->ts, stamp, sizeof(stamp));
    struct pl_buf b = {0};
    pl_buf_append_str(&b, "<message xmlns='jabber:client' to='");
    pl_buf_append_escaped(&b, to, strlen(to), 1);
    if (from) {
        pl_buf_append_str(&b, "' from='");
        pl_buf_append_escaped(&b, from, strlen(from), 1);
    }
    pl_buf_append_str(&b, "'><result xmlns='" PL_NS_MAM "'");
    if (queryid) {
        pl_buf_append_str(&b, " queryid='");
        pl_buf_append_escaped(&b, queryid, strlen(queryid), 1);
        pl_buf_append_str(&b, "'");
    }
    pl_buf_append_str(&b, " id='");
    pl_buf_append_escaped(&b, it->sid, strlen(it->sid), 1);
    pl_buf_printf(&b,
                  "'><forwarded xmlns='urn:xmpp:forward:0'><delay "
                  "xmlns='urn:xmpp:delay' stamp='%s'/>",
                  stamp);
    pl_buf_append(&b, it->xml, it->xml_len);
    pl_buf_append_str(&b, "</forwarded></result></message>");
    struct pl_stanza *st = NULL;
    if (pl_xml_parse_fragment(b.data + b.off, b.len, &st) != PL_OK)
        st = NULL;
    pl_buf_reset(&b);
    return st;
}

static int key_of(const struct pl_storage_driver *d, void *db, const char *host,
                  const char *owner, int kind, const char *sid, long long *key)
{
    int rc = d->archive_key(db, host, owner, kind, sid, key);
    return rc == PL_ENOT_FOUND ? PL_EITEM_NOT_FOUND : rc;
}

int pl_mam_query_keys(const struct pl_storage_driver *d, void *db,
                      const char *host, const char *owner, int kind,
                      const struct pl_mam_query *q, struct pl_archive_query *aq)
{
    int rc = PL_OK;
    if (q->after_id)
        rc = key_of(d, db, host, owner, kind, q->after_id, &aq->lo);
    if (rc == PL_OK && q->before_id)
        rc = key_of(d, db, host, owner, kind, q->before_id, &aq->hi);
    if (rc == PL_OK && q->after)
        rc = key_of(d, db, host, owner, kind, q->after, &aq->after);
    if (rc == PL_OK && q->before && *q->before)
        rc = key_of(d, db, host, owner, kind, q->before, &aq->before);
    for (int i = 0; rc == PL_OK && i < q->nids; i++) {
        long long k;
        rc = key_of(d, db, host, owner, kind, q->ids[i], &k);
    }
    return rc;
}

struct collect {
    struct pl_mam_page *page;
    const struct pl_mam_query *q;
    const char *to, *from;
};

static int collect_item(const struct pl_archive_item *it, void *ud)
{
    struct collect *c = ud;
    struct pl_mam_page *p = c->page;
    struct pl_stanza *st = pl_mam_result(c->to, c->from, c->q->queryid, it);
    if (!st) {
        pl_log_error("mam", "archived item %s does not parse", it->sid);
        return 0;
    }
    p->msgs = pl_realloc(p->msgs, (size_t)(p->n + 1) * sizeof(*p->msgs));
    p->sids = pl_realloc(p->sids, (size_t)(p->n + 1) * sizeof(*p->sids));
    p->msgs[p->n] = st;
    p->sids[p->n] = pl_strdup(it->sid);
    p->n++;
    return 0;
}

int pl_mam_page_run(const struct pl_storage_driver *d, void *db,
                    const char *host, const char *owner, int kind,
                    const struct pl_mam_query *q, long max, long count_cap,
                    const char *to, const char *from, struct pl_mam_page *page)
{
    struct pl_archive_query aq = {
        .with = q->with,
        .with_res = q->with_res,
        .start = q->start,
        .end = q->end,
        .ids = (const char *const *)q->ids,
        .nids = q->nids,
        .max = max + 1,
        .backward = q->before != NULL,
        .count_cap = count_cap,
    };
    page->count = -1;
    int rc = pl_mam_query_keys(d, db, host, owner, kind, q, &aq);
    if (rc != PL_OK)
        return rc;
    if (max == 0)
        aq.max = 0;
    struct collect c = {page, q, to, from};
    rc = d->archive_query(db, host, owner, kind, &aq, collect_item, &c,
                          &page->count);
    if (rc != PL_OK)
        return rc;
    /* One more than the page was read: whether the page reaches the end
     * of the result set (XEP-0313 §4.3). */
    page->complete = max == 0 ? page->count == 0 : page->n <= max;
    if (page->n > max) {
        page->n--;
        pl_stanza_unref(page->msgs[page->n]);
        pl_free(page->sids[page->n]);
    }
    /* Chronological order within the page (§4.3), unless flipped. */
    if (aq.backward != q->flip)
        for (long a = 0, b = page->n - 1; a < b; a++, b--) {
            struct pl_stanza *t = page->msgs[a];
            page->msgs[a] = page->msgs[b];
            page->msgs[b] = t;
            char *u = page->sids[a];
            page->sids[a] = page->sids[b];
            page->sids[b] = u;
        }
    return PL_OK;
}

void pl_mam_page_free(struct pl_mam_page *page)
{
    for (long i = 0; i < page->n; i++) {
        pl_stanza_unref(page->msgs[i]);
        pl_free(page->sids[i]);
    }
    pl_free(page->msgs);
    pl_free(page->sids);
    page->msgs = NULL;
    page->sids = NULL;
    page->n = 0;
}

static void text_child(struct pl_stanza *st, struct pl_node *parent,
                       const char *name, const char *text)
{
    struct pl_node *n = pl_node_add_child(st, parent, name, PL_NS_RSM);
    pl_node_add_text(st, n, text, strlen(text));
}

struct pl_stanza *pl_mam_fin(struct pl_stanza *iq, const struct pl_mam_query *q,
                             const struct pl_mam_page *page)
{
    struct pl_stanza *r = pl_iq_result(iq);
    struct pl_node *fin = pl_node_add_child(r, pl_stanza_root(r), "fin",
                                            PL_NS_MAM);
    if (page->complete)
        pl_node_set_attr(r, fin, "complete", "true");
    struct pl_node *set = pl_node_add_child(r, fin, "set", PL_NS_RSM);
    if (page->n) {
        /* First and last of the page in archive order, flipped or not. */
        int flipped = q->flip;
        text_child(r, set, "first", page->sids[flipped ? page->n - 1 : 0]);
        text_child(r, set, "last", page->sids[flipped ? 0 : page->n - 1]);
    }
    if (page->count >= 0) {
        char cnt[32];
        snprintf(cnt, sizeof(cnt), "%ld", page->count);
        text_child(r, set, "count", cnt);
    }
    return r;
}

static struct pl_node *form_field(struct pl_stanza *r, struct pl_node *x,
                                  const char *type, const char *var)
{
    struct pl_node *f = pl_node_add_child(r, x, "field", PL_NS_XDATA);
    pl_node_set_attr(r, f, "type", type);
    pl_node_set_attr(r, f, "var", var);
    return f;
}

struct pl_stanza *pl_mam_form(struct pl_stanza *iq)
{
    struct pl_stanza *r = pl_iq_result(iq);
    struct pl_node *q = pl_node_add_child(r, pl_stanza_root(r), "query",
                                          PL_NS_MAM);
    struct pl_node *x = pl_node_add_child(r, q, "x", PL_NS_XDATA);
    pl_node_set_attr(r, x, "type", "form");
    struct pl_node *ft = form_field(r, x, "hidden", "FORM_TYPE");
    struct pl_node *v = pl_node_add_child(r, ft, "value", PL_NS_XDATA);
    pl_node_add_text(r, v, PL_NS_MAM, strlen(PL_NS_MAM));
    form_field(r, x, "jid-single", "with");
    form_field(r, x, "text-single", "start");
    form_field(r, x, "text-single", "end");
    form_field(r, x, "text-single", "before-id");
    form_field(r, x, "text-single", "after-id");
    struct pl_node *ids = form_field(r, x, "list-multi", "ids");
    /* The list is open: any id may be given (XEP-0122). */
    struct pl_node *val =
        pl_node_add_child(r, ids, "validate",
                          "http://jabber.org/protocol/xdata-validate");
    pl_node_set_attr(r, val, "datatype", "xs:string");
    pl_node_add_child(r, val, "open",
                      "http://jabber.org/protocol/xdata-validate");
    return r;
}
