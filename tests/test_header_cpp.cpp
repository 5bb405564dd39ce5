/*
 * cancel.h as a C++ user sees it: included first and alone, built as C++11
 * and as C++17 with -pedantic -Werror, library not linked. Checks that the
 * initializers, CANCEL_TOKEN_NONE and the inline query work in C++, and
 * that the declarations have C linkage-compatible types.
 */
#include "cancel.h"

extern "C" int printf(const char *fmt, ...);

namespace {

int failed;

void
check(bool ok, const char *what, int line)
{
	if (!ok) {
		failed = 1;
		printf("test_header_cpp.cpp:%d: check failed: %s\n", line, what);
	}
}

#define CHECK(cond) check((cond), #cond, __LINE__)

bool
all_zero(const void *p, size_t n)
{
	const unsigned char *b = static_cast<const unsigned char *>(p);
	for (size_t i = 0; i < n; i++) {
		if (b[i] != 0)
			return false;
	}
	return true;
}

template <typename A, typename B> struct same {
	static const bool value = false;
};
template <typename A> struct same<A, A> {
	static const bool value = true;
};

/* A few signatures, without referencing the functions. */
static_assert(same<decltype(&cancel_source_cancel),
                   bool (*)(cancel_source *)>::value,
              "cancel_source_cancel");
static_assert(same<decltype(&cancel_callback_register),
                   bool (*)(cancel_callback *, cancel_fn, void *,
                            cancel_token)>::value,
              "cancel_callback_register");
static_assert(same<decltype(&cancel_cond_wait),
                   int (*)(pthread_cond_t *, pthread_mutex_t *,
                           const timespec *, cancel_token)>::value,
              "cancel_cond_wait");
static_assert(same<decltype(cancel_token_is_canceled(CANCEL_TOKEN_NONE)),
                   bool>::value,
              "cancel_token_is_canceled returns bool");

#if defined(__x86_64__)
static_assert(sizeof(cancel_source) <= 192, "cancel_source size");
static_assert(sizeof(cancel_callback) <= 48, "cancel_callback size");
#endif

cancel_source shutdown_src = CANCEL_SOURCE_INITIALIZER;
cancel_callback static_cb = CANCEL_CALLBACK_INITIALIZER;
cancel_watch static_watch = CANCEL_WATCH_INITIALIZER;

struct session {
	int id;
	cancel_source src;
	cancel_callback cb;
	cancel_token tok;
};

/* The token is the last parameter, and NONE is a fine default for it. */
bool
is_stopped(cancel_token tok = CANCEL_TOKEN_NONE)
{
	return cancel_token_is_canceled(tok);
}

} // namespace

int
main()
{
	cancel_token none = CANCEL_TOKEN_NONE;
	CHECK(!cancel_token_is_canceled(none));
	CHECK(!cancel_token_is_canceled(CANCEL_TOKEN_NONE));
	CHECK(!is_stopped());
	CHECK(all_zero(&none, sizeof(none)));

	CHECK(all_zero(&shutdown_src, sizeof(shutdown_src)));
	CHECK(all_zero(&static_cb, sizeof(static_cb)));
	CHECK(all_zero(&static_watch, sizeof(static_watch)));
	cancel_watch w = CANCEL_WATCH_INITIALIZER;
	CHECK(all_zero(&w, sizeof(w)));

	cancel_source local = CANCEL_SOURCE_INITIALIZER;
	cancel_callback cb = CANCEL_CALLBACK_INITIALIZER;
	CHECK(all_zero(&local, sizeof(local)));
	CHECK(all_zero(&cb, sizeof(cb)));

	session s = {7, CANCEL_SOURCE_INITIALIZER, CANCEL_CALLBACK_INITIALIZER,
	             CANCEL_TOKEN_NONE};
	CHECK(s.id == 7);
	CHECK(all_zero(&s.src, sizeof(s.src)));
	CHECK(all_zero(&s.cb, sizeof(s.cb)));
	CHECK(!is_stopped(s.tok));

	cancel_source *heap = new cancel_source();
	CHECK(all_zero(heap, sizeof(*heap)));
	delete heap;

	if (!failed)
		printf("test_header_cpp: all checks passed\n");
	return failed;
}
