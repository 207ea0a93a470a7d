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
 * `compare_probe_states` is the same probe for the other access patterns of the optimizer
 * family (0 to 3 state buffers: 12, 20, 28 or 36 bytes per element), for compare.py --family;
 * `compare_probe_passes` those of the rules that take passes before their update (LAMB, LARS,
 * NovoGrad: per-buffer norms; Adafactor: factored second moments), at the end of the file.
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
#include <stdlib.h>

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

/* The memory pattern of a rule that keeps `states` state buffers (0 to 3: SGD, momentum / Lion /
 * Adagrad, Adam and most of the family, AMSGrad): reads p, g and each state buffer, writes p and
 * each state buffer, 12 + 8 * states bytes per element, with trivial arithmetic (halving keeps
 * every value bounded however many steps run). The buffers after the first `states` are not
 * touched (may be NULL). */
static void states_span(float *restrict p, const float *restrict g, float *restrict s0,
                        float *restrict s1, float *restrict s2, size_t n, int states) {
    switch (states) {
    case 0:
        for (size_t i = 0; i < n; i++) p[i] = 0.5f * p[i] + g[i];
        break;
    case 1:
        for (size_t i = 0; i < n; i++) {
            float a = 0.5f * s0[i] + g[i];
            s0[i] = a;
            p[i] = 0.5f * p[i] + a;
        }
        break;
    case 2:
        for (size_t i = 0; i < n; i++) {
            float a = 0.5f * s0[i] + g[i];
            float b = 0.5f * s1[i] + g[i];
            s0[i] = a;
            s1[i] = b;
            p[i] = 0.5f * p[i] + (a - b);
        }
        break;
    default:
        for (size_t i = 0; i < n; i++) {
            float a = 0.5f * s0[i] + g[i];
            float b = 0.5f * s1[i] + g[i];
            float c = 0.5f * s2[i] + g[i];
            s0[i] = a;
            s1[i] = b;
            s2[i] = c;
            p[i] = 0.5f * p[i] + (a - b) + c;
        }
        break;
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

/* ---- the mixed-precision probe ------------------------------------------------------------ */

/* The memory pattern of Adam with bf16 gradients and a bf16 copy of the parameters written in
 * the same pass (issue 15): read p, m, v (f32) and g (bf16), write p, m, v and c (bf16), 28
 * bytes per element, with trivial arithmetic (the bf16 widening and a truncating narrowing:
 * shifts). */
static void probe_mixed_span(float *restrict p, const uint16_t *restrict g, float *restrict m,
                             float *restrict v, uint16_t *restrict c, size_t n) {
    for (size_t i = 0; i < n; i++) {
        union { uint32_t u; float f; } gi = {.u = (uint32_t)g[i] << 16}, pi;
        m[i] += gi.f;
        v[i] += gi.f;
        pi.f = p[i] + (m[i] - v[i]);
        p[i] = pi.f;
        c[i] = (uint16_t)(pi.u >> 16);
    }
}

struct mixed_job {
    float *p;
    const uint16_t *g;
    float *m, *v;
    uint16_t *c;
    size_t n;
};

static void *mixed_thread(void *arg) {
    struct mixed_job *j = arg;
    probe_mixed_span(j->p, j->g, j->m, j->v, j->c, j->n);
    return NULL;
}

/* The mixed-precision pattern over n elements on 1 or 2 threads (halves), as compare_probe. */
int compare_probe_mixed(float *p, const uint16_t *g, float *m, float *v, uint16_t *c, size_t n,
                        int threads) {
    if (threads <= 1 || n < PARALLEL_MIN) {
        probe_mixed_span(p, g, m, v, c, n);
        return 0;
    }
    size_t half = (n / 2 + 31) & ~(size_t)31; /* 64-byte multiples of both element sizes */
    struct mixed_job hi = {p + half, g + half, m + half, v + half, c + half, n - half};
    pthread_t tid;
    int started = pthread_create(&tid, NULL, mixed_thread, &hi) == 0;
    probe_mixed_span(p, g, m, v, c, half);
    if (started)
        pthread_join(tid, NULL);
    else
        mixed_thread(&hi);
    return 0;
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

enum job_kind { JOB_PROBE, JOB_CADAM, JOB_STATES };

struct probe_job {
    float *p;
    const float *g;
    float *m;
    float *v;
    float *x;   /* JOB_STATES: the third state buffer */
    size_t n;
    float step, isb2; /* JOB_CADAM only */
    enum job_kind kind;
    int states; /* JOB_STATES only */
};

static void *probe_thread(void *arg) {
    struct probe_job *j = arg;
    switch (j->kind) {
    case JOB_CADAM:
        cadam_span(j->p, j->g, j->m, j->v, j->n, j->step, j->isb2);
        break;
    case JOB_STATES:
        states_span(j->p, j->g, j->m, j->v, j->x, j->n, j->states);
        break;
    default:
        probe_span(j->p, j->g, j->m, j->v, j->n);
        break;
    }
    return NULL;
}

static int run_jobs(struct probe_job whole, int threads);

/* Adam's memory pattern over n elements on `threads` threads (1..16). Returns 0 on success. */
int compare_probe(float *p, const float *g, float *m, float *v, size_t n, int threads) {
    struct probe_job j = {p, g, m, v, NULL, n, 0.0f, 0.0f, JOB_PROBE, 0};
    return run_jobs(j, threads);
}

/* The memory pattern of a rule with `states` state buffers (0..3, see states_span: s0, s1, s2
 * in that order; those past `states` may be NULL) over n elements on `threads` threads (1..16).
 * Returns 0 on success, -1 for a `states` outside 0..3 or a missing buffer. */
int compare_probe_states(float *p, const float *g, float *s0, float *s1, float *s2, size_t n,
                         int threads, int states) {
    float *bufs[3] = {s0, s1, s2};
    if (states < 0 || states > 3 || p == NULL || g == NULL) return -1;
    for (int k = 0; k < states; k++)
        if (bufs[k] == NULL) return -1;
    struct probe_job j = {p, g, s0, s1, s2, n, 0.0f, 0.0f, JOB_STATES, states};
    return run_jobs(j, threads);
}

/* Step `t` (1-based) of the compiler-vectorized C Adam at learning rate `lr`, on `threads`
 * threads (1..16). Returns 0 on success. */
int compare_cadam(float *p, const float *g, float *m, float *v, size_t n, int threads, double lr,
                  long t) {
    float step = (float)(lr / (1.0 - pow(0.9, (double)t)));
    float isb2 = (float)(1.0 / sqrt(1.0 - pow(0.999, (double)t)));
    struct probe_job j = {p, g, m, v, NULL, n, step, isb2, JOB_CADAM, 0};
    return run_jobs(j, threads);
}

/* `b` advanced by `at` elements (NULL stays NULL: a state buffer the pattern does not use). */
static float *shift(float *b, size_t at) { return b == NULL ? NULL : b + at; }

static int run_jobs(struct probe_job whole, int threads) {
    size_t n = whole.n;
    if (threads <= 1 || n < PARALLEL_MIN) {
        probe_thread(&whole);
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
        jobs[t] = whole;
        jobs[t].p = whole.p + at;
        jobs[t].g = whole.g + at;
        jobs[t].m = shift(whole.m, at);
        jobs[t].v = shift(whole.v, at);
        jobs[t].x = shift(whole.x, at);
        jobs[t].n = len;
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

/* ---- the patterns of the rules with passes before the update ------------------------------ */

/* LAMB, LARS and NovoGrad need norms of each buffer before they update it, Adafactor its row
 * and column averages and two more norms (docs/numerics.md, "Per-buffer norms" and "Adafactor",
 * "Passes"): their probe is the same passes with trivial arithmetic, each pass split over the
 * threads, the partial sums added between passes (a pass starts when the one before it is done
 * everywhere, as the update needs the norms). Reductions keep 16 lanes so that gcc vectorizes
 * them without reassociating (no -ffast-math); their order does not matter here. Bytes per
 * element (reads + writes):
 *
 *   PASSES_LAMB       read g, p, m, v; write m, v (sums of squares of u and p) | read p, m, v;
 *                     write p                                                    24 + 16 = 40
 *   PASSES_LARS       read g, p (sums of squares) | read g, p, m; write m, p      8 + 20 = 28
 *   PASSES_NOVOGRAD   read g (sum of squares) | read g, p, m; write m, p          4 + 20 = 24
 *   PASSES_ADAFACTOR  a row-major rows x cols matrix (n = rows * cols): read p (sum of squares)
 *                     | read g (row sums, column sums) | read g (sum of squares of u) | read g,
 *                     p; write p                                          4 + 4 + 4 + 12 = 24
 *
 * Adafactor's rows are split over the threads, each with its own column sums (cols floats),
 * added after the pass; its other state is rows + cols floats. */
enum passes { PASSES_LAMB, PASSES_LARS, PASSES_NOVOGRAD, PASSES_ADAFACTOR };

#define LANES 16

struct pass_job {
    float *p;
    const float *g;
    float *m, *v;
    size_t lo, hi;    /* elements, or rows for Adafactor */
    size_t cols;      /* Adafactor */
    float *row, *col; /* Adafactor: row sums (all rows), this job's column sums */
    const float *rf, *cf; /* Adafactor: row and column factors */
    float c;          /* the scalar the update pass uses */
    enum passes kind;
    int pass;
    float s0, s1;     /* this job's sums */
};

static float lanes_total(const float *acc) {
    float s = 0.0f;
    for (int j = 0; j < LANES; j++) s += acc[j];
    return s;
}

/* Sum of squares of x[0..n) in 16 lanes. */
static float sumsq16(const float *restrict x, size_t n) {
    float acc[LANES] = {0};
    size_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int j = 0; j < LANES; j++) acc[j] += x[i + j] * x[i + j];
    float s = lanes_total(acc);
    for (; i < n; i++) s += x[i] * x[i];
    return s;
}

/* LAMB's first pass over [0, n): new moments written, sums of squares of u = a + b and of p. */
static void lamb_first(const float *restrict p, const float *restrict g, float *restrict m,
                       float *restrict v, size_t n, float *su, float *sp) {
    float au[LANES] = {0}, ap[LANES] = {0};
    size_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int j = 0; j < LANES; j++) {
            float a = 0.5f * m[i + j] + g[i + j];
            float b = 0.5f * v[i + j] + g[i + j];
            m[i + j] = a;
            v[i + j] = b;
            au[j] += (a + b) * (a + b);
            ap[j] += p[i + j] * p[i + j];
        }
    float u = lanes_total(au), q = lanes_total(ap);
    for (; i < n; i++) {
        float a = 0.5f * m[i] + g[i];
        float b = 0.5f * v[i] + g[i];
        m[i] = a;
        v[i] = b;
        u += (a + b) * (a + b);
        q += p[i] * p[i];
    }
    *su = u;
    *sp = q;
}

/* The update pass of LARS and NovoGrad: read g, p, m; write m, p. */
static void trace_update(float *restrict p, const float *restrict g, float *restrict m, size_t n,
                         float c) {
    for (size_t i = 0; i < n; i++) {
        float a = 0.5f * m[i] + c * g[i];
        m[i] = a;
        p[i] = 0.5f * p[i] + a;
    }
}

/* Adafactor's row sums and column sums over rows [lo, hi). */
static void factor_sums(const float *restrict g, size_t lo, size_t hi, size_t cols,
                        float *restrict row, float *restrict col) {
    for (size_t r = lo; r < hi; r++) {
        const float *restrict x = g + r * cols;
        row[r] = sumsq16(x, cols);
        for (size_t j = 0; j < cols; j++) col[j] += x[j] * x[j];
    }
}

/* Sum of squares of u = g * rf_r * cf over rows [lo, hi). */
static float factor_u_sumsq(const float *restrict g, size_t lo, size_t hi, size_t cols,
                            const float *restrict rf, const float *restrict cf) {
    float acc[LANES] = {0}, s = 0.0f;
    for (size_t r = lo; r < hi; r++) {
        const float *restrict x = g + r * cols;
        float f = rf[r];
        size_t j = 0;
        for (; j + LANES <= cols; j += LANES)
            for (int l = 0; l < LANES; l++) {
                float u = x[j + l] * f * cf[j + l];
                acc[l] += u * u;
            }
        for (; j < cols; j++) {
            float u = x[j] * f * cf[j];
            s += u * u;
        }
    }
    return s + lanes_total(acc);
}

/* Adafactor's update pass over rows [lo, hi): read g, p; write p. */
static void factor_update(float *restrict p, const float *restrict g, size_t lo, size_t hi,
                          size_t cols, const float *restrict rf, const float *restrict cf,
                          float c) {
    for (size_t r = lo; r < hi; r++) {
        float *restrict q = p + r * cols;
        const float *restrict x = g + r * cols;
        float f = c * rf[r];
        for (size_t j = 0; j < cols; j++) q[j] = 0.5f * q[j] + x[j] * f * cf[j];
    }
}

static void *pass_thread(void *arg) {
    struct pass_job *j = arg;
    size_t lo = j->lo, len = j->hi - j->lo, cols = j->cols;
    j->s0 = j->s1 = 0.0f;
    switch (j->kind * 4 + j->pass) {
    case PASSES_LAMB * 4 + 0:
        lamb_first(j->p + lo, j->g + lo, j->m + lo, j->v + lo, len, &j->s0, &j->s1);
        break;
    case PASSES_LAMB * 4 + 1: {
        float *restrict p = j->p + lo;
        const float *restrict m = j->m + lo, *restrict v = j->v + lo;
        for (size_t i = 0; i < len; i++) p[i] = 0.5f * p[i] + j->c * (m[i] + v[i]);
        break;
    }
    case PASSES_LARS * 4 + 0:
        j->s0 = sumsq16(j->g + lo, len);
        j->s1 = sumsq16(j->p + lo, len);
        break;
    case PASSES_NOVOGRAD * 4 + 0:
        j->s0 = sumsq16(j->g + lo, len);
        break;
    case PASSES_LARS * 4 + 1:
    case PASSES_NOVOGRAD * 4 + 1:
        trace_update(j->p + lo, j->g + lo, j->m + lo, len, j->c);
        break;
    case PASSES_ADAFACTOR * 4 + 0:
        j->s1 = sumsq16(j->p + lo * cols, len * cols);
        break;
    case PASSES_ADAFACTOR * 4 + 1:
        factor_sums(j->g, j->lo, j->hi, cols, j->row, j->col);
        break;
    case PASSES_ADAFACTOR * 4 + 2:
        j->s0 = factor_u_sumsq(j->g, j->lo, j->hi, cols, j->rf, j->cf);
        break;
    default:
        factor_update(j->p, j->g, j->lo, j->hi, cols, j->rf, j->cf, j->c);
        break;
    }
    return NULL;
}

/* Pass `pass` of every job (jobs[0] on the calling thread); returns the sums over the jobs. */
static void run_pass(struct pass_job *jobs, int k, int pass, float *s0, float *s1) {
    pthread_t tid[16];
    int started = 0;
    for (int t = 0; t < k; t++) jobs[t].pass = pass;
    for (int t = 1; t < k; t++) {
        if (pthread_create(&tid[t], NULL, pass_thread, &jobs[t]) != 0) break;
        started = t;
    }
    pass_thread(&jobs[0]);
    for (int t = 1; t <= started; t++) pthread_join(tid[t], NULL);
    for (int t = started + 1; t < k; t++) pass_thread(&jobs[t]);
    *s0 = *s1 = 0.0f;
    for (int t = 0; t < k; t++) {
        *s0 += jobs[t].s0;
        *s1 += jobs[t].s1;
    }
}

/* The passes of `kind` (enum passes: 0 LAMB, 1 LARS, 2 NovoGrad, 3 Adafactor) over n elements
 * on `threads` threads (1..16; one below PARALLEL_MIN elements, as compare_probe): p and g, m
 * (LAMB, LARS, NovoGrad) and v (LAMB) hold n floats; Adafactor's n elements are a row-major
 * matrix of `cols` columns (n a multiple of cols) and it allocates its rows + cols floats of
 * state per call (and cols per thread). Returns 0 on success, -1 for a bad kind, a missing
 * buffer, a bad shape or a failed allocation. */
int compare_probe_passes(float *p, const float *g, float *m, float *v, size_t n, size_t cols,
                         int threads, int kind) {
    if (p == NULL || g == NULL || kind < PASSES_LAMB || kind > PASSES_ADAFACTOR) return -1;
    if ((kind != PASSES_ADAFACTOR && m == NULL) || (kind == PASSES_LAMB && v == NULL)) return -1;
    if (kind == PASSES_ADAFACTOR && (cols == 0 || n % cols != 0)) return -1;
    int k = threads <= 1 || n < PARALLEL_MIN ? 1 : (threads > 16 ? 16 : threads);
    size_t units = kind == PASSES_ADAFACTOR ? n / cols : n;
    size_t per = kind == PASSES_ADAFACTOR ? (units + (size_t)k - 1) / (size_t)k
                                          : (n / (size_t)k + 15) & ~(size_t)15;
    struct pass_job jobs[16];
    /* Adafactor: row sums, row factors, column factors, then each job's column sums. */
    float *row = NULL, *rf = NULL, *cf = NULL, *col = NULL;
    if (kind == PASSES_ADAFACTOR) {
        row = calloc(2 * units + cols * ((size_t)k + 1), sizeof(float));
        if (row == NULL) return -1;
        rf = row + units;
        cf = rf + units;
        col = cf + cols;
    }
    size_t at = 0;
    for (int t = 0; t < k; t++) {
        size_t len = t == k - 1 ? units - at : (per < units - at ? per : units - at);
        struct pass_job j = {p, g, m, v, at, at + len, cols, row,
                             col == NULL ? NULL : col + (size_t)t * cols, rf, cf, 0.0f,
                             (enum passes)kind, 0, 0.0f, 0.0f};
        jobs[t] = j;
        at += len;
    }
    float s0, s1;
    run_pass(jobs, k, 0, &s0, &s1);
    if (kind != PASSES_ADAFACTOR) {
        float c = 1.0f / (1.0f + sqrtf(s0) + sqrtf(s1) / (float)n);
        for (int t = 0; t < k; t++) jobs[t].c = c;
        run_pass(jobs, k, 1, &s0, &s1);
        return 0;
    }
    float sp = s1;
    run_pass(jobs, k, 1, &s0, &s1);
    for (size_t c = 0; c < cols; c++) {
        float s = 0.0f;
        for (int t = 0; t < k; t++) s += col[(size_t)t * cols + c];
        cf[c] = 1.0f / (1.0f + s);
    }
    for (size_t r = 0; r < units; r++) rf[r] = 1.0f / (1.0f + row[r]);
    run_pass(jobs, k, 2, &s0, &s1);
    float c = 1.0f / (1.0f + sqrtf(s0 / (float)n) + sqrtf(sp / (float)n));
    for (int t = 0; t < k; t++) jobs[t].c = c;
    run_pass(jobs, k, 3, &s0, &s1);
    free(row);
    return 0;
}
