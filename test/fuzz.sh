#!/usr/bin/env bash
# Runs every Fuzz target of the module briefly ($1: a -fuzztime, default
# 30000 inputs per target; a duration such as 10s works too). Seed corpora
# come from the fixtures (f.Add in each target) and testdata/fuzz.
#
# A count rather than a duration by default: when a duration runs out, Go's
# fuzzing coordinator sometimes fails with a bare "context deadline exceeded"
# (no failing input, no hang report) while stopping its workers. That is the
# engine, not the target, so such a run is also retried once; a real failure
# writes a failing input and fails.
set -euo pipefail
t=${1:-30000x}
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
