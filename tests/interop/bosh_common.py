#!/usr/bin/python3
"""bosh_common.py - socket-level XMPP-over-BOSH clients (XEP-0124 1.11,
XEP-0206) for tests that need control of every request.

Debian 12's slixmpp, aioxmpp and nbxmpp have no BOSH client, so these
are harness.RawClient over BOSH: the same SASL (PLAIN, SCRAM), bind, iq
and next() helpers, with the stream carried by <body/> wrappers POSTed
to /http-bind.

  post(host, port, body, timeout, method="POST", headers=None)
                          one request on a new connection:
                          (status, headers dict, body bytes)
  c = BoshClient(host, port, domain="localhost", wait=2)
      c.create(to=None, hold=1)  session creation (XEP-0124 §7); the
                          answer's <body/> becomes c.header, its
                          children are queued
      c.request(children="", attrs="", rid=None)  one request now,
                          synchronously: (status, body bytes); c.last is
                          (rid, sent body, status, answer)
      c.send(xml)         kept for the next request (made by next(),
                          features() and the like)
  c = BoshStream(host, port, domain="localhost", wait=10)
      the same session driven as a browser's BOSH library does: what is
      sent goes at once in a request of its own, and reading keeps one
      request held at the connection manager, so an element arrives as
      soon as it is written, not at the next poll; see its docstring.

To extend: a new attribute of every request goes in BoshClient.body().
"""

import http.client
import random
import threading
import time
import xml.etree.ElementTree as ET

import harness

NS_HTTPBIND = "http://jabber.org/protocol/httpbind"
NS_XBOSH = "urn:xmpp:xbosh"


def post(host, port, body, timeout=30, method="POST", headers=None):
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        h = {"Content-Type": "text/xml; charset=utf-8"}
        h.update(headers or {})
        conn.request(method, "/http-bind", body=body, headers=h)
        r = conn.getresponse()
        return r.status, dict((k.lower(), v) for k, v in r.getheaders()), \
            r.read()
    finally:
        conn.close()


class BoshClient(harness.RawClient):
    def __init__(self, host, port, domain="localhost", wait=2, timeout=10):
        self.host, self.port, self.domain = host, port, domain
        self.timeout = timeout
        self.wait = wait
        self.rid = random.randrange(1, 1 << 40)
        self.sid = None
        self.pending = ""
        self.attrs = ""
        self.queue = []
        self.header = None
        self.jid = None
        self.tls = True  # nothing to negotiate: the listener is secure
        self.closed = False
        self.stream_ended = False
        self.parse_error = None
        self.raw = b""
        self.last = None  # (rid, status, raw) of the last request
        self.created = None
        self.terminate = None  # the <body type='terminate'/> that ended it

    def body(self, children="", attrs="", rid=None):
        rid = self.rid if rid is None else rid
        sid = " sid='%s'" % self.sid if self.sid else ""
        return ("<body xmlns='%s' rid='%d'%s%s>%s</body>"
                % (NS_HTTPBIND, rid, sid, attrs, children))

    def request(self, children="", attrs="", rid=None):
        self.rid += 1
        rid = self.rid if rid is None else rid
        data = self.body(children, attrs, rid)
        st, hd, raw = post(self.host, self.port, data,
                           timeout=self.wait + 10)
        self.last = (rid, data, st, raw)
        self.raw += raw
        return st, raw

    def _absorb(self, st, raw):
        if st != 200:
            self.closed = True
            raise harness.StreamClosed("HTTP %d" % st)
        el = ET.fromstring(raw)
        for child in list(el):
            self.queue.append(child)
        if el.get("type") == "terminate":
            self.closed = self.stream_ended = True
            self.terminate = el
        return el

    def create(self, to=None, hold=1):
        self.rid += 1
        data = ("<body xmlns='%s' rid='%d' to='%s' wait='%d' hold='%d'"
                " ver='1.11' xml:lang='en' xmlns:xmpp='%s'"
                " xmpp:version='1.0'/>"
                % (NS_HTTPBIND, self.rid, to or self.domain, self.wait, hold,
                   NS_XBOSH))
        st, hd, raw = post(self.host, self.port, data)
        self.created = (st, hd, raw)
        el = self._absorb(st, raw)
        self.sid = el.get("sid")
        self.header = el
        return el

    # RawClient's transport
    def send(self, data):
        self.pending += data if isinstance(data, str) else data.decode()

    def _recv_some(self, deadline):
        if time.monotonic() > deadline:
            raise TimeoutError("timed out")
        if self.closed:
            raise harness.StreamClosed("session terminated")
        children, self.pending = self.pending, ""
        attrs, self.attrs = self.attrs, ""
        st, raw = self.request(children, attrs)
        self._absorb(st, raw)

    def restart_attrs(self):
        """XEP-0206 §5: the attributes of the request that restarts the
        stream after SASL."""
        return (" xmlns:xmpp='%s' xmpp:restart='true' to='%s'"
                % (NS_XBOSH, self.domain))

    def open_stream(self, to=None, extra=""):
        if self.sid is None:
            self.create(to)
        else:
            self.attrs = self.restart_attrs()

    def restart(self):
        self.header = None
        self.open_stream()
        return self.features()

    def wait_header(self, timeout=None):
        return self.header

    def connect_tls(self, direct=None):
        self.open_stream()
        return self.features()

    def close(self):
        pass


class BoshStream(BoshClient):
    """A BOSH session driven as browser libraries (Strophe.js) drive it.

    send() POSTs its element at once, in a request of its own (on a new
    HTTP connection, from a thread); reading (_recv_some, so next(),
    features() and the like) makes sure one request is out, which the
    connection manager holds until it has something to send (XEP-0124
    §8 and §11: with hold='1' it answers the older request when a newer
    one arrives).  At most `requests` (the creation answer's) are out at
    once: a send waits (bounded) for an answer to free a place.  Answers
    are absorbed in rid order, whatever order they came back in, so the
    elements queue in the order the connection manager wrote them.
    end() asks for the end of the session (type='terminate', §13).

    Only the caller's thread touches the queue; request threads only
    store answers.  They are daemon threads, each bounded by its HTTP
    timeout (wait + 10 s), so an abandoned session leaves nothing that
    outlives the process."""

    def __init__(self, host, port, domain="localhost", wait=10, timeout=10):
        BoshClient.__init__(self, host, port, domain, wait, timeout)
        self.cv = threading.Condition()
        self.answers = {}      # rid -> (status, body) or (None, error)
        self.out = set()       # rids sent and not answered yet
        self.next_rid = None   # the next rid whose answer to absorb
        self.requests = 2      # at most out at once (creation answer)

    def create(self, to=None, hold=1):
        el = BoshClient.create(self, to, hold)
        self.next_rid = self.rid + 1
        try:
            self.requests = max(1, int(el.get("requests", "2")))
        except ValueError:
            pass
        return el

    def _run(self, rid, data):
        try:
            st, _, raw = post(self.host, self.port, data,
                              timeout=self.wait + 10)
            got = (st, raw)
        except (OSError, http.client.HTTPException) as e:
            got = (None, e)
        with self.cv:
            self.answers[rid] = got
            self.out.discard(rid)
            self.cv.notify_all()

    def _post(self, children="", attrs="", deadline=None):
        """Sends one request now (from a thread); waits first, until
        deadline, while `requests` are out."""
        deadline = deadline or time.monotonic() + self.timeout
        with self.cv:
            while len(self.out) >= self.requests:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("%d requests out, none answered"
                                       % len(self.out))
                self.cv.wait(left)
            self.rid += 1
            rid = self.rid
            self.out.add(rid)
            data = self.body(children, attrs, rid)
        threading.Thread(target=self._run, args=(rid, data),
                         name="bosh-%d" % rid, daemon=True).start()

    def send(self, data):
        if self.closed:
            raise harness.StreamClosed("session terminated")
        self._post(data if isinstance(data, str) else data.decode())

    def _recv_some(self, deadline):
        """Absorbs the answers that have come, in rid order; starts a
        poll when no request is out.  Raises TimeoutError at deadline,
        StreamClosed once the session is over."""
        if self.closed:
            raise harness.StreamClosed("session terminated")
        with self.cv:
            out = bool(self.out)
        if not out and self.next_rid not in self.answers:
            self._post(deadline=deadline)
        with self.cv:
            while self.next_rid not in self.answers:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("timed out")
                self.cv.wait(left)
            got = []
            while self.next_rid in self.answers:
                got.append(self.answers.pop(self.next_rid))
                self.next_rid += 1
        for st, raw in got:
            if st is None:
                self.closed = True
                raise harness.StreamClosed("request failed: %s" % raw)
            self.raw += raw
            self._absorb(st, raw)  # a terminate: the next call raises

    def open_stream(self, to=None, extra=""):
        if self.sid is None:
            self.create(to)
        else:
            self._post(attrs=self.restart_attrs())

    def end(self):
        """XEP-0124 §13: a request with type='terminate'."""
        if not self.closed:
            self._post(attrs=" type='terminate'")
