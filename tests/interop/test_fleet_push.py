#!/usr/bin/python3
"""test_fleet_push.py - head-end push (mod fleet, parleyctl push/group)
to real parley-agent processes.

50 agents with fake MAC addresses register themselves (XEP-0077) and stay
connected; a group of all 50 is made; 10 agents are stopped; a push to the
group must reach the 40 online agents at once (XEP-0184 receipts make them
"delivered") and stay pending for the 10; a second push with a 2-second TTL
to the 10 must expire undelivered; parleyd restarts (pushes and states
survive); the 10 come back and get the first push, never the expired one;
status counts are exact at each step; a push to an unknown device fails
with the reason listed; bad admin requests get errors; the socket is 0600.
Run with /usr/bin/python3.
"""

import json
import os
import stat
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, note  # noqa: E402
from agent_common import Agent, is_event, wait_all  # noqa: E402

N, OFF = 50, 10
MODS = ('modules = ["disco", "ping", "version", "time", "register", '
        '"session", "roster", "presence", "offline", "vcard", "search", '
        '"private", "fleet"];')


def ctl(srv, *args, stdin=None):
    p = subprocess.run([srv.ctl_bin, "--config", srv.conf_path] + list(args),
                       input=stdin, capture_output=True, text=True,
                       timeout=60)
    return p.returncode, p.stdout, p.stderr


def status(srv, pid):
    rc, out, err = ctl(srv, "push", "status", "--json", pid)
    return json.loads(out) if rc == 0 else {"rc": rc, "err": err}


def wait_status(srv, pid, want, timeout=30):
    st = {}

    def reached():
        st.clear()
        st.update(status(srv, pid))
        return all(st.get(k) == v for k, v in want.items())
    return harness.wait_for(reached, timeout, 0.2), st


def main():
    srv = harness.Server(extra=MODS + " fleet: { max_targets = 60; };",
                         register_extra="per_ip_per_minute = 1000;")
    if not srv.start():
        harness.finish()
    sock = os.path.join(srv.dir, "var", "admin.sock")
    mode = os.stat(sock).st_mode if os.path.exists(sock) else 0
    check("admin socket exists with mode 0600",
          stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600, oct(mode))

    macs = ["02:00:5e:%02x:%02x:%02x" % (0x10, i // 256, i % 256)
            for i in range(N)]
    agents = [Agent(srv, m).start() for m in macs]
    # Generous: 50 logins on a loaded 2-core machine (sanitizer pass too).
    ok = wait_all(agents, is_event("connected"), 150)
    check("%d agents register and connect" % N, ok,
          [a.localpart for a in agents if not a.seen(is_event("connected"))])
    if not ok:
        harness.finish()
    # Counted by the server: an agent whose registration answer came too
    # late for it (a loaded machine) finds the account made and logs in.
    regs = srv.counter("registrations")
    check("each agent registered itself once (the server's count)",
          regs == N, "%s registrations; agents that saw theirs: %d"
          % (regs, sum(1 for a in agents if a.seen(is_event("registered")))))

    rc, out, err = ctl(srv, "group", "add", "g50", *macs)
    check("group add of %d devices" % N, rc == 0 and out.split() ==
          ["g50", str(N)], (rc, out, err))
    rc, out, err = ctl(srv, "group", "list", "--json", "g50")
    members = json.loads(out)["groups"]["g50"] if rc == 0 else []
    check("group list shows the members as device ids",
          sorted(members) == sorted(a.localpart for a in agents), members)

    offline = agents[:OFF]
    online = agents[OFF:]
    log_mark = len(srv.log_text())
    for a in offline:
        a.stop()
    # The server has ended their sessions (else a push could still go to
    # a closing stream instead of staying pending).
    gone = harness.wait_for(lambda: all(
        "c2s: closed %s/" % a.jid in srv.log_text(log_mark)
        for a in offline), 30)
    check("the server ends the stopped agents' sessions", gone,
          [a.jid for a in offline
           if "c2s: closed %s/" % a.jid not in srv.log_text(log_mark)])

    for a in agents:
        a.set_mark()
    payload = {"epg": "update", "version": 7}
    rc, out, err = ctl(srv, "push", "--group", "g50", "--ttl", "120",
                       json.dumps(payload))
    p1 = out.strip()
    check("push to the group returns an id", rc == 0 and p1, (rc, out, err))
    got = wait_all(online, is_event("payload", id="push-" + p1), 30)
    check("the %d online agents receive it at once" % (N - OFF), got)
    bodies = [json.loads(a.seen(is_event("payload", id="push-" + p1))[0]
                         ["json"]) for a in online
              if a.seen(is_event("payload", id="push-" + p1))]
    check("the payload arrives unchanged",
          bodies and all(b == payload for b in bodies), bodies[:1])
    ok, st = wait_status(srv, p1, {"delivered": N - OFF, "pending": OFF,
                                   "expired": 0, "failed": 0})
    check("status: %d delivered, %d pending (receipts counted)"
          % (N - OFF, OFF), ok, st)

    rc, out, err = ctl(srv, "push", "--device",
                       ",".join(a.mac for a in offline), "--ttl", "2",
                       '{"short": "lived"}')
    p2 = out.strip()
    check("push with a 2 s TTL to the offline devices", rc == 0 and p2,
          (rc, out, err))
    ok, st = wait_status(srv, p2, {"expired": OFF, "pending": 0,
                                   "delivered": 0}, timeout=20)
    check("status: all %d expired after the TTL" % OFF, ok, st)

    rc, out, err = ctl(srv, "push", "status", p1)
    check("text status lists the counts", rc == 0 and
          "delivered %d" % (N - OFF) in out and "pending %d" % OFF in out,
          out)

    # Restart: pushes and delivery states survive.
    for a in online:
        a.set_mark()
    srv.kill(15)
    if not srv.start():
        harness.finish()
    ok, st = wait_status(srv, p1, {"delivered": N - OFF, "pending": OFF})
    check("after a restart push 1 still has %d delivered, %d pending"
          % (N - OFF, OFF), ok, st)
    ok, st = wait_status(srv, p2, {"expired": OFF})
    check("after a restart push 2 is still expired", ok, st)
    ok = wait_all(online, lambda e: e.get("event") == "connected", 90)
    check("online agents reconnect after the restart", ok)

    for a in offline:
        a.set_mark()
        a.start()
    got = wait_all(offline, is_event("payload", id="push-" + p1), 90)
    check("the %d returning agents receive push 1" % OFF, got,
          [a.localpart for a in offline
           if not a.seen(is_event("payload", id="push-" + p1))])
    ok, st = wait_status(srv, p1, {"delivered": N, "pending": 0,
                                   "expired": 0, "failed": 0})
    check("status: all %d delivered" % N, ok, st)
    # A marker pushed to every device now is queued behind anything the
    # server still had for it: once every agent has it, a wrong delivery
    # would have arrived.
    rc, out, err = ctl(srv, "push", "--all", '{"marker": 1}')
    pm = out.strip()
    check("a marker push to every device reaches all %d" % N, rc == 0 and
          wait_all(agents, is_event("payload", id="push-" + pm), 60),
          (rc, out, err))
    late = [a.localpart for a in offline
            if a.seen(is_event("payload", id="push-" + p2))]
    check("the expired push is never delivered", not late, late)
    dups = [a.localpart for a in online
            if a.seen(is_event("payload", id="push-" + p1))]
    check("online agents do not get push 1 again after the restart",
          not dups, dups)

    rc, out, err = ctl(srv, "push", "--device", "02:00:5e:ff:ff:ff,"
                       + macs[20], "--json", '{"x": 1}')
    ans = json.loads(out) if rc == 0 else {}
    p3 = ans.get("id", "")
    ok, st = wait_status(srv, p3, {"delivered": 1, "failed": 1})
    check("a push to an unknown device fails for it", ok, st)
    check("the failure lists the device and the reason",
          st.get("failures") == [{"device": "02005effffff",
                                  "reason": "no-such-account"}], st)

    rc, out, err = ctl(srv, "push", "--device", macs[30],
                       '{"command": "nosuch"}')
    p5 = out.strip()
    ok, st = wait_status(srv, p5, {"delivered": 1})
    res = {}

    def results():
        rc, out, err = ctl(srv, "push", "status", "--json", "--verbose", p5)
        res.clear()
        res.update(json.loads(out).get("results", {}) if rc == 0 else {})
        return res
    harness.wait_for(results, 10, 0.1)
    check("the device's JSON answer is kept as its result (verbose status)",
          ok and res.get(agents[30].localpart, {}).get("error") ==
          "unknown-command" and res[agents[30].localpart].get("reply-to") ==
          "push-" + p5, (st, res))

    rc, out, err = ctl(srv, "push", "--all", '{"all": true}')
    p4 = out.strip()
    ok, st = wait_status(srv, p4, {"delivered": N, "pending": 0})
    check("push to every device of the host reaches all %d" % N, ok, st)

    rc, out, err = ctl(srv, "push", "status", "nosuchpush")
    check("status of an unknown push fails with item-not-found",
          rc == 1 and "item-not-found" in err, (rc, err))
    rc, out, err = ctl(srv, "push", "--group", "nogroup", "{}")
    check("push to an unknown group fails", rc == 1 and
          "item-not-found" in err, (rc, err))
    rc, out, err = ctl(srv, "push", "--group", "g50", "{not json")
    check("a payload that is not JSON is refused", rc == 1, (rc, err))
    rc, out, err = ctl(srv, "group", "add", "big",
                       *["02:00:5e:20:00:%02x" % i for i in range(61)])
    check("a group over max_targets is refused", rc == 1 and
          "policy-violation" in err, (rc, err))
    rc, out, err = ctl(srv, "push", "--device", ",".join(
        "02:00:5e:20:00:%02x" % i for i in range(61)), "{}")
    check("a push over max_targets is refused", rc == 1 and
          "policy-violation" in err, (rc, err))
    rc, out, err = ctl(srv, "group", "remove", "g50", macs[0])
    check("group remove of one member", rc == 0 and out.split() ==
          ["g50", str(N - 1)], (rc, out, err))
    rc, out, err = ctl(srv, "group", "remove", "g50")
    rc2, out2, err2 = ctl(srv, "group", "list")
    check("group remove of the whole group", rc == 0 and rc2 == 0 and
          "g50" not in out2, (rc, out, rc2, out2))
    import socket
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock)
    s.sendall(b"this is not json\n{\"op\":\"frobnicate\"}\n")
    f = s.makefile("rb")
    a1, a2 = json.loads(f.readline()), json.loads(f.readline())
    s.close()
    check("admin socket answers garbage with bad-request",
          a1.get("error") == "bad-request", a1)
    check("admin socket answers an unknown op",
          a2.get("error") == "feature-not-implemented", a2)

    rc, out, err = ctl(srv, "--socket", "/nonexistent/admin.sock", "push",
                       "status", p1)
    check("parleyctl exits 3 when parleyd is unreachable", rc == 3,
          (rc, err))

    bad = {}
    for a in agents:
        rc = a.stop()
        if rc != 0:
            bad[a.localpart] = rc
    check("every agent exits 0 on SIGTERM", not bad, bad)
    harness.finish()


main()
