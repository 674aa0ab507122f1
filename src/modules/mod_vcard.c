/*
 * mod_vcard.c - XEP-0054 vcard-temp: every account's vCard, stored by the
 * server, readable by anyone, writable only by its owner.
 *
 *   <iq type='get'> with no 'to' or to one's own bare JID: one's own vCard,
 *       or an empty <vCard/> when none was stored (XEP-0054 §3.1 allows
 *       either that or item-not-found; clients cope better with the empty
 *       element).
 *   <iq type='set'> likewise: replaces the whole vCard (§3.2); an empty
 *       <vCard/> deletes it.  A set addressed to another account is
 *       <forbidden/> (§3.2).  A vCard over max_size bytes (serialized) is
 *       <not-acceptable/> with a text naming the limit.
 *   <iq type='get'> to another bare JID of this host: that vCard; when
 *       there is none, or no such account, <service-unavailable/>: the
 *       same in both cases against directory harvesting (§3.3; version
 *       1.2 allowed item-not-found too, 1.3 wants service-unavailable).
 *
 * Storage: the serialized <vCard/> element (pl_node_serialize) in kv store
 * "vcard", key "".  Beside it, kv store "directory", key "", holds the
 * searchable fields for mod_search (XEP-0055), one per line:
 *
 *     <field> TAB <value as written> TAB <value case-folded> LF
 *
 * with field one of first (N/GIVEN), last (N/FAMILY), nick (NICKNAME) and
 * email (EMAIL/USERID, or the text of an old-style <EMAIL/>), possibly
 * repeated; values are trimmed, control characters become spaces, at most
 * DIR_VALUE_MAX bytes; case folding is Unicode default case folding with
 * NFKC (libunistring u8_casefold), which mod_search applies to queries
 * too.  Every field is indexed whatever mod_search's configuration says:
 * what may be searched is its decision, made at query time.
 *
 * XEP-0153 avatar hashes travel in presence, which the router passes on
 * unchanged; nothing here touches them.
 *
 * Extending: a new indexed field is a row in `dir_fields` and a column
 * mod_search knows by name.
 */
#include <stdint.h>
#include <stdlib.h>
#include <unicase.h>
#include <uninorm.h>

#include "core/modapi.h"

#define NS_VCARD "vcard-temp"
#define STORE_VCARD "vcard"
#define STORE_DIR "directory"
#define DIR_VALUE_MAX 1024 /* bytes of one indexed value */

struct state {
    long max_size; /* largest serialized vCard accepted, in bytes */
};

/* A read or a write in flight on the storage thread. */
struct job {
    struct pl_job base;  /* the request, held until the reply; the
                           * account */
    int own;             /* get: the requester's own vCard */
    int remove;          /* set: delete rather than store */
    struct pl_buf card;  /* set: serialized vCard; get: what was read */
    struct pl_buf index; /* set: the directory document */
};

static struct job *job_new(struct pl_event *ev, const char *user)
{
    return pl_job_new(sizeof(struct job), ev->stanza, 0, ev->host->domain,
                      user);
}

static void job_free(struct job *j)
{
    pl_buf_reset(&j->card);
    pl_buf_reset(&j->index);
    pl_job_free(j);
}

/* ---------------------------------------------------------- directory */

static int is_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* Appends s[0..n) with control characters as spaces, cut at a character
 * boundary after DIR_VALUE_MAX bytes. */
static void append_clean(struct pl_buf *out, const char *s, size_t n)
{
    if (n > DIR_VALUE_MAX) {
        n = DIR_VALUE_MAX;
        while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
            n--; /* s[n] continues a UTF-8 sequence: cut before it */
    }
    for (size_t i = 0; i < n; i++) {
        char c = (unsigned char)s[i] < 0x20 ? ' ' : s[i];
        pl_buf_append(out, &c, 1);
    }
}

/* Appends the case-folded s[0..n); see the file comment. */
static void append_folded(struct pl_buf *out, const char *s, size_t n)
{
    uint8_t small[256];
    size_t len = sizeof(small);
    uint8_t *r = u8_casefold((const uint8_t *)s, n, NULL, UNINORM_NFKC, small,
                             &len);
    if (!r) {
        /* Not valid UTF-8 (the parser forbids it) or out of memory:
         * ASCII lower case is the best we can do. */
        for (size_t i = 0; i < n; i++) {
            char c = s[i] >= 'A' && s[i] <= 'Z' ? (char)(s[i] + 32) : s[i];
            append_clean(out, &c, 1);
        }
        return;
    }
    append_clean(out, (const char *)r, len);
    if (r != small)
        free(r); /* libunistring's own allocation */
}

/* One "field TAB value TAB folded LF" line for el's text, if any. */
static void index_text(struct pl_stanza *st, const struct pl_node *el,
                       const char *field, struct pl_buf *out)
{
    if (!el)
        return;
    size_t n;
    const char *t = pl_node_text(st, el, &n);
    while (n > 0 && is_space((unsigned char)*t)) {
        t++;
        n--;
    }
    while (n > 0 && is_space((unsigned char)t[n - 1]))
        n--;
    if (n == 0)
        return;
    pl_buf_append_str(out, field);
    pl_buf_append(out, "\t", 1);
    append_clean(out, t, n);
    pl_buf_append(out, "\t", 1);
    append_folded(out, t, n);
    pl_buf_append(out, "\n", 1);
}

/* The directory document of vCard vc (a node of st). */
static void build_index(struct pl_stanza *st, const struct pl_node *vc,
                        struct pl_buf *out)
{
    struct pl_node *n = pl_node_child(vc, "N", NS_VCARD);
    if (n) {
        index_text(st, pl_node_child(n, "GIVEN", NS_VCARD), "first", out);
        index_text(st, pl_node_child(n, "FAMILY", NS_VCARD), "last", out);
    }
    for (struct pl_node *c = pl_node_first_elem(vc); c;
         c = pl_node_next_elem(c)) {
        if (strcmp(c->ns, NS_VCARD) != 0)
            continue;
        if (strcmp(c->name, "NICKNAME") == 0) {
            index_text(st, c, "nick", out);
        } else if (strcmp(c->name, "EMAIL") == 0) {
            struct pl_node *u = pl_node_child(c, "USERID", NS_VCARD);
            /* COMPAT: old clients write the address as <EMAIL/>'s text. */
            index_text(st, u ? u : c, "email", out);
        }
    }
}

/* ---------------------------------------------------------------- get */

static int get_run(const struct pl_storage_driver *d, void *db, void *arg)
{
    struct job *j = arg;
    return d->kv_get(db, j->base.host, j->base.user, STORE_VCARD, "", &j->card);
}

static void get_done(int rc, void *arg)
{
    struct job *j = arg;
    struct pl_stanza *card = NULL;
    if (rc == PL_OK) {
        struct pl_str s = pl_buf_str(&j->card);
        if (pl_xml_parse_fragment(s.p, s.len, &card) != PL_OK) {
            pl_log_error("mod_vcard",
                         "the stored vCard of %s@%s does not "
                         "parse; answering as if there were none",
                         j->base.user, j->base.host);
            rc = PL_ENOT_FOUND;
        }
    }
    if (rc == PL_OK || (rc == PL_ENOT_FOUND && j->own)) {
        struct pl_stanza *r = pl_iq_result(j->base.st);
        if (card)
            pl_node_add_copy(r, pl_stanza_root(r), pl_stanza_root(card));
        else
            pl_node_add_child(r, pl_stanza_root(r), "vCard", NS_VCARD);
        pl_route_reply(j->base.st, r);
        pl_stanza_unref(r);
    } else if (rc == PL_ENOT_FOUND) {
        /* XEP-0054 §3.3: the same error for "no vCard" and "no account". */
        pl_route_error(j->base.st, PL_ESERVICE_UNAVAILABLE, NULL);
    } else {
        pl_log_error("mod_vcard", "reading the vCard of %s@%s failed: %s",
                     j->base.user, j->base.host, pl_strerror(rc));
        pl_route_error(j->base.st, PL_EINTERNAL_SERVER_ERROR, NULL);
    }
    pl_stanza_unref(card);
    job_free(j);
}

static int on_get(struct pl_event *ev, void *state)
{
    if (!ev->to || !ev->to->local)
        return PL_PASS;
    struct job *j = job_new(ev, ev->to->local);
    j->own = pl_event_is_self(ev);
    pl_storage_submit(pl_server_loop(), get_run, get_done, j);
    return PL_PENDING;
}

/* ---------------------------------------------------------------- set */

static int set_run(const struct pl_storage_driver *d, void *db, void *arg)
{
    struct job *j = arg;
    struct pl_str card = pl_buf_str(&j->card);
    struct pl_str index = pl_buf_str(&j->index);
    int rc = d->kv_set(db, j->base.host, j->base.user, STORE_VCARD, "",
                       j->remove ? NULL : card.p, card.len);
    if (rc == PL_OK)
        rc = d->kv_set(db, j->base.host, j->base.user, STORE_DIR, "",
                       j->remove ? NULL : (index.p ? index.p : ""), index.len);
    return rc;
}

static void set_done(int rc, void *arg)
{
    struct job *j = arg;
    if (rc == PL_OK) {
        pl_route_result(j->base.st);
    } else {
        pl_log_error("mod_vcard", "storing the vCard of %s@%s failed: %s",
                     j->base.user, j->base.host, pl_strerror(rc));
        pl_route_error(j->base.st, PL_EINTERNAL_SERVER_ERROR, NULL);
    }
    job_free(j);
}

static int on_set(struct pl_event *ev, void *state)
{
    struct state *s = state;
    if (!ev->to || !ev->to->local)
        return PL_PASS;
    if (!pl_event_is_self(ev))
        return PL_EFORBIDDEN; /* XEP-0054 §3.2: another user's vCard */
    struct pl_node *vc = pl_stanza_payload(ev->stanza);
    struct job *j = job_new(ev, ev->to->local);
    if (!pl_node_first_elem(vc)) {
        j->remove = 1; /* an empty vCard: nothing left to keep */
    } else {
        pl_node_serialize(vc, "", PL_NS_CLIENT, &j->card);
        if ((long)j->card.len > s->max_size) {
            char text[96];
            snprintf(text, sizeof(text), "The vCard is larger than %ld bytes.",
                     s->max_size);
            pl_route_error(ev->stanza, PL_ENOT_ACCEPTABLE, text);
            job_free(j);
            return PL_HANDLED;
        }
        build_index(ev->stanza, vc, &j->index);
    }
    pl_storage_submit(pl_server_loop(), set_run, set_done, j);
    return PL_PENDING;
}

static const char *const features[] = {NS_VCARD, NULL};

static const struct pl_option options[] = {
    {"max_size", PL_OPT_INT, "32768", 256, 16777216, NULL,
     "Largest vCard accepted, in bytes of XML (photos included); larger "
     "ones get <not-acceptable/>.",
     offsetof(struct state, max_size)},
    {0},
};

static const struct pl_hook_def hooks[] = {
    {"iq-get/bare/" NS_VCARD ":vCard", on_get, 0},
    {"iq-set/bare/" NS_VCARD ":vCard", on_set, 0},
    {0},
};

const struct pl_module pl_mod_vcard = {
    .abi = PL_MODULE_ABI,
    .default_on = 1,
    .name = "vcard",
    .summary = "stores and serves each account's vCard",
    .xeps = "XEP-0054, XEP-0153",
    .features = features,
    .options = options,
    .hooks = hooks,
    .state_size = sizeof(struct state),
};
