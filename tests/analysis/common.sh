# Shared by tests/analysis/run_*.sh (sourced, not run).
#
# ROOT        the source tree
# ANALYSIS    the work directory (default build/analysis; $ANALYSIS_DIR)
# JOBS        parallel build jobs (default 2)
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
ANALYSIS=${ANALYSIS_DIR:-$ROOT/build/analysis}
JOBS=${JOBS:-2}
mkdir -p "$ANALYSIS"

# configure_build DIR [cmake args...]: configure and build the tree in DIR.
configure_build() {
	local dir=$1
	shift
	cmake -S "$ROOT" -B "$dir" "$@" >"$dir.configure.log" 2>&1 ||
		{ tail -n 20 "$dir.configure.log"; return 1; }
	cmake --build "$dir" -j"$JOBS" >"$dir.build.log" 2>&1 ||
		{ grep -E 'error|warning' "$dir.build.log" | head -n 20; return 1; }
}

# The library's sources for the Linux backend (futex + eventfd).
lib_sources() {
	local f
	for f in "$ROOT"/src/*.c; do
		case $(basename "$f") in
		wait_pthread.c | wake_pipe.c | watch_poll.c) ;;
		*) echo "$f" ;;
		esac
	done
}

# finish NAME CHECKED FINDINGS: print the closing line; fail when nothing
# was checked or something was found.
finish() {
	local name=$1 checked=$2 findings=$3
	echo "$name: checked $checked, findings $findings"
	if [[ $checked == 0 || $checked == "0 "* ]]; then
		echo "$name: FAILED: nothing was checked" >&2
		return 1
	fi
	if ((findings != 0)); then
		echo "$name: FAILED" >&2
		return 1
	fi
	echo "$name: ok"
}
