#!/bin/sh
# The whole check, as CI runs it: lint, format, types, then every test (unit and sandbox).
# Needs the venv scripts/setup.sh makes. pytest exits non-zero when it collects no test.
set -eu
cd "$(dirname "$0")/.."
.venv/bin/ruff check octoboot tasks.py tests benchmarks
.venv/bin/ruff format --check octoboot tasks.py tests benchmarks
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
