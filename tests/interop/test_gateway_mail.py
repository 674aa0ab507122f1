#!/usr/bin/python3
"""test_gateway_mail.py - parley-gateway's e-mail channel against real
peers: swaks (SMTP and LMTP client) and Postfix (relay and LMTP client).

build/tests/gw_smtp_probe (tests/interop/gw_smtp_probe.c) runs the
gateway's SMTP/LMTP engine on the core's connections and prints what it
receives as JSON lines; with --send it builds a message (mime.c) and
sends it through a relay (send.c, libcurl).

1. swaks to the probe over SMTP: a pipelined transaction (RFC 2920), a
   rejected recipient, bad address syntax, an oversized message (SIZE
   and real size), a huge header line, BDAT; a raw socket floods NOOPs
   in one write (all answered, in order) and then garbage (421 after the
   error limit).
2. swaks to the probe over LMTP on a unix socket: one reply per
   recipient after DATA (RFC 2033).
3. Postfix, started on a free loopback port with its own configuration
   directory (postfix -c DIR start-fg: it runs here as root with its
   daemons as the postfix user, no system-wide change), delivers its
   domain gw.test to the probe with `local_transport = lmtp:unix:...`;
   the probe's --send mode gives Postfix a message built with mime.c
   through libcurl, which arrives over LMTP with its subject, text and
   the link to the uploaded file.  Postfix refusing to relay is a
   permanent failure (5xx), a port nobody listens on a temporary one.

Run with /usr/bin/python3; `scripts/run-tests test_gateway_mail`.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402

BUILD = os.environ.get("BUILD", "build")
PROBE = os.path.join(harness.ROOT, BUILD, "tests", "gw_smtp_probe")
SWAKS = shutil.which("swaks") or "/usr/bin/swaks"
POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"


class Probe:
    """gw_smtp_probe in the background; events() gives what it printed."""

    def __init__(self, *args):
        self.proc = harness.spawn("gw_smtp_probe", [PROBE, *args],
                                  stdout=subprocess.PIPE, text=True)
        self.lines = []
        ready = self.proc.stdout.readline()
        self.port = json.loads(ready)["ready"] if ready else None
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(json.loads(line))

    def events(self, kind=None):
        return [e for e in self.lines if kind is None or e["event"] == kind]

    def wait_data(self, n, timeout=15):
        return harness.wait_for(lambda: len(self.events("data")) >= n,
                                timeout)

    def stop(self):
        rc = harness.stop_group(self.proc, grace=5)
        harness.untrack(self.proc)
        return rc


def swaks(*args, timeout=30):
    """Runs swaks; returns (exit status, its transcript)."""
    r = subprocess.run([SWAKS, "--hide-informational", "--timeout", "10",
                        *args], capture_output=True, text=True,
                       timeout=timeout)
    return r.returncode, r.stdout + r.stderr


def raw_session(port, data, timeout=10):
    """Sends data in one write, then reads until the server closes or
    timeout; returns the replies."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    out = b""
    try:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        end = time.time() + timeout
        while time.time() < end:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    except OSError:
        pass
    finally:
        s.close()
    return out.decode("latin-1")


def smtp_tests():
    p = Probe("--max-size", "20000", "--max-rcpts", "5", "--max-errors", "5")
    if not check("smtp: probe listens", p.port and p.port > 0):
        return
    port = str(p.port)
    srv = ["--server", "127.0.0.1", "--port", port]

    rc, out = swaks(*srv, "--pipeline", "--from", "alice@example.org",
                    "--to", "bob@gw.test,carol@gw.test",
                    "--header", "Subject: =?UTF-8?Q?caf=C3=A9?=",
                    "--body", "Hello\n.leading dot\n")
    check("smtp: swaks pipelined transaction accepted",
          rc == 0 and "250 2.0.0 Message accepted" in out, out[-600:])
    check("smtp: PIPELINING, SIZE, 8BITMIME, ENHANCEDSTATUSCODES offered",
          all(x in out for x in ("PIPELINING", "SIZE 20000", "8BITMIME",
                                 "ENHANCEDSTATUSCODES")), out[:800])
    p.wait_data(1)
    d = p.events("data")
    check("smtp: message delivered once, parsed, dot-unstuffed",
          len(d) == 1 and d[0]["rcpts"] == ["bob@gw.test", "carol@gw.test"]
          and d[0]["subject"] == "caf\u00e9"
          and ".leading dot" in d[0]["text"], str(d))

    rc, out = swaks(*srv, "--from", "a@example.org",
                    "--to", "reject@gw.test")
    check("smtp: refused recipient gets 550 5.1.1",
          rc != 0 and "550 5.1.1" in out, out[-400:])

    rc, out = swaks(*srv, "--from", "a@example.org",
                    "--to", "bad..dots@gw.test")
    check("smtp: bad address syntax gets 501 5.1.3",
          rc != 0 and "501 5.1.3" in out, out[-400:])
    rc, out = swaks(*srv, "--from", "a@@example.org", "--to", "b@gw.test")
    check("smtp: bad sender syntax gets 501 5.1.7",
          rc != 0 and "501 5.1.7" in out, out[-400:])

    big = "x" * 70 + "\n"
    rc, out = swaks(*srv, "--from", "a@example.org", "--to", "b@gw.test",
                    "--body", big * 400)
    check("smtp: oversized message gets 552 5.3.4",
          rc != 0 and "552 5.3.4" in out, out[-400:])

    rc, out = swaks(*srv, "--from", "a@example.org", "--to", "b@gw.test",
                    "--header", "X-Huge: " + "h" * 5000)
    check("smtp: a 5000-byte header line gets 554 5.6.0",
          rc != 0 and "554 5.6.0" in out, out[-400:])

    n_before = len(p.events("data"))

    # A pipelining flood: 3000 NOOPs in one write, all answered in order.
    replies = raw_session(p.port, b"EHLO flood\r\n" + b"NOOP\r\n" * 3000 +
                          b"QUIT\r\n", timeout=20)
    check("smtp: 3000 pipelined NOOPs all answered, then 221",
          replies.count("250 2.0.0 OK\r\n") == 3000 and
          replies.endswith("221 2.0.0 Bye\r\n"),
          "%d OK, tail %r" % (replies.count("250 2.0.0 OK"), replies[-80:]))
    # Garbage: the error limit ends the session.
    replies = raw_session(p.port, b"EHLO x\r\n" + b"XYZZY\r\n" * 50 +
                          b"MAIL FROM:<a@b.c>\r\n", timeout=10)
    check("smtp: unknown commands get 500, then 421 4.7.0 at the limit",
          replies.count("500 5.5.1") == 5 and "421 4.7.0" in replies and
          "250 2.1.0" not in replies, replies[-300:])
    replies = raw_session(p.port, b"EHLO x\r\nMAIL FROM:<a@b.c>\r\n"
                          b"RCPT TO:<b@gw.test>\r\nBDAT 10 LAST\r\n"
                          b"QUIT\r\n")
    check("smtp: BDAT not offered: 502 5.5.1",
          "502 5.5.1" in replies and "CHUNKING" not in replies, replies)
    replies = raw_session(p.port, b"EHLO x\r\nNOOP " + b"A" * 4000 +
                          b"\r\nQUIT\r\n")
    check("smtp: a 4000-byte command line gets 500 5.5.2",
          "500 5.5.2 Line too long" in replies and "221 2.0.0" in replies,
          replies[-200:])
    check("smtp: no message from the refused sessions",
          len(p.events("data")) == n_before, str(p.events("data")[1:]))
    check("smtp: probe exits cleanly", p.stop() == 0)


def lmtp_tests(tmp):
    sock = os.path.join(tmp, "lmtp.sock")
    p = Probe("--lmtp", "--unix", sock)
    if not check("lmtp: probe listens on a unix socket", p.port == -1):
        return
    rc, out = swaks("--protocol", "LMTP", "--socket", sock,
                    "--from", "a@example.org",
                    "--to", "one@gw.test,full@gw.test,two@gw.test",
                    "--body", "to three")
    lines = [l for l in out.splitlines() if l.startswith("<")]
    after = out.split("<-  354", 1)[-1]
    check("lmtp: one reply per recipient after DATA",
          after.count("250 2.1.5 <one@gw.test> delivered") == 1 and
          after.count("452 4.2.2 Mailbox full") == 1 and
          after.count("250 2.1.5 <two@gw.test> delivered") == 1,
          "\n".join(lines[-8:]))
    p.wait_data(1)
    d = p.events("data")
    check("lmtp: the message reached the gateway once",
          len(d) == 1 and len(d[0]["rcpts"]) == 3, str(d))
    check("lmtp: probe exits cleanly", p.stop() == 0)


POSTFIX_MAIN = """\
compatibility_level = 3.6
queue_directory = {d}/queue
data_directory = {d}/data
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
shlib_directory = /usr/lib/postfix
mail_owner = postfix
setgid_group = postdrop
myhostname = relay.test
mydomain = relay.test
myorigin = relay.test
mydestination = gw.test
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
local_recipient_maps =
local_transport = lmtp:unix:{d}/lmtp.sock
alias_maps =
alias_database =
smtpd_relay_restrictions = reject_unauth_destination
maillog_file = /dev/stdout
biff = no
smtputf8_enable = no
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
"""


def postfix_master_cf(port):
    """Debian's master.cf without the port-25 listener, the pipe
    transports and chroot; smtpd on our port instead."""
    out, skip = [], False
    with open("/etc/postfix/master.cf") as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            if not line[0].isspace():
                fields = line.split()
                skip = (fields[0] == "smtp" and fields[1] == "inet") or \
                    fields[0] in ("maildrop", "uucp", "ifmail", "bsmtp",
                                  "scalemail-backend", "mailman")
                if not skip and len(fields) >= 8:
                    fields[4] = "n"
                    line = " ".join(fields) + "\n"
            if not skip:
                out.append(line)
    out.append("127.0.0.1:%d inet n - n - - smtpd\n" % port)
    return "".join(out)


def postfix_tests(tmp):
    d = os.path.join(tmp, "postfix")
    for sub in ("etc", "queue", "data"):
        os.makedirs(os.path.join(d, sub))
    shutil.chown(os.path.join(d, "data"), "postfix", "postfix")
    os.chmod(d, 0o755)
    os.chmod(tmp, 0o755)
    port = harness.free_ports(1)[0]
    with open(os.path.join(d, "etc", "main.cf"), "w") as f:
        f.write(POSTFIX_MAIN.format(d=d))
    with open(os.path.join(d, "etc", "master.cf"), "w") as f:
        f.write(postfix_master_cf(port))

    sock = os.path.join(d, "lmtp.sock")
    p = Probe("--lmtp", "--unix", sock)
    os.chmod(sock, 0o666)  # Postfix's lmtp client runs as postfix
    log = open(os.path.join(d, "master.log"), "w")
    master = harness.spawn("postfix", [POSTFIX, "-c", os.path.join(d, "etc"),
                                       "start-fg"], stdout=log,
                           stderr=subprocess.STDOUT)

    def listening():
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False

    up = harness.wait_for(listening, 30)
    if not check("postfix: starts on a loopback port with its own config",
                 up, open(log.name).read()[-1500:]):
        p.stop()
        harness.stop_group(master, grace=10)
        return

    def send(to, subject, text, at=port):
        r = subprocess.run([PROBE, "--send", "127.0.0.1:%d" % at,
                            "--from", "probe@example.org", "--to", to,
                            "--subject", subject], input=text,
                           capture_output=True, text=True, timeout=60)
        return json.loads(r.stdout) if r.stdout else {"rc": r.stderr}

    r = send("alice@gw.test", "Caf\u00e9 \u00e0 Postfix",
             "Bonjour \u00e7a va ?\n.dot line\n")
    check("postfix: send.c delivers through Postfix (250)",
          r.get("rc") == "success" and r.get("code") == 250 and
          "2.0.0" in r.get("text", ""), str(r))
    p.wait_data(1, timeout=30)
    got = p.events("data")
    ok = len(got) == 1 and got[0]["rcpts"] == ["alice@gw.test"] and \
        got[0]["subject"] == "Caf\u00e9 \u00e0 Postfix" and \
        "Bonjour \u00e7a va ?" in got[0]["text"] and \
        ".dot line" in got[0]["text"] and \
        "https://upload.gw.test/f/1/photo.jpg" in got[0]["text"]
    check("postfix: the message arrives over LMTP, built and parsed intact",
          ok, str(got) + open(log.name).read()[-1500:])

    r = send("someone@elsewhere.test", "relay?", "no\n")
    check("postfix: relaying refused is permanent (5xx)",
          r.get("permanent") is True and r.get("temporary") is False and
          500 <= r.get("code", 0) < 600, str(r))
    dead = harness.free_ports(1)[0]
    r = send("alice@gw.test", "down", "x\n", at=dead)
    check("send: nobody listening is temporary",
          r.get("temporary") is True and r.get("code") == 0, str(r))

    subprocess.run([POSTFIX, "-c", os.path.join(d, "etc"), "stop"],
                   capture_output=True, timeout=30)
    try:
        master.wait(20)
    except subprocess.TimeoutExpired:
        pass
    check("postfix: stops", harness.stop_group(master, grace=5) is not None)
    harness.untrack(master)
    log.close()
    check("postfix: probe exits cleanly", p.stop() == 0)


def main():
    if not check("gw_smtp_probe is built", os.access(PROBE, os.X_OK),
                 "make %s" % PROBE):
        harness.finish()
    tmp = tempfile.mkdtemp(prefix="gwmail.")
    try:
        smtp_tests()
        lmtp_tests(tmp)
        postfix_tests(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        harness.finish()


if __name__ == "__main__":
    main()
