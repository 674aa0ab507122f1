#!/usr/bin/python3
"""bench/media.py - one head-end, many devices, one big file (issue 17,
"Speed").

    BENCH_ONLY=media bench/run       (not part of a full `make bench`:
    bench/media.py                   it writes agents x size to disk)

Issue 17: N agents fetch a file of S MB at once from one server: the
server's bytes sent and the time until the last agent holds a verified
copy, with peers on and off; target: with peers the server sends at most
2 copies' worth (50 without) and the last agent finishes no later than
with the server alone.

Starts parleyd (upload, media, fleet; HTTP on loopback), uploads a file
of random bytes, starts N parley-agent processes (each its own cache
directory; with peers also its own peer server on 127.0.0.1), puts them
in a group and pushes {"command": "fetch", "hash": HEX} to the group with
parleyctl; then waits for every agent's answer.  Runs:

  server      agents without --serve: the server alone
  peers       agents with --serve: each becomes a peer once it holds a
              verified copy (XEP-0447: not before), all pushed at once
  seeded      agents with --serve --prefer-peers, all pushed at once: the
              server makes media.seed_copies of them seeds (BENCH_MEDIA_SEEDS)
              and tells the others to wait for peers (doc/media.md "Seeds")
  staged      agents with --serve --prefer-peers: the push goes to
              BENCH_MEDIA_SEEDS agents first, then, once they hold it, to
              the others, which fetch from peers and ask the server only
              when no peer is left

Figures per run: server bytes (parleyctl media status: what GETs of the
file were answered with) and copies (bytes / size), the time from the
push to the last verified copy, the agents' own report of bytes from the
server and from peers, parleyd's CPU seconds.  Every run starts from
empty caches.

Uplinks: BENCH_MEDIA_UPLINKS [0 1000], Mbit/s the head-end's downloads
share (upload.max_send_rate), one server and every run per value; 0: no
cap, loopback, where the two cores are the only limit and a peer's send
costs what the server's would.

Sizes: BENCH_MEDIA_AGENTS [50], BENCH_MEDIA_MB [200], BENCH_MEDIA_SEEDS
[2], BENCH_MEDIA_PEER_SLOTS [16] (each peer's --max-peers),
BENCH_MEDIA_RUNS [server seeded], BENCH_MEDIA_CACHE_ROOT (a directory
for the caches, e.g. /dev/shm; default the bench's temporary directory
on disk), BENCH_KEEP=1 keeps the
temporary directory.  Writes bench/results/<date>-media.md and .jsonl.
"""

import datetime
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "interop"))
os.chdir(ROOT)
import harness  # noqa: E402
from agent_common import Agent, is_event  # noqa: E402
from im_common import ImClient, add_users  # noqa: E402
from test_upload import slot  # noqa: E402

N = int(os.environ.get("BENCH_MEDIA_AGENTS", "50"))
MB = int(os.environ.get("BENCH_MEDIA_MB", "200"))
SEEDS = int(os.environ.get("BENCH_MEDIA_SEEDS", "2"))
PEER_SLOTS = os.environ.get("BENCH_MEDIA_PEER_SLOTS", "16")
RUNS = os.environ.get("BENCH_MEDIA_RUNS", "server seeded").split()
# The head-end's uplink in Mbit/s (upload.max_send_rate), one server per
# value; 0: none (loopback: the CPU is the only limit).
UPLINKS = [int(x) for x in
           os.environ.get("BENCH_MEDIA_UPLINKS", "0 1000").split()]
MODULES = ('"disco", "ping", "roster", "presence", "register", "session", '
           '"offline", "upload", "media", "fleet"')


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def server_bytes(srv, fid):
    rc, out = srv.ctl("media", "--json", "status", fid)
    try:
        return json.loads(out).get("server_bytes", 0) if rc == 0 else 0
    except ValueError:
        return 0


def upload(srv, port, user, path, size):
    c = ImClient(srv, user.split("@")[0], "up")
    _, put_url, auth, get_url = slot(c, size, "video.ts", srv=srv)
    c.close()
    p = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                        "-X", "PUT", "-H", "Authorization: " + auth,
                        "-H", "Content-Type: application/octet-stream",
                        "--data-binary", "@" + path, put_url],
                       capture_output=True, text=True, timeout=600)
    if p.stdout.strip() != "201":
        raise RuntimeError("upload: HTTP %s" % p.stdout)
    return get_url


def wait_answers(agents, t0, timeout):
    """{mac: (seconds after t0, answer result)} for every agent."""
    out = {}
    deadline = time.monotonic() + timeout
    for a in agents:
        ev = a.wait(lambda e: e.get("event") == "reply" and
                    e.get("reply", {}).get("command") == "fetch",
                    max(0.0, deadline - time.monotonic()))
        if ev:
            out[a.mac] = dict(ev["reply"], _ts=ev.get("ts"))
    # The time of the last answer, from the events' order of arrival:
    # each agent's reply event was read when it came, so take the clock
    # when wait() returned for the last one.
    return out, time.monotonic() - t0


def run(name, srv, fid, hexd, size, base):
    serve = name != "server"
    extra_common = ["--max-fetches", "1"]
    agents = []
    for i in range(N):
        d = os.path.join(base, "%s-%03d" % (name, i))
        extra = ["--cache", d] + extra_common
        if serve:
            extra += ["--serve", "127.0.0.1:0", "--max-peers", PEER_SLOTS]
        if name in ("staged", "seeded"):
            extra.append("--prefer-peers")
        a = Agent(srv, "02:17:%02x:%02x:00:%02x" % (RUNS.index(name), i >> 8,
                                                     i & 255), extra=extra,
                  ping=300)
        a.cache = d
        agents.append(a.start())
    for a in agents:
        if a.wait(is_event("connected"), 60) is None:
            raise RuntimeError("agent %s did not connect" % a.mac)
    sent0 = server_bytes(srv, fid)
    cpu0 = cpu_seconds(srv.proc.pid)
    payload = json.dumps({"command": "fetch", "hash": hexd})
    t0 = time.monotonic()
    wall0 = time.time()
    if name == "staged":
        first, rest = agents[:SEEDS], agents[SEEDS:]
        srv.ctl("push", "--device", ",".join(a.localpart for a in first),
                payload)
        ans1, _ = wait_answers(first, t0, 600)
        # Every seed serves before the others ask (listed in the Metalink).
        for a in first:
            a.wait(is_event("shared"), 30)
        srv.ctl("push", "--device", ",".join(a.localpart for a in rest),
                payload)
        ans2, elapsed = wait_answers(rest, t0, 1800)
        answers = dict(ans1, **ans2)
    else:
        srv.ctl("push", "--device", ",".join(a.localpart for a in agents),
                payload)
        answers, elapsed = wait_answers(agents, t0, 1800)
    cpu = cpu_seconds(srv.proc.pid) - cpu0
    agents_cpu = 0.0
    for a in agents:
        try:
            agents_cpu += cpu_seconds(a.proc.pid)
        except OSError:
            pass
    # When each agent answered (its event's wall clock), from the push.
    done_at = sorted(
        datetime.datetime.strptime(r["_ts"], "%Y-%m-%dT%H:%M:%S.%fZ")
        .replace(tzinfo=datetime.timezone.utc).timestamp() - wall0
        for r in answers.values() if r.get("_ts"))
    sent = server_bytes(srv, fid) - sent0
    ok = [r for r in answers.values() if r.get("status") == "ok"]
    res = {
        "run": name, "agents": N, "size": size,
        "verified": len(ok), "answered": len(answers),
        "server_bytes": sent, "copies": sent / size,
        "seconds_to_last": elapsed,
        "client_server_bytes": sum(r["result"].get("from_server", 0)
                                   for r in ok),
        "client_peer_bytes": sum(r["result"].get("from_peers", 0)
                                 for r in ok),
        "server_cpu_s": cpu,
        "agents_cpu_s": agents_cpu,
        "answer_s": [round(x, 2) for x in done_at],
    }
    for a in agents:
        a.stop()
    for a in agents:
        shutil.rmtree(a.cache, ignore_errors=True)
    return res


def one_server(uplink):
    """Every run of RUNS on a new parleyd whose downloads share uplink
    Mbit/s (0: no cap); the results."""
    port = harness.free_ports(1)[0]
    srv = harness.Server(
        # Every agent comes from 127.0.0.1 here, with 4 streams each.
        listeners_extra='{ protocol = "http"; address = "127.0.0.1"; '
                        'port = %d; max_connections_per_ip = 100000; }'
                        % port,
        host_extra="modules = [%s];" % MODULES,
        register_extra="per_ip_per_minute = 100000;",
        extra="upload: { url = \"http://127.0.0.1:%d\"; "
              "max_file_size = 4294967296L; quota = 0; "
              "max_send_rate = %dL; };\n"
              "media: { token_lifetime = 3600; max_sources = 16; "
              "seed_copies = %d; };\n"
              "fleet: { max_targets = %d; };" % (
                  port, uplink * 125000, SEEDS, N + 10))
    if not srv.start():
        print(srv.dump_log())
        sys.exit(1)
    size = MB * 1000 * 1000
    # The devices' caches: on the disk of the bench (default) or, with
    # BENCH_MEDIA_CACHE_ROOT=/dev/shm, in memory: fifty devices have fifty
    # flash chips, not one shared disk whose write speed would be the
    # measure.
    root = os.environ.get("BENCH_MEDIA_CACHE_ROOT") or srv.dir
    base = os.path.join(root, "media-bench-%d" % os.getpid())
    os.makedirs(base)
    src = os.path.join(base, "video.ts")
    h = hashlib.sha256()
    with open(src, "wb") as f:
        left = size
        while left:
            b = os.urandom(min(left, 1 << 20))
            h.update(b)
            f.write(b)
            left -= len(b)
    hexd = h.hexdigest()
    (alice,) = add_users(srv, harness.unique("headend"))
    url = upload(srv, port, alice, src, size)
    os.unlink(src)
    fid = url.split("/")[-2]
    results = []
    for name in RUNS:
        r = run(name, srv, fid, hexd, size, base)
        r["uplink_mbit"] = uplink
        print(json.dumps(r), flush=True)
        results.append(r)
    if os.environ.get("BENCH_KEEP") != "1":
        shutil.rmtree(base, ignore_errors=True)
    srv.stop()
    return results


def main():
    results = []
    for uplink in UPLINKS:
        results += one_server(uplink)
    stamp = datetime.date.today().isoformat()
    out = os.path.join(HERE, "results", stamp + "-media")
    with open(out + ".jsonl", "a") as f:
        for r in results:
            f.write(json.dumps(r) + "\n")
    L = ["# Media distribution: %d agents, one %d MB file (%s)" % (N, MB,
                                                                  stamp), "",
         "`BENCH_ONLY=media bench/run` (issue 17, \"Speed\"): every agent "
         "fetches the file on one parleyctl push; target with peers: the "
         "server sends at most 2 copies and the last agent finishes no "
         "later than with the server alone.  Uplink: the head-end's "
         "upload.max_send_rate (none: loopback, the two cores are the "
         "only limit).", "",
         "| uplink | run | verified | server sent | copies | last verified "
         "copy | agents: from server / from peers | parleyd CPU | "
         "agents' CPU |",
         "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        L.append("| %s | %s | %d/%d | %.0f MB | %.2f | %.1f s | %.0f / %.0f "
                 "MB | %.1f s | %.1f s |" % (
                     "%d Mbit/s" % r["uplink_mbit"] if r["uplink_mbit"]
                     else "none", r["run"], r["verified"], r["agents"],
                     r["server_bytes"] / 1e6, r["copies"],
                     r["seconds_to_last"], r["client_server_bytes"] / 1e6,
                     r["client_peer_bytes"] / 1e6, r["server_cpu_s"],
                     r["agents_cpu_s"]))
    with open(out + ".md", "w") as f:
        f.write("\n".join(L) + "\n")
    print("\n".join(L))
    harness.finish()


if __name__ == "__main__":
    harness.run_main(main)
