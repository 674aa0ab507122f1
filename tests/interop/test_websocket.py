#!/usr/bin/python3
"""test_websocket.py - XMPP over WebSocket (RFC 7395, RFC 6455).

parleyd serves /xmpp-websocket on two HTTP listeners: a plain one
declared secure (as behind a TLS-terminating proxy) and a direct TLS one.
Checked, with real peers where Debian has them:
  - nbxmpp (Debian python3-nbxmpp, over libsoup's WebSocket) logs in over
    WebSocket and chats with a TCP client (slixmpp);
  - the framing itself with a socket-level client (ws_common.WsClient):
    <open/> answered with <open/>, features and stanzas as standalone
    documents (namespaces declared), SCRAM login, bind, chat both ways
    with a TCP client, carbons, CSI, stream management with resumption
    after the WebSocket dropped, <close/> answered with <close/> and a
    close frame;
  - pings answered with their payload, a frame cut across reads;
  - the handshake refusals (426, 400, 403) and hostile frames: unmasked
    (1002), invalid UTF-8 (1007), binary (1003), over the stanza limit
    (1009), a control frame over 125 bytes, an RSV bit, a continuation
    of nothing (1002), two elements in one message and half an element
    (<not-well-formed/>), each leaving other users served; a close frame
    answered with its code.
Run with /usr/bin/python3.
"""

import json
import os
import socket
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402
from im_common import add_users, PW  # noqa: E402
from ws_common import WsClient, handshake, ws_headers, NS_FRAMING  # noqa

NS_STREAM = "http://etherx.jabber.org/streams"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_SM = "urn:xmpp:sm:3"
NS_CSI = "urn:xmpp:csi:0"
NS_CARBONS = "urn:xmpp:carbons:2"
C = "{jabber:client}"
HERE = os.path.dirname(os.path.abspath(__file__))


def tcp_login(srv, jid, resource):
    c = harness.RawClient(srv.host, srv.starttls_port, srv.domain)
    c.login(jid.split("@")[0], PW, resource)
    c.send("<presence/>")
    return c


def ws_login(srv, port, jid, resource, tls=False, mech="SCRAM-SHA-1"):
    c = WsClient(srv.host, port, srv.domain, tls=tls)
    if c.status != 101:
        raise RuntimeError("handshake answered %d" % c.status)
    feats = c.connect_tls()
    user = jid.split("@")[0]
    el = c.auth_plain(user, PW) if mech == "PLAIN" else \
        c.auth_scram(user, PW, mech)
    if el.tag != "{%s}success" % NS_SASL:
        raise RuntimeError("auth: %s" % el.tag)
    c.restart()
    c.bind(resource)
    c.feats = feats
    return c


def is_msg(body):
    return lambda e: e.tag == C + "message" and \
        (e.findtext(C + "body") or "") == body


def main():
    global srv
    http_port, https_port, slow_port = harness.free_ports(3)
    srv = harness.Server(
        max_stanza_size=16384,
        listeners_extra=(
            '{ protocol = "http"; address = "127.0.0.1"; port = %d; '
            'secure = true; },\n  '
            '{ protocol = "http"; address = "127.0.0.1"; port = %d; '
            'tls = "direct"; }' % (http_port, https_port)),
        c2s_extra="keepalive_interval = 0;")
    srv.start()
    alice, bob, carol = add_users(srv, harness.unique("wsa"),
                                  harness.unique("wsb"),
                                  harness.unique("wsc"))

    # ---- XEP-0156: the URL a client should use
    h = srv.host

    def host_meta(port, headers=None, tls=False):
        import http.client
        import ssl as ssl_
        if tls:
            conn = http.client.HTTPSConnection(
                h, port, timeout=10,
                context=ssl_._create_unverified_context())
        else:
            conn = http.client.HTTPConnection(h, port, timeout=10)
        conn.request("GET", "/.well-known/host-meta.json",
                     headers=dict({"Host": "localhost:%d" % port},
                                  **(headers or {})))
        body = conn.getresponse().read().decode()
        conn.close()
        return [ln["href"] for ln in json.loads(body).get("links", [])
                if ln.get("rel") == "urn:xmpp:alt-connections:websocket"]

    got = host_meta(http_port)
    check("host-meta on a plain listener declared secure: ws://",
          got == ["ws://localhost:%d/xmpp-websocket" % http_port], str(got))
    got = host_meta(http_port, {"X-Forwarded-Proto": "https"})
    check("...wss:// when its proxy says the client came over https",
          got == ["wss://localhost:%d/xmpp-websocket" % http_port], str(got))
    got = host_meta(https_port, tls=True)
    check("host-meta over TLS: wss://",
          got == ["wss://localhost:%d/xmpp-websocket" % https_port], str(got))

    # ---- the opening handshake
    st, hd, _ = handshake(h, http_port, [("Host", "localhost")])
    check("plain GET answered 426 Upgrade Required", st == 426 and
          hd.get("upgrade", "").lower() == "websocket", "%s %s" % (st, hd))
    st, _, _ = handshake(h, http_port, ws_headers(h, http_port, key="short"))
    check("a bad Sec-WebSocket-Key gets 400", st == 400, str(st))
    st, hd, _ = handshake(h, http_port, ws_headers(h, http_port,
                                                   version="8"))
    check("WebSocket version 8 gets 426 naming 13", st == 426 and
          hd.get("sec-websocket-version") == "13", "%s %s" % (st, hd))
    st, _, _ = handshake(h, http_port, ws_headers(h, http_port,
                                                  protocols="chat"))
    check("no xmpp subprotocol gets 400", st == 400, str(st))
    st, _, _ = handshake(h, http_port, ws_headers(
        h, http_port, origin="https://evil.example"))
    check("a foreign Origin gets 403", st == 403, str(st))
    c = WsClient(h, http_port, srv.domain,
                 origin="http://%s:%d" % (h, http_port))
    check("the page's own Origin is upgraded", c.status == 101 and
          c.headers.get("sec-websocket-protocol") == "xmpp",
          "%s %s" % (c.status, c.headers))
    c.close()

    # ---- a stream over WebSocket, a TCP client on the other side
    tb = tcp_login(srv, bob, "tcp")
    try:
        wa = ws_login(srv, http_port, alice, "ws")
        hdr = wa.header
        check("<open/> answered with <open/> (from, id, version 1.0)",
              hdr is not None and hdr.get("from") == srv.domain and
              hdr.get("id") and hdr.get("version") == "1.0", str(hdr))
        mechs = harness.RawClient.mechanisms(wa.feats)
        check("SASL offered on a listener declared secure",
              "SCRAM-SHA-1" in mechs and "PLAIN" in mechs, str(mechs))
        check("no STARTTLS over WebSocket", wa.feats.find(
            "{urn:ietf:params:xml:ns:xmpp-tls}starttls") is None)
        check("features parse as a standalone document",
              wa.feats.tag == "{%s}features" % NS_STREAM and
              wa.parse_error is None, str(wa.parse_error))
        wa.send("<presence/>")
        wa.send("<message xmlns='jabber:client' to='%s' type='chat'>"
                "<body>hello over ws</body></message>" % bob)
        got = tb.next(is_msg("hello over ws"))
        check("WebSocket -> TCP chat, from stamped",
              got.get("from") == wa.jid, got.get("from"))
        tb.send("<message to='%s' type='chat'><body>and back</body>"
                "</message>" % wa.jid)
        got = wa.next(is_msg("and back"))
        check("TCP -> WebSocket chat in jabber:client",
              got.tag == C + "message", got.tag)
        r = wa.iq("<ping xmlns='urn:xmpp:ping'/>", to=srv.domain)
        check("iq over WebSocket", r.get("type") == "result", r.get("type"))
        r = wa.iq("<enable xmlns='%s'/>" % NS_CARBONS, type_="set")
        check("carbons enabled over WebSocket", r.get("type") == "result",
              r.get("type"))
        # An idle stream naps (idle 2 s, the stream's 5 s timer): its
        # parser is freed; the next frames, fragmented ones with a control
        # frame inside too, are read as before.
        time.sleep(7.5)
        wa.send_frame(1, "<message xmlns='jabber:client' to='%s' "
                      "type='chat'><body>after" % bob, fin=False)
        wa.send_frame(9, "nap")
        wa.send_frame(0, " a nap</body></message>")
        got = tb.next(is_msg("after a nap"))
        check("a fragmented message with a ping inside, after a nap",
              got.get("from") == wa.jid, got.get("from"))
        r = wa.iq("<ping xmlns='urn:xmpp:ping'/>", to=srv.domain)
        check("iq after a nap", r.get("type") == "result", r.get("type"))
        # RFC 6455 §5.5.3: a pong carries the ping's payload (the one
        # inside the fragmented message above, then this one).
        wa.send_frame(9, "are you there")
        r = wa.iq("<ping xmlns='urn:xmpp:ping'/>", to=srv.domain)
        check("pings answered with pongs of their payloads",
              wa.pongs == [b"nap", b"are you there"], str(wa.pongs))
        # A frame cut anywhere (its header too) arrives over several reads.
        wa.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        raw = WsClient.frame(1, "<message xmlns='jabber:client' to='%s' "
                             "type='chat'><body>in pieces</body></message>"
                             % bob)
        for a, b in ((0, 1), (1, 5), (5, 40), (40, len(raw))):
            wa.sock.sendall(raw[a:b])
            time.sleep(0.1)
        got = tb.next(is_msg("in pieces"))
        check("a frame cut across reads, header included, is read whole",
              got.get("from") == wa.jid, got.get("from"))
        wa.send("<inactive xmlns='%s'/>" % NS_CSI)
        wa.send("<active xmlns='%s'/>" % NS_CSI)
        r = wa.iq("<ping xmlns='urn:xmpp:ping'/>", to=srv.domain)
        check("CSI accepted over WebSocket", r.get("type") == "result")
        els, tcp_closed = wa.close_handshake()
        check("<close/> answered with <close/>",
              els.tag == "{%s}close" % NS_FRAMING, els.tag)
        check("then a close frame 1000 and the connection closed",
              wa.close_code == 1000 and tcp_closed, str(wa.close_code))
    except Exception as e:  # noqa: BLE001
        check("WebSocket session", False, repr(e))

    # ---- TLS (wss)
    try:
        ws = ws_login(srv, https_port, carol, "wss", tls=True,
                      mech="SCRAM-SHA-256")
        r = ws.iq("<ping xmlns='urn:xmpp:ping'/>", to=srv.domain)
        check("wss: SCRAM-SHA-256, bind and iq", r.get("type") == "result")
        ws.close()
    except Exception as e:  # noqa: BLE001
        check("wss session", False, repr(e))

    # ---- stream management: resumption after the WebSocket dropped
    try:
        wa = ws_login(srv, http_port, alice, "sm")
        wa.send("<enable xmlns='%s' resume='true'/>" % NS_SM)
        en = wa.next(lambda e: e.tag == "{%s}enabled" % NS_SM)
        previd = en.get("id")
        wa.send("<presence/>")
        wa.close()  # the TCP connection drops: no <close/>
        tb.send("<message to='%s/sm' type='chat'><body>while away</body>"
                "</message>" % alice)
        wb = WsClient(h, http_port, srv.domain)
        wb.connect_tls()
        wb.auth_scram(alice.split("@")[0], PW)
        wb.restart()
        wb.send("<resume xmlns='%s' previd='%s' h='0'/>" % (NS_SM, previd))
        el = wb.next(lambda e: e.tag in ("{%s}resumed" % NS_SM,
                                         "{%s}failed" % NS_SM))
        check("XEP-0198 resumption over a new WebSocket",
              el.tag == "{%s}resumed" % NS_SM, el.tag)
        got = wb.next(is_msg("while away"))
        check("the message sent meanwhile arrives after resumption",
              got is not None)
        wb.close_handshake()
    except Exception as e:  # noqa: BLE001
        check("stream management over WebSocket", False, repr(e))

    def nbxmpp(url, logs_in, arrives):  # carol says hi to bob over url
        p = subprocess.run(
            ["/usr/bin/python3", os.path.join(HERE, "nbxmpp_ws_client.py"),
             url, carol, PW, bob],
            capture_output=True, text=True, timeout=60,
            env=dict(os.environ, PYTHONUNBUFFERED="1"))
        out = p.stdout.strip().splitlines()
        res = json.loads(out[-1]) if out else {}
        check(logs_in, res.get("connected"), (p.stdout + p.stderr)[-800:])
        got = tb.next(is_msg("hi from nbxmpp"), timeout=20)
        check(arrives, got.get("from", "").startswith(carol), got.get("from"))

    # ---- nbxmpp over WebSocket (a real third-party client)
    try:
        nbxmpp("ws://%s:%d/xmpp-websocket" % (h, http_port),
               "nbxmpp logs in over WebSocket",
               "nbxmpp's message reaches the TCP client")
    except Exception as e:  # noqa: BLE001
        check("nbxmpp over WebSocket", False, repr(e))

    # ---- nbxmpp over wss:// (libsoup's TLS is GnuTLS): after SASL the
    # session's TLS 1.3 records go to Parley's own record layer
    # (c2s.tls_handover), which GnuTLS must find exactly RFC 8446's.
    try:
        n0 = srv.counter("tls_handovers") or 0
        nbxmpp("wss://%s:%d/xmpp-websocket" % (h, https_port),
               "nbxmpp (GnuTLS) logs in over wss://",
               "nbxmpp's message over wss:// reaches the TCP client")
        check("its TLS records were handed over from OpenSSL after SASL",
              (srv.counter("tls_handovers") or 0) > n0,
              "tls_handovers %s, was %d" % (srv.counter("tls_handovers"), n0))
    except Exception as e:  # noqa: BLE001
        check("nbxmpp over wss://", False, repr(e))

    # ---- hostile frames: each closes only its own connection
    def hostile(name, send, code=None, stream_error=None, login=False):
        try:
            if login:
                c = ws_login(srv, http_port, carol, harness.unique("h"))
            else:
                c = WsClient(h, http_port, srv.domain)
                c.connect_tls()
            send(c)
            closed = c.read_until_closed()
            ok = closed
            if code is not None:
                ok = ok and c.close_code == code
            if stream_error is not None:
                ok = ok and any(
                    e.tag == "{%s}error" % NS_STREAM and
                    e.find("{urn:ietf:params:xml:ns:xmpp-streams}%s"
                           % stream_error) is not None for e in c.queue)
            check(name, ok, "closed=%s code=%s queue=%s" % (
                closed, c.close_code, [e.tag for e in c.queue]))
        except Exception as e:  # noqa: BLE001
            check(name, False, repr(e))

    hostile("an unmasked client frame closes with 1002",
            lambda c: c.send_frame(1, "<presence/>", mask=False), code=1002)
    hostile("invalid UTF-8 in a text frame closes with 1007",
            lambda c: c.send_frame(1, b"<message><body>\xff\xfe</body>"
                                   b"</message>"), code=1007)
    hostile("a binary frame closes with 1003",
            lambda c: c.send_frame(2, b"<presence/>"), code=1003)
    hostile("a message over the stanza limit closes with 1009",
            lambda c: c.send_frame(1, "<message><body>%s</body></message>"
                                   % ("x" * 40000)), code=1009)
    hostile("two elements in one message: <not-well-formed/>",
            lambda c: c.send("<presence/><presence/>"),
            stream_error="not-well-formed", login=True)
    hostile("half an element: <not-well-formed/>",
            lambda c: c.send("<message><body>"),
            stream_error="not-well-formed", login=True)
    hostile("a ping over 125 bytes closes with 1002",
            lambda c: c.send_frame(9, "p" * 126), code=1002)
    hostile("an RSV bit without an extension closes with 1002",
            lambda c: c.send_frame(1, "<presence/>", rsv=4), code=1002)
    hostile("a continuation frame outside a message closes with 1002",
            lambda c: c.send_frame(0, "<presence/>"), code=1002)
    hostile("a close frame is answered with its code, then TCP closes",
            lambda c: c.send_frame(8, struct.pack("!H", 1001) + b"bye"),
            code=1001)
    hostile("a fragmented message over the limit closes with 1009",
            lambda c: [c.send_frame(0 if i else 1, "x" * 9000,
                                    fin=False) for i in range(3)],
            code=1009)
    r = tb.iq("<ping xmlns='urn:xmpp:ping'/>", to=srv.domain)
    check("the TCP client is still served", r.get("type") == "result")

    # ---- a WebSocket that never authenticates: handshake_timeout
    s2 = harness.Server(handshake_timeout=2, label="timeout",
                        listeners_extra=(
                            '{ protocol = "http"; address = "127.0.0.1"; '
                            'port = %d; secure = true; }' % slow_port))
    s2.start()
    try:
        c = WsClient(h, slow_port, s2.domain)
        c.connect_tls()
        closed = c.read_until_closed(timeout=20)
        err = [e for e in c.queue if e.tag == "{%s}error" % NS_STREAM]
        check("unauthenticated past handshake_timeout: <connection-timeout/>",
              closed and err and err[0].find(
                  "{urn:ietf:params:xml:ns:xmpp-streams}connection-timeout")
              is not None, "closed=%s %s" % (closed, c.raw[-300:]))
    except Exception as e:  # noqa: BLE001
        check("handshake_timeout over WebSocket", False, repr(e))
    s2.stop()
    n = srv.counter("ws_sessions")
    check("ws_sessions counted", n is not None and n >= 8, str(n))
    tb.close()
    harness.finish()


if __name__ == "__main__":
    main()
