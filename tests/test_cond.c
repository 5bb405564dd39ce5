/*
 * cancel_cond_wait (run on both backends).
 */
/* ctest: TIMING */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <time.h>

#include "atomic.h"
#include "cancel.h"
#include "internal.h"
#include "testutil.h"

/* An error-checking mutex: unlock tells whether the caller held it. */
static void
init_mutex(pthread_mutex_t *mu)
{
	pthread_mutexattr_t a;
	pthread_mutexattr_init(&a);
	pthread_mutexattr_settype(&a, PTHREAD_MUTEX_ERRORCHECK);
	pthread_mutex_init(mu, &a);
	pthread_mutexattr_destroy(&a);
}

struct shared {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int ready;  /* waiters inside cancel_cond_wait (under mu) */
	int pred;   /* the predicate (under mu) */
};

static void
shared_init(struct shared *s)
{
	init_mutex(&s->mu);
	pthread_cond_init(&s->cv, NULL); /* default (realtime) clock */
	s->ready = 0;
	s->pred = 0;
}

static void
shared_destroy(struct shared *s)
{
	assert_int_equal(pthread_cond_destroy(&s->cv), 0);
	assert_int_equal(pthread_mutex_destroy(&s->mu), 0);
}

/* Handshake: wait until @n waiters released mu inside their wait. */
static void
wait_ready(struct shared *s, int n)
{
	for (;;) {
		pthread_mutex_lock(&s->mu);
		int r = s->ready;
		pthread_mutex_unlock(&s->mu);
		if (r >= n)
			return;
		sched_yield();
	}
}

struct waiter {
	struct shared *s;
	cancel_token tok;
	uint64_t timeout_ms; /* 0: none */
	int rc;
	int held; /* 1 if mu was held on return */
	int err;
};

/* Wait while !pred; stop at the first nonzero result. */
static void *
waiter_main(void *arg)
{
	struct waiter *w = arg;
	struct shared *s = w->s;
	struct timespec dl;
	if (w->timeout_ms != 0)
		dl = cancel_deadline_in(w->timeout_ms * 1000000ull);
	pthread_mutex_lock(&s->mu);
	s->ready++;
	errno = 999;
	w->rc = 0;
	while (!s->pred && w->rc == 0)
		w->rc = cancel_cond_wait(&s->cv, &s->mu,
		                         w->timeout_ms != 0 ? &dl : NULL,
		                         w->tok);
	w->err = errno;
	w->held = pthread_mutex_unlock(&s->mu) == 0;
	return NULL;
}

static void
cond_wait_returns_zero_on_signal_with_mutex_held(void **state)
{
	struct shared s;
	shared_init(&s);
	struct cancel_source src;
	cancel_source_init(&src);
	struct waiter w = {&s, cancel_source_token(&src), 0, -1, 0, 0};
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, waiter_main, &w), 0);
	wait_ready(&s, 1);
	pthread_mutex_lock(&s.mu);
	s.pred = 1;
	pthread_cond_signal(&s.cv);
	pthread_mutex_unlock(&s.mu);
	pthread_join(th, NULL);
	assert_int_equal(w.rc, 0);
	assert_true(w.held);
	assert_int_equal(w.err, 999);
	/* The callback was unregistered before the return. */
	assert_int_equal(cancel_source_destroy(&src), 0);
	shared_destroy(&s);
}

static void
cond_wait_returns_ecanceled_with_mutex_held(void **state)
{
	struct shared s;
	shared_init(&s);
	struct cancel_source src;
	cancel_source_init(&src);
	struct waiter w = {&s, cancel_source_token(&src), 0, -1, 0, 0};
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, waiter_main, &w), 0);
	wait_ready(&s, 1);
	uint64_t t0 = tu_now_ms();
	assert_true(cancel_source_cancel(&src));
	pthread_join(th, NULL);
	assert_int_equal(w.rc, ECANCELED);
	assert_true(w.held);
	assert_int_equal(w.err, 999);
	assert_true(tu_now_ms() - t0 < 2000);
	assert_int_equal(cancel_source_destroy(&src), 0);
	shared_destroy(&s);
}

static void
cond_wait_returns_ecanceled_at_once_if_canceled(void **state)
{
	struct shared s;
	shared_init(&s);
	struct cancel_source src;
	cancel_source_init(&src);
	cancel_source_cancel(&src);
	struct timespec past = {0, 0};
	pthread_mutex_lock(&s.mu);
	uint64_t t0 = tu_now_ms();
	errno = 71;
	assert_int_equal(cancel_cond_wait(&s.cv, &s.mu, NULL,
	                                  cancel_source_token(&src)),
	                 ECANCELED);
	/* ECANCELED beats ETIMEDOUT. */
	assert_int_equal(cancel_cond_wait(&s.cv, &s.mu, &past,
	                                  cancel_source_token(&src)),
	                 ECANCELED);
	assert_int_equal(errno, 71);
	assert_true(tu_now_ms() - t0 < 500);
	assert_int_equal(pthread_mutex_unlock(&s.mu), 0);
	assert_int_equal(cancel_source_destroy(&src), 0);
	shared_destroy(&s);
}

static void
cond_wait_rejects_bad_arguments(void **state)
{
	struct shared s;
	shared_init(&s);
	struct timespec bad = {0, 1000000000};
	pthread_mutex_lock(&s.mu);
	assert_int_equal(cancel_cond_wait(NULL, &s.mu, NULL, CANCEL_TOKEN_NONE),
	                 EINVAL);
	assert_int_equal(cancel_cond_wait(&s.cv, NULL, NULL, CANCEL_TOKEN_NONE),
	                 EINVAL);
	assert_int_equal(cancel_cond_wait(&s.cv, &s.mu, &bad,
	                                  CANCEL_TOKEN_NONE),
	                 EINVAL);
	assert_int_equal(pthread_mutex_unlock(&s.mu), 0);
	shared_destroy(&s);
}

/* The cv uses the default (realtime) clock; the deadline is monotonic. */
static void
cond_wait_times_out_on_a_realtime_condvar(void **state)
{
	struct shared s;
	shared_init(&s);
	struct cancel_source src;
	cancel_source_init(&src);
	cancel_token toks[2] = {cancel_source_token(&src), CANCEL_TOKEN_NONE};
	for (int i = 0; i < 2; i++) {
		pthread_mutex_lock(&s.mu);
		uint64_t t0 = tu_now_ms();
		struct timespec dl = cancel_deadline_in(100 * 1000000ull);
		int rc;
		do {
			rc = cancel_cond_wait(&s.cv, &s.mu, &dl, toks[i]);
		} while (rc == 0);
		uint64_t el = tu_now_ms() - t0;
		assert_int_equal(rc, ETIMEDOUT);
		assert_true(el >= 100);
		assert_true(el < 2000);
		assert_int_equal(pthread_mutex_unlock(&s.mu), 0);
	}
	struct timespec past = {0, 0};
	pthread_mutex_lock(&s.mu);
	assert_int_equal(cancel_cond_wait(&s.cv, &s.mu, &past,
	                                  cancel_source_token(&src)),
	                 ETIMEDOUT);
	assert_int_equal(pthread_mutex_unlock(&s.mu), 0);
	assert_int_equal(cancel_source_destroy(&src), 0);
	shared_destroy(&s);
}

/* The canceller holds the waiter's mutex while it cancels. */
static void
cancel_while_holding_the_mutex_does_not_deadlock(void **state)
{
	struct shared s;
	shared_init(&s);
	struct cancel_source src;
	cancel_source_init(&src);
	struct waiter w = {&s, cancel_source_token(&src), 0, -1, 0, 0};
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, waiter_main, &w), 0);
	wait_ready(&s, 1);
	pthread_mutex_lock(&s.mu);
	assert_true(cancel_source_cancel(&src)); /* returns: no deadlock */
	assert_int_equal(pthread_mutex_unlock(&s.mu), 0);
	pthread_join(th, NULL);
	assert_int_equal(w.rc, ECANCELED);
	assert_true(w.held);
	assert_int_equal(cancel_source_destroy(&src), 0);
	shared_destroy(&s);
}

struct race {
	struct shared *s;
	struct cancel_source *src;
	int arrived; /* spin barrier: the waiter is ready */
	int go;      /* spin barrier: both start now */
	int rc;
};

static void
spin_until(int *flag)
{
	for (unsigned i = 0; !ld_acquire(flag); i++)
		if (i > 100000)
			sched_yield(); /* descheduled partner: let it run */
}

static void *
race_waiter(void *arg)
{
	struct race *r = arg;
	struct shared *s = r->s;
	/* A lost wake-up ends at this deadline rather than hanging. */
	struct timespec dl = cancel_deadline_in(5000 * 1000000ull);
	st_release(&r->arrived, 1);
	spin_until(&r->go);
	pthread_mutex_lock(&s->mu);
	r->rc = 0;
	while (!s->pred && r->rc == 0)
		r->rc = cancel_cond_wait(&s->cv, &s->mu, &dl,
		                         cancel_source_token(r->src));
	pthread_mutex_unlock(&s->mu);
	return NULL;
}

/*
 * Cancel lands anywhere around the predicate check: never lost. A spin
 * barrier releases both threads together (a pthread barrier wakes one of
 * them tens of microseconds late), then the canceller waits a varying
 * number of spins so the cancel sweeps the waiter's path (lock, check,
 * register, wait).
 */
static void
cancel_racing_the_predicate_check_is_never_lost(void **state)
{
	struct shared s;
	shared_init(&s);
	for (int round = 0; round < 2000; round++) {
		struct cancel_source src;
		cancel_source_init(&src);
		struct race r = {&s, &src, 0, 0, -1};
		pthread_t th;
		assert_int_equal(pthread_create(&th, NULL, race_waiter, &r),
		                 0);
		spin_until(&r.arrived);
		st_release(&r.go, 1);
		for (volatile int k = 0; k < (round % 200) * 4; k++)
			;
		uint64_t t0 = tu_now_ms();
		cancel_source_cancel(&src);
		pthread_join(th, NULL);
		/* A lost wake-up would sleep to the 5 s deadline (and still
		 * report ECANCELED, which beats ETIMEDOUT). */
		assert_true(tu_now_ms() - t0 < 4000);
		assert_int_equal(r.rc, ECANCELED);
		assert_int_equal(cancel_source_destroy(&src), 0);
	}
	shared_destroy(&s);
}

/*
 * The window between the waiter's registration and its sleep, held open:
 * this program interposes pthread_cond_wait and pthread_cond_clockwait
 * (the library's calls bind to these definitions). A waiter thread that
 * sets hold_window stops, with mu held and its callback registered, until
 * the test has canceled. A cancel there cannot wake it by broadcasting
 * alone: it must hand the wake-up to the library thread.
 */
static _Thread_local int hold_window;
static int in_window;
static int cancel_done;

static void
window(void)
{
	if (!hold_window)
		return;
	hold_window = 0;
	st_release(&in_window, 1);
	spin_until(&cancel_done);
}

typedef int (*cond_wait_fn)(pthread_cond_t *, pthread_mutex_t *);
typedef int (*cond_clockwait_fn)(pthread_cond_t *, pthread_mutex_t *,
                                 clockid_t, const struct timespec *);

#ifdef TU_TSAN
/* The sanitizer's own wrappers: calling them keeps it aware of the wait. */
extern int __interceptor_pthread_cond_wait(pthread_cond_t *,
                                           pthread_mutex_t *);
extern int __interceptor_pthread_cond_clockwait(pthread_cond_t *,
                                                pthread_mutex_t *, clockid_t,
                                                const struct timespec *);
#define NEXT_COND_WAIT __interceptor_pthread_cond_wait
#define NEXT_COND_CLOCKWAIT __interceptor_pthread_cond_clockwait
#elif !defined(__GLIBC__)
/* No symbol versions (musl, linked dynamically by run_musl.sh). */
#define NEXT_COND_WAIT ((cond_wait_fn)dlsym(RTLD_NEXT, "pthread_cond_wait"))
#define NEXT_COND_CLOCKWAIT                                                  \
	((cond_clockwait_fn)dlsym(RTLD_NEXT, "pthread_cond_clockwait"))
#else
/* glibc's current version (plain dlsym may return an old compatibility
 * version of the condvar calls). */
#define NEXT_COND_WAIT                                                       \
	((cond_wait_fn)dlvsym(RTLD_NEXT, "pthread_cond_wait", "GLIBC_2.3.2"))
#define NEXT_COND_CLOCKWAIT                                                  \
	((cond_clockwait_fn)dlsym(RTLD_NEXT, "pthread_cond_clockwait"))
#endif

int
pthread_cond_wait(pthread_cond_t *cv, pthread_mutex_t *mu)
{
	cond_wait_fn real = NEXT_COND_WAIT;
	window();
	return real(cv, mu);
}

int
pthread_cond_clockwait(pthread_cond_t *cv, pthread_mutex_t *mu,
                       clockid_t clock, const struct timespec *ts)
{
	cond_clockwait_fn real = NEXT_COND_CLOCKWAIT;
	window();
	return real(cv, mu, clock, ts);
}

struct holder {
	struct shared *s;
	cancel_token tok;
	int rc;
};

static void *
holder_main(void *arg)
{
	struct holder *h = arg;
	struct timespec dl = cancel_deadline_in(5000 * 1000000ull);
	hold_window = 1;
	pthread_mutex_lock(&h->s->mu);
	h->rc = cancel_cond_wait(&h->s->cv, &h->s->mu, &dl, h->tok);
	pthread_mutex_unlock(&h->s->mu);
	return NULL;
}

static void
cancel_between_registration_and_sleep_still_wakes(void **state)
{
	struct shared s;
	shared_init(&s);
	struct cancel_source src;
	cancel_source_init(&src);
	struct holder h = {&s, cancel_source_token(&src), -1};
	st_relaxed(&in_window, 0);
	st_relaxed(&cancel_done, 0);
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, holder_main, &h), 0);
	spin_until(&in_window);
	uint64_t t0 = tu_now_ms();
	assert_true(cancel_source_cancel(&src)); /* waiter holds mu */
	st_release(&cancel_done, 1);
	pthread_join(th, NULL);
	assert_int_equal(h.rc, ECANCELED);
	/* Woken by the cancel, not by its 5 s deadline. */
	assert_true(tu_now_ms() - t0 < 4000);
	assert_int_equal(cancel_source_destroy(&src), 0);
	shared_destroy(&s);
}

/*
 * One cancel, several waiters on one condvar and mutex with one token, their
 * hooks running one after another while the woken waiters race for the
 * mutex: every waiter wakes with ECANCELED and the mutex held, promptly
 * (not at its 5 s deadline). Also with one waiter held in its registration
 * window (mutex held, hook registered): no other waiter's broadcast can
 * reach it, its own hook's deferred wake-up must.
 */
static void
one_cancel_wakes_every_waiter_of_one_condvar(int held_in_window)
{
	enum { N = 4 };
	struct shared s;
	shared_init(&s);
	struct cancel_source *src = malloc(sizeof(*src));
	assert_non_null(src);
	cancel_source_init(src);
	struct waiter w[N];
	pthread_t th[N];
	for (int i = 0; i < N; i++) {
		w[i] = (struct waiter){&s, cancel_source_token(src), 5000, -1,
		                       0, 0};
		assert_int_equal(
		        pthread_create(&th[i], NULL, waiter_main, &w[i]), 0);
		wait_ready(&s, i + 1);
	}
	struct holder h = {&s, cancel_source_token(src), -1};
	pthread_t hth;
	if (held_in_window) {
		st_relaxed(&in_window, 0);
		st_relaxed(&cancel_done, 0);
		assert_int_equal(pthread_create(&hth, NULL, holder_main, &h),
		                 0);
		spin_until(&in_window);
	}
	uint64_t t0 = tu_now_ms();
	assert_true(cancel_source_cancel(src));
	st_release(&cancel_done, 1);
	for (int i = 0; i < N; i++) {
		pthread_join(th[i], NULL);
		assert_int_equal(w[i].rc, ECANCELED);
		assert_true(w[i].held);
	}
	if (held_in_window) {
		pthread_join(hth, NULL);
		assert_int_equal(h.rc, ECANCELED);
	}
	assert_true(tu_now_ms() - t0 < 4000);
	assert_int_equal(cancel_source_destroy(src), 0);
	memset(src, 0xA5, sizeof(*src));
	free(src);
	shared_destroy(&s);
}

static void
one_cancel_wakes_all_waiters_of_one_condvar(void **state)
{
	(void)state;
	one_cancel_wakes_every_waiter_of_one_condvar(0);
}

static void
one_cancel_wakes_waiters_asleep_and_in_their_window(void **state)
{
	(void)state;
	one_cancel_wakes_every_waiter_of_one_condvar(1);
}

/* Two condvars of one mutex: a broadcast on one covers nothing on the
 * other, so both waiters must be woken. */
struct two_cv {
	pthread_mutex_t mu;
	pthread_cond_t cv[2];
	int ready; /* under mu */
	cancel_token tok;
	int rc[2];
};

struct two_cv_arg {
	struct two_cv *t;
	int k;
};

static void *
two_cv_waiter(void *arg)
{
	struct two_cv_arg *a = arg;
	struct two_cv *t = a->t;
	struct timespec dl = cancel_deadline_in(5000 * 1000000ull);
	pthread_mutex_lock(&t->mu);
	t->ready++;
	int rc = 0;
	while (rc == 0)
		rc = cancel_cond_wait(&t->cv[a->k], &t->mu, &dl, t->tok);
	t->rc[a->k] = rc;
	pthread_mutex_unlock(&t->mu);
	return NULL;
}

static void
one_cancel_wakes_waiters_of_two_condvars_of_one_mutex(void **state)
{
	(void)state;
	struct two_cv t = {.ready = 0};
	init_mutex(&t.mu);
	pthread_cond_init(&t.cv[0], NULL);
	pthread_cond_init(&t.cv[1], NULL);
	struct cancel_source *src = malloc(sizeof(*src));
	assert_non_null(src);
	cancel_source_init(src);
	t.tok = cancel_source_token(src);
	struct two_cv_arg a[2] = {{&t, 0}, {&t, 1}};
	pthread_t th[2];
	for (int k = 0; k < 2; k++) {
		assert_int_equal(
		        pthread_create(&th[k], NULL, two_cv_waiter, &a[k]), 0);
		/* Past ready under mu: the waiter is inside its wait. */
		for (;;) {
			pthread_mutex_lock(&t.mu);
			int r = t.ready;
			pthread_mutex_unlock(&t.mu);
			if (r > k)
				break;
			sched_yield();
		}
	}
	uint64_t t0 = tu_now_ms();
	assert_true(cancel_source_cancel(src));
	for (int k = 0; k < 2; k++) {
		pthread_join(th[k], NULL);
		assert_int_equal(t.rc[k], ECANCELED);
	}
	assert_true(tu_now_ms() - t0 < 4000);
	assert_int_equal(cancel_source_destroy(src), 0);
	memset(src, 0xA5, sizeof(*src));
	free(src);
	assert_int_equal(pthread_cond_destroy(&t.cv[0]), 0);
	assert_int_equal(pthread_cond_destroy(&t.cv[1]), 0);
	assert_int_equal(pthread_mutex_destroy(&t.mu), 0);
}

struct signaller {
	struct shared *s;
	pthread_barrier_t *bar;
};

/* Hand out one ticket (pred counts tickets) with one signal. */
static void *
signaller_main(void *arg)
{
	struct signaller *g = arg;
	pthread_barrier_wait(g->bar);
	pthread_mutex_lock(&g->s->mu);
	g->s->pred++;
	pthread_cond_signal(&g->s->cv);
	pthread_mutex_unlock(&g->s->mu);
	return NULL;
}

struct taker {
	struct shared *s;
	cancel_token tok;
	int rc;
	int took;
};

/* Wait for a ticket and take it, unless the wait fails first. */
static void *
taker_main(void *arg)
{
	struct taker *t = arg;
	struct shared *s = t->s;
	struct timespec dl = cancel_deadline_in(5000 * 1000000ull);
	pthread_mutex_lock(&s->mu);
	s->ready++;
	t->rc = 0;
	while (s->pred == 0 && t->rc == 0)
		t->rc = cancel_cond_wait(&s->cv, &s->mu, &dl, t->tok);
	if (t->rc == 0) {
		s->pred--;
		t->took = 1;
	}
	pthread_mutex_unlock(&s->mu);
	return NULL;
}

/*
 * Two waiters, one signal (one ticket), and the first waiter's token
 * canceled at the same moment. If the first returns ECANCELED, a signal it
 * may have taken is passed on, so the second takes the ticket; the ticket
 * is never stranded.
 */
static void
a_consumed_signal_is_passed_on(void **state)
{
	pthread_barrier_t bar;
	pthread_barrier_init(&bar, NULL, 2);
	int passed = 0;
	for (int round = 0; round < 300; round++) {
		struct shared s;
		shared_init(&s);
		struct cancel_source a, b;
		cancel_source_init(&a);
		cancel_source_init(&b);
		struct taker ta = {&s, cancel_source_token(&a), -1, 0};
		struct taker tb = {&s, cancel_source_token(&b), -1, 0};
		pthread_t tha, thb, tg;
		assert_int_equal(pthread_create(&tha, NULL, taker_main, &ta),
		                 0);
		wait_ready(&s, 1);
		assert_int_equal(pthread_create(&thb, NULL, taker_main, &tb),
		                 0);
		wait_ready(&s, 2);
		struct signaller g = {&s, &bar};
		assert_int_equal(
		        pthread_create(&tg, NULL, signaller_main, &g), 0);
		pthread_barrier_wait(&bar);
		cancel_source_cancel(&a);
		pthread_join(tha, NULL);
		pthread_join(tg, NULL);
		if (ta.took)
			cancel_source_cancel(&b); /* release the second */
		pthread_join(thb, NULL);
		if (ta.took) {
			assert_int_equal(ta.rc, 0);
			assert_int_equal(tb.rc, ECANCELED);
		} else {
			assert_int_equal(ta.rc, ECANCELED);
			assert_int_equal(tb.rc, 0); /* not ETIMEDOUT */
			assert_true(tb.took);
			passed++;
		}
		assert_int_equal(s.pred, 0);
		assert_int_equal(cancel_source_destroy(&a), 0);
		assert_int_equal(cancel_source_destroy(&b), 0);
		shared_destroy(&s);
	}
	print_message("second waiter took the ticket in %d/300 rounds\n",
	              passed);
	assert_true(passed > 0);
	pthread_barrier_destroy(&bar);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(
		        cond_wait_returns_zero_on_signal_with_mutex_held),
		cmocka_unit_test(
		        cond_wait_returns_ecanceled_with_mutex_held),
		cmocka_unit_test(
		        cond_wait_returns_ecanceled_at_once_if_canceled),
		cmocka_unit_test(cond_wait_rejects_bad_arguments),
		cmocka_unit_test(cond_wait_times_out_on_a_realtime_condvar),
		cmocka_unit_test(
		        cancel_while_holding_the_mutex_does_not_deadlock),
		cmocka_unit_test(
		        cancel_between_registration_and_sleep_still_wakes),
		cmocka_unit_test(
		        cancel_racing_the_predicate_check_is_never_lost),
		cmocka_unit_test(a_consumed_signal_is_passed_on),
		cmocka_unit_test(one_cancel_wakes_all_waiters_of_one_condvar),
		cmocka_unit_test(
		        one_cancel_wakes_waiters_asleep_and_in_their_window),
		cmocka_unit_test(
		        one_cancel_wakes_waiters_of_two_condvars_of_one_mutex),
	};
	return cmocka_run_group_tests_name(cancel__backend_name, tests, NULL,
	                                   NULL);
}
