/*
 * Hang-up watches: a source is canceled (ECONNRESET, on the library
 * thread) when the peer of a watched socket or pipe leaves; never for
 * unread bytes, never after a stop, never for a reused descriptor number,
 * never in a forked child. Real TCP sockets on 127.0.0.1, socketpairs and
 * pipes; runs on both backends (epoll: dev, asan, tsan; poll: pthread).
 * Watches and sources live on the heap and are freed right after
 * stop/destroy, so ASan sees any later touch.
 */
/* ctest: TIMEOUT 300 LABELS watch */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "atomic.h"
#include "cancel.h"
#include "internal.h"
#include "testutil.h"
#include "watch_util.h"

TU_THREADS_AFTER_FORK

/* ------------------------------------------------------------------ */
/* Helpers                                                            */
/* ------------------------------------------------------------------ */

/* A request: a source, a counting callback, a watch. All on the heap. */
struct req {
	struct cancel_source src;
	struct cancel_callback cb;
	struct cancel_watch *w;
	int fired;      /* callback runs */
	int on_lt;      /* the callback ran on the library thread */
	/* stop_while_firing: the callback waits for `release` */
	int block;
	int entered;
	int release;
	/* stop_from_inside: the callback stops w and frees everything */
	int self_free;
};

static int self_freed;
static int self_stop_result = -1;

static void
on_cancel(void *arg)
{
	struct req *r = arg;
	st_release(&r->on_lt, cancel__lt_is_self() ? 1 : 0);
	fetch_add_acq_rel(&r->fired, 1);
	if (ld_acquire(&r->block)) {
		tu_signal(&r->entered);
		tu_await(&r->release);
	}
	if (r->self_free) {
		/* Inside the watch's own cancel: returns false at once. */
		bool s = cancel_watch_stop(r->w);
		st_release(&self_stop_result, s ? 1 : 0);
		free(r->w);
		r->w = NULL;
		if (cancel_source_destroy(&r->src) == 0) {
			free(r);
			tu_signal(&self_freed);
		}
	}
}

static struct req *
req_new(void)
{
	struct req *r = calloc(1, sizeof *r);
	assert_non_null(r);
	cancel_source_init(&r->src);
	r->w = calloc(1, sizeof *r->w);
	assert_non_null(r->w);
	assert_true(cancel_callback_register(&r->cb, on_cancel, r,
	                                     cancel_source_token(&r->src)));
	return r;
}

/* Stop the watch, check its result, free it at once, then the source. */
static void
req_end(struct req *r, bool stop_result)
{
	assert_int_equal(cancel_watch_stop(r->w), stop_result);
	free(r->w);
	r->w = NULL;
	cancel_callback_unregister(&r->cb);
	assert_int_equal(cancel_source_destroy(&r->src), 0);
	free(r);
}

static int
req_wait(struct req *r, uint64_t ns)
{
	struct timespec dl = cancel_deadline_in(ns);
	return cancel_wait(&dl, cancel_source_token(&r->src));
}

/* Wait for the cancel and its callback; check reason and thread. */
static void
expect_canceled(struct req *r)
{
	assert_int_equal(req_wait(r, PATIENCE), ECANCELED);
	assert_int_equal(cancel_token_reason(cancel_source_token(&r->src)),
	                 ECONNRESET);
	/* The watch's own cause: message and origin. */
	struct cancel_cause c;
	assert_true(cancel_token_cause(cancel_source_token(&r->src), &c));
	assert_int_equal(c.reason, ECONNRESET);
	assert_string_equal(c.msg, "peer hung up");
	assert_ptr_equal(c.origin, &r->src);
	uint64_t end = tu_now_ms() + 10000;
	while (ld_acquire(&r->fired) == 0) {
		assert_true(tu_now_ms() < end);
		tu_nap();
	}
	assert_int_equal(ld_acquire(&r->fired), 1);
	assert_int_equal(ld_acquire(&r->on_lt), 1);
}

static void
expect_quiet(struct req *r)
{
	assert_int_equal(req_wait(r, QUIET), ETIMEDOUT);
	assert_int_equal(ld_acquire(&r->fired), 0);
}

/* ------------------------------------------------------------------ */
/* Peers leaving                                                      */
/* ------------------------------------------------------------------ */

static void
peer_close_cancels_with_econnreset_on_library_thread(void **state)
{
	(void)state;
	int s, c;
	tcp_pair(&s, &c);
	struct req *r = req_new();
	assert_int_equal(cancel_watch_hangup(r->w, s, 0, &r->src), 0);
	expect_quiet(r);
	uint64_t t0 = tu_now_ns();
	close(c);
	expect_canceled(r);
	assert_true(tu_now_ns() - t0 < PATIENCE);
	req_end(r, false);
	close(s);
}

static void
peer_reset_cancels_even_when_half_close_is_ignored(void **state)
{
	(void)state;
	for (unsigned flags = 0; flags <= 1; flags++) {
		int s, c;
		tcp_pair(&s, &c);
		struct req *r = req_new();
		assert_int_equal(cancel_watch_hangup(r->w, s, flags, &r->src),
		                 0);
		struct linger lg = {1, 0};
		assert_int_equal(setsockopt(c, SOL_SOCKET, SO_LINGER, &lg,
		                            sizeof lg), 0);
		close(c); /* RST */
		expect_canceled(r);
		req_end(r, false);
		close(s);
	}
}

static void
half_close_cancels_without_the_flag(void **state)
{
	(void)state;
	int s, c;
	tcp_pair(&s, &c);
	struct req *r = req_new();
	assert_int_equal(cancel_watch_hangup(r->w, s, 0, &r->src), 0);
	assert_int_equal(shutdown(c, SHUT_WR), 0);
	expect_canceled(r);
	req_end(r, false);
	close(s);
	close(c);
}

static void
half_close_is_ignored_with_the_flag_until_the_reply_draws_a_reset(
    void **state)
{
	(void)state;
	int s, c;
	tcp_pair(&s, &c);
	struct req *r = req_new();
	assert_int_equal(cancel_watch_hangup(r->w, s,
	                                     CANCEL_WATCH_IGNORE_HALF_CLOSE,
	                                     &r->src), 0);
	assert_int_equal(shutdown(c, SHUT_WR), 0);
	expect_quiet(r);
	/* The peer really leaves: with the flag, its FIN looks like the
	 * half-close; the reply draws a reset, and that cancels. */
	close(c);
	expect_quiet(r);
	assert_int_equal(send(s, "HTTP/1.1 200 OK\r\n", 17, MSG_NOSIGNAL),
	                 17);
	expect_canceled(r);
	req_end(r, false);
	close(s);
}

/* Pipelined requests, then FIN: the bytes stay unread, the flags as they
 * were; with the flag nothing happens, without it the FIN cancels. */
static void
pipelined_bytes_then_fin(void **state)
{
	(void)state;
	static const char two[] = "GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n";
	for (unsigned flags = 0; flags <= 1; flags++) {
		int s, c;
		tcp_pair(&s, &c);
		int fl = fcntl(s, F_GETFL);
		struct req *r = req_new();
		assert_int_equal(cancel_watch_hangup(r->w, s, flags ^ 1u,
		                                     &r->src), 0);
		assert_int_equal(send(c, two, sizeof two - 1, 0),
		                 (ssize_t)sizeof two - 1);
		/* Bytes alone never cancel (no EPOLLIN / POLLIN). */
		expect_quiet(r);
		assert_int_equal(shutdown(c, SHUT_WR), 0);
		if (flags ^ 1u)
			expect_quiet(r);
		else
			expect_canceled(r);
		char buf[64];
		assert_int_equal(recv(s, buf, sizeof buf, MSG_PEEK |
		                      MSG_DONTWAIT), (ssize_t)sizeof two - 1);
		assert_int_equal(fcntl(s, F_GETFL), fl);
		req_end(r, (flags ^ 1u) != 0);
		close(s);
		close(c);
	}
}

static void
peer_gone_before_the_watch_cancels_promptly(void **state)
{
	(void)state;
	int s, c;
	tcp_pair(&s, &c);
	close(c);
	/* Let the FIN arrive first. */
	struct pollfd p = {.fd = s, .events = POLLRDHUP};
	assert_int_equal(poll(&p, 1, 5000), 1);
	struct req *r = req_new();
	uint64_t t0 = tu_now_ns();
	assert_int_equal(cancel_watch_hangup(r->w, s, 0, &r->src), 0);
	expect_canceled(r);
	/* Promptly: no waiting for some later event. */
	assert_true(tu_now_ns() - t0 < 2000 * MS);
	req_end(r, false);
	close(s);
}

static void
pipe_ends_cancel_when_the_other_end_closes(void **state)
{
	(void)state;
	/* Write end: its reader goes away (POLLERR). */
	int p[2];
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	struct req *r = req_new();
	assert_int_equal(cancel_watch_hangup(r->w, p[1], 0, &r->src), 0);
	expect_quiet(r);
	close(p[0]);
	expect_canceled(r);
	req_end(r, false);
	close(p[1]);
	/* Read end: its writer goes away (POLLHUP). */
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	r = req_new();
	assert_int_equal(cancel_watch_hangup(r->w, p[0], 0, &r->src), 0);
	expect_quiet(r);
	close(p[1]);
	expect_canceled(r);
	req_end(r, false);
	close(p[0]);
}

/* ------------------------------------------------------------------ */
/* Stop                                                               */
/* ------------------------------------------------------------------ */

static void
stop_before_the_hang_up_returns_true_and_nothing_fires(void **state)
{
	(void)state;
	int s, c;
	unix_pair(&s, &c);
	struct req *r = req_new();
	assert_int_equal(cancel_watch_hangup(r->w, s, 0, &r->src), 0);
	assert_true(cancel_watch_stop(r->w));
	free(r->w);
	r->w = calloc(1, sizeof *r->w); /* for req_end */
	close(c);
	expect_quiet(r);
	/* A second stop of an idle watch: false, harmless. */
	req_end(r, false);
	close(s);
}

static void
stop_after_the_cancel_returns_false(void **state)
{
	(void)state;
	int s, c;
	unix_pair(&s, &c);
	struct req *r = req_new();
	assert_int_equal(cancel_watch_hangup(r->w, s, 0, &r->src), 0);
	close(c);
	expect_canceled(r);
	req_end(r, false);
	close(s);
}

struct stopper {
	struct cancel_watch *w;
	int result;
	int done;
};

static void *
stop_main(void *arg)
{
	struct stopper *st = arg;
	st->result = cancel_watch_stop(st->w);
	free(st->w); /* at once: the loop must not touch it any more */
	tu_signal(&st->done);
	return NULL;
}

static void
stop_while_firing_waits_for_the_cancel_to_end(void **state)
{
	(void)state;
	int s, c;
	unix_pair(&s, &c);
	struct req *r = req_new();
	st_release(&r->block, 1);
	assert_int_equal(cancel_watch_hangup(r->w, s, 0, &r->src), 0);
	close(c);
	tu_await(&r->entered);
	struct stopper st = {.w = r->w, .result = -1};
	r->w = NULL;
	pthread_t t = tu_spawn(stop_main, &st);
	/* The stop must not return while the callback runs. */
	struct timespec ts = {0, 100 * 1000000};
	nanosleep(&ts, NULL);
	assert_int_equal(ld_acquire(&st.done), 0);
	tu_signal(&r->release);
	tu_join(t);
	assert_int_equal(st.result, 0);
	assert_int_equal(ld_acquire(&r->fired), 1);
	/* The stop returned after the cancel: destroy at once. */
	cancel_callback_unregister(&r->cb);
	assert_int_equal(cancel_source_destroy(&r->src), 0);
	free(r);
	close(s);
}

static void
stop_from_inside_the_callback_returns_false_at_once(void **state)
{
	(void)state;
	int s, c;
	unix_pair(&s, &c);
	struct req *r = req_new();
	r->self_free = 1;
	st_relaxed(&self_freed, 0);
	assert_int_equal(cancel_watch_hangup(r->w, s, 0, &r->src), 0);
	close(c);
	/* r is freed by its callback: wait on the flag, not on r. */
	uint64_t end = tu_now_ms() + 10000;
	while (!ld_acquire(&self_freed)) {
		assert_true(tu_now_ms() < end);
		tu_nap();
	}
	assert_int_equal(ld_acquire(&self_stop_result), 0);
	close(s);
}

/* The peer leaves while the stop runs: either the stop wins (true: the
 * source is never canceled, and both are freed at once) or the watch
 * fired (false: the cancel has ended when the stop returns). */
static void
stop_racing_the_hang_up_is_one_or_the_other(void **state)
{
	(void)state;
	long rounds = tu_rounds(2000, 20000);
	long won = 0;
	for (long i = 0; i < rounds; i++) {
		int s, c;
		unix_pair(&s, &c);
		struct req *r = req_new();
		assert_int_equal(cancel_watch_hangup(r->w, s, 0, &r->src), 0);
		close(c);
		if (i % 3 == 1)
			sched_yield(); /* let the library thread get closer */
		bool stopped = cancel_watch_stop(r->w);
		free(r->w);
		r->w = NULL;
		if (stopped) {
			won++;
			assert_int_equal(ld_acquire(&r->fired), 0);
			assert_false(cancel_token_is_canceled(
			    cancel_source_token(&r->src)));
		} else {
			assert_int_equal(ld_acquire(&r->fired), 1);
		}
		cancel_callback_unregister(&r->cb);
		assert_int_equal(cancel_source_destroy(&r->src), 0);
		free(r);
		close(s);
	}
	fprintf(stderr, "watch: stop won %ld of %ld races\n", won, rounds);
}

/* A batch of hang-ups reported together: while the first one's callback
 * runs, the others wait on the pending list; stopping them there returns
 * true and they never fire. The library thread is held in a timer
 * callback while the peers leave, so one poll reports them all. */
#define NBATCH 50
static int batch_entered = -1;
static int batch_release;
static int batch_release_first;
static int batch_hold_entered;

struct batch_req {
	struct req *r;
	int idx;
};

static void
batch_cb(void *arg)
{
	struct batch_req *b = arg;
	int expected = -1;
	fetch_add_acq_rel(&b->r->fired, 1);
	if (__atomic_compare_exchange_n(&batch_entered, &expected, b->idx,
	                                false, __ATOMIC_ACQ_REL,
	                                __ATOMIC_ACQUIRE))
		tu_await(&batch_release_first);
}

static void
hold_cb(void *arg)
{
	(void)arg;
	tu_signal(&batch_hold_entered);
	tu_await(&batch_release);
}

static void
stop_of_a_reported_but_pending_watch_returns_true(void **state)
{
	(void)state;
	struct req *r[NBATCH];
	struct batch_req b[NBATCH];
	struct cancel_callback cb[NBATCH];
	int s[NBATCH], c[NBATCH];
	st_relaxed(&batch_entered, -1);
	st_relaxed(&batch_release, 0);
	st_relaxed(&batch_release_first, 0);
	st_relaxed(&batch_hold_entered, 0);
	for (int i = 0; i < NBATCH; i++) {
		unix_pair(&s[i], &c[i]);
		r[i] = req_new();
		b[i] = (struct batch_req){r[i], i};
		cancel_callback_unregister(&r[i]->cb);
		memset(&cb[i], 0, sizeof cb[i]);
		assert_true(cancel_callback_register(
		    &cb[i], batch_cb, &b[i], cancel_source_token(&r[i]->src)));
		assert_int_equal(cancel_watch_hangup(r[i]->w, s[i], 0,
		                                     &r[i]->src), 0);
	}
	/* Hold the library thread in a timer's callback. */
	struct cancel_source *hold = calloc(1, sizeof *hold);
	struct cancel_callback hcb = CANCEL_CALLBACK_INITIALIZER;
	cancel_source_init(hold);
	assert_true(cancel_callback_register(&hcb, hold_cb, NULL,
	                                     cancel_source_token(hold)));
	assert_int_equal(cancel_source_cancel_after(hold, 1), 0);
	tu_await(&batch_hold_entered);
	for (int i = 0; i < NBATCH; i++)
		close(c[i]);
	/* Let the first watch's callback take over the hold. */
	tu_signal(&batch_release);
	uint64_t end = tu_now_ms() + 10000;
	while (ld_acquire(&batch_entered) < 0) {
		assert_true(tu_now_ms() < end);
		tu_nap();
	}
	/* The first fired watch's callback runs (blocked); the others were
	 * reported in the same poll and wait on the pending list. */
	int first = ld_acquire(&batch_entered);
	int pending_stopped = 0;
	for (int i = 0; i < NBATCH; i++) {
		if (i == first)
			continue;
		bool stopped = cancel_watch_stop(r[i]->w);
		free(r[i]->w);
		r[i]->w = NULL;
		pending_stopped += stopped;
	}
	assert_int_equal(pending_stopped, NBATCH - 1);
	tu_signal(&batch_release_first);
	assert_false(cancel_watch_stop(r[first]->w));
	free(r[first]->w);
	r[first]->w = NULL;
	for (int i = 0; i < NBATCH; i++) {
		cancel_callback_unregister(&cb[i]);
		bool was_stopped = ld_acquire(&r[i]->fired) == 0;
		assert_int_equal(cancel_token_is_canceled(
		                     cancel_source_token(&r[i]->src)),
		                 !was_stopped);
		assert_int_equal(cancel_source_destroy(&r[i]->src), 0);
		free(r[i]);
		close(s[i]);
	}
	cancel_callback_unregister(&hcb);
	assert_int_equal(cancel_source_destroy(hold), 0);
	free(hold);
	fprintf(stderr, "watch: %d of %d pending watches stopped\n",
	        pending_stopped, NBATCH);
}

static void
destroy_is_ebusy_while_a_watch_is_active_even_after_it_fired(void **state)
{
	(void)state;
	int s, c;
	unix_pair(&s, &c);
	struct cancel_source *src = calloc(1, sizeof *src);
	struct cancel_watch *w = calloc(1, sizeof *w);
	assert_non_null(src);
	assert_non_null(w);
	cancel_source_init(src);
	assert_int_equal(cancel_watch_hangup(w, s, 0, src), 0);
	assert_int_equal(cancel_source_destroy(src), EBUSY);
	close(c);
	assert_int_equal(cancel_wait(NULL, cancel_source_token(src)),
	                 ECANCELED);
	assert_int_equal(cancel_source_destroy(src), EBUSY);
	assert_false(cancel_watch_stop(w));
	free(w);
	assert_int_equal(cancel_source_destroy(src), 0);
	free(src);
	close(s);
}

static void
results_for_canceled_sources_busy_watches_and_bad_arguments(void **state)
{
	(void)state;
	int s, c;
	unix_pair(&s, &c);
	struct cancel_source *src = calloc(1, sizeof *src);
	struct cancel_watch *w = calloc(1, sizeof *w);
	cancel_source_init(src);

	assert_int_equal(cancel_watch_hangup(NULL, s, 0, src), EINVAL);
	assert_int_equal(cancel_watch_hangup(w, s, 0, NULL), EINVAL);
	assert_int_equal(cancel_watch_hangup(w, -1, 0, src), EINVAL);
	assert_int_equal(cancel_watch_hangup(w, s, 2u, src), EINVAL);
	int freefd = tu_lowest_free_fd();
	assert_int_equal(cancel_watch_hangup(w, freefd, 0, src), EINVAL);
	assert_int_equal(cancel_watch_hangup(w, 1 << 20, 0, src), EINVAL);
#ifdef CANCEL_BACKEND_futex
	/* epoll cannot watch a regular file. */
	FILE *f = tmpfile();
	assert_non_null(f);
	assert_int_equal(cancel_watch_hangup(w, fileno(f), 0, src), EINVAL);
	fclose(f);
	/* One active watch per descriptor (epoll). */
	struct cancel_watch w2 = CANCEL_WATCH_INITIALIZER;
	assert_int_equal(cancel_watch_hangup(&w2, s, 0, src), 0);
	assert_int_equal(cancel_watch_hangup(w, s, 0, src), EEXIST);
	assert_true(cancel_watch_stop(&w2));
#endif
	assert_false(cancel_watch_stop(NULL));
	assert_false(cancel_watch_stop(w)); /* idle */
	/* Every failure left w idle and src free. */
	assert_int_equal(cancel_source_destroy(src), 0);
	cancel_source_init(src);

	assert_int_equal(cancel_watch_hangup(w, s, 0, src), 0);
	assert_int_equal(cancel_watch_hangup(w, s, 0, src), EBUSY);
	assert_true(cancel_watch_stop(w));

	/* Already canceled: nothing watched, nothing held. */
	cancel_source_cancel(src);
	int e = errno = 1234;
	assert_int_equal(cancel_watch_hangup(w, s, 0, src), ECANCELED);
	assert_int_equal(errno, e);
	assert_false(cancel_watch_stop(w));
	assert_int_equal(cancel_source_destroy(src), 0);
	free(w);
	free(src);
	close(s);
	close(c);
}

/* ------------------------------------------------------------------ */
/* Descriptor numbers reused                                          */
/* ------------------------------------------------------------------ */

static void
reused_descriptor_number_never_cancels_the_old_or_new_request(void **state)
{
	(void)state;
	int a, a_peer, b, b_peer;
	tcp_pair(&a, &a_peer);
	struct req *old = req_new();
	assert_int_equal(cancel_watch_hangup(old->w, a, 0, &old->src), 0);
	assert_true(cancel_watch_stop(old->w));
	int num = a;
	close(a);
	/* A new connection on the same number, watched by another source. */
	tcp_pair(&b, &b_peer);
	if (b_peer == num) { /* the number went to the peer: move it */
		int t = fcntl(b_peer, F_DUPFD_CLOEXEC, 0);
		assert_true(t >= 0);
		close(b_peer);
		b_peer = t;
	}
	if (b != num) {
		assert_int_equal(dup3(b, num, O_CLOEXEC), num);
		close(b);
		b = num;
	}
	struct req *nw = req_new();
	assert_int_equal(cancel_watch_hangup(nw->w, b, 0, &nw->src), 0);
	/* The old peer leaves: nobody is canceled. */
	close(a_peer);
	expect_quiet(nw);
	assert_int_equal(ld_acquire(&old->fired), 0);
	/* The new peer leaves: only the new request is. */
	close(b_peer);
	expect_canceled(nw);
	expect_quiet(old);
	req_end(nw, false);
	req_end(old, false);
	close(b);
}

/* ------------------------------------------------------------------ */
/* 10,000 at once                                                     */
/* ------------------------------------------------------------------ */

/*
 * The peers live in a helper process (20,000 descriptors do not fit in
 * one process here: RLIMIT_NOFILE's hard limit is 20,000): it makes each
 * socketpair, sends one end over with SCM_RIGHTS, keeps the other, and
 * closes the peers it is told to.
 */
#define NWATCH 10000
#define PER_MSG 200

static void
helper_main(int ctl)
{
	static int peers[NWATCH];
	for (int i = 0; i < NWATCH; i += PER_MSG) {
		int mine[PER_MSG];
		union {
			char buf[CMSG_SPACE(sizeof(int) * PER_MSG)];
			struct cmsghdr align;
		} u;
		for (int k = 0; k < PER_MSG; k++) {
			int sv[2];
			if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0,
			               sv) != 0)
				_exit(2);
			mine[k] = sv[0];
			peers[i + k] = sv[1];
		}
		char one = 'x';
		struct iovec iov = {&one, 1};
		struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1,
		                   .msg_control = u.buf,
		                   .msg_controllen = sizeof u.buf};
		struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int) * PER_MSG);
		memcpy(CMSG_DATA(cm), mine, sizeof mine);
		if (sendmsg(ctl, &m, 0) != 1)
			_exit(3);
		for (int k = 0; k < PER_MSG; k++)
			close(mine[k]);
	}
	/* Commands: an index to hang up; -1: quit. */
	for (;;) {
		int32_t idx;
		if (read(ctl, &idx, sizeof idx) != (ssize_t)sizeof idx)
			_exit(4);
		if (idx < 0)
			_exit(0);
		close(peers[idx]);
	}
}

static void
recv_fds(int ctl, int *fds)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * PER_MSG)];
		struct cmsghdr align;
	} u;
	char one;
	struct iovec iov = {&one, 1};
	struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1,
	                   .msg_control = u.buf,
	                   .msg_controllen = sizeof u.buf};
	assert_int_equal(recvmsg(ctl, &m, MSG_CMSG_CLOEXEC), 1);
	struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
	assert_non_null(cm);
	assert_int_equal(cm->cmsg_len, CMSG_LEN(sizeof(int) * PER_MSG));
	memcpy(fds, CMSG_DATA(cm), sizeof(int) * PER_MSG);
}

static void
count_run(void *arg)
{
	fetch_add_acq_rel((int *)arg, 1);
}

static void
ten_thousand_watches_with_random_hang_ups(void **state)
{
	(void)state;
	struct rlimit old, rl;
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
	rl = old;
	rl.rlim_cur = rl.rlim_max;
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &rl), 0);
	assert_true(rl.rlim_cur == RLIM_INFINITY ||
	            rl.rlim_cur >= NWATCH + 64);
	int fds0 = tu_fds();
	int tasks0 = tasks();

	int ctl[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0,
	                            ctl), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(ctl[0]);
		helper_main(ctl[1]);
	}
	close(ctl[1]);

	int *fds = calloc(NWATCH, sizeof *fds);
	struct cancel_source *src = calloc(NWATCH, sizeof *src);
	struct cancel_watch *w = calloc(NWATCH, sizeof *w);
	int *ran = calloc(NWATCH, sizeof *ran);
	struct cancel_callback *cb = calloc(NWATCH, sizeof *cb);
	bool *hung = calloc(NWATCH, sizeof *hung);
	assert_true(fds && src && w && ran && cb && hung);
	for (int i = 0; i < NWATCH; i += PER_MSG)
		recv_fds(ctl[0], fds + i);

	for (int i = 0; i < NWATCH; i++) {
		cancel_source_init(&src[i]);
		assert_true(cancel_callback_register(
		    &cb[i], count_run, &ran[i], cancel_source_token(&src[i])));
		assert_int_equal(cancel_watch_hangup(&w[i], fds[i], 0, &src[i]),
		                 0);
	}
	unsigned seed = tu_seed("watch");
	int nhung = 0;
	for (int i = 0; i < NWATCH; i++) {
		if (rand_r(&seed) % 3 != 0)
			continue;
		hung[i] = true;
		nhung++;
		int32_t idx = i;
		assert_int_equal(write(ctl[0], &idx, sizeof idx),
		                 (ssize_t)sizeof idx);
	}
	/* Every hung-up source is canceled (reason ECONNRESET). */
	uint64_t t0 = tu_now_ns();
	for (int i = 0; i < NWATCH; i++) {
		if (!hung[i])
			continue;
		struct timespec dl = cancel_deadline_in(PATIENCE);
		assert_int_equal(cancel_wait(&dl, cancel_source_token(&src[i])),
		                 ECANCELED);
		assert_int_equal(cancel_token_reason(
		                     cancel_source_token(&src[i])), ECONNRESET);
	}
	fprintf(stderr, "watch: %d of %d hung up, all canceled in %.1f ms\n",
	        nhung, NWATCH, (double)(tu_now_ns() - t0) / 1e6);
	/* The others' peers are still there: stop returns true (it never
	 * fired) for them, false for the hung-up ones. */
	for (int i = 0; i < NWATCH; i++) {
		assert_int_equal(cancel_watch_stop(&w[i]), !hung[i]);
		/* Exactly once, and never for the others. */
		assert_int_equal(ld_acquire(&ran[i]), hung[i] ? 1 : 0);
		assert_int_equal(cancel_token_is_canceled(
		                     cancel_source_token(&src[i])), hung[i]);
		cancel_callback_unregister(&cb[i]);
		assert_int_equal(cancel_source_destroy(&src[i]), 0);
		close(fds[i]);
	}
	int32_t quit = -1;
	assert_int_equal(write(ctl[0], &quit, sizeof quit),
	                 (ssize_t)sizeof quit);
	int status = -1;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	close(ctl[0]);
	free(fds);
	free(src);
	free(w);
	free(ran);
	free(cb);
	free(hung);
	assert_int_equal(tu_fds(), fds0);
	/* The helper process is reaped; the library's threads are those of
	 * the start. */
	assert_int_equal(tasks(), tasks0);
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
}

/* ------------------------------------------------------------------ */
/* fork                                                               */
/* ------------------------------------------------------------------ */

#define CHILD_CHECK(cond)                                                    \
	do {                                                                 \
		if (!(cond))                                                 \
			tu_child_exit(__LINE__ % 250 + 1);                   \
	} while (0)

static void
child_does_not_watch_the_parents_descriptors(void **state)
{
	(void)state;
	int s, c;
	unix_pair(&s, &c);
	struct req *r = req_new();
	assert_int_equal(cancel_watch_hangup(r->w, s, 0, &r->src), 0);
	int go[2], back[2];
	assert_int_equal(pipe2(go, O_CLOEXEC), 0);
	assert_int_equal(pipe2(back, O_CLOEXEC), 0);

	pid_t pid = tu_fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		alarm(20);
		close(go[1]);
		close(back[0]);
		/* The parent's peer must be able to leave: drop our copy of
		 * it. Our copy of s stays open (and in our memory the
		 * inherited watch reads active). */
		close(c);
		/* The inherited watch is not ours: stop touches no kernel
		 * object (the parent's watch must survive it). */
		CHILD_CHECK(cancel_watch_stop(r->w));
		/* Our own watch works: a new kernel object, a new loop. */
		int a, b;
		unix_pair(&a, &b);
		struct cancel_source mine;
		struct cancel_watch mw = CANCEL_WATCH_INITIALIZER;
		cancel_source_init(&mine);
		CHILD_CHECK(cancel_watch_hangup(&mw, a, 0, &mine) == 0);
		close(b);
		CHILD_CHECK(cancel_wait(NULL, cancel_source_token(&mine)) ==
		            ECANCELED);
		CHILD_CHECK(!cancel_watch_stop(&mw));
		CHILD_CHECK(cancel_source_destroy(&mine) == 0);
		/* Watch the inherited s again in a fresh struct, but with a
		 * source that must stay quiet: no. Instead: tell the parent
		 * we are ready, wait until its peer left and it saw it. */
		char x = 'r';
		CHILD_CHECK(write(back[1], &x, 1) == 1);
		CHILD_CHECK(read(go[0], &x, 1) == 1);
		struct timespec dl = cancel_deadline_in(QUIET);
		CHILD_CHECK(cancel_wait(&dl, cancel_source_token(&r->src)) ==
		            ETIMEDOUT);
		CHILD_CHECK(ld_acquire(&r->fired) == 0);
		tu_child_exit(0);
	}
	close(go[0]);
	close(back[1]);
	char x;
	assert_int_equal(read(back[0], &x, 1), 1);
	close(c);
	/* The parent's watch still works after the child's stop. */
	expect_canceled(r);
	assert_int_equal(write(go[1], &x, 1), 1);
	int status = -1;
	struct timespec dl = cancel_deadline_in(PATIENCE);
	assert_int_equal(cancel_waitpid(pid, &status, &dl, CANCEL_TOKEN_NONE),
	                 0);
	if (WIFSIGNALED(status))
		fail_msg("child killed by signal %d", WTERMSIG(status));
	if (WEXITSTATUS(status) != 0)
		fail_msg("child check failed near line %d (mod 250)",
		         WEXITSTATUS(status) - 1);
	req_end(r, false);
	close(s);
	close(go[1]);
	close(back[0]);
}

/*
 * Stop, then close: the peer sees the end of the stream at once. (A
 * library thread asleep in poll() holds a reference to every file it
 * polls; the stop must let go of it, or the close sends no FIN.)
 */
static void
close_after_stop_reaches_the_peer_at_once(void **state)
{
	(void)state;
	for (int round = 0; round < 20; round++) {
		int sv[2];
		assert_int_equal(socketpair(AF_UNIX,
		                            SOCK_STREAM | SOCK_CLOEXEC, 0, sv),
		                 0);
		struct cancel_source *src = malloc(sizeof(*src));
		struct cancel_watch *w = malloc(sizeof(*w));
		cancel_source_init(src);
		*w = (struct cancel_watch)CANCEL_WATCH_INITIALIZER;
		assert_int_equal(cancel_watch_hangup(w, sv[0], 0, src), 0);
		/* Let the loop take the fd into its set and go to sleep. */
		struct timespec dl = cancel_deadline_in(20 * 1000000ull);
		assert_int_equal(cancel_wait(&dl, cancel_source_token(src)),
		                 ETIMEDOUT);
		assert_true(cancel_watch_stop(w));
		free(w);
		close(sv[0]);
		struct pollfd p = {.fd = sv[1], .events = POLLIN};
		uint64_t t0 = tu_now_ns();
		assert_int_equal(poll(&p, 1, 2000), 1);
		assert_true(tu_now_ns() - t0 < 1000000000ull);
		char c;
		assert_int_equal(read(sv[1], &c, 1), 0); /* end of stream */
		close(sv[1]);
		assert_int_equal(cancel_source_destroy(src), 0);
		free(src);
	}
}

#define T(f) cmocka_unit_test_setup_teardown(f, tu_fds_setup, tu_fds_check)

int
main(void)
{
	const struct CMUnitTest tests[] = {
		T(peer_close_cancels_with_econnreset_on_library_thread),
		T(close_after_stop_reaches_the_peer_at_once),
		T(peer_reset_cancels_even_when_half_close_is_ignored),
		T(half_close_cancels_without_the_flag),
		T(half_close_is_ignored_with_the_flag_until_the_reply_draws_a_reset),
		T(pipelined_bytes_then_fin),
		T(peer_gone_before_the_watch_cancels_promptly),
		T(pipe_ends_cancel_when_the_other_end_closes),
		T(stop_before_the_hang_up_returns_true_and_nothing_fires),
		T(stop_after_the_cancel_returns_false),
		T(stop_while_firing_waits_for_the_cancel_to_end),
		T(stop_from_inside_the_callback_returns_false_at_once),
		T(stop_racing_the_hang_up_is_one_or_the_other),
		T(stop_of_a_reported_but_pending_watch_returns_true),
		T(destroy_is_ebusy_while_a_watch_is_active_even_after_it_fired),
		T(results_for_canceled_sources_busy_watches_and_bad_arguments),
		T(reused_descriptor_number_never_cancels_the_old_or_new_request),
		T(ten_thousand_watches_with_random_hang_ups),
		T(child_does_not_watch_the_parents_descriptors),
	};
	return cmocka_run_group_tests_name("watch", tests, watch_group_setup,
	                                   NULL);
}
