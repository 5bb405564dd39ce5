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
 *   - The library thread (SPEC deviation): it is the timer thread plus
 *     work threads. The timer thread fires deadlines and runs signal-
 *     handler finishes; work threads do the deferred broadcasts of
 *     cancel_cond_wait(), which must lock the waiter's mutex. With a
 *     single thread, anyone holding that mutex (even while waiting for a
 *     deadline of its own) would stall every deadline in the process or
 *     deadlock; a Promela model (tests/model/condwait_flaw_lt_blocks.pml)
 *     shows it. One work thread starts with the timer thread; another is
 *     started whenever a broadcast is deferred while every work thread is
 *     blocked on some other mutex, so one blocked user mutex never delays
 *     another waiter's wake-up. There are at most 1 + (threads inside
 *     cancel_cond_wait() whose wake-up is deferred at once) work threads,
 *     and never more than 64 (beyond that a deferred wake-up waits for a
 *     busy work thread); a work thread that finds another one idle exits.
 *   - Lifetime. Once destroy() has returned 0, no thread inside any
 *     libcancel call touches the source again: every call that can block
 *     or loop (the waits, cancel_poll(), each I/O call from start to end,
 *     cancel_cond_wait() until it has its mutex back and has decided its
 *     result, an unregister() waiting for a running callback) counts
 *     itself on the source, and destroy() of a canceled source waits for
 *     them to leave. So do not destroy a canceled source while holding
 *     the mutex that a cancel_cond_wait() on it must take back: destroy()
 *     would wait for that wait, and the wait for the mutex.
 *     A call that has not started yet is not counted: as the thread
 *     table says, no call may start on a source while another thread
 *     destroys it. That includes an unregister() of a callback of that
 *     source (it reads the source to find its lock), so finish
 *     unregistering before destroy() is called, as with any other use
 *     (tests/model/lifetime_flaw_unreg_early.pml shows the window).
 *   - Deadlines: a valid timespec too far to count in 64-bit nanoseconds
 *     (some 584 years of uptime) is still a deadline that never comes;
 *     only the largest timespec, cancel_deadline_in(CANCEL_NEVER), means
 *     "no deadline".
 *   - cancel_token_deadline() may allocate (SPEC deviation: the SPEC lists
 *     no allocation for it) when more than 32 of the ancestors have
 *     several parents: it visits each ancestor once, with a set that lives
 *     on the stack until it outgrows it. Chains of single parents never
 *     allocate.
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
 *   - Causes (1.1): struct cancel_source grew from 168 to 184 bytes (the
 *     timing wheel gave back 8; 192 is the bound) to hold the winning
 *     cancel's message, origin and time.
 *     Every cancel that wins reads CLOCK_MONOTONIC once for the cause's
 *     time (a linked child copies its parent's, so a chain reads it once):
 *     20-30 ns on the benchmark VM (bench_core's "cancel, 1 callback":
 *     54-65 ns, 29-33 ns with that read taken out, alternated), the one
 *     cost causes add (a cancel that finds its source already canceled,
 *     is_canceled, register, unregister, init and destroy are unchanged).
 *   - Hang-up watches (1.1): the SPEC has the library thread watch every
 *     watched descriptor in one kernel object. While a thread is blocked
 *     in cancel_wait() or a sleep on the watched source itself and that
 *     source has no callback, the waiting thread watches the descriptor
 *     instead, and cancels the source itself when the peer leaves (one
 *     wake-up instead of two; see cancel_watch_hangup). Callbacks still
 *     run only on the library thread, no thread is added, and the rest of
 *     the contract is unchanged. Such a thread keeps one wake-up
 *     descriptor until it exits. A cancel from a signal handler reaches
 *     such a waiter through the library thread, like a portable-backend
 *     wake-up. cancel_watch_stop() may also wait, one wake-up long, for
 *     such a thread to let go of the descriptor (the SPEC names only the
 *     wait for a running cancel), so that the caller may close it at once.
 *   - Portable ("pthread") wait backend only: cancel_source_cancel_from_signal()
 *     cannot wake threads blocked in cancel_wait()/cancel_sleep() from
 *     inside the handler (no async-signal-safe condvar exists); the library
 *     thread wakes them right after, so cancel_signal_prepare() must have
 *     succeeded (SPEC deviation, portable backend only; the Linux futex
 *     backend wakes them from the handler as specified). cancel_poll(), the
 *     I/O calls and the token's fd are woken from the handler on both.
 *   - Hang-up watches (SPEC deviations, marked): at most one active watch
 *     per descriptor on the epoll backend (a second one returns EEXIST:
 *     epoll keys its interest list on the descriptor); the first watch
 *     may also return EMFILE or ENFILE (the epoll descriptor); regular
 *     files and directories give EINVAL there. The portable backend keeps
 *     a growable array of watches (ENOMEM) and polls every watched
 *     descriptor from the library thread. A watch inherited across
 *     fork() is idle in the child: it never fires there, and stopping it
 *     only releases its hold on the source.
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
 *   watch_hangup, watch_stop           everything except init/destroy of
 *                                      the source; not two calls on the
 *                                      same watch at once
 *   cancel_from_signal,                anything except destroy of that
 *   cancel_from_signal_with_cause      source, from a signal handler
 *   cancel_with_cause                  as cancel
 *   cancel_token_cause                 as the token queries (not from a
 *                                      signal handler)
 *   cancel_on_signal,                  each other (serialized); the
 *   cancel_signal_restore              handler; after restore returns,
 *                                      destroy of the old target
 *
 * fork(): in the child, use sources created after the fork; an inherited
 * source may only be initialized again (its fd is abandoned; it is
 * close-on-exec). The library thread, every internal lock and the timer
 * are reset in the child, so inherited deadlines do not fire there; fork
 * is safe while other threads are inside any libcancel call, and from a
 * callback on the library thread (that thread's copy in the child leaves
 * once the callback returns; if it is the child's only thread the child
 * exits with status 0). The child never writes a descriptor it inherited,
 * so a cancel there (a signal handler canceling an inherited source)
 * never wakes the parent; a wait that finds its token's fd readable while
 * the token is not canceled treats it as spurious and keeps its deadline.
 *
 * Sources must not live in memory shared between processes.
 */
#ifndef CANCEL_H
#define CANCEL_H

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <spawn.h>
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
#define CANCEL_VERSION_MINOR 1
#define CANCEL_VERSION_PATCH 0

/* No deadline / no duration: the largest uint64_t. */
#define CANCEL_NEVER UINT64_MAX

/* Link propagation runs this many nested children inline (see above). */
#define CANCEL_LINK_INLINE_DEPTH 8

/*
 * Marks calls whose result must not be ignored (destroy and the try_
 * calls): ignoring it is how a source with an armed timer or registered
 * callbacks gets freed while the library still points into it. Note that
 * GCC warns even through a (void) cast: use the result. Empty where the
 * compiler has no such attribute.
 */
#if defined(__GNUC__) || defined(__clang__)
#define CANCEL_MUST_USE __attribute__((warn_unused_result))
#else
#define CANCEL_MUST_USE
#endif

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
	struct cancel_source *tnext_;
	struct cancel_source **tpprev_;
	uint32_t tflags_;
	uint32_t gen_;
	struct cancel_callback link_;
	struct cancel_callback *current_;
	void *owner_;
	/* 1.1: the cause, written once by the cancel that won (see
	 * cancel_token_cause()). With the wheel's fields the source is 184
	 * bytes (1.0: 168). */
	const char *cause_msg_;
	const struct cancel_source *cause_origin_;
	uint64_t cause_when_;
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
 * Once it has returned 0, no thread inside a libcancel call reads or
 * writes @src again (waits, I/O calls, condition waits taking their mutex
 * back, unregisters woken from their wait, the library thread), so the
 * memory may be freed at once.
 *
 * Returns: 0; EBUSY (nothing changed) while callbacks are registered,
 * linked children exist (canceled or not), or threads are inside a wait,
 * an I/O call or a waiting unregister on @src that is not canceled; from
 * a callback of @src's own cancel, also while another thread's unregister
 * waits for the callback now running; EAGAIN if deferred signal work is
 * pending and the library thread cannot be started; EINVAL for NULL.
 * Threads: no other call that starts using @src. Blocks: to let a
 * finishing cancel on another thread end, and the threads it woke leave
 * their calls on @src (a cancel_cond_wait() leaves once it has its mutex
 * back: do not hold that mutex while destroying).
 */
CANCEL_MUST_USE
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
 * deadline @src is canceled with reason ETIMEDOUT (cause message "deadline
 * passed"), its callbacks running on the library thread. CANCEL_NEVER
 * disarms.
 *
 * Allocation: arming never allocates except the first arm in the process
 * (this call or cancel_source_cancel_at()), which starts the library
 * thread (two threads, see above): pthread_create() allocates their
 * memory (two blocks in all with glibc 2.36). Re-arming, disarming and
 * firing allocate nothing (tests/test_alloc.c counts every allocation of
 * the process). Another work thread, and so pthread_create()'s memory,
 * is started only when a cancel_cond_wait() wake-up must be deferred while
 * every work thread is blocked on some other mutex (see the top).
 *
 * The library thread runs every source's callbacks in turn, so a slow
 * callback delays other sources' deadlines by at most its own run time.
 *
 * Precision. Never early: a source fires only once CLOCK_MONOTONIC has
 * reached its exact deadline (kept to the nanosecond). Armed sources sit
 * in a hierarchical timing wheel of 9 levels x 64 slots; level L's slots
 * are 1.024 us x 64^L wide and it holds deadlines up to 64 such slots
 * ahead of the wheel's time:
 *   level 0: 1.024 us slots, up to 65.5 us ahead;   level 1: 65.5 us, 4.2 ms;
 *   level 2: 4.19 ms, 268 ms;   level 3: 268 ms, 17.2 s;
 *   level 4: 17.2 s, 18.3 min;  level 5: 18.3 min, 19.5 h;
 *   level 6: 19.5 h, 52 days;   level 7: 52 days, 9.1 years;
 *   level 8: 9.1 years, every later deadline (to 2^64 ns).
 * A slot's entries move down a level when its time comes, so the slot
 * width is not added to the lateness at any level: the library thread
 * sleeps to the exact earliest deadline when it is known (a level-0 slot,
 * or a slot holding one source) and otherwise to a slot start, which is
 * early, then looks again at a finer level. Lateness is the wake-up
 * latency of the thread's last sleep (close to a raw clock_nanosleep():
 * bench/bench_timer.c), plus the run time of callbacks firing ahead of it,
 * plus, for deadlines falling due together, about 0.2-0.4 us per source
 * ahead of it (bench_timer's burst of 1,000,000, each callback appending
 * one record to a log; a callback that touches cold memory adds its own
 * misses).
 * Sources due together fire in deadline order (exactly; the documented
 * bound is one level-0 slot, 1.024 us). Arming, re-arming and disarming
 * cost O(1) at any number of armed sources; pushing an armed deadline
 * later takes no lock (a keep-alive timeout re-armed on every read), an
 * earlier one or a first arm takes the wheel's spin lock for a few
 * pointer moves (while the library thread moves a large slot down a
 * level, it holds that lock for at most 256 entries at a time).
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
 * signals not masked) that cancels @src with reason EINTR and the signal's
 * name as the cause's message ("SIGINT"). A second call for the same
 * @signo retargets it; the previous disposition is not chained, but the
 * one found by the first call is kept for cancel_signal_restore(). Do not
 * destroy @src while the handler targets it: cancel_signal_restore() (or
 * retarget) first; both wait for handler runs already using it.
 *
 * Returns: 0; EINVAL for a bad @signo (or SIGKILL/SIGSTOP) or NULL @src;
 * EAGAIN if the library thread cannot be started.
 * Threads: any, not from a signal handler. Blocks: a retarget waits for
 * handler runs already using the old source.
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
 * Each ancestor is visited once, without recursion; may allocate when more
 * than 32 ancestors have several parents (see the top of this file). If
 * that allocation fails, ancestors beyond the first 64 may be left out.
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
CANCEL_MUST_USE
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
CANCEL_MUST_USE
CANCEL_API int cancel_callback_try_unregister(struct cancel_callback *cb);

/* ------------------------------------------------------------------ */
/* Waits                                                              */
/* ------------------------------------------------------------------ */

/* Now plus @ns on CLOCK_MONOTONIC, saturating. Threads: any. */
CANCEL_API struct timespec cancel_deadline_in(uint64_t ns);

/*
 * Block until @tok is canceled (ECANCELED) or @deadline passes (ETIMEDOUT).
 * Returns EINVAL for CANCEL_TOKEN_NONE with no deadline, or a malformed
 * deadline. Restarts on EINTR. Threads: any. Blocks: yes. On a source
 * with a hang-up watch and no callbacks it polls the watched descriptor
 * itself (see cancel_watch_hangup), as do the two sleeps below.
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

/* ------------------------------------------------------------------ */
/* Loop delivery (contract 1.1)                                       */
/* ------------------------------------------------------------------ */

/*
 * A queue of fired callbacks for an event loop: callbacks registered
 * through it run on the thread that calls cancel_queue_run(), never on the
 * canceling thread. All fields are private. Initialize with
 * cancel_queue_init().
 *
 * Plugging it into a loop: cancel_queue_fd() is readable (level-triggered)
 * exactly while fired callbacks wait; when it is, call cancel_queue_run().
 *   epoll:  epoll_ctl(ep, EPOLL_CTL_ADD, cancel_queue_fd(&q),
 *                     &(struct epoll_event){.events = EPOLLIN, ...});
 *           on that event: cancel_queue_run(&q);
 *   libuv:  uv_poll_init(loop, &h, cancel_queue_fd(&q));
 *           uv_poll_start(&h, UV_READABLE, cb) and run the queue in cb;
 *   GLib:   g_unix_fd_add(cancel_queue_fd(&q), G_IO_IN, fn, &q) with fn
 *           calling cancel_queue_run() and returning G_SOURCE_CONTINUE.
 * Never read the fd yourself: run() clears it.
 */
struct cancel_queue {
	uint32_t lock_;
	uint32_t signaling_;
	size_t pending_;
	struct cancel_callback *head_;
	struct cancel_callback *tail_;
	struct cancel_callback *current_;
	void *runner_;
	uint32_t gen_;
	uint32_t index_;
	uint32_t registered_;
	uint32_t users_;
	int32_t rfd_;
	int32_t wfd_;
};

/*
 * Initialize @q: one descriptor (eventfd, or a pipe on the portable
 * backend; close-on-exec) however many sources feed it.
 * Returns: 0; EINVAL for NULL; EMFILE/ENFILE; ENOMEM (more than about a
 * million queues at once). Threads: no other call on @q. Blocks: no.
 */
CANCEL_API int cancel_queue_init(struct cancel_queue *q);

/*
 * The queue's descriptor: readable while fired callbacks wait to run.
 * Owned by @q (never read, drain or close it). Threads: any. Blocks: no.
 */
CANCEL_API int cancel_queue_fd(struct cancel_queue *q);

/*
 * Run the callbacks queued at the time of the call, each once, on this
 * thread, in the order they fired; clear the descriptor when none is
 * left. Callbacks that fire meanwhile wait for the next call (the fd stays
 * readable for them). Returns how many ran.
 * Threads: one thread per queue at a time (the loop's). Blocks: runs
 * callbacks.
 */
CANCEL_API size_t cancel_queue_run(struct cancel_queue *q);

/*
 * Release @q's descriptor. Returns: 0; EBUSY (nothing changed) while
 * callbacks are registered through it (registered and not yet run or
 * removed) or an unregister waits on it; EINVAL for NULL.
 * Threads: no other call on @q. Blocks: no (a cancel that queued a
 * callback which has already run may still be finishing its write to the
 * fd: destroy waits for that, a few microseconds).
 */
CANCEL_MUST_USE
CANCEL_API int cancel_queue_destroy(struct cancel_queue *q);

/*
 * Register @fn(@arg) to run exactly once on @q's loop thread when @tok is
 * canceled, unless unregistered first. The cancel only appends it to @q
 * (no allocation, no user code, a few pointer moves under @q's spin lock,
 * which cancel_queue_run() never holds while a callback runs) and makes
 * the queue's fd readable (one write per batch, after the lock).
 *
 * cancel_callback_unregister() / try_unregister() work on it: true / 0
 * while it is registered or fired but not yet run (it is taken out of the
 * queue and never runs); while it runs on the loop thread, unregister
 * waits for it (from the loop thread itself, false at once) and
 * try_unregister gives EINPROGRESS; afterwards false / EALREADY.
 *
 * Returns: 0; ECANCELED (nothing registered or queued) if @tok is already
 * canceled; EINVAL for NULL @cb, @fn or @q. On CANCEL_TOKEN_NONE it is
 * only recorded in @cb (0; it never runs and does not hold @q).
 * Threads: any. Blocks: no.
 */
CANCEL_API int cancel_callback_register_queued(struct cancel_callback *cb,
                                               cancel_fn fn, void *arg,
                                               struct cancel_queue *q,
                                               cancel_token tok);

/* ------------------------------------------------------------------ */
/* Groups (contract 1.1): structured fan-out on threads                */
/* ------------------------------------------------------------------ */

/*
 * The function a group member runs: @arg is the one given to
 * cancel_group_go(), @tok the group's token. Return 0 for success or a
 * positive errno-style value for a failure (a negative value is passed to
 * cancel_group_wait() as it is, but cancels the group with ECANCELED).
 * It must return: a member thread ended by pthread_exit() or
 * pthread_cancel() would leave cancel_group_wait() waiting forever.
 */
typedef int (*cancel_task_fn)(void *arg, cancel_token tok);

/*
 * A group of member threads (Go's errgroup, Trio's nursery): each member
 * runs fn(arg, tok) on a thread of its own with the group's token, which is
 * linked to the parent given to init. The first member to fail cancels the
 * group with its result as the reason, so its siblings' waits return at
 * once; cancel_group_wait() joins them all and returns that first failure.
 *
 * Caller-owned; all fields are private. All-zero bytes
 * (CANCEL_GROUP_INITIALIZER) are an idle group that was never initialized:
 * wait and destroy return 0 on it, go and try_go EINVAL; call
 * cancel_group_init() before the first go.
 *
 * Threads: the member threads are the group's own, with every signal
 * blocked. A thread whose member returned parks in the group and runs the
 * next member go hands it (1,000 trivial members: 4-8 ms reused, 38-48 ms
 * for raw pthread_create + pthread_join; bench/README.md);
 * cancel_group_wait() joins every one of them, so none is left once wait
 * has returned 0, a failure or ECANCELED.
 *
 * Decisions where the SPEC is silent:
 *   - go and try_go on a canceled group run nothing and return the group's
 *     reason, free slot or not: nothing new starts after a cancel.
 *   - A member's result counts as a failure unless it is 0, or ECANCELED
 *     while the group's token reads canceled. The first failure is the one
 *     whose cancel took effect; if the group was already canceled from
 *     outside, the first failing member to return.
 *   - cancel_group_wait() from inside a member of the same group would wait
 *     for itself: it returns EDEADLK at once.
 *   - A member may fail with EAGAIN or any other value that go itself
 *     returns; when go's result must be told apart, check
 *     cancel_token_is_canceled(cancel_group_token(g)).
 */
struct cancel_group {
	struct cancel_source src_;
	pthread_mutex_t mu_;
	pthread_cond_t slot_cv_;
	pthread_cond_t done_cv_;
	void *idle_;
	unsigned limit_;
	unsigned active_;
	unsigned threads_;
	unsigned users_;
	int err_;
	uint32_t flags_;
};

#ifdef __cplusplus
#define CANCEL_GROUP_INITIALIZER {}
#else
#define CANCEL_GROUP_INITIALIZER {0}
#endif

/*
 * Initialize @g as an empty group running at most @limit members at once
 * (0: no bound; fixed for the group's life), whose token is linked to
 * @parent (CANCEL_TOKEN_NONE: none). If @parent is already canceled, the
 * group starts canceled with its reason. Allocates nothing.
 *
 * Returns: 0; EINVAL for NULL @g; the error of pthread_mutex_init or
 * pthread_cond_init (nothing left initialized).
 * Threads: no other call on @g may run at the same time. Blocks: no.
 */
CANCEL_API int cancel_group_init(struct cancel_group *g, unsigned limit,
                                 cancel_token parent);

/*
 * The group's token: the one every member receives. It reads canceled
 * once a member failed or the parent was canceled; its reason is then the
 * failure or the parent's reason. Never fails.
 * Threads: any. Blocks: no.
 */
CANCEL_API cancel_token cancel_group_token(struct cancel_group *g);

/*
 * Start @fn(@arg, token) as a new member, on a parked thread of the group
 * or a new one. If @limit members are running, wait until one returns.
 * From inside a member of @g it never waits: it returns EAGAIN when full.
 *
 * Returns: 0 (the member will run); the group's reason (the failing
 * member's result, the parent's reason, or ECANCELED), running nothing,
 * if the group is or becomes canceled before a slot is free; EAGAIN when
 * full and called from a member of @g, or when a thread cannot be created
 * (nothing started, the group is not canceled), or when the library thread
 * that a wait for a slot needs cannot be started; EINVAL for NULL @g or
 * @fn or an uninitialized group.
 * Threads: any, concurrently with go, try_go and wait; not racing init or
 * destroy. Blocks: while the group is full (woken by a member returning
 * or by the group's cancel), and while a new thread starts.
 */
CANCEL_API int cancel_group_go(struct cancel_group *g, cancel_task_fn fn,
                               void *arg);

/*
 * Same as cancel_group_go(), but returns EAGAIN at once instead of
 * waiting when @limit members are running.
 * Threads: as go. Blocks: only while a new thread starts.
 */
CANCEL_API int cancel_group_try_go(struct cancel_group *g, cancel_task_fn fn,
                                   void *arg);

/*
 * Wait until every member started so far (members started by members
 * included) has returned, and join the group's threads. It never cancels
 * the group: a caller that wants the members to stop cancels the parent.
 *
 * Returns: 0 if every member returned 0; else the first failure; ECANCELED
 * if the group was canceled from outside (the parent, or the group
 * token's source) and no member failed; ETIMEDOUT if @deadline (absolute
 * CLOCK_MONOTONIC, NULL: none) passed first, in which case the members
 * keep running and wait may be called again; EDEADLK from inside a member
 * of @g; EINVAL for NULL @g or a malformed deadline; EAGAIN if the library
 * thread a timed wait needs cannot be started (portable builds only).
 * Once it has returned anything but ETIMEDOUT, EDEADLK, EINVAL or EAGAIN,
 * every member it waited for has returned, its thread is joined and none
 * touches @g (a go running concurrently may start new ones).
 * Threads: any, concurrently with go, try_go and other waits. Blocks: yes.
 */
CANCEL_API int cancel_group_wait(struct cancel_group *g,
                                 const struct timespec *deadline);

/*
 * Release what @g holds (its source, mutex and condition variables). After
 * it returned 0 nothing touches @g: the caller may free it at once.
 *
 * Returns: 0 (@g is then all-zero-like: idle); EBUSY (nothing changed)
 * while members run, threads are not yet joined by cancel_group_wait(), a
 * go or wait is inside, or the group's source is busy (callbacks
 * registered or linked children on the group's token, passed on from
 * cancel_source_destroy()); EINVAL for NULL.
 * Threads: no other call on @g. Blocks: no.
 */
CANCEL_MUST_USE
CANCEL_API int cancel_group_destroy(struct cancel_group *g);
/* Hang-up watches (contract 1.1)                                     */
/* ------------------------------------------------------------------ */

/*
 * A hang-up watch: cancels a source when the peer of a socket (or pipe)
 * goes away. Stored wherever the caller likes; all fields are private.
 * All-zero bytes (CANCEL_WATCH_INITIALIZER) are an idle watch.
 */
struct cancel_watch {
	struct cancel_source *src_;
	struct cancel_watch *next_;
	struct cancel_watch *prev_;
	int32_t fd_;
	uint32_t flags_;
	uint32_t state_;
	uint32_t stamp_;
	uint32_t gen_;
	uint32_t slot_;
};

#ifdef __cplusplus
#define CANCEL_WATCH_INITIALIZER {}
#else
#define CANCEL_WATCH_INITIALIZER {0}
#endif

/* Do not cancel when the peer only shuts down its sending side. */
#define CANCEL_WATCH_IGNORE_HALF_CLOSE 1u

/*
 * Cancel @src with reason ECONNRESET when the peer of @fd (a connected
 * socket or a pipe) goes away: a reset, an error, a hang-up, or (unless
 * @flags has CANCEL_WATCH_IGNORE_HALF_CLOSE) the peer's orderly close of
 * its sending side. A peer already gone at the call cancels promptly.
 *
 * The watch never reads from @fd and never changes its flags: unread
 * request bytes do not matter. No thread per watch: the library thread
 * watches every watched descriptor of the process in one kernel object
 * (epoll on Linux; with CANCEL_WAIT_BACKEND=pthread a portable poll()
 * set, POLLRDHUP where the system has it, else POLLHUP only). @src's
 * callbacks always run on the library thread. The epoll backend allocates
 * nothing per watch; the portable one keeps a growable array (ENOMEM).
 *
 * A thread blocked in cancel_wait(), cancel_sleep() or
 * cancel_sleep_until() on @src's own token while @src has no callback
 * registered (nothing for the library thread to run) watches @fd itself
 * for as long as it waits: the hang-up then wakes that thread directly,
 * which cancels @src (reason, cause and time as above) and returns, one
 * wake-up instead of two. A callback registered meanwhile hands the
 * cancel back to the library thread. Such a thread keeps one
 * close-on-exec descriptor (an eventfd; a pipe on the portable backend)
 * until it exits. One waiter per watch polls; others wait as usual.
 *
 * With CANCEL_WATCH_IGNORE_HALF_CLOSE, a peer that closes its socket
 * without unread data looks exactly like a half-close until something is
 * written to it (the reply then draws a reset, which cancels): only
 * resets, errors and full hang-ups are watched.
 *
 * The watch stays active (and @src cannot be destroyed: EBUSY) until
 * cancel_watch_stop(), also after it fired. Call cancel_watch_stop()
 * before closing @fd. At most one active watch per descriptor number
 * (epoll backend: EEXIST for a second one).
 *
 * Returns: 0; ECANCELED (nothing watched) when @src is already canceled;
 * EBUSY if @w is active; EINVAL for NULL @w or @src, unknown @flags, or an
 * @fd that is not open or cannot be watched (a regular file or
 * directory on the epoll backend); EEXIST (see above); EAGAIN if the
 * library thread cannot be started; ENOSPC or ENOMEM from the kernel (or,
 * portable backend, the array); EMFILE or ENFILE when the first watch
 * cannot create the library's epoll descriptor.
 * Threads: any; not two calls on the same @w at once; not racing init or
 * destroy of @src. Blocks: no.
 */
CANCEL_API int cancel_watch_hangup(struct cancel_watch *w, int fd,
                                   unsigned flags, struct cancel_source *src);

/*
 * Stop watch @w. Returns true if it stopped the watch before it fired
 * (the source is not canceled by it, then or later); false if the watch
 * had fired (or @w is idle or NULL). If the cancel the watch started is
 * still running on the library thread, waits until it has returned, as
 * cancel_callback_unregister() does, except when called from inside that
 * cancel's own callbacks, where it returns false at once.
 *
 * Call it before close(@fd): a closed descriptor whose number is reused
 * must never cancel another request. After it returns, nothing in the
 * library touches @w, which may be reused or freed, @w no longer holds
 * its source (destroy may succeed), and no thread polls @fd any more (a
 * waiter that watched it itself has let go and waits on as usual).
 * Threads: any; not two calls on the same @w at once. Blocks: only while
 * the watch's cancel runs on the library thread, or until a waiter that
 * polls @fd has let go (a wake-up away).
 */
CANCEL_API bool cancel_watch_stop(struct cancel_watch *w);

/* ------------------------------------------------------------------ */
/* Processes                                                          */
/* ------------------------------------------------------------------ */
/*
 * Start a child safely in a threaded program that uses libcancel, and stop
 * it on cancel or deadline: politely (SIGTERM), then for sure (SIGKILL),
 * and always reap it.
 *
 * A child spawned with CANCEL_SPAWN_NEW_GROUP leads its own process group:
 * stopping it stops everything it started in that group (a shell's
 * pipeline), but it no longer gets the terminal's Ctrl-C. Forward that as
 * a cancel: cancel_source_cancel_on_signal(&src, SIGINT) on the source
 * whose token the wait takes (examples/run_with_timeout.c).
 */

/* cancel_process_spawn() flags. */
#define CANCEL_SPAWN_NEW_GROUP 1u   /* the child leads its own group */
#define CANCEL_SPAWN_SEARCH_PATH 2u /* look @file up in PATH (posix_spawnp) */

/*
 * Start @file with @argv (argv[0] included, NULL-terminated) and @envp
 * (NULL: this process's environment) as a child; its pid goes to *@pid.
 * posix_spawn() underneath (posix_spawnp() with CANCEL_SPAWN_SEARCH_PATH),
 * with @actions (may be NULL) applied in the child.
 *
 * In the child every signal is back at its default action (handled and
 * ignored ones alike: no handler of this process, libcancel's included,
 * ever runs there, and a SIG_IGN such as a server's SIGPIPE is not
 * inherited) and none is blocked, whatever the calling thread blocks.
 * Signals stay blocked in the child until those defaults are in place.
 * Only descriptors without close-on-exec (libcancel's all have it) and
 * those @actions sets up reach the child. With CANCEL_SPAWN_NEW_GROUP the
 * child is the leader of a new process group (its pgid is its pid) by the
 * time this returns.
 *
 * Returns: 0; EINVAL for a NULL @pid, @file or @argv, or an unknown flag;
 * otherwise the spawn's error, the exec's included (ENOENT, EACCES,
 * ENOEXEC, E2BIG, EAGAIN, ENOMEM...). *@pid is written only on success.
 * errno is left alone.
 * Threads: any. Blocks: only while the child is created and execs (all
 * signals blocked in the calling thread meanwhile).
 */
CANCEL_API int cancel_process_spawn(pid_t *pid, const char *file,
                                    char *const argv[], char *const envp[],
                                    const posix_spawn_file_actions_t *actions,
                                    unsigned flags);

/*
 * Wait for child @pid to exit and reap it, always: no zombie is left by
 * any return but EINVAL and ECHILD.
 *
 * If the child exits before the token is canceled and before @deadline,
 * returns 0 with its status. Otherwise it is stopped: SIGTERM, then
 * SIGCONT (so a stopped child can act on it); up to @grace_ns for it to
 * exit; then SIGKILL; then it is reaped, its real status stored, and the
 * call returns ECANCELED (token; wins when both are seen together) or
 * ETIMEDOUT (@deadline). A child found already exited when the cancel or
 * deadline is seen, before anything was sent, counts as exiting on its
 * own (0). The grace is waited for in full even if the token is canceled
 * during it (CANCEL_NEVER: SIGKILL is never sent; 0: SIGKILL right after
 * SIGTERM). An already-canceled token or a past deadline stops a running
 * child at once.
 *
 * When the child leads its own process group at that point
 * (CANCEL_SPAWN_NEW_GROUP), SIGTERM and SIGCONT go to the whole group, and
 * SIGKILL goes to the group as soon as the child has exited or the grace
 * ran out, whichever comes first: group members still running after the
 * child exits get no grace of their own, and do not make the wait hang
 * (it waits for @pid only). A child that exits on its own is reaped and
 * its group left alone; signaling that group afterwards yourself,
 * kill(-pid, ...), has the usual caveat: once every member is gone, its
 * number may name a new process's group.
 *
 * Where the kernel has pidfds (Linux 5.3), the wait is woken by the
 * child's exit and signals go through pidfd_send_signal(), so a pid that
 * was reaped or reused behind the call's back is never signaled.
 * Otherwise it checks the child with waitpid(WNOHANG) at growing intervals
 * (1 ms to 50 ms; a cancel still wakes it at once) and signals with
 * kill(): then no other thread may reap @pid (waitpid(-1, ...)) meanwhile.
 * Either way the group signals are sent before the child is reaped, when
 * its number cannot have been reused. @status may be NULL.
 *
 * Returns: 0, ECANCELED, ETIMEDOUT (*@status set for these three);
 * EINVAL for @pid <= 0 or a malformed deadline; ECHILD if @pid is not a
 * child of this process, or SIGCHLD is ignored (SIG_IGN or SA_NOCLDWAIT:
 * the kernel reaps children itself). errno is left alone; not a
 * pthread cancellation point.
 * Threads: any; one wait per child. The token's source may be destroyed as
 * soon as the call has started its grace: the grace never looks at it.
 * Blocks: yes, until the child is reaped (after a SIGKILL, as long as the
 * kernel takes to end it).
 */
CANCEL_API int cancel_process_wait(pid_t pid, int *status, uint64_t grace_ns,
                                   const struct timespec *deadline,
                                   cancel_token tok);

/* ------------------------------------------------------------------ */
/* Causes and signals (1.1)                                           */
/* ------------------------------------------------------------------ */

/*
 * Why, where and when a token was canceled, for logs; code branches on the
 * reason. The first cancel of a source wins its reason and its cause
 * together: a reader never sees the reason of one cancel with the message,
 * origin or time of another.
 */
struct cancel_cause {
	int reason;                         /* as cancel_token_reason() */
	const char *msg;                    /* static text, or NULL */
	const struct cancel_source *origin; /* where the cancel started */
	struct timespec when;               /* CLOCK_MONOTONIC */
};

/*
 * Same as cancel_source_cancel_with() (0 or negative @reason: ECANCELED),
 * recording @msg as the message of the cause. @msg is kept by pointer: a
 * string literal or other storage that outlives every reader (NULL for
 * none). The cause's origin is @src, its time now.
 *
 * The library's own cancels give causes too: a deadline (cancel_after,
 * cancel_at) "deadline passed" with ETIMEDOUT; cancel_on_signal the
 * signal's name ("SIGINT", "SIGTERM", "SIGRTMIN+2"...) with EINTR; a
 * hang-up watch "peer hung up" with ECONNRESET. cancel_source_cancel(),
 * cancel_with() and cancel_from_signal() give a NULL message.
 *
 * Returns: true only for the call that made the transition.
 * Threads: any. Blocks: runs callbacks, as cancel_source_cancel().
 */
CANCEL_API bool cancel_source_cancel_with_cause(struct cancel_source *src,
                                                int reason, const char *msg);

/*
 * cancel_source_cancel_from_signal() with a message: async-signal-safe,
 * errno preserved, same rules.
 * Threads: any, including signal handlers; not racing destroy of @src.
 */
CANCEL_API bool cancel_source_cancel_from_signal_with_cause(
    struct cancel_source *src, int reason, const char *msg);

/*
 * Once @tok reads canceled, fill *@cause and return true; before, return
 * false and store nothing (also for CANCEL_TOKEN_NONE). For a linked
 * child canceled through a parent, origin is the ancestor where the cancel
 * started (the source a cancel call, timer, watch or signal acted on) and
 * when is the time of that cancel: compare origin with your own sources,
 * never dereference it (it may have been destroyed since). when is
 * CLOCK_MONOTONIC read by the cancel that won, just before it set the
 * canceled state.
 *
 * Threads: any thread, not from a signal handler (a handler that
 * interrupted a cancel of the same source between its state change and
 * the publication of its cause, a few instructions, would wait for
 * itself). Blocks: no (may spin for those few instructions).
 */
CANCEL_API bool cancel_token_cause(cancel_token tok,
                                   struct cancel_cause *cause);

/*
 * Undo cancel_source_cancel_on_signal() for @signo: put back exactly the
 * disposition that was in place before the first cancel_on_signal() for
 * @signo (handler, flags and mask), and forget the target source. Before
 * it returns it waits for handler runs of @signo that had already started
 * on other threads, so afterwards the library's handler never touches the
 * source again and it may be destroyed. Only the handler's own use of the
 * source ends here: a cancel the handler made may still have callbacks to
 * run on the library thread, which destroy() waits for.
 *
 * Returns: 0; EINVAL if no cancel_on_signal() handler is installed for
 * @signo (never installed, or already restored) or @signo is out of range.
 * Threads: any, not from a signal handler. Blocks: only while a handler
 * run of @signo finishes on another thread.
 */
CANCEL_API int cancel_signal_restore(int signo);

/*
 * Leak report (environment variable CANCEL_DEBUG=leaks, read once at
 * load): at exit the library prints to stderr every source initialized
 * with cancel_source_init() or cancel_source_init_linked() and not
 * destroyed, with the code address of the call that initialized it, its
 * armed deadline and its registered callbacks (each callback's function
 * address); nothing when every source was destroyed. Addresses resolve
 * with addr2line or a debugger. Sources set up with
 * CANCEL_SOURCE_INITIALIZER alone are not seen. Off (the default) it costs
 * one predictable branch in init and destroy.
 */

#ifdef __cplusplus
}
#endif

#endif /* CANCEL_H */
