/*
 * cancel.h on its own, as a strict C11 user sees it: it is included first
 * and alone, compiled with -std=c11 -pedantic -Werror (no _GNU_SOURCE),
 * and the library is not linked. Checks the initializers, CANCEL_TOKEN_NONE,
 * the inline query, the sizes the ABI promises, and (at compile time,
 * without referencing them) the type of every public call of cancel.h.
 */
#include "cancel.h"

#define CHECK(cond)                                                           \
	do {                                                                  \
		if (!(cond)) {                                                \
			failed = 1;                                           \
			report(#cond, __LINE__);                              \
		}                                                             \
	} while (0)

/* Only cancel.h is included: write the failure with what it brings. */
int printf(const char *fmt, ...);

static int failed;

static void
report(const char *what, int line)
{
	printf("test_header.c:%d: check failed: %s\n", line, what);
}

static int
all_zero(const void *p, size_t n)
{
	const unsigned char *b = (const unsigned char *)p;
	for (size_t i = 0; i < n; i++) {
		if (b[i] != 0)
			return 0;
	}
	return 1;
}

/* The sizes users embed in their own structs (a change bumps SOVERSION). */
#if defined(__x86_64__)
_Static_assert(sizeof(struct cancel_source) <= 192,
               "struct cancel_source grew past 192 bytes");
_Static_assert(sizeof(struct cancel_callback) <= 48,
               "struct cancel_callback grew past 48 bytes");
_Static_assert(sizeof(cancel_token) == sizeof(void *),
               "cancel_token is one pointer");
#endif
_Static_assert(_Alignof(struct cancel_source) >= 8,
               "the state word needs 8-byte alignment");
_Static_assert(CANCEL_NEVER == UINT64_MAX, "CANCEL_NEVER is UINT64_MAX");
_Static_assert(CANCEL_VERSION_MAJOR >= 1, "version macros present");
_Static_assert(CANCEL_VERSION_MINOR >= 0, "version macros present");
_Static_assert(CANCEL_VERSION_PATCH >= 0, "version macros present");

/*
 * The type every public call must have (the contract: argument order,
 * token last). _Generic does not evaluate its operand, so nothing is
 * referenced and nothing is linked.
 */
#define HAS_TYPE(fn, type) _Generic(&(fn), type: 1, default: 0)
#define API(fn, type) _Static_assert(HAS_TYPE(fn, type), #fn " has type " #type)

API(cancel_source_init, void (*)(struct cancel_source *));
API(cancel_source_init_linked,
    int (*)(struct cancel_source *, const cancel_token *, size_t));
API(cancel_source_destroy, int (*)(struct cancel_source *));
API(cancel_source_token, cancel_token (*)(struct cancel_source *));
API(cancel_source_cancel, bool (*)(struct cancel_source *));
API(cancel_source_cancel_with, bool (*)(struct cancel_source *, int));
API(cancel_source_cancel_after, int (*)(struct cancel_source *, uint64_t));
API(cancel_source_cancel_at,
    int (*)(struct cancel_source *, const struct timespec *));
API(cancel_source_cancel_from_signal, bool (*)(struct cancel_source *, int));
API(cancel_signal_prepare, int (*)(void));
API(cancel_source_cancel_on_signal, int (*)(struct cancel_source *, int));

API(cancel_token_is_canceled, bool (*)(cancel_token));
API(cancel_token_can_be_canceled, bool (*)(cancel_token));
API(cancel_token_reason, int (*)(cancel_token));
API(cancel_token_check, int (*)(cancel_token));
API(cancel_token_deadline, bool (*)(cancel_token, struct timespec *));
API(cancel_token_fd, int (*)(cancel_token, int *));

API(cancel_callback_register,
    bool (*)(struct cancel_callback *, cancel_fn, void *, cancel_token));
API(cancel_callback_try_register,
    int (*)(struct cancel_callback *, cancel_fn, void *, cancel_token));
API(cancel_callback_unregister, bool (*)(struct cancel_callback *));
API(cancel_callback_try_unregister, int (*)(struct cancel_callback *));

API(cancel_deadline_in, struct timespec (*)(uint64_t));
API(cancel_wait, int (*)(const struct timespec *, cancel_token));
API(cancel_sleep, int (*)(uint64_t, cancel_token));
API(cancel_sleep_until, int (*)(const struct timespec *, cancel_token));
API(cancel_poll, int (*)(struct pollfd *, nfds_t, const struct timespec *,
                         cancel_token));
API(cancel_cond_wait, int (*)(pthread_cond_t *, pthread_mutex_t *,
                              const struct timespec *, cancel_token));

API(cancel_read, int (*)(int, void *, size_t, size_t *,
                         const struct timespec *, cancel_token));
API(cancel_write, int (*)(int, const void *, size_t, size_t *,
                          const struct timespec *, cancel_token));
API(cancel_accept, int (*)(int, int *, struct sockaddr *, socklen_t *,
                           const struct timespec *, cancel_token));
API(cancel_connect, int (*)(int, const struct sockaddr *, socklen_t,
                            const struct timespec *, cancel_token));
API(cancel_waitpid,
    int (*)(pid_t, int *, const struct timespec *, cancel_token));
API(cancel_watch_hangup,
    int (*)(struct cancel_watch *, int, unsigned, struct cancel_source *));
API(cancel_watch_stop, bool (*)(struct cancel_watch *));

/* Static storage needs no init call. */
static struct cancel_source shutdown_src = CANCEL_SOURCE_INITIALIZER;
static struct cancel_callback static_cb = CANCEL_CALLBACK_INITIALIZER;
static struct cancel_watch static_watch = CANCEL_WATCH_INITIALIZER;

/* Embedded in a caller's struct, initialized with it. */
struct request {
	int id;
	struct cancel_source src;
	struct cancel_callback cb;
	cancel_token tok;
};

int
main(void)
{
	cancel_token none = CANCEL_TOKEN_NONE;
	CHECK(!cancel_token_is_canceled(none));
	CHECK(!cancel_token_is_canceled(CANCEL_TOKEN_NONE));
	CHECK(all_zero(&none, sizeof(none)));

	CHECK(all_zero(&shutdown_src, sizeof(shutdown_src)));
	CHECK(all_zero(&static_cb, sizeof(static_cb)));
	CHECK(all_zero(&static_watch, sizeof(static_watch)));
	CHECK(CANCEL_WATCH_IGNORE_HALF_CLOSE == 1u);
	struct cancel_watch w = CANCEL_WATCH_INITIALIZER;
	CHECK(all_zero(&w, sizeof(w)));

	struct cancel_source local = CANCEL_SOURCE_INITIALIZER;
	struct cancel_callback cb = CANCEL_CALLBACK_INITIALIZER;
	CHECK(all_zero(&local, sizeof(local)));
	CHECK(all_zero(&cb, sizeof(cb)));

	struct request req = {1, CANCEL_SOURCE_INITIALIZER,
	                      CANCEL_CALLBACK_INITIALIZER, CANCEL_TOKEN_NONE};
	CHECK(req.id == 1);
	CHECK(all_zero(&req.src, sizeof(req.src)));
	CHECK(all_zero(&req.cb, sizeof(req.cb)));
	CHECK(!cancel_token_is_canceled(req.tok));

	/* A token is a value: copies compare equal byte for byte. */
	cancel_token copy = req.tok;
	CHECK(all_zero(&copy, sizeof(copy)));

	if (!failed)
		printf("test_header: all checks passed\n");
	return failed;
}
