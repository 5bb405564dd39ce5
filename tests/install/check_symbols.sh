#!/bin/sh
# The shared library exports exactly the CANCEL_API functions of cancel.h:
# nothing missing, nothing internal (cancel__*) or stray. Run by ctest as
# exported_symbols.
#
# usage: check_symbols.sh LIBCANCEL_SO CANCEL_H
set -eu

lib=$1 header=$2
tmp=${TMPDIR:-/tmp}/cancel-symbols.$$
trap 'rm -f "$tmp".*' EXIT

sed -n 's/^CANCEL_API[^(]*[ *]\(cancel_[a-z0-9_]*\)(.*/\1/p' "$header" |
	sort -u >"$tmp.want"
nm -D --defined-only "$lib" | awk '{ print $NF }' |
	grep -v -x -e _init -e _fini -e _edata -e _end -e __bss_start |
	sort -u >"$tmp.have"

want=$(wc -l <"$tmp.want")
[ "$want" -gt 0 ] || { echo "no CANCEL_API declarations found in $header"; exit 1; }
if ! cmp -s "$tmp.want" "$tmp.have"; then
	echo "exported symbols differ from cancel.h (< declared only, > exported only):"
	diff "$tmp.want" "$tmp.have" | grep '^[<>]' || true
	exit 1
fi
echo "exported_symbols: all $want CANCEL_API functions exported, nothing else"
