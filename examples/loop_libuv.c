/*
 * loop_libuv: libcancel's queue on a libuv loop. Every cancel callback,
 * whichever thread canceled (deadlines fire on the library thread), runs
 * on the loop thread: a uv_poll_t watches cancel_queue_fd() and runs the
 * queue when it is readable.
 *
 * Three requests, each with a source linked to a shutdown source and its
 * own deadline; a uv timer stands for each one's work:
 *   fast  work 50 ms,  deadline 250 ms   -> completes
 *   slow  work 1 s,    deadline 250 ms   -> its deadline cancels it
 *   hold  work 1 s,    deadline 2 s      -> shutdown at 400 ms cancels it
 * Exits 0 when each request ended for its reason, at about the right time.
 */
#include <cancel.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <uv.h>

struct req {
	const char *name;
	struct cancel_source src;
	struct cancel_callback on_cancel; /* queued: runs on the loop */
	uv_timer_t work;                  /* stands for the real work */
};

static uv_loop_t *loop;
static uv_poll_t queue_poll;
static uv_timer_t stop_timer; /* stands for a uv_signal_t on SIGTERM */
static struct cancel_queue queue;
static struct cancel_source shutdown_src = CANCEL_SOURCE_INITIALIZER;
static int live, stopping, ended[3]; /* completed, deadline, shutdown */
static uint64_t t0, at[3];

/* Once shut down and every request ended, close the last handle. */
static void
maybe_stop(void)
{
	if (stopping && live == 0) {
		uv_close((uv_handle_t *)&queue_poll, NULL);
		uv_close((uv_handle_t *)&stop_timer, NULL);
	}
}

static void
req_free(uv_handle_t *h)
{
	free(h->data);
}

static void
req_end(struct req *r, int how, const char *why)
{
	at[how] = uv_now(loop) - t0;
	printf("%4llu ms  %-4s %s\n", (unsigned long long)at[how], r->name,
	       why);
	ended[how]++;
	if (cancel_source_destroy(&r->src) != 0)
		abort();
	uv_close((uv_handle_t *)&r->work, req_free); /* stops the timer */
	live--;
	maybe_stop();
}

/* Runs on the loop thread, from on_queue(), whoever canceled. */
static void
on_cancel(void *arg)
{
	struct req *r = arg;
	if (cancel_token_reason(cancel_source_token(&r->src)) == ETIMEDOUT)
		req_end(r, 1, "canceled by its deadline");
	else
		req_end(r, 2, "canceled by shutdown");
}

static void
on_work_done(uv_timer_t *t)
{
	struct req *r = t->data;
	/* True: the cancel callback will never run, the request is ours. */
	if (cancel_callback_unregister(&r->on_cancel))
		req_end(r, 0, "completed");
}

static void
req_start(const char *name, uint64_t work_ms, uint64_t deadline_ms)
{
	struct req *r = calloc(1, sizeof(*r));
	cancel_token parent = cancel_source_token(&shutdown_src);
	if (r == NULL || cancel_source_init_linked(&r->src, &parent, 1) != 0)
		abort();
	r->name = name;
	cancel_source_cancel_after(&r->src, deadline_ms * 1000000);
	cancel_callback_register_queued(&r->on_cancel, on_cancel, r, &queue,
	                                cancel_source_token(&r->src));
	uv_timer_init(loop, &r->work);
	r->work.data = r;
	uv_timer_start(&r->work, on_work_done, work_ms, 0);
	live++;
}

static void
on_queue(uv_poll_t *h, int status, int events)
{
	(void)h, (void)status, (void)events;
	cancel_queue_run(&queue); /* runs the callbacks, clears the fd */
}

/* Even from the loop thread, a cancel only queues: the callbacks run
 * from on_queue() on the next turn of the loop. */
static void
on_stop_timer(uv_timer_t *t)
{
	(void)t;
	cancel_source_cancel(&shutdown_src);
}

static void
on_shutdown(void *arg)
{
	(void)arg;
	printf("%4llu ms  shutdown delivered on the loop thread\n",
	       (unsigned long long)(uv_now(loop) - t0));
	stopping = 1;
	maybe_stop();
}

int
main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	loop = uv_default_loop();
	if (cancel_queue_init(&queue) != 0 ||
	    uv_poll_init(loop, &queue_poll, cancel_queue_fd(&queue)) != 0)
		return 1;
	uv_poll_start(&queue_poll, UV_READABLE, on_queue);
	struct cancel_callback stop_cb;
	cancel_callback_register_queued(&stop_cb, on_shutdown, NULL, &queue,
	                                cancel_source_token(&shutdown_src));
	t0 = uv_now(loop);
	req_start("fast", 50, 250);
	req_start("slow", 1000, 250);
	req_start("hold", 1000, 2000);
	uv_timer_init(loop, &stop_timer);
	uv_timer_start(&stop_timer, on_stop_timer, 400, 0);

	uv_run(loop, UV_RUN_DEFAULT);
	if (uv_loop_close(loop) != 0 || cancel_queue_destroy(&queue) != 0 ||
	    cancel_source_destroy(&shutdown_src) != 0)
		return 1;
	/* Each ended once, for its reason, before its work would have. */
	int ok = ended[0] == 1 && ended[1] == 1 && ended[2] == 1 &&
	         at[1] >= 240 && at[1] < 1000 && at[2] >= 390 && at[2] < 1000;
	printf("%s\n", ok ? "ok" : "FAILED");
	return ok ? 0 : 1;
}
