/*
 * caps.c - XEP-0115 verification strings and hashes; see caps.h.
 */
#include <openssl/evp.h>
#include <stdlib.h>

#include "caps.h"

#define NS_XDATA "jabber:x:data"

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorted copy pointers; duplicates reported through *dup. */
static void sort_strs(char **v, int n, int *dup)
{
    qsort(v, (size_t)n, sizeof(char *), cmp_str);
    for (int i = 1; i < n; i++)
        if (strcmp(v[i - 1], v[i]) == 0)
            *dup = 1;
}

static void free_strs(char **v, int n)
{
    for (int i = 0; i < n; i++)
        pl_free(v[i]);
    pl_free(v);
}

static char *cat_strs(const char *a, const char *b, const char *c,
                      const char *d)
{
    size_t n = strlen(a) + strlen(b) + strlen(c) + strlen(d) + 4;
    char *s = pl_malloc(n);
    snprintf(s, n, "%s/%s/%s/%s", a, b, c, d);
    return s;
}

/* The values of a field, as copies. */
static char **field_values(struct pl_stanza *st, const struct pl_node *f,
                           int *n)
{
    size_t cnt = pl_node_count_elems(f);
    char **v = pl_calloc(cnt + 1, sizeof(char *));
    *n = 0;
    for (struct pl_node *c = pl_node_first_elem(f); c; c = pl_node_next_elem(c))
        if (strcmp(c->name, "value") == 0)
            v[(*n)++] = pl_strdup(pl_node_text(st, c, NULL));
    return v;
}

struct form {
    const struct pl_node *x; /* the <x/> */
    char *type;              /* FORM_TYPE value */
};

static int cmp_form(const void *a, const void *b)
{
    return strcmp(((const struct form *)a)->type,
                  ((const struct form *)b)->type);
}

static int cmp_field(const void *a, const void *b)
{
    const char *va = pl_node_attr(*(struct pl_node *const *)a, "var");
    const char *vb = pl_node_attr(*(struct pl_node *const *)b, "var");
    return strcmp(va ? va : "", vb ? vb : "");
}

/* One form's part of the string (§5.1 step 6). */
static void append_form(struct pl_stanza *st, const struct form *fm,
                        struct pl_buf *out)
{
    pl_buf_append_str(out, fm->type);
    pl_buf_append_str(out, "<");
    size_t cnt = pl_node_count_elems(fm->x);
    struct pl_node **fields = pl_calloc(cnt + 1, sizeof(*fields));
    size_t n = 0;
    for (struct pl_node *f = pl_node_first_elem(fm->x); f;
         f = pl_node_next_elem(f)) {
        const char *var = pl_node_attr(f, "var");
        if (strcmp(f->name, "field") != 0 || !var ||
            strcmp(var, "FORM_TYPE") == 0)
            continue;
        fields[n++] = f;
    }
    qsort(fields, n, sizeof(*fields), cmp_field);
    for (size_t i = 0; i < n; i++) {
        pl_buf_append_str(out, pl_node_attr(fields[i], "var"));
        pl_buf_append_str(out, "<");
        int nv, dup = 0;
        char **v = field_values(st, fields[i], &nv);
        sort_strs(v, nv, &dup);
        for (int k = 0; k < nv; k++) {
            pl_buf_append_str(out, v[k]);
            pl_buf_append_str(out, "<");
        }
        free_strs(v, nv);
    }
    pl_free(fields);
}

int pl__pep_caps_ver_string(struct pl_stanza *st, const struct pl_node *query,
                            struct pl_buf *out)
{
    size_t cnt = pl_node_count_elems(query);
    char **ids = pl_calloc(cnt + 1, sizeof(char *));
    char **feats = pl_calloc(cnt + 1, sizeof(char *));
    struct form *forms = pl_calloc(cnt + 1, sizeof(*forms));
    int nid = 0, nfeat = 0, nform = 0, dup = 0;
    for (struct pl_node *c = pl_node_first_elem(query); c;
         c = pl_node_next_elem(c)) {
        if (strcmp(c->ns, PL_NS_DISCO_INFO) == 0 &&
            strcmp(c->name, "identity") == 0) {
            const char *cat = pl_node_attr(c, "category");
            const char *type = pl_node_attr(c, "type");
            const char *lang = pl_node_attr_ns(c, PL_NS_XML, "lang");
            const char *name = pl_node_attr(c, "name");
            ids[nid++] = cat_strs(cat ? cat : "", type ? type : "",
                                  lang ? lang : "", name ? name : "");
        } else if (strcmp(c->ns, PL_NS_DISCO_INFO) == 0 &&
                   strcmp(c->name, "feature") == 0) {
            const char *var = pl_node_attr(c, "var");
            feats[nfeat++] = pl_strdup(var ? var : "");
        } else if (strcmp(c->ns, NS_XDATA) == 0 && strcmp(c->name, "x") == 0) {
            const char *ft = NULL;
            for (struct pl_node *f = pl_node_first_elem(c); f;
                 f = pl_node_next_elem(f)) {
                const char *var = pl_node_attr(f, "var");
                const char *ftype = pl_node_attr(f, "type");
                if (var && strcmp(var, "FORM_TYPE") == 0 && ftype &&
                    strcmp(ftype, "hidden") == 0) {
                    struct pl_node *v = pl_node_child(f, "value", NULL);
                    ft = v ? pl_node_text(st, v, NULL) : NULL;
                }
            }
            if (!ft)
                continue; /* §5.4 3.6: not a FORM_TYPE'd form: ignored */
            forms[nform].x = c;
            forms[nform++].type = pl_strdup(ft);
        }
    }
    sort_strs(ids, nid, &dup);
    sort_strs(feats, nfeat, &dup);
    qsort(forms, (size_t)nform, sizeof(*forms), cmp_form);
    for (int i = 1; i < nform; i++)
        if (strcmp(forms[i - 1].type, forms[i].type) == 0)
            dup = 1;
    if (!dup) {
        for (int i = 0; i < nid; i++) {
            pl_buf_append_str(out, ids[i]);
            pl_buf_append_str(out, "<");
        }
        for (int i = 0; i < nfeat; i++) {
            pl_buf_append_str(out, feats[i]);
            pl_buf_append_str(out, "<");
        }
        for (int i = 0; i < nform; i++)
            append_form(st, &forms[i], out);
    }
    free_strs(ids, nid);
    free_strs(feats, nfeat);
    for (int i = 0; i < nform; i++)
        pl_free(forms[i].type);
    pl_free(forms);
    return dup ? PL_EINVAL : PL_OK;
}

int pl__pep_caps_hash(const char *algo, struct pl_str s, struct pl_buf *out)
{
    const EVP_MD *md = strcmp(algo, "sha-1") == 0     ? EVP_sha1()
                       : strcmp(algo, "sha-256") == 0 ? EVP_sha256()
                       : strcmp(algo, "sha-512") == 0 ? EVP_sha512()
                                                      : NULL;
    if (!md)
        return PL_EINVAL;
    unsigned char dig[EVP_MAX_MD_SIZE];
    unsigned int dlen = 0;
    if (EVP_Digest(s.p ? s.p : "", s.len, dig, &dlen, md, NULL) != 1)
        return PL_EINVAL;
    pl_base64_encode(dig, dlen, out);
    return PL_OK;
}

int pl__pep_caps_verify(struct pl_stanza *st, const struct pl_node *query,
                        const char *algo, const char *ver)
{
    struct pl_buf s = {0}, h = {0};
    int ok = pl__pep_caps_ver_string(st, query, &s) == PL_OK &&
             pl__pep_caps_hash(algo, pl_buf_str(&s), &h) == PL_OK &&
             strcmp(pl_buf_cstr(&h), ver) == 0;
    pl_buf_reset(&s);
    pl_buf_reset(&h);
    return ok;
}
