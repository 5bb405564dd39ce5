#!/usr/bin/env bash
# Configure a Release build with the benchmarks, build them, and run every
# bench program that exists: bench_core (libcancel vs std::stop_token, GLib
# and the raw floor, one table), then bench_wake, bench_timer and
# bench_group.
#
# usage: bench/run.sh [--quick] [--readme] [--no-build] [BUILD_DIR]
#   --quick      a few seconds per program (CI run): the speed targets are
#                not asserted, the "0 allocations" and "0 system calls"
#                rows and the strace check are
#   --readme     a full bench_core and bench_wake run, then the README's
#                "How fast" table from it, in the README's format (refresh
#                the README by pasting it)
#   --no-build   run what BUILD_DIR already holds
#   BUILD_DIR    default: build/bench under the source tree (the bench
#                preset's directory)
#
# The "no system call when nobody waits" check (needs strace: apt-get
# install strace; missing strace fails the run): bench_core --syscheck R
# (R rounds of cancels with 1, 16 and 1024 callbacks) runs under strace -f
# -c for R=1 and R=50; the process's total system calls must not grow with
# the number of cancels. Exit status: non-zero when a program fails
# (bench_core: a missed target, see bench_core.c) or the check fails.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
quick=
readme=
build=1
dir=$root/build/bench
for a in "$@"; do
	case $a in
	--quick) quick=--quick ;;
	--readme) readme=1 ;;
	--no-build) build= ;;
	-h | --help)
		sed -n '2,24p' "$0"
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

if ! command -v strace >/dev/null 2>&1; then
	echo "run.sh: strace not found (apt-get install strace): the" \
		"system-call check cannot run" >&2
	exit 1
fi

bin=$dir/bench
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
rc=0
echo "== bench_core $quick"
"$bin/bench_core" $quick | tee "$tmp/core.txt" || rc=1

echo
echo "== no system call when nobody waits (strace -f -c, whole process)"
totals=
for r in 1 50; do
	line=$(strace -f -c -o "$tmp/strace.txt" "$bin/bench_core" \
		--syscheck $r) || rc=1
	total=$(awk '$NF == "total" { print $4 }' "$tmp/strace.txt")
	futex=$(awk '$NF == "futex" { print $4 }' "$tmp/strace.txt")
	echo "$line; process system calls: ${total:-?} (futex: ${futex:-0})"
	totals="$totals ${total:-x}"
done
# 50x the cancels (over 200,000 more) must not add system calls; a few
# come and go with thread start-up and exit timing.
set -- $totals
case "$1$2" in
*x*)
	echo "SYSTEM CALL CHECK FAILED: no strace total"
	rc=1
	;;
*)
	if [ $(($2 - $1)) -lt 20 ]; then
		echo "no system call per cancel: totals $1 -> $2 for 50x" \
			"the cancels"
	else
		echo "SYSTEM CALLS GROW WITH CANCELS: totals $1 -> $2"
		rc=1
	fi
	;;
esac

samples=
if [ -n "$quick" ]; then
	samples=200
fi
for b in bench_wake bench_timer bench_queue; do
	if [ -x "$bin/$b" ]; then
		echo
		echo "== $b $samples"
		"$bin/$b" $samples | tee "$tmp/$b.txt" || rc=1
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

if [ -n "$readme" ]; then
	echo
	echo "== README.md \"How fast\" table (this run: median [min-max] of"
	echo "== bench_core's repetitions; bench/run.sh --readme)"
	echo
	awk -F'|' -v wake="$tmp/bench_wake.txt" '
	function t(x) { gsub(/^ +| +$/, "", x); return x }
	function med(x) { x = t(x); sub(/ .*/, "", x); return x }
	{ r[t($2)] = $0 }
	END {
		print "| operation | libcancel | vs `std::stop_*` | vs `GCancellable` |"
		print "|---|---|---|---|"
		split(r["check an uncanceled token"], c, "|")
		printf "| check a token | one inline load, %s ns | %s | %s |\n", t(c[3]), t(c[5]), t(c[7])
		split(r["register + unregister 1 callback"], c, "|")
		printf "| register + unregister a callback | %s ns, no allocation | %s | %s |\n", t(c[3]), t(c[5]), t(c[7])
		split(r["init + destroy a source"], c, "|")
		printf "| init + destroy a source | %s ns, no allocation | %s | %s |\n", t(c[3]), t(c[5]), t(c[7])
		split(r["cancel, 1024 callbacks"], c, "|")
		printf "| cancel with 1024 callbacks | %.2f ns per callback, no system call | %s | %s |\n", med(c[3]) / 1024, t(c[5]), t(c[7])
		while ((getline l < wake) > 0) {
			n = split(l, w, " +")
			if (w[1] == "cancel_wait" || w[1] == "cancel_poll")
				ratio[w[1]] = sprintf("%.2f", w[2] / w[n - 1])
		}
		printf "| wake a blocked `cancel_wait` / `cancel_poll` | %sx / %sx a bare futex / eventfd hand-off | | |\n", ratio["cancel_wait"], ratio["cancel_poll"]
	}' "$tmp/core.txt"
fi
exit $rc
