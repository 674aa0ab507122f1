#!/usr/bin/python3
"""test_gateway_media.py - files through parley-gateway (media.c):
parleyd with HTTP File Upload (XEP-0363; upload.components names the
gateway's mail domain), parley-gateway (sms.localhost, mail.localhost,
media.upload_service), Kannel with its fake SMSC, swaks as the mail
sender and gw_smtp_probe --save as the relay (the outside mail server).

Checks:
  - e-mail->IM: swaks sends a message with two attachments; the IM user
    gets the text, a GET URL per file in the body and one jabber:x:oob
    <x/> each; fetching each URL returns the very bytes sent;
  - a too-large attachment is dropped with a note in the text, the others
    still delivered;
  - IM->e-mail: a user uploads a file (slot + PUT) and sends its URL in an
    XEP-0066 <x/>; the message at the relay (parsed by Python's email
    package, not the gateway's MIME code) has the file attached with
    identical bytes and the link in the text;
  - a link outside media.fetch_from is not fetched (an HTTP listener that
    counts requests sees none; SSRF), only listed;
  - durability: with the relay down, an IM message with a link waits in
    the queue; the gateway is killed (SIGKILL) and started again, the
    relay comes up: the e-mail arrives once, with the file attached;
  - IM->SMS: the link goes in the SMS text (the MMS equivalent);
  - durability e-mail->IM: an e-mail with a file accepted while parleyd
    is down, the gateway killed and restarted, parleyd started again:
    the user (offline storage) gets the URL, and it returns the bytes.
Run with /usr/bin/python3; `scripts/run-tests test_gateway_media`.
"""

import email
import email.policy
import hashlib
import http.client
import http.server
import os
import signal
import sys
import threading
import time
import urllib.parse
from xml.sax.saxutils import escape, quoteattr

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, tostr  # noqa: E402
from im_common import ImClient, add_users  # noqa: E402
import test_gateway_mail as tgm  # noqa: E402
import test_gateway_sms as tgs  # noqa: E402

MAIL = "mail.localhost"
SMS = tgs.DOMAIN
NS_OOB = "jabber:x:oob"
NS_UP = "urn:xmpp:http:upload:0"
C = "{jabber:client}"
MODULES = ('"disco", "ping", "roster", "presence", "offline", "register", '
           '"session", "upload"')
MAX_SIZE = 200000


def media_conf(smtp_port, relay_port, hport):
    return """mail = {
  domain = "%s"; im_host = "localhost"; recipient_domains = "gw.test";
  smtp = { address = "127.0.0.1"; port = %d; };
  relay = { url = "smtp://127.0.0.1:%d"; starttls = "none";
            connect_timeout = 2; timeout = 5; };
};
media = {
  upload_service = "upload.localhost";
  fetch_from = "http://127.0.0.1:%d/upload/";
  max_size = %d; max_count = 3; timeout = 5;
};
""" % (MAIL, smtp_port, relay_port, hport, MAX_SIZE)


class Counter(http.server.BaseHTTPRequestHandler):
    """An HTTP server that must never be asked anything (SSRF check)."""
    hits = 0

    def do_GET(self):
        Counter.hits += 1
        body = b"secret"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


def http_get(url):
    u = urllib.parse.urlsplit(url)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    try:
        c.request("GET", u.path)
        r = c.getresponse()
        return r.status, r.read()
    except (OSError, http.client.HTTPException) as e:
        return None, repr(e).encode()
    finally:
        c.close()


def upload(cu, hport, name, data, ctype):
    """The user's own upload: slot from upload.localhost, then PUT."""
    iq = cu.request("<request xmlns='%s' filename=%s size='%d' "
                    "content-type=%s/>" % (NS_UP, quoteattr(name), len(data),
                                           quoteattr(ctype)),
                    to="upload.localhost")
    s = iq.find("{%s}slot" % NS_UP) if iq is not None else None
    if s is None:
        return None
    put = s.find("{%s}put" % NS_UP)
    auth = put.find("{%s}header" % NS_UP).text
    c = http.client.HTTPConnection("127.0.0.1", hport, timeout=10)
    try:
        c.request("PUT", urllib.parse.urlsplit(put.get("url")).path, data,
                  {"Authorization": auth, "Content-Type": ctype})
        st = c.getresponse().status
    finally:
        c.close()
    return s.find("{%s}get" % NS_UP).get("url") if st in (200, 201) else None


def oob_msg(to, url, text, mid):
    return ("<message to='%s' type='chat' id='%s'><body>%s</body>"
            "<x xmlns='%s'><url>%s</url></x></message>"
            % (to, mid, escape(text), NS_OOB, escape(url)))


def attachments(path):
    """(text, [(filename, bytes)]) of a saved message, by Python's email."""
    with open(path, "rb") as f:
        msg = email.message_from_binary_file(f, policy=email.policy.default)
    body = msg.get_body(preferencelist=("plain",))
    files = [(p.get_filename(), p.get_payload(decode=True))
             for p in msg.iter_attachments()]
    return (body.get_content() if body is not None else ""), files


def main():
    for tool in (tgs.FAKESMSC, "/usr/sbin/bearerbox", "/usr/sbin/smsbox",
                 tgm.SWAKS, tgm.PROBE, tgs.GATEWAY):
        if not os.path.exists(tool):
            check("%s is available" % tool, False)
            harness.finish()
    cport, hport, smtp_port, relay_port, cb = harness.free_ports(5)
    srv = harness.Server(
        listeners_extra='{ protocol = "component"; address = "127.0.0.1"; '
                        'port = %d; tls = "none"; }, { protocol = "http"; '
                        'address = "127.0.0.1"; port = %d; }' % (cport, hport),
        host_extra='modules = [%s]; components = ( { domain = "%s"; '
                   'secret = "%s"; }, { domain = "%s"; secret = "%s"; } );'
                   % (MODULES, SMS, tgs.SECRET, MAIL, tgs.SECRET),
        extra='upload: { url = "http://127.0.0.1:%d"; components = ["%s"]; '
              'max_file_size = 10000000; };' % (hport, MAIL))
    if not srv.start():
        check("parleyd starts", False, srv.dump_log())
        harness.finish()
    d = srv.dir
    saved = os.path.join(d, "mails")
    os.makedirs(saved)
    kannel = tgs.Kannel(d, cb)
    gw = None
    sink = None
    counter = http.server.HTTPServer(("127.0.0.1", 0), Counter)
    threading.Thread(target=counter.serve_forever, daemon=True).start()
    try:
        check("bearerbox starts with the fake SMSC", kannel.start_bearer())
        phone = tgs.Phone(d, kannel.smsc)
        check("smsbox starts (sendsms)", kannel.start_smsbox())
        sink = tgm.Probe("--port", str(relay_port), "--save", saved)
        gw = tgs.Gateway(d, cport, "gw1", cb, kannel,
                         extra=media_conf(smtp_port, relay_port, hport))
        gw.start()
        linked = harness.wait_for(
            lambda: gw.logtext().count("linked to parleyd") >= 2, 20)
        check("the gateway links to parleyd for both domains", linked,
              gw.logtext())
        if linked:
            sink = run(srv, d, gw, sink, phone, smtp_port, relay_port, hport,
                       saved, counter.server_address[1])
    finally:
        counter.shutdown()
        counter.server_close()
        if sink and sink.proc.poll() is None:
            sink.stop()
        if gw:
            gw.stop()
            log = open(gw.log, errors="replace").read()
            check("the gateway log has no sanitizer report (a SAN build)",
                  "Sanitizer" not in log and "runtime error" not in log,
                  log[-3000:])
        kannel.stop()
        harness.finish()


def run(srv, d, gw, sink, phone, smtp_port, relay_port, hport, saved,
        cport2):
    user = harness.unique("media")
    add_users(srv, user)
    cu = ImClient(srv, user, "desk")
    cu.presence()
    alice = "alice\\40example.org@" + MAIL

    # -- e-mail -> IM: two attachments stored through the upload service
    photo = bytes(range(256)) * 40 + os.urandom(5000)
    notes = "Quarterly notes\r\nline two\r\n".encode() * 50
    for name, data in (("photo.png", photo), ("notes.txt", notes)):
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
    rc, out = tgm.swaks(
        "--server", "127.0.0.1", "--port", str(smtp_port),
        "--from", "alice@example.org", "--to", "%s@gw.test" % user,
        "--header", "Subject: pictures", "--body", "see the attached files",
        "--attach-type", "image/png", "--attach-name", "photo.png",
        "--attach", "@" + os.path.join(d, "photo.png"),
        "--attach-type", "text/plain", "--attach-name", "notes.txt",
        "--attach", "@" + os.path.join(d, "notes.txt"))
    check("e-mail->IM: the gateway accepts a message with attachments",
          rc == 0 and "250 2.0.0" in out, out[-600:])
    m = cu.wait(lambda e: e.tag.endswith("}message") and
                e.get("from") == alice and
                "see the attached" in (e.findtext(C + "body") or ""),
                timeout=30)
    oob = [x.findtext("{%s}url" % NS_OOB) for x in
           (m.findall("{%s}x" % NS_OOB) if m is not None else [])]
    body = m.findtext(C + "body") if m is not None else ""
    check("e-mail->IM: the user gets the text, one oob <x/> per file and "
          "each URL in the body",
          len(oob) == 2 and all(u and u in body for u in oob) and
          m.findtext(C + "subject") == "pictures",
          tostr(m) if m is not None else gw.logtext())
    got = [http_get(u) for u in oob]
    want = sorted([photo, notes])
    check("e-mail->IM: fetching the URLs returns the very bytes sent",
          len(got) == 2 and all(s == 200 for s, _ in got) and
          sorted(b for _, b in got) == want,
          repr([(s, len(b)) for s, b in got]))
    check("e-mail->IM: the URLs keep the file names",
          any(u.endswith("/photo.png") for u in oob) and
          any(u.endswith("/notes.txt") for u in oob), repr(oob))

    # -- a too-large attachment: dropped with a note, the rest delivered
    big = os.urandom(MAX_SIZE + 1000)
    with open(os.path.join(d, "big.bin"), "wb") as f:
        f.write(big)
    rc, out = tgm.swaks(
        "--server", "127.0.0.1", "--port", str(smtp_port),
        "--from", "alice@example.org", "--to", "%s@gw.test" % user,
        "--header", "Subject: big one", "--body", "one big, one small",
        "--attach-name", "big.bin", "--attach",
        "@" + os.path.join(d, "big.bin"),
        "--attach-type", "text/plain", "--attach-name", "notes.txt",
        "--attach", "@" + os.path.join(d, "notes.txt"))
    m = cu.wait(lambda e: e.tag.endswith("}message") and
                "one big, one small" in (e.findtext(C + "body") or ""),
                timeout=30)
    body = m.findtext(C + "body") if m is not None else ""
    oob = [x.findtext("{%s}url" % NS_OOB) for x in
           (m.findall("{%s}x" % NS_OOB) if m is not None else [])]
    check("a too-large attachment is dropped with a note, the small one "
          "still delivered",
          rc == 0 and "big.bin" in body and "not delivered" in body and
          len(oob) == 1 and http_get(oob[0]) == (200, notes),
          body + out[-300:])

    # -- IM -> e-mail: the linked file attached
    doc = b"%PDF-1.4 test\n" + os.urandom(20000)
    url = upload(cu, hport, "report.pdf", doc, "application/pdf")
    check("the IM user uploads a file to upload.localhost", bool(url),
          repr(url))
    n0 = len(sink.events("data"))
    cu.send(oob_msg("bob\\40example.org@" + MAIL, url or "", url or "", "f1"))
    sink.wait_data(n0 + 1, timeout=30)
    ev = sink.events("data")[n0:]
    text, files = attachments(ev[0]["file"]) if ev and ev[0].get("file") \
        else ("", [])
    check("IM->e-mail: the relay gets the file attached, identical bytes, "
          "and the link in the text",
          len(files) == 1 and files[0][1] == doc and
          files[0][0] == "report.pdf" and (url or "-") in text,
          repr(ev) + repr([(n, len(b or b"")) for n, b in files]) +
          gw.logtext())

    # -- a link outside media.fetch_from is listed, never fetched
    evil = "http://127.0.0.1:%d/upload/secret.txt" % cport2
    n0 = len(sink.events("data"))
    cu.send(oob_msg("bob\\40example.org@" + MAIL, evil, "look " + evil, "f2"))
    sink.wait_data(n0 + 1, timeout=30)
    ev = sink.events("data")[n0:]
    text, files = attachments(ev[0]["file"]) if ev and ev[0].get("file") \
        else ("", [])
    check("a link to another host is not fetched (SSRF) but listed",
          len(ev) == 1 and not files and evil in text and Counter.hits == 0,
          "hits=%d %r" % (Counter.hits, ev))

    # -- durability: queued with its link, gateway killed, restarted
    sink.stop()
    n0 = 0
    url2 = upload(cu, hport, "later.bin", photo, "application/octet-stream")
    cu.send(oob_msg("bob\\40example.org@" + MAIL, url2 or "", "for later",
                    "f3"))
    waited = harness.wait_for(lambda: "no answer" in gw.logtext(), 20)
    check("relay down: the e-mail with a link waits in the queue", waited,
          gw.logtext())
    gw.stop(signal.SIGKILL)
    time.sleep(0.5)
    gw.start()
    sink = tgm.Probe("--port", str(relay_port), "--save", saved)
    ok = sink.wait_data(1, timeout=40)
    time.sleep(2)
    ev = [e for e in sink.events("data") if "for later" in e.get("text", "")]
    text, files = attachments(ev[0]["file"]) if ev and ev[0].get("file") \
        else ("", [])
    check("after a SIGKILL and a restart the e-mail goes once, the file "
          "attached with identical bytes",
          ok and len(ev) == 1 and len(files) == 1 and files[0][1] == photo,
          repr(sink.events("data")) + gw.logtext())
    harness.wait_for(
        lambda: gw.logtext().count("linked to parleyd") >= 2, 20)

    # -- IM -> SMS: the link in the text
    num = "+15557654321"
    cu.send(oob_msg("%s@%s" % (num, SMS), url or "", "a picture", "s1"))
    got = phone.wait_for(lambda r: r[1] == num and "a picture" in r[3],
                         timeout=30)
    check("IM->SMS: the SMS carries the text and the link",
          len(got) == 1 and (url or "-") in got[0][3],
          repr(phone.received()[-3:]) + gw.logtext())
    cu.close()

    # -- durability e-mail->IM: accepted while parleyd is down, the
    # gateway killed and restarted, parleyd up: stored, then delivered
    srv.kill()
    late = os.urandom(7000)
    with open(os.path.join(d, "late.bin"), "wb") as f:
        f.write(late)
    rc, out = tgm.swaks(
        "--server", "127.0.0.1", "--port", str(smtp_port),
        "--from", "alice@example.org", "--to", "%s@gw.test" % user,
        "--header", "Subject: while down", "--body", "sent while down",
        "--attach-name", "late.bin", "--attach",
        "@" + os.path.join(d, "late.bin"))
    check("parleyd down: the gateway still accepts an e-mail with a file",
          rc == 0 and "250 2.0.0" in out, out[-400:])
    gw.stop(signal.SIGKILL)
    gw.start()
    check("parleyd starts again", srv.start(), srv.dump_log())
    cu = ImClient(srv, user, "desk")
    cu.presence()
    m = cu.wait(lambda e: e.tag.endswith("}message") and
                "sent while down" in (e.findtext(C + "body") or ""),
                timeout=40)
    oob = [x.findtext("{%s}url" % NS_OOB) for x in
           (m.findall("{%s}x" % NS_OOB) if m is not None else [])]
    check("...after a gateway restart the file is stored and the user gets "
          "its URL, which returns the bytes sent",
          len(oob) == 1 and http_get(oob[0]) == (200, late),
          (tostr(m) if m is not None else "") + gw.logtext())
    cu.close()
    return sink


if __name__ == "__main__":
    main()
