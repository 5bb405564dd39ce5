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
#include <pthread.h>

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

void
cancel__watch_pend(struct cancel_watch *w)
{
	if (ld_relaxed(&w->state_) != CANCEL__W_ACTIVE)
		return;
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
		/* Before the caller closes fd: out of the kernel object. */
		cancel__wb_del(w);
		if (st == CANCEL__W_PENDING)
			pend_unlink(w); /* reported, but it never fires */
		/* Its cancel runs: wait, unless we are inside it. */
		while (firing == w && dispatching != w)
			pthread_cond_wait(&watch_cv, &cancel__watch_mu);
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
		struct cancel_source *src = w->src_;
		firing = w;
		pthread_mutex_unlock(&cancel__watch_mu);

		dispatching = w;
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
