/* A newer caller (tests/c/run.sh, stage "ABI compatibility"): structs as a later flatopt.h
 * would declare them, the current fields followed by fields this library does not know. The
 * rules of "Versioned structs" in flatopt.h, checked one row per line:
 * - _init(ptr, size) with the larger size writes the defaults it knows, zeros after them, and
 *   nothing past `size`;
 * - a larger struct whose extra bytes are all zero is accepted and behaves exactly like the
 *   library's own struct (same results, bit for bit);
 * - a non-zero extra byte is refused with FLATOPT_ERR_UNSUPPORTED, naming the byte, and the
 *   refused call changes nothing. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "flatopt.h"

#define LEN 29
#define CANARY 0x5A

typedef struct config_next {
    flatopt_config c;
    uint64_t future_flags;
    double future_value;
} config_next;
typedef struct base_next {
    flatopt_base_params b;
    double future_value;
} base_next;
typedef struct schedule_next {
    flatopt_schedule s;
    uint64_t future_count;
} schedule_next;
typedef struct args_next {
    flatopt_step_args a;
    double future_value;
} args_next;

static int g_rows, g_failed;

static void row(int ok, const char *what)
{
    g_rows++;
    if (!ok)
        g_failed++;
    printf("newer_caller: %-6s %s%s%s\n", ok ? "ok" : "FAILED", what, ok ? "" : ": ",
           ok ? "" : flatopt_last_error_message());
}

/* `n` bytes after `used` bytes of `p` are still CANARY. */
static int untouched(const void *p, size_t used, size_t n)
{
    const unsigned char *b = (const unsigned char *)p + used;
    size_t i;
    for (i = 0; i < n; i++)
        if (b[i] != CANARY)
            return 0;
    return 1;
}

static int zero(const void *p, size_t from, size_t to)
{
    const unsigned char *b = (const unsigned char *)p;
    for (; from < to; from++)
        if (b[from] != 0)
            return 0;
    return 1;
}

/* Runs 6 Adam steps with the given config and returns the final first parameter's bits. */
static flatopt_status train(const flatopt_config *c, float *p)
{
    float g[LEN];
    flatopt_optimizer *opt = NULL;
    flatopt_status st = flatopt_optimizer_new(c, &opt);
    int i, t;
    if (st != FLATOPT_OK)
        return st;
    for (i = 0; i < LEN; i++)
        p[i] = 1.0f + 0.03f * (float)i;
    st = flatopt_optimizer_add_param(opt, p, g, LEN);
    for (t = 0; st == FLATOPT_OK && t < 6; t++) {
        for (i = 0; i < LEN; i++)
            g[i] = (float)cos(0.5 * t - 0.2 * i);
        st = flatopt_optimizer_step(opt);
    }
    flatopt_optimizer_free(opt);
    return st;
}

static int has(const char *needle)
{
    return strstr(flatopt_last_error_message(), needle) != NULL;
}

int main(void)
{
    /* Room for the larger of the two newer structs and a canary tail. */
    unsigned char buf[(sizeof(config_next) > sizeof(base_next) ? sizeof(config_next)
                                                               : sizeof(base_next)) + 32];
    char known[32];
    config_next cn;
    base_next bn;
    schedule_next sn;
    args_next an;
    flatopt_config c;
    flatopt_base_params b;
    flatopt_schedule s;
    float ref[LEN], got[LEN];
    float sp[LEN], sg[LEN], sm[LEN], sv[LEN];
    const size_t ours = sizeof(flatopt_config);
    char what[160];
    int i;

    /* _init with a newer caller's size: defaults, zeros for the unknown fields, no more. */
    memset(buf, CANARY, sizeof buf);
    row(flatopt_config_init((flatopt_config *)(void *)buf, sizeof(config_next)) == FLATOPT_OK &&
            ((flatopt_config *)(void *)buf)->struct_size == sizeof(config_next) &&
            ((flatopt_config *)(void *)buf)->lr == 1e-3 &&
            zero(buf, ours, sizeof(config_next)) &&
            untouched(buf, sizeof(config_next), sizeof buf - sizeof(config_next)),
        "config_init(size of a newer config): defaults, zero tail, nothing past size");
    memset(buf, CANARY, sizeof buf);
    row(flatopt_base_params_init((flatopt_base_params *)(void *)buf, sizeof(base_next),
                                 FLATOPT_ADAMW) == FLATOPT_OK &&
            ((flatopt_base_params *)(void *)buf)->decoupled_weight_decay == 0.01 &&
            zero(buf, sizeof(flatopt_base_params), sizeof(base_next)) &&
            untouched(buf, sizeof(base_next), sizeof buf - sizeof(base_next)),
        "base_params_init(size of a newer struct)");

    /* The reference: the library's own structs. */
    flatopt_config_init(&c, sizeof c);
    flatopt_base_params_init(&b, sizeof b, FLATOPT_ADAM);
    b.amsgrad = 1;
    flatopt_schedule_init(&s, sizeof s, FLATOPT_SCHEDULE_EXPONENTIAL);
    s.base_lr = 0.02;
    c.base = &b;
    c.schedule = &s;
    row(train(&c, ref) == FLATOPT_OK, "reference run with the library's own structs");

    /* Newer structs with zero extra fields: accepted, same results. */
    flatopt_config_init(&cn.c, sizeof cn);
    flatopt_base_params_init(&bn.b, sizeof bn, FLATOPT_ADAM);
    bn.b.amsgrad = 1;
    flatopt_schedule_init(&sn.s, sizeof sn, FLATOPT_SCHEDULE_EXPONENTIAL);
    sn.s.base_lr = 0.02;
    cn.c.base = &bn.b;
    cn.c.schedule = &sn.s;
    row(train(&cn.c, got) == FLATOPT_OK && memcmp(ref, got, sizeof ref) == 0,
        "newer config, base and schedule, extra fields zero: accepted, bit-identical results");

    /* One extra field set at a time: refused, naming the byte. */
    cn.future_flags = 1;
    snprintf(what, sizeof what, "newer config, a field at byte %u set: FLATOPT_ERR_UNSUPPORTED",
             (unsigned)offsetof(config_next, future_flags));
    snprintf(known, sizeof known, "byte %u ", (unsigned)sizeof(flatopt_config));
    row(train(&cn.c, got) == FLATOPT_ERR_UNSUPPORTED && has(known) && has("flatopt_config"),
        what);
    cn.future_flags = 0;
    cn.future_value = 1.0; /* little-endian: its first non-zero byte is 102 */
    snprintf(known, sizeof known, "knows only the first %u bytes", (unsigned)sizeof(flatopt_config));
    row(train(&cn.c, got) == FLATOPT_ERR_UNSUPPORTED && has(known),
        "newer config, a double field set: FLATOPT_ERR_UNSUPPORTED");
    cn.future_value = 0.0;
    bn.future_value = -2.0;
    snprintf(known, sizeof known, "first %u bytes", (unsigned)sizeof(flatopt_base_params));
    row(train(&cn.c, got) == FLATOPT_ERR_UNSUPPORTED && has(known) && has("flatopt_base"),
        "newer base, a field set: FLATOPT_ERR_UNSUPPORTED naming its byte");
    bn.future_value = 0.0;
    sn.future_count = 1;
    row(train(&cn.c, got) == FLATOPT_ERR_UNSUPPORTED && has("byte 248"),
        "newer schedule, a field set: FLATOPT_ERR_UNSUPPORTED naming its byte");
    sn.future_count = 0;
    row(train(&cn.c, got) == FLATOPT_OK && memcmp(ref, got, sizeof ref) == 0,
        "the same structs with the fields cleared again: accepted, bit-identical");

    /* Stateless: newer hp and args. */
    for (i = 0; i < LEN; i++) {
        sp[i] = 0.25f * (float)i;
        sg[i] = 0.5f - 0.01f * (float)i;
        sm[i] = sv[i] = 0.0f;
    }
    flatopt_step_args_init(&an.a, sizeof an);
    an.future_value = 3.0;
    row(flatopt_adam_update(&bn.b, &an.a, sp, sg, sm, sv, sm + 0, NULL, LEN) ==
                FLATOPT_ERR_UNSUPPORTED &&
            has("first 56 bytes") && sp[3] == 0.75f,
        "stateless adam_update, newer args with a field set: refused, nothing written");
    an.future_value = 0.0;
    bn.b.amsgrad = 0;
    row(flatopt_adam_update(&bn.b, &an.a, sp, sg, sm, sv, NULL, NULL, LEN) == FLATOPT_OK &&
            sp[3] != 0.75f,
        "stateless adam_update, newer hp and args, extra fields zero: applied");

    printf("newer_caller: %d rows, %d failed\n", g_rows, g_failed);
    return g_failed != 0;
}
