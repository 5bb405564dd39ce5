/*
 * group.pml: a group's member threads (src/group.c): the hand-over of a
 * task to a parked thread, a member's return, and wait, which joins every
 * thread before the caller may destroy and free the group.
 *
 *   go(task):  under mu: active++; if a thread is parked (idle), take it,
 *              unlock, store the task in its struct worker, then release
 *              its word (RUN) and wake it; else threads++, unlock, create
 *              a thread with the task (struct start, copied before go
 *              returns).
 *   member:    runs its task (reads the group's token: touches g); then
 *              under mu: record, word = PARKED, push itself on idle,
 *              active--; unlock; signal the slot and done condvars (touches
 *              g, after the unlock); sleeps until its word is not PARKED:
 *              RUN -> the next task, EXIT -> returns (the thread ends).
 *   wait:      under mu: while active > 0, wait on done (modelled as
 *              unlock, await active == 0, lock); then, while idle is not
 *              empty: take the whole list, unlock, for each: word = EXIT,
 *              wake, join; lock; threads -= joined. Returns when active
 *              and threads are 0. The caller then destroys and frees g.
 *
 * Two tasks from the main thread, the second one while the first may
 * still run (a second thread) or after it parked (reuse), then wait and
 * free. -DTHREE adds a third go, after a wait: a reused or new thread.
 *
 * Checked: each task runs exactly once, with its own task (the hand-over
 * publishes the task before the word); nothing touches g after it was
 * freed; after wait no member thread exists; no deadlock.
 *
 * Broken variants:
 *   BROKEN_WORD_FIRST: go releases the parked thread's word before it
 *     stores the task: the thread may run the previous task again.
 *   BROKEN_NO_JOIN: wait returns once no member is active, without
 *     retiring and joining the parked threads: a member that has just
 *     parked still signals the condvars of the freed group.
 */

#define NT 2        /* member threads at most */
#define NTASK 3     /* task ids 1..2 (3 with THREE) */

#define PARKED 0
#define RUN 1
#define EXIT 2

bit mu;
byte nactive;     /* active_ (active is a Promela keyword) */
byte threads;
bit idle[NT];
byte word[NT];
byte task_of[NT];   /* struct worker's fn/arg */
bit started[NT];
bit exited[NT];
byte ran[NTASK + 1];
bit freed;

inline lock()
{
	atomic { mu == 0 -> mu = 1 }
}

inline unlock()
{
	mu = 0
}

inline touch_g()
{
	assert(!freed)
}

proctype member(byte k)
{
	byte t;
	t = task_of[k]; /* copied from struct start before go returns */
	do
	::
		touch_g(); /* the task reads the group's token */
		ran[t]++;
		lock();
		touch_g();
		word[k] = PARKED;
		idle[k] = 1;
		nactive--;
		unlock();
		touch_g(); /* signal slot_cv_, broadcast done_cv_ */
		word[k] != PARKED;
		if
		:: word[k] == EXIT -> break
		:: else -> t = task_of[k]
		fi
	od;
	exited[k] = 1 /* the thread ends; join returns */
}

/* go(task) from the main thread; k is scratch */
inline go(task, k)
{
	lock();
	touch_g();
	nactive++;
	if
	:: idle[0] -> k = 0
	:: idle[1] -> k = 1
	:: else -> k = NT
	fi;
	if
	:: k < NT ->
		idle[k] = 0;
		unlock();
#ifdef BROKEN_WORD_FIRST
		word[k] = RUN;
		task_of[k] = task
#else
		task_of[k] = task;
		word[k] = RUN
#endif
	:: else ->
		threads++;
		unlock();
		/* a thread slot never used, or whose thread was joined */
		if
		:: !started[0] || exited[0] -> k = 0
		:: else -> assert(!started[1] || exited[1]); k = 1
		fi;
		started[k] = 1;
		exited[k] = 0;
		task_of[k] = task;
		run member(k)
	fi;
	k = 0
}

/* wait; take0/take1 are scratch */
inline wait_all(take0, take1)
{
	lock();
	touch_g();
	do
	:: nactive > 0 ->
		unlock();
		nactive == 0;
		lock()
#ifdef BROKEN_NO_JOIN
	:: else -> break
#else
	:: nactive == 0 && (idle[0] || idle[1]) ->
		/* retire: take the list, unlock, release and join each */
		take0 = idle[0];
		take1 = idle[1];
		idle[0] = 0;
		idle[1] = 0;
		unlock();
		if
		:: take0 -> word[0] = EXIT; exited[0] == 1; threads--
		:: else
		fi;
		if
		:: take1 -> word[1] = EXIT; exited[1] == 1; threads--
		:: else
		fi;
		lock()
	:: nactive == 0 && !idle[0] && !idle[1] && threads == 0 -> break
#endif
	od;
	unlock()
}

init
{
	byte k;
	bit take0, take1;
	go(1, k);
	go(2, k);
	wait_all(take0, take1);
#ifdef THREE
	go(3, k);
	wait_all(take0, take1);
#endif
	/* wait returned: every task ran once, no member thread left */
	assert(ran[1] == 1 && ran[2] == 1);
#ifdef THREE
	assert(ran[3] == 1);
#endif
	assert((!started[0] || exited[0]) && (!started[1] || exited[1]));
	freed = 1 /* destroy and free the group */
}
