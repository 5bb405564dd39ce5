#!/usr/bin/env bash
# The library built with musl-gcc (Debian: apt-get install musl-tools),
# with both wait backends (futex + eventfd, and the portable mutex/condvar
# + pipe one); for each, every cmocka test program (tests/test_*.c) and
# musl_smoke.c are built with musl-gcc against it and run.
#
# Debian has no cmocka built for musl: the tests are compiled against
# tests/musl/cmocka.{h,c}, a stand-in for the part of cmocka they use
# (same runner output and exit status). Programs are linked statically,
# so they really run on musl, except test_cond: it interposes
# pthread_cond_wait and finds musl's with dlsym(RTLD_NEXT), which needs
# musl's dynamic loader (checked to be ld-musl). On musl the library has
# no pthread_cond_clockwait: cancel_cond_wait's deadline takes the
# library-thread timer path, which test_cond and test_faults exercise
# here. test_header (the public header alone) is built with its strict
# CMake flags and run once. Not built: test_header_cpp.cpp (C++: musl-gcc
# is a C compiler only, musl-tools has no C++ library).
#
# musl-gcc ships no kernel headers; the futex backend gets <linux/*.h> and
# <asm/*.h> from the system's through a small include directory of
# symlinks. Fails on any build failure, failing or crashing test, or when
# no test ran. Prints the programs and tests run per backend, and
# "musl: checked N test programs (M tests) ..., findings F".
. "$(dirname "$0")/common.sh"

MUSL_CC=${MUSL_CC:-musl-gcc}
if ! command -v "$MUSL_CC" >/dev/null; then
	echo "musl: $MUSL_CC not found (apt-get install musl-tools)" >&2
	finish musl 0 1
	exit 1
fi
KH=$ANALYSIS/musl-kernel-headers
mkdir -p "$KH"
arch=$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)
ln -sfn /usr/include/linux "$KH/linux"
ln -sfn "/usr/include/$arch/asm" "$KH/asm"
ln -sfn /usr/include/asm-generic "$KH/asm-generic"

# Test programs not built here, with the reason.
declare -A EXCLUDED=(
	[test_header_cpp]="C++ (musl-gcc compiles C only)"
	[test_alloc]="interposes glibc's allocator (__libc_malloc); musl has none"
)
# Test programs linked dynamically (against ld-musl), with the reason.
declare -A DYNAMIC=(
	[test_cond]="interposes pthread_cond_wait, finds musl's with dlsym(RTLD_NEXT)"
	[test_lifetime]="interposes libc calls, finds musl's with dlsym(RTLD_NEXT)"
	[test_lifetime_fork]="interposes pthread_mutex_unlock (dlsym(RTLD_NEXT))"
	[test_waitpid_fallback]="interposes syscall, finds musl's with dlsym(RTLD_NEXT)"
)

FLAGS=(-std=c11 -D_GNU_SOURCE -DCANCEL_STATIC_DEFINE -O2 -g
	-Wall -Wextra -Werror -Wshadow -Wno-unused-parameter
	-I"$ROOT/include" -I"$ROOT/src" -isystem "$KH")
# As tests/CMakeLists.txt: cancel_warnings plus the tests' definitions.
TEST_FLAGS=("${FLAGS[@]}" -Wstrict-prototypes -DCANCEL_LONG_TESTS=0
	-I"$ROOT/tests/musl" -I"$ROOT/tests")
# As tests/CMakeLists.txt's test_header: strict, the header alone.
HEADER_FLAGS=(-std=c11 -O2 -Wall -Wextra -pedantic -Werror -Wshadow
	-Wconversion -Wsign-conversion -Wcast-qual -Wundef
	-Wstrict-prototypes -Wmissing-prototypes -I"$ROOT/include")

programs=0
tests=0
skipped=0
smoke=0
findings=0

for f in "$ROOT"/tests/test_*.cpp; do
	[[ -e $f ]] || continue
	n=$(basename "$f" .cpp)
	echo "musl: $n excluded: ${EXCLUDED[$n]:-C++ (not listed in EXCLUDED)}"
done

# run_prog LABEL DIR NAME TIMEOUT: run DIR/NAME, log to DIR/NAME.log;
# count its cmocka summary ("[  PASSED  ] N test(s)."), or 1 for a plain
# program.
run_prog() {
	local label=$1 dir=$2 n=$3 limit=$4 rc start passed skips
	start=$(date +%s)
	(cd "$dir" && CANCEL_LONG_TESTS=0 timeout -k 5 "$limit" "./$n") \
		>"$dir/$n.log" 2>&1
	rc=$?
	passed=$(sed -nE 's/^\[  PASSED  \] ([0-9]+) test\(s\)\.$/\1/p' \
		"$dir/$n.log" | tail -n 1)
	skips=$(sed -nE 's/^\[  SKIPPED \] ([0-9]+) test\(s\)\.$/\1/p' \
		"$dir/$n.log" | tail -n 1)
	if [[ -z $passed ]] && ! grep -q '^\[==========\]' "$dir/$n.log"; then
		passed=$((rc == 0)) # not a cmocka program: one check
	fi
	if ((rc != 0)) || [[ -z $passed ]]; then
		echo "musl: $label$n: FAILED (exit $rc), see $dir/$n.log:"
		grep -E '^\[  ERROR|^\[   LINE|^\[  FAILED  \] [0-9]' "$dir/$n.log" |
			head -n 20
		((rc == 0)) || tail -n 5 "$dir/$n.log"
		findings=$((findings + 1))
		return 1
	fi
	programs=$((programs + 1))
	tests=$((tests + passed))
	skipped=$((skipped + ${skips:-0}))
	echo "musl: $label$n: $passed passed${skips:+, $skips skipped}" \
		"($(($(date +%s) - start)) s)"
}

# The public header on its own (no library: once, not per backend).
hdir=$ANALYSIS/musl-header
rm -rf "$hdir"
mkdir -p "$hdir"
if [[ -e $ROOT/tests/test_header.c ]]; then
	if "$MUSL_CC" "${HEADER_FLAGS[@]}" -static "$ROOT/tests/test_header.c" \
		-o "$hdir/test_header" >"$hdir/build.log" 2>&1; then
		run_prog "" "$hdir" test_header 30
	else
		echo "musl: test_header: build failed:"
		head -n 20 "$hdir/build.log"
		findings=$((findings + 1))
	fi
fi

for backend in futex pthread; do
	dir=$ANALYSIS/musl-$backend
	rm -rf "$dir"
	mkdir -p "$dir"
	objs=()
	ok=1
	for f in "$ROOT"/src/*.c; do
		b=$(basename "$f" .c)
		case $backend:$b in
		futex:wait_pthread | futex:wake_pipe | futex:watch_poll) continue ;;
		pthread:wait_futex | pthread:wake_eventfd | pthread:watch_epoll)
			continue ;;
		esac
		"$MUSL_CC" "${FLAGS[@]}" -c "$f" -o "$dir/$b.o" || ok=0
		objs+=("$dir/$b.o")
	done
	if ((ok)); then
		ar rcs "$dir/libcancel.a" "${objs[@]}" &&
			"$MUSL_CC" "${FLAGS[@]}" -static \
				"$ROOT/tests/analysis/musl_smoke.c" \
				"$dir/libcancel.a" -o "$dir/musl_smoke" -lpthread &&
			"$MUSL_CC" "${TEST_FLAGS[@]}" -c \
				"$ROOT/tests/musl/cmocka.c" -o "$dir/cmocka.o" ||
			ok=0
	fi
	if ((!ok)); then
		echo "musl: $backend: build failed"
		findings=$((findings + 1))
		continue
	fi
	# A static musl binary: check it really is musl (no glibc loader).
	if file "$dir/musl_smoke" 2>/dev/null | grep -q 'dynamically linked'; then
		echo "musl: $backend: smoke test is not statically linked"
		findings=$((findings + 1))
	fi
	out=$("$dir/musl_smoke" 2>&1)
	rc=$?
	echo "musl: $backend: $out"
	n=$(sed -nE 's/.*: ([0-9]+) checks passed.*/\1/p' <<<"$out")
	if ((rc != 0)) || [[ -z $n ]]; then
		findings=$((findings + 1))
	else
		smoke=$((smoke + n))
	fi

	# The cmocka test programs.
	for f in "$ROOT"/tests/test_*.c; do
		n=$(basename "$f" .c)
		[[ $n == test_header ]] && continue
		if [[ -n ${EXCLUDED[$n]:-} ]]; then
			echo "musl: $n excluded: ${EXCLUDED[$n]}"
			continue
		fi
		# The "/* ctest: ... */" line: extra SOURCES and the TIMEOUT.
		opts=$(sed -nE 's@^/\* ctest: (.*)\*/$@\1@p' "$f" | head -n 1)
		srcs=()
		limit=120
		read -r -a words <<<"$opts"
		for ((i = 0; i < ${#words[@]}; i++)); do
			case ${words[i]} in
			TIMEOUT) limit=${words[i + 1]} ;;
			SOURCES) srcs+=("$ROOT/tests/${words[i + 1]}") ;;
			esac
		done
		link=(-static)
		if [[ -n ${DYNAMIC[$n]:-} ]]; then
			link=()
		fi
		# Absolute source paths: the fuzz replays find their corpus
		# from __FILE__, as in the CMake build.
		if ! "$MUSL_CC" "${TEST_FLAGS[@]}" "-DCANCEL_BACKEND_$backend" \
			"${link[@]}" "$f" "${srcs[@]}" "$dir/cmocka.o" \
			"$dir/libcancel.a" -o "$dir/$n" -lpthread \
			>"$dir/$n.build.log" 2>&1; then
			echo "musl: $backend: $n: build failed:"
			head -n 20 "$dir/$n.build.log"
			findings=$((findings + 1))
			continue
		fi
		kind=$(file -L "$dir/$n" 2>/dev/null)
		if [[ -n ${DYNAMIC[$n]:-} ]]; then
			if ! grep -q 'interpreter /lib/ld-musl' <<<"$kind"; then
				echo "musl: $backend: $n: not linked by ld-musl"
				findings=$((findings + 1))
				continue
			fi
		elif grep -q 'dynamically linked' <<<"$kind"; then
			echo "musl: $backend: $n: not statically linked"
			findings=$((findings + 1))
			continue
		fi
		run_prog "$backend: " "$dir" "$n" "$limit"
	done
done
for n in "${!DYNAMIC[@]}"; do
	echo "musl: $n linked dynamically (ld-musl): ${DYNAMIC[$n]}"
done
# Skipped cmocka tests must be on tests/skips.allow ("musl").
if ! "$ROOT/tests/check_skips.sh" musl "$ANALYSIS"/musl-*/*.log; then
	findings=$((findings + 1))
fi
if ((programs == 0 || tests == 0)); then
	echo "musl: no test ran"
	findings=$((findings + 1))
fi
finish musl "$programs test programs ($tests tests, $skipped skipped) and\
 $smoke smoke checks on 2 backends" "$findings"
