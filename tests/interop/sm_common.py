#!/usr/bin/python3
"""sm_common.py - a raw client with stream management (XEP-0198) for the
tests that need control of acks: test_sm.py, test_crash_safety.py.

API:
  SmClient(srv, user, resource, login=True, auto_ack=False)
    an im_common.ImClient that counts received stanzas (h_in, from
    <enabled/> or <resumed/> on) and answers <r/> at once if auto_ack
    .enable(resume)   <enable/>; returns <enabled/> or <failed/>
    .ack(h)           sends <a h/> (default: h_in)
    .authenticate()   TLS + SASL + restart, no bind (for <resume/>)
    .resume(id, h)    <resume/>; returns <resumed/> or <failed/>
    .send_stanza(xml) sends and keeps it until the server acknowledges it
                      (outq, out_count: carried over to a new connection
                      for resumption; <resumed h/> resends the rest)
    .durable(t)       True once the server acknowledged every stanza sent
                      since <enable/>: the server's h never passes a
                      stanza whose storage work is not committed (sm.c),
                      so this is a barrier for what they stored
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import tostr  # noqa: E402
from im_common import ImClient  # noqa: E402

NS_SM = "urn:xmpp:sm:3"
SM = "{%s}" % NS_SM
C = "{jabber:client}"
STANZAS = (C + "message", C + "presence", C + "iq")


class SmClient(ImClient):
    """An ImClient that counts the stanzas it receives (XEP-0198 h) and,
    if auto_ack, answers the server's <r/> at once."""

    def __init__(self, srv, user, resource="r", login=True, auto_ack=False):
        self.h_in = 0
        self.auto_ack = auto_ack
        self.requests = 0
        self.resume_h = 0
        self.outq = []        # [count, xml] sent, not yet acknowledged
        self.out_count = 0    # stanzas sent since <enable/>
        self.stanzas_sent = None  # every stanza written since <enable/>
        self._resending = False
        super().__init__(srv, user, resource, login=login)
        self.h_in = 0

    def send(self, data):
        super().send(data)
        if self.stanzas_sent is not None and not self._resending:
            text = data if isinstance(data, str) else data.decode("utf-8",
                                                                  "replace")
            if text.lstrip().startswith(("<message", "<presence", "<iq")):
                self.stanzas_sent += 1

    def _feed(self, data):
        before = len(self.queue)
        super()._feed(data)
        for el in self.queue[before:]:
            if el.tag in STANZAS:
                self.h_in += 1
            elif el.tag == SM + "enabled":
                self.h_in = 0  # counting starts here (XEP-0198 §4)
            elif el.tag == SM + "resumed":
                self.h_in = self.resume_h  # goes on from what we acked
                self._acked(int(el.get("h")))
                self._resending = True
                for _, xml in self.outq:   # XEP-0198 §5: send the rest again
                    self.send(xml)
                self._resending = False
            elif el.tag == SM + "a":
                self._acked(int(el.get("h")))
            elif el.tag == SM + "r":
                self.requests += 1
                if self.auto_ack:
                    self.send("<a xmlns='%s' h='%d'/>" % (NS_SM, self.h_in))

    def enable(self, resume=True):
        self.send("<enable xmlns='%s'%s/>" % (
            NS_SM, " resume='true'" if resume else ""))
        self.stanzas_sent = 0
        return self.wait(lambda e: e.tag in (SM + "enabled", SM + "failed"))

    def durable(self, timeout=10):
        want = self.stanzas_sent or 0
        self.send("<r xmlns='%s'/>" % NS_SM)
        # A lagging answer is followed by unrequested ones as h moves.
        return self.wait(lambda e: e.tag == SM + "a" and
                         int(e.get("h")) >= want, timeout) is not None

    def ack(self, h=None):
        self.send("<a xmlns='%s' h='%d'/>" % (
            NS_SM, self.h_in if h is None else h))

    def authenticate(self):
        """TLS + SASL + restart, no bind (for <resume/>)."""
        self.connect_tls()
        el = self.auth_plain(self.user, self.password)
        if el.tag != "{%s}success" % harness.NS_SASL:
            raise RuntimeError("auth failed: %s" % tostr(el))
        self.features_after_auth = self.restart()

    def resume(self, previd, h):
        self.resume_h = h
        self.send("<resume xmlns='%s' previd='%s' h='%d'/>" % (NS_SM, previd,
                                                              h))
        return self.wait(lambda e: e.tag in (SM + "resumed", SM + "failed"))

    def _acked(self, h):
        self.outq = [e for e in self.outq if e[0] > h]

    def send_stanza(self, xml):
        self.out_count += 1
        self.outq.append([self.out_count, xml])
        self.send(xml)
