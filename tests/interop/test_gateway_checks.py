#!/usr/bin/python3
"""test_gateway_checks.py - parley-gateway's content checks with the real
checkers: clamd (Debian clamav-daemon) and rspamd (Debian rspamd), both
started here on loopback with their own temporary configuration.

clamd gets a one-signature database made here (no downloads): an .ndb
body signature of the EICAR test string, which matches it anywhere (in an
e-mail's raw bytes, a MIME part, an IM text).  rspamd runs only its
normal worker (no controller, no proxy, no redis, no modules needing the
network) with `enable_test_patterns = true`, which is what makes rspamd
3.x honour GTUBE: XJS*... is "reject", YJS*... "add header" (checked
offline with rspamd 3.4: the answer does not depend on any rule).

parleyd, the gateway (check.clamd, check.rspamd, check.fail "closed"),
gw_smtp_probe as its relay.  Checks:
  - a clean e-mail over SMTP (swaks) passes; its history says what the
    checkers said;
  - EICAR by e-mail over SMTP: 550 5.7.1 naming the virus at the end of
    DATA, stored as refused with the reason, nothing reaches the user;
  - EICAR over LMTP to two recipients: one 550 5.7.1 each;
  - GTUBE by e-mail: 554 5.7.1 (spam); the add-header GTUBE: delivered
    with "[SPAM] " before its subject;
  - IM -> e-mail with the EICAR text: a not-acceptable stanza error with
    the reason, nothing relayed; GTUBE likewise; IM -> SMS with EICAR
    likewise; a clean IM -> e-mail message is relayed;
  - an SMS from Kannel's get-url carrying EICAR: refused in the history
    (no reports to SMS senders exist yet);
  - clamd down, check.fail closed: e-mail 451 4.7.1, IM an error of type
    wait, an SMS refused with "not checked" in its history; a gateway restarted with check.fail open lets the message
    through with "not checked" in its history.

Run with /usr/bin/python3; `scripts/run-tests test_gateway_checks`.
"""

import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from xml.sax.saxutils import escape

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gw_common  # noqa: E402
import harness  # noqa: E402
from harness import check, tostr  # noqa: E402
from im_common import ImClient, add_users, error_of  # noqa: E402
import test_gateway_mail as tgm  # noqa: E402

SECRET = "gw-secret"
MAIL = "mail.localhost"
SMS = "sms.localhost"
GATEWAY = gw_common.GATEWAY
PARLEYCTL = harness._abs(os.path.join(harness.BUILD, "parleyctl"))
CLAMD = shutil.which("clamd") or "/usr/sbin/clamd"
RSPAMD = shutil.which("rspamd") or "/usr/bin/rspamd"
EICAR = ("X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!"
         "$H+H*")
GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
GTUBE_TAG = "Y" + GTUBE[1:]  # rspamd: "add header"


def listening(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def start_clamd(d):
    """clamd on a Unix socket with an EICAR body signature: (sock, proc)."""
    os.mkdir(os.path.join(d, "db"))
    with open(os.path.join(d, "db", "parley-test.ndb"), "w") as f:
        f.write("Parley-Test.EICAR:0:*:%s\n" % EICAR.encode().hex())
    sock = os.path.join(d, "clamd.sock")
    with open(os.path.join(d, "clamd.conf"), "w") as f:
        f.write("LogFile %s/clamd.log\nDatabaseDirectory %s/db\n"
                "LocalSocket %s\nForeground yes\nStreamMaxLength 20M\n"
                % (d, d, sock))
    p = harness.spawn("clamd", [CLAMD, "-c", os.path.join(d, "clamd.conf")],
                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def pong():
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(2)
                s.connect(sock)
                s.sendall(b"zPING\0")
                return s.recv(16).startswith(b"PONG")
        except OSError:
            return False
    return (sock if harness.wait_for(pong, timeout=60) else None), p


def start_rspamd(d):
    """rspamd's normal worker on a free loopback port: (url, proc)."""
    port = harness.free_ports(1)[0]
    conf = os.path.join(d, "rspamd.conf")
    with open(conf, "w") as f:
        f.write("""options {
    pidfile = "%(d)s/rspamd.pid";
    dbdir = "%(d)s";
    tempdir = "%(d)s";
    enable_test_patterns = true;
    dns { nameserver = ["127.0.0.1:1"]; timeout = 0.1s; retransmits = 1; }
}
logging { type = "file"; filename = "%(d)s/rspamd.log"; level = "info"; }
actions { reject = 15; add_header = 6; greylist = 4; }
worker "normal" { bind_socket = "127.0.0.1:%(port)d"; count = 1; }
""" % {"d": d, "port": port})
    p = harness.spawn("rspamd", [RSPAMD, "-c", conf, "-f", "-u", "root",
                                 "-g", "root", "--insecure"],
                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = "http://127.0.0.1:%d" % port

    def answers():
        try:
            r = urllib.request.urlopen(urllib.request.Request(
                url + "/checkv2", data=b"Subject: x\r\n\r\nhello\r\n"),
                timeout=2)
            return b'"action"' in r.read()
        except OSError:
            return False
    return (url if harness.wait_for(answers, timeout=120, interval=0.5)
            else None), p


def gateway_conf(d, cport, smtp_port, lmtp_port, relay_port, cb_port,
                 clamd, rspamd, fail):
    return """instance = "gw1";
data_dir = "%s";
queue = "gateway.db";
log_level = "debug";
component = { host = "127.0.0.1"; port = %d; secret = "%s";
              reconnect_min = 100; reconnect_max = 1000; };
sms = { domain = "%s"; kannel = { timeout = 2;
        sendsms_url = "http://127.0.0.1:1/cgi-bin/sendsms"; };
        callback = { port = %d; url = "http://127.0.0.1:%d"; }; };
mail = {
  domain = "%s"; im_host = "localhost"; recipient_domains = "gw.test";
  smtp = { address = "127.0.0.1"; port = %d; };
  lmtp = { address = "127.0.0.1"; port = %d; };
  relay = { url = "smtp://127.0.0.1:%d"; starttls = "none";
            connect_timeout = 2; timeout = 5; };
};
check = { clamd = "%s"; rspamd = "%s"; timeout = 10; fail = "%s"; };
retry = { base = 300; max = 1000; jitter = 20; expiry = 120; };
queue_lease = 30;
queue_poll = 200;
""" % (d, cport, SECRET, SMS, cb_port, cb_port, MAIL, smtp_port, lmtp_port,
       relay_port, clamd, rspamd, fail)


class Gateway:
    def __init__(self, d, conf_text):
        self.conf = os.path.join(d, "gw.conf")
        with open(self.conf, "w") as f:
            f.write(conf_text)
        self.logpath = os.path.join(d, "gw.log")
        self.start_at = os.path.getsize(self.logpath) \
            if os.path.exists(self.logpath) else 0
        self.proc = harness.spawn("gateway", [GATEWAY, "--config", self.conf],
                                  stdout=open(self.logpath, "a"),
                                  stderr=subprocess.STDOUT)

    def log(self):
        with open(self.logpath, errors="replace") as f:
            f.seek(self.start_at)
            return f.read()

    def stop(self):
        harness.stop_group(self.proc)
        harness.untrack(self.proc)


class Queue:
    """The gateway's SQLite file, read-only, and parleyctl's trace."""

    def __init__(self, path):
        self.path = path

    def rows(self, where, args=()):
        db = sqlite3.connect("file:%s?mode=ro" % self.path, uri=True,
                             timeout=10)
        try:
            return db.execute("SELECT id, state, src_channel, dst_addr "
                              "FROM messages WHERE " + where, args).fetchall()
        finally:
            db.close()

    def trace(self, mid):
        r = subprocess.run([PARLEYCTL, "gateway", "--queue", self.path,
                            "trace", mid], capture_output=True, text=True,
                           timeout=30)
        return r.stdout + r.stderr

    def find(self, text_like, timeout=15):
        """Waits for the messages whose text contains text_like."""
        got = []

        def seen():
            got[:] = self.rows("text LIKE ?", ("%" + text_like + "%",))
            return got
        harness.wait_for(seen, timeout)
        return got


def mail(port, to, body, subject="test", frm="bob@example.org", lmtp=False,
         extra=()):
    args = ["--server", "127.0.0.1", "--port", str(port), "--from", frm,
            "--header", "Subject: " + subject, "--body", body + "\n",
            "--to", ",".join(to) if isinstance(to, list) else to]
    if lmtp:
        args += ["--protocol", "LMTP"]
    return tgm.swaks(*args, *extra)


def main():
    gw_common.require(tgm.SWAKS, tgm.PROBE, GATEWAY, PARLEYCTL, CLAMD, RSPAMD)
    work = tempfile.mkdtemp(prefix="parley-gwcheck-")
    clamd_sock, clamd = start_clamd(os.path.join(work))
    check("clamd starts with a local EICAR signature", clamd_sock is not None)
    rspamd_url, rspamd = start_rspamd(work)
    check("rspamd's normal worker answers /checkv2", rspamd_url is not None,
          open(os.path.join(work, "rspamd.log"), errors="replace")
          .read()[-1500:] if os.path.exists(os.path.join(work, "rspamd.log"))
          else "")
    if not clamd_sock or not rspamd_url:
        harness.finish()
    cport, smtp_port, lmtp_port, relay_port, cb_port = harness.free_ports(5)
    srv = gw_common.start_server(cport, ((SMS, SECRET), (MAIL, SECRET)))
    d = srv.dir

    def conf(fail, clamd_addr=clamd_sock):
        return gateway_conf(d, cport, smtp_port, lmtp_port, relay_port,
                            cb_port, clamd_addr, rspamd_url, fail)
    gw = Gateway(d, conf("closed"))
    sink = tgm.Probe("--port", str(relay_port))
    try:
        linked = harness.wait_for(
            lambda: gw.log().count("linked to parleyd") >= 2 and
            listening(smtp_port), 20)
        check("the gateway links to parleyd with the checks on", linked,
              gw.log()[-3000:])
        if linked:
            gw = run(srv, d, sink, gw, clamd, conf, smtp_port, lmtp_port,
                     cb_port)
    finally:
        if sink.proc.poll() is None:
            sink.stop()
        gw.stop()
        for p in (clamd, rspamd):
            if p.poll() is None:
                harness.stop_group(p)
            harness.untrack(p)
        shutil.rmtree(work, ignore_errors=True)
        harness.finish()


def run(srv, d, sink, gw, clamd, conf, smtp_port, lmtp_port, cb_port):
    q = Queue(os.path.join(d, "gateway.db"))
    user = harness.unique("chk")
    add_users(srv, user)
    cu = ImClient(srv, user, "desk")
    cu.presence()
    rcpt = "%s@gw.test" % user
    bob = "bob\\40example.org@" + MAIL
    C = "{jabber:client}"

    def got_mail(pred, timeout=20):
        return cu.wait(lambda e: e.tag == C + "message" and
                       e.get("from") == bob and
                       pred(e.findtext(C + "body", "")), timeout=timeout)

    # ---- e-mail in ----
    rc, out = mail(smtp_port, rcpt, "a clean letter", "clean")
    check("clean e-mail over SMTP: 250 after the checks",
          rc == 0 and "250 2.0.0" in out, out[-600:])
    m = got_mail(lambda b: "a clean letter" in b)
    check("...delivered to the IM user", m is not None, gw.log()[-2000:])
    rows = q.find("a clean letter")
    tr = q.trace(rows[0][0]) if rows else ""
    check("...its history says what clamd and rspamd said",
          "clamd: clean" in tr and "rspamd: no action" in tr, tr)

    rc, out = mail(smtp_port, rcpt, "see attached\n" + EICAR, "virus")
    check("EICAR by e-mail over SMTP: 550 5.7.1 naming the virus",
          rc != 0 and "550 5.7.1" in out and "Parley-Test.EICAR" in out,
          out[-800:])
    rows = q.find("see attached")
    tr = q.trace(rows[0][0]) if rows else ""
    check("...stored as refused with the reason in its history",
          len(rows) == 1 and rows[0][1] == "refused" and
          "virus found: Parley-Test.EICAR" in tr, str(rows) + tr)

    rc, out = mail(lmtp_port, [rcpt, "other-%s@gw.test" % user],
                   "two of them\n" + EICAR, "virus", lmtp=True)
    check("EICAR over LMTP to two recipients: one 550 5.7.1 each",
          rc != 0 and out.count("550 5.7.1") == 2, out[-1000:])

    rc, out = mail(smtp_port, rcpt, "buy now\n" + GTUBE, "offer")
    check("GTUBE by e-mail: 554 5.7.1 refused as spam",
          rc != 0 and "554 5.7.1" in out and "spam" in out, out[-800:])
    rows = q.find("buy now")
    check("...stored as refused", len(rows) == 1 and rows[0][1] ==
          "refused", str(rows))

    rc, out = mail(smtp_port, rcpt, "maybe spam\n" + GTUBE_TAG, "deal")
    check("add-header GTUBE by e-mail: accepted",
          rc == 0 and "250 2.0.0" in out, out[-600:])
    m = got_mail(lambda b: "maybe spam" in b)
    check("...delivered with [SPAM] before its subject",
          m is not None and m.findtext(C + "subject") == "[SPAM] deal",
          tostr(m))
    quiet = cu.quiet(lambda e: e.tag == C + "message" and
                     any(s in e.findtext(C + "body", "")
                         for s in ("see attached", "two of them", "buy now")),
                     timeout=1)
    check("no refused e-mail reached the IM user", not quiet,
          "".join(tostr(e) for e in quiet))

    # ---- IM out ----
    def im_refusal(to, mid, body, word):
        cu.send("<message to='%s' type='chat' id='%s'><body>%s</body>"
                "</message>" % (to, mid, escape(body)))
        e = cu.wait(lambda e: e.get("id") == mid and
                    e.get("type") == "error", timeout=20)
        return e is not None and error_of(e) == "not-acceptable" and \
            word in tostr(e), tostr(e)

    ok, why = im_refusal(bob, "v1", "im attachment text " + EICAR,
                         "virus found: Parley-Test.EICAR")
    check("EICAR from IM to e-mail: not-acceptable with the reason", ok, why)
    ok, why = im_refusal(bob, "s1", "im spam " + GTUBE, "spam")
    check("GTUBE from IM to e-mail: not-acceptable, spam", ok, why)
    ok, why = im_refusal("+15551234@" + SMS, "v2", "sms attachment " + EICAR,
                         "virus found")
    check("EICAR from IM to SMS: not-acceptable with the reason", ok, why)
    rows = q.find("attachment")
    check("...both stored as refused",
          len(rows) == 2 and all(r[1] == "refused" for r in rows), str(rows))
    cu.send("<message to='%s' type='chat' id='c1'><body>clean words</body>"
            "</message>" % bob)
    ok = harness.wait_for(lambda: any("clean words" in e["text"]
                                      for e in sink.events("data")), 20)
    check("a clean IM message goes out by e-mail", ok, gw.log()[-2000:])
    check("no refused IM message was relayed",
          not any(w in e["text"] for e in sink.events("data")
                  for w in ("EICAR", "GTUBE")), str(sink.events("data")))

    # ---- SMS in ----
    qs = urllib.parse.urlencode({"from": "+15559876", "to": "1000",
                                 "text": "mo " + EICAR})
    try:
        st = urllib.request.urlopen("http://127.0.0.1:%d/mo?%s" % (
            cb_port, qs), timeout=10).status
    except OSError as e:
        st = repr(e)
    rows = q.find("mo X5O")
    tr = q.trace(rows[0][0]) if rows else ""
    check("EICAR by SMS (Kannel get-url): refused with the virus in the "
          "history", st == 200 and len(rows) == 1 and rows[0][1] ==
          "refused" and "virus found" in tr, "%s %s %s" % (st, rows, tr))

    # ---- clamd down ----
    harness.stop_group(clamd)
    rc, out = mail(smtp_port, rcpt, "while clamd is down", "down")
    check("clamd down, check.fail closed: 451 4.7.1, try again later",
          rc != 0 and "451 4.7.1" in out, out[-800:])
    check("...and nothing stored", not q.rows("text LIKE ?",
                                              ("%while clamd is down%",)))
    cu.send("<message to='%s' type='chat' id='d1'><body>im while down"
            "</body></message>" % bob)
    e = cu.wait(lambda e: e.get("id") == "d1" and e.get("type") == "error",
                timeout=20)
    er = e.find(C + "error") if e is not None else None
    check("...IM: an error of type wait saying it was not checked",
          er is not None and er.get("type") == "wait" and
          "not checked" in tostr(e), tostr(e))

    qs = urllib.parse.urlencode({"from": "+15559876", "to": "1000",
                                 "text": "sms while down"})
    urllib.request.urlopen("http://127.0.0.1:%d/mo?%s" % (cb_port, qs),
                           timeout=10).read()
    rows = q.find("sms while down")
    tr = q.trace(rows[0][0]) if rows else ""
    check("...an SMS is refused, 'not checked' in its history (Kannel was "
          "answered already)", len(rows) == 1 and rows[0][1] == "refused"
          and "not checked" in tr, str(rows) + tr)

    gw.stop()
    gw = Gateway(d, conf("open"))
    up = harness.wait_for(lambda: gw.log().count("linked to parleyd") >= 2
                          and listening(smtp_port), 20)
    rc, out = mail(smtp_port, rcpt, "open while down", "open")
    check("clamd down, check.fail open: the e-mail is accepted",
          up and rc == 0 and "250 2.0.0" in out, out[-600:])
    m = got_mail(lambda b: "open while down" in b)
    rows = q.find("open while down")
    tr = q.trace(rows[0][0]) if rows else ""
    check("...delivered, its history saying it was not scanned",
          m is not None and "not checked: clamd" in tr and
          "rspamd: no action" in tr, tr)
    cu.close()
    return gw


if __name__ == "__main__":
    main()
