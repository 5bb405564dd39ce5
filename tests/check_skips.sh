#!/usr/bin/env bash
# Fail on any skipped test that tests/skips.allow does not list for this
# configuration.
#
#   tests/check_skips.sh CONFIG LOG...
#
# CONFIG: the configuration (a preset name, valgrind or musl). Each LOG is
# either a ctest log (build/<preset>/Testing/Temporary/LastTest.log: each
# test's output follows its "N/M Testing: NAME" line) or a program's own
# output named PROGRAM.log (run_valgrind.sh, run_musl.sh). Counted as
# skips: cmocka's "[  SKIPPED ] TEST" lines and a whole ctest test that
# did not run ("***Skipped", "***Not Run" in a console log passed too).
# Prints "skips: N skipped in CONFIG, all allowed" or the offending ones.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
allow=$here/skips.allow
config=${1:?usage: check_skips.sh CONFIG LOG...}
shift

found=$(awk '
FNR == 1 {
	prog = FILENAME
	sub(/.*\//, "", prog)
	sub(/\.log$/, "", prog)
	sub(/\.vg$/, "", prog)
}
/^[0-9]+\/[0-9]+ Testing: / { prog = $3 }
/^\[  SKIPPED \] [A-Za-z_0-9]+$/ { print prog, $4 }
/\*\*\*(Skipped|Not Run)/ {
	# ctest console: "  3/31 Test  #3: name ....***Skipped   0.01 sec"
	for (i = 1; i <= NF; i++)
		if ($i ~ /^#[0-9]+:$/) { print $(i + 1), "(whole test)"; break }
}' "$@" | sort -u)

n=0
bad=0
while read -r prog test; do
	[[ -n $prog ]] || continue
	n=$((n + 1))
	if awk -v c="$config" -v p="$prog" -v t="$test" '
		!/^#/ && NF >= 4 && ($1 == c || $1 == "*") && $2 == p && $3 == t {
			ok = 1
		}
		END { exit !ok }' "$allow"; then
		echo "skips: $config: $prog $test: allowed"
	else
		echo "skips: $config: $prog $test: SKIPPED, not on tests/skips.allow"
		bad=$((bad + 1))
	fi
done <<<"$found"

if ((bad > 0)); then
	echo "skips: $n skipped in $config, $bad not allowed (FAILED)"
	exit 1
fi
echo "skips: $n skipped in $config, all allowed"
