/*
 * Lifetime: nothing in the library touches a source after destroy()
 * returned 0, or a callback record after unregister() returned (SPEC,
 * "Lifetime rule"). Every source and callback record here is heap memory
 * released (freed under ASan, poisoned elsewhere: lt_util.h) by the thread
 * whose destroy/unregister returned, right after it returned.
 *
 * The windows are forced, not hoped for: handshakes, libc calls
 * interposed below (only while a test has armed them), and a signal
 * handler that holds a thread. A test that would hang on broken code
 * fails by a bounded wait instead.
 *
 * Run one test: test_lifetime <substring of its name>.
 */
/* ctest: TIMEOUT 240 LABELS lifetime */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "atomic.h"
#include "cancel.h"
#include "core.h"
#include "internal.h"
#include "lt_util.h"
#include "testutil.h"

#define MS 1000000ull

/* ------------------------------------------------------------------ */
/* Interposed libc calls                                              */
/* ------------------------------------------------------------------ */
/*
 * A test arms one call (hook.call) for one descriptor or pid (hook.id).
 * The first matching call claims the hook, announces itself (inside),
 * waits for the test (release), then either fails with fake_errno or
 * goes on with the real call. Unarmed, every call goes straight through.
 */
enum hook_call {
	H_NONE,
	H_WRITE,
	H_READ,
	H_WAITPID,
	H_ACCEPT4,
	H_CONNECT,
	H_CLOCKWAIT,
};

static struct {
	int call;
	long id;
	int fake_errno;
	int inside;
	int release;
} hook;

static void
hook_arm(int call, long id, int fake_errno)
{
	hook.id = id;
	hook.fake_errno = fake_errno;
	st_relaxed(&hook.inside, 0);
	st_relaxed(&hook.release, 0);
	st_release(&hook.call, call); /* pairs with hook_claim's acquire */
}

static void
hook_disarm(void)
{
	st_release(&hook.call, (int)H_NONE);
	st_release(&hook.release, 1);
}

/* True (and the hook is used up) if this call is the armed one. */
static bool
hook_claim(int call, long id)
{
	int c = ld_acquire(&hook.call);
	if (c != call || hook.id != id)
		return false;
	return cas_acq_rel(&hook.call, &c, (int)H_NONE);
}

/* Hold the claiming thread; returns the errno to fake, or 0. */
static int
hook_hold(void)
{
	st_release(&hook.inside, 1); /* pairs with the test's acquire */
	tu_await(&hook.release);
	return hook.fake_errno;
}

#ifndef __SOCKADDR_ARG
#define __SOCKADDR_ARG struct sockaddr *
#define __CONST_SOCKADDR_ARG const struct sockaddr *
#endif

typedef ssize_t (*write_fn)(int, const void *, size_t);
typedef ssize_t (*read_fn)(int, void *, size_t);
typedef pid_t (*waitpid_fn)(pid_t, int *, int);
typedef int (*accept4_fn)(int, __SOCKADDR_ARG, socklen_t *, int);
typedef int (*connect_fn)(int, __CONST_SOCKADDR_ARG, socklen_t);

static write_fn real_write;
static read_fn real_read;
static waitpid_fn real_waitpid;
static accept4_fn real_accept4;
static connect_fn real_connect;

/* Resolved once, before any thread exists. */
__attribute__((constructor)) static void
find_real_calls(void)
{
	real_write = (write_fn)dlsym(RTLD_NEXT, "write");
	real_read = (read_fn)dlsym(RTLD_NEXT, "read");
	real_waitpid = (waitpid_fn)dlsym(RTLD_NEXT, "waitpid");
	real_accept4 = (accept4_fn)dlsym(RTLD_NEXT, "accept4");
	real_connect = (connect_fn)dlsym(RTLD_NEXT, "connect");
}

ssize_t
write(int fd, const void *buf, size_t n)
{
	write_fn real = real_write;
	if (hook_claim(H_WRITE, fd)) {
		int e = hook_hold();
		if (e != 0) {
			errno = e;
			return -1;
		}
	}
	return real(fd, buf, n);
}

ssize_t
read(int fd, void *buf, size_t n)
{
	read_fn real = real_read;
	if (hook_claim(H_READ, fd)) {
		int e = hook_hold();
		if (e != 0) {
			errno = e;
			return -1;
		}
	}
	return real(fd, buf, n);
}

pid_t
waitpid(pid_t pid, int *status, int options)
{
	waitpid_fn real = real_waitpid;
	if (hook_claim(H_WAITPID, pid)) {
		int e = hook_hold();
		if (e != 0) {
			errno = e;
			return -1;
		}
	}
	return real(pid, status, options);
}

int
accept4(int fd, __SOCKADDR_ARG addr, socklen_t *alen, int flags)
{
	accept4_fn real = real_accept4;
	if (hook_claim(H_ACCEPT4, fd)) {
		int e = hook_hold();
		if (e != 0) {
			errno = e;
			return -1;
		}
	}
	return real(fd, addr, alen, flags);
}

int
connect(int fd, __CONST_SOCKADDR_ARG addr, socklen_t alen)
{
	connect_fn real = real_connect;
	if (hook_claim(H_CONNECT, fd)) {
		int e = hook_hold();
		if (e != 0) {
			errno = e;
			return -1;
		}
	}
	return real(fd, addr, alen);
}

/*
 * The condvar waits: hook.id is the condvar. cancel_cond_wait registers
 * its callback, then enters one of these holding the mutex: a hold here is
 * the window between the two.
 */
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
#define NEXT_COND_WAIT ((cond_wait_fn)dlsym(RTLD_NEXT, "pthread_cond_wait"))
#define NEXT_COND_CLOCKWAIT                                                  \
	((cond_clockwait_fn)dlsym(RTLD_NEXT, "pthread_cond_clockwait"))
#else
/* glibc's current version (plain dlsym may return an old one). */
#define NEXT_COND_WAIT                                                       \
	((cond_wait_fn)dlvsym(RTLD_NEXT, "pthread_cond_wait", "GLIBC_2.3.2"))
#define NEXT_COND_CLOCKWAIT                                                  \
	((cond_clockwait_fn)dlsym(RTLD_NEXT, "pthread_cond_clockwait"))
#endif

int
pthread_cond_wait(pthread_cond_t *cv, pthread_mutex_t *mu)
{
	cond_wait_fn real = NEXT_COND_WAIT;
	if (hook_claim(H_CLOCKWAIT, (long)(intptr_t)cv))
		(void)hook_hold();
	return real(cv, mu);
}

int
pthread_cond_clockwait(pthread_cond_t *cv, pthread_mutex_t *mu,
                       clockid_t clk, const struct timespec *ts)
{
	cond_clockwait_fn real = NEXT_COND_CLOCKWAIT;
	if (hook_claim(H_CLOCKWAIT, (long)(intptr_t)cv))
		(void)hook_hold();
	return real(cv, mu, clk, ts);
}

/*
 * pthread_mutex_lock only watches: once armed for a mutex, it notes that
 * some thread called it on that mutex (the library's deferred broadcast
 * does; a condvar wait re-takes its mutex without calling it).
 */
typedef int (*mutex_lock_fn)(pthread_mutex_t *);
static mutex_lock_fn real_mutex_lock;
static pthread_mutex_t *watched_mu;
static int watched_locking;

__attribute__((constructor)) static void
find_real_mutex_lock(void)
{
	real_mutex_lock =
	        (mutex_lock_fn)dlsym(RTLD_NEXT, "pthread_mutex_lock");
}

int
pthread_mutex_lock(pthread_mutex_t *mu)
{
	if (ld_acquire(&watched_mu) == mu)
		st_release(&watched_locking, 1);
	return real_mutex_lock(mu);
}

/* ------------------------------------------------------------------ */
/* Fixtures and small threads                                         */
/* ------------------------------------------------------------------ */

static int fds_before;

static int
setup(void **state)
{
	(void)state;
	fds_before = tu_fds();
	return 0;
}

static int
teardown(void **state)
{
	(void)state;
	hook_disarm();
	st_release(&watched_mu, (pthread_mutex_t *)NULL);
	int bad = lt_check_released();
	if (bad != 0)
		fail_msg("%d released object(s) written to after release",
		         bad);
	assert_int_equal(tu_fds(), fds_before);
	return 0;
}

static int
group_setup(void **state)
{
	(void)state;
	/* The library thread and its descriptor exist before any test
	 * counts descriptors. */
	return cancel_signal_prepare();
}

/* Calls destroy; on 0 releases the source at once. */
struct destroyer {
	struct cancel_source *src;
	int rc;
};

static void *
destroyer_main(void *arg)
{
	struct destroyer *d = arg;
	d->rc = cancel_source_destroy(d->src);
	if (d->rc == 0)
		lt_release(d->src, sizeof(*d->src));
	return NULL;
}

/* Holds a mutex until told to let go. */
struct holder {
	pthread_mutex_t *mu;
	int held;
	int release;
};

static void *
holder_main(void *arg)
{
	struct holder *h = arg;
	pthread_mutex_lock(h->mu);
	st_release(&h->held, 1);
	tu_await(&h->release);
	pthread_mutex_unlock(h->mu);
	return NULL;
}

/* A cancel_cond_wait caller. */
struct condw {
	pthread_mutex_t *mu;
	pthread_cond_t *cv;
	const struct timespec *deadline;
	cancel_token tok;
	int locked; /* holds mu, about to call cancel_cond_wait */
	int rc;
};

static void *
condw_main(void *arg)
{
	struct condw *w = arg;
	pthread_mutex_lock(w->mu);
	st_release(&w->locked, 1);
	w->rc = cancel_cond_wait(w->cv, w->mu, w->deadline, w->tok);
	pthread_mutex_unlock(w->mu);
	return NULL;
}

static void *
canceller_main(void *arg)
{
	cancel_source_cancel(arg);
	return NULL;
}

/* ------------------------------------------------------------------ */
/* 1. cond_wait woken by a finished cancel, blocked on its mutex      */
/* ------------------------------------------------------------------ */

static void
destroy_waits_for_cond_waiter_blocked_on_its_mutex(void **state)
{
	(void)state;
	pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
	pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
	struct cancel_source *src = lt_new_source();
	struct condw w = {.mu = &mu, .cv = &cv,
	                  .tok = cancel_source_token(src)};
	struct holder h = {.mu = &mu};
	struct destroyer d = {.src = src};
	struct lt_thread tw, th, td;

	lt_start(&tw, condw_main, &w);
	assert_true(lt_await_within(&w.locked, 5000));
	/* T gets mu only once W released it inside the wait, i.e. after W
	 * registered its cancel callback. */
	lt_start(&th, holder_main, &h);
	assert_true(lt_await_within(&h.held, 5000));

	/* The callback's broadcast wakes W, which blocks on mu (held by T);
	 * the cancel then ends with an empty list. */
	assert_true(cancel_source_cancel(src));
	lt_start(&td, destroyer_main, &d);
	bool early = lt_finished_within(&td, 100);

	st_release(&h.release, 1);
	LT_JOIN(&tw, 5000, "cancel_cond_wait");
	LT_JOIN(&td, 5000, "destroy");
	LT_JOIN(&th, 5000, "mutex holder");
	if (early)
		fail_msg("destroy returned %d while the woken cond waiter was "
		         "still inside cancel_cond_wait",
		         d.rc);
	assert_int_equal(w.rc, ECANCELED);
	assert_int_equal(d.rc, 0);
	assert_int_equal(pthread_cond_destroy(&cv), 0);
	assert_int_equal(pthread_mutex_destroy(&mu), 0);
}

/* ------------------------------------------------------------------ */
/* 2. I/O calls are inside for their whole duration                   */
/* ------------------------------------------------------------------ */

enum io_kind { IO_WRITE_FILE, IO_READ_PIPE, IO_WAITPID, IO_ACCEPT, IO_CONNECT };

struct io_call {
	enum io_kind kind;
	int fd;
	pid_t pid;
	void *buf;
	size_t len;
	size_t done;
	cancel_token tok;
	int rc;
};

static void *
io_main(void *arg)
{
	struct io_call *c = arg;
	switch (c->kind) {
	case IO_WRITE_FILE:
		c->rc = cancel_write(c->fd, c->buf, c->len, &c->done, NULL,
		                     c->tok);
		break;
	case IO_READ_PIPE:
		c->rc = cancel_read(c->fd, c->buf, c->len, &c->done, NULL,
		                    c->tok);
		break;
	case IO_WAITPID:
		c->rc = cancel_waitpid(c->pid, NULL, NULL, c->tok);
		break;
	case IO_ACCEPT: {
		int conn = -1;
		c->rc = cancel_accept(c->fd, &conn, NULL, NULL, NULL, c->tok);
		if (conn >= 0)
			close(conn);
		break;
	}
	case IO_CONNECT: {
		struct sockaddr_un a = {.sun_family = AF_UNIX};
		/* Never reached: the hook fakes EINPROGRESS. */
		memcpy(a.sun_path, "\0lt-none", 8);
		c->rc = cancel_connect(c->fd, (struct sockaddr *)&a,
		                       (socklen_t)(offsetof(struct sockaddr_un,
		                                            sun_path) +
		                                   8),
		                       NULL, c->tok);
		break;
	}
	}
	return NULL;
}

#define FILE_CHUNK_BYTES ((size_t)64 * 1024)

/* The resources of one forced I/O case. */
struct io_env {
	int fds[2];
	pid_t child;
};

static void
io_env_open(struct io_call *c, struct io_env *env)
{
	env->fds[0] = env->fds[1] = -1;
	env->child = -1;
	switch (c->kind) {
	case IO_WRITE_FILE:
		env->fds[0] = memfd_create("lt", MFD_CLOEXEC);
		assert_true(env->fds[0] >= 0);
		c->fd = env->fds[0];
		c->len = 3 * FILE_CHUNK_BYTES;
		c->buf = lt_alloc(c->len);
		memset(c->buf, 'w', c->len);
		hook_arm(H_WRITE, c->fd, 0); /* hold, then really write */
		break;
	case IO_READ_PIPE:
		assert_int_equal(pipe2(env->fds, O_CLOEXEC), 0);
		assert_int_equal(write(env->fds[1], "x", 1), 1);
		c->fd = env->fds[0];
		c->len = 16;
		c->buf = lt_alloc(c->len);
		/* After poll said ready: hold, then a read that was
		 * interrupted, so the call goes round again. */
		hook_arm(H_READ, c->fd, EINTR);
		break;
	case IO_WAITPID:
		env->child = fork();
		assert_true(env->child >= 0);
		if (env->child == 0) {
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			alarm(30);
			for (;;)
				pause();
		}
		c->pid = env->child;
		/* The first WNOHANG check: hold, then "still running". */
		hook_arm(H_WAITPID, c->pid, 0);
		break;
	case IO_ACCEPT: {
		env->fds[0] = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC |
		                                  SOCK_NONBLOCK,
		                     0);
		assert_true(env->fds[0] >= 0);
		struct sockaddr_un a = {.sun_family = AF_UNIX};
		int n = snprintf(a.sun_path + 1, sizeof(a.sun_path) - 1,
		                 "lt-accept-%d", (int)getpid());
		socklen_t alen = (socklen_t)(offsetof(struct sockaddr_un,
		                                      sun_path) +
		                             1 + (size_t)n);
		assert_int_equal(bind(env->fds[0], (struct sockaddr *)&a, alen),
		                 0);
		assert_int_equal(listen(env->fds[0], 4), 0);
		c->fd = env->fds[0];
		/* Non-blocking listener: tried first; hold, then EAGAIN. */
		hook_arm(H_ACCEPT4, c->fd, EAGAIN);
		break;
	}
	case IO_CONNECT:
		env->fds[0] = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		assert_true(env->fds[0] >= 0);
		c->fd = env->fds[0];
		/* Hold, then "in progress": the call polls for the result. */
		hook_arm(H_CONNECT, c->fd, EINPROGRESS);
		break;
	}
}

static void
io_env_close(struct io_call *c, struct io_env *env)
{
	if (env->child > 0) {
		kill(env->child, SIGKILL);
		int st;
		while (waitpid(env->child, &st, 0) < 0 && errno == EINTR)
			;
	}
	for (int i = 0; i < 2; i++)
		if (env->fds[i] >= 0)
			close(env->fds[i]);
	free(c->buf);
	c->buf = NULL;
}

/*
 * Hold @kind's call inside the library (after a step that left poll, or
 * between chunks), cancel, and destroy on another thread: destroy must
 * not return before the call has left.
 */
static void
io_destroy_waits(enum io_kind kind)
{
	struct cancel_source *src = lt_new_source();
	struct io_call c = {.kind = kind, .tok = cancel_source_token(src)};
	struct io_env env;
	io_env_open(&c, &env);

	struct lt_thread tw, td;
	lt_start(&tw, io_main, &c);
	if (!lt_await_within(&hook.inside, 5000))
		fail_msg("the interposed call was never reached");
	assert_true(cancel_source_cancel(src));
	struct destroyer d = {.src = src};
	lt_start(&td, destroyer_main, &d);
	bool early = lt_finished_within(&td, 100);

	st_release(&hook.release, 1);
	LT_JOIN(&tw, 5000, "the I/O call");
	LT_JOIN(&td, 5000, "destroy");
	if (early)
		fail_msg("destroy returned %d while the I/O call was still "
		         "inside",
		         d.rc);
	assert_int_equal(c.rc, ECANCELED);
	assert_int_equal(d.rc, 0);
	if (kind == IO_WRITE_FILE)
		assert_int_equal(c.done, FILE_CHUNK_BYTES);
	if (kind == IO_READ_PIPE) {
		assert_int_equal(c.done, 0);
		char b;
		assert_int_equal(read(env.fds[0], &b, 1), 1); /* not eaten */
	}
	io_env_close(&c, &env);
}

static void
destroy_waits_for_cancel_write_between_file_chunks(void **state)
{
	(void)state;
	io_destroy_waits(IO_WRITE_FILE);
}

static void
destroy_waits_for_cancel_read_after_its_poll(void **state)
{
	(void)state;
	io_destroy_waits(IO_READ_PIPE);
}

static void
destroy_waits_for_cancel_waitpid_between_checks(void **state)
{
	(void)state;
	io_destroy_waits(IO_WAITPID);
}

static void
destroy_waits_for_cancel_accept_between_attempts(void **state)
{
	(void)state;
	io_destroy_waits(IO_ACCEPT);
}

static void
destroy_waits_for_cancel_connect_after_its_connect(void **state)
{
	(void)state;
	io_destroy_waits(IO_CONNECT);
}

/* Not canceled: an I/O call inside makes destroy say EBUSY. */
static void
destroy_is_ebusy_while_cancel_write_is_inside(void **state)
{
	(void)state;
	struct cancel_source *src = lt_new_source();
	struct io_call c = {.kind = IO_WRITE_FILE,
	                    .tok = cancel_source_token(src)};
	struct io_env env;
	io_env_open(&c, &env);

	struct lt_thread tw;
	lt_start(&tw, io_main, &c);
	if (!lt_await_within(&hook.inside, 5000))
		fail_msg("the interposed call was never reached");
	int rc = cancel_source_destroy(src);
	if (rc == 0)
		lt_release(src, sizeof(*src));
	st_release(&hook.release, 1);
	LT_JOIN(&tw, 5000, "cancel_write");
	assert_int_equal(rc, EBUSY);
	assert_int_equal(c.rc, 0);
	assert_int_equal(c.done, c.len);
	assert_int_equal(cancel_source_destroy(src), 0);
	lt_release(src, sizeof(*src));
	io_env_close(&c, &env);
}

/* Unforced: a pipe writer streaming to a reader; cancel, destroy, free. */
struct stream {
	int fds[2];
	unsigned char *buf;
	size_t len;
	cancel_token tok;
	int rc;
	size_t got; /* bytes the reader took so far (atomic) */
};

static void *
stream_writer(void *arg)
{
	struct stream *s = arg;
	size_t done;
	s->rc = cancel_write(s->fds[1], s->buf, s->len, &done, NULL, s->tok);
	return NULL;
}

static void *
stream_reader(void *arg)
{
	struct stream *s = arg;
	unsigned char b[16384];
	for (;;) {
		ssize_t n = read(s->fds[0], b, sizeof(b));
		if (n == 0)
			break;
		if (n < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		fetch_add_acq_rel(&s->got, (size_t)n);
	}
	return NULL;
}

static void
destroy_waits_for_streaming_pipe_writer(void **state)
{
	(void)state;
	unsigned seed = tu_seed("stream");
	long trials = tu_rounds(2000, 10000);
	const size_t len = 256 * 1024;
	unsigned char *buf = lt_alloc(len);
	memset(buf, 's', len);
	for (long t = 0; t < trials; t++) {
		struct stream s = {.buf = buf, .len = len};
		struct cancel_source *src = lt_new_source();
		s.tok = cancel_source_token(src);
		assert_int_equal(pipe2(s.fds, O_CLOEXEC), 0);
		struct lt_thread tw, tr;
		lt_start(&tw, stream_writer, &s);
		lt_start(&tr, stream_reader, &s);
		size_t after = 1 + (size_t)rand_r(&seed) % (len / 2);
		uint64_t start = tu_now_ms();
		while (ld_acquire(&s.got) < after) {
			if (tu_now_ms() - start > 5000)
				fail_msg("trial %ld: the stream stalled", t);
			sched_yield();
		}
		cancel_source_cancel(src);
		int rc = cancel_source_destroy(src);
		if (rc == 0)
			lt_release(src, sizeof(*src));
		LT_JOIN(&tw, 5000, "cancel_write");
		close(s.fds[1]);
		LT_JOIN(&tr, 5000, "the reader");
		close(s.fds[0]);
		assert_int_equal(rc, 0);
		assert_true(s.rc == ECANCELED || s.rc == 0);
		if (lt_check_released() != 0)
			fail_msg("trial %ld: the source was written after "
			         "destroy returned",
			         t);
	}
	free(buf);
}

/* ------------------------------------------------------------------ */
/* 3. A waiting unregister woken, then held by a signal handler       */
/* ------------------------------------------------------------------ */

static int c3_entered, c3_release;
static int h3_in, h3_release, h3_saw_returned;
static int u3_returned;

static void
c3_fn(void *arg)
{
	(void)arg;
	st_release(&c3_entered, 1);
	tu_await(&c3_release);
}

static void
h3_handler(int signo)
{
	(void)signo;
	int saved = errno;
	st_relaxed(&h3_saw_returned, ld_acquire(&u3_returned));
	st_release(&h3_in, 1);
	while (!ld_acquire(&h3_release))
		sched_yield();
	errno = saved;
}

struct unreg {
	struct cancel_callback *cb;
	pid_t tid;
	int tid_set;
	int removed;
};

static void *
unreg_main(void *arg)
{
	struct unreg *u = arg;
	u->tid = lt_gettid();
	st_release(&u->tid_set, 1);
	u->removed = cancel_callback_unregister(u->cb);
	st_release(&u3_returned, 1);
	lt_release(u->cb, sizeof(*u->cb));
	return NULL;
}

static void
destroy_waits_for_unregister_woken_and_held(void **state)
{
	(void)state;
	st_relaxed(&c3_entered, 0);
	st_relaxed(&c3_release, 0);
	st_relaxed(&h3_in, 0);
	st_relaxed(&h3_release, 0);
	st_relaxed(&u3_returned, 0);
	struct sigaction old;
	tu_install_handler(SIGUSR2, h3_handler, 0, &old); /* no SA_RESTART */

	struct cancel_source *src = lt_new_source();
	struct cancel_callback *cb = lt_new_callback();
	assert_true(cancel_callback_register(cb, c3_fn, NULL,
	                                     cancel_source_token(src)));
	struct lt_thread tx, tu, td;
	lt_start(&tx, canceller_main, src);
	assert_true(lt_await_within(&c3_entered, 5000));

	/* U parks in unregister, waiting for C on X. */
	struct unreg u = {.cb = cb};
	lt_start(&tu, unreg_main, &u);
	assert_true(lt_await_within(&u.tid_set, 5000));
	if (!lt_await_futex(u.tid, 5000))
		fail_msg("unregister did not park");
	/* Hold U in a handler (at once, or under TSan at its next
	 * intercepted call, once the cancel woke it). */
	assert_int_equal(pthread_kill(tu.th, SIGUSR2), 0);
	st_release(&c3_release, 1);
	if (!lt_await_within(&h3_in, 5000))
		fail_msg("the signal never reached the unregistering thread");
	LT_JOIN(&tx, 5000, "the cancel");

	struct destroyer d = {.src = src};
	lt_start(&td, destroyer_main, &d);
	bool early = lt_finished_within(&td, 100);
	bool held_inside = !ld_acquire(&h3_saw_returned);

	st_release(&h3_release, 1);
	LT_JOIN(&tu, 5000, "unregister");
	LT_JOIN(&td, 5000, "destroy");
	tu_restore_handler(SIGUSR2, &old);
	if (early && held_inside)
		fail_msg("destroy returned %d while unregister was still "
		         "inside (woken, held by a signal handler)",
		         d.rc);
	if (!held_inside)
		print_message("note: the handler ran after unregister "
		              "returned; the window was not forced\n");
	assert_false(u.removed);
	assert_int_equal(d.rc, 0);
}

/* ------------------------------------------------------------------ */
/* 4. A callback that destroyed its own source still runs             */
/* ------------------------------------------------------------------ */

struct req4 {
	struct cancel_source *src;
	int written;
};

static int f4_rc = -1;
static int f4_destroyed, f4_go;

static void
f4_fn(void *arg)
{
	struct req4 *r = arg;
	struct cancel_source *src = r->src;
	int rc = cancel_source_destroy(src);
	if (rc == 0)
		lt_release(src, sizeof(*src));
	st_relaxed(&f4_rc, rc);
	st_release(&f4_destroyed, 1);
	tu_await(&f4_go);
	/* Still running: the owner must not have freed the request. */
	r->written = 1;
}

struct unreg4 {
	struct cancel_callback *cb;
	struct req4 *req;
	int removed;
};

static void *
unreg4_main(void *arg)
{
	struct unreg4 *u = arg;
	u->removed = cancel_callback_unregister(u->cb);
	lt_release(u->cb, sizeof(*u->cb));
	lt_release(u->req, sizeof(*u->req));
	return NULL;
}

static void
callback_that_destroyed_its_source_is_still_running(void **state)
{
	(void)state;
	st_relaxed(&f4_rc, -1);
	st_relaxed(&f4_destroyed, 0);
	st_relaxed(&f4_go, 0);
	struct req4 *req = lt_alloc(sizeof(*req));
	req->src = lt_new_source();
	req->written = 0;
	struct cancel_callback *cb = lt_new_callback();
	assert_true(cancel_callback_register(cb, f4_fn, req,
	                                     cancel_source_token(req->src)));
	struct lt_thread tx, tu;
	lt_start(&tx, canceller_main, req->src);
	if (!lt_await_within(&f4_destroyed, 5000))
		fail_msg("the callback never ran");

	int tr = cancel_callback_try_unregister(cb);
	struct unreg4 u = {.cb = cb, .req = req};
	lt_start(&tu, unreg4_main, &u);
	bool early = lt_finished_within(&tu, 100);

	st_release(&f4_go, 1);
	LT_JOIN(&tx, 5000, "the cancel");
	LT_JOIN(&tu, 5000, "unregister");
	assert_int_equal(ld_acquire(&f4_rc), 0);
	if (tr != EINPROGRESS)
		fail_msg("try_unregister said %d (%s), not EINPROGRESS, while "
		         "the callback ran",
		         tr, tr == EALREADY ? "EALREADY" : "?");
	if (early)
		fail_msg("unregister returned while the callback still ran");
	assert_false(u.removed);
}

/* ------------------------------------------------------------------ */
/* 5. One blocked user mutex delays no other cond waiter              */
/* ------------------------------------------------------------------ */

static void
cond_wakeup_not_delayed_by_another_waiters_mutex(void **state)
{
	(void)state;
	pthread_mutex_t mu1 = PTHREAD_MUTEX_INITIALIZER;
	pthread_mutex_t mu2 = PTHREAD_MUTEX_INITIALIZER;
	pthread_cond_t cv1 = PTHREAD_COND_INITIALIZER;
	pthread_cond_t cv2 = PTHREAD_COND_INITIALIZER;
	struct cancel_source *s1 = lt_new_source();
	struct cancel_source *s2 = lt_new_source();
	struct timespec far = cancel_deadline_in(60000 * MS);
	struct condw w1 = {.mu = &mu1, .cv = &cv1,
	                   .tok = cancel_source_token(s1)};
	struct condw w2 = {.mu = &mu2, .cv = &cv2, .deadline = &far,
	                   .tok = cancel_source_token(s2)};
	struct lt_thread t1, t2;

	/* W1 waits on (cv1, mu1); we hold mu1 and cancel s1: its wake-up
	 * is deferred and blocks on mu1 in the library. */
	lt_start(&t1, condw_main, &w1);
	assert_true(lt_await_within(&w1.locked, 5000));
	pthread_mutex_lock(&mu1); /* W1 is inside the wait */
	st_relaxed(&watched_locking, 0);
	st_release(&watched_mu, &mu1);
	assert_true(cancel_source_cancel(s1));
	/* The deferred broadcast is running and blocks on mu1. */
	if (!lt_await_within(&watched_locking, 2000))
		print_message("note: no pthread_mutex_lock(mu1) seen from "
		              "the deferred wake-up\n");
	st_release(&watched_mu, (pthread_mutex_t *)NULL);

	/* W2 registered and about to wait, still holding mu2: the cancel
	 * cannot wake it directly, its wake-up is deferred too. */
	hook_arm(H_CLOCKWAIT, (long)(intptr_t)&cv2, 0);
	lt_start(&t2, condw_main, &w2);
	if (!lt_await_within(&hook.inside, 5000))
		fail_msg("cancel_cond_wait never reached the condvar wait");
	assert_true(cancel_source_cancel(s2));
	uint64_t start = tu_now_ms();
	st_release(&hook.release, 1);
	bool prompt = lt_finished_within(&t2, 2000);
	uint64_t took = tu_now_ms() - start;

	pthread_mutex_unlock(&mu1);
	LT_JOIN(&t1, 5000, "the first cond waiter");
	LT_JOIN(&t2, 5000, "the second cond waiter");
	if (!prompt)
		fail_msg("the wake-up on mu2 waited for mu1 (%d ms and more)",
		         (int)took);
	assert_int_equal(w1.rc, ECANCELED);
	assert_int_equal(w2.rc, ECANCELED);
	assert_int_equal(cancel_source_destroy(s1), 0);
	lt_release(s1, sizeof(*s1));
	assert_int_equal(cancel_source_destroy(s2), 0);
	lt_release(s2, sizeof(*s2));
	assert_int_equal(pthread_cond_destroy(&cv1), 0);
	assert_int_equal(pthread_cond_destroy(&cv2), 0);
	assert_int_equal(pthread_mutex_destroy(&mu1), 0);
	assert_int_equal(pthread_mutex_destroy(&mu2), 0);
}

/* ------------------------------------------------------------------ */
/* 6. A timer firing is not mistaken for a new source at its address  */
/* ------------------------------------------------------------------ */

static int f6_destroy_rc = -1, f6_arm_rc = -1;
static int f6_rearmed, f6_go;

static void
f6_fn(void *arg)
{
	struct cancel_source *s = arg;
	st_relaxed(&f6_destroy_rc, cancel_source_destroy(s));
	/* Its own cancel, no other callback: 0, and s may be reused. */
	cancel_source_init(s);
	st_relaxed(&f6_arm_rc, cancel_source_cancel_after(s, 60000 * MS));
	st_release(&f6_rearmed, 1);
	tu_await(&f6_go);
}

static void
destroy_of_reused_storage_does_not_wait_for_old_timer(void **state)
{
	(void)state;
	st_relaxed(&f6_rearmed, 0);
	st_relaxed(&f6_go, 0);
	struct cancel_source *s = lt_new_source();
	struct cancel_callback *cb = lt_new_callback();
	assert_true(cancel_callback_register(cb, f6_fn, s,
	                                     cancel_source_token(s)));
	assert_int_equal(cancel_source_cancel_after(s, 1000), 0);
	if (!lt_await_within(&f6_rearmed, 5000))
		fail_msg("the timer never fired");
	assert_int_equal(ld_acquire(&f6_destroy_rc), 0);
	assert_int_equal(ld_acquire(&f6_arm_rc), 0);

	/* The new source at the same address, armed far away. */
	struct destroyer d = {.src = s};
	struct lt_thread td;
	uint64_t start = tu_now_ms();
	lt_start(&td, destroyer_main, &d);
	bool prompt = lt_finished_within(&td, 1000);
	uint64_t took = tu_now_ms() - start;
	st_release(&f6_go, 1);
	LT_JOIN(&td, 5000, "destroy");
	if (!prompt)
		fail_msg("destroy of the new source waited for the old "
		         "source's timer callback (%d ms and more)",
		         (int)took);
	assert_int_equal(d.rc, 0);
	assert_false(cancel_callback_unregister(cb));
	lt_release(cb, sizeof(*cb));
}

/* ------------------------------------------------------------------ */
/* 10. init_linked's ENOMEM leaves errno alone                        */
/* ------------------------------------------------------------------ */

static void
init_linked_enomem_preserves_errno(void **state)
{
	(void)state;
	struct cancel_source *p1 = lt_new_source();
	struct cancel_source *p2 = lt_new_source();
	struct cancel_source *child = lt_alloc(sizeof(*child));
	cancel_token parents[2] = {cancel_source_token(p1),
	                           cancel_source_token(p2)};
	/* An injected failure leaves errno as malloc would (ENOMEM). */
	cancel__test_fail_alloc_errno(ENOMEM);
	cancel__test_fail_alloc(1);
	errno = 12345;
	int rc = cancel_source_init_linked(child, parents, 2);
	int e = errno;
	cancel__test_fail_alloc(0);
	cancel__test_fail_alloc_errno(0);
	assert_int_equal(rc, ENOMEM);
	assert_int_equal(e, 12345);
	assert_int_equal(cancel_source_destroy(child), 0);
	lt_release(child, sizeof(*child));
	assert_int_equal(cancel_source_destroy(p1), 0);
	lt_release(p1, sizeof(*p1));
	assert_int_equal(cancel_source_destroy(p2), 0);
	lt_release(p2, sizeof(*p2));
}

/* ------------------------------------------------------------------ */
/* 11. A valid far deadline is a deadline, not "none"                 */
/* ------------------------------------------------------------------ */

enum far_call { FAR_WAIT, FAR_SLEEP_UNTIL, FAR_POLL };

static int
far_run(enum far_call which, cancel_token tok)
{
	struct timespec far = {.tv_sec = 20000000000, .tv_nsec = 0};
	switch (which) {
	case FAR_WAIT:
		return cancel_wait(&far, tok);
	case FAR_SLEEP_UNTIL:
		return cancel_sleep_until(&far, tok);
	case FAR_POLL:
		return cancel_poll(NULL, 0, &far, tok);
	}
	return -1;
}

static void
far_deadline_blocks_without_token(void **state)
{
	(void)state;
	static const char *names[] = {"cancel_wait", "cancel_sleep_until",
	                              "cancel_poll"};
	for (int which = FAR_WAIT; which <= FAR_POLL; which++) {
		pid_t pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			alarm(30);
			_exit(far_run((enum far_call)which, CANCEL_TOKEN_NONE));
		}
		int st = 0;
		struct timespec dl = cancel_deadline_in(200 * MS);
		int rc = cancel_waitpid(pid, &st, &dl, CANCEL_TOKEN_NONE);
		if (rc == ETIMEDOUT) {
			kill(pid, SIGKILL);
			assert_int_equal(cancel_waitpid(pid, &st, NULL,
			                                CANCEL_TOKEN_NONE),
			                 0);
			assert_true(WIFSIGNALED(st));
			continue;
		}
		assert_int_equal(rc, 0);
		fail_msg("%s with a far deadline and no token returned %d "
		         "instead of blocking",
		         names[which], WIFEXITED(st) ? WEXITSTATUS(st) : -1);
	}
}

struct far_waiter {
	enum far_call which;
	cancel_token tok;
	int rc;
};

static void *
far_main(void *arg)
{
	struct far_waiter *f = arg;
	f->rc = far_run(f->which, f->tok);
	return NULL;
}

static void
far_deadline_wait_returns_ecanceled(void **state)
{
	(void)state;
	for (int which = FAR_WAIT; which <= FAR_POLL; which++) {
		struct cancel_source *src = lt_new_source();
		struct far_waiter f = {.which = (enum far_call)which,
		                       .tok = cancel_source_token(src)};
		struct lt_thread t;
		lt_start(&t, far_main, &f);
		tu_await_waiters_bounded(src, 1);
		assert_false(lt_finished_within(&t, 50));
		assert_true(cancel_source_cancel(src));
		LT_JOIN(&t, 5000, "the wait");
		assert_int_equal(f.rc, ECANCELED);
		assert_int_equal(cancel_source_destroy(src), 0);
		lt_release(src, sizeof(*src));
	}
}

/* ------------------------------------------------------------------ */
/* 12. cancel_token_deadline: bounded stack, each ancestor once       */
/* ------------------------------------------------------------------ */

struct dl_query {
	cancel_token tok;
	struct timespec want;
	int ok;
};

static void *
dl_query_main(void *arg)
{
	struct dl_query *q = arg;
	struct timespec got = {0, 0};
	bool has = cancel_token_deadline(q->tok, &got);
	q->ok = has && got.tv_sec == q->want.tv_sec &&
	        got.tv_nsec == q->want.tv_nsec;
	return NULL;
}

/*
 * In a child (inherited sources are not for use there: the chain is built
 * here): a root and @n - 1 linked nodes, node i linked to [node i - 1,
 * root], or to node i - 1 twice when @twice. The root's deadline is an
 * hour away, the middle node's half an hour: the answer for the last node
 * is the middle one's. The query runs on a thread with a 64 KiB stack.
 * Exits 0 if right within @limit_ms, 1 if wrong, 2 if slow, 3-4 on setup
 * failures; alarm(@alarm_s) ends a query that hangs.
 */
static void
dl_child(size_t n, bool twice, uint64_t limit_ms, unsigned alarm_s)
{
	alarm(60);
	struct cancel_source **node = malloc(n * sizeof(*node));
	if (node == NULL)
		_exit(3);
	node[0] = lt_new_source();
	for (size_t i = 1; i < n; i++) {
		node[i] = lt_alloc(sizeof(*node[i]));
		cancel_token p[2] = {cancel_source_token(node[i - 1]),
		                     cancel_source_token(twice ? node[i - 1]
		                                               : node[0])};
		if (cancel_source_init_linked(node[i], p, 2) != 0)
			_exit(3);
	}
	struct timespec root_dl = cancel_deadline_in(3600000 * MS);
	struct timespec mid_dl = cancel_deadline_in(1800000 * MS);
	if (cancel_source_cancel_at(node[0], &root_dl) != 0 ||
	    cancel_source_cancel_at(node[n / 2], &mid_dl) != 0)
		_exit(3);

	struct dl_query q = {.tok = cancel_source_token(node[n - 1]),
	                     .want = mid_dl};
	pthread_attr_t a;
	pthread_attr_init(&a);
	pthread_attr_setstacksize(&a, 64 * 1024);
	pthread_t t;
	alarm(alarm_s);
	uint64_t start = tu_now_ms();
	if (pthread_create(&t, &a, dl_query_main, &q) != 0)
		_exit(4);
	pthread_join(t, NULL);
	uint64_t took = tu_now_ms() - start;
	alarm(60);
	for (size_t i = n; i-- > 0;) {
		if (cancel_source_destroy(node[i]) != 0)
			_exit(3);
		free(node[i]);
	}
	free(node);
	_exit(!q.ok ? 1 : took >= limit_ms ? 2 : 0);
}

static void
dl_check_child(pid_t pid, const char *what)
{
	int st = 0;
	struct timespec dl = cancel_deadline_in(90000 * MS);
	int rc = cancel_waitpid(pid, &st, &dl, CANCEL_TOKEN_NONE);
	if (rc == ETIMEDOUT) {
		kill(pid, SIGKILL);
		cancel_waitpid(pid, &st, NULL, CANCEL_TOKEN_NONE);
		fail_msg("%s: the child hung", what);
	}
	assert_int_equal(rc, 0);
	if (WIFSIGNALED(st))
		fail_msg("%s: the query died with signal %d (%s)", what,
		         WTERMSIG(st),
		         WTERMSIG(st) == SIGALRM ? "did not return in time"
		                                 : "stack overflow?");
	assert_true(WIFEXITED(st));
	if (WEXITSTATUS(st) == 1)
		fail_msg("%s: wrong deadline", what);
	if (WEXITSTATUS(st) == 2)
		fail_msg("%s: too slow", what);
	if (WEXITSTATUS(st) != 0)
		fail_msg("%s: the child failed (exit %d%s)", what,
		         WEXITSTATUS(st),
		         WEXITSTATUS(st) > 4 ? ": a sanitizer report?" : "");
}

static void
token_deadline_deep_chain_through_first_parent(void **state)
{
	(void)state;
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		dl_child(300000, false, 30000, 30); /* no crash is the point */
	dl_check_child(pid, "300,000-deep chain");
}

static void
token_deadline_double_links_visit_each_ancestor_once(void **state)
{
	(void)state;
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		dl_child(41, true, 1000, 5); /* a root, 40 double links */
	dl_check_child(pid, "40 double links");
}

/* ------------------------------------------------------------------ */
/* 13. Destroying a deep (queued) child from a callback               */
/* ------------------------------------------------------------------ */

struct deep {
	struct cancel_source *victim;
	int rc;
	int ran;
};

static void
destroy_victim(void *arg)
{
	struct deep *d = arg;
	d->ran++;
	d->rc = cancel_source_destroy(d->victim);
	if (d->rc == 0)
		lt_release(d->victim, sizeof(*d->victim));
}

/*
 * A chain root -> c1 -> ... -> c[len]; a callback on c[on] (registered
 * before c[on + 1] exists, so it runs after the link propagated) destroys
 * the leaf c[len] and frees it. The root is canceled on this thread.
 */
static void
deep_chain_case(size_t len, size_t on)
{
	long live = cancel__test_live_objects();
	struct cancel_source *c[16];
	struct cancel_callback *cb = lt_new_callback();
	struct deep d = {.rc = -1};
	c[0] = lt_new_source();
	for (size_t i = 1; i <= len; i++) {
		if (i - 1 == on)
			assert_true(cancel_callback_register(
			        cb, destroy_victim, &d,
			        cancel_source_token(c[on])));
		c[i] = lt_alloc(sizeof(*c[i]));
		cancel_token p = cancel_source_token(c[i - 1]);
		assert_int_equal(cancel_source_init_linked(c[i], &p, 1), 0);
	}
	d.victim = c[len];
	assert_true(cancel_source_cancel(c[0]));
	assert_int_equal(d.ran, 1);
	assert_int_equal(d.rc, 0);
	for (size_t i = 0; i < len; i++)
		assert_true(cancel_token_is_canceled(
		        cancel_source_token(c[i])));
	assert_false(cancel_callback_unregister(cb));
	lt_release(cb, sizeof(*cb));
	for (size_t i = len; i-- > 0;) {
		assert_int_equal(cancel_source_destroy(c[i]), 0);
		lt_release(c[i], sizeof(*c[i]));
	}
	assert_int_equal(cancel__test_live_objects(), live);
}

static void
root_callback_destroys_deep_child(void **state)
{
	(void)state;
	deep_chain_case(12, 0);
}

static void
queued_source_callback_destroys_deep_child(void **state)
{
	(void)state;
	/* c9 lies deeper than CANCEL_LINK_INLINE_DEPTH: queued. */
	deep_chain_case(12, CANCEL_LINK_INLINE_DEPTH + 1);
}

static void
inline_callback_destroys_queued_leaf(void **state)
{
	(void)state;
	/* c1's callback runs while c9 (the leaf) waits in the queue. */
	deep_chain_case(CANCEL_LINK_INLINE_DEPTH + 1, 1);
}

int
main(int argc, char **argv)
{
	struct CMUnitTest tests[] = {
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
		T(destroy_waits_for_cond_waiter_blocked_on_its_mutex),
		T(destroy_waits_for_cancel_write_between_file_chunks),
		T(destroy_waits_for_cancel_read_after_its_poll),
		T(destroy_waits_for_cancel_waitpid_between_checks),
		T(destroy_waits_for_cancel_accept_between_attempts),
		T(destroy_waits_for_cancel_connect_after_its_connect),
		T(destroy_is_ebusy_while_cancel_write_is_inside),
		T(destroy_waits_for_streaming_pipe_writer),
		T(destroy_waits_for_unregister_woken_and_held),
		T(callback_that_destroyed_its_source_is_still_running),
		T(cond_wakeup_not_delayed_by_another_waiters_mutex),
		T(destroy_of_reused_storage_does_not_wait_for_old_timer),
		T(init_linked_enomem_preserves_errno),
		T(far_deadline_blocks_without_token),
		T(far_deadline_wait_returns_ecanceled),
		T(token_deadline_deep_chain_through_first_parent),
		T(token_deadline_double_links_visit_each_ancestor_once),
		T(root_callback_destroys_deep_child),
		T(queued_source_callback_destroys_deep_child),
		T(inline_callback_destroys_queued_leaf),
#undef T
	};
	size_t n = lt_filter(tests, sizeof(tests) / sizeof(tests[0]), argc,
	                     argv);
	return _cmocka_run_group_tests("lifetime", tests, n, group_setup,
	                               NULL);
}
