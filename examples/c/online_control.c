/* examples/c/online_control.c: online learning inside a fixed-rate control loop, as a robot or
 * a game runs it.
 *
 * A simulated cart-pole (a cart on a rail, a pole swinging freely on it) ticks at a fixed rate
 * (500 Hz by default). A controller pushes the cart (a spring back to the centre plus random
 * excitation); every 0.25 s an episode ends and the system is put into a random state (a new
 * trial), so that the samples cover its state space within seconds. Every tick the loop reads
 * the state, applies the force, advances the physics and measures the accelerations that
 * resulted (velocity change / dt, with sensor noise): one more training sample for a small
 * neural network, an MLP 5-64-64-2 (4,674 parameters in 6 buffers), that learns the
 * cart-pole's dynamics online. Inputs: cart velocity, sin and cos of the pole angle, pole
 * angular velocity, force; outputs: cart acceleration, pole angular acceleration. Such a
 * learned model is what model-based controllers plan with.
 *
 * Each tick the new sample goes into a replay ring, one mini-batch of 32 samples is drawn from
 * it, its gradient computed (plain C), and flatopt takes one Lookahead(Adam) step with
 * clipping by global norm, on this thread, allocating nothing. Every 0.5 s of simulated time
 * the loop prints the model's normalised MSE (1 = no better than predicting the mean, 0 =
 * perfect) on a validation set of 1,024 samples from independent episodes (recorded
 * beforehand with another seed), and the cost of the flatopt steps (p50 / p99 / max) and of the
 * whole tick's work (physics, sample, gradient, step), against the tick budget.
 *
 * By default the loop is paced in real time (clock_nanosleep to absolute tick deadlines) for
 * 6 s; --fast runs the same ticks unpaced (same results: nothing depends on timing). Options:
 * --seconds S, --hz F, --fast, --rt (pin to a CPU, mlockall, SCHED_FIFO if allowed), --seed N.
 * Exit status 1 if the model did not improve (final validation error above a quarter of the
 * initial one, for either output) or a step failed.
 *
 * Build and run: examples/c/run_online_control.sh (C99, -Wall -Wextra -pedantic -Werror;
 * links libflatopt.so).
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

#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif

/* ---- the system: a cart-pole (Barto, Sutton & Anderson 1983; Florian 2007's corrected
 * equations without friction) ---------------------------------------------------------------*/

#define GRAVITY 9.8
#define M_CART 1.0
#define M_POLE 0.1
#define HALF_LEN 0.5 /* pole half-length (m) */
#define F_MAX 20.0   /* force limit (N) */


struct cartpole {
    double x, xd, th, thd; /* cart position, velocity; pole angle (0 = up), angular velocity */
};

/* Accelerations for force f: cart xdd, pole thdd. */
static void cp_accel(const struct cartpole *s, double f, double *xdd, double *thdd)
{
    double st = sin(s->th), ct = cos(s->th), m = M_CART + M_POLE;
    double tmp = (f + M_POLE * HALF_LEN * s->thd * s->thd * st) / m;
    *thdd = (GRAVITY * st - ct * tmp) / (HALF_LEN * (4.0 / 3.0 - M_POLE * ct * ct / m));
    *xdd = tmp - M_POLE * HALF_LEN * *thdd * ct / m;
}

/* One tick of semi-implicit Euler. */
static void cp_step(struct cartpole *s, double f, double dt)
{
    double xdd, thdd;
    cp_accel(s, f, &xdd, &thdd);
    s->xd += dt * xdd;
    s->thd += dt * thdd;
    s->x += dt * s->xd;
    s->th += dt * s->thd;
    if (s->th > M_PI)
        s->th -= 2.0 * M_PI;
    else if (s->th < -M_PI)
        s->th += 2.0 * M_PI;
}

/* ---- random numbers (no allocation, reproducible) ------------------------------------------*/

struct rng {
    uint64_t s;
};
static double rng_uniform(struct rng *r) /* [0, 1) */
{
    r->s = r->s * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(r->s >> 11) * (1.0 / 9007199254740992.0);
}
static double rng_normal(struct rng *r)
{
    double u = rng_uniform(r), v = rng_uniform(r);
    return sqrt(-2.0 * log(u + 1e-300)) * cos(2.0 * M_PI * v);
}

/* The controller: a soft spring to the rail's centre plus an Ornstein-Uhlenbeck excitation. */
struct controller {
    double ou;
    struct rng r;
};
static double control(struct controller *c, const struct cartpole *s, double dt)
{
    double f;
    c->ou += -c->ou * 5.0 * dt + 40.0 * sqrt(dt) * rng_normal(&c->r);
    f = -8.0 * s->x - 4.0 * s->xd + c->ou;
    return f > F_MAX ? F_MAX : (f < -F_MAX ? -F_MAX : f);
}

/* Episodes: every EPISODE seconds the system is put into a random state (a game's new round,
 * a robot's new trial), so the samples cover the state space within seconds. */
#define EPISODE 0.25
static void cp_reset(struct cartpole *s, struct rng *r)
{
    s->x = 0.5 * (2.0 * rng_uniform(r) - 1.0);
    s->xd = 2.0 * (2.0 * rng_uniform(r) - 1.0);
    s->th = M_PI * (2.0 * rng_uniform(r) - 1.0);
    s->thd = 6.0 * (2.0 * rng_uniform(r) - 1.0);
}

/* ---- the model: MLP 5-64-64-2, tanh ---------------------------------------------------------*/

enum { NI = 5, NH = 64, NO = 2, BATCH = 32, RING = 4096, NVAL = 1024, N_BUF = 6 };
static const size_t k_lens[N_BUF] = { NI * NH, NH, NH * NH, NH, NH * NO, NO };

struct mlp {
    float *p[N_BUF], *g[N_BUF]; /* w1 b1 w2 b2 w3 b3, and their gradients */
    float *p_all, *g_all;
    size_t total;
};

/* Scales that bring inputs and outputs near unit range (fixed: known physics ranges). */
static const float k_in_scale[NI] = { 1.0f / 3.0f, 1.0f, 1.0f, 1.0f / 8.0f, 1.0f / (float)F_MAX };
static float g_out_scale[NO]; /* 1 / std of the validation targets */

static void features(const struct cartpole *s, double f, float *in)
{
    in[0] = (float)s->xd * k_in_scale[0];
    in[1] = (float)sin(s->th);
    in[2] = (float)cos(s->th);
    in[3] = (float)s->thd * k_in_scale[3];
    in[4] = (float)f * k_in_scale[4];
}

/* Forward pass of one sample; h1, h2 receive the hidden activations. */
static void mlp_forward(const struct mlp *m, const float *in, float *h1, float *h2, float *out)
{
    int i, j;
    const float *w1 = m->p[0], *b1 = m->p[1], *w2 = m->p[2], *b2 = m->p[3], *w3 = m->p[4],
                *b3 = m->p[5];
    for (j = 0; j < NH; j++) {
        float a = b1[j];
        for (i = 0; i < NI; i++)
            a += in[i] * w1[i * NH + j];
        h1[j] = tanhf(a);
    }
    for (j = 0; j < NH; j++) {
        float a = b2[j];
        for (i = 0; i < NH; i++)
            a += h1[i] * w2[i * NH + j];
        h2[j] = tanhf(a);
    }
    for (j = 0; j < NO; j++) {
        float a = b3[j];
        for (i = 0; i < NH; i++)
            a += h2[i] * w3[i * NO + j];
        out[j] = a;
    }
}

/* Gradient of the mean squared error over a batch into m->g (overwritten). */
static void mlp_backward(struct mlp *m, const float *const *ins, const float *const *targets,
                         int n)
{
    float h1[NH], h2[NH], out[NO], d_out[NO], d_h2[NH], d_h1[NH];
    float *gw1 = m->g[0], *gb1 = m->g[1], *gw2 = m->g[2], *gb2 = m->g[3], *gw3 = m->g[4],
          *gb3 = m->g[5];
    const float *w2 = m->p[2], *w3 = m->p[4];
    int b, i, j;
    memset(m->g_all, 0, m->total * sizeof(float));
    for (b = 0; b < n; b++) {
        const float *in = ins[b];
        mlp_forward(m, in, h1, h2, out);
        for (j = 0; j < NO; j++)
            d_out[j] = 2.0f * (out[j] - targets[b][j]) / (float)(n * NO);
        for (i = 0; i < NH; i++) {
            float a = 0.0f;
            for (j = 0; j < NO; j++) {
                gw3[i * NO + j] += h2[i] * d_out[j];
                a += w3[i * NO + j] * d_out[j];
            }
            d_h2[i] = a * (1.0f - h2[i] * h2[i]);
        }
        for (j = 0; j < NO; j++)
            gb3[j] += d_out[j];
        for (i = 0; i < NH; i++) {
            float a = 0.0f;
            for (j = 0; j < NH; j++) {
                gw2[i * NH + j] += h1[i] * d_h2[j];
                a += w2[i * NH + j] * d_h2[j];
            }
            d_h1[i] = a * (1.0f - h1[i] * h1[i]);
        }
        for (j = 0; j < NH; j++) {
            gb2[j] += d_h2[j];
            gb1[j] += d_h1[j];
        }
        for (i = 0; i < NI; i++)
            for (j = 0; j < NH; j++)
                gw1[i * NH + j] += in[i] * d_h1[j];
    }
}

/* ---- timing -------------------------------------------------------------------------------*/

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* p50, p99, max of n samples (ns) in place (sorts them), in microseconds. */
static void stats(uint32_t *v, int n, double *p50, double *p99, double *max)
{
    int k99;
    qsort(v, (size_t)n, sizeof *v, cmp_u32);
    k99 = (int)ceil(0.99 * n) - 1;
    *p50 = v[(n - 1) / 2] / 1000.0;
    *p99 = v[k99 < 0 ? 0 : k99] / 1000.0;
    *max = v[n - 1] / 1000.0;
}

/* ---- the loop -----------------------------------------------------------------------------*/

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n, size);
    if (!p) {
        fprintf(stderr, "online_control: out of memory\n");
        exit(2);
    }
    return p;
}

/* Validation: NVAL samples from independent episodes (another seed), with the true
 * accelerations. */
static void make_validation(float (*vin)[NI], float (*vout)[NO], double hz, uint64_t seed)
{
    struct cartpole s;
    struct controller c = { 0.0, { seed } };
    struct rng r = { seed * 0x94D049BB133111EBull + 5 };
    double dt = 1.0 / hz, mean[NO] = { 0 }, var[NO] = { 0 };
    int k, j, tick, into;
    for (k = 0; k < NVAL; k++) {
        /* a sample at a random time into an episode of its own */
        cp_reset(&s, &r);
        into = (int)(rng_uniform(&r) * EPISODE * hz);
        for (tick = 0; tick < into; tick++)
            cp_step(&s, control(&c, &s, dt), dt);
        {
            double f = control(&c, &s, dt), xdd, thdd;
            cp_accel(&s, f, &xdd, &thdd);
            features(&s, f, vin[k]);
            vout[k][0] = (float)xdd;
            vout[k][1] = (float)thdd;
            cp_step(&s, f, dt);
        }
    }
    for (k = 0; k < NVAL; k++)
        for (j = 0; j < NO; j++)
            mean[j] += vout[k][j] / NVAL;
    for (k = 0; k < NVAL; k++)
        for (j = 0; j < NO; j++)
            var[j] += (vout[k][j] - mean[j]) * (vout[k][j] - mean[j]) / NVAL;
    for (j = 0; j < NO; j++)
        g_out_scale[j] = (float)(1.0 / sqrt(var[j] + 1e-12));
    for (k = 0; k < NVAL; k++)
        for (j = 0; j < NO; j++)
            vout[k][j] *= g_out_scale[j];
}

/* Normalised MSE per output over the validation set (targets are unit-variance). */
static void validate(const struct mlp *m, float (*vin)[NI], float (*vout)[NO], double *nmse)
{
    float h1[NH], h2[NH], out[NO];
    double mean[NO] = { 0 }, var[NO] = { 0 }, err[NO] = { 0 };
    int k, j;
    for (k = 0; k < NVAL; k++)
        for (j = 0; j < NO; j++)
            mean[j] += vout[k][j] / NVAL;
    for (k = 0; k < NVAL; k++) {
        mlp_forward(m, vin[k], h1, h2, out);
        for (j = 0; j < NO; j++) {
            err[j] += (out[j] - vout[k][j]) * (out[j] - vout[k][j]);
            var[j] += (vout[k][j] - mean[j]) * (vout[k][j] - mean[j]);
        }
    }
    for (j = 0; j < NO; j++)
        nmse[j] = err[j] / var[j];
}

static void go_realtime(void)
{
    cpu_set_t set;
    struct sched_param sp;
    int cpu = sched_getcpu();
    CPU_ZERO(&set);
    CPU_SET(cpu < 0 ? 0 : cpu, &set);
    printf("--rt: pinned to CPU %d: %s", cpu,
           sched_setaffinity(0, sizeof set, &set) == 0 ? "yes" : strerror(errno));
    printf("; mlockall: %s", mlockall(MCL_CURRENT | MCL_FUTURE) == 0 ? "yes" : strerror(errno));
    memset(&sp, 0, sizeof sp);
    sp.sched_priority = 80;
    printf("; SCHED_FIFO 80: %s\n",
           sched_setscheduler(0, SCHED_FIFO, &sp) == 0 ? "yes" : strerror(errno));
}

int main(int argc, char **argv)
{
    double seconds = 6.0, hz = 500.0, dt, report_every = 0.5;
    int fast = 0, rt = 0, i, j;
    uint64_t seed = 1;
    struct mlp m;
    flatopt_config cfg;
    flatopt_optimizer *opt = NULL;
    flatopt_status st;
    float(*vin)[NI], (*vout)[NO], (*ring_in)[NI], (*ring_out)[NO];
    const float *batch_in[BATCH], *batch_out[BATCH];
    uint32_t *step_ns, *tick_ns, *all_step_ns;
    long ticks, t, ring_n = 0, window = 0, all_n = 0, misses = 0;
    double nmse0[NO], nmse[NO];
    struct cartpole sys = { 0.0, 0.0, 0.2, 0.0 };
    struct controller ctl;
    struct rng pick = { 0x853C49E6748FEA9Bull }, init = { 0xDA3E39CB94B95BDBull }, noise, episodes;
    struct timespec deadline;
    size_t k, at;

    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc)
            seconds = atof(argv[++i]);
        else if (strcmp(argv[i], "--hz") == 0 && i + 1 < argc)
            hz = atof(argv[++i]);
        else if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc)
            seed = (uint64_t)strtoull(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--fast") == 0)
            fast = 1;
        else if (strcmp(argv[i], "--rt") == 0)
            rt = 1;
        else {
            fprintf(stderr, "usage: %s [--seconds S] [--hz F] [--fast] [--rt] [--seed N]\n",
                    argv[0]);
            return 2;
        }
    }
    if (!(seconds > 0.0 && seconds <= 3600.0 && hz >= 10.0 && hz <= 20000.0)) {
        fprintf(stderr, "online_control: --seconds in (0, 3600], --hz in [10, 20000]\n");
        return 2;
    }
    dt = 1.0 / hz;
    ticks = (long)(seconds * hz + 0.5);
    ctl.ou = 0.0;
    ctl.r.s = seed * 0x9E3779B97F4A7C15ull + 7;
    noise.s = seed * 0xBF58476D1CE4E5B9ull + 3;
    episodes.s = seed * 0xD6E8FEB86659FD93ull + 11;

    /* Everything is allocated here, before the loop. */
    m.total = 0;
    for (k = 0; k < N_BUF; k++)
        m.total += k_lens[k];
    m.p_all = (float *)xcalloc(m.total, sizeof(float));
    m.g_all = (float *)xcalloc(m.total, sizeof(float));
    for (k = 0, at = 0; k < N_BUF; at += k_lens[k], k++) {
        m.p[k] = m.p_all + at;
        m.g[k] = m.g_all + at;
    }
    for (k = 0; k < k_lens[0]; k++)
        m.p[0][k] = (float)(rng_normal(&init) / sqrt((double)NI));
    for (k = 0; k < k_lens[2]; k++)
        m.p[2][k] = (float)(rng_normal(&init) / sqrt((double)NH));
    for (k = 0; k < k_lens[4]; k++)
        m.p[4][k] = (float)(rng_normal(&init) / sqrt((double)NH));
    vin = (float(*)[NI])xcalloc(NVAL, sizeof *vin);
    vout = (float(*)[NO])xcalloc(NVAL, sizeof *vout);
    ring_in = (float(*)[NI])xcalloc(RING, sizeof *ring_in);
    ring_out = (float(*)[NO])xcalloc(RING, sizeof *ring_out);
    step_ns = (uint32_t *)xcalloc((size_t)(report_every * hz) + 2, sizeof(uint32_t));
    tick_ns = (uint32_t *)xcalloc((size_t)(report_every * hz) + 2, sizeof(uint32_t));
    all_step_ns = (uint32_t *)xcalloc((size_t)ticks + 1, sizeof(uint32_t));
    make_validation(vin, vout, hz, seed + 1000);

    flatopt_config_init(&cfg, sizeof cfg);
    cfg.lr = 3e-3;
    cfg.lookahead = 1;
    cfg.sync_period = 5;
    cfg.alpha = 0.5;
    cfg.grad_clip_norm = 1.0;
    if ((st = flatopt_optimizer_new(&cfg, &opt)) != FLATOPT_OK) {
        fprintf(stderr, "flatopt_optimizer_new: %s\n", flatopt_last_error_message());
        return 1;
    }
    for (k = 0; k < N_BUF; k++)
        if ((st = flatopt_optimizer_add_param(opt, m.p[k], m.g[k], k_lens[k])) != FLATOPT_OK) {
            fprintf(stderr, "flatopt_optimizer_add_param: %s\n", flatopt_last_error_message());
            return 1;
        }

    validate(&m, vin, vout, nmse0);
    printf("online_control: cart-pole at %.0f Hz (tick budget %.0f us), %s, %.1f s; MLP %d-%d-%d-%d "
           "(%lu params, %d buffers), Lookahead(Adam) + clip_norm, batch %d, flatopt %s (%s)\n",
           hz, 1e6 * dt, fast ? "unpaced (--fast)" : "paced in real time", seconds, NI, NH, NH,
           NO, (unsigned long)m.total, N_BUF, BATCH, flatopt_version(),
           flatopt_simd_tier_name(flatopt_default_simd_tier()));
    if (rt)
        go_realtime();
    printf("%6s %8s %18s %27s %17s\n", "time", "samples", "validation nMSE",
           "flatopt step (us)", "tick work (us)");
    printf("%6s %8s %9s %8s %8s %8s %9s %8s %8s\n", "s", "", "cart acc", "pole acc", "p50", "p99",
           "max", "p99", "max");
    printf("%6.1f %8d %9.4f %8.4f %8s %8s %9s %8s %8s\n", 0.0, 0, nmse0[0], nmse0[1], "-", "-", "-",
           "-", "-");

    clock_gettime(CLOCK_MONOTONIC, &deadline);
    for (t = 0; t < ticks; t++) {
        uint64_t w0, s0, s1, w1;
        double f;
        struct cartpole before;
        long n;
        if (!fast) { /* wait for this tick's deadline */
            deadline.tv_nsec += (long)(1e9 * dt);
            while (deadline.tv_nsec >= 1000000000L) {
                deadline.tv_nsec -= 1000000000L;
                deadline.tv_sec++;
            }
            clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &deadline, NULL);
        }
        w0 = now_ns();
        if (t % (long)(EPISODE * hz + 0.5) == 0)
            cp_reset(&sys, &episodes);
        /* sense, act, and the world moves on */
        before = sys;
        f = control(&ctl, &sys, dt);
        cp_step(&sys, f, dt);
        /* the new sample: measured accelerations (velocity change / dt) with sensor noise */
        at = (size_t)(ring_n % RING);
        features(&before, f, ring_in[at]);
        ring_out[at][0] = (float)((sys.xd - before.xd) / dt + 0.05 * rng_normal(&noise));
        ring_out[at][1] = (float)((sys.thd - before.thd) / dt + 0.2 * rng_normal(&noise));
        for (j = 0; j < NO; j++)
            ring_out[at][j] *= g_out_scale[j];
        ring_n++;
        /* learn: one mini-batch of recent samples, one optimizer step */
        n = ring_n < RING ? ring_n : RING;
        for (i = 0; i < BATCH; i++) {
            size_t r = (size_t)(rng_uniform(&pick) * (double)n);
            batch_in[i] = ring_in[r];
            batch_out[i] = ring_out[r];
        }
        mlp_backward(&m, batch_in, batch_out, BATCH);
        s0 = now_ns();
        st = flatopt_optimizer_step(opt);
        s1 = now_ns();
        if (st != FLATOPT_OK) {
            fprintf(stderr, "tick %ld: flatopt_optimizer_step: %s\n", t,
                    flatopt_last_error_message());
            return 1;
        }
        w1 = now_ns();
        step_ns[window] = (uint32_t)(s1 - s0);
        tick_ns[window] = (uint32_t)(w1 - w0);
        all_step_ns[all_n++] = (uint32_t)(s1 - s0);
        window++;
        if (!fast && w1 - w0 > (uint64_t)(1e9 * dt))
            misses++;
        if (window >= (long)(report_every * hz + 0.5) || t == ticks - 1) {
            /* Reporting (validation pass, printf) is outside the per-tick work measured above;
             * a real robot would hand the numbers to a logging thread. */
            double a50, a99, amax, b50, b99, bmax;
            validate(&m, vin, vout, nmse);
            stats(step_ns, (int)window, &a50, &a99, &amax);
            stats(tick_ns, (int)window, &b50, &b99, &bmax);
            printf("%6.1f %8ld %9.4f %8.4f %8.2f %8.2f %9.2f %8.1f %8.1f\n", (double)(t + 1) * dt, ring_n,
                   nmse[0], nmse[1], a50, a99, amax, b99, bmax);
            fflush(stdout);
            window = 0;
            if (!fast) { /* do not try to catch up on ticks spent reporting */
                clock_gettime(CLOCK_MONOTONIC, &deadline);
            }
        }
    }
    {
        double a50, a99, amax;
        uint64_t applied = 0;
        stats(all_step_ns, (int)all_n, &a50, &a99, &amax);
        flatopt_optimizer_step_count(opt, &applied);
        printf("flatopt steps: %llu, p50 %.2f us, p99 %.2f us, max %.2f us (tick budget %.0f us)",
               (unsigned long long)applied, a50, a99, amax, 1e6 * dt);
        if (!fast)
            printf("; ticks over budget: %ld of %ld", misses, ticks);
        printf("\nvalidation nMSE (start -> end): cart acceleration %.4f -> %.4f, pole angular "
               "acceleration %.4f -> %.4f\n", nmse0[0], nmse[0], nmse0[1], nmse[1]);
    }
    flatopt_optimizer_free(opt);
    free(m.p_all);
    free(m.g_all);
    free(vin);
    free(vout);
    free(ring_in);
    free(ring_out);
    free(step_ns);
    free(tick_ns);
    free(all_step_ns);
    for (j = 0; j < NO; j++)
        if (!(nmse[j] < 0.25 * nmse0[j])) {
            printf("online_control: FAILED: the model did not learn (output %d)\n", j);
            return 1;
        }
    printf("online_control: the model learned the dynamics online\n");
    return 0;
}
