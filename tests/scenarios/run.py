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
connects each client over STARTTLS with SASL SCRAM and resource binding
and each component with the XEP-0114 handshake, sends the XML as
written, and compares what arrives as XML trees (a [SipUA] sends SIP
requests as written over UDP, to a sip listener the runner adds, and
matches the start line and fields of what comes back; see
SipParticipant): namespaces and names,
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
components, SIP_STEPS for SIP UAs) and a method Runner.step_<x> (steps
without a client are parsed in parse()); a new wildcard is a branch in
template_regex(); a matcher change gets a case in self_test().
"""

import base64
import concurrent.futures
import difflib
import glob
import hashlib
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "interop"))
import harness  # noqa: E402
import sipua  # noqa: E402

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
    lines = [ln.strip() for ln in text.split("\n") if ln.strip()]
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
        self.conn = None
        self.jid = None
        self.features = None

    def setting(self, k, v):
        if k in ("user", "password", "resource"):
            setattr(self, k, v)
        elif k == "account" and v in ("yes", "none"):
            self.account = v == "yes"
        else:
            return False
        return True


class Component(Participant):
    """An external component (XEP-0114): a domain and its secret."""
    ns = NS_COMPONENT
    SETTINGS = ("domain", "secret")

    def __init__(self, name):
        self.name = name
        self.domain = None
        self.secret = None
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


# The participants' blocks above the ----- line: [Kind] NAME, its class,
# the Scenario table it goes in, and what its settings are called.
KINDS = {
    "Client": (Client, "clients", "client"),
    "Component": (Component, "components", "component"),
    "SipUA": (SipParticipant, "sip_uas", "SIP UA"),
}


class Scenario:
    def __init__(self, path):
        self.path = path
        self.name = os.path.splitext(os.path.basename(path))[0]
        self.title = ""
        self.expect_fail = None   # step number it must fail at, or 0
        self.clients = {}
        self.components = {}
        self.sip_uas = {}
        self.server = ""          # raw configuration text
        self.host = ""            # raw settings for the first host
        self.steps = []           # (line, participant, verb, block text)
        self.uid = None           # ${id}, given by main()
        self.component_port = None  # the server's component listener
        self.sip_port = None        # its sip listener (UDP), for SIP UAs

    def participants(self):
        return list(self.clients.values()) + \
            list(self.components.values()) + list(self.sip_uas.values())

    def taken(self, name):
        return name in self.clients or name in self.components or \
            name in self.sip_uas


STEPS = [
    (r"connects", "connect"),
    (r"opens a stream", "open"),
    (r"logs in", "login"),
    (r"sends:", "send"),
    (r"receives:", "receive"),
    (r"receives nothing", "nothing"),
    (r"has stream features:", "features"),
    (r"is disconnected", "closed"),
    (r"disconnects", "disconnect"),
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
                                "NAME, [SipUA] NAME, [Server], [Host] or "
                                "-----"
                                % (path, i))
        m = re.match(r"Run parleyctl\s+(.+)$", line)
        if m:
            sc.steps.append((i, None, "ctl", m.group(1), line))
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
            who = sc.clients.get(m.group(1)) or \
                sc.components.get(m.group(1)) or sc.sip_uas.get(m.group(1))
        if who is not None:
            table = COMPONENT_STEPS if isinstance(who, Component) else \
                SIP_STEPS if isinstance(who, SipParticipant) else STEPS
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

class Conn(harness.RawClient):
    """harness.RawClient plus what a scenario needs."""

    def wait_count(self, n, timeout):
        """Waits (bounded) until n stanzas are queued; returns them all
        popped, or raises StepFailed with what did arrive."""
        deadline = time.monotonic() + timeout
        why = "timed out after %.1f s" % timeout
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
        if len(self.queue) < n:
            got = self.queue[:]
            self.queue.clear()
            raise StepFailed("expected %d stanza(s), got %d (%s)"
                             % (n, len(got), why), got=got)
        got, self.queue[:] = self.queue[:n], self.queue[n:]
        return got


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
        c.domain = subst_plain(c.domain or "%s-${id}.${domain}"
                               % c.name.lower(), variables).lower()
        c.secret = subst_plain(c.secret or "secret-${id}-%s"
                               % c.name.lower(), variables)


def libconfig_string(s):
    return '"%s"' % s.replace("\\", "\\\\").replace('"', '\\"')


def components_config(scenarios):
    """The components setting for every component of these files."""
    entries = ["{ domain = %s; secret = %s; }" % (
        libconfig_string(c.domain), libconfig_string(c.secret))
        for sc in scenarios for c in sc.components.values()]
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
        if c.conn is not None:
            c.conn.close()
        c.jid = None
        c.conn = Conn(self.srv.host, self.srv.starttls_port,
                      self.srv.domain, timeout=TIMEOUT)
        c.features = c.conn.connect_tls()

    def step_login(self, c):
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
        conn.send("<iq type='set' id='scn-bind'><bind xmlns='%s'><resource>"
                  "%s</resource></bind></iq>" % (NS_BIND, c.resource))
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
        self.conn_of(c).send(self.subst(text))

    def step_receive(self, c, text):
        exps = self.parse_block(text, c.ns)
        try:
            got = self.conn_of(c).wait_count(len(exps), TIMEOUT)
        except StepFailed as e:
            e.ns = c.ns
            raise
        why = match_set(exps, got, self.vars)
        if why:
            raise StepFailed(why, exps, got, ns=c.ns)

    def step_nothing(self, c):
        conn = self.conn_of(c)
        deadline = time.monotonic() + QUIET
        try:
            while not conn.queue and not conn.closed:
                conn._recv_some(deadline)
        except (TimeoutError, harness.StreamClosed, OSError):
            pass
        if conn.queue:
            got = conn.queue[:]
            conn.queue.clear()
            raise StepFailed("expected nothing within %.1f s, got %d "
                             "stanza(s)" % (QUIET, len(got)), got=got,
                             ns=c.ns)

    def step_features(self, c, text):
        exps = self.parse_block(text)
        if c.features is None:
            raise StepFailed("%s has no stream features yet" % c.name)
        why = match_set(exps, [c.features], self.vars)
        if why:
            raise StepFailed(why, exps, [c.features])

    def step_closed(self, c):
        conn = self.conn_of(c)
        if conn.queue:
            got = conn.queue[:]
            conn.queue.clear()
            raise StepFailed("expected the stream to end, got %d stanza(s) "
                             "first" % len(got), got=got, ns=c.ns)
        if not (conn.closed or conn.stream_ended) and \
                not conn.read_until_closed(TIMEOUT):
            raise StepFailed("the server did not close the stream within "
                             "%.1f s" % TIMEOUT)
        conn.close()
        c.conn = None  # c.jid stays: ${X.full} after logout

    def step_disconnect(self, c):
        conn = self.conn_of(c)
        try:
            conn.send("</stream:stream>")
            conn.read_until_closed(2)
        except OSError:
            pass
        conn.close()
        c.conn = None  # c.jid stays: ${X.full} after logout

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
        srv = harness.Server(label=label, extra=group[0].server,
                             register_extra="per_ip_per_minute = 1000;")
        servers.append(srv)
        # The components of all its files go into its first host, with
        # one component listener; each file's ${id} is chosen now.
        owner, ready = {}, []
        for sc in group:
            try:
                resolve_components(sc, srv.domain)
                for c in sc.components.values():
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
        # loopback port: components (XEP-0114, plain TCP), SIP UAs (UDP).
        listeners = []
        for needed, attr, entry in (
                (bool(owner), "component_port",
                 'protocol = "component"; tls = "none";'),
                (any(sc.sip_uas for sc in group), "sip_port",
                 'protocol = "sip"; transport = "udp";')):
            if not needed:
                continue
            port, = harness.free_ports(1)
            listeners.append('{ %s address = "127.0.0.1"; port = %d; }'
                             % (entry, port))
            for sc in group:
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
