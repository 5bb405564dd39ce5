/*
 * Lifetime across fork(): a child forked while another thread holds the
 * callback-graph mutex can still unregister a callback from inside it; a
 * child forked from a callback on the library thread ends on its own
 * without spinning; and a child that cancels its copy of a source (from a
 * signal handler) never makes the parent's waits on that source's token
 * spin past their deadlines.
 *
 * Children report through exit codes; every wait for a child is bounded
 * and a child that does not end in time is killed and the test fails.
 *
 * Run one test: test_lifetime_fork <substring of its name>.
 */
/* ctest: TIMEOUT 120 LABELS lifetime */
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
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "atomic.h"
#include "cancel.h"
#include "internal.h"
#include "lt_util.h"
#include "testutil.h"

#define MS 1000000ull

/* The pid of the test process: forked children are told apart by it. */
static pid_t test_pid;

#ifdef LT_ASAN
/* No leak check in forked children: their memory is the parent's. */
int __lsan_is_turned_off(void);
int
__lsan_is_turned_off(void)
{
	return getpid() != test_pid;
}
#endif

#define CHILD_CHECK(cond)                                                    \
	do {                                                                 \
		if (!(cond))                                                 \
			_exit(__LINE__ % 200 + 50);                          \
	} while (0)

/*
 * Wait up to @ms for child @pid; true with its status and resource use
 * when it ended, false (still running) otherwise.
 */
static bool
reap_within(pid_t pid, uint64_t ms, int *status, struct rusage *ru)
{
	uint64_t start = tu_now_ms();
	for (;;) {
		pid_t r = wait4(pid, status, WNOHANG, ru);
		if (r == pid)
			return true;
		assert_true(r == 0 || (r < 0 && errno == EINTR));
		if (tu_now_ms() - start >= ms)
			return false;
		tu_nap();
	}
}

/* CPU seconds child @pid has used so far (from /proc), or -1. */
static double
child_cpu_s(pid_t pid)
{
	char path[64], buf[1024];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return -1;
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	char *p = strrchr(buf, ')');
	unsigned long ut = 0, st = 0;
	if (p == NULL || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u "
	                                "%*u %*u %lu %lu",
	                        &ut, &st) != 2)
		return -1;
	return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* Reap @pid within @ms or kill it and fail with @what. */
static int
reap_or_fail(pid_t pid, uint64_t ms, const char *what)
{
	int st = 0;
	struct rusage ru;
	if (!reap_within(pid, ms, &st, &ru)) {
		double cpu = child_cpu_s(pid);
		kill(pid, SIGKILL);
		reap_within(pid, 5000, &st, &ru);
		fail_msg("%s: the child did not end within %d ms (%.2f s of "
		         "CPU used)",
		         what, (int)ms, cpu);
	}
	return st;
}

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
	test_pid = getpid();
	return cancel_signal_prepare();
}

/* ------------------------------------------------------------------ */
/* 7. fork while another thread holds the callback-graph mutex        */
/* ------------------------------------------------------------------ */
/*
 * A callback that unregisters itself records itself under the library's
 * callback-graph mutex. The thread doing that is armed (hold_unlock): its
 * first pthread_mutex_unlock, the graph mutex's, waits until the test has
 * forked, or until the forking thread is blocked (a fork handler waiting
 * for that very mutex).
 */
typedef int (*unlock_fn)(pthread_mutex_t *);
static unlock_fn real_unlock;
static _Thread_local int hold_unlock;
static int holding, fork_begun, forked;
static pid_t forker_tid;

__attribute__((constructor)) static void
find_real_unlock(void)
{
	real_unlock = (unlock_fn)dlsym(RTLD_NEXT, "pthread_mutex_unlock");
}

int
pthread_mutex_unlock(pthread_mutex_t *mu)
{
	if (hold_unlock) {
		hold_unlock = 0;
		st_release(&holding, 1);
		while (!ld_acquire(&forked)) {
			if (ld_acquire(&fork_begun) &&
			    lt_thread_syscall(forker_tid) == SYS_futex)
				break;
			sched_yield();
		}
	}
	return real_unlock(mu);
}

static int a7_unregistered, a7_missed;

static void
self_unregister_held(void *arg)
{
	struct cancel_callback *cb = arg;
	hold_unlock = 1;
	bool r = cancel_callback_unregister(cb);
	if (hold_unlock) {
		/* No pthread mutex on this path: nothing to hold. */
		hold_unlock = 0;
		st_release(&a7_missed, 1);
	}
	st_relaxed(&a7_unregistered, r ? 2 : 1);
}

static void *
cancel_main(void *arg)
{
	cancel_source_cancel(arg);
	return NULL;
}

static void
self_unregister(void *arg)
{
	cancel_callback_unregister(arg);
}

/* The child: a self-unregister must not deadlock. */
static void
child_self_unregister(void)
{
	alarm(5);
	struct cancel_source *s = lt_new_source();
	struct cancel_callback *cb = lt_new_callback();
	CHILD_CHECK(cancel_callback_register(cb, self_unregister, cb,
	                                     cancel_source_token(s)));
	CHILD_CHECK(cancel_source_cancel(s));
	CHILD_CHECK(!cancel_callback_unregister(cb));
	free(cb);
	CHILD_CHECK(cancel_source_destroy(s) == 0);
	free(s);
	_exit(0);
}

static void
child_forked_while_graph_mutex_held_can_self_unregister(void **state)
{
	(void)state;
	st_relaxed(&holding, 0);
	st_relaxed(&fork_begun, 0);
	st_relaxed(&forked, 0);
	st_relaxed(&a7_missed, 0);
	st_relaxed(&a7_unregistered, 0);
	forker_tid = lt_gettid();
	struct cancel_source *src = lt_new_source();
	struct cancel_callback *cb = lt_new_callback();
	assert_true(cancel_callback_register(cb, self_unregister_held, cb,
	                                     cancel_source_token(src)));
	struct lt_thread ta;
	lt_start(&ta, cancel_main, src);
	uint64_t start = tu_now_ms();
	while (!ld_acquire(&holding) && !ld_acquire(&a7_missed)) {
		if (tu_now_ms() - start > 5000)
			fail_msg("the self-unregister never took a mutex");
		sched_yield();
	}
	if (ld_acquire(&a7_missed))
		print_message("note: no pthread mutex on the self-unregister "
		              "path; the fork is not forced\n");

	st_release(&fork_begun, 1);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		child_self_unregister();
	st_release(&forked, 1);
	int st = reap_or_fail(pid, 10000, "self-unregister in the child");
	LT_JOIN(&ta, 5000, "the cancel");
	if (WIFSIGNALED(st))
		fail_msg("the child was killed by signal %d (%s)",
		         WTERMSIG(st),
		         WTERMSIG(st) == SIGALRM ? "deadlocked: 5 s alarm"
		                                 : "crash");
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
	assert_int_equal(ld_acquire(&a7_unregistered), 1); /* false */
	assert_false(cancel_callback_unregister(cb));
	lt_release(cb, sizeof(*cb));
	assert_int_equal(cancel_source_destroy(src), 0);
	lt_release(src, sizeof(*src));
}

/* ------------------------------------------------------------------ */
/* 8. fork from a callback on the library thread                      */
/* ------------------------------------------------------------------ */

static pid_t f8_pid;
static int f8_forked;

static void
fork_in_callback(void *arg)
{
	(void)arg;
	pid_t pid = fork();
	if (pid == 0)
		return; /* the child: back into the library thread's loop */
	st_relaxed(&f8_pid, pid);
	st_release(&f8_forked, 1);
}

static void
child_forked_from_library_thread_exits_without_spinning(void **state)
{
	(void)state;
	st_relaxed(&f8_forked, 0);
	struct cancel_source *src = lt_new_source();
	struct cancel_callback *cb = lt_new_callback();
	assert_true(cancel_callback_register(cb, fork_in_callback, NULL,
	                                     cancel_source_token(src)));
	assert_int_equal(cancel_source_cancel_after(src, 1000), 0);
	if (!lt_await_within(&f8_forked, 5000))
		fail_msg("the timer callback never forked");
	pid_t pid = ld_relaxed(&f8_pid);
	assert_true(pid > 0);

	int st = 0;
	struct rusage ru;
	if (!reap_within(pid, 5000, &st, &ru)) {
		double cpu = child_cpu_s(pid);
		kill(pid, SIGKILL);
		reap_within(pid, 5000, &st, &ru);
		fail_msg("the child forked from the library thread did not "
		         "exit within 5 s (%.2f s of CPU used: %s)",
		         cpu, cpu > 1.0 ? "spinning" : "stuck");
	}
	if (WIFSIGNALED(st))
		fail_msg("the child was killed by signal %d", WTERMSIG(st));
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
	double cpu = (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
	             (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
	if (cpu >= 0.5)
		fail_msg("the child used %.2f s of CPU", cpu);

	assert_int_equal(cancel_wait(NULL, cancel_source_token(src)),
	                 ECANCELED);
	assert_false(cancel_callback_unregister(cb));
	lt_release(cb, sizeof(*cb));
	assert_int_equal(cancel_source_destroy(src), 0);
	lt_release(src, sizeof(*src));
}

/* ------------------------------------------------------------------ */
/* 9. A child's cancel never wakes the parent's fd                    */
/* ------------------------------------------------------------------ */

enum waitcall { WC_POLL, WC_READ, WC_WAITPID };

/* Exit codes of the runner (the process that plays "parent"). */
#define RUN_OK 0
#define RUN_CANCELED_HERE 2  /* the parent's token reads canceled */
#define RUN_RESULT 3         /* not ETIMEDOUT */
#define RUN_EARLY 4          /* returned before its deadline */
#define RUN_LATE 5           /* 3 s or more */
#define RUN_CPU 6            /* 100 ms of CPU or more */

static long
thread_cpu_us(void)
{
	struct rusage ru;
	getrusage(RUSAGE_THREAD, &ru);
	return (long)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000 +
	       (long)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

/*
 * The runner: a source with a token fd and cancel_on_signal(SIGUSR1);
 * a child raises SIGUSR1 (canceling its copy) and exits; then @which waits
 * 300 ms on the token. Never returns.
 */
static void
runner(enum waitcall which)
{
	alarm(60); /* backstop; the test kills us much sooner */
	struct cancel_source *src = lt_new_source();
	cancel_token tok = cancel_source_token(src);
	int fd;
	CHILD_CHECK(cancel_token_fd(tok, &fd) == 0);
	struct sigaction old;
	CHILD_CHECK(sigaction(SIGUSR1, NULL, &old) == 0);
	CHILD_CHECK(cancel_source_cancel_on_signal(src, SIGUSR1) == 0);

	pid_t c = fork();
	CHILD_CHECK(c >= 0);
	if (c == 0) {
		raise(SIGUSR1); /* cancels the child's copy */
		/* TSan runs the handler at a later intercepted call. */
		for (int i = 0; i < 2000 && !cancel_token_is_canceled(tok);
		     i++)
			tu_nap();
		_exit(cancel_token_is_canceled(tok) ? 0 : 1);
	}
	int st;
	while (waitpid(c, &st, 0) < 0)
		CHILD_CHECK(errno == EINTR);
	CHILD_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	if (cancel_token_is_canceled(tok))
		_exit(RUN_CANCELED_HERE);

	int pfd[2] = {-1, -1};
	pid_t z = -1;
	if (which == WC_READ)
		CHILD_CHECK(pipe2(pfd, O_CLOEXEC) == 0);
	if (which == WC_WAITPID) {
		z = fork();
		CHILD_CHECK(z >= 0);
		if (z == 0) {
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			alarm(30);
			for (;;)
				pause();
		}
	}
	long cpu0 = thread_cpu_us();
	uint64_t t0 = tu_now_ns();
	struct timespec dl = cancel_deadline_in(300 * MS);
	int rc = -1;
	switch (which) {
	case WC_POLL:
		rc = cancel_poll(NULL, 0, &dl, tok);
		break;
	case WC_READ: {
		char b;
		size_t done;
		rc = cancel_read(pfd[0], &b, 1, &done, &dl, tok);
		break;
	}
	case WC_WAITPID:
		rc = cancel_waitpid(z, NULL, &dl, tok);
		break;
	}
	uint64_t took = tu_now_ns() - t0;
	long cpu = thread_cpu_us() - cpu0;
	if (z > 0) {
		kill(z, SIGKILL);
		while (waitpid(z, &st, 0) < 0 && errno == EINTR)
			;
	}
	if (rc != ETIMEDOUT)
		_exit(RUN_RESULT);
	if (took < 300 * MS)
		_exit(RUN_EARLY);
	if (took >= 3000 * MS)
		_exit(RUN_LATE);
	if (cpu >= 100000)
		_exit(RUN_CPU);
	if (cancel_token_is_canceled(tok))
		_exit(RUN_CANCELED_HERE);
	CHILD_CHECK(sigaction(SIGUSR1, &old, NULL) == 0);
	CHILD_CHECK(cancel_source_destroy(src) == 0);
	free(src);
	if (pfd[0] >= 0) {
		close(pfd[0]);
		close(pfd[1]);
	}
	_exit(RUN_OK);
}

static void
child_cancel_leaves_parent_wait(enum waitcall which, const char *name)
{
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		runner(which);
	int st = 0;
	struct rusage ru;
	if (!reap_within(pid, 8000, &st, &ru)) {
		double cpu = child_cpu_s(pid);
		kill(pid, SIGKILL);
		reap_within(pid, 5000, &st, &ru);
		fail_msg("%s with a 300 ms deadline had not returned after "
		         "8 s (%.2f s of CPU: %s)",
		         name, cpu, cpu > 1.0 ? "spinning" : "blocked");
	}
	if (WIFSIGNALED(st))
		fail_msg("%s: the runner was killed by signal %d", name,
		         WTERMSIG(st));
	assert_true(WIFEXITED(st));
	switch (WEXITSTATUS(st)) {
	case RUN_OK:
		return;
	case RUN_CANCELED_HERE:
		fail_msg("%s: the child's cancel canceled the parent", name);
		return;
	case RUN_RESULT:
		fail_msg("%s: did not return ETIMEDOUT", name);
		return;
	case RUN_EARLY:
		fail_msg("%s: returned before its deadline", name);
		return;
	case RUN_LATE:
		fail_msg("%s: returned 3 s or more after its start", name);
		return;
	case RUN_CPU:
		fail_msg("%s: used 100 ms of CPU or more (spinning)", name);
		return;
	default:
		fail_msg("%s: runner check failed (exit %d)", name,
		         WEXITSTATUS(st));
	}
}

static void
child_cancel_does_not_wake_parent_cancel_poll(void **state)
{
	(void)state;
	child_cancel_leaves_parent_wait(WC_POLL, "cancel_poll");
}

static void
child_cancel_does_not_wake_parent_cancel_read(void **state)
{
	(void)state;
	child_cancel_leaves_parent_wait(WC_READ, "cancel_read");
}

static void
child_cancel_does_not_wake_parent_cancel_waitpid(void **state)
{
	(void)state;
	child_cancel_leaves_parent_wait(WC_WAITPID, "cancel_waitpid");
}

int
main(int argc, char **argv)
{
	struct CMUnitTest tests[] = {
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
		T(child_forked_while_graph_mutex_held_can_self_unregister),
		T(child_forked_from_library_thread_exits_without_spinning),
		T(child_cancel_does_not_wake_parent_cancel_poll),
		T(child_cancel_does_not_wake_parent_cancel_read),
		T(child_cancel_does_not_wake_parent_cancel_waitpid),
#undef T
	};
	size_t n = lt_filter(tests, sizeof(tests) / sizeof(tests[0]), argc,
	                     argv);
	return _cmocka_run_group_tests("lifetime_fork", tests, n, group_setup,
	                               NULL);
}
