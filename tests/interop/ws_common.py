#!/usr/bin/python3
"""ws_common.py - a socket-level XMPP-over-WebSocket client (RFC 6455,
RFC 7395) for tests that need control of every byte and frame.

WsClient is harness.RawClient over a WebSocket: the same login, SASL
(PLAIN, SCRAM), bind, iq and next() helpers, with the stream opened by
<open/> and each element sent as one masked text frame.  Each text
message received is parsed as its own document, so an element that
lacks a namespace declaration it needs (xmlns:stream on
stream:features, say) is a parse error, as it would be for a browser.

  c = WsClient(host, port, path="/xmpp-websocket", tls=False,
               origin=None, protocols="xmpp", extra_headers=None)
  c.status, c.headers     the handshake's answer (101 when upgraded)
  c.send(xml)             one text frame, masked
  c.send_frame(opcode, payload, mask=True, fin=True, rsv=0)  any frame
  WsClient.frame(...)     the same frame's bytes, to send as one likes
  c.close_code            the close frame's status code once received
  c.pongs                 the payloads of the pongs received
  c.closed                the server closed TCP

handshake(host, port, headers) sends one raw request and returns
(status, headers, body) for handshake refusals.
"""

import base64
import hashlib
import os
import socket
import struct
import time
import xml.etree.ElementTree as ET

import harness

NS_FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def _read_head(sock, deadline):
    data = b""
    while b"\r\n\r\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no HTTP answer")
        sock.settimeout(left)
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    return status, headers, rest


def handshake(host, port, headers, path="/xmpp-websocket", timeout=10):
    """One GET with exactly these headers (a list of (name, value));
    returns (status, headers, body bytes read so far)."""
    sock = socket.create_connection((host, port), timeout)
    try:
        req = "GET %s HTTP/1.1\r\n" % path
        req += "".join("%s: %s\r\n" % hv for hv in headers) + "\r\n"
        sock.sendall(req.encode())
        return _read_head(sock, time.monotonic() + timeout)
    finally:
        sock.close()


def ws_headers(host, port, key=None, protocols="xmpp", origin=None,
               version="13"):
    h = [("Host", "%s:%d" % (host, port)), ("Upgrade", "websocket"),
         ("Connection", "Upgrade"),
         ("Sec-WebSocket-Key", key or base64.b64encode(os.urandom(16))
          .decode()),
         ("Sec-WebSocket-Version", version)]
    if protocols is not None:
        h.append(("Sec-WebSocket-Protocol", protocols))
    if origin is not None:
        h.append(("Origin", origin))
    return h


class WsClient(harness.RawClient):
    def __init__(self, host, port, domain="localhost", path="/xmpp-websocket",
                 tls=False, origin=None, protocols="xmpp", timeout=10,
                 extra_headers=None):
        self.host, self.port, self.domain = host, port, domain
        self.timeout = timeout
        self.sock = socket.create_connection((host, port), timeout)
        self.tls = tls
        if tls:
            self.sock = harness.no_verify_context().wrap_socket(
                self.sock, server_hostname=domain)
        self.raw = b""
        self.buf = b""
        self.frags = b""
        self.closed = False
        self.stream_ended = False
        self.close_code = None
        self.pongs = []
        self.queue = []
        self.header = None
        self.jid = None
        self.parse_error = None
        key = base64.b64encode(os.urandom(16)).decode()
        headers = ws_headers(host, port, key, protocols, origin)
        headers += extra_headers or []
        req = "GET %s HTTP/1.1\r\n" % path
        req += "".join("%s: %s\r\n" % hv for hv in headers) + "\r\n"
        self.sock.sendall(req.encode())
        self.status, self.headers, rest = _read_head(
            self.sock, time.monotonic() + timeout)
        want = base64.b64encode(hashlib.sha1((key + GUID).encode())
                                .digest()).decode()
        if self.status == 101 and self.headers.get(
                "sec-websocket-accept") != want:
            raise RuntimeError("bad Sec-WebSocket-Accept %r" %
                               self.headers.get("sec-websocket-accept"))
        if rest:
            self._feed(rest)

    # ---- frames ----

    @staticmethod
    def frame(opcode, payload, mask=True, fin=True, rsv=0):
        """A client frame's bytes."""
        if isinstance(payload, str):
            payload = payload.encode("utf-8")
        b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
        n = len(payload)
        mbit = 0x80 if mask else 0
        if n < 126:
            head = struct.pack("!BB", b0, mbit | n)
        elif n <= 0xffff:
            head = struct.pack("!BBH", b0, mbit | 126, n)
        else:
            head = struct.pack("!BBQ", b0, mbit | 127, n)
        if mask:
            k = os.urandom(4)
            payload = bytes(c ^ k[i % 4] for i, c in enumerate(payload))
            head += k
        return head + payload

    def send_frame(self, opcode, payload, mask=True, fin=True, rsv=0):
        self.sock.sendall(self.frame(opcode, payload, mask, fin, rsv))

    def send(self, data):
        self.send_frame(1, data)

    def open_stream(self, to=None, extra=""):
        to = self.domain if to is None else to
        self.send("<open xmlns='%s' to='%s' version='1.0'%s/>"
                  % (NS_FRAMING, to, extra))

    def _new_parser(self):
        self.parse_error = None

    def _message(self, data):
        try:
            el = ET.fromstring(data.decode("utf-8"))
        except (ET.ParseError, UnicodeDecodeError) as e:
            self.parse_error = "%s in %r" % (e, data[:200])
            return
        if el.tag == "{%s}open" % NS_FRAMING:
            self.header = el
        elif el.tag == "{%s}close" % NS_FRAMING:
            self.stream_ended = True
            self.queue.append(el)
        else:
            self.queue.append(el)

    def _feed(self, data):
        self.raw += data
        self.buf += data
        while len(self.buf) >= 2:
            b0, b1 = self.buf[0], self.buf[1]
            n, off = b1 & 0x7f, 2
            if b1 & 0x80:
                self.parse_error = "server frame masked"
            if n == 126:
                if len(self.buf) < 4:
                    return
                n, off = struct.unpack("!H", self.buf[2:4])[0], 4
            elif n == 127:
                if len(self.buf) < 10:
                    return
                n, off = struct.unpack("!Q", self.buf[2:10])[0], 10
            if len(self.buf) < off + n:
                return
            payload = self.buf[off:off + n]
            self.buf = self.buf[off + n:]
            opcode = b0 & 0x0f
            if opcode in (0, 1, 2):
                self.frags += payload
                if b0 & 0x80:
                    msg, self.frags = self.frags, b""
                    self._message(msg)
            elif opcode == 8:
                self.close_code = struct.unpack("!H", payload[:2])[0] \
                    if len(payload) >= 2 else 1005
            elif opcode == 9:
                self.send_frame(10, payload)
            elif opcode == 10:
                self.pongs.append(payload)

    def restart(self):
        self.header = None
        self.open_stream()
        return self.features()

    def connect_tls(self, direct=None):
        """No STARTTLS over WebSocket: opens the stream."""
        self.open_stream()
        return self.features()

    def close_handshake(self):
        """Sends <close/>; returns the elements until the server's
        <close/> and whether TCP then closed."""
        self.send("<close xmlns='%s'/>" % NS_FRAMING)
        got = self.next(lambda e: e.tag == "{%s}close" % NS_FRAMING)
        return got, self.read_until_closed()
