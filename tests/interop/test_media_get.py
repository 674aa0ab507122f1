#!/usr/bin/python3
"""test_media_get.py - `parley get`, the client download of distributed
media (doc/media.md "The client", src/media/fetch.c, src/clients/cli/get.c).

parleyd runs with upload and media; slixmpp uploads a file of 12 pieces
(about 3 MB).  Stand-in peers are small threaded Python HTTP servers on
127.0.0.1 that serve the file with Range; they are listed in the
server's Metalink by announcing them from raw XMPP sessions.

Checked:
  - server only: `parley --json get --cache DIR HASH` writes the file into
    DIR/<sha256 hex> with the uploaded bytes, from_server = its size,
    from_peers 0; -o FILE gets the same bytes; the server sent them
    (parleyctl media status --json: server_bytes);
  - cache hit: a second get by hash prints cached, and the server neither
    sent a byte nor answered a query or a Metalink for it;
  - an unknown hash is the server's item-not-found: exit 6;
  - --max-peers 0 with peers listed: none is asked;
  - multi-source: three peers (a good one, one that corrupts every piece,
    one that closes mid-transfer): the file is still right, the good peer
    served bytes (from_peers > 0), the corrupt one is reported
    (piece-bad, banned) and the report is in parleyctl media status
    (result banned, piece index as printed), the closing one is lost;
    the peers got the token the Metalink gave them; no printed URL
    carries a token;
  - --server-last with one good peer: the peer serves (almost) all;
  - a slow peer (32 KiB/s): the requests it holds at the end are sent to
    the server too, whose copy wins (the peer's are cancelled, not lost);
  - a peer answering 503 (busy) is paused, not dropped, then serves;
  - a final verification failure (a stand-in server whose Metalink has
    the file's real SHA-256 but the piece hashes of altered bytes, which
    it serves): exit 1, a "failed" event, no file nor .part left in the
    cache, the whole-file report (no piece) in parleyctl;
  - a Metalink without piece hashes: the file comes whole, checked by
    the whole hash (altered bytes refused); an empty file;
  - resume: a stand-in that serves the first pieces and then answers 503
    ends the first run (exit 1, no source left) with .part and .have kept;
    a second run from the real server fetches only what is missing (and
    a piece the bitmap claims whose bytes were altered meanwhile).
Run with /usr/bin/python3; `scripts/run-tests media_get`.
"""

import base64
import glob
import hashlib
import http.server
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
from harness import check, note  # noqa: E402
from im_common import ImClient, LoopThread, add_users, PW  # noqa: E402
from test_upload import path_of, slix_upload  # noqa: E402
from test_media_info import server as media_server  # noqa: E402

PARLEY = harness._abs(os.environ.get(
    "PARLEY_CLI", os.path.join(os.path.dirname(harness._abs(os.environ.get(
        "PARLEYD", os.path.join(harness.BUILD, "parleyd")))), "parley")))
NS_MEDIA = "urn:parley:media:0"
NS_HASH = "urn:xmpp:hashes:2"
NS_SFS = "urn:xmpp:sfs:0"
NS_URLD = "http://jabber.org/protocol/url-data"
PIECE = 262144
MODULES = ('"disco", "ping", "roster", "presence", "register", "session", '
           '"upload", "media"')


def server(port):
    return media_server(port, "ban_reports = 1; token_lifetime = 300;",
                        MODULES)


def hash_el(b64):
    return "<hash xmlns='%s' algo='sha-256'>%s</hash>" % (NS_HASH, b64)


def announce_xml(b64, url):
    return ("<announce xmlns='%s' max-concurrent='4'>%s"
            "<sources xmlns='%s'><url-data xmlns='%s' target='%s'/>"
            "</sources></announce>" % (NS_MEDIA, hash_el(b64), NS_SFS,
                                       NS_URLD, url))


class Stand:
    """A threaded HTTP/1.1 server on 127.0.0.1 serving routes: path ->
    (bytes, mode), mode one of good, corrupt (every answer has one byte
    flipped), close (half the body, then the connection closes), slow (32
    KiB/s), ("until", N) (ranges starting below N served, others 503 after
    a second) or ("busy", N) (the first N requests 503, then served)."""

    def __init__(self, routes):
        self.routes = routes
        self.requests = 0
        self.bytes = 0
        self.tokens = 0
        self.lock = threading.Lock()
        self.busy_left = next((m[1] for _, m in routes.values()
                               if isinstance(m, tuple) and m[0] == "busy"), 0)
        stand = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                stand.serve(self)

        class S(http.server.ThreadingHTTPServer):
            def handle_error(self, request, client_address):
                pass  # a client that hung up (cancelled requests do)

        self.httpd = S(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.t = threading.Thread(target=self.httpd.serve_forever,
                                  daemon=True)
        self.t.start()

    def url(self, path):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def serve(self, h):
        path, _, query = h.path.partition("?")
        self.requests += 1
        if "token=" in query:
            self.tokens += 1
        if path not in self.routes:
            h.send_response(404)
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        data, mode = self.routes[path]
        rng = h.headers.get("Range")
        a, b = 0, len(data) - 1
        if rng and rng.startswith("bytes="):
            x, _, y = rng[6:].partition("-")
            a, b = int(x), int(y) if y else len(data) - 1
        if isinstance(mode, tuple) and mode[0] == "busy":
            with self.lock:
                busy = self.busy_left > 0
                self.busy_left -= busy
            if busy:
                h.send_response(503)
                h.send_header("Retry-After", "1")
                h.send_header("Content-Length", "0")
                h.end_headers()
                return
        elif isinstance(mode, tuple) and a >= mode[1]:
            time.sleep(1.0)  # after the pieces before the limit
            h.send_response(503)
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        body = bytearray(data[a:b + 1])
        if mode == "corrupt" and body:
            body[len(body) // 2] ^= 0xff
        h.send_response(206 if rng else 200)
        if rng:
            h.send_header("Content-Range", "bytes %d-%d/%d" % (a, b,
                                                                len(data)))
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        try:
            if mode == "slow":  # 32 KiB/s
                for i in range(0, len(body), 8192):
                    h.wfile.write(bytes(body[i:i + 8192]))
                    h.wfile.flush()
                    self.bytes += len(body[i:i + 8192])
                    time.sleep(0.25)
                return
            if mode == "close":
                h.wfile.write(bytes(body[:len(body) // 2]))
                h.wfile.flush()
                h.close_connection = True
                h.connection.shutdown(socket.SHUT_RDWR)
                return
            h.wfile.write(bytes(body))
            self.bytes += len(body)
        except OSError:
            pass

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def get(srv, jid, *args, timeout=120):
    """parley --json get ARGS: (rc, [json objects], stderr)."""
    certs = glob.glob(os.path.join(srv.dir, "var", "certs", "*.crt"))
    argv = [PARLEY, "--server", srv.host, "--port", str(srv.starttls_port),
            "--ca-file", certs[0] if certs else "/nonexistent", "--timeout", "30", "--jid", jid,
            "--password", PW, "--json", "get"] + list(args)
    try:
        p = subprocess.run(argv, capture_output=True, text=True,
                           timeout=timeout)
    except subprocess.TimeoutExpired as e:
        return None, [], str(e)
    objs = []
    for line in p.stdout.splitlines():
        try:
            objs.append(json.loads(line))
        except ValueError:
            objs.append({"unparsed": line})
    return p.returncode, objs, p.stderr


def events(objs, kind):
    return [o for o in objs if o.get("event") == kind]


def status(srv, hexd):
    rc, out = srv.ctl("media", "--json", "status", hexd)
    try:
        return json.loads(out)
    except ValueError:
        return {}


def read(path):
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError:
        return None


def metalink_doc(name, data, whole, piece_data, url):
    """A Metalink like parleyd's: whole hash given, pieces of piece_data
    (None: no pieces element)."""
    pieces = ""
    if piece_data is not None:
        pieces = "<pieces length='%d' type='sha-256'>%s</pieces>" % (
            PIECE, "".join("<hash>%s</hash>" % hashlib.sha256(
                piece_data[i:i + PIECE]).hexdigest()
                for i in range(0, len(piece_data), PIECE)))
    return ("<?xml version='1.0' encoding='UTF-8'?>\n"
            "<metalink xmlns='urn:ietf:params:xml:ns:metalink'>"
            "<file name='%s'><size>%d</size>"
            "<hash type='sha-256'>%s</hash>%s"
            "<url priority='1'>%s</url></file></metalink>"
            % (name, len(data), whole, pieces, url)).encode()


def main():
    port = harness.free_ports(1)[0]
    srv = server(port)
    srv.start()
    alice, pa, pb, pc = add_users(
        srv, harness.unique("alice"), harness.unique("pgood"),
        harness.unique("pbad"), harness.unique("pclose"))
    data = os.urandom(12 * PIECE - 4321)
    lt = LoopThread()
    try:
        url = lt.run(slix_upload(srv, alice, data, "movie.ts"), timeout=60)
    except Exception as e:  # noqa: BLE001 - reported
        url = None
        note("slixmpp upload: %r" % e)
    lt.stop()
    check("slixmpp uploads a file of 12 pieces", bool(url), repr(url))
    if not url:
        return
    sha = hashlib.sha256(data).digest()
    b64 = base64.b64encode(sha).decode()
    hexd = sha.hex()
    tmp = tempfile.mkdtemp(prefix="parley-get-")
    stands = []
    try:
        run(srv, alice, (pa, pb, pc), data, url, sha, b64, hexd, tmp, stands)
    finally:
        for s in stands:
            s.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def run(srv, alice, peers, data, url, sha, b64, hexd, tmp, stands):
    size = len(data)
    # -- server only
    d1 = os.path.join(tmp, "c1")
    out1 = os.path.join(tmp, "out1.ts")
    s0 = status(srv, hexd)
    rc, objs, err = get(srv, alice, "--cache", d1, "-o", out1, hexd)
    done = (events(objs, "done") or [{}])[-1]
    cpath = os.path.join(d1, hexd)
    check("server only: get by hash exits 0 with a done event",
          rc == 0 and done.get("path") == cpath, "rc %s %r %s" % (
              rc, objs[-3:], err[-400:]))
    check("the cached file is the uploaded bytes, named by its SHA-256",
          read(cpath) == data, cpath)
    check("-o FILE has the same bytes", read(out1) == data, out1)
    check("from_server is the size, from_peers 0",
          done.get("from_server") == size and done.get("from_peers") == 0 and
          not done.get("cached"), repr(done))
    check("progress came as JSON lines with bytes and totals",
          any(o.get("total") == size for o in events(objs, "progress")),
          repr(objs[:3]))
    s1 = status(srv, hexd)
    check("the server sent the bytes (parleyctl media status)",
          s1.get("server_bytes", 0) - s0.get("server_bytes", 0) >= size,
          "%s -> %s" % (s0.get("server_bytes"), s1.get("server_bytes")))
    check("nothing is left beside the file in the cache",
          sorted(os.listdir(d1)) == [hexd], repr(os.listdir(d1)))

    # -- cache hit: no network
    rc, objs, err = get(srv, alice, "--cache", d1, b64)
    done = (events(objs, "done") or [{}])[-1]
    s2 = status(srv, hexd)
    check("cache hit: a second get (base64 hash) is done from the cache",
          rc == 0 and done.get("cached") is True and
          done.get("path") == cpath, "rc %s %r %s" % (rc, objs, err[-300:]))
    check("and the server neither sent a byte nor answered anything",
          s2.get("server_bytes") == s1.get("server_bytes") and
          s2.get("queries") == s1.get("queries") and
          s2.get("metalinks") == s1.get("metalinks"),
          "%r -> %r" % ({k: s1.get(k) for k in ("server_bytes", "queries",
                                               "metalinks")},
                        {k: s2.get(k) for k in ("server_bytes", "queries",
                                               "metalinks")}))
    rc, objs, err = get(srv, alice, "--cache", os.path.join(tmp, "cx"),
                        hashlib.sha256(b"no such file").hexdigest())
    check("an unknown hash is the server's item-not-found: exit 6",
          rc == 6 and "item-not-found" in err, "rc %s %s" % (rc, err[-300:]))

    # -- several sources: a good peer, a corrupting one, a closing one
    pth = "/m/" + hexd
    good = Stand({pth: (data, "good")})
    bad = Stand({pth: (data, "corrupt")})
    closer = Stand({pth: (data, "close")})
    stands += [good, bad, closer]
    sessions = []
    for user, st in zip(peers, (good, bad, closer)):
        c = ImClient(srv, user.split("@")[0], "stb")
        r = c.request(announce_xml(b64, st.url(pth)), "set",
                      to="upload." + srv.domain)
        sessions.append(c)
        check("peer %s announces itself" % user.split("@")[0][:5],
              r is not None and r.get("type") == "result",
              harness.tostr(r) if r is not None else "no answer")
    rc, objs, err = get(srv, alice, "--cache", os.path.join(tmp, "c0"),
                        "--max-peers", "0", hexd)
    done = (events(objs, "done") or [{}])[-1]
    check("--max-peers 0: the server alone, no peer asked",
          rc == 0 and done.get("from_server") == size and
          good.requests + bad.requests + closer.requests == 0,
          "rc %s %r" % (rc, done))
    r0 = status(srv, hexd).get("reports_total", 0)
    d2 = os.path.join(tmp, "c2")
    rc, objs, err = get(srv, alice, "--cache", d2, "--stall", "5", hexd)
    done = (events(objs, "done") or [{}])[-1]
    check("multi-source: the download ends well despite the bad peers",
          rc == 0 and read(os.path.join(d2, hexd)) == data,
          "rc %s %r %s" % (rc, objs[-4:], err[-600:]))
    check("the good peer served verified bytes (from_peers > 0)",
          good.bytes > 0 and done.get("from_peers", 0) > 0 and
          done.get("from_peers", 0) + done.get("from_server", 0) == size,
          "peer sent %d; %r" % (good.bytes, done))
    check("the peers were asked with the token of their Metalink URL",
          good.tokens > 0 and good.tokens == good.requests,
          "%d of %d" % (good.tokens, good.requests))
    pbad = events(objs, "piece-bad")
    check("the corrupting peer's piece is reported bad, then banned",
          len(pbad) == 1 and pbad[0].get("source") == bad.url(pth) and
          events(objs, "banned") and
          events(objs, "banned")[0].get("source") == bad.url(pth),
          "%r %r" % (pbad, events(objs, "banned")))
    check("the peer that closes mid-transfer is lost",
          any(o.get("source") == closer.url(pth)
              for o in events(objs, "lost")), repr(events(objs, "lost")))
    srcs = {s.get("url"): s for s in done.get("sources", [])}
    check("done lists each source: bytes, bad pieces, banned, lost",
          srcs.get(good.url(pth), {}).get("bytes", 0) > 0 and
          srcs.get(bad.url(pth), {}).get("banned") is True and
          srcs.get(bad.url(pth), {}).get("bad_pieces") == 1 and
          srcs.get(closer.url(pth), {}).get("lost") is True and
          srcs.get(url, {}).get("server") is True, repr(srcs))
    check("no printed URL carries a token",
          all("token=" not in json.dumps(o) for o in objs),
          repr([o for o in objs if "token=" in json.dumps(o)][:1]))
    st = status(srv, hexd)
    reps = [x for x in st.get("reports", [])
            if x.get("source") == bad.url(pth)]
    check("the bad piece was reported to the server: banned in parleyctl",
          st.get("reports_total", 0) == r0 + 1 and len(reps) == 1 and
          reps[0].get("result") == "banned" and pbad and
          reps[0].get("piece") == pbad[0].get("piece") and
          alice.split("@")[0] in reps[0].get("reporter", ""),
          repr(st.get("reports"))[-500:])
    check("the banned peer is no longer listed",
          all(p.get("url") != bad.url(pth) for p in st.get("peers", [])),
          repr(st.get("peers")))

    # -- --server-last: the good peer alone serves
    for c in sessions[1:]:
        c.close()
    harness.wait_for(lambda: len(status(srv, hexd).get("peers", [])) == 1,
                     timeout=15)
    d3 = os.path.join(tmp, "c3")
    before = good.bytes
    rc, objs, err = get(srv, alice, "--cache", d3, "--server-last", hexd)
    done = (events(objs, "done") or [{}])[-1]
    check("--server-last: peers first, the server only for what is left",
          rc == 0 and read(os.path.join(d3, hexd)) == data and
          done.get("from_peers", 0) >= size - 2 * PIECE and
          good.bytes - before >= size - 2 * PIECE,
          "rc %s %r %s" % (rc, done, err[-300:]))
    sessions[0].close()

    # -- a slow peer: the server takes over its pieces (endgame)
    slow = Stand({pth: (data, "slow")})
    stands.append(slow)
    harness.wait_for(lambda: not status(srv, hexd).get("peers"), timeout=15)
    c = ImClient(srv, peers[0].split("@")[0], "slow")
    c.request(announce_xml(b64, slow.url(pth)), "set",
              to="upload." + srv.domain)
    d6 = os.path.join(tmp, "c6")
    rc, objs, err = get(srv, alice, "--cache", d6, hexd)
    done = (events(objs, "done") or [{}])[-1]
    check("a slow peer's pieces are fetched again from the server, which "
          "wins: the download takes less than one piece at the peer's pace",
          rc == 0 and read(os.path.join(d6, hexd)) == data and
          slow.requests >= 1 and done.get("from_server") == size and
          done.get("seconds", 99) < PIECE / 32768 and
          not events(objs, "lost"),
          "rc %s, peer asked %d times, %r" % (rc, slow.requests, done))
    c.close()

    # -- a busy peer (503, as at its max_conns): paused, not lost
    busy = Stand({pth: (data, ("busy", 3))})
    stands.append(busy)
    harness.wait_for(lambda: not status(srv, hexd).get("peers"), timeout=15)
    c = ImClient(srv, peers[0].split("@")[0], "busy")
    c.request(announce_xml(b64, busy.url(pth)), "set",
              to="upload." + srv.domain)
    rc, objs, err = get(srv, alice, "--cache", os.path.join(tmp, "c8"),
                        "--server-last", hexd)
    done = (events(objs, "done") or [{}])[-1]
    check("a peer answering 503 three times is paused and then serves "
          "(--server-last: the server waits for it)",
          rc == 0 and read(os.path.join(tmp, "c8", hexd)) == data and
          not events(objs, "lost") and busy.requests >= 4 and
          done.get("from_peers", 0) >= size - 2 * PIECE,
          "rc %s, %d requests, %r" % (rc, busy.requests, done))
    c.close()

    # -- a final verification failure
    alt = bytearray(data)
    alt[PIECE + 17] ^= 0x55
    alt = bytes(alt)
    fake = Stand({})
    stands.append(fake)
    fake.routes["/f/movie.ts"] = (alt, "good")
    fake.routes["/f/movie.ts.meta4"] = (metalink_doc(
        "movie.ts", data, hexd, alt, fake.url("/f/movie.ts")), "good")
    d4 = os.path.join(tmp, "c4")
    r0 = status(srv, hexd).get("reports_total", 0)
    rc, objs, err = get(srv, alice, "--cache", d4, fake.url("/f/movie.ts"))
    check("a file whose pieces verify but not its SHA-256: exit 1, failed",
          rc == 1 and events(objs, "failed") and not events(objs, "done"),
          "rc %s %r %s" % (rc, objs[-3:], err[-300:]))
    check("nothing of it is kept in the cache",
          not os.path.isdir(d4) or os.listdir(d4) == [],
          repr(os.listdir(d4) if os.path.isdir(d4) else None))
    st = status(srv, hexd)
    reps = [x for x in st.get("reports", [])
            if x.get("source") == fake.url("/f/movie.ts")]
    check("the whole-file failure was reported (no piece index)",
          st.get("reports_total", 0) == r0 + 1 and len(reps) == 1 and
          reps[0].get("piece") == -1, repr(st.get("reports"))[-400:])

    # -- a Metalink without piece hashes: the whole file from one source
    fake.routes["/w/movie.ts"] = (data, "good")
    fake.routes["/w/movie.ts.meta4"] = (metalink_doc(
        "movie.ts", data, hexd, None, fake.url("/w/movie.ts")), "good")
    fake.routes["/x/movie.ts"] = (alt, "good")
    fake.routes["/x/movie.ts.meta4"] = (metalink_doc(
        "movie.ts", data, hexd, None, fake.url("/x/movie.ts")), "good")
    d7 = os.path.join(tmp, "c7")
    rc, objs, err = get(srv, alice, "--cache", d7, fake.url("/x/movie.ts"))
    reps = [x for x in status(srv, hexd).get("reports", [])
            if x.get("source") == fake.url("/x/movie.ts")]
    check("no piece hashes, altered bytes: the whole hash refuses them, "
          "reported against the source that sent them",
          rc == 1 and events(objs, "failed") and
          not os.path.exists(os.path.join(d7, hexd)) and len(reps) == 1 and
          reps[0].get("piece") == -1,
          "rc %s %r %s %r" % (rc, objs[-2:], err[-300:], reps))
    rc, objs, err = get(srv, alice, "--cache", d7, fake.url("/w/movie.ts"))
    done = (events(objs, "done") or [{}])[-1]
    check("no piece hashes: the file comes whole and is verified",
          rc == 0 and read(os.path.join(d7, hexd)) == data and
          done.get("from_server") == size,
          "rc %s %r %s" % (rc, objs[-2:], err[-300:]))
    empty = hashlib.sha256(b"").hexdigest()
    fake.routes["/e/empty.meta4"] = (metalink_doc(
        "empty", b"", empty, b"", fake.url("/e/empty")), "good")
    n0 = fake.requests
    rc, objs, err = get(srv, alice, "--cache", d7,
                        fake.url("/e/empty.meta4"))
    check("an empty file is done without a request but the Metalink's",
          rc == 0 and read(os.path.join(d7, empty)) == b"" and
          fake.requests == n0 + 1,
          "rc %s %r %s" % (rc, objs[-2:], err[-300:]))

    # -- resume an interrupted download
    flaky = Stand({"/r/movie.ts": (data, ("until", 3 * PIECE))})
    stands.append(flaky)
    flaky.routes["/r/movie.ts.meta4"] = (metalink_doc(
        "movie.ts", data, hexd, data, flaky.url("/r/movie.ts")), "good")
    d5 = os.path.join(tmp, "c5")
    rc, objs, err = get(srv, alice, "--cache", d5,
                        flaky.url("/r/movie.ts.meta4"))
    check("a source that fails after three pieces: exit 1, no source left",
          rc == 1 and "no source left" in err and events(objs, "lost"),
          "rc %s %r %s" % (rc, objs[-3:], err[-300:]))
    check("the .part and .have are kept",
          os.path.exists(os.path.join(d5, hexd + ".part")) and
          os.path.exists(os.path.join(d5, hexd + ".have")),
          repr(os.listdir(d5) if os.path.isdir(d5) else None))
    # A byte of piece 1 lost (as after a crash before it reached the
    # disk): the bitmap still claims it, the resume must not trust it.
    part = os.path.join(d5, hexd + ".part")
    if os.path.exists(part):
        with open(part, "r+b") as fh:
            fh.seek(PIECE + 5)
            fh.write(bytes([data[PIECE + 5] ^ 0xff]))
    s0 = status(srv, hexd)
    rc, objs, err = get(srv, alice, "--cache", d5, hexd)
    done = (events(objs, "done") or [{}])[-1]
    s1 = status(srv, hexd)
    sent = s1.get("server_bytes", 0) - s0.get("server_bytes", 0)
    check("resumed: the file is complete and right",
          rc == 0 and read(os.path.join(d5, hexd)) == data,
          "rc %s %r %s" % (rc, objs[-3:], err[-300:]))
    check("only the missing pieces came from the server (and the claimed "
          "piece whose bytes changed)",
          done.get("from_server") == size - 2 * PIECE and
          sent == size - 2 * PIECE, "%r, server sent %d" % (done, sent))
    check("the bitmap is gone once the file is verified",
          sorted(os.listdir(d5)) == [hexd], repr(os.listdir(d5)))


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # noqa: BLE001 - finish() would hide it
        import traceback
        note(traceback.format_exc().rstrip())
        check("test_media_get runs to the end", False, repr(e))
    finally:
        harness.finish()
