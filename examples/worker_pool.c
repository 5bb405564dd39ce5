/*
 * worker_pool: stopping a pool of threads with one shutdown source.
 *
 * The process-wide shutdown source is a static, zero-initialized object:
 * no init call. Workers sleep on the job queue's condition variable with
 * cancel_cond_wait(), which also wakes when that source is canceled. main()
 * queues a few jobs, waits until they are done, then cancels once: every
 * worker wakes with ECANCELED, leaves its loop with the mutex released, and
 * is joined. No "stop" flag to poll, no sentinel jobs, no broadcast by hand.
 */
#include <cancel.h>

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define NWORKERS 3
#define NJOBS 8

static struct cancel_source shutdown_src = CANCEL_SOURCE_INITIALIZER;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t queued_cv = PTHREAD_COND_INITIALIZER;	/* job added */
static pthread_cond_t done_cv = PTHREAD_COND_INITIALIZER;	/* job done */
static int jobs[NJOBS];
static int nqueued, ntaken, ndone;	/* jobs[ntaken..nqueued) wait */

static void *
worker(void *arg)
{
	int id = (int)(intptr_t)arg, handled = 0, rc = 0;
	cancel_token tok = cancel_source_token(&shutdown_src);

	pthread_mutex_lock(&mu);
	for (;;) {
		while (ntaken == nqueued && rc == 0)
			rc = cancel_cond_wait(&queued_cv, &mu, NULL, tok);
		if (rc != 0)
			break;		/* ECANCELED: shutting down */
		int job = jobs[ntaken++];
		pthread_mutex_unlock(&mu);

		/* The job: a cancellable sleep of a few ms stands for work. */
		cancel_sleep((uint64_t)job * 1000000u, tok);
		handled++;

		pthread_mutex_lock(&mu);
		ndone++;
		pthread_cond_signal(&done_cv);
	}
	pthread_mutex_unlock(&mu);
	printf("worker %d: handled %d jobs, stopped: %s\n", id, handled,
	       strerror(rc));
	return (void *)(intptr_t)rc;
}

int
main(void)
{
	pthread_t threads[NWORKERS];
	int failures = 0;

	for (int i = 0; i < NWORKERS; i++)
		pthread_create(&threads[i], NULL, worker, (void *)(intptr_t)i);

	pthread_mutex_lock(&mu);
	for (int j = 0; j < NJOBS; j++) {
		jobs[nqueued++] = 1 + j % 4;
		pthread_cond_signal(&queued_cv);
	}
	while (ndone < NJOBS)
		pthread_cond_wait(&done_cv, &mu);
	pthread_mutex_unlock(&mu);
	printf("main: %d jobs done, shutting down\n", NJOBS);

	/* One call wakes every worker, wherever it waits. */
	cancel_source_cancel(&shutdown_src);

	for (int i = 0; i < NWORKERS; i++) {
		void *res;
		pthread_join(threads[i], &res);
		if ((intptr_t)res != ECANCELED)
			failures++;
	}
	printf("main: %d workers joined, %d did not stop with ECANCELED\n",
	       NWORKERS, failures);
	return failures == 0 ? 0 : 1;
}
