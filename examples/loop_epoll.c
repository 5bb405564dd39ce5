/*
 * loop_epoll: a single-threaded epoll server whose cancellations all
 * arrive on the loop thread through one cancel_queue.
 *
 * Each connection is a request with its own source, linked to a shutdown
 * source, with a 300 ms deadline. Its "work" is a timerfd (a query that
 * takes 100 ms, or 1 s for "slow"). Whatever cancels the request (its
 * deadline on the library thread, the client hanging up, shutdown), the
 * callback that frees the request's state runs here, on the loop thread,
 * through the queue: no locks around request state, no worker threads.
 *
 * The program plays both sides: a client thread sends "fast", "slow" and
 * "gone" (hangs up at once), then the loop shuts itself down. Exits 0
 * when every request ended the expected way.
 */
#include <cancel.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <unistd.h>

struct req {
	int conn, work;          /* the client socket, the "query" timer */
	struct cancel_source src;
	struct cancel_callback on_cancel;
	char what[8];
	struct req *next_dead; /* freed after the current batch */
	int dead;
};

/* Ended requests, freed once no event of this batch can name them. */
static struct req *graveyard;

static struct cancel_queue queue;
static struct cancel_source shutdown_src = CANCEL_SOURCE_INITIALIZER;
static int ep, done_ok, done_timeout, done_gone, live, accepted;

static void
req_free(struct req *r, const char *outcome)
{
	printf("request %-4s: %s\n", r->what, outcome);
	epoll_ctl(ep, EPOLL_CTL_DEL, r->conn, NULL);
	epoll_ctl(ep, EPOLL_CTL_DEL, r->work, NULL);
	close(r->conn);
	close(r->work);
	if (cancel_source_destroy(&r->src) != 0)
		abort();
	r->dead = 1;
	r->next_dead = graveyard;
	graveyard = r;
	live--;
}

/* Runs on the loop thread (cancel_queue_run), whoever canceled. */
static void
on_cancel(void *arg)
{
	struct req *r = arg;
	int reason = cancel_token_reason(cancel_source_token(&r->src));
	if (reason == ETIMEDOUT) {
		send(r->conn, "504 too slow\n", 13, MSG_NOSIGNAL);
		done_timeout++;
		req_free(r, "deadline passed: 504, state freed on the loop");
	} else {
		done_gone++;
		req_free(r, "client left: work dropped, state freed");
	}
}

static void
req_start(int conn)
{
	struct req *r = calloc(1, sizeof(*r));
	ssize_t n = recv(conn, r->what, sizeof(r->what) - 1, 0);
	if (n < 0)
		n = 0;
	r->what[n] = '\0';
	r->conn = conn;
	cancel_token parent = cancel_source_token(&shutdown_src);
	cancel_source_init_linked(&r->src, &parent, 1);
	cancel_source_cancel_after(&r->src, 300 * 1000000ull);
	accepted++;
	live++;
	r->work = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
	if (cancel_callback_register_queued(&r->on_cancel, on_cancel, r,
	                                    &queue,
	                                    cancel_source_token(&r->src)) != 0) {
		req_free(r, "refused: shutting down");
		return;
	}
	struct itimerspec it = {.it_value = {.tv_nsec = 100000000}};
	if (strcmp(r->what, "slow") == 0)
		it.it_value = (struct timespec){.tv_sec = 1};
	timerfd_settime(r->work, 0, &it, NULL);
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = r};
	epoll_ctl(ep, EPOLL_CTL_ADD, r->work, &ev);
	ev.events = EPOLLRDHUP; /* the client leaving */
	epoll_ctl(ep, EPOLL_CTL_ADD, r->conn, &ev);
}

static void
req_event(struct req *r, uint32_t events)
{
	if (r->dead)
		return;
	if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
		/* Cancel: the queued callback frees it on this thread. */
		cancel_source_cancel_with(&r->src, ECONNRESET);
		return;
	}
	/* The work finished first: answer, unless canceled meanwhile. */
	if (cancel_callback_unregister(&r->on_cancel)) {
		send(r->conn, "200 ok\n", 7, MSG_NOSIGNAL);
		done_ok++;
		req_free(r, "completed: 200");
	}
}

static void *
client(void *arg)
{
	struct sockaddr_in *a = arg;
	const char *what[] = {"fast", "gone", "slow"};
	for (int i = 0; i < 3; i++) {
		int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		connect(c, (struct sockaddr *)a, sizeof(*a));
		send(c, what[i], strlen(what[i]), 0);
		char buf[32] = "";
		if (i != 1 && recv(c, buf, sizeof(buf) - 1, 0) > 0)
			printf("client %s got: %s", what[i], buf);
		close(c);
	}
	cancel_source_cancel(&shutdown_src);
	return NULL;
}

static void
on_shutdown(void *arg)
{
	*(int *)arg = 1;
}

int
main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	int lst = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = {.sin_family = AF_INET};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	socklen_t alen = sizeof(a);
	if (bind(lst, (struct sockaddr *)&a, sizeof(a)) != 0 ||
	    listen(lst, 16) != 0 ||
	    getsockname(lst, (struct sockaddr *)&a, &alen) != 0)
		return 1;
	if (cancel_queue_init(&queue) != 0)
		return 1;
	ep = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &lst};
	epoll_ctl(ep, EPOLL_CTL_ADD, lst, &ev);
	ev.data.ptr = &queue; /* level-triggered; run() clears it */
	epoll_ctl(ep, EPOLL_CTL_ADD, cancel_queue_fd(&queue), &ev);
	int stopping = 0;
	struct cancel_callback stop_cb;
	cancel_callback_register_queued(&stop_cb, on_shutdown, &stopping,
	                                &queue,
	                                cancel_source_token(&shutdown_src));

	pthread_t t;
	pthread_create(&t, NULL, client, &a);
	while (!stopping || live > 0 || accepted < 3) {
		struct epoll_event evs[16];
		int n = epoll_wait(ep, evs, 16, 5000);
		if (n <= 0)
			return 1; /* nothing for 5 s: something is stuck */
		for (int i = 0; i < n; i++) {
			void *p = evs[i].data.ptr;
			if (p == &lst)
				req_start(accept4(lst, NULL, NULL, SOCK_CLOEXEC));
			else if (p == &queue)
				cancel_queue_run(&queue);
			else
				req_event(p, evs[i].events);
		}
		while (graveyard != NULL) {
			struct req *r = graveyard;
			graveyard = r->next_dead;
			free(r);
		}
	}
	pthread_join(t, NULL);
	printf("done: %d completed, %d timed out, %d left early\n", done_ok,
	       done_timeout, done_gone);
	close(ep);
	close(lst);
	if (cancel_queue_destroy(&queue) != 0 ||
	    cancel_source_destroy(&shutdown_src) != 0)
		return 1;
	return done_ok == 1 && done_timeout == 1 && done_gone == 1 ? 0 : 1;
}
