/* The header alone: included twice, compiled as C99 and as C++17 with every warning an error
 * (tests/c/run.sh). Touches one item of each kind so that the declarations are really used, and
 * the _INIT macros as constant initializers of statics (C99 needs constant expressions there). */
#include "flatopt.h"
#include "flatopt.h"

static const flatopt_config k_cfg = FLATOPT_CONFIG_INIT;
static const flatopt_base_params k_base = FLATOPT_BASE_PARAMS_INIT(FLATOPT_ADAMW);
static const flatopt_schedule k_sched = FLATOPT_SCHEDULE_INIT(FLATOPT_SCHEDULE_EXPONENTIAL_DECAY);
static const flatopt_step_args k_args = FLATOPT_STEP_ARGS_INIT;

int main(void)
{
    flatopt_config cfg;
    flatopt_status st = flatopt_config_init(&cfg, sizeof cfg);
    enum flatopt_simd_tier tier = FLATOPT_SIMD_DEFAULT;
    int macros = k_cfg.struct_size == FLATOPT_CONFIG_SIZE_V2 && k_cfg.base == NULL &&
                 k_cfg.state_dtype == FLATOPT_STATE_FLOAT32 &&
                 k_base.decoupled_weight_decay == 0.01 && k_base.kind == FLATOPT_ADAMW &&
                 k_sched.end_value != k_sched.end_value /* NaN: no clamp */ &&
                 k_args.struct_size == FLATOPT_STEP_ARGS_SIZE_V1;
    return (st == FLATOPT_OK && FLATOPT_VERSION_NUMBER == flatopt_version_number() &&
            tier == FLATOPT_SIMD_DEFAULT && macros && cfg.lr == k_cfg.lr)
               ? 0
               : 1;
}
