/*
 * libcancel: cooperative cancellation for C.
 *
 * The code that starts a piece of work owns a source (struct cancel_source).
 * Everything it calls receives a token (cancel_token, a small value), checks
 * it, waits on it, and registers callbacks (struct cancel_callback) that stop
 * what cannot check. Cancellation is cooperative: nothing is killed from
 * outside; code that must finish simply does not take a token.
 *
 * Conventions (every call):
 *   - A call that can fail returns 0 or a positive <errno.h> value, like
 *     pthreads. Yes/no queries return bool. Nothing returns -1 and every
 *     call, signal-handler ones included, leaves errno as it found it.
 *   - The token is the last parameter; a deadline, where there is one, comes
 *     right before it: an absolute struct timespec on CLOCK_MONOTONIC, NULL
 *     for none; a deadline already past means "check once, do not block".
 *     A timespec whose tv_nsec is outside [0, 1e9) or whose tv_sec is
 *     negative gives EINVAL.
 *   - Durations are uint64_t nanoseconds; CANCEL_NEVER means none and all
 *     arithmetic saturates.
 *   - A canceled token makes every wait return ECANCELED, a wait's own
 *     deadline ETIMEDOUT; ECANCELED wins when both are seen together.
 *   - Objects live where the caller puts them (stack, static, embedded,
 *     heap). All-zero bytes are a valid, unused object.
 *
 * Decisions where the SPEC is silent (and the SPEC deviations, marked):
 *   - Timespecs with a negative tv_sec are rejected with EINVAL like a bad
 *     tv_nsec: CLOCK_MONOTONIC never goes below zero here.
 *   - Linked sources: a child's link to its parents is a callback on each
 *     parent, run in the parent's LIFO order. Propagation runs the child's
 *     own callbacks inline on the canceling thread up to a nesting depth of
 *     CANCEL_LINK_INLINE_DEPTH; deeper children are queued and run, still on
 *     the canceling thread, as soon as the callback of the source the
 *     cancel call was made on (whose run queued them) returns. A destroy
 *     of such a deep child on another thread waits until then. So a
 *     callback of an intermediate source of a chain must not wait for a
 *     thread that destroys a descendant lying more than
 *     CANCEL_LINK_INLINE_DEPTH links below the source that was canceled;
 *     callbacks of that source itself may.
 *   - destroy() on a source canceled from a signal handler whose deferred
 *     work has not yet run starts the library thread to run it and waits;
 *     if the thread cannot be started it returns EAGAIN (SPEC deviation:
 *     one more result code, because waiting could otherwise never end).
 *   - The library thread (SPEC deviation): it is two threads, started
 *     together. The timer thread fires deadlines and runs signal-handler
 *     finishes; a companion work thread does the deferred broadcasts of
 *     cancel_cond_wait(), which must lock the waiter's mutex. With a
 *     single thread, anyone holding that mutex (even while waiting for a
 *     deadline of its own) would stall every deadline in the process or
 *     deadlock; a Promela model (tests/model/condwait_flaw_lt_blocks.pml)
 *     shows it.
 *   - unregister() and wait cycles (SPEC deviation): when two callbacks
 *     unregister each other while their sources cancel on two threads,
 *     waiting would deadlock. The second unregister to arrive returns
 *     false at once, as from inside its own callback; the other callback
 *     may still be running until this thread's callback returns.
 *   - A callback that unregistered itself from inside its run, or whose
 *     source a callback destroyed, counts as completed and forgets its
 *     source: unregistering it again later is safe even after the source
 *     is gone (false / EALREADY). Another thread's unregister issued while
 *     it still runs waits for it to return, as for any running callback.
 *     destroy() from inside a callback returns EBUSY while another thread
 *     waits in unregister() for that callback.
 *   - register() with a NULL @cb or @fn returns false and runs nothing.
 *   - Portable ("pthread") wait backend only: cancel_source_cancel_from_signal()
 *     cannot wake threads blocked in cancel_wait()/cancel_sleep() from
 *     inside the handler (no async-signal-safe condvar exists); the library
 *     thread wakes them right after, so cancel_signal_prepare() must have
 *     succeeded (SPEC deviation, portable backend only; the Linux futex
 *     backend wakes them from the handler as specified). cancel_poll(), the
 *     I/O calls and the token's fd are woken from the handler on both.
 *
 * Threads: what may run at the same time on one source
 *
 *   call                               may race with
 *   ---------------------------------  ---------------------------------------
 *   cancel, cancel_with,               every call on the same source except
 *   cancel_after, cancel_at            init/destroy
 *   register, try_register,            everything except init/destroy of
 *   unregister, try_unregister         that source
 *   token queries and waits            everything except init/destroy
 *   init, init_linked, destroy         no other call that starts using the
 *                                      same source (destroy waits for a
 *                                      finishing cancel, and returns EBUSY
 *                                      if a thread is already blocked on it)
 *   cancel_from_signal                 anything except destroy of that
 *                                      source, from a signal handler
 *
 * fork(): in the child, use sources created after the fork; an inherited
 * source may only be initialized again (its fd is abandoned; it is
 * close-on-exec). The library thread, its locks and the timer are reset in
 * the child, so inherited deadlines do not fire there and a cancel in the
 * child never wakes the parent's waiters.
 *
 * Sources must not live in memory shared between processes.
 */
#ifndef CANCEL_H
#define CANCEL_H

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>

#ifndef __cplusplus
#include <stdbool.h>
#endif

#ifdef __cplusplus
extern "C" {
#endif

#if defined(CANCEL_STATIC_DEFINE)
#define CANCEL_API
#elif defined(CANCEL_BUILDING)
#define CANCEL_API __attribute__((visibility("default")))
#else
#define CANCEL_API
#endif

#define CANCEL_VERSION_MAJOR 1
#define CANCEL_VERSION_MINOR 0
#define CANCEL_VERSION_PATCH 0

/* No deadline / no duration: the largest uint64_t. */
#define CANCEL_NEVER UINT64_MAX

/* Link propagation runs this many nested children inline (see above). */
#define CANCEL_LINK_INLINE_DEPTH 8

struct cancel_source;

/* The function a registered callback runs; @arg is the registered one. */
typedef void (*cancel_fn)(void *arg);

/*
 * A callback registration, stored wherever the caller likes. All fields are
 * private. All-zero bytes (CANCEL_CALLBACK_INITIALIZER) are a callback that
 * was never registered.
 */
struct cancel_callback {
	struct cancel_callback *next_;
	void *prev_;
	cancel_fn fn_;
	void *arg_;
	struct cancel_source *src_;
	uint32_t state_;
	uint32_t spare_;
};

/*
 * A cancellation source. All fields are private; all-zero bytes
 * (CANCEL_SOURCE_INITIALIZER) are a valid, not-canceled source, so a
 * process-wide shutdown source needs no init call.
 */
struct cancel_source {
	uint64_t state_ __attribute__((aligned(8)));
	uint32_t lock_;
	uint32_t spare_;
	struct cancel_callback *head_;
	void *runner_;
	struct cancel_source *next_deferred_;
	struct cancel_callback *links_;
	uint32_t nlinks_;
	uint32_t children_;
	int32_t fd_;
	int32_t wfd_;
	uint64_t deadline_;
	struct cancel_source *tchild_;
	struct cancel_source *tnext_;
	struct cancel_source *tprev_;
	uint32_t tflags_;
	uint32_t gen_;
	struct cancel_callback link_;
	struct cancel_callback *current_;
	void *owner_;
};

/*
 * A token: a small value naming a source. Copy it freely and pass it as the
 * last parameter. CANCEL_TOKEN_NONE can never be canceled.
 */
typedef struct cancel_token {
	struct cancel_source *src_;
} cancel_token;

#ifdef __cplusplus
#define CANCEL_SOURCE_INITIALIZER {}
#define CANCEL_CALLBACK_INITIALIZER {}
#define CANCEL_TOKEN_NONE (cancel_token{})
#else
#define CANCEL_SOURCE_INITIALIZER {0}
#define CANCEL_CALLBACK_INITIALIZER {0}
#define CANCEL_TOKEN_NONE ((cancel_token){0})
#endif

/* ------------------------------------------------------------------ */
/* Sources                                                            */
/* ------------------------------------------------------------------ */

/*
 * Initialize @src as a new, not-canceled source. It behaves exactly like a
 * source filled with zero bytes (CANCEL_SOURCE_INITIALIZER), though init
 * writes only the fields that need a value: other bytes may keep their old
 * contents. Do not call it on a source that is in use.
 * Threads: no other call on @src may run at the same time. Blocks: no.
 */
CANCEL_API void cancel_source_init(struct cancel_source *src);

/*
 * Initialize @src as a source that is canceled whenever one of the @n
 * @parents is (with the first parent reason to arrive), and may also be
 * canceled on its own. CANCEL_TOKEN_NONE parents are ignored. If a parent
 * is already canceled, @src is canceled at once with the reason of the first
 * such parent in array order and links to none of them. Linking one parent
 * allocates nothing; more than one allocates one array.
 *
 * The parents must outlive the child: destroying a parent returns EBUSY
 * until its linked children are destroyed.
 *
 * Returns: 0; EINVAL if @src is NULL or @parents is NULL with @n > 0;
 * ENOMEM (nothing linked, @src left as after cancel_source_init()).
 * Threads: no other call on @src; the parents may be in use. Blocks: no.
 */
CANCEL_API int cancel_source_init_linked(struct cancel_source *src,
                                         const cancel_token *parents,
                                         size_t n);

/*
 * Release what @src holds: unlink from its parents, disarm its timer,
 * close its fd. If a cancel, a timer firing or deferred signal work on @src
 * is finishing on another thread, it first waits for that to end and for
 * the waiters it woke to leave.
 *
 * Called from a callback that @src's own cancel is running, it succeeds
 * once no other callback remains registered, and that cancel never touches
 * @src again, so the callback may free the memory holding @src.
 *
 * Returns: 0; EBUSY (nothing changed) while callbacks are registered,
 * linked children exist (canceled or not) or threads are blocked in a wait
 * on @src; EAGAIN if deferred signal work is pending and the library thread
 * cannot be started; EINVAL for NULL.
 * Threads: no other call that starts using @src. Blocks: only to let a
 * finishing cancel on another thread end.
 */
CANCEL_API int cancel_source_destroy(struct cancel_source *src);

/*
 * The token of @src. Never fails.
 * Threads: any. Blocks: no.
 */
CANCEL_API cancel_token cancel_source_token(struct cancel_source *src);

/*
 * Cancel @src with reason ECANCELED: run every registered callback on this
 * thread, last registered first, each exactly once, then return. Linked
 * children are canceled before it returns.
 *
 * Returns: true only for the call that made the transition; false if @src
 * was already canceled (a concurrent cancel returns false at once, maybe
 * before the winner's callbacks have run). Once it has returned, the token
 * reads canceled.
 * Threads: any. Blocks: runs callbacks; makes a system call only when a
 * thread waits on @src or its fd exists.
 */
CANCEL_API bool cancel_source_cancel(struct cancel_source *src);

/*
 * Same as cancel_source_cancel() with @reason (a positive errno-style value;
 * 0 or negative is treated as ECANCELED). The first reason wins.
 */
CANCEL_API bool cancel_source_cancel_with(struct cancel_source *src,
                                          int reason);

/*
 * Arm (or re-arm, replacing) a deadline @ns nanoseconds from now: at the
 * deadline @src is canceled with reason ETIMEDOUT, its callbacks running on
 * the library thread. CANCEL_NEVER disarms.
 *
 * Allocation: arming never allocates except the first arm in the process
 * (this call or cancel_source_cancel_at()), which starts the library
 * thread (two threads, see above): pthread_create() allocates their
 * memory (two blocks in all with glibc 2.36). Re-arming, disarming and firing allocate nothing
 * (tests/test_alloc.c counts every allocation of the process).
 *
 * The library thread runs every source's callbacks in turn, so a slow
 * callback delays other sources' deadlines by at most its own run time.
 *
 * Returns: 0 (also on an already-canceled source, where it does nothing);
 * EAGAIN if the library thread cannot be started (nothing armed).
 * Threads: any, except racing init/destroy of @src. Blocks: no.
 */
CANCEL_API int cancel_source_cancel_after(struct cancel_source *src,
                                          uint64_t ns);

/*
 * Same as cancel_source_cancel_after() with an absolute CLOCK_MONOTONIC
 * @deadline; NULL disarms. A deadline already past cancels at once on the
 * library thread. Returns: 0, EAGAIN, or EINVAL for a malformed deadline.
 * Allocates only as the first arm in the process (see above).
 */
CANCEL_API int cancel_source_cancel_at(struct cancel_source *src,
                                       const struct timespec *deadline);

/*
 * Cancel @src from a signal handler: async-signal-safe, errno preserved,
 * no lock, no allocation. It sets state and reason and at once wakes
 * threads blocked in the waits, cancel_poll(), the I/O calls and the fd.
 * Callbacks, condition waits and linked children follow on the library
 * thread, which cancel_signal_prepare() must have started; else they run at
 * the next successful prepare. Works on a statically initialized source.
 *
 * Returns: true for the call that made the transition.
 * Threads: any, including signal handlers; not racing destroy of @src.
 */
CANCEL_API bool cancel_source_cancel_from_signal(struct cancel_source *src,
                                                 int reason);

/*
 * Start the library thread from normal context, so that signal-handler
 * cancels get their callbacks run. Runs any work already pending.
 * Returns: 0 or EAGAIN. Threads: any. Blocks: no.
 */
CANCEL_API int cancel_signal_prepare(void);

/*
 * Prepare, then install a handler for @signo (with SA_RESTART, other
 * signals not masked) that cancels @src with reason EINTR. A second call
 * for the same @signo retargets it; the previous disposition is not
 * chained. Do not destroy @src while the handler is installed: restore the
 * disposition (sigaction) first.
 *
 * Returns: 0; EINVAL for a bad @signo (or SIGKILL/SIGSTOP) or NULL @src;
 * EAGAIN if the library thread cannot be started.
 * Threads: any. Blocks: no.
 */
CANCEL_API int cancel_source_cancel_on_signal(struct cancel_source *src,
                                              int signo);

/* ------------------------------------------------------------------ */
/* Tokens                                                             */
/* ------------------------------------------------------------------ */

/*
 * True if @tok is canceled: one acquire load, inline. False for
 * CANCEL_TOKEN_NONE. Threads: any. Blocks: no.
 */
static inline bool
cancel_token_is_canceled(cancel_token tok)
{
	return tok.src_ != NULL &&
	       (__atomic_load_n(&tok.src_->state_, __ATOMIC_ACQUIRE) & 1u) != 0;
}

/* False for CANCEL_TOKEN_NONE, true for any source's token. */
CANCEL_API bool cancel_token_can_be_canceled(cancel_token tok);

/* The reason @tok was canceled with, or 0 if it is not canceled. */
CANCEL_API int cancel_token_reason(cancel_token tok);

/* 0 if @tok is not canceled, else ECANCELED. */
CANCEL_API int cancel_token_check(cancel_token tok);

/*
 * Store in @deadline the earliest armed deadline of @tok's source and all of
 * its ancestors, and return true; false (nothing stored) if none is armed.
 * Threads: any. Blocks: no.
 */
CANCEL_API bool cancel_token_deadline(cancel_token tok,
                                      struct timespec *deadline);

/*
 * Store in @fd a descriptor owned by @tok's source that becomes readable
 * when the token is canceled and stays readable (level-triggered: never
 * read it or drain it, never close it). Created on first request,
 * close-on-exec, kept until destroy; a source has at most one.
 *
 * Returns: 0; EINVAL for CANCEL_TOKEN_NONE or NULL @fd; EMFILE or ENFILE
 * (nothing leaked). Threads: any. Blocks: no.
 */
CANCEL_API int cancel_token_fd(cancel_token tok, int *fd);

/* ------------------------------------------------------------------ */
/* Callbacks                                                          */
/* ------------------------------------------------------------------ */

/*
 * Register @fn(@arg) to run exactly once when @tok is canceled, unless
 * unregistered first. Never allocates, cannot fail.
 *
 * Returns: true when registered (a concurrent cancel may already be running
 * it when this returns); false if @tok was already canceled, in which case
 * @fn has run on this thread before the return. On CANCEL_TOKEN_NONE the
 * registration is only recorded in @cb (true; nothing can run it).
 * @cb must not be registered already.
 * Threads: any. Blocks: no (runs @fn inline when already canceled).
 */
CANCEL_API bool cancel_callback_register(struct cancel_callback *cb,
                                         cancel_fn fn, void *arg,
                                         cancel_token tok);

/*
 * Same as cancel_callback_register() but never runs @fn itself.
 * Returns: 0 when registered; ECANCELED (nothing registered) when @tok is
 * already canceled; EINVAL for NULL @cb or @fn.
 */
CANCEL_API int cancel_callback_try_register(struct cancel_callback *cb,
                                            cancel_fn fn, void *arg,
                                            cancel_token tok);

/*
 * Remove @cb. Returns true if and only if this call removed it before it
 * started, so it never runs. If it is running on another thread, waits
 * until it returns, then returns false. Called from inside the callback
 * (on the thread running it, at any nesting depth) it returns false at
 * once. After it returns, the callback is neither running nor will run,
 * and @cb's storage may be reused.
 *
 * Waiting would deadlock when the running callback is itself (directly or
 * through other threads) waiting in an unregister for a callback that this
 * thread is running: two callbacks unregistering each other while their
 * sources cancel on two threads. Then, as from inside the callback, it
 * returns false at once without waiting; the callback it names returns
 * only after this thread's own callback does.
 * Threads: any. Blocks: only while the callback runs on another thread.
 */
CANCEL_API bool cancel_callback_unregister(struct cancel_callback *cb);

/*
 * Remove @cb without ever waiting.
 * Returns: 0 removed by this call; EINPROGRESS running now (the storage
 * must not be reused yet); EALREADY completed; ENOENT not registered
 * (never, or already removed; @cb must then be all-zero or have been
 * registered before).
 * Threads: any. Blocks: no.
 */
CANCEL_API int cancel_callback_try_unregister(struct cancel_callback *cb);

/* ------------------------------------------------------------------ */
/* Waits                                                              */
/* ------------------------------------------------------------------ */

/* Now plus @ns on CLOCK_MONOTONIC, saturating. Threads: any. */
CANCEL_API struct timespec cancel_deadline_in(uint64_t ns);

/*
 * Block until @tok is canceled (ECANCELED) or @deadline passes (ETIMEDOUT).
 * Returns EINVAL for CANCEL_TOKEN_NONE with no deadline, or a malformed
 * deadline. Restarts on EINTR. Threads: any. Blocks: yes.
 */
CANCEL_API int cancel_wait(const struct timespec *deadline, cancel_token tok);

/* Sleep @ns: 0 after the full time, ECANCELED early. Blocks: yes. */
CANCEL_API int cancel_sleep(uint64_t ns, cancel_token tok);

/*
 * Sleep until @deadline (NULL: until canceled): 0 at the deadline,
 * ECANCELED early, EINVAL for a malformed deadline or NULL with
 * CANCEL_TOKEN_NONE. Blocks: yes.
 */
CANCEL_API int cancel_sleep_until(const struct timespec *deadline,
                                  cancel_token tok);

/*
 * poll(2) with the token's wake-up added. Returns 0 when at least one of
 * @fds has revents; ETIMEDOUT; ECANCELED (revents all zero); poll's own
 * EINVAL/ENOMEM; or the token fd's EMFILE/ENFILE (the token's fd is created
 * on first use and kept: one per source at most). With @nfds == 0 it only
 * waits. May allocate when @nfds is above 32.
 * Threads: any. Blocks: yes.
 */
CANCEL_API int cancel_poll(struct pollfd *fds, nfds_t nfds,
                           const struct timespec *deadline, cancel_token tok);

/*
 * Wait on @cv like pthread_cond_wait(), but also wake when @tok is canceled
 * or @deadline (CLOCK_MONOTONIC, whatever @cv's clock) passes. @mu is held
 * on entry and on every return.
 *
 * Returns: 0 when woken (possibly spuriously: recheck your predicate),
 * ECANCELED, ETIMEDOUT, EINVAL for a malformed deadline, or EAGAIN (without
 * blocking) if the library thread it may need cannot be started. Cancel
 * wakes it by broadcasting @cv, so other waiters on @cv may wake
 * spuriously; a wake-up it took and then reported as ECANCELED or
 * ETIMEDOUT is passed on with one pthread_cond_signal(). The canceling
 * thread never blocks on @mu: if @mu is held, the wake-up comes from the
 * library's work thread once @mu is free.
 * Threads: any. Blocks: yes.
 */
CANCEL_API int cancel_cond_wait(pthread_cond_t *cv, pthread_mutex_t *mu,
                                const struct timespec *deadline,
                                cancel_token tok);

/* ------------------------------------------------------------------ */
/* I/O and processes                                                  */
/* ------------------------------------------------------------------ */

/*
 * One successful read of up to @len bytes into @buf; *@done gets the count
 * (0 at end of file). Returns 0, ECANCELED, ETIMEDOUT or read's error.
 * Nothing is consumed by a call that returns ECANCELED.
 * Threads: any. Blocks: yes.
 */
CANCEL_API int cancel_read(int fd, void *buf, size_t len, size_t *done,
                           const struct timespec *deadline, cancel_token tok);

/*
 * Write all @len bytes unless canceled, timed out or failed; *@done always
 * says how many went out. EPIPE is returned and SIGPIPE never raised.
 * Pipes are written in chunks of at most PIPE_BUF; regular files are
 * canceled between chunks. Threads: any. Blocks: yes.
 */
CANCEL_API int cancel_write(int fd, const void *buf, size_t len, size_t *done,
                            const struct timespec *deadline,
                            cancel_token tok);

/*
 * Accept one connection on listening socket @fd into *@conn
 * (close-on-exec); @addr/@alen as for accept(2), may be NULL.
 * Threads: any. Blocks: yes.
 */
CANCEL_API int cancel_accept(int fd, int *conn, struct sockaddr *addr,
                             socklen_t *alen, const struct timespec *deadline,
                             cancel_token tok);

/*
 * Connect socket @fd to @addr. A blocking socket is made non-blocking for
 * the duration of the call and restored; after ECANCELED or ETIMEDOUT close
 * the socket. Returns 0, ECANCELED, ETIMEDOUT or the connection's error.
 * Threads: any. Blocks: yes.
 */
CANCEL_API int cancel_connect(int fd, const struct sockaddr *addr,
                              socklen_t alen, const struct timespec *deadline,
                              cancel_token tok);

/*
 * Wait for child @pid (> 0, else EINVAL) to exit and reap it, storing its
 * status in *@status (may be NULL). When canceled or timed out the child is
 * left unreaped. Threads: any. Blocks: yes.
 */
CANCEL_API int cancel_waitpid(pid_t pid, int *status,
                              const struct timespec *deadline,
                              cancel_token tok);

#ifdef __cplusplus
}
#endif

#endif /* CANCEL_H */
