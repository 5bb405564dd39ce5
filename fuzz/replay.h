/*
 * Replay for the fuzz targets without libFuzzer (any compiler, any
 * sanitizer): every file of a corpus directory, then a number of seeded
 * random inputs, each fed to the target's entry point. Used by
 * tests/test_fuzz_replay_*.c; the targets abort on any disagreement.
 */
#ifndef CANCEL_FUZZ_REPLAY_H
#define CANCEL_FUZZ_REPLAY_H

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int (*replay_fn)(const uint8_t *data, size_t size);

/* The corpus directory @name next to this file's fuzz/ directory, found
 * from the test's own source path; CANCEL_FUZZ_CORPUS overrides it. */
static void
replay_corpus_dir(char *out, size_t n, const char *test_file,
                  const char *name)
{
	const char *env = getenv("CANCEL_FUZZ_CORPUS");
	if (env != NULL && *env != '\0') {
		snprintf(out, n, "%s", env);
		return;
	}
	const char *slash = strrchr(test_file, '/');
	int len = slash != NULL ? (int)(slash - test_file) : 1;
	snprintf(out, n, "%.*s/../fuzz/%s", len,
	         slash != NULL ? test_file : ".", name);
}

/* Feed every regular file of @dir to @fn. Returns the count, -1 if the
 * directory cannot be read. */
static long
replay_dir(const char *dir, replay_fn fn)
{
	DIR *d = opendir(dir);
	if (d == NULL)
		return -1;
	long count = 0;
	struct dirent *e;
	static uint8_t buf[1 << 16];
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.')
			continue;
		char path[8192];
		if (snprintf(path, sizeof(path), "%s/%s", dir, e->d_name) >=
		    (int)sizeof(path))
			continue;
		FILE *f = fopen(path, "rb");
		if (f == NULL)
			continue;
		size_t len = fread(buf, 1, sizeof(buf), f);
		fclose(f);
		fn(buf, len);
		count++;
	}
	closedir(d);
	return count;
}

/* Feed @n random inputs of up to @maxlen bytes from @seed. */
static long
replay_random(replay_fn fn, unsigned seed, long n, size_t maxlen)
{
	uint64_t x = (uint64_t)seed * 0x9e3779b97f4a7c15ull + 1;
	static uint8_t buf[1 << 12];
	if (maxlen > sizeof(buf))
		maxlen = sizeof(buf);
	for (long i = 0; i < n; i++) {
		x ^= x >> 12;
		x ^= x << 25;
		x ^= x >> 27;
		size_t len = (size_t)((x * 2685821657736338717ull) >> 40) %
		             (maxlen + 1);
		for (size_t j = 0; j < len; j++) {
			x ^= x >> 12;
			x ^= x << 25;
			x ^= x >> 27;
			buf[j] = (uint8_t)((x * 2685821657736338717ull) >> 56);
		}
		fn(buf, len);
	}
	return n;
}

/* A replay test's whole run: the corpus directory @corpus (located from
 * @test_file), then @nrand random inputs of up to @maxlen bytes from @seed
 * (CANCEL_FUZZ_RANDOM overrides @nrand); one summary line labelled @name
 * goes to stderr. Returns the number of corpus files fed, -1 if the
 * directory cannot be read. */
static long
replay_run(const char *name, const char *test_file, const char *corpus,
           replay_fn fn, long nrand, unsigned seed, size_t maxlen)
{
	char dir[4096];
	replay_corpus_dir(dir, sizeof(dir), test_file, corpus);
	long files = replay_dir(dir, fn);
	const char *e = getenv("CANCEL_FUZZ_RANDOM");
	if (e != NULL && *e != '\0')
		nrand = strtol(e, NULL, 0);
	long randoms = replay_random(fn, seed, nrand, maxlen);
	fprintf(stderr, "%s: %ld corpus files from %s, %ld random inputs\n",
	        name, files, dir, randoms);
	return files;
}

#endif /* CANCEL_FUZZ_REPLAY_H */
