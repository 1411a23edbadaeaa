# The two commands a new user needs: `make demo` and `make test`. Both set everything up first.
VENV := .venv
BIN := $(VENV)/bin
export TCP_NODELAY := 1

.PHONY: setup demo serve test lint typecheck unit docs bench clean

setup:
	bash scripts/setup.sh

demo: setup
	$(BIN)/laurel demo

serve: setup
	$(BIN)/laurel serve --config config/node.yaml

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy

# Two workers (one per core): most tests wait on real peers and processes; a test file stays on one worker.
unit: setup
	QT_QPA_PLATFORM=offscreen $(BIN)/pytest -n 2 --dist loadfile --durations=20

docs: setup
	$(BIN)/mkdocs build --strict --site-dir build/site

test: setup lint typecheck unit docs

bench: setup
	$(BIN)/python benchmarks/ingest.py

clean:
	rm -rf build var .pytest_cache .mypy_cache .ruff_cache
