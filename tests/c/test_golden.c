/* tests/c/test_golden.c: the braintools golden trajectories replayed through the C API.
 *
 * Reads the text produced by tests/c/golden_to_text.py from tests/data/braintools-0.4.0-dev.json
 * (run.sh does the conversion) and checks, for every case:
 *   - at every step, every parameter element: |ours - ref| <= 1e-5 + 1e-5*|ref|
 *     (docs/numerics.md, "Test tolerances");
 *   - at the end, the slow weights against slow_final (same tolerance);
 *   - before every update, flatopt_optimizer_current_lr() against lr_per_step (relative 1e-7);
 *   - the Lookahead syncs happen exactly on sync_steps: after a sync step the params are
 *     bit-equal to the slow weights, after any other step the slow weights did not change;
 *   - every variant (each available SIMD tier, 2 threads, step_with_grads, and a step split
 *     with begin_step / step_range / end_step) gives bit-identical trajectories; the 2-thread
 *     variant also registers a large zero-gradient buffer so that the thread pool really runs.
 * It prints the worst |err| and err/tolerance ratio per case.
 *
 * Mapping (as tests/golden.rs): sgd / adam / adamw / scheduled_sgd (SGD on Exponential stepped
 * once per update); the recorded `lookahead_lr` is ignored (braintools ignores it). Data values
 * are read with strtof (rounded to f32 once), hyperparameters with strtod.
 *
 * Usage: test_golden GOLDEN.txt
 */
#define _POSIX_C_SOURCE 200809L

#include "flatopt.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ATOL 1e-5
#define RTOL 1e-5
#define LR_RTOL 1e-7
#define MAX_BUFS 16
#define MAX_REPORTS 40
/* Elements of the zero-gradient padding buffer: above the library's threshold for using its
 * thread pool (flatopt::engine::PARALLEL_MIN_ELEMENTS, 1 << 19 at the time of writing; not
 * visible through the C API), with room to spare. */
#define PAD_LEN ((1 << 20) + 77)

static long g_checks, g_failures;

static void fail(const char *fmt, ...)
{
    va_list ap;
    g_failures++;
    if (g_failures > MAX_REPORTS) {
        if (g_failures == MAX_REPORTS + 1)
            fprintf(stderr, "FAIL: (further failures not shown)\n");
        return;
    }
    fprintf(stderr, "FAIL: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "test_golden: out of memory\n");
        exit(2);
    }
    return p;
}

/* ------------------------------------------------------------------------------------------ */
/* Reading                                                                                     */

typedef struct reader {
    FILE *fp;
    const char *path;
    char tok[512];
} reader;

static void die(const reader *r, const char *what)
{
    fprintf(stderr, "test_golden: %s: malformed input: %s (at token \"%s\")\n", r->path, what,
            r->tok);
    exit(2);
}

static const char *next(reader *r)
{
    if (fscanf(r->fp, "%511s", r->tok) != 1) {
        r->tok[0] = 0;
        die(r, "unexpected end of file");
    }
    return r->tok;
}

/* The next token into dst (n bytes); a longer token is malformed input. */
static void next_word(reader *r, char *dst, size_t n)
{
    size_t len = strlen(next(r));
    if (len + 1 > n)
        die(r, "name too long");
    memcpy(dst, r->tok, len + 1);
}

static void expect(reader *r, const char *word)
{
    if (strcmp(next(r), word) != 0) {
        char what[128];
        snprintf(what, sizeof what, "expected \"%s\"", word);
        die(r, what);
    }
}

static double read_f64(reader *r)
{
    char *end;
    double x = strtod(next(r), &end);
    if (*end != 0 || end == r->tok)
        die(r, "expected a number");
    return x;
}

static float read_f32(reader *r)
{
    char *end;
    float x = strtof(next(r), &end);
    if (*end != 0 || end == r->tok)
        die(r, "expected a number");
    return x;
}

static unsigned long read_u(reader *r)
{
    char *end;
    unsigned long x = strtoul(next(r), &end, 10);
    if (*end != 0 || end == r->tok || r->tok[0] == '-')
        die(r, "expected an unsigned integer");
    return x;
}

/* "COUNT v1 .. vCOUNT" with COUNT == n, into a new array. */
static float *read_floats(reader *r, size_t n)
{
    size_t i, got = read_u(r);
    float *x;
    if (got != n)
        die(r, "wrong number of values");
    x = (float *)xmalloc(n * sizeof(float));
    for (i = 0; i < n; i++)
        x[i] = read_f32(r);
    return x;
}

typedef struct golden_case {
    char name[128];
    char kind[32];
    double lr, momentum, dampening, b1, b2, eps, decoupled_wd;
    int nesterov;
    int scheduled;
    double sched_base, sched_gamma;
    unsigned long sync_period;
    double alpha, weight_decay, clip_norm, clip_value;
    int nb;
    char bufname[MAX_BUFS][64];
    size_t len[MAX_BUFS], total;
    size_t steps;
    unsigned char *is_sync; /* [steps + 1] */
    float *lr_per_step;     /* [steps] */
    float *init;            /* [total] */
    float **grads, **params; /* [steps][total] */
    float *slow_final;      /* [total] or NULL */
} golden_case;

static void read_case(reader *r, golden_case *c)
{
    size_t i, n;
    memset(c, 0, sizeof *c);
    expect(r, "case");
    next_word(r, c->name, sizeof c->name);
    expect(r, "base");
    next_word(r, c->kind, sizeof c->kind);
    expect(r, "lr");
    c->lr = read_f64(r);
    expect(r, "momentum");
    c->momentum = read_f64(r);
    expect(r, "dampening");
    c->dampening = read_f64(r);
    expect(r, "nesterov");
    c->nesterov = (int)read_u(r);
    expect(r, "b1");
    c->b1 = read_f64(r);
    expect(r, "b2");
    c->b2 = read_f64(r);
    expect(r, "eps");
    c->eps = read_f64(r);
    expect(r, "decoupled_wd");
    c->decoupled_wd = read_f64(r);
    expect(r, "schedule");
    next(r);
    if (strcmp(r->tok, "exponential") == 0) {
        c->scheduled = 1;
        c->sched_base = read_f64(r);
        c->sched_gamma = read_f64(r);
    } else if (strcmp(r->tok, "none") != 0) {
        die(r, "unknown schedule");
    }
    expect(r, "lookahead");
    c->sync_period = read_u(r);
    c->alpha = read_f64(r);
    expect(r, "weight_decay");
    c->weight_decay = read_f64(r);
    expect(r, "clip_norm");
    c->clip_norm = read_f64(r);
    expect(r, "clip_value");
    c->clip_value = read_f64(r);
    expect(r, "buffers");
    c->nb = (int)read_u(r);
    if (c->nb < 1 || c->nb > MAX_BUFS)
        die(r, "buffer count");
    for (i = 0; i < (size_t)c->nb; i++) {
        next_word(r, c->bufname[i], sizeof c->bufname[i]);
        c->len[i] = read_u(r);
        c->total += c->len[i];
    }
    expect(r, "steps");
    c->steps = read_u(r);
    if (c->steps < 1)
        die(r, "no steps");
    c->is_sync = (unsigned char *)xmalloc(c->steps + 1);
    memset(c->is_sync, 0, c->steps + 1);
    expect(r, "sync_steps");
    n = read_u(r);
    for (i = 0; i < n; i++) {
        unsigned long s = read_u(r);
        if (s < 1 || s > c->steps)
            die(r, "sync step out of range");
        c->is_sync[s] = 1;
    }
    expect(r, "lr_per_step");
    c->lr_per_step = read_floats(r, c->steps);
    expect(r, "init");
    c->init = read_floats(r, c->total);
    c->grads = (float **)xmalloc(c->steps * sizeof(float *));
    c->params = (float **)xmalloc(c->steps * sizeof(float *));
    for (i = 0; i < c->steps; i++) {
        expect(r, "step");
        if (read_u(r) != i + 1)
            die(r, "step number");
        expect(r, "grads");
        c->grads[i] = read_floats(r, c->total);
        expect(r, "params");
        c->params[i] = read_floats(r, c->total);
    }
    expect(r, "slow_final");
    if (read_u(r) == 1)
        c->slow_final = read_floats(r, c->total);
    expect(r, "end");
}

static void free_case(golden_case *c)
{
    size_t i;
    for (i = 0; i < c->steps; i++) {
        free(c->grads[i]);
        free(c->params[i]);
    }
    free(c->grads);
    free(c->params);
    free(c->is_sync);
    free(c->lr_per_step);
    free(c->init);
    free(c->slow_final);
}

/* ------------------------------------------------------------------------------------------ */
/* Replay                                                                                      */

enum mode { MODE_STEP, MODE_WITH_GRADS, MODE_SPLIT };

typedef struct variant {
    uint32_t tier;
    uint32_t threads;
    enum mode mode;
    int pad;
    char label[64];
} variant;

typedef struct run {
    float **params; /* [steps][total] after each step */
    float *slow;    /* [total] at the end, or NULL */
    float *lrs;     /* [steps] */
    int ok;
} run;

static const char *status_text(flatopt_status s)
{
    return flatopt_status_str((int32_t)s);
}

static int build_config(const golden_case *c, const variant *v, flatopt_config *cfg,
                        flatopt_base_params *base, flatopt_schedule *sched)
{
    flatopt_status st = flatopt_config_init(cfg, sizeof *cfg);
    if (st != FLATOPT_OK)
        return 0;
    cfg->base = base;
    if (strcmp(c->kind, "sgd") == 0 || strcmp(c->kind, "scheduled_sgd") == 0) {
        flatopt_base_params_init(base, sizeof *base, FLATOPT_SGD);
        base->momentum = c->momentum;
        base->dampening = c->dampening;
        base->nesterov = (uint32_t)c->nesterov;
    } else if (strcmp(c->kind, "adam") == 0 || strcmp(c->kind, "adamw") == 0) {
        int w = strcmp(c->kind, "adamw") == 0;
        flatopt_base_params_init(base, sizeof *base, w ? FLATOPT_ADAMW : FLATOPT_ADAM);
        base->b1 = c->b1;
        base->b2 = c->b2;
        base->eps = c->eps;
        if (w)
            base->decoupled_weight_decay = c->decoupled_wd;
    } else {
        fail("%s: base kind \"%s\" is not mapped", c->name, c->kind);
        return 0;
    }
    if (c->scheduled) {
        flatopt_schedule_init(sched, sizeof *sched, FLATOPT_SCHEDULE_EXPONENTIAL);
        sched->base_lr = c->sched_base;
        sched->gamma = c->sched_gamma;
        cfg->schedule = sched;
        cfg->schedule_manual = 0; /* advanced once per applied update */
    } else {
        cfg->lr = c->lr;
    }
    if (c->sync_period > 0) {
        cfg->lookahead = 1;
        cfg->sync_period = c->sync_period;
        cfg->alpha = c->alpha;
    }
    cfg->weight_decay = c->weight_decay;
    cfg->grad_clip_norm = c->clip_norm;
    cfg->grad_clip_value = c->clip_value;
    cfg->num_threads = v->threads;
    cfg->simd_tier = v->tier;
    return 1;
}

static int replay(const golden_case *c, const variant *v, run *out)
{
    flatopt_config cfg;
    flatopt_base_params base;
    flatopt_schedule sched;
    flatopt_optimizer *opt = NULL;
    float *p = (float *)xmalloc(c->total * sizeof(float));
    float *g = (float *)xmalloc(c->total * sizeof(float));
    float *slow_before = (float *)xmalloc(c->total * sizeof(float));
    float *pad_p = NULL, *pad_g = NULL;
    flatopt_status st;
    size_t t, off;
    int b;

    memset(out, 0, sizeof *out);
    out->params = (float **)xmalloc(c->steps * sizeof(float *));
    for (t = 0; t < c->steps; t++)
        out->params[t] = NULL;
    out->lrs = (float *)xmalloc(c->steps * sizeof(float));
    memcpy(p, c->init, c->total * sizeof(float));
    if (!build_config(c, v, &cfg, &base, &sched))
        goto done;
    st = flatopt_optimizer_new(&cfg, &opt);
    if (st != FLATOPT_OK) {
        fail("%s [%s]: flatopt_optimizer_new: %s: %s", c->name, v->label, status_text(st),
             flatopt_last_error_message());
        goto done;
    }
    for (b = 0, off = 0; b < c->nb; off += c->len[b], b++) {
        st = flatopt_optimizer_add_param(opt, p + off, g + off, c->len[b]);
        if (st != FLATOPT_OK) {
            fail("%s [%s]: add_param %s: %s: %s", c->name, v->label, c->bufname[b],
                 status_text(st), flatopt_last_error_message());
            goto done;
        }
    }
    if (v->pad) {
        /* A zero-gradient buffer big enough for the threaded passes: zeros add exactly 0 to
         * the global sum of squares and the update is elementwise, so the golden buffers must
         * come out bit-identical to the unpadded runs. */
        pad_p = (float *)xmalloc(PAD_LEN * sizeof(float));
        pad_g = (float *)xmalloc(PAD_LEN * sizeof(float));
        for (off = 0; off < PAD_LEN; off++) {
            pad_p[off] = (float)((double)(off % 1000) / 500.0 - 1.0);
            pad_g[off] = 0.0f;
        }
        st = flatopt_optimizer_add_param(opt, pad_p, pad_g, PAD_LEN);
        if (st != FLATOPT_OK) {
            fail("%s [%s]: add_param pad: %s", c->name, v->label, status_text(st));
            goto done;
        }
    }
    for (t = 0; t < c->steps; t++) {
        const size_t step = t + 1;
        g_checks++;
        if (flatopt_optimizer_current_lr(opt, &out->lrs[t]) != FLATOPT_OK) {
            fail("%s [%s]: current_lr failed", c->name, v->label);
            goto done;
        }
        if (c->sync_period > 0)
            for (b = 0, off = 0; b < c->nb; off += c->len[b], b++)
                flatopt_optimizer_copy_slow_weights(opt, (size_t)b, slow_before + off,
                                                    c->len[b]);
        memcpy(g, c->grads[t], c->total * sizeof(float));
        switch (v->mode) {
        case MODE_WITH_GRADS:
            /* registered gradients poisoned: only the ones passed may be read */
            for (off = 0; off < c->total; off++)
                g[off] = NAN;
            {
                const float *given[MAX_BUFS];
                for (b = 0, off = 0; b < c->nb; off += c->len[b], b++)
                    given[b] = c->grads[t] + off;
                st = flatopt_optimizer_step_with_grads(opt, given, (size_t)c->nb);
            }
            break;
        case MODE_SPLIT: {
            size_t cut = (step * 389u) % (c->total + 1);
            /* c->total: the golden buffers; no padding in this mode */
            st = flatopt_optimizer_begin_step(opt);
            if (st == FLATOPT_OK)
                st = flatopt_optimizer_step_range(opt, cut, c->total);
            if (st == FLATOPT_OK)
                st = flatopt_optimizer_step_range(opt, 0, cut);
            if (st == FLATOPT_OK)
                st = flatopt_optimizer_end_step(opt);
            break;
        }
        default:
            st = flatopt_optimizer_step(opt);
            break;
        }
        if (st != FLATOPT_OK) {
            fail("%s [%s]: step %lu: %s: %s", c->name, v->label, (unsigned long)step,
                 status_text(st), flatopt_last_error_message());
            goto done;
        }
        out->params[t] = (float *)xmalloc(c->total * sizeof(float));
        memcpy(out->params[t], p, c->total * sizeof(float));
        /* Lookahead: syncs exactly on the recorded sync steps (docs/numerics.md, "Lookahead"). */
        if (c->sync_period > 0) {
            for (b = 0, off = 0; b < c->nb; off += c->len[b], b++) {
                const float *s = NULL;
                size_t n = 0;
                g_checks++;
                st = flatopt_optimizer_slow_weights(opt, (size_t)b, &s, &n);
                if (st != FLATOPT_OK || n != c->len[b]) {
                    fail("%s [%s]: slow_weights %d: %s", c->name, v->label, b, status_text(st));
                    goto done;
                }
                if (c->is_sync[step]) {
                    if (memcmp(s, p + off, n * sizeof(float)) != 0)
                        fail("%s [%s]: step %lu is a sync step but params of %s are not "
                             "bit-equal to the slow weights", c->name, v->label,
                             (unsigned long)step, c->bufname[b]);
                } else if (memcmp(s, slow_before + off, n * sizeof(float)) != 0) {
                    fail("%s [%s]: step %lu is not a sync step but the slow weights of %s "
                         "changed", c->name, v->label, (unsigned long)step, c->bufname[b]);
                }
            }
        }
    }
    {
        uint64_t n = 0;
        g_checks++;
        if (flatopt_optimizer_step_count(opt, &n) != FLATOPT_OK || n != c->steps)
            fail("%s [%s]: step_count %lu after %lu steps", c->name, v->label,
                 (unsigned long)n, (unsigned long)c->steps);
    }
    if (c->sync_period > 0) {
        out->slow = (float *)xmalloc(c->total * sizeof(float));
        for (b = 0, off = 0; b < c->nb; off += c->len[b], b++)
            if (flatopt_optimizer_copy_slow_weights(opt, (size_t)b, out->slow + off,
                                                    c->len[b]) != FLATOPT_OK)
                fail("%s [%s]: copy_slow_weights %d", c->name, v->label, b);
    }
    out->ok = 1;
done:
    flatopt_optimizer_free(opt);
    free(pad_p);
    free(pad_g);
    free(p);
    free(g);
    free(slow_before);
    return out->ok;
}

static void free_run(run *r, size_t steps)
{
    size_t t;
    if (r->params)
        for (t = 0; t < steps; t++)
            free(r->params[t]);
    free(r->params);
    free(r->slow);
    free(r->lrs);
}

typedef struct worst {
    double abs, ratio;
    char at[160];
    long checked;
} worst;

static void locate(const golden_case *c, size_t flat, char *buf, size_t n)
{
    int b;
    for (b = 0; b < c->nb; b++) {
        if (flat < c->len[b]) {
            snprintf(buf, n, "%s[%lu]", c->bufname[b], (unsigned long)flat);
            return;
        }
        flat -= c->len[b];
    }
    snprintf(buf, n, "element %lu", (unsigned long)flat);
}

static void compare(const golden_case *c, const char *place, const float *ours,
                    const float *ref, worst *w)
{
    size_t i;
    for (i = 0; i < c->total; i++) {
        double o = ours[i], r = ref[i];
        double err = fabs(o - r), tol = ATOL + RTOL * fabs(r);
        double ratio = isnan(err) ? INFINITY : err / tol;
        w->checked++;
        g_checks++;
        if (ratio > w->ratio || w->at[0] == 0) {
            char where[96];
            locate(c, i, where, sizeof where);
            w->ratio = ratio;
            snprintf(w->at, sizeof w->at, "%s %s", place, where);
        }
        if (isnan(err) || err > w->abs)
            w->abs = isnan(err) ? INFINITY : err;
        if (!(err <= tol)) {
            char where[96];
            locate(c, i, where, sizeof where);
            fail("%s: %s %s: ours %.9g ref %.9g |diff| %.3e > tol %.3e (%.2fx)", c->name,
                 place, where, o, r, err, tol, ratio);
        }
    }
}

/* ------------------------------------------------------------------------------------------ */

int main(int argc, char **argv)
{
    reader rd;
    unsigned long ncases, k;
    variant vars[8];
    int nvars = 0, i;
    uint32_t t, def = flatopt_default_simd_tier();
    long total_steps = 0;
    double worst_ratio = 0.0;

    if (argc != 2) {
        fprintf(stderr, "usage: %s GOLDEN.txt (made by tests/c/golden_to_text.py)\n", argv[0]);
        return 2;
    }
    rd.path = argv[1];
    rd.tok[0] = 0;
    rd.fp = fopen(argv[1], "r");
    if (!rd.fp) {
        perror(argv[1]);
        return 2;
    }
    expect(&rd, "flatopt-golden-text");
    if (read_u(&rd) != 1)
        die(&rd, "format version");
    expect(&rd, "cases");
    ncases = read_u(&rd);
    memset(vars, 0, sizeof vars);

    for (t = FLATOPT_SIMD_SCALAR; t <= FLATOPT_SIMD_AVX512; t++) {
        if (!flatopt_simd_tier_available(t))
            continue;
        vars[nvars].tier = t;
        vars[nvars].threads = 1;
        vars[nvars].mode = MODE_STEP;
        snprintf(vars[nvars].label, sizeof vars[nvars].label, "tier=%s",
                 flatopt_simd_tier_name(t));
        nvars++;
    }
    vars[nvars].tier = def;
    vars[nvars].threads = 2;
    vars[nvars].mode = MODE_STEP;
    vars[nvars].pad = 1;
    snprintf(vars[nvars].label, sizeof vars[nvars].label, "tier=%s threads=2 +pad",
             flatopt_simd_tier_name(def));
    nvars++;
    vars[nvars].tier = def;
    vars[nvars].threads = 1;
    vars[nvars].mode = MODE_WITH_GRADS;
    snprintf(vars[nvars].label, sizeof vars[nvars].label, "step_with_grads");
    nvars++;
    vars[nvars].tier = def;
    vars[nvars].threads = 1;
    vars[nvars].mode = MODE_SPLIT;
    snprintf(vars[nvars].label, sizeof vars[nvars].label, "begin/step_range/end");
    nvars++;

    printf("test_golden: flatopt %s, %lu cases from %s, %d variants per case:", flatopt_version(),
           ncases, argv[1], nvars);
    for (i = 0; i < nvars; i++)
        printf("%s %s", i ? "," : "", vars[i].label);
    printf("\n");
    printf("test_golden: %-22s %5s %8s %12s %10s  %s\n", "case", "steps", "elements",
           "worst |err|", "err/tol", "worst at");

    for (k = 0; k < ncases; k++) {
        golden_case c;
        run first, other;
        worst w;
        size_t s;
        read_case(&rd, &c);
        memset(&w, 0, sizeof w);
        if (!replay(&c, &vars[0], &first)) {
            free_run(&first, c.steps);
            free_case(&c);
            continue;
        }
        for (s = 0; s < c.steps; s++) {
            char place[32];
            float want = c.lr_per_step[s], got = first.lrs[s];
            g_checks++;
            if (!(fabs((double)got - (double)want) <= LR_RTOL * fabs((double)want)))
                fail("%s: step %lu: current_lr() %.9g but lr_per_step %.9g", c.name,
                     (unsigned long)s + 1, (double)got, (double)want);
            snprintf(place, sizeof place, "step %lu", (unsigned long)s + 1);
            compare(&c, place, first.params[s], c.params[s], &w);
        }
        if (c.slow_final) {
            g_checks++;
            if (!first.slow)
                fail("%s: no slow weights", c.name);
            else
                compare(&c, "slow_final", first.slow, c.slow_final, &w);
        }
        for (i = 1; i < nvars; i++) {
            if (replay(&c, &vars[i], &other)) {
                for (s = 0; s < c.steps; s++) {
                    g_checks++;
                    if (memcmp(other.params[s], first.params[s], c.total * sizeof(float)) != 0) {
                        fail("%s: [%s] differs from [%s] at step %lu", c.name, vars[i].label,
                             vars[0].label, (unsigned long)s + 1);
                        break;
                    }
                    if (memcmp(&other.lrs[s], &first.lrs[s], sizeof(float)) != 0)
                        fail("%s: [%s] lr differs at step %lu", c.name, vars[i].label,
                             (unsigned long)s + 1);
                }
                g_checks++;
                if ((other.slow == NULL) != (first.slow == NULL) ||
                    (first.slow &&
                     memcmp(other.slow, first.slow, c.total * sizeof(float)) != 0))
                    fail("%s: [%s] slow weights differ from [%s]", c.name, vars[i].label,
                         vars[0].label);
            }
            free_run(&other, c.steps);
        }
        printf("test_golden: %-22s %5lu %8lu %12.3e %10.4f  %s\n", c.name,
               (unsigned long)c.steps, (unsigned long)c.total, w.abs, w.ratio, w.at);
        if (w.ratio > worst_ratio)
            worst_ratio = w.ratio;
        total_steps += (long)c.steps;
        free_run(&first, c.steps);
        free_case(&c);
    }
    if (fscanf(rd.fp, "%511s", rd.tok) == 1)
        die(&rd, "trailing data after the last case");
    fclose(rd.fp);

    printf("test_golden: %lu cases, %ld steps, worst err/tol %.4f (must be <= 1), %ld checks, "
           "%ld failed\n", ncases, total_steps, worst_ratio, g_checks, g_failures);
    if (g_failures || ncases == 0) {
        printf("test_golden: FAILED\n");
        return 1;
    }
    return 0;
}
