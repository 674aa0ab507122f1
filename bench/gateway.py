#!/usr/bin/python3
"""bench/gateway.py - parley-gateway throughput (issue 16, "Speed").

    BENCH_ONLY=gateway bench/run     (a full `make bench` runs it too)
    bench/gateway.py                 the same, directly

Issue 16: messages/s through IM->SMS (Kannel with its fake SMSC) and
e-mail->IM, gateway CPU per message, queue latency p99; target >= 2,000
messages/s per gateway core with delivery reports on.

Starts parleyd (components sms.localhost and mail.localhost), Kannel
(bearerbox with one "fake" SMSC, smsbox, fakesmsc: the classes of
tests/interop/test_gateway_sms.py) and parley-gateway, all on loopback,
with the queue file on disk (synchronous=FULL: every commit is an fsync).
Then, each for BENCH_GW_DURATION seconds after BENCH_GW_WARMUP seconds:

1. kannel: Kannel alone, no gateway: BENCH_GW_CONC HTTP clients (each
   on a persistent connection, as the gateway's libcurl) send sendsms with
   dlr-mask 31 and a dlr-url to this script's sink: sendsms/s and DLRs/s
   Kannel and fakesmsc sustain, so the gateway figures can be read
   against them.
2. im-sms-kannel: BENCH_GW_SENDERS IM users (raw XMPP over TLS) each keep
   BENCH_GW_WINDOW messages with a XEP-0184 receipt request in flight to
   +1555... numbers at sms.localhost; a slot frees when the receipt comes
   (the gateway sends it when Kannel's delivery report arrives).
3. im-sms-sink: the same with the gateway's sendsms URL pointing at the
   sink (a subprocess: HTTP sendsms answered "202 0: Accepted for
   delivery" as smsbox does, then the delivery reports Kannel sent in
   run 2, type 8 then 1, posted to the dlr-url on kept connections as
   smsbox's HTTP client does), which takes Kannel out
   when Kannel is the limit.
4. im-sms-rate: the sink again, the senders at a fixed total rate
   (BENCH_GW_RATE, or half what im-sms-sink reached): queue latency
   below saturation.
5. mail-im: BENCH_GW_SMTP pipelining SMTP clients (RFC 2920: MAIL, RCPT,
   DATA in one write, the message, then the next MAIL after the dot)
   send to rN@gw.test, which the gateway hands to IM users rN@localhost
   (online, reading).

Figures per run: messages/s (reached "sent" in the queue's history during
the window), gateway CPU seconds per message (utime+stime of the gateway
from /proc/PID/stat, all threads, over the window) and messages/s per
gateway core (1 / CPU per message), queue latency p50/p99 (history:
accepted -> sent), end-to-end latency p50/p99 (send -> receipt for SMS,
end of DATA -> IM arrival for e-mail), and afterwards lost and duplicated
messages (every one sent must be received exactly once: fakesmsc's log or
the sink's counts, the receipts, the IM arrivals).

Sizes: BENCH_GW_DURATION [10], BENCH_GW_WARMUP [2], BENCH_GW_SENDERS [4],
BENCH_GW_WINDOW [50], BENCH_GW_RATE [0: half the saturated rate],
BENCH_GW_SMTP [16], BENCH_GW_RECEIVERS [4],
BENCH_GW_CONC [16], BENCH_GW_HTTP_WORKERS [16] (the gateway's
http_workers), BENCH_GW_BATCH [200] (its queue_batch), BENCH_GW_RUNS
[kannel im-sms-kannel im-sms-sink im-sms-rate mail-im], BENCH_GW_BINARY
[build/parley-gateway] (another build to compare), BENCH_GW_PIN=1 pins the
gateway to core 0 and the rest to core 1, BENCH_GW_PERF=DIR records
`perf record -g` of the gateway during each run's window, BENCH_KEEP=1
keeps the temporary directory.  Writes bench/results/<date>-gateway.md
and .jsonl.

The machine may be shared: CPU per message (the gateway's own
accounting) is the steadiest figure; rates and latencies move with
whatever else runs.  Load averages are in the results file.
"""
import asyncio
import datetime
import json
import os
import re
import signal
import socket
import sqlite3
import ssl
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "interop"))
RESULTS = os.path.join(ROOT, "bench", "results")


def env_int(name, default):
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


DURATION = env_int("BENCH_GW_DURATION", 10)
WARMUP = env_int("BENCH_GW_WARMUP", 2)
SENDERS = env_int("BENCH_GW_SENDERS", 4)
WINDOW = env_int("BENCH_GW_WINDOW", 50)
SMTP = env_int("BENCH_GW_SMTP", 16)
RECEIVERS = env_int("BENCH_GW_RECEIVERS", 4)
CONC = env_int("BENCH_GW_CONC", 16)
RATE = env_int("BENCH_GW_RATE", 0)
HTTP_WORKERS = env_int("BENCH_GW_HTTP_WORKERS", 16)
BATCH = env_int("BENCH_GW_BATCH", 200)
RUNS = os.environ.get("BENCH_GW_RUNS",
                      "kannel im-sms-kannel im-sms-sink im-sms-rate "
                      "mail-im").split()
PIN = os.environ.get("BENCH_GW_PIN") == "1"
PERF = os.environ.get("BENCH_GW_PERF", "")
GATEWAY = os.environ.get("BENCH_GW_BINARY",
                         os.path.join(ROOT, "build", "parley-gateway"))
TICK = os.sysconf("SC_CLK_TCK")
SMS = "sms.localhost"
MAIL = "mail.localhost"
SECRET = "bench-secret"


def log(msg):
    print("[gateway bench %s] %s" % (time.strftime("%H:%M:%S"), msg),
          file=sys.stderr, flush=True)


def cpu_s(pid):
    """utime + stime of pid, every thread, in seconds."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK
    except OSError:
        return 0.0


def pct(v, p):
    if not v:
        return None
    v = sorted(v)
    return v[min(len(v) - 1, int(round(p / 100.0 * (len(v) - 1))))]


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


# ---- the sink: smsbox's sendsms answered, DLRs posted back ---------------

class Sink:
    """HTTP server (asyncio): /cgi-bin/sendsms answered as smsbox does, then
    the DLRs of dlr_types posted to the dlr-url; /dlr counted (as the
    dlr-url of the Kannel-alone run); /stats gives the counts."""

    def __init__(self, dlr_types):
        self.dlr_types = dlr_types
        self.sms = {}          # (to, text, udh) -> count
        self.dlr_in = 0
        self.dlr_out = 0
        self.dlr_fail = 0
        self.dlr_retry = 0     # timed out (5 s) or refused, sent again
        self.sem = None
        self.idle = {}         # (host, port) -> kept connections

    async def post_dlr(self, u):
        """One GET on a kept connection when one is idle (smsbox's HTTP
        client keeps HTTP/1.1 connections and reuses them), else a new
        one; returns the response head."""
        key = (u.hostname, u.port)
        req = ("GET %s?%s HTTP/1.1\r\nHost: %s:%d\r\n"
               "User-Agent: Kannel/1.4.5\r\n\r\n" % (
                   u.path, u.query, u.hostname, u.port)).encode()
        idle = self.idle.setdefault(key, [])
        while True:
            reused = bool(idle)
            r, w = idle.pop() if reused else \
                await asyncio.open_connection(u.hostname, u.port)
            try:
                w.write(req)
                head = await r.readuntil(b"\r\n\r\n")
            except (OSError, asyncio.IncompleteReadError):
                w.close()
                if reused:
                    continue    # closed while idle: a new connection
                raise OSError("no answer")
            if b"connection: close" in head.lower():
                w.close()
            else:
                idle.append((r, w))
            return head

    async def post_dlrs(self, url):
        async with self.sem:
            for t in self.dlr_types:
                u = urllib.parse.urlsplit(url.replace("%d", str(t)))
                for attempt in range(3):
                    try:
                        head = await asyncio.wait_for(self.post_dlr(u), 5)
                    except (OSError, asyncio.TimeoutError):
                        self.dlr_retry += 1
                        continue
                    if b" 200 " in head:
                        self.dlr_out += 1
                    else:
                        self.dlr_fail += 1
                    break
                else:
                    self.dlr_fail += 1

    async def handle(self, r, w):
        try:
            while True:
                line = await r.readline()
                if not line:
                    break
                while True:   # headers, ignored
                    h = await r.readline()
                    if h in (b"\r\n", b"\n", b""):
                        break
                target = line.split(b" ")[1].decode() if b" " in line \
                    else "/"
                path, _, query = target.partition("?")
                body = b""
                status = "200 OK"
                if path == "/cgi-bin/sendsms":
                    q = urllib.parse.parse_qs(query)
                    key = (q.get("to", [""])[0], q.get("text", [""])[0],
                           q.get("udh", [""])[0])
                    self.sms[key] = self.sms.get(key, 0) + 1
                    status, body = "202 Accepted", \
                        b"0: Accepted for delivery"
                    dlr = q.get("dlr-url", [""])[0]
                    if dlr and self.dlr_types:
                        asyncio.ensure_future(self.post_dlrs(dlr))
                elif path == "/dlr":
                    self.dlr_in += 1
                elif path == "/stats":
                    c = list(self.sms.values())
                    body = json.dumps({
                        "requests": sum(c), "unique": len(c),
                        "dup": sum(x - 1 for x in c if x > 1),
                        "dlr_in": self.dlr_in, "dlr_out": self.dlr_out,
                        "dlr_fail": self.dlr_fail,
                        "dlr_retry": self.dlr_retry}).encode()
                else:
                    status = "404 Not Found"
                w.write(("HTTP/1.1 %s\r\nContent-Type: text/plain\r\n"
                         "Content-Length: %d\r\n\r\n" % (status, len(body))
                         ).encode() + body)
                await w.drain()
        except (OSError, IndexError, asyncio.IncompleteReadError):
            pass
        finally:
            w.close()

    async def main(self, port):
        self.sem = asyncio.Semaphore(64)
        srv = await asyncio.start_server(self.handle, "127.0.0.1", port,
                                         backlog=1024)
        print("ready", flush=True)
        async with srv:
            await srv.serve_forever()


def sink_main(port, types):
    try:
        asyncio.run(Sink([int(t) for t in types.split(",") if t]).main(port))
    except KeyboardInterrupt:
        pass


def http_get(port, path, timeout=10):
    s = socket.create_connection(("127.0.0.1", port), timeout)
    s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
               % path).encode())
    data = b""
    while True:
        c = s.recv(65536)
        if not c:
            break
        data += c
        head, _, body = data.partition(b"\r\n\r\n")
        m = re.search(rb"Content-Length: (\d+)", head)
        if m and len(body) >= int(m.group(1)):
            break
    s.close()
    return data.partition(b"\r\n\r\n")[2]


# ---- Kannel alone: sendsms load ------------------------------------------

async def kload(port, seconds, conc, dlr_base, user, pw):
    """conc clients send sendsms for seconds, each on one persistent
    HTTP/1.1 connection (as the gateway's pooled libcurl handles),
    reconnecting when smsbox closes it."""
    counts = {"ok": 0, "err": 0, "connects": 0}
    end = time.monotonic() + seconds
    seq = [0]

    async def one(i):
        r = w = None
        while time.monotonic() < end:
            seq[0] += 1
            n = seq[0]
            q = urllib.parse.urlencode({
                "username": user, "password": pw,
                "to": "+1555%07d" % (n % 1000), "from": "+15550000",
                "text": "kannel alone %d" % n, "dlr-mask": "31",
                "dlr-url": "%s/dlr?id=k%d&type=%%d" % (dlr_base, n)})
            try:
                if w is None:
                    r, w = await asyncio.open_connection("127.0.0.1", port)
                    counts["connects"] += 1
                w.write(("GET /cgi-bin/sendsms?%s HTTP/1.1\r\n"
                         "Host: 127.0.0.1\r\n\r\n" % q).encode())
                status = await r.readline()
                length, close = 0, False
                while True:
                    h = await r.readline()
                    if h in (b"\r\n", b""):
                        break
                    k, _, v = h.decode("latin-1").partition(":")
                    if k.lower() == "content-length":
                        length = int(v)
                    elif k.lower() == "connection" and "close" in v.lower():
                        close = True
                await r.readexactly(length)
                if status[9:10] == b"2":
                    counts["ok"] += 1
                else:
                    counts["err"] += 1
                if close:
                    w.close()
                    w = None
            except (OSError, ValueError, asyncio.IncompleteReadError):
                counts["err"] += 1
                if w:
                    w.close()
                w = None
                await asyncio.sleep(0.01)
        if w:
            w.close()
    await asyncio.gather(*[one(i) for i in range(conc)])
    return counts


# ---- IM senders ----------------------------------------------------------

RECEIPT = re.compile(rb"<received\b[^>]*?\bid=[\"']b(\d+)_(\d+)[\"']")
ERROR_ID = re.compile(rb"<message\b[^>]*?type=[\"']error[\"'][^>]*>")
MAILBODY = re.compile(rb"bench-mail (\d+) (\d+) ([0-9.]+)")


class Sender(threading.Thread):
    """One IM user sending to sms.localhost with a window of receipts."""

    def __init__(self, srv, user, idx, window, stop, rate=0.0):
        super().__init__(daemon=True)
        from im_common import ImClient
        self.c = ImClient(srv, user, "bench")
        self.c.presence()
        self.c.drain(0.2)
        self.idx = idx
        self.window = window
        self.stop_ev = stop
        self.sent = {}        # seq -> monotonic send time
        self.got = {}         # seq -> count
        self.lat = []         # (receipt time, latency s)
        self.errors = 0
        self.n = 0
        self.rate = rate      # messages/s, or 0: keep the window full

    def run(self):
        sock = self.c.sock
        sock.settimeout(0.005 if self.rate else 0.2)
        buf = b""
        outstanding = 0
        start = time.monotonic()
        while True:
            stopping = self.stop_ev.is_set()
            if stopping and (outstanding <= 0 or self.stop_ev.drained):
                break
            due = 0
            if not stopping and self.rate:
                due = int((time.monotonic() - start) * self.rate) - self.n
            elif not stopping:
                due = self.window - outstanding
            if due > 0:
                out = []
                now = time.monotonic()
                for _ in range(due):
                    self.n += 1
                    outstanding += 1
                    self.sent[self.n] = now
                    out.append(
                        "<message to='+1555%07d@%s' type='chat' "
                        "id='b%d_%d'><body>bench %d %d</body><request "
                        "xmlns='urn:xmpp:receipts'/></message>" % (
                            (self.idx * 100000 + self.n) % 1000, SMS,
                            self.idx, self.n, self.idx, self.n))
                try:
                    sock.sendall("".join(out).encode())
                except OSError:
                    break
            try:
                data = sock.recv(262144)
            except (socket.timeout, ssl.SSLWantReadError):
                continue
            except OSError:
                break
            if not data:
                break
            buf += data
            cut = buf.rfind(b"</message>")
            if cut < 0:
                continue
            chunk, buf = buf[:cut + 10], buf[cut + 10:]
            now = time.monotonic()
            for m in RECEIPT.finditer(chunk):
                seq = int(m.group(2))
                self.got[seq] = self.got.get(seq, 0) + 1
                if self.got[seq] == 1 and seq in self.sent:
                    outstanding -= 1
                    self.lat.append((now, now - self.sent[seq]))
            self.errors += len(ERROR_ID.findall(chunk))


class Receiver(threading.Thread):
    """One IM user reading the e-mails the gateway hands over."""

    def __init__(self, srv, user):
        super().__init__(daemon=True)
        from im_common import ImClient
        self.c = ImClient(srv, user, "bench")
        self.c.presence()
        self.c.drain(0.2)
        self.got = {}
        self.lat = []
        self.stop_ev = threading.Event()

    def run(self):
        sock = self.c.sock
        sock.settimeout(0.2)
        buf = b""
        while not self.stop_ev.is_set():
            try:
                data = sock.recv(262144)
            except (socket.timeout, ssl.SSLWantReadError):
                continue
            except OSError:
                break
            if not data:
                break
            buf += data
            cut = buf.rfind(b"</message>")
            if cut < 0:
                continue
            chunk, buf = buf[:cut + 10], buf[cut + 10:]
            now = time.monotonic()
            for m in MAILBODY.finditer(chunk):
                key = (int(m.group(1)), int(m.group(2)))
                self.got[key] = self.got.get(key, 0) + 1
                if self.got[key] == 1:
                    self.lat.append((now, now - float(m.group(3))))


# ---- SMTP senders --------------------------------------------------------

async def smtp_client(port, i, nrcpt, stop, stats):
    """Pipelining SMTP client (RFC 2920): MAIL, RCPT, DATA in one write,
    the message after the 354, the next MAIL after the 250 of the dot."""
    r, w = await asyncio.open_connection("127.0.0.1", port)

    async def reply():
        while True:
            line = await r.readline()
            if not line:
                raise ConnectionError("closed")
            if line[3:4] != b"-":
                return int(line[:3])

    await reply()
    w.write(b"EHLO bench.example\r\n")
    await reply()
    n = 0
    while not stop.is_set():
        n += 1
        to = "r%d@gw.test" % ((i + n) % nrcpt)
        w.write(("MAIL FROM:<s%d@example.org>\r\nRCPT TO:<%s>\r\nDATA\r\n"
                 % (i, to)).encode())
        codes = [await reply() for _ in range(3)]
        if codes != [250, 250, 354]:
            stats["refused"] += 1
            w.write(b"RSET\r\n")
            await reply()
            continue
        t = time.monotonic()
        w.write(("From: <s%d@example.org>\r\nTo: <%s>\r\nSubject: bench\r\n"
                 "Message-ID: <b%d.%d@example.org>\r\n\r\n"
                 "bench-mail %d %d %.6f\r\n.\r\n" % (
                     i, to, i, n, i, n, t)).encode())
        c = await reply()
        if c == 250:
            stats["accepted"] += 1
            stats["sent"].add((i, n))
            stats["data_lat"].append((time.monotonic(),
                                      time.monotonic() - t))
        else:
            stats["refused"] += 1
    w.write(b"QUIT\r\n")
    try:
        await asyncio.wait_for(reply(), 5)
    except (asyncio.TimeoutError, ConnectionError):
        pass
    w.close()


def run_smtp(port, conc, nrcpt, stop, stats):
    async def main():
        await asyncio.gather(*[smtp_client(port, i, nrcpt, stop, stats)
                               for i in range(conc)],
                             return_exceptions=True)
    asyncio.run(main())


# ---- the setup -----------------------------------------------------------

class Bench:
    def __init__(self):
        import harness
        from test_gateway_sms import Kannel, Phone, wait_port
        self.h = harness
        self.wait_port = wait_port
        self.cport, self.cb, self.smtp_port, self.sink_port = \
            harness.free_ports(4)
        self.srv = harness.Server(
            limits_extra="max_connections_per_ip = 100000; "
                         "read_rate = 1073741824;",
            listeners_extra='{ protocol = "component"; address = '
                            '"127.0.0.1"; port = %d; tls = "none"; }'
                            % self.cport,
            host_extra='components = ( { domain = "%s"; secret = "%s"; },'
                       ' { domain = "%s"; secret = "%s"; } );'
                       % (SMS, SECRET, MAIL, SECRET))
        self.d = self.srv.dir
        self.kannel = Kannel(self.d, self.cb)
        self.Phone = Phone
        self.phone = None
        self.gw = None
        self.sink = None
        self.rows = []

    def pin(self, proc, core):
        if PIN and proc:
            subprocess.run(["taskset", "-a", "-p", "-c", str(core),
                            str(proc.pid)], capture_output=True, timeout=10)

    def start(self):
        if not self.srv.start():
            raise SystemExit("parleyd does not start:\n" +
                             self.srv.dump_log())
        self.pin(self.srv.proc, 1)
        if not self.kannel.start_bearer():
            raise SystemExit("bearerbox does not start")
        self.phone = self.Phone(self.d, self.kannel.smsc)
        if not self.kannel.start_smsbox():
            raise SystemExit("smsbox does not start")
        for p in (self.kannel.bearer, self.kannel.smsbox, self.phone.proc):
            self.pin(p, 1)
        time.sleep(1)

    def start_sink(self, types):
        self.sink = self.h.spawn(
            "sink", [sys.executable, os.path.abspath(__file__), "--sink",
                     str(self.sink_port), ",".join(map(str, types))],
            stdout=subprocess.PIPE)
        self.sink.stdout.readline()
        self.pin(self.sink, 1)

    def stop_sink(self):
        if self.sink:
            self.h.stop_group(self.sink)
            self.h.untrack(self.sink)
            self.sink = None

    def gateway(self, sendsms_url, db):
        conf = os.path.join(self.d, "gw.conf")
        with open(conf, "w") as f:
            f.write("""instance = "bench";
data_dir = "%s";
queue = "%s";
log_level = "warn";
component = { host = "127.0.0.1"; port = %d; secret = "%s";
              reconnect_min = 100; reconnect_max = 1000; };
sms = {
  domain = "%s"; default_country = "1"; sender = "+15550000";
  max_parts = 3;
  kannel = { sendsms_url = "%s"; user = "gw"; password = "gwpass";
             timeout = 5; dlr_mask = 31; };
  callback = { address = "127.0.0.1"; port = %d;
               url = "http://127.0.0.1:%d"; };
};
mail = {
  domain = "%s"; im_host = "localhost"; recipient_domains = "gw.test";
  smtp = { address = "127.0.0.1"; port = %d; };
  max_sessions = 10000;
  relay = { url = "smtp://127.0.0.1:9"; starttls = "none";
            connect_timeout = 2; timeout = 10; };
};
retry = { base = 1000; max = 5000; jitter = 20; expiry = 600; };
queue_lease = 60;
queue_poll = 200;
queue_batch = %d;
http_workers = %d;
""" % (self.d, db, self.cport, SECRET, SMS, sendsms_url, self.cb, self.cb,
                MAIL, self.smtp_port, BATCH, HTTP_WORKERS))
        gwlog = open(os.path.join(self.d, "gw.log"), "a")
        self.gw = self.h.spawn(
            "gateway", [GATEWAY, "--config", conf], stdout=gwlog,
            stderr=subprocess.STDOUT)
        self.pin(self.gw, 0)
        ok = self.wait_port(self.cb) and self.wait_port(self.smtp_port)
        # Linked to parleyd: disco answers.
        time.sleep(1.5)
        return ok

    def stop_gateway(self):
        if self.gw:
            self.h.stop_group(self.gw)
            self.h.untrack(self.gw)
            self.gw = None

    def stop(self):
        self.stop_gateway()
        self.stop_sink()
        if self.phone:
            self.h.stop_group(self.phone.proc)
            self.h.untrack(self.phone.proc)
        self.kannel.stop()
        self.srv.stop()

    def perf_start(self, name):
        if not PERF or not self.gw:
            return None
        os.makedirs(PERF, exist_ok=True)
        return subprocess.Popen(
            ["perf", "record", "-g", "-o",
             os.path.join(PERF, "perf.%s" % name), "-p", str(self.gw.pid)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    @staticmethod
    def perf_stop(p):
        if p:
            p.send_signal(signal.SIGINT)
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)

    def others_cpu(self):
        """CPU seconds of the other processes of the run (and this one:
        the IM and SMTP clients)."""
        out = {"parleyd": cpu_s(self.srv.proc.pid),
               "bench clients": cpu_s(os.getpid())}
        for name, p in (("sink", self.sink),
                        ("bearerbox", self.kannel.bearer),
                        ("smsbox", self.kannel.smsbox),
                        ("fakesmsc", self.phone.proc if self.phone
                         else None)):
            if p and p.poll() is None:
                out[name] = cpu_s(p.pid)
        return out

    @staticmethod
    def shares(o0, o1, gw_cpu, wall):
        """Each process's share of one core over the window."""
        r = {"gateway": round(gw_cpu / wall, 2)}
        for k in o1:
            if k in o0:
                r[k] = round((o1[k] - o0[k]) / wall, 2)
        return r

    # -- history ----------------------------------------------------------
    def history(self, db, t0, t1, dest):
        """(messages sent in [t0, t1] ms, accepted->sent latencies ms of
        those accepted in the window, and the DLR types seen)."""
        c = sqlite3.connect("file:%s?mode=ro" % os.path.join(self.d, db),
                            uri=True, timeout=30)
        try:
            rows = c.execute(
                "SELECT h.id, h.state, h.at, h.detail FROM history h JOIN "
                "messages m ON m.id = h.id WHERE m.dest = ? AND h.state IN "
                "('accepted', 'sent', 'delivered', 'failed', 'expired')",
                (dest,)).fetchall()
            rest = c.execute(
                "SELECT detail FROM history WHERE detail LIKE "
                "'%report type%' LIMIT 1000").fetchall()
        finally:
            c.close()
        acc, sent, deliv, bad = {}, {}, {}, 0
        for mid, st, at, _d in rows:
            if st == "accepted":
                acc[mid] = at
            elif st == "sent":
                sent.setdefault(mid, at)
            elif st == "delivered":
                deliv[mid] = at
            else:
                bad += 1
        n = len([a for a in sent.values() if t0 <= a <= t1])
        qlat = [sent[m] - a for m, a in acc.items()
                if t0 <= a <= t1 and m in sent]
        dlat = [deliv[m] - a for m, a in acc.items()
                if t0 <= a <= t1 and m in deliv]
        types = sorted({int(x) for (d,) in rest
                        for x in re.findall(r"report type (\d+)", d)})
        return n, qlat, dlat, bad, types, len(acc), len(sent), len(deliv)

    # -- runs -------------------------------------------------------------
    def run_kannel(self):
        self.start_sink([])
        before = len(self.phone.received())
        t0 = time.monotonic()
        counts = asyncio.run(kload(
            self.kannel.sendsms, WARMUP + DURATION, CONC,
            "http://127.0.0.1:%d" % self.sink_port, "gw", "gwpass"))
        wall = time.monotonic() - t0
        # smsbox answers once bearerbox queued the message: the fake SMSC
        # may still be working through the queue.
        self.h.wait_for(lambda: len(self.phone.received()) - before >=
                        counts["ok"], 60, interval=0.2)
        smsc_wall = time.monotonic() - t0
        self.h.wait_for(lambda: json.loads(http_get(
            self.sink_port, "/stats"))["dlr_in"] >= 2 * counts["ok"], 30)
        st = json.loads(http_get(self.sink_port, "/stats"))
        got = len(self.phone.received()) - before
        self.stop_sink()
        row = {"run": "kannel", "sendsms_ok": counts["ok"],
               "sendsms_err": counts["err"], "seconds": round(wall, 2),
               "connects": counts["connects"],
               "sendsms_per_s": counts["ok"] / wall,
               "fakesmsc_got": got, "dlrs": st["dlr_in"],
               "smsc_per_s": got / smsc_wall,
               "dlrs_per_msg": st["dlr_in"] / max(1, counts["ok"])}
        log("Kannel alone: %.0f sendsms/s, %d at fakesmsc, %.2f DLRs each"
            % (row["sendsms_per_s"], got, row["dlrs_per_msg"]))
        self.rows.append(row)

    def run_im_sms(self, name, sendsms_url, db, users, sink_types=None,
                   rate=0):
        if sink_types is not None:
            self.start_sink(sink_types)
        if not self.gateway(sendsms_url, db):
            raise SystemExit("the gateway does not start")
        before = len(self.phone.received())
        sink_st = None
        stop = threading.Event()
        stop.drained = False
        senders = [Sender(self.srv, u, i, WINDOW, stop,
                          rate=float(rate) / len(users))
                   for i, u in enumerate(users)]
        for s in senders:
            s.start()
        time.sleep(WARMUP)
        o0 = self.others_cpu()
        c0, t0 = cpu_s(self.gw.pid), time.time()
        perf = self.perf_start(name)
        time.sleep(DURATION)
        c1, t1 = cpu_s(self.gw.pid), time.time()
        o1 = self.others_cpu()
        self.perf_stop(perf)
        stop.set()
        deadline = time.monotonic() + 60
        for s in senders:
            s.join(max(0.1, deadline - time.monotonic()))
        stop.drained = True
        for s in senders:
            s.join(5)
        sent_total = sum(s.n for s in senders)
        got = sum(len(s.got) for s in senders)
        dup = sum(c - 1 for s in senders for c in s.got.values() if c > 1)
        errors = sum(s.errors for s in senders)
        lat = [l for s in senders for (t, l) in s.lat
               if t0 <= t - time.monotonic() + time.time() <= t1]
        for s in senders:
            s.c.close()
        n, qlat, dlat, bad, types, nacc, nsent, ndel = self.history(
            db, int(t0 * 1000), int(t1 * 1000), "sms")
        if sink_types is not None:
            st = json.loads(http_get(self.sink_port, "/stats"))
            at_smsc, smsc_dup = st["unique"], st["dup"]
            sink_st = st
        else:
            self.h.wait_for(lambda: len(self.phone.received()) - before >=
                            nsent, 20)
            rec = self.phone.received()[before:]
            keys = {}
            for r in rec:
                keys[(r[1], r[3])] = keys.get((r[1], r[3]), 0) + 1
            at_smsc = len(keys)
            smsc_dup = sum(c - 1 for c in keys.values() if c > 1)
        cpu = c1 - c0
        row = {"run": name, "window_s": round(t1 - t0, 2), "msgs": n,
               "msgs_per_s": n / (t1 - t0), "gw_cpu_s": round(cpu, 3),
               "cpu_us_per_msg": 1e6 * cpu / n if n else None,
               "per_core": n / cpu if cpu > 0 else None,
               "queue_p50_ms": pct(qlat, 50), "queue_p99_ms": pct(qlat, 99),
               "deliv_p50_ms": pct(dlat, 50), "deliv_p99_ms": pct(dlat, 99),
               "e2e_p50_ms": 1000 * pct(lat, 50) if lat else None,
               "e2e_p99_ms": 1000 * pct(lat, 99) if lat else None,
               "im_sent": sent_total, "accepted": nacc, "sent": nsent,
               "delivered": ndel, "receipts": got, "receipt_dup": dup,
               "errors": errors, "failed_or_expired": bad,
               "at_smsc": at_smsc, "smsc_dup": smsc_dup,
               "lost": sent_total - got, "dlr_types": types,
               "senders": len(senders), "window": WINDOW,
               "offered_rate": rate,
               "cpu_share": self.shares(o0, o1, cpu, t1 - t0)}
        if sink_st:
            row["sink"] = sink_st
        log("%s: %.0f msg/s, %.1f us gateway CPU/msg (%.0f msg/s per core)"
            ", queue p99 %s ms, lost %d, dup %d" % (
                name, row["msgs_per_s"], row["cpu_us_per_msg"] or 0,
                row["per_core"] or 0, row["queue_p99_ms"], row["lost"],
                row["receipt_dup"] + smsc_dup))
        self.rows.append(row)
        self.stop_gateway()
        self.stop_sink()
        return types

    def run_mail(self, db, receivers):
        if not self.gateway(self.kannel_url(), db):
            raise SystemExit("the gateway does not start")
        stop = threading.Event()
        stats = {"accepted": 0, "refused": 0, "sent": set(), "data_lat": []}
        th = threading.Thread(target=run_smtp, args=(
            self.smtp_port, SMTP, len(receivers), stop, stats), daemon=True)
        th.start()
        time.sleep(WARMUP)
        o0 = self.others_cpu()
        c0, t0 = cpu_s(self.gw.pid), time.time()
        perf = self.perf_start("mail-im")
        time.sleep(DURATION)
        c1, t1 = cpu_s(self.gw.pid), time.time()
        o1 = self.others_cpu()
        self.perf_stop(perf)
        stop.set()
        th.join(30)
        sent = stats["sent"]
        self.h.wait_for(lambda: sum(len(r.got) for r in receivers) >=
                        len(sent), 60)
        time.sleep(0.5)
        for r in receivers:
            r.stop_ev.set()
        for r in receivers:
            r.join(5)
        got = {}
        for r in receivers:
            for k, c in r.got.items():
                got[k] = got.get(k, 0) + c
        lat = [l for r in receivers for (t, l) in r.lat
               if t0 <= t - time.monotonic() + time.time() <= t1]
        dl = [l for (t, l) in stats["data_lat"]
              if t0 <= t - time.monotonic() + time.time() <= t1]
        n, qlat, _dl, bad, _t, nacc, nsent, _nd = self.history(
            db, int(t0 * 1000), int(t1 * 1000), "im")
        cpu = c1 - c0
        row = {"run": "mail-im", "window_s": round(t1 - t0, 2), "msgs": n,
               "msgs_per_s": n / (t1 - t0), "gw_cpu_s": round(cpu, 3),
               "cpu_us_per_msg": 1e6 * cpu / n if n else None,
               "per_core": n / cpu if cpu > 0 else None,
               "queue_p50_ms": pct(qlat, 50), "queue_p99_ms": pct(qlat, 99),
               "data_p50_ms": 1000 * pct(dl, 50) if dl else None,
               "data_p99_ms": 1000 * pct(dl, 99) if dl else None,
               "e2e_p50_ms": 1000 * pct(lat, 50) if lat else None,
               "e2e_p99_ms": 1000 * pct(lat, 99) if lat else None,
               "smtp_accepted": stats["accepted"],
               "smtp_refused": stats["refused"], "accepted": nacc,
               "sent": nsent, "im_got": len(got),
               "im_dup": sum(c - 1 for c in got.values() if c > 1),
               "lost": len(sent - set(got)), "failed_or_expired": bad,
               "smtp_clients": SMTP, "receivers": len(receivers),
               "cpu_share": self.shares(o0, o1, cpu, t1 - t0)}
        log("mail-im: %.0f msg/s, %.1f us gateway CPU/msg (%.0f msg/s per "
            "core), DATA p99 %s ms, lost %d, dup %d" % (
                row["msgs_per_s"], row["cpu_us_per_msg"] or 0,
                row["per_core"] or 0, row["data_p99_ms"], row["lost"],
                row["im_dup"]))
        self.rows.append(row)
        self.stop_gateway()

    def kannel_url(self):
        return "http://127.0.0.1:%d/cgi-bin/sendsms" % self.kannel.sendsms


# ---- the report ----------------------------------------------------------

def fmt(v, nd=0):
    if v is None:
        return "–"
    if isinstance(v, float):
        return "{:,.{}f}".format(v, nd)
    return "{:,}".format(v)


def write_report(rows, meta, stamp):
    md = os.path.join(RESULTS, stamp + ".md")
    with open(os.path.join(RESULTS, stamp + ".jsonl"), "w") as f:
        for r in rows:
            f.write(json.dumps(r, sort_keys=True) + "\n")
    L = ["# parley-gateway benchmark %s" % stamp.replace("-gateway", ""),
         "",
         "`BENCH_ONLY=gateway bench/run` (bench/gateway.py): issue 16's "
         "target is ≥ 2,000 messages/s per gateway core with delivery "
         "reports on.", "", "| | |", "|---|---|"]
    for k, v in meta:
        L.append("| %s | %s |" % (k, v))
    L.append("")
    k = [r for r in rows if r["run"] == "kannel"]
    if k:
        r = k[0]
        L += ["## Kannel alone (no gateway)", "",
              "%d HTTP clients, each on a persistent connection (as the "
              "gateway's libcurl handles; %s connections made), dlr-mask 31 "
              "and a dlr-url to the bench's sink, %d s." % (
                  CONC, fmt(r.get("connects")), WARMUP + DURATION), "",
              "| sendsms/s | sendsms ok / errors | at fakesmsc | at "
              "fakesmsc /s (to the last) | DLRs per message |",
              "|---:|---:|---:|---:|---:|",
              "| %s | %s / %s | %s | %s | %s |" % (
                  fmt(r["sendsms_per_s"]), fmt(r["sendsms_ok"]),
                  fmt(r["sendsms_err"]), fmt(r["fakesmsc_got"]),
                  fmt(r["smsc_per_s"]), fmt(r["dlrs_per_msg"], 2)), ""]
    sms = [r for r in rows if r["run"].startswith("im-sms")]
    if sms:
        L += ["## IM → SMS", "",
              "%d IM senders (XMPP over TLS to parleyd), %d messages with a "
              "receipt request in flight each; delivery reports on (dlr-mask "
              "31); measured over %d s after %d s of warm-up." % (
                  SENDERS, WINDOW, DURATION, WARMUP), "",
              "| run | messages/s | gateway CPU µs/msg | msgs/s per gateway "
              "core | queue p50 / p99 ms (accepted→sent) | delivered p50 / "
              "p99 ms (accepted→delivered) | end to end p50 / p99 ms (send→"
              "receipt) | lost | dup | DLR types |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        for r in sms:
            if r.get("offered_rate"):
                r = dict(r, run="%s (%s/s offered, sink)" % (
                    r["run"], fmt(r["offered_rate"])))
            L.append("| %s | %s | %s | %s | %s / %s | %s / %s | %s / %s | "
                     "%s | %s | %s |" % (
                         r["run"], fmt(r["msgs_per_s"]),
                         fmt(r["cpu_us_per_msg"], 1), fmt(r["per_core"]),
                         fmt(r["queue_p50_ms"]), fmt(r["queue_p99_ms"]),
                         fmt(r["deliv_p50_ms"]), fmt(r["deliv_p99_ms"]),
                         fmt(r["e2e_p50_ms"], 1), fmt(r["e2e_p99_ms"], 1),
                         fmt(r["lost"]), fmt(r["receipt_dup"] +
                                             r["smsc_dup"]),
                         ",".join(map(str, r["dlr_types"]))))
        L.append("")
        L.append("im-sms-kannel goes through smsbox, bearerbox and fakesmsc;"
                 " im-sms-sink through the bench's sink (sendsms answered as "
                 "smsbox does, then the delivery reports Kannel sent posted "
                 "to the dlr-url), which leaves out Kannel's own cost and "
                 "limit. Both keep the senders' windows full (saturation), "
                 "so their latencies are mostly the window's own queue; "
                 "im-sms-rate sends at a fixed rate (half what im-sms-sink "
                 "reached unless BENCH_GW_RATE) to the sink: the queue's "
                 "latency below saturation. Lost: sent by an IM sender "
                 "without a receipt by the end; dup: receipts or SMSC "
                 "arrivals more than once.")
        L.append("")
    m = [r for r in rows if r["run"] == "mail-im"]
    if m:
        r = m[0]
        L += ["## E-mail → IM", "",
              "%d SMTP clients pipelining (RFC 2920) to the gateway's SMTP "
              "listener, one recipient each, delivered to %d online IM "
              "users." % (SMTP, r["receivers"]), "",
              "| messages/s | gateway CPU µs/msg | msgs/s per gateway core | "
              "DATA p50 / p99 ms (end of data → 250) | end to end p50 / p99 "
              "ms (end of data → IM) | lost | dup |",
              "|---:|---:|---:|---:|---:|---:|---:|",
              "| %s | %s | %s | %s / %s | %s / %s | %s | %s |" % (
                  fmt(r["msgs_per_s"]), fmt(r["cpu_us_per_msg"], 1),
                  fmt(r["per_core"]), fmt(r["data_p50_ms"], 1),
                  fmt(r["data_p99_ms"], 1), fmt(r["e2e_p50_ms"], 1),
                  fmt(r["e2e_p99_ms"], 1), fmt(r["lost"]),
                  fmt(r["im_dup"])), "",
              "The gateway stores the e-mail and writes its IM message to "
              "the outbox in the same database job, so accepted→sent in the "
              "queue's history is a few ms at most; the DATA reply (after "
              "the commit) and the IM arrival are the figures that wait.",
              ""]
    L += ["## Who used the CPU", "",
          "Each process's CPU over the measured window, in cores (1.00 = "
          "one core busy the whole time; the machine has %d). The bench "
          "clients are this script's IM and SMTP clients (one process)." %
          (os.cpu_count() or 0), "",
          "| run | " + " | ".join(
              ["gateway", "parleyd", "bench clients", "sink", "bearerbox",
               "smsbox", "fakesmsc"]) + " |",
          "|---|" + "---:|" * 7]
    for r in rows:
        sh = r.get("cpu_share")
        if sh:
            L.append("| %s | %s |" % (r["run"], " | ".join(
                fmt(sh.get(k), 2) for k in (
                    "gateway", "parleyd", "bench clients", "sink",
                    "bearerbox", "smsbox", "fakesmsc"))))
    L += ["", "## Target", ""]
    for r in rows:
        if r.get("per_core") is not None:
            L.append("- %s: %s messages/s per gateway core (target 2,000): "
                     "%s" % (r["run"], fmt(r["per_core"]),
                             "met" if r["per_core"] >= 2000 else "missed"))
    L.append("")
    with open(md, "w") as f:
        f.write("\n".join(L) + "\n")
    return md


def git_desc():
    try:
        return subprocess.run(["git", "-C", ROOT, "describe", "--always",
                               "--dirty"], capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def main():
    if len(sys.argv) >= 3 and sys.argv[1] == "--sink":
        sink_main(int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else "")
        return
    import harness
    from im_common import add_users
    for exe in ("parleyd", "parley-gateway", "parleyctl"):
        if not os.access(os.path.join(ROOT, harness.BUILD, exe), os.X_OK):
            raise SystemExit("bench: build/%s missing; run make" % exe)
    for tool in ("/usr/sbin/bearerbox", "/usr/sbin/smsbox",
                 "/usr/lib/kannel/test/fakesmsc"):
        if not os.path.exists(tool):
            raise SystemExit("bench: %s missing (scripts/bootstrap --test)"
                             % tool)
    stamp = datetime.date.today().isoformat() + "-gateway"
    base, n = stamp, 2
    while os.path.exists(os.path.join(RESULTS, stamp + ".md")):
        stamp = "%s-%d" % (base, n)
        n += 1
    la0, t00 = loadavg(), time.time()
    b = Bench()
    try:
        b.start()
        users = ["gws%d" % i for i in range(SENDERS)]
        rcpts = ["r%d" % i for i in range(RECEIVERS)]
        add_users(b.srv, *(users + rcpts))
        types = [8, 1]
        if "kannel" in RUNS:
            b.run_kannel()
        if "im-sms-kannel" in RUNS:
            seen = b.run_im_sms("im-sms-kannel", b.kannel_url(),
                                "kannel.db", users)
            if seen:
                types = [t for t in (8, 1) if t in seen] + \
                    [t for t in seen if t not in (8, 1)]
        sink_url = "http://127.0.0.1:%d/cgi-bin/sendsms" % b.sink_port
        if "im-sms-sink" in RUNS:
            b.run_im_sms("im-sms-sink", sink_url, "sink.db", users,
                         sink_types=types)
        if "im-sms-rate" in RUNS:
            # The queue's latency below saturation: half the rate the
            # sink run reached, unless BENCH_GW_RATE says.
            rate = RATE
            if not rate:
                sat = [r["msgs_per_s"] for r in b.rows
                       if r["run"] == "im-sms-sink"]
                rate = max(50, int(sat[0] / 2)) if sat else 200
            b.run_im_sms("im-sms-rate", sink_url, "rate.db", users,
                         sink_types=types, rate=rate)
        if "mail-im" in RUNS:
            receivers = [Receiver(b.srv, u) for u in rcpts]
            for r in receivers:
                r.start()
            b.run_mail("mail.db", receivers)
            for r in receivers:
                r.c.close()
    finally:
        b.stop()
        keep = os.environ.get("BENCH_KEEP") == "1"
        if keep:
            log("kept " + b.d)
    meta = [("date", datetime.datetime.now().strftime("%Y-%m-%d %H:%M")),
            ("Parley", git_desc()),
            ("Kannel", subprocess.run(
                ["dpkg-query", "-W", "-f", "${Version}", "kannel"],
                capture_output=True, text=True).stdout or "?"),
            ("CPU", "%s cores" % os.cpu_count()),
            ("gateway", "http_workers %d, queue_batch %d, queue file on "
             "disk (WAL, synchronous=FULL)%s" % (
                 HTTP_WORKERS, BATCH,
                 ", pinned to core 0, the rest to core 1" if PIN else
                 ", nothing pinned")),
            ("load average at start / end", "%s / %s" % (la0, loadavg())),
            ("duration", "%d s" % (time.time() - t00))]
    md = write_report(b.rows, meta, stamp)
    log("wrote " + os.path.relpath(md, ROOT))


if __name__ == "__main__":
    main()
