/* test_muc_room.c - XEP-0045 room state and rules (src/modules/muc). */
#include "../../src/modules/muc/form.h"
#include "../../src/modules/muc/history.h"
#include "../../src/modules/muc/room.h"
#include "../../src/modules/muc/store.h"
#include "unit.h"

static struct pl_jid *J(const char *s)
{
    struct pl_jid *j = NULL;
    pl_jid_parse(pl_str_c(s), &j);
    return j;
}

static struct muc_room *new_room(void)
{
    struct muc_config d;
    pl__muc_config_default(&d);
    struct muc_room *r = pl__muc_room_new("Room", "conference.example.org", &d);
    pl__muc_config_release(&d);
    return r;
}

enum {
    O = MUC_AFF_OWNER,
    A = MUC_AFF_ADMIN,
    M = MUC_AFF_MEMBER,
    N = MUC_AFF_NONE,
    X = MUC_AFF_OUTCAST
};
enum {
    MO = MUC_ROLE_MODERATOR,
    PA = MUC_ROLE_PARTICIPANT,
    VI = MUC_ROLE_VISITOR,
    NO = MUC_ROLE_NONE
};

void test_muc_role_rules(void)
{
    /* XEP-0045 §8 (moderator use cases) and §9.6-9.7 (moderator
     * privileges are granted by admins). */
    static const struct {
        int aa, ar, ta, tr, nr, want;
    } cases[] = {
        {N, MO, N, PA, NO, PL_OK},           /* §8.2 kick a participant */
        {N, MO, N, PA, VI, PL_OK},           /* §8.4 revoke voice */
        {N, MO, N, VI, PA, PL_OK},           /* §8.3 grant voice */
        {N, PA, N, PA, NO, PL_EFORBIDDEN},   /* participant cannot kick */
        {N, MO, A, MO, NO, PL_ENOT_ALLOWED}, /* §8.2 admin cannot be kicked */
        {A, MO, O, MO, NO, PL_ENOT_ALLOWED}, /* nor an owner */
        {N, MO, N, PA, MO, PL_EFORBIDDEN},   /* moderators are made by */
        {A, MO, N, PA, MO, PL_OK},           /* admins (§9.6) */
        {A, MO, N, MO, PA, PL_OK},           /* §9.7 revoke moderator */
        {O, MO, A, MO, PA, PL_ENOT_ALLOWED}, /* an admin stays moderator */
        {N, MO, M, PA, NO, PL_OK},           /* members may be kicked */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(*cases); i++) {
        int rc = pl__muc_may_set_role(cases[i].aa, cases[i].ar, cases[i].ta,
                                      cases[i].tr, cases[i].nr);
        if (rc != cases[i].want)
            fprintf(stderr, "  role case %zu\n", i);
        CHECK_INT(rc, cases[i].want);
    }
}

void test_muc_aff_rules(void)
{
    /* §9 (admin use cases) and §10 (owner use cases). */
    static const struct {
        int actor, target, nw, want;
    } cases[] = {
        {O, N, A, PL_OK},           /* §10.6 grant admin */
        {O, A, O, PL_OK},           /* §10.3 grant owner */
        {A, N, M, PL_OK},           /* §9.3 grant membership */
        {A, N, X, PL_OK},           /* §9.1 ban */
        {A, M, N, PL_OK},           /* §9.4 revoke membership */
        {A, N, A, PL_EFORBIDDEN},   /* admins cannot make admins */
        {A, O, X, PL_ENOT_ALLOWED}, /* nor ban an owner */
        {A, A, N, PL_ENOT_ALLOWED}, /* nor demote an admin */
        {M, N, M, PL_EFORBIDDEN},   /* members manage nothing */
        {N, N, X, PL_EFORBIDDEN},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(*cases); i++)
        CHECK_INT(pl__muc_may_set_aff(cases[i].actor, cases[i].target,
                                      cases[i].nw),
                  cases[i].want);
}

void test_muc_join_checks(void)
{
    struct muc_room *r = new_room();
    struct pl_jid *owner = J("o@example.org/a"), *bob = J("b@example.org/x"),
                  *eve = J("e@evil.example/x"), *bob2 = J("b@example.org/y");
    pl__muc_aff_set(r, owner->bare, MUC_AFF_OWNER, NULL);
    r->locked = 1;
    CHECK_INT(pl__muc_check_join(r, bob, "bob", NULL, 0), PL_EITEM_NOT_FOUND);
    CHECK_INT(pl__muc_check_join(r, owner, "o", NULL, 0), PL_OK);
    r->locked = 0;
    CHECK_INT(pl__muc_check_join(r, bob, "", NULL, 0), PL_EJID_MALFORMED);
    CHECK_INT(pl__muc_check_join(r, bob, "bob", NULL, 0), PL_OK);
    /* A server-wide ban by domain (§9.1 with a domain JID). */
    pl__muc_aff_set(r, "evil.example", MUC_AFF_OUTCAST, "spam");
    CHECK_INT(pl__muc_check_join(r, eve, "eve", NULL, 0), PL_EFORBIDDEN);
    r->cfg.members_only = 1;
    CHECK_INT(pl__muc_check_join(r, bob, "bob", NULL, 0), MUC_EREGISTRATION);
    pl__muc_aff_set(r, bob->bare, MUC_AFF_MEMBER, NULL);
    CHECK_INT(pl__muc_check_join(r, bob, "bob", NULL, 0), PL_OK);
    r->cfg.password_protected = 1;
    pl__muc_set_str(&r->cfg.password, "pw");
    CHECK_INT(pl__muc_check_join(r, bob, "bob", NULL, 0), PL_ENOT_AUTHORIZED);
    CHECK_INT(pl__muc_check_join(r, bob, "bob", "no", 0), PL_ENOT_AUTHORIZED);
    CHECK_INT(pl__muc_check_join(r, bob, "bob", "pw", 0), PL_OK);
    CHECK_INT(pl__muc_check_join(r, owner, "o", NULL, 0), PL_OK);
    /* Nicks: taken by another user is a conflict, by oneself (another
     * resource) is multi-session. */
    struct muc_occupant *ob = pl__muc_occupant_add(r, bob, "bob", PA, "k");
    CHECK(ob != NULL);
    CHECK_INT(pl__muc_check_join(r, owner, "bob", NULL, 0), PL_ECONFLICT);
    CHECK_INT(pl__muc_check_join(r, bob2, "bob", "pw", 0), PL_OK);
    /* Full rooms admit admins and owners only (§7.2.10). */
    CHECK_INT(pl__muc_check_join(r, bob2, "bob", "pw", 1),
              PL_ESERVICE_UNAVAILABLE);
    CHECK_INT(pl__muc_check_join(r, owner, "o", NULL, 1), PL_OK);
    /* A registered nick is reserved (§7.10). */
    pl__muc_nick_register(r, owner->bare, "boss");
    CHECK_INT(pl__muc_check_join(r, bob2, "boss", "pw", 0), PL_ECONFLICT);
    CHECK_STR(pl__muc_nick_owner(r, "boss"), "o@example.org");
    pl__muc_room_free(r);
    pl_jid_free(owner);
    pl_jid_free(bob);
    pl_jid_free(bob2);
    pl_jid_free(eve);
}

void test_muc_occupants(void)
{
    struct muc_room *r = new_room();
    struct pl_jid *a = J("a@x.org/1"), *a2 = J("a@x.org/2"),
                  *b = J("b@x.org/1");
    struct muc_occupant *oa = pl__muc_occupant_add(r, a, "Al", PA, "k");
    struct muc_occupant *oa2 = pl__muc_occupant_add(r, a2, "Al", PA, "k");
    struct muc_occupant *ob = pl__muc_occupant_add(r, b, "Bo", VI, "k");
    CHECK_INT(r->nocc, 3);
    CHECK(pl__muc_occupant_by_nick(r, "Al") == oa);
    CHECK(oa->next_same_nick == oa2);
    CHECK(pl__muc_occupant_by_real(r, "a@x.org/2") == oa2);
    CHECK_STR(ob->room_jid->full, "room@conference.example.org/Bo");
    /* XEP-0421: the same for one user's sessions, different per user. */
    CHECK_STR(oa->occupant_id, oa2->occupant_id);
    CHECK(strcmp(oa->occupant_id, ob->occupant_id) != 0);
    CHECK(strlen(oa->occupant_id) > 20);
    pl__muc_occupant_rename(r, ob, "Bob");
    CHECK(pl__muc_occupant_by_nick(r, "Bo") == NULL);
    CHECK(pl__muc_occupant_by_nick(r, "Bob") == ob);
    pl__muc_occupant_remove(r, oa);
    CHECK_INT(r->nocc, 2);
    CHECK(pl__muc_occupant_by_nick(r, "Al") == oa2);
    CHECK(pl__muc_occupant_by_real(r, "a@x.org/1") == NULL);
    for (size_t i = 0; i < r->nocc; i++)
        CHECK_INT(r->occ[i]->index, i);
    /* Default roles (§5.1.2). */
    CHECK_INT(pl__muc_default_role(r, MUC_AFF_OWNER), MO);
    CHECK_INT(pl__muc_default_role(r, MUC_AFF_NONE), PA);
    r->cfg.moderated = 1;
    CHECK_INT(pl__muc_default_role(r, MUC_AFF_NONE), VI);
    CHECK_INT(pl__muc_default_role(r, MUC_AFF_MEMBER), PA);
    r->cfg.members_only = 1;
    CHECK_INT(pl__muc_default_role(r, MUC_AFF_NONE), NO);
    CHECK(pl__muc_may_pm(MUC_PM_PARTICIPANTS, VI) == 0);
    CHECK(pl__muc_may_pm(MUC_PM_ANYONE, VI) == 1);
    CHECK(pl__muc_may_pm(MUC_PM_NONE, MO) == 0);
    pl__muc_room_free(r);
    pl_jid_free(a);
    pl_jid_free(a2);
    pl_jid_free(b);
}

static int hist_n;
static void count_hist(struct pl_stanza *st, void *ud)
{
    (void)st;
    (void)ud;
    hist_n++;
}

void test_muc_history(void)
{
    struct muc_history *h = NULL;
    for (int i = 0; i < 30; i++) {
        struct pl_stanza *st = pl_stanza_new("message", PL_NS_CLIENT);
        pl__muc_history_add(&h, 20, st, 1000 + i);
        pl_stanza_unref(st);
    }
    CHECK_INT(pl__muc_history_count(h), 20);
    struct {
        long maxstanzas, maxchars, seconds;
        time_t since;
        long cap;
        int want;
    } cases[] = {
        {-1, -1, -1, 0, 20, 20},   {5, -1, -1, 0, 20, 5},
        {-1, -1, -1, 0, 3, 3},     {-1, -1, 4, 0, 20, 5},
        {-1, -1, -1, 1025, 20, 5}, {0, -1, -1, 0, 20, 0},
        {-1, 0, -1, 0, 20, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(*cases); i++) {
        hist_n = 0;
        pl__muc_history_each(h, cases[i].maxstanzas, cases[i].maxchars,
                             cases[i].seconds, cases[i].since, cases[i].cap,
                             1029, count_hist, NULL);
        CHECK_INT(hist_n, cases[i].want);
    }
    pl__muc_history_trim(h, 2);
    CHECK_INT(pl__muc_history_count(h), 2);
    pl__muc_history_free(h);
}

void test_muc_config_form_and_store(void)
{
    struct muc_room *r = new_room();
    pl__muc_aff_set(r, "o@x.org", MUC_AFF_OWNER, NULL);
    const char *xml =
        "<x xmlns='jabber:x:data' type='submit'>"
        "<field var='muc#roomconfig_roomname'><value>Team</value></field>"
        "<field var='muc#roomconfig_persistentroom'><value>1</value></field>"
        "<field var='muc#roomconfig_membersonly'><value>true</value></field>"
        "<field var='muc#roomconfig_allowpm'><value>moderators</value>"
        "</field><field var='muc#roomconfig_presencebroadcast'>"
        "<value>moderator</value><value>participant</value></field>"
        "<field var='muc#roomconfig_roomadmins'><value>ad@x.org</value>"
        "</field></x>";
    struct pl_stanza *st;
    CHECK_INT(pl_xml_parse_fragment(xml, strlen(xml), &st), PL_OK);
    const char *why = NULL;
    CHECK_INT(pl__muc_config_submit(r, st, pl_stanza_root(st), 1000, 100, &why),
              PL_OK);
    pl_stanza_unref(st);
    CHECK_STR(r->cfg.name, "Team");
    CHECK_INT(r->cfg.persistent, 1);
    CHECK_INT(r->cfg.members_only, 1);
    CHECK_INT(r->cfg.allow_pm, MUC_PM_MODERATORS);
    CHECK_INT(r->cfg.presence_bc, MUC_ROLEBIT(MO) | MUC_ROLEBIT(PA));
    CHECK_INT(pl__muc_aff_entry_of(r, "ad@x.org")->aff, MUC_AFF_ADMIN);
    /* Bad values change nothing. */
    static const char *const bad[] = {
        "<x xmlns='jabber:x:data' type='submit'><field var='muc#roomconfig_"
        "maxusers'><value>5000</value></field></x>",
        "<x xmlns='jabber:x:data' type='submit'><field var='muc#roomconfig_"
        "passwordprotectedroom'><value>1</value></field></x>",
        "<x xmlns='jabber:x:data' type='submit'><field var='muc#roomconfig_"
        "whois'><value>everyone</value></field></x>",
        "<x xmlns='jabber:x:data' type='submit'><field var='muc#roomconfig_"
        "roomowners'></field></x>",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
        CHECK_INT(pl_xml_parse_fragment(bad[i], strlen(bad[i]), &st), PL_OK);
        CHECK(pl__muc_config_submit(r, st, pl_stanza_root(st), 1000, 100,
                                    &why) != PL_OK);
        pl_stanza_unref(st);
    }
    CHECK_INT(r->cfg.password_protected, 0);
    CHECK_INT(pl__muc_aff_entry_of(r, "o@x.org")->aff, MUC_AFF_OWNER);
    /* Store round trip. */
    pl__muc_set_str(&r->subject, "Hello <world>");
    pl__muc_nick_register(r, "m@x.org", "Emm");
    r->vcard = pl_strdup("<vCard xmlns='vcard-temp'><FN>R</FN></vCard>");
    struct pl_buf b = {0};
    pl__muc_store_dump(r, &b);
    struct muc_config d;
    pl__muc_config_default(&d);
    struct muc_room *r2 = pl__muc_store_load("room", "conference.example.org",
                                             &d, b.data + b.off, b.len);
    pl__muc_config_release(&d);
    CHECK(r2 != NULL);
    if (r2) {
        CHECK_STR(r2->cfg.name, "Team");
        CHECK_INT(r2->cfg.members_only, 1);
        CHECK_INT(r2->cfg.allow_pm, MUC_PM_MODERATORS);
        CHECK_STR(r2->subject, "Hello <world>");
        CHECK_STR(pl__muc_nick_of(r2, "m@x.org"), "Emm");
        CHECK_INT(pl__muc_aff_entry_of(r2, "m@x.org")->aff, MUC_AFF_MEMBER);
        CHECK_INT(pl__muc_aff_entry_of(r2, "ad@x.org")->aff, MUC_AFF_ADMIN);
        CHECK(r2->vcard && strstr(r2->vcard, "<FN>R</FN>"));
        pl__muc_room_free(r2);
    }
    pl_buf_reset(&b);
    CHECK(pl__muc_store_load("room", "conference.example.org", &r->cfg,
                             "<garbage", 8) == NULL);
    pl__muc_room_free(r);
}
