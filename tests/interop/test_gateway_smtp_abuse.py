#!/usr/bin/python3
"""test_gateway_smtp_abuse.py - parley-gateway's SMTP listener against
abusive and broken clients (issue 16: "malformed MIME and SMTP abuse
(pipelining floods, huge headers, bad addresses) answered with SMTP
errors").

Runs parleyd (components sms.localhost and mail.localhost) and
parley-gateway with an SMTP listener (mail.smtp) and small limits
(max_size 64 KiB, 5 recipients, a 2 s command timeout, 6 sessions), an
IM user online, and then, over raw sockets and swaks:

- pipelining (RFC 2920): a flood of commands in one write after EHLO
  (PIPELINING offered) and after HELO (no extensions: the server still
  answers every command, in order); a client that sends the message
  without waiting for 354 while every recipient was refused (the text is
  read as commands, not as a message: nothing stored, 421 at the error
  limit); several whole transactions in one write, each delivered once;
- sequence errors: MAIL/RCPT/DATA before HELO, DATA without RCPT, RCPT
  without MAIL: 503 5.5.1 (RFC 5321 §4.1.4, §4.3.2);
- huge lines and sections: a 4 KB command line (500 5.5.2, §4.5.3.1.4),
  a 5000-byte header line (554 5.6.0 after the data, §4.5.3.1.6), a header
  section over max_size (552 5.3.4, RFC 1870), SIZE= above it at MAIL;
- too many recipients: 452 4.5.3 past the fifth (§4.5.3.1.10);
- bad addresses: syntax (501 5.1.3 / 501 5.1.7), a domain that is not
  ours (550 5.7.1: no relaying), a localpart that cannot be a JID
  (550 5.1.1), an account parleyd does not have (accepted, then a DSN to
  the sender: the gateway cannot tell at RCPT time);
- junk: NUL in a command (500 5.5.2), 8-bit address without SMTPUTF8
  (553 5.6.7), binary garbage lines (500 5.5.1), a body with NUL, C0
  controls and Latin-1 bytes (delivered to IM as valid XML, the link to
  parleyd survives);
- a slow client: silent past the command timeout gets 421 4.4.2;
- too many sessions at once: the one over the limit gets 421 4.3.2;
- malformed MIME: broken and unterminated boundaries, an unknown
  charset, base64 garbage, a bogus Content-Transfer-Encoding: delivered
  (what can be read) or refused with a 5xx, never a crash;

and after each group a well-behaved swaks client still gets its message
to the IM user.

Run with /usr/bin/python3; `scripts/run-tests test_gateway_smtp_abuse`.
"""

import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gw_common  # noqa: E402
import harness  # noqa: E402
from harness import check  # noqa: E402
from im_common import ImClient, add_users  # noqa: E402

SECRET = "abuse-secret"
MAIL = "mail.localhost"
SMS = "sms.localhost"
GATEWAY = gw_common.GATEWAY
SWAKS = shutil.which("swaks") or "/usr/bin/swaks"
MAX_SIZE = 65536
MAX_RCPTS = 5
MAX_SESSIONS = 6
TIMEOUT = 2


def gateway_conf(d, cport, smtp_port, cb_port, relay_port):
    return """instance = "abuse";
data_dir = "%s";
queue = "gateway.db";
log_level = "info";
component = { host = "127.0.0.1"; port = %d; secret = "%s";
              reconnect_min = 100; reconnect_max = 1000; };
sms = { domain = "%s"; kannel = { timeout = 2; };
        callback = { port = %d; url = "http://127.0.0.1:%d"; }; };
mail = {
  domain = "%s"; im_host = "localhost"; recipient_domains = "gw.test";
  smtp = { address = "127.0.0.1"; port = %d; };
  max_size = %d; max_rcpts = %d; timeout = %d; max_sessions = %d;
  relay = { url = "smtp://127.0.0.1:%d"; starttls = "none";
            connect_timeout = 1; timeout = 5; };
};
retry = { base = 500; max = 1000; jitter = 20; expiry = 120; };
queue_lease = 30;
queue_poll = 200;
""" % (d, cport, SECRET, SMS, cb_port, cb_port, MAIL, smtp_port, MAX_SIZE,
       MAX_RCPTS, TIMEOUT, MAX_SESSIONS, relay_port)


def connect(port, timeout=10):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    return s


def session(port, data, timeout=10, close_write=False):
    """Sends data in one write (after reading nothing), then reads until
    the server closes (data ends with QUIT, or an error closes) or
    timeout; returns the replies as text.  The write side stays open: a
    client's EOF while a verdict is pending ends the session (the
    gateway's RCPT and DATA verdicts wait for the database)."""
    s = connect(port, timeout)
    out = b""
    try:
        s.sendall(data)
        if close_write:
            s.shutdown(socket.SHUT_WR)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            out += chunk
    except OSError:
        pass
    finally:
        s.close()
    return out.decode("latin-1")


def finals(text):
    """The final line of every reply ("250 2.1.0 ..."), in order."""
    return [l for l in text.split("\r\n") if re.match(r"^\d{3} ", l)]


def codes(text):
    """'NNN X.Y.Z' (or 'NNN' without an enhanced code) of each reply."""
    out = []
    for l in finals(text):
        m = re.match(r"^(\d{3}) (\d\.\d{1,3}\.\d{1,3})?", l)
        out.append(m.group(1) + (" " + m.group(2) if m.group(2) else ""))
    return out


def swaks(*args, timeout=30):
    r = subprocess.run([SWAKS, "--hide-informational", "--timeout", "10",
                        *args], capture_output=True, text=True,
                       timeout=timeout)
    return r.returncode, r.stdout + r.stderr


class World:
    def __init__(self, srv, smtp_port, logtext, db):
        self.srv = srv
        self.port = smtp_port
        self.logtext = logtext
        self.db = db
        self.user = harness.unique("abuse")
        add_users(srv, self.user)
        self.cu = ImClient(srv, self.user, "desk")
        self.cu.presence()
        self.rcpt = "%s@gw.test" % self.user
        self.n = 0

    def got(self, marker, timeout=15):
        """The IM message whose body has marker, or None."""
        return self.cu.wait(lambda e: e.tag.endswith("}message") and
                            marker in (e.findtext("{jabber:client}body")
                                       or ""), timeout=timeout)

    def good(self, after):
        """A well-behaved client still gets through, to IM."""
        self.n += 1
        marker = "good-client-%d" % self.n
        rc, out = swaks("--server", "127.0.0.1", "--port", str(self.port),
                        "--from", "good@example.org", "--to", self.rcpt,
                        "--header", "Subject: fine", "--body",
                        "%s\n" % marker)
        m = self.got(marker) if rc == 0 else None
        check("after %s: a good client is still served (250, delivered "
              "to IM)" % after, rc == 0 and m is not None,
              out[-500:] + self.logtext())

    def stored(self, text):
        """Messages in the queue whose text contains text."""
        c = sqlite3.connect("file:%s?mode=ro" % self.db, uri=True,
                            timeout=10)
        try:
            return c.execute("SELECT count(*) FROM messages WHERE text "
                             "LIKE ?", ("%" + text + "%",)).fetchone()[0]
        finally:
            c.close()


def pipelining(w):
    p = w.port
    # 2000 NOOPs and RSETs after EHLO, in one write: all answered in order.
    r = session(p, b"EHLO flood.example\r\n" +
                b"NOOP\r\nRSET\r\n" * 1000 + b"QUIT\r\n", timeout=30)
    c = codes(r)
    check("pipelining after EHLO (PIPELINING offered): 2000 commands in "
          "one write, every one answered in order, then 221",
          "PIPELINING" in r and c[:2] == ["220", "250"] and
          c[2:-1] == ["250 2.0.0"] * 2000 and c[-1] == "221 2.0.0",
          "%d replies, tail %r" % (len(c), c[-3:]))
    # The same flood after HELO (no extensions, RFC 5321 §4.1.1.1): a
    # client should not pipeline, but the server still answers in order.
    r = session(p, b"HELO flood.example\r\n" +
                (b"MAIL FROM:<a@example.org>\r\nRCPT TO:<" +
                 w.rcpt.encode() + b">\r\nRSET\r\n") * 300 + b"QUIT\r\n",
                timeout=30)
    c = codes(r)
    check("pipelining after HELO (nothing offered): 900 commands "
          "answered in order",
          "PIPELINING" not in r and len(c) == 903 and
          c[2:-1] == ["250 2.1.0", "250 2.1.5", "250 2.0.0"] * 300 and
          c[-1] == "221 2.0.0",
          "%d replies, %r" % (len(c), c[:6]))
    # RFC 2920 §3.1: DATA ends a group, the client must wait for 354.
    # A client that does not, with every recipient refused: the message
    # lines are commands, errors pile up, 421 at the limit; nothing
    # stored.
    body = b"".join(b"smuggled line %d\r\n" % i for i in range(20))
    r = session(p, b"EHLO x\r\nMAIL FROM:<a@example.org>\r\n"
                b"RCPT TO:<x@elsewhere.example>\r\nDATA\r\n"
                b"Subject: smuggled-abc\r\n\r\n" + body + b".\r\nQUIT\r\n")
    c = codes(r)
    check("no 354 waited for, every recipient refused: 550 5.7.1, DATA "
          "554 5.5.1, the text read as commands (500 5.5.1), 421 4.7.0 at "
          "the error limit",
          c[3:5] == ["550 5.7.1", "554 5.5.1"] and
          "500 5.5.1" in c and c[-1] == "421 4.7.0", str(c))
    time.sleep(0.5)
    check("...and nothing of it is stored", w.stored("smuggled") == 0)
    # Three whole transactions in one write, each DATA group waiting for
    # nothing (a non-compliant client with valid recipients): each is a
    # message, delivered once.
    msgs = b""
    for i in range(3):
        msgs += (b"MAIL FROM:<p@example.org>\r\nRCPT TO:<%s>\r\nDATA\r\n"
                 b"Subject: batch\r\n\r\nbatched-%d\r\n.\r\n"
                 % (w.rcpt.encode(), i))
    r = session(p, b"EHLO x\r\n" + msgs + b"QUIT\r\n", timeout=15)
    c = codes(r)
    check("three transactions in one write: 250, 250, 354, 250 each",
          c[2:-1] == ["250 2.1.0", "250 2.1.5", "354", "250 2.0.0"] * 3,
          str(c))
    ok = all(w.got("batched-%d" % i) is not None for i in range(3))
    check("...each delivered to IM", ok)
    time.sleep(0.5)
    check("...once", all(w.stored("batched-%d" % i) == 1 for i in range(3)))
    w.good("pipelining floods")


def sequence(w):
    p = w.port
    r = session(p, b"MAIL FROM:<a@example.org>\r\nRCPT TO:<" +
                w.rcpt.encode() + b">\r\nDATA\r\nQUIT\r\n")
    check("MAIL, RCPT, DATA before HELO: 503 5.5.1 each (RFC 5321 §4.1.4)",
          codes(r)[1:] == ["503 5.5.1"] * 3 + ["221 2.0.0"], str(codes(r)))
    r = session(p, b"EHLO x\r\nRCPT TO:<" + w.rcpt.encode() +
                b">\r\nDATA\r\nQUIT\r\n")
    check("RCPT and DATA without MAIL: 503 5.5.1",
          codes(r)[2:] == ["503 5.5.1", "503 5.5.1", "221 2.0.0"],
          str(codes(r)))
    r = session(p, b"EHLO x\r\nMAIL FROM:<a@example.org>\r\nDATA\r\n"
                b"QUIT\r\n")
    check("DATA without RCPT: 503 5.5.1",
          codes(r)[2:] == ["250 2.1.0", "503 5.5.1", "221 2.0.0"],
          str(codes(r)))
    r = session(p, b"EHLO x\r\nMAIL FROM:<a@example.org>\r\n"
                b"MAIL FROM:<b@example.org>\r\nQUIT\r\n")
    check("a second MAIL in a transaction: 503 5.5.1",
          codes(r)[3] == "503 5.5.1", str(codes(r)))
    w.good("sequence errors")


def sizes(w):
    p = w.port
    r = session(p, b"EHLO x\r\nNOOP " + b"A" * 4000 + b"\r\nQUIT\r\n")
    check("a 4000-byte command line: 500 5.5.2, the session goes on",
          codes(r)[2:] == ["500 5.5.2", "221 2.0.0"], str(codes(r)))
    rc, out = swaks("--server", "127.0.0.1", "--port", str(p), "--from",
                    "a@example.org", "--to", w.rcpt, "--header",
                    "X-Huge: " + "h" * 5000, "--body", "huge-line\n")
    check("a 5000-byte header line: 554 5.6.0 after the data (RFC 5321 "
          "§4.5.3.1.6)", rc != 0 and "554 5.6.0" in out, out[-400:])
    # A header section over max_size, in folded lines under 1000 bytes.
    hdr = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"f" * 200)
                   for i in range(400))
    r = session(p, b"EHLO x\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<" +
                w.rcpt.encode() + b">\r\nDATA\r\n" + hdr +
                b"\r\nhuge-section\r\n.\r\nQUIT\r\n", timeout=15)
    check("a header section of 80 KB, over max_size: 552 5.3.4",
          codes(r)[5:] == ["552 5.3.4", "221 2.0.0"], str(codes(r)))
    r = session(p, b"EHLO x\r\nMAIL FROM:<a@example.org> SIZE=%d\r\n"
                b"QUIT\r\n" % (MAX_SIZE * 2))
    check("MAIL with SIZE= above the limit: 552 5.3.4 (RFC 1870)",
          codes(r)[2] == "552 5.3.4", str(codes(r)))
    # Many header fields, under the limit: delivered.
    hdr = b"".join(b"X-Many-%d: v\r\n" % i for i in range(2000))
    r = session(p, b"EHLO x\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<" +
                w.rcpt.encode() + b">\r\nDATA\r\n" + hdr +
                b"\r\nmany-fields\r\n.\r\nQUIT\r\n", timeout=15)
    check("2000 header fields under max_size: accepted and delivered",
          codes(r)[5:6] == ["250 2.0.0"] and
          w.got("many-fields") is not None,
          str(codes(r)))
    check("nothing stored of the refused ones",
          w.stored("huge-line") == 0 and w.stored("huge-section") == 0)
    w.good("huge lines and header sections")


def recipients(w):
    p = w.port
    rc = b"".join(b"RCPT TO:<%s>\r\n" % w.rcpt.encode()
                  for _ in range(MAX_RCPTS + 2))
    r = session(p, b"EHLO x\r\nMAIL FROM:<a@example.org>\r\n" + rc +
                b"RSET\r\nQUIT\r\n")
    c = codes(r)
    check("too many recipients: 250 2.1.5 x5, then 452 4.5.3 (RFC 5321 "
          "§4.5.3.1.10)",
          c[3:3 + MAX_RCPTS] == ["250 2.1.5"] * MAX_RCPTS and
          c[3 + MAX_RCPTS:5 + MAX_RCPTS] == ["452 4.5.3"] * 2, str(c))
    cases = [
        (b"RCPT TO:<bad..dots@gw.test>", "501 5.1.3", "a bad recipient "
         "syntax"),
        (b"RCPT TO:<no-at-sign>", "501 5.1.3", "a recipient without a "
         "domain"),
        (b"RCPT TO:<x@elsewhere.example>", "550 5.7.1", "a domain that is "
         "not ours (no relaying)"),
        (b"RCPT TO:<a/b@gw.test>", "550 5.1.1", "a localpart that cannot "
         "be a JID"),
        (b"RCPT TO:<" + b"l" * 65 + b"@gw.test>", "553 5.1.3", "a "
         "localpart over 64 octets"),
    ]
    for cmd, want, what in cases:
        r = session(p, b"EHLO x\r\nMAIL FROM:<a@example.org>\r\n" + cmd +
                    b"\r\nQUIT\r\n")
        check("%s: %s" % (what, want), codes(r)[3:4] == [want],
              str(codes(r)))
    r = session(p, b"EHLO x\r\nMAIL FROM:<a@@example.org>\r\nQUIT\r\n")
    check("a bad sender syntax: 501 5.1.7", codes(r)[2:3] == ["501 5.1.7"],
          str(codes(r)))
    # An account parleyd does not have: accepted, then a DSN.
    ghost = harness.unique("ghost")
    rc, out = swaks("--server", "127.0.0.1", "--port", str(p), "--from",
                    "dsn-me@example.org", "--to", "%s@gw.test" % ghost,
                    "--body", "ghost-mail\n")
    check("an account parleyd does not have: accepted (250 2.0.0)",
          rc == 0 and "250 2.0.0" in out, out[-400:])

    def dsn():
        c = sqlite3.connect("file:%s?mode=ro" % w.db, uri=True, timeout=10)
        try:
            return c.execute(
                "SELECT count(*) FROM messages WHERE dest = 'mail' AND "
                "src_channel = 'system' AND dst_addr = 'dsn-me@example.org'"
            ).fetchone()[0]
        finally:
            c.close()
    check("...and a DSN to its sender is queued",
          harness.wait_for(lambda: dsn() == 1, 20), w.logtext())
    w.good("too many recipients and bad addresses")


def junk(w):
    p = w.port
    r = session(p, b"EHLO x\r\nMAIL FROM:<a\x00b@example.org>\r\nQUIT\r\n")
    check("NUL in a command: 500 5.5.2", codes(r)[2:3] == ["500 5.5.2"],
          str(codes(r)))
    r = session(p, b"EHLO x\r\nMAIL FROM:<a@example.org>\r\n"
                b"RCPT TO:<j\xc3\xbcrg@gw.test>\r\nQUIT\r\n")
    check("an 8-bit address without SMTPUTF8: 553 5.6.7 (RFC 6531 §3.4)",
          codes(r)[3:4] == ["553 5.6.7"], str(codes(r)))
    r = session(p, b"EHLO x\r\n\xff\xfe\x80\x81 garbage\r\n\x1b[2J\r\n"
                b"QUIT\r\n")
    check("binary garbage lines: 500 (5.5.1 or 5.5.2), then QUIT works",
          [x[:7] for x in codes(r)[2:4]] == ["500 5.5"] * 2 and
          codes(r)[-1] == "221 2.0.0", str(codes(r)))
    # A body with NUL, C0 controls and Latin-1 bytes (no charset): it must
    # reach IM as valid XML.
    r = session(p, b"EHLO x\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<" +
                w.rcpt.encode() + b">\r\nDATA\r\nSubject: bin\x01ary\r\n\r\n"
                b"junk-body a\x00b\x07c\x1bd \xe9t\xe9\r\n.\r\nQUIT\r\n")
    check("a body with NUL, C0 controls, Latin-1: 250 2.0.0",
          codes(r)[5:6] == ["250 2.0.0"], str(codes(r)))
    m = w.got("junk-body")
    body = m.findtext("{jabber:client}body") if m is not None else ""
    check("...delivered to IM, the controls left out, Latin-1 read as "
          "such", m is not None and "\u00e9t\u00e9" in body and
          not re.search("[\x00-\x08\x0b\x0c\x0e-\x1f]", body),
          repr(body) + w.logtext())
    w.good("NUL and 8-bit junk")


def slow_and_many(w):
    p = w.port
    s = connect(p, timeout=TIMEOUT + 10)
    t = time.monotonic()
    data = b""
    try:
        s.sendall(b"EHLO slow\r\nMAIL FROM:<a@exa")   # and then nothing
        while time.monotonic() - t < TIMEOUT + 8:
            c = s.recv(4096)
            if not c:
                break
            data += c
    except OSError:
        pass
    finally:
        s.close()
    took = time.monotonic() - t
    r = data.decode("latin-1")
    check("a client silent mid-command past the %d s timeout: 421 4.4.2 "
          "and closed" % TIMEOUT,
          codes(r)[-1:] == ["421 4.4.2"] and TIMEOUT - 0.5 < took <
          TIMEOUT + 5, "%r after %.1f s" % (codes(r), took))
    held = []
    try:
        for _ in range(MAX_SESSIONS):
            c = connect(p)
            c.recv(1024)   # the greeting
            held.append(c)
        r = session(p, b"", timeout=5, close_write=False)
        check("one session over max_sessions: 421 4.3.2 instead of the "
              "greeting", codes(r) == ["421 4.3.2"], repr(r))
    finally:
        for c in held:
            c.close()
    time.sleep(0.5)
    w.good("a slow client and too many sessions")


MIME = [
    ("broken-boundary",
     b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\""
     b"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\nmime-broken-boundary"
     b"\r\n--b2\r\nContent-Type: text/plain\r\n\r\nother\r\n"),
    ("no-boundary-param",
     b"MIME-Version: 1.0\r\nContent-Type: multipart/alternative\r\n\r\n"
     b"mime-no-boundary-param\r\n"),
    ("bad-charset",
     b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=x-no-such-"
     b"charset\r\n\r\nmime-bad-charset caf\xe9\r\n"),
    ("base64-garbage",
     b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
     b"Content-Transfer-Encoding: base64\r\n\r\n!!!not base64 at all***"
     b"\r\nbWltZS1iYXNlNjQtZ2FyYmFnZQ=\r\n===\r\n"),
    ("bogus-cte",
     b"MIME-Version: 1.0\r\nContent-Type: text/plain\r\n"
     b"Content-Transfer-Encoding: x-rot13\r\n\r\nmime-bogus-cte\r\n"),
    ("deep-nesting",
     b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=a0\r\n"
     b"\r\n" + b"".join(b"--a%d\r\nContent-Type: multipart/mixed; "
                        b"boundary=a%d\r\n\r\n" % (i, i + 1)
                        for i in range(300)) +
     b"--a300\r\nContent-Type: text/plain\r\n\r\nmime-deep-nesting\r\n"),
    ("bad-encoded-word",
     b"Subject: =?utf-8?B?!!!?= =?no-such?Q?x?= =?utf-8?Q?caf=C3?=\r\n"
     b"Content-Type: text/html\r\n\r\n<p>mime-bad-encoded-word<b "
     b"unclosed\r\n"),
]


def mime(w):
    p = w.port
    for name, msg in MIME:
        r = session(p, b"EHLO x\r\nMAIL FROM:<m@example.org>\r\nRCPT TO:<" +
                    w.rcpt.encode() + b">\r\nDATA\r\nSubject: mime\r\n" +
                    msg + b".\r\nQUIT\r\n", timeout=15)
        c = codes(r)
        verdict = c[5] if len(c) > 5 else None
        ok = verdict is not None and (verdict == "250 2.0.0" or
                                      verdict.startswith("5"))
        delivered = verdict == "250 2.0.0" and \
            w.cu.wait(lambda e: e.tag.endswith("}message") and
                      e.get("from", "").startswith("m\\40example.org@"),
                      timeout=15) is not None
        check("malformed MIME (%s): %s" % (name, verdict),
              ok and (delivered or verdict.startswith("5")),
              str(c) + w.logtext()[-800:])
    w.good("malformed MIME")


def main():
    gw_common.require(SWAKS, GATEWAY)
    cport, smtp_port, cb_port, relay_port = harness.free_ports(4)
    srv = gw_common.start_server(cport, ((SMS, SECRET), (MAIL, SECRET)))
    d = srv.dir
    conf = os.path.join(d, "gw.conf")
    with open(conf, "w") as f:
        f.write(gateway_conf(d, cport, smtp_port, cb_port, relay_port))
    gwlog = os.path.join(d, "gw.log")
    gw = harness.spawn("gateway", [GATEWAY, "--config", conf],
                       stdout=open(gwlog, "a"), stderr=subprocess.STDOUT)

    def logtext():
        return open(gwlog, errors="replace").read()[-3000:]
    try:
        linked = harness.wait_for(
            lambda: logtext().count("linked to parleyd") >= 2, 20)
        check("the gateway links to parleyd for both domains", linked,
              logtext())
        if linked:
            w = World(srv, smtp_port, logtext,
                      os.path.join(d, "gateway.db"))
            w.good("start-up")
            for part in (pipelining, sequence, sizes, recipients, junk,
                         slow_and_many, mime):
                part(w)
                check("the gateway is still running after %s" %
                      part.__name__, gw.poll() is None, logtext())
            check("the gateway kept its link to parleyd (no stanza it "
                  "wrote was refused)",
                  logtext().count("linked to parleyd") == 2, logtext())
            w.cu.close()
    finally:
        rc = harness.stop_group(gw)
        harness.untrack(gw)
        check("the gateway exits cleanly on SIGTERM", rc in (0, -15),
              "status %s" % rc)
        harness.finish()


if __name__ == "__main__":
    main()
