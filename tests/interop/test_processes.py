#!/usr/bin/python3
"""test_processes.py - server.processes = 2: one parleyd, a supervisor
and two processes that share the client ports (SO_REUSEPORT) and form a
cluster through Redis and PostgreSQL (doc/cluster.md, "Every core").

Starts a throwaway redis-server and PostgreSQL (as test_cluster.py, with
cluster_common.py and pg_common.py), then one parleyd with processes = 2:

  - both processes log "ready"; clients logging in on the one port are
    spread by the kernel over both (each process's admin socket,
    <admin_socket>.<I>, lists its own sessions: transport c2s);
  - two users on different processes subscribe to each other and chat
    both ways;
  - SIGHUP to the supervisor: both processes reload their configuration
    (same node names and link ports);
  - process 1 killed with SIGKILL: the supervisor starts it again (a new
    pid, "ready", linked again with process 0), the user of process 0
    gets the killed process's user unavailable, messages to him are
    stored offline (no error) and arrive at his next login;
  - SIGTERM to the supervisor: it stops both processes and exits 0, and
    no process of it is left (checked by pid).

--check-config refuses processes = 2 with the SQLite driver and without
the cluster group, and accepts processes = 2 and "auto" with both.

Skips (with a note, not a failure) only when redis-server cannot be
started.  Every wait is bounded; run with /usr/bin/python3;
`scripts/run-tests processes`.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, note  # noqa: E402
import pg_common  # noqa: E402
import cluster_common  # noqa: E402
from cluster_common import (drop, errors, is_msg, is_pres,  # noqa: E402
                            login_on, logout, start_redis)
from im_common import STEP, LoopThread, add_users  # noqa: E402

TTL_MS = 1500
DEAD_WAIT = TTL_MS / 1000.0 * 2 + 8
SECRET = "processes-test-secret-%d" % os.getpid()
PREFIX = "tp%d:" % os.getpid()
# Logins tried until each process has one: each lands on either with
# probability 1/2, so 40 tries fail to reach both 2 * 2^-40 of the time.
MAX_LOGINS = 40


def cluster_group(redis_port, link):
    return """
cluster: { enable = true; node = "p"; redis = "127.0.0.1:%d";
           link = "127.0.0.1:%d"; ttl = %d; key_prefix = "%s";
           secret = "%s"; };
""" % (redis_port, link, TTL_MS, PREFIX, SECRET)


def check_config():
    srv = harness.Server(label="config")
    full = cluster_group(1, 2)
    cases = [
        ("processes = 2 on the SQLite driver", "sqlite", "processes = 2;",
         full, 1, "shared database"),
        ("processes = 2 without the cluster group", "postgresql",
         "processes = 2;", "", 1, "needs the cluster group"),
        ('processes = "auto" on the SQLite driver', "sqlite",
         'processes = "auto";', full, 1, "shared database"),
        ("processes = 2 with the cluster and PostgreSQL", "postgresql",
         "processes = 2;", full, 0, "configuration OK"),
        ('processes = "auto" with the cluster and PostgreSQL', "postgresql",
         'processes = "auto";', full, 0, "configuration OK"),
        ("processes = 0", "postgresql", "processes = 0;", full, 1,
         "processes must be between"),
    ]
    for what, driver, server, extra, want_rc, want in cases:
        srv.storage = driver
        srv.pg_conninfo = "host=127.0.0.1 port=1 dbname=x"
        srv.server_extra = server
        srv.extra = extra
        with open(srv.conf_path, "w") as f:
            f.write(srv._parley_config())
        p = subprocess.run([srv.bin, "--config", srv.conf_path,
                            "--check-config"], stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=30)
        out = p.stdout.decode("utf-8", "replace")
        verb = "accepts" if want_rc == 0 else "refuses"
        check("--check-config %s %s" % (verb, what),
              (p.returncode == 0) == (want_rc == 0) and want in out,
              "exit %d: %s" % (p.returncode, out[-300:]))
    # Not only --check-config: a start is refused too, before any fork.
    srv.storage = "sqlite"
    srv.server_extra = "processes = 2;"
    srv.extra = full
    with open(srv.conf_path, "w") as f:
        f.write(srv._parley_config())
    p = subprocess.run([srv.bin, "--config", srv.conf_path],
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=30)
    out = p.stdout.decode("utf-8", "replace")
    check("parleyd refuses to start processes = 2 on SQLite",
          p.returncode == 1 and "shared database" in out,
          "exit %d: %s" % (p.returncode, out[-300:]))


def ready_pids(srv, since=0):
    """{process index: pid} from the "[I] parleyd: ready (pid N)" lines
    after byte offset since (the last of each)."""
    out = {}
    for m in re.finditer(r"\[(\d+)\] parleyd: ready \(pid (\d+)\)",
                         srv.log_text(since)):
        out[int(m.group(1))] = int(m.group(2))
    return out


def sock_of(srv, i):
    return os.path.join(srv.dir, "var", "admin.sock.%d" % i)


def local_sessions(srv, i):
    """Full JIDs of the sessions of process i (its own, not the other
    process's mirrored ones); None if its admin socket does not answer."""
    rc, out = srv.ctl("--socket", sock_of(srv, i), "sessions", "--json")
    if rc != 0:
        return None
    try:
        data = json.loads(out)
    except ValueError:
        return None
    if isinstance(data, dict):
        data = data.get("sessions", [])
    return {s["jid"] for s in data if s.get("transport") != "cluster"}


def where(srv, full):
    """The process whose own session full is, or None."""
    for i in (0, 1):
        if full in (local_sessions(srv, i) or ()):
            return i
    return None


def alive(pid):
    """Whether pid is a live process (not gone, not a zombie)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def spread(srv):
    """Logs users in until each process has one; {index: (peer, bare)}
    (the other peers are logged out)."""
    by = {}
    extra = []
    for _ in range(MAX_LOGINS):
        user = harness.unique("u")
        bare = add_users(srv, user)[0]
        p = login_on(srv, user, "r")
        i = harness.wait_for(lambda: where(srv, str(p.boundjid)), STEP)
        if i is None:
            check("the session of %s is in a process's list" % p.boundjid,
                  False)
            extra.append(p)
            continue
        if i in by:
            extra.append(p)
        else:
            by[i] = (p, bare)
        if len(by) == 2:
            break
    for p in extra:
        logout(p)
    check("logins on the one port reach both processes (SO_REUSEPORT)",
          len(by) == 2, "processes reached: %s" % sorted(by))
    return by


def subscribe(a, ja, b, jb):
    a.pres(jb, "subscribe")
    got = b.inbox.wait(is_pres(frm_bare=ja, type_="subscribe"), STEP * 2)
    check("a subscribe reaches the user of the other process",
          got is not None)
    b.pres(ja, "subscribed")
    b.pres(ja, "subscribe")
    got = a.inbox.wait(is_pres(frm_bare=jb, type_="subscribe"), STEP * 2)
    check("... and one back", got is not None)
    a.pres(jb, "subscribed")
    got = a.inbox.wait(is_pres(frm=str(b.boundjid)), STEP * 2)
    check("... then each sees the other available", got is not None)


def main():
    check_config()
    r, why = start_redis()
    if r is None:
        note("SKIP: redis-server cannot start: %s" % why)
        check("test_processes.py skipped: redis-server cannot start", True)
        return
    cluster_common.redis_port[0] = r[1]
    pg = pg_common.shared()
    if not check("PostgreSQL for the processes", pg is not None):
        return
    srv = harness.Server(label="processes",
                         server_extra="processes = 2; restart_delay = 200;",
                         extra=cluster_group(r[1], harness.free_run(4)))
    srv.storage = "postgresql"
    srv.pg_conninfo = pg.conninfo("parley", "parley")
    if not srv.start():
        return
    ok = harness.wait_for(lambda: len(ready_pids(srv)) == 2, STEP * 3)
    check("both processes log 'ready'", ok, ready_pids(srv))
    pids = ready_pids(srv)
    check("two processes besides the supervisor",
          len(set(pids.values())) == 2 and srv.pid() not in pids.values(),
          "%s, supervisor %d" % (pids, srv.pid()))
    for i, other in ((0, 1), (1, 0)):
        ok = srv.wait_log(r"\[%d\] cluster: node p-%d: links up" % (i, other),
                          0, STEP * 3)
        check("process %d linked with process %d (node p-%d)" %
              (i, other, other), ok)
    if len(pids) != 2:
        srv.dump_log(40)
        return
    lt = cluster_common.lt = LoopThread()
    by = spread(srv)
    if len(by) != 2:
        lt.stop()
        return
    (a, ja), (b, jb) = by[0], by[1]
    subscribe(a, ja, b, jb)
    a.msg(str(b.boundjid), "from process 0")
    check("chat from process 0 to process 1",
          b.inbox.wait(is_msg(ja, "from process 0"), STEP * 2) is not None)
    b.msg(ja, "from process 1")
    check("chat from process 1 to process 0 (bare JID)",
          a.inbox.wait(is_msg(jb, "from process 1"), STEP * 2) is not None)

    # SIGHUP to the supervisor: each process reloads (its node name and
    # link port derived again: no "changes only on restart" warning).
    hup = srv.log_size()
    os.kill(srv.pid(), signal.SIGHUP)
    for i in (0, 1):
        ok = srv.wait_log(r"\[%d\] parleyd: configuration reloaded" % i, hup,
                          STEP * 2)
        check("SIGHUP to the supervisor: process %d reloads" % i, ok)
    check("... keeping its node name and link port",
          "changes only on restart" not in srv.log_text(hup),
          srv.log_text(hup)[-300:])
    check("... and both processes are the same ones",
          alive(pids[0]) and alive(pids[1]))

    # Process 1 killed: restarted by the supervisor.
    since = srv.log_size()
    b_full = str(b.boundjid)
    old = pids[1]
    os.kill(old, signal.SIGKILL)
    b.call(drop, b)
    ok = srv.wait_log(r"supervise: process 1 \(pid %d\) killed by signal 9"
                      % old, since, STEP * 2)
    check("the supervisor sees process 1 killed", ok)
    ok = harness.wait_for(lambda: 1 in ready_pids(srv, since), STEP * 4)
    new = ready_pids(srv, since).get(1)
    check("the supervisor starts process 1 again (a new pid, ready)",
          ok and new != old and alive(new), "old %d, new %s" % (old, new))
    check("process 0 was not touched", alive(pids[0]) and
          ready_pids(srv, since).get(0) is None)
    got = a.inbox.wait(is_pres(frm=b_full, type_="unavailable"), DEAD_WAIT)
    check("the user of process 0 sees the killed process's user "
          "unavailable", got is not None)
    for i in range(3):
        a.msg(jb, "offline %d" % i)
    errs = errors(a)
    check("messages to him meanwhile get no error (stored offline)",
          not errs, [harness.tostr(e) for e in errs[:3]])
    ok = srv.wait_log(r"\[1\] cluster: node p-0: links up", since, STEP * 3)
    check("the new process 1 links with process 0", ok)
    # He comes back (on either process): the offline messages.
    b2 = login_on(srv, jb.split("@")[0], "again")
    want = ["offline %d" % i for i in range(3)]
    got = []
    deadline = time.monotonic() + STEP * 3
    while len(got) < len(want) and time.monotonic() < deadline:
        m = b2.inbox.wait(is_msg(ja), max(0.1, deadline - time.monotonic()))
        if m is None:
            break
        if m.findtext(cluster_common.C + "body") in want:
            got.append(m.findtext(cluster_common.C + "body"))
    check("at his next login he gets the messages sent while he was "
          "unavailable, each once", sorted(got) == want, got)
    # The restarted process serves: a login that lands on it chats.
    served = None
    for _ in range(MAX_LOGINS):
        user = harness.unique("v")
        add_users(srv, user)
        p = login_on(srv, user, "r")
        if harness.wait_for(lambda: where(srv, str(p.boundjid)), STEP) == 1:
            served = p
            break
        logout(p)
    check("a new login lands on the restarted process 1", served is not None)
    if served is not None:
        served.msg(ja, "from the new process 1")
        check("... and its user chats with process 0",
              a.inbox.wait(is_msg(served.boundjid.bare,
                                  "from the new process 1"), STEP * 2)
              is not None)
        logout(served)
    logout(b2)
    logout(a)
    lt.stop()

    # SIGTERM to the supervisor: everything stops.
    children = [pids[0], new] if new else [pids[0]]
    os.kill(srv.pid(), signal.SIGTERM)
    srv.term_sent = True
    try:
        rc = srv.proc.wait(30)
    except subprocess.TimeoutExpired:
        rc = None
    check("SIGTERM: the supervisor exits 0 after its processes", rc == 0,
          "exit status %s" % rc)
    left = [p for p in children if alive(p)]
    check("no process of it is left (by pid)", not left, left)
    ok = srv.wait_log(r"supervise: stopped", 0, 1)
    check("the supervisor logs its stop", ok)
    for i in (0, 1):
        check("process %d stopped cleanly (exit status 0)" % i,
              re.search(r"process %d \(pid \d+\) exited with status 0" % i,
                        srv.log_text(since)) is not None)
    srv.stop()


if __name__ == "__main__":
    harness.run_main(main)
