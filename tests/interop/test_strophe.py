#!/usr/bin/python3
"""test_strophe.py - Parley against libstrophe, with a slixmpp peer.

Runs build/tests/strophe_client (tests/interop/strophe_client.c; path from
env STROPHE_CLIENT, default $BUILD/tests/strophe_client) once over STARTTLS
and once over XEP-0368 direct TLS.  A slixmpp peer answers every chat
message it gets; the C client must log in over TLS, have its ping
answered and receive the reply.  Run with /usr/bin/python3.
"""

import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, note  # noqa: E402

import slixmpp  # noqa: E402

STEP = 10
CLIENT_TIMEOUT = 25
srv = None


class Peer(slixmpp.ClientXMPP):
    """Replies "re: BODY" to every chat message and remembers it."""

    def __init__(self, jid, password):
        super().__init__(jid, password)
        self.ssl_context = harness.no_verify_context()
        self.use_ipv6 = False
        self.register_plugin("xep_0199")
        harness.slixmpp_without_channel_binding(self)
        self.started = asyncio.get_event_loop().create_future()
        self.received = []
        self.add_event_handler("session_start", self._start)
        self.add_event_handler("failed_auth",
                               lambda f: self._set(("failed_auth",
                                                    f["condition"])))
        self.add_event_handler("disconnected",
                               lambda r: self._set(("disconnected", r)))
        self.add_event_handler("message", self._message)

    def _set(self, v):
        if not self.started.done():
            self.started.set_result(v)

    def _start(self, _):
        self.send_presence()
        self._set(("session", None))

    def _message(self, msg):
        if msg["type"] in ("chat", "normal") and msg["body"]:
            self.received.append((msg["from"].full, msg["body"]))
            self.send_message(mto=msg["from"], mbody="re: " + msg["body"],
                              mtype="chat")


async def run_client(binary, jid, password, peer_jid, direct):
    port = srv.direct_port if direct else srv.starttls_port
    argv = [binary, srv.host, str(port), jid, password, peer_jid]
    if direct:
        argv.append("direct")
    env = dict(os.environ, STROPHE_CLIENT_TIMEOUT=str(CLIENT_TIMEOUT - 5))
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, env=env)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), CLIENT_TIMEOUT)
    except asyncio.TimeoutError:
        proc.kill()
        out, _ = await proc.communicate()
        return None, out.decode("utf-8", "replace") + "\n(killed: timeout)"
    return proc.returncode, out.decode("utf-8", "replace")


async def main(binary):
    suser, puser = harness.unique("stro"), harness.unique("peer")
    spw, ppw = "strophe-pw", "peer-pw"
    for user, pw in ((suser, spw), (puser, ppw)):
        ok, detail = harness.register_user(srv, user, pw)
        check("register %s via XEP-0077 (raw)" % user[:4], ok, detail)

    peer_bare = "%s@%s" % (puser, srv.domain)
    peer = Peer(peer_bare + "/slix", ppw)
    peer.connect((srv.host, srv.starttls_port), force_starttls=True)
    try:
        res = await asyncio.wait_for(asyncio.shield(peer.started), STEP)
    except asyncio.TimeoutError:
        res = ("timeout", None)
    if not check("slixmpp peer logs in", res[0] == "session", repr(res)):
        return
    # Make sure the peer's presence was processed before the C client
    # starts (an IQ on the same stream is handled after it).
    try:
        await peer["xep_0199"].send_ping(srv.domain, timeout=STEP)
    except Exception:  # noqa: BLE001 - the ping itself is tested elsewhere
        pass

    for direct in (False, True):
        how = "direct TLS" if direct else "STARTTLS"
        before = len(peer.received)
        rc, out = await run_client(binary, "%s@%s" % (suser, srv.domain),
                                   spw, peer_bare, direct)
        for line in out.strip().splitlines():
            note("strophe_client: " + line)
        check("libstrophe over %s: login, ping, message round trip" % how,
              rc == 0, "exit %s: %s" % (rc, out.strip().splitlines()[-1:]
                                        if out.strip() else "no output"))
        got = peer.received[before:]
        check("libstrophe over %s: peer got the C client's message from "
              "its full JID" % how,
              any(b == "hello from libstrophe"
                  and f.startswith("%s@%s/" % (suser, srv.domain))
                  for f, b in got), "peer received %r" % got)

    fut = peer.disconnected
    peer.disconnect(wait=0.5)
    try:
        await asyncio.wait_for(fut, 5)
    except asyncio.TimeoutError:
        peer.abort()


def run():
    global srv
    binary = os.environ.get("STROPHE_CLIENT", os.path.join(
        harness.BUILD, "tests", "strophe_client"))
    if not os.path.isabs(binary):
        binary = os.path.join(harness.ROOT, binary)
    if not check("strophe_client is built (%s)" % binary,
                 os.access(binary, os.X_OK),
                 "missing: make %s" % os.path.relpath(binary, harness.ROOT)):
        harness.finish()
    srv = harness.Server()
    if srv.start():
        try:
            asyncio.run(asyncio.wait_for(main(binary), 100))
        except asyncio.TimeoutError:
            check("strophe suite finishes within 100 s", False, "timed out")
        except Exception as e:  # noqa: BLE001 - report, don't crash
            import traceback
            traceback.print_exc()
            check("strophe suite runs without exceptions", False, repr(e))
    harness.finish()


if __name__ == "__main__":
    run()
