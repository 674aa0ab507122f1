#!/usr/bin/python3
"""run.py - runs the scenario files tests/scenarios/*.scn against parleyd.

A scenario is a conversation written as data: clients, then steps of
stanzas sent and stanzas expected (README.md in this folder has the
format).  This runner starts parleyd through tests/interop/harness.py
(one server per distinct pair of [Server] and [Host] blocks, and one
for each file that restarts it; every other file shares the default
server, isolated by its own accounts and ${id}, several files at once),
writes every [Component] of the files into their server's first host
with one component listener, creates the accounts with parleyctl,
connects each client with SASL SCRAM and resource binding (over TCP
with STARTTLS, or over WebSocket or BOSH through an http listener the
runner adds: ClientConn and its transports) and each component with the
XEP-0114 handshake, sends the XML as written, and compares what arrives
as XML trees (a [SipUA] sends SIP requests as written over UDP, to a
sip listener the runner adds, and matches the start line and fields of
what comes back, see SipParticipant; an [Http] client sends HTTP
requests as written and matches the status line, fields and body of
the answers, see HttpParticipant): namespaces and names,
attributes in any order, children in any order, text stripped of
surrounding whitespace (whitespace-only text ignored), with wildcards
({any}, {datetime}, {capture:NAME}, {re:REGEX}, attribute
{optional:...}), "..." to allow more attributes and children than
written and <scn:none> for children that must be absent.  A block of
stanzas may arrive in any order, except that those written with the
same 'from' keep their order.

    /usr/bin/python3 tests/scenarios/run.py               every file
    /usr/bin/python3 tests/scenarios/run.py ping disco    these files
    /usr/bin/python3 tests/scenarios/run.py --self-test   matcher only

Output: "ok - scenario NAME" or "not ok - scenario NAME: step N (...):
why", then the expected and received stanzas as "#" comment lines with
a diff.  Before the files, the matcher's own checks ("ok - matcher:
...") prove that it rejects wrong expectations.  Exits 1 if anything
failed.

Environment: SCENARIO_TIMEOUT (seconds a "receives" step waits, default
5), SCENARIO_QUIET (seconds "receives nothing" listens, default 0.5),
SCENARIO_JOBS (files run at once, default 4),
plus harness.py's PARLEYD, PARLEYCTL, PARLEYD_WRAPPER.

Extending: a new client step is a regex in STEPS (COMPONENT_STEPS for
components, SIP_STEPS for SIP UAs, HTTP_STEPS for HTTP clients) and a
method Runner.step_<x> (steps without a client are parsed in parse());
a new client transport is a ClientConn subclass in TRANSPORTS; a new
wildcard is a branch in template_regex(); a matcher change gets a case
in self_test().
"""

import base64
import concurrent.futures
import difflib
import glob
import hashlib
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
import xml.parsers.expat

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "interop"))
import harness  # noqa: E402
import sipua  # noqa: E402
import bosh_common  # noqa: E402
import ws_common  # noqa: E402

TIMEOUT = float(os.environ.get("SCENARIO_TIMEOUT", "5"))
QUIET = float(os.environ.get("SCENARIO_QUIET", "0.5"))
JOBS = int(os.environ.get("SCENARIO_JOBS", "4"))
NS_CLIENT = "jabber:client"
NS_COMPONENT = "jabber:component:accept"  # XEP-0114
NS_STREAM = harness.NS_STREAM
NS_SASL = harness.NS_SASL
NS_BIND = harness.NS_BIND
# Every block is parsed inside this element: the default namespace is
# the one of the participant's stream (jabber:client, or
# jabber:component:accept for a component) and the stream: prefix is
# declared.  scn:none wraps children that must not be there.
NS_SCN = "urn:parley:scenario"
NONE = "{%s}none" % NS_SCN


def wrap_open(ns):
    return ("<scn-block xmlns='%s' xmlns:stream='%s' xmlns:scn='%s'>"
            % (ns, NS_STREAM, NS_SCN))


WRAP_OPEN = wrap_open(NS_CLIENT)
WRAP_CLOSE = "</scn-block>"
MORE = "..."

# XEP-0082 DateTime: CCYY-MM-DDThh:mm:ss[.sss]TZD
DATETIME = (r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?"
            r"(Z|[+-]\d{2}:\d{2})")


class ScenarioError(Exception):
    """A malformed scenario file (reported as a failure of that file)."""


class StepFailed(Exception):
    """A failed step; ns is the default namespace of the stream the
    stanzas were on (they are printed without it)."""

    def __init__(self, reason, expected=None, got=None, ns=NS_CLIENT,
                 detail=None):
        Exception.__init__(self, reason)
        self.reason = reason
        self.expected = expected or []
        self.got = got or []
        self.ns = ns
        self.detail = detail  # text printed after the reason (SIP)


# ------------------------------------------------------------ templates

def template_regex(tmpl):
    """Compiles an attribute value or text with wildcards to a regex.

    {any} any string; {datetime} an XEP-0082 DateTime; {capture:NAME} any
    non-empty string, remembered as ${NAME}; {re:REGEX} a regular
    expression.  Any other text (braces included) is literal.  (An
    attribute value {optional:T} is match()'s: absent, or matching T.)"""
    out, i, names = [], 0, []
    while i < len(tmpl):
        j = tmpl.find("{", i)
        if j < 0:
            out.append(re.escape(tmpl[i:]))
            break
        out.append(re.escape(tmpl[i:j]))
        rest = tmpl[j:]
        m = re.match(r"\{(any|datetime|capture:([A-Za-z_]\w*))\}", rest)
        if m:
            if m.group(1) == "any":
                out.append(".*")
            elif m.group(1) == "datetime":
                out.append("(?:%s)" % DATETIME)
            else:
                names.append(m.group(2))
                out.append("(?P<%s>.+?)" % m.group(2))
            i = j + m.end()
            continue
        if rest.startswith("{re:"):
            depth, k = 0, 0
            for k, ch in enumerate(rest):
                if ch == "{":
                    depth += 1
                elif ch == "}":
                    depth -= 1
                    if depth == 0:
                        break
            if depth == 0:
                out.append("(?:%s)" % rest[4:k])
                i = j + k + 1
                continue
        out.append(re.escape("{"))
        i = j + 1
    return re.compile("".join(out) + r"\Z", re.S), names


def match_value(tmpl, value, captures):
    """Matches one string; returns True and adds captures, or False."""
    if "{" not in tmpl:
        return tmpl == value
    rx, names = template_regex(tmpl)
    m = rx.match(value)
    if not m:
        return False
    for n in names:
        captures[n] = m.group(n)
    return True


# -------------------------------------------------------------- matcher

def local(tag):
    return tag.split("}", 1)[1] if tag.startswith("{") else tag


def ns_of(tag):
    return tag[1:].split("}", 1)[0] if tag.startswith("{") else ""


def is_open(el):
    """True if the expected element says "...": more attributes and
    children than written are accepted."""
    if (el.text or "").strip() == MORE:
        return True
    return any((c.tail or "").strip() == MORE for c in el)


def text_of(el):
    """An element's own text, stripped (tails of children included, for
    mixed content); "..." markers removed."""
    parts = [el.text or ""] + [c.tail or "" for c in el]
    parts = [p.strip() for p in parts if p.strip() and p.strip() != MORE]
    return " ".join(parts)


def describe(tag):
    return "<%s xmlns='%s'>" % (local(tag), ns_of(tag))


def match(exp, got, captures, path=""):
    """Compares an expected element with a received one.

    Returns None if they match (captures gets the {capture:} values) or
    a reason naming the path where they differ."""
    here = "%s/%s" % (path, local(exp.tag))
    if exp.tag != got.tag:
        if local(exp.tag) == local(got.tag):
            return "%s: namespace is '%s', expected '%s'" % (
                here, ns_of(got.tag), ns_of(exp.tag))
        return "%s: got %s instead" % (here, describe(got.tag))
    caps = {}
    for k, v in exp.attrib.items():
        m = re.match(r"\{optional:(.*)\}\Z", v, re.S)
        if m:  # absent, or matching the template inside
            if k not in got.attrib:
                continue
            v = m.group(1)
        if k not in got.attrib:
            return "%s: attribute %s is missing" % (here, k)
        if not match_value(v, got.attrib[k], caps):
            return "%s: attribute %s is '%s', expected '%s'" % (
                here, k, got.attrib[k], v)
    opened = is_open(exp)
    if not opened:
        extra = sorted(set(got.attrib) - set(exp.attrib))
        if extra:
            return "%s: unexpected attribute %s='%s'" % (
                here, extra[0], got.attrib[extra[0]])
    want_text = text_of(exp)
    if want_text or not opened:
        have = text_of(got)
        if not match_value(want_text, have, caps):
            return "%s: text is '%s', expected '%s'" % (here, have,
                                                        want_text)
    why = match_children(list(exp), list(got), caps, here, opened)
    if why:
        return why
    captures.update(caps)
    return None


def match_children(exps, gots, caps, here, opened):
    """Pairs every expected child with a distinct received child (any
    order; bipartite matching).  Without "..." nothing may be left.
    Children of a <scn:none> must match no received child."""
    for n in [e for e in exps if e.tag == NONE]:
        for absent in n:
            for g in gots:
                if match(absent, g, {}, here) is None:
                    return "%s: has a child %s it must not have" % (
                        here, describe(g.tag))
    exps = [e for e in exps if e.tag != NONE]
    if not exps and (opened or not gots):
        return None
    table = [[None] * len(gots) for _ in exps]  # (reason, captures)
    for i, e in enumerate(exps):
        for j, g in enumerate(gots):
            c = {}
            table[i][j] = (match(e, g, c, here), c)
    owner = [-1] * len(gots)

    def augment(i, seen):
        for j in range(len(gots)):
            if table[i][j][0] is None and j not in seen:
                seen.add(j)
                if owner[j] < 0 or augment(owner[j], seen):
                    owner[j] = i
                    return True
        return False

    for i in range(len(exps)):
        if not augment(i, set()):
            e = exps[i]
            same = [table[i][j][0] for j, g in enumerate(gots)
                    if g.tag == e.tag and table[i][j][0] is not None]
            if same:  # the closest candidate failed deepest
                return max(same, key=lambda r: r.split(": ")[0].count("/"))
            return "%s: %s child %s" % (
                here, "not enough of" if any(
                    g.tag == e.tag for g in gots) else "no", describe(e.tag))
    if not opened:
        for j, g in enumerate(gots):
            if owner[j] < 0:
                return "%s: unexpected child %s" % (here, describe(g.tag))
    for j in range(len(gots)):
        if owner[j] >= 0:
            caps.update(table[owner[j]][j][1])
    return None


SM_R = "{urn:xmpp:sm:3}r"


def unasked_ack_request(exps):
    """XEP-0198 §4: a server may ask for an ack (<r/>) at any time, so a
    step that does not expect one does not see one: the predicate that
    drops them, or None when the step expects an <r/> itself."""
    if any(e.tag == SM_R for e in exps):
        return None
    return lambda el: el.tag == SM_R


def match_set(exps, gots, captures):
    """Matches a block of expected stanzas with as many received ones:
    any order, except that stanzas written with the same 'from' must
    arrive in the order written (RFC 6120 §10.1, in-order processing).
    Returns None or a reason."""
    if len(exps) != len(gots):
        return "expected %d stanza(s), got %d" % (len(exps), len(gots))
    table = [[None] * len(gots) for _ in exps]
    for i, e in enumerate(exps):
        for j, g in enumerate(gots):
            c = {}
            table[i][j] = (match(e, g, c), c)
    used, pick = set(), []

    def search(i):
        if i == len(exps):
            return True
        sender = exps[i].get("from")
        after = max([pick[k] for k in range(i)
                     if sender and exps[k].get("from") == sender],
                    default=-1)
        for j in range(after + 1, len(gots)):
            if j not in used and table[i][j][0] is None:
                used.add(j)
                pick.append(j)
                if search(i + 1):
                    return True
                used.discard(j)
                pick.pop()
        return False

    if search(0):
        for i, j in enumerate(pick):
            captures.update(table[i][j][1])
        return None
    # Explain: the first expected stanza that matches nothing, else order.
    for i, e in enumerate(exps):
        reasons = [table[i][j][0] for j in range(len(gots))]
        if all(reasons):
            same = [r for j, r in enumerate(reasons) if gots[j].tag == e.tag]
            return max(same or reasons,
                       key=lambda r: r.split(": ")[0].count("/"))
    return ("stanzas from the same sender arrived in another order than "
            "written")


def match_sip(text, msg, captures):
    """Matches a received SIP message (a sipua.Message) with a block: its
    first line is a template of the start line, every other line
    "Name: template" must match the value of a field of that name (long
    or compact form, any case; one of them when there are several), and
    "!Name" says there is no such field.  Fields not written are not
    looked at.  Returns None (captures updated) or a reason."""
    return match_head(text.split("\n"), msg, captures)


def match_head(lines, msg, captures):
    """match_sip's rules for any message with .start (its start line)
    and .all(name) (the values of the fields of that name): SIP
    messages, HTTP answers."""
    lines = [ln.strip() for ln in lines if ln.strip()]
    if not lines:
        return "an empty block"
    caps = {}
    if not match_value(lines[0], msg.start, caps):
        return "start line is '%s', expected '%s'" % (msg.start, lines[0])
    for ln in lines[1:]:
        if ln.startswith("!"):
            name = ln[1:].strip()
            if msg.all(name):
                return "has a %s field it must not have: '%s'" % (
                    name, msg.all(name)[0])
            continue
        name, colon, tmpl = ln.partition(":")
        name, tmpl = name.strip(), tmpl.strip()
        if not colon or not name:
            return "not a field line: '%s'" % ln
        values = msg.all(name)
        if not values:
            return "no %s field" % name
        for v in values:
            c = {}
            if match_value(tmpl, v, c):
                caps.update(c)
                break
        else:
            return "%s is '%s', expected '%s'" % (
                name, "' and '".join(values), tmpl)
    captures.update(caps)
    return None


def match_json(exp, got, captures, path="$"):
    """Compares an expected JSON value with a received one, as match()
    does XML: strings are templates; an object must have the keys
    written (a key "..." allows more); an array's items are matched in
    any order (an item "..." allows more); numbers, booleans and null
    are equal.  Returns None (captures updated) or a reason."""
    caps = {}
    if isinstance(exp, str):
        if not isinstance(got, str):
            return "%s: is %s, expected a string" % (path, json.dumps(got))
        if not match_value(exp, got, caps):
            return "%s: is %s, expected %s" % (path, json.dumps(got),
                                               json.dumps(exp))
    elif isinstance(exp, dict):
        if not isinstance(got, dict):
            return "%s: is %s, expected an object" % (path, json.dumps(got))
        for k, v in exp.items():
            if k == MORE:
                continue
            if k not in got:
                return "%s: no member \"%s\"" % (path, k)
            why = match_json(v, got[k], caps, "%s.%s" % (path, k))
            if why:
                return why
        extra = sorted(set(got) - set(exp))
        if extra and MORE not in exp:
            return "%s: unexpected member \"%s\"" % (path, extra[0])
    elif isinstance(exp, list):
        if not isinstance(got, list):
            return "%s: is %s, expected an array" % (path, json.dumps(got))
        want = [e for e in exp if e != MORE]
        table = [[None] * len(got) for _ in want]  # (reason, captures)
        for i, e in enumerate(want):
            for j, g in enumerate(got):
                c = {}
                table[i][j] = (match_json(e, g, c, "%s[%d]" % (path, j)), c)
        owner = [-1] * len(got)

        def augment(i, seen):  # bipartite matching, as match_children
            for j in range(len(got)):
                if table[i][j][0] is None and j not in seen:
                    seen.add(j)
                    if owner[j] < 0 or augment(owner[j], seen):
                        owner[j] = i
                        return True
            return False

        for i, e in enumerate(want):
            if not augment(i, set()):
                # The closest candidate failed deepest (as match_set).
                deep = max([r for r, _ in table[i] if r], default=None,
                           key=lambda r: len(re.findall(
                               r"[.\[]", r.split(": ")[0])))
                return "%s: no item matches %s%s" % (
                    path, json.dumps(e), "; closest: " + deep if deep
                    else "")
        if MORE not in exp and -1 in owner:
            return "%s: unexpected item %s" % (
                path, json.dumps(got[owner.index(-1)]))
        for j, i in enumerate(owner):
            if i >= 0:
                caps.update(table[i][j][1])
    else:  # a number, true, false or null: the same (1 and 1.0 too)
        def number(v):
            return isinstance(v, (int, float)) and not isinstance(v, bool)
        same = exp == got if number(exp) and number(got) else \
            type(exp) is type(got) and exp == got
        if not same:
            return "%s: is %s, expected %s" % (path, json.dumps(got),
                                               json.dumps(exp))
    captures.update(caps)
    return None


def body_kind(tmpl):
    """How an expected body is compared: "xml" (it starts with "<"),
    "json" (it parses as JSON, templates in its strings), else "text"
    (a template of the whole body)."""
    t = tmpl.strip()
    if t.startswith("<"):
        return "xml", None
    if t[:1] in ("{", "["):
        try:
            return "json", json.loads(t)
        except ValueError:
            pass
    return "text", None


def match_body(tmpl, body, captures):
    """Matches a received body (bytes) with an expected one (text, its
    ${...} already substituted).  Returns (reason or None, the expected
    element, the received element): the elements only for XML, for the
    diff of a failure."""
    kind, exp = body_kind(tmpl)
    text = body.decode("utf-8", "replace")
    if kind == "xml":
        try:
            want = list(ET.fromstring(wrap_open("") + tmpl + WRAP_CLOSE))
        except ET.ParseError as e:
            raise StepFailed("the expected body is not well-formed XML: %s"
                             % e)
        if len(want) != 1:
            raise StepFailed("the expected body must be one element")
        try:
            got = ET.fromstring(body)
        except ET.ParseError as e:
            return "the body is not well-formed XML: %s" % e, None, None
        return match(want[0], got, captures), want[0], got
    if kind == "json":
        try:
            got = json.loads(text)
        except ValueError as e:
            return "the body is not JSON: %s" % e, None, None
        return match_json(exp, got, captures), None, None
    caps = {}
    if not match_value(tmpl.strip(), text.strip(), caps):
        lines = text.splitlines()
        for ln in tmpl.strip().split("\n"):
            if "{" not in ln and ln.strip() and ln not in lines:
                return "the body has no line '%s'" % ln, None, None
        return "the body does not match the text expected", None, None
    captures.update(caps)
    return None, None, None


# -------------------------------------------------------------- printing

def pretty(el, parent_ns=NS_CLIENT, indent=0):
    """Canonical, indented text of an element: attributes sorted, xmlns
    written where the namespace changes, "..." kept."""
    pad = "  " * indent
    ns, name = ns_of(el.tag), local(el.tag)
    if ns in (NS_STREAM, NS_SCN):
        name = ("stream:" if ns == NS_STREAM else "scn:") + name
    attrs = ""
    if ns != parent_ns and ns not in (NS_STREAM, NS_SCN):
        attrs += " xmlns='%s'" % ns
    for k in sorted(el.attrib):
        kn = "xml:" + local(k) if ns_of(k) == \
            "http://www.w3.org/XML/1998/namespace" else k
        attrs += " %s='%s'" % (kn, el.attrib[k])
    kids = list(el)
    text = text_of(el)
    more = is_open(el)
    if not kids and not text and not more:
        return ["%s<%s%s/>" % (pad, name, attrs)]
    if not kids:
        body = (text + (" " if text and more else "")
                + (MORE if more else ""))
        return ["%s<%s%s>%s</%s>" % (pad, name, attrs, body, name)]
    lines = ["%s<%s%s>%s" % (pad, name, attrs, text)]
    for c in kids:
        lines += pretty(c, ns if ns not in (NS_STREAM, NS_SCN)
                        else parent_ns,
                        indent + 1)
    if more:
        lines.append(pad + "  " + MORE)
    lines.append("%s</%s>" % (pad, name))
    return lines


def pretty_all(els, ns=NS_CLIENT):
    out = []
    for el in els:
        out += pretty(el, ns)
    return out


# ---------------------------------------------------------------- parser

class Participant:
    """What the participants share: settings (SETTINGS, a non-empty
    value each) taken from the lines of their block."""
    SETTINGS = ()

    def setting(self, k, v):
        """Takes one line of its block; False if it is no setting."""
        if k not in self.SETTINGS or not v:
            return False
        setattr(self, k, v)
        return True


class Client(Participant):
    ns = NS_CLIENT  # the default namespace of its blocks

    def __init__(self, name):
        self.name = name
        self.user = None
        self.password = None
        self.resource = None
        self.account = True
        self.transport = "tcp"  # a key of TRANSPORTS
        self.conn = None        # its ClientConn
        self.jid = None
        self.features = None

    def setting(self, k, v):
        if k in ("user", "password", "resource"):
            setattr(self, k, v)
        elif k == "account" and v in ("yes", "none"):
            self.account = v == "yes"
        elif k == "transport" and v in TRANSPORT_NAMES:
            self.transport = v
        else:
            return False
        return True


class Component(Participant):
    """An external component (XEP-0114): a domain and its secret, or
    (link: NAME) another connection of component NAME's domain."""
    ns = NS_COMPONENT
    SETTINGS = ("domain", "secret", "link")

    def __init__(self, name):
        self.name = name
        self.domain = None
        self.secret = None
        self.link = None
        self.conn = None


class SipParticipant(Participant):
    """A SIP user agent of the tests' own (tests/interop/sipua.py) on a
    UDP socket of 127.0.0.1, towards the server's sip listener.  Its
    blocks are SIP text, not XML; see Runner.step_sip_send."""
    ns = None
    SETTINGS = ("user", "password")

    def __init__(self, name):
        self.name = name
        self.user = None       # digest credentials, when it authenticates
        self.password = None
        self.conn = None       # the sipua.SipUA
        self.call_id = sipua.rand_token()  # ${X.call_id}, ${X.tag}: one
        self.tag = sipua.rand_token(4)     # for the file
        self.branch = None     # ${X.branch}: the last request's
        self.challenge = None  # the last Digest challenge received
        self.auth_header = None  # the field it came in
        self.nc = 0            # the last nonce count sent for it
        self.cnonce = None


class HttpParticipant(Participant):
    """An HTTP client of the tests' own: requests written as they go on
    the wire, on one HTTP/1.1 connection to one of the server's http
    listeners (opened again when the server has closed it).  Its blocks
    are HTTP text; see Runner.step_http_send and step_http_receive."""
    ns = None
    SETTINGS = ("listener",)
    LISTENERS = ("secure", "plain")

    def __init__(self, name):
        self.name = name
        self.listener = "secure"  # secure = true (as behind a TLS proxy)
        self.conn = None          # its HttpConn

    def setting(self, k, v):
        return v in self.LISTENERS and Participant.setting(self, k, v)


# The participants' blocks above the ----- line: [Kind] NAME, its class,
# the Scenario table it goes in, and what its settings are called.
KINDS = {
    "Client": (Client, "clients", "client"),
    "Component": (Component, "components", "component"),
    "SipUA": (SipParticipant, "sip_uas", "SIP UA"),
    "Http": (HttpParticipant, "http_clients", "HTTP client"),
}
TABLES = [table for _, table, _ in KINDS.values()]


class Scenario:
    def __init__(self, path):
        self.path = path
        self.name = os.path.splitext(os.path.basename(path))[0]
        self.title = ""
        self.expect_fail = None   # step number it must fail at, or 0
        self.clients = {}
        self.components = {}
        self.sip_uas = {}
        self.http_clients = {}
        self.server = ""          # raw configuration text
        self.host = ""            # raw settings for the first host
        self.steps = []           # (line, participant, verb, block text)
        self.uid = None           # ${id}, given by main()
        self.component_port = None  # the server's component listener
        self.sip_port = None        # its sip listener (UDP), for SIP UAs
        self.http_ports = {}        # its http listeners, by kind

    def participants(self):
        return [p for table in TABLES for p in getattr(self, table).values()]

    def taken(self, name):
        return any(name in getattr(self, table) for table in TABLES)

    def find(self, name):
        for table in TABLES:
            if name in getattr(self, table):
                return getattr(self, table)[name]
        return None

    def http_needs(self):
        """The http listeners its participants need: "secure" (declared
        secure = true, for the WebSocket and BOSH clients and the HTTP
        clients by default) and "plain" (HTTP clients with listener:
        plain)."""
        kinds = {w.listener for w in self.http_clients.values()}
        if any(c.transport != "tcp" for c in self.clients.values()):
            kinds.add("secure")
        return kinds


STEPS = [
    (r"connects", "connect"),
    (r"opens a stream", "open"),
    (r"logs in", "login"),
    (r"authenticates", "auth"),
    (r"sends:", "send"),
    (r"receives:", "receive"),
    (r"receives nothing", "nothing"),
    (r"has stream header:", "header"),
    (r"has stream features:", "features"),
    (r"is disconnected", "closed"),
    (r"disconnects", "disconnect"),
    (r"ends the stream", "end_stream"),
    (r"loses the connection", "lose"),
]

HTTP_STEPS = [
    (r"sends:", "http_send"),
    (r"receives:", "http_receive"),
    (r"receives nothing", "http_nothing"),
    (r"is disconnected", "http_closed"),
    (r"disconnects", "http_disconnect"),
]

SIP_STEPS = [
    (r"sends:", "sip_send"),
    (r"receives:", "sip_receive"),
    (r"receives nothing", "sip_nothing"),
]

COMPONENT_STEPS = [
    (r"connects", "handshake"),
    (r"sends:", "send"),
    (r"receives:", "receive"),
    (r"receives nothing", "nothing"),
    (r"is disconnected", "closed"),
    (r"disconnects", "disconnect"),
]


def parse(path):
    sc = Scenario(path)
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    section, i = "head", 0

    def block(i):
        """Indented lines from i on, dedented; returns (text, next i)."""
        body = []
        while i < len(lines) and (lines[i].startswith((" ", "\t"))
                                  or not lines[i].strip()):
            body.append(lines[i])
            i += 1
        while body and not body[-1].strip():
            body.pop()
        width = min((len(b) - len(b.lstrip()) for b in body if b.strip()),
                    default=0)
        return "\n".join(b[width:] for b in body), i

    while i < len(lines):
        raw = lines[i]
        line = raw.strip()
        i += 1
        if not line:
            continue
        if line.startswith("#"):
            m = re.match(r"#\s*(Title|Expect)\s*:\s*(.*)", line, re.I)
            if m and m.group(1).lower() == "title":
                sc.title = m.group(2).strip()
            elif m:
                f = re.match(r"fail(?: at step (\d+))?$", m.group(2).strip())
                if not f:
                    raise ScenarioError("%s:%d: Expect takes 'fail' or "
                                        "'fail at step N'" % (path, i))
                sc.expect_fail = int(f.group(1) or 0)
            continue
        if section != "steps" and raw.startswith((" ", "\t")):
            raise ScenarioError("%s:%d: indented line outside a block"
                                % (path, i))
        if re.match(r"-{3,}$", line):
            section = "steps"
            continue
        if section != "steps":
            m = re.match(r"\[(%s)\]\s+(\w+)$" % "|".join(KINDS), line)
            if m:
                cls, table, what = KINDS[m.group(1)]
                who = cls(m.group(2))
                if sc.taken(who.name):
                    raise ScenarioError("%s:%d: %s defined twice"
                                        % (path, i, who.name))
                getattr(sc, table)[who.name] = who
                text, i = block(i)
                for kv in text.split("\n"):
                    if not kv.strip() or kv.strip().startswith("#"):
                        continue
                    k, _, v = kv.partition(":")
                    if not who.setting(k.strip(), v.strip()):
                        raise ScenarioError("%s:%d: unknown %s setting '%s'"
                                            % (path, i, what, kv.strip()))
                continue
            if line == "[Server]":
                sc.server, i = block(i)
                continue
            if line == "[Host]":
                sc.host, i = block(i)
                continue
            raise ScenarioError("%s:%d: expected [Client] NAME, [Component] "
                                "NAME, [SipUA] NAME, [Http] NAME, [Server], "
                                "[Host] or -----"
                                % (path, i))
        m = re.match(r"Run parleyctl\s+(.+)$", line)
        if m:
            sc.steps.append((i, None, "ctl", m.group(1), line))
            continue
        m = re.match(r"Wait (\d+(?:\.\d+)?) s$", line)
        if m:
            sc.steps.append((i, None, "wait", m.group(1), line))
            continue
        if line == "Server restarts":
            sc.steps.append((i, None, "restart", "", line))
            continue
        if line == "Output matches:":
            text, i = block(i)
            sc.steps.append((i, None, "output", text, line))
            continue
        m = re.match(r"(\w+)\s+(.*)$", line)
        verb, who = None, None
        if m:
            who = sc.find(m.group(1))
        if who is not None:
            table = COMPONENT_STEPS if isinstance(who, Component) else \
                SIP_STEPS if isinstance(who, SipParticipant) else \
                HTTP_STEPS if isinstance(who, HttpParticipant) else STEPS
            for rx, v in table:
                if re.match(rx + r"$", m.group(2)):
                    verb = v
                    break
        if verb is None:
            raise ScenarioError("%s:%d: not a step: '%s'" % (path, i, line))
        text = ""
        if line.endswith(":"):
            text, i = block(i)
            if not text.strip():
                raise ScenarioError("%s:%d: empty block" % (path, i))
        sc.steps.append((i, who, verb, text, line))
    if not sc.steps:
        raise ScenarioError("%s: no steps (missing ----- line?)" % path)
    if sc.components and re.search(r"^\s*components\s*[=:]", sc.host,
                                   re.M):
        raise ScenarioError("%s: [Component] writes the host's components "
                            "setting; [Host] must not have one" % path)
    return sc


# ---------------------------------------------------------------- runner

class ClientConn:
    """What a scenario needs of a client's stream, whatever carries it
    (mixed into a harness.RawClient of each transport).  The steps use
    only this and RawClient's helpers, so they work the same over every
    transport."""

    def drop(self, skip):
        """Removes the queued elements skip() is true of."""
        if skip:
            self.queue[:] = [el for el in self.queue if not skip(el)]

    def wait_count(self, n, timeout, skip=None):
        """Waits (bounded) until n stanzas are queued, not counting those
        skip() is true of (dropped); returns them all popped, or raises
        StepFailed with what did arrive."""
        deadline = time.monotonic() + timeout
        why = "timed out after %.1f s" % timeout
        self.drop(skip)
        while len(self.queue) < n:
            if self.parse_error:
                why = "unparsable data: %s" % self.parse_error
                break
            if self.closed:
                why = "the server closed the connection"
                break
            try:
                self._recv_some(deadline)
            except TimeoutError:
                break
            except (harness.StreamClosed, OSError):
                why = "the server closed the connection"
                break
            finally:
                self.drop(skip)
        if len(self.queue) < n:
            got = self.queue[:]
            self.queue.clear()
            raise StepFailed("expected %d stanza(s), got %d (%s)"
                             % (n, len(got), why), got=got)
        got, self.queue[:] = self.queue[:n], self.queue[n:]
        return got

    def send_block(self, text, ns):
        """Sends a block's XML (${...} substituted): over TCP the bytes
        as written, the stream giving its default namespace."""
        self.send(text)

    def end_stream(self):
        """Asks for the end of the stream (RFC 6120 §4.4)."""
        self.send("</stream:stream>")

    def is_stream_end(self, el):
        """Whether a queued element is the transport's end of stream."""
        return False

    def lose(self):
        """Goes away without ending the stream."""
        self.close()


class Conn(ClientConn, harness.RawClient):
    """A client over TCP (or a component's stream)."""


def standalone(text, ns):
    """The elements of a block as standalone documents, for transports
    that carry one element at a time (RFC 7395 §3.3.3: every message a
    complete document with its namespaces declared; XEP-0206 §2: BOSH
    payloads qualified by jabber:client): each top-level element as
    written, with xmlns='NS' added when it declares no default namespace
    and xmlns:stream when it uses the stream: prefix without declaring
    it, which is what the element meant on a TCP stream.  Returns the
    list of strings; raises StepFailed for text between elements."""
    data = (wrap_open(ns) + text + WRAP_CLOSE).encode("utf-8")
    p = xml.parsers.expat.ParserCreate()
    tops = []   # [start byte, declares xmlns, prefixes used, declared]
    depth = [0]
    end = [len(data)]
    stray = []

    def start(name, attrs):
        depth[0] += 1
        if depth[0] == 2:
            tops.append([p.CurrentByteIndex, "xmlns" in attrs, set(),
                         set()])
        if depth[0] >= 2:
            top = tops[-1]
            for n in [name] + list(attrs):
                if n.startswith("xmlns:"):
                    top[3].add(n[6:])
                elif ":" in n and not n.startswith("xml:"):
                    top[2].add(n.split(":", 1)[0])

    def stop(name):
        if depth[0] == 1:
            end[0] = p.CurrentByteIndex
        depth[0] -= 1

    def chars(t):
        if depth[0] == 1 and t.strip():
            stray.append(t.strip())

    p.StartElementHandler = start
    p.EndElementHandler = stop
    p.CharacterDataHandler = chars
    try:
        p.Parse(data, True)
    except xml.parsers.expat.ExpatError as e:
        raise StepFailed("the block is not well-formed XML: %s" % e)
    if stray:
        raise StepFailed("text outside any element cannot be framed: '%s'"
                         % stray[0])
    out = []
    for k, (at, has_ns, used, declared) in enumerate(tops):
        stop_at = tops[k + 1][0] if k + 1 < len(tops) else end[0]
        piece = data[at:stop_at].decode("utf-8").rstrip()
        decl = "" if has_ns else " xmlns='%s'" % ns
        if "stream" in used - declared:
            decl += " xmlns:stream='%s'" % NS_STREAM
        m = re.match(r"<[^\s/>]+", piece)
        out.append(piece[:m.end()] + decl + piece[m.end():])
    return out


class WsConn(ClientConn, ws_common.WsClient):
    """A client over WebSocket (RFC 7395, ws_common.WsClient): each
    element in a message of its own, the stream opened with <open/> and
    ended with <close/>; every message received is parsed as one whole
    document, so two elements in a message, or one that lacks a
    namespace declaration, is a failure of any step that reads."""

    def send_block(self, text, ns):
        for piece in standalone(text, ns):
            self.send(piece)

    def end_stream(self):
        self.send("<close xmlns='%s'/>" % ws_common.NS_FRAMING)

    def is_stream_end(self, el):
        return el.tag == "{%s}close" % ws_common.NS_FRAMING


class BoshConn(ClientConn, bosh_common.BoshStream):
    """A client over BOSH (XEP-0124, XEP-0206; bosh_common.BoshStream): a
    block's elements go in one request, a request is held while it
    reads; the stream ends with type='terminate'.  Losing the connection
    is sending no more requests (the session ends after its inactivity
    time, XEP-0124 §10)."""

    def __init__(self, host, port, domain, timeout):
        bosh_common.BoshStream.__init__(self, host, port, domain,
                                        wait=2 * int(TIMEOUT) + 5,
                                        timeout=timeout)

    def _absorb(self, st, raw):
        try:
            return bosh_common.BoshStream._absorb(self, st, raw)
        except ET.ParseError as e:
            self.parse_error = "%s in %r" % (e, raw[:200])
            self.closed = True
            raise harness.StreamClosed("an answer that is not XML")

    def send_block(self, text, ns):
        self.send("".join(standalone(text, ns)))

    def end_stream(self):
        self.end()


# transport: setting of a [Client] -> its ClientConn
TRANSPORTS = {"tcp": Conn, "websocket": WsConn, "bosh": BoshConn}
TRANSPORT_NAMES = tuple(TRANSPORTS)


class HttpMessage:
    """An HTTP answer: its status line, fields and body (bytes)."""

    def __init__(self, head, body):
        lines = head.decode("latin-1").split("\r\n")
        self.start = lines[0]
        self.fields = []
        for ln in lines[1:]:
            name, _, value = ln.partition(":")
            self.fields.append((name.strip(), value.strip()))
        self.body = body
        parts = self.start.split(" ", 2)
        self.status = int(parts[1]) if len(parts) > 1 and \
            parts[1].isdigit() else 0

    def all(self, name):
        return [v for k, v in self.fields if k.lower() == name.lower()]

    def text(self, limit=3000):
        """For failure reports: the head, and the body (cut)."""
        body = self.body.decode("utf-8", "replace")
        if len(body) > limit:
            body = body[:limit] + "...(%d bytes)" % len(self.body)
        head = "\n".join([self.start] + ["%s: %s" % f for f in self.fields])
        return head + ("\n\n" + body if body else "")


class HttpConn:
    """One HTTP/1.1 connection of an [Http] participant: requests sent
    as given, answers read in order (their bodies by Content-Length,
    chunked coding or the end of the connection; none for HEAD, 1xx,
    204 and 304).  Every read is bounded by a deadline."""

    def __init__(self, sock, timeout):
        self.sock = sock
        self.timeout = timeout
        self.buf = b""
        self.closed = False  # the server closed it
        self.pending = []    # (method, bytes) of the requests unanswered
        self.answers = 0     # answers read
        self.last = False    # an answer said Connection: close

    @classmethod
    def connect(cls, host, port, timeout):
        return cls(socket.create_connection((host, port), timeout), timeout)

    def send(self, data, method):
        self.sock.sendall(data)
        self.pending.append((method, data))

    def usable(self):
        """Whether another request may go on it: not closed, by the
        server's word or (as far as can be seen now) by the socket."""
        if self.closed or self.last:
            return False
        if self.buf:
            return True
        self.sock.setblocking(False)
        try:
            return self.sock.recv(1, socket.MSG_PEEK) != b""
        except BlockingIOError:
            return True
        except OSError:
            return False
        finally:
            self.sock.settimeout(self.timeout)

    def _fill(self, deadline):
        """Reads more; False once the server has closed the connection."""
        if self.closed:
            return False
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("timed out")
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            raise TimeoutError("timed out")
        except (ConnectionResetError, BrokenPipeError):
            data = b""
        if not data:
            self.closed = True
            return False
        self.buf += data
        return True

    def _take(self, n, deadline):
        while len(self.buf) < n:
            if not self._fill(deadline):
                raise EOFError("the connection closed within a body")
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _line(self, deadline):
        while b"\r\n" not in self.buf:
            if not self._fill(deadline):
                raise EOFError("the connection closed within a chunk")
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def read(self, deadline):
        """The next answer (an HttpMessage), or None if the connection
        closed before one began.  Raises TimeoutError, or EOFError for
        an answer cut short."""
        while b"\r\n\r\n" not in self.buf:
            if not self._fill(deadline):
                if not self.buf:
                    return None
                raise EOFError("the connection closed within a head: %r"
                               % self.buf[:200])
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        msg = HttpMessage(head, b"")
        interim = 100 <= msg.status < 200
        method = self.pending[0][0] if self.pending else "GET"
        if not interim:
            self.answers += 1
            if self.pending:
                self.pending.pop(0)
        if interim or method == "HEAD" or msg.status in (204, 304):
            return msg
        coding = ",".join(msg.all("Transfer-Encoding")).lower()
        length = msg.all("Content-Length")
        if "chunked" in coding:
            body = b""
            while True:
                size = int(self._line(deadline).split(b";")[0].strip(), 16)
                if size == 0:
                    while self._line(deadline):  # trailer fields
                        pass
                    break
                body += self._take(size, deadline)
                self._line(deadline)
            msg.body = body
        elif length:
            msg.body = self._take(int(length[0]), deadline)
        else:
            while self._fill(deadline):
                pass
            msg.body, self.buf = self.buf, b""
        if any("close" in v.lower() for v in msg.all("Connection")):
            self.last = True
        return msg

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


UNIQUE_LOCK = threading.Lock()


def new_uid():
    with UNIQUE_LOCK:
        return harness.unique("s")


def subst_plain(text, variables):
    """${NAME} of variables only (component settings, known before the
    server starts: ${id}, ${domain})."""
    def one(m):
        if m.group(1) not in variables:
            raise ScenarioError("${%s} cannot be used here (only ${id} and "
                                "${domain})" % m.group(1))
        return variables[m.group(1)]
    return re.sub(r"\$\{([\w.]+)\}", one, text)


def resolve_components(sc, domain):
    """Gives sc its ${id} and its components their domain and secret
    (defaults from the name and ${id}); before the server starts, since
    they go into its configuration."""
    if sc.uid is None:
        sc.uid = new_uid()
    variables = {"id": sc.uid, "domain": domain}
    for c in sc.components.values():
        if c.link:
            continue
        c.domain = subst_plain(c.domain or "%s-${id}.${domain}"
                               % c.name.lower(), variables).lower()
        c.secret = subst_plain(c.secret or "secret-${id}-%s"
                               % c.name.lower(), variables)
    for c in sc.components.values():
        if not c.link:
            continue
        main = sc.components.get(c.link)
        if main is None or main.link or c.domain or c.secret:
            raise ScenarioError("[Component] %s: link: names another "
                                "[Component] without a link:, and goes "
                                "without domain: and secret:" % c.name)
        c.domain, c.secret = main.domain, main.secret


# Settings of the groups the harness writes (limits, c2s) that it takes
# as arguments of harness.Server; the others of these groups go in as
# its limits_extra and c2s_extra.
SERVER_ARGS = {
    "limits": ("max_stanza_size", "max_depth", "handshake_timeout",
               "idle_timeout"),
    "c2s": ("require_encryption",),
}


def server_settings(text):
    """A [Server] block as harness.Server's (extra, keyword arguments):
    its limits and c2s groups, which the harness writes itself, are
    taken out and merged into the harness's (limits_extra, c2s_extra,
    or the arguments of SERVER_ARGS); the rest is extra."""
    kw = {}
    for group, args in SERVER_ARGS.items():
        rx = re.compile(r"^[ \t]*%s[ \t]*[:=][ \t]*\{([^{}]*)\}[ \t]*;?[ \t]*"
                        r"$\n?" % group, re.M)
        found = rx.findall(text)
        if len(found) > 1:
            raise ScenarioError("[Server] has two %s groups" % group)
        text = rx.sub("", text)
        rest = []
        for item in (found[0] if found else "").split(";"):
            k, eq, v = item.partition("=")
            k, v = k.strip(), v.strip()
            if not k:
                continue
            if not eq:
                raise ScenarioError("[Server] %s: not a setting: '%s'"
                                    % (group, item.strip()))
            if k in args:
                if v in ("true", "false"):
                    kw[k] = v == "true"
                elif re.match(r"\d+$", v):
                    kw[k] = int(v)
                else:
                    raise ScenarioError("[Server] %s.%s: '%s' is not a "
                                        "number or a boolean"
                                        % (group, k, v))
            else:
                rest.append("%s = %s;" % (k, v))
        if rest:
            kw["%s_extra" % group] = " ".join(rest)
    return text, kw


def libconfig_string(s):
    return '"%s"' % s.replace("\\", "\\\\").replace('"', '\\"')


def components_config(scenarios):
    """The components setting for every component of these files."""
    entries = ["{ domain = %s; secret = %s; }" % (
        libconfig_string(c.domain), libconfig_string(c.secret))
        for sc in scenarios for c in sc.components.values() if not c.link]
    if not entries:
        return ""
    return "components = ( %s );" % ", ".join(entries)


class Runner:
    def __init__(self, srv, sc):
        self.srv, self.sc = srv, sc
        if sc.uid is None:
            resolve_components(sc, srv.domain)
        self.vars = {"domain": srv.domain, "id": sc.uid}
        # Defaults first, then settings that name ${id} or another
        # client (user: ${Alice.user} is Alice's account, another login).
        given = {}
        for c in sc.clients.values():
            given[c.name] = (c.user, c.password, c.resource)
            c.user = "%s-%s" % (c.name.lower(), self.vars["id"])
            c.password = "pw-" + self.vars["id"]
            c.resource = c.name.lower()
        for c in sc.clients.values():
            user, password, resource = given[c.name]
            try:
                c.user = self.subst(user) if user else c.user
                c.password = self.subst(password) if password \
                    else c.password
                c.resource = self.subst(resource) if resource \
                    else c.resource
            except StepFailed as e:
                raise ScenarioError("client %s: %s" % (c.name, e.reason))
        for ua in sc.sip_uas.values():
            try:
                ua.user = self.subst(ua.user) if ua.user else None
                ua.password = self.subst(ua.password) if ua.password \
                    else None
            except StepFailed as e:
                raise ScenarioError("SIP UA %s: %s" % (ua.name, e.reason))
        self.request_line = None  # (method, uri) of the request being sent
        self.body_length = None   # ${length} while one is being sent

    # -- variables

    def value(self, name):
        if name in self.vars:
            return self.vars[name]
        if name == "length" and self.body_length is not None:
            return str(self.body_length)
        cname, _, part = name.partition(".")
        ua = self.sc.sip_uas.get(cname)
        if ua is not None:
            return self.sip_value(ua, part)
        web = self.sc.http_clients.get(cname)
        if web is not None and part == "port":
            return str(self.http_port(web))
        comp = self.sc.components.get(cname)
        if comp is not None and part in ("", "secret"):
            return comp.secret if part else comp.domain
        c = self.sc.clients.get(cname)
        if c is None:
            raise StepFailed("unknown variable ${%s}" % name)
        bare = "%s@%s" % (c.user, self.srv.domain)
        if part == "":
            return bare
        if part == "full":
            if not c.jid:
                raise StepFailed("${%s.full}: %s has no bound resource"
                                 % (cname, cname))
            return c.jid
        if part == "plain":
            return base64.b64encode(("\0%s\0%s" % (c.user, c.password))
                                    .encode()).decode()
        if part in ("user", "password", "resource"):
            return getattr(c, part)
        raise StepFailed("unknown variable ${%s}" % name)

    def sip_value(self, ua, part):
        """${X.port} (its UDP port), ${X.call_id}, ${X.tag}, ${X.branch}
        (the request's being sent, else the last one's), ${X.digest} and
        ${X.digest_replay} (see step_sip_send)."""
        if part == "port":
            return str(self.sip_conn(ua).port)
        if part in ("call_id", "tag", "user", "password"):
            v = getattr(ua, part)
            if v is None:
                raise StepFailed("${%s.%s}: %s has none"
                                 % (ua.name, part, ua.name))
            return v
        if part == "branch":
            if not ua.branch:
                raise StepFailed("${%s.branch}: no request sent yet"
                                 % ua.name)
            return ua.branch
        if part in ("digest", "digest_replay"):
            if ua.challenge is None or self.request_line is None:
                raise StepFailed("${%s.%s}: %s has received no Digest "
                                 "challenge, or this is no request"
                                 % (ua.name, part, ua.name))
            if not ua.user or ua.password is None:
                raise StepFailed("${%s.%s}: [SipUA] %s has no user and "
                                 "password" % (ua.name, part, ua.name))
            if part == "digest":
                ua.nc += 1
                ua.cnonce = sipua.rand_token(8)
            elif not ua.nc:
                raise StepFailed("${%s.digest_replay}: no ${%s.digest} "
                                 "before" % (ua.name, ua.name))
            method, uri = self.request_line
            return sipua.digest_credentials(ua.challenge, method, uri,
                                            ua.user, ua.password,
                                            nc=ua.nc, cnonce=ua.cnonce)
        raise StepFailed("unknown variable ${%s.%s}" % (ua.name, part))

    def subst(self, text):
        return re.sub(r"\$\{([\w.]+)\}",
                      lambda m: self.value(m.group(1)), text)

    def parse_block(self, text, ns=NS_CLIENT):
        try:
            root = ET.fromstring(wrap_open(ns) + self.subst(text)
                                 + WRAP_CLOSE)
        except ET.ParseError as e:
            raise StepFailed("the block is not well-formed XML: %s" % e)
        return list(root)

    # -- steps

    def conn_of(self, c):
        if c.conn is None:
            raise StepFailed("%s is not connected" % c.name)
        return c.conn

    def step_open(self, c):
        """A new stream over the client's transport: over TCP with
        STARTTLS; over WebSocket the opening handshake (RFC 6455 §4, the
        xmpp subprotocol) and <open/>; over BOSH the session creation
        (XEP-0124 §7, XEP-0206).  ${X.full} stays the last bound JID
        (a resumption, XEP-0198, gets it back)."""
        if c.conn is not None:
            c.conn.close()
            c.conn = None
        cls = TRANSPORTS[c.transport]
        if cls is Conn:
            c.conn = Conn(self.srv.host, self.srv.starttls_port,
                          self.srv.domain, timeout=TIMEOUT)
        else:
            port = self.sc.http_ports.get("secure")
            if not port:
                raise StepFailed("the server has no http listener")
            if cls is WsConn:
                conn = WsConn(self.srv.host, port, self.srv.domain,
                              timeout=TIMEOUT)
                if conn.status != 101:
                    conn.close()
                    raise StepFailed("the WebSocket handshake was answered "
                                     "%d, not 101" % conn.status,
                                     detail="fields: %s" % conn.headers)
                c.conn = conn
            else:
                c.conn = BoshConn(self.srv.host, port, self.srv.domain,
                                  timeout=TIMEOUT)
        c.features = c.conn.connect_tls()

    def step_auth(self, c):
        """SASL SCRAM, then the stream restart (RFC 6120 §6.4.6): no
        resource bound (for an XEP-0198 <resume/>)."""
        conn = self.conn_of(c)
        mechs = conn.mechanisms(c.features)
        mech = next((m for m in ("SCRAM-SHA-256", "SCRAM-SHA-1")
                     if m in mechs), None)
        if mech is None:
            raise StepFailed("no SCRAM mechanism offered: %s" % mechs)
        el = conn.auth_scram(c.user, c.password, mech)
        if el.tag != "{%s}success" % NS_SASL:
            raise StepFailed("%s as %s failed" % (mech, c.user), got=[el])
        c.features = conn.restart()

    def step_login(self, c):
        self.step_auth(c)
        conn = self.conn_of(c)
        conn.send_block("<iq type='set' id='scn-bind'><bind xmlns='%s'>"
                        "<resource>%s</resource></bind></iq>"
                        % (NS_BIND, c.resource), NS_CLIENT)
        el = conn.wait_count(1, TIMEOUT)[0]
        j = el.find(".//{%s}jid" % NS_BIND)
        if el.get("type") != "result" or j is None:
            raise StepFailed("resource binding failed", got=[el])
        c.jid = j.text

    def step_connect(self, c):
        self.step_open(c)
        self.step_login(c)

    def step_handshake(self, comp):
        """XEP-0114 §3: a jabber:component:accept stream to the
        component's domain, then <handshake/> with the lower-case hex
        SHA-1 of the stream id and the secret; the server must answer
        with an empty <handshake/>."""
        if comp.conn is not None:
            comp.conn.close()
            comp.conn = None
        conn = Conn(self.srv.host, self.sc.component_port, comp.domain,
                    timeout=TIMEOUT)
        try:
            conn.send("<?xml version='1.0'?><stream:stream xmlns='%s' "
                      "xmlns:stream='%s' to='%s'>"
                      % (NS_COMPONENT, NS_STREAM, comp.domain))
            hdr = conn.wait_header(TIMEOUT)
            sid = hdr.get("id")
            if not sid:
                conn.read_until_closed(QUIET)
                raise StepFailed("the server's stream header has no id: %s"
                                 % dict(hdr.attrib), got=conn.queue[:],
                                 ns=NS_COMPONENT)
            digest = hashlib.sha1((sid + comp.secret).encode("utf-8"))
            conn.send("<handshake>%s</handshake>" % digest.hexdigest())
            try:
                el = conn.wait_count(1, TIMEOUT)[0]
            except StepFailed as e:
                e.ns = NS_COMPONENT
                raise
            if el.tag != "{%s}handshake" % NS_COMPONENT or len(el) or \
                    (el.text or "").strip():
                raise StepFailed("the handshake was not accepted with an "
                                 "empty <handshake/>", got=[el],
                                 ns=NS_COMPONENT)
        except BaseException:
            conn.close()
            raise
        comp.conn = conn

    def step_send(self, c, text):
        self.parse_block(text, c.ns)  # well-formed, or fail before sending
        self.conn_of(c).send_block(self.subst(text), c.ns)

    def step_receive(self, c, text):
        exps = self.parse_block(text, c.ns)
        try:
            got = self.conn_of(c).wait_count(len(exps), TIMEOUT,
                                             unasked_ack_request(exps))
        except StepFailed as e:
            e.ns = c.ns
            raise
        why = match_set(exps, got, self.vars)
        if why:
            raise StepFailed(why, exps, got, ns=c.ns)

    def step_nothing(self, c):
        conn = self.conn_of(c)
        deadline = time.monotonic() + QUIET
        skip = unasked_ack_request([])
        try:
            while not conn.queue and not conn.closed:
                conn._recv_some(deadline)
                conn.drop(skip)
        except (TimeoutError, harness.StreamClosed, OSError):
            pass
        conn.drop(skip)
        if conn.queue:
            got = conn.queue[:]
            conn.queue.clear()
            raise StepFailed("expected nothing within %.1f s, got %d "
                             "stanza(s)" % (QUIET, len(got)), got=got,
                             ns=c.ns)

    def step_header(self, c, text):
        """The stream's opening as the server sent it, without its
        children: <stream:stream/> over TCP, <open/> over WebSocket
        (RFC 7395 §3.4), the session creation's <body/> over BOSH."""
        exps = self.parse_block(text)
        hdr = self.conn_of(c).header
        if hdr is None:
            raise StepFailed("%s has no stream header" % c.name)
        got = ET.Element(hdr.tag, hdr.attrib)
        why = match_set(exps, [got], self.vars)
        if why:
            raise StepFailed(why, exps, [got])

    def step_features(self, c, text):
        exps = self.parse_block(text)
        if c.features is None:
            raise StepFailed("%s has no stream features yet" % c.name)
        why = match_set(exps, [c.features], self.vars)
        if why:
            raise StepFailed(why, exps, [c.features])

    def step_closed(self, c):
        """The server ends the stream or closes the connection (within
        TIMEOUT), with nothing more before; the transport's own end (a
        WebSocket <close/>) may be queued."""
        conn = self.conn_of(c)
        rest = [el for el in conn.queue if not conn.is_stream_end(el)]
        conn.queue.clear()
        if rest:
            raise StepFailed("expected the stream to end, got %d stanza(s) "
                             "first" % len(rest), got=rest, ns=c.ns)
        if not (conn.closed or conn.stream_ended) and \
                not conn.read_until_closed(TIMEOUT):
            raise StepFailed("the server did not close the stream within "
                             "%.1f s" % TIMEOUT)
        conn.close()
        c.conn = None  # c.jid stays: ${X.full} after logout

    def step_disconnect(self, c):
        conn = self.conn_of(c)
        try:
            conn.end_stream()
            conn.read_until_closed(2)
        except (OSError, TimeoutError, harness.StreamClosed):
            pass
        conn.close()
        c.conn = None  # c.jid stays: ${X.full} after logout

    def step_end_stream(self, c):
        """Ends the stream and waits for nothing: `is disconnected` then
        checks that the server ends its own and closes."""
        self.conn_of(c).end_stream()

    def step_lose(self, c):
        """Gone without ending the stream (RFC 6120 §4.4 not followed,
        RFC 7395 §3.6 no <close/>): what the server takes for a lost
        connection (XEP-0198 keeps a resumable session)."""
        self.conn_of(c).lose()
        c.conn = None

    def step_wait(self, _, seconds):
        """Lets the clock move: for an expiry, where time itself is what
        is tested; never to wait for an event (a receives step waits
        for those, bounded)."""
        time.sleep(float(seconds))

    # -- SIP user agents

    def sip_conn(self, ua):
        """Its socket, opened on first use (a free port of 127.0.0.1)."""
        if ua.conn is None:
            if not self.sc.sip_port:
                raise StepFailed("the server has no sip listener")
            ua.conn = sipua.SipUA(self.srv.host, self.sc.sip_port, "udp",
                                  timeout=TIMEOUT)
        return ua.conn

    def step_sip_send(self, ua, text):
        """The block as one datagram: its lines joined with CRLF, the
        first empty line ending the header section (CRLF CRLF is added
        when there is none), the lines after it the body.  ${length} is
        the body's length in bytes; ${X.branch} a new z9hG4bK branch for
        each request; ${X.digest} the Authorization (or
        Proxy-Authorization) value answering the last Digest challenge X
        received (SHA-256 if offered, else the first), for this request's
        method and Request-URI, with X's user and password, the next
        nonce count and a new cnonce; ${X.digest_replay} the same with
        the last nonce count and cnonce again (RFC 7616 §3.4: a replay)."""
        lines = text.split("\n")
        if "" in [ln.strip() for ln in lines]:
            k = [ln.strip() for ln in lines].index("")
            head, body = lines[:k], lines[k + 1:]
        else:
            head, body = lines, []
        self.sip_conn(ua)
        ua.branch = "z9hG4bK" + sipua.rand_token()
        try:
            body_bytes = self.subst("\r\n".join(body)).encode()
            self.body_length = len(body_bytes)
            start = self.subst(head[0]).split(" ")
            self.request_line = (start[0], start[1] if len(start) > 1
                                 else "")
            raw = self.subst("\r\n".join(head)).encode() + b"\r\n\r\n" \
                + body_bytes
        finally:
            self.body_length = None
            self.request_line = None
        ua.conn.send(raw)

    def step_sip_receive(self, ua, text):
        """The next SIP message (TIMEOUT at most) must match the block
        (match_sip).  A Digest challenge in it is remembered for
        ${X.digest}."""
        conn = self.sip_conn(ua)
        want = self.subst(text)
        raw = conn.recv_raw(TIMEOUT)
        if raw is None:
            raise StepFailed("expected a SIP message within %.1f s, got "
                             "none" % TIMEOUT, detail="expected:\n" + want)
        msg = sipua.parse(raw)
        for field in ("www-authenticate", "proxy-authenticate"):
            chals = [sipua.parse_challenge(v) for v in msg.all(field)]
            chals = [c for c in chals if c.get("scheme") == "Digest"]
            if chals:
                best = next((c for c in chals
                             if c.get("algorithm", "").upper() == "SHA-256"),
                            chals[0])
                if ua.challenge is None or \
                        best.get("nonce") != ua.challenge.get("nonce"):
                    ua.nc = 0
                ua.challenge, ua.auth_header = best, field
        why = match_sip(want, msg, self.vars)
        if why:
            raise StepFailed(why, detail="expected:\n%s\ngot:\n%s" % (
                want, raw.decode("utf-8", "replace").rstrip()))

    def step_sip_nothing(self, ua):
        """No SIP message within QUIET seconds."""
        raw = self.sip_conn(ua).recv_raw(QUIET)
        if raw is not None:
            raise StepFailed("expected nothing within %.1f s, got a SIP "
                             "message" % QUIET, detail="got:\n" + raw.decode(
                                 "utf-8", "replace").rstrip())

    # -- HTTP clients

    def http_port(self, web):
        port = self.sc.http_ports.get(web.listener)
        if not port:
            raise StepFailed("the server has no %s http listener"
                             % web.listener)
        return port

    def step_http_send(self, web, text):
        """The block as one request: its lines up to the first empty one
        joined with CRLF and ended with CRLF CRLF (the request line and
        the fields, exactly as written after ${...}), the lines after it
        joined with LF as the body (${length}: its length in bytes).  On
        the participant's connection, a new one when the server closed
        it or said Connection: close."""
        lines = text.split("\n")
        strip = [ln.strip() for ln in lines]
        if "" in strip:
            k = strip.index("")
            head, body = lines[:k], lines[k + 1:]
        else:
            head, body = lines, []
        try:
            body_bytes = self.subst("\n".join(body)).encode()
            self.body_length = len(body_bytes)
            raw = self.subst("\r\n".join(head)).encode() + b"\r\n\r\n" \
                + body_bytes
        finally:
            self.body_length = None
        method = raw.split(b" ", 1)[0].decode("latin-1")
        conn = web.conn
        if conn is not None and conn.usable():
            try:
                conn.send(raw, method)
                return
            except (BrokenPipeError, ConnectionResetError):
                pass  # closed since: a new connection, as below
        if conn is not None:
            conn.close()
        web.conn = None
        web.conn = HttpConn.connect(self.srv.host, self.http_port(web),
                                    TIMEOUT)
        web.conn.send(raw, method)

    def http_read(self, web, deadline):
        """The next answer for web.  A connection that the server closed
        before any answer, after answering earlier requests on it, is
        the race every client of persistent connections meets (RFC 9112
        §9.3.1): its requests are sent again on a new connection when
        they are idempotent (RFC 9110 §9.2.2)."""
        conn = web.conn
        msg = conn.read(deadline)
        idempotent = ("GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE")
        if msg is None and conn.answers and conn.pending and \
                all(m in idempotent for m, _ in conn.pending):
            again = conn.pending
            conn.close()
            web.conn = conn = HttpConn.connect(
                self.srv.host, self.http_port(web), TIMEOUT)
            for method, data in again:
                conn.send(data, method)
            msg = conn.read(deadline)
        return msg

    def step_http_receive(self, web, text):
        """The next answer on the participant's connection (TIMEOUT at
        most) must match the block: a head as a SIP block's (the status
        line template, "Name: template", "!Name"), then, after an empty
        line, the body if written (XML, JSON or a text template: see
        match_body).  Alternatives are separated by a line "--- or ---":
        the first that matches counts."""
        if web.conn is None:
            raise StepFailed("%s has sent no request" % web.name)
        alts = [[]]
        for ln in text.split("\n"):
            if ln.strip() == "--- or ---":
                alts.append([])
            else:
                alts[-1].append(ln)
        try:
            msg = self.http_read(web, time.monotonic() + TIMEOUT)
        except TimeoutError:
            raise StepFailed("expected an HTTP answer within %.1f s, got "
                             "none" % TIMEOUT, detail="expected:\n"
                             + self.subst(text))
        except EOFError as e:
            raise StepFailed(str(e))
        if msg is None:
            raise StepFailed("the server closed the connection without "
                             "an answer", detail="expected:\n"
                             + self.subst(text))
        failures = []
        for lines in alts:
            strip = [ln.strip() for ln in lines]
            while strip and not strip[0]:
                strip.pop(0)
                lines = lines[1:]
            k = strip.index("") if "" in strip else len(lines)
            head = [self.subst(ln) for ln in lines[:k]]
            body = self.subst("\n".join(lines[k + 1:])).strip()
            caps = {}
            why = match_head(head, msg, caps)
            exp = got = None
            if why is None and body:
                why, exp, got = match_body(body, msg.body, caps)
            if why is None:
                self.vars.update(caps)
                return
            failures.append((why, exp, got, "\n".join(head)
                             + ("\n\n" + body if body else "")))
        why, exp, got, _ = failures[0]
        if len(failures) > 1:
            why = " / ".join(f[0] for f in failures)
        raise StepFailed(why, [exp] if exp is not None else None,
                         [got] if got is not None else None, ns="",
                         detail="expected:\n%s\ngot:\n%s" % (
                             "\n--- or ---\n".join(f[3] for f in failures),
                             msg.text()))

    def step_http_nothing(self, web):
        """No answer (nor a close) within QUIET seconds: a request the
        server holds."""
        conn = web.conn
        if conn is None:
            raise StepFailed("%s has sent no request" % web.name)
        try:
            msg = conn.read(time.monotonic() + QUIET)
        except TimeoutError:
            return
        except EOFError as e:
            raise StepFailed(str(e))
        if msg is None:
            raise StepFailed("expected nothing within %.1f s, the server "
                             "closed the connection" % QUIET)
        raise StepFailed("expected nothing within %.1f s, got an answer"
                         % QUIET, detail="got:\n" + msg.text())

    def step_http_closed(self, web):
        """The server closes the connection (within TIMEOUT) with no
        answer (more)."""
        conn = web.conn
        if conn is None:
            raise StepFailed("%s has no connection" % web.name)
        try:
            msg = conn.read(time.monotonic() + TIMEOUT)
        except TimeoutError:
            raise StepFailed("the server did not close the connection "
                             "within %.1f s" % TIMEOUT)
        except EOFError as e:
            raise StepFailed(str(e))
        if msg is not None:
            raise StepFailed("expected the connection to close, got an "
                             "answer", detail="got:\n" + msg.text())
        conn.close()
        web.conn = None

    def step_http_disconnect(self, web):
        if web.conn is not None:
            web.conn.close()
            web.conn = None

    def step_restart(self, _):
        """SIGTERM by pid, then the same binary, ports, configuration
        and data again; every participant is disconnected."""
        for c in self.sc.participants():
            if c.conn is not None:
                c.conn.close()
                c.conn = None
        rc = self.srv.kill(signal.SIGTERM)
        if rc not in (0, -signal.SIGTERM):
            raise StepFailed("parleyd exited with status %s on SIGTERM" % rc)
        if not self.srv.start():
            raise StepFailed("parleyd did not start again")

    def step_ctl(self, _, args):
        argv = shlex.split(self.subst(args))
        rc, out = self.srv.ctl(*argv)
        self.vars["output"] = (out or "").strip()
        if rc != 0:
            raise StepFailed("parleyctl %s exited with %s: %s"
                             % (" ".join(argv), rc, out.strip()))

    def step_output(self, _, text):
        want = self.subst(text).strip()
        have = self.vars.get("output", "")
        if not match_value(want, have, self.vars):
            raise StepFailed("parleyctl printed:\n%s\nexpected:\n%s"
                             % (have, want))

    # -- one file

    def create_accounts(self):
        """parleyctl adduser for every client with an account, all at
        once (each run mostly waits for its commit)."""
        procs = []
        for c in self.sc.clients.values():
            if not c.account:
                continue
            argv = [self.srv.ctl_bin, "--config", self.srv.conf_path,
                    "adduser", "%s@%s" % (c.user, self.srv.domain),
                    c.password]
            procs.append((c, subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, cwd=self.srv.dir)))
        why = None
        for c, p in procs:
            try:
                out = p.communicate(timeout=30)[0]
            except subprocess.TimeoutExpired:
                p.kill()
                out = p.communicate()[0]
            if p.returncode != 0 and why is None:
                why = "parleyctl adduser %s: %s" % (
                    c.user, out.decode("utf-8", "replace").strip())
        if why:
            raise StepFailed(why)

    def run(self):
        """Returns None, or (step number, line, StepFailed)."""
        try:
            self.create_accounts()
        except StepFailed as e:
            return 0, "(creating accounts)", e
        try:
            for n, (lineno, c, verb, text, line) in enumerate(self.sc.steps,
                                                              1):
                fn = getattr(self, "step_" + verb)
                try:
                    if text:
                        fn(c, text)
                    else:
                        fn(c)
                except StepFailed as e:
                    return n, "line %d: %s" % (lineno, line), e
                except (OSError, RuntimeError, TimeoutError,
                        harness.StreamClosed) as e:
                    return n, "line %d: %s" % (lineno, line), StepFailed(
                        "%s: %s" % (type(e).__name__, e))
            return None
        finally:
            for c in self.sc.participants():
                if c.conn is not None:
                    c.conn.close()
                    c.conn = None


def failure_records(name, n, where, e):
    """The report of a failed scenario: one check, then the diff."""
    out = [("check", "scenario " + name, False,
            "step %d (%s): %s" % (n, where, e.reason))]
    if e.expected and e.got:
        diff = difflib.unified_diff(pretty_all(e.expected, e.ns),
                                    pretty_all(e.got, e.ns), "expected",
                                    "got", lineterm="", n=10000)
        out.append(("note", "diff (- expected, + got):\n"
                    + "\n".join(list(diff)[3:])))
    elif e.got:
        out.append(("note", "got:\n"
                    + "\n".join(pretty_all(e.got, e.ns))))
    if e.detail:
        out.append(("note", e.detail))
    return out


def run_file(srv, sc):
    """Runs one scenario; returns its report as records for report()
    (files run in parallel threads, reports are printed in file order)."""
    t0 = time.monotonic()
    try:
        failure = Runner(srv, sc).run()
    except ScenarioError as e:
        return [("check", "scenario " + sc.name, False, str(e))]
    took = " (%.1f s)" % (time.monotonic() - t0)
    if sc.expect_fail is None:
        if failure is None:
            return [("check", "scenario " + sc.name + took, True, "")]
        return failure_records(sc.name, *failure)
    # A scenario that must fail (a check of the runner itself).
    if failure is None:
        return [("check", "scenario " + sc.name, False,
                 "marked 'Expect: fail' but every step passed")]
    if sc.expect_fail and failure[0] != sc.expect_fail:
        return failure_records(sc.name + " (expected to fail at step %d)"
                               % sc.expect_fail, *failure)
    return [("check", "scenario %s fails as expected at step %d: %s%s"
             % (sc.name, failure[0], failure[2].reason, took), True, "")]


def report(records):
    for r in records:
        if r[0] == "check":
            harness.check(r[1], r[2], r[3])
        else:
            harness.note(r[1])


# ------------------------------------------------------- matcher checks

def self_test():
    """The matcher must accept what it should and reject what it should
    not; each case is (expected, received, should match)."""
    cases = [
        ("<iq type='result' id='a'/>", "<iq id='a' type='result'/>", True),
        ("<iq type='result' id='a'/>", "<iq type='error' id='a'/>", False),
        ("<iq type='result' id='a'/>", "<iq type='result' id='b'/>", False),
        ("<iq type='result' id='{any}'/>", "<iq type='result' id='x'/>",
         True),
        ("<iq type='result'/>", "<iq type='result' id='x'/>", False),
        ("<iq type='result'>...</iq>", "<iq type='result' id='x'/>", True),
        ("<iq type='result' id='a'/>", "<iq type='result'/>", False),
        ("<iq><q xmlns='a'/></iq>", "<iq><q xmlns='b'/></iq>", False),
        ("<iq><q xmlns='a'/></iq>", "<iq><q xmlns='a'/><r/></iq>", False),
        ("<iq><q xmlns='a'/>...</iq>", "<iq><r/><q xmlns='a'/></iq>", True),
        ("<iq><a/><b/></iq>", "<iq><b/><a/></iq>", True),
        ("<iq><a/><a/></iq>", "<iq><a/><b/></iq>", False),
        ("<m><body>hi</body></m>", "<m><body>\n  hi\n</body></m>", True),
        ("<m><body>hi</body></m>", "<m><body>ho</body></m>", False),
        ("<m><body/></m>", "<m><body>x</body></m>", False),
        ("<m><body>{any}</body></m>", "<m><body>x</body></m>", True),
        ("<t>{datetime}</t>", "<t>2024-02-29T12:00:00Z</t>", True),
        ("<t>{datetime}</t>", "<t>2024-02-29T12:00:00.123+01:00</t>", True),
        ("<t>{datetime}</t>", "<t>2024-02-29 12:00</t>", False),
        ("<t>{re:[+-]\\d{2}:\\d{2}|Z}</t>", "<t>+00:00</t>", True),
        ("<t>{re:[+-]\\d{2}:\\d{2}|Z}</t>", "<t>00:00</t>", False),
        ("<t a='x{any}'/>", "<t a='xyz'/>", True),
        ("<t a='x{any}'/>", "<t a='yz'/>", False),
        ("<t>{json}</t>", "<t>{json}</t>", True),
        ("<t a='{optional:x}'/>", "<t/>", True),
        ("<t a='{optional:x}'/>", "<t a='x'/>", True),
        ("<t a='{optional:x}'/>", "<t a='y'/>", False),
        ("<q><a/><scn:none><b/></scn:none>...</q>", "<q><a/><c/></q>", True),
        ("<q><a/><scn:none><b/></scn:none>...</q>", "<q><a/><b/></q>",
         False),
        ("<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-"
         "streams'/></stream:error>",
         "<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-"
         "streams'/></stream:error>", True),
    ]
    for exp, got, want in cases:
        e = ET.fromstring(WRAP_OPEN + exp + WRAP_CLOSE)[0]
        g = ET.fromstring(WRAP_OPEN + got + WRAP_CLOSE)[0]
        why = match(e, g, {})
        harness.check("matcher: %s %s %s" % (
            exp, "matches" if want else "rejects",
            got.replace("\n", "\\n")),
            (why is None) == want, why or "it matched")
    # A component's block is in jabber:component:accept: it matches what
    # arrives on a component stream, not a jabber:client stanza.
    comp = wrap_open(NS_COMPONENT)
    e = ET.fromstring(comp + "<message><body>x</body></message>"
                      + WRAP_CLOSE)[0]
    for ns, want in ((NS_COMPONENT, True), (NS_CLIENT, False)):
        g = ET.fromstring(wrap_open(ns) + "<message><body>x</body>"
                          "</message>" + WRAP_CLOSE)[0]
        why = match(e, g, {})
        harness.check("matcher: a component's <message><body/> %s one "
                      "in %s" % ("matches" if want else "rejects", ns),
                      (why is None) == want, why or "it matched")
    caps = {}
    e = ET.fromstring(WRAP_OPEN + "<r id='{capture:rid}'/>" + WRAP_CLOSE)[0]
    g = ET.fromstring(WRAP_OPEN + "<r id='abc'/>" + WRAP_CLOSE)[0]
    match(e, g, caps)
    harness.check("matcher: {capture:rid} remembers the value",
                  caps.get("rid") == "abc", caps)
    # Two stanzas in either order; a count mismatch is a failure.
    a = ET.fromstring(WRAP_OPEN + "<a/><b/>" + WRAP_CLOSE)
    b = ET.fromstring(WRAP_OPEN + "<b/><a/>" + WRAP_CLOSE)
    harness.check("matcher: a block matches stanzas in any order",
                  match_set(list(a), list(b), {}) is None)
    harness.check("matcher: a block wants exactly its number of stanzas",
                  match_set(list(a), list(b)[:1], {}) is not None)
    a = ET.fromstring(WRAP_OPEN + "<m from='x'>1</m><m from='x'>2</m>"
                      "<p from='y'/>" + WRAP_CLOSE)
    b = ET.fromstring(WRAP_OPEN + "<p from='y'/><m from='x'>1</m>"
                      "<m from='x'>2</m>" + WRAP_CLOSE)
    c = ET.fromstring(WRAP_OPEN + "<m from='x'>2</m><p from='y'/>"
                      "<m from='x'>1</m>" + WRAP_CLOSE)
    harness.check("matcher: a block accepts senders interleaved",
                  match_set(list(a), list(b), {}) is None)
    harness.check("matcher: a block keeps one sender's order",
                  match_set(list(a), list(c), {}) is not None)
    # XEP-0198 <r/>: dropped unless the step expects one.
    sm = "<r xmlns='urn:xmpp:sm:3'/>"
    r = ET.fromstring(WRAP_OPEN + sm + WRAP_CLOSE)[0]
    m = ET.fromstring(WRAP_OPEN + "<m/>" + WRAP_CLOSE)[0]
    skip = unasked_ack_request([m])
    harness.check("runner: an ack request a step does not expect is "
                  "dropped", skip is not None and skip(r) and not skip(m))
    harness.check("runner: an ack request a step expects is kept",
                  unasked_ack_request([r]) is None)
    # SIP: the start line, and the fields written (any case, compact
    # forms), nothing else.
    resp = sipua.parse(b"SIP/2.0 406 Not Acceptable\r\n"
                       b"v: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKa\r\n"
                       b"CSeq: 1 SUBSCRIBE\r\nAccept: text/plain\r\n"
                       b"Accept: application/pidf+xml\r\n"
                       b"Content-Length: 0\r\n\r\n")
    sip_cases = [
        ("SIP/2.0 406 Not Acceptable", True),
        ("SIP/2.0 406 {any}\nCSeq: 1 SUBSCRIBE", True),
        ("SIP/2.0 406 {any}\nvia: {any};branch=z9hG4bKa", True),
        ("SIP/2.0 406 {any}\nAccept: application/pidf+xml", True),
        ("SIP/2.0 {re:4\\d\\d} {any}\n!Allow", True),
        ("SIP/2.0 200 OK", False),
        ("SIP/2.0 406 {any}\nCSeq: 2 SUBSCRIBE", False),
        ("SIP/2.0 406 {any}\nCSeq: 1", False),
        ("SIP/2.0 406 {any}\nAllow: {any}", False),
        ("SIP/2.0 406 {any}\n!Accept", False),
    ]
    for block, want in sip_cases:
        why = match_sip(block, resp, {})
        harness.check("matcher: SIP block %s %s a 406" % (
            block.replace("\n", " | "),
            "matches" if want else "rejects"),
            (why is None) == want, why or "it matched")
    caps = {}
    match_sip("SIP/2.0 406 {any}\nVia: {any};branch={capture:br}", resp,
              caps)
    harness.check("matcher: a SIP {capture:br} remembers the value",
                  caps.get("br") == "z9hG4bKa", caps)
    self_test_http()
    self_test_transports()


def self_test_http():
    """HTTP answers: the head as SIP's, the body as XML, JSON or text."""
    ans = HttpMessage(b"HTTP/1.1 401 Unauthorized\r\nContent-Type: "
                      b"application/json\r\nWWW-Authenticate: Bearer "
                      b"realm=\"parley\"\r\nContent-Length: 2",
                      b'{"error": "not-authorized", "n": 1, "ok": false,'
                      b' "list": [{"a": "x"}, {"a": "y"}]}')
    head_cases = [
        ("HTTP/1.1 401 {any}", True),
        ("HTTP/1.1 401 {any}\nwww-authenticate: Bearer{any}", True),
        ("HTTP/1.1 401 {any}\n!Set-Cookie", True),
        ("HTTP/1.1 200 {any}", False),
        ("HTTP/1.1 401 {any}\nWWW-Authenticate: Basic{any}", False),
        ("HTTP/1.1 401 {any}\n!Content-Type", False),
    ]
    for block, want in head_cases:
        why = match_head(block.split("\n"), ans, {})
        harness.check("matcher: HTTP head %s %s a 401" % (
            block.replace("\n", " | "), "matches" if want else "rejects"),
            (why is None) == want, why or "it matched")
    body_cases = [
        ('{"error": "not-authorized", "...": ""}', True),
        ('{"error": "{any}", "n": 1, "ok": false, "list": ["..."]}', True),
        ('{"error": "not-authorized", "n": 1.0, "ok": false,'
         ' "list": [{"a": "y"}, {"a": "x"}]}', True),
        ('{"error": "not-authorized"}', False),
        ('{"error": "x", "...": ""}', False),
        ('{"n": true, "...": ""}', False),
        ('{"ok": 0, "...": ""}', False),
        ('{"list": [{"a": "x"}], "...": ""}', False),
        ('{"list": [{"a": "z"}, "..."], "...": ""}', False),
        ('{"list": [{"a": "{any}"}, {"a": "x"}], "...": ""}', True),
        ('{any}"not-authorized"{any}', True),
        ('{any}"forbidden"{any}', False),
        ("<error/>", False),
    ]
    for tmpl, want in body_cases:
        why = match_body(tmpl, ans.body, {})[0]
        harness.check("matcher: HTTP body %s %s" % (
            tmpl, "matches" if want else "is rejected"),
            (why is None) == want, why or "it matched")
    xml_body = b"<?xml version='1.0'?><XRD xmlns='urn:x'><Link rel='a'/></XRD>"
    for tmpl, want in (("<XRD xmlns='urn:x'><Link rel='a'/></XRD>", True),
                       ("<XRD xmlns='urn:x'><Link rel='b'/></XRD>", False),
                       ("<XRD><Link rel='a'/></XRD>", False),
                       ("<XRD xmlns='urn:x'>...</XRD>", True)):
        why = match_body(tmpl, xml_body, {})[0]
        harness.check("matcher: HTTP XML body %s %s" % (
            tmpl, "matches" if want else "is rejected"),
            (why is None) == want, why or "it matched")
    caps = {}
    match_body('{"list": [{"a": "{capture:first}"}, "..."], "...": ""}',
               ans.body, caps)
    harness.check("matcher: a JSON {capture:first} remembers a value",
                  caps.get("first") in ("x", "y"), caps)
    # Answers in a row on one connection: a length, chunks, a HEAD's,
    # an interim 100, then one ended by the connection's close.
    a, b = socket.socketpair()
    conn = HttpConn(b, 2)
    for method in ("GET", "GET", "HEAD", "PUT", "GET"):
        conn.pending.append((method, b""))
    a.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"
              b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
              b"2\r\nde\r\n1;x=y\r\nf\r\n0\r\nT: 1\r\n\r\n"
              b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n"
              b"HTTP/1.1 100 Continue\r\n\r\n"
              b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"
              b"HTTP/1.0 200 OK\r\n\r\nto the end")
    a.close()
    deadline = time.monotonic() + 2
    got = []
    while True:
        m = conn.read(deadline)
        if m is None:
            break
        got.append((m.status, m.body))
    conn.close()
    want = [(200, b"abc"), (200, b"def"), (200, b""), (100, b""),
            (201, b""), (200, b"to the end")]
    harness.check("runner: HTTP answers read one by one", got == want, got)


def self_test_transports():
    """What the WebSocket and BOSH transports add to a block."""
    got = standalone("<message to='a'><body>x</body></message>\n"
                     "<iq xmlns='jabber:client' id='1'/>"
                     "<stream:error><x/></stream:error>", NS_CLIENT)
    want = ["<message xmlns='jabber:client' to='a'><body>x</body>"
            "</message>", "<iq xmlns='jabber:client' id='1'/>",
            "<stream:error xmlns='jabber:client' xmlns:stream='%s'><x/>"
            "</stream:error>" % NS_STREAM]
    harness.check("transport: a block is framed as standalone elements",
                  got == want, got)
    for text in ("<a/>stray<b/>", "<a><b></a>"):
        try:
            standalone(text, NS_CLIENT)
            why = "it was framed"
        except StepFailed as e:
            why = None if e.reason else "no reason"
        harness.check("transport: '%s' cannot be framed" % text, why is None,
                      why)

    class Fake:
        queue, header, parse_error, stream_ended = [], None, None, False
    fake = Fake()
    ws_common.WsClient._message(fake, b"<a xmlns='jabber:client'/><b/>")
    harness.check("transport: a WebSocket message of two elements does "
                  "not parse", fake.parse_error is not None and
                  not fake.queue, fake.parse_error)
    text, kw = server_settings("a: { b = 1; };\nlimits: { handshake_timeout"
                               " = 2; read_rate = 9; };\nc2s: {\n"
                               "  require_encryption = false; };")
    harness.check("runner: [Server] limits and c2s go to the harness's",
                  text.strip() == "a: { b = 1; };" and kw == {
                      "handshake_timeout": 2, "limits_extra": "read_rate = 9;",
                      "require_encryption": False}, (text, kw))


# ------------------------------------------------------------------ main

def main(argv):
    self_test()
    if "--self-test" in argv:
        sys.exit(1 if harness.failed() else 0)
    names = [a for a in argv if not a.startswith("-")]
    if names:
        paths = []
        for n in names:
            p = n if n.endswith(".scn") else os.path.join(HERE, n + ".scn")
            if not os.path.exists(p):
                harness.check("scenario " + n, False, "no file %s" % p)
                continue
            paths.append(p)
    else:
        paths = sorted(glob.glob(os.path.join(HERE, "*.scn")))
    scenarios = []
    for p in paths:
        try:
            scenarios.append(parse(p))
        except (ScenarioError, OSError) as e:
            harness.check("scenario " + os.path.basename(p), False, e)
    # One server per distinct pair of [Server] and [Host] blocks, in
    # order of first use; a file that restarts the server gets one of
    # its own.
    groups = {}
    for sc in scenarios:
        key = (sc.server, sc.host)
        if any(step[2] == "restart" for step in sc.steps):
            key = (sc.server, sc.host, sc.name)
        groups.setdefault(key, []).append(sc)
    jobs = []
    servers = []
    for key, group in groups.items():
        label = "scenarios" if key == ("", "") else \
            "scenarios:" + group[0].name
        try:
            extra, kw = server_settings(group[0].server)
        except ScenarioError as e:
            for sc in group:
                harness.check("scenario " + sc.name, False, e)
            continue
        srv = harness.Server(label=label, extra=extra,
                             register_extra="per_ip_per_minute = 1000;",
                             **kw)
        servers.append(srv)
        # The components of all its files go into its first host, with
        # one component listener; each file's ${id} is chosen now.
        owner, ready = {}, []
        for sc in group:
            try:
                resolve_components(sc, srv.domain)
                for c in sc.components.values():
                    if c.link:
                        continue
                    if c.domain in owner:
                        raise ScenarioError(
                            "component domain %s is also %s's; put ${id} "
                            "in it" % (c.domain, owner[c.domain]))
                    owner[c.domain] = sc.name
                ready.append(sc)
            except ScenarioError as e:
                harness.check("scenario " + sc.name, False, e)
        group = ready
        if not group:
            continue
        srv.host_extra = group[0].host + "\n" + components_config(group)
        # A listener for the participants that need one, on a free
        # loopback port: components (XEP-0114, plain TCP), SIP UAs (UDP),
        # WebSocket and BOSH clients and HTTP clients (plain HTTP: one
        # declared secure, as behind a TLS-terminating proxy, so that
        # SASL is offered there; one not, for [Http] listener: plain).
        http = set().union(*[sc.http_needs() for sc in group])
        listeners = []
        for needed, attr, entry in (
                (bool(owner), "component_port",
                 'protocol = "component"; tls = "none";'),
                (any(sc.sip_uas for sc in group), "sip_port",
                 'protocol = "sip"; transport = "udp";'),
                ("secure" in http, "secure",
                 'protocol = "http"; secure = true;'),
                ("plain" in http, "plain", 'protocol = "http";')):
            if not needed:
                continue
            port, = harness.free_ports(1)
            listeners.append('{ %s address = "127.0.0.1"; port = %d; }'
                             % (entry, port))
            for sc in group:
                if attr in ("secure", "plain"):
                    sc.http_ports[attr] = port
                else:
                    setattr(sc, attr, port)
        srv.listeners_extra = ",\n  ".join(listeners)
        if not srv.start():
            for sc in group:
                harness.check("scenario " + sc.name, False,
                              "the server did not start")
            continue
        jobs += [(srv, sc) for sc in group]
    # Files are isolated by their accounts and ${id}: they run side by
    # side (most of their time is waiting), reports in file order.
    jobs.sort(key=lambda j: j[1].name)
    with concurrent.futures.ThreadPoolExecutor(JOBS) as pool:
        futures = [pool.submit(run_file, srv, sc) for srv, sc in jobs]
        for f in futures:
            report(f.result())
    for srv in servers:
        srv.stop()
    harness.finish()


if __name__ == "__main__":
    main(sys.argv[1:])
