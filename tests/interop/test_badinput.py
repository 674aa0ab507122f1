#!/usr/bin/python3
"""test_badinput.py - Parley's answers to bad and hostile input, on raw
sockets.

1. Stream errors (RFC 6120 §4.9.3): for each bad input, the exact error
   condition in urn:ietf:params:xml:ns:xmpp-streams, then
   </stream:stream>, then the server closes TCP (all bounded).
2. SASL failures (RFC 6120 §6.4-6.5, RFC 5802): what TLS hides, wrong
   proofs, bad base64, unknown mechanisms, aborts, channel-binding
   downgrades.
3. Limits: a stanza just under max_stanza_size passes, one over it is a
   <policy-violation/> also after authentication.
4. Churn: 1,000 rapid connects/disconnects (some with partial headers or
   TLS handshakes) while a logged-in client pings; every ping must be
   answered, descriptors must not leak, and a new client can log in.
5. Deadlines: handshake_timeout closes what never authenticates; a
   listeners entry's own handshake_timeout and idle_timeout apply on its
   port only, and an idle timeout leaves a stream-managed session
   resumable (XEP-0198 §5).

Run with /usr/bin/python3.
"""

import base64
import os
import random
import socket
import ssl
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import (NS_SASL, NS_STREAM, NS_STREAMS_ERR, NS_TLS,  # noqa: E402
                     RawClient, StreamClosed, check, note, tostr)

MAX_STANZA = 65536
MAX_DEPTH = 32
CLOSE_WAIT = 4        # seconds the server gets to send the error and close
CHURN = 1000
srv = None

HEADER = (b"<stream:stream to='localhost' version='1.0' "
          b"xmlns='jabber:client' "
          b"xmlns:stream='http://etherx.jabber.org/streams'>")
XMLDECL = b"<?xml version='1.0'?>"
AUTH_OPEN = ("<auth xmlns='%s' mechanism='PLAIN'>" % NS_SASL).encode()


def send_lenient(c, data, chunk=16384):
    """Sends data; the server may close mid-way, which is its right."""
    try:
        for i in range(0, len(data), chunk):
            c.send(data[i:i + chunk])
    except OSError:
        pass


def stream_error_of(c):
    """(condition, element) of the first <stream:error/> received."""
    for el in c.queue:
        if el.tag == "{%s}error" % NS_STREAM:
            for child in el:
                if child.tag.startswith("{%s}" % NS_STREAMS_ERR) and \
                        not child.tag.endswith("}text"):
                    return child.tag.split("}", 1)[1], el
            return "(no condition)", el
    return None, None


def expect_stream_error(name, cond, data, port=None, tls=False, client=None):
    """Sends data on a fresh connection (or on client) and checks the
    stream error, the closing tag and the TCP close."""
    try:
        c = client or RawClient(srv.host, port or srv.starttls_port,
                                srv.domain, direct_tls=tls, timeout=5)
    except OSError as e:
        check("%s: connect" % name, False, repr(e))
        return
    try:
        send_lenient(c, data)
        closed = c.read_until_closed(CLOSE_WAIT)
        got, el = stream_error_of(c)
        reply = c.raw[-700:]
        check("%s: <%s/> stream error" % (name, cond), got == cond,
              "got %s; sent %r; reply %r" % (
                  got, data[:160] + (b"..." if len(data) > 160 else b""),
                  reply))
        check("%s: </stream:stream> follows the error" % name,
              c.stream_ended and el is not None,
              "reply %r%s" % (reply, " (unparsable: %s)" % c.parse_error
                              if c.parse_error else ""))
        check("%s: server closes the TCP connection" % name, closed,
              "still open after %d s" % CLOSE_WAIT)
    finally:
        c.close()


# ------------------------------------------------------- 1. stream errors

def stream_errors():
    tls_port = srv.direct_port
    cases = [
        # name, condition, bytes, on direct TLS
        ("malformed XML", "not-well-formed",
         XMLDECL + HEADER + b"<message to='a@localhost'><<body/></message>",
         False),
        ("mismatched tags", "not-well-formed",
         XMLDECL + HEADER + ("<starttls xmlns='%s'></proceed>"
                             % NS_TLS).encode(), False),
        ("unbound prefix", "not-well-formed",
         XMLDECL + HEADER + b"<foo:bar/>", False),
        ("DOCTYPE", "restricted-xml",
         XMLDECL + b"<!DOCTYPE stream:stream>" + HEADER, False),
        ("entity declaration", "restricted-xml",
         XMLDECL + b"<!DOCTYPE stream:stream [<!ENTITY lol 'lol'>]>"
         + HEADER + b"<message><body>&lol;</body></message>", False),
        ("comment", "restricted-xml",
         XMLDECL + HEADER + b"<!-- a comment -->", False),
        ("processing instruction", "restricted-xml",
         XMLDECL + HEADER + b"<?parley do-something?>", False),
        ("invalid UTF-8 (0xFF)", "not-well-formed",
         XMLDECL + HEADER + b"\xff\xfe\xfd", False),
        ("invalid UTF-8 (overlong '/' in an attribute)", "not-well-formed",
         XMLDECL + HEADER + ("<starttls xmlns='%s' x='\xc0\xaf'/>"
                             % NS_TLS).encode("latin-1"), False),
        ("ISO-8859-1 encoding declaration", "unsupported-encoding",
         b"<?xml version='1.0' encoding='ISO-8859-1'?>" + HEADER, False),
        ("wrong stream namespace", "invalid-namespace",
         XMLDECL + b"<stream:stream to='localhost' version='1.0' "
         b"xmlns='jabber:client' "
         b"xmlns:stream='http://etherx.jabber.org/streams/wrong'>", False),
        ("wrong content namespace", "invalid-namespace",
         XMLDECL + b"<stream:stream to='localhost' version='1.0' "
         b"xmlns='jabber:bogus' "
         b"xmlns:stream='http://etherx.jabber.org/streams'>", False),
        ("unknown 'to' domain", "host-unknown",
         XMLDECL + b"<stream:stream to='no-such-host.example' "
         b"version='1.0' xmlns='jabber:client' "
         b"xmlns:stream='http://etherx.jabber.org/streams'>", False),
        ("oversized element before TLS", "policy-violation",
         XMLDECL + HEADER + ("<starttls xmlns='%s'>" % NS_TLS).encode()
         + b"A" * (MAX_STANZA + 4096) + b"</starttls>", False),
        ("deep nesting before TLS", "policy-violation",
         XMLDECL + HEADER + ("<starttls xmlns='%s'>" % NS_TLS).encode()
         + b"<a>" * (MAX_DEPTH * 4) + b"</a>" * (MAX_DEPTH * 4)
         + b"</starttls>", False),
        # Inside TLS, not authenticated.
        ("TLS: malformed XML", "not-well-formed",
         XMLDECL + HEADER + b"<iq type='get' id='1'></message>", True),
        ("TLS: comment", "restricted-xml",
         XMLDECL + HEADER + b"<!-- hidden in TLS -->", True),
        ("TLS: message before authentication", "not-authorized",
         XMLDECL + HEADER + b"<message to='someone@localhost' type='chat'>"
         b"<body>hi</body></message>", True),
        ("TLS: iq before authentication", "not-authorized",
         XMLDECL + HEADER + b"<iq type='get' id='p1' to='localhost'>"
         b"<ping xmlns='urn:xmpp:ping'/></iq>", True),
        ("TLS: presence before authentication", "not-authorized",
         XMLDECL + HEADER + b"<presence/>", True),
        ("TLS: oversized SASL element", "policy-violation",
         XMLDECL + HEADER + AUTH_OPEN + b"A" * (MAX_STANZA + 4096)
         + b"</auth>", True),
        ("TLS: deep nesting", "policy-violation",
         XMLDECL + HEADER + AUTH_OPEN + b"<a>" * (MAX_DEPTH * 4)
         + b"</a>" * (MAX_DEPTH * 4) + b"</auth>", True),
    ]
    for name, cond, data, tls in cases:
        expect_stream_error(name, cond, data,
                            port=tls_port if tls else srv.starttls_port,
                            tls=tls)


# ------------------------------------------------------------- 2. SASL

def sasl_failure(el):
    if el is None or el.tag != "{%s}failure" % NS_SASL:
        return None
    for child in el:
        if not child.tag.endswith("}text"):
            return child.tag.split("}", 1)[1]
    return "(none)"


def sasl_checks(user, password):
    c = RawClient(srv.host, srv.starttls_port, srv.domain, timeout=5)
    try:
        c.open_stream()
        feats = c.features()
        st = feats.find("{%s}starttls" % NS_TLS)
        check("features before TLS offer STARTTLS as <required/>",
              st is not None and st.find("{%s}required" % NS_TLS) is not None,
              tostr(feats))
        mechs = RawClient.mechanisms(feats)
        check("SASL PLAIN is not offered before TLS", "PLAIN" not in mechs,
              "mechanisms before TLS: %s" % mechs)
        c.send("<auth xmlns='%s' mechanism='PLAIN'>%s</auth>" % (
            NS_SASL, "AHVzZXIAcGFzcw=="))
        try:
            el = c.next(timeout=5)
            res = tostr(el)
            ok = el.tag != "{%s}success" % NS_SASL
        except (StreamClosed, TimeoutError) as e:
            res, ok = repr(e), True
        check("SASL PLAIN before TLS is refused (RFC 6120 §5.3.1)", ok, res)
    except (OSError, StreamClosed, TimeoutError, RuntimeError) as e:
        check("pre-TLS feature checks run", False, repr(e))
    finally:
        c.close()

    def tls_stream():
        cl = RawClient(srv.host, srv.direct_port, srv.domain,
                       direct_tls=True, timeout=5)
        cl.open_stream()
        return cl, cl.features()

    try:
        c, feats = tls_stream()
        mechs = RawClient.mechanisms(feats)
        for m in ("SCRAM-SHA-1", "SCRAM-SHA-256", "PLAIN",
                  "SCRAM-SHA-1-PLUS", "SCRAM-SHA-256-PLUS"):
            check("SASL %s is offered inside TLS" % m, m in mechs,
                  "mechanisms: %s" % mechs)
        check("XEP-0077 stream feature is advertised (SHOULD)",
              feats.find("{http://jabber.org/features/iq-register}register")
              is not None, tostr(feats))
        el = c.auth_scram(user, password + "x", "SCRAM-SHA-1")
        check("SCRAM-SHA-1 with a wrong password: <not-authorized/>",
              sasl_failure(el) == "not-authorized", tostr(el))
        c.close()

        c, _ = tls_stream()
        el = c.auth_scram(user, password, "SCRAM-SHA-256")
        check("raw SCRAM-SHA-256 login (server signature verified)",
              el.tag == "{%s}success" % NS_SASL, tostr(el))
        c.close()

        for m in ("SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS"):
            if m not in mechs:
                continue
            c, _ = tls_stream()
            el = c.auth_scram(user, password, m,
                              cb_type="tls-server-end-point")
            check("raw %s with tls-server-end-point logs in" % m,
                  el.tag == "{%s}success" % NS_SASL, tostr(el))
            c.close()
        if "SCRAM-SHA-256-PLUS" in mechs:
            c = RawClient(srv.host, srv.starttls_port, srv.domain, timeout=5)
            c.connect_tls()
            el = c.auth_scram(user, password, "SCRAM-SHA-256-PLUS",
                              cb_type="tls-server-end-point")
            check("raw SCRAM-SHA-256-PLUS after STARTTLS logs in",
                  el.tag == "{%s}success" % NS_SASL, tostr(el))
            c.close()
            c, _ = tls_stream()
            el = c.auth_scram(user, password, "SCRAM-SHA-256-PLUS",
                              cb_type="tls-server-end-point",
                              cb_data=b"\0" * 32)
            check("SCRAM-SHA-256-PLUS with wrong binding data is refused",
                  el.tag != "{%s}success" % NS_SASL, tostr(el))
            c.close()
            c, _ = tls_stream()
            el = c.auth_scram(user, password, "SCRAM-SHA-256-PLUS",
                              gs2="n,,")
            check("SCRAM-SHA-256-PLUS without binding (flag 'n') is refused",
                  el.tag != "{%s}success" % NS_SASL, tostr(el))
            c.close()
            c, _ = tls_stream()
            el = c.auth_scram(user, password, "SCRAM-SHA-256-PLUS",
                              cb_type="tls-unique",
                              cb_data=os.urandom(12))
            check("SCRAM-SHA-256-PLUS with wrong tls-unique data is refused",
                  el.tag != "{%s}success" % NS_SASL, tostr(el))
            c.close()
            # COMPAT (c2s.tls_unique, on by default): the Finished-message
            # binding clients such as slixmpp compute, also over TLS 1.3.
            c, _ = tls_stream()
            el = c.auth_scram(user, password, "SCRAM-SHA-256-PLUS",
                              cb_type="tls-unique",
                              cb_data=c.sock.get_channel_binding("tls-unique"))
            check("SCRAM-SHA-256-PLUS with the right tls-unique data logs in",
                  el.tag == "{%s}success" % NS_SASL, tostr(el))
            c.close()

        c, _ = tls_stream()
        plus = "SCRAM-SHA-1-PLUS" in mechs
        el = c.auth_scram(user, password, "SCRAM-SHA-1", gs2="y,,")
        if plus:
            check("SCRAM gs2 flag 'y' while -PLUS is offered is refused "
                  "(RFC 5802 §6 downgrade)",
                  el.tag != "{%s}success" % NS_SASL, tostr(el))
        else:
            check("SCRAM gs2 flag 'y' without -PLUS offered succeeds",
                  el.tag == "{%s}success" % NS_SASL, tostr(el))
        c.close()

        c, _ = tls_stream()
        c.send("<auth xmlns='%s' mechanism='PLAIN'>!!not base64!!</auth>"
               % NS_SASL)
        el = c.next(timeout=5)
        check("SASL payload that is not base64: <incorrect-encoding/> "
              "(RFC 6120 §6.5.2)", sasl_failure(el) == "incorrect-encoding",
              tostr(el))
        c.close()

        c, _ = tls_stream()
        c.send("<auth xmlns='%s' mechanism='X-NO-SUCH-MECH'/>" % NS_SASL)
        el = c.next(timeout=5)
        check("unknown SASL mechanism: <invalid-mechanism/> "
              "(RFC 6120 §6.5.5)", sasl_failure(el) == "invalid-mechanism",
              tostr(el))
        c.close()

        c, _ = tls_stream()
        first = base64.b64encode(("n,,n=%s,r=abcdefghijklmnop" % user)
                                 .encode()).decode()
        c.send("<auth xmlns='%s' mechanism='SCRAM-SHA-1'>%s</auth>" % (
            NS_SASL, first))
        el = c.next(timeout=5)
        if el.tag == "{%s}challenge" % NS_SASL:
            c.send("<abort xmlns='%s'/>" % NS_SASL)
            el = c.next(timeout=5)
            check("SASL <abort/> after a challenge: <aborted/> "
                  "(RFC 6120 §6.5.1)", sasl_failure(el) == "aborted",
                  tostr(el))
        else:
            check("SCRAM first message gets a challenge", False, tostr(el))
        c.close()

        c, _ = tls_stream()
        el = c.auth_plain(user, password)
        check("SASL PLAIN inside TLS logs in",
              el.tag == "{%s}success" % NS_SASL, tostr(el))
        c.close()
    except (OSError, StreamClosed, TimeoutError, RuntimeError,
            KeyError) as e:
        check("SASL checks run", False, repr(e))
        c.close()


# ------------------------------------------------------------ 3. limits

def limit_checks(user, password):
    try:
        c = RawClient(srv.host, srv.direct_port, srv.domain, direct_tls=True)
        me = c.login(user, password, "limits")
    except (OSError, StreamClosed, TimeoutError, RuntimeError) as e:
        check("limits: login", False, repr(e))
        return
    try:
        # A stanza comfortably below the limit must pass (to ourselves).
        body = "x" * (MAX_STANZA - 2048)
        c.send("<message to='%s' type='chat' id='big1'><body>%s</body>"
               "</message>" % (me, body))
        el = c.next(lambda e: e.get("id") == "big1", 10)
        got = el.findtext("{jabber:client}body") or ""
        check("a %d-byte stanza (under max_stanza_size) is delivered"
              % (len(body) + 80), el.get("type") == "chat"
              and len(got) == len(body),
              "reply type %s, body length %d" % (el.get("type"), len(got)))
    except (OSError, StreamClosed, TimeoutError) as e:
        check("a stanza under max_stanza_size is delivered", False,
              "%r; reply %r" % (e, c.raw[-300:]))
    expect_stream_error(
        "authenticated: oversized message", "policy-violation",
        ("<message to='%s' type='chat'><body>" % me).encode()
        + b"y" * (MAX_STANZA + 1024) + b"</body></message>", client=c)
    try:
        c = RawClient(srv.host, srv.direct_port, srv.domain, direct_tls=True)
        me = c.login(user, password, "depth")
    except (OSError, StreamClosed, TimeoutError, RuntimeError) as e:
        check("limits: second login", False, repr(e))
        return
    expect_stream_error(
        "authenticated: deep nesting", "policy-violation",
        ("<message to='%s'>" % me).encode() + b"<x>" * (MAX_DEPTH * 2)
        + b"</x>" * (MAX_DEPTH * 2) + b"</message>", client=c)


# ------------------------------------------------------------- 4. churn

class Pinger(threading.Thread):
    """A logged-in raw client that pings the server until told to stop."""

    def __init__(self, user, password):
        super().__init__(daemon=True)
        self.user, self.password = user, password
        self.sent = self.answered = 0
        self.failures = []
        self.max_rtt = 0.0
        self.stop_flag = threading.Event()
        self.ready = threading.Event()
        self.error = None

    def run(self):
        try:
            c = RawClient(srv.host, srv.starttls_port, srv.domain, timeout=10)
            c.login(self.user, self.password, "pinger", mech="SCRAM-SHA-1")
        except Exception as e:  # noqa: BLE001 - reported by the main thread
            self.error = repr(e)
            self.ready.set()
            return
        self.ready.set()
        n = 0
        while not self.stop_flag.is_set():
            n += 1
            t0 = time.monotonic()
            self.sent += 1
            try:
                el = c.iq("<ping xmlns='urn:xmpp:ping'/>", to=srv.domain,
                          iq_id="churn%d" % n, timeout=5)
                if el.get("type") == "result":
                    self.answered += 1
                else:
                    self.failures.append("ping %d: %s" % (n, tostr(el)))
            except (OSError, StreamClosed, TimeoutError) as e:
                self.failures.append("ping %d: %r" % (n, e))
                break
            self.max_rtt = max(self.max_rtt, time.monotonic() - t0)
            time.sleep(0.02)
        c.close()


def recv_some(s, want, limit=3.0):
    """Reads until want appears or limit seconds pass (server must react)."""
    data, deadline = b"", time.monotonic() + limit
    while want not in data and time.monotonic() < deadline:
        s.settimeout(max(0.05, deadline - time.monotonic()))
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def churn_one(i, rng):
    """One short-lived connection; returns an error string if the server
    did not accept it (refused or timed out), else None."""
    kind = i % 7
    port = srv.direct_port if kind in (5, 6) else srv.starttls_port
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(5)
    try:
        s.connect((srv.host, port))
    except OSError as e:
        s.close()
        return "connect %d: %r" % (i, e)
    try:
        if kind == 0:
            pass                                    # connect, close
        elif kind == 1:
            s.sendall((XMLDECL + HEADER)[:rng.randint(1, 60)])  # partial
        elif kind == 2:
            s.sendall(XMLDECL + HEADER)             # wait for its header
            recv_some(s, b"features")
        elif kind == 3:
            s.sendall(XMLDECL + HEADER[:40])
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                         b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST
        elif kind == 4:
            s.sendall(XMLDECL + HEADER + ("<starttls xmlns='%s'/>"
                                          % NS_TLS).encode())
            recv_some(s, b"proceed")                # leave mid-STARTTLS
        elif kind == 5:
            s.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
        elif kind == 6 and i % 21 == 6:
            t = harness.no_verify_context().wrap_socket(
                s, server_hostname=srv.domain)      # full TLS, then leave
            t.sendall(XMLDECL + HEADER[:30])
            s = t
    except (OSError, ssl.SSLError):
        pass
    finally:
        s.close()
    return None


def churn(user, password):
    fds_before = srv.open_fds()
    open_before = srv.counter("connections_open")
    pinger = Pinger(user, password)
    pinger.start()
    pinger.ready.wait(15)
    if not check("churn: pinger logs in", pinger.error is None
                 and pinger.ready.is_set(), pinger.error or "timeout"):
        return
    t0 = time.monotonic()
    errors = []

    def worker(k):
        rng = random.Random(k)
        for i in range(k, CHURN, 4):
            try:
                err = churn_one(i, rng)
            except Exception as e:  # noqa: BLE001 - counted below
                err = repr(e)
            if err:
                errors.append(err)
    threads = [threading.Thread(target=worker, args=(k,), daemon=True)
               for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    elapsed = time.monotonic() - t0
    # Keep pinging while the server catches up: until it has closed every
    # churned connection (only the pinger's is left), then two more pings.
    def closed_all():
        n = srv.counter("connections_open")
        return n is not None and open_before is not None and \
            n <= open_before + 1
    check("churn: the server closes every churned connection",
          harness.wait_for(closed_all, 30, 0.2),
          "open connections: %s (before: %s)"
          % (srv.counter("connections_open"), open_before))
    n = pinger.answered
    harness.wait_for(lambda: pinger.answered >= n + 2 or
                     not pinger.is_alive(), 15)
    pinger.stop_flag.set()
    pinger.join(10)
    note("churn: %d connections in %.1f s; %d pings, %d answered, "
         "max rtt %.3f s" % (CHURN, elapsed, pinger.sent, pinger.answered,
                             pinger.max_rtt))
    check("churn: %d connects/disconnects all accepted" % CHURN,
          not any(t.is_alive() for t in threads) and not errors,
          "errors: %s" % errors[:5])
    check("churn: every ping during the churn is answered",
          pinger.sent > 0 and pinger.answered == pinger.sent
          and not pinger.failures,
          "%d sent, %d answered; %s" % (pinger.sent, pinger.answered,
                                        pinger.failures[:3]))
    check("churn: the server is still running", srv.alive(),
          "exit status %s" % srv.proc.poll())
    # Descriptors of churned connections must be released (all peers
    # closed, so no handshake timeout is involved).
    fds_after = srv.open_fds()
    if fds_before is not None:
        harness.wait_for(lambda: (srv.open_fds() or 0) <= fds_before + 8,
                         10, 0.25)
        fds_after = srv.open_fds()
        check("churn: no descriptor leak", fds_after is not None
              and fds_after <= fds_before + 8,
              "open fds before %s, after %s" % (fds_before, fds_after))
    try:
        c = RawClient(srv.host, srv.starttls_port, srv.domain)
        jid = c.login(user, password, "after-churn", mech="SCRAM-SHA-1")
        el = c.iq("<ping xmlns='urn:xmpp:ping'/>", to=srv.domain)
        check("churn: a new client logs in and is answered afterwards",
              el.get("type") == "result", "%s: %s" % (jid, tostr(el)))
        c.close()
    except (OSError, StreamClosed, TimeoutError, RuntimeError) as e:
        check("churn: a new client logs in afterwards", False, repr(e))


def handshake_timeout_check():
    """A second server with handshake_timeout = 2: connections that never
    finish the handshake must be closed (slowloris protection)."""
    fast = harness.Server(handshake_timeout=2, label="handshake_timeout=2")
    if not fast.start():
        return
    socks = []
    try:
        s = socket.create_connection((fast.host, fast.starttls_port), 5)
        socks.append(("silent connection", s))
        s = socket.create_connection((fast.host, fast.starttls_port), 5)
        s.sendall(XMLDECL + HEADER[:50])
        socks.append(("connection that sent half a header", s))
        s = socket.create_connection((fast.host, fast.starttls_port), 5)
        s.sendall(XMLDECL + HEADER)
        socks.append(("stream that never authenticates", s))
        t0 = time.monotonic()
        for what, s in socks:
            closed = False
            s.settimeout(0.5)
            while time.monotonic() - t0 < 8 and not closed:
                try:
                    closed = s.recv(65536) == b""
                except socket.timeout:
                    pass
                except OSError:
                    closed = True
            check("handshake_timeout = 2 closes a %s" % what, closed,
                  "still open after %.1f s" % (time.monotonic() - t0))
    except OSError as e:
        check("handshake_timeout checks run", False, repr(e))
    finally:
        for _, s in socks:
            s.close()
        fast.stop()


NS_SM = "urn:xmpp:sm:3"


def open_and_silent(sock):
    """True if sock is still open with nothing received."""
    sock.setblocking(False)
    try:
        sock.recv(65536)  # data, or b"" at the end: not silent
        return False
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        sock.setblocking(True)


def timeout_text(c):
    """The <text/> of c's first stream error, or None."""
    _, el = stream_error_of(c)
    t = el.find("{%s}text" % NS_STREAMS_ERR) if el is not None else None
    return t.text if t is not None else None


def listener_timeouts_check():
    """Two more c2s entries: one with handshake_timeout = 1, one (direct
    TLS) with idle_timeout = 10; the limits group keeps 30 and 900 for the
    usual ports.  Every wait ends on an event (a close), bounded."""
    hs_port, idle_port = harness.free_ports(2)
    entries = ('{ protocol = "c2s"; address = "127.0.0.1"; port = %d; '
               'tls = "starttls"; handshake_timeout = 1; },\n  '
               '{ protocol = "c2s"; address = "127.0.0.1"; port = %d; '
               'tls = "direct"; idle_timeout = 10; }' % (hs_port, idle_port))
    s = harness.Server(handshake_timeout=30, idle_timeout=900,
                       listeners_extra=entries, label="listener timeouts")
    if not s.start():
        return
    socks, clients = [], []
    try:
        user, password = harness.unique("tmo"), "timeout-pw"
        ok, detail = harness.register_user(s, user, password)
        check("listener timeouts: register a user", ok, detail)
        # Bound and stream-managed on the idle_timeout = 10 entry, and a
        # control client bound on the usual direct TLS port.
        idle = harness.RawClient(s.host, idle_port, s.domain,
                                 direct_tls=True, timeout=5)
        clients.append(idle)
        idle.login(user, password, "idle")
        idle.send("<enable xmlns='%s' resume='true'/>" % NS_SM)
        en = idle.next(lambda e: e.tag in ("{%s}enabled" % NS_SM,
                                           "{%s}failed" % NS_SM))
        check("listener timeouts: stream management enabled",
              en.get("resume") == "true" and en.get("id"), tostr(en))
        t_idle = time.monotonic()
        control = harness.RawClient(s.host, s.direct_port, s.domain,
                                    direct_tls=True, timeout=5)
        clients.append(control)
        control.login(user, password, "control")

        # Handshake: a silent connection on each port, opened together.
        usual = socket.create_connection((s.host, s.starttls_port), 5)
        socks.append(usual)
        t0 = time.monotonic()
        short = harness.RawClient(s.host, hs_port, s.domain, timeout=5)
        clients.append(short)
        closed = short.read_until_closed(8)
        took = time.monotonic() - t0
        check("handshake_timeout = 1 entry: a silent client gets "
              "<connection-timeout/>",
              stream_error_of(short)[0] == "connection-timeout" and
              timeout_text(short) == "handshake took too long",
              repr(short.raw[-300:]))
        check("handshake_timeout = 1 entry: closed after about 1 s",
              closed and 0.8 <= took < 6, "closed=%s after %.1f s"
              % (closed, took))
        check("the usual port (handshake_timeout = 30) keeps its silent "
              "client meanwhile", open_and_silent(usual), "closed or answered")

        # Idle: the entry's 10 s, not the limits group's 900 s.
        closed = idle.read_until_closed(25)
        took = time.monotonic() - t_idle
        check("idle_timeout = 10 entry: a silent bound client gets "
              "<connection-timeout/>",
              stream_error_of(idle)[0] == "connection-timeout" and
              timeout_text(idle) is None, repr(idle.raw[-300:]))
        check("idle_timeout = 10 entry: closed after about 10 s",
              closed and 9 <= took < 25, "closed=%s after %.1f s"
              % (closed, took))
        el = control.iq("<ping xmlns='urn:xmpp:ping'/>", to=s.domain)
        check("the usual port (idle_timeout = 900) keeps its silent bound "
              "client", el.get("type") == "result", tostr(el))
        # XEP-0198 §5: a connection that timed out may be resumed.
        again = harness.RawClient(s.host, s.direct_port, s.domain,
                                  direct_tls=True, timeout=5)
        clients.append(again)
        again.connect_tls()
        el = again.auth_plain(user, password)
        again.restart()
        again.send("<resume xmlns='%s' previd='%s' h='0'/>"
                   % (NS_SM, en.get("id")))
        el = again.next(lambda e: e.tag in ("{%s}resumed" % NS_SM,
                                            "{%s}failed" % NS_SM))
        check("a session that timed out idle is resumed (XEP-0198)",
              el.tag == "{%s}resumed" % NS_SM, tostr(el))
    except (OSError, StreamClosed, TimeoutError, RuntimeError) as e:
        check("listener timeout checks run", False, repr(e))
    finally:
        for c in clients:
            c.close()
        for s_ in socks:
            s_.close()
        s.stop()


def abuse_limits_check():
    """A server with tiny abuse limits: connections per address and SASL
    failures per address, each answered with the standard error."""
    small = harness.Server(limits_extra="max_connections_per_ip = 3;",
                           c2s_extra="auth_failures_per_ip = 3; "
                                     "max_auth_failures = 10;",
                           label="abuse limits")
    if not small.start():
        return
    held = []
    try:
        for _ in range(3):
            held.append(socket.create_connection((small.host,
                                                  small.starttls_port), 5))
        c = RawClient(small.host, small.starttls_port, small.domain,
                      timeout=5)
        closed = c.read_until_closed(CLOSE_WAIT)
        got, _ = stream_error_of(c)
        check("4th connection from one address: <policy-violation/>",
              got == "policy-violation", "got %s; reply %r" % (got,
                                                              c.raw[-300:]))
        check("4th connection from one address is closed", closed,
              "still open")
        c.close()
        for s_ in held:
            s_.close()
        held = []
        # The server has seen them go (the per-address count is down).
        check("abuse limits: the held connections are closed",
              harness.wait_for(lambda: small.counter("connections_open")
                               == 0, 10), small.stats())
        user, password = harness.unique("ab"), "abuse-pw"
        ok, detail = harness.register_user(small, user, password)
        check("abuse limits: register a user", ok, detail)
        c = RawClient(small.host, small.direct_port, small.domain,
                      direct_tls=True, timeout=5)
        c.open_stream()
        c.features()
        conds = []
        for _ in range(4):
            el = c.auth_scram(user, "wrong", "SCRAM-SHA-256")
            conds.append(el[0].tag.split("}", 1)[1] if len(el) else el.tag)
        check("3 wrong passwords, then <temporary-auth-failure/> for the "
              "address", conds == ["not-authorized"] * 3 +
              ["temporary-auth-failure"], repr(conds))
        el = c.auth_scram(user, password, "SCRAM-SHA-256")
        check("even the right password is refused during the back-off",
              el.tag != "{%s}success" % NS_SASL, tostr(el))
        c.close()
    except OSError as e:
        check("abuse limit checks run", False, repr(e))
    finally:
        for s_ in held:
            s_.close()
        small.stop()


def main():
    user, password = harness.unique("bad"), "bad-input-pw"
    ok, detail = harness.register_user(srv, user, password)
    check("register the test user (XEP-0077, raw)", ok, detail)
    stream_errors()
    sasl_checks(user, password)
    limit_checks(user, password)
    churn(user, password)
    handshake_timeout_check()
    listener_timeouts_check()
    abuse_limits_check()


def run():
    global srv
    srv = harness.Server(max_stanza_size=MAX_STANZA, max_depth=MAX_DEPTH,
                         handshake_timeout=30)
    if srv.start():
        try:
            main()
        except Exception as e:  # noqa: BLE001 - report, don't crash
            import traceback
            traceback.print_exc()
            check("bad-input suite runs without exceptions", False, repr(e))
    harness.finish()


if __name__ == "__main__":
    run()
