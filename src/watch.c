/*
 * Hang-up watches: cancel a source when the peer of a descriptor leaves,
 * with no thread per watch.
 *
 * The library thread's loop (libthread.c) sleeps in one ppoll() on its
 * wake descriptor plus what the watch backend gives it
 * (cancel__watch_pollset): the epoll descriptor that holds every watched
 * descriptor of the process (watch_epoll.c), or, on the portable backend,
 * the watched descriptors themselves (watch_poll.c). So three things end
 * that sleep: the ppoll timeout, which is the earliest armed deadline (the
 * timer then fires it); a kick of the wake descriptor (an earlier deadline
 * armed, deferred work, a signal finish, a new watch the set must show);
 * and a hang-up, which makes the epoll descriptor (or the watched one)
 * readable. After ppoll, cancel__watch_dispatch() fires what was reported.
 *
 * Identity. A watch is reported by its address (epoll's data.ptr), and a
 * stopped watch may be freed at once, or stopped and watched again at the
 * same address. So nothing reported is followed without the lock:
 *   - epoll_wait() itself runs under cancel__watch_mu, and stop's
 *     EPOLL_CTL_DEL too, so every event of a batch belongs to a
 *     registration that is still in the kernel at that moment: its watch
 *     is alive and is the same registration (an old one's events left the
 *     ready list with its DEL, and EPOLLONESHOT reports each registration
 *     at most once). The state is checked (ACTIVE) all the same.
 *   - The portable backend polls a snapshot outside the lock; each slot of
 *     it carries the watch's registry slot and stamp (a per-registration
 *     number), compared under the lock before the watch is touched.
 *   - A batch is first moved, under the lock, to the pending list (state
 *     PENDING), then fired one watch at a time with the lock dropped. A
 *     stop of a pending watch takes it off the list (it never fires): the
 *     loop only ever pops the list head under the lock.
 *   - While a watch's cancel runs, `firing` names it (compared, never
 *     followed); a stop of it waits for the end, except on the library
 *     thread inside that very cancel (`dispatching`), where it returns at
 *     once and the caller may free the watch: the loop does not touch the
 *     watch after the cancel, nor the source (the watch held it: destroy
 *     returned EBUSY until the stop).
 *
 * A waiter watches for itself. A hang-up that wakes the library thread
 * and then, through the source, a thread in cancel_wait() costs two
 * wake-ups, and the second is the larger (measured: 2x one). So a wait on
 * a source whose callback list is empty (nothing the library thread would
 * have to run) takes the watch over (cancel__watch_wait): under the lock
 * it takes the watch out of the kernel object (cancel__wb_suspend), marks
 * it POLLED and hangs a poller node in `pollers`; then it sleeps in
 * ppoll() on the watched descriptor and its thread's wake-up descriptor
 * (kept until the thread exits: closing it on the way out cost 2 us). The
 * library thread is not woken by that hang-up at all. On waking, under
 * the lock:
 *   - evicted (a stop took the watch): let go, touch nothing;
 *   - a hang-up: under the source's lock, where register checks CANCELED,
 *     the list still empty: cancel the source here (begin, and a finish
 *     that has nothing to run), FIRED. A callback registered since: hand
 *     the watch to the loop (PENDING, kick), which fires it as usual, so
 *     callbacks always run on the library thread. Already canceled:
 *     FIRED, as the loop would have marked it;
 *   - anything else (a cancel, the deadline): put the watch back in the
 *     kernel object (cancel__wb_resume; a hang-up meanwhile is reported at
 *     once). If the kernel refuses (ENOMEM, ENOSPC), the watch is never
 *     left unwatched: it fires on the loop with reason ENOMEM.
 * Wake-ups. A poller sets the source's POLLED bit (fetch_or, under the
 * lock, cleared when the source's last poller leaves) and takes CANCELED
 * from that same read-modify-write; a cancel whose CAS saw POLLED writes
 * the wake-up descriptor of each poller of that source, under the lock
 * (cancel__watch_wake; from a signal handler the library thread's
 * deferred finish does it). The two read-modify-writes are ordered on the
 * state word: either the poller sees CANCELED and does not poll, or the
 * cancel sees POLLED and takes the lock after the poller's node is on the
 * list. A stop of a POLLED watch sets the node's `evicted`, writes its
 * descriptor and waits (watch_cv) until the waiter has let go, so after
 * stop returns no thread polls the descriptor number any more (the caller
 * closes it, and the number may name another connection next) and none
 * holds a reference to its file. tests/model/watch_poller.pml.
 * Only one waiter polls a watch; others park on the source as usual. A
 * stop takes the watch out of `act` before it waits for the evicted one,
 * so no second waiter can take it over meanwhile. The ACTIVE watches are
 * found by source in `act`, a fixed hash table (through next_/prev_,
 * which the pending list uses only once a watch left ACTIVE), the pollers
 * in `pollers`, hashed the same way; WATCHED on the source says that it
 * has an ACTIVE watch, a hint for its waiters.
 *
 * The descriptor number. A watch a waiter took out of the kernel object
 * and did not put back (it fired it, handed it to the loop, or was
 * evicted) keeps WF_OUT until its stop, and the stop does not DEL the
 * number: while the stop waited for the poller with the lock released, a
 * new watch of the same number may have been registered, and a DEL would
 * take that registration. On epoll such a watch still holds its number:
 * `polled_fds` (pollers, by descriptor) and `out_fds` (FIRED watches with
 * WF_OUT, by descriptor) make a second watch of it EEXIST, as the kernel
 * would if it were still registered.
 *
 * Lifetime of the source: an active watch (fired or not) counts as a child
 * of its source (children_, under the source's lock), so destroy returns
 * EBUSY until cancel_watch_stop().
 *
 * fork(): the child handler forgets every watch (new generation, empty
 * pending list) and the backend closes its copy of the epoll descriptor
 * without touching it (the child's copy shares the parent's interest list:
 * an epoll_ctl there would change the parent's watches). A watch inherited
 * from the parent is idle to the child's stop, which only drops its hold.
 */
#include "watch.h"
#include "core.h"
#include "atomic.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>

#ifndef POLLRDHUP
#define POLLRDHUP 0
#endif

pthread_mutex_t cancel__watch_mu = PTHREAD_MUTEX_INITIALIZER;
/* Announces the end of a firing (stop waits on it, untimed). */
static pthread_cond_t watch_cv = PTHREAD_COND_INITIALIZER;
/* Under the lock: reported watches waiting to fire, oldest first. */
static struct cancel_watch *pend_head;
static struct cancel_watch *pend_tail;
/* Under the lock: the watch whose cancel runs now (compared only). */
static struct cancel_watch *firing;
/* Under the lock: the fork generation and the last registration stamp. */
static uint32_t watch_gen;
static uint32_t last_stamp;
/* On the library thread, inside a watch's cancel: that watch. */
static _Thread_local struct cancel_watch *dispatching;

/* Under the lock: the ACTIVE watches, chained by source (next_/prev_). */
#define ACT_BITS 12
static struct cancel_watch *act[1u << ACT_BITS];

/*
 * Each thread that polled a watch keeps a private wake-up descriptor until
 * it exits (closing it on every wait's way out cost 2 us of the 10 us a
 * hang-up takes to reach the waiter). Linked on `wakes` for the fork
 * child, which closes the other threads' copies.
 */
struct twake {
	int rfd;
	int wfd;
	bool linked;
	struct twake *next;
	struct twake *prev;
};
static _Thread_local struct twake my_wake = {-1, -1, false, NULL, NULL};
/* Under the lock. */
static struct twake *wakes;
static pthread_key_t wake_key;
static bool wake_key_ok;
static pthread_once_t wake_once = PTHREAD_ONCE_INIT;

/* A waiter polling a watch's descriptor (on that waiter's stack). */
struct poller {
	struct poller *next;  /* in pollers[], by source */
	struct poller *fnext; /* in polled_fds[], by descriptor number */
	struct cancel_watch *w;
	struct cancel_source *src;
	int wfd;       /* its thread's wake-up descriptor, write end */
	bool evicted;  /* a stop took the watch (under the lock) */
	bool signaled; /* its descriptor was written (under the lock) */
};
/* Under the lock: every poller, chained by source (the slots of `act`),
 * and again by the descriptor it polls (fd_slot). */
static struct poller *pollers[1u << ACT_BITS];
static struct poller *polled_fds[1u << ACT_BITS];
/* Under the lock: FIRED watches with WF_OUT, chained by descriptor
 * (next_/prev_, free once a watch is FIRED), until their stop. */
static struct cancel_watch *out_fds[1u << ACT_BITS];
static void out_link(struct cancel_watch *w);
static void out_unlink(struct cancel_watch *w);
static void polled_clear(struct cancel_source *src,
                         const struct poller *except);

static size_t
fd_slot(int fd)
{
	return (size_t)(uint32_t)fd & ((1u << ACT_BITS) - 1);
}

/* Under the lock: wake @p (once per poll). */
static void
poller_signal(struct poller *p)
{
	if (!p->signaled) {
		p->signaled = true;
		cancel__wakefd_signal(p->wfd);
	}
}

/* Under the lock: cancel__test_fail_watch_resume's countdown. */
static long fail_resume;

/*
 * Hold @src for a watch: it counts as a child, so destroy returns EBUSY
 * until cancel__unhold (source.c). It refuses a canceled source:
 * ECANCELED (no hold), read under its lock.
 */
static int
hold_source(struct cancel_source *src)
{
	if (!core_lock_unless_canceled(src))
		return ECANCELED;
	st_relaxed(&src->children_, ld_relaxed(&src->children_) + 1);
	/* Release pairs with destroy's acquire load of children_. */
	core_unlock(src);
	return 0;
}

static void
pend_unlink(struct cancel_watch *w)
{
	if (w->prev_ != NULL)
		w->prev_->next_ = w->next_;
	else
		pend_head = w->next_;
	if (w->next_ != NULL)
		w->next_->prev_ = w->prev_;
	else
		pend_tail = w->prev_;
	w->next_ = w->prev_ = NULL;
}

static size_t
act_slot(const struct cancel_source *src)
{
	uint64_t h = (uint64_t)(uintptr_t)src * 0x9e3779b97f4a7c15ull;
	return (size_t)(h >> (64 - ACT_BITS));
}

/* Under the lock: push @w on the doubly linked list at *@head, and take
 * it off again (next_/prev_; `act` and `out_fds` chains). */
static void
wlist_push(struct cancel_watch **head, struct cancel_watch *w)
{
	w->prev_ = NULL;
	w->next_ = *head;
	if (*head != NULL)
		(*head)->prev_ = w;
	*head = w;
}

static void
wlist_unlink(struct cancel_watch **head, struct cancel_watch *w)
{
	if (w->prev_ != NULL)
		w->prev_->next_ = w->next_;
	else
		*head = w->next_;
	if (w->next_ != NULL)
		w->next_->prev_ = w->prev_;
	w->next_ = w->prev_ = NULL;
}

/* An ACTIVE @w enters the table; its source shows WATCHED. */
static void
act_link(struct cancel_watch *w)
{
	wlist_push(&act[act_slot(w->src_)], w);
	/* Acq_rel like every read-modify-write of the state word; a waiter
	 * reads the bit only as a hint and looks here under the lock. */
	fetch_or_acq_rel(&w->src_->state_, (uint64_t)CANCEL__S_WATCHED);
}

/* @w leaves ACTIVE: out of the table; WATCHED goes with the source's last
 * ACTIVE watch. */
static void
act_unlink(struct cancel_watch *w)
{
	size_t k = act_slot(w->src_);
	wlist_unlink(&act[k], w);
	for (struct cancel_watch *o = act[k]; o != NULL; o = o->next_)
		if (o->src_ == w->src_)
			return;
	fetch_and_acq_rel(&w->src_->state_, ~(uint64_t)CANCEL__S_WATCHED);
}

void
cancel__watch_pend(struct cancel_watch *w)
{
	if (ld_relaxed(&w->state_) != CANCEL__W_ACTIVE)
		return;
	act_unlink(w);
	st_relaxed(&w->state_, CANCEL__W_PENDING);
	w->next_ = NULL;
	w->prev_ = pend_tail;
	if (pend_tail != NULL)
		pend_tail->next_ = w;
	else
		pend_head = w;
	pend_tail = w;
}

int
cancel_watch_hangup(struct cancel_watch *w, int fd, unsigned flags,
                    struct cancel_source *src)
{
	if (w == NULL || src == NULL || fd < 0 ||
	    (flags & ~CANCEL_WATCH_IGNORE_HALF_CLOSE) != 0)
		return EINVAL;
	/* Only the library thread writes state_ concurrently, and only from
	 * one busy state to another; a watch of an older fork generation
	 * is idle here. */
	if (ld_relaxed(&w->state_) != CANCEL__W_IDLE &&
	    ld_relaxed(&w->gen_) == ld_relaxed(&watch_gen))
		return EBUSY;
	CANCEL_ERRNO_SAVE();
	int rc = cancel__lt_ensure();
	if (rc != 0)
		goto out;
	rc = hold_source(src);
	if (rc != 0)
		goto out;

	bool kick = false;
	pthread_mutex_lock(&cancel__watch_mu);
	if (++last_stamp == 0)
		last_stamp = 1;
	w->src_ = src;
	w->next_ = w->prev_ = NULL;
	w->fd_ = fd;
	w->flags_ = flags;
	w->stamp_ = last_stamp;
	st_relaxed(&w->gen_, ld_relaxed(&watch_gen));
	st_relaxed(&w->state_, CANCEL__W_ACTIVE);
	rc = cancel__wb_add(w, &kick);
	if (rc != 0) {
		w->src_ = NULL;
		st_relaxed(&w->state_, CANCEL__W_IDLE);
	} else {
		act_link(w);
	}
	pthread_mutex_unlock(&cancel__watch_mu);
	if (rc != 0)
		cancel__unhold(src);
	else if (kick)
		cancel__lt_kick();
out:
	CANCEL_ERRNO_RESTORE();
	return rc;
}

bool
cancel_watch_stop(struct cancel_watch *w)
{
	if (w == NULL)
		return false;
	CANCEL_ERRNO_SAVE();
	int cs;
	/* pthread_cond_wait is a cancellation point: never unwind with the
	 * lock held. */
	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &cs);
	pthread_mutex_lock(&cancel__watch_mu);
	uint32_t st = ld_relaxed(&w->state_);
	struct cancel_source *src = w->src_;
	if (st != CANCEL__W_IDLE &&
	    ld_relaxed(&w->gen_) == ld_relaxed(&watch_gen)) {
		/* Out of `act` first, in this same hold: while we wait for
		 * an evicted poller below, no other waiter may take the watch
		 * over (tests/model/watch_poller_broken_unlink_late.pml). */
		if (st == CANCEL__W_ACTIVE)
			act_unlink(w);
		if (w->flags_ & CANCEL__WF_POLLED) {
			/* A waiter polls fd: make it let go before the caller
			 * closes fd (it leaves the state as it was). */
			struct poller *p = pollers[act_slot(w->src_)];
			while (p->w != w)
				p = p->next;
			p->evicted = true;
			poller_signal(p);
			while (w->flags_ & CANCEL__WF_POLLED)
				pthread_cond_wait(&watch_cv, &cancel__watch_mu);
		}
		/* Before the caller closes fd: out of the kernel object, if
		 * still in it (else the number may be registered by another
		 * watch now, whose registration a DEL would take). */
		if (!(w->flags_ & CANCEL__WF_OUT))
			cancel__wb_del(w);
		else if (st == CANCEL__W_FIRED)
			out_unlink(w);
		if (st == CANCEL__W_PENDING)
			pend_unlink(w); /* reported, but it never fires */
		/* Its cancel runs: wait, unless we are inside it. */
		while (firing == w && dispatching != w)
			pthread_cond_wait(&watch_cv, &cancel__watch_mu);
	} else if (st != CANCEL__W_IDLE) {
		/* Inherited over fork: the source may still show the parent's
		 * WATCHED and POLLED; drop what this process has no watch or
		 * poller of. */
		bool watched = false;
		for (struct cancel_watch *o = act[act_slot(src)]; o != NULL;
		     o = o->next_)
			watched = watched || o->src_ == src;
		if (!watched)
			fetch_and_acq_rel(&src->state_,
			                  ~(uint64_t)CANCEL__S_WATCHED);
		polled_clear(src, NULL);
	}
	w->src_ = NULL;
	st_relaxed(&w->state_, CANCEL__W_IDLE);
	pthread_mutex_unlock(&cancel__watch_mu);
	/* Last touch of src; the caller may free w now. */
	if (st != CANCEL__W_IDLE)
		cancel__unhold(src);
	pthread_setcancelstate(cs, NULL);
	CANCEL_ERRNO_RESTORE();
	return st == CANCEL__W_ACTIVE || st == CANCEL__W_PENDING;
}

/* ------------------------------------------------------------------ */
/* A waiter watches for itself (see the top)                          */
/* ------------------------------------------------------------------ */

bool
cancel__watch_fd_out(int fd)
{
	for (struct poller *p = polled_fds[fd_slot(fd)]; p != NULL;
	     p = p->fnext)
		if (p->w->fd_ == fd)
			return true;
	for (struct cancel_watch *w = out_fds[fd_slot(fd)]; w != NULL;
	     w = w->next_)
		if (w->fd_ == fd)
			return true;
	return false;
}

/* Under the lock: a watch with WF_OUT became FIRED: index it by @fd_. */
static void
out_link(struct cancel_watch *w)
{
	wlist_push(&out_fds[fd_slot(w->fd_)], w);
}

static void
out_unlink(struct cancel_watch *w)
{
	wlist_unlink(&out_fds[fd_slot(w->fd_)], w);
}

/* Under the lock: no poller of @src but @except is left: clear POLLED. */
static void
polled_clear(struct cancel_source *src, const struct poller *except)
{
	for (struct poller *p = pollers[act_slot(src)]; p != NULL; p = p->next)
		if (p != except && p->src == src)
			return;
	fetch_and_acq_rel(&src->state_, ~(uint64_t)CANCEL__S_POLLED);
}

/* Under the lock: wake every poller of @src but @except. */
static void
wake_locked(struct cancel_source *src, const struct poller *except)
{
	for (struct poller *p = pollers[act_slot(src)]; p != NULL; p = p->next)
		if (p != except && p->src == src)
			poller_signal(p);
}

void
cancel__watch_wake(struct cancel_source *src)
{
	pthread_mutex_lock(&cancel__watch_mu);
	wake_locked(src, NULL);
	pthread_mutex_unlock(&cancel__watch_mu);
}

static void
wake_release(void *arg)
{
	struct twake *t = arg;
	pthread_mutex_lock(&cancel__watch_mu);
	bool mine = t->linked; /* false: a fork child closed it already */
	if (mine) {
		if (t->prev != NULL)
			t->prev->next = t->next;
		else
			wakes = t->next;
		if (t->next != NULL)
			t->next->prev = t->prev;
		t->linked = false;
	}
	pthread_mutex_unlock(&cancel__watch_mu);
	if (mine)
		cancel__wakefd_close(t->rfd, t->wfd);
	t->rfd = t->wfd = -1;
}

static void
wake_key_make(void)
{
	wake_key_ok = pthread_key_create(&wake_key, wake_release) == 0;
}

/* Under the lock: this thread's wake-up descriptor. 0 or an errno. */
static int
wake_get(void)
{
	if (my_wake.rfd >= 0)
		return 0;
	pthread_once(&wake_once, wake_key_make);
	if (!wake_key_ok)
		return EAGAIN;
	int rc = cancel__wakefd_open(&my_wake.rfd, &my_wake.wfd);
	if (rc != 0)
		return rc;
	if (pthread_setspecific(wake_key, &my_wake) != 0) {
		cancel__wakefd_close(my_wake.rfd, my_wake.wfd);
		my_wake.rfd = my_wake.wfd = -1;
		return ENOMEM;
	}
	my_wake.linked = true;
	my_wake.prev = NULL;
	my_wake.next = wakes;
	if (wakes != NULL)
		wakes->prev = &my_wake;
	wakes = &my_wake;
	return 0;
}

/* Under the lock: an ACTIVE watch of @src no waiter polls, or NULL. */
static struct cancel_watch *
takeable(struct cancel_source *src)
{
	/* A relaxed look at the list is enough here: the decision that
	 * counts is taken again under the source's lock (fire_here). */
	if (ld_relaxed(&src->head_) != NULL)
		return NULL;
	for (struct cancel_watch *w = act[act_slot(src)]; w != NULL;
	     w = w->next_)
		if (w->src_ == src && !(w->flags_ & CANCEL__WF_POLLED))
			return w;
	return NULL;
}

/*
 * Under the lock: the waiter saw @w's hang-up. Cancel @src here if it has
 * no callback to run, else let the loop fire @w (*@kick).
 */
static void
fire_here(struct poller *me, struct cancel_watch *w,
          struct cancel_source *src, bool *kick)
{
	core_lock(src);
	/* Acquire pairs with cancel__begin's CAS. */
	uint64_t s = ld_acquire(&src->state_);
	if (!(s & CANCEL__S_CANCELED) && src->head_ != NULL) {
		/* A callback came after the takeover: the loop runs it. */
		core_unlock(src);
		cancel__watch_pend(w);
		*kick = true;
		return;
	}
	/* Under the source's lock: a register after this sees CANCELED and
	 * refuses, so the list stays empty and the finish runs nothing. */
	bool won = !(s & CANCEL__S_CANCELED) &&
	           cancel__begin_polled(src, ECONNRESET, "peer hung up");
	core_unlock(src);
	if (won)
		wake_locked(src, me); /* pollers of other watches of src */
	act_unlink(w);
	st_relaxed(&w->state_, CANCEL__W_FIRED);
	out_link(w); /* WF_OUT: it stays out until its stop */
	if (won)
		cancel__finish(src); /* DONE: the cancel has ended */
}

/* Poll @p (the watched descriptor, our wake-up one) until something
 * happens or @dl; say what. */
enum woke { WOKE_HUP, WOKE_NVAL, WOKE_OTHER };

static enum woke
poll_watched(struct pollfd *p, struct cancel_source *src, uint64_t dl)
{
	for (;;) {
		/* Acquire pairs with cancel__begin's CAS. */
		if (ld_acquire(&src->state_) & CANCEL__S_CANCELED)
			return WOKE_OTHER;
		struct timespec rel;
		struct timespec *relp = NULL;
		if (dl != CANCEL_NEVER) {
			uint64_t now = cancel__now_ns();
			if (now >= dl)
				return WOKE_OTHER;
			rel = cancel__ns_to_ts(dl - now);
			relp = &rel;
		}
		p[0].revents = p[1].revents = 0;
		if (ppoll(p, 2, relp, NULL) < 0) {
			if (errno == EINTR)
				continue;
			return WOKE_OTHER; /* ENOMEM: park instead */
		}
		if (p[0].revents & POLLNVAL)
			return WOKE_NVAL;
		if (p[0].revents != 0)
			return WOKE_HUP; /* only hang-up bits were asked */
		if (p[1].revents != 0)
			return WOKE_OTHER; /* a cancel or a stop */
	}
}

bool
cancel__watch_wait(struct cancel_source *src, uint64_t dl)
{
	struct poller me = {.src = src};
	struct pollfd p[2];
	pthread_mutex_lock(&cancel__watch_mu);
	/* POLLED first, CANCELED from the same read-modify-write: a cancel
	 * whose CAS comes later sees POLLED and wakes us (it takes the lock
	 * after this hold, when our node is on the list). */
	uint64_t st = fetch_or_acq_rel(&src->state_, (uint64_t)CANCEL__S_POLLED);
	struct cancel_watch *w =
	    (st & CANCEL__S_CANCELED) ? NULL : takeable(src);
	/* No descriptor to be woken through: park as usual. Not taken out
	 * of the kernel object: its descriptor was closed before the stop
	 * (a misuse), nothing to poll. */
	if (w == NULL || wake_get() != 0 || cancel__wb_suspend(w) != 0) {
		polled_clear(src, NULL);
		pthread_mutex_unlock(&cancel__watch_mu);
		return false;
	}
	w->flags_ |= CANCEL__WF_POLLED | CANCEL__WF_OUT;
	me.w = w;
	me.wfd = my_wake.wfd;
	struct poller **head = &pollers[act_slot(src)];
	me.next = *head;
	*head = &me;
	struct poller **fhead = &polled_fds[fd_slot(w->fd_)];
	me.fnext = *fhead;
	*fhead = &me;
	p[0] = (struct pollfd){
	    .fd = w->fd_,
	    .events = (w->flags_ & CANCEL_WATCH_IGNORE_HALF_CLOSE)
	                  ? 0
	                  : POLLRDHUP};
	p[1] = (struct pollfd){.fd = my_wake.rfd, .events = POLLIN};
	pthread_mutex_unlock(&cancel__watch_mu);

	enum woke why = poll_watched(p, src, dl);

	bool kick = false;
	pthread_mutex_lock(&cancel__watch_mu);
	if (!me.evicted) {
		if (why == WOKE_HUP) {
			fire_here(&me, w, src, &kick);
		} else if (why == WOKE_OTHER) {
			int e = ENOMEM;
			if (fail_resume == 0 || --fail_resume != 0)
				e = cancel__wb_resume(w, &kick);
			if (e == 0)
				w->flags_ &= ~CANCEL__WF_OUT;
			else {
				/* Never unwatched: it fires, with ENOMEM. */
				w->flags_ |= CANCEL__WF_LOST;
				cancel__watch_pend(w);
				kick = true;
			}
		}
		/* WOKE_NVAL: fd was closed before the stop (a misuse). Like
		 * epoll, which forgets a closed descriptor, leave it out. */
	}
	/* Let go: a stop waiting on the eviction may return now. */
	w->flags_ &= ~CANCEL__WF_POLLED;
	struct poller **pp = head;
	while (*pp != &me)
		pp = &(*pp)->next;
	*pp = me.next;
	for (pp = fhead; *pp != &me; pp = &(*pp)->fnext)
		;
	*pp = me.fnext;
	polled_clear(src, NULL);
	if (me.evicted)
		pthread_cond_broadcast(&watch_cv);
	pthread_mutex_unlock(&cancel__watch_mu);
	/* Every write to it was made under the lock while we were on the
	 * list: consume it, so our next poll starts clean. */
	if (me.signaled)
		cancel__wakefd_drain(my_wake.rfd);
	if (kick)
		cancel__lt_kick();
	return true;
}

int
cancel__test_watch_pollers(void)
{
	int n = 0;
	pthread_mutex_lock(&cancel__watch_mu);
	for (size_t k = 0; k < sizeof pollers / sizeof pollers[0]; k++)
		for (struct poller *p = pollers[k]; p != NULL; p = p->next)
			n++;
	pthread_mutex_unlock(&cancel__watch_mu);
	return n;
}

int
cancel__test_watch_wake_fd(void)
{
	return my_wake.rfd;
}

unsigned
cancel__test_watch_state(const struct cancel_watch *w)
{
	pthread_mutex_lock(&cancel__watch_mu);
	unsigned st = ld_relaxed(&w->state_);
	pthread_mutex_unlock(&cancel__watch_mu);
	return st;
}

void
cancel__test_fail_watch_resume(long k)
{
	pthread_mutex_lock(&cancel__watch_mu);
	fail_resume = k;
	pthread_mutex_unlock(&cancel__watch_mu);
}

struct pollfd *
cancel__watch_pollset(int kickfd, nfds_t *n)
{
	return cancel__wb_pollset(kickfd, n);
}

void
cancel__watch_dispatch(struct pollfd *set, nfds_t n)
{
	pthread_mutex_lock(&cancel__watch_mu);
	cancel__wb_collect(set, n);
	struct cancel_watch *w;
	while ((w = pend_head) != NULL) {
		pend_unlink(w);
		st_relaxed(&w->state_, CANCEL__W_FIRED);
		if (w->flags_ & CANCEL__WF_OUT)
			out_link(w); /* handed over by a waiter */
		struct cancel_source *src = w->src_;
		bool lost = (w->flags_ & CANCEL__WF_LOST) != 0;
		firing = w;
		pthread_mutex_unlock(&cancel__watch_mu);

		dispatching = w;
		if (lost)
			cancel__cancel_cause(src, ENOMEM,
			                     "hang-up watch lost: the kernel "
			                     "refused its descriptor back");
		else
			cancel__cancel_cause(src, ECONNRESET, "peer hung up");
		dispatching = NULL;
		/* A callback may have stopped and freed w, and destroyed src:
		 * neither is followed again (w is only compared by stop). */

		pthread_mutex_lock(&cancel__watch_mu);
		firing = NULL;
		pthread_cond_broadcast(&watch_cv);
	}
	pthread_mutex_unlock(&cancel__watch_mu);
}

static void
watch_atfork_prepare(void)
{
	pthread_mutex_lock(&cancel__watch_mu);
}

static void
watch_atfork_parent(void)
{
	pthread_mutex_unlock(&cancel__watch_mu);
}

void
cancel__watch_atfork_child(void)
{
	/* Only this thread exists; it holds the lock (prepare). */
	cancel__wb_atfork_child();
	st_relaxed(&watch_gen, ld_relaxed(&watch_gen) + 1);
	pend_head = pend_tail = NULL;
	for (size_t k = 0; k < sizeof act / sizeof act[0]; k++)
		act[k] = NULL;
	/* Pollers were other threads. Every thread's wake-up descriptor is
	 * shared with the parent now: close them all (this thread makes a new
	 * one when it needs one; the others are gone). */
	for (size_t k = 0; k < sizeof pollers / sizeof pollers[0]; k++)
		pollers[k] = polled_fds[k] = NULL;
	for (size_t k = 0; k < sizeof out_fds / sizeof out_fds[0]; k++)
		out_fds[k] = NULL;
	for (struct twake *t = wakes; t != NULL; t = t->next) {
		cancel__wakefd_close(t->rfd, t->wfd);
		t->linked = false;
	}
	wakes = NULL;
	my_wake.rfd = my_wake.wfd = -1;
	firing = NULL;
	dispatching = NULL;
	pthread_cond_init(&watch_cv, NULL);
	pthread_mutex_unlock(&cancel__watch_mu);
}

__attribute__((constructor)) static void
watch_register_atfork(void)
{
	/* The child half is called by libthread.c's child handler. */
	pthread_atfork(watch_atfork_prepare, watch_atfork_parent, NULL);
}
