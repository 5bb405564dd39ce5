#!/usr/bin/env bash
# Line and branch coverage of src/ by the tests, from a build with gcc
# --coverage whose tests have run (the coverage preset:
# cmake --workflow --preset coverage). Prints gcovr's per-file tables for
# src/ (lines, then branches) and fails when the totals are below the
# minimums:
#
#   tests/coverage.sh [BUILD_DIR]     (default build/coverage)
#
# COVERAGE_LINE_MIN (default below) and COVERAGE_BRANCH_MIN override them.
# Needs gcovr (Debian: apt-get install gcovr).
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-$ROOT/build/coverage}
# The minimums are issue 13's goal: 95% lines, 85% branches. The tests
# reach about 96.9% / 88.4%, the same from run to run: the paths behind
# the goal are driven on purpose (fault injection, forked children that
# dump their counters: tu_fork, tu_child_exit), not hit by luck. What stays
# uncovered is mostly defensive: libc calls that do not fail here
# (pthread_attr_init, posix_spawnattr_*, fcntl after fstat), pthread_create
# failures, EINTR on non-blocking descriptors, the NULL re-checks of the
# slow paths, counters wrapping at 2^32; a few races with no handle to
# hold them open (a fork while another thread's callback destroyed its
# source, a callback's list held at exit); the portable build's own paths
# (wake_pipe.c, the no-clockwait condvar wait, the group's timed wait).
LINE_MIN=${COVERAGE_LINE_MIN:-95}
BRANCH_MIN=${COVERAGE_BRANCH_MIN:-85}

if ! command -v gcovr >/dev/null 2>&1; then
	echo "coverage: gcovr not found (apt-get install gcovr)" >&2
	echo "coverage: checked 0 files, findings 1"
	exit 1
fi
if ! find "$BUILD" -name '*.gcda' -print -quit | grep -q .; then
	echo "coverage: no .gcda file under $BUILD (run the coverage" \
		"workflow first)" >&2
	echo "coverage: checked 0 files, findings 1"
	exit 1
fi

common=(-r "$ROOT" --filter "$ROOT/src/" --exclude-unreachable-branches
	"$BUILD")
gcovr "${common[@]}" || exit 1
gcovr "${common[@]}" --branches || exit 1
# The report goes to a file of ours: gcovr replaces its output file, and
# with -o /dev/null it replaced the machine's /dev/null with a regular file.
summary=$(gcovr "${common[@]}" --print-summary \
	-o "$BUILD/coverage-summary.txt") || exit 1
echo "$summary"
lines=$(sed -nE 's/^lines: ([0-9.]+)%.*/\1/p' <<<"$summary")
branches=$(sed -nE 's/^branches: ([0-9.]+)%.*/\1/p' <<<"$summary")
files=$(gcovr "${common[@]}" | grep -c '^src/')
ok=$(awk -v l="${lines:-0}" -v b="${branches:-0}" -v lm="$LINE_MIN" \
	-v bm="$BRANCH_MIN" 'BEGIN { print (l >= lm && b >= bm) }')
echo "coverage: checked $files files, lines ${lines:-?}% (minimum" \
	"$LINE_MIN%), branches ${branches:-?}% (minimum $BRANCH_MIN%)," \
	"findings $((ok ? 0 : 1))"
((ok))
