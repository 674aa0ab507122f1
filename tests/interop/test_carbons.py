#!/usr/bin/python3
"""test_carbons.py - XEP-0280 Message Carbons end to end.

Alice has three resources (a1 priority 5, a2 and a3 priority 0); a1 and a2
enable carbons, a3 does not; Bob has one.  Checked with raw XML: the
feature in disco#info; enable/disable results (twice is no error);
<received/> copies of messages to the bare JID and to a full JID go to
exactly the carbons-enabled resources that did not get the message, once
each, with 'from' the bare JID, 'to' the full JID and the original inside
<forwarded/>; <sent/> copies of a resource's messages go to the other
enabled resources, even from a resource without carbons; <private/> and
XEP-0334 <no-copy/> stop copies and <private/> is removed before delivery;
groupchat, normal without body, and MUC private messages (muc#user) are
not copied, a chat-state-only chat message is; an error to a copied
message is copied; a disabled resource gets nothing; a message stored
offline makes no copies.  Then slixmpp (xep_0280) and aioxmpp
(aioxmpp.carbons) enable carbons and see a copy.

Run with /usr/bin/python3; `scripts/run-tests carbons`.
"""

import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, tostr  # noqa: E402
from im_common import (PW, QUIET, STEP, LoopThread, add_users,  # noqa: E402
                       bare_of, login)

NS = "urn:xmpp:carbons:2"
FWD = "urn:xmpp:forward:0"
C = "{jabber:client}"


def carbon(kind, body=None):
    """A <received/> or <sent/> wrapper (optionally with that body)."""
    def pred(el):
        if el.tag != C + "message":
            return False
        w = el.find("{%s}%s" % (NS, kind))
        if w is None:
            return False
        if body is None:
            return True
        m = w.find("{%s}forwarded/%smessage" % (FWD, C))
        return m is not None and m.findtext(C + "body") == body
    return pred


def any_carbon(el):
    return el.tag == C + "message" and (
        el.find("{%s}received" % NS) is not None or
        el.find("{%s}sent" % NS) is not None)


def plain(body):
    return lambda el: el.tag == C + "message" and \
        el.findtext(C + "body") == body


def inner(el, kind):
    return el.find("{%s}%s/{%s}forwarded/%smessage" % (NS, kind, FWD, C))


def enable(c, on=True):
    r = c.request("<%s xmlns='%s'/>" % ("enable" if on else "disable", NS),
                  "set")
    return r is not None and r.get("type") == "result", tostr(r)


def main():
    global srv
    srv = harness.Server(label="carbons")
    if not check("parleyd starts", srv.start()):
        return
    alice, bob = harness.unique("alice"), harness.unique("bob")
    aj, bj = add_users(srv, alice, bob)
    a1 = login(srv, alice, "a1", priority=5)
    a2 = login(srv, alice, "a2", priority=0)
    a3 = login(srv, alice, "a3", priority=0)
    b1 = login(srv, bob, "b1")
    for c in (a1, a2, a3, b1):
        c.drain(0.5)

    info = a1.request("<query xmlns='http://jabber.org/protocol/disco#info'/>",
                      to=srv.domain)
    feats = [f.get("var") for f in info.iter(
        "{http://jabber.org/protocol/disco#info}feature")] if info is not None \
        else []
    check("server disco#info has urn:xmpp:carbons:2", NS in feats, feats)

    ok, d = enable(a1)
    check("a1 enables carbons", ok, d)
    ok, d = enable(a2)
    check("a2 enables carbons", ok, d)
    ok, d = enable(a2)
    check("a second enable is answered with a result (§8.1)", ok, d)
    r = a1.request("<enable xmlns='%s'/>" % NS, "set", to=bj)
    check("enabling someone else's carbons is refused",
          r is not None and r.get("type") == "error", tostr(r))

    def exactly(c, pred, n, name):
        got = c.collect(pred, n, STEP) if n else []
        extra = c.quiet(pred, QUIET)
        check(name, len(got) == n and not extra,
              "got %d then %d more: %s" % (len(got), len(extra),
                                           [tostr(e)[:300] for e in
                                            got + extra]))
        return got

    # To the bare JID: a1 (highest priority) gets it, a2 a copy, a3 none.
    b1.message(aj, "m-bare", msg_id="mb1")
    exactly(a1, plain("m-bare"), 1, "bare JID: a1 gets the message once")
    exactly(a1, any_carbon, 0, "bare JID: a1 gets no copy")
    got = exactly(a2, carbon("received", "m-bare"), 1,
                  "bare JID: a2 gets exactly one <received/> copy")
    if got:
        w = got[0]
        m = inner(w, "received")
        check("copy is from the bare JID, to the full JID, type kept",
              w.get("from") == aj and w.get("to") == aj + "/a2" and
              w.get("type") == "chat", tostr(w))
        check("forwarded message keeps from/to/id of the original",
              m is not None and bare_of(m.get("from")) == bj and
              m.get("to") == aj and m.get("id") == "mb1", tostr(w))
    exactly(a2, plain("m-bare"), 0, "bare JID: a2 gets no plain message")
    exactly(a3, lambda e: e.tag == C + "message", 0,
            "bare JID: a3 (carbons off, lower priority) gets nothing")

    # To a full JID.
    b1.message(aj + "/a3", "m-full")
    exactly(a3, plain("m-full"), 1, "full JID: a3 gets the message")
    exactly(a3, any_carbon, 0, "full JID: a3 (disabled) gets no copy")
    exactly(a1, carbon("received", "m-full"), 1,
            "full JID: a1 gets one <received/> copy")
    exactly(a2, carbon("received", "m-full"), 1,
            "full JID: a2 gets one <received/> copy")

    # Sent copies, from a resource without carbons.
    a3.message(bj, "m-sent")
    exactly(b1, plain("m-sent"), 1, "bob gets a3's message")
    for c, n in ((a1, "a1"), (a2, "a2")):
        got = exactly(c, carbon("sent", "m-sent"), 1,
                      "%s gets one <sent/> copy of a3's message" % n)
        if got:
            m = inner(got[0], "sent")
            check("%s: sent copy wraps the message from a3 to bob" % n,
                  m is not None and m.get("from") == aj + "/a3" and
                  m.get("to") == bj and got[0].get("from") == aj, tostr(
                      got[0]))
    exactly(a3, any_carbon, 0, "the sender gets no copy of its own message")
    a1.message(bj, "m-sent2")
    exactly(a2, carbon("sent", "m-sent2"), 1, "a2 gets a1's sent copy")
    exactly(a1, any_carbon, 0, "a1 (sender, enabled) gets no copy")
    b1.drain(0.3)

    # private + no-copy (§8).
    a1.message(bj, "m-private", extra="<private xmlns='%s'/>"
               "<no-copy xmlns='urn:xmpp:hints'/>" % NS)
    got = b1.collect(plain("m-private"), 1, STEP)
    check("bob gets the private message", len(got) == 1, got)
    if got:
        check("<private/> is removed before delivery (§8)",
              got[0].find("{%s}private" % NS) is None, tostr(got[0]))
    exactly(a2, any_carbon, 0, "private message: no sent copy")
    b1.message(aj, "m-private-in", extra="<private xmlns='%s'/>" % NS)
    exactly(a1, plain("m-private-in"), 1, "a1 gets bob's private message")
    exactly(a2, any_carbon, 0, "incoming private message: no copy")
    b1.message(aj, "m-nocopy", extra="<no-copy xmlns='urn:xmpp:hints'/>")
    exactly(a1, plain("m-nocopy"), 1, "a1 gets a no-copy message")
    exactly(a2, any_carbon, 0, "XEP-0334 <no-copy/>: no copy")

    # Eligibility.
    b1.message(aj, "m-normal", type_="normal")
    exactly(a2, carbon("received", "m-normal"), 1,
            "normal message with a body is copied")
    a1.drain(0.3)
    b1.send("<message to='%s' type='normal'><x xmlns='urn:example'/>"
            "</message>" % aj)
    exactly(a2, any_carbon, 0, "normal message without body: no copy")
    b1.send("<message to='%s' type='chat'><composing xmlns="
            "'http://jabber.org/protocol/chatstates'/></message>" % aj)
    exactly(a2, carbon("received"), 1, "chat state notification is copied")
    b1.message(aj, "m-head", type_="headline")
    exactly(a2, any_carbon, 0, "headline message: no copy")
    b1.message(aj + "/a1", "m-mucpm",
               extra="<x xmlns='http://jabber.org/protocol/muc#user'/>")
    exactly(a1, plain("m-mucpm"), 1, "a1 gets the MUC private message")
    exactly(a2, any_carbon, 0, "incoming MUC private message: no copy")
    b1.message(aj + "/a1", "m-invite", type_="normal",
               extra="<x xmlns='jabber:x:conference' jid='r@muc.example'/>")
    exactly(a2, carbon("received", "m-invite"), 1,
            "direct MUC invitation is copied")

    # An error to a copied message is copied too.
    a1.drain(0.3)
    b1.drain(0.3)
    a1.message(bj, "m-err", msg_id="err-1")
    exactly(a2, carbon("sent", "m-err"), 1, "a2 gets the sent copy")
    b1.send("<message to='%s' type='error' id='err-1'><error type='cancel'>"
            "<item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"
            "</error></message>" % (aj + "/a1"))
    got = exactly(a2, carbon("received"), 1,
                  "error answering a copied message is copied")
    b1.send("<message to='%s' type='error' id='other-9'><error type='cancel'>"
            "<item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"
            "</error></message>" % (aj + "/a1"))
    exactly(a2, any_carbon, 0, "an unrelated error is not copied")

    # Disable.
    ok, d = enable(a2, False)
    check("a2 disables carbons", ok, d)
    ok, d = enable(a2, False)
    check("a second disable is answered with a result", ok, d)
    b1.message(aj + "/a3", "m-after-disable")
    exactly(a1, carbon("received", "m-after-disable"), 1,
            "a1 (enabled) still gets copies")
    exactly(a2, any_carbon, 0, "a2 (disabled) gets no copy")

    # Offline storage makes no copies: a carbons-enabled session that is
    # not available does not receive messages to the bare JID.
    for c in (a1, a2, a3):
        c.logout()
    a4 = login(srv, alice, "a4", presence=False)
    ok, d = enable(a4)
    check("a4 (no presence) enables carbons", ok, d)
    b1.message(aj, "m-offline")
    exactly(a4, lambda e: e.tag == C + "message", 0,
            "a message stored offline makes no <received/> copy")
    a4.presence()
    got = a4.collect(plain("m-offline"), 1, STEP)
    check("the stored message arrives with available presence",
          len(got) == 1, got)
    a4.logout()

    # slixmpp and aioxmpp.
    lt = LoopThread()
    try:
        slix_test(lt, aj, b1)
        aio_test(lt, aj, b1)
    finally:
        lt.stop()
    b1.logout()


def slix_test(lt, aj, b1):
    import slixmpp
    got = []
    ready = asyncio.run_coroutine_threadsafe(_slix(lt, aj, got), lt.loop)
    try:
        client = ready.result(STEP * 3)
    except Exception as e:  # noqa: BLE001
        check("slixmpp logs in and enables carbons (xep_0280)", False, e)
        return
    check("slixmpp logs in and enables carbons (xep_0280)", True)
    r1 = login(srv, aj.split("@")[0], "r1", priority=10)
    r1.drain(0.3)
    b1.message(aj, "m-slix")
    # A second message's copy comes after anything more about the first.
    b1.message(aj, "m-slix-2")
    harness.wait_for(lambda: ("received", "m-slix-2") in got, STEP)
    before = got[:got.index(("received", "m-slix-2"))] \
        if ("received", "m-slix-2") in got else got
    check("slixmpp gets one carbon_received copy of the message to r1",
          before == [("received", "m-slix")], got)
    r1.logout()
    lt.run(_slix_stop(client))
    del slixmpp


async def _slix(lt, aj, got):
    import slixmpp
    x = slixmpp.ClientXMPP(aj + "/slix", PW)
    harness.slixmpp_without_channel_binding(x)
    x.ssl_context = harness.no_verify_context()
    x.register_plugin("xep_0280")
    x.enable_direct_tls = True
    fut = asyncio.get_event_loop().create_future()

    async def start(_):
        x.send_presence()
        await x.plugin["xep_0280"].enable()
        fut.set_result(x)
    x.add_event_handler("session_start", start)
    x.add_event_handler("carbon_received",
                        lambda m: got.append(("received", m["carbon_received"]
                                              ["body"])))
    x.add_event_handler("message",
                        lambda m: m["body"] and got.append(
                            ("message", m["body"])))
    x.connect((srv.host, srv.direct_port), use_ssl=True)
    return await asyncio.wait_for(fut, STEP * 2)


async def _slix_stop(x):
    await asyncio.wait_for(x.disconnect(), STEP)


def aio_test(lt, aj, b1):
    import aioxmpp
    import aioxmpp.carbons
    import aioxmpp.connector
    import logging
    state = {}

    async def go():
        client = aioxmpp.Client(
            aioxmpp.JID.fromstr(aj + "/aio"),
            aioxmpp.make_security_layer(PW, no_verify=True),
            override_peer=[(srv.host, srv.direct_port,
                            aioxmpp.connector.XMPPOverTLSConnector())],
            logger=logging.getLogger("aioxmpp.carbons-test"))
        carbons = client.summon(aioxmpp.carbons.CarbonsClient)
        got = asyncio.Queue()

        def on_msg(msg):
            got.put_nowait(msg)
        client.stream.register_message_callback(None, None, on_msg)
        cm = client.connected(presence=aioxmpp.PresenceState(True))
        await asyncio.wait_for(cm.__aenter__(), STEP)
        state["cm"] = cm
        await carbons.enable()
        return got

    try:
        q = lt.run(go())
    except Exception as e:  # noqa: BLE001
        check("aioxmpp logs in and enables carbons (aioxmpp.carbons)", False,
              repr(e))
        return
    check("aioxmpp logs in and enables carbons (aioxmpp.carbons)", True)
    r1 = login(srv, aj.split("@")[0], "r1", priority=10)
    r1.drain(0.3)
    b1.message(aj, "m-aio")

    async def first():
        return await asyncio.wait_for(q.get(), STEP)
    try:
        msg = lt.run(first())
        rec = getattr(msg, "xep0280_received", None)
        fwd = rec.stanza if rec is not None else None
        body = fwd.body.any() if fwd is not None and fwd.body else None
        check("aioxmpp gets a <received/> copy of the message to r1",
              body == "m-aio" and str(msg.from_) == aj, repr(body))
    except Exception as e:  # noqa: BLE001
        check("aioxmpp gets a <received/> copy of the message to r1", False,
              repr(e))
    r1.logout()

    async def stop():
        await asyncio.wait_for(state["cm"].__aexit__(None, None, None), 5)
    try:
        lt.run(stop())
    except Exception:  # noqa: BLE001
        pass


srv = None
try:
    main()
except Exception as e:  # noqa: BLE001
    import traceback
    check("test ran to the end", False, traceback.format_exc()[-1500:])
harness.finish()
