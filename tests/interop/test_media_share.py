#!/usr/bin/python3
"""test_media_share.py - peers serving files (doc/media.md "Peers"):
`parley share` (src/clients/cli/share.c on src/media/peer.c), <fetched/>
reports, `parleyctl push --fetch`.

Checked:
  - a file uploaded by slixmpp (xep_0363) and shared by `parley share`
    (--json) appears in its Metalink at priority 2 and in the XMPP
    sources (urn:parley:media:0 query), with a token;
  - from the peer's URL with that token: the whole file (200) and a
    range (206 with Content-Range), a HEAD; without a token 401, a token
    made with another key 403, a genuine but expired token (made here
    with the file key an announce of our own returned) 403, in
    Authorization: Bearer too; an unknown hash 404, POST 405;
  - with --max-peers 1 a second connection gets 503 with Retry-After: 1
    while the first is open;
  - SIGTERM: `parley share` withdraws (a "withdrawn" line), exits 0, and
    the peer is gone from the Metalink;
  - aria2 (Debian's aria2c, --check-integrity: piece verification)
    downloads from the Metalink that lists the server and a share, and the
    share's stats show bytes served (to aria2: nobody else asked);
  - aria2 as a peer source: the file aria2 downloaded is shared by
    another account's `parley share` (--max-rate 2000000), and a download
    from that peer's URL (token from the Metalink) gives the same bytes,
    no faster than the cap allows;
  - deleting a shared file: the share withdraws it (reason "deleted"),
    it leaves the Metalink, and the share ends with nothing left;
  - <fetched server-bytes peer-bytes/> from local users: counted
    (parley_media_fetched_total in /metrics), holders (reporters and live peers,
    one per account), the summed bytes and the peers' percentage in
    parleyctl media status --json and text and media list; garbage
    bad-request, an unknown file item-not-found;
  - parleyctl push --group G --fetch FILE (the file's id) delivers
    {"command":"fetch","hash","url","size"} to a parley-agent in G;
    --fetch of an unknown file fails, --fetch with a JSON payload too is
    a usage error.
Run with /usr/bin/python3; `scripts/run-tests media`.
"""

import base64
import hashlib
import hmac
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, note  # noqa: E402
from im_common import ImClient, LoopThread, add_users, PW  # noqa: E402
from test_upload import req, path_of, slix_upload  # noqa: E402
from test_media_info import (NS_MEDIA, hash_el, error_of, ml_urls,  # noqa
                             metalink, announce_xml)
from test_media_info import server as media_server  # noqa: E402
from agent_common import Agent, is_event  # noqa: E402

PIECE = 262144
MODULES = ('"disco", "ping", "roster", "presence", "register", "session", '
           '"upload", "media", "fleet"')


def server(port):
    return media_server(port, "token_lifetime = 120;", MODULES)


def make_token(key, sha, expires):
    """A version 1 token (doc/media.md "Tokens"), as the server makes
    them."""
    head = bytes([1]) + int(expires).to_bytes(8, "big")
    mac = hmac.new(key, b"parley media token\0" + head[0:1] + sha +
                   head[1:9], hashlib.sha256).digest()
    return base64.urlsafe_b64encode(head + mac).decode().rstrip("=")


def http_get(url, headers=None, method="GET"):
    """(status, headers dict, body) of one request on a new connection."""
    u = urllib.parse.urlsplit(url)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=15)
    try:
        c.request(method, u.path + ("?" + u.query if u.query else ""),
                  headers=headers or {})
        r = c.getresponse()
        body = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, body
    except (OSError, http.client.HTTPException) as e:
        return None, {}, repr(e).encode()
    finally:
        c.close()


PARLEY = harness._abs(os.environ.get(
    "PARLEY_CLI", os.path.join(os.path.dirname(harness._abs(os.environ.get(
        "PARLEYD", os.path.join(harness.BUILD, "parleyd")))), "parley")))


class Bg:
    """A parley command in the background (as test_cli.py's): stdout
    lines parsed as JSON, stderr lines kept; wait() for a line."""

    def __init__(self, srv, *args):
        argv = [PARLEY, "--server", srv.host, "--port",
                str(srv.starttls_port)] + list(args)
        self.p = harness.spawn("parley " + " ".join(args[-2:]), argv,
                               stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
        self.out, self.err, self.eof = [], [], set()
        self.cond = threading.Condition()
        for f, dst in ((self.p.stdout, self.out), (self.p.stderr, self.err)):
            threading.Thread(target=self._read, args=(f, dst),
                             daemon=True).start()

    def _read(self, f, dst):
        for ln in f:
            ln = ln.rstrip("\n")
            if dst is self.out:
                try:
                    ln = json.loads(ln)
                except ValueError:
                    ln = {"garbage": ln}
            with self.cond:
                dst.append(ln)
                self.cond.notify_all()
        with self.cond:
            self.eof.add(id(dst))
            self.cond.notify_all()

    def wait(self, pred, timeout=20):
        """The first stdout line matching pred, or None."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for ln in self.out:
                    if pred(ln):
                        return ln
                left = deadline - time.monotonic()
                if left <= 0 or id(self.out) in self.eof:
                    return None
                self.cond.wait(left)

    def term(self):
        harness._signal(self.p.pid, signal.SIGTERM)

    def stop(self, timeout=15):
        harness.untrack(self.p)
        return harness.stop_group(self.p, timeout)

    def end(self, timeout=30):
        """Waits for it to exit; its status or None."""
        try:
            rc = self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            rc = None
        harness.untrack(self.p)
        harness.stop_group(self.p, 0)
        return rc


def run_aria2(meta_path, outdir, extra=(), timeout=120):
    """aria2c on a Metalink with piece verification (as
    test_media_info.py's, with extra options): (exit status, output)."""
    exe = shutil.which("aria2c")
    if not exe:
        return None, "aria2c not installed"
    p = harness.spawn("aria2c", [
        exe, "--check-integrity=true", "--realtime-chunk-checksum=true",
        "--follow-metalink=mem",
        "--dir", outdir, "--allow-overwrite=true", "--max-tries=2",
        "--retry-wait=1", "--connect-timeout=5", "--timeout=20",
        "--console-log-level=warn", "--summary-interval=0"] + list(extra) +
        ["--metalink-file", meta_path],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        harness.stop_group(p)
        return None, "aria2c timed out"
    harness.untrack(p)
    return p.returncode, out.decode("utf-8", "replace")


def share(srv, user, *args, listen="127.0.0.1:0"):
    return Bg(srv, "--insecure", "--jid", user, "--password", PW,
              "--json", "share", "--listen", listen, *args)


def is_line(key):
    return lambda ln: isinstance(ln, dict) and key in ln


def peer_urls(port, path, base):
    _, _, root, _ = metalink(port, path)
    return [(p, u) for p, u in ml_urls(root) if u.startswith(base)]


def main():
    port = harness.free_ports(1)[0]
    srv = server(port)
    if not srv.start():
        harness.finish()
        return
    alice, peer, peer2, carol = add_users(
        srv, harness.unique("alice"), harness.unique("peer"),
        harness.unique("peertwo"), harness.unique("carol"))
    up = "upload." + srv.domain
    work = tempfile.mkdtemp(prefix="parley-share-")

    data = os.urandom(16 * PIECE + 4321)
    lt = LoopThread()
    try:
        url = lt.run(slix_upload(srv, alice, data, "video.ts"), timeout=60)
    except Exception as e:  # noqa: BLE001 - reported
        url = None
        note("slixmpp upload: %r" % e)
    lt.stop()
    check("slixmpp uploads the file", bool(url), repr(url))
    if not url:
        return
    path = path_of(url)
    fid = path.split("/")[2]
    sha = hashlib.sha256(data).digest()
    b64 = base64.b64encode(sha).decode()
    hexd = sha.hex()
    fa = os.path.join(work, "a.ts")
    with open(fa, "wb") as fh:
        fh.write(data)

    # -- a file the server does not have, and one of another size
    wrong = os.path.join(work, "wrong.bin")
    with open(wrong, "wb") as fh:
        fh.write(b"not on the server")
    b = share(srv, peer, wrong)
    rc = b.end(60)
    check("parley share of a file the server lacks fails (item-not-found)",
          rc == 6 and b.wait(lambda ln: isinstance(ln, dict) and
                             ln.get("error") == "item-not-found", 1),
          "rc %s %r %r" % (rc, b.out, b.err))

    # -- share A: one download at a time
    a = share(srv, peer, "--max-peers", "1", fa)
    sh = a.wait(is_line("shared"), 60)
    check("parley share says it shares the file (hash, size, URL)",
          sh is not None and sh["shared"]["hash"] == hexd and
          sh["shared"]["size"] == len(data) and
          sh["shared"]["url"].endswith("/m/" + hexd),
          "%r %r" % (a.out, a.err))
    if sh is None:
        a.stop()
        return
    base = sh["shared"]["url"]
    listed = peer_urls(port, path, base)
    check("the share is in the Metalink at priority 2 with a token",
          len(listed) == 1 and listed[0][0] == 2 and
          listed[0][1].startswith(base + "?token="), repr(listed))
    purl = listed[0][1] if listed else base
    token = urllib.parse.parse_qs(urllib.parse.urlsplit(purl).query).get(
        "token", [""])[0]
    c = ImClient(srv, carol.split("@")[0], "tv")
    r = c.request("<query xmlns='%s'>%s</query>" % (NS_MEDIA, hash_el(b64)),
                  to=up)
    targets = [u.get("target") for u in r.iter(
        "{http://jabber.org/protocol/url-data}url-data")] \
        if r is not None else []
    check("the share is in the XMPP sources, after the server",
          len(targets) == 2 and targets[0] == url and
          targets[1].startswith(base + "?token="), repr(targets))

    st, h, body = http_get(purl)
    check("GET of the peer URL with its token: the file (200)",
          st == 200 and body == data and
          h.get("accept-ranges") == "bytes" and
          h.get("content-length") == str(len(data)),
          "%s %r %d" % (st, h, len(body)))
    st, h, body = http_get(purl, {"Range": "bytes=%d-%d" % (PIECE,
                                                            2 * PIECE - 1)})
    check("a Range: 206 with that piece and Content-Range",
          st == 206 and body == data[PIECE:2 * PIECE] and
          h.get("content-range") == "bytes %d-%d/%d" % (
              PIECE, 2 * PIECE - 1, len(data)), "%s %r" % (st, h))
    st, h, body = http_get(purl, {"Range": "bytes=-100"})
    check("a suffix Range: the last 100 bytes",
          st == 206 and body == data[-100:], "%s %r" % (st, h))
    st, h, body = http_get(purl, {"Range": "bytes=%d-" % len(data)})
    check("a Range past the end: 416 with Content-Range: bytes */size",
          st == 416 and h.get("content-range") == "bytes */%d" % len(data),
          "%s %r" % (st, h))
    st, h, body = http_get(base, {"Authorization": "Bearer " + token},
                           method="HEAD")
    check("HEAD with the token as Authorization: Bearer",
          st == 200 and body == b"" and
          h.get("content-length") == str(len(data)), "%s %r" % (st, h))
    st, h, _ = http_get(base)
    check("without a token: 401 with WWW-Authenticate",
          st == 401 and "bearer" in h.get("www-authenticate", "").lower(),
          "%s %r" % (st, h))
    st, _, _ = http_get(base + "?token=" + make_token(
        os.urandom(32), sha, time.time() + 100))
    check("a token made with another key: 403", st == 403, repr(st))
    # The file key, from an announce of our own (then withdrawn).
    r = c.request(announce_xml(b64, "http://127.0.0.1:9/x", 1), "set",
                  to=up)
    k = r.find("{%s}key" % NS_MEDIA) if r is not None else None
    key = base64.b64decode(k.text) if k is not None else b""
    c.request("<withdraw xmlns='%s'>%s</withdraw>" % (NS_MEDIA, hash_el(b64)),
              "set", to=up)
    good = make_token(key, sha, time.time() + 100)
    st, _, body = http_get(base + "?token=" + good)
    check("a token made here with the file key works (the check is "
          "the peer's own)", len(key) == 32 and st == 200 and body == data,
          repr(st))
    expired = make_token(key, sha, time.time() - 10)
    st, _, _ = http_get(base + "?token=" + expired)
    st2, _, _ = http_get(base, {"Authorization": "Bearer " + expired})
    check("a genuine but expired token: 403 (query and Bearer)",
          st == 403 and st2 == 403, "%s %s" % (st, st2))
    st, _, _ = http_get(base[:-64] + "0" * 64 + "?token=" + token)
    check("an unknown hash: 404", st == 404, repr(st))
    st, h, _ = http_get(purl, method="POST")
    check("POST: 405 with Allow", st == 405 and "GET" in h.get("allow", ""),
          "%s %r" % (st, h))

    # max-peers 1: a second connection is busy while one is open
    u = urllib.parse.urlsplit(purl)
    held = http.client.HTTPConnection(u.hostname, u.port, timeout=15)
    held.request("GET", u.path + "?" + u.query,
                  headers={"Range": "bytes=0-9"})
    r1 = held.getresponse()
    first = r1.read()
    st, h, _ = http_get(purl)
    check("--max-peers 1: a second download gets 503 with Retry-After: 1",
          first == data[:10] and st == 503 and h.get("retry-after") == "1",
          "%s %r" % (st, h))
    held.request("GET", u.path + "?" + u.query,
                  headers={"Range": "bytes=10-19"})
    r1 = held.getresponse()
    check("the first connection is kept alive meanwhile",
          r1.status == 206 and r1.read() == data[10:20], repr(r1.status))
    held.close()

    stats = a.wait(lambda ln: is_line("stats")(ln) and
                   ln["stats"]["busy"] >= 1, 15)
    # 200 twice, 206 four times, HEAD; 401 once, 403 three times; 503
    want_bytes = 2 * len(data) + PIECE + 100 + 20
    check("the share's stats count bytes, requests, refusals, busy",
          stats is not None and stats["stats"]["bytes"] == want_bytes and
          stats["stats"]["requests"] == 7 and
          stats["stats"]["refused"] == 4 and stats["stats"]["busy"] == 1,
          "%r, %d bytes expected" % (stats, want_bytes))

    a.term()
    wd = a.wait(is_line("withdrawn"), 20)
    rc = a.end(20)
    check("SIGTERM: the share withdraws the file and exits 0",
          wd is not None and wd["withdrawn"]["reason"] == "stopped" and
          wd["withdrawn"]["confirmed"] and rc == 0,
          "rc %s %r" % (rc, a.out[-3:]))
    check("and it is gone from the Metalink",
          peer_urls(port, path, base) == [], repr(ml_urls(
              metalink(port, path)[2])))
    check("and its port is closed", http_get(purl)[0] is None, "")

    # -- share B and aria2 from the Metalink (server and peer)
    fb = os.path.join(work, "b.ts")
    with open(fb, "wb") as fh:
        fh.write(data)
    # On another loopback address: aria2 counts connections per host.
    bsh = share(srv, peer, "--max-peers", "8", fb, listen="127.0.0.2:0")
    sh = bsh.wait(is_line("shared"), 60)
    base_b = sh["shared"]["url"] if sh else "-"
    check("a second share is listed", sh is not None and
          len(peer_urls(port, path, base_b)) == 1, repr(bsh.err))
    mdir = os.path.join(work, "aria2")
    os.mkdir(mdir)
    mpath = os.path.join(mdir, "video.ts.meta4")
    st, _, mbody = req(port, "GET", path + ".meta4")
    with open(mpath, "wb") as fh:
        fh.write(mbody)
    out_dir = os.path.join(mdir, "out")
    os.mkdir(out_dir)
    before = bsh.wait(is_line("stats"), 10)
    before = before["stats"]["bytes"] if before else 0
    # Two connections (the second takes half of what the first has left,
    # at least 2 MiB of the 4 MiB), one per source
    # in the Metalink's order: the server and the share both serve it.
    rc, out = run_aria2(mpath, out_dir, extra=[
        "--split=2", "--min-split-size=1M", "--max-connection-per-server=1",
        "--uri-selector=inorder", "--max-download-limit=2M"])
    got = b""
    fp = os.path.join(out_dir, "video.ts")
    if os.path.exists(fp):
        with open(fp, "rb") as fh:
            got = fh.read()
    check("aria2c --check-integrity downloads from the Metalink listing the "
          "server and the share", rc == 0 and got == data and
          base_b.encode() in mbody, "rc %s, %d bytes: %s" % (
              rc, len(got), out[-600:]))
    served = bsh.wait(lambda ln: is_line("stats")(ln) and
                      ln["stats"]["bytes"] > before, 10)
    check("the share's stats show bytes served to aria2",
          served is not None, "before %d: %r" % (before, bsh.out[-2:]))

    # -- aria2 as a peer source: what it downloaded, shared by parley
    csh = share(srv, peer2, "--max-peers", "2", "--max-rate", "2000000",
                fp) if got == data else None
    sh = csh.wait(is_line("shared"), 60) if csh else None
    base_c = sh["shared"]["url"] if sh else "-"
    lc = peer_urls(port, path, base_c)
    t0 = time.monotonic()
    st, _, body = http_get(lc[0][1]) if lc else (None, {}, b"")
    took = time.monotonic() - t0
    check("the file aria2 downloaded, shared by parley share: a download "
          "from that peer matches", st == 200 and body == data,
          "%s %r" % (st, lc))
    # 4.2 MB at 2 MB/s, less a burst of 0.2 MB: 2 s at least
    check("--max-rate 2000000 holds the download to the cap",
          took >= 1.8, "%.2f s" % took)

    # -- deleting the shared file withdraws it
    os.unlink(fb)
    wd = bsh.wait(is_line("withdrawn"), 15)
    check("deleting the file: the share withdraws it (reason deleted)",
          wd is not None and wd["withdrawn"]["reason"] == "deleted" and
          wd["withdrawn"]["confirmed"], repr(bsh.out[-3:]))
    check("and it leaves the Metalink",
          harness.wait_for(lambda: not peer_urls(port, path, base_b), 10),
          repr(ml_urls(metalink(port, path)[2])))
    rc = bsh.end(20)
    check("with nothing left to share, parley share ends (0)", rc == 0,
          repr(rc))

    # -- <fetched/> reports
    fetched = "<fetched xmlns='%s' server-bytes='%%s' peer-bytes='%%s'>%s" \
              "</fetched>" % (NS_MEDIA, hash_el(b64))
    al = ImClient(srv, alice.split("@")[0], "stb")
    r1 = al.request(fetched % (1000, 3000), "set", to=up)
    r2 = c.request(fetched % (len(data), 0), "set", to=up)
    r3 = c.request(fetched % (0, len(data)), "set", to=up)
    check("<fetched/> reports are accepted",
          all(x is not None and x.get("type") == "result"
              for x in (r1, r2, r3)),
          [harness.tostr(x) if x is not None else None for x in (r1, r2, r3)])
    bad = [al.request(fetched % args, "set", to=up) for args in
           (("x", "1"), ("-1", "0"), ("1", ""), ("9" * 16, "0"),
            (str(len(data) * 100), "0"))]
    check("garbage or absurd byte counts are bad-request",
          all(error_of(x) == "bad-request" for x in bad),
          [error_of(x) for x in bad])
    nb = base64.b64encode(hashlib.sha256(b"nothing").digest()).decode()
    r = al.request("<fetched xmlns='%s' server-bytes='1' peer-bytes='1'>%s"
                   "</fetched>" % (NS_MEDIA, hash_el(nb)), "set", to=up)
    check("a report for an unknown file is item-not-found",
          error_of(r) == "item-not-found", repr(error_of(r)))
    rc, out = srv.ctl("media", "--json", "status", fid)
    try:
        js = json.loads(out)
    except ValueError:
        js = {}
    sb, pb = 1000 + len(data), 3000 + len(data)
    # holders: alice and carol (reports), peer2 (live share); one each
    check("parleyctl media status --json: fetched, holders, bytes, share",
          js.get("fetched") == 3 and js.get("holders") == 3 and
          js.get("client_server_bytes") == sb and
          js.get("client_peer_bytes") == pb and
          abs(js.get("peer_percent", -1) - 100.0 * pb / (sb + pb)) < 0.01,
          out[-700:])
    rc, out = srv.ctl("media", "status", hexd)
    check("parleyctl media status (text) shows holders and the peers' share",
          rc == 0 and "holders: 3 (3 fetched reports: %d bytes from the "
          "server, %d from peers, %.1f%% from peers)" % (
              sb, pb, 100.0 * pb / (sb + pb)) in out, out[-700:])
    rc, out = srv.ctl("media", "list")
    check("parleyctl media list shows the holders",
          rc == 0 and "3 holders" in out and fid in out, out[-400:])
    st, _, mt = req(port, "GET", "/metrics")
    check("/metrics counts them (parley_media_fetched_total)",
          re.search(rb"^parley_media_fetched_total 3$", mt, re.M)
          is not None, repr(re.findall(rb"parley_media_fetched.*", mt)))

    # -- parleyctl push --fetch to a group
    agent = Agent(srv, "02:00:5e:77:00:01").start()
    ok = agent.wait(is_event("connected"), 60)
    check("a parley-agent connects", ok is not None, "")
    rc, out = srv.ctl("group", "add", "stb", agent.mac)
    rc, out = srv.ctl("push", "--group", "stb", "--ttl", "60", "--fetch",
                      fid)
    pid = out.strip()
    ev = agent.wait(is_event("payload", id="push-" + pid), 30) \
        if rc == 0 else None
    want = {"command": "fetch", "hash": hexd, "url": url, "size": len(data)}
    try:
        body = json.loads(ev["json"]) if ev else None
    except (ValueError, KeyError, TypeError):
        body = None
    check("parleyctl push --group --fetch FILE delivers the fetch command",
          rc == 0 and body == want, "rc %s %r %r" % (rc, out, ev))
    rc2, out2 = srv.ctl("push", "--group", "stb", "--fetch", "0" * 64)
    rc3, out3 = srv.ctl("push", "--group", "stb", "--fetch", fid, "{}")
    check("--fetch of an unknown file fails (1); with a payload too, usage "
          "(2)", rc2 == 1 and rc3 == 2, "%s %r / %s" % (rc2, out2, rc3))
    agent.stop()

    if csh:
        csh.term()
        csh.end(20)
    for x in (c, al):
        x.close()
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    harness.run_main(main)
