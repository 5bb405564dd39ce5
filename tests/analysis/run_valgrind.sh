#!/usr/bin/env bash
# valgrind memcheck over the test programs, except the stress test (its
# thread interleavings are what matters, and memcheck serializes them;
# ASan and TSan run it instead): every cmocka test, the fuzz replays (with
# fewer random inputs) and the example programs run as tests.
#
# Each program runs under
#   valgrind --error-exitcode=1 --leak-check=full
#            --errors-for-leak-kinds=definite
# and the step fails on any memcheck error, any definite leak, or a test
# that fails under valgrind. Prints the number of programs and errors.
# CANCEL_UNDER_VALGRIND=1 tells test_faults to skip its descriptor and
# EINTR tests (memcheck owns descriptors near the limit and is too slow
# for their time bounds); CANCEL_FUZZ_RANDOM=200 shortens the replays.
#
# Usage: tests/analysis/run_valgrind.sh [BUILD_DIR]
#   (default: a Debug build in build/analysis/valgrind)
. "$(dirname "$0")/common.sh"

BUILD=${1:-$ANALYSIS/valgrind}
if [[ -z ${1:-} ]]; then
	configure_build "$BUILD" -DCMAKE_BUILD_TYPE=Debug \
		-DCANCEL_BUILD_BENCH=OFF || exit 1
fi
LOGS=$ANALYSIS/valgrind-logs
rm -rf "$LOGS"
mkdir -p "$LOGS"

# Test name, then its command, one test per line (tab separated).
mapfile -t TESTS < <(cd "$BUILD" && ctest --show-only=json-v1 |
	python3 -c '
import json, sys
for t in json.load(sys.stdin)["tests"]:
    props = {p["name"]: p["value"] for p in t.get("properties", [])}
    labels = props.get("LABELS", [])
    if "stress" in labels or not ({"unit", "examples"} & set(labels)):
        continue
    print("\t".join([t["name"]] + t["command"]))
')

programs=0
errors=0
failed=()
for line in "${TESTS[@]}"; do
	IFS=$'\t' read -r -a f <<<"$line"
	name=${f[0]}
	cmd=("${f[@]:1}")
	log=$LOGS/$name.log
	# Shell-wrapped examples run their program through $VALGRIND_WRAP
	# when they support it; plain executables are wrapped here.
	if [[ ${cmd[0]} == */sh || ${cmd[0]} == */bash ]]; then
		continue
	fi
	programs=$((programs + 1))
	rc=0
	(cd "$BUILD" && CANCEL_FUZZ_RANDOM=200 CANCEL_UNDER_VALGRIND=1 \
		valgrind --error-exitcode=1 --leak-check=full \
		--errors-for-leak-kinds=definite --trace-children=no \
		--log-file="$log.vg" "${cmd[@]}") >"$log" 2>&1 || rc=$?
	n=$(grep -E 'ERROR SUMMARY: [0-9]+' "$log.vg" | tail -n 1 |
		sed -E 's/.*ERROR SUMMARY: ([0-9]+).*/\1/')
	n=${n:-0}
	errors=$((errors + n))
	if ((rc != 0 || n != 0)); then
		failed+=("$name (exit $rc, $n memcheck errors)")
		echo "valgrind: $name: FAILED (exit $rc, $n errors; $log.vg)"
		grep -E '^==[0-9]+== (Invalid|Conditional|Use of|Syscall|.*definitely lost)' \
			"$log.vg" | head -n 5
		tail -n 5 "$log"
	else
		echo "valgrind: $name: ok"
	fi
done
for x in "${failed[@]}"; do
	echo "valgrind: failed: $x"
done
finish valgrind "$programs test programs" $((errors + ${#failed[@]}))
