/* bindings/csharp/test/cbench.c: the C side of the C#-over-C step overhead measurement.
 *
 * Built as a small shared library that the C# test calls through P/Invoke, so that the C loop
 * and the C# loop run in the same process, on the same optimizer and buffers, in interleaved
 * blocks (the machine's noise then hits both alike). One call times `steps` calls of
 * flatopt_optimizer_step in a plain C loop and returns the nanoseconds per step; a step that
 * does not return FLATOPT_OK makes it return -1.
 */
#define _POSIX_C_SOURCE 200809L

#include "flatopt.h"

#include <time.h>

double cbench_step_ns(flatopt_optimizer *opt, int steps);

double cbench_step_ns(flatopt_optimizer *opt, int steps)
{
    struct timespec a, b;
    int i;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (i = 0; i < steps; i++)
        if (flatopt_optimizer_step(opt) != FLATOPT_OK)
            return -1.0;
    clock_gettime(CLOCK_MONOTONIC, &b);
    return ((double)(b.tv_sec - a.tv_sec) * 1e9 + (double)(b.tv_nsec - a.tv_nsec)) / steps;
}
