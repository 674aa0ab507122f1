/*
 * commands.c - the commands of parley, one function each.  Every command
 * works with any standard server: only RFC 6120/6121 and the XEPs named
 * are used.  To add one: a function, a row in `commands`, a line of help.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clients/cli/cli.h"

#define NS_ROSTER "jabber:iq:roster"
#define NS_VCARD "vcard-temp"
#define NS_SEARCH "jabber:iq:search"
#define NS_XDATA "jabber:x:data"
#define NS_MUC "http://jabber.org/protocol/muc"

const char pl_cli_commands_help[] =
    "  register JID PASSWORD           create an account (XEP-0077)\n"
    "  send TO [BODY] [--type T] [--json-payload JSON] [--receipt]\n"
    "                                  send a message (XEP-0335, XEP-0184)\n"
    "  listen [--count N] [--for SEC] [--no-presence]\n"
    "                                  print one JSON object per stanza\n"
    "  roster list | roster add JID [--name N] [--group G]... |\n"
    "  roster remove JID               the roster (RFC 6121 §2)\n"
    "  subscribe JID | approve JID | deny JID | unsubscribe JID\n"
    "                                  subscriptions (RFC 6121 §3)\n"
    "  presence [online|away|busy|xa|chat] [--status TEXT] [--priority N]\n"
    "           [--for SEC]            be present (until SEC or a signal)\n"
    "  vcard get [JID] | vcard set KEY=VALUE...\n"
    "                                  vCard (XEP-0054); KEY as N/GIVEN\n"
    "  search [--service JID] FIELD=VALUE...\n"
    "                                  user directory (XEP-0055)\n"
    "  room join ROOM@SERVICE/NICK [--say TEXT] [--for SEC] [--password P]\n"
    "                                  join a room and talk (XEP-0045)\n"
    "  ping [JID]                      XEP-0199 ping (default: the server)\n"
    "  share [--listen ADDR:PORT] [--url BASE] [--max-peers N]\n"
    "        [--max-rate BYTES] FILE...\n"
    "                                  serve uploaded files as a peer until\n"
    "                                  a signal (doc/media.md)\n"
    "  get [--cache DIR] [-o FILE] [--max-peers N] [--server-last]\n"
    "      [--stall SEC] HASH|URL      a file of the server's media, from\n"
    "                                  the cache or the server and peers\n";

static xmpp_stanza_t *iq_with_query(struct pl_cli *c, const char *type,
                                    const char *to, const char *name,
                                    const char *ns, xmpp_stanza_t **query)
{
    xmpp_stanza_t *iq = xmpp_iq_new(c->ctx, type, NULL);
    if (to)
        xmpp_stanza_set_to(iq, to);
    xmpp_stanza_t *q = pl_cli_elem(c->ctx, name, ns);
    xmpp_stanza_add_child(iq, q);
    xmpp_stanza_release(q);
    if (query)
        *query = q;
    return iq;
}

static int ok_out(struct pl_cli *c, json_t *obj, const char *text)
{
    pl_cli_out(c, obj, text);
    return PL_EXIT_OK;
}

/* Runs iq; on an error reply reports it.  Returns PL_EXIT_*. */
static int call(struct pl_cli *c, const char *what, xmpp_stanza_t *iq,
                xmpp_stanza_t **reply)
{
    xmpp_stanza_t *r = NULL;
    int rc = pl_cli_iq(c, iq, &r);
    xmpp_stanza_release(iq);
    if (rc == PL_EXIT_STANZA)
        pl_cli_stanza_error(c, what, r);
    if (rc != PL_EXIT_OK && r) {
        xmpp_stanza_release(r);
        r = NULL;
    }
    if (reply)
        *reply = r;
    else if (r)
        xmpp_stanza_release(r);
    return rc;
}

/* ----------------------------------------------------------- register */

static int cmd_register(struct pl_cli *c, int argc, char **argv)
{
    if (argc != 3 || !strchr(argv[1], '@'))
        return PL_EXIT_USAGE;
    char user[1024];
    snprintf(user, sizeof(user), "%s", argv[1]);
    char *at = strchr(user, '@');
    *at = '\0';
    char *domain = at + 1;
    domain[strcspn(domain, "/")] = '\0';
    char err[256];
    int rc = pl_cl_register(c->ctx, &c->o, domain, user, argv[2], err,
                            sizeof(err));
    if (rc != PL_EXIT_OK) {
        fprintf(stderr, "parley: %s\n", err);
        if (c->json)
            pl_cli_out(c, json_pack("{s:s}", "error", err), NULL);
        return rc;
    }
    char text[1100];
    snprintf(text, sizeof(text), "registered %s@%s", user, domain);
    return ok_out(c, json_pack("{s:s}", "registered", argv[1]), text);
}

/* --------------------------------------------------------------- send */

static int got_receipt;
static const char *receipt_id;

static int on_receipt(xmpp_conn_t *conn, xmpp_stanza_t *st, void *ud)
{
    xmpp_stanza_t *r = xmpp_stanza_get_child_by_name_and_ns(st, "received",
                                                            PL_NS_RECEIPTS);
    const char *id = r ? xmpp_stanza_get_attribute(r, "id") : NULL;
    if (id && receipt_id && !strcmp(id, receipt_id))
        got_receipt = 1;
    return 1;
}

static int cmd_send(struct pl_cli *c, int argc, char **argv)
{
    const char *to = NULL, *body = NULL, *type = "chat", *payload = NULL;
    int receipt = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--type") && i + 1 < argc)
            type = argv[++i];
        else if (!strcmp(argv[i], "--json-payload") && i + 1 < argc)
            payload = argv[++i];
        else if (!strcmp(argv[i], "--receipt"))
            receipt = 1;
        else if (!to)
            to = argv[i];
        else if (!body)
            body = argv[i];
        else
            return PL_EXIT_USAGE;
    }
    if (!to || (!body && !payload))
        return PL_EXIT_USAGE;
    if (payload) {
        json_error_t e;
        json_t *v = json_loads(payload, JSON_DECODE_ANY, &e);
        if (!v) {
            fprintf(stderr, "parley: --json-payload is not JSON: %s\n", e.text);
            return PL_EXIT_USAGE;
        }
        json_decref(v);
    }
    char *id = xmpp_uuid_gen(c->ctx);
    xmpp_stanza_t *m = xmpp_message_new(c->ctx,
                                        strcmp(type, "normal") ? type : NULL,
                                        to, id);
    if (body)
        xmpp_message_set_body(m, body);
    if (payload) {
        xmpp_stanza_t *j = pl_cli_elem(c->ctx, "json", PL_NS_JSON);
        xmpp_stanza_t *t = xmpp_stanza_new(c->ctx);
        xmpp_stanza_set_text(t, payload);
        pl_cli_adopt(j, t);
        pl_cli_adopt(m, j);
    }
    if (receipt) {
        pl_cli_adopt(m, pl_cli_elem(c->ctx, "request", PL_NS_RECEIPTS));
        receipt_id = id;
        xmpp_handler_add(c->conn, on_receipt, NULL, "message", NULL, c);
    }
    xmpp_send(c->conn, m);
    xmpp_stanza_release(m);
    int rc = PL_EXIT_OK;
    if (receipt) {
        pl_cli_run(c, c->o.timeout_ms, &got_receipt);
        if (!got_receipt) {
            fprintf(stderr, "parley: no receipt in time\n");
            rc = c->connected ? PL_EXIT_TIMEOUT : PL_EXIT_CONNECT;
        }
    }
    if (rc == PL_EXIT_OK)
        pl_cli_out(c,
                   json_pack("{s:s, s:s, s:b}", "sent", id, "to", to, "receipt",
                             got_receipt),
                   receipt ? "sent, receipt received" : "sent");
    xmpp_free(c->ctx, id);
    return rc;
}

/* ------------------------------------------------------------- listen */

static int cmd_listen(struct pl_cli *c, int argc, char **argv)
{
    long count = 0;
    double secs = 0;
    int presence = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--count") && i + 1 < argc)
            count = atol(argv[++i]);
        else if (!strcmp(argv[i], "--for") && i + 1 < argc)
            secs = atof(argv[++i]);
        else if (!strcmp(argv[i], "--no-presence"))
            presence = 0;
        else
            return PL_EXIT_USAGE;
    }
    c->listening = 1;
    if (presence) {
        xmpp_stanza_t *p = xmpp_presence_new(c->ctx);
        xmpp_send(c->conn, p);
        xmpp_stanza_release(p);
    }
    /* A line telling scripts that we are listening. */
    fprintf(stderr, "parley: listening as %s\n",
            xmpp_conn_get_bound_jid(c->conn));
    long long deadline = secs > 0 ? pl_cl_now_ms() + (long long)(secs * 1000)
                                  : 0;
    int done = 0;
    while (!done) {
        long left = deadline ? (long)(deadline - pl_cl_now_ms()) : 0;
        if (deadline && left <= 0)
            break;
        int rc = pl_cli_run(c, left > 0 && left < 100 ? left : 100, NULL);
        if (rc != PL_EXIT_OK)
            return rc;
        if (!c->connected)
            return PL_EXIT_CONNECT;
        done = (count && c->printed >= count) || pl_cli_interrupted();
    }
    return PL_EXIT_OK;
}

/* ------------------------------------------------------------- roster */

static int roster_list(struct pl_cli *c)
{
    xmpp_stanza_t *r;
    int rc = call(c, "roster get",
                  iq_with_query(c, "get", NULL, "query", NS_ROSTER, NULL), &r);
    if (rc != PL_EXIT_OK)
        return rc;
    json_t *items = json_array();
    char *text = NULL;
    size_t tlen = 0;
    FILE *f = open_memstream(&text, &tlen);
    xmpp_stanza_t *q = xmpp_stanza_get_child_by_name(r, "query");
    for (xmpp_stanza_t *it = q ? xmpp_stanza_get_children(q) : NULL; it;
         it = xmpp_stanza_get_next(it)) {
        const char *name = xmpp_stanza_get_name(it);
        if (!name || strcmp(name, "item"))
            continue;
        json_t *groups = json_array();
        fprintf(f, "%s %s", xmpp_stanza_get_attribute(it, "jid"),
                xmpp_stanza_get_attribute(it, "subscription") ?: "none");
        for (xmpp_stanza_t *g = xmpp_stanza_get_children(it); g;
             g = xmpp_stanza_get_next(g)) {
            if (!xmpp_stanza_get_name(g) ||
                strcmp(xmpp_stanza_get_name(g), "group"))
                continue;
            char *gt = xmpp_stanza_get_text(g);
            json_array_append_new(groups, json_string(gt ? gt : ""));
            fprintf(f, " [%s]", gt ? gt : "");
            xmpp_free(c->ctx, gt);
        }
        const char *nm = xmpp_stanza_get_attribute(it, "name");
        const char *ask = xmpp_stanza_get_attribute(it, "ask");
        if (nm)
            fprintf(f, " \"%s\"", nm);
        if (ask)
            fprintf(f, " ask=%s", ask);
        fputc('\n', f);
        json_array_append_new(
            items,
            json_pack("{s:s, s:s?, s:s, s:s?, s:o}", "jid",
                      xmpp_stanza_get_attribute(it, "jid"), "name", nm,
                      "subscription",
                      xmpp_stanza_get_attribute(it, "subscription") ?: "none",
                      "ask", ask, "groups", groups));
    }
    fclose(f);
    xmpp_stanza_release(r);
    pl_cli_out(c, json_pack("{s:o}", "items", items), text);
    free(text);
    return PL_EXIT_OK;
}

static int cmd_roster(struct pl_cli *c, int argc, char **argv)
{
    if (argc >= 2 && !strcmp(argv[1], "list") && argc == 2)
        return roster_list(c);
    if (argc < 3 || (strcmp(argv[1], "add") && strcmp(argv[1], "remove")))
        return PL_EXIT_USAGE;
    int add = !strcmp(argv[1], "add");
    xmpp_stanza_t *q;
    xmpp_stanza_t *iq = iq_with_query(c, "set", NULL, "query", NS_ROSTER, &q);
    xmpp_stanza_t *item = pl_cli_elem(c->ctx, "item", NULL);
    xmpp_stanza_set_attribute(item, "jid", argv[2]);
    if (!add)
        xmpp_stanza_set_attribute(item, "subscription", "remove");
    for (int i = 3; i < argc; i++) {
        if (add && !strcmp(argv[i], "--name") && i + 1 < argc) {
            xmpp_stanza_set_attribute(item, "name", argv[++i]);
        } else if (add && !strcmp(argv[i], "--group") && i + 1 < argc) {
            pl_cli_add_text(c->ctx, item, "group", argv[++i]);
        } else {
            xmpp_stanza_release(item);
            xmpp_stanza_release(iq);
            return PL_EXIT_USAGE;
        }
    }
    pl_cli_adopt(q, item);
    int rc = call(c, add ? "roster add" : "roster remove", iq, NULL);
    if (rc == PL_EXIT_OK)
        pl_cli_out(c,
                   json_pack("{s:s, s:s}", add ? "added" : "removed", argv[2],
                             "result", "ok"),
                   add ? "added" : "removed");
    return rc;
}

/* ------------------------------------------------------ subscriptions */

static int send_presence_type(struct pl_cli *c, const char *to,
                              const char *type)
{
    xmpp_stanza_t *p = xmpp_presence_new(c->ctx);
    xmpp_stanza_set_to(p, to);
    xmpp_stanza_set_type(p, type);
    xmpp_send(c->conn, p);
    xmpp_stanza_release(p);
    /* A ping to our server afterwards: once it answers, the presence was
     * processed (streams are in order), so exiting now loses nothing. */
    xmpp_stanza_t *q = iq_with_query(c, "get", NULL, "ping", PL_NS_PING, NULL);
    xmpp_stanza_t *r = NULL;
    int rc = pl_cli_iq(c, q, &r);
    xmpp_stanza_release(q);
    if (r)
        xmpp_stanza_release(r);
    if (rc == PL_EXIT_TIMEOUT || rc == PL_EXIT_CONNECT)
        return rc;
    char text[600];
    snprintf(text, sizeof(text), "sent %s to %s", type, to);
    return ok_out(c, json_pack("{s:s, s:s}", "sent", type, "to", to), text);
}

static int cmd_subscription(struct pl_cli *c, int argc, char **argv)
{
    if (argc != 2)
        return PL_EXIT_USAGE;
    const char *type = !strcmp(argv[0], "subscribe") ? "subscribe"
                       : !strcmp(argv[0], "approve") ? "subscribed"
                       : !strcmp(argv[0], "deny")    ? "unsubscribed"
                                                     : "unsubscribe";
    return send_presence_type(c, argv[1], type);
}

/* ----------------------------------------------------------- presence */

static int cmd_presence(struct pl_cli *c, int argc, char **argv)
{
    const char *show = NULL, *status = NULL, *prio = NULL, *state = "online";
    double secs = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--status") && i + 1 < argc)
            status = argv[++i];
        else if (!strcmp(argv[i], "--priority") && i + 1 < argc)
            prio = argv[++i];
        else if (!strcmp(argv[i], "--for") && i + 1 < argc)
            secs = atof(argv[++i]);
        else if (!strcmp(argv[i], "online"))
            state = argv[i], show = NULL;
        else if (!strcmp(argv[i], "away") || !strcmp(argv[i], "xa") ||
                 !strcmp(argv[i], "chat"))
            state = argv[i], show = argv[i];
        else if (!strcmp(argv[i], "busy") || !strcmp(argv[i], "dnd"))
            state = "busy", show = "dnd"; /* RFC 6121 §4.7.2.1 */
        else
            return PL_EXIT_USAGE;
    }
    if (prio) {
        char *end;
        long p = strtol(prio, &end, 10);
        if (*end || p < -128 || p > 127) /* RFC 6121 §4.7.2.3 */
            return PL_EXIT_USAGE;
    }
    xmpp_stanza_t *p = xmpp_presence_new(c->ctx);
    if (show)
        pl_cli_add_text(c->ctx, p, "show", show);
    if (status)
        pl_cli_add_text(c->ctx, p, "status", status);
    if (prio)
        pl_cli_add_text(c->ctx, p, "priority", prio);
    xmpp_send(c->conn, p);
    xmpp_stanza_release(p);
    pl_cli_out(c,
               json_pack("{s:s, s:s?, s:s?}", "presence", state, "show", show,
                         "status", status),
               state);
    /* Presence lasts as long as the session: stay. */
    return pl_cli_run(c, secs > 0 ? (long)(secs * 1000) : 0, NULL);
}

/* -------------------------------------------------------------- vcard */

static void vcard_flatten(struct pl_cli *c, xmpp_stanza_t *e,
                          const char *prefix, json_t *out, FILE *f)
{
    for (xmpp_stanza_t *k = xmpp_stanza_get_children(e); k;
         k = xmpp_stanza_get_next(k)) {
        const char *name = xmpp_stanza_get_name(k);
        if (!name || xmpp_stanza_is_text(k))
            continue;
        char path[256];
        snprintf(path, sizeof(path), "%s%s%s", prefix, *prefix ? "/" : "",
                 name);
        int has_elem = 0;
        for (xmpp_stanza_t *g = xmpp_stanza_get_children(k); g;
             g = xmpp_stanza_get_next(g))
            has_elem |= xmpp_stanza_is_tag(g);
        if (has_elem) {
            vcard_flatten(c, k, path, out, f);
        } else {
            char *t = xmpp_stanza_get_text(k);
            if (t && *t) {
                json_object_set_new(out, path, json_string(t));
                fprintf(f, "%s=%s\n", path, t);
            }
            xmpp_free(c->ctx, t);
        }
    }
}

/* Finds or makes the element at path "A/B" under v. */
static xmpp_stanza_t *vcard_path(struct pl_cli *c, xmpp_stanza_t *v, char *path)
{
    xmpp_stanza_t *cur = v;
    for (char *save = NULL, *seg = strtok_r(path, "/", &save); seg;
         seg = strtok_r(NULL, "/", &save)) {
        xmpp_stanza_t *k = xmpp_stanza_get_child_by_name(cur, seg);
        if (!k) {
            k = pl_cli_elem(c->ctx, seg, NULL);
            pl_cli_adopt(cur, k);
        }
        cur = k;
    }
    return cur;
}

static int cmd_vcard(struct pl_cli *c, int argc, char **argv)
{
    if (argc >= 2 && !strcmp(argv[1], "get") && argc <= 3) {
        xmpp_stanza_t *r;
        int rc = call(c, "vcard get",
                      iq_with_query(c, "get", argc == 3 ? argv[2] : NULL,
                                    "vCard", NS_VCARD, NULL),
                      &r);
        if (rc != PL_EXIT_OK)
            return rc;
        json_t *out = json_object();
        char *text = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&text, &len);
        xmpp_stanza_t *v = xmpp_stanza_get_child_by_name_and_ns(r, "vCard",
                                                                NS_VCARD);
        if (v)
            vcard_flatten(c, v, "", out, f);
        fclose(f);
        xmpp_stanza_release(r);
        pl_cli_out(c, json_pack("{s:o}", "vcard", out), text);
        free(text);
        return PL_EXIT_OK;
    }
    if (argc < 3 || strcmp(argv[1], "set"))
        return PL_EXIT_USAGE;
    xmpp_stanza_t *v;
    xmpp_stanza_t *iq = iq_with_query(c, "set", NULL, "vCard", NS_VCARD, &v);
    for (int i = 2; i < argc; i++) {
        char *eq = strchr(argv[i], '=');
        if (!eq || eq == argv[i]) {
            xmpp_stanza_release(iq);
            return PL_EXIT_USAGE;
        }
        char path[256];
        snprintf(path, sizeof(path), "%.*s", (int)(eq - argv[i]), argv[i]);
        xmpp_stanza_t *e = vcard_path(c, v, path);
        xmpp_stanza_t *t = xmpp_stanza_new(c->ctx);
        xmpp_stanza_set_text(t, eq + 1);
        pl_cli_adopt(e, t);
    }
    int rc = call(c, "vcard set", iq, NULL);
    if (rc == PL_EXIT_OK)
        pl_cli_out(c, json_pack("{s:s}", "vcard", "stored"), "stored");
    return rc;
}

/* ------------------------------------------------------------- search */

static int cmd_search(struct pl_cli *c, int argc, char **argv)
{
    const char *service = NULL;
    const char *bare = c->jid ? strchr(c->jid, '@') : NULL;
    char domain[512] = "";
    if (bare)
        snprintf(domain, sizeof(domain), "%.*s", (int)strcspn(bare + 1, "/"),
                 bare + 1);
    xmpp_stanza_t *q;
    xmpp_stanza_t *iq = xmpp_iq_new(c->ctx, "set", NULL);
    q = pl_cli_elem(c->ctx, "query", NS_SEARCH);
    int nfields = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--service") && i + 1 < argc) {
            service = argv[++i];
            continue;
        }
        char *eq = strchr(argv[i], '=');
        if (!eq || eq == argv[i]) {
            xmpp_stanza_release(q);
            xmpp_stanza_release(iq);
            return PL_EXIT_USAGE;
        }
        char name[64];
        snprintf(name, sizeof(name), "%.*s", (int)(eq - argv[i]), argv[i]);
        pl_cli_add_text(c->ctx, q, name, eq + 1); /* XEP-0055 §2 fields */
        nfields++;
    }
    pl_cli_adopt(iq, q);
    if (!nfields) {
        xmpp_stanza_release(iq);
        return PL_EXIT_USAGE;
    }
    xmpp_stanza_set_to(iq, service ? service : domain);
    xmpp_stanza_t *r;
    int rc = call(c, "search", iq, &r);
    if (rc != PL_EXIT_OK)
        return rc;
    json_t *items = json_array();
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    xmpp_stanza_t *rq = xmpp_stanza_get_child_by_name(r, "query");
    for (xmpp_stanza_t *it = rq ? xmpp_stanza_get_children(rq) : NULL; it;
         it = xmpp_stanza_get_next(it)) {
        const char *n = xmpp_stanza_get_name(it);
        if (!n || strcmp(n, "item"))
            continue;
        json_t *o = json_pack("{s:s}", "jid",
                              xmpp_stanza_get_attribute(it, "jid") ?: "");
        fprintf(f, "%s", xmpp_stanza_get_attribute(it, "jid") ?: "");
        for (xmpp_stanza_t *k = xmpp_stanza_get_children(it); k;
             k = xmpp_stanza_get_next(k)) {
            if (!xmpp_stanza_is_tag(k))
                continue;
            char *t = xmpp_stanza_get_text(k);
            if (t && *t) {
                json_object_set_new(o, xmpp_stanza_get_name(k), json_string(t));
                fprintf(f, " %s=%s", xmpp_stanza_get_name(k), t);
            }
            xmpp_free(c->ctx, t);
        }
        fputc('\n', f);
        json_array_append_new(items, o);
    }
    fclose(f);
    xmpp_stanza_release(r);
    pl_cli_out(c, json_pack("{s:o}", "items", items), text);
    free(text);
    return PL_EXIT_OK;
}

/* --------------------------------------------------------------- room */

struct join {
    const char *occupant; /* room@service/nick */
    int joined, error;
    int created; /* status 201: we made a new (locked) room */
    char cond[64];
};

static int on_room_presence(xmpp_conn_t *conn, xmpp_stanza_t *st, void *ud)
{
    struct join *j = ud;
    const char *from = xmpp_stanza_get_from(st);
    if (!from || strcmp(from, j->occupant))
        return 1;
    const char *type = xmpp_stanza_get_type(st);
    if (type && !strcmp(type, "error")) {
        j->error = 1;
        snprintf(j->cond, sizeof(j->cond), "%s", pl_cl_error_condition(st));
    } else if (!type) {
        j->joined = 1; /* XEP-0045 §7.2.3: our own presence comes last */
        xmpp_stanza_t *x = xmpp_stanza_get_child_by_name_and_ns(st, "x",
                                                                NS_MUC "#user");
        for (xmpp_stanza_t *k = x ? xmpp_stanza_get_children(x) : NULL; k;
             k = xmpp_stanza_get_next(k)) {
            const char *code = xmpp_stanza_is_tag(k)
                                   ? xmpp_stanza_get_attribute(k, "code")
                                   : NULL;
            if (code && !strcmp(code, "201"))
                j->created = 1;
        }
    }
    return 1;
}

static int cmd_room(struct pl_cli *c, int argc, char **argv)
{
    if (argc < 3 || strcmp(argv[1], "join") || !strchr(argv[2], '/'))
        return PL_EXIT_USAGE;
    const char *say = NULL, *password = NULL;
    double secs = 0;
    for (int i = 3; i < argc; i++) {
        if (!strcmp(argv[i], "--say") && i + 1 < argc)
            say = argv[++i];
        else if (!strcmp(argv[i], "--for") && i + 1 < argc)
            secs = atof(argv[++i]);
        else if (!strcmp(argv[i], "--password") && i + 1 < argc)
            password = argv[++i];
        else
            return PL_EXIT_USAGE;
    }
    char room[1024];
    snprintf(room, sizeof(room), "%.*s", (int)strcspn(argv[2], "/"), argv[2]);
    struct join j = {argv[2], 0, 0, 0, ""};
    xmpp_handler_add(c->conn, on_room_presence, NULL, "presence", NULL, &j);
    xmpp_stanza_t *p = xmpp_presence_new(c->ctx);
    xmpp_stanza_set_to(p, argv[2]);
    xmpp_stanza_t *x = pl_cli_elem(c->ctx, "x", NS_MUC);
    if (password)
        pl_cli_add_text(c->ctx, x, "password", password);
    pl_cli_adopt(p, x);
    xmpp_send(c->conn, p);
    xmpp_stanza_release(p);
    long long deadline = pl_cl_now_ms() + c->o.timeout_ms;
    while (!j.joined && !j.error && c->connected && !pl_cli_interrupted() &&
           pl_cl_now_ms() < deadline)
        xmpp_run_once(c->ctx, 50);
    xmpp_handler_delete(c->conn, on_room_presence);
    if (j.error) {
        fprintf(stderr, "parley: joining %s: %s\n", argv[2], j.cond);
        if (c->json)
            pl_cli_out(c,
                       json_pack("{s:s, s:s}", "error", j.cond, "while",
                                 "room join"),
                       NULL);
        return PL_EXIT_STANZA;
    }
    if (!j.joined) {
        fprintf(stderr, "parley: joining %s: no answer\n", argv[2]);
        return c->connected ? PL_EXIT_TIMEOUT : PL_EXIT_CONNECT;
    }
    if (j.created) {
        /* XEP-0045 §10.1.2: a new room stays locked until its owner
         * configures it; accept the default configuration (instant room). */
        xmpp_stanza_t *q;
        xmpp_stanza_t *iq = iq_with_query(c, "set", room, "query",
                                          NS_MUC "#owner", &q);
        xmpp_stanza_t *form = pl_cli_elem(c->ctx, "x", NS_XDATA);
        xmpp_stanza_set_attribute(form, "type", "submit");
        pl_cli_adopt(q, form);
        int rc = call(c, "room configuration", iq, NULL);
        if (rc != PL_EXIT_OK)
            return rc;
    }
    pl_cli_out(c,
               json_pack("{s:s, s:b}", "joined", argv[2], "created", j.created),
               j.created ? "joined (created the room)" : "joined");
    c->room = room;
    c->listening = secs > 0;
    if (say) {
        xmpp_stanza_t *m = xmpp_message_new(c->ctx, "groupchat", room, NULL);
        xmpp_message_set_body(m, say);
        xmpp_send(c->conn, m);
        xmpp_stanza_release(m);
    }
    int rc = PL_EXIT_OK;
    if (secs > 0)
        rc = pl_cli_run(c, (long)(secs * 1000), NULL);
    else if (say) /* let the room echo it back (XEP-0045 §7.4) */
        pl_cli_run(c, 300, NULL);
    xmpp_stanza_t *u = xmpp_presence_new(c->ctx);
    xmpp_stanza_set_to(u, argv[2]);
    xmpp_stanza_set_type(u, "unavailable");
    xmpp_send(c->conn, u);
    xmpp_stanza_release(u);
    return rc;
}

/* --------------------------------------------------------------- ping */

static int cmd_ping(struct pl_cli *c, int argc, char **argv)
{
    if (argc > 2)
        return PL_EXIT_USAGE;
    /* Without a JID, the server itself (XEP-0199 §4.2). */
    char domain[512] = "";
    const char *at = strchr(c->jid, '@');
    snprintf(domain, sizeof(domain), "%.*s",
             (int)strcspn(at ? at + 1 : c->jid, "/"), at ? at + 1 : c->jid);
    long long t0 = pl_cl_now_ms();
    int rc = call(c, "ping",
                  iq_with_query(c, "get", argc == 2 ? argv[1] : domain, "ping",
                                PL_NS_PING, NULL),
                  NULL);
    if (rc != PL_EXIT_OK)
        return rc;
    long long ms = pl_cl_now_ms() - t0;
    char text[64];
    snprintf(text, sizeof(text), "pong in %lld ms", ms);
    return ok_out(c,
                  json_pack("{s:s, s:I}", "pong", argc == 2 ? argv[1] : domain,
                            "ms", (json_int_t)ms),
                  text);
}

/* ------------------------------------------------------------ dispatch */

static const struct {
    const char *name;
    int (*fn)(struct pl_cli *c, int argc, char **argv);
} commands[] = {
    {"register", cmd_register},
    {"send", cmd_send},
    {"listen", cmd_listen},
    {"roster", cmd_roster},
    {"subscribe", cmd_subscription},
    {"approve", cmd_subscription},
    {"deny", cmd_subscription},
    {"unsubscribe", cmd_subscription},
    {"presence", cmd_presence},
    {"vcard", cmd_vcard},
    {"search", cmd_search},
    {"room", cmd_room},
    {"ping", cmd_ping},
    {"get", pl_cli_cmd_get},
    {"share", pl_cli_cmd_share},
};

int pl_cli_command_is_offline(const char *name)
{
    return !strcmp(name, "register");
}

int pl_cli_command(struct pl_cli *c, int argc, char **argv)
{
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (!strcmp(commands[i].name, argv[0])) {
            int rc = commands[i].fn(c, argc, argv);
            if (rc == PL_EXIT_USAGE)
                fprintf(stderr, "parley: usage:\n%s", pl_cli_commands_help);
            return rc;
        }
    fprintf(stderr, "parley: unknown command %s\n%s", argv[0],
            pl_cli_commands_help);
    return PL_EXIT_USAGE;
}
