#!/usr/bin/python3
"""test_gateway_smtp_tls.py - STARTTLS (RFC 3207) on parley-gateway's
inbound SMTP listener.

Runs parleyd (components sms.localhost and mail.localhost) and
parley-gateway with an SMTP listener and no certificate configured, so
that the gateway makes a self-signed one in its data_dir, with an IM user
online; then:

- mail.smtp.tls unset: EHLO offers STARTTLS; swaks --tls (certificate
  not verified) and Python's smtplib starttls() get their message to the
  IM user over TLS 1.2 or later; after TLS, EHLO no longer offers
  STARTTLS and a second STARTTLS gets 503; a TLS 1.1 client is refused;
- the command injection of CVE-2011-0411: "STARTTLS" and a MAIL FROM in
  one plaintext write: the MAIL is not run inside TLS (RCPT gets 503,
  MAIL without a new EHLO gets 503: HELO forgotten, RFC 3207 §4.2), and
  plaintext sent after the 220 but before the handshake breaks the
  handshake instead of being run;
- restarted with mail.smtp.tls = "required": the same certificate is
  used (not made again), MAIL without TLS gets 530 5.7.0, a swaks client
  without --tls is refused and one with --tls delivers;
- a bad mail.smtp.tls value fails --check-config.

Run with /usr/bin/python3; `scripts/run-tests test_gateway_smtp_tls`.
"""

import os
import shutil
import smtplib
import socket
import ssl
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import gw_common  # noqa: E402
from harness import check  # noqa: E402
from im_common import ImClient, add_users  # noqa: E402

SECRET = "tls-secret"
MAIL = "mail.localhost"
SMS = "sms.localhost"
GATEWAY = gw_common.GATEWAY
SWAKS = shutil.which("swaks") or "/usr/bin/swaks"


def gateway_conf(d, cport, smtp_port, cb_port, relay_port, tls):
    return """instance = "smtptls";
data_dir = "%s";
queue = "gateway.db";
log_level = "info";
component = { host = "127.0.0.1"; port = %d; secret = "%s";
              reconnect_min = 100; reconnect_max = 1000; };
sms = { domain = "%s"; kannel = { timeout = 2; };
        callback = { port = %d; url = "http://127.0.0.1:%d"; }; };
mail = {
  domain = "%s"; im_host = "localhost"; recipient_domains = "gw.test";
  smtp = { address = "127.0.0.1"; port = %d; %s };
  timeout = 5;
  relay = { url = "smtp://127.0.0.1:%d"; starttls = "none";
            connect_timeout = 1; timeout = 5; };
};
retry = { base = 500; max = 1000; jitter = 20; expiry = 120; };
queue_lease = 30;
queue_poll = 200;
""" % (d, cport, SECRET, SMS, cb_port, cb_port, MAIL, smtp_port,
       ('tls = "%s";' % tls) if tls else "", relay_port)


def no_verify():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class Reader:
    """A raw SMTP client over a socket that may become TLS."""

    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""

    def send(self, data):
        self.s.sendall(data)

    def reply(self):
        """One whole reply (all its lines) as text, or "" on EOF."""
        lines = []
        while True:
            while b"\r\n" not in self.buf:
                chunk = self.s.recv(4096)
                if not chunk:
                    return "\r\n".join(lines)
                self.buf += chunk
            line, self.buf = self.buf.split(b"\r\n", 1)
            lines.append(line.decode("latin-1"))
            if len(line) < 4 or line[3:4] != b"-":
                return "\r\n".join(lines)

    def tls(self):
        self.s = no_verify().wrap_socket(self.s)

    def pending_plain(self):
        """Bytes already received and not consumed."""
        return self.buf

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass


def swaks(*args, timeout=30):
    r = subprocess.run([SWAKS, "--hide-informational", "--timeout", "10",
                        *args], capture_output=True, text=True,
                       timeout=timeout)
    return r.returncode, r.stdout + r.stderr


class World:
    def __init__(self, srv, port, logtext):
        self.srv = srv
        self.port = port
        self.logtext = logtext
        self.user = harness.unique("smtptls")
        add_users(srv, self.user)
        self.cu = ImClient(srv, self.user, "desk")
        self.cu.presence()
        self.rcpt = "%s@gw.test" % self.user

    def got(self, marker, timeout=15):
        return self.cu.wait(lambda e: e.tag.endswith("}message") and
                            marker in (e.findtext("{jabber:client}body")
                                       or ""), timeout=timeout)

    def swaks(self, marker, *extra):
        return swaks("--server", "127.0.0.1", "--port", str(self.port),
                     "--from", "tls@example.org", "--to", self.rcpt,
                     "--header", "Subject: tls", "--body", marker + "\n",
                     *extra)


def offered(w):
    r = Reader(w.port)
    greet = r.reply()
    r.send(b"EHLO plain.example\r\n")
    ehlo = r.reply()
    check("EHLO in plaintext offers STARTTLS", greet.startswith("220 ") and
          "250-STARTTLS" in ehlo, ehlo)
    r.send(b"STARTTLS\r\n")
    ok = r.reply().startswith("220 2.0.0")
    r.tls()
    version = r.s.version()
    check("STARTTLS: 220 2.0.0, then a TLS 1.2+ handshake (%s)" % version,
          ok and version in ("TLSv1.2", "TLSv1.3"))
    r.send(b"EHLO tls.example\r\n")
    ehlo = r.reply()
    check("after TLS, EHLO no longer offers STARTTLS",
          ehlo.startswith("250-") and "STARTTLS" not in ehlo, ehlo)
    r.send(b"STARTTLS\r\n")
    again = r.reply()
    check("a second STARTTLS gets 503 5.5.1", again.startswith("503 5.5.1"),
          again)
    r.send(b"QUIT\r\n")
    r.reply()
    r.close()

    rc, out = w.swaks("swaks-tls-marker", "--tls")
    check("swaks --tls (no verification) delivers: exit 0 and MAIL was "
          "sent in TLS (its ~> lines)",
          rc == 0 and "~> MAIL FROM" in out, out[-1500:])
    check("...to the IM user", rc == 0 and w.got("swaks-tls-marker")
          is not None, w.logtext()[-800:])

    try:
        with smtplib.SMTP("127.0.0.1", w.port, timeout=10) as c:
            c.ehlo("py.example")
            has = c.has_extn("starttls")
            code, _ = c.starttls(context=no_verify())
            ver = c.sock.version()
            c.ehlo("py.example")
            again = c.has_extn("starttls")
            refused = c.sendmail("py@example.org", [w.rcpt],
                                 "Subject: py\r\n\r\nsmtplib-tls-marker\r\n")
        ok = has and code == 220 and not again and refused == {}
        detail = "%s %s %s %s" % (has, code, ver, again)
    except (smtplib.SMTPException, OSError) as e:
        ok, ver, detail = False, None, repr(e)
    check("smtplib starttls(): 220, %s, STARTTLS gone from the second "
          "EHLO, message accepted" % ver,
          ok and ver in ("TLSv1.2", "TLSv1.3"), detail)
    check("...and delivered to IM", ok and w.got("smtplib-tls-marker")
          is not None)

    # TLS 1.1 and older are refused (Parley: TLS 1.2 minimum).
    r = Reader(w.port)
    r.reply()
    r.send(b"EHLO old.example\r\nSTARTTLS\r\n")
    r.reply()
    go = r.reply()
    ctx = no_verify()
    try:
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    except (ssl.SSLError, ValueError):
        pass
    try:
        r.s = ctx.wrap_socket(r.s)
        old = r.s.version()
    except (ssl.SSLError, OSError) as e:
        old = "refused: %r" % e
    check("a client offering at most TLS 1.1 fails the handshake",
          go.startswith("220 2.0.0") and old.startswith("refused"), old)
    r.close()


def injection(w):
    # CVE-2011-0411: commands pipelined after STARTTLS in plaintext must
    # not be run in the TLS session.
    r = Reader(w.port)
    r.reply()
    r.send(b"EHLO inj.example\r\nSTARTTLS\r\nEHLO evil.example\r\n"
           b"MAIL FROM:<evil@example.org>\r\n")
    ehlo = r.reply()
    go = r.reply()
    left = r.pending_plain()
    check("STARTTLS with EHLO and MAIL pipelined after it: 220 2.0.0 and "
          "no reply to the pipelined commands",
          "STARTTLS" in ehlo and go.startswith("220 2.0.0") and not left,
          repr(go) + repr(left))
    r.tls()
    r.send(b"RCPT TO:<" + w.rcpt.encode() + b">\r\n")
    rcpt = r.reply()
    r.send(b"MAIL FROM:<ok@example.org>\r\n")
    mail = r.reply()
    check("in TLS, the injected EHLO and MAIL were not run: the first "
          "reply is RCPT's 503 5.5.1 Need MAIL",
          rcpt.startswith("503 5.5.1 Need MAIL"), rcpt)
    check("...and the EHLO before TLS is forgotten: MAIL gets 503 5.5.1 "
          "(RFC 3207 §4.2)", mail.startswith("503 5.5.1"), mail)
    r.send(b"QUIT\r\n")
    r.reply()
    r.close()

    # Plaintext written after the 220 and before the handshake is read
    # by the handshake (it fails), not run.
    r = Reader(w.port)
    r.reply()
    r.send(b"EHLO inj2.example\r\nSTARTTLS\r\n")
    r.reply()
    r.reply()
    r.send(b"MAIL FROM:<evil2@example.org>\r\n")
    try:
        r.tls()
        r.send(b"EHLO x\r\n")
        res = "handshake went on: %r" % r.reply()
    except (ssl.SSLError, OSError) as e:
        res = "failed: %r" % e
    check("plaintext between the 220 and the handshake: the handshake "
          "fails, nothing is run", res.startswith("failed"), res)
    r.close()
    time.sleep(0.3)
    check("...and the gateway logged the discarded bytes",
          "discarded" in w.logtext(), w.logtext()[-1500:])


def required(w):
    r = Reader(w.port)
    r.reply()
    r.send(b"EHLO req.example\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<" +
           w.rcpt.encode() + b">\r\nNOOP\r\n")
    ehlo = r.reply()
    mail, rcpt, noop = r.reply(), r.reply(), r.reply()
    check("tls = required: EHLO offers STARTTLS; MAIL and RCPT without it "
          "get 530 5.7.0, NOOP still 250",
          "250-STARTTLS" in ehlo and
          mail.startswith("530 5.7.0 Must issue a STARTTLS command first")
          and rcpt.startswith("530 5.7.0") and noop.startswith("250"),
          "%r %r %r" % (mail, rcpt, noop))
    r.close()
    rc, out = w.swaks("req-plain-marker")
    check("tls = required: swaks without --tls is refused",
          rc != 0 and "530 5.7.0" in out, out[-800:])
    rc, out = w.swaks("req-tls-marker", "--tls")
    check("tls = required: swaks --tls delivers (in TLS)",
          rc == 0 and "~> MAIL FROM" in out and
          w.got("req-tls-marker") is not None, out[-800:])


def main():
    for tool in (SWAKS, GATEWAY):
        if not os.path.exists(tool):
            check("%s is available" % tool, False)
            harness.finish()
    cport, smtp_port, cb_port, relay_port = harness.free_ports(4)
    srv = harness.Server(
        listeners_extra='{ protocol = "component"; address = "127.0.0.1"; '
                        'port = %d; tls = "none"; }' % cport,
        host_extra='components = ( { domain = "%s"; secret = "%s"; },'
                   ' { domain = "%s"; secret = "%s"; } );'
                   % (SMS, SECRET, MAIL, SECRET))
    if not srv.start():
        check("parleyd starts", False, srv.dump_log())
        harness.finish()
    d = srv.dir
    conf = os.path.join(d, "gw.conf")
    gwlog = os.path.join(d, "gw.log")
    cert = os.path.join(d, "smtp-cert.pem")

    def logtext():
        return open(gwlog, errors="replace").read()[-4000:]

    def start(tls):
        with open(conf, "w") as f:
            f.write(gateway_conf(d, cport, smtp_port, cb_port, relay_port,
                                 tls))
        with open(gwlog, "w"):
            pass
        gw = harness.spawn("gateway", [GATEWAY, "--config", conf],
                           stdout=open(gwlog, "a"), stderr=subprocess.STDOUT)
        linked = harness.wait_for(
            lambda: logtext().count("linked to parleyd") >= 2, 20)
        check("the gateway (tls %s) links to parleyd for both domains"
              % (tls or "unset"), linked, logtext())
        return gw, linked

    def stop(gw):
        rc = harness.stop_group(gw)
        harness.untrack(gw)
        check("the gateway exits cleanly on SIGTERM", rc in (0, -15),
              "status %s" % rc)

    w = None
    gw, linked = start(None)
    try:
        check("a self-signed certificate was made in data_dir",
              os.path.exists(cert) and
              os.stat(os.path.join(d, "smtp-key.pem")).st_mode & 0o077 == 0)
        if linked:
            w = World(srv, smtp_port, logtext)
            offered(w)
            injection(w)
            check("the gateway is still running", gw.poll() is None,
                  logtext())
    finally:
        stop(gw)
    before = open(cert, "rb").read() if os.path.exists(cert) else None
    gw, linked = start("required")
    try:
        check("restarted: the same certificate is used, not made again",
              before is not None and open(cert, "rb").read() == before)
        if linked and w:
            required(w)
            check("the gateway is still running", gw.poll() is None,
                  logtext())
    finally:
        if w:
            w.cu.close()
        stop(gw)
    with open(conf, "w") as f:
        f.write(gateway_conf(d, cport, smtp_port, cb_port, relay_port,
                             "sometimes"))
    r = subprocess.run([GATEWAY, "--config", conf, "--check-config"],
                       capture_output=True, text=True, timeout=20)
    check("--check-config refuses mail.smtp.tls = \"sometimes\"",
          r.returncode != 0 and "mail.smtp.tls" in r.stderr, r.stderr)
    harness.finish()


if __name__ == "__main__":
    main()
