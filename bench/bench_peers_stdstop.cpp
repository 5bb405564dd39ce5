/*
 * The C++20 peer of bench_core: libstdc++'s std::stop_source, stop_token and
 * stop_callback, timed with the same patterns as libcancel. Its own
 * translation unit, compiled -std=c++20 -O2; bench_core.c calls the
 * extern "C" kernels below and owns the clock (bench_begin/bench_end wrap
 * only the timed part of each kernel; setup and teardown stay outside).
 *
 * Keeping the work alive: BENCH_ESCAPE(p) and BENCH_USE(x), see
 * bench_util.h (a C header with extern "C" guards).
 */
#include <cstddef>
#include <cstdint>
#include <new>
#include <stop_token>
#include <vector>

#include "bench_util.h"

namespace {

long counter;

/* The callback of every row: what libcancel's bump() does. */
struct Bump {
	long *p;
	void operator()() const noexcept { ++*p; }
};

/* The link of the "linked child" row: stop a child source. */
struct StopChild {
	std::stop_source *child;
	void operator()() const noexcept { child->request_stop(); }
};

using Cb = std::stop_callback<Bump>;

} // namespace

void
bstd_check(uint64_t n, unsigned)
{
	std::stop_source ss;
	std::stop_token tok = ss.get_token();
	/* Read through an opaque pointer, as bench_core.c does. */
	std::stop_token *tp = &tok;
	BENCH_LAUNDER(tp);
	bench_begin();
	for (uint64_t i = 0; i < n; i++) {
		bool r = tp->stop_requested();
		BENCH_USE(r);
		BENCH_CLOBBER();
	}
	bench_end();
}

void
bstd_reg(uint64_t n, unsigned)
{
	std::stop_source ss;
	std::stop_token tok = ss.get_token();
	bench_begin();
	for (uint64_t i = 0; i < n; i++) {
		BENCH_ALIGNED Cb cb(tok, Bump{&counter});
		BENCH_ESCAPE(&cb);
	}
	bench_end();
}

void
bstd_source(uint64_t n, unsigned)
{
	bench_begin();
	for (uint64_t i = 0; i < n; i++) {
		BENCH_ALIGNED std::stop_source ss;
		BENCH_ESCAPE(&ss);
	}
	bench_end();
}

void
bstd_cancel(uint64_t n, unsigned ncb)
{
	size_t batch = bench_batch(ncb);
	std::vector<std::stop_source> srcs;
	srcs.reserve(batch);
	auto *slots = static_cast<Cb *>(::operator new(
	    batch * ncb * sizeof(Cb), std::align_val_t(alignof(Cb))));
	std::vector<Cb *> cbs(batch * ncb);
	for (uint64_t done = 0; done < n;) {
		size_t k = n - done < batch ? (size_t)(n - done) : batch;
		srcs.clear();
		for (size_t i = 0; i < k; i++)
			srcs.emplace_back();
		for (size_t i = 0; i < k; i++) {
			std::stop_token tok = srcs[i].get_token();
			for (size_t j = 0; j < ncb; j++) {
				size_t k2 = i * ncb + j;
				cbs[k2] = new (&slots[k2])
				    Cb(tok, Bump{&counter});
			}
		}
		bench_begin();
		for (size_t i = 0; i < k; i++) {
			bool r = srcs[i].request_stop();
			BENCH_USE(r);
		}
		bench_end();
		for (size_t i = 0; i < k * ncb; i++)
			cbs[i]->~Cb();
		done += k;
	}
	srcs.clear();
	::operator delete(slots, std::align_val_t(alignof(Cb)));
}

void
bstd_linked(uint64_t n, unsigned)
{
	std::stop_source parent;
	std::stop_token ptok = parent.get_token();
	bench_begin();
	for (uint64_t i = 0; i < n; i++) {
		BENCH_ALIGNED std::stop_source child;
		BENCH_ALIGNED std::stop_callback<StopChild> link(
		    ptok, StopChild{&child});
		BENCH_ESCAPE(&child);
		BENCH_ESCAPE(&link);
	}
	bench_end();
}

void *
bstd_shared_new(void)
{
	return new std::stop_source();
}

/* One thread's half of the two-thread row (timed by the caller). */
void
bstd_reg_loop(void *ctx, uint64_t n)
{
	std::stop_token tok = static_cast<std::stop_source *>(ctx)->get_token();
	for (uint64_t i = 0; i < n; i++) {
		BENCH_ALIGNED Cb cb(tok, Bump{&counter});
		BENCH_ESCAPE(&cb);
	}
}

void
bstd_shared_free(void *ctx)
{
	delete static_cast<std::stop_source *>(ctx);
}

size_t
bstd_sizeof_source(void)
{
	return sizeof(std::stop_source);
}

size_t
bstd_sizeof_callback(void)
{
	return sizeof(Cb);
}

const char *
bstd_compiler(void)
{
#if defined(__clang__)
	return "clang++ " __clang_version__;
#else
	return "g++ " __VERSION__;
#endif
}
