/*
 * cancel_waitpid without pidfd_open (kernels before 5.3): the library's
 * syscall() is interposed so SYS_pidfd_open answers ENOSYS (or another
 * error chosen by the test), and the portable backoff path must reap,
 * time out and be canceled like the pidfd path.
 */
/* ctest: TIMING */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dlfcn.h>
#include <errno.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cancel.h"
#include "internal.h"
#include "testutil.h"

/* The error SYS_pidfd_open gives (0: the real call). */
static int pidfd_errno = ENOSYS;
static int pidfd_calls;
/* With ESRCH: release (a byte on this pipe) and reap this child first, as
 * another thread reaping it between the library's check and pidfd_open
 * would. */
static pid_t esrch_pid;
static int esrch_go = -1;

long
syscall(long nr, ...)
{
	va_list ap;
	va_start(ap, nr);
	long a[6];
	for (int i = 0; i < 6; i++)
		a[i] = va_arg(ap, long);
	va_end(ap);
#ifdef SYS_pidfd_open
	if (nr == SYS_pidfd_open) {
		__atomic_fetch_add(&pidfd_calls, 1, __ATOMIC_RELAXED);
		int e = __atomic_load_n(&pidfd_errno, __ATOMIC_RELAXED);
		if (e == ESRCH && esrch_pid > 0) {
			char b = 1;
			ssize_t n = write(esrch_go, &b, 1);
			(void)n;
			while (waitpid(esrch_pid, NULL, 0) < 0 &&
			       errno == EINTR)
				;
		}
		if (e != 0) {
			errno = e;
			return -1;
		}
	}
#endif
	static long (*real)(long, ...);
	if (real == NULL)
		*(void **)&real = dlsym(RTLD_NEXT, "syscall");
	return real(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
}

/* A child that exits with @code once a byte arrives on the pipe. */
static pid_t
spawn_child(int code, int *go)
{
	int p[2];
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		char b;
		close(p[1]);
		while (read(p[0], &b, 1) < 0 && errno == EINTR)
			;
		_exit(code);
	}
	close(p[0]);
	*go = p[1];
	return pid;
}

struct release {
	int go;
	uint64_t after_ns;
};

static void *
release_later(void *arg)
{
	struct release *r = arg;
	struct timespec ts = {0, (long)r->after_ns};
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
	char b = 1;
	ssize_t n = write(r->go, &b, 1);
	(void)n;
	return NULL;
}

static void
without_pidfd_open_a_child_exiting_later_is_reaped(void **state)
{
	(void)state;
	pidfd_errno = ENOSYS;
	int calls0 = pidfd_calls;
	int fds0 = tu_fd_count();
	struct cancel_source *src = malloc(sizeof(*src));
	assert_non_null(src);
	cancel_source_init(src);
	struct release r;
	pid_t pid = spawn_child(7, &r.go);
	/* Long enough for several backoff steps (1, 2, 4, 8 ms...). */
	r.after_ns = 30000000;
	pthread_t t = tu_spawn(release_later, &r);
	int st = 0;
	struct timespec dl = cancel_deadline_in(10000000000ull);
	uint64_t t0 = tu_now_ns();
	assert_int_equal(cancel_waitpid(pid, &st, &dl,
	                                 cancel_source_token(src)), 0);
	uint64_t took = tu_now_ns() - t0;
	tu_join(t);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 7);
	assert_true(pidfd_calls > calls0); /* the fallback was taken */
	assert_true(took >= 25000000 && took < 5000000000ull);
	close(r.go);
	assert_int_equal(cancel_source_destroy(src), 0);
	free(src);
	assert_int_equal(tu_fd_count(), fds0);
}

static void
without_pidfd_open_the_deadline_passes(void **state)
{
	(void)state;
	pidfd_errno = ENOSYS;
	int go;
	pid_t pid = spawn_child(3, &go);
	int st = 0;
	struct timespec dl = cancel_deadline_in(40000000);
	uint64_t t0 = tu_now_ns();
	assert_int_equal(cancel_waitpid(pid, &st, &dl, CANCEL_TOKEN_NONE),
	                 ETIMEDOUT);
	uint64_t took = tu_now_ns() - t0;
	assert_true(took >= 39000000 && took < 3000000000ull);
	/* A deadline already past: at once, still ETIMEDOUT. */
	dl = cancel_deadline_in(0);
	assert_int_equal(cancel_waitpid(pid, &st, &dl, CANCEL_TOKEN_NONE),
	                 ETIMEDOUT);
	close(go);
	assert_int_equal(cancel_waitpid(pid, &st, NULL, CANCEL_TOKEN_NONE), 0);
	assert_int_equal(WEXITSTATUS(st), 3);
}

static void
without_pidfd_open_a_cancel_wakes_the_backoff(void **state)
{
	(void)state;
	pidfd_errno = ENOSYS;
	struct cancel_source *src = malloc(sizeof(*src));
	assert_non_null(src);
	cancel_source_init(src);
	int go;
	pid_t pid = spawn_child(5, &go);
	/* t0 first: arming may start the library thread, slow under
	 * valgrind. */
	uint64_t t0 = tu_now_ns();
	assert_int_equal(cancel_source_cancel_after(src, 30000000), 0);
	int st = 0;
	assert_int_equal(cancel_waitpid(pid, &st, NULL,
	                                 cancel_source_token(src)), ECANCELED);
	uint64_t took = tu_now_ns() - t0;
	assert_true(took >= 25000000 && took < 3000000000ull);
	assert_int_equal(cancel_source_destroy(src), 0);
	free(src);
	close(go);
	assert_int_equal(cancel_waitpid(pid, &st, NULL, CANCEL_TOKEN_NONE), 0);
	assert_int_equal(WEXITSTATUS(st), 5);
}

static void
pidfd_open_errors_other_than_enosys_are_returned(void **state)
{
	(void)state;
	int go;
	pid_t pid = spawn_child(0, &go);
	int st = 0;
	pidfd_errno = EPERM;
	assert_int_equal(cancel_waitpid(pid, &st, NULL, CANCEL_TOKEN_NONE),
	                 EPERM);
	pidfd_errno = EMFILE;
	errno = 1234;
	assert_int_equal(cancel_waitpid(pid, &st, NULL, CANCEL_TOKEN_NONE),
	                 EMFILE);
	assert_int_equal(errno, 1234);
	pidfd_errno = ENOSYS;
	close(go);
	assert_int_equal(cancel_waitpid(pid, &st, NULL, CANCEL_TOKEN_NONE), 0);
	assert_int_equal(WEXITSTATUS(st), 0);
}

static void
a_child_reaped_elsewhere_before_pidfd_open_gives_echild(void **state)
{
	(void)state;
	int go;
	pid_t pid = spawn_child(0, &go);
	esrch_pid = pid;
	esrch_go = go;
	pidfd_errno = ESRCH;
	int st = 0;
	assert_int_equal(cancel_waitpid(pid, &st, NULL, CANCEL_TOKEN_NONE),
	                 ECHILD);
	pidfd_errno = ENOSYS;
	esrch_pid = 0;
	esrch_go = -1;
	close(go);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(without_pidfd_open_a_child_exiting_later_is_reaped),
		cmocka_unit_test(without_pidfd_open_the_deadline_passes),
		cmocka_unit_test(without_pidfd_open_a_cancel_wakes_the_backoff),
		cmocka_unit_test(pidfd_open_errors_other_than_enosys_are_returned),
		cmocka_unit_test(a_child_reaped_elsewhere_before_pidfd_open_gives_echild),
	};
	return cmocka_run_group_tests_name("waitpid_fallback", tests, NULL,
	                                   NULL);
}
