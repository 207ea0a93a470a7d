/* Hostile values through the C ABI: values valid as double but not as float (issue 11), one
 * row per case (a failure names its row). Configured values whose float rounding leaves their
 * domain are refused by flatopt_optimizer_new and by the stateless kernels, naming the field;
 * a schedule that grows past the float range refuses the step, naming the learning rate, with
 * the parameters unchanged. Run by tests/c/run.sh. */
#include <stdio.h>
#include <string.h>

#include "flatopt.h"

static int g_failed;

static void fail(const char *row, const char *what)
{
    fprintf(stderr, "test_f32: row \"%s\": %s (last message: %s)\n", row, what,
            flatopt_last_error_message());
    g_failed++;
}

/* Expects `st` to be FLATOPT_ERR_INVALID_ARGUMENT with a message naming `field`. */
static void expect_refused(const char *row, flatopt_status st, const char *field)
{
    if (st != FLATOPT_ERR_INVALID_ARGUMENT) {
        fail(row, "not refused with FLATOPT_ERR_INVALID_ARGUMENT");
    } else if (strstr(flatopt_last_error_message(), field) == NULL) {
        fail(row, "the message does not name the field");
    }
}

enum field {
    LR, WEIGHT_DECAY, EPS, B1, DECOUPLED, CLIP_VALUE, SCHED_BASE,
    ADAGRAD_EPS, ADAGRAD_INITIAL, RMSPROP_ALPHA, RMSPROP_MOMENTUM, RMSPROP_INITIAL,
    ADAMAX_EPS, ADAMAX_B2, NADAM_B1, NADAM_DECOUPLED, LION_B2, LION_DECOUPLED,
    ADABELIEF_EPS_ROOT, YOGI_INITIAL, ADADELTA_RHO, RPROP_ETA_MINUS, RPROP_MAX_STEP
};

struct config_row {
    const char *name;
    enum field field;
    double value;
    const char *named;
};

static const struct config_row k_config_rows[] = {
    { "config lr = 1e39 (inf as float)", LR, 1e39, "lr" },
    { "config weight_decay = 1e39", WEIGHT_DECAY, 1e39, "weight_decay" },
    { "base eps = 1e-50 (0 as float)", EPS, 1e-50, "eps" },
    { "base b1 = 0.99999999 (1 as float)", B1, 0.99999999, "b1" },
    { "base decoupled_weight_decay = 1e39", DECOUPLED, 1e39, "decoupled" },
    { "config grad_clip_value = 1e39", CLIP_VALUE, 1e39, "grad_clip_value" },
    { "schedule base_lr = 1e39", SCHED_BASE, 1e39, "base_lr" },
    { "adagrad eps = 1e-50 (0 as float)", ADAGRAD_EPS, 1e-50, "eps" },
    { "adagrad initial_accumulator = 1e39", ADAGRAD_INITIAL, 1e39, "initial_accumulator" },
    { "rmsprop alpha = 0.99999999 (1 as float)", RMSPROP_ALPHA, 0.99999999, "alpha" },
    { "rmsprop momentum = 0.99999999 (1 as float)", RMSPROP_MOMENTUM, 0.99999999, "momentum" },
    { "rmsprop initial_accumulator = 1e39", RMSPROP_INITIAL, 1e39, "initial_" },
    { "adamax eps = 1e-50 (0 as float)", ADAMAX_EPS, 1e-50, "eps" },
    { "adamax b2 = 0.99999999 (1 as float)", ADAMAX_B2, 0.99999999, "b2" },
    { "nadam b1 = 0.99999999 (1 as float)", NADAM_B1, 0.99999999, "b1" },
    { "nadam decoupled_weight_decay = 1e39", NADAM_DECOUPLED, 1e39, "decoupled_weight_decay" },
    { "lion b2 = 0.99999999 (1 as float)", LION_B2, 0.99999999, "b2" },
    { "lion decoupled_weight_decay = 1e39", LION_DECOUPLED, 1e39, "weight_decay" },
    { "adabelief eps_root = 1e39", ADABELIEF_EPS_ROOT, 1e39, "eps_root" },
    { "yogi initial_accumulator = 1e39", YOGI_INITIAL, 1e39, "initial_accumulator" },
    { "adadelta rho = 0.99999999 (1 as float)", ADADELTA_RHO, 0.99999999, "rho" },
    { "rprop eta_minus = 0.99999999 (1 as float)", RPROP_ETA_MINUS, 0.99999999, "eta_minus" },
    { "rprop max_step_size = 1e39", RPROP_MAX_STEP, 1e39, "max_step_size" },
};

static void config_row(const struct config_row *r)
{
    flatopt_config c;
    flatopt_base_params b;
    flatopt_schedule s;
    flatopt_optimizer *opt = NULL;
    if (flatopt_config_init(&c, sizeof c) != FLATOPT_OK ||
        flatopt_base_params_init(&b, sizeof b, FLATOPT_ADAM) != FLATOPT_OK ||
        flatopt_schedule_init(&s, sizeof s, FLATOPT_SCHEDULE_EXPONENTIAL) != FLATOPT_OK) {
        fail(r->name, "init failed");
        return;
    }
    c.base = &b;
    switch (r->field) {
    case LR: c.lr = r->value; break;
    case WEIGHT_DECAY: c.weight_decay = r->value; break;
    case EPS: b.eps = r->value; break;
    case B1: b.b1 = r->value; break;
    case DECOUPLED:
        flatopt_base_params_init(&b, sizeof b, FLATOPT_ADAMW);
        b.decoupled_weight_decay = r->value;
        break;
    case CLIP_VALUE: c.grad_clip_value = r->value; break;
    case SCHED_BASE:
        s.base_lr = r->value;
        c.schedule = &s;
        break;
    case ADAGRAD_EPS:
    case ADAGRAD_INITIAL:
        flatopt_base_params_init(&b, sizeof b, FLATOPT_ADAGRAD);
        if (r->field == ADAGRAD_EPS) b.eps = r->value;
        else b.initial_accumulator = r->value;
        break;
    case RMSPROP_ALPHA:
    case RMSPROP_MOMENTUM:
    case RMSPROP_INITIAL:
        flatopt_base_params_init(&b, sizeof b, FLATOPT_RMSPROP);
        b.centered = 1;
        if (r->field == RMSPROP_ALPHA) b.alpha = r->value;
        else if (r->field == RMSPROP_MOMENTUM) b.momentum = r->value;
        else b.initial_accumulator = r->value;
        break;
    case ADAMAX_EPS:
    case ADAMAX_B2:
        flatopt_base_params_init(&b, sizeof b, FLATOPT_ADAMAX);
        b.eps_outside_max = 1;
        if (r->field == ADAMAX_EPS) b.eps = r->value;
        else b.b2 = r->value;
        break;
    case NADAM_B1:
    case NADAM_DECOUPLED:
        flatopt_base_params_init(&b, sizeof b, FLATOPT_NADAM);
        if (r->field == NADAM_B1) b.b1 = r->value;
        else b.decoupled_weight_decay = r->value;
        break;
    case LION_B2:
    case LION_DECOUPLED:
        flatopt_base_params_init(&b, sizeof b, FLATOPT_LION);
        if (r->field == LION_B2) b.b2 = r->value;
        else b.decoupled_weight_decay = r->value;
        break;
    case ADABELIEF_EPS_ROOT:
        flatopt_base_params_init(&b, sizeof b, FLATOPT_ADABELIEF);
        b.eps_root = r->value;
        break;
    case YOGI_INITIAL:
        flatopt_base_params_init(&b, sizeof b, FLATOPT_YOGI);
        b.initial_accumulator = r->value;
        break;
    case ADADELTA_RHO:
        flatopt_base_params_init(&b, sizeof b, FLATOPT_ADADELTA);
        b.rho = r->value;
        break;
    case RPROP_ETA_MINUS:
    case RPROP_MAX_STEP:
        flatopt_base_params_init(&b, sizeof b, FLATOPT_RPROP);
        if (r->field == RPROP_ETA_MINUS) b.eta_minus = r->value;
        else b.max_step_size = r->value;
        break;
    }
    expect_refused(r->name, flatopt_optimizer_new(&c, &opt), r->named);
    if (opt != NULL) {
        fail(r->name, "a handle was returned");
        flatopt_optimizer_free(opt);
    }
}

/* The stateless Adam kernel with one argument at a value that is not finite as float. */
static void stateless_row(const char *name, int which, double value, const char *field)
{
    float p[4] = { 0.5f, -0.25f, 1.0f, 2.0f }, g[4] = { 0.1f, 0.2f, -0.3f, 0.0f };
    float m[4] = { 0 }, v[4] = { 0 };
    const float p0[4] = { 0.5f, -0.25f, 1.0f, 2.0f };
    flatopt_base_params hp;
    flatopt_step_args a;
    flatopt_base_params_init(&hp, sizeof hp, FLATOPT_ADAM);
    flatopt_step_args_init(&a, sizeof a);
    if (which == 0) a.lr = value;
    if (which == 1) a.weight_decay = value;
    if (which == 2) hp.eps = value;
    expect_refused(name, flatopt_adam_update(&hp, &a, p, g, m, v, NULL, NULL, 4), field);
    if (memcmp(p, p0, sizeof p) != 0) fail(name, "the parameters changed");
}

/* Exponential schedule per update with gamma = 1e10 from 1e-3: 1e37 at e = 4, 1e47 (inf as
 * float) at e = 5: updates 1 to 5 apply, the sixth is refused and changes nothing. */
static void growing_schedule_row(void)
{
    const char *name = "exponential schedule gamma = 1e10 per update";
    float p[3] = { 0.5f, -1.0f, 0.25f }, g[3] = { 1e-3f, -1e-3f, 2e-3f }, before[3];
    flatopt_config c;
    flatopt_base_params b = FLATOPT_BASE_PARAMS_INIT(FLATOPT_SGD);
    flatopt_schedule s;
    flatopt_optimizer *opt = NULL;
    uint64_t steps = 0;
    int t;
    flatopt_config_init(&c, sizeof c);
    c.base = &b;
    flatopt_schedule_init(&s, sizeof s, FLATOPT_SCHEDULE_EXPONENTIAL);
    s.base_lr = 1e-3;
    s.gamma = 1e10;
    c.schedule = &s;
    if (flatopt_optimizer_new(&c, &opt) != FLATOPT_OK ||
        flatopt_optimizer_add_param(opt, p, g, 3) != FLATOPT_OK) {
        fail(name, "setup failed");
        flatopt_optimizer_free(opt);
        return;
    }
    for (t = 0; t < 5; t++) {
        if (flatopt_optimizer_step(opt) != FLATOPT_OK) fail(name, "an early step was refused");
    }
    memcpy(before, p, sizeof p);
    expect_refused(name, flatopt_optimizer_step(opt), "lr");
    if (memcmp(p, before, sizeof p) != 0) fail(name, "the refused step changed the parameters");
    flatopt_optimizer_step_count(opt, &steps);
    if (steps != 5) fail(name, "the refused step was counted");
    flatopt_optimizer_free(opt);
}

int main(void)
{
    size_t i, n = sizeof k_config_rows / sizeof k_config_rows[0];
    for (i = 0; i < n; i++) config_row(&k_config_rows[i]);
    stateless_row("stateless lr = 1e39", 0, 1e39, "lr");
    stateless_row("stateless weight_decay = 1e39", 1, 1e39, "weight_decay");
    stateless_row("stateless hp eps = 1e-50", 2, 1e-50, "eps");
    stateless_row("stateless step size lr / (1 - b1) past float", 0, 3e38, "step size");
    growing_schedule_row();
    if (g_failed) {
        fprintf(stderr, "test_f32: %d rows failed\n", g_failed);
        return 1;
    }
    printf("test_f32: %zu rows passed\n", n + 5);
    return 0;
}
