/*
 * room.h - a XEP-0045 room as pure state: configuration, occupants,
 * affiliations, roles, and the rules of who may do what.  Nothing here
 * sends a stanza or touches storage, so tests/unit/test_muc_room.c drives
 * it directly; mod_muc.c turns the decisions into presence and messages.
 *
 * Occupants are kept three ways: an array for fan-out (index in the
 * occupant, O(1) removal by swap), a map nick -> first occupant of that
 * nick (a user joined from several resources shares one nick, XEP-0045
 * §7.2.9 "multi-session nick"), and a map real full JID -> occupant.
 * Affiliations live in a map bare JID (or domain, for server bans) ->
 * struct muc_aff.
 *
 * Ownership: the room owns its occupants, affiliation entries and
 * strings; JIDs passed in are copied.
 *
 * Extending: a new configuration option is a field in struct muc_config,
 * a default in pl__muc_config_default, a row in form.c's form table and in
 * store.c's serializer.
 */
#ifndef PL_MUC_ROOM_H
#define PL_MUC_ROOM_H

#include "core/modapi.h"

enum muc_role {
    MUC_ROLE_NONE = 0,
    MUC_ROLE_VISITOR,
    MUC_ROLE_PARTICIPANT,
    MUC_ROLE_MODERATOR,
};

enum muc_aff {
    MUC_AFF_OUTCAST = 0,
    MUC_AFF_NONE,
    MUC_AFF_MEMBER,
    MUC_AFF_ADMIN,
    MUC_AFF_OWNER,
};

/* Who may send private messages (muc#roomconfig_allowpm). */
enum muc_pm {
    MUC_PM_ANYONE = 0,
    MUC_PM_PARTICIPANTS,
    MUC_PM_MODERATORS,
    MUC_PM_NONE
};

/* Role bit masks for presencebroadcast and getmemberlist. */
#define MUC_ROLEBIT(r) (1u << (r))
#define MUC_ROLES_ALL                                                          \
    (MUC_ROLEBIT(MUC_ROLE_VISITOR) | MUC_ROLEBIT(MUC_ROLE_PARTICIPANT) |       \
     MUC_ROLEBIT(MUC_ROLE_MODERATOR))

struct muc_config {
    char *name;             /* muc#roomconfig_roomname, owned, may be NULL */
    char *desc;             /* roomdesc */
    char *lang;             /* lang */
    char *password;         /* roomsecret */
    char *pubsub;           /* pubsub node, informative */
    int persistent;         /* persistentroom */
    int public_room;        /* publicroom: listed in disco#items */
    int members_only;       /* membersonly */
    int moderated;          /* moderatedroom */
    int password_protected; /* passwordprotectedroom */
    int whois_anyone;       /* whois: 1 anyone (non-anonymous), 0 moderators */
    int change_subject;     /* changesubject: participants may set it */
    int allow_invites;      /* allowinvites: participants may invite */
    int allow_pm;           /* enum muc_pm */
    int logging;            /* enablelogging (archive, XEP-0313) */
    int voice_requests;     /* allow voice requests (muc#request) */
    long max_users;         /* maxusers, 0 = no limit but the service's */
    long max_history;       /* maxhistoryfetch */
    unsigned presence_bc;   /* presencebroadcast: role bits */
    unsigned member_list;   /* getmemberlist: role bits */
};

struct muc_aff_entry {
    int aff;      /* enum muc_aff */
    char *nick;   /* registered (reserved) nick, or NULL */
    char *reason; /* reason given with the change, or NULL */
};

struct muc_occupant {
    char *nick;              /* occupant nick (resource of room JID) */
    struct pl_jid *jid;      /* real full JID, owned */
    struct pl_jid *room_jid; /* room@service/nick, owned */
    int role;                /* enum muc_role */
    size_t index;            /* position in room->occ */
    struct muc_occupant *next_same_nick; /* multi-session nick chain */
    struct pl_stanza *presence;          /* last presence as received, held */
    char occupant_id[44];                /* XEP-0421, base64 of a keyed hash */
    struct pl_stanza *cached[2];         /* current presence as others see it,
                                 * without and with the real JID (built
                                 * by mod_muc, dropped on change) */
};

struct muc_room {
    char *local;               /* room localpart, owned */
    struct pl_jid *jid;        /* room@service, owned */
    struct muc_config cfg;     /* configuration */
    struct pl_map by_nick;     /* nick -> struct muc_occupant * (first) */
    struct pl_map by_real;     /* real full JID -> struct muc_occupant * */
    struct muc_occupant **occ; /* every occupant, for fan-out */
    size_t nocc, capocc;
    struct pl_map affs;          /* bare JID -> struct muc_aff_entry * */
    struct pl_map reserved;      /* registered nick -> owning bare JID (an
                               * owned copy): joins check it in O(1) */
    char *subject;               /* current subject, owned, NULL = none */
    char *subject_nick;          /* who set it (nick), owned */
    char *vcard;                 /* room vCard (XEP-0153), serialized XML */
    char avatar_hash[41];        /* hex SHA-1 of the PHOTO, "" if none */
    int locked;                  /* created, awaiting configuration (§10.1) */
    int destroyed;               /* being torn down */
    struct muc_history *history; /* recent messages (history.c) */
    void *service;               /* mod_muc's per-host state (borrowed) */
};

/* A fresh room with the default configuration cfg (copied). */
struct muc_room *pl__muc_room_new(const char *local, const char *service,
                                  const struct muc_config *defaults);
void pl__muc_room_free(struct muc_room *r);

void pl__muc_config_copy(struct muc_config *dst, const struct muc_config *src);
void pl__muc_config_release(struct muc_config *c);
/* Replaces *slot by a copy of s (NULL or "" clears it). */
void pl__muc_set_str(char **slot, const char *s);

/* Affiliation of a bare JID (a domain entry bans a whole server). */
int pl__muc_aff_of(const struct muc_room *r, const struct pl_jid *real);
const struct muc_aff_entry *pl__muc_aff_entry_of(const struct muc_room *r,
                                                 const char *bare);
/* Sets (aff NONE with no nick removes) the entry for bare. */
void pl__muc_aff_set(struct muc_room *r, const char *bare, int aff,
                     const char *reason);
/* Registered nick of bare, or NULL; the bare JID holding nick, or NULL. */
const char *pl__muc_nick_of(const struct muc_room *r, const char *bare);
const char *pl__muc_nick_owner(const struct muc_room *r, const char *nick);
void pl__muc_nick_register(struct muc_room *r, const char *bare,
                           const char *nick);
int pl__muc_count_aff(const struct muc_room *r, int aff);

/* The role an occupant of affiliation aff gets on entering (§5.1.2). */
int pl__muc_default_role(const struct muc_room *r, int aff);

/*
 * Whether real may enter with nick (and password, NULL if none given):
 * PL_OK, or the condition XEP-0045 §7.2 names: PL_EFORBIDDEN (banned),
 * PL_EREGISTRATION_REQUIRED is not an RFC condition, so members-only
 * refusals return PL_ENOT_ALLOWED mapped by the caller to
 * <registration-required/>; see mod_muc.c.  Codes:
 *   PL_ENOT_AUTHORIZED   wrong or missing password (§7.2.6)
 *   PL_EFORBIDDEN        outcast (§7.2.7)
 *   MUC_EREGISTRATION    members-only and not a member (§7.2.8)
 *   PL_ECONFLICT         nick in use or reserved by another (§7.2.9)
 *   PL_ESERVICE_UNAVAILABLE  room full (§7.2.10)
 *   PL_EITEM_NOT_FOUND   locked room, not its owner (§10.1.1)
 *   PL_EJID_MALFORMED    no nick (§7.2.1)
 * max_users is the service's cap (0 none).
 */
#define MUC_EREGISTRATION (-100)
int pl__muc_check_join(const struct muc_room *r, const struct pl_jid *real,
                       const char *nick, const char *password, long max_users);

struct muc_occupant *pl__muc_occupant_by_nick(const struct muc_room *r,
                                              const char *nick);
struct muc_occupant *pl__muc_occupant_by_real(const struct muc_room *r,
                                              const char *full);
/* Adds an occupant (real and room JID copied).  key is the service's
 * secret for occupant ids. */
struct muc_occupant *pl__muc_occupant_add(struct muc_room *r,
                                          const struct pl_jid *real,
                                          const char *nick, int role,
                                          const char *key);
/* Removes and frees o. */
void pl__muc_occupant_remove(struct muc_room *r, struct muc_occupant *o);
/* Moves o to a new nick (the caller checked it is free). */
void pl__muc_occupant_rename(struct muc_room *r, struct muc_occupant *o,
                             const char *nick);
/* Whether the nick is held by a user other than real's bare JID. */
int pl__muc_nick_taken(const struct muc_room *r, const char *nick,
                       const struct pl_jid *real);

/*
 * Permission checks for the admin use cases (XEP-0045 §8, §9, §10).
 * actor_aff/actor_role: the one asking; target_aff/target_role: the
 * affected user (role NONE if not present).  PL_OK or the condition:
 * PL_EFORBIDDEN (lacks privilege), PL_ENOT_ALLOWED (target is above or
 * equal: §8.2 kicking an admin), PL_EBAD_REQUEST.
 */
int pl__muc_may_set_role(int actor_aff, int actor_role, int target_aff,
                         int target_role, int new_role);
int pl__muc_may_set_aff(int actor_aff, int target_aff, int new_aff);

/* Whether role may send private messages under pm policy. */
int pl__muc_may_pm(int pm, int role);

/* Names as on the wire ("moderator", "owner", ...); -1 if unknown. */
const char *pl__muc_role_name(int role);
const char *pl__muc_aff_name(int aff);
int pl__muc_role_parse(const char *s);
int pl__muc_aff_parse(const char *s);

/* Built-in defaults (before the module's options are applied). */
void pl__muc_config_default(struct muc_config *c);

#endif
