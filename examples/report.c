/*
 * report: a command-line report generator that stops cleanly.
 *
 * One source stands for "this run". Ctrl-C (SIGINT) and SIGTERM cancel it
 * with reason EINTR, --timeout with reason ETIMEDOUT. Its token goes to
 * every step as the last parameter: fetching the data is a cancellable
 * wait (it stands for a database query), the processing loop looks at the
 * token every CHECK_EVERY items (one load), and the result is written to a
 * temporary file that is renamed into place only when everything is done.
 * Canceled for any reason, it removes the temporary file (nothing
 * half-written is left behind), says why it stopped and how fast (the
 * token's cause names the signal or the deadline and says when the cancel
 * came), and exits 130 (interrupted) or 124 (timed out, like timeout(1)).
 *
 * usage: report [--items N] [--item-us N] [--fetch-ms N]
 *               [--timeout SECONDS] [--out PATH]
 */
#include <cancel.h>

#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CHECK_EVERY 10		/* items between two looks at the token */

static struct cancel_source run = CANCEL_SOURCE_INITIALIZER;

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

/* A bar that redraws itself on a terminal, a line per 10% otherwise. */
static void
show_progress(long done, long total, uint64_t start, bool tty)
{
	static long shown = -1;
	long pct = total > 0 ? done * 100 / total : 100;

	if (tty) {
		int fill = (int)(pct * 30 / 100);
		printf("\r  [%.*s%*s] %3ld%%  %ld/%ld items", fill,
		       "##############################", 30 - fill, "", pct,
		       done, total);
		fflush(stdout);
	} else if (pct / 10 > shown) {
		shown = pct / 10;
		printf("progress: %3ld%% (%ld/%ld items, %.0f ms)\n", pct,
		       done, total, ms(start, now_ns()));
		fflush(stdout);
	}
}

/* The query: a wait that ends early, with ECANCELED, on cancel. */
static int
fetch_data(long fetch_ms, cancel_token tok)
{
	return cancel_sleep((uint64_t)fetch_ms * 1000000u, tok);
}

/* One item: a short sleep stands for CPU work that cannot wait on a
 * token, which is why the loop below checks the token between items. */
static long
process_item(long i, long item_us)
{
	struct timespec d = { item_us / 1000000, item_us % 1000000 * 1000 };

	nanosleep(&d, NULL);
	return i * 7919 % 1000 + 1;	/* the item's sales figure */
}

static int
build_report(FILE *out, long items, long item_us, long fetch_ms,
             uint64_t start, cancel_token tok)
{
	bool tty = isatty(STDOUT_FILENO);
	long total = 0;

	int rc = fetch_data(fetch_ms, tok);
	if (rc != 0)
		return rc;
	for (long i = 0; i < items; i++) {
		if (i % CHECK_EVERY == 0) {
			if (cancel_token_is_canceled(tok))
				return ECANCELED;
			show_progress(i, items, start, tty);
		}
		long v = process_item(i, item_us);
		total += v;
		fprintf(out, "item %ld: %ld\n", i + 1, v);
	}
	fprintf(out, "total: %ld\n", total);
	show_progress(items, items, start, tty);
	if (tty)
		putchar('\n');
	return ferror(out) ? EIO : 0;
}

int
main(int argc, char **argv)
{
	long items = 4000, item_us = 1000, fetch_ms = 300;
	double timeout = 0;
	const char *out = "report.txt";

	for (int i = 1; i < argc; i++) {
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (v && strcmp(argv[i], "--items") == 0)
			items = atol(argv[++i]);
		else if (v && strcmp(argv[i], "--item-us") == 0)
			item_us = atol(argv[++i]);
		else if (v && strcmp(argv[i], "--fetch-ms") == 0)
			fetch_ms = atol(argv[++i]);
		else if (v && strcmp(argv[i], "--timeout") == 0)
			timeout = atof(argv[++i]);
		else if (v && strcmp(argv[i], "--out") == 0)
			out = argv[++i];
		else {
			fprintf(stderr, "usage: report [--items N] "
			        "[--item-us N] [--fetch-ms N] "
			        "[--timeout SECONDS] [--out PATH]\n");
			return 2;
		}
	}
	if (items < 0 || item_us < 0 || fetch_ms < 0 || timeout < 0) {
		fprintf(stderr, "report: negative values make no sense\n");
		return 2;
	}

	/* Everything that may stop this run cancels the one source. */
	cancel_token tok = cancel_source_token(&run);
	int rc = cancel_source_cancel_on_signal(&run, SIGINT);
	if (rc == 0)
		rc = cancel_source_cancel_on_signal(&run, SIGTERM);
	if (rc == 0 && timeout > 0)
		rc = cancel_source_cancel_after(&run,
		                                (uint64_t)(timeout * 1e9));
	if (rc != 0) {
		fprintf(stderr, "report: cannot set up: %s\n", strerror(rc));
		return 1;
	}

	/* Write next to the target, rename at the end. */
	char tmp[PATH_MAX];
	snprintf(tmp, sizeof tmp, "%s.partXXXXXX", out);
	int fd = mkostemp(tmp, O_CLOEXEC);
	FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
	if (f == NULL) {
		fprintf(stderr, "report: %s: %s\n", tmp, strerror(errno));
		return 1;
	}
	printf("report: fetching data (%ld ms), then %ld items -> %s\n",
	       fetch_ms, items, out);
	fflush(stdout);

	uint64_t start = now_ns();
	rc = build_report(f, items, item_us, fetch_ms, start, tok);
	uint64_t stop = now_ns();
	if (fclose(f) != 0 && rc == 0)
		rc = errno;
	if (rc == 0 && rename(tmp, out) != 0)
		rc = errno;
	if (rc != 0)
		unlink(tmp);

	/* Why and when: "SIGINT"/"SIGTERM" with EINTR, or the library's
	 * "deadline passed" with ETIMEDOUT, and the monotonic time of the
	 * cancel itself, however long the run took to notice. */
	struct cancel_cause cause = { 0 };
	cancel_token_cause(tok, &cause);
	uint64_t requested = (uint64_t)cause.when.tv_sec * 1000000000u +
	                     (uint64_t)cause.when.tv_nsec;
	int code = 1;
	if (rc == 0) {
		printf("finished: %ld items in %.0f ms -> %s\n", items,
		       ms(start, stop), out);
		code = 0;
	} else if (rc == ECANCELED) {
		if (isatty(STDOUT_FILENO))
			putchar('\n');
		bool timed_out = cause.reason == ETIMEDOUT;
		printf("canceled: %s (%s) after %.0f ms; stopped %.1f ms "
		       "after the request; removed partial file\n",
		       timed_out ? "timed out" : "interrupted",
		       cause.msg != NULL ? cause.msg : strerror(cause.reason),
		       ms(start, stop), ms(requested, stop));
		code = timed_out ? 124 : 130;
	} else {
		fprintf(stderr, "report: %s\n", strerror(rc));
	}

	/* The handlers point at `run`: put the old dispositions back
	 * before destroying it. */
	if (cancel_signal_restore(SIGINT) != 0 ||
	    cancel_signal_restore(SIGTERM) != 0 ||
	    cancel_source_destroy(&run) != 0) {
		fprintf(stderr, "report: cannot clean up\n");
		return 1;
	}
	return code;
}
