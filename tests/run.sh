#!/usr/bin/env bash
# The project's test command (README, .ci/run): installs everything the tests need on a fresh
# Debian 12 machine (system packages, a venv with the project), runs ruff (check and format)
# and mypy (any finding fails it), then the whole suite.
# Usage: bash tests/run.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."

bash tests/setup_system.sh

if [[ ! -x .venv/bin/python ]]; then
    echo "run.sh: creating .venv"
    python3.11 -m venv .venv 2>/dev/null || python3 -m venv .venv
fi
echo "run.sh: installing the project and its test dependencies into .venv"
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -c constraints.txt -e ".[test]" -e backends/textprep

echo "run.sh: ruff check, ruff format --check, mypy"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy

set +e
.venv/bin/python -m pytest "$@"
code=$?
set -e
if [[ $code -eq 5 ]]; then
    echo "run.sh: pytest collected no tests"
    exit 1
fi
exit $code
