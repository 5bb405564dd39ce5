/*
 * The library thread: one per process, started on first use from normal
 * context, with every signal blocked and detached (it never keeps the
 * process alive; exit() simply ends it wherever it sleeps). It sleeps in
 * ppoll() on a wake-up descriptor, with a relative timeout recomputed from
 * CLOCK_MONOTONIC on every loop, and serves three clients:
 *
 *   1. The timer. Armed sources sit in a hierarchical timing wheel
 *      (below) threaded through their own fields (deadline_, tnext_,
 *      tpprev_), so arming never allocates; arm, re-arm and disarm are
 *      O(1), and expiry O(1) amortized. Due sources are canceled with
 *      reason ETIMEDOUT one at a time, earliest deadline first.
 *   2. Deferred work items (struct cancel__work) for condition waits: each
 *      fn runs with no library lock held, so it may block on a user mutex.
 *      They run on a second, companion thread (the "work thread"), never
 *      on the timer thread: a user holding that mutex for long (or while
 *      waiting for a deadline of its own) must not stall every deadline
 *      and signal finish in the process. Both threads start together.
 *   3. Finishes of signal-handler cancels, pushed lock-free by the handler
 *      and run in the order they were posted.
 *
 * Guarantees:
 *   - The callbacks of a timed-out source run on the library thread, with
 *     all signals blocked. cancel__lt_is_self() is true there.
 *   - Work runs one item at a time. A slow callback (or work item) delays
 *     the other deadlines by at most its own run time: nothing else is
 *     waited for.
 *   - A fire is never early (a deadline is due when CLOCK_MONOTONIC has
 *     reached it). It is late by the wake-up latency of ppoll() (the
 *     thread asks for a 1 ns timer slack where the system allows it, and
 *     shortens the timeout by the slack Linux adds to poll timeouts: see
 *     poll_timeout(); bench/bench_timer.c and bench/README.md for numbers)
 *     plus the run time of any callback or work item ahead of it. A
 *     timeout costs no read(2) of the wake descriptor.
 *   - After a firing's cancel has returned, the thread never touches that
 *     source again, so a callback may destroy and free it.
 *   - Arming wakes the thread only when the new deadline is earlier than
 *     the one it sleeps toward, so arming and disarming cost a spin lock
 *     and a few pointer moves, no system call, and pushing an armed deadline
 *     later (a watchdog, a keep-alive timeout) takes no lock at all. A
 *     disarmed or pushed-back earliest deadline costs one spurious
 *     wake-up at the old time.
 *   - The thread never exits and runs with pthread cancellation
 *     disabled; the library's own condvar waits (disarm, work wait)
 *     disable pthread_cancel while they hold its mutex.
 *
 * Locking: a spin lock (w_mu) guards the wheel, the due list, `firing`
 * and sleep_until: its holders only move pointers, never block nor call
 * out, and its unlock is a plain release store. Arm and disarm are the
 * hot path of every request with a deadline: with a pthread mutex there,
 * a request's init + arm + destroy took 10 ns more (65 against 55 ns,
 * bench/README.md "Timer at scale"). One mutex (lt_mu) guards
 * the work queue, the work threads and the thread's start; with it one
 * condvar (lt_cv, never timed, so its clock does not matter) announces
 * the end of a work item, and the end of a firing that a disarm waits
 * for (firing_waiters, under w_mu, says whether one does). Lock order:
 * lt_mu, then w_mu; nothing takes lt_mu while it holds w_mu. The signal
 * list is lock-free (handlers cannot lock).
 *
 * fork(): the prepare handler takes lt_mu and w_mu and the parent handler
 * releases them, so no other thread holds them at the fork; the child
 * handler resets everything, then releases them: no thread, fresh
 * condvar, empty wheel, queue and signal list, wake descriptor closed. A
 * new generation number makes sources armed before the fork read as not
 * armed, so their deadlines never fire in the child and disarming them is
 * safe. The thread restarts on demand.
 */
#include "internal.h"
#include "atomic.h"
#include "watch.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#ifdef __linux__
#include <sys/prctl.h>
#endif

/*
 * tflags_ of a source: bit 0 IN_HEAP (armed now: on the wheel, the pending
 * or the due list), bit 1 SEEN (armed at least once in this generation;
 * disarm takes the lock only then), bit 2 DUE (claimed by the library
 * thread for firing: see claim_due()), bits 3-31 the fork generation the
 * bits belong to. All-zero: never armed.
 */
#define T_IN_HEAP 0x1u
#define T_SEEN 0x2u
#define T_DUE 0x4u
#define T_GEN_SHIFT 3

/* Work item states (cancel__work.state, under lt_mu). */
#define W_IDLE 0u    /* never posted, revoked, or finished */
#define W_QUEUED 1u
#define W_RUNNING 2u

/* The longest single sleep; the loop just recomputes after it. */
#define MAX_SLEEP_NS (3600ull * 1000000000ull)

static pthread_mutex_t lt_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t lt_cv = PTHREAD_COND_INITIALIZER;
/* The wheel's spin lock (see Locking above): 0 free, 1 held. */
static uint32_t w_mu;

static void
w_lock(void)
{
	/* Acquire pairs with the release store in w_unlock(). */
	if (xchg_acquire(&w_mu, 1u) == 0)
		return;
	unsigned spins = 0;
	do {
		/* Read-only spin, as the source lock's (source.c). */
		while (ld_relaxed(&w_mu) != 0)
			cancel__backoff(&spins);
		/* Acquire pairs with the release store in w_unlock(). */
	} while (xchg_acquire(&w_mu, 1u) != 0);
}

static void
w_unlock(void)
{
	/* Release pairs with the acquire exchanges in w_lock(). */
	st_release(&w_mu, 0u);
}
/* Signalled when work is queued; idle work threads wait on it (untimed). */
static pthread_cond_t work_cv = PTHREAD_COND_INITIALIZER;
/*
 * The work threads (all under lt_mu). An item's fn may block on a user
 * mutex for as long as its holder likes, so one blocked item must not hold
 * back the others: when an item is queued and no work thread is idle,
 * another one is started. A work thread is busy only while it runs one
 * item, and every queued or running item belongs to a distinct thread
 * blocked in cancel_cond_wait (the item lives in its frame), so the number
 * of work threads is at most 1 + the number of threads inside
 * cancel_cond_wait at once, and never more than WT_MAX (beyond that, items
 * wait for a busy thread: a documented limit). A thread that finishes an
 * item while another one is idle exits, so idle threads do not pile up.
 */
#define WT_MAX 64u
static unsigned wt_total;
static unsigned wt_idle;
/* Items queued and not yet taken: each needs an idle thread of its own
 * (a signalled thread counts as idle until it runs, so idle > 0 alone
 * would hand two items to one thread). */
static unsigned work_n;
/* The item this thread is running (work threads only). */
static _Thread_local struct cancel__work *wt_current;

/* 1 once the thread runs (in this process). Read without lt_mu. */
static int lt_running;
/* The wake descriptor's write end plus one (0: none yet). Read by kicks. */
static int lt_kickfd;
static int lt_rfd = -1;
static int lt_wfd = -1;
/* The fork generation (child handler bumps it). */
static uint32_t lt_gen;
static _Thread_local bool lt_self;

/* Under w_mu (with the wheel, below). */
/* The deadline the thread last planned to sleep until (CANCEL_NEVER: no
 * timeout). An arm kicks only when it is earlier: an arm made before the
 * plan is seen by it, one made after compares against it. */
static uint64_t sleep_until = CANCEL_NEVER;
/* The source whose timeout's cancel runs now (compared, never followed),
 * and how many disarms wait for that cancel to end. */
static struct cancel_source *firing;
static unsigned firing_waiters;
/* Under lt_mu. */
static struct cancel__work *work_head;
static struct cancel__work *work_tail;

/* Signal-deferred finishes: pushed by handlers, taken whole by the thread. */
static struct cancel_source *sig_head;

/* ------------------------------------------------------------------ */
/* Hierarchical timing wheel on deadline_ (all under w_mu)            */
/* ------------------------------------------------------------------ */
/*
 * Time counts in ticks of 2^W_SHIFT ns (1.024 us). Level L has 64 slots of
 * 64^L ticks each: 1.024 us, 65.5 us, 4.19 ms, 268 ms, 17.2 s, 18.3 min,
 * 19.5 h, 52.1 days, 9.1 years; nine levels cover every 64-bit deadline,
 * so nothing needs an overflow list. An entry's key is its deadline's tick
 * (never below w_elapsed, the wheel's own time, which is at most now); it
 * sits at the level of the highest 6-bit digit in which the key differs
 * from w_elapsed, in the slot that digit names (as in tokio). Hence:
 *
 *   - every entry of a lower level is due before every entry of a higher
 *     one, and at each level the occupied slots lie at or after
 *     w_elapsed's own digit: the earliest entry is in the first occupied
 *     slot (bitmap occ) of the lowest non-empty level;
 *   - when that slot's start time comes, w_elapsed moves to it and its
 *     entries are re-inserted by their exact deadline_ (cascaded): each
 *     lands on a lower level, so an entry moves at most 8 times before it
 *     fires (O(1) amortized expiry). At level 0 each entry is compared
 *     with its exact deadline and fires only once the clock has reached
 *     it: never early;
 *   - an entry's slot may come up EARLIER than its deadline, never later:
 *     pushing a deadline later without the lock (cancel__timer_arm())
 *     leaves the entry where it was, and its slot, when it comes, simply
 *     re-inserts it.
 *
 * Lists are singly linked forward (tnext_) with a back pointer to the
 * pointer that points at the entry (tpprev_: a slot lane's head, a
 * pending list head, the due list head, or the previous entry's tnext_),
 * so unlinking is O(1) and needs no knowledge of which list holds it.
 * deadline_ is read without w_mu by cancel__timer_deadline() and written
 * without it by the re-arm fast path (see cancel__timer_arm()), hence the
 * atomic accesses.
 */
#define W_SHIFT 10
#define W_BITS 6
#define W_SLOTS 64u
#define W_LEVELS 9u
/*
 * Each slot is W_LANES lists (lanes), filled in turn. A cascade walks a
 * slot's lanes side by side, one entry of each in turn, so the loads of
 * their next entries (each a cache miss when the slot is large and was
 * filled long ago) are independent and overlap, where one list would
 * chain them one miss after another. A burst of 1,000,000 deadlines
 * spent most of the thread's time there (bench/README.md, "Timer"). The
 * order inside a slot never mattered: level 0 sorts into the due list by
 * exact deadline, and a cascade re-inserts each entry by its own.
 */
#define W_LANES 8u
/* Cascading drops w_mu after this many entries, so arms wait briefly. */
#define W_BATCH 256u
/*
 * wheel_advance() stops claiming due entries once it has this many (before
 * its next slot: a slot is always taken whole) and lets run_timers() fire
 * them before it takes more. Claimed entries are prefetched whole, and a
 * fire soon after finds them in the cache; a backlog claimed in one go (a
 * burst of 1,000,000 deadlines: hundreds of thousands at once) was
 * evicted again before its fires came, so each source cost two misses
 * (bench/README.md, "Timer at scale"). 16 to 256 measured alike.
 */
#define W_DUE_BATCH 64u

static struct cancel_source *wheel[W_LEVELS][W_SLOTS][W_LANES];
static uint64_t occ[W_LEVELS];
/* The lane the next insert takes. */
static unsigned w_lane;
/* The wheel's time in ticks: at most the clock, never going back. */
static uint64_t w_elapsed;
/* Entries taken from a slot whose time has come, being cascaded (one
 * list per lane of that slot). */
static struct cancel_source *pend_head[W_LANES];
/* Entries due, in deadline order, waiting to fire. */
static struct cancel_source *due_head;
static struct cancel_source **due_tail = &due_head;

/* Test hook: runs on the library thread each time a cascade drops w_mu
 * (cancel__test_cascade_hook, internal.h). */
static void (*cascade_hook)(void);

void
cancel__test_cascade_hook(void (*fn)(void))
{
	/* Release pairs with the acquire load in wheel_advance(). */
	st_release(&cascade_hook, fn);
}

/* Test hook: runs on the library thread around each timeout's cancel,
 * while `firing` names it (cancel__test_fire_hook, internal.h). */
static void (*fire_hook)(bool after);

void
cancel__test_fire_hook(void (*fn)(bool after))
{
	/* Release pairs with the acquire loads in run_timers(). */
	st_release(&fire_hook, fn);
}

unsigned
cancel__test_firing_waiters(void)
{
	w_lock();
	unsigned n = firing_waiters;
	w_unlock();
	return n;
}

/* Whether a cascade is under way (a disarm may empty its lists). */
static bool
pend_any(void)
{
	for (unsigned k = 0; k < W_LANES; k++)
		if (pend_head[k] != NULL)
			return true;
	return false;
}

static void
list_push(struct cancel_source **head, struct cancel_source *s)
{
	s->tnext_ = *head;
	if (s->tnext_ != NULL)
		s->tnext_->tpprev_ = &s->tnext_;
	s->tpprev_ = head;
	*head = s;
}

static void
list_unlink(struct cancel_source *s)
{
	struct cancel_source **pp = s->tpprev_;

	*pp = s->tnext_;
	if (s->tnext_ != NULL)
		s->tnext_->tpprev_ = pp;
	else if (due_tail == &s->tnext_)
		due_tail = pp;
	if (*pp == NULL) {
		/* The last entry of a lane of a wheel slot (addresses
		 * compared as integers: pp may point anywhere): the slot is
		 * empty when all its lanes are. */
		uintptr_t i = ((uintptr_t)pp - (uintptr_t)&wheel[0][0][0]) /
		              sizeof(struct cancel_source *);
		if (i < (uintptr_t)W_LEVELS * W_SLOTS * W_LANES) {
			struct cancel_source **lanes = pp - i % W_LANES;
			bool empty = true;
			for (unsigned k = 0; k < W_LANES; k++)
				empty = empty && lanes[k] == NULL;
			i /= W_LANES;
			if (empty)
				occ[i / W_SLOTS] &= ~(1ull << (i % W_SLOTS));
		}
	}
	s->tnext_ = NULL;
	s->tpprev_ = NULL;
}

/*
 * Put @s (deadline @d) on the due list after every entry with a deadline
 * at or before @d, searching back from the tail: entries arrive tick by
 * tick, so the search stays within the current tick's few entries and the
 * list fires in exact deadline order.
 */
static void
due_insert(struct cancel_source *s, uint64_t d)
{
	struct cancel_source **pp = due_tail;

	while (pp != &due_head) {
		struct cancel_source *p = (struct cancel_source *)(void *)(
			(char *)pp - offsetof(struct cancel_source, tnext_));
		if (ld_relaxed(&p->deadline_) <= d)
			break;
		pp = p->tpprev_;
	}
	if (*pp == NULL)
		due_tail = &s->tnext_;
	list_push(pp, s);
}

static void
wheel_insert(struct cancel_source *s, uint64_t deadline_ns)
{
	uint64_t k = deadline_ns >> W_SHIFT;
	if (k < w_elapsed)
		k = w_elapsed; /* already due: the current level-0 slot */
	uint64_t x = k ^ w_elapsed;
	unsigned lv = x == 0 ? 0u
	                     : (63u - (unsigned)__builtin_clzll(x)) / W_BITS;
	unsigned sl = (unsigned)(k >> (lv * W_BITS)) & (W_SLOTS - 1);
	list_push(&wheel[lv][sl][w_lane++ % W_LANES], s);
	occ[lv] |= 1ull << sl;
}

/* The first occupied slot of the lowest non-empty level and its start
 * tick; false if the wheel is empty. */
static bool
wheel_first(unsigned *lvp, unsigned *slp, uint64_t *startp)
{
	for (unsigned lv = 0; lv < W_LEVELS; lv++) {
		if (occ[lv] == 0)
			continue;
		unsigned sl = (unsigned)__builtin_ctzll(occ[lv]);
		unsigned hi = (lv + 1) * W_BITS; /* at most 54 */
		*lvp = lv;
		*slp = sl;
		*startp = ((w_elapsed >> hi) << hi) |
		          ((uint64_t)sl << (lv * W_BITS));
		return true;
	}
	return false;
}

/*
 * Claim @s for firing if its exact deadline has passed at @now. The flag
 * T_DUE and the deadline form a Dekker pair with the lock-free re-arm in
 * cancel__timer_arm(): here store DUE, then load deadline_; there CAS
 * deadline_, then load tflags_, all sequentially consistent. Either we
 * see the later deadline (and keep the entry), or the re-arm sees DUE and
 * redoes itself under w_mu.
 */
static bool
claim_due(struct cancel_source *s, uint64_t now)
{
	if (ld_relaxed(&s->deadline_) > now)
		return false;
	uint32_t f = ld_relaxed(&s->tflags_);
	st_seq(&s->tflags_, f | T_DUE);
	if (ld_seq(&s->deadline_) > now) {
		st_relaxed(&s->tflags_, f);
		return false;
	}
	return true;
}

/*
 * Move the entries whose exact deadline is at or before @now to the due
 * list, earliest tick first: all of them, or the first whole slots' worth
 * that reaches W_DUE_BATCH; run_timers() calls again once it has fired
 * those, and the rest stays on the wheel, where arms and disarms find it
 * as always. May drop w_mu for a moment while cascading a large slot
 * (arms and disarms meanwhile see a consistent wheel: the rest of the
 * slot waits on pend_head).
 */
static void
wheel_advance(uint64_t now)
{
	uint64_t nt = now >> W_SHIFT;
	unsigned lv, sl;
	uint64_t start;

	unsigned claimed = 0;
	while (wheel_first(&lv, &sl, &start) && start <= nt) {
		if (claimed >= W_DUE_BATCH)
			return; /* fire these first (W_DUE_BATCH) */
		struct cancel_source **lanes = wheel[lv][sl];
		w_elapsed = start;
		if (lv == 0) {
			bool left = false;
			for (unsigned k = 0; k < W_LANES; k++) {
				struct cancel_source *s, *next;
				for (s = lanes[k]; s != NULL; s = next) {
					next = s->tnext_;
					if (claim_due(s, now)) {
						list_unlink(s);
						due_insert(s, ld_relaxed(
							&s->deadline_));
						claimed++;
						/* Its fire soon touches its
						 * other lines (state, lock,
						 * callbacks, cause); it is on
						 * the wheel's lists, so not
						 * freed while we hold w_mu. */
						__builtin_prefetch(s, 1);
						__builtin_prefetch(
							&s->current_, 1);
						__builtin_prefetch(
							&s->cause_when_, 1);
					} else if ((ld_relaxed(&s->deadline_) >>
					            W_SHIFT) != start) {
						/* Pushed later without
						 * the lock. */
						list_unlink(s);
						wheel_insert(s, ld_relaxed(
							&s->deadline_));
					}
				}
				left = left || lanes[k] != NULL;
			}
			if (left)
				break; /* due later in this very tick */
			continue;
		}
		/* Cascade the slot: each entry goes one level down or more.
		 * Its lanes move to the pending lists whole; then one entry
		 * of each in turn, so their loads overlap. */
		occ[lv] &= ~(1ull << sl);
		for (unsigned k = 0; k < W_LANES; k++) {
			pend_head[k] = lanes[k];
			lanes[k] = NULL;
			if (pend_head[k] != NULL)
				pend_head[k]->tpprev_ = &pend_head[k];
		}
		unsigned n = 0;
		/* A disarm while the lock is dropped may empty any lane:
		 * look at all of them each round. */
		while (pend_any()) {
			for (unsigned k = 0; k < W_LANES; k++) {
				struct cancel_source *s = pend_head[k];
				if (s == NULL)
					continue;
				list_unlink(s);
				wheel_insert(s, ld_relaxed(&s->deadline_));
				n++;
			}
			if (n >= W_BATCH) {
				n = 0;
				w_unlock();
				void (*hook)(void) = ld_acquire(&cascade_hook);
				if (hook != NULL)
					hook();
				w_lock();
			}
		}
	}
	/* Every remaining slot starts after nt (or is nt's own level-0
	 * slot), so w_elapsed may jump to nt without moving any entry: the
	 * digits above each entry's level still agree with nt's. */
	if (nt > w_elapsed)
		w_elapsed = nt;
}

/*
 * When the library thread should wake next: exact where the earliest
 * deadline is known exactly, else early (never late) at a slot start.
 * The first occupied slot of the lowest level holds the earliest entry
 * (see above). At level 0 (1.024 us of deadlines) its entries are scanned
 * for the exact minimum; at a higher level a slot of one entry gives that
 * entry's exact deadline (a lone deadline: one wake-up, as precise as the
 * old pairing heap was); a slot of several gives its start tick, where
 * the thread cascades it and looks again, each time at a finer level, so
 * the last sleep always ends at an exact deadline (a minimum past the
 * slot's end means entries pushed later: the slot start, see below).
 */
static uint64_t
wheel_next(void)
{
	unsigned lv, sl;
	uint64_t start;

	if (due_head != NULL || pend_any())
		return 0;
	if (!wheel_first(&lv, &sl, &start))
		return CANCEL_NEVER;
	struct cancel_source **lanes = wheel[lv][sl];
	uint64_t d = CANCEL_NEVER;
	unsigned seen = 0;
	for (unsigned k = 0; k < W_LANES; k++) {
		for (struct cancel_source *s = lanes[k]; s != NULL;
		     s = s->tnext_) {
			if (lv > 0 && ++seen > 1)
				return start << W_SHIFT;
			uint64_t e = ld_relaxed(&s->deadline_);
			if (e < d)
				d = e;
		}
	}
	/* An entry pushed later without the lock still sits in its old
	 * slot, maybe past entries of later slots: a minimum beyond this
	 * slot's end proves nothing, so wake at its start and re-insert. */
	if ((d >> W_SHIFT) - start >= (1ull << (lv * W_BITS)))
		return start << W_SHIFT;
	return d;
}

/* ------------------------------------------------------------------ */
/* tflags_ and generations                                            */
/* ------------------------------------------------------------------ */

static uint32_t
gen_bits(void)
{
	return ld_relaxed(&lt_gen) << T_GEN_SHIFT;
}

/* @t's flag bits if they belong to this generation, else 0. */
static uint32_t
live_flags(uint32_t t)
{
	if ((t & ~(T_IN_HEAP | T_SEEN | T_DUE)) != gen_bits())
		return 0;
	return t & (T_IN_HEAP | T_SEEN | T_DUE);
}

/* ------------------------------------------------------------------ */
/* Starting and waking the thread                                     */
/* ------------------------------------------------------------------ */

bool
cancel__lt_is_self(void)
{
	return lt_self;
}

void
cancel__lt_kick(void)
{
	int saved = errno;
	/* Acquire pairs with the release store in cancel__lt_ensure(): the
	 * descriptor is open and the thread polls it. */
	int k = ld_acquire(&lt_kickfd);

	if (k != 0)
		cancel__wakefd_signal(k - 1);
	errno = saved;
}

static void run_signals(void);
static void run_timers(void);
static void *wt_main(void *arg);

/* Under lt_mu: start a detached thread with every signal blocked. */
static int
start_thread(void *(*fn)(void *), void *arg)
{
	pthread_attr_t attr;
	sigset_t all, old;
	pthread_t tid;
	if (pthread_attr_init(&attr) != 0)
		return EAGAIN;
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	/* The new thread inherits this mask: every signal blocked. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	int err = pthread_create(&tid, &attr, fn, arg);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	pthread_attr_destroy(&attr);
	return err != 0 ? EAGAIN : 0;
}

/*
 * The ppoll() timeout for a sleep of @rel ns. Linux gives poll-family
 * timeouts a slack of the larger of the thread's timer slack (1 ns here)
 * and 0.1% of the timeout (fs/select.c), and a lone timer fires at the end
 * of its slack: 1-1.5 us late for the 1-1.5 ms sleeps bench_timer takes.
 * Asking for rel - rel/1001 puts the end of that slack at the deadline.
 * Waking early is harmless: run_timers() fires nothing before its
 * deadline, and the next sleep, of at most a few microseconds, has 1 ns of
 * slack. Elsewhere the timeout is the plain remaining time.
 */
static uint64_t
poll_timeout(uint64_t rel)
{
#ifdef __linux__
	return rel - rel / 1001;
#else
	return rel;
#endif
}

static void *
lt_main(void *arg)
{
	int kfd = (int)(intptr_t)arg;

	lt_self = true;
	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
#ifdef __linux__
	pthread_setname_np(pthread_self(), "cancel-lib");
#endif
#if defined(__linux__) && defined(PR_SET_TIMERSLACK)
	/* Wake at the deadline, not up to 50 us after it. */
	prctl(PR_SET_TIMERSLACK, 1ul, 0ul, 0ul, 0ul);
#endif
	uint32_t gen = ld_relaxed(&lt_gen);
	bool drain = true;
	for (;;) {
		/* Drain first: a kick after this point leaves the fd
		 * readable, so the ppoll() below returns at once. Only when
		 * the last ppoll() saw it readable (or on the first loop):
		 * a timeout, the path of every fire, costs no read(2). A
		 * kick that lands after that ppoll() returned leaves the fd
		 * readable, so the next ppoll() returns at once and we drain
		 * then. */
		if (drain)
			cancel__wakefd_drain(kfd);
		run_signals();
		run_timers();
		if (ld_relaxed(&lt_gen) != gen) {
			/*
			 * A callback forked and this is the child: the
			 * library thread of this process is started afresh
			 * on demand, and this copy (whose descriptor the
			 * child handler closed) leaves. If it is the child's
			 * only thread, the child exits with status 0.
			 */
			return NULL;
		}

		w_lock();
		uint64_t d = wheel_next();
		sleep_until = d;
		w_unlock();

		struct timespec ts, *tmo = NULL;
		if (d != CANCEL_NEVER) {
			uint64_t now = cancel__now_ns();
			uint64_t rel = d > now ? d - now : 0;
			if (rel > MAX_SLEEP_NS)
				rel = MAX_SLEEP_NS;
			ts = cancel__ns_to_ts(poll_timeout(rel));
			tmo = &ts;
		}
		/* EINTR, a timeout or a kick: all just loop. A hang-up
		 * makes a watch descriptor readable (watch.c). */
		nfds_t nfds;
		struct pollfd *set = cancel__watch_pollset(kfd, &nfds);
		int n = ppoll(set, nfds, tmo, NULL);
		drain = n < 0 || set[0].revents != 0;
		if (n > 0)
			cancel__watch_dispatch(set, nfds);
	}
	return NULL;
}

int
cancel__lt_ensure(void)
{
	/* Acquire pairs with the release store below. */
	if (ld_acquire(&lt_running))
		return 0;

	int rc = 0;
	int saved = errno;
	pthread_mutex_lock(&lt_mu);
	if (ld_relaxed(&lt_running))
		goto out;
	if (wt_total == 0) {
		if (start_thread(wt_main, NULL) != 0) {
			rc = EAGAIN;
			goto out;
		}
		wt_total = 1;
	}

	int rfd, wfd;
	if (cancel__wakefd_open(&rfd, &wfd) != 0) {
		rc = EAGAIN;
		goto out;
	}
	if (start_thread(lt_main, (void *)(intptr_t)rfd) != 0) {
		cancel__wakefd_close(rfd, wfd);
		rc = EAGAIN;
		goto out;
	}
	lt_rfd = rfd;
	lt_wfd = wfd;
	/* Release pairs with the acquire load in cancel__lt_kick(). */
	st_release(&lt_kickfd, wfd + 1);
	/* Release pairs with the acquire fast path above. */
	st_release(&lt_running, 1);
out:
	pthread_mutex_unlock(&lt_mu);
	if (rc == 0) {
		/* A handler may have posted while kicks still went nowhere. */
		cancel__lt_kick();
	}
	errno = saved;
	return rc;
}

/* ------------------------------------------------------------------ */
/* Client 1: the timer                                                */
/* ------------------------------------------------------------------ */

/*
 * Start loading what the next fires touch while this one runs: a burst
 * of deadlines finds each source's state and callback cold (measured: a
 * miss each, most of a fire's time). The next due source's callback (its
 * head_, read without its lock, relaxed: only a hint, may be stale; a
 * prefetch never faults) and the one after's state line.
 */
static void
prefetch_due(void)
{
	struct cancel_source *n = due_head;
	if (n == NULL)
		return;
	__builtin_prefetch(ld_relaxed(&n->head_), 1);
	if (n->tnext_ != NULL)
		__builtin_prefetch(n->tnext_, 1);
}

/* Fire every due source, earliest tick first, one at a time. */
static void
run_timers(void)
{
	uint32_t gen = ld_relaxed(&lt_gen);
	w_lock();
	for (;;) {
		if (due_head == NULL) {
			wheel_advance(cancel__now_ns());
			if (due_head == NULL)
				break;
		}
		struct cancel_source *s = due_head;
		list_unlink(s);
		prefetch_due();
		st_relaxed(&s->deadline_, CANCEL_NEVER);
		/* Release pairs with cancel__timer_disarm()'s acquire. */
		st_release(&s->tflags_, gen_bits() | T_SEEN);
		firing = s;
		w_unlock();

		void (*hook)(bool) = ld_acquire(&fire_hook);
		if (hook != NULL)
			hook(false);
		cancel__cancel_cause(s, ETIMEDOUT, "deadline passed");
		/* s may be freed now (a callback destroyed it): only its
		 * address is compared below, never followed. */
		hook = ld_acquire(&fire_hook);
		if (hook != NULL)
			hook(true);

		w_lock();
		firing = NULL;
		if (firing_waiters != 0) {
			/* Under lt_mu: a disarm that saw `firing` before we
			 * cleared it holds lt_mu until it waits on lt_cv
			 * (tests/model/timer.pml, BROKEN_BCAST_UNLOCKED). */
			w_unlock();
			pthread_mutex_lock(&lt_mu);
			pthread_cond_broadcast(&lt_cv);
			pthread_mutex_unlock(&lt_mu);
			w_lock();
		}
		if (ld_relaxed(&lt_gen) != gen)
			break; /* a callback forked: this is the child */
	}
	w_unlock();
}

/*
 * Push an armed source's deadline later without w_mu: the entry stays in
 * its slot, which now comes up early; the wheel then re-inserts it by its
 * exact deadline (a keep-alive timeout re-armed on every read costs one
 * CAS on the source, no shared cache line). True if done; false if the
 * locked path must do it (not armed, earlier, or claimed for firing).
 */
static bool
rearm_later(struct cancel_source *src, uint64_t deadline_ns)
{
	/* Acquire pairs with the release stores of arm and run_timers. */
	uint32_t f = ld_acquire(&src->tflags_);
	if (live_flags(f) != (T_IN_HEAP | T_SEEN))
		return false;
	uint64_t old = ld_relaxed(&src->deadline_);
	if (deadline_ns < old || old == CANCEL_NEVER)
		return false;
	/* Sequentially consistent, with the load below: the Dekker pair of
	 * claim_due() (tests/model/timer_rearm.pml). A disarm or a firing
	 * stores CANCEL_NEVER, so the CAS fails on a source no longer
	 * armed. */
	if (!cas_seq(&src->deadline_, &old, deadline_ns))
		return false;
	/* The wheel's thread never wakes later than the old deadline, so
	 * no kick. If the entry was claimed meanwhile, redo under w_mu. */
	return ld_seq(&src->tflags_) == f;
}

int
cancel__timer_arm(struct cancel_source *src, uint64_t deadline_ns)
{
	if (rearm_later(src, deadline_ns))
		return 0;
	int rc = cancel__lt_ensure();
	if (rc != 0)
		return rc;

	w_lock();
	if (live_flags(ld_relaxed(&src->tflags_)) & T_IN_HEAP)
		list_unlink(src);
	st_relaxed(&src->deadline_, deadline_ns);
	wheel_insert(src, deadline_ns);
	/* Release pairs with the acquire loads in cancel__timer_disarm()
	 * and cancel__timer_deadline(). */
	st_release(&src->tflags_, gen_bits() | T_SEEN | T_IN_HEAP);
	/* Wake the thread only if it sleeps past the new deadline. */
	bool kick = deadline_ns < sleep_until;
	if (kick)
		sleep_until = deadline_ns;
	w_unlock();
	if (kick)
		cancel__lt_kick();
	return 0;
}

/* Take @src off the wheel; under w_mu. */
static void
disarm_locked(struct cancel_source *src)
{
	uint32_t f = live_flags(ld_relaxed(&src->tflags_));

	if (f & T_IN_HEAP) {
		list_unlink(src);
		st_relaxed(&src->deadline_, CANCEL_NEVER);
	}
	st_relaxed(&src->tflags_, f ? (gen_bits() | T_SEEN) : 0u);
}

/* Disarm without waiting for a firing in progress (public calls). */
static void
disarm_nowait(struct cancel_source *src)
{
	/* Acquire pairs with the release stores of arm and run_timers. */
	if (!(ld_acquire(&src->tflags_) & T_SEEN))
		return;
	w_lock();
	disarm_locked(src);
	w_unlock();
}

void
cancel__timer_disarm(struct cancel_source *src)
{
	/* Acquire pairs with the release stores of arm and run_timers; a
	 * source that never armed (SEEN clear) takes no lock at all. */
	if (!(ld_acquire(&src->tflags_) & T_SEEN))
		return;
	w_lock();
	disarm_locked(src);
	if (firing == src && lt_self) {
		/*
		 * A callback of this very firing destroys src: never wait
		 * for ourselves. Forget the address too: the memory may be
		 * freed and become a new source, whose destroy must not
		 * wait for this firing (a firing is identified by its
		 * source, not by the address that source once had).
		 */
		firing = NULL;
	}
	if (firing != src) {
		w_unlock();
		return;
	}
	/*
	 * Wait for that cancel to end (rare): counted, so the library
	 * thread broadcasts lt_cv under lt_mu when it clears `firing`; we
	 * look at `firing` while holding lt_mu, so that broadcast cannot
	 * fall between our look and our wait. pthread_cond_wait is a
	 * cancellation point: never unwind with lt_mu held.
	 */
	firing_waiters++;
	w_unlock();
	int cs;
	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &cs);
	pthread_mutex_lock(&lt_mu);
	for (;;) {
		w_lock();
		bool still = firing == src;
		w_unlock();
		if (!still)
			break;
		pthread_cond_wait(&lt_cv, &lt_mu);
	}
	pthread_mutex_unlock(&lt_mu);
	pthread_setcancelstate(cs, NULL);
	w_lock();
	firing_waiters--;
	w_unlock();
}

uint64_t
cancel__timer_deadline(struct cancel_source *src)
{
	/* Acquire pairs with the release store in cancel__timer_arm(). */
	if (!(live_flags(ld_acquire(&src->tflags_)) & T_IN_HEAP))
		return CANCEL_NEVER;
	return ld_relaxed(&src->deadline_);
}

/* Arm, or disarm when @deadline_ns is CANCEL_NEVER; public calls' core. */
static int
arm_public(struct cancel_source *src, uint64_t deadline_ns)
{
	if (cancel_token_is_canceled(cancel_source_token(src)))
		return 0;
	if (deadline_ns == CANCEL_NEVER) {
		disarm_nowait(src);
		return 0;
	}
	return cancel__timer_arm(src, deadline_ns);
}

int
cancel_source_cancel_after(struct cancel_source *src, uint64_t ns)
{
	if (src == NULL)
		return EINVAL;
	CANCEL_ERRNO_SAVE();
	/* The source's lines load while the clock is read (a re-arm of one
	 * of a million armed sources finds them cold). */
	__builtin_prefetch(&src->state_, 1);
	__builtin_prefetch(&src->deadline_, 1);
	uint64_t d = ns == CANCEL_NEVER ? CANCEL_NEVER
	                                : cancel__add_sat(cancel__now_ns(), ns);
	int rc = arm_public(src, d);
	CANCEL_ERRNO_RESTORE();
	return rc;
}

int
cancel_source_cancel_at(struct cancel_source *src,
                        const struct timespec *deadline)
{
	uint64_t d;

	if (src == NULL)
		return EINVAL;
	CANCEL_ERRNO_SAVE();
	int rc = cancel__deadline_ns(deadline, &d);
	if (rc == 0)
		rc = arm_public(src, d);
	CANCEL_ERRNO_RESTORE();
	return rc;
}

/* ------------------------------------------------------------------ */
/* Client 2: deferred work                                            */
/* ------------------------------------------------------------------ */

/*
 * A work thread: runs posted items in order, one at a time; more threads
 * take the next items while this one is blocked (see wt_total).
 */
static void *
wt_main(void *arg)
{
	(void)arg;
	uint32_t gen = ld_relaxed(&lt_gen);
	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
#ifdef __linux__
	pthread_setname_np(pthread_self(), "cancel-work");
#endif
	pthread_mutex_lock(&lt_mu);
	for (;;) {
		while (work_head == NULL) {
			wt_idle++;
			pthread_cond_wait(&work_cv, &lt_mu);
			wt_idle--;
		}
		struct cancel__work *w = work_head;
		work_head = w->next;
		if (work_head != NULL)
			work_head->prev = NULL;
		else
			work_tail = NULL;
		work_n--;
		w->next = w->prev = NULL;
		w->state = W_RUNNING;
		wt_current = w;
		pthread_mutex_unlock(&lt_mu);

		w->fn(w);

		if (ld_relaxed(&lt_gen) != gen) {
			/* fn forked and this is the child, where w and the
			 * parent's queue mean nothing: leave quietly. */
			return NULL;
		}
		pthread_mutex_lock(&lt_mu);
		/* The poster may free w once it sees W_IDLE under lt_mu
		 * (revoke or cancel__work_wait): last touch. */
		w->state = W_IDLE;
		wt_current = NULL;
		pthread_cond_broadcast(&lt_cv);
		if (work_head == NULL && wt_idle > 0) {
			/* Another thread already waits for work. */
			wt_total--;
			pthread_mutex_unlock(&lt_mu);
			return NULL;
		}
	}
	return NULL;
}

int
cancel__work_post(struct cancel__work *w)
{
	int rc = cancel__lt_ensure();
	if (rc != 0)
		return rc;

	pthread_mutex_lock(&lt_mu);
	w->next = NULL;
	w->prev = work_tail;
	if (work_tail != NULL)
		work_tail->next = w;
	else
		work_head = w;
	work_tail = w;
	w->state = W_QUEUED;
	work_n++;
	if (wt_idle < work_n && wt_total < WT_MAX &&
	    start_thread(wt_main, NULL) == 0) {
		/* Every work thread is busy (maybe blocked on another
		 * mutex) or already promised an item: this one must not
		 * wait behind them. */
		wt_total++;
	}
	pthread_cond_signal(&work_cv);
	/* Else (WT_MAX reached, or no thread could be started) it waits
	 * for a busy work thread to finish. */
	pthread_mutex_unlock(&lt_mu);
	return 0;
}

bool
cancel__work_revoke(struct cancel__work *w)
{
	bool done = true;

	pthread_mutex_lock(&lt_mu);
	if (w->state == W_QUEUED) {
		if (w->prev != NULL)
			w->prev->next = w->next;
		else
			work_head = w->next;
		if (w->next != NULL)
			w->next->prev = w->prev;
		else
			work_tail = w->prev;
		w->next = w->prev = NULL;
		w->state = W_IDLE;
		work_n--;
	} else if (w->state == W_RUNNING) {
		done = false;
	}
	pthread_mutex_unlock(&lt_mu);
	return done;
}

void
cancel__work_wait(struct cancel__work *w)
{
	int cs;
	/* Not a cancellation point (see cancel__timer_disarm). */
	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &cs);
	pthread_mutex_lock(&lt_mu);
	/* On the work thread running it, the item is our own caller. */
	while (w->state == W_RUNNING && wt_current != w)
		pthread_cond_wait(&lt_cv, &lt_mu);
	pthread_mutex_unlock(&lt_mu);
	pthread_setcancelstate(cs, NULL);
}

/* ------------------------------------------------------------------ */
/* Client 3: finishes deferred by signal handlers                     */
/* ------------------------------------------------------------------ */

void
cancel__signal_post(struct cancel_source *src)
{
	struct cancel_source *old = ld_relaxed(&sig_head);

	/*
	 * Push only: nodes are never popped one by one (the thread takes the
	 * whole list with an exchange), so a CAS cannot succeed on a stale
	 * head (no ABA). Release pairs with run_signals()'s acquire
	 * exchange, publishing next_deferred_.
	 */
	do
		src->next_deferred_ = old;
	while (!cas_release(&sig_head, &old, src));
	cancel__lt_kick();
}

static void
run_signals(void)
{
	/* Acquire pairs with cancel__signal_post()'s release CAS. */
	struct cancel_source *s = xchg_acquire(&sig_head, NULL);
	struct cancel_source *fifo = NULL;

	/* The stack holds the newest first: reverse it. */
	while (s != NULL) {
		struct cancel_source *next = s->next_deferred_;
		s->next_deferred_ = fifo;
		fifo = s;
		s = next;
	}
	uint32_t gen = ld_relaxed(&lt_gen);
	while (fifo != NULL && ld_relaxed(&lt_gen) == gen) {
		/* Read the link first: the finish may let s be freed. */
		struct cancel_source *next = fifo->next_deferred_;
		fifo->next_deferred_ = NULL;
		cancel__signal_finish(fifo);
		fifo = next;
	}
	/* A callback forked and this is the child: the rest belongs to the
	 * parent (lt_main leaves right after). */
}

int
cancel_signal_prepare(void)
{
	CANCEL_ERRNO_SAVE();
	int rc = cancel__lt_ensure();
	if (rc == 0)
		cancel__lt_kick();
	CANCEL_ERRNO_RESTORE();
	return rc;
}

/* ------------------------------------------------------------------ */
/* fork()                                                             */
/* ------------------------------------------------------------------ */

static void
atfork_prepare(void)
{
	pthread_mutex_lock(&lt_mu);
	w_lock();
}

static void
atfork_parent(void)
{
	w_unlock();
	pthread_mutex_unlock(&lt_mu);
}

static void
atfork_child(void)
{
	/* Only this thread exists now; the library thread did not follow. */
	st_relaxed(&lt_kickfd, 0);
	st_relaxed(&lt_running, 0);
	if (lt_rfd >= 0)
		cancel__wakefd_close(lt_rfd, lt_wfd);
	lt_rfd = lt_wfd = -1;
	/* Sources armed before the fork now read as never armed. */
	st_relaxed(&lt_gen, (ld_relaxed(&lt_gen) + 1) &
	                        (UINT32_MAX >> T_GEN_SHIFT));
	lt_self = false;
	wt_current = NULL;
	wt_total = 0;
	wt_idle = 0;
	memset(wheel, 0, sizeof(wheel));
	memset(occ, 0, sizeof(occ));
	memset(pend_head, 0, sizeof(pend_head));
	w_lane = 0;
	due_head = NULL;
	due_tail = &due_head;
	sleep_until = CANCEL_NEVER;
	firing = NULL;
	firing_waiters = 0;
	work_head = work_tail = NULL;
	work_n = 0;
	st_relaxed(&sig_head, NULL);
	cancel__watch_atfork_child();
	/* Waiters of the parent's condvar do not exist here: start afresh.
	 * The mutex is held by this very thread (atfork_prepare), so it is
	 * released rather than re-initialized: the same effect, and what
	 * ThreadSanitizer can follow. */
	pthread_cond_init(&lt_cv, NULL);
	pthread_cond_init(&work_cv, NULL);
	w_unlock();
	pthread_mutex_unlock(&lt_mu);
}

__attribute__((constructor)) static void
lt_register_atfork(void)
{
	pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}

