/*
 * cancel__* declarations shared between the files of src/. Nothing here is
 * exported from the shared library (hidden visibility); the tests link the
 * static archive built from the same objects and may call these.
 */
#ifndef CANCEL_INTERNAL_H
#define CANCEL_INTERNAL_H

#include "cancel.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define CANCEL_HIDDEN __attribute__((visibility("hidden")))

/*
 * A hot public function starts a cache line, so its short fast path sits
 * in as few fetch blocks as possible. Measured on register/unregister
 * (bench_core, 6 A/B pairs): the same in this VM's fast phase, 10.6-12.3
 * -> 8.6-9.6 ns per pair in its slow phase (a busy sibling hyperthread
 * shares the front end).
 */
#define CANCEL_HOT_FN __attribute__((aligned(64)))

/* ------------------------------------------------------------------ */
/* The state word (struct cancel_source.state_)                       */
/* ------------------------------------------------------------------ */
/*
 * One 64-bit word. The low 32 bits are also the futex word that waiters
 * park on (cancel__state_word()); the high 32 bits hold the reason, so the
 * CAS that sets CANCELED writes the reason with it: a reader that sees the
 * flag sees its reason.
 *
 *   bit 0   CANCELED  one-way; set together with the reason.
 *   bit 1   (unused: the callback list lock is the separate word lock_,
 *                     so unlock is a plain release store. register reads
 *                     CANCELED again under it, and cancel takes it only
 *                     after setting CANCELED, so no callback can slip in
 *                     after cancel started.)
 *   bit 2   DONE      the cancel that set CANCELED has run every callback
 *                     and will not touch the source again (except a wake of
 *                     the low word, harmless after free: see wait.h).
 *   bit 3   SIGNAL    CANCELED was set by a signal handler; the deferred
 *                     finish is queued for the library thread.
 *   bit 4   FD        the source's fd exists (fd_/wfd_ are published).
 *   bit 5   DWAIT     destroy() is parked on the low word waiting for DONE
 *                     or for the waiter count to reach zero.
 *   bit 6   WATCHED   a hang-up watch on this source is ACTIVE (set and
 *                     cleared under the watch lock; a waiter reads it as a
 *                     hint to look for a descriptor to poll itself).
 *   bit 7   POLLED    a waiter polls a watched descriptor of this source
 *                     (set and cleared under the watch lock): a cancel
 *                     that sees it wakes the pollers (watch.c).
 *   bits 8-31         number of threads inside a wait on this source.
 *   bits 32-62        the reason (positive), valid once CANCELED is set.
 */
#define CANCEL__S_CANCELED 0x1u
#define CANCEL__S_DONE 0x4u
#define CANCEL__S_SIGNAL 0x8u
#define CANCEL__S_FD 0x10u
#define CANCEL__S_DWAIT 0x20u
#define CANCEL__S_WATCHED 0x40u
#define CANCEL__S_POLLED 0x80u
#define CANCEL__S_WAITER 0x100u
#define CANCEL__S_WAITER_MASK 0xffffff00u
#define CANCEL__S_REASON_SHIFT 32

static inline int
cancel__state_reason(uint64_t s)
{
	return (int)(uint32_t)(s >> CANCEL__S_REASON_SHIFT);
}

static inline uint32_t
cancel__state_waiters(uint64_t s)
{
	return (uint32_t)(s & CANCEL__S_WAITER_MASK) >> 8;
}

/* The 32-bit half of state_ that holds the flags: the futex word. */
static inline uint32_t *
cancel__state_word(struct cancel_source *src)
{
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
	return (uint32_t *)(void *)&src->state_ + 1;
#else
	return (uint32_t *)(void *)&src->state_;
#endif
}

/* ------------------------------------------------------------------ */
/* source.c: the state machine                                        */
/* ------------------------------------------------------------------ */

/*
 * A cancel's cause (public struct cancel_cause without the reason, which
 * lives in the state word): see cancel__cause_publish in source.c.
 */
struct cancel__cause {
	const char *msg;
	const struct cancel_source *origin; /* never NULL once published */
	uint64_t when;                      /* monotonic ns */
};

/*
 * Make the not-canceled -> canceled transition with @reason (> 0). Returns
 * true for the caller that made it; that caller then owns the finish and
 * must call cancel__finish() (or queue it). Wakes parked waiters and writes
 * the fd. Async-signal-safe when @from_signal (then it also sets SIGNAL,
 * wakes only what is signal-safe to wake, and queues the finish on the
 * library thread itself; the caller must not call cancel__finish()).
 * The winner publishes the cause: with @parent NULL, @msg, origin @src and
 * the time now; else a copy of canceled @parent's cause (linked children).
 */
CANCEL_HIDDEN bool cancel__begin(struct cancel_source *src, int reason,
                                 bool from_signal, const char *msg,
                                 const struct cancel_source *parent);
/*
 * cancel__begin for a waiter that saw its watch's hang-up (watch.c), under
 * the watch lock: it is itself counted as a waiter but not parked (the
 * futex is woken only for others) and wakes the other pollers itself.
 */
CANCEL_HIDDEN bool cancel__begin_polled(struct cancel_source *src, int reason,
                                        const char *msg);

/*
 * Cancel @src with @reason (<= 0: ECANCELED) and the message @msg (static
 * storage or NULL), running its callbacks on this thread: the public
 * cancel_with_cause for the library's own cancels (timer "deadline
 * passed", hang-up watch "peer hung up", groups). True for the winner.
 */
CANCEL_HIDDEN bool cancel__cancel_cause(struct cancel_source *src, int reason,
                                        const char *msg);

/* Write @src's cause; the CAS winner only, or init_linked before @src is
 * visible. The origin goes last, with a release store. */
CANCEL_HIDDEN void cancel__cause_publish(struct cancel_source *src,
                                         const struct cancel__cause *c);
/* Read a canceled @src's cause, waiting the few instructions until its
 * winner has published it. Not from a signal handler. */
CANCEL_HIDDEN void cancel__cause_get(const struct cancel_source *src,
                                     struct cancel__cause *c);

/*
 * Run every registered callback (LIFO, one at a time, each exactly once),
 * then set DONE. Called by whoever won cancel__begin(), on any thread.
 */
CANCEL_HIDDEN void cancel__finish(struct cancel_source *src);

/*
 * The library thread's half of a signal-handler cancel: wake what the
 * handler could not, then cancel__finish(). Clears SIGNAL.
 */
CANCEL_HIDDEN void cancel__signal_finish(struct cancel_source *src);

/*
 * Count the calling thread as waiting on @src (destroy returns EBUSY while
 * any are, and waits for woken ones to leave). Returns the state after
 * entering. Every enter is paired with one leave.
 */
CANCEL_HIDDEN uint64_t cancel__waiter_enter(struct cancel_source *src);
CANCEL_HIDDEN void cancel__waiter_leave(struct cancel_source *src);

/*
 * Drop a hold on @src taken under its lock (children_ + 1, as a linked
 * child counts; watch.c's hold_source): destroy returns EBUSY while held.
 * The unlock is the holder's last access to @src.
 */
CANCEL_HIDDEN void cancel__unhold(struct cancel_source *src);

/* ------------------------------------------------------------------ */
/* deadline.c: the monotonic clock and timespec helpers               */
/* ------------------------------------------------------------------ */

CANCEL_HIDDEN uint64_t cancel__now_ns(void);
CANCEL_HIDDEN bool cancel__ts_valid(const struct timespec *ts);
/* Saturating conversions; a valid timespec is assumed. */
CANCEL_HIDDEN uint64_t cancel__ts_to_ns(const struct timespec *ts);
CANCEL_HIDDEN struct timespec cancel__ns_to_ts(uint64_t ns);
CANCEL_HIDDEN uint64_t cancel__add_sat(uint64_t a, uint64_t b);
/* NULL -> CANCEL_NEVER; EINVAL for a malformed timespec; else 0. */
CANCEL_HIDDEN int cancel__deadline_ns(const struct timespec *deadline,
                                      uint64_t *out);

/* ------------------------------------------------------------------ */
/* wait.h backends: see wait.h                                        */
/* ------------------------------------------------------------------ */
#include "wait.h"

/* ------------------------------------------------------------------ */
/* fd.c: the token's descriptor                                       */
/* ------------------------------------------------------------------ */

/* Create (once) and return the source's fd. 0, EMFILE or ENFILE. */
CANCEL_HIDDEN int cancel__source_fd(struct cancel_source *src, int *fd);
/* Make the fd readable if it exists. Async-signal-safe. */
CANCEL_HIDDEN void cancel__source_fd_signal(struct cancel_source *src);
/* The fork generation: 0 in the first process, bumped in each child.
 * A source's fd records it in spare_ (see fd.c). */
CANCEL_HIDDEN extern uint32_t cancel__fork_gen;
/* Close the fd (destroy). */
CANCEL_HIDDEN void cancel__source_fd_close(struct cancel_source *src);

/* ------------------------------------------------------------------ */
/* watch.c: a waiter that watches a hang-up itself                    */
/* ------------------------------------------------------------------ */

/*
 * Called by a wait on @src (counted as a waiter, not canceled) that saw
 * CANCEL__S_WATCHED: if an ACTIVE watch on @src can be taken over, poll
 * its descriptor on this thread until a hang-up, a cancel, an eviction by
 * cancel_watch_stop() or the absolute deadline @dl, and return true; the
 * caller rechecks the state and the clock. False: nothing was taken over
 * (park as usual). See watch.c, "A waiter watches for itself".
 */
CANCEL_HIDDEN bool cancel__watch_wait(struct cancel_source *src, uint64_t dl);
/*
 * Wake the waiters that poll a watch of @src (cancel__begin, after its CAS
 * saw POLLED; not from a signal handler: the library thread's deferred
 * finish calls it then). Takes the watch lock.
 */
CANCEL_HIDDEN void cancel__watch_wake(struct cancel_source *src);

/* ------------------------------------------------------------------ */
/* libthread.c: the library thread, timer and deferred work           */
/* ------------------------------------------------------------------ */

/* Start the library thread if it is not running. 0 or EAGAIN. */
CANCEL_HIDDEN int cancel__lt_ensure(void);
/* Wake the library thread. Async-signal-safe, errno preserved. */
CANCEL_HIDDEN void cancel__lt_kick(void);
/* True when called on the library thread. */
CANCEL_HIDDEN bool cancel__lt_is_self(void);

/*
 * Arm @src's timer at @deadline_ns (absolute monotonic), replacing any.
 * Starts the library thread. 0 or EAGAIN (nothing armed).
 */
CANCEL_HIDDEN int cancel__timer_arm(struct cancel_source *src,
                                    uint64_t deadline_ns);
/*
 * Disarm @src's timer. If the library thread is firing it right now (and
 * this is not the library thread), wait until that firing has ended.
 * Cheap when the source never armed a timer.
 */
CANCEL_HIDDEN void cancel__timer_disarm(struct cancel_source *src);
/* @src's own armed deadline, or CANCEL_NEVER. */
CANCEL_HIDDEN uint64_t cancel__timer_deadline(struct cancel_source *src);

/*
 * Deferred work for the library thread (condition-wait broadcasts).
 * Lives in the poster's memory; the poster must revoke it before freeing.
 */
struct cancel__work {
	struct cancel__work *next;
	struct cancel__work *prev;
	void (*fn)(struct cancel__work *w);
	uint32_t state; /* library-private */
};
/* Queue @w (normal context). 0, or EAGAIN if the thread cannot start. */
CANCEL_HIDDEN int cancel__work_post(struct cancel__work *w);
/*
 * Take back @w: true if it was removed before running, had already run,
 * or was never posted; false if it is running right now, in which case the
 * caller must drop any lock fn may need and call cancel__work_wait().
 */
CANCEL_HIDDEN bool cancel__work_revoke(struct cancel__work *w);
/* Wait until a running @w has finished. */
CANCEL_HIDDEN void cancel__work_wait(struct cancel__work *w);

/*
 * Queue @src's deferred finish after a signal-handler cancel. Lock-free,
 * async-signal-safe; kicks the library thread, which calls
 * cancel__signal_finish(). Each source is queued at most once (only the
 * caller that won cancel__begin() queues it).
 */
CANCEL_HIDDEN void cancel__signal_post(struct cancel_source *src);

/* ------------------------------------------------------------------ */
/* alloc.c: the one allocation hook and the live-object count         */
/* ------------------------------------------------------------------ */

CANCEL_HIDDEN void *cancel__malloc(size_t n);
CANCEL_HIDDEN void cancel__free(void *p);
/* Descriptors count as live objects too. */
CANCEL_HIDDEN void cancel__live_fd(int delta);

/*
 * Test hooks. cancel__test_fail_alloc(k): the k-th allocation from now
 * fails (1 = the next one), then allocations succeed again; a negative k:
 * every allocation fails until the next call; 0 disables.
 * cancel__test_fail_alloc_errno(e): an injected failure also sets errno
 * to e, as a real malloc failure sets ENOMEM (0, the default: untouched).
 * cancel__test_live_objects(): allocations plus descriptors held now.
 * cancel__test_alloc_count(): allocations made since the process started.
 */
CANCEL_HIDDEN void cancel__test_fail_alloc(long k);
CANCEL_HIDDEN void cancel__test_fail_alloc_errno(int e);
/*
 * cancel__test_fail_watch_resume(k): the k-th time from now that a waiter
 * puts a watch it polled back into the kernel object, that fails with
 * ENOMEM (0: never).
 */
CANCEL_HIDDEN void cancel__test_fail_watch_resume(long k);
/* How many waiters poll a watched descriptor now (watch.c). */
CANCEL_HIDDEN int cancel__test_watch_pollers(void);
/* This thread's wake-up descriptor for polling a watch, or -1. */
CANCEL_HIDDEN int cancel__test_watch_wake_fd(void);
/* @w's state (watch.h's CANCEL__W_*), read under the watch lock. */
CANCEL_HIDDEN unsigned cancel__test_watch_state(const struct cancel_watch *w);
CANCEL_HIDDEN long cancel__test_live_objects(void);
CANCEL_HIDDEN long cancel__test_alloc_count(void);

/* ------------------------------------------------------------------ */
/* group.c: test hooks                                                */
/* ------------------------------------------------------------------ */

/*
 * cancel__group_test_fail_create(k): the k-th member thread creation from
 * now fails as if pthread_create returned EAGAIN (1 = the next one); 0
 * disables. cancel__group_test_no_reuse(true): go never hands a member to
 * a parked thread but creates one per member (the benchmark's other
 * column); the threads still park until wait joins them.
 */
CANCEL_HIDDEN void cancel__group_test_fail_create(long k);
CANCEL_HIDDEN void cancel__group_test_no_reuse(bool on);

/* ------------------------------------------------------------------ */
/* process.c: child processes                                         */
/* ------------------------------------------------------------------ */

/*
 * pidfd_open(@pid, 0) into *@fd (close-on-exec; -1 on failure): 0 or its
 * error, ENOSYS where the kernel or the build lacks it. Every pidfd the
 * library opens comes from here, so the test hook below reaches them all.
 */
CANCEL_HIDDEN int cancel__pidfd_open(pid_t pid, int *fd);
/*
 * wrap_io.c, shared with process.c. Reap @pid without blocking: 0 reaped
 * (status in *@status if not NULL), EAGAIN still running, or waitpid's
 * error (ECHILD). And the pidfd-less wait: reap, else sleep in
 * cancel_wait() with a backoff from 1 to 50 ms: 0 reaped, ECANCELED,
 * ETIMEDOUT (@dl_ns), ECHILD.
 */
CANCEL_HIDDEN int cancel__reap_nohang(pid_t pid, int *status);
CANCEL_HIDDEN int cancel__waitpid_backoff(pid_t pid, int *status,
                                          uint64_t dl_ns, cancel_token tok);
/* Test hook: while @on, cancel__pidfd_open() fails with ENOSYS. */
CANCEL_HIDDEN void cancel__test_pidfd_enosys(bool on);
/* cancel__test_cascade_hook(fn): the library thread calls fn (NULL: none)
 * each time a cascade of a large wheel slot drops its lock, between two
 * batches of entries (libthread.c wheel_advance). */
CANCEL_HIDDEN void cancel__test_cascade_hook(void (*fn)(void));
/* cancel__test_fire_hook(fn): the library thread calls fn(false) just
 * before each timeout's cancel and fn(true) right after it returned, both
 * while that firing is in progress for a disarm (run_timers); NULL: none.
 * cancel__test_firing_waiters(): how many disarms wait for the firing in
 * progress now. */
CANCEL_HIDDEN void cancel__test_fire_hook(void (*fn)(bool after));
CANCEL_HIDDEN unsigned cancel__test_firing_waiters(void);

/* ------------------------------------------------------------------ */
/* debug.c: the CANCEL_DEBUG=leaks registry                           */
/* ------------------------------------------------------------------ */

/* Set once at load from CANCEL_DEBUG; never changes afterwards. */
CANCEL_HIDDEN extern bool cancel__debug_leaks;
/* Record @src as live, created at @where; returns @rc (tail call). */
CANCEL_HIDDEN int cancel__debug_created(struct cancel_source *src,
                                        void *where, int rc);
/* Forget @src (destroyed); returns 0 (tail call). */
CANCEL_HIDDEN int cancel__debug_destroyed(struct cancel_source *src);

/* Save and restore errno around a public call. */
#define CANCEL_ERRNO_SAVE() int cancel__saved_errno_ = errno
#define CANCEL_ERRNO_RESTORE() (errno = cancel__saved_errno_)

#endif /* CANCEL_INTERNAL_H */
