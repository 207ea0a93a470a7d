/* tests/rt/latency.c: latency distribution of one flatopt step on one thread.
 *
 * Layouts: "robot", an MLP 48-128-96-14 (20,014 parameters in 6 buffers: 3 weight matrices,
 * 3 bias vectors), and "wide", 10 buffers of 10,000 parameters. Optimizer: Lookahead(Adam)
 * (sync every 5, alpha 0.5) with clipping by global norm (a norm that binds) and coupled weight
 * decay, on the caller's thread (num_threads = 1), default SIMD tier.
 *
 * Each step: new gradients are copied into the registered gradient buffers (one of 8
 * precomputed sets; not timed, and it leaves them in cache as a freshly computed backward pass
 * would), then flatopt_optimizer_step() is timed with clock_gettime(CLOCK_MONOTONIC) before and
 * after. After --warmup untimed steps, --steps timed steps; the sorted times give p50, p90,
 * p99, p99.9 and the maximum in microseconds. The clock's own cost (back-to-back reads) is
 * reported alongside.
 *
 *   latency [--steps N] [--warmup N] [--quick] [--layout robot|wide|all]
 *           [--tier scalar|portable|avx2] [--rt] [--markdown]
 *
 * --quick: 5,000 steps and 500 warmup steps, and sanity checks only (every step OK, counts
 *          right, parameters finite, percentiles ordered): what `make test` runs. No timing
 *          assertion ever: the numbers depend on the machine and its load.
 * --rt:    first pin the thread to one CPU, lock memory (mlockall) and switch to SCHED_FIFO
 *          priority 80 if allowed (root / CAP_SYS_NICE); says which of these took effect. The
 *          loop then idles 1 ms (untimed) after every 5 ms, as a control loop between ticks
 *          does: a SCHED_FIFO busy loop would be throttled by the kernel for 50 ms a second.
 * --markdown: also print the results as a Markdown table row per layout.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include <flatopt.h>

#define N_SETS 8

struct layout {
    const char *name;
    const char *desc;
    size_t n_buf;
    size_t lens[10];
};

static const struct layout k_layouts[] = {
    { "robot", "20,014 params in 6 buffers (MLP 48-128-96-14)", 6,
      { 48 * 128, 128, 128 * 96, 96, 96 * 14, 14 } },
    { "wide", "100,000 params in 10 buffers of 10,000", 10,
      { 10000, 10000, 10000, 10000, 10000, 10000, 10000, 10000, 10000, 10000 } },
};

struct result {
    double p50, p90, p99, p999, max, mean, min;
    long steps;
};

static int g_rt;        /* --rt: idle 1 ms every 5 ms (see run) */
static uint32_t g_tier; /* --tier: 0 = the process default */
static uint64_t g_rng = 0x2545F4914F6CDD1Dull;
static float rnd(void)
{
    g_rng = g_rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(g_rng >> 40) / (double)(1ull << 23) - 1.0);
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double pct(const uint64_t *sorted, long n, double q)
{
    /* nearest rank: the smallest value with at least q of the samples at or below it */
    long k = (long)ceil(q * (double)n) - 1;
    if (k < 0)
        k = 0;
    if (k >= n)
        k = n - 1;
    return (double)sorted[k] / 1000.0;
}

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n, size);
    if (!p) {
        fprintf(stderr, "latency: out of memory\n");
        exit(2);
    }
    return p;
}

static int fail(const char *what, flatopt_status st)
{
    fprintf(stderr, "latency: %s: %s (%s)\n", what, flatopt_status_str(st),
            flatopt_last_error_message());
    return 1;
}

/* Runs one layout; 0 on success. */
static int run(const struct layout *L, long warmup, long steps, struct result *r)
{
    size_t total = 0, i, k;
    float *p, *g, *sets;
    uint64_t *t_ns, count = 0, skipped = 1, last_idle;
    flatopt_config c;
    flatopt_optimizer *opt = NULL;
    flatopt_status st;
    long s;
    double sum = 0.0;

    for (i = 0; i < L->n_buf; i++)
        total += L->lens[i];
    p = (float *)xcalloc(total, sizeof(float));
    g = (float *)xcalloc(total, sizeof(float));
    sets = (float *)xcalloc(total * N_SETS, sizeof(float));
    t_ns = (uint64_t *)xcalloc((size_t)steps, sizeof(uint64_t));
    for (i = 0; i < total; i++)
        p[i] = 0.1f * rnd();
    for (i = 0; i < total * N_SETS; i++)
        sets[i] = 0.02f * rnd(); /* global norm about 0.02 * sqrt(total / 3): clipping binds */

    flatopt_config_init(&c, sizeof c);
    c.lr = 1e-3;
    c.lookahead = 1;
    c.sync_period = 5;
    c.alpha = 0.5;
    c.grad_clip_norm = 1.0;
    c.weight_decay = 1e-4;
    c.num_threads = 1;
    c.simd_tier = g_tier;
    if ((st = flatopt_optimizer_new(&c, &opt)) != FLATOPT_OK)
        return fail("flatopt_optimizer_new", st);
    for (i = 0, k = 0; i < L->n_buf; k += L->lens[i], i++)
        if ((st = flatopt_optimizer_add_param(opt, p + k, g + k, L->lens[i])) != FLATOPT_OK)
            return fail("flatopt_optimizer_add_param", st);

    last_idle = now_ns();
    for (s = 0; s < warmup + steps; s++) {
        uint64_t t0, t1;
        if (g_rt && now_ns() - last_idle > 5000000ull) {
            /* Under SCHED_FIFO a busy loop is throttled by the kernel (sched_rt_runtime_us:
             * 50 ms of every second by default), which would show up as a 50 ms "step". A
             * control loop idles between ticks; so does this one: 1 ms after every 5 ms. */
            struct timespec idle = { 0, 1000000 };
            nanosleep(&idle, NULL);
            last_idle = now_ns();
        }
        memcpy(g, sets + (size_t)(s % N_SETS) * total, total * sizeof(float));
        t0 = now_ns();
        st = flatopt_optimizer_step(opt);
        t1 = now_ns();
        if (st != FLATOPT_OK)
            return fail("flatopt_optimizer_step", st);
        if (s >= warmup)
            t_ns[s - warmup] = t1 - t0;
    }
    flatopt_optimizer_step_count(opt, &count);
    flatopt_optimizer_skipped_count(opt, &skipped);
    if (count != (uint64_t)(warmup + steps) || skipped != 0) {
        fprintf(stderr, "latency: %llu steps applied, %llu skipped; expected %ld and 0\n",
                (unsigned long long)count, (unsigned long long)skipped, warmup + steps);
        return 1;
    }
    for (i = 0; i < total; i++)
        if (!isfinite(p[i])) {
            fprintf(stderr, "latency: parameter %lu is not finite\n", (unsigned long)i);
            return 1;
        }
    for (s = 0; s < steps; s++)
        sum += (double)t_ns[s];
    qsort(t_ns, (size_t)steps, sizeof(uint64_t), cmp_u64);
    r->steps = steps;
    r->min = (double)t_ns[0] / 1000.0;
    r->p50 = pct(t_ns, steps, 0.50);
    r->p90 = pct(t_ns, steps, 0.90);
    r->p99 = pct(t_ns, steps, 0.99);
    r->p999 = pct(t_ns, steps, 0.999);
    r->max = (double)t_ns[steps - 1] / 1000.0;
    r->mean = sum / (double)steps / 1000.0;
    if (!(r->min <= r->p50 && r->p50 <= r->p90 && r->p90 <= r->p99 && r->p99 <= r->p999 &&
          r->p999 <= r->max && r->min > 0.0)) {
        fprintf(stderr, "latency: percentiles out of order\n");
        return 1;
    }
    flatopt_optimizer_free(opt);
    free(p);
    free(g);
    free(sets);
    free(t_ns);
    return 0;
}

static void go_realtime(void)
{
    cpu_set_t set;
    struct sched_param sp;
    int cpu = sched_getcpu();
    CPU_ZERO(&set);
    CPU_SET(cpu < 0 ? 0 : cpu, &set);
    printf("  --rt: pinned to CPU %d: %s", cpu,
           sched_setaffinity(0, sizeof set, &set) == 0 ? "yes" : strerror(errno));
    printf("; mlockall: %s", mlockall(MCL_CURRENT | MCL_FUTURE) == 0 ? "yes" : strerror(errno));
    memset(&sp, 0, sizeof sp);
    sp.sched_priority = 80;
    printf("; SCHED_FIFO 80: %s\n",
           sched_setscheduler(0, SCHED_FIFO, &sp) == 0 ? "yes" : strerror(errno));
}

int main(int argc, char **argv)
{
    long steps = 100000, warmup = 2000;
    int quick = 0, rt = 0, markdown = 0, i, failures = 0;
    const char *which = "all";
    struct result res[2];
    int ran[2] = { 0, 0 };
    double clock_cost;
    uint64_t clock_ns[1001];

    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--steps") == 0 && i + 1 < argc)
            steps = atol(argv[++i]);
        else if (strcmp(argv[i], "--warmup") == 0 && i + 1 < argc)
            warmup = atol(argv[++i]);
        else if (strcmp(argv[i], "--quick") == 0)
            quick = 1;
        else if (strcmp(argv[i], "--rt") == 0)
            rt = 1;
        else if (strcmp(argv[i], "--markdown") == 0)
            markdown = 1;
        else if (strcmp(argv[i], "--layout") == 0 && i + 1 < argc)
            which = argv[++i];
        else if (strcmp(argv[i], "--tier") == 0 && i + 1 < argc) {
            const char *name = argv[++i];
            for (g_tier = 1; g_tier <= FLATOPT_SIMD_AVX512; g_tier++)
                if (strcmp(flatopt_simd_tier_name(g_tier), name) == 0)
                    break;
            if (g_tier > FLATOPT_SIMD_AVX512 || !flatopt_simd_tier_available(g_tier)) {
                fprintf(stderr, "latency: tier %s is not available here\n", name);
                return 2;
            }
        }
        else {
            fprintf(stderr, "usage: %s [--steps N] [--warmup N] [--quick] "
                            "[--layout robot|wide|all] [--tier scalar|portable|avx2] [--rt] "
                            "[--markdown]\n", argv[0]);
            return 2;
        }
    }
    if (quick) {
        steps = 5000;
        warmup = 500;
    }
    if (steps < 1 || warmup < 0) {
        fprintf(stderr, "latency: --steps must be >= 1 and --warmup >= 0\n");
        return 2;
    }
    printf("latency: flatopt %s, SIMD tier %s, Lookahead(Adam) + clip_norm + weight decay, "
           "1 thread, %ld steps after %ld warmup%s\n",
           flatopt_version(),
           flatopt_simd_tier_name(g_tier ? g_tier : flatopt_default_simd_tier()), steps, warmup,
           quick ? " (quick: sanity only)" : "");
    if (rt) {
        go_realtime();
        g_rt = 1;
    }
    for (i = 0; i < 1001; i++) {
        uint64_t a = now_ns(), b = now_ns();
        clock_ns[i] = b - a;
    }
    qsort(clock_ns, 1001, sizeof(uint64_t), cmp_u64);
    clock_cost = (double)clock_ns[500] / 1000.0;
    printf("  clock_gettime(CLOCK_MONOTONIC) pair: median %.3f us\n", clock_cost);
    printf("  %-48s %8s %8s %8s %8s %8s %8s %8s\n", "layout", "min", "p50", "p90", "p99",
           "p99.9", "max", "mean");
    for (i = 0; i < 2; i++) {
        const struct layout *L = &k_layouts[i];
        if (strcmp(which, "all") != 0 && strcmp(which, L->name) != 0)
            continue;
        if (run(L, warmup, steps, &res[i]) != 0) {
            failures++;
            continue;
        }
        ran[i] = 1;
        printf("  %-48s %8.2f %8.2f %8.2f %8.2f %8.2f %8.2f %8.2f  us\n", L->desc, res[i].min,
               res[i].p50, res[i].p90, res[i].p99, res[i].p999, res[i].max, res[i].mean);
    }
    if (markdown) {
        printf("\n| model | steps | p50 (us) | p99 (us) | p99.9 (us) | max (us) | mean (us) |\n");
        printf("|---|---|---|---|---|---|---|\n");
        for (i = 0; i < 2; i++)
            if (ran[i])
                printf("| %s | %ld | %.1f | %.1f | %.1f | %.1f | %.1f |\n", k_layouts[i].desc,
                       res[i].steps, res[i].p50, res[i].p99, res[i].p999, res[i].max,
                       res[i].mean);
    }
    if (failures) {
        printf("latency: FAILED\n");
        return 1;
    }
    printf("latency: ok\n");
    return 0;
}
