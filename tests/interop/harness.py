#!/usr/bin/python3
"""harness.py - runs one parleyd for an interop test script, and reports.

For Debian's /usr/bin/python3 only (stdlib; the client libraries the test
scripts use are Debian packages installed for that interpreter).

API:
  srv = Server(**overrides)   temp dir, free loopback ports, config file
  srv.start()                 starts parleyd, waits (bounded) until it listens
  srv.stop()                  SIGTERM by pid, SIGKILL (its process group)
                              after 10 s; checks the exit status and the
                              log (a crash, a sanitizer or valgrind report
                              is a failed check); start() may follow
  srv.kill(sig)               sends sig (default SIGKILL) by pid and waits;
                              srv.start() then runs it again on the same
                              ports, configuration and data (crash tests)
  srv.ctl(*args)              runs parleyctl on the same configuration
  srv.stats()                 the server's counters (parleyctl stats)
  srv.counter(name)           one of them, None if it cannot be read
  srv.log_size(), srv.wait_log(regex, since, timeout)
                              waits (bounded) for a log line after offset
                              since; returns the match or None
  srv.host, srv.domain, srv.starttls_port, srv.direct_port
  spawn(name, argv, **popen)  starts a helper process (a peer server, an
                              agent, a relay) in its own process group;
                              finish() stops it if the script did not
  track(name, proc)           the same for a Popen started elsewhere with
                              start_new_session=True
  stop_group(proc, grace)     SIGTERM by pid, then SIGKILL to its group
  check(name, cond, detail)   prints "ok - name" or "not ok - name: detail"
  wait_for(pred, timeout)     polls pred until it is true (bounded): for
                              events with no notification of their own
  finish()                    stops every server and helper (SIGTERM, wait,
                              sanitizer verdict), dumps the last 60 log
                              lines if a check failed, exits 1 if one did
  run_main(main)              main(), an exception from it a failed check,
                              then finish() (not try/finally: finish()
                              exits, and the exception would be lost)
  RawClient                   a socket-level XMPP client (STARTTLS, direct
                              TLS, SASL PLAIN/SCRAM, IBR, bind) for tests that
                              need control of every byte
  unique(prefix)              a user name unique to this run

Every script ends through finish(), whatever happens: an uncaught
exception (also in a thread) is a failed check, and so are SIGTERM,
SIGINT and SIGHUP (scripts/run-tests' timeout); the servers are then
still stopped with SIGTERM and their logs checked.  Nothing started
here outlives the script: servers run in their own process group, which
is SIGKILLed after the SIGTERM grace.

Environment:
  PARLEYD          server binary (default build/parleyd, else $BUILD/parleyd)
  PARLEYCTL        control tool (default beside PARLEYD)
  PARLEYD_WRAPPER  command prefix, e.g. "valgrind --error-exitcode=99"
  PARLEY_START_TIMEOUT  seconds to wait for the listeners (default 15)
  PARLEY_LOG_LEVEL      server log level (default info)
  PARLEY_REFERENCE=prosody  run the same tests against Prosody instead: a
                   check of the tests themselves, not of parleyd.
  PARLEY_STORAGE=postgresql  every Server() stores in PostgreSQL: one
                   throwaway cluster per script (pg_common.shared()),
                   a database of its own per Server; the cluster stops
                   after the servers (after_servers).

To extend: add a keyword to Server() for a new setting and render it in
_parley_config(); helpers every script needs go here, test steps do not.
"""

import atexit
import base64
import hashlib
import hmac
import json
import os
import random
import re
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
BUILD = os.environ.get("BUILD", "build")

NS_STREAM = "http://etherx.jabber.org/streams"
NS_STREAMS_ERR = "urn:ietf:params:xml:ns:xmpp-streams"
NS_STANZA_ERR = "urn:ietf:params:xml:ns:xmpp-stanzas"
NS_CLIENT = "jabber:client"
NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
NS_REGISTER = "jabber:iq:register"
NS_PING = "urn:xmpp:ping"

_results = {"passed": 0, "failed": 0}
_servers = []
_procs = []  # (name, Popen, own process group) helpers; finish() stops


def _signal(pid, sig, group=False):
    """Sends sig to pid (or its process group); False if it is gone."""
    try:
        if group:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def stop_group(proc, grace=10, group=True, term=True):
    """Stops a process: SIGTERM by pid, up to grace seconds to exit, then
    SIGKILL, to its whole process group if it has its own (group=True:
    started with start_new_session=True), so that what it started goes
    too.  Returns the exit status (None if it would not die).  A process
    already reaped is left alone: its pid may belong to another now."""
    if proc.poll() is not None:
        return proc.returncode
    if term:
        _signal(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        pass
    if group:
        _signal(proc.pid, signal.SIGKILL, group=True)
    elif proc.poll() is None:
        _signal(proc.pid, signal.SIGKILL)
    try:
        return proc.wait(5)
    except subprocess.TimeoutExpired:
        return None


def track(name, proc, group=True):
    """finish() stops proc if the script has not (group: it was started
    with start_new_session=True); returns proc."""
    _procs.append((name, proc, group))
    return proc


def untrack(proc):
    _procs[:] = [e for e in _procs if e[1] is not proc]


def spawn(name, argv, **kw):
    """subprocess.Popen(argv, **kw) in a new session, tracked."""
    kw.setdefault("stdin", subprocess.DEVNULL)
    return track(name, subprocess.Popen(argv, start_new_session=True, **kw))


def _abs(path):
    return path if os.path.isabs(path) else os.path.join(ROOT, path)


# --------------------------------------------------------------- reporting

def check(name, cond, detail=""):
    """Records one check; returns cond so callers can branch on it."""
    if cond:
        _results["passed"] += 1
        print("ok - %s" % name, flush=True)
    else:
        _results["failed"] += 1
        detail = str(detail).replace("\n", "\\n")
        if len(detail) > 1500:
            detail = detail[:1500] + "...(cut)"
        print("not ok - %s: %s" % (name, detail), flush=True)
    return bool(cond)


def failed():
    return _results["failed"]


def note(msg):
    print("# " + str(msg).replace("\n", "\n# "), flush=True)


def wait_for(pred, timeout=10, interval=0.05):
    """Calls pred until it returns a true value or timeout seconds pass;
    returns that value (or the last false one).  For events that send no
    notification (a process exits, a file or a log line appears, a
    counter moves): the wait ends as soon as the event happens."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(interval)


_finishing = [False]
SCRIPT = os.path.basename(sys.argv[0] or "script")


def _stop_all(grace, helper_grace):
    """Helpers first (they may be clients of a server), then servers: all
    get SIGTERM at once, then each is waited for (bounded by grace)."""
    helpers = [(p, group) for name, p, group in _procs if p.poll() is None]
    for p, group in helpers:
        _signal(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + helper_grace
    for p, group in helpers:
        stop_group(p, max(0.1, deadline - time.monotonic()), group, False)
    _procs.clear()
    running = [srv for srv in _servers_all
               if srv.proc is not None and not srv.exit_checked]
    for srv in running:
        if srv.alive():
            _signal(srv.proc.pid, signal.SIGTERM)
            srv.term_sent = True
    for srv in running:
        srv.stop(grace)
    _run_after_servers()


_after = []  # callables run once the servers are stopped


def after_servers(fn):
    """finish() calls fn() after it stopped every server: for services
    the servers use (a database), which must outlive them."""
    _after.append(fn)


def _run_after_servers():
    while _after:
        fn = _after.pop(0)
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - report, go on stopping
            check("%s: stopping a service" % SCRIPT, False, repr(e))


def run_main(fn):
    """Runs a script's main(): an exception it raises is a failed check
    (with its traceback), never a silent end; then finish().  For the
    scripts that must stop their servers even when main() crashes (a bare
    main() call crashes with a non-zero status, which run-tests counts)."""
    try:
        fn()
    except BaseException:  # noqa: BLE001 - reported as a failed check
        import traceback
        check("%s runs to its end without an exception" % SCRIPT, False,
              traceback.format_exc()[-3000:])
    finally:
        finish()


def finish(grace=10, helper_grace=10):
    """Stops every server and helper, reports, and exits the process."""
    if _finishing[0]:
        _kill_everything()
        os._exit(1)
    _finishing[0] = True
    try:
        _stop_all(grace, helper_grace)
    except BaseException as e:  # noqa: BLE001 - still report and exit
        check("%s: servers stop cleanly" % SCRIPT, False, repr(e))
        _kill_everything()
    if _results["failed"]:
        for srv in _servers_all:
            srv.dump_log()
            print("# kept %s for inspection" % srv.dir)
    else:
        for srv in _servers_all:
            srv.cleanup()
    sys.stdout.flush()
    os._exit(1 if _results["failed"] else 0)


def _kill_everything():
    """Last resort: SIGKILL every process group started here."""
    for name, p, group in list(_procs):
        if p.poll() is None:
            _signal(p.pid, signal.SIGKILL, group=group)
    for srv in _servers_all:
        if srv.alive():
            _signal(srv.proc.pid, signal.SIGKILL, group=True)
    _run_after_servers()


def _excepthook(tp, value, tb):
    import traceback
    note("".join(traceback.format_exception(tp, value, tb)).rstrip())
    check("%s runs to the end without an exception" % SCRIPT, False,
          "%s: %s" % (tp.__name__, value))
    finish()


def _thread_excepthook(args):
    import traceback
    if args.exc_type is SystemExit:
        return
    note("".join(traceback.format_exception(
        args.exc_type, args.exc_value, args.exc_traceback)).rstrip())
    check("%s: thread %s runs without an exception"
          % (SCRIPT, args.thread.name if args.thread else "?"), False,
          "%s: %s" % (args.exc_type.__name__, args.exc_value))


def _on_signal(signo, frame):
    # scripts/run-tests' timeout sends SIGTERM, then SIGKILL 10 s later:
    # stop the servers well within that, and say why the script ended.
    signal.signal(signo, signal.SIG_DFL)
    check("%s finishes before it is stopped" % SCRIPT, False,
          "got signal %d (timed out?)" % signo)
    finish(grace=4, helper_grace=1)


sys.excepthook = _excepthook
threading.excepthook = _thread_excepthook
for _sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(_sig, _on_signal)


_servers_all = []
_unique_counter = [0]
_pg_dbs = [0]  # PostgreSQL databases made for servers so far


def unique(prefix):
    """A user name unique to this run (lower case, nodeprep-stable)."""
    _unique_counter[0] += 1
    return "%s%d%x%d" % (prefix, os.getpid(), int(time.time() * 1000) & 0xffffff,
                         _unique_counter[0])


PORT_CLAIMS = os.path.join(tempfile.gettempdir(), "parley-test-ports")


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _claim(port, again=True):
    """Claims port for this process until it ends: a file named after it
    in PORT_CLAIMS, made with O_EXCL, holding the pid.  Another script
    running at the same time (or a second server of this one, started
    before the first binds its ports) is never given the same port; the
    claim of a process that has ended is taken over."""
    os.makedirs(PORT_CLAIMS, exist_ok=True)
    path = os.path.join(PORT_CLAIMS, str(port))
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        try:
            with open(path) as f:
                pid = int(f.read() or "0")
        except (OSError, ValueError):
            pid = 0
        if again and pid and pid != os.getpid() and not _alive(pid):
            try:
                os.unlink(path)
            except OSError:
                pass
            return _claim(port, False)
        return False
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    return True


def free_ports(n):
    """n distinct ports free for TCP and UDP on 127.0.0.1 (bound then
    released), below the kernel's ephemeral range (32768-60999 by
    default): the sockets other tests bind to port 0 meanwhile (UDP UAs,
    clients) can never take one before the server that is given it binds
    it (SIP servers, Kamailio and baresip listen on UDP too).  Each is
    claimed (_claim): never handed out twice while its holder lives."""
    socks, ports = [], []
    rng = random.SystemRandom()
    while len(ports) < n:
        port = rng.randrange(20000, 32768)
        if port in ports or not _claim(port):
            continue
        pair = []
        try:
            for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                s = socket.socket(socket.AF_INET, kind)
                pair.append(s)
                s.bind(("127.0.0.1", port))
        except OSError:
            for s in pair:
                s.close()
            continue
        socks += pair
        ports.append(port)
    for s in socks:
        s.close()
    return ports


def free_run(n):
    """A port p with p .. p + n - 1 all free and all claimed (free_ports):
    for a server that binds consecutive ports (cluster.link under a
    supervisor: 2N of them).  Another script is never given one of them."""
    rng = random.SystemRandom()
    for _ in range(200):
        base = rng.randrange(20000, 32768 - n)
        got = []
        for k in range(n):
            if not _claim(base + k):
                break
            got.append(base + k)
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", base + k))
            except OSError:
                break
            finally:
                s.close()
        else:
            return base
        for q in got:  # give back what was claimed of this try
            try:
                os.unlink(os.path.join(PORT_CLAIMS, str(q)))
            except OSError:
                pass
    raise RuntimeError("no run of %d free ports" % n)


def no_verify_context():
    """Client TLS context that trusts the server's self-signed certificate."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def slixmpp_without_channel_binding(xmpp, forced_mech=None):
    """Makes a slixmpp client use SCRAM without channel binding.

    COMPAT slixmpp 1.8.3: it binds -PLUS to tls-unique, which RFC 9266
    forbids with TLS 1.3, and with TLS up it sends the GS2 flag "y" for
    non-PLUS SCRAM, which a server offering -PLUS must refuse (RFC 5802
    §6).  Without binding data it sends "n"; -PLUS is then excluded."""
    mechs = xmpp["feature_mechanisms"]
    orig = mechs.sasl_callback

    def no_cb(required, optional):
        creds = orig(required, optional)
        if "channel_binding" in creds:
            creds["channel_binding"] = None
        return creds
    mechs.sasl_callback = no_cb
    if forced_mech is None:
        mechs.use_mechs = {"SCRAM-SHA-512", "SCRAM-SHA-256", "SCRAM-SHA-1",
                           "PLAIN"}


# ------------------------------------------------------------------ server

# DER encodings of signature algorithm OIDs -> RFC 5929 hash.
CERT_SIG_OIDS = [
    (bytes.fromhex("06092a864886f70d01010c"), "sha384"),  # sha384WithRSA
    (bytes.fromhex("06092a864886f70d01010d"), "sha512"),  # sha512WithRSA
    (bytes.fromhex("06082a8648ce3d040303"), "sha384"),    # ecdsa-with-SHA384
    (bytes.fromhex("06082a8648ce3d040304"), "sha512"),    # ecdsa-with-SHA512
]

SANITIZER_PATTERNS = [
    r"ERROR: AddressSanitizer", r"ERROR: LeakSanitizer",
    r"runtime error:", r"ThreadSanitizer", r"MemorySanitizer",
    r"ERROR SUMMARY: [1-9]", r"Invalid (read|write) of size",
    r"definitely lost: [1-9]", r"Assertion .* failed", r"pl_assert",
    r"stack smashing detected", r"double free", r"Segmentation fault",
]


class Server:
    """One server under test, on its own ports and data directory."""

    def __init__(self, register="networks", require_encryption=True,
                 max_stanza_size=65536, max_depth=32, handshake_timeout=30,
                 idle_timeout=900, log_level=None, extra="", label="",
                 limits_extra="", c2s_extra="", register_extra="",
                 hosts=None, s2s=None, s2s_direct=False,
                 listeners_extra="", host_extra="", storage_extra="",
                 server_extra=""):
        self.reference = os.environ.get("PARLEY_REFERENCE", "")
        self.dir = tempfile.mkdtemp(prefix="parley-interop-")
        self.host = "127.0.0.1"
        self.domain = "localhost"
        self.starttls_port, self.direct_port = free_ports(2)
        self.register = register
        self.require_encryption = require_encryption
        self.max_stanza_size = max_stanza_size
        self.max_depth = max_depth
        self.handshake_timeout = handshake_timeout
        self.idle_timeout = idle_timeout
        self.log_level = log_level or os.environ.get("PARLEY_LOG_LEVEL",
                                                     "info")
        self.extra = extra
        self.limits_extra = limits_extra  # more settings in limits: {}
        self.c2s_extra = c2s_extra        # more settings in c2s: {}
        self.register_extra = register_extra  # more in register: {}
        self.label = "server[%s]" % label if label else "server"
        # hosts: virtual hosts, each a domain or a dict of host settings
        # ({"domain": ..., "certificate": ..., "key": ...}); the first is
        # srv.domain.  s2s: settings inside the s2s group (federation);
        # with it, an s2s listener (STARTTLS) on srv.s2s_port.
        self.hosts = hosts
        # listeners_extra: more entries for the listeners list (each a
        # "{ ... }" group); host_extra: more settings in the first host's
        # group (components = (...); for example).
        self.listeners_extra = listeners_extra
        self.host_extra = host_extra
        # storage_extra: more settings in the storage group
        # (sqlite_max_size = ...;).
        self.storage_extra = storage_extra
        # server_extra: more settings in the server group (processes).
        self.server_extra = server_extra
        if hosts:
            first = hosts[0]
            self.domain = first if isinstance(first, str) else first["domain"]
        self.s2s = s2s
        self.s2s_port = free_ports(1)[0] if s2s is not None else None
        # s2s_direct: also a direct TLS s2s listener (XEP-0368) on
        # srv.s2s_direct_port.
        self.s2s_direct_port = free_ports(1)[0] if s2s_direct else None
        self.log_path = os.path.join(self.dir, "server.log")
        self.conf_path = os.path.join(self.dir, "parleyd.conf")
        self.proc = None
        self.exit_checked = False  # stop() or kill() has dealt with proc
        self.term_sent = False     # SIGTERM already sent to proc
        self.bin = _abs(os.environ.get("PARLEYD",
                                       os.path.join(BUILD, "parleyd")))
        self.ctl_bin = _abs(os.environ.get(
            "PARLEYCTL", os.path.join(os.path.dirname(self.bin), "parleyctl")))
        os.makedirs(os.path.join(self.dir, "var"), exist_ok=True)
        _servers_all.append(self)
        # PARLEY_STORAGE=postgresql: a database of its own in the
        # script's cluster; None if that could not be had (start() says).
        self.storage = os.environ.get("PARLEY_STORAGE", "sqlite")
        self.pg_conninfo = None
        if self.storage == "postgresql" and not self.reference:
            import pg_common
            pg = pg_common.shared()
            if pg:
                _pg_dbs[0] += 1
                db = "parley_%d" % _pg_dbs[0]
                rc, out = pg.psql("CREATE DATABASE %s OWNER parley" % db)
                if check(self.label + ": PostgreSQL database " + db,
                         rc == 0, out):
                    self.pg_conninfo = pg.conninfo("parley", db)

    # -- configuration

    def _hosts_config(self):
        out = []
        for h in self.hosts or [self.domain]:
            if isinstance(h, str):
                h = {"domain": h}
            extra = "" if out else " " + self.host_extra
            out.append("{ " + " ".join('%s = "%s";' % kv for kv in h.items())
                       + extra + " }")
        return ",\n  ".join(out)

    def _storage_config(self, var):
        if self.storage == "postgresql":
            return 'storage: { driver = "postgresql"; postgresql = "%s"; ' \
                '%s };' % (self.pg_conninfo, self.storage_extra)
        return 'storage: { driver = "sqlite"; sqlite_path = "%s/parley.db"; ' \
            '%s };' % (var, self.storage_extra)

    def _parley_config(self):
        var = os.path.join(self.dir, "var")
        s2s_listener = s2s_group = ""
        if self.s2s is not None:
            s2s_listener = (',\n  { protocol = "s2s"; address = "127.0.0.1"; '
                            'port = %d; tls = "starttls"; }' % self.s2s_port)
            s2s_group = "s2s: { %s };" % self.s2s
        if self.s2s_direct_port:
            s2s_listener += (',\n  { protocol = "s2s"; address = "127.0.0.1";'
                             ' port = %d; tls = "direct"; }'
                             % self.s2s_direct_port)
        if self.listeners_extra:
            s2s_listener += ",\n  " + self.listeners_extra
        return """# written by tests/interop/harness.py
server: { data_dir = "%(var)s"; log_level = "%(log)s"; %(sx)s };
%(storage)s
listeners = (
  { protocol = "c2s"; address = "127.0.0.1"; port = %(p1)d; tls = "starttls"; },
  { protocol = "c2s"; address = "127.0.0.1"; port = %(p2)d; tls = "direct"; }%(s2sl)s
);
hosts = ( %(hosts)s );
%(s2sg)s
register: { policy = "%(reg)s"; networks = ["127.0.0.0/8", "::1/128"]; %(rx)s };
limits: { max_stanza_size = %(mss)d; max_depth = %(md)d; handshake_timeout = %(ht)d; idle_timeout = %(it)d; %(lx)s };
c2s: { require_encryption = %(re)s; %(cx)s };
%(extra)s
""" % {"var": var, "log": self.log_level, "p1": self.starttls_port,
           "p2": self.direct_port, "domain": self.domain, "reg": self.register,
           "mss": self.max_stanza_size, "md": self.max_depth,
           "ht": self.handshake_timeout, "it": self.idle_timeout,
           "re": "true" if self.require_encryption else "false",
           "extra": self.extra, "lx": self.limits_extra,
           "cx": self.c2s_extra, "rx": self.register_extra,
           "sx": self.server_extra,
           "hosts": self._hosts_config(),
           "s2sl": s2s_listener, "s2sg": s2s_group,
           "storage": self._storage_config(var)}

    def _prosody_config(self):
        """Reference mode: Prosody with the same ports and policies."""
        certs = os.path.join(self.dir, "certs")
        os.makedirs(certs, exist_ok=True)
        key = os.path.join(certs, "localhost.key")
        crt = os.path.join(certs, "localhost.crt")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048",
                        "-nodes", "-days", "2", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost",
                        "-keyout", key, "-out", crt],
                       check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        data = os.path.join(self.dir, "var")
        return """
data_path = "%(data)s"
pidfile = "%(dir)s/prosody.pid"
run_as_root = true
log = { { levels = { min = "%(log)s" }, to = "console" } }
interfaces = { "127.0.0.1" }
c2s_ports = { %(p1)d }
c2s_direct_tls_ports = { %(p2)d }
s2s_ports = { }
http_ports = { }
https_ports = { }
c2s_require_encryption = %(re)s
allow_registration = %(reg)s
min_seconds_between_registrations = 0
c2s_stanza_size_limit = %(mss)d
authentication = "internal_hashed"
storage = "internal"
certificates = "%(certs)s"
modules_enabled = { "roster", "saslauth", "tls", "disco", "register",
  "version", "time", "ping", "presence", "message", "iq" }
modules_disabled = { "s2s", "offline", "posix" }
VirtualHost "localhost"
  ssl = { key = "%(key)s", certificate = "%(crt)s" }
""" % {"data": data, "dir": self.dir, "p1": self.starttls_port,
           "p2": self.direct_port, "certs": certs, "key": key, "crt": crt,
           "log": "debug" if self.log_level == "debug" else "info",
           "re": "true" if self.require_encryption else "false",
           "reg": "false" if self.register == "closed" else "true",
           "mss": self.max_stanza_size}

    # -- life cycle

    def start(self):
        """Starts the server; returns True when both ports accept."""
        if self.reference == "prosody":
            self.conf_path = os.path.join(self.dir, "prosody.cfg.lua")
            conf = self._prosody_config()
            argv = ["prosody", "--config", self.conf_path, "-F"]
        else:
            if self.storage == "postgresql" and not self.pg_conninfo:
                check(self.label + " has its PostgreSQL database", False,
                      "PARLEY_STORAGE=postgresql and no cluster (above)")
                return False
            conf = self._parley_config()
            argv = [self.bin, "--config", self.conf_path]
            wrapper = os.environ.get("PARLEYD_WRAPPER", "")
            if wrapper:
                argv = shlex.split(wrapper) + argv
            if not os.access(self.bin, os.X_OK):
                check("server binary %s exists" % self.bin, False,
                      "not built; run make")
                return False
        with open(self.conf_path, "w") as f:
            f.write(conf)
        if self.alive():  # a start without a stop: never lose a process
            self.stop()
        self.log = open(self.log_path, "ab")
        log_start = self.log.tell()  # a restart looks for a new 'ready'
        # Its own process group: stop() and finish() kill the group, so
        # nothing it (or a wrapper) starts outlives the script.
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=self.log,
                                     cwd=self.dir, start_new_session=True)
        self.exit_checked = False
        self.term_sent = False
        if self not in _servers:
            _servers.append(self)
        limit = float(os.environ.get("PARLEY_START_TIMEOUT", "15"))
        pending = [self.starttls_port, self.direct_port]

        def listening():
            if self.proc.poll() is not None:
                return True  # gave up: it exited
            for port in list(pending):
                try:
                    socket.create_connection((self.host, port), 0.5).close()
                    pending.remove(port)
                except OSError:
                    pass
            return not pending
        wait_for(listening, limit, 0.1)
        ok = not pending and self.proc.poll() is None
        check(self.label + " starts and listens on both ports", ok,
              "exit status %s, ports not accepting: %s after %.0f s"
              % (self.proc.poll(), pending, limit))
        if ok and not self.reference:
            ready = wait_for(lambda: "ready" in self.log_text(log_start), 5,
                             0.1)
            check(self.label + " logs a line containing 'ready'", ready,
                  "no 'ready' in %s" % self.log_path)
        return ok

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def pid(self):
        return self.proc.pid if self.proc else None

    def open_fds(self):
        """Open descriptors of the server process, or None."""
        try:
            return len(os.listdir("/proc/%d/fd" % self.proc.pid))
        except OSError:
            return None

    def stop(self, grace=10):
        """SIGTERM, SIGKILL (to its process group) after grace seconds; a
        bad exit or report is a failure.  start() may follow."""
        if self.proc is None or self.exit_checked:
            return
        self.exit_checked = True
        if self in _servers:
            _servers.remove(self)
        # (finish() may have sent SIGTERM already, to all at once.)
        was_running = self.proc.poll() is None or self.term_sent
        killed = False
        if was_running:
            if not self.term_sent:
                _signal(self.proc.pid, signal.SIGTERM)
            self.term_sent = True
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                killed = True
            # Also whatever it (or its wrapper) started.
            _signal(self.proc.pid, signal.SIGKILL, group=True)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        rc = self.proc.returncode
        self.log.close()
        check(self.label + " was still running at the end", was_running,
              "it exited earlier with status %s" % rc)
        check(self.label + " stops on SIGTERM within %d s" % grace,
              not killed, "needed SIGKILL")
        # A clean stop exits 0; dying of the default SIGTERM action is
        # accepted too, any other signal or status is a crash.
        check(self.label + " exit status is clean", killed or rc in (0, -15),
              "exit status %s%s" % (rc, " (signal %d)" % -rc if rc and rc < 0
                                    else ""))
        text = self.log_text()
        bad = [p for p in SANITIZER_PATTERNS if re.search(p, text)]
        check(self.label + " log has no crash or sanitizer report", not bad,
              "log matches %s" % bad)

    def kill(self, sig=signal.SIGKILL):
        """Sends sig to the server by pid and waits (bounded) for it to
        exit; returns the exit status (None if it would not exit).  A
        later start() runs it again with the same ports and data; without
        one, finish() does not check it again."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        _signal(self.proc.pid, sig)
        try:
            rc = self.proc.wait(10)
        except subprocess.TimeoutExpired:
            return None
        _signal(self.proc.pid, signal.SIGKILL, group=True)
        self.log.close()
        self.exit_checked = True
        if self in _servers:
            _servers.remove(self)
        return rc

    def log_text(self, offset=0):
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_size(self):
        try:
            return os.path.getsize(self.log_path)
        except OSError:
            return 0

    def wait_log(self, regex, since=0, timeout=10):
        """The first match of regex in the log after byte offset since,
        waiting up to timeout seconds for it; None if none came."""
        return wait_for(lambda: re.search(regex, self.log_text(since)),
                        timeout, 0.05)

    def dump_log(self, n=60):
        lines = self.log_text().splitlines()
        print("# --- last %d lines of %s ---" % (min(n, len(lines)),
                                                 self.log_path))
        for line in lines[-n:]:
            print("# " + line)
        sys.stdout.flush()

    def ctl(self, *args, timeout=30):
        """Runs parleyctl; returns (exit status, stdout + stderr)."""
        if self.reference == "prosody":
            return None, "(reference mode: no parleyctl)"
        try:
            p = subprocess.run([self.ctl_bin, "--config", self.conf_path]
                               + list(args), stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               timeout=timeout, cwd=self.dir)
        except (OSError, subprocess.TimeoutExpired) as e:
            return None, str(e)
        return p.returncode, (p.stdout + p.stderr).decode("utf-8", "replace")

    def stats(self):
        """The server's counters (src/core/stats.h) as a dict; {} if it
        cannot be asked."""
        rc, out = self.ctl("stats", "--json")
        try:
            return json.loads(out) if rc == 0 else {}
        except ValueError:
            return {}

    def counter(self, name):
        return self.stats().get(name)

    def cleanup(self):
        if self.proc is None or not self.alive():
            shutil.rmtree(self.dir, ignore_errors=True)


def _at_exit():
    # A script that returns without finish() still stops its servers the
    # proper way (SIGTERM, sanitizer verdict) and reports.
    if not _finishing[0] and (_procs or any(
            srv.proc is not None and not srv.exit_checked
            for srv in _servers_all)):
        finish()


atexit.register(_at_exit)


# -------------------------------------------------------------- raw client

class StreamClosed(Exception):
    pass


class RawClient:
    """A blocking, socket-level XMPP client.

    Every read is bounded by a deadline.  Received bytes are kept in
    self.raw (for error details) and parsed with a pull parser; stanzas
    arrive as ElementTree elements in self.queue.
    """

    def __init__(self, host, port, domain="localhost", direct_tls=False,
                 timeout=10):
        self.host, self.port, self.domain = host, port, domain
        self.timeout = timeout
        self.sock = socket.create_connection((host, port), timeout)
        self.tls = False
        if direct_tls:
            self._wrap_tls()
        self.raw = b""
        self.closed = False      # peer closed the TCP connection
        self.stream_ended = False  # peer sent </stream:stream>
        self.queue = []
        self.header = None
        self.jid = None
        self._new_parser()

    def _wrap_tls(self):
        self.sock = no_verify_context().wrap_socket(
            self.sock, server_hostname=self.domain)
        self.tls = True

    def _new_parser(self):
        self.parser = ET.XMLPullParser(events=("start", "end"))
        self.depth = 0
        self.parse_error = None

    def send(self, data):
        if isinstance(data, str):
            data = data.encode("utf-8")
        self.sock.sendall(data)

    def open_stream(self, to=None, extra=""):
        to = self.domain if to is None else to
        self.send("<?xml version='1.0'?><stream:stream to='%s' version='1.0'"
                  " xmlns='jabber:client' xmlns:stream="
                  "'http://etherx.jabber.org/streams'%s>" % (to, extra))

    def _feed(self, data):
        self.raw += data
        if self.parse_error:
            return
        try:
            self.parser.feed(data)
            for ev, el in self.parser.read_events():
                if ev == "start":
                    self.depth += 1
                    if self.depth == 1:
                        self.header = el
                else:
                    self.depth -= 1
                    if self.depth == 1:
                        self.queue.append(el)
                        try:
                            self.header.remove(el)  # keep memory flat
                        except ValueError:
                            pass
                    elif self.depth == 0:
                        self.stream_ended = True
        except ET.ParseError as e:
            self.parse_error = e

    def _recv_some(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("timed out")
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            raise TimeoutError("timed out")
        except (ConnectionResetError, ssl.SSLEOFError, BrokenPipeError,
                ssl.SSLZeroReturnError):
            data = b""
        except ssl.SSLError as e:
            if "APPLICATION_DATA_AFTER_CLOSE_NOTIFY" in str(e) or \
                    "UNEXPECTED_EOF" in str(e):
                data = b""
            else:
                raise
        if not data:
            self.closed = True
            raise StreamClosed("connection closed by server")
        self._feed(data)

    def next(self, pred=None, timeout=None):
        """Next top-level element matching pred (others stay queued)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            for i, el in enumerate(self.queue):
                if pred is None or pred(el):
                    return self.queue.pop(i)
            if self.parse_error:
                raise StreamClosed("unparsable reply: %s" % self.parse_error)
            if self.closed:
                raise StreamClosed("connection closed by server")
            self._recv_some(deadline)

    def wait_header(self, timeout=None):
        deadline = time.monotonic() + (timeout or self.timeout)
        while self.header is None:
            if self.parse_error:
                raise StreamClosed("unparsable reply: %s" % self.parse_error)
            self._recv_some(deadline)
        return self.header

    def read_until_closed(self, timeout=None):
        """Reads until the server closes TCP; returns True if it did."""
        deadline = time.monotonic() + (timeout or self.timeout)
        try:
            while True:
                self._recv_some(deadline)
        except StreamClosed:
            return True
        except TimeoutError:
            return False
        except OSError:
            self.closed = True
            return True

    def features(self):
        self.wait_header()
        return self.next(lambda e: e.tag == "{%s}features" % NS_STREAM)

    def starttls(self):
        self.send("<starttls xmlns='%s'/>" % NS_TLS)
        el = self.next()
        if el.tag != "{%s}proceed" % NS_TLS:
            raise RuntimeError("STARTTLS refused: %s" % ET.tostring(el))
        self._wrap_tls()
        self.header = None
        self._new_parser()
        self.raw = b""

    def restart(self):
        self._new_parser()
        self.header = None
        self.open_stream()
        return self.features()

    def connect_tls(self, direct=None):
        """Opens the stream and secures it; returns the new features."""
        if self.tls:
            self.open_stream()
            return self.features()
        self.open_stream()
        self.features()
        self.starttls()
        self.open_stream()
        return self.features()

    @staticmethod
    def mechanisms(features):
        return [m.text for m in features.iter("{%s}mechanism" % NS_SASL)]

    def auth_plain(self, user, password):
        """SASL PLAIN; returns the <success/> or <failure/> element."""
        payload = base64.b64encode(("\0%s\0%s" % (user, password))
                                   .encode("utf-8")).decode()
        self.send("<auth xmlns='%s' mechanism='PLAIN'>%s</auth>"
                  % (NS_SASL, payload))
        return self.next()

    def cert_end_point(self):
        """RFC 5929 tls-server-end-point data: the server certificate's
        hash, with its signature hash (SHA-256 for MD5 and SHA-1)."""
        der = self.sock.getpeercert(binary_form=True)
        hname = "sha256"
        for oid, name in CERT_SIG_OIDS:
            if oid in der:
                hname = name
                break
        return hashlib.new(hname, der).digest()

    def auth_scram(self, user, password, mech="SCRAM-SHA-1", gs2=None,
                   cb_type=None, cb_data=None):
        """SASL SCRAM (RFC 5802); -PLUS binds to cb_type (only
        tls-server-end-point is computed here; cb_data overrides).
        Returns the final element; raises RuntimeError if the server
        signature is wrong."""
        base = mech[:-5] if mech.endswith("-PLUS") else mech
        hname = {"SCRAM-SHA-1": "sha1", "SCRAM-SHA-256": "sha256",
                 "SCRAM-SHA-512": "sha512"}[base]
        if gs2 is None:
            gs2 = "p=%s,," % cb_type if cb_type else "n,,"
        if cb_type and cb_data is None:
            cb_data = self.cert_end_point() \
                if cb_type == "tls-server-end-point" else b""
        cb_data = cb_data or b""
        cnonce = base64.b64encode(os.urandom(18)).decode()
        first_bare = "n=%s,r=%s" % (user.replace("=", "=3D")
                                    .replace(",", "=2C"), cnonce)
        self.send("<auth xmlns='%s' mechanism='%s'>%s</auth>" % (
            NS_SASL, mech,
            base64.b64encode((gs2 + first_bare).encode()).decode()))
        el = self.next()
        if el.tag != "{%s}challenge" % NS_SASL:
            return el
        server_first = base64.b64decode(el.text or "").decode()
        attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
        if not attrs["r"].startswith(cnonce):
            raise RuntimeError("server nonce does not extend ours")
        salted = hashlib.pbkdf2_hmac(hname, password.encode(),
                                     base64.b64decode(attrs["s"]),
                                     int(attrs["i"]))
        ckey = hmac.new(salted, b"Client Key", hname).digest()
        stored = hashlib.new(hname, ckey).digest()
        final_wo = "c=%s,r=%s" % (
            base64.b64encode(gs2.encode() + cb_data).decode(), attrs["r"])
        auth_msg = ",".join([first_bare, server_first, final_wo]).encode()
        sig = hmac.new(stored, auth_msg, hname).digest()
        proof = bytes(a ^ b for a, b in zip(ckey, sig))
        final = final_wo + ",p=" + base64.b64encode(proof).decode()
        self.send("<response xmlns='%s'>%s</response>" % (
            NS_SASL, base64.b64encode(final.encode()).decode()))
        el = self.next()
        if el.tag == "{%s}success" % NS_SASL:
            skey = hmac.new(salted, b"Server Key", hname).digest()
            want = base64.b64encode(hmac.new(skey, auth_msg, hname).digest())
            got = base64.b64decode(el.text or "").decode()
            if got != "v=" + want.decode():
                raise RuntimeError("bad server signature %r" % got)
        return el

    def bind(self, resource=None):
        res = "<resource>%s</resource>" % resource if resource else ""
        self.send("<iq type='set' id='bind1'><bind xmlns='%s'>%s</bind></iq>"
                  % (NS_BIND, res))
        el = self.next(lambda e: e.get("id") == "bind1")
        j = el.find(".//{%s}jid" % NS_BIND)
        if el.get("type") != "result" or j is None:
            raise RuntimeError("bind failed: %s" % ET.tostring(el))
        self.jid = j.text
        return self.jid

    def register(self, user, password, iq_id="reg1"):
        """XEP-0077 registration on this (not yet authenticated) stream;
        returns the reply <iq/>."""
        self.send("<iq type='set' id='%s'><query xmlns='%s'><username>%s"
                  "</username><password>%s</password></query></iq>"
                  % (iq_id, NS_REGISTER, user, password))
        return self.next(lambda e: e.get("id") == iq_id)

    def login(self, user, password, resource=None, mech="PLAIN"):
        """connect_tls + SASL + restart + bind; raises on failure."""
        self.connect_tls()
        if mech == "PLAIN":
            el = self.auth_plain(user, password)
        else:
            el = self.auth_scram(user, password, mech)
        if el.tag != "{%s}success" % NS_SASL:
            raise RuntimeError("auth failed: %s" % ET.tostring(el))
        self.restart()
        return self.bind(resource)

    def iq(self, body, type_="get", to=None, iq_id=None, timeout=None):
        iq_id = iq_id or "q%x" % int.from_bytes(os.urandom(4), "big")
        to_attr = " to='%s'" % to if to else ""
        self.send("<iq type='%s' id='%s'%s>%s</iq>" % (type_, iq_id, to_attr,
                                                      body))
        return self.next(lambda e: e.get("id") == iq_id, timeout)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def tostr(el):
    return ET.tostring(el, encoding="unicode") if el is not None else "None"


def stanza_error(el):
    """The defined condition of an error stanza, or None."""
    err = el.find("{%s}error" % NS_CLIENT)
    if err is None:
        return None
    for child in err:
        if child.tag.startswith("{%s}" % NS_STANZA_ERR) and \
                not child.tag.endswith("}text"):
            return child.tag.split("}", 1)[1]
    return None


def register_user(srv, user, password):
    """Registers user@domain through XEP-0077 on a raw TLS stream;
    returns (ok, detail)."""
    c = RawClient(srv.host, srv.direct_port, srv.domain, direct_tls=True)
    try:
        c.open_stream()
        c.features()
        el = c.register(user, password)
        return el.get("type") == "result", tostr(el)
    except (OSError, RuntimeError, StreamClosed, TimeoutError) as e:
        return False, "%s: %r" % (type(e).__name__, e)
    finally:
        c.close()
