/*
 * Callbacks: exactly once, LIFO, inline after cancel, unregister (waiting,
 * self, cross, non-waiting), callbacks that change the list while it runs.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "cancel.h"
#include "internal.h"
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
runs_exactly_once_on_cancel(void **state)
{
	(void)state;
	struct cancel_source s = CANCEL_SOURCE_INITIALIZER;
	struct cancel_callback cb = CANCEL_CALLBACK_INITIALIZER;
	int ran = 0;
	assert_true(cancel_callback_register(&cb, count_fn, &ran,
	                                     cancel_source_token(&s)));
	assert_int_equal(ran, 0);
	cancel_source_cancel(&s);
	cancel_source_cancel(&s);
	assert_int_equal(ran, 1);
	assert_false(cancel_callback_unregister(&cb));
	assert_int_equal(cancel_source_destroy(&s), 0);
}

static pthread_t ran_on;

static void
record_thread_fn(void *arg)
{
	(void)arg;
	ran_on = pthread_self();
}

static void
register_after_cancel_runs_callback_inline(void **state)
{
	(void)state;
	struct cancel_source s = CANCEL_SOURCE_INITIALIZER;
	cancel_source_cancel(&s);
	struct cancel_callback cb = CANCEL_CALLBACK_INITIALIZER;
	ran_on = 0;
	assert_false(cancel_callback_register(&cb, record_thread_fn, NULL,
	                                      cancel_source_token(&s)));
	assert_true(pthread_equal(ran_on, pthread_self()));
	/* The storage is free again: nothing is registered. */
	assert_int_equal(cancel_callback_try_unregister(&cb), ENOENT);
	assert_int_equal(cancel_source_destroy(&s), 0);
}

static void
try_register_after_cancel_refuses_without_running(void **state)
{
	(void)state;
	struct cancel_source s = CANCEL_SOURCE_INITIALIZER;
	cancel_source_cancel(&s);
	struct cancel_callback cb = CANCEL_CALLBACK_INITIALIZER;
	int ran = 0;
	assert_int_equal(cancel_callback_try_register(&cb, count_fn, &ran,
	                                              cancel_source_token(&s)),
	                 ECANCELED);
	assert_int_equal(ran, 0);
	assert_int_equal(cancel_callback_try_register(NULL, count_fn, &ran,
	                                              cancel_source_token(&s)),
	                 EINVAL);
	assert_int_equal(cancel_callback_try_register(&cb, NULL, &ran,
	                                              cancel_source_token(&s)),
	                 EINVAL);
	assert_int_equal(cancel_source_destroy(&s), 0);
}

struct order {
	int seq[8];
	int n;
};

struct ordered_cb {
	struct order *o;
	int id;
};

static void
order_fn(void *arg)
{
	struct ordered_cb *oc = arg;
	oc->o->seq[oc->o->n++] = oc->id;
}

static void
callbacks_run_last_registered_first(void **state)
{
	(void)state;
	struct cancel_source s = CANCEL_SOURCE_INITIALIZER;
	struct order o = {{0}, 0};
	struct cancel_callback cbs[5];
	struct ordered_cb ocs[5];
	for (int i = 0; i < 5; i++) {
		ocs[i].o = &o;
		ocs[i].id = i;
		cancel_callback_register(&cbs[i], order_fn, &ocs[i],
		                         cancel_source_token(&s));
	}
	/* Remove one from the middle: the rest keep their order. */
	assert_true(cancel_callback_unregister(&cbs[2]));
	cancel_source_cancel(&s);
	assert_int_equal(o.n, 4);
	assert_int_equal(o.seq[0], 4);
	assert_int_equal(o.seq[1], 3);
	assert_int_equal(o.seq[2], 1);
	assert_int_equal(o.seq[3], 0);
	assert_int_equal(cancel_source_destroy(&s), 0);
}

static void *
cancel_thread(void *arg)
{
	cancel_source_cancel(arg);
	return NULL;
}

static void
callbacks_run_on_the_canceling_thread(void **state)
{
	(void)state;
	struct cancel_source s = CANCEL_SOURCE_INITIALIZER;
	struct cancel_callback cb = CANCEL_CALLBACK_INITIALIZER;
	ran_on = pthread_self();
	cancel_callback_register(&cb, record_thread_fn, NULL,
	                         cancel_source_token(&s));
	pthread_t t = tu_spawn(cancel_thread, &s);
	tu_join(t);
	assert_true(pthread_equal(ran_on, t));
	assert_int_equal(cancel_source_destroy(&s), 0);
}

static void
unregister_before_cancel_removes_it(void **state)
{
	(void)state;
	struct cancel_source s = CANCEL_SOURCE_INITIALIZER;
	struct cancel_callback cb = CANCEL_CALLBACK_INITIALIZER;
	int ran = 0;
	cancel_callback_register(&cb, count_fn, &ran, cancel_source_token(&s));
	assert_true(cancel_callback_unregister(&cb));
	assert_false(cancel_callback_unregister(&cb));
	cancel_source_cancel(&s);
	assert_int_equal(ran, 0);
	assert_int_equal(cancel_source_destroy(&s), 0);
}

static void
try_unregister_reports_each_state(void **state)
{
	(void)state;
	struct cancel_source s = CANCEL_SOURCE_INITIALIZER;
	struct cancel_callback never = CANCEL_CALLBACK_INITIALIZER;
	struct cancel_callback a = CANCEL_CALLBACK_INITIALIZER;
	struct cancel_callback b = CANCEL_CALLBACK_INITIALIZER;
	int ran = 0;
	assert_int_equal(cancel_callback_try_unregister(&never), ENOENT);
	assert_int_equal(cancel_callback_try_unregister(NULL), EINVAL);
	cancel_callback_register(&a, count_fn, &ran, cancel_source_token(&s));
	cancel_callback_register(&b, count_fn, &ran, cancel_source_token(&s));
	assert_int_equal(cancel_callback_try_unregister(&a), 0);
	assert_int_equal(cancel_callback_try_unregister(&a), ENOENT);
	cancel_source_cancel(&s);
	assert_int_equal(ran, 1);
	assert_int_equal(cancel_callback_try_unregister(&b), EALREADY);
	assert_int_equal(cancel_source_destroy(&s), 0);
	/* Completed callbacks do not touch their destroyed source. */
	assert_int_equal(cancel_callback_try_unregister(&b), EALREADY);
	assert_false(cancel_callback_unregister(&b));
}

static void
registration_on_token_none_is_only_recorded(void **state)
{
	(void)state;
	struct cancel_callback cb = CANCEL_CALLBACK_INITIALIZER;
	int ran = 0;
	assert_true(cancel_callback_register(&cb, count_fn, &ran,
	                                     CANCEL_TOKEN_NONE));
	assert_int_equal(cancel_callback_try_unregister(&cb), 0);
	assert_int_equal(cancel_callback_try_unregister(&cb), ENOENT);
	assert_int_equal(cancel_callback_try_register(&cb, count_fn, &ran,
	                                              CANCEL_TOKEN_NONE),
	                 0);
	assert_true(cancel_callback_unregister(&cb));
	assert_false(cancel_callback_unregister(&cb));
	assert_int_equal(ran, 0);
}

/* ---- a callback running on another thread ---- */

struct blocker {
	struct cancel_source src;
	struct cancel_callback cb;
	int entered;
	int release;
	int returned;
	int unreg_result;
	int saw_returned;
	int try_rc;
};

static void
block_fn(void *arg)
{
	struct blocker *b = arg;
	tu_signal(&b->entered);
	tu_await(&b->release);
	__atomic_store_n(&b->returned, 1, __ATOMIC_RELEASE);
}

static void *
unregister_thread(void *arg)
{
	struct blocker *b = arg;
	b->unreg_result = cancel_callback_unregister(&b->cb);
	b->saw_returned = __atomic_load_n(&b->returned, __ATOMIC_ACQUIRE);
	return NULL;
}

static void
unregister_waits_for_running_callback(void **state)
{
	(void)state;
	struct blocker b;
	memset(&b, 0, sizeof(b));
	cancel_callback_register(&b.cb, block_fn, &b,
	                         cancel_source_token(&b.src));
	pthread_t c = tu_spawn(cancel_thread, &b.src);
	tu_await(&b.entered);
	/* Never waits: the lock-holder case. */
	assert_int_equal(cancel_callback_try_unregister(&b.cb), EINPROGRESS);
	pthread_t u = tu_spawn(unregister_thread, &b);
	/* Handshake: the unregister has parked on gen_. */
	while (!(__atomic_load_n(&b.src.gen_, __ATOMIC_ACQUIRE) & 0x80000000u))
		sched_yield();
	tu_signal(&b.release);
	tu_join(u);
	tu_join(c);
	assert_int_equal(b.unreg_result, 0);
	assert_int_equal(b.saw_returned, 1);
	assert_int_equal(cancel_callback_try_unregister(&b.cb), EALREADY);
	assert_int_equal(cancel_source_destroy(&b.src), 0);
}

/* ---- the callback changes things from inside ---- */

struct self_unreg {
	struct cancel_source src;
	struct cancel_callback cb;
	int result;
	int try_rc;
};

static void
self_unregister_fn(void *arg)
{
	struct self_unreg *su = arg;
	su->try_rc = cancel_callback_try_unregister(&su->cb);
	su->result = cancel_callback_unregister(&su->cb);
}

static void
self_unregister_returns_false_without_blocking(void **state)
{
	(void)state;
	struct self_unreg su;
	memset(&su, 0, sizeof(su));
	su.result = -1;
	cancel_callback_register(&su.cb, self_unregister_fn, &su,
	                         cancel_source_token(&su.src));
	assert_true(cancel_source_cancel(&su.src));
	assert_int_equal(su.try_rc, EINPROGRESS);
	assert_int_equal(su.result, 0);
	assert_int_equal(cancel_source_destroy(&su.src), 0);
}

/* Depth: A's callback cancels B, whose callback unregisters A's. */
struct nested {
	struct cancel_source a, b;
	struct cancel_callback on_a, on_b;
	int result;
};

static void
on_a_fn(void *arg)
{
	struct nested *n = arg;
	cancel_source_cancel(&n->b);
}

static void
on_b_fn(void *arg)
{
	struct nested *n = arg;
	n->result = cancel_callback_unregister(&n->on_a);
}

static void
nested_self_unregister_returns_false_at_once(void **state)
{
	(void)state;
	struct nested n;
	memset(&n, 0, sizeof(n));
	n.result = -1;
	cancel_callback_register(&n.on_a, on_a_fn, &n,
	                         cancel_source_token(&n.a));
	cancel_callback_register(&n.on_b, on_b_fn, &n,
	                         cancel_source_token(&n.b));
	cancel_source_cancel(&n.a);
	assert_int_equal(n.result, 0);
	assert_int_equal(cancel_source_destroy(&n.a), 0);
	assert_int_equal(cancel_source_destroy(&n.b), 0);
}

struct editor {
	struct cancel_source src;
	struct cancel_callback first, victim, editor_cb, late;
	int victim_ran, late_ran, first_ran;
	int unreg_victim;
	int late_registered;
};

static void
editor_fn(void *arg)
{
	struct editor *e = arg;
	e->unreg_victim = cancel_callback_unregister(&e->victim);
	e->late_registered = cancel_callback_register(
	    &e->late, count_fn, &e->late_ran, cancel_source_token(&e->src));
}

static void
callback_unregisters_a_later_one_and_registers_a_new_one(void **state)
{
	(void)state;
	struct editor e;
	memset(&e, 0, sizeof(e));
	e.late_registered = -1;
	cancel_token t = cancel_source_token(&e.src);
	cancel_callback_register(&e.first, count_fn, &e.first_ran, t);
	cancel_callback_register(&e.victim, count_fn, &e.victim_ran, t);
	cancel_callback_register(&e.editor_cb, editor_fn, &e, t);
	cancel_source_cancel(&e.src);
	assert_int_equal(e.unreg_victim, 1);
	assert_int_equal(e.victim_ran, 0);
	/* New registration after cancel started runs inline. */
	assert_int_equal(e.late_registered, 0);
	assert_int_equal(e.late_ran, 1);
	assert_int_equal(e.first_ran, 1);
	assert_int_equal(cancel_source_destroy(&e.src), 0);
}

struct heap_cb {
	struct cancel_callback cb;
	int *ran;
};

static void
free_own_node_fn(void *arg)
{
	struct heap_cb *h = arg;
	(*h->ran)++;
	cancel_callback_unregister(&h->cb);
	free(h);
}

static void
callback_may_free_its_own_node(void **state)
{
	(void)state;
	struct cancel_source s = CANCEL_SOURCE_INITIALIZER;
	int ran = 0;
	struct cancel_callback other = CANCEL_CALLBACK_INITIALIZER;
	int other_ran = 0;
	cancel_callback_register(&other, count_fn, &other_ran,
	                         cancel_source_token(&s));
	for (int i = 0; i < 3; i++) {
		struct heap_cb *h = calloc(1, sizeof(*h));
		h->ran = &ran;
		cancel_callback_register(&h->cb, free_own_node_fn, h,
		                         cancel_source_token(&s));
	}
	cancel_source_cancel(&s);
	assert_int_equal(ran, 3);
	assert_int_equal(other_ran, 1);
	assert_int_equal(cancel_source_destroy(&s), 0);
}

/* ---- races ---- */

struct unreg_race {
	struct cancel_source src;
	struct cancel_callback cb;
	pthread_barrier_t go;
	int ran;
};

static void *
race_cancel_thread(void *arg)
{
	struct unreg_race *r = arg;
	pthread_barrier_wait(&r->go);
	cancel_source_cancel(&r->src);
	return NULL;
}

static void
unregister_racing_cancel_is_exactly_one_outcome(void **state)
{
	(void)state;
	long rounds = tu_rounds(10000, 100000);
	long removed = 0, ran = 0;
	for (long i = 0; i < rounds; i++) {
		struct unreg_race r;
		memset(&r, 0, sizeof(r));
		pthread_barrier_init(&r.go, NULL, 2);
		cancel_callback_register(&r.cb, count_fn, &r.ran,
		                         cancel_source_token(&r.src));
		pthread_t t = tu_spawn(race_cancel_thread, &r);
		pthread_barrier_wait(&r.go);
		bool got = cancel_callback_unregister(&r.cb);
		/* After unregister returned, the callback is not running:
		 * the count it left is final. */
		int seen = __atomic_load_n(&r.ran, __ATOMIC_RELAXED);
		tu_join(t);
		assert_int_equal(seen, r.ran);
		assert_true(got != (r.ran == 1));
		assert_true(r.ran <= 1);
		removed += got;
		ran += r.ran;
		assert_int_equal(cancel_source_destroy(&r.src), 0);
		pthread_barrier_destroy(&r.go);
	}
	fprintf(stderr, "unregister won %ld, callback ran %ld\n", removed,
	        ran);
}

/* Two callbacks unregister each other while two sources cancel at once. */
struct cross {
	struct cancel_source a, b;
	struct cancel_callback on_a, on_b;
	int a_in, b_in;
	int a_result, b_result;
};

static void
cross_a_fn(void *arg)
{
	struct cross *x = arg;
	tu_signal(&x->a_in);
	tu_await(&x->b_in);
	x->a_result = cancel_callback_unregister(&x->on_b);
}

static void
cross_b_fn(void *arg)
{
	struct cross *x = arg;
	tu_signal(&x->b_in);
	tu_await(&x->a_in);
	x->b_result = cancel_callback_unregister(&x->on_a);
}

static void *
cancel_b_thread(void *arg)
{
	struct cross *x = arg;
	cancel_source_cancel(&x->b);
	return NULL;
}

static void
cross_unregister_between_two_cancels_does_not_deadlock(void **state)
{
	(void)state;
	for (int i = 0; i < 200; i++) {
		struct cross x;
		memset(&x, 0, sizeof(x));
		x.a_result = x.b_result = -1;
		cancel_callback_register(&x.on_a, cross_a_fn, &x,
		                         cancel_source_token(&x.a));
		cancel_callback_register(&x.on_b, cross_b_fn, &x,
		                         cancel_source_token(&x.b));
		pthread_t t = tu_spawn(cancel_b_thread, &x);
		cancel_source_cancel(&x.a);
		tu_join(t);
		/* Both were running: neither removal can succeed. */
		assert_int_equal(x.a_result, 0);
		assert_int_equal(x.b_result, 0);
		assert_int_equal(cancel_source_destroy(&x.a), 0);
		assert_int_equal(cancel_source_destroy(&x.b), 0);
	}
}

/* A callback that released itself, or destroyed its source, forgets the
 * source: unregistering it after the source is freed touches nothing. */
struct forget {
	struct cancel_source *src;
	struct cancel_callback cb;
	bool destroy;
};

static void
forget_fn(void *arg)
{
	struct forget *f = arg;
	if (f->destroy) {
		assert_int_equal(cancel_source_destroy(f->src), 0);
		free(f->src);
		f->src = NULL;
	} else {
		assert_false(cancel_callback_unregister(&f->cb));
	}
}

static void
completed_callback_forgets_a_freed_source(void **state)
{
	(void)state;
	for (int destroy = 0; destroy < 2; destroy++) {
		struct forget f;
		memset(&f, 0, sizeof(f));
		f.destroy = destroy;
		f.src = calloc(1, sizeof(*f.src));
		cancel_callback_register(&f.cb, forget_fn, &f,
		                         cancel_source_token(f.src));
		assert_true(cancel_source_cancel(f.src));
		if (f.src != NULL) {
			assert_int_equal(cancel_source_destroy(f.src), 0);
			free(f.src);
		}
		/* ASan flags any touch of the freed source here. */
		assert_int_equal(cancel_callback_try_unregister(&f.cb),
		                 EALREADY);
		assert_false(cancel_callback_unregister(&f.cb));
	}
}

struct remote_cancel {
	struct cancel_source *src;
	int returned; /* cancel returned; relaxed, orders nothing */
};

/* Returns cancel's result (cmocka asserts on the main thread only). */
static void *
remote_cancel_main(void *arg)
{
	struct remote_cancel *r = arg;
	bool first = cancel_source_cancel(r->src);
	__atomic_store_n(&r->returned, 1, __ATOMIC_RELAXED);
	return (void *)(intptr_t)first;
}

/*
 * The owner learns that its callback ran on another thread only through
 * the library (a relaxed flag says when to look, and orders nothing), then
 * reuses the node. unregister/try_unregister must order every write the
 * canceller made to the node before their return: TSan reports the
 * canceller's writes against the memset otherwise.
 */
static void
completed_remote_callback_is_the_owners_after_unregister(void **state)
{
	(void)state;
	for (int round = 0; round < 100; round++) {
		struct cancel_source s;
		cancel_source_init(&s);
		struct cancel_callback *cb = malloc(sizeof(*cb));
		assert_non_null(cb);
		int ran = 0;
		assert_true(cancel_callback_register(cb, count_fn, &ran,
		                                     cancel_source_token(&s)));
		struct remote_cancel r = {.src = &s};
		pthread_t t = tu_spawn(remote_cancel_main, &r);
		while (!__atomic_load_n(&r.returned, __ATOMIC_RELAXED))
			sched_yield();
		if (round % 2 == 0)
			assert_int_equal(cancel_callback_try_unregister(cb),
			                 EALREADY);
		else
			assert_false(cancel_callback_unregister(cb));
		memset(cb, 0xff, sizeof(*cb));
		free(cb);
		assert_int_equal(__atomic_load_n(&ran, __ATOMIC_RELAXED), 1);
		assert_int_equal(cancel_source_destroy(&s), 0);
		assert_int_equal((intptr_t)tu_join(t), 1);
	}
}

static void
register_unregister_churn_allocates_nothing(void **state)
{
	(void)state;
	struct cancel_source s = CANCEL_SOURCE_INITIALIZER;
	long before = cancel__test_alloc_count();
	int ran = 0;
	for (int i = 0; i < 100000; i++) {
		struct cancel_callback cb;
		cancel_callback_register(&cb, count_fn, &ran,
		                         cancel_source_token(&s));
		assert_true(cancel_callback_unregister(&cb));
	}
	assert_int_equal(cancel__test_alloc_count(), before);
	assert_int_equal(ran, 0);
	assert_int_equal(cancel_source_destroy(&s), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(runs_exactly_once_on_cancel),
	    cmocka_unit_test(register_after_cancel_runs_callback_inline),
	    cmocka_unit_test(try_register_after_cancel_refuses_without_running),
	    cmocka_unit_test(callbacks_run_last_registered_first),
	    cmocka_unit_test(callbacks_run_on_the_canceling_thread),
	    cmocka_unit_test(unregister_before_cancel_removes_it),
	    cmocka_unit_test(try_unregister_reports_each_state),
	    cmocka_unit_test(registration_on_token_none_is_only_recorded),
	    cmocka_unit_test(unregister_waits_for_running_callback),
	    cmocka_unit_test(self_unregister_returns_false_without_blocking),
	    cmocka_unit_test(nested_self_unregister_returns_false_at_once),
	    cmocka_unit_test(
	        callback_unregisters_a_later_one_and_registers_a_new_one),
	    cmocka_unit_test(callback_may_free_its_own_node),
	    cmocka_unit_test(unregister_racing_cancel_is_exactly_one_outcome),
	    cmocka_unit_test(
	        cross_unregister_between_two_cancels_does_not_deadlock),
	    cmocka_unit_test(completed_callback_forgets_a_freed_source),
	    cmocka_unit_test(
	        completed_remote_callback_is_the_owners_after_unregister),
	    cmocka_unit_test(register_unregister_churn_allocates_nothing),
	};
	return cmocka_run_group_tests_name("callback", tests, NULL, NULL);
}
