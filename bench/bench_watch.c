/*
 * Hang-up watches, measured against raw epoll in the same run:
 *
 *   1. Hang-up to canceled: from "the peer closes" to "a thread blocked in
 *      cancel_wait() on the request's token runs again", p50/p99, each
 *      sample alternating with two raw peers woken by the same kind of
 *      close: a thread blocked in epoll_wait() on the socket (one hop),
 *      and an epoll thread that hands the wake-up to a waiter through a
 *      futex (two hops: what a hand-written watcher thread does, and what
 *      the library does).
 *   2. cancel_watch_hangup + cancel_watch_stop per pair, against raw
 *      epoll_ctl ADD + DEL on a private epoll descriptor.
 *   3. N idle watched sockets (default 100,000, capped by RLIMIT_NOFILE's
 *      hard limit): extra threads, and the library thread's CPU time and
 *      wake-ups over 2 idle seconds (/proc/self/task/<tid>/stat, schedstat
 *      and status).
 *   4. 1,000 of them hang up at once: time until all 1,000 are canceled.
 *
 * The peers of sections 3 and 4 live in a helper process (one end of
 * each socketpair comes over with SCM_RIGHTS), so the watched ends can
 * use the whole descriptor table.
 *
 * usage: bench_watch [--samples N] [--idle N] [--burst N]
 */
#include "atomic.h"
#include "cancel.h"
#include "internal.h"

#include <dirent.h>
#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static uint64_t
now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void
nap_us(long us)
{
	struct timespec ts = {0, us * 1000};
	nanosleep(&ts, NULL);
}

static int
cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static uint64_t
pct(uint64_t *v, size_t n, double p)
{
	qsort(v, n, sizeof *v, cmp_u64);
	size_t i = (size_t)(p * (double)(n - 1) + 0.5);
	return v[i];
}

static void
die(const char *what)
{
	perror(what);
	exit(1);
}

/* ------------------------------------------------------------------ */
/* 1. Hang-up to canceled                                             */
/* ------------------------------------------------------------------ */

enum kind { K_LIB, K_RAW_EPOLL, K_RAW_HANDOFF, K_NKINDS, K_QUIT };
static const char *const kind_name[] = {
	"cancel_watch_hangup -> cancel_wait",
	"raw: thread in epoll_wait (1 hop)",
	"raw: epoll thread -> futex waiter (2 hops)",
};

/* A thread that blocks in one wait per command. */
struct worker {
	pthread_t t;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int cmd;          /* K_* or -1: none */
	int blocking;     /* about to block */
	int done;
	uint64_t woke;
	/* the wait's objects */
	cancel_token tok;
	int epfd;
	uint32_t *word;
};

static uint32_t handoff_word;

static long
futex(uint32_t *w, int op, uint32_t v)
{
	return syscall(SYS_futex, w, op, v, NULL, NULL, 0);
}

static void *
worker_main(void *arg)
{
	struct worker *k = arg;
	for (;;) {
		pthread_mutex_lock(&k->mu);
		while (k->cmd < 0)
			pthread_cond_wait(&k->cv, &k->mu);
		int cmd = k->cmd;
		k->cmd = -1;
		pthread_mutex_unlock(&k->mu);
		if (cmd == K_QUIT)
			return NULL;
		st_release(&k->blocking, 1);
		struct epoll_event ev;
		switch (cmd) {
		case K_LIB:
			cancel_wait(NULL, k->tok);
			break;
		case K_RAW_EPOLL:
			while (epoll_wait(k->epfd, &ev, 1, -1) != 1)
				;
			break;
		case K_RAW_HANDOFF:
			if (k->word == NULL) { /* the epoll thread */
				while (epoll_wait(k->epfd, &ev, 1, -1) != 1)
					;
				st_release(&handoff_word, 1);
				futex(&handoff_word, FUTEX_WAKE_PRIVATE, 1);
			} else { /* the waiter */
				while (ld_acquire(k->word) == 0)
					futex(k->word, FUTEX_WAIT_PRIVATE, 0);
			}
			break;
		}
		uint64_t t = now_ns();
		pthread_mutex_lock(&k->mu);
		k->woke = t;
		k->done = 1;
		pthread_cond_broadcast(&k->cv);
		pthread_mutex_unlock(&k->mu);
	}
}

static void
worker_post(struct worker *k, int cmd)
{
	pthread_mutex_lock(&k->mu);
	k->done = 0;
	st_relaxed(&k->blocking, 0);
	k->cmd = cmd;
	pthread_cond_broadcast(&k->cv);
	pthread_mutex_unlock(&k->mu);
}

static uint64_t
worker_wait(struct worker *k)
{
	pthread_mutex_lock(&k->mu);
	while (!k->done)
		pthread_cond_wait(&k->cv, &k->mu);
	uint64_t t = k->woke;
	pthread_mutex_unlock(&k->mu);
	return t;
}

static void
worker_start(struct worker *k)
{
	memset(k, 0, sizeof *k);
	k->cmd = -1;
	pthread_mutex_init(&k->mu, NULL);
	pthread_cond_init(&k->cv, NULL);
	if (pthread_create(&k->t, NULL, worker_main, k) != 0)
		die("pthread_create");
}

static void
bench_latency(int samples)
{
	struct worker waiter, poller;
	worker_start(&waiter);
	worker_start(&poller);
	int ep = epoll_create1(EPOLL_CLOEXEC);
	if (ep < 0)
		die("epoll_create1");
	uint64_t *lat[K_NKINDS];
	for (int k = 0; k < K_NKINDS; k++)
		lat[k] = calloc((size_t)samples, sizeof(uint64_t));

	for (int i = 0; i < samples; i++) {
		for (int j = 0; j < K_NKINDS; j++) {
			int kind = (i + j) % K_NKINDS;
			int sv[2];
			if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0,
			               sv) != 0)
				die("socketpair");
			struct cancel_source src;
			struct cancel_watch w = CANCEL_WATCH_INITIALIZER;
			struct epoll_event ev = {
			    .events = EPOLLONESHOT | EPOLLRDHUP};
			if (kind == K_LIB) {
				cancel_source_init(&src);
				if (cancel_watch_hangup(&w, sv[0], 0, &src))
					die("cancel_watch_hangup");
				waiter.tok = cancel_source_token(&src);
				worker_post(&waiter, K_LIB);
			} else {
				if (epoll_ctl(ep, EPOLL_CTL_ADD, sv[0], &ev))
					die("epoll_ctl");
				waiter.epfd = poller.epfd = ep;
				waiter.word = NULL;
				if (kind == K_RAW_HANDOFF) {
					st_relaxed(&handoff_word, 0);
					waiter.word = &handoff_word;
					poller.word = NULL;
					worker_post(&poller, K_RAW_HANDOFF);
				}
				worker_post(&waiter, kind);
			}
			while (!ld_acquire(&waiter.blocking) ||
			       (kind == K_RAW_HANDOFF &&
			        !ld_acquire(&poller.blocking)))
				nap_us(50);
			nap_us(1000); /* asleep by now */
			uint64_t t0 = now_ns();
			close(sv[1]);
			uint64_t t1 = worker_wait(&waiter);
			if (kind == K_RAW_HANDOFF)
				worker_wait(&poller);
			lat[kind][i] = t1 - t0;
			if (kind == K_LIB) {
				cancel_watch_stop(&w);
				if (cancel_source_destroy(&src) != 0)
					abort();
			} else {
				epoll_ctl(ep, EPOLL_CTL_DEL, sv[0], NULL);
			}
			close(sv[0]);
		}
	}
	worker_post(&waiter, K_QUIT);
	worker_post(&poller, K_QUIT);
	pthread_join(waiter.t, NULL);
	pthread_join(poller.t, NULL);
	close(ep);

	printf("\n1. hang-up to canceled (%d samples each, interleaved; us)\n",
	       samples);
	printf("   %-44s %8s %8s\n", "", "p50", "p99");
	uint64_t p50[K_NKINDS], p99[K_NKINDS];
	for (int k = 0; k < K_NKINDS; k++) {
		p50[k] = pct(lat[k], (size_t)samples, 0.50);
		p99[k] = pct(lat[k], (size_t)samples, 0.99);
		printf("   %-44s %8.1f %8.1f\n", kind_name[k], p50[k] / 1e3,
		       p99[k] / 1e3);
		free(lat[k]);
	}
	printf("   ratio vs 1 hop:  p50 %.2fx  p99 %.2fx\n",
	       (double)p50[K_LIB] / (double)p50[K_RAW_EPOLL],
	       (double)p99[K_LIB] / (double)p99[K_RAW_EPOLL]);
	printf("   ratio vs 2 hops: p50 %.2fx  p99 %.2fx\n",
	       (double)p50[K_LIB] / (double)p50[K_RAW_HANDOFF],
	       (double)p99[K_LIB] / (double)p99[K_RAW_HANDOFF]);
}

/* ------------------------------------------------------------------ */
/* 2. watch + stop vs ADD + DEL                                       */
/* ------------------------------------------------------------------ */

static void
bench_pair(void)
{
	enum { REPS = 41, N = 4000 };
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
		die("socketpair");
	int ep = epoll_create1(EPOLL_CLOEXEC);
	struct cancel_source src;
	struct cancel_watch w = CANCEL_WATCH_INITIALIZER;
	cancel_source_init(&src);
	uint64_t lib[REPS] = {0}, raw[REPS] = {0};
	for (int r = -1; r < REPS; r++) { /* -1: warm-up */
		for (int j = 0; j < 2; j++) {
			bool do_lib = (r + j) % 2 == 0;
			uint64_t t0 = now_ns();
			if (do_lib) {
				for (int i = 0; i < N; i++) {
					if (cancel_watch_hangup(&w, sv[0], 0,
					                        &src) != 0)
						die("watch");
					cancel_watch_stop(&w);
				}
			} else {
				for (int i = 0; i < N; i++) {
					struct epoll_event ev = {
					    .events = EPOLLONESHOT | EPOLLRDHUP,
					    .data.ptr = &w};
					if (epoll_ctl(ep, EPOLL_CTL_ADD, sv[0],
					              &ev) != 0)
						die("ADD");
					epoll_ctl(ep, EPOLL_CTL_DEL, sv[0],
					          NULL);
				}
			}
			uint64_t dt = (now_ns() - t0) / N;
			if (r >= 0)
				(do_lib ? lib : raw)[r] = dt;
		}
	}
	if (cancel_source_destroy(&src) != 0)
		abort();
	close(ep);
	close(sv[0]);
	close(sv[1]);
	uint64_t l = pct(lib, REPS, 0.5), x = pct(raw, REPS, 0.5);
	printf("\n2. per pair (median of %d reps of %d; ns)\n", REPS, N);
	printf("   cancel_watch_hangup + cancel_watch_stop  %6llu  [%llu-%llu]\n",
	       (unsigned long long)l, (unsigned long long)lib[0],
	       (unsigned long long)lib[REPS - 1]);
	printf("   raw epoll_ctl ADD + DEL                  %6llu  [%llu-%llu]\n",
	       (unsigned long long)x, (unsigned long long)raw[0],
	       (unsigned long long)raw[REPS - 1]);
	printf("   ratio %.2fx\n", (double)l / (double)x);
}

/* ------------------------------------------------------------------ */
/* 3 and 4. Many idle watches, then a burst of hang-ups               */
/* ------------------------------------------------------------------ */

#define PER_MSG 200

/* Helper process: makes @n socketpairs, sends one end of each, keeps the
 * other; then, on "close A..B step S", closes those peers and answers
 * with the times of its first and last close. */
static void
helper_main(int ctl, int n)
{
	int *peers = calloc((size_t)n, sizeof *peers);
	for (int i = 0; i < n; i += PER_MSG) {
		int m = n - i < PER_MSG ? n - i : PER_MSG;
		int mine[PER_MSG] = {0};
		union {
			char buf[CMSG_SPACE(sizeof(int) * PER_MSG)];
			struct cmsghdr align;
		} u;
		for (int k = 0; k < m; k++) {
			int sv[2];
			if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0,
			               sv) != 0)
				_exit(2);
			mine[k] = sv[0];
			peers[i + k] = sv[1];
		}
		char one = 'x';
		struct iovec iov = {&one, 1};
		struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1,
		                     .msg_control = u.buf,
		                     .msg_controllen =
		                         CMSG_SPACE(sizeof(int) * (size_t)m)};
		struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)m);
		memcpy(CMSG_DATA(cm), mine, sizeof(int) * (size_t)m);
		if (sendmsg(ctl, &msg, 0) != 1)
			_exit(3);
		for (int k = 0; k < m; k++)
			close(mine[k]);
	}
	for (;;) {
		int32_t c[3];
		if (read(ctl, c, sizeof c) != (ssize_t)sizeof c || c[0] < 0)
			_exit(0);
		uint64_t t[2];
		t[0] = now_ns();
		for (int32_t i = c[0]; i < c[1]; i += c[2])
			close(peers[i]);
		t[1] = now_ns();
		if (write(ctl, t, sizeof t) != (ssize_t)sizeof t)
			_exit(4);
	}
}

static int
recv_fds(int ctl, int *fds, int max)
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
	if (recvmsg(ctl, &m, MSG_CMSG_CLOEXEC) != 1)
		die("recvmsg");
	struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
	int k = (int)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));
	if (k > max)
		k = max;
	memcpy(fds, CMSG_DATA(cm), sizeof(int) * (size_t)k);
	return k;
}

static int
count_tasks(void)
{
	DIR *d = opendir("/proc/self/task");
	int n = 0;
	while (readdir(d) != NULL)
		n++;
	closedir(d);
	return n - 2;
}

/* The library thread's tid (its name is cancel-lib), or -1. */
static int
lib_tid(void)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *e;
	int tid = -1;
	while ((e = readdir(d)) != NULL) {
		char path[300], name[32] = "";
		snprintf(path, sizeof path, "/proc/self/task/%s/comm",
		         e->d_name);
		FILE *f = fopen(path, "r");
		if (f == NULL)
			continue;
		if (fgets(name, sizeof name, f) != NULL &&
		    strncmp(name, "cancel-lib", 10) == 0)
			tid = atoi(e->d_name);
		fclose(f);
	}
	closedir(d);
	return tid;
}

struct cpu {
	unsigned long long ticks;    /* utime + stime, /stat */
	unsigned long long run_ns;   /* schedstat */
	unsigned long long switches; /* voluntary + involuntary */
};

static struct cpu
thread_cpu(int tid)
{
	struct cpu c = {0, 0, 0};
	char path[128], buf[1024];
	snprintf(path, sizeof path, "/proc/self/task/%d/stat", tid);
	FILE *f = fopen(path, "r");
	if (f != NULL && fgets(buf, sizeof buf, f) != NULL) {
		char *p = strrchr(buf, ')');
		unsigned long long ut = 0, st = 0;
		/* fields 3.. after the name: skip to 14 and 15 */
		if (p != NULL &&
		    sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u "
		                  "%*u %llu %llu", &ut, &st) == 2)
			c.ticks = ut + st;
	}
	if (f != NULL)
		fclose(f);
	snprintf(path, sizeof path, "/proc/self/task/%d/schedstat", tid);
	f = fopen(path, "r");
	if (f != NULL && fscanf(f, "%llu", &c.run_ns) != 1)
		c.run_ns = 0;
	if (f != NULL)
		fclose(f);
	snprintf(path, sizeof path, "/proc/self/task/%d/status", tid);
	f = fopen(path, "r");
	while (f != NULL && fgets(buf, sizeof buf, f) != NULL) {
		unsigned long long v;
		if (sscanf(buf, "voluntary_ctxt_switches: %llu", &v) == 1 ||
		    sscanf(buf, "nonvoluntary_ctxt_switches: %llu", &v) == 1)
			c.switches += v;
	}
	if (f != NULL)
		fclose(f);
	return c;
}

static int burst_count;
static uint64_t burst_last;

static void
burst_cb(void *arg)
{
	int *target = arg;
	if (fetch_add_acq_rel(&burst_count, 1) + 1 == *target)
		st_release(&burst_last, now_ns());
}

static void
bench_scale(int n, int burst)
{
	struct rlimit rl;
	getrlimit(RLIMIT_NOFILE, &rl);
	rl.rlim_cur = rl.rlim_max;
	setrlimit(RLIMIT_NOFILE, &rl);
	/* The helper holds the peers plus a batch in flight. */
	int cap = rl.rlim_cur == RLIM_INFINITY ? n
	                                       : (int)rl.rlim_cur - 2 * PER_MSG -
	                                             100;
	int asked = n;
	if (n > cap)
		n = cap;
	if (burst > n)
		burst = n;

	int ctl[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, ctl) != 0)
		die("socketpair");
	pid_t pid = fork();
	if (pid == 0) {
		close(ctl[0]);
		helper_main(ctl[1], n);
	}
	close(ctl[1]);
	int *fds = calloc((size_t)n, sizeof *fds);
	struct cancel_source *src = calloc((size_t)n, sizeof *src);
	struct cancel_watch *w = calloc((size_t)n, sizeof *w);
	struct cancel_callback *cb = calloc((size_t)n, sizeof *cb);
	for (int i = 0; i < n;)
		i += recv_fds(ctl[0], fds + i, n - i);

	int tasks0 = count_tasks();
	uint64_t t0 = now_ns();
	for (int i = 0; i < n; i++) {
		cancel_source_init(&src[i]);
		if (cancel_watch_hangup(&w[i], fds[i], 0, &src[i]) != 0)
			die("cancel_watch_hangup");
	}
	uint64_t t1 = now_ns();
	int tasks1 = count_tasks();
	int tid = lib_tid();
	nap_us(100000); /* let the loop settle on the new set */
	struct cpu c0 = thread_cpu(tid);
	sleep(2);
	struct cpu c1 = thread_cpu(tid);

	printf("\n3. %d idle watched sockets", n);
	if (n < asked)
		printf(" (asked %d: RLIMIT_NOFILE hard limit is %llu)", asked,
		       (unsigned long long)rl.rlim_max);
	printf("\n   watch all: %.1f ms (%.0f ns each); extra threads: %d\n",
	       (t1 - t0) / 1e6, (double)(t1 - t0) / n, tasks1 - tasks0);
	printf("   library thread (tid %d) over 2 s idle: %llu ticks "
	       "(utime+stime), %llu ns on CPU (schedstat), %llu wake-ups\n",
	       tid, c1.ticks - c0.ticks, c1.run_ns - c0.run_ns,
	       c1.switches - c0.switches);

	/* 4. a burst: every (n / burst)-th peer closes. */
	int step = n / burst;
	static int target;
	target = burst;
	for (int i = 0; i < burst; i++)
		cancel_callback_register(&cb[i * step], burst_cb, &target,
		                         cancel_source_token(&src[i * step]));
	int32_t cmd[3] = {0, burst * step, step};
	if (write(ctl[0], cmd, sizeof cmd) != (ssize_t)sizeof cmd)
		die("write");
	uint64_t tc[2];
	if (read(ctl[0], tc, sizeof tc) != (ssize_t)sizeof tc)
		die("read");
	uint64_t give_up = now_ns() + 10000000000ull;
	while (ld_acquire(&burst_count) < burst && now_ns() < give_up)
		nap_us(100);
	uint64_t tl = ld_acquire(&burst_last);
	printf("\n4. %d hang up at once (peers closed within %.2f ms)\n",
	       burst, (tc[1] - tc[0]) / 1e6);
	if (ld_acquire(&burst_count) < burst)
		printf("   only %d of %d canceled after 10 s\n",
		       ld_acquire(&burst_count), burst);
	else
		printf("   all %d canceled %.2f ms after the first close "
		       "(%.2f ms after the last)\n", burst, (tl - tc[0]) / 1e6,
		       tl > tc[1] ? (tl - tc[1]) / 1e6 : 0.0);

	uint64_t t2 = now_ns();
	for (int i = 0; i < n; i++) {
		cancel_watch_stop(&w[i]);
		cancel_callback_unregister(&cb[i]);
		if (cancel_source_destroy(&src[i]) != 0)
			abort();
		close(fds[i]);
	}
	printf("\n   stop + destroy + close all: %.1f ms\n",
	       (now_ns() - t2) / 1e6);
	int32_t quit[3] = {-1, 0, 0};
	if (write(ctl[0], quit, sizeof quit) < 0)
		die("write");
	waitpid(pid, NULL, 0);
	close(ctl[0]);
	free(fds);
	free(src);
	free(w);
	free(cb);
}

int
main(int argc, char **argv)
{
	int samples = 2000, idle = 100000, burst = 1000;
	for (int i = 1; i + 1 < argc; i += 2) {
		if (strcmp(argv[i], "--samples") == 0)
			samples = atoi(argv[i + 1]);
		else if (strcmp(argv[i], "--idle") == 0)
			idle = atoi(argv[i + 1]);
		else if (strcmp(argv[i], "--burst") == 0)
			burst = atoi(argv[i + 1]);
	}
	if (cancel_signal_prepare() != 0)
		die("cancel_signal_prepare");
	printf("bench_watch: backend %s\n",
#ifdef CANCEL_BACKEND_futex
	       "epoll"
#else
	       "poll"
#endif
	);
	bench_latency(samples);
	bench_pair();
	bench_scale(idle, burst);
	return 0;
}
