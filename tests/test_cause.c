/*
 * Causes (why, where, when a token was canceled), signal names,
 * cancel_signal_restore() and the CANCEL_DEBUG=leaks report.
 *
 * Sources that a test destroys live on the heap and are freed right after
 * destroy returns, so ASan sees any later touch. The leak report is
 * checked in a child: this same program run again with CANCEL_DEBUG=leaks
 * and a mode argument, its stderr read through a pipe.
 */
/* ctest: TIMEOUT 240 LABELS signal */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "atomic.h"
#include "cancel.h"
#include "internal.h"
#include "testutil.h"

_Static_assert(sizeof(struct cancel_source) <= 192, "1.0 ABI bound");

static struct cancel_source *
new_source(void)
{
	struct cancel_source *s = malloc(sizeof(*s));
	assert_non_null(s);
	memset(s, 0xa5, sizeof(*s)); /* init must not rely on zeroes */
	cancel_source_init(s);
	return s;
}

static void
free_source(struct cancel_source *s)
{
	assert_int_equal(cancel_source_destroy(s), 0);
	free(s);
}

static uint64_t
ts_ns(struct timespec ts)
{
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static struct cancel_cause
cause_of(struct cancel_source *s)
{
	struct cancel_cause c;
	memset(&c, 0, sizeof(c));
	assert_true(cancel_token_cause(cancel_source_token(s), &c));
	return c;
}

/* ------------------------------------------------------------------ */

static void
no_cause_before_cancel_and_nothing_stored(void **state)
{
	(void)state;
	struct cancel_source *s = new_source();
	struct cancel_cause c;
	memset(&c, 0x5a, sizeof(c));
	struct cancel_cause untouched = c;
	assert_false(cancel_token_cause(cancel_source_token(s), &c));
	assert_false(cancel_token_cause(CANCEL_TOKEN_NONE, &c));
	assert_memory_equal(&c, &untouched, sizeof(c));

	uint64_t t0 = tu_now_ns();
	assert_true(cancel_source_cancel_with_cause(s, EPIPE, "broken"));
	uint64_t t1 = tu_now_ns();
	c = cause_of(s);
	assert_int_equal(c.reason, EPIPE);
	assert_string_equal(c.msg, "broken");
	assert_ptr_equal(c.origin, s);
	assert_true(ts_ns(c.when) >= t0 && ts_ns(c.when) <= t1);
	/* A second cause loses: nothing changes. */
	assert_false(cancel_source_cancel_with_cause(s, EIO, "late"));
	struct cancel_cause again = cause_of(s);
	/* Field by field: padding bytes of a returned struct are unset. */
	assert_int_equal(again.reason, c.reason);
	assert_ptr_equal(again.msg, c.msg);
	assert_ptr_equal(again.origin, c.origin);
	assert_int_equal(again.when.tv_sec, c.when.tv_sec);
	assert_int_equal(again.when.tv_nsec, c.when.tv_nsec);
	free_source(s);
}

static void
plain_cancel_has_null_message_and_its_reason(void **state)
{
	(void)state;
	struct cancel_source *a = new_source(), *b = new_source();
	assert_true(cancel_source_cancel(a));
	assert_true(cancel_source_cancel_with(b, ENOSPC));
	struct cancel_cause ca = cause_of(a), cb = cause_of(b);
	assert_int_equal(ca.reason, ECANCELED);
	assert_null(ca.msg);
	assert_ptr_equal(ca.origin, a);
	assert_int_equal(cb.reason, ENOSPC);
	assert_null(cb.msg);
	assert_ptr_equal(cb.origin, b);
	/* A non-positive reason is ECANCELED, as for cancel_with. */
	struct cancel_source *z = new_source();
	assert_true(cancel_source_cancel_with_cause(z, -3, "neg"));
	assert_int_equal(cause_of(z).reason, ECANCELED);
	assert_string_equal(cause_of(z).msg, "neg");
	free_source(a);
	free_source(b);
	free_source(z);
}

/* ------------------------------------------------------------------ */
/* First cause wins: 4 cancellers with different causes race           */
/* ------------------------------------------------------------------ */

#define RACERS 4
static const int race_reason[RACERS] = {ECANCELED, ETIMEDOUT, EINTR,
                                        ECONNRESET};
static const char *const race_msg[RACERS] = {"first", "second", "third",
                                             "fourth"};

struct race {
	pthread_barrier_t start, end;
	struct cancel_source *src;
	int won[RACERS];
	int mixed;
	int stop;
};

static struct race race;

static int
racer_index(const char *msg)
{
	for (int i = 0; i < RACERS; i++)
		if (msg == race_msg[i])
			return i;
	return -1;
}

static void *
racer(void *arg)
{
	int i = (int)(intptr_t)arg;
	for (;;) {
		pthread_barrier_wait(&race.start);
		if (ld_acquire(&race.stop))
			return NULL;
		struct cancel_source *s = race.src;
		bool w = (i == 3)
		             ? cancel_source_cancel_from_signal_with_cause(
		                   s, race_reason[i], race_msg[i])
		             : cancel_source_cancel_with_cause(
		                   s, race_reason[i], race_msg[i]);
		race.won[i] = w;
		/* Read right away, maybe inside the winner's window. */
		struct cancel_cause c;
		if (!cancel_token_cause(cancel_source_token(s), &c))
			race.mixed++;
		else {
			int k = racer_index(c.msg);
			if (k < 0 || race_reason[k] != c.reason ||
			    c.origin != s)
				race.mixed++;
		}
		pthread_barrier_wait(&race.end);
	}
}

static void
first_cause_wins_under_four_racing_cancellers(void **state)
{
	(void)state;
	assert_int_equal(cancel_signal_prepare(), 0);
	long rounds = tu_rounds(10000, 100000);
	pthread_barrier_init(&race.start, NULL, RACERS + 1);
	pthread_barrier_init(&race.end, NULL, RACERS + 1);
	pthread_t t[RACERS];
	for (int i = 0; i < RACERS; i++)
		t[i] = tu_spawn(racer, (void *)(intptr_t)i);
	int seen[RACERS] = {0};
	for (long r = 0; r < rounds; r++) {
		race.src = new_source();
		pthread_barrier_wait(&race.start);
		pthread_barrier_wait(&race.end);
		int winners = 0, w = 0;
		for (int i = 0; i < RACERS; i++)
			if (race.won[i]) {
				winners++;
				w = i;
			}
		assert_int_equal(winners, 1);
		struct cancel_cause c = cause_of(race.src);
		assert_int_equal(c.reason, race_reason[w]);
		assert_ptr_equal(c.msg, race_msg[w]);
		assert_ptr_equal(c.origin, race.src);
		assert_int_equal(cancel_token_reason(
		                     cancel_source_token(race.src)),
		                 race_reason[w]);
		seen[w]++;
		free_source(race.src);
	}
	st_release(&race.stop, 1);
	pthread_barrier_wait(&race.start);
	for (int i = 0; i < RACERS; i++)
		tu_join(t[i]);
	pthread_barrier_destroy(&race.start);
	pthread_barrier_destroy(&race.end);
	assert_int_equal(race.mixed, 0);
	fprintf(stderr, "wins: %d %d %d %d in %ld rounds\n", seen[0], seen[1],
	        seen[2], seen[3], rounds);
	/* More than one canceller won some round: it was a race. */
	int kinds = 0;
	for (int i = 0; i < RACERS; i++)
		kinds += seen[i] > 0;
	assert_true(kinds >= 2);
}

/* ------------------------------------------------------------------ */
/* Linked chains                                                       */
/* ------------------------------------------------------------------ */

static void
chain_reports_root(size_t depth)
{
	struct cancel_source **s = calloc(depth, sizeof(*s));
	assert_non_null(s);
	s[0] = new_source();
	for (size_t i = 1; i < depth; i++) {
		s[i] = malloc(sizeof(**s));
		assert_non_null(s[i]);
		cancel_token p = cancel_source_token(s[i - 1]);
		assert_int_equal(cancel_source_init_linked(s[i], &p, 1), 0);
	}
	assert_true(cancel_source_cancel_with_cause(s[0], EHOSTDOWN,
	                                            "root gone"));
	struct cancel_cause root = cause_of(s[0]);
	for (size_t i = 0; i < depth; i++) {
		struct cancel_cause c = cause_of(s[i]);
		assert_int_equal(c.reason, EHOSTDOWN);
		assert_string_equal(c.msg, "root gone");
		assert_ptr_equal(c.origin, s[0]);
		assert_memory_equal(&c.when, &root.when, sizeof(c.when));
	}
	for (size_t i = depth; i-- > 0;)
		free_source(s[i]);
	free(s);
}

static void
chain_of_three_reports_root_origin_and_time(void **state)
{
	(void)state;
	chain_reports_root(3);
}

static void
chain_of_twenty_reports_root_origin_and_time(void **state)
{
	(void)state;
	chain_reports_root(20); /* deeper than CANCEL_LINK_INLINE_DEPTH */
}

static void
middle_cancel_is_origin_below_and_root_keeps_none(void **state)
{
	(void)state;
	struct cancel_source *a = new_source();
	struct cancel_source *b = malloc(sizeof(*b)), *c = malloc(sizeof(*c));
	cancel_token ta = cancel_source_token(a);
	assert_int_equal(cancel_source_init_linked(b, &ta, 1), 0);
	cancel_token tb = cancel_source_token(b);
	/* Two parents: the allocated-links path. */
	cancel_token two[2] = {ta, tb};
	assert_int_equal(cancel_source_init_linked(c, two, 2), 0);
	assert_true(cancel_source_cancel_with_cause(b, EPIPE, "mid"));
	assert_false(cancel_token_is_canceled(ta));
	assert_ptr_equal(cause_of(c).origin, b);
	assert_string_equal(cause_of(c).msg, "mid");
	/* The root canceled later does not change the children's cause. */
	assert_true(cancel_source_cancel_with_cause(a, EIO, "root"));
	assert_ptr_equal(cause_of(b).origin, b);
	assert_ptr_equal(cause_of(c).origin, b);
	assert_int_equal(cause_of(c).reason, EPIPE);
	free_source(c);
	free_source(b);
	free_source(a);
}

static void
child_of_canceled_parent_inherits_cause_at_init(void **state)
{
	(void)state;
	struct cancel_source *p = new_source();
	assert_true(cancel_source_cancel_with_cause(p, ESHUTDOWN, "closed"));
	cancel_token tp = cancel_source_token(p);
	struct cancel_source *one = malloc(sizeof(*one));
	struct cancel_source *two = malloc(sizeof(*two));
	struct cancel_source *q = new_source();
	assert_int_equal(cancel_source_init_linked(one, &tp, 1), 0);
	cancel_token both[2] = {cancel_source_token(q), tp};
	assert_int_equal(cancel_source_init_linked(two, both, 2), 0);
	struct cancel_cause pc = cause_of(p);
	for (int i = 0; i < 2; i++) {
		struct cancel_cause c = cause_of(i ? two : one);
		assert_int_equal(c.reason, ESHUTDOWN);
		assert_string_equal(c.msg, "closed");
		assert_ptr_equal(c.origin, p);
		assert_memory_equal(&c.when, &pc.when, sizeof(c.when));
	}
	free_source(one);
	free_source(two);
	free_source(q);
	free_source(p);
}

/* ------------------------------------------------------------------ */
/* Timers                                                              */
/* ------------------------------------------------------------------ */

static void
timer_gives_deadline_passed_when_it_fired(void **state)
{
	(void)state;
	struct cancel_source *s = new_source();
	uint64_t t0 = tu_now_ns();
	assert_int_equal(cancel_source_cancel_after(s, 20 * 1000000ull), 0);
	assert_int_equal(cancel_wait(NULL, cancel_source_token(s)),
	                 ECANCELED);
	struct cancel_cause c = cause_of(s);
	assert_int_equal(c.reason, ETIMEDOUT);
	assert_string_equal(c.msg, "deadline passed");
	assert_ptr_equal(c.origin, s);
	uint64_t w = ts_ns(c.when);
	assert_true(w >= t0 + 20 * 1000000ull);
	assert_true(w < t0 + 2000 * 1000000ull);
	free_source(s);
}

static void
source_canceled_before_deadline_keeps_its_own_cause(void **state)
{
	(void)state;
	struct cancel_source *s = new_source();
	assert_int_equal(cancel_source_cancel_after(s, 30 * 1000000ull), 0);
	assert_true(cancel_source_cancel_with_cause(s, ECONNRESET, "mine"));
	/* Past the deadline: the timer found it canceled, or was never
	 * going to fire; either way the cause stays. */
	assert_int_equal(cancel_sleep(60 * 1000000ull, CANCEL_TOKEN_NONE), 0);
	struct cancel_cause c = cause_of(s);
	assert_int_equal(c.reason, ECONNRESET);
	assert_string_equal(c.msg, "mine");
	free_source(s);
}

static void
linked_child_of_timed_out_parent_says_deadline_passed(void **state)
{
	(void)state;
	struct cancel_source *p = new_source();
	struct cancel_source *c = malloc(sizeof(*c));
	cancel_token tp = cancel_source_token(p);
	assert_int_equal(cancel_source_init_linked(c, &tp, 1), 0);
	assert_int_equal(cancel_source_cancel_after(p, 5 * 1000000ull), 0);
	assert_int_equal(cancel_wait(NULL, cancel_source_token(c)),
	                 ECANCELED);
	struct cancel_cause cc = cause_of(c);
	assert_int_equal(cc.reason, ETIMEDOUT);
	assert_string_equal(cc.msg, "deadline passed");
	assert_ptr_equal(cc.origin, p);
	free_source(c);
	free_source(p);
}

/* ------------------------------------------------------------------ */
/* Signals                                                             */
/* ------------------------------------------------------------------ */

static void
assert_on_signal_cause_is(int signo, const char *name)
{
	struct sigaction old;
	sigaction(signo, NULL, &old);
	struct cancel_source *s = new_source();
	assert_int_equal(cancel_source_cancel_on_signal(s, signo), 0);
	raise(signo);
	struct cancel_cause c = cause_of(s);
	assert_int_equal(c.reason, EINTR);
	assert_string_equal(c.msg, name);
	assert_ptr_equal(c.origin, s);
	assert_int_equal(cancel_signal_restore(signo), 0);
	free_source(s);
	struct sigaction now;
	sigaction(signo, NULL, &now);
	assert_ptr_equal((void *)(uintptr_t)now.sa_handler,
	                 (void *)(uintptr_t)old.sa_handler);
}

/* A standard signal by its name; a real-time one relative to SIGRTMIN
 * (its number differs between systems and C libraries). */
static void
on_signal_cause_names_the_signal(void **state)
{
	(void)state;
	assert_on_signal_cause_is(SIGUSR1, "SIGUSR1");
	assert_on_signal_cause_is(SIGRTMIN + 3, "SIGRTMIN+3");
}

struct waiter {
	struct cancel_source *src;
	int ready;
	int rc;
};

/* Waits in cancel_poll (poll: ThreadSanitizer delivers signals to a
 * thread blocked there; a raw futex wait would defer them forever). */
static void *
wait_on(void *arg)
{
	struct waiter *w = arg;
	tu_signal(&w->ready);
	w->rc = cancel_poll(NULL, 0, NULL, cancel_source_token(w->src));
	return NULL;
}

static void
sigterm_to_another_thread_says_sigterm(void **state)
{
	(void)state;
	struct cancel_source *s = new_source();
	assert_int_equal(cancel_source_cancel_on_signal(s, SIGTERM), 0);
	struct waiter w = {.src = s};
	pthread_t t = tu_spawn(wait_on, &w);
	tu_await(&w.ready);
	assert_int_equal(pthread_kill(t, SIGTERM), 0);
	tu_join(t);
	assert_int_equal(w.rc, ECANCELED);
	struct cancel_cause c = cause_of(s);
	assert_int_equal(c.reason, EINTR);
	assert_string_equal(c.msg, "SIGTERM");
	assert_int_equal(cancel_signal_restore(SIGTERM), 0);
	free_source(s);
}

static struct cancel_source *user_target;

static void
user_handler(int signo)
{
	(void)signo;
	cancel_source_cancel_from_signal_with_cause(user_target, EPIPE,
	                                            "user handler");
}

static void
from_signal_with_cause_in_a_user_handler(void **state)
{
	(void)state;
	assert_int_equal(cancel_signal_prepare(), 0);
	user_target = new_source();
	struct sigaction old;
	tu_install_handler(SIGUSR2, user_handler, 0, &old);
	raise(SIGUSR2);
	sigaction(SIGUSR2, &old, NULL);
	struct cancel_cause c = cause_of(user_target);
	assert_int_equal(c.reason, EPIPE);
	assert_string_equal(c.msg, "user handler");
	assert_ptr_equal(c.origin, user_target);
	free_source(user_target);
	user_target = NULL;
}

static volatile sig_atomic_t user_hits;

static void
user_counter(int signo, siginfo_t *si, void *ctx)
{
	(void)signo;
	(void)si;
	(void)ctx;
	user_hits++;
}

static bool
same_action(const struct sigaction *a, const struct sigaction *b)
{
	if (a->sa_flags != b->sa_flags)
		return false;
	if ((a->sa_flags & SA_SIGINFO)
	        ? a->sa_sigaction != b->sa_sigaction
	        : a->sa_handler != b->sa_handler)
		return false;
	for (int i = 1; i < NSIG; i++)
		if (sigismember(&a->sa_mask, i) != sigismember(&b->sa_mask, i))
			return false;
	return true;
}

static void
restore_puts_back_user_handler_exactly(void **state)
{
	(void)state;
	struct sigaction orig, mine, before, ours, after;
	sigaction(SIGUSR1, NULL, &orig);
	memset(&mine, 0, sizeof(mine));
	mine.sa_sigaction = user_counter;
	mine.sa_flags = SA_SIGINFO | SA_RESTART | SA_NODEFER;
	sigemptyset(&mine.sa_mask);
	sigaddset(&mine.sa_mask, SIGUSR2);
	sigaddset(&mine.sa_mask, SIGWINCH);
	assert_int_equal(sigaction(SIGUSR1, &mine, NULL), 0);
	sigaction(SIGUSR1, NULL, &before);

	struct cancel_source *a = new_source(), *b = new_source();
	assert_int_equal(cancel_source_cancel_on_signal(a, SIGUSR1), 0);
	/* Retargeting must not save our own handler as "the old one". */
	assert_int_equal(cancel_source_cancel_on_signal(b, SIGUSR1), 0);
	sigaction(SIGUSR1, NULL, &ours);
	assert_false(same_action(&ours, &before));
	assert_int_equal(cancel_signal_restore(SIGUSR1), 0);
	sigaction(SIGUSR1, NULL, &after);
	assert_true(same_action(&after, &before));
	assert_int_equal(cancel_signal_restore(SIGUSR1), EINVAL);

	/* Freed: a signal now reaches the user's handler only. */
	free_source(a);
	free_source(b);
	user_hits = 0;
	raise(SIGUSR1);
	raise(SIGUSR1);
	assert_int_equal(user_hits, 2);
	sigaction(SIGUSR1, &orig, NULL);
}

static void
restore_without_install_is_einval(void **state)
{
	(void)state;
	assert_int_equal(cancel_signal_restore(SIGWINCH), EINVAL);
	assert_int_equal(cancel_signal_restore(0), EINVAL);
	assert_int_equal(cancel_signal_restore(-1), EINVAL);
	assert_int_equal(cancel_signal_restore(NSIG), EINVAL);
}

struct storm {
	int stop;
	int started;
};

static void *
raise_loop(void *arg)
{
	struct storm *st = arg;
	tu_signal(&st->started);
	while (!ld_acquire(&st->stop))
		raise(SIGUSR1);
	return NULL;
}

/*
 * Handlers run on another thread while restore runs: after it returns the
 * source is destroyed and freed at once (ASan catches a late touch).
 */
static void
restore_waits_for_handlers_on_other_threads(void **state)
{
	(void)state;
	struct sigaction orig, mine;
	sigaction(SIGUSR1, NULL, &orig);
	memset(&mine, 0, sizeof(mine));
	mine.sa_sigaction = user_counter;
	mine.sa_flags = SA_SIGINFO | SA_RESTART;
	sigemptyset(&mine.sa_mask);
	assert_int_equal(sigaction(SIGUSR1, &mine, NULL), 0);
	long rounds = tu_rounds(200, 2000);
	for (long r = 0; r < rounds; r++) {
		struct cancel_source *s = new_source();
		assert_int_equal(cancel_source_cancel_on_signal(s, SIGUSR1),
		                 0);
		struct storm st = {0};
		pthread_t t = tu_spawn(raise_loop, &st);
		tu_await(&st.started);
		assert_int_equal(cancel_signal_restore(SIGUSR1), 0);
		free_source(s);
		st_release(&st.stop, 1);
		tu_join(t);
	}
	sigaction(SIGUSR1, &orig, NULL);
}

static void
calls_leave_errno_alone(void **state)
{
	(void)state;
	struct cancel_source *s = new_source();
	struct cancel_cause c;
	errno = 4242;
	assert_false(cancel_token_cause(cancel_source_token(s), &c));
	assert_int_equal(cancel_signal_restore(SIGWINCH), EINVAL);
	assert_int_equal(cancel_source_cancel_on_signal(s, SIGUSR2), 0);
	assert_int_equal(cancel_signal_restore(SIGUSR2), 0);
	assert_true(cancel_source_cancel_with_cause(s, EIO, "x"));
	assert_true(cancel_token_cause(cancel_source_token(s), &c));
	struct cancel_source *f = new_source();
	assert_true(cancel_source_cancel_from_signal_with_cause(f, EIO, "y"));
	assert_int_equal(errno, 4242);
	free_source(s);
	free_source(f);
}

/* ------------------------------------------------------------------ */
/* Leak report (CANCEL_DEBUG=leaks), in a child                        */
/* ------------------------------------------------------------------ */

static void leak_fn_a(void *arg) { (void)arg; }
static void leak_fn_b(void *arg) { (void)arg; }

static struct cancel_source leak_src;
static struct cancel_callback leak_cb[2];

/*
 * Child mode "many": the registry under load. The very first allocation
 * fails (the registry cannot start: many[0] goes untracked and the report
 * must say its list is incomplete); 99 more sources make it grow twice;
 * half of them are destroyed and ten initialized again at the same
 * addresses (their old slots are tombstones); one is initialized twice
 * without a destroy (listed once); one is linked to two live parents (the
 * parents list no callback of their own). A fork meanwhile leaves the
 * registry usable in the grandchild. Left alive: 61 sources. Prints the
 * addresses the parent checks; exits non-zero if a step failed.
 */
enum { MANY = 100, MANY_LEFT = 61 };
static struct cancel_source *many[MANY]; /* reachable: no LSan report */

static int
child_many(void)
{
	for (int i = 0; i < MANY; i++) {
		many[i] = malloc(sizeof(*many[i]));
		if (many[i] == NULL)
			return 50;
	}
	long live = cancel__test_live_objects();
	cancel__test_fail_alloc(1);
	cancel_source_init(many[0]);
	cancel__test_fail_alloc(0);
	if (cancel__test_live_objects() != live)
		return 51; /* the failed allocation left nothing */
	for (int i = 1; i < MANY; i++)
		cancel_source_init(many[i]);
	for (int i = 1; i <= 50; i++)
		if (cancel_source_destroy(many[i]) != 0)
			return 52;
	for (int i = 1; i <= 10; i++)
		cancel_source_init(many[i]);
	cancel_source_init(many[11]);
	cancel_source_init(many[11]);
	cancel_token up[2] = {cancel_source_token(many[60]),
	                      cancel_source_token(many[61])};
	if (cancel_source_init_linked(many[12], up, 2) != 0)
		return 53;

	fflush(stdout);
	pid_t pid = tu_fork();
	if (pid < 0)
		return 54;
	if (pid == 0) {
		/* The registry's lock came along free: init and destroy
		 * work. tu_child_exit: no report from here. */
		struct cancel_source *g = malloc(sizeof(*g));
		if (g == NULL)
			tu_child_exit(1);
		cancel_source_init(g);
		int rc = cancel_source_destroy(g);
		free(g);
		tu_child_exit(rc == 0 ? 0 : 2);
	}
	int st;
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			return 55;
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		return 56;
	printf("%p %p %p %p\n", (void *)many[0], (void *)many[11],
	       (void *)many[12], (void *)many[60]);
	fflush(stdout);
	return 0;
}

/* Child modes. "leak": one source with an armed deadline and two
 * callbacks stays alive; "clean": everything is destroyed; "many": see
 * child_many(). */
static __attribute__((noinline)) int
child_main(const char *mode)
{
	if (strcmp(mode, "many") == 0)
		return child_many();
	bool leak = strcmp(mode, "leak") == 0;
	struct cancel_source done, linked;
	cancel_source_init(&done);
	cancel_token dt = cancel_source_token(&done);
	assert_int_equal(cancel_source_init_linked(&linked, &dt, 1), 0);
	struct cancel_callback cb = CANCEL_CALLBACK_INITIALIZER;
	cancel_callback_register(&cb, leak_fn_a, NULL, dt);
	assert_int_equal(cancel_source_cancel_after(&done, 60000000000ull),
	                 0);
	cancel_callback_unregister(&cb);
	if (cancel_source_destroy(&linked) != 0 ||
	    cancel_source_destroy(&done) != 0)
		return 3;
	if (leak) {
		cancel_source_init(&leak_src);
		cancel_token t = cancel_source_token(&leak_src);
		cancel_source_cancel_after(&leak_src, 60000000000ull);
		cancel_callback_register(&leak_cb[0], leak_fn_a, NULL, t);
		cancel_callback_register(&leak_cb[1], leak_fn_b, NULL, t);
		printf("%p %p %p %p\n", (void *)&leak_src,
		       (void *)(uintptr_t)leak_fn_a,
		       (void *)(uintptr_t)leak_fn_b,
		       (void *)(uintptr_t)child_main);
	}
	fflush(stdout);
	return 0;
}

static char *
read_all(int fd)
{
	size_t cap = 4096, len = 0;
	char *buf = malloc(cap);
	assert_non_null(buf);
	for (;;) {
		if (len + 1 == cap) {
			cap *= 2;
			char *bigger = realloc(buf, cap);
			if (bigger == NULL)
				free(buf);
			assert_non_null(bigger);
			buf = bigger;
		}
		ssize_t n = read(fd, buf + len, cap - 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	buf[len] = '\0';
	return buf;
}

/* Run this program as "MODE" with CANCEL_DEBUG=@debug; return its
 * stdout and stderr. */
static void
run_child(const char *mode, const char *debug, char **out, char **err)
{
	int po[2], pe[2];
	assert_int_equal(pipe(po), 0);
	assert_int_equal(pipe(pe), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		dup2(po[1], 1);
		dup2(pe[1], 2);
		close(po[0]);
		close(pe[0]);
		setenv("CANCEL_DEBUG", debug, 1);
		char *argv[] = {(char *)"test_cause", (char *)mode, NULL};
		execv("/proc/self/exe", argv);
		_exit(127);
	}
	close(po[1]);
	close(pe[1]);
	/* The child writes little: reading one pipe to its end first
	 * cannot fill the other. */
	*out = read_all(po[0]);
	*err = read_all(pe[0]);
	close(po[0]);
	close(pe[0]);
	int status;
	while (waitpid(pid, &status, 0) < 0)
		assert_int_equal(errno, EINTR);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

static int
count(const char *hay, const char *needle)
{
	int n = 0;
	for (const char *p = hay; (p = strstr(p, needle)) != NULL; p++)
		n++;
	return n;
}

static void
leak_report_lists_exactly_the_leaked_objects(void **state)
{
	(void)state;
	char *out, *err;
	run_child("leak", "leaks", &out, &err);
	void *src, *fa, *fb, *fmain;
	assert_int_equal(sscanf(out, "%p %p %p %p", &src, &fa, &fb, &fmain),
	                 4);
	fprintf(stderr, "child's report:\n%s", err);
	char want[128];
	assert_non_null(strstr(err, "1 source not destroyed"));
	assert_int_equal(count(err, "libcancel: leak: source "), 1);
	snprintf(want, sizeof(want), "source %p created at ", src);
	const char *line = strstr(err, want);
	assert_non_null(line);
	/* The creator is a return address inside child_main. */
	void *where = NULL;
	assert_int_equal(sscanf(line + strlen(want), "%p", &where), 1);
	assert_true((uintptr_t)where > (uintptr_t)fmain &&
	            (uintptr_t)where < (uintptr_t)fmain + 4096);
	assert_non_null(strstr(line, "deadline armed"));
	assert_non_null(strstr(line, "2 callbacks registered"));
	assert_int_equal(count(err, "  callback "), 2);
	snprintf(want, sizeof(want), " fn %p ", fa);
	assert_non_null(strstr(err, want));
	snprintf(want, sizeof(want), " fn %p ", fb);
	assert_non_null(strstr(err, want));
	free(out);
	free(err);
}

static void
leak_report_says_nothing_for_a_clean_run(void **state)
{
	(void)state;
	char *out, *err;
	run_child("clean", "leaks", &out, &err);
	assert_string_equal(err, "");
	free(out);
	free(err);
}

/* CANCEL_DEBUG is a comma-separated list: "leaks" must be one of its
 * words, not a part of one. */
static void
leak_report_needs_the_word_leaks(void **state)
{
	(void)state;
	char *out, *err;
	run_child("leak", "leak,leaksx", &out, &err);
	void *src, *fa, *fb, *fmain;
	assert_int_equal(sscanf(out, "%p %p %p %p", &src, &fa, &fb, &fmain),
	                 4);
	assert_string_equal(err, "");
	free(out);
	free(err);
}

static void
leak_report_of_a_crowded_registry_lists_each_live_source_once(
    void **state)
{
	(void)state;
	char *out, *err;
	run_child("many", "trace,leaks", &out, &err);
	void *lost, *twice, *linked, *parent;
	assert_int_equal(
	    sscanf(out, "%p %p %p %p", &lost, &twice, &linked, &parent), 4);
	char want[160];
	snprintf(want, sizeof(want),
	         "libcancel: CANCEL_DEBUG=leaks: %d sources not destroyed "
	         "(registry out of memory: list incomplete)\n",
	         MANY_LEFT);
	assert_non_null(strstr(err, want));
	assert_int_equal(count(err, "libcancel: leak: source "), MANY_LEFT);
	snprintf(want, sizeof(want), "source %p created at ", lost);
	assert_null(strstr(err, want));
	snprintf(want, sizeof(want), "source %p created at ", twice);
	assert_int_equal(count(err, want), 1);
	snprintf(want, sizeof(want), "source %p created at ", linked);
	assert_int_equal(count(err, want), 1);
	snprintf(want, sizeof(want), "source %p created at ", parent);
	const char *line = strstr(err, want);
	assert_non_null(line);
	const char *eol = strchr(line, '\n');
	assert_non_null(eol);
	const char *n0 = strstr(line, ", 0 callbacks registered");
	assert_true(n0 != NULL && n0 < eol);
	/* Nobody registered a callback: the links are not listed. */
	assert_int_equal(count(err, "  callback "), 0);
	free(out);
	free(err);
}

int
main(int argc, char **argv)
{
	if (argc == 2)
		return child_main(argv[1]);
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(no_cause_before_cancel_and_nothing_stored),
	    cmocka_unit_test(plain_cancel_has_null_message_and_its_reason),
	    cmocka_unit_test(first_cause_wins_under_four_racing_cancellers),
	    cmocka_unit_test(chain_of_three_reports_root_origin_and_time),
	    cmocka_unit_test(chain_of_twenty_reports_root_origin_and_time),
	    cmocka_unit_test(middle_cancel_is_origin_below_and_root_keeps_none),
	    cmocka_unit_test(child_of_canceled_parent_inherits_cause_at_init),
	    cmocka_unit_test(timer_gives_deadline_passed_when_it_fired),
	    cmocka_unit_test(
	        source_canceled_before_deadline_keeps_its_own_cause),
	    cmocka_unit_test(
	        linked_child_of_timed_out_parent_says_deadline_passed),
	    cmocka_unit_test(on_signal_cause_names_the_signal),
	    cmocka_unit_test(sigterm_to_another_thread_says_sigterm),
	    cmocka_unit_test(from_signal_with_cause_in_a_user_handler),
	    cmocka_unit_test(restore_puts_back_user_handler_exactly),
	    cmocka_unit_test(restore_without_install_is_einval),
	    cmocka_unit_test(restore_waits_for_handlers_on_other_threads),
	    cmocka_unit_test(calls_leave_errno_alone),
	    cmocka_unit_test(leak_report_lists_exactly_the_leaked_objects),
	    cmocka_unit_test(leak_report_says_nothing_for_a_clean_run),
	    cmocka_unit_test(leak_report_needs_the_word_leaks),
	    cmocka_unit_test(
	        leak_report_of_a_crowded_registry_lists_each_live_source_once),
	};
	return cmocka_run_group_tests_name("cause", tests, NULL, NULL);
}
