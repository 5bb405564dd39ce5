#!/bin/sh
# Install the build to a scratch prefix, then build and run the consumer in
# this directory twice: with find_package(cancel CONFIG) and with
# pkg-config. Run by ctest as install_consumer.
#
# usage: run.sh BUILD_DIR CONSUMER_SRC WORK_DIR CMAKE CC LIBDIR shared|static
#               [PKG_CONFIG]
set -eu

build=$1 src=$2 work=$3 cmake=$4 cc=$5 libdir=$6 kind=$7
pkgconfig=${8:-pkg-config}
prefix=$work/prefix

step() { printf '== install_consumer: %s\n' "$*"; }
fail() { printf 'install_consumer: FAIL: %s\n' "$*" >&2; exit 1; }

rm -rf "$work"
mkdir -p "$work"

step "cmake --install $build --prefix $prefix"
"$cmake" --install "$build" --prefix "$prefix" >"$work/install.log" 2>&1 ||
	{ cat "$work/install.log"; fail "cmake --install failed"; }

for f in include/cancel.h "$libdir/cmake/cancel/cancel-config.cmake" \
    "$libdir/cmake/cancel/cancel-config-version.cmake" \
    "$libdir/cmake/cancel/cancel-targets.cmake" "$libdir/pkgconfig/cancel.pc"
do
	[ -f "$prefix/$f" ] || fail "not installed: $f"
done
if [ "$kind" = shared ]; then
	[ -e "$prefix/$libdir/libcancel.so.1" ] || fail "no libcancel.so.1 (SONAME)"
	[ -e "$prefix/$libdir/libcancel.so" ] || fail "no libcancel.so"
	[ ! -e "$prefix/$libdir/libcancel.a" ] || fail "shared build installed libcancel.a"
else
	[ -f "$prefix/$libdir/libcancel.a" ] || fail "no libcancel.a"
fi

step "find_package(cancel CONFIG REQUIRED)"
"$cmake" -S "$src" -B "$work/cmake" -DCMAKE_PREFIX_PATH="$prefix" \
	-DCMAKE_C_COMPILER="$cc" -DCMAKE_BUILD_TYPE=Debug \
	>"$work/cmake-configure.log" 2>&1 ||
	{ cat "$work/cmake-configure.log"; fail "consumer configure failed"; }
grep "consumer: cancel" "$work/cmake-configure.log"
grep -q "^cancel_DIR:PATH=$prefix/" "$work/cmake/CMakeCache.txt" ||
	fail "find_package found a cancel outside $prefix"
"$cmake" --build "$work/cmake" >"$work/cmake-build.log" 2>&1 ||
	{ cat "$work/cmake-build.log"; fail "consumer build failed"; }
"$work/cmake/consumer" || fail "consumer (find_package) exited $?"

step "pkg-config --cflags --libs cancel"
PKG_CONFIG_PATH=$prefix/$libdir/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}
export PKG_CONFIG_PATH
pcprefix=$("$pkgconfig" --variable=prefix cancel)
[ "$pcprefix" = "$prefix" ] ||
	fail "cancel.pc prefix is '$pcprefix', want '$prefix'"
if [ "$kind" = static ]; then
	flags=$("$pkgconfig" --static --cflags --libs cancel)
	case $flags in
	*-DCANCEL_STATIC_DEFINE*) ;;
	*) fail "static cancel.pc lacks -DCANCEL_STATIC_DEFINE: $flags" ;;
	esac
else
	flags=$("$pkgconfig" --cflags --libs cancel)
fi
echo "pkg-config: $flags"
# shellcheck disable=SC2086 # the flags are meant to split
"$cc" -std=c11 -Wall -Wextra -pedantic -Werror -o "$work/consumer-pc" \
	"$src/main.c" $flags || fail "consumer (pkg-config) build failed"
LD_LIBRARY_PATH=$prefix/$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} \
	"$work/consumer-pc" || fail "consumer (pkg-config) exited $?"

step "passed ($kind library)"
