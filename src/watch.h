/*
 * Hang-up watches: what the library thread's loop (libthread.c) and the
 * two backends (watch_epoll.c, watch_poll.c) share with watch.c.
 */
#ifndef CANCEL_WATCH_H
#define CANCEL_WATCH_H

#include "internal.h"

#include <poll.h>
#include <pthread.h>

/* ---- hooks of the library thread's loop (libthread.c) ---- */

/*
 * The descriptors the loop sleeps on: slot 0 is @kickfd (POLLIN), the
 * others the watch backend's. The array belongs to the loop thread and
 * stays valid until its next call. Revents are cleared.
 */
CANCEL_HIDDEN struct pollfd *cancel__watch_pollset(int kickfd, nfds_t *n);
/* After ppoll() returned > 0 on that set: fire the watches it reports. */
CANCEL_HIDDEN void cancel__watch_dispatch(struct pollfd *set, nfds_t n);
/* fork() child handler: forget the parent's watches and kernel object. */
CANCEL_HIDDEN void cancel__watch_atfork_child(void);

/* ---- between watch.c and a backend ---- */

/* Watch states (cancel_watch.state_; written under cancel__watch_mu). */
#define CANCEL__W_IDLE 0u
#define CANCEL__W_ACTIVE 1u  /* registered, not reported */
#define CANCEL__W_PENDING 2u /* reported, on the pending list, not fired */
#define CANCEL__W_FIRED 3u   /* its cancel ran or runs */

/* Internal bits of cancel_watch.flags_ (the caller's flags use bit 0). */
#define CANCEL__WF_OUT 0x20000000u    /* out of the kernel object: a
                                       * waiter took it and did not put
                                       * it back (stop must not DEL: the
                                       * number may be another watch's) */
#define CANCEL__WF_POLLED 0x40000000u /* a waiter polls its descriptor */
#define CANCEL__WF_LOST 0x80000000u   /* the kernel refused it back after
                                       * a waiter let go: fires ENOMEM */

/* The module's lock: registrations, the pending list, `firing`. */
CANCEL_HIDDEN extern pthread_mutex_t cancel__watch_mu;

/*
 * Under the lock: register @w (fd_ and flags_ filled) with the kernel
 * object. 0 or an errno; *@kick set when the loop must rebuild its set.
 */
CANCEL_HIDDEN int cancel__wb_add(struct cancel_watch *w, bool *kick);
/* Under the lock: take @w (of this fork generation) out, whatever its
 * state; harmless if the backend already dropped it. */
CANCEL_HIDDEN void cancel__wb_del(struct cancel_watch *w);
/*
 * Under the lock: take ACTIVE @w out of the kernel object while a waiter
 * polls its descriptor (cancel__watch_wait). 0, or an errno: not taken
 * out, the waiter parks as usual.
 */
CANCEL_HIDDEN int cancel__wb_suspend(struct cancel_watch *w);
/*
 * Under the lock: put a suspended @w back. 0 or an errno (ENOMEM, ENOSPC:
 * the caller fires it with ENOMEM, never leaves it unwatched). *@kick set
 * when the loop must rebuild its set.
 */
CANCEL_HIDDEN int cancel__wb_resume(struct cancel_watch *w, bool *kick);
/* Loop thread, lock NOT held: the backend's part of the poll set. */
CANCEL_HIDDEN struct pollfd *cancel__wb_pollset(int kickfd, nfds_t *n);
/* Under the lock: hand every watch @set reports to cancel__watch_pend(). */
CANCEL_HIDDEN void cancel__wb_collect(struct pollfd *set, nfds_t n);
/* fork child, lock held by this thread. */
CANCEL_HIDDEN void cancel__wb_atfork_child(void);

/* Under the lock: an ACTIVE @w was reported: queue it to fire. */
CANCEL_HIDDEN void cancel__watch_pend(struct cancel_watch *w);

/* Under the lock: a watch of @fd that is not IDLE is out of the kernel
 * object (a waiter polls it, or fired it): a second watch of @fd is
 * EEXIST on epoll, as if it were still registered. */
CANCEL_HIDDEN bool cancel__watch_fd_out(int fd);

#endif /* CANCEL_WATCH_H */
