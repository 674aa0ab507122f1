#!/usr/bin/python3
"""test_cluster_s2s.py - federation from any node of a cluster, and one
server secret for the cluster (doc/cluster.md, doc/s2s.md).

Two parleyd nodes, a and b, serve cl.test (one PostgreSQL database, one
Redis, each its own data_dir and so its own <data_dir>/secret file).
Prosody serves prosody.test.  DNS (dnsmasq on a loopback port) sends
every peer that looks up cl.test to node b's s2s port; node a's s2s
listener is in no record.  cl.test's certificate comes from a CA Prosody
does not trust and the nodes allow only dialback, so every link between
the cluster and Prosody is authenticated with Server Dialback
(XEP-0220), and Prosody's XEP-0288 support is off (each direction its
own stream):

  - alice (node a) writes to pat@prosody.test: node a opens the link
    cl.test -> prosody.test; Prosody checks node a's key with a
    <db:verify/> sent to cl.test, hence to node b, which must find it
    valid (the cluster's one secret: with a secret per node this fails
    and the message bounces);
  - pat answers alice: Prosody's stream lands on node b, which routes
    the message to alice's session on node a through the cluster link;
  - bob (node b) and pat chat both ways; subscriptions and presence
    between alice and pat both ways; an IQ from pat to alice's full JID
    and her answer;
  - an error from Prosody (a message to a user it does not have) comes
    back to alice through node b; a message from pat to a user the
    cluster does not have comes back to pat as an error;
  - both nodes logged that they use the cluster's secret, one stored it,
    and the stored row is the one both use (their s2s keys agree).

Upload (XEP-0363) across nodes: both nodes serve HTTP and mod_upload
with one shared file directory; a slot requested through node a is
accepted for PUT by node b (the slot's MAC is keyed with the cluster's
secret), and GET works on both nodes.

Node b restarted reads the cluster's secret again and leaves a fresh
.part file of the shared directory alone (another node may be writing
it), removing only one untouched for longer than slot_expiry.

A start without the cluster's secret (the database unreachable, or a
stored secret that is not 32 bytes) stops with a clear error instead of
going on with the node's own.

Skips (with a note) only when redis-server or PostgreSQL cannot start.
Run with /usr/bin/python3; `scripts/run-tests cluster_s2s`.
"""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import types
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import certs  # noqa: E402
import harness  # noqa: E402
from harness import check, note  # noqa: E402
import pg_common  # noqa: E402
import cluster_common  # noqa: E402
import im_common  # noqa: E402
from im_common import (ImClient, is_message, is_presence, PW,  # noqa: E402
                       add_users, STEP)

TMP = tempfile.mkdtemp(prefix="parley-cls2s-")
harness.after_servers(lambda: shutil.rmtree(TMP, ignore_errors=True))
DOMAIN = "cl.test"
SECRET = "cluster-s2s-secret-%d" % os.getpid()
PREFIX = "s%d:" % os.getpid()
_procs = []


def run(*argv, **kw):
    return subprocess.run(argv, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          timeout=60, **kw)


def make_ca(name):
    return certs.make_ca(TMP, name)


def make_cert(ca, domain):
    return certs.make_cert(TMP, ca, domain)


def start_proc(name, argv):
    log = open(os.path.join(TMP, name + ".log"), "ab")
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                         stderr=subprocess.STDOUT, cwd=TMP,
                         start_new_session=True)
    log.close()
    _procs.append(p)
    return harness.track(name, p)


def stop_procs():
    for p in reversed(_procs):
        harness.untrack(p)
        harness.stop_group(p, 15)
    _procs.clear()


def wait_port(port, proc, timeout):
    def up():
        if proc.poll() is not None:
            return True
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return True
        except OSError:
            return False
    return harness.wait_for(up, timeout, 0.2) and proc.poll() is None


def log_tail(name, n=40):
    try:
        with open(os.path.join(TMP, name + ".log"), "rb") as f:
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return
    for line in lines[-n:]:
        print("# " + line)


# ------------------------------------------------------------------ setup

(DNS_PORT, PROSODY_C2S, PROSODY_S2S) = harness.free_ports(3)
CA = make_ca("cls2s-test-ca")
ROGUE = make_ca("cls2s-untrusted-ca")
PROSODY_CERT = make_cert(CA, "prosody.test")
CLUSTER_CERT = make_cert(ROGUE, DOMAIN)  # Prosody cannot trust it
UPLOAD_DIR = os.path.join(TMP, "upload")  # shared by both nodes
os.makedirs(UPLOAD_DIR)

MODULES = ('"disco", "ping", "roster", "presence", "offline", "register", '
           '"session", "upload"')
S2S = ('enable = true; auth = ["dialback"]; bidi = false; ca_file = "%s"; '
       'resolver = "127.0.0.1:%d"; connect_timeout = 10;' % (CA[1], DNS_PORT))
nodes = {}
links = harness.free_ports(2)
http_ports = harness.free_ports(2)
for i, name in enumerate("ab"):
    srv = harness.Server(
        label=name, hosts=[{"domain": DOMAIN,
                            "certificate": CLUSTER_CERT[0],
                            "key": CLUSTER_CERT[1]}],
        s2s=S2S,
        listeners_extra='{ protocol = "http"; address = "127.0.0.1"; '
                        'port = %d; }' % http_ports[i],
        host_extra="modules = [%s];" % MODULES,
        extra="""
cluster: { enable = true; node = "%s"; redis = "127.0.0.1:%%d";
           link = "127.0.0.1:%d"; ttl = 1500; key_prefix = "%s";
           secret = "%s"; };
upload: { url = "http://127.0.0.1:%d"; dir = "%s"; };
""" % (name, links[i], PREFIX, SECRET, http_ports[i], UPLOAD_DIR))
    srv.http_port = http_ports[i]
    nodes[name] = srv

# DNS: cl.test is node b's s2s port; prosody.test is Prosody's.
DNSMASQ = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
dns_argv = [DNSMASQ, "-k", "--port=%d" % DNS_PORT,
            "--listen-address=127.0.0.1", "--bind-interfaces",
            "--no-resolv", "--no-hosts", "--conf-file=/dev/null",
            "--pid-file=", "--user=root", "--log-facility=-"]
for d, port in ((DOMAIN, nodes["b"].s2s_port),
                ("prosody.test", PROSODY_S2S)):
    dns_argv.append("--srv-host=_xmpp-server._tcp.%s,127.0.0.1,%d"
                    % (d, port))
    dns_argv.append("--address=/%s/127.0.0.1" % d)

PROSODY_DIR = os.path.join(TMP, "prosody")
os.makedirs(os.path.join(PROSODY_DIR, "data"), exist_ok=True)
PROSODY_CFG = os.path.join(PROSODY_DIR, "prosody.cfg.lua")
with open(PROSODY_CFG, "w") as f:
    f.write("""-- written by tests/interop/test_cluster_s2s.py
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
unbound = { resolvconf = false; hoststxt = false; forward = { "127.0.0.1@%(dns)d" };
  options = { ["local-zone:"] = "test. transparent" } }
authentication = "internal_plain"
storage = "internal"
modules_enabled = { "roster"; "saslauth"; "tls"; "dialback"; "disco"; "ping"; "presence" }
ssl = { certificate = "%(crt)s"; key = "%(key)s"; cafile = "%(ca)s" }
VirtualHost "prosody.test"
  ssl = { certificate = "%(crt)s"; key = "%(key)s"; cafile = "%(ca)s" }
""" % {"d": PROSODY_DIR, "c2s": PROSODY_C2S, "s2s": PROSODY_S2S,
       "dns": DNS_PORT, "crt": PROSODY_CERT[0], "key": PROSODY_CERT[1],
       "ca": CA[1]})


def prosody_log():
    try:
        with open(os.path.join(PROSODY_DIR, "prosody.log"), "rb") as f:
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def pros_peer():
    return types.SimpleNamespace(host="127.0.0.1", direct_port=PROSODY_C2S,
                                 domain="prosody.test")


# ------------------------------------------------------------------ steps

def start_nodes(redis_port, conninfo):
    for name, srv in nodes.items():
        srv.extra = srv.extra % redis_port
        srv.storage = "postgresql"
        srv.pg_conninfo = conninfo
        if not srv.start():
            srv.dump_log(30)
            return False
    for name, other in (("a", "b"), ("b", "a")):
        ok = nodes[name].wait_log(r"node %s: links up" % other, timeout=15)
        if not check("node %s: links with node %s up" % (name, other), ok):
            nodes[name].dump_log(30)
            return False
    return True


def one_secret():
    """Both nodes took the cluster's secret, one of them stored it, and
    their own files differ (so agreement comes from the database)."""
    texts = {n: s.log_text() for n, s in nodes.items()}
    for n, t in texts.items():
        check("node %s uses the cluster's server secret" % n,
              "server secret: the cluster's" in t, "see node %s's log" % n)
    stored = [n for n, t in texts.items() if "this node's stored in" in t]
    check("exactly one node stored its secret as the cluster's",
          len(stored) == 1, stored)
    files = []
    for srv in nodes.values():
        with open(os.path.join(srv.dir, "var", "secret"), "rb") as f:
            files.append(f.read())
    check("the nodes' own secret files differ (the agreement is the "
          "database's)", files[0] != files[1])


def subscribe(x, y, label):
    """x subscribes to y's presence, y approves; x sees y available."""
    x.presence(type_="subscribe", to=y.bare)
    got = y.wait(is_presence(frm_bare=x.bare, type_="subscribe"), STEP)
    if not check("%s: %s gets %s's subscription request" % (label, y.bare,
                                                           x.bare),
                 got is not None, "nothing within %d s" % STEP):
        return False
    y.presence(type_="subscribed", to=x.bare)
    got = x.wait(is_presence(frm_bare=y.bare, type_="subscribed"), STEP)
    check("%s: %s learns %s approved" % (label, x.bare, y.bare),
          got is not None, "no subscribed")
    got = x.wait(is_presence(frm_bare=y.bare), STEP)
    check("%s: %s sees %s's presence" % (label, x.bare, y.bare),
          got is not None, "no available presence")
    return True


def chat(x, y, label, n=3):
    for i in range(n):
        x.message(y.bare, "%s %d" % (label, i))
    got = [y.wait(is_message(frm_bare=x.bare, type_="chat"), STEP)
           for _ in range(n)]
    bodies = [m.findtext(im_common.C + "body") if m is not None else None
              for m in got]
    return check("%s: %s -> %s, %d messages in order" % (label, x.bare,
                                                         y.bare, n),
                 bodies == ["%s %d" % (label, i) for i in range(n)], bodies)


def is_error_from(domain):
    return lambda el: im_common.named(el, "message") and \
        el.get("type") == "error" and \
        (el.get("from") or "").split("@")[-1].split("/")[0] == domain


def federation(users, pros_users):
    a_off = {n: s.log_size() for n, s in nodes.items()}
    alice = ImClient(nodes["a"], users[0], label="alice@a")
    bob = ImClient(nodes["b"], users[1], label="bob@b")
    pat = ImClient(pros_peer(), pros_users[0], label="pat@prosody")
    for c in (alice, bob, pat):
        c.roster_get()
        c.presence()
    # Node a originates: Prosody's <db:verify/> lands on node b.
    if not chat(alice, pat, "node a -> prosody"):
        bounced = alice.wait(is_error_from("prosody.test"), 1)
        note("alice got: %s" % (harness.tostr(bounced) if bounced is not None
                                else "nothing"))
    ta = nodes["a"].log_text(a_off["a"])
    tb = nodes["b"].log_text(a_off["b"])
    check("node a's link cl.test -> prosody.test is authenticated with "
          "dialback", "link cl.test -> prosody.test ready (dialback" in ta,
          "see node a's log")
    check("node b answered Prosody's <db:verify/> for a key of node a: "
          "valid", "dialback verify from prosody.test for cl.test: valid"
          in tb, "see node b's log")
    check("no <db:verify/> answered invalid on either node",
          "for cl.test: invalid" not in ta + tb, "see the nodes' logs")
    # Prosody -> cluster lands on node b; alice's session is on node a.
    chat(pat, alice, "prosody -> node a (through node b)")
    tb = nodes["b"].log_text(a_off["b"])
    ta = nodes["a"].log_text(a_off["a"])
    check("Prosody's stream came in on node b",
          "incoming link from prosody.test" in tb, "see node b's log")
    check("... and not on node a (no DNS record for it)",
          "incoming link from prosody.test" not in ta, "see node a's log")
    chat(pat, bob, "prosody -> node b")
    chat(bob, pat, "node b -> prosody")
    # Presence both ways between a user of node a and Prosody's.
    if subscribe(alice, pat, "subscription a -> prosody"):
        subscribe(pat, alice, "subscription prosody -> a")
        alice.presence(show="away", status="cluster")
        got = pat.wait(lambda el: is_presence(frm_bare=alice.bare)(el) and
                       im_common.show_of(el) == "away", STEP)
        check("pat sees alice (node a) go away", got is not None,
              "no away presence")
        pat.presence(show="dnd")
        got = alice.wait(lambda el: is_presence(frm_bare=pat.bare)(el) and
                         im_common.show_of(el) == "dnd", STEP)
        check("alice (node a) sees pat's dnd through node b",
              got is not None, "no dnd presence")
    # An IQ from Prosody to alice's full JID (in on node b, to node a)
    # and alice's answer (out through node a's link).
    pat.send("<iq type='get' id='v1' to='%s/r'><query xmlns='jabber:iq:"
             "version'/></iq>" % alice.bare)
    got = alice.wait(lambda el: im_common.named(el, "iq") and
                     el.get("id") == "v1", STEP)
    if check("alice (node a) gets pat's IQ (through node b)",
             got is not None, "nothing"):
        alice.send("<iq type='result' id='v1' to='%s'><query xmlns='jabber:"
                   "iq:version'><name>t</name><version>1</version></query>"
                   "</iq>" % got.get("from"))
        got = pat.wait(lambda el: im_common.named(el, "iq") and
                       el.get("id") == "v1" and el.get("type") == "result",
                       STEP)
        check("pat gets alice's answer", got is not None, "nothing")
    # Errors across nodes.
    alice.message("nobody-%d@prosody.test" % os.getpid(), "anyone?",
                  msg_id="e1")
    got = alice.wait(lambda el: is_error_from("prosody.test")(el) and
                     el.get("id") == "e1", STEP)
    check("Prosody's error for an unknown user reaches alice on node a "
          "(through node b)", got is not None, "no error")
    pat.message("nobody-%d@%s" % (os.getpid(), DOMAIN), "anyone?",
                msg_id="e2")
    got = pat.wait(lambda el: is_error_from(DOMAIN)(el) and
                   el.get("id") == "e2", STEP)
    check("the cluster's error for an unknown user reaches pat",
          got is not None, "no error")
    for c in (alice, bob, pat):
        c.logout()


# ----------------------------------------------------------------- upload

def upload_slot(client, name, size, ctype):
    """Asks upload.<domain> for a slot; (put url, headers, get url)."""
    iq_id = "slot1"
    client.send("<iq type='get' to='upload.%s' id='%s'><request "
                "xmlns='urn:xmpp:http:upload:0' filename='%s' size='%d' "
                "content-type='%s'/></iq>" % (DOMAIN, iq_id, name, size,
                                               ctype))
    el = client.wait(lambda e: e.get("id") == iq_id, STEP)
    if el is None or el.get("type") != "result":
        return None
    ns = "{urn:xmpp:http:upload:0}"
    slot = el.find(ns + "slot")
    put, get = slot.find(ns + "put"), slot.find(ns + "get")
    headers = {h.get("name"): h.text or "" for h in put.findall(ns + "header")}
    return put.get("url"), headers, get.get("url")


def on_node(url, node):
    """The same path on node's HTTP port."""
    rest = url.split("/", 3)[3]
    return "http://127.0.0.1:%d/%s" % (nodes[node].http_port, rest)


def http(method, url, data=None, headers=None):
    req = urllib.request.Request(url, data=data, method=method,
                                 headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=STEP) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError as e:
        return None, str(e).encode()


def upload(users):
    alice = ImClient(nodes["a"], users[0], resource="up", label="alice@a")
    body = b"cluster upload %d\n" % os.getpid() * 50
    slot = upload_slot(alice, "notes.txt", len(body), "text/plain")
    alice.logout()
    if not check("node a gives alice an upload slot", slot is not None):
        return
    put, headers, get = slot
    check("the slot's URLs are node a's", ":%d/" % nodes["a"].http_port in put)
    headers["Content-Type"] = "text/plain"
    st, text = http("PUT", on_node(put, "b"), body, headers)
    check("node b accepts the PUT of node a's slot (201)", st == 201,
          (st, text[:200]))
    for n in "ba":
        st, got = http("GET", on_node(get, n))
        check("GET of the file on node %s" % n, st == 200 and got == body,
              (st, got[:100]))
    st, text = http("PUT", on_node(put, "a"), body, headers)
    check("the same slot again on node a: 409 (used)", st == 409,
          (st, text[:200]))


def restart_keeps_uploads():
    """Node b restarts: it reads the cluster's secret again, and leaves
    the shared upload directory's fresh .part file (another node's upload
    in progress) alone, while one untouched for longer than slot_expiry
    goes."""
    fresh = os.path.join(UPLOAD_DIR, "A" * 24 + ".part")
    stale = os.path.join(UPLOAD_DIR, "B" * 24 + ".part")
    for path in (fresh, stale):
        with open(path, "wb") as f:
            f.write(b"x")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    srv = nodes["b"]
    off = srv.log_size()
    srv.stop()
    if not srv.start():
        return
    check("node b, restarted, reads the cluster's secret",
          "server secret: the cluster's, read from" in srv.log_text(off),
          "see node b's log")
    check("... leaves a fresh .part file of the shared upload directory",
          os.path.exists(fresh))
    check("... and removes one untouched for longer than slot_expiry",
          not os.path.exists(stale))
    if os.path.exists(fresh):
        os.unlink(fresh)


# -------------------------------------------------------------- no secret

def run_once(srv, timeout=60):
    """Runs srv's parleyd in the foreground; (exit status, output)."""
    with open(srv.conf_path, "w") as f:
        f.write(srv._parley_config())
    try:
        r = subprocess.run([srv.bin, "--config", srv.conf_path],
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=timeout)
        return r.returncode, r.stdout.decode("utf-8", "replace")
    except subprocess.TimeoutExpired:
        return None, "still running after %d s" % timeout


def node_c(redis_port, conninfo):
    srv = harness.Server(label="c", extra="""
cluster: { enable = true; node = "c"; redis = "127.0.0.1:%d";
           link = "127.0.0.1:%d"; key_prefix = "x%s"; secret = "%s"; };
""" % (redis_port, harness.free_ports(1)[0], PREFIX, SECRET),
        storage_extra="retries = 1; retry_delay = 50;")
    srv.storage = "postgresql"
    srv.pg_conninfo = conninfo
    return srv


def no_secret(redis_port, pg):
    """A node that cannot have the cluster's secret does not start on its
    own: the database unreachable, or the stored secret unusable."""
    port = harness.free_ports(1)[0]
    srv = node_c(redis_port, "host=127.0.0.1 port=%d dbname=x user=x "
                 "connect_timeout=2" % port)
    rc, out = run_once(srv)
    check("a node without its database exits non-zero instead of "
          "starting", rc not in (0, None), (rc, out[-400:]))
    db = "cls2s_c_%d" % os.getpid()
    rc, out = pg.psql("CREATE DATABASE %s OWNER parley" % db)
    if not check("a database for node c", rc == 0, out):
        return
    srv = node_c(redis_port, pg.conninfo("parley", db))
    if not srv.start():
        return
    srv.stop()
    rc, out = pg.psql("UPDATE kv SET value = '\\x0102' WHERE host = '' AND "
                      "username = '' AND store = 'server' AND key = 'secret' "
                      "RETURNING length(value)", db=db)
    check("node c stored a secret (one row changed)",
          rc == 0 and out.strip() == "2", out)
    rc, out = run_once(srv)
    check("with an unusable stored secret node c refuses to start, and "
          "says why", rc not in (0, None) and "the stored server secret has "
          "2 bytes" in out and "cluster's server secret" in out,
          (rc, out[-600:]))


# ------------------------------------------------------------------- main

def main():
    r, why = cluster_common.start_redis()
    if r is None:
        note("SKIP: redis-server cannot start: %s" % why)
        check("test_cluster_s2s.py skipped: redis-server cannot start", True)
        return
    pg = pg_common.shared()
    if not check("PostgreSQL for the nodes", pg is not None):
        return
    db = "cls2s_%d" % os.getpid()
    rc, out = pg.psql("CREATE DATABASE %s OWNER parley" % db)
    if not check("a database for the cluster", rc == 0, out):
        return
    dns = start_proc("dnsmasq", dns_argv)
    pros_users = [harness.unique("pat")]
    for u in pros_users:
        rr = run("prosodyctl", "--config", PROSODY_CFG, "register", u,
                 "prosody.test", PW)
        check("prosodyctl register", rr.returncode == 0, rr.stdout[-300:])
    prosody = start_proc("prosody", ["prosody", "--config", PROSODY_CFG,
                                     "-F"])
    try:
        if not start_nodes(r[1], pg.conninfo("parley", db)):
            return
        one_secret()
        users = [harness.unique("alice"), harness.unique("bob")]
        add_users(nodes["a"], *users)
        ok = wait_port(PROSODY_S2S, prosody, 20) and \
            wait_port(PROSODY_C2S, prosody, 10)
        if not check("prosody starts", ok, "no ports"):
            log_tail("prosody")
        elif dns.poll() is None:
            federation(users, pros_users)
        else:
            check("dnsmasq runs", False, "exited")
        upload(users)
        restart_keeps_uploads()
        no_secret(r[1], pg)
    finally:
        for srv in nodes.values():
            srv.stop()
        stop_procs()
        if "--keep" in sys.argv:
            note("prosody log: %s" % os.path.join(PROSODY_DIR,
                                                   "prosody.log"))


if __name__ == "__main__":
    harness.run_main(main)
