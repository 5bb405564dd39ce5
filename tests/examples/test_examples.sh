#!/usr/bin/env bash
# End-to-end tests of the example programs: real processes, real sockets,
# real signals. Run by ctest (label "examples"), one case per test:
#
#   test_examples.sh CASE BINDIR WORKDIR
#
# CASE: server_disconnect server_shutdown server_deadline report_timeout
#       report_sigint report_done, and for run_with_timeout (each compared
#       with coreutils timeout -k when it is installed): timeout_sleep
#       timeout_trap_term timeout_ignore_term timeout_pipeline
#       timeout_status timeout_sigint. BINDIR holds the example programs.
# Time bounds are generous on the failing side (the machine is shared).
#
# VALGRIND_WRAP (set by tests/analysis/run_valgrind.sh): a command prefix
# (valgrind and its options) the programs run under; every upper time
# bound then grows by EXAMPLES_SLACK_MS (default 4000: memcheck starts in
# about a second and runs 20-50 times slower). Lower bounds stay.
set -euo pipefail
vg=()
slack=0
if [[ -n ${VALGRIND_WRAP:-} ]]; then
	read -r -a vg <<<"$VALGRIND_WRAP"
	slack=${EXAMPLES_SLACK_MS:-4000}
fi
# ThreadSanitizer sleeps 1 s at exit while threads (libcancel's own) run;
# the exit-time bounds below are about the programs, not that pause.
export TSAN_OPTIONS="${TSAN_OPTIONS:-} atexit_sleep_ms=0"

case_=$1 bin=$2 work=$3
rm -rf "$work"
mkdir -p "$work"
cd "$work"

fail() {
	echo "FAIL ($case_): $*" >&2
	for f in server.err server.out report.out ours.out coreutils.out; do
		[[ -f $f ]] && { echo "--- $f"; cat "$f"; } >&2
	done
	exit 1
}
now_ms() { local t=${EPOCHREALTIME/[.,]/}; echo $((t / 1000)); }

# wait_for FILE REGEX SECONDS: until a line of FILE matches.
wait_for() {
	local end=$(($(now_ms) + $3 * 1000 + slack))
	until grep -qE "$2" "$1" 2>/dev/null; do
		(($(now_ms) < end)) || fail "no line /$2/ in $1 after $3 s"
		sleep 0.02
	done
}

server_pid=
start_server() {
	"${vg[@]}" "$bin/server" >server.out 2>server.err &
	server_pid=$!
	wait_for server.out '^listening on 127\.0\.0\.1:[0-9]+$' 10
	port=$(sed -n 's/^listening on 127\.0\.0\.1://p' server.out)
	url=http://127.0.0.1:$port
}
tasks() { ls "/proc/$server_pid/task" | wc -l; }
cleanup() {
	[[ -n $server_pid ]] && kill -KILL "$server_pid" 2>/dev/null || true
}
trap cleanup EXIT

# stop_server: SIGTERM, expect exit 0 within 5 s and a summary line.
stop_server() {
	local t0 rc=0
	t0=$(now_ms)
	kill -TERM "$server_pid"
	wait "$server_pid" || rc=$?
	server_pid=
	((rc == 0)) || fail "server exited $rc after SIGTERM"
	t0=$(($(now_ms) - t0))
	((t0 < 5000 + slack)) || fail "server took $t0 ms to stop"
	grep -qE '^shutdown: [0-9]+ requests' server.err ||
		fail "no shutdown line"
}

# field_ms LINE WORD: the number before " ms after WORD" in LINE.
ms_before() { sed -nE "s/.* ([0-9]+(\.[0-9]+)?) ms after $2.*/\1/p" <<<"$1"; }
below() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a != "" && a < b) }'; }


# run_with_timeout cases: a sleep no other test uses, so leftovers are ours.
naptime=30.$$
# leftover: a "sleep $naptime" still runs (zombies have no cmdline).
leftover() {
	local f a b
	for f in /proc/[0-9]*/cmdline; do
		a= b=
		{ IFS= read -r -d '' a && IFS= read -r -d '' b; } \
			<"$f" 2>/dev/null || true
		[[ $a == sleep && $b == "$naptime" ]] && return 0
	done
	return 1
}
no_leftover() {
	local end=$(($(now_ms) + 2000))
	while leftover; do
		(($(now_ms) < end)) || fail "$1 left a 'sleep $naptime' running"
		sleep 0.02
	done
}
# one WHO EXPECT MIN_MS MAX_MS CMD...: run CMD, check its exit status and
# duration, and that nothing it started is still running.
one() {
	local who=$1 exp=$2 lo=$3 hi=$4 t0 rc=0
	shift 4
	t0=$(now_ms)
	"$@" >"$who.out" 2>&1 || rc=$?
	took=$(($(now_ms) - t0))
	((rc == exp)) || fail "$who exited $rc, want $exp"
	((took >= lo && took < hi)) || fail "$who took $took ms, want $lo-$hi"
	no_leftover "$who"
	echo "ok: $who: exit $rc after $took ms"
}
# both EXPECT MIN_MS MAX_MS GRACE DURATION CMD...: run_with_timeout, then
# coreutils timeout -k GRACE on the same command, same expectations.
both() {
	local exp=$1 lo=$2 hi=$3 grace=$4 dur=$5
	shift 5
	one ours "$exp" "$lo" "$hi" "$bin/run_with_timeout" --grace "$grace" \
		"$dur" -- "$@"
	if command -v timeout >/dev/null; then
		one coreutils "$exp" "$lo" "$hi" timeout -k "$grace" "$dur" "$@"
	else
		echo "(coreutils timeout not installed: not compared)"
	fi
}

case $case_ in
server_disconnect)
	start_server
	sleep 0.2
	idle=$(tasks)
	"${vg[@]}" "$bin/client" "$url/reports/sales?seconds=2" \
		>patient.out 2>&1 &
	patient=$!
	# Threads per in-flight request: its connection thread only (the
	# hang-up watch needs none), plus one in the inventory service that
	# the server also plays. A watcher thread per request made it 2 + 1.
	wait_for server.err 'seconds=2: started' 5
	most=0
	for _ in $(seq 15); do
		n=$(($(tasks) - idle))
		((n > most)) && most=$n
		sleep 0.02
	done
	((most == 2)) ||
		fail "threads for one request: $most, want 2 (request + inventory)"
	rc=0
	"${vg[@]}" "$bin/client" --max-time 1 \
		"$url/reports/sales?seconds=5" \
		>impatient.out 2>&1 || rc=$?
	left=$(now_ms)
	((rc == 28)) || fail "impatient client exited $rc, want 28 (gave up)"
	wait_for server.err 'seconds=5: canceled' 2
	(($(now_ms) - left < 2000 + slack)) || fail "cancel logged too late"
	line=$(grep 'seconds=5: canceled' server.err)
	[[ $line == *"canceled by the request (client disconnected)"* ]] ||
		fail "reason: $line"
	[[ $line == *"released: db connection, inventory socket"* ]] ||
		fail "not everything released: $line"
	x=$(ms_before "$line" 'it was requested')
	below "$x" $((100 + slack)) ||
		fail "stopped $x ms after the client left (want < 100)"
	rc=0
	wait "$patient" || rc=$?
	((rc == 0)) || fail "patient client exited $rc"
	grep -q '^sales report: [0-9]* orders in 2 s, 42 items in stock$' \
		patient.out || fail "patient client got: $(cat patient.out)"
	grep -qE 'seconds=2: completed in [0-9]+ ms' server.err ||
		fail "patient request not logged as completed"
	end=$(($(now_ms) + 3000 + slack))
	until (($(tasks) == idle)); do
		(($(now_ms) < end)) || fail "threads: $(tasks), idle was $idle"
		sleep 0.05
	done
	stop_server
	grep -q '^shutdown: 2 requests: 1 completed, 1 canceled$' server.err ||
		fail "wrong summary"
	echo "ok: impatient request stopped $x ms after the client left;" \
		"patient one completed; 1 thread per request (+1 inventory);" \
		"threads back to $idle"
	;;
server_shutdown)
	start_server
	"${vg[@]}" "$bin/client" "$url/reports/sales?seconds=5" \
		>client.out 2>&1 &
	client=$!
	wait_for server.err 'seconds=5: started' 5
	sleep 0.2
	t0=$(now_ms)
	stop_server
	took=$(($(now_ms) - t0))
	line=$(grep 'seconds=5: canceled by shutdown (SIGTERM)' server.err) ||
		fail "in-flight request not canceled"
	x=$(ms_before "$line" 'it was requested')
	below "$x" 100 || fail "stopped $x ms after SIGTERM (want < 100)"
	grep -q '^shutdown: 1 requests: 0 completed, 1 canceled$' server.err ||
		fail "wrong summary"
	rc=0
	wait "$client" || rc=$?
	grep -q 'shutting down' client.out ||
		fail "client got: $(cat client.out)"
	echo "ok: SIGTERM stopped the server in $took ms, exit 0"
	;;
server_deadline)
	start_server
	t0=$(now_ms)
	"${vg[@]}" "$bin/client" \
		"$url/reports/sales?seconds=3&deadline_ms=300" \
		>client.out 2>&1 || fail "client exited $?"
	took=$(($(now_ms) - t0))
	grep -q 'deadline passed' client.out ||
		fail "client got: $(cat client.out)"
	((took >= 250 && took < 2000 + slack)) || fail "answer after $took ms"
	line=$(grep 'canceled by the request (deadline passed)' server.err) ||
		fail "no deadline line"
	x=$(ms_before "$line" 'it was requested')
	below "$x" $((100 + slack)) || fail "stopped $x ms after the deadline"
	stop_server
	echo "ok: 504 after $took ms, work stopped $x ms after the deadline"
	;;
report_timeout)
	t0=$(now_ms)
	rc=0
	"${vg[@]}" "$bin/report" --timeout 1 --out sales.txt >report.out \
		2>&1 || rc=$?
	took=$(($(now_ms) - t0))
	((rc == 124)) || fail "exit $rc, want 124"
	((took >= 900 && took < 1500 + slack)) || fail "took $took ms, want ~1000"
	tail -n 1 report.out |
		grep -q '^canceled: timed out (deadline passed) after' ||
		fail "last line: $(tail -n 1 report.out)"
	[[ -z $(ls -A) || $(ls -A) == report.out ]] ||
		fail "files left behind: $(ls -A)"
	echo "ok: exit 124 after $took ms, no partial file"
	;;
report_sigint)
	"${vg[@]}" "$bin/report" --out sales.txt >report.out 2>&1 &
	pid=$!
	wait_for report.out '^progress: ' 5
	sleep 0.2
	t0=$(now_ms)
	kill -INT "$pid"
	rc=0
	wait "$pid" || rc=$?
	took=$(($(now_ms) - t0))
	((rc == 130)) || fail "exit $rc, want 130"
	((took < 1000 + slack)) || fail "stopped $took ms after SIGINT"
	tail -n 1 report.out | grep -q '^canceled: interrupted (SIGINT) after' ||
		fail "last line: $(tail -n 1 report.out)"
	[[ $(ls -A) == report.out ]] || fail "files left behind: $(ls -A)"
	echo "ok: exit 130, $took ms after SIGINT, no partial file"
	;;
report_done)
	"${vg[@]}" "$bin/report" --items 200 --item-us 100 --fetch-ms 10 \
		--out sales.txt \
		>report.out 2>&1 || fail "exit $?"
	tail -n 1 report.out |
		grep -q '^finished: 200 items in .* -> sales.txt$' ||
		fail "last line: $(tail -n 1 report.out)"
	lines=$(wc -l <sales.txt)
	((lines == 201)) || fail "sales.txt has $lines lines, want 201"
	[[ $(ls -A | sort | tr '\n' ' ') == "report.out sales.txt " ]] ||
		fail "stray files: $(ls -A)"
	echo "ok: report written, no temporary file left"
	;;
timeout_sleep)
	# SIGTERM ends it at the deadline: 124.
	both 124 400 2500 5 0.5 sleep "$naptime"
	;;
timeout_trap_term)
	# The shell traps TERM and exits 3 itself: still 124 (timed out).
	both 124 400 2500 5 0.5 \
		sh -c "trap 'echo got TERM; exit 3' TERM; sleep $naptime & wait"
	grep -qx 'got TERM' ours.out || fail "trap did not run: $(cat ours.out)"
	[[ ! -f coreutils.out ]] || cmp -s ours.out coreutils.out ||
		fail "output differs from coreutils timeout"
	;;
timeout_ignore_term)
	# TERM ignored by the shell and its sleep: SIGKILL after the 1 s
	# grace, exit 137 (128 + SIGKILL) as coreutils does.
	both 137 1400 4000 1 0.5 sh -c "trap '' TERM; sleep $naptime"
	;;
timeout_pipeline)
	# The whole group goes: sh, sleep and cat.
	both 124 400 2500 5 0.5 sh -c "sleep $naptime | cat"
	;;
timeout_status)
	# No timeout: the child's own status, 128 + N for a signal.
	both 3 0 2000 5 10 sh -c 'exit 3'
	both 143 0 2000 5 10 sh -c 'kill -TERM $$'
	both 127 0 2000 5 10 no-such-command-$$
	touch noexec
	both 126 0 2000 5 10 ./noexec
	;;
timeout_sigint)
	# Ctrl-C: the child leads its own group and does not get it; the
	# tool forwards it as a cancel (SIGTERM to the group) and exits 130.
	"$bin/run_with_timeout" 20 -- \
		sh -c "echo started; sleep $naptime | cat" >ours.out 2>&1 &
	pid=$!
	wait_for ours.out '^started$' 5
	end=$(($(now_ms) + 5000))
	until leftover; do
		(($(now_ms) < end)) || fail "the pipeline's sleep never started"
		sleep 0.02
	done
	t0=$(now_ms)
	kill -INT "$pid"
	rc=0
	wait "$pid" || rc=$?
	took=$(($(now_ms) - t0))
	((rc == 130)) || fail "exit $rc after SIGINT, want 130"
	((took < 2000)) || fail "stopped $took ms after SIGINT"
	no_leftover ours
	echo "ok: exit 130, $took ms after SIGINT, nothing left running"
	;;
*)
	fail "unknown case"
	;;
esac
