/*
 * fanout: one request, three fetches in parallel, one group.
 *
 * A controller needs three things to answer a request: a row from the
 * database (cancel_sleep stands for the query), a reply from an upstream
 * service (cancel_read on a pipe stands for the network call) and a
 * connection from a pool (cancel_cond_wait on the pool's condvar). Each
 * runs as a member of a cancel_group linked to the client's source. The
 * first failure, or the client leaving, stops the other two at once, and
 * cancel_group_wait() returns only once all three have returned.
 *
 *   request 1: everything answers            -> wait returns 0
 *   request 2: upstream hangs up             -> ECONNRESET, siblings stop
 *              (or never start: go on a canceled group runs nothing)
 *   request 3: the client leaves after 20 ms -> ECANCELED, all three stop
 */
#include <cancel.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct request {
	uint64_t db_ns;                 /* how long the query takes */
	int upstream;                   /* read end of the upstream "socket" */
	pthread_mutex_t mu;             /* the connection pool */
	pthread_cond_t cv;
	int pool_free;
	struct timespec t0;
};

static double
ms_since(const struct timespec *t0)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (t.tv_sec - t0->tv_sec) * 1e3 + (t.tv_nsec - t0->tv_nsec) / 1e6;
}

static int
report(const char *who, int rc, cancel_token tok, struct request *r)
{
	printf("  %-8s %-26s at %5.1f ms", who, rc ? strerror(rc) : "done",
	       ms_since(&r->t0));
	if (rc == ECANCELED)
		printf(" (group canceled: %s)",
		       strerror(cancel_token_reason(tok)));
	printf("\n");
	return rc;
}

static int
fetch_db(void *arg, cancel_token tok)
{
	struct request *r = arg;
	return report("db", cancel_sleep(r->db_ns, tok), tok, r);
}

static int
fetch_upstream(void *arg, cancel_token tok)
{
	struct request *r = arg;
	char reply[64];
	size_t n;
	int rc = cancel_read(r->upstream, reply, sizeof(reply), &n, NULL, tok);
	if (rc == 0 && n == 0)
		rc = ECONNRESET; /* the service hung up: a real failure */
	return report("upstream", rc, tok, r);
}

static int
fetch_pool(void *arg, cancel_token tok)
{
	struct request *r = arg;
	int rc = 0;
	pthread_mutex_lock(&r->mu);
	while (r->pool_free == 0 && rc == 0)
		rc = cancel_cond_wait(&r->cv, &r->mu, NULL, tok);
	if (rc == 0)
		r->pool_free--;
	pthread_mutex_unlock(&r->mu);
	return report("pool", rc, tok, r);
}

/* Stands for a hang-up watch on the client's socket. */
static void *
client_leaves(void *arg)
{
	struct timespec ms20 = {0, 20000000};
	nanosleep(&ms20, NULL);
	cancel_source_cancel_with(arg, ECONNABORTED);
	return NULL;
}

/* One request: the three fetches in a group linked to the client. */
static int
handle(const char *title, uint64_t db_ms, const char *upstream_reply,
       int pool_free, int client_goes)
{
	struct cancel_source client;
	cancel_source_init(&client);
	pthread_t watcher;
	if (client_goes && pthread_create(&watcher, NULL, client_leaves,
	                                  &client) != 0)
		return -1;
	int fds[2];
	if (pipe(fds) != 0)
		return -1;
	if (upstream_reply == NULL)
		close(fds[1]), fds[1] = -1;     /* hangs up */
	else if (*upstream_reply != '\0' &&
	         write(fds[1], upstream_reply, strlen(upstream_reply)) < 0)
		return -1;
	struct request r = {.db_ns = db_ms * 1000000, .upstream = fds[0],
	                    .pool_free = pool_free};
	pthread_mutex_init(&r.mu, NULL);
	pthread_cond_init(&r.cv, NULL);
	clock_gettime(CLOCK_MONOTONIC, &r.t0);
	printf("%s\n", title);

	struct cancel_group g;
	cancel_group_init(&g, 0, cancel_source_token(&client));
	cancel_task_fn fetch[3] = {fetch_db, fetch_upstream, fetch_pool};
	for (int i = 0; i < 3; i++) {
		/* A group already canceled starts nothing: go says why. */
		int go = cancel_group_go(&g, fetch[i], &r);
		if (go != 0)
			printf("  fetch %d  not started: %s\n", i,
			       strerror(go));
	}
	int rc = cancel_group_wait(&g, NULL);
	printf("  => wait: %s after %.1f ms\n\n",
	       rc ? strerror(rc) : "0, all fetched", ms_since(&r.t0));

	if (client_goes)
		pthread_join(watcher, NULL);
	/* Members joined, nothing registered: both succeed. */
	if (cancel_group_destroy(&g) != 0 ||
	    cancel_source_destroy(&client) != 0)
		return 1;
	pthread_cond_destroy(&r.cv);
	pthread_mutex_destroy(&r.mu);
	close(fds[0]);
	if (fds[1] >= 0)
		close(fds[1]);
	return rc;
}

int
main(void)
{
	int a = handle("request 1: everything answers", 20, "42 in stock", 1,
	               0);
	int b = handle("request 2: upstream hangs up", 10000, NULL, 0, 0);
	int c = handle("request 3: the client leaves after 20 ms", 10000, "", 0,
	               1);
	return a == 0 && b == ECONNRESET && c == ECANCELED ? 0 : 1;
}
