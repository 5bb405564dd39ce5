#!/usr/bin/env bash
# valgrind memcheck over the test programs, except the stress test (its
# thread interleavings are what matters, and memcheck serializes them;
# ASan and TSan run it instead), test_alloc (it interposes malloc, which
# memcheck replaces; ASan and TSan count through their allocator hooks),
# and test_process, test_cause and example_timeout_* (see the filter):
# every cmocka test, the fuzz replays (with
# fewer random inputs) and the example programs run as tests.
#
# Each program runs under
#   valgrind --error-exitcode=1 --leak-check=full
#            --errors-for-leak-kinds=definite
# and the step fails on any memcheck error, any definite leak, or a test
# that fails under valgrind. Prints the number of programs and errors.
# The shell-driven example tests run each of their programs under the same
# valgrind through VALGRIND_WRAP (tests/examples/test_examples.sh), with
# their upper time bounds stretched. CANCEL_UNDER_VALGRIND=1 tells
# test_faults that accept's EMFILE is memcheck's own there (skipped, on
# tests/skips.allow); CANCEL_FUZZ_RANDOM=200 shortens the replays. Skipped
# cmocka tests must be on tests/skips.allow (configuration "valgrind").
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
    # test_alloc counts allocations by interposing malloc in the program;
    # memcheck replaces malloc there too, so nothing would be counted.
    if t["name"] == "test_alloc":
        continue
    # valgrind 3.19 runs posix_spawn'"'"'s clone(CLONE_VM|CLONE_VFORK) as a
    # plain fork, so a failed exec is not reported back (spawn returns 0
    # for a missing program), and it does not know pidfd_open (syscall
    # 434): test_process and run_with_timeout (example_timeout_*) would
    # test valgrind, not libcancel. test_cause checks the CANCEL_DEBUG=leaks
    # report of a re-executed child, which memcheck'"'"'s own allocator and
    # exit handling change. ASan, TSan and the plain builds run all three.
    if t["name"] in ("test_process", "test_cause") or \
            t["name"].startswith("example_timeout_"):
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
	programs=$((programs + 1))
	rc=0
	vg=(valgrind --error-exitcode=1 --leak-check=full
		--errors-for-leak-kinds=definite --trace-children=no)
	if [[ ${cmd[0]} == */sh || ${cmd[0]} == */bash ]]; then
		# Shell-driven example tests: the script runs each program
		# through $VALGRIND_WRAP (one log per process).
		(cd "$BUILD" && VALGRIND_WRAP="${vg[*]} --log-file=$log.%p.vg" \
			"${cmd[@]}") >"$log" 2>&1 || rc=$?
	else
		(cd "$BUILD" && CANCEL_FUZZ_RANDOM=200 CANCEL_UNDER_VALGRIND=1 \
			"${vg[@]}" --log-file="$log.vg" "${cmd[@]}") \
			>"$log" 2>&1 || rc=$?
	fi
	# Every process's memcheck summary; none at all is a failure.
	n=0
	logs=0
	for v in "$log".vg "$log".*.vg; do
		[[ -e $v ]] || continue
		logs=$((logs + 1))
		e=$(grep -E 'ERROR SUMMARY: [0-9]+' "$v" | tail -n 1 |
			sed -E 's/.*ERROR SUMMARY: ([0-9]+).*/\1/')
		n=$((n + ${e:-1}))
	done
	((logs > 0)) || n=1
	errors=$((errors + n))
	if ((rc != 0 || n != 0)); then
		failed+=("$name (exit $rc, $n memcheck errors)")
		echo "valgrind: $name: FAILED (exit $rc, $n errors; $log*.vg)"
		cat "$log".vg "$log".*.vg 2>/dev/null | grep -E \
			'^==[0-9]+== (Invalid|Conditional|Use of|Syscall|.*definitely lost)' |
			head -n 5
		tail -n 5 "$log"
	else
		echo "valgrind: $name: ok"
	fi
done
# Skipped cmocka tests must be on tests/skips.allow ("valgrind").
if ! "$ROOT/tests/check_skips.sh" valgrind "$LOGS"/*.log; then
	failed+=("skipped tests not on tests/skips.allow")
fi
for x in "${failed[@]}"; do
	echo "valgrind: failed: $x"
done
finish valgrind "$programs test programs" $((errors + ${#failed[@]}))
