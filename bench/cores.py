#!/usr/bin/python3
"""bench/cores.py - chat messages/s of one parleyd process against
server.processes = 2 on the same machine (issue 18, "every core used";
doc/cluster.md, "Every core").

  bench/cores.py [--runs 3] [--pairs 500] [--window 10] [--duration 10]
                 [--processes 1,2] [--keep]

Starts a throwaway PostgreSQL (tests/interop/pg_common.py) and
redis-server on loopback, registers 2 * pairs accounts once, then for
each run: parleyd with processes = 1 (the single process of today, on the
same PostgreSQL, no cluster), and parleyd with processes = 2 (a
supervisor, two processes sharing the client port with SO_REUSEPORT, a
cluster through Redis), alternately, each measured with
build/bench/parley-load --mode chat (window mode: max throughput).  No
pinning: the server processes and the generator share the machine's
cores.  Prints each run's JSON line and the medians, with the load
average before each run (the machine may be shared).
"""

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "interop"))
import harness  # noqa: E402
import pg_common  # noqa: E402

PARLEYD = os.path.join(ROOT, "build", "parleyd")
LOAD = os.path.join(ROOT, "build", "bench", "parley-load")

CONF = """
server: { data_dir = "%(dir)s/var"; log_level = "info"; processes = %(n)d; };
storage: { driver = "postgresql"; postgresql = "%(pg)s"; };
limits: { max_connections_per_ip = 1000000; max_connections = 1000000;
          read_rate = 1073741824; read_burst = 1073741824;
          max_outbuf = 67108864; idle_timeout = 86400;
          handshake_timeout = 300; };
c2s: { require_encryption = false; };
listeners = (
  { protocol = "c2s"; address = "127.0.0.1"; port = %(port)d; tls = "none"; }
);
hosts = ( { domain = "localhost"; } );
register: { policy = "open"; per_ip_per_minute = 1000000; };
modules = ["disco", "ping", "version", "time", "register", "session",
           "roster", "presence", "offline", "vcard", "search", "private"];
%(cluster)s
"""


def wait_port(port, proc, timeout=30):
    import socket
    end = time.time() + timeout
    while time.time() < end and proc.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return True
        except OSError:
            time.sleep(0.1)
    return False


def start_parleyd(d, n, pg, port, redis_port, link):
    cluster = ""
    if n > 1:
        cluster = ('cluster: { enable = true; node = "b"; redis = '
                   '"127.0.0.1:%d"; link = "127.0.0.1:%d"; secret = '
                   '"bench-cores-secret-0123456789"; };' % (redis_port, link))
    path = os.path.join(d, "parleyd-%d.conf" % n)
    with open(path, "w") as f:
        f.write(CONF % {"dir": d, "n": n, "pg": pg, "port": port,
                        "cluster": cluster})
    log = open(os.path.join(d, "parleyd-%d.log" % n), "ab")
    since = log.tell()  # this start's lines only
    p = subprocess.Popen([PARLEYD, "--config", path], stdout=log,
                         stderr=log, stdin=subprocess.DEVNULL,
                         start_new_session=True)
    if not wait_port(port, p):
        raise SystemExit("parleyd (processes = %d) did not start" % n)
    if n > 1:
        # Every process ready and linked with the others.
        want = n * (n - 1)
        end = time.time() + 30
        while time.time() < end:
            with open(log.name, "rb") as f:
                f.seek(since)
                if f.read().count(b"links up") >= want:
                    break
            time.sleep(0.1)
        else:
            raise SystemExit("the processes did not link")
    return p


def stop(p):
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()


def run_load(port, mode, args, keys):
    cmd = [LOAD, "--mode", mode, "--port", str(port), "--key-cache", keys,
           "--quiet"] + [str(a) for a in args]
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=900)
    for line in r.stdout.splitlines():
        if line.startswith("{"):
            return json.loads(line)
    return {"status": "no_result", "stderr": r.stderr[-500:]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--pairs", type=int, default=500)
    ap.add_argument("--window", type=int, default=10)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--processes", default="1,2",
                    help="the settings compared, in turn (1,2)")
    ap.add_argument("--keep", action="store_true",
                    help="keep the directory (configurations, logs)")
    a = ap.parse_args()
    counts = [int(x) for x in a.processes.split(",")]
    d = tempfile.mkdtemp(prefix="parley-cores-")
    pg = pg_common.PgCluster()
    if not pg.start():
        raise SystemExit("PostgreSQL did not start")
    pg.create_db("parley", "parley")
    redis_port, port, link = harness.free_ports(3)
    rd = os.path.join(d, "redis")
    os.makedirs(rd)
    redis = subprocess.Popen(
        [shutil.which("redis-server"), "--port", str(redis_port), "--bind",
         "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", rd],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    keys = os.path.join(d, "keys")
    results = {n: [] for n in counts}
    try:
        p = start_parleyd(d, 1, pg.conninfo("parley", "parley"), port,
                          redis_port, link)
        r = run_load(port, "register", ["--users", 2 * a.pairs,
                                        "--concurrency", 50], keys)
        print("register:", json.dumps(r), flush=True)
        stop(p)
        for run in range(a.runs):
            for n in counts:
                p = start_parleyd(d, n, pg.conninfo("parley", "parley"),
                                  port, redis_port, link)
                la = os.getloadavg()
                r = run_load(port, "chat", [
                    "--pairs", a.pairs, "--window", a.window, "--duration",
                    a.duration, "--warmup", 2], keys)
                r["processes"] = n
                r["run"] = run
                r["loadavg_before"] = la
                print(json.dumps(r), flush=True)
                results[n].append(r.get("msgs_per_s") or 0)
                stop(p)
    finally:
        redis.terminate()
        redis.wait(10)
        pg.stop()
        if a.keep:
            print("kept", d)
        else:
            shutil.rmtree(d, ignore_errors=True)
    med = {}
    for n in counts:
        med[n] = statistics.median(results[n])
        print("processes = %d: %s msg/s, median %.0f" % (n, results[n],
                                                         med[n]))
    if 1 in med and 2 in med:
        print("ratio of the medians (2 / 1): %.2f" %
              (med[2] / med[1] if med[1] else 0))


if __name__ == "__main__":
    main()
