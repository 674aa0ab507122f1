#!/usr/bin/python3
"""gw_common.py - shared start-up of the parley-gateway interop tests
(test_gateway_*.py).

API:
  GATEWAY                       the parley-gateway beside the parleyd
                                under test (the sanitizer pass sets
                                PARLEYD to build/san/parleyd, so the
                                gateway runs sanitized there too);
                                PARLEY_GATEWAY overrides
  require(*tools)               a failed check and the end of the test
                                unless every path exists
  start_server(cport, comps)    a harness.Server with a component
                                listener on cport and the components
                                comps ((domain, secret) pairs), started;
                                a failed start is a check and the end
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402

GATEWAY = harness._abs(os.environ.get("PARLEY_GATEWAY", os.path.join(
    os.path.dirname(harness._abs(os.environ.get(
        "PARLEYD", os.path.join(harness.BUILD, "parleyd")))),
    "parley-gateway")))


def require(*tools):
    for tool in tools:
        if not os.path.exists(tool):
            check("%s is available" % tool, False)
            harness.finish()


def start_server(cport, comps):
    srv = harness.Server(
        listeners_extra='{ protocol = "component"; address = "127.0.0.1"; '
                        'port = %d; tls = "none"; }' % cport,
        host_extra='components = ( %s );'
                   % ", ".join('{ domain = "%s"; secret = "%s"; }' % c
                               for c in comps))
    if not srv.start():
        check("parleyd starts", False, srv.dump_log())
        harness.finish()
    return srv
