#!/usr/bin/env bash
# demo.sh: libcancel's story in about ten seconds.
#
# A server builds slow sales reports. Two clients ask at once: a patient
# one gets its whole report; an impatient one gives up after 2 seconds.
# Then a command-line report generator runs into its --timeout, the
# server is stopped with SIGTERM while a request is still in flight, and
# a request fans out three fetches in a group (examples/fanout.c). The
# timeline shows what happened and how fast the abandoned work stopped.
#
# Run from anywhere: ./examples/demo.sh. It configures and builds what it
# needs in build/demo (CANCEL_DEMO_BUILD overrides), and talks to 127.0.0.1
# only. Uses curl when installed, the examples' own client otherwise
# (or when CANCEL_DEMO_NO_CURL=1).
set -euo pipefail

cd "$(dirname "$0")/.."
build=${CANCEL_DEMO_BUILD:-build/demo}
tmp=$(mktemp -d)
server_pid=
stamper_pid=
cleanup() {
	[[ -n $server_pid ]] && kill -KILL "$server_pid" 2>/dev/null
	[[ -n $stamper_pid ]] && wait "$stamper_pid" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "libcancel demo: a slow report, an impatient client, a timeout, a shutdown"
echo "(a report of N seconds holds a database connection and a call to an"
echo " inventory service for N seconds; each layer gets the request's token)"
echo
command -v cmake >/dev/null || { echo "demo: cmake is needed" >&2; exit 1; }
printf 'building the examples in %s ... ' "$build"
build_examples() {
	# Configure once; later builds re-run cmake themselves when needed.
	if [[ ! -f $build/CMakeCache.txt ]]; then
		cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release \
			-DCANCEL_BUILD_EXAMPLES=ON -DCANCEL_BUILD_TESTS=OFF \
			-DCANCEL_BUILD_BENCH=OFF || return 1
	fi
	cmake --build "$build" -j2 --target example_server example_client \
		example_report example_fanout
}
if ! build_examples >"$tmp/build.log" 2>&1; then
	echo "failed:"
	tail -n 30 "$tmp/build.log"
	exit 1
fi
echo done
case $build in
/*) bin=$build/examples ;;
*) bin=$PWD/$build/examples ;;
esac

# HTTP GET, curl-style: http_get [--max-time S] URL prints the body;
# exit 28 when it gave up.
if [[ -z ${CANCEL_DEMO_NO_CURL:-} ]] && command -v curl >/dev/null; then
	client="curl"
	http_get() { curl -s --noproxy '*' "$@"; }
else
	client="examples/client.c; curl is not installed"
	http_get() { "$bin/client" "$@"; }
fi

# stamp TEXT: one timeline line, seconds since the start.
t0=${EPOCHREALTIME/[.,]/}
stamp() {
	local t=$((${EPOCHREALTIME/[.,]/} - t0))
	printf '[%2d.%03ds] %s\n' $((t / 1000000)) $((t / 1000 % 1000)) "$*"
}
now_us() { echo "${EPOCHREALTIME/[.,]/}"; }

echo
echo "Timeline (HTTP clients: $client)"
# The server's log lines go into the timeline as they are written.
mkfifo "$tmp/log"
while IFS= read -r line; do
	stamp "    server | $line"
	printf '%s\n' "$line" >>"$tmp/server.log"
done <"$tmp/log" &
stamper_pid=$!
"$bin/server" >"$tmp/server.out" 2>"$tmp/log" &
server_pid=$!
for _ in $(seq 100); do
	grep -q '^listening' "$tmp/server.out" 2>/dev/null && break
	sleep 0.05
done
url=http://$(sed -n 's/^listening on //p' "$tmp/server.out")
[[ $url != http:// ]] || { echo "demo: the server did not start" >&2; exit 1; }
stamp "server listening on ${url#http://}"

# 1. Two clients, one patient, one impatient.
stamp "patient client:   GET /reports/sales?seconds=3"
(
	body=$(http_get "$url/reports/sales?seconds=3") || body="(failed: $?)"
	stamp "patient client:   got \"$body\""
) &
patient=$!
stamp "impatient client: GET /reports/sales?seconds=5, waits 2 s at most"
(
	rc=0
	http_get --max-time 2 "$url/reports/sales?seconds=5" >/dev/null 2>&1 ||
		rc=$?
	stamp "impatient client: gave up (exit $rc) and hung up"
) &
impatient=$!
wait "$patient" "$impatient"

# 2. A report that needs ~4.5 s, with 1 s allowed.
stamp "report --timeout 1   (needs about 4.5 s of work)"
mkdir "$tmp/out"
set +e
(cd "$tmp/out" && exec "$bin/report" --timeout 1 --out sales.txt 2>&1) |
	tee "$tmp/report.txt" |
	while IFS= read -r line; do stamp "    report | $line"; done
report_rc=${PIPESTATUS[0]}
set -e
left=$(ls -A "$tmp/out" | wc -l)
stamp "report exited $report_rc; files left in its output directory: $left"

# 3. SIGTERM while a request is in flight.
stamp "another client:   GET /reports/sales?seconds=5"
(
	body=$(http_get "$url/reports/sales?seconds=5") || true
	stamp "another client:   got \"$body\""
) &
other=$!
for _ in $(seq 100); do
	grep -q '^req 3 .*: started' "$tmp/server.log" 2>/dev/null && break
	sleep 0.05
done
sleep 0.5
stamp "sending SIGTERM to the server"
term=$(now_us)
rc=0
kill -TERM "$server_pid"
wait "$server_pid" || rc=$?
stop_ms=$((($(now_us) - term) / 1000))
server_pid=
wait "$stamper_pid" "$other"
stamper_pid=
stamp "server exited $rc, $stop_ms ms after SIGTERM"

# 4. Fan-out: three fetches for one request in a group (examples/fanout.c).
stamp "fanout   (database, upstream service and pool, in parallel)"
fan_rc=0
"$bin/fanout" >"$tmp/fanout.txt" 2>&1 || fan_rc=$?
while IFS= read -r line; do
	[[ -n $line ]] && stamp "    fanout | $line"
done <"$tmp/fanout.txt"
stamp "fanout exited $fan_rc"

# The numbers, from the logs.
log=$tmp/server.log
gone=$(sed -nE 's/.*\(client disconnected\) ([0-9.]+) ms after.*/\1/p' "$log")
id=$(sed -nE 's/^req ([0-9]+) .*canceled by the request \(client disconnected\).*/\1/p' "$log")
inv=$(grep -c "^inventory: req ${id:-0} hung up" "$log" || true)
rstop=$(sed -nE 's/.*stopped ([0-9.]+) ms after the req.*/\1/p' "$tmp/report.txt")
if ((left == 0)); then files="no partial file"; else files="$left file(s)"; fi
also=
((inv > 0)) && also=" (it noticed, and stopped looking too)"
echo
echo "Summary"
fold -s -w 76 <<SUMMARY
The impatient client left after 2 s. Its request stopped ${gone:-?} ms later, \
instead of grinding on for 3 more seconds: its database connection went \
back to the pool and its call to the inventory service was hung up$also. \
With a hundred impatient clients, that is 300 s of server work not done. \
The patient client got its whole report. The report generator hit its \
1 s timeout, stopped ${rstop:-?} ms later (it checks the token every 10 \
items), exited $report_rc (timed out) and left $files behind. On SIGTERM \
the server canceled its in-flight request, joined its threads and exited \
$rc within $stop_ms ms. In the fan-out, the upstream's failure and the \
client leaving each stopped the other fetches at once, and the group's \
wait returned only when all three had.
SUMMARY

if [[ -z $gone || $report_rc != 124 || $left != 0 || $rc != 0 ||
	$fan_rc != 0 ]]; then
	echo "demo: that is not what should have happened" >&2
	exit 1
fi
