/* benches/compare/driver.c: flatopt through its C ABI, without Python, next to the bandwidth
 * probe, and the small-model latency benchmark. Built by benches/compare/build.sh against
 * target/release/libflatopt.so; compare.py runs it and merges its JSON lines.
 *
 *   driver bench N THREADS [REPS [MIN_SECONDS [VARIANTS]]]
 *       Interleaved repetitions of: the probe (probe.c), the compiler-vectorized C Adam
 *       (probe.c), the exact sqrt + division floor (probe.c, one thread, sizes <= 1e6 only),
 *       flatopt Adam with the non-finite check
 *       off (propagate), flatopt Adam with the default check (skip), and the full pipeline
 *       Lookahead(Adam, k=5, alpha=0.5) + global-norm clipping + weight decay 1e-4.
 *       VARIANTS: comma list of probe,cadam,floor,adam-propagate,adam-skip,pipeline (default
 *       all).
 *       One JSON line per variant: seconds per step of each repetition.
 *   driver latency [BUFFERS [TOTAL [STEPS]]]
 *       One full Lookahead(Adam) + clip-norm step over BUFFERS buffers totalling TOTAL params
 *       (default 10 x 1,000), STEPS times (default 100,000) on the caller's thread: p50, p99,
 *       p99.9 and max of the per-step time, and the heap allocations counted during the steps
 *       (malloc & co. are wrapped in this program; a canary checks that the wrapping works).
 *   driver check
 *       Quick sanity checks (make test): flatopt Adam against a plain C Adam on random data,
 *       the probe and the pipeline on tiny sizes give finite numbers. No timing assertions.
 *
 * All data comes from compare_fill_random (probe.c) with the same seeds as compare.py, so the C
 * and Python runs work on identical values.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <flatopt.h>

void compare_fill_random(float *x, size_t n, uint64_t seed, float scale);
void compare_fill_gradient(float *g, size_t n, uint64_t seed, float scale);
int compare_probe(float *p, const float *g, float *m, float *v, size_t n, int threads);
void compare_floor(float *p, const float *m, const float *v, size_t n);
int compare_cadam(float *p, const float *g, float *m, float *v, size_t n, int threads, double lr,
                  long t);

/* Seeds and scales shared with compare.py (keep in sync: DATA in compare.py). */
#define SEED_P 1
#define SEED_G 2
#define SEED_M 3
#define SEED_V 4
#define SCALE_P 1.0f
#define SCALE_G 0.01f /* latency benchmark and check: uniform in (-SCALE_G, SCALE_G) */
#define GRAD_SCALE 1.0f /* bench: magnitudes in [GRAD_SCALE, 2 GRAD_SCALE), compare_fill_gradient */
#define SCALE_M 0.001f
#define SCALE_V 0.001f
/* Hyperparameters shared with compare.py. */
#define LR 1e-3
#define WEIGHT_DECAY 1e-4
#define SYNC_PERIOD 5
#define ALPHA 0.5

/* ---- heap allocation counting ----------------------------------------------------------- */
/* The program defines malloc & co. (exported with -rdynamic), so libflatopt's allocations go
 * through them; they forward to glibc's __libc_* entry points. */
extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern void __libc_free(void *);

static atomic_int counting;
static atomic_long allocations;

static inline void count_one(void) {
    if (atomic_load_explicit(&counting, memory_order_relaxed))
        atomic_fetch_add_explicit(&allocations, 1, memory_order_relaxed);
}
void *malloc(size_t n) { count_one(); return __libc_malloc(n); }
void *calloc(size_t a, size_t b) { count_one(); return __libc_calloc(a, b); }
void *realloc(void *p, size_t n) { count_one(); return __libc_realloc(p, n); }
void free(void *p) { __libc_free(p); }
void *memalign(size_t a, size_t n) { count_one(); return __libc_memalign(a, n); }
void *aligned_alloc(size_t a, size_t n) { count_one(); return __libc_memalign(a, n); }
int posix_memalign(void **out, size_t a, size_t n) {
    count_one();
    void *r = __libc_memalign(a, n);
    if (!r) return ENOMEM;
    *out = r;
    return 0;
}

/* ---- helpers ------------------------------------------------------------------------------ */

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static float *alloc_floats(size_t n) {
    /* 64-byte aligned, like PyTorch's and NumPy's large allocations. */
    void *p = NULL;
    if (posix_memalign(&p, 64, (n ? n : 1) * sizeof(float)) != 0) {
        fprintf(stderr, "driver: cannot allocate %zu floats\n", n);
        exit(2);
    }
    return p;
}

static float *random_floats(size_t n, uint64_t seed, float scale) {
    float *x = alloc_floats(n);
    compare_fill_random(x, n, seed, scale);
    return x;
}

static void die(const char *what, flatopt_status st) {
    fprintf(stderr, "driver: %s: %s (%s)\n", what, flatopt_status_str(st),
            flatopt_last_error_message());
    exit(2);
}

/* max_norm of the pipeline: 4 * GRAD_SCALE * sqrt(n) is above the gradients' norm
 * (below 2 * GRAD_SCALE * sqrt(n)), so no clipping happens and the gradients stay as they are:
 * PyTorch's clip_grad_norm_ multiplies by the clamped factor (1.0) anyway, flatopt multiplies
 * in registers when it clips; the work is the same either way. */
static double pipeline_max_norm(size_t n) { return 4.0 * GRAD_SCALE * sqrt((double)n); }

/* What make_opt configures: plain Adam; Lookahead(Adam) + clip-norm (the latency benchmark);
 * the benchmark pipeline, which adds coupled weight decay. */
enum { CFG_ADAM, CFG_LOOKAHEAD_CLIP, CFG_PIPELINE };

static flatopt_optimizer *make_opt(int kind, int nonfinite, int threads, float **params,
                                   const float **grads, const size_t *lens, size_t count,
                                   double max_norm) {
    flatopt_config cfg;
    flatopt_config_init(&cfg, sizeof cfg);
    cfg.lr = LR;
    cfg.nonfinite = (uint32_t)nonfinite;
    cfg.num_threads = (uint32_t)threads;
    if (kind != CFG_ADAM) {
        cfg.lookahead = 1;
        cfg.sync_period = SYNC_PERIOD;
        cfg.alpha = ALPHA;
        cfg.grad_clip_norm = max_norm;
    }
    if (kind == CFG_PIPELINE) cfg.weight_decay = WEIGHT_DECAY;
    flatopt_optimizer *opt = NULL;
    flatopt_status st = flatopt_optimizer_new(&cfg, &opt);
    if (st != FLATOPT_OK) die("flatopt_optimizer_new", st);
    for (size_t i = 0; i < count; i++) {
        st = flatopt_optimizer_add_param(opt, params[i], grads[i], lens[i]);
        if (st != FLATOPT_OK) die("flatopt_optimizer_add_param", st);
    }
    return opt;
}

/* ---- bench -------------------------------------------------------------------------------- */

enum { V_PROBE, V_CADAM, V_FLOOR, V_ADAM_PROP, V_ADAM_SKIP, V_PIPELINE, V_COUNT };
static const char *v_key[V_COUNT] = {"probe",          "cadam",     "floor",
                                     "adam-propagate", "adam-skip", "pipeline"};
static const char *v_impl[V_COUNT] = {"c-probe",   "c-adam",    "c-floor",
                                      "flatopt-c", "flatopt-c", "flatopt-c"};
static const char *v_work[V_COUNT] = {"probe", "adam", "floor", "adam", "adam-skip", "pipeline"};

struct bench {
    size_t n;
    int threads;
    float *p, *g; /* flatopt's p; the shared g */
    float *pp, *pm, *pv; /* the probe's own p, m, v */
    float *cp, *cm, *cv; /* the C Adam's own p, m, v */
    long ct;             /* the C Adam's step counter */
    float *fp, *fm, *fv; /* the floor's output and inputs */
    flatopt_optimizer *opt[V_COUNT];
};

static void run_once(struct bench *b, int v) {
    if (v == V_PROBE) {
        compare_probe(b->pp, b->g, b->pm, b->pv, b->n, b->threads);
        return;
    }
    if (v == V_FLOOR) {
        compare_floor(b->fp, b->fm, b->fv, b->n);
        return;
    }
    if (v == V_CADAM) {
        compare_cadam(b->cp, b->g, b->cm, b->cv, b->n, b->threads, LR, ++b->ct);
        return;
    }
    flatopt_status st = flatopt_optimizer_step(b->opt[v]);
    if (st != FLATOPT_OK) die("flatopt_optimizer_step", st);
}

static int cmd_bench(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: driver bench N THREADS [REPS [MIN_SECONDS [VARIANTS]]]\n");
        return 2;
    }
    struct bench b = {0};
    b.n = (size_t)strtod(argv[2], NULL);
    b.threads = atoi(argv[3]);
    int reps = argc > 4 ? atoi(argv[4]) : 5;
    double min_time = argc > 5 ? atof(argv[5]) : 0.2;
    int want[V_COUNT] = {1, 1, 1, 1, 1, 1};
    if (argc > 6) {
        for (int v = 0; v < V_COUNT; v++) want[v] = strstr(argv[6], v_key[v]) != NULL;
    }
    b.g = alloc_floats(b.n);
    compare_fill_gradient(b.g, b.n, SEED_G, GRAD_SCALE);
    b.p = random_floats(b.n, SEED_P, SCALE_P);
    if (want[V_PROBE]) {
        b.pp = random_floats(b.n, SEED_P, SCALE_P);
        b.pm = random_floats(b.n, SEED_M, SCALE_M);
        b.pv = random_floats(b.n, SEED_V, SCALE_V);
    }
    /* The floor is an in-cache, one-thread measure: skipped where it says nothing. */
    if (b.n > 1000000 || b.threads != 1) want[V_FLOOR] = 0;
    if (want[V_FLOOR]) {
        b.fp = random_floats(b.n, SEED_P, SCALE_P);
        b.fm = random_floats(b.n, SEED_M, SCALE_M);
        b.fv = random_floats(b.n, SEED_V, SCALE_V);
        for (size_t i = 0; i < b.n; i++) b.fv[i] = fabsf(b.fv[i]); /* a second moment */
    }
    if (want[V_CADAM]) {
        /* Adam state starts at zero as in a fresh optimizer; p and g are random. */
        b.cp = random_floats(b.n, SEED_P, SCALE_P);
        b.cm = calloc(b.n ? b.n : 1, sizeof(float));
        b.cv = calloc(b.n ? b.n : 1, sizeof(float));
        if (!b.cm || !b.cv) {
            fprintf(stderr, "driver: cannot allocate the C Adam state\n");
            return 2;
        }
    }
    const float *gs[1] = {b.g};
    float *ps[1] = {b.p};
    size_t lens[1] = {b.n};
    /* The flatopt variants share p and g (each has its own optimizer state). */
    if (want[V_ADAM_PROP])
        b.opt[V_ADAM_PROP] =
            make_opt(CFG_ADAM, FLATOPT_NONFINITE_PROPAGATE, b.threads, ps, gs, lens, 1, 0);
    if (want[V_ADAM_SKIP])
        b.opt[V_ADAM_SKIP] =
            make_opt(CFG_ADAM, FLATOPT_NONFINITE_SKIP, b.threads, ps, gs, lens, 1, 0);
    if (want[V_PIPELINE]) {
        b.opt[V_PIPELINE] = make_opt(CFG_PIPELINE, FLATOPT_NONFINITE_SKIP, b.threads, ps, gs,
                                     lens, 1, pipeline_max_norm(b.n));
    }

    /* Calibration: warm up (page faults, state first touch, pool start) and pick the number of
     * steps per sample: at least min_time seconds, at least 5, a multiple of SYNC_PERIOD so that
     * each sample holds the same share of Lookahead syncs. */
    long steps[V_COUNT] = {0};
    for (int v = 0; v < V_COUNT; v++) {
        if (!want[v]) continue;
        double t0 = now();
        int k = 0;
        do {
            run_once(&b, v);
            k++;
        } while (k < 3 || (now() - t0 < 0.05 && k < 100000));
        double per = (now() - t0) / k;
        long s = (long)ceil(min_time / per);
        if (s < 5) s = 5;
        s = (s + SYNC_PERIOD - 1) / SYNC_PERIOD * SYNC_PERIOD;
        steps[v] = s;
    }
    double *samples = calloc((size_t)reps * V_COUNT, sizeof(double));
    for (int r = 0; r < reps; r++) {
        for (int v = 0; v < V_COUNT; v++) {
            if (!want[v]) continue;
            run_once(&b, v); /* one untimed step after switching variants */
            for (long k = 1; k < SYNC_PERIOD; k++) run_once(&b, v);
            double t0 = now();
            for (long k = 0; k < steps[v]; k++) run_once(&b, v);
            samples[r * V_COUNT + v] = (now() - t0) / (double)steps[v];
        }
    }
    const char *tier = flatopt_simd_tier_name(flatopt_default_simd_tier());
    for (int v = 0; v < V_COUNT; v++) {
        if (!want[v]) continue;
        printf("{\"source\": \"c-driver\", \"impl\": \"%s\", \"workload\": \"%s\", \"n\": %zu, "
               "\"threads\": %d, \"steps\": %ld, \"tier\": \"%s\", \"sec_per_step\": [",
               v_impl[v], v_work[v], b.n, b.threads, steps[v], tier);
        for (int r = 0; r < reps; r++)
            printf("%s%.9g", r ? ", " : "", samples[r * V_COUNT + v]);
        printf("]}\n");
    }
    fflush(stdout);
    for (int v = 0; v < V_COUNT; v++) flatopt_optimizer_free(b.opt[v]);
    free(samples);
    free(b.g);
    free(b.p);
    free(b.pp);
    free(b.pm);
    free(b.pv);
    free(b.cp);
    free(b.cm);
    free(b.cv);
    free(b.fp);
    free(b.fm);
    free(b.fv);
    return 0;
}

/* ---- latency ------------------------------------------------------------------------------ */

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static int cmd_latency(int argc, char **argv) {
    size_t nbuf = argc > 2 ? (size_t)atol(argv[2]) : 10;
    size_t total = argc > 3 ? (size_t)atol(argv[3]) : 10000;
    long nsteps = argc > 4 ? atol(argv[4]) : 100000;
    long warmup = nsteps / 10 > 1000 ? nsteps / 10 : 1000;
    if (nbuf < 1 || nbuf > 1024 || total < nbuf || nsteps < 100) {
        fprintf(stderr, "driver latency: bad arguments\n");
        return 2;
    }
    float *params[1024];
    const float *grads[1024];
    size_t lens[1024];
    for (size_t i = 0; i < nbuf; i++) {
        /* Sizes differ a little so the buffers are not all the same shape; they add up to total. */
        lens[i] = total / nbuf + (i < total % nbuf);
        params[i] = random_floats(lens[i], SEED_P + 100 * i, SCALE_P);
        grads[i] = random_floats(lens[i], SEED_G + 100 * i, SCALE_G);
    }
    /* Clipping is active here (max_norm below the gradients' norm): the worst case. */
    double max_norm = 0.5 * SCALE_G * sqrt((double)total / 3.0);
    int64_t *t = malloc((size_t)nsteps * sizeof(int64_t));

    /* Canary: the counter must see the allocations of flatopt_optimizer_new. */
    atomic_store(&allocations, 0);
    atomic_store(&counting, 1);
    flatopt_optimizer *canary = make_opt(CFG_LOOKAHEAD_CLIP, FLATOPT_NONFINITE_SKIP, 1, params,
                                         grads, lens, nbuf, max_norm);
    atomic_store(&counting, 0);
    long canary_allocs = atomic_load(&allocations);
    flatopt_optimizer_free(canary);

    flatopt_optimizer *opt = make_opt(CFG_LOOKAHEAD_CLIP, FLATOPT_NONFINITE_SKIP, 1, params, grads,
                                      lens, nbuf, max_norm);
    for (long k = 0; k < warmup; k++) {
        flatopt_status st = flatopt_optimizer_step(opt);
        if (st != FLATOPT_OK) die("flatopt_optimizer_step", st);
    }
    atomic_store(&allocations, 0);
    atomic_store(&counting, 1);
    int64_t prev = now_ns();
    int failures = 0;
    for (long k = 0; k < nsteps; k++) {
        failures += flatopt_optimizer_step(opt) != FLATOPT_OK;
        int64_t cur = now_ns();
        t[k] = cur - prev;
        prev = cur;
    }
    atomic_store(&counting, 0);
    long allocs = atomic_load(&allocations);
    double mean = 0;
    for (long k = 0; k < nsteps; k++) mean += (double)t[k];
    mean /= (double)nsteps;
    qsort(t, (size_t)nsteps, sizeof(int64_t), cmp_i64);
#define PCT(q) ((double)t[(long)((q) * (double)(nsteps - 1) + 0.5)] / 1000.0)
    printf("{\"source\": \"c-driver\", \"workload\": \"latency\", \"buffers\": %zu, "
           "\"params\": %zu, \"steps\": %ld, \"threads\": 1, \"tier\": \"%s\", "
           "\"min_us\": %.3f, \"p50_us\": %.3f, \"p90_us\": %.3f, \"p99_us\": %.3f, "
           "\"p999_us\": %.3f, \"max_us\": %.3f, \"mean_us\": %.3f, "
           "\"allocations_during_steps\": %ld, \"canary_allocations\": %ld, \"failed_steps\": %d}\n",
           nbuf, total, nsteps, flatopt_simd_tier_name(flatopt_default_simd_tier()), PCT(0.0),
           PCT(0.5), PCT(0.9), PCT(0.99), PCT(0.999), PCT(1.0), mean / 1000.0, allocs,
           canary_allocs, failures);
    flatopt_optimizer_free(opt);
    for (size_t i = 0; i < nbuf; i++) {
        free(params[i]);
        free((void *)grads[i]);
    }
    free(t);
    return failures != 0;
}

/* ---- check -------------------------------------------------------------------------------- */

/* Plain C Adam (PyTorch's formula, coupled weight decay), f64 scalars rounded once as the
 * library does; agreement within a relative 1e-5 is expected (not bit-identity). */
static void ref_adam(float *p, const float *g, float *m, float *v, size_t n, long t) {
    double b1 = 0.9, b2 = 0.999, eps = 1e-8;
    float step = (float)(LR / (1 - pow(b1, (double)t)));
    float isb2 = (float)(1 / sqrt(1 - pow(b2, (double)t)));
    for (size_t i = 0; i < n; i++) {
        m[i] = 0.9f * m[i] + 0.1f * g[i];
        v[i] = 0.999f * v[i] + 0.001f * (g[i] * g[i]);
        p[i] = p[i] - step * (m[i] / (sqrtf(v[i]) * isb2 + (float)eps));
    }
}

static int cmd_check(void) {
    int bad = 0;
    for (size_t n = 1; n <= 5000; n = n * 7 + 3) {
        float *p = random_floats(n, SEED_P, SCALE_P), *g = random_floats(n, SEED_G, SCALE_G);
        float *rp = random_floats(n, SEED_P, SCALE_P);
        float *rm = calloc(n, sizeof(float)), *rv = calloc(n, sizeof(float));
        const float *gs[1] = {g};
        float *ps[1] = {p};
        size_t lens[1] = {n};
        flatopt_optimizer *opt =
            make_opt(CFG_ADAM, FLATOPT_NONFINITE_PROPAGATE, 1, ps, gs, lens, 1, 0);
        double worst = 0;
        /* The compiler-vectorized C Adam of the benchmark (probe.c) must agree too. */
        float *cp = random_floats(n, SEED_P, SCALE_P);
        float *cm = calloc(n, sizeof(float)), *cv = calloc(n, sizeof(float));
        double cworst = 0;
        for (long t = 1; t <= 20; t++) {
            if (flatopt_optimizer_step(opt) != FLATOPT_OK) bad++;
            ref_adam(rp, g, rm, rv, n, t);
            compare_cadam(cp, g, cm, cv, n, 1 + (int)(t % 2), LR, t);
        }
        for (size_t i = 0; i < n; i++) {
            double d = fabs((double)p[i] - rp[i]) / (fabs((double)rp[i]) + 1e-6);
            if (!(d <= worst)) worst = d; /* NaN counts as worst */
            d = fabs((double)cp[i] - rp[i]) / (fabs((double)rp[i]) + 1e-6);
            if (!(d <= cworst)) cworst = d;
        }
        if (!(worst < 1e-5) || !(cworst < 1e-5)) {
            printf("check: n=%zu vs plain C Adam: flatopt %g, benchmark C Adam %g (worst "
                   "relative difference)\n", n, worst, cworst);
            bad++;
        }
        free(cp), free(cm), free(cv);
        flatopt_optimizer_free(opt);
        free(p), free(g), free(rp), free(rm), free(rv);
    }
    /* The probe and the pipeline on tiny sizes: finite results, 1 and 2 threads. */
    for (int threads = 1; threads <= 2; threads++) {
        size_t n = 5000;
        float *p = random_floats(n, SEED_P, SCALE_P), *g = random_floats(n, SEED_G, SCALE_G);
        float *m = random_floats(n, SEED_M, SCALE_M), *v = random_floats(n, SEED_V, SCALE_V);
        compare_probe(p, g, m, v, n, threads);
        const float *gs[1] = {g};
        float *ps[1] = {m};
        size_t lens[1] = {n};
        flatopt_optimizer *opt = make_opt(CFG_PIPELINE, FLATOPT_NONFINITE_SKIP, threads, ps, gs,
                                          lens, 1, pipeline_max_norm(n));
        for (int k = 0; k < 12; k++)
            if (flatopt_optimizer_step(opt) != FLATOPT_OK) bad++;
        for (size_t i = 0; i < n; i++)
            if (!isfinite(p[i]) || !isfinite(m[i])) {
                printf("check: non-finite output at %zu (threads %d)\n", i, threads);
                bad++;
                break;
            }
        flatopt_optimizer_free(opt);
        free(p), free(g), free(m), free(v);
    }
    printf("driver check: %s\n", bad ? "FAILED" : "ok");
    return bad != 0;
}

int main(int argc, char **argv) {
    if (flatopt_version_number() != FLATOPT_VERSION_NUMBER) {
        fprintf(stderr, "driver: header %s, library %s\n", FLATOPT_VERSION_STRING,
                flatopt_version());
        return 2;
    }
    if (argc >= 2 && strcmp(argv[1], "bench") == 0) return cmd_bench(argc, argv);
    if (argc >= 2 && strcmp(argv[1], "latency") == 0) return cmd_latency(argc, argv);
    if (argc >= 2 && strcmp(argv[1], "check") == 0) return cmd_check();
    fprintf(stderr, "usage: driver bench|latency|check ... (see the comment in driver.c)\n");
    return 2;
}
