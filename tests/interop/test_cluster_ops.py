#!/usr/bin/python3
"""test_cluster_ops.py - operating a cluster (doc/cluster.md): three
nodes set up as test_cluster.py does (its Redis, PostgreSQL and
start_nodes, imported, not copied), each with an HTTP listener.

  - `parleyctl cluster` on node a lists nodes b and c alive with their
    link addresses and epochs, the sessions of each (one user on each
    node: a local count here, remote counts for the others), links
    connected with bytes and stanzas both ways after a chat, and no
    unacknowledged stanza once the chat was acknowledged; --json parses,
    and GET /api/cluster gives the same; a node killed shows as dead;
  - /metrics has parley_node_info{node="a",role="cluster"} 1 and per
    link gauges for b and c.

Skips (with a note) only when redis-server cannot start.  Run with
/usr/bin/python3; `scripts/run-tests cluster`.
"""

import http.client
import json
import os
import re
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, note  # noqa: E402
import pg_common  # noqa: E402
from im_common import LoopThread, add_users  # noqa: E402
import test_cluster as tc  # noqa: E402

http_ports = {}


def more(name):
    """Each node: an HTTP listener on loopback (metrics, the admin API)."""
    http_ports[name] = harness.free_ports(1)[0]
    return "", {"listeners_extra": '{ protocol = "http"; address = '
                '"127.0.0.1"; port = %d; }' % http_ports[name]}


def http_get(name, path, headers=None):
    c = http.client.HTTPConnection("127.0.0.1", http_ports[name], timeout=10)
    c.request("GET", path, headers=headers or {})
    r = c.getresponse()
    body = r.read().decode("utf-8")
    c.close()
    return r.status, body


def cluster_json(name):
    rc, out = tc.nodes[name].ctl("cluster", "--json")
    try:
        return json.loads(out) if rc == 0 else None
    except ValueError:
        return None


def node_of(view, name):
    for n in (view or {}).get("nodes", []):
        if n.get("name") == name:
            return n
    return None


def ctl_cluster(al, bo, cy):
    """parleyctl cluster (human and JSON), GET /api/cluster."""
    al.msg(bo.boundjid.bare, "ops 1")
    check("bob (node b) gets alice's message (node a)",
          bo.inbox.wait(tc.is_msg(al.boundjid.bare, "ops 1")) is not None)
    bo.msg(al.boundjid.bare, "ops 2")
    check("alice gets bob's answer",
          al.inbox.wait(tc.is_msg(bo.boundjid.bare, "ops 2")) is not None)
    view = {}

    def settled():
        v = cluster_json("a")
        if v is None:
            return False
        view.clear()
        view.update(v)
        b, c = node_of(v, "b"), node_of(v, "c")
        return b and c and b["link"]["unacked"] == 0 and \
            b["link"]["stanzas_sent"] >= 1 and \
            b["link"]["stanzas_received"] >= 1 and b["sessions"] >= 1 and \
            c["sessions"] >= 1
    ok = harness.wait_for(settled, tc.STEP * 2, 0.2)
    check("parleyctl cluster --json parses and sees b's stanzas acknowledged",
          ok, view)
    check("... this node is a, enabled, Redis connected, 1 local session",
          view.get("node") == "a" and view.get("enabled") is True and
          view.get("redis_connected") is True and view.get("sessions") == 1,
          view)
    for name in "bc":
        n = node_of(view, name) or {}
        link = n.get("link") or {}
        check("node %s: alive, its link address and epoch, linked both ways"
              % name, n.get("state") == "alive" and
              re.match(r"^127\.0\.0\.1:\d+$", n.get("address") or "") and
              n.get("epoch") and link.get("connected") is True and
              link.get("bytes_sent", 0) > 0 and
              link.get("bytes_received", 0) > 0 and
              n.get("last_seen_ms") is not None, n)
        check("node %s: one session as seen from a" % name,
              n.get("sessions") == 1, n)
    b = node_of(view, "b") or {}
    check("node b: the acknowledgement round trip was measured",
          isinstance(b.get("link", {}).get("ack_rtt_us"), int), b)
    rc, out = tc.nodes["a"].ctl("cluster")
    lines = out.splitlines()
    check("parleyctl cluster (text): this node, then a line per node",
          rc == 0 and lines and lines[0].startswith("node a ") and
          any(re.match(r"^b\s+alive\s+127\.0\.0\.1:\d+\s+\S+\s+1\s+"
                       r"connected\s", ln) for ln in lines) and
          any(re.match(r"^c\s+alive\s", ln) for ln in lines), out)
    rc, tok = tc.nodes["a"].ctl("token", "create", "--read-only", "ops")
    st, body = http_get("a", "/api/cluster",
                        {"Authorization": "Bearer " + tok.strip()})
    try:
        api = json.loads(body)
    except ValueError:
        api = {}
    check("GET /api/cluster answers the same operation",
          st == 200 and api.get("node") == "a" and
          node_of(api, "b") is not None and node_of(api, "c") is not None,
          (st, body[:300]))


def metrics():
    st, body = http_get("a", "/metrics")
    check("/metrics: parley_node_info{node=\"a\",role=\"cluster\"} 1",
          st == 200 and 'parley_node_info{node="a",role="cluster"} 1\n'
          in body, body[-2000:])
    for name in "bc":
        check("/metrics: node %s's link connected, its sessions" % name,
              'parley_cluster_link_connected{peer="%s"} 1\n' % name in body
              and 'parley_cluster_sessions{peer="%s"} 1\n' % name in body
              and 'parley_cluster_node_up{peer="%s"} 1\n' % name in body,
              [ln for ln in body.splitlines() if name + '"' in ln])
    check("/metrics: bytes, stanzas, unacknowledged and lag gauges",
          all(re.search(r'^%s\{peer="b"\} [0-9.e+-]+$' % f, body, re.M)
              for f in ("parley_cluster_link_sent_bytes",
                        "parley_cluster_link_received_stanzas_total",
                        "parley_cluster_link_unacked_stanzas",
                        "parley_cluster_link_oldest_unacked_seconds",
                        "parley_cluster_link_ack_rtt_seconds")), "")


def dead_node(cy):
    """Node c killed: a's view says dead."""
    off = tc.nodes["a"].log_size()
    tc.nodes["c"].kill(signal.SIGKILL)
    cy.call(tc.drop, cy)
    ok = tc.nodes["a"].wait_log(r"node c is gone", off, tc.DEAD_WAIT)
    check("node a sees node c gone", ok)
    v = cluster_json("a")
    c = node_of(v, "c") or {}
    check("parleyctl cluster: node c dead", c.get("state") == "dead", c)
    st, body = http_get("a", "/metrics")
    check("/metrics: parley_cluster_node_up{peer=\"c\"} 0",
          'parley_cluster_node_up{peer="c"} 0\n' in body, "")


def main():
    r, why = tc.start_redis()
    if r is None:
        note("SKIP: redis-server cannot start: %s" % why)
        check("test_cluster_ops.py skipped: redis-server cannot start", True)
        return
    pg = pg_common.shared()
    if not check("PostgreSQL for the nodes", pg is not None):
        return
    tc.redis_port[0] = r[1]
    if not tc.start_nodes(r[1], pg.conninfo("parley", "parley"), more):
        return
    tc.lt = LoopThread()
    alice, bob, cy = (harness.unique("alice"), harness.unique("bob"),
                      harness.unique("cy"))
    add_users(tc.nodes["a"], alice, bob, cy)
    al = tc.login(alice, "a", "desk")
    bo = tc.login(bob, "b", "home")
    c = tc.login(cy, "c", "box")
    ctl_cluster(al, bo, c)
    metrics()
    dead_node(c)
    tc.logout(al)
    tc.logout(bo)
    tc.lt.stop()


if __name__ == "__main__":
    harness.run_main(main)
