/*
 * room.c - room state and the XEP-0045 permission rules; see room.h.
 */
#include "room.h"

#include <openssl/evp.h>

#include "history.h"

static const char *const role_names[] = {"none", "visitor", "participant",
                                         "moderator"};
static const char *const aff_names[] = {"outcast", "none", "member", "admin",
                                        "owner"};

const char *pl__muc_role_name(int role)
{
    return role >= 0 && role <= MUC_ROLE_MODERATOR ? role_names[role] : "none";
}

const char *pl__muc_aff_name(int aff)
{
    return aff >= 0 && aff <= MUC_AFF_OWNER ? aff_names[aff] : "none";
}

int pl__muc_role_parse(const char *s)
{
    for (int i = 0; s && i <= MUC_ROLE_MODERATOR; i++)
        if (strcmp(s, role_names[i]) == 0)
            return i;
    return -1;
}

int pl__muc_aff_parse(const char *s)
{
    for (int i = 0; s && i <= MUC_AFF_OWNER; i++)
        if (strcmp(s, aff_names[i]) == 0)
            return i;
    return -1;
}

void pl__muc_set_str(char **slot, const char *s)
{
    pl_free(*slot);
    *slot = s && *s ? pl_strdup(s) : NULL;
}

void pl__muc_config_default(struct muc_config *c)
{
    memset(c, 0, sizeof(*c));
    c->public_room = 1;
    c->whois_anyone = 0;
    c->change_subject = 0;
    c->allow_invites = 0;
    c->allow_pm = MUC_PM_ANYONE;
    c->voice_requests = 1;
    c->max_history = 20;
    c->presence_bc = MUC_ROLES_ALL;
    c->member_list = MUC_ROLES_ALL;
}

void pl__muc_config_copy(struct muc_config *dst, const struct muc_config *src)
{
    *dst = *src;
    dst->name = src->name ? pl_strdup(src->name) : NULL;
    dst->desc = src->desc ? pl_strdup(src->desc) : NULL;
    dst->lang = src->lang ? pl_strdup(src->lang) : NULL;
    dst->password = src->password ? pl_strdup(src->password) : NULL;
    dst->pubsub = src->pubsub ? pl_strdup(src->pubsub) : NULL;
}

void pl__muc_config_release(struct muc_config *c)
{
    pl_free(c->name);
    pl_free(c->desc);
    pl_free(c->lang);
    pl_free(c->password);
    pl_free(c->pubsub);
    memset(c, 0, sizeof(*c));
}

struct muc_room *pl__muc_room_new(const char *local, const char *service,
                                  const struct muc_config *defaults)
{
    struct pl_jid *j;
    if (pl_jid_make(local, service, NULL, &j) != PL_OK)
        return NULL;
    struct muc_room *r = pl_calloc(1, sizeof(*r));
    r->local = pl_strdup(j->local);
    r->jid = j;
    pl__muc_config_copy(&r->cfg, defaults);
    return r;
}

static void free_aff(const char *key, void *value, void *ud)
{
    (void)key;
    (void)ud;
    struct muc_aff_entry *e = value;
    pl_free(e->nick);
    pl_free(e->reason);
    pl_free(e);
}

static void occupant_free(struct muc_occupant *o)
{
    pl_free(o->nick);
    pl_jid_free(o->jid);
    pl_jid_free(o->room_jid);
    pl_stanza_unref(o->presence);
    pl_stanza_unref(o->cached[0]);
    pl_stanza_unref(o->cached[1]);
    pl_free(o);
}

static void free_value(const char *key, void *value, void *ud)
{
    (void)key;
    (void)ud;
    pl_free(value);
}

/* Sets the reserved nick of entry e (of bare), keeping r->reserved in
 * step. */
static void set_entry_nick(struct muc_room *r, const char *bare,
                           struct muc_aff_entry *e, const char *nick)
{
    if (e->nick) {
        char *owner = pl_map_get(&r->reserved, e->nick);
        if (owner && strcmp(owner, bare) == 0)
            pl_free(pl_map_del(&r->reserved, e->nick));
    }
    pl__muc_set_str(&e->nick, nick);
    if (e->nick)
        pl_free(pl_map_put(&r->reserved, e->nick, pl_strdup(bare)));
}

void pl__muc_room_free(struct muc_room *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->nocc; i++)
        occupant_free(r->occ[i]);
    pl_free(r->occ);
    pl_map_clear(&r->by_nick);
    pl_map_clear(&r->by_real);
    pl_map_each(&r->affs, free_aff, NULL);
    pl_map_clear(&r->affs);
    pl_map_each(&r->reserved, free_value, NULL);
    pl_map_clear(&r->reserved);
    pl__muc_config_release(&r->cfg);
    pl__muc_history_free(r->history);
    pl_free(r->subject);
    pl_free(r->subject_nick);
    pl_free(r->vcard);
    pl_free(r->local);
    pl_jid_free(r->jid);
    pl_free(r);
}

const struct muc_aff_entry *pl__muc_aff_entry_of(const struct muc_room *r,
                                                 const char *bare)
{
    return pl_map_get(&r->affs, bare);
}

int pl__muc_aff_of(const struct muc_room *r, const struct pl_jid *real)
{
    const struct muc_aff_entry *e = pl_map_get(&r->affs, real->bare);
    if (!e)
        e = pl_map_get(&r->affs, real->domain); /* server-wide entry */
    return e ? e->aff : MUC_AFF_NONE;
}

void pl__muc_aff_set(struct muc_room *r, const char *bare, int aff,
                     const char *reason)
{
    struct muc_aff_entry *e = pl_map_get(&r->affs, bare);
    if (!e) {
        if (aff == MUC_AFF_NONE)
            return;
        e = pl_calloc(1, sizeof(*e));
        pl_map_put(&r->affs, bare, e);
    }
    e->aff = aff;
    pl__muc_set_str(&e->reason, reason);
    /* A reserved nick belongs to members and above (§7.10); losing the
     * affiliation frees it. */
    if (aff < MUC_AFF_MEMBER)
        set_entry_nick(r, bare, e, NULL);
    if (aff == MUC_AFF_NONE && !e->nick) {
        pl_map_del(&r->affs, bare);
        free_aff(bare, e, NULL);
    }
}

const char *pl__muc_nick_of(const struct muc_room *r, const char *bare)
{
    const struct muc_aff_entry *e = pl_map_get(&r->affs, bare);
    return e ? e->nick : NULL;
}

const char *pl__muc_nick_owner(const struct muc_room *r, const char *nick)
{
    return pl_map_get(&r->reserved, nick);
}

void pl__muc_nick_register(struct muc_room *r, const char *bare,
                           const char *nick)
{
    struct muc_aff_entry *e = pl_map_get(&r->affs, bare);
    if (!e) {
        if (!nick)
            return;
        e = pl_calloc(1, sizeof(*e));
        e->aff = MUC_AFF_NONE;
        pl_map_put(&r->affs, bare, e);
    }
    set_entry_nick(r, bare, e, nick);
    if (e->aff < MUC_AFF_MEMBER && nick)
        e->aff = MUC_AFF_MEMBER; /* §7.10: registering makes a member */
}

struct aff_count {
    int aff;
    int n;
};

static void count_aff(const char *key, void *value, void *ud)
{
    (void)key;
    struct aff_count *c = ud;
    if (((struct muc_aff_entry *)value)->aff == c->aff)
        c->n++;
}

int pl__muc_count_aff(const struct muc_room *r, int aff)
{
    struct aff_count c = {aff, 0};
    pl_map_each(&r->affs, count_aff, &c);
    return c.n;
}

int pl__muc_default_role(const struct muc_room *r, int aff)
{
    switch (aff) {
    case MUC_AFF_OWNER:
    case MUC_AFF_ADMIN: return MUC_ROLE_MODERATOR;
    case MUC_AFF_MEMBER: return MUC_ROLE_PARTICIPANT;
    case MUC_AFF_NONE:
        if (r->cfg.members_only)
            return MUC_ROLE_NONE;
        return r->cfg.moderated ? MUC_ROLE_VISITOR : MUC_ROLE_PARTICIPANT;
    default: return MUC_ROLE_NONE;
    }
}

struct muc_occupant *pl__muc_occupant_by_nick(const struct muc_room *r,
                                              const char *nick)
{
    return pl_map_get(&r->by_nick, nick);
}

struct muc_occupant *pl__muc_occupant_by_real(const struct muc_room *r,
                                              const char *full)
{
    return pl_map_get(&r->by_real, full);
}

int pl__muc_nick_taken(const struct muc_room *r, const char *nick,
                       const struct pl_jid *real)
{
    const struct muc_occupant *o = pl_map_get(&r->by_nick, nick);
    if (o && strcmp(o->jid->bare, real->bare) != 0)
        return 1;
    const char *owner = pl__muc_nick_owner(r, nick);
    return owner && strcmp(owner, real->bare) != 0;
}

int pl__muc_check_join(const struct muc_room *r, const struct pl_jid *real,
                       const char *nick, const char *password, long max_users)
{
    if (!nick || !*nick)
        return PL_EJID_MALFORMED;
    int aff = pl__muc_aff_of(r, real);
    if (r->locked && aff != MUC_AFF_OWNER)
        return PL_EITEM_NOT_FOUND;
    if (aff == MUC_AFF_OUTCAST)
        return PL_EFORBIDDEN;
    if (r->cfg.members_only && aff < MUC_AFF_MEMBER)
        return MUC_EREGISTRATION;
    if (pl__muc_nick_taken(r, nick, real))
        return PL_ECONFLICT;
    /* Owners and admins may enter a full room (§7.2.10). */
    long cap = r->cfg.max_users;
    if (max_users && (!cap || cap > max_users))
        cap = max_users;
    if (cap && (long)r->nocc >= cap && aff < MUC_AFF_ADMIN)
        return PL_ESERVICE_UNAVAILABLE;
    if (r->cfg.password_protected && aff < MUC_AFF_ADMIN &&
        (!password || !r->cfg.password ||
         strcmp(password, r->cfg.password) != 0))
        return PL_ENOT_AUTHORIZED;
    return PL_OK;
}

static void make_occupant_id(const struct muc_room *r,
                             const struct pl_jid *real, const char *key,
                             char out[44])
{
    /* XEP-0421 §4: stable per real bare JID and room, and revealing
     * neither: a hash of a server secret, the room and the bare JID. */
    struct pl_buf in = {0};
    pl_buf_append_str(&in, key ? key : "");
    pl_buf_append(&in, "\0", 1);
    pl_buf_append_str(&in, r->jid->bare);
    pl_buf_append(&in, "\0", 1);
    pl_buf_append_str(&in, real->bare);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    EVP_Digest(in.data + in.off, in.len, md, &mdlen, EVP_sha256(), NULL);
    pl_buf_reset(&in);
    struct pl_buf b64 = {0};
    pl_base64_encode(md, mdlen, &b64);
    size_t n = b64.len < 43 ? b64.len : 43;
    memcpy(out, b64.data + b64.off, n);
    out[n] = '\0';
    pl_buf_reset(&b64);
}

struct muc_occupant *pl__muc_occupant_add(struct muc_room *r,
                                          const struct pl_jid *real,
                                          const char *nick, int role,
                                          const char *key)
{
    struct pl_jid *rj;
    if (pl_jid_make(r->jid->local, r->jid->domain, nick, &rj) != PL_OK)
        return NULL;
    struct muc_occupant *o = pl_calloc(1, sizeof(*o));
    o->nick = pl_strdup(rj->resource);
    o->jid = pl_jid_dup(real);
    o->room_jid = rj;
    o->role = role;
    make_occupant_id(r, real, key, o->occupant_id);
    if (r->nocc == r->capocc) {
        r->capocc = r->capocc ? r->capocc * 2 : 8;
        r->occ = pl_realloc(r->occ, r->capocc * sizeof(*r->occ));
    }
    o->index = r->nocc;
    r->occ[r->nocc++] = o;
    struct muc_occupant *first = pl_map_get(&r->by_nick, o->nick);
    if (first) {
        o->next_same_nick = first->next_same_nick;
        first->next_same_nick = o;
    } else {
        pl_map_put(&r->by_nick, o->nick, o);
    }
    pl_map_put(&r->by_real, real->full, o);
    return o;
}

/* Unlinks o from the nick chain (not from the array or by_real). */
static void unlink_nick(struct muc_room *r, struct muc_occupant *o)
{
    struct muc_occupant *first = pl_map_get(&r->by_nick, o->nick);
    if (first == o) {
        if (o->next_same_nick)
            pl_map_put(&r->by_nick, o->nick, o->next_same_nick);
        else
            pl_map_del(&r->by_nick, o->nick);
    } else {
        for (struct muc_occupant *p = first; p; p = p->next_same_nick)
            if (p->next_same_nick == o) {
                p->next_same_nick = o->next_same_nick;
                break;
            }
    }
    o->next_same_nick = NULL;
}

void pl__muc_occupant_remove(struct muc_room *r, struct muc_occupant *o)
{
    unlink_nick(r, o);
    pl_map_del(&r->by_real, o->jid->full);
    struct muc_occupant *last = r->occ[--r->nocc];
    r->occ[o->index] = last;
    last->index = o->index;
    occupant_free(o);
}

void pl__muc_occupant_rename(struct muc_room *r, struct muc_occupant *o,
                             const char *nick)
{
    struct pl_jid *rj;
    if (pl_jid_make(r->jid->local, r->jid->domain, nick, &rj) != PL_OK)
        return;
    unlink_nick(r, o);
    pl_free(o->nick);
    pl_jid_free(o->room_jid);
    o->nick = pl_strdup(rj->resource);
    o->room_jid = rj;
    struct muc_occupant *first = pl_map_get(&r->by_nick, o->nick);
    if (first) {
        o->next_same_nick = first->next_same_nick;
        first->next_same_nick = o;
    } else {
        pl_map_put(&r->by_nick, o->nick, o);
    }
}

int pl__muc_may_set_role(int actor_aff, int actor_role, int target_aff,
                         int target_role, int new_role)
{
    (void)target_role;
    if (new_role == MUC_ROLE_MODERATOR ||
        (target_role == MUC_ROLE_MODERATOR && new_role != MUC_ROLE_NONE)) {
        /* §9.6, §9.7: granting or revoking moderation is for admins. */
        if (actor_aff < MUC_AFF_ADMIN)
            return PL_EFORBIDDEN;
        /* §9.7: an admin or owner keeps moderation while present. */
        if (target_aff >= MUC_AFF_ADMIN && new_role != MUC_ROLE_MODERATOR)
            return PL_ENOT_ALLOWED;
        return PL_OK;
    }
    if (actor_role != MUC_ROLE_MODERATOR)
        return PL_EFORBIDDEN;
    /* §8.2, §8.4: nobody with an affiliation equal to or above the
     * actor's (and never an admin or owner) loses voice or is kicked by
     * a moderator. */
    if (target_aff >= MUC_AFF_ADMIN ||
        (target_aff >= actor_aff && actor_aff != MUC_AFF_OWNER &&
         target_aff > MUC_AFF_MEMBER))
        return PL_ENOT_ALLOWED;
    return PL_OK;
}

int pl__muc_may_set_aff(int actor_aff, int target_aff, int new_aff)
{
    if (actor_aff == MUC_AFF_OWNER)
        return PL_OK;
    if (actor_aff != MUC_AFF_ADMIN)
        return PL_EFORBIDDEN;
    /* §9: admins manage members and outcasts, not admins and owners. */
    if (new_aff >= MUC_AFF_ADMIN)
        return PL_EFORBIDDEN;
    if (target_aff >= MUC_AFF_ADMIN)
        return PL_ENOT_ALLOWED;
    return PL_OK;
}

int pl__muc_may_pm(int pm, int role)
{
    switch (pm) {
    case MUC_PM_ANYONE: return role >= MUC_ROLE_VISITOR;
    case MUC_PM_PARTICIPANTS: return role >= MUC_ROLE_PARTICIPANT;
    case MUC_PM_MODERATORS: return role == MUC_ROLE_MODERATOR;
    default: return 0;
    }
}
