#!/bin/sh
# Configure a Release build with the benchmarks, build them, and run every
# bench program that exists: bench_core (libcancel vs std::stop_token, GLib
# and the raw floor, one table), then bench_wake, bench_timer and
# bench_group.
#
# usage: bench/run.sh [--quick] [--no-build] [BUILD_DIR]
#   --quick      a few seconds per program (CI smoke run; nothing asserted)
#   --no-build   run what BUILD_DIR already holds
#   BUILD_DIR    default: build/bench under the source tree (the bench
#                preset's directory)
#
# The "no system call when nobody waits" check: when strace is installed,
# bench_core --syscheck R (R rounds of cancels with 1, 16 and 1024
# callbacks) runs under strace -f -c for R=1 and R=50; the process's total
# system calls must not grow with the number of cancels.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
quick=
build=1
dir=$root/build/bench
for a in "$@"; do
	case $a in
	--quick) quick=--quick ;;
	--no-build) build= ;;
	-h | --help)
		sed -n '2,17p' "$0"
		exit 0
		;;
	-*)
		echo "run.sh: unknown option $a" >&2
		exit 2
		;;
	*) dir=$a ;;
	esac
done

progs=bench_core
for b in bench_wake bench_timer bench_group bench_queue; do
	if [ -f "$here/$b.c" ]; then
		progs="$progs $b"
	fi
done

if [ -n "$build" ]; then
	cmake -S "$root" -B "$dir" -DCMAKE_BUILD_TYPE=Release \
		-DCANCEL_BUILD_BENCH=ON >/dev/null
	# Only the benchmarks: -j2, the machine is shared.
	cmake --build "$dir" -j2 --target $progs
fi

bin=$dir/bench
echo "== bench_core $quick"
"$bin/bench_core" $quick

if command -v strace >/dev/null 2>&1; then
	echo
	echo "== no system call when nobody waits (strace -f -c, whole process)"
	totals=
	for r in 1 50; do
		out=$(mktemp)
		line=$(strace -f -c -o "$out" "$bin/bench_core" --syscheck $r)
		total=$(awk '$NF == "total" { print $4 }' "$out")
		futex=$(awk '$NF == "futex" { print $4 }' "$out")
		echo "$line; process system calls: ${total:-?} (futex: ${futex:-0})"
		totals="$totals ${total:-0}"
		rm -f "$out"
	done
	# 50x the cancels (over 200,000 more) must not add system calls; a
	# few come and go with thread start-up and exit timing.
	set -- $totals
	if [ $(($2 - $1)) -lt 20 ]; then
		echo "no system call per cancel: totals $1 -> $2 for 50x the cancels"
	else
		echo "SYSTEM CALLS GROW WITH CANCELS: totals $1 -> $2"
	fi
fi

samples=
if [ -n "$quick" ]; then
	samples=200
fi
for b in bench_wake bench_timer bench_queue; do
	if [ -x "$bin/$b" ]; then
		echo
		echo "== $b $samples"
		"$bin/$b" $samples
	fi
done
# bench_group's argument is its repetitions (default 41; 10x stop rounds).
if [ -x "$bin/bench_group" ]; then
	reps=
	if [ -n "$quick" ]; then
		reps=5
	fi
	echo
	echo "== bench_group $reps"
	"$bin/bench_group" $reps
fi
