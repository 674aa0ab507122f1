#!/usr/bin/python3
"""certs.py - test certificates made with the openssl command, for the
federation tests (test_s2s.py, test_cluster_s2s.py): an EC P-256 CA and
server certificates it signs, both for two days.

  make_ca(dir, name)          (key path, certificate path) of a new CA
  make_cert(dir, ca, domain)  (certificate path, key path) for domain and
                              *.domain, serverAuth and clientAuth, key
                              readable by a peer server running as
                              another user
"""

import os
import subprocess


def _run(*argv):
    return subprocess.run(argv, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          timeout=60)


def make_ca(dir, name):
    key = os.path.join(dir, name + ".key")
    crt = os.path.join(dir, name + ".crt")
    _run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
         "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", crt,
         "-days", "2", "-subj", "/CN=%s" % name,
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    return key, crt


def make_cert(dir, ca, domain):
    ca_key, ca_crt = ca
    key = os.path.join(dir, domain + ".key")
    csr = os.path.join(dir, domain + ".csr")
    crt = os.path.join(dir, domain + ".crt")
    ext = os.path.join(dir, domain + ".ext")
    with open(ext, "w") as f:
        f.write("subjectAltName=DNS:%s,DNS:*.%s\n"
                "basicConstraints=critical,CA:FALSE\n"
                "keyUsage=critical,digitalSignature\n"
                "extendedKeyUsage=serverAuth,clientAuth\n" % (domain, domain))
    _run("openssl", "req", "-newkey", "ec", "-pkeyopt",
         "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", csr,
         "-subj", "/CN=%s" % domain)
    _run("openssl", "x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey",
         ca_key, "-CAcreateserial", "-out", crt, "-days", "2", "-extfile",
         ext)
    os.chmod(key, 0o644)  # ejabberd/prosody may run as another user
    return crt, key
