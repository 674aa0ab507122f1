#!/usr/bin/python3
"""test_component.py - external components (XEP-0114).

Raw sockets against the component listener: the handshake (SHA-1 of the
stream id and the secret), and every way to get it wrong answered with
the RFC 6120 stream error (invalid-namespace, host-unknown,
not-authorized, conflict for a second connection while the first keeps
working, invalid-from, improper-addressing, unsupported-stanza-type,
not-well-formed garbage, policy-violation for an oversized stanza), while
a client keeps being served.  Routing both ways between a user and the
component's JIDs; bounces (service-unavailable) while it is down;
`parleyctl components`.  slixmpp's ComponentXMPP as a real component
library: it connects, answers a user's message and a disco#info request.

Run with /usr/bin/python3; `scripts/run-tests test_component`.
"""

import hashlib
import json
import os
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, tostr  # noqa: E402
from im_common import (ImClient, add_users, error_of,  # noqa: E402
                       is_message)

NS_COMP = "jabber:component:accept"
NS_STREAMS_ERR = "urn:ietf:params:xml:ns:xmpp-streams"
SECRET = "s3cr3t-Ω"
DOMAIN = "gw.localhost"
OTHER = "other.localhost"


class Component(harness.RawClient):
    """A raw XEP-0114 connection."""

    def __init__(self, srv, port, domain=DOMAIN, timeout=10):
        super().__init__(srv.host, port, domain=domain, timeout=timeout)

    def open(self, ns=NS_COMP, to=None):
        self.send("<?xml version='1.0'?><stream:stream xmlns='%s' "
                  "xmlns:stream='http://etherx.jabber.org/streams' "
                  "to='%s'>" % (ns, to or self.domain))
        return self.wait_header()

    def handshake(self, secret=SECRET):
        sid = self.header.get("id")
        digest = hashlib.sha1((sid + secret).encode("utf-8")).hexdigest()
        self.send("<handshake>%s</handshake>" % digest)
        return self.next()

    def stream_error(self):
        """The condition of the stream error that ends the stream."""
        try:
            el = self.next(lambda e: e.tag.endswith("}error"))
        except (harness.StreamClosed, TimeoutError, OSError):
            return None
        for ch in el:
            if ch.tag.startswith("{%s}" % NS_STREAMS_ERR) and \
                    not ch.tag.endswith("}text"):
                return ch.tag.split("}", 1)[1]
        return None


def connect(srv, port, domain=DOMAIN):
    c = Component(srv, port, domain)
    c.open()
    return c


def main():
    cport, = harness.free_ports(1)
    # max_links = 1: this file checks the one-link behaviour (a second
    # connection refused); test_component_links.py checks several.
    comps = ('components = ( { domain = "%s"; secret = "%s"; '
             'max_links = 1; }, '
             '{ domain = "%s"; secret = "another"; } );'
             % (DOMAIN, SECRET, OTHER))
    srv = harness.Server(
        listeners_extra='{ protocol = "component"; address = "127.0.0.1"; '
                        'port = %d; tls = "none"; '
                        'max_connections_per_ip = 6; }' % cport,
        host_extra=comps, max_stanza_size=10000)
    if not srv.start():
        check("parleyd starts", False, srv.dump_log())
        harness.finish()

    user, = (harness.unique("cu"),)
    ju, = add_users(srv, user)
    cu = ImClient(srv, user, "desk")
    cu.presence()  # available: messages to the bare JID reach it

    # -- the handshake and its failures
    c = Component(srv, cport)
    hdr = c.open()
    check("component: the header answers from the component's domain, with "
          "an id", hdr.get("from") == DOMAIN and len(hdr.get("id") or "") >=
          16, str(hdr.attrib))
    hs = c.handshake()
    check("component: the right handshake gets an empty <handshake/>",
          hs.tag == "{%s}handshake" % NS_COMP and not (hs.text or "").strip(),
          tostr(hs))

    bad = Component(srv, cport)
    bad.open()
    bad.send("<handshake>%s</handshake>" % ("0" * 40))
    check("component: a wrong secret gets <not-authorized/>",
          bad.stream_error() == "not-authorized")

    bad = Component(srv, cport)
    bad.send("<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
             "xmlns:stream='http://etherx.jabber.org/streams' to='%s'>"
             % DOMAIN)
    check("component: a jabber:client stream gets <invalid-namespace/>",
          bad.stream_error() == "invalid-namespace")

    bad = Component(srv, cport, domain="nobody.localhost")
    bad.send("<?xml version='1.0'?><stream:stream xmlns='%s' xmlns:stream="
             "'http://etherx.jabber.org/streams' to='nobody.localhost'>"
             % NS_COMP)
    check("component: an unknown domain gets <host-unknown/>",
          bad.stream_error() == "host-unknown")

    bad = Component(srv, cport)
    bad.open()
    bad.send("<message from='x@%s' to='%s'><body>early</body></message>"
             % (DOMAIN, ju))
    check("component: a stanza before the handshake gets <not-authorized/>",
          bad.stream_error() == "not-authorized")

    second = Component(srv, cport)
    second.open()
    second.send("<handshake>%s</handshake>" % hashlib.sha1(
        (second.header.get("id") + SECRET).encode()).hexdigest().upper())
    check("component: a second connection of a connected component gets "
          "<conflict/> (upper-case hex is still the right secret)",
          second.stream_error() == "conflict")

    # -- routing both ways
    c.send("<message from='bot@%s/x' to='%s' type='chat'><body>hi from "
           "the gateway</body></message>" % (DOMAIN, ju))
    got = cu.wait(is_message(frm_bare="bot@" + DOMAIN))
    check("component: the first connection still works: its message reaches "
          "the user, in jabber:client",
          got is not None and got.findtext("{jabber:client}body") ==
          "hi from the gateway", tostr(got))
    cu.message("someone@%s" % DOMAIN, "to the gateway", msg_id="m1")
    el = c.next(lambda e: e.tag.endswith("}message"))
    check("component: a user's message to a JID at the component arrives, "
          "from the user's full JID",
          el.get("to") == "someone@%s" % DOMAIN and
          el.get("from") == cu.jid and
          el.findtext("{%s}body" % NS_COMP) == "to the gateway", tostr(el))
    cu.send("<iq type='get' id='dq' to='%s'><query xmlns="
            "'http://jabber.org/protocol/disco#info'/></iq>" % DOMAIN)
    iq = c.next(lambda e: e.tag.endswith("}iq"))
    check("component: an IQ to the component's domain arrives",
          iq.get("id") == "dq" and iq.get("to") == DOMAIN, tostr(iq))
    c.send("<iq type='result' id='dq' from='%s' to='%s'><query xmlns="
           "'http://jabber.org/protocol/disco#info'><identity "
           "category='gateway' type='irc' name='t'/></query></iq>"
           % (DOMAIN, cu.jid))
    res = cu.wait(lambda e: e.get("id") == "dq")
    check("component: its IQ result reaches the user",
          res is not None and res.get("type") == "result" and
          res.get("from") == DOMAIN, tostr(res))
    c.send("<presence from='room@%s/nick' to='%s'/>" % (DOMAIN, cu.jid))
    pres = cu.wait(lambda e: e.tag.endswith("}presence") and
                   e.get("from") == "room@%s/nick" % DOMAIN)
    check("component: its directed presence reaches the user",
          pres is not None, "")

    rc, out = srv.ctl("components", "--json")
    try:
        listed = {x["domain"]: x for x in json.loads(out)}
    except (ValueError, KeyError, TypeError):
        listed = {}
    check("parleyctl components: both components, one connected with its "
          "counts", rc == 0 and
          listed.get(DOMAIN, {}).get("connected") is True and
          listed.get(DOMAIN, {}).get("stanzas_in", 0) >= 3 and
          listed.get(OTHER, {}).get("connected") is False, out)
    rc, out = srv.ctl("components")
    check("parleyctl components: a table naming the domains",
          rc == 0 and DOMAIN in out and "disconnected" in out, out)

    # -- bad stanzas from an authenticated component
    for what, stanza, cond in (
            ("a 'from' outside its domain", "<message from='a@%s' to='%s'>"
             "<body>x</body></message>" % (OTHER, ju), "invalid-from"),
            ("no 'to'", "<message from='a@%s'><body>x</body></message>"
             % DOMAIN, "improper-addressing"),
            ("an element that is no stanza", "<foo from='a@%s' to='%s'/>"
             % (DOMAIN, ju), "unsupported-stanza-type"),
            ("garbage", "<message from='a@%s' to='%s'><<</message>"
             % (DOMAIN, ju), "not-well-formed"),
            ("an oversized stanza", "<message from='a@%s' to='%s'><body>%s"
             "</body></message>" % (DOMAIN, ju, "x" * 20000),
             "policy-violation")):
        c.close()
        c = connect(srv, cport)
        c.handshake()
        c.send(stanza)
        check("component: %s gets <%s/>" % (what, cond),
              c.stream_error() == cond)
    served = cu.ping() is not None
    check("component: the user is served throughout", served,
          "" if served else srv.dump_log(30))

    # -- floods
    c.close()
    c = connect(srv, cport)
    c.handshake()
    chunk = "".join("<message from='f@%s' to='nobody@%s' type='chat'>"
                    "<body>%s</body></message>" % (DOMAIN, srv.domain,
                                                  "y" * 900)
                    for _ in range(100))
    flood_done = threading.Event()

    def flood():
        try:
            for _ in range(20):  # about 2 MB, far past limits.read_burst
                c.send(chunk)
        except OSError:
            pass
        flood_done.set()
    ft = threading.Thread(target=flood, daemon=True)
    ft.start()
    served = cu.ping() is not None
    check("component: while a component floods (read rate limit), a user "
          "is still served", served)
    ft.join(120)
    check("component: the flood is paced, not refused: the component's "
          "connection stays up", flood_done.is_set() and not c.closed)
    extra = []
    try:
        # c and five more fill max_connections_per_ip = 6; the seventh
        # is refused.
        for _ in range(5):
            x = Component(srv, cport)
            x.open()
            extra.append(x)
        over = Component(srv, cport)
        over.send("<?xml version='1.0'?><stream:stream xmlns='%s' "
                  "xmlns:stream='http://etherx.jabber.org/streams' "
                  "to='%s'>" % (NS_COMP, DOMAIN))
        check("component: a connection over the entry's "
              "max_connections_per_ip gets <policy-violation/>",
              over.stream_error() == "policy-violation")
    finally:
        for x in extra:
            x.close()
    check("component: the user is served after the floods",
          cu.ping() is not None)

    # -- down: bounces
    c.close()
    got = None
    for attempt in range(50):  # until parleyd saw the close
        cu.message("someone@%s" % DOMAIN, "anyone?", msg_id="m%d" % attempt)
        got = cu.wait(lambda e: e.tag.endswith("}message") and
                      e.get("type") == "error")
        if got is not None:
            break
    check("component: while it is down a message to it bounces with "
          "<service-unavailable/>",
          got is not None and error_of(got) == "service-unavailable",
          tostr(got))

    # -- slixmpp's ComponentXMPP
    slix_component(srv, cport, cu)
    cu.close()
    harness.finish()


def slix_component(srv, port, cu):
    import asyncio
    import slixmpp
    from slixmpp.componentxmpp import ComponentXMPP

    ready = threading.Event()
    echoed = []

    class Echo(ComponentXMPP):
        def __init__(self):
            super().__init__(DOMAIN, SECRET, srv.host, port)
            self.register_plugin("xep_0030")
            self["xep_0030"].add_identity(category="gateway", itype="smtp",
                                          name="echo", jid=DOMAIN)
            self.add_event_handler("session_start",
                                   lambda _: ready.set())
            self.add_event_handler("message", self.on_message)

        def on_message(self, msg):
            if msg["type"] in ("chat", "normal"):
                echoed.append(msg["body"])
                msg.reply("echo: %s" % msg["body"]).send()

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    xmpp = Echo()
    xmpp.connect()
    t = threading.Thread(target=loop.run_forever, daemon=True)
    t.start()
    check("slixmpp ComponentXMPP: connects and completes the handshake",
          ready.wait(15))
    cu.message("echo@%s" % DOMAIN, "ping me", msg_id="e1")
    got = cu.wait(is_message(frm_bare="echo@" + DOMAIN))
    check("slixmpp ComponentXMPP: answers a user's message",
          got is not None and
          got.findtext("{jabber:client}body") == "echo: ping me", tostr(got))
    cu.send("<iq type='get' id='di' to='%s'><query xmlns="
            "'http://jabber.org/protocol/disco#info'/></iq>" % DOMAIN)
    res = cu.wait(lambda e: e.get("id") == "di")
    ident = None
    if res is not None:
        q = res.find("{http://jabber.org/protocol/disco#info}query")
        ident = q.find("{http://jabber.org/protocol/disco#info}identity") \
            if q is not None else None
    check("slixmpp ComponentXMPP: answers disco#info with its identity",
          ident is not None and ident.get("category") == "gateway",
          tostr(res))
    gone = threading.Event()
    xmpp.add_event_handler("disconnected", lambda _: gone.set())
    loop.call_soon_threadsafe(xmpp.disconnect)
    check("slixmpp ComponentXMPP: disconnects cleanly", gone.wait(10))
    loop.call_soon_threadsafe(loop.stop)
    t.join(5)


if __name__ == "__main__":
    main()
