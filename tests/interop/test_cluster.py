#!/usr/bin/python3
"""test_cluster.py - three parleyd nodes sharing one domain through Redis
and one PostgreSQL database (doc/cluster.md).

Starts a throwaway redis-server (loopback, its own directory, no
persistence) and a throwaway PostgreSQL (pg_common.py), then nodes a, b
and c (cluster: { ttl = 1500; }), and slixmpp clients spread over them:

  - subscription both ways between users on two nodes (RFC 6121 §3.1),
    with the roster pushes reaching a second resource on a third node,
    and presence in both directions;
  - chat to a full JID and to a bare JID on another node;
  - a message to a bare JID whose resources are on two other nodes goes
    to the highest priority one only (RFC 6121 §8.5.2.1.1);
  - a new resource gets a remote contact's presence through its probe;
    binding a full JID bound on another node ends that session with
    <conflict/>;
  - Redis restarted empty on the same port: the nodes write their
    registry entries and liveness keys again, chat still works, and no
    node is declared dead for it;
  - node c stopped (SIGSTOP) mid-conversation, messages sent to its
    user meanwhile (written to its link, never acknowledged), then c
    killed with SIGKILL: the survivors see it dead (log) and its user's
    contacts get unavailable presence from its resource within a few
    seconds; the unacknowledged messages and those sent from then on
    are stored offline (shared database) and delivered, each once, when
    the user logs in again on a surviving node; the Redis registry
    follows (entries of the dead node purged);
  - node c started again: the others link with it, its users are
    reachable; killed and started again at once (within the TTL): the
    old process is forgotten (its registry entries purged), the new
    one linked;
  - node c stalled past the TTL (SIGSTOP) and running again: called dead
    meanwhile (its user unavailable to his contact, his registry entry
    purged), it notices and announces its sessions again: registry
    entry back, available presence to the contact, messages delivered;
  - node b stopped with SIGTERM: its user appears unavailable to his
    contact on node a, its registry entries are gone.

--check-config refuses a cluster group without a secret, with a host
name for Redis, without a link address, with a bad node name or with a
room lease shorter than the ttl.

Skips (with a note, not a failure) only when redis-server cannot be
started.  Every wait is bounded; run with /usr/bin/python3;
`scripts/run-tests cluster`.
"""

import json
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, note  # noqa: E402
import pg_common  # noqa: E402
import cluster_common  # noqa: E402
from cluster_common import (C, drop, errors, is_msg, is_pres,  # noqa: E402
                            logout, push_for, redis_cmd, redis_port,
                            start_redis)
from im_common import STEP, ImClient, LoopThread, add_users  # noqa: E402

TTL_MS = 1500
# More settings of every node's cluster group (test_cluster_ops.py).
CLUSTER_EXTRA = ""
# Bounded wait for the death of a node: the TTL, the poll (ttl/3) and
# the unavailable broadcast (a roster read), with room for a busy box.
DEAD_WAIT = TTL_MS / 1000.0 * 2 + 8

SECRET = "cluster-test-secret-%d" % os.getpid()
PREFIX = "t%d:" % os.getpid()
nodes = {}


def registry(bare):
    """The registry hash of a bare JID: {resource: node name}."""
    flat = redis_cmd("HGETALL", "%ss:%s" % (PREFIX, bare)) or []
    out = {}
    for k, v in zip(flat[::2], flat[1::2]):
        out[k.decode()] = v.decode().split(":")[0]
    return out


def login(user, node, resource, priority=0):
    return cluster_common.login_on(nodes[node], user, resource, priority,
                                   "node %s" % node)


# ------------------------------------------------------------------ steps

def start_nodes(redis_port, conninfo, more=None):
    """Nodes a, b and c, linked with each other; more(name), if given,
    returns (extra configuration, harness.Server keywords) for a node
    (test_cluster_ops.py: HTTP listeners, modules)."""
    links = harness.free_ports(3)
    for i, name in enumerate("abc"):
        extra, kw = more(name) if more else ("", {})
        srv = harness.Server(label=name, extra="""
cluster: { enable = true; node = "%s"; redis = "127.0.0.1:%d";
           link = "127.0.0.1:%d"; ttl = %d; key_prefix = "%s";
           secret = "%s"; %s };
""" % (name, redis_port, links[i], TTL_MS, PREFIX, SECRET, CLUSTER_EXTRA) +
            extra, **kw)
        srv.storage = "postgresql"
        srv.pg_conninfo = conninfo
        nodes[name] = srv
        if not srv.start():
            return False
    # Every node has both directions up with the two others.
    for name, srv in nodes.items():
        for other in "abc":
            if other == name:
                continue
            ok = srv.wait_log(r"node %s: links up" % other, timeout=15)
            if not check("node %s: links with node %s up" % (name, other),
                         ok):
                srv.dump_log(30)
                return False
    return True


def subscriptions_and_chat(al, bo):
    ja, jb = al.boundjid.bare, bo.boundjid.bare
    phone = login(ja.split("@")[0], "c", "phone")  # alice's 2nd resource
    al.pres(jb, "subscribe")
    got = bo.inbox.wait(is_pres(frm_bare=ja, type_="subscribe"))
    check("subscribe from node a reaches node b (RFC 6121 §3.1.3)",
          got is not None)
    bo.pres(ja, "subscribed")
    bo.pres(ja, "subscribe")
    got = al.inbox.wait(is_pres(frm_bare=jb, type_="subscribe"))
    check("subscribe from node b reaches node a", got is not None)
    al.pres(jb, "subscribed")
    ok = phone.pushes.wait(push_for(jb, "both"), STEP * 2)
    check("roster push (subscription both) reaches alice's resource on "
          "node c (RFC 6121 §2.1.6)", ok is not None,
          [harness.tostr(e) for e in phone.pushes.items][-3:])
    ok = bo.pushes.wait(push_for(ja, "both"), STEP * 2)
    check("roster push (subscription both) reaches bob on node b",
          ok is not None)
    # Presence after the subscription (RFC 6121 §3.1.6: the contact's
    # presence once subscribed; then a fresh update each way).
    bo.call(bo.send_presence, pstatus="at desk")
    got = al.inbox.wait(lambda e: is_pres(frm=str(bo.boundjid))(e) and
                        e.findtext(C + "status") == "at desk", STEP * 2)
    check("bob's presence (node b) reaches alice (node a)", got is not None)
    got = phone.inbox.wait(lambda e: is_pres(frm=str(bo.boundjid))(e) and
                           e.findtext(C + "status") == "at desk", STEP * 2)
    check("bob's presence (node b) reaches alice's phone (node c)",
          got is not None)
    al.call(al.send_presence, pstatus="in the lab")
    got = bo.inbox.wait(lambda e: is_pres(frm=str(al.boundjid))(e) and
                        e.findtext(C + "status") == "in the lab", STEP * 2)
    check("alice's presence (node a) reaches bob (node b)", got is not None)
    # Chat both ways: to the full JID, and to the bare JID.
    al.msg(str(bo.boundjid), "hello b")
    got = bo.inbox.wait(is_msg(ja, "hello b"))
    check("chat a -> b to the full JID", got is not None)
    bo.msg(ja, "hello a")
    got_a = al.inbox.wait(is_msg(jb, "hello a"))
    got_p = phone.inbox.wait(is_msg(jb, "hello a"))
    check("chat b -> a to the bare JID: both equal-priority resources "
          "(nodes a and c) get it", got_a is not None and got_p is not None,
          "a: %s, c: %s" % (got_a is not None, got_p is not None))
    reg = registry(ja)
    check("the registry in Redis has alice's resources and their nodes",
          reg == {"desk": "a", "phone": "c"}, reg)
    logout(phone)
    return True


def probe_and_conflict(al, bo):
    """A new resource of alice on node c gets bob's presence (node b)
    from the probe its initial presence sends, answered on node c from
    bob's remote session; a bind of bob's full JID on node c ends his
    session on node b with <conflict/> (RFC 6120 §7.7.2.2)."""
    ja = al.boundjid.bare
    tablet = login(ja.split("@")[0], "c", "tablet")
    got = tablet.inbox.wait(lambda e: is_pres(frm=str(bo.boundjid))(e) and
                            e.findtext(C + "status") == "at desk", STEP * 2)
    check("a new resource on node c gets bob's presence (node b) through "
          "its initial probe (RFC 6121 §4.3)", got is not None)
    logout(tablet)
    user = harness.unique("fay")
    add_users(nodes["a"], user)
    old = ImClient(nodes["b"], user, "same")
    new = ImClient(nodes["c"], user, "same")
    closed = old.read_until_closed(STEP * 2)
    check("binding fay/same on node c closes fay/same on node b",
          closed, "still open")
    check("... with a <conflict/> stream error",
          b"conflict" in old.raw, old.raw[-300:])
    r = new.iq("<ping xmlns='urn:xmpp:ping'/>", to=nodes["a"].domain)
    check("... and the new session works", r is not None and
          r.get("type") == "result", harness.tostr(r))
    new.close()


def highest_priority(al):
    ja = al.boundjid.bare
    user = harness.unique("dora")
    jd = add_users(nodes["a"], user)[0]
    low = login(user, "b", "low", priority=1)
    high = login(user, "c", "high", priority=5)
    al.msg(jd, "to the best")
    got = high.inbox.wait(is_msg(ja, "to the best"))
    check("a message to a bare JID with resources only on other nodes goes "
          "to the highest priority one (node c, RFC 6121 §8.5.2.1.1)",
          got is not None)
    stray = low.inbox.wait(is_msg(ja, "to the best"), 1.0)
    check("... and not to the lower priority one (node b)", stray is None)
    logout(low)
    logout(high)


def redis_restart(al, bo, proc):
    """Redis stops and an empty one starts on the same port: the nodes
    reconnect and write their entries again; nobody is declared dead."""
    ja, jb = al.boundjid.bare, bo.boundjid.bare
    offsets = {n: nodes[n].log_size() for n in "abc"}
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
    r, why = start_redis(redis_port[0])
    if not check("redis-server restarts on the same port", r is not None,
                 why):
        return None
    ok = harness.wait_for(lambda: registry(ja) == {"desk": "a"} and
                          registry(jb) == {"home": "b"}, STEP * 2)
    check("after a Redis restart the nodes write the registry again", ok,
          "%s %s" % (registry(ja), registry(jb)))
    ok = harness.wait_for(
        lambda: all(redis_cmd("EXISTS", PREFIX + "node:" + n) == 1
                    for n in "abc"), STEP)
    check("... and their liveness keys", ok)
    al.msg(str(bo.boundjid), "after the restart")
    check("chat a -> b still works after the Redis restart",
          bo.inbox.wait(is_msg(ja, "after the restart")) is not None)
    gone = [n for n in "abc" if nodes[n].wait_log(r"is gone", offsets[n],
                                                  0.1)]
    check("no node is declared gone because Redis restarted", not gone,
          gone)
    return r[0]


def unacked(frm, to):
    """Stanzas node frm sent node to and has no acknowledgement of yet
    (parleyctl cluster --json), or None when unknown."""
    rc, out = nodes[frm].ctl("cluster", "--json")
    try:
        for n in json.loads(out).get("nodes", []) if rc == 0 else []:
            if n.get("name") == to:
                return (n.get("link") or {}).get("unacked")
    except ValueError:
        pass
    return None


def contact_on_c(al, name, resource):
    """A new user (name, made unique) logged in on node c as resource, to whose presence
    alice (node a) is subscribed and which she has seen: (bare JID, peer),
    or (bare JID, None) after a failed check."""
    ja = al.boundjid.bare
    user = harness.unique(name)
    jx = add_users(nodes["a"], user)[0]
    x = login(user, "c", resource)
    al.pres(jx, "subscribe")
    if x.inbox.wait(is_pres(frm_bare=ja, type_="subscribe")) is None:
        check("%s (node c) gets alice's subscribe" % name, False)
        return jx, None
    x.pres(ja, "subscribed")
    got = al.inbox.wait(is_pres(frm=str(x.boundjid)), STEP * 2)
    check("alice (node a) sees %s (node c) available once subscribed"
          % name, got is not None)
    return jx, x


def kill_node(al):
    """erin on node c talks with alice on node a; node c is killed."""
    ja = al.boundjid.bare
    je, er = contact_on_c(al, "erin", "laptop")
    user = je.split("@")[0]
    if er is None:
        return
    er_full = str(er.boundjid)
    for i in range(5):
        al.msg(je, "before %d" % i)
    before = [er.inbox.wait(is_msg(ja, "before %d" % i)) for i in range(5)]
    check("mid-conversation: erin (node c) got alice's messages",
          all(before), [b is not None for b in before])
    c = nodes["c"]
    # Node c acknowledged them to node a (a link's <a n=/>): what the
    # test stops below is only what follows.  Without this wait a slow
    # node c (the sanitizer pass) may not have acknowledged them yet, and
    # node a sends them again after its death: at least once, as
    # doc/cluster.md says, but not what this test counts.
    check("node a holds nothing unacknowledged toward node c",
          harness.wait_for(lambda: unacked("a", "c") == 0, STEP * 2),
          unacked("a", "c"))
    offsets = {n: nodes[n].log_size() for n in "ab"}
    # Node c stops (SIGSTOP): what alice sends now is written to its link
    # and never acknowledged; then it is killed.  Those must not be lost.
    os.kill(c.pid(), signal.SIGSTOP)
    t0 = time.monotonic()
    for i in range(5):
        al.msg(je, "in flight %d" % i)
    al.msg(str(al.boundjid), "barrier")  # node a routed the five
    check("node a routed the messages sent while node c is stopped",
          al.inbox.wait(is_msg(ja, "barrier")) is not None)
    c.kill(signal.SIGKILL)
    er.call(drop, er)
    # Messages sent at once: the links said the node went away; they are
    # stored (no error back), not lost in a dead socket.
    for i in range(5):
        al.msg(je, "after %d" % i)
    got = al.inbox.wait(is_pres(frm=er_full, type_="unavailable"), DEAD_WAIT)
    took = time.monotonic() - t0
    check("node c stopped then killed: alice (node a) gets erin's "
          "unavailable presence within %.0f s" % DEAD_WAIT, got is not None)
    if got is not None:
        note("unavailable presence %.2f s after node c stopped (ttl %d ms)"
             % (took, TTL_MS))
    for n in "ab":
        ok = nodes[n].wait_log(r"node c is gone", offsets[n], DEAD_WAIT)
        check("node %s sees node c gone" % n, ok)
    gone = harness.wait_for(lambda: "laptop" not in registry(je), DEAD_WAIT)
    check("the dead node's entry of erin is purged from the registry",
          gone, registry(je))
    for i in range(5, 10):
        al.msg(je, "after %d" % i)
    errs = errors(al)
    check("messages to erin after the kill get no error (stored offline)",
          not errs, [harness.tostr(e) for e in errs[:3]])
    # erin again, on node b: the ten messages from the shared database.
    er2 = login(user, "b", "desk")
    want = ["in flight %d" % i for i in range(5)] + \
        ["after %d" % i for i in range(10)]
    got = []
    deadline = time.monotonic() + STEP * 3
    while len(got) < len(want) and time.monotonic() < deadline:
        m = er2.inbox.wait(is_msg(ja), max(0.1, deadline - time.monotonic()))
        if m is None:
            break
        got.append(m.findtext(C + "body"))
    extra = er2.inbox.wait(is_msg(ja), 1.0)
    if extra is not None:
        got.append(extra.findtext(C + "body"))
    check("erin, back on node b, gets the 5 messages node c never "
          "acknowledged and the 10 sent after its death",
          sorted(got) == sorted(want), "got %s" % got)
    check("... each once", len(got) == len(set(got)), got)
    check("the registry has erin on node b", registry(je) == {"desk": "b"},
          registry(je))
    logout(er2)
    ok = harness.wait_for(lambda: registry(je) == {}, STEP)
    check("erin's entry leaves the registry at logout", ok, registry(je))


def check_config():
    """--check-config refuses a cluster group without what it needs."""
    srv = harness.Server(label="config")
    base = 'enable = true; node = "x"; redis = "127.0.0.1:1"; ' \
        'link = "127.0.0.1:2"; secret = "%s";' % SECRET
    cases = [
        ("no secret", base.replace(SECRET, ""), "cluster.secret"),
        ("a host name as redis", base.replace("127.0.0.1:1", "redis:6379"),
         "cluster.redis"),
        ("no link", base.replace('link = "127.0.0.1:2";', ""),
         "cluster.link"),
        ("a bad node name", base.replace('"x"', '"a b"'), "cluster.node"),
        ("a room lease shorter than the ttl",
         base + " ttl = 5000; room_lease = 2000;", "cluster.room_lease"),
    ]
    for what, group, want in cases:
        srv.extra = "cluster: { %s };" % group
        with open(srv.conf_path, "w") as f:
            f.write(srv._parley_config())
        p = subprocess.run([srv.bin, "--config", srv.conf_path,
                            "--check-config"], stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=30)
        out = p.stdout.decode("utf-8", "replace")
        check("--check-config refuses a cluster group with %s" % what,
              p.returncode != 0 and want in out,
              "exit %d: %s" % (p.returncode, out[-300:]))
    srv.extra = "cluster: { %s };" % base
    with open(srv.conf_path, "w") as f:
        f.write(srv._parley_config())
    p = subprocess.run([srv.bin, "--config", srv.conf_path, "--check-config"],
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=30)
    check("--check-config accepts a complete cluster group",
          p.returncode == 0, p.stdout.decode("utf-8", "replace")[-300:])


def rejoin(al):
    """Node c starts again (same name, a new process): the others link
    with it and its users are reachable."""
    offsets = {n: nodes[n].log_size() for n in "ab"}
    if not nodes["c"].start():
        return
    for n in "ab":
        ok = nodes[n].wait_log(r"node c: links up", offsets[n], STEP * 3)
        check("node %s links with node c again after its restart" % n, ok)
    user = harness.unique("gus")
    jg = add_users(nodes["a"], user)[0]
    g = login(user, "c", "r")
    al.msg(jg, "welcome back")
    check("a user of the restarted node c gets a message from node a",
          g.inbox.wait(is_msg(al.boundjid.bare, "welcome back"))
          is not None)
    check("the registry has him on node c", registry(jg) == {"r": "c"},
          registry(jg))
    # Killed and started again at once, within the TTL: the others see
    # a new process of the same name (its epoch) and forget the old one.
    offsets = {n: nodes[n].log_size() for n in "ab"}
    nodes["c"].kill(signal.SIGKILL)
    g.call(drop, g)
    if not nodes["c"].start():
        return
    for n in "ab":
        ok = nodes[n].wait_log(r"node c is gone", offsets[n], DEAD_WAIT)
        check("node %s sees the old process of node c gone" % n, ok)
        ok = nodes[n].wait_log(r"node c: links up", offsets[n], STEP * 3)
        check("node %s links with its new process" % n, ok)
    ok = harness.wait_for(lambda: registry(jg) == {}, DEAD_WAIT)
    check("the old process's entry of gus is purged", ok, registry(jg))
    g2 = login(user, "c", "r2")
    al.msg(jg, "welcome back again")
    check("a user of the new process gets a message from node a",
          g2.inbox.wait(is_msg(al.boundjid.bare, "welcome back again"))
          is not None)
    logout(g2)


def presumed_dead(al):
    """Node c stalls past the TTL (SIGSTOP) and runs again: the others
    call it dead (hal unavailable to alice, his registry entry purged);
    once it notices, hal is back in the registry and alice sees him
    available again, and he gets her messages."""
    ja = al.boundjid.bare
    jh, h = contact_on_c(al, "hal", "r")
    if h is None:
        return
    h_full = str(h.boundjid)
    c = nodes["c"]
    offsets = {n: nodes[n].log_size() for n in "abc"}
    os.kill(c.pid(), signal.SIGSTOP)
    try:
        got = al.inbox.wait(is_pres(frm=h_full, type_="unavailable"),
                            DEAD_WAIT)
        check("node c stalled past the TTL: alice gets hal's unavailable "
              "presence", got is not None)
        ok = harness.wait_for(lambda: registry(jh) == {}, DEAD_WAIT)
        check("... and hal's registry entry is purged", ok, registry(jh))
    finally:
        os.kill(c.pid(), signal.SIGCONT)
    ok = c.wait_log(r"node c was presumed dead", offsets["c"], DEAD_WAIT)
    check("node c, running again, sees that it was presumed dead", ok)
    got = al.inbox.wait(is_pres(frm=h_full), DEAD_WAIT + TTL_MS / 1000.0)
    check("alice sees hal available again", got is not None and
          got.get("type") is None, got is not None and harness.tostr(got))
    ok = harness.wait_for(lambda: registry(jh) == {"r": "c"}, DEAD_WAIT)
    check("hal is in the registry again, on node c", ok, registry(jh))
    al.msg(jh, "still there?")
    check("hal gets alice's message after node c came back",
          h.inbox.wait(is_msg(ja, "still there?")) is not None)
    logout(h)


def graceful_stop(al, bo):
    """Node b stops on SIGTERM (a rolling restart): bob, subscribed with
    alice, appears unavailable to her, and b's entries leave Redis."""
    jb = bo.boundjid.bare
    t0 = time.monotonic()
    nodes["b"].stop()
    got = al.inbox.wait(is_pres(frm=str(bo.boundjid), type_="unavailable"),
                        DEAD_WAIT)
    check("node b stopped (SIGTERM): alice (node a) gets bob's unavailable "
          "presence", got is not None)
    if got is not None:
        note("unavailable presence %.2f s after SIGTERM" %
             (time.monotonic() - t0))
    ok = harness.wait_for(lambda: registry(jb) == {}, DEAD_WAIT)
    check("... and bob's registry entry is gone", ok, registry(jb))
    bo.call(drop, bo)


def start_cluster(script, more=None):
    """Redis, the shared PostgreSQL and nodes a, b and c (start_nodes,
    with more): Redis's (proc, port), or None when they could not start
    (a skip, said, when redis-server cannot run here; a failed check
    otherwise)."""
    r, why = start_redis()
    if r is None:
        note("SKIP: redis-server cannot start: %s" % why)
        check("%s skipped: redis-server cannot start" % script, True)
        return None
    pg = pg_common.shared()
    if not check("PostgreSQL for the nodes", pg is not None):
        return None
    redis_port[0] = r[1]
    if not start_nodes(r[1], pg.conninfo("parley", "parley"), more):
        return None
    return r


def main():
    global lt
    check_config()
    r = start_cluster("test_cluster.py")
    if r is None:
        return
    lt = cluster_common.lt = LoopThread()
    alice, bob = harness.unique("alice"), harness.unique("bob")
    add_users(nodes["a"], alice, bob)
    al = login(alice, "a", "desk")
    bo = login(bob, "b", "home")
    subscriptions_and_chat(al, bo)
    probe_and_conflict(al, bo)
    highest_priority(al)
    redis_restart(al, bo, r[0])
    kill_node(al)
    rejoin(al)
    presumed_dead(al)
    graceful_stop(al, bo)
    logout(al)
    lt.stop()


if __name__ == "__main__":
    harness.run_main(main)
