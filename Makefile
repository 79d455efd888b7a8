# Operator targets. Every target works against the local stack (`f2 stack`), installing what is
# missing first. A target whose piece does not exist yet says so and exits non-zero.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3)
VENV := .venv
F2 := $(VENV)/bin/f2
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
WITH_ENV = eval "$$($(F2) stack env)" &&

.PHONY: install demo test lint full-setup secure-setup status health logs logs-connector \
        logs-processor logs-sink db-params db-timescale kafka-topics kafka-raw kafka-decoded \
        kafka-dlq mqtt-monitor mqtt-test security-check performance benchmarks backup clean \
        restart-secure stack-up stack-down timescale-check deploy-check bench-memory bench-fleet \
        waxctl-bundle

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	@echo "installing the project into $(VENV) (log: $(VENV)/install.log)"
	@$(VENV)/bin/pip install -q --upgrade pip > $(VENV)/install.log 2>&1 || (cat $(VENV)/install.log; exit 1)
	@$(VENV)/bin/pip install -q -e '.[dev]' >> $(VENV)/install.log 2>&1 || (cat $(VENV)/install.log; exit 1)
	@touch $(STAMP)

# The charts extra (matplotlib) for the targets that draw PNGs.
PERF_STAMP := $(VENV)/.installed-perf
$(PERF_STAMP): $(STAMP)
	@echo "installing the charts extra (matplotlib) into $(VENV) (log: $(VENV)/install.log)"
	@$(VENV)/bin/pip install -q -e '.[dev,perf]' >> $(VENV)/install.log 2>&1 || (cat $(VENV)/install.log; exit 1)
	@touch $(PERF_STAMP)

stack-up: install
	$(F2) stack up

stack-down: install
	$(F2) stack down

## The pipeline's main job on the local stack, with its result.
demo: stack-up
	$(F2) demo

## The whole test suite (brings up the stack it needs).
test: install lint
	$(PY) -m pytest

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/pylint --disable=all --enable=duplicate-code --min-similarity-lines=8 \
		--ignore-imports=yes --score=no schemas connectors dataflows ops simulator bench
	$(PY) -m tools.settings_table --check

## Everything up: the compose stack when a Docker engine has its images, else the local stack
## with both dataflows, the health API (:8000) and Prometheus (:29090), all supervised
## (f2 setup says which and why).
full-setup: install
	$(F2) setup

## Processes of the stack, then the pipeline's rates, lag, dead letters and silent devices.
status: install
	-$(F2) stack status
	$(F2) health status

logs: install
	$(F2) stack logs --follow

logs-connector: install
	$(F2) stack logs --follow ingest

logs-processor logs-sink: install
	$(F2) stack logs --follow decode

db-params: install
	@$(WITH_ENV) psql "$$F2_PARAMS_DSN"

db-timescale: install
	@$(WITH_ENV) psql "$$F2_TIMESERIES_DSN"

kafka-topics: install
	$(F2) kafka topics

kafka-raw: install
	$(F2) kafka tail raw_iot_data --follow

kafka-decoded: install
	$(F2) kafka tail decoded_iot_data --follow

kafka-dlq: install
	$(F2) kafka tail dlq_iot_data --follow

mqtt-monitor: install
	@$(WITH_ENV) mosquitto_sub -V mqttv5 -h "$$F2_MQTT_HOST" -p "$$F2_MQTT_PORT" \
	  -u "$$F2_MQTT_USERNAME" -P "$$F2_MQTT_PASSWORD" -v -t 'stat/#' -t 'tele/#'

mqtt-test: stack-up
	$(F2) demo --round-trip-only

benchmarks: $(PERF_STAMP)
	$(PY) -m bench

## The flows' memory under a 64 KiB flood during a Kafka outage, on its own isolated stack
## (bench/results/memory.json; also part of `make benchmarks`).
bench-memory: install
	$(PY) -m bench.memory

## A fleet of 100,000 controllers at 5,000 msg/s on its own isolated stack (registration, cold
## start, memory, registry, Redis/PostgreSQL load, a 1k/10k/100k curve; up to 30 min; not part
## of `make benchmarks`): bench/results/fleet.json and fleet.md.
bench-fleet: install
	$(PY) -m bench.fleet

## PNG charts from the local Prometheus, else from bench/results (installs the [perf] extra).
performance: $(PERF_STAMP)
	$(F2) performance

## Every component's state (the health API's /health, or a one-shot check without it).
health: install
	$(F2) health

## Secrets (0600, in the stack's secrets/ dir), operator user, CA + certificates; restarts the broker.
secure-setup: install
	$(F2) setup --secure

## Restart the broker with the current password file, ACL and certificates.
restart-secure: install
	$(F2) security restart

## PASS/FAIL per protection (anonymous, passwords, device isolation, TLS, client ids, revocation,
## re-registration, the simulator in both modes, database roles, secrets, loopback, deploy files).
security-check: install
	$(F2) security check

## Timestamped custom-format dumps of both databases under backups/ (restore: f2 restore FILE).
backup: stack-up
	$(F2) backup

## The TimescaleDB path against real TimescaleDB: PGlite+TimescaleDB (npm ci) and Debian trixie's
## Apache build in a debootstrap chroot (built once into /var/cache/f2-timescale, needs root).
## Select tiers with F2_TIMESCALE_TIERS=pglite,trixie.
timescale-check: install
	$(PY) -m pytest -v tests/integration/test_timescale_pglite.py tests/integration/test_timescale_chroot.py

## Validate deploy/ offline (compose, Helm/Kubernetes, Dockerfile, promtool) and its security
## properties; installs its validators on first use (see tools/deploy_check.py).
deploy-check: install
	$(PY) -m tools.deploy_check

## The launchers (build/waxctl/launchers/) and the tarball of the flow code with them
## (build/waxctl/f2-flows.tar) for `waxctl dataflow deploy` (deploy/waxctl/README.md).
waxctl-bundle: install
	$(PY) -m tools.waxctl_check bundle

## Stop the stack and delete its data, the virtualenv and build outputs.
clean:
	-test -x $(F2) && $(F2) stack down --purge
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache .hypothesis bench/results
