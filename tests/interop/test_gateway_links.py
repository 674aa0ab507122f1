#!/usr/bin/python3
"""test_gateway_links.py - two parley-gateway instances on one queue file,
each with its own component links to parleyd (max_links), stream
management (XEP-0198) on them, and nothing lost or sent twice when one
is killed with SIGKILL in the middle of a burst.

Starts parleyd (components sms.localhost and mail.localhost), Kannel
(bearerbox, smsbox, fakesmsc; helpers from test_gateway_sms.py),
gw_smtp_probe as the e-mail relay (from test_gateway_mail.py) and two
gateways; a slixmpp client sends the bursts.

Checks: both instances link to both domains with stream management on;
a burst of IM->SMS and IM->e-mail messages to many numbers and addresses
is spread over both instances, each SMS arrives at fakesmsc and each
e-mail at the relay exactly once, with every receipt; with Kannel
unreachable (the gateways reach smsbox through a forwarder the test turns
off) and the relay down, a burst is sent and one instance is killed with SIGKILL
while it arrives: parleyd sends what that link left unacknowledged to the
other instance (`parleyctl components`: resent), the queue stores every
message once (duplicates dropped), and once Kannel and the relay are back
(the killed instance restarted) every SMS and e-mail arrives exactly
once.

Run with /usr/bin/python3; `scripts/run-tests test_gateway_links`.
"""

import json
import os
import signal
import socket
import sqlite3
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402
from im_common import PW, LoopThread, add_users  # noqa: E402
import test_gateway_mail as tgm  # noqa: E402
from test_gateway_sms import (DOMAIN, FAKESMSC, GATEWAY, SECRET,  # noqa: E402
                              Gateway, Kannel, Phone, kannel_logs)

import slixmpp  # noqa: E402
from slixmpp.xmlstream.handler import Callback  # noqa: E402
from slixmpp.xmlstream.matcher import MatchXPath  # noqa: E402

MAIL = "mail.localhost"
NS_RECEIPTS = "urn:xmpp:receipts"
NUMBERS = ["+1555100%04d" % i for i in range(20)]
ADDRS = ["rcpt%d@example.org" % i for i in range(20)]


def mail_jid(addr):
    return "%s@%s" % (addr.replace("@", "\\40"), MAIL)


class Client(slixmpp.ClientXMPP):
    """Sends bursts; records receipts (ids) and errors."""

    def __init__(self, jid, password):
        super().__init__(jid, password)
        self.ssl_context = harness.no_verify_context()
        self.use_ipv6 = False
        harness.slixmpp_without_channel_binding(self)
        self.ready = threading.Event()
        self.lock = threading.Lock()
        self.receipts = []
        self.errors = []
        self.add_event_handler("session_start", self._start)
        self.register_handler(Callback(
            "messages", MatchXPath("{jabber:client}message"), self._msg))

    def _start(self, _):
        self.send_presence()
        self.ready.set()

    def _msg(self, m):
        r = m.xml.find("{%s}received" % NS_RECEIPTS)
        with self.lock:
            if r is not None:
                self.receipts.append(r.get("id"))
            if m.xml.get("type") == "error":
                self.errors.append(m.xml.get("id"))

    def burst(self, items):
        """items: (to, id, text); all written at once, with <request/>."""
        for to, mid, text in items:
            self.send_one(to, mid, text)

    def send_one(self, to, mid, text):
        m = self.make_message(mto=to, mbody=text, mtype="chat")
        m["id"] = mid
        m.xml.append(slixmpp.ET.Element("{%s}request" % NS_RECEIPTS))
        m.send()

    def paced(self, items, gap):
        """items written one every gap seconds (on the client's loop)."""
        for i, (to, mid, text) in enumerate(items):
            self.loop.call_later(i * gap, self.send_one, to, mid, text)


class Switch:
    """A TCP forwarder from the gateways to smsbox that the test turns off
    (listener and connections closed: "Kannel unreachable") and on.
    smsbox itself stays up: started while gateways retry against it,
    Debian's smsbox 1.4.5 takes sendsms requests before its bearerbox
    link is up and dies on an assertion."""

    def __init__(self, upstream):
        self.upstream = upstream
        self.port, = harness.free_ports(1)
        self.sendsms = self.port  # what Gateway reads
        self.lock = threading.Lock()
        self.socks = []
        self.listener = None

    def on(self):
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", self.port))
        ls.listen(64)
        self.listener = ls
        threading.Thread(target=self._accept, args=(ls,), daemon=True).start()

    def off(self):
        with self.lock:
            ls, self.listener = self.listener, None
        if ls:
            # shutdown wakes the accept() blocked in the other thread
            # (close alone would leave the socket listening under it).
            try:
                ls.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            ls.close()
        with self.lock:
            socks, self.socks = self.socks, []
        for x in socks:
            try:
                x.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            x.close()

    def _accept(self, ls):
        while True:
            try:
                a, _ = ls.accept()
            except OSError:
                return
            try:
                b = socket.create_connection(("127.0.0.1", self.upstream), 5)
            except OSError:
                a.close()
                continue
            with self.lock:
                live = self.listener is ls
                if live:
                    self.socks += [a, b]
            if not live:
                a.close()
                b.close()
                continue
            for x, y in ((a, b), (b, a)):
                threading.Thread(target=self._pump, args=(x, y),
                                 daemon=True).start()

    @staticmethod
    def _pump(x, y):
        try:
            while True:
                data = x.recv(65536)
                if not data:
                    break
                y.sendall(data)
        except OSError:
            pass
        try:
            y.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def counts(d, like):
    db = sqlite3.connect("file:%s?mode=ro" % os.path.join(d, "gateway.db"),
                         uri=True)
    try:
        return db.execute("SELECT count(*), count(DISTINCT sender_msgid)"
                          " FROM messages WHERE text LIKE ?",
                          (like,)).fetchone()
    finally:
        db.close()


def accepted_by(d, like):
    """{(instance, dest): count} of who accepted the messages."""
    db = sqlite3.connect("file:%s?mode=ro" % os.path.join(d, "gateway.db"),
                         uri=True)
    try:
        return {(i, dest): n for i, dest, n in db.execute(
            "SELECT h.instance, m.dest, count(*) FROM messages m"
            " JOIN history h ON h.id = m.id AND h.state = 'accepted'"
            " WHERE m.text LIKE ? GROUP BY h.instance, m.dest", (like,))}
    finally:
        db.close()


def components(srv):
    rc, out = srv.ctl("components", "--json")
    try:
        return {x["domain"]: x for x in json.loads(out)}
    except (ValueError, KeyError, TypeError):
        return {}


def items(prefix, n):
    """n messages: SMS and e-mail alternately, over many recipients."""
    out = []
    for i in range(n):
        if i % 3 == 2:
            to = mail_jid(ADDRS[i % len(ADDRS)])
        else:
            to = "%s@%s" % (NUMBERS[i % len(NUMBERS)], DOMAIN)
        out.append((to, "%s%d" % (prefix, i), "%s %d" % (prefix, i)))
    return out


def main():
    for tool in (FAKESMSC, "/usr/sbin/bearerbox", "/usr/sbin/smsbox",
                 GATEWAY, tgm.PROBE):
        if not os.path.exists(tool):
            check("%s is available" % tool, False)
            harness.finish()
    cport, cb1, cb2, relay = harness.free_ports(4)
    srv = harness.Server(
        listeners_extra='{ protocol = "component"; address = "127.0.0.1"; '
                        'port = %d; tls = "none"; }' % cport,
        host_extra='components = ( { domain = "%s"; secret = "%s"; }, '
                   '{ domain = "%s"; secret = "%s"; } );'
                   % (DOMAIN, SECRET, MAIL, SECRET),
        extra="component: { sm_hold = 30; };")
    if not srv.start():
        check("parleyd starts", False, srv.dump_log())
        harness.finish()
    d = srv.dir
    kannel = Kannel(d, cb1)
    mail = ('mail = { domain = "%s"; im_host = "localhost"; '
            'recipient_domains = "gw.test"; relay = { url = '
            '"smtp://127.0.0.1:%d"; starttls = "none"; connect_timeout = 1; '
            'timeout = 5; }; };' % (MAIL, relay))
    gws = []
    sink = [None]
    lt = LoopThread()
    switch = None
    try:
        check("bearerbox starts with the fake SMSC", kannel.start_bearer())
        phone = Phone(d, kannel.smsc)
        check("smsbox starts (sendsms)", kannel.start_smsbox())
        sink[0] = tgm.Probe("--port", str(relay))
        switch = Switch(kannel.sendsms)
        switch.on()
        for name, cb in (("gw1", cb1), ("gw2", cb2)):
            g = Gateway(d, cport, name, cb, switch, extra=mail)
            gws.append(g)
            g.start()
        up = harness.wait_for(lambda: all(
            g.logtext().count("stream management on") >= 2 for g in gws), 20)
        comps = components(srv)
        check("two instances link to both domains, stream management on "
              "(parleyctl components: 2 links each)",
              up and comps.get(DOMAIN, {}).get("links") == 2 and
              comps.get(MAIL, {}).get("links") == 2,
              json.dumps(comps) + gws[0].logtext())
        if up:
            run(srv, d, switch, phone, sink, gws, lt, relay)
    finally:
        lt.stop()
        if switch:
            switch.off()
        for g in gws:
            g.stop()
        if sink[0] and sink[0].proc.poll() is None:
            sink[0].stop()
        kannel.stop()
        harness.finish()


def arrived(phone, sink, batch):
    """How many times each message of batch reached fakesmsc or the
    relay."""
    sms = [r[3] for r in phone.received()]
    mails = [(e.get("text") or "").strip() for e in sink.events("data")]
    return [(sms if to.endswith(DOMAIN) else mails).count(text)
            for to, _, text in batch]


def run(srv, d, switch, phone, sink, gws, lt, relay):
    user = harness.unique("gl")
    add_users(srv, user)

    async def login():
        # Built on the loop thread: slixmpp takes the running loop.
        c = Client("%s@%s/burst" % (user, srv.domain), PW)
        c.connect((srv.host, srv.starttls_port), use_ssl=False,
                  force_starttls=True)
        return c
    c = lt.run(login())
    if not check("slixmpp logs in", c.ready.wait(30)):
        return

    # -- a burst spread over both instances
    batch = items("spread", 60)
    lt.loop.call_soon_threadsafe(c.burst, batch)
    harness.wait_for(lambda: min(arrived(phone, sink[0], batch)) >= 1, 60)
    time.sleep(1)
    n = arrived(phone, sink[0], batch)
    check("a burst of 60 (40 SMS to 20 numbers, 20 e-mails to 20 "
          "addresses): each arrives exactly once", n == [1] * 60, str(n))
    per = accepted_by(d, "spread %")
    check("the burst was spread over both instances, for both domains "
          "(who accepted what, from the history)",
          all(per.get((g.name, dest), 0) > 0 for g in gws
              for dest in ("sms", "mail")) and sum(per.values()) == 60,
          str(per))
    ok = harness.wait_for(lambda: all(
        ("spread%d" % i) in c.receipts for i in range(60) if i % 3 != 2), 30)
    check("a receipt for every SMS", ok, str(len(c.receipts)))

    # -- SIGKILL in the middle of a burst, with smsbox and the relay down
    switch.off()
    sink[0].stop()
    resent0 = sum(x.get("resent", 0) for x in components(srv).values())
    batch = items("kill", 300)
    # Paced (300 over 3 s), so that the kill falls inside the burst however
    # fast the gateways store; SIGSTOP first, so that the stanzas parleyd
    # routes to that instance meanwhile are surely unacknowledged when it
    # dies.
    lt.loop.call_soon_threadsafe(c.paced, batch, 0.01)
    harness.wait_for(lambda: counts(d, "kill %")[0] >= 40, 30)
    os.kill(gws[0].proc.pid, signal.SIGSTOP)
    stopped_at = counts(d, "kill %")[0]
    # (the other instance goes on; if the stopped one held the queue's
    # write lock, nothing moves until the kill, well inside busy_timeout)
    harness.wait_for(lambda: counts(d, "kill %")[0] >= stopped_at + 10, 2)
    gws[0].stop(signal.SIGKILL)
    at_kill = counts(d, "kill %")[0]
    settled = harness.wait_for(lambda: counts(d, "kill %") == (300, 300), 60)
    total, distinct = counts(d, "kill %")
    comps = components(srv)
    resent = sum(x.get("resent", 0) for x in comps.values()) - resent0
    check("killed after %d of 300 were stored: parleyd sends what the dead "
          "link left unacknowledged to the other instance (resent %d)"
          % (at_kill, resent), at_kill < 300 and resent > 0, json.dumps(comps))
    check("the queue holds each of the 300 once (duplicates dropped)",
          settled and (total, distinct) == (300, 300),
          "%d rows, %d distinct" % (total, distinct))
    db = sqlite3.connect("file:%s?mode=ro" % os.path.join(d, "gateway.db"),
                         uri=True)
    dups = db.execute("SELECT count(*) FROM history WHERE detail LIKE "
                      "'%parleyd resent it%'").fetchone()[0]
    db.close()
    harness.note("copies committed by the killed instance before its ack, "
                 "dropped by the queue: %d" % dups)
    gws[0].start()
    switch.on()
    sink[0] = tgm.Probe("--port", str(relay))
    harness.wait_for(lambda: min(arrived(phone, sink[0], batch)) >= 1, 120)
    time.sleep(2)
    n = arrived(phone, sink[0], batch)
    missing = [b[1] for b, k in zip(batch, n) if k == 0]
    twice = [b[1] for b, k in zip(batch, n) if k > 1]
    check("after the kill, every SMS reached fakesmsc and every e-mail the "
          "relay exactly once", not missing and not twice,
          "missing %s, twice %s %s" % (missing[:20], twice[:20],
                                       kannel_logs(d)[-1500:]))
    ok = harness.wait_for(lambda: all(
        ("kill%d" % i) in c.receipts for i in range(300) if i % 3 != 2), 60)
    with c.lock:
        errs = list(c.errors)
    check("a receipt for every SMS of the burst, and no error", ok and
          not errs, "%d receipts, errors %s" % (len(c.receipts), errs[:10]))
    lt.loop.call_soon_threadsafe(c.disconnect)


if __name__ == "__main__":
    main()
