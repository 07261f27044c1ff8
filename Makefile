# `make demo` and `make test` work on a fresh machine: each sets up what is missing first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: setup demo test lint clean

setup: $(STAMP)
	@scripts/ensure-debian-packages.sh clickhouse-server clickhouse-server clickhouse-client

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@echo "compiling the hot path once (about half a minute; numba caches it on disk)..."
	$(BIN)/python -c "from streams.processing.hotpath.warmup import warm_up; print(f'compiled in {warm_up():.0f} s')"
	rm -f $(VENV)/.installed-*
	touch $@

demo: setup
	$(BIN)/meter demo

# Lint, then the whole suite against a real broker and ClickHouse. pytest exits 5 when it
# collects no test: that is a failure here, never a pass.
test: setup
	@scripts/ensure-debian-packages.sh chromium chromium
	@scripts/ensure-debian-packages.sh promtool prometheus
	@scripts/ensure-debian-packages.sh /usr/sbin/haproxy haproxy
	@scripts/ensure-debian-packages.sh /usr/share/java/zookeeper.jar zookeeper
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	@$(BIN)/python -m pytest; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; \
	  exit $$rc

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	-$(BIN)/meter stack down
	rm -rf $(VENV) .stack .pytest_cache .ruff_cache
