#!/usr/bin/python3
"""test_blocking.py - XEP-0191 Blocking Command end to end.

Alice (resources r1 and r2 asked for the blocklist, r3 did not) and Bob
are subscribed to each other; Carol is a third user.  Checked with raw
XML: feature; empty list; block result and pushes to exactly r1 and r2;
Bob gets unavailable presence from each of Alice's resources; his
message gets <service-unavailable/>, his IQ get too, his presence is
dropped silently; Alice's message to him gets <not-acceptable/> with
<blocked xmlns='urn:xmpp:blocking:errors'/>; Alice's presence updates
are hidden from him; a full-JID item blocks that resource only; a domain
item blocks every JID there; bad requests get <bad-request/> and
<jid-malformed/>; past max_items <not-allowed/>; messages to an offline
Alice from Bob are refused before offline storage; unblock pushes and
restores presence and messages; the list survives a restart; unblock
all empties it.  slixmpp (xep_0191) and aioxmpp (aioxmpp.blocking) read
and change the same list.

Run with /usr/bin/python3; `scripts/run-tests blocking`.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, tostr  # noqa: E402
from im_common import (PW, QUIET, STEP, LoopThread, add_users,  # noqa: E402
                       error_of, is_presence, login, make_both)

NS = "urn:xmpp:blocking"
C = "{jabber:client}"
B = "{%s}" % NS


def blocklist(c):
    r = c.request("<blocklist xmlns='%s'/>" % NS)
    if r is None or r.get("type") != "result":
        return None, r
    return sorted(i.get("jid") for i in r.iter(B + "item")), r


def block(c, *jids, op="block"):
    items = "".join("<item jid='%s'/>" % j for j in jids)
    return c.request("<%s xmlns='%s'>%s</%s>" % (op, NS, items, op), "set")


def is_bpush(op):
    return lambda el: el.tag == C + "iq" and el.get("type") == "set" and \
        el.find(B + op) is not None


def msg(body):
    return lambda el: el.tag == C + "message" and \
        el.findtext(C + "body") == body


def app_error(el, ns, name):
    e = el.find(C + "error") if el is not None else None
    return e is not None and e.find("{%s}%s" % (ns, name)) is not None


def main():
    global srv
    srv = harness.Server(label="blocking",
                         extra="blocking: { max_items = 6; };")
    if not check("parleyd starts", srv.start()):
        return
    alice, bob, carol = (harness.unique(n) for n in ("alice", "bob",
                                                     "carol"))
    aj, bj, cj = add_users(srv, alice, bob, carol)
    check("alice and bob subscribe to each other", make_both(srv, alice,
                                                             bob))
    b1 = login(srv, bob, "b1")
    r1 = login(srv, alice, "r1")
    r2 = login(srv, alice, "r2")
    r3 = login(srv, alice, "r3")
    c1 = login(srv, carol, "c1")
    c2 = login(srv, carol, "c2")
    for c in (b1, r1, r2, r3, c1, c2):
        c.drain(0.5)

    info = r1.request("<query xmlns='http://jabber.org/protocol/disco#info'/>",
                      to=srv.domain)
    check("server disco#info has urn:xmpp:blocking",
          info is not None and any(f.get("var") == NS for f in info.iter(
              "{http://jabber.org/protocol/disco#info}feature")), tostr(info))
    lst, r = blocklist(r1)
    check("empty blocklist at first", lst == [], tostr(r))
    lst, r = blocklist(r2)

    r = block(r1, bj)
    check("block bob: result", r is not None and r.get("type") == "result",
          tostr(r))
    for c, n in ((r1, "r1"), (r2, "r2")):
        p = c.collect(is_bpush("block"), 2, STEP)
        check("%s (asked for the list) gets one block push naming bob" % n,
              len(p) == 1 and [i.get("jid") for i in p[0].iter(
                  B + "item")] == [bj], [tostr(x) for x in p])
    check("r3 (never asked for the list) gets no push",
          not r3.quiet(is_bpush("block")))
    un = b1.collect(is_presence(frm_bare=aj, type_="unavailable"), 3, STEP)
    check("bob gets unavailable presence from each of alice's 3 resources",
          sorted(p.get("from") for p in un) ==
          sorted(aj + "/" + x for x in ("r1", "r2", "r3")),
          [tostr(p) for p in un])

    b1.message(aj, "hello-blocked")
    e = b1.wait(lambda el: el.tag == C + "message" and
                el.get("type") == "error")
    check("bob's message to alice gets <service-unavailable/>",
          error_of(e) == "service-unavailable", tostr(e))
    check("alice gets nothing of it",
          not any(c.quiet(msg("hello-blocked"), 0.3) for c in (r1, r2, r3)))
    iq = b1.request("<ping xmlns='urn:xmpp:ping'/>", to=aj + "/r1")
    check("bob's IQ get to alice gets <service-unavailable/>",
          iq is not None and error_of(iq) == "service-unavailable",
          tostr(iq))
    iq = b1.request("<vCard xmlns='vcard-temp'/>", to=aj)
    check("bob's IQ get to alice's bare JID (vCard) gets "
          "<service-unavailable/>",
          iq is not None and error_of(iq) == "service-unavailable",
          tostr(iq))
    b1.presence(to=aj, status="directed")
    check("bob's presence is dropped silently",
          not r1.quiet(is_presence(frm_bare=bj, any_type=True)) and
          not b1.quiet(lambda el: el.get("type") == "error", 0.3))

    r1.message(bj, "to-blocked", msg_id="tb1")
    e = r1.wait(lambda el: el.tag == C + "message" and
                el.get("type") == "error")
    check("alice's message to bob: <not-acceptable/> + <blocked/>",
          error_of(e) == "not-acceptable" and
          app_error(e, "urn:xmpp:blocking:errors", "blocked") and
          e.get("id") == "tb1", tostr(e))
    check("bob does not get it", not b1.quiet(msg("to-blocked"), 0.3))
    iq = r1.request("<ping xmlns='urn:xmpp:ping'/>", to=bj + "/b1")
    check("alice's IQ to bob: <not-acceptable/> + <blocked/>",
          error_of(iq) == "not-acceptable" and
          app_error(iq, "urn:xmpp:blocking:errors", "blocked"), tostr(iq))
    r2.presence(status="busy now")
    check("alice's presence update is hidden from bob",
          not b1.quiet(is_presence(frm_bare=aj, any_type=True)))
    r3.drain(0.2)

    # Full JID item and domain item; bad requests.
    r = block(r1, cj + "/c1")
    check("block carol/c1: result", r is not None and
          r.get("type") == "result", tostr(r))
    c1.message(aj + "/r3", "from-c1")
    c2.message(aj + "/r3", "from-c2")
    got = r3.collect(lambda el: el.tag == C + "message", 2, STEP)
    bodies = [g.findtext(C + "body") for g in got]
    check("a full-JID item blocks that resource only",
          bodies == ["from-c2"], bodies)
    e = c1.wait(lambda el: el.get("type") == "error")
    check("carol/c1 gets <service-unavailable/>",
          error_of(e) == "service-unavailable", tostr(e))
    r = block(r1)
    check("block without items: <bad-request/>",
          error_of(r) == "bad-request", tostr(r))
    r = block(r1, "a@b@c")
    check("block of a malformed JID: <jid-malformed/>",
          error_of(r) == "jid-malformed", tostr(r))
    r = block(r1, "spam.example")
    check("block a domain: result", r is not None and
          r.get("type") == "result", tostr(r))
    lst, _ = blocklist(r1)
    check("blocklist lists the three items",
          lst == sorted([bj, cj + "/c1", "spam.example"]), lst)
    r = block(r1, "x1@spam.example", "x2@ex.example", "x3@ex.example",
              "x4@ex.example")
    check("past max_items (6): <not-allowed/>",
          error_of(r) == "not-allowed", tostr(r))
    lst, _ = blocklist(r1)
    check("a refused block changes nothing", len(lst) == 3, lst)
    for c in (r1, r2, r3):
        c.drain(0.3)

    # Offline: refused before offline storage.
    for c in (r1, r2, r3):
        c.logout()
    b1.message(aj, "while-offline")
    e = b1.wait(lambda el: el.get("type") == "error")
    check("message from bob to offline alice: <service-unavailable/>",
          error_of(e) == "service-unavailable", tostr(e))
    c2.message(aj, "carol-offline")

    # Restart: the list is durable.
    srv.stop()
    for c in (b1, c1, c2):
        c.close()
    check("parleyd restarts", srv.start())
    r1 = login(srv, alice, "r1")
    got = r1.collect(lambda el: el.tag == C + "message", 2, STEP)
    bodies = [g.findtext(C + "body") for g in got]
    check("offline store has carol's message and not bob's",
          bodies == ["carol-offline"], bodies)
    lst, r = blocklist(r1)
    check("blocklist survives a restart",
          lst == sorted([bj, cj + "/c1", "spam.example"]), tostr(r))
    r2 = login(srv, alice, "r2")
    blocklist(r2)
    b1 = login(srv, bob, "b1")
    b1.drain(0.5)
    r1.drain(0.3)
    b1.message(aj, "after-restart")
    e = b1.wait(lambda el: el.get("type") == "error")
    check("after restart bob is still blocked",
          error_of(e) == "service-unavailable", tostr(e))

    # Unblock bob.
    r = block(r1, bj, op="unblock")
    check("unblock bob: result", r is not None and
          r.get("type") == "result", tostr(r))
    for c, n in ((r1, "r1"), (r2, "r2")):
        p = c.collect(is_bpush("unblock"), 1, STEP)
        check("%s gets the unblock push" % n, len(p) == 1 and
              [i.get("jid") for i in p[0].iter(B + "item")] == [bj],
              [tostr(x) for x in p])
    pres = b1.collect(is_presence(frm_bare=aj), 2, STEP)
    check("bob gets alice's current presence again (both resources)",
          sorted(p.get("from") for p in pres) ==
          [aj + "/r1", aj + "/r2"], [tostr(p) for p in pres])
    b1.message(aj + "/r1", "unblocked")
    check("bob's messages reach alice again",
          r1.wait(msg("unblocked")) is not None)

    # slixmpp and aioxmpp on the same list.
    lt = LoopThread()
    try:
        lib_tests(lt, aj, bj, cj)
    finally:
        lt.stop()

    r2.drain(0.5)
    r = r1.request("<unblock xmlns='%s'/>" % NS, "set")
    check("unblock all: result", r is not None and
          r.get("type") == "result", tostr(r))
    p = r2.wait(is_bpush("unblock"))
    check("unblock-all push is an empty <unblock/>",
          p is not None and len(list(p.find(B + "unblock"))) == 0, tostr(p))
    lst, _ = blocklist(r1)
    check("blocklist empty after unblock all", lst == [], lst)
    for c in (r1, r2, b1):
        c.logout()


def lib_tests(lt, aj, bj, cj):
    import asyncio

    async def slix():
        import slixmpp
        x = slixmpp.ClientXMPP(aj + "/slix", PW)
        harness.slixmpp_without_channel_binding(x)
        x.ssl_context = harness.no_verify_context()
        x.register_plugin("xep_0191")
        fut = asyncio.get_event_loop().create_future()

        async def start(_):
            try:
                got = await x.plugin["xep_0191"].get_blocked()
                await x.plugin["xep_0191"].block(["troll@ex.example"])
                after = await x.plugin["xep_0191"].get_blocked()
                fut.set_result((
                    sorted(str(j) for j in got["blocklist"]["items"]),
                    sorted(str(j) for j in after["blocklist"]["items"])))
            except Exception as e:  # noqa: BLE001
                fut.set_exception(e)
        x.add_event_handler("session_start", start)
        x.connect((srv.host, srv.direct_port), use_ssl=True)
        try:
            return await asyncio.wait_for(fut, STEP * 2)
        finally:
            x.disconnect()
    try:
        before, after = lt.run(slix(), STEP * 3)
        check("slixmpp get_blocked reads the list",
              before == sorted([cj + "/c1", "spam.example"]), before)
        check("slixmpp block adds to it",
              after == sorted([cj + "/c1", "spam.example",
                               "troll@ex.example"]), after)
    except Exception as e:  # noqa: BLE001
        check("slixmpp xep_0191 works", False, repr(e))

    async def aio():
        import aioxmpp
        import aioxmpp.blocking
        import aioxmpp.connector
        import logging
        client = aioxmpp.Client(
            aioxmpp.JID.fromstr(aj + "/aio"),
            aioxmpp.make_security_layer(PW, no_verify=True),
            override_peer=[(srv.host, srv.direct_port,
                            aioxmpp.connector.XMPPOverTLSConnector())],
            logger=logging.getLogger("aioxmpp.blocking-test"))
        bc = client.summon(aioxmpp.blocking.BlockingClient)
        got = asyncio.get_event_loop().create_future()
        bc.on_initial_blocklist_received.connect(
            lambda jids: got.done() or got.set_result(set(jids)))
        pushed = asyncio.get_event_loop().create_future()
        bc.on_jids_unblocked.connect(
            lambda jids: pushed.done() or pushed.set_result(set(jids)))
        async with client.connected():
            initial = await asyncio.wait_for(got, STEP)
            await bc.unblock_jids([aioxmpp.JID.fromstr("troll@ex.example")])
            await asyncio.wait_for(pushed, STEP)  # the unblock push
            return (sorted(str(j) for j in initial),
                    sorted(str(j) for j in bc.blocklist))
    try:
        initial, after = lt.run(aio(), STEP * 3)
        check("aioxmpp BlockingClient receives the initial list",
              "troll@ex.example" in initial, initial)
        check("aioxmpp unblock_jids removes an item (push seen)",
              after == sorted([cj + "/c1", "spam.example"]), after)
    except Exception as e:  # noqa: BLE001
        check("aioxmpp.blocking works", False, repr(e))


srv = None
try:
    main()
except Exception:  # noqa: BLE001
    import traceback
    check("test ran to the end", False, traceback.format_exc()[-1500:])
harness.finish()
