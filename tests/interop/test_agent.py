#!/usr/bin/python3
"""test_agent.py - parley-agent, the device daemon, against a real parleyd.

Provisioning: first start registers MAC@domain (XEP-0077) with a generated
secret in a 0600 state file; a restart reuses it without registering; an
operator's --token (account made with parleyctl adduser) logs in without
registering.  Commands: a controller (raw socket client) sends XEP-0335
JSON; the agent acknowledges (XEP-0184), runs the configured handler with
the JSON on stdin and answers with its output as JSON; a handler past its
timeout is killed and reported; unknown commands, non-objects and
malformed JSON get JSON error replies and the agent keeps running; a JID
that is not a controller is refused; pings are answered; chat bodies are
reported.  Reconnect: three agents survive a parleyd restart, their delays
come from exponential backoff with jitter (they differ, and the
timestamps of their reconnections differ).  Memory: RSS while connected
is reported.  Run with /usr/bin/python3.
"""

import datetime
import json
import os
import re
import stat
import sys
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, note  # noqa: E402
from agent_common import Agent, CutProxy, is_event, wait_all  # noqa: E402

NS_JSON = "urn:xmpp:json:0"
NS_RECEIPTS = "urn:xmpp:receipts"


def write_handler(d, name, body):
    path = os.path.join(d, name)
    with open(path, "w") as f:
        f.write("#!/bin/sh\n" + body + "\n")
    os.chmod(path, 0o755)
    return path


def controller(srv, user):
    c = harness.RawClient(srv.host, srv.starttls_port, srv.domain)
    c.connect_tls()
    r = c.register(user, "secret")
    c.close()
    if r.get("type") != "result":
        raise RuntimeError("register failed: %s" % ET.tostring(r))
    c = harness.RawClient(srv.host, srv.starttls_port, srv.domain)
    c.login(user, "secret", resource="ctl")
    c.send("<presence/>")
    return c


def json_reply(c, dev_jid, reply_to, timeout=20):
    """The JSON object of the next XEP-0335 reply from dev_jid."""
    def pred(e):
        if e.tag != "{jabber:client}message" or \
                not (e.get("from") or "").startswith(dev_jid):
            return False
        j = e.find("{%s}json" % NS_JSON)
        if j is None:
            return False
        try:
            return json.loads(j.text).get("reply-to") == reply_to
        except ValueError:
            return False
    try:
        el = c.next(pred, timeout)
    except Exception as e:  # noqa: BLE001 - timeout or closed
        return {"timeout": str(e)}
    return json.loads(el.find("{%s}json" % NS_JSON).text) if el is not None \
        else {"timeout": True}


def send_json(c, to, mid, text, receipt=True):
    req = "<request xmlns='%s'/>" % NS_RECEIPTS if receipt else ""
    body = text.replace("&", "&amp;").replace("<", "&lt;")
    c.send("<message to='%s' id='%s'><json xmlns='%s'>%s</json>%s</message>"
           % (to, mid, NS_JSON, body, req))


def main():
    srv = harness.Server(register_extra="per_ip_per_minute = 1000;")
    if not srv.start():
        harness.finish()
    hdir = os.path.join(srv.dir, "handlers")
    os.makedirs(hdir)
    echo = write_handler(hdir, "echo",
                         'in=$(cat); printf \'{"cmd":"%s","input":%s}\' '
                         '"$PARLEY_COMMAND" "$in"')
    slow = write_handler(hdir, "slow", "sleep 30")
    fail = write_handler(hdir, "fail", "echo not json; exit 3")

    # -- provisioning
    ctl_user = harness.unique("ctl")
    ctl_jid = "%s@%s" % (ctl_user, srv.domain)
    a = Agent(srv, "02:AB:CD:00:00:01",
              handlers={"echo": echo, "slow": slow, "fail": fail},
              controllers=[ctl_jid],
              extra=["--handler-timeout", "1"], ping=1).start()
    check("agent registers on first start",
          a.wait(is_event("registered"), 20) is not None, a.log_text())
    ev = a.wait(is_event("connected"), 20)
    check("agent connects as the lower-case MAC localpart",
          ev is not None and ev["jid"].startswith("02abcd000001@localhost/"),
          ev)
    check("agent's stream is TLS", ev is not None and ev.get("secured"), ev)
    mode = stat.S_IMODE(os.stat(a.state_file).st_mode)
    st = json.load(open(a.state_file))
    check("state file has mode 0600", mode == 0o600, oct(mode))
    check("state file holds the JID and a 256-bit secret",
          st.get("jid") == "02abcd000001@localhost" and
          len(st.get("secret", "")) == 64 and st.get("registered") is True,
          st)

    # -- commands
    c = controller(srv, ctl_user)
    send_json(c, a.jid, "c1", '{"command": "echo", "args": {"n": 1}}')
    try:
        rcpt = c.next(lambda e: e.find("{%s}received" % NS_RECEIPTS)
                      is not None, 10)
    except Exception as e:  # noqa: BLE001
        rcpt = None
        note(e)
    check("agent acknowledges with an XEP-0184 receipt",
          rcpt is not None and rcpt.find("{%s}received" % NS_RECEIPTS)
          .get("id") == "c1", harness.tostr(rcpt))
    r = json_reply(c, a.jid, "c1")
    check("command dispatched to its handler, JSON on stdin",
          r.get("status") == "ok" and r.get("exit") == 0 and
          r.get("result") == {"cmd": "echo",
                              "input": {"command": "echo", "args": {"n": 1}}},
          r)
    send_json(c, a.jid, "c2", '{"command": "fail"}')
    r = json_reply(c, a.jid, "c2")
    check("a failing handler is reported with its exit code and output",
          r.get("status") == "failed" and r.get("exit") == 3 and
          r.get("result") == "not json\n", r)
    # The handler sleeps 30 s: a "timeout" answer before that means the
    # agent killed it at --handler-timeout 1.
    send_json(c, a.jid, "c3", '{"command": "slow"}')
    r = json_reply(c, a.jid, "c3", timeout=25)
    check("a handler past its timeout is killed and reported",
          r.get("status") == "timeout", r)
    send_json(c, a.jid, "c4", '{"command": "nosuch"}')
    r = json_reply(c, a.jid, "c4")
    check("an unknown command gets an unknown-command error",
          r.get("error") == "unknown-command", r)
    send_json(c, a.jid, "c5", '{"command": "echo", ')
    r = json_reply(c, a.jid, "c5")
    check("malformed JSON gets a malformed-json error reply",
          r.get("error") == "malformed-json" and r.get("detail"), r)
    send_json(c, a.jid, "c6", '[1, 2, 3]')
    r = json_reply(c, a.jid, "c6")
    check("a JSON value that is not an object gets bad-request",
          r.get("error") == "bad-request", r)
    send_json(c, a.jid, "c7", "{'single': 'quotes'} \u00e9\u00e9 \\x")
    r = json_reply(c, a.jid, "c7")
    check("JSON-like text with bad quoting gets malformed-json",
          r.get("error") == "malformed-json", r)
    send_json(c, a.jid, "c8", '{"command": "echo", "args": "after"}')
    r = json_reply(c, a.jid, "c8")
    check("the agent keeps working after bad input",
          r.get("status") == "ok" and a.alive(), r)
    c.send("<message to='%s' type='chat' id='m1'><body>hi box</body>"
           "</message>" % a.jid)
    ev = a.wait(is_event("message", body="hi box"), 10)
    check("a chat message is reported as an event",
          ev is not None and ev["from"].startswith(ctl_jid), ev)
    r = c.iq("<ping xmlns='urn:xmpp:ping'/>", to=a.jid + "/agent")
    check("the agent answers XEP-0199 pings", r.get("type") == "result",
          harness.tostr(r))
    stranger = controller(srv, harness.unique("str"))
    send_json(stranger, a.jid, "s1", '{"command": "echo"}')
    r = json_reply(stranger, a.jid, "s1")
    check("a JID that is not a controller is refused",
          r.get("error") == "forbidden", r)
    stranger.close()
    # --ping-interval 1: two more answered pings, and still connected.
    n = len(a.seen(is_event("pong", type="result")))
    pongs = harness.wait_for(lambda: len(a.seen(
        is_event("pong", type="result"))) >= n + 2, 20)
    check("the agent pings the server and stays connected",
          pongs and a.alive() and not a.seen(is_event("disconnected")),
          (a.seen(lambda e: e.get("event") in ("pong", "disconnected")),
           a.log_text()[-300:]))
    mem = a.memory_kib()
    note("parley-agent memory while connected (KiB): Rss %s, Pss %s, "
         "private dirty %s, shared library pages %s"
         % (mem.get("Rss"), mem.get("Pss"), mem.get("Private_Dirty"),
            mem.get("Shared_Clean")))
    # The 2 MiB RSS target is not met (README "parley-agent": OpenSSL's
    # shared pages alone are 4 MiB); this guards the process's own
    # memory against regressions.
    try:
        with open("/proc/%d/maps" % a.proc.pid) as f:
            sanitized = "libasan" in f.read()
    except OSError:
        sanitized = False
    if sanitized:
        note("sanitizer build: memory figures not checked")
    else:
        check("agent's own (private dirty) memory while connected < 3 MiB",
              0 < mem.get("Private_Dirty", 0) < 3072, mem)

    # -- restart of the agent: no second registration
    check("agent exits 0 on SIGTERM", a.stop() == 0)
    a.events.clear()
    a.mark = 0
    a.start()
    check("restart logs in with the kept secret, without registering",
          a.wait(is_event("connected"), 20) is not None and
          not a.seen(is_event("registered")), a.events)
    a.stop()

    # -- operator provisioning with a token
    rc = srv.ctl("adduser", "02abcd0000ff@localhost", "tok-123")
    tok = Agent(srv, "02-ab-cd-00-00-ff", token="tok-123",
                controllers=[ctl_jid],
                extra=["--handler-dir", hdir]).start()
    ev = tok.wait(is_event("connected"), 20)
    check("an agent with a provisioning token logs in without registering",
          ev is not None and not tok.seen(is_event("registered")),
          (rc, tok.events, tok.log_text()[-500:]))
    send_json(c, tok.jid, "d1", '{"command": "echo", "args": "dir"}')
    r = json_reply(c, tok.jid, "d1")
    check("--handler-dir finds the executable named after the command",
          r.get("status") == "ok" and r["result"]["cmd"] == "echo", r)
    send_json(c, tok.jid, "d2", '{"command": "../handlers/echo"}')
    r = json_reply(c, tok.jid, "d2")
    check("a command name cannot leave the handler directory",
          r.get("error") == "unknown-command", r)
    tok.stop()

    # -- identity from a real interface (lo: 00:00:00:00:00:00)
    lo = Agent(srv, "00:00:00:00:00:00")
    lo.argv[lo.argv.index("--mac"):lo.argv.index("--mac") + 2] = \
        ["--interface", "lo"]
    lo.start()
    ev = lo.wait(is_event("connected"), 20)
    check("--interface reads the MAC address from the system",
          ev is not None and ev["jid"].startswith("000000000000@localhost"),
          (ev, lo.log_text()[-300:]))
    lo.stop()

    # -- box to box: a handler's result asks box A to message box B
    box_b = Agent(srv, "02:ab:cd:00:00:0b", handlers={"echo": echo},
                  controllers=["02abcd00000a@localhost"]).start()
    relay = write_handler(
        hdir, "relay",
        "cat >/dev/null; printf '{\"messages\": [{\"to\": \"%s\", "
        "\"json\": {\"command\": \"echo\", \"args\": \"from A\"}}, "
        "{\"to\": \"%s\", \"body\": \"hello B\"}]}'"
        % (box_b.jid, box_b.jid))
    box_a = Agent(srv, "02:ab:cd:00:00:0a", handlers={"relay": relay},
                  controllers=[ctl_jid]).start()
    ok = wait_all([box_a, box_b], is_event("connected"), 20)
    check("two boxes connected", ok)
    send_json(c, box_a.jid, "b1", '{"command": "relay"}')
    ev = box_b.wait(lambda e: e.get("event") == "payload" and
                    (e.get("from") or "").startswith(box_a.jid), 10)
    check("box A's handler sends a JSON command to box B",
          ev is not None and json.loads(ev["json"]).get("args") == "from A",
          ev)
    ev = box_a.wait(is_event("result"), 10)
    check("box B's answer comes back to box A as a result event",
          ev is not None and ev["from"].startswith(box_b.jid) and
          ev["result"].get("status") == "ok", ev)
    ev = box_b.wait(is_event("message", body="hello B"), 10)
    check("box A's handler sends box B a chat message",
          ev is not None and ev["from"].startswith(box_a.jid), ev)
    # B is not a controller of A: A answers "forbidden", B only reports it
    # (an answer is never answered: no ping-pong between boxes).
    box_b.set_mark()
    rly = write_handler(
        hdir, "poke",
        "cat >/dev/null; printf '{\"messages\": [{\"to\": \"%s\", "
        "\"json\": {\"command\": \"relay\"}}]}'" % box_a.jid)
    send_json(c, box_b.jid, "b2", '{"command": "echo", "args": 1}')
    box_b.stop()
    box_b = Agent(srv, "02:ab:cd:00:00:0b", handlers={"poke": rly},
                  controllers=[ctl_jid]).start()
    box_b.wait(is_event("connected"), 20)
    box_a.set_mark()
    send_json(c, box_b.jid, "b3", '{"command": "poke"}')
    ev = box_b.wait(is_event("result"), 10)
    check("a box that is not a controller gets 'forbidden' as a result",
          ev is not None and ev["result"].get("error") == "forbidden", ev)
    # Anything B sent A in answer went before what B sends A next: poke B
    # once more and look at what A got before that second relay command.
    send_json(c, box_b.jid, "b4", '{"command": "poke"}')

    def a_events():
        return box_a.seen(lambda e: e.get("event") in ("payload", "result"))

    def second_payload():
        ps = [i for i, e in enumerate(a_events())
              if e.get("event") == "payload"]
        return ps[1] if len(ps) > 1 else None
    harness.wait_for(lambda: second_payload() is not None, 20)
    cut = second_payload()
    bounced = a_events()[:cut]
    check("no answer bounces back and forth between boxes",
          cut is not None and
          len([e for e in bounced if e.get("event") == "payload"]) == 1 and
          not [e for e in bounced if e.get("event") == "result"],
          a_events())
    box_a.stop()
    box_b.stop()

    # -- XEP-0198: a broken link is resumed, and what was sent meanwhile
    # arrives (the server holds the session; libstrophe resumes it)
    proxy = CutProxy(srv.host, srv.starttls_port)
    enabled = srv.stats().get("sm_enabled", 0)
    sm = Agent(srv, "02:ab:cd:00:00:05", handlers={"echo": echo},
               controllers=[ctl_jid], backoff=(1500, 3000),
               port=proxy.port).start()
    check("agent connects through a relay", sm.wait(is_event("connected"),
                                                    20) is not None)
    # The server enabled stream management for it, and the agent has
    # read <enabled/>: it answers a command sent after it.
    check("the server enables XEP-0198 for the agent",
          harness.wait_for(lambda: srv.stats().get("sm_enabled", 0) >
                           enabled, 20), srv.stats())
    send_json(c, sm.jid, "r0", '{"command": "echo", "args": "before"}')
    r = json_reply(c, sm.jid, "r0", timeout=20)
    check("the agent answers through the relay", r.get("status") == "ok", r)
    sm.set_mark()
    log_mark = len(srv.log_text())
    check("the relay cuts the agent's connection", proxy.cut() == 1)
    # The server notices and holds the session.
    held = harness.wait_for(lambda: re.search(
        re.escape(sm.jid) + r"/\S*: connection lost, waiting",
        srv.log_text(log_mark)), 20)
    check("the server holds the agent's session after the cut",
          held is not None, srv.log_text(log_mark)[-800:])
    send_json(c, sm.jid, "r1", '{"command": "echo", "args": "while down"}')
    r = json_reply(c, sm.jid, "r1", timeout=20)
    check("a command sent while the link was down is answered after the "
          "agent reconnects", r.get("status") == "ok" and
          r.get("result", {}).get("input", {}).get("args") == "while down",
          (r, sm.events[-5:]))
    resumed = "resumed %s" % sm.jid in srv.log_text(log_mark)
    check("the agent resumed its XEP-0198 session (server log)", resumed,
          srv.log_text(log_mark)[-800:])
    sm.stop()
    proxy.close()

    # -- reconnect with backoff and jitter across a parleyd restart
    fleet = [Agent(srv, "02:ab:cd:00:01:%02x" % i,
                   backoff=(300, 3000)).start() for i in range(3)]
    ok = wait_all(fleet, is_event("connected"), 20)
    check("three agents connected", ok)
    for f in fleet:
        f.set_mark()
    srv.kill(15)
    # A few failed attempts each (their delays grow), then parleyd is back.
    retried = harness.wait_for(lambda: all(
        len(f.seen(is_event("reconnect"))) >= 3 for f in fleet), 30)
    check("the agents retry while parleyd is down", retried,
          [len(f.seen(is_event("reconnect"))) for f in fleet])
    if not srv.start():
        harness.finish()
    ok = wait_all(fleet, is_event("connected"), 30)
    check("all agents reconnect after parleyd restarts", ok,
          [f.log_text()[-400:] for f in fleet])
    delays = [[e["delay_ms"] for e in f.seen(is_event("reconnect"))]
              for f in fleet]
    note("reconnect delays (ms) per agent: %s" % delays)
    check("reconnect delays grow (exponential backoff)",
          all(len(d) >= 2 and d[-1] > d[0] for d in delays), delays)
    check("reconnect delays differ between agents (jitter)",
          len({tuple(d) for d in delays}) == len(delays), delays)
    # When each agent planned its last attempt: the time it logged the
    # reconnect event plus the delay it drew.  (The "connected" times can
    # coincide: connections that reach parleyd's listen backlog while it
    # starts are all served in its first loop turn.)
    times = []
    for f in fleet:
        evs = f.seen(is_event("reconnect"))
        if evs:
            at = datetime.datetime.strptime(evs[-1]["ts"].rstrip("Z"),
                                            "%Y-%m-%dT%H:%M:%S.%f")
            times.append(at + datetime.timedelta(
                milliseconds=evs[-1]["delay_ms"]))
    note("planned last attempts: %s" % [t.isoformat() for t in times])
    # Two of three may land on the same millisecond by chance (about one
    # run in 300 with their jitter); all three within one, about one in a
    # million, is a herd.
    check("the agents' last attempts are planned apart (no thundering "
          "herd)", len(times) == 3 and
          max(times) - min(times) > datetime.timedelta(milliseconds=1),
          [t.isoformat() for t in times])
    for f in fleet:
        f.stop()
    c.close()
    harness.finish()


main()
