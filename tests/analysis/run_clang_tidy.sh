#!/usr/bin/env bash
# clang-tidy over src/*.c with clang-analyzer-*, bugprone-* and
# concurrency-*, using the compile_commands.json of a build configured
# with CMAKE_EXPORT_COMPILE_COMMANDS=ON. Every diagnostic is a finding,
# except those listed, with their reason, in clang_tidy.supp next to this
# script. Two checks are off as a whole:
#   clang-analyzer-security.insecureAPI.DeprecatedOrUnsafeBufferHandling
#     asks for C11 Annex K memset_s/memcpy_s, which glibc and musl do not
#     provide;
#   bugprone-easily-swappable-parameters
#     flags adjacent parameters of one type, which the SPEC's and
#     internal.h's fixed signatures have (park(word, expected, deadline)).
# A file counts as checked only when clang-tidy ran on it and exited 0
# (warnings do not change its status; a compile error, a crash or a
# missing tool do): a missing clang-tidy or a file not analysed fails the
# script. Prints the number of files checked, findings and suppressed
# findings.
. "$(dirname "$0")/common.sh"

TIDY=${CLANG_TIDY:-clang-tidy}
if ! command -v "$TIDY" >/dev/null 2>&1; then
	echo "clang-tidy: $TIDY not found (apt-get install clang-tidy)" >&2
	finish clang-tidy 0 1
	exit 1
fi
BUILD=$ANALYSIS/tidy
configure_build "$BUILD" -DCMAKE_EXPORT_COMPILE_COMMANDS=ON \
	-DCMAKE_BUILD_TYPE=Debug -DCANCEL_BUILD_BENCH=OFF \
	-DCANCEL_BUILD_EXAMPLES=OFF || exit 1
CHECKS='-*,clang-analyzer-*,bugprone-*,concurrency-*'
CHECKS+=',-clang-analyzer-security.insecureAPI.DeprecatedOrUnsafeBufferHandling'
CHECKS+=',-bugprone-easily-swappable-parameters'

mapfile -t FILES < <(cd "$BUILD" && python3 -c '
import json
for e in json.load(open("compile_commands.json")):
    f = e["file"]
    if "/src/" in f and f.endswith(".c"):
        print(f)
' | sort -u)
log=$ANALYSIS/clang-tidy.log
: >"$log"
checked=0
failures=0
for f in "${FILES[@]}"; do
	rc=0
	"$TIDY" -p "$BUILD" --checks="$CHECKS" --quiet "$f" >>"$log" \
		2>"$log.err" || rc=$?
	# Warnings leave the status 0; an error (the file did not compile,
	# the tool crashed) makes it non-zero: the file was not analysed.
	if ((rc != 0)); then
		echo "clang-tidy: $f: not analysed (exit $rc):" >&2
		head -n 10 "$log.err" >&2
		failures=$((failures + 1))
		continue
	fi
	checked=$((checked + 1))
done
if ((${#FILES[@]} == 0)); then
	echo "clang-tidy: no src/*.c in $BUILD/compile_commands.json" >&2
fi

read -r findings suppressed < <(python3 - "$log" "$ROOT" \
	"$(dirname "$0")/clang_tidy.supp" <<'PY'
import re, sys
log, root, supp = sys.argv[1:4]
rules = []
for line in open(supp):
    line = line.strip()
    if not line or line.startswith("#"):
        continue
    f, check, rx, why = line.split("|", 3)
    rules.append((f, check, re.compile(rx), why))
diag = re.compile(r"^(.*?):(\d+):\d+: (warning|error): (.*) \[([^\]]+)\]$")
found = supp_n = 0
seen = set()
for line in open(log):
    m = diag.match(line.rstrip("\n"))
    if not m:
        continue
    path, ln, _, msg, checks = m.groups()
    key = (path, ln, checks)
    if key in seen:
        continue
    seen.add(key)
    rel = path[len(root) + 1:] if path.startswith(root + "/") else path
    try:
        src = open(path).read().splitlines()[int(ln) - 1]
    except (OSError, IndexError):
        src = ""
    check = checks.split(",")[0]
    hit = [r for r in rules if r[0] == rel and r[1] == check and r[2].search(src)]
    if hit:
        supp_n += 1
        print(f"suppressed: {rel}:{ln} [{check}]: {hit[0][3]}", file=sys.stderr)
    else:
        found += 1
        print(f"finding: {rel}:{ln}: {msg} [{check}]", file=sys.stderr)
print(found, supp_n)
PY
)
if [[ -z ${findings:-} ]]; then
	echo "clang-tidy: the log could not be parsed (python3?)" >&2
	findings=1 suppressed=0
fi
echo "clang-tidy: $suppressed suppressed (see clang_tidy.supp)"
finish clang-tidy "$checked files" $((findings + failures))
