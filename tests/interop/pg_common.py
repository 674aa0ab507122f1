#!/usr/bin/python3
"""pg_common.py - a throwaway PostgreSQL cluster for interop tests.

API:
  pg = PgCluster()        a data directory under a new temporary dir,
                          a free loopback port (nothing runs yet)
  pg.start()              initdb (first time), then the server: 127.0.0.1
                          and pg.port, its Unix socket in the temporary
                          dir, fsync on; waits (bounded) until it answers;
                          True if it does
  pg.create_db(user, db)  a login role and a database it owns
  pg.conninfo(user, db)   the libpq connection string parleyd is given
  pg.stop()               fast shutdown by pid (SIGINT), SIGQUIT then
                          SIGKILL if it will not go; start() may follow
                          on the same data (an outage in a test)
  pg.psql(sql, db)        runs sql with psql as the superuser; (rc, out)
  shared()                one cluster per script (the harness's
                          PARLEY_STORAGE=postgresql), started on first use,
                          stopped after the script's servers

PostgreSQL refuses to run as root, and the tests run as root: the
server, initdb and psql then run as the `postgres` user (Debian's
postgresql-15 creates it), on a directory chowned to it.  Run by another
user, they run as that user.  Binaries: /usr/lib/postgresql/<N>/bin
(scripts/bootstrap --test installs postgresql-15), or PG_BIN.
"""

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time

import harness

START_TIMEOUT = float(os.environ.get("PG_START_TIMEOUT", "30"))


def pg_bin():
    """The directory of initdb and postgres, or None."""
    env = os.environ.get("PG_BIN")
    if env:
        return env
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    return os.path.dirname(found[-1]) if found else None


class PgCluster:
    def __init__(self, label="postgresql", max_connections=50):
        self.label = label
        # A parleyd holds one connection (its storage thread): a bench of
        # many processes needs more than the tests' 50.
        self.max_connections = max_connections
        self.bin = pg_bin()
        self.dir = tempfile.mkdtemp(prefix="parley-pg-")
        self.data = os.path.join(self.dir, "data")
        self.sock = self.dir
        self.port = harness.free_ports(1)[0]
        self.log_path = os.path.join(self.dir, "postgres.log")
        self.proc = None
        self.initialized = False
        self.started = False  # has run once: its port is now fixed
        self.as_user = None
        if os.geteuid() == 0:
            try:
                pw = pwd.getpwnam("postgres")
                self.as_user = (pw.pw_uid, pw.pw_gid)
            except KeyError:
                pass
        if self.as_user:
            os.chown(self.dir, *self.as_user)
        os.chmod(self.dir, 0o700)

    def _popen_kw(self):
        kw = {"stdin": subprocess.DEVNULL, "cwd": self.dir}
        if self.as_user:
            kw.update(user=self.as_user[0], group=self.as_user[1],
                      extra_groups=[])
        return kw

    def _run(self, argv, timeout=60):
        try:
            p = subprocess.run(argv, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, timeout=timeout,
                               **self._popen_kw())
        except (OSError, subprocess.TimeoutExpired) as e:
            return None, str(e)
        return p.returncode, p.stdout.decode("utf-8", "replace")

    def start(self):
        """Starts the server (initdb first time); True once it answers."""
        if not self.bin or not os.path.exists(os.path.join(self.bin,
                                                           "postgres")):
            harness.check("%s: server binaries found" % self.label, False,
                          "no /usr/lib/postgresql/*/bin/postgres "
                          "(scripts/bootstrap --test installs postgresql-15)")
            return False
        if self.as_user is None and os.geteuid() == 0:
            harness.check("%s: a user to run it as" % self.label, False,
                          "running as root and there is no postgres user")
            return False
        if not self.initialized:
            # --no-sync: initdb's own files only; the server runs with
            # fsync on (durability is what the tests check).
            rc, out = self._run([os.path.join(self.bin, "initdb"), "-D",
                                 self.data, "-A", "trust", "-U", "postgres",
                                 "-E", "UTF8", "--locale=C", "--no-sync"],
                                timeout=120)
            if not harness.check("%s: initdb" % self.label, rc == 0, out):
                return False
            self.initialized = True
        # The port was free when chosen; something else may have taken
        # it since: a first start moves to another one (a restart must
        # keep its port: parleyd has it).
        for attempt in range(3):
            log = open(self.log_path, "ab")
            offset = log.tell()
            self.proc = subprocess.Popen(
                [os.path.join(self.bin, "postgres"), "-D", self.data,
                 "-p", str(self.port), "-c", "listen_addresses=127.0.0.1",
                 "-c", "unix_socket_directories=" + self.sock,
                 "-c", "fsync=on", "-c", "synchronous_commit=on",
                 "-c", "max_connections=%d" % self.max_connections,
                 "-c", "shared_buffers=16MB",
                 "-c", "logging_collector=off"],
                stdout=log, stderr=log, start_new_session=True,
                **self._popen_kw())
            log.close()
            harness.wait_for(lambda: self.proc.poll() is not None or
                             self._ready(), START_TIMEOUT, 0.1)
            ok = self._ready()
            if ok or self.started or self.proc.poll() is None or \
                    "already in use" not in self._log_tail(offset):
                break
            self.port = harness.free_ports(1)[0]
        if ok:
            self.started = True
        return harness.check("%s: server starts on port %d"
                             % (self.label, self.port), ok,
                             "not answering after %.0f s (exit status %s); "
                             "log: %s" % (START_TIMEOUT, self.proc.poll(),
                                          self._log_tail(offset)))

    def _ready(self):
        if self.proc.poll() is not None:
            return False
        rc, _ = self._run([os.path.join(self.bin, "pg_isready"), "-q",
                           "-h", "127.0.0.1", "-p", str(self.port)],
                          timeout=5)
        return rc == 0

    def _log_tail(self, offset=0):
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                return f.read().decode("utf-8", "replace")[-800:]
        except OSError:
            return "(no log)"

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def psql(self, sql, db="postgres"):
        psql = os.path.join(self.bin, "psql")
        if not os.path.exists(psql):
            psql = shutil.which("psql") or psql
        return self._run([psql, "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1",
                          "-h", self.sock, "-p", str(self.port), "-U",
                          "postgres", "-d", db, "-c", sql], timeout=60)

    def create_db(self, user="parley", db="parley"):
        rc, out = self.psql("CREATE ROLE %s LOGIN" % user)
        if rc == 0:
            rc, out = self.psql("CREATE DATABASE %s OWNER %s" % (db, user))
        return harness.check("%s: role and database %s" % (self.label, db),
                             rc == 0, out)

    def conninfo(self, user="parley", db="parley"):
        return "host=127.0.0.1 port=%d dbname=%s user=%s" % (self.port, db,
                                                              user)

    def stop(self, grace=20):
        """Fast shutdown (SIGINT) by pid; True if it exited in time."""
        if not self.alive():
            return True
        for sig, wait in ((signal.SIGINT, grace), (signal.SIGQUIT, 5),
                          (signal.SIGKILL, 5)):
            try:
                os.kill(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(wait)
                return sig == signal.SIGINT
            except subprocess.TimeoutExpired:
                continue
        # Whatever is left of its process group (backends).
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        return False

    def cleanup(self):
        if not self.alive():
            shutil.rmtree(self.dir, ignore_errors=True)


_shared = []


def _stop_shared():
    for pg in _shared:
        stopped = pg.stop()
        harness.check("%s stops on SIGINT" % pg.label, stopped,
                      "needed SIGQUIT/SIGKILL; log: %s" % pg._log_tail())
        if harness.failed():
            print("# kept %s for inspection" % pg.dir)
        else:
            pg.cleanup()


def shared():
    """The script's cluster with role and database parley, started on
    first use; stopped after every server of the script (harness
    after_servers).  None if it cannot start (a "not ok" says why)."""
    if _shared:
        return _shared[0] if _shared[0].alive() else None
    pg = PgCluster()
    _shared.append(pg)
    harness.after_servers(_stop_shared)
    if not pg.start() or not pg.create_db():
        return None
    return pg
