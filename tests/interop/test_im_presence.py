#!/usr/bin/python3
"""test_im_presence.py - presence end to end (RFC 6121 §4).

Subscriptions are made through the protocol first (im_common.make_both).
Then: initial presence broadcast to the contacts with a subscription to
the user and only to them (§4.2.2); probes at login answered from each
contact's last presence with its show, status and priority (§4.3);
show values away/chat/dnd/xa, status text and priority carried both ways,
also to and from an aioxmpp client (PresenceClient/PresenceServer);
presence of the user's own other resources; directed presence to a
non-contact and the unavailable presence it gets at logout (§4.6.2);
unavailable broadcast on explicit unavailable, on </stream:stream> and on
connection loss (an abortive TCP close), carrying the last status text;
and 50 contacts online: a login sees all their presence and one change
of the user's presence reaches all 50.

Every wait is bounded (STEP, QUIET in im_common.py).  Run with
/usr/bin/python3; `scripts/run-tests im_presence`.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, note, tostr  # noqa: E402
from im_common import (STEP, AioPeer, LoopThread, add_users,  # noqa: E402
                       check_namespaces, is_presence, is_push, login,
                       make_both, priority_of, roster_items, show_of,
                       status_of)

srv = None


def u(prefix):
    return harness.unique(prefix)


def pres_with(frm, status=None, show=None, type_=None):
    """Presence from the full JID frm with the given status (and show,
    when given)."""
    base = is_presence(frm=frm, type_=type_)

    def pred(el):
        return base(el) and (status is None or status_of(el) == status) \
            and (show is None or show_of(el) == show)
    return pred


def fmt(els):
    return [tostr(x) for x in els]


def subscribe_from_only(follower, user):
    """follower subscribes to user, user approves: user's item for
    follower is 'from', follower's item for user is 'to'."""
    f = login(srv, follower, "setup")
    s = login(srv, user, "setup")
    try:
        f.presence("subscribe", to=s.bare)
        if s.wait(is_presence(frm=f.bare, type_="subscribe")) is None:
            return False
        s.presence("subscribed", to=f.bare)
        return f.wait(lambda e: is_push(s.bare)(e) and
                      roster_items(e)[s.bare].sub == "to") is not None
    finally:
        f.logout()
        s.logout()


def presence_flows(lt):
    alice, bob, carol, erin, fan, dan = [u(p) for p in (
        "pa", "pb", "pc", "pe", "pf", "pd")]
    ja, jb, jc, je, jf, jd = add_users(srv, alice, bob, carol, erin, fan,
                                       dan)
    ok = make_both(srv, alice, bob) and make_both(srv, alice, carol) and \
        make_both(srv, alice, erin) and subscribe_from_only(fan, alice)
    if not check("setup: alice<->bob, alice<->carol, alice<->erin 'both'; "
                 "fan -> alice ('from' on alice's side)", ok,
                 "a subscription step did not complete"):
        return

    # --- contacts online before alice: bob (raw), fan, dan, erin (aioxmpp)
    b = login(srv, bob, "b", show="dnd", status="bob busy", priority=3)
    f = login(srv, fan, "f", status="fan here")
    d = login(srv, dan, "d", status="dan here")
    e = AioPeer(lt, srv, erin, "aio")
    err = e.start()
    check("aioxmpp contact logs in with initial presence", err is None,
          repr(err))
    e.set_presence(show="away", status="erin away", priority=2)
    for c in (b, f, d):
        c.ping()
        c.drain(0.2)

    # --- alice's initial presence (§4.2)
    a1 = login(srv, alice, "one", show="away", status="alice lunch",
               priority=5)
    p = b.wait(pres_with(a1.jid, "alice lunch"))
    check("initial presence reaches a 'both' contact from the full JID "
          "with show, status and priority (§4.2.2)",
          p is not None and show_of(p) == "away" and
          priority_of(p) == "5", tostr(p))
    p = f.wait(pres_with(a1.jid, "alice lunch"))
    check("initial presence reaches a contact with subscription 'from' "
          "on the user's side (§4.2.2)", p is not None, tostr(p))
    ev = e.events.wait(lambda x: x[0] == "presence" and x[2] == a1.jid
                       and x[4] == "alice lunch")
    check("aioxmpp contact sees the initial presence (PresenceClient) "
          "with show away and priority 5",
          ev is not None and ev[3] == "away" and ev[5] == 5, repr(ev))

    # --- probes answered at login (§4.3)
    p = a1.wait(pres_with(b.jid, "bob busy"))
    check("login: bob's last presence arrives (probe answered, §4.3.2) "
          "with show dnd and priority 3",
          p is not None and show_of(p) == "dnd" and priority_of(p) == "3",
          "%s; alice got %s" % (tostr(p), fmt(a1.queue)))
    p = a1.wait(pres_with(e.jid, "erin away"))
    # (No priority: aioxmpp 0.13's PresenceServer.make_stanza leaves the
    # priority it was given out of the stanza.)
    check("login: the aioxmpp contact's last presence arrives with show "
          "away (set by PresenceServer)", p is not None and
          show_of(p) == "away",
          "%s; alice got %s" % (tostr(p), fmt(a1.queue)))
    p = a1.wait(pres_with(a1.jid, "alice lunch"))
    check("login: the user's own initial presence comes back to the "
          "sending resource (§4.2.2: 'including the resource that "
          "generated the presence notification')", p is not None,
          "sent <presence><show>away</show><status>alice lunch</status>"
          "<priority>5</priority></presence> from %s; it got %s"
          % (a1.jid, fmt(a1.queue)))
    got = a1.quiet(lambda x: is_presence(frm_bare=jf)(x) or
                   is_presence(frm_bare=jc)(x) or
                   is_presence(frm_bare=jd)(x))
    check("login: no available presence from a contact the user is not "
          "subscribed to (fan), from an offline contact (carol) or from "
          "a stranger (dan) (§4.3.1)", not got, fmt(got))
    got = d.quiet(is_presence(frm=a1.jid), 0.1)
    check("initial presence does not reach a stranger (§4.2.2)",
          not got, fmt(got))
    unav = [x for x in a1.queue if is_presence(frm_bare=jc,
                                               type_="unavailable")(x)]
    note("probe of the offline contact answered with: %s" % (
        fmt(unav) or "nothing"))

    # --- show values and status text both ways (§4.7.2)
    for show, status in (("chat", "chatty"), ("dnd", "do not disturb"),
                         ("xa", "on holiday"), ("away", "back soon")):
        a1.presence(show=show, status=status, priority=5)
        p = b.wait(pres_with(a1.jid, status))
        check("show '%s' with status reaches the raw contact" % show,
              p is not None and show_of(p) == show and
              priority_of(p) == "5", tostr(p))
        ev = e.events.wait(lambda x: x[0] == "presence" and
                           x[2] == a1.jid and x[4] == status)
        check("show '%s' with status reaches the aioxmpp contact" % show,
              ev is not None and ev[1] == "changed" and ev[3] == show,
              repr(ev))
    a1.presence(status="plain", priority=5)
    p = b.wait(pres_with(a1.jid, "plain"))
    check("presence without <show/> arrives without <show/> (available)",
          p is not None and show_of(p) is None, tostr(p))
    e.set_presence(show="chat", status="erin chats", priority=2)
    p = a1.wait(pres_with(e.jid, "erin chats"))
    check("aioxmpp contact's change (show chat) reaches the user",
          p is not None and show_of(p) == "chat", tostr(p))
    b.presence(show="xa", status="bob xa", priority=3)
    p = a1.wait(pres_with(b.jid, "bob xa"))
    check("raw contact's change (show xa) reaches the user",
          p is not None and show_of(p) == "xa", tostr(p))
    f.presence(status="fan changed")
    got = a1.quiet(pres_with(f.jid, "fan changed"))
    check("a change of a contact the user is not subscribed to does not "
          "reach the user", not got, fmt(got))

    # --- own other resources
    a2 = login(srv, alice, "two", status="second", priority=1)
    p = a1.wait(pres_with(a2.jid, "second"))
    check("a second resource's initial presence reaches the first "
          "(§4.2.2)", p is not None and priority_of(p) == "1", tostr(p))
    p = a2.wait(pres_with(a1.jid, "plain"))
    check("the new resource gets the other resource's current presence",
          p is not None, "%s; it got %s" % (tostr(p), fmt(a2.queue)))
    p = b.wait(pres_with(a2.jid, "second"))
    check("the second resource's presence reaches the contact",
          p is not None, tostr(p))
    p = a2.wait(pres_with(b.jid, "bob xa"))
    check("the second resource gets the contact's presence too (probe)",
          p is not None and show_of(p) == "xa", tostr(p))

    # --- explicit unavailable with status (§4.5)
    a2.presence("unavailable", status="a2 off")
    p = a1.wait(pres_with(a2.jid, "a2 off", type_="unavailable"))
    check("explicit unavailable with status reaches the other resource",
          p is not None, tostr(p))
    p = b.wait(pres_with(a2.jid, "a2 off", type_="unavailable"))
    check("explicit unavailable with status reaches the contact "
          "(§4.5.2)", p is not None, tostr(p))
    a2.logout()
    got = b.quiet(is_presence(frm=a2.jid, any_type=True))
    check("closing the stream after unavailable sends no second "
          "unavailable", not got, fmt(got))

    # --- directed presence to a stranger (§4.6)
    a1.presence(to=d.jid, status="hello dan")
    p = d.wait(pres_with(a1.jid, "hello dan"))
    check("directed presence reaches a non-contact (§4.6)",
          p is not None, tostr(p))
    a3 = login(srv, alice, "three", status="a3 here")
    a3.presence(to=jd, status="to your bare JID")
    p = d.wait(pres_with(a3.jid, "to your bare JID"))
    check("directed presence to a bare JID reaches the available "
          "resource", p is not None, tostr(p))
    b.drain(0.2)
    d.drain(0.2)

    # --- logout with </stream:stream> (§4.5: the server generates it)
    a3.logout()
    p = b.wait(pres_with(a3.jid, type_="unavailable"))
    check("closing the stream without unavailable: contacts get "
          "unavailable (§4.5)", p is not None, tostr(p))
    if p is not None:
        check("... carrying the last status text",
              status_of(p) == "a3 here", tostr(p))
    p = d.wait(pres_with(a3.jid, type_="unavailable"))
    check("... and the stranger that got directed presence gets it "
          "too (§4.6)", p is not None, tostr(p))
    p = a1.wait(pres_with(a3.jid, type_="unavailable"))
    check("... and the user's other resource gets it", p is not None,
          tostr(p))

    # --- connection loss (§4.5): abortive close, no </stream:stream>
    a1.presence(status="in a meeting", show="dnd", priority=5)
    b.wait(pres_with(a1.jid, "in a meeting"))
    t0 = time.monotonic()
    a1.kill()
    p = b.wait(pres_with(a1.jid, type_="unavailable"))
    check("connection loss (TCP RST): contacts get unavailable "
          "(§4.5)", p is not None, tostr(p))
    if p is not None:
        note("unavailable after connection loss arrived in %.2f s"
             % (time.monotonic() - t0))
        check("... carrying the last status text ('in a meeting')",
              status_of(p) == "in a meeting", tostr(p))
    p = d.wait(pres_with(a1.jid, type_="unavailable"))
    check("... and the stranger that got directed presence gets it "
          "too (§4.6)", p is not None, tostr(p))
    ev = e.events.wait(lambda x: x[0] == "presence" and x[1] ==
                       "unavailable" and x[2] == a1.jid)
    check("... and the aioxmpp contact sees it (on_unavailable)",
          ev is not None, repr(ev))

    # --- an offline user's contact logs in: no stale available presence
    b.logout()
    b = login(srv, bob, "b2", status="bob back")
    got = b.quiet(lambda x: is_presence(frm_bare=ja)(x))
    check("a contact logging in after the user left gets no available "
          "presence from the user (probe: unavailable or nothing, §4.3.2)",
          all(x.get("type") == "unavailable" for x in got), fmt(got))
    e.stop()
    for c in (b, f, d):
        c.logout()


def fifty_contacts():
    n = 50
    hub = u("hub")
    ks = [u("k") for _ in range(n)]
    t0 = time.monotonic()
    jh = add_users(srv, hub)[0]
    jks = add_users(srv, *ks)
    t_users = time.monotonic() - t0
    h = login(srv, hub, "setup")
    cs = [login(srv, k, "k", status="k%d" % i) for i, k in enumerate(ks)]
    t_login = time.monotonic() - t0 - t_users
    # Both ways, pipelined: the hub asks all 50 at once.
    for jk in jks:
        h.presence("subscribe", to=jk)
    deadline = time.monotonic() + 30

    def left():
        return max(0.05, deadline - time.monotonic())
    asked = 0
    for c in cs:
        if c.wait(is_presence(frm=jh, type_="subscribe"), left()) \
                is not None:
            asked += 1
            c.presence("subscribed", to=jh)
            c.presence("subscribe", to=jh)
    reqs = h.collect(lambda x: is_presence(type_="subscribe")(x) and
                     x.get("from") in jks, n, left())
    for r in reqs:
        h.presence("subscribed", to=r.get("from"))
    both = sum(1 for c in cs if c.wait(
        lambda x: is_push(jh)(x) and roster_items(x)[jh].sub == "both",
        left()) is not None)
    t_subs = time.monotonic() - t0 - t_users - t_login
    ok = check("50 contacts: all 50 subscriptions made both ways through "
               "the protocol", asked == n and len(reqs) == n and both == n,
               "%d requests reached contacts, %d came back, %d contacts "
               "saw 'both'" % (asked, len(reqs), both))
    note("50 contacts: accounts %.1f s, logins %.1f s, subscriptions "
         "%.1f s" % (t_users, t_login, t_subs))
    h.logout()
    if not ok:
        for c in cs:
            c.logout()
        return
    for c in cs:
        c.drain(0)

    t1 = time.monotonic()
    h = login(srv, hub, "main", status="hub here")
    want = {c.jid: "k%d" % i for i, c in enumerate(cs)}
    got = h.collect(lambda x: is_presence()(x) and x.get("from") in want,
                    n, STEP * 2)
    seen = {x.get("from"): status_of(x) for x in got}
    check("50 contacts: a login sees the presence of all 50 online "
          "contacts, each with its own status (§4.3.2)",
          seen == want, "%d of 50; wrong: %s" % (
              len(seen), [(k, v) for k, v in seen.items()
                          if want.get(k) != v][:5]))
    note("50 contacts: login to 50 presences in %.2f s"
         % (time.monotonic() - t1))
    extra = h.quiet(lambda x: is_presence()(x) and x.get("from") in want,
                    0.3)
    check("50 contacts: each contact's presence arrives once", not extra,
          fmt(extra[:3]))

    t2 = time.monotonic()
    h.presence(show="away", status="hub away")
    reached = 0
    deadline = time.monotonic() + STEP * 2
    for c in cs:
        if c.wait(pres_with(h.jid, "hub away"), left()) is not None:
            reached += 1
    check("50 contacts: one presence change reaches all 50 (§4.4.2)",
          reached == n, "%d of 50" % reached)
    note("50 contacts: fan-out of one change to 50 in %.2f s"
         % (time.monotonic() - t2))
    h.logout()
    for c in cs:
        c.logout()
    note("50 contacts: %.1f s in all" % (time.monotonic() - t0))


def run():
    global srv
    srv = harness.Server()
    t0 = time.monotonic()
    if srv.start():
        lt = LoopThread()
        for part in (presence_flows, fifty_contacts):
            try:
                part(lt) if part is presence_flows else part()
            except Exception as e:  # noqa: BLE001 - report, don't crash
                import traceback
                traceback.print_exc()
                check("%s runs without exceptions" % part.__name__, False,
                      repr(e))
        lt.stop()
        check_namespaces()
    note("presence suite took %.1f s" % (time.monotonic() - t0))
    harness.finish()


if __name__ == "__main__":
    run()
