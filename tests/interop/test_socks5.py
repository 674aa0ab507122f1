#!/usr/bin/python3
"""test_socks5.py - the SOCKS5 Bytestreams proxy (XEP-0065, src/socks5/).

Discovery (the host's disco#items lists proxy.localhost, its disco#info
has identity proxy/bytestreams, the bytestreams query answers the
listener's address), then two slixmpp clients (plugin xep_0065) sending
a file of a few MB through the proxy, hashed on both ends.  Raw sockets
for the rest: RFC 1928 faults (wrong version, no acceptable method,
BIND, an IPv4 address, a hash that is not one), a third connection for
one hash, activation with one party, by the wrong user and twice, the
per-user concurrent limit, max_transfer_size, the bandwidth cap (a lower
bound on the time only: a loaded machine only makes it slower), the
handshake and unmatched deadlines, access = "local" (a user of another
host is forbidden), back-pressure with a receiver that does not read (a
second server without the cap), `parleyctl socks5` and the counters.

Run with /usr/bin/python3; `scripts/run-tests test_socks5`.
"""

import asyncio
import hashlib
import json
import os
import socket
import struct
import sys
import time
import types

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, tostr  # noqa: E402
from im_common import ImClient, PW, add_users, error_of  # noqa: E402

import slixmpp  # noqa: E402

NS_BS = "http://jabber.org/protocol/bytestreams"
NS_INFO = "http://jabber.org/protocol/disco#info"
NS_ITEMS = "http://jabber.org/protocol/disco#items"
PROXY = "proxy.localhost"
RATE = 4 * 1024 * 1024          # bandwidth_per_user
MAX_SIZE = 8 * 1024 * 1024      # max_transfer_size
FILE_SIZE = 6 * 1024 * 1024 + 12345
STEP = 10

srv = None
sport = None


# ------------------------------------------------------------ raw SOCKS5

def sha1hex(sid, req, target):
    return hashlib.sha1((sid + req + target).encode("utf-8")).hexdigest()


def recv_exact(s, n, timeout=STEP):
    s.settimeout(timeout)
    buf = b""
    while len(buf) < n:
        try:
            d = s.recv(n - len(buf))
        except (socket.timeout, OSError):
            break
        if not d:
            break
        buf += d
    return buf


def closed(s, timeout=STEP):
    """True if the peer closes s (EOF or reset) within timeout."""
    s.settimeout(timeout)
    end = time.time() + timeout
    try:
        while time.time() < end:
            if not s.recv(65536):
                return True
    except ConnectionResetError:
        return True
    except (socket.timeout, OSError):
        return False
    return False


def raw():
    return socket.create_connection(("127.0.0.1", sport), timeout=STEP)


def connect_hash(h, port=0):
    """A SOCKS5 connection that sent CONNECT to h; (socket, reply)."""
    s = raw()
    s.sendall(b"\x05\x01\x00")
    m = recv_exact(s, 2)
    if m != b"\x05\x00":
        return s, m
    addr = h.encode() if isinstance(h, str) else h
    s.sendall(b"\x05\x01\x00\x03" + bytes([len(addr)]) + addr +
              struct.pack(">H", port))
    return s, recv_exact(s, 5 + len(addr) + 2)


def ok_reply(h):
    return b"\x05\x00\x00\x03" + bytes([len(h)]) + h.encode() + b"\x00\x00"


def activate(c, sid, target):
    return c.request("<query xmlns='%s' sid='%s'><activate>%s</activate>"
                     "</query>" % (NS_BS, sid, target), type_="set",
                     to=PROXY)


def pair(req, tgt, sid):
    """Target then requester connect for sid; returns (t, r) sockets."""
    h = sha1hex(sid, req.jid, tgt.jid)
    t, rt = connect_hash(h)
    r, rr = connect_hash(h)
    return t, r, rt == ok_reply(h) and rr == ok_reply(h)


# -------------------------------------------------------------- slixmpp

class Client(slixmpp.ClientXMPP):
    def __init__(self, jid):
        super().__init__(jid, PW)
        self.ssl_context = harness.no_verify_context()
        self.use_ipv6 = False
        harness.slixmpp_without_channel_binding(self)
        self.register_plugin("xep_0030")
        self.register_plugin("xep_0065", {"auto_accept": True})
        self.started = asyncio.get_event_loop().create_future()
        self.received = bytearray()
        self.stream_closed = asyncio.get_event_loop().create_future()
        self.add_event_handler("session_start", self._start)
        self.add_event_handler("socks5_data", self._data)
        self.add_event_handler("socks5_closed", self._closed)

    def _start(self, _):
        self.send_presence()
        if not self.started.done():
            self.started.set_result(True)

    def _data(self, data):
        self.received += data

    def _closed(self, _):
        if not self.stream_closed.done():
            self.stream_closed.set_result(True)


async def slixmpp_transfer(alice_user, bob_user):
    a = Client("%s@localhost/send" % alice_user)
    b = Client("%s@localhost/recv" % bob_user)
    for c in (a, b):
        c.connect((srv.host, srv.starttls_port), use_ssl=False,
                  force_starttls=True)
    try:
        await asyncio.wait_for(asyncio.gather(a.started, b.started), 20)
    except asyncio.TimeoutError:
        check("slixmpp: both clients log in", False)
        return
    proxies = await a["xep_0065"].discover_proxies(timeout=STEP)
    check("slixmpp: discover_proxies finds %s at 127.0.0.1:%d" % (PROXY,
          sport), proxies.get(slixmpp.JID(PROXY)) == ("127.0.0.1",
                                                      str(sport))
          or proxies.get(PROXY) in (("127.0.0.1", str(sport)),
                                    ("127.0.0.1", sport)), repr(proxies))
    data = os.urandom(FILE_SIZE)
    t0 = time.time()
    sock = await asyncio.wait_for(
        a["xep_0065"].handshake(b.boundjid.full, timeout=STEP), 30)
    check("slixmpp: the bytestream is negotiated and activated",
          sock is not None)
    if sock is None:
        return
    for i in range(0, len(data), 65536):
        await sock.write(data[i:i + 65536])
    sock.transport.close()
    try:
        await asyncio.wait_for(b.stream_closed, 60)
    except asyncio.TimeoutError:
        pass
    took = time.time() - t0
    check("slixmpp: the %d-byte file arrives whole (SHA-256 equal)"
          % FILE_SIZE, hashlib.sha256(bytes(b.received)).hexdigest() ==
          hashlib.sha256(data).hexdigest(),
          "received %d bytes" % len(b.received))
    # The sender's bucket starts with one second's worth (RATE): the rest
    # cannot go faster than RATE.  A lower bound only.
    floor = (FILE_SIZE - RATE) / RATE * 0.8
    check("slixmpp: the transfer honours bandwidth_per_user (%.2f s >= "
          "%.2f s)" % (took, floor), took >= floor)
    for c in (a, b):
        c.disconnect(wait=0.5)
    await asyncio.sleep(0.5)


# --------------------------------------------------------- back-pressure

def back_pressure():
    """A receiver that does not read: the proxy must stop reading the
    sender (TCP pushes back) instead of queueing, and must not drop the
    slow reader either; once it reads, every byte arrives intact."""
    global srv, sport
    first, first_port = srv, sport
    sport, = harness.free_ports(1)
    srv = harness.Server(
        label="no-cap", hosts=["localhost", "other.localhost"],
        listeners_extra='{ protocol = "socks5"; address = "127.0.0.1"; '
                        'port = %d; }' % sport,
        extra="socks5: { bandwidth_per_user = 0; relay_buffer = 65536; "
              "max_transfers = 1; };")
    if not srv.start():
        check("parleyd (no bandwidth cap) starts", False, srv.dump_log())
        srv, sport = first, first_port
        return
    u1, u2 = harness.unique("bp"), harness.unique("bq")
    add_users(srv, u1, u2)
    a, b = ImClient(srv, u1, "a"), ImClient(srv, u2, "b")

    # access = "local" (the default): a user of another host of this
    # server is refused (XEP-0065 §4: <forbidden/>).
    u3 = harness.unique("bo")
    srv.ctl("adduser", "%s@other.localhost" % u3, PW)
    other = ImClient(types.SimpleNamespace(
        host=srv.host, direct_port=srv.direct_port,
        domain="other.localhost"), u3, "o")
    res = other.request("<query xmlns='%s'/>" % NS_BS, to=PROXY)
    check("access local: a user of another host gets <forbidden/> for the "
          "streamhost", error_of(res) == "forbidden", tostr(res))
    res = activate(other, "sid-o", b.jid)
    check("access local: ... and for an activation",
          error_of(res) == "forbidden", tostr(res))
    res = other.request("<query xmlns='%s'/>" % NS_BS,
                        to="proxy.other.localhost")
    check("... while the proxy of its own host serves it",
          res is not None and res.get("type") == "result", tostr(res))
    other.close()
    h = sha1hex("sid-bp", a.jid, b.jid)
    t = socket.socket()
    t.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    t.connect(("127.0.0.1", sport))
    t.settimeout(STEP)
    t.sendall(b"\x05\x01\x00")
    recv_exact(t, 2)
    t.sendall(b"\x05\x01\x00\x03\x28" + h.encode() + b"\x00\x00")
    ok = recv_exact(t, 47) == ok_reply(h)
    r, rr = connect_hash(h)
    res = activate(a, "sid-bp", b.jid)
    check("back-pressure: the transfer is activated", ok and
          rr == ok_reply(h) and res is not None and
          res.get("type") == "result", tostr(res))
    t2, r2, ok2 = pair(b, a, "sid-second")
    res = activate(b, "sid-second", a.jid)
    check("max_transfers = 1: a second transfer, of another user, gets "
          "<resource-constraint/>", ok2 and
          error_of(res) == "resource-constraint", tostr(res))
    t2.close()
    r2.close()
    r.setblocking(False)
    sent = hashlib.sha256()
    total = 0
    block = os.urandom(65536)
    idle_since = time.time()
    limit = 256 * 1024 * 1024
    while total < limit and time.time() - idle_since < 1.5:
        try:
            n = r.send(block)
        except BlockingIOError:
            time.sleep(0.02)
            continue
        except OSError:
            break
        sent.update(block[:n])
        total += n
        idle_since = time.time()
    check("back-pressure: a sender to a receiver that does not read is "
          "stopped (%d bytes accepted, under 64 MiB)" % total,
          total < 64 * 1024 * 1024)
    r.setblocking(True)
    r.shutdown(socket.SHUT_WR)
    got = hashlib.sha256()
    n = 0
    t.settimeout(30)
    try:
        while n < total:
            d = t.recv(1 << 20)
            if not d:
                break
            got.update(d)
            n += len(d)
    except OSError:
        pass
    check("back-pressure: the slow reader is not dropped: it gets all %d "
          "bytes, intact" % total, n == total and
          got.digest() == sent.digest(), "got %d" % n)
    for s in (r, t):
        s.close()
    a.close()
    b.close()
    srv.stop()
    srv, sport = first, first_port


# ----------------------------------------------------------------- main

def main():
    global srv, sport
    sport, = harness.free_ports(1)
    srv = harness.Server(
        listeners_extra='{ protocol = "socks5"; address = "127.0.0.1"; '
                        'port = %d; }' % sport,
        extra="socks5: { handshake_timeout = 2; unmatched_timeout = 3; "
              "bandwidth_per_user = %d; max_transfer_size = %d; "
              "max_transfers_per_user = 2; };" % (RATE, MAX_SIZE))
    if not srv.start():
        check("parleyd starts with a socks5 listener", False,
              srv.dump_log())
        harness.finish()
    users = [harness.unique(p) for p in ("sa", "sb", "sc", "sd", "se")]
    add_users(srv, *users)
    alice = ImClient(srv, users[0], "a")
    bob = ImClient(srv, users[1], "b")
    carol = ImClient(srv, users[2], "c")

    # -- discovery (XEP-0065 §4)
    items = alice.request("<query xmlns='%s'/>" % NS_ITEMS, to="localhost")
    jids = [i.get("jid") for i in items.iter("{%s}item" % NS_ITEMS)]
    check("disco#items of the host lists %s" % PROXY, PROXY in jids,
          tostr(items))
    info = alice.request("<query xmlns='%s'/>" % NS_INFO, to=PROXY)
    ids = [(i.get("category"), i.get("type"))
           for i in info.iter("{%s}identity" % NS_INFO)]
    feats = [f.get("var") for f in info.iter("{%s}feature" % NS_INFO)]
    check("disco#info of the proxy: identity proxy/bytestreams and the "
          "bytestreams feature", ("proxy", "bytestreams") in ids and
          NS_BS in feats, tostr(info))
    sh = alice.request("<query xmlns='%s'/>" % NS_BS, to=PROXY)
    hosts = [(e.get("jid"), e.get("host"), e.get("port"))
             for e in sh.iter("{%s}streamhost" % NS_BS)]
    check("the bytestreams query answers jid, host and port of the "
          "listener", hosts == [(PROXY, "127.0.0.1", str(sport))],
          tostr(sh))

    # -- RFC 1928 faults
    s = raw()
    s.sendall(b"\x04\x01\x00\x50\x7f\x00\x00\x01\x00")
    check("SOCKS4 (version 4) is closed without a reply",
          closed(s) and True)
    s = raw()
    s.sendall(b"\x05\x02\x01\x02")
    m = recv_exact(s, 2)
    check("no 'no authentication' method offered: X'05FF' and closed",
          m == b"\x05\xff" and closed(s), repr(m))
    h = sha1hex("x", "y", "z")
    s = raw()
    s.sendall(b"\x05\x01\x00")
    recv_exact(s, 2)
    s.sendall(b"\x05\x02\x00\x03\x28" + h.encode() + b"\x00\x00")
    m = recv_exact(s, 2)
    check("BIND gets X'07' (command not supported) and is closed",
          m == b"\x05\x07" and closed(s), repr(m))
    s = raw()
    s.sendall(b"\x05\x01\x00")
    recv_exact(s, 2)
    s.sendall(b"\x05\x01\x00\x01\x7f\x00\x00\x01\x00\x50")
    m = recv_exact(s, 2)
    check("an IPv4 address gets X'08' (address type) and is closed",
          m == b"\x05\x08" and closed(s), repr(m))
    s, m = connect_hash("not-a-sha1-hash")
    check("a domain that is not a hex SHA-1 gets X'04' and is closed",
          m[:2] == b"\x05\x04" and closed(s), repr(m))

    # -- a raw transfer, both directions
    t, r, ok = pair(alice, bob, "sid-raw")
    check("both parties' CONNECT is answered X'00' with the hash echoed",
          ok)
    h = sha1hex("sid-raw", alice.jid, bob.jid)
    third, m = connect_hash(h)
    check("a third connection for the same hash gets X'02' and is closed",
          m[:2] == b"\x05\x02" and closed(third), repr(m))
    r.sendall(b"early bytes")  # before activation: kept, then relayed
    res = activate(bob, "sid-raw", bob.jid)
    check("activation by someone other than the requester: "
          "<item-not-found/>", error_of(res) == "item-not-found", tostr(res))
    res = activate(alice, "sid-raw", bob.jid)
    check("the requester's activation is answered with a result",
          res is not None and res.get("type") == "result", tostr(res))
    got = recv_exact(t, len(b"early bytes"))
    check("bytes sent before activation are relayed after it",
          got == b"early bytes", repr(got))
    t.sendall(b"ping from target")
    got = recv_exact(r, 16)
    check("bytes flow target -> requester", got == b"ping from target",
          repr(got))
    res = activate(alice, "sid-raw", bob.jid)
    check("a second activation: <not-allowed/>",
          error_of(res) == "not-allowed", tostr(res))
    rc, out = srv.ctl("socks5", "--json")
    try:
        act = json.loads(out).get("active", [])
    except ValueError:
        act = []
    check("parleyctl socks5 lists the active transfer and its requester",
          rc == 0 and any(a.get("hash") == h and a.get("requester") ==
                          alice.bare for a in act), out[-300:])
    t.close()
    check("when one party closes, the proxy closes the other", closed(r))

    # -- activation errors
    res = activate(alice, "no-such-sid", bob.jid)
    check("activation of an unknown stream: <item-not-found/>",
          error_of(res) == "item-not-found", tostr(res))
    one, m = connect_hash(sha1hex("sid-one", alice.jid, bob.jid))
    res = activate(alice, "sid-one", bob.jid)
    check("activation with only one party connected: <not-allowed/>",
          error_of(res) == "not-allowed", tostr(res))
    res = alice.request("<query xmlns='%s'><activate>%s</activate>"
                        "</query>" % (NS_BS, bob.jid), type_="set",
                        to=PROXY)
    check("activation without a sid: <bad-request/>",
          error_of(res) == "bad-request", tostr(res))
    check("an unmatched connection is closed after unmatched_timeout",
          closed(one, 15))
    s = raw()
    check("a connection that never finishes the handshake is closed after "
          "handshake_timeout", closed(s, 15))
    s = raw()
    s.sendall(b"\x05")
    check("... also when it trickles bytes",
          closed(s, 15))

    # -- concurrent transfers per user (max_transfers_per_user = 2)
    held = []
    for i in range(2):
        t, r, ok = pair(carol, bob, "sid-c%d" % i)
        res = activate(carol, "sid-c%d" % i, bob.jid)
        held += [t, r]
        check("carol's transfer %d of 2 is activated" % (i + 1),
              ok and res is not None and res.get("type") == "result",
              tostr(res))
    t, r, ok = pair(carol, bob, "sid-c2")
    res = activate(carol, "sid-c2", bob.jid)
    check("carol's third concurrent transfer: <resource-constraint/>",
          error_of(res) == "resource-constraint", tostr(res))
    check("... and its connections are closed", closed(t) and closed(r))
    t, r, ok = pair(alice, bob, "sid-other-user")
    res = activate(alice, "sid-other-user", bob.jid)
    check("another user is not limited by carol's transfers",
          res is not None and res.get("type") == "result", tostr(res))
    for s in held + [t, r]:
        s.close()

    # -- max_transfer_size and the bandwidth cap, together
    dave = ImClient(srv, users[3], "d")
    t, r, ok = pair(dave, bob, "sid-big")
    res = activate(dave, "sid-big", bob.jid)
    chunk = os.urandom(65536)
    total = MAX_SIZE + 4 * 1024 * 1024
    t0 = time.time()
    import threading
    sent = [0]

    def sender():
        try:
            while sent[0] < total:
                r.sendall(chunk)
                sent[0] += len(chunk)
        except OSError:
            pass
    th = threading.Thread(target=sender, daemon=True)
    th.start()
    got = 0
    t.settimeout(30)
    first_8 = None
    try:
        while True:
            d = t.recv(1 << 20)
            if not d:
                break
            got += len(d)
            if first_8 is None and got >= MAX_SIZE - 65536 * 4:
                first_8 = time.time() - t0
    except OSError:
        pass
    th.join(10)
    check("a transfer over max_transfer_size is cut (%d of %d bytes "
          "relayed)" % (got, total), ok and got <= MAX_SIZE and
          got < total)
    floor = (MAX_SIZE - 65536 * 4 - RATE) / RATE * 0.8
    check("bandwidth_per_user holds it back (%s s >= %.2f s for the first "
          "%d bytes)" % (first_8 and "%.2f" % first_8, floor,
                          MAX_SIZE - 65536 * 4),
          first_8 is not None and first_8 >= floor)
    r.close()
    t.close()

    # -- slixmpp, a real client library, both ends
    asyncio.run(asyncio.wait_for(slixmpp_transfer(users[4], users[1]), 120))

    st = srv.stats()
    check("counters: socks5_transfers, socks5_bytes, socks5_refused",
          st.get("socks5_transfers", 0) >= 4 and
          st.get("socks5_bytes", 0) >= FILE_SIZE and
          st.get("socks5_refused", 0) >= 5,
          repr({k: v for k, v in st.items() if k.startswith("socks5")}))
    check("socks5_transfers_active is back to 0",
          harness.wait_for(lambda: srv.counter("socks5_transfers_active")
                           == 0, 10), srv.counter("socks5_transfers_active"))
    for c in (alice, bob, carol, dave):
        c.close()
    check("parleyd is alive", srv.alive())
    back_pressure()
    harness.finish()


if __name__ == "__main__":
    main()
