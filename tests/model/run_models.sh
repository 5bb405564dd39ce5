#!/bin/sh
# Run every spin model under tests/model: the good models must verify with
# "errors: 0", each broken variant must violate the one property it was
# written to break. One line per check with the states stored; exit status
# 1 on any unexpected result or on a check that stored 0 states.
# Usage: sh tests/model/run_models.sh (from any cwd).
# Needs spin and a C compiler (CC, default cc; MODEL_CFLAGS, default -O0).
#
# The list of checks is at the end, one line per model variant:
#
#   check MODEL MODE EXPECT [SPIN_DEFINES...]
#
#   MODEL   tests/model/MODEL.pml
#   MODE    safety (assertions, invalid end states) or np (non-progress
#           cycles under weak fairness; the model sees -DLIVE)
#   EXPECT  ok: the model must verify with "errors: 0";
#           otherwise the error the variant is expected to produce, as pan
#           prints it on its first error line ("pan:1: <EXPECT> (at depth
#           N)"): 'assertion violated <expr as pan prints it>', 'invalid
#           end state', 'non-progress cycle' or 'acceptance cycle'. The
#           first error found must contain EXPECT (a fixed string, spaces
#           included: pan writes "assertion violated  !(x)" with two
#           spaces), else the line FAILs: a variant caught by some other
#           property is not the bug it was written to show.
#   SPIN_DEFINES  -DNAME passed to spin -a (model variants)
#
# To add a variant: write the .pml, run `spin -a` + pan once by hand (or
# add it with EXPECT 'x' and read the FAIL line, which shows the error
# found), then put the error text in EXPECT.

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

# check MODEL MODE EXPECT [SPIN_DEFINES...]: see the top of this file.
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
	# The first error, as pan prints it, without " (at depth N)".
	found=$(sed -n -E "s/^pan:[0-9]+: (($kinds).*)/\\1/p" "$tmp/pan.out" |
	    head -n 1 | sed 's/ (at depth [0-9]*)$//')
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
		if [ "$errors" = 0 ] || [ "$errors" = "?" ] ||
		    [ -z "$found" ]; then
			why="the broken variant was NOT caught"
		else
			case $found in
			*"$expect"*)
				verdict=caught
				why="$found"
				;;
			*)
				why="expected '$expect', got '$found'"
				;;
			esac
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
check callback_broken_swap safety 'assertion violated  !(gone[c])'
check callback_broken_separate_flag safety 'assertion violated ( !(((fromlist[a]&&fromlist[b])&&(regseq[a]<regseq[b])))||(runseq[a]>runseq[b]))'
check callback_broken_released_skip safety 'invalid end state'
check callback_broken_destroy_touch safety 'assertion violated  !(dead)'
check callback_broken_lock_before_cas safety 'assertion violated ( !(((fromlist[a]&&fromlist[b])&&(regseq[a]<regseq[b])))||(runseq[a]>runseq[b]))'
check callback_limit_cross_unregister safety 'invalid end state'
check callback_limit_cross_unregister safety ok -DTRY
check callback_limit_cross_unregister safety ok -DCYCLE_BREAK
check callback_release safety ok
check callback_release safety ok -DFREE
check callback_release_broken_clear_first safety 'assertion violated  !(running)'
check callback_release_broken_touch_cb safety 'assertion violated ( !(cb_freed)&&(cb_inc==0))'
check callback_release_flaw_aba safety 'assertion violated (rc==114)'
check callback_release_flaw_aba safety 'invalid end state' -DNO_TRY
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
check condwait_broken_bare_broadcast safety 'assertion violated wdone[0]'
check condwait_broken_bare_broadcast np 'non-progress cycle'
check condwait_broken_blocking_lock safety 'assertion violated wdone[0]'
check condwait_broken_blocking_lock np 'non-progress cycle'
check condwait_broken_no_passon safety 'assertion violated  !(((items>0)&&'
check condwait_flaw_lt_blocks safety 'assertion violated wdone[0]'
check condwait_flaw_lt_blocks np 'non-progress cycle'

# parking on the state word (src/source.c, src/wait_futex.c)
check waiter safety ok
check waiter_broken_count_before safety 'invalid end state'

# linked child destroyed while its parent cancels (src/link.c, src/source.c)
check link safety ok
check link safety ok -DQUEUED
check link safety ok -DFD
check link safety ok -DQUEUED -DFD
check link safety ok -DSELF
check link safety ok -DSELF -DQUEUED
check link_broken_no_wait safety ok
check link_broken_no_wait safety 'assertion violated  !(cfreed)' -DQUEUED
check link_broken_no_wait safety 'assertion violated  !(cfreed)' -DQUEUED -DFD
check link_broken_no_dequeue safety 'assertion violated  !(cfreed)'
check link safety ok -DJOIN
check link_flaw_queued_join safety 'invalid end state'
check link_flaw_queued_join safety ok -DDRAIN_EACH

# a deadline firing while its source is destroyed (src/libthread.c)
check timer safety ok
check timer safety ok -DSELF
check timer_broken_no_wait safety 'assertion violated  !(sfreed)'
check timer_broken_wait_self safety 'invalid end state'
check timer_broken_bcast_unlocked safety 'invalid end state'

# a lock-free push of a deadline racing its claim (src/libthread.c)
check timer_rearm safety ok
check timer_rearm_broken_no_recheck safety 'assertion violated  !((fast_ok&&fired))'

# canceling from a signal handler (src/signal.c, src/libthread.c)
check signal safety ok
check signal safety ok -DPTHREAD
check signal safety ok -DTWO
check signal safety ok -DTWO -DPTHREAD
check signal np ok
check signal np ok -DPTHREAD
check signal_broken_handler_runs safety 'invalid end state'
check signal_broken_racy_push safety 'assertion violated  !(freed[lst])'
check signal_broken_no_lt_wake safety 'invalid end state'
check signal_broken_no_lt_wake np 'non-progress cycle'

# loop delivery: a cancel moving callbacks to a queue, unregister, run
# (src/queue.c, run_list in src/source.c)
check queue safety ok
check queue safety ok -DTWO
check queue np ok -DTWO
check queue_broken_gap safety 'assertion violated (removed||((ran[c]==1)&& !(current[c])))'
check queue_broken_no_recheck safety 'assertion violated (readable==(pending>0))'

# groups: hand-over to a parked thread, wait joins every thread (src/group.c)
check group safety ok
check group safety ok -DTHREE
check group_broken_word_first safety 'assertion violated ((ran[1]==1)&&(ran[2]==1))'
check group_broken_no_join safety 'assertion violated (( !(started[0])||exited[0])&&( !(started[1])||exited[1]))'

# hang-up watches: the loop's collect and fire racing stop (src/watch.c)
check watch safety ok
check watch safety ok -DSELF
check watch_broken_unlocked_collect safety 'assertion violated  !(w_freed)'
check watch_broken_no_firing_wait safety 'assertion violated  !(src_freed)'

# hang-up watches: a waiter polling the watched descriptor itself, racing
# stop, the library thread and a hang-up (src/watch.c cancel__watch_wait)
check watch_poller safety ok
check watch_poller safety ok -DREGISTRAR
check watch_poller safety ok -DREGISTRAR -DCANCEL -DDEADLINE
check watch_poller safety ok -DSETTLE -DDEADLINE
check watch_poller safety ok -DSETTLE -DREGISTRAR
check watch_poller safety ok -DSETTLE -DREGISTRAR -DCANCEL -DDEADLINE
check watch_poller safety ok -DSHARED_CV -DREGISTRAR -DCANCEL -DDEADLINE
check watch_poller_broken_no_evict safety 'assertion violated (conn==1)'
check watch_poller_broken_no_recheck safety 'assertion violated ( !(removed)|| !(wcanceled))'
check watch_poller_broken_run_callbacks safety 'assertion violated (cb_runner!=1)'
check watch_poller_broken_no_resume safety 'assertion violated ( !(hup1)||canceled)'
check watch_poller safety ok -DTWO
check watch_poller safety ok -DTWO -DREGISTRAR -DCANCEL -DDEADLINE
check watch_poller safety ok -DTWO -DSHARED_CV
check watch_poller_broken_unlink_late safety 'invalid end state'
check watch_poller_broken_unlink_late safety 'assertion violated ( !(removed)|| !(wcanceled))' -DSHARED_CV
# a second watch of the same number, registered while stop waits for the
# evicted waiter: stop DELs only a watch still in the epoll set (WF_OUT)
check watch_poller safety ok -DSECOND
check watch_poller safety ok -DSECOND -DDEADLINE
check watch_poller safety ok -DSECOND -DTWO -DDEADLINE
check watch_poller safety ok -DSECOND -DREGISTRAR -DCANCEL -DDEADLINE
check watch_poller safety ok -DSECOND -DSHARED_CV -DDEADLINE
check watch_poller_broken_stop_always_del safety 'assertion violated ( !(hup1)||canceled2)'

# lifetime: the users count, destroy and poisoning (issue 12; src/source.c,
# callback.c, wrap_io.c, wrap_cond.c, libthread.c). touch(role) asserts
# "!freed || role", so the expected text names the thread that touched
# the freed source.
check lifetime safety ok -DIO -DUNREG
check lifetime safety ok -DCOND -DUNREG
check lifetime safety ok -DIO -DCOND
check lifetime safety ok -DIO -DTIMER
check lifetime safety ok -DCOND -DTIMER
check lifetime safety ok -DUNREG -DTIMER
check lifetime np ok -DIO -DUNREG
check lifetime np ok -DCOND
check lifetime np ok -DIO -DTIMER
check lifetime np ok -DUNREG -DTIMER
check lifetime_broken_io_poll_only safety '||io_caller)' -DPIPE
check lifetime_broken_io_poll_only safety '||io_caller)' -DREGULAR
check lifetime_broken_wait_flag safety '||unregisterer)'
check lifetime_broken_cond_early_leave safety '||cond_waiter)'
check lifetime_broken_no_user_wait safety '||io_caller)'
check lifetime_broken_timer_no_wait safety '||timer_firing)'
check lifetime_broken_no_wake safety 'invalid end state'
check lifetime_broken_no_wake np 'non-progress cycle'
check lifetime_flaw_unreg_early safety '||unregisterer)'
check lifetime_flaw_unreg_early safety ok -DPIN
check lifetime_flaw_unreg_early np ok -DPIN
check lifetime safety ok -DCOND -DUNREG -DPIN

end=$(date +%s)
if [ "$bad" = 0 ]; then
	echo "run_models: all $nchecks checks as expected ($((end - start)) s)"
	exit 0
fi
echo "run_models: UNEXPECTED RESULTS (see FAIL lines above)" >&2
exit 1
