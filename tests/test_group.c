/*
 * Groups: members on threads, first failure cancels the siblings, wait
 * joins every thread. Every group lives on the heap and is freed right
 * after destroy returns, so a late access by a member shows under ASan.
 */
/* ctest: TIMEOUT 180 LABELS group */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include "atomic.h"
#include "cancel.h"
#include "internal.h"
#include "testutil.h"

/* Threads of this process now (/proc/self/task). */
static int
task_count(void)
{
	DIR *d = opendir("/proc/self/task");
	assert_non_null(d);
	int n = 0;
	struct dirent *e;
	while ((e = readdir(d)) != NULL)
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

/*
 * The thread count comes back to @want: a joined thread leaves the
 * kernel's task list a moment after pthread_join returns, so look again
 * for up to 5 s; a thread that was never joined stays and fails this.
 */
static void
assert_tasks(int want)
{
	uint64_t start = tu_now_ms();
	int n;
	while ((n = task_count()) != want && tu_now_ms() - start < 5000)
		tu_nap();
	assert_int_equal(n, want);
}

static int tasks_before;

static int
setup(void **state)
{
	(void)state;
	tasks_before = task_count();
	return tu_fds_setup(state);
}

static int
teardown(void **state)
{
	assert_tasks(tasks_before);
	return tu_fds_check(state);
}

static struct cancel_group *
group_new(unsigned limit, cancel_token parent)
{
	struct cancel_group *g = calloc(1, sizeof(*g));
	assert_non_null(g);
	assert_int_equal(cancel_group_init(g, limit, parent), 0);
	return g;
}

/* Destroy and free at once: a member still touching g is a UAF. */
static void
group_free(struct cancel_group *g)
{
	assert_int_equal(cancel_group_destroy(g), 0);
	free(g);
}

/* ------------------------------------------------------------------ */

struct sleeper {
	int rc;            /* what cancel_sleep returned */
	int reason;        /* the token's reason it saw */
	uint64_t woke_ns;
};

/* A sibling: sleeps 10 s unless the group's token fires. */
static int
sleep_long(void *arg, cancel_token tok)
{
	struct sleeper *s = arg;
	s->rc = cancel_sleep(10ull * 1000000000u, tok);
	s->reason = cancel_token_reason(tok);
	s->woke_ns = tu_now_ns();
	return s->rc;
}

struct failer {
	struct cancel_source *src; /* the group's source: waits to watch */
	uint32_t nwait;            /* fail once this many wait on it */
	int err;
	uint64_t failed_ns;
};

static int
fail_after_waiters(void *arg, cancel_token tok)
{
	(void)tok;
	struct failer *f = arg;
	tu_await_waiters_bounded(f->src, f->nwait);
	f->failed_ns = tu_now_ns();
	return f->err;
}

static void
first_failure_cancels_siblings_and_wait_returns_it(void **state)
{
	(void)state;
	struct cancel_group *g = group_new(0, CANCEL_TOKEN_NONE);
	struct sleeper s[3];
	memset(s, 0, sizeof(s));
	for (int i = 0; i < 3; i++)
		assert_int_equal(cancel_group_go(g, sleep_long, &s[i]), 0);
	struct failer f = {.src = &g->src_, .nwait = 3, .err = EIO};
	assert_int_equal(cancel_group_go(g, fail_after_waiters, &f), 0);

	uint64_t t0 = tu_now_ns();
	assert_int_equal(cancel_group_wait(g, NULL), EIO);
	/* The 10 s sleeps ended with the failure, not on their own. */
	assert_true(tu_now_ns() - t0 < 3000000000ull);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(s[i].rc, ECANCELED);
		assert_int_equal(s[i].reason, EIO);
		assert_true(s[i].woke_ns >= f.failed_ns);
		assert_true(s[i].woke_ns - f.failed_ns < 2000000000ull);
	}
	assert_int_equal(cancel_token_reason(cancel_group_token(g)), EIO);
	struct cancel_cause c;
	assert_true(cancel_token_cause(cancel_group_token(g), &c));
	assert_int_equal(c.reason, EIO);
	assert_string_equal(c.msg, "group member failed");
	group_free(g);
}

static int
count_and_succeed(void *arg, cancel_token tok)
{
	(void)tok;
	fetch_add_relaxed((int *)arg, 1);
	return 0;
}

static void
all_members_succeed_wait_returns_zero(void **state)
{
	(void)state;
	struct cancel_group *g = group_new(0, CANCEL_TOKEN_NONE);
	int ran = 0;
	for (int i = 0; i < 32; i++)
		assert_int_equal(cancel_group_go(g, count_and_succeed, &ran),
		                 0);
	assert_int_equal(cancel_group_wait(g, NULL), 0);
	assert_int_equal(ld_relaxed(&ran), 32);
	assert_false(cancel_token_is_canceled(cancel_group_token(g)));
	/* A second wait on a finished group returns the same at once. */
	assert_int_equal(cancel_group_wait(g, NULL), 0);
	group_free(g);
}

static void
parent_canceled_members_see_its_reason_wait_returns_ecanceled(void **state)
{
	(void)state;
	struct cancel_source *parent = calloc(1, sizeof(*parent));
	assert_non_null(parent);
	cancel_source_init(parent);
	struct cancel_group *g = group_new(0, cancel_source_token(parent));
	struct sleeper s[3];
	memset(s, 0, sizeof(s));
	for (int i = 0; i < 3; i++)
		assert_int_equal(cancel_group_go(g, sleep_long, &s[i]), 0);
	tu_await_waiters_bounded(&g->src_, 3);
	/* The parent's destroy is refused while the group links to it. */
	assert_int_equal(cancel_source_destroy(parent), EBUSY);

	cancel_source_cancel_with(parent, ESHUTDOWN);
	assert_int_equal(cancel_group_wait(g, NULL), ECANCELED);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(s[i].rc, ECANCELED);
		assert_int_equal(s[i].reason, ESHUTDOWN);
	}
	/* go on the canceled group runs nothing: the parent's reason. */
	int ran = 0;
	assert_int_equal(cancel_group_go(g, count_and_succeed, &ran),
	                 ESHUTDOWN);
	assert_int_equal(cancel_group_try_go(g, count_and_succeed, &ran),
	                 ESHUTDOWN);
	assert_int_equal(cancel_group_wait(g, NULL), ECANCELED);
	assert_int_equal(ran, 0);
	group_free(g);
	assert_int_equal(cancel_source_destroy(parent), 0);
	free(parent);
}

static void
parent_canceled_before_init_group_starts_canceled(void **state)
{
	(void)state;
	struct cancel_source parent = CANCEL_SOURCE_INITIALIZER;
	cancel_source_cancel_with(&parent, ETIMEDOUT);
	struct cancel_group *g = group_new(2, cancel_source_token(&parent));
	int ran = 0;
	assert_int_equal(cancel_group_go(g, count_and_succeed, &ran),
	                 ETIMEDOUT);
	assert_int_equal(cancel_group_wait(g, NULL), ECANCELED);
	assert_int_equal(ran, 0);
	group_free(g);
	assert_int_equal(cancel_source_destroy(&parent), 0);
}

/* Returns ECANCELED as soon as the group is canceled. */
static int
wait_then_ecanceled(void *arg, cancel_token tok)
{
	(void)arg;
	return cancel_wait(NULL, tok);
}

static void
sibling_ecanceled_after_failure_is_not_counted(void **state)
{
	(void)state;
	/* Many rounds: the ECANCELED siblings often reach the group's mutex
	 * before the failing member records its error. */
	for (int round = 0; round < 50; round++) {
		struct cancel_group *g = group_new(0, CANCEL_TOKEN_NONE);
		for (int i = 0; i < 4; i++)
			assert_int_equal(
			    cancel_group_go(g, wait_then_ecanceled, NULL), 0);
		struct failer f = {.src = &g->src_, .nwait = 4, .err = EPIPE};
		assert_int_equal(cancel_group_go(g, fail_after_waiters, &f),
		                 0);
		assert_int_equal(cancel_group_wait(g, NULL), EPIPE);
		group_free(g);
	}
}

/* Under the group's mutex: members accepted and not yet returned. */
static unsigned
active_members(struct cancel_group *g)
{
	pthread_mutex_lock(&g->mu_);
	unsigned n = g->active_;
	pthread_mutex_unlock(&g->mu_);
	return n;
}

struct last_one {
	struct cancel_group *g;
	int err;
};

/* Waits for the cancel, then for every sibling to have returned, then
 * fails with a real error of its own. */
static int
fail_last_after_cancel(void *arg, cancel_token tok)
{
	struct last_one *l = arg;
	cancel_wait(NULL, tok);
	while (active_members(l->g) > 1)
		sched_yield();
	return l->err;
}

static void
member_failing_after_outside_cancel_is_the_failure(void **state)
{
	(void)state;
	struct cancel_source parent = CANCEL_SOURCE_INITIALIZER;
	struct cancel_group *g = group_new(0, cancel_source_token(&parent));
	/* Three siblings return ECANCELED first: none of them counts. */
	for (int i = 0; i < 3; i++)
		assert_int_equal(cancel_group_go(g, wait_then_ecanceled, NULL),
		                 0);
	struct last_one l = {.g = g, .err = EPIPE};
	assert_int_equal(cancel_group_go(g, fail_last_after_cancel, &l), 0);
	tu_await_waiters_bounded(&g->src_, 4);
	cancel_source_cancel_with(&parent, ESHUTDOWN);
	assert_int_equal(cancel_group_wait(g, NULL), EPIPE);
	/* The token keeps the parent's reason: the cancel came first. */
	assert_int_equal(cancel_token_reason(cancel_group_token(g)),
	                 ESHUTDOWN);
	group_free(g);
	assert_int_equal(cancel_source_destroy(&parent), 0);
}

static int
fail_now(void *arg, cancel_token tok)
{
	(void)tok;
	return *(int *)arg;
}

static void
member_ecanceled_before_any_cancel_is_a_failure(void **state)
{
	(void)state;
	struct cancel_group *g = group_new(0, CANCEL_TOKEN_NONE);
	int err = ECANCELED;
	assert_int_equal(cancel_group_go(g, fail_now, &err), 0);
	assert_int_equal(cancel_group_wait(g, NULL), ECANCELED);
	assert_int_equal(cancel_token_reason(cancel_group_token(g)),
	                 ECANCELED);
	group_free(g);
}

/* ------------------------------------------------------------------ */
/* limit                                                              */
/* ------------------------------------------------------------------ */

#define LIMIT 3

struct counts {
	int running;
	int max;
	int total;
	struct cancel_group *g;
	int submitted_ok;
};

static int
count_running(void *arg, cancel_token tok)
{
	(void)tok;
	struct counts *c = arg;
	int now = fetch_add_acq_rel(&c->running, 1) + 1;
	int m = ld_relaxed(&c->max);
	while (now > m &&
	       !__atomic_compare_exchange_n(&c->max, &m, now, 1,
	                                    __ATOMIC_RELAXED, __ATOMIC_RELAXED))
		;
	sched_yield();
	fetch_add_relaxed(&c->total, 1);
	fetch_sub_acq_rel(&c->running, 1);
	return 0;
}

static void *
submit_2500(void *arg)
{
	struct counts *c = arg;
	for (int i = 0; i < 2500; i++)
		if (cancel_group_go(c->g, count_running, c) == 0)
			fetch_add_relaxed(&c->submitted_ok, 1);
	return NULL;
}

static void
limit_respected_under_10000_members_from_4_submitters(void **state)
{
	(void)state;
	struct counts c = {0};
	c.g = group_new(LIMIT, CANCEL_TOKEN_NONE);
	pthread_t t[4];
	for (int i = 0; i < 4; i++)
		t[i] = tu_spawn(submit_2500, &c);
	for (int i = 0; i < 4; i++)
		tu_join(t[i]);
	assert_int_equal(cancel_group_wait(c.g, NULL), 0);
	assert_int_equal(c.submitted_ok, 10000);
	assert_int_equal(c.total, 10000);
	assert_true(c.max >= 1);
	assert_true(c.max <= LIMIT);
	/* Never more threads than the limit either (reused). */
	group_free(c.g);
}

struct gate {
	int open;
	int entered;
};

static int
hold_until_open(void *arg, cancel_token tok)
{
	(void)tok;
	struct gate *gt = arg;
	tu_signal(&gt->entered);
	tu_await(&gt->open);
	return 0;
}

struct fail_gate {
	struct gate gate;
	int err;
};

static int
fail_when_open(void *arg, cancel_token tok)
{
	(void)tok;
	struct fail_gate *f = arg;
	tu_signal(&f->gate.entered);
	tu_await(&f->gate.open);
	return f->err;
}

struct blocked_go {
	struct cancel_group *g;
	int ran;
	int rc;
};

static void *
go_on_full(void *arg)
{
	struct blocked_go *b = arg;
	b->rc = cancel_group_go(b->g, count_and_succeed, &b->ran);
	return NULL;
}

/*
 * Handshake: a go is blocked for a slot. go counts itself in users_ and
 * waits in the same critical section of the group's mutex, which the
 * wait releases: holding the mutex and seeing the count means it waits.
 */
static void
await_blocked_go(struct cancel_group *g)
{
	for (;;) {
		pthread_mutex_lock(&g->mu_);
		unsigned n = g->users_;
		pthread_mutex_unlock(&g->mu_);
		if (n > 0)
			return;
		sched_yield();
	}
}

static void
go_blocked_on_full_group_returns_failing_siblings_error(void **state)
{
	(void)state;
	struct cancel_group *g = group_new(1, CANCEL_TOKEN_NONE);
	struct fail_gate f = {.err = EIO};
	assert_int_equal(cancel_group_go(g, fail_when_open, &f), 0);
	tu_await(&f.gate.entered);
	int ran = 0;
	assert_int_equal(cancel_group_try_go(g, count_and_succeed, &ran),
	                 EAGAIN);

	struct blocked_go b = {.g = g};
	pthread_t t = tu_spawn(go_on_full, &b);
	await_blocked_go(g);
	tu_signal(&f.gate.open);
	tu_join(t);
	assert_int_equal(b.rc, EIO); /* the sibling's error, not ECANCELED */
	assert_int_equal(cancel_group_wait(g, NULL), EIO);
	assert_int_equal(b.ran, 0);
	assert_int_equal(ran, 0);
	group_free(g);
}

static void
go_blocked_on_full_group_runs_when_a_slot_frees(void **state)
{
	(void)state;
	struct cancel_group *g = group_new(1, CANCEL_TOKEN_NONE);
	struct gate gt = {0};
	assert_int_equal(cancel_group_go(g, hold_until_open, &gt), 0);
	tu_await(&gt.entered);
	struct blocked_go b = {.g = g};
	pthread_t t = tu_spawn(go_on_full, &b);
	await_blocked_go(g);
	tu_signal(&gt.open);
	tu_join(t);
	assert_int_equal(b.rc, 0);
	assert_int_equal(cancel_group_wait(g, NULL), 0);
	assert_int_equal(b.ran, 1);
	group_free(g);
}

struct from_member {
	struct cancel_group *g;
	int go_rc;
	int try_rc;
	int wait_rc;
	int destroy_rc;
	int ran;
};

static int
go_from_inside(void *arg, cancel_token tok)
{
	(void)tok;
	struct from_member *m = arg;
	m->go_rc = cancel_group_go(m->g, count_and_succeed, &m->ran);
	m->try_rc = cancel_group_try_go(m->g, count_and_succeed, &m->ran);
	m->wait_rc = cancel_group_wait(m->g, NULL);
	m->destroy_rc = cancel_group_destroy(m->g);
	return 0;
}

static void
go_from_member_on_full_group_returns_eagain(void **state)
{
	(void)state;
	struct cancel_group *g = group_new(1, CANCEL_TOKEN_NONE);
	struct from_member m = {.g = g};
	assert_int_equal(cancel_group_go(g, go_from_inside, &m), 0);
	assert_int_equal(cancel_group_wait(g, NULL), 0);
	assert_int_equal(m.go_rc, EAGAIN);
	assert_int_equal(m.try_rc, EAGAIN);
	assert_int_equal(m.wait_rc, EDEADLK);
	assert_int_equal(m.destroy_rc, EBUSY);
	assert_int_equal(m.ran, 0);
	group_free(g);
}

static int
spawn_child(void *arg, cancel_token tok)
{
	(void)tok;
	struct from_member *m = arg;
	m->go_rc = cancel_group_go(m->g, count_and_succeed, &m->ran);
	return 0;
}

static void
go_from_member_with_room_starts_a_member_wait_joins_it(void **state)
{
	(void)state;
	struct cancel_group *g = group_new(2, CANCEL_TOKEN_NONE);
	struct from_member m = {.g = g};
	assert_int_equal(cancel_group_go(g, spawn_child, &m), 0);
	assert_int_equal(cancel_group_wait(g, NULL), 0);
	assert_int_equal(m.go_rc, 0);
	assert_int_equal(ld_relaxed(&m.ran), 1);
	group_free(g);
}

/* ------------------------------------------------------------------ */
/* wait, destroy, threads                                             */
/* ------------------------------------------------------------------ */

static void
wait_deadline_returns_etimedout_and_a_later_wait_joins(void **state)
{
	(void)state;
	struct cancel_group *g = group_new(0, CANCEL_TOKEN_NONE);
	struct gate gt = {0};
	assert_int_equal(cancel_group_go(g, hold_until_open, &gt), 0);
	tu_await(&gt.entered);

	uint64_t t0 = tu_now_ns();
	struct timespec dl = cancel_deadline_in(50 * 1000000ull);
	assert_int_equal(cancel_group_wait(g, &dl), ETIMEDOUT);
	uint64_t took = tu_now_ns() - t0;
	assert_true(took >= 49 * 1000000ull);
	assert_true(took < 2000000000ull);
	/* A past deadline checks once. */
	struct timespec past = cancel_deadline_in(0);
	assert_int_equal(cancel_group_wait(g, &past), ETIMEDOUT);
	/* wait never cancels the group; destroy refuses while it runs. */
	assert_false(cancel_token_is_canceled(cancel_group_token(g)));
	assert_int_equal(cancel_group_destroy(g), EBUSY);

	tu_signal(&gt.open);
	assert_int_equal(cancel_group_wait(g, NULL), 0);
	assert_tasks(tasks_before);
	group_free(g);
}

static void
never_runs(void *arg)
{
	(void)arg;
	abort();
}

static void
destroy_refuses_until_wait_joined(void **state)
{
	(void)state;
	struct cancel_group *g = group_new(0, CANCEL_TOKEN_NONE);
	int ran = 0;
	assert_int_equal(cancel_group_go(g, count_and_succeed, &ran), 0);
	/* Even once the member returned, its thread is not joined yet. */
	while (ld_relaxed(&ran) == 0)
		sched_yield();
	assert_int_equal(cancel_group_destroy(g), EBUSY);
	assert_int_equal(cancel_group_wait(g, NULL), 0);
	/* A callback on the group's token: the source's EBUSY passes. */
	struct cancel_callback cb = CANCEL_CALLBACK_INITIALIZER;
	assert_true(cancel_callback_register(&cb, never_runs, NULL,
	                                     cancel_group_token(g)));
	assert_int_equal(cancel_group_destroy(g), EBUSY);
	assert_true(cancel_callback_unregister(&cb));
	group_free(g);
}

static void
thread_creation_failure_returns_eagain_and_leaves_group_intact(void **state)
{
	(void)state;
	struct cancel_group *g = group_new(2, CANCEL_TOKEN_NONE);
	int ran = 0;
	int before = task_count();
	cancel__group_test_fail_create(1);
	assert_int_equal(cancel_group_go(g, count_and_succeed, &ran), EAGAIN);
	cancel__group_test_fail_create(1);
	assert_int_equal(cancel_group_try_go(g, count_and_succeed, &ran),
	                 EAGAIN);
	assert_int_equal(task_count(), before);
	assert_int_equal(ld_relaxed(&ran), 0);
	assert_false(cancel_token_is_canceled(cancel_group_token(g)));
	/* The slots were given back: two go calls fit the limit of 2. */
	assert_int_equal(g->active_, 0);
	assert_int_equal(cancel_group_go(g, count_and_succeed, &ran), 0);
	assert_int_equal(cancel_group_go(g, count_and_succeed, &ran), 0);
	assert_int_equal(cancel_group_wait(g, NULL), 0);
	assert_int_equal(ld_relaxed(&ran), 2);
	group_free(g);
}

static int
block_until_canceled(void *arg, cancel_token tok)
{
	struct gate *gt = arg;
	fetch_add_acq_rel(&gt->entered, 1);
	cancel_wait(NULL, tok);
	return 0;
}

static void
no_thread_left_after_wait(void **state)
{
	(void)state;
	struct cancel_source parent = CANCEL_SOURCE_INITIALIZER;
	struct cancel_group *g = group_new(0, cancel_source_token(&parent));
	struct gate gt = {0};
	for (int i = 0; i < 16; i++)
		assert_int_equal(cancel_group_go(g, block_until_canceled, &gt),
		                 0);
	while (ld_acquire(&gt.entered) < 16)
		sched_yield();
	/* 16 members, 16 threads. */
	assert_true(task_count() >= tasks_before + 16);
	cancel_source_cancel(&parent);
	assert_int_equal(cancel_group_wait(g, NULL), ECANCELED);
	assert_tasks(tasks_before);
	group_free(g);
	assert_int_equal(cancel_source_destroy(&parent), 0);
}

static void
threads_are_reused_between_members(void **state)
{
	(void)state;
	struct cancel_group *g = group_new(1, CANCEL_TOKEN_NONE);
	int ran = 0;
	for (int i = 0; i < 200; i++)
		assert_int_equal(cancel_group_go(g, count_and_succeed, &ran),
		                 0);
	/* limit 1: one member at a time, so one thread did all of them. */
	assert_true(task_count() <= tasks_before + 1);
	assert_int_equal(cancel_group_wait(g, NULL), 0);
	assert_int_equal(ran, 200);
	group_free(g);
}

static int
report_mask(void *arg, cancel_token tok)
{
	(void)tok;
	sigset_t set;
	pthread_sigmask(SIG_BLOCK, NULL, &set);
	*(int *)arg = sigismember(&set, SIGINT) && sigismember(&set, SIGTERM) &&
	              sigismember(&set, SIGUSR1) && sigismember(&set, SIGCHLD);
	return 0;
}

static void
member_threads_block_all_signals(void **state)
{
	(void)state;
	struct cancel_group *g = group_new(0, CANCEL_TOKEN_NONE);
	int blocked = 0;
	assert_int_equal(cancel_group_go(g, report_mask, &blocked), 0);
	assert_int_equal(cancel_group_wait(g, NULL), 0);
	assert_true(blocked);
	/* The caller's own mask is as it was. */
	sigset_t set;
	pthread_sigmask(SIG_BLOCK, NULL, &set);
	assert_false(sigismember(&set, SIGUSR1));
	group_free(g);
}

static void
calls_leave_errno_untouched(void **state)
{
	(void)state;
	struct cancel_group *g = calloc(1, sizeof(*g));
	assert_non_null(g);
	errno = 4242;
	assert_int_equal(cancel_group_init(g, 1, CANCEL_TOKEN_NONE), 0);
	assert_int_equal(errno, 4242);
	int err = EIO, ran = 0;
	assert_int_equal(cancel_group_go(g, fail_now, &err), 0);
	assert_int_equal(errno, 4242);
	cancel_group_try_go(g, count_and_succeed, &ran);
	assert_int_equal(errno, 4242);
	assert_int_equal(cancel_group_wait(g, NULL), EIO);
	assert_int_equal(errno, 4242);
	assert_int_equal(cancel_group_go(g, count_and_succeed, &ran), EIO);
	assert_int_equal(errno, 4242);
	assert_int_equal(cancel_group_destroy(g), 0);
	assert_int_equal(errno, 4242);
	free(g);
}

static void
zero_group_is_idle(void **state)
{
	(void)state;
	struct cancel_group *g = calloc(1, sizeof(*g));
	assert_non_null(g);
	int ran = 0;
	assert_int_equal(cancel_group_go(g, count_and_succeed, &ran), EINVAL);
	assert_int_equal(cancel_group_wait(g, NULL), 0);
	assert_int_equal(cancel_group_destroy(g), 0);
	assert_int_equal(cancel_group_go(NULL, count_and_succeed, &ran),
	                 EINVAL);
	assert_int_equal(cancel_group_init(NULL, 0, CANCEL_TOKEN_NONE),
	                 EINVAL);
	assert_int_equal(cancel_group_wait(NULL, NULL), EINVAL);
	assert_int_equal(cancel_group_destroy(NULL), EINVAL);
	assert_int_equal(cancel_group_init(g, 0, CANCEL_TOKEN_NONE), 0);
	assert_int_equal(cancel_group_go(g, NULL, NULL), EINVAL);
	struct timespec bad = {0, 2000000000};
	assert_int_equal(cancel_group_wait(g, &bad), EINVAL);
	assert_int_equal(ran, 0);
	group_free(g);
}

/* Churn: fail, cancel and finish racing, many small groups. */
static int
maybe_fail(void *arg, cancel_token tok)
{
	uintptr_t i = (uintptr_t)arg;
	if (i % 7 == 3)
		return EIO;
	if (i % 3 == 0)
		return cancel_sleep(1000000, tok) == ECANCELED ? ECANCELED : 0;
	return 0;
}

static void
churn_groups_with_racing_failures(void **state)
{
	(void)state;
	long rounds = tu_rounds(300, 3000);
	for (long r = 0; r < rounds; r++) {
		struct cancel_group *g = group_new((unsigned)(r % 4),
		                                   CANCEL_TOKEN_NONE);
		int first = 0;
		for (uintptr_t i = 0; i < 8; i++) {
			int rc = cancel_group_go(g, maybe_fail,
			                         (void *)(i + (uintptr_t)r));
			assert_true(rc == 0 || rc == EIO);
			if (rc != 0 && first == 0)
				first = rc;
		}
		int w = cancel_group_wait(g, NULL);
		bool has_fail = false;
		for (uintptr_t i = 0; i < 8; i++)
			has_fail |= (i + (uintptr_t)r) % 7 == 3;
		assert_int_equal(w, has_fail ? EIO : 0);
		group_free(g);
	}
}

int
main(void)
{
	/* The library threads (cond waits use them) exist before any
	 * thread count is taken. */
	cancel_signal_prepare();
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(
	        first_failure_cancels_siblings_and_wait_returns_it, setup,
	        teardown),
	    cmocka_unit_test_setup_teardown(
	        all_members_succeed_wait_returns_zero, setup, teardown),
	    cmocka_unit_test_setup_teardown(
	        parent_canceled_members_see_its_reason_wait_returns_ecanceled,
	        setup, teardown),
	    cmocka_unit_test_setup_teardown(
	        parent_canceled_before_init_group_starts_canceled, setup,
	        teardown),
	    cmocka_unit_test_setup_teardown(
	        sibling_ecanceled_after_failure_is_not_counted, setup,
	        teardown),
	    cmocka_unit_test_setup_teardown(
	        member_ecanceled_before_any_cancel_is_a_failure, setup,
	        teardown),
	    cmocka_unit_test_setup_teardown(
	        member_failing_after_outside_cancel_is_the_failure, setup,
	        teardown),
	    cmocka_unit_test_setup_teardown(
	        limit_respected_under_10000_members_from_4_submitters, setup,
	        teardown),
	    cmocka_unit_test_setup_teardown(
	        go_blocked_on_full_group_returns_failing_siblings_error, setup,
	        teardown),
	    cmocka_unit_test_setup_teardown(
	        go_blocked_on_full_group_runs_when_a_slot_frees, setup,
	        teardown),
	    cmocka_unit_test_setup_teardown(
	        go_from_member_on_full_group_returns_eagain, setup, teardown),
	    cmocka_unit_test_setup_teardown(
	        go_from_member_with_room_starts_a_member_wait_joins_it, setup,
	        teardown),
	    cmocka_unit_test_setup_teardown(
	        wait_deadline_returns_etimedout_and_a_later_wait_joins, setup,
	        teardown),
	    cmocka_unit_test_setup_teardown(destroy_refuses_until_wait_joined,
	                                    setup, teardown),
	    cmocka_unit_test_setup_teardown(
	        thread_creation_failure_returns_eagain_and_leaves_group_intact,
	        setup, teardown),
	    cmocka_unit_test_setup_teardown(no_thread_left_after_wait, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(threads_are_reused_between_members,
	                                    setup, teardown),
	    cmocka_unit_test_setup_teardown(member_threads_block_all_signals,
	                                    setup, teardown),
	    cmocka_unit_test_setup_teardown(calls_leave_errno_untouched, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(zero_group_is_idle, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(churn_groups_with_racing_failures,
	                                    setup, teardown),
	};
	return cmocka_run_group_tests_name("group", tests, NULL, NULL);
}
