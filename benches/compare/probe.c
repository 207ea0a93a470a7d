/* benches/compare/probe.c: what the machine can move, and the shared random data.
 *
 * Compiled twice by benches/compare/build.sh: into the C driver (driver.c) and into
 * libcompare_probe.so, which compare.py loads with ctypes so that the probe runs inside the
 * same Python process as PyTorch, DeepSpeed, NumPy and flatopt, interleaved with them.
 *
 * The probe is a plain C loop with Adam's memory pattern: it reads p, g, m, v and writes p, m,
 * v (28 bytes per element) with trivial arithmetic, compiled with -O3 -march=native so the
 * compiler vectorizes it with the widest vectors the machine has. On 2 threads the range is cut
 * in two halves, one per pthread. Threads are created per call (about 30 us), so below
 * PARALLEL_MIN elements, where that would dominate, the loops run on the calling thread alone,
 * as flatopt does below the same threshold (PARALLEL_MIN_ELEMENTS in src/engine.rs).
 *
 * Next to it, `compare_cadam` is the best plain C Adam a compiler gives: the library's formula
 * (per-step scalars computed once per call, one sqrt and one division per element) written as a
 * simple loop and left to gcc's auto-vectorizer with the same flags (-O3 -march=native
 * -fno-math-errno: the widest vectors, and FMA contraction, which gcc does by default in GNU C
 * mode). It is the in-cache bar: at sizes that fit in cache the update is bound by arithmetic.
 *
 * The data generator is here so that the C driver and the Python side fill their buffers with
 * bit-identical values from the same seed. Values are never zero.
 */
#include <math.h>
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

/* Fills g[0..n) with gradients of magnitude in [scale, 2 * scale) and random sign: bounded away
 * from zero so that coupled weight decay, g + wd * p, cannot cancel a constant gradient within
 * any run's reach (|p| would have to grow to scale / wd). Where it cancels, the moments decay
 * into subnormal floats, which every CPU computes slowly: the benchmark would time that regime
 * for whichever implementation runs enough steps, rather than the update. */
void compare_fill_gradient(float *g, size_t n, uint64_t seed, float scale) {
    compare_fill_random(g, n, seed, 1.0f); /* (-1, 1), never 0 */
    for (size_t i = 0; i < n; i++) {
        float u = g[i] < 0 ? -g[i] : g[i]; /* (0, 1) */
        g[i] = (g[i] < 0 ? -scale : scale) * (1.0f + u);
    }
}

/* Below this many elements the loops run on one thread (see the top of the file). */
#define PARALLEL_MIN ((size_t)1 << 19)

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

/* ---- the compiler-vectorized C Adam ------------------------------------------------------ */

/* Adam with b1 = 0.9, b2 = 0.999, eps = 1e-8: step = lr / (1 - b1^t) and
 * isb2 = 1 / sqrt(1 - b2^t) are computed by the caller once per step, as the library does. */
static void cadam_span(float *restrict p, const float *restrict g, float *restrict m,
                       float *restrict v, size_t n, float step, float isb2) {
    const float b1 = 0.9f, c1 = 0.1f, b2 = 0.999f, c2 = 0.001f, eps = 1e-8f;
    for (size_t i = 0; i < n; i++) {
        float gi = g[i];
        float mi = b1 * m[i] + c1 * gi;
        float vi = b2 * v[i] + c2 * (gi * gi);
        m[i] = mi;
        v[i] = vi;
        p[i] = p[i] - step * (mi / (sqrtf(vi) * isb2 + eps));
    }
}

/* ---- the arithmetic floor ----------------------------------------------------------------- */

/* What exact IEEE square root and division alone cost: p = m / (sqrt(v) + eps), the one sqrt and
 * the one division per element that Adam cannot avoid without approximations, with the least
 * memory traffic (read m and v, write p: 12 bytes per element). In cache it bounds every exact
 * Adam from below; compiled with the same flags as the C Adam. */
static void floor_span(float *restrict p, const float *restrict m, const float *restrict v,
                       size_t n) {
    for (size_t i = 0; i < n; i++) p[i] = m[i] / (sqrtf(v[i]) + 1e-8f);
}

/* One pass of the floor over n elements, one thread. */
void compare_floor(float *p, const float *m, const float *v, size_t n) { floor_span(p, m, v, n); }

/* ---- threads ---------------------------------------------------------------------------- */

struct probe_job {
    float *p;
    const float *g;
    float *m;
    float *v;
    size_t n;
    float step, isb2; /* cadam only */
    int adam;
};

static void *probe_thread(void *arg) {
    struct probe_job *j = arg;
    if (j->adam)
        cadam_span(j->p, j->g, j->m, j->v, j->n, j->step, j->isb2);
    else
        probe_span(j->p, j->g, j->m, j->v, j->n);
    return NULL;
}

static int run_jobs(float *p, const float *g, float *m, float *v, size_t n, int threads,
                    int adam, float step, float isb2);

/* Adam's memory pattern over n elements on `threads` threads (1..16). Returns 0 on success. */
int compare_probe(float *p, const float *g, float *m, float *v, size_t n, int threads) {
    return run_jobs(p, g, m, v, n, threads, 0, 0.0f, 0.0f);
}

/* Step `t` (1-based) of the compiler-vectorized C Adam at learning rate `lr`, on `threads`
 * threads (1..16). Returns 0 on success. */
int compare_cadam(float *p, const float *g, float *m, float *v, size_t n, int threads, double lr,
                  long t) {
    float step = (float)(lr / (1.0 - pow(0.9, (double)t)));
    float isb2 = (float)(1.0 / sqrt(1.0 - pow(0.999, (double)t)));
    return run_jobs(p, g, m, v, n, threads, 1, step, isb2);
}

static int run_jobs(float *p, const float *g, float *m, float *v, size_t n, int threads,
                    int adam, float step, float isb2) {
    if (threads <= 1 || n < PARALLEL_MIN) {
        struct probe_job j = {p, g, m, v, n, step, isb2, adam};
        probe_thread(&j);
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
        jobs[t] = (struct probe_job){p + at, g + at, m + at, v + at, len, step, isb2, adam};
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
