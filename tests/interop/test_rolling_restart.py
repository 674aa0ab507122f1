#!/usr/bin/python3
"""test_rolling_restart.py - cluster nodes that open their listeners only
once linked, drain on request, and a supervisor's rolling restart that
moves every session once (doc/cluster.md, "Start-up" and "Rolling
restart"; issue 18).

Starts a throwaway redis-server and PostgreSQL (as test_processes.py),
then:

  1. Start-up window: node a runs; x (on a) is a user whose contact y is
     offline.  Node b starts; as soon as its port accepts (the harness
     waits for it), y logs in on b, and x sends to y at once: each
     message arrives live (no <delay/>: not through offline storage).
     b's log says it was ready, linked with a, before its first
     "listening on" line.  a's view (parleyctl cluster --json) shows b
     "ready".
  2. Multi-host drain: `parleyctl cluster quiesce b` through node a: b's
     phase becomes "quiesced" in a's view and b's client port refuses
     connections while y stays connected; POST
     /api/cluster/nodes/b/drain on a's HTTP admin API (404 for a node
     that is not alive): y gets the <system-shutdown/> stream error, b
     exits 0.
  3. Rolling restart under a supervisor (processes = 2, drain_rate = 4):
     eight clients that reconnect after a stream error; their sessions
     are found on processes 0 and 1 through each process's admin socket;
     `parleyctl cluster restart` on process 0: processes 2 and 3 start,
     become ready, 0 and 1 stop accepting and are drained one after the
     other (each exits 0).  Every client got exactly one stream error
     (system-shutdown) and two sessions in all, the second on process 2
     or 3: no session moved twice.  Meanwhile one client sends a message
     every 50 ms to another with XEP-0198 (acknowledgement per stanza):
     every message the server acknowledged reaches the receiver (live,
     or from offline storage at its new login).  Then SIGUSR2 to the
     supervisor: a second rolling restart, back to processes 0 and 1,
     each client moved once more.  Last, SIGUSR2 with a configuration
     the new processes cannot load: the restart is abandoned, the old
     processes keep serving every client, none moved.

Skips (with a note, not a failure) only when redis-server cannot be
started.  Every wait is bounded; run with /usr/bin/python3;
`scripts/run-tests rolling`.
"""

import http.client
import json
import os
import re
import signal
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, note  # noqa: E402
import pg_common  # noqa: E402
import cluster_common  # noqa: E402
from cluster_common import C, Peer, is_msg, logout, start_redis  # noqa: E402
from im_common import STEP, EventBox, LoopThread, add_users  # noqa: E402

TTL_MS = 1500
SECRET = "rolling-test-secret-%d" % os.getpid()
PREFIX = "tr%d:" % os.getpid()
DELAY = "{urn:xmpp:delay}delay"
CLIENTS = 8


def group(node, redis_port, link, extra=""):
    return """
cluster: { enable = true; node = "%s"; redis = "127.0.0.1:%d";
           link = "127.0.0.1:%d"; ttl = %d; key_prefix = "%s";
           secret = "%s"; %s };
""" % (node, redis_port, link, TTL_MS, PREFIX, SECRET, extra)


class RollPeer(Peer):
    """A client that connects again after its stream ends (as a client
    told <system-shutdown/> does), counting its sessions and drops."""

    def __init__(self, jid, srv, sm=False):
        super().__init__(jid, srv)
        self.starts = 0
        self.drops = 0
        self.conditions = []
        self.leaving = False
        self.acked = set()
        self.sessions = EventBox()
        if sm:
            self.register_plugin("xep_0198", {"allow_resume": False,
                                              "window": 1})
            self.add_event_handler("stanza_acked", self._acked)
        self.add_event_handler("session_start", self._counted)
        self.add_event_handler("stream_error", lambda e: self.conditions.
                               append(e["condition"]))
        self.add_event_handler("disconnected", self._again)

    def _acked(self, st):
        if st.name == "message" and st["body"]:
            self.acked.add(st["body"])

    def _counted(self, _):
        self.starts += 1
        self.sessions.put(self.starts)

    def _again(self, _):
        if self.leaving:
            return
        self.drops += 1
        self.loop.call_later(0.2, lambda: self.connect(
            (self.srv.host, self.srv.direct_port), use_ssl=True))


def roll_login(srv, user, sm=False):
    jid = "%s@%s/r" % (user, srv.domain)
    p, why = cluster_common.start_peer(lambda: RollPeer(jid, srv, sm), srv)
    check("%s logs in" % jid, why is None, why)
    return p if why is None else None


def leave(p):
    p.leaving = True
    logout(p)


def cluster_view(srv, sock=None):
    args = (["--socket", sock] if sock else []) + ["cluster", "--json"]
    rc, out = srv.ctl(*args)
    try:
        return json.loads(out) if rc == 0 else None
    except ValueError:
        return None


def peer_phase(view, name):
    for n in (view or {}).get("nodes", []):
        if n.get("name") == name:
            return n.get("phase")
    return None


# ------------------------------------------------------ 1 and 2: two nodes

def http_post(port, path, token):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("POST", path, body=b"{}",
              headers={"Authorization": "Bearer " + token,
                       "Content-Type": "application/json"})
    r = c.getresponse()
    body = r.read().decode("utf-8")
    c.close()
    return r.status, body


def two_nodes(redis_port, conninfo):
    links = harness.free_ports(2)
    http_port = harness.free_ports(1)[0]
    a = harness.Server(label="a", extra=group("a", redis_port, links[0]),
                       listeners_extra='{ protocol = "http"; address = '
                       '"127.0.0.1"; port = %d; }' % http_port)
    b = harness.Server(label="b", extra=group("b", redis_port, links[1],
                                              "drain_rate = 20;"))
    for s in (a, b):
        s.storage = "postgresql"
        s.pg_conninfo = conninfo
    if not a.start():
        return
    x_user, y_user = harness.unique("x"), harness.unique("y")
    jx, jy = add_users(a, x_user, y_user)
    x = cluster_common.login_on(a, x_user, "r", where="node a")
    # b starts; y logs in there the moment its port accepts.
    since = 0
    if not b.start():
        leave(x)
        return
    y = cluster_common.login_on(b, y_user, "r", where="node b")
    for i in range(5):
        x.msg(jy, "early %d" % i)
    got = []
    for i in range(5):
        m = y.inbox.wait(is_msg(jx, "early %d" % i), STEP)
        got.append(m is not None and m.find(DELAY) is None)
    check("messages to a user of a node that just started arrive live "
          "(not through offline storage)", all(got), got)
    text = b.log_text(since)
    ready = re.search(r"cluster: node b ready \(linked with every live "
                      r"node\)", text)
    listen = re.search(r"c2s: listening on", text)
    check("node b opened its listeners only once linked with node a",
          ready is not None and listen is not None and
          ready.start() < listen.start() and
          re.search(r"node a: links up", text[:ready.start()]) is not None,
          text[-1500:])
    ok = harness.wait_for(lambda: peer_phase(cluster_view(a), "b") ==
                          "ready", STEP * 2, 0.2)
    check("node a's view: node b is ready", ok, cluster_view(a))
    view = cluster_view(b) or {}
    check("parleyctl cluster --json on b: phase ready",
          view.get("phase") == "ready", view)
    # 2: quiesce b through a, then drain it.
    rc, out = a.ctl("cluster", "quiesce", "b")
    check("parleyctl cluster quiesce b (through node a)", rc == 0, out)
    ok = harness.wait_for(lambda: peer_phase(cluster_view(a), "b") ==
                          "quiesced", STEP * 2, 0.2)
    check("node a's view: node b is quiesced", ok, cluster_view(a))
    rc, out = a.ctl("cluster")
    check("parleyctl cluster (text) on a: b quiesced",
          rc == 0 and re.search(r"^b\s+quiesced\s", out, re.M), out)
    c = http.client.HTTPConnection("127.0.0.1", http_port, timeout=10)
    c.request("GET", "/metrics")
    r = c.getresponse()
    body = r.read().decode("utf-8")
    c.close()
    check("/metrics on a: parley_node_phase{phase=\"ready\"} 1",
          r.status == 200 and
          'parley_node_phase{phase="ready"} 1' in body and
          'parley_node_phase{phase="draining"} 0' in body,
          (r.status, [ln for ln in body.splitlines() if "phase" in ln]))

    def refused():
        try:
            socket.create_connection((b.host, b.direct_port), 1).close()
            return False
        except OSError:
            return True
    check("a quiesced node accepts no client connection", refused())
    x.msg(jy, "while quiesced")
    check("... and keeps its sessions (y still gets messages)",
          y.inbox.wait(is_msg(jx, "while quiesced"), STEP) is not None)
    errs = []
    y.add_event_handler("stream_error",
                        lambda e: errs.append(e["condition"]))
    rc, tok = a.ctl("token", "create", "ops")
    tok = tok.strip()
    st, body = http_post(http_port, "/api/cluster/nodes/nosuch/drain", tok)
    check("POST /api/cluster/nodes/nosuch/drain: 404 (no such live node)",
          st == 404, (st, body))
    st, body = http_post(http_port, "/api/cluster/nodes/b/drain", tok)
    check("POST /api/cluster/nodes/b/drain through node a: 200", st == 200,
          (st, body))
    ok = harness.wait_for(lambda: errs, STEP * 2)
    check("the drained node ends y's stream with <system-shutdown/>",
          errs == ["system-shutdown"], errs)
    try:
        rc = b.proc.wait(STEP * 3)
    except Exception:  # noqa: BLE001
        rc = None
    check("the drained node stops by itself, exit status 0", rc == 0, rc)
    check("... after saying it was drained",
          b.wait_log(r"cluster: node b drained: 1 sessions ended", 0, 1))
    b.term_sent = True  # it stopped by itself, as asked
    b.stop()
    leave(x)
    cluster_common.drop(y)
    a.stop()


# ------------------------------------------------- 3: the rolling restart

def sock_of(srv, i):
    return os.path.join(srv.dir, "var", "admin.sock.%d" % i)


def local_sessions(srv, i):
    rc, out = srv.ctl("--socket", sock_of(srv, i), "sessions", "--json")
    if rc != 0:
        return set()
    try:
        data = json.loads(out)
    except ValueError:
        return set()
    if isinstance(data, dict):
        data = data.get("sessions", [])
    return {s["jid"] for s in data if s.get("transport") != "cluster"}


def placement(srv, slots):
    """{full JID: process index} over the given processes."""
    out = {}
    for i in slots:
        for j in local_sessions(srv, i):
            out[j] = i
    return out


def started_pids(srv, since=0):
    out = {}
    for m in re.finditer(r"supervise: process (\d+) started \(pid (\d+)\)",
                         srv.log_text(since)):
        out[int(m.group(1))] = int(m.group(2))
    return out


def rolling(redis_port, conninfo):
    srv = harness.Server(label="roll",
                         server_extra="processes = 2; restart_delay = 200;",
                         extra=group("p", redis_port, harness.free_run(4),
                                     "drain_rate = 4;"))
    srv.storage = "postgresql"
    srv.pg_conninfo = conninfo
    if not srv.start():
        return
    for i in (0, 1):
        check("process %d ready" % i,
              srv.wait_log(r"supervise: process %d \(pid \d+\) is ready" % i,
                           0, STEP * 3))
    users = [harness.unique("k%d" % i) for i in range(CLIENTS)]
    add_users(srv, *users)
    peers = []
    for i, u in enumerate(users):
        p = roll_login(srv, u, sm=i < 2)
        if p is None:
            for q in peers:
                leave(q)
            return
        peers.append(p)
    sender, receiver = peers[0], peers[1]
    fulls = [str(p.boundjid) for p in peers]
    before = {}
    ok = harness.wait_for(lambda: before.update(placement(srv, (0, 1))) or
                          all(f in before for f in fulls), STEP * 2, 0.2)
    check("every session is on process 0 or 1 before the restart", ok,
          before)
    note("before: %s" % sorted(before.values()))
    old = started_pids(srv)
    # The conversation: a message every 50 ms, acknowledged one by one.
    sent = []
    stop = threading.Event()

    def talk():
        i = 0
        while not stop.is_set():
            body = "c%d" % i
            sent.append(body)
            sender.msg(receiver.boundjid.bare, body)
            i += 1
            stop.wait(0.05)
    th = threading.Thread(target=talk, daemon=True)
    th.start()
    time.sleep(0.3)  # some traffic before the restart (not a wait for
    #                  an event: the talk thread runs regardless)
    since = srv.log_size()
    rc, out = srv.ctl("--socket", sock_of(srv, 0), "cluster", "restart")
    check("parleyctl cluster restart (process 0 asks its supervisor)",
          rc == 0, out)
    ok = srv.wait_log(r"supervise: rolling restart done: processes 2 to 3 "
                      r"serve", since, STEP * 12)
    check("the supervisor's rolling restart completes", ok,
          srv.log_text(since)[-2000:])
    ok = harness.wait_for(lambda: all(p.starts >= 2 for p in peers),
                          STEP * 4, 0.2)
    check("every client has a session again", ok,
          [(str(p.boundjid), p.starts, p.drops) for p in peers])
    time.sleep(0.5)  # a little traffic on the new processes
    stop.set()
    th.join(5)
    text = srv.log_text(since)
    order = [m.group(0) for m in re.finditer(
        r"supervise: (new processes 2 to 3 ready|draining process \d|"
        r"process [01] \(pid \d+\) exited with status \d+)", text)]
    want = ["supervise: new processes 2 to 3 ready"]
    check("the new processes were ready before any old one drained, and "
          "the old ones were drained one after the other, each exiting 0",
          len(order) == 5 and order[0] == want[0] and
          order[1].startswith("supervise: draining process") and
          "exited with status 0" in order[2] and
          order[3].startswith("supervise: draining process") and
          "exited with status 0" in order[4] and
          order[1][-1] != order[3][-1], order)
    after = {}
    ok = harness.wait_for(lambda: after.update(placement(srv, (2, 3))) or
                          all(f in after for f in fulls), STEP * 2, 0.2)
    check("every session is now on process 2 or 3 (the new generation)",
          ok, after)
    note("after: %s" % sorted(after.values()))
    moved = [(str(p.boundjid), p.starts, p.drops, p.conditions)
             for p in peers]
    check("no session moved twice: each client had one stream error "
          "(system-shutdown) and two sessions in all",
          all(p.starts == 2 and p.drops == 1 and
              p.conditions == ["system-shutdown"] for p in peers), moved)
    new = started_pids(srv, since)
    check("processes 2 and 3 are new processes, 0 and 1 are gone",
          set(new) == {2, 3} and not (set(new.values()) &
                                      set(old.values())), (old, new))
    acked = set(sender.acked)
    bodies = set()

    def all_in():
        for m in list(receiver.inbox.items):
            if m.tag == C + "message":
                bodies.add(m.findtext(C + "body"))
        return acked <= bodies
    ok = harness.wait_for(all_in, STEP * 3, 0.2)
    live = {m.findtext(C + "body") for m in receiver.inbox.items
            if m.tag == C + "message" and m.find(DELAY) is None}
    note("received from offline storage: %s" % sorted(bodies - live))
    if not ok:
        leave(receiver)
        again = roll_login(srv, receiver.boundjid.user)
        if again:
            harness.wait_for(lambda: acked <= bodies | {
                m.findtext(C + "body") for m in again.inbox.items
                if m.tag == C + "message"}, STEP)
            late = {m.findtext(C + "body") for m in again.inbox.items
                    if m.tag == C + "message"}
            note("at a new login: %s" % sorted(late & (acked - bodies)))
            leave(again)
    note("conversation: %d sent, %d acknowledged by the server, %d "
         "received" % (len(sent), len(acked), len(bodies & set(sent))))
    check("the conversation ran across the restart (messages acknowledged)",
          len(acked) >= 20, len(acked))
    check("every message the server acknowledged reached the receiver",
          ok, sorted(acked - bodies, key=lambda b: int(b[1:]))[:20])
    view = cluster_view(srv, sock_of(srv, 2)) or {}
    check("parleyctl cluster on process 2: phase ready, process 3 ready",
          view.get("phase") == "ready" and
          peer_phase(view, "p-3") == "ready", view)
    # Again, with SIGUSR2 to the supervisor: back to slots 0 and 1.
    since = srv.log_size()
    os.kill(srv.pid(), signal.SIGUSR2)
    ok = srv.wait_log(r"supervise: rolling restart done: processes 0 to 1 "
                      r"serve", since, STEP * 12)
    check("SIGUSR2 to the supervisor: a second rolling restart, back to "
          "processes 0 and 1", ok, srv.log_text(since)[-1500:])
    ok = harness.wait_for(lambda: all(p.starts >= 3 for p in peers),
                          STEP * 4, 0.2)
    again = {}
    ok = ok and harness.wait_for(
        lambda: again.update(placement(srv, (0, 1))) or
        all(f in again for f in fulls), STEP * 2, 0.2)
    check("... every client moved once more, to process 0 or 1",
          ok and all(p.starts == 3 and p.drops == 2 for p in peers),
          [(str(p.boundjid), p.starts, p.drops) for p in peers])
    # A configuration the new processes cannot load: the restart is
    # abandoned, the old processes keep serving, no client moves.
    with open(srv.conf_path) as f:
        good = f.read()
    with open(srv.conf_path, "w") as f:
        f.write(good + "\nthis is not a configuration\n")
    since = srv.log_size()
    os.kill(srv.pid(), signal.SIGUSR2)
    ok = srv.wait_log(r"supervise: rolling restart abandoned: process \d "
                      r"died before it was ready", since, STEP * 6)
    check("a new generation that cannot start: the rolling restart is "
          "abandoned", ok, srv.log_text(since)[-1500:])
    with open(srv.conf_path, "w") as f:
        f.write(good)
    ok = harness.wait_for(lambda: not re.search(
        r"process [23] started", srv.log_text(since)) or re.search(
        r"process 3 \(pid \d+\) (exited|killed)", srv.log_text(since)) and
        re.search(r"process 2 \(pid \d+\) (exited|killed)",
                  srv.log_text(since)), STEP * 2, 0.2)
    again = placement(srv, (0, 1))
    check("... the old processes still serve every client, none moved",
          ok and all(f in again for f in fulls) and
          all(p.starts == 3 and p.drops == 2 for p in peers),
          (again, [(p.starts, p.drops) for p in peers]))
    for p in peers:
        leave(p)
    srv.stop()


def main():
    r, why = start_redis()
    if r is None:
        note("SKIP: redis-server cannot start: %s" % why)
        check("test_rolling_restart.py skipped: redis-server cannot start",
              True)
        return
    cluster_common.redis_port[0] = r[1]
    pg = pg_common.shared()
    if not check("PostgreSQL for the nodes", pg is not None):
        return
    cluster_common.lt = LoopThread()
    conninfo = pg.conninfo("parley", "parley")
    two_nodes(r[1], conninfo)
    rolling(r[1], conninfo)
    cluster_common.lt.stop()


if __name__ == "__main__":
    harness.run_main(main)
