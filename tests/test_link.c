/*
 * Linked sources: propagation with the parent's reason, already-canceled
 * parents, NONE parents, allocation rules, deep chains, destroy ordering,
 * a child destroyed while its parent cancels, and churn.
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
child_is_canceled_with_parent_reason(void **state)
{
	(void)state;
	struct cancel_source parent = CANCEL_SOURCE_INITIALIZER, child;
	cancel_token pt = cancel_source_token(&parent);
	assert_int_equal(cancel_source_init_linked(&child, &pt, 1), 0);
	int ran = 0;
	struct cancel_callback cb;
	cancel_callback_register(&cb, count_fn, &ran,
	                         cancel_source_token(&child));
	assert_false(cancel_token_is_canceled(cancel_source_token(&child)));
	assert_true(cancel_source_cancel_with(&parent, ETIMEDOUT));
	/* Before the parent's cancel returned, the child was canceled and
	 * its callbacks ran. */
	assert_int_equal(ran, 1);
	assert_int_equal(cancel_token_reason(cancel_source_token(&child)),
	                 ETIMEDOUT);
	assert_int_equal(cancel_source_destroy(&parent), EBUSY);
	assert_int_equal(cancel_source_destroy(&child), 0);
	assert_int_equal(cancel_source_destroy(&parent), 0);
}

static void
canceling_child_never_touches_parent(void **state)
{
	(void)state;
	struct cancel_source parent = CANCEL_SOURCE_INITIALIZER, child;
	cancel_token pt = cancel_source_token(&parent);
	assert_int_equal(cancel_source_init_linked(&child, &pt, 1), 0);
	assert_true(cancel_source_cancel_with(&child, EPIPE));
	assert_false(cancel_token_is_canceled(pt));
	/* Still linked, canceled or not. */
	assert_int_equal(cancel_source_destroy(&parent), EBUSY);
	assert_false(cancel_source_cancel(&child));
	assert_true(cancel_source_cancel(&parent));
	assert_int_equal(cancel_token_reason(cancel_source_token(&child)),
	                 EPIPE);
	assert_int_equal(cancel_source_destroy(&child), 0);
	assert_int_equal(cancel_source_destroy(&parent), 0);
}

static void
already_canceled_parent_cancels_child_at_init(void **state)
{
	(void)state;
	struct cancel_source a = CANCEL_SOURCE_INITIALIZER;
	struct cancel_source b = CANCEL_SOURCE_INITIALIZER;
	struct cancel_source c = CANCEL_SOURCE_INITIALIZER;
	struct cancel_source child;
	cancel_source_cancel_with(&b, EPIPE);
	cancel_source_cancel_with(&c, ETIMEDOUT);
	cancel_token ps[3] = {cancel_source_token(&a), cancel_source_token(&b),
	                      cancel_source_token(&c)};
	long live = cancel__test_live_objects();
	assert_int_equal(cancel_source_init_linked(&child, ps, 3), 0);
	assert_int_equal(cancel__test_live_objects(), live);
	assert_int_equal(cancel_token_reason(cancel_source_token(&child)),
	                 EPIPE);
	/* Linked to nobody: every parent can go first. */
	assert_int_equal(cancel_source_destroy(&a), 0);
	assert_int_equal(cancel_source_destroy(&b), 0);
	assert_int_equal(cancel_source_destroy(&c), 0);
	assert_int_equal(cancel_source_destroy(&child), 0);
}

static void
none_parents_are_ignored(void **state)
{
	(void)state;
	struct cancel_source child;
	cancel_token ps[2] = {CANCEL_TOKEN_NONE, CANCEL_TOKEN_NONE};
	long allocs = cancel__test_alloc_count();
	assert_int_equal(cancel_source_init_linked(&child, ps, 2), 0);
	assert_int_equal(cancel__test_alloc_count(), allocs);
	assert_false(cancel_token_is_canceled(cancel_source_token(&child)));
	assert_true(cancel_source_cancel(&child));
	assert_int_equal(cancel_source_destroy(&child), 0);
	assert_int_equal(cancel_source_init_linked(&child, NULL, 0), 0);
	assert_int_equal(cancel_source_destroy(&child), 0);
	assert_int_equal(cancel_source_init_linked(&child, NULL, 1), EINVAL);
	assert_int_equal(cancel_source_init_linked(NULL, ps, 1), EINVAL);
}

static void
one_parent_allocates_nothing(void **state)
{
	(void)state;
	struct cancel_source parent = CANCEL_SOURCE_INITIALIZER, child;
	cancel_token ps[2] = {CANCEL_TOKEN_NONE, cancel_source_token(&parent)};
	long allocs = cancel__test_alloc_count();
	assert_int_equal(cancel_source_init_linked(&child, ps, 2), 0);
	assert_int_equal(cancel__test_alloc_count(), allocs);
	assert_int_equal(cancel_source_destroy(&child), 0);
	assert_int_equal(cancel_source_destroy(&parent), 0);
}

static void
any_of_several_parents_cancels_the_child(void **state)
{
	(void)state;
	for (int which = 0; which < 3; which++) {
		struct cancel_source p[3], child;
		cancel_token ps[3];
		for (int i = 0; i < 3; i++) {
			cancel_source_init(&p[i]);
			ps[i] = cancel_source_token(&p[i]);
		}
		long live = cancel__test_live_objects();
		assert_int_equal(cancel_source_init_linked(&child, ps, 3), 0);
		assert_int_equal(cancel__test_live_objects(), live + 1);
		cancel_source_cancel_with(&p[which], 100 + which);
		assert_int_equal(
		    cancel_token_reason(cancel_source_token(&child)),
		    100 + which);
		for (int i = 0; i < 3; i++)
			assert_int_equal(cancel_source_destroy(&p[i]), EBUSY);
		assert_int_equal(cancel_source_destroy(&child), 0);
		assert_int_equal(cancel__test_live_objects(), live);
		for (int i = 0; i < 3; i++)
			assert_int_equal(cancel_source_destroy(&p[i]), 0);
	}
}

static void
several_parents_report_enomem_cleanly(void **state)
{
	(void)state;
	struct cancel_source a = CANCEL_SOURCE_INITIALIZER;
	struct cancel_source b = CANCEL_SOURCE_INITIALIZER;
	struct cancel_source child;
	cancel_token ps[2] = {cancel_source_token(&a), cancel_source_token(&b)};
	long live = cancel__test_live_objects();
	cancel__test_fail_alloc(1);
	assert_int_equal(cancel_source_init_linked(&child, ps, 2), ENOMEM);
	cancel__test_fail_alloc(0);
	assert_int_equal(cancel__test_live_objects(), live);
	/* Nothing linked: the parents are free, the child is usable. */
	assert_int_equal(cancel_source_destroy(&a), 0);
	assert_true(cancel_source_cancel(&child));
	assert_int_equal(cancel_source_destroy(&child), 0);
	assert_int_equal(cancel_source_destroy(&b), 0);
}

static void
deep_chain_propagates_without_deep_recursion(void **state)
{
	(void)state;
	enum { N = 200000 };
	struct cancel_source *chain = calloc(N, sizeof(*chain));
	static int ran;
	ran = 0;
	struct cancel_callback *cbs = calloc(N, sizeof(*cbs));
	for (int i = 1; i < N; i++) {
		cancel_token t = cancel_source_token(&chain[i - 1]);
		assert_int_equal(cancel_source_init_linked(&chain[i], &t, 1), 0);
		cancel_callback_register(&cbs[i], count_fn, &ran,
		                         cancel_source_token(&chain[i]));
	}
	/* Run on a small stack: unbounded recursion would overflow it. */
	assert_true(cancel_source_cancel_with(&chain[0], EPIPE));
	assert_int_equal(ran, N - 1);
	assert_int_equal(cancel_token_reason(cancel_source_token(&chain[N - 1])),
	                 EPIPE);
	for (int i = N - 1; i >= 0; i--)
		assert_int_equal(cancel_source_destroy(&chain[i]), 0);
	free(cbs);
	free(chain);
}

static void *
cancel_deep_on_small_stack(void *arg)
{
	deep_chain_propagates_without_deep_recursion(arg);
	return NULL;
}

static void
deep_chain_on_a_256k_stack(void **state)
{
	(void)state;
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 256 * 1024);
	pthread_t t;
	assert_int_equal(pthread_create(&t, &attr, cancel_deep_on_small_stack,
	                                NULL),
	                 0);
	pthread_join(t, NULL);
	pthread_attr_destroy(&attr);
}

/* A request's child source frees itself from its own callback while the
 * parent's cancel propagates to it. */
struct request {
	struct cancel_source src;
	struct cancel_callback cb;
	int *freed;
};

static void
free_request_fn(void *arg)
{
	struct request *r = arg;
	assert_int_equal(cancel_source_destroy(&r->src), 0);
	(*r->freed)++;
	free(r);
}

static void
child_destroyed_from_its_callback_during_parent_cancel(void **state)
{
	(void)state;
	struct cancel_source parent = CANCEL_SOURCE_INITIALIZER;
	cancel_token pt = cancel_source_token(&parent);
	int freed = 0;
	for (int i = 0; i < 20; i++) {
		struct request *r = calloc(1, sizeof(*r));
		r->freed = &freed;
		assert_int_equal(cancel_source_init_linked(&r->src, &pt, 1), 0);
		cancel_callback_register(&r->cb, free_request_fn, r,
		                         cancel_source_token(&r->src));
	}
	cancel_source_cancel(&parent);
	assert_int_equal(freed, 20);
	assert_int_equal(cancel_source_destroy(&parent), 0);
}

/* A parent's callback destroys a child that propagation already reached. */
struct owner {
	struct cancel_source parent;
	struct cancel_source *child;
	struct cancel_callback cb;
	int rc;
};

static void
destroy_child_fn(void *arg)
{
	struct owner *o = arg;
	o->rc = cancel_source_destroy(o->child);
	free(o->child);
}

static void
parent_callback_destroys_a_child(void **state)
{
	(void)state;
	struct owner o;
	memset(&o, 0, sizeof(o));
	o.rc = -1;
	cancel_token pt = cancel_source_token(&o.parent);
	/* Registered before the link: runs after the link (LIFO). */
	cancel_callback_register(&o.cb, destroy_child_fn, &o, pt);
	o.child = calloc(1, sizeof(*o.child));
	assert_int_equal(cancel_source_init_linked(o.child, &pt, 1), 0);
	cancel_source_cancel(&o.parent);
	assert_int_equal(o.rc, 0);
	assert_int_equal(cancel_source_destroy(&o.parent), 0);
}

/* Child destroyed on another thread while the parent cancels. */
struct churn {
	struct cancel_source parent;
	pthread_barrier_t go;
	struct cancel_source child;
	int child_canceled;
};

static void *
destroy_child_thread(void *arg)
{
	struct churn *c = arg;
	pthread_barrier_wait(&c->go);
	/* cmocka's asserts belong to the main thread: report the result. */
	return (void *)(intptr_t)cancel_source_destroy(&c->child);
}

static void
child_destroyed_while_parent_cancels_on_another_thread(void **state)
{
	(void)state;
	long rounds = tu_rounds(5000, 50000);
	for (long i = 0; i < rounds; i++) {
		struct churn c;
		memset(&c, 0, sizeof(c));
		pthread_barrier_init(&c.go, NULL, 2);
		cancel_token pt = cancel_source_token(&c.parent);
		assert_int_equal(cancel_source_init_linked(&c.child, &pt, 1), 0);
		pthread_t t = tu_spawn(destroy_child_thread, &c);
		pthread_barrier_wait(&c.go);
		cancel_source_cancel(&c.parent);
		assert_int_equal((intptr_t)tu_join(t), 0);
		assert_int_equal(cancel_source_destroy(&c.parent), 0);
		pthread_barrier_destroy(&c.go);
	}
}

/* Deeper than CANCEL_LINK_INLINE_DEPTH the leaf's finish is queued on the
 * canceling thread: a destroy racing it must still wait for it. */
struct deep_race {
	struct cancel_source chain[CANCEL_LINK_INLINE_DEPTH + 1];
	struct cancel_source *leaf;
	pthread_barrier_t go;
};

static void *
destroy_leaf_thread(void *arg)
{
	struct deep_race *d = arg;
	pthread_barrier_wait(&d->go);
	/* cmocka's asserts belong to the main thread: report the result. */
	int rc = cancel_source_destroy(d->leaf);
	if (rc == 0)
		free(d->leaf); /* ASan flags a later touch by the canceller */
	return (void *)(intptr_t)rc;
}

static void
queued_deep_child_destroyed_while_root_cancels(void **state)
{
	(void)state;
	enum { N = CANCEL_LINK_INLINE_DEPTH + 1 };
	long rounds = tu_rounds(2000, 20000);
	for (long i = 0; i < rounds; i++) {
		struct deep_race d;
		memset(&d, 0, sizeof(d));
		for (int j = 1; j < N; j++) {
			cancel_token t = cancel_source_token(&d.chain[j - 1]);
			cancel_source_init_linked(&d.chain[j], &t, 1);
		}
		d.leaf = calloc(1, sizeof(*d.leaf));
		cancel_token lt = cancel_source_token(&d.chain[N - 1]);
		cancel_source_init_linked(d.leaf, &lt, 1);
		pthread_barrier_init(&d.go, NULL, 2);
		pthread_t t = tu_spawn(destroy_leaf_thread, &d);
		pthread_barrier_wait(&d.go);
		cancel_source_cancel(&d.chain[0]);
		assert_int_equal((intptr_t)tu_join(t), 0);
		for (int j = N - 1; j >= 0; j--)
			assert_int_equal(cancel_source_destroy(&d.chain[j]), 0);
		pthread_barrier_destroy(&d.go);
	}
}

/* A root callback that runs after the link waits for a thread destroying
 * a deep (queued) descendant: the descendant finishes right after the
 * link's callback returns, so neither waits for the other. */
struct deep_join {
	struct cancel_source chain[CANCEL_LINK_INLINE_DEPTH + 1];
	struct cancel_source leaf;
	struct cancel_callback waiter_cb;
	int go;
	int destroyed;
	int destroy_rc;
	bool timed_out;
};

static void *
destroy_leaf_on_request(void *arg)
{
	struct deep_join *d = arg;
	tu_await(&d->go);
	d->destroy_rc = cancel_source_destroy(&d->leaf);
	tu_signal(&d->destroyed);
	return NULL;
}

static void
wait_for_leaf_destroy_fn(void *arg)
{
	struct deep_join *d = arg;
	tu_signal(&d->go);
	uint64_t until = tu_now_ns() + 5000000000ull;
	while (!__atomic_load_n(&d->destroyed, __ATOMIC_ACQUIRE)) {
		if (tu_now_ns() > until) {
			d->timed_out = true;
			return;
		}
		sched_yield();
	}
}

static void
root_callback_may_wait_for_destroy_of_a_deep_child(void **state)
{
	(void)state;
	enum { N = CANCEL_LINK_INLINE_DEPTH + 1 };
	struct deep_join *d = calloc(1, sizeof(*d));
	/* Registered before the link, so it runs after it (LIFO). */
	cancel_callback_register(&d->waiter_cb, wait_for_leaf_destroy_fn, d,
	                         cancel_source_token(&d->chain[0]));
	for (int j = 1; j < N; j++) {
		cancel_token t = cancel_source_token(&d->chain[j - 1]);
		assert_int_equal(cancel_source_init_linked(&d->chain[j], &t, 1),
		                 0);
	}
	cancel_token lt = cancel_source_token(&d->chain[N - 1]);
	assert_int_equal(cancel_source_init_linked(&d->leaf, &lt, 1), 0);
	pthread_t t = tu_spawn(destroy_leaf_on_request, d);
	cancel_source_cancel(&d->chain[0]);
	assert_false(d->timed_out);
	tu_join(t);
	assert_int_equal(d->destroy_rc, 0);
	for (int j = N - 1; j >= 0; j--)
		assert_int_equal(cancel_source_destroy(&d->chain[j]), 0);
	free(d);
}

/*
 * Past CANCEL_LINK_INLINE_DEPTH the children of the deepest source are
 * queued on the canceling thread, in the order their links ran: here two,
 * c[1] then c[0] (LIFO). A callback of their parent, run after both links,
 * destroys c[0], queued behind c[1]: it leaves the queue and is freed at
 * once (ASan sees a later touch), and c[1] still finishes, once, with the
 * root's reason.
 */
struct deep_pair {
	struct cancel_source chain[CANCEL_LINK_INLINE_DEPTH + 1];
	struct cancel_source *c[2];
	struct cancel_callback destroy_cb;
	struct cancel_callback count_cb;
	int destroy_rc;
	int ran;
};

static void
destroy_queued_child_fn(void *arg)
{
	struct deep_pair *d = arg;
	d->destroy_rc = cancel_source_destroy(d->c[0]);
	if (d->destroy_rc == 0) {
		free(d->c[0]);
		d->c[0] = NULL;
	}
}

static void
queued_deep_child_destroyed_by_its_parents_callback(void **state)
{
	(void)state;
	enum { N = CANCEL_LINK_INLINE_DEPTH + 1 };
	struct deep_pair *d = calloc(1, sizeof(*d));
	assert_non_null(d);
	d->destroy_rc = -1;
	for (int j = 1; j < N; j++) {
		cancel_token t = cancel_source_token(&d->chain[j - 1]);
		assert_int_equal(cancel_source_init_linked(&d->chain[j], &t, 1),
		                 0);
	}
	cancel_token bt = cancel_source_token(&d->chain[N - 1]);
	/* Registered before the links: runs after them (LIFO). */
	assert_true(cancel_callback_register(&d->destroy_cb,
	                                     destroy_queued_child_fn, d, bt));
	for (int i = 0; i < 2; i++) {
		d->c[i] = calloc(1, sizeof(*d->c[i]));
		assert_non_null(d->c[i]);
		assert_int_equal(cancel_source_init_linked(d->c[i], &bt, 1), 0);
	}
	assert_true(cancel_callback_register(&d->count_cb, count_fn, &d->ran,
	                                     cancel_source_token(d->c[1])));
	assert_true(cancel_source_cancel_with(&d->chain[0], 77));
	assert_int_equal(d->destroy_rc, 0);
	assert_null(d->c[0]);
	assert_int_equal(d->ran, 1);
	assert_int_equal(cancel_token_reason(cancel_source_token(d->c[1])),
	                 77);
	assert_int_equal(cancel_source_destroy(d->c[1]), 0);
	free(d->c[1]);
	for (int j = N - 1; j >= 0; j--)
		assert_int_equal(cancel_source_destroy(&d->chain[j]), 0);
	free(d);
}

static void
million_children_churn_leaves_parent_at_baseline(void **state)
{
	(void)state;
	struct cancel_source parent = CANCEL_SOURCE_INITIALIZER;
	cancel_token pt = cancel_source_token(&parent);
	long live = cancel__test_live_objects();
	long n = tu_rounds(200000, 1000000);
	for (long i = 0; i < n; i++) {
		struct cancel_source child;
		assert_int_equal(cancel_source_init_linked(&child, &pt, 1), 0);
		assert_int_equal(cancel_source_destroy(&child), 0);
	}
	assert_null(parent.head_);
	assert_int_equal(parent.children_, 0);
	assert_int_equal(cancel__test_live_objects(), live);
	assert_int_equal(cancel_source_destroy(&parent), 0);
}

/*
 * A ladder of 200 rungs, each source linked to both sources of the rung
 * above: 2^200 paths to the top, 400 ancestors. cancel_token_deadline
 * visits each once (it returns at once) and finds a deadline armed on any
 * of them; its set and stack outgrow their stack buffers. With the
 * allocation failing it still returns (maybe missing far ancestors).
 */
static void
deadline_of_a_ladder_visits_each_ancestor_once(void **state)
{
	(void)state;
	enum { RUNGS = 200 };
	struct cancel_source *a = calloc(RUNGS, sizeof(*a));
	struct cancel_source *b = calloc(RUNGS, sizeof(*b));
	assert_non_null(a);
	assert_non_null(b);
	cancel_source_init(&a[0]);
	cancel_source_init(&b[0]);
	for (int i = 1; i < RUNGS; i++) {
		cancel_token up[2] = {cancel_source_token(&a[i - 1]),
		                      cancel_source_token(&b[i - 1])};
		assert_int_equal(cancel_source_init_linked(&a[i], up, 2), 0);
		assert_int_equal(cancel_source_init_linked(&b[i], up, 2), 0);
	}
	struct timespec far = cancel_deadline_in(3600ull * 1000000000ull);
	struct timespec near = cancel_deadline_in(1800ull * 1000000000ull);
	assert_int_equal(cancel_source_cancel_at(&a[RUNGS / 2], &far), 0);
	assert_int_equal(cancel_source_cancel_at(&b[1], &near), 0);
	struct timespec got;
	uint64_t t0 = tu_now_ns();
	assert_true(cancel_token_deadline(cancel_source_token(&a[RUNGS - 1]),
	                                  &got));
	assert_true(tu_now_ns() - t0 < 1000000000ull);
	assert_int_equal(got.tv_sec, near.tv_sec);
	assert_int_equal(got.tv_nsec, near.tv_nsec);
	/* Allocation fails: it still ends, errno untouched. */
	errno = 777;
	cancel__test_fail_alloc(1);
	assert_true(cancel_token_deadline(cancel_source_token(&b[RUNGS - 1]),
	                                  &got));
	cancel__test_fail_alloc(0);
	assert_int_equal(errno, 777);
	/*
	 * A nearer deadline on a direct parent, met in the walk's first
	 * steps: found whichever allocation fails (the set's growths, the
	 * stack's), and when every one does (the set fills its stack buffer,
	 * then treats each new source as met).
	 */
	struct timespec nearest = cancel_deadline_in(900ull * 1000000000ull);
	assert_int_equal(cancel_source_cancel_at(&a[RUNGS - 2], &nearest), 0);
	for (long k = -1; k <= 8; k++) {
		errno = 777;
		cancel__test_fail_alloc(k);
		t0 = tu_now_ns();
		bool found = cancel_token_deadline(
		    cancel_source_token(&b[RUNGS - 1]), &got);
		uint64_t took = tu_now_ns() - t0;
		cancel__test_fail_alloc(0);
		assert_true(found);
		assert_true(took < 1000000000ull);
		assert_int_equal(errno, 777);
		assert_int_equal(got.tv_sec, nearest.tv_sec);
		assert_int_equal(got.tv_nsec, nearest.tv_nsec);
	}
	for (int i = RUNGS - 1; i >= 0; i--) {
		assert_int_equal(cancel_source_destroy(&a[i]), 0);
		assert_int_equal(cancel_source_destroy(&b[i]), 0);
	}
	free(a);
	free(b);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(child_is_canceled_with_parent_reason),
	    cmocka_unit_test(canceling_child_never_touches_parent),
	    cmocka_unit_test(already_canceled_parent_cancels_child_at_init),
	    cmocka_unit_test(none_parents_are_ignored),
	    cmocka_unit_test(one_parent_allocates_nothing),
	    cmocka_unit_test(any_of_several_parents_cancels_the_child),
	    cmocka_unit_test(several_parents_report_enomem_cleanly),
	    cmocka_unit_test(deep_chain_on_a_256k_stack),
	    cmocka_unit_test(child_destroyed_from_its_callback_during_parent_cancel),
	    cmocka_unit_test(parent_callback_destroys_a_child),
	    cmocka_unit_test(child_destroyed_while_parent_cancels_on_another_thread),
	    cmocka_unit_test(queued_deep_child_destroyed_while_root_cancels),
	    cmocka_unit_test(root_callback_may_wait_for_destroy_of_a_deep_child),
	    cmocka_unit_test(queued_deep_child_destroyed_by_its_parents_callback),
	    cmocka_unit_test(million_children_churn_leaves_parent_at_baseline),
	    cmocka_unit_test(deadline_of_a_ladder_visits_each_ancestor_once),
	};
	return cmocka_run_group_tests_name("link", tests, NULL, NULL);
}
