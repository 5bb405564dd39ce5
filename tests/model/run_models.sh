#!/bin/sh
# Run every spin model under tests/model: the good models must verify with
# "errors: 0", each broken variant must be caught. One line per check with
# the states stored; exit status 1 on any unexpected result or on a check
# that stored 0 states. Usage: sh tests/model/run_models.sh (from any cwd).
# Needs spin and a C compiler (CC, default cc; MODEL_CFLAGS, default -O0).

set -u

dir=$(cd "$(dirname "$0")" && pwd) || exit 1
cc=${CC:-cc}
# pan.c compiles in about 1 s at -O0 against 6 s at -O2, and the largest
# search takes a few seconds either way.
cflags=${MODEL_CFLAGS:--O0}

if ! command -v spin >/dev/null 2>&1; then
	echo "run_models: spin not found" >&2
	exit 1
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/libcancel-model.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' HUP INT TERM

bad=0
nchecks=0
start=$(date +%s)

# check MODEL MODE EXPECT [SPIN_DEFINES...]
#   MODE:   safety (assertions, invalid end states)
#           np     (non-progress cycles under weak fairness; spin -DLIVE)
#   EXPECT: ok (must verify) or fail (spin must find an error)
check() {
	model=$1 mode=$2 expect=$3
	shift 3
	label="$model${*:+ $*}"
	nchecks=$((nchecks + 1))
	rm -f "$tmp"/pan* "$tmp"/*.trail
	case $mode in
	safety)
		spindefs="$*"
		ccflags="-DSAFETY"
		panflags="-m100000 -w22"
		;;
	np)
		spindefs="-DLIVE $*"
		ccflags="-DNP -DNFAIR=4"
		panflags="-l -f -m100000 -w22"
		;;
	esac
	# shellcheck disable=SC2086
	if ! (cd "$tmp" && spin $spindefs -a "$dir/$model.pml") \
	    >"$tmp/spin.out" 2>&1; then
		printf 'FAIL %-52s %-6s spin -a failed\n' "$label" "$mode"
		sed 's/^/    /' "$tmp/spin.out"
		bad=1
		return
	fi
	# shellcheck disable=SC2086
	if ! (cd "$tmp" && $cc $cflags -w $ccflags -o pan pan.c) \
	    >"$tmp/cc.out" 2>&1; then
		printf 'FAIL %-52s %-6s pan.c does not compile\n' "$label" \
		    "$mode"
		sed 's/^/    /' "$tmp/cc.out"
		bad=1
		return
	fi
	# shellcheck disable=SC2086
	(cd "$tmp" && ./pan $panflags) >"$tmp/pan.out" 2>&1
	errors=$(sed -n 's/.*errors: \([0-9][0-9]*\).*/\1/p' "$tmp/pan.out" |
	    head -n 1)
	states=$(sed -n 's/^ *\([0-9][0-9.e+]*\) states, stored.*/\1/p' \
	    "$tmp/pan.out" | head -n 1)
	secs=$(sed -n 's/^pan: elapsed time \([^ ]*\) seconds.*/\1/p' \
	    "$tmp/pan.out" | head -n 1)
	kinds='assertion violated|invalid end state|non-progress cycle'
	kinds="$kinds|acceptance cycle"
	found=$(sed -n -E "s/^pan:[0-9]+: ($kinds).*/\\1/p" "$tmp/pan.out" |
	    head -n 1)
	: "${errors:=?}" "${states:=0}" "${secs:=?}"
	verdict=FAIL
	why=
	if [ "$states" = 0 ]; then
		why="checked 0 states"
	elif grep -q 'max search depth too small' "$tmp/pan.out"; then
		why="search truncated (depth)"
	elif [ "$expect" = ok ]; then
		if [ "$errors" = 0 ]; then
			verdict=ok
		else
			why="expected errors: 0, got ${found:-errors: $errors}"
		fi
	else
		if [ "$errors" != 0 ] && [ "$errors" != "?" ] &&
		    [ -n "$found" ]; then
			verdict=caught
			why="$found"
		else
			why="the broken variant was NOT caught"
		fi
	fi
	printf '%-6s %-52s %-6s states %9s  %6ss  %s\n' "$verdict" "$label" \
	    "$mode" "$states" "$secs" "$why"
	if [ "$verdict" = FAIL ]; then
		bad=1
		sed -n '1,25p' "$tmp/pan.out" | sed 's/^/    /'
	fi
}

# callback list protocol (src/callback.c)
check callback safety ok -DSCEN=1
check callback safety ok -DSCEN=2
check callback safety ok -DSCEN=3
check callback safety ok -DSCEN=1 -DONE_CANCEL
check callback_broken_swap safety fail
check callback_broken_separate_flag safety fail
check callback_broken_released_skip safety fail
check callback_broken_destroy_touch safety fail
check callback_broken_lock_before_cas safety fail
check callback_limit_cross_unregister safety fail
check callback_limit_cross_unregister safety ok -DTRY
check callback_limit_cross_unregister safety ok -DCYCLE_BREAK
check callback_release safety ok
check callback_release safety ok -DFREE
check callback_release_broken_clear_first safety fail
check callback_release_broken_touch_cb safety fail
check callback_release_flaw_aba safety fail
check callback_release_flaw_aba safety fail -DNO_TRY
check callback_release_flaw_aba safety ok -DSTAMP
check callback_release_flaw_aba safety ok -DNO_TRY -DSTAMP

# cancellable condition wait (src/wrap_cond.c)
check condwait safety ok
check condwait safety ok -DTWO -DSPURIOUS
check condwait safety ok -DPRODUCER -DSPURIOUS
check condwait safety ok -DTWO -DPRODUCER -DSPURIOUS
check condwait safety ok -DLTCANCEL -DTWO -DSPURIOUS
check condwait safety ok -DLTCANCEL -DPRODUCER
check condwait np ok
check condwait np ok -DTWO -DSPURIOUS
check condwait np ok -DPRODUCER
check condwait np ok -DLTCANCEL -DTWO
check condwait_broken_bare_broadcast safety fail
check condwait_broken_bare_broadcast np fail
check condwait_broken_blocking_lock safety fail
check condwait_broken_blocking_lock np fail
check condwait_broken_no_passon safety fail
check condwait_flaw_lt_blocks safety fail
check condwait_flaw_lt_blocks np fail

# parking on the state word (src/source.c, src/wait_futex.c)
check waiter safety ok
check waiter_broken_count_before safety fail

# linked child destroyed while its parent cancels (src/link.c, src/source.c)
check link safety ok
check link safety ok -DQUEUED
check link safety ok -DFD
check link safety ok -DQUEUED -DFD
check link safety ok -DSELF
check link safety ok -DSELF -DQUEUED
check link_broken_no_wait safety ok
check link_broken_no_wait safety fail -DQUEUED
check link_broken_no_wait safety fail -DQUEUED -DFD
check link_broken_no_dequeue safety fail
check link safety ok -DJOIN
check link_flaw_queued_join safety fail
check link_flaw_queued_join safety ok -DDRAIN_EACH

# a deadline firing while its source is destroyed (src/libthread.c)
check timer safety ok
check timer safety ok -DSELF
check timer_broken_no_wait safety fail
check timer_broken_wait_self safety fail

# a lock-free push of a deadline racing its claim (src/libthread.c)
check timer_rearm safety ok
check timer_rearm_broken_no_recheck safety fail

# canceling from a signal handler (src/signal.c, src/libthread.c)
check signal safety ok
check signal safety ok -DPTHREAD
check signal safety ok -DTWO
check signal safety ok -DTWO -DPTHREAD
check signal np ok
check signal np ok -DPTHREAD
check signal_broken_handler_runs safety fail
check signal_broken_racy_push safety fail
check signal_broken_no_lt_wake safety fail
check signal_broken_no_lt_wake np fail

end=$(date +%s)
if [ "$bad" = 0 ]; then
	echo "run_models: all $nchecks checks as expected ($((end - start)) s)"
	exit 0
fi
echo "run_models: UNEXPECTED RESULTS (see FAIL lines above)" >&2
exit 1
