#!/usr/bin/python3
"""test_muc.py - multi-user chat (XEP-0045) end to end with raw clients
(exact stanzas and errors) and with slixmpp (xep_0045, xep_0249,
xep_0410) and aioxmpp.muc as real client libraries.

Covers, with three to six users: creating a room (201, locked until the
owner configures it), instant rooms, joins in the order of §7.2.3,
groupchat to every occupant once with XEP-0359 stanza-id (by = room) and
XEP-0421 occupant-id, history limits (maxstanzas, seconds), subject,
nick changes (303), private messages, moderation (voice revoke/grant,
voice requests, kick 307, ban 301), members-only (registration-required,
member list), password (not-authorized), affiliation rules (last owner,
admins vs owners), mediated invitations and declines, XEP-0249 direct
invitations, nick registration (muc#register, x-roomuser-item), XEP-0410
self-ping, room vCard avatars (XEP-0153 hash), disco of the service and
rooms, destroy, temporary rooms vanishing, leaving on logout, and
persistent rooms with their configuration and affiliations surviving a
SIGKILL and restart.

Run with /usr/bin/python3; `scripts/run-tests test_muc.py`.
"""

import asyncio
import base64
import hashlib
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, note, tostr  # noqa: E402
from im_common import (PW, QUIET, STEP, ImClient, LoopThread,  # noqa: E402
                       add_users, error_of)

C = "{jabber:client}"
MUC = "http://jabber.org/protocol/muc"
U = "{%s#user}" % MUC
NS_DATA = "jabber:x:data"
CONF = "conference.localhost"
SID = "{urn:xmpp:sid:0}"
OCC = "{urn:xmpp:occupant-id:0}"


def u(p):
    return harness.unique(p)


def is_pres(frm=None, type_=None, code=None):
    def pred(el):
        if el.tag != C + "presence":
            return False
        if frm is not None and el.get("from") != frm:
            return False
        if type_ != el.get("type"):
            return False
        if code is not None and str(code) not in codes(el):
            return False
        return True
    return pred


def is_msg(frm=None, type_=None, body=None, anytype=False):
    def pred(el):
        if el.tag != C + "message":
            return False
        if frm is not None and el.get("from") != frm:
            return False
        if not anytype and type_ != el.get("type"):
            return False
        if body is not None and el.findtext(C + "body") != body:
            return False
        return True
    return pred


def codes(el):
    x = el.find(U + "x")
    return [s.get("code") for s in x.findall(U + "status")] \
        if x is not None else []


def item_of(el):
    x = el.find(U + "x")
    return x.find(U + "item") if x is not None else None


def is_iq_id(i):
    return lambda el: el.tag == C + "iq" and el.get("id") == i


class Occ(ImClient):
    """An ImClient that speaks MUC."""

    def join(self, room, nick, extra="", pw=None, history=""):
        x = "<x xmlns='%s'>%s%s</x>" % (
            MUC, history, "<password>%s</password>" % pw if pw else "")
        self.send("<presence to='%s/%s'>%s%s</presence>" % (room, nick, x,
                                                            extra))

    def joined(self, room, nick, **kw):
        """Joins and returns the self-presence (or the error)."""
        self.join(room, nick, **kw)
        return self.wait(lambda el: el.tag == C + "presence" and
                         el.get("from") == "%s/%s" % (room, nick) and
                         ("110" in codes(el) or el.get("type") == "error"))

    def say(self, room, body, extra=""):
        self.send("<message to='%s' type='groupchat'><body>%s</body>%s"
                  "</message>" % (room, body, extra))

    def iq_to(self, to, xml, type_="get"):
        return self.request(xml, type_=type_, to=to)


def instant(c, room):
    return c.iq_to(room, "<query xmlns='%s#owner'><x xmlns='%s' "
                   "type='submit'/></query>" % (MUC, NS_DATA), "set")


def configure(c, room, **fields):
    f = "".join("<field var='%s'><value>%s</value></field>" % (
        k if k.startswith("muc#") else "muc#roomconfig_" + k, v)
        for k, v in fields.items())
    return c.iq_to(room, "<query xmlns='%s#owner'><x xmlns='%s' "
                   "type='submit'><field var='FORM_TYPE'><value>%s#roomconfig"
                   "</value></field>%s</x></query>" % (MUC, NS_DATA, MUC, f),
                   "set")


def admin(c, room, items):
    return c.iq_to(room, "<query xmlns='%s#admin'>%s</query>" % (MUC, items),
                   "set")


def ok(r):
    return r is not None and r.get("type") == "result"


def main():
    srv = harness.Server(extra='modules = ["disco", "ping", "register", '
                         '"session", "roster", "presence", "offline", '
                         '"vcard", "private", "muc"];')
    if not srv.start():
        harness.finish()
    names = [u(n) for n in ("alice", "bob", "carol", "dave", "eve",
                            "frank")]
    add_users(srv, *names)
    a, b, c, d, e, f = [Occ(srv, n, "r") for n in names]
    for x in (a, b, c, d, e, f):
        x.presence()
    for x in (a, b, c, d, e, f):
        x.drain(0.2)
    room = "%s@%s" % (u("room"), CONF)

    # -- disco of the host lists the service; the service identifies
    r = a.iq_to(srv.domain, "<query xmlns='http://jabber.org/protocol/"
                "disco#items'/>")
    check("host disco#items lists %s" % CONF, r is not None and any(
        i.get("jid") == CONF for i in r.iter(
            "{http://jabber.org/protocol/disco#items}item")), tostr(r))
    r = a.iq_to(CONF, "<query xmlns='http://jabber.org/protocol/"
                "disco#info'/>")
    feats = [x.get("var") for x in r.iter(
        "{http://jabber.org/protocol/disco#info}feature")] if r is not None \
        else []
    check("service disco#info: conference identity and muc feature",
          MUC in feats and r.find(
              ".//{http://jabber.org/protocol/disco#info}identity").get(
              "category") == "conference", tostr(r))

    # -- creation (§10.1): 201, owner/moderator, locked until configured
    p = a.joined(room, "Alice")
    check("create: self-presence has 110 and 201",
          p is not None and {"110", "201"} <= set(codes(p)), tostr(p))
    it = item_of(p) if p is not None else None
    check("create: creator is owner and moderator",
          it is not None and it.get("affiliation") == "owner" and
          it.get("role") == "moderator", tostr(p))
    s = a.wait(is_msg(frm=room, type_="groupchat"), STEP) or \
        a.wait(is_msg(type_="groupchat"), 0.1)
    p = b.joined(room, "Bob")
    check("locked room: others get item-not-found",
          p is not None and error_of(p) == "item-not-found", tostr(p))
    check("instant room: owner submits an empty form", ok(instant(a, room)))
    a.drain(0.2)

    # -- joins (§7.2.3): existing occupants first, own presence last
    b.join(room, "Bob")
    got = b.collect(lambda el: el.tag in (C + "presence", C + "message"), 3)
    order = [(el.tag.split("}")[1], el.get("from")) for el in got]
    check("join: occupant presence, then own presence (110), then subject",
          len(got) == 3 and order[0] == ("presence", room + "/Alice") and
          order[1] == ("presence", room + "/Bob") and "110" in codes(got[1])
          and got[2].find(C + "subject") is not None, order)
    pa = a.wait(is_pres(frm=room + "/Bob"))
    check("join: moderator sees the newcomer's real JID (semi-anonymous)",
          pa is not None and item_of(pa).get("jid") == b.bare + "/r",
          tostr(pa))
    check("join: presence carries an occupant-id (XEP-0421)",
          pa is not None and pa.find(OCC + "occupant-id") is not None,
          tostr(pa))
    pc = c.joined(room, "Carol")
    check("third user joins", pc is not None and pc.get("type") is None,
          tostr(pc))
    pb = b.wait(is_pres(frm=room + "/Carol"))
    check("participant does not see real JIDs in a semi-anonymous room",
          pb is not None and item_of(pb).get("jid") is None, tostr(pb))
    for x in (a, b, c):
        x.drain(0.2)

    # -- groupchat: everyone once, with stanza-id and occupant-id
    a.say(room, "hello all", "<stanza-id xmlns='urn:xmpp:sid:0' id='fake' "
          "by='%s'/>" % room)
    msgs = {}
    for x in (a, b, c):
        msgs[x] = x.quiet(is_msg(frm=room + "/Alice", type_="groupchat",
                                 body="hello all"), QUIET)
    check("groupchat reaches each of 3 occupants exactly once",
          all(len(v) == 1 for v in msgs.values()),
          {x.user: len(v) for x, v in msgs.items()})
    m = msgs[b][0] if msgs[b] else None
    sids = m.findall(SID + "stanza-id") if m is not None else []
    check("groupchat: one stanza-id by the room, the sender's forgery gone",
          len(sids) == 1 and sids[0].get("by") == room and
          sids[0].get("id") != "fake", tostr(m))
    check("groupchat: 'to' is the recipient's own full JID",
          m is not None and m.get("to") == b.bare + "/r", tostr(m))
    oid_a = m.find(OCC + "occupant-id").get("id") if m is not None else None
    check("groupchat: occupant-id equals the one in Alice's presence",
          oid_a and msgs[c] and
          msgs[c][0].find(OCC + "occupant-id").get("id") == oid_a, oid_a)
    a.say(room, "second")
    for x in (a, b, c):
        x.drain(0.3)

    # -- history: maxstanzas and seconds, with delay
    d.join(room, "Dave", history="<history maxstanzas='1'/>")
    hist = d.collect(is_msg(type_="groupchat"), 3, STEP)
    bodies = [h.findtext(C + "body") for h in hist]
    check("history maxstanzas=1: only the last message, then the subject",
          bodies == ["second", None], bodies)
    dl = hist[0].find("{urn:xmpp:delay}delay") if hist else None
    check("history carries a delay from the room",
          dl is not None and dl.get("from") == room, tostr(hist[0] if hist else None))
    d.send("<presence to='%s/Dave' type='unavailable'/>" % room)
    d.drain(0.3)
    d.join(room, "Dave", history="<history seconds='0' maxstanzas='5'/>")
    hist = d.collect(is_msg(type_="groupchat"), 3, STEP)
    check("history seconds=0: no messages, only the subject",
          [h.findtext(C + "body") for h in hist] == [None], len(hist))
    d.join(room, "Dave2")  # nick change below instead
    for x in (a, b, c, d):
        x.drain(0.3)

    # -- subject (§8.1): moderator sets; participant may not by default
    a.send("<message to='%s' type='groupchat'><subject>Topic</subject>"
           "</message>" % room)
    sj = b.wait(lambda el: el.tag == C + "message" and
                el.findtext(C + "subject") == "Topic")
    check("subject change reaches occupants", sj is not None)
    b.send("<message to='%s' type='groupchat'><subject>Mine</subject>"
           "</message>" % room)
    er = b.wait(is_msg(type_="error"))
    check("participant may not change the subject: forbidden",
          er is not None and error_of(er) == "forbidden", tostr(er))
    for x in (a, b, c, d):
        x.drain(0.2)

    # -- nick change (§7.6)
    b.send("<presence to='%s/Bobby'/>" % room)
    un = c.wait(is_pres(frm=room + "/Bob", type_="unavailable"))
    check("nick change: 303 with the new nick",
          un is not None and "303" in codes(un) and
          item_of(un).get("nick") == "Bobby", tostr(un))
    av = c.wait(is_pres(frm=room + "/Bobby"))
    check("nick change: available under the new nick", av is not None)
    sb = b.wait(is_pres(frm=room + "/Bobby"))
    check("nick change: self gets 110 under the new nick",
          sb is not None and "110" in codes(sb), tostr(sb))
    c.send("<presence to='%s/Bobby'/>" % room)
    er = c.wait(is_pres(frm=room + "/Bobby", type_="error"))
    check("nick change to a taken nick: conflict",
          er is not None and error_of(er) == "conflict", tostr(er))
    for x in (a, b, c, d):
        x.drain(0.2)

    # -- errors on joins and messages
    p = e.joined(room, "Carol")
    check("join with a taken nick: conflict",
          p is not None and error_of(p) == "conflict", tostr(p))
    e.send("<presence to='%s'><x xmlns='%s'/></presence>" % (room, MUC))
    p = e.wait(is_pres(type_="error"))
    check("join without nick: jid-malformed",
          p is not None and error_of(p) == "jid-malformed", tostr(p))
    e.say(room, "outsider")
    er = e.wait(is_msg(type_="error"))
    check("groupchat from a non-occupant: not-acceptable",
          er is not None and error_of(er) == "not-acceptable", tostr(er))
    b.send("<message to='%s/Carol' type='groupchat'><body>x</body>"
           "</message>" % room)
    er = b.wait(is_msg(type_="error"))
    check("groupchat to an occupant: bad-request",
          er is not None and error_of(er) == "bad-request", tostr(er))

    # -- private message (§7.5)
    c.send("<message to='%s/Alice' type='chat'><body>psst</body>"
           "</message>" % room)
    pm = a.wait(is_msg(frm=room + "/Carol", type_="chat", body="psst"))
    check("private message arrives from the sender's occupant JID with "
          "muc#user x", pm is not None and pm.find(U + "x") is not None,
          tostr(pm))
    c.send("<message to='%s/Nobody' type='chat'><body>x</body>"
           "</message>" % room)
    er = c.wait(is_msg(type_="error"))
    check("private message to an absent nick: item-not-found",
          er is not None and error_of(er) == "item-not-found", tostr(er))

    # -- self-ping (XEP-0410)
    r = b.iq_to(room + "/Bobby", "<ping xmlns='urn:xmpp:ping'/>")
    check("self-ping of a joined occupant: result", ok(r), tostr(r))
    r = e.iq_to(room + "/Bobby", "<ping xmlns='urn:xmpp:ping'/>")
    check("ping to an occupant from a non-occupant: not-acceptable",
          r is not None and error_of(r) == "not-acceptable", tostr(r))

    # -- moderation: revoke voice, voice request, approval
    r = admin(a, room, "<item nick='Carol' role='visitor'><reason>calm"
              "</reason></item>")
    check("moderator revokes voice", ok(r), tostr(r))
    pv = c.wait(is_pres(frm=room + "/Carol"))
    check("revoked: Carol's presence says visitor",
          pv is not None and item_of(pv).get("role") == "visitor",
          tostr(pv))
    c.say(room, "can I?")
    er = c.wait(is_msg(type_="error"))
    check("visitor speaks: forbidden", er is not None and
          error_of(er) == "forbidden", tostr(er))
    c.send("<message to='%s'><x xmlns='%s' type='submit'><field "
           "var='FORM_TYPE'><value>%s#request</value></field><field "
           "var='muc#role'><value>participant</value></field></x>"
           "</message>" % (room, NS_DATA, MUC))
    vr = a.wait(lambda el: el.tag == C + "message" and
                el.find("{%s}x" % NS_DATA) is not None)
    check("voice request reaches the moderator with the nick",
          vr is not None and "Carol" in tostr(vr), tostr(vr))
    a.send("<message to='%s'><x xmlns='%s' type='submit'><field "
           "var='FORM_TYPE'><value>%s#request</value></field><field "
           "var='muc#role'><value>participant</value></field><field "
           "var='muc#roomnick'><value>Carol</value></field><field "
           "var='muc#request_allow'><value>true</value></field></x>"
           "</message>" % (room, NS_DATA, MUC))
    pv = c.wait(lambda el: is_pres(frm=room + "/Carol")(el) and
                item_of(el).get("role") == "participant")
    check("approved voice request: Carol is a participant again",
          pv is not None, tostr(pv))
    r = admin(b, room, "<item nick='Carol' role='none'/>")
    check("participant cannot kick: forbidden",
          r is not None and error_of(r) == "forbidden", tostr(r))
    for x in (a, b, c, d):
        x.drain(0.2)

    # -- kick (307) and ban (301)
    r = admin(a, room, "<item nick='Dave2' role='none'><reason>bye"
              "</reason></item>")
    check("kick: result", ok(r), tostr(r))
    kp = d.wait(is_pres(frm=room + "/Dave2", type_="unavailable"))
    check("kicked occupant gets 307 and 110",
          kp is not None and {"307", "110"} <= set(codes(kp)), tostr(kp))
    ko = b.wait(is_pres(frm=room + "/Dave2", type_="unavailable"))
    check("others see the kick (307)",
          ko is not None and "307" in codes(ko), tostr(ko))
    r = admin(a, room, "<item jid='%s' affiliation='outcast'/>" % d.bare)
    check("ban by JID: result", ok(r), tostr(r))
    p = d.joined(room, "Dave")
    check("banned user cannot enter: forbidden",
          p is not None and error_of(p) == "forbidden", tostr(p))
    r = a.iq_to(room, "<query xmlns='%s#admin'><item affiliation='outcast'/>"
                "</query>" % MUC)
    check("ban list names the banned JID", r is not None and any(
        i.get("jid") == d.bare for i in r.iter(
            "{%s#admin}item" % MUC)), tostr(r))
    r = admin(a, room, "<item jid='%s' affiliation='none'/>" % d.bare)
    check("unban", ok(r), tostr(r))

    # -- affiliations: admin, member list, last owner
    r = admin(a, room, "<item jid='%s' affiliation='admin'/>" % b.bare)
    check("owner makes Bob admin", ok(r), tostr(r))
    pb = c.wait(lambda el: is_pres(frm=room + "/Bobby")(el) and
                item_of(el).get("role") == "moderator")
    check("new admin becomes moderator", pb is not None, tostr(pb))
    r = admin(b, room, "<item jid='%s' affiliation='none'/>" % a.bare)
    check("admin cannot change an owner: not-allowed",
          r is not None and error_of(r) == "not-allowed", tostr(r))
    r = admin(b, room, "<item jid='%s' affiliation='owner'/>" % c.bare)
    check("admin cannot make owners: forbidden",
          r is not None and error_of(r) == "forbidden", tostr(r))
    r = admin(a, room, "<item jid='%s' affiliation='member'/>" % a.bare)
    check("last owner cannot step down: conflict",
          r is not None and error_of(r) == "conflict", tostr(r))
    r = admin(b, room, "<item jid='%s' affiliation='member'/>" % c.bare)
    check("admin adds a member", ok(r), tostr(r))
    r = b.iq_to(room, "<query xmlns='%s#admin'><item affiliation='member'/>"
                "</query>" % MUC)
    check("member list", r is not None and any(
        i.get("jid") == c.bare for i in r.iter("{%s#admin}item" % MUC)),
        tostr(r))
    r = b.iq_to(room, "<query xmlns='%s#owner'/>" % MUC)
    check("admin cannot read the config form: forbidden",
          r is not None and error_of(r) == "forbidden", tostr(r))
    for x in (a, b, c, d):
        x.drain(0.2)

    # -- configuration form (§10.2) and its notification (104)
    r = a.iq_to(room, "<query xmlns='%s#owner'/>" % MUC)
    vars_ = [x.get("var") for x in r.iter("{%s}field" % NS_DATA)] \
        if r is not None else []
    want = ["muc#roomconfig_" + v for v in (
        "roomname", "roomdesc", "persistentroom", "publicroom",
        "membersonly", "moderatedroom", "passwordprotectedroom",
        "roomsecret", "whois", "changesubject", "allowinvites", "allowpm",
        "maxusers", "presencebroadcast", "getmemberlist", "enablelogging",
        "roomadmins", "roomowners")] + ["muc#maxhistoryfetch"]
    check("config form has every standard field",
          all(w in vars_ for w in want), [w for w in want if w not in vars_])
    r = configure(a, room, roomname="Team", membersonly="1",
                  passwordprotectedroom="1", roomsecret="s3cret")
    check("owner submits the config form", ok(r), tostr(r))
    n104 = c.wait(lambda el: el.tag == C + "message" and
                  "104" in codes(el))
    check("occupants are told the configuration changed (104)",
          n104 is not None)
    r = configure(a, room, passwordprotectedroom="1", roomsecret="")
    check("password-protected without password: not-acceptable",
          r is not None and error_of(r) == "not-acceptable", tostr(r))
    p = e.joined(room, "Eve", pw="s3cret")
    check("members-only, not a member: registration-required",
          p is not None and error_of(p) == "registration-required",
          tostr(p))
    r = admin(a, room, "<item jid='%s' affiliation='member'/>" % e.bare)
    p = e.joined(room, "Eve")
    check("password room without password: not-authorized",
          p is not None and error_of(p) == "not-authorized", tostr(p))
    p = e.joined(room, "Eve", pw="s3cret")
    check("member with the password enters", p is not None and
          p.get("type") is None, tostr(p))
    r = a.iq_to(room, "<query xmlns='http://jabber.org/protocol/"
                "disco#info'/>")
    feats = [x.get("var") for x in r.iter(
        "{http://jabber.org/protocol/disco#info}feature")] if r is not None \
        else []
    check("room disco#info reflects the configuration",
          {"muc_membersonly", "muc_passwordprotected", "muc_semianonymous",
           "urn:xmpp:occupant-id:0", MUC + "#stable_id"} <= set(feats),
          feats)
    for x in (a, b, c, e):
        x.drain(0.2)

    # -- invitations: mediated (§7.8.2) and direct (XEP-0249)
    c.send("<message to='%s'><x xmlns='%s#user'><invite to='%s'><reason>"
           "join us</reason></invite></x></message>" % (room, MUC, f.bare))
    er = c.wait(is_msg(type_="error"))
    check("member may not invite to a members-only room: forbidden",
          er is not None and error_of(er) == "forbidden", tostr(er))
    a.send("<message to='%s'><x xmlns='%s#user'><invite to='%s'><reason>"
           "join us</reason></invite></x></message>" % (room, MUC, f.bare))
    inv = f.wait(lambda el: el.tag == C + "message" and
                 el.find(U + "x/" + U + "invite") is not None)
    check("mediated invitation reaches the invitee from the room, with "
          "the password", inv is not None and inv.get("from") == room and
          inv.find(U + "x/" + U + "invite").get("from", "").startswith(
              a.bare) and inv.findtext(U + "x/" + U + "password") ==
          "s3cret", tostr(inv))
    f.send("<message to='%s'><x xmlns='%s#user'><decline to='%s'><reason>"
           "busy</reason></decline></x></message>" % (room, MUC, a.bare))
    dec = a.wait(lambda el: el.tag == C + "message" and
                 el.find(U + "x/" + U + "decline") is not None)
    check("decline reaches the inviter", dec is not None and
          dec.find(U + "x/" + U + "decline").get("from") == f.bare,
          tostr(dec))
    a.send("<message to='%s'><x xmlns='jabber:x:conference' jid='%s' "
           "password='s3cret'/></message>" % (f.bare, room))
    di = f.wait(lambda el: el.tag == C + "message" and el.find(
        "{jabber:x:conference}x") is not None)
    check("direct invitation (XEP-0249) passes through", di is not None)

    # -- nick registration (§7.10) and x-roomuser-item (§7.12)
    r = f.iq_to(room, "<query xmlns='jabber:iq:register'/>")
    check("registration form", r is not None and
          r.find(".//{%s}field[@var='muc#register_roomnick']" % NS_DATA)
          is not None, tostr(r))
    r = f.iq_to(room, "<query xmlns='jabber:iq:register'><x xmlns='%s' "
                "type='submit'><field var='FORM_TYPE'><value>%s#register"
                "</value></field><field var='muc#register_roomnick'><value>"
                "Frankie</value></field></x></query>" % (NS_DATA, MUC),
                "set")
    check("nick registration", ok(r), tostr(r))
    r = f.iq_to(room, "<query xmlns='http://jabber.org/protocol/disco#info' "
                "node='x-roomuser-item'/>")
    idn = r.find(".//{http://jabber.org/protocol/disco#info}identity") \
        if r is not None else None
    check("x-roomuser-item returns the reserved nick",
          idn is not None and idn.get("name") == "Frankie", tostr(r))
    b.send("<presence to='%s/Frankie'/>" % room)
    er = b.wait(is_pres(frm=room + "/Frankie", type_="error"))
    check("someone else taking a reserved nick: conflict",
          er is not None and error_of(er) == "conflict", tostr(er))
    p = f.joined(room, "Frankie", pw="s3cret")
    check("registered user (now a member) enters under the nick",
          p is not None and p.get("type") is None, tostr(p))
    for x in (a, b, c, e, f):
        x.drain(0.3)

    # -- room avatar (vCard on the room JID, XEP-0153 hash)
    img = bytes(range(64))
    r = a.iq_to(room, "<vCard xmlns='vcard-temp'><PHOTO><TYPE>image/png"
                "</TYPE><BINVAL>%s</BINVAL></PHOTO></vCard>"
                % base64.b64encode(img).decode(), "set")
    check("owner sets the room vCard", ok(r), tostr(r))
    h = hashlib.sha1(img).hexdigest()
    av = c.wait(lambda el: el.tag == C + "presence" and
                el.get("from") == room)
    check("occupants get the avatar hash from the room",
          av is not None and av.findtext(
              "{vcard-temp:x:update}x/{vcard-temp:x:update}photo") == h,
          tostr(av))
    r = e.iq_to(room, "<vCard xmlns='vcard-temp'/>")
    check("anyone reads the room vCard", r is not None and
          r.findtext(".//{vcard-temp}BINVAL") is not None, tostr(r))
    r = c.iq_to(room, "<vCard xmlns='vcard-temp'/>", "set")
    check("non-owner sets the room vCard: forbidden",
          r is not None and error_of(r) == "forbidden", tostr(r))
    r = a.iq_to(room, "<query xmlns='http://jabber.org/protocol/"
                "disco#info'/>")
    check("roominfo has the avatar hash", r is not None and
          h in tostr(r), tostr(r)[:300])

    # -- persistence across a restart
    r = configure(a, room, persistentroom="1", moderatedroom="1")
    check("room made persistent", ok(r), tostr(r))
    for x in (a, b, c, d, e, f):
        x.close()
    # SIGKILL: what an owner was told is done must be on disk already.
    srv.kill(signal.SIGKILL)
    check("restart after SIGKILL", srv.start())
    a, b, c = [Occ(srv, n, "r2") for n in names[:3]]
    for x in (a, b, c):
        x.presence()
        x.drain(0.2)
    r = a.iq_to(room, "<query xmlns='http://jabber.org/protocol/"
                "disco#info'/>")
    feats = [x.get("var") for x in r.iter(
        "{http://jabber.org/protocol/disco#info}feature")] if r is not None \
        else []
    check("after restart: room exists, persistent, members-only, moderated",
          {"muc_persistent", "muc_membersonly", "muc_moderated"} <=
          set(feats), tostr(r)[:400])
    p = a.joined(room, "Alice")
    check("after restart: owner enters (no 201, not locked)",
          p is not None and "201" not in codes(p) and
          item_of(p).get("affiliation") == "owner", tostr(p))
    p = c.joined(room, "Carol", pw="s3cret")
    check("after restart: member list and password kept",
          p is not None and item_of(p) is not None and
          item_of(p).get("affiliation") == "member", tostr(p))
    p = b.joined(room, "Bob", pw="s3cret")
    check("after restart: admin kept",
          p is not None and item_of(p) is not None and
          item_of(p).get("affiliation") == "admin", tostr(p))
    sj = [el for el in c.quiet(lambda el: el.tag == C + "message", 0.5)
          if el.findtext(C + "subject") == "Topic"]
    check("after restart: subject kept", len(sj) == 1)

    # -- logout: others see unavailable
    b.logout()
    un = a.wait(is_pres(frm=room + "/Bob", type_="unavailable"))
    check("occupant's logout: others get unavailable", un is not None)

    # -- a session that never sent initial presence and dies still leaves
    g = Occ(srv, names[4], "ghost")
    g.join(room, "Ghost", pw="s3cret")
    gp = a.wait(is_pres(frm=room + "/Ghost"))
    check("a session without initial presence joins", gp is not None,
          tostr(gp))
    g.kill()
    un = a.wait(is_pres(frm=room + "/Ghost", type_="unavailable"))
    check("connection loss of such a session: others get unavailable",
          un is not None)

    # -- destroy (§10.9)
    r = c.iq_to(room, "<query xmlns='%s#owner'><destroy/></query>" % MUC,
                "set")
    check("member cannot destroy: forbidden",
          r is not None and error_of(r) == "forbidden", tostr(r))
    r = a.iq_to(room, "<query xmlns='%s#owner'><destroy jid='other@%s'>"
                "<reason>done</reason></destroy></query>" % (MUC, CONF),
                "set")
    check("owner destroys the room", ok(r), tostr(r))
    dp = c.wait(is_pres(frm=room + "/Carol", type_="unavailable"))
    check("occupants get the destroy notice with the alternate venue",
          dp is not None and dp.find(U + "x/" + U + "destroy") is not None
          and dp.find(U + "x/" + U + "destroy").get("jid") == "other@" +
          CONF, tostr(dp))
    r = a.iq_to(room, "<query xmlns='http://jabber.org/protocol/"
                "disco#info'/>")
    check("destroyed room: item-not-found",
          r is not None and error_of(r) == "item-not-found", tostr(r))

    # -- hidden rooms stay out of the directory; unique names (§10.1.4)
    hid = "%s@%s" % (u("hidden"), CONF)
    a.joined(hid, "A")
    r = configure(a, hid, publicroom="0")
    check("room made hidden", ok(r), tostr(r))
    r = c.iq_to(CONF, "<query xmlns='http://jabber.org/protocol/"
                "disco#items'/>")
    jids = [i.get("jid") for i in r.iter(
        "{http://jabber.org/protocol/disco#items}item")] if r is not None \
        else []
    check("hidden room not listed in the service's disco#items",
          r is not None and hid not in jids, jids)
    r = a.iq_to(CONF, "<unique xmlns='%s#unique'/>" % MUC)
    un1 = r.findtext("{%s#unique}unique" % MUC) if r is not None else None
    r = a.iq_to(CONF, "<unique xmlns='%s#unique'/>" % MUC)
    un2 = r.findtext("{%s#unique}unique" % MUC) if r is not None else None
    check("unique room names differ", un1 and un2 and un1 != un2,
          (un1, un2))
    a.send("<presence to='%s/A' type='unavailable'/>" % hid)
    a.drain(0.3)

    # -- temporary room vanishes when empty
    tmp = "%s@%s" % (u("tmp"), CONF)
    a.joined(tmp, "A")
    instant(a, tmp)
    a.send("<presence to='%s/A' type='unavailable'/>" % tmp)
    a.drain(0.3)
    r = a.iq_to(tmp, "<query xmlns='http://jabber.org/protocol/"
                "disco#info'/>")
    check("temporary room is gone once empty",
          r is not None and error_of(r) == "item-not-found", tostr(r))
    for x in (a, c):
        x.close()

    client_libraries(srv, names)
    harness.finish()


def client_libraries(srv, names):
    """slixmpp (xep_0045, xep_0249, xep_0410) and aioxmpp.muc in one
    room with a raw client: real libraries join, talk and see each
    other."""
    try:
        import slixmpp
        import aioxmpp
        import aioxmpp.muc
    except ImportError as ex:
        check("client libraries importable", False, repr(ex))
        return
    lt = LoopThread()
    room = "%s@%s" % (u("libs"), CONF)
    raw = Occ(srv, names[5], "raw")
    raw.presence()
    raw.drain(0.2)
    raw.joined(room, "Raw")
    instant(raw, room)
    raw.drain(0.2)

    got = {"slix": [], "aio": []}
    xs = slixmpp.ClientXMPP("%s@%s/slix" % (names[3], srv.domain), PW)
    xs.register_plugin("xep_0045")
    xs.register_plugin("xep_0249")
    xs.register_plugin("xep_0199")
    harness.slixmpp_without_channel_binding(xs)
    xs.add_event_handler("groupchat_message",
                         lambda m: got["slix"].append(m["body"]))
    xs.ssl_context = harness.no_verify_context()

    async def slix_start():
        xs.connect((srv.host, srv.direct_port), use_ssl=True,
                   force_starttls=False)
        fut = asyncio.get_event_loop().create_future()
        xs.add_event_handler("session_start",
                             lambda _: fut.done() or fut.set_result(1))
        await asyncio.wait_for(fut, 10)
        xs.send_presence()
        await asyncio.wait_for(xs.plugin["xep_0045"].join_muc_wait(
            room, "Slix", maxstanzas=0), 10)
        return True

    try:
        okj = lt.run(slix_start(), 20)
    except Exception as ex:  # noqa: BLE001
        okj = False
        note("slixmpp: %r" % ex)
    check("slixmpp xep_0045 joins the room", okj)
    p = raw.wait(is_pres(frm=room + "/Slix"))
    check("raw occupant sees slixmpp's presence", p is not None)

    aio_msgs = got["aio"]
    import aioxmpp.connector
    ctx = {}

    async def aio_start():
        # Built on the loop thread: aioxmpp binds to the running loop.
        client = ctx["client"] = aioxmpp.Client(
            aioxmpp.JID.fromstr("%s@%s/aio" % (names[4], srv.domain)),
            aioxmpp.make_security_layer(PW, no_verify=True),
            override_peer=[(srv.host, srv.direct_port,
                            aioxmpp.connector.XMPPOverTLSConnector())])
        ctx["cm"] = client.connected(presence=aioxmpp.PresenceState(True))
        await asyncio.wait_for(ctx["cm"].__aenter__(), 15)
        muc = client.summon(aioxmpp.muc.MUCClient)
        r, fut = muc.join(aioxmpp.JID.fromstr(room), "Aio",
                          history=aioxmpp.muc.xso.History(maxstanzas=0))
        r.on_message.connect(
            lambda msg, member, source, **kw: aio_msgs.append(
                str(msg.body.any()) if msg.body else None))
        await asyncio.wait_for(fut, 10)
        ctx["room"] = r
        return True

    try:
        oka = lt.run(aio_start(), 25)
    except Exception as ex:  # noqa: BLE001
        oka = False
        note("aioxmpp: %r" % ex)
    check("aioxmpp.muc joins the room", oka)
    raw.drain(0.3)
    raw.say(room, "from raw")

    async def slix_say():
        xs.send_message(mto=room, mbody="from slix", mtype="groupchat")
        return True
    lt.run(slix_say(), 5)
    if oka:
        async def aio_say():
            msg = aioxmpp.Message(type_=aioxmpp.MessageType.GROUPCHAT,
                                  to=aioxmpp.JID.fromstr(room))
            msg.body[None] = "from aio"
            await ctx["client"].send(msg)
            return True
        lt.run(aio_say(), 5)
    seen = raw.quiet(is_msg(type_="groupchat"), 1.5)
    bodies = sorted(x.findtext(C + "body") or "" for x in seen)
    check("raw occupant gets slixmpp's and aioxmpp's messages once each",
          bodies.count("from slix") == 1 and
          bodies.count("from aio") == (1 if oka else 0), bodies)
    check("slixmpp gets each message once",
          got["slix"].count("from raw") == 1 and
          got["slix"].count("from aio") == (1 if oka else 0), got["slix"])
    check("aioxmpp gets each message once",
          aio_msgs.count("from raw") == 1 and
          aio_msgs.count("from slix") == 1, aio_msgs)

    async def slix_ping():
        # XEP-0410 §3 is an XEP-0199 ping to one's own occupant JID.
        await xs.plugin["xep_0199"].send_ping(room + "/Slix", timeout=5)
        return True
    try:
        pr = lt.run(slix_ping(), 10)
        check("slixmpp self-ping (XEP-0410) succeeds", pr is True)
    except Exception as ex:  # noqa: BLE001
        check("slixmpp self-ping (XEP-0410) succeeds", False, repr(ex))

    async def slix_invite():
        xs.plugin["xep_0249"].send_invitation(
            "%s@%s" % (names[5], srv.domain), room, reason="come")
        return True
    lt.run(slix_invite(), 5)
    inv = raw.wait(lambda el: el.tag == C + "message" and
                   el.find("{jabber:x:conference}x") is not None)
    check("slixmpp xep_0249 direct invitation arrives", inv is not None and
          inv.find("{jabber:x:conference}x").get("jid") == room, tostr(inv))

    async def stop():
        xs.disconnect()
        if "cm" in ctx:
            await ctx["cm"].__aexit__(None, None, None)
        return True
    try:
        lt.run(stop(), 10)
    except Exception:  # noqa: BLE001
        pass
    lt.stop()
    raw.close()


if __name__ == "__main__":
    main()
