#!/usr/bin/env bash
# The README's test command: set up (or reuse) the environment, then run the suite.
#   bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
# Real speech for the front-end tests; the tests skip with a message where it is missing.
if ! command -v espeak-ng >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && apt-get install -y -qq espeak-ng) >/dev/null 2>&1 \
        || echo "[audiossl] espeak-ng could not be installed; speech tests will be skipped" >&2
fi
source scripts/env.sh
exec python -m pytest "$@"
