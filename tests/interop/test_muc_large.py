#!/usr/bin/python3
"""test_muc_large.py - one room with 500 occupants (XEP-0045), bounded in
time: every occupant gets every groupchat message exactly once, addressed
to its own full JID, and every join's presence reaches everyone present.

Clients are minimal: raw TLS sockets (direct TLS, SASL PLAIN, bind)
logged in from a few threads, then one selector loop reads all of them
and counts what arrives with regular expressions, so that Python's XML
parsing does not dominate the time.  Each client registers its account
in-band first (XEP-0077), on the same stream: 500 parleyctl processes
took most of the time limit in the sanitizer pass.

Checks: all 500 join (each gets its own presence with status 110); the
number of occupant presences each client saw equals the number of
occupants present when it joined plus those who joined after it; 100
messages from 20 senders reach each of the 500 clients exactly once (no
loss, no duplicate), with to = the client's full JID and one stanza-id;
a leave reaches everyone.  N, senders and messages can be changed with
MUC_LARGE_N, MUC_LARGE_SENDERS, MUC_LARGE_MSGS.

Run with /usr/bin/python3; `scripts/run-tests muc_large`.
"""

import base64
import concurrent.futures
import os
import re
import selectors
import socket
import ssl
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, note  # noqa: E402

N = int(os.environ.get("MUC_LARGE_N", "500"))
SENDERS = int(os.environ.get("MUC_LARGE_SENDERS", "20"))
PER_SENDER = int(os.environ.get("MUC_LARGE_MSGS", "5"))
PW = "big-room-1"
CONF = "conference.localhost"
DEADLINE = 50.0  # seconds for the phases after login


class Mini:
    """A raw, blocking-then-selected client: login, then bytes."""

    def __init__(self, srv, user):
        self.user = user
        self.full = "%s@%s/m" % (user, srv.domain)
        raw = socket.create_connection((srv.host, srv.direct_port), 10)
        self.sock = harness.no_verify_context().wrap_socket(
            raw, server_hostname=srv.domain)
        self.buf = b""
        self.out = b""
        self.text = []  # decoded chunks after login

    def _until(self, pat, timeout=15):
        deadline = time.monotonic() + timeout
        while not re.search(pat, self.buf):
            if time.monotonic() > deadline:
                raise TimeoutError("waiting for %r in %r" % (pat,
                                                             self.buf[-200:]))
            d = self.sock.recv(65536)
            if not d:
                raise EOFError("closed")
            self.buf += d
        m = re.search(pat, self.buf)
        rest = self.buf[m.end():]
        self.buf = rest
        return m

    def _open(self, domain):
        self.sock.sendall((
            "<?xml version='1.0'?><stream:stream to='%s' version='1.0' "
            "xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/"
            "streams'>" % domain).encode())
        self._until(rb"</stream:features>")

    def login(self, domain, register=False):
        """SASL PLAIN and bind; with register, the account is made first
        on the same stream (XEP-0077 in-band registration)."""
        self._open(domain)
        if register:
            self.sock.sendall((
                "<iq type='set' id='reg'><query xmlns='jabber:iq:register'>"
                "<username>%s</username><password>%s</password></query>"
                "</iq>" % (self.user, PW)).encode())
            m = self._until(rb"<iq\b[^>]*\bid=['\"]reg['\"][^>]*?"
                            rb"(?:/>|>.*?</iq>)", 60)
            if not re.search(rb"\btype=['\"]result['\"]", m.group(0)):
                raise RuntimeError("registration refused: %r"
                                   % m.group(0)[:200])
        tok = base64.b64encode(("\0%s\0%s" % (self.user, PW)).encode())
        self.sock.sendall(b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' "
                          b"mechanism='PLAIN'>" + tok + b"</auth>")
        self._until(rb"<success[^>]*?(/>|>[^<]*</success>)")
        self._open(domain)
        self.sock.sendall(b"<iq type='set' id='b'><bind xmlns='urn:ietf:"
                          b"params:xml:ns:xmpp-bind'><resource>m</resource>"
                          b"</bind></iq>")
        self._until(rb"</iq>")
        self.sock.sendall(b"<presence/>")

    def send(self, s):
        self.sock.setblocking(True)
        self.sock.sendall(s.encode())
        self.sock.setblocking(False)


STANZA = re.compile(r"<(presence|message|iq)\b[^>]*?(?:/>|>.*?</\1>)", re.S)


class Seen:
    """What one client received, stanza by stanza (each looked at once)."""

    def __init__(self, c, room):
        self.c, self.room = c, room
        self.tail = ""
        self.nicks = set()       # occupants whose available presence came
        self.joined = False      # own presence with 110
        self.bodies = {}         # body -> count
        self.bad_to = []         # messages not addressed to c.full
        self.bad_sid = []        # messages without exactly one stanza-id
        self.left = set()        # nicks seen leaving
        self.ids = set()         # ids of IQ results

    def feed(self, text):
        self.tail += text
        end = 0
        rp = "from='%s/" % self.room
        for m in STANZA.finditer(self.tail):
            end = m.end()
            st = m.group(0)
            head = st.split(">", 1)[0]
            kind = m.group(1)
            if kind == "iq":
                mi = re.search(r"id='([^']*)'", head)
                if mi and "type='result'" in head:
                    self.ids.add(mi.group(1))
                continue
            i = head.find(rp)
            nick = head[i + len(rp):].split("'", 1)[0] if i >= 0 else None
            if kind == "presence":
                if nick is None:
                    continue
                if "type='unavailable'" in head:
                    self.left.add(nick)
                elif "type=" not in head:
                    self.nicks.add(nick)
                    if "code='110'" in st:
                        self.joined = True
                continue
            mb = re.search(r"<body>([^<]*)</body>", st)
            if not mb or not mb.group(1).startswith("m-"):
                continue
            b = mb.group(1)
            self.bodies[b] = self.bodies.get(b, 0) + 1
            if "to='%s'" % self.c.full not in head:
                self.bad_to.append(st[:160])
            if st.count("<stanza-id") != 1:
                self.bad_sid.append(st[:200])
        self.tail = self.tail[end:]


def pump(sel, until, timeout):
    """Reads every ready socket until until() or timeout; True if met."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if until():
            return True
        for key, _ in sel.select(0.2):
            c = key.data
            while True:
                try:
                    d = c.sock.recv(262144)
                except (ssl.SSLWantReadError, BlockingIOError):
                    break
                if not d:
                    sel.unregister(c.sock)
                    break
                c.seen.feed(d.decode("utf-8", "replace"))
    return until()


def main():
    srv = harness.Server(
        extra='modules = ["disco", "ping", "register", "session", "presence", '
              '"muc"];\n'
              'muc: { creation = "anyone"; history_default = 0; };',
        c2s_extra="scram_iterations = 4096;",
        register_extra="per_ip_per_minute = 100000;",
        limits_extra="max_connections_per_ip = 2000;")
    if not srv.start():
        harness.finish()
    names = ["big%d%s" % (i, harness.unique("u")) for i in range(N)]

    t0 = time.monotonic()
    clients = []
    errors = []

    def make(n):
        try:
            c = Mini(srv, n)
            c.login(srv.domain, register=True)
            return c
        except Exception as e:  # noqa: BLE001 - counted below
            errors.append(repr(e))
            return None
    with concurrent.futures.ThreadPoolExecutor(16) as ex:
        clients = [c for c in ex.map(make, names) if c]
    check("%d clients register and log in" % N,
          len(clients) == N and not errors, errors[:3])
    note("registrations and logins in %.1f s" % (time.monotonic() - t0))
    if len(clients) != N:
        harness.finish()

    sel = selectors.DefaultSelector()
    room = "%s@%s" % (harness.unique("big"), CONF)
    for c in clients:
        c.sock.setblocking(False)
        c.seen = Seen(c, room)
        sel.register(c.sock, selectors.EVENT_READ, c)
    owner = clients[0]

    # The owner creates the room and opens it (instant room).
    owner.send("<presence to='%s/o0'><x xmlns='http://jabber.org/protocol/"
               "muc'/></presence>" % room)
    pump(sel, lambda: owner.seen.joined, 10)
    owner.send("<iq type='set' id='cfg' to='%s'><query xmlns='http://"
               "jabber.org/protocol/muc#owner'><x xmlns='jabber:x:data' "
               "type='submit'><field var='FORM_TYPE'><value>http://jabber.org"
               "/protocol/muc#roomconfig</value></field><field var='muc#"
               "roomconfig_maxusers'><value>1000</value></field></x></query>"
               "</iq>" % room)
    check("owner creates and configures the room",
          pump(sel, lambda: "cfg" in owner.seen.ids, 10))

    # Joins, one after another (each join fans out to those present).
    t0 = time.monotonic()
    deadline = t0 + DEADLINE
    for i, c in enumerate(clients[1:], 1):
        c.send("<presence to='%s/o%d'><x xmlns='http://jabber.org/protocol/"
               "muc'><history maxstanzas='0'/></x></presence>" % (room, i))
        if i % 25 == 0:
            pump(sel, lambda: False, 0.02)
    ok_join = pump(sel, lambda: all(c.seen.joined for c in clients),
                   max(1, deadline - time.monotonic()))
    nj = sum(1 for c in clients if c.seen.joined)
    check("%d occupants joined (self-presence with 110)" % N, ok_join,
          "%d of %d" % (nj, N))
    ok_pres = pump(sel, lambda: all(len(c.seen.nicks) >= N
                                    for c in clients),
                   max(1, deadline - time.monotonic()))
    note("joins and their presences in %.1f s" % (time.monotonic() - t0))
    short = [(c.user, len(c.seen.nicks)) for c in clients
             if len(c.seen.nicks) < N]
    check("every occupant saw the presence of all %d occupants" % N,
          ok_pres and not short, short[:5])

    # Messages: SENDERS occupants send PER_SENDER each.
    t0 = time.monotonic()
    bodies = []
    senders = clients[:: max(1, N // SENDERS)][:SENDERS]
    for k in range(PER_SENDER):
        for j, c in enumerate(senders):
            b = "m-%d-%d" % (j, k)
            bodies.append(b)
            c.send("<message to='%s' type='groupchat' id='%s'><body>%s"
                   "</body></message>" % (room, b, b))
        pump(sel, lambda: False, 0.02)
    want = len(bodies)
    ok_msgs = pump(sel, lambda: all(len(c.seen.bodies) >= want
                                    for c in clients),
                   max(5, deadline - time.monotonic()))
    dur = time.monotonic() - t0
    pump(sel, lambda: False, 0.5)  # duplicates would come now
    note("%d messages x %d occupants delivered in %.2f s" % (want, N, dur))
    missing = [(c.user, want - len(set(c.seen.bodies) & set(bodies)))
               for c in clients if set(c.seen.bodies) != set(bodies)]
    dup = [(c.user, [k for k, v in c.seen.bodies.items() if v > 1][:3])
           for c in clients if any(v > 1 for v in c.seen.bodies.values())]
    wrong_to = [(c.user, c.seen.bad_to[0]) for c in clients
                if c.seen.bad_to]
    sid_bad = [(c.user, c.seen.bad_sid[0]) for c in clients
               if c.seen.bad_sid]
    check("every occupant got all %d messages (none lost)" % want,
          ok_msgs and not missing, missing[:5])
    check("no occupant got any message twice", not dup, dup[:5])
    check("each delivery is addressed to the occupant's own full JID",
          not wrong_to, wrong_to[:3])
    check("each delivery has exactly one stanza-id", not sid_bad,
          sid_bad[:2])

    # A leave reaches everyone.
    leaver = clients[-1]
    lnick = "o%d" % (N - 1)
    leaver.send("<presence to='%s/%s' type='unavailable'/>" % (room, lnick))
    check("a leave reaches all %d remaining occupants" % (N - 1),
          pump(sel, lambda: all(lnick in c.seen.left for c in clients[:-1]),
               10))
    for c in clients:
        try:
            c.sock.close()
        except OSError:
            pass
    harness.finish()


if __name__ == "__main__":
    main()
