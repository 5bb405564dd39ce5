/*
 * A waiter watches for itself: a thread in cancel_wait() on a watched
 * source with no callbacks polls the watched descriptor on its own thread
 * (src/watch.c, "A waiter watches for itself"; tests/model/
 * watch_poller.pml). Checked: the hang-up cancels at once without waking
 * the library thread; callbacks, even ones registered while it polls,
 * still run on the library thread; a stop evicts the poller before it
 * returns, so the number can be closed and reused; a cancel, a signal
 * handler's cancel or the deadline end the poll and put the watch back
 * (and a kernel that refuses it back fires it with ENOMEM); a second
 * waiter parks; a half-close is ignored with the flag; a stop racing the
 * hang-up is one or the other; a forked child polls with a descriptor of
 * its own. Both backends (epoll: dev, asan, tsan; poll: pthread). Sources
 * and watches live on the heap and are freed the moment stop, destroy or
 * the wait returns.
 */
/* ctest: TIMEOUT 300 LABELS watch */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "atomic.h"
#include "cancel.h"
#include "internal.h"
#include "watch.h"
#include "testutil.h"
#include "watch_util.h"

TU_THREADS_AFTER_FORK

/* ------------------------------------------------------------------ */
/* Helpers                                                            */
/* ------------------------------------------------------------------ */

/* A thread in one cancel_wait on @src, with a relative deadline or none. */
struct waiter {
	pthread_t t;
	struct cancel_source *src;
	uint64_t ns; /* 0: no deadline */
	int rc;
	int done;
};

static void *
waiter_main(void *arg)
{
	struct waiter *k = arg;
	struct timespec dl;
	if (k->ns != 0)
		dl = cancel_deadline_in(k->ns);
	int rc = cancel_wait(k->ns != 0 ? &dl : NULL,
	                     cancel_source_token(k->src));
	k->rc = rc;
	tu_signal(&k->done);
	return NULL;
}

static struct waiter *
waiter_start(struct cancel_source *src, uint64_t ns)
{
	struct waiter *k = calloc(1, sizeof *k);
	assert_non_null(k);
	k->src = src;
	k->ns = ns;
	k->t = tu_spawn(waiter_main, k);
	return k;
}

/* Join @k (bounded: a lost wake-up fails here, not at ctest's timeout),
 * return its result and free it. */
static int
waiter_end(struct waiter *k)
{
	uint64_t end = tu_now_ms() + PATIENCE / MS;
	while (!ld_acquire(&k->done)) {
		assert_true(tu_now_ms() < end);
		tu_nap();
	}
	tu_join(k->t);
	int rc = k->rc;
	free(k);
	return rc;
}

/* Wait (bounded) until @n waiters poll a watched descriptor. */
static void
await_pollers(int n)
{
	uint64_t end = tu_now_ms() + 10000;
	while (cancel__test_watch_pollers() != n) {
		assert_true(tu_now_ms() < end);
		tu_nap();
	}
}

static struct cancel_source *
src_new(void)
{
	struct cancel_source *s = malloc(sizeof *s);
	assert_non_null(s);
	cancel_source_init(s);
	return s;
}

static struct cancel_watch *
watch_new(void)
{
	struct cancel_watch *w = malloc(sizeof *w);
	assert_non_null(w);
	*w = (struct cancel_watch)CANCEL_WATCH_INITIALIZER;
	return w;
}

/* Stop @w, check the result and free it at once. */
static void
watch_end(struct cancel_watch *w, bool stopped)
{
	assert_int_equal(cancel_watch_stop(w), stopped);
	free(w);
}

static void
src_end(struct cancel_source *s)
{
	assert_int_equal(cancel_source_destroy(s), 0);
	free(s);
}

/* A connected pair (TCP or a socketpair), a new source and a watch of
 * *@s on it, with @flags. */
static void
open_watched(bool tcp, unsigned flags, int *s, int *c,
             struct cancel_source **src, struct cancel_watch **w)
{
	if (tcp)
		tcp_pair(s, c);
	else
		unix_pair(s, c);
	*src = src_new();
	*w = watch_new();
	assert_int_equal(cancel_watch_hangup(*w, *s, flags, *src), 0);
}

/* open_watched, then a waiter on the source that polls the watch. */
static struct waiter *
polled_watch(bool tcp, unsigned flags, int *s, int *c,
             struct cancel_source **src, struct cancel_watch **w)
{
	open_watched(tcp, flags, s, c, src, w);
	struct waiter *k = waiter_start(*src, 0);
	await_pollers(1);
	return k;
}

/* Stop @w (check @stopped, free it), close @s, destroy and free @src. */
static void
close_watched(struct cancel_watch *w, bool stopped, int s,
              struct cancel_source *src)
{
	watch_end(w, stopped);
	close(s);
	src_end(src);
}

/* @s was canceled by a hang-up watch: reason, message, origin. */
static void
expect_hang_up(struct cancel_source *s)
{
	struct cancel_cause c;
	assert_true(cancel_token_cause(cancel_source_token(s), &c));
	assert_int_equal(c.reason, ECONNRESET);
	assert_string_equal(c.msg, "peer hung up");
	assert_ptr_equal(c.origin, s);
}

/* Close the peer @c: the waiter @k returns ECANCELED, @src canceled by
 * the hang-up. */
static void
hang_up_ends_the_wait(int c, struct waiter *k, struct cancel_source *src)
{
	close(c);
	assert_int_equal(waiter_end(k), ECANCELED);
	expect_hang_up(src);
}

static void
expect_quiet(struct cancel_source *s)
{
	struct timespec dl = cancel_deadline_in(QUIET);
	assert_int_equal(cancel_wait(&dl, cancel_source_token(s)), ETIMEDOUT);
}

static void
expect_canceled(struct cancel_source *s)
{
	struct timespec dl = cancel_deadline_in(PATIENCE);
	assert_int_equal(cancel_wait(&dl, cancel_source_token(s)), ECANCELED);
}

/* The library thread's tid (named cancel-lib), or -1. */
static int
find_lib_tid(void)
{
	DIR *d = opendir("/proc/self/task");
	assert_non_null(d);
	int tid = -1;
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		char path[300], name[32] = {0};
		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof path, "/proc/self/task/%s/comm",
		         e->d_name);
		FILE *f = fopen(path, "r");
		if (f == NULL)
			continue;
		if (fgets(name, sizeof name, f) != NULL &&
		    strncmp(name, "cancel-lib", 10) == 0)
			tid = atoi(e->d_name);
		fclose(f);
	}
	closedir(d);
	return tid;
}

/* The same, once it has named itself (it may just have started). */
static int
lib_tid(void)
{
	uint64_t end = tu_now_ms() + 10000;
	int tid;
	while ((tid = find_lib_tid()) < 0) {
		assert_true(tu_now_ms() < end);
		tu_nap();
	}
	return tid;
}

/* Context switches of thread @tid so far: one per wake-up from a sleep. */
static long
switches(int tid)
{
	char path[64], line[128];
	snprintf(path, sizeof path, "/proc/self/task/%d/status", tid);
	FILE *f = fopen(path, "r");
	assert_non_null(f);
	long n = 0, v;
	while (fgets(line, sizeof line, f) != NULL)
		if (sscanf(line, "voluntary_ctxt_switches: %ld", &v) == 1 ||
		    sscanf(line, "nonvoluntary_ctxt_switches: %ld", &v) == 1)
			n += v;
	fclose(f);
	return n;
}

/* True if thread @tid is asleep (state S in its stat line). */
static bool
asleep(int tid)
{
	char path[64], line[512];
	snprintf(path, sizeof path, "/proc/self/task/%d/stat", tid);
	FILE *f = fopen(path, "r");
	assert_non_null(f);
	bool ok = fgets(line, sizeof line, f) != NULL;
	fclose(f);
	const char *p = ok ? strrchr(line, ')') : NULL;
	return p != NULL && p[1] == ' ' && p[2] == 'S';
}

/* The count once the thread has gone back to sleep: asleep and unchanged
 * over 50 ms (a stop's or a takeover's kick may still be on its way, and
 * a starved thread is runnable, not asleep). */
static long
settled_switches(int tid)
{
	long a = switches(tid);
	for (int i = 0; i < 200; i++) {
		struct timespec ts = {0, 50 * 1000000L};
		nanosleep(&ts, NULL);
		long b = switches(tid);
		if (a == b && asleep(tid))
			return a;
		a = b;
	}
	fail_msg("the library thread never went back to sleep");
	return -1;
}

/* ------------------------------------------------------------------ */
/* The hang-up                                                        */
/* ------------------------------------------------------------------ */

static void
a_polling_waiter_returns_at_the_hang_up_and_the_library_thread_sleeps_on(
    void **state)
{
	(void)state;
	int tid = lib_tid();
	for (int round = 0; round < 2; round++) {
		int s, c;
		if (round == 0)
			tcp_pair(&s, &c);
		else
			unix_pair(&s, &c);
		struct cancel_source *src = src_new();
		struct cancel_watch *w = watch_new();
		assert_int_equal(cancel_watch_hangup(w, s, 0, src), 0);
		struct waiter *k = waiter_start(src, 0);
		await_pollers(1);
		long before = settled_switches(tid);
		close(c);
		assert_int_equal(waiter_end(k), ECANCELED);
		expect_hang_up(src);
		/* The library thread was not woken by this hang-up. */
		assert_int_equal(switches(tid), before);
		await_pollers(0);
		watch_end(w, false);
		close(s);
		src_end(src);
	}
}

static int cb_on_lt = -1;
static int cb_runs;

static void
note_thread(void *arg)
{
	(void)arg;
	st_release(&cb_on_lt, cancel__lt_is_self() ? 1 : 0);
	fetch_add_acq_rel(&cb_runs, 1);
}

/* A heap callback on @src that notes its runs and its thread. */
static struct cancel_callback *
noting_callback(struct cancel_source *src)
{
	struct cancel_callback *cb = malloc(sizeof *cb);
	assert_non_null(cb);
	st_relaxed(&cb_runs, 0);
	st_relaxed(&cb_on_lt, -1);
	assert_true(cancel_callback_register(cb, note_thread, NULL,
	                                     cancel_source_token(src)));
	return cb;
}

/* @cb runs once, on the library thread; then unregister it (waits for it
 * if it still runs) and free it. The waiter returns as soon as the source
 * shows CANCELED, which may be before the library thread reached @cb: an
 * unregister then would remove it unrun. */
static void
expect_ran_on_library_thread(struct cancel_callback *cb)
{
	uint64_t end = tu_now_ms() + PATIENCE / MS;
	while (ld_acquire(&cb_runs) == 0) {
		assert_true(tu_now_ms() < end);
		tu_nap();
	}
	cancel_callback_unregister(cb);
	free(cb);
	assert_int_equal(ld_acquire(&cb_runs), 1);
	assert_int_equal(ld_acquire(&cb_on_lt), 1);
}

static void
a_callback_added_while_polling_runs_on_the_library_thread(void **state)
{
	(void)state;
	int s, c;
	struct cancel_source *src;
	struct cancel_watch *w;
	struct waiter *k = polled_watch(false, 0, &s, &c, &src, &w);
	/* After the takeover: the waiter sees it under the source's lock
	 * and hands the watch to the library thread. */
	struct cancel_callback *cb = noting_callback(src);
	hang_up_ends_the_wait(c, k, src);
	expect_ran_on_library_thread(cb);
	close_watched(w, false, s, src);
}

static void
a_source_with_callbacks_is_left_to_the_library_thread(void **state)
{
	(void)state;
	int s, c;
	struct cancel_source *src;
	struct cancel_watch *w;
	open_watched(false, 0, &s, &c, &src, &w);
	struct cancel_callback *cb = noting_callback(src);
	struct waiter *k = waiter_start(src, 0);
	tu_await_waiters_bounded(src, 1);
	expect_quiet(src);
	assert_int_equal(cancel__test_watch_pollers(), 0);
	hang_up_ends_the_wait(c, k, src);
	expect_ran_on_library_thread(cb);
	close_watched(w, false, s, src);
}

static void
half_close_with_the_flag_does_not_end_the_poll(void **state)
{
	(void)state;
	int s, c;
	struct cancel_source *src;
	struct cancel_watch *w;
	struct waiter *k = polled_watch(true, CANCEL_WATCH_IGNORE_HALF_CLOSE, &s,
	                                &c, &src, &w);
	assert_int_equal(write(c, "GET / HTTP/1.1\r\n\r\n", 18), 18);
	assert_int_equal(shutdown(c, SHUT_WR), 0);
	expect_quiet(src);
	assert_int_equal(cancel__test_watch_pollers(), 1);
	assert_int_equal(ld_acquire(&k->done), 0);
	/* The reply draws a reset from the closed client: that cancels. */
	close(c);
	assert_int_equal(write(s, "HTTP/1.1 200 OK\r\n\r\n", 19), 19);
	assert_int_equal(waiter_end(k), ECANCELED);
	expect_hang_up(src);
	close_watched(w, false, s, src);
}

/* ------------------------------------------------------------------ */
/* Stop                                                               */
/* ------------------------------------------------------------------ */

static void
stop_evicts_the_poller_before_it_returns_and_the_number_can_be_reused(
    void **state)
{
	(void)state;
	int s, c;
	struct cancel_source *src;
	struct cancel_watch *w;
	struct waiter *k = polled_watch(false, 0, &s, &c, &src, &w);
	watch_end(w, true);
	/* Nobody polls the number any more: close it and reuse it. */
	assert_int_equal(cancel__test_watch_pollers(), 0);
	close(s);
	int s2, c2;
	unix_pair(&s2, &c2);
	assert_int_equal(s2, s);
	/* The new connection's hang-up cancels nothing, and the close of the
	 * old one reached its peer (no thread still holds the file). */
	close(c2);
	char b;
	assert_int_equal(read(c, &b, 1), 0);
	close(c);
	expect_quiet(src);
	assert_int_equal(ld_acquire(&k->done), 0);
	/* The evicted waiter parks on the source like any other. */
	assert_true(cancel_source_cancel_with(src, EPIPE));
	assert_int_equal(waiter_end(k), ECANCELED);
	assert_int_equal(cancel_token_reason(cancel_source_token(src)), EPIPE);
	close(s2);
	src_end(src);
}

/* A stop racing the poller's hang-up: either the stop came first (true,
 * the watch never cancels) or the hang-up did (false, ECONNRESET). */
static void
stop_racing_the_pollers_hang_up_is_one_or_the_other(void **state)
{
	(void)state;
	long rounds = tu_rounds(200, 2000);
	int stopped = 0, fired = 0;
	for (long i = 0; i < rounds; i++) {
		int s, c;
		struct cancel_source *src;
		struct cancel_watch *w;
		open_watched(false, 0, &s, &c, &src, &w);
		struct waiter *k = waiter_start(src, 0);
		await_pollers(1);
		close(c);
		bool st = cancel_watch_stop(w);
		tu_poison(w, sizeof *w);
		close(s);
		if (st) {
			stopped++;
			/* The watch did not cancel, and never will. */
			assert_false(
			    cancel_token_is_canceled(cancel_source_token(src)));
			assert_true(cancel_source_cancel_with(src, EPIPE));
			assert_int_equal(waiter_end(k), ECANCELED);
			assert_int_equal(
			    cancel_token_reason(cancel_source_token(src)),
			    EPIPE);
		} else {
			fired++;
			assert_int_equal(waiter_end(k), ECANCELED);
			expect_hang_up(src);
		}
		assert_true(tu_poisoned(w, sizeof *w));
		free(w);
		src_end(src);
	}
	print_message("stop first %d, hang-up first %d\n", stopped, fired);
	assert_int_equal(stopped + fired, rounds);
}

#ifdef CANCEL_BACKEND_futex
/* While a waiter polls it, the watch is out of the epoll set: a second
 * watch of the same number is still refused, as the kernel would. */
static void
a_second_watch_of_a_polled_descriptor_is_still_eexist(void **state)
{
	(void)state;
	int s, c;
	unix_pair(&s, &c);
	struct cancel_source *src = src_new();
	struct cancel_source *other = src_new();
	struct cancel_watch *w = watch_new(), *w2 = watch_new();
	assert_int_equal(cancel_watch_hangup(w, s, 0, src), 0);
	struct waiter *k = waiter_start(src, 0);
	await_pollers(1);
	assert_int_equal(cancel_watch_hangup(w2, s, 0, other), EEXIST);
	assert_false(cancel_watch_stop(w2)); /* idle */
	free(w2);
	hang_up_ends_the_wait(c, k, src);
	assert_false(cancel_token_is_canceled(cancel_source_token(other)));
	close_watched(w, false, s, src);
	src_end(other);
}

/* A watch that a waiter fired stays out of the epoll set until its stop,
 * but still holds its number: a second watch is EEXIST until then, and
 * the stop then leaves the number to the next watch (no DEL of it). */
static void
a_fired_polled_watch_holds_its_number_until_its_stop(void **state)
{
	(void)state;
	int s, c;
	struct cancel_source *src;
	struct cancel_watch *w;
	struct waiter *k = polled_watch(false, 0, &s, &c, &src, &w);
	assert_int_equal(shutdown(c, SHUT_WR), 0); /* the waiter fires */
	assert_int_equal(waiter_end(k), ECANCELED);
	expect_hang_up(src);
	struct cancel_source *other = src_new();
	struct cancel_watch *w2 = watch_new();
	assert_int_equal(cancel_watch_hangup(w2, s, 0, other), EEXIST);
	watch_end(w, false);
	assert_int_equal(cancel_watch_hangup(w2, s, 0, other), 0);
	close(c);
	expect_canceled(other);
	expect_hang_up(other);
	close_watched(w2, false, s, other);
	src_end(src);
}

static struct cancel_watch *race_w2;
static struct cancel_source *race_src2;
static int race_fd;
static int race_go;
static int race_rc;

/* Watch race_fd for race_src2 as soon as the number is free. */
static void *
watch_when_free(void *arg)
{
	(void)arg;
	tu_signal(&race_go);
	int rc;
	while ((rc = cancel_watch_hangup(race_w2, race_fd, 0, race_src2)) ==
	       EEXIST)
		;
	st_release(&race_rc, rc);
	return NULL;
}

/* A stop of a polled watch waits for the poller with the lock released;
 * a new watch of the same number may be registered meanwhile, and the
 * stop must not take that registration out with a DEL of the number. */
static void
a_stop_racing_a_new_watch_of_the_number_leaves_it_registered(void **state)
{
	(void)state;
	long rounds = tu_rounds(100, 1000);
	for (long i = 0; i < rounds; i++) {
		int s, c;
		struct cancel_source *src;
		struct cancel_watch *w;
		struct waiter *k = polled_watch(false, 0, &s, &c, &src, &w);
		race_src2 = src_new();
		race_w2 = watch_new();
		race_fd = s;
		st_relaxed(&race_go, 0);
		pthread_t y = tu_spawn(watch_when_free, NULL);
		tu_await(&race_go);
		watch_end(w, true);
		tu_join(y);
		assert_int_equal(ld_acquire(&race_rc), 0);
		/* The new watch is the one in the kernel now. */
		close(c);
		expect_canceled(race_src2);
		expect_hang_up(race_src2);
		close_watched(race_w2, false, s, race_src2);
		assert_true(cancel_source_cancel(src));
		assert_int_equal(waiter_end(k), ECANCELED);
		src_end(src);
	}
}
#endif

/* ------------------------------------------------------------------ */
/* The other ways out of the poll                                     */
/* ------------------------------------------------------------------ */

static void
a_cancel_wakes_the_poller_and_a_later_hang_up_still_fires_the_watch(
    void **state)
{
	(void)state;
	int s, c;
	struct cancel_source *src;
	struct cancel_watch *w;
	struct waiter *k = polled_watch(false, 0, &s, &c, &src, &w);
	assert_true(cancel_source_cancel_with(src, EPIPE));
	assert_int_equal(waiter_end(k), ECANCELED);
	assert_int_equal(cancel_token_reason(cancel_source_token(src)), EPIPE);
	await_pollers(0);
	/* The watch went back to the library thread: its hang-up is still
	 * reported there (FIRED), and the stop then says "fired". */
	close(c);
	uint64_t end = tu_now_ms() + 10000;
	while (cancel__test_watch_state(w) != CANCEL__W_FIRED) {
		assert_true(tu_now_ms() < end);
		tu_nap();
	}
	close_watched(w, false, s, src);
}

static void
the_deadline_ends_the_poll_and_a_later_hang_up_still_cancels(void **state)
{
	(void)state;
	int s, c;
	struct cancel_source *src;
	struct cancel_watch *w;
	open_watched(false, 0, &s, &c, &src, &w);
	uint64_t t0 = tu_now_ns();
	struct waiter *k = waiter_start(src, 100 * MS);
	assert_int_equal(waiter_end(k), ETIMEDOUT);
	uint64_t dt = tu_now_ns() - t0;
	assert_true(dt >= 100 * MS && dt < 5000 * MS);
	await_pollers(0);
	/* Back on the library thread, which cancels at the hang-up. */
	close(c);
	expect_canceled(src);
	expect_hang_up(src);
	close_watched(w, false, s, src);
}

static void
a_second_waiter_parks_and_both_return_at_the_hang_up(void **state)
{
	(void)state;
	int s, c;
	struct cancel_source *src;
	struct cancel_watch *w;
	open_watched(true, 0, &s, &c, &src, &w);
	struct waiter *a = waiter_start(src, 0);
	await_pollers(1);
	struct waiter *b = waiter_start(src, 0);
	tu_await_waiters_bounded(src, 2);
	assert_int_equal(cancel__test_watch_pollers(), 1);
	close(c);
	assert_int_equal(waiter_end(a), ECANCELED);
	assert_int_equal(waiter_end(b), ECANCELED);
	expect_hang_up(src);
	close_watched(w, false, s, src);
}

static void
a_hang_up_on_one_of_two_watches_wakes_the_poller_of_the_other(void **state)
{
	(void)state;
	int s1, c1, s2, c2;
	unix_pair(&s1, &c1);
	unix_pair(&s2, &c2);
	struct cancel_source *src = src_new();
	struct cancel_watch *w1 = watch_new(), *w2 = watch_new();
	assert_int_equal(cancel_watch_hangup(w1, s1, 0, src), 0);
	assert_int_equal(cancel_watch_hangup(w2, s2, 0, src), 0);
	struct waiter *a = waiter_start(src, 0);
	await_pollers(1);
	struct waiter *b = waiter_start(src, 0);
	await_pollers(2);
	close(c2);
	assert_int_equal(waiter_end(a), ECANCELED);
	assert_int_equal(waiter_end(b), ECANCELED);
	expect_hang_up(src);
	/* The one that hung up fired; the other was stopped in time. */
	watch_end(w2, false);
	watch_end(w1, true);
	close(c1);
	close(s1);
	close(s2);
	src_end(src);
}

static struct cancel_source *sig_target;

static void
on_usr1(int signo)
{
	(void)signo;
	cancel_source_cancel_from_signal(sig_target, EINTR);
}

static void
a_signal_handlers_cancel_wakes_the_poller(void **state)
{
	(void)state;
	int s, c;
	struct cancel_source *src;
	struct cancel_watch *w;
	struct waiter *k = polled_watch(false, 0, &s, &c, &src, &w);
	struct sigaction old;
	sig_target = src;
	tu_install_handler(SIGUSR1, on_usr1, 0, &old);
	raise(SIGUSR1);
	tu_restore_handler(SIGUSR1, &old);
	/* The handler cannot take the watch lock: the deferred finish on
	 * the library thread wakes the poller. */
	assert_int_equal(waiter_end(k), ECANCELED);
	assert_int_equal(cancel_token_reason(cancel_source_token(src)), EINTR);
	watch_end(w, true);
	close(c);
	close(s);
	src_end(src);
}

static void
the_kernel_refusing_the_watch_back_fires_it_with_enomem(void **state)
{
	(void)state;
	int s, c;
	struct cancel_source *src;
	struct cancel_watch *w;
	open_watched(false, 0, &s, &c, &src, &w);
	cancel__test_fail_watch_resume(1);
	struct waiter *k = waiter_start(src, 20 * MS);
	/* The deadline, or the ENOMEM cancel if it lands first. */
	int rc = waiter_end(k);
	assert_true(rc == ETIMEDOUT || rc == ECANCELED);
	cancel__test_fail_watch_resume(0);
	/* Never left unwatched: canceled on the library thread, ENOMEM. */
	expect_canceled(src);
	struct cancel_cause cause;
	assert_true(cancel_token_cause(cancel_source_token(src), &cause));
	assert_int_equal(cause.reason, ENOMEM);
	assert_non_null(strstr(cause.msg, "hang-up watch lost"));
	watch_end(w, false);
	close(c);
	close(s);
	src_end(src);
}

/* ------------------------------------------------------------------ */
/* fork                                                               */
/* ------------------------------------------------------------------ */

static void
a_forked_child_polls_with_a_wake_up_descriptor_of_its_own(void **state)
{
	(void)state;
	/* This thread polled in the group setup: it has a wake-up
	 * descriptor, which the child must not share with us. */
	int mine = cancel__test_watch_wake_fd();
	assert_true(mine >= 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		/* Our thread's was closed in the child (it is the parent's
		 * too: a write of one would wake the other). */
		int ok = fcntl(mine, F_GETFD) < 0 && errno == EBADF;
		int s, c, sv[2];
		ok = ok && socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0,
		                      sv) == 0;
		s = sv[0];
		c = sv[1];
		struct cancel_source src;
		struct cancel_watch w = CANCEL_WATCH_INITIALIZER;
		cancel_source_init(&src);
		ok = ok && cancel_watch_hangup(&w, s, 0, &src) == 0;
		struct waiter *k = waiter_start(&src, 0);
		uint64_t end = tu_now_ms() + 10000;
		while (cancel__test_watch_pollers() != 1 && tu_now_ms() < end)
			tu_nap();
		ok = ok && cancel__test_watch_pollers() == 1;
		/* The eviction reaches the child's waiter, not ours. */
		ok = ok && cancel_watch_stop(&w);
		close(c);
		cancel_source_cancel(&src);
		tu_join(k->t);
		ok = ok && k->rc == ECANCELED;
		free(k);
		close(s);
		ok = ok && cancel_source_destroy(&src) == 0;
		tu_child_exit(ok ? 0 : 1);
	}
	int st;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
	/* And ours still works after the child wrote its copies. */
	int s, c;
	struct cancel_source *src;
	struct cancel_watch *w;
	struct waiter *k = polled_watch(false, 0, &s, &c, &src, &w);
	hang_up_ends_the_wait(c, k, src);
	close_watched(w, false, s, src);
}

/* A watch polled by another thread at the fork: in the child, its stop
 * drops the source's WATCHED and POLLED (nothing of that process watches
 * or polls it), so waits and cancels there take no lock for it. */
static void
a_stop_in_the_child_clears_the_parents_watch_bits(void **state)
{
	(void)state;
	int s, c;
	struct cancel_source *src;
	struct cancel_watch *w;
	struct waiter *k = polled_watch(false, 0, &s, &c, &src, &w);
	uint64_t bits = CANCEL__S_WATCHED | CANCEL__S_POLLED;
	assert_int_equal(ld_acquire(&src->state_) & bits, bits);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		cancel_watch_stop(w);
		tu_child_exit((ld_acquire(&src->state_) & bits) == 0 ? 0 : 1);
	}
	int st;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
	/* The parent's waiter still polls, and the hang-up still ends it. */
	assert_int_equal(cancel__test_watch_pollers(), 1);
	hang_up_ends_the_wait(c, k, src);
	close_watched(w, false, s, src);
}

#define T(f) cmocka_unit_test_setup_teardown(f, tu_fds_setup, tu_fds_check)

int
main(void)
{
	const struct CMUnitTest tests[] = {
		T(a_polling_waiter_returns_at_the_hang_up_and_the_library_thread_sleeps_on),
		T(a_callback_added_while_polling_runs_on_the_library_thread),
		T(a_source_with_callbacks_is_left_to_the_library_thread),
		T(half_close_with_the_flag_does_not_end_the_poll),
		T(stop_evicts_the_poller_before_it_returns_and_the_number_can_be_reused),
		T(stop_racing_the_pollers_hang_up_is_one_or_the_other),
#ifdef CANCEL_BACKEND_futex
		T(a_second_watch_of_a_polled_descriptor_is_still_eexist),
		T(a_fired_polled_watch_holds_its_number_until_its_stop),
		T(a_stop_racing_a_new_watch_of_the_number_leaves_it_registered),
#endif
		T(a_cancel_wakes_the_poller_and_a_later_hang_up_still_fires_the_watch),
		T(the_deadline_ends_the_poll_and_a_later_hang_up_still_cancels),
		T(a_second_waiter_parks_and_both_return_at_the_hang_up),
		T(a_hang_up_on_one_of_two_watches_wakes_the_poller_of_the_other),
		T(a_signal_handlers_cancel_wakes_the_poller),
		T(the_kernel_refusing_the_watch_back_fires_it_with_enomem),
		T(a_forked_child_polls_with_a_wake_up_descriptor_of_its_own),
		T(a_stop_in_the_child_clears_the_parents_watch_bits),
	};
	return cmocka_run_group_tests_name("watch_poller", tests,
	                                   watch_group_setup, NULL);
}
