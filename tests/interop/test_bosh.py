#!/usr/bin/python3
"""test_bosh.py - XMPP over BOSH (XEP-0124 1.11, XEP-0206).

Debian 12's slixmpp, aioxmpp and nbxmpp have no BOSH client, so the
client is bosh_common.BoshClient: harness.RawClient over BOSH (every
element it sends goes in the next request's <body/>, every element of
an answer is queued), which reuses the same SASL (SCRAM), bind and iq
helpers.
The browser test (Converse.js) is the third-party BOSH peer.

Checked: session creation (sid, wait, hold, requests, ver, authid,
xmpp:version, features), SCRAM login with xmpp:restart, bind, chat both
ways with a TCP client (a held request answered as the message comes),
a retransmitted rid answered again with the same body, rids beyond the
window and unknown sids ending with item-not-found, terminate, a stream
error as remote-stream-error, host-unknown, HTTP errors (400 for a body
that is not BOSH, 405 for GET), CORS preflight, the inactivity deadline,
pause (XEP-0124 §10).
Run with /usr/bin/python3.
"""

import os
import sys
import threading
import time
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402
from im_common import add_users, PW  # noqa: E402
from bosh_common import BoshClient, post, NS_XBOSH  # noqa: E402
from bosh_common import NS_HTTPBIND as NS_BIND  # noqa: E402

NS_STREAM = "http://etherx.jabber.org/streams"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
C = "{jabber:client}"


def main():
    http_port = harness.free_ports(1)[0]
    srv = harness.Server(
        listeners_extra=('{ protocol = "http"; address = "127.0.0.1"; '
                         'port = %d; secure = true; }' % http_port),
        extra='http: { bosh_max_inactivity = 5; bosh_max_wait = 30; '
              'bosh_max_pause = 30; '
              'cors_origins = ["https://app.example"]; };')
    srv.start()
    alice, bob = add_users(srv, harness.unique("ba"), harness.unique("bb"))
    h = srv.host

    # ---- creation
    c = BoshClient(h, http_port, srv.domain)
    el = c.create()
    st, hd, raw = c.created
    check("session created: 200 text/xml", st == 200 and
          hd.get("content-type", "").startswith("text/xml"), str(hd))
    check("sid, wait, hold, requests, ver, from, authid", el.get("sid") and
          el.get("wait") == "2" and el.get("hold") == "1" and
          el.get("requests") == "2" and el.get("ver") == "1.11" and
          el.get("from") == srv.domain and el.get("authid") and
          el.get("inactivity") == "5", str(el.attrib))
    check("xmpp:version='1.0' (XEP-0206)",
          el.get("{%s}version" % NS_XBOSH) == "1.0", str(el.attrib))
    f = c.next(lambda e: e.tag == "{%s}features" % NS_STREAM)
    check("stream features in the creation answer",
          "SCRAM-SHA-1" in harness.RawClient.mechanisms(f))

    # ---- SCRAM login, restart, bind
    try:
        el = c.auth_scram(alice.split("@")[0], PW, "SCRAM-SHA-1")
        check("SCRAM-SHA-1 over BOSH", el.tag == "{%s}success" % NS_SASL,
              el.tag)
        f = c.restart()
        check("xmpp:restart='true' gives the bound stream's features",
              f.find("{urn:ietf:params:xml:ns:xmpp-bind}bind") is not None)
        jid = c.bind("bosh")
        check("bound over BOSH", jid.startswith(alice), jid)
    except Exception as e:  # noqa: BLE001
        check("BOSH login", False, repr(e))
        harness.finish()

    tb = harness.RawClient(srv.host, srv.starttls_port, srv.domain)
    tb.login(bob.split("@")[0], PW, "tcp")
    tb.send("<presence/>")
    c.send("<presence/>")
    c.send("<message to='%s' type='chat'><body>via bosh</body></message>"
           % bob)
    try:
        c._recv_some(time.monotonic() + 10)
    except TimeoutError:
        pass
    got = tb.next(lambda e: e.tag == C + "message" and
                  e.findtext(C + "body") == "via bosh")
    check("BOSH -> TCP chat, from stamped", got.get("from") == jid,
          got.get("from"))

    # A held request answered when the message comes.
    result = {}

    def poll():
        t0 = time.monotonic()
        st, raw = c.request()
        result["t"] = time.monotonic() - t0
        result["st"], result["raw"] = st, raw

    t = threading.Thread(target=poll)
    t.start()
    # Held or not yet arrived, the poll gets the message either way.
    tb.send("<message to='%s' type='chat'><body>to bosh</body></message>"
            % jid)
    t.join(15)
    el = ET.fromstring(result.get("raw", b"<x/>"))
    msgs = [m for m in el.iter(C + "message")
            if m.findtext(C + "body") == "to bosh"]
    check("TCP -> BOSH: the held request carries the message",
          result.get("st") == 200 and msgs, str(result.get("raw"))[:300])
    check("...qualified by jabber:client", msgs and
          msgs[0].tag == C + "message")

    # ---- rids
    rid, data, st0, raw0 = c.last
    st, hd, raw = post(h, http_port, data)
    check("a retransmitted rid gets the same answer again",
          st == 200 and raw == raw0, "%s %r %r" % (st, raw, raw0))
    st, hd, raw = post(h, http_port, c.body(rid=c.rid + 5))
    el = ET.fromstring(raw)
    check("a rid beyond the window ends with item-not-found",
          el.get("type") == "terminate" and
          el.get("condition") == "item-not-found", raw)
    st, hd, raw = post(h, http_port, "<body xmlns='%s' rid='7' "
                       "sid='nosuchsid'/>" % NS_BIND)
    el = ET.fromstring(raw)
    check("an unknown sid gets item-not-found",
          el.get("condition") == "item-not-found", raw)
    st, hd, raw = post(h, http_port, "not xml at all")
    check("a body that is not BOSH gets 400", st == 400, str(st))
    st, hd, raw = post(h, http_port, "", method="GET")
    check("GET gets 405 naming POST", st == 405 and
          "POST" in hd.get("allow", ""), "%s %s" % (st, hd))
    st, hd, raw = post(h, http_port, "", method="OPTIONS", headers={
        "Origin": "https://app.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"})
    check("CORS preflight from an allowed origin",
          st in (200, 204) and hd.get("access-control-allow-origin") ==
          "https://app.example", "%s %s" % (st, hd))
    st, hd, raw = post(h, http_port, "", method="OPTIONS", headers={
        "Origin": "https://evil.example",
        "Access-Control-Request-Method": "POST"})
    check("CORS preflight from another origin refused",
          "access-control-allow-origin" not in hd, "%s %s" % (st, hd))

    # ---- terminate
    d = BoshClient(h, http_port, srv.domain)
    d.create()
    st, raw = d.request("<presence type='unavailable' xmlns='jabber:client'/>",
                        attrs=" type='terminate'")
    el = ET.fromstring(raw)
    check("type='terminate' is answered with terminate",
          el.get("type") == "terminate", raw)
    st, raw = d.request()
    el = ET.fromstring(raw)
    check("...and the session is gone",
          el.get("condition") == "item-not-found", raw)

    # ---- errors
    e = BoshClient(h, http_port, srv.domain)
    el = e.create(to="nosuch.example")
    check("creation for an unknown host: host-unknown",
          el.get("type") == "terminate" and
          el.get("condition") == "host-unknown", str(el.attrib))
    e = BoshClient(h, http_port, srv.domain)
    e.create()
    e.send("<message to='%s'><body>before auth</body></message>" % bob)
    try:
        while not e.closed:
            e._recv_some(time.monotonic() + 10)
    except (harness.StreamClosed, TimeoutError):
        pass
    term = getattr(e, "terminate", None)
    err = [x for x in e.queue if x.tag == "{%s}error" % NS_STREAM]
    check("a stream error ends with remote-stream-error and the error",
          term is not None and
          term.get("condition") == "remote-stream-error" and err and
          err[0].find("{urn:ietf:params:xml:ns:xmpp-streams}not-authorized")
          is not None, "%s %s" % (term is not None and term.attrib, e.raw))

    # ---- inactivity: a session nobody polls is over within 5 s
    f = BoshClient(h, http_port, srv.domain)
    f.create()
    sid = f.sid
    # The creation's rid again: answered from what was kept, without
    # counting as activity, until the session is gone.
    gone = harness.wait_for(lambda: b"item-not-found" in post(
        h, http_port, "<body xmlns='%s' rid='%d' sid='%s'/>"
        % (NS_BIND, f.rid, sid))[2], 20)
    check("an inactive session is over after bosh_max_inactivity", gone)

    # ---- pause (XEP-0124 §10): held requests answered, the pause request
    # answered at once with no payload, the session kept past inactivity
    p = BoshClient(h, http_port, srv.domain, wait=20)
    el = p.create()
    check("maxpause offered (bosh_max_pause)", el.get("maxpause") == "30",
          str(el.attrib))
    r1, r2 = p.rid + 1, p.rid + 2
    p.rid = r2
    held = {}

    def hold_one():
        held["r"] = post(h, http_port, p.body(rid=r1), timeout=40)

    t = threading.Thread(target=hold_one)
    t.start()
    # Not held: answered long before its wait (20 s) would run out.
    try:
        st, _, raw = post(h, http_port, p.body(attrs=" pause='30'", rid=r2),
                          timeout=10)
    except OSError as e:
        st, raw = None, repr(e).encode()
    pe = ET.fromstring(raw) if st == 200 else None
    check("the pause request is answered, with no payload", pe is not None and
          len(pe) == 0 and pe.get("type") is None, "%s %r" % (st, raw))
    t.join(15)
    check("the request held before the pause is answered too",
          "r" in held and held["r"][0] == 200, str(held.get("r")))
    # Longer than bosh_max_inactivity (5 s), well inside the pause (30 s).
    time.sleep(7)
    st, _, raw = post(h, http_port, p.body(rid=r2 + 1), timeout=40)
    check("the paused session outlives bosh_max_inactivity",
          st == 200 and b"terminate" not in raw, "%s %r" % (st, raw))

    n = srv.counter("bosh_sessions")
    check("bosh_sessions counted", n is not None and n >= 4, str(n))
    r = tb.iq("<ping xmlns='urn:xmpp:ping'/>", to=srv.domain)
    check("the TCP client is still served", r.get("type") == "result")
    harness.finish()


if __name__ == "__main__":
    main()
