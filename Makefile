# bankgate -- every command a user or CI needs.  `make test` and `make demo` set
# everything up on first use (from PyPI only; no root needed).  `.ci/run` adds the
# Debian packages some tests need (mosquitto, socat) and then runs `make test`.

PYTHON   ?= python3
VENV     := .venv
BIN      := $(VENV)/bin
STAMP    := $(VENV)/.bankgate-setup
UMQTT    := lib/umqtt/simple.py
BOARD    ?= devkitc-sn65hvd230-max3485
CONFIG   ?= examples/$(BOARD).json
PORT     ?=
MQTT     ?=
PYTEST_ARGS ?=
# MicroPython test files run whole on one worker (--dist loadfile); 2 workers = 2 cores
JOBS     ?= 2
# the 32-bit lane (docs/testing.md): a static 32-bit unix port beside the repository
MP32     ?= $(abspath $(dir $(abspath $(firstword $(MAKEFILE_LIST))))../shared/micropython32/micropython)
# (not on 32 bits: the bench and the frozen-heap test, which pick their binaries themselves)
LANE32_TESTS ?= tests/mp tests/host --ignore=tests/host/test_bench.py --ignore=tests/host/test_heap32.py

.PHONY: help setup test test-busy test-32 test-all test-days test-ha demo commission-demo fuzz soak longrun bench deploy config status clean flash-micropython

help:
	@echo "make test     run the whole test suite (sets up .venv first)"
	@echo "make test-32  the MicroPython-side tests again on the 32-bit port (MP32=...)"
	@echo "make test-busy  make test while load generators keep every core busy"
	@echo "make test-days  the slow ordinary-day scenarios (DAYS='pytest -k expression', default all)"
	@echo "make test-ha  every discovery config against Home Assistant's own schemas (.venv-ha)"
	@echo "make demo     firmware on the unix port + simulated bank + embedded broker"
	@echo "make commission-demo   commissioning assistant on the simulated bank + HTML report"
	@echo "make bench | fuzz | soak     measurements and long runs"
	@echo "make flash-micropython PORT=/dev/ttyUSB0 FIRMWARE=ESP32_GENERIC-....bin BOARD=...   MicroPython itself"
	@echo "make deploy PORT=/dev/ttyUSB0 BOARD=...   copy firmware to a board"
	@echo "make config PORT=/dev/ttyUSB0 [CONFIG=...]   push a validated configuration"

setup: $(STAMP) $(UMQTT)

$(STAMP): tools/requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r tools/requirements.txt
	$(BIN)/pip install --quiet --disable-pip-version-check -e .
	touch $@

$(UMQTT): tools/dev/fetch_umqtt.py | $(STAMP)
	$(BIN)/python tools/dev/fetch_umqtt.py lib

test: setup
	$(BIN)/pytest -n $(JOBS) --dist loadfile -m "not slow" $(PYTEST_ARGS)

# the suite on a loaded machine: one CPU burner per core during `make test` (tools/dev/busy.py)
test-busy: setup
	$(BIN)/python tools/dev/busy.py -- $(MAKE) test

test-32: setup
	@test -x "$(MP32)" || { echo "make test-32: no 32-bit MicroPython at $(MP32) (set MP32=/path/to/micropython)"; exit 2; }
	BANKGATE_MICROPYTHON="$(MP32)" $(BIN)/pytest -n $(JOBS) --dist loadfile -m "not slow" $(LANE32_TESTS) $(PYTEST_ARGS)

# the slow ordinary-day scenarios (tests/scenarios/day/slow, issue 15), one simulation per
# worker; DAYS narrows them by pytest -k (.ci/run passes the subset that fits CI's time)
DAYS ?= day
test-days: setup
	$(BIN)/pytest -n $(JOBS) --dist load -m slow -k "$(DAYS)" tests/host/test_day_scenarios.py $(PYTEST_ARGS)

test-all: setup
	$(BIN)/pytest -n $(JOBS) --dist loadfile $(PYTEST_ARGS)

# Home Assistant's own MQTT discovery schemas and sensor rules (tests/ha, docs/mqtt.md), in a
# venv of its own: homeassistant pins its dependencies through the package_constraints.txt it
# ships (without it pip backtracks for an hour), so it is installed alone first, then with them.
HA_VENV    := .venv-ha
HA_VERSION := 2024.3.3
HA_STAMP   := $(HA_VENV)/.bankgate-ha-$(HA_VERSION)

$(HA_STAMP):
	rm -rf $(HA_VENV)
	$(PYTHON) -m venv $(HA_VENV)
	$(HA_VENV)/bin/pip install --quiet --disable-pip-version-check --no-deps homeassistant==$(HA_VERSION)
	$(HA_VENV)/bin/pip install --quiet --disable-pip-version-check \
	  -c "$$(ls $(HA_VENV)/lib/python3*/site-packages/homeassistant/package_constraints.txt)" \
	  homeassistant==$(HA_VERSION) pytest==9.0.3
	touch $@

test-ha: setup $(HA_STAMP)
	$(HA_VENV)/bin/pytest -o addopts=-ra -p no:cacheprovider -q tests/ha $(PYTEST_ARGS)

COMMISSION_REPORT := build/commissioning-report.html
demo: setup $(COMMISSION_REPORT)
	@echo "commissioning report of the simulated bank: $(abspath $(COMMISSION_REPORT))"
	$(BIN)/bankgate demo $(if $(MQTT),--mqtt $(MQTT))

# the commissioning assistant on the simulated bank (docs/commissioning.md); the report is
# made once and again only when the assistant or the scenario changes
$(COMMISSION_REPORT): tests/scenarios/commissioning_healthy_3.json $(wildcard tools/bankgate_host/commission_*.py) tools/cli/cli_commission.py | setup
	@mkdir -p $(dir $@)
	$(BIN)/bankgate commission --sim --yes --report $@ > build/commissioning.txt

commission-demo: setup
	$(BIN)/bankgate commission --sim --yes --report $(COMMISSION_REPORT)

bench: setup
	$(BIN)/bankgate bench

fuzz: setup
	$(BIN)/pytest -m slow -k fuzz $(PYTEST_ARGS)

soak: setup
	$(BIN)/pytest -m slow -k soak $(PYTEST_ARGS)

longrun: setup
	$(BIN)/pytest -m slow -k longrun $(PYTEST_ARGS)

# PORT is the board's USB serial device; without it, say how to find and set it
NEED_PORT = @test -n "$(PORT)" || { echo "make $@: set PORT to the board's serial port, e.g. make $@ PORT=/dev/ttyUSB0$(if $(filter deploy,$@), BOARD=$(BOARD) CONFIG=$(CONFIG))"; echo "  (ls /dev/ttyUSB* /dev/ttyACM* before and after plugging the board in; macOS: /dev/cu.usbserial-*)"; exit 2; }

# the official MicroPython image for BOARD (boards/$(BOARD).json names it), with esptool
FIRMWARE ?=
flash-micropython: setup
	$(NEED_PORT)
	@test -n "$(FIRMWARE)" || { echo "make $@: set FIRMWARE to the official image for board $(BOARD), e.g. FIRMWARE=$$($(BIN)/python -c 'import json;print(json.load(open("boards/$(BOARD).json"))["firmware"])')-YYYYMMDD-vX.Y.Z.bin (https://micropython.org/download/)"; exit 2; }
	$(BIN)/bankgate flash --port $(PORT) --board $(BOARD) --firmware $(FIRMWARE)

deploy: setup
	$(NEED_PORT)
	$(BIN)/bankgate deploy --port $(PORT) --board $(BOARD) --config $(CONFIG)

config: setup
	$(NEED_PORT)
	$(BIN)/bankgate config push --port $(PORT) $(CONFIG)

status: setup
	$(NEED_PORT)
	$(BIN)/bankgate status --port $(PORT)

clean:
	rm -rf $(VENV) $(HA_VENV) lib/umqtt build .pytest_cache .hypothesis
