#!/usr/bin/python3
"""im_common.py - shared pieces of the IM interop tests (test_im_*.py):
rosters, subscriptions, presence and offline messages (RFC 6121,
XEP-0160, XEP-0203).

API:
  add_users(srv, *names)        parleyctl adduser for each, password PW;
                                returns the bare JIDs; a failure is a check
  ImClient(srv, user, resource) a harness.RawClient logged in over direct
                                TLS; keeps the post-auth stream features;
                                answers every roster push it hands out
                                (RFC 6121 §2.1.6 wants the client to)
    .presence(...)              sends presence (type, to, show, status,
                                priority); .roster_get/.roster_set/
                                .roster_remove return the reply <iq/>
    .ping()                     a round trip through the server's loop
    .storage_barrier()          the storage work of what it sent before
                                is committed
    .wait(pred, t)              next matching element or None (no raise)
    .collect(pred, n, t)        up to n matching elements within t
    .quiet(pred, t)             matching elements that arrive within t
                                (for "must not arrive" checks)
    .drain(t)                   reads for t seconds, forgets the queue
    .logout() / .kill()         </stream:stream>, or an abortive TCP close
  is_presence/is_push/is_message/is_iq   predicates for wait() and co.
  roster_items(iq)              {jid: Item(name, sub, ask, approved,
                                groups)} of a roster result or push
  LoopThread                    an asyncio loop in a thread, so that
                                slixmpp/aioxmpp peers run while the test
                                itself blocks on raw sockets

To extend: add a predicate or a client method here when two test files
need it; test steps stay in the test files.
"""

import asyncio
import collections
import os
import re
import socket
import struct
import sys
import threading
import time
from xml.sax.saxutils import escape, quoteattr

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, tostr  # noqa: E402,F401

STEP = 5         # seconds any one expected stanza may take (loopback)
QUIET = 1.0      # seconds to wait to be sure something does NOT arrive
PW = "im-pass-1"

NS_ROSTER = "jabber:iq:roster"
NS_DELAY = "urn:xmpp:delay"
C = "{jabber:client}"
R = "{%s}" % NS_ROSTER


def add_users(srv, *names):
    """Creates accounts with parleyctl; returns their bare JIDs."""
    out = []
    for n in names:
        jid = "%s@%s" % (n, srv.domain)
        rc, text = srv.ctl("adduser", jid, PW)
        if rc != 0:  # only failures are reported: names vary per run
            check("parleyctl adduser", False, "%s: exit %s: %s" % (
                jid, rc, text.strip()[-300:]))
        out.append(jid)
    return out


def bare_of(jid):
    return (jid or "").split("/", 1)[0]


# -------------------------------------------------------------- predicates
#
# They accept a stanza in no namespace as well as in jabber:client, so that
# a stanza a server writes as <presence xmlns=''> is still seen (and a
# "must not arrive" check still fails); ImClient.close() reports such
# stanzas and check_namespaces() turns them into one failed check.

def named(el, name):
    return el.tag in (C + name, name)


def is_presence(frm=None, frm_bare=None, type_=None, any_type=False):
    """Presence from `frm` (exact) or from any resource of `frm_bare`;
    type_ None means available (no type) unless any_type."""
    def pred(el):
        if not named(el, "presence"):
            return False
        if frm is not None and el.get("from") != frm:
            return False
        if frm_bare is not None and bare_of(el.get("from")) != frm_bare:
            return False
        return any_type or el.get("type") == type_
    return pred


def is_push(jid=None):
    """A roster push (iq set with a roster query), about jid if given."""
    def pred(el):
        if not named(el, "iq") or el.get("type") != "set":
            return False
        q = el.find(R + "query")
        if q is None:
            return False
        return jid is None or any(i.get("jid") == jid
                                  for i in q.findall(R + "item"))
    return pred


def is_message(frm_bare=None, body=None, type_=None):
    def pred(el):
        if not named(el, "message"):
            return False
        if frm_bare is not None and bare_of(el.get("from")) != frm_bare:
            return False
        if body is not None and el.findtext(C + "body") != body:
            return False
        return type_ is None or el.get("type") == type_
    return pred


def is_iq(iq_id):
    return lambda el: named(el, "iq") and el.get("id") == iq_id


def child_text(el, name):
    """Text of a child in jabber:client (or, with its parent, in none)."""
    if el is None:
        return None
    t = el.findtext(C + name)
    return t if t is not None else el.findtext(name)


def show_of(el):
    return child_text(el, "show")


def status_of(el):
    return child_text(el, "status")


def priority_of(el):
    return child_text(el, "priority")


Item = collections.namedtuple("Item", "name sub ask approved groups")


def roster_items(iq):
    """Items of a roster result or push, keyed by JID."""
    out = {}
    q = iq.find(R + "query") if iq is not None else None
    if q is None:
        return out
    for it in q.findall(R + "item"):
        out[it.get("jid")] = Item(
            it.get("name"), it.get("subscription"), it.get("ask"),
            it.get("approved"),
            tuple(sorted(g.text or "" for g in it.findall(R + "group"))))
    return out


def roster_ver(iq):
    q = iq.find(R + "query") if iq is not None else None
    return q.get("ver") if q is not None else None


def error_of(el):
    return harness.stanza_error(el) if el is not None else None


# ------------------------------------------------------------------ client

BAD_NS = []   # (client label, stanza start) written with xmlns=''
_BAD_NS_RE = re.compile(rb"<(?:message|presence|iq)\b[^>]*\sxmlns=(?:''|\"\")")


def check_namespaces():
    """One check over every ImClient closed so far: the server wrote no
    stanza outside jabber:client (RFC 6120 §4.8.3, §8)."""
    check("every stanza the server wrote to the raw clients is in "
          "jabber:client (none with xmlns='')", not BAD_NS,
          "%d stanzas, e.g. %s" % (len(BAD_NS), BAD_NS[:3]))

class ImClient(harness.RawClient):
    """A raw client logged in as user/resource (direct TLS, SASL PLAIN)."""

    def __init__(self, srv, user, resource="r", password=PW, login=True,
                 label=None):
        super().__init__(srv.host, srv.direct_port, srv.domain,
                         direct_tls=True, timeout=STEP)
        self.srv = srv
        self.user = user
        self.label = label or resource  # names the client in check names
        self.bare = "%s@%s" % (user, srv.domain)
        self.password = password
        self.features_after_auth = None
        self._n = 0
        if login:
            self.do_login(resource)

    def do_login(self, resource):
        self.connect_tls()
        el = self.auth_plain(self.user, self.password)
        if el.tag != "{%s}success" % harness.NS_SASL:
            raise RuntimeError("auth failed for %s: %s" % (self.user,
                                                           tostr(el)))
        self.features_after_auth = self.restart()
        return self.bind(resource)

    def _id(self, prefix):
        self._n += 1
        return "%s%d" % (prefix, self._n)

    # -- sending

    def presence(self, type_=None, to=None, show=None, status=None,
                 priority=None, extra=""):
        attrs = ""
        if type_:
            attrs += " type=%s" % quoteattr(type_)
        if to:
            attrs += " to=%s" % quoteattr(to)
        body = ""
        if show:
            body += "<show>%s</show>" % escape(show)
        if status is not None:
            body += "<status>%s</status>" % escape(status)
        if priority is not None:
            body += "<priority>%d</priority>" % priority
        self.send("<presence%s>%s%s</presence>" % (attrs, body, extra))

    def message(self, to, body, type_="chat", msg_id=None, extra=""):
        mid = " id=%s" % quoteattr(msg_id) if msg_id else ""
        t = " type=%s" % quoteattr(type_) if type_ else ""
        self.send("<message to=%s%s%s><body>%s</body>%s</message>"
                  % (quoteattr(to), t, mid, escape(body), extra))

    def request(self, xml, type_="get", to=None, timeout=STEP):
        """Sends an IQ; returns its reply or None (timeout, closed)."""
        iq_id = self._id("iq")
        to_attr = " to=%s" % quoteattr(to) if to else ""
        self.send("<iq type='%s' id='%s'%s>%s</iq>" % (type_, iq_id,
                                                      to_attr, xml))
        return self.wait(is_iq(iq_id), timeout)

    def roster_get(self, ver=None, to=None):
        v = "" if ver is None else " ver=%s" % quoteattr(ver)
        return self.request("<query xmlns='%s'%s/>" % (NS_ROSTER, v),
                            to=to)

    def roster_set(self, jid, name=None, groups=(), extra_attrs="",
                   to=None):
        n = "" if name is None else " name=%s" % quoteattr(name)
        g = "".join("<group>%s</group>" % escape(x) for x in groups)
        return self.request(
            "<query xmlns='%s'><item jid=%s%s%s>%s</item></query>"
            % (NS_ROSTER, quoteattr(jid), n, extra_attrs, g), "set", to=to)

    def roster_remove(self, jid):
        return self.request(
            "<query xmlns='%s'><item jid=%s subscription='remove'/>"
            "</query>" % (NS_ROSTER, quoteattr(jid)), "set")

    def ping(self, timeout=STEP):
        """A round trip through the server's loop."""
        return self.request("<ping xmlns='urn:xmpp:ping'/>",
                            to=self.srv.domain, timeout=timeout)

    def storage_barrier(self, rounds=2, timeout=STEP):
        """Returns once the server has committed the storage work of what
        this client sent before (False on a timeout).  Each round is a
        private XML get (XEP-0049), a job on the storage queue: it is
        answered after the commit of every job queued before it, and the
        completions of those jobs have run by then.  Work that queues a
        second job from a completion (a message to an offline account:
        account lookup, then the store) needs a second round, and so on:
        rounds is the depth of the chain.  Where that is not known, a
        stream-managed sender's acknowledgement is exact
        (sm_common.SmClient.durable)."""
        for _ in range(rounds):
            r = self.request("<query xmlns='jabber:iq:private'>"
                             "<barrier xmlns='urn:parley:test:barrier'/>"
                             "</query>", timeout=timeout)
            if r is None or r.get("type") != "result":
                return False
        return True

    # -- receiving

    def _ack(self, el):
        if el is not None and is_push()(el):
            self.send("<iq type='result' id=%s/>"
                      % quoteattr(el.get("id") or ""))
        return el

    def wait(self, pred, timeout=STEP):
        try:
            return self._ack(self.next(pred, timeout))
        except (TimeoutError, harness.StreamClosed, OSError):
            return None

    def collect(self, pred, n, timeout=STEP):
        """Up to n elements matching pred, arriving within timeout."""
        out = []
        deadline = time.monotonic() + timeout
        while len(out) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            el = self.wait(pred, left)
            if el is None:
                break
            out.append(el)
        return out

    def quiet(self, pred, timeout=QUIET):
        """Every element matching pred queued now or arriving within
        timeout (a "nothing arrives" check passes on [])."""
        return self.collect(pred, 1 << 30, timeout)

    def drain(self, timeout=0.3):
        self.quiet(lambda el: True, timeout)
        self.queue.clear()

    def logout(self):
        """Closes the stream properly and waits (bounded) for the server
        to close too."""
        try:
            self.send("</stream:stream>")
            self.read_until_closed(5)
        except OSError:
            pass
        self.close()

    def close(self):
        for m in _BAD_NS_RE.finditer(self.raw):
            BAD_NS.append((self.label, self.raw[m.start():m.start() + 120]))
        self.raw = b""
        super().close()

    def kill(self):
        """Connection loss: an abortive close (RST), no </stream:stream>,
        no TLS close_notify."""
        try:
            raw = self.sock
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                           struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.close()


def login(srv, user, resource="r", roster=True, presence=True, label=None,
          **pres):
    """An ImClient that fetched its roster (so it gets pushes) and sent
    initial presence (pres: show, status, priority)."""
    c = ImClient(srv, user, resource, label=label)
    if roster:
        r = c.roster_get()
        if r is None or r.get("type") != "result":
            raise RuntimeError("roster get failed for %s: %s"
                               % (user, tostr(r)))
    if presence:
        c.presence(**pres)
    return c


def make_both(srv, a, b):
    """Makes a and b (user names, both offline) subscribe to each other
    through the protocol (RFC 6121 §3.1 twice); returns True on success."""
    # Available: requests reach only available resources (§3.1.3).
    ca = login(srv, a, "setup")
    cb = login(srv, b, "setup")
    ja, jb = ca.bare, cb.bare
    try:
        ca.presence("subscribe", to=jb)
        if cb.wait(is_presence(frm=ja, type_="subscribe")) is None:
            return False
        cb.presence("subscribed", to=ja)
        cb.presence("subscribe", to=ja)
        if ca.wait(is_presence(frm=jb, type_="subscribe")) is None:
            return False
        ca.presence("subscribed", to=jb)
        ok = ca.wait(lambda e: is_push(jb)(e) and roster_items(e)[jb].sub
                     == "both") is not None
        ok = ok and cb.wait(lambda e: is_push(ja)(e) and
                            roster_items(e)[ja].sub == "both") is not None
        return ok
    finally:
        ca.logout()
        cb.logout()


def friend_online(srv, a, b, label):
    """a and b made friends (make_both), then b online over XMPP (resource
    "desk", roster fetched, initial presence sent, the echoes drained):
    b's ImClient, or None after a failed check named for label ("sam and
    xena")."""
    if not make_both(srv, a, b):
        check("%s are subscribed to each other" % label, False)
        return None
    c = ImClient(srv, b, "desk")
    c.roster_get()
    c.presence()
    c.drain(0.5)
    return c


# ---------------------------------------------------------- asyncio thread

class LoopThread:
    """An asyncio event loop in a daemon thread; run() blocks (bounded)
    until a coroutine finished on it."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._main, daemon=True)
        self.thread.start()

    def _main(self):
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro, timeout=STEP + 5):
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return fut.result(timeout)
        except Exception:
            fut.cancel()
            raise

    def stop(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


class EventBox:
    """Thread-safe list of events that a test waits on (bounded)."""

    def __init__(self):
        self.cond = threading.Condition()
        self.items = []

    def put(self, ev):
        with self.cond:
            self.items.append(ev)
            self.cond.notify_all()

    def wait(self, pred, timeout=STEP):
        """Removes and returns the first event matching pred, or None."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for i, ev in enumerate(self.items):
                    if pred(ev):
                        return self.items.pop(i)
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)

    def quiet(self, pred, timeout=QUIET):
        time.sleep(timeout)
        with self.cond:
            return [ev for ev in self.items if pred(ev)]


class AioPeer:
    """An aioxmpp client (Debian python3-aioxmpp) on a LoopThread, with
    RosterClient and PresenceClient; what they report lands in .events as
    tuples: ("roster-added"|"roster-changed"|"roster-removed", jid, name,
    subscription, groups), ("presence", kind, full_jid, show, status,
    priority) with kind available/changed/unavailable, ("initial-roster",
    version)."""

    def __init__(self, lt, srv, user, resource, roster_json=None):
        self.lt, self.srv = lt, srv
        self.jid = "%s@%s/%s" % (user, srv.domain, resource)
        self.roster_json = roster_json
        self.events = EventBox()
        self.client = self.cm = self.roster = None

    def start(self, available=True):
        """Connects; returns None on success, else the error."""
        try:
            # A whole login (TLS, SCRAM, roster, presence): in the sanitizer
            # pass, three scripts at a time on two cores, it can take more
            # than one stanza's STEP; the bound is for a hung login only.
            self.lt.run(self._start(available), timeout=60)
            return None
        except Exception as e:  # noqa: BLE001 - reported by the caller
            return e

    async def _start(self, available):
        import aioxmpp
        import aioxmpp.connector
        import logging
        self.client = aioxmpp.Client(
            aioxmpp.JID.fromstr(self.jid),
            aioxmpp.make_security_layer(PW, no_verify=True),
            override_peer=[(self.srv.host, self.srv.direct_port,
                            aioxmpp.connector.XMPPOverTLSConnector())],
            logger=logging.getLogger("aioxmpp.imtest"))
        self.roster = self.client.summon(aioxmpp.RosterClient)
        if self.roster_json is not None:
            self.roster.import_from_json(self.roster_json)
        ev = self.events

        def item_ev(kind):
            def cb(item, *_):
                ev.put(("roster-" + kind, str(item.jid), item.name,
                        item.subscription, tuple(sorted(item.groups))))
            return cb
        self.roster.on_entry_added.connect(item_ev("added"))
        self.roster.on_entry_name_changed.connect(item_ev("changed"))
        self.roster.on_entry_added_to_group.connect(item_ev("changed"))
        self.roster.on_entry_removed.connect(item_ev("removed"))
        self.roster.on_initial_roster_received.connect(
            lambda: ev.put(("initial-roster", self.roster.version)))
        pres = self.client.summon(aioxmpp.PresenceClient)

        def pres_ev(kind):
            def cb(full, st):
                status = None
                if st.status:
                    status = next(iter(st.status.values()))
                show = getattr(st.show, "value", None)
                ev.put(("presence", kind, str(full), show, status,
                        st.priority))
            return cb
        for kind in ("available", "changed", "unavailable"):
            getattr(pres, "on_" + kind).connect(pres_ev(kind))
        self.pserver = self.client.summon(aioxmpp.PresenceServer)
        self.cm = self.client.connected(
            presence=aioxmpp.PresenceState(available))
        await asyncio.wait_for(self.cm.__aenter__(), STEP)

    def set_presence(self, show=None, status=None, priority=0):
        import aioxmpp

        async def go():
            st = aioxmpp.PresenceState(
                True, aioxmpp.PresenceShow(show) if show else
                aioxmpp.PresenceShow.NONE)
            self.pserver.set_presence(st, status=status or {},
                                      priority=priority)
        self.lt.run(go())

    def export_roster(self):
        async def go():
            return self.roster.export_as_json()
        return self.lt.run(go())

    def stop(self):
        if self.cm is None:
            return

        async def go():
            try:
                await asyncio.wait_for(self.cm.__aexit__(None, None, None),
                                       5)
            except Exception:  # noqa: BLE001 - best effort
                self.client.stop()
        try:
            self.lt.run(go())
        except Exception:  # noqa: BLE001 - best effort
            pass
        self.cm = None
