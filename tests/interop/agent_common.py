#!/usr/bin/python3
"""agent_common.py - runs parley-agent processes for the interop tests.

API:
  Agent(srv, mac, **opts)  one parley-agent for the harness Server srv,
                           with fake MAC `mac` (--mac), its own state file
                           in srv.dir; opts: handlers={name: path},
                           controllers=[jid], token=, extra=[args],
                           backoff=(min_ms, max_ms)
  a.start(), a.stop()      start; SIGTERM by pid and wait (bounded)
  a.events                 parsed JSON event lines from its stdout
  a.wait(pred, timeout)    first event (after a.mark, see a.set_mark())
                           with pred(ev) true, or None
  a.localpart, a.jid       its identity
  a.rss_kib()              VmRSS of the process
  a.memory_kib()           smaps_rollup figures (Rss, Pss, Private_Dirty)
  wait_all(agents, pred, timeout)  True when every agent saw such an event

Environment: PARLEY_AGENT (default: parley-agent beside $PARLEYD, else
$BUILD/parley-agent).
"""

import json
import os
import select
import signal
import socket
import subprocess
import threading
import time

import harness

# Beside the parleyd under test (the sanitizer pass sets PARLEYD), as
# harness.py finds parleyctl.
_SERVER_DIR = os.path.dirname(harness._abs(os.environ.get(
    "PARLEYD", os.path.join(harness.BUILD, "parleyd"))))
AGENT_BIN = harness._abs(os.environ.get(
    "PARLEY_AGENT", os.path.join(_SERVER_DIR, "parley-agent")))


class Agent:
    def __init__(self, srv, mac, handlers=None, controllers=(), token=None,
                 extra=(), backoff=(200, 2000), ping=30, direct=False,
                 port=None):
        self.srv = srv
        self.mac = mac
        self.localpart = "".join(ch for ch in mac if ch not in ":-.").lower()
        self.jid = "%s@%s" % (self.localpart, srv.domain)
        self.state_file = os.path.join(srv.dir, "agent-%s.json"
                                       % self.localpart)
        self.log_path = os.path.join(srv.dir, "agent-%s.log" % self.localpart)
        argv = [AGENT_BIN, "--domain", srv.domain, "--server", srv.host,
                "--port", str(port or (srv.direct_port if direct
                                       else srv.starttls_port)),
                "--insecure", "--mac", mac, "--state-file", self.state_file,
                "--backoff-min", str(backoff[0]),
                "--backoff-max", str(backoff[1]),
                "--ping-interval", str(ping)]
        if direct:
            argv.append("--direct-tls")
        for name, path in (handlers or {}).items():
            argv += ["--handler", "%s=%s" % (name, path)]
        for c in controllers:
            argv += ["--controller", c]
        if token:
            argv += ["--token", token]
        self.argv = argv + list(extra)
        self.proc = None
        self.events = []
        self.lock = threading.Condition()
        self.mark = 0

    def start(self):
        self.log = open(self.log_path, "ab")
        self.proc = harness.spawn("agent " + self.mac, self.argv,
                                  stdout=subprocess.PIPE, stderr=self.log)
        t = threading.Thread(target=self._read, args=(self.proc,),
                             daemon=True)
        t.start()
        return self

    def _read(self, proc):
        for line in proc.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                ev = {"event": "garbage", "line": line.decode("utf-8",
                                                              "replace")}
            with self.lock:
                self.events.append(ev)
                self.lock.notify_all()

    def set_mark(self):
        with self.lock:
            self.mark = len(self.events)

    def wait(self, pred, timeout=10):
        deadline = time.monotonic() + timeout
        with self.lock:
            i = self.mark
            while True:
                while i < len(self.events):
                    if pred(self.events[i]):
                        return self.events[i]
                    i += 1
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.lock.wait(left)

    def seen(self, pred):
        with self.lock:
            return [e for e in self.events[self.mark:] if pred(e)]

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        """SIGTERM by pid; returns the exit status (None if it hung)."""
        if not self.proc:
            return None
        harness.untrack(self.proc)
        rc = harness.stop_group(self.proc, 10)
        self.log.close()
        return None if rc == -signal.SIGKILL else rc  # None: it hung

    def rss_kib(self):
        try:
            with open("/proc/%d/status" % self.proc.pid) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
        except OSError:
            return None
        return None

    def memory_kib(self):
        """{"Rss": .., "Pss": .., "Private_Dirty": .., ...} in KiB."""
        out = {}
        try:
            with open("/proc/%d/smaps_rollup" % self.proc.pid) as f:
                for line in f:
                    parts = line.split()
                    if len(parts) == 3 and parts[2] == "kB":
                        out[parts[0].rstrip(":")] = int(parts[1])
        except OSError:
            pass
        return out

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""


def is_event(name, **kv):
    return lambda e: e.get("event") == name and all(
        e.get(k) == v for k, v in kv.items())


def wait_all(agents, pred, timeout):
    deadline = time.monotonic() + timeout
    for a in agents:
        if a.wait(pred, max(0.0, deadline - time.monotonic())) is None:
            return False
    return True


class CutProxy:
    """A TCP relay on 127.0.0.1 to (host, port) whose cut() drops every
    relayed connection at once, both sides, as a network failure would."""

    def __init__(self, host, port):
        self.target = (host, port)
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        self.port = self.lsock.getsockname()[1]
        self.pairs = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            try:
                s = socket.create_connection(self.target, 5)
            except OSError:
                c.close()
                continue
            with self.lock:
                self.pairs.append((c, s))
            threading.Thread(target=self._relay, args=(c, s),
                             daemon=True).start()

    def _relay(self, a, b):
        peer = {a: b, b: a}
        try:
            while True:
                r, _, _ = select.select([a, b], [], [], 1.0)
                for x in r:
                    data = x.recv(65536)
                    if not data:
                        raise OSError("closed")
                    peer[x].sendall(data)
        except (OSError, ValueError):
            pass
        with self.lock:
            if (a, b) in self.pairs:
                self.pairs.remove((a, b))
        for x in (a, b):
            try:
                x.close()
            except OSError:
                pass

    def cut(self):
        with self.lock:
            pairs, self.pairs = self.pairs, []
        for a, b in pairs:
            for x in (a, b):
                try:
                    x.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        return len(pairs)

    def close(self):
        self.cut()
        self.lsock.close()
