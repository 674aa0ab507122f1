/*
 * fleet.c - head-end push to devices (parley-agent boxes): one device, a
 * named group, or every device of a host, with XEP-0184 delivery receipts,
 * a TTL per push, and per-device delivery state that survives a restart.
 *
 * A device is an account whose localpart is a device id (12 lower-case hex
 * digits: the MAC address, as parley-agent derives it); "every device"
 * means every such account.  Targets may also name any account by its
 * localpart.
 *
 * The push message (built once, serialized once, see "Broadcast"):
 *   <message from='HOST' id='push-ID'>
 *     <json xmlns='urn:xmpp:json:0'>PAYLOAD</json>        XEP-0335
 *     <request xmlns='urn:xmpp:receipts'/>                 XEP-0184 §5
 *   </message>
 * It goes to every available session (non-negative priority) of each
 * target; a target without one gets it when it next sends initial presence
 * (event presence/initial), until the TTL ends.  The device's
 * <received id='push-ID'/> (sent to HOST) marks it delivered; an error
 * reply with that id marks it failed.  A JSON reply to HOST whose
 * "reply-to" is the push's stanza id is kept as the device's result
 * (memory only) and shown by a verbose status.
 *
 * Broadcast: the stanza carries no 'to'.  RFC 6120 §8.1.1.1 lets a server
 * omit 'to' on a stanza it delivers to a connected client (the client
 * takes it as addressed to itself), so one struct pl_stanza with one cached
 * serialization goes to every session: the per-device cost is a session
 * lookup and a copy into the connection's output buffer (no XML work).
 *
 * Storage (kv, written through pl_storage_submit, answered after commit):
 *   user "", store "fleet-push", key ID   {"payload","created","expires"}
 *   user DEV, store "fleet", key ID       pending | delivered | expired |
 *                                         failed:REASON
 *   user "", store "fleet-group", key G   ["dev", ...]
 * A push and all its per-device rows are written in one job, so one
 * transaction: the admin client gets the id only once it is durable.
 *
 * In a cluster (doc/cluster.md) pushes reach devices on other nodes
 * through their remote sessions; a device's receipt then reaches its own
 * node, which does not know the push: it marks the device's row
 * delivered in the shared database ("?delivered": only over pending or
 * expired), and a status request first reads the rows of the devices
 * still pending or expired here.  The sweep writes "?expired" (only over
 * pending) so as not to undo such a receipt.
 *
 * Expiry: a one-second sweep marks the still pending devices of pushes
 * whose TTL ended as expired (so an expired push is never sent), and
 * forgets settled pushes older than `retention`.
 *
 * The admin socket (admin.c) is opened by the first host that loads the
 * module; requests name a host or go to that first one.
 */
#include <limits.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>

#include "modules/fleet/fleet.h"

#define NS_JSON "urn:xmpp:json:0"
#define NS_RECEIPTS "urn:xmpp:receipts"

enum {
    ST_PENDING = 1,
    ST_DELIVERED,
    ST_EXPIRED,
    ST_FAILED,
    ST_N
};
static const char *const st_names[ST_N] = {NULL, "pending", "delivered",
                                           "expired", "failed"};

struct push {
    char id[40];           /* "18c2f0e1a2b30001" */
    char sid[48];          /* stanza id "push-" ID */
    char *payload;         /* compact JSON text */
    struct pl_stanza *st;  /* the message, built once */
    long long created;     /* epoch seconds */
    long long expires;     /* epoch seconds */
    struct pl_map devices; /* device -> (void *)(uintptr_t)state */
    struct pl_map reasons; /* device -> failure reason (owned) */
    struct pl_map results; /* device -> JSON reply text (owned) */
    long n[ST_N];          /* devices per state */
};

/* Another node's push, heard from it (fan_out): what a device that logs
 * in here later needs, without its devices (their rows are in the
 * shared database). */
struct other {
    char id[40];
    long long expires;    /* epoch seconds */
    struct pl_stanza *st; /* the message */
};

struct devq {
    struct push **v; /* pushes still pending for one device */
    int n, cap;
};

struct state {
    long default_ttl; /* seconds */
    long max_ttl;
    long retention;
    long max_targets;
    long max_payload;
    struct pl_host *host;
    struct pl_map pushes;  /* id -> struct push */
    struct pl_map pending; /* device -> struct devq */
    struct pl_map groups;  /* name -> struct pl_map (member -> (void *)1) */
    struct pl_map others;  /* id -> struct other: other nodes' pushes */
    struct pl_timer sweep;
    int loaded; /* stored pushes and groups are in memory */
};

/* Hosts with the module, in load order; the first owns the socket. */
static struct state *hosts[64];
static int nhosts;
static unsigned push_counter;

static long long now_s(void)
{
    return (long long)time(NULL);
}

/* -------------------------------------------------------------- pushes */

static struct pl_stanza *push_stanza(struct state *s, const char *sid,
                                     const char *payload, size_t len)
{
    struct pl_stanza *st = pl_stanza_new("message", PL_NS_CLIENT);
    struct pl_node *root = pl_stanza_root(st);
    pl_stanza_set_attr(st, "from", s->host->domain);
    pl_stanza_set_attr(st, "id", sid);
    struct pl_node *j = pl_node_add_child(st, root, "json", NS_JSON);
    pl_node_add_text(st, j, payload, len);
    pl_node_add_child(st, root, "request", NS_RECEIPTS);
    return st;
}

static void build_stanza(struct state *s, struct push *p)
{
    p->st = push_stanza(s, p->sid, p->payload, strlen(p->payload));
}

static struct push *push_new(const char *id, const char *payload)
{
    struct push *p = pl_calloc(1, sizeof(*p));
    snprintf(p->id, sizeof(p->id), "%s", id);
    snprintf(p->sid, sizeof(p->sid), "push-%s", id);
    p->payload = pl_strdup(payload);
    return p;
}

static void free_str(const char *k, void *v, void *ud)
{
    pl_free(v);
}

static void push_free(struct push *p)
{
    pl_map_each(&p->reasons, free_str, NULL);
    pl_map_each(&p->results, free_str, NULL);
    pl_map_clear(&p->devices);
    pl_map_clear(&p->reasons);
    pl_map_clear(&p->results);
    pl_stanza_unref(p->st);
    pl_free(p->payload);
    pl_free(p);
}

static int dev_state(struct push *p, const char *dev)
{
    return (int)(uintptr_t)pl_map_get(&p->devices, dev);
}

static void devq_add(struct state *s, const char *dev, struct push *p)
{
    struct devq *q = pl_map_get(&s->pending, dev);
    if (!q) {
        q = pl_calloc(1, sizeof(*q));
        pl_map_put(&s->pending, dev, q);
    }
    if (q->n == q->cap) {
        q->cap = q->cap ? q->cap * 2 : 2;
        q->v = pl_realloc(q->v, sizeof(*q->v) * (size_t)q->cap);
    }
    q->v[q->n++] = p;
}

static void devq_del(struct state *s, const char *dev, struct push *p)
{
    struct devq *q = pl_map_get(&s->pending, dev);
    if (!q)
        return;
    for (int i = 0; i < q->n; i++)
        if (q->v[i] == p) {
            memmove(q->v + i, q->v + i + 1,
                    sizeof(*q->v) * (size_t)(q->n - i - 1));
            q->n--;
            break;
        }
    if (!q->n) {
        pl_map_del(&s->pending, dev);
        pl_free(q->v);
        pl_free(q);
    }
}

/* Sets a device's state in memory (counts, pending queue, reason). */
static void set_state(struct state *s, struct push *p, const char *dev, int st,
                      const char *reason)
{
    int old = dev_state(p, dev);
    if (old == st)
        return;
    if (old)
        p->n[old]--;
    p->n[st]++;
    pl_map_put(&p->devices, dev, (void *)(uintptr_t)st);
    if (old == ST_PENDING)
        devq_del(s, dev, p);
    if (st == ST_PENDING)
        devq_add(s, dev, p);
    if (st == ST_FAILED)
        pl_free(pl_map_put(&p->reasons, dev,
                           pl_strdup(reason ? reason : "failed")));
}

/* Sends p to every available session of dev; returns how many. */
static int deliver(struct state *s, struct push *p, const char *dev)
{
    char bare[1100];
    snprintf(bare, sizeof(bare), "%s@%s", dev, s->host->domain);
    int sent = 0;
    /* This node's sessions: another node's (its copies here, in a
     * cluster) get it from their own node (fan_out). */
    for (struct pl_session *x = pl_session_first(bare); x; x = x->next_res)
        if (x->available && x->priority >= 0 && !x->elsewhere) {
            pl_session_send(x, p->st);
            sent++;
        }
    return sent;
}

/* ------------------------------------------------------ state updates */

struct upd_job {
    char *host;
    struct pl_buf rows; /* "dev\0id\0value\0" repeated */
};

/*
 * A conditional row ("?value"): the state a device's row may take only
 * from an earlier one, as the database has it now (several nodes of a
 * cluster write these rows, doc/cluster.md): "expired" only over
 * "pending", "delivered" over "pending" or "expired".
 */
static int cond_ok(const struct pl_storage_driver *d, void *db,
                   const char *host, const char *dev, const char *id,
                   const char *val)
{
    struct pl_buf cur = {0};
    int ok = 0;
    if (d->kv_get(db, host, dev, "fleet", id, &cur) == PL_OK) {
        struct pl_str c = {cur.data + cur.off, cur.len};
        int pending = c.len == 7 && memcmp(c.p, "pending", 7) == 0;
        int expired = c.len == 7 && memcmp(c.p, "expired", 7) == 0;
        ok = strcmp(val, "delivered") == 0 ? pending || expired : pending;
    }
    pl_buf_reset(&cur);
    return ok;
}

static int upd_run(const struct pl_storage_driver *d, void *db, void *arg)
{
    struct upd_job *j = arg;
    const char *p = j->rows.data + j->rows.off, *end = p + j->rows.len;
    while (p < end) {
        const char *dev = p;
        const char *id = dev + strlen(dev) + 1;
        const char *val = id + strlen(id) + 1;
        p = val + strlen(val) + 1;
        if (*val == '?' && !cond_ok(d, db, j->host, dev, id, val + 1))
            continue;
        if (*val == '?')
            val++;
        /* dev "" is the push record itself. */
        int rc = d->kv_set(db, j->host, dev, *dev ? "fleet" : "fleet-push", id,
                           *val ? val : NULL, strlen(val));
        if (rc != PL_OK)
            return rc;
    }
    return PL_OK;
}

static void upd_done(int rc, void *arg)
{
    struct upd_job *j = arg;
    if (rc != PL_OK)
        pl_log_error("fleet", "while storing delivery states on %s", j->host);
    pl_buf_reset(&j->rows);
    pl_free(j->host);
    pl_free(j);
}

static struct upd_job *upd_new(struct state *s)
{
    struct upd_job *j = pl_calloc(1, sizeof(*j));
    j->host = pl_strdup(s->host->domain);
    return j;
}

/* value "" deletes the row. */
static void upd_row(struct upd_job *j, const char *dev, const char *id,
                    const char *value)
{
    pl_buf_append(&j->rows, dev, strlen(dev) + 1);
    pl_buf_append(&j->rows, id, strlen(id) + 1);
    pl_buf_append(&j->rows, value, strlen(value) + 1);
}

static void upd_submit(struct upd_job *j)
{
    if (!j->rows.len) {
        upd_done(PL_OK, j);
        return;
    }
    pl_storage_submit(pl_server_loop(), upd_run, upd_done, j);
}

static void store_state(struct state *s, struct push *p, const char *dev,
                        int st, const char *reason)
{
    struct upd_job *j = upd_new(s);
    char v[300];
    if (st == ST_FAILED)
        snprintf(v, sizeof(v), "failed:%s", reason ? reason : "failed");
    else
        snprintf(v, sizeof(v), "%s", st_names[st]);
    upd_row(j, dev, p->id, v);
    upd_submit(j);
}

/* ---------------------------------------------------------- the sweep */

struct expire_ctx {
    struct state *s;
    struct push *p;
    struct upd_job *j;
    const char **devs;
    int n, cap;
};

static void collect_pending(const char *dev, void *v, void *ud)
{
    struct expire_ctx *x = ud;
    if ((int)(uintptr_t)v != ST_PENDING)
        return;
    if (x->n == x->cap) {
        x->cap = x->cap ? x->cap * 2 : 16;
        x->devs = pl_realloc(x->devs, sizeof(*x->devs) * (size_t)x->cap);
    }
    x->devs[x->n++] = dev;
}

static void collect_all(const char *dev, void *v, void *ud)
{
    struct expire_ctx *x = ud;
    upd_row(x->j, dev, x->p->id, "");
}

static void expire_push(struct state *s, struct push *p, struct upd_job *j)
{
    struct expire_ctx x = {s, p, j, NULL, 0, 0};
    pl_map_each(&p->devices, collect_pending, &x);
    /* Keys live in the map; copy before changing it. */
    for (int i = 0; i < x.n; i++) {
        char dev[80];
        snprintf(dev, sizeof(dev), "%s", x.devs[i]);
        set_state(s, p, dev, ST_EXPIRED, NULL);
        /* Not over a receipt another node stored meanwhile. */
        upd_row(j, dev, p->id, "?expired");
    }
    pl_free(x.devs);
    if (x.n)
        pl_log_info("fleet", "push %s expired for %d devices", p->id, x.n);
}

struct sweep_ctx {
    struct state *s;
    long long now;
    struct upd_job *j;
    struct push **gone;
    int ngone, cap;
};

static void sweep_one(const char *id, void *v, void *ud)
{
    struct sweep_ctx *c = ud;
    struct push *p = v;
    if (p->n[ST_PENDING] && p->expires <= c->now)
        expire_push(c->s, p, c->j);
    if (!p->n[ST_PENDING] && p->created + c->s->retention <= c->now) {
        if (c->ngone == c->cap) {
            c->cap = c->cap ? c->cap * 2 : 8;
            c->gone = pl_realloc(c->gone, sizeof(*c->gone) * (size_t)c->cap);
        }
        c->gone[c->ngone++] = p;
    }
}

struct others_ctx {
    long long now;
    struct other **gone;
    int n, cap;
};

static void other_old(const char *id, void *v, void *ud)
{
    (void)id;
    struct others_ctx *c = ud;
    struct other *o = v;
    if (o->expires > c->now)
        return;
    if (c->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 8;
        c->gone = pl_realloc(c->gone, sizeof(*c->gone) * (size_t)c->cap);
    }
    c->gone[c->n++] = o;
}

static void other_free(struct other *o)
{
    pl_stanza_unref(o->st);
    pl_free(o);
}

/* Other nodes' pushes that expired by `now` (LLONG_MAX: all): forgotten. */
static void others_expire(struct state *s, long long now)
{
    struct others_ctx c = {now, NULL, 0, 0};
    pl_map_each(&s->others, other_old, &c);
    for (int i = 0; i < c.n; i++) {
        pl_map_del(&s->others, c.gone[i]->id);
        other_free(c.gone[i]);
    }
    pl_free(c.gone);
}

static void on_sweep(struct pl_timer *t)
{
    struct state *s = t->data;
    struct sweep_ctx c = {s, now_s(), upd_new(s), NULL, 0, 0};
    if (s->loaded)
        pl_map_each(&s->pushes, sweep_one, &c);
    for (int i = 0; i < c.ngone; i++) {
        struct push *p = c.gone[i];
        struct expire_ctx x = {s, p, c.j, NULL, 0, 0};
        pl_map_each(&p->devices, collect_all, &x);
        upd_row(c.j, "", p->id, "");
        pl_map_del(&s->pushes, p->id);
        push_free(p);
    }
    pl_free(c.gone);
    upd_submit(c.j);
    others_expire(s, c.now);
    pl_timer_start(pl_server_loop(), &s->sweep, 1000);
}

/* ------------------------------------------------------------- answers */

static json_t *err_answer(const char *err, const char *detail)
{
    return json_pack("{s:b, s:s, s:s}", "ok", 0, "error", err, "detail",
                     detail);
}

static void answer(uint64_t cid, json_t *req, json_t *a)
{
    json_t *tag = json_object_get(req, "tag");
    if (tag)
        json_object_set(a, "tag", tag);
    pl_admin_answer(cid, a);
    json_decref(a);
}

/* ----------------------------------------------------------- creation */

struct create_job {
    struct state *s;
    char *host;
    uint64_t cid;
    json_t *req;    /* for the tag */
    struct push *p; /* not yet visible to the loop */
    char **devs;    /* targets (owned) */
    int *states;    /* their initial states */
    int n, cap;
    int all; /* resolve every device account */
    long max_targets;
    int too_many;
};

static void add_target(struct create_job *j, const char *dev)
{
    if (j->n >= j->max_targets) {
        j->too_many = 1;
        return;
    }
    if (j->n == j->cap) {
        j->cap = j->cap ? j->cap * 2 : 16;
        j->devs = pl_realloc(j->devs, sizeof(*j->devs) * (size_t)j->cap);
        j->states = pl_realloc(j->states, sizeof(int) * (size_t)j->cap);
    }
    j->devs[j->n] = pl_strdup(dev);
    j->states[j->n++] = ST_PENDING;
}

static void list_user(const char *user, void *ud)
{
    if (pl__fleet_is_device_id(user))
        add_target(ud, user);
}

static int create_run(const struct pl_storage_driver *d, void *db, void *arg)
{
    struct create_job *j = arg;
    if (j->all) {
        int rc = d->account_list(db, j->host, list_user, j);
        if (rc != PL_OK)
            return rc;
        if (j->too_many)
            return PL_ELIMIT;
    }
    char rec[64];
    snprintf(rec, sizeof(rec), "%lld,%lld,", j->p->created, j->p->expires);
    struct pl_buf b = {0};
    pl_buf_append_str(&b, rec);
    pl_buf_append_str(&b, j->p->payload);
    int rc = d->kv_set(db, j->host, "", "fleet-push", j->p->id, b.data + b.off,
                       b.len);
    pl_buf_reset(&b);
    for (int i = 0; i < j->n && rc == PL_OK; i++) {
        struct pl_account acc;
        if (!j->all) {
            rc = d->account_get(db, j->host, j->devs[i], &acc);
            if (rc == PL_ENOT_FOUND)
                j->states[i] = ST_FAILED;
            else if (rc != PL_OK)
                break;
        }
        const char *v = j->states[i] == ST_FAILED ? "failed:no-such-account"
                                                  : "pending";
        rc = d->kv_set(db, j->host, j->devs[i], "fleet", j->p->id, v,
                       strlen(v));
    }
    return rc;
}

/*
 * In a cluster (doc/cluster.md) the devices not connected here may be
 * connected to other nodes: each node delivers to its own.  The push goes
 * to them as "user/data-changed" (module "fleet", the host's domain):
 * "<id>\n<expires>\n<payload length>\n<payload>" then "\n<device>" for
 * each, at most FAN_CHUNK devices per event.  A node that hears it
 * delivers to its devices connected now; their receipts reach it and mark
 * their rows delivered in the shared database.  It also keeps the push
 * (struct other, until it expires): a device that logs in there later
 * gets it if its row is still pending (on_initial, late_run).  Without a
 * cluster nobody hears it.
 */
#define FAN_CHUNK 2000

struct fan {
    struct pl_buf b;
    int n;
};

static void fan_flush(struct state *s, struct fan *f)
{
    if (f->n) {
        struct pl_str t = pl_buf_str(&f->b);
        struct pl_data_change c = {"fleet", s->host->domain, t.p, t.len};
        struct pl_event ev =
            {"user/data-changed", s->host, NULL, NULL, NULL, NULL, &c};
        pl_hook_fire(&ev);
    }
    pl_buf_reset(&f->b);
    f->n = 0;
}

static void fan_add(struct state *s, struct push *p, struct fan *f,
                    const char *dev)
{
    if (!f->n)
        pl_buf_printf(&f->b, "%s\n%lld\n%zu\n%s", p->id, p->expires,
                      strlen(p->payload), p->payload);
    pl_buf_printf(&f->b, "\n%s", dev);
    if (++f->n >= FAN_CHUNK)
        fan_flush(s, f);
}

/* Another node's push: to the devices connected here. */
static int on_elsewhere(struct pl_event *ev, void *state)
{
    struct state *s = state;
    const struct pl_data_change *c = ev->data;
    if (!c || strcmp(c->module, "fleet") != 0 ||
        strcmp(c->bare, s->host->domain) != 0)
        return PL_PASS;
    const char *e = c->payload + c->len;
    const char *nl = memchr(c->payload, '\n', c->len);
    char *x = NULL, *end = NULL;
    long long expires = nl ? strtoll(nl + 1, &x, 10) : 0;
    size_t plen = x && *x == '\n' ? strtoul(x + 1, &end, 10) : 0;
    size_t idlen = nl ? (size_t)(nl - c->payload) : 0;
    if (!end || *end != '\n' || plen > (size_t)(e - end - 1) || !idlen ||
        idlen >= sizeof(((struct other *)0)->id))
        return PL_PASS;
    char id[40], sid[96];
    memcpy(id, c->payload, idlen);
    id[idlen] = '\0';
    snprintf(sid, sizeof(sid), "push-%s", id);
    struct other *o = pl_map_get(&s->others, id);
    if (!o && !pl_map_get(&s->pushes, id) && expires > now_s()) {
        o = pl_calloc(1, sizeof(*o));
        memcpy(o->id, id, idlen + 1);
        o->expires = expires;
        o->st = push_stanza(s, sid, end + 1, plen);
        pl_map_put(&s->others, o->id, o);
    }
    struct pl_stanza *st = o ? pl_stanza_ref(o->st) : NULL;
    const char *at = end + 1 + plen;
    int online = 0;
    while (at < e && *at == '\n') {
        const char *d = at + 1;
        const char *next = memchr(d, '\n', (size_t)(e - d));
        if (!next)
            next = e;
        char bare[1100];
        snprintf(bare, sizeof(bare), "%.*s@%s", (int)(next - d), d,
                 s->host->domain);
        for (struct pl_session *y = pl_session_first(bare); y; y = y->next_res)
            if (y->available && y->priority >= 0 && !y->elsewhere) {
                if (!st)
                    st = push_stanza(s, sid, end + 1, plen);
                pl_session_send(y, st);
                online++;
            }
        at = next;
    }
    if (online)
        pl_log_info("fleet", "%s from another node: %d sessions here", sid,
                    online);
    pl_stanza_unref(st);
    return PL_PASS;
}

static void create_free(struct create_job *j)
{
    for (int i = 0; i < j->n; i++)
        pl_free(j->devs[i]);
    pl_free(j->devs);
    pl_free(j->states);
    json_decref(j->req);
    pl_free(j->host);
    pl_free(j);
}

static void create_done(int rc, void *arg)
{
    struct create_job *j = arg;
    struct state *s = j->s;
    if (rc != PL_OK) {
        answer(j->cid, j->req,
               rc == PL_ELIMIT
                   ? err_answer("policy-violation",
                                "more targets than max_targets")
                   : err_answer("internal-server-error", "storage failed"));
        push_free(j->p);
    } else {
        struct push *p = j->p;
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        build_stanza(s, p);
        pl_map_put(&s->pushes, p->id, p);
        long online = 0, sessions = 0;
        struct fan f = {0};
        for (int i = 0; i < j->n; i++) {
            set_state(s, p, j->devs[i], j->states[i],
                      j->states[i] == ST_FAILED ? "no-such-account" : NULL);
            if (j->states[i] == ST_PENDING) {
                int k = deliver(s, p, j->devs[i]);
                sessions += k;
                online += k > 0;
                if (!k)
                    fan_add(s, p, &f, j->devs[i]);
            }
        }
        fan_flush(s, &f);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 +
                    (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
        pl_log_info("fleet",
                    "push %s to %d devices, %ld online: queued in %.2f ms "
                    "(%.2f us per device)",
                    p->id, j->n, online, ms, j->n ? ms * 1e3 / j->n : 0.0);
        answer(j->cid, j->req,
               json_pack("{s:b, s:s, s:i, s:i, s:I, s:I}", "ok", 1, "id", p->id,
                         "targets", j->n, "failed", (int)p->n[ST_FAILED],
                         "sent", (json_int_t)sessions, "expires",
                         (json_int_t)p->expires));
    }
    create_free(j);
}

static void new_push_id(char *out, size_t len)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    unsigned long long ms = (unsigned long long)tv.tv_sec * 1000ULL +
                            (unsigned)(tv.tv_usec / 1000);
    snprintf(out, len, "%llx%04x", ms, (push_counter++) & 0xffff);
}

static void op_push(struct state *s, uint64_t cid, json_t *req)
{
    json_t *payload = json_object_get(req, "payload");
    json_t *dev = json_object_get(req, "device");
    json_t *grp = json_object_get(req, "group");
    int all = json_is_true(json_object_get(req, "all"));
    json_t *ttlj = json_object_get(req, "ttl");
    if (!payload || (!!dev + !!grp + all) != 1) {
        answer(cid, req,
               err_answer("bad-request",
                          "need payload and one of device, group, "
                          "all"));
        return;
    }
    long long ttl = ttlj ? json_integer_value(ttlj) : s->default_ttl;
    if (ttlj && (!json_is_integer(ttlj) || ttl <= 0 || ttl > s->max_ttl)) {
        answer(cid, req,
               err_answer("bad-request", "ttl must be 1..max_ttl seconds"));
        return;
    }
    char *text = json_dumps(payload, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!text || (long)strlen(text) > s->max_payload) {
        free(text);
        answer(cid, req,
               err_answer("policy-violation",
                          "payload larger than max_payload"));
        return;
    }
    struct create_job *j = pl_calloc(1, sizeof(*j));
    j->s = s;
    j->host = pl_strdup(s->host->domain);
    j->cid = cid;
    j->req = json_incref(req);
    j->all = all;
    j->max_targets = s->max_targets;
    char id[40];
    new_push_id(id, sizeof(id));
    j->p = push_new(id, text);
    free(text);
    j->p->created = now_s();
    j->p->expires = j->p->created + ttl;
    const char *bad = NULL;
    if (dev) {
        size_t n = json_is_array(dev) ? json_array_size(dev) : 1;
        for (size_t i = 0; i < n && !bad; i++) {
            json_t *d = json_is_array(dev) ? json_array_get(dev, i) : dev;
            char norm[80];
            if (!json_is_string(d) ||
                !pl__fleet_device_norm(json_string_value(d), norm,
                                       sizeof(norm)))
                bad = "a device is not a device id or localpart";
            else
                add_target(j, norm);
        }
    } else if (grp) {
        struct pl_map *m = json_is_string(grp)
                               ? pl_map_get(&s->groups, json_string_value(grp))
                               : NULL;
        if (!m) {
            push_free(j->p);
            create_free(j);
            answer(cid, req, err_answer("item-not-found", "no such group"));
            return;
        }
        for (size_t b = 0; b < m->nbuckets; b++)
            for (struct pl_map_entry *e = m->buckets[b]; e; e = e->next)
                add_target(j, e->key);
    }
    if (j->too_many)
        bad = "more targets than max_targets";
    if (!bad && !j->all && !j->n)
        bad = "no targets";
    if (bad) {
        const char *cond = j->too_many ? "policy-violation" : "bad-request";
        push_free(j->p);
        create_free(j);
        answer(cid, req, err_answer(cond, bad));
        return;
    }
    pl_storage_submit(pl_server_loop(), create_run, create_done, j);
}

/* -------------------------------------------------------------- status */

struct fail_ctx {
    json_t *list;
    json_t *results;
    struct push *p;
};

static void add_failure(const char *dev, void *v, void *ud)
{
    struct fail_ctx *c = ud;
    json_array_append_new(c->list, json_pack("{s:s, s:s}", "device", dev,
                                             "reason", (const char *)v));
}

static void add_result(const char *dev, void *v, void *ud)
{
    struct fail_ctx *c = ud;
    json_t *r = json_loads(v, 0, NULL);
    json_object_set_new(c->results, dev, r ? r : json_string(v));
}

static void status_answer(struct state *s, uint64_t cid, json_t *req);

/* Status refresh: the rows of the devices still pending or expired here,
 * which receipts on other nodes of a cluster may have made delivered. */
struct status_job {
    struct state *s;
    uint64_t cid;
    json_t *req;        /* held */
    char *host, *id;    /* the push */
    struct pl_buf devs; /* "dev\0" repeated; run: those delivered */
};

static int status_run(const struct pl_storage_driver *d, void *db, void *arg)
{
    struct status_job *j = arg;
    struct pl_buf got = {0};
    const char *p = j->devs.data + j->devs.off, *end = p + j->devs.len;
    for (; p < end; p += strlen(p) + 1) {
        struct pl_buf cur = {0};
        if (d->kv_get(db, j->host, p, "fleet", j->id, &cur) == PL_OK &&
            cur.len == 9 && memcmp(cur.data + cur.off, "delivered", 9) == 0)
            pl_buf_append(&got, p, strlen(p) + 1);
        pl_buf_reset(&cur);
    }
    pl_buf_reset(&j->devs);
    j->devs = got;
    return PL_OK;
}

static void status_done(int rc, void *arg)
{
    struct status_job *j = arg;
    struct push *p = pl_map_get(&j->s->pushes, j->id);
    const char *d = j->devs.data + j->devs.off, *end = d + j->devs.len;
    for (; rc == PL_OK && p && d < end; d += strlen(d) + 1) {
        char dev[80];
        snprintf(dev, sizeof(dev), "%s", d);
        int old = dev_state(p, dev);
        if (old == ST_PENDING || old == ST_EXPIRED)
            set_state(j->s, p, dev, ST_DELIVERED, NULL);
    }
    status_answer(j->s, j->cid, j->req);
    json_decref(j->req);
    pl_buf_reset(&j->devs);
    pl_free(j->host);
    pl_free(j->id);
    pl_free(j);
}

static void collect_open(const char *dev, void *v, void *ud)
{
    int st = (int)(uintptr_t)v;
    if (st == ST_PENDING || st == ST_EXPIRED)
        pl_buf_append(ud, dev, strlen(dev) + 1);
}

static void op_status(struct state *s, uint64_t cid, json_t *req)
{
    const char *id = json_string_value(json_object_get(req, "id"));
    struct push *p = id ? pl_map_get(&s->pushes, id) : NULL;
    if (p && p->n[ST_PENDING] + p->n[ST_EXPIRED] > 0) {
        struct status_job *j = pl_calloc(1, sizeof(*j));
        j->s = s;
        j->cid = cid;
        j->req = json_incref(req);
        j->host = pl_strdup(s->host->domain);
        j->id = pl_strdup(p->id);
        pl_map_each(&p->devices, collect_open, &j->devs);
        pl_storage_submit(pl_server_loop(), status_run, status_done, j);
        return;
    }
    status_answer(s, cid, req);
}

static void status_answer(struct state *s, uint64_t cid, json_t *req)
{
    const char *id = json_string_value(json_object_get(req, "id"));
    struct push *p = id ? pl_map_get(&s->pushes, id) : NULL;
    if (!p) {
        answer(cid, req, err_answer("item-not-found", "no such push"));
        return;
    }
    struct fail_ctx c = {json_array(), NULL, p};
    pl_map_each(&p->reasons, add_failure, &c);
    json_t *a = json_pack("{s:b, s:s, s:I, s:I, s:I, s:i, s:i, s:i, s:i, s:o}",
                          "ok", 1, "id", p->id, "created",
                          (json_int_t)p->created, "expires",
                          (json_int_t)p->expires, "targets",
                          (json_int_t)(p->n[1] + p->n[2] + p->n[3] + p->n[4]),
                          "delivered", (int)p->n[ST_DELIVERED], "pending",
                          (int)p->n[ST_PENDING], "expired",
                          (int)p->n[ST_EXPIRED], "failed", (int)p->n[ST_FAILED],
                          "failures", c.list);
    if (json_is_true(json_object_get(req, "verbose"))) {
        c.results = json_object();
        pl_map_each(&p->results, add_result, &c);
        json_object_set_new(a, "results", c.results);
        json_object_set_new(a, "payload",
                            json_loads(p->payload, JSON_DECODE_ANY, NULL));
    }
    answer(cid, req, a);
}

/* -------------------------------------------------------------- groups */

struct group_job {
    uint64_t cid;
    json_t *req;
    char *host, *name;
    char *members; /* JSON array text, NULL deletes */
    long count;
};

static int group_run(const struct pl_storage_driver *d, void *db, void *arg)
{
    struct group_job *j = arg;
    return d->kv_set(db, j->host, "", "fleet-group", j->name, j->members,
                     j->members ? strlen(j->members) : 0);
}

static void group_done(int rc, void *arg)
{
    struct group_job *j = arg;
    answer(j->cid, j->req,
           rc == PL_OK ? json_pack("{s:b, s:s, s:i}", "ok", 1, "group", j->name,
                                   "members", (int)j->count)
                       : err_answer("internal-server-error", "storage failed"));
    json_decref(j->req);
    free(j->members);
    pl_free(j->name);
    pl_free(j->host);
    pl_free(j);
}

static json_t *members_json(struct pl_map *m)
{
    /* Sorted, so listings are stable. */
    json_t *a = json_array();
    for (size_t b = 0; m && b < m->nbuckets; b++)
        for (struct pl_map_entry *e = m->buckets[b]; e; e = e->next)
            json_array_append_new(a, json_string(e->key));
    size_t n = json_array_size(a);
    for (size_t i = 1; i < n; i++)
        for (size_t k = i;
             k > 0 && strcmp(json_string_value(json_array_get(a, k - 1)),
                             json_string_value(json_array_get(a, k))) > 0;
             k--) {
            json_t *x = json_incref(json_array_get(a, k - 1));
            json_array_set(a, k - 1, json_array_get(a, k));
            json_array_set_new(a, k, x);
        }
    return a;
}

static int valid_group(const char *g)
{
    size_t n = g ? strlen(g) : 0;
    if (!n || n > 64)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((g[i] >= 'a' && g[i] <= 'z') || (g[i] >= 'A' && g[i] <= 'Z') ||
              (g[i] >= '0' && g[i] <= '9') || g[i] == '-' || g[i] == '_' ||
              g[i] == '.'))
            return 0;
    return 1;
}

static void op_group(struct state *s, uint64_t cid, json_t *req, int add)
{
    const char *name = json_string_value(json_object_get(req, "group"));
    json_t *devs = json_object_get(req, "devices");
    if (!valid_group(name) || (devs && !json_is_array(devs)) ||
        (add && !devs)) {
        answer(cid, req,
               err_answer("bad-request",
                          "need group ([A-Za-z0-9._-]{1,64}) and "
                          "a devices array"));
        return;
    }
    struct pl_map *m = pl_map_get(&s->groups, name);
    if (!add && !m) {
        answer(cid, req, err_answer("item-not-found", "no such group"));
        return;
    }
    /* Validate everything before changing anything. */
    for (size_t i = 0; devs && i < json_array_size(devs); i++) {
        char norm[80];
        json_t *d = json_array_get(devs, i);
        if (!json_is_string(d) ||
            !pl__fleet_device_norm(json_string_value(d), norm, sizeof(norm))) {
            answer(cid, req,
                   err_answer("bad-request", "a device is not a device id or "
                                             "localpart"));
            return;
        }
    }
    if (add &&
        (long)((m ? m->count : 0) + json_array_size(devs)) > s->max_targets) {
        answer(cid, req,
               err_answer("policy-violation",
                          "a group may not exceed max_targets"));
        return;
    }
    if (!m) {
        m = pl_calloc(1, sizeof(*m));
        pl_map_put(&s->groups, name, m);
    }
    for (size_t i = 0; devs && i < json_array_size(devs); i++) {
        char norm[80];
        pl__fleet_device_norm(json_string_value(json_array_get(devs, i)), norm,
                              sizeof(norm));
        if (add)
            pl_map_put(m, norm, (void *)1);
        else
            pl_map_del(m, norm);
    }
    struct group_job *j = pl_calloc(1, sizeof(*j));
    j->cid = cid;
    j->req = json_incref(req);
    j->host = pl_strdup(s->host->domain);
    j->name = pl_strdup(name);
    j->count = (long)m->count;
    if (devs && m->count) {
        json_t *a = members_json(m);
        j->members = json_dumps(a, JSON_COMPACT);
        json_decref(a);
    } else {
        /* Removing the group, or its last member: the group is gone. */
        pl_map_del(&s->groups, name);
        pl_map_clear(m);
        pl_free(m);
        j->count = 0;
    }
    pl_storage_submit(pl_server_loop(), group_run, group_done, j);
}

static void op_group_list(struct state *s, uint64_t cid, json_t *req)
{
    const char *name = json_string_value(json_object_get(req, "group"));
    json_t *groups = json_object();
    for (size_t b = 0; b < s->groups.nbuckets; b++)
        for (struct pl_map_entry *e = s->groups.buckets[b]; e; e = e->next)
            if (!name || !strcmp(name, e->key))
                json_object_set_new(groups, e->key, members_json(e->value));
    if (name && !json_object_size(groups)) {
        json_decref(groups);
        answer(cid, req, err_answer("item-not-found", "no such group"));
        return;
    }
    answer(cid, req, json_pack("{s:b, s:o}", "ok", 1, "groups", groups));
}

/* "admin/<op>" events from the admin socket (src/core/admin.h). */
static int admin_op(struct pl_event *ev, struct state *s, int op)
{
    struct pl_admin_request *r = ev->data;
    if (!s->loaded) {
        answer(r->cid, r->req,
               err_answer("resource-constraint", "still loading stored pushes; "
                                                 "retry"));
        return PL_HANDLED;
    }
    switch (op) {
    case 0: op_push(s, r->cid, r->req); break;
    case 1: op_status(s, r->cid, r->req); break;
    case 2: op_group(s, r->cid, r->req, 1); break;
    case 3: op_group(s, r->cid, r->req, 0); break;
    default: op_group_list(s, r->cid, r->req); break;
    }
    return PL_HANDLED;
}

static int on_admin_push(struct pl_event *ev, void *state)
{
    return admin_op(ev, state, 0);
}

static int on_admin_status(struct pl_event *ev, void *state)
{
    return admin_op(ev, state, 1);
}

static int on_admin_group_add(struct pl_event *ev, void *state)
{
    return admin_op(ev, state, 2);
}

static int on_admin_group_remove(struct pl_event *ev, void *state)
{
    return admin_op(ev, state, 3);
}

static int on_admin_group_list(struct pl_event *ev, void *state)
{
    return admin_op(ev, state, 4);
}

/* ---------------------------------------------------------- the hooks */

/*
 * A device logs in here while other nodes' pushes are live: its rows of
 * those pushes are read (a storage job), and the ones still pending are
 * sent to it.  Its receipt marks the row delivered (on_host_message).
 */
struct late_job {
    struct state *s;
    uint64_t sid; /* the session */
    char *host, *dev;
    struct pl_buf ids;     /* "id\0" for each push to look at */
    struct pl_buf pending; /* "id\0" for each still pending */
};

static int late_run(const struct pl_storage_driver *d, void *db, void *arg)
{
    struct late_job *j = arg;
    const char *p = j->ids.data + j->ids.off, *end = p + j->ids.len;
    for (; p < end; p += strlen(p) + 1) {
        struct pl_buf cur = {0};
        if (d->kv_get(db, j->host, j->dev, "fleet", p, &cur) == PL_OK &&
            cur.len == 7 && memcmp(cur.data + cur.off, "pending", 7) == 0)
            pl_buf_append(&j->pending, p, strlen(p) + 1);
        pl_buf_reset(&cur);
    }
    return PL_OK;
}

static void late_done(int rc, void *arg)
{
    struct late_job *j = arg;
    struct pl_session *x = pl_session_by_id(j->sid);
    const char *p = j->pending.data ? j->pending.data + j->pending.off : NULL;
    const char *end = p ? p + j->pending.len : NULL;
    long long now = now_s();
    int n = 0;
    for (; rc == PL_OK && x && p && p < end; p += strlen(p) + 1) {
        struct other *o = pl_map_get(&j->s->others, p);
        if (o && o->expires > now) {
            pl_session_send(x, o->st);
            n++;
        }
    }
    if (n)
        pl_log_info("fleet", "%s: %d pushes of other nodes still pending, sent",
                    j->dev, n);
    pl_buf_reset(&j->ids);
    pl_buf_reset(&j->pending);
    pl_free(j->host);
    pl_free(j->dev);
    pl_free(j);
}

struct late_ctx {
    struct late_job *j;
    long long now;
};

static void late_one(const char *id, void *v, void *ud)
{
    struct late_ctx *c = ud;
    const struct other *o = v;
    if (o->expires > c->now)
        pl_buf_append(&c->j->ids, id, strlen(id) + 1);
}

static void late_check(struct state *s, struct pl_session *x)
{
    if (!s->others.count)
        return;
    struct late_job *j = pl_calloc(1, sizeof(*j));
    struct late_ctx c = {j, now_s()};
    pl_map_each(&s->others, late_one, &c);
    if (!j->ids.len) {
        pl_buf_reset(&j->ids);
        pl_free(j);
        return;
    }
    j->s = s;
    j->sid = x->id;
    j->host = pl_strdup(s->host->domain);
    j->dev = pl_strdup(x->jid->local);
    pl_storage_submit(pl_server_loop(), late_run, late_done, j);
}

static int on_initial(struct pl_event *ev, void *state)
{
    struct state *s = state;
    struct pl_session *x = ev->session;
    if (!x || !x->jid || !x->jid->local || x->priority < 0)
        return PL_PASS;
    late_check(s, x);
    struct devq *q = pl_map_get(&s->pending, x->jid->local);
    if (!q)
        return PL_PASS;
    long long now = now_s();
    for (int i = 0; i < q->n; i++)
        if (q->v[i]->expires > now)
            pl_session_send(x, q->v[i]->st);
    /* Expired ones are left for the sweep, never sent. */
    return PL_PASS;
}

static struct push *push_by_sid(struct state *s, const char *sid)
{
    if (!sid || strncmp(sid, "push-", 5) != 0)
        return NULL;
    return pl_map_get(&s->pushes, sid + 5);
}

static int on_host_message(struct pl_event *ev, void *state)
{
    struct state *s = state;
    if (!ev->from || !ev->from->local)
        return PL_PASS;
    const char *dev = ev->from->local;
    struct pl_node *root = pl_stanza_root(ev->stanza);
    const char *type = pl_stanza_attr(ev->stanza, "type");
    if (type && !strcmp(type, "error")) {
        struct push *p = push_by_sid(s, pl_stanza_attr(ev->stanza, "id"));
        if (!p || dev_state(p, dev) != ST_PENDING)
            return PL_PASS;
        struct pl_node *e = pl_node_child(root, "error", NULL);
        struct pl_node *c = e ? pl_node_first_elem(e) : NULL;
        char reason[128];
        snprintf(reason, sizeof(reason), "error:%s",
                 c ? c->name : "undefined-condition");
        set_state(s, p, dev, ST_FAILED, reason);
        store_state(s, p, dev, ST_FAILED, reason);
        return PL_HANDLED;
    }
    struct pl_node *r = pl_node_child(root, "received", NS_RECEIPTS);
    if (r) {
        const char *sid = pl_node_attr(r, "id");
        struct push *p = push_by_sid(s, sid);
        if (!p && sid && strncmp(sid, "push-", 5) == 0 && sid[5] &&
            strlen(sid) < 200) {
            /* Another node's push (a cluster, doc/cluster.md): its row in
             * the shared database says delivered, if it has one for this
             * device; that node's status reads it. */
            struct upd_job *j = upd_new(s);
            upd_row(j, dev, sid + 5, "?delivered");
            upd_submit(j);
            return PL_HANDLED;
        }
        if (!p)
            return PL_PASS;
        /* A late receipt after expiry still proves delivery. */
        int old = dev_state(p, dev);
        if (old == ST_PENDING || old == ST_EXPIRED) {
            set_state(s, p, dev, ST_DELIVERED, NULL);
            store_state(s, p, dev, ST_DELIVERED, NULL);
        }
        return PL_HANDLED;
    }
    struct pl_node *j = pl_node_child(root, "json", NS_JSON);
    if (j) {
        size_t len;
        const char *text = pl_node_text(ev->stanza, j, &len);
        json_t *doc = json_loadb(text, len, 0, NULL);
        const char *rt = json_string_value(json_object_get(doc, "reply-to"));
        struct push *p = push_by_sid(s, rt);
        if (p && dev_state(p, dev) && len <= 4096)
            pl_free(pl_map_put(&p->results, dev, pl_strdup(text)));
        json_decref(doc);
        return p ? PL_HANDLED : PL_PASS;
    }
    return PL_PASS;
}

struct del_ctx {
    struct state *s;
    const char *dev;
};

static int on_user_deleted(struct pl_event *ev, void *state)
{
    struct state *s = state;
    const char *dev = ev->data;
    struct devq *q = dev ? pl_map_get(&s->pending, dev) : NULL;
    if (!q)
        return PL_PASS;
    char d[80];
    snprintf(d, sizeof(d), "%s", dev);
    while ((q = pl_map_get(&s->pending, d)) != NULL) {
        struct push *p = q->v[0];
        set_state(s, p, d, ST_FAILED, "account-deleted");
        store_state(s, p, d, ST_FAILED, "account-deleted");
    }
    return PL_PASS;
}

/* ------------------------------------------------------------- loading */

struct load_job {
    struct state *s;
    char *host;
    struct pl_buf pushes; /* "id\0record\0" */
    struct pl_buf rows;   /* "id\0dev\0value\0" */
    struct pl_buf groups; /* "name\0json\0" */
    const char *cur;      /* push id being scanned */
};

static int load_push(const char *key, const void *data, size_t len, void *ud)
{
    struct load_job *j = ud;
    pl_buf_append(&j->pushes, key, strlen(key) + 1);
    pl_buf_append(&j->pushes, data, len);
    pl_buf_append(&j->pushes, "", 1);
    return 0;
}

static int load_group(const char *key, const void *data, size_t len, void *ud)
{
    struct load_job *j = ud;
    pl_buf_append(&j->groups, key, strlen(key) + 1);
    pl_buf_append(&j->groups, data, len);
    pl_buf_append(&j->groups, "", 1);
    return 0;
}

static int load_row(const char *user, const void *data, size_t len, void *ud)
{
    struct load_job *j = ud;
    pl_buf_append(&j->rows, j->cur, strlen(j->cur) + 1);
    pl_buf_append(&j->rows, user, strlen(user) + 1);
    pl_buf_append(&j->rows, data, len);
    pl_buf_append(&j->rows, "", 1);
    return 0;
}

static int load_run(const struct pl_storage_driver *d, void *db, void *arg)
{
    struct load_job *j = arg;
    int rc = d->kv_list(db, j->host, "", "fleet-push", load_push, j);
    if (rc == PL_OK)
        rc = d->kv_list(db, j->host, "", "fleet-group", load_group, j);
    const char *p = j->pushes.data ? j->pushes.data + j->pushes.off : NULL;
    const char *end = p ? p + j->pushes.len : NULL;
    while (rc == PL_OK && p && p < end) {
        j->cur = p;
        rc = d->kv_scan(db, j->host, "fleet", p, load_row, j);
        p += strlen(p) + 1;
        p += strlen(p) + 1;
    }
    return rc;
}

static void load_done(int rc, void *arg)
{
    struct load_job *j = arg;
    struct state *s = j->s;
    /* Empty buffers get a byte so the walks below start somewhere. */
    if (!j->pushes.data)
        pl_buf_append(&j->pushes, "\0", 1), j->pushes.len = 0;
    if (!j->rows.data)
        pl_buf_append(&j->rows, "\0", 1), j->rows.len = 0;
    if (!j->groups.data)
        pl_buf_append(&j->groups, "\0", 1), j->groups.len = 0;
    if (rc != PL_OK) {
        pl_log_error("fleet", "while loading stored pushes of %s", j->host);
    } else {
        const char *p = j->pushes.data + j->pushes.off;
        const char *end = p + j->pushes.len;
        while (p < end) {
            const char *id = p;
            const char *rec = id + strlen(id) + 1;
            p = rec + strlen(rec) + 1;
            long long created = 0, expires = 0;
            int off = 0;
            if (sscanf(rec, "%lld,%lld,%n", &created, &expires, &off) < 2 ||
                !off)
                continue;
            struct push *x = push_new(id, rec + off);
            x->created = created;
            x->expires = expires;
            build_stanza(s, x);
            pl_map_put(&s->pushes, x->id, x);
        }
        p = j->rows.data + j->rows.off;
        end = p + j->rows.len;
        long n = 0;
        while (p < end) {
            const char *id = p;
            const char *dev = id + strlen(id) + 1;
            const char *val = dev + strlen(dev) + 1;
            p = val + strlen(val) + 1;
            struct push *x = pl_map_get(&s->pushes, id);
            if (!x)
                continue;
            int st = ST_PENDING;
            for (int k = ST_PENDING; k < ST_N; k++)
                if (!strncmp(val, st_names[k], strlen(st_names[k])))
                    st = k;
            set_state(s, x, dev, st,
                      st == ST_FAILED && strchr(val, ':') ? strchr(val, ':') + 1
                                                          : NULL);
            n++;
        }
        p = j->groups.data + j->groups.off;
        end = p + j->groups.len;
        while (p < end) {
            const char *name = p;
            const char *js = name + strlen(name) + 1;
            p = js + strlen(js) + 1;
            json_t *a = json_loads(js, 0, NULL);
            struct pl_map *m = pl_calloc(1, sizeof(*m));
            for (size_t i = 0; i < json_array_size(a); i++) {
                const char *dv = json_string_value(json_array_get(a, i));
                if (dv)
                    pl_map_put(m, dv, (void *)1);
            }
            json_decref(a);
            pl_map_put(&s->groups, name, m);
        }
        s->loaded = 1;
        pl_log_info("fleet", "%s: %zu pushes (%ld device states), %zu groups",
                    j->host, s->pushes.count, n, s->groups.count);
        /* Devices that came online while we were loading. */
        for (size_t b = 0; b < s->pending.nbuckets; b++)
            for (struct pl_map_entry *e = s->pending.buckets[b]; e;
                 e = e->next) {
                struct devq *q = e->value;
                for (int i = 0; i < q->n; i++)
                    if (q->v[i]->expires > now_s())
                        deliver(s, q->v[i], e->key);
            }
    }
    pl_buf_reset(&j->pushes);
    pl_buf_reset(&j->rows);
    pl_buf_reset(&j->groups);
    pl_free(j->host);
    pl_free(j);
}

/* ------------------------------------------------------------ lifetime */

static int load(struct pl_host *h, void *state)
{
    struct state *s = state;
    if (nhosts >= (int)(sizeof(hosts) / sizeof(hosts[0]))) {
        pl_log_error("fleet", "too many hosts with the fleet module");
        return PL_ELIMIT;
    }
    s->host = h;
    hosts[nhosts++] = s;
    return PL_OK;
}

static int ready(struct pl_host *h, void *state)
{
    struct state *s = state;
    struct load_job *j = pl_calloc(1, sizeof(*j));
    j->s = s;
    j->host = pl_strdup(h->domain);
    pl_storage_submit(pl_server_loop(), load_run, load_done, j);
    pl_timer_init(&s->sweep, on_sweep, s);
    pl_timer_start(pl_server_loop(), &s->sweep, 1000);
    return PL_OK;
}

static void free_push_v(const char *k, void *v, void *ud)
{
    push_free(v);
}

static void free_devq(const char *k, void *v, void *ud)
{
    struct devq *q = v;
    pl_free(q->v);
    pl_free(q);
}

static void free_group(const char *k, void *v, void *ud)
{
    pl_map_clear(v);
    pl_free(v);
}

static void unload(struct pl_host *h, void *state)
{
    struct state *s = state;
    if (s->sweep.loop)
        pl_timer_stop(&s->sweep);
    pl_map_each(&s->pushes, free_push_v, NULL);
    pl_map_each(&s->pending, free_devq, NULL);
    pl_map_each(&s->groups, free_group, NULL);
    pl_map_clear(&s->pushes);
    pl_map_clear(&s->pending);
    pl_map_clear(&s->groups);
    others_expire(s, LLONG_MAX);
    pl_map_clear(&s->others);
    for (int i = 0; i < nhosts; i++)
        if (hosts[i] == s) {
            hosts[i] = hosts[--nhosts];
            break;
        }
}

static const struct pl_option options[] = {
    {"default_ttl", PL_OPT_INT, "86400", 1, 31536000, NULL,
     "Seconds a push waits for offline devices when none is given.",
     offsetof(struct state, default_ttl)},
    {"max_ttl", PL_OPT_INT, "2592000", 1, 31536000, NULL,
     "Longest TTL a push may ask for, in seconds.",
     offsetof(struct state, max_ttl)},
    {"retention", PL_OPT_INT, "604800", 60, 31536000, NULL,
     "Seconds a settled push (nothing pending) is kept for status queries.",
     offsetof(struct state, retention)},
    {"max_targets", PL_OPT_INT, "1000000", 1, 100000000, NULL,
     "Most devices one push may address.", offsetof(struct state, max_targets)},
    {"max_payload", PL_OPT_INT, "65536", 16, 1048576, NULL,
     "Largest JSON payload of a push, in bytes (it must also fit "
     "limits.max_stanza_size of the devices' streams).",
     offsetof(struct state, max_payload)},
    {0},
};

static const struct pl_hook_def hooks[] = {
    {"presence/initial", on_initial, 0},
    {"message/host", on_host_message, 0},
    {"user/deleted", on_user_deleted, 0},
    {"admin/push", on_admin_push, 0},
    {"admin/status", on_admin_status, 0},
    {"admin/group-add", on_admin_group_add, 0},
    {"admin/group-remove", on_admin_group_remove, 0},
    {"admin/group-list", on_admin_group_list, 0},
    {"user/data-changed-elsewhere", on_elsewhere, 0},
    {0},
};

static const char *const deps[] = {"presence", NULL};

const struct pl_module pl_mod_fleet = {
    .abi = PL_MODULE_ABI,
    .name = "fleet",
    .summary = "head-end push of JSON payloads to devices, with receipts",
    .xeps = "XEP-0335, XEP-0184",
    .deps = deps,
    .options = options,
    .hooks = hooks,
    .state_size = sizeof(struct state),
    .load = load,
    .ready = ready,
    .unload = unload,
};
