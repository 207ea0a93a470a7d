/* tests/c/test_poison.c: a handle on which a call panicked is poisoned (tests/c/run.sh, stage
 * "poisoning"). Runs against a library built with the test-only feature fault-injection, whose
 * flatopt_test_panic_next_step() makes the next step on this thread panic inside the library
 * (the shipped library has no such function). For a whole step and for a range of a split
 * step: the call that panics returns FLATOPT_ERR_INTERNAL; then every call on the handle, one
 * row per line, returns FLATOPT_ERR_POISONED with a message that says so and changes nothing;
 * flatopt_optimizer_free still releases it (valgrind / ASan see no leak); a second handle is
 * not affected. */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "flatopt.h"

/* Test builds only (feature fault-injection); deliberately not in flatopt.h. */
void flatopt_test_panic_next_step(void);

#define LEN 16

static int g_rows, g_failed;
static float g_p[LEN], g_g[LEN], g_dst[LEN];
static uint8_t g_ckpt[1 << 16];

static void row(int ok, const char *what, flatopt_status st)
{
    g_rows++;
    if (!ok)
        g_failed++;
    printf("test_poison: %-6s %s", ok ? "ok" : "FAILED", what);
    if (!ok)
        printf(" (status %d: %s)", (int)st, flatopt_last_error_message());
    printf("\n");
}

typedef flatopt_status (*call_fn)(flatopt_optimizer *o);

static flatopt_status c_step(flatopt_optimizer *o) { return flatopt_optimizer_step(o); }
static flatopt_status c_step_grads(flatopt_optimizer *o)
{
    const float *grads[1] = { g_g };
    return flatopt_optimizer_step_with_grads(o, grads, 1);
}
static flatopt_status c_step_ss(flatopt_optimizer *o)
{
    return flatopt_optimizer_step_with_sum_squares(o, 1.0);
}
static flatopt_status c_partials(flatopt_optimizer *o)
{
    double part[1];
    return flatopt_optimizer_sum_squares_partials(o, part, 1);
}
static flatopt_status c_begin(flatopt_optimizer *o) { return flatopt_optimizer_begin_step(o); }
static flatopt_status c_range(flatopt_optimizer *o) { return flatopt_optimizer_step_range(o, 0, LEN); }
static flatopt_status c_end(flatopt_optimizer *o) { return flatopt_optimizer_end_step(o); }
static flatopt_status c_reset(flatopt_optimizer *o) { return flatopt_optimizer_reset(o); }
static flatopt_status c_add(flatopt_optimizer *o) { return flatopt_optimizer_add_param(o, g_dst, NULL, LEN); }
static flatopt_status c_count(flatopt_optimizer *o)
{
    uint64_t n;
    return flatopt_optimizer_step_count(o, &n);
}
static flatopt_status c_lr(flatopt_optimizer *o)
{
    float lr;
    return flatopt_optimizer_current_lr(o, &lr);
}
static flatopt_status c_threads(flatopt_optimizer *o) { return flatopt_optimizer_set_num_threads(o, 1); }
static flatopt_status c_tier(flatopt_optimizer *o) { return flatopt_optimizer_set_simd_tier(o, 0); }
static flatopt_status c_slow(flatopt_optimizer *o)
{
    return flatopt_optimizer_copy_slow_weights(o, 0, g_dst, LEN);
}
static flatopt_status c_sched(flatopt_optimizer *o) { return flatopt_optimizer_schedule_step(o); }
static flatopt_status c_sched_epoch(flatopt_optimizer *o)
{
    return flatopt_optimizer_schedule_set_epoch(o, 3);
}
static flatopt_status c_ckpt_size(flatopt_optimizer *o)
{
    size_t n;
    return flatopt_optimizer_checkpoint_size(o, &n);
}
static flatopt_status c_save(flatopt_optimizer *o)
{
    size_t w;
    return flatopt_optimizer_save(o, g_ckpt, sizeof g_ckpt, &w);
}
static flatopt_status c_load(flatopt_optimizer *o) { return flatopt_optimizer_load(o, g_ckpt, 64); }
static flatopt_status c_save_file(flatopt_optimizer *o)
{
    return flatopt_optimizer_save_file(o, "/nonexistent-dir/poisoned.ckpt");
}

static flatopt_status c_add_group(flatopt_optimizer *o)
{
    size_t g;
    return flatopt_optimizer_add_group(o, NULL, &g);
}
static flatopt_status c_add_to_group(flatopt_optimizer *o)
{
    return flatopt_optimizer_add_param_to_group(o, 0, g_dst, NULL, LEN);
}
static flatopt_status c_num_groups(flatopt_optimizer *o)
{
    size_t n;
    return flatopt_optimizer_num_groups(o, &n);
}
static flatopt_status c_param_group(flatopt_optimizer *o)
{
    size_t g;
    return flatopt_optimizer_param_group(o, 0, &g);
}
static flatopt_status c_group_lr(flatopt_optimizer *o)
{
    double lr;
    return flatopt_optimizer_group_lr(o, 0, &lr);
}
static flatopt_status c_group_current_lr(flatopt_optimizer *o)
{
    float lr;
    return flatopt_optimizer_group_current_lr(o, 0, &lr);
}
static flatopt_status c_group_current_lr_exact(flatopt_optimizer *o)
{
    double lr;
    return flatopt_optimizer_group_current_lr_exact(o, 0, &lr);
}
static flatopt_status c_group_wd(flatopt_optimizer *o)
{
    double wd;
    return flatopt_optimizer_group_weight_decay(o, 0, &wd);
}
static flatopt_status c_set_group_lr(flatopt_optimizer *o)
{
    return flatopt_optimizer_set_group_lr(o, 0, 0.5);
}
static flatopt_status c_set_group_wd(flatopt_optimizer *o)
{
    return flatopt_optimizer_set_group_weight_decay(o, 0, 0.5);
}
static flatopt_status c_group_base(flatopt_optimizer *o)
{
    flatopt_base_params b;
    return flatopt_optimizer_group_base_params(o, 0, &b, sizeof b);
}
static flatopt_status c_add_opts(flatopt_optimizer *o)
{
    flatopt_param_options po = FLATOPT_PARAM_OPTIONS_INIT;
    return flatopt_optimizer_add_param_with_options(o, g_dst, NULL, LEN, &po);
}
static flatopt_status c_step_mixed(flatopt_optimizer *o)
{
    return flatopt_optimizer_step_mixed(o, NULL, 0, 2.0f);
}
static flatopt_status c_begin_mixed(flatopt_optimizer *o)
{
    const void *grads[1] = { g_g };
    return flatopt_optimizer_begin_step_mixed(o, grads, 1, 2.0f);
}
static flatopt_status c_set_scaler(flatopt_optimizer *o)
{
    flatopt_loss_scaler_options so = FLATOPT_LOSS_SCALER_OPTIONS_INIT;
    return flatopt_optimizer_set_loss_scaler(o, &so);
}
static flatopt_status c_scaler_state(flatopt_optimizer *o)
{
    float s;
    return flatopt_optimizer_loss_scaler_state(o, &s, NULL, NULL);
}
static flatopt_status c_set_scaler_state(flatopt_optimizer *o)
{
    return flatopt_optimizer_set_loss_scaler_state(o, 4.0f, 0);
}
static flatopt_status c_set_group_base(flatopt_optimizer *o)
{
    /* Refused for the poisoned handle before the struct is read (any kind would do). */
    flatopt_base_params b = FLATOPT_BASE_PARAMS_INIT(FLATOPT_SGD);
    return flatopt_optimizer_set_group_base_params(o, 0, &b);
}

static const struct {
    const char *name;
    call_fn call;
} k_after[] = {
    { "step", c_step },
    { "step_with_grads", c_step_grads },
    { "step_with_sum_squares", c_step_ss },
    { "sum_squares_partials", c_partials },
    { "begin_step", c_begin },
    { "step_range", c_range },
    { "end_step", c_end },
    { "reset", c_reset },
    { "add_param", c_add },
    { "step_count", c_count },
    { "current_lr", c_lr },
    { "set_num_threads", c_threads },
    { "set_simd_tier", c_tier },
    { "copy_slow_weights", c_slow },
    { "schedule_step", c_sched },
    { "schedule_set_epoch", c_sched_epoch },
    { "checkpoint_size", c_ckpt_size },
    { "save", c_save },
    { "load", c_load },
    { "save_file", c_save_file },
    { "add_group", c_add_group },
    { "add_param_to_group", c_add_to_group },
    { "num_groups", c_num_groups },
    { "param_group", c_param_group },
    { "group_lr", c_group_lr },
    { "group_current_lr", c_group_current_lr },
    { "group_current_lr_exact", c_group_current_lr_exact },
    { "group_weight_decay", c_group_wd },
    { "set_group_lr", c_set_group_lr },
    { "set_group_weight_decay", c_set_group_wd },
    { "group_base_params", c_group_base },
    { "add_param_with_options", c_add_opts },
    { "step_mixed", c_step_mixed },
    { "begin_step_mixed", c_begin_mixed },
    { "set_loss_scaler", c_set_scaler },
    { "loss_scaler_state", c_scaler_state },
    { "set_loss_scaler_state", c_set_scaler_state },
    { "set_group_base_params", c_set_group_base },
};

static flatopt_optimizer *make(void)
{
    flatopt_config c = FLATOPT_CONFIG_INIT;
    flatopt_optimizer *o = NULL;
    int i;
    c.lookahead = 1;
    c.lr = 0.01;
    for (i = 0; i < LEN; i++) {
        g_p[i] = 1.0f + (float)i;
        g_g[i] = 0.5f - 0.125f * (float)i;
    }
    if (flatopt_optimizer_new(&c, &o) != FLATOPT_OK ||
        flatopt_optimizer_add_param(o, g_p, g_g, LEN) != FLATOPT_OK)
        return NULL;
    return o;
}

/* `how`: 0 panics in a whole step, 1 in a range of a split step. */
static void scenario(int how)
{
    const char *where = how == 0 ? "flatopt_optimizer_step" : "flatopt_optimizer_step_range";
    flatopt_optimizer *o = make(), *other = NULL;
    float before[LEN];
    flatopt_status st;
    char what[200];
    size_t k;
    if (o == NULL) {
        row(0, "setup", FLATOPT_ERR_INTERNAL);
        return;
    }
    if (how == 1) {
        st = flatopt_optimizer_begin_step(o);
        row(st == FLATOPT_OK, "begin_step before the panic", st);
    }
    flatopt_test_panic_next_step();
    st = how == 0 ? flatopt_optimizer_step(o) : flatopt_optimizer_step_range(o, 0, LEN / 2);
    snprintf(what, sizeof what, "a panic inside %s: FLATOPT_ERR_INTERNAL", where);
    row(st == FLATOPT_ERR_INTERNAL && strstr(flatopt_last_error_message(), "fault injection"), what,
        st);
    memcpy(before, g_p, sizeof before);
    other = make(); /* a second handle is not poisoned */
    for (k = 0; k < sizeof k_after / sizeof k_after[0]; k++) {
        st = k_after[k].call(o);
        snprintf(what, sizeof what, "after a panic in %s: %s -> FLATOPT_ERR_POISONED", where,
                 k_after[k].name);
        row(st == FLATOPT_ERR_POISONED && strstr(flatopt_last_error_message(), "poisoned") &&
                memcmp(before, g_p, sizeof before) == 0,
            what, st);
    }
    if (other != NULL) {
        st = flatopt_optimizer_step(other);
        row(st == FLATOPT_OK, "another handle steps normally", st);
        flatopt_optimizer_free(other);
    }
    flatopt_optimizer_free(o); /* must release the poisoned handle: valgrind / ASan check */
    row(1, "flatopt_optimizer_free on the poisoned handle returned", FLATOPT_OK);
}

int main(void)
{
    row(flatopt_status_str(FLATOPT_ERR_POISONED) != NULL &&
            strstr(flatopt_status_str(FLATOPT_ERR_POISONED), "poisoned") != NULL,
        "flatopt_status_str(FLATOPT_ERR_POISONED)", FLATOPT_OK);
    scenario(0);
    scenario(1);
    printf("test_poison: %d rows, %d failed\n", g_rows, g_failed);
    return g_failed != 0;
}
