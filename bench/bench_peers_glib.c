/*
 * The GLib peer of bench_core: GCancellable, timed with the same patterns
 * as libcancel. Its own translation unit (-O2, gio-2.0 from pkg-config);
 * bench_core.c calls the kernels below and owns the clock (bench_begin/
 * bench_end wrap only the timed part; setup and teardown stay outside).
 *
 * Keeping the work alive: BENCH_ESCAPE(p) and BENCH_USE(x), see
 * bench_util.h.
 */
#include <gio/gio.h>
#include <stdint.h>
#include <stdlib.h>

#include "bench_util.h"

static long counter;

/* The callback of every row: what libcancel's bump() does. */
static void
on_cancel(GCancellable *c, gpointer data)
{
	(void)c;
	++*(long *)data;
}

void
bglib_check(uint64_t n, unsigned arg)
{
	GCancellable *c = g_cancellable_new();
	bench_begin();
	for (uint64_t i = 0; i < n; i++) {
		gboolean r = g_cancellable_is_cancelled(c);
		BENCH_USE(r);
		BENCH_CLOBBER();
	}
	bench_end();
	g_object_unref(c);
}

void
bglib_reg(uint64_t n, unsigned arg)
{
	GCancellable *c = g_cancellable_new();
	bench_begin();
	for (uint64_t i = 0; i < n; i++) {
		gulong id = g_cancellable_connect(c, G_CALLBACK(on_cancel),
		                                  &counter, NULL);
		g_cancellable_disconnect(c, id);
	}
	bench_end();
	g_object_unref(c);
}

void
bglib_source(uint64_t n, unsigned arg)
{
	bench_begin();
	for (uint64_t i = 0; i < n; i++) {
		GCancellable *c = g_cancellable_new();
		BENCH_ESCAPE(c);
		g_object_unref(c);
	}
	bench_end();
}

void
bglib_cancel(uint64_t n, unsigned ncb)
{
	size_t batch = bench_batch(ncb);
	GCancellable **cs = malloc(batch * sizeof(*cs));
	if (cs == NULL)
		abort();
	for (uint64_t done = 0; done < n;) {
		size_t k = n - done < batch ? (size_t)(n - done) : batch;
		for (size_t i = 0; i < k; i++) {
			cs[i] = g_cancellable_new();
			for (unsigned j = 0; j < ncb; j++)
				g_cancellable_connect(cs[i],
				                      G_CALLBACK(on_cancel),
				                      &counter, NULL);
		}
		bench_begin();
		for (size_t i = 0; i < k; i++)
			g_cancellable_cancel(cs[i]);
		bench_end();
		for (size_t i = 0; i < k; i++)
			g_object_unref(cs[i]);
		done += k;
	}
	free(cs);
}

void *
bglib_shared_new(void)
{
	return g_cancellable_new();
}

/* One thread's half of the two-thread row (timed by the caller). */
void
bglib_reg_loop(void *ctx, uint64_t n)
{
	GCancellable *c = ctx;
	for (uint64_t i = 0; i < n; i++) {
		gulong id = g_cancellable_connect(c, G_CALLBACK(on_cancel),
		                                  &counter, NULL);
		g_cancellable_disconnect(c, id);
	}
}

void
bglib_shared_free(void *ctx)
{
	g_object_unref(ctx);
}

const char *
bglib_version(void)
{
	static char buf[32];
	g_snprintf(buf, sizeof(buf), "GLib %u.%u.%u", glib_major_version,
	           glib_minor_version, glib_micro_version);
	return buf;
}
