/*
 * loop_glib: libcancel in a GLib program.
 *
 * 1. The queue as a GSource: g_unix_fd_add() on cancel_queue_fd(), so
 *    callbacks registered with cancel_callback_register_queued() run on
 *    the GMainLoop's thread, whoever canceled.
 * 2. GCancellable -> libcancel: g_cancellable_connect() a handler that
 *    cancels a libcancel source. GLib runs the handler on the thread that
 *    calls g_cancellable_cancel() (or at once inside connect when it is
 *    already canceled); cancel_source_cancel() is safe from any thread.
 *    Disconnect (never from inside the handler: it would wait for itself)
 *    before destroying the source.
 * 3. libcancel -> GCancellable: a plain callback on a libcancel token
 *    calls g_cancellable_cancel() (thread-safe), here from the library
 *    thread when a deadline passes, which ends a g_input_stream_read()
 *    blocked on a socket with G_IO_ERROR_CANCELLED. A plain callback, not
 *    a queued one: the thread that would run the queue is the one blocked.
 * Exits 0 when both bridges worked, the read ending at about its deadline.
 */
#include <cancel.h>

#include <gio/gio.h>
#include <glib-unix.h>
#include <stdio.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static struct cancel_queue queue;
static GMainLoop *loop;
static int ok_a;

static gboolean
on_queue(gint fd, GIOCondition cond, gpointer data)
{
	(void)fd, (void)cond, (void)data;
	cancel_queue_run(&queue); /* runs the callbacks, clears the fd */
	return G_SOURCE_CONTINUE;
}

/* On the canceling thread (GLib's rule): just cancel the source. */
static void
gcancellable_to_source(GCancellable *gc, gpointer src)
{
	(void)gc;
	cancel_source_cancel(src);
}

/* Queued on the source: runs on the main loop thread. */
static void
on_source_canceled(void *arg)
{
	(void)arg;
	printf("a: GCancellable canceled -> libcancel source canceled; "
	       "its callback ran on the main loop\n");
	ok_a = 1;
	g_main_loop_quit(loop);
}

static gboolean
cancel_it(gpointer gc)
{
	g_cancellable_cancel(gc);
	return G_SOURCE_REMOVE;
}

static gboolean
give_up(gpointer data)
{
	(void)data;
	g_main_loop_quit(loop); /* ok_a stays 0 */
	return G_SOURCE_REMOVE;
}

/* A libcancel callback (any thread) that cancels a GCancellable. */
static void
source_to_gcancellable(void *gc)
{
	g_cancellable_cancel(gc);
}

static double
now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

int
main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (cancel_queue_init(&queue) != 0)
		return 1;
	guint qid = g_unix_fd_add(cancel_queue_fd(&queue), G_IO_IN, on_queue,
	                          NULL);
	loop = g_main_loop_new(NULL, FALSE);

	/* a: a GCancellable canceled from the loop in 50 ms. */
	struct cancel_source src_a;
	struct cancel_callback cb_a;
	GCancellable *gc_a = g_cancellable_new();
	cancel_source_init(&src_a);
	cancel_callback_register_queued(&cb_a, on_source_canceled, NULL,
	                                &queue, cancel_source_token(&src_a));
	gulong id = g_cancellable_connect(
	        gc_a, G_CALLBACK(gcancellable_to_source), &src_a, NULL);
	g_timeout_add(50, cancel_it, gc_a);
	guint guard = g_timeout_add(5000, give_up, NULL);
	g_main_loop_run(loop);
	g_source_remove(guard);
	g_cancellable_disconnect(gc_a, id); /* before the source goes */
	if (ok_a)
		cancel_callback_unregister(&cb_a); /* ran: false */
	if (!ok_a || cancel_source_destroy(&src_a) != 0)
		return 1;
	g_object_unref(gc_a);

	/* b: a blocking GIO read on a socket nobody writes to, and a
	 * libcancel deadline 200 ms away. */
	int sv[2];
	GError *err = NULL;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
		return 1;
	GSocket *sock = g_socket_new_from_fd(sv[0], &err); /* owns sv[0] */
	if (sock == NULL)
		return 1;
	GSocketConnection *conn =
	        g_socket_connection_factory_create_connection(sock);
	GInputStream *in = g_io_stream_get_input_stream(G_IO_STREAM(conn));
	GCancellable *gc_b = g_cancellable_new();
	struct cancel_source src_b;
	struct cancel_callback cb_b;
	cancel_source_init(&src_b);
	cancel_callback_register(&cb_b, source_to_gcancellable, gc_b,
	                         cancel_source_token(&src_b));
	double t0 = now_ms();
	cancel_source_cancel_after(&src_b, 200 * 1000000ull);
	char buf[16];
	gssize n = g_input_stream_read(in, buf, sizeof(buf), gc_b, &err);
	double ms = now_ms() - t0;
	int ok_b = n < 0 && g_error_matches(err, G_IO_ERROR,
	                                     G_IO_ERROR_CANCELLED) &&
	           ms >= 195 && ms < 2000;
	printf("b: libcancel deadline -> GCancellable: read returned %s "
	       "after %.0f ms\n", err != NULL ? err->message : "data", ms);
	cancel_callback_unregister(&cb_b); /* waits if it still runs */
	g_clear_error(&err);
	if (cancel_source_destroy(&src_b) != 0)
		return 1;
	g_object_unref(gc_b);
	g_object_unref(conn);
	g_object_unref(sock);
	close(sv[1]);

	g_source_remove(qid);
	g_main_loop_unref(loop);
	if (cancel_queue_destroy(&queue) != 0)
		return 1;
	printf("%s\n", ok_b ? "ok" : "FAILED");
	return ok_b ? 0 : 1;
}
