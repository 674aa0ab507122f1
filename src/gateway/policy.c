/*
 * policy.c - the authentication module of parley-gateway (policy.h): the
 * rules from the configuration's policy group, the in-memory token
 * buckets, and the daily quota in the queue file.
 *
 * Cost per message: the loop-side check walks the lists (linear in the
 * number of patterns, meant for tens, not thousands) and does at most two
 * hash lookups for the buckets; no SQL.  The database side adds to the
 * insert's own transaction one SELECT and one UPSERT on policy_quota when
 * a daily quota applies, and one SELECT on links when the route is in
 * "linked" mode: no extra transaction, no extra fsync, no extra trip
 * between threads.
 *
 * Buckets: one per sender ("s" + key) and per destination ("d" + key), in
 * a pl_map of the loop thread, created full.  When the map holds more
 * than policy.max_tracked buckets, the full ones (equivalent to none) are
 * dropped, at most once a second; if it is still over, a new sender is
 * let through untracked (logged) rather than refused.
 */
#include "gateway/policy.h"

#include <libconfig.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "error.h"
#include "gateway/core.h"
#include "log.h"
#include "map.h"

#define UNIT 60000 /* bucket units per token: a rate per minute in ms */

enum route_mode {
    ROUTE_ALLOW = 0,
    ROUTE_LINKED,
    ROUTE_DENY
};

static const char *const channels[] = {"im", "sms", "mail"};
#define NCH 3

struct plist {
    char **v;
    size_t n;
};

struct user_rule {
    char *match;        /* sender pattern */
    long rate, burst;   /* -1: the global ones */
    long daily;         /* -1: the global one */
    struct plist allow; /* destinations; empty: any */
    struct plist deny;
};

struct tracked {
    struct pl_gw_bucket b;
    long rate, burst; /* what it was filled with (for the sweep) */
    int64_t logged;   /* last recorded rate refusal (ms) */
};

static struct {
    int route[NCH][NCH];
    struct plist s_allow, s_deny, d_allow, d_deny;
    long s_rate, s_burst, d_rate, d_burst, daily, max_tracked;
    int64_t notice_ms;
    struct user_rule *users;
    size_t nusers;
    struct pl_map buckets; /* key -> struct tracked */
    struct pl_map notices; /* number -> int64_t* last notice */
    int64_t last_sweep;
    int64_t last_full_log;
    int schema_ok; /* database thread */
} P = {
    .s_rate = 0,
    .s_burst = 60,
    .max_tracked = 100000,
    .notice_ms = 3600000,
};

/* ---- matching ---- */

static int lower(int c)
{
    return c >= 'A' && c <= 'Z' ? c + 32 : c;
}

int pl_gw_glob(const char *pat, const char *s)
{
    const char *star = NULL, *resume = NULL;
    while (*s) {
        if (*pat == '*') {
            star = ++pat;
            resume = s;
        } else if (*pat && (*pat == '?' || lower((unsigned char)*pat) ==
                                               lower((unsigned char)*s))) {
            pat++;
            s++;
        } else if (star) {
            pat = star;
            s = ++resume;
        } else {
            return 0;
        }
    }
    while (*pat == '*')
        pat++;
    return *pat == '\0';
}

int pl_gw_pattern_match(const char *pat, const char *chan, const char *addr)
{
    const char *colon = strchr(pat, ':');
    if (colon) {
        size_t n = (size_t)(colon - pat);
        for (size_t i = 0; i < NCH; i++)
            if (strlen(channels[i]) == n && memcmp(pat, channels[i], n) == 0) {
                if (strcmp(chan, channels[i]) != 0)
                    return 0;
                return pl_gw_glob(colon + 1, addr);
            }
    }
    return pl_gw_glob(pat, addr);
}

static const char *list_match(const struct plist *l, const char *chan,
                              const char *addr)
{
    for (size_t i = 0; i < l->n; i++)
        if (pl_gw_pattern_match(l->v[i], chan, addr))
            return l->v[i];
    return NULL;
}

/* ---- token buckets ---- */

static void refill(struct pl_gw_bucket *b, long rate, long burst, int64_t now)
{
    int64_t cap = (int64_t)burst * UNIT;
    if (!b->used) {
        b->used = 1;
        b->units = cap;
        b->at = now;
        return;
    }
    int64_t el = now - b->at;
    if (el <= 0)
        return;
    /* Bounded before the multiplication: no overflow after a long idle. */
    if (el > cap / (rate > 0 ? rate : 1) + 1)
        b->units = cap;
    else
        b->units += el * rate;
    if (b->units > cap)
        b->units = cap;
    b->at = now;
}

static int64_t wait_for(const struct pl_gw_bucket *b, long rate)
{
    int64_t missing = UNIT - b->units;
    return missing <= 0 ? 0 : (missing + rate - 1) / rate;
}

int pl_gw_bucket_take(struct pl_gw_bucket *b, long rate, long burst,
                      int64_t now, int64_t *wait_ms)
{
    refill(b, rate, burst, now);
    if (b->units >= UNIT) {
        b->units -= UNIT;
        return 1;
    }
    *wait_ms = wait_for(b, rate);
    return 0;
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct sweep {
    int64_t now;
    char **keys;
    size_t n;
};

static void collect_full(const char *key, void *value, void *ud)
{
    struct sweep *s = ud;
    struct tracked *t = value;
    refill(&t->b, t->rate, t->burst, s->now);
    if (t->b.units >= (int64_t)t->burst * UNIT && t->logged < s->now - 1000)
        s->keys[s->n++] = pl_strdup(key);
}

static void sweep(int64_t now)
{
    if (now - P.last_sweep < 1000 && P.last_sweep)
        return;
    P.last_sweep = now;
    struct sweep s = {now, pl_calloc(P.buckets.count + 1, sizeof(char *)), 0};
    pl_map_each(&P.buckets, collect_full, &s);
    for (size_t i = 0; i < s.n; i++) {
        pl_free(pl_map_del(&P.buckets, s.keys[i]));
        pl_free(s.keys[i]);
    }
    pl_free(s.keys);
}

/* The bucket of key, created full; NULL when too many are tracked. */
static struct tracked *bucket(const char *key, long rate, long burst,
                              int64_t now)
{
    struct tracked *t = pl_map_get(&P.buckets, key);
    if (t) {
        t->rate = rate;
        t->burst = burst;
        return t;
    }
    if ((long)P.buckets.count >= P.max_tracked) {
        sweep(now);
        if ((long)P.buckets.count >= P.max_tracked) {
            if (now - P.last_full_log > 60000 || !P.last_full_log) {
                P.last_full_log = now;
                pl_log_warn("policy",
                            "%ld rate-limit buckets in use "
                            "(policy.max_tracked): new senders are not "
                            "limited until some fill up again",
                            P.max_tracked);
            }
            return NULL;
        }
    }
    t = pl_calloc(1, sizeof(*t));
    t->rate = rate;
    t->burst = burst;
    pl_map_put(&P.buckets, key, t);
    return t;
}

/* ---- the check ---- */

static int chan_index(const char *c)
{
    for (int i = 0; i < NCH; i++)
        if (c && strcmp(c, channels[i]) == 0)
            return i;
    return -1;
}

static const struct user_rule *user_of(const char *chan, const char *addr)
{
    for (size_t i = 0; i < P.nusers; i++)
        if (pl_gw_pattern_match(P.users[i].match, chan, addr))
            return &P.users[i];
    return NULL;
}

static void fill_common(const struct pl_gw_policy_req *r,
                        const struct user_rule *u, struct pl_gw_decision *d)
{
    memset(d, 0, sizeof(*d));
    d->record = 1;
    snprintf(d->src_channel, sizeof(d->src_channel), "%s", r->src_channel);
    snprintf(d->dst_channel, sizeof(d->dst_channel), "%s", r->dst_channel);
    snprintf(d->key, sizeof(d->key), "%s:%s", r->src_channel, r->src_addr);
    d->daily = u && u->daily >= 0 ? u->daily : P.daily;
}

void pl_gw_policy_quota_of(const struct pl_gw_policy_req *r,
                           struct pl_gw_decision *d)
{
    fill_common(r, user_of(r->src_channel, r->src_addr), d);
}

static int refuse(struct pl_gw_decision *d, int verdict, const char *fmt,
                  const char *a, const char *b)
{
    d->verdict = verdict;
    snprintf(d->reason, sizeof(d->reason), fmt, a, b);
    return verdict;
}

int pl_gw_policy_check(const struct pl_gw_policy_req *r, int64_t now,
                       struct pl_gw_decision *d)
{
    if (!now)
        now = mono_ms();
    const char *sc = r->src_channel, *sa = r->src_addr;
    const char *dc = r->dst_channel, *da = r->dst_addr;
    const struct user_rule *u = user_of(sc, sa);
    fill_common(r, u, d);
    int si = chan_index(sc), di = chan_index(dc);
    int mode = si >= 0 && di >= 0 ? P.route[si][di] : ROUTE_ALLOW;
    if (mode == ROUTE_DENY)
        return refuse(d, PL_GW_DENY,
                      "the gateway does not carry messages from %s to %s", sc,
                      dc);
    d->need_link = mode == ROUTE_LINKED;
    if (list_match(&P.s_deny, sc, sa) ||
        (P.s_allow.n && !list_match(&P.s_allow, sc, sa)))
        return refuse(d, PL_GW_DENY, "%s may not send through the gateway%s",
                      sa, "");
    if (da && (list_match(&P.d_deny, dc, da) ||
               (P.d_allow.n && !list_match(&P.d_allow, dc, da))))
        return refuse(d, PL_GW_BLOCKED, "messages to %s are not allowed%s", da,
                      "");
    if (da && u &&
        (list_match(&u->deny, dc, da) ||
         (u->allow.n && !list_match(&u->allow, dc, da))))
        return refuse(d, PL_GW_DENY, "%s may not send to %s", sa, da);
    long srate = u && u->rate >= 0 ? u->rate : P.s_rate;
    long sburst = u && u->burst >= 0 ? u->burst : P.s_burst;
    if (sburst < 1)
        sburst = 1;
    char key[PL_GW_POLICY_KEY + 2];
    struct tracked *st = NULL, *dt = NULL;
    if (srate > 0) {
        snprintf(key, sizeof(key), "s%s", d->key);
        st = bucket(key, srate, sburst, now);
    }
    if (P.d_rate > 0 && da) {
        snprintf(key, sizeof(key), "d%s:%s", dc, da);
        dt = bucket(key, P.d_rate, P.d_burst, now);
    }
    /* Both buckets are looked at before either gives a token: a message
     * refused by one costs nothing from the other. */
    int64_t wait = 0;
    const char *which = NULL;
    long lim = 0, lb = 0;
    if (st) {
        refill(&st->b, srate, sburst, now);
        if (st->b.units < UNIT) {
            wait = wait_for(&st->b, srate);
            which = sa;
            lim = srate;
            lb = sburst;
        }
    }
    if (dt && !which) {
        refill(&dt->b, P.d_rate, P.d_burst, now);
        if (dt->b.units < UNIT) {
            wait = wait_for(&dt->b, P.d_rate);
            which = da;
            lim = P.d_rate;
            lb = P.d_burst;
        }
    }
    if (which) {
        d->verdict = PL_GW_RATE;
        snprintf(d->reason, sizeof(d->reason),
                 "rate limit: at most %ld messages a minute (burst %ld) %s "
                 "%s; try again in %lld s",
                 lim, lb, which == sa ? "from" : "to", which,
                 (long long)(wait + 999) / 1000);
        /* A flood of refusals would be a flood of SQL writes: one a
         * second per bucket is recorded, the rest only answered. */
        struct tracked *t = which == sa ? st : dt;
        d->record = !t->logged || now - t->logged >= 1000;
        if (d->record)
            t->logged = now;
        return PL_GW_RATE;
    }
    if (st)
        st->b.units -= UNIT;
    if (dt)
        dt->b.units -= UNIT;
    return PL_GW_ALLOW;
}

int pl_gw_policy_sms_notice(const char *number, int64_t now)
{
    if (P.notice_ms <= 0)
        return 0;
    if (!now)
        now = mono_ms();
    if (list_match(&P.d_deny, "sms", number) ||
        (P.d_allow.n && !list_match(&P.d_allow, "sms", number)))
        return 0;
    int64_t *last = pl_map_get(&P.notices, number);
    if (last && now - *last < P.notice_ms)
        return 0;
    if (!last) {
        if ((long)P.notices.count >= P.max_tracked)
            return 0;
        last = pl_malloc(sizeof(*last));
        pl_map_put(&P.notices, number, last);
    }
    *last = now;
    return 1;
}

void pl_gw_policy_im_error(const struct pl_gw_decision *d, const char **type,
                           const char **cond)
{
    switch (d->verdict) {
    case PL_GW_BLOCKED:
        *type = "cancel";
        *cond = "not-allowed";
        break;
    case PL_GW_RATE:
    case PL_GW_QUOTA:
        *type = "wait";
        *cond = "policy-violation";
        break;
    default: *type = "auth"; *cond = "forbidden";
    }
}

void pl_gw_policy_smtp(const struct pl_gw_decision *d, int *code,
                       const char **enh)
{
    int temp = d->verdict == PL_GW_RATE || d->verdict == PL_GW_QUOTA;
    *code = temp ? 451 : 550;
    *enh = temp ? "4.7.1" : "5.7.1";
}

/* ---- the database side ---- */

static const char QUOTA_SCHEMA[] =
    "CREATE TABLE IF NOT EXISTS policy_quota(sender TEXT NOT NULL,"
    " day INTEGER NOT NULL, count INTEGER NOT NULL,"
    " PRIMARY KEY(sender, day));";

static int64_t today(void)
{
    return pl_gw_now() / 86400000;
}

static int ensure_schema(sqlite3 *db)
{
    if (P.schema_ok)
        return PL_OK;
    if (sqlite3_exec(db, QUOTA_SCHEMA, NULL, NULL, NULL) != SQLITE_OK)
        return PL_ESTORAGE;
    /* Old days go, once per process start: they are never read again. */
    char sql[96];
    snprintf(sql, sizeof(sql), "DELETE FROM policy_quota WHERE day < %lld",
             (long long)today() - 1);
    sqlite3_exec(db, sql, NULL, NULL, NULL);
    P.schema_ok = 1;
    return PL_OK;
}

static long count_of(sqlite3 *db, const char *key, int64_t day, int *err)
{
    sqlite3_stmt *st = NULL;
    long n = 0;
    if (sqlite3_prepare_v2(db,
                           "SELECT count FROM policy_quota WHERE sender = ?"
                           " AND day = ?",
                           -1, &st, NULL) != SQLITE_OK) {
        *err = 1;
        return 0;
    }
    sqlite3_bind_text(st, 1, key, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 2, day);
    int s = sqlite3_step(st);
    if (s == SQLITE_ROW)
        n = (long)sqlite3_column_int64(st, 0);
    else if (s != SQLITE_DONE)
        *err = 1;
    sqlite3_finalize(st);
    return n;
}

static int count_add(sqlite3 *db, const char *key, int64_t day)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db,
                           "INSERT INTO policy_quota(sender, day, count)"
                           " VALUES(?, ?, 1) ON CONFLICT(sender, day)"
                           " DO UPDATE SET count = count + 1",
                           -1, &st, NULL) != SQLITE_OK)
        return PL_ESTORAGE;
    sqlite3_bind_text(st, 1, key, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 2, day);
    int s = sqlite3_step(st);
    sqlite3_finalize(st);
    return s == SQLITE_DONE ? PL_OK : PL_ESTORAGE;
}

long pl__gw_policy_count_db(const char *key, int64_t day)
{
    sqlite3 *db = pl__gwq_db(pl_gw.db);
    int err = 0;
    if (ensure_schema(db) != PL_OK)
        return -1;
    long n = count_of(db, key, day, &err);
    return err ? -1 : n;
}

/* Whether the link a "linked" route needs is there: an IM sender has a
 * verified address in the destination channel; any other sender is a
 * verified address of its own channel. */
static int linked(const struct pl_gw_decision *d)
{
    const char *addr = strchr(d->key, ':') + 1;
    int ok = 0;
    if (strcmp(d->src_channel, "im") == 0) {
        size_t n = strcspn(addr, "/");
        char bare[PL_GW_POLICY_KEY];
        snprintf(bare, sizeof(bare), "%.*s", (int)n, addr);
        struct pl_gwq_link *l = NULL;
        ok = pl_gwq_link_get(pl_gw.db, d->dst_channel, bare, &l) == PL_OK &&
             l->verified;
        pl_gwq_link_free(l);
    } else {
        char *jid = NULL;
        ok = pl_gwq_link_owner(pl_gw.db, d->src_channel, addr, &jid) == PL_OK;
        pl_free(jid);
    }
    return ok;
}

int pl__gw_policy_commit_db(const struct pl_gw_msg *m, struct pl_gw_decision *d,
                            int mode)
{
    struct pl_gwq *q = pl_gw.db;
    sqlite3 *db = pl__gwq_db(q);
    if (d->verdict != PL_GW_ALLOW) {
        if (!d->record)
            return PL_EPOLICY_VIOLATION;
        int rc = pl__gwq_begin(q);
        if (rc == PL_OK)
            rc = pl__gwq_end(q, pl__gwq_insert_tx(q, m, pl_gw.c.instance,
                                                  d->reason));
        return rc == PL_OK ? PL_EPOLICY_VIOLATION : rc;
    }
    if (d->daily > 0 && ensure_schema(db) != PL_OK)
        return PL_ESTORAGE;
    int rc = pl__gwq_begin(q);
    if (rc != PL_OK)
        return rc;
    int counting = mode == PL_GW_COMMIT_COUNT || mode == PL_GW_COMMIT_TALLY;
    if (d->need_link && !counting && !linked(d)) {
        d->verdict = PL_GW_DENY;
        if (strcmp(d->src_channel, "im") == 0)
            snprintf(d->reason, sizeof(d->reason),
                     "sending to %s needs an address of yours linked and "
                     "verified there (XEP-0100 registration)",
                     d->dst_channel);
        else
            snprintf(d->reason, sizeof(d->reason),
                     "%s is not an address any user linked and verified",
                     strchr(d->key, ':') + 1);
    }
    int64_t day = today();
    if (d->verdict == PL_GW_ALLOW && d->daily > 0) {
        int err = 0;
        long n = count_of(db, d->key, day, &err);
        if (err) {
            rc = PL_ESTORAGE;
        } else if (!counting && n >= d->daily) {
            d->verdict = PL_GW_QUOTA;
            snprintf(d->reason, sizeof(d->reason),
                     "daily quota: %ld messages a day from %s, used up until "
                     "00:00 UTC",
                     d->daily, strchr(d->key, ':') + 1);
        } else if (mode != PL_GW_COMMIT_PEEK) {
            rc = count_add(db, d->key, day);
        }
    }
    if (rc == PL_OK &&
        (d->verdict != PL_GW_ALLOW ||
         (mode != PL_GW_COMMIT_PEEK && mode != PL_GW_COMMIT_TALLY)))
        rc = pl__gwq_insert_tx(q, m, pl_gw.c.instance,
                               d->verdict == PL_GW_ALLOW ? NULL : d->reason);
    rc = pl__gwq_end(q, rc);
    if (rc != PL_OK)
        return rc;
    return d->verdict == PL_GW_ALLOW ? PL_OK : PL_EPOLICY_VIOLATION;
}

/* ---- configuration ---- */

static void plist_free(struct plist *l)
{
    for (size_t i = 0; i < l->n; i++)
        pl_free(l->v[i]);
    pl_free(l->v);
    l->v = NULL;
    l->n = 0;
}

static void drop_entry(const char *key, void *value, void *ud)
{
    (void)key;
    (void)ud;
    pl_free(value);
}

void pl_gw_policy_free(void)
{
    plist_free(&P.s_allow);
    plist_free(&P.s_deny);
    plist_free(&P.d_allow);
    plist_free(&P.d_deny);
    for (size_t i = 0; i < P.nusers; i++) {
        pl_free(P.users[i].match);
        plist_free(&P.users[i].allow);
        plist_free(&P.users[i].deny);
    }
    pl_free(P.users);
    P.users = NULL;
    P.nusers = 0;
    pl_map_each(&P.buckets, drop_entry, NULL);
    pl_map_clear(&P.buckets);
    pl_map_each(&P.notices, drop_entry, NULL);
    pl_map_clear(&P.notices);
}

static int bad(const char *path, config_setting_t *s, const char *what,
               const char *name)
{
    fprintf(stderr, "parley-gateway: %s:%d: policy: %s%s%s\n", path,
            s ? config_setting_source_line(s) : 0, what, name ? " " : "",
            name ? name : "");
    return PL_EINVAL;
}

/* Every member of group s is one of names (NULL-terminated). */
static int known(const char *path, config_setting_t *s,
                 const char *const *names)
{
    for (int i = 0; i < config_setting_length(s); i++) {
        config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
        const char *n = config_setting_name(e);
        int ok = 0;
        for (size_t k = 0; names[k] && !ok; k++)
            ok = n && strcmp(n, names[k]) == 0;
        if (!ok)
            return bad(path, e, "unknown setting", n ? n : "?");
    }
    return PL_OK;
}

static int read_list(const char *path, config_setting_t *g, const char *name,
                     struct plist *out)
{
    config_setting_t *s = config_setting_get_member(g, name);
    if (!s)
        return PL_OK;
    if (!config_setting_is_aggregate(s) || config_setting_is_group(s))
        return bad(path, s, "must be a list of strings:", name);
    int n = config_setting_length(s);
    out->v = pl_calloc((size_t)n + 1, sizeof(char *));
    for (int i = 0; i < n; i++) {
        const char *v = config_setting_get_string_elem(s, i);
        if (!v || !v[0])
            return bad(path, s, "must be a list of non-empty strings:", name);
        out->v[out->n++] = pl_strdup(v);
    }
    return PL_OK;
}

static int read_int(const char *path, config_setting_t *g, const char *name,
                    long min, long max, long *out)
{
    config_setting_t *s = config_setting_get_member(g, name);
    if (!s)
        return PL_OK;
    if (config_setting_type(s) != CONFIG_TYPE_INT)
        return bad(path, s, "must be an integer:", name);
    long v = (long)config_setting_get_int(s);
    if (v < min || v > max) {
        char why[96];
        snprintf(why, sizeof(why), "must be between %ld and %ld:", min, max);
        return bad(path, s, why, name);
    }
    *out = v;
    return PL_OK;
}

static int read_rate(const char *path, config_setting_t *g, const char *name,
                     long *rate, long *burst)
{
    config_setting_t *s = config_setting_get_member(g, name);
    if (!s)
        return PL_OK;
    static const char *const keys[] = {"rate", "burst", NULL};
    if (!config_setting_is_group(s))
        return bad(path, s, "must be a group { rate; burst; }:", name);
    int rc = known(path, s, keys);
    if (rc == PL_OK)
        rc = read_int(path, s, "rate", 0, 1000000, rate);
    if (rc == PL_OK)
        rc = read_int(path, s, "burst", 1, 1000000, burst);
    return rc;
}

static int read_user(const char *path, config_setting_t *s, struct user_rule *u)
{
    static const char *const keys[] = {"match", "rate", "burst", "daily",
                                       "allow", "deny", NULL};
    u->rate = u->burst = u->daily = -1;
    if (!config_setting_is_group(s))
        return bad(path, s, "each users entry must be a group", NULL);
    int rc = known(path, s, keys);
    const char *m = NULL;
    if (rc == PL_OK && (!config_setting_lookup_string(s, "match", &m) || !m[0]))
        rc = bad(path, s, "a users entry needs match = \"pattern\"", NULL);
    if (rc == PL_OK)
        u->match = pl_strdup(m);
    if (rc == PL_OK)
        rc = read_int(path, s, "rate", 0, 1000000, &u->rate);
    if (rc == PL_OK)
        rc = read_int(path, s, "burst", 1, 1000000, &u->burst);
    if (rc == PL_OK)
        rc = read_int(path, s, "daily", 0, 100000000, &u->daily);
    if (rc == PL_OK)
        rc = read_list(path, s, "allow", &u->allow);
    if (rc == PL_OK)
        rc = read_list(path, s, "deny", &u->deny);
    return rc;
}

int pl_gw_policy_load(struct config_t *cf, const char *path)
{
    pl_gw_policy_free();
    memset(P.route, 0, sizeof(P.route));
    P.s_rate = 0;
    P.s_burst = 60;
    P.d_rate = 0;
    P.d_burst = 20;
    P.daily = 0;
    P.max_tracked = 100000;
    P.notice_ms = 3600000;
    config_setting_t *g = config_lookup(cf, "policy");
    if (!g)
        return PL_OK;
    if (!config_setting_is_group(g))
        return bad(path, g, "policy must be a group", NULL);
    static const char *const keys[] =
        {"routes",      "senders",          "destinations",
         "sender_rate", "destination_rate", "daily",
         "max_tracked", "sms_notice",       "users",
         NULL};
    int rc = known(path, g, keys);
    config_setting_t *s = config_setting_get_member(g, "routes");
    if (rc == PL_OK && s) {
        if (!config_setting_is_group(s))
            return bad(path, s, "routes must be a group", NULL);
        for (int i = 0; i < config_setting_length(s) && rc == PL_OK; i++) {
            config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
            const char *n = config_setting_name(e), *v = NULL;
            int si = -1, di = -1;
            for (int a = 0; a < NCH; a++)
                for (int b = 0; b < NCH; b++) {
                    char k[16];
                    snprintf(k, sizeof(k), "%s_%s", channels[a], channels[b]);
                    if (a != b && n && strcmp(n, k) == 0) {
                        si = a;
                        di = b;
                    }
                }
            if (si < 0)
                rc = bad(path, e,
                         "unknown route (im_sms, im_mail, mail_im, "
                         "sms_im, mail_sms, sms_mail):",
                         n);
            else if (!(v = config_setting_get_string(e)))
                rc = bad(path, e,
                         "a route is \"allow\", \"linked\" or "
                         "\"deny\":",
                         n);
            else if (strcmp(v, "allow") == 0)
                P.route[si][di] = ROUTE_ALLOW;
            else if (strcmp(v, "linked") == 0)
                P.route[si][di] = ROUTE_LINKED;
            else if (strcmp(v, "deny") == 0)
                P.route[si][di] = ROUTE_DENY;
            else
                rc = bad(path, e,
                         "a route is \"allow\", \"linked\" or "
                         "\"deny\":",
                         n);
        }
    }
    static const char *const lists[] = {"allow", "deny", NULL};
    s = config_setting_get_member(g, "senders");
    if (rc == PL_OK && s) {
        rc = config_setting_is_group(s) ? known(path, s, lists)
                                        : bad(path, s,
                                              "senders must be a "
                                              "group",
                                              NULL);
        if (rc == PL_OK)
            rc = read_list(path, s, "allow", &P.s_allow);
        if (rc == PL_OK)
            rc = read_list(path, s, "deny", &P.s_deny);
    }
    s = config_setting_get_member(g, "destinations");
    if (rc == PL_OK && s) {
        rc = config_setting_is_group(s) ? known(path, s, lists)
                                        : bad(path, s,
                                              "destinations must be "
                                              "a group",
                                              NULL);
        if (rc == PL_OK)
            rc = read_list(path, s, "allow", &P.d_allow);
        if (rc == PL_OK)
            rc = read_list(path, s, "deny", &P.d_deny);
    }
    if (rc == PL_OK)
        rc = read_rate(path, g, "sender_rate", &P.s_rate, &P.s_burst);
    if (rc == PL_OK)
        rc = read_rate(path, g, "destination_rate", &P.d_rate, &P.d_burst);
    if (rc == PL_OK)
        rc = read_int(path, g, "daily", 0, 100000000, &P.daily);
    if (rc == PL_OK)
        rc = read_int(path, g, "max_tracked", 100, 100000000, &P.max_tracked);
    long notice = P.notice_ms / 1000;
    if (rc == PL_OK)
        rc = read_int(path, g, "sms_notice", 0, 31 * 86400, &notice);
    P.notice_ms = (int64_t)notice * 1000;
    s = config_setting_get_member(g, "users");
    if (rc == PL_OK && s) {
        if (!config_setting_is_list(s))
            return bad(path, s, "users must be a list ( { match = ...; }, )",
                       NULL);
        int n = config_setting_length(s);
        P.users = pl_calloc((size_t)n + 1, sizeof(*P.users));
        for (int i = 0; i < n && rc == PL_OK; i++) {
            rc = read_user(path, config_setting_get_elem(s, (unsigned)i),
                           &P.users[i]);
            P.nusers++;
        }
    }
    return rc;
}

void pl_gw_policy_describe(char *out, size_t len)
{
    int denied = 0, linkedr = 0;
    for (int a = 0; a < NCH; a++)
        for (int b = 0; b < NCH; b++) {
            denied += P.route[a][b] == ROUTE_DENY;
            linkedr += P.route[a][b] == ROUTE_LINKED;
        }
    snprintf(out, len,
             "policy: sender rate %ld/min (burst %ld), destination rate "
             "%ld/min, daily quota %ld, %zu+%zu sender and %zu+%zu "
             "destination patterns, %zu user rules, %d linked and %d denied "
             "routes",
             P.s_rate, P.s_burst, P.d_rate, P.daily, P.s_allow.n, P.s_deny.n,
             P.d_allow.n, P.d_deny.n, P.nusers, linkedr, denied);
}
