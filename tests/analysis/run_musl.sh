#!/usr/bin/env bash
# The library built with musl-gcc (Debian: apt-get install musl-tools),
# with both wait backends (futex + eventfd, and the portable mutex/condvar
# + pipe one), each linked into musl_smoke.c and run. cmocka has no musl
# build, so the cmocka tests are not built against musl; the smoke test
# covers the core, the waits (the condition-wait deadline takes the
# library-thread timer path on musl: no pthread_cond_clockwait), I/O,
# waitpid and signals. musl-gcc ships no kernel headers; the futex backend
# gets <linux/*.h> and <asm/*.h> from the system's through a small include
# directory of symlinks. Prints the checks passed per backend.
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

FLAGS=(-std=c11 -D_GNU_SOURCE -DCANCEL_STATIC_DEFINE -O2 -g
	-Wall -Wextra -Werror -Wshadow -Wno-unused-parameter
	-I"$ROOT/include" -I"$ROOT/src" -isystem "$KH")
total=0
findings=0
for backend in futex pthread; do
	dir=$ANALYSIS/musl-$backend
	rm -rf "$dir"
	mkdir -p "$dir"
	objs=()
	ok=1
	for f in "$ROOT"/src/*.c; do
		b=$(basename "$f" .c)
		case $backend:$b in
		futex:wait_pthread | futex:wake_pipe) continue ;;
		pthread:wait_futex | pthread:wake_eventfd) continue ;;
		esac
		"$MUSL_CC" "${FLAGS[@]}" -c "$f" -o "$dir/$b.o" || ok=0
		objs+=("$dir/$b.o")
	done
	if ((ok)); then
		ar rcs "$dir/libcancel.a" "${objs[@]}" &&
			"$MUSL_CC" "${FLAGS[@]}" -static \
				"$ROOT/tests/analysis/musl_smoke.c" \
				"$dir/libcancel.a" -o "$dir/musl_smoke" -lpthread ||
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
		total=$((total + n))
	fi
done
finish musl "$total smoke checks on 2 backends" "$findings"
