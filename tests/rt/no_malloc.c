/* tests/rt/no_malloc.c: after registration, a single-thread flatopt step allocates nothing,
 * takes no pthread lock and calls no syscall(). Run under the LD_PRELOAD shim
 * tests/rt/malloc_shim.c (tests/rt/run.sh does it, once plain and once under strace, which
 * checks that no system call at all happens between the two window markers).
 *
 * For each of four configurations (Lookahead(Adam) + clip by norm + weight decay + a
 * warmup-cosine schedule, the robotics case; SGD Nesterov + clip by value + MultiStep;
 * Lookahead(RAdam) + clip by value; Adam AMSGrad + clip by norm + ReduceOnPlateau) on 6
 * buffers (an MLP 48-128-96-14: 20,014 parameters), the counting window opens right after
 * registration (so the very first step is inside it) and covers 10,000 steps taken in turn
 * through every step API:
 *   flatopt_optimizer_step, flatopt_optimizer_step_with_grads, the split step
 *   (begin_step / step_range over 3 ranges / end_step), and the sharded two-phase step
 *   (sum_squares_partials / step_with_sum_squares),
 * with a NaN gradient every 997 steps (skipped updates record a message: that must not
 * allocate either), the queries a control loop makes (step_count, skipped_count, current_lr,
 * copy_slow_weights, schedule_step_metric), and the stateless kernels (adam_update,
 * sum_squares, sum_squares_partials, clip_scale, lookahead_sync).
 *
 * Then two canaries, still armed, prove the counting sees what it must: a malloc by this
 * program and an allocation inside libflatopt.so (flatopt_optimizer_new boxes the handle).
 * The windows are delimited by marker system calls (write to fd -1) for the strace check; a
 * last marked window holds one deliberate system call (getppid) as that check's canary.
 * Exit status 0 if every window count is 0 and both canaries were seen, else 1.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <flatopt.h>

#define N_BUF 6
#define WINDOW_STEPS 10000
#define MAX_COUNTERS 32

static const size_t k_lens[N_BUF] = { 48 * 128, 128, 128 * 96, 96, 96 * 14, 14 };

typedef void (*arm_fn)(int);
typedef void (*reset_fn)(void);
typedef int (*counts_fn)(unsigned long *, int);
typedef const char *(*name_fn)(int);

static arm_fn shim_arm;
static reset_fn shim_reset;
static counts_fn shim_counts;
static name_fn shim_name;
static int g_failed;

/* dlsym into a function pointer without an object-to-function pointer cast (ISO C). */
static void lookup(const char *name, void *fn_ptr, size_t size)
{
    void *sym = dlsym(RTLD_DEFAULT, name);
    if (size == sizeof sym)
        memcpy(fn_ptr, &sym, size);
}

/* A system call strace shows and that does nothing: write to fd -1 fails with EBADF. */
static void marker(const char *tag)
{
    volatile ssize_t r = write(-1, tag, strlen(tag));
    (void)r;
}

static uint64_t g_rng = 0x9E3779B97F4A7C15ull;
static float rnd(void) /* uniform in [-1, 1), no libc call */
{
    g_rng = g_rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(g_rng >> 40) / (double)(1ull << 23) - 1.0);
}

static void check_status(flatopt_status st, flatopt_status want, const char *what, long step)
{
    if (st != want) {
        /* Outside the hot path (a failure): printing may allocate, the test fails anyway. */
        fprintf(stderr, "no_malloc: %s at step %ld returned %d (%s), expected %d: %s\n", what,
                step, (int)st, flatopt_status_str(st), (int)want, flatopt_last_error_message());
        g_failed = 1;
    }
}

struct model {
    float *p[N_BUF], *g[N_BUF];
    const float *gp[N_BUF];
    float *p_all, *g_all;
    size_t total;
};

static void model_init(struct model *m)
{
    size_t i, at = 0;
    m->total = 0;
    for (i = 0; i < N_BUF; i++)
        m->total += k_lens[i];
    /* One allocation each, carved into buffers (before the window). */
    m->p_all = (float *)malloc(m->total * sizeof(float));
    m->g_all = (float *)malloc(m->total * sizeof(float));
    if (!m->p_all || !m->g_all) {
        fprintf(stderr, "no_malloc: out of memory\n");
        exit(2);
    }
    for (i = 0; i < N_BUF; i++) {
        m->p[i] = m->p_all + at;
        m->g[i] = m->g_all + at;
        m->gp[i] = m->g[i];
        at += k_lens[i];
    }
    for (i = 0; i < m->total; i++)
        m->p_all[i] = 0.1f * rnd();
}

static void fill_grads(struct model *m, long step)
{
    size_t i;
    for (i = 0; i < m->total; i++)
        m->g_all[i] = 0.05f * rnd();
    if (step % 997 == 500)
        m->g[3][7] = NAN; /* a skipped update */
}

enum { CFG_LA_ADAM, CFG_SGD_NESTEROV, CFG_LA_RADAM, CFG_AMSGRAD_PLATEAU, N_CFG };
static const char *const k_cfg_names[N_CFG] = {
    "Lookahead(Adam) + clip_norm + weight decay + warmup-cosine",
    "SGD Nesterov + clip_value + MultiStep",
    "Lookahead(RAdam) + clip_value",
    "Adam AMSGrad + clip_norm + ReduceOnPlateau",
};

static flatopt_optimizer *make(int which, struct model *m)
{
    static const uint64_t milestones[] = { 3000, 6000, 9000 };
    flatopt_config c;
    flatopt_base_params b;
    flatopt_schedule s;
    flatopt_optimizer *opt = NULL;
    size_t i;
    flatopt_config_init(&c, sizeof c);
    flatopt_base_params_init(&b, sizeof b, FLATOPT_ADAM);
    c.base = &b;
    switch (which) {
    case CFG_LA_ADAM:
        c.lookahead = 1;
        c.sync_period = 5;
        c.alpha = 0.5;
        c.grad_clip_norm = 1.0;
        c.weight_decay = 1e-4;
        flatopt_schedule_init(&s, sizeof s, FLATOPT_SCHEDULE_WARMUP_COSINE);
        s.base_lr = 1e-3;
        s.warmup = 500;
        s.period = WINDOW_STEPS;
        c.schedule = &s;
        break;
    case CFG_SGD_NESTEROV:
        flatopt_base_params_init(&b, sizeof b, FLATOPT_SGD);
        b.momentum = 0.9;
        b.nesterov = 1;
        c.grad_clip_value = 0.02;
        flatopt_schedule_init(&s, sizeof s, FLATOPT_SCHEDULE_MULTI_STEP);
        s.base_lr = 0.01;
        s.gamma = 0.5;
        s.milestones = milestones;
        s.n_milestones = 3;
        c.schedule = &s;
        break;
    case CFG_LA_RADAM:
        flatopt_base_params_init(&b, sizeof b, FLATOPT_RADAM);
        c.lookahead = 1;
        c.sync_period = 6;
        c.alpha = 0.8;
        c.grad_clip_value = 0.03;
        c.lr = 1e-3;
        break;
    default:
        b.amsgrad = 1;
        c.grad_clip_norm = 0.5;
        flatopt_schedule_init(&s, sizeof s, FLATOPT_SCHEDULE_REDUCE_ON_PLATEAU);
        s.base_lr = 1e-3;
        s.patience = 2;
        c.schedule = &s;
        c.schedule_manual = 1;
        break;
    }
    check_status(flatopt_optimizer_new(&c, &opt), FLATOPT_OK, "flatopt_optimizer_new", -1);
    for (i = 0; opt && i < N_BUF; i++)
        check_status(flatopt_optimizer_add_param(opt, m->p[i], m->g[i], k_lens[i]), FLATOPT_OK,
                     "flatopt_optimizer_add_param", -1);
    return opt;
}

/* The window: everything a real-time loop does with a registered optimizer. */
static void run_window(int which, flatopt_optimizer *opt, struct model *m, double *partials,
                       size_t n_partials, float *scratch_m, float *scratch_v, float *slow_copy)
{
    long t;
    size_t total = m->total, i;
    flatopt_base_params hp;
    flatopt_step_args args;
    flatopt_base_params_init(&hp, sizeof hp, FLATOPT_ADAM);
    flatopt_step_args_init(&args, sizeof args);
    for (t = 0; t < WINDOW_STEPS; t++) {
        int nan_step = (t % 997 == 500);
        flatopt_status want = nan_step ? FLATOPT_SKIPPED : FLATOPT_OK;
        flatopt_status st;
        fill_grads(m, t);
        switch (t % 4) {
        case 0:
            check_status(flatopt_optimizer_step(opt), want, "flatopt_optimizer_step", t);
            break;
        case 1:
            check_status(flatopt_optimizer_step_with_grads(opt, m->gp, N_BUF), want,
                         "flatopt_optimizer_step_with_grads", t);
            break;
        case 2:
            st = flatopt_optimizer_begin_step(opt);
            check_status(st, want, "flatopt_optimizer_begin_step", t);
            if (st == FLATOPT_OK) {
                check_status(flatopt_optimizer_step_range(opt, 0, 5000), FLATOPT_OK,
                             "flatopt_optimizer_step_range", t);
                check_status(flatopt_optimizer_step_range(opt, 5000, 15000), FLATOPT_OK,
                             "flatopt_optimizer_step_range", t);
                check_status(flatopt_optimizer_step_range(opt, 15000, total), FLATOPT_OK,
                             "flatopt_optimizer_step_range", t);
                check_status(flatopt_optimizer_end_step(opt), FLATOPT_OK,
                             "flatopt_optimizer_end_step", t);
            }
            break;
        default: {
            double sum = 0.0;
            check_status(flatopt_optimizer_sum_squares_partials(opt, partials, n_partials),
                         FLATOPT_OK, "flatopt_optimizer_sum_squares_partials", t);
            for (i = 0; i < n_partials; i++)
                sum += partials[i];
            check_status(flatopt_optimizer_step_with_sum_squares(opt, sum), want,
                         "flatopt_optimizer_step_with_sum_squares", t);
            break;
        }
        }
        if (t % 100 == 99) { /* what a control loop queries now and then */
            uint64_t n;
            float lr;
            check_status(flatopt_optimizer_step_count(opt, &n), FLATOPT_OK, "step_count", t);
            check_status(flatopt_optimizer_skipped_count(opt, &n), FLATOPT_OK, "skipped", t);
            check_status(flatopt_optimizer_current_lr(opt, &lr), FLATOPT_OK, "current_lr", t);
            if (which == CFG_LA_ADAM || which == CFG_LA_RADAM)
                check_status(flatopt_optimizer_copy_slow_weights(opt, 0, slow_copy, k_lens[0]),
                             FLATOPT_OK, "copy_slow_weights", t);
            if (which == CFG_AMSGRAD_PLATEAU) {
                check_status(flatopt_optimizer_schedule_step_metric(opt, 1.0 / (double)(t + 1)),
                             FLATOPT_OK, "schedule_step_metric", t);
            }
        }
        if (t % 500 == 0) { /* the stateless kernels on one buffer */
            double s, scale;
            args.step = (uint64_t)(t / 500 + 1);
            args.lr = 1e-3;
            args.sync = 0;
            m->g[0][0] = 0.01f; /* finite */
            check_status(flatopt_adam_update(&hp, &args, m->p[0], m->g[0], scratch_m, scratch_v,
                                             NULL, NULL, k_lens[0]),
                         FLATOPT_OK, "flatopt_adam_update", t);
            check_status(flatopt_sum_squares(m->g[0], k_lens[0], &s), FLATOPT_OK,
                         "flatopt_sum_squares", t);
            check_status(flatopt_sum_squares_partials(m->g[2], k_lens[2], partials, 3), FLATOPT_OK,
                         "flatopt_sum_squares_partials", t);
            check_status(flatopt_clip_scale(s + 1.0, 1.0, &scale), FLATOPT_OK,
                         "flatopt_clip_scale", t);
            check_status(flatopt_lookahead_sync(m->p[1], scratch_m, k_lens[1], 0.5f), FLATOPT_OK,
                         "flatopt_lookahead_sync", t);
        }
    }
}

static int report(const char *what, const unsigned long *c, int n, int expect_alloc)
{
    int k, bad = 0;
    unsigned long allocs = 0;
    for (k = 0; k < n; k++)
        if (k < 8)
            allocs += c[k];
    if (expect_alloc) {
        printf("  canary %-52s %lu allocator calls seen: %s\n", what, allocs,
               allocs ? "ok" : "FAILED (the shim does not see allocations)");
        return allocs ? 0 : 1;
    }
    printf("  %-60s", what);
    for (k = 0; k < n; k++)
        if (c[k]) {
            printf("%s %s=%lu", bad ? "," : "", shim_name(k), c[k]);
            bad = 1;
        }
    printf("%s\n", bad ? "  FAILED" : " 0 allocations, 0 lock calls, 0 syscall(): ok");
    return bad;
}

int main(void)
{
    struct model m;
    unsigned long c[MAX_COUNTERS];
    int which, n_counters, failures = 0;
    double *partials;
    float *scratch_m, *scratch_v, *slow_copy;
    size_t n_partials = 0;

    lookup("rt_shim_arm", &shim_arm, sizeof shim_arm);
    lookup("rt_shim_reset", &shim_reset, sizeof shim_reset);
    lookup("rt_shim_counts", &shim_counts, sizeof shim_counts);
    lookup("rt_shim_name", &shim_name, sizeof shim_name);
    if (!shim_arm || !shim_reset || !shim_counts || !shim_name) {
        fprintf(stderr, "no_malloc: the counting shim is not loaded: run with "
                        "LD_PRELOAD=.../libmalloc_shim.so (tests/rt/run.sh does)\n");
        return 2;
    }
    printf("no_malloc: flatopt %s, SIMD tier %s, %d buffers, %d steps per configuration\n",
           flatopt_version(), flatopt_simd_tier_name(flatopt_default_simd_tier()), N_BUF,
           WINDOW_STEPS);
    model_init(&m);
    printf("  %lu parameters (MLP 48-128-96-14)\n", (unsigned long)m.total);
    partials = (double *)malloc(64 * sizeof(double));
    scratch_m = (float *)calloc(k_lens[0], sizeof(float));
    scratch_v = (float *)calloc(k_lens[0], sizeof(float));
    slow_copy = (float *)calloc(k_lens[0], sizeof(float));
    if (!partials || !scratch_m || !scratch_v || !slow_copy)
        return 2;

    for (which = 0; which < N_CFG; which++) {
        flatopt_optimizer *opt = make(which, &m);
        if (!opt)
            return 1;
        check_status(flatopt_optimizer_sum_squares_block_count(opt, &n_partials), FLATOPT_OK,
                     "block_count", -1);
        if (n_partials > 64)
            return 2;
        fflush(stdout);
        /* The window: from right after registration (the first step is inside it). */
        shim_reset();
        marker("RT_WINDOW_BEGIN");
        shim_arm(1);
        run_window(which, opt, &m, partials, n_partials, scratch_m, scratch_v, slow_copy);
        shim_arm(0);
        marker("RT_WINDOW_END");
        n_counters = shim_counts(c, MAX_COUNTERS);
        failures += report(k_cfg_names[which], c, n_counters, 0);
        flatopt_optimizer_free(opt);
    }

    /* Canaries: the shim must see an allocation by the program and one inside the library. */
    {
        flatopt_config cfg;
        flatopt_optimizer *o = NULL;
        volatile char *p;
        flatopt_config_init(&cfg, sizeof cfg);
        shim_reset();
        shim_arm(1);
        p = (volatile char *)malloc(100);
        if (p)
            p[0] = 1;
        free((void *)p);
        shim_arm(0);
        shim_counts(c, MAX_COUNTERS);
        failures += report("malloc in the program", c, 8, 1);
        shim_reset();
        shim_arm(1);
        flatopt_optimizer_new(&cfg, &o);
        shim_arm(0);
        shim_counts(c, MAX_COUNTERS);
        failures += report("flatopt_optimizer_new (Rust Box in libflatopt.so)", c, 8, 1);
        flatopt_optimizer_free(o);
    }
    /* A window with one deliberate system call (getppid), for run.sh to prove that its
     * strace check finds a system call between two markers. */
    marker("RT_CANARY_BEGIN");
    {
        volatile pid_t pp = getppid();
        (void)pp;
    }
    marker("RT_CANARY_END");
    free(partials);
    free(scratch_m);
    free(scratch_v);
    free(slow_copy);
    free(m.p_all);
    free(m.g_all);
    if (failures || g_failed) {
        printf("no_malloc: FAILED\n");
        return 1;
    }
    printf("no_malloc: passed: %d configurations x %d steps, no allocation, lock or syscall()\n",
           N_CFG, WINDOW_STEPS);
    return 0;
}
