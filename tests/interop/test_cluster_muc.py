#!/usr/bin/python3
"""test_cluster_muc.py - MUC rooms across a cluster (doc/cluster.md,
"Rooms"): three nodes set up as test_cluster.py does (its Redis,
PostgreSQL and start_nodes, imported), raw MUC clients from test_muc.py.

  - users on nodes a, b and c join the same room, each through its own
    node: one room (hosted by one node, whose name is the room's lease in
    Redis; `parleyctl cluster` counts it on that node only); everyone sees every occupant's presence, and a groupchat
    message reaches each occupant exactly once;
  - a configuration change (room name, persistent) made by an owner on
    node b: the status 104 notice reaches the occupants on a and c, and
    disco#info through node c shows the new name;
  - the race: users on two nodes send the first join of a new room at
    the same moment: one room (one 201, each sees the other);
  - Redis restarted empty: the host sets the room's lease again, and
    groupchat goes on;
  - the hosting node killed (SIGKILL): the occupants on the surviving
    nodes get an unavailable self-presence with status 110 and 332
    (XEP-0045: removed because of a system shutdown); they join again,
    another node takes the lease and loads the room from the database
    (its name, persistence and the owner affiliation, the history from
    the room archive), and groupchat reaches each occupant exactly once
    again;
  - that node stopped cleanly (SIGTERM): its lease is gone at once, the
    occupant on the last node gets the 332 presence once, and joins
    again, the room now hosted by the last node.

Skips (with a note) only when redis-server cannot start.  Run with
/usr/bin/python3; `scripts/run-tests test_cluster_muc.py`.
"""

import json
import os
import re
import signal
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, tostr  # noqa: E402
import test_cluster as tc  # noqa: E402
from im_common import QUIET, STEP, add_users  # noqa: E402
from test_muc import (C, MUC, Occ, admin, codes, configure,  # noqa: E402
                      is_msg, is_pres, ok)

DEAD_WAIT = tc.DEAD_WAIT


def more(name):
    # Rooms open at once (no §10.1.1 lock): the race's second joiner
    # needs no owner's configuration to get in.
    return 'muc: { lock_new_rooms = false; creation = "anyone"; };', {}


def conf():
    return "conference." + tc.nodes["a"].domain


def host_of(room):
    v = tc.redis_cmd("GET", "%sroom:%s" % (tc.PREFIX, room))
    return v.decode().split(":")[0] if v else None


def rooms_hosted(name):
    """The MUC rooms node name hosts, from parleyctl cluster --json."""
    rc, out = tc.nodes[name].ctl("cluster", "--json")
    try:
        return json.loads(out).get("rooms") if rc == 0 else None
    except ValueError:
        return None


def is_self(room, nick, type_=None):
    return lambda el: is_pres("%s/%s" % (room, nick), type_)(el) and \
        "110" in codes(el)


def join_all(clients, room):
    """Each (client, nick) joins in turn; the self-presences."""
    out = []
    for cl, nick in clients:
        cl.join(room, nick)
        out.append(cl.wait(lambda el: el.tag == C + "presence" and
                           el.get("from") == "%s/%s" % (room, nick) and
                           ("110" in codes(el) or
                            el.get("type") == "error"), STEP * 2))
    return out


def sees_everyone(clients, room, where):
    """Every client got every other one's available presence, once."""
    for cl, nick in clients:
        for other, onick in clients:
            if other is cl:
                continue
            frm = "%s/%s" % (room, onick)
            got = cl.wait(is_pres(frm), STEP)
            more_ = cl.quiet(is_pres(frm), QUIET)
            check("%s: %s sees %s's presence exactly once" % (where, nick,
                                                              onick),
                  got is not None and not more_,
                  "got %s, then %d more" % (got is not None, len(more_)))


def chat_once(clients, room, sender, body, where):
    sender[0].say(room, body)
    frm = "%s/%s" % (room, sender[1])
    for cl, nick in clients:
        got = cl.wait(is_msg(frm, "groupchat", body), STEP * 2)
        again = cl.quiet(is_msg(frm, "groupchat", body), QUIET)
        check("%s: %s gets %s's groupchat exactly once" % (where, nick,
                                                         sender[1]),
              got is not None and not again,
              "got %s, then %d more" % (got is not None, len(again)))


def room_name(cl, room):
    r = cl.iq_to(room, "<query xmlns='http://jabber.org/protocol/"
                 "disco#info'/>")
    if r is None:
        return None
    ident = r.find(".//{http://jabber.org/protocol/disco#info}identity")
    return ident.get("name") if ident is not None else tostr(r)


def one_room(users):
    """Users on a, b and c in one room; a config change through b."""
    room = "%s@%s" % (harness.unique("hall"), conf())
    cls = [(users["a"], "ann"), (users["b"], "ben"), (users["c"], "cat")]
    selfs = join_all(cls, room)
    check("joins through nodes a, b and c each get a self-presence (110)",
          all(s is not None and s.get("type") is None for s in selfs),
          [tostr(s) for s in selfs])
    check("... the first one created the room (201), the others joined it",
          "201" in codes(selfs[0]) and
          not any("201" in codes(s) for s in selfs[1:] if s is not None),
          [codes(s) for s in selfs if s is not None])
    host = host_of(room)
    check("the room's lease in Redis names node a (the first join's)",
          host == "a", host)
    hosted = {n: rooms_hosted(n) for n in "abc"}
    check("parleyctl cluster: node a hosts one MUC room, b and c none",
          hosted == {"a": 1, "b": 0, "c": 0}, hosted)
    rc, out = tc.nodes["a"].ctl("cluster")
    check("... and says so in its first line",
          rc == 0 and "1 MUC rooms hosted" in out.splitlines()[0], out)
    sees_everyone(cls, room, "one room")
    chat_once(cls, room, cls[1], "hello from b", "one room")
    chat_once(cls, room, cls[2], "hello from c", "one room")
    # ben (node b) becomes an owner, then configures the room.
    r = admin(users["a"], room, "<item affiliation='owner' jid='%s'/>"
              % users["b"].bare)
    check("ann (node a) makes ben an owner", ok(r), tostr(r))
    r = configure(users["b"], room, roomname="Cluster hall",
                  persistentroom="1", enablelogging="1")
    check("ben (node b) configures the room: name, persistent, logged",
          ok(r), tostr(r))
    for cl, nick in cls:
        got = cl.wait(lambda el: el.tag == C + "message" and
                      el.get("from") == room and "104" in codes(el),
                      STEP * 2)
        check("%s gets the configuration change notice (104)" % nick,
              got is not None)
    name = room_name(users["c"], room)
    check("disco#info through node c names the room 'Cluster hall'",
          name == "Cluster hall", name)
    chat_once(cls, room, cls[2], "logged before", "one room, logged")
    return room, cls


def redis_restart(proc, room, cls):
    """Redis restarted empty: the host sets the room's lease again, and
    the room goes on where it was."""
    host = host_of(room)
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
    r, why = tc.start_redis(tc.redis_port[0])
    if not check("redis-server restarts empty on the same port",
                 r is not None, why):
        return None
    back = harness.wait_for(lambda: host_of(room) == host, STEP * 2)
    check("after a Redis restart the host (node %s) sets the room's lease "
          "again" % host, back, host_of(room))
    chat_once(cls, room, cls[0], "after the redis restart",
              "after a Redis restart")
    return r[0]


def race(users):
    """The first join of a new room through b and c at the same moment."""
    room = "%s@%s" % (harness.unique("race"), conf())
    b, c = users["b"], users["c"]
    b.join(room, "rb")
    c.join(room, "rc")
    sb = b.wait(lambda el: el.tag == C + "presence" and
                el.get("from") == room + "/rb", STEP * 2)
    sc = c.wait(lambda el: el.tag == C + "presence" and
                el.get("from") == room + "/rc", STEP * 2)
    check("race: both first joins (nodes b and c) get a self-presence",
          sb is not None and sc is not None and "110" in codes(sb) and
          "110" in codes(sc),
          "%s / %s" % (tostr(sb), tostr(sc)))
    n201 = [x for x in (sb, sc) if x is not None and "201" in codes(x)]
    check("race: exactly one of them created the room (one 201)",
          len(n201) == 1, len(n201))
    # The one who joined second saw the first in the room (initial
    # presences come before the self-presence); the first sees the
    # second's arrival.
    gb = b.wait(is_pres(room + "/rc"), STEP)
    gc = c.wait(is_pres(room + "/rb"), STEP)
    check("race: each sees the other in the room: one room, not two",
          gb is not None and gc is not None,
          "b sees rc: %s, c sees rb: %s" % (gb is not None, gc is not None))
    host = host_of(room)
    check("race: the lease names node b or c", host in ("b", "c"), host)
    b.send("<presence to='%s/rb' type='unavailable'/>" % room)
    c.send("<presence to='%s/rc' type='unavailable'/>" % room)
    b.wait(is_self(room, "rb", "unavailable"))
    c.wait(is_self(room, "rc", "unavailable"))


def takeover(room, cls):
    host = host_of(room)
    if not check("the room's host is known (lease in Redis)", host in
                 tc.nodes, host):
        return
    srv = tc.nodes[host]
    survivors = [(cl, nick) for cl, nick in cls if cl.srv is not srv]
    srv.kill(signal.SIGKILL)
    for cl, nick in survivors:
        got = cl.wait(is_self(room, nick, "unavailable"), DEAD_WAIT)
        check("node %s killed: %s (node %s) gets an unavailable "
              "self-presence with status 332 (XEP-0045: system shutdown)"
              % (host, nick, [k for k, v in tc.nodes.items()
                                if v is cl.srv][0]),
              got is not None and "332" in codes(got),
              tostr(got))
    # Joining again: a surviving node takes the room, from the database
    # (what came before, e.g. ben's presence as an owner, is dropped).
    for cl, nick in survivors:
        cl.drain(0.3)
    selfs = join_all(survivors, room)
    check("the survivors join again (110)",
          all(s is not None and s.get("type") is None for s in selfs),
          [tostr(s) for s in selfs])
    check("... into the persistent room, not a new one (no 201)",
          not any("201" in codes(s) for s in selfs if s is not None),
          [codes(s) for s in selfs if s is not None])
    new_host = host_of(room)
    check("the lease names a surviving node now",
          new_host in tc.nodes and new_host != host, new_host)
    name = room_name(survivors[-1][0], room)
    check("the room kept its configuration (name from the database)",
          name == "Cluster hall", name)
    me = [s for s in selfs if s is not None and
          s.get("from", "").endswith("/ben")]
    if me:
        item = me[0].find("{%s#user}x/{%s#user}item" % (MUC, MUC))
        check("... and its affiliations (ben is still an owner)",
              item is not None and item.get("affiliation") == "owner",
              tostr(me[0]))
    for (cl, nick), s in zip(survivors, selfs):
        h = cl.wait(lambda el: is_msg(room + "/cat", "groupchat",
                                      "logged before")(el) and
                    el.find("{urn:xmpp:delay}delay") is not None, STEP)
        check("%s's join gets the history from the room archive (a "
              "delayed 'logged before')" % nick, h is not None)
    sees_everyone(survivors, room, "after the takeover")
    chat_once(survivors, room, survivors[0], "we are back",
              "after the takeover")
    return new_host, survivors


def clean_stop(room, host, survivors):
    """The host stops (SIGTERM): it tells the occupants (332) and
    deletes its lease at once; the room moves on the next join."""
    srv = tc.nodes[host]
    left = [(cl, nick) for cl, nick in survivors if cl.srv is not srv]
    rc = srv.kill(signal.SIGTERM)
    bad = [p for p in harness.SANITIZER_PATTERNS
           if re.search(p, srv.log_text())]
    check("node %s exits 0 on SIGTERM, no crash or sanitizer report in "
          "its log" % host, rc == 0 and not bad, "%s %s" % (rc, bad))
    check("node %s stopped cleanly: the room's lease is gone at once"
          % host, host_of(room) is None, host_of(room))
    for cl, nick in left:
        got = cl.wait(is_self(room, nick, "unavailable"), STEP * 2)
        check("... %s gets an unavailable self-presence with status 332"
              % nick, got is not None and "332" in codes(got), tostr(got))
        again = cl.quiet(is_self(room, nick, "unavailable"), QUIET)
        check("... once (not again when node %s is seen gone)" % host,
              not again, [tostr(x) for x in again])
        cl.drain(0.3)
    selfs = join_all(left, room)
    check("... and joins again, the room hosted by its own node now",
          all(s is not None and s.get("type") is None for s in selfs) and
          host_of(room) not in (None, host), host_of(room))


def main():
    r = tc.start_cluster("test_cluster_muc.py", more)
    if r is None:
        return
    names = {n: harness.unique("m" + n) for n in "abc"}
    add_users(tc.nodes["a"], *names.values())
    users = {}
    for n in "abc":
        users[n] = Occ(tc.nodes[n], names[n], "r", label="user on " + n)
        users[n].presence()
    for cl in users.values():
        cl.drain(0.2)
    room, cls = one_room(users)
    race(users)
    if redis_restart(r[0], room, cls) is None:
        return
    got = takeover(room, cls)
    if got:
        clean_stop(room, *got)
    for cl in users.values():
        cl.close()


if __name__ == "__main__":
    harness.run_main(main)
