/*
 * What bench_core.c and its peers (bench_peers_glib.c, and the C++20
 * bench_peers_stdstop.cpp) share: the optimisation barriers and the
 * kernels' extern "C" declarations, so the caller and each definition are
 * checked against one list. Plain C99, also valid C++.
 *
 * Keeping the work alive: BENCH_ESCAPE(p) is an empty asm that takes p and
 * clobbers memory, so the compiler must assume p's object (and whatever it
 * points to, heap state included) is read and written there: nothing can be
 * deleted, merged or hoisted across it. BENCH_CLOBBER() is the same without
 * a pointer, BENCH_USE(x) makes a result live and BENCH_LAUNDER(p) hides
 * where p came from.
 */
#ifndef CANCEL_BENCH_UTIL_H
#define CANCEL_BENCH_UTIL_H

#include <stddef.h>
#include <stdint.h>

#define BENCH_ESCAPE(p) __asm__ __volatile__("" : : "r"(p) : "memory")
#define BENCH_CLOBBER() __asm__ __volatile__("" : : : "memory")
#define BENCH_USE(x) __asm__ __volatile__("" : : "r"(x))
#define BENCH_LAUNDER(p) __asm__ __volatile__("" : "+r"(p))

/*
 * Objects a loop works on start a cache line, in every column, so no row
 * pays for a line split that another does not.
 */
#ifdef __cplusplus
#define BENCH_ALIGNED alignas(64)
#else
#define BENCH_ALIGNED _Alignas(64)
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* bench_core.c owns the clock: these wrap the timed part of a kernel. */
void bench_begin(void);
void bench_end(void);
size_t bench_batch(unsigned ncb);

/* bench_peers_stdstop.cpp: std::stop_source and friends. */
void bstd_check(uint64_t n, unsigned arg);
void bstd_reg(uint64_t n, unsigned arg);
void bstd_source(uint64_t n, unsigned arg);
void bstd_cancel(uint64_t n, unsigned ncb);
void bstd_linked(uint64_t n, unsigned arg);
void *bstd_shared_new(void);
void bstd_reg_loop(void *ctx, uint64_t n);
void bstd_shared_free(void *ctx);
size_t bstd_sizeof_source(void);
size_t bstd_sizeof_callback(void);
const char *bstd_compiler(void);

/* bench_peers_glib.c: GCancellable. */
void bglib_check(uint64_t n, unsigned arg);
void bglib_reg(uint64_t n, unsigned arg);
void bglib_source(uint64_t n, unsigned arg);
void bglib_cancel(uint64_t n, unsigned ncb);
void *bglib_shared_new(void);
void bglib_reg_loop(void *ctx, uint64_t n);
void bglib_shared_free(void *ctx);
const char *bglib_version(void);

#ifdef __cplusplus
}
#endif

#endif /* CANCEL_BENCH_UTIL_H */
