/* tests/c/canary.c: negative controls for the memory checkers of run.sh.
 *
 * A clean valgrind or AddressSanitizer report only means something if the checker can see
 * inside the library. This program breaks the C contract on purpose, so that run.sh can check
 * that the checker reports it, with the bad access inside libflatopt:
 *   canary overflow   flatopt_scale() on 13 floats of a 5-float heap block (the library
 *                     reads and writes past the end);
 *   canary leak       an optimizer with a registered buffer that is never freed.
 * It is never run as a test by itself.
 */
#define _POSIX_C_SOURCE 200809L
#include "flatopt.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static flatopt_optimizer *volatile g_sink;

static void *leak(void *arg)
{
    flatopt_config c;
    flatopt_optimizer *o = NULL;
    static float p[64], g[64];
    flatopt_config_init(&c, sizeof c);
    c.lookahead = 1;
    if (flatopt_optimizer_new(&c, &o) != FLATOPT_OK)
        exit(3);
    flatopt_optimizer_add_param(o, p, g, 64);
    g_sink = o;
    g_sink = NULL; /* the only pointer to the handle is gone */
    return arg;
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "overflow") == 0) {
        float *x = (float *)malloc(5 * sizeof(float));
        int st;
        if (!x)
            return 3;
        memset(x, 0, 5 * sizeof(float));
        st = (int)flatopt_scale(x, 13, 2.0f); /* 8 floats too many */
        printf("canary: flatopt_scale returned %d\n", st);
        free(x);
        return 0;
    }
    if (argc == 2 && strcmp(argv[1], "leak") == 0) {
        /* In a thread that has exited when the leak check runs: no register of a live thread
         * (LeakSanitizer scans them, vector registers included) can still hold an address
         * inside the handle. */
        pthread_t t;
        if (pthread_create(&t, NULL, leak, NULL) != 0 || pthread_join(t, NULL) != 0)
            return 3;
        printf("canary: leaked an optimizer\n");
        return 0;
    }
    fprintf(stderr, "usage: %s overflow|leak\n", argv[0]);
    return 2;
}
