#!/usr/bin/python3
"""test_aioxmpp.py - Parley against aioxmpp (Debian python3-aioxmpp).

Two aioxmpp clients register through XEP-0077 (aioxmpp.ibr), log in with
certificate verification disabled, exchange chat messages, ping the
server and ask its version, and check that a spoofed 'from' reaches the
peer as the sender's real full JID.  Run with /usr/bin/python3.
"""

import asyncio
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402

import aioxmpp  # noqa: E402
import aioxmpp.connector  # noqa: E402
import aioxmpp.dispatcher  # noqa: E402
import aioxmpp.ibr  # noqa: E402
import aioxmpp.node  # noqa: E402
import aioxmpp.ping  # noqa: E402
import aioxmpp.protocol  # noqa: E402
import aioxmpp.version  # noqa: E402

STEP = 10
srv = None


def peer(direct=False):
    """aioxmpp connection option for the server under test."""
    if direct:
        return [(srv.host, srv.direct_port,
                 aioxmpp.connector.XMPPOverTLSConnector())]
    return [(srv.host, srv.starttls_port,
             aioxmpp.connector.STARTTLSConnector())]


async def register(jid, password, direct=False):
    """XEP-0077 with aioxmpp.ibr on an unauthenticated stream; returns
    (ok, detail)."""
    layer = aioxmpp.make_security_layer(password, no_verify=True)
    layer = layer._replace(sasl_providers=[])   # no SASL before registering
    try:
        _tr, stream, features = await asyncio.wait_for(
            aioxmpp.node.connect_xmlstream(jid, layer,
                                           override_peer=peer(direct)),
            STEP)
    except Exception as e:  # noqa: BLE001 - reported as the detail
        return False, "connect failed: %r" % e
    try:
        fields = await aioxmpp.ibr.get_registration_fields(stream, STEP)
        iq = aioxmpp.IQ(to=aioxmpp.JID.fromstr(srv.domain),
                        type_=aioxmpp.IQType.SET,
                        payload=aioxmpp.ibr.Query(jid.localpart, password))
        iq.autoset_id()
        reply = await aioxmpp.protocol.send_and_wait_for(
            stream, [iq], [aioxmpp.IQ], timeout=STEP)
        ok = reply.type_ == aioxmpp.IQType.RESULT
        used = aioxmpp.ibr.get_used_fields(fields)
        return ok, "reply %r %r; form fields %s" % (
            reply.type_, getattr(reply, "error", None), used)
    except Exception as e:  # noqa: BLE001 - reported as the detail
        return False, "registration failed: %r" % e
    finally:
        stream.close()


class Session:
    """A connected aioxmpp client with an inbox of chat messages."""

    def __init__(self, jid, password, direct=False):
        self.client = aioxmpp.Client(
            jid, aioxmpp.make_security_layer(password, no_verify=True),
            override_peer=peer(direct),
            logger=logging.getLogger("aioxmpp.test"))
        self.inbox = asyncio.Queue()
        self.cm = None

    async def __aenter__(self):
        self.cm = self.client.connected(
            presence=aioxmpp.PresenceState(True))
        await asyncio.wait_for(self.cm.__aenter__(), STEP)
        disp = self.client.summon(aioxmpp.dispatcher.SimpleMessageDispatcher)
        for t in (aioxmpp.MessageType.CHAT, aioxmpp.MessageType.NORMAL,
                  aioxmpp.MessageType.ERROR):
            disp.register_callback(t, None, self.inbox.put_nowait)
        return self

    async def __aexit__(self, *exc):
        try:
            await asyncio.wait_for(self.cm.__aexit__(None, None, None), 5)
        except Exception:  # noqa: BLE001 - best effort
            self.client.stop()

    @property
    def jid(self):
        return self.client.local_jid

    async def send_chat(self, to, text, spoof=None):
        msg = aioxmpp.Message(to=to, type_=aioxmpp.MessageType.CHAT)
        msg.body[None] = text
        if spoof is not None:
            msg.from_ = spoof
        await asyncio.wait_for(self.client.send(msg), STEP)

    async def next_message(self, text, timeout=STEP):
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return None
            try:
                m = await asyncio.wait_for(self.inbox.get(), left)
            except asyncio.TimeoutError:
                return None
            if m.body.any() == text:
                return m


async def main():
    dom = srv.domain
    ja = aioxmpp.JID.fromstr("%s@%s/aio-a" % (harness.unique("aioa"), dom))
    jb = aioxmpp.JID.fromstr("%s@%s/aio-b" % (harness.unique("aiob"), dom))
    pa, pb = "pa-" + harness.unique("p"), "pb-" + harness.unique("p")

    ok, detail = await register(ja, pa)
    check("aioxmpp.ibr: register first user (STARTTLS)", ok, detail)
    ok, detail = await register(jb, pb, direct=True)
    check("aioxmpp.ibr: register second user (direct TLS)", ok, detail)
    ok, detail = await register(ja, "another")
    check("aioxmpp.ibr: registering the same user again is refused",
          not ok and "conflict" in detail.lower(), detail)

    try:
        async with Session(ja, pa) as a, Session(jb, pb, direct=True) as b:
            check("aioxmpp: both clients log in", True)
            check("aioxmpp: bound full JIDs carry the bare JIDs",
                  a.jid.bare() == ja.bare() and b.jid.bare() == jb.bare()
                  and a.jid.resource and b.jid.resource,
                  "%s %s" % (a.jid, b.jid))
            await a.send_chat(b.jid, "hi from aioxmpp a")
            m = await b.next_message("hi from aioxmpp a")
            check("aioxmpp: chat a -> b arrives", m is not None,
                  "nothing within %d s" % STEP)
            if m is not None:
                check("aioxmpp: received 'from' is a's full JID",
                      m.from_ == a.jid, "from=%s want %s" % (m.from_, a.jid))
            await b.send_chat(a.jid.bare(), "hi back to your bare JID")
            m = await a.next_message("hi back to your bare JID")
            check("aioxmpp: chat b -> a (bare JID) arrives", m is not None,
                  "nothing within %d s" % STEP)

            try:
                await asyncio.wait_for(aioxmpp.ping.ping(
                    a.client, aioxmpp.JID.fromstr(dom)), STEP)
                err = None
            except Exception as e:  # noqa: BLE001 - reported
                err = e
            check("aioxmpp: ping the server", err is None, repr(err))

            try:
                v = await asyncio.wait_for(aioxmpp.version.query_version(
                    b.client.stream, aioxmpp.JID.fromstr(dom)), STEP)
                err = None
            except Exception as e:  # noqa: BLE001 - reported
                v, err = None, e
            check("aioxmpp: version query to the server is answered",
                  err is None and v is not None and bool(v.name),
                  "error %r, reply name=%r version=%r" % (
                      err, getattr(v, "name", None),
                      getattr(v, "version", None)))
            # Last: a server may close the spoofing stream.
            spoof = aioxmpp.JID.fromstr("mallory@%s/evil" % dom)
            await a.send_chat(b.jid, "spoof attempt", spoof=spoof)
            m = await b.next_message("spoof attempt")
            check("aioxmpp: spoofed 'from' is stamped with the real full JID",
                  m is not None and m.from_ == a.jid,
                  "got from=%s, want %s" % (m.from_ if m else "nothing",
                                            a.jid))
            spoof2 = aioxmpp.JID.fromstr("%s/other" % str(a.jid.bare()))
            await b.send_chat(a.jid, "spoof as a", spoof=spoof2)
            m = await a.next_message("spoof as a")
            check("aioxmpp: 'from' claiming the receiver's own account is "
                  "stamped", m is not None and m.from_ == b.jid,
                  "got from=%s, want %s" % (m.from_ if m else "nothing",
                                            b.jid))

    except Exception as e:  # noqa: BLE001 - reported
        check("aioxmpp: sessions run without errors", False, repr(e))


def run():
    global srv
    srv = harness.Server()
    if srv.start():
        try:
            asyncio.run(asyncio.wait_for(main(), 120))
        except asyncio.TimeoutError:
            check("aioxmpp suite finishes within 120 s", False, "timed out")
        except Exception as e:  # noqa: BLE001 - report, don't crash
            import traceback
            traceback.print_exc()
            check("aioxmpp suite runs without exceptions", False, repr(e))
    harness.finish()


if __name__ == "__main__":
    run()
