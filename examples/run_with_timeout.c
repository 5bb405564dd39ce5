/*
 * run_with_timeout: a timeout(1) built on cancel_process_spawn/_wait.
 *
 *   run_with_timeout [--grace SECONDS] DURATION [--] COMMAND [ARG...]
 *
 * Runs COMMAND in a process group of its own, so that stopping it stops
 * everything it started (a shell's pipeline). When DURATION seconds pass,
 * the group gets SIGTERM, then SIGKILL if it is still there after the
 * grace (default 2 s), and the exit status is 124, or 137 when SIGKILL
 * was needed, as coreutils timeout -k does. A child in its own group no
 * longer gets the terminal's Ctrl-C: SIGINT (and SIGTERM, SIGHUP) cancel
 * the wait's source instead, which stops the child the same way and exits
 * 130. Otherwise the exit status is the child's (128 + N if it died of
 * signal N); 125 for a usage error, 126/127 when COMMAND cannot run.
 */
#include <cancel.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

static struct cancel_source run = CANCEL_SOURCE_INITIALIZER;

static int
usage(void)
{
	fprintf(stderr, "usage: run_with_timeout [--grace SECONDS] DURATION "
	                "[--] COMMAND [ARG...]\n");
	return 125;
}

/* Seconds (fractions allowed) to nanoseconds; false if malformed. */
static bool
parse_seconds(const char *s, uint64_t *ns)
{
	char *end;
	double d = strtod(s, &end);
	if (end == s || *end != '\0' || !(d >= 0) || d > 1e9)
		return false;
	*ns = (uint64_t)(d * 1e9);
	return true;
}

int
main(int argc, char **argv)
{
	uint64_t grace = 2000000000u, limit;
	int i = 1;
	if (i + 1 < argc && strcmp(argv[i], "--grace") == 0) {
		if (!parse_seconds(argv[i + 1], &grace))
			return usage();
		i += 2;
	}
	if (i >= argc || !parse_seconds(argv[i], &limit))
		return usage();
	i++;
	if (i < argc && strcmp(argv[i], "--") == 0)
		i++;
	if (i >= argc)
		return usage();

	/* Ctrl-C and friends become a cancel of this run. */
	int sigs[] = { SIGINT, SIGTERM, SIGHUP };
	for (size_t k = 0; k < sizeof(sigs) / sizeof(sigs[0]); k++) {
		if (cancel_source_cancel_on_signal(&run, sigs[k]) != 0) {
			fprintf(stderr, "run_with_timeout: cannot catch "
			                "signal %d\n", sigs[k]);
			return 125;
		}
	}

	pid_t pid;
	int rc = cancel_process_spawn(&pid, argv[i], &argv[i], NULL, NULL,
	                              CANCEL_SPAWN_NEW_GROUP |
	                                  CANCEL_SPAWN_SEARCH_PATH);
	if (rc != 0) {
		fprintf(stderr, "run_with_timeout: %s: %s\n", argv[i],
		        strerror(rc));
		return rc == ENOENT ? 127 : 126;
	}

	struct timespec deadline = cancel_deadline_in(limit);
	int status = 0;
	rc = cancel_process_wait(pid, &status, grace, &deadline,
	                         cancel_source_token(&run));
	/* The child is reaped whatever rc says: no zombie, no stray group. */
	bool killed = WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
	if (rc == ETIMEDOUT)
		return killed ? 128 + SIGKILL : 124;
	if (rc == ECANCELED)
		return 130;
	if (rc != 0) {
		fprintf(stderr, "run_with_timeout: wait: %s\n", strerror(rc));
		return 125;
	}
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return WEXITSTATUS(status);
}
