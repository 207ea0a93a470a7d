/* A C program built against an installed flatopt, found through pkg-config or CMake only.
 * It checks that header and library agree and runs one Lookahead(Adam) step. */
#include <flatopt.h>
#include <stdio.h>
#include <string.h>

/* The README's run-time check ("Versioning"): the library must be of the header's ABI series
 * and at least the header's minor. */
static int flatopt_abi_ok(void) {
    uint32_t lib = flatopt_version_number(), hdr = FLATOPT_VERSION_NUMBER;
    uint32_t series = FLATOPT_VERSION_MAJOR == 0 ? 100 : 10000; /* 0.x: minor; then major */
    return lib / series == hdr / series && lib / 100 >= hdr / 100;
}

int main(void) {
    if (!flatopt_abi_ok() || flatopt_version_number() != FLATOPT_VERSION_NUMBER ||
        strcmp(flatopt_version(), FLATOPT_VERSION_STRING) != 0) {
        fprintf(stderr, "header %s does not match library %s\n", FLATOPT_VERSION_STRING,
                flatopt_version());
        return 1;
    }
    flatopt_config cfg;
    flatopt_optimizer *opt = NULL;
    float w[5] = {1, 2, 3, 4, 5};
    float g[5] = {0.5f, -0.5f, 0.25f, -0.25f, 1};
    uint64_t steps = 0;
    if (flatopt_config_init(&cfg, sizeof cfg) != FLATOPT_OK) return 1;
    cfg.lookahead = 1;
    cfg.lr = 0.1;
    if (flatopt_optimizer_new(&cfg, &opt) != FLATOPT_OK ||
        flatopt_optimizer_add_param(opt, w, g, 5) != FLATOPT_OK ||
        flatopt_optimizer_step(opt) != FLATOPT_OK ||
        flatopt_optimizer_step_count(opt, &steps) != FLATOPT_OK || steps != 1 || !(w[0] < 1)) {
        fprintf(stderr, "consumer failed: %s\n", flatopt_last_error_message());
        flatopt_optimizer_free(opt);
        return 1;
    }
    flatopt_optimizer_free(opt);
    printf("consumer: flatopt %s, one step ok (w[0] = %g, tier %s)\n", flatopt_version(),
           (double)w[0], flatopt_simd_tier_name(flatopt_default_simd_tier()));
    return 0;
}
