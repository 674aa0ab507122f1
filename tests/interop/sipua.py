#!/usr/bin/python3
"""sipua.py - a small SIP user agent of the tests' own, on sockets only,
for exact bytes: it writes requests as given (malformed ones too), reads
responses and the server's own requests, and frames streams by
Content-Length (RFC 3261 §18.3).  Debian's /usr/bin/python3, stdlib only.

API:
  ua = SipUA(host, port, transport="udp"|"tcp"|"tls")
  ua.request(method, uri, ...) -> bytes of a request (Via with a fresh
      z9hG4bK branch unless given, From with a tag, To, Call-ID, CSeq,
      Max-Forwards, Content-Length), every field overridable or omitted
  ua.send(raw)            writes bytes as they are (a datagram over UDP)
  ua.recv(timeout)        the next message as a Message, None on timeout
  ua.recv_raw(timeout)    its bytes (UDP: one datagram; TCP/TLS: one framed
                          message, or a lone CRLF keep-alive answer)
  ua.transact(raw, timeout, retransmit)
                          send, then the first final response (over UDP
                          with retransmit: resent as Timer E would)
  ua.answer(req, code)    a response to a request the server sent (same
                          Via, From, To with a tag, Call-ID, CSeq)
  ua.port                 the local port (the Via's sent-by)
  ua.close()
  parse(raw) -> Message: .start, .code, .reason, .method, .headers (list of
  (name, value), names as sent), .get(name) (first value, long or compact
  name, any case), .all(name), .body, .raw
  parse_challenge(value) -> dict of a WWW-/Proxy-Authenticate Digest value
  digest_credentials(chal, method, uri, user, password, nc=1, cnonce=None,
      qop="auth")  the Authorization value answering chal, computed here
      with hashlib (RFC 7616 §3.4.1, RFC 8760; qop=None: the RFC 2069 form)

Extending: a field every test needs goes in request(); a test's own
oddity is built from request()'s output with bytes.replace.
"""

import hashlib
import os
import re
import socket
import ssl
import time

COMPACT = {"v": "via", "f": "from", "t": "to", "i": "call-id",
           "l": "content-length", "c": "content-type", "m": "contact",
           "k": "supported", "s": "subject", "e": "content-encoding",
           "o": "event", "u": "allow-events"}


def rand_token(n=10):
    return os.urandom(n).hex()


class Message:
    """A parsed SIP message (start line, fields in order, body)."""

    def __init__(self, raw):
        self.raw = raw
        head, _, self.body = raw.partition(b"\r\n\r\n")
        lines = head.decode("utf-8", "replace").split("\r\n")
        self.start = lines[0]
        self.headers = []
        for line in lines[1:]:
            if line[:1] in (" ", "\t") and self.headers:
                n, v = self.headers[-1]
                self.headers[-1] = (n, v + " " + line.strip())
                continue
            name, _, value = line.partition(":")
            self.headers.append((name.strip(), value.strip()))
        parts = self.start.split(" ", 2)
        self.is_response = self.start.startswith("SIP/")
        self.code = int(parts[1]) if self.is_response and len(parts) > 1 \
            and parts[1].isdigit() else None
        self.reason = parts[2] if self.is_response and len(parts) > 2 else ""
        self.method = None if self.is_response else parts[0]

    def all(self, name):
        name = name.lower()
        return [v for n, v in self.headers
                if COMPACT.get(n.lower(), n.lower()) == name]

    def get(self, name):
        v = self.all(name)
        return v[0] if v else None

    def __repr__(self):
        return self.raw.decode("utf-8", "replace")


def parse(raw):
    return Message(raw)


def parse_challenge(value):
    """The parameters of a Digest challenge, unquoted, names lower case."""
    scheme, _, rest = value.strip().partition(" ")
    out = {"scheme": scheme}
    for m in re.finditer(r'([A-Za-z0-9_-]+)\s*=\s*("((?:[^"\\]|\\.)*)"|[^,\s]+)',
                         rest):
        v = m.group(3) if m.group(3) is not None else m.group(2)
        out[m.group(1).lower()] = re.sub(r"\\(.)", r"\1", v)
    return out


def _h(alg, s):
    name = "sha256" if alg.upper() == "SHA-256" else "md5"
    return hashlib.new(name, s.encode()).hexdigest()


def digest_credentials(chal, method, uri, user, password, nc=1,
                       cnonce=None, qop="auth", realm=None, response=None):
    """Authorization / Proxy-Authorization value for chal (a dict)."""
    alg = chal.get("algorithm", "MD5")
    realm = realm if realm is not None else chal["realm"]
    ha1 = _h(alg, "%s:%s:%s" % (user, realm, password))
    ha2 = _h(alg, "%s:%s" % (method, uri))
    cnonce = cnonce or rand_token(8)
    ncs = "%08x" % nc
    if qop:
        resp = _h(alg, "%s:%s:%s:%s:%s:%s" % (ha1, chal["nonce"], ncs, cnonce,
                                             qop, ha2))
    else:
        resp = _h(alg, "%s:%s:%s" % (ha1, chal["nonce"], ha2))
    out = ('Digest username="%s", realm="%s", nonce="%s", uri="%s", '
           'response="%s", algorithm=%s' % (user, realm, chal["nonce"], uri,
                                           response or resp, alg))
    if qop:
        out += ', qop=%s, nc=%s, cnonce="%s"' % (qop, ncs, cnonce)
    return out


class SipUA:
    """One transport towards the server under test."""

    def __init__(self, host, port, transport="udp", timeout=5):
        self.host, self.server_port = host, port
        self.transport = transport
        self.buf = b""
        if transport == "udp":
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.bind((host, 0))
        else:
            s = socket.create_connection((host, port), timeout)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if transport == "tls":
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
                s = ctx.wrap_socket(s, server_hostname="localhost")
            self.sock = s
        self.port = self.sock.getsockname()[1]
        self.cseq = 0

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    # -- building

    def request(self, method, uri, branch=None, via=None, from_=None,
                to=None, call_id=None, cseq=None, max_forwards=70,
                extra="", body=b"", content_length=None, omit=()):
        """A request as bytes; omit lists field names left out."""
        self.cseq += 1
        if branch is None:
            branch = "z9hG4bK" + rand_token()
        if via is None:
            via = "SIP/2.0/%s %s:%d;branch=%s;rport" % (
                self.transport.upper(), self.host, self.port, branch)
        fields = [
            ("Via", via),
            ("From", from_ or "<sip:tester@localhost>;tag=" + rand_token(4)),
            ("To", to or "<%s>" % uri),
            ("Call-ID", call_id or rand_token()),
            ("CSeq", cseq or "%d %s" % (self.cseq, method)),
            ("Max-Forwards", None if max_forwards is None
             else str(max_forwards)),
        ]
        out = "%s %s SIP/2.0\r\n" % (method, uri)
        for name, value in fields:
            if value is not None and name not in omit:
                out += "%s: %s\r\n" % (name, value)
        out += extra
        if "Content-Length" not in omit:
            out += "Content-Length: %d\r\n" % (
                len(body) if content_length is None else content_length)
        return out.encode() + b"\r\n" + body

    def answer(self, req, code, reason="OK"):
        """A response to a request of the server (a Message)."""
        out = "SIP/2.0 %d %s\r\n" % (code, reason)
        for v in req.all("via"):
            out += "Via: %s\r\n" % v
        to = req.get("to")
        if code > 100 and ";tag=" not in to:
            to += ";tag=" + rand_token(4)
        out += "From: %s\r\nTo: %s\r\nCall-ID: %s\r\nCSeq: %s\r\n" % (
            req.get("from"), to, req.get("call-id"), req.get("cseq"))
        out += "Content-Length: 0\r\n\r\n"
        return out.encode()

    # -- the wire

    def send(self, raw, to=None):
        if self.transport == "udp":
            self.sock.sendto(raw, to or (self.host, self.server_port))
        else:
            self.sock.sendall(raw)

    def reply_to_server(self, raw, addr):
        """UDP: sends raw to addr (where the server's request came from)."""
        self.sock.sendto(raw, addr)

    def recv_raw(self, timeout=5):
        """One message's bytes, or None; (bytes, source) over UDP."""
        deadline = time.monotonic() + timeout
        if self.transport == "udp":
            self.sock.settimeout(max(0.01, timeout))
            try:
                data, addr = self.sock.recvfrom(70000)
            except (socket.timeout, OSError):
                return None
            self.last_from = addr
            return data
        while True:
            msg = self._frame()
            if msg is not None:
                return msg
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except (socket.timeout, ssl.SSLError, OSError):
                return None
            if not data:
                self.closed = True
                return None
            self.buf += data

    def _frame(self):
        # The server starts no message with a line end: a CRLF first is
        # the answer to a keep-alive (RFC 5626 §3.5.1).
        if self.buf.startswith(b"\r\n"):
            self.buf = self.buf[2:]
            return b"\r\n"
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return None
        head = parse(self.buf[:end + 4])
        n = int(head.get("content-length") or 0)
        total = end + 4 + n
        if len(self.buf) < total:
            return None
        msg, self.buf = self.buf[:total], self.buf[total:]
        return msg

    def recv(self, timeout=5):
        raw = self.recv_raw(timeout)
        return parse(raw) if raw and raw != b"\r\n" else None

    def transact(self, raw, timeout=5, retransmit=False):
        """Sends raw and returns the first final response (or None).  With
        retransmit, over UDP, resends it as a client transaction does
        (Timer E: 0.5 s, doubling up to 4 s) until the answer comes."""
        self.send(raw)
        deadline = time.monotonic() + timeout
        interval = 0.5
        resend = time.monotonic() + interval
        while True:
            now = time.monotonic()
            left = deadline - now
            if left <= 0:
                return None
            wait = min(left, resend - now) if retransmit else left
            m = self.recv(max(wait, 0.01))
            if m is None:
                if retransmit and time.monotonic() >= resend:
                    self.send(raw)
                    interval = min(interval * 2, 4)
                    resend = time.monotonic() + interval
                    continue
                if time.monotonic() >= deadline or not retransmit:
                    return None
                continue
            if m.is_response and m.code and m.code >= 200:
                return m

    def closed_by_peer(self, timeout=5):
        """Whether the stream ends (the server closed it) within timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                return False
            except (ssl.SSLError, OSError):
                return True
            if not data:
                return True
            self.buf += data
        return False
