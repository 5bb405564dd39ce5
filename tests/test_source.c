/*
 * Sources and tokens: the one-way state, reasons, concurrent cancels,
 * destroy's EBUSY and waiting rules, destroy from a callback, errno.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "cancel.h"
#include "internal.h"
#include "core.h"
#include "testutil.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static void
count_fn(void *arg)
{
	__atomic_fetch_add((int *)arg, 1, __ATOMIC_RELAXED);
}

static void
zero_source_needs_no_init(void **state)
{
	(void)state;
	static struct cancel_source s = CANCEL_SOURCE_INITIALIZER;
	cancel_token t = cancel_source_token(&s);
	assert_false(cancel_token_is_canceled(t));
	assert_true(cancel_token_can_be_canceled(t));
	assert_int_equal(cancel_token_reason(t), 0);
	assert_true(cancel_source_cancel(&s));
	assert_true(cancel_token_is_canceled(t));
	assert_int_equal(cancel_token_reason(t), ECANCELED);
	assert_int_equal(cancel_source_destroy(&s), 0);
}

static void
calloc_source_is_valid(void **state)
{
	(void)state;
	struct cancel_source *s = calloc(1, sizeof(*s));
	int ran = 0;
	struct cancel_callback cb = CANCEL_CALLBACK_INITIALIZER;
	assert_true(cancel_callback_register(&cb, count_fn, &ran,
	                                     cancel_source_token(s)));
	assert_true(cancel_source_cancel(s));
	assert_int_equal(ran, 1);
	assert_int_equal(cancel_source_destroy(s), 0);
	free(s);
}

static void
token_none_is_never_canceled(void **state)
{
	(void)state;
	cancel_token t = CANCEL_TOKEN_NONE;
	assert_false(cancel_token_is_canceled(t));
	assert_false(cancel_token_can_be_canceled(t));
	assert_int_equal(cancel_token_reason(t), 0);
	assert_int_equal(cancel_token_check(t), 0);
	struct timespec ts;
	assert_false(cancel_token_deadline(t, &ts));
}

static void
cancel_returns_true_only_for_the_transition(void **state)
{
	(void)state;
	struct cancel_source s;
	cancel_source_init(&s);
	cancel_token t = cancel_source_token(&s);
	assert_int_equal(cancel_token_check(t), 0);
	assert_true(cancel_source_cancel(&s));
	assert_false(cancel_source_cancel(&s));
	assert_false(cancel_source_cancel_with(&s, ETIMEDOUT));
	assert_int_equal(cancel_token_check(t), ECANCELED);
	assert_int_equal(cancel_token_reason(t), ECANCELED);
	assert_int_equal(cancel_source_destroy(&s), 0);
}

static void
first_reason_wins(void **state)
{
	(void)state;
	struct cancel_source s;
	cancel_source_init(&s);
	assert_true(cancel_source_cancel_with(&s, ETIMEDOUT));
	assert_false(cancel_source_cancel_with(&s, EPIPE));
	assert_false(cancel_source_cancel(&s));
	assert_int_equal(cancel_token_reason(cancel_source_token(&s)),
	                 ETIMEDOUT);
	assert_int_equal(cancel_source_destroy(&s), 0);
}

static void
nonpositive_reason_means_ecanceled(void **state)
{
	(void)state;
	struct cancel_source a, b;
	cancel_source_init(&a);
	cancel_source_init(&b);
	assert_true(cancel_source_cancel_with(&a, 0));
	assert_true(cancel_source_cancel_with(&b, -5));
	assert_int_equal(cancel_token_reason(cancel_source_token(&a)),
	                 ECANCELED);
	assert_int_equal(cancel_token_reason(cancel_source_token(&b)),
	                 ECANCELED);
	assert_int_equal(cancel_source_destroy(&a), 0);
	assert_int_equal(cancel_source_destroy(&b), 0);
}

static void
large_reason_is_kept(void **state)
{
	(void)state;
	struct cancel_source s;
	cancel_source_init(&s);
	assert_true(cancel_source_cancel_with(&s, 0x7fffffff));
	assert_int_equal(cancel_token_reason(cancel_source_token(&s)),
	                 0x7fffffff);
	assert_int_equal(cancel_source_destroy(&s), 0);
}

/* ---- concurrent cancels ---- */

struct race {
	struct cancel_source src;
	pthread_barrier_t go;
	int wins;
	int callbacks;
	int reason_seen_zero;
};

static void *
race_cancel(void *arg)
{
	struct race *r = arg;
	pthread_barrier_wait(&r->go);
	if (cancel_source_cancel_with(&r->src, EPIPE))
		__atomic_fetch_add(&r->wins, 1, __ATOMIC_RELAXED);
	/* Once any cancel call returned, the token reads canceled. */
	if (!cancel_token_is_canceled(cancel_source_token(&r->src)) ||
	    cancel_token_reason(cancel_source_token(&r->src)) != EPIPE)
		__atomic_fetch_add(&r->reason_seen_zero, 1, __ATOMIC_RELAXED);
	return NULL;
}

static void
concurrent_cancels_exactly_one_wins(void **state)
{
	(void)state;
	long rounds = tu_rounds(2000, 20000);
	for (long i = 0; i < rounds; i++) {
		struct race r;
		memset(&r, 0, sizeof(r));
		pthread_barrier_init(&r.go, NULL, 3);
		struct cancel_callback cb = CANCEL_CALLBACK_INITIALIZER;
		cancel_callback_register(&cb, count_fn, &r.callbacks,
		                         cancel_source_token(&r.src));
		pthread_t a = tu_spawn(race_cancel, &r);
		pthread_t b = tu_spawn(race_cancel, &r);
		race_cancel(&r);
		tu_join(a);
		tu_join(b);
		assert_int_equal(r.wins, 1);
		assert_int_equal(r.callbacks, 1);
		assert_int_equal(r.reason_seen_zero, 0);
		assert_int_equal(cancel_source_destroy(&r.src), 0);
		pthread_barrier_destroy(&r.go);
	}
}

/* A reader that sees the flag always sees the reason with it. */
struct reader {
	struct cancel_source src;
	int start;
	int bad;
};

static void *
read_flag_then_reason(void *arg)
{
	struct reader *r = arg;
	cancel_token t = cancel_source_token(&r->src);
	tu_signal(&r->start);
	while (!cancel_token_is_canceled(t))
		;
	if (cancel_token_reason(t) != ETIMEDOUT)
		r->bad = 1;
	return NULL;
}

static void
reason_is_visible_with_the_flag(void **state)
{
	(void)state;
	for (int i = 0; i < 500; i++) {
		struct reader r;
		memset(&r, 0, sizeof(r));
		pthread_t t = tu_spawn(read_flag_then_reason, &r);
		tu_await(&r.start);
		cancel_source_cancel_with(&r.src, ETIMEDOUT);
		tu_join(t);
		assert_int_equal(r.bad, 0);
	}
}

/* ---- destroy ---- */

/*
 * init writes only the fields read before they are written (the timer
 * heap links and the embedded link are set when used). Run every feature
 * that uses the others on sources initialized over garbage: a byte
 * pattern (a stray read would follow a wild pointer) and fresh malloc
 * memory (valgrind, in CI, reports a branch on it).
 */
#define HOUR_NS (3600ull * 1000000000ull)

static void
exercise_garbage_init(struct cancel_source *s, struct cancel_source *p2)
{
	struct cancel_source parent;
	cancel_source_init(&parent);
	cancel_token pt = cancel_source_token(&parent);
	struct timespec dl;

	/* Plain: register, deadline query, cancel, destroy. */
	cancel_source_init(s);
	int ran = 0;
	struct cancel_callback cb = CANCEL_CALLBACK_INITIALIZER;
	assert_true(cancel_callback_register(&cb, count_fn, &ran,
	                                     cancel_source_token(s)));
	assert_false(cancel_token_deadline(cancel_source_token(s), &dl));
	assert_true(cancel_source_cancel(s));
	assert_int_equal(ran, 1);
	assert_int_equal(cancel_source_destroy(s), 0);

	/* Timed: arm, query, re-arm, disarm, destroy armed. */
	cancel_source_init(s);
	assert_int_equal(cancel_source_cancel_after(s, HOUR_NS), 0);
	assert_true(cancel_token_deadline(cancel_source_token(s), &dl));
	assert_int_equal(cancel_source_cancel_after(s, 2 * HOUR_NS), 0);
	assert_int_equal(cancel_source_cancel_after(s, CANCEL_NEVER), 0);
	assert_false(cancel_token_deadline(cancel_source_token(s), &dl));
	assert_int_equal(cancel_source_cancel_after(s, HOUR_NS), 0);
	assert_int_equal(cancel_source_destroy(s), 0);

	/* Linked to one parent, then two, then a canceled one. */
	assert_int_equal(cancel_source_init_linked(s, &pt, 1), 0);
	assert_false(cancel_token_deadline(cancel_source_token(s), &dl));
	assert_int_equal(cancel_source_destroy(s), 0);
	cancel_source_init(p2);
	cancel_token two[2] = {pt, cancel_source_token(p2)};
	assert_int_equal(cancel_source_init_linked(s, two, 2), 0);
	assert_int_equal(cancel_source_destroy(&parent), EBUSY);
	assert_true(cancel_source_cancel(p2));
	assert_true(cancel_token_is_canceled(cancel_source_token(s)));
	assert_int_equal(cancel_source_destroy(s), 0);
	assert_int_equal(cancel_source_destroy(p2), 0);
	assert_int_equal(cancel_source_init_linked(s, &pt, 1), 0);
	assert_true(cancel_source_cancel(&parent));
	assert_true(cancel_token_is_canceled(cancel_source_token(s)));
	assert_int_equal(cancel_source_destroy(s), 0);
	assert_int_equal(cancel_source_destroy(&parent), 0);
}

static void
init_over_garbage_leaves_nothing_unset(void **state)
{
	(void)state;
	long live = cancel__test_live_objects();
	struct cancel_source s, p2;
	memset(&s, 0xa5, sizeof(s));
	memset(&p2, 0x5a, sizeof(p2));
	exercise_garbage_init(&s, &p2);

	struct cancel_source *hs = malloc(sizeof(*hs));
	struct cancel_source *hp = malloc(sizeof(*hp));
	assert_non_null(hs);
	assert_non_null(hp);
	exercise_garbage_init(hs, hp);
	free(hs);
	free(hp);
	assert_int_equal(cancel__test_live_objects(), live);
}

static void
destroy_null_is_einval(void **state)
{
	(void)state;
	assert_int_equal(cancel_source_destroy(NULL), EINVAL);
}

static void
destroy_is_ebusy_while_callback_registered(void **state)
{
	(void)state;
	struct cancel_source s;
	cancel_source_init(&s);
	int ran = 0;
	struct cancel_callback cb = CANCEL_CALLBACK_INITIALIZER;
	cancel_callback_register(&cb, count_fn, &ran, cancel_source_token(&s));
	assert_int_equal(cancel_source_destroy(&s), EBUSY);
	/* Nothing changed: the callback still runs on cancel. */
	assert_true(cancel_source_cancel(&s));
	assert_int_equal(ran, 1);
	assert_int_equal(cancel_source_destroy(&s), 0);
}

static void
destroy_succeeds_after_unregister(void **state)
{
	(void)state;
	struct cancel_source s;
	cancel_source_init(&s);
	int ran = 0;
	struct cancel_callback cb = CANCEL_CALLBACK_INITIALIZER;
	cancel_callback_register(&cb, count_fn, &ran, cancel_source_token(&s));
	assert_true(cancel_callback_unregister(&cb));
	assert_int_equal(cancel_source_destroy(&s), 0);
	assert_int_equal(ran, 0);
}

static void
destroyed_storage_can_be_initialized_again(void **state)
{
	(void)state;
	struct cancel_source s;
	cancel_source_init(&s);
	cancel_source_cancel(&s);
	assert_int_equal(cancel_source_destroy(&s), 0);
	cancel_source_init(&s);
	assert_false(cancel_token_is_canceled(cancel_source_token(&s)));
	assert_true(cancel_source_cancel(&s));
	assert_int_equal(cancel_source_destroy(&s), 0);
}

struct slow_cancel {
	struct cancel_source src;
	struct cancel_callback cb;
	int entered;
	int release;
	int callback_returned;
	int destroy_rc;
	int destroy_saw_callback_returned;
};

static void
slow_fn(void *arg)
{
	struct slow_cancel *sc = arg;
	tu_signal(&sc->entered);
	tu_await(&sc->release);
	__atomic_store_n(&sc->callback_returned, 1, __ATOMIC_RELEASE);
}

static void *
cancel_thread(void *arg)
{
	struct slow_cancel *sc = arg;
	cancel_source_cancel(&sc->src);
	return NULL;
}

static void *
destroy_thread(void *arg)
{
	struct slow_cancel *sc = arg;
	sc->destroy_rc = cancel_source_destroy(&sc->src);
	sc->destroy_saw_callback_returned =
	    __atomic_load_n(&sc->callback_returned, __ATOMIC_ACQUIRE);
	return NULL;
}

static void
destroy_waits_for_cancel_finishing_on_another_thread(void **state)
{
	(void)state;
	for (int i = 0; i < 50; i++) {
		struct slow_cancel sc;
		memset(&sc, 0, sizeof(sc));
		cancel_callback_register(&sc.cb, slow_fn, &sc,
		                         cancel_source_token(&sc.src));
		pthread_t c = tu_spawn(cancel_thread, &sc);
		tu_await(&sc.entered);
		pthread_t d = tu_spawn(destroy_thread, &sc);
		/* Handshake: destroy has parked (it set DWAIT). */
		while (!(__atomic_load_n(&sc.src.state_, __ATOMIC_ACQUIRE) &
		         CANCEL__S_DWAIT))
			sched_yield();
		tu_signal(&sc.release);
		tu_join(d);
		tu_join(c);
		assert_int_equal(sc.destroy_rc, 0);
		assert_int_equal(sc.destroy_saw_callback_returned, 1);
	}
}

struct self_free {
	struct cancel_source src;
	struct cancel_callback cb;
	int *destroy_rc;
};

static void
free_request(void *arg)
{
	struct self_free *req = arg;
	*req->destroy_rc = cancel_source_destroy(&req->src);
	free(req);
}

static void
destroy_from_own_callback_lets_the_request_free_itself(void **state)
{
	(void)state;
	int rc = -1;
	struct self_free *req = calloc(1, sizeof(*req));
	req->destroy_rc = &rc;
	cancel_callback_register(&req->cb, free_request, req,
	                         cancel_source_token(&req->src));
	/* ASan would flag any touch of req after the callback freed it. */
	assert_true(cancel_source_cancel(&req->src));
	assert_int_equal(rc, 0);
}

struct two_cbs {
	struct cancel_source src;
	struct cancel_callback first, second;
	int rc_in_callback;
	int first_ran;
};

static void
try_destroy_fn(void *arg)
{
	struct two_cbs *t = arg;
	t->rc_in_callback = cancel_source_destroy(&t->src);
}

static void
mark_fn(void *arg)
{
	((struct two_cbs *)arg)->first_ran = 1;
}

static void
destroy_from_callback_is_ebusy_while_others_remain(void **state)
{
	(void)state;
	struct two_cbs t;
	memset(&t, 0, sizeof(t));
	cancel_callback_register(&t.first, mark_fn, &t,
	                         cancel_source_token(&t.src));
	/* Registered last, so it runs first while 'first' is registered. */
	cancel_callback_register(&t.second, try_destroy_fn, &t,
	                         cancel_source_token(&t.src));
	assert_true(cancel_source_cancel(&t.src));
	assert_int_equal(t.rc_in_callback, EBUSY);
	assert_int_equal(t.first_ran, 1);
	assert_int_equal(cancel_source_destroy(&t.src), 0);
}

/* ---- errno ---- */

static void
clobber_errno_fn(void *arg)
{
	(void)arg;
	errno = EDOM;
}

static void
every_core_call_leaves_errno_alone(void **state)
{
	(void)state;
	struct cancel_source s, child;
	struct cancel_callback cb = CANCEL_CALLBACK_INITIALIZER;
	errno = 4242;
	cancel_source_init(&s);
	cancel_token t = cancel_source_token(&s);
	assert_int_equal(cancel_source_init_linked(&child, &t, 1), 0);
	cancel_callback_register(&cb, clobber_errno_fn, NULL, t);
	assert_int_equal(cancel_source_destroy(&s), EBUSY);
	assert_false(cancel_token_is_canceled(t));
	cancel_token_reason(t);
	cancel_token_check(t);
	cancel_source_cancel(&s);
	struct cancel_callback late = CANCEL_CALLBACK_INITIALIZER;
	cancel_callback_register(&late, clobber_errno_fn, NULL, t);
	assert_int_equal(
	    cancel_callback_try_register(&late, clobber_errno_fn, NULL, t),
	    ECANCELED);
	cancel_callback_unregister(&cb);
	assert_int_equal(cancel_callback_try_unregister(&cb), EALREADY);
	assert_int_equal(cancel_source_destroy(&child), 0);
	assert_int_equal(cancel_source_destroy(&s), 0);
	assert_int_equal(errno, 4242);
}

/*
 * A callback destroys its own source while another thread's unregister is
 * parked on that very callback: EBUSY at once (the unregister leaves only
 * after the callback returns, so waiting for it would deadlock). Once the
 * callback returned, the unregister returns false and destroy succeeds;
 * the source and the record are freed at once.
 */
struct parked {
	struct cancel_source *src;
	struct cancel_callback *cb;
	int rc_in_callback;
	int running;
	int unreg_done;
	bool unreg_result;
};

static void
destroy_once_unregister_parks(void *arg)
{
	struct parked *p = arg;
	tu_signal(&p->running);
	/* Wait (bounded) for the other thread's unregister to park. */
	uint64_t end = tu_now_ns() + 10000000000ull;
	while (!(ld_acquire(&p->src->gen_) & GEN_WAIT) && tu_now_ns() < end)
		sched_yield();
	p->rc_in_callback = cancel_source_destroy(p->src);
}

static void *
unregister_thread(void *arg)
{
	struct parked *p = arg;
	tu_await(&p->running); /* started while the callback runs */
	p->unreg_result = cancel_callback_unregister(p->cb);
	tu_signal(&p->unreg_done);
	return NULL;
}

static void
destroy_from_callback_is_ebusy_while_an_unregister_waits_for_it(void **state)
{
	(void)state;
	struct parked p = {0};
	p.src = malloc(sizeof(*p.src));
	p.cb = calloc(1, sizeof(*p.cb));
	assert_non_null(p.src);
	assert_non_null(p.cb);
	cancel_source_init(p.src);
	assert_true(cancel_callback_register(p.cb, destroy_once_unregister_parks,
	                                     &p, cancel_source_token(p.src)));
	pthread_t t = tu_spawn(unregister_thread, &p);
	assert_true(cancel_source_cancel(p.src));
	tu_join(t);
	assert_int_equal(p.unreg_done, 1);
	assert_false(p.unreg_result);
	free(p.cb); /* unregister returned: nothing touches it */
	assert_int_equal(p.rc_in_callback, EBUSY);
	assert_int_equal(cancel_source_destroy(p.src), 0);
	memset(p.src, 0xA5, sizeof(*p.src));
	free(p.src);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(zero_source_needs_no_init),
	    cmocka_unit_test(calloc_source_is_valid),
	    cmocka_unit_test(token_none_is_never_canceled),
	    cmocka_unit_test(cancel_returns_true_only_for_the_transition),
	    cmocka_unit_test(first_reason_wins),
	    cmocka_unit_test(nonpositive_reason_means_ecanceled),
	    cmocka_unit_test(large_reason_is_kept),
	    cmocka_unit_test(concurrent_cancels_exactly_one_wins),
	    cmocka_unit_test(reason_is_visible_with_the_flag),
	    cmocka_unit_test(init_over_garbage_leaves_nothing_unset),
	    cmocka_unit_test(destroy_null_is_einval),
	    cmocka_unit_test(destroy_is_ebusy_while_callback_registered),
	    cmocka_unit_test(destroy_succeeds_after_unregister),
	    cmocka_unit_test(destroyed_storage_can_be_initialized_again),
	    cmocka_unit_test(
	        destroy_waits_for_cancel_finishing_on_another_thread),
	    cmocka_unit_test(
	        destroy_from_own_callback_lets_the_request_free_itself),
	    cmocka_unit_test(destroy_from_callback_is_ebusy_while_others_remain),
	    cmocka_unit_test(
	        destroy_from_callback_is_ebusy_while_an_unregister_waits_for_it),
	    cmocka_unit_test(every_core_call_leaves_errno_alone),
	};
	return cmocka_run_group_tests_name("source", tests, NULL, NULL);
}
