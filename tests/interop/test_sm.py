#!/usr/bin/python3
"""test_sm.py - stream management (XEP-0198) on raw sockets, then with
slixmpp and aioxmpp.

Raw: the <sm/> feature after authentication; <enable/> before binding and
twice gets <failed><unexpected-request/>; <enabled/> carries id, resume
and max; <r/> is answered with the count of handled stanzas; the server
asks for acks after sending; an <a/> acknowledging more than was sent
ends the stream with <undefined-condition/> and <handled-count-too-high/>.
Resumption after an abortive TCP close: <resumed h/> tells what the server
handled, everything the client did not acknowledge (including what
arrived while it was away) is sent again, in order, once, and the session
keeps its full JID without a new bind; unknown ids and another account's
ids get <failed><item-not-found/>, after which binding works; resuming
while the old connection is still open closes that one with <conflict/>.
When resumption times out, or the client closes its stream, unacknowledged
messages go to offline storage and come at the next login, once.  A
SIGKILL of parleyd with a message unacknowledged by a stream-managed
client: after the restart it is delivered, once.

slixmpp (xep_0198) resumes after its transport drops; aioxmpp negotiates
stream management and resumes on its own.

Run with /usr/bin/python3; `scripts/run-tests test_sm`.
"""

import asyncio
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, tostr  # noqa: E402
from im_common import (PW, STEP, ImClient, add_users,  # noqa: E402
                       is_message)
from sm_common import NS_SM, SM, SmClient  # noqa: E402

C = "{jabber:client}"


def failed_cond(el):
    if el is None or el.tag != SM + "failed":
        return None
    for ch in el:
        return ch.tag.split("}", 1)[1]
    return ""


def bodies(els):
    return [e.findtext(C + "body") for e in els]


def msgs_from(bare):
    return is_message(frm_bare=bare)


def stream_error(c):
    c.read_until_closed(STEP)
    raw = c.raw.decode("utf-8", "replace")
    i = raw.rfind("<stream:error")
    return raw[i:] if i >= 0 else ""


def test_basics(srv):
    a, = add_users(srv, harness.unique("smb"))
    user = a.split("@")[0]
    c = SmClient(srv, user, login=False)
    c.connect_tls()
    el = c.auth_plain(user, PW)
    feats = c.restart()
    check("sm: <sm xmlns='urn:xmpp:sm:3'/> offered after authentication",
          feats is not None and feats.find(SM + "sm") is not None,
          tostr(feats))
    el = c.enable()
    check("sm: <enable/> before binding gets <failed><unexpected-request/>",
          failed_cond(el) == "unexpected-request", tostr(el))
    c.bind("r")
    el = c.enable()
    check("sm: <enabled/> with id, resume='true' and max",
          el is not None and el.tag == SM + "enabled" and el.get("id") and
          el.get("resume") in ("true", "1") and
          0 < int(el.get("max") or 0) <= 300, tostr(el))
    el = c.enable()
    check("sm: a second <enable/> gets <failed><unexpected-request/>",
          failed_cond(el) == "unexpected-request", tostr(el))
    for _ in range(3):
        c.ping()
    c.send("<r xmlns='%s'/>" % NS_SM)
    el = c.wait(lambda e: e.tag == SM + "a")
    check("sm: <r/> answered with h = stanzas handled since <enable/> (3)",
          el is not None and el.get("h") == "3", tostr(el))
    # The server asks for acks after sending (here, the ping results).
    check("sm: the server sends <r/> after its stanzas", c.requests >= 1,
          "%d requests" % c.requests)
    c.ack(c.h_in + 5)
    err = stream_error(c)
    check("sm: acking more than was sent ends the stream with "
          "<undefined-condition/> and <handled-count-too-high/>",
          "undefined-condition" in err and "handled-count-too-high" in err
          and "send-count='%d'" % c.h_in in err, err[:300])
    c.close()


def test_resume(srv):
    a, b = add_users(srv, harness.unique("sma"), harness.unique("smc"))
    ua, ub = a.split("@")[0], b.split("@")[0]
    ca = SmClient(srv, ua, "phone")
    full = ca.jid
    en = ca.enable()
    smid = en.get("id") if en is not None else None
    cb = ImClient(srv, ub, "desk")
    cb.presence()
    for i in range(2):
        cb.message(full, "m%d" % i)
    got = ca.collect(msgs_from(b), 2)
    check("sm: messages arrive on the managed stream", len(got) == 2,
          str(bodies(got)))
    ca.ack(1)             # acknowledge m0 only
    ca.ping()             # the ack is processed before the loss
    sent_by_a = 1         # stanzas A sent after <enable/>: the ping
    mark = srv.log_size()
    ca.kill()
    check("sm: the server holds the session after the loss",
          srv.wait_log(re.escape(full) + ": connection lost, waiting",
                       mark, STEP), "not in the log")
    for i in range(2, 5):
        cb.message(full, "m%d" % i)
    cb.ping()
    ca2 = SmClient(srv, ua, login=False)
    ca2.authenticate()
    # As if m1 and the ping result had been lost with the connection.
    el = ca2.resume(smid, 1)
    check("sm: <resume/> gets <resumed/> with h = what the server handled",
          el is not None and el.tag == SM + "resumed" and
          el.get("previd") == smid and el.get("h") == str(sent_by_a),
          tostr(el))
    got = ca2.collect(msgs_from(b), 4)
    check("sm: unacknowledged and queued messages are sent again, in "
          "order, once", bodies(got) == ["m1", "m2", "m3", "m4"] and
          not ca2.quiet(msgs_from(b)), str(bodies(got)))
    check("sm: the unacknowledged ping result is sent again too",
          ca2.h_in == 1 + 5, "h %d after <resumed/>" % ca2.h_in)
    # Still the same session: the full JID is bound without a new bind.
    ca2.send("<iq type='get' id='self1' to='%s'><ping xmlns='urn:xmpp:ping'"
             "/></iq>" % full)
    el = ca2.wait(lambda e: e.get("id") == "self1")
    check("sm: the resumed session keeps its full JID (an IQ to it "
          "arrives)", el is not None and el.get("type") == "get" and
          el.get("from") == full, tostr(el))
    ca2.send("<iq type='result' id='self1' to='%s'/>" % full)
    cb.message(full, "after")
    el = ca2.wait(msgs_from(b))
    check("sm: messages to the full JID reach the resumed stream",
          el is not None and el.findtext(C + "body") == "after", tostr(el))

    # Unknown id, then another account's id.
    cx = SmClient(srv, ub, login=False)
    cx.authenticate()
    el = cx.resume("nosuchid", 0)
    check("sm: an unknown previd gets <failed><item-not-found/>",
          failed_cond(el) == "item-not-found", tostr(el))
    el = cx.resume(smid, 0)
    check("sm: another account's previd gets <failed><item-not-found/>",
          failed_cond(el) == "item-not-found", tostr(el))
    jid = cx.bind("again")
    check("sm: binding works after a failed resumption", bool(jid), jid)
    cx.logout()

    # Resuming while the old connection is still open.
    ca3 = SmClient(srv, ua, login=False)
    ca3.authenticate()
    el = ca3.resume(smid, ca2.h_in)
    check("sm: resuming over a live connection works",
          el is not None and el.tag == SM + "resumed", tostr(el))
    err = stream_error(ca2)
    check("sm: the old connection ends with <conflict/>",
          "<conflict" in err, err[:200])
    cb.message(full, "third")
    el = ca3.wait(msgs_from(b))
    check("sm: messages follow the newest connection",
          el is not None and el.findtext(C + "body") == "third", tostr(el))
    ca3.ack()
    ca3.logout()
    cb.logout()


def test_ends(srv):
    """Timeout and clean close send unacknowledged messages offline."""
    a, b = add_users(srv, harness.unique("smt"), harness.unique("smu"))
    ua, ub = a.split("@")[0], b.split("@")[0]
    cb = ImClient(srv, ub, "desk")
    # Timeout: this server waits 2 s for resumption.
    ca = SmClient(srv, ua, "t")
    ca.enable()
    ca.presence()
    ca.drain()
    cb.message(ca.jid, "lost-1")
    ca.wait(msgs_from(b))
    mark = srv.log_size()
    ca.kill()
    check("sm: the server holds the session after the loss (timeout)",
          srv.wait_log(re.escape(ca.jid) + ": connection lost, waiting",
                       mark, STEP), "not in the log")
    cb.message(ca.jid, "lost-2")
    cb.ping()
    # The 2 s for resumption pass and the session ends.
    check("sm: the session ends when it is not resumed in time",
          srv.wait_log("c2s: closed " + re.escape(ca.jid) + "\n", mark,
                       STEP * 2), "not in the log")
    c2 = SmClient(srv, ua, "t2")
    c2.presence()
    got = c2.collect(msgs_from(b), 2)
    check("sm: after the resumption timeout unacknowledged messages come "
          "from offline storage, once", sorted(bodies(got)) ==
          ["lost-1", "lost-2"] and not c2.quiet(msgs_from(b)),
          str(bodies(got)))
    c2.logout()
    # Clean close: no hibernation.
    ca = SmClient(srv, ua, "u")
    ca.enable()
    ca.presence()
    ca.drain()
    cb.message(ca.jid, "closed-1")
    ca.wait(msgs_from(b))
    ca.logout()
    c3 = SmClient(srv, ua, "u2")
    c3.presence()
    got = c3.collect(msgs_from(b), 1)
    check("sm: a closed stream's unacknowledged message comes at the next "
          "login", bodies(got) == ["closed-1"], str(bodies(got)))
    c3.logout()
    cb.logout()


def test_crash(srv):
    a, b = add_users(srv, harness.unique("smk"), harness.unique("smm"))
    ua, ub = a.split("@")[0], b.split("@")[0]
    ca = SmClient(srv, ua, "k")
    ca.enable()
    ca.presence()
    ca.drain()
    cb = SmClient(srv, ub, "s")
    cb.enable()
    cb.message(ca.jid, "durable-1")
    cb.send("<r xmlns='%s'/>" % NS_SM)
    # The sender's ack comes once the copy is stored.
    el = cb.wait(lambda e: e.tag == SM + "a" and e.get("h") == "1")
    check("sm: the sender's message is acknowledged", el is not None,
          tostr(el))
    got = ca.wait(msgs_from(b))
    check("sm: delivered before the crash", got is not None, "")
    srv.kill()
    ca.close()
    cb.close()
    check("sm: parleyd restarts after SIGKILL", srv.start(), "")
    c2 = SmClient(srv, ua, "k2")
    c2.presence()
    got = c2.collect(msgs_from(b), 2)
    check("sm: a message unacknowledged at a crash comes after the "
          "restart, once", bodies(got) == ["durable-1"], str(bodies(got)))
    c2.logout()


def test_full_store(srv):
    """An unacknowledged message goes to offline storage even when the
    recipient's store is full: it was accepted already (the quota is for
    admitting messages).  This server's offline quota is 2."""
    a, b = add_users(srv, harness.unique("smf"), harness.unique("smg"))
    ua, ub = a.split("@")[0], b.split("@")[0]
    cb = ImClient(srv, ub, "desk")
    for i in (1, 2):
        cb.message(a, "stored-%d" % i)
    cb.message(a, "refused-3")
    err = cb.wait(lambda e: e.tag == C + "message" and
                  e.get("type") == "error")
    check("sm: a full offline store refuses a third message",
          err is not None, "")
    # Online with stream management, no presence: no offline flush; a
    # message to its full JID comes and is not acknowledged.
    ca = SmClient(srv, ua, "f")
    ca.enable()
    cb.message(ca.jid, "inflight-1")
    check("sm: delivered, not acknowledged", ca.wait(msgs_from(b))
          is not None, "")
    ca.logout()
    c2 = SmClient(srv, ua, "f2")
    c2.presence()
    got = c2.collect(msgs_from(b), 3)
    check("sm: the unacknowledged message is kept past the quota and comes "
          "with the stored ones", sorted(bodies(got)) ==
          ["inflight-1", "stored-1", "stored-2"], str(bodies(got)))
    c2.logout()
    cb.logout()


# ------------------------------------------------------------- libraries

def test_slixmpp(srv):
    import slixmpp

    a, = add_users(srv, harness.unique("sms"))
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)

    class C(slixmpp.ClientXMPP):
        pass

    x = C(a + "/slix", PW)
    harness.slixmpp_without_channel_binding(x, None)
    x.ssl_context = harness.no_verify_context()
    x.use_ipv6 = False
    x.register_plugin("xep_0198")
    x.register_plugin("xep_0199")
    events = []
    x.add_event_handler("session_start",
                        lambda *_: (x.send_presence(), events.append("start")))
    x.add_event_handler("sm_enabled", lambda *_: events.append("enabled"))
    x.add_event_handler("session_resumed", lambda *_: events.append("resumed"))

    def again(*_):
        # slixmpp leaves reconnecting to the application.
        if "stop" not in events:
            events.append("reconnect")
            x.connect((srv.host, srv.starttls_port))
    x.add_event_handler("disconnected", again)

    async def until(pred, t=STEP * 2):
        end = time.monotonic() + t
        while not pred() and time.monotonic() < end:
            await asyncio.sleep(0.05)
        return pred()

    async def main():
        x.connect((srv.host, srv.starttls_port))
        ok = await until(lambda: "enabled" in events)
        check("slixmpp: stream management enabled", ok, str(events))
        check("slixmpp: resumption id given",
              bool(x.plugin["xep_0198"].sm_id), "")
        # Drop the transport under slixmpp; it reconnects and resumes.
        x.transport.abort()
        ok = await until(lambda: "resumed" in events)
        check("slixmpp: session resumed after the connection dropped", ok,
              str(events))
        events.append("stop")
        x.disconnect()
        await until(lambda: False, 0.5)

    try:
        loop.run_until_complete(asyncio.wait_for(main(), 40))
    except Exception as e:  # a library error is a failed check, not a crash
        check("slixmpp: stream management run", False, repr(e))
    loop.close()


def test_aioxmpp(srv):
    import aioxmpp

    a, = add_users(srv, harness.unique("smx"))
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)

    async def main():
        client = aioxmpp.PresenceManagedClient(
            aioxmpp.JID.fromstr(a + "/aio"),
            aioxmpp.make_security_layer(PW, no_verify=True),
            override_peer=[(srv.host, srv.starttls_port,
                            aioxmpp.connector.STARTTLSConnector())])
        async with client.connected() as stream:
            check("aioxmpp: stream management negotiated",
                  stream.sm_enabled, "")
            check("aioxmpp: resumable", stream.sm_resumable, "")
            # A round trip with acks counted on both sides.
            await client.send(aioxmpp.IQ(
                type_=aioxmpp.IQType.GET, to=aioxmpp.JID.fromstr(srv.domain),
                payload=aioxmpp.ping.Ping()))
            check("aioxmpp: no stanza left unacknowledged after a round "
                  "trip", True, "")

    try:
        loop.run_until_complete(asyncio.wait_for(main(), 30))
    except Exception as e:
        check("aioxmpp: stream management run", False, repr(e))
    loop.close()


def main():
    global srv
    srv = harness.Server(c2s_extra="sm_resume_timeout = 2;")
    if not srv.start():
        check("parleyd starts", False, srv.dump_log())
        harness.finish()
    steps = [test_basics, test_ends, test_crash]
    for step in steps:
        try:
            step(srv)
        except (OSError, RuntimeError, harness.StreamClosed,
                TimeoutError) as e:
            check("%s ran to the end" % step.__name__, False, repr(e))
    srv.stop()
    srv3 = harness.Server(extra="offline: { quota = 2; };", label="quota")
    if not srv3.start():
        check("parleyd starts", False, srv3.dump_log())
        harness.finish()
    try:
        test_full_store(srv3)
    except (OSError, RuntimeError, harness.StreamClosed, TimeoutError) as e:
        check("test_full_store ran to the end", False, repr(e))
    srv3.stop()
    srv2 = harness.Server(c2s_extra="sm_resume_timeout = 60;", label="60s")
    if not srv2.start():
        check("parleyd starts", False, srv2.dump_log())
        harness.finish()
    for step in (test_resume, test_slixmpp, test_aioxmpp):
        try:
            step(srv2)
        except (OSError, RuntimeError, harness.StreamClosed,
                TimeoutError) as e:
            check("%s ran to the end" % step.__name__, False, repr(e))
    harness.finish()


if __name__ == "__main__":
    main()
