#!/usr/bin/python3
"""test_sip_kamailio.py - Kamailio 5.6 (Debian's kamailio) as an edge proxy
in front of Parley's SIP front end (issue 14): the UAs talk only to
Kamailio, which relays everything statefully (tm) to Parley over UDP,
puts itself in the Path of REGISTERs (path module, RFC 3327) and in the
Record-Route of SUBSCRIBEs (rr module), and loose-routes what comes back.
Kamailio refuses (403) a request from Parley that carries no Route naming
it, and (404) an in-dialog request without one: what reaches a UA from
Parley went through Kamailio because Parley followed the Path or the
dialog's route set.

  - REGISTER with digest through the proxy: the 401 comes back, the 200
    lists the contact and the Path; parleyctl shows the Path; a REGISTER
    with a Path but without Supported: path gets 420 (RFC 3327 §5.3);
  - a Path naming another port of the REGISTER's source (a proxy that
    sends from another port than it listens on): Parley's MESSAGE goes to
    that port with the Route; a Path naming another host: never there;
  - MESSAGE SIP->SIP, SIP->XMPP (slixmpp) and XMPP->SIP through the proxy,
    the requests to the UA carrying Kamailio's Via on top of Parley's,
    from Kamailio's address; Kamailio's log shows Parley's Route;
  - the UA drops the first transmission of a MESSAGE: the retransmission
    comes through the proxy and is answered, the message is delivered once;
  - SUBSCRIBE through the proxy: 200 with the Record-Route, NOTIFYs come
    back through the proxy (with the Route set), a change NOTIFY, then an
    un-SUBSCRIBE sent along the route set: 200 and the final NOTIFY;
  - baresip (Debian's baresip-core) registers through Kamailio and
    exchanges a MESSAGE with a slixmpp user both ways, each way through
    Kamailio.

Run with /usr/bin/python3; `scripts/run-tests sip_kamailio`.
"""

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, wait_for  # noqa: E402
from im_common import (STEP, LoopThread, add_users,  # noqa: E402
                       friend_online)
from sipua import SipUA, parse  # noqa: E402
from test_sip_im import (SipUser, _slix, _slix_stop,  # noqa: E402
                         baresip, code_of, contacts_of, counter,
                         registrations, sip_server)
from test_sip_presence import Watcher, sub_state  # noqa: E402

MODULES = "/usr/lib/x86_64-linux-gnu/kamailio/modules"

CONFIG = r"""#!KAMAILIO
debug=2
log_stderror=yes
log_prefix=""
fork=yes
children=1
auto_aliases=no
disable_tcp=yes
listen=udp:127.0.0.1:%(kport)d
mpath="%(modules)s"

loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "path.so"
loadmodule "maxfwd.so"
loadmodule "pv.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"

modparam("tm", "fr_timer", 10000)

request_route {
    xlog("L_ERR", "KAMREQ $rm ruri=$ru src=$si:$sp to=$tU route=$hdr(Route)\n");
    if (!mf_process_maxfwd_header("10")) {
        sl_send_reply("483", "Too Many Hops");
        exit;
    }
    if (has_totag()) {
        # In a dialog: only along a route set naming this proxy.
        if (loose_route()) {
            route(RELAY);
        }
        sl_send_reply("404", "No Route Set");
        exit;
    }
    if (is_method("CANCEL")) {
        if (t_check_trans()) {
            t_relay();
        }
        exit;
    }
    t_check_trans();
    if ($si == "127.0.0.1" && $sp == %(pport)d) {
        # Parley to a registered UA: the Path as a preloaded Route naming
        # this proxy (loose_route() removes it; the Request-URI, the UA's
        # contact, is then the next hop).  Nothing else.
        if ($hdr(Route) =~ "^<sip:127\.0\.0\.1:%(kport)d[;>]") {
            loose_route();
            route(RELAY);
        }
        sl_send_reply("403", "No Route From Parley");
        exit;
    }
    # A UA's own preloaded Route to this proxy (its outbound proxy).
    if (is_present_hf("Route")) {
        loose_route();
    }
    if (is_method("REGISTER")) {
        add_path();
    }
    if (is_method("SUBSCRIBE")) {
        record_route();
    }
    $du = "sip:127.0.0.1:%(pport)d";
    route(RELAY);
}

route[RELAY] {
    if (!t_relay()) {
        sl_reply_error();
    }
    exit;
}
"""


class Kamailio:
    """A Kamailio of the test's own: config in a temp dir, foreground,
    stderr to a log file, stopped by process id."""

    def __init__(self, kport, pport):
        self.kport, self.pport = kport, pport
        self.dir = tempfile.mkdtemp(prefix="parley-kamailio-")
        self.cfg = os.path.join(self.dir, "kamailio.cfg")
        with open(self.cfg, "w") as f:
            f.write(CONFIG % {"kport": kport, "pport": pport,
                              "modules": MODULES})
        self.log_path = os.path.join(self.dir, "kamailio.log")
        self.proc = None

    def start(self, srv):
        if not shutil.which("kamailio"):
            check("kamailio is installed", False,
                  "run scripts/bootstrap --test")
            return False
        self.log = open(self.log_path, "w")
        self.proc = harness.spawn(
            "kamailio", ["kamailio", "-f", self.cfg, "-DD", "-E",
                         "-Y", self.dir, "-P",
                         os.path.join(self.dir, "kamailio.pid")],
            stdin=subprocess.DEVNULL, stdout=self.log,
            stderr=subprocess.STDOUT)
        # Ready when an OPTIONS relayed to Parley comes back answered.
        ua = SipUA("127.0.0.1", self.kport)

        def answered():
            r = ua.transact(ua.request("OPTIONS", "sip:%s" % srv.domain),
                            timeout=0.5)
            return r is not None and r.code == 200
        ok = wait_for(answered, 15, 0.2)
        ua.close()
        check("Kamailio starts and relays an OPTIONS to Parley (200)", ok,
              self.log_text()[-2000:])
        return ok

    def log_text(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def seen(self, method, pred=lambda line: True):
        """The KAMREQ lines of method that pred accepts."""
        out = []
        for line in self.log_text().splitlines():
            m = re.search(r"KAMREQ (\S+) ruri=(\S*) src=(\S+) to=(\S*) "
                          r"route=(.*)$", line)
            if m and m.group(1) == method and pred(m):
                out.append(m)
        return out

    def stop(self):
        if self.proc is not None:
            harness.stop_group(self.proc, grace=5)
            self.proc = None
            self.log.close()

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)


def via_hosts(m):
    """The sent-by of each Via of m, top first (comma lists split)."""
    out = []
    for v in m.all("via"):
        for part in v.split(","):
            f = part.strip().split()
            if len(f) >= 2:
                out.append(f[1].split(";")[0])
    return out


def via_branch(m):
    v = m.all("via")[0].split(",")[0]
    mm = re.search(r"branch=([^;\s]+)", v)
    return mm.group(1) if mm else None


class ProxyUser(SipUser):
    """A SipUser whose server is Kamailio and who says it supports Path;
    in-dialog requests go to the remote target along the route set."""

    def __init__(self, srv, kport, user):
        super().__init__(srv, kport, user)
        self.supported = "Supported: path\r\n"

    def register(self, **kw):
        kw["extra"] = kw.get("extra", "") + self.supported
        return super().register(**kw)


class ProxyWatcher(Watcher):
    def __init__(self, srv, kport, user):
        super().__init__(srv, kport, user)

    def register(self, **kw):
        kw["extra"] = kw.get("extra", "") + "Supported: path\r\n"
        return super().register(**kw)

    def unsubscribe_in_dialog(self, user, dlg, target, route_set):
        """The un-SUBSCRIBE as RFC 3261 §12.2.1.1 wants it: Request-URI
        the remote target, Route the route set (the UAC's: the 200's
        Record-Route reversed)."""
        return self.subscribe(user, expires=0, dialog=dlg, accept=None,
                              target=target, route_set=route_set)[0]


def from_proxy(ua, m, kport, pport):
    """m (a request the UA got) came from Kamailio, its top Via is
    Kamailio's and the next one Parley's."""
    hosts = via_hosts(m) if m is not None else []
    return (m is not None and ua.ua.last_from == ("127.0.0.1", kport) and
            len(hosts) >= 2 and hosts[0] == "127.0.0.1:%d" % kport and
            hosts[1] == "127.0.0.1:%d" % pport and
            not m.all("route"))


# ------------------------------------------------------------------ tests

def register_through(srv, kam, kport, pport, users):
    a = ProxyUser(srv, kport, users["alice"])
    first, final = a.register(expires=300)
    check("REGISTER through Kamailio: the 401 challenge comes back "
          "through the proxy (only the UA's own Via left)",
          first is not None and first.code == 401 and
          len(via_hosts(first)) == 1 and
          first.get("www-authenticate") is not None, first)
    path = "<sip:127.0.0.1:%d;lr>" % kport
    check("REGISTER through Kamailio with digest: 200 with the contact "
          "and Kamailio's Path (RFC 3327 §5.3)",
          code_of(final) == 200 and a.contact_uri in contacts_of(final) and
          final.get("path") == path, final)
    regs = [r for r in registrations(srv)
            if r.get("aor") == "%s@%s" % (users["alice"], srv.domain)]
    check("parleyctl sip: the binding has the Path and came from Kamailio",
          len(regs) == 1 and regs[0].get("path") == path and
          regs[0].get("peer") == "127.0.0.1:%d" % kport, regs)
    check("Kamailio saw the REGISTERs (challenge and credentials)",
          len(kam.seen("REGISTER")) >= 2, kam.log_text()[-1500:])

    # Kamailio puts itself in the Path whether the UA said Supported:
    # path or not; Parley then follows RFC 3327 §5.3's recommended policy.
    n = SipUser(srv, kport, users["nopath"])
    first, final = n.register(expires=300)
    r = final if final is not None else first
    check("a REGISTER with a Path and no Supported: path: 420 with "
          "Unsupported: path", code_of(r) == 420 and
          (r.get("unsupported") or "") == "path", r)
    n.close()
    return a


def path_first_hop(srv, pport, users):
    """No Kamailio: the UA writes a Path naming another of its ports (a
    proxy that sends from another port than it listens on)."""
    u = SipUser(srv, pport, users["pat"])
    hop = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    hop.bind(("127.0.0.1", 0))
    hop_port = hop.getsockname()[1]
    route = "<sip:127.0.0.1:%d;lr>" % hop_port
    _, final = u.register(expires=300, extra="Supported: path\r\n"
                          "Path: %s\r\n" % route)
    check("REGISTER with Supported: path and a Path: 200 with the Path",
          code_of(final) == 200 and final.get("path") == route, final)
    lt = LoopThread()
    got = []
    client = None
    try:
        x = users["xpat"]
        client = lt.run(_slix(srv, "%s@%s" % (x, srv.domain), got), STEP * 3)
        aor = "%s@%s" % (u.user, srv.domain)
        lt.loop.call_soon_threadsafe(
            lambda: client.send_message(mto=aor, mbody="via the first hop",
                                        mtype="chat"))
        hop.settimeout(STEP)
        m = None
        try:
            data, addr = hop.recvfrom(70000)
            m = parse(data)
        except (socket.timeout, OSError):
            addr = None
        check("Parley's MESSAGE goes to the Path's first hop (another port "
              "of the REGISTER's source) with the Route, Request-URI the "
              "contact", m is not None and m.method == "MESSAGE" and
              m.all("route") == [route] and
              m.start.split()[1] == u.contact_uri and
              b"via the first hop" in m.body, m)
        if m is not None:
            hop.sendto(u.ua.answer(m, 200), addr)
        u.pump(0.3)
        check("... and not to the UA's own address",
              not [q for q in u.inbox if q.method == "MESSAGE"], u.inbox)

        # A Path naming another host: Parley sends to the REGISTER's
        # source instead (it never aims its requests at a third party).
        far = "<sip:192.0.2.7:5070;lr>"
        _, final = u.register(expires=300, extra="Supported: path\r\n"
                              "Path: %s\r\n" % far)
        lt.loop.call_soon_threadsafe(
            lambda: client.send_message(mto=aor, mbody="not to 192.0.2.7",
                                        mtype="chat"))
        m = u.wait_request(lambda q: q.method == "MESSAGE", STEP)
        check("a Path naming another host: the MESSAGE (Route kept) goes to "
              "the REGISTER's source, not to that host",
              code_of(final) == 200 and m is not None and
              m.all("route") == [far] and b"192.0.2.7" in m.body, m)
    finally:
        if client:
            try:
                lt.run(_slix_stop(client))
            except Exception:  # noqa: BLE001
                pass
        lt.stop()
        hop.close()
        u.unregister()
        u.close()


def messages_through(srv, kam, kport, pport, users, alice):
    b = ProxyUser(srv, kport, users["bob"])
    _, final = b.register(expires=300)
    check("bob registers through Kamailio", code_of(final) == 200, final)

    # SIP -> SIP.
    r, _ = alice.message(b.user, "hello bob through the proxy")
    m = b.wait_request(lambda q: q.method == "MESSAGE" and
                       b"hello bob through" in q.body)
    check("SIP -> SIP through Kamailio: 407 answered, then 200",
          code_of(r) == 200, r)
    check("SIP -> SIP: Parley's MESSAGE reaches bob from Kamailio, "
          "Kamailio's Via above Parley's, the Route consumed",
          from_proxy(b, m, kport, pport), (b.ua.last_from, m))
    check("Kamailio got Parley's MESSAGE with the Path as Route",
          kam.seen("MESSAGE", lambda g: g.group(3) ==
                   "127.0.0.1:%d" % pport and g.group(5) ==
                   "<sip:127.0.0.1:%d;lr>" % kport and
                   b.contact_uri in g.group(2)), kam.log_text()[-1500:])

    lt = LoopThread()
    got = []
    client = None
    try:
        x = users["xena"]
        xj = "%s@%s" % (x, srv.domain)
        client = lt.run(_slix(srv, xj, got), STEP * 3)
        errs = []
        lt.loop.call_soon_threadsafe(lambda: client.add_event_handler(
            "message_error", lambda m: errs.append(str(m))))
        # SIP -> XMPP.
        r, _ = alice.message(x, "hello xena from SIP")
        check("SIP -> XMPP through Kamailio: 200 and slixmpp gets it",
              code_of(r) == 200 and
              wait_for(lambda: any(body == "hello xena from SIP"
                                   for _, body in got), STEP), (r, got))
        # XMPP -> SIP.
        aor = "%s@%s" % (b.user, srv.domain)
        o0 = counter(srv, "sip_messages_out")
        lt.loop.call_soon_threadsafe(
            lambda: client.send_message(mto=aor, mbody="hello bob from xmpp",
                                        mtype="chat"))
        m = b.wait_request(lambda q: q.method == "MESSAGE" and
                           b"hello bob from xmpp" in q.body)
        check("XMPP -> SIP: the MESSAGE reaches bob through Kamailio",
              from_proxy(b, m, kport, pport), (b.ua.last_from, m))
        check("XMPP -> SIP: bob's 200 travels back (sip_messages_out)",
              wait_for(lambda: counter(srv, "sip_messages_out") > o0, STEP),
              counter(srv, "sip_messages_out"))

        # The UA drops the first transmission; the retransmission comes
        # through the proxy.
        b.answer_code = None
        o0 = counter(srv, "sip_messages_out")
        lt.loop.call_soon_threadsafe(
            lambda: client.send_message(mto=aor, mbody="say it twice",
                                        mtype="chat"))
        first = b.wait_request(lambda q: q.method == "MESSAGE" and
                               b"say it twice" in q.body)
        second = b.wait_request(lambda q: q.method == "MESSAGE" and
                                b"say it twice" in q.body, 3)
        check("a dropped MESSAGE is retransmitted through Kamailio (same "
              "branch, from the proxy)",
              first is not None and second is not None and
              via_branch(first) == via_branch(second) and
              from_proxy(b, second, kport, pport), (first, second))
        if second is not None:
            b.ua.reply_to_server(b.ua.answer(second, 200), b.ua.last_from)
        b.answer_code = 200
        check("... answered the second time: delivered (sip_messages_out)",
              wait_for(lambda: counter(srv, "sip_messages_out") > o0, STEP),
              counter(srv, "sip_messages_out"))
        b.pump(1.0)
        again = [q for q in b.inbox if b"say it twice" in q.body]
        check("... once: no new MESSAGE for it after the 200", not again,
              again)
        time.sleep(0.3)
        check("... and the XMPP sender got no error", not errs, errs)
    finally:
        if client:
            try:
                lt.run(_slix_stop(client))
            except Exception:  # noqa: BLE001
                pass
        lt.stop()
    b.unregister()
    b.close()


def subscribe_through(srv, kam, kport, pport, users):
    s, x = users["sue"], users["xia"]
    xc = friend_online(srv, s, x, "sue and xia")
    if xc is None:
        return
    w = ProxyWatcher(srv, kport, s)
    _, final = w.register(expires=300)
    check("the watcher registers through Kamailio", code_of(final) == 200,
          final)
    r, dlg = w.subscribe(x, expires=120)
    rr = r.all("record-route") if r is not None else []
    check("SUBSCRIBE through Kamailio: 200 with Kamailio's Record-Route "
          "copied (RFC 3261 §12.1.1)",
          code_of(r) == 200 and dlg[1] and len(rr) == 1 and
          rr[0].startswith("<sip:127.0.0.1:%d;lr" % kport), r)
    rr0 = rr[0] if rr else "?"
    n = w.notify(dlg[0])
    check("the first NOTIFY comes back through Kamailio (active, PIDF open)",
          n is not None and sub_state(n).startswith("active") and
          b"<basic>open</basic>" in n.body and
          from_proxy(w, n, kport, pport), (w.ua.last_from, n))
    check("Kamailio got the NOTIFY from Parley with the route set as Route, "
          "URI parameters kept (Request-URI the watcher's Contact)",
          kam.seen("NOTIFY", lambda g: g.group(3) == "127.0.0.1:%d" % pport
                   and g.group(5) == rr0 and
                   w.contact_uri in g.group(2)), kam.log_text()[-1500:])
    xc.presence(show="away", status="through the proxy")
    n = w.notify(dlg[0])
    check("a change: NOTIFY with away through Kamailio",
          n is not None and b"away" in n.body and
          from_proxy(w, n, kport, pport), n)
    target = r.get("contact").strip("<>") if r is not None else ""
    route_set = list(reversed(rr))
    u = w.unsubscribe_in_dialog(x, dlg, target, route_set)
    n = w.notify(dlg[0])
    check("un-SUBSCRIBE along the route set to the remote target: 200",
          code_of(u) == 200, u)
    check("... and the final NOTIFY (terminated) through Kamailio",
          n is not None and sub_state(n).startswith("terminated") and
          from_proxy(w, n, kport, pport), n)
    check("Kamailio loose-routed the un-SUBSCRIBE to Parley's Contact",
          kam.seen("SUBSCRIBE", lambda g: g.group(2) == target and
                   g.group(5) == route_set[0] if route_set else False),
          kam.log_text()[-1500:])
    xc.logout()
    w.unregister()
    w.close()


def baresip_through(srv, kam, kport, pport, users):
    """test_sip_im's baresip scenario with Kamailio as its outbound proxy;
    then Kamailio's log shows both MESSAGEs and the REGISTER went through
    it."""
    n0 = len(kam.seen("MESSAGE"))
    # sipnat=outbound: libre then says Supported: path (RFC 3327 §5.1),
    # without which Parley refuses the Path Kamailio adds (420).
    baresip(srv, kport, {"bert": users["bert"], "xavi": users["xavi"]},
            outbound=True)
    check("baresip's REGISTER went through Kamailio",
          kam.seen("REGISTER", lambda g: g.group(4) == users["bert"]),
          kam.log_text()[-1500:])
    msgs = kam.seen("MESSAGE")[n0:]
    check("baresip -> Parley: its MESSAGE went through Kamailio",
          any(g.group(3) != "127.0.0.1:%d" % pport for g in msgs),
          [g.group(0) for g in msgs])
    check("Parley -> baresip: Parley's MESSAGE went through Kamailio with "
          "the Path as Route",
          any(g.group(3) == "127.0.0.1:%d" % pport and
              g.group(5) == "<sip:127.0.0.1:%d;lr>" % kport for g in msgs),
          [g.group(0) for g in msgs])


def main():
    srv, pport = sip_server(nonce_lifetime=60, tcp=False)
    kport, = harness.free_ports(1)
    names = {k: harness.unique(k) for k in
             ("alice", "bob", "nopath", "pat", "xpat", "xena", "sue", "xia",
              "bert", "xavi")}
    add_users(srv, *names.values())
    kam = Kamailio(kport, pport)
    try:
        if kam.start(srv):
            alice = register_through(srv, kam, kport, pport, names)
            messages_through(srv, kam, kport, pport, names, alice)
            subscribe_through(srv, kam, kport, pport, names)
            alice.unregister()
            alice.close()
            baresip_through(srv, kam, kport, pport, names)
        path_first_hop(srv, pport, names)
    finally:
        kam.stop()
        kam.cleanup()
    srv.stop()
    harness.finish()


if __name__ == "__main__":
    main()
