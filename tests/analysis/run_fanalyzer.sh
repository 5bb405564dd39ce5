#!/usr/bin/env bash
# gcc -fanalyzer over every file of src/ (both wait backends), with the
# project's warnings. Any analyzer or compiler warning is a finding.
# Suppressions, if ever needed, go in the code as
# "#pragma GCC diagnostic ignored" around the line, with the reason.
. "$(dirname "$0")/common.sh"

CC=${CC:-gcc}
files=0
findings=0
log=$ANALYSIS/fanalyzer.log
: >"$log"
for f in "$ROOT"/src/*.c; do
	files=$((files + 1))
	out=$("$CC" -std=c11 -D_GNU_SOURCE -DCANCEL_BUILDING -I"$ROOT/include" \
		-I"$ROOT/src" -Wall -Wextra -Wshadow -Wno-unused-parameter \
		-fanalyzer -O1 -c "$f" -o /dev/null 2>&1)
	if [[ -n $out ]]; then
		echo "$out" | tee -a "$log"
		n=$(grep -c 'warning:\|error:' <<<"$out")
		findings=$((findings + (n > 0 ? n : 1)))
	fi
done
finish fanalyzer "$files files" "$findings"
