#!/usr/bin/env bash
# cppcheck over the library, the tests, the fuzz targets and the examples:
#   --enable=warning,performance,portability --error-exitcode=1
#   --inline-suppr
# (style findings are not enabled). Suppressions, if ever needed, go inline
# as "// cppcheck-suppress <id>" with a comment saying why. Prints the
# number of files checked and of findings.
. "$(dirname "$0")/common.sh"

mapfile -t FILES < <(cd "$ROOT" && ls src/*.c tests/*.c fuzz/*.c \
	examples/*.c tests/analysis/*.c 2>/dev/null)
log=$ANALYSIS/cppcheck.log
rc=0
(cd "$ROOT" && cppcheck --enable=warning,performance,portability \
	--error-exitcode=1 --inline-suppr --std=c11 \
	--template='{file}:{line}: {severity}: {message} [{id}]' \
	-D_GNU_SOURCE -D__linux__ -D__x86_64__ -DCANCEL_STATIC_DEFINE \
	-Iinclude -Isrc --quiet "${FILES[@]}") >"$log" 2>&1 || rc=$?
cat "$log"
findings=$(grep -cE ': (error|warning|performance|portability): ' "$log")
if ((rc != 0 && findings == 0)); then
	findings=1 # cppcheck failed without a parsable finding
fi
finish cppcheck "${#FILES[@]} files" "$findings"
