# Parley - GNU make build.  See README.md for the commands.
#   make                 build build/parleyd, build/parleyctl
#   make run             bootstrap, build, run parleyd on etc/parleyd.conf
#   make test            bootstrap test needs, build, run every test
#   make SAN=address,undefined   sanitizer build (in build/san)
#   make CC=clang        any C11 compiler

CC ?= gcc
SAN ?=
ifeq ($(SAN),)
BUILD ?= build
else
BUILD ?= build/san
endif

PKGS := expat openssl sqlite3 libconfig libidn2
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS := $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lunistring

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

CORE_SRC := $(sort $(wildcard src/core/*.c))
MOD_SRC := $(sort $(wildcard src/modules/*.c))
CORE_OBJ := $(CORE_SRC:%.c=$(BUILD)/%.o)
MOD_OBJ := $(MOD_SRC:%.c=$(BUILD)/%.o)
UNIT_SRC := $(sort $(wildcard tests/unit/*.c))
UNIT_OBJ := $(UNIT_SRC:%.c=$(BUILD)/%.o)

all: $(BUILD)/parleyd $(BUILD)/parleyctl

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/libparley.a: $(CORE_OBJ) $(MOD_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/parleyd: $(BUILD)/src/parleyd.o $(BUILD)/libparley.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/parleyctl: $(BUILD)/src/parleyctl.o $(BUILD)/libparley.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/unit-tests: $(UNIT_OBJ) $(BUILD)/libparley.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/strophe_client: tests/interop/strophe_client.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(shell pkg-config --cflags libstrophe) -o $@ $< \
	    $(LDFLAGS) $(shell pkg-config --libs libstrophe)

bootstrap:
	@scripts/bootstrap

run: bootstrap all
	$(BUILD)/parleyd --config etc/parleyd.conf

unit: $(BUILD)/unit-tests
	$(BUILD)/unit-tests

test: bootstrap
	@scripts/bootstrap --test
	@$(MAKE) --no-print-directory all $(BUILD)/unit-tests $(BUILD)/tests/strophe_client
	@scripts/run-tests

format:
	clang-format -i src/*.c src/*/*.[ch] tests/unit/*.[ch]

clean:
	rm -rf build

.PHONY: all bootstrap run unit test format clean
-include $(CORE_OBJ:.o=.d) $(MOD_OBJ:.o=.d) $(UNIT_OBJ:.o=.d)
