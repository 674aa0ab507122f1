#!/usr/bin/python3
"""test_sip_transport.py - the SIP front end's transports and transactions
(src/sip/), byte by byte with the tests' own UA (sipua.py), and SIPp.

parleyd listens for SIP over UDP and TCP on one port and over TLS on
another, with short timers (T1 = 100 ms, T2 = 400 ms, T4 = 500 ms) and
max_message_size = 8192.  Checked:
  - OPTIONS over UDP, TCP and TLS: 200 with Allow, Accept, Supported, the
    request's From, Call-ID, CSeq and Via (received and rport written in,
    RFC 3581), a To tag;
  - a retransmitted request is answered with the same bytes and handled
    once (the sip_requests_handled and sip_retransmissions counters);
  - a client transaction (parleyctl sip ping): the UA drops the first
    transmission, Timer E resends it after T1 byte for byte, the answer
    completes it and stops the retransmissions; unanswered, Timer F ends
    it with 408 after 64*T1, every retransmission counted;
  - refusals: malformed datagrams dropped, a bad field answered 400, a
    missing Call-ID 400, a CSeq of another method 400, SIP/3.0 505, an
    unknown method 501 with Allow, a known one not served 405 with Allow,
    INVITE 405 and its ACK absorbed, an unmatched CANCEL 481, another
    domain 404, a tel: URI 416, an unknown Require 420 with Unsupported,
    Max-Forwards 0 to a user 483 (to the server itself 200), no
    Max-Forwards accepted;
  - sizes: 513 over UDP and TCP (the stream goes on after the body);
    Content-Length shorter than the datagram's body (extra bytes dropped)
    and longer (400); on TCP, missing or negative: 400 and the connection
    closed;
  - TCP framing: a message written byte by byte, one split between
    headers and body, pipelined messages, keep-alive ping and pong;
  - floods: a UDP sender and a TCP sender pipelining hundreds of requests
    while another client is served;
  - SIPp (Debian's sip-tester) sends OPTIONS over UDP and TCP, all
    answered;
  - `parleyctl sip` lists the listeners; --check-config refuses
    tls = "starttls", t2 < t1, an out-of-range max_message_size, expiry
    bounds out of order and an unknown offline_messages.

Run with /usr/bin/python3; `scripts/run-tests sip_transport`.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, wait_for  # noqa: E402
from sipua import SipUA, parse  # noqa: E402

T1 = 0.1
MAX = 8192


def counter(srv, name):
    v = srv.counter(name)
    return v if v is not None else -1


def check_options_200(label, ua, resp, req):
    r = parse(req)
    via = resp.get("via") if resp else ""
    check("%s: OPTIONS answered 200 OK" % label,
          resp is not None and resp.code == 200, resp)
    if resp is None:
        return
    check("%s: the answer keeps From, Call-ID and CSeq" % label,
          resp.get("from") == r.get("from") and
          resp.get("call-id") == r.get("call-id") and
          resp.get("cseq") == r.get("cseq"), resp)
    check("%s: the Via gets rport=<source port> and received (RFC 3581)"
          % label, ";rport=%d" % ua.port in via and
          ";received=127.0.0.1" in via and r.get("via").split(";")[1] in via,
          via)
    check("%s: the To gets a tag" % label,
          ";tag=" in (resp.get("to") or ""), resp.get("to"))
    check("%s: Allow lists OPTIONS; Accept and Supported are present"
          % label, "OPTIONS" in (resp.get("allow") or "") and
          resp.get("accept") is not None and
          resp.get("supported") is not None, resp)
    check("%s: Content-Length 0" % label,
          resp.get("content-length") == "0", resp)


def transports(srv, sport, tport):
    for name, port in (("udp", sport), ("tcp", sport), ("tls", tport)):
        ua = SipUA(srv.host, port, name)
        req = ua.request("OPTIONS", "sip:localhost")
        check_options_200("OPTIONS over " + name.upper(), ua,
                          ua.transact(req), req)
        ua.close()


def retransmission(srv, sport):
    ua = SipUA(srv.host, sport, "udp")
    req = ua.request("OPTIONS", "sip:localhost")
    h0 = counter(srv, "sip_requests_handled")
    r0 = counter(srv, "sip_retransmissions")
    ua.send(req)
    first = ua.recv_raw(5)
    ua.send(req)
    second = ua.recv_raw(5)
    check("retransmission: answered with the same bytes",
          first is not None and first == second, (first, second))
    check("retransmission: absorbed by the transaction (counted once)",
          wait_for(lambda: counter(srv, "sip_retransmissions") == r0 + 1, 5),
          counter(srv, "sip_retransmissions"))
    check("retransmission: the request reached its handler once",
          counter(srv, "sip_requests_handled") == h0 + 1,
          counter(srv, "sip_requests_handled") - h0)
    # Over TCP a retransmission is the same request again on the stream.
    tcp = SipUA(srv.host, sport, "tcp")
    req = tcp.request("OPTIONS", "sip:localhost")
    a = tcp.transact(req)
    b = tcp.transact(req)
    check("retransmission over TCP: the same answer again",
          a is not None and b is not None and a.raw == b.raw, (a, b))
    ua.close()
    tcp.close()


def ping(srv, target, out):
    out["result"] = srv.ctl("sip", "ping", "--json", target, timeout=30)


def client_transaction(srv, sport):
    ua = SipUA(srv.host, sport, "udp")
    out = {}
    th = threading.Thread(target=ping,
                          args=(srv, "127.0.0.1:%d" % ua.port, out))
    th.start()
    first = ua.recv_raw(10)
    t_first = time.monotonic()
    second = ua.recv_raw(5)
    t_second = time.monotonic()
    check("client transaction: the OPTIONS arrives",
          first is not None and first.startswith(b"OPTIONS sip:127.0.0.1:"),
          first)
    if first is None:
        th.join(30)
        return
    req = parse(first)
    via = req.get("via") or ""
    check("client transaction: Via with our sent-by, a z9hG4bK branch and "
          "rport", via.startswith("SIP/2.0/UDP 127.0.0.1:%d;branch=z9hG4bK"
                                  % sport) and via.endswith(";rport"), via)
    check("client transaction: CSeq 1 OPTIONS, Max-Forwards 70, a From tag",
          req.get("cseq") == "1 OPTIONS" and
          req.get("max-forwards") == "70" and
          ";tag=" in (req.get("from") or ""), req)
    check("client transaction: the first transmission dropped, Timer E "
          "resends it byte for byte", second == first, second)
    check("client transaction: Timer E fired after T1",
          t_second - t_first >= T1 * 0.9, t_second - t_first)
    ua.reply_to_server(ua.answer(parse(second), 200), ua.last_from)
    th.join(30)
    rc, text = out.get("result", (None, ""))
    try:
        j = json.loads(text)
    except ValueError:
        j = {}
    check("client transaction: parleyctl sip ping reports 200 after one "
          "retransmission", rc == 0 and j.get("code") == 200 and
          j.get("retransmissions") == 1 and j.get("answered") is True,
          (rc, text))
    check("client transaction: no retransmission after the answer",
          ua.recv_raw(5 * T1) is None)
    ua.close()

    # Never answered: Timer F, 64*T1.
    ua = SipUA(srv.host, sport, "udp")
    out = {}
    th = threading.Thread(target=ping,
                          args=(srv, "127.0.0.1:%d" % ua.port, out))
    t0 = time.monotonic()
    th.start()
    got = 0
    while th.is_alive() or got == 0:
        if ua.recv_raw(0.5) is not None:
            got += 1
        elif not th.is_alive() or time.monotonic() - t0 > 30:
            break
    th.join(30)
    took = time.monotonic() - t0
    rc, text = out.get("result", (None, ""))
    try:
        j = json.loads(text)
    except ValueError:
        j = {}
    check("client transaction: unanswered, Timer F ends it with 408 after "
          "64*T1", rc == 1 and j.get("code") == 408 and
          j.get("answered") is False and took >= 64 * T1 * 0.95,
          (rc, text, took))
    check("client transaction: every Timer E retransmission reached the "
          "peer (T1, 2*T1, then T2)", j.get("retransmissions") == got - 1
          and got >= 12, (got, j))
    ua.close()


def refusals(srv, sport):
    ua = SipUA(srv.host, sport, "udp")

    def ask(label, raw, code, field=None, value=None):
        resp = ua.transact(raw, 3)
        ok = resp is not None and resp.code == code
        if ok and field:
            ok = value in (resp.get(field) or "")
        check(label, ok, resp)
        return resp

    def silent(label, raw):
        d0 = counter(srv, "sip_dropped")
        ua.send(raw)
        check(label, ua.recv_raw(0.5) is None and
              wait_for(lambda: counter(srv, "sip_dropped") > d0, 5))

    silent("garbage datagram: dropped, no answer",
           b"hello there\r\n\r\n")
    silent("a request without Via: dropped (nothing to answer)",
           ua.request("OPTIONS", "sip:localhost", omit=("Via",)))
    ask("a malformed field (unterminated quote in To): 400",
        ua.request("OPTIONS", "sip:localhost",
                   to='"Mr J. User <sip:j@localhost>'), 400)
    ask("a missing Call-ID: 400 (RFC 3261 §8.1.1)",
        ua.request("OPTIONS", "sip:localhost", omit=("Call-ID",)), 400)
    ask("a missing From: 400",
        ua.request("OPTIONS", "sip:localhost", omit=("From",)), 400)
    ask("a CSeq naming another method: 400",
        ua.request("OPTIONS", "sip:localhost", cseq="1 INVITE"), 400)
    ask("no Max-Forwards: accepted (RFC 3261 §16.3 step 3)",
        ua.request("OPTIONS", "sip:localhost", max_forwards=None), 200)
    ask("Max-Forwards 300: 400",
        ua.request("OPTIONS", "sip:localhost", max_forwards=300), 400)
    ask("SIP/3.0: 505 Version Not Supported",
        ua.request("OPTIONS", "sip:localhost").replace(
            b"sip:localhost SIP/2.0", b"sip:localhost SIP/3.0", 1), 505)
    ask("an unknown method: 501 with Allow",
        ua.request("FROBNICATE", "sip:localhost"), 501, "allow", "OPTIONS")
    ask("NOTIFY outside a subscription (not served): 405 with Allow",
        ua.request("NOTIFY", "sip:bob@localhost"), 405, "allow",
        "OPTIONS")
    inv = ua.request("INVITE", "sip:bob@localhost")
    ask("INVITE: 405 Method Not Allowed with Allow", inv, 405, "allow",
        "OPTIONS")
    ack = inv.replace(b"INVITE sip:", b"ACK sip:", 1).replace(
        b" INVITE\r\n", b" ACK\r\n")
    ua.send(ack)
    check("the ACK of the 405: absorbed, no answer", ua.recv_raw(0.5) is None)
    ask("an unmatched CANCEL: 481",
        ua.request("CANCEL", "sip:bob@localhost"), 481)
    ask("another domain: 404 (RFC 3261 §8.2.2.1)",
        ua.request("OPTIONS", "sip:example.org"), 404)
    ask("a tel: Request-URI: 416 Unsupported URI Scheme",
        ua.request("OPTIONS", "tel:+15551234567"), 416)
    ask("Require with unknown option tags: 420, Unsupported lists them",
        ua.request("OPTIONS", "sip:localhost",
                   extra="Require: 100rel, frobs\r\n"),
        420, "unsupported", "100rel, frobs")
    ask("Max-Forwards 0 to a user: 483 Too Many Hops",
        ua.request("OPTIONS", "sip:alice@localhost", max_forwards=0), 483)
    ask("Max-Forwards 0 to the server itself: OPTIONS answered 200",
        ua.request("OPTIONS", "sip:localhost", max_forwards=0), 200)
    ask("a Request-URI of the server's address: 200",
        ua.request("OPTIONS", "sip:127.0.0.1:%d" % sport), 200)
    ua.close()


def sizes(srv, sport):
    ua = SipUA(srv.host, sport, "udp")
    body = b"x" * (MAX + 100)
    resp = ua.transact(ua.request("OPTIONS", "sip:localhost", body=body,
                                  extra="Content-Type: text/plain\r\n"), 3)
    check("UDP: a message over max_message_size: 513 Message Too Large",
          resp is not None and resp.code == 513, resp)
    req = ua.request("OPTIONS", "sip:localhost", body=b"abc",
                     content_length=10,
                     extra="Content-Type: text/plain\r\n")
    resp = ua.transact(req, 3)
    check("UDP: a body shorter than Content-Length: 400 (RFC 3261 §18.3)",
          resp is not None and resp.code == 400 and
          "Content-Length" in resp.reason, resp)
    req = ua.request("OPTIONS", "sip:localhost", body=b"abcdef",
                     content_length=2,
                     extra="Content-Type: text/plain\r\n")
    resp = ua.transact(req, 3)
    check("UDP: bytes past Content-Length are discarded: 200",
          resp is not None and resp.code == 200, resp)
    ua.close()

    tcp = SipUA(srv.host, sport, "tcp")
    resp = tcp.transact(tcp.request("OPTIONS", "sip:localhost", body=body,
                                    extra="Content-Type: text/plain\r\n"))
    check("TCP: a message over max_message_size: 513",
          resp is not None and resp.code == 513, resp)
    resp = tcp.transact(tcp.request("OPTIONS", "sip:localhost"))
    check("TCP: the stream goes on after the too-large body: 200",
          resp is not None and resp.code == 200, resp)
    tcp.close()
    for label, raw in (
            ("missing", tcp.request("OPTIONS", "sip:localhost",
                                    omit=("Content-Length",))),
            ("negative", tcp.request("OPTIONS", "sip:localhost",
                                     content_length=-5))):
        tcp = SipUA(srv.host, sport, "tcp")
        resp = tcp.transact(raw)
        check("TCP: Content-Length %s: 400" % label,
              resp is not None and resp.code == 400, resp)
        check("TCP: Content-Length %s: then the connection is closed" % label,
              tcp.closed_by_peer(5))
        tcp.close()


def framing(srv, sport):
    tcp = SipUA(srv.host, sport, "tcp")
    req = tcp.request("OPTIONS", "sip:localhost")
    for i in range(len(req)):
        tcp.send(req[i:i + 1])
    resp = tcp.recv(5)
    check("TCP: a request written byte by byte: 200",
          resp is not None and resp.code == 200, resp)
    req = tcp.request("OPTIONS", "sip:localhost", body=b"hello",
                      extra="Content-Type: text/plain\r\n")
    cut = req.index(b"\r\n\r\n") + 4
    tcp.send(req[:cut])
    tcp.send(req[cut:])
    resp = tcp.recv(5)
    check("TCP: headers and body in two writes: 200",
          resp is not None and resp.code == 200, resp)
    reqs = [tcp.request("OPTIONS", "sip:localhost") for _ in range(3)]
    tcp.send(b"\r\n" + b"".join(reqs))
    got = [tcp.recv(5) for _ in range(3)]
    check("TCP: three pipelined requests: three answers, in order",
          all(g is not None and g.code == 200 for g in got) and
          [g.get("cseq") for g in got] ==
          [parse(r).get("cseq") for r in reqs], got)
    tcp.send(b"\r\n\r\n")
    check("TCP: a double-CRLF keep-alive is answered with CRLF "
          "(RFC 5626 §3.5.1)", tcp.recv_raw(5) == b"\r\n")
    resp = tcp.transact(tcp.request("OPTIONS", "sip:localhost"))
    check("TCP: served after the keep-alive", resp is not None and
          resp.code == 200, resp)
    tcp.close()


def floods(srv, sport):
    h0 = counter(srv, "sip_requests_handled")
    stop = threading.Event()
    sent = [0]

    def udp_flood():
        ua = SipUA(srv.host, sport, "udp")
        ua.sock.setblocking(False)
        while not stop.is_set() and sent[0] < 4000:
            raw = (ua.request("OPTIONS", "sip:localhost") if sent[0] % 2
                   else b"OPTIONS garbage\r\n\r\n")
            try:
                ua.send(raw)
                sent[0] += 1
            except OSError:
                time.sleep(0.001)
        ua.close()

    th = threading.Thread(target=udp_flood)
    th.start()
    tcp = SipUA(srv.host, sport, "tcp")
    reqs = [tcp.request("OPTIONS", "sip:localhost") for _ in range(300)]
    tcp.send(b"".join(reqs))
    other = SipUA(srv.host, sport, "udp")
    t0 = time.monotonic()
    # Over UDP the flood may fill the socket's buffer, so the kernel
    # drops datagrams: the client retransmits, as SIP clients do.
    resp = other.transact(other.request("OPTIONS", "sip:localhost"), 10,
                          retransmit=True)
    check("flood: another client is served during a UDP and a TCP flood",
          resp is not None and resp.code == 200,
          "after %.1f s" % (time.monotonic() - t0))
    answered = 0
    while answered < 300:
        m = tcp.recv(10)
        if m is None:
            break
        answered += m.code == 200
    check("flood: every pipelined TCP request is answered", answered == 300,
          answered)
    stop.set()
    th.join(30)
    check("flood: the flooding requests were handled",
          counter(srv, "sip_requests_handled") >= h0 + 300 + 1,
          counter(srv, "sip_requests_handled") - h0)
    tcp.close()
    other.close()


def sipp(srv, sport):
    if not shutil.which("sipp"):
        check("SIPp (sip-tester) is installed", False,
              "run scripts/bootstrap --test")
        return
    scenario = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                            "sipp", "options.xml")
    for transport in ("u1", "t1"):
        lport, = harness.free_ports(1)
        argv = ["sipp", "127.0.0.1:%d" % sport, "-sf", scenario,
                "-t", transport, "-i", "127.0.0.1", "-p", str(lport),
                "-m", "200", "-r", "200", "-timeout", "30", "-nostdin",
                "-trace_err"]
        try:
            p = subprocess.run(argv, cwd=srv.dir, stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, timeout=60)
            rc, out = p.returncode, p.stdout.decode("utf-8", "replace")
        except subprocess.TimeoutExpired as e:
            rc, out = None, str(e)
        check("SIPp: 200 OPTIONS over %s, every one answered 200"
              % ("UDP" if transport == "u1" else "TCP"), rc == 0,
              (rc, out[-800:]))


def operations(srv, sport, tport):
    rc, out = srv.ctl("sip", "--json")
    try:
        j = json.loads(out)
    except ValueError:
        j = {}
    got = sorted((ls.get("transport"), ls.get("port"))
                 for ls in j.get("listeners", []))
    check("parleyctl sip: lists the UDP, TCP and TLS listeners",
          rc == 0 and got == sorted([("udp", sport), ("tcp", sport),
                                     ("tls", tport)]), (rc, out))
    check("parleyctl sip: counts transactions and connections",
          "server" in j.get("transactions", {}) and
          "tcp" in j.get("connections", {}), out)
    rc, out = srv.ctl("sip")
    check("parleyctl sip: a table", rc == 0 and "transactions:" in out, out)


def check_config(srv):
    d = tempfile.mkdtemp(prefix="parley-sipconf-")
    try:
        cases = (
            ('listeners = ( { protocol = "sip"; port = 5999; tls = '
             '"starttls"; } );', "SIP has no STARTTLS"),
            ('sip: { t1 = 500; t2 = 100; };', "t2 must be at least t1"),
            ('sip: { max_message_size = 10; };', "max_message_size"),
            ('sip: { min_expires = 600; default_expires = 60; };',
             "min_expires <= default_expires <= max_expires"),
            ('sip: { offline_messages = "drop"; };', "offline_messages"),
        )
        for conf, needle in cases:
            path = os.path.join(d, "p.conf")
            with open(path, "w") as f:
                f.write('server: { data_dir = "%s"; };\n'
                        'hosts = ( { domain = "localhost"; } );\n%s\n'
                        % (d, conf))
            p = subprocess.run([srv.bin, "--config", path, "--check-config"],
                               stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, timeout=30)
            out = p.stdout.decode("utf-8", "replace")
            check("--check-config refuses %s" % conf,
                  p.returncode != 0 and needle in out, (p.returncode, out))
    finally:
        shutil.rmtree(d, ignore_errors=True)


def main():
    sport, tport = harness.free_ports(2)
    lx = ('{ protocol = "sip"; address = "127.0.0.1"; port = %d; '
          'transport = "udp"; },\n'
          '  { protocol = "sip"; address = "127.0.0.1"; port = %d; },\n'
          '  { protocol = "sip"; address = "127.0.0.1"; port = %d; '
          'tls = "direct"; }' % (sport, sport, tport))
    srv = harness.Server(
        listeners_extra=lx,
        extra="sip: { max_message_size = %d; t1 = %d; t2 = 400; t4 = 500; };"
              % (MAX, int(T1 * 1000)))
    if not srv.start():
        harness.finish()
    transports(srv, sport, tport)
    retransmission(srv, sport)
    client_transaction(srv, sport)
    refusals(srv, sport)
    sizes(srv, sport)
    framing(srv, sport)
    floods(srv, sport)
    sipp(srv, sport)
    operations(srv, sport, tport)
    check_config(srv)
    harness.finish()


if __name__ == "__main__":
    main()
