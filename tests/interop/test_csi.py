#!/usr/bin/python3
"""test_csi.py - client state indication (XEP-0352).

Raw sockets: <csi/> is offered after authentication; after <inactive/> a
contact's presence changes and chat states do not arrive; a message with
a body flushes the queue first, in order, with only the newest presence
of each sender, then itself; <active/> flushes what is held; max_held
forces a flush.  slixmpp (xep_0352) toggles its state and still gets its
messages.

Run with /usr/bin/python3; `scripts/run-tests test_csi`.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, tostr  # noqa: E402
from im_common import (ImClient, add_users, login,  # noqa: E402
                       make_both)

NS_CSI = "urn:xmpp:csi:0"
C = "{jabber:client}"


def kind(el):
    """A short name for what arrived, for order checks."""
    name = el.tag.split("}", 1)[1]
    if name == "presence":
        st = el.findtext(C + "status")
        return "presence:%s" % (el.get("type") or st or "")
    if name == "message":
        b = el.findtext(C + "body")
        if b is not None:
            return "body:%s" % b
        for ch in el:
            return "message:%s" % ch.tag.split("}", 1)[1]
    return name


def from_user(bare):
    return lambda e: (e.get("from") or "").split("/")[0] == bare


def main():
    srv = harness.Server(extra="csi: { max_held = 10; };")
    if not srv.start():
        check("parleyd starts", False, srv.dump_log())
        harness.finish()
    a, b = (harness.unique("csa"), harness.unique("csb"))
    ja, jb = add_users(srv, a, b)
    check("csi: users subscribed to each other", make_both(srv, a, b))

    ca = login(srv, a, "phone")
    check("csi: <csi xmlns='urn:xmpp:csi:0'/> offered after authentication",
          ca.features_after_auth is not None and
          ca.features_after_auth.find("{%s}csi" % NS_CSI) is not None,
          tostr(ca.features_after_auth))
    cb = login(srv, b, "desk")
    ca.drain(0.5)
    ca.send("<inactive xmlns='%s'/>" % NS_CSI)
    ca.ping()  # the state is set before B starts talking
    for st in ("one", "two", "three"):
        cb.presence(status=st)
    cb.send("<message to='%s' type='chat'><composing xmlns="
            "'http://jabber.org/protocol/chatstates'/></message>" % ja)
    held = ca.quiet(from_user(jb))
    check("csi: presence and chat states are held while inactive",
          held == [], str([kind(e) for e in held]))
    cb.message(ja, "hello")
    got = ca.collect(from_user(jb), 3)
    check("csi: a message with a body flushes the queue first, in order, "
          "with only the newest presence of the sender",
          # (presence broadcast waits for a roster read, so the chat
          # state may overtake it on the server: either order is right)
          sorted(kind(e) for e in got[:2]) == ["message:composing",
                                               "presence:three"] and
          [kind(e) for e in got[2:]] == ["body:hello"],
          str([kind(e) for e in got]))
    extra = ca.quiet(from_user(jb))
    check("csi: nothing else arrives", extra == [],
          str([kind(e) for e in extra]))

    cb.presence(status="four")
    held = ca.quiet(from_user(jb))
    check("csi: still inactive after a flush", held == [],
          str([kind(e) for e in held]))
    ca.send("<active xmlns='%s'/>" % NS_CSI)
    got = ca.collect(from_user(jb), 1)
    check("csi: <active/> flushes what is held",
          [kind(e) for e in got] == ["presence:four"],
          str([kind(e) for e in got]))
    cb.presence(status="five")
    got = ca.collect(from_user(jb), 1)
    check("csi: active again: presence arrives at once",
          [kind(e) for e in got] == ["presence:five"],
          str([kind(e) for e in got]))

    # max_held = 10: the 10th held stanza sends them all.
    ca.send("<inactive xmlns='%s'/>" % NS_CSI)
    ca.ping()
    for i in range(10):
        cb.send("<message to='%s' type='chat'><active xmlns="
                "'http://jabber.org/protocol/chatstates'/><thread>t%d</thread>"
                "</message>" % (ja, i))
    got = ca.collect(from_user(jb), 10)
    check("csi: max_held forces a flush", len(got) == 10, "%d" % len(got))
    ca.send("<iq type='get' id='v1' to='%s'><query xmlns='jabber:iq:version'"
            "/></iq>" % srv.domain)
    el = ca.wait(lambda e: e.get("id") == "v1")
    check("csi: IQs are never held", el is not None and
          el.get("type") == "result", tostr(el))
    ca.logout()
    cb.logout()

    # slixmpp's plugin.
    import asyncio
    import slixmpp
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    x = slixmpp.ClientXMPP(ja + "/slix", "im-pass-1")
    harness.slixmpp_without_channel_binding(x, None)
    x.ssl_context = harness.no_verify_context()
    x.use_ipv6 = False
    x.register_plugin("xep_0352")
    box = asyncio.Queue()
    x.add_event_handler("message", lambda m: box.put_nowait(m["body"]))
    started = loop.create_future()
    x.add_event_handler("session_start",
                        lambda *_: started.done() or started.set_result(1))

    async def run():
        x.connect((srv.host, srv.starttls_port))
        await asyncio.wait_for(started, 15)
        x.send_presence()
        x.plugin["xep_0352"].send_inactive()
        c2 = ImClient(srv, b, "slixpeer")
        c2.message(ja + "/slix", "wake up")
        body = await asyncio.wait_for(box.get(), 10)
        check("slixmpp: an inactive client still gets messages",
              body == "wake up", body)
        x.plugin["xep_0352"].send_active()
        c2.logout()
        await asyncio.wait_for(x.disconnect(), 10)

    try:
        loop.run_until_complete(asyncio.wait_for(run(), 40))
    except Exception as e:
        check("slixmpp: csi run", False, repr(e))
    harness.finish()


if __name__ == "__main__":
    main()
