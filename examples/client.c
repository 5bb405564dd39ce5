/*
 * client: a tiny HTTP client, for the demo and the tests where curl is not
 * installed. Like `curl -s --max-time S URL`, it prints the body and gives
 * up after S seconds. The limit is one absolute deadline, computed once and
 * passed to every call (connect, write, each read); Ctrl-C cancels the
 * token. Giving up closes the socket: the server sees the client leave.
 *
 * usage: client [--max-time SECONDS] http://127.0.0.1:PORT/PATH
 * exit:  0 answer received, 7 could not connect, 28 gave up (timed out),
 *        130 interrupted, 1 other error (curl's numbers where it has one)
 */
#include <cancel.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static struct cancel_source interrupted = CANCEL_SOURCE_INITIALIZER;

int
main(int argc, char **argv)
{
	double max_time = 0;
	char path[512], resp[16384];
	int port;

	if (argc == 4 && strcmp(argv[1], "--max-time") == 0)
		max_time = atof(argv[2]);
	if ((argc != 2 && argc != 4) || sscanf(argv[argc - 1],
	    "http://127.0.0.1:%d%511s", &port, path) != 2) {
		fprintf(stderr, "usage: client [--max-time SECONDS] "
		        "http://127.0.0.1:PORT/PATH\n");
		return 2;
	}
	cancel_source_cancel_on_signal(&interrupted, SIGINT);
	cancel_token tok = cancel_source_token(&interrupted);
	struct timespec deadline, *dl = NULL;
	if (max_time > 0) {
		deadline = cancel_deadline_in((uint64_t)(max_time * 1e9));
		dl = &deadline;
	}

	struct sockaddr_in a = { .sin_family = AF_INET,
		.sin_port = htons((uint16_t)port),
		.sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return 7;
	int rc = cancel_connect(fd, (struct sockaddr *)&a, sizeof a, dl, tok);
	if (rc != 0 && rc != ETIMEDOUT && rc != ECANCELED) {
		fprintf(stderr, "client: connect: %s\n", strerror(rc));
		close(fd);
		return 7;
	}
	int len = snprintf(resp, sizeof resp, "GET %s HTTP/1.1\r\n"
	                   "Host: 127.0.0.1:%d\r\nConnection: close\r\n\r\n",
	                   path, port);
	size_t n = 1, got = 0;
	if (rc == 0)
		rc = cancel_write(fd, resp, (size_t)len, &n, dl, tok);
	while (rc == 0 && n > 0 && got < sizeof resp - 1) {
		rc = cancel_read(fd, resp + got, sizeof resp - 1 - got, &n,
		                 dl, tok);
		got += rc == 0 ? n : 0;
	}
	close(fd);
	resp[got] = '\0';

	if (rc == ETIMEDOUT) {
		fprintf(stderr, "client: gave up after %g s\n", max_time);
		return 28;
	}
	if (rc == ECANCELED)
		return 130;
	if (rc != 0) {
		fprintf(stderr, "client: %s\n", strerror(rc));
		return 1;
	}
	char *body = strstr(resp, "\r\n\r\n");
	fputs(body != NULL ? body + 4 : resp, stdout);
	return 0;
}
