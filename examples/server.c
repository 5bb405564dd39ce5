/*
 * server: a request should stop when its client leaves.
 *
 * A small HTTP/1.1 server on 127.0.0.1, a thread per connection, one route:
 *
 *     GET /reports/sales?seconds=N[&deadline_ms=M]
 *
 * The report takes N seconds: the repository holds one of two pooled
 * "database" connections for an N-second query, and the service meanwhile
 * asks an "inventory service" (a second endpoint this program runs on
 * another port) that also takes N seconds to answer.
 *
 * Each request has its own source, linked to the server's shutdown source,
 * and its token flows controller -> service -> repository, always as the
 * last parameter. The request is canceled when
 *   - its client disconnects (a hang-up watch on the client's socket: no
 *     thread of its own), with reason ECONNRESET;
 *   - its deadline passes (?deadline_ms=M), with reason ETIMEDOUT;
 *   - the server shuts down (SIGINT or SIGTERM), with reason EINTR.
 * Then every wait on the way returns ECANCELED at once, and the callbacks
 * of the layers that hold something release it at once: the database
 * connection goes back to the pool, the inventory socket is hung up (and
 * the inventory service, seeing that, stops looking too). One line per
 * request on stderr says how it ended: the token's cause tells which
 * source the cancel started at (the request itself or the shutdown), why
 * ("client disconnected", "deadline passed", "SIGTERM") and when, so the
 * line also says how fast the work stopped after that.
 *
 * usage: server [--port N]        (0, the default: any free port)
 */
#include <cancel.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MS 1000000ull		/* nanoseconds in a millisecond */

static struct cancel_source shutdown_src = CANCEL_SOURCE_INITIALIZER;
static struct sockaddr_in inventory_addr;
static atomic_int n_requests, n_completed, n_canceled;

static uint64_t
now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static double
ms(uint64_t from, uint64_t to)
{
	return to > from ? (double)(to - from) / 1e6 : 0.0;
}

/* One whole line on stderr, even with many threads logging. */
static void
say(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	flockfile(stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	funlockfile(stderr);
	va_end(ap);
}

/* ---------------- threads: every one the server starts is joined */

struct job {
	pthread_t thread;
	void *(*fn)(void *);
	void *arg;
	atomic_bool done;
	struct job *next;
};

static pthread_mutex_t jobs_mu = PTHREAD_MUTEX_INITIALIZER;
static struct job *jobs;

static void *
job_main(void *p)
{
	struct job *j = p;

	j->fn(j->arg);
	atomic_store(&j->done, true);
	return NULL;
}

static bool
spawn(void *(*fn)(void *), void *arg)
{
	struct job *j = calloc(1, sizeof *j);

	if (j == NULL)
		return false;
	j->fn = fn;
	j->arg = arg;
	pthread_mutex_lock(&jobs_mu);
	bool ok = pthread_create(&j->thread, NULL, job_main, j) == 0;
	if (ok) {
		j->next = jobs;
		jobs = j;
	}
	pthread_mutex_unlock(&jobs_mu);
	if (!ok)
		free(j);
	return ok;
}

/* Join the threads that have finished (or all of them). */
static void
reap(bool all)
{
	for (;;) {
		pthread_mutex_lock(&jobs_mu);
		struct job **pp = &jobs;
		while (*pp != NULL && !all && !atomic_load(&(*pp)->done))
			pp = &(*pp)->next;
		struct job *j = *pp;
		if (j != NULL)
			*pp = j->next;
		pthread_mutex_unlock(&jobs_mu);
		if (j == NULL)
			return;
		pthread_join(j->thread, NULL);
		free(j);
	}
}

/* ---------------- the "database": a pool of two connections */

static struct {
	pthread_mutex_t mu;
	pthread_cond_t cv;	/* a connection came back */
	int free[2];
	int nfree;
} pool = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, { 1, 2 }, 2 };

static int
db_pool_get(int *conn, cancel_token tok)
{
	int rc = 0;

	pthread_mutex_lock(&pool.mu);
	while (pool.nfree == 0 && rc == 0)
		rc = cancel_cond_wait(&pool.cv, &pool.mu, NULL, tok);
	if (rc == 0)
		*conn = pool.free[--pool.nfree];
	pthread_mutex_unlock(&pool.mu);
	return rc;
}

static void
db_pool_put(int conn)
{
	pthread_mutex_lock(&pool.mu);
	pool.free[pool.nfree++] = conn;
	pthread_cond_signal(&pool.cv);
	pthread_mutex_unlock(&pool.mu);
}

/* What a request produces, and what it gave back because it was canceled
 * (by a callback on the canceling thread, or by its own thread if that one
 * woke up first: the unregister call tells which). */
struct report {
	int id;				/* request number, for the log */
	long orders;			/* from the database */
	int stock;			/* from the inventory service */
	atomic_bool released_db, released_inventory;
};

/* ---------------- repository: the query, on a pooled connection */

struct lease {
	int conn;
	struct report *rep;
};

/* Callback: the request is canceled, so the connection goes back now. */
static void
return_connection(void *arg)
{
	struct lease *l = arg;

	db_pool_put(l->conn);
	atomic_store(&l->rep->released_db, true);
	say("req %d: callback: db connection %d returned to the pool",
	    l->rep->id, l->conn);
}

static int
repository_sales_query(struct report *rep, int seconds, cancel_token tok)
{
	struct lease l = { .rep = rep };
	struct cancel_callback cb = CANCEL_CALLBACK_INITIALIZER;

	int rc = db_pool_get(&l.conn, tok);
	if (rc != 0)
		return rc;
	/* From here the connection is used only through cancellable waits,
	 * so a cancel may hand it back to the pool at once. */
	if (!cancel_callback_register(&cb, return_connection, &l, tok))
		return ECANCELED;	/* already canceled: it ran here */
	/* The query streams rows for N seconds, a batch every 100 ms. */
	uint64_t start = now_ns();
	for (int batch = 1; rc == 0 && batch <= seconds * 10; batch++) {
		uint64_t t = start + (uint64_t)batch * 100 * MS;
		struct timespec next = { (time_t)(t / 1000000000u),
		                         (long)(t % 1000000000u) };
		rc = cancel_sleep_until(&next, tok);
		rep->orders += 40 + batch % 7;
	}
	if (cancel_callback_unregister(&cb)) {
		db_pool_put(l.conn);	/* it never ran: give it back here */
		if (cancel_token_is_canceled(tok))
			atomic_store(&rep->released_db, true);
	}
	return rc;
}

/* ---------------- service: the inventory service and the repository */

struct hangup {
	int fd;
	struct report *rep;
};

/* Callback: hang up on the inventory service, which then stops too. The
 * descriptor itself is closed by its owner once its own call returned, so
 * that its number cannot be reused while that call still polls it. */
static void
hang_up_inventory(void *arg)
{
	struct hangup *h = arg;

	shutdown(h->fd, SHUT_RDWR);
	atomic_store(&h->rep->released_inventory, true);
	say("req %d: callback: inventory socket shut down", h->rep->id);
}

static int
inventory_ask(int *fdp, int id, int seconds, cancel_token tok)
{
	struct timespec dl = cancel_deadline_in(1000 * MS);
	char msg[48];
	size_t done;

	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return errno;
	int rc = cancel_connect(fd, (const struct sockaddr *)&inventory_addr,
	                        sizeof inventory_addr, &dl, tok);
	int len = snprintf(msg, sizeof msg, "stock %d %d\n", seconds, id);
	if (rc == 0)
		rc = cancel_write(fd, msg, (size_t)len, &done, &dl, tok);
	if (rc == 0)
		*fdp = fd;
	else
		close(fd);
	return rc;
}

static int
inventory_answer(int fd, int seconds, struct report *rep, cancel_token tok)
{
	struct timespec dl = cancel_deadline_in((uint64_t)seconds * 1000 * MS
	                                        + 2000 * MS);
	char buf[32];
	size_t n;

	int rc = cancel_read(fd, buf, sizeof buf - 1, &n, &dl, tok);
	if (rc != 0)
		return rc;
	buf[n] = '\0';
	return sscanf(buf, "in stock %d", &rep->stock) == 1 ? 0 : EPROTO;
}

static int
service_sales_report(struct report *rep, int seconds, cancel_token tok)
{
	struct cancel_callback cb = CANCEL_CALLBACK_INITIALIZER;
	int fd = -1;

	int rc = inventory_ask(&fd, rep->id, seconds, tok);
	if (rc != 0)
		return rc;
	struct hangup h = { fd, rep };
	bool armed = cancel_callback_register(&cb, hang_up_inventory, &h, tok);
	rc = repository_sales_query(rep, seconds, tok);	/* meanwhile */
	if (rc == 0)
		rc = inventory_answer(fd, seconds, rep, tok);
	if (armed && cancel_callback_unregister(&cb) &&
	    cancel_token_is_canceled(tok))	/* it never ran: close is ours */
		atomic_store(&rep->released_inventory, true);
	close(fd);
	return rc;
}

/* ---------------- controller: one request, one source */

struct request {
	int fd;				/* the client */
	struct cancel_source src;	/* the request */
	struct cancel_source gone;	/* canceled when the client leaves */
	struct cancel_callback left;	/* on gone: cancels src */
	struct cancel_watch watch;	/* cancels gone on a hang-up */
};

/* Callback (on libcancel's thread): the hang-up watch saw the client
 * leave. A client that half-closes its side is taken as gone (HTTP
 * clients wait for the answer with their side open). */
static void
client_left(void *arg)
{
	struct request *r = arg;

	cancel_source_cancel_with_cause(&r->src, ECONNRESET,
	                                "client disconnected");
}

static void
reply(int fd, const char *status, const char *body)
{
	struct timespec dl = cancel_deadline_in(1000 * MS);
	char buf[512];
	size_t done;

	int len = snprintf(buf, sizeof buf, "HTTP/1.1 %s\r\n"
	                   "Content-Type: text/plain\r\n"
	                   "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
	                   status, strlen(body), body);
	/* No token: an answer should go out even during shutdown; the
	 * deadline keeps a client that does not read from holding us. */
	cancel_write(fd, buf, (size_t)len, &done, &dl, CANCEL_TOKEN_NONE);
}

static void
controller_sales_report(int id, int fd, const char *target, int seconds,
                        long deadline_ms)
{
	cancel_token shutdown_tok = cancel_source_token(&shutdown_src);
	struct request r = { .fd = fd };
	struct report rep = { .id = id };
	char body[160], released[64];

	/* Linked to one parent: allocates nothing, cannot fail. */
	cancel_source_init_linked(&r.src, &shutdown_tok, 1);
	cancel_token tok = cancel_source_token(&r.src);
	cancel_source_init(&r.gone);
	cancel_callback_register(&r.left, client_left, &r,
	                         cancel_source_token(&r.gone));
	uint64_t start = now_ns();
	if (deadline_ms > 0)
		cancel_source_cancel_after(&r.src, (uint64_t)deadline_ms * MS);
	/* No thread: libcancel's own thread watches every client. */
	bool watching = cancel_watch_hangup(&r.watch, fd, 0, &r.gone) == 0;
	say("req %d GET %s: started", id, target);

	int rc = service_sales_report(&rep, seconds, tok);
	uint64_t end = now_ns();

	if (watching)		/* done: stop watching (before any close) */
		cancel_watch_stop(&r.watch);
	cancel_callback_unregister(&r.left);
	bool db = atomic_load(&rep.released_db);
	bool inv = atomic_load(&rep.released_inventory);
	snprintf(released, sizeof released, "%s%s%s",
	         db ? "db connection" : "", db && inv ? ", " : "",
	         inv ? "inventory socket" : db ? "" : "nothing held");

	if (rc == 0) {
		snprintf(body, sizeof body, "sales report: %ld orders in %d s, "
		         "%d items in stock\n", rep.orders, seconds, rep.stock);
		reply(fd, "200 OK", body);
		atomic_fetch_add(&n_completed, 1);
		say("req %d GET %s: completed in %.0f ms", id, target,
		    ms(start, end));
	} else if (!cancel_token_is_canceled(tok)) {
		/* A wait's own deadline ran out (the inventory's): a
		 * timeout too. */
		reply(fd, rc == ETIMEDOUT ? "504 Gateway Timeout" :
		          "502 Bad Gateway", strerror(rc));
		say("req %d GET %s: failed: %s", id, target, strerror(rc));
	} else {
		/* Canceled: by whom, why and when. The reason picks the
		 * answer; a timeout answers 504 whether it is this source's
		 * deadline (the waits return ECANCELED, the reason is
		 * ETIMEDOUT) or a wait's own (rc ETIMEDOUT, above). */
		struct cancel_cause c;
		cancel_token_cause(tok, &c);
		if (c.reason == ETIMEDOUT)
			reply(fd, "504 Gateway Timeout", "deadline passed\n");
		else if (c.reason != ECONNRESET)
			reply(fd, "503 Service Unavailable", "shutting down\n");
		atomic_fetch_add(&n_canceled, 1);
		uint64_t when = (uint64_t)c.when.tv_sec * 1000000000u +
		                (uint64_t)c.when.tv_nsec;
		say("req %d GET %s: canceled by %s (%s) %.1f ms after it was "
		    "requested; released: %s", id, target,
		    c.origin == &shutdown_src ? "shutdown" :
		    c.origin == &r.src ? "the request" : "?",
		    c.msg != NULL ? c.msg : strerror(c.reason),
		    ms(when, end), released);
	}
	/* Children first; neither can be busy any more. */
	if (cancel_source_destroy(&r.gone) != 0 ||
	    cancel_source_destroy(&r.src) != 0)
		say("req %d: cannot destroy its sources", id);
}

/* ---------------- HTTP: read a request, route it */

struct conn {
	int id;
	int fd;
};

/* Read the request head, up to its blank line, within 5 s. */
static int
read_request(int fd, char *buf, size_t size)
{
	struct timespec dl = cancel_deadline_in(5000 * MS);
	cancel_token tok = cancel_source_token(&shutdown_src);
	size_t len = 0, n;

	buf[0] = '\0';
	while (strstr(buf, "\r\n\r\n") == NULL) {
		if (len + 1 >= size)
			return EMSGSIZE;
		int rc = cancel_read(fd, buf + len, size - 1 - len, &n, &dl,
		                     tok);
		if (rc != 0)
			return rc;
		if (n == 0)
			return ECONNRESET;
		len += n;
		buf[len] = '\0';
	}
	return 0;
}

/* The value of query parameter @name in @target, or @def. */
static long
param(const char *target, const char *name, long def)
{
	size_t len = strlen(name);

	for (const char *q = strchr(target, '?'); q; q = strchr(q, '&')) {
		q++;
		if (strncmp(q, name, len) == 0 && q[len] == '=')
			return strtol(q + len + 1, NULL, 10);
	}
	return def;
}

static void *
serve_connection(void *arg)
{
	struct conn *c = arg;
	char req[2048], target[256];

	int rc = read_request(c->fd, req, sizeof req);
	if (rc != 0) {
		say("req %d: no request: %s", c->id, strerror(rc));
	} else if (sscanf(req, "GET %255s HTTP/1.", target) != 1) {
		reply(c->fd, "400 Bad Request", "only GET is served\n");
	} else if (strncmp(target, "/reports/sales", 14) != 0 ||
	           (target[14] != '\0' && target[14] != '?')) {
		reply(c->fd, "404 Not Found", "try /reports/sales?seconds=3\n");
		say("req %d GET %s: not found", c->id, target);
	} else {
		long seconds = param(target, "seconds", 3);
		atomic_fetch_add(&n_requests, 1);
		controller_sales_report(c->id, c->fd, target,
		                        seconds < 0 ? 0 : seconds > 60 ? 60 :
		                        (int)seconds,
		                        param(target, "deadline_ms", 0));
	}
	close(c->fd);
	free(c);
	return NULL;
}

/* ---------------- the inventory service: slow, but it listens */

static void *
inventory_connection(void *arg)
{
	int fd = (int)(intptr_t)arg, seconds, id;
	cancel_token tok = cancel_source_token(&shutdown_src);
	struct timespec dl = cancel_deadline_in(1000 * MS);
	char buf[48];
	size_t n;

	if (cancel_read(fd, buf, sizeof buf - 1, &n, &dl, tok) != 0)
		goto out;
	buf[n] = '\0';
	if (sscanf(buf, "stock %d %d", &seconds, &id) != 2)
		goto out;
	/* Look the stock up for N seconds, unless the caller hangs up. */
	uint64_t start = now_ns();
	struct pollfd p = { .fd = fd, .events = POLLRDHUP };
	dl = cancel_deadline_in((uint64_t)seconds * 1000 * MS);
	int rc = cancel_poll(&p, 1, &dl, tok);
	if (rc == ETIMEDOUT) {
		dl = cancel_deadline_in(1000 * MS);
		cancel_write(fd, "in stock 42\n", 12, &n, &dl, tok);
	} else if (rc == 0) {
		say("inventory: req %d hung up after %.0f ms; lookup stopped",
		    id, ms(start, now_ns()));
	}
out:
	close(fd);
	return NULL;
}

static void *
inventory_service(void *arg)
{
	int lfd = (int)(intptr_t)arg, fd, rc;
	cancel_token tok = cancel_source_token(&shutdown_src);

	while ((rc = cancel_accept(lfd, &fd, NULL, NULL, NULL, tok)) !=
	       ECANCELED) {
		if (rc != 0)
			cancel_sleep(100 * MS, tok);	/* EMFILE... */
		else if (!spawn(inventory_connection, (void *)(intptr_t)fd))
			close(fd);
	}
	return NULL;
}

/* ---------------- main: listen, accept until shutdown, join */

/* A socket listening on 127.0.0.1:@port (0: any free one); -1 on error. */
static int
listen_on(int port, struct sockaddr_in *a)
{
	socklen_t alen = sizeof *a;
	int one = 1;

	*a = (struct sockaddr_in){ .sin_family = AF_INET,
		.sin_port = htons((uint16_t)port),
		.sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (bind(fd, (struct sockaddr *)a, sizeof *a) != 0 ||
	    listen(fd, 64) != 0 ||
	    getsockname(fd, (struct sockaddr *)a, &alen) != 0) {
		close(fd);
		return -1;
	}
	return fd;
}

int
main(int argc, char **argv)
{
	cancel_token tok = cancel_source_token(&shutdown_src);
	struct sockaddr_in addr;
	pthread_t inventory;
	int port = 0, fd;

	if (argc == 3 && strcmp(argv[1], "--port") == 0) {
		port = atoi(argv[2]);
	} else if (argc != 1) {
		fprintf(stderr, "usage: server [--port N]\n");
		return 2;
	}
	int rc = cancel_source_cancel_on_signal(&shutdown_src, SIGINT);
	if (rc == 0)
		rc = cancel_source_cancel_on_signal(&shutdown_src, SIGTERM);
	int lfd = listen_on(port, &addr);
	int ifd = listen_on(0, &inventory_addr);
	if (rc != 0 || lfd < 0 || ifd < 0 ||
	    pthread_create(&inventory, NULL, inventory_service,
	                   (void *)(intptr_t)ifd) != 0) {
		fprintf(stderr, "server: cannot start: %s\n",
		        strerror(rc ? rc : errno));
		return 1;
	}
	printf("listening on 127.0.0.1:%d\n", ntohs(addr.sin_port));
	fflush(stdout);
	say("inventory service on 127.0.0.1:%d",
	    ntohs(inventory_addr.sin_port));

	for (int id = 1; (rc = cancel_accept(lfd, &fd, NULL, NULL, NULL,
	                                     tok)) != ECANCELED;) {
		reap(false);
		struct conn *c = rc == 0 ? malloc(sizeof *c) : NULL;
		if (c != NULL)
			*c = (struct conn){ id++, fd };
		if (c != NULL && spawn(serve_connection, c))
			continue;
		say("server: cannot serve: %s", strerror(rc ? rc : ENOMEM));
		if (rc == 0)
			close(fd);
		free(c);
		cancel_sleep(100 * MS, tok);
	}

	say("shutting down: not accepting any more, joining the threads");
	pthread_join(inventory, NULL);
	reap(true);
	close(lfd);
	close(ifd);
	say("shutdown: %d requests: %d completed, %d canceled",
	    atomic_load(&n_requests), atomic_load(&n_completed),
	    atomic_load(&n_canceled));
	/* Give the signals their old dispositions back. */
	cancel_signal_restore(SIGINT);
	cancel_signal_restore(SIGTERM);
	return 0;
}
