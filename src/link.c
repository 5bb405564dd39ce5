/*
 * Linked sources. A child's link to each parent is an ordinary callback
 * registered on the parent (flagged CB_KEEP_SRC so it remembers the parent
 * after running). One parent uses the link node embedded in the source; more
 * use one allocated array. The parent's children_ count keeps the parent
 * from being destroyed while a child still points at it.
 *
 * When a parent is canceled its run loop reaches the link, which cancels
 * the child with the parent's reason (the first reason to arrive wins the
 * child's CAS) and runs the child's callbacks: inline while links nest less
 * than CANCEL_LINK_INLINE_DEPTH deep, else queued on this thread and run by
 * the outermost cancel before it returns, so chains of any length never
 * recurse on the stack without bound.
 */
#include "internal.h"

#include "atomic.h"
#include "core.h"

#include <errno.h>
#include <string.h>

static void
link_fire(void *arg)
{
	struct cancel_source *child = arg;
	/* We run inside the parent's run loop: its frame is on top. */
	struct cancel_source *parent = cancel__tls.top->src;
	/* Acquire pairs with cancel__begin's release on the parent. */
	int reason = cancel__state_reason(ld_acquire(&parent->state_));
	/* The child inherits the parent's cause: origin and time of the
	 * cancel where it started, however deep the chain. */
	if (cancel__begin(child, reason, false, NULL, parent))
		cancel__propagate(child);
}

static struct cancel_callback *
links_of(struct cancel_source *src)
{
	return src->links_ != NULL ? src->links_ : &src->link_;
}

static __attribute__((noinline)) int
init_linked_slow(struct cancel_source *src, const cancel_token *parents,
                 size_t n)
{
	if (src == NULL || (parents == NULL && n > 0))
		return EINVAL;
	cancel_source_init(src);

	size_t k = 0;
	for (size_t i = 0; i < n; i++) {
		struct cancel_source *p = parents[i].src_;
		if (p == NULL)
			continue;
		k++;
		/* Acquire pairs with cancel__begin's release on the parent. */
		uint64_t s = ld_acquire(&p->state_);
		if (s & CANCEL__S_CANCELED) {
			/* First canceled parent in array order: canceled at
			 * once, linked to nobody, with its cause. Nothing can
			 * observe src yet, so plain stores are enough. */
			struct cancel__cause c;
			cancel__cause_get(p, &c);
			cancel__cause_publish(src, &c);
			st_relaxed(&src->state_,
			           CANCEL__S_CANCELED | CANCEL__S_DONE |
			               ((uint64_t)(uint32_t)cancel__state_reason(s)
			                << CANCEL__S_REASON_SHIFT));
			return 0;
		}
	}
	if (k == 0)
		return 0;

	struct cancel_callback *links = &src->link_;
	if (k > 1) {
		links = cancel__malloc(k * sizeof(*links));
		if (links == NULL)
			return ENOMEM;
		memset(links, 0, k * sizeof(*links));
		src->links_ = links;
	}
	src->nlinks_ = (uint32_t)k;

	size_t j = 0;
	for (size_t i = 0; i < n; i++) {
		struct cancel_source *p = parents[i].src_;
		if (p == NULL)
			continue;
		/* Counts us among p's children when it succeeds. */
		if (cancel__register(&links[j], link_fire, src, p,
		                     CB_KEEP_SRC) != 0) {
			/* The parent was canceled meanwhile: inherit. */
			int reason = cancel__state_reason(ld_acquire(&p->state_));
			if (cancel__begin(src, reason, false, NULL, p))
				cancel__finish(src);
		}
		j++;
	}
	return 0;
}

/*
 * The fast path: one live parent, its lock free. Registers the embedded
 * link as init_linked_slow would, without calls or saved registers; any
 * other case goes there and starts over (nothing written here is visible
 * to another thread unless the push happened, and a push is final).
 */
int
cancel_source_init_linked(struct cancel_source *src,
                          const cancel_token *parents, size_t n)
{
	struct cancel_source *p;
	if (src != NULL && n == 1 && parents != NULL &&
	    (p = parents[0].src_) != NULL) {
		core_source_zero(src);
		src->nlinks_ = 1;
		if (core_register_fast(p, &src->link_, link_fire, src,
		                       CB_KEEP_SRC)) {
			if (__builtin_expect(cancel__debug_leaks, 0))
				return cancel__debug_created(
				    src, __builtin_return_address(0), 0);
			return 0;
		}
	}
	CANCEL_ERRNO_SAVE(); /* malloc sets errno on ENOMEM */
	int rc = init_linked_slow(src, parents, n);
	CANCEL_ERRNO_RESTORE();
	if (__builtin_expect(cancel__debug_leaks, 0) && src != NULL)
		return cancel__debug_created(src, __builtin_return_address(0),
		                             rc);
	return rc;
}

void
cancel__unlink_parents(struct cancel_source *src)
{
	struct cancel_callback *links = links_of(src);
	uint32_t n = src->nlinks_;
	for (uint32_t j = 0; j < n; j++) {
		struct cancel_source *p = ld_relaxed(&links[j].src_);
		if (p == NULL)
			continue;
		/* Waits if the parent runs this link on another thread; at
		 * once (releasing the node) if on ours. */
		/* Also leaves p's children, under p's lock. */
		cancel_callback_unregister(&links[j]);
		st_relaxed(&links[j].src_, NULL);
	}
	if (src->links_ != NULL)
		cancel__free(src->links_);
	src->links_ = NULL;
	src->nlinks_ = 0;
}

static uint64_t
min_u64(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

/*
 * A set of sources, for visiting each ancestor once: open addressing on
 * the address, in a small array on the caller's stack, moved to the heap
 * only when an ancestry with several parents per source outgrows it.
 */
#define WALK_INLINE 64

struct walk {
	struct cancel_source **seen; /* hash set, power-of-two size */
	size_t seen_cap, seen_n;
	struct cancel_source **stack;
	size_t stack_cap, stack_n;
	struct cancel_source *seen_buf[WALK_INLINE];
	struct cancel_source *stack_buf[WALK_INLINE];
	bool oom;
};

static size_t
walk_hash(const struct cancel_source *s, size_t cap)
{
	uint64_t h = (uint64_t)(uintptr_t)s * 0x9e3779b97f4a7c15ull;
	return (size_t)(h >> 17) & (cap - 1);
}

/* Insert @s; false if it was there already. */
static bool
walk_mark(struct walk *w, struct cancel_source *s)
{
	if ((w->seen_n + 1) * 2 > w->seen_cap) {
		size_t cap = w->seen_cap * 2;
		size_t bytes = cap * sizeof(struct cancel_source *);
		struct cancel_source **t = cancel__malloc(bytes);
		if (t == NULL) {
			/* Fill the table we have; once it is full, prune (see
			 * earliest()). */
			w->oom = true;
			if (w->seen_n + 1 >= w->seen_cap)
				return false;
			goto insert;
		}
		memset(t, 0, bytes);
		for (size_t i = 0; i < w->seen_cap; i++) {
			struct cancel_source *e = w->seen[i];
			if (e == NULL)
				continue;
			size_t k = walk_hash(e, cap);
			while (t[k] != NULL)
				k = (k + 1) & (cap - 1);
			t[k] = e;
		}
		if (w->seen != w->seen_buf)
			cancel__free(w->seen);
		w->seen = t;
		w->seen_cap = cap;
	}
insert:;
	size_t k = walk_hash(s, w->seen_cap);
	while (w->seen[k] != NULL) {
		if (w->seen[k] == s)
			return false;
		k = (k + 1) & (w->seen_cap - 1);
	}
	w->seen[k] = s;
	w->seen_n++;
	return true;
}

static bool
walk_push(struct walk *w, struct cancel_source *s)
{
	if (w->stack_n == w->stack_cap) {
		size_t cap = w->stack_cap * 2;
		size_t bytes = cap * sizeof(struct cancel_source *);
		struct cancel_source **t = cancel__malloc(bytes);
		if (t == NULL) {
			w->oom = true;
			return false;
		}
		memcpy(t, w->stack, w->stack_n * sizeof(struct cancel_source *));
		if (w->stack != w->stack_buf)
			cancel__free(w->stack);
		w->stack = t;
		w->stack_cap = cap;
	}
	w->stack[w->stack_n++] = s;
	return true;
}

/*
 * Earliest deadline of @src and its ancestors, iteratively (the stack does
 * not grow with the depth). A single-parent chain is followed in a loop
 * with no bookkeeping: nothing on it can be met twice. From the first
 * source with several parents on, every source is marked in a set and
 * visited once, so an ancestry that joins again (a diamond, or a chain
 * linking each source twice to the one before) costs its size, not the
 * number of paths through it. The set and stack start on this stack frame;
 * only an ancestry of more than WALK_INLINE / 2 such sources allocates.
 * If that allocation fails the walk still ends (it fills the set it has,
 * then treats every new source as met, and a stack that cannot grow drops
 * the remaining paths), but it may miss ancestors beyond the first
 * WALK_INLINE: the only case where the answer is not exact.
 * The ancestors cannot go away meanwhile: a parent outlives its children.
 */
static uint64_t
earliest(struct cancel_source *src)
{
	uint64_t best = CANCEL_NEVER;
	struct walk w;
	w.seen = w.seen_buf;
	w.seen_cap = WALK_INLINE;
	w.seen_n = 0;
	w.stack = w.stack_buf;
	w.stack_cap = WALK_INLINE;
	w.stack_n = 0;
	w.oom = false;
	bool general = false;
	memset(w.seen_buf, 0, sizeof(w.seen_buf));

	for (;;) {
		while (src != NULL) {
			if (general && !walk_mark(&w, src))
				break; /* met before */
			best = min_u64(best, cancel__timer_deadline(src));
			struct cancel_callback *links = links_of(src);
			uint32_t n = src->nlinks_;
			if (n == 0)
				break;
			if (n > 1 && !general) {
				general = true;
				walk_mark(&w, src);
			}
			/* Later parents wait on the stack; the first is
			 * followed now. */
			for (uint32_t j = n - 1; j > 0; j--) {
				struct cancel_source *p =
				        ld_relaxed(&links[j].src_);
				if (p != NULL)
					walk_push(&w, p);
			}
			src = ld_relaxed(&links[0].src_);
		}
		if (w.stack_n == 0)
			break;
		src = w.stack[--w.stack_n];
	}
	if (w.seen != w.seen_buf)
		cancel__free(w.seen);
	if (w.stack != w.stack_buf)
		cancel__free(w.stack);
	return best;
}

bool
cancel_token_deadline(cancel_token tok, struct timespec *deadline)
{
	if (tok.src_ == NULL || deadline == NULL)
		return false;
	CANCEL_ERRNO_SAVE();
	uint64_t ns = earliest(tok.src_);
	CANCEL_ERRNO_RESTORE();
	if (ns == CANCEL_NEVER)
		return false;
	*deadline = cancel__ns_to_ts(ns);
	return true;
}
