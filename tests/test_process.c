/*
 * cancel_process_spawn and cancel_process_wait: real children (sh, sleep),
 * real signals. The wait tests run twice: with pidfds, and with
 * pidfd_open forced to fail with ENOSYS (the polling, kill() fallback).
 * Every test checks the child is reaped and the descriptor table is as it
 * was; sources live on the heap and are freed right after destroy.
 */
/* ctest: TIMING TIMEOUT 180 LABELS process */
#include "testutil.h"

#include <poll.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>

#define MS 1000000ull

enum mode { PIDFD, FALLBACK };
static enum mode mode_pidfd = PIDFD;
static enum mode mode_fallback = FALLBACK;

static int
setup_mode(void **state)
{
	cancel__test_pidfd_enosys(*state != NULL &&
	                          *(enum mode *)*state == FALLBACK);
	return tu_fds_setup(state);
}

static int
teardown_mode(void **state)
{
	cancel__test_pidfd_enosys(false);
	return tu_fds_check(state);
}

/* ------------------------------------------------------------------ */
/* helpers                                                            */
/* ------------------------------------------------------------------ */

static struct cancel_source *
new_source(void)
{
	struct cancel_source *src = calloc(1, sizeof(*src));
	assert_non_null(src);
	cancel_source_init(src);
	return src;
}

/* Destroy and free at once, so a later access is a use-after-free. */
static void
free_source(struct cancel_source *src)
{
	assert_int_equal(cancel_source_destroy(src), 0);
	free(src);
}

/* The child is gone from the process table: nothing left to reap. */
static void
assert_reaped(pid_t pid)
{
	errno = 0;
	assert_int_equal(waitpid(pid, NULL, WNOHANG), -1);
	assert_int_equal(errno, ECHILD);
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	FILE *f = fopen(path, "r");
	if (f != NULL) {
		/* The number was reused already: it must not be a zombie
		 * of ours (checked above), nothing more to say. */
		fclose(f);
	}
}

/*
 * Spawn /bin/sh -c @script with @flags. With @out, the child's stdout is
 * a pipe whose read end goes to *@out.
 */
static pid_t
spawn_sh(const char *script, unsigned flags, int *out)
{
	char *argv[] = { "sh", "-c", (char *)script, NULL };
	posix_spawn_file_actions_t fa;
	posix_spawn_file_actions_t *fap = NULL;
	int p[2] = { -1, -1 };
	if (out != NULL) {
		assert_int_equal(pipe2(p, O_CLOEXEC), 0);
		assert_int_equal(posix_spawn_file_actions_init(&fa), 0);
		assert_int_equal(posix_spawn_file_actions_adddup2(&fa, p[1], 1),
		                 0);
		fap = &fa;
	}
	pid_t pid = -1;
	assert_int_equal(
	    cancel_process_spawn(&pid, "/bin/sh", argv, NULL, fap, flags), 0);
	assert_true(pid > 0);
	if (out != NULL) {
		posix_spawn_file_actions_destroy(&fa);
		close(p[1]);
		*out = p[0];
	}
	return pid;
}

/* Read one line from @fd (10 s at most) into @buf, newline removed. */
static void
read_line(int fd, char *buf, size_t len)
{
	size_t n = 0;
	uint64_t end = tu_now_ms() + 10000;
	while (n + 1 < len) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		uint64_t now = tu_now_ms();
		assert_true(now < end);
		int r = poll(&p, 1, (int)(end - now));
		assert_true(r >= 0 || errno == EINTR);
		if (r <= 0)
			continue;
		char c;
		ssize_t k = read(fd, &c, 1);
		assert_int_equal(k, 1);
		if (c == '\n')
			break;
		buf[n++] = c;
	}
	buf[n] = '\0';
}

/* Cancel @src once a thread is blocked in a wait on it (nested count). */
struct canceler {
	struct cancel_source *src;
	pthread_t thread;
};

static void *
canceler_main(void *arg)
{
	struct canceler *c = arg;
	tu_await_waiters(c->src, 2);
	cancel_source_cancel(c->src);
	return NULL;
}

static void
canceler_start(struct canceler *c, struct cancel_source *src)
{
	c->src = src;
	c->thread = tu_spawn(canceler_main, c);
}

/* ------------------------------------------------------------------ */
/* the child ends on its own                                          */
/* ------------------------------------------------------------------ */

static void
wait_returns_status_of_child_that_exits_first(void **state)
{
	(void)state;
	struct cancel_source *src = new_source();
	pid_t pid = spawn_sh("exit 7", 0, NULL);
	int status = -1;
	errno = EDOM;
	assert_int_equal(cancel_process_wait(pid, &status, 0, NULL,
	                                     cancel_source_token(src)),
	                 0);
	assert_int_equal(errno, EDOM);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 7);
	assert_reaped(pid);
	assert_false(cancel_token_is_canceled(cancel_source_token(src)));
	free_source(src);
}

struct closer {
	struct cancel_source *src;
	int fd;
};

static void *
closer_main(void *arg)
{
	struct closer *c = arg;
	tu_await_waiters(c->src, 2);
	close(c->fd);
	return NULL;
}

/* Spawn `sh -c @script` reading a pipe as its stdin; its write end in
 * *@in (close-on-exec). */
static pid_t
spawn_reader(const char *script, int *in)
{
	int p[2];
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	posix_spawn_file_actions_t fa;
	assert_int_equal(posix_spawn_file_actions_init(&fa), 0);
	assert_int_equal(posix_spawn_file_actions_adddup2(&fa, p[0], 0), 0);
	char *argv[] = { "sh", "-c", (char *)script, NULL };
	pid_t pid;
	assert_int_equal(
	    cancel_process_spawn(&pid, "/bin/sh", argv, NULL, &fa, 0), 0);
	posix_spawn_file_actions_destroy(&fa);
	close(p[0]);
	*in = p[1];
	return pid;
}

/* The wait is blocked when the child exits: woken by the exit. */
static void
wait_wakes_when_blocked_child_exits(void **state)
{
	(void)state;
	struct cancel_source *src = new_source();
	int in;
	pid_t pid = spawn_reader("read x; exit 5", &in);
	struct closer c = { .src = src, .fd = in };
	pthread_t t = tu_spawn(closer_main, &c);
	int status = -1;
	assert_int_equal(cancel_process_wait(pid, &status, 0, NULL,
	                                     cancel_source_token(src)),
	                 0);
	tu_join(t);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 5);
	assert_reaped(pid);
	free_source(src);
}

/*
 * Room for one more descriptor only: the wait's pidfd takes it, the
 * token's own descriptor (for polling the pidfd with the token) cannot be
 * made. The wait does not fail for that: it checks the child at growing
 * intervals, still woken by the token, and reaps it when it exits.
 */
static void
wait_without_a_descriptor_for_the_token_polls_the_child(void **state)
{
	(void)state;
	struct cancel_source *src = new_source();
	int in;
	pid_t pid = spawn_reader("read x; exit 6", &in);
	struct rlimit old, one;
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
	one = old;
	one.rlim_cur = (rlim_t)tu_lowest_free_fd() + 1;
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &one), 0);
	/* Closed once the wait counts twice on src: in the interval's
	 * cancel_wait (a cancel_poll could not count, it has no fd). */
	struct closer c = { .src = src, .fd = in };
	pthread_t t = tu_spawn(closer_main, &c);
	int status = -1;
	int rc = cancel_process_wait(pid, &status, 0, NULL,
	                             cancel_source_token(src));
	tu_join(t);
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
	assert_int_equal(rc, 0);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 6);
	assert_reaped(pid);
	free_source(src);
}

/* Canceled, but the child had exited before anything was sent: 0. */
static void
wait_on_exited_child_returns_zero_even_if_canceled(void **state)
{
	(void)state;
	struct cancel_source *src = new_source();
	int out;
	pid_t pid = spawn_sh("echo bye; exit 3", 0, &out);
	char line[32];
	read_line(out, line, sizeof(line));
	/* EOF: the child's stdout closed, it is exiting. Wait for the
	 * zombie without reaping it. */
	siginfo_t si;
	assert_int_equal(waitid(P_PID, (id_t)pid, &si, WEXITED | WNOWAIT), 0);
	close(out);
	cancel_source_cancel(src);
	int status = -1;
	assert_int_equal(cancel_process_wait(pid, &status, CANCEL_NEVER, NULL,
	                                     cancel_source_token(src)),
	                 0);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 3);
	assert_reaped(pid);
	free_source(src);
}

/* ------------------------------------------------------------------ */
/* cancel and deadline stop the child                                 */
/* ------------------------------------------------------------------ */

static void
cancel_stops_child_with_sigterm_within_grace(void **state)
{
	(void)state;
	struct cancel_source *src = new_source();
	char *argv[] = { "sleep", "30", NULL };
	pid_t pid;
	assert_int_equal(cancel_process_spawn(&pid, "sleep", argv, NULL, NULL,
	                                      CANCEL_SPAWN_SEARCH_PATH),
	                 0);
	struct canceler c;
	canceler_start(&c, src);
	int status = -1;
	uint64_t t0 = tu_now_ns();
	errno = EDOM;
	int rc = cancel_process_wait(pid, &status, 10000 * MS, NULL,
	                             cancel_source_token(src));
	uint64_t took = tu_now_ns() - t0;
	tu_join(c.thread);
	assert_int_equal(rc, ECANCELED);
	assert_int_equal(errno, EDOM);
	assert_true(WIFSIGNALED(status));
	assert_int_equal(WTERMSIG(status), SIGTERM);
	assert_true(took < 5000 * MS); /* well inside the 10 s grace */
	assert_reaped(pid);
	free_source(src);
}

static void
ignored_sigterm_gets_sigkill_after_grace(void **state)
{
	(void)state;
	struct cancel_source *src = new_source();
	int out;
	pid_t pid = spawn_sh("trap '' TERM; echo ready; exec sleep 30", 0,
	                     &out);
	char line[32];
	read_line(out, line, sizeof(line));
	assert_string_equal(line, "ready");
	cancel_source_cancel(src); /* already canceled: stop at once */
	int status = -1;
	uint64_t t0 = tu_now_ns();
	int rc = cancel_process_wait(pid, &status, 300 * MS, NULL,
	                             cancel_source_token(src));
	uint64_t took = tu_now_ns() - t0;
	assert_int_equal(rc, ECANCELED);
	assert_true(WIFSIGNALED(status));
	assert_int_equal(WTERMSIG(status), SIGKILL);
	assert_true(took >= 300 * MS);
	assert_true(took < 3000 * MS);
	assert_reaped(pid);
	close(out);
	free_source(src);
}

static void
deadline_stops_child_with_etimedout(void **state)
{
	(void)state;
	pid_t pid = spawn_sh("exec sleep 30", 0, NULL);
	struct timespec dl = cancel_deadline_in(200 * MS);
	int status = -1;
	uint64_t t0 = tu_now_ns();
	int rc = cancel_process_wait(pid, &status, 5000 * MS, &dl,
	                             CANCEL_TOKEN_NONE);
	uint64_t took = tu_now_ns() - t0;
	assert_int_equal(rc, ETIMEDOUT);
	assert_true(WIFSIGNALED(status));
	assert_int_equal(WTERMSIG(status), SIGTERM);
	assert_true(took >= 200 * MS);
	assert_true(took < 3000 * MS);
	assert_reaped(pid);
}

/* A cancel arriving during the grace of a deadline changes nothing. */
static void
cancel_during_grace_does_not_shorten_it(void **state)
{
	(void)state;
	struct cancel_source *src = new_source();
	int out;
	pid_t pid = spawn_sh("trap '' TERM; echo ready; exec sleep 30", 0,
	                     &out);
	char line[32];
	read_line(out, line, sizeof(line));
	struct timespec dl = cancel_deadline_in(100 * MS);
	/* Fires 200 ms into the 600 ms grace. */
	assert_int_equal(cancel_source_cancel_after(src, 300 * MS), 0);
	int status = -1;
	uint64_t t0 = tu_now_ns();
	int rc = cancel_process_wait(pid, &status, 600 * MS, &dl,
	                             cancel_source_token(src));
	uint64_t took = tu_now_ns() - t0;
	assert_int_equal(rc, ETIMEDOUT);
	assert_true(cancel_token_is_canceled(cancel_source_token(src)));
	assert_true(WIFSIGNALED(status));
	assert_int_equal(WTERMSIG(status), SIGKILL);
	assert_true(took >= 700 * MS);
	assert_true(took < 4000 * MS);
	assert_reaped(pid);
	close(out);
	free_source(src);
}

/* SIGCONT follows SIGTERM: a stopped child acts on it at once. */
static void
stopped_child_is_continued_and_terminated(void **state)
{
	(void)state;
	pid_t pid = spawn_sh("kill -STOP $$; exec sleep 30", 0, NULL);
	siginfo_t si;
	assert_int_equal(
	    waitid(P_PID, (id_t)pid, &si, WSTOPPED | WNOWAIT), 0);
	struct timespec past = cancel_deadline_in(0);
	int status = -1;
	uint64_t t0 = tu_now_ns();
	int rc = cancel_process_wait(pid, &status, 10000 * MS, &past,
	                             CANCEL_TOKEN_NONE);
	uint64_t took = tu_now_ns() - t0;
	assert_int_equal(rc, ETIMEDOUT);
	assert_true(WIFSIGNALED(status));
	assert_int_equal(WTERMSIG(status), SIGTERM);
	assert_true(took < 5000 * MS);
	assert_reaped(pid);
}

/* ------------------------------------------------------------------ */
/* process groups                                                     */
/* ------------------------------------------------------------------ */

/* Read the grandchild's pid and its "ready" line, in either order. */
static pid_t
read_grandchild(int out)
{
	pid_t g = -1;
	bool ready = false;
	while (g < 0 || !ready) {
		char line[32];
		read_line(out, line, sizeof(line));
		if (strcmp(line, "ready") == 0)
			ready = true;
		else
			g = (pid_t)atoi(line);
	}
	assert_true(g > 0);
	return g;
}

static void
group_mode_kills_grandchild_that_ignores_sigterm(void **state)
{
	(void)state;
	/* Orphans come to us, so the grandchild's end can be reaped and
	 * seen. */
	assert_int_equal(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
	struct cancel_source *src = new_source();
	int out;
	pid_t pid = spawn_sh("(trap '' TERM; echo ready; exec sleep 30) & "
	                     "echo $!; wait",
	                     CANCEL_SPAWN_NEW_GROUP, &out);
	assert_int_equal(getpgid(pid), pid);
	pid_t g = read_grandchild(out);
	assert_int_equal(getpgid(g), pid);
	struct canceler c;
	canceler_start(&c, src);
	int status = -1;
	uint64_t t0 = tu_now_ns();
	int rc = cancel_process_wait(pid, &status, 10000 * MS, NULL,
	                             cancel_source_token(src));
	uint64_t took = tu_now_ns() - t0;
	tu_join(c.thread);
	assert_int_equal(rc, ECANCELED);
	/* sh died of SIGTERM at once: no grace for the grandchild. */
	assert_true(WIFSIGNALED(status));
	assert_int_equal(WTERMSIG(status), SIGTERM);
	assert_true(took < 5000 * MS);
	assert_reaped(pid);
	int gst = -1;
	assert_int_equal(waitpid(g, &gst, 0), g);
	assert_true(WIFSIGNALED(gst));
	assert_int_equal(WTERMSIG(gst), SIGKILL);
	assert_int_equal(prctl(PR_SET_CHILD_SUBREAPER, 0), 0);
	close(out);
	free_source(src);
}

/* Non-group mode: only the child is signaled; its grandchild lives on. */
static void
child_mode_signals_only_the_child(void **state)
{
	(void)state;
	assert_int_equal(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
	int out;
	pid_t pid = spawn_sh("(trap '' TERM; echo ready; exec sleep 30) & "
	                     "echo $!; wait",
	                     0, &out);
	pid_t g = read_grandchild(out);
	struct timespec past = cancel_deadline_in(0);
	int status = -1;
	assert_int_equal(cancel_process_wait(pid, &status, 10000 * MS, &past,
	                                     CANCEL_TOKEN_NONE),
	                 ETIMEDOUT);
	assert_int_equal(WTERMSIG(status), SIGTERM);
	assert_reaped(pid);
	assert_int_equal(kill(g, 0), 0);
	int gst;
	assert_int_equal(waitpid(g, &gst, WNOHANG), 0); /* still running */
	assert_int_equal(kill(g, SIGKILL), 0);
	assert_int_equal(waitpid(g, &gst, 0), g);
	assert_int_equal(prctl(PR_SET_CHILD_SUBREAPER, 0), 0);
	close(out);
}

/* A grandchild keeping the group alive does not keep the wait. */
static void
group_mode_wait_does_not_hang_on_grandchild(void **state)
{
	(void)state;
	assert_int_equal(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
	int out;
	pid_t pid = spawn_sh("sleep 30 & echo $!; echo ready",
	                     CANCEL_SPAWN_NEW_GROUP, &out);
	pid_t g = read_grandchild(out);
	int status = -1;
	uint64_t t0 = tu_now_ns();
	assert_int_equal(
	    cancel_process_wait(pid, &status, 0, NULL, CANCEL_TOKEN_NONE), 0);
	assert_true(tu_now_ns() - t0 < 5000 * MS);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	assert_reaped(pid);
	/* Exited on its own: its group is left alone. */
	int gst;
	assert_int_equal(waitpid(g, &gst, WNOHANG), 0);
	assert_int_equal(kill(g, SIGKILL), 0);
	assert_int_equal(waitpid(g, &gst, 0), g);
	assert_int_equal(prctl(PR_SET_CHILD_SUBREAPER, 0), 0);
	close(out);
}

/* ------------------------------------------------------------------ */
/* lifetime                                                           */
/* ------------------------------------------------------------------ */

struct waiter {
	pid_t pid;
	struct cancel_source *src;
	uint64_t grace;
	int rc;
	int status;
};

static void *
waiter_main(void *arg)
{
	struct waiter *w = arg;
	w->rc = cancel_process_wait(w->pid, &w->status, w->grace, NULL,
	                            cancel_source_token(w->src));
	return NULL;
}

/* The wait leaves the source before its grace: destroy does not wait. */
static void
destroy_during_grace_returns_before_grace_ends(void **state)
{
	(void)state;
	struct cancel_source *src = new_source();
	int out;
	pid_t pid = spawn_sh("trap '' TERM; echo ready; exec sleep 30", 0,
	                     &out);
	char line[32];
	read_line(out, line, sizeof(line));
	struct waiter w = { .pid = pid, .src = src, .grace = 2000 * MS };
	pthread_t t = tu_spawn(waiter_main, &w);
	tu_await_waiters(src, 2);
	uint64_t t0 = tu_now_ns();
	cancel_source_cancel(src);
	free_source(src); /* waits for the wait to leave, then it is gone */
	uint64_t took = tu_now_ns() - t0;
	assert_true(took < 1500 * MS);
	tu_join(t);
	assert_int_equal(w.rc, ECANCELED);
	assert_int_equal(WTERMSIG(w.status), SIGKILL);
	assert_reaped(pid);
	close(out);
}

/* ------------------------------------------------------------------ */
/* ECHILD and EINVAL                                                  */
/* ------------------------------------------------------------------ */

static void
wait_returns_echild_for_non_child(void **state)
{
	(void)state;
	int status = 1234;
	errno = EDOM;
	assert_int_equal(cancel_process_wait(getppid(), &status, 0, NULL,
	                                     CANCEL_TOKEN_NONE),
	                 ECHILD);
	assert_int_equal(cancel_process_wait(getpid(), &status, 0, NULL,
	                                     CANCEL_TOKEN_NONE),
	                 ECHILD);
	assert_int_equal(errno, EDOM);
	assert_int_equal(status, 1234);
}

static void
wait_returns_echild_when_sigchld_is_ignored(void **state)
{
	(void)state;
	struct sigaction old, ign;
	memset(&ign, 0, sizeof(ign));
	ign.sa_handler = SIG_IGN;
	sigemptyset(&ign.sa_mask);
	assert_int_equal(sigaction(SIGCHLD, &ign, &old), 0);
	pid_t pid = spawn_sh("exec sleep 30", 0, NULL);
	int status = 1234;
	assert_int_equal(
	    cancel_process_wait(pid, &status, 0, NULL, CANCEL_TOKEN_NONE),
	    ECHILD);
	assert_int_equal(status, 1234);
	kill(pid, SIGKILL); /* reaped by the kernel */
	assert_int_equal(sigaction(SIGCHLD, &old, NULL), 0);
}

static void
wait_rejects_bad_arguments(void **state)
{
	(void)state;
	int status = 1234;
	assert_int_equal(
	    cancel_process_wait(0, &status, 0, NULL, CANCEL_TOKEN_NONE),
	    EINVAL);
	assert_int_equal(
	    cancel_process_wait(-1, &status, 0, NULL, CANCEL_TOKEN_NONE),
	    EINVAL);
	pid_t pid = spawn_sh("exit 0", 0, NULL);
	struct timespec bad = { 0, 2000000000 };
	assert_int_equal(
	    cancel_process_wait(pid, &status, 0, &bad, CANCEL_TOKEN_NONE),
	    EINVAL);
	assert_int_equal(status, 1234);
	assert_int_equal(
	    cancel_process_wait(pid, NULL, 0, NULL, CANCEL_TOKEN_NONE), 0);
	assert_reaped(pid);
}

/* ------------------------------------------------------------------ */
/* spawn                                                              */
/* ------------------------------------------------------------------ */

static void
spawn_reports_enoent_and_eacces(void **state)
{
	(void)state;
	char *argv[] = { "x", NULL };
	pid_t pid = 4321;
	errno = EDOM;
	assert_int_equal(cancel_process_spawn(&pid, "/nonexistent/prog", argv,
	                                      NULL, NULL, 0),
	                 ENOENT);
	assert_int_equal(cancel_process_spawn(&pid, "no-such-program-cancel",
	                                      argv, NULL, NULL,
	                                      CANCEL_SPAWN_SEARCH_PATH),
	                 ENOENT);
	/* Without SEARCH_PATH a bare name is a path in the cwd. */
	assert_int_equal(
	    cancel_process_spawn(&pid, "sh", argv, NULL, NULL, 0), ENOENT);

	char path[] = "/tmp/cancel-noexec-XXXXXX";
	int fd = mkostemp(path, O_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "#!/bin/sh\nexit 0\n", 17), 17);
	close(fd);
	assert_int_equal(chmod(path, 0644), 0);
	assert_int_equal(
	    cancel_process_spawn(&pid, path, argv, NULL, NULL, 0), EACCES);
	unlink(path);
	assert_int_equal(errno, EDOM);
	assert_int_equal(pid, 4321); /* untouched on failure */
}

static void
spawn_rejects_bad_arguments(void **state)
{
	(void)state;
	char *argv[] = { "true", NULL };
	pid_t pid = 4321;
	assert_int_equal(
	    cancel_process_spawn(NULL, "/bin/true", argv, NULL, NULL, 0),
	    EINVAL);
	assert_int_equal(
	    cancel_process_spawn(&pid, NULL, argv, NULL, NULL, 0), EINVAL);
	assert_int_equal(
	    cancel_process_spawn(&pid, "/bin/true", NULL, NULL, NULL, 0),
	    EINVAL);
	assert_int_equal(
	    cancel_process_spawn(&pid, "/bin/true", argv, NULL, NULL, 4u),
	    EINVAL);
	assert_int_equal(pid, 4321);
}

static int
run_sh_status(const char *script, char *const envp[])
{
	char *argv[] = { "sh", "-c", (char *)script, NULL };
	pid_t pid;
	assert_int_equal(cancel_process_spawn(&pid, "sh", argv, envp, NULL,
	                                      CANCEL_SPAWN_SEARCH_PATH),
	                 0);
	int status = -1;
	assert_int_equal(
	    cancel_process_wait(pid, &status, 0, NULL, CANCEL_TOKEN_NONE), 0);
	assert_reaped(pid);
	return status;
}

static void
spawn_passes_environment(void **state)
{
	(void)state;
	char *envp[] = { "CANCEL_T=given", NULL };
	assert_int_equal(run_sh_status("test \"$CANCEL_T\" = given", envp), 0);
	assert_int_equal(setenv("CANCEL_T", "inherited", 1), 0);
	assert_int_equal(
	    run_sh_status("test \"$CANCEL_T\" = inherited", NULL), 0);
	unsetenv("CANCEL_T");
}

static void
spawn_respects_close_on_exec(void **state)
{
	(void)state;
	int keep = open("/dev/null", O_RDONLY);
	int drop = open("/dev/null", O_RDONLY | O_CLOEXEC);
	assert_true(keep >= 0 && drop >= 0);
	char script[128];
	snprintf(script, sizeof(script),
	         "test -e /proc/self/fd/%d && test ! -e /proc/self/fd/%d",
	         keep, drop);
	assert_int_equal(run_sh_status(script, NULL), 0);
	close(keep);
	close(drop);
}

static void
spawn_new_group_makes_child_a_group_leader(void **state)
{
	(void)state;
	pid_t pid = spawn_sh("exec sleep 30", CANCEL_SPAWN_NEW_GROUP, NULL);
	assert_int_equal(getpgid(pid), pid);
	assert_int_not_equal(getpgrp(), pid);
	struct timespec past = cancel_deadline_in(0);
	assert_int_equal(
	    cancel_process_wait(pid, NULL, 0, &past, CANCEL_TOKEN_NONE),
	    ETIMEDOUT);
	assert_reaped(pid);
}

/* The token's descriptor is readable right now. */
static bool
token_fd_readable(cancel_token tok)
{
	int fd;
	assert_int_equal(cancel_token_fd(tok, &fd), 0);
	struct pollfd p = { .fd = fd, .events = POLLIN };
	return poll(&p, 1, 0) == 1;
}

/*
 * libcancel's SIGUSR1 handler is installed and SIGUSR1 blocked in the
 * spawning thread: the child still dies of SIGUSR1's default action, and
 * the parent's source and its fd are untouched.
 */
static void
child_signal_does_not_reach_parent_source(void **state)
{
	(void)state;
	struct cancel_source *src = new_source();
	cancel_token tok = cancel_source_token(src);
	assert_false(token_fd_readable(tok));
	struct sigaction old;
	assert_int_equal(sigaction(SIGUSR1, NULL, &old), 0);
	assert_int_equal(cancel_source_cancel_on_signal(src, SIGUSR1), 0);
	sigset_t usr1, oldmask;
	sigemptyset(&usr1);
	sigaddset(&usr1, SIGUSR1);
	assert_int_equal(pthread_sigmask(SIG_BLOCK, &usr1, &oldmask), 0);

	pid_t pid = spawn_sh("kill -USR1 $$; exit 3", 0, NULL);
	int status = -1;
	assert_int_equal(cancel_process_wait(pid, &status, 0, NULL, tok), 0);
	assert_true(WIFSIGNALED(status));
	assert_int_equal(WTERMSIG(status), SIGUSR1);
	assert_reaped(pid);
	assert_false(cancel_token_is_canceled(tok));
	assert_false(token_fd_readable(tok));

	assert_int_equal(pthread_sigmask(SIG_SETMASK, &oldmask, NULL), 0);
	assert_int_equal(sigaction(SIGUSR1, &old, NULL), 0);
	free_source(src);
}

/* A signal the parent ignores is back at its default in the child. */
static void
ignored_signal_is_reset_in_child(void **state)
{
	(void)state;
	struct sigaction old, ign;
	memset(&ign, 0, sizeof(ign));
	ign.sa_handler = SIG_IGN;
	sigemptyset(&ign.sa_mask);
	assert_int_equal(sigaction(SIGUSR2, &ign, &old), 0);
	int status = run_sh_status("kill -USR2 $$; exit 3", NULL);
	assert_true(WIFSIGNALED(status));
	assert_int_equal(WTERMSIG(status), SIGUSR2);
	assert_int_equal(sigaction(SIGUSR2, &old, NULL), 0);
}

static void
pidfd_hook_forces_enosys(void **state)
{
	(void)state;
	int fd;
	cancel__test_pidfd_enosys(true);
	assert_int_equal(cancel__pidfd_open(getpid(), &fd), ENOSYS);
	assert_int_equal(fd, -1);
	cancel__test_pidfd_enosys(false);
	int rc = cancel__pidfd_open(getpid(), &fd);
	if (rc == 0)
		close(fd);
	else
		assert_int_equal(rc, ENOSYS); /* a kernel without pidfds */
}


/*
 * Signals raining on children between the fork-like step and exec. The
 * helper (this program, re-run with "storm-helper" in a group of its own)
 * installs libcancel's SIGUSR1 handler on a source, blocks SIGUSR1 in its
 * own threads, and spawns children while a thread sends SIGUSR1 to the
 * whole group. A child that ran the handler before exec would cancel the
 * helper's source (a vfork-like child shares its memory) or write its fd
 * (a fork-like one shares the descriptor): neither may happen.
 */
#define STORM_SPAWNS 300

static int storm_done;

static void *
storm_main(void *arg)
{
	(void)arg;
	while (!ld_acquire(&storm_done))
		kill(0, SIGUSR1);
	return NULL;
}

static int
storm_helper(void)
{
	static struct cancel_source src = CANCEL_SOURCE_INITIALIZER;
	cancel_token tok = cancel_source_token(&src);
	int fd;
	if (cancel_token_fd(tok, &fd) != 0)
		return 2;
	sigset_t usr1;
	sigemptyset(&usr1);
	sigaddset(&usr1, SIGUSR1);
	if (pthread_sigmask(SIG_BLOCK, &usr1, NULL) != 0 ||
	    cancel_source_cancel_on_signal(&src, SIGUSR1) != 0)
		return 2;
	pthread_t t;
	if (pthread_create(&t, NULL, storm_main, NULL) != 0)
		return 2;
	int exited = 0, signaled = 0;
	for (int i = 0; i < STORM_SPAWNS; i++) {
		char *argv[] = { "true", NULL };
		pid_t pid;
		if (cancel_process_spawn(&pid, "/bin/true", argv, NULL, NULL,
		                         0) != 0)
			return 3;
		int st;
		if (cancel_process_wait(pid, &st, 0, NULL, CANCEL_TOKEN_NONE))
			return 3;
		if (WIFSIGNALED(st) && WTERMSIG(st) == SIGUSR1)
			signaled++;
		else if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
			exited++;
		else
			return 4;
	}
	st_release(&storm_done, 1); /* pairs with the acquire in storm_main */
	pthread_join(t, NULL);
	struct pollfd p = { .fd = fd, .events = POLLIN };
	bool readable = poll(&p, 1, 0) == 1;
	bool canceled = cancel_token_is_canceled(tok);
	fprintf(stderr, "storm-helper: %d children exited, %d died of "
	                "SIGUSR1; source %s, fd %s\n",
	        exited, signaled, canceled ? "CANCELED" : "not canceled",
	        readable ? "READABLE" : "not readable");
	return canceled || readable || signaled == 0 ? 1 : 0;
}

static void
signals_before_exec_never_run_parent_handlers(void **state)
{
	(void)state;
	char self[4096];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	assert_true(n > 0);
	self[n] = '\0';
	char *argv[] = { self, "storm-helper", NULL };
	pid_t pid;
	assert_int_equal(cancel_process_spawn(&pid, self, argv, NULL, NULL,
	                                      CANCEL_SPAWN_NEW_GROUP),
	                 0);
	struct timespec dl = cancel_deadline_in(60000 * MS);
	int status = -1;
	assert_int_equal(
	    cancel_process_wait(pid, &status, 0, &dl, CANCEL_TOKEN_NONE), 0);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	assert_reaped(pid);
}

int
main(int argc, char **argv)
{
	if (argc > 1 && strcmp(argv[1], "storm-helper") == 0)
		return storm_helper();
#define T(f) cmocka_unit_test_setup_teardown(f, setup_mode, teardown_mode)
#define P(f, m)                                                               \
	cmocka_unit_test_prestate_setup_teardown(f, setup_mode, teardown_mode, \
	                                         &(m))
#define BOTH(f) P(f, mode_pidfd), P(f, mode_fallback)
	const struct CMUnitTest tests[] = {
		BOTH(wait_returns_status_of_child_that_exits_first),
		BOTH(wait_wakes_when_blocked_child_exits),
		BOTH(wait_on_exited_child_returns_zero_even_if_canceled),
		BOTH(cancel_stops_child_with_sigterm_within_grace),
		BOTH(ignored_sigterm_gets_sigkill_after_grace),
		BOTH(deadline_stops_child_with_etimedout),
		BOTH(cancel_during_grace_does_not_shorten_it),
		BOTH(stopped_child_is_continued_and_terminated),
		BOTH(group_mode_kills_grandchild_that_ignores_sigterm),
		BOTH(child_mode_signals_only_the_child),
		BOTH(group_mode_wait_does_not_hang_on_grandchild),
		BOTH(destroy_during_grace_returns_before_grace_ends),
		BOTH(wait_returns_echild_for_non_child),
		BOTH(wait_returns_echild_when_sigchld_is_ignored),
		T(wait_without_a_descriptor_for_the_token_polls_the_child),
		T(wait_rejects_bad_arguments),
		T(spawn_reports_enoent_and_eacces),
		T(spawn_rejects_bad_arguments),
		T(spawn_passes_environment),
		T(spawn_respects_close_on_exec),
		T(spawn_new_group_makes_child_a_group_leader),
		T(child_signal_does_not_reach_parent_source),
		T(ignored_signal_is_reset_in_child),
		T(signals_before_exec_never_run_parent_handlers),
		T(pidfd_hook_forces_enosys),
	};
	/* The library thread and its wake descriptor live as long as the
	 * process: start them first, so the fd checks see only ours. */
	if (cancel_signal_prepare() != 0)
		return 1;
	return cmocka_run_group_tests_name("process", tests, NULL, NULL);
}
