#!/usr/bin/python3
"""test_upload_pace.py - upload.max_send_rate: every download of a host's
files together goes at most at that rate (src/core/conn.c, pl_pace).

  - two downloads at once, read by raw sockets that note when each body
    byte came: at no moment have both together received more than the
    rate allows since the first request, plus the pace's saved-up budget
    (a tenth of a second's worth, two slices at least): an upper bound,
    so a slow machine cannot fail it, and an unpaced server (a few
    milliseconds for the lot) would;
  - both bodies arrive whole and right, a Range under the pace too;
  - both moved while the other did (turns in order): each had received
    part of its body before the other was done.
"""

import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402
from im_common import ImClient, add_users  # noqa: E402
from test_upload import path_of, put, server, slot  # noqa: E402

RATE = 2000000              # bytes per second
SIZE = 3000000              # each file
SAVED = max(RATE // 10, 2 * max(262144, RATE // 1000))  # conn.c pace_refill


def download(port, path, out, extra=""):
    """GET path on a raw socket: out gets (status line, body, [(t, n)])."""
    stamps = []
    body = bytearray()
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.sendall(("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%s"
                   "Connection: close\r\n\r\n" % (path, extra)).encode())
        head = b""
        while b"\r\n\r\n" not in head:
            b = s.recv(65536)
            if not b:
                break
            head += b
        head, _, rest = head.partition(b"\r\n\r\n")
        if rest:
            body += rest
            stamps.append((time.monotonic(), len(rest)))
        while True:
            b = s.recv(1 << 20)
            if not b:
                break
            body += b
            stamps.append((time.monotonic(), len(b)))
    out.update(status=head.split(b"\r\n")[0].decode(), body=bytes(body),
               stamps=stamps)


def main():
    port = harness.free_ports(1)[0]
    srv = server(port, "max_file_size = 10000000; quota = 0; "
                 "max_send_rate = %d;" % RATE)
    srv.start()
    (alice,) = add_users(srv, harness.unique("alice"))
    a = ImClient(srv, alice.split("@")[0], "pc")
    files = []
    for i in range(2):
        data = os.urandom(SIZE)
        _, put_url, auth, get_url = slot(a, SIZE, "f%d.bin" % i, srv=srv)
        st, _, _ = put(port, put_url, auth, data)
        check("upload %d is stored (201)" % i, st == 201, repr(st))
        files.append((path_of(get_url), data))
    a.close()

    outs = [{}, {}]
    t0 = time.monotonic()
    threads = [threading.Thread(target=download, args=(port, p, o))
               for (p, _), o in zip(files, outs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for i, ((_, data), o) in enumerate(zip(files, outs)):
        check("download %d: 200 and the whole file" % i,
              o.get("status", "").startswith("HTTP/1.1 200") and
              o.get("body") == data,
              "%r, %d bytes" % (o.get("status"), len(o.get("body", b""))))
    events = sorted(s for o in outs for s in o.get("stamps", []))
    worst, total = None, 0
    for t, n in events:
        total += n
        allowed = SAVED + RATE * (t - t0)
        if total > allowed and worst is None:
            worst = (round(t - t0, 3), total, int(allowed))
    check("both together never ahead of max_send_rate (plus the saved-up "
          "tenth of a second)", worst is None and total == 2 * SIZE,
          "at %r s: %r bytes, %r allowed" % worst if worst else total)
    ends = [o["stamps"][-1][0] if o.get("stamps") else 0 for o in outs]
    first = 0 if ends[0] <= ends[1] else 1
    other = outs[1 - first]
    had = sum(n for t, n in other.get("stamps", []) if t <= ends[first])
    check("turns: the later download had moved before the first was done",
          had > 0, "%d bytes of %d" % (had, SIZE))

    # A range under the pace: the bytes asked, nothing more.
    o = {}
    download(port, files[0][0], o, "Range: bytes=1000000-1999999\r\n")
    check("a Range under the pace: 206 and its bytes",
          o.get("status", "").startswith("HTTP/1.1 206") and
          o.get("body") == files[0][1][1000000:2000000],
          "%r, %d bytes" % (o.get("status"), len(o.get("body", b""))))


if __name__ == "__main__":
    harness.run_main(main)
