/*
 * Loop delivery: callbacks registered through a cancel_queue run on the
 * thread that calls cancel_queue_run(), exactly once, never on the
 * canceling thread; unregister takes back a fired callback that has not
 * run; the fd is readable exactly while work waits.
 */
/* ctest: TIMEOUT 120 */
#include "testutil.h"

#include <poll.h>

static bool
fd_readable(int fd)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};
	return poll(&p, 1, 0) == 1 && (p.revents & POLLIN);
}

struct rec {
	struct cancel_callback cb;
	int runs;
	pthread_t ran_on;
	int *order;
	int id;
	int *next_slot;
};

static void
on_fire(void *arg)
{
	struct rec *r = arg;
	__atomic_fetch_add(&r->runs, 1, __ATOMIC_RELAXED);
	r->ran_on = pthread_self();
	if (r->order != NULL)
		r->order[(*r->next_slot)++] = r->id;
}

/* Poison a callback its unregister has released; later, check nothing in
 * the library wrote to it (a late write would also follow a poisoned
 * pointer). */
static void
poison_cb(struct cancel_callback *cb)
{
	tu_poison(cb, sizeof(*cb));
}

static bool
still_poisoned(const struct cancel_callback *cb)
{
	return tu_poisoned(cb, sizeof(*cb));
}

static struct cancel_source *
new_source(void)
{
	struct cancel_source *s = malloc(sizeof(*s));
	assert_non_null(s);
	cancel_source_init(s);
	return s;
}

static void
free_source(struct cancel_source *s)
{
	assert_int_equal(cancel_source_destroy(s), 0);
	memset(s, 0xA5, sizeof(*s));
	free(s);
}

static void *
cancel_thread(void *arg)
{
	cancel_source_cancel(arg);
	return NULL;
}

static void
callback_runs_on_run_thread_not_on_canceller(void **state)
{
	(void)state;
	int fds0 = tu_fd_count();
	struct cancel_queue q;
	assert_int_equal(cancel_queue_init(&q), 0);
	int qfd = cancel_queue_fd(&q);
	assert_true(qfd >= 0);
	assert_false(fd_readable(qfd));

	struct cancel_source *s = new_source();
	struct rec *r = calloc(1, sizeof(*r));
	assert_int_equal(cancel_callback_register_queued(
	                         &r->cb, on_fire, r, &q, cancel_source_token(s)),
	                 0);
	tu_join(tu_spawn(cancel_thread, s));
	/* The cancel only queued it. */
	assert_int_equal(r->runs, 0);
	assert_true(fd_readable(qfd));
	/* The source is done with the callback: it may go at once. */
	free_source(s);

	assert_int_equal(cancel_queue_run(&q), 1);
	assert_int_equal(r->runs, 1);
	assert_true(pthread_equal(r->ran_on, pthread_self()));
	assert_false(fd_readable(qfd));
	assert_int_equal(cancel_queue_run(&q), 0);
	assert_false(cancel_callback_unregister(&r->cb));
	assert_int_equal(cancel_callback_try_unregister(&r->cb), EALREADY);
	free(r);
	assert_int_equal(cancel_queue_destroy(&q), 0);
	assert_int_equal(tu_fd_count(), fds0);
}

static void
callbacks_run_in_fire_order_and_fd_clears_when_drained(void **state)
{
	(void)state;
	struct cancel_queue q;
	assert_int_equal(cancel_queue_init(&q), 0);
	enum { N = 5 };
	struct cancel_source *s[N];
	struct rec r[N];
	int order[N];
	int slot = 0;
	memset(r, 0, sizeof(r));
	for (int i = 0; i < N; i++) {
		s[i] = new_source();
		r[i].order = order;
		r[i].next_slot = &slot;
		r[i].id = i;
		assert_int_equal(cancel_callback_register_queued(
		                         &r[i].cb, on_fire, &r[i], &q,
		                         cancel_source_token(s[i])),
		                 0);
	}
	/* Fire in the order 3, 1, 4, 0, 2. */
	int fire[N] = {3, 1, 4, 0, 2};
	for (int i = 0; i < N; i++) {
		cancel_source_cancel(s[fire[i]]);
		assert_true(fd_readable(cancel_queue_fd(&q)));
	}
	assert_int_equal(cancel_queue_run(&q), N);
	for (int i = 0; i < N; i++) {
		assert_int_equal(order[i], fire[i]);
		assert_int_equal(r[i].runs, 1);
		free_source(s[i]);
	}
	assert_false(fd_readable(cancel_queue_fd(&q)));
	assert_int_equal(cancel_queue_destroy(&q), 0);
}

static void
unregister_takes_back_a_fired_callback_that_has_not_run(void **state)
{
	(void)state;
	struct cancel_queue q;
	assert_int_equal(cancel_queue_init(&q), 0);
	struct cancel_source *s = new_source();
	struct cancel_source *t = new_source();
	struct rec *a = calloc(1, sizeof(*a));
	struct rec *b = calloc(1, sizeof(*b));
	assert_int_equal(cancel_callback_register_queued(
	                         &a->cb, on_fire, a, &q, cancel_source_token(s)),
	                 0);
	assert_int_equal(cancel_callback_register_queued(
	                         &b->cb, on_fire, b, &q, cancel_source_token(t)),
	                 0);
	cancel_source_cancel(s);
	cancel_source_cancel(t);
	assert_true(fd_readable(cancel_queue_fd(&q)));
	assert_true(cancel_callback_unregister(&a->cb));
	free(a); /* freed at once: the queue must not touch it again */
	assert_true(fd_readable(cancel_queue_fd(&q)));
	assert_int_equal(cancel_callback_try_unregister(&b->cb), 0);
	assert_false(fd_readable(cancel_queue_fd(&q)));
	assert_int_equal(cancel_queue_run(&q), 0);
	assert_int_equal(b->runs, 0);
	assert_int_equal(cancel_callback_try_unregister(&b->cb), ENOENT);
	free(b);
	free_source(s);
	free_source(t);
	assert_int_equal(cancel_queue_destroy(&q), 0);
}

/* Three fired, the middle one taken back: the other two run, in order. */
static void
unregister_takes_a_fired_callback_out_of_the_middle(void **state)
{
	(void)state;
	struct cancel_queue q;
	assert_int_equal(cancel_queue_init(&q), 0);
	struct cancel_source *s[3];
	struct rec *r[3];
	int order[3] = {0, 0, 0};
	int next = 0;
	for (int i = 0; i < 3; i++) {
		s[i] = new_source();
		r[i] = calloc(1, sizeof(*r[i]));
		assert_non_null(r[i]);
		r[i]->id = i + 1;
		r[i]->order = order;
		r[i]->next_slot = &next;
		assert_int_equal(cancel_callback_register_queued(
		                     &r[i]->cb, on_fire, r[i], &q,
		                     cancel_source_token(s[i])),
		                 0);
	}
	for (int i = 0; i < 3; i++)
		cancel_source_cancel(s[i]);
	assert_true(cancel_callback_unregister(&r[1]->cb));
	free(r[1]); /* freed at once: the queue must not touch it again */
	assert_true(fd_readable(cancel_queue_fd(&q)));
	assert_int_equal(cancel_queue_run(&q), 2);
	assert_int_equal(next, 2);
	assert_int_equal(order[0], 1);
	assert_int_equal(order[1], 3);
	assert_false(fd_readable(cancel_queue_fd(&q)));
	assert_false(cancel_callback_unregister(&r[0]->cb));
	assert_false(cancel_callback_unregister(&r[2]->cb));
	free(r[0]);
	free(r[2]);
	for (int i = 0; i < 3; i++)
		free_source(s[i]);
	assert_int_equal(cancel_queue_destroy(&q), 0);
}

static void
registered_callback_is_removed_before_it_fires(void **state)
{
	(void)state;
	struct cancel_queue q;
	assert_int_equal(cancel_queue_init(&q), 0);
	struct cancel_source *s = new_source();
	struct rec *a = calloc(1, sizeof(*a));
	struct rec *b = calloc(1, sizeof(*b));
	assert_int_equal(cancel_callback_register_queued(
	                         &a->cb, on_fire, a, &q, cancel_source_token(s)),
	                 0);
	assert_int_equal(cancel_callback_register_queued(
	                         &b->cb, on_fire, b, &q, cancel_source_token(s)),
	                 0);
	assert_int_equal(cancel_queue_destroy(&q), EBUSY);
	assert_true(cancel_callback_unregister(&a->cb));
	assert_int_equal(cancel_callback_try_unregister(&b->cb), 0);
	free(a);
	free(b);
	assert_int_equal(cancel_queue_destroy(&q), 0);
	cancel_source_cancel(s);
	free_source(s);
}

static void
register_on_canceled_token_queues_nothing(void **state)
{
	(void)state;
	struct cancel_queue q;
	assert_int_equal(cancel_queue_init(&q), 0);
	struct cancel_source *s = new_source();
	cancel_source_cancel(s);
	struct rec r = {0};
	assert_int_equal(cancel_callback_register_queued(
	                         &r.cb, on_fire, &r, &q, cancel_source_token(s)),
	                 ECANCELED);
	assert_false(fd_readable(cancel_queue_fd(&q)));
	assert_int_equal(cancel_queue_run(&q), 0);
	assert_int_equal(r.runs, 0);
	/* A NONE token: recorded only, holds nothing. */
	assert_int_equal(cancel_callback_register_queued(
	                         &r.cb, on_fire, &r, &q, CANCEL_TOKEN_NONE),
	                 0);
	assert_int_equal(cancel_queue_destroy(&q), 0);
	assert_true(cancel_callback_unregister(&r.cb));
	free_source(s);
	errno = 4242;
	assert_int_equal(cancel_callback_register_queued(NULL, on_fire, &r,
	                                                 &q, CANCEL_TOKEN_NONE),
	                 EINVAL);
	assert_int_equal(cancel_queue_init(NULL), EINVAL);
	assert_int_equal(cancel_queue_destroy(NULL), EINVAL);
	assert_int_equal(errno, 4242);
}

/* A callback that unregisters itself on the loop thread: false at once. */
struct selfrec {
	struct cancel_callback cb;
	bool unreg;
	int tries;
};

static void
self_unregister(void *arg)
{
	struct selfrec *r = arg;
	r->tries = cancel_callback_try_unregister(&r->cb);
	r->unreg = cancel_callback_unregister(&r->cb);
}

static void
unregister_from_inside_returns_false_at_once(void **state)
{
	(void)state;
	struct cancel_queue q;
	assert_int_equal(cancel_queue_init(&q), 0);
	struct cancel_source *s = new_source();
	struct selfrec *r = calloc(1, sizeof(*r));
	r->unreg = true;
	assert_int_equal(cancel_callback_register_queued(
	                         &r->cb, self_unregister, r, &q,
	                         cancel_source_token(s)),
	                 0);
	cancel_source_cancel(s);
	assert_int_equal(cancel_queue_run(&q), 1);
	assert_int_equal(r->tries, EINPROGRESS);
	assert_false(r->unreg);
	free(r);
	free_source(s);
	assert_int_equal(cancel_queue_destroy(&q), 0);
}

/* unregister on another thread waits for the callback running on the
 * loop thread; the record is freed the moment it returns. */
struct slow {
	struct cancel_callback cb;
	int entered;
	int release;
	int returned;
};

static void
slow_fire(void *arg)
{
	struct slow *r = arg;
	tu_signal(&r->entered);
	tu_await(&r->release);
	__atomic_store_n(&r->returned, 1, __ATOMIC_RELEASE);
}

static void *
run_thread(void *arg)
{
	return (void *)cancel_queue_run(arg);
}

struct unreg_arg {
	struct slow *r;
	int done;
	bool result;
	int saw_returned;
};

static void *
unreg_thread(void *arg)
{
	struct unreg_arg *u = arg;
	u->result = cancel_callback_unregister(&u->r->cb);
	u->saw_returned = __atomic_load_n(&u->r->returned, __ATOMIC_ACQUIRE);
	memset(u->r, 0xA5, sizeof(*u->r));
	free(u->r);
	tu_signal(&u->done);
	return NULL;
}

static void
unregister_waits_for_callback_running_on_loop(void **state)
{
	(void)state;
	struct cancel_queue q;
	assert_int_equal(cancel_queue_init(&q), 0);
	struct cancel_source *s = new_source();
	struct slow *r = calloc(1, sizeof(*r));
	assert_int_equal(cancel_callback_register_queued(
	                         &r->cb, slow_fire, r, &q,
	                         cancel_source_token(s)),
	                 0);
	cancel_source_cancel(s);
	free_source(s);
	pthread_t loop = tu_spawn(run_thread, &q);
	tu_await(&r->entered);
	assert_int_equal(cancel_callback_try_unregister(&r->cb), EINPROGRESS);
	struct unreg_arg u = {.r = r};
	pthread_t t = tu_spawn(unreg_thread, &u);
	/* It waits while the callback runs (bounded look). */
	uint64_t until = tu_now_ns() + 100000000ull;
	while (tu_now_ns() < until)
		assert_int_equal(__atomic_load_n(&u.done, __ATOMIC_ACQUIRE), 0);
	assert_int_equal(cancel_queue_destroy(&q), EBUSY);
	tu_signal(&r->release);
	tu_join(t);
	assert_false(u.result);
	assert_int_equal(u.saw_returned, 1);
	assert_int_equal((size_t)tu_join(loop), 1);
	assert_int_equal(cancel_queue_destroy(&q), 0);
}

/* 10,000 sources on one queue, canceled from 4 threads while the loop
 * runs: every callback runs exactly once, on the loop thread. */
enum { MANY = 10000, CANCELLERS = 4 };

struct many {
	struct cancel_queue q;
	struct cancel_source **src;
	struct rec *rec;
	int next;
	int done_cancelling;
};

static void *
many_canceller(void *arg)
{
	struct many *m = arg;
	for (;;) {
		int i = __atomic_fetch_add(&m->next, 1, __ATOMIC_RELAXED);
		if (i >= MANY)
			break;
		cancel_source_cancel(m->src[i]);
	}
	return NULL;
}

static void
many_sources_cancelled_from_four_threads_each_run_once_on_loop(void **state)
{
	(void)state;
	int fds0 = tu_fd_count();
	struct many *m = calloc(1, sizeof(*m));
	assert_int_equal(cancel_queue_init(&m->q), 0);
	m->src = calloc(MANY, sizeof(*m->src));
	m->rec = calloc(MANY, sizeof(*m->rec));
	for (int i = 0; i < MANY; i++) {
		m->src[i] = new_source();
		assert_int_equal(cancel_callback_register_queued(
		                         &m->rec[i].cb, on_fire, &m->rec[i],
		                         &m->q, cancel_source_token(m->src[i])),
		                 0);
	}
	pthread_t t[CANCELLERS];
	for (int i = 0; i < CANCELLERS; i++)
		t[i] = tu_spawn(many_canceller, m);
	size_t ran = 0;
	struct pollfd p = {.fd = cancel_queue_fd(&m->q), .events = POLLIN};
	while (ran < MANY) {
		/* Level-triggered, as a loop would use it. */
		int n = poll(&p, 1, 5000);
		assert_int_equal(n, 1);
		ran += cancel_queue_run(&m->q);
	}
	for (int i = 0; i < CANCELLERS; i++)
		tu_join(t[i]);
	assert_int_equal(ran, MANY);
	assert_false(fd_readable(cancel_queue_fd(&m->q)));
	for (int i = 0; i < MANY; i++) {
		assert_int_equal(m->rec[i].runs, 1);
		assert_true(pthread_equal(m->rec[i].ran_on, pthread_self()));
		free_source(m->src[i]);
	}
	assert_int_equal(cancel_queue_destroy(&m->q), 0);
	free(m->src);
	free(m->rec);
	free(m);
	assert_int_equal(tu_fd_count(), fds0);
}

/* unregister racing cancel and run: exactly one of "removed" and "ran". */
struct race {
	struct cancel_queue *q;
	struct cancel_source *s;
	struct rec *r;
	int go;
	bool removed;
};

static void *
race_cancel(void *arg)
{
	struct race *x = arg;
	tu_await(&x->go);
	cancel_source_cancel(x->s);
	cancel_queue_run(x->q);
	return NULL;
}

static void *
race_unreg(void *arg)
{
	struct race *x = arg;
	tu_await(&x->go);
	x->removed = cancel_callback_unregister(&x->r->cb);
	return NULL;
}

static void
unregister_racing_cancel_and_run_gives_exactly_one_outcome(void **state)
{
	(void)state;
	long rounds = tu_rounds(3000, 30000);
	long removed = 0, ran = 0;
	for (long i = 0; i < rounds; i++) {
		struct cancel_queue *q = malloc(sizeof(*q));
		assert_int_equal(cancel_queue_init(q), 0);
		struct race x = {.q = q, .s = new_source()};
		x.r = calloc(1, sizeof(*x.r));
		assert_int_equal(cancel_callback_register_queued(
		                         &x.r->cb, on_fire, x.r, q,
		                         cancel_source_token(x.s)),
		                 0);
		pthread_t a = tu_spawn(race_cancel, &x);
		pthread_t b = tu_spawn(race_unreg, &x);
		tu_signal(&x.go);
		tu_join(b);
		int runs_at_unreg = __atomic_load_n(&x.r->runs,
		                                    __ATOMIC_ACQUIRE);
		tu_join(a);
		int runs = x.r->runs;
		if (x.removed) {
			assert_int_equal(runs, 0);
			removed++;
		} else {
			/* false: it ran (unregister waited for it). */
			assert_int_equal(runs_at_unreg, 1);
			ran++;
		}
		free(x.r);
		free_source(x.s);
		cancel_queue_run(q);
		assert_int_equal(cancel_queue_destroy(q), 0);
		free(q);
	}
	fprintf(stderr, "queue race: %ld removed, %ld ran\n", removed, ran);
	assert_int_equal(removed + ran, rounds);
}

/*
 * One source, callbacks inline and bound for two queues, interleaved: a
 * cancel runs the inline ones on its own thread and moves the queued ones
 * to their queues (those next to each other for one queue in one step);
 * each queue runs exactly its own, once; one taken back after the cancel
 * never runs; the source may go as soon as the cancel returned.
 */
static void
mixed_callbacks_of_one_source_go_to_their_own_queues(void **state)
{
	(void)state;
	int fds0 = tu_fd_count();
	struct cancel_queue *q1 = malloc(sizeof(*q1));
	struct cancel_queue *q2 = malloc(sizeof(*q2));
	assert_non_null(q1);
	assert_non_null(q2);
	assert_int_equal(cancel_queue_init(q1), 0);
	assert_int_equal(cancel_queue_init(q2), 0);
	struct cancel_source *s = new_source();
	enum { N = 9 };
	/* 0 inline, 1 first queue, 2 second queue */
	const int where[N] = {0, 1, 1, 2, 1, 0, 1, 1, 2};
	struct rec *r = calloc(N, sizeof(*r));
	assert_non_null(r);
	for (int i = 0; i < N; i++) {
		if (where[i] == 0)
			assert_true(cancel_callback_register(
			        &r[i].cb, on_fire, &r[i],
			        cancel_source_token(s)));
		else
			assert_int_equal(cancel_callback_register_queued(
			                         &r[i].cb, on_fire, &r[i],
			                         where[i] == 1 ? q1 : q2,
			                         cancel_source_token(s)),
			                 0);
	}
	pthread_t canceller = tu_spawn(cancel_thread, s);
	tu_join(canceller);
	free_source(s);
	for (int i = 0; i < N; i++) {
		assert_int_equal(r[i].runs, where[i] == 0 ? 1 : 0);
		if (where[i] == 0)
			assert_true(pthread_equal(r[i].ran_on, canceller));
	}
	assert_true(fd_readable(cancel_queue_fd(q1)));
	assert_true(fd_readable(cancel_queue_fd(q2)));
	/* Taken back from the middle of the first queue's batch. */
	assert_true(cancel_callback_unregister(&r[4].cb));
	assert_int_equal(cancel_callback_try_unregister(&r[4].cb), ENOENT);
	poison_cb(&r[4].cb); /* released: the queue must not touch it */
	assert_int_equal(cancel_queue_run(q1), 4);
	assert_false(fd_readable(cancel_queue_fd(q1)));
	assert_true(fd_readable(cancel_queue_fd(q2)));
	assert_int_equal(cancel_queue_run(q2), 2);
	assert_false(fd_readable(cancel_queue_fd(q2)));
	assert_true(still_poisoned(&r[4].cb));
	for (int i = 0; i < N; i++) {
		assert_int_equal(r[i].runs, i == 4 ? 0 : 1);
		if (where[i] != 0 && i != 4)
			assert_true(pthread_equal(r[i].ran_on, pthread_self()));
		if (i != 4)
			assert_false(cancel_callback_unregister(&r[i].cb));
	}
	free(r);
	assert_int_equal(cancel_queue_destroy(q1), 0);
	assert_int_equal(cancel_queue_destroy(q2), 0);
	free(q1);
	free(q2);
	assert_int_equal(tu_fd_count(), fds0);
}

/*
 * Several callbacks of one source on one queue (moved to it in one step)
 * while two threads unregister them and the loop runs the queue: each
 * callback has exactly one outcome, removed (never runs) or ran (its
 * unregister returned false after it ran), and the fd ends clear.
 */
enum { BATCH = 6 };

struct batch_race {
	struct cancel_queue *q;
	struct cancel_source *s;
	struct rec *r;
	int go;
	bool removed[BATCH];
};

struct batch_half {
	struct batch_race *x;
	int from;
};

static void *
batch_cancel_then_run(void *arg)
{
	struct batch_race *x = arg;
	tu_await(&x->go);
	cancel_source_cancel(x->s);
	cancel_queue_run(x->q);
	return NULL;
}

static void *
batch_unreg_half(void *arg)
{
	struct batch_half *h = arg;
	tu_await(&h->x->go);
	for (int i = h->from; i < BATCH; i += 2) {
		h->x->removed[i] = cancel_callback_unregister(&h->x->r[i].cb);
		/* Released, whatever the outcome: nothing may touch it now,
		 * while the cancel and the run may still be going. */
		poison_cb(&h->x->r[i].cb);
	}
	return NULL;
}

static void
unregisters_racing_a_batched_cancel_and_run_give_one_outcome_each(
        void **state)
{
	(void)state;
	long rounds = tu_rounds(1500, 15000);
	long removed = 0, ran = 0;
	for (long k = 0; k < rounds; k++) {
		struct batch_race *x = calloc(1, sizeof(*x));
		assert_non_null(x);
		x->q = malloc(sizeof(*x->q));
		assert_non_null(x->q);
		assert_int_equal(cancel_queue_init(x->q), 0);
		x->s = new_source();
		x->r = calloc(BATCH, sizeof(*x->r));
		assert_non_null(x->r);
		for (int i = 0; i < BATCH; i++)
			assert_int_equal(cancel_callback_register_queued(
			                         &x->r[i].cb, on_fire, &x->r[i],
			                         x->q, cancel_source_token(x->s)),
			                 0);
		struct batch_half h0 = {x, 0}, h1 = {x, 1};
		pthread_t a = tu_spawn(batch_cancel_then_run, x);
		pthread_t b = tu_spawn(batch_unreg_half, &h0);
		pthread_t c = tu_spawn(batch_unreg_half, &h1);
		tu_signal(&x->go);
		tu_join(a);
		tu_join(b);
		tu_join(c);
		/* Whatever was neither removed nor run yet runs now. */
		cancel_queue_run(x->q);
		assert_false(fd_readable(cancel_queue_fd(x->q)));
		for (int i = 0; i < BATCH; i++) {
			assert_true(still_poisoned(&x->r[i].cb));
			int runs = x->r[i].runs;
			if (x->removed[i]) {
				assert_int_equal(runs, 0);
				removed++;
			} else {
				assert_int_equal(runs, 1);
				ran++;
			}
		}
		free(x->r);
		free_source(x->s);
		assert_int_equal(cancel_queue_destroy(x->q), 0);
		memset(x->q, 0xA5, sizeof(*x->q));
		free(x->q);
		free(x);
	}
	fprintf(stderr, "batched queue race: %ld removed, %ld ran\n", removed,
	        ran);
	assert_int_equal(removed + ran, rounds * BATCH);
}

/*
 * The loop may run a callback (and the program destroy the queue) while
 * the canceling thread is still writing the queue's fd: destroy must
 * succeed at once, and the late writer must not touch the freed queue
 * (heap, poisoned right after destroy: ASan) nor leave an fd behind.
 */
static void
destroy_right_after_run_while_canceller_may_still_signal(void **state)
{
	(void)state;
	int fds0 = tu_fd_count();
	for (int i = 0; i < 300; i++) {
		struct cancel_queue *q = malloc(sizeof(*q));
		assert_non_null(q);
		assert_int_equal(cancel_queue_init(q), 0);
		struct cancel_source *s = new_source();
		struct rec r = {0};
		assert_int_equal(cancel_callback_register_queued(
		                         &r.cb, on_fire, &r, q,
		                         cancel_source_token(s)),
		                 0);
		pthread_t t;
		assert_int_equal(pthread_create(&t, NULL, cancel_thread, s), 0);
		/* Run as soon as the callback is queued (before the canceller
		 * may have written the fd). */
		while (cancel_queue_run(q) == 0)
			sched_yield();
		assert_int_equal(cancel_queue_destroy(q), 0);
		memset(q, 0xA5, sizeof(*q));
		free(q);
		pthread_join(t, NULL);
		assert_int_equal(r.runs, 1);
		free_source(s);
	}
	assert_int_equal(tu_fd_count(), fds0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(callback_runs_on_run_thread_not_on_canceller),
		cmocka_unit_test(
		        mixed_callbacks_of_one_source_go_to_their_own_queues),
		cmocka_unit_test(
		        unregisters_racing_a_batched_cancel_and_run_give_one_outcome_each),
		cmocka_unit_test(
		        destroy_right_after_run_while_canceller_may_still_signal),
		cmocka_unit_test(
		        callbacks_run_in_fire_order_and_fd_clears_when_drained),
		cmocka_unit_test(
		        unregister_takes_back_a_fired_callback_that_has_not_run),
		cmocka_unit_test(
		        unregister_takes_a_fired_callback_out_of_the_middle),
		cmocka_unit_test(registered_callback_is_removed_before_it_fires),
		cmocka_unit_test(register_on_canceled_token_queues_nothing),
		cmocka_unit_test(unregister_from_inside_returns_false_at_once),
		cmocka_unit_test(unregister_waits_for_callback_running_on_loop),
		cmocka_unit_test(
		        many_sources_cancelled_from_four_threads_each_run_once_on_loop),
		cmocka_unit_test(
		        unregister_racing_cancel_and_run_gives_exactly_one_outcome),
	};
	return cmocka_run_group_tests_name("queue", tests, NULL, NULL);
}
