/* examples/mpi/train_dp.c: data-parallel training with a sharded flatopt optimizer (ZeRO
 * stage 1) over MPI, in C, checking itself against one process bit for bit.
 *
 *   mpicc -std=c99 -O2 -Iinclude examples/mpi/train_dp.c -Ltarget/release -lflatopt -lm
 *   mpirun -np 3 ./a.out
 *
 * The model: an MLP 32-256-16 (tanh) regressing a fixed random "teacher" network's outputs
 * (12,560 parameters in one flat buffer: 4 sum-of-squares blocks of 4096, the last partial).
 * Lookahead(Adam) with clipping by global norm and weight decay; at step 7 one gradient holds
 * a NaN (every rank must skip that step).
 *
 * Each rank owns a block-aligned shard of the flat buffer and registers only that shard with
 * its optimizer. One step:
 *   1. rank r computes the gradients of its contiguous run of the 12 micro-batches;
 *   2. MPI_Alltoallv hands each rank the slices of all micro-batch gradients in its shard, which
 *      it adds in global micro-batch order (a reduce-scatter whose order does not depend on the
 *      rank count, unlike MPI_Allreduce's);
 *   3. flatopt_optimizer_sum_squares_partials, MPI_Allgatherv of the partials, their sum in
 *      global block order from 0.0, flatopt_optimizer_step_with_sum_squares;
 *   4. MPI_Allgatherv of the updated parameter shards.
 * Rank 0 also trains the same model alone with the plain flatopt_optimizer_step over the whole
 * buffer, and compares the parameters after every step and the Lookahead slow weights at the
 * end, bit for bit. Exit status 0 only if they are identical (on every rank count).
 */
#include <math.h>
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <flatopt.h>

enum { D_IN = 32, HID = 256, D_OUT = 16, N_MICRO = 12, MICRO = 8, STEPS = 100, NAN_STEP = 7 };
enum {
    OFF_W1 = 0,
    OFF_B1 = OFF_W1 + D_IN * HID,
    OFF_W2 = OFF_B1 + HID,
    OFF_B2 = OFF_W2 + HID * D_OUT,
    N_PARAMS = OFF_B2 + D_OUT /* 12,560 */
};

static int g_rank;

static void die(const char *what, flatopt_status st)
{
    fprintf(stderr, "rank %d: %s: %s (%s)\n", g_rank, what, flatopt_status_str(st),
            flatopt_last_error_message());
    MPI_Abort(MPI_COMM_WORLD, 1);
}

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    return p;
}

/* Deterministic pseudo-random numbers, the same on every rank. */
static double hash_uniform(uint64_t a, uint64_t b) /* [-1, 1) */
{
    uint64_t z = a * 0x9E3779B97F4A7C15ull + b * 0xBF58476D1CE4E5B9ull + 0x94D049BB133111EBull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (double)(z >> 11) / 4503599627370496.0 - 1.0;
}

/* Sample `i` of step `t`: input x and the teacher's target y. */
static void sample(long t, int i, const float *teacher, float *x, float *y)
{
    int a, b;
    for (a = 0; a < D_IN; a++)
        x[a] = (float)hash_uniform((uint64_t)(t * 1000 + i), (uint64_t)a);
    for (b = 0; b < D_OUT; b++) {
        float s = 0.0f;
        for (a = 0; a < D_IN; a++)
            s += x[a] * teacher[a * D_OUT + b];
        y[b] = tanhf(s);
    }
}

/* Gradient of (1 / batch) * sum of squared errors of micro-batch `mb` of step `t` into g;
 * returns the micro-batch's sum of squared errors. */
static double micro_grad(const float *p, const float *teacher, long t, int mb, float *g)
{
    float x[D_IN], y[D_OUT], h[HID], dout[D_OUT], dh[HID];
    double sse = 0.0;
    const float scale = 1.0f / (float)(N_MICRO * MICRO);
    int s, a, j, k;
    memset(g, 0, N_PARAMS * sizeof(float));
    for (s = 0; s < MICRO; s++) {
        sample(t, mb * MICRO + s, teacher, x, y);
        for (j = 0; j < HID; j++) {
            float z = p[OFF_B1 + j];
            for (a = 0; a < D_IN; a++)
                z += x[a] * p[OFF_W1 + a * HID + j];
            h[j] = tanhf(z);
        }
        for (k = 0; k < D_OUT; k++) {
            float z = p[OFF_B2 + k];
            for (j = 0; j < HID; j++)
                z += h[j] * p[OFF_W2 + j * D_OUT + k];
            sse += (double)(z - y[k]) * (double)(z - y[k]);
            dout[k] = 2.0f * (z - y[k]) * scale;
        }
        for (j = 0; j < HID; j++) {
            float d = 0.0f;
            for (k = 0; k < D_OUT; k++) {
                g[OFF_W2 + j * D_OUT + k] += h[j] * dout[k];
                d += p[OFF_W2 + j * D_OUT + k] * dout[k];
            }
            dh[j] = d * (1.0f - h[j] * h[j]);
        }
        for (k = 0; k < D_OUT; k++)
            g[OFF_B2 + k] += dout[k];
        for (a = 0; a < D_IN; a++)
            for (j = 0; j < HID; j++)
                g[OFF_W1 + a * HID + j] += x[a] * dh[j];
        for (j = 0; j < HID; j++)
            g[OFF_B1 + j] += dh[j];
    }
    if (t == NAN_STEP && mb == N_MICRO - 1)
        g[N_PARAMS - 3] = NAN; /* in the last shard, computed by the last rank */
    return sse;
}

/* Block-aligned shard of rank r of `size` (earlier ranks get the extra blocks). */
static void shard(int r, int size, size_t block, size_t *b, size_t *e)
{
    size_t n_blocks = (N_PARAMS + block - 1) / block, base = n_blocks / (size_t)size,
           extra = n_blocks % (size_t)size, first;
    first = (size_t)r * base + ((size_t)r < extra ? (size_t)r : extra);
    *b = first * block < N_PARAMS ? first * block : N_PARAMS;
    first += base + ((size_t)r < extra ? 1 : 0);
    *e = first * block < N_PARAMS ? first * block : N_PARAMS;
}

static void micro_range(int r, int size, int *lo, int *hi)
{
    int base = N_MICRO / size, extra = N_MICRO % size;
    *lo = r * base + (r < extra ? r : extra);
    *hi = *lo + base + (r < extra ? 1 : 0);
}

static flatopt_optimizer *make_optimizer(float *p, const float *g, size_t n)
{
    flatopt_config c;
    flatopt_optimizer *opt = NULL;
    flatopt_status st;
    flatopt_config_init(&c, sizeof c);
    c.lr = 3e-3;
    c.lookahead = 1;
    c.sync_period = 5;
    c.alpha = 0.5;
    c.grad_clip_norm = 0.5;
    c.weight_decay = 1e-4;
    if ((st = flatopt_optimizer_new(&c, &opt)) != FLATOPT_OK)
        die("flatopt_optimizer_new", st);
    if ((st = flatopt_optimizer_add_param(opt, p, g, n)) != FLATOPT_OK)
        die("flatopt_optimizer_add_param", st);
    return opt;
}

int main(int argc, char **argv)
{
    int size, r, i, lo, hi, mismatch_step = -1;
    size_t block, b, e, n, k, n_blocks = 0, total_blocks = 0;
    float *params, *teacher, *mine, *grad, *sendbuf, *recvbuf, *ref_p = NULL, *ref_g = NULL,
                                                               *micro = NULL, *slow, *all_slow = NULL;
    double *partials, *all_partials;
    int nan_skipped = 0, ok = 1, all_ok = 0;
    int *send_counts, *send_displs, *recv_counts, *recv_displs, *shard_counts, *shard_displs,
        *block_counts, *block_displs;
    flatopt_optimizer *opt, *ref = NULL;
    flatopt_status st, ref_st = FLATOPT_OK;
    long t;
    uint64_t applied = 0, skipped = 0;
    double t0;

    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    block = flatopt_sum_squares_block_size();
    if ((size_t)size > (N_PARAMS + block - 1) / block || size > N_MICRO) {
        if (g_rank == 0)
            fprintf(stderr, "train_dp: at most %lu ranks (one sum-of-squares block each)\n",
                    (unsigned long)((N_PARAMS + block - 1) / block));
        MPI_Finalize();
        return 2;
    }
    shard(g_rank, size, block, &b, &e);
    n = e - b;
    micro_range(g_rank, size, &lo, &hi);

    params = (float *)xcalloc(N_PARAMS, sizeof(float));
    teacher = (float *)xcalloc(D_IN * D_OUT, sizeof(float));
    for (k = 0; k < N_PARAMS; k++)
        params[k] = k < OFF_B1   ? (float)(hash_uniform(1, k) * 0.3)
                    : k < OFF_W2 ? 0.0f
                    : k < OFF_B2 ? (float)(hash_uniform(2, k) * 0.1)
                                 : 0.0f;
    for (k = 0; k < D_IN * D_OUT; k++)
        teacher[k] = (float)(hash_uniform(3, k) * 0.4);
    mine = (float *)xcalloc((size_t)(hi - lo) * N_PARAMS, sizeof(float));
    grad = (float *)xcalloc(n, sizeof(float));
    sendbuf = (float *)xcalloc((size_t)(hi - lo) * N_PARAMS, sizeof(float));
    recvbuf = (float *)xcalloc((size_t)N_MICRO * n, sizeof(float));
    send_counts = (int *)xcalloc((size_t)size, sizeof(int));
    send_displs = (int *)xcalloc((size_t)size, sizeof(int));
    recv_counts = (int *)xcalloc((size_t)size, sizeof(int));
    recv_displs = (int *)xcalloc((size_t)size, sizeof(int));
    shard_counts = (int *)xcalloc((size_t)size, sizeof(int));
    shard_displs = (int *)xcalloc((size_t)size, sizeof(int));
    block_counts = (int *)xcalloc((size_t)size, sizeof(int));
    block_displs = (int *)xcalloc((size_t)size, sizeof(int));
    for (r = 0; r < size; r++) {
        size_t rb, re;
        int rlo, rhi;
        shard(r, size, block, &rb, &re);
        micro_range(r, size, &rlo, &rhi);
        send_counts[r] = (hi - lo) * (int)(re - rb);
        send_displs[r] = r ? send_displs[r - 1] + send_counts[r - 1] : 0;
        recv_counts[r] = (rhi - rlo) * (int)n;
        recv_displs[r] = r ? recv_displs[r - 1] + recv_counts[r - 1] : 0;
        shard_counts[r] = (int)(re - rb);
        shard_displs[r] = (int)rb;
        block_counts[r] = (int)((re - rb + block - 1) / block);
        block_displs[r] = (int)total_blocks;
        total_blocks += (size_t)block_counts[r];
    }

    opt = make_optimizer(params + b, grad, n);
    if ((st = flatopt_optimizer_sum_squares_block_count(opt, &n_blocks)) != FLATOPT_OK)
        die("flatopt_optimizer_sum_squares_block_count", st);
    partials = (double *)xcalloc(n_blocks, sizeof(double));
    all_partials = (double *)xcalloc(total_blocks, sizeof(double));
    if (g_rank == 0) { /* the single-process reference */
        ref_p = (float *)xcalloc(N_PARAMS, sizeof(float));
        ref_g = (float *)xcalloc(N_PARAMS, sizeof(float));
        micro = (float *)xcalloc(N_PARAMS, sizeof(float));
        memcpy(ref_p, params, N_PARAMS * sizeof(float));
        ref = make_optimizer(ref_p, ref_g, N_PARAMS);
        printf("train_dp: %d rank(s), MLP %d-%d-%d (%d params, %lu blocks of %lu), "
               "Lookahead(Adam) + clip_norm, %d micro-batches of %d, %d steps\n",
               size, D_IN, HID, D_OUT, N_PARAMS, (unsigned long)total_blocks,
               (unsigned long)block, N_MICRO, MICRO, STEPS);
    }

    t0 = MPI_Wtime();
    for (t = 0; t < STEPS; t++) {
        double sum = 0.0;
        for (i = lo; i < hi; i++)
            micro_grad(params, teacher, t, i, mine + (size_t)(i - lo) * N_PARAMS);
        /* 2. fixed-order reduce-scatter */
        for (r = 0, k = 0; r < size; r++) {
            size_t rb = (size_t)shard_displs[r], rn = (size_t)shard_counts[r];
            for (i = 0; i < hi - lo; i++, k += rn)
                memcpy(sendbuf + k, mine + (size_t)i * N_PARAMS + rb, rn * sizeof(float));
        }
        MPI_Alltoallv(sendbuf, send_counts, send_displs, MPI_FLOAT, recvbuf, recv_counts,
                      recv_displs, MPI_FLOAT, MPI_COMM_WORLD);
        memcpy(grad, recvbuf, n * sizeof(float)); /* micro-batch 0 ... */
        for (i = 1; i < N_MICRO; i++)             /* ... + 1 + 2 ..., in this order */
            for (k = 0; k < n; k++)
                grad[k] += recvbuf[(size_t)i * n + k];
        /* 3. two-phase step with the global sum of squares */
        if ((st = flatopt_optimizer_sum_squares_partials(opt, partials, n_blocks)) != FLATOPT_OK)
            die("flatopt_optimizer_sum_squares_partials", st);
        MPI_Allgatherv(partials, (int)n_blocks, MPI_DOUBLE, all_partials, block_counts,
                       block_displs, MPI_DOUBLE, MPI_COMM_WORLD);
        for (k = 0; k < total_blocks; k++)
            sum += all_partials[k];
        st = flatopt_optimizer_step_with_sum_squares(opt, sum);
        if (st != FLATOPT_OK && st != FLATOPT_SKIPPED)
            die("flatopt_optimizer_step_with_sum_squares", st);
        /* 4. everyone gets the whole model back */
        MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, params, shard_counts, shard_displs,
                       MPI_FLOAT, MPI_COMM_WORLD);

        if (g_rank == 0) { /* the reference: every micro-batch here, summed in order */
            double loss = 0.0;
            for (i = 0; i < N_MICRO; i++) {
                loss += micro_grad(ref_p, teacher, t, i, i == 0 ? ref_g : micro);
                if (i > 0)
                    for (k = 0; k < N_PARAMS; k++)
                        ref_g[k] += micro[k];
            }
            if (t % 20 == 0 || t == STEPS - 1)
                printf("step %3ld  mean squared error %.5f\n", t,
                       loss / (double)(N_MICRO * MICRO * D_OUT));
            ref_st = flatopt_optimizer_step(ref);
            if (ref_st != st)
                fprintf(stderr, "step %ld: sharded status %d, reference %d\n", t, (int)st,
                        (int)ref_st);
            if (mismatch_step < 0 &&
                (ref_st != st || memcmp(ref_p, params, N_PARAMS * sizeof(float)) != 0))
                mismatch_step = (int)t;
            if (t == NAN_STEP)
                nan_skipped = st == FLATOPT_SKIPPED;
        }
    }
    /* Slow weights of every shard, gathered on rank 0. */
    slow = (float *)xcalloc(n, sizeof(float));
    if ((st = flatopt_optimizer_copy_slow_weights(opt, 0, slow, n)) != FLATOPT_OK)
        die("flatopt_optimizer_copy_slow_weights", st);
    if (g_rank == 0)
        all_slow = (float *)xcalloc(N_PARAMS, sizeof(float));
    MPI_Gatherv(slow, (int)n, MPI_FLOAT, all_slow, shard_counts, shard_displs, MPI_FLOAT, 0,
                MPI_COMM_WORLD);
    flatopt_optimizer_step_count(opt, &applied);
    flatopt_optimizer_skipped_count(opt, &skipped);

    if (g_rank == 0) {
        float *ref_slow = (float *)xcalloc(N_PARAMS, sizeof(float));
        int slow_same;
        flatopt_optimizer_copy_slow_weights(ref, 0, ref_slow, N_PARAMS);
        slow_same = memcmp(ref_slow, all_slow, N_PARAMS * sizeof(float)) == 0;
        printf("train_dp: %d steps in %.2f s: %llu applied, %llu skipped (the NaN at step %d %s)\n",
               STEPS, MPI_Wtime() - t0, (unsigned long long)applied,
               (unsigned long long)skipped, NAN_STEP,
               nan_skipped ? "skipped on every rank" : "NOT skipped");
        ok = mismatch_step < 0 && slow_same && skipped == 1 && nan_skipped;
        if (ok)
            printf("train_dp: %d rank(s): parameters after every step and final slow weights "
                   "bit-identical to one process\n", size);
        else
            printf("train_dp: FAILED: %d rank(s) differ from one process (first at step %d; slow "
                   "weights %s)\n", size, mismatch_step, slow_same ? "equal" : "differ");
        flatopt_optimizer_free(ref);
        free(ref_slow);
        free(ref_p);
        free(ref_g);
        free(micro);
        free(all_slow);
    }
    {
        MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
        flatopt_optimizer_free(opt);
        free(params);
        free(teacher);
        free(mine);
        free(grad);
        free(sendbuf);
        free(recvbuf);
        free(partials);
        free(all_partials);
        free(slow);
        free(send_counts);
        free(send_displs);
        free(recv_counts);
        free(recv_displs);
        free(shard_counts);
        free(shard_displs);
        free(block_counts);
        free(block_displs);
        MPI_Finalize();
        return all_ok ? 0 : 1;
    }
}
