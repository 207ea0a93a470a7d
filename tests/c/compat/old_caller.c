/* An older caller (tests/c/run.sh, stage "ABI compatibility"): compiled once against the
 * frozen header of the first versioned ABI (tests/c/compat/v1/flatopt.h, flatopt 0.2.0: every
 * struct at its _SIZE_V1) and once against the current include/flatopt.h, then run against the
 * current library. Both builds must succeed and print the same digest: a caller built with an
 * older header (smaller structs) gets the defaults for the fields it lacks, so the same calls
 * give the same results. Uses only what the first version has: configuration with a base
 * struct by pointer and a schedule, handle steps, the stateless Adam, the _INIT macros. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "flatopt.h"

#define LEN 37

static int g_fail;

static void ok(flatopt_status st, const char *what)
{
    if (st != FLATOPT_OK) {
        fprintf(stderr, "old_caller: %s returned %d: %s\n", what, (int)st,
                flatopt_last_error_message());
        g_fail = 1;
    }
}

/* FNV-1a over the bits of the floats. */
static uint64_t digest(uint64_t h, const float *x, size_t n)
{
    size_t i, b;
    for (i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &x[i], sizeof u);
        for (b = 0; b < 4; b++) {
            h ^= (u >> (8 * b)) & 0xFF;
            h *= 1099511628211ull;
        }
    }
    return h;
}

int main(void)
{
    float p[LEN], g[LEN], sp[LEN], m[LEN], v[LEN], slow[LEN];
    flatopt_config c;
    flatopt_base_params base;
    flatopt_schedule sched = FLATOPT_SCHEDULE_INIT(FLATOPT_SCHEDULE_WARMUP_COSINE);
    flatopt_base_params hp = FLATOPT_BASE_PARAMS_INIT(FLATOPT_ADAM);
    flatopt_step_args args;
    flatopt_optimizer *opt = NULL;
    uint64_t h = 14695981039346656037ull, steps = 0;
    int i, t;

    for (i = 0; i < LEN; i++) {
        p[i] = sp[i] = slow[i] = 0.5f + 0.01f * (float)i;
        m[i] = v[i] = 0.0f;
    }
    ok(flatopt_config_init(&c, sizeof c), "flatopt_config_init");
    ok(flatopt_base_params_init(&base, sizeof base, FLATOPT_SGD), "flatopt_base_params_init");
    base.momentum = 0.9;
    base.nesterov = 1;
    c.base = &base;
    sched.base_lr = 0.05;
    sched.warmup = 3;
    sched.period = 20;
    c.schedule = &sched;
    c.lookahead = 1;
    c.sync_period = 4;
    c.grad_clip_norm = 2.0;
    ok(flatopt_optimizer_new(&c, &opt), "flatopt_optimizer_new");
    if (!opt)
        return 1;
    ok(flatopt_optimizer_add_param(opt, p, g, LEN), "flatopt_optimizer_add_param");
    ok(flatopt_step_args_init(&args, sizeof args), "flatopt_step_args_init");
    args.lr = 0.01;
    args.sync = 1;
    for (t = 1; t <= 12; t++) {
        for (i = 0; i < LEN; i++)
            g[i] = (float)sin(0.3 * t + 0.7 * i);
        ok(flatopt_optimizer_step(opt), "flatopt_optimizer_step");
        args.step = (uint64_t)t;
        ok(flatopt_adam_update(&hp, &args, sp, g, m, v, NULL, slow, LEN), "flatopt_adam_update");
    }
    ok(flatopt_optimizer_step_count(opt, &steps), "flatopt_optimizer_step_count");
    flatopt_optimizer_free(opt);
    h = digest(h, p, LEN);
    h = digest(h, sp, LEN);
    h = digest(h, slow, LEN);
    printf("old_caller: sizes config %u base %u schedule %u args %u; %llu steps; digest %016llx\n",
           (unsigned)sizeof c, (unsigned)sizeof base, (unsigned)sizeof sched,
           (unsigned)sizeof args, (unsigned long long)steps, (unsigned long long)h);
    return g_fail || steps != 12;
}
