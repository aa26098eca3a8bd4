#!/usr/bin/env bash
# Runs every Fuzz target of the module for a short time each ($1, default 10s).
# Seed corpora come from the fixtures (f.Add in each target) and testdata/fuzz.
#
# On a loaded machine Go's fuzzing coordinator sometimes loses its workers at
# the -fuzztime deadline and fails with a bare "context deadline exceeded"
# (no failing input, no hang report). That is the engine, not the target, so
# such a run is retried once; a real failure writes a failing input and fails.
set -euo pipefail
t=${1:-10s}
cd "$(dirname "$0")/.."
out=$(mktemp)
trap 'rm -f "$out"' EXIT
# Minimizing a new interesting input may take up to a minute by default, during
# which no new input runs; 1s keeps a short run fuzzing rather than minimizing.
# One worker (-parallel 1): with two on a 2-core machine the coordinator's
# pings to a starved worker time out now and then ("context deadline
# exceeded", the failure retried above).
fuzz_one() { go test -run '^$' -fuzz "^$2\$" -fuzztime "$t" -fuzzminimizetime 1s -parallel "${FUZZ_PARALLEL:-1}" "$1" 2>&1 | tee "$out"; }
grep -rl --include='*_test.go' '^func Fuzz' . | sort | while read -r f; do
  pkg=./$(dirname "${f#./}")
  for fn in $(grep -o '^func Fuzz[A-Za-z0-9_]*' "$f" | sed 's/^func //'); do
    echo "fuzz: $pkg $fn ($t)"
    if ! fuzz_one "$pkg" "$fn"; then
      if grep -q 'context deadline exceeded' "$out" && ! grep -q 'Failing input written' "$out"; then
        echo "fuzz: $pkg $fn: engine lost its workers at the deadline; retrying once"
        fuzz_one "$pkg" "$fn"
      else
        exit 1
      fi
    fi
  done
done
