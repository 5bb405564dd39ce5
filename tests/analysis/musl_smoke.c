/*
 * A smoke test without cmocka (which has no musl build), linked against
 * libcancel built with musl-gcc: the core (sources, callbacks in LIFO
 * order, unregister, links, destroy), the waits (wait, sleep, poll,
 * condition wait: on musl the deadline goes through the library thread's
 * timer, as pthread_cond_clockwait does not exist), deadlines, the token's
 * descriptor, cancelable read and waitpid, and the signal cancel.
 * Prints the number of checks; exits 1 at the first failure.
 */
#include "cancel.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int checks;

#define CHECK(cond)                                                          \
	do {                                                                 \
		checks++;                                                    \
		if (!(cond)) {                                               \
			fprintf(stderr, "musl_smoke: line %d: %s\n",         \
			        __LINE__, #cond);                            \
			exit(1);                                             \
		}                                                            \
	} while (0)

static uint64_t
now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static char order[8];
static int norder;

static void
note(void *arg)
{
	order[norder++] = *(const char *)arg;
}

static void
core(void)
{
	struct cancel_source s = CANCEL_SOURCE_INITIALIZER;
	struct cancel_callback a = CANCEL_CALLBACK_INITIALIZER;
	struct cancel_callback b = CANCEL_CALLBACK_INITIALIZER;
	struct cancel_callback c = CANCEL_CALLBACK_INITIALIZER;
	static const char ca = 'a', cb = 'b', cc = 'c';
	cancel_token t = cancel_source_token(&s);
	CHECK(cancel_callback_register(&a, note, (void *)&ca, t));
	CHECK(cancel_callback_register(&b, note, (void *)&cb, t));
	CHECK(cancel_callback_register(&c, note, (void *)&cc, t));
	CHECK(cancel_callback_unregister(&b));
	CHECK(cancel_source_destroy(&s) == EBUSY);
	CHECK(cancel_source_cancel_with(&s, 42));
	CHECK(!cancel_source_cancel(&s));
	CHECK(norder == 2 && order[0] == 'c' && order[1] == 'a');
	CHECK(cancel_token_reason(t) == 42);
	CHECK(!cancel_callback_unregister(&a));
	CHECK(cancel_callback_try_unregister(&c) == EALREADY);
	CHECK(cancel_source_destroy(&s) == 0);

	struct cancel_source p1, p2, child;
	cancel_source_init(&p1);
	cancel_source_init(&p2);
	cancel_token ps[2] = {cancel_source_token(&p1),
	                      cancel_source_token(&p2)};
	CHECK(cancel_source_init_linked(&child, ps, 2) == 0);
	CHECK(cancel_source_destroy(&p2) == EBUSY);
	CHECK(cancel_source_cancel_with(&p2, 7));
	CHECK(cancel_token_reason(cancel_source_token(&child)) == 7);
	CHECK(!cancel_token_is_canceled(cancel_source_token(&p1)));
	CHECK(cancel_source_destroy(&child) == 0);
	CHECK(cancel_source_destroy(&p1) == 0);
	CHECK(cancel_source_destroy(&p2) == 0);
}

struct later {
	struct cancel_source *src;
	uint64_t ns;
};

static void *
cancel_later(void *arg)
{
	struct later *l = arg;
	struct timespec ts = {0, (long)l->ns};
	nanosleep(&ts, NULL);
	cancel_source_cancel(l->src);
	return NULL;
}

static void
waits(void)
{
	struct cancel_source s = CANCEL_SOURCE_INITIALIZER;
	cancel_token t = cancel_source_token(&s);
	uint64_t t0 = now_ns();
	struct timespec dl = cancel_deadline_in(20000000);
	CHECK(cancel_wait(&dl, t) == ETIMEDOUT);
	CHECK(now_ns() - t0 >= 20000000);
	CHECK(cancel_sleep(1000000, t) == 0);
	CHECK(cancel_wait(NULL, CANCEL_TOKEN_NONE) == EINVAL);

	/* Woken by a cancel on another thread. */
	struct later l = {&s, 20000000};
	pthread_t th;
	CHECK(pthread_create(&th, NULL, cancel_later, &l) == 0);
	t0 = now_ns();
	CHECK(cancel_sleep(5000000000ull, t) == ECANCELED);
	CHECK(now_ns() - t0 < 2000000000ull);
	pthread_join(th, NULL);
	CHECK(cancel_source_destroy(&s) == 0);

	/* Deadline on the library thread. */
	cancel_source_init(&s);
	CHECK(cancel_source_cancel_after(&s, 10000000) == 0);
	struct timespec got;
	CHECK(cancel_token_deadline(t, &got));
	CHECK(cancel_wait(NULL, t) == ECANCELED);
	CHECK(cancel_token_reason(t) == ETIMEDOUT);
	CHECK(cancel_source_destroy(&s) == 0);

	/* poll and the token's descriptor. */
	int p[2];
	CHECK(pipe(p) == 0);
	cancel_source_init(&s);
	struct pollfd pfd = {.fd = p[0], .events = POLLIN};
	dl = cancel_deadline_in(10000000);
	CHECK(cancel_poll(&pfd, 1, &dl, t) == ETIMEDOUT);
	CHECK(write(p[1], "x", 1) == 1);
	CHECK(cancel_poll(&pfd, 1, NULL, t) == 0 && (pfd.revents & POLLIN));
	char ch;
	size_t done = 0;
	CHECK(cancel_read(p[0], &ch, 1, &done, NULL, t) == 0 && done == 1);
	int fd = -1;
	CHECK(cancel_token_fd(t, &fd) == 0 && fd >= 0);
	l = (struct later){&s, 10000000};
	CHECK(pthread_create(&th, NULL, cancel_later, &l) == 0);
	CHECK(cancel_read(p[0], &ch, 1, &done, NULL, t) == ECANCELED);
	CHECK(done == 0);
	pthread_join(th, NULL);
	struct pollfd tf = {.fd = fd, .events = POLLIN};
	CHECK(poll(&tf, 1, 0) == 1);
	CHECK(cancel_source_destroy(&s) == 0);
	close(p[0]);
	close(p[1]);

	/* Condition waits: deadline, then cancel from another thread. */
	pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
	pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
	cancel_source_init(&s);
	pthread_mutex_lock(&mu);
	dl = cancel_deadline_in(20000000);
	int rc;
	while ((rc = cancel_cond_wait(&cv, &mu, &dl, t)) == 0)
		;
	CHECK(rc == ETIMEDOUT);
	l = (struct later){&s, 10000000};
	CHECK(pthread_create(&th, NULL, cancel_later, &l) == 0);
	while ((rc = cancel_cond_wait(&cv, &mu, NULL, t)) == 0)
		;
	CHECK(rc == ECANCELED);
	pthread_mutex_unlock(&mu);
	pthread_join(th, NULL);
	CHECK(cancel_source_destroy(&s) == 0);
}

static void
processes_and_signals(void)
{
	struct cancel_source s = CANCEL_SOURCE_INITIALIZER;
	cancel_token t = cancel_source_token(&s);
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		struct timespec ts = {0, 20000000};
		nanosleep(&ts, NULL);
		_exit(3);
	}
	int st = 0;
	struct timespec dl = cancel_deadline_in(5000000000ull);
	CHECK(cancel_waitpid(pid, &st, &dl, t) == 0);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 3);

	CHECK(cancel_source_cancel_on_signal(&s, SIGUSR1) == 0);
	CHECK(raise(SIGUSR1) == 0);
	CHECK(cancel_wait(NULL, t) == ECANCELED);
	CHECK(cancel_token_reason(t) == EINTR);
	signal(SIGUSR1, SIG_DFL);
	CHECK(cancel_source_destroy(&s) == 0);
}

int
main(void)
{
	core();
	waits();
	processes_and_signals();
	printf("musl_smoke: %d checks passed\n", checks);
	return checks > 0 ? 0 : 1;
}
