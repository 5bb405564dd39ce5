/*
 * Which calls allocate, counted in the whole process: malloc, calloc,
 * realloc and the aligned allocators are interposed (glibc: they forward to
 * __libc_*; under ASan/TSan the sanitizer's allocator hook counts), so an
 * allocation libc makes on the library's behalf (pthread_create) counts as
 * well as the library's own, on any thread (the library thread included).
 *
 * What include/cancel.h promises, checked here:
 *  - the first call that starts the library thread (the first
 *    cancel_source_cancel_after / cancel_at in the process) allocates,
 *    inside pthread_create (the new thread's TLS);
 *  - after that, arming, re-arming, disarming and firing deadlines, and
 *    every other call except the two below, allocate nothing;
 *  - cancel_source_init_linked with more than one parent allocates one
 *    array; cancel_poll with more than 32 descriptors allocates one array.
 *
 * The tests run in this order in one process (the first one needs the
 * library thread not started yet).
 */
#include <errno.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>

#include "testutil.h"

#if defined(__SANITIZE_ADDRESS__) || defined(TU_TSAN)
#define TA_SANITIZER 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TA_SANITIZER 1
#endif
#endif

static long allocs; /* every allocation of the process, any thread */

static void
count_one(void)
{
	__atomic_fetch_add(&allocs, 1, __ATOMIC_RELAXED);
}

#ifdef TA_SANITIZER
/* From the sanitizers' allocator interface (the header is not always
 * installed): called on every allocation and free, any thread. */
int __sanitizer_install_malloc_and_free_hooks(
    void (*malloc_hook)(const volatile void *, size_t),
    void (*free_hook)(const volatile void *));

static void
on_malloc(const volatile void *p, size_t n)
{
	(void)p;
	(void)n;
	count_one();
}

static void
on_free(const volatile void *p)
{
	(void)p;
}

static void
install_counter(void)
{
	__sanitizer_install_malloc_and_free_hooks(on_malloc, on_free);
}
#else
extern void *__libc_malloc(size_t n);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_realloc(void *p, size_t n);
extern void *__libc_memalign(size_t align, size_t n);

void *
malloc(size_t n)
{
	count_one();
	return __libc_malloc(n);
}

void *
calloc(size_t n, size_t size)
{
	count_one();
	return __libc_calloc(n, size);
}

void *
realloc(void *p, size_t n)
{
	count_one();
	return __libc_realloc(p, n);
}

void *
aligned_alloc(size_t align, size_t n)
{
	count_one();
	return __libc_memalign(align, n);
}

int
posix_memalign(void **out, size_t align, size_t n)
{
	count_one();
	void *p = __libc_memalign(align, n);
	if (p == NULL)
		return ENOMEM;
	*out = p;
	return 0;
}

static void
install_counter(void)
{
}
#endif

static long
count(void)
{
	return __atomic_load_n(&allocs, __ATOMIC_RELAXED);
}

static int
thread_count(void)
{
	int n = 0;
	DIR *d = opendir("/proc/self/task");
	if (d == NULL)
		return -1;
	for (struct dirent *e; (e = readdir(d)) != NULL;)
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

/*
 * Wait until every other thread of the process is asleep (state S in
 * /proc/self/task/N/stat): a new thread's start-up, which under ASan
 * allocates on that thread (the sanitizer's own thread setup), is over.
 * A handshake on observable state, bounded at 10 s.
 */
static void
await_other_threads_asleep(void)
{
	uint64_t give_up = tu_now_ns() + 10000000000ull;
	pid_t self = (pid_t)syscall(SYS_gettid);
	for (;;) {
		bool busy = false;
		DIR *d = opendir("/proc/self/task");
		assert_non_null(d);
		for (struct dirent *e; (e = readdir(d)) != NULL;) {
			if (e->d_name[0] == '.' || atoi(e->d_name) == self)
				continue;
			char path[300], buf[256];
			snprintf(path, sizeof(path), "/proc/self/task/%s/stat",
			         e->d_name);
			FILE *f = fopen(path, "r");
			if (f == NULL)
				continue;
			size_t n = fread(buf, 1, sizeof(buf) - 1, f);
			fclose(f);
			buf[n] = '\0';
			const char *p = strrchr(buf, ')');
			if (p != NULL && p[1] == ' ' && p[2] != 'S')
				busy = true;
		}
		closedir(d);
		if (!busy)
			return;
		assert_true(tu_now_ns() < give_up);
		sched_yield();
	}
}

static void
bump(void *arg)
{
	__atomic_fetch_add((int *)arg, 1, __ATOMIC_RELAXED);
}

static void
mark(void *arg)
{
	tu_signal(arg);
}

static void
first_arm_starts_the_library_thread_which_allocates(void **state)
{
	(void)state;
	struct cancel_source *src = malloc(sizeof(*src));
	assert_non_null(src);
	cancel_source_init(src);
	int threads = thread_count();
	long before = count();
	assert_int_equal(cancel_source_cancel_after(src, 3600000000000ull), 0);
	long made = count() - before;
	/* The library thread (a timer and a work thread) exists now, and
	 * starting it allocated (libc's pthread_create: the threads' TLS). */
#ifndef TU_TSAN
	assert_int_equal(thread_count(), threads + 2);
	assert_true(made > 0);
#else
	/* TSan starts a background thread of its own with the first thread,
	 * and its pthread_create allocates from its internal allocator,
	 * which its hooks do not report. */
	assert_true(thread_count() >= threads + 2);
#endif
	/* Its threads' start-up (the sanitizers' too) is over before the
	 * next test counts. */
	await_other_threads_asleep();
	print_message("first cancel_after: library thread started, %ld "
	              "allocation(s) in pthread_create\n", made);
	assert_int_equal(cancel_source_destroy(src), 0);
	free(src);
}

static void
arming_after_the_first_allocates_nothing(void **state)
{
	(void)state;
	struct cancel_source *src = malloc(sizeof(*src));
	struct cancel_source *fire = malloc(sizeof(*fire));
	assert_non_null(src);
	assert_non_null(fire);
	long before = count();
	cancel_source_init(src);
	assert_int_equal(cancel_source_cancel_after(src, 3600000000000ull), 0);
	assert_int_equal(cancel_source_cancel_after(src, 1800000000000ull), 0);
	struct timespec dl = cancel_deadline_in(900000000000ull);
	assert_int_equal(cancel_source_cancel_at(src, &dl), 0);
	assert_int_equal(cancel_source_cancel_at(src, NULL), 0);
	assert_int_equal(cancel_source_cancel_after(src, CANCEL_NEVER), 0);
	/* A deadline that fires on the library thread. */
	cancel_source_init(fire);
	int ran = 0;
	struct cancel_callback cb = CANCEL_CALLBACK_INITIALIZER;
	assert_true(cancel_callback_register(&cb, mark, &ran,
	                                     cancel_source_token(fire)));
	assert_int_equal(cancel_source_cancel_after(fire, 1000), 0);
	/* The callback runs on the library thread (cancel_wait may return
	 * before it starts: wait for the callback itself). */
	tu_await(&ran);
	assert_int_equal(cancel_token_reason(cancel_source_token(fire)),
	                 ETIMEDOUT);
	assert_false(cancel_callback_unregister(&cb));
	assert_int_equal(cancel_source_destroy(fire), 0);
	assert_int_equal(cancel_source_destroy(src), 0);
	assert_int_equal(count() - before, 0);
	free(fire);
	free(src);
}

static void
sources_callbacks_and_cancel_allocate_nothing(void **state)
{
	(void)state;
	struct cancel_source *parent = malloc(sizeof(*parent));
	struct cancel_source *child = malloc(sizeof(*child));
	assert_non_null(parent);
	assert_non_null(child);
	int ran = 0;
	struct cancel_callback cb[3] = {CANCEL_CALLBACK_INITIALIZER,
	                                CANCEL_CALLBACK_INITIALIZER,
	                                CANCEL_CALLBACK_INITIALIZER};
	long before = count();
	for (int round = 0; round < 3; round++) {
		cancel_source_init(parent);
		cancel_token ptok = cancel_source_token(parent);
		assert_int_equal(cancel_source_init_linked(child, &ptok, 1), 0);
		cancel_token tok = cancel_source_token(child);
		assert_true(cancel_token_can_be_canceled(tok));
		assert_int_equal(cancel_token_check(tok), 0);
		assert_true(cancel_callback_register(&cb[0], bump, &ran, tok));
		assert_int_equal(cancel_callback_try_register(&cb[1], bump,
		                                              &ran, tok), 0);
		assert_true(cancel_callback_register(&cb[2], bump, &ran,
		                                     ptok));
		assert_true(cancel_callback_unregister(&cb[0]));
		assert_int_equal(cancel_callback_try_unregister(&cb[1]), 0);
		assert_true(cancel_callback_register(&cb[0], bump, &ran, tok));
		assert_true(cancel_source_cancel_with(parent, EPIPE));
		assert_int_equal(cancel_token_reason(tok), EPIPE);
		assert_false(cancel_callback_unregister(&cb[0]));
		assert_false(cancel_callback_unregister(&cb[2]));
		assert_int_equal(cancel_source_destroy(child), 0);
		assert_int_equal(cancel_source_destroy(parent), 0);
	}
	assert_int_equal(count() - before, 0);
	assert_int_equal(ran, 6);
	free(child);
	free(parent);
}

static void
waits_allocate_nothing(void **state)
{
	(void)state;
	struct cancel_source *src = malloc(sizeof(*src));
	assert_non_null(src);
	int efd = eventfd(0, EFD_CLOEXEC);
	assert_true(efd >= 0);
	pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
	pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
	cancel_source_init(src);
	cancel_token tok = cancel_source_token(src);
	/* Warm-up: the token's descriptor is made by its first poll. */
	struct pollfd pfd = {.fd = efd, .events = POLLIN};
	struct timespec dl = cancel_deadline_in(1000);
	assert_int_equal(cancel_poll(&pfd, 1, &dl, tok), ETIMEDOUT);
	long before = count();
	dl = cancel_deadline_in(1000);
	assert_int_equal(cancel_wait(&dl, tok), ETIMEDOUT);
	assert_int_equal(cancel_sleep(1000, tok), 0);
	dl = cancel_deadline_in(1000);
	assert_int_equal(cancel_poll(&pfd, 1, &dl, tok), ETIMEDOUT);
	pthread_mutex_lock(&mu);
	dl = cancel_deadline_in(1000);
	assert_int_equal(cancel_cond_wait(&cv, &mu, &dl, tok), ETIMEDOUT);
	pthread_mutex_unlock(&mu);
	int fd = -1;
	assert_int_equal(cancel_token_fd(tok, &fd), 0);
	assert_true(cancel_source_cancel(src));
	assert_int_equal(cancel_wait(NULL, tok), ECANCELED);
	assert_int_equal(cancel_poll(&pfd, 1, NULL, tok), ECANCELED);
	assert_int_equal(count() - before, 0);
	assert_int_equal(cancel_source_destroy(src), 0);
	close(efd);
	free(src);
}

static void
linking_two_parents_allocates_one_array(void **state)
{
	(void)state;
	struct cancel_source *p = malloc(2 * sizeof(*p));
	struct cancel_source *child = malloc(sizeof(*child));
	assert_non_null(p);
	assert_non_null(child);
	cancel_source_init(&p[0]);
	cancel_source_init(&p[1]);
	cancel_token toks[2] = {cancel_source_token(&p[0]),
	                        cancel_source_token(&p[1])};
	long before = count();
	assert_int_equal(cancel_source_init_linked(child, toks, 2), 0);
	assert_int_equal(count() - before, 1);
	assert_int_equal(cancel_source_destroy(child), 0);
	assert_int_equal(cancel_source_destroy(&p[1]), 0);
	assert_int_equal(cancel_source_destroy(&p[0]), 0);
	free(child);
	free(p);
}

static void
polling_more_than_32_descriptors_allocates_one_array(void **state)
{
	(void)state;
	struct cancel_source *src = malloc(sizeof(*src));
	struct pollfd *pfd = calloc(33, sizeof(*pfd));
	assert_non_null(src);
	assert_non_null(pfd);
	int efd = eventfd(0, EFD_CLOEXEC);
	assert_true(efd >= 0);
	for (int i = 0; i < 33; i++)
		pfd[i] = (struct pollfd){.fd = efd, .events = POLLIN};
	cancel_source_init(src);
	cancel_token tok = cancel_source_token(src);
	struct timespec dl = cancel_deadline_in(1000);
	long before = count();
	assert_int_equal(cancel_poll(pfd, 32, &dl, tok), ETIMEDOUT);
	assert_int_equal(count() - before, 0);
	dl = cancel_deadline_in(1000);
	before = count();
	assert_int_equal(cancel_poll(pfd, 33, &dl, tok), ETIMEDOUT);
	assert_int_equal(count() - before, 1);
	assert_int_equal(cancel_source_destroy(src), 0);
	close(efd);
	free(pfd);
	free(src);
}

int
main(void)
{
	install_counter();
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(first_arm_starts_the_library_thread_which_allocates),
		cmocka_unit_test(arming_after_the_first_allocates_nothing),
		cmocka_unit_test(sources_callbacks_and_cancel_allocate_nothing),
		cmocka_unit_test(waits_allocate_nothing),
		cmocka_unit_test(linking_two_parents_allocates_one_array),
		cmocka_unit_test(polling_more_than_32_descriptors_allocates_one_array),
	};
	return cmocka_run_group_tests_name("alloc", tests, NULL, NULL);
}
