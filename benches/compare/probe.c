/* benches/compare/probe.c: what the machine can move, and the shared random data.
 *
 * Compiled twice by benches/compare/build.sh: into the C driver (driver.c) and into
 * libcompare_probe.so, which compare.py loads with ctypes so that the probe runs inside the
 * same Python process as PyTorch, DeepSpeed, NumPy and flatopt, interleaved with them.
 *
 * The probe is a plain C loop with Adam's memory pattern: it reads p, g, m, v and writes p, m,
 * v (28 bytes per element) with trivial arithmetic, compiled with -O3 -march=native so the
 * compiler vectorizes it with the widest vectors the machine has. On 2 threads the range is cut
 * in two halves, one per pthread (threads are created per call: about 30 us, which only matters
 * far below the sizes where bandwidth is the limit).
 *
 * The data generator is here so that the C driver and the Python side fill their buffers with
 * bit-identical values from the same seed. Values are never zero.
 */
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

/* ---- random data ------------------------------------------------------------------------ */

/* splitmix64: one 64-bit state per buffer, seeded; fast enough to fill 1e8 floats in ~0.2 s. */
static inline uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Fills x[0..n) with uniform values in (-scale, scale), never 0: the 23-bit integer k maps to
 * (k + 0.5) / 2^23 - 0.5 (every step exact in f32), which is never 0. Two values per 64-bit
 * draw. */
void compare_fill_random(float *x, size_t n, uint64_t seed, float scale) {
    uint64_t s = seed * 0x2545F4914F6CDD1Dull + 1;
    size_t i = 0;
    const float inv = 1.0f / 8388608.0f;
    while (i < n) {
        uint64_t r = splitmix64(&s);
        for (int h = 0; h < 2 && i < n; h++, i++) {
            uint32_t k = (uint32_t)(r >> (h ? 41 : 9)) & 0x7FFFFFu;
            float u = ((float)k + 0.5f) * inv - 0.5f; /* exact in f32: never 0 */
            x[i] = 2.0f * scale * u;
        }
    }
}

/* ---- the bandwidth probe ---------------------------------------------------------------- */

static void probe_span(float *restrict p, const float *restrict g, float *restrict m,
                       float *restrict v, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float gi = g[i];
        float mi = m[i] + gi;
        float vi = v[i] + gi;
        m[i] = mi;
        v[i] = vi;
        p[i] = p[i] + (mi - vi); /* stays bounded: m and v move together */
    }
}

struct probe_job {
    float *p;
    const float *g;
    float *m;
    float *v;
    size_t n;
};

static void *probe_thread(void *arg) {
    struct probe_job *j = arg;
    probe_span(j->p, j->g, j->m, j->v, j->n);
    return NULL;
}

/* Adam's memory pattern over n elements on `threads` threads (1..16). Returns 0 on success. */
int compare_probe(float *p, const float *g, float *m, float *v, size_t n, int threads) {
    if (threads <= 1 || n < 1024) {
        probe_span(p, g, m, v, n);
        return 0;
    }
    if (threads > 16) threads = 16;
    struct probe_job jobs[16];
    pthread_t tid[16];
    size_t per = (n / (size_t)threads + 15) & ~(size_t)15; /* 64-byte multiples */
    size_t at = 0;
    int started = 0;
    for (int t = 0; t < threads; t++) {
        size_t len = t == threads - 1 ? n - at : (per < n - at ? per : n - at);
        jobs[t] = (struct probe_job){p + at, g + at, m + at, v + at, len};
        at += len;
    }
    for (int t = 1; t < threads; t++) {
        if (pthread_create(&tid[t], NULL, probe_thread, &jobs[t]) != 0) break;
        started = t;
    }
    probe_thread(&jobs[0]);
    for (int t = 1; t <= started; t++) pthread_join(tid[t], NULL);
    /* Anything a failed pthread_create left over runs here. */
    for (int t = started + 1; t < threads; t++) probe_thread(&jobs[t]);
    return 0;
}
