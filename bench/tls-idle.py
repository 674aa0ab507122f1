#!/usr/bin/python3
"""bench/tls-idle.py - what an idle authenticated c2s session costs the
server over STARTTLS and over plain TCP, and where OpenSSL's share goes
(issue 18, "Speed": idle TLS session <= 12 KiB).

    BENCH_ONLY=tlsidle bench/run     (not part of a full `make bench`:
    bench/tls-idle.py                the full run has the idle scenarios)

For each binary (build/parleyd, and each path in BENCH_TLSIDLE_BASE, for
a before/after comparison in one run; and build/parleyd again with
c2s.tls_handover = false, OpenSSL keeping every session's records) and
each transport (plain, STARTTLS):
a fresh parleyd (bench/peers/parley.conf, pinned to core 0), 50 warm-up
logins, then build/bench/parley-load --mode idle logs BENCH_IDLE sessions
in (SCRAM, bind; 200 in flight) and waits BENCH_IDLE_SETTLE seconds (the
server's idle policy: parsers napped, buffers released, malloc_trim).
Figures per session:

  RSS    (VmRSS with the sessions - VmRSS before) / sessions, as the
         generator reads it (the figure issue 18 names)
  heap   parleyctl stats heap_in_use (mallinfo2: live bytes of every
         arena) with the sessions minus before, / sessions

Then build/bench/tls-mem (bench/tls-mem.c) counts OpenSSL's own
allocations per idle server connection by allocation site, TLS 1.3 and
TLS 1.2, with the server's context code.

Sizes: BENCH_IDLE [2000], BENCH_IDLE_SETTLE [15 s], BENCH_TLSIDLE_BASE
[none: space-separated parleyd binaries measured as "before"].  Writes
bench/results/<date>-tls-idle.md and .jsonl.  BENCH_KEEP=1 keeps the
temporary directory.
"""

import datetime
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
LOAD = os.path.join(ROOT, "build", "bench", "parley-load")
TLSMEM = os.path.join(ROOT, "build", "bench", "tls-mem")
PARLEYD = os.path.join(ROOT, "build", "parleyd")
PARLEYCTL = os.path.join(ROOT, "build", "parleyctl")
RESULTS = os.path.join(HERE, "results")

IDLE = int(os.environ.get("BENCH_IDLE", "2000"))
SETTLE = int(os.environ.get("BENCH_IDLE_SETTLE", "15"))
BASES = os.environ.get("BENCH_TLSIDLE_BASE", "").split()
RAW = []


def log(msg):
    print("tls-idle: " + msg, flush=True)


def pick_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Server:
    """One parleyd binary on its own directory and ports."""

    def __init__(self, name, binary, tmp, cert, key, handover=True):
        self.name, self.binary = name, binary
        self.dir = os.path.join(tmp, name)
        os.makedirs(os.path.join(self.dir, "data"), exist_ok=True)
        self.port_plain, self.port_tls = pick_port(), pick_port()
        fields = {"DATA": os.path.join(self.dir, "data"), "CERT": cert,
                  "KEY": key, "PORT_PLAIN": self.port_plain,
                  "PORT_TLS": self.port_tls, "PORT_SIP": pick_port(),
                  "PORT_WS": pick_port()}
        with open(os.path.join(HERE, "peers", "parley.conf")) as f:
            text = f.read()
        for k, v in fields.items():
            text = text.replace("@%s@" % k, str(v))
        if not handover:  # OpenSSL keeps the records (c2s.tls_handover)
            text = text.replace("c2s: {", "c2s: {\n  tls_handover = false;", 1)
        self.cfg = os.path.join(self.dir, "parley.conf")
        with open(self.cfg, "w") as f:
            f.write(text)
        self.keys = os.path.join(self.dir, "scram-keys")
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            ["taskset", "-c", "0", self.binary, "--config", self.cfg],
            stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(self.dir, "parleyd.log"), "a"))
        end = time.time() + 30
        while time.time() < end:
            if self.proc.poll() is not None:
                raise RuntimeError("%s exited at start" % self.name)
            try:
                socket.create_connection(("127.0.0.1", self.port_tls),
                                         0.5).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("%s did not listen" % self.name)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self):
        self.stop()
        self.start()

    def heap(self):
        r = subprocess.run([PARLEYCTL, "--socket",
                            os.path.join(self.dir, "data", "admin.sock"),
                            "stats", "--json"], stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, text=True, timeout=30)
        return int(json.loads(r.stdout)["heap_in_use"])

    def load(self, mode, args, tls=False, hold=False):
        cmd = ["taskset", "-c", "1", LOAD, "--mode", mode, "--port",
               str(self.port_tls if tls else self.port_plain),
               "--server-pid", str(self.proc.pid), "--key-cache", self.keys,
               "--label", self.name] + [str(a) for a in args]
        if tls:
            cmd.append("--tls")
        if not hold:
            r = subprocess.run(cmd, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True,
                               timeout=900)
            return last_json(r.stdout)
        # Idle: the result line comes first, then the sessions are held
        # while the server's heap is read; the generator is then stopped.
        p = subprocess.Popen(cmd + ["--hold", "900"], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True)
        try:
            res = None
            for line in p.stdout:
                if line.startswith("{"):
                    res = json.loads(line)
                    break
            if res is not None:
                res["heap_after"] = self.heap()
            return res or {"status": "no_result"}
        finally:
            p.terminate()
            p.wait(60)


def last_json(out):
    res = {"status": "no_result"}
    for line in out.splitlines():
        if line.startswith("{"):
            try:
                res = json.loads(line)
            except ValueError:
                pass
    return res


def idle(s, tls):
    s.restart()
    s.load("login", ["--users", 50], tls=tls)
    time.sleep(1)
    heap0 = s.heap()
    res = s.load("idle", ["--users", IDLE, "--concurrency", 200,
                          "--settle", SETTLE], tls=tls, hold=True)
    res.update(binary=s.name, transport="starttls" if tls else "plain",
               heap_before=heap0)
    n = res.get("sessions") or 0
    if n and res.get("heap_after") is not None:
        res["heap_per_session"] = (res["heap_after"] - heap0) / n
    RAW.append(res)
    log("%s %s: %s sessions, RSS %s KiB, heap %.0f B per session" % (
        s.name, res["transport"], n, res.get("rss_per_session_kib"),
        res.get("heap_per_session", 0)))
    return res


def tls_mem(cert, key, tls12):
    cmd = [TLSMEM, "--json", "--sessions", "1000"] + (
        ["--tls12"] if tls12 else []) + [cert, key]
    r = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, timeout=300)
    res = last_json(r.stdout)
    res["scenario"] = "tls-mem"
    RAW.append(res)
    return res


def self_signed(tmp):
    """A self-signed EC certificate for localhost in tmp: (cert, key)."""
    cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "30",
                    "-subj", "/CN=localhost", "-addext",
                    "subjectAltName=DNS:localhost", "-keyout", key, "-out",
                    cert], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=60)
    return cert, key


def kib(b):
    return "%.2f" % (b / 1024.0) if b is not None else "–"


def main():
    for exe in (LOAD, TLSMEM, PARLEYD, PARLEYCTL):
        if not os.access(exe, os.X_OK):
            raise SystemExit("tls-idle: %s missing; run `make all "
                             "build/bench/parley-load build/bench/tls-mem`"
                             % exe)
    tmp = tempfile.mkdtemp(prefix="parley-tlsidle-")
    cert, key = self_signed(tmp)
    binaries = [("base%d" % i if len(BASES) > 1 else "before", b)
                for i, b in enumerate(BASES)]
    binaries.append(("parleyd" if not BASES else "after", PARLEYD))
    # The same binary with OpenSSL keeping every session's records.
    binaries.append(("tls_handover = false", PARLEYD))
    rows = []
    try:
        for name, b in binaries:
            # A copy: a rebuild during the run must not change the server.
            copy = os.path.join(tmp, "parleyd-" + name.split()[0])
            shutil.copy2(b, copy)
            s = Server(name.split()[0], copy, tmp, cert, key,
                       handover=not name.endswith("false"))
            s.start()
            try:
                s.load("register", ["--users", IDLE, "--concurrency", 50])
                s.load("login", ["--users", IDLE, "--concurrency", 100])
                rows.append((name, idle(s, False), idle(s, True)))
            finally:
                s.stop()
        mem = [tls_mem(cert, key, False), tls_mem(cert, key, True)]
    finally:
        if os.environ.get("BENCH_KEEP") != "1":
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            log("kept " + tmp)
    write(rows, mem)


def git_desc():
    r = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT,
                       stdout=subprocess.PIPE, text=True)
    return r.stdout.strip()


def write(rows, mem):
    stamp = datetime.date.today().isoformat() + "-tls-idle"
    base, n = stamp, 2
    while os.path.exists(os.path.join(RESULTS, stamp + ".md")):
        stamp = "%s-%d" % (base, n)
        n += 1
    L = ["# Idle TLS sessions: memory per session (%s)" % stamp, "",
         "`BENCH_ONLY=tlsidle bench/run` (bench/tls-idle.py); Parley %s, "
         "%s; kernel %s; %d sessions per run, %d s settle." % (
             git_desc(), subprocess.run(
                 ["openssl", "version"], stdout=subprocess.PIPE,
                 text=True).stdout.strip(), os.uname().release, IDLE,
             SETTLE), "",
         "| binary | transport | sessions | RSS per session, KiB | "
         "heap per session, KiB | TLS − plain (heap), KiB |",
         "|---|---|---|---|---|---|"]
    for name, plain, tls in rows:
        for r in (plain, tls):
            extra = "–"
            if r is tls and None not in (tls.get("heap_per_session"),
                                         plain.get("heap_per_session")):
                extra = kib(tls["heap_per_session"] -
                            plain["heap_per_session"])
            L.append("| %s | %s | %s | %s | %s | %s |" % (
                name, r["transport"], r.get("sessions", "–"),
                r.get("rss_per_session_kib", "–"),
                kib(r.get("heap_per_session")), extra))
    L += ["", "OpenSSL's own bytes per idle server connection "
          "(build/bench/tls-mem, 1,000 connections; glibc adds 8 bytes "
          "per block):", "",
          "| protocol | cipher | after SSL_new | after handshake | "
          "after the data exchange (idle) | idle blocks |",
          "|---|---|---|---|---|---|"]
    for m in mem:
        L.append("| %s | %s | %s | %s | %s | %s |" % (
            m.get("version"), m.get("cipher"), m.get("new"),
            m.get("handshake"), m.get("data"), m.get("blocks")))
    for m in mem:
        L += ["", "Largest sites, %s idle (bytes, blocks per connection, "
              "the phase that allocated them):" % m.get("version"), "",
              "| site | phase | bytes | blocks |", "|---|---|---|---|"]
        for st in m.get("sites", []):
            L.append("| `%s` | %s | %s | %s |" % (
                st["site"], st.get("phase"), st["bytes"], st["blocks"]))
    md = os.path.join(RESULTS, stamp + ".md")
    with open(md, "w") as f:
        f.write("\n".join(L) + "\n")
    with open(os.path.join(RESULTS, stamp + ".jsonl"), "w") as f:
        for r in RAW:
            f.write(json.dumps(r) + "\n")
    log("wrote " + os.path.relpath(md, ROOT))


if __name__ == "__main__":
    main()
