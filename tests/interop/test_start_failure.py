#!/usr/bin/python3
"""test_start_failure.py - parleyd that cannot start says why and exits
cleanly.

Its c2s port is taken by another socket: parleyd logs that it cannot
listen, exits 1 (not a crash, not a hang), and what its hosts had asked of
the storage while loading (the MUC module's room load, stream management
recovery) is finished and freed before it exits: in the sanitizer pass
(PARLEYD=build/san/parleyd) LeakSanitizer reports nothing (src/parleyd.c,
"settle").
"""

import os
import socket
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402

CONF = """server: { data_dir = "%s/var"; };
listeners = ( { protocol = "c2s"; address = "127.0.0.1"; port = %d;
                tls = "none"; } );
hosts = ( { domain = "localhost"; } );
modules = ["disco", "roster", "presence", "offline", "session", "muc"];
c2s: { require_encryption = false; };
"""


def main():
    d = tempfile.mkdtemp(prefix="parley-startfail-")
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    conf = os.path.join(d, "parleyd.conf")
    with open(conf, "w") as f:
        f.write(CONF % (d, port))
    binary = harness.Server().bin
    env = dict(os.environ, ASAN_OPTIONS=os.environ.get(
        "ASAN_OPTIONS", "detect_leaks=1"))
    try:
        p = subprocess.run([binary, "--config", conf], capture_output=True,
                           text=True, timeout=120, env=env,
                           stdin=subprocess.DEVNULL)
        rc, err = p.returncode, p.stderr
    except subprocess.TimeoutExpired as e:
        rc, err = None, (e.stderr or b"").decode(errors="replace")
    busy.close()
    check("a taken c2s port: parleyd says it cannot listen",
          "cannot listen on 127.0.0.1 port %d" % port in err, err[-800:])
    check("... and exits 1 on its own", rc == 1, repr(rc))
    bad = [w for w in ("ERROR: LeakSanitizer", "ERROR: AddressSanitizer",
                       "runtime error:", "Segmentation fault")
           if w in err]
    check("... with no sanitizer report (the hosts' storage jobs are "
          "finished and freed first)", not bad, "%r\n%s" % (bad, err[-3000:]))
    check("... after loading its hosts (the rooms were asked for)",
          "rooms loaded" in err, err[-800:])


if __name__ == "__main__":
    harness.run_main(main)
