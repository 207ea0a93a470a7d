/* The header alone: included twice, compiled as C99 and as C++17 with every warning an error
 * (tests/c/run.sh). Touches one item of each kind so that the declarations are really used. */
#include "flatopt.h"
#include "flatopt.h"

int main(void)
{
    flatopt_config cfg;
    flatopt_status st = flatopt_config_init(&cfg);
    enum flatopt_simd_tier tier = FLATOPT_SIMD_DEFAULT;
    return (st == FLATOPT_OK && FLATOPT_VERSION_NUMBER == flatopt_version_number() &&
            tier == FLATOPT_SIMD_DEFAULT)
               ? 0
               : 1;
}
