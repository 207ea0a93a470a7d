/* train_mlp.c: flatopt's main demo, in plain C99.
 *
 * A 64-64-10 multilayer perceptron (tanh hidden layer, softmax cross-entropy) learns the
 * handwritten digits set (8x8 images, 1797 samples, 10 classes; scikit-learn's copy of the UCI
 * data, see examples/data/README.md). Forward and backward passes are written out below; the
 * weights and their gradients live in flat float buffers that the host owns and registers
 * with flatopt, which then updates them in place with one call per mini-batch.
 *
 * The same initial weights are trained twice, on the same batches: with plain Adam and with
 * Lookahead(Adam) (k = 5, alpha = 0.5); both use a cosine learning-rate schedule and
 * global-norm gradient clipping. Lookahead is evaluated with its slow weights, as Lookahead
 * users do. The program exits with status 1 if a run ends below MIN_TEST_ACCURACY on the
 * held-out set (the demo doubles as a smoke test) and 2 on any other failure.
 *
 * Build and run from the repository root: examples/c/run_demo.sh (`make demo`), which compiles
 *   cc -std=c99 -O2 -Wall -Wextra -pedantic -Werror -Iinclude examples/c/train_mlp.c \
 *      -o target/demo/train_mlp -Ltarget/release -lflatopt -lm -Wl,-rpath,'$ORIGIN'
 * next to a link named after the library's SONAME, then runs
 *   target/demo/train_mlp [examples/data/digits.bin]
 * Against an installed flatopt (make install): cc ... $(pkg-config --cflags --libs flatopt).
 */

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "flatopt.h"

/* ---- problem and training setup ------------------------------------------------------- */

#define N_IN 64     /* 8x8 pixels */
#define N_HID 64    /* hidden units */
#define N_OUT 10    /* classes */
#define N_TEST 360  /* held out; the remaining 1437 samples train */
#define BATCH 32
#define EPOCHS 20
#define LR 3e-3        /* peak learning rate of the cosine schedule */
#define LR_MIN 1e-4    /* its floor */
#define CLIP_NORM 5.0  /* global gradient-norm clipping */
#define LA_K 5         /* Lookahead sync period */
#define LA_ALPHA 0.5   /* Lookahead slow-weight step */
#define SEED_SPLIT UINT64_C(20240601) /* shuffle before the train/test split */
#define SEED_INIT UINT64_C(7)         /* initial weights (shared by both runs) */
#define SEED_BATCH UINT64_C(42)       /* per-epoch batch order (same for both runs) */
#define MIN_TEST_ACCURACY 0.85

#define DEFAULT_DATA "examples/data/digits.bin"

/* ---- error handling --------------------------------------------------------------------- */

static void die(const char *what)
{
    fprintf(stderr, "train_mlp: %s\n", what);
    exit(2);
}

/* Every flatopt call goes through CHECK: any status other than FLATOPT_OK stops the program
 * with the library's own message, which names the argument and value at fault. */
#define CHECK(call) check_status((call), #call, __LINE__)

static void check_status(flatopt_status st, const char *call, int line)
{
    if (st == FLATOPT_OK)
        return;
    fprintf(stderr, "train_mlp.c:%d: %s\n  -> %s (%d): %s\n", line, call,
            flatopt_status_str((int32_t)st), (int)st, flatopt_last_error_message());
    exit(2);
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        die("out of memory");
    return p;
}

/* ---- deterministic random numbers (splitmix64) ------------------------------------------ */

static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += UINT64_C(0x9E3779B97F4A7C15));
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

/* Uniform in [0, 1) with 53 random bits. */
static double rng_uniform(uint64_t *s) { return (double)(rng_next(s) >> 11) * (1.0 / 9007199254740992.0); }

/* Uniform in [0, n), unbiased (rejection sampling). */
static size_t rng_below(uint64_t *s, size_t n)
{
    uint64_t limit = UINT64_MAX - UINT64_MAX % (uint64_t)n, r;
    do
        r = rng_next(s);
    while (r >= limit);
    return (size_t)(r % (uint64_t)n);
}

static void shuffle(size_t *idx, size_t n, uint64_t *s)
{
    size_t i;
    for (i = n; i > 1; i--) {
        size_t j = rng_below(s, i), t = idx[i - 1];
        idx[i - 1] = idx[j];
        idx[j] = t;
    }
}

/* ---- the dataset (digits.bin, written by examples/data/make_digits.py) ------------------- */

#define HEADER_SIZE 20

typedef struct {
    size_t n;       /* samples */
    float *x;       /* n x N_IN, normalised */
    uint8_t *y;     /* n labels */
} dataset;

static uint32_t read_u32le(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint32_t fnv1a32(const unsigned char *p, size_t n)
{
    uint32_t h = UINT32_C(0x811C9DC5);
    size_t i;
    for (i = 0; i < n; i++) {
        h ^= p[i];
        h *= UINT32_C(0x01000193);
    }
    return h;
}

/* Reads and validates the file; returns the raw pixels (count x 64) and labels. */
static size_t load_digits(const char *path, uint8_t **pixels, uint8_t **labels)
{
    FILE *f = fopen(path, "rb");
    unsigned char *buf;
    long size;
    size_t count, i;
    char msg[512];

    if (!f) {
        snprintf(msg, sizeof msg, "cannot open %s (run from the repository root, or pass the "
                                  "path of digits.bin as the first argument)", path);
        die(msg);
    }
    if (fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0)
        die("cannot determine the size of the data file");
    buf = xmalloc((size_t)size);
    if (fread(buf, 1, (size_t)size, f) != (size_t)size)
        die("short read on the data file");
    fclose(f);

    if ((size_t)size < HEADER_SIZE || memcmp(buf, "FODIGIT1", 8) != 0)
        die("not a digits.bin file (bad magic)");
    count = read_u32le(buf + 8);
    if (buf[12] != 8 || buf[13] != 8 || buf[14] != N_OUT || buf[15] != 16)
        die("digits.bin: unexpected dimensions (want 8x8 images, 10 classes, pixels 0..16)");
    if (count <= N_TEST || (size_t)size != HEADER_SIZE + count * (N_IN + 1))
        die("digits.bin: size does not match the header");
    if (fnv1a32(buf + HEADER_SIZE, (size_t)size - HEADER_SIZE) != read_u32le(buf + 16))
        die("digits.bin: checksum mismatch (file corrupt?)");

    *pixels = xmalloc(count * N_IN);
    *labels = xmalloc(count);
    memcpy(*pixels, buf + HEADER_SIZE, count * N_IN);
    memcpy(*labels, buf + HEADER_SIZE + count * N_IN, count);
    free(buf);
    for (i = 0; i < count * N_IN; i++)
        if ((*pixels)[i] > 16)
            die("digits.bin: pixel value above 16");
    for (i = 0; i < count; i++)
        if ((*labels)[i] >= N_OUT)
            die("digits.bin: label out of range");
    return count;
}

/* ---- the model: four flat parameter buffers --------------------------------------------- */

enum { W1, B1, W2, B2, N_BUFS };
static const size_t buf_len[N_BUFS] = {N_HID * N_IN, N_HID, N_OUT * N_HID, N_OUT};
static const char *const buf_name[N_BUFS] = {"W1", "b1", "W2", "b2"};

typedef struct {
    float *b[N_BUFS]; /* W1: N_HID x N_IN, b1: N_HID, W2: N_OUT x N_HID, b2: N_OUT (row-major) */
} mlp;

static mlp mlp_alloc(void)
{
    mlp m;
    int k;
    for (k = 0; k < N_BUFS; k++)
        m.b[k] = xmalloc(buf_len[k] * sizeof(float));
    return m;
}

static void mlp_free(mlp *m)
{
    int k;
    for (k = 0; k < N_BUFS; k++)
        free(m->b[k]);
}

static void mlp_copy(mlp *dst, const mlp *src)
{
    int k;
    for (k = 0; k < N_BUFS; k++)
        memcpy(dst->b[k], src->b[k], buf_len[k] * sizeof(float));
}

static void mlp_zero(mlp *m)
{
    int k;
    for (k = 0; k < N_BUFS; k++)
        memset(m->b[k], 0, buf_len[k] * sizeof(float));
}

/* Glorot-uniform weights, zero biases. */
static void mlp_init(mlp *m, uint64_t seed)
{
    double a1 = sqrt(6.0 / (N_IN + N_HID)), a2 = sqrt(6.0 / (N_HID + N_OUT));
    size_t i;
    for (i = 0; i < buf_len[W1]; i++)
        m->b[W1][i] = (float)((2.0 * rng_uniform(&seed) - 1.0) * a1);
    for (i = 0; i < buf_len[W2]; i++)
        m->b[W2][i] = (float)((2.0 * rng_uniform(&seed) - 1.0) * a2);
    memset(m->b[B1], 0, buf_len[B1] * sizeof(float));
    memset(m->b[B2], 0, buf_len[B2] * sizeof(float));
}

/* Forward pass of one sample: hidden activations h and class probabilities p.
 * Returns the cross-entropy loss for label y. */
static double forward(const mlp *m, const float *x, int y, float *h, float *p)
{
    const float *w1 = m->b[W1], *b1 = m->b[B1], *w2 = m->b[W2], *b2 = m->b[B2];
    float z[N_OUT], zmax;
    double sum = 0.0;
    int j, k, o;

    for (j = 0; j < N_HID; j++) {
        float a = b1[j];
        for (k = 0; k < N_IN; k++)
            a += w1[j * N_IN + k] * x[k];
        h[j] = tanhf(a);
    }
    zmax = -INFINITY;
    for (o = 0; o < N_OUT; o++) {
        float a = b2[o];
        for (j = 0; j < N_HID; j++)
            a += w2[o * N_HID + j] * h[j];
        z[o] = a;
        if (a > zmax)
            zmax = a;
    }
    for (o = 0; o < N_OUT; o++) { /* softmax, shifted by the max for stability */
        p[o] = expf(z[o] - zmax);
        sum += p[o];
    }
    for (o = 0; o < N_OUT; o++)
        p[o] = (float)(p[o] / sum);
    return -(double)(z[y] - zmax) + log(sum);
}

/* Backward pass of one sample, accumulating scale * d(loss)/d(params) into g. */
static void backward(const mlp *m, const float *x, int y, const float *h, const float *p,
                     float scale, mlp *g)
{
    const float *w2 = m->b[W2];
    float *gw1 = g->b[W1], *gb1 = g->b[B1], *gw2 = g->b[W2], *gb2 = g->b[B2];
    float dz[N_OUT], dh[N_HID];
    int j, k, o;

    for (o = 0; o < N_OUT; o++) /* d loss / d logits = p - onehot(y) */
        dz[o] = scale * (p[o] - (o == y ? 1.0f : 0.0f));
    for (j = 0; j < N_HID; j++)
        dh[j] = 0.0f;
    for (o = 0; o < N_OUT; o++) {
        gb2[o] += dz[o];
        for (j = 0; j < N_HID; j++) {
            gw2[o * N_HID + j] += dz[o] * h[j];
            dh[j] += w2[o * N_HID + j] * dz[o];
        }
    }
    for (j = 0; j < N_HID; j++) {
        float da = dh[j] * (1.0f - h[j] * h[j]); /* tanh' = 1 - tanh^2 */
        gb1[j] += da;
        for (k = 0; k < N_IN; k++)
            gw1[j * N_IN + k] += da * x[k];
    }
}

/* Mean loss and accuracy of model m on a dataset. */
static void evaluate(const mlp *m, const dataset *d, double *loss, double *acc)
{
    float h[N_HID], p[N_OUT];
    double total = 0.0;
    size_t i, correct = 0;
    int o;

    for (i = 0; i < d->n; i++) {
        int best = 0;
        total += forward(m, d->x + i * N_IN, d->y[i], h, p);
        for (o = 1; o < N_OUT; o++)
            if (p[o] > p[best])
                best = o;
        correct += best == d->y[i];
    }
    *loss = total / (double)d->n;
    *acc = (double)correct / (double)d->n;
}

/* ---- one training run ------------------------------------------------------------------- */

typedef struct {
    double test_acc, train_acc, seconds;
    uint32_t tier;
} run_result;

static run_result train(const char *name, int lookahead, const mlp *init, const dataset *tr,
                        const dataset *te)
{
    const size_t batches = (tr->n + BATCH - 1) / BATCH;
    flatopt_config cfg;
    flatopt_base_params base;
    flatopt_schedule sched;
    flatopt_optimizer *opt = NULL;
    mlp model = mlp_alloc(), grad = mlp_alloc(), eval = mlp_alloc();
    size_t *order = xmalloc(tr->n * sizeof(size_t));
    uint64_t rng = SEED_BATCH, steps = 0, skipped = 0;
    float h[N_HID], p[N_OUT];
    run_result res;
    clock_t t0;
    size_t i, b;
    int k, epoch;

    /* Same starting point and batch order for every run. */
    mlp_copy(&model, init);
    for (i = 0; i < tr->n; i++)
        order[i] = i;

    /* Adam (b1 0.9, b2 0.999, eps 1e-8), cosine-annealed from LR to LR_MIN over the whole
     * run (the schedule advances once per update), gradients clipped to global norm
     * CLIP_NORM; optionally wrapped in Lookahead. */
    CHECK(flatopt_config_init(&cfg, sizeof cfg));
    CHECK(flatopt_base_params_init(&base, sizeof base, FLATOPT_ADAM));
    cfg.base = &base; /* read by flatopt_optimizer_new */
    CHECK(flatopt_schedule_init(&sched, sizeof sched, FLATOPT_SCHEDULE_COSINE_ANNEALING));
    sched.base_lr = LR;
    sched.eta_min = LR_MIN;
    sched.period = (uint64_t)EPOCHS * batches; /* T_max, in updates */
    cfg.schedule = &sched;                     /* copied by flatopt_optimizer_new */
    cfg.grad_clip_norm = CLIP_NORM;
    if (lookahead) {
        cfg.lookahead = 1;
        cfg.sync_period = LA_K;
        cfg.alpha = LA_ALPHA;
    }
    CHECK(flatopt_optimizer_new(&cfg, &opt));

    /* Register every parameter buffer with its gradient buffer. flatopt keeps pointers: the
     * buffers are updated in place by each step. */
    for (k = 0; k < N_BUFS; k++)
        CHECK(flatopt_optimizer_add_param(opt, model.b[k], grad.b[k], buf_len[k]));
    CHECK(flatopt_optimizer_simd_tier(opt, &res.tier));

    printf("\n== %s ==\n", name);
    printf("epoch      lr    loss   train    test%s\n",
           lookahead ? "   (slow weights)" : "");

    t0 = clock();
    for (epoch = 1; epoch <= EPOCHS; epoch++) {
        double loss, train_acc, test_loss, test_acc;
        float lr;

        CHECK(flatopt_optimizer_current_lr(opt, &lr)); /* lr of the epoch's first update */
        shuffle(order, tr->n, &rng);
        for (b = 0; b < batches; b++) {
            size_t lo = b * BATCH, hi = lo + BATCH < tr->n ? lo + BATCH : tr->n;
            float scale = 1.0f / (float)(hi - lo); /* mean loss over the batch */
            flatopt_status st;

            mlp_zero(&grad);
            for (i = lo; i < hi; i++) {
                const float *x = tr->x + order[i] * N_IN;
                int y = tr->y[order[i]];
                forward(&model, x, y, h, p);
                backward(&model, x, y, h, p, scale, &grad);
            }
            /* One fused update of all four buffers (clip, Adam, Lookahead sync every
             * LA_K updates, schedule). FLATOPT_SKIPPED means a non-finite gradient: the
             * update was skipped and nothing changed. */
            st = flatopt_optimizer_step(opt);
            if (st == FLATOPT_SKIPPED)
                fprintf(stderr, "warning: update skipped: %s\n", flatopt_last_error_message());
            else
                CHECK(st);
        }

        /* Evaluation weights: the fast weights for Adam, the slow weights for Lookahead. */
        if (lookahead) {
            for (k = 0; k < N_BUFS; k++)
                CHECK(flatopt_optimizer_copy_slow_weights(opt, (size_t)k, eval.b[k],
                                                          buf_len[k]));
        } else {
            mlp_copy(&eval, &model);
        }
        evaluate(&eval, tr, &loss, &train_acc);
        evaluate(&eval, te, &test_loss, &test_acc);
        printf("%5d  %.4f  %.4f  %5.1f%%  %5.1f%%\n", epoch, (double)lr, loss,
               100.0 * train_acc, 100.0 * test_acc);
        res.train_acc = train_acc;
        res.test_acc = test_acc;
    }
    res.seconds = (double)(clock() - t0) / CLOCKS_PER_SEC;

    CHECK(flatopt_optimizer_step_count(opt, &steps));
    CHECK(flatopt_optimizer_skipped_count(opt, &skipped));
    printf("%llu updates (%llu skipped), %.2f s CPU\n", (unsigned long long)steps,
           (unsigned long long)skipped, res.seconds);
    if (steps + skipped != (uint64_t)EPOCHS * batches)
        die("step counter does not match the number of steps taken");

    flatopt_optimizer_free(opt);
    mlp_free(&model);
    mlp_free(&grad);
    mlp_free(&eval);
    free(order);
    return res;
}

/* ---- main ------------------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    const char *path = argc > 1 ? argv[1] : DEFAULT_DATA;
    uint8_t *pixels, *labels;
    size_t count, n_train, i, j, *perm;
    dataset tr, te;
    double mean[N_IN], sd[N_IN];
    uint64_t rng = SEED_SPLIT;
    run_result adam, la;
    mlp init;
    uint32_t libver = flatopt_version_number();
    int failed;

    if (argc > 2) {
        fprintf(stderr, "usage: %s [digits.bin]\n", argv[0]);
        return 2;
    }
    /* The header declares what this program may call: the library must be at least as new
     * and of the same major version. */
    if (libver / 10000 != FLATOPT_VERSION_MAJOR || libver < FLATOPT_VERSION_NUMBER) {
        fprintf(stderr, "train_mlp: header is flatopt %s but the library is %s\n",
                FLATOPT_VERSION_STRING, flatopt_version());
        return 2;
    }

    /* Data: deterministic shuffle, then split into train and test. */
    count = load_digits(path, &pixels, &labels);
    n_train = count - N_TEST;
    perm = xmalloc(count * sizeof(size_t));
    for (i = 0; i < count; i++)
        perm[i] = i;
    shuffle(perm, count, &rng);

    tr.n = n_train;
    te.n = N_TEST;
    tr.x = xmalloc(n_train * N_IN * sizeof(float));
    te.x = xmalloc(N_TEST * N_IN * sizeof(float));
    tr.y = xmalloc(n_train);
    te.y = xmalloc(N_TEST);

    /* Standardise each pixel with the mean and standard deviation of the training part
     * (pixels that are constant there, such as some corners, are only centred). */
    for (j = 0; j < N_IN; j++) {
        double s = 0.0, s2 = 0.0;
        for (i = 0; i < n_train; i++) {
            double v = pixels[perm[i] * N_IN + j];
            s += v;
            s2 += v * v;
        }
        mean[j] = s / (double)n_train;
        sd[j] = sqrt(fmax(s2 / (double)n_train - mean[j] * mean[j], 0.0));
        if (sd[j] < 1e-6)
            sd[j] = 1.0;
    }
    for (i = 0; i < count; i++) {
        const uint8_t *src = pixels + perm[i] * N_IN;
        dataset *d = i < n_train ? &tr : &te;
        size_t r = i < n_train ? i : i - n_train;
        for (j = 0; j < N_IN; j++)
            d->x[r * N_IN + j] = (float)(((double)src[j] - mean[j]) / sd[j]);
        d->y[r] = labels[perm[i]];
    }
    free(pixels);
    free(labels);
    free(perm);

    printf("flatopt %s | SIMD tier %s (process default) | digits: %lu train, %lu test | "
           "MLP %d-%d-%d tanh, %lu parameters\n",
           flatopt_version(), flatopt_simd_tier_name(flatopt_default_simd_tier()),
           (unsigned long)tr.n, (unsigned long)te.n, N_IN, N_HID, N_OUT,
           (unsigned long)(buf_len[W1] + buf_len[B1] + buf_len[W2] + buf_len[B2]));
    printf("flat buffers registered with flatopt:");
    for (j = 0; j < N_BUFS; j++)
        printf(" %s[%lu]", buf_name[j], (unsigned long)buf_len[j]);
    printf(" (+ one gradient buffer each)\n");
    printf("batch %d, %d epochs, cosine lr %g -> %g, clip_norm %g, Lookahead k=%d alpha=%g\n",
           BATCH, EPOCHS, LR, LR_MIN, CLIP_NORM, LA_K, LA_ALPHA);

    /* One set of initial weights, trained twice. */
    init = mlp_alloc();
    mlp_init(&init, SEED_INIT);
    adam = train("Adam", 0, &init, &tr, &te);
    la = train("Lookahead(Adam)", 1, &init, &tr, &te);
    mlp_free(&init);

    printf("\nfinal test accuracy: Adam %.2f%% | Lookahead(Adam) %.2f%% (slow weights) | "
           "SIMD tier %s | flatopt %s\n",
           100.0 * adam.test_acc, 100.0 * la.test_acc, flatopt_simd_tier_name(la.tier),
           flatopt_version());

    failed = adam.test_acc < MIN_TEST_ACCURACY || la.test_acc < MIN_TEST_ACCURACY;
    if (failed)
        fprintf(stderr, "FAIL: test accuracy below %.0f%%\n", 100.0 * MIN_TEST_ACCURACY);

    free(tr.x);
    free(tr.y);
    free(te.x);
    free(te.y);
    return failed ? 1 : 0;
}
