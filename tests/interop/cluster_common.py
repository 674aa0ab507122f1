#!/usr/bin/python3
"""cluster_common.py - what the cluster tests share (test_cluster.py,
test_processes.py): a throwaway redis-server, a raw Redis command, and
slixmpp clients whose messages and presence land in an EventBox.

API:
  start_redis(port=None)  ((proc, port), "") or (None, why)
  redis_port[0]           the port redis_cmd talks to (set it)
  redis_cmd(*args)        one command, its decoded RESP reply
  lt                      the LoopThread the clients run on (set it:
                          cluster_common.lt = LoopThread())
  Peer, login_on(srv, user, resource, priority=0, where=None), logout(p),
  drop(p)                 clients: log in (a check), out, forget
  is_msg, is_pres, push_for, errors
                          predicates on the received stanzas
"""

import asyncio
import os
import shutil
import socket
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402
from im_common import PW, STEP, EventBox  # noqa: E402

import slixmpp  # noqa: E402
from slixmpp.xmlstream.handler import Callback  # noqa: E402
from slixmpp.xmlstream.matcher import MatchXPath  # noqa: E402

C = "{jabber:client}"
redis_port = [None]
lt = None


# ------------------------------------------------------------ redis-server

def start_redis(port=None):
    """A redis-server on a free loopback port (or port); ((proc, port),
    "") or (None, why)."""
    exe = shutil.which("redis-server")
    if not exe:
        return None, "no redis-server (scripts/bootstrap --test installs it)"
    d = tempfile.mkdtemp(prefix="parley-redis-")
    harness.after_servers(lambda: shutil.rmtree(d, ignore_errors=True))
    port = port or harness.free_ports(1)[0]
    log = open(os.path.join(d, "redis.log"), "ab")
    proc = harness.spawn("redis-server", [
        exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
        "--appendonly", "no", "--dir", d, "--daemonize", "no",
        "--protected-mode", "no"], stdout=log, stderr=log, cwd=d)

    def answers():
        if proc.poll() is not None:
            return True
        try:
            s = socket.create_connection(("127.0.0.1", port), 0.5)
            s.sendall(b"PING\r\n")
            ok = s.recv(16).startswith(b"+PONG")
            s.close()
            return ok
        except OSError:
            return False
    harness.wait_for(answers, 15, 0.1)
    if proc.poll() is not None:
        with open(os.path.join(d, "redis.log"), "rb") as f:
            return None, f.read().decode("utf-8", "replace")[-500:]
    return (proc, port), ""


def redis_cmd(*args):
    """One command to the test's Redis (RESP); the reply: bytes, int,
    None or a list of them."""
    s = socket.create_connection(("127.0.0.1", redis_port[0]), STEP)
    s.settimeout(STEP)
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a.encode() if isinstance(a, str) else a
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    s.sendall(out)
    f = s.makefile("rb")

    def read():
        line = f.readline().rstrip(b"\r\n")
        kind, rest = line[:1], line[1:]
        if kind in (b"+", b"-"):
            return rest
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = f.read(n + 2)[:-2]
            return data
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [read() for _ in range(n)]
        raise ValueError("bad reply %r" % line)
    try:
        return read()
    finally:
        s.close()


# ---------------------------------------------------------------- clients

class Peer(slixmpp.ClientXMPP):
    """A slixmpp client on one node; every message and presence it
    receives goes to .inbox (an EventBox of ElementTree elements)."""

    def __init__(self, jid, srv, priority=0):
        super().__init__(jid, PW)
        self.srv = srv
        self.priority = priority
        self.ssl_context = harness.no_verify_context()
        self.use_ipv6 = False
        # Subscriptions are the test's own decisions.
        self.auto_authorize = None
        self.auto_subscribe = False
        harness.slixmpp_without_channel_binding(self)
        self.inbox = EventBox()
        self.pushes = EventBox()
        self.started = asyncio.get_event_loop().create_future()
        for what in ("message", "presence"):
            self.register_handler(Callback(
                "every " + what, MatchXPath(C + what),
                lambda st: self.inbox.put(st.xml)))
        self.register_handler(Callback(
            "roster push", MatchXPath(
                "%siq/{jabber:iq:roster}query" % C),
            lambda st: self.pushes.put(st.xml) if st["type"] == "set"
            else None))
        self.add_event_handler("session_start", self._start)
        self.add_event_handler("failed_all_auth", lambda _: self._fail(
            "authentication failed"))

    def _fail(self, why):
        if not self.started.done():
            self.started.set_result(why)

    async def _start(self, _):
        try:
            await self.get_roster(timeout=STEP)
            self.send_presence(ppriority=self.priority)
            if not self.started.done():
                self.started.set_result(None)
        except Exception as e:  # noqa: BLE001
            self._fail(repr(e))

    # From the test's thread.
    def call(self, fn, *args, **kw):
        lt.loop.call_soon_threadsafe(lambda: fn(*args, **kw))

    def msg(self, to, body):
        self.call(self.send_message, mto=to, mbody=body, mtype="chat")

    def pres(self, to, ptype):
        self.call(self.send_presence, pto=to, ptype=ptype)


def drop(p):
    """Forgets a client whose server was killed (on lt's loop)."""
    try:
        p.abort()
    except Exception:  # noqa: BLE001 - the transport may be gone already
        pass


def start_peer(make, srv):
    """make() (a Peer, or a subclass) connected to srv over direct TLS,
    on lt: (peer, None) once its session started, else (peer, why)."""
    async def go():
        p = make()
        p.connect((srv.host, srv.direct_port), use_ssl=True)
        try:
            why = await asyncio.wait_for(asyncio.shield(p.started), STEP * 2)
        except asyncio.TimeoutError:
            why = "no session within %d s" % (STEP * 2)
        return p, why
    return lt.run(go(), STEP * 3)


def login_on(srv, user, resource, priority=0, where=None):
    """A Peer logged in as user/resource on srv (a check; raises when it
    fails); where names srv in the check ("node a")."""
    jid = "%s@%s/%s" % (user, srv.domain, resource)
    p, why = start_peer(lambda: Peer(jid, srv, priority), srv)
    if not check("%s/%s logs in%s" % (user, resource,
                                       " on " + where if where else ""),
                 why is None, why):
        raise RuntimeError("login failed: %s" % why)
    return p


def logout(p):
    async def go():
        fut = p.disconnected
        p.disconnect(wait=0.5)
        try:
            await asyncio.wait_for(fut, 5)
        except Exception:  # noqa: BLE001
            p.abort()
    try:
        lt.run(go(), 10)
    except Exception:  # noqa: BLE001
        pass


def is_msg(frm_bare=None, body=None):
    def pred(el):
        return el.tag == C + "message" and el.get("type") != "error" and \
            (frm_bare is None or
             (el.get("from") or "").split("/")[0] == frm_bare) and \
            (body is None or el.findtext(C + "body") == body)
    return pred


def is_pres(frm=None, type_=None, frm_bare=None):
    def pred(el):
        return el.tag == C + "presence" and \
            (frm is None or el.get("from") == frm) and \
            (frm_bare is None or
             (el.get("from") or "").split("/")[0] == frm_bare) and \
            el.get("type") == type_
    return pred


def push_for(jid, sub):
    def pred(el):
        for it in el.iter("{jabber:iq:roster}item"):
            if it.get("jid") == jid and it.get("subscription") == sub:
                return True
        return False
    return pred


def errors(p, t=0.5):
    time.sleep(t)
    return [e for e in list(p.inbox.items) if e.get("type") == "error"]
