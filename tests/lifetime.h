/*
 * Heap blocks for sources and callback records that show a library touch
 * after destroy/unregister returned (the SPEC's lifetime rule). Shared by
 * tests/test_stress.c and the fuzz targets (no cmocka here).
 *
 *   lf_alloc(n, LF_PAGE)    a block alone on its own pages: lf_free makes
 *                           them inaccessible (PROT_NONE), so any later
 *                           read or write by the library faults at once,
 *                           in any build. For sources.
 *   lf_alloc(n, LF_POISON)  malloc: lf_free fills it with 0xA5 and keeps it
 *                           in a quarantine; a block still holding anything
 *                           else when it leaves the quarantine (or at
 *                           lf_drain) was written after its free. Cheap:
 *                           for callback records, made by the thousand.
 *
 * Under AddressSanitizer both are plain malloc/free: ASan's own quarantine
 * reports any touch with both stacks. lf_bad() counts poison found broken;
 * a protected page faults (SIGSEGV) instead.
 */
#ifndef CANCEL_TEST_LIFETIME_H
#define CANCEL_TEST_LIFETIME_H

#ifdef __GLIBC__
#include <execinfo.h>
#endif
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#define LF_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define LF_ASAN 1
#endif
#endif
#if defined(__SANITIZE_THREAD__)
#define LF_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define LF_TSAN 1
#endif
#endif

enum lf_kind { LF_PAGE, LF_POISON };

#define LF_POISON_BYTE 0xA5
/* Freed blocks kept before they are checked and released. */
#define LF_QUARANTINE 4096

struct lf_block {
	void *p;
	size_t n;
	int kind;
	const char *what;
};

static pthread_mutex_t lf_mu = PTHREAD_MUTEX_INITIALIZER;
static struct lf_block lf_q[LF_QUARANTINE];
static unsigned lf_head, lf_len;
static long lf_nbad;
static long lf_nfreed;

static inline size_t
lf_pages(size_t n)
{
	size_t pg = (size_t)sysconf(_SC_PAGESIZE);
	return (n + pg - 1) / pg * pg;
}

static inline void *
lf_alloc(size_t n, int kind)
{
	void *p;
#ifdef LF_ASAN
	(void)kind;
	p = malloc(n);
#else
	if (kind == LF_PAGE) {
		p = mmap(NULL, lf_pages(n), PROT_READ | PROT_WRITE,
		         MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED)
			p = NULL;
	} else {
		p = malloc(n);
	}
#endif
	if (p == NULL) {
		fprintf(stderr, "lifetime: out of memory\n");
		abort();
	}
	memset(p, 0, n);
	return p;
}

/* Whether @b still holds nothing but poison; reports the first byte. */
static inline bool
lf_intact(const struct lf_block *b)
{
	const unsigned char *c = b->p;
	for (size_t i = 0; i < b->n; i++) {
		if (c[i] != LF_POISON_BYTE) {
			fprintf(stderr,
			        "lifetime: %s %p written after its free "
			        "(byte %zu is 0x%02x)\n",
			        b->what, b->p, i, c[i]);
			return false;
		}
	}
	return true;
}

/* Check and really release one block taken out of the quarantine. */
static inline void
lf_release(struct lf_block *b)
{
	if (b->kind == LF_PAGE) {
		size_t len = lf_pages(b->n);
		/* A write could only land if the earlier mprotect failed:
		 * then the poison tells. */
		(void)mprotect(b->p, len, PROT_READ);
		if (!lf_intact(b))
			__atomic_fetch_add(&lf_nbad, 1, __ATOMIC_RELAXED);
		munmap(b->p, len);
	} else {
		if (!lf_intact(b))
			__atomic_fetch_add(&lf_nbad, 1, __ATOMIC_RELAXED);
		free(b->p);
	}
}

/*
 * Free @p (@n bytes from lf_alloc of @kind; @what names it in reports)
 * right after destroy or unregister returned.
 */
static inline void
lf_free(void *p, size_t n, int kind, const char *what)
{
	if (p == NULL)
		return;
	__atomic_fetch_add(&lf_nfreed, 1, __ATOMIC_RELAXED);
#ifdef LF_ASAN
	(void)n;
	(void)kind;
	(void)what;
	free(p);
#else
	memset(p, LF_POISON_BYTE, n);
	if (kind == LF_PAGE)
		(void)mprotect(p, lf_pages(n), PROT_NONE);
	struct lf_block old = {NULL, 0, 0, NULL};
	pthread_mutex_lock(&lf_mu);
	if (lf_len == LF_QUARANTINE) {
		old = lf_q[lf_head];
		lf_head = (lf_head + 1) % LF_QUARANTINE;
		lf_len--;
	}
	lf_q[(lf_head + lf_len) % LF_QUARANTINE] =
	    (struct lf_block){p, n, kind, what};
	lf_len++;
	pthread_mutex_unlock(&lf_mu);
	if (old.p != NULL)
		lf_release(&old);
#endif
}

/* Check and release everything in the quarantine. */
static inline void
lf_drain(void)
{
	for (;;) {
		struct lf_block b;
		pthread_mutex_lock(&lf_mu);
		if (lf_len == 0) {
			pthread_mutex_unlock(&lf_mu);
			return;
		}
		b = lf_q[lf_head];
		lf_head = (lf_head + 1) % LF_QUARANTINE;
		lf_len--;
		pthread_mutex_unlock(&lf_mu);
		lf_release(&b);
	}
}

/* Blocks found written after their free so far. */
static inline long
lf_bad(void)
{
	return __atomic_load_n(&lf_nbad, __ATOMIC_RELAXED);
}

/* Blocks freed so far. */
static inline long
lf_freed(void)
{
	return __atomic_load_n(&lf_nfreed, __ATOMIC_RELAXED);
}

/*
 * A fault on a protected page is a library touch after destroy (or a test
 * bug): say so with the faulting address and a backtrace, then die of the
 * signal. Not installed under the sanitizers, which report faults
 * themselves.
 */
/* Called when the process dies of a fault or a sanitizer report. */
static void (*lf_on_death)(void);

#if defined(LF_ASAN) || defined(LF_TSAN)
#include <sanitizer/common_interface_defs.h>
#endif

#if !defined(LF_ASAN) && !defined(LF_TSAN)
static void
lf_segv(int sig, siginfo_t *si, void *ctx)
{
	(void)ctx;
	char msg[160];
	int len = snprintf(msg, sizeof(msg),
	                   "lifetime: fault at %p: a freed block (its pages "
	                   "are protected) was touched; backtrace:\n",
	                   si->si_addr);
	if (len > 0)
		(void)!write(2, msg, (size_t)len);
	void *frames[32];
#ifdef __GLIBC__
	int n = backtrace(frames, 32);
	backtrace_symbols_fd(frames, n, 2);
#else
	(void)frames; /* no backtrace() outside glibc */
#endif
	if (lf_on_death != NULL)
		lf_on_death();
	signal(sig, SIG_DFL);
}
#endif

static inline void
lf_report_faults(void (*on_death)(void))
{
	lf_on_death = on_death;
#if defined(LF_ASAN) || defined(LF_TSAN)
	if (on_death != NULL)
		__sanitizer_set_death_callback(on_death);
#else
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = lf_segv;
	sa.sa_flags = SA_SIGINFO | SA_RESETHAND;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGSEGV, &sa, NULL);
	sigaction(SIGBUS, &sa, NULL);
#endif
}

#endif /* CANCEL_TEST_LIFETIME_H */
