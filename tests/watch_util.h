/*
 * Helpers shared by the hang-up watch tests (test_watch.c,
 * test_watch_poller.c): connected pairs and the thread count. Include
 * after cmocka.h and testutil.h.
 */
#ifndef CANCEL_TEST_WATCH_UTIL_H
#define CANCEL_TEST_WATCH_UTIL_H

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#define MS 1000000ull
/* Long enough for any hang-up to arrive on a loaded machine. */
#define PATIENCE (10000 * MS)
/* How long "nothing happens" is watched for. */
#define QUIET (200 * MS)

/* The number of threads of this process. */
static inline int
tasks(void)
{
	DIR *d = opendir("/proc/self/task");
	int n = 0;
	assert_non_null(d);
	while (readdir(d) != NULL)
		n++;
	closedir(d);
	return n - 2;
}

/* A connected TCP pair on 127.0.0.1: *@srv is the accepted side. */
static inline void
tcp_pair(int *srv, int *cli)
{
	struct sockaddr_in a = {.sin_family = AF_INET,
	                        .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t alen = sizeof a;
	int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(l >= 0);
	assert_int_equal(bind(l, (struct sockaddr *)&a, sizeof a), 0);
	assert_int_equal(listen(l, 4), 0);
	assert_int_equal(getsockname(l, (struct sockaddr *)&a, &alen), 0);
	*cli = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(*cli >= 0);
	assert_int_equal(connect(*cli, (struct sockaddr *)&a, sizeof a), 0);
	*srv = accept4(l, NULL, NULL, SOCK_CLOEXEC);
	assert_true(*srv >= 0);
	close(l);
}

static inline void
unix_pair(int *a, int *b)
{
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv),
	                 0);
	*a = sv[0];
	*b = sv[1];
}

/* cmocka group setup: see the comment inside. */
static inline int
watch_group_setup(void **state)
{
	(void)state;
	/* Start the library thread and the backend's kernel object once,
	 * and give this thread the wake-up descriptor that a thread which
	 * polled a watch keeps until it exits, so that fd and thread counts
	 * compare like with like. */
	int a, b;
	unix_pair(&a, &b);
	struct cancel_source s;
	struct cancel_watch w = CANCEL_WATCH_INITIALIZER;
	cancel_source_init(&s);
	if (cancel_watch_hangup(&w, a, 0, &s) != 0)
		return -1;
	/* A deadline already past when the wait starts (valgrind) does not
	 * block, so no descriptor: wait until this thread has one. */
	for (int i = 0; i < 100 && cancel__test_watch_wake_fd() < 0; i++) {
		struct timespec dl = cancel_deadline_in(20000000);
		if (cancel_wait(&dl, cancel_source_token(&s)) != ETIMEDOUT)
			return -1;
	}
	if (cancel__test_watch_wake_fd() < 0)
		return -1;
	cancel_watch_stop(&w);
	close(a);
	close(b);
	return cancel_source_destroy(&s);
}

#endif /* CANCEL_TEST_WATCH_UTIL_H */
