#!/usr/bin/python3
"""test_media_info.py - the file information service of distributed media
(doc/media.md): Metalink 4, Metalink/HTTP, peers, tokens, failure reports.

Checked:
  - slixmpp's xep_0363 uploads a file of several pieces; its Metalink
    (<file-url>.meta4, and the file URL with Accept:
    application/metalink4+xml) is RFC 5854's: the name, size, the SHA-256
    of the bytes and of each piece of the announced length (hashlib over
    the bytes uploaded), the server's URL at priority 1, a dynamic origin;
  - GET and HEAD of the file carry RFC 6249's Digest: SHA-256=<base64>
    and Link: <...meta4>; rel=describedby; type="application/metalink4+xml";
  - over XMPP (urn:parley:media:0 on upload.<host>, in its disco#info):
    a query by XEP-0300 hash answers an XEP-0447 <file-sharing> with the
    XEP-0446 metadata and the server's url-data; an unknown hash is
    item-not-found, a malformed one bad-request;
  - a peer (slixmpp, raw iq) announces the file: it gets a token key; it
    then appears in the Metalink (priority 2), in Link: rel=duplicate and
    in the XMPP sources, each time with a token that verifies with that
    key as a peer would check it (HMAC-SHA256, file hash, expiry), and in
    parleyctl media status; when its session ends it is gone from all;
  - a failure report (piece index, the peer's URL with its token) is
    counted (media_reports), demotes the peer (ban_reports = 2: listed
    after the others), a second one bans it (media_peer_bans): gone, and
    its account's new announce forbidden; parleyctl (and the HTTP admin
    API) show the reports;
  - an explicit withdraw removes a peer; bad announces are refused;
  - the piece hashes survive a restart of parleyd, and a file that lost
    them (or was stored before they were kept) is hashed again;
  - aria2 (Debian's aria2c) downloads the file from the Metalink with
    --check-integrity=true (piece verification), server only, and gets
    the same bytes; with a wrong piece hash in the Metalink it fails.
Run with /usr/bin/python3; `scripts/run-tests media`.
"""

import asyncio
import base64
import hashlib
import hmac
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, note  # noqa: E402
from im_common import STEP, ImClient, LoopThread, add_users, PW  # noqa
from test_upload import req, path_of, slix_upload  # noqa: E402

NS_MEDIA = "urn:parley:media:0"
NS_ML = "{urn:ietf:params:xml:ns:metalink}"
NS_SFS = "urn:xmpp:sfs:0"
NS_META = "urn:xmpp:file:metadata:0"
NS_HASH = "urn:xmpp:hashes:2"
NS_URLD = "http://jabber.org/protocol/url-data"
NS_DI = "http://jabber.org/protocol/disco#info"
NS_ST = "urn:ietf:params:xml:ns:xmpp-stanzas"
C = "{jabber:client}"
PIECE = 262144
MODULES = ('"disco", "ping", "roster", "presence", "register", "session", '
           '"upload", "media"')


def server(port, media="ban_reports = 2; token_lifetime = 120;",
           modules=MODULES, extra="", register_extra=""):
    """parleyd with upload and media on an HTTP listener at port (the
    media scripts' server: test_media_get, _share and _agents too)."""
    return harness.Server(
        listeners_extra='{ protocol = "http"; address = "127.0.0.1"; '
                        'port = %d; }' % port,
        host_extra="modules = [%s];" % modules,
        register_extra=register_extra,
        extra="upload: { url = \"http://127.0.0.1:%d\"; };\n"
              "media: { %s };\n%s" % (port, media, extra))


def metalink(port, path):
    """GET path.meta4: (status, headers, parsed root or None, bytes)."""
    st, h, body = req(port, "GET", path + ".meta4")
    try:
        root = ET.fromstring(body) if st == 200 else None
    except ET.ParseError:
        root = None
    return st, h, root, body


def ml_urls(root):
    """[(priority, url)] of a Metalink's file."""
    if root is None:
        return []
    return [(int(u.get("priority", "0")), u.text)
            for u in root.iter(NS_ML + "url")]


def hash_el(b64):
    return "<hash xmlns='%s' algo='sha-256'>%s</hash>" % (NS_HASH, b64)


def error_of(iq):
    e = iq.find(C + "error") if iq is not None else None
    if e is None:
        return None
    return next((x.tag.split("}")[1] for x in e if x.tag.startswith(
        "{%s}" % NS_ST) and not x.tag.endswith("}text")), None)


def b64url_decode(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def token_ok(url, key, sha):
    """Checks the token of a peer URL as a peer does (src/media/token.c):
    version 1, expiry in the future, HMAC-SHA256 with the file key over
    the label, version, file hash and expiry."""
    q = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    tok = (q.get("token") or [""])[0]
    try:
        raw = b64url_decode(tok)
    except (ValueError, TypeError):
        return False
    if len(raw) != 41 or raw[0] != 1:
        return False
    exp = int.from_bytes(raw[1:9], "big")
    mac = hmac.new(key, b"parley media token\0" + raw[0:1] + sha + raw[1:9],
                   hashlib.sha256).digest()
    return hmac.compare_digest(mac, raw[9:]) and exp >= time.time()


async def peer_session(srv, user, resource, xml_list, box):
    """A slixmpp session that sends each raw iq of xml_list (set) to the
    upload service and keeps the answers in box; returns the client, still
    connected."""
    import slixmpp
    c = slixmpp.ClientXMPP("%s/%s" % (user, resource), PW)
    c.ssl_context = harness.no_verify_context()
    c.use_ipv6 = False
    harness.slixmpp_without_channel_binding(c)
    started = asyncio.get_event_loop().create_future()
    c.add_event_handler("session_start",
                        lambda _: started.done() or started.set_result(1))
    c.connect((srv.host, srv.direct_port), use_ssl=True,
              force_starttls=False)
    await asyncio.wait_for(started, STEP * 2)
    for x in xml_list:
        iq = c.Iq()
        iq["type"] = "set"
        iq["to"] = "upload." + srv.domain
        iq.append(ET.fromstring(x))
        try:
            r = await iq.send(timeout=STEP)
            box.append(r.xml)
        except Exception as e:  # noqa: BLE001 - slixmpp IqError/IqTimeout
            box.append(getattr(getattr(e, "iq", None), "xml", None))
    return c


async def disconnect(c):
    c.disconnect(wait=0.5)
    await asyncio.sleep(0)


def announce_xml(b64, url, maxc=3):
    return ("<announce xmlns='%s' max-concurrent='%d'>%s"
            "<sources xmlns='%s'><url-data xmlns='%s' target='%s'/>"
            "</sources></announce>" % (NS_MEDIA, maxc, hash_el(b64), NS_SFS,
                                       NS_URLD, url))


def run_aria2(meta_path, outdir, timeout=120):
    exe = shutil.which("aria2c")
    if not exe:
        return None, "aria2c not installed"
    try:
        p = harness.spawn("aria2c", [
            exe, "--check-integrity=true", "--follow-metalink=mem",
            "--dir", outdir, "--allow-overwrite=true", "--max-tries=2",
            "--retry-wait=1", "--connect-timeout=5", "--timeout=20",
            "--console-log-level=warn", "--summary-interval=0",
            "--metalink-file", meta_path],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        out, _ = p.communicate(timeout=timeout)
        harness.untrack(p)
        return p.returncode, out.decode("utf-8", "replace")
    except subprocess.TimeoutExpired:
        harness.stop_group(p)
        return None, "aria2c timed out"


def main():
    port = harness.free_ports(1)[0]
    srv = server(port)
    srv.start()
    alice, peer, peer2, carol = add_users(
        srv, harness.unique("alice"), harness.unique("peer"),
        harness.unique("peertwo"), harness.unique("carol"))
    up = "upload." + srv.domain

    # -- an upload by a real client, several pieces
    data = os.urandom(5 * PIECE + 12345)
    lt = LoopThread()
    try:
        url = lt.run(slix_upload(srv, alice, data, "firmware.img"),
                     timeout=60)
    except Exception as e:  # noqa: BLE001 - reported
        url = None
        note("slixmpp upload: %r" % e)
    check("slixmpp's xep_0363 uploads a file", bool(url), repr(url))
    if not url:
        return
    path = path_of(url)
    sha = hashlib.sha256(data).digest()
    b64 = base64.b64encode(sha).decode()
    hexd = sha.hex()

    # -- the Metalink (RFC 5854)
    st, h, root, body = metalink(port, path)
    check("GET <file>.meta4 is a Metalink 4 document",
          st == 200 and root is not None and
          root.tag == NS_ML + "metalink" and
          h.get("content-type") == "application/metalink4+xml",
          "%s %s %r" % (st, h.get("content-type"), body[:200]))
    f = root.find(NS_ML + "file") if root is not None else None
    check("its <file> names the file and its size",
          f is not None and f.get("name") == "firmware.img" and
          f.findtext(NS_ML + "size") == str(len(data)),
          body[:400].decode("utf-8", "replace"))
    wh = f.find(NS_ML + "hash") if f is not None else None
    check("its <hash type='sha-256'> is the SHA-256 of the bytes",
          wh is not None and wh.get("type") == "sha-256" and
          wh.text == hexd, repr(wh.text if wh is not None else None))
    pc = f.find(NS_ML + "pieces") if f is not None else None
    plen = int(pc.get("length", "0")) if pc is not None else 0
    phs = [x.text for x in pc.findall(NS_ML + "hash")] if pc is not None \
        else []
    want = [hashlib.sha256(data[i:i + plen]).hexdigest()
            for i in range(0, len(data), plen)] if plen else []
    check("<pieces length='262144' type='sha-256'>: the hash of each piece",
          pc is not None and pc.get("type") == "sha-256" and
          plen == PIECE and phs == want and len(phs) == 6,
          "length %s, %d hashes, %d wanted" % (plen, len(phs), len(want)))
    check("the server's URL at priority 1, the only source yet",
          ml_urls(root) == [(1, url)], repr(ml_urls(root)))
    org = root.find(NS_ML + "origin") if root is not None else None
    check("a dynamic <origin> naming the document",
          org is not None and org.get("dynamic") == "true" and
          org.text == url + ".meta4", repr(org.text if org is not None
                                            else None))
    st, h2, body2 = req(port, "GET", path,
                        headers={"Accept": "application/metalink4+xml"})
    check("Accept: application/metalink4+xml on the file URL: the Metalink",
          st == 200 and h2.get("content-type") ==
          "application/metalink4+xml" and hexd.encode() in body2,
          "%s %s" % (st, h2.get("content-type")))

    # -- Metalink/HTTP (RFC 6249)
    st, h, got = req(port, "GET", path)
    digest = "SHA-256=" + b64
    link = h.get("link", "")
    check("GET: the bytes, Digest: SHA-256=<base64 of the file>",
          st == 200 and got == data and h.get("digest") == digest,
          "%s %s" % (st, h.get("digest")))
    check("GET: Link to the Metalink, rel=describedby with its type",
          "<%s.meta4>; rel=describedby; "
          "type=\"application/metalink4+xml\"" % url in link, repr(link))
    st, h, _ = req(port, "HEAD", path)
    check("HEAD carries the same Digest and Link",
          st == 200 and h.get("digest") == digest and
          ".meta4>; rel=describedby" in h.get("link", ""), repr(h))
    st, h, got = req(port, "GET", path, headers={"Range": "bytes=0-99"})
    check("a range answer keeps the whole file's Digest",
          st == 206 and got == data[:100] and h.get("digest") == digest,
          "%s %s" % (st, h.get("digest")))

    # -- XMPP: disco, query by hash (XEP-0447 sources, XEP-0300 hash)
    a = ImClient(srv, alice.split("@")[0], "pc")
    iq = a.request("<query xmlns='%s'/>" % NS_DI, to=up)
    feats = [x.get("var") for x in iq.iter("{%s}feature" % NS_DI)] \
        if iq is not None else []
    check("upload.<host> lists urn:parley:media:0 in disco#info",
          NS_MEDIA in feats, repr(feats))

    def query():
        r = a.request("<query xmlns='%s'>%s</query>" % (NS_MEDIA,
                                                         hash_el(b64)), to=up)
        q = r.find("{%s}query" % NS_MEDIA) if r is not None else None
        fs = q.find("{%s}file-sharing" % NS_SFS) if q is not None else None
        return r, q, fs

    def targets(fs):
        return [u.get("target") for u in fs.iter("{%s}url-data" % NS_URLD)] \
            if fs is not None else []

    r, q, fs = query()
    fm = fs.find("{%s}file" % NS_META) if fs is not None else None
    hh = fm.find("{%s}hash" % NS_HASH) if fm is not None else None
    check("a query by hash answers XEP-0447 file-sharing with the metadata",
          fm is not None and fm.findtext("{%s}name" % NS_META) ==
          "firmware.img" and fm.findtext("{%s}size" % NS_META) ==
          str(len(data)) and hh is not None and hh.get("algo") ==
          "sha-256" and hh.text == b64 and
          q.get("metalink") == url + ".meta4",
          harness.tostr(r) if r is not None else "no answer")
    check("its sources: the server's url-data", targets(fs) == [url],
          repr(targets(fs)))
    other = base64.b64encode(hashlib.sha256(b"nothing").digest()).decode()
    r = a.request("<query xmlns='%s'>%s</query>" % (NS_MEDIA,
                                                     hash_el(other)), to=up)
    check("a query for an unknown hash is item-not-found",
          error_of(r) == "item-not-found", harness.tostr(r) if r is not None
          else "no answer")
    r = a.request("<query xmlns='%s'>%s</query>" % (NS_MEDIA,
                                                     hash_el("abc")), to=up)
    check("a malformed hash is bad-request", error_of(r) == "bad-request",
          harness.tostr(r) if r is not None else "no answer")

    # -- a peer announces itself (slixmpp)
    reports0 = srv.counter("media_reports") or 0
    bans0 = srv.counter("media_peer_bans") or 0
    purl = "http://127.0.0.1:%d/media/%s" % (harness.free_ports(1)[0], hexd)
    box = []
    try:
        pc1 = lt.run(peer_session(srv, peer, "box", [
            announce_xml(b64, purl),
            announce_xml(other, purl),
            announce_xml(b64, "ftp://example.org/x"),
        ], box), timeout=60)
    except Exception as e:  # noqa: BLE001 - reported
        pc1 = None
        note("slixmpp peer: %r" % e)
    key_el = box[0].find("{%s}key" % NS_MEDIA) if box and box[0] is not None \
        else None
    check("an announce is answered with the file's token key",
          key_el is not None and len(base64.b64decode(key_el.text)) == 32,
          repr([ET.tostring(x)[:300] if x is not None else None
                for x in box]))
    key = base64.b64decode(key_el.text) if key_el is not None else b""
    check("an announce of an unknown file is item-not-found",
          len(box) > 1 and error_of(box[1]) == "item-not-found",
          repr(box[1:2]))
    check("an announce with a URL that is not http(s) is bad-request",
          len(box) > 2 and error_of(box[2]) == "bad-request", repr(box[2:3]))
    st, h, root, _ = metalink(port, path)
    urls = ml_urls(root)
    peer_urls = [u for p, u in urls if p == 2]
    check("the peer appears in the Metalink at priority 2, after the server",
          len(urls) == 2 and urls[0] == (1, url) and len(peer_urls) == 1 and
          peer_urls[0].startswith(purl + "?token="), repr(urls))
    check("its token verifies with the key the peer got (file hash, expiry)",
          bool(peer_urls) and token_ok(peer_urls[0], key, sha),
          repr(peer_urls))
    st, h, _ = req(port, "HEAD", path)
    dup = re.findall(r"<([^>]*)>; rel=duplicate; pri=(\d+)",
                     h.get("link", ""))
    check("the peer appears in Link: rel=duplicate with pri=2 and a token",
          len(dup) == 1 and dup[0][0].startswith(purl + "?token=") and
          dup[0][1] == "2" and token_ok(dup[0][0], key, sha), repr(h))
    r, q, fs = query()
    t = targets(fs)
    check("the peer appears in the XMPP sources after the server",
          len(t) == 2 and t[0] == url and t[1].startswith(purl + "?token=")
          and token_ok(t[1], key, sha), repr(t))
    rc, out = srv.ctl("media", "status", path.split("/")[2])
    check("parleyctl media status shows the peer",
          rc == 0 and purl in out and peer.split("@")[0] in out and
          "firmware.img" in out, out[-600:])

    # -- failure reports: demoted at the first, banned at the second
    c = ImClient(srv, carol.split("@")[0], "tv")
    bad_src = peer_urls[0] if peer_urls else purl
    rep = ("<report xmlns='%s' piece='%%d' source='%s'>%s</report>"
           % (NS_MEDIA, bad_src.replace("&", "&amp;"), hash_el(b64)))
    r = c.request(rep % 3, "set", to=up)
    check("a failure report is accepted",
          r is not None and r.get("type") == "result",
          harness.tostr(r) if r is not None else "no answer")
    check("it is counted (media_reports)",
          harness.wait_for(lambda: (srv.counter("media_reports") or 0) ==
                           reports0 + 1, timeout=10),
          repr(srv.counter("media_reports")))
    st, h, root, _ = metalink(port, path)
    check("a reported peer is demoted: listed after, at priority 3",
          [p for p, u in ml_urls(root)] == [1, 3], repr(ml_urls(root)))
    r = c.request(rep % 99, "set", to=up)
    check("a report for a piece the file does not have is bad-request",
          error_of(r) == "bad-request", harness.tostr(r) if r is not None
          else "no answer")
    rc, out = srv.ctl("media", "status", b64)
    check("parleyctl media status (by hash) shows the report",
          rc == 0 and "failure reports: 1" in out and
          "piece 3 from %s: demoted" % purl in out and
          carol.split("@")[0] in out, out[-800:])

    # -- the peer goes offline: withdrawn
    if pc1 is not None:
        lt.run(disconnect(pc1))

    def peer_listed():
        _, _, rt, _ = metalink(port, path)
        return any(u.startswith(purl) for p, u in ml_urls(rt))
    check("when the peer's session ends it leaves the Metalink",
          harness.wait_for(lambda: not peer_listed(), timeout=15),
          repr(ml_urls(metalink(port, path)[2])))
    st, h, _ = req(port, "HEAD", path)
    check("and the Link fields", "rel=duplicate" not in h.get("link", ""),
          repr(h.get("link")))

    # -- a second peer: banned after two reports
    purl2 = "http://127.0.0.1:%d/p2/%s" % (harness.free_ports(1)[0], hexd)
    p2 = ImClient(srv, peer2.split("@")[0], "stb")
    r = p2.request(announce_xml(b64, purl2, 2), "set", to=up)
    check("a second peer announces (raw client)",
          r is not None and r.get("type") == "result",
          harness.tostr(r) if r is not None else "no answer")
    rep2 = ("<report xmlns='%s' piece='%%d' source='%s'>%s</report>"
            % (NS_MEDIA, purl2, hash_el(b64)))
    c.request(rep2 % 0, "set", to=up)
    r = c.request(rep2 % 1, "set", to=up)
    check("two reports ban it: counted (media_peer_bans)",
          r is not None and r.get("type") == "result" and
          harness.wait_for(lambda: (srv.counter("media_peer_bans") or 0) ==
                           bans0 + 1, timeout=10),
          repr(srv.counter("media_peer_bans")))
    check("a banned peer is no longer a source",
          not any(u.startswith(purl2) for p, u in
                  ml_urls(metalink(port, path)[2])),
          repr(ml_urls(metalink(port, path)[2])))
    p2b = ImClient(srv, peer2.split("@")[0], "other")
    r = p2b.request(announce_xml(b64, purl2, 2), "set", to=up)
    check("its account may not announce the file again (forbidden)",
          error_of(r) == "forbidden", harness.tostr(r) if r is not None
          else "no answer")
    rc, out = srv.ctl("media", "--json", "status", hexd)
    try:
        js = __import__("json").loads(out)
    except ValueError:
        js = {}
    check("parleyctl media --json: three reports, one ban, no peer",
          js.get("reports_total") == 3 and len(js.get("bans", [])) == 1 and
          js.get("peers") == [] and len(js.get("reports", [])) == 3 and
          js["reports"][-1].get("result") == "banned", out[-600:])

    # -- explicit withdraw
    purl3 = "http://127.0.0.1:%d/p3" % harness.free_ports(1)[0]
    r = a.request(announce_xml(b64, purl3, 1), "set", to=up)
    ok1 = any(u.startswith(purl3) for p, u in
              ml_urls(metalink(port, path)[2]))
    r = a.request("<withdraw xmlns='%s'>%s</withdraw>" % (NS_MEDIA,
                                                           hash_el(b64)),
                  "set", to=up)
    ok2 = not any(u.startswith(purl3) for p, u in
                  ml_urls(metalink(port, path)[2]))
    check("an announced peer that withdraws is listed, then gone",
          ok1 and ok2 and r is not None and r.get("type") == "result",
          "%s %s" % (ok1, ok2))
    r = a.request("<withdraw xmlns='%s'>%s</withdraw>" % (NS_MEDIA,
                                                           hash_el(b64)),
                  "set", to=up)
    check("withdrawing what was not announced is item-not-found",
          error_of(r) == "item-not-found", harness.tostr(r)
          if r is not None else "no answer")
    rc, out = srv.ctl("token", "create", "--read-only", "media-viewer")
    st, _, body = req(port, "GET", "/api/media/" + hexd,
                      headers={"Authorization": "Bearer " + out.strip()})
    try:
        jf = __import__("json").loads(body).get("file", {})
    except ValueError:
        jf = {}
    check("the HTTP admin API answers GET /api/media/<sha-256>",
          st == 200 and jf.get("id") == path.split("/")[2] and
          jf.get("reports_total") == 3, "%s %r" % (st, body[:300]))
    check("media_server_bytes counts what GETs sent",
          (srv.counter("media_server_bytes") or 0) >= len(data) + 100,
          repr(srv.counter("media_server_bytes")))
    for x in (a, c, p2, p2b):
        x.close()
    lt.stop()

    # -- the piece hashes are durable
    def pieces_now():
        _, _, rt, _ = metalink(port, path)
        pc = rt.find(NS_ML + "file/" + NS_ML + "pieces") \
            if rt is not None else None
        return [x.text for x in pc] if pc is not None else None

    srv.stop()
    check("parleyd restarts", srv.start(), "")
    check("after a restart the Metalink has the same piece hashes",
          pieces_now() == want, repr(pieces_now())[:200])
    # A file stored without its piece hashes (from before they were kept)
    # is hashed again after a start, off the loop.
    pfile = os.path.join(srv.dir, "var", "upload", srv.domain,
                         path.split("/")[2] + ".pieces")
    srv.stop()
    had = os.path.exists(pfile)
    if had:
        os.unlink(pfile)
    check("parleyd restarts without the file's .pieces", had and srv.start(),
          pfile)
    check("its piece hashes are computed again from the bytes",
          harness.wait_for(lambda: pieces_now() == want, timeout=30) and
          os.path.exists(pfile), repr(pieces_now())[:200])

    # -- aria2 downloads from the Metalink, verifying pieces
    d = tempfile.mkdtemp(prefix="parley-aria2-")
    mpath = os.path.join(d, "firmware.img.meta4")
    st, _, body = req(port, "GET", path + ".meta4")
    with open(mpath, "wb") as fh:
        fh.write(body)
    out_dir = os.path.join(d, "out")
    os.mkdir(out_dir)
    rc, out = run_aria2(mpath, out_dir)
    got = b""
    fp = os.path.join(out_dir, "firmware.img")
    if os.path.exists(fp):
        with open(fp, "rb") as fh:
            got = fh.read()
    check("aria2c --check-integrity downloads the file from the Metalink",
          rc == 0 and got == data, "rc %s, %d bytes: %s" % (
              rc, len(got), out[-600:]))
    # A Metalink with one wrong piece hash: aria2 must not accept it.
    bad_body = body.replace(want[2].encode(), ("0" * 64).encode())
    bad_path = os.path.join(d, "bad.meta4")
    with open(bad_path, "wb") as fh:
        fh.write(bad_body)
    out_bad = os.path.join(d, "bad")
    os.mkdir(out_bad)
    rc, out = run_aria2(bad_path, out_bad, timeout=90)
    check("aria2c refuses the file when a piece hash is wrong",
          bad_body != body and rc not in (0, None), "rc %s: %s" % (
              rc, out[-400:]))
    shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    harness.run_main(main)
