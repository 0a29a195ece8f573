# shoal — build, set-up and test. `make test` and `make demo` work on a fresh Debian 12 (root).
#
# Layout rules (no per-file lists to keep in sync):
#   proto/*.proto                -> build/gen/*.pb-c.[ch] (protoc-c, never committed)
#   lib/*.c + generated code      -> build/libshoal.a
#   services/<svc>/*.c           -> bin/shoal-<svc>
#   tools/<tool>/*.c             -> bin/<tool>
#   tests/unit/<svc>_*.c         -> build/tests/unit/<svc>_* (cmocka), linked with the service's
#                                   modules (every .c of services/<svc>/ but main.c); <svc> = lib
#                                   links libshoal only
#   tests/fuzz/fuzz_<svc>_*.c    -> build/tests/fuzz/... with tests/fuzz/driver.c
#   tests/sim/*.c                -> build/tests/sim/shoal-sim (the deterministic Raft simulator),
#                                   linked with the store's modules
SHELL := /bin/bash
CC ?= gcc
BUILD ?= build
BIN ?= bin
PKGS := libczmq libzmq libprotobuf-c rocksdb libcurl libsystemd jansson openssl
CFLAGS_BASE := -std=gnu11 -O2 -g -Wall -Wextra -Werror -Wno-unused-parameter \
	-Wno-missing-field-initializers -Wno-format-truncation -fno-strict-aliasing -D_GNU_SOURCE
SAN ?=
ifeq ($(SAN),1)
CFLAGS_BASE += -O1 -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=address,undefined
endif
CFLAGS += $(CFLAGS_BASE) -I$(BUILD)/gen -Ilib -I.
LDLIBS := -lczmq -lzmq -lprotobuf-c -lrocksdb -lcurl -lsystemd -ljansson -lcrypto -lpthread -lm

PROTOS := $(wildcard proto/*.proto)
GEN_C := $(patsubst proto/%.proto,$(BUILD)/gen/%.pb-c.c,$(PROTOS))
GEN_H := $(GEN_C:.c=.h)
LIB_SRC := $(wildcard lib/*.c)
LIB_OBJ := $(patsubst %.c,$(BUILD)/obj/%.o,$(LIB_SRC)) $(patsubst %.c,%.o,$(GEN_C))
SERVICES := $(notdir $(wildcard services/*))
TOOLS := $(notdir $(wildcard tools/*))
SERVICE_BINS := $(foreach s,$(SERVICES),$(if $(wildcard services/$(s)/main.c),$(BIN)/shoal-$(s)))
TOOL_BINS := $(foreach t,$(TOOLS),$(if $(wildcard tools/$(t)/*.c),$(BIN)/$(t)))
UNIT_SRC := $(wildcard tests/unit/*_*.c)
UNIT_BINS := $(patsubst tests/unit/%.c,$(BUILD)/tests/unit/%,$(UNIT_SRC))
SIM_SRC := $(wildcard tests/sim/*.c)
SIM_BIN := $(if $(SIM_SRC),$(BUILD)/tests/sim/shoal-sim)
FUZZ_SRC := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BINS := $(patsubst tests/fuzz/%.c,$(BUILD)/tests/fuzz/%,$(FUZZ_SRC))

svc_objs = $(patsubst %.c,$(BUILD)/obj/%.o,$(filter-out services/$(1)/main.c,$(wildcard services/$(1)/*.c)))
tool_objs = $(patsubst %.c,$(BUILD)/obj/%.o,$(wildcard tools/$(1)/*.c))

.PHONY: all deps test unit demo bench asan fmt clean fuzz sim chaos
.SECONDARY:

all: $(SERVICE_BINS) $(TOOL_BINS) $(UNIT_BINS) $(FUZZ_BINS) $(SIM_BIN)

deps:
	@bash tests/lib/deps.sh

$(BUILD)/gen/%.pb-c.c $(BUILD)/gen/%.pb-c.h: proto/%.proto
	@mkdir -p $(BUILD)/gen
	protoc-c --proto_path=proto --c_out=$(BUILD)/gen $<

$(BUILD)/gen/%.pb-c.o: $(BUILD)/gen/%.pb-c.c $(GEN_H)
	$(CC) $(CFLAGS) -Wno-error -c $< -o $@

$(BUILD)/obj/%.o: %.c $(GEN_H) $(wildcard lib/*.h) Makefile
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/libshoal.a: $(LIB_OBJ)
	rm -f $@ && ar rcs $@ $^

.SECONDEXPANSION:
$(BIN)/shoal-%: $(BUILD)/obj/services/%/main.o $$(call svc_objs,%) $(BUILD)/libshoal.a
	@mkdir -p $(BIN)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(TOOL_BINS): $(BIN)/%: $$(call tool_objs,%) $(BUILD)/libshoal.a
	@mkdir -p $(BIN)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/unit/%: $(BUILD)/obj/tests/unit/%.o $$(call svc_objs,$$(firstword $$(subst _, ,%))) $(BUILD)/libshoal.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) -lcmocka

$(BUILD)/tests/fuzz/fuzz_%: $(BUILD)/obj/tests/fuzz/fuzz_%.o $(BUILD)/obj/tests/fuzz/driver.o $$(call svc_objs,$$(firstword $$(subst _, ,%))) $(BUILD)/libshoal.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/sim/shoal-sim: $(patsubst %.c,$(BUILD)/obj/%.o,$(SIM_SRC)) $(call svc_objs,store) $(BUILD)/libshoal.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# deps first so a fresh machine has compilers' libraries and a running dockerd; then build; then
# every suite. tests/run.sh prints the closing "N passed, N failed, N skipped" line.
test: deps
	$(MAKE) all
	bash tests/run.sh

unit: all
	bash tests/run.sh unit

asan: deps
	$(MAKE) BUILD=build-asan BIN=bin-asan SAN=1 all
	BUILD=build-asan BIN=bin-asan bash tests/run.sh unit fuzz

demo: deps
	$(MAKE) all
	bash tests/lib/demo.sh

bench: deps
	$(MAKE) all
	bash bench/run.sh

SEEDS ?= 100000
sim: all
	SIM_SEEDS=$(SEEDS) bash tests/run.sh sim

fmt:
	clang-format -i --style=file:$(firstword $(wildcard ../shared/.clang-format .clang-format)) \
		$$(git ls-files '*.c' '*.h')

clean:
	rm -rf build build-asan bin bin-asan

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
