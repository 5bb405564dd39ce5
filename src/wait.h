/*
 * Park/unpark on a 32-bit word, and the wake-up descriptor: the interface
 * of the wait backends. Chosen at configure time:
 *   futex   (Linux): wait_futex.c + wake_eventfd.c
 *   pthread (portable POSIX): wait_pthread.c (a parking lot of mutex +
 *            CLOCK_MONOTONIC condvar buckets hashed by address) + wake_pipe.c
 */
#ifndef CANCEL_WAIT_H
#define CANCEL_WAIT_H

#include <stdbool.h>
#include <stdint.h>

#ifndef CANCEL_HIDDEN
#define CANCEL_HIDDEN __attribute__((visibility("hidden")))
#endif

/*
 * Block while *@word == @expected, until cancel__unpark_all(@word) or the
 * absolute CLOCK_MONOTONIC @deadline_ns (CANCEL_NEVER: none). Returns 0
 * (woken, value differed, spurious, or interrupted: callers always recheck)
 * or ETIMEDOUT. Errno preserved. Callers load *@word with acquire after it
 * returns: that load, not the wake, carries the data.
 */
CANCEL_HIDDEN int cancel__park(uint32_t *word, uint32_t expected,
                               uint64_t deadline_ns);

/*
 * Wake every thread parked on @word. It never dereferences @word, so it may
 * be called right after another thread freed that memory (the worst case is
 * a spurious wake of whoever parks there next, which every park tolerates).
 * Errno preserved.
 */
CANCEL_HIDDEN void cancel__unpark_all(uint32_t *word);

/* True when cancel__unpark_all() is async-signal-safe (futex backend). */
CANCEL_HIDDEN extern const bool cancel__unpark_signal_safe;

/* Name of the backend ("futex" or "pthread"), for tests and benchmarks. */
CANCEL_HIDDEN extern const char cancel__backend_name[];

/*
 * A wake-up descriptor: eventfd (futex backend) or a pipe (pthread
 * backend). Both ends close-on-exec and non-blocking; for an eventfd
 * *rfd == *wfd. Returns 0, EMFILE or ENFILE (nothing leaked).
 */
CANCEL_HIDDEN int cancel__wakefd_open(int *rfd, int *wfd);
/* Make it readable. Async-signal-safe, errno preserved. */
CANCEL_HIDDEN void cancel__wakefd_signal(int wfd);
/* Consume pending readability (only for the library thread's own fd). */
CANCEL_HIDDEN void cancel__wakefd_drain(int rfd);
/* Close both ends (once for an eventfd), errno preserved. The same for
 * both backends: defined in fd.c. */
CANCEL_HIDDEN void cancel__wakefd_close(int rfd, int wfd);

#endif /* CANCEL_WAIT_H */
