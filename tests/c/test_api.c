/* tests/c/test_api.c: the C ABI of flatopt (include/flatopt.h), every exported function.
 *
 * Part 1, a table of bad inputs: each row is a description, a small function standing in for a
 * lambda that makes one call, the expected flatopt_status and a substring the message of
 * flatopt_last_error_message() must contain (naming the argument). For every row the runner
 * also checks that nothing changed: every host buffer (params, gradients, stateless state
 * buffers), the slow weights and the counters of every optimizer of the fixture are compared
 * bit for bit before and after, every output location is still filled with a sentinel, and
 * then the fixture and an identical twin that never saw the bad call take the same good steps
 * and must stay bit-identical (this catches hidden state, e.g. Adam moments, being touched).
 *
 * Part 2, the happy paths: Lookahead(Adam) with global-norm clipping against a re-implementation
 * with the stateless functions, step_with_grads, split steps from two pthreads, non-finite
 * policies, stateless updates against the handle, the small kernels, slow weights, schedules,
 * versions, status strings, SIMD tiers, threads, reset, checkpoints (memory and files),
 * Adafactor's shaped registration against an f64 model.
 *
 * Coverage: every flatopt function is called through F(name), which records the name. At the
 * end the recorded set must equal k_api[] (every function of the header); run.sh compares
 * k_api[] (`test_api --list-api`) and the recorded set (`--coverage FILE`) with the function
 * names it extracts from the header, so a new function without a test fails the run.
 *
 *
 * C99, no dependencies besides the library, libm and pthreads.
 */
#define _POSIX_C_SOURCE 200809L

#include "flatopt.h"

#include <dirent.h>
#include <sys/stat.h>
#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ------------------------------------------------------------------------------------------ */
/* Coverage of the API                                                                         */

static const char *const k_api[] = {
    "flatopt_status_str",
    "flatopt_last_error_message",
    "flatopt_version",
    "flatopt_version_number",
    "flatopt_base_params_init",
    "flatopt_schedule_init",
    "flatopt_config_init",
    "flatopt_optimizer_new",
    "flatopt_optimizer_free",
    "flatopt_optimizer_add_param",
    "flatopt_optimizer_step",
    "flatopt_optimizer_step_with_grads",
    "flatopt_optimizer_begin_step",
    "flatopt_optimizer_step_range",
    "flatopt_optimizer_end_step",
    "flatopt_optimizer_reset",
    "flatopt_optimizer_step_count",
    "flatopt_optimizer_skipped_count",
    "flatopt_optimizer_current_lr",
    "flatopt_optimizer_simd_tier",
    "flatopt_optimizer_num_threads",
    "flatopt_optimizer_num_params",
    "flatopt_optimizer_total_len",
    "flatopt_optimizer_state_bytes",
    "flatopt_optimizer_sum_squares_block_count",
    "flatopt_optimizer_sum_squares_partials",
    "flatopt_optimizer_step_with_sum_squares",
    "flatopt_optimizer_norm_partials",
    "flatopt_optimizer_step_with_norms",
    "flatopt_optimizer_set_num_threads",
    "flatopt_optimizer_set_simd_tier",
    "flatopt_optimizer_slow_weights",
    "flatopt_optimizer_copy_slow_weights",
    "flatopt_optimizer_schedule_step",
    "flatopt_optimizer_schedule_step_metric",
    "flatopt_optimizer_schedule_set_epoch",
    "flatopt_default_simd_tier",
    "flatopt_set_default_simd_tier",
    "flatopt_simd_tier_available",
    "flatopt_simd_tier_name",
    "flatopt_step_args_init",
    "flatopt_sgd_update",
    "flatopt_adam_update",
    "flatopt_adamw_update",
    "flatopt_radam_update",
    "flatopt_base_update",
    "flatopt_base_state_buffers",
    "flatopt_base_state_init",
    "flatopt_sum_squares",
    "flatopt_sum_squares_block_size",
    "flatopt_sum_squares_partials",
    "flatopt_clip_scale",
    "flatopt_clip_by_value",
    "flatopt_scale",
    "flatopt_lookahead_sync",
    "flatopt_optimizer_checkpoint_size",
    "flatopt_optimizer_save",
    "flatopt_optimizer_load",
    "flatopt_optimizer_save_file",
    "flatopt_optimizer_load_file",
    "flatopt_optimizer_checkpoint_info",
    "flatopt_group_options_init",
    "flatopt_optimizer_add_group",
    "flatopt_optimizer_add_param_to_group",
    "flatopt_optimizer_num_groups",
    "flatopt_optimizer_param_group",
    "flatopt_optimizer_group_lr",
    "flatopt_optimizer_group_current_lr",
    "flatopt_optimizer_group_current_lr_exact",
    "flatopt_optimizer_group_weight_decay",
    "flatopt_optimizer_set_group_lr",
    "flatopt_optimizer_set_group_weight_decay",
    "flatopt_optimizer_group_base_params",
    "flatopt_param_options_init",
    "flatopt_optimizer_add_param_with_options",
    "flatopt_optimizer_step_mixed",
    "flatopt_optimizer_begin_step_scaled",
    "flatopt_optimizer_begin_step_mixed",
    "flatopt_loss_scaler_options_init",
    "flatopt_optimizer_set_loss_scaler",
    "flatopt_optimizer_loss_scaler_state",
    "flatopt_optimizer_set_loss_scaler_state",
    "flatopt_widen_to_f32",
    "flatopt_narrow_from_f32",
    "flatopt_sum_squares_partials_mixed",
    "flatopt_mixed_update",
    "flatopt_optimizer_set_group_base_params",
};
#define N_API (sizeof k_api / sizeof k_api[0])

static unsigned long g_called[N_API];
static const char *g_unlisted[16];
static int g_n_unlisted;

/* Main thread only (not thread-safe): other threads call the library directly. */
static void cover(const char *name)
{
    size_t i;
    int k;
    for (i = 0; i < N_API; i++) {
        if (strcmp(k_api[i], name) == 0) {
            g_called[i]++;
            return;
        }
    }
    for (k = 0; k < g_n_unlisted; k++)
        if (strcmp(g_unlisted[k], name) == 0)
            return;
    if (g_n_unlisted < 16)
        g_unlisted[g_n_unlisted++] = name;
}

/* F(flatopt_x)(args...) calls flatopt_x and records that it was exercised. */
#define F(fn) (cover(#fn), fn)

/* ------------------------------------------------------------------------------------------ */
/* Checks                                                                                      */

static long g_checks, g_failures, g_rows;
static int g_verbose;

static void check_vat(int ok, const char *file, int line, const char *fmt, va_list ap)
{
    g_checks++;
    if (ok)
        return;
    g_failures++;
    fprintf(stderr, "FAIL %s:%d: ", file, line);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

static int check_at(int ok, const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    check_vat(ok, file, line, fmt, ap);
    va_end(ap);
    return ok;
}

#define CHECK(cond, ...) check_at((cond) ? 1 : 0, __FILE__, __LINE__, __VA_ARGS__)

static const char *status_name(int s)
{
    static const char *const names[] = {
        "FLATOPT_OK", "FLATOPT_SKIPPED", "FLATOPT_ERR_NULL_POINTER",
        "FLATOPT_ERR_INVALID_ARGUMENT", "FLATOPT_ERR_LENGTH_MISMATCH", "FLATOPT_ERR_NON_FINITE",
        "FLATOPT_ERR_INVALID_STATE", "FLATOPT_ERR_UNSUPPORTED", "FLATOPT_ERR_OVERLAP",
        "FLATOPT_ERR_IO", "FLATOPT_ERR_CORRUPT", "FLATOPT_ERR_INTERNAL", "FLATOPT_ERR_BUSY",
        "FLATOPT_ERR_POISONED",
    };
    if (s >= 0 && s < (int)(sizeof names / sizeof names[0]))
        return names[s];
    return "(unknown status)";
}

static const char *last_msg(void)
{
    const char *m = F(flatopt_last_error_message)();
    return m ? m : "(NULL)";
}

static int expect_at(flatopt_status got, flatopt_status want, const char *expr, const char *file,
                     int line)
{
    return check_at(got == want, file, line, "%s returned %s, expected %s (message: \"%s\")",
                    expr, status_name((int)got), status_name((int)want), last_msg());
}
#define EXPECT(call, want) expect_at((call), (want), #call, __FILE__, __LINE__)
#define OK(call) EXPECT(call, FLATOPT_OK)

static int msg_has(const char *needle)
{
    return strstr(last_msg(), needle) != NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* Buffers and data                                                                            */

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    return p;
}

/* n floats plus one spare, so that a pointer moved by one byte still holds n floats. */
static float *falloc(size_t n)
{
    float *p = (float *)xmalloc((n + 1) * sizeof(float));
    memset(p, 0, (n + 1) * sizeof(float));
    return p;
}

static float *fdup(const float *x, size_t n)
{
    float *p = falloc(n);
    if (n)
        memcpy(p, x, n * sizeof(float));
    return p;
}

/* A pointer one byte off: not aligned for float (or double). */
static float *mis(float *p)
{
    return (float *)(void *)((unsigned char *)p + 1);
}

static uint64_t g_rng;
static uint64_t rng_next(void)
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return g_rng;
}
/* Uniform in [-scale, scale), deterministic for a seed. */
static void fill(float *x, size_t n, uint64_t seed, float scale)
{
    size_t i;
    g_rng = seed * 0x9E3779B97F4A7C15ull + 0x1234567ull;
    if (!g_rng)
        g_rng = 1;
    for (i = 0; i < n; i++) {
        double u = (double)(rng_next() >> 11) / 9007199254740992.0;
        x[i] = (float)((2.0 * u - 1.0) * scale);
    }
}

static int same_bits(const float *a, const float *b, size_t n)
{
    return n == 0 || memcmp(a, b, n * sizeof(float)) == 0;
}

static size_t first_diff(const float *a, const float *b, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++)
        if (memcmp(&a[i], &b[i], sizeof(float)) != 0)
            return i;
    return n;
}

#define CHECK_BITS(a, b, n, ...)                                                               \
    do {                                                                                       \
        size_t at_ = first_diff((a), (b), (n));                                                \
        if (!CHECK(at_ == (n), __VA_ARGS__))                                                   \
            fprintf(stderr, "    first difference at element %lu: %.9g vs %.9g\n",            \
                    (unsigned long)at_, (double)(a)[at_], (double)(b)[at_]);                   \
    } while (0)

static uint32_t f2u(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* |a - b| within k ulps (same sign, finite). */
static int near_ulps(float a, float b, uint32_t k)
{
    uint32_t ua = f2u(a), ub = f2u(b);
    if (a == b)
        return 1;
    if ((ua ^ ub) & 0x80000000u)
        return 0;
    return (ua > ub ? ua - ub : ub - ua) <= k;
}

/* ------------------------------------------------------------------------------------------ */
/* Configurations                                                                              */

/* Lookahead(Adam lr 0.01, k, alpha 0.5) with global-norm clipping and coupled weight decay. */
static flatopt_config cfg_la_adam(uint64_t k, double clip_norm)
{
    flatopt_config c;
    OK(F(flatopt_config_init)(&c, sizeof c));
    c.lr = 0.01;
    c.lookahead = 1;
    c.sync_period = k;
    c.alpha = 0.5;
    c.grad_clip_norm = clip_norm;
    c.weight_decay = 0.01;
    return c;
}

static flatopt_optimizer *new_opt(const flatopt_config *c)
{
    flatopt_optimizer *o = NULL;
    OK(F(flatopt_optimizer_new)(c, &o));
    CHECK(o != NULL, "flatopt_optimizer_new gave no handle");
    return o;
}

static uint64_t step_count(const flatopt_optimizer *o)
{
    uint64_t n = 0xDEAD;
    OK(F(flatopt_optimizer_step_count)(o, &n));
    return n;
}
static uint64_t skipped_count(const flatopt_optimizer *o)
{
    uint64_t n = 0xDEAD;
    OK(F(flatopt_optimizer_skipped_count)(o, &n));
    return n;
}
static float current_lr(const flatopt_optimizer *o)
{
    float lr = -1.0f;
    OK(F(flatopt_optimizer_current_lr)(o, &lr));
    return lr;
}
static size_t total_len(const flatopt_optimizer *o)
{
    size_t n = 0;
    OK(F(flatopt_optimizer_total_len)(o, &n));
    return n;
}

/* ------------------------------------------------------------------------------------------ */
/* Part 1: the table of bad inputs                                                             */

enum { FX_NB = 3, FX_XLEN = 8, FX_QLEN = 9, FX_LLEN = 4, SLEN = 11, MLEN0 = 13, MLEN1 = 6 };
static const size_t fx_len[FX_NB] = { 5, 17, 40 };

/* Every location a failing call could write its outputs to, prefilled with 0xA5 bytes. */
typedef struct out_area {
    flatopt_optimizer *opt;
    const float *cfp;
    size_t sz;
    uint64_t u64, u64b;
    uint32_t u32;
    float f;
    double d;
    double dv[8];
    float fv[16];
    flatopt_base_params hp;
    flatopt_schedule sc;
    flatopt_config cf;
    flatopt_step_args sa;
    flatopt_group_options go;
    flatopt_param_options po;
    flatopt_loss_scaler_options lso;
    uint16_t hv[16];
    unsigned char ckpt[4096];
} out_area;

typedef struct fixture {
    /* Lookahead(Adam) + clip_norm + weight decay over p[0..2] with grads g[0..2]: registered,
     * not stepped. */
    flatopt_optimizer *opt;
    /* Same configuration, nothing registered. */
    flatopt_optimizer *bare;
    /* SGD with momentum, no Lookahead, over q / qg. */
    flatopt_optimizer *nola;
    /* SGD on a ReduceOnPlateau schedule over l / lg. */
    flatopt_optimizer *plat;
    float *p[FX_NB], *g[FX_NB];
    float *gg[FX_NB]; /* copies of g for step_with_grads */
    const float *grads[FX_NB];
    float *xp, *xg; /* a spare pair of FX_XLEN */
    float *q, *qg, *l, *lg;
    /* Stateless buffers of SLEN. */
    float *sp, *sg, *sm, *sv, *svm, *ss;
    /* Mixed precision: Adam with a dynamic loss scaler (scale 256) over mp0 (bf16 gradients
     * mg0, bf16 copy mc0) and mp1 (fp16 gradients mg1, fp16 copy mc1). */
    flatopt_optimizer *mix;
    float *mp0, *mp1;
    uint16_t *mg0, *mg1, *mc0, *mc1;
    /* Spare 16-bit gradients and copy of FX_XLEN; stateless 16-bit gradients and copy of
     * SLEN. */
    uint16_t *xh, *xc, *sh, *shc;
    double part[4];
    flatopt_config cfg; /* the configuration of opt */
    flatopt_base_params hp_adam, hp_sgd;
    flatopt_step_args args;
    uint64_t milestones[3];
    double values[4];
    out_area out;
    int pending;
    size_t pending_from; /* a pending step is applied up to here by its setup */
    /* Statuses of the follow-up steps, compared with the twin's. */
    int fu[32];
    int n_fu;
} fixture;

static uint16_t *halloc(size_t n)
{
    uint16_t *p = (uint16_t *)xmalloc((n ? n : 1) * sizeof(uint16_t));
    memset(p, 0, (n ? n : 1) * sizeof(uint16_t));
    return p;
}

/* n 16-bit values of format dtype narrowed from a fill(seed, scale). */
static uint16_t *hfill(uint32_t dtype, size_t n, uint64_t seed, float scale)
{
    float *f = falloc(n);
    uint16_t *h = halloc(n);
    fill(f, n, seed, scale);
    OK(F(flatopt_narrow_from_f32)(dtype, f, h, n));
    free(f);
    return h;
}

static void mixed_fixture_init(fixture *fx)
{
    flatopt_config c;
    flatopt_param_options o;
    flatopt_loss_scaler_options so = FLATOPT_LOSS_SCALER_OPTIONS_INIT;
    fx->mp0 = falloc(MLEN0);
    fx->mp1 = falloc(MLEN1);
    fill(fx->mp0, MLEN0, 50, 1.0f);
    fill(fx->mp1, MLEN1, 51, 1.0f);
    fx->mg0 = hfill(FLATOPT_DTYPE_BF16, MLEN0, 52, 100.0f);
    fx->mg1 = hfill(FLATOPT_DTYPE_F16, MLEN1, 53, 100.0f);
    fx->mc0 = halloc(MLEN0);
    fx->mc1 = halloc(MLEN1);
    fx->xh = hfill(FLATOPT_DTYPE_BF16, FX_XLEN, 54, 1.0f);
    fx->xc = halloc(FX_XLEN);
    fx->sh = hfill(FLATOPT_DTYPE_BF16, SLEN, 55, 1.0f);
    fx->shc = halloc(SLEN);
    OK(F(flatopt_config_init)(&c, sizeof c));
    c.lr = 0.01;
    fx->mix = new_opt(&c);
    OK(F(flatopt_param_options_init)(&o, sizeof o));
    o.grad_dtype = FLATOPT_DTYPE_BF16;
    o.copy = fx->mc0;
    o.copy_dtype = FLATOPT_DTYPE_BF16;
    OK(F(flatopt_optimizer_add_param_with_options)(fx->mix, fx->mp0, fx->mg0, MLEN0, &o));
    o.grad_dtype = FLATOPT_DTYPE_F16;
    o.copy = fx->mc1;
    o.copy_dtype = FLATOPT_DTYPE_F16;
    OK(F(flatopt_optimizer_add_param_with_options)(fx->mix, fx->mp1, fx->mg1, MLEN1, &o));
    so.init_scale = 256.0f;
    OK(F(flatopt_optimizer_set_loss_scaler)(fx->mix, &so));
}

static void fixture_init(fixture *fx)
{
    size_t i;
    flatopt_config c;
    flatopt_base_params cb;
    flatopt_schedule s;
    memset(fx, 0, sizeof *fx);
    for (i = 0; i < FX_NB; i++) {
        fx->p[i] = falloc(fx_len[i]);
        fx->g[i] = falloc(fx_len[i]);
        fill(fx->p[i], fx_len[i], 10 + i, 1.0f);
        fill(fx->g[i], fx_len[i], 20 + i, 2.0f);
        fx->gg[i] = fdup(fx->g[i], fx_len[i]);
        fx->grads[i] = fx->gg[i];
    }
    fx->xp = falloc(FX_XLEN);
    fx->xg = falloc(FX_XLEN);
    fill(fx->xp, FX_XLEN, 30, 1.0f);
    fill(fx->xg, FX_XLEN, 31, 1.0f);
    fx->q = falloc(FX_QLEN);
    fx->qg = falloc(FX_QLEN);
    fill(fx->q, FX_QLEN, 32, 1.0f);
    fill(fx->qg, FX_QLEN, 33, 1.0f);
    fx->l = falloc(FX_LLEN);
    fx->lg = falloc(FX_LLEN);
    fill(fx->l, FX_LLEN, 34, 1.0f);
    fill(fx->lg, FX_LLEN, 35, 1.0f);
    fx->sp = falloc(SLEN);
    fx->sg = falloc(SLEN);
    fx->sm = falloc(SLEN);
    fx->sv = falloc(SLEN);
    fx->svm = falloc(SLEN);
    fx->ss = falloc(SLEN);
    fill(fx->sp, SLEN, 40, 1.0f);
    fill(fx->sg, SLEN, 41, 1.0f);
    fill(fx->sm, SLEN, 42, 0.1f);
    fill(fx->sv, SLEN, 43, 0.1f);
    for (i = 0; i < SLEN; i++) {
        fx->sv[i] = fabsf(fx->sv[i]);
        fx->svm[i] = fx->sv[i] * 1.5f;
    }
    fill(fx->ss, SLEN, 44, 1.0f);
    for (i = 0; i < 4; i++)
        fx->part[i] = 1234.5 + (double)i;

    mixed_fixture_init(fx);

    fx->cfg = cfg_la_adam(2, 1.0);
    fx->opt = new_opt(&fx->cfg);
    for (i = 0; i < FX_NB; i++)
        OK(F(flatopt_optimizer_add_param)(fx->opt, fx->p[i], fx->g[i], fx_len[i]));
    fx->bare = new_opt(&fx->cfg);

    OK(F(flatopt_config_init)(&c, sizeof c));
    OK(F(flatopt_base_params_init)(&cb, sizeof cb, FLATOPT_SGD));
    cb.momentum = 0.9;
    c.base = &cb;
    c.lr = 0.05;
    fx->nola = new_opt(&c);
    OK(F(flatopt_optimizer_add_param)(fx->nola, fx->q, fx->qg, FX_QLEN));

    OK(F(flatopt_schedule_init)(&s, sizeof s, FLATOPT_SCHEDULE_REDUCE_ON_PLATEAU));
    s.base_lr = 0.1;
    s.factor = 0.5;
    s.patience = 1;
    OK(F(flatopt_base_params_init)(&cb, sizeof cb, FLATOPT_SGD));
    c.schedule = &s;
    fx->plat = new_opt(&c);
    OK(F(flatopt_optimizer_add_param)(fx->plat, fx->l, fx->lg, FX_LLEN));

    OK(F(flatopt_base_params_init)(&fx->hp_adam, sizeof fx->hp_adam, FLATOPT_ADAM));
    OK(F(flatopt_base_params_init)(&fx->hp_sgd, sizeof fx->hp_sgd, FLATOPT_SGD));
    fx->hp_sgd.momentum = 0.9;
    OK(F(flatopt_step_args_init)(&fx->args, sizeof fx->args));
    fx->args.lr = 0.01;
    fx->args.step = 3;
    fx->args.sync = 1;
    fx->args.alpha = 0.5;
    fx->milestones[0] = 3;
    fx->milestones[1] = 6;
    fx->milestones[2] = 9;
    fx->values[0] = 0.1;
    fx->values[1] = 0.01;
    fx->values[2] = 0.001;
    fx->values[3] = 0.0001;
    memset(&fx->out, 0xA5, sizeof fx->out);
}

static void fixture_free(fixture *fx)
{
    size_t i;
    F(flatopt_optimizer_free)(fx->opt);
    F(flatopt_optimizer_free)(fx->bare);
    F(flatopt_optimizer_free)(fx->nola);
    F(flatopt_optimizer_free)(fx->plat);
    F(flatopt_optimizer_free)(fx->mix);
    free(fx->mp0);
    free(fx->mp1);
    free(fx->mg0);
    free(fx->mg1);
    free(fx->mc0);
    free(fx->mc1);
    free(fx->xh);
    free(fx->xc);
    free(fx->sh);
    free(fx->shc);
    for (i = 0; i < FX_NB; i++) {
        free(fx->p[i]);
        free(fx->g[i]);
        free(fx->gg[i]);
    }
    free(fx->xp);
    free(fx->xg);
    free(fx->q);
    free(fx->qg);
    free(fx->l);
    free(fx->lg);
    free(fx->sp);
    free(fx->sg);
    free(fx->sm);
    free(fx->sv);
    free(fx->svm);
    free(fx->ss);
}

/* A snapshot of everything a call could change: host buffers, slow weights, counters. */
typedef struct snapshot {
    unsigned char *bytes;
    size_t n, cap;
    const char *names[96];
    size_t offs[96];
    int nregions;
} snapshot;

static void snap_add(snapshot *s, const char *name, const void *p, size_t n)
{
    if (s->n + n > s->cap) {
        size_t cap = 2 * (s->n + n) + 256;
        unsigned char *b = (unsigned char *)xmalloc(cap);
        if (s->n)
            memcpy(b, s->bytes, s->n);
        free(s->bytes);
        s->bytes = b;
        s->cap = cap;
    }
    if (s->nregions < 96) {
        s->names[s->nregions] = name;
        s->offs[s->nregions++] = s->n;
    }
    if (n)
        memcpy(s->bytes + s->n, p, n);
    s->n += n;
}

static void snap_counters(snapshot *s, const char *name, const flatopt_optimizer *o)
{
    struct {
        uint64_t steps, skipped;
        size_t nparams, total;
        float lr;
        uint32_t tier, threads;
        size_t ngroups;
        int st[8];
    } c;
    memset(&c, 0, sizeof c);
    c.st[0] = F(flatopt_optimizer_step_count)(o, &c.steps);
    c.st[1] = F(flatopt_optimizer_skipped_count)(o, &c.skipped);
    c.st[2] = F(flatopt_optimizer_num_params)(o, &c.nparams);
    c.st[3] = F(flatopt_optimizer_total_len)(o, &c.total);
    c.st[4] = F(flatopt_optimizer_current_lr)(o, &c.lr);
    c.st[5] = F(flatopt_optimizer_simd_tier)(o, &c.tier);
    c.st[6] = F(flatopt_optimizer_num_threads)(o, &c.threads);
    c.st[7] = F(flatopt_optimizer_num_groups)(o, &c.ngroups);
    snap_add(s, name, &c, sizeof c);
}

/* The optimizer's own checkpoint: every hidden state array, the counters and the schedule. */
static void snap_checkpoint(snapshot *s, const char *name, const flatopt_optimizer *o)
{
    size_t n = 0, w = 0;
    unsigned char *b;
    int st = F(flatopt_optimizer_checkpoint_size)(o, &n);
    b = (unsigned char *)xmalloc(n + 1);
    memset(b, 0, n + 1);
    if (st == FLATOPT_OK)
        st = F(flatopt_optimizer_save)(o, b, n, &w);
    snap_add(s, name, &st, sizeof st);
    snap_add(s, name, &w, sizeof w);
    snap_add(s, name, b, n);
    free(b);
}

static void snap_take(snapshot *s, const fixture *fx)
{
    size_t i;
    uint32_t tier;
    memset(s, 0, sizeof *s);
    for (i = 0; i < FX_NB; i++) {
        float slow[64];
        snap_add(s, "registered param", fx->p[i], fx_len[i] * sizeof(float));
        snap_add(s, "registered grad", fx->g[i], fx_len[i] * sizeof(float));
        snap_add(s, "step_with_grads grad", fx->gg[i], fx_len[i] * sizeof(float));
        memset(slow, 0, sizeof slow);
        OK(F(flatopt_optimizer_copy_slow_weights)(fx->opt, i, slow, fx_len[i]));
        snap_add(s, "slow weights", slow, fx_len[i] * sizeof(float));
    }
    snap_add(s, "spare param", fx->xp, FX_XLEN * sizeof(float));
    snap_add(s, "spare grad", fx->xg, FX_XLEN * sizeof(float));
    snap_add(s, "nola param", fx->q, FX_QLEN * sizeof(float));
    snap_add(s, "nola grad", fx->qg, FX_QLEN * sizeof(float));
    snap_add(s, "plateau param", fx->l, FX_LLEN * sizeof(float));
    snap_add(s, "plateau grad", fx->lg, FX_LLEN * sizeof(float));
    snap_add(s, "stateless param", fx->sp, SLEN * sizeof(float));
    snap_add(s, "stateless grad", fx->sg, SLEN * sizeof(float));
    snap_add(s, "stateless m", fx->sm, SLEN * sizeof(float));
    snap_add(s, "stateless v", fx->sv, SLEN * sizeof(float));
    snap_add(s, "stateless v_max", fx->svm, SLEN * sizeof(float));
    snap_add(s, "stateless slow", fx->ss, SLEN * sizeof(float));
    snap_add(s, "partials", fx->part, sizeof fx->part);
    snap_counters(s, "counters of opt", fx->opt);
    snap_counters(s, "counters of bare", fx->bare);
    snap_counters(s, "counters of nola", fx->nola);
    snap_counters(s, "counters of plat", fx->plat);
    snap_checkpoint(s, "state (checkpoint) of opt", fx->opt);
    snap_checkpoint(s, "state (checkpoint) of nola", fx->nola);
    snap_checkpoint(s, "state (checkpoint) of plat", fx->plat);
    snap_add(s, "mixed param 0", fx->mp0, MLEN0 * sizeof(float));
    snap_add(s, "mixed param 1", fx->mp1, MLEN1 * sizeof(float));
    snap_add(s, "mixed bf16 grad 0", fx->mg0, MLEN0 * sizeof(uint16_t));
    snap_add(s, "mixed fp16 grad 1", fx->mg1, MLEN1 * sizeof(uint16_t));
    snap_add(s, "mixed bf16 copy 0", fx->mc0, MLEN0 * sizeof(uint16_t));
    snap_add(s, "mixed fp16 copy 1", fx->mc1, MLEN1 * sizeof(uint16_t));
    snap_add(s, "spare 16-bit grad", fx->xh, FX_XLEN * sizeof(uint16_t));
    snap_add(s, "spare 16-bit copy", fx->xc, FX_XLEN * sizeof(uint16_t));
    snap_add(s, "stateless 16-bit grad", fx->sh, SLEN * sizeof(uint16_t));
    snap_add(s, "stateless 16-bit copy", fx->shc, SLEN * sizeof(uint16_t));
    snap_counters(s, "counters of mix", fx->mix);
    snap_checkpoint(s, "state (checkpoint, loss scaler included) of mix", fx->mix);
    {
        struct {
            float scale;
            uint32_t tracker, found_inf;
            int st;
        } ls;
        memset(&ls, 0, sizeof ls);
        ls.st = F(flatopt_optimizer_loss_scaler_state)(fx->mix, &ls.scale, &ls.tracker,
                                                       &ls.found_inf);
        snap_add(s, "loss scaler of mix", &ls, sizeof ls);
    }
    tier = F(flatopt_default_simd_tier)();
    snap_add(s, "default simd tier", &tier, sizeof tier);
}

/* Name of the first region where two snapshots differ, or NULL. */
static const char *snap_diff(const snapshot *a, const snapshot *b)
{
    size_t i;
    int r;
    if (a->n != b->n)
        return "(snapshot size)";
    for (i = 0; i < a->n; i++) {
        if (a->bytes[i] != b->bytes[i]) {
            const char *name = "?";
            for (r = 0; r < a->nregions; r++)
                if (a->offs[r] <= i)
                    name = a->names[r];
            return name;
        }
    }
    return NULL;
}

static void snap_free(snapshot *s)
{
    free(s->bytes);
    s->bytes = NULL;
}

static int out_untouched(const fixture *fx)
{
    const unsigned char *b = (const unsigned char *)&fx->out;
    size_t i;
    for (i = 0; i < sizeof fx->out; i++)
        if (b[i] != 0xA5)
            return 0;
    return 1;
}

/* Good steps after the row, done identically on the fixture and its twin. */
static void follow_up(fixture *fx)
{
    int k;
    size_t n;
    fx->n_fu = 0;
#define FU(call) (fx->fu[fx->n_fu++] = (int)(call))
    if (fx->pending) {
        n = 0;
        FU(F(flatopt_optimizer_total_len)(fx->opt, &n));
        FU(F(flatopt_optimizer_step_range)(fx->opt, fx->pending_from, n));
        FU(F(flatopt_optimizer_end_step)(fx->opt));
        fx->pending = 0;
    }
    for (k = 0; k < 3; k++)
        FU(F(flatopt_optimizer_step)(fx->opt));
    FU(F(flatopt_optimizer_add_param)(fx->bare, fx->xp, fx->xg, FX_XLEN));
    FU(F(flatopt_optimizer_step)(fx->bare));
    FU(F(flatopt_optimizer_step)(fx->bare));
    FU(F(flatopt_optimizer_step)(fx->nola));
    FU(F(flatopt_optimizer_step)(fx->nola));
    FU(F(flatopt_optimizer_schedule_step_metric)(fx->plat, 1.0));
    FU(F(flatopt_optimizer_schedule_step_metric)(fx->plat, 1.0));
    FU(F(flatopt_optimizer_schedule_step_metric)(fx->plat, 1.0));
    FU(F(flatopt_optimizer_step)(fx->plat));
    FU(F(flatopt_adam_update)(&fx->hp_adam, &fx->args, fx->sp, fx->sg, fx->sm, fx->sv, NULL,
                              fx->ss, SLEN));
    FU(F(flatopt_optimizer_step)(fx->mix));
    FU(F(flatopt_optimizer_step_mixed)(fx->mix, NULL, 0, 0.0f));
    FU(F(flatopt_mixed_update)(&fx->hp_adam, &fx->args, 8.0f, fx->sp, fx->sh, FLATOPT_DTYPE_BF16,
                               fx->sm, fx->sv, NULL, fx->ss, fx->shc, FLATOPT_DTYPE_BF16, SLEN));
#undef FU
}

typedef flatopt_status (*row_fn)(fixture *fx);
typedef void (*setup_fn)(fixture *fx);

typedef struct row {
    const char *what;
    setup_fn setup;
    row_fn call;
    flatopt_status want;
    const char *needle; /* must be in flatopt_last_error_message() */
} row;

static void setup_stepped(fixture *fx)
{
    OK(F(flatopt_optimizer_step)(fx->opt));
}
static void setup_pending(fixture *fx)
{
    OK(F(flatopt_optimizer_begin_step)(fx->opt));
    fx->pending = 1;
}
/* A begun step with elements [0, 10) applied (buffer 0 and half of buffer 1). */
static void setup_part(fixture *fx)
{
    setup_pending(fx);
    OK(F(flatopt_optimizer_step_range)(fx->opt, 0, 10));
    fx->pending_from = 10;
}

/* Sets a message no row produces, so that a stale message cannot pass a row. */
static char g_primer[256];
static void prime_message(void)
{
    double d = 0.0;
    EXPECT(F(flatopt_clip_scale)(-7777.0, 1.0, &d), FLATOPT_ERR_INVALID_ARGUMENT);
    strncpy(g_primer, last_msg(), sizeof g_primer - 1);
    CHECK(strstr(g_primer, "-7777") != NULL, "primer message: \"%s\"", g_primer);
}

static void run_row(const row *r, int index)
{
    fixture fx, tw;
    snapshot before, after, fa, ta;
    flatopt_status st;
    const char *where;
    char msg[1024];
    int k;
    long failures_before = g_failures;

    g_rows++;
    fixture_init(&fx);
    fixture_init(&tw);
    if (r->setup) {
        r->setup(&fx);
        r->setup(&tw);
    }
    snap_take(&before, &fx);
    prime_message();
    st = r->call(&fx);
    strncpy(msg, last_msg(), sizeof msg - 1);
    msg[sizeof msg - 1] = 0;
    if (g_verbose)
        printf("row %3d %-62s -> %-28s \"%s\"\n", index, r->what, status_name((int)st), msg);
    CHECK(st == r->want, "row %d (%s): returned %s, expected %s (message: \"%s\")", index,
          r->what, status_name((int)st), status_name((int)r->want), msg);
    CHECK(strstr(msg, r->needle) != NULL && strcmp(msg, g_primer) != 0,
          "row %d (%s): message \"%s\" does not contain \"%s\"", index, r->what, msg, r->needle);
    CHECK(out_untouched(&fx), "row %d (%s): an output was written on failure", index, r->what);
    snap_take(&after, &fx);
    where = snap_diff(&before, &after);
    CHECK(where == NULL, "row %d (%s): the failed call changed %s", index, r->what,
          where ? where : "");
    follow_up(&fx);
    follow_up(&tw);
    CHECK(fx.n_fu == tw.n_fu, "row %d (%s): follow-up differs", index, r->what);
    for (k = 0; k < tw.n_fu && k < fx.n_fu; k++) {
        CHECK(tw.fu[k] == FLATOPT_OK, "row %d (%s): twin follow-up call %d returned %s", index,
              r->what, k, status_name(tw.fu[k]));
        CHECK(fx.fu[k] == tw.fu[k], "row %d (%s): follow-up call %d returned %s after the "
              "bad call, %s without it", index, r->what, k, status_name(fx.fu[k]),
              status_name(tw.fu[k]));
    }
    snap_take(&fa, &fx);
    snap_take(&ta, &tw);
    where = snap_diff(&fa, &ta);
    CHECK(where == NULL, "row %d (%s): after the bad call, good steps give different %s than "
          "without it (hidden state changed)", index, r->what, where ? where : "");
    snap_free(&before);
    snap_free(&after);
    snap_free(&fa);
    snap_free(&ta);
    fixture_free(&fx);
    fixture_free(&tw);
    /* One line per row, so that the log names every row and a failure's row. */
    printf("row %3d %-6s %s\n", index, g_failures == failures_before ? "ok" : "FAILED", r->what);
}

/* Row bodies. Each one makes one call (after preparing local copies of its arguments). */
#define R(name) static flatopt_status name(fixture *fx)

/* init functions */
R(r_bpi_null) { (void)fx; return F(flatopt_base_params_init)(NULL, sizeof(flatopt_base_params), FLATOPT_ADAM); }
R(r_bpi_kind) { return F(flatopt_base_params_init)(&fx->out.hp, sizeof fx->out.hp, 99); }
R(r_bpi_kind_next) { return F(flatopt_base_params_init)(&fx->out.hp, sizeof fx->out.hp, FLATOPT_ADAFACTOR + 1); }
R(r_si_null) { (void)fx; return F(flatopt_schedule_init)(NULL, sizeof(flatopt_schedule), FLATOPT_SCHEDULE_EXPONENTIAL); }
R(r_si_kind) { return F(flatopt_schedule_init)(&fx->out.sc, sizeof fx->out.sc, 99); }
R(r_si_kind16) { return F(flatopt_schedule_init)(&fx->out.sc, sizeof fx->out.sc, 16); }
R(r_ci_null) { (void)fx; return F(flatopt_config_init)(NULL, sizeof(flatopt_config)); }
/* Versioned structs (see "Versioned structs" at the top of flatopt.h): the init functions write
 * nothing for a size that is no version's, and every reader refuses it. */
R(r_ci_size_small) { return F(flatopt_config_init)(&fx->out.cf, FLATOPT_CONFIG_SIZE_V1 - 8); }
R(r_ci_size_huge) { return F(flatopt_config_init)(&fx->out.cf, (size_t)1 << 40); }
R(r_bpi_size0) { return F(flatopt_base_params_init)(&fx->out.hp, 0, FLATOPT_ADAM); }
R(r_si_size4) { return F(flatopt_schedule_init)(&fx->out.sc, 4, FLATOPT_SCHEDULE_FIXED); }
R(r_sai_size_small)
{
    return F(flatopt_step_args_init)(&fx->out.sa, FLATOPT_STEP_ARGS_SIZE_V1 - 8);
}
R(r_sai_null) { (void)fx; return F(flatopt_step_args_init)(NULL, sizeof(flatopt_step_args)); }

/* parameter groups: the options struct, adding a group, registering into one, group queries
 * and setters. */
R(r_goi_null) { (void)fx; return F(flatopt_group_options_init)(NULL, sizeof(flatopt_group_options)); }
R(r_goi_size) { return F(flatopt_group_options_init)(&fx->out.go, FLATOPT_GROUP_OPTIONS_SIZE_V1 - 8); }
#define GROUP_ROW(name, stmt)                                                                  \
    R(name)                                                                                    \
    {                                                                                          \
        flatopt_group_options o = FLATOPT_GROUP_OPTIONS_INIT;                                  \
        flatopt_base_params gb = FLATOPT_BASE_PARAMS_INIT(FLATOPT_ADAM);                       \
        stmt;                                                                                  \
        return F(flatopt_optimizer_add_group)(fx->opt, &o, &fx->out.sz);                       \
    }
GROUP_ROW(r_ag_size0, (void)gb; o.struct_size = 0)
GROUP_ROW(r_ag_reserved, (void)gb; o.reserved = 1)
GROUP_ROW(r_ag_lr_neg, (void)gb; o.lr = -1.0)
GROUP_ROW(r_ag_lr_f32, (void)gb; o.lr = 1e39)
GROUP_ROW(r_ag_wd_inf, (void)gb; o.weight_decay = INFINITY)
GROUP_ROW(r_ag_wd_neg, (void)gb; o.weight_decay = -0.5)
GROUP_ROW(r_ag_base_kind, gb.kind = FLATOPT_SGD; o.base = &gb)
GROUP_ROW(r_ag_base_b1, gb.b1 = 1.0; o.base = &gb)
GROUP_ROW(r_ag_base_size, gb.struct_size = 3; o.base = &gb)
R(r_ag_opt_null) { return F(flatopt_optimizer_add_group)(NULL, NULL, &fx->out.sz); }
R(r_ag_out_null) { return F(flatopt_optimizer_add_group)(fx->opt, NULL, NULL); }
R(r_ag_pending) { return F(flatopt_optimizer_add_group)(fx->opt, NULL, &fx->out.sz); }
R(r_apg_group) { return F(flatopt_optimizer_add_param_to_group)(fx->opt, 1, fx->xp, fx->xg, FX_XLEN); }
R(r_apg_group_max)
{
    return F(flatopt_optimizer_add_param_to_group)(fx->opt, SIZE_MAX, fx->xp, fx->xg, FX_XLEN);
}
R(r_apg_opt_null) { return F(flatopt_optimizer_add_param_to_group)(NULL, 0, fx->xp, fx->xg, FX_XLEN); }
R(r_apg_param_null) { return F(flatopt_optimizer_add_param_to_group)(fx->opt, 0, NULL, fx->xg, FX_XLEN); }
R(r_apg_overlap) { return F(flatopt_optimizer_add_param_to_group)(fx->opt, 0, fx->p[0], fx->xg, 2); }
R(r_apg_stepped) { return F(flatopt_optimizer_add_param_to_group)(fx->opt, 0, fx->xp, fx->xg, FX_XLEN); }
R(r_ng_null) { return F(flatopt_optimizer_num_groups)(NULL, &fx->out.sz); }
R(r_ng_out) { return F(flatopt_optimizer_num_groups)(fx->opt, NULL); }
R(r_pg_index) { return F(flatopt_optimizer_param_group)(fx->opt, FX_NB, &fx->out.sz); }
R(r_pg_out) { return F(flatopt_optimizer_param_group)(fx->opt, 0, NULL); }
R(r_pg_null) { return F(flatopt_optimizer_param_group)(NULL, 0, &fx->out.sz); }
R(r_glr_group) { return F(flatopt_optimizer_group_lr)(fx->opt, 1, &fx->out.d); }
R(r_glr_out) { return F(flatopt_optimizer_group_lr)(fx->opt, 0, NULL); }
R(r_glr_null) { return F(flatopt_optimizer_group_lr)(NULL, 0, &fx->out.d); }
R(r_gclr_group) { return F(flatopt_optimizer_group_current_lr)(fx->opt, 7, &fx->out.f); }
R(r_gclr_out) { return F(flatopt_optimizer_group_current_lr)(fx->opt, 0, NULL); }
R(r_gclx_group) { return F(flatopt_optimizer_group_current_lr_exact)(fx->opt, 1, &fx->out.d); }
R(r_gclx_out) { return F(flatopt_optimizer_group_current_lr_exact)(fx->opt, 0, NULL); }
R(r_gclx_null) { return F(flatopt_optimizer_group_current_lr_exact)(NULL, 0, &fx->out.d); }
R(r_gwd_group) { return F(flatopt_optimizer_group_weight_decay)(fx->opt, SIZE_MAX, &fx->out.d); }
R(r_gwd_out) { return F(flatopt_optimizer_group_weight_decay)(fx->opt, 0, NULL); }
R(r_sglr_group) { return F(flatopt_optimizer_set_group_lr)(fx->opt, 1, 0.1); }
R(r_sglr_neg) { return F(flatopt_optimizer_set_group_lr)(fx->opt, 0, -0.1); }
R(r_sglr_inf) { return F(flatopt_optimizer_set_group_lr)(fx->opt, 0, INFINITY); }
R(r_sglr_f32) { return F(flatopt_optimizer_set_group_lr)(fx->opt, 0, 1e39); }
R(r_sglr_null) { (void)fx; return F(flatopt_optimizer_set_group_lr)(NULL, 0, 0.1); }
R(r_sglr_pending) { return F(flatopt_optimizer_set_group_lr)(fx->opt, 0, 0.1); }
R(r_sgwd_nan) { return F(flatopt_optimizer_set_group_weight_decay)(fx->opt, 0, NAN); }
R(r_sgwd_neg) { return F(flatopt_optimizer_set_group_weight_decay)(fx->opt, 0, -1.0); }
R(r_sgwd_group) { return F(flatopt_optimizer_set_group_weight_decay)(fx->opt, 3, 0.1); }
R(r_sgwd_null) { (void)fx; return F(flatopt_optimizer_set_group_weight_decay)(NULL, 0, 0.1); }
R(r_sgwd_pending) { return F(flatopt_optimizer_set_group_weight_decay)(fx->opt, 0, 0.1); }
R(r_gbp_group) { return F(flatopt_optimizer_group_base_params)(fx->opt, 2, &fx->out.hp, sizeof fx->out.hp); }
R(r_gbp_out) { return F(flatopt_optimizer_group_base_params)(fx->opt, 0, NULL, sizeof(flatopt_base_params)); }
R(r_gbp_size) { return F(flatopt_optimizer_group_base_params)(fx->opt, 0, &fx->out.hp, 12); }
R(r_gbp_null) { return F(flatopt_optimizer_group_base_params)(NULL, 0, &fx->out.hp, sizeof fx->out.hp); }
#define SET_BASE_ROW(name, group, stmt)                                                        \
    R(name)                                                                                    \
    {                                                                                          \
        flatopt_base_params b = FLATOPT_BASE_PARAMS_INIT(FLATOPT_ADAM);                        \
        stmt;                                                                                  \
        return F(flatopt_optimizer_set_group_base_params)(fx->opt, group, &b);                 \
    }
SET_BASE_ROW(r_sgb_group, 1, (void)b)
SET_BASE_ROW(r_sgb_kind, 0, b = fx->hp_sgd)
SET_BASE_ROW(r_sgb_b1, 0, b.b1 = 1.0)
SET_BASE_ROW(r_sgb_eps, 0, b.eps = NAN)
SET_BASE_ROW(r_sgb_size, 0, b.struct_size = 3)
SET_BASE_ROW(r_sgb_amsgrad, 0, b.amsgrad = 1)
SET_BASE_ROW(r_sgb_pending, 0, b.b1 = 0.8)
R(r_sgb_null) { return F(flatopt_optimizer_set_group_base_params)(fx->opt, 0, NULL); }
R(r_sgb_opt_null) { return F(flatopt_optimizer_set_group_base_params)(NULL, 0, &fx->hp_adam); }

/* flatopt_optimizer_new: on a wrong success the handle is freed (the row fails anyway). */
static flatopt_status new_into_out(fixture *fx, const flatopt_config *c)
{
    flatopt_status st = F(flatopt_optimizer_new)(c, &fx->out.opt);
    if (st == FLATOPT_OK)
        F(flatopt_optimizer_free)(fx->out.opt);
    return st;
}
#define CFG_ROW(name, stmt)                                                                    \
    R(name)                                                                                    \
    {                                                                                          \
        flatopt_config c = fx->cfg;                                                            \
        flatopt_base_params cb = FLATOPT_BASE_PARAMS_INIT(FLATOPT_ADAM);                       \
        c.base = &cb;                                                                          \
        stmt;                                                                                  \
        return new_into_out(fx, &c);                                                           \
    }
#define SGD_ROW(name, stmt)                                                                    \
    R(name)                                                                                    \
    {                                                                                          \
        flatopt_config c = fx->cfg;                                                            \
        flatopt_base_params cb;                                                                \
        F(flatopt_base_params_init)(&cb, sizeof cb, FLATOPT_SGD);                              \
        cb.momentum = 0.9;                                                                     \
        c.base = &cb;                                                                          \
        stmt;                                                                                  \
        return new_into_out(fx, &c);                                                           \
    }
#define SCHED_ROW(name, kind, stmt)                                                            \
    R(name)                                                                                    \
    {                                                                                          \
        flatopt_config c = fx->cfg;                                                            \
        flatopt_schedule s;                                                                    \
        F(flatopt_schedule_init)(&s, sizeof s, kind);                                          \
        stmt;                                                                                  \
        c.schedule = &s;                                                                       \
        return new_into_out(fx, &c);                                                           \
    }

/* A newer caller's structs: the library's, followed by fields of a later header. */
typedef struct config_v9 {
    flatopt_config c;
    uint64_t future[4];
} config_v9;
typedef struct base_v9 {
    flatopt_base_params b;
    uint64_t future[2];
} base_v9;
typedef struct schedule_v9 {
    flatopt_schedule s;
    uint64_t future[2];
} schedule_v9;
typedef struct step_args_v9 {
    flatopt_step_args a;
    uint64_t future[2];
} step_args_v9;
R(r_new_newer_set)
{
    config_v9 n;
    memset(&n, 0, sizeof n);
    n.c = fx->cfg;
    n.c.struct_size = (uint32_t)sizeof n;
    n.future[1] = 7; /* byte 128: a field this library does not know, set */
    return new_into_out(fx, &n.c);
}
R(r_new_base_newer_set)
{
    flatopt_config c = fx->cfg;
    base_v9 n;
    memset(&n, 0, sizeof n);
    F(flatopt_base_params_init)(&n.b, sizeof n, FLATOPT_ADAM);
    n.future[0] = 1; /* byte 216 (sizeof(flatopt_base_params)) */
    c.base = &n.b;
    return new_into_out(fx, &c);
}
R(r_new_sched_newer_set)
{
    flatopt_config c = fx->cfg;
    schedule_v9 n;
    F(flatopt_schedule_init)(&n.s, sizeof n, FLATOPT_SCHEDULE_EXPONENTIAL);
    n.future[1] = 1; /* byte 256 */
    c.schedule = &n.s;
    return new_into_out(fx, &c);
}
R(r_adam_hp_newer_set)
{
    base_v9 n;
    F(flatopt_base_params_init)(&n.b, sizeof n, FLATOPT_ADAM);
    n.future[1] = 1; /* byte 224 (sizeof(flatopt_base_params) + 8) */
    return F(flatopt_adam_update)(&n.b, &fx->args, fx->sp, fx->sg, fx->sm, fx->sv, fx->svm,
                                  fx->ss, SLEN);
}
R(r_adam_args_newer_set)
{
    step_args_v9 n;
    F(flatopt_step_args_init)(&n.a, sizeof n);
    n.a.lr = 0.01;
    n.future[0] = 1; /* byte 56 */
    return F(flatopt_adam_update)(&fx->hp_adam, &n.a, fx->sp, fx->sg, fx->sm, fx->sv, fx->svm,
                                  fx->ss, SLEN);
}

R(r_new_null_cfg) { return F(flatopt_optimizer_new)(NULL, &fx->out.opt); }
R(r_new_null_out) { return F(flatopt_optimizer_new)(&fx->cfg, NULL); }
CFG_ROW(r_new_size0, c.struct_size = 0)
CFG_ROW(r_new_size_small, c.struct_size = FLATOPT_CONFIG_SIZE_V1 - 8)
CFG_ROW(r_new_size_garbage, c.struct_size = 0xA5A5A5A5u)
CFG_ROW(r_new_base_size0, cb.struct_size = 0)
CFG_ROW(r_new_base_size_small, cb.struct_size = 8)
CFG_ROW(r_new_kind99, cb.kind = 99)
CFG_ROW(r_new_nonfinite7, c.nonfinite = 7)
CFG_ROW(r_new_tier9, c.simd_tier = 9)
CFG_ROW(r_new_state_dtype3, c.state_dtype = 3)
CFG_ROW(r_new_rounding2, c.state_rounding = 2)
CFG_ROW(r_new_slow_int8, c.lookahead = 1; c.slow_dtype = FLATOPT_STATE_INT8)
R(r_new_rprop_int8)
{
    flatopt_config c = fx->cfg;
    flatopt_base_params cb = FLATOPT_BASE_PARAMS_INIT(FLATOPT_RPROP);
    c.base = &cb;
    c.state_dtype = FLATOPT_STATE_INT8;
    return new_into_out(fx, &c);
}
/* The C split step with int8 moments: a range that cuts an 8-bit block (buffer 1 of 17
 * elements at its element 5) is refused before anything is written. */
R(r_range_int8_cut)
{
    flatopt_config c = fx->cfg;
    flatopt_optimizer *o = NULL;
    flatopt_status st;
    int i;
    c.state_dtype = FLATOPT_STATE_INT8;
    st = F(flatopt_optimizer_new)(&c, &o);
    for (i = 0; st == FLATOPT_OK && i < FX_NB; i++)
        st = F(flatopt_optimizer_add_param)(o, fx->p[i], fx->g[i], fx_len[i]);
    if (st == FLATOPT_OK)
        st = F(flatopt_optimizer_begin_step)(o);
    if (st == FLATOPT_OK)
        st = F(flatopt_optimizer_step_range)(o, 0, 10);
    F(flatopt_optimizer_free)(o);
    return st;
}
/* The first SIMD tier this CPU cannot run, 0 if it runs all four (an AVX-512 machine); set by
   test_bad_inputs, which skips the rows that need one when there is none. */
static uint32_t g_unavailable_tier;
CFG_ROW(r_new_tier_unavail, c.simd_tier = g_unavailable_tier)
CFG_ROW(r_new_lr_nan, c.lr = NAN)
CFG_ROW(r_new_lr_inf, c.lr = INFINITY)
CFG_ROW(r_new_lr_neg, c.lr = -0.01)
CFG_ROW(r_new_b1_nan, cb.b1 = NAN)
CFG_ROW(r_new_b1_one, cb.b1 = 1.0)
CFG_ROW(r_new_b2_neg, cb.b2 = -0.5)
CFG_ROW(r_new_b2_inf, cb.b2 = INFINITY)
CFG_ROW(r_new_eps0, cb.eps = 0.0)
CFG_ROW(r_new_eps_neg, cb.eps = -1e-8)
CFG_ROW(r_new_eps_nan, cb.eps = NAN)
CFG_ROW(r_new_amsgrad2, cb.amsgrad = 2)
SGD_ROW(r_new_mom_neg, cb.momentum = -0.1)
SGD_ROW(r_new_mom_one, cb.momentum = 1.0)
SGD_ROW(r_new_mom_nan, cb.momentum = NAN)
SGD_ROW(r_new_damp, cb.dampening = 1.5)
SGD_ROW(r_new_nesterov_nomom, cb.momentum = 0.0; cb.nesterov = 1)
SGD_ROW(r_new_nesterov_damp, cb.dampening = 0.5; cb.nesterov = 1)
SGD_ROW(r_new_nesterov2, cb.nesterov = 2)
CFG_ROW(r_new_adamw_dwd_neg, F(flatopt_base_params_init)(&cb, sizeof cb, FLATOPT_ADAMW);
        cb.decoupled_weight_decay = -1.0)
CFG_ROW(r_new_adamw_dwd_nan, F(flatopt_base_params_init)(&cb, sizeof cb, FLATOPT_ADAMW);
        cb.decoupled_weight_decay = NAN)
CFG_ROW(r_new_wd_neg, c.weight_decay = -0.1)
CFG_ROW(r_new_wd_nan, c.weight_decay = NAN)
CFG_ROW(r_new_wd_inf, c.weight_decay = INFINITY)
CFG_ROW(r_new_clipn_neg, c.grad_clip_norm = -1.0)
CFG_ROW(r_new_clipn_nan, c.grad_clip_norm = NAN)
CFG_ROW(r_new_clipn_inf, c.grad_clip_norm = INFINITY)
CFG_ROW(r_new_clipv_neg, c.grad_clip_value = -0.5)
CFG_ROW(r_new_clipv_nan, c.grad_clip_value = NAN)
CFG_ROW(r_new_k0, c.sync_period = 0)
CFG_ROW(r_new_alpha_big, c.alpha = 1.5)
CFG_ROW(r_new_alpha_neg, c.alpha = -0.1)
CFG_ROW(r_new_alpha_nan, c.alpha = NAN)
CFG_ROW(r_new_lookahead2, c.lookahead = 2)
CFG_ROW(r_new_manual3, c.schedule_manual = 3)
CFG_ROW(r_new_threads0, c.num_threads = 0)
CFG_ROW(r_new_threads_big, c.num_threads = 100000)
SCHED_ROW(r_sch_size0, FLATOPT_SCHEDULE_EXPONENTIAL, s.struct_size = 0)
SCHED_ROW(r_sch_size8, FLATOPT_SCHEDULE_EXPONENTIAL, s.struct_size = 8)
SCHED_ROW(r_sch_size_below_v1, FLATOPT_SCHEDULE_EXPONENTIAL,
          s.struct_size = FLATOPT_SCHEDULE_SIZE_V1 - 8)
SCHED_ROW(r_sch_kind99, FLATOPT_SCHEDULE_EXPONENTIAL, s.kind = 99)
SCHED_ROW(r_sch_gamma_nan, FLATOPT_SCHEDULE_EXPONENTIAL, s.gamma = NAN)
SCHED_ROW(r_sch_gamma_neg, FLATOPT_SCHEDULE_EXPONENTIAL, s.gamma = -0.5)
SCHED_ROW(r_sch_gamma0, FLATOPT_SCHEDULE_EXPONENTIAL, s.gamma = 0.0)
SCHED_ROW(r_sch_base_nan, FLATOPT_SCHEDULE_EXPONENTIAL, s.base_lr = NAN)
SCHED_ROW(r_sch_base_inf, FLATOPT_SCHEDULE_STEP, s.base_lr = INFINITY)
SCHED_ROW(r_sch_base_neg, FLATOPT_SCHEDULE_COSINE_ANNEALING, s.base_lr = -1.0)
SCHED_ROW(r_sch_ms_null, FLATOPT_SCHEDULE_MULTI_STEP, s.milestones = NULL; s.n_milestones = 3)
SCHED_ROW(r_sch_ms_order, FLATOPT_SCHEDULE_MULTI_STEP, fx->milestones[2] = 1;
          s.milestones = fx->milestones; s.n_milestones = 3)
SCHED_ROW(r_sch_ms_huge, FLATOPT_SCHEDULE_MULTI_STEP, s.milestones = fx->milestones;
          s.n_milestones = SIZE_MAX)
SCHED_ROW(r_sch_pw_null, FLATOPT_SCHEDULE_PIECEWISE_CONSTANT, s.milestones = fx->milestones;
          s.n_milestones = 3; s.values = NULL; s.n_values = 4)
SCHED_ROW(r_sch_pw_count, FLATOPT_SCHEDULE_PIECEWISE_CONSTANT, s.milestones = fx->milestones;
          s.n_milestones = 3; s.values = fx->values; s.n_values = 2)
SCHED_ROW(r_sch_pw_huge, FLATOPT_SCHEDULE_PIECEWISE_CONSTANT, s.milestones = fx->milestones;
          s.n_milestones = 3; s.values = fx->values; s.n_values = SIZE_MAX)
SCHED_ROW(r_sch_cyclic_mode, FLATOPT_SCHEDULE_CYCLIC, s.cyclic_mode = 9)
SCHED_ROW(r_sch_plateau_mode, FLATOPT_SCHEDULE_REDUCE_ON_PLATEAU, s.plateau_mode = 5)
SCHED_ROW(r_sch_threshold_mode, FLATOPT_SCHEDULE_REDUCE_ON_PLATEAU, s.threshold_mode = 2)
SCHED_ROW(r_sch_plateau_factor, FLATOPT_SCHEDULE_REDUCE_ON_PLATEAU, s.factor = 1.5)
SCHED_ROW(r_sch_staircase, FLATOPT_SCHEDULE_EXPONENTIAL_DECAY, s.staircase = 2)
SCHED_ROW(r_sch_anneal, FLATOPT_SCHEDULE_ONE_CYCLE, s.anneal_linear = 3)
SCHED_ROW(r_sch_pct, FLATOPT_SCHEDULE_ONE_CYCLE, s.pct_start = 1.5)
SCHED_ROW(r_sch_tmult0, FLATOPT_SCHEDULE_COSINE_WARM_RESTARTS, s.t_mult = 0)
SCHED_ROW(r_sch_eta_nan, FLATOPT_SCHEDULE_COSINE_ANNEALING, s.eta_min = NAN)
SCHED_ROW(r_sch_warmup, FLATOPT_SCHEDULE_WARMUP_COSINE, s.period = 5; s.warmup = 9)
SCHED_ROW(r_sch_period0, FLATOPT_SCHEDULE_COSINE_ANNEALING, s.period = 0)
SCHED_ROW(r_sch_step_period0, FLATOPT_SCHEDULE_STEP, s.period = 0)

/* add_param */
R(r_add_null_opt) { return F(flatopt_optimizer_add_param)(NULL, fx->xp, fx->xg, FX_XLEN); }
R(r_add_null_param) { return F(flatopt_optimizer_add_param)(fx->bare, NULL, fx->xg, FX_XLEN); }
R(r_add_huge) { return F(flatopt_optimizer_add_param)(fx->bare, fx->xp, fx->xg, SIZE_MAX); }
R(r_add_wrap)
{
    return F(flatopt_optimizer_add_param)(fx->bare, fx->xp, fx->xg, SIZE_MAX / 4 + 1);
}
R(r_add_same) { return F(flatopt_optimizer_add_param)(fx->bare, fx->xp, fx->xp, FX_XLEN); }
R(r_add_partial)
{
    return F(flatopt_optimizer_add_param)(fx->bare, fx->xp, fx->xp + 3, FX_XLEN - 3);
}
R(r_add_grad_on_param) { return F(flatopt_optimizer_add_param)(fx->opt, fx->xp, fx->p[1], 8); }
R(r_add_param_on_param)
{
    return F(flatopt_optimizer_add_param)(fx->opt, fx->p[2] + 10, fx->xg, FX_XLEN);
}
R(r_add_param_on_grad) { return F(flatopt_optimizer_add_param)(fx->opt, fx->g[0], fx->xg, 5); }
R(r_add_mis_param)
{
    return F(flatopt_optimizer_add_param)(fx->bare, mis(fx->xp), fx->xg, FX_XLEN);
}
R(r_add_mis_grad)
{
    return F(flatopt_optimizer_add_param)(fx->bare, fx->xp, mis(fx->xg), FX_XLEN);
}
R(r_add_after_step) { return F(flatopt_optimizer_add_param)(fx->opt, fx->xp, fx->xg, FX_XLEN); }

/* step, step_with_grads */
R(r_step_null) { (void)fx; return F(flatopt_optimizer_step)(NULL); }
R(r_step_bare) { return F(flatopt_optimizer_step)(fx->bare); }
R(r_step_pending) { return F(flatopt_optimizer_step)(fx->opt); }
R(r_swg_null_opt) { return F(flatopt_optimizer_step_with_grads)(NULL, fx->grads, FX_NB); }
R(r_swg_null_grads) { return F(flatopt_optimizer_step_with_grads)(fx->opt, NULL, FX_NB); }
R(r_swg_n2) { return F(flatopt_optimizer_step_with_grads)(fx->opt, fx->grads, 2); }
R(r_swg_n0) { return F(flatopt_optimizer_step_with_grads)(fx->opt, fx->grads, 0); }
R(r_swg_nhuge) { return F(flatopt_optimizer_step_with_grads)(fx->opt, fx->grads, SIZE_MAX); }
R(r_swg_null_grad1)
{
    const float *gs[FX_NB];
    gs[0] = fx->gg[0];
    gs[1] = NULL;
    gs[2] = fx->gg[2];
    return F(flatopt_optimizer_step_with_grads)(fx->opt, gs, FX_NB);
}
R(r_swg_mis_grad1)
{
    const float *gs[FX_NB];
    gs[0] = fx->gg[0];
    gs[1] = mis(fx->gg[1]);
    gs[2] = fx->gg[2];
    return F(flatopt_optimizer_step_with_grads)(fx->opt, gs, FX_NB);
}
R(r_swg_same)
{
    const float *gs[FX_NB];
    gs[0] = fx->gg[0];
    gs[1] = fx->gg[1];
    gs[2] = fx->p[2];
    return F(flatopt_optimizer_step_with_grads)(fx->opt, gs, FX_NB);
}
R(r_swg_partial)
{
    const float *gs[FX_NB];
    gs[0] = fx->p[1] + 3;
    gs[1] = fx->gg[1];
    gs[2] = fx->gg[2];
    return F(flatopt_optimizer_step_with_grads)(fx->opt, gs, FX_NB);
}
R(r_swg_bare) { return F(flatopt_optimizer_step_with_grads)(fx->bare, fx->grads, 0); }
R(r_swg_pending) { return F(flatopt_optimizer_step_with_grads)(fx->opt, fx->grads, FX_NB); }

/* begin_step, step_range, end_step, reset */
R(r_begin_null) { (void)fx; return F(flatopt_optimizer_begin_step)(NULL); }
R(r_begin_bare) { return F(flatopt_optimizer_begin_step)(fx->bare); }
R(r_begin_pending) { return F(flatopt_optimizer_begin_step)(fx->opt); }
R(r_range_null) { (void)fx; return F(flatopt_optimizer_step_range)(NULL, 0, 1); }
R(r_range_nobegin) { return F(flatopt_optimizer_step_range)(fx->opt, 0, 10); }
R(r_range_past_end) { return F(flatopt_optimizer_step_range)(fx->opt, 0, 5 + 17 + 40 + 1); }
R(r_range_reversed) { return F(flatopt_optimizer_step_range)(fx->opt, 10, 5); }
R(r_range_huge) { return F(flatopt_optimizer_step_range)(fx->opt, 0, SIZE_MAX); }
R(r_range_again) { return F(flatopt_optimizer_step_range)(fx->opt, 0, 10); }
R(r_range_overlap) { return F(flatopt_optimizer_step_range)(fx->opt, 5, 20); }
R(r_range_inside) { return F(flatopt_optimizer_step_range)(fx->opt, 3, 4); }
R(r_range_last) { return F(flatopt_optimizer_step_range)(fx->opt, 9, 62); }
R(r_end_part) { return F(flatopt_optimizer_end_step)(fx->opt); }
R(r_range_bare) { return F(flatopt_optimizer_step_range)(fx->bare, 0, 0); }
R(r_end_null) { (void)fx; return F(flatopt_optimizer_end_step)(NULL); }
R(r_end_nobegin) { return F(flatopt_optimizer_end_step)(fx->opt); }
R(r_end_bare) { return F(flatopt_optimizer_end_step)(fx->bare); }
R(r_reset_null) { (void)fx; return F(flatopt_optimizer_reset)(NULL); }
R(r_reset_bare) { return F(flatopt_optimizer_reset)(fx->bare); }
R(r_reset_pending) { return F(flatopt_optimizer_reset)(fx->opt); }

/* queries */
R(r_q_steps_null) { return F(flatopt_optimizer_step_count)(NULL, &fx->out.u64); }
R(r_q_steps_out) { return F(flatopt_optimizer_step_count)(fx->opt, NULL); }
R(r_q_skipped_null) { return F(flatopt_optimizer_skipped_count)(NULL, &fx->out.u64); }
R(r_q_skipped_out) { return F(flatopt_optimizer_skipped_count)(fx->opt, NULL); }
R(r_q_lr_null) { return F(flatopt_optimizer_current_lr)(NULL, &fx->out.f); }
R(r_q_lr_out) { return F(flatopt_optimizer_current_lr)(fx->opt, NULL); }
R(r_q_tier_null) { return F(flatopt_optimizer_simd_tier)(NULL, &fx->out.u32); }
R(r_q_tier_out) { return F(flatopt_optimizer_simd_tier)(fx->opt, NULL); }
R(r_q_threads_null) { return F(flatopt_optimizer_num_threads)(NULL, &fx->out.u32); }
R(r_q_threads_out) { return F(flatopt_optimizer_num_threads)(fx->opt, NULL); }
R(r_q_nparams_null) { return F(flatopt_optimizer_num_params)(NULL, &fx->out.sz); }
R(r_q_nparams_out) { return F(flatopt_optimizer_num_params)(fx->opt, NULL); }
R(r_q_total_null) { return F(flatopt_optimizer_total_len)(NULL, &fx->out.sz); }
R(r_q_total_out) { return F(flatopt_optimizer_total_len)(fx->opt, NULL); }
R(r_q_state_bytes_null) { return F(flatopt_optimizer_state_bytes)(NULL, &fx->out.u64); }
R(r_q_state_bytes_out) { return F(flatopt_optimizer_state_bytes)(fx->opt, NULL); }

/* setters */
R(r_threads_null) { (void)fx; return F(flatopt_optimizer_set_num_threads)(NULL, 2); }
R(r_threads0) { return F(flatopt_optimizer_set_num_threads)(fx->opt, 0); }
R(r_threads_big) { return F(flatopt_optimizer_set_num_threads)(fx->opt, 100000); }
R(r_threads_pending) { return F(flatopt_optimizer_set_num_threads)(fx->opt, 2); }
R(r_tier_null) { (void)fx; return F(flatopt_optimizer_set_simd_tier)(NULL, FLATOPT_SIMD_SCALAR); }
R(r_tier9) { return F(flatopt_optimizer_set_simd_tier)(fx->opt, 9); }
R(r_tier_unavail) { return F(flatopt_optimizer_set_simd_tier)(fx->opt, g_unavailable_tier); }
R(r_tier_pending) { return F(flatopt_optimizer_set_simd_tier)(fx->opt, FLATOPT_SIMD_SCALAR); }
R(r_deftier9) { (void)fx; return F(flatopt_set_default_simd_tier)(9); }
R(r_deftier_unavail)
{
    (void)fx;
    return F(flatopt_set_default_simd_tier)(g_unavailable_tier);
}

/* slow weights */
R(r_slow_null)
{
    return F(flatopt_optimizer_slow_weights)(NULL, 0, &fx->out.cfp, &fx->out.sz);
}
R(r_slow_out_null) { return F(flatopt_optimizer_slow_weights)(fx->opt, 0, NULL, &fx->out.sz); }
R(r_slow_len_null) { return F(flatopt_optimizer_slow_weights)(fx->opt, 0, &fx->out.cfp, NULL); }
R(r_slow_index)
{
    return F(flatopt_optimizer_slow_weights)(fx->opt, FX_NB, &fx->out.cfp, &fx->out.sz);
}
R(r_slow_index_huge)
{
    return F(flatopt_optimizer_slow_weights)(fx->opt, SIZE_MAX, &fx->out.cfp, &fx->out.sz);
}
R(r_slow_nola)
{
    return F(flatopt_optimizer_slow_weights)(fx->nola, 0, &fx->out.cfp, &fx->out.sz);
}
/* a caller buffer inside the optimizer's own slow weights (issue 11: written buffers that
 * alias optimizer-owned memory are refused like every other overlap) */
static float *own_slow(fixture *fx, size_t i, size_t *len)
{
    const float *p = NULL;
    *len = 0;
    if (F(flatopt_optimizer_slow_weights)(fx->opt, i, &p, len) != FLATOPT_OK) return NULL;
    return (float *)(uintptr_t)p;
}
R(r_copy_into_own)
{
    size_t n;
    float *s = own_slow(fx, 0, &n);
    return F(flatopt_optimizer_copy_slow_weights)(fx->opt, 0, s, n);
}
R(r_save_into_slow)
{
    size_t n;
    float *s = own_slow(fx, 0, &n);
    return F(flatopt_optimizer_save)(fx->opt, (uint8_t *)s, n * sizeof(float), &fx->out.sz);
}
R(r_slow_out_in_slow)
{
    size_t n;
    float *s = own_slow(fx, 0, &n);
    return F(flatopt_optimizer_slow_weights)(fx->opt, 0, &fx->out.cfp, (size_t *)(void *)s);
}
R(r_copy_null) { return F(flatopt_optimizer_copy_slow_weights)(NULL, 0, fx->out.fv, 5); }
R(r_copy_dst_null) { return F(flatopt_optimizer_copy_slow_weights)(fx->opt, 0, NULL, 5); }
R(r_copy_short) { return F(flatopt_optimizer_copy_slow_weights)(fx->opt, 0, fx->out.fv, 4); }
R(r_copy_zero) { return F(flatopt_optimizer_copy_slow_weights)(fx->opt, 0, fx->out.fv, 0); }
R(r_copy_huge)
{
    return F(flatopt_optimizer_copy_slow_weights)(fx->opt, 0, fx->out.fv, SIZE_MAX);
}
R(r_copy_mis) { return F(flatopt_optimizer_copy_slow_weights)(fx->opt, 0, mis(fx->out.fv), 5); }
R(r_copy_index) { return F(flatopt_optimizer_copy_slow_weights)(fx->opt, 7, fx->out.fv, 5); }
R(r_copy_nola)
{
    return F(flatopt_optimizer_copy_slow_weights)(fx->nola, 0, fx->out.fv, FX_QLEN);
}

/* schedule stepping */
R(r_sstep_null) { (void)fx; return F(flatopt_optimizer_schedule_step)(NULL); }
R(r_smetric_null) { (void)fx; return F(flatopt_optimizer_schedule_step_metric)(NULL, 1.0); }
R(r_smetric_not_plateau) { return F(flatopt_optimizer_schedule_step_metric)(fx->opt, 1.0); }
R(r_smetric_nan) { return F(flatopt_optimizer_schedule_step_metric)(fx->plat, NAN); }
R(r_smetric_inf) { return F(flatopt_optimizer_schedule_step_metric)(fx->plat, -INFINITY); }
R(r_sepoch_null) { (void)fx; return F(flatopt_optimizer_schedule_set_epoch)(NULL, 3); }
R(r_sepoch_plateau) { return F(flatopt_optimizer_schedule_set_epoch)(fx->plat, 3); }
R(r_sepoch_plateau_max) { return F(flatopt_optimizer_schedule_set_epoch)(fx->plat, UINT64_MAX); }

/* stateless updates: local copies of hp / args, Adam on the fixture's stateless buffers */
#define ADAM_ROW(name, stmt, ...) ADAM_ROW_(name, stmt, __VA_ARGS__)
#define ADAM_ROW_(name, stmt, param, grad, m, v, vmax, slow, len)                             \
    R(name)                                                                                    \
    {                                                                                          \
        flatopt_base_params hp = fx->hp_adam;                                                  \
        flatopt_step_args a = fx->args;                                                        \
        const flatopt_base_params *hpp = &hp;                                                  \
        const flatopt_step_args *ap = &a;                                                      \
        stmt;                                                                                  \
        return F(flatopt_adam_update)(hpp, ap, param, grad, m, v, vmax, slow, len);            \
    }
#define ADAM_OK_BUFS fx->sp, fx->sg, fx->sm, fx->sv, fx->svm, fx->ss, SLEN

ADAM_ROW(r_adam_hp_null, hpp = NULL, ADAM_OK_BUFS)
ADAM_ROW(r_adam_args_null, ap = NULL, ADAM_OK_BUFS)
ADAM_ROW(r_adam_hp_size0, hp.struct_size = 0, ADAM_OK_BUFS)
ADAM_ROW(r_adam_args_size, a.struct_size = 3, ADAM_OK_BUFS)
ADAM_ROW(r_adam_kind_sgd, hp.kind = FLATOPT_SGD, ADAM_OK_BUFS)
ADAM_ROW(r_adam_kind99, hp.kind = 99, ADAM_OK_BUFS)
ADAM_ROW(r_adam_b1_nan, hp.b1 = NAN, ADAM_OK_BUFS)
ADAM_ROW(r_adam_b2_one, hp.b2 = 1.0, ADAM_OK_BUFS)
ADAM_ROW(r_adam_eps_neg, hp.eps = -1.0, ADAM_OK_BUFS)
ADAM_ROW(r_adam_amsgrad7, hp.amsgrad = 7, ADAM_OK_BUFS)
ADAM_ROW(r_adam_step0, a.step = 0, ADAM_OK_BUFS)
ADAM_ROW(r_adam_lr_nan, a.lr = NAN, ADAM_OK_BUFS)
ADAM_ROW(r_adam_lr_neg, a.lr = -0.1, ADAM_OK_BUFS)
ADAM_ROW(r_adam_lr_inf, a.lr = INFINITY, ADAM_OK_BUFS)
ADAM_ROW(r_adam_cs0, a.clip_scale = 0.0, ADAM_OK_BUFS)
ADAM_ROW(r_adam_cs_big, a.clip_scale = 1.5, ADAM_OK_BUFS)
ADAM_ROW(r_adam_cs_nan, a.clip_scale = NAN, ADAM_OK_BUFS)
ADAM_ROW(r_adam_cv_neg, a.clip_value = -1.0, ADAM_OK_BUFS)
ADAM_ROW(r_adam_cv_nan, a.clip_value = NAN, ADAM_OK_BUFS)
ADAM_ROW(r_adam_wd_neg, a.weight_decay = -1.0, ADAM_OK_BUFS)
ADAM_ROW(r_adam_wd_inf, a.weight_decay = INFINITY, ADAM_OK_BUFS)
ADAM_ROW(r_adam_alpha_big, a.alpha = 1.5, ADAM_OK_BUFS)
ADAM_ROW(r_adam_alpha_nan, a.alpha = NAN, ADAM_OK_BUFS)
ADAM_ROW(r_adam_sync2, a.sync = 2, ADAM_OK_BUFS)
ADAM_ROW(r_adam_param_null, (void)0, NULL, fx->sg, fx->sm, fx->sv, NULL, fx->ss, SLEN)
ADAM_ROW(r_adam_grad_null, (void)0, fx->sp, NULL, fx->sm, fx->sv, NULL, fx->ss, SLEN)
ADAM_ROW(r_adam_m_null, (void)0, fx->sp, fx->sg, NULL, fx->sv, NULL, fx->ss, SLEN)
ADAM_ROW(r_adam_v_null, (void)0, fx->sp, fx->sg, fx->sm, NULL, NULL, fx->ss, SLEN)
ADAM_ROW(r_adam_vmax_null, hp.amsgrad = 1, fx->sp, fx->sg, fx->sm, fx->sv, NULL, fx->ss, SLEN)
ADAM_ROW(r_adam_slow_null, (void)0, fx->sp, fx->sg, fx->sm, fx->sv, NULL, NULL, SLEN)
ADAM_ROW(r_adam_param_mis, (void)0, mis(fx->sp), fx->sg, fx->sm, fx->sv, NULL, fx->ss, SLEN)
ADAM_ROW(r_adam_grad_mis, (void)0, fx->sp, mis(fx->sg), fx->sm, fx->sv, NULL, fx->ss, SLEN)
ADAM_ROW(r_adam_m_mis, (void)0, fx->sp, fx->sg, mis(fx->sm), fx->sv, NULL, fx->ss, SLEN)
ADAM_ROW(r_adam_v_mis, (void)0, fx->sp, fx->sg, fx->sm, mis(fx->sv), NULL, fx->ss, SLEN)
ADAM_ROW(r_adam_vmax_mis, hp.amsgrad = 1, fx->sp, fx->sg, fx->sm, fx->sv, mis(fx->svm), fx->ss,
         SLEN)
ADAM_ROW(r_adam_slow_mis, (void)0, fx->sp, fx->sg, fx->sm, fx->sv, NULL, mis(fx->ss), SLEN)
ADAM_ROW(r_adam_len_huge, (void)0, fx->sp, fx->sg, fx->sm, fx->sv, NULL, fx->ss, SIZE_MAX)
ADAM_ROW(r_adam_len_wrap, (void)0, fx->sp, fx->sg, fx->sm, fx->sv, NULL, fx->ss,
         SIZE_MAX / 4 + 1)
ADAM_ROW(r_adam_grad_is_param, (void)0, fx->sp, fx->sp, fx->sm, fx->sv, NULL, fx->ss, SLEN)
ADAM_ROW(r_adam_m_in_param, (void)0, fx->sp, fx->sg, fx->sp + 2, fx->sv, NULL, fx->ss, SLEN - 2)
ADAM_ROW(r_adam_v_in_m, (void)0, fx->sp, fx->sg, fx->sm, fx->sm + 3, NULL, fx->ss, SLEN - 3)
ADAM_ROW(r_adam_slow_is_v, (void)0, fx->sp, fx->sg, fx->sm, fx->sv, NULL, fx->sv, SLEN)
ADAM_ROW(r_adam_vmax_in_slow, hp.amsgrad = 1, fx->sp, fx->sg, fx->sm, fx->sv, fx->ss + 1, fx->ss,
         SLEN - 1)

R(r_sgd_hp_null)
{
    return F(flatopt_sgd_update)(NULL, &fx->args, fx->sp, fx->sg, fx->sm, fx->ss, SLEN);
}
R(r_sgd_mbuf_null)
{
    return F(flatopt_sgd_update)(&fx->hp_sgd, &fx->args, fx->sp, fx->sg, NULL, fx->ss, SLEN);
}
R(r_sgd_mbuf_mis)
{
    return F(flatopt_sgd_update)(&fx->hp_sgd, &fx->args, fx->sp, fx->sg, mis(fx->sm), fx->ss,
                                 SLEN);
}
R(r_sgd_kind_adam)
{
    return F(flatopt_sgd_update)(&fx->hp_adam, &fx->args, fx->sp, fx->sg, fx->sm, fx->ss, SLEN);
}
R(r_sgd_mom_one)
{
    flatopt_base_params hp = fx->hp_sgd;
    hp.momentum = 1.0;
    return F(flatopt_sgd_update)(&hp, &fx->args, fx->sp, fx->sg, fx->sm, fx->ss, SLEN);
}
R(r_sgd_mbuf_is_grad)
{
    return F(flatopt_sgd_update)(&fx->hp_sgd, &fx->args, fx->sp, fx->sg, fx->sg, fx->ss, SLEN);
}
R(r_sgd_slow_null)
{
    return F(flatopt_sgd_update)(&fx->hp_sgd, &fx->args, fx->sp, fx->sg, fx->sm, NULL, SLEN);
}
R(r_adamw_kind_adam)
{
    return F(flatopt_adamw_update)(&fx->hp_adam, &fx->args, fx->sp, fx->sg, fx->sm, fx->sv,
                                   fx->ss, SLEN);
}
R(r_adamw_dwd_nan)
{
    flatopt_base_params hp;
    F(flatopt_base_params_init)(&hp, sizeof hp, FLATOPT_ADAMW);
    hp.decoupled_weight_decay = NAN;
    return F(flatopt_adamw_update)(&hp, &fx->args, fx->sp, fx->sg, fx->sm, fx->sv, fx->ss, SLEN);
}
R(r_adamw_m_null)
{
    flatopt_base_params hp;
    F(flatopt_base_params_init)(&hp, sizeof hp, FLATOPT_ADAMW);
    return F(flatopt_adamw_update)(&hp, &fx->args, fx->sp, fx->sg, NULL, fx->sv, fx->ss, SLEN);
}
R(r_adamw_slow_is_param)
{
    flatopt_base_params hp;
    F(flatopt_base_params_init)(&hp, sizeof hp, FLATOPT_ADAMW);
    return F(flatopt_adamw_update)(&hp, &fx->args, fx->sp, fx->sg, fx->sm, fx->sv, fx->sp, SLEN);
}
R(r_radam_kind_adamw)
{
    flatopt_base_params hp;
    F(flatopt_base_params_init)(&hp, sizeof hp, FLATOPT_ADAMW);
    return F(flatopt_radam_update)(&hp, &fx->args, fx->sp, fx->sg, fx->sm, fx->sv, fx->ss, SLEN);
}
R(r_radam_v_null)
{
    flatopt_base_params hp;
    F(flatopt_base_params_init)(&hp, sizeof hp, FLATOPT_RADAM);
    return F(flatopt_radam_update)(&hp, &fx->args, fx->sp, fx->sg, fx->sm, NULL, fx->ss, SLEN);
}
R(r_radam_b2_one)
{
    flatopt_base_params hp;
    F(flatopt_base_params_init)(&hp, sizeof hp, FLATOPT_RADAM);
    hp.b2 = 1.0;
    return F(flatopt_radam_update)(&hp, &fx->args, fx->sp, fx->sg, fx->sm, fx->sv, fx->ss, SLEN);
}
R(r_radam_lr_nan)
{
    flatopt_base_params hp;
    flatopt_step_args a = fx->args;
    F(flatopt_base_params_init)(&hp, sizeof hp, FLATOPT_RADAM);
    a.lr = NAN;
    return F(flatopt_radam_update)(&hp, &a, fx->sp, fx->sg, fx->sm, fx->sv, fx->ss, SLEN);
}

/* NULL for every pointer argument of the other stateless updates */
static flatopt_base_params hp_kind(uint32_t kind)
{
    flatopt_base_params h;
    F(flatopt_base_params_init)(&h, sizeof h, kind);
    return h;
}
#define SGD_CALL(hp, args, p, g, mb, sl)                                                       \
    F(flatopt_sgd_update)(hp, args, p, g, mb, sl, SLEN)
#define W_CALL(fn, hp, args, p, g, m, v, sl) F(fn)(hp, args, p, g, m, v, sl, SLEN)
R(r_sgd_args_null)
{
    return SGD_CALL(&fx->hp_sgd, NULL, fx->sp, fx->sg, fx->sm, fx->ss);
}
R(r_sgd_param_null) { return SGD_CALL(&fx->hp_sgd, &fx->args, NULL, fx->sg, fx->sm, fx->ss); }
R(r_sgd_grad_null) { return SGD_CALL(&fx->hp_sgd, &fx->args, fx->sp, NULL, fx->sm, fx->ss); }
R(r_adamw_hp_null)
{
    return W_CALL(flatopt_adamw_update, NULL, &fx->args, fx->sp, fx->sg, fx->sm, fx->sv, fx->ss);
}
R(r_adamw_args_null)
{
    flatopt_base_params h = hp_kind(FLATOPT_ADAMW);
    return W_CALL(flatopt_adamw_update, &h, NULL, fx->sp, fx->sg, fx->sm, fx->sv, fx->ss);
}
R(r_adamw_param_null)
{
    flatopt_base_params h = hp_kind(FLATOPT_ADAMW);
    return W_CALL(flatopt_adamw_update, &h, &fx->args, NULL, fx->sg, fx->sm, fx->sv, fx->ss);
}
R(r_adamw_grad_null)
{
    flatopt_base_params h = hp_kind(FLATOPT_ADAMW);
    return W_CALL(flatopt_adamw_update, &h, &fx->args, fx->sp, NULL, fx->sm, fx->sv, fx->ss);
}
R(r_adamw_v_null)
{
    flatopt_base_params h = hp_kind(FLATOPT_ADAMW);
    return W_CALL(flatopt_adamw_update, &h, &fx->args, fx->sp, fx->sg, fx->sm, NULL, fx->ss);
}
R(r_adamw_slow_null)
{
    flatopt_base_params h = hp_kind(FLATOPT_ADAMW);
    return W_CALL(flatopt_adamw_update, &h, &fx->args, fx->sp, fx->sg, fx->sm, fx->sv, NULL);
}
R(r_radam_hp_null)
{
    return W_CALL(flatopt_radam_update, NULL, &fx->args, fx->sp, fx->sg, fx->sm, fx->sv, fx->ss);
}
R(r_radam_args_null)
{
    flatopt_base_params h = hp_kind(FLATOPT_RADAM);
    return W_CALL(flatopt_radam_update, &h, NULL, fx->sp, fx->sg, fx->sm, fx->sv, fx->ss);
}
R(r_radam_param_null)
{
    flatopt_base_params h = hp_kind(FLATOPT_RADAM);
    return W_CALL(flatopt_radam_update, &h, &fx->args, NULL, fx->sg, fx->sm, fx->sv, fx->ss);
}
R(r_radam_grad_null)
{
    flatopt_base_params h = hp_kind(FLATOPT_RADAM);
    return W_CALL(flatopt_radam_update, &h, &fx->args, fx->sp, NULL, fx->sm, fx->sv, fx->ss);
}
R(r_radam_m_null)
{
    flatopt_base_params h = hp_kind(FLATOPT_RADAM);
    return W_CALL(flatopt_radam_update, &h, &fx->args, fx->sp, fx->sg, NULL, fx->sv, fx->ss);
}
R(r_radam_slow_null)
{
    flatopt_base_params h = hp_kind(FLATOPT_RADAM);
    return W_CALL(flatopt_radam_update, &h, &fx->args, fx->sp, fx->sg, fx->sm, fx->sv, NULL);
}

/* the stateless update of any rule, its state layout and initial state */
#define B_CALL(hp, args, m, v, vmax, sl)                                                       \
    F(flatopt_base_update)(hp, args, fx->sp, fx->sg, m, v, vmax, sl, SLEN)
R(r_base_hp_null) { return B_CALL(NULL, &fx->args, fx->sm, fx->sv, fx->svm, fx->ss); }
R(r_base_args_null) { return B_CALL(&fx->hp_adam, NULL, fx->sm, fx->sv, fx->svm, fx->ss); }
R(r_base_kind99)
{
    flatopt_base_params h = fx->hp_adam;
    h.kind = 99;
    return B_CALL(&h, &fx->args, fx->sm, fx->sv, fx->svm, fx->ss);
}
R(r_base_param_null)
{
    return F(flatopt_base_update)(&fx->hp_adam, &fx->args, NULL, fx->sg, fx->sm, fx->sv, NULL,
                                  fx->ss, SLEN);
}
R(r_base_adagrad_v_null)
{
    flatopt_base_params h = hp_kind(FLATOPT_ADAGRAD);
    return B_CALL(&h, &fx->args, NULL, NULL, NULL, fx->ss);
}
R(r_base_rmsprop_centered_vmax_null)
{
    flatopt_base_params h = hp_kind(FLATOPT_RMSPROP);
    h.centered = 1;
    return B_CALL(&h, &fx->args, NULL, fx->sv, NULL, fx->ss);
}
R(r_base_rprop_m_aliases_param)
{
    flatopt_base_params h = hp_kind(FLATOPT_RPROP);
    return B_CALL(&h, &fx->args, fx->sp, fx->sv, NULL, fx->ss);
}
R(r_base_lion_b1_nan)
{
    flatopt_base_params h = hp_kind(FLATOPT_LION);
    h.b1 = NAN;
    return B_CALL(&h, &fx->args, fx->sm, NULL, NULL, fx->ss);
}
R(r_base_adadelta_lr_1e39)
{
    flatopt_base_params h = hp_kind(FLATOPT_ADADELTA);
    flatopt_step_args a = fx->args;
    a.lr = 1e39;
    return B_CALL(&h, &a, fx->sm, fx->sv, NULL, fx->ss);
}
R(r_base_mask_hp_null) { return F(flatopt_base_state_buffers)(NULL, &fx->out.u32); }
R(r_base_mask_null) { return F(flatopt_base_state_buffers)(&fx->hp_adam, NULL); }
R(r_base_mask_kind99)
{
    flatopt_base_params h = fx->hp_adam;
    h.kind = 99;
    return F(flatopt_base_state_buffers)(&h, &fx->out.u32);
}
R(r_base_init_hp_null) { return F(flatopt_base_state_init)(NULL, fx->sm, fx->sv, NULL, SLEN); }
R(r_base_init_v_null)
{
    return F(flatopt_base_state_init)(&fx->hp_adam, fx->sm, NULL, NULL, SLEN);
}
R(r_base_init_aliased)
{
    return F(flatopt_base_state_init)(&fx->hp_adam, fx->sm, fx->sm, NULL, SLEN);
}
R(r_base_init_misaligned)
{
    return F(flatopt_base_state_init)(&fx->hp_adam, mis(fx->sm), fx->sv, NULL, SLEN);
}

/* small kernels */
R(r_ss_x_null) { return F(flatopt_sum_squares)(NULL, 5, &fx->out.d); }
R(r_ss_out_null) { return F(flatopt_sum_squares)(fx->sp, 5, NULL); }
R(r_ss_mis) { return F(flatopt_sum_squares)(mis(fx->sp), 5, &fx->out.d); }
R(r_ss_huge) { return F(flatopt_sum_squares)(fx->sp, SIZE_MAX, &fx->out.d); }
R(r_sp_x_null) { return F(flatopt_sum_squares_partials)(NULL, 5, fx->out.dv, 1); }
R(r_sp_out_null) { return F(flatopt_sum_squares_partials)(fx->sp, 5, NULL, 1); }
R(r_sp_n2) { return F(flatopt_sum_squares_partials)(fx->sp, 5, fx->out.dv, 2); }
R(r_sp_n0) { return F(flatopt_sum_squares_partials)(fx->sp, 5, fx->out.dv, 0); }
R(r_sp_nhuge) { return F(flatopt_sum_squares_partials)(fx->sp, 5, fx->out.dv, SIZE_MAX); }
R(r_sp_mis)
{
    double *d = (double *)(void *)((unsigned char *)fx->out.dv + 4);
    return F(flatopt_sum_squares_partials)(fx->sp, 5, d, 1);
}
R(r_sp_huge) { return F(flatopt_sum_squares_partials)(fx->sp, SIZE_MAX, fx->out.dv, 1); }
/* The handle's partials written over a registered gradient or parameter. */
R(r_osp_on_grad)
{
    return F(flatopt_optimizer_sum_squares_partials)(fx->opt, (double *)(void *)fx->g[2], 3);
}
R(r_osp_on_param)
{
    return F(flatopt_optimizer_sum_squares_partials)(fx->opt, (double *)(void *)(fx->p[1] + 2),
                                                     3);
}
R(r_sp_overlap)
{
    /* the partials written over the input floats */
    return F(flatopt_sum_squares_partials)(fx->sp, 5, (double *)(void *)fx->sp, 1);
}
R(r_sp_x_mis) { return F(flatopt_sum_squares_partials)(mis(fx->sp), 5, fx->out.dv, 1); }
R(r_cs_max0) { return F(flatopt_clip_scale)(400.0, 0.0, &fx->out.d); }
R(r_cs_max_neg) { return F(flatopt_clip_scale)(400.0, -1.0, &fx->out.d); }
R(r_cs_max_nan) { return F(flatopt_clip_scale)(400.0, NAN, &fx->out.d); }
R(r_cs_max_inf) { return F(flatopt_clip_scale)(400.0, INFINITY, &fx->out.d); }
R(r_cs_ss_nan) { return F(flatopt_clip_scale)(NAN, 1.0, &fx->out.d); }
R(r_cs_ss_inf) { return F(flatopt_clip_scale)(INFINITY, 1.0, &fx->out.d); }
R(r_cs_ss_neg) { return F(flatopt_clip_scale)(-1.0, 1.0, &fx->out.d); }
R(r_cs_out_null) { (void)fx; return F(flatopt_clip_scale)(400.0, 10.0, NULL); }
R(r_cv_null) { (void)fx; return F(flatopt_clip_by_value)(NULL, 5, 1.0f); }
R(r_cv_neg) { return F(flatopt_clip_by_value)(fx->sp, 5, -1.0f); }
R(r_cv_nan) { return F(flatopt_clip_by_value)(fx->sp, 5, NAN); }
R(r_cv_mis) { return F(flatopt_clip_by_value)(mis(fx->sp), 5, 1.0f); }
R(r_cv_huge) { return F(flatopt_clip_by_value)(fx->sp, SIZE_MAX, 1.0f); }
R(r_sc_null) { (void)fx; return F(flatopt_scale)(NULL, 5, 2.0f); }
R(r_sc_nan) { return F(flatopt_scale)(fx->sp, 5, NAN); }
R(r_sc_inf) { return F(flatopt_scale)(fx->sp, 5, -INFINITY); }
R(r_sc_mis) { return F(flatopt_scale)(mis(fx->sp), 5, 2.0f); }
R(r_sc_huge) { return F(flatopt_scale)(fx->sp, SIZE_MAX / 4 + 1, 2.0f); }
R(r_la_fast_null) { return F(flatopt_lookahead_sync)(NULL, fx->ss, 5, 0.5f); }
R(r_la_slow_null) { return F(flatopt_lookahead_sync)(fx->sp, NULL, 5, 0.5f); }
R(r_la_same) { return F(flatopt_lookahead_sync)(fx->sp, fx->sp, 5, 0.5f); }
R(r_la_partial) { return F(flatopt_lookahead_sync)(fx->sp, fx->sp + 2, 5, 0.5f); }
R(r_la_alpha_big) { return F(flatopt_lookahead_sync)(fx->sp, fx->ss, 5, 1.5f); }
R(r_la_alpha_neg) { return F(flatopt_lookahead_sync)(fx->sp, fx->ss, 5, -0.5f); }
R(r_la_alpha_nan) { return F(flatopt_lookahead_sync)(fx->sp, fx->ss, 5, NAN); }
R(r_la_slow_mis) { return F(flatopt_lookahead_sync)(fx->sp, mis(fx->ss), 5, 0.5f); }
R(r_la_fast_mis) { return F(flatopt_lookahead_sync)(mis(fx->sp), fx->ss, 5, 0.5f); }
R(r_la_huge) { return F(flatopt_lookahead_sync)(fx->sp, fx->ss, SIZE_MAX, 0.5f); }


/* checkpoints */
static char g_tmpdir[512]; /* made by main(); every file the tests write goes here */

static void tmp_path(char *buf, size_t n, const char *name)
{
    snprintf(buf, n, "%s/%s", g_tmpdir, name);
}

/* CRC-32 (IEEE 802.3, zlib's crc32), to craft checkpoints with a valid checksum. */
static uint32_t crc32_ieee(const unsigned char *p, size_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    size_t i;
    int k;
    for (i = 0; i < n; i++) {
        c ^= p[i];
        for (k = 0; k < 8; k++)
            c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
    }
    return c ^ 0xFFFFFFFFu;
}

static uint64_t get_u64(const unsigned char *p)
{
    uint64_t x = 0;
    int i;
    for (i = 7; i >= 0; i--)
        x = (x << 8) | p[i];
    return x;
}
static void put_u64(unsigned char *p, uint64_t x)
{
    int i;
    for (i = 0; i < 8; i++)
        p[i] = (unsigned char)(x >> (8 * i));
}
static void put_u32(unsigned char *p, uint32_t x)
{
    int i;
    for (i = 0; i < 4; i++)
        p[i] = (unsigned char)(x >> (8 * i));
}

/* A checkpoint of o in a new buffer (4 spare bytes at the end), its size in *n. */
static unsigned char *ckpt_of(const flatopt_optimizer *o, size_t *n)
{
    size_t size = 0, w = 0;
    unsigned char *b;
    OK(F(flatopt_optimizer_checkpoint_size)(o, &size));
    b = (unsigned char *)xmalloc(size + 4);
    memset(b, 0, size + 4);
    OK(F(flatopt_optimizer_save)(o, b, size, &w));
    CHECK(w == size, "save wrote %lu bytes, checkpoint_size said %lu", (unsigned long)w,
          (unsigned long)size);
    *n = size;
    return b;
}

/* Offsets in a version-1 checkpoint (docs/checkpoint-format.md). */
static size_t ck_counters(const unsigned char *b)
{
    return 40 + (size_t)get_u64(b + 32);
}
static size_t ck_nbuf(const unsigned char *b)
{
    return ck_counters(b) + 9 * 8;
}
/* Fixes the total-length field and the CRC after an edit; n is the new total size. */
static void ck_reseal(unsigned char *b, size_t n)
{
    put_u64(b + 16, (uint64_t)n);
    put_u32(b + n - 4, crc32_ieee(b, n - 4));
}

/* Loads a valid checkpoint of `from` edited by `edit` (NULL: unedited) into `into`. */
static flatopt_status load_edited(flatopt_optimizer *into, const flatopt_optimizer *from,
                                  size_t (*edit)(unsigned char *b, size_t n))
{
    size_t n = 0;
    unsigned char *b = ckpt_of(from, &n);
    flatopt_status st;
    if (edit)
        n = edit(b, n);
    st = F(flatopt_optimizer_load)(into, b, n);
    free(b);
    return st;
}

static size_t ed_magic(unsigned char *b, size_t n) { b[0] ^= 0x20; return n; }
static size_t ed_truncate(unsigned char *b, size_t n) { (void)b; return n - 1; }
static size_t ed_flip_last_array_byte(unsigned char *b, size_t n) { b[n - 6] ^= 1; return n; }
static size_t ed_version(unsigned char *b, size_t n) { put_u32(b + 8, 5); return n; }
static size_t ed_short(unsigned char *b, size_t n) { (void)b; (void)n; return 35; }
static size_t ed_bom(unsigned char *b, size_t n)
{
    put_u32(b + 12, 0x0D0C0B0Au);
    ck_reseal(b, n);
    return n;
}
static size_t ed_config(unsigned char *b, size_t n)
{
    b[40 + 4] ^= 0x10; /* inside the first field after `base` (an f64) */
    ck_reseal(b, n);
    return n;
}
static size_t ed_nbuf_huge(unsigned char *b, size_t n)
{
    put_u64(b + ck_nbuf(b), UINT64_MAX / 2);
    ck_reseal(b, n);
    return n;
}
static size_t ed_present(unsigned char *b, size_t n)
{
    size_t rec = ck_nbuf(b) + 8;
    b[rec + 8] ^= 0x4; /* v_max bit */
    ck_reseal(b, n);
    return n;
}
static size_t ed_trailing(unsigned char *b, size_t n)
{
    /* 4 more bytes before the checksum (the buffer has 4 spare bytes) */
    memset(b + n - 4, 0, 4);
    ck_reseal(b, n + 4);
    return n + 4;
}
/* Element i of state array k (0 m, 1 v, 2 slow: Lookahead(Adam)) of buffer 0 (5 elements) set
 * to x, with a valid CRC. */
static size_t ed_state(unsigned char *b, size_t n, int k, int i, float x)
{
    uint32_t bits;
    size_t at = ck_nbuf(b) + 8 + 16 + 4 * (5 * (size_t)k + (size_t)i);
    memcpy(&bits, &x, sizeof bits);
    put_u32(b + at, bits);
    ck_reseal(b, n);
    return n;
}
static size_t ed_m_nan(unsigned char *b, size_t n) { return ed_state(b, n, 0, 1, NAN); }
static size_t ed_v_neg(unsigned char *b, size_t n) { return ed_state(b, n, 1, 2, -1.0f); }
static size_t ed_slow_inf(unsigned char *b, size_t n) { return ed_state(b, n, 2, 0, INFINITY); }
static size_t ed_plateau_lr_huge(unsigned char *b, size_t n)
{
    double lr = 1e300;
    uint64_t bits;
    memcpy(&bits, &lr, sizeof bits);
    put_u64(b + ck_counters(b) + 5 * 8, bits);
    ck_reseal(b, n);
    return n;
}
static size_t ed_plateau_best_nan(unsigned char *b, size_t n)
{
    size_t best = ck_counters(b) + 6 * 8;
    put_u64(b + best, 0x7FF8000000000000ull);
    ck_reseal(b, n);
    return n;
}

R(r_cks_null) { return F(flatopt_optimizer_checkpoint_size)(NULL, &fx->out.sz); }
R(r_cks_out) { return F(flatopt_optimizer_checkpoint_size)(fx->opt, NULL); }
R(r_save_null)
{
    return F(flatopt_optimizer_save)(NULL, fx->out.ckpt, sizeof fx->out.ckpt, &fx->out.sz);
}
R(r_save_buf) { return F(flatopt_optimizer_save)(fx->opt, NULL, 4096, &fx->out.sz); }
R(r_save_written)
{
    return F(flatopt_optimizer_save)(fx->opt, fx->out.ckpt, sizeof fx->out.ckpt, NULL);
}
R(r_save_small)
{
    size_t n = 0;
    F(flatopt_optimizer_checkpoint_size)(fx->opt, &n);
    return F(flatopt_optimizer_save)(fx->opt, fx->out.ckpt, n - 1, &fx->out.sz);
}
R(r_save_pending)
{
    return F(flatopt_optimizer_save)(fx->opt, fx->out.ckpt, sizeof fx->out.ckpt, &fx->out.sz);
}
R(r_savef_pending)
{
    char path[600];
    tmp_path(path, sizeof path, "pending.ckpt");
    return F(flatopt_optimizer_save_file)(fx->opt, path);
}
R(r_save_zero) { return F(flatopt_optimizer_save)(fx->opt, fx->out.ckpt, 0, &fx->out.sz); }
R(r_load_null)
{
    unsigned char b[64];
    (void)fx;
    memset(b, 0, sizeof b);
    return F(flatopt_optimizer_load)(NULL, b, sizeof b);
}
R(r_load_buf_null) { return F(flatopt_optimizer_load)(fx->opt, NULL, 100); }
R(r_load_huge)
{
    unsigned char b[64];
    memset(b, 0, sizeof b);
    return F(flatopt_optimizer_load)(fx->opt, b, SIZE_MAX);
}
R(r_load_empty) { return load_edited(fx->opt, fx->opt, ed_short); }
R(r_load_zero)
{
    unsigned char b[4] = { 0, 0, 0, 0 };
    return F(flatopt_optimizer_load)(fx->opt, b, 0);
}
R(r_load_bare) { return load_edited(fx->bare, fx->opt, NULL); }
R(r_load_pending) { return load_edited(fx->opt, fx->nola, NULL); } /* checked first */
R(r_load_magic) { return load_edited(fx->opt, fx->opt, ed_magic); }
R(r_load_trunc) { return load_edited(fx->opt, fx->opt, ed_truncate); }
R(r_load_crc) { return load_edited(fx->opt, fx->opt, ed_flip_last_array_byte); }
R(r_load_version) { return load_edited(fx->opt, fx->opt, ed_version); }
R(r_load_bom) { return load_edited(fx->opt, fx->opt, ed_bom); }
R(r_load_cfg_byte) { return load_edited(fx->opt, fx->opt, ed_config); }
R(r_load_nbuf_huge) { return load_edited(fx->opt, fx->opt, ed_nbuf_huge); }
R(r_load_present) { return load_edited(fx->opt, fx->opt, ed_present); }
R(r_load_trailing) { return load_edited(fx->opt, fx->opt, ed_trailing); }
R(r_load_plateau_nan) { return load_edited(fx->plat, fx->plat, ed_plateau_best_nan); }
R(r_load_plateau_lr) { return load_edited(fx->plat, fx->plat, ed_plateau_lr_huge); }
R(r_load_m_nan) { return load_edited(fx->opt, fx->opt, ed_m_nan); }
R(r_load_v_neg) { return load_edited(fx->opt, fx->opt, ed_v_neg); }
R(r_load_slow_inf) { return load_edited(fx->opt, fx->opt, ed_slow_inf); }
/* A forged checkpoint of a one-buffer optimizer of rule `kind` (5 elements, two updates):
 * element i of its state array k set to x. The refusal must leave the optimizer's state as it
 * was; the status is the row's. */
static flatopt_status load_forged_rule(uint32_t kind, uint32_t amsgrad, int k, int i, float x)
{
    flatopt_config c;
    flatopt_base_params b;
    float p[5] = { 0.5f, -1.0f, 2.0f, 0.25f, -0.75f }, g[5] = { 0.1f, -0.2f, 0.3f, 0.0f, 1.0f };
    size_t n = 0, n2 = 0;
    unsigned char *forged, *before, *after;
    flatopt_optimizer *o;
    flatopt_status st;
    OK(F(flatopt_config_init)(&c, sizeof c));
    OK(F(flatopt_base_params_init)(&b, sizeof b, kind));
    b.amsgrad = amsgrad;
    c.base = &b;
    c.lr = 0.01;
    o = new_opt(&c);
    OK(F(flatopt_optimizer_add_param)(o, p, g, 5));
    OK(F(flatopt_optimizer_step)(o));
    OK(F(flatopt_optimizer_step)(o));
    before = ckpt_of(o, &n);
    forged = ckpt_of(o, &n);
    n = ed_state(forged, n, k, i, x);
    st = F(flatopt_optimizer_load)(o, forged, n);
    after = ckpt_of(o, &n2);
    CHECK(n2 == n && memcmp(before, after, n) == 0, "a refused load changed the optimizer");
    free(forged);
    free(before);
    free(after);
    F(flatopt_optimizer_free)(o);
    return st;
}
R(r_load_amsgrad_neg)
{
    (void)fx;
    return load_forged_rule(FLATOPT_ADAM, 1, 2, 1, -0.5f);
}
R(r_load_adadelta_neg)
{
    (void)fx;
    return load_forged_rule(FLATOPT_ADADELTA, 0, 0, 3, -1.0f);
}
R(r_load_rprop_step_nan)
{
    (void)fx;
    return load_forged_rule(FLATOPT_RPROP, 0, 1, 2, NAN);
}
R(r_load_adagrad_neg)
{
    (void)fx;
    return load_forged_rule(FLATOPT_ADAGRAD, 0, 0, 0, -1.0f);
}
/* checkpoint_info: checks like load, changes nothing, writes no output on failure. */
static flatopt_status info_edited(fixture *fx, size_t (*edit)(unsigned char *b, size_t n))
{
    size_t n = 0;
    unsigned char *b = ckpt_of(fx->opt, &n);
    flatopt_status st;
    if (edit)
        n = edit(b, n);
    st = F(flatopt_optimizer_checkpoint_info)(fx->opt, b, n, &fx->out.u64, &fx->out.u64b,
                                              &fx->out.f);
    free(b);
    return st;
}
R(r_info_null)
{
    unsigned char b[64];
    memset(b, 0, sizeof b);
    return F(flatopt_optimizer_checkpoint_info)(NULL, b, sizeof b, &fx->out.u64, NULL, NULL);
}
R(r_info_buf_null)
{
    return F(flatopt_optimizer_checkpoint_info)(fx->opt, NULL, 100, &fx->out.u64, NULL, NULL);
}
R(r_info_magic) { return info_edited(fx, ed_magic); }
R(r_info_v_neg) { return info_edited(fx, ed_v_neg); }
R(r_info_nola)
{
    size_t n = 0;
    unsigned char *b = ckpt_of(fx->nola, &n);
    flatopt_status st = F(flatopt_optimizer_checkpoint_info)(fx->opt, b, n, &fx->out.u64,
                                                             &fx->out.u64b, &fx->out.f);
    free(b);
    return st;
}
R(r_load_nola) { return load_edited(fx->opt, fx->nola, NULL); }
/* A checkpoint of another optimizer: config c, buffers of the given lengths. */
static flatopt_status load_foreign(fixture *fx, const flatopt_config *c, const size_t *lens,
                                   int nb)
{
    flatopt_optimizer *o = new_opt(c);
    float *bufs[2 * FX_NB];
    flatopt_status st;
    int i;
    for (i = 0; i < nb; i++) {
        bufs[2 * i] = falloc(lens[i]);
        bufs[2 * i + 1] = falloc(lens[i]);
        OK(F(flatopt_optimizer_add_param)(o, bufs[2 * i], bufs[2 * i + 1], lens[i]));
    }
    OK(F(flatopt_optimizer_step)(o));
    st = load_edited(fx->opt, o, NULL);
    F(flatopt_optimizer_free)(o);
    for (i = 0; i < 2 * nb; i++)
        free(bufs[i]);
    return st;
}
R(r_load_other_lr)
{
    flatopt_config c = fx->cfg;
    c.lr = 0.02;
    return load_foreign(fx, &c, fx_len, FX_NB);
}
R(r_load_other_alpha)
{
    flatopt_config c = fx->cfg;
    c.alpha = 0.25;
    return load_foreign(fx, &c, fx_len, FX_NB);
}
R(r_load_other_lens)
{
    const size_t lens[FX_NB] = { 5, 17, 41 };
    return load_foreign(fx, &fx->cfg, lens, FX_NB);
}
R(r_load_other_count) { return load_foreign(fx, &fx->cfg, fx_len, 2); }
R(r_savef_null)
{
    char path[600];
    (void)fx;
    tmp_path(path, sizeof path, "never.ckpt");
    return F(flatopt_optimizer_save_file)(NULL, path);
}
R(r_savef_path_null) { return F(flatopt_optimizer_save_file)(fx->opt, NULL); }
R(r_savef_empty) { return F(flatopt_optimizer_save_file)(fx->opt, ""); }
R(r_savef_nodir)
{
    char path[600];
    tmp_path(path, sizeof path, "no/such/dir/x.ckpt");
    return F(flatopt_optimizer_save_file)(fx->opt, path);
}
R(r_savef_isdir)
{
    char path[600];
    tmp_path(path, sizeof path, "subdir");
    return F(flatopt_optimizer_save_file)(fx->opt, path);
}
R(r_loadf_null)
{
    char path[600];
    (void)fx;
    tmp_path(path, sizeof path, "garbage.ckpt");
    return F(flatopt_optimizer_load_file)(NULL, path);
}
R(r_loadf_path_null) { return F(flatopt_optimizer_load_file)(fx->opt, NULL); }
R(r_loadf_empty) { return F(flatopt_optimizer_load_file)(fx->opt, ""); }
R(r_loadf_missing)
{
    char path[600];
    tmp_path(path, sizeof path, "missing.ckpt");
    return F(flatopt_optimizer_load_file)(fx->opt, path);
}
R(r_loadf_dir)
{
    char path[600];
    tmp_path(path, sizeof path, "subdir");
    return F(flatopt_optimizer_load_file)(fx->opt, path);
}
R(r_loadf_garbage)
{
    char path[600];
    tmp_path(path, sizeof path, "garbage.ckpt");
    return F(flatopt_optimizer_load_file)(fx->opt, path);
}
R(r_loadf_pending)
{
    char path[600];
    tmp_path(path, sizeof path, "fixture.ckpt"); /* the pending step is refused before I/O */
    return F(flatopt_optimizer_load_file)(fx->opt, path);
}
R(r_loadf_bare)
{
    char path[600];
    tmp_path(path, sizeof path, "fixture.ckpt");
    OK(F(flatopt_optimizer_save_file)(fx->opt, path));
    return F(flatopt_optimizer_load_file)(fx->bare, path);
}
R(r_loadf_nola)
{
    char path[600];
    tmp_path(path, sizeof path, "nola.ckpt");
    OK(F(flatopt_optimizer_save_file)(fx->nola, path));
    return F(flatopt_optimizer_load_file)(fx->opt, path);
}

#define E_NULL FLATOPT_ERR_NULL_POINTER

/* mixed precision: registration options, the scaled step, the loss scaler, the stateless
 * conversions and update */
R(r_poi_null) { (void)fx; return F(flatopt_param_options_init)(NULL, sizeof(flatopt_param_options)); }
R(r_poi_size) { return F(flatopt_param_options_init)(&fx->out.po, FLATOPT_PARAM_OPTIONS_SIZE_V1 - 8); }
/* Registers the spare param fx->xp into fx->mix (its third buffer) with gradients `grad`. */
#define PO_ROW(name, grad, stmt)                                                               \
    R(name)                                                                                    \
    {                                                                                          \
        flatopt_param_options o = FLATOPT_PARAM_OPTIONS_INIT;                                  \
        o.grad_dtype = FLATOPT_DTYPE_BF16;                                                     \
        stmt;                                                                                  \
        return F(flatopt_optimizer_add_param_with_options)(fx->mix, fx->xp, grad, FX_XLEN, &o); \
    }
PO_ROW(r_po_gdtype, fx->xh, o.grad_dtype = 3)
PO_ROW(r_po_cdtype, fx->xh, o.copy = fx->xc; o.copy_dtype = 7)
PO_ROW(r_po_copy_null, fx->xh, o.copy_dtype = FLATOPT_DTYPE_BF16)
PO_ROW(r_po_copy_f32, fx->xh, o.copy = fx->xc)
PO_ROW(r_po_reserved, fx->xh, o.reserved = 1)
PO_ROW(r_po_size0, fx->xh, o.struct_size = 0)
PO_ROW(r_po_group, fx->xh, o.group = 5)
PO_ROW(r_po_copy_own_param, fx->xh, o.copy = fx->xp; o.copy_dtype = FLATOPT_DTYPE_BF16)
PO_ROW(r_po_copy_param, fx->xh, o.copy = fx->mp1 + 1; o.copy_dtype = FLATOPT_DTYPE_F16)
PO_ROW(r_po_copy_grad, fx->xh, o.copy = fx->mg0 + 3; o.copy_dtype = FLATOPT_DTYPE_BF16)
PO_ROW(r_po_copy_copy, fx->xh, o.copy = fx->mc0 + 2; o.copy_dtype = FLATOPT_DTYPE_BF16)
PO_ROW(r_po_copy_own_grad, fx->xh, o.copy = fx->xh + 4; o.copy_dtype = FLATOPT_DTYPE_BF16)
PO_ROW(r_po_copy_mis, fx->xh, o.copy = (char *)fx->xc + 1; o.copy_dtype = FLATOPT_DTYPE_F16)
PO_ROW(r_po_grad_mis, (const char *)fx->xh + 1, (void)0)
PO_ROW(r_po_grad_f32_mis, (const char *)fx->xg + 2, o.grad_dtype = FLATOPT_DTYPE_F32)
PO_ROW(r_po_grad_on_copy, fx->mc1, o.grad_dtype = FLATOPT_DTYPE_F16)
R(r_po_param_on_copy)
{
    flatopt_param_options o = FLATOPT_PARAM_OPTIONS_INIT;
    return F(flatopt_optimizer_add_param_with_options)(fx->mix, (float *)(void *)fx->mc0, fx->xg,
                                                        4, &o);
}
R(r_po_param_null)
{
    return F(flatopt_optimizer_add_param_with_options)(fx->mix, NULL, fx->xh, FX_XLEN, NULL);
}
R(r_po_copy_slow)
{
    flatopt_param_options o = FLATOPT_PARAM_OPTIONS_INIT;
    const float *slow = NULL;
    size_t n = 0;
    OK(F(flatopt_optimizer_slow_weights)(fx->opt, 1, &slow, &n));
    o.copy = (void *)(uintptr_t)slow;
    o.copy_dtype = FLATOPT_DTYPE_BF16;
    return F(flatopt_optimizer_add_param_with_options)(fx->opt, fx->xp, fx->xg, FX_XLEN, &o);
}
R(r_po_opt_null)
{
    return F(flatopt_optimizer_add_param_with_options)(NULL, fx->xp, fx->xg, FX_XLEN, NULL);
}
R(r_po_stepped) { return F(flatopt_optimizer_add_param_with_options)(fx->opt, fx->xp, fx->xg, FX_XLEN, NULL); }
R(r_sm_scale_nan) { return F(flatopt_optimizer_step_mixed)(fx->opt, NULL, 0, NAN); }
R(r_sm_scale_inf) { return F(flatopt_optimizer_step_mixed)(fx->opt, NULL, 0, INFINITY); }
R(r_sm_scale_neg) { return F(flatopt_optimizer_step_mixed)(fx->opt, NULL, 0, -2.0f); }
R(r_sm_scale_scaler) { return F(flatopt_optimizer_step_mixed)(fx->mix, NULL, 0, 2.0f); }
R(r_sm_grads_null) { return F(flatopt_optimizer_step_mixed)(fx->mix, NULL, 2, 0.0f); }
R(r_sm_ngrads)
{
    const void *g[2];
    g[0] = fx->mg0;
    g[1] = fx->mg1;
    return F(flatopt_optimizer_step_mixed)(fx->mix, g, 1, 0.0f);
}
R(r_sm_grad_on_copy)
{
    const void *g[2];
    g[0] = fx->mg0;
    g[1] = fx->mc0;
    return F(flatopt_optimizer_step_mixed)(fx->mix, g, 2, 0.0f);
}
R(r_sm_grad_on_param)
{
    const void *g[2];
    g[0] = fx->mp0;
    g[1] = fx->mg1;
    return F(flatopt_optimizer_step_mixed)(fx->mix, g, 2, 0.0f);
}
R(r_sm_grad_mis)
{
    const void *g[2];
    g[0] = fx->mg0;
    g[1] = (const char *)fx->mg1 + 1;
    return F(flatopt_optimizer_step_mixed)(fx->mix, g, 2, 0.0f);
}
R(r_sm_grad_null)
{
    const void *g[2];
    g[0] = NULL;
    g[1] = fx->mg1;
    return F(flatopt_optimizer_step_mixed)(fx->mix, g, 2, 0.0f);
}
R(r_sm_pending) { return F(flatopt_optimizer_step_mixed)(fx->opt, NULL, 0, 0.0f); }
R(r_sm_opt_null) { (void)fx; return F(flatopt_optimizer_step_mixed)(NULL, NULL, 0, 0.0f); }
R(r_bss_nan) { return F(flatopt_optimizer_begin_step_scaled)(fx->opt, NAN); }
R(r_bss_inf) { return F(flatopt_optimizer_begin_step_scaled)(fx->opt, -INFINITY); }
R(r_bss_neg) { return F(flatopt_optimizer_begin_step_scaled)(fx->opt, -2.0f); }
R(r_bss_scaler) { return F(flatopt_optimizer_begin_step_scaled)(fx->mix, 2.0f); }
R(r_bss_pending) { return F(flatopt_optimizer_begin_step_scaled)(fx->opt, 2.0f); }
R(r_bss_opt_null) { (void)fx; return F(flatopt_optimizer_begin_step_scaled)(NULL, 2.0f); }
R(r_bsm_nan) { return F(flatopt_optimizer_begin_step_mixed)(fx->opt, NULL, 0, NAN); }
R(r_bsm_scaler) { return F(flatopt_optimizer_begin_step_mixed)(fx->mix, NULL, 0, 2.0f); }
R(r_bsm_grads_null) { return F(flatopt_optimizer_begin_step_mixed)(fx->mix, NULL, 2, 0.0f); }
R(r_bsm_pending) { return F(flatopt_optimizer_begin_step_mixed)(fx->opt, NULL, 0, 0.0f); }
R(r_bsm_ngrads)
{
    const void *g[2];
    g[0] = fx->mg0;
    g[1] = fx->mg1;
    return F(flatopt_optimizer_begin_step_mixed)(fx->mix, g, 1, 0.0f);
}
R(r_bsm_grad_on_copy)
{
    const void *g[2];
    g[0] = fx->mg0;
    g[1] = fx->mc0;
    return F(flatopt_optimizer_begin_step_mixed)(fx->mix, g, 2, 0.0f);
}
R(r_bsm_grad_mis)
{
    const void *g[2];
    g[0] = fx->mg0;
    g[1] = (const char *)fx->mg1 + 1;
    return F(flatopt_optimizer_begin_step_mixed)(fx->mix, g, 2, 0.0f);
}
R(r_bsm_grad_null)
{
    const void *g[2];
    g[0] = NULL;
    g[1] = fx->mg1;
    return F(flatopt_optimizer_begin_step_mixed)(fx->mix, g, 2, 0.0f);
}
R(r_bsm_opt_null) { (void)fx; return F(flatopt_optimizer_begin_step_mixed)(NULL, NULL, 0, 0.0f); }
R(r_swg_half)
{
    const float *g[2];
    g[0] = fx->mp0 + 100; /* never read: refused first */
    g[1] = fx->mp1 + 100;
    return F(flatopt_optimizer_step_with_grads)(fx->mix, g, 2);
}
R(r_lsi_null) { (void)fx; return F(flatopt_loss_scaler_options_init)(NULL, sizeof(flatopt_loss_scaler_options)); }
R(r_lsi_size) { return F(flatopt_loss_scaler_options_init)(&fx->out.lso, FLATOPT_LOSS_SCALER_OPTIONS_SIZE_V1 - 4); }
#define LS_ROW(name, stmt)                                                                     \
    R(name)                                                                                    \
    {                                                                                          \
        flatopt_loss_scaler_options o = FLATOPT_LOSS_SCALER_OPTIONS_INIT;                      \
        stmt;                                                                                  \
        return F(flatopt_optimizer_set_loss_scaler)(fx->mix, &o);                              \
    }
LS_ROW(r_ls_init0, o.init_scale = 0.0f)
LS_ROW(r_ls_init_nan, o.init_scale = NAN)
LS_ROW(r_ls_init_inf, o.init_scale = INFINITY)
LS_ROW(r_ls_init_neg, o.init_scale = -65536.0f)
LS_ROW(r_ls_growth1, o.growth_factor = 1.0f)
LS_ROW(r_ls_growth_inf, o.growth_factor = INFINITY)
LS_ROW(r_ls_backoff1, o.backoff_factor = 1.0f)
LS_ROW(r_ls_backoff0, o.backoff_factor = 0.0f)
LS_ROW(r_ls_backoff_nan, o.backoff_factor = NAN)
LS_ROW(r_ls_interval0, o.growth_interval = 0)
LS_ROW(r_ls_reserved, o.reserved = 1)
LS_ROW(r_ls_size, o.struct_size = 3)
R(r_ls_pending) { return F(flatopt_optimizer_set_loss_scaler)(fx->opt, NULL); }
R(r_ls_opt_null) { (void)fx; return F(flatopt_optimizer_set_loss_scaler)(NULL, NULL); }
R(r_lss_none) { return F(flatopt_optimizer_loss_scaler_state)(fx->opt, &fx->out.f, &fx->out.u32, NULL); }
R(r_lss_opt_null) { return F(flatopt_optimizer_loss_scaler_state)(NULL, &fx->out.f, NULL, NULL); }
R(r_slss_none) { return F(flatopt_optimizer_set_loss_scaler_state)(fx->opt, 2.0f, 0); }
R(r_slss_nan) { return F(flatopt_optimizer_set_loss_scaler_state)(fx->mix, NAN, 0); }
R(r_slss_zero) { return F(flatopt_optimizer_set_loss_scaler_state)(fx->mix, 0.0f, 0); }
R(r_slss_tracker) { return F(flatopt_optimizer_set_loss_scaler_state)(fx->mix, 2.0f, 2000); }
R(r_wd_f32) { return F(flatopt_widen_to_f32)(FLATOPT_DTYPE_F32, fx->sh, fx->out.fv, 4); }
R(r_wd_dtype) { return F(flatopt_widen_to_f32)(9, fx->sh, fx->out.fv, 4); }
R(r_wd_dst_null) { return F(flatopt_widen_to_f32)(FLATOPT_DTYPE_BF16, fx->sh, NULL, 4); }
R(r_wd_src_null) { return F(flatopt_widen_to_f32)(FLATOPT_DTYPE_BF16, NULL, fx->out.fv, 4); }
R(r_wd_overlap) { return F(flatopt_widen_to_f32)(FLATOPT_DTYPE_BF16, (const uint16_t *)(const void *)(fx->sp + 1), fx->sp, 4); }
R(r_wd_src_mis) { return F(flatopt_widen_to_f32)(FLATOPT_DTYPE_F16, (const uint16_t *)(const void *)((const char *)fx->sh + 1), fx->out.fv, 4); }
R(r_wd_dst_mis) { return F(flatopt_widen_to_f32)(FLATOPT_DTYPE_F16, fx->sh, mis(fx->out.fv), 4); }
R(r_nw_f32) { return F(flatopt_narrow_from_f32)(FLATOPT_DTYPE_F32, fx->sp, fx->out.hv, 4); }
R(r_nw_overlap) { return F(flatopt_narrow_from_f32)(FLATOPT_DTYPE_F16, fx->sp, (uint16_t *)(void *)(fx->sp + 1), 4); }
R(r_nw_dst_mis) { return F(flatopt_narrow_from_f32)(FLATOPT_DTYPE_BF16, fx->sp, (uint16_t *)(void *)((char *)fx->out.hv + 1), 4); }
R(r_nw_huge) { return F(flatopt_narrow_from_f32)(FLATOPT_DTYPE_BF16, fx->sp, fx->out.hv, SIZE_MAX / 2); }
R(r_ssm_n) { return F(flatopt_sum_squares_partials_mixed)(fx->sh, FLATOPT_DTYPE_BF16, SLEN, 1.0f, fx->out.dv, 2); }
R(r_ssm_scale0) { return F(flatopt_sum_squares_partials_mixed)(fx->sh, FLATOPT_DTYPE_BF16, SLEN, 0.0f, fx->out.dv, 1); }
R(r_ssm_dtype) { return F(flatopt_sum_squares_partials_mixed)(fx->sh, 4, SLEN, 1.0f, fx->out.dv, 1); }
R(r_ssm_overlap) { return F(flatopt_sum_squares_partials_mixed)(fx->out.dv, FLATOPT_DTYPE_BF16, 4, 1.0f, fx->out.dv, 1); }
/* The stateless mixed update with one argument changed (Adam: m and v required). */
#define MU_ROW(name, stmt)                                                                     \
    R(name)                                                                                    \
    {                                                                                          \
        float scale = 8.0f, *param = fx->sp, *m = fx->sm, *v = fx->sv;                         \
        const void *grad = fx->sh;                                                             \
        void *copy = fx->shc;                                                                  \
        uint32_t gdt = FLATOPT_DTYPE_BF16, cdt = FLATOPT_DTYPE_BF16;                           \
        stmt;                                                                                  \
        return F(flatopt_mixed_update)(&fx->hp_adam, &fx->args, scale, param, grad, gdt, m, v, \
                                       NULL, fx->ss, copy, cdt, SLEN);                         \
    }
MU_ROW(r_mu_scale_inf, scale = INFINITY)
MU_ROW(r_mu_scale0, scale = 0.0f)
MU_ROW(r_mu_copy_param, copy = fx->sp)
MU_ROW(r_mu_copy_null, copy = NULL)
MU_ROW(r_mu_copy_f32, cdt = FLATOPT_DTYPE_F32)
MU_ROW(r_mu_cdtype, cdt = 5)
MU_ROW(r_mu_gdtype, gdt = 3)
MU_ROW(r_mu_m_null, m = NULL)
MU_ROW(r_mu_grad_on_m, grad = fx->sm)
MU_ROW(r_mu_grad_on_copy, grad = (const uint16_t *)fx->shc + 1)
MU_ROW(r_mu_param_null, param = NULL)
MU_ROW(r_mu_v_mis, v = mis(fx->sv))
R(r_mu_hp_null)
{
    return F(flatopt_mixed_update)(NULL, &fx->args, 1.0f, fx->sp, fx->sh, FLATOPT_DTYPE_BF16,
                                   fx->sm, fx->sv, NULL, fx->ss, NULL, FLATOPT_DTYPE_F32, SLEN);
}
/* A checkpoint of an optimizer like fx->mix without a loss scaler, loaded into fx->mix. */
R(r_load_no_scaler)
{
    flatopt_config c;
    flatopt_optimizer *t;
    float *p0 = falloc(MLEN0), *p1 = falloc(MLEN1);
    flatopt_status st;
    OK(F(flatopt_config_init)(&c, sizeof c));
    c.lr = 0.01;
    t = new_opt(&c);
    OK(F(flatopt_optimizer_add_param)(t, p0, NULL, MLEN0));
    OK(F(flatopt_optimizer_add_param)(t, p1, NULL, MLEN1));
    st = load_edited(fx->mix, t, NULL);
    F(flatopt_optimizer_free)(t);
    free(p0);
    free(p1);
    return st;
}
/* fx->mix's checkpoint (format 3) with the loss scale set to 0 (valid CRC). */
static size_t ed_scale0(unsigned char *b, size_t n)
{
    /* The 24-byte scaler section (scale first) comes right before the buffer count (8
     * bytes), then 2 buffer records (16 bytes and Adam's m and v each) and the CRC. */
    size_t arrays = 2 * sizeof(float) * (MLEN0 + MLEN1);
    size_t at = n - 4 - arrays - 2 * 16 - 8 - 24;
    put_u32(b + at, 0);
    ck_reseal(b, n);
    return n;
}
R(r_load_scale0) { return load_edited(fx->mix, fx->mix, ed_scale0); }

#define E_ARG FLATOPT_ERR_INVALID_ARGUMENT
#define E_LEN FLATOPT_ERR_LENGTH_MISMATCH
#define E_STATE FLATOPT_ERR_INVALID_STATE
#define E_UNSUP FLATOPT_ERR_UNSUPPORTED
#define E_OVER FLATOPT_ERR_OVERLAP
#define E_IO FLATOPT_ERR_IO
#define E_CORRUPT FLATOPT_ERR_CORRUPT

static const row k_rows[] = {
    /* init functions */
    { "base_params_init: params NULL", NULL, r_bpi_null, E_NULL, "params" },
    { "base_params_init: kind 99", NULL, r_bpi_kind, E_ARG, "kind" },
    { "base_params_init: the kind after the last", NULL, r_bpi_kind_next, E_ARG, "kind" },
    { "schedule_init: schedule NULL", NULL, r_si_null, E_NULL, "schedule" },
    { "schedule_init: kind 99", NULL, r_si_kind, E_ARG, "kind" },
    { "schedule_init: kind 16", NULL, r_si_kind16, E_ARG, "kind" },
    { "config_init: config NULL", NULL, r_ci_null, E_NULL, "config" },
    { "config_init: size below FLATOPT_CONFIG_SIZE_V1", NULL, r_ci_size_small, E_ARG,
      "smaller than the first version" },
    { "config_init: size 2^40", NULL, r_ci_size_huge, E_ARG, "larger than any struct" },
    { "base_params_init: size 0", NULL, r_bpi_size0, E_ARG, "size = 0" },
    { "schedule_init: size 4", NULL, r_si_size4, E_ARG, "size = 4" },
    { "step_args_init: size below FLATOPT_STEP_ARGS_SIZE_V1", NULL, r_sai_size_small, E_ARG,
      "flatopt_step_args" },
    { "step_args_init: args NULL", NULL, r_sai_null, E_NULL, "args" },
    /* optimizer_new */
    { "new: config NULL", NULL, r_new_null_cfg, E_NULL, "config" },
    { "new: out NULL", NULL, r_new_null_out, E_NULL, "out" },
    { "new: struct_size 0", NULL, r_new_size0, E_ARG, "struct_size" },
    { "new: struct_size below FLATOPT_CONFIG_SIZE_V1", NULL, r_new_size_small, E_ARG,
      "smaller than the first version" },
    { "new: struct_size 0xA5A5A5A5 (uninitialised)", NULL, r_new_size_garbage, E_ARG,
      "larger than any struct" },
    { "new: newer caller's config, unknown field set", NULL, r_new_newer_set, E_UNSUP,
      "byte 128" },
    { "new: newer caller's base, unknown field set", NULL, r_new_base_newer_set, E_UNSUP,
      "byte 216" },
    { "new: newer caller's schedule, unknown field set", NULL, r_new_sched_newer_set, E_UNSUP,
      "byte 256" },
    { "new: base.struct_size 0", NULL, r_new_base_size0, E_ARG, "base.struct_size" },
    { "new: base.struct_size 8", NULL, r_new_base_size_small, E_ARG, "base.struct_size" },
    { "new: base.kind 99", NULL, r_new_kind99, E_ARG, "kind" },
    { "new: nonfinite 7", NULL, r_new_nonfinite7, E_ARG, "nonfinite" },
    { "new: simd_tier 9", NULL, r_new_tier9, E_ARG, "simd_tier" },
    { "new: state_dtype 3", NULL, r_new_state_dtype3, E_ARG, "state_dtype" },
    { "new: state_rounding 2", NULL, r_new_rounding2, E_ARG, "state_rounding" },
    { "new: slow_dtype int8", NULL, r_new_slow_int8, E_ARG, "slow_dtype" },
    { "new: Rprop with int8 state", NULL, r_new_rprop_int8, E_ARG, "state_dtype" },
    { "step_range: int8 state, a range cutting an 8-bit block", NULL, r_range_int8_cut, E_ARG,
      "cuts buffer 1 at its element 5" },
    { "new: simd_tier the CPU lacks", NULL, r_new_tier_unavail, E_UNSUP, "not available" },
    { "new: lr NaN", NULL, r_new_lr_nan, E_ARG, "lr" },
    { "new: lr +Inf", NULL, r_new_lr_inf, E_ARG, "lr" },
    { "new: lr negative", NULL, r_new_lr_neg, E_ARG, "lr" },
    { "new: b1 NaN", NULL, r_new_b1_nan, E_ARG, "b1" },
    { "new: b1 = 1", NULL, r_new_b1_one, E_ARG, "b1" },
    { "new: b2 negative", NULL, r_new_b2_neg, E_ARG, "b2" },
    { "new: b2 +Inf", NULL, r_new_b2_inf, E_ARG, "b2" },
    { "new: eps 0", NULL, r_new_eps0, E_ARG, "eps" },
    { "new: eps negative", NULL, r_new_eps_neg, E_ARG, "eps" },
    { "new: eps NaN", NULL, r_new_eps_nan, E_ARG, "eps" },
    { "new: amsgrad 2", NULL, r_new_amsgrad2, E_ARG, "amsgrad" },
    { "new: sgd momentum negative", NULL, r_new_mom_neg, E_ARG, "momentum" },
    { "new: sgd momentum 1", NULL, r_new_mom_one, E_ARG, "momentum" },
    { "new: sgd momentum NaN", NULL, r_new_mom_nan, E_ARG, "momentum" },
    { "new: sgd dampening 1.5", NULL, r_new_damp, E_ARG, "dampening" },
    { "new: nesterov without momentum", NULL, r_new_nesterov_nomom, E_ARG, "nesterov" },
    { "new: nesterov with dampening", NULL, r_new_nesterov_damp, E_ARG, "nesterov" },
    { "new: nesterov 2", NULL, r_new_nesterov2, E_ARG, "nesterov" },
    { "new: adamw decoupled_weight_decay < 0", NULL, r_new_adamw_dwd_neg, E_ARG, "decoupled" },
    { "new: adamw decoupled_weight_decay NaN", NULL, r_new_adamw_dwd_nan, E_ARG, "decoupled" },
    { "new: weight_decay negative", NULL, r_new_wd_neg, E_ARG, "weight_decay" },
    { "new: weight_decay NaN", NULL, r_new_wd_nan, E_ARG, "weight_decay" },
    { "new: weight_decay +Inf", NULL, r_new_wd_inf, E_ARG, "weight_decay" },
    { "new: grad_clip_norm negative", NULL, r_new_clipn_neg, E_ARG, "grad_clip_norm" },
    { "new: grad_clip_norm NaN", NULL, r_new_clipn_nan, E_ARG, "grad_clip_norm" },
    { "new: grad_clip_norm +Inf", NULL, r_new_clipn_inf, E_ARG, "grad_clip_norm" },
    { "new: grad_clip_value negative", NULL, r_new_clipv_neg, E_ARG, "grad_clip_value" },
    { "new: grad_clip_value NaN", NULL, r_new_clipv_nan, E_ARG, "grad_clip_value" },
    { "new: sync_period 0", NULL, r_new_k0, E_ARG, "sync_period" },
    { "new: alpha 1.5", NULL, r_new_alpha_big, E_ARG, "alpha" },
    { "new: alpha negative", NULL, r_new_alpha_neg, E_ARG, "alpha" },
    { "new: alpha NaN", NULL, r_new_alpha_nan, E_ARG, "alpha" },
    { "new: lookahead 2", NULL, r_new_lookahead2, E_ARG, "lookahead" },
    { "new: schedule_manual 3", NULL, r_new_manual3, E_ARG, "schedule_manual" },
    { "new: num_threads 0", NULL, r_new_threads0, E_ARG, "num_threads" },
    { "new: num_threads 100000", NULL, r_new_threads_big, E_ARG, "num_threads" },
    { "new: schedule struct_size 0", NULL, r_sch_size0, E_ARG, "struct_size" },
    { "new: schedule struct_size 8", NULL, r_sch_size8, E_ARG, "struct_size" },
    { "new: schedule struct_size below FLATOPT_SCHEDULE_SIZE_V1", NULL, r_sch_size_below_v1, E_ARG,
      "schedule.struct_size" },
    { "new: schedule kind 99", NULL, r_sch_kind99, E_ARG, "kind" },
    { "new: exponential gamma NaN", NULL, r_sch_gamma_nan, E_ARG, "gamma" },
    { "new: exponential gamma negative", NULL, r_sch_gamma_neg, E_ARG, "gamma" },
    { "new: exponential gamma 0", NULL, r_sch_gamma0, E_ARG, "gamma" },
    { "new: schedule base_lr NaN", NULL, r_sch_base_nan, E_ARG, "base" },
    { "new: schedule base_lr +Inf", NULL, r_sch_base_inf, E_ARG, "base" },
    { "new: schedule base_lr negative", NULL, r_sch_base_neg, E_ARG, "base" },
    { "new: multistep milestones NULL", NULL, r_sch_ms_null, E_NULL, "milestones" },
    { "new: multistep milestones not increasing", NULL, r_sch_ms_order, E_ARG, "milestones" },
    { "new: multistep n_milestones SIZE_MAX", NULL, r_sch_ms_huge, E_ARG, "milestones" },
    { "new: piecewise values NULL", NULL, r_sch_pw_null, E_NULL, "values" },
    { "new: piecewise 2 values for 3 boundaries", NULL, r_sch_pw_count, E_ARG, "values" },
    { "new: piecewise n_values SIZE_MAX", NULL, r_sch_pw_huge, E_ARG, "values" },
    { "new: cyclic_mode 9", NULL, r_sch_cyclic_mode, E_ARG, "cyclic_mode" },
    { "new: plateau_mode 5", NULL, r_sch_plateau_mode, E_ARG, "plateau_mode" },
    { "new: threshold_mode 2", NULL, r_sch_threshold_mode, E_ARG, "threshold_mode" },
    { "new: plateau factor 1.5", NULL, r_sch_plateau_factor, E_ARG, "factor" },
    { "new: staircase 2", NULL, r_sch_staircase, E_ARG, "staircase" },
    { "new: anneal_linear 3", NULL, r_sch_anneal, E_ARG, "anneal_linear" },
    { "new: one-cycle pct_start 1.5", NULL, r_sch_pct, E_ARG, "pct_start" },
    { "new: warm restarts t_mult 0", NULL, r_sch_tmult0, E_ARG, "t_mult" },
    { "new: cosine eta_min NaN", NULL, r_sch_eta_nan, E_ARG, "eta_min" },
    { "new: warmup-cosine warmup > period", NULL, r_sch_warmup, E_ARG, "warmup" },
    { "new: cosine period 0", NULL, r_sch_period0, E_ARG, "period" },
    { "new: step period 0", NULL, r_sch_step_period0, E_ARG, "period" },
    /* add_param */
    { "add_param: opt NULL", NULL, r_add_null_opt, E_NULL, "opt" },
    { "add_param: param NULL", NULL, r_add_null_param, E_NULL, "param" },
    { "add_param: len SIZE_MAX", NULL, r_add_huge, E_ARG, "invalid param" },
    { "add_param: len*4 wraps to 0", NULL, r_add_wrap, E_ARG, "invalid param" },
    { "add_param: grad is the param", NULL, r_add_same, E_OVER, "param 0" },
    { "add_param: grad overlaps param partially", NULL, r_add_partial, E_OVER, "param 0" },
    { "add_param: grad is a registered param", NULL, r_add_grad_on_param, E_OVER, "param 1" },
    { "add_param: param inside a registered param", NULL, r_add_param_on_param, E_OVER,
      "param 2" },
    { "add_param: param is a registered grad", NULL, r_add_param_on_grad, E_OVER, "grad 0" },
    { "add_param: param misaligned", NULL, r_add_mis_param, E_ARG, "invalid param" },
    { "add_param: grad misaligned", NULL, r_add_mis_grad, E_ARG, "invalid grad" },
    { "add_param: after the first step", setup_stepped, r_add_after_step, E_STATE,
      "after the first update" },
    { "add_param: while a begun step is pending", setup_pending, r_add_after_step, E_STATE,
      "registering" },
    /* step, step_with_grads */
    { "step: opt NULL", NULL, r_step_null, E_NULL, "opt" },
    { "step: before add_param", NULL, r_step_bare, E_STATE, "registered" },
    { "step: while a begun step is pending", setup_pending, r_step_pending, E_STATE, "end_step" },
    { "step_with_grads: opt NULL", NULL, r_swg_null_opt, E_NULL, "opt" },
    { "step_with_grads: grads NULL", NULL, r_swg_null_grads, E_NULL, "grads" },
    { "step_with_grads: n_grads 2 of 3", NULL, r_swg_n2, E_LEN, "n_grads" },
    { "step_with_grads: n_grads 0", NULL, r_swg_n0, E_LEN, "n_grads" },
    { "step_with_grads: n_grads SIZE_MAX", NULL, r_swg_nhuge, E_LEN, "n_grads" },
    { "step_with_grads: grads[1] NULL", NULL, r_swg_null_grad1, E_NULL, "grad" },
    { "step_with_grads: grads[1] misaligned", NULL, r_swg_mis_grad1, E_ARG, "invalid grad" },
    { "step_with_grads: grads[2] is param 2", NULL, r_swg_same, E_OVER, "param 2" },
    { "step_with_grads: grads[0] inside param 1", NULL, r_swg_partial, E_OVER, "param 1" },
    { "step_with_grads: before add_param", NULL, r_swg_bare, E_STATE, "registered" },
    { "step_with_grads: while a begun step is pending", setup_pending, r_swg_pending, E_STATE,
      "end_step" },
    /* split steps, reset */
    { "begin_step: opt NULL", NULL, r_begin_null, E_NULL, "opt" },
    { "begin_step: before add_param", NULL, r_begin_bare, E_STATE, "registered" },
    { "begin_step: twice", setup_pending, r_begin_pending, E_STATE, "end_step" },
    { "step_range: opt NULL", NULL, r_range_null, E_NULL, "opt" },
    { "step_range: without begin_step", NULL, r_range_nobegin, E_STATE, "begin_step" },
    { "step_range: after a finished step", setup_stepped, r_range_nobegin, E_STATE,
      "begin_step" },
    { "step_range: end past the total length", setup_pending, r_range_past_end, E_ARG, "range" },
    { "step_range: begin > end", setup_pending, r_range_reversed, E_ARG, "range" },
    { "step_range: end SIZE_MAX", setup_pending, r_range_huge, E_ARG, "range" },
    { "step_range: before add_param", NULL, r_range_bare, E_STATE, "begin_step" },
    { "step_range: the same range twice", setup_part, r_range_again, E_OVER, "element 0" },
    { "step_range: overlapping an applied range", setup_part, r_range_overlap, E_OVER,
      "element 5" },
    { "step_range: inside an applied range", setup_part, r_range_inside, E_OVER, "element 3" },
    { "step_range: the rest and one applied element", setup_part, r_range_last, E_OVER,
      "element 9" },
    { "end_step: with no range applied", setup_pending, r_end_part, E_LEN, "elements applied" },
    { "end_step: after 10 of 62 elements", setup_part, r_end_part, E_LEN, "elements applied" },
    { "end_step: opt NULL", NULL, r_end_null, E_NULL, "opt" },
    { "end_step: without begin_step", NULL, r_end_nobegin, E_STATE, "begin_step" },
    { "end_step: after a finished step", setup_stepped, r_end_nobegin, E_STATE, "begin_step" },
    { "end_step: before add_param", NULL, r_end_bare, E_STATE, "begin_step" },
    { "reset: opt NULL", NULL, r_reset_null, E_NULL, "opt" },
    { "reset: before add_param", NULL, r_reset_bare, E_STATE, "registered" },
    { "reset: while a begun step is pending", setup_pending, r_reset_pending, E_STATE,
      "end_step" },
    /* parameter groups */
    { "group_options_init: options NULL", NULL, r_goi_null, E_NULL, "options" },
    { "group_options_init: size below V1", NULL, r_goi_size, E_ARG, "size" },
    { "add_group: options.struct_size 0", NULL, r_ag_size0, E_ARG, "struct_size" },
    { "add_group: options.reserved 1", NULL, r_ag_reserved, E_ARG, "reserved" },
    { "add_group: lr -1", NULL, r_ag_lr_neg, E_ARG, "lr" },
    { "add_group: lr 1e39 (past f32)", NULL, r_ag_lr_f32, E_ARG, "lr" },
    { "add_group: weight_decay inf", NULL, r_ag_wd_inf, E_ARG, "weight_decay" },
    { "add_group: weight_decay -0.5", NULL, r_ag_wd_neg, E_ARG, "weight_decay" },
    { "add_group: base of another kind", NULL, r_ag_base_kind, E_ARG, "kind" },
    { "add_group: base b1 = 1", NULL, r_ag_base_b1, E_ARG, "b1" },
    { "add_group: base struct_size 3", NULL, r_ag_base_size, E_ARG, "struct_size" },
    { "add_group: opt NULL", NULL, r_ag_opt_null, E_NULL, "opt" },
    { "add_group: group NULL", NULL, r_ag_out_null, E_NULL, "group" },
    { "add_group: while a begun step is pending", setup_pending, r_ag_pending, E_STATE,
      "end_step" },
    { "add_param_to_group: group 1 of 1", NULL, r_apg_group, E_ARG, "group" },
    { "add_param_to_group: group SIZE_MAX", NULL, r_apg_group_max, E_ARG, "group" },
    { "add_param_to_group: opt NULL", NULL, r_apg_opt_null, E_NULL, "opt" },
    { "add_param_to_group: param NULL", NULL, r_apg_param_null, E_NULL, "param" },
    { "add_param_to_group: param overlaps param 0", NULL, r_apg_overlap, FLATOPT_ERR_OVERLAP,
      "param 0" },
    { "add_param_to_group: after a step", setup_stepped, r_apg_stepped, E_STATE, "first update" },
    { "num_groups: opt NULL", NULL, r_ng_null, E_NULL, "opt" },
    { "num_groups: out NULL", NULL, r_ng_out, E_NULL, "out" },
    { "param_group: index past the buffers", NULL, r_pg_index, E_ARG, "index" },
    { "param_group: out NULL", NULL, r_pg_out, E_NULL, "out" },
    { "param_group: opt NULL", NULL, r_pg_null, E_NULL, "opt" },
    { "group_lr: group 1 of 1", NULL, r_glr_group, E_ARG, "group" },
    { "group_lr: out NULL", NULL, r_glr_out, E_NULL, "out" },
    { "group_lr: opt NULL", NULL, r_glr_null, E_NULL, "opt" },
    { "group_current_lr: group 7", NULL, r_gclr_group, E_ARG, "group" },
    { "group_current_lr: out NULL", NULL, r_gclr_out, E_NULL, "out" },
    { "group_current_lr_exact: group 1 of 1", NULL, r_gclx_group, E_ARG, "group" },
    { "group_current_lr_exact: out NULL", NULL, r_gclx_out, E_NULL, "out" },
    { "group_current_lr_exact: opt NULL", NULL, r_gclx_null, E_NULL, "opt" },
    { "group_weight_decay: group SIZE_MAX", NULL, r_gwd_group, E_ARG, "group" },
    { "group_weight_decay: out NULL", NULL, r_gwd_out, E_NULL, "out" },
    { "set_group_lr: group 1 of 1", NULL, r_sglr_group, E_ARG, "group" },
    { "set_group_lr: -0.1", NULL, r_sglr_neg, E_ARG, "lr" },
    { "set_group_lr: inf", NULL, r_sglr_inf, E_ARG, "lr" },
    { "set_group_lr: 1e39 (past f32)", NULL, r_sglr_f32, E_ARG, "lr" },
    { "set_group_lr: opt NULL", NULL, r_sglr_null, E_NULL, "opt" },
    { "set_group_lr: while a begun step is pending", setup_pending, r_sglr_pending, E_STATE,
      "end_step" },
    { "set_group_weight_decay: NaN", NULL, r_sgwd_nan, E_ARG, "weight_decay" },
    { "set_group_weight_decay: -1", NULL, r_sgwd_neg, E_ARG, "weight_decay" },
    { "set_group_weight_decay: group 3", NULL, r_sgwd_group, E_ARG, "group" },
    { "set_group_weight_decay: opt NULL", NULL, r_sgwd_null, E_NULL, "opt" },
    { "set_group_weight_decay: while a begun step is pending", setup_pending, r_sgwd_pending,
      E_STATE, "end_step" },
    { "group_base_params: group 2", NULL, r_gbp_group, E_ARG, "group" },
    { "group_base_params: out NULL", NULL, r_gbp_out, E_NULL, "out" },
    { "group_base_params: size 12", NULL, r_gbp_size, E_ARG, "size" },
    { "group_base_params: opt NULL", NULL, r_gbp_null, E_NULL, "opt" },
    { "set_group_base_params: group 1 of 1", NULL, r_sgb_group, E_ARG, "group" },
    { "set_group_base_params: base of another kind", NULL, r_sgb_kind, E_ARG, "kind" },
    { "set_group_base_params: b1 = 1", NULL, r_sgb_b1, E_ARG, "b1" },
    { "set_group_base_params: eps NaN", NULL, r_sgb_eps, E_ARG, "eps" },
    { "set_group_base_params: struct_size 3", NULL, r_sgb_size, E_ARG, "struct_size" },
    { "set_group_base_params: AMSGrad turned on", NULL, r_sgb_amsgrad, E_ARG, "state buffers" },
    { "set_group_base_params: base NULL", NULL, r_sgb_null, E_NULL, "base" },
    { "set_group_base_params: opt NULL", NULL, r_sgb_opt_null, E_NULL, "opt" },
    { "set_group_base_params: while a begun step is pending", setup_pending, r_sgb_pending,
      E_STATE, "end_step" },
    /* queries */
    { "step_count: opt NULL", NULL, r_q_steps_null, E_NULL, "opt" },
    { "step_count: out NULL", NULL, r_q_steps_out, E_NULL, "out" },
    { "skipped_count: opt NULL", NULL, r_q_skipped_null, E_NULL, "opt" },
    { "skipped_count: out NULL", NULL, r_q_skipped_out, E_NULL, "out" },
    { "current_lr: opt NULL", NULL, r_q_lr_null, E_NULL, "opt" },
    { "current_lr: out NULL", NULL, r_q_lr_out, E_NULL, "out" },
    { "simd_tier: opt NULL", NULL, r_q_tier_null, E_NULL, "opt" },
    { "simd_tier: out NULL", NULL, r_q_tier_out, E_NULL, "out" },
    { "num_threads: opt NULL", NULL, r_q_threads_null, E_NULL, "opt" },
    { "num_threads: out NULL", NULL, r_q_threads_out, E_NULL, "out" },
    { "num_params: opt NULL", NULL, r_q_nparams_null, E_NULL, "opt" },
    { "num_params: out NULL", NULL, r_q_nparams_out, E_NULL, "out" },
    { "total_len: opt NULL", NULL, r_q_total_null, E_NULL, "opt" },
    { "total_len: out NULL", NULL, r_q_total_out, E_NULL, "out" },
    { "state_bytes: opt NULL", NULL, r_q_state_bytes_null, E_NULL, "opt" },
    { "state_bytes: out NULL", NULL, r_q_state_bytes_out, E_NULL, "out" },
    /* setters */
    { "set_num_threads: opt NULL", NULL, r_threads_null, E_NULL, "opt" },
    { "set_num_threads: 0", NULL, r_threads0, E_ARG, "num_threads" },
    { "set_num_threads: 100000", NULL, r_threads_big, E_ARG, "num_threads" },
    { "set_num_threads: while pending", setup_pending, r_threads_pending, E_STATE, "end_step" },
    { "set_simd_tier: opt NULL", NULL, r_tier_null, E_NULL, "opt" },
    { "set_simd_tier: 9", NULL, r_tier9, E_ARG, "tier" },
    { "set_simd_tier: a tier the CPU lacks", NULL, r_tier_unavail, E_UNSUP, "not available" },
    { "set_simd_tier: while pending", setup_pending, r_tier_pending, E_STATE, "end_step" },
    { "set_default_simd_tier: 9", NULL, r_deftier9, E_ARG, "tier" },
    { "set_default_simd_tier: a tier the CPU lacks", NULL, r_deftier_unavail, E_UNSUP,
      "not available" },
    /* slow weights */
    { "slow_weights: opt NULL", NULL, r_slow_null, E_NULL, "opt" },
    { "slow_weights: out NULL", NULL, r_slow_out_null, E_NULL, "out" },
    { "slow_weights: out_len NULL", NULL, r_slow_len_null, E_NULL, "out_len" },
    { "slow_weights: index = number of buffers", NULL, r_slow_index, E_ARG, "index" },
    { "slow_weights: index SIZE_MAX", NULL, r_slow_index_huge, E_ARG, "index" },
    { "slow_weights: without Lookahead", NULL, r_slow_nola, E_STATE, "Lookahead" },
    { "copy_slow_weights: opt NULL", NULL, r_copy_null, E_NULL, "opt" },
    { "copy_slow_weights: dst NULL", NULL, r_copy_dst_null, E_NULL, "dst" },
    { "copy_slow_weights: len 4 of 5", NULL, r_copy_short, E_LEN, "dst" },
    { "copy_slow_weights: len 0", NULL, r_copy_zero, E_LEN, "dst" },
    { "copy_slow_weights: len SIZE_MAX", NULL, r_copy_huge, E_ARG, "dst" },
    { "copy_slow_weights: dst misaligned", NULL, r_copy_mis, E_ARG, "dst" },
    { "copy_slow_weights: dst is its own slow weights", NULL, r_copy_into_own, E_OVER, "dst" },
    { "save: buf inside the slow weights", NULL, r_save_into_slow, E_OVER, "buf" },
    { "slow_weights: out_len inside the slow weights", NULL, r_slow_out_in_slow, E_OVER, "out_len" },
    { "copy_slow_weights: index 7", NULL, r_copy_index, E_ARG, "index" },
    { "copy_slow_weights: without Lookahead", NULL, r_copy_nola, E_STATE, "Lookahead" },
    /* schedule stepping */
    { "schedule_step: opt NULL", NULL, r_sstep_null, E_NULL, "opt" },
    { "schedule_step_metric: opt NULL", NULL, r_smetric_null, E_NULL, "opt" },
    { "schedule_step_metric: not ReduceOnPlateau", NULL, r_smetric_not_plateau, E_STATE,
      "ReduceOnPlateau" },
    { "schedule_step_metric: metric NaN", NULL, r_smetric_nan, E_ARG, "metric" },
    { "schedule_step_metric: metric -Inf", NULL, r_smetric_inf, E_ARG, "metric" },
    { "schedule_set_epoch: opt NULL", NULL, r_sepoch_null, E_NULL, "opt" },
    { "schedule_set_epoch: ReduceOnPlateau", NULL, r_sepoch_plateau, E_STATE, "ReduceOnPlateau" },
    { "schedule_set_epoch: ReduceOnPlateau, UINT64_MAX", NULL, r_sepoch_plateau_max, E_STATE,
      "ReduceOnPlateau" },
    /* stateless updates */
    { "adam_update: hp NULL", NULL, r_adam_hp_null, E_NULL, "hp" },
    { "adam_update: args NULL", NULL, r_adam_args_null, E_NULL, "args" },
    { "adam_update: hp.struct_size 0", NULL, r_adam_hp_size0, E_ARG, "struct_size" },
    { "adam_update: args.struct_size 3", NULL, r_adam_args_size, E_ARG, "struct_size" },
    { "adam_update: newer caller's hp, unknown field set", NULL, r_adam_hp_newer_set, E_UNSUP,
      "byte 224" },
    { "adam_update: newer caller's args, unknown field set", NULL, r_adam_args_newer_set,
      E_UNSUP, "byte 56" },
    { "adam_update: hp.kind SGD", NULL, r_adam_kind_sgd, E_ARG, "hp.kind" },
    { "adam_update: hp.kind 99", NULL, r_adam_kind99, E_ARG, "hp.kind" },
    { "adam_update: b1 NaN", NULL, r_adam_b1_nan, E_ARG, "b1" },
    { "adam_update: b2 = 1", NULL, r_adam_b2_one, E_ARG, "b2" },
    { "adam_update: eps negative", NULL, r_adam_eps_neg, E_ARG, "eps" },
    { "adam_update: amsgrad 7", NULL, r_adam_amsgrad7, E_ARG, "amsgrad" },
    { "adam_update: step 0", NULL, r_adam_step0, E_ARG, "step" },
    { "adam_update: lr NaN", NULL, r_adam_lr_nan, E_ARG, "lr" },
    { "adam_update: lr negative", NULL, r_adam_lr_neg, E_ARG, "lr" },
    { "adam_update: lr +Inf", NULL, r_adam_lr_inf, E_ARG, "lr" },
    { "adam_update: clip_scale 0", NULL, r_adam_cs0, E_ARG, "clip_scale" },
    { "adam_update: clip_scale 1.5", NULL, r_adam_cs_big, E_ARG, "clip_scale" },
    { "adam_update: clip_scale NaN", NULL, r_adam_cs_nan, E_ARG, "clip_scale" },
    { "adam_update: clip_value negative", NULL, r_adam_cv_neg, E_ARG, "clip_value" },
    { "adam_update: clip_value NaN", NULL, r_adam_cv_nan, E_ARG, "clip_value" },
    { "adam_update: weight_decay negative", NULL, r_adam_wd_neg, E_ARG, "weight_decay" },
    { "adam_update: weight_decay +Inf", NULL, r_adam_wd_inf, E_ARG, "weight_decay" },
    { "adam_update: alpha 1.5 with sync", NULL, r_adam_alpha_big, E_ARG, "alpha" },
    { "adam_update: alpha NaN with sync", NULL, r_adam_alpha_nan, E_ARG, "alpha" },
    { "adam_update: sync 2", NULL, r_adam_sync2, E_ARG, "sync" },
    { "adam_update: param NULL", NULL, r_adam_param_null, E_NULL, "param" },
    { "adam_update: grad NULL", NULL, r_adam_grad_null, E_NULL, "grad" },
    { "adam_update: m NULL", NULL, r_adam_m_null, E_NULL, ": m must" },
    { "adam_update: v NULL", NULL, r_adam_v_null, E_NULL, ": v must" },
    { "adam_update: v_max NULL with amsgrad", NULL, r_adam_vmax_null, E_NULL, "v_max" },
    { "adam_update: slow NULL with sync", NULL, r_adam_slow_null, E_NULL, "slow" },
    { "adam_update: param misaligned", NULL, r_adam_param_mis, E_ARG, "invalid param" },
    { "adam_update: grad misaligned", NULL, r_adam_grad_mis, E_ARG, "invalid grad" },
    { "adam_update: m misaligned", NULL, r_adam_m_mis, E_ARG, "invalid m" },
    { "adam_update: v misaligned", NULL, r_adam_v_mis, E_ARG, "invalid v " },
    { "adam_update: v_max misaligned", NULL, r_adam_vmax_mis, E_ARG, "invalid v_max" },
    { "adam_update: slow misaligned", NULL, r_adam_slow_mis, E_ARG, "invalid slow" },
    { "adam_update: len SIZE_MAX", NULL, r_adam_len_huge, E_ARG, "invalid param" },
    { "adam_update: len*4 wraps to 0", NULL, r_adam_len_wrap, E_ARG, "invalid param" },
    { "adam_update: grad is param", NULL, r_adam_grad_is_param, E_OVER, "grad 0" },
    { "adam_update: m inside param", NULL, r_adam_m_in_param, E_OVER, "and m 0" },
    { "adam_update: v inside m", NULL, r_adam_v_in_m, E_OVER, "m 0 and v 0" },
    { "adam_update: slow is v", NULL, r_adam_slow_is_v, E_OVER, "slow 0" },
    { "adam_update: v_max inside slow (amsgrad)", NULL, r_adam_vmax_in_slow, E_OVER, "v_max 0" },
    { "sgd_update: hp NULL", NULL, r_sgd_hp_null, E_NULL, "hp" },
    { "sgd_update: momentum_buf NULL with momentum", NULL, r_sgd_mbuf_null, E_NULL,
      "momentum_buf" },
    { "sgd_update: momentum_buf misaligned", NULL, r_sgd_mbuf_mis, E_ARG, "momentum_buf" },
    { "sgd_update: hp.kind ADAM", NULL, r_sgd_kind_adam, E_ARG, "hp.kind" },
    { "sgd_update: momentum 1", NULL, r_sgd_mom_one, E_ARG, "momentum" },
    { "sgd_update: momentum_buf is grad", NULL, r_sgd_mbuf_is_grad, E_OVER, "momentum_buf 0" },
    { "sgd_update: slow NULL with sync", NULL, r_sgd_slow_null, E_NULL, "slow" },
    { "adamw_update: hp.kind ADAM", NULL, r_adamw_kind_adam, E_ARG, "hp.kind" },
    { "adamw_update: decoupled_weight_decay NaN", NULL, r_adamw_dwd_nan, E_ARG, "decoupled" },
    { "adamw_update: m NULL", NULL, r_adamw_m_null, E_NULL, ": m must" },
    { "adamw_update: slow is param", NULL, r_adamw_slow_is_param, E_OVER, "slow 0" },
    { "radam_update: hp.kind ADAMW", NULL, r_radam_kind_adamw, E_ARG, "hp.kind" },
    { "radam_update: v NULL", NULL, r_radam_v_null, E_NULL, ": v must" },
    { "radam_update: b2 = 1", NULL, r_radam_b2_one, E_ARG, "b2" },
    { "radam_update: lr NaN", NULL, r_radam_lr_nan, E_ARG, "lr" },
    { "sgd_update: args NULL", NULL, r_sgd_args_null, E_NULL, "args" },
    { "sgd_update: param NULL", NULL, r_sgd_param_null, E_NULL, "param" },
    { "sgd_update: grad NULL", NULL, r_sgd_grad_null, E_NULL, "grad" },
    { "adamw_update: hp NULL", NULL, r_adamw_hp_null, E_NULL, "hp" },
    { "adamw_update: args NULL", NULL, r_adamw_args_null, E_NULL, "args" },
    { "adamw_update: param NULL", NULL, r_adamw_param_null, E_NULL, "param" },
    { "adamw_update: grad NULL", NULL, r_adamw_grad_null, E_NULL, "grad" },
    { "adamw_update: v NULL", NULL, r_adamw_v_null, E_NULL, ": v must" },
    { "adamw_update: slow NULL with sync", NULL, r_adamw_slow_null, E_NULL, "slow" },
    { "radam_update: hp NULL", NULL, r_radam_hp_null, E_NULL, "hp" },
    { "radam_update: args NULL", NULL, r_radam_args_null, E_NULL, "args" },
    { "radam_update: param NULL", NULL, r_radam_param_null, E_NULL, "param" },
    { "radam_update: grad NULL", NULL, r_radam_grad_null, E_NULL, "grad" },
    { "radam_update: m NULL", NULL, r_radam_m_null, E_NULL, ": m must" },
    { "radam_update: slow NULL with sync", NULL, r_radam_slow_null, E_NULL, "slow" },
    { "base_update: hp NULL", NULL, r_base_hp_null, E_NULL, "hp" },
    { "base_update: args NULL", NULL, r_base_args_null, E_NULL, "args" },
    { "base_update: hp.kind 99", NULL, r_base_kind99, E_ARG, "kind" },
    { "base_update: param NULL", NULL, r_base_param_null, E_NULL, "param" },
    { "base_update: Adagrad, v NULL", NULL, r_base_adagrad_v_null, E_NULL, ": v must" },
    { "base_update: centered RMSprop, v_max NULL", NULL, r_base_rmsprop_centered_vmax_null,
      E_NULL, "v_max" },
    { "base_update: Rprop, m is the param buffer", NULL, r_base_rprop_m_aliases_param, E_OVER,
      "m" },
    { "base_update: Lion, b1 NaN", NULL, r_base_lion_b1_nan, E_ARG, "b1" },
    { "base_update: Adadelta, lr 1e39 (Inf as f32)", NULL, r_base_adadelta_lr_1e39, E_ARG,
      "lr" },
    { "base_state_buffers: hp NULL", NULL, r_base_mask_hp_null, E_NULL, "hp" },
    { "base_state_buffers: mask NULL", NULL, r_base_mask_null, E_NULL, "mask" },
    { "base_state_buffers: hp.kind 99", NULL, r_base_mask_kind99, E_ARG, "kind" },
    { "base_state_init: hp NULL", NULL, r_base_init_hp_null, E_NULL, "hp" },
    { "base_state_init: Adam, v NULL", NULL, r_base_init_v_null, E_NULL, ": v must" },
    { "base_state_init: Adam, m and v the same buffer", NULL, r_base_init_aliased, E_OVER,
      "m" },
    { "base_state_init: m misaligned", NULL, r_base_init_misaligned, E_ARG, "invalid m" },
    /* small kernels */
    { "sum_squares: x NULL", NULL, r_ss_x_null, E_NULL, ": x must" },
    { "sum_squares: out NULL", NULL, r_ss_out_null, E_NULL, "out" },
    { "sum_squares: x misaligned", NULL, r_ss_mis, E_ARG, "invalid x" },
    { "sum_squares: len SIZE_MAX", NULL, r_ss_huge, E_ARG, "invalid x" },
    { "sum_squares_partials: x NULL", NULL, r_sp_x_null, E_NULL, ": x must" },
    { "sum_squares_partials: partials NULL", NULL, r_sp_out_null, E_NULL, "partials" },
    { "sum_squares_partials: n_partials 2 for 1 block", NULL, r_sp_n2, E_LEN, "n_partials" },
    { "sum_squares_partials: n_partials 0", NULL, r_sp_n0, E_LEN, "n_partials" },
    { "sum_squares_partials: n_partials SIZE_MAX", NULL, r_sp_nhuge, E_LEN, "n_partials" },
    { "sum_squares_partials: partials misaligned", NULL, r_sp_mis, E_ARG, "partials" },
    { "sum_squares_partials: len SIZE_MAX", NULL, r_sp_huge, E_ARG, "invalid x" },
    { "sum_squares_partials: x misaligned", NULL, r_sp_x_mis, E_ARG, "invalid x" },
    { "sum_squares_partials: partials overlap x", NULL, r_sp_overlap, E_OVER, "partials" },
    { "optimizer_sum_squares_partials: partials over grad 2", NULL, r_osp_on_grad, E_OVER,
      "partials and grad 2" },
    { "optimizer_sum_squares_partials: partials inside param 1", NULL, r_osp_on_param, E_OVER,
      "partials and param 1" },
    { "clip_scale: max_norm 0", NULL, r_cs_max0, E_ARG, "max_norm" },
    { "clip_scale: max_norm negative", NULL, r_cs_max_neg, E_ARG, "max_norm" },
    { "clip_scale: max_norm NaN", NULL, r_cs_max_nan, E_ARG, "max_norm" },
    { "clip_scale: max_norm +Inf", NULL, r_cs_max_inf, E_ARG, "max_norm" },
    { "clip_scale: sum_squares NaN", NULL, r_cs_ss_nan, E_ARG, "sum_squares" },
    { "clip_scale: sum_squares +Inf", NULL, r_cs_ss_inf, E_ARG, "sum_squares" },
    { "clip_scale: sum_squares negative", NULL, r_cs_ss_neg, E_ARG, "sum_squares" },
    { "clip_scale: out NULL", NULL, r_cs_out_null, E_NULL, "out" },
    { "clip_by_value: x NULL", NULL, r_cv_null, E_NULL, ": x must" },
    { "clip_by_value: c negative", NULL, r_cv_neg, E_ARG, "invalid c =" },
    { "clip_by_value: c NaN", NULL, r_cv_nan, E_ARG, "invalid c =" },
    { "clip_by_value: x misaligned", NULL, r_cv_mis, E_ARG, "invalid x" },
    { "clip_by_value: len SIZE_MAX", NULL, r_cv_huge, E_ARG, "invalid x" },
    { "scale: x NULL", NULL, r_sc_null, E_NULL, ": x must" },
    { "scale: s NaN", NULL, r_sc_nan, E_ARG, "invalid s =" },
    { "scale: s -Inf", NULL, r_sc_inf, E_ARG, "invalid s =" },
    { "scale: x misaligned", NULL, r_sc_mis, E_ARG, "invalid x" },
    { "scale: len*4 wraps to 0", NULL, r_sc_huge, E_ARG, "invalid x" },
    { "lookahead_sync: fast NULL", NULL, r_la_fast_null, E_NULL, "fast" },
    { "lookahead_sync: slow NULL", NULL, r_la_slow_null, E_NULL, "slow" },
    { "lookahead_sync: slow is fast", NULL, r_la_same, E_OVER, "fast 0" },
    { "lookahead_sync: slow inside fast", NULL, r_la_partial, E_OVER, "slow 0" },
    { "lookahead_sync: alpha 1.5", NULL, r_la_alpha_big, E_ARG, "alpha" },
    { "lookahead_sync: alpha negative", NULL, r_la_alpha_neg, E_ARG, "alpha" },
    { "lookahead_sync: alpha NaN", NULL, r_la_alpha_nan, E_ARG, "alpha" },
    { "lookahead_sync: slow misaligned", NULL, r_la_slow_mis, E_ARG, "invalid slow" },
    { "lookahead_sync: fast misaligned", NULL, r_la_fast_mis, E_ARG, "invalid fast" },
    { "lookahead_sync: len SIZE_MAX", NULL, r_la_huge, E_ARG, "invalid fast" },
    /* checkpoints */
    { "checkpoint_size: opt NULL", NULL, r_cks_null, E_NULL, "opt" },
    { "checkpoint_size: out NULL", NULL, r_cks_out, E_NULL, "out" },
    { "save: opt NULL", NULL, r_save_null, E_NULL, "opt" },
    { "save: buf NULL", NULL, r_save_buf, E_NULL, "buf" },
    { "save: written NULL", NULL, r_save_written, E_NULL, "written" },
    { "save: cap one byte short", NULL, r_save_small, E_LEN, "buf capacity" },
    { "save: cap 0", NULL, r_save_zero, E_LEN, "buf capacity" },
    { "save: while a begun step is pending", setup_pending, r_save_pending, E_STATE, "end_step" },
    { "load: opt NULL", NULL, r_load_null, E_NULL, "opt" },
    { "load: buf NULL", NULL, r_load_buf_null, E_NULL, "buf" },
    { "load: len SIZE_MAX", NULL, r_load_huge, E_ARG, "len" },
    { "load: len 0", NULL, r_load_zero, E_CORRUPT, "too short" },
    { "load: 35 bytes", NULL, r_load_empty, E_CORRUPT, "too short" },
    { "load: before add_param", NULL, r_load_bare, E_STATE, "registered" },
    { "load: while a begun step is pending", setup_pending, r_load_pending, E_STATE, "end_step" },
    { "load: bad magic", NULL, r_load_magic, E_CORRUPT, "magic" },
    { "load: truncated by one byte", NULL, r_load_trunc, E_CORRUPT, "length" },
    { "load: one bit flipped in a state array", NULL, r_load_crc, E_CORRUPT, "checksum" },
    /* mixed precision */
    { "param_options_init: options NULL", NULL, r_poi_null, E_NULL, "options" },
    { "param_options_init: size below V1", NULL, r_poi_size, E_ARG, "smaller than the first version" },
    { "add_param_with_options: grad_dtype 3", NULL, r_po_gdtype, E_ARG, "options.grad_dtype" },
    { "add_param_with_options: copy_dtype 7", NULL, r_po_cdtype, E_ARG, "options.copy_dtype" },
    { "add_param_with_options: copy dtype bf16, copy NULL", NULL, r_po_copy_null, E_ARG, "options.copy" },
    { "add_param_with_options: copy set, copy dtype f32", NULL, r_po_copy_f32, E_ARG, "options.copy_dtype" },
    { "add_param_with_options: reserved 1", NULL, r_po_reserved, E_ARG, "options.reserved" },
    { "add_param_with_options: struct_size 0", NULL, r_po_size0, E_ARG, "options.struct_size" },
    { "add_param_with_options: group 5", NULL, r_po_group, E_ARG, "group" },
    { "add_param_with_options: copy is its own param", NULL, r_po_copy_own_param, E_OVER, "param 2 and copy 2" },
    { "add_param_with_options: copy inside a registered param", NULL, r_po_copy_param, E_OVER, "param 1 and copy 2" },
    { "add_param_with_options: copy inside a registered grad", NULL, r_po_copy_grad, E_OVER, "grad 0 and copy 2" },
    { "add_param_with_options: copy inside a registered copy", NULL, r_po_copy_copy, E_OVER, "copy 0 and copy 2" },
    { "add_param_with_options: copy overlaps its own grad", NULL, r_po_copy_own_grad, E_OVER, "grad 2 and copy 2" },
    { "add_param_with_options: copy misaligned", NULL, r_po_copy_mis, E_ARG, "aligned to 2 bytes" },
    { "add_param_with_options: bf16 grad misaligned", NULL, r_po_grad_mis, E_ARG, "aligned to 2 bytes" },
    { "add_param_with_options: f32 grad misaligned", NULL, r_po_grad_f32_mis, E_ARG, "aligned to 4 bytes" },
    { "add_param_with_options: grad inside a registered copy", NULL, r_po_grad_on_copy, E_OVER, "copy 1 and grad 2" },
    { "add_param_with_options: param over a registered copy", NULL, r_po_param_on_copy, E_OVER, "copy 0 and param 2" },
    { "add_param_with_options: param NULL", NULL, r_po_param_null, E_NULL, "param" },
    { "add_param_with_options: copy in the optimizer's slow weights", NULL, r_po_copy_slow, E_OVER, "slow weights" },
    { "add_param_with_options: opt NULL", NULL, r_po_opt_null, E_NULL, "opt" },
    { "add_param_with_options: after the first update", setup_stepped, r_po_stepped, E_STATE, "after the first update" },
    { "step_mixed: grad_scale NaN", NULL, r_sm_scale_nan, E_ARG, "grad_scale" },
    { "step_mixed: grad_scale +Inf", NULL, r_sm_scale_inf, E_ARG, "grad_scale" },
    { "step_mixed: grad_scale -2", NULL, r_sm_scale_neg, E_ARG, "grad_scale" },
    { "step_mixed: grad_scale with a dynamic loss scaler", NULL, r_sm_scale_scaler, E_ARG, "dynamic loss scaler" },
    { "step_mixed: grads NULL, n_grads 2", NULL, r_sm_grads_null, E_NULL, "grads" },
    { "step_mixed: n_grads 1 of 2", NULL, r_sm_ngrads, E_LEN, "n_grads" },
    { "step_mixed: given grad is a registered copy", NULL, r_sm_grad_on_copy, E_OVER, "copy 0" },
    { "step_mixed: given grad is a registered param", NULL, r_sm_grad_on_param, E_OVER, "param 0" },
    { "step_mixed: given fp16 grad misaligned", NULL, r_sm_grad_mis, E_ARG, "aligned to 2 bytes" },
    { "step_mixed: given grad NULL", NULL, r_sm_grad_null, E_NULL, "grad" },
    { "step_mixed: step pending", setup_pending, r_sm_pending, E_STATE, "not finished" },
    { "step_mixed: opt NULL", NULL, r_sm_opt_null, E_NULL, "opt" },
    { "begin_step_scaled: grad_scale NaN", NULL, r_bss_nan, E_ARG, "grad_scale" },
    { "begin_step_scaled: grad_scale -Inf", NULL, r_bss_inf, E_ARG, "grad_scale" },
    { "begin_step_scaled: grad_scale -2", NULL, r_bss_neg, E_ARG, "grad_scale" },
    { "begin_step_scaled: grad_scale with a dynamic loss scaler", NULL, r_bss_scaler, E_ARG, "dynamic loss scaler" },
    { "begin_step_scaled: step pending", setup_pending, r_bss_pending, E_STATE, "not finished" },
    { "begin_step_scaled: opt NULL", NULL, r_bss_opt_null, E_NULL, "opt" },
    { "begin_step_mixed: grad_scale NaN", NULL, r_bsm_nan, E_ARG, "grad_scale" },
    { "begin_step_mixed: grad_scale with a dynamic loss scaler", NULL, r_bsm_scaler, E_ARG, "dynamic loss scaler" },
    { "begin_step_mixed: grads NULL, n_grads 2", NULL, r_bsm_grads_null, E_NULL, "grads" },
    { "begin_step_mixed: n_grads 1 of 2", NULL, r_bsm_ngrads, E_LEN, "n_grads" },
    { "begin_step_mixed: given grad is a registered copy", NULL, r_bsm_grad_on_copy, E_OVER, "copy 0" },
    { "begin_step_mixed: given fp16 grad misaligned", NULL, r_bsm_grad_mis, E_ARG, "aligned to 2 bytes" },
    { "begin_step_mixed: given grad NULL", NULL, r_bsm_grad_null, E_NULL, "grad" },
    { "begin_step_mixed: step pending", setup_pending, r_bsm_pending, E_STATE, "not finished" },
    { "begin_step_mixed: opt NULL", NULL, r_bsm_opt_null, E_NULL, "opt" },
    { "step_with_grads: buffers registered with 16-bit grads", NULL, r_swg_half, E_ARG, "step_mixed" },
    { "loss_scaler_options_init: options NULL", NULL, r_lsi_null, E_NULL, "options" },
    { "loss_scaler_options_init: size below V1", NULL, r_lsi_size, E_ARG, "smaller than the first version" },
    { "set_loss_scaler: init_scale 0", NULL, r_ls_init0, E_ARG, "options.init_scale" },
    { "set_loss_scaler: init_scale NaN", NULL, r_ls_init_nan, E_ARG, "options.init_scale" },
    { "set_loss_scaler: init_scale +Inf", NULL, r_ls_init_inf, E_ARG, "options.init_scale" },
    { "set_loss_scaler: init_scale negative", NULL, r_ls_init_neg, E_ARG, "options.init_scale" },
    { "set_loss_scaler: growth_factor 1", NULL, r_ls_growth1, E_ARG, "options.growth_factor" },
    { "set_loss_scaler: growth_factor +Inf", NULL, r_ls_growth_inf, E_ARG, "options.growth_factor" },
    { "set_loss_scaler: backoff_factor 1", NULL, r_ls_backoff1, E_ARG, "options.backoff_factor" },
    { "set_loss_scaler: backoff_factor 0", NULL, r_ls_backoff0, E_ARG, "options.backoff_factor" },
    { "set_loss_scaler: backoff_factor NaN", NULL, r_ls_backoff_nan, E_ARG, "options.backoff_factor" },
    { "set_loss_scaler: growth_interval 0", NULL, r_ls_interval0, E_ARG, "options.growth_interval" },
    { "set_loss_scaler: reserved 1", NULL, r_ls_reserved, E_ARG, "options.reserved" },
    { "set_loss_scaler: struct_size 3", NULL, r_ls_size, E_ARG, "options.struct_size" },
    { "set_loss_scaler: step pending", setup_pending, r_ls_pending, E_STATE, "not finished" },
    { "set_loss_scaler: opt NULL", NULL, r_ls_opt_null, E_NULL, "opt" },
    { "loss_scaler_state: no scaler", NULL, r_lss_none, E_STATE, "no dynamic loss scaler" },
    { "loss_scaler_state: opt NULL", NULL, r_lss_opt_null, E_NULL, "opt" },
    { "set_loss_scaler_state: no scaler", NULL, r_slss_none, E_STATE, "no dynamic loss scaler" },
    { "set_loss_scaler_state: scale NaN", NULL, r_slss_nan, E_ARG, "scale" },
    { "set_loss_scaler_state: scale 0", NULL, r_slss_zero, E_ARG, "scale" },
    { "set_loss_scaler_state: growth_tracker 2000 (the interval)", NULL, r_slss_tracker, E_ARG, "growth_tracker" },
    { "widen_to_f32: dtype f32", NULL, r_wd_f32, E_ARG, "dtype" },
    { "widen_to_f32: dtype 9", NULL, r_wd_dtype, E_ARG, "dtype" },
    { "widen_to_f32: dst NULL", NULL, r_wd_dst_null, E_NULL, "dst" },
    { "widen_to_f32: src NULL", NULL, r_wd_src_null, E_NULL, "src" },
    { "widen_to_f32: src inside dst", NULL, r_wd_overlap, E_OVER, "share memory" },
    { "widen_to_f32: src misaligned", NULL, r_wd_src_mis, E_ARG, "aligned to 2 bytes" },
    { "widen_to_f32: dst misaligned", NULL, r_wd_dst_mis, E_ARG, "aligned to 4 bytes" },
    { "narrow_from_f32: dtype f32", NULL, r_nw_f32, E_ARG, "dtype" },
    { "narrow_from_f32: dst inside src", NULL, r_nw_overlap, E_OVER, "share memory" },
    { "narrow_from_f32: dst misaligned", NULL, r_nw_dst_mis, E_ARG, "aligned to 2 bytes" },
    { "narrow_from_f32: len SIZE_MAX/2", NULL, r_nw_huge, E_ARG, "too large" },
    { "sum_squares_partials_mixed: 2 partials for 1 block", NULL, r_ssm_n, E_LEN, "n_partials" },
    { "sum_squares_partials_mixed: grad_scale 0", NULL, r_ssm_scale0, E_ARG, "grad_scale" },
    { "sum_squares_partials_mixed: grad_dtype 4", NULL, r_ssm_dtype, E_ARG, "grad_dtype" },
    { "sum_squares_partials_mixed: partials over grad", NULL, r_ssm_overlap, E_OVER, "share memory" },
    { "mixed_update: grad_scale +Inf", NULL, r_mu_scale_inf, E_ARG, "grad_scale" },
    { "mixed_update: grad_scale 0", NULL, r_mu_scale0, E_ARG, "grad_scale" },
    { "mixed_update: copy is param", NULL, r_mu_copy_param, E_OVER, "share memory" },
    { "mixed_update: copy NULL with a copy dtype", NULL, r_mu_copy_null, E_NULL, "copy" },
    { "mixed_update: copy set, copy dtype f32", NULL, r_mu_copy_f32, E_ARG, "copy_dtype" },
    { "mixed_update: copy dtype 5", NULL, r_mu_cdtype, E_ARG, "copy_dtype" },
    { "mixed_update: grad dtype 3", NULL, r_mu_gdtype, E_ARG, "grad_dtype" },
    { "mixed_update: m NULL", NULL, r_mu_m_null, E_NULL, "m" },
    { "mixed_update: grad over m", NULL, r_mu_grad_on_m, E_OVER, "share memory" },
    { "mixed_update: grad over copy", NULL, r_mu_grad_on_copy, E_OVER, "share memory" },
    { "mixed_update: param NULL", NULL, r_mu_param_null, E_NULL, "param" },
    { "mixed_update: v misaligned", NULL, r_mu_v_mis, E_ARG, "aligned to 4 bytes" },
    { "mixed_update: hp NULL", NULL, r_mu_hp_null, E_NULL, "hp" },
    { "load: checkpoint without a loss scaler into one with", NULL, r_load_no_scaler, E_ARG, "loss scaler" },
    { "load: loss scale 0 (valid CRC)", NULL, r_load_scale0, E_CORRUPT, "loss scaler" },
    { "load: format version 5 (newer)", NULL, r_load_version, E_UNSUP, "version" },
    { "load: byte-order mark swapped (valid CRC)", NULL, r_load_bom, E_CORRUPT, "byte-order" },
    { "load: configuration byte changed (valid CRC)", NULL, r_load_cfg_byte, E_ARG, "differs" },
    { "load: buffer count huge (valid CRC)", NULL, r_load_nbuf_huge, E_CORRUPT, "exceeds" },
    { "load: present bits changed (valid CRC)", NULL, r_load_present, E_CORRUPT, "buffer 0" },
    { "load: 4 bytes after the last buffer (valid CRC)", NULL, r_load_trailing, E_CORRUPT,
      "unexpected bytes" },
    { "load: plateau best = NaN (valid CRC)", NULL, r_load_plateau_nan, E_CORRUPT, "plateau" },
    { "load: plateau learning rate 1e300 (valid CRC)", NULL, r_load_plateau_lr, E_CORRUPT,
      "learning rate" },
    { "load: first moment NaN (valid CRC)", NULL, r_load_m_nan, E_CORRUPT, "first moment m[1]" },
    { "load: second moment -1 (valid CRC)", NULL, r_load_v_neg, E_CORRUPT,
      "second moment v[2]" },
    { "load: slow weight +Inf (valid CRC)", NULL, r_load_slow_inf, E_CORRUPT, "slow weight[0]" },
    { "load: AMSGrad maximum -0.5 (valid CRC)", NULL, r_load_amsgrad_neg, E_CORRUPT,
      "AMSGrad maximum v_max[1]" },
    { "load: Adadelta squared-update average -1 (valid CRC)", NULL, r_load_adadelta_neg,
      E_CORRUPT, "squared-update average m[3]" },
    { "load: Rprop step size NaN (valid CRC)", NULL, r_load_rprop_step_nan, E_CORRUPT,
      "second moment v[2]" },
    { "load: Adagrad accumulator -1 (valid CRC)", NULL, r_load_adagrad_neg, E_CORRUPT,
      "second moment v[0]" },
    { "checkpoint_info: opt NULL", NULL, r_info_null, E_NULL, "opt" },
    { "checkpoint_info: buf NULL", NULL, r_info_buf_null, E_NULL, "buf" },
    { "checkpoint_info: bad magic", NULL, r_info_magic, E_CORRUPT, "magic" },
    { "checkpoint_info: second moment -1 (valid CRC)", NULL, r_info_v_neg, E_CORRUPT,
      "second moment" },
    { "checkpoint_info: another configuration", NULL, r_info_nola, E_ARG, "differs" },
    { "load: checkpoint of an SGD optimizer into Adam", NULL, r_load_nola, E_ARG, "differs" },
    { "load: checkpoint saved with another lr", NULL, r_load_other_lr, E_ARG, "differs" },
    { "load: checkpoint saved with another alpha", NULL, r_load_other_alpha, E_ARG, "alpha" },
    { "load: checkpoint with another buffer length", NULL, r_load_other_lens, E_LEN, "buffer 2" },
    { "load: checkpoint with 2 buffers for 3", NULL, r_load_other_count, E_LEN,
      "number of buffers" },
    { "save_file: opt NULL", NULL, r_savef_null, E_NULL, "opt" },
    { "save_file: path NULL", NULL, r_savef_path_null, E_NULL, "path" },
    { "save_file: path empty", NULL, r_savef_empty, E_ARG, "path" },
    { "save_file: directory missing", NULL, r_savef_nodir, E_IO, "no/such/dir" },
    { "save_file: path is a directory", NULL, r_savef_isdir, E_IO, "subdir" },
    { "save_file: while a begun step is pending", setup_pending, r_savef_pending, E_STATE,
      "end_step" },
    { "load_file: opt NULL", NULL, r_loadf_null, E_NULL, "opt" },
    { "load_file: path NULL", NULL, r_loadf_path_null, E_NULL, "path" },
    { "load_file: path empty", NULL, r_loadf_empty, E_ARG, "path" },
    { "load_file: missing file", NULL, r_loadf_missing, E_IO, "missing.ckpt" },
    { "load_file: path is a directory", NULL, r_loadf_dir, E_IO, "subdir" },
    { "load_file: garbage file", NULL, r_loadf_garbage, E_CORRUPT, "magic" },
    { "load_file: while a begun step is pending", setup_pending, r_loadf_pending, E_STATE,
      "end_step" },
    { "load_file: before add_param", NULL, r_loadf_bare, E_STATE, "registered" },
    { "load_file: checkpoint of another configuration", NULL, r_loadf_nola, E_ARG, "differs" },
};
#define N_ROWS ((int)(sizeof k_rows / sizeof k_rows[0]))

static void test_bad_inputs(void)
{
    int i;
    uint32_t t;
    g_unavailable_tier = 0;
    for (t = FLATOPT_SIMD_AVX512; t >= FLATOPT_SIMD_SCALAR; t--)
        if (!F(flatopt_simd_tier_available)(t))
            g_unavailable_tier = t;
    for (i = 0; i < N_ROWS; i++) {
        const row *r = &k_rows[i];
        if (g_unavailable_tier == 0 && (r->call == r_new_tier_unavail ||
                                        r->call == r_tier_unavail || r->call == r_deftier_unavail)) {
            printf("  skipped (every SIMD tier is available here): %s\n", r->what);
            continue;
        }
        run_row(r, i);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Part 2: happy paths                                                                         */

/* A set of host buffers: params and gradients. */
typedef struct model {
    int nb;
    size_t len[4];
    float *p[4];
    float *g[4];
    flatopt_optimizer *opt;
} model;

static void model_init(model *m, int nb, const size_t *lens, uint64_t seed)
{
    int i;
    memset(m, 0, sizeof *m);
    m->nb = nb;
    for (i = 0; i < nb; i++) {
        m->len[i] = lens[i];
        m->p[i] = falloc(lens[i]);
        m->g[i] = falloc(lens[i]);
        fill(m->p[i], lens[i], seed * 100 + (uint64_t)i, 1.0f);
    }
}

/* Registers every buffer with a new optimizer of config c. */
static void model_register(model *m, const flatopt_config *c)
{
    int i;
    m->opt = new_opt(c);
    for (i = 0; i < m->nb; i++)
        OK(F(flatopt_optimizer_add_param)(m->opt, m->p[i], m->g[i], m->len[i]));
}

/* Gradients of update t: odd t large (global norm well above 30), even t small (below). */
static void model_grads(model *m, int t, uint64_t seed)
{
    int i;
    for (i = 0; i < m->nb; i++)
        fill(m->g[i], m->len[i], seed * 7919 + (uint64_t)t * 31 + (uint64_t)i,
             (t % 2) ? 1.0f : 0.05f);
}

static void model_copy_grads(model *dst, const model *src)
{
    int i;
    for (i = 0; i < src->nb; i++)
        memcpy(dst->g[i], src->g[i], src->len[i] * sizeof(float));
}

static void model_free(model *m)
{
    int i;
    F(flatopt_optimizer_free)(m->opt);
    for (i = 0; i < m->nb; i++) {
        free(m->p[i]);
        free(m->g[i]);
    }
    memset(m, 0, sizeof *m);
}

/* Params (and slow weights, if with_slow) of a and b bit-identical. */
static int model_same(const model *a, const model *b, int with_slow, const char *what, int t)
{
    int i, ok = 1;
    for (i = 0; i < a->nb; i++) {
        size_t at = first_diff(a->p[i], b->p[i], a->len[i]);
        if (!CHECK(at == a->len[i], "%s: step %d: params of buffer %d differ at %lu: %.9g vs %.9g",
                   what, t, i, (unsigned long)at, (double)a->p[i][at], (double)b->p[i][at]))
            ok = 0;
        if (with_slow) {
            const float *sa = NULL, *sb = NULL;
            size_t na = 0, nb = 0;
            OK(F(flatopt_optimizer_slow_weights)(a->opt, (size_t)i, &sa, &na));
            OK(F(flatopt_optimizer_slow_weights)(b->opt, (size_t)i, &sb, &nb));
            if (!CHECK(sa && sb && na == a->len[i] && nb == na && same_bits(sa, sb, na),
                       "%s: step %d: slow weights of buffer %d differ", what, t, i))
                ok = 0;
        }
    }
    return ok;
}

static void test_version(void)
{
    char buf[64];
    const char *v = F(flatopt_version)();
    CHECK(v != NULL && strcmp(v, FLATOPT_VERSION_STRING) == 0,
          "flatopt_version() = \"%s\", header FLATOPT_VERSION_STRING = \"%s\"", v ? v : "(NULL)",
          FLATOPT_VERSION_STRING);
    CHECK(F(flatopt_version_number)() == FLATOPT_VERSION_NUMBER,
          "flatopt_version_number() = %u, header FLATOPT_VERSION_NUMBER = %u",
          (unsigned)flatopt_version_number(), (unsigned)FLATOPT_VERSION_NUMBER);
    CHECK(FLATOPT_VERSION_NUMBER == FLATOPT_VERSION_MAJOR * 10000 + FLATOPT_VERSION_MINOR * 100 +
                                        FLATOPT_VERSION_PATCH,
          "FLATOPT_VERSION_NUMBER does not match MAJOR/MINOR/PATCH");
    snprintf(buf, sizeof buf, "%d.%d.%d", FLATOPT_VERSION_MAJOR, FLATOPT_VERSION_MINOR,
             FLATOPT_VERSION_PATCH);
    CHECK(strcmp(buf, FLATOPT_VERSION_STRING) == 0, "FLATOPT_VERSION_STRING \"%s\" vs \"%s\"",
          FLATOPT_VERSION_STRING, buf);
}

static void test_status_str(void)
{
    /* One past the last code: keep in step with flatopt_status (FLATOPT_ERR_POISONED = 13). */
    enum { N_CODES = FLATOPT_ERR_POISONED + 1 };
    const char *s[N_CODES], *unknown;
    int i, j;
    const int32_t odd[] = { -1, N_CODES, 99, 1000, INT32_MAX, INT32_MIN };
    for (i = 0; i < N_CODES; i++) {
        s[i] = F(flatopt_status_str)(i);
        CHECK(s[i] != NULL && s[i][0] != 0, "status_str(%d) empty", i);
    }
    unknown = F(flatopt_status_str)(N_CODES);
    CHECK(unknown != NULL && strstr(unknown, "unknown") != NULL, "status_str(%d) = \"%s\"",
          N_CODES, unknown ? unknown : "(NULL)");
    for (i = 0; i < N_CODES; i++) {
        if (!s[i] || !unknown)
            continue;
        CHECK(strcmp(s[i], unknown) != 0, "status_str(%d) is the unknown text", i);
        for (j = 0; j < i; j++)
            CHECK(s[j] && strcmp(s[i], s[j]) != 0, "status_str(%d) == status_str(%d) = \"%s\"",
                  i, j, s[i]);
    }
    for (i = 0; i < (int)(sizeof odd / sizeof odd[0]); i++) {
        const char *u = F(flatopt_status_str)(odd[i]);
        CHECK(u != NULL && unknown != NULL && strcmp(u, unknown) == 0,
              "status_str(%ld) = \"%s\", expected the unknown-code text", (long)odd[i],
              u ? u : "(NULL)");
    }
    CHECK(s[FLATOPT_ERR_BUSY] && strstr(s[FLATOPT_ERR_BUSY], "busy") != NULL,
          "status_str(BUSY) = \"%s\"", s[FLATOPT_ERR_BUSY] ? s[FLATOPT_ERR_BUSY] : "");
    CHECK(s[FLATOPT_ERR_POISONED] && strstr(s[FLATOPT_ERR_POISONED], "poisoned") != NULL,
          "status_str(POISONED) = \"%s\"", s[FLATOPT_ERR_POISONED] ? s[FLATOPT_ERR_POISONED] : "");
    CHECK(s[0] && strcmp(s[0], "ok") == 0, "status_str(0) = \"%s\"", s[0] ? s[0] : "(NULL)");
    CHECK(s[1] && strstr(s[1], "skipped") != NULL, "status_str(SKIPPED) = \"%s\"",
          s[1] ? s[1] : "");
    CHECK(s[2] && strstr(s[2], "null") != NULL, "status_str(NULL_POINTER) = \"%s\"",
          s[2] ? s[2] : "");
    CHECK(F(flatopt_last_error_message)() != NULL, "flatopt_last_error_message() is NULL");
}

/* The _INIT macros give exactly what the _init functions write (byte for byte, padding
 * aside), for every kind. */
static void test_init_macros(void)
{
    /* flatopt_schedule's only padding: after threshold_mode, before milestones. */
    const size_t pad = offsetof(flatopt_schedule, threshold_mode) + sizeof(uint32_t);
    const size_t pad_len = offsetof(flatopt_schedule, milestones) - pad;
    uint32_t k;
    for (k = 0; k < 4; k++) {
        flatopt_base_params m = FLATOPT_BASE_PARAMS_INIT(k), f;
        OK(F(flatopt_base_params_init)(&f, sizeof f, k));
        CHECK(memcmp(&m, &f, sizeof m) == 0, "FLATOPT_BASE_PARAMS_INIT(%u) != the init function",
              (unsigned)k);
    }
    for (k = 0; k < 16; k++) {
        flatopt_schedule m = FLATOPT_SCHEDULE_INIT(k), f;
        OK(F(flatopt_schedule_init)(&f, sizeof f, k));
        memset((char *)&m + pad, 0, pad_len);
        memset((char *)&f + pad, 0, pad_len);
        CHECK(memcmp(&m, &f, sizeof m) == 0, "FLATOPT_SCHEDULE_INIT(%u) != the init function",
              (unsigned)k);
    }
    {
        flatopt_config m = FLATOPT_CONFIG_INIT, f;
        flatopt_step_args am = FLATOPT_STEP_ARGS_INIT, af;
        OK(F(flatopt_config_init)(&f, sizeof f));
        OK(F(flatopt_step_args_init)(&af, sizeof af));
        CHECK(memcmp(&m, &f, sizeof m) == 0, "FLATOPT_CONFIG_INIT != flatopt_config_init");
        CHECK(memcmp(&am, &af, sizeof am) == 0, "FLATOPT_STEP_ARGS_INIT != flatopt_step_args_init");
    }
    /* The frozen sizes: this header is version 1 of every struct but flatopt_base_params,
     * whose version 2 added Adagrad's and RMSprop's fields, version 3 Adamax's, NAdam's and
     * Lion's, version 4 AdaBelief's, Adadelta's and Rprop's, version 5 LARS's, version 6
     * Adafactor's, and
     * flatopt_config, whose
     * version 2 added the compressed-state fields. */
    CHECK(sizeof(flatopt_config) == FLATOPT_CONFIG_SIZE_V2 && FLATOPT_CONFIG_SIZE_V1 == 88 &&
              FLATOPT_BASE_PARAMS_SIZE_V1 == 64 && FLATOPT_BASE_PARAMS_SIZE_V2 == 96 &&
              FLATOPT_BASE_PARAMS_SIZE_V3 == 112 && FLATOPT_BASE_PARAMS_SIZE_V4 == 160 &&
              FLATOPT_BASE_PARAMS_SIZE_V5 == 168 &&
              sizeof(flatopt_base_params) == FLATOPT_BASE_PARAMS_SIZE_V6 &&
              sizeof(flatopt_schedule) == FLATOPT_SCHEDULE_SIZE_V1 &&
              sizeof(flatopt_step_args) == FLATOPT_STEP_ARGS_SIZE_V1,
          "struct sizes differ from their _SIZE_V1 constants");
}

static void test_init_defaults(void)
{
    flatopt_config c;
    flatopt_base_params b;
    flatopt_schedule s;
    flatopt_step_args a;
    uint32_t k;
    memset(&c, 0xFF, sizeof c);
    OK(F(flatopt_config_init)(&c, sizeof c));
    CHECK(c.struct_size == sizeof c, "config.struct_size %u", (unsigned)c.struct_size);
    CHECK(c.base == NULL, "config.base: NULL (Adam with its defaults)");
    CHECK(c.lr == 1e-3 && c.schedule == NULL &&
              c.schedule_manual == 0 && c.lookahead == 0 && c.sync_period == 5 &&
              c.alpha == 0.5 && c.weight_decay == 0.0 && c.grad_clip_norm == 0.0 &&
              c.grad_clip_value == 0.0 && c.num_threads == 1 && c.simd_tier == 0 &&
              c.nonfinite == FLATOPT_NONFINITE_SKIP,
          "flatopt_config_init defaults differ from the header's documentation");
    for (k = 0; k < 4; k++) {
        memset(&b, 0xFF, sizeof b);
        OK(F(flatopt_base_params_init)(&b, sizeof b, k));
        CHECK(b.struct_size == sizeof b && b.kind == k, "base_params_init(%u)", (unsigned)k);
        CHECK(b.momentum == 0.0 && b.dampening == 0.0 && b.nesterov == 0 && b.amsgrad == 0 &&
                  b.b1 == 0.9 && b.b2 == 0.999 && b.eps == 1e-8,
              "base_params_init(%u) defaults", (unsigned)k);
        CHECK(b.decoupled_weight_decay == (k == FLATOPT_ADAMW ? 0.01 : 0.0),
              "base_params_init(%u) decoupled_weight_decay %g", (unsigned)k,
              b.decoupled_weight_decay);
    }
    for (k = 0; k < 16; k++) {
        flatopt_optimizer *o = NULL;
        double one_value = 0.5;
        memset(&s, 0xFF, sizeof s);
        OK(F(flatopt_schedule_init)(&s, sizeof s, k));
        CHECK(s.struct_size == sizeof s && s.kind == k, "schedule_init(%u)", (unsigned)k);
        CHECK(s.milestones == NULL && s.n_milestones == 0 && s.values == NULL && s.n_values == 0,
              "schedule_init(%u): lists", (unsigned)k);
        if (k == FLATOPT_SCHEDULE_PIECEWISE_CONSTANT) {
            s.values = &one_value;
            s.n_values = 1;
        }
        /* Every kind at its defaults makes a valid optimizer. */
        OK(F(flatopt_config_init)(&c, sizeof c));
        c.schedule = &s;
        if (EXPECT(F(flatopt_optimizer_new)(&c, &o), FLATOPT_OK))
            F(flatopt_optimizer_free)(o);
        else
            fprintf(stderr, "    (schedule kind %u at its defaults)\n", (unsigned)k);
    }
    memset(&a, 0xFF, sizeof a);
    OK(F(flatopt_step_args_init)(&a, sizeof a));
    CHECK(a.struct_size == sizeof a && a.sync == 0 && a.step == 1 && a.lr == 1e-3 &&
              a.clip_scale == 1.0 && a.clip_value == 0.0 && a.weight_decay == 0.0,
          "step_args_init defaults");
    test_init_macros();
    /* free(NULL) is a no-op */
    F(flatopt_optimizer_free)(NULL);
}

static void test_simd(void)
{
    uint32_t def = F(flatopt_default_simd_tier)(), t, best = FLATOPT_SIMD_SCALAR;
    const char *names[] = { "default", "scalar", "portable", "avx2", "avx512" };
    static const size_t lens[3] = { 7, 4100, 33 };
    model ref, m;
    flatopt_config c = cfg_la_adam(3, 30.0);
    int step;

    CHECK(def >= 1 && def <= 4 && F(flatopt_simd_tier_available)(def) == 1,
          "default tier %u not available", (unsigned)def);
    CHECK(F(flatopt_simd_tier_available)(FLATOPT_SIMD_SCALAR) == 1, "scalar unavailable");
    CHECK(F(flatopt_simd_tier_available)(FLATOPT_SIMD_PORTABLE) == 1, "portable unavailable");
    CHECK(F(flatopt_simd_tier_available)(FLATOPT_SIMD_DEFAULT) == 0, "available(0) != 0");
    CHECK(F(flatopt_simd_tier_available)(9) == 0, "available(9) != 0");
    CHECK(F(flatopt_simd_tier_available)(UINT32_MAX) == 0, "available(UINT32_MAX) != 0");
    for (t = 0; t <= 4; t++) {
        const char *n = F(flatopt_simd_tier_name)(t);
        CHECK(n && strcmp(n, names[t]) == 0, "simd_tier_name(%u) = \"%s\"", (unsigned)t,
              n ? n : "(NULL)");
    }
    CHECK(strcmp(F(flatopt_simd_tier_name)(9), "unknown") == 0, "simd_tier_name(9)");
    CHECK(strcmp(F(flatopt_simd_tier_name)(UINT32_MAX), "unknown") == 0, "tier_name(MAX)");
    for (t = 1; t <= 4; t++)
        if (flatopt_simd_tier_available(t))
            best = t;

    /* Process default: each available tier, then 0 = the best one; new optimizers follow. */
    for (t = 1; t <= 4; t++) {
        flatopt_optimizer *o;
        flatopt_config d;
        uint32_t got = 0;
        if (!flatopt_simd_tier_available(t))
            continue;
        OK(F(flatopt_set_default_simd_tier)(t));
        CHECK(F(flatopt_default_simd_tier)() == t, "default tier after set %u", (unsigned)t);
        OK(F(flatopt_config_init)(&d, sizeof d));
        o = new_opt(&d);
        OK(F(flatopt_optimizer_simd_tier)(o, &got));
        CHECK(got == t, "new optimizer runs on tier %u, default is %u", (unsigned)got,
              (unsigned)t);
        F(flatopt_optimizer_free)(o);
    }
    OK(F(flatopt_set_default_simd_tier)(FLATOPT_SIMD_DEFAULT));
    CHECK(F(flatopt_default_simd_tier)() == best, "set_default_simd_tier(0) gave %u, best %u",
          (unsigned)flatopt_default_simd_tier(), (unsigned)best);
    OK(F(flatopt_set_default_simd_tier)(def));

    /* Every tier, and switching tiers between steps, gives the scalar tier's bits. */
    c.simd_tier = FLATOPT_SIMD_SCALAR;
    model_init(&ref, 3, lens, 5);
    model_register(&ref, &c);
    for (step = 1; step <= 6; step++) {
        model_grads(&ref, step, 5);
        OK(F(flatopt_optimizer_step)(ref.opt));
    }
    for (t = 1; t <= 5; t++) {
        char what[64];
        uint32_t got = 0;
        int switching = (t == 5);
        if (!switching && !flatopt_simd_tier_available(t))
            continue;
        c.simd_tier = switching ? FLATOPT_SIMD_SCALAR : t;
        model_init(&m, 3, lens, 5);
        model_register(&m, &c);
        OK(F(flatopt_optimizer_simd_tier)(m.opt, &got));
        CHECK(got == c.simd_tier, "optimizer tier %u, configured %u", (unsigned)got,
              (unsigned)c.simd_tier);
        for (step = 1; step <= 6; step++) {
            if (switching) {
                uint32_t want = (uint32_t)(step % 4) + 1;
                if (!flatopt_simd_tier_available(want))
                    want = FLATOPT_SIMD_DEFAULT;
                OK(F(flatopt_optimizer_set_simd_tier)(m.opt, want));
                OK(F(flatopt_optimizer_simd_tier)(m.opt, &got));
                CHECK(got == (want ? want : def), "set_simd_tier(%u) -> %u", (unsigned)want,
                      (unsigned)got);
            }
            model_grads(&m, step, 5);
            OK(F(flatopt_optimizer_step)(m.opt));
        }
        snprintf(what, sizeof what, "tier %s", switching ? "switching" : names[t]);
        model_same(&m, &ref, 1, what, 6);
        model_free(&m);
    }
    model_free(&ref);
}

/* Lookahead(Adam) + global-norm clip + value clip + coupled decay on three registered buffers
 * against the same pipeline built from the stateless functions. */
static void test_lookahead_adam_clip(void)
{
    static const size_t lens[3] = { 3, 4100, 9000 };
    const size_t bs = F(flatopt_sum_squares_block_size)();
    model a;
    flatopt_config c = cfg_la_adam(5, 30.0);
    flatopt_base_params hp;
    float *rp[3], *m1[3], *m2[3], *slow[3];
    double partials[8];
    int i, t, clipped = 0, unclipped = 0, syncs = 0;

    c.grad_clip_value = 0.3;
    model_init(&a, 3, lens, 11);
    model_register(&a, &c);
    OK(F(flatopt_base_params_init)(&hp, sizeof hp, FLATOPT_ADAM));
    for (i = 0; i < 3; i++) {
        const float *s = NULL;
        size_t n = 0;
        rp[i] = fdup(a.p[i], lens[i]);
        slow[i] = fdup(a.p[i], lens[i]);
        m1[i] = falloc(lens[i]);
        m2[i] = falloc(lens[i]);
        OK(F(flatopt_optimizer_slow_weights)(a.opt, (size_t)i, &s, &n));
        CHECK(s != NULL && n == lens[i] && same_bits(s, a.p[i], n),
              "slow weights of buffer %d before the first step are not the params", i);
    }
    for (t = 1; t <= 12; t++) {
        flatopt_step_args args;
        double total = 0.0, cs = 0.0;
        uint64_t steps = 0;
        model_grads(&a, t, 11);
        for (i = 0; i < 3; i++) {
            size_t np = (lens[i] + bs - 1) / bs, j;
            CHECK(np <= 8, "too many blocks");
            OK(F(flatopt_sum_squares_partials)(a.g[i], lens[i], partials, np));
            for (j = 0; j < np; j++)
                total += partials[j];
        }
        OK(F(flatopt_clip_scale)(total, 30.0, &cs));
        if (cs < 1.0)
            clipped++;
        else
            unclipped++;
        OK(F(flatopt_step_args_init)(&args, sizeof args));
        args.step = (uint64_t)t;
        args.lr = 0.01;
        args.clip_scale = cs;
        args.clip_value = 0.3;
        args.weight_decay = 0.01;
        args.sync = (t % 5 == 0);
        args.alpha = 0.5;
        syncs += (int)args.sync;
        for (i = 0; i < 3; i++)
            OK(F(flatopt_adam_update)(&hp, &args, rp[i], a.g[i], m1[i], m2[i], NULL, slow[i],
                                      lens[i]));
        OK(F(flatopt_optimizer_step)(a.opt));
        OK(F(flatopt_optimizer_step_count)(a.opt, &steps));
        CHECK(steps == (uint64_t)t, "step_count %lu after %d steps", (unsigned long)steps, t);
        for (i = 0; i < 3; i++) {
            const float *s = NULL;
            size_t n = 0;
            CHECK_BITS(a.p[i], rp[i], lens[i],
                       "Lookahead(Adam)+clip step %d buffer %d: handle != stateless pipeline", t,
                       i);
            OK(F(flatopt_optimizer_slow_weights)(a.opt, (size_t)i, &s, &n));
            CHECK(s && n == lens[i] && same_bits(s, slow[i], n),
                  "step %d buffer %d: slow weights differ from the stateless pipeline", t, i);
            if (t % 5 == 0)
                CHECK(s && same_bits(s, a.p[i], n),
                      "step %d (sync) buffer %d: params are not bit-equal to the slow weights",
                      t, i);
        }
    }
    CHECK(clipped > 0 && unclipped > 0 && syncs == 2,
          "test data should clip on some steps only (%d clipped, %d not) and sync twice",
          clipped, unclipped);
    for (i = 0; i < 3; i++) {
        float *copy = falloc(lens[i]);
        const float *s = NULL;
        size_t n = 0;
        OK(F(flatopt_optimizer_copy_slow_weights)(a.opt, (size_t)i, copy, lens[i]));
        OK(F(flatopt_optimizer_slow_weights)(a.opt, (size_t)i, &s, &n));
        CHECK(s && n == lens[i] && same_bits(copy, s, n), "copy_slow_weights != borrowed");
        free(copy);
        free(rp[i]);
        free(slow[i]);
        free(m1[i]);
        free(m2[i]);
    }
    model_free(&a);
}

static void test_step_with_grads(void)
{
    static const size_t lens[3] = { 9, 130, 1 };
    model a, b;
    flatopt_config c = cfg_la_adam(3, 30.0);
    float *gs[3];
    const float *cgs[3];
    int i, t;
    size_t j;
    model_init(&a, 3, lens, 21);
    model_init(&b, 3, lens, 21);
    model_register(&a, &c);
    model_register(&b, &c);
    /* b's registered gradients are NaN: step_with_grads must not read them. */
    for (i = 0; i < 3; i++) {
        for (j = 0; j < lens[i]; j++)
            b.g[i][j] = NAN;
        gs[i] = falloc(lens[i]);
        cgs[i] = gs[i];
    }
    for (t = 1; t <= 7; t++) {
        model_grads(&a, t, 21);
        for (i = 0; i < 3; i++)
            memcpy(gs[i], a.g[i], lens[i] * sizeof(float));
        OK(F(flatopt_optimizer_step)(a.opt));
        OK(F(flatopt_optimizer_step_with_grads)(b.opt, cgs, 3));
        model_same(&a, &b, 1, "step_with_grads vs step", t);
    }
    CHECK(step_count(b.opt) == 7 && skipped_count(b.opt) == 0, "step_with_grads counters");
    for (i = 0; i < 3; i++)
        free(gs[i]);
    model_free(&a);
    model_free(&b);
}

typedef struct range_job {
    const flatopt_optimizer *opt;
    size_t r[4][2];
    int n;
    flatopt_status st[4];
} range_job;

static void *range_worker(void *arg)
{
    range_job *j = (range_job *)arg;
    int k;
    for (k = 0; k < j->n; k++) /* not through F(): cover() is main-thread only */
        j->st[k] = flatopt_optimizer_step_range(j->opt, j->r[k][0], j->r[k][1]);
    return NULL;
}

static void test_split_step_threads(void)
{
    static const size_t lens[4] = { 5, 4100, 3000, 1 };
    model a, b;
    flatopt_config c = cfg_la_adam(2, 30.0);
    size_t total;
    int t, k;
    model_init(&a, 4, lens, 31);
    model_init(&b, 4, lens, 31);
    model_register(&a, &c);
    model_register(&b, &c);
    total = total_len(b.opt);
    CHECK(total == 5 + 4100 + 3000 + 1, "total_len %lu", (unsigned long)total);
    {
        size_t np = 0;
        OK(F(flatopt_optimizer_num_params)(b.opt, &np));
        CHECK(np == 4, "num_params %lu", (unsigned long)np);
    }
    for (t = 1; t <= 6; t++) {
        range_job j1, j2;
        pthread_t th1, th2;
        /* uneven, step-dependent split points, crossing buffer boundaries */
        size_t s1 = ((size_t)t * 1237u) % total, s2, s3;
        s2 = s1 + (total - s1) / 3;
        s3 = s2 + 1;
        model_grads(&a, t, 31);
        model_copy_grads(&b, &a);
        OK(F(flatopt_optimizer_step)(a.opt));
        if (!OK(F(flatopt_optimizer_begin_step)(b.opt)))
            break;
        memset(&j1, 0, sizeof j1);
        memset(&j2, 0, sizeof j2);
        j1.opt = j2.opt = b.opt;
        j1.n = 1;
        j1.r[0][0] = 0;
        j1.r[0][1] = s1;
        j2.n = 3;
        j2.r[0][0] = s2; /* out of order on purpose */
        j2.r[0][1] = s3;
        j2.r[1][0] = s1;
        j2.r[1][1] = s2;
        j2.r[2][0] = s3;
        j2.r[2][1] = total;
        CHECK(pthread_create(&th1, NULL, range_worker, &j1) == 0, "pthread_create");
        CHECK(pthread_create(&th2, NULL, range_worker, &j2) == 0, "pthread_create");
        OK(F(flatopt_optimizer_step_range)(b.opt, s1, s1)); /* empty range: a no-op */
        pthread_join(th1, NULL);
        pthread_join(th2, NULL);
        for (k = 0; k < j1.n; k++)
            CHECK(j1.st[k] == FLATOPT_OK, "thread 1 range %d: %s", k, status_name(j1.st[k]));
        for (k = 0; k < j2.n; k++)
            CHECK(j2.st[k] == FLATOPT_OK, "thread 2 range %d: %s", k, status_name(j2.st[k]));
        OK(F(flatopt_optimizer_end_step)(b.opt));
        CHECK(step_count(b.opt) == (uint64_t)t, "split step count");
        model_same(&a, &b, 1, "begin_step + step_range (2 pthreads) + end_step vs step", t);
        CHECK(current_lr(a.opt) == current_lr(b.opt), "lr after split step");
    }
    model_free(&a);
    model_free(&b);
}

/* flatopt_optimizer_state_bytes: every state buffer as held (float32 4, bfloat16 2, int8 1
 * byte per element plus a 4-byte scale per 256), with the slow weights; two buffers. */
static void test_state_bytes(void)
{
    static const struct {
        const char *name;
        uint32_t kind, dtype, slow, lookahead;
        uint64_t moments;
    } v[] = {
        { "adam f32", FLATOPT_ADAM, FLATOPT_STATE_FLOAT32, FLATOPT_STATE_FLOAT32, 0, 2 },
        { "adam bf16", FLATOPT_ADAM, FLATOPT_STATE_BFLOAT16, FLATOPT_STATE_FLOAT32, 0, 2 },
        { "adam int8", FLATOPT_ADAM, FLATOPT_STATE_INT8, FLATOPT_STATE_FLOAT32, 0, 2 },
        { "lookahead adam int8, bf16 slow", FLATOPT_ADAM, FLATOPT_STATE_INT8,
          FLATOPT_STATE_BFLOAT16, 1, 2 },
        { "lookahead adam f32", FLATOPT_ADAM, FLATOPT_STATE_FLOAT32, FLATOPT_STATE_FLOAT32, 1, 2 },
        { "sgd (no state)", FLATOPT_SGD, FLATOPT_STATE_INT8, FLATOPT_STATE_FLOAT32, 0, 0 },
        { "lion int8", FLATOPT_LION, FLATOPT_STATE_INT8, FLATOPT_STATE_FLOAT32, 0, 1 },
    };
    static const size_t lens[2] = { 700, 256 };
    size_t k;
    for (k = 0; k < sizeof v / sizeof v[0]; k++) {
        flatopt_config c;
        flatopt_base_params cb;
        flatopt_optimizer *o;
        uint64_t got = 7, want = 0, per = 0;
        float *p[2], *g[2];
        int i;
        OK(F(flatopt_config_init)(&c, sizeof c));
        OK(F(flatopt_base_params_init)(&cb, sizeof cb, v[k].kind));
        c.base = &cb;
        c.state_dtype = v[k].dtype;
        c.slow_dtype = v[k].slow;
        c.lookahead = v[k].lookahead;
        o = new_opt(&c);
        OK(F(flatopt_optimizer_state_bytes)(o, &got));
        CHECK(got == 0, "%s: state_bytes before registration %llu", v[k].name,
              (unsigned long long)got);
        for (i = 0; i < 2; i++) {
            size_t n = lens[i];
            p[i] = falloc(n);
            g[i] = falloc(n);
            OK(F(flatopt_optimizer_add_param)(o, p[i], g[i], n));
            per = v[k].dtype == FLATOPT_STATE_FLOAT32    ? 4 * n
                  : v[k].dtype == FLATOPT_STATE_BFLOAT16 ? 2 * n
                                                         : n + 4 * ((n + 255) / 256);
            want += v[k].moments * per;
            if (v[k].lookahead)
                want += (v[k].slow == FLATOPT_STATE_FLOAT32 ? 4 : 2) * n;
        }
        OK(F(flatopt_optimizer_state_bytes)(o, &got));
        CHECK(got == want, "%s: state_bytes %llu, expected %llu", v[k].name,
              (unsigned long long)got, (unsigned long long)want);
        F(flatopt_optimizer_free)(o);
        for (i = 0; i < 2; i++) {
            free(p[i]);
            free(g[i]);
        }
    }
}

/* The C split step with compressed state (bf16 stochastic / nearest, int8; f32 or bf16 slow
 * weights): ranges from 2 pthreads on 8-bit block boundaries of each buffer (any cut for bf16)
 * are bit for bit one whole step; a range cutting a block is refused and claims nothing. */
static void test_split_step_compressed(void)
{
    static const size_t lens[4] = { 5, 4100, 3000, 1 };
    static const struct {
        const char *name;
        uint32_t dtype, rounding, slow;
    } v[] = {
        { "bf16 stochastic", FLATOPT_STATE_BFLOAT16, FLATOPT_ROUNDING_STOCHASTIC,
          FLATOPT_STATE_FLOAT32 },
        { "bf16 nearest, bf16 slow", FLATOPT_STATE_BFLOAT16, FLATOPT_ROUNDING_NEAREST,
          FLATOPT_STATE_BFLOAT16 },
        { "int8", FLATOPT_STATE_INT8, FLATOPT_ROUNDING_STOCHASTIC, FLATOPT_STATE_FLOAT32 },
        { "int8, bf16 slow", FLATOPT_STATE_INT8, FLATOPT_ROUNDING_STOCHASTIC,
          FLATOPT_STATE_BFLOAT16 },
    };
    size_t k;
    for (k = 0; k < sizeof v / sizeof v[0]; k++) {
        model a, b;
        flatopt_config c = cfg_la_adam(2, 30.0);
        size_t total;
        int t, r;
        int q8 = v[k].dtype == FLATOPT_STATE_INT8;
        c.state_dtype = v[k].dtype;
        c.state_rounding = v[k].rounding;
        c.slow_dtype = v[k].slow;
        c.state_seed = 77;
        c.state_index_offset = 1000;
        model_init(&a, 4, lens, 41);
        model_init(&b, 4, lens, 41);
        model_register(&a, &c);
        model_register(&b, &c);
        total = total_len(b.opt);
        for (t = 1; t <= 6; t++) {
            range_job j1, j2;
            pthread_t th1, th2;
            /* cut points in buffer 1 (from 5) and buffer 2 (from 4105): block boundaries of
             * their buffers for int8, anywhere for bf16 */
            size_t s1 = 5 + (q8 ? 256 * (size_t)((t * 3) % 16) : (size_t)t * 611 % 4100);
            size_t s2 = 4105 + (q8 ? 256 * (size_t)((t * 5) % 11) : (size_t)t * 389 % 3000);
            model_grads(&a, t, 41);
            model_copy_grads(&b, &a);
            OK(F(flatopt_optimizer_step)(a.opt));
            if (!OK(F(flatopt_optimizer_begin_step)(b.opt)))
                break;
            if (q8) { /* one element past a block boundary: refused, nothing claimed */
                EXPECT(F(flatopt_optimizer_step_range)(b.opt, 0, s1 + 1),
                       FLATOPT_ERR_INVALID_ARGUMENT);
                CHECK(strstr(last_msg(), "8-bit blocks") != NULL, "%s: message %s", v[k].name,
                      last_msg());
            }
            memset(&j1, 0, sizeof j1);
            memset(&j2, 0, sizeof j2);
            j1.opt = j2.opt = b.opt;
            j1.n = 1;
            j1.r[0][0] = s1;
            j1.r[0][1] = s2;
            j2.n = 2;
            j2.r[0][0] = s2; /* out of order on purpose */
            j2.r[0][1] = total;
            j2.r[1][0] = 0;
            j2.r[1][1] = s1;
            CHECK(pthread_create(&th1, NULL, range_worker, &j1) == 0, "pthread_create");
            CHECK(pthread_create(&th2, NULL, range_worker, &j2) == 0, "pthread_create");
            pthread_join(th1, NULL);
            pthread_join(th2, NULL);
            for (r = 0; r < j1.n; r++)
                CHECK(j1.st[r] == FLATOPT_OK, "%s: thread 1 range %d: %s", v[k].name, r,
                      status_name(j1.st[r]));
            for (r = 0; r < j2.n; r++)
                CHECK(j2.st[r] == FLATOPT_OK, "%s: thread 2 range %d: %s", v[k].name, r,
                      status_name(j2.st[r]));
            OK(F(flatopt_optimizer_end_step)(b.opt));
            model_same(&a, &b, v[k].slow == FLATOPT_STATE_FLOAT32, v[k].name, t);
        }
        model_free(&a);
        model_free(&b);
    }
}

/* Checkpoints of compressed state (format 4, the arrays as held): version 4, smaller than the
 * f32 one, a round trip saves the same bytes and resumes bit for bit, and a checkpoint of
 * another precision loads (converted). */
static void test_checkpoint_compressed(void)
{
    static const size_t lens[2] = { 700, 37 };
    static const uint32_t dtypes[2] = { FLATOPT_STATE_BFLOAT16, FLATOPT_STATE_INT8 };
    int k;
    for (k = 0; k < 2; k++) {
        model a, b, f;
        flatopt_config c = cfg_la_adam(3, 30.0), cf = c;
        unsigned char *ck, *ck2, *ckf;
        size_t n = 0, n2 = 0, nf = 0;
        uint32_t version = 0;
        int t;
        c.state_dtype = dtypes[k];
        c.slow_dtype = FLATOPT_STATE_BFLOAT16;
        model_init(&a, 2, lens, 51);
        model_init(&b, 2, lens, 51);
        model_init(&f, 2, lens, 51);
        model_register(&a, &c);
        for (t = 1; t <= 4; t++) {
            model_grads(&a, t, 51);
            OK(F(flatopt_optimizer_step)(a.opt));
        }
        memcpy(b.p[0], a.p[0], lens[0] * sizeof(float));
        memcpy(b.p[1], a.p[1], lens[1] * sizeof(float));
        model_register(&b, &c);
        model_register(&f, &cf);
        ck = ckpt_of(a.opt, &n);
        ckf = ckpt_of(f.opt, &nf);
        memcpy(&version, ck + 8, 4);
        CHECK(version == 4, "state_dtype %u: checkpoint version %u", (unsigned)dtypes[k],
              (unsigned)version);
        CHECK(n < nf, "state_dtype %u: %lu bytes, f32 state %lu", (unsigned)dtypes[k],
              (unsigned long)n, (unsigned long)nf);
        OK(F(flatopt_optimizer_load)(b.opt, ck, n));
        ck2 = ckpt_of(b.opt, &n2);
        CHECK(n2 == n && memcmp(ck, ck2, n) == 0, "state_dtype %u: loaded state saves other bytes",
              (unsigned)dtypes[k]);
        OK(F(flatopt_optimizer_load)(f.opt, ck, n)); /* into f32 state: converted */
        CHECK(step_count(f.opt) == 4, "converted step count");
        for (t = 5; t <= 8; t++) {
            model_grads(&a, t, 51);
            model_copy_grads(&b, &a);
            OK(F(flatopt_optimizer_step)(a.opt));
            OK(F(flatopt_optimizer_step)(b.opt));
            model_same(&a, &b, 0, "compressed checkpoint resumed", t);
        }
        free(ck);
        free(ck2);
        free(ckf);
        model_free(&a);
        model_free(&b);
        model_free(&f);
    }
}

static void test_nonfinite_skip(void)
{
    static const size_t lens[3] = { 4, 20, 9 };
    int variant;
    for (variant = 0; variant < 3; variant++) {
        /* 0: NaN found by the clip-norm pass; 1: +Inf found by the plain finite check;
         * 2: NaN, through begin_step. */
        model a, tw;
        flatopt_config c = cfg_la_adam(2, variant == 1 ? 0.0 : 30.0);
        flatopt_schedule s;
        float *before[3], slowb[3][20];
        float lr0, lr1;
        const int bad_buf = variant == 1 ? 2 : 1, bad_idx = variant == 1 ? 0 : 7;
        int i, t;
        char want[64];
        OK(F(flatopt_schedule_init)(&s, sizeof s, FLATOPT_SCHEDULE_EXPONENTIAL));
        s.base_lr = 0.01;
        s.gamma = 0.9;
        c.schedule = &s;
        model_init(&a, 3, lens, 41);
        model_init(&tw, 3, lens, 41);
        model_register(&a, &c);
        model_register(&tw, &c);
        for (t = 1; t <= 2; t++) {
            model_grads(&a, t, 41);
            model_copy_grads(&tw, &a);
            OK(F(flatopt_optimizer_step)(a.opt));
            OK(F(flatopt_optimizer_step)(tw.opt));
        }
        model_grads(&a, 3, 41);
        model_copy_grads(&tw, &a);
        a.g[bad_buf][bad_idx] = variant == 1 ? INFINITY : NAN;
        for (i = 0; i < 3; i++) {
            before[i] = fdup(a.p[i], lens[i]);
            OK(F(flatopt_optimizer_copy_slow_weights)(a.opt, (size_t)i, slowb[i], lens[i]));
        }
        lr0 = current_lr(a.opt);
        if (variant == 2) {
            EXPECT(F(flatopt_optimizer_begin_step)(a.opt), FLATOPT_SKIPPED);
            /* the skipped step is over: nothing to end */
            snprintf(want, sizeof want, "buffer %d", bad_buf);
            CHECK(msg_has(want), "skip message \"%s\" lacks \"%s\"", last_msg(), want);
            EXPECT(F(flatopt_optimizer_end_step)(a.opt), FLATOPT_ERR_INVALID_STATE);
        } else {
            EXPECT(F(flatopt_optimizer_step)(a.opt), FLATOPT_SKIPPED);
            snprintf(want, sizeof want, "buffer %d", bad_buf);
            CHECK(msg_has(want), "skip message \"%s\" lacks \"%s\"", last_msg(), want);
            snprintf(want, sizeof want, "index %d", bad_idx);
            CHECK(msg_has(want), "skip message \"%s\" lacks \"%s\"", last_msg(), want);
            CHECK(msg_has(variant == 1 ? "inf" : "NaN"), "skip message \"%s\" lacks the value",
                  last_msg());
        }
        CHECK(step_count(a.opt) == 2, "step_count changed by a skipped update");
        CHECK(skipped_count(a.opt) == 1, "skipped_count not incremented");
        lr1 = current_lr(a.opt);
        CHECK(lr0 == lr1, "learning rate changed by a skipped update (%g -> %g)", (double)lr0,
              (double)lr1);
        for (i = 0; i < 3; i++) {
            float now[20];
            CHECK(same_bits(before[i], a.p[i], lens[i]), "params changed by a skipped update");
            OK(F(flatopt_optimizer_copy_slow_weights)(a.opt, (size_t)i, now, lens[i]));
            CHECK(same_bits(slowb[i], now, lens[i]), "slow weights changed by a skipped update");
            free(before[i]);
        }
        /* The gradient repaired: a's trajectory continues exactly as if the skip never was. */
        model_copy_grads(&a, &tw);
        for (t = 3; t <= 6; t++) {
            if (t > 3) {
                model_grads(&a, t, 41);
                model_copy_grads(&tw, &a);
            }
            OK(F(flatopt_optimizer_step)(a.opt));
            OK(F(flatopt_optimizer_step)(tw.opt));
            model_same(&a, &tw, 1, "after a skipped update", t);
            CHECK(current_lr(a.opt) == current_lr(tw.opt), "lr after a skipped update");
        }
        CHECK(step_count(a.opt) == 6 && skipped_count(a.opt) == 1 && skipped_count(tw.opt) == 0,
              "counters after a skipped update");
        model_free(&a);
        model_free(&tw);
    }
}

static void test_nonfinite_error_propagate(void)
{
    static const size_t lens[2] = { 6, 10 };
    model a;
    flatopt_config c = cfg_la_adam(2, 0.0);
    float *before;
    size_t i;
    c.nonfinite = FLATOPT_NONFINITE_ERROR;
    model_init(&a, 2, lens, 51);
    model_register(&a, &c);
    model_grads(&a, 1, 51);
    a.g[0][2] = NAN;
    before = fdup(a.p[0], lens[0]);
    EXPECT(F(flatopt_optimizer_step)(a.opt), FLATOPT_ERR_NON_FINITE);
    CHECK(msg_has("buffer 0") && msg_has("index 2"), "NON_FINITE message \"%s\"", last_msg());
    CHECK(step_count(a.opt) == 0 && skipped_count(a.opt) == 1,
          "error policy: step %lu skipped %lu", (unsigned long)step_count(a.opt),
          (unsigned long)skipped_count(a.opt));
    CHECK(same_bits(before, a.p[0], lens[0]), "error policy: params changed");
    a.g[0][2] = 0.5f;
    OK(F(flatopt_optimizer_step)(a.opt));
    free(before);
    model_free(&a);

    c.nonfinite = FLATOPT_NONFINITE_PROPAGATE;
    model_init(&a, 2, lens, 52);
    model_register(&a, &c);
    model_grads(&a, 1, 52);
    a.g[1][3] = NAN;
    OK(F(flatopt_optimizer_step)(a.opt));
    CHECK(isnan(a.p[1][3]), "propagate: the NaN did not reach the param");
    for (i = 0; i < lens[1]; i++)
        if (i != 3)
            CHECK(isfinite(a.p[1][i]), "propagate: element %lu not finite", (unsigned long)i);
    CHECK(step_count(a.opt) == 1 && skipped_count(a.opt) == 0, "propagate counters");
    model_free(&a);
}

/* Each base optimizer: the handle and the stateless function, same step numbers and lr. */
static void test_stateless_vs_handle(void)
{
    static const struct {
        const char *name;
        uint32_t kind;
        double momentum, dampening;
        uint32_t nesterov, amsgrad;
        double wd, clip_value;
        int lookahead;
        double lr;
    } v[] = {
        { "sgd", FLATOPT_SGD, 0, 0, 0, 0, 0, 0, 0, 0.05 },
        { "sgd momentum+dampening", FLATOPT_SGD, 0.9, 0.1, 0, 0, 0.01, 0, 0, 0.05 },
        { "sgd nesterov + lookahead", FLATOPT_SGD, 0.9, 0, 1, 0, 0, 0.5, 1, 0.05 },
        { "adam", FLATOPT_ADAM, 0, 0, 0, 0, 0, 0, 0, 0.01 },
        { "adam amsgrad + lookahead", FLATOPT_ADAM, 0, 0, 0, 1, 0.01, 0.5, 1, 0.01 },
        { "adamw + lookahead", FLATOPT_ADAMW, 0, 0, 0, 0, 0, 0, 1, 0.01 },
        { "radam", FLATOPT_RADAM, 0, 0, 0, 0, 0.01, 0, 0, 0.01 },
    };
    static const size_t len[1] = { 37 };
    size_t k;
    for (k = 0; k < sizeof v / sizeof v[0]; k++) {
        model a;
        flatopt_config c;
        flatopt_base_params cb;
        float *rp, *m1, *m2, *mx, *slow;
        int t;
        OK(F(flatopt_config_init)(&c, sizeof c));
        OK(F(flatopt_base_params_init)(&cb, sizeof cb, v[k].kind));
        c.base = &cb;
        cb.momentum = v[k].momentum;
        cb.dampening = v[k].dampening;
        cb.nesterov = v[k].nesterov;
        cb.amsgrad = v[k].amsgrad;
        c.lr = v[k].lr;
        c.weight_decay = v[k].wd;
        c.grad_clip_value = v[k].clip_value;
        c.lookahead = (uint32_t)v[k].lookahead;
        c.sync_period = 3;
        c.alpha = 0.5;
        model_init(&a, 1, len, 60 + k);
        model_register(&a, &c);
        rp = fdup(a.p[0], len[0]);
        slow = fdup(a.p[0], len[0]);
        m1 = falloc(len[0]);
        m2 = falloc(len[0]);
        mx = falloc(len[0]);
        for (t = 1; t <= 10; t++) {
            flatopt_step_args args;
            flatopt_status st = FLATOPT_ERR_INTERNAL;
            float *sl = v[k].lookahead ? slow : NULL;
            model_grads(&a, t, 60 + k);
            OK(F(flatopt_step_args_init)(&args, sizeof args));
            args.step = (uint64_t)t;
            args.lr = v[k].lr;
            args.clip_value = v[k].clip_value;
            args.weight_decay = v[k].wd;
            args.sync = (uint32_t)(v[k].lookahead && t % 3 == 0);
            args.alpha = 0.5;
            switch (v[k].kind) {
            case FLATOPT_SGD:
                st = F(flatopt_sgd_update)(&cb, &args, rp, a.g[0],
                                           v[k].momentum > 0 ? m1 : NULL, sl, len[0]);
                break;
            case FLATOPT_ADAM:
                st = F(flatopt_adam_update)(&cb, &args, rp, a.g[0], m1, m2,
                                            v[k].amsgrad ? mx : NULL, sl, len[0]);
                break;
            case FLATOPT_ADAMW:
                st = F(flatopt_adamw_update)(&cb, &args, rp, a.g[0], m1, m2, sl, len[0]);
                break;
            default:
                st = F(flatopt_radam_update)(&cb, &args, rp, a.g[0], m1, m2, sl, len[0]);
                break;
            }
            CHECK(st == FLATOPT_OK, "%s: stateless step %d: %s (%s)", v[k].name, t,
                  status_name(st), last_msg());
            OK(F(flatopt_optimizer_step)(a.opt));
            CHECK_BITS(a.p[0], rp, len[0], "%s step %d: handle != stateless update", v[k].name, t);
            if (v[k].lookahead) {
                const float *s = NULL;
                size_t n = 0;
                OK(F(flatopt_optimizer_slow_weights)(a.opt, 0, &s, &n));
                CHECK(s && n == len[0] && same_bits(s, slow, n),
                      "%s step %d: slow weights differ", v[k].name, t);
            }
        }
        free(rp);
        free(slow);
        free(m1);
        free(m2);
        free(mx);
        model_free(&a);
    }
}

/* flatopt_base_update for every kind (and the variants that change the state layout): the
 * state from flatopt_base_state_buffers / _state_init, then the handle and the stateless
 * update, bit for bit, with Lookahead on every other row. */
static void test_base_update_every_kind(void)
{
    static const struct {
        const char *name;
        uint32_t kind;
        double momentum;
        uint32_t flag; /* amsgrad (Adam), centered (RMSprop) */
        uint32_t mask;
    } v[] = {
        { "sgd", FLATOPT_SGD, 0, 0, 0 },
        { "sgd momentum", FLATOPT_SGD, 0.9, 0, FLATOPT_STATE_M },
        { "adam", FLATOPT_ADAM, 0, 0, FLATOPT_STATE_M | FLATOPT_STATE_V },
        { "amsgrad", FLATOPT_ADAM, 0, 1, FLATOPT_STATE_M | FLATOPT_STATE_V | FLATOPT_STATE_V_MAX },
        { "adamw", FLATOPT_ADAMW, 0, 0, FLATOPT_STATE_M | FLATOPT_STATE_V },
        { "radam", FLATOPT_RADAM, 0, 0, FLATOPT_STATE_M | FLATOPT_STATE_V },
        { "adagrad", FLATOPT_ADAGRAD, 0, 0, FLATOPT_STATE_V },
        { "rmsprop", FLATOPT_RMSPROP, 0, 0, FLATOPT_STATE_V },
        { "rmsprop centered momentum", FLATOPT_RMSPROP, 0.9, 1,
          FLATOPT_STATE_M | FLATOPT_STATE_V | FLATOPT_STATE_V_MAX },
        { "adamax", FLATOPT_ADAMAX, 0, 0, FLATOPT_STATE_M | FLATOPT_STATE_V },
        { "nadam", FLATOPT_NADAM, 0, 0, FLATOPT_STATE_M | FLATOPT_STATE_V },
        { "lion", FLATOPT_LION, 0, 0, FLATOPT_STATE_M },
        { "adabelief", FLATOPT_ADABELIEF, 0, 0, FLATOPT_STATE_M | FLATOPT_STATE_V },
        { "yogi", FLATOPT_YOGI, 0, 0, FLATOPT_STATE_M | FLATOPT_STATE_V },
        { "adadelta", FLATOPT_ADADELTA, 0, 0, FLATOPT_STATE_M | FLATOPT_STATE_V },
        { "rprop", FLATOPT_RPROP, 0, 0, FLATOPT_STATE_M | FLATOPT_STATE_V },
        { "lamb", FLATOPT_LAMB, 0, 0, FLATOPT_STATE_M | FLATOPT_STATE_V },
        { "lars", FLATOPT_LARS, 0, 0, FLATOPT_STATE_M },
        { "lars momentum 0", FLATOPT_LARS, 0.0, 0, FLATOPT_STATE_M },
        { "novograd", FLATOPT_NOVOGRAD, 0, 0, FLATOPT_STATE_M | FLATOPT_STATE_V },
        { "adafactor", FLATOPT_ADAFACTOR, 0, 0, FLATOPT_STATE_V },
        { "adafactor momentum", FLATOPT_ADAFACTOR, 0.9, 0, FLATOPT_STATE_M | FLATOPT_STATE_V },
    };
    static const size_t len[1] = { 37 };
    int seen[FLATOPT_ADAFACTOR + 1] = { 0 };
    size_t k;
    for (k = 0; k < sizeof v / sizeof v[0]; k++) {
        model a;
        flatopt_config c;
        flatopt_base_params cb;
        float *rp, *st[3], *slow;
        uint32_t mask = 99;
        int t, j, lookahead = (int)(k % 2);
        OK(F(flatopt_config_init)(&c, sizeof c));
        OK(F(flatopt_base_params_init)(&cb, sizeof cb, v[k].kind));
        c.base = &cb;
        if (v[k].kind == FLATOPT_SGD || v[k].kind == FLATOPT_RMSPROP ||
            (v[k].kind == FLATOPT_LARS && v[k].momentum == 0.0) || v[k].kind == FLATOPT_ADAFACTOR)
            cb.momentum = v[k].momentum;
        if (v[k].kind == FLATOPT_ADAM)
            cb.amsgrad = v[k].flag;
        if (v[k].kind == FLATOPT_RMSPROP)
            cb.centered = v[k].flag;
        if (v[k].kind == FLATOPT_ADAGRAD || v[k].kind == FLATOPT_RMSPROP)
            cb.initial_accumulator = 0.25;
        c.lr = 0.01;
        c.weight_decay = 0.01;
        c.lookahead = (uint32_t)lookahead;
        c.sync_period = 3;
        c.alpha = 0.5;
        seen[v[k].kind] = 1;
        OK(F(flatopt_base_state_buffers)(&cb, &mask));
        CHECK(mask == v[k].mask, "%s: state buffers 0x%x, expected 0x%x", v[k].name,
              (unsigned)mask, (unsigned)v[k].mask);
        model_init(&a, 1, len, 90 + k);
        model_register(&a, &c);
        rp = fdup(a.p[0], len[0]);
        slow = fdup(a.p[0], len[0]);
        for (j = 0; j < 3; j++)
            st[j] = (mask >> j) & 1 ? falloc(len[0]) : NULL;
        OK(F(flatopt_base_state_init)(&cb, st[0], st[1], st[2], len[0]));
        for (t = 1; t <= 10; t++) {
            flatopt_step_args args;
            flatopt_status rc;
            model_grads(&a, t, 90 + k);
            OK(F(flatopt_step_args_init)(&args, sizeof args));
            args.step = (uint64_t)t;
            args.lr = 0.01;
            args.weight_decay = 0.01;
            args.sync = (uint32_t)(lookahead && t % 3 == 0);
            args.alpha = 0.5;
            rc = F(flatopt_base_update)(&cb, &args, rp, a.g[0], st[0], st[1], st[2],
                                        lookahead ? slow : NULL, len[0]);
            CHECK(rc == FLATOPT_OK, "%s: base_update step %d: %s (%s)", v[k].name, t,
                  status_name(rc), last_msg());
            OK(F(flatopt_optimizer_step)(a.opt));
            CHECK_BITS(a.p[0], rp, len[0], "%s step %d: handle != flatopt_base_update",
                       v[k].name, t);
        }
        free(rp);
        free(slow);
        for (j = 0; j < 3; j++)
            free(st[j]);
        model_free(&a);
    }
    for (k = 0; k <= FLATOPT_ADAFACTOR; k++)
        CHECK(seen[k], "base kind %lu has no row in test_base_update_every_kind",
              (unsigned long)k);
}

static void test_kernels(void)
{
    const size_t bs = F(flatopt_sum_squares_block_size)();
    float small[3] = { 1.0f, 2.0f, 3.0f };
    float *x, *y, *f, *s, *f0, *s0;
    size_t n, i, np;
    double d = -1.0, naive = 0.0, sum = 0.0, parts[4];
    flatopt_base_params hp;
    flatopt_step_args args;

    CHECK(bs > 0 && bs % 16 == 0, "sum_squares_block_size %lu", (unsigned long)bs);
    OK(F(flatopt_sum_squares)(small, 3, &d));
    CHECK(d == 14.0, "sum_squares({1,2,3}) = %.17g", d);
    OK(F(flatopt_sum_squares)(NULL, 0, &d));
    CHECK(d == 0.0, "sum_squares of nothing = %g", d);

    n = 2 * bs + 5;
    np = 3;
    x = falloc(n);
    fill(x, n, 71, 3.0f);
    for (i = 0; i < n; i++)
        naive += (double)x[i] * (double)x[i];
    OK(F(flatopt_sum_squares)(x, n, &d));
    CHECK(fabs(d - naive) <= 1e-12 * naive, "sum_squares %.17g vs naive %.17g", d, naive);
    OK(F(flatopt_sum_squares_partials)(x, n, parts, np));
    for (i = 0; i < np; i++) {
        double one = -1.0;
        size_t len = i + 1 < np ? bs : n - (np - 1) * bs;
        OK(F(flatopt_sum_squares)(x + i * bs, len, &one));
        CHECK(one == parts[i], "partial %lu = %.17g, sum_squares of the block %.17g",
              (unsigned long)i, parts[i], one);
        sum += parts[i];
    }
    CHECK(sum == d, "partials added in order %.17g != sum_squares %.17g", sum, d);
    OK(F(flatopt_sum_squares_partials)(NULL, 0, NULL, 0));
    x[bs + 3] = NAN;
    OK(F(flatopt_sum_squares)(x, n, &d));
    CHECK(isnan(d), "sum_squares with a NaN = %g", d);
    x[bs + 3] = -INFINITY;
    OK(F(flatopt_sum_squares)(x, n, &d));
    CHECK(isinf(d) && d > 0, "sum_squares with -Inf = %g", d);
    x[bs + 3] = FLT_MAX;
    OK(F(flatopt_sum_squares)(x, n, &d));
    CHECK(isfinite(d), "sum_squares overflowed for finite input");
    free(x);

    OK(F(flatopt_clip_scale)(400.0, 10.0, &d));
    CHECK(d == 0.5, "clip_scale(400, 10) = %g", d);
    OK(F(flatopt_clip_scale)(100.0, 10.0, &d));
    CHECK(d == 1.0, "clip_scale(100, 10) = %g (norm equal to max: no clipping)", d);
    OK(F(flatopt_clip_scale)(25.0, 10.0, &d));
    CHECK(d == 1.0, "clip_scale(25, 10) = %g", d);
    OK(F(flatopt_clip_scale)(0.0, 1.0, &d));
    CHECK(d == 1.0, "clip_scale(0, 1) = %g", d);
    OK(F(flatopt_clip_scale)(2.0, 1.0, &d));
    CHECK(d == 1.0 / sqrt(2.0), "clip_scale(2, 1) = %.17g", d);

    {
        float v[9] = { -3.0f, -0.5f, 0.0f, 0.5f, 3.0f, 0, INFINITY, -INFINITY, 1.0f };
        const float want[9] = { -1.0f, -0.5f, 0.0f, 0.5f, 1.0f, 0, 1.0f, -1.0f, 1.0f };
        v[5] = NAN;
        OK(F(flatopt_clip_by_value)(v, 9, 1.0f));
        for (i = 0; i < 9; i++)
            CHECK(i == 5 ? isnan(v[i]) : v[i] == want[i], "clip_by_value[%lu] = %g",
                  (unsigned long)i, (double)v[i]);
        OK(F(flatopt_clip_by_value)(v, 9, 0.0f));
        for (i = 0; i < 9; i++)
            CHECK(i == 5 ? isnan(v[i]) : v[i] == 0.0f, "clip_by_value(c=0)[%lu] = %g",
                  (unsigned long)i, (double)v[i]);
        y = falloc(37);
        fill(y, 37, 72, 100.0f);
        x = fdup(y, 37);
        OK(F(flatopt_clip_by_value)(x, 37, INFINITY));
        CHECK(same_bits(x, y, 37), "clip_by_value(+inf) changed values");
        OK(F(flatopt_scale)(x, 37, 0.37f));
        for (i = 0; i < 37; i++) {
            float e = y[i] * 0.37f;
            CHECK(f2u(x[i]) == f2u(e), "scale[%lu] = %.9g, want %.9g", (unsigned long)i,
                  (double)x[i], (double)e);
        }
        free(x);
        free(y);
    }

    n = 37;
    f = falloc(n);
    s = falloc(n);
    fill(f, n, 73, 1.0f);
    fill(s, n, 74, 1.0f);
    f0 = fdup(f, n);
    s0 = fdup(s, n);
    OK(F(flatopt_lookahead_sync)(f, s, n, 0.3f));
    for (i = 0; i < n; i++) {
        float diff = f0[i] - s0[i];
        float step = 0.3f * diff;
        float e = s0[i] + step;
        CHECK(f2u(s[i]) == f2u(e) && f2u(f[i]) == f2u(e),
              "lookahead_sync[%lu]: slow %.9g fast %.9g, want %.9g", (unsigned long)i,
              (double)s[i], (double)f[i], (double)e);
    }
    fill(f, n, 75, 1.0f);
    memcpy(s0, s, n * sizeof(float));
    OK(F(flatopt_lookahead_sync)(f, s, n, 0.0f));
    CHECK(same_bits(s, s0, n) && same_bits(f, s0, n), "lookahead_sync(alpha 0) must snap back");
    free(f);
    free(s);
    free(f0);
    free(s0);

    /* zero lengths: NULL is fine when there is nothing to touch */
    OK(F(flatopt_scale)(NULL, 0, 2.0f));
    OK(F(flatopt_clip_by_value)(NULL, 0, 1.0f));
    OK(F(flatopt_lookahead_sync)(NULL, NULL, 0, 0.5f));
    OK(F(flatopt_base_params_init)(&hp, sizeof hp, FLATOPT_ADAM));
    OK(F(flatopt_step_args_init)(&args, sizeof args));
    OK(F(flatopt_adam_update)(&hp, &args, NULL, NULL, NULL, NULL, NULL, NULL, 0));
}

static void test_schedules(void)
{
    static const size_t len[1] = { 3 };
    struct {
        const char *name;
        uint32_t kind;
        double want[8];
    } cases[] = {
        { "step", FLATOPT_SCHEDULE_STEP, { 1, 1, 0.5, 0.5, 0.25, 0.25, 0.125, 0.125 } },
        { "multistep", FLATOPT_SCHEDULE_MULTI_STEP, { 1, 1, 0.1, 0.1, 0.01, 0.01, 0.01, 0.01 } },
        { "piecewise", FLATOPT_SCHEDULE_PIECEWISE_CONSTANT,
          { 0.3, 0.2, 0.2, 0.1, 0.1, 0.1, 0.1, 0.1 } },
        { "warmup", FLATOPT_SCHEDULE_WARMUP, { 0, 0.25, 0.5, 0.75, 1, 1, 1, 1 } },
        { "constant", FLATOPT_SCHEDULE_CONSTANT,
          { 1.0 / 3, 1.0 / 3, 1.0 / 3, 1.0 / 3, 1.0 / 3, 1, 1, 1 } },
        { "linear", FLATOPT_SCHEDULE_LINEAR,
          { 1.0 / 3, 1.0 / 3 + 2.0 / 15, 1.0 / 3 + 4.0 / 15, 1.0 / 3 + 6.0 / 15,
            1.0 / 3 + 8.0 / 15, 1, 1, 1 } },
        { "cosine", FLATOPT_SCHEDULE_COSINE_ANNEALING,
          { 1, 0.85355339059327373, 0.5, 0.14644660940672627, 0, 0, 0, 0 } },
        { "exponential (manual)", FLATOPT_SCHEDULE_EXPONENTIAL,
          { 1, 0.95, 0.9025, 0.857375, 0.81450625, 0.7737809375, 0.735091890625,
            0.69833729609375 } },
    };
    uint64_t ms[2] = { 2, 4 }, bounds[2] = { 1, 3 };
    double vals[3] = { 0.3, 0.2, 0.1 };
    size_t k;
    int e;
    float lr0;

    /* Manual mode: the learning rate follows flatopt_optimizer_schedule_step only. */
    for (k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        model a;
        flatopt_config c;
        flatopt_base_params cb;
        flatopt_schedule s;
        OK(F(flatopt_schedule_init)(&s, sizeof s, cases[k].kind));
        s.base_lr = 1.0;
        switch (cases[k].kind) {
        case FLATOPT_SCHEDULE_STEP:
            s.period = 2;
            s.gamma = 0.5;
            break;
        case FLATOPT_SCHEDULE_MULTI_STEP:
            s.milestones = ms;
            s.n_milestones = 2;
            break;
        case FLATOPT_SCHEDULE_PIECEWISE_CONSTANT:
            s.milestones = bounds;
            s.n_milestones = 2;
            s.values = vals;
            s.n_values = 3;
            break;
        case FLATOPT_SCHEDULE_WARMUP:
            s.warmup = 4;
            break;
        case FLATOPT_SCHEDULE_COSINE_ANNEALING:
            s.period = 4;
            break;
        default:
            break;
        }
        OK(F(flatopt_config_init)(&c, sizeof c));
        OK(F(flatopt_base_params_init)(&cb, sizeof cb, FLATOPT_SGD));
        c.base = &cb;
        c.schedule = &s;
        c.schedule_manual = 1;
        model_init(&a, 1, len, 80);
        model_register(&a, &c);
        /* the optimizer copied the schedule and its lists */
        s.base_lr = 123.0;
        ms[0] = 99;
        bounds[0] = 99;
        vals[0] = 99.0;
        lr0 = current_lr(a.opt);
        for (e = 0; e < 8; e++) {
            float lr = current_lr(a.opt), want = (float)cases[k].want[e];
            CHECK(near_ulps(lr, want, 1), "%s: lr(e=%d) = %.9g, expected %.9g", cases[k].name,
                  e, (double)lr, (double)want);
            /* updates do not advance a manual schedule */
            model_grads(&a, e + 1, 80);
            OK(F(flatopt_optimizer_step)(a.opt));
            OK(F(flatopt_optimizer_step)(a.opt));
            CHECK(current_lr(a.opt) == lr, "%s: an update advanced a manual schedule",
                  cases[k].name);
            /* set_epoch: back to the start, then to e again: the same rate, bit for bit */
            OK(F(flatopt_optimizer_schedule_set_epoch)(a.opt, 0));
            CHECK(current_lr(a.opt) == lr0, "%s: set_epoch(0) gives %.9g, lr(0) is %.9g",
                  cases[k].name, (double)current_lr(a.opt), (double)lr0);
            OK(F(flatopt_optimizer_schedule_set_epoch)(a.opt, (uint64_t)e));
            CHECK(current_lr(a.opt) == lr, "%s: set_epoch(%d) gives %.9g, stepping %.9g",
                  cases[k].name, e, (double)current_lr(a.opt), (double)lr);
            OK(F(flatopt_optimizer_schedule_step)(a.opt));
        }
        /* a huge position at once, then back: the rate at e = 8 as stepped there */
        {
            float lr8 = current_lr(a.opt);
            OK(F(flatopt_optimizer_schedule_set_epoch)(a.opt, UINT64_MAX));
            OK(F(flatopt_optimizer_schedule_set_epoch)(a.opt, 8));
            CHECK(current_lr(a.opt) == lr8, "%s: set_epoch(8) after UINT64_MAX", cases[k].name);
        }
        ms[0] = 2;
        bounds[0] = 1;
        vals[0] = 0.3;
        model_free(&a);
    }

    /* Per-update mode (default): Exponential advances once per applied update. */
    {
        model a;
        flatopt_config c;
        flatopt_base_params cb;
        flatopt_schedule s;
        OK(F(flatopt_schedule_init)(&s, sizeof s, FLATOPT_SCHEDULE_EXPONENTIAL));
        CHECK(s.gamma == 0.95, "Exponential default gamma %g", s.gamma);
        s.base_lr = 0.1;
        s.gamma = 0.9;
        OK(F(flatopt_config_init)(&c, sizeof c));
        OK(F(flatopt_base_params_init)(&cb, sizeof cb, FLATOPT_SGD));
        c.base = &cb;
        c.schedule = &s;
        model_init(&a, 1, len, 81);
        model_register(&a, &c);
        for (e = 0; e < 8; e++) {
            float lr = current_lr(a.opt), want = (float)(0.1 * pow(0.9, (double)e));
            CHECK(near_ulps(lr, want, 1), "exponential per update: lr(e=%d) = %.9g, want %.9g",
                  e, (double)lr, (double)want);
            model_grads(&a, e + 1, 81);
            OK(F(flatopt_optimizer_step)(a.opt));
        }
        model_free(&a);
    }

    /* ReduceOnPlateau driven by schedule_step_metric (PyTorch semantics). */
    {
        model a;
        flatopt_config c;
        flatopt_base_params cb;
        flatopt_schedule s;
        const double metrics[] = { 1.0, 0.5, 0.6, 0.7, 0.4, 0.45, 0.45, 0.45, 0.45 };
        const double want[] = { 0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025, 0.025, 0.0125 };
        size_t i;
        OK(F(flatopt_schedule_init)(&s, sizeof s, FLATOPT_SCHEDULE_REDUCE_ON_PLATEAU));
        s.base_lr = 0.1;
        s.factor = 0.5;
        s.patience = 1;
        OK(F(flatopt_config_init)(&c, sizeof c));
        OK(F(flatopt_base_params_init)(&cb, sizeof cb, FLATOPT_SGD));
        c.base = &cb;
        c.schedule = &s;
        model_init(&a, 1, len, 82);
        model_register(&a, &c);
        CHECK(current_lr(a.opt) == 0.1f, "plateau initial lr");
        for (i = 0; i < sizeof metrics / sizeof metrics[0]; i++) {
            float lr;
            OK(F(flatopt_optimizer_schedule_step_metric)(a.opt, metrics[i]));
            lr = current_lr(a.opt);
            CHECK(near_ulps(lr, (float)want[i], 1), "plateau after metric %lu (%g): lr %.9g, "
                  "expected %.9g", (unsigned long)i, metrics[i], (double)lr, want[i]);
            model_grads(&a, (int)i + 1, 82);
            OK(F(flatopt_optimizer_step)(a.opt));
            CHECK(current_lr(a.opt) == lr, "an update changed a plateau schedule's lr");
        }
        model_free(&a);
    }
}

/* Big enough for the library's thread pool to run: its threshold (PARALLEL_MIN_ELEMENTS in
 * src/engine.rs, 1 << 19 at the time of writing) is not visible through the C API. */
#define THREADED_LEN ((1 << 20) + 77)

static void test_threads(void)
{
    static const size_t lens[3] = { THREADED_LEN, 3, 1000 };
    model a, b, c2;
    flatopt_config c = cfg_la_adam(3, 30.0);
    uint32_t n = 0;
    int t;
    model_init(&a, 3, lens, 91);
    model_init(&b, 3, lens, 91);
    model_init(&c2, 3, lens, 91);
    model_register(&a, &c);
    c.num_threads = 2;
    model_register(&b, &c);
    c.num_threads = 1;
    model_register(&c2, &c);
    OK(F(flatopt_optimizer_num_threads)(b.opt, &n));
    CHECK(n == 2, "num_threads %u", (unsigned)n);
    for (t = 1; t <= 6; t++) {
        if (t == 3) {
            OK(F(flatopt_optimizer_set_num_threads)(c2.opt, 2));
            OK(F(flatopt_optimizer_num_threads)(c2.opt, &n));
            CHECK(n == 2, "num_threads after set_num_threads(2): %u", (unsigned)n);
        }
        model_grads(&a, t, 91);
        model_copy_grads(&b, &a);
        model_copy_grads(&c2, &a);
        OK(F(flatopt_optimizer_step)(a.opt));
        OK(F(flatopt_optimizer_step)(b.opt));
        OK(F(flatopt_optimizer_step)(c2.opt));
        model_same(&a, &b, 1, "2 threads (config) vs 1", t);
        model_same(&a, &c2, 1, "set_num_threads(2) vs 1", t);
    }
    OK(F(flatopt_optimizer_set_num_threads)(c2.opt, 1));
    OK(F(flatopt_optimizer_num_threads)(c2.opt, &n));
    CHECK(n == 1, "num_threads back to 1: %u", (unsigned)n);
    model_free(&a);
    model_free(&b);
    model_free(&c2);
}

static void test_reset(void)
{
    static const size_t lens[2] = { 12, 50 };
    model a, b;
    flatopt_config c = cfg_la_adam(2, 30.0);
    flatopt_schedule s;
    float lr0, *extra, *extra_g;
    size_t np = 0;
    int t, i;
    OK(F(flatopt_schedule_init)(&s, sizeof s, FLATOPT_SCHEDULE_EXPONENTIAL));
    s.base_lr = 0.02;
    c.schedule = &s;
    model_init(&a, 2, lens, 95);
    model_register(&a, &c);
    lr0 = current_lr(a.opt);
    for (t = 1; t <= 3; t++) {
        model_grads(&a, t, 95);
        OK(F(flatopt_optimizer_step)(a.opt));
    }
    OK(F(flatopt_optimizer_reset)(a.opt));
    CHECK(step_count(a.opt) == 0 && skipped_count(a.opt) == 0, "counters after reset");
    CHECK(current_lr(a.opt) == lr0, "schedule not reset");
    for (i = 0; i < 2; i++) {
        const float *sw = NULL;
        size_t n = 0;
        OK(F(flatopt_optimizer_slow_weights)(a.opt, (size_t)i, &sw, &n));
        CHECK(sw && n == lens[i] && same_bits(sw, a.p[i], n),
              "slow weights after reset are not the current params");
    }
    /* after reset: exactly a fresh optimizer registered with the current values */
    model_init(&b, 2, lens, 95);
    for (i = 0; i < 2; i++)
        memcpy(b.p[i], a.p[i], lens[i] * sizeof(float));
    model_register(&b, &c);
    for (t = 1; t <= 4; t++) {
        model_grads(&a, t + 10, 95);
        model_copy_grads(&b, &a);
        OK(F(flatopt_optimizer_step)(a.opt));
        OK(F(flatopt_optimizer_step)(b.opt));
        model_same(&a, &b, 1, "after reset vs fresh", t);
    }
    /* registration is allowed again after a reset */
    OK(F(flatopt_optimizer_reset)(a.opt));
    extra = falloc(5);
    extra_g = falloc(5);
    OK(F(flatopt_optimizer_add_param)(a.opt, extra, extra_g, 5));
    OK(F(flatopt_optimizer_num_params)(a.opt, &np));
    CHECK(np == 3 && total_len(a.opt) == 12 + 50 + 5, "registration after reset");
    OK(F(flatopt_optimizer_step)(a.opt));
    model_free(&a);
    model_free(&b);
    free(extra);
    free(extra_g);
}

static void test_registration_edges(void)
{
    flatopt_config c = cfg_la_adam(2, 0.0);
    flatopt_optimizer *o = new_opt(&c);
    float *p1 = falloc(6), *p2 = falloc(6), *g = falloc(6);
    size_t np = 0;
    fill(p1, 6, 1, 1.0f);
    fill(p2, 6, 2, 1.0f);
    fill(g, 6, 3, 1.0f);
    /* two params may share one (read-only) gradient buffer */
    OK(F(flatopt_optimizer_add_param)(o, p1, g, 6));
    OK(F(flatopt_optimizer_add_param)(o, p2, g, 6));
    /* an empty buffer is accepted and changes nothing */
    OK(F(flatopt_optimizer_add_param)(o, NULL, NULL, 0));
    OK(F(flatopt_optimizer_num_params)(o, &np));
    CHECK(np == 3 && total_len(o) == 12, "num_params %lu total %lu", (unsigned long)np,
          (unsigned long)total_len(o));
    OK(F(flatopt_optimizer_step)(o));
    OK(F(flatopt_optimizer_step)(o));
    CHECK(step_count(o) == 2, "steps with a shared gradient");
    F(flatopt_optimizer_free)(o);
    free(p1);
    free(p2);
    free(g);
}

/* The last error message is per thread. */
typedef struct tls_job {
    int fresh_empty;
    int status;
    char msg[256];
} tls_job;
static void *tls_worker(void *arg)
{
    tls_job *j = (tls_job *)arg;
    double d;
    const char *m = flatopt_last_error_message();
    j->fresh_empty = m != NULL && m[0] == 0;
    j->status = (int)flatopt_clip_scale(1.0, -5.5, &d);
    strncpy(j->msg, flatopt_last_error_message(), sizeof j->msg - 1);
    return NULL;
}
static void test_thread_local_message(void)
{
    pthread_t th;
    tls_job j;
    memset(&j, 0, sizeof j);
    EXPECT(F(flatopt_config_init)(NULL, sizeof(flatopt_config)), FLATOPT_ERR_NULL_POINTER);
    CHECK(pthread_create(&th, NULL, tls_worker, &j) == 0, "pthread_create");
    pthread_join(th, NULL);
    CHECK(j.fresh_empty, "a new thread's last error message is not empty");
    CHECK(j.status == FLATOPT_ERR_INVALID_ARGUMENT && strstr(j.msg, "max_norm") != NULL,
          "thread message \"%s\"", j.msg);
    CHECK(msg_has("config") && !msg_has("max_norm"),
          "main thread's message changed by another thread: \"%s\"", last_msg());
}

/* The header: "the gradient may be NULL if every step passes gradients with
 * flatopt_optimizer_step_with_grads". */
static void test_null_registered_grad(void)
{
    flatopt_config c = cfg_la_adam(2, 0.0);
    flatopt_optimizer *o = new_opt(&c), *ref = new_opt(&c);
    float *p = falloc(6), *pr = falloc(6), *g = falloc(6);
    const float *gs[1];
    flatopt_status st;
    int t;
    fill(p, 6, 1, 1.0f);
    memcpy(pr, p, 6 * sizeof(float));
    gs[0] = g;
    st = F(flatopt_optimizer_add_param)(o, p, NULL, 6);
    CHECK(st == FLATOPT_OK, "add_param with grad NULL: %s (%s)", status_name(st), last_msg());
    OK(F(flatopt_optimizer_add_param)(ref, pr, g, 6));
    if (st == FLATOPT_OK) {
        for (t = 1; t <= 3; t++) {
            fill(g, 6, 10 + (uint64_t)t, 1.0f);
            OK(F(flatopt_optimizer_step_with_grads)(o, gs, 1));
            OK(F(flatopt_optimizer_step)(ref));
            CHECK(same_bits(p, pr, 6), "NULL registered grad + step_with_grads, step %d", t);
        }
        /* the registered gradient is needed by step and begin_step */
        EXPECT(F(flatopt_optimizer_step)(o), FLATOPT_ERR_NULL_POINTER);
        CHECK(msg_has("grad"), "step with a NULL registered grad: \"%s\"", last_msg());
        EXPECT(F(flatopt_optimizer_begin_step)(o), FLATOPT_ERR_NULL_POINTER);
        CHECK(step_count(o) == 3, "failed steps counted");
        /* reset needs no gradient */
        OK(F(flatopt_optimizer_reset)(o));
    }
    F(flatopt_optimizer_free)(o);
    F(flatopt_optimizer_free)(ref);
    free(p);
    free(pr);
    free(g);
}

/* Checkpoints: save after a few updates (one skipped), restore into a fresh optimizer with the
 * saved parameters (other threads and SIMD tier), continue: bit-identical to never stopping. */
static void test_checkpoints(void)
{
    static const size_t lens[3] = { 9, 5000, 70 };
    model a, b, c2;
    flatopt_config c = cfg_la_adam(3, 30.0);
    flatopt_base_params cb;
    flatopt_schedule s;
    float *saved_p[3], lr_at_save;
    unsigned char *mem, *file;
    size_t size = 0, w = 0, fsize = 0;
    char path[600];
    FILE *fp;
    int i, t;

    OK(F(flatopt_schedule_init)(&s, sizeof s, FLATOPT_SCHEDULE_EXPONENTIAL));
    s.base_lr = 0.01;
    c.schedule = &s;
    OK(F(flatopt_base_params_init)(&cb, sizeof cb, FLATOPT_ADAM));
    cb.amsgrad = 1;
    c.base = &cb;
    model_init(&a, 3, lens, 101);
    model_register(&a, &c);
    for (t = 1; t <= 4; t++) {
        model_grads(&a, t, 101);
        if (t == 2)
            a.g[1][17] = NAN;
        EXPECT(F(flatopt_optimizer_step)(a.opt), t == 2 ? FLATOPT_SKIPPED : FLATOPT_OK);
    }
    OK(F(flatopt_optimizer_checkpoint_size)(a.opt, &size));
    mem = (unsigned char *)xmalloc(size + 100);
    OK(F(flatopt_optimizer_save)(a.opt, mem, size + 100, &w));
    CHECK(w == size, "save wrote %lu bytes, checkpoint_size %lu", (unsigned long)w,
          (unsigned long)size);
    CHECK(size > 40 && memcmp(mem, "FLATOPTC", 8) == 0, "checkpoint magic");
    CHECK(get_u64(mem + 16) == size, "checkpoint length field");
    CHECK(((uint32_t)mem[size - 4] | (uint32_t)mem[size - 3] << 8 |
           (uint32_t)mem[size - 2] << 16 | (uint32_t)mem[size - 1] << 24) ==
              crc32_ieee(mem, size - 4),
          "checkpoint CRC-32 is not zlib's crc32 of the preceding bytes");
    tmp_path(path, sizeof path, "a.ckpt");
    OK(F(flatopt_optimizer_save_file)(a.opt, path));
    OK(F(flatopt_optimizer_save_file)(a.opt, path)); /* overwriting is fine */
    fp = fopen(path, "rb");
    file = (unsigned char *)xmalloc(size + 100);
    if (CHECK(fp != NULL, "cannot open %s", path)) {
        fsize = fread(file, 1, size + 100, fp);
        fclose(fp);
    }
    CHECK(fsize == size && memcmp(file, mem, size) == 0,
          "save_file wrote something else than save (%lu bytes vs %lu)", (unsigned long)fsize,
          (unsigned long)size);
    lr_at_save = current_lr(a.opt);
    {
        /* The counters of the checkpoint itself (one snapshot), as the queries give them. */
        uint64_t ck_steps = 0, ck_skipped = 0, q_steps = 1, q_skipped = 1;
        float ck_lr = -1.0f;
        OK(F(flatopt_optimizer_checkpoint_info)(a.opt, mem, size, &ck_steps, &ck_skipped,
                                                &ck_lr));
        OK(F(flatopt_optimizer_step_count)(a.opt, &q_steps));
        OK(F(flatopt_optimizer_skipped_count)(a.opt, &q_skipped));
        CHECK(ck_steps == q_steps && ck_skipped == q_skipped && ck_skipped == 1 &&
                  ck_lr == lr_at_save,
              "checkpoint_info: %lu applied, %lu skipped, lr %g; the optimizer: %lu, %lu, %g",
              (unsigned long)ck_steps, (unsigned long)ck_skipped, (double)ck_lr,
              (unsigned long)q_steps, (unsigned long)q_skipped, (double)lr_at_save);
        OK(F(flatopt_optimizer_checkpoint_info)(a.opt, mem, size, NULL, NULL, NULL));
    }
    for (i = 0; i < 3; i++)
        saved_p[i] = fdup(a.p[i], lens[i]);

    /* b from memory (2 threads, scalar tier), c2 from the file (default tier) */
    model_init(&b, 3, lens, 101);
    model_init(&c2, 3, lens, 101);
    for (i = 0; i < 3; i++) {
        memcpy(b.p[i], saved_p[i], lens[i] * sizeof(float));
        memcpy(c2.p[i], saved_p[i], lens[i] * sizeof(float));
    }
    c.num_threads = 2;
    c.simd_tier = FLATOPT_SIMD_SCALAR;
    model_register(&b, &c);
    c.num_threads = 1;
    c.simd_tier = FLATOPT_SIMD_DEFAULT;
    model_register(&c2, &c);
    OK(F(flatopt_optimizer_load)(b.opt, mem, size));
    OK(F(flatopt_optimizer_load_file)(c2.opt, path));
    CHECK(step_count(b.opt) == 3 && skipped_count(b.opt) == 1 && step_count(c2.opt) == 3 &&
              skipped_count(c2.opt) == 1,
          "counters not restored: steps %lu skipped %lu", (unsigned long)step_count(b.opt),
          (unsigned long)skipped_count(b.opt));
    CHECK(current_lr(b.opt) == lr_at_save && current_lr(c2.opt) == lr_at_save,
          "schedule not restored: lr %.9g, saved %.9g", (double)current_lr(b.opt),
          (double)lr_at_save);
    model_same(&a, &b, 1, "right after load", 4);
    model_same(&a, &c2, 1, "right after load_file", 4);
    for (t = 5; t <= 10; t++) {
        model_grads(&a, t, 101);
        model_copy_grads(&b, &a);
        model_copy_grads(&c2, &a);
        OK(F(flatopt_optimizer_step)(a.opt));
        OK(F(flatopt_optimizer_step)(b.opt));
        OK(F(flatopt_optimizer_step)(c2.opt));
        model_same(&a, &b, 1, "after load (memory, 2 threads, scalar)", t);
        model_same(&a, &c2, 1, "after load_file", t);
    }
    /* loading rewinds: a back to the saved state continues like b did */
    for (i = 0; i < 3; i++)
        memcpy(a.p[i], saved_p[i], lens[i] * sizeof(float));
    OK(F(flatopt_optimizer_load)(a.opt, mem, size));
    CHECK(step_count(a.opt) == 3, "load did not rewind the step count");
    free(mem);
    free(file);
    for (i = 0; i < 3; i++)
        free(saved_p[i]);
    model_free(&a);
    model_free(&b);
    model_free(&c2);

    /* ReduceOnPlateau state travels too */
    {
        static const size_t len1[1] = { 4 };
        model p1, p2;
        flatopt_config pc;
        flatopt_schedule ps;
        const double metrics[] = { 1.0, 0.9, 0.95, 0.97, 0.99, 0.98 };
        size_t n = 0;
        unsigned char *ck;
        int k;
        OK(F(flatopt_schedule_init)(&ps, sizeof ps, FLATOPT_SCHEDULE_REDUCE_ON_PLATEAU));
        ps.base_lr = 0.1;
        ps.factor = 0.5;
        ps.patience = 1;
        ps.cooldown = 1;
        OK(F(flatopt_config_init)(&pc, sizeof pc));
        pc.schedule = &ps;
        model_init(&p1, 1, len1, 102);
        model_init(&p2, 1, len1, 102);
        model_register(&p1, &pc);
        model_register(&p2, &pc);
        for (k = 0; k < 3; k++)
            OK(F(flatopt_optimizer_schedule_step_metric)(p1.opt, metrics[k]));
        ck = ckpt_of(p1.opt, &n);
        OK(F(flatopt_optimizer_load)(p2.opt, ck, n));
        for (k = 3; k < 6; k++) {
            OK(F(flatopt_optimizer_schedule_step_metric)(p1.opt, metrics[k]));
            OK(F(flatopt_optimizer_schedule_step_metric)(p2.opt, metrics[k]));
            CHECK(current_lr(p1.opt) == current_lr(p2.opt),
                  "plateau after load: lr %.9g vs %.9g", (double)current_lr(p2.opt),
                  (double)current_lr(p1.opt));
        }
        CHECK(current_lr(p1.opt) < 0.1f, "the plateau test data should reduce the lr");
        free(ck);
        model_free(&p1);
        model_free(&p2);
    }
}

/* After the whole run the temporary directory holds only the files the tests named: atomic
 * saves leave no temporary files behind, also when they fail. */
static void check_tmpdir_clean(void)
{
    static const char *const known[] = { ".", "..", "subdir", "garbage.ckpt", "a.ckpt",
                                         "fixture.ckpt", "nola.ckpt", "pending.ckpt" };
    DIR *d = opendir(g_tmpdir);
    struct dirent *e;
    size_t k;
    if (!CHECK(d != NULL, "cannot list %s", g_tmpdir))
        return;
    while ((e = readdir(d)) != NULL) {
        int ok = 0;
        for (k = 0; k < sizeof known / sizeof known[0]; k++)
            ok |= strcmp(e->d_name, known[k]) == 0;
        CHECK(ok, "unexpected file left in the temporary directory: %s", e->d_name);
    }
    closedir(d);
}

static void tmpdir_create(void)
{
    const char *base = getenv("TMPDIR");
    char path[600];
    FILE *fp;
    snprintf(g_tmpdir, sizeof g_tmpdir, "%s/flatopt_test_api.XXXXXX",
             base && *base ? base : "/tmp");
    if (!mkdtemp(g_tmpdir)) {
        perror(g_tmpdir);
        exit(2);
    }
    tmp_path(path, sizeof path, "subdir");
    if (mkdir(path, 0700) != 0) {
        perror(path);
        exit(2);
    }
    tmp_path(path, sizeof path, "garbage.ckpt");
    fp = fopen(path, "wb");
    if (!fp) {
        perror(path);
        exit(2);
    }
    fputs("this is not a checkpoint, but it is long enough to be read as one........\n", fp);
    fclose(fp);
}

static void tmpdir_remove(void)
{
    static const char *const files[] = { "garbage.ckpt", "a.ckpt", "fixture.ckpt", "nola.ckpt",
                                         "pending.ckpt" };
    char path[600];
    size_t k;
    for (k = 0; k < sizeof files / sizeof files[0]; k++) {
        tmp_path(path, sizeof path, files[k]);
        remove(path);
    }
    tmp_path(path, sizeof path, "subdir");
    rmdir(path);
    rmdir(g_tmpdir);
}

/* ------------------------------------------------------------------------------------------ */

static void stage(const char *name)
{
    printf("test_api: %s\n", name);
    fflush(stdout);
}

/* Sharded training through the two-phase API: three optimizers owning block-aligned shards of
 * one flat buffer, exchanging block partials, step bit-identically with one optimizer over the
 * whole buffer; a NaN in one shard skips the step on every shard. */
static void test_sharded(void)
{
    enum { N = 3 * 4096 + 77, SHARDS = 3, STEPS = 12 };
    const size_t cut[SHARDS + 1] = { 0, 4096, 2 * 4096, N };
    flatopt_config c;
    flatopt_optimizer *whole, *shard[SHARDS];
    float *p = (float *)xmalloc(N * sizeof(float)), *q = (float *)xmalloc(N * sizeof(float));
    float *g = (float *)xmalloc(N * sizeof(float));
    double partials[8], bad[8];
    size_t i, k, nb[SHARDS], total_blocks = 0;
    int t;
    CHECK(F(flatopt_sum_squares_block_size)() == 4096, "block size");
    OK(F(flatopt_config_init)(&c, sizeof c));
    c.lookahead = 1;
    c.sync_period = 3;
    c.grad_clip_norm = 5.0; /* binds: the gradient norm is about 30 */
    c.weight_decay = 1e-3;
    for (i = 0; i < N; i++)
        p[i] = q[i] = (float)sin(0.37 * (double)i);
    whole = new_opt(&c);
    OK(F(flatopt_optimizer_add_param)(whole, p, g, N));
    for (k = 0; k < SHARDS; k++) {
        shard[k] = new_opt(&c);
        OK(F(flatopt_optimizer_add_param)(shard[k], q + cut[k], g + cut[k], cut[k + 1] - cut[k]));
        OK(F(flatopt_optimizer_sum_squares_block_count)(shard[k], &nb[k]));
        total_blocks += nb[k];
    }
    CHECK(total_blocks == 4 && nb[0] == 1 && nb[2] == 2, "block counts %lu", (unsigned long)total_blocks);
    for (t = 0; t < STEPS; t++) {
        double sum = 0.0;
        size_t at = 0;
        for (i = 0; i < N; i++)
            g[i] = (float)cos(0.11 * (double)i * (t + 1));
        if (t == 5)
            g[2 * 4096 + 3] = NAN; /* in the last shard only */
        for (k = 0; k < SHARDS; k++) {
            OK(F(flatopt_optimizer_sum_squares_partials)(shard[k], partials + at, nb[k]));
            at += nb[k];
        }
        for (i = 0; i < total_blocks; i++) /* global block order, from 0.0: as one process */
            sum += partials[i];
        EXPECT(F(flatopt_optimizer_step)(whole), t == 5 ? FLATOPT_SKIPPED : FLATOPT_OK);
        for (k = 0; k < SHARDS; k++) {
            EXPECT(F(flatopt_optimizer_step_with_sum_squares)(shard[k], sum),
                   t == 5 ? FLATOPT_SKIPPED : FLATOPT_OK);
            if (t == 5 && k == 0)
                CHECK(msg_has("another shard"), "skip message: \"%s\"", last_msg());
        }
        CHECK(same_bits(p, q, N), "sharded run differs from one process at step %d", t + 1);
    }
    CHECK(step_count(shard[1]) == STEPS - 1 && skipped_count(shard[2]) == 1, "shard counters");
    /* bad inputs: nothing written */
    for (i = 0; i < 8; i++)
        bad[i] = -1.0;
    EXPECT(F(flatopt_optimizer_sum_squares_partials)(shard[2], NULL, 2), FLATOPT_ERR_NULL_POINTER);
    CHECK(msg_has("partials"), "%s", last_msg());
    EXPECT(F(flatopt_optimizer_sum_squares_partials)(shard[2], bad, 3),
           FLATOPT_ERR_LENGTH_MISMATCH);
    CHECK(bad[0] == -1.0 && bad[2] == -1.0, "partials written on error");
    EXPECT(F(flatopt_optimizer_sum_squares_partials)(NULL, bad, 2), FLATOPT_ERR_NULL_POINTER);
    EXPECT(F(flatopt_optimizer_sum_squares_block_count)(shard[0], NULL), FLATOPT_ERR_NULL_POINTER);
    EXPECT(F(flatopt_optimizer_step_with_sum_squares)(NULL, 1.0), FLATOPT_ERR_NULL_POINTER);
    F(flatopt_optimizer_free)(whole);
    for (k = 0; k < SHARDS; k++)
        F(flatopt_optimizer_free)(shard[k]);
    free(p);
    free(q);
    free(g);
}

/* Sharded LAMB (a trust ratio per buffer, the buffer spread over 3 shards) with int8 state:
 * the global sum, then each shard's norm partials (two per block), whose even and odd values
 * are added in global block order from 0.0, then the update with the two totals: bit for bit
 * one process. Bad inputs are refused. */
static void test_sharded_per_buffer_norms(void)
{
    enum { N = 3 * 4096 + 77, SHARDS = 3, STEPS = 8 };
    const size_t cut[SHARDS + 1] = { 0, 4096, 2 * 4096, N };
    flatopt_config c;
    flatopt_base_params hp;
    flatopt_optimizer *whole, *shard[SHARDS];
    float *p = (float *)xmalloc(N * sizeof(float)), *q = (float *)xmalloc(N * sizeof(float));
    float *g = (float *)xmalloc(N * sizeof(float));
    double partials[8], np[16], norms[2], bad[2] = { 1.0, -1.0 };
    size_t i, k, nb[SHARDS];
    int t;
    OK(F(flatopt_base_params_init)(&hp, sizeof hp, FLATOPT_LAMB));
    hp.decoupled_weight_decay = 0.01;
    OK(F(flatopt_config_init)(&c, sizeof c));
    c.base = &hp;
    c.lr = 0.01;
    c.grad_clip_norm = 5.0;
    c.state_dtype = FLATOPT_STATE_INT8;
    for (i = 0; i < N; i++)
        p[i] = q[i] = (float)sin(0.37 * (double)i);
    whole = new_opt(&c);
    OK(F(flatopt_optimizer_add_param)(whole, p, g, N));
    for (k = 0; k < SHARDS; k++) {
        c.state_index_offset = cut[k];
        shard[k] = new_opt(&c);
        OK(F(flatopt_optimizer_add_param)(shard[k], q + cut[k], g + cut[k], cut[k + 1] - cut[k]));
        OK(F(flatopt_optimizer_sum_squares_block_count)(shard[k], &nb[k]));
    }
    for (t = 0; t < STEPS; t++) {
        double sum = 0.0;
        size_t at = 0, j;
        for (i = 0; i < N; i++)
            g[i] = (float)cos(0.11 * (double)i * (t + 1));
        for (k = 0; k < SHARDS; k++) {
            OK(F(flatopt_optimizer_sum_squares_partials)(shard[k], partials + at, nb[k]));
            at += nb[k];
        }
        for (j = 0; j < at; j++)
            sum += partials[j];
        at = 0;
        for (k = 0; k < SHARDS; k++) {
            OK(F(flatopt_optimizer_norm_partials)(shard[k], sum, np + at, 2 * nb[k]));
            at += 2 * nb[k];
        }
        norms[0] = norms[1] = 0.0;
        for (j = 0; j < at; j += 2) {
            norms[0] += np[j];
            norms[1] += np[j + 1];
        }
        OK(F(flatopt_optimizer_step)(whole));
        for (k = 0; k < SHARDS; k++)
            OK(F(flatopt_optimizer_step_with_norms)(shard[k], sum, norms, 2));
        CHECK(same_bits(p, q, N), "sharded LAMB differs from one process at step %d", t + 1);
    }
    EXPECT(F(flatopt_optimizer_step_with_norms)(shard[0], 1.0, bad, 2),
           FLATOPT_ERR_INVALID_ARGUMENT);
    CHECK(msg_has("norms"), "%s", last_msg());
    EXPECT(F(flatopt_optimizer_step_with_norms)(shard[0], 1.0, norms, 3),
           FLATOPT_ERR_LENGTH_MISMATCH);
    EXPECT(F(flatopt_optimizer_step_with_norms)(shard[0], 1.0, NULL, 2), FLATOPT_ERR_NULL_POINTER);
    EXPECT(F(flatopt_optimizer_norm_partials)(shard[0], 1.0, np, 3), FLATOPT_ERR_LENGTH_MISMATCH);
    EXPECT(F(flatopt_optimizer_norm_partials)(NULL, 1.0, np, 2), FLATOPT_ERR_NULL_POINTER);
    CHECK(step_count(shard[0]) == STEPS, "no step counted on a refusal");
    F(flatopt_optimizer_free)(whole);
    for (k = 0; k < SHARDS; k++)
        F(flatopt_optimizer_free)(shard[k]);
    free(p);
    free(q);
    free(g);
}

/* Parameter groups: the AdamW recipe (decay on the weights in group 0, none on the biases in
 * group 1, which also take twice the learning rate). Without clipping by norm the groups do
 * not interact, so the biases step bit for bit as an AdamW optimizer of their own with the
 * group's hyperparameters; changed values apply from the next step; checkpoints carry the
 * groups and refuse an optimizer with other groups. */
static void test_groups(void)
{
    enum { NW = 40, NB = 8 };
    float w[NW], wg[NW], bias[NB], bg[NB], rb[NB];
    flatopt_config c, rc;
    flatopt_base_params b = FLATOPT_BASE_PARAMS_INIT(FLATOPT_ADAMW), rbp, got;
    flatopt_group_options o;
    flatopt_optimizer *opt, *ref, *again, *other;
    size_t g = 0, n = 0, w_len = 0, n_groups = 0;
    double d = 0.0;
    float f = 0.0f;
    unsigned char *ck;
    int t;
    fill(w, NW, 60, 1.0f);
    fill(wg, NW, 61, 1.0f);
    fill(bias, NB, 62, 1.0f);
    fill(bg, NB, 63, 1.0f);
    memcpy(rb, bias, sizeof rb);

    OK(F(flatopt_config_init)(&c, sizeof c));
    b.decoupled_weight_decay = 0.1;
    c.base = &b;
    c.lr = 1e-2;
    opt = new_opt(&c);
    OK(F(flatopt_group_options_init)(&o, sizeof o));
    CHECK(isnan(o.lr) && isnan(o.weight_decay) && o.base == NULL, "group options defaults");
    o.weight_decay = 0.0;
    o.lr = 2e-2;
    OK(F(flatopt_optimizer_add_group)(opt, &o, &g));
    CHECK(g == 1, "the first added group is 1, got %lu", (unsigned long)g);
    OK(F(flatopt_optimizer_add_param)(opt, w, wg, NW));
    OK(F(flatopt_optimizer_add_param_to_group)(opt, g, bias, bg, NB));

    rc = c;
    rbp = b;
    rbp.decoupled_weight_decay = 0.0;
    rc.base = &rbp;
    rc.lr = 2e-2;
    ref = new_opt(&rc);
    OK(F(flatopt_optimizer_add_param)(ref, rb, bg, NB));

    OK(F(flatopt_optimizer_num_groups)(opt, &n_groups));
    CHECK(n_groups == 2, "num_groups %lu", (unsigned long)n_groups);
    OK(F(flatopt_optimizer_param_group)(opt, 1, &n));
    CHECK(n == 1, "buffer 1 in group %lu", (unsigned long)n);
    OK(F(flatopt_optimizer_group_lr)(opt, 0, &d));
    CHECK(isnan(d), "group 0 follows the schedule: %g", d);
    OK(F(flatopt_optimizer_group_lr)(opt, 1, &d));
    CHECK(d == 2e-2, "group 1 lr %g", d);
    OK(F(flatopt_optimizer_group_weight_decay)(opt, 0, &d));
    CHECK(d == 0.1, "group 0 weight decay %g", d);
    OK(F(flatopt_optimizer_group_weight_decay)(opt, 1, &d));
    CHECK(d == 0.0, "group 1 weight decay %g", d);
    OK(F(flatopt_optimizer_group_current_lr)(opt, 1, &f));
    CHECK(f == (float)2e-2, "group 1 current lr %g", (double)f);
    OK(F(flatopt_optimizer_group_current_lr_exact)(opt, 1, &d));
    CHECK(d == 2e-2, "group 1 exact current lr %g", d);
    OK(F(flatopt_optimizer_group_base_params)(opt, 1, &got, sizeof got));
    CHECK(got.struct_size == sizeof got && got.kind == FLATOPT_ADAMW && got.b1 == 0.9 &&
              got.decoupled_weight_decay == 0.0,
          "group 1 base params");

    for (t = 0; t < 9; t++) {
        fill(wg, NW, 70 + (unsigned)t, 1.0f);
        fill(bg, NB, 80 + (unsigned)t, 1.0f);
        if (t == 3) {
            /* The schedulers' per-epoch write: effective from the next step. */
            OK(F(flatopt_optimizer_set_group_lr)(opt, 1, 5e-3));
            OK(F(flatopt_optimizer_set_group_lr)(ref, 0, 5e-3));
        }
        if (t == 5) {
            OK(F(flatopt_optimizer_set_group_weight_decay)(opt, 1, 0.05));
            OK(F(flatopt_optimizer_set_group_weight_decay)(ref, 0, 0.05));
        }
        for (size_t gi = 0; gi < 2; gi++) {
            /* The kernels apply the f32 rounding of the exact (f64) rate. */
            OK(F(flatopt_optimizer_group_current_lr)(opt, gi, &f));
            OK(F(flatopt_optimizer_group_current_lr_exact)(opt, gi, &d));
            CHECK(f == (float)d && d > 0.0, "group %lu step %d: current lr %g, exact %.17g",
                  (unsigned long)gi, t, (double)f, d);
        }
        OK(F(flatopt_optimizer_step)(opt));
        OK(F(flatopt_optimizer_step)(ref));
        CHECK_BITS(bias, rb, NB, "group 1 vs its own optimizer, step %d", t);
    }

    /* A checkpoint restores the groups' live values into an optimizer with the same groups. */
    OK(F(flatopt_optimizer_checkpoint_size)(opt, &n));
    ck = (unsigned char *)xmalloc(n);
    OK(F(flatopt_optimizer_save)(opt, ck, n, &w_len));
    again = new_opt(&c);
    OK(F(flatopt_optimizer_add_group)(again, NULL, &g));
    OK(F(flatopt_optimizer_add_param)(again, w, wg, NW));
    OK(F(flatopt_optimizer_add_param_to_group)(again, g, bias, bg, NB));
    OK(F(flatopt_optimizer_load)(again, ck, w_len));
    OK(F(flatopt_optimizer_group_lr)(again, 1, &d));
    CHECK(d == 5e-3, "restored group 1 lr %g", d);
    OK(F(flatopt_optimizer_set_group_lr)(again, 1, NAN));
    OK(F(flatopt_optimizer_group_lr)(again, 1, &d));
    CHECK(isnan(d), "NaN: group 1 follows the schedule again (%g)", d);
    other = new_opt(&c);
    OK(F(flatopt_optimizer_add_param)(other, w, wg, NW));
    OK(F(flatopt_optimizer_add_param)(other, bias, bg, NB));
    EXPECT(F(flatopt_optimizer_load)(other, ck, w_len), FLATOPT_ERR_INVALID_ARGUMENT);
    CHECK(strstr(last_msg(), "parameter groups") != NULL, "message: %s", last_msg());
    free(ck);
    F(flatopt_optimizer_free)(opt);
    F(flatopt_optimizer_free)(ref);
    F(flatopt_optimizer_free)(again);
    F(flatopt_optimizer_free)(other);
}

/* Mixed precision. An optimizer with bf16 gradients and a bf16 copy steps bit for bit as an f32
 * optimizer given the widened gradients, and its copy is the narrowed parameters after
 * registration and every update, through every step variant (step, step_mixed with given
 * gradients, the split step, the sharded step); fp16 gradients divided by a power-of-two and an
 * other scale; the dynamic loss scaler's rules and its checkpoint; the stateless conversions
 * (every 16-bit pattern) and update. */
static void widen_all(uint32_t dtype, const uint16_t *h, float *f, size_t n)
{
    OK(F(flatopt_widen_to_f32)(dtype, h, f, n));
}

static int copy_is_narrowed(uint32_t dtype, const float *p, const uint16_t *c, size_t n)
{
    uint16_t *want = halloc(n);
    int same;
    OK(F(flatopt_narrow_from_f32)(dtype, p, want, n));
    same = memcmp(want, c, n * sizeof(uint16_t)) == 0;
    free(want);
    return same;
}

static void test_mixed_variants(void)
{
    enum { N = 2 * 4096 + 301, STEPS = 8 };
    flatopt_config c = cfg_la_adam(3, 40.0);
    flatopt_param_options o = FLATOPT_PARAM_OPTIONS_INIT;
    flatopt_optimizer *a, *b;
    float *pa = falloc(N), *pb = falloc(N), *gf = falloc(N);
    uint16_t *gh = halloc(N), *gh2 = halloc(N), *copy = halloc(N);
    const void *given[1];
    size_t nb = 0, i;
    double partials[4], sum;
    int t;
    fill(pa, N, 61, 1.0f);
    memcpy(pb, pa, N * sizeof(float));
    a = new_opt(&c);
    b = new_opt(&c);
    o.grad_dtype = FLATOPT_DTYPE_BF16;
    o.copy = copy;
    o.copy_dtype = FLATOPT_DTYPE_BF16;
    OK(F(flatopt_optimizer_add_param_with_options)(a, pa, gh, N, &o));
    OK(F(flatopt_optimizer_add_param)(b, pb, gf, N));
    CHECK(copy_is_narrowed(FLATOPT_DTYPE_BF16, pa, copy, N), "copy after registration");
    OK(F(flatopt_optimizer_sum_squares_block_count)(a, &nb));
    CHECK(nb == 3, "block count %lu", (unsigned long)nb);
    for (t = 0; t < STEPS; t++) {
        float *f = falloc(N);
        fill(f, N, 70 + (uint64_t)t, 3.0f);
        if (t == 6)
            f[4097] = INFINITY; /* skipped on both */
        OK(F(flatopt_narrow_from_f32)(FLATOPT_DTYPE_BF16, f, gh, N));
        memcpy(gh2, gh, N * sizeof(uint16_t));
        widen_all(FLATOPT_DTYPE_BF16, gh, gf, N);
        free(f);
        switch (t % 4) {
        case 0:
            EXPECT(F(flatopt_optimizer_step)(a), t == 6 ? FLATOPT_SKIPPED : FLATOPT_OK);
            break;
        case 1:
            given[0] = gh2;
            EXPECT(F(flatopt_optimizer_step_mixed)(a, given, 1, 0.0f),
                   t == 6 ? FLATOPT_SKIPPED : FLATOPT_OK);
            break;
        case 2:
            EXPECT(F(flatopt_optimizer_begin_step)(a), t == 6 ? FLATOPT_SKIPPED : FLATOPT_OK);
            if (t != 6) {
                OK(F(flatopt_optimizer_step_range)(a, 5000, N));
                OK(F(flatopt_optimizer_step_range)(a, 0, 5000));
                OK(F(flatopt_optimizer_end_step)(a));
            }
            break;
        default:
            OK(F(flatopt_optimizer_sum_squares_partials)(a, partials, nb));
            sum = 0.0;
            for (i = 0; i < nb; i++)
                sum += partials[i];
            EXPECT(F(flatopt_optimizer_step_with_sum_squares)(a, sum),
                   t == 6 ? FLATOPT_SKIPPED : FLATOPT_OK);
        }
        EXPECT(F(flatopt_optimizer_step)(b), t == 6 ? FLATOPT_SKIPPED : FLATOPT_OK);
        CHECK_BITS(pa, pb, N, "bf16 gradients vs widened f32 ones, step %d (variant %d)", t + 1,
                   t % 4);
        CHECK(copy_is_narrowed(FLATOPT_DTYPE_BF16, pa, copy, N), "copy after step %d", t + 1);
    }
    /* A reset rewrites the copy from the parameters (here: after the host changed them). */
    pa[7] = 3.0f;
    OK(F(flatopt_optimizer_reset)(a));
    CHECK(copy_is_narrowed(FLATOPT_DTYPE_BF16, pa, copy, N), "copy after reset");
    F(flatopt_optimizer_free)(a);
    F(flatopt_optimizer_free)(b);
    free(pa);
    free(pb);
    free(gf);
    free(gh);
    free(gh2);
    free(copy);
}

/* fp16 gradients divided by a scale (a power of two, then 1000) vs f32 gradients divided in C;
 * the dynamic loss scaler's rules (growth, backoff and a skipped update with nothing
 * changed); its state through a checkpoint (format 3). */
static void test_mixed_scaling(void)
{
    enum { N = 1000 };
    flatopt_config c;
    flatopt_param_options o = FLATOPT_PARAM_OPTIONS_INIT;
    flatopt_loss_scaler_options so = FLATOPT_LOSS_SCALER_OPTIONS_INIT;
    flatopt_optimizer *a, *b, *d, *s, *q;
    float *pa = falloc(N), *pb = falloc(N), *pd = falloc(N), *gf = falloc(N), *keep = falloc(N);
    float *ps = falloc(N), *pq = falloc(N);
    uint16_t *gh = halloc(N), *ca = halloc(N), *cd = halloc(N), *keepc = halloc(N);
    uint16_t *cs = halloc(N), *cq = halloc(N), *decoy = halloc(N);
    const void *given[1];
    float scale = 0.0f, scales[] = { 1024.0f, 1000.0f, 0.75f };
    uint32_t tracker = 99, found = 99;
    unsigned char *ck;
    size_t n = 0, w = 0, i;
    int t;
    OK(F(flatopt_config_init)(&c, sizeof c));
    c.lr = 0.01;
    c.grad_clip_norm = 1.0;
    fill(pa, N, 80, 1.0f);
    memcpy(pb, pa, N * sizeof(float));
    memcpy(ps, pa, N * sizeof(float));
    memcpy(pq, pa, N * sizeof(float));
    a = new_opt(&c);
    b = new_opt(&c);
    s = new_opt(&c);
    q = new_opt(&c);
    o.grad_dtype = FLATOPT_DTYPE_F16;
    o.copy = ca;
    o.copy_dtype = FLATOPT_DTYPE_F16;
    OK(F(flatopt_optimizer_add_param_with_options)(a, pa, gh, N, &o));
    o.copy = cs;
    OK(F(flatopt_optimizer_add_param_with_options)(s, ps, gh, N, &o));
    /* q's registered gradients are a decoy: its steps pass gh to begin_step_mixed. */
    {
        float *f = falloc(N);
        fill(f, N, 89, 3.0f);
        OK(F(flatopt_narrow_from_f32)(FLATOPT_DTYPE_F16, f, decoy, N));
        free(f);
    }
    o.copy = cq;
    OK(F(flatopt_optimizer_add_param_with_options)(q, pq, decoy, N, &o));
    given[0] = gh;
    OK(F(flatopt_optimizer_add_param)(b, pb, gf, N));
    for (t = 0; t < 3; t++) {
        float *f = falloc(N);
        fill(f, N, 90 + (uint64_t)t, 500.0f);
        OK(F(flatopt_narrow_from_f32)(FLATOPT_DTYPE_F16, f, gh, N));
        widen_all(FLATOPT_DTYPE_F16, gh, gf, N);
        for (i = 0; i < N; i++)
            gf[i] = gf[i] / scales[t];
        free(f);
        OK(F(flatopt_optimizer_step_mixed)(a, NULL, 0, scales[t]));
        OK(F(flatopt_optimizer_step)(b));
        CHECK_BITS(pa, pb, N, "fp16 gradients / %g vs f32 ones divided in C", (double)scales[t]);
        CHECK(copy_is_narrowed(FLATOPT_DTYPE_F16, pa, ca, N), "fp16 copy, scale %g",
              (double)scales[t]);
        /* The split step with the same scale: the same bits. */
        OK(F(flatopt_optimizer_begin_step_scaled)(s, scales[t]));
        OK(F(flatopt_optimizer_step_range)(s, 377, N));
        OK(F(flatopt_optimizer_step_range)(s, 0, 377));
        OK(F(flatopt_optimizer_end_step)(s));
        CHECK_BITS(ps, pa, N, "split step / %g vs the whole one", (double)scales[t]);
        CHECK(memcmp(cs, ca, N * sizeof(uint16_t)) == 0, "split step copy, scale %g",
              (double)scales[t]);
        /* The split step with gradients passed for it: its ranges read them, not the
         * registered ones; the pointer array may change after begin_step_mixed. */
        OK(F(flatopt_optimizer_begin_step_mixed)(q, given, 1, scales[t]));
        given[0] = decoy;
        OK(F(flatopt_optimizer_step_range)(q, 512, N));
        OK(F(flatopt_optimizer_step_range)(q, 0, 512));
        OK(F(flatopt_optimizer_end_step)(q));
        given[0] = gh;
        CHECK_BITS(pq, pa, N, "split step with given gradients / %g vs the whole one",
                   (double)scales[t]);
        CHECK(memcmp(cq, ca, N * sizeof(uint16_t)) == 0, "split step with given gradients: "
              "copy, scale %g", (double)scales[t]);
    }
    {
        /* An fp16 overflow (+Inf) skips both alike, changing nothing. */
        float *f = falloc(N);
        fill(f, N, 97, 500.0f);
        f[5] = 1e6f;
        OK(F(flatopt_narrow_from_f32)(FLATOPT_DTYPE_F16, f, gh, N));
        free(f);
        memcpy(keep, ps, N * sizeof(float));
        memcpy(keepc, cs, N * sizeof(uint16_t));
        EXPECT(F(flatopt_optimizer_step_mixed)(a, NULL, 0, 256.0f), FLATOPT_SKIPPED);
        EXPECT(F(flatopt_optimizer_begin_step_scaled)(s, 256.0f), FLATOPT_SKIPPED);
        CHECK(msg_has("non-finite"), "split skip message: \"%s\"", last_msg());
        CHECK(same_bits(keep, ps, N) && memcmp(keepc, cs, N * sizeof(uint16_t)) == 0,
              "a skipped split step changed the parameters or the copy");
        CHECK(skipped_count(s) == 1 && skipped_count(a) == 1, "skipped counts %llu %llu",
              (unsigned long long)skipped_count(s), (unsigned long long)skipped_count(a));
        EXPECT(F(flatopt_optimizer_step_range)(s, 0, N), FLATOPT_ERR_INVALID_STATE);
        CHECK_BITS(ps, pa, N, "after the skipped step");
    }

    /* The dynamic loss scaler: scale 2^10, growth every 2 finite updates. */
    so.init_scale = 1024.0f;
    so.growth_interval = 2;
    OK(F(flatopt_optimizer_set_loss_scaler)(a, &so));
    OK(F(flatopt_optimizer_loss_scaler_state)(a, &scale, &tracker, &found));
    CHECK(scale == 1024.0f && tracker == 0 && found == 0, "fresh scaler %g %u %u",
          (double)scale, tracker, found);
    EXPECT(F(flatopt_optimizer_step_mixed)(a, NULL, 0, 2.0f), FLATOPT_ERR_INVALID_ARGUMENT);
    for (t = 0; t < 5; t++) {
        float want_scale[] = { 1024.0f, 2048.0f, 1024.0f, 1024.0f, 2048.0f };
        uint32_t want_tracker[] = { 1, 0, 0, 1, 0 };
        float *f = falloc(N);
        uint64_t skipped_before = skipped_count(a);
        fill(f, N, 100 + (uint64_t)t, 1000.0f);
        if (t == 2)
            f[3] = 1e6f; /* fp16 overflow: +Inf */
        OK(F(flatopt_narrow_from_f32)(FLATOPT_DTYPE_F16, f, gh, N));
        free(f);
        OK(F(flatopt_optimizer_loss_scaler_state)(a, &scale, NULL, NULL));
        widen_all(FLATOPT_DTYPE_F16, gh, gf, N);
        for (i = 0; i < N; i++)
            gf[i] = gf[i] / scale;
        memcpy(keep, pa, N * sizeof(float));
        memcpy(keepc, ca, N * sizeof(uint16_t));
        EXPECT(F(flatopt_optimizer_step)(a), t == 2 ? FLATOPT_SKIPPED : FLATOPT_OK);
        if (t == 2) {
            CHECK(msg_has("non-finite"), "skip message: \"%s\"", last_msg());
            CHECK(same_bits(keep, pa, N) && memcmp(keepc, ca, N * sizeof(uint16_t)) == 0,
                  "a skipped update changed the parameters or the copy");
            CHECK(skipped_count(a) == skipped_before + 1, "skipped count");
        } else {
            OK(F(flatopt_optimizer_step)(b));
            CHECK_BITS(pa, pb, N, "dynamic scale, update %d", t + 1);
        }
        OK(F(flatopt_optimizer_loss_scaler_state)(a, &scale, &tracker, &found));
        CHECK(scale == want_scale[t] && tracker == want_tracker[t] && found == (t == 2),
              "after update %d: scale %g (want %g), tracker %u (want %u), found_inf %u", t + 1,
              (double)scale, (double)want_scale[t], tracker, want_tracker[t], found);
    }

    /* The scaler in checkpoints: format 3, restored; refused without a scaler. */
    OK(F(flatopt_optimizer_checkpoint_size)(a, &n));
    ck = (unsigned char *)xmalloc(n);
    OK(F(flatopt_optimizer_save)(a, ck, n, &w));
    CHECK(w == n && ck[8] == 3, "format version %u", (unsigned)ck[8]);
    memcpy(pd, pa, N * sizeof(float));
    d = new_opt(&c);
    o.copy = cd;
    OK(F(flatopt_optimizer_add_param_with_options)(d, pd, gh, N, &o));
    EXPECT(F(flatopt_optimizer_load)(d, ck, n), FLATOPT_ERR_INVALID_ARGUMENT);
    CHECK(msg_has("loss scaler"), "%s", last_msg());
    so.init_scale = 8.0f;
    OK(F(flatopt_optimizer_set_loss_scaler)(d, &so));
    OK(F(flatopt_optimizer_load)(d, ck, n));
    CHECK(copy_is_narrowed(FLATOPT_DTYPE_F16, pd, cd, N), "copy after load");
    OK(F(flatopt_optimizer_loss_scaler_state)(d, &scale, &tracker, &found));
    CHECK(scale == 2048.0f && tracker == 0 && found == 0, "loaded scaler %g %u %u",
          (double)scale, tracker, found);
    for (t = 0; t < 3; t++) {
        OK(F(flatopt_optimizer_step)(a));
        OK(F(flatopt_optimizer_step)(d));
    }
    CHECK_BITS(pa, pd, N, "resumed from a format-3 checkpoint");
    CHECK(memcmp(ca, cd, N * sizeof(uint16_t)) == 0, "resumed copies");
    OK(F(flatopt_optimizer_set_loss_scaler_state)(d, 4.0f, 1));
    OK(F(flatopt_optimizer_loss_scaler_state)(d, &scale, &tracker, NULL));
    CHECK(scale == 4.0f && tracker == 1, "restored scaler state");
    OK(F(flatopt_optimizer_set_loss_scaler)(d, NULL));
    EXPECT(F(flatopt_optimizer_loss_scaler_state)(d, &scale, NULL, NULL), FLATOPT_ERR_INVALID_STATE);
    /* After the steps with given gradients, a step without given gradients reads the registered ones again. */
    memcpy(keep, pq, N * sizeof(float));
    OK(F(flatopt_optimizer_begin_step_mixed)(q, NULL, 0, 0.0f));
    OK(F(flatopt_optimizer_step_range)(q, 0, N));
    OK(F(flatopt_optimizer_end_step)(q));
    OK(F(flatopt_optimizer_step_mixed)(s, (const void *const *)&decoy, 1, 0.0f));
    CHECK_BITS(pq, ps, N, "begin_step_mixed(NULL): the registered (decoy) gradients");
    CHECK(!same_bits(keep, pq, N), "the decoy step changed nothing");
    free(ck);
    F(flatopt_optimizer_free)(a);
    F(flatopt_optimizer_free)(b);
    F(flatopt_optimizer_free)(d);
    F(flatopt_optimizer_free)(s);
    F(flatopt_optimizer_free)(q);
    free(ps);
    free(cs);
    free(pq);
    free(cq);
    free(decoy);
    free(pa);
    free(pb);
    free(pd);
    free(gf);
    free(keep);
    free(gh);
    free(ca);
    free(cd);
    free(keepc);
}

/* Every 16-bit pattern widened: bf16 is the upper half of the f32; narrowing a widened value
 * gives it back (NaN: a NaN of the same sign). The stateless mixed update is the f32 one on the
 * widened, divided gradients followed by the narrowing; its partials are those of those
 * gradients. */
static void test_mixed_stateless(void)
{
    enum { N = 65536, L = 4099 };
    uint16_t *h = halloc(N), *back = halloc(N), *copy = halloc(L), *gh = halloc(L);
    float *f = falloc(N);
    float *p1 = falloc(L), *p2 = falloc(L), *gf = falloc(L), *m1 = falloc(L), *m2 = falloc(L),
          *v1 = falloc(L), *v2 = falloc(L);
    double part_a[2], part_b[2];
    flatopt_base_params hp = FLATOPT_BASE_PARAMS_INIT(FLATOPT_ADAM);
    flatopt_step_args args = FLATOPT_STEP_ARGS_INIT;
    size_t i, bad = 0;
    uint32_t dt;
    for (i = 0; i < N; i++)
        h[i] = (uint16_t)i;
    for (dt = FLATOPT_DTYPE_BF16; dt <= FLATOPT_DTYPE_F16; dt++) {
        widen_all(dt, h, f, N);
        OK(F(flatopt_narrow_from_f32)(dt, f, back, N));
        for (i = 0; i < N; i++) {
            uint32_t exp = dt == FLATOPT_DTYPE_BF16 ? 0x7f80u : 0x7c00u;
            uint32_t man = dt == FLATOPT_DTYPE_BF16 ? 0x7fu : 0x3ffu;
            int nan = (h[i] & exp) == exp && (h[i] & man) != 0;
            if (dt == FLATOPT_DTYPE_BF16 && f2u(f[i]) != (uint32_t)h[i] << 16)
                bad++;
            if (nan ? !(isnan(f[i]) && (back[i] & 0x8000u) == (h[i] & 0x8000u) &&
                        (back[i] & exp) == exp && (back[i] & man) != 0)
                    : back[i] != h[i])
                bad++;
        }
        CHECK(bad == 0, "dtype %u: %lu of 65536 patterns do not round-trip", dt,
              (unsigned long)bad);
    }
    fill(p1, L, 110, 1.0f);
    memcpy(p2, p1, L * sizeof(float));
    fill(gf, L, 111, 64.0f);
    OK(F(flatopt_narrow_from_f32)(FLATOPT_DTYPE_BF16, gf, gh, L));
    widen_all(FLATOPT_DTYPE_BF16, gh, gf, L);
    for (i = 0; i < L; i++)
        gf[i] = gf[i] / 3.0f;
    args.lr = 0.01;
    args.step = 2;
    hp.amsgrad = 0;
    OK(F(flatopt_mixed_update)(&hp, &args, 3.0f, p1, gh, FLATOPT_DTYPE_BF16, m1, v1, NULL, NULL,
                               copy, FLATOPT_DTYPE_BF16, L));
    OK(F(flatopt_adam_update)(&hp, &args, p2, gf, m2, v2, NULL, NULL, L));
    CHECK_BITS(p1, p2, L, "stateless mixed update vs adam_update on divided gradients");
    CHECK_BITS(m1, m2, L, "stateless mixed update: m");
    CHECK(copy_is_narrowed(FLATOPT_DTYPE_BF16, p1, copy, L), "stateless copy");
    OK(F(flatopt_sum_squares_partials_mixed)(gh, FLATOPT_DTYPE_BF16, L, 3.0f, part_a, 2));
    OK(F(flatopt_sum_squares_partials)(gf, L, part_b, 2));
    CHECK(part_a[0] == part_b[0] && part_a[1] == part_b[1], "mixed partials");
    OK(F(flatopt_mixed_update)(&hp, &args, 1.0f, p1, gf, FLATOPT_DTYPE_F32, m1, v1, NULL, NULL,
                               NULL, FLATOPT_DTYPE_F32, L));
    OK(F(flatopt_adam_update)(&hp, &args, p2, gf, m2, v2, NULL, NULL, L));
    CHECK_BITS(p1, p2, L, "stateless mixed update with f32 gradients");
    free(h);
    free(back);
    free(copy);
    free(gh);
    free(f);
    free(p1);
    free(p2);
    free(gf);
    free(m1);
    free(m2);
    free(v1);
    free(v2);
}

/* Adafactor through shaped registration (flatopt_param_options.rows / .cols) against an f64
 * model of docs/numerics.md, "Adafactor", written out here from the formulas: each row a
 * buffer of `nmat` row-major `rows x cols` matrices (rows 0: no shape, the unfactored form)
 * with one of the two variants, and the golden files' tolerance at every step. */
typedef struct {
    const char *name;
    size_t rows, cols, nmat, len; /* len: the buffer's length when rows == 0 */
    int optax;                    /* optax's variant: eps_root 1e-30, eps 0, lr not capped,
                                     k = weight_decay */
    double momentum, wd, clip;    /* clip NaN: no clipping */
    int param_scale;
    unsigned lookahead; /* sync period (alpha 0.5), 0: none */
} af_row;

typedef struct {
    size_t n, rows, cols, nmat;
    double *p, *v, *m, *slow; /* v: rows + cols per matrix (R then C), or n */
} af_model;

/* One update of the model with gradient g (float, as the library reads it) at step t. */
static void af_model_step(af_model *md, const af_row *r, const flatopt_base_params *hp, double lr,
                          const float *g, uint64_t t)
{
    size_t n = md->n, i, j, k;
    double w = pow(fmax((double)t - hp->decay_offset, 1.0), -hp->decay_rate), beta = 1.0 - w;
    double er = hp->eps_root, e1 = hp->eps, su = 0.0, sp = 0.0, scale = 1.0, den = 1.0, step;
    double lr_t = hp->relative_step ? fmin(lr, 1.0 / sqrt((double)t)) : lr;
    double kd = hp->weight_decay_by_lr ? lr * hp->decoupled_weight_decay
                                       : hp->decoupled_weight_decay;
    double *u = (double *)xmalloc(n * sizeof(double));
    if (md->rows == 0) {
        for (i = 0; i < n; i++) {
            md->v[i] = beta * md->v[i] + w * ((double)g[i] * g[i] + er);
            u[i] = g[i] / sqrt(fmax(e1 * e1, md->v[i]));
        }
    } else {
        size_t R = md->rows, C = md->cols;
        for (k = 0; k < md->nmat; k++) {
            double *rv = md->v + k * (R + C), *cv = rv + R, mean = 0.0;
            const float *gk = g + k * R * C;
            for (i = 0; i < R; i++) {
                double s = 0.0;
                for (j = 0; j < C; j++)
                    s += (double)gk[i * C + j] * gk[i * C + j];
                rv[i] = beta * rv[i] + w * (s / (double)C + er);
                mean += rv[i] / (double)R;
            }
            for (j = 0; j < C; j++) {
                double s = 0.0;
                for (i = 0; i < R; i++)
                    s += (double)gk[i * C + j] * gk[i * C + j];
                cv[j] = beta * cv[j] + w * (s / (double)R + er);
            }
            for (i = 0; i < R; i++)
                for (j = 0; j < C; j++)
                    u[k * R * C + i * C + j] =
                        gk[i * C + j] / sqrt(fmax(e1 * e1, rv[i] / fmax(mean, e1) * cv[j]));
        }
    }
    for (i = 0; i < n; i++) {
        su += u[i] * u[i];
        sp += md->p[i] * md->p[i];
    }
    if (!isnan(hp->clipping_threshold))
        den = fmax(1.0, sqrt(su / (double)n) / hp->clipping_threshold);
    if (hp->multiply_by_parameter_scale)
        scale = fmax(hp->eps_scale, sqrt(sp / (double)n));
    step = lr_t * scale / den;
    for (i = 0; i < n; i++) {
        double s = step * u[i];
        if (hp->momentum > 0.0)
            s = md->m[i] = hp->momentum * md->m[i] + (1.0 - hp->momentum) * s;
        md->p[i] -= s + kd * md->p[i];
    }
    if (r->lookahead && t % r->lookahead == 0)
        for (i = 0; i < n; i++)
            md->p[i] = md->slow[i] = md->slow[i] + 0.5 * (md->p[i] - md->slow[i]);
    free(u);
}

/* The base parameters of row `r`. */
static flatopt_base_params af_params(const af_row *r)
{
    flatopt_base_params hp;
    OK(F(flatopt_base_params_init)(&hp, sizeof hp, FLATOPT_ADAFACTOR));
    if (r->optax) {
        hp.eps_root = 1e-30;
        hp.eps = 0.0;
        hp.relative_step = 0;
        hp.weight_decay_by_lr = 0;
    }
    hp.momentum = r->momentum;
    hp.decoupled_weight_decay = r->wd;
    hp.clipping_threshold = r->clip;
    hp.multiply_by_parameter_scale = (uint32_t)r->param_scale;
    return hp;
}

/* A new Adafactor optimizer of row `r` with the buffers (p[k], g[k], len[k], shape (rows,
 * cols) or none) registered. */
static flatopt_optimizer *af_new(const af_row *r, const flatopt_base_params *hp, double lr,
                                 size_t nb, float *const *p, float *const *g, const size_t *len,
                                 size_t rows, size_t cols)
{
    flatopt_config c;
    flatopt_optimizer *o;
    size_t k;
    OK(F(flatopt_config_init)(&c, sizeof c));
    c.base = hp;
    c.lr = lr;
    if (r->lookahead) {
        c.lookahead = 1;
        c.sync_period = r->lookahead;
        c.alpha = 0.5;
    }
    o = new_opt(&c);
    for (k = 0; k < nb; k++) {
        flatopt_param_options po = FLATOPT_PARAM_OPTIONS_INIT;
        po.rows = rows;
        po.cols = cols;
        OK(F(flatopt_optimizer_add_param_with_options)(o, p[k], g[k], len[k], &po));
    }
    return o;
}

static void af_grad(float *g, size_t n, int t)
{
    size_t i;
    for (i = 0; i < n; i++)
        g[i] = (float)(sin(0.37 * (double)i + 1.3 * t) * (1.0 + 0.25 * (double)(i % 7)));
}

static void test_adafactor_shaped(void)
{
    static const af_row rows[] = {
        { "torch 3x5", 3, 5, 1, 0, 0, 0.0, 0.0, 1.0, 1, 0 },
        { "torch 4 matrices 6x7, decay, clip 2", 6, 7, 4, 0, 0, 0.0, 0.1, 2.0, 1, 0 },
        { "torch one row 1x9", 1, 9, 1, 0, 0, 0.0, 0.0, 1.0, 1, 0 },
        { "torch one column 9x1", 9, 1, 1, 0, 0, 0.0, 0.0, 1.0, 1, 0 },
        { "torch 2x5000 (columns in two blocks)", 2, 5000, 1, 0, 0, 0.0, 0.01, 1.0, 1, 0 },
        { "optax momentum 0.9, decay, 5x4 x2", 5, 4, 2, 0, 1, 0.9, 1e-3, 1.0, 1, 0 },
        { "optax no clipping, no parameter scale 8x3", 8, 3, 1, 0, 1, 0.0, 0.0, NAN, 0, 0 },
        { "torch Lookahead k=3, 4x6 x3", 4, 6, 3, 0, 0, 0.0, 0.05, 1.0, 1, 3 },
        { "unfactored (no shape) torch", 0, 0, 1, 17, 0, 0.0, 0.1, 1.0, 1, 0 },
        { "unfactored (no shape) optax momentum", 0, 0, 1, 33, 1, 0.5, 0.0, 1.5, 1, 0 },
    };
    enum { STEPS = 25 };
    const double lr = 0.05;
    size_t ri, i;
    for (ri = 0; ri < sizeof rows / sizeof rows[0]; ri++) {
        const af_row *r = &rows[ri];
        flatopt_base_params hp = af_params(r);
        size_t n = r->rows ? r->nmat * r->rows * r->cols : r->len;
        size_t nv = r->rows ? r->nmat * (r->rows + r->cols) : n;
        float *p = falloc(n), *g = falloc(n);
        af_model md;
        flatopt_optimizer *o;
        double worst = 0.0;
        int t;
        md.n = n;
        md.rows = r->rows;
        md.cols = r->cols;
        md.nmat = r->nmat;
        md.p = (double *)xmalloc(n * sizeof(double));
        md.slow = (double *)xmalloc(n * sizeof(double));
        md.m = (double *)calloc(n, sizeof(double));
        md.v = (double *)calloc(nv, sizeof(double));
        fill(p, n, 40 + ri, 1.0f);
        for (i = 0; i < n; i++)
            md.p[i] = md.slow[i] = p[i];
        o = af_new(r, &hp, lr, 1, &p, &g, &n, r->rows, r->cols);
        for (t = 1; t <= STEPS; t++) {
            af_grad(g, n, t);
            OK(F(flatopt_optimizer_step)(o));
            af_model_step(&md, r, &hp, lr, g, (uint64_t)t);
            for (i = 0; i < n; i++) {
                double err = fabs((double)p[i] - md.p[i]) / (1e-5 + 1e-5 * fabs(md.p[i]));
                worst = err > worst ? err : worst;
            }
        }
        CHECK(worst <= 1.0, "Adafactor %s: %.3g of the tolerance from the f64 model", r->name,
              worst);
        if (g_verbose)
            printf("  adafactor %-40s %.3g of the tolerance\n", r->name, worst);
        F(flatopt_optimizer_free)(o);
        free(md.p);
        free(md.slow);
        free(md.m);
        free(md.v);
        free(p);
        free(g);
    }
}

/* Without clipping and the parameter scale (optax's variant with clipping_threshold None and
 * multiply_by_parameter_scale False) each matrix of a buffer steps on its own: one buffer of
 * two matrices and two buffers of one each give the same bits. A checkpoint of a shaped
 * buffer resumes bit for bit; loading it where the buffer has another shape or none is
 * refused, naming the shape; a shape that does not divide the buffer is refused at
 * registration. */
static void test_adafactor_shaped_structure(void)
{
    enum { R = 5, C = 6, N = 2 * R * C, STEPS = 12 };
    static const af_row plain = { "", R, C, 2, 0, 1, 0.9, 1e-3, NAN, 0, 0 };
    static const af_row torch = { "", R, C, 2, 0, 0, 0.0, 0.1, 1.0, 1, 0 };
    flatopt_base_params hp = af_params(&plain), ht = af_params(&torch);
    float p[N], q[N], g[N], a[N], b[N];
    float *pa[2] = { q, q + R * C }, *ga[2] = { g, g + R * C };
    float *one_p[1] = { p }, *one_g[1] = { g };
    size_t half[2] = { R * C, R * C }, whole = N, cnt = 0;
    flatopt_optimizer *one, *two, *x, *y, *other;
    unsigned char *ck;
    size_t size = 0, w = 0;
    flatopt_param_options po = FLATOPT_PARAM_OPTIONS_INIT;
    int t;
    fill(p, N, 77, 1.0f);
    memcpy(q, p, sizeof p);
    one = af_new(&plain, &hp, 0.01, 1, one_p, one_g, &whole, R, C);
    two = af_new(&plain, &hp, 0.01, 2, pa, ga, half, R, C);
    for (t = 1; t <= STEPS; t++) {
        af_grad(g, N, t);
        OK(F(flatopt_optimizer_step)(one));
        OK(F(flatopt_optimizer_step)(two));
        CHECK(same_bits(p, q, N), "two matrices in one buffer differ from two buffers, step %d",
              t);
    }
    F(flatopt_optimizer_free)(one);
    F(flatopt_optimizer_free)(two);

    /* checkpoint round trip */
    fill(a, N, 78, 1.0f);
    memcpy(b, a, sizeof a);
    one_p[0] = a;
    x = af_new(&torch, &ht, 0.02, 1, one_p, one_g, &whole, R, C);
    for (t = 1; t <= 5; t++) {
        af_grad(g, N, t);
        OK(F(flatopt_optimizer_step)(x));
    }
    memcpy(b, a, sizeof a);
    OK(F(flatopt_optimizer_checkpoint_size)(x, &size));
    ck = (unsigned char *)xmalloc(size);
    OK(F(flatopt_optimizer_save)(x, ck, size, &w));
    one_p[0] = b;
    y = af_new(&torch, &ht, 0.02, 1, one_p, one_g, &whole, R, C);
    OK(F(flatopt_optimizer_load)(y, ck, w));
    for (t = 6; t <= 12; t++) {
        af_grad(g, N, t);
        OK(F(flatopt_optimizer_step)(x));
        OK(F(flatopt_optimizer_step)(y));
        CHECK(same_bits(a, b, N), "a loaded shaped Adafactor differs at step %d", t);
    }
    /* another shape, and none: refused, naming the shapes; nothing changes */
    one_p[0] = q;
    other = af_new(&torch, &ht, 0.02, 1, one_p, one_g, &whole, C, R);
    EXPECT(F(flatopt_optimizer_load)(other, ck, w), FLATOPT_ERR_INVALID_ARGUMENT);
    CHECK(msg_has("shape") && msg_has("(5, 6)") && msg_has("(6, 5)"), "%s", last_msg());
    CHECK(step_count(other) == 0, "a refused load changed the step count");
    F(flatopt_optimizer_free)(other);
    other = af_new(&torch, &ht, 0.02, 1, one_p, one_g, &whole, 0, 0);
    EXPECT(F(flatopt_optimizer_load)(other, ck, w), FLATOPT_ERR_INVALID_ARGUMENT);
    CHECK(msg_has("shape"), "%s", last_msg());
    /* registration: a shape that does not divide the buffer, one of rows / cols 0 */
    po.rows = 4;
    po.cols = 4;
    EXPECT(F(flatopt_optimizer_add_param_with_options)(other, p, g, N, &po),
           FLATOPT_ERR_INVALID_ARGUMENT);
    CHECK(msg_has("shape") && msg_has("(4, 4)"), "%s", last_msg());
    po.rows = 0;
    po.cols = N;
    EXPECT(F(flatopt_optimizer_add_param_with_options)(other, p, g, N, &po),
           FLATOPT_ERR_INVALID_ARGUMENT);
    CHECK(msg_has("shape"), "%s", last_msg());
    OK(F(flatopt_optimizer_num_params)(other, &cnt));
    CHECK(cnt == 1, "a refused shape registered a buffer (%zu buffers)", cnt);
    F(flatopt_optimizer_free)(other);
    F(flatopt_optimizer_free)(x);
    F(flatopt_optimizer_free)(y);
    free(ck);
}

int main(int argc, char **argv)
{
    const char *coverage_out = NULL;
    int i;
    size_t k;
    long failed;
    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--list-api") == 0) {
            for (k = 0; k < N_API; k++)
                printf("%s\n", k_api[k]);
            return 0;
        } else if (strcmp(argv[i], "--coverage") == 0 && i + 1 < argc) {
            coverage_out = argv[++i];
        } else if (strcmp(argv[i], "-v") == 0) {
            g_verbose = 1;
        } else {
            fprintf(stderr, "usage: %s [-v] [--coverage FILE] [--list-api]\n", argv[0]);
            return 2;
        }
    }
    printf("test_api: flatopt %s (header %s), default SIMD tier %s\n", flatopt_version(),
           FLATOPT_VERSION_STRING, flatopt_simd_tier_name(flatopt_default_simd_tier()));
    tmpdir_create();

    stage("version, status strings, init defaults, SIMD tiers");
    test_version();
    test_status_str();
    test_init_defaults();
    test_simd();
    stage("bad-input table");
    test_bad_inputs();
    stage("Lookahead(Adam) + clip_norm vs the stateless pipeline");
    test_lookahead_adam_clip();
    stage("step_with_grads, split steps from 2 pthreads");
    test_step_with_grads();
    test_split_step_threads();
    test_split_step_compressed();
    stage("non-finite gradients");
    test_nonfinite_skip();
    test_nonfinite_error_propagate();
    stage("stateless updates vs the handle, kernels");
    test_stateless_vs_handle();
    test_base_update_every_kind();
    test_state_bytes();
    test_kernels();
    stage("schedules, threads, reset, registration, thread-local messages");
    test_schedules();
    test_threads();
    test_reset();
    test_registration_edges();
    test_thread_local_message();
    stage("checkpoints, NULL registered gradients");
    test_checkpoints();
    test_checkpoint_compressed();
    test_null_registered_grad();
    stage("sharded training: block partials, step with a global sum of squares");
    test_sharded();
    test_sharded_per_buffer_norms();
    stage("parameter groups");
    test_groups();
    stage("Adafactor: shaped registration against an f64 model, matrices, checkpoints");
    test_adafactor_shaped();
    test_adafactor_shaped_structure();
    stage("mixed precision: 16-bit gradients and copies, loss scaling");
    test_mixed_variants();
    test_mixed_scaling();
    test_mixed_stateless();
    check_tmpdir_clean();

    /* Coverage: every function of the header was called. */
    for (k = 0; k < N_API; k++)
        CHECK(g_called[k] > 0, "%s was never exercised", k_api[k]);
    for (i = 0; i < g_n_unlisted; i++)
        CHECK(0, "%s was called but is missing from k_api[]", g_unlisted[i]);
    if (coverage_out) {
        FILE *fp = fopen(coverage_out, "w");
        if (CHECK(fp != NULL, "cannot write %s", coverage_out)) {
            for (k = 0; k < N_API; k++)
                if (g_called[k])
                    fprintf(fp, "%s\n", k_api[k]);
            for (i = 0; i < g_n_unlisted; i++)
                fprintf(fp, "%s\n", g_unlisted[i]);
            fclose(fp);
        }
    }

    tmpdir_remove();
    failed = g_failures;
    printf("test_api: %lu functions exercised\n", (unsigned long)N_API);
    printf("test_api: %ld checks passed, %ld bad-input rows\n", g_checks - failed, g_rows);
    if (failed) {
        printf("test_api: FAILED: %ld checks failed\n", failed);
        return 1;
    }
    return 0;
}
