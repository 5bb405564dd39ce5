/*
 * loop_epoll: a single-threaded epoll server whose cancellations all
 * arrive on the loop thread through one cancel_queue.
 *
 * Each connection is a request with its own source, linked to a shutdown
 * source, with a 300 ms deadline and a hang-up watch. Its "work" is a
 * timerfd (a query of 100 ms, or 1 s for "slow" and "hold"). Whatever
 * cancels the request (its deadline or the client leaving, both on the
 * library thread; shutdown, on the client thread), the callback that ends
 * it runs here, on the loop thread, through the queue: no locks around
 * request state, no worker threads, no fd per request for cancellation.
 *
 * The program plays both sides: a client thread sends "fast", "gone"
 * (hangs up at once), "slow", then "hold" and shuts the server down while
 * it runs. Exits 0 when each request ended for its expected reason.
 */
#include <cancel.h>

#include <arpa/inet.h>
#include <errno.h>
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
	int conn, work; /* the client socket, the "query" timer */
	struct cancel_source src;
	struct cancel_watch watch; /* cancels src if the client leaves */
	struct cancel_callback on_cancel;
	char what[8];
	struct req *next_dead; /* freed after the current batch */
	int dead;
};

static struct req *graveyard; /* no event of this batch may name them */
static struct cancel_queue queue;
static struct cancel_source shutdown_src = CANCEL_SOURCE_INITIALIZER;
static int ep, live, accepted, ended[4]; /* 200, 504, gone, 503 */

static void
req_end(struct req *r, int how, const char *reply, const char *why)
{
	printf("request %-4s: %s\n", r->what, why);
	if (reply != NULL)
		send(r->conn, reply, strlen(reply), MSG_NOSIGNAL);
	ended[how]++;
	epoll_ctl(ep, EPOLL_CTL_DEL, r->work, NULL);
	cancel_watch_stop(&r->watch); /* before close: the fd may be reused */
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
	switch (cancel_token_reason(cancel_source_token(&r->src))) {
	case ETIMEDOUT:
		req_end(r, 1, "504 too slow\n",
		        "canceled by its deadline: 504");
		break;
	case ECONNRESET:
		req_end(r, 2, NULL, "canceled, client left: work dropped");
		break;
	default: /* ECANCELED from the shutdown source */
		req_end(r, 3, "503 shutting down\n",
		        "canceled by shutdown: 503");
	}
}

static void
req_start(int conn)
{
	struct req *r = calloc(1, sizeof(*r));
	ssize_t n = recv(conn, r->what, sizeof(r->what) - 1, 0);
	r->what[n > 0 ? n : 0] = '\0';
	r->conn = conn;
	r->work = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
	cancel_token parent = cancel_source_token(&shutdown_src);
	cancel_source_init_linked(&r->src, &parent, 1);
	accepted++;
	live++;
	cancel_token tok = cancel_source_token(&r->src);
	if (cancel_callback_register_queued(&r->on_cancel, on_cancel, r,
	                                    &queue, tok) != 0) {
		req_end(r, 3, "503 shutting down\n", "refused: shutting down");
		return;
	}
	cancel_source_cancel_after(&r->src, 300 * 1000000ull);
	cancel_watch_hangup(&r->watch, conn, 0, &r->src);
	struct itimerspec it = {.it_value = {.tv_nsec = 100000000}};
	if (strcmp(r->what, "fast") != 0 && strcmp(r->what, "gone") != 0)
		it.it_value = (struct timespec){.tv_sec = 1};
	timerfd_settime(r->work, 0, &it, NULL);
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = r};
	epoll_ctl(ep, EPOLL_CTL_ADD, r->work, &ev);
	if (strcmp(r->what, "hold") == 0)
		send(conn, "102 working\n", 12, MSG_NOSIGNAL);
}

/* The work finished first: answer, unless canceled meanwhile. */
static void
req_done(struct req *r)
{
	if (!r->dead && cancel_callback_unregister(&r->on_cancel))
		req_end(r, 0, "200 ok\n", "completed: 200");
}

static void *
client(void *arg)
{
	struct sockaddr_in *a = arg;
	const char *what[] = {"fast", "gone", "slow", "hold"};
	for (int i = 0; i < 4; i++) {
		int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		connect(c, (struct sockaddr *)a, sizeof(*a));
		send(c, what[i], strlen(what[i]), 0);
		char buf[64] = "";
		if (i == 3 && recv(c, buf, sizeof(buf) - 1, 0) > 0)
			cancel_source_cancel(&shutdown_src); /* it runs: stop */
		memset(buf, 0, sizeof(buf));
		if (i != 1 && recv(c, buf, sizeof(buf) - 1, 0) > 0)
			printf("client %s got: %s", what[i], buf);
		close(c);
	}
	return NULL;
}

static void
on_shutdown(void *arg)
{
	printf("shutdown: delivered on the loop thread\n");
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
	    getsockname(lst, (struct sockaddr *)&a, &alen) != 0 ||
	    cancel_queue_init(&queue) != 0)
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
	while (!stopping || live > 0 || accepted < 4) {
		struct epoll_event evs[16];
		int n = epoll_wait(ep, evs, 16, 5000);
		if (n <= 0)
			return 1; /* nothing for 5 s: something is stuck */
		for (int i = 0; i < n; i++) {
			void *p = evs[i].data.ptr;
			if (p == &lst)
				req_start(accept4(lst, NULL, NULL,
				                  SOCK_CLOEXEC));
			else if (p == &queue)
				cancel_queue_run(&queue);
			else
				req_done(p);
		}
		while (graveyard != NULL) {
			struct req *r = graveyard;
			graveyard = r->next_dead;
			free(r);
		}
	}
	pthread_join(t, NULL);
	printf("done: %d completed, %d deadline, %d client left, "
	       "%d shutdown\n", ended[0], ended[1], ended[2], ended[3]);
	close(ep);
	close(lst);
	if (cancel_queue_destroy(&queue) != 0 ||
	    cancel_source_destroy(&shutdown_src) != 0)
		return 1;
	for (int i = 0; i < 4; i++)
		if (ended[i] != 1)
			return 1;
	return 0;
}
