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
    link gauges for b and c;
  - carbons across nodes (XEP-0280): dan has d1 on node a and d2 on node
    b, both with carbons enabled; eve on node c.  eve's chat to d1 gets
    to d2 as a <received/> copy, d1's chat to eve as a <sent/> copy, and
    d2's chat to eve reaches d1 as a <sent/> copy; once d2 disabled
    carbons, eve's next chat to d1 makes no copy for d2 (checked with a
    later message to d2 on the same path, so no wait for silence);
  - block lists across nodes (XEP-0191): fay has f1 on node a and f2 on
    node b, gus is on node c.  f2 asks for the block list, gus's chat
    reaches f2 (node c reads fay's list to check it); f1 blocks gus: f2
    gets the block push (§3.3), gus's next message to f2 is refused with
    <service-unavailable/> (node c's copy of the list followed), f2's
    message to gus with <not-acceptable/> and <blocked/> (node b's);
    f1 unblocks him: f2 gets the unblock push and gus's chat reaches f2
    again, the refused one never;
  - archive preferences across nodes (XEP-0313 §6): hal has h1 on node a
    and h2 on node b; h1 sets default='never', and h2's next chat to ivy
    (node c) is not archived: node b read the preferences again; h1 sets
    'always' back, and h2's next one is (found by h1's query);
  - fleet push (mod fleet) across nodes: two parley-agent devices, one
    connected to node a, one to node b, in one group; `parleyctl push
    --group` on node a reaches both (their payload events), and `push
    status` on node a counts both receipts (node b stores its device's
    in the shared database).

Skips (with a note) only when redis-server cannot start.  Run with
/usr/bin/python3; `scripts/run-tests cluster`.
"""

import http.client
import json
import os
import re
import signal
import sys
import time
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402
from im_common import EventBox, LoopThread, add_users  # noqa: E402
from slixmpp.xmlstream.handler import Callback  # noqa: E402
from slixmpp.xmlstream.matcher import MatchXPath  # noqa: E402
from agent_common import Agent, is_event, wait_all  # noqa: E402
import test_cluster as tc  # noqa: E402

# The default modules (README), fleet and admin (announce).
MODS = ('modules = ["disco", "ping", "version", "time", "register", '
        '"session", "roster", "presence", "offline", "vcard", "search", '
        '"private", "csi", "push", "pep", "carbons", "blocking", '
        '"contact_info", "mam", "muc", "fleet", "admin"];')

http_ports = {}


# A watch nobody uses goes after 2 s here (10 min by default): every
# section below also runs through watches dropped and taken again.
WATCH_IDLE_MS = 2000


def more(name):
    """Each node: an HTTP listener on loopback (metrics, the admin API)."""
    http_ports[name] = harness.free_ports(1)[0]
    return MODS, {"listeners_extra": '{ protocol = "http"; address = '
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
            c["sessions"] >= 1 and b.get("phase") == "ready" and \
            c.get("phase") == "ready"
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


NS_CARBONS = "urn:xmpp:carbons:2"
FWD = "urn:xmpp:forward:0"
C = tc.C


def iq(p, el, get=False):
    """An IQ (set, or get) with payload el from p: the answer's element,
    or a string saying why there is none (an error answer, a timeout)."""
    async def go():
        q = p.make_iq_get() if get else p.make_iq_set()
        q.xml.append(el)
        r = await q.send(timeout=tc.STEP)
        return r.xml
    try:
        return tc.lt.run(go(), tc.STEP * 2)
    except Exception as e:  # noqa: BLE001 - an error answer or a timeout
        return repr(e)


def iq_type(p, el):
    """iq(p, el)'s answer type, or why there is none."""
    r = iq(p, el)
    return r if isinstance(r, str) else r.get("type")


def carbons(p, on):
    """Enables or disables carbons on p; the IQ's answer type."""
    return iq_type(p, ET.Element("{%s}%s" % (NS_CARBONS,
                                             "enable" if on else "disable")))


def carbon(kind, body):
    """A <received/> or <sent/> copy of a message with that body, from
    the account's bare JID."""
    def pred(el):
        w = el.find("{%s}%s" % (NS_CARBONS, kind))
        if el.tag != C + "message" or w is None:
            return False
        m = w.find("{%s}forwarded/%smessage" % (FWD, C))
        return m is not None and m.findtext(C + "body") == body
    return pred


def any_carbon_of(body):
    return lambda el: carbon("received", body)(el) or \
        carbon("sent", body)(el)


def sync(frm, to, body):
    """A message from frm's node to to's: whatever frm's node sent that
    node before (its <c:changed/>) has arrived there (links keep order)."""
    frm.msg(str(to.boundjid), body)
    return to.inbox.wait(tc.is_msg(frm.boundjid.bare, body)) is not None


def carbons_across(dan, eve):
    d1 = tc.login(dan, "a", "d1")
    d2 = tc.login(dan, "b", "d2")
    ev = tc.login(eve, "c", "e")
    jd, je = d1.boundjid.bare, ev.boundjid.bare
    check("d1 (node a) enables carbons", carbons(d1, True) == "result")
    check("d2 (node b) enables carbons", carbons(d2, True) == "result")
    # Each node learns the other's carbons state over their link, which
    # keeps order: a message each way after the enables has come after it.
    check("both nodes know both resources' carbons state (a message each "
          "way after it arrives)",
          sync(d2, d1, "sync b-a") and sync(d1, d2, "sync a-b"))
    ev.call(ev.send_message, mto=str(d1.boundjid), mbody="to d1",
            mtype="chat")
    check("eve (node c) -> d1 (node a): d1 gets it",
          d1.inbox.wait(tc.is_msg(je, "to d1")) is not None)
    got = d2.inbox.wait(carbon("received", "to d1"))
    check("... and d2 (node b) gets a <received/> copy (XEP-0280 §6)",
          got is not None and got.get("from") == jd and
          got.get("to") == str(d2.boundjid),
          got is not None and ET.tostring(got)[:300])
    d1.msg(je, "from d1")
    check("d1 (node a) -> eve (node c): eve gets it",
          ev.inbox.wait(tc.is_msg(jd, "from d1")) is not None)
    check("... and d2 (node b) gets a <sent/> copy (XEP-0280 §7)",
          d2.inbox.wait(carbon("sent", "from d1")) is not None)
    d2.msg(je, "from d2")
    check("d2 (node b) -> eve: eve gets it",
          ev.inbox.wait(tc.is_msg(jd, "from d2")) is not None)
    check("... and d1 (node a) gets a <sent/> copy",
          d1.inbox.wait(carbon("sent", "from d2")) is not None)
    check("d2 disables carbons", carbons(d2, False) == "result")
    # Node c (eve's, where her copies are made) learns it over b's link,
    # in order: a message from d2 to eve comes after it.
    check("node c knows d2's carbons are off (d2's next message to eve "
          "arrives)", sync(d2, ev, "sync off"))
    ev.call(ev.send_message, mto=str(d1.boundjid), mbody="after off",
            mtype="chat")
    check("eve -> d1 again: d1 gets it",
          d1.inbox.wait(tc.is_msg(je, "after off")) is not None)
    # Routed on node c after the copy would have been: the same link.
    ev.call(ev.send_message, mto=str(d2.boundjid), mbody="marker",
            mtype="chat")
    check("a later message from eve to d2 arrives",
          d2.inbox.wait(tc.is_msg(je, "marker")) is not None)
    check("... and d2 (carbons disabled) got no copy of eve's message to d1",
          not [e for e in list(d2.inbox.items)
               if any_carbon_of("after off")(e)])
    for p in (d1, d2, ev):
        tc.logout(p)


NS_BLOCKING = "urn:xmpp:blocking"


def blocking(p, op, jids=()):
    """A block list request (blocklist get, block or unblock set) from p:
    the answer's element, or a string saying why there is none."""
    el = ET.Element("{%s}%s" % (NS_BLOCKING, op))
    for j in jids:
        ET.SubElement(el, "{%s}item" % NS_BLOCKING, jid=j)
    return iq(p, el, get=op == "blocklist")


def block_push(op, jid):
    def pred(el):
        q = el.find("{%s}%s" % (NS_BLOCKING, op))
        return el.get("type") == "set" and q is not None and \
            [i.get("jid") for i in q] == ([jid] if jid else [])
    return pred


def error_of(el):
    e = el.find(C + "error")
    return [c.tag.split("}")[1] for c in e] if e is not None else []


def blocking_across(fay, gus):
    f1 = tc.login(fay, "a", "f1")
    f2 = tc.login(fay, "b", "f2")
    g = tc.login(gus, "c", "g")
    jg = g.boundjid.bare
    pushes = EventBox()
    f2.call(f2.register_handler, Callback(
        "block pushes", MatchXPath("%siq/{%s}block" % (C, NS_BLOCKING)),
        lambda st: pushes.put(st.xml)))
    f2.call(f2.register_handler, Callback(
        "unblock pushes", MatchXPath("%siq/{%s}unblock" % (C, NS_BLOCKING)),
        lambda st: pushes.put(st.xml)))
    r = blocking(f2, "blocklist")
    check("f2 (node b) gets the empty block list", not isinstance(r, str) and
          r.get("type") == "result" and
          not list(r.find("{%s}blocklist" % NS_BLOCKING)), r)
    g.msg(str(f2.boundjid), "before")
    check("gus (node c) -> f2 (node b): arrives before the block",
          f2.inbox.wait(tc.is_msg(jg, "before")) is not None)
    r = blocking(f1, "block", [jg])
    check("f1 (node a) blocks gus", not isinstance(r, str) and
          r.get("type") == "result", r)
    check("f2 (node b, asked for the list) gets the block push "
          "(XEP-0191 §3.3)", pushes.wait(block_push("block", jg)) is not None)
    g.msg(str(f2.boundjid), "blocked")
    e = g.inbox.wait(lambda el: el.get("type") == "error" and
                     el.tag == C + "message")
    check("gus's next message to f2 is refused with <service-unavailable/>: "
          "node c's copy of fay's list followed (§3.3)",
          e is not None and "service-unavailable" in error_of(e),
          e is not None and ET.tostring(e)[:300])
    f2.msg(jg, "to gus")
    e = f2.inbox.wait(lambda el: el.get("type") == "error" and
                      el.tag == C + "message")
    check("f2's message to gus is refused with <not-acceptable/> and "
          "<blocked/>: node b's copy followed (§3.3)",
          e is not None and "not-acceptable" in error_of(e) and
          e.find("%serror/{%s:errors}blocked" % (C, NS_BLOCKING)) is not None,
          e is not None and ET.tostring(e)[:300])
    r = blocking(f1, "unblock", [jg])
    check("f1 unblocks gus", not isinstance(r, str) and
          r.get("type") == "result", r)
    check("f2 gets the unblock push (§3.4)",
          pushes.wait(block_push("unblock", jg)) is not None)
    g.msg(str(f2.boundjid), "after")
    check("gus -> f2 arrives again after the unblock",
          f2.inbox.wait(tc.is_msg(jg, "after")) is not None)
    check("... and the refused message never came",
          not [x for x in list(f2.inbox.items) if tc.is_msg(jg, "blocked")(x)])
    for p in (f1, f2, g):
        tc.logout(p)


NS_MAM = "urn:xmpp:mam:2"
NS_FWD = "urn:xmpp:forward:0"


def mam_prefs(p, default):
    """Sets p's archive preferences' default: the answer's type."""
    return iq_type(p, ET.Element("{%s}prefs" % NS_MAM, default=default))


def archived_bodies(p):
    """The bodies in p's archive (one unfiltered query, results in the
    inbox before the answer), or None when the query failed."""
    qid = "q%d" % time.monotonic_ns()
    if iq_type(p, ET.Element("{%s}query" % NS_MAM, queryid=qid)) != "result":
        return None
    out = []
    for el in list(p.inbox.items):
        r = el.find("{%s}result" % NS_MAM)
        if r is None or r.get("queryid") != qid:
            continue
        m = r.find("{%s}forwarded/%smessage" % (NS_FWD, C))
        if m is not None:
            out.append(m.findtext(C + "body"))
    return out


def mam_prefs_across(hal, ivy):
    h1 = tc.login(hal, "a", "h1")
    h2 = tc.login(hal, "b", "h2")
    iv = tc.login(ivy, "c", "i")
    ji = iv.boundjid.bare
    check("h1 (node a) sets default='never'", mam_prefs(h1, "never") ==
          "result")
    check("node b heard of it (h1 -> h2 after the change arrives)",
          sync(h1, h2, "sync never"))
    h2.msg(ji, "not archived")
    check("h2 (node b) -> ivy (node c): arrives",
          iv.inbox.wait(tc.is_msg(h2.boundjid.bare, "not archived"))
          is not None)
    check("h1 sets default='always' again", mam_prefs(h1, "always") ==
          "result")
    check("node b heard of it", sync(h1, h2, "sync always"))
    h2.msg(ji, "archived")
    check("h2 -> ivy: arrives",
          iv.inbox.wait(tc.is_msg(h2.boundjid.bare, "archived")) is not None)
    # The archive is written after delivery: query until it is there
    # (node b's writes are in order, so the earlier one would be too).
    bodies, end = None, time.monotonic() + tc.STEP
    while time.monotonic() < end:
        bodies = archived_bodies(h1)
        if bodies and "archived" in bodies:
            break
        time.sleep(0.2)
    check("h2's message after 'always' is archived", bodies is not None and
          "archived" in bodies, bodies)
    check("... and the one after 'never' is not: node b's copy of the "
          "preferences followed (XEP-0313 §6)",
          bodies is not None and "not archived" not in bodies, bodies)
    for p in (h1, h2, iv):
        tc.logout(p)


def fleet_push():
    a, b = tc.nodes["a"], tc.nodes["b"]
    macs = ["02:00:5e:20:%02x:%02x" % (os.getpid() % 256, i)
            for i in range(3)]
    # The third device has its account (its first connection) and is
    # off when the push is made: it connects to node b afterwards.
    late = Agent(b, macs[2]).start()
    ok = wait_all([late], is_event("connected"), 60)
    late.stop()
    agents = [Agent(a, macs[0]).start(), Agent(b, macs[1]).start()]
    ok = wait_all(agents, is_event("connected"), 60) and ok
    check("a device connects to node a, another to node b (a third one "
          "known, offline)", ok)
    if not ok:
        return agents
    rc, out = a.ctl("group", "add", "pair", *macs)
    check("group add on node a", rc == 0, out)
    payload = {"epg": "update", "cluster": True}
    rc, out = a.ctl("push", "--group", "pair", "--ttl", "120",
                    json.dumps(payload))
    pid = out.strip()
    check("push to the group from node a returns an id", rc == 0 and pid,
          out)
    for ag, node in zip(agents, "ab"):
        ev = ag.wait(is_event("payload", id="push-" + pid), tc.STEP * 2)
        check("the device on node %s receives the push" % node,
              ev is not None and json.loads(ev.get("json", "null")) ==
              payload, ev)
    st = {}
    check("push status on node a: both delivered (the receipt of the "
          "device on node b, stored by node b, read by node a), the "
          "offline one pending",
          harness.wait_for(lambda: push_counted(a, pid, st, 2, 1),
                           tc.STEP * 2, 0.2), st)
    late = Agent(b, macs[2]).start()
    agents.append(late)
    ev = late.wait(is_event("payload", id="push-" + pid), tc.STEP * 2)
    check("the offline device logs in on node b (not the push's node): it "
          "gets the push", ev is not None and
          json.loads(ev.get("json", "null")) == payload, ev)
    check("push status on node a: all three delivered",
          harness.wait_for(lambda: push_counted(a, pid, st, 3, 0),
                           tc.STEP * 2, 0.2), st)
    return agents


def push_counted(a, pid, st, delivered, pending):
    """parleyctl push status on node a (into st): the counts expected."""
    rc, out = a.ctl("push", "status", "--json", pid)
    try:
        st.update(json.loads(out) if rc == 0 else {})
    except ValueError:
        return False
    return st.get("delivered") == delivered and st.get("pending") == pending


def announce_across(al, bo, cy):
    """parleyctl announce through node a: every node's users get it, each
    from its own node (the others watch none of them)."""
    a = tc.nodes["a"]
    rc, out = a.ctl("announce", a.domain, "to every node")
    check("announce through node a", rc == 0, out)
    for p, name in ((al, "a"), (bo, "b"), (cy, "c")):
        check("... the user on node %s gets it" % name,
              p.inbox.wait(tc.is_msg(a.domain, "to every node")) is not None)


def watchers(bare):
    """Node names in the Redis set of the nodes watching bare."""
    got = tc.redis_cmd("SMEMBERS", "%sw:%s" % (tc.PREFIX, bare)) or []
    return sorted(m.decode().split(":")[0] for m in got)


def copies_of(on, node):
    """How many copies of node's sessions node `on` holds."""
    n = node_of(cluster_json(on), node)
    return n.get("copies") if n else None


def watches_across(jon, kim):
    """Watches (doc/cluster.md): node c knows nothing of jon (node a)
    until a stanza goes to him from c; then it is told of his sessions
    (a new one too) until the watch has been idle for watch_idle and kim,
    who sent to him, is gone."""
    j1 = tc.login(jon, "a", "j1")
    k = tc.login(kim, "c", "k")
    jb, kb = j1.boundjid.bare, k.boundjid.bare
    ok = harness.wait_for(lambda: watchers(jb) == ["a"], tc.STEP, 0.1)
    check("jon logged in on a: only node a watches him", ok, watchers(jb))
    before = copies_of("c", "a")
    k.msg(jb, "first")
    check("kim (node c) -> jon (node a), c not watching him yet: arrives",
          j1.inbox.wait(tc.is_msg(kb, "first")) is not None)
    check("... and node c watches jon now", watchers(jb) == ["a", "c"],
          watchers(jb))
    check("... node c holds a copy of jon's session",
          copies_of("c", "a") == (before or 0) + 1,
          (before, copies_of("c", "a")))
    j2 = tc.login(jon, "b", "j2")
    ok = harness.wait_for(lambda: copies_of("c", "b") is not None and
                          copies_of("c", "b") >= 1, tc.STEP, 0.1)
    check("jon's new session on node b: node c is told (it watches him)", ok,
          copies_of("c", "b"))
    k.msg(str(j2.boundjid), "to j2")
    check("kim -> jon/j2 (node b): arrives",
          j2.inbox.wait(tc.is_msg(kb, "to j2")) is not None)
    tc.logout(j2)
    ok = harness.wait_for(lambda: copies_of("c", "b") == 0, tc.STEP, 0.1)
    check("jon/j2 logs out: node c drops its copy", ok, copies_of("c", "b"))
    time.sleep(WATCH_IDLE_MS / 1000.0 * 2)
    check("... kim online: node c keeps watching jon past watch_idle "
          "(she sent to him)", "c" in watchers(jb), watchers(jb))
    tc.logout(k)
    ok = harness.wait_for(lambda: "c" not in watchers(jb),
                          WATCH_IDLE_MS / 1000.0 * 4 + tc.STEP, 0.2)
    check("kim gone and the watch idle: node c stops watching jon", ok,
          watchers(jb))
    ok = harness.wait_for(lambda: copies_of("c", "a") == (before or 0),
                          tc.STEP, 0.1)
    check("... and drops its copy of jon's session", ok,
          (before, copies_of("c", "a")))
    k = tc.login(kim, "c", "k2")
    k.msg(jb, "again")
    check("kim again -> jon: watched again, arrives",
          j1.inbox.wait(tc.is_msg(kb, "again")) is not None)
    for p in (j1, k):
        tc.logout(p)


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
    tc.CLUSTER_EXTRA = "watch_idle = %d;" % WATCH_IDLE_MS
    r = tc.start_cluster("test_cluster_ops.py", more)
    if r is None:
        return
    tc.lt = tc.cluster_common.lt = LoopThread()
    alice, bob, cy = (harness.unique("alice"), harness.unique("bob"),
                      harness.unique("cy"))
    add_users(tc.nodes["a"], alice, bob, cy)
    dan, eve = harness.unique("dan"), harness.unique("eve")
    add_users(tc.nodes["a"], dan, eve)
    al = tc.login(alice, "a", "desk")
    bo = tc.login(bob, "b", "home")
    c = tc.login(cy, "c", "box")
    ctl_cluster(al, bo, c)
    metrics()
    announce_across(al, bo, c)
    carbons_across(dan, eve)
    fay, gus = harness.unique("fay"), harness.unique("gus")
    add_users(tc.nodes["a"], fay, gus)
    blocking_across(fay, gus)
    hal, ivy = harness.unique("hal"), harness.unique("ivy")
    add_users(tc.nodes["a"], hal, ivy)
    mam_prefs_across(hal, ivy)
    for ag in fleet_push():
        ag.stop()
    jon, kim = harness.unique("jon"), harness.unique("kim")
    add_users(tc.nodes["a"], jon, kim)
    watches_across(jon, kim)
    dead_node(c)
    tc.logout(al)
    tc.logout(bo)
    tc.lt.stop()


if __name__ == "__main__":
    harness.run_main(main)
