#!/usr/bin/python3
"""test_s2s.py - federation (RFC 6120 server-to-server, XEP-0178 SASL
EXTERNAL, XEP-0220 dialback) between two parleyd processes, Prosody and
ejabberd, all on loopback.

Every name resolves through a real DNS server (dnsmasq on a loopback
port) that serves SRV records for the test domains; one Parley domain is
reached by a static route instead.  A test CA signs the certificates of
the trusted domains; pc.test has a certificate from another CA nobody
trusts and allows only dialback.

  P1 (parleyd): pa.test (trusted certificate), pb.test (second virtual
                host), s2s.auth = external, dialback
  P2 (parleyd): pc.test (untrusted certificate), s2s.auth = dialback
  Prosody:      prosody.test (trusted), accepts dialback
  ejabberd:     ejabberd.test (trusted)
  down.test:    SRV to a closed port    -> remote-server-not-found
  slow.test:    SRV to a silent socket  -> remote-server-timeout

Checks: subscriptions both ways, presence, messages both ways, for
pa<->prosody (certificates), pc<->prosody (dialback only), pa<->ejabberd,
pa<->pc (Parley to Parley); pa<->pb on one server; bounces in order with
the right condition after the configured timeout; parleyd logs one line
saying why a link failed.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import types

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import certs  # noqa: E402
import harness  # noqa: E402
from harness import check, note  # noqa: E402
import im_common  # noqa: E402
from im_common import (ImClient, is_message, is_presence, PW,  # noqa: E402
                       add_users)

TMP = tempfile.mkdtemp(prefix="parley-s2s-")
CONNECT_TIMEOUT = 4
STEP = 10  # seconds a federated stanza may take (links are set up first)
_procs = []  # (name, Popen) started here, stopped by pid at the end


def run(*argv, **kw):
    return subprocess.run(argv, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          timeout=60, **kw)


# ------------------------------------------------------------ certificates

def make_ca(name):
    return certs.make_ca(TMP, name)


def make_cert(ca, domain):
    return certs.make_cert(TMP, ca, domain)


# --------------------------------------------------------------- processes

def start_proc(name, argv, env=None, cwd=None):
    log = open(os.path.join(TMP, name + ".log"), "ab")
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                         stderr=subprocess.STDOUT, cwd=cwd or TMP,
                         env=dict(os.environ, **(env or {})),
                         start_new_session=True)
    log.close()
    _procs.append((name, p))
    return harness.track(name, p)  # finish() stops it if we do not


def stop_procs():
    """SIGTERM by pid, then SIGKILL to the process group (ejabberd's
    Erlang VM starts helpers of its own)."""
    for name, p in reversed(_procs):
        harness.untrack(p)
        harness.stop_group(p, 15)
    _procs.clear()


def wait_port(port, proc, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return True
        except OSError:
            time.sleep(0.2)
    return False


def log_tail(name, n=40):
    try:
        with open(os.path.join(TMP, name + ".log"), "rb") as f:
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return
    print("# --- last %d lines of %s ---" % (min(n, len(lines)), name))
    for line in lines[-n:]:
        print("# " + line)


def peer(domain, port):
    """What ImClient needs to log in to a server: address and domain."""
    return types.SimpleNamespace(host="127.0.0.1", direct_port=port,
                                 domain=domain)


# ------------------------------------------------------------------- setup

(DNS_PORT, PROSODY_C2S, PROSODY_S2S, EJ_C2S, EJ_S2S, EJ_DIST, DOWN_PORT,
 SLOW_PORT) = harness.free_ports(8)
CA = make_ca("parley-test-ca")
ROGUE = make_ca("nobody-trusts-this-ca")
CERTS = {d: make_cert(CA, d) for d in
         ("pa.test", "pb.test", "prosody.test", "ejabberd.test", "raw.test")}
CERTS["pc.test"] = make_cert(ROGUE, "pc.test")

# A silent peer: accepts TCP and never says a word (for the timeout).
slow_sock = socket.socket()
slow_sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
slow_sock.bind(("127.0.0.1", SLOW_PORT))
slow_sock.listen(16)
slow_conns = []
threading.Thread(target=lambda: [slow_conns.append(slow_sock.accept())
                                 for _ in iter(int, 1)],
                 daemon=True).start()

# Parley servers; P2's port is needed in P1's static route.
P1 = harness.Server(
    label="P1", hosts=[
        {"domain": "pa.test", "certificate": CERTS["pa.test"][0],
         "key": CERTS["pa.test"][1]},
        {"domain": "pb.test", "certificate": CERTS["pb.test"][0],
         "key": CERTS["pb.test"][1]}],
    s2s=None, s2s_direct=True)
P2 = harness.Server(
    label="P2", hosts=[
        {"domain": "pc.test", "certificate": CERTS["pc.test"][0],
         "key": CERTS["pc.test"][1]}],
    s2s='enable = true; auth = ["dialback"]; ca_file = "%s"; '
        'resolver = "127.0.0.1:%d"; connect_timeout = %d; idle_timeout = 5;'
        % (CA[1], DNS_PORT, CONNECT_TIMEOUT))
P1.s2s_port = harness.free_ports(1)[0]
P1.s2s = ('enable = true; ca_file = "%s"; resolver = "127.0.0.1:%d"; '
          'connect_timeout = %d; max_queue_bytes = 8192; '
          'routes = ( { domain = "pc.test"; '
          'host = "127.0.0.1"; port = %d; tls = "starttls"; } );'
          % (CA[1], DNS_PORT, CONNECT_TIMEOUT, P2.s2s_port))

# DNS: SRV records for every test domain (pc.test is in DNS too, for
# P2's peers; P1 uses its static route instead).
srv = {"pa.test": P1.s2s_port, "pb.test": P1.s2s_port,
       "pc.test": P2.s2s_port, "prosody.test": PROSODY_S2S,
       "ejabberd.test": EJ_S2S, "down.test": DOWN_PORT,
       "slow.test": SLOW_PORT}
DNSMASQ = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"  # not on a user's PATH
dns_argv = [DNSMASQ, "-k", "--port=%d" % DNS_PORT,
            "--listen-address=127.0.0.1", "--bind-interfaces",
            "--no-resolv", "--no-hosts", "--conf-file=/dev/null",
            "--pid-file=", "--user=root", "--log-facility=-"]
for d, port in srv.items():
    dns_argv.append("--srv-host=_xmpp-server._tcp.%s,127.0.0.1,%d" % (d, port))
    dns_argv.append("--address=/%s/127.0.0.1" % d)
# pa.test also offers direct TLS (XEP-0368), which peers try first.
dns_argv.append("--srv-host=_xmpps-server._tcp.pa.test,127.0.0.1,%d"
                % P1.s2s_direct_port)
dns = start_proc("dnsmasq", dns_argv)


def dns_ok():
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if dns.poll() is not None:
            return False
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(0.5)
        # a minimal A query for pa.test
        q = (b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
             b"\x02pa\x04test\x00\x00\x01\x00\x01")
        try:
            s.sendto(q, ("127.0.0.1", DNS_PORT))
            data, _ = s.recvfrom(512)
            if data[:2] == b"\x12\x34":
                return True
        except OSError:
            time.sleep(0.2)
        finally:
            s.close()
    return False


check("dnsmasq answers on port %d" % DNS_PORT, dns_ok(), "not answering")

# ------------------------------------------------------------------ Prosody

PROSODY_DIR = os.path.join(TMP, "prosody")
os.makedirs(os.path.join(PROSODY_DIR, "data"), exist_ok=True)
PROSODY_CFG = os.path.join(PROSODY_DIR, "prosody.cfg.lua")
with open(PROSODY_CFG, "w") as f:
    f.write("""-- written by tests/interop/test_s2s.py
run_as_root = true
daemonize = false
pidfile = "%(d)s/prosody.pid"
data_path = "%(d)s/data"
log = { { levels = { min = "debug" }, to = "file", filename = "%(d)s/prosody.log" } }
c2s_ports = { }
c2s_direct_tls_ports = { %(c2s)d }
s2s_ports = { %(s2s)d }
c2s_interfaces = { "127.0.0.1" }
s2s_interfaces = { "127.0.0.1" }
c2s_direct_tls_interfaces = { "127.0.0.1" }
component_ports = { }
http_ports = { }
https_ports = { }
s2s_require_encryption = true
s2s_secure_auth = false
s2s_timeout = 10
-- libunbound serves "test." itself (RFC 6761) unless told to forward it.
unbound = { resolvconf = false; hoststxt = false; forward = { "127.0.0.1@%(dns)d" };
  options = { ["local-zone:"] = "test. transparent" } }
authentication = "internal_plain"
storage = "internal"
modules_enabled = { "roster"; "saslauth"; "tls"; "dialback"; "disco"; "ping"; "presence"; "s2s_bidi" }
ssl = { certificate = "%(crt)s"; key = "%(key)s"; cafile = "%(ca)s" }
VirtualHost "prosody.test"
  ssl = { certificate = "%(crt)s"; key = "%(key)s"; cafile = "%(ca)s" }
""" % {"d": PROSODY_DIR, "c2s": PROSODY_C2S, "s2s": PROSODY_S2S,
       "dns": DNS_PORT, "crt": CERTS["prosody.test"][0],
       "key": CERTS["prosody.test"][1], "ca": CA[1]})

# ----------------------------------------------------------------- ejabberd

EJ_DIR = os.path.join(TMP, "ejabberd")
for sub in ("spool", "log"):
    os.makedirs(os.path.join(EJ_DIR, sub), exist_ok=True)
EJ_BUNDLE = os.path.join(EJ_DIR, "bundle.pem")
with open(EJ_BUNDLE, "w") as out:
    for p in (CERTS["ejabberd.test"][1], CERTS["ejabberd.test"][0]):
        with open(p) as f:
            out.write(f.read())
EJ_CFG = os.path.join(EJ_DIR, "ejabberd.yml")
with open(EJ_CFG, "w") as f:
    f.write("""# written by tests/interop/test_s2s.py
hosts:
  - ejabberd.test
loglevel: info
log_rotate_count: 0
certfiles:
  - "%(bundle)s"
ca_file: "%(ca)s"
s2s_cafile: "%(ca)s"
s2s_use_starttls: required
s2s_dns_timeout: 5
s2s_timeout: 10
auth_method: internal
auth_password_format: plain
registration_timeout: infinity
acl:
  loopback:
    ip:
      - 127.0.0.0/8
access_rules:
  local:
    allow: all
  c2s:
    allow: all
  s2s:
    allow: all
  register:
    allow: all
s2s_access: s2s
listen:
  - port: %(c2s)d
    ip: "127.0.0.1"
    module: ejabberd_c2s
    tls: true
    access: c2s
    backlog: 1024
  - port: %(s2s)d
    ip: "127.0.0.1"
    module: ejabberd_s2s_in
    backlog: 1024
modules:
  mod_disco: {}
  mod_ping: {}
  mod_roster: {}
  mod_s2s_dialback: {}
  mod_register:
    ip_access: all
    access: register
    password_strength: 0
    welcome_message: {}
""" % {"bundle": EJ_BUNDLE, "ca": CA[1], "c2s": EJ_C2S, "s2s": EJ_S2S})
EJ_INETRC = os.path.join(EJ_DIR, "inetrc")
with open(EJ_INETRC, "w") as f:
    # Without resolv_conf "", Erlang also asks /etc/resolv.conf's servers,
    # first, and takes their NXDOMAIN for an answer.
    f.write('{resolv_conf, ""}.\n{nameserver, {127,0,0,1}, %d}.\n'
            '{lookup, [dns]}.\n' % DNS_PORT)


def start_ejabberd():
    env = {"ERL_LIBS": "/usr/lib/x86_64-linux-gnu",
           "EJABBERD_CONFIG_PATH": EJ_CFG,
           "EJABBERD_LOG_PATH": os.path.join(EJ_DIR, "log", "ejabberd.log"),
           "ERL_CRASH_DUMP": os.path.join(EJ_DIR, "log", "erl_crash.dump"),
           "ERL_INETRC": EJ_INETRC, "HOME": EJ_DIR}
    argv = ["erl", "-sname", "parleys2s%d@localhost" % EJ_DIST,
            "-setcookie", "parleys2s%d" % os.getpid(),
            "-start_epmd", "false", "-erl_epmd_port", str(EJ_DIST),
            "-kernel", "inet_dist_use_interface", "{127,0,0,1}",
            "-noinput", "-noshell",
            "-mnesia", "dir", '"%s"' % os.path.join(EJ_DIR, "spool"),
            "-s", "ejabberd"]
    return start_proc("ejabberd", argv, env=env, cwd=EJ_DIR)


# ------------------------------------------------------------- the checks

NS_STREAM = harness.NS_STREAM
NS_SASL = harness.NS_SASL


class S2sRaw(harness.RawClient):
    """A raw server-to-server stream (jabber:server) from `frm` to `to`,
    with a client certificate (cert, key) for TLS."""

    def __init__(self, port, frm, to, cert=None):
        self.frm, self.cert = frm, cert
        super().__init__("127.0.0.1", port, to, timeout=5)

    def _wrap_tls(self):
        ctx = harness.no_verify_context()
        if self.cert:
            ctx.load_cert_chain(*self.cert)
        self.sock = ctx.wrap_socket(self.sock, server_hostname=self.domain)
        self.tls = True

    def open_stream(self, to=None, extra=""):
        self.send("<?xml version='1.0'?><stream:stream from='%s' to='%s' "
                  "version='1.0' xmlns='jabber:server' xmlns:db="
                  "'jabber:server:dialback' xmlns:stream="
                  "'http://etherx.jabber.org/streams'>"
                  % (self.frm, to or self.domain))

    def stream_error(self):
        """The condition of the stream error that ends the stream."""
        try:
            el = self.next(lambda e: e.tag == "{%s}error" % NS_STREAM, 5)
        except (TimeoutError, harness.StreamClosed, OSError) as e:
            return "no stream error (%s)" % e
        for c in el:
            if c.tag.startswith("{%s}" % harness.NS_STREAMS_ERR) and \
                    not c.tag.endswith("}text"):
                return c.tag.split("}")[1]
        return harness.tostr(el)

    def external(self):
        """STARTTLS and SASL EXTERNAL; returns (mechanisms offered,
        SASL answer element)."""
        f = self.connect_tls()
        mechs = self.mechanisms(f)
        self.send("<auth xmlns='%s' mechanism='EXTERNAL'>=</auth>" % NS_SASL)
        el = self.next(lambda e: e.tag.startswith("{%s}" % NS_SASL))
        if el.tag == "{%s}success" % NS_SASL:
            self.restart()
        return mechs, el


def raw_incoming(user):
    """Incoming stream rules against P1, with raw.test as the peer."""
    port = P1.s2s_port
    r = S2sRaw(port, "raw.test", "nope.test")
    r.open_stream()
    check("incoming: a stream to a domain not served gets <host-unknown/>",
          r.stream_error() == "host-unknown", r.raw[-300:])
    r.close()
    r = S2sRaw(port, "raw.test", "pa.test")
    r.open_stream()
    f = r.features()
    check("incoming: STARTTLS is required",
          f.find("{%s}starttls/{%s}required" % (harness.NS_TLS,
                                                  harness.NS_TLS))
          is not None, harness.tostr(f))
    r.send("<message from='u@raw.test' to='%s'><body>x</body></message>"
           % user)
    check("incoming: a stanza before authentication gets <not-authorized/>",
          r.stream_error() == "not-authorized", r.raw[-300:])
    r.close()
    # An untrusted certificate: no EXTERNAL offered, and refused.
    r = S2sRaw(port, "pc.test", "pa.test", CERTS["pc.test"])
    mechs, el = r.external()
    check("incoming: no SASL EXTERNAL for an untrusted certificate",
          "EXTERNAL" not in mechs and el.tag == "{%s}failure" % NS_SASL,
          "%s %s" % (mechs, harness.tostr(el)))
    # Dialback verification with a wrong key (we are authoritative).
    r.send("<db:verify from='raw.test' to='pa.test' id='abc'>00ff</db:verify>")
    el = r.next(lambda e: e.tag == "{jabber:server:dialback}verify")
    check("incoming: db:verify with a wrong key is invalid",
          el.get("type") == "invalid", harness.tostr(el))
    r.send("<db:result from='pb.test' to='pa.test'>00ff</db:result>")
    check("incoming: dialback claiming one of our own domains gets "
          "<invalid-from/>", r.stream_error() == "invalid-from",
          r.raw[-300:])
    r.close()
    # A trusted certificate for raw.test: EXTERNAL, then the rules.
    r = S2sRaw(port, "raw.test", "pa.test", CERTS["raw.test"])
    mechs, el = r.external()
    check("incoming: SASL EXTERNAL with a certificate valid for raw.test",
          "EXTERNAL" in mechs and el.tag == "{%s}success" % NS_SASL,
          "%s %s" % (mechs, harness.tostr(el)))
    r.send("<message from='u@raw.test/x' to='%s' type='chat'><body>raw hello"
           "</body></message>" % user)
    got = user_client.wait(is_message(frm_bare="u@raw.test",
                                      body="raw hello"), 5)
    check("incoming: a stanza from the authenticated domain is delivered",
          got is not None, "not delivered")
    r.send("<message from='u@evil.test' to='%s'><body>x</body></message>"
           % user)
    check("incoming: 'from' another domain gets <invalid-from/>",
          r.stream_error() == "invalid-from", r.raw[-300:])
    r.close()
    r = S2sRaw(port, "raw.test", "pa.test", CERTS["raw.test"])
    r.external()
    r.send("<message from='u@raw.test' to='x@nope.test'><body>x</body>"
           "</message>")
    check("incoming: 'to' a domain not served gets <host-unknown/>",
          r.stream_error() == "host-unknown", r.raw[-300:])
    r.close()


user_client = None

def federate(a, b, label):
    """a and b (logged-in ImClients on different servers) subscribe to
    each other, see each other's presence and exchange messages."""
    # Interested resources (RFC 6121 §2.1.6): Prosody hands inbound
    # subscription approvals only to those.
    a.roster_get()
    b.roster_get()
    a.presence()
    b.presence()
    a.presence(type_="subscribe", to=b.bare)
    got = b.wait(is_presence(frm_bare=a.bare, type_="subscribe"), STEP)
    if not check("%s: %s gets %s's subscription request" % (label, b.bare,
                                                           a.bare),
                 got is not None, "nothing within %d s" % STEP):
        return False
    b.presence(type_="subscribed", to=a.bare)
    got = a.wait(is_presence(frm_bare=b.bare, type_="subscribed"),
                 STEP)
    check("%s: %s learns the request was approved" % (label, a.bare),
          got is not None, "no subscribed")
    got = a.wait(is_presence(frm_bare=b.bare), STEP)
    check("%s: %s sees %s's presence" % (label, a.bare, b.bare),
          got is not None, "no available presence")
    b.presence(type_="subscribe", to=a.bare)
    got = a.wait(is_presence(frm_bare=b.bare, type_="subscribe"), STEP)
    check("%s: %s gets %s's subscription request" % (label, a.bare, b.bare),
          got is not None, "nothing")
    a.presence(type_="subscribed", to=b.bare)
    got = b.wait(is_presence(frm_bare=a.bare, type_="subscribed"), STEP)
    check("%s: %s learns the request was approved" % (label, b.bare),
          got is not None, "no subscribed")
    got = b.wait(is_presence(frm_bare=a.bare), STEP)
    check("%s: %s sees %s's presence" % (label, b.bare, a.bare),
          got is not None, "no available presence")
    # A presence change travels too.
    a.presence(show="away", status="s2s")
    got = b.wait(lambda el: is_presence(frm_bare=a.bare)(el) and
                 im_common.show_of(el) == "away", STEP)
    check("%s: %s sees %s go away" % (label, b.bare, a.bare),
          got is not None, "no away presence")
    for i in range(3):
        a.message(b.bare, "%s a->b %d" % (label, i))
        b.message(a.bare, "%s b->a %d" % (label, i))
    got_b = [b.wait(is_message(frm_bare=a.bare, type_="chat"), STEP) for _ in range(3)]
    got_a = [a.wait(is_message(frm_bare=b.bare, type_="chat"), STEP) for _ in range(3)]
    bodies_b = [m.findtext(im_common.C + "body") if m is not None else None
                for m in got_b]
    bodies_a = [m.findtext(im_common.C + "body") if m is not None else None
                for m in got_a]
    check("%s: messages %s -> %s arrive in order" % (label, a.bare, b.bare),
          bodies_b == ["%s a->b %d" % (label, i) for i in range(3)],
          bodies_b)
    check("%s: messages %s -> %s arrive in order" % (label, b.bare, a.bare),
          bodies_a == ["%s b->a %d" % (label, i) for i in range(3)],
          bodies_a)
    return True


def s2s_links(srv):
    """The link list parleyd logs on SIGUSR1 (pl_s2s_links_json)."""
    import json
    before = srv.log_size()
    os.kill(srv.pid(), signal.SIGUSR1)
    m = srv.wait_log(r"s2s links: (.*)\n", before, 5)
    if m is None:
        return None
    try:
        return json.loads(m.group(1))
    except ValueError as e:
        return "unparsable (%s): %s" % (e, m.group(0))


def bounce_check(client, domain, cond, label, n=3, within=None):
    t0 = time.monotonic()
    for i in range(n):
        client.message("nobody@%s" % domain, "%s %d" % (label, i),
                       msg_id="%s-%d" % (label, i))
    errs = [client.wait(lambda el: im_common.named(el, "message") and
                        el.get("type") == "error" and
                        (el.get("from") or "").endswith(domain),
                        (within or STEP) + 5) for _ in range(n)]
    took = time.monotonic() - t0
    ids = [e.get("id") if e is not None else None for e in errs]
    check("%s: %d stanzas bounce, in order" % (label, n),
          ids == ["%s-%d" % (label, i) for i in range(n)], ids)
    conds = [im_common.error_of(e) if e is not None else None for e in errs]
    check("%s: each bounce is <%s/>" % (label, cond),
          all(c and cond in str(c) for c in conds), conds)
    return took


def main():
    # The peers first: their ports were picked free before anything else
    # ran (later outgoing connections could take them).
    # Prosody: users registered offline, then started.
    pros_users = [harness.unique("pete"), harness.unique("paul")]
    for u in pros_users:
        r = run("prosodyctl", "--config", PROSODY_CFG, "register", u,
                "prosody.test", PW)
        if r.returncode != 0:
            check("prosodyctl register", False, r.stdout[-300:])
    prosody = start_proc("prosody", ["prosody", "--config", PROSODY_CFG,
                                     "-F"])
    ej = start_ejabberd()
    P1.start()
    P2.start()
    pa1, pa2, pa3, pa4 = (harness.unique(x) for x in
                          ("alice", "anna", "amy", "ada"))
    add_users(P1, pa1, pa2, pa3, pa4)
    pb_user = harness.unique("bob")
    rc, text = P1.ctl("adduser", "%s@pb.test" % pb_user, PW)
    check("parleyctl adduser on the second virtual host", rc == 0, text)
    pc1, pc2, pc3 = (harness.unique(x) for x in ("carl", "cora", "cid"))
    add_users(P2, pc1, pc2, pc3)


    # -- two virtual hosts on one server
    a = ImClient(P1, pa1, label="pa")
    b = ImClient(peer("pb.test", P1.direct_port), pb_user, label="pb")
    federate(a, b, "vhosts")
    a.logout()
    b.logout()

    # -- Parley to Parley: static route one way, DNS SRV the other;
    # P2 allows only dialback (and its certificate is not trusted).
    a = ImClient(P1, pa2, label="pa")
    c = ImClient(P2, pc1, label="pc")
    federate(a, c, "parley-parley")
    a.logout()
    c.logout()
    t1 = P1.log_text()
    t2 = P2.log_text()
    check("P1 -> P2 link used dialback",
          "link pa.test -> pc.test ready (dialback" in t1, "see P1 log")
    check("P1 -> P2 link is bidirectional (XEP-0288)",
          "link pa.test -> pc.test ready (dialback, STARTTLS, bidirectional" in t1,
          "see P1 log")
    check("P2 -> P1 link used dialback, over direct TLS (SRV "
          "_xmpps-server, XEP-0368)",
          "link pc.test -> pa.test ready (dialback, direct TLS" in t2,
          "see P2 log")
    check("P1 logged why pc.test's certificate does not authenticate it",
          "certificate for pc.test" in t1 and "not trusted" in t1,
          "see P1 log")

    # -- Prosody: certificates (pa.test) and dialback only (pc.test)
    ok = wait_port(PROSODY_S2S, prosody, 20) and \
        wait_port(PROSODY_C2S, prosody, 10)
    check("prosody starts", ok, "no s2s port")
    if ok:
        a = ImClient(P1, pa3, label="pa")
        p = ImClient(peer("prosody.test", PROSODY_C2S), pros_users[0],
                     label="prosody")
        federate(a, p, "parley-prosody")
        a.logout()
        p.logout()
        t1 = P1.log_text()
        check("P1 -> prosody.test authenticated with SASL EXTERNAL",
              "link pa.test -> prosody.test ready (external" in t1,
              "see P1 log")
        check("P1 -> prosody.test link is bidirectional (XEP-0288)",
              "link pa.test -> prosody.test ready (external, STARTTLS, "
              "bidirectional" in t1, "see P1 log")
        check("prosody.test answers over that one connection: it opens "
              "none to P1", "incoming link from prosody.test" not in t1 and
              "incoming connection from 127.0.0.1" not in t1, "see P1 log")
        links = s2s_links(P1)
        mine = [x for x in links or [] if x.get("remote") == "prosody.test"]
        check("SIGUSR1 lists the links: pa.test -> prosody.test ready, "
              "external, TLS, bidirectional, nothing queued",
              any(x.get("direction") == "out" and x.get("local") == "pa.test"
                  and x.get("state") == "ready" and x.get("auth") ==
                  "external" and x.get("tls") is True and x.get("bidi") is
                  True and x.get("queued") == 0 and x.get("sent", 0) > 0 and
                  x.get("received", 0) > 0 for x in mine), links)
        rc, out = P1.ctl("s2s", "--json")
        try:
            ctl_links = json.loads(out) if rc == 0 else None
        except ValueError:
            ctl_links = None
        check("parleyctl s2s --json (admin socket) lists the same link",
              any(x.get("remote") == "prosody.test" and x.get("state") ==
                  "ready" and x.get("auth") == "external"
                  for x in ctl_links or []), (rc, out[-400:]))
        rc, out = P1.ctl("s2s")
        check("parleyctl s2s prints a table with the link",
              rc == 0 and "prosody.test" in out and "ready" in out,
              (rc, out[-400:]))
        c = ImClient(P2, pc2, label="pc")
        p = ImClient(peer("prosody.test", PROSODY_C2S), pros_users[1],
                     label="prosody")
        federate(c, p, "dialback-prosody")
        c.logout()
        p.logout()
        t2 = P2.log_text()
        check("P2 -> prosody.test authenticated with dialback",
              "link pc.test -> prosody.test ready (dialback" in t2,
              "see P2 log")
        check("prosody.test -> P2 authenticated with dialback",
              "incoming link from prosody.test (127.0.0.1) to pc.test "
              "authenticated with dialback" in t2, "see P2 log")
    else:
        log_tail("prosody")

    # -- ejabberd (in-band registration once it listens)
    ok = wait_port(EJ_C2S, ej, 60) and wait_port(EJ_S2S, ej, 10)
    check("ejabberd starts", ok, "no ports")
    if ok:
        ej_user = harness.unique("eve")
        r = harness.RawClient("127.0.0.1", EJ_C2S, "ejabberd.test",
                              direct_tls=True, timeout=10)
        try:
            r.connect_tls()
            reply = r.register(ej_user, PW)
            check("ejabberd registers a user", reply is not None and
                  reply.get("type") == "result", harness.tostr(reply))
        except Exception as e:  # noqa: BLE001
            check("ejabberd registers a user", False, repr(e))
        r.close()
        a = ImClient(P1, pa4, label="pa")
        e = ImClient(peer("ejabberd.test", EJ_C2S), ej_user,
                     label="ejabberd")
        federate(a, e, "parley-ejabberd")
        a.logout()
        e.logout()
        t1 = P1.log_text()
        check("P1 -> ejabberd.test authenticated with SASL EXTERNAL",
              "link pa.test -> ejabberd.test ready (external" in t1,
              "see P1 log")
        check("ejabberd.test -> P1 authenticated with SASL EXTERNAL",
              "incoming link from ejabberd.test (127.0.0.1) authenticated "
              "with SASL EXTERNAL" in t1, "see P1 log")
        # Dialback only: pc.test's certificate is not trusted by ejabberd,
        # and P2 allows nothing else.
        ej_user2 = harness.unique("eric")
        r = harness.RawClient("127.0.0.1", EJ_C2S, "ejabberd.test",
                              direct_tls=True, timeout=10)
        r.connect_tls()
        reply = r.register(ej_user2, PW)
        check("ejabberd registers a second user", reply is not None and
              reply.get("type") == "result", harness.tostr(reply))
        r.close()
        c = ImClient(P2, pc3, label="pc")
        e = ImClient(peer("ejabberd.test", EJ_C2S), ej_user2,
                     label="ejabberd")
        federate(c, e, "dialback-ejabberd")
        c.logout()
        e.logout()
        t2 = P2.log_text()
        check("P2 -> ejabberd.test authenticated with dialback",
              "link pc.test -> ejabberd.test ready (dialback" in t2,
              "see P2 log")
        check("ejabberd.test -> P2 authenticated with dialback",
              "incoming link from ejabberd.test (127.0.0.1) to pc.test "
              "authenticated with dialback" in t2, "see P2 log")
    else:
        log_tail("ejabberd")

    # -- incoming stream rules (raw peer)
    global user_client
    a = ImClient(P1, pa1, label="pa")
    a.presence()
    user_client = a
    raw_incoming(a.bare)

    # -- queue limit: 8192 bytes per link while it is set up
    big = "x" * 3000
    for i in range(3):
        a.message("nobody@slow.test", big, msg_id="big-%d" % i)
    el = a.wait(lambda e: im_common.named(e, "message") and
                e.get("id") == "big-2", 3)
    check("queue limit: the stanza over s2s.max_queue_bytes bounces at once "
          "with <resource-constraint/>",
          el is not None and el.get("type") == "error" and
          "resource-constraint" in str(im_common.error_of(el)),
          harness.tostr(el) if el is not None else "nothing")
    errs = [a.wait(lambda e: im_common.named(e, "message") and
                   e.get("id") == "big-%d" % i, CONNECT_TIMEOUT + 5)
            for i in range(2)]
    check("queue limit: the queued ones bounce after the timeout",
          all(e is not None and "remote-server-timeout" in
              str(im_common.error_of(e)) for e in errs), errs)

    # -- a peer that is down, and one that never answers
    took = bounce_check(a, "down.test", "remote-server-not-found", "down")
    check("down: bounced at once (connection refused), not after the "
          "timeout", took < CONNECT_TIMEOUT, "%.1f s" % took)
    took = bounce_check(a, "slow.test", "remote-server-timeout", "silent",
                        within=CONNECT_TIMEOUT)
    check("silent: bounced after s2s.connect_timeout (%d s)"
          % CONNECT_TIMEOUT, CONNECT_TIMEOUT - 0.5 <= took <
          CONNECT_TIMEOUT + 4, "%.1f s" % took)
    a.logout()
    t1 = P1.log_text()
    check("P1 logs why the down link failed (TCP, refused)",
          "link pa.test -> down.test failed: TCP: cannot connect" in t1 and
          "Connection refused" in t1, "see P1 log")
    check("P1 logs why the silent link failed (timeout)",
          "link pa.test -> slow.test failed: timeout" in t1, "see P1 log")
    # Idle 5 s, checked every 5 s.
    check("P2 closes idle links (s2s.idle_timeout 5 s)",
          P2.wait_log("idle for 5 s, closing", 0, 20), "see P2 log")


try:
    main()
except Exception as e:  # noqa: BLE001
    import traceback
    traceback.print_exc()
    check("test script ran to the end", False, repr(e))
finally:
    if harness.failed():
        for n in ("prosody", "ejabberd", "dnsmasq"):
            log_tail(n, 30)
        for n in ("prosody/prosody.log", "ejabberd/log/ejabberd.log"):
            p = os.path.join(TMP, n)
            if os.path.exists(p):
                with open(p, "rb") as f:
                    lines = f.read().decode("utf-8", "replace").splitlines()
                print("# --- last 40 lines of %s ---" % n)
                for line in lines[-40:]:
                    print("# " + line)
        print("# kept %s" % TMP)
    stop_procs()
    slow_sock.close()
    if not harness.failed():
        shutil.rmtree(TMP, ignore_errors=True)
    harness.finish()
