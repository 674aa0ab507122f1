#!/usr/bin/python3
"""test_gateway_sms.py - parley-gateway between IM and SMS, with the real
Kannel (bearerbox + smsbox) and its fake SMSC (kannel-extras' fakesmsc).

Starts parleyd with a component entry for sms.localhost, bearerbox (one
"fake" SMSC), smsbox (sendsms for the gateway, a get-url service for
mobile-originated messages), fakesmsc in interactive mode (MO messages
are written to its stdin; MT messages show in its log at debug level),
and parley-gateway, all on free loopback ports with their own files in
the server's temporary directory, every one stopped by its pid.

Checks: disco identity gateway/sms; IM->SMS delivered with a XEP-0184
receipt; a bad address refused (jid-malformed); a long text split into
concatenated parts (UDH) and one receipt once every part is delivered;
SMS->IM to the user who wrote to the number; registration with the code
sent by SMS (a wrong code refused); smsbox down then up (retried,
delivered once); two instances on one queue (no duplicates); an instance
killed with SIGKILL while sending (nothing lost, nothing sent twice);
`parleyctl gateway queue` and `trace`.

Run with /usr/bin/python3; `scripts/run-tests test_gateway_sms`.
"""

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gw_common  # noqa: E402
import harness  # noqa: E402
from harness import check, tostr  # noqa: E402
from im_common import ImClient, add_users, error_of  # noqa: E402

DOMAIN = "sms.localhost"
SECRET = "sms-secret"
SENDER = "+15550000"
FAKESMSC = "/usr/lib/kannel/test/fakesmsc"
GATEWAY = gw_common.GATEWAY
NS_RECEIPTS = "urn:xmpp:receipts"
NS_DISCO = "http://jabber.org/protocol/disco#info"
NS_REG = "jabber:iq:register"


def wait_port(port, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return True
        except OSError:
            time.sleep(0.1)
    return False


def parse_mt(entry):
    """One MT message of fakesmsc's log, "FROM TO KIND REST": (sender,
    receiver, udh, text), or None when it is not one."""
    p = entry.split(" ", 3)
    if len(p) < 4:
        return None
    frm, to, kind, rest = p
    udh = None
    if kind == "udh":
        # "udh <udh> data <text>" (Debian's 1.4.5), both URL-encoded.
        u, _, rest = rest.partition(" ")
        udh = urllib.parse.unquote_to_bytes(u)
        for k in ("data ", "text "):
            if rest.startswith(k):
                rest = rest[len(k):]
        rest = urllib.parse.unquote_to_bytes(
            rest.replace("+", " ")).decode("utf-8", "replace")
    elif kind == "data":
        rest = urllib.parse.unquote_to_bytes(rest).decode("utf-8", "replace")
    return (frm, to, udh, rest)


class Phone:
    """fakesmsc: MO lines to its stdin, MT lines parsed from its log."""

    def __init__(self, d, port):
        self.log = os.path.join(d, "fakesmsc.log")
        self.proc = harness.spawn(
            "fakesmsc", [FAKESMSC, "-H", "127.0.0.1", "-r", str(port),
                         "-v", "0"],
            stdin=subprocess.PIPE, stdout=open(self.log, "w"),
            stderr=subprocess.STDOUT)

    def send(self, frm, to, text):
        self.proc.stdin.write(("%s %s text %s\n" % (frm, to, text))
                              .encode())
        self.proc.stdin.flush()

    def received(self):
        """Every MT message so far: (sender, receiver, udh, text)."""
        out = []
        with open(self.log, errors="replace") as f:
            for line in f:
                m = re.search(r"Got message \d+: <(.*)>", line)
                if not m:
                    continue
                mt = parse_mt(m.group(1))
                if mt:
                    out.append(mt)
        return out

    def wait_for(self, pred, count=1, timeout=20):
        got = []
        harness.wait_for(lambda: len([r for r in self.received()
                                      if pred(r)]) >= count, timeout)
        got = [r for r in self.received() if pred(r)]
        return got


class Kannel:
    def __init__(self, d, cb_port):
        (self.admin, self.boxport, self.smsc, self.sendsms) = \
            harness.free_ports(4)
        self.d = d
        self.conf = os.path.join(d, "kannel.conf")
        with open(self.conf, "w") as f:
            f.write("""group = core
admin-port = %d
admin-password = admin
smsbox-port = %d
admin-interface = 127.0.0.1
box-allow-ip = 127.0.0.1
log-file = "%s/bearerbox.log"
log-level = 1
dlr-storage = internal

group = smsc
smsc = fake
smsc-id = fake
port = %d
connect-allow-ip = 127.0.0.1

group = smsbox
bearerbox-host = 127.0.0.1
sendsms-port = %d
sendsms-interface = 127.0.0.1
log-file = "%s/smsbox.log"
log-level = 1

group = sendsms-user
username = gw
password = gwpass
max-messages = 1

group = sms-service
keyword = default
catch-all = true
omit-empty = true
max-messages = 0
get-url = "http://127.0.0.1:%d/mo?from=%%p&to=%%P&text=%%a"
""" % (self.admin, self.boxport, d, self.smsc, self.sendsms, d, cb_port))
        self.bearer = None
        self.smsbox = None

    def start_bearer(self):
        self.bearer = harness.spawn(
            "bearerbox", ["/usr/sbin/bearerbox", self.conf],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return wait_port(self.smsc)

    def start_smsbox(self):
        self.smsbox = harness.spawn(
            "smsbox", ["/usr/sbin/smsbox", self.conf],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return wait_port(self.sendsms)

    def stop_smsbox(self):
        if self.smsbox:
            harness.stop_group(self.smsbox)
            harness.untrack(self.smsbox)
            self.smsbox = None

    def stop(self):
        self.stop_smsbox()
        if self.bearer:
            harness.stop_group(self.bearer)
            harness.untrack(self.bearer)


class Gateway:
    def __init__(self, d, srv_cport, name, cb_port, kannel, extra=""):
        self.name = name
        self.cb_port = cb_port
        self.conf = os.path.join(d, "gw-%s.conf" % name)
        self.log = os.path.join(d, "gw-%s.log" % name)
        with open(self.conf, "w") as f:
            f.write("""instance = "%s";
data_dir = "%s";
queue = "gateway.db";
log_level = "debug";
component = { host = "127.0.0.1"; port = %d; secret = "%s";
              reconnect_min = 100; reconnect_max = 1000; };
sms = {
  domain = "%s"; default_country = "1"; sender = "%s"; max_parts = 3;
  kannel = { sendsms_url = "http://127.0.0.1:%d/cgi-bin/sendsms";
             user = "gw"; password = "gwpass"; timeout = 2; };
  callback = { address = "127.0.0.1"; port = %d;
               url = "http://127.0.0.1:%d"; };
};
retry = { base = 300; max = 1000; jitter = 20; expiry = 120; };
queue_lease = 7;
queue_poll = 200;
%s
""" % (name, d, srv_cport, SECRET, DOMAIN, SENDER, kannel.sendsms,
                cb_port, cb_port, extra))
        self.proc = None

    def start(self):
        self.proc = harness.spawn(
            "gateway-" + self.name, [GATEWAY, "--config", self.conf],
            stdout=open(self.log, "a"), stderr=subprocess.STDOUT)

    def stop(self, sig=signal.SIGTERM):
        if self.proc:
            if sig == signal.SIGKILL:
                self.proc.kill()
                self.proc.wait(10)
            else:
                harness.stop_group(self.proc)
            harness.untrack(self.proc)
            self.proc = None

    def logtext(self):
        try:
            return open(self.log, errors="replace").read()[-3000:]
        except OSError:
            return ""


def kannel_logs(d):
    """The tails of Kannel's logs, for a failure's detail."""
    out = ""
    for name in ("bearerbox.log", "smsbox.log"):
        try:
            with open(os.path.join(d, name), errors="replace") as f:
                out += "\n--- %s\n%s" % (name, f.read()[-2500:])
        except OSError:
            pass
    return out


def is_msg_from(frm, pred=None):
    def p(e):
        return (e.tag.endswith("}message") and e.get("from") == frm and
                (pred is None or pred(e)))
    return p


def receipt_for(frm, mid):
    return is_msg_from(frm, lambda e: e.find(
        "{%s}received" % NS_RECEIPTS) is not None and e.find(
        "{%s}received" % NS_RECEIPTS).get("id") == mid)


def ctl(d, *args):
    return subprocess.run(
        [harness._abs(os.path.join(harness.BUILD, "parleyctl")), "gateway",
         "--queue", os.path.join(d, "gateway.db")] + list(args),
        capture_output=True, text=True, timeout=30)


def send_sms(cu, number, text, mid):
    cu.send("<message to='%s@%s' type='chat' id='%s'><body>%s</body>"
            "<request xmlns='%s'/></message>"
            % (number, DOMAIN, mid, text, NS_RECEIPTS))


def main():
    for tool in (FAKESMSC, "/usr/sbin/bearerbox", "/usr/sbin/smsbox"):
        if not os.path.exists(tool):
            check("%s is installed (scripts/bootstrap --test)" % tool, False)
            harness.finish()
    if not os.path.exists(GATEWAY):
        check("build/parley-gateway is built", False)
        harness.finish()
    cport, cb1, cb2 = harness.free_ports(3)
    srv = gw_common.start_server(cport, ((DOMAIN, SECRET),))
    d = srv.dir
    kannel = Kannel(d, cb1)
    gws = []
    try:
        check("bearerbox starts with the fake SMSC", kannel.start_bearer())
        phone = Phone(d, kannel.smsc)
        check("smsbox starts (sendsms)", kannel.start_smsbox())
        time.sleep(1)
        a = Gateway(d, cport, "gw1", cb1, kannel)
        gws.append(a)
        a.start()
        linked = harness.wait_for(lambda: "linked to parleyd" in a.logtext(),
                                  20)
        check("parley-gateway links to parleyd as a component", linked,
              a.logtext())
        if linked:
            run(srv, d, kannel, phone, a, gws, cport, cb2)
    finally:
        for g in gws:
            g.stop()
        kannel.stop()
        harness.finish()


def run(srv, d, kannel, phone, a, gws, cport, cb2):
    user = harness.unique("sms")
    add_users(srv, user)
    cu = ImClient(srv, user, "desk")
    cu.presence()
    num = "+15551234567"
    njid = "%s@%s" % (num, DOMAIN)

    # disco
    r = cu.request("<query xmlns='%s'/>" % NS_DISCO, to=DOMAIN)
    ident = r.find("{%s}query/{%s}identity" % (NS_DISCO, NS_DISCO)) \
        if r is not None else None
    check("disco#info: identity gateway/sms",
          ident is not None and ident.get("category") == "gateway" and
          ident.get("type") == "sms", tostr(r))

    # IM -> SMS with a receipt
    send_sms(cu, num, "hello phone", "m1")
    got = phone.wait_for(lambda r: r[1] == num and r[3] == "hello phone")
    check("IM->SMS: the fake SMSC receives the text, to the number, from "
          "the gateway's sender", len(got) == 1 and got[0][0] == SENDER,
          str(phone.received()[-3:]))
    rc = cu.wait(receipt_for(njid, "m1"), timeout=20)
    check("IM->SMS: a XEP-0184 receipt comes back when Kannel reports "
          "delivery", rc is not None, a.logtext() + kannel_logs(d))

    # The callback listener keeps connections (smsbox reuses them) and
    # answers pipelined requests in order, each once its job committed.
    s = socket.create_connection(("127.0.0.1", a.cb_port), 10)
    s.settimeout(10)
    req = ("GET /dlr?id=%s&part=1&type=8 HTTP/1.1\r\nHost: x\r\n\r\n"
           % ("0" * 32))
    s.sendall((req * 2 + "GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n" +
               "GET /dlr?id=x HTTP/1.1\r\nHost: x\r\n\r\n").encode())
    got = b""
    try:
        while got.count(b"HTTP/1.1 ") < 4:
            b = s.recv(4096)
            if not b:
                break
            got += b
        closed = s.recv(1) == b""
    except OSError:
        closed = False
    s.close()
    heads = re.findall(rb"HTTP/1\.1 (\d+)", got)
    check("the callback listener: keep-alive, pipelined requests answered "
          "in order, a bad one answered 400 and the connection closed",
          heads == [b"200", b"200", b"404", b"400"] and closed and
          got.count(b"Connection: close") == 1, repr(got))

    # bad address
    cu.send("<message to='not-a-number@%s' id='bad1'><body>x</body>"
            "</message>" % DOMAIN)
    e = cu.wait(lambda e: e.get("id") == "bad1" and
                e.get("type") == "error", timeout=10)
    check("a localpart that is not a phone number: jid-malformed",
          e is not None and error_of(e) == "jid-malformed", tostr(e))

    # long text: concatenated parts
    long_text = ("long message " * 20).strip()  # 259 characters
    send_sms(cu, num, long_text, "m2")
    parts = phone.wait_for(lambda r: r[1] == num and r[2] is not None,
                           count=2)
    ok = len(parts) == 2 and all(p[2][:3] == b"\x05\x00\x03" and
                                 p[2][4] == 2 for p in parts)
    joined = "".join(p[3] for p in sorted(parts, key=lambda p: p[2][5]))
    check("a long text goes as 2 concatenated parts with the UDH "
          "(05 00 03 ref 2 seq) and joins back to the text",
          ok and joined == long_text, str(parts))
    rc = cu.wait(receipt_for(njid, "m2"), timeout=20)
    check("one receipt once both parts are delivered", rc is not None,
          a.logtext() + kannel_logs(d))

    # SMS -> IM
    phone.send(num, SENDER, "hi from the phone")
    m = cu.wait(is_msg_from(njid, lambda e: e.findtext(
        "{jabber:client}body") == "hi from the phone"), timeout=20)
    check("SMS->IM: the reply reaches the user who wrote to the number",
          m is not None, a.logtext())

    # registration
    mine = "+15557654321"
    r = cu.request("<query xmlns='%s'/>" % NS_REG, to=DOMAIN)
    check("registration form has <phone/>",
          r is not None and r.find("{%s}query/{%s}phone" % (NS_REG, NS_REG))
          is not None, tostr(r))
    r = cu.request("<query xmlns='%s'><phone>%s</phone></query>"
                   % (NS_REG, mine), type_="set", to=DOMAIN)
    check("registration: the number is accepted",
          r is not None and r.get("type") == "result", tostr(r))
    codes = phone.wait_for(lambda r: r[1] == mine and "code" in r[3])
    code = re.search(r"(\d{6})", codes[0][3]).group(1) if codes else None
    check("registration: a code arrives by SMS at that number",
          code is not None, str(phone.received()[-3:]))
    wrong = "000000" if code != "000000" else "111111"
    r = cu.request("<query xmlns='%s'><phone>%s</phone><password>%s"
                   "</password></query>" % (NS_REG, mine, wrong),
                   type_="set", to=DOMAIN)
    check("registration: a wrong code is not-authorized",
          r is not None and error_of(r) == "not-authorized", tostr(r))
    r = cu.request("<query xmlns='%s'><phone>%s</phone><password>%s"
                   "</password></query>" % (NS_REG, mine, code),
                   type_="set", to=DOMAIN)
    check("registration: the right code links the number",
          r is not None and r.get("type") == "result", tostr(r))
    r = cu.request("<query xmlns='%s'/>" % NS_REG, to=DOMAIN)
    check("registration: <registered/> with the number",
          r is not None and r.find("{%s}query/{%s}registered"
                                   % (NS_REG, NS_REG)) is not None and
          r.findtext("{%s}query/{%s}phone" % (NS_REG, NS_REG)) == mine,
          tostr(r))
    phone.send(mine, SENDER, "note to self")
    m = cu.wait(is_msg_from("%s@%s" % (mine, DOMAIN), lambda e: e.findtext(
        "{jabber:client}body") == "note to self"), timeout=20)
    check("SMS from the linked number reaches its owner", m is not None)

    # smsbox down, then up
    kannel.stop_smsbox()
    send_sms(cu, num, "while down", "m3")
    retried = harness.wait_for(
        lambda: a.logtext().count("kannel unreachable") >= 2, 20)
    check("Kannel down: the gateway retries", retried, a.logtext())
    out = ctl(d, "queue")
    check("parleyctl gateway queue: the waiting message shows in the sms "
          "queue", out.returncode == 0 and re.search(
              r"^sms\s+(queued|sending)\s+1\b", out.stdout, re.M),
          out.stdout + out.stderr)
    check("smsbox starts again", kannel.start_smsbox())
    got = phone.wait_for(lambda r: r[3] == "while down", timeout=30)
    rc = cu.wait(receipt_for(njid, "m3"), timeout=30)
    time.sleep(1)
    got = [r for r in phone.received() if r[3] == "while down"]
    check("Kannel up again: delivered once, with its receipt",
          len(got) == 1 and rc is not None, str(got))

    # parleyctl trace: the whole history of the message sent while down
    import sqlite3
    db = sqlite3.connect("file:%s?mode=ro" % os.path.join(d, "gateway.db"),
                         uri=True)
    row = db.execute("SELECT id FROM messages WHERE text = 'while down'"
                     ).fetchone()
    db.close()
    out = ctl(d, "trace", row[0] if row else "none")
    states = [line.split()[1] for line in out.stdout.splitlines()
              if len(line.split()) > 1]
    check("parleyctl gateway trace: accepted, queued, sending, a retry "
          "(kannel unreachable), sent, delivered",
          out.returncode == 0 and states[:3] == ["accepted", "queued",
                                                "sending"] and
          "kannel unreachable" in out.stdout and "sent" in states and
          states[-1] == "delivered", out.stdout + out.stderr)

    # two instances, one queue
    b = Gateway(d, cport, "gw2", cb2, kannel)
    gws.append(b)
    b.start()
    harness.wait_for(lambda: "instance gw2" in b.logtext(), 10)
    texts = ["pair %d" % i for i in range(30)]
    for i, t in enumerate(texts):
        send_sms(cu, num, t, "p%d" % i)
    harness.wait_for(lambda: all(any(r[3] == t for r in phone.received())
                                 for t in texts), 40)
    time.sleep(1)
    rec = phone.received()
    counts = [len([r for r in rec if r[3] == t]) for t in texts]
    check("two instances on one queue: all 30 delivered, none twice",
          counts == [1] * 30, str(counts))

    # SIGKILL mid-send
    texts = ["kill %d" % i for i in range(30)]
    for i, t in enumerate(texts):
        send_sms(cu, num, t, "k%d" % i)

    # Killed mid-send: once every message is committed (accepted) and the
    # first has reached the phone.  (Killed while messages are still on
    # their way from parleyd: test_gateway_links.py, XEP-0198.)
    def stored():
        db = sqlite3.connect("file:%s?mode=ro" % os.path.join(
            d, "gateway.db"), uri=True)
        try:
            return db.execute("SELECT count(*) FROM messages WHERE text "
                              "LIKE 'kill %'").fetchone()[0]
        finally:
            db.close()
    check("the 30 messages are committed to the queue",
          harness.wait_for(lambda: stored() == 30, 20))
    harness.wait_for(lambda: any(r[3].startswith("kill ")
                                 for r in phone.received()), 20)
    a.stop(signal.SIGKILL)
    harness.wait_for(lambda: all(any(r[3] == t for r in phone.received())
                                 for t in texts), 60)
    time.sleep(1)
    rec = phone.received()
    counts = [len([r for r in rec if r[3] == t]) for t in texts]
    check("an instance killed with SIGKILL mid-send: all 30 delivered "
          "(the other instance took the rest), none twice",
          counts == [1] * 30, str(counts) + b.logtext())
    cu.close()


if __name__ == "__main__":
    main()
