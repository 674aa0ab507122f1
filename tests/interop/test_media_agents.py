#!/usr/bin/python3
"""test_media_agents.py - distributed media between real parley-agent
processes (issue 17; doc/media.md "The agent"): the head-end pushes a
"fetch" command, devices download from the server and from each other,
verify every piece, serve what they hold, and report what failed.

Agents run with their own cache directories and peer servers on
127.0.0.1 (--cache, --serve 127.0.0.1:0).  Checked:
  - a push of {"command": "fetch", "hash": HEX} to one agent: it
    downloads from the server alone (no peer yet), the answer says so,
    the file in its cache is the upload, and it is then announced as a
    peer (listed in the Metalink with a token);
  - its peer server answers a GET of the file only with the token the
    server issued: none 401, forged 403; with it, a Range gets 206 and
    the right bytes;
  - a second agent's fetch uses the server and the first agent at once
    (bytes from peers > 0, the sum is the file) and also becomes a peer;
  - a cache hit: the same command again is answered "cached" and the
    server sends no byte more;
  - a peer serving corrupted pieces (a stand-in HTTP server announced
    from a session of its own, listed first): the piece fails its hash,
    the peer is banned and reported (parleyctl media status shows the
    report and the ban), the download is still right;
  - a peer that disappears mid-transfer (a stand-in that sends half a
    piece, closes and stops listening): the download finishes from the
    server, right, and the answer shows the source lost;
  - an agent whose cached file is deleted withdraws it (gone from the
    Metalink), one stopped with SIGTERM withdraws everything;
  - an unknown hash is answered failed, a bad command bad-request.
Run with /usr/bin/python3; `scripts/run-tests media_agents`.
"""

import base64
import hashlib
import http.client
import http.server
import json
import os
import shutil
import socketserver
import sys
import threading
import time
import urllib.parse
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, note  # noqa: E402
from agent_common import Agent, is_event  # noqa: E402
from im_common import LoopThread, add_users  # noqa: E402
from test_upload import req, path_of, slix_upload  # noqa: E402
from test_media_info import (announce_xml, metalink, ml_urls,  # noqa: E402
                             peer_session, disconnect)
from test_media_info import server as media_server  # noqa: E402

PIECE = 262144
SIZE = 24 * PIECE + 777  # 25 pieces
MODULES = ('"disco", "ping", "roster", "presence", "register", "session", '
           '"offline", "upload", "media", "fleet"')


def server(port):
    return media_server(port, "token_lifetime = 120;", MODULES,
                        "fleet: { max_targets = 60; };",
                        "per_ip_per_minute = 1000;")


def push(srv, devices, payload):
    """parleyctl push to devices; returns the push id or None."""
    rc, out = srv.ctl("push", "--device", ",".join(devices),
                      json.dumps(payload))
    return out.strip() if rc == 0 else None


def answer_of(agent, timeout=90):
    """The agent's answer to a fetch command (its "reply" event)."""
    ev = agent.wait(lambda e: e.get("event") == "reply" and
                    e.get("reply", {}).get("command") == "fetch", timeout)
    return ev["reply"] if ev else None


def media_status(srv, path):
    rc, out = srv.ctl("media", "--json", "status", path.split("/")[2])
    try:
        return json.loads(out) if rc == 0 else {}
    except ValueError:
        return {}


class BadPeer(http.server.BaseHTTPRequestHandler):
    """Serves the file with Range, every piece corrupted (its first 16
    bytes inverted): whatever it is asked for fails its hash."""
    data = b""
    served = 0

    def log_message(self, *a):
        pass

    def do_GET(self):
        body = bytearray(self.data)
        for a in range(0, len(body), PIECE):
            body[a:a + 16] = bytes(x ^ 0xFF for x in body[a:a + 16])
        rng = self.headers.get("Range", "")
        lo, hi = 0, len(body) - 1
        if rng.startswith("bytes="):
            x, _, y = rng[6:].partition("-")
            lo = int(x) if x else len(body) - int(y)
            hi = int(y) if x and y else len(body) - 1
        part = bytes(body[lo:hi + 1])
        self.send_response(206 if rng else 200)
        if rng:
            self.send_header("Content-Range", "bytes %d-%d/%d"
                             % (lo, hi, len(body)))
        self.send_header("Content-Length", str(len(part)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        self.wfile.write(part)
        BadPeer.served += 1


class CutPeer(BadPeer):
    """Sends half of what it is asked for, closes, and stops listening: a
    peer that goes away mid-transfer."""
    cut = 0
    srv = None

    def do_GET(self):
        rng = self.headers.get("Range", "bytes=0-")
        x, _, y = rng[6:].partition("-")
        lo = int(x or 0)
        hi = int(y) if y else len(self.data) - 1
        self.send_response(206)
        self.send_header("Content-Range", "bytes %d-%d/%d"
                         % (lo, hi, len(self.data)))
        self.send_header("Content-Length", str(hi - lo + 1))
        self.end_headers()
        self.wfile.write(self.data[lo:lo + (hi - lo + 1) // 2])
        self.wfile.flush()
        self.close_connection = True
        if CutPeer.cut == 0:
            CutPeer.cut = 1
            threading.Thread(target=CutPeer.srv.shutdown,
                             daemon=True).start()
            CutPeer.srv.socket.close()


class Threaded(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


def in_cache(agent_dir, hexd):
    p = os.path.join(agent_dir, hexd)
    try:
        with open(p, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest() == hexd
    except OSError:
        return False


def main():
    port = harness.free_ports(1)[0]
    srv = server(port)
    if not srv.start():
        harness.finish()
    alice, badpeer, gonepeer = add_users(srv, harness.unique("alice"),
                                         harness.unique("badpeer"),
                                         harness.unique("gonepeer"))
    data = os.urandom(SIZE)
    sha = hashlib.sha256(data).digest()
    hexd, b64 = sha.hex(), base64.b64encode(sha).decode()
    lt = LoopThread()
    try:
        url = lt.run(slix_upload(srv, alice, data, "video.ts"), timeout=60)
    except Exception as e:  # noqa: BLE001 - reported
        url = None
        note("slixmpp upload: %r" % e)
    check("a file of 25 pieces is uploaded", bool(url), repr(url))
    if not url:
        harness.finish()
    path = path_of(url)

    def agent(n, extra=()):
        d = os.path.join(srv.dir, "cache%d" % n)
        a = Agent(srv, "02:00:00:00:17:%02x" % n,
                  extra=["--cache", d, "--serve", "127.0.0.1:0"] +
                  list(extra))
        a.cache = d
        return a.start()

    def peers_listed():
        _, _, root, _ = metalink(port, path)
        return [u for p, u in ml_urls(root) if p > 1]

    # -- the first device: the server alone
    a1 = agent(1)
    check("agent 1 connects",
          a1.wait(is_event("connected"), 30) is not None, a1.log_text()[-800:])
    push(srv, [a1.localpart], {"command": "fetch", "hash": hexd})
    r1 = answer_of(a1)
    res = (r1 or {}).get("result", {})
    check("agent 1 answers the fetch: ok, from the server alone",
          r1 is not None and r1.get("status") == "ok" and
          res.get("from_server") == SIZE and res.get("from_peers") == 0 and
          res.get("cached") is False, repr(r1)[:600])
    check("its cache holds the upload, named by its SHA-256",
          in_cache(a1.cache, hexd), repr(os.listdir(a1.cache)
                                         if os.path.isdir(a1.cache) else ""))
    check("it is then a peer: listed in the Metalink with a token",
          harness.wait_for(lambda: len(peers_listed()) == 1, 20) and
          "?token=" in peers_listed()[0], repr(peers_listed()))
    purl = peers_listed()[0] if peers_listed() else "http://127.0.0.1:1/m/x"

    # -- its peer server: tokens
    u = urllib.parse.urlsplit(purl)

    def peer_get(target, headers=None):
        c = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
        try:
            c.request("GET", target, headers=headers or {})
            r = c.getresponse()
            return r.status, r.read()
        except OSError as e:
            return None, repr(e).encode()
        finally:
            c.close()
    st, _ = peer_get(u.path)
    check("the agent's peer server refuses a GET without token (401)",
          st == 401, repr(st))
    tok = urllib.parse.parse_qs(u.query).get("token", [""])[0]
    forged = tok[:-2] + ("AA" if not tok.endswith("AA") else "BB")
    st, _ = peer_get(u.path + "?token=" + forged)
    check("and a forged token (403)", st == 403, repr(st))
    st, body = peer_get(u.path + "?" + u.query,
                        {"Range": "bytes=%d-%d" % (PIECE, 2 * PIECE - 1)})
    check("with the server's token a Range gets 206 and the right bytes",
          st == 206 and body == data[PIECE:2 * PIECE], repr(st))

    # -- the second device: server and peer at once
    a2 = agent(2)
    a2.wait(is_event("connected"), 30)
    push(srv, [a2.localpart], {"command": "fetch", "hash": hexd})
    r2 = answer_of(a2)
    res = (r2 or {}).get("result", {})
    check("agent 2 downloads from the server and agent 1 at once",
          r2 is not None and r2.get("status") == "ok" and
          res.get("from_peers", 0) > 0 and
          res.get("from_peers", 0) + res.get("from_server", 0) == SIZE,
          repr(r2)[:800])
    check("its copy is right", in_cache(a2.cache, hexd), "")
    check("it becomes a peer too (two listed)",
          harness.wait_for(lambda: len(peers_listed()) == 2, 20),
          repr(peers_listed()))

    # -- a cache hit: nothing from the network
    sent0 = media_status(srv, path).get("server_bytes")
    a1.set_mark()
    push(srv, [a1.localpart], {"command": "fetch", "hash": hexd})
    r = answer_of(a1)
    check("the same fetch again is a cache hit",
          r is not None and r.get("status") == "ok" and
          r.get("result", {}).get("cached") is True, repr(r)[:400])
    check("and the server sent no byte more",
          media_status(srv, path).get("server_bytes") == sent0,
          "%r -> %r" % (sent0, media_status(srv, path).get("server_bytes")))

    # -- a peer serving a corrupted piece
    BadPeer.data = data
    hs = Threaded(("127.0.0.1", 0), BadPeer)
    threading.Thread(target=hs.serve_forever, daemon=True).start()
    bad_url = "http://127.0.0.1:%d/m/%s" % (hs.server_address[1], hexd)
    box = []
    bp = lt.run(peer_session(srv, badpeer, "tv", [announce_xml(b64, bad_url,
                                                               8)], box),
                timeout=30)
    check("a stand-in peer that corrupts every piece is announced",
          any(bad_url in x for x in peers_listed()), repr(peers_listed()))
    a3 = agent(3, ["--max-fetches", "1"])
    a3.wait(is_event("connected"), 30)
    push(srv, [a3.localpart], {"command": "fetch", "hash": hexd})
    r3 = answer_of(a3)
    res = (r3 or {}).get("result", {})
    bad = a3.seen(is_event("piece-bad"))
    check("the bad peer was asked for pieces", BadPeer.served > 0,
          "it served no request")
    check("agent 3's download is right despite the bad peer",
          r3 is not None and r3.get("status") == "ok" and
          in_cache(a3.cache, hexd), repr(r3)[:600])
    check("the bad piece was detected and reported",
          any(str(hs.server_address[1]) in
                                     (e.get("source") or "") for e in bad),
          repr(bad)[:400])
    srcs = res.get("sources", [])
    check("the bad peer is banned in the answer",
          any(str(hs.server_address[1]) in s["url"]
                                     and s["banned"] for s in srcs),
          repr(srcs)[:600])

    def banned():
        s = media_status(srv, path)
        return s.get("reports") and any(
            badpeer.split("@")[0] in json.dumps(b) for b in s.get("bans", []))
    check("the server got the report and banned the peer's account",
          harness.wait_for(banned, 20),
          json.dumps(media_status(srv, path))[:800])
    lt.run(disconnect(bp))
    hs.shutdown()

    # -- agents stopped with SIGTERM withdraw
    for a in (a1, a2, a3):
        a.stop()
    check("agents stopped with SIGTERM withdraw what they served",
          harness.wait_for(lambda: len(peers_listed()) == 0, 20),
          repr(peers_listed()))

    # -- a peer that disappears mid-transfer: half a piece, then gone
    CutPeer.data = data
    cs = Threaded(("127.0.0.1", 0), CutPeer)
    CutPeer.srv = cs
    threading.Thread(target=cs.serve_forever, daemon=True).start()
    cut_url = "http://127.0.0.1:%d/m/%s" % (cs.server_address[1], hexd)
    box = []
    cp = lt.run(peer_session(srv, gonepeer, "box",
                             [announce_xml(b64, cut_url, 8)], box), timeout=30)
    a4 = agent(4)
    a4.wait(is_event("connected"), 30)
    push(srv, [a4.localpart], {"command": "fetch", "hash": hexd})
    r4 = answer_of(a4)
    res = (r4 or {}).get("result", {})
    srcs = res.get("sources", [])
    check("a peer gone mid-transfer: the download still ends right",
          r4 is not None and r4.get("status") == "ok" and
          in_cache(a4.cache, hexd), repr(r4)[:600])
    check("and the answer shows that source lost",
          CutPeer.cut == 1 and any(str(cs.server_address[1]) in s["url"] and
                                  s["lost"] for s in srcs), repr(srcs)[:600])
    lt.run(disconnect(cp))

    # -- a deleted file is withdrawn
    check("agent 4 is the one peer listed",
          harness.wait_for(lambda: len(peers_listed()) == 1, 20),
          repr(peers_listed()))
    os.unlink(os.path.join(a4.cache, hexd))
    check("deleting the cached file withdraws it",
          harness.wait_for(lambda: len(peers_listed()) == 0, 20),
          repr(peers_listed()))
    a5 = a4

    # -- errors
    a5.set_mark()
    push(srv, [a5.localpart], {"command": "fetch", "hash": "00" * 32})
    r = answer_of(a5, 30)
    check("an unknown file is answered failed",
          r is not None and r.get("status") == "failed", repr(r)[:300])
    a5.set_mark()
    push(srv, [a5.localpart], {"command": "fetch", "hash": "nothex"})
    r = answer_of(a5, 30)
    check("a fetch without a usable hash or URL is bad-request",
          r is not None and r.get("error") == "bad-request", repr(r)[:300])
    a5.stop()
    shutil.rmtree(os.path.join(srv.dir, "cache1"), ignore_errors=True)
    harness.finish()


if __name__ == "__main__":
    main()
