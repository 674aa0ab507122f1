# Parley - GNU make build.  See README.md for the commands.
#   make                 build build/parleyd, build/parleyctl, build/parley,
#                        build/parley-agent (needs scripts/bootstrap's
#                        packages: `make run` installs them)
#   make run             bootstrap, build, run parleyd on etc/parleyd.conf
#                        (the web client at http://localhost:5280/chat/)
#   make web             the web client in web/dist/ (scripts/build-web:
#                        npm ci from web/package-lock.json, then a copy)
#   make test            bootstrap test needs, build, run every test
#   make scenarios       every tests/scenarios/*.scn; scenario-NAME: one
#   make bench           bootstrap, build, compare with Prosody and ejabberd
#   make SAN=address,undefined   sanitizer build (in build/san)
#   make CC=clang        any C11 compiler
#
# pkg-config runs when a recipe first needs its answer, never while this
# file is read: `make run`, `make test` and `make bench` run scripts/bootstrap
# and then a new make for the build, so a fresh machine builds on the first
# try.  A missing pkg-config or package stops the build with pkg-config's
# message, never a link without the libraries.

CC ?= gcc
SAN ?=
ifeq ($(SAN),)
BUILD ?= build
else
BUILD ?= build/san
endif

# $(call pkg_config,--cflags|--libs,PACKAGES): pkg-config's answer; stops
# make with pkg-config's own message when it or a package is missing.
pkg_config = $(strip $(eval pkg__out := $(shell pkg-config $(1) $(2) \
    2>/dev/null))$(if $(filter 0,$(.SHELLSTATUS)),$(pkg__out),$(error \
    pkg-config $(1) $(2) failed: $(shell pkg-config --print-errors \
    --short-errors --exists $(2) 2>&1); run scripts/bootstrap)))
# VAR = $(call lazy,VAR,VALUE): VALUE expanded on VAR's first use only (VAR
# then becomes VALUE, expanded).
lazy = $(eval $(1) := $(2))$($(1))

PKGS := expat openssl sqlite3 libconfig libidn2 jansson libcares libosip2 \
        libpq
PKG_CFLAGS = $(call lazy,PKG_CFLAGS,$(call pkg_config,--cflags,$(PKGS)))
# libunistring ships no .pc file.  hiredis only links: its .pc file adds
# -I/usr/include/hiredis, whose alloc.h and read.h would shadow ours; we
# include <hiredis/...>.
PKG_LIBS = $(call lazy,PKG_LIBS,$(call pkg_config,--libs,$(PKGS) hiredis) \
           -lunistring)

OPT ?= -O2
CFLAGS ?= $(OPT) -g
CFLAGS += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow \
          -Wno-unused-parameter -fno-strict-aliasing -pthread \
          -Isrc/core -Isrc $(PKG_CFLAGS)
LDFLAGS += -pthread
LDLIBS += $(PKG_LIBS)
ifneq ($(SAN),)
CFLAGS += -fsanitize=$(SAN) -fno-omit-frame-pointer -fno-sanitize-recover=all
LDFLAGS += -fsanitize=$(SAN)
endif

# The folders whose .c files make up build/libparley.a, which parleyd,
# parleyctl, the unit tests and the fuzz targets link: every folder of src/
# (the core, each front end: src/xmpp/, later src/sip/ ...) and of
# src/modules/, except those of programs of their own (PROGRAM_DIRS).  A new
# front end's folder needs no line here.
PROGRAM_DIRS := src/clients/ src/gateway/
LIB_DIRS := $(filter-out $(PROGRAM_DIRS),$(wildcard src/*/)) \
            $(wildcard src/modules/*/)
LIB_SRC := $(sort $(wildcard $(addsuffix /*.c,$(patsubst %/,%,$(LIB_DIRS)))))
LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/%.o)
# The unit tests, with tests/support/ (what they share with the fuzz
# targets: inproc.c, a server inside the test process).
UNIT_SRC := $(sort $(wildcard tests/unit/*.c tests/support/*.c))
UNIT_OBJ := $(UNIT_SRC:%.c=$(BUILD)/%.o)

all: $(BUILD)/parleyd $(BUILD)/parleyctl

# V=1 shows the full command lines.
ifeq ($(V),1)
Q :=
else
Q := @
endif

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC  $@")
	$(Q)$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/libparley.a: $(LIB_OBJ)
	@rm -f $@
	$(Q)ar rcs $@ $^

$(BUILD)/parleyd: $(BUILD)/src/parleyd.o $(BUILD)/libparley.a
	@$(if $(Q),echo "  LD  $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/parleyctl: $(BUILD)/src/parleyctl.o $(BUILD)/libgateway.a \
    $(BUILD)/libparley.a
	@$(if $(Q),echo "  LD  $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/unit-tests: $(UNIT_OBJ) $(BUILD)/libgateway.a $(BUILD)/libparley.a
	@$(if $(Q),echo "  LD  $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) $(GATEWAY_LIBS)

$(BUILD)/tests/strophe_client: tests/interop/strophe_client.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(call pkg_config,--cflags,libstrophe) -o $@ $< \
	    $(LDFLAGS) $(call pkg_config,--libs,libstrophe)

bootstrap:
	@scripts/bootstrap

# run, test and bench install what is missing, then build in a new make,
# which reads this file (and asks pkg-config) once the packages are there.
run:
	@scripts/bootstrap
	@scripts/build-web || echo "make run: no web client (above); parleyd runs without /chat/"
	@$(MAKE) --no-print-directory all
	$(BUILD)/parleyd --config etc/parleyd.conf

unit: $(BUILD)/unit-tests
	$(BUILD)/unit-tests

web:
	@scripts/build-web

test:
	@scripts/bootstrap --test
	@scripts/build-web || echo "make test: no web client (above); test_webclient says why"
	@$(MAKE) -j2 --no-print-directory all $(BUILD)/unit-tests \
	    $(BUILD)/tests/strophe_client $(BUILD)/tests/gw_smtp_probe \
	    $(BUILD)/bench/parley-load \
	    $(BUILD)/bench/sip-load
	@$(MAKE) -j2 --no-print-directory SAN=address,undefined all build/san/unit-tests
	@# the ground rules say gcc and clang: clang builds everything too
	@$(MAKE) -j2 --no-print-directory CC=clang BUILD=build/clang all \
	    build/clang/unit-tests
	@$(MAKE) -j2 --no-print-directory fuzz-build
	@scripts/run-tests

# Scenario tests as data (tests/scenarios/README.md).
scenarios: all
	/usr/bin/python3 tests/scenarios/run.py

scenario-%: all
	/usr/bin/python3 tests/scenarios/run.py $*

format:
	clang-format -i $$(git ls-files "*.c" "*.h" | grep -v "^tests/fuzz/corpus/")

clean:
	rm -rf build

.PHONY: all bootstrap run web unit test scenarios format clean
-include $(LIB_OBJ:.o=.d) $(UNIT_OBJ:.o=.d) \
    $(BUILD)/src/parleyd.d $(BUILD)/src/parleyctl.d

# ---- Clients (src/clients/, on libstrophe and jansson; libcurl and expat
# for media downloads): build/parley, the command-line client, and
# build/parley-agent, the device daemon.
CLIENT_PKGS := libstrophe jansson openssl libcurl expat
CLIENT_CFLAGS = $(call lazy,CLIENT_CFLAGS,$(call \
    pkg_config,--cflags,$(CLIENT_PKGS)))
CLIENT_LIBS = $(call lazy,CLIENT_LIBS,$(call pkg_config,--libs,$(CLIENT_PKGS)))
# src/media/'s piece hashing, peer tokens (media.h) and the peer's HTTP
# server (peer.h), on libc and libcrypto only: a peer serves its files and
# checks its downloaders' tokens with them; and the download engine
# (fetch.h: Metalink parsing, the cache, pl_fetch_run) on libcurl and
# expat.  These objects are also in libparley.a (parleyd links none of the
# engine's), which is why fetch.o gets libcurl's flags there.
CLIENT_COMMON := $(BUILD)/src/clients/client.o $(BUILD)/src/media/pieces.o \
                 $(BUILD)/src/media/token.o $(BUILD)/src/media/peer.o \
                 $(BUILD)/src/media/metalink_parse.o \
                 $(BUILD)/src/media/cache.o $(BUILD)/src/media/fetch.o
CURL_CFLAGS = $(call lazy,CURL_CFLAGS,$(call pkg_config,--cflags,libcurl))
$(BUILD)/src/media/fetch.o: CFLAGS += $(CURL_CFLAGS)
AGENT_OBJ := $(patsubst %.c,$(BUILD)/%.o,$(sort $(wildcard src/clients/agent/*.c)))
CLI_OBJ := $(patsubst %.c,$(BUILD)/%.o,$(sort $(wildcard src/clients/cli/*.c)))
$(BUILD)/src/clients/client.o $(AGENT_OBJ) $(CLI_OBJ): CFLAGS += \
    $(CLIENT_CFLAGS)

all: $(BUILD)/parley $(BUILD)/parley-agent

$(BUILD)/parley-agent: $(AGENT_OBJ) $(CLIENT_COMMON)
	@$(if $(Q),echo "  LD  $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(CLIENT_LIBS)

$(BUILD)/parley: $(CLI_OBJ) $(CLIENT_COMMON)
	@$(if $(Q),echo "  LD  $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(CLIENT_LIBS)

-include $(CLIENT_COMMON:.o=.d) $(AGENT_OBJ:.o=.d) $(CLI_OBJ:.o=.d)

# ---- parley-gateway (src/gateway/, its own process: an XEP-0114 component
# bridging IM with e-mail and SMS), on the core (libparley.a) plus GMime
# (MIME) and libcurl (SMTP and HTTP out).  Every .c of src/gateway/ and its
# subfolders but main.c goes into build/libgateway.a, which the unit tests
# link too (tests/unit/test_gw_*.c).
GATEWAY_PKGS := gmime-3.0 libcurl
GATEWAY_CFLAGS = $(call lazy,GATEWAY_CFLAGS,$(call \
    pkg_config,--cflags,$(GATEWAY_PKGS)))
GATEWAY_LIBS = $(call lazy,GATEWAY_LIBS,$(call \
    pkg_config,--libs,$(GATEWAY_PKGS)))
GATEWAY_SRC := $(sort $(wildcard src/gateway/*.c src/gateway/*/*.c))
GATEWAY_OBJ := $(GATEWAY_SRC:%.c=$(BUILD)/%.o)
GATEWAY_LIB_OBJ := $(filter-out $(BUILD)/src/gateway/main.o,$(GATEWAY_OBJ))
$(GATEWAY_OBJ) $(UNIT_OBJ): CFLAGS += $(GATEWAY_CFLAGS)

$(BUILD)/libgateway.a: $(GATEWAY_LIB_OBJ)
	@rm -f $@
	$(Q)ar rcs $@ $^

# The e-mail channel's test program (tests/interop/test_gateway_mail.py).
$(BUILD)/tests/gw_smtp_probe: $(BUILD)/tests/interop/gw_smtp_probe.o \
    $(BUILD)/libgateway.a $(BUILD)/libparley.a
	@$(if $(Q),echo "  LD  $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) $(GATEWAY_LIBS)
$(BUILD)/tests/interop/gw_smtp_probe.o: CFLAGS += $(GATEWAY_CFLAGS)
-include $(BUILD)/tests/interop/gw_smtp_probe.d

ifneq ($(wildcard src/gateway/main.c),)
all: $(BUILD)/parley-gateway
endif

$(BUILD)/parley-gateway: $(BUILD)/src/gateway/main.o $(BUILD)/libgateway.a \
    $(BUILD)/libparley.a
	@$(if $(Q),echo "  LD  $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) $(GATEWAY_LIBS)

-include $(GATEWAY_OBJ:.o=.d)

# ---- Fuzzing (libFuzzer; tests/fuzz/fuzz_<name>.c, corpora in
# tests/fuzz/corpus/<name>/).  Always clang, whatever CC says; objects in
# build/fuzz/ with -fsanitize=fuzzer-no-link,address,undefined.
#   make fuzz [FUZZ_SECONDS=60] [FUZZ_TARGETS="xml jid"]
#        runs each target that long on build/fuzz/corpus/<name>/ (a scratch
#        corpus, seeded from the repository's; new inputs land there)
#   make fuzz-merge     adds to the repository corpus the scratch inputs that
#                       reach new edges (hit counts ignored, to stay small)
#   make fuzz-regress   runs each target once over its repository corpus
# Each prints "ok fuzz_<name>" or "FAIL fuzz_<name>" (log in build/fuzz/).
FUZZ_CC := clang
FUZZ_BUILD := build/fuzz
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= xml jid scram config c2s sip pidf http socks5 web upload_slot \
    media_token peer_request metalink \
    smtp mime wsframe tls_rec
FUZZ_SAN := -fsanitize=address,undefined -fno-sanitize-recover=all \
            -fno-omit-frame-pointer
FUZZ_CFLAGS = -O1 -g -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow \
               -Wno-unused-parameter -fno-strict-aliasing -pthread \
               -Isrc/core -Isrc $(PKG_CFLAGS) $(FUZZ_SAN)
# The parsers live in the core; fuzz_c2s also needs the modules (the
# archive lets the other targets link only what they use).
FUZZ_OBJ := $(LIB_SRC:%.c=$(FUZZ_BUILD)/%.o)
FUZZ_BINS := $(FUZZ_TARGETS:%=$(FUZZ_BUILD)/fuzz_%)
FUZZ_OPTS := -timeout=10 -rss_limit_mb=2048
# The sanitizers name functions through llvm-symbolizer, and LeakSanitizer
# needs the names to apply tests/fuzz/lsan.supp: Debian's llvm-14
# (scripts/bootstrap --test; scripts/run-tests names the same path), given
# by path so that PATH does not matter.
LLVM_SYMBOLIZER ?= /usr/lib/llvm-14/bin/llvm-symbolizer
FUZZ_ENV := ASAN_SYMBOLIZER_PATH=$(LLVM_SYMBOLIZER) \
            LSAN_OPTIONS=suppressions=tests/fuzz/lsan.supp:print_suppressions=0

# Before the first fuzz object: stop, saying what to install, when clang or
# the symbolizer is missing.
fuzz-tools:
	@command -v $(FUZZ_CC) >/dev/null || { echo "fuzz: $(FUZZ_CC) not" \
	    "found; run scripts/bootstrap --test" >&2; exit 1; }
	@[ -x $(LLVM_SYMBOLIZER) ] || { echo "fuzz: $(LLVM_SYMBOLIZER) not" \
	    "found; run scripts/bootstrap --test" >&2; exit 1; }

$(FUZZ_BUILD)/%.o: %.c | fuzz-tools
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  FUZZCC  $@")
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -MMD -MP -c $< -o $@

$(FUZZ_BUILD)/libparley.a: $(FUZZ_OBJ)
	@rm -f $@
	$(Q)ar rcs $@ $^

$(FUZZ_BUILD)/fuzz_%: $(FUZZ_BUILD)/tests/fuzz/fuzz_%.o \
                      $(FUZZ_BUILD)/libparley.a
	@$(if $(Q),echo "  FUZZLD  $@")
	$(Q)$(FUZZ_CC) $(FUZZ_SAN) -fsanitize=fuzzer -pthread -o $@ \
	    $(filter-out %.a,$^) $(filter %.a,$^) $(LDLIBS)

# The targets of client streams share their server, its accounts and the
# SCRAM client (fuzz_common.c), on tests/support/inproc.c (objects are
# linked before the archive, which provides what they use).
FUZZ_COMMON_OBJ := $(FUZZ_BUILD)/tests/fuzz/fuzz_common.o \
                   $(FUZZ_BUILD)/tests/support/inproc.o
$(FUZZ_BUILD)/fuzz_c2s $(FUZZ_BUILD)/fuzz_web: $(FUZZ_COMMON_OBJ)

# The gateway's parsers (src/gateway/mail/) link its own archive and
# GMime/libcurl: build/fuzz/libgateway.a, before the core's.
FUZZ_GW_TARGETS := smtp mime
FUZZ_GW_OBJ := $(filter-out %/main.o,$(GATEWAY_SRC:%.c=$(FUZZ_BUILD)/%.o))
$(FUZZ_GW_OBJ) $(FUZZ_GW_TARGETS:%=$(FUZZ_BUILD)/tests/fuzz/fuzz_%.o): \
    FUZZ_CFLAGS += $(GATEWAY_CFLAGS)

$(FUZZ_BUILD)/libgateway.a: $(FUZZ_GW_OBJ)
	@rm -f $@
	$(Q)ar rcs $@ $^

$(FUZZ_GW_TARGETS:%=$(FUZZ_BUILD)/fuzz_%): $(FUZZ_BUILD)/fuzz_%: \
    $(FUZZ_BUILD)/tests/fuzz/fuzz_%.o $(FUZZ_BUILD)/libgateway.a \
    $(FUZZ_BUILD)/libparley.a
	@$(if $(Q),echo "  FUZZLD  $@")
	$(Q)$(FUZZ_CC) $(FUZZ_SAN) -fsanitize=fuzzer -pthread -o $@ $^ \
	    $(LDLIBS) $(GATEWAY_LIBS)

fuzz-build: fuzz-tools $(FUZZ_BINS)

fuzz: fuzz-build
	@mkdir -p $(FUZZ_BUILD)/crashes
	@rc=0; for t in $(FUZZ_TARGETS); do \
	    log=$(FUZZ_BUILD)/fuzz_$$t.log; \
	    mkdir -p $(FUZZ_BUILD)/corpus/$$t; \
	    cp -n tests/fuzz/corpus/$$t/* $(FUZZ_BUILD)/corpus/$$t/ 2>/dev/null; \
	    dict=; [ -f tests/fuzz/fuzz_$$t.dict ] && \
	        dict=-dict=tests/fuzz/fuzz_$$t.dict; \
	    if $(FUZZ_ENV) $(FUZZ_BUILD)/fuzz_$$t $(FUZZ_OPTS) $$dict \
	        -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	        -artifact_prefix=$(FUZZ_BUILD)/crashes/$$t- \
	        $(FUZZ_BUILD)/corpus/$$t >$$log 2>&1; \
	    then echo "ok fuzz_$$t $$(grep -E '^#[0-9]+' $$log | tail -1)"; \
	    else echo "FAIL fuzz_$$t (see $$log)"; tail -n 30 $$log; rc=1; fi; \
	done; exit $$rc

fuzz-merge: fuzz-build
	@rc=0; for t in $(FUZZ_TARGETS); do \
	    log=$(FUZZ_BUILD)/merge_$$t.log; \
	    if $(FUZZ_ENV) $(FUZZ_BUILD)/fuzz_$$t $(FUZZ_OPTS) -merge=1 \
	        -use_counters=0 tests/fuzz/corpus/$$t \
	        $(FUZZ_BUILD)/corpus/$$t >$$log 2>&1; \
	    then echo "ok fuzz_$$t $$(ls tests/fuzz/corpus/$$t | wc -l) files"; \
	    else echo "FAIL fuzz_$$t (see $$log)"; rc=1; fi; \
	done; exit $$rc

fuzz-regress: fuzz-build
	@rc=0; for t in $(FUZZ_TARGETS); do \
	    log=$(FUZZ_BUILD)/regress_$$t.log; \
	    if $(FUZZ_ENV) $(FUZZ_BUILD)/fuzz_$$t $(FUZZ_OPTS) \
	        tests/fuzz/corpus/$$t/* >$$log 2>&1; \
	    then echo "ok fuzz_$$t"; \
	    else echo "FAIL fuzz_$$t (see $$log)"; tail -n 30 $$log; rc=1; fi; \
	done; exit $$rc

.PHONY: fuzz fuzz-build fuzz-merge fuzz-regress fuzz-tools
.PRECIOUS: $(FUZZ_BUILD)/%.o
-include $(FUZZ_OBJ:.o=.d) $(FUZZ_COMMON_OBJ:.o=.d) \
    $(FUZZ_TARGETS:%=$(FUZZ_BUILD)/tests/fuzz/fuzz_%.d) $(FUZZ_GW_OBJ:.o=.d)

# Benchmark (issue 9): bench/parley-load, the load generator, and bench/run,
# which compares Parley with Prosody and ejabberd, and with Kamailio for
# SIP (see bench/README.md).
# bench/common.c is what both generators share (/proc, the JSON result).
$(BUILD)/bench/parley-load: bench/parley-load.c bench/common.c \
    bench/common.h src/core/version.h
	@mkdir -p $(dir $@)
	$(CC) -O2 -g -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow \
	    -Isrc $(call pkg_config,--cflags,openssl) -o $@ \
	    $(filter %.c,$^) $(call pkg_config,--libs,openssl)

# bench/tls-mem: OpenSSL's bytes per idle TLS connection, by allocation
# site, with the server's own context code (BENCH_ONLY=tlsidle runs it
# from bench/tls-idle.py).
$(BUILD)/bench/tls-mem: bench/tls-mem.c $(BUILD)/libparley.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(LDFLAGS) $(BUILD)/libparley.a $(LDLIBS)

# bench/sip-load, the SIP generator (issue 14: Parley against Kamailio).
$(BUILD)/bench/sip-load: bench/sip-load.c bench/common.c bench/common.h
	@mkdir -p $(dir $@)
	$(CC) -O2 -g -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow \
	    $(call pkg_config,--cflags,openssl) -o $@ $(filter %.c,$^) \
	    $(call pkg_config,--libs,openssl)

bench:
	@scripts/bootstrap
	@$(MAKE) --no-print-directory all $(BUILD)/bench/parley-load \
	    $(BUILD)/bench/sip-load $(BUILD)/bench/tls-mem
	@bench/run

bench-scale:
	@scripts/bootstrap
	@$(MAKE) --no-print-directory all $(BUILD)/bench/parley-load
	@bench/run --scale

# Issue 18's million sessions: parleyd nodes of one cluster (PostgreSQL,
# Redis) filled with idle sessions until the target or the memory ends,
# then chat and presence within and across nodes, a node killed
# (bench/cluster.py; BENCH_CLUSTER_* sizes).
bench-cluster:
	@scripts/bootstrap --test
	@$(MAKE) --no-print-directory all $(BUILD)/bench/parley-load
	@bench/cluster.py

# The long crash test (issue 18): SOAK_ROUNDS SIGKILLs under load per
# storage driver, lost and duplicated reported (scripts/soak).
soak:
	@scripts/bootstrap --test
	@$(MAKE) --no-print-directory all
	@scripts/soak

.PHONY: bench bench-scale bench-cluster soak
