# Two commands do everything on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TORCH  := torch==2.13.0
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test bench browser peers clean board verify-entries

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch first, pinned: a bare `torch` would pull a multi-GB CUDA build.
$(VENV)/.torch: | $(BIN)/python
	$(BIN)/pip install -q $(TORCH)
	touch $@

$(VENV)/.core: $(VENV)/.torch pyproject.toml
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.dev: $(VENV)/.core pyproject.toml
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

run: $(VENV)/.core
	$(BIN)/iqaguard run

# Debian chromium + chromedriver for the real-browser report test.
browser:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
		echo "installing chromium + chromium-driver"; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium chromium-driver >/dev/null; \
	fi

# Peer venv for calibration tests (tests/peers/): the reference implementations we check against.
# Kept apart so the core venv never gets torchvision or pyiqa. torch/torchvision are repeated on
# every install line so pyiqa's dependencies cannot move them.
PEERS      := .venv-peers
PEER_BIN   := $(PEERS)/bin
PEER_TORCH := torch==2.14.1 torchvision==0.29.1

$(PEER_BIN)/python:
	$(PYTHON) -m venv $(PEERS)
	$(PEER_BIN)/pip install -q --upgrade pip

$(PEERS)/.torch: | $(PEER_BIN)/python
	$(PEER_BIN)/pip install -q $(PEER_TORCH)
	touch $@

$(PEERS)/.peers: $(PEERS)/.torch
	$(PEER_BIN)/pip install -q pyiqa piq lpips DISTS_pytorch brisque 'numpy<2.4' $(PEER_TORCH)
	$(PEER_BIN)/pip install -q --no-deps torchattacks
	touch $@

# Our own package too (editable, with its dependencies), so peer scripts can import iqaguard.
$(PEERS)/.iqaguard: $(PEERS)/.peers pyproject.toml
	$(PEER_BIN)/pip install -q -e . $(PEER_TORCH)
	touch $@

peers: $(PEERS)/.iqaguard

test: $(VENV)/.dev browser peers
	IQAGUARD_REQUIRE_PEERS=1 $(BIN)/python -m pytest -q --durations=30

# The leaderboard from the committed entries.
ENTRIES := leaderboard/entries
board: $(VENV)/.core
	$(BIN)/iqaguard leaderboard build --entries $(ENTRIES) --out board

# Every committed entry is checked against its bundle; cells are recomputed in VERIFY_K of them,
# picked by a seed from the commit (another sample per commit, the same on a rerun).
VERIFY_K ?= 8
verify-entries: $(VENV)/.core
	@seed=$$(( 0x$$(git rev-parse --short=7 HEAD 2>/dev/null || echo 0) )); \
	$(BIN)/iqaguard verify $(ENTRIES) --entries $(VERIFY_K) --sample 2 --seed $$seed

bench: $(VENV)/.dev peers
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) $(PEERS) iqaguard-out .pytest_cache
