#!/usr/bin/python3
"""test_upload.py - HTTP File Upload (XEP-0363) and buffered transfer to
offline users (doc/upload.md).

Checked:
  - discovery: upload.<host> in the host's disco#items, its disco#info
    (identity store/file, urn:xmpp:http:upload:0, max-file-size form);
  - slixmpp's xep_0363 plugin (Debian python3-slixmpp, over aiohttp)
    finds the service, asks a slot and PUTs a file; a raw client then
    downloads it by the GET URL: the same bytes and type, Range (206),
    ETag and If-None-Match (304), HEAD, Content-Disposition, nosniff;
  - refusals with curl-like raw requests (http.client): a forged token, a
    token of another file, an expired slot, no slot (403), a size other
    than the slot's (400), over max_file_size (slot error
    <file-too-large/> and 413), over quota (<resource-constraint/> with
    <retry/>), PUT twice (409), a traversal in the file name (400/404),
    a CORS preflight answered for the PUT with its Authorization field;
  - an HTML upload is served as an attachment with a sandboxing CSP;
  - EICAR through clamd (Debian clamav-daemon, started here on a Unix
    socket with a one-signature database made here: no downloads): 403
    with the signature's name, the file gone, the uploader told;
  - offline transfer: Alice uploads, sends an XEP-0066 OOB message to
    offline Bob; Bob logs in, gets it with the XEP-0446 size and SHA-256,
    downloads it and finds the hash right;
  - expiry on a second server (file_expiry 2 s, held_expiry 6 s): an
    ordinary file goes, a file held for an offline user stays until its
    own expiry, then goes (each waited for with a bound, not a sleep).
Run with /usr/bin/python3; `scripts/run-tests upload`.
"""

import asyncio
import base64
import hashlib
import http.client
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from xml.sax.saxutils import quoteattr

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, note  # noqa: E402
from im_common import STEP, ImClient, LoopThread, add_users, PW  # noqa

NS_UP = "urn:xmpp:http:upload:0"
NS_DI = "http://jabber.org/protocol/disco#info"
NS_DT = "http://jabber.org/protocol/disco#items"
NS_ST = "urn:ietf:params:xml:ns:xmpp-stanzas"
NS_META = "urn:xmpp:file:metadata:0"
NS_HASH = "urn:xmpp:hashes:2"
C = "{jabber:client}"
EICAR = (b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!"
         b"$H+H*")
ORIGIN = "https://app.example.org"
MODULES = ('"disco", "ping", "roster", "presence", "offline", "register", '
           '"session", "upload"')


def start_clamd():
    """clamd on a Unix socket in a temp dir, or None if not installed."""
    exe = shutil.which("clamd") or "/usr/sbin/clamd"
    if not os.path.exists(exe):
        return None, None
    d = tempfile.mkdtemp(prefix="parley-clamd-")
    os.mkdir(os.path.join(d, "db"))
    # A hash signature (MD5:size:name) of the EICAR file: clamd cannot
    # start without a database, and none is downloaded here.
    with open(os.path.join(d, "db", "parley-test.hdb"), "w") as f:
        f.write("%s:%d:Parley-Test.EICAR\n" % (hashlib.md5(EICAR).hexdigest(),
                                               len(EICAR)))
    sock = os.path.join(d, "clamd.sock")
    with open(os.path.join(d, "clamd.conf"), "w") as f:
        f.write("LogFile %s/clamd.log\nDatabaseDirectory %s/db\n"
                "LocalSocket %s\nForeground yes\nStreamMaxLength 20M\n"
                % (d, d, sock))
    p = harness.spawn("clamd", [exe, "-c", os.path.join(d, "clamd.conf")],
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


def server(port, extra):
    return harness.Server(
        listeners_extra='{ protocol = "http"; address = "127.0.0.1"; '
                        'port = %d; }' % port,
        host_extra="modules = [%s];" % MODULES,
        extra="upload: { url = \"http://127.0.0.1:%d\"; %s };\n"
              "http: { cors_origins = [\"%s\"]; };" % (port, extra, ORIGIN))


def req(port, method, path, body=None, headers=None):
    """One request on a new connection: (status, headers dict, body)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=STEP)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data
    except (ConnectionError, http.client.HTTPException) as e:
        return None, {}, repr(e).encode()
    finally:
        c.close()


def head_only(port, url, auth, length):
    """Sends only the head of a PUT; returns the status answered."""
    with socket.create_connection(("127.0.0.1", port), timeout=STEP) as s:
        s.sendall(("PUT %s HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: "
                   "%s\r\nContent-Length: %d\r\n\r\n" % (
                       path_of(url), auth, length)).encode())
        line = s.makefile("rb").readline().split()
        return int(line[1]) if len(line) > 1 else None


def path_of(url):
    return urllib.parse.urlsplit(url).path


def slot(c, size, name="a.bin", ctype="application/octet-stream", srv=None):
    """Asks a slot; returns (iq, put_url, auth, get_url)."""
    ct = " content-type=%s" % quoteattr(ctype) if ctype else ""
    iq = c.request("<request xmlns='%s' filename=%s size='%d'%s/>" % (
        NS_UP, quoteattr(name), size, ct), to="upload." + srv.domain)
    s = iq.find("{%s}slot" % NS_UP) if iq is not None else None
    if s is None:
        return iq, None, None, None
    put = s.find("{%s}put" % NS_UP)
    h = put.find("{%s}header" % NS_UP)
    return iq, put.get("url"), h.text, s.find("{%s}get" % NS_UP).get("url")


def put(port, url, auth, data, ctype="application/octet-stream", extra=None):
    h = {"Authorization": auth, "Content-Type": ctype}
    h.update(extra or {})
    return req(port, "PUT", path_of(url), data, h)


def error_of(iq):
    e = iq.find(C + "error") if iq is not None else None
    if e is None:
        return None, None, None
    cond = next((x.tag.split("}")[1] for x in e if x.tag.startswith(
        "{%s}" % NS_ST) and not x.tag.endswith("}text")), None)
    return e.get("type"), cond, e


async def slix_upload(srv, user, data, name):
    import slixmpp
    c = slixmpp.ClientXMPP("%s/slix" % user, PW)
    c.ssl_context = harness.no_verify_context()
    c.use_ipv6 = False
    for p in ("xep_0030", "xep_0128", "xep_0363"):
        c.register_plugin(p)
    harness.slixmpp_without_channel_binding(c)
    started = asyncio.get_event_loop().create_future()
    c.add_event_handler("session_start",
                        lambda _: started.done() or started.set_result(1))
    c.connect((srv.host, srv.direct_port), use_ssl=True,
              force_starttls=False)
    try:
        await asyncio.wait_for(started, STEP * 2)
        import io
        # COMPAT slixmpp 1.8.3: its service discovery (xep_0030
        # get_info_from_domain) hands coroutines to asyncio.wait, which
        # Python 3.11 refuses; the service is named here instead (its
        # disco is checked above with a raw client).
        c["xep_0363"].upload_service = "upload." + srv.domain
        return await c["xep_0363"].upload_file(
            name, size=len(data), content_type="text/plain",
            input_file=io.BytesIO(data), timeout=STEP)
    finally:
        c.disconnect(wait=0.5)


def main():
    port = harness.free_ports(1)[0]
    sock, _ = start_clamd()
    check("clamd starts with a local signature database", sock is not None,
          "no clamd socket (is clamav-daemon installed?)")
    srv = server(port, "max_file_size = 1048576; quota = 1300000; "
                 "slot_expiry = 2; %s" % (
                     'clamd = "%s";' % sock if sock else ""))
    srv.start()
    alice, bob, carol = add_users(srv, harness.unique("alice"),
                                  harness.unique("bob"),
                                  harness.unique("carol"))
    a = ImClient(srv, alice.split("@")[0], "pc")
    a.presence()

    # -- discovery (XEP-0363 §3)
    iq = a.request("<query xmlns='%s'/>" % NS_DT, to=srv.domain)
    items = [i.get("jid") for i in iq.iter("{%s}item" % NS_DT)]
    check("the host lists upload.<host> in disco#items",
          "upload." + srv.domain in items, repr(items))
    iq = a.request("<query xmlns='%s'/>" % NS_DI, to="upload." + srv.domain)
    ids = [(i.get("category"), i.get("type"))
           for i in iq.iter("{%s}identity" % NS_DI)]
    feats = [f.get("var") for f in iq.iter("{%s}feature" % NS_DI)]
    fields = {f.get("var"): f.findtext("{jabber:x:data}value")
              for f in iq.iter("{jabber:x:data}field")}
    check("upload.<host> disco#info: store/file, the feature, max-file-size",
          ("store", "file") in ids and NS_UP in feats and
          fields.get("FORM_TYPE") == NS_UP and
          fields.get("max-file-size") == "1048576", repr((ids, feats,
                                                          fields)))

    # -- slixmpp uploads, a raw HTTP client downloads
    data = os.urandom(300000)
    lt = LoopThread()
    try:
        url = lt.run(slix_upload(srv, alice, data, "notes.txt"), timeout=60)
    except Exception as e:  # noqa: BLE001 - reported
        url = None
        note("slixmpp upload: %r" % e)
    check("slixmpp's xep_0363 uploads a file", bool(url), repr(url))
    if url:
        st, h, body = req(port, "GET", path_of(url))
        check("GET returns the bytes with the uploaded type",
              st == 200 and body == data and
              h.get("content-type") == "text/plain", "%s %s" % (st, h))
        check("GET names the file and says nosniff",
              "notes.txt" in h.get("content-disposition", "") and
              h.get("x-content-type-options") == "nosniff", repr(h))
        etag = h.get("etag")
        st, h2, body = req(port, "GET", path_of(url),
                            headers={"Range": "bytes=100-199"})
        check("Range gives 206 with the bytes",
              st == 206 and body == data[100:200] and
              h2.get("content-range") == "bytes 100-199/%d" % len(data),
              "%s %s" % (st, h2))
        st, _, _ = req(port, "GET", path_of(url),
                        headers={"If-None-Match": etag or "x"})
        check("If-None-Match with the ETag gives 304", st == 304, repr(st))
        st, h3, body = req(port, "HEAD", path_of(url))
        check("HEAD gives the length and no body",
              st == 200 and body == b"" and
              h3.get("content-length") == str(len(data)), repr((st, h3)))
        wrong = path_of(url).rsplit("/", 1)[0] + "/other.txt"
        st, _, _ = req(port, "GET", wrong)
        check("GET with another file name is 404", st == 404, repr(st))

    # -- PUT refusals
    iq, purl, auth, gurl = slot(a, 1000, srv=srv)
    check("a slot is given", purl is not None and auth.startswith("Bearer "),
          harness.tostr(iq) if iq is not None else "no answer")
    body = b"x" * 1000
    tok = auth[7:]
    forged = tok[:-4] + ("AAAA" if not tok.endswith("AAAA") else "BBBB")
    st, _, _ = put(port, purl, "Bearer " + forged, body)
    check("a forged token is 403", st == 403, repr(st))
    st, _, _ = put(port, purl, "", body)
    check("no token is 403", st == 403, repr(st))
    st, _, _ = put(port, purl.rsplit("/", 1)[0] + "/b.bin", auth, body)
    check("the token of another file name is 403", st == 403, repr(st))
    st, _, _ = put(port, purl, auth, body[:999])
    check("a size other than the slot's is 400", st == 400, repr(st))
    st, _, _ = put(port, purl, auth, body, ctype="image/png")
    check("another Content-Type than the slot's is 400", st == 400, repr(st))
    st, h, _ = req(port, "OPTIONS", path_of(purl), headers={
        "Origin": ORIGIN,
        "Access-Control-Request-Method": "PUT",
        "Access-Control-Request-Headers": "authorization,content-type"})
    check("a CORS preflight allows the PUT with Authorization",
          st == 204 and "PUT" in h.get("access-control-allow-methods", "")
          and "authorization" in h.get("access-control-allow-headers",
                                       "").lower(), repr((st, h)))
    st, _, _ = put(port, purl, auth, body)
    check("the PUT with the slot is 201", st == 201, repr(st))
    st, _, _ = put(port, purl, auth, body)
    check("a second PUT to the slot is 409", st == 409, repr(st))
    st, _, got = req(port, "GET", path_of(gurl))
    check("the first upload is served", st == 200 and got == body, repr(st))

    iq, purl, auth, _ = slot(a, 10, srv=srv)
    time.sleep(3.1)  # slot_expiry = 2: the point is the clock
    st, _, _ = put(port, purl, auth, b"0123456789")
    check("an expired slot is 403", st == 403, repr(st))

    iq, purl, _, _ = slot(a, 2000000, srv=srv)
    t, cond, e = error_of(iq)
    mx = e.find("{%s}file-too-large/{%s}max-file-size" % (NS_UP, NS_UP)) \
        if e is not None else None
    check("a slot over max_file_size: not-acceptable with <file-too-large>",
          purl is None and t == "modify" and cond == "not-acceptable" and
          mx is not None and mx.text == "1048576", harness.tostr(iq))
    iq, purl, auth, _ = slot(a, 1000, srv=srv)
    st = head_only(port, purl, auth, 2000000)
    check("a PUT announcing more than max_file_size is 413 before its body",
          st == 413, repr(st))
    # Alice stores 300000 + 1000 bytes of 1300000: 1000000 more is over.
    iq, purl, _, _ = slot(a, 1000000, srv=srv)
    t, cond, e = error_of(iq)
    check("a slot over the quota: wait, resource-constraint, <retry/>",
          purl is None and t == "wait" and cond == "resource-constraint" and
          e.find("{%s}retry" % NS_UP) is not None and
          e.find("{%s}retry" % NS_UP).get("stamp", "").endswith("Z"),
          harness.tostr(iq))
    iq, purl, _, _ = slot(a, 10, name="../../etc/passwd", srv=srv)
    t, cond, _ = error_of(iq)
    check("a file name with '/' gets no slot", purl is None and
          cond == "bad-request", harness.tostr(iq))
    st, _, _ = req(port, "GET", "/upload/%2e%2e/%2e%2e/etc/passwd")
    check("a traversal in a GET path is refused", st in (400, 404),
          repr(st))

    # -- active content: attachment, sandbox
    page = b"<script>alert(1)</script>"
    iq, purl, auth, gurl = slot(a, len(page), name="page.html",
                                ctype="text/html", srv=srv)
    st, _, _ = put(port, purl, auth, page, ctype="text/html")
    st2, h, _ = req(port, "GET", path_of(gurl))
    check("an uploaded page is an attachment in a sandbox",
          st == 201 and st2 == 200 and
          h.get("content-disposition", "").startswith("attachment") and
          "sandbox" in h.get("content-security-policy", ""),
          repr((st, st2, h)))

    # -- clamd: EICAR
    if sock:
        iq, purl, auth, gurl = slot(a, len(EICAR), name="eicar.com",
                                    srv=srv)
        st, _, text = put(port, purl, auth, EICAR)
        check("an EICAR upload is refused with the signature's name",
              st == 403 and b"Parley-Test.EICAR" in text, repr((st, text)))
        st, _, _ = req(port, "GET", path_of(gurl))
        check("the infected file is not served", st == 404, repr(st))
        m = a.wait(lambda el: el.tag == C + "message" and
                   el.get("from") == "upload." + srv.domain)
        check("the uploader is told in a message from the service",
              m is not None and "Parley-Test.EICAR" in
              (m.findtext(C + "body") or ""), harness.tostr(m))
        iq, purl, auth, gurl = slot(a, 5, name="clean.txt", srv=srv)
        st, _, _ = put(port, purl, auth, b"clean")
        check("a clean file passes the scan", st == 201, repr(st))

    # -- offline transfer (XEP-0066 OOB, XEP-0446 metadata)
    data = os.urandom(50000)
    iq, purl, auth, gurl = slot(a, len(data), name="for bob.bin", srv=srv)
    st, _, _ = put(port, purl, auth, data)
    a.message(carol, "warm-up")  # carol is offline too: not about files
    a.message(bob, "a file for you", extra="<x xmlns='jabber:x:oob'>"
              "<url>%s</url></x>" % gurl.replace("&", "&amp;"))
    a.storage_barrier()
    b = ImClient(srv, bob.split("@")[0], "phone")
    b.presence()
    m = b.wait(lambda el: el.tag == C + "message" and
               el.find("{jabber:x:oob}x") is not None)
    meta = m.find("{%s}file" % NS_META) if m is not None else None
    h = meta.find("{%s}hash" % NS_HASH) if meta is not None else None
    check("the offline recipient gets the OOB URL with size and SHA-256",
          meta is not None and meta.findtext("{%s}size" % NS_META) ==
          str(len(data)) and h is not None and h.get("algo") == "sha-256"
          and h.text == base64.b64encode(hashlib.sha256(data).digest())
          .decode(), harness.tostr(m))
    if m is not None:
        u = m.findtext("{jabber:x:oob}x/{jabber:x:oob}url")
        st, _, got = req(port, "GET", path_of(u))
        check("the recipient downloads the file and the hash matches",
              st == 200 and base64.b64encode(hashlib.sha256(got).digest())
              .decode() == (h.text if h is not None else None), repr(st))
    check("the server logged the hold and the fetch",
          srv.wait_log(r"held for %s" % bob, 0, 5) is not None and
          srv.wait_log(r"was fetched", 0, 5) is not None)
    a.close()
    b.close()
    lt.stop()
    srv.stop()

    # -- expiry
    port2 = harness.free_ports(1)[0]
    s2 = server(port2, "file_expiry = 2; held_expiry = 8; "
                "cleanup_interval = 1;")
    s2.start()
    al, bo = add_users(s2, harness.unique("al"), harness.unique("bo"))
    c = ImClient(s2, al.split("@")[0], "pc")
    c.presence()
    iq, purl, auth, plain = slot(c, 4, name="plain.txt", srv=s2)
    put(port2, purl, auth, b"abcd")
    iq, purl, auth, held = slot(c, 4, name="held.txt", srv=s2)
    put(port2, purl, auth, b"efgh")
    c.message(bo, "here", extra="<x xmlns='jabber:x:oob'><url>%s</url></x>"
              % held)
    c.storage_barrier()

    def status(u):
        return req(port2, "HEAD", path_of(u))[0]
    check("an ordinary file is removed after file_expiry",
          harness.wait_for(lambda: status(plain) == 404, timeout=15),
          repr(status(plain)))
    check("a file held for an offline user outlives file_expiry",
          status(held) == 200, repr(status(held)))
    check("a held file nobody fetched is removed after held_expiry",
          harness.wait_for(lambda: status(held) == 404, timeout=20),
          repr(status(held)))
    c.close()


if __name__ == "__main__":
    harness.run_main(main)
