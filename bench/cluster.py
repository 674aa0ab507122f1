#!/usr/bin/python3
"""bench/cluster.py - `make bench-cluster` (issue 18, "A million sessions
on one box"): as many idle authenticated sessions as this machine holds,
over many parleyd nodes of one cluster, then the cluster's own figures.

    make bench-cluster                 (or bench/cluster.py)

Starts a throwaway PostgreSQL (tests/interop/pg_common.py) and a
redis-server on loopback, then:

1. Accounts: one is registered (XEP-0077, SCRAM keys derived by the
   server); the others are copies of its rows made in PostgreSQL with
   generate_series: same password, same salt.  Deriving a million SCRAM
   keys twice (10,000 PBKDF2 iterations, SHA-1 and SHA-256) would take
   hours of CPU and measure nothing of the cluster; the logins cost the
   server the same either way (SCRAM proofs, not PBKDF2).
2. Nodes, one after the other: each a parleyd process of its own (its own
   port, under the 20,000 open files of a process), a cluster node on the
   shared Redis and PostgreSQL; once it is linked with the others,
   parley-load --mode idle logs BENCH_CLUSTER_PER_NODE sessions into it
   (plain TCP, SCRAM-SHA-256, source addresses 127.0.N.x) and holds them.
   Nodes are added until BENCH_CLUSTER_SESSIONS are held or the machine's
   MemAvailable falls under BENCH_CLUSTER_RESERVE_MB; after each node the
   memory is read: every node's RSS, every generator's, the kernel's
   socket buffers (/proc/net/sockstat) and slab (/proc/meminfo), Redis's
   used memory, MemAvailable.
3. With every session still held: chat between pairs of new sessions on
   one node, then with each pair split over two nodes (parley-load
   --port2): messages/s, and the CPU of the nodes involved per message
   received (utime+stime from /proc, from parley-load's "ready" to its
   result); presence with rosters of BENCH_CLUSTER_CONTACTS, contacts on
   both nodes: deliveries/s.
4. SIGKILL of the last node: the time until the first node no longer
   counts it alive (parleyctl cluster --json), and until its sessions are
   gone from the first node's view.

Sizes (environment): BENCH_CLUSTER_SESSIONS [1000000],
BENCH_CLUSTER_PER_NODE [18000], BENCH_CLUSTER_RESERVE_MB [2048],
BENCH_CLUSTER_PAIRS [500], BENCH_CLUSTER_CONTACTS [10],
BENCH_CLUSTER_PRESENCE_USERS [1000], BENCH_CLUSTER_CONCURRENCY [200]
(logins in flight per generator), BENCH_KEEP=1 keeps the directory.
Writes bench/results/<date>-cluster.md and .jsonl.
"""

import datetime
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "interop"))
import harness  # noqa: E402
import pg_common  # noqa: E402

PARLEYD = os.path.join(ROOT, "build", "parleyd")
PARLEYCTL = os.path.join(ROOT, "build", "parleyctl")
LOAD = os.path.join(ROOT, "build", "bench", "parley-load")

TARGET = int(os.environ.get("BENCH_CLUSTER_SESSIONS", "1000000"))
PER_NODE = int(os.environ.get("BENCH_CLUSTER_PER_NODE", "18000"))
RESERVE_MB = int(os.environ.get("BENCH_CLUSTER_RESERVE_MB", "2048"))
PAIRS = int(os.environ.get("BENCH_CLUSTER_PAIRS", "500"))
CONTACTS = int(os.environ.get("BENCH_CLUSTER_CONTACTS", "10"))
PRES_USERS = int(os.environ.get("BENCH_CLUSTER_PRESENCE_USERS", "1000"))
CONC = int(os.environ.get("BENCH_CLUSTER_CONCURRENCY", "200"))
SECRET = "bench-cluster-secret-0123456789"

CONF = """
server: { data_dir = "%(dir)s/var-%(name)s"; log_level = "info";
          admin_socket = "%(dir)s/admin-%(name)s.sock"; };
storage: { driver = "postgresql"; postgresql = "%(pg)s"; };
limits: { max_connections_per_ip = 1000000; max_connections = 1000000;
          read_rate = 1073741824; read_burst = 1073741824;
          max_outbuf = 67108864; idle_timeout = 86400;
          handshake_timeout = 600; };
c2s: { require_encryption = false; };
listeners = (
  { protocol = "c2s"; address = "127.0.0.1"; port = %(port)d; tls = "none"; }
);
hosts = ( { domain = "localhost"; } );
register: { policy = "open"; per_ip_per_minute = 1000000; };
modules = ["disco", "ping", "register", "session", "roster", "presence",
           "offline"];
cluster: { enable = true; node = "%(name)s"; redis = "127.0.0.1:%(redis)d";
           link = "127.0.0.1:%(link)d"; secret = "%(secret)s"; };
"""


def log(msg):
    print("[cluster] %s" % msg, file=sys.stderr, flush=True)


def meminfo():
    out = {}
    with open("/proc/meminfo") as f:
        for line in f:
            k, v = line.split(":", 1)
            out[k] = int(v.split()[0])
    return out


def sockstat_kib():
    with open("/proc/net/sockstat") as f:
        for line in f:
            if line.startswith("TCP:"):
                w = line.split()
                return int(w[w.index("mem") + 1]) * 4
    return 0


def rss_kib(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_s(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            w = f.read().rsplit(")", 1)[1].split()
        return (int(w[11]) + int(w[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return 0.0


def redis_info_memory(port):
    s = socket.create_connection(("127.0.0.1", port), 5)
    s.sendall(b"INFO memory\r\n")
    data = b""
    while b"\r\n" not in data or len(data) < 20:
        data += s.recv(65536)
    n = int(data.split(b"\r\n", 1)[0][1:])
    while len(data.split(b"\r\n", 1)[1]) < n:
        data += s.recv(65536)
    s.close()
    for line in data.decode().splitlines():
        if line.startswith("used_memory:"):
            return int(line.split(":")[1]) // 1024
    return 0


class Node:
    def __init__(self, d, i, pg, redis_port):
        self.name = "n%d" % i
        self.port, self.link = harness.free_ports(2)
        self.conf = os.path.join(d, "%s.conf" % self.name)
        with open(self.conf, "w") as f:
            f.write(CONF % {"dir": d, "name": self.name, "pg": pg,
                            "port": self.port, "redis": redis_port,
                            "link": self.link, "secret": SECRET})
        self.logf = open(os.path.join(d, "%s.log" % self.name), "ab")
        self.proc = subprocess.Popen(
            [PARLEYD, "--config", self.conf], stdout=self.logf,
            stderr=self.logf, stdin=subprocess.DEVNULL,
            start_new_session=True)
        self.gens = []

    def wait_port(self, timeout=60):
        end = time.time() + timeout
        while time.time() < end and self.proc.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", self.port),
                                         0.5).close()
                return True
            except OSError:
                time.sleep(0.1)
        return False

    def ctl(self, *args):
        p = subprocess.run([PARLEYCTL, "--config", self.conf] + list(args),
                           capture_output=True, text=True, timeout=60)
        return p.returncode, p.stdout

    def cluster(self):
        rc, out = self.ctl("cluster", "--json")
        try:
            return json.loads(out) if rc == 0 else {}
        except ValueError:
            return {}

    def alive_peers(self):
        """{name: sessions} of the nodes this one counts alive."""
        c = self.cluster()
        return {n.get("name"): n.get("sessions", 0)
                for n in c.get("nodes", []) if n.get("state") == "alive"}

    def signal_stop(self):
        """Generators stopped, SIGTERM to the node (stop() waits)."""
        for g in self.gens:
            stop_proc(g)
        self.gens = []
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def stop(self):
        for g in self.gens:
            stop_proc(g)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(120)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def stop_proc(p):
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGTERM)
            p.wait(30)
        except (OSError, subprocess.TimeoutExpired):
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def load_argv(mode, port, args):
    return [LOAD, "--mode", mode, "--port", str(port), "--prefix", "u",
            "--quiet"] + [str(a) for a in args]


def read_json(p, timeout):
    """The first JSON line p prints within timeout, or None."""
    end = time.time() + timeout
    buf = b""
    while time.time() < end:
        r, _, _ = select.select([p.stdout], [], [], 1.0)
        if r:
            chunk = os.read(p.stdout.fileno(), 65536)
            if not chunk:
                break
            buf += chunk
            for line in buf.split(b"\n")[:-1]:
                if line.startswith(b"{"):
                    return json.loads(line)
        elif p.poll() is not None:
            break
    return None


def run_load(mode, port, args, cpu_pids=(), timeout=900):
    """parley-load to its end; with cpu_pids (--sync modes), the CPU
    seconds those processes spent from its "ready" to its result."""
    sync = bool(cpu_pids)
    p = subprocess.Popen(load_argv(mode, port, list(args) +
                                   (["--sync"] if sync else [])),
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, start_new_session=True)
    cpu = 0.0
    if sync:
        line = b""
        end = time.time() + timeout
        while b"ready" not in line and time.time() < end:
            r, _, _ = select.select([p.stdout], [], [], 1.0)
            if r:
                line = p.stdout.readline()
                if not line:
                    break
        c0 = sum(cpu_s(x) for x in cpu_pids)
        p.stdin.write(b"go\n")
        p.stdin.flush()
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_proc(p)
        return {"status": "timeout"}
    if sync:
        cpu = sum(cpu_s(x) for x in cpu_pids) - c0
    for line in out.decode().splitlines():
        if line.startswith("{"):
            r = json.loads(line)
            if sync:
                r["nodes_cpu_s"] = round(cpu, 2)
                rx = r.get("received") or 0
                if rx:
                    r["nodes_cpu_us_per_msg"] = round(cpu * 1e6 / rx, 2)
            return r
    return {"status": "no_result", "stderr": err.decode()[-400:]}


def provision(node, pg, total):
    """Accounts u0 .. u<total-1>: one registered, the rest its copies."""
    r = run_load("register", node.port, ["--users", 1, "--first", 0,
                                         "--concurrency", 1])
    if r.get("status") not in ("ok", None) and not r.get("registered"):
        log("register: %r" % r)
    sql = ("INSERT INTO accounts (host, username, created) "
           "SELECT host, 'u' || g, created FROM accounts, "
           "generate_series(1, %d) g WHERE username = 'u0' "
           "ON CONFLICT DO NOTHING; "
           "INSERT INTO scram_keys SELECT host, 'u' || g, hash, iterations, "
           "salt, stored_key, server_key FROM scram_keys, "
           "generate_series(1, %d) g WHERE username = 'u0' "
           "ON CONFLICT DO NOTHING; "
           "INSERT INTO digest_keys SELECT host, 'u' || g, alg, ha1 "
           "FROM digest_keys, generate_series(1, %d) g "
           "WHERE username = 'u0' ON CONFLICT DO NOTHING;" % (
               total - 1, total - 1, total - 1))
    t = time.time()
    psql = os.path.join(pg.bin, "psql")
    if not os.path.exists(psql):
        psql = shutil.which("psql") or psql
    p = subprocess.run([psql, "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1",
                        "-h", pg.sock, "-p", str(pg.port), "-U", "postgres",
                        "-d", "parley", "-c", sql], capture_output=True,
                       text=True, timeout=1800, **pg._popen_kw())
    if p.returncode != 0:
        raise SystemExit("provisioning failed: %s" % p.stderr[-500:])
    log("provisioned %d accounts in %.1f s" % (total, time.time() - t))


def memory(nodes, redis_port):
    mi = meminfo()
    return {
        "server_rss_kib": sum(rss_kib(n.proc.pid) for n in nodes),
        "node_rss_kib": [rss_kib(n.proc.pid) for n in nodes],
        "generator_rss_kib": sum(rss_kib(g.pid) for n in nodes
                                 for g in n.gens),
        "tcp_buffers_kib": sockstat_kib(),
        "slab_kib": mi.get("Slab", 0),
        "redis_kib": redis_info_memory(redis_port),
        "mem_available_kib": mi.get("MemAvailable", 0),
        "mem_total_kib": mi.get("MemTotal", 0),
    }


def main():
    d = tempfile.mkdtemp(prefix="parley-bench-cluster-")
    # A connection per node, parleyctl's, the provisioning's (the first
    # run stopped at 47 nodes on the tests' 50).
    pg = pg_common.PgCluster(max_connections=200)
    if not pg.start():
        raise SystemExit("PostgreSQL did not start")
    pg.create_db("parley", "parley")
    conninfo = pg.conninfo("parley", "parley")
    redis_port = harness.free_ports(1)[0]
    rd = os.path.join(d, "redis")
    os.makedirs(rd)
    redis = subprocess.Popen(
        [shutil.which("redis-server"), "--port", str(redis_port), "--bind",
         "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", rd],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    nodes = []
    res = {"target": TARGET, "per_node": PER_NODE, "ramp": []}
    mem0 = meminfo()
    sock0, slab0 = sockstat_kib(), mem0.get("Slab", 0)
    res["before"] = {"mem_available_kib": mem0.get("MemAvailable", 0),
                     "tcp_buffers_kib": sock0, "slab_kib": slab0}
    extra = 2 * PAIRS * 2 + PRES_USERS  # the sessions of step 3
    try:
        # 1. accounts (the node that registers the first stays node n0)
        nodes.append(Node(d, 0, conninfo, redis_port))
        if not nodes[0].wait_port():
            raise SystemExit("node n0 did not start")
        provision(nodes[0], pg, TARGET + extra)
        held = 0
        # 2. nodes and idle sessions
        while held < TARGET:
            i = len(nodes) - 1 if not nodes[-1].gens else len(nodes)
            if i == len(nodes):
                avail = meminfo().get("MemAvailable", 0) // 1024
                if avail < RESERVE_MB:
                    log("stopping: %d MB available" % avail)
                    res["stopped_by"] = "memory (%d MB available)" % avail
                    break
                nodes.append(Node(d, i, conninfo, redis_port))
                if not nodes[i].wait_port():
                    res["stopped_by"] = "node %d did not start" % i
                    log(res["stopped_by"])
                    nodes.pop().stop()
                    break
                end = time.time() + 60
                while (time.time() < end and
                       len(nodes[0].alive_peers()) < len(nodes) - 1):
                    time.sleep(0.2)
            n = nodes[i]
            k = min(PER_NODE, TARGET - held)
            t0 = time.time()
            g = subprocess.Popen(
                load_argv("idle", n.port, [
                    "--users", k, "--first", extra + held,
                    "--concurrency", CONC, "--hold", 100000,
                    "--settle", 5, "--src-ips", 16,
                    "--src-base", 10 + i % 240, "--timeout", 900,
                    "--server-pid", n.proc.pid]),
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                stdin=subprocess.DEVNULL, start_new_session=True)
            n.gens.append(g)
            r = read_json(g, 1200) or {"status": "no_result"}
            live = r.get("sessions", 0)
            held += live
            step = {"node": n.name, "sessions": live, "held": held,
                    "login_s": round(time.time() - t0, 1),
                    "logins_per_s": r.get("per_s"),
                    "node_rss_per_session_kib":
                        r.get("rss_per_session_kib")}
            step.update(memory(nodes, redis_port))
            res["ramp"].append(step)
            log(json.dumps(step))
            dead = {x.name: x.proc.returncode for x in nodes
                    if x.proc.poll() is not None}
            if dead:
                # A node's exit status: -9 the kernel's OOM killer (or a
                # kill), -11 a crash.  The directory is kept for its log.
                res["stopped_by"] = "nodes exited: %s" % dead
                res["failed"] = True
                log(res["stopped_by"])
                break
            if live < k:
                res["stopped_by"] = "node %s held %d of %d" % (n.name, live,
                                                              k)
                break
        res["held"] = held
        res["nodes"] = len(nodes)
        last = res["ramp"][-1] if res["ramp"] else memory(nodes, redis_port)
        res["memory"] = dict(last)
        res["memory"]["tcp_buffers_kib"] -= sock0
        res["memory"]["slab_kib"] -= slab0
        # 3. messages and presence, with everything still held
        if res.get("failed"):
            nodes = [x for x in nodes if x.proc.poll() is None]
        a, b = nodes[0], nodes[1] if len(nodes) > 1 else nodes[0]
        base = [a.proc.pid] + ([b.proc.pid] if b is not a else [])
        res["chat_same_node"] = run_load(
            "chat", a.port, ["--pairs", PAIRS, "--first", 0, "--duration",
                             10, "--warmup", 2], cpu_pids=[a.proc.pid])
        log("same node: %r" % res["chat_same_node"].get("msgs_per_s"))
        if b is not a:
            res["chat_cross_node"] = run_load(
                "chat", a.port, ["--pairs", PAIRS, "--first", 2 * PAIRS,
                                 "--port2", b.port, "--duration", 10,
                                 "--warmup", 2], cpu_pids=base)
            log("cross node: %r" % res["chat_cross_node"].get("msgs_per_s"))
            first = 4 * PAIRS
            run_load("roster", a.port, ["--users", PRES_USERS, "--first",
                                        first, "--contacts", CONTACTS])
            res["presence_cross_node"] = run_load(
                "presence", a.port, ["--users", PRES_USERS, "--first", first,
                                     "--contacts", CONTACTS, "--rounds", 5,
                                     "--port2", b.port])
            log("presence: %r" % res["presence_cross_node"].get(
                "deliveries_per_s"))
        # 4. a node killed
        if len(nodes) > 1:
            victim = nodes[-1]
            t0 = time.time()
            os.killpg(victim.proc.pid, signal.SIGKILL)
            victim.proc.wait()
            gone = None
            while time.time() - t0 < 60:
                if victim.name not in nodes[0].alive_peers():
                    gone = time.time() - t0
                    break
                time.sleep(0.05)
            res["kill_detected_s"] = round(gone, 2) if gone else None
            log("killed %s: gone from n0's view after %r s" % (
                victim.name, res["kill_detected_s"]))
        res["done"] = not res.get("failed")
    finally:
        # Every node told at once, then waited for: one after the other,
        # 56 nodes ending 18,000 sessions each took minutes.
        for n in nodes:
            n.signal_stop()
        for n in nodes:
            n.stop()
        redis.terminate()
        try:
            redis.wait(30)
        except subprocess.TimeoutExpired:
            redis.kill()
        pg.stop()
        if os.environ.get("BENCH_KEEP") == "1" or not res.get("done"):
            log("kept %s" % d)
        else:
            shutil.rmtree(d, ignore_errors=True)
    write(res)


def write(res):
    stamp = datetime.date.today().isoformat()
    out = os.path.join(HERE, "results", stamp + "-cluster")
    with open(out + ".jsonl", "a") as f:
        f.write(json.dumps(res) + "\n")
    m = res.get("memory", {})
    held = res.get("held", 0) or 1
    L = ["# Cluster on one box: %d idle sessions over %d nodes (%s)" % (
        res.get("held", 0), res.get("nodes", 0), stamp), "",
        "`make bench-cluster` (issue 18, \"A million sessions on one box\"): "
        "target %d, %d per node (each node a process under the 20,000 "
        "open files); stopped by: %s." % (
            res["target"], res["per_node"], res.get("stopped_by", "target")),
        "", "| where the memory went | MiB | KiB per session |",
        "|---|---|---|"]
    for k, label in (("server_rss_kib", "parleyd nodes (RSS)"),
                     ("generator_rss_kib", "load generators (RSS)"),
                     ("tcp_buffers_kib", "kernel TCP buffers (sockstat)"),
                     ("slab_kib", "kernel slab (sockets, files)"),
                     ("redis_kib", "Redis")):
        L.append("| %s | %.0f | %.2f |" % (label, m.get(k, 0) / 1024,
                                           m.get(k, 0) / held))
    L.append("| MemAvailable at the end | %.0f | |" % (
        m.get("mem_available_kib", 0) / 1024))
    L += ["", "| node added | sessions held | logins/s | parleyd RSS (all "
          "nodes) MiB | MemAvailable MiB |", "|---|---|---|---|---|"]
    for s in res["ramp"]:
        L.append("| %s | %d | %s | %.0f | %.0f |" % (
            s["node"], s["held"], s.get("logins_per_s"),
            s["server_rss_kib"] / 1024, s["mem_available_kib"] / 1024))
    same, cross = res.get("chat_same_node", {}), res.get("chat_cross_node",
                                                           {})
    L += ["", "| with everything held | msg/s | nodes' CPU per message | "
          "p50 / p99 |", "|---|---|---|---|"]
    for label, r in (("chat, both ends on one node", same),
                     ("chat, each pair over two nodes", cross)):
        if r:
            L.append("| %s | %s | %s µs | %s / %s µs |" % (
                label, r.get("msgs_per_s"), r.get("nodes_cpu_us_per_msg"),
                r.get("p50_us"), r.get("p99_us")))
    if same.get("nodes_cpu_us_per_msg") and cross.get("nodes_cpu_us_per_msg"):
        L.append("")
        L.append("Cross-node CPU per message: %.2f x same-node (target "
                 "<= 3)." % (cross["nodes_cpu_us_per_msg"] /
                             same["nodes_cpu_us_per_msg"]))
    p = res.get("presence_cross_node")
    if p:
        L.append("")
        L.append("Presence, rosters of %d with contacts on two nodes: %s "
                 "deliveries/s (status %s)." % (
                     CONTACTS, p.get("deliveries_per_s"), p.get("status")))
    if "kill_detected_s" in res:
        L.append("")
        L.append("SIGKILL of the last node: gone from the first node's view "
                 "after %s s." % res["kill_detected_s"])
    with open(out + ".md", "w") as f:
        f.write("\n".join(L) + "\n")
    print("\n".join(L))


if __name__ == "__main__":
    main()
