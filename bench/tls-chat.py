#!/usr/bin/python3
"""bench/tls-chat.py - server CPU per chat message over STARTTLS, with the
TLS hand-over (c2s.tls_handover: Parley's own TLS 1.3 record layer after
SASL, src/core/tls_rec.c) and without it (OpenSSL's records), in one run.

    BENCH_ONLY=tlschat bench/run     (not part of a full `make bench`)
    bench/tls-chat.py

build/parleyd with bench/peers/parley.conf (tls-idle.py's server set-up:
pinned to core 0, the generator to core 1), BENCH_PAIRS [500] pairs of
STARTTLS sessions (SCRAM-SHA-256, TLS 1.3, the server's default suite),
in turn with the hand-over on and off, BENCH_TLSCHAT_ROUNDS [3] times:
chat at BENCH_RATE [5000] msg/s (window 100) and at full speed (window
10), BENCH_DURATION [10] s each.  At a fixed rate the CPU per message
swings with the machine between runs, so the rounds take turns and the
median of each figure is reported, with every run's figure beside it.

Writes bench/results/<date>-tls-chat.md and .jsonl.
"""

import datetime
import importlib.util
import json
import os
import shutil
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
# The server set-up and the generator's call are tls-idle.py's.
_spec = importlib.util.spec_from_file_location(
    "tls_idle", os.path.join(HERE, "tls-idle.py"))
ti = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ti)

PAIRS = int(os.environ.get("BENCH_PAIRS", "500"))
RATE = int(os.environ.get("BENCH_RATE", "5000"))
DURATION = int(os.environ.get("BENCH_DURATION", "10"))
ROUNDS = int(os.environ.get("BENCH_TLSCHAT_ROUNDS", "3"))
FIELDS = ("msgs_per_s", "cpu_us_per_msg", "p50_us", "p99_us",
          "gen_cpu_util", "gen_limited")


def log(msg):
    print("tls-chat: " + msg, flush=True)


def chat(s, rate):
    args = ["--pairs", PAIRS, "--first", 0, "--duration", DURATION,
            "--warmup", 2, "--window", 100 if rate else 10]
    if rate:
        args += ["--rate", rate]
    r = s.load("chat", args, tls=True)
    return {k: r.get(k) for k in FIELDS}


def median(runs, key):
    v = sorted(r[key] for r in runs if r.get(key) is not None)
    return v[len(v) // 2] if v else None


def main():
    tmp = tempfile.mkdtemp(prefix="parley-tlschat-")
    cert, key = ti.self_signed(tmp)
    copy = os.path.join(tmp, "parleyd")
    shutil.copy2(ti.PARLEYD, copy)  # a rebuild must not change the server
    servers = {True: ti.Server("on", copy, tmp, cert, key, handover=True),
               False: ti.Server("off", copy, tmp, cert, key, handover=False)}
    runs = {(h, r): [] for h in (True, False) for r in (RATE, 0)}
    try:
        for h, s in servers.items():
            s.start()
            s.load("register", ["--users", 2 * PAIRS, "--concurrency", 50])
            s.stop()
        for i in range(ROUNDS):
            for h, s in servers.items():
                s.start()
                try:
                    for rate in (RATE, 0):
                        r = chat(s, rate)
                        runs[(h, rate)].append(r)
                        log("round %d, hand-over %s, %s: %s" % (
                            i + 1, "on" if h else "off",
                            "%d msg/s" % rate if rate else "full speed", r))
                finally:
                    s.stop()
    finally:
        if os.environ.get("BENCH_KEEP") != "1":
            shutil.rmtree(tmp, ignore_errors=True)
    write(runs)


def write(runs):
    stamp = datetime.date.today().isoformat() + "-tls-chat"
    base, n = stamp, 2
    while os.path.exists(os.path.join(ti.RESULTS, stamp + ".md")):
        stamp = "%s-%d" % (base, n)
        n += 1
    L = ["# Chat over STARTTLS: CPU per message with and without the TLS "
         "hand-over (%s)" % stamp, "",
         "`bench/tls-chat.py`; Parley %s; %d pairs, %d s per run, %d rounds "
         "taking turns; medians, every run's figure in brackets." % (
             ti.git_desc(), PAIRS, DURATION, ROUNDS), "",
         "| c2s.tls_handover | load | msg/s | server CPU µs per message | "
         "p50 µs | p99 µs | generator CPU |",
         "|---|---|---|---|---|---|---|"]
    with open(os.path.join(ti.RESULTS, stamp + ".jsonl"), "w") as f:
        for (h, rate), rs in runs.items():
            for r in rs:
                f.write(json.dumps(dict(r, handover=h, rate=rate)) + "\n")
            L.append("| %s | %s | %s | %s [%s] | %s | %s | %s%s |" % (
                "true" if h else "false",
                "%d msg/s" % rate if rate else "full speed",
                median(rs, "msgs_per_s"), median(rs, "cpu_us_per_msg"),
                ", ".join(str(r.get("cpu_us_per_msg")) for r in rs),
                median(rs, "p50_us"), median(rs, "p99_us"),
                median(rs, "gen_cpu_util"),
                " (generator-limited)" if any(r.get("gen_limited")
                                              for r in rs) else ""))
    with open(os.path.join(ti.RESULTS, stamp + ".md"), "w") as f:
        f.write("\n".join(L) + "\n")
    log("wrote bench/results/%s.md" % stamp)


if __name__ == "__main__":
    main()
