#!/usr/bin/python3
"""test_media_seeds.py - a push to many devices at once costs the server
media.seed_copies copies (issue 17, "Speed"; doc/media.md "Seeds").

A download that prefers peers (parley-agent --prefer-peers, parley get
--server-last) names a random seat in its Metalink GETs
(<file-url>.meta4?seat=HEX; reads after the first add pieces=0, the
same document without piece hashes).  While no peer serves the file, the
first
seed_copies seats take it from the server; the others get
<wait xmlns='urn:parley:media:0'/> in the Metalink and hold the server
back until a peer is listed.  Checked, with seed_copies = 1:
  - Metalink GETs by hand: the first seat is a seed (no <wait/>), a
    second is told to wait, a GET with no seat never is (aria2 and other
    Metalink clients see the plain document), the seed renews its seat;
    a seat not renewed for seat_timeout is free and the waiting one
    takes it; parleyctl media status counts seeds and waits;
  - four agents pushed the same fetch at once: every copy is right, the
    server sent exactly one copy, the three others came from peers;
  - a seed that dies (a seat renewed by hand, then not): the agent told
    to wait takes the seat after seat_timeout and downloads from the
    server.
Run with /usr/bin/python3; `scripts/run-tests media_seeds`.
"""

import base64
import hashlib
import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, note  # noqa: E402
from agent_common import Agent, is_event  # noqa: E402
from im_common import LoopThread, add_users  # noqa: E402
from test_upload import req, path_of, slix_upload  # noqa: E402
from test_media_info import server as media_server  # noqa: E402
from test_media_info import announce_xml, disconnect, peer_session  # noqa
from test_media_agents import push, answer_of, media_status, in_cache  # noqa

PIECE = 262144
SIZE = 12 * PIECE + 321  # 13 pieces
MODULES = ('"disco", "ping", "roster", "presence", "register", "session", '
           '"offline", "upload", "media", "fleet"')
WAIT = b'<wait xmlns="urn:parley:media:0"/>'


def main():
    port = harness.free_ports(1)[0]
    srv = media_server(port, "token_lifetime = 120; seed_copies = 1; "
                       "seat_timeout = 3000;", MODULES,
                       "fleet: { max_targets = 60; };",
                       "per_ip_per_minute = 1000;")
    if not srv.start():
        harness.finish()
    (alice,) = add_users(srv, harness.unique("alice"))
    lt = LoopThread()
    files = []
    for name in ("a.bin", "b.bin", "c.bin", "d.bin"):
        data = os.urandom(SIZE)
        try:
            url = lt.run(slix_upload(srv, alice, data, name), timeout=60)
        except Exception as e:  # noqa: BLE001 - reported
            url = None
            note("slixmpp upload: %r" % e)
        files.append((path_of(url) if url else None, data))
    check("four files are uploaded", all(p for p, _ in files),
          repr(files[0][0]))
    if not all(p for p, _ in files):
        harness.finish()

    def ml(path, seat=None):
        st, _, body = req(port, "GET", path + ".meta4" +
                          ("?seat=%s" % seat if seat else ""))
        return st, body

    # -- seats by hand
    path = files[0][0]
    st, body = ml(path, "a1")
    check("the first seat is a seed: a Metalink without <wait/>",
          st == 200 and WAIT not in body, repr(body[-200:]))
    st, body = ml(path, "b2")
    check("a second seat is told to wait for peers",
          st == 200 and WAIT in body, repr(body[-200:]))
    st, body = ml(path)
    check("a GET without a seat never is (the plain Metalink)",
          st == 200 and WAIT not in body, repr(body[-200:]))
    st, body = ml(path, "zz")
    check("nor one whose seat is not hex",
          st == 200 and WAIT not in body, repr(body[-200:]))
    st, body = ml(path, "A1")
    check("the seed reading it again keeps its seat (hex in any case)",
          st == 200 and WAIT not in body, repr(body[-200:]))
    st, body = ml(path, "b2&pieces=0")
    check("pieces=0: the same answer without the piece hashes (a refresh)",
          st == 200 and WAIT in body and b"<pieces" not in body and
          b"<hash type=\"sha-256\">" in body, repr(body[-300:]))
    st, body = ml(path)
    check("which the plain Metalink has", b"<pieces" in body, "")
    s = media_status(srv, path)
    check("parleyctl media status counts the seed and the waits",
          s.get("seeds") == 1 and s.get("waits") == 2, json.dumps(s)[:400])
    # The seed stops reading: after seat_timeout its seat is free.
    check("a seat not renewed is free again: the waiting one takes it",
          harness.wait_for(lambda: WAIT not in ml(path, "b2")[1], 10), "")
    st, body = ml(path, "a1")
    check("and the old seed now waits", WAIT in body, repr(body[-200:]))

    # -- a held GET (hold=MS): answered when a peer is listed
    path, data = files[1]
    b64 = base64.b64encode(hashlib.sha256(data).digest()).decode()
    ml(path, "c3")  # the seed
    t0 = time.monotonic()
    st, body = ml(path, "d4&pieces=0&hold=300")
    took = time.monotonic() - t0
    check("a held GET with no peer to come answers <wait/> when its time "
          "is up", st == 200 and WAIT in body and took >= 0.25,
          "%.2f s %r" % (took, body[-200:]))
    # A client that gives up on its held GET: the server forgets it.
    import socket
    so = socket.create_connection(("127.0.0.1", port), 5)
    so.sendall(("GET %s.meta4?seat=f6&hold=8000 HTTP/1.1\r\nHost: "
                "127.0.0.1\r\n\r\n" % path).encode())
    check("a held GET then dropped by its client",
          harness.wait_for(lambda: media_status(srv, path).get("waits", 0)
                           >= 2, 10), "")
    so.close()
    got = {}

    def held():
        t = time.monotonic()
        got["st"], got["body"] = ml(path, "e5&pieces=0&hold=8000")
        got["took"] = time.monotonic() - t
    th = threading.Thread(target=held, daemon=True)
    th.start()
    check("another held GET is kept waiting",
          harness.wait_for(lambda: media_status(srv, path).get("waits", 0)
                           >= 3, 10) and th.is_alive(), "")
    peer_url = "http://127.0.0.1:9/m/" + hashlib.sha256(data).hexdigest()
    box = []
    pc = lt.run(peer_session(srv, alice, "seed", [announce_xml(b64, peer_url,
                                                               2)], box),
                timeout=30)
    th.join(10)
    check("a peer announced: the held GET is answered at once, with it",
          not th.is_alive() and got.get("st") == 200 and
          WAIT not in got.get("body", WAIT) and
          peer_url.encode() in got.get("body", b"") and
          got.get("took", 99) < 5, repr(got)[:300])
    lt.run(disconnect(pc))
    check("the peer gone, it is no longer listed",
          harness.wait_for(lambda: peer_url.encode() not in ml(path)[1], 10),
          "")

    # -- four agents at once: one copy from the server
    path, data = files[3]
    hexd = hashlib.sha256(data).hexdigest()
    agents = []
    for n in range(4):
        d = os.path.join(srv.dir, "cache%d" % n)
        a = Agent(srv, "02:00:00:00:18:%02x" % n,
                  extra=["--cache", d, "--serve", "127.0.0.1:0",
                         "--prefer-peers", "--max-fetches", "1"])
        a.cache = d
        agents.append(a.start())
    check("four agents connect",
          all(a.wait(is_event("connected"), 30) is not None for a in agents),
          "")
    sent0 = media_status(srv, path).get("server_bytes", 0)
    push(srv, [a.localpart for a in agents], {"command": "fetch",
                                               "hash": hexd})
    answers = [answer_of(a) for a in agents]
    res = [(r or {}).get("result", {}) for r in answers]
    check("every agent answers ok with a right copy",
          all(r and r.get("status") == "ok" for r in answers) and
          all(in_cache(a.cache, hexd) for a in agents),
          repr(answers)[:800])
    s = media_status(srv, path)
    check("the server sent exactly one copy",
          s.get("server_bytes", 0) - sent0 == SIZE,
          "%d bytes, file %d" % (s.get("server_bytes", 0) - sent0, SIZE))
    check("the three others came from peers",
          sorted(r.get("from_server", -1) for r in res) == [0, 0, 0, SIZE]
          and sum(r.get("from_peers", 0) for r in res) == 3 * SIZE,
          repr([(r.get("from_server"), r.get("from_peers")) for r in res]))
    check("and were told to wait for the seed", s.get("waits", 0) >= 1,
          json.dumps(s)[:300])
    for a in agents:
        a.stop()

    # -- a seed that dies
    path, data = files[2]
    hexd = hashlib.sha256(data).hexdigest()
    ml(path, "dead1")
    d = os.path.join(srv.dir, "cache9")
    late = Agent(srv, "02:00:00:00:18:99",
                 extra=["--cache", d, "--serve", "127.0.0.1:0",
                        "--prefer-peers", "--max-fetches", "1"])
    late.cache = d
    late.start()
    check("a fifth agent connects",
          late.wait(is_event("connected"), 30) is not None, "")
    push(srv, [late.localpart], {"command": "fetch", "hash": hexd})
    # The stand-in seed keeps its seat until the agent was told to wait.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and \
            media_status(srv, path).get("waits", 0) < 1:
        ml(path, "dead1")
    check("the agent is told to wait while the seed lives",
          media_status(srv, path).get("waits", 0) >= 1, "")
    r = answer_of(late, 60)
    res = (r or {}).get("result", {})
    check("the seed gone, the agent takes its seat: all from the server",
          r is not None and r.get("status") == "ok" and
          res.get("from_server") == SIZE and in_cache(late.cache, hexd),
          repr(r)[:600])
    late.stop()
    lt.stop()
    harness.finish()


if __name__ == "__main__":
    harness.run_main(main)
