#!/usr/bin/python3
"""test_cmdline.py - the command-line conventions every program built here
keeps: parleyd, parleyctl, parley, parley-agent and bench/parley-load.

  --help     the usage on standard output, nothing on standard error, exit 0
  --version  one line "NAME VERSION" on standard output (VERSION is
             PL_VERSION of src/core/version.h), exit 0
  a bad option, or no arguments where some are needed: the usage on
             standard error, nothing on standard output, exit 2

The programs are taken beside PARLEYD (default $BUILD/parleyd, as the
other scripts do), parley-load from $BUILD/bench/ (`make test` builds it).
No server is started.  Run with /usr/bin/python3.
"""

import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402

BIN = os.path.dirname(harness._abs(os.environ.get(
    "PARLEYD", os.path.join(harness.BUILD, "parleyd"))))


def version():
    path = os.path.join(harness.ROOT, "src", "core", "version.h")
    with open(path) as f:
        m = re.search(r'#define PL_VERSION "([^"]+)"', f.read())
    return m.group(1) if m else None


def program(name):
    if name != "parley-load":
        return os.path.join(BIN, name)
    for d in (os.path.join(BIN, "bench"),
              harness._abs(os.path.join(harness.BUILD, "bench")),
              harness._abs(os.path.join("build", "bench"))):
        if os.path.exists(os.path.join(d, name)):
            return os.path.join(d, name)
    return os.path.join(BIN, "bench", name)


def run(path, *args):
    try:
        p = subprocess.run([path] + list(args), capture_output=True,
                           text=True, timeout=20, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, "", str(e)
    return p.returncode, p.stdout, p.stderr


def main():
    ver = version()
    check("src/core/version.h defines PL_VERSION", ver, ver)
    # (name, arguments that are a usage error)
    programs = [("parleyd", ["--no-such-option"]),
                ("parleyctl", []),
                ("parleyctl", ["--no-such-option"]),
                ("parley", []),
                ("parley", ["--no-such-option", "ping"]),
                ("parley-agent", ["--no-such-option"]),
                ("parley-load", ["--no-such-option"])]
    seen = set()
    for name, bad in programs:
        path = program(name)
        if name not in seen:
            seen.add(name)
            if not check("%s is built" % name, os.access(path, os.X_OK),
                         path):
                continue
            rc, out, err = run(path, "--help")
            check("%s --help: usage on stdout, exit 0" % name,
                  rc == 0 and out.startswith("usage: " + name) and
                  err == "", (rc, out[:200], err[:200]))
            rc, out, err = run(path, "--version")
            check("%s --version: '%s %s' on stdout, exit 0" %
                  (name, name, ver), rc == 0 and out == "%s %s\n" %
                  (name, ver) and err == "", (rc, out, err))
        elif not os.access(path, os.X_OK):
            continue
        rc, out, err = run(path, *bad)
        check("%s %s: usage on stderr, exit 2" %
              (name, " ".join(bad) or "(no arguments)"),
              rc == 2 and "usage: " + name in err and out == "",
              (rc, out[:200], err[:300]))
    harness.finish()


main()
