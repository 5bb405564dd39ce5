#!/usr/bin/env bash
# Build the libFuzzer targets with clang and fuzz each one.
#
#   fuzz/run.sh [SECONDS]        default 120 (or $FUZZ_SECONDS)
#
# fuzz_api      -fsanitize=fuzzer,address,undefined (leaks detected)
# fuzz_threads  -fsanitize=fuzzer,thread
#
# The two targets run at the same time (one per core), each for SECONDS,
# starting from a copy of the committed corpus (fuzz/corpus_<target>).
# A target that ran fewer than $FUZZ_MIN_EXECS (default 1000000)
# executions in that time keeps going, with -runs for the rest, for at most
# 2 x SECONDS more. The run fails on any crash, leak, timeout or sanitizer
# report, and when a target still has fewer executions than the minimum
# (read from libFuzzer's "stat::number_of_executed_units").
#
# Environment: FUZZ_OUT (work directory, default build/fuzz), FUZZ_CC
# (default clang), FUZZ_MIN_EXECS, FUZZ_MERGE=1 (merge what was found into
# the committed corpus directories, minimized).
set -uo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
SECS=${1:-${FUZZ_SECONDS:-120}}
MIN=${FUZZ_MIN_EXECS:-1000000}
# fuzz_threads starts threads for every input and, since issue 12, frees
# every record at once and reads the descriptor table after each input:
# about 1,500 inputs a second here, so its minimum is lower.
MIN_THREADS=${FUZZ_MIN_EXECS_THREADS:-300000}

# min_of TARGET: the minimum number of executions for TARGET.
min_of() {
	if [[ $1 == threads ]]; then
		echo "$MIN_THREADS"
	else
		echo "$MIN"
	fi
}
OUT=${FUZZ_OUT:-$ROOT/build/fuzz}
CC=${FUZZ_CC:-clang}
TARGETS=(api threads)

mkdir -p "$OUT"

# The library with the Linux backend (futex + eventfd).
LIBSRC=()
for f in "$ROOT"/src/*.c; do
	case $(basename "$f") in
	wait_pthread.c | wake_pipe.c | watch_poll.c) ;;
	*) LIBSRC+=("$f") ;;
	esac
done
COMMON=(-g -O1 -fno-omit-frame-pointer -D_GNU_SOURCE -DCANCEL_STATIC_DEFINE
	-Wall -Wextra -Werror -Wshadow -Wno-unused-parameter
	-I"$ROOT/include" -I"$ROOT/src" -pthread)

build() {
	local t=$1 san
	case $t in
	api) san=-fsanitize=fuzzer,address,undefined ;;
	threads) san=-fsanitize=fuzzer,thread ;;
	esac
	echo "fuzz: building fuzz_$t ($san)"
	"$CC" "${COMMON[@]}" "$san" -fno-sanitize-recover=all \
		"${LIBSRC[@]}" "$ROOT/fuzz/fuzz_$t.c" -o "$OUT/fuzz_$t"
}

maxlen() {
	case $1 in
	api) echo 160 ;;
	threads) echo 64 ;;
	esac
}

# execs LOG: the executions libFuzzer reported last in LOG (0 if none).
execs() {
	local n
	n=$(grep -E '^stat::number_of_executed_units:' "$1" | tail -n 1 |
		awk '{print $2}')
	echo "${n:-0}"
}

# fuzz_one TARGET: fuzz it, write $OUT/TARGET.result ("EXECS STATUS").
fuzz_one() {
	local t=$1 bin=$OUT/fuzz_$1 corpus=$OUT/corpus_$1
	local art=$OUT/artifacts_$1/ log=$OUT/fuzz_$1.log rc=0 total more
	rm -rf "$corpus" "$art"
	mkdir -p "$corpus" "$art"
	cp "$ROOT/fuzz/corpus_$t/"* "$corpus/" 2>/dev/null || true
	local opts=(-max_len="$(maxlen "$t")" -timeout=10 -rss_limit_mb=4096
		-print_final_stats=1 -artifact_prefix="$art")
	export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
	export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
	# libFuzzer's own coverage counters are plain stores from every
	# thread: fuzz/tsan_libfuzzer.supp names them (and nothing else).
	export TSAN_OPTIONS="halt_on_error=1:suppressions=$ROOT/fuzz/tsan_libfuzzer.supp"
	"$bin" "${opts[@]}" -max_total_time="$SECS" "$corpus" >"$log" 2>&1 ||
		rc=$?
	total=$(execs "$log")
	local min
	min=$(min_of "$t")
	if ((rc == 0 && total < min)); then
		more=$((min - total))
		echo "fuzz: $t: $total executions in ${SECS}s, $more more" \
			"(at most $((2 * SECS))s)" >>"$log"
		"$bin" "${opts[@]}" -runs="$more" -max_total_time=$((2 * SECS)) \
			"$corpus" >"$log.2" 2>&1 || rc=$?
		total=$((total + $(execs "$log.2")))
		cat "$log.2" >>"$log"
	fi
	if grep -qE 'WARNING: ThreadSanitizer|ERROR: (Address|Leak)Sanitizer|runtime error:' "$log"; then
		((rc != 0)) || rc=99
	fi
	echo "$total $rc" >"$OUT/$t.result"
}

for t in "${TARGETS[@]}"; do
	build "$t" || { echo "fuzz: build of fuzz_$t failed" >&2; exit 1; }
done

echo "fuzz: ${SECS}s per target, minimum $MIN executions ($MIN_THREADS for threads)"
pids=()
for t in "${TARGETS[@]}"; do
	fuzz_one "$t" &
	pids+=($!)
done
for p in "${pids[@]}"; do
	wait "$p" || true
done

fail=0
grand=0
per=()
for t in "${TARGETS[@]}"; do
	read -r n rc <"$OUT/$t.result" || { n=0; rc=1; }
	files=$(find "$OUT/corpus_$t" -type f | wc -l)
	arts=$(find "$OUT/artifacts_$t" -type f | wc -l)
	status=ok
	if ((rc != 0)); then
		status="FAILED (exit $rc; $arts artifact(s) in $OUT/artifacts_$t)"
		grep -E 'ERROR|WARNING|fuzz_(api|threads):|SUMMARY' \
			"$OUT/fuzz_$t.log" | head -n 20
		fail=1
	elif ((n < $(min_of "$t"))); then
		status="FAILED (fewer than $(min_of "$t") executions)"
		fail=1
	fi
	grand=$((grand + n))
	per+=("$t $n")
	echo "fuzz: fuzz_$t: $n executions, corpus $files inputs: $status"
	if [[ ${FUZZ_MERGE:-} == 1 && $rc == 0 ]]; then
		mkdir -p "$OUT/merged_$t"
		rm -f "$OUT/merged_$t/"*
		"$OUT/fuzz_$t" -merge=1 -max_len="$(maxlen "$t")" \
			"$OUT/merged_$t" "$ROOT/fuzz/corpus_$t" "$OUT/corpus_$t" \
			>"$OUT/merge_$t.log" 2>&1 &&
			rm -f "$ROOT/fuzz/corpus_$t/"* &&
			cp "$OUT/merged_$t/"* "$ROOT/fuzz/corpus_$t/" &&
			echo "fuzz: fuzz/corpus_$t now has" \
				"$(find "$ROOT/fuzz/corpus_$t" -type f | wc -l) inputs"
	fi
done
joined=$(IFS=,; echo "${per[*]}")
echo "fuzz: checked $grand executions ($joined), findings $fail"
if ((grand == 0)); then
	echo "fuzz: FAILED: nothing was executed" >&2
	exit 1
fi
exit "$fail"
