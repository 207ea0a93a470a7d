// Tests of the C++ binding bindings/cpp/flatopt.hpp over the flatopt C ABI.
// Build and run: bash bindings/cpp/test/run.sh (from the repository root).
//
// Each test is a function; CHECK counts a check and reports a failure without stopping the
// test; an unexpected exception fails the test. Exit status: 0 if every test passed.

#include "flatopt.hpp"

#include <unistd.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

namespace {

// ---------------------------------------------------------------------------------------------
// A minimal test harness.

int g_checks = 0;          // checks run
int g_test_failures = 0;   // failed checks in the current test

void check_impl(bool ok, const char* expr, const char* file, int line) {
  ++g_checks;
  if (!ok) {
    ++g_test_failures;
    std::fprintf(stderr, "    FAIL %s:%d: %s\n", file, line, expr);
  }
}

#define CHECK(cond) check_impl(static_cast<bool>(cond), #cond, __FILE__, __LINE__)

/// Runs `f`, expecting a flatopt::Error with `code` whose message contains `needle`.
template <class F>
void expect_error(F&& f, flatopt_status code, const char* needle, const char* expr,
                  const char* file, int line) {
  ++g_checks;
  try {
    f();
  } catch (const flatopt::Error& e) {
    const bool code_ok = e.code() == code;
    const bool msg_ok = e.message().find(needle) != std::string::npos;
    const bool what_ok = std::string(e.what()).find(e.message()) != std::string::npos;
    if (code_ok && msg_ok && what_ok) return;
    ++g_test_failures;
    std::fprintf(stderr,
                 "    FAIL %s:%d: %s\n      expected code %d with \"%s\" in the message, got "
                 "code %d: \"%s\"\n",
                 file, line, expr, static_cast<int>(code), needle, static_cast<int>(e.code()),
                 e.message().c_str());
    return;
  } catch (const std::exception& e) {
    ++g_test_failures;
    std::fprintf(stderr, "    FAIL %s:%d: %s\n      threw a non-flatopt exception: %s\n", file,
                 line, expr, e.what());
    return;
  }
  ++g_test_failures;
  std::fprintf(stderr, "    FAIL %s:%d: %s\n      did not throw (expected code %d, \"%s\")\n",
               file, line, expr, static_cast<int>(code), needle);
}

#define CHECK_THROWS(expr, code, needle) \
  expect_error([&]() { (void)(expr); }, code, needle, #expr, __FILE__, __LINE__)

/// Runs `f` expecting no exception.
template <class F>
void expect_no_throw(F&& f, const char* expr, const char* file, int line) {
  ++g_checks;
  try {
    f();
  } catch (const std::exception& e) {
    ++g_test_failures;
    std::fprintf(stderr, "    FAIL %s:%d: %s\n      threw: %s\n", file, line, expr, e.what());
  }
}

#define CHECK_NOTHROW(expr) expect_no_throw([&]() { (void)(expr); }, #expr, __FILE__, __LINE__)

struct TestCase {
  const char* name;
  void (*fn)();
};

// ---------------------------------------------------------------------------------------------
// Helpers.

using Vec = std::vector<float>;

bool bits_equal(const float* a, const float* b, std::size_t n) {
  return n == 0 || std::memcmp(a, b, n * sizeof(float)) == 0;
}
bool bits_equal(const Vec& a, const Vec& b) {
  return a.size() == b.size() && bits_equal(a.data(), b.data(), a.size());
}
bool bits_equal(flatopt::Span<const float> a, const Vec& b) {
  return a.size() == b.size() && bits_equal(a.data(), b.data(), a.size());
}

Vec random_vec(std::mt19937& rng, std::size_t n, float lo = -1.0f, float hi = 1.0f) {
  std::uniform_real_distribution<float> d(lo, hi);
  Vec v(n);
  for (float& x : v) x = d(rng);
  return v;
}

/// True if `c_struct()` can be called on an expression of type T.
template <class T, class = void>
struct has_c_struct : std::false_type {};
template <class T>
struct has_c_struct<T, std::void_t<decltype(std::declval<T>().c_struct())>> : std::true_type {};

/// Overwrites a registered buffer in place with random values. (Assigning a new vector to it
/// would move another allocation in and leave the optimizer's pointer dangling.)
void refill(std::mt19937& rng, Vec& v, float lo = -1.0f, float hi = 1.0f) {
  std::uniform_real_distribution<float> d(lo, hi);
  for (float& x : v) x = d(rng);
}

/// Copies `src` into the registered buffer `dst` (same size) in place.
void copy_into(Vec& dst, const Vec& src) { std::copy(src.begin(), src.end(), dst.begin()); }

bool contains(const std::string& s, const char* needle) {
  return s.find(needle) != std::string::npos;
}

/// Relative / absolute closeness of a float learning rate to a double reference.
bool lr_close(float got, double want) {
  const double diff = std::fabs(static_cast<double>(got) - want);
  return diff <= 1e-12 + 1e-6 * std::fabs(want);
}

// ---------------------------------------------------------------------------------------------
// Version, span, enums.

void test_version() {
  CHECK(std::string(flatopt::version()) == FLATOPT_VERSION_STRING);
  CHECK(flatopt::version_number() == FLATOPT_VERSION_NUMBER);
  CHECK(flatopt::version_number() == FLATOPT_VERSION_MAJOR * 10000u +
                                         FLATOPT_VERSION_MINOR * 100u + FLATOPT_VERSION_PATCH);
  CHECK(std::string(flatopt::header_version()) == flatopt::version());
  CHECK(flatopt::header_version_number() == flatopt::version_number());
  CHECK(flatopt::version_matches());
  CHECK_NOTHROW(flatopt::check_version());
  CHECK(std::string(flatopt::status_str(FLATOPT_ERR_OVERLAP)) == "overlapping buffers");
}

void test_span() {
  Vec v{1, 2, 3};
  const Vec cv{4, 5};
  std::array<float, 4> a{{1, 2, 3, 4}};
  const std::array<float, 2> ca{{1, 2}};
  float c[5] = {0, 0, 0, 0, 0};
  flatopt::Span<float> sv(v);
  flatopt::Span<const float> scv(cv);
  flatopt::Span<float> sa(a);
  flatopt::Span<const float> sca(ca);
  flatopt::Span<float> sc(c);
  flatopt::Span<float> sp(v.data() + 1, 2);
  flatopt::Span<const float> conv = sv;  // Span<float> -> Span<const float>
  flatopt::Span<const float> from_vec = v;
  flatopt::Span<const float> from_c = c;
  flatopt::Span<const float> empty;
  CHECK(sv.size() == 3 && sv.data() == v.data());
  CHECK(scv.size() == 2 && scv.data() == cv.data());
  CHECK(sa.size() == 4 && sa.data() == a.data());
  CHECK(sca.size() == 2 && sca[1] == 2.0f);
  CHECK(sc.size() == 5 && sc.data() == c);
  CHECK(sp.size() == 2 && sp[0] == 2.0f && sp[1] == 3.0f);
  CHECK(conv.data() == v.data() && conv.size() == 3);
  CHECK(from_vec.size() == 3 && from_c.size() == 5);
  CHECK(empty.empty() && empty.data() == nullptr && empty.size_bytes() == 0);
  CHECK(sv.subspan(1).size() == 2 && sv.subspan(1, 1)[0] == 2.0f && sv.first(2).size() == 2);
  float sum = 0;
  for (float x : sv) sum += x;
  CHECK(sum == 6.0f);
  sv[0] = 10.0f;
  CHECK(v[0] == 10.0f);
  // Compile-time: no Span<float> from const data.
  static_assert(!std::is_convertible<const Vec&, flatopt::Span<float>>::value, "const vector");
  static_assert(!std::is_convertible<flatopt::Span<const float>, flatopt::Span<float>>::value,
                "const span");
  static_assert(std::is_convertible<Vec&, flatopt::Span<float>>::value, "vector");
  static_assert(std::is_convertible<const Vec&, flatopt::Span<const float>>::value, "cvector");
}

void test_builders() {
  // Defaults come from the C _init functions.
  const flatopt::Config def;
  flatopt_config c;
  CHECK(flatopt_config_init(&c, sizeof c) == FLATOPT_OK);
  const flatopt_config got = def.c_struct();
  CHECK(c.base == nullptr && got.base != nullptr && got.base == &def.base().c_struct());
  CHECK(got.lr == c.lr && got.base->kind == FLATOPT_ADAM && got.base->b1 == 0.9 &&
        got.base->b2 == 0.999 && got.base->eps == 1e-8 && got.schedule == nullptr &&
        got.sync_period == 5 && got.alpha == 0.5 && got.lookahead == 0 && got.num_threads == 1);

  const flatopt::Config cfg = flatopt::Config::adam(0.01)
                                  .b1(0.8)
                                  .b2(0.99)
                                  .eps(1e-6)
                                  .amsgrad()
                                  .lookahead(4, 0.25)
                                  .clip_norm(2.0)
                                  .clip_value(0.5)
                                  .weight_decay(1e-3)
                                  .threads(2)
                                  .nonfinite(flatopt::NonFinite::Error)
                                  .simd_tier(flatopt::SimdTier::Scalar)
                                  .schedule(flatopt::Schedule::cosine(0.02, 100, 1e-4))
                                  .manual_schedule();
  const flatopt_config cc = cfg.c_struct();
  CHECK(cc.base->b1 == 0.8 && cc.base->b2 == 0.99 && cc.base->eps == 1e-6 && cc.base->amsgrad == 1);
  CHECK(cc.lookahead == 1 && cc.sync_period == 4 && cc.alpha == 0.25);
  CHECK(cc.grad_clip_norm == 2.0 && cc.grad_clip_value == 0.5 && cc.weight_decay == 1e-3);
  CHECK(cc.num_threads == 2 && cc.nonfinite == FLATOPT_NONFINITE_ERROR &&
        cc.simd_tier == FLATOPT_SIMD_SCALAR && cc.schedule_manual == 1);
  CHECK(cc.schedule != nullptr && cc.schedule->kind == FLATOPT_SCHEDULE_COSINE_ANNEALING &&
        cc.schedule->base_lr == 0.02 && cc.schedule->period == 100);
  CHECK(cfg.schedule().has_value() && cc.schedule == &cfg.schedule()->c_struct());

  // Lvalue setters modify in place; lr() removes a schedule.
  flatopt::Config l = flatopt::Config::sgd(0.1, 0.9, true);
  l.dampening(0.0).lookahead();
  CHECK(l.c_struct().base->kind == FLATOPT_SGD && l.c_struct().base->momentum == 0.9 &&
        l.c_struct().base->nesterov == 1 && l.c_struct().lookahead == 1);
  l.schedule(flatopt::Schedule::step(0.1, 10));
  CHECK(l.c_struct().schedule != nullptr);
  l.lr(0.05);
  CHECK(l.c_struct().schedule == nullptr && l.c_struct().lr == 0.05);
  l.no_lookahead();
  CHECK(l.c_struct().lookahead == 0);

  const flatopt::Config aw1 = flatopt::Config::adamw(1e-3, 0.05), aw2 = flatopt::Config::adamw();
  const flatopt::Config ra = flatopt::Config::radam();
  CHECK(aw1.c_struct().base->decoupled_weight_decay == 0.05);
  CHECK(aw2.c_struct().base->decoupled_weight_decay == 0.01);
  CHECK(ra.c_struct().base->kind == FLATOPT_RADAM);
  // c_struct() is refused on temporaries (its pointers would dangle).
  static_assert(!has_c_struct<flatopt::Config>::value && has_c_struct<flatopt::Config&>::value,
                "Config::c_struct lvalue-only");
  static_assert(!has_c_struct<flatopt::Schedule>::value &&
                    has_c_struct<const flatopt::Schedule&>::value,
                "Schedule::c_struct lvalue-only");
  static_assert(!has_c_struct<flatopt::StepArgs>::value && !has_c_struct<flatopt::BaseParams>::value,
                "c_struct lvalue-only");

  // The C structs the header declares have the sizes the library fills in (ABI layout).
  {
    flatopt_base_params bp;
    flatopt_schedule sc;
    CHECK(flatopt_base_params_init(&bp, sizeof bp, FLATOPT_SGD) == FLATOPT_OK);
    CHECK(flatopt_schedule_init(&sc, sizeof sc, FLATOPT_SCHEDULE_CYCLIC) == FLATOPT_OK);
    CHECK(c.struct_size == sizeof(flatopt_config) && bp.struct_size == sizeof(flatopt_base_params) &&
          sc.struct_size == sizeof(flatopt_schedule));
  }
  // Factory defaults are those of docs/numerics.md (set explicitly where the C init differs).
  {
    const flatopt::Schedule cyc = flatopt::Schedule::cyclic(0.01, 0.1, 10);
    const flatopt::Schedule poly = flatopt::Schedule::polynomial(0.1);
    const flatopt::Schedule oc = flatopt::Schedule::one_cycle(0.1, 100);
    const flatopt::Schedule rp = flatopt::Schedule::reduce_on_plateau(0.1);
    const flatopt::Schedule ed = flatopt::Schedule::exponential_decay(0.1, 10, 0.5);
    CHECK(cyc.c_struct().gamma == 1.0 && cyc.c_struct().cyclic_mode == 0 &&
          cyc.c_struct().step_size_down == 0);
    CHECK(poly.c_struct().period == 5 && poly.c_struct().power == 1.0);
    CHECK(oc.c_struct().pct_start == 0.3 && oc.c_struct().div_factor == 25.0 &&
          oc.c_struct().final_div_factor == 1e4 && oc.c_struct().anneal_linear == 0);
    CHECK(rp.c_struct().factor == 0.1 && rp.c_struct().patience == 10 &&
          rp.c_struct().threshold == 1e-4 && rp.c_struct().cooldown == 0);
    CHECK(std::isnan(ed.c_struct().end_value) && ed.c_struct().staircase == 0 &&
          ed.c_struct().warmup == 0);
  }

  // Step args defaults.
  flatopt_step_args sa;
  CHECK(flatopt_step_args_init(&sa, sizeof sa) == FLATOPT_OK);
  const flatopt::StepArgs args_default;
  const flatopt_step_args& a = args_default.c_struct();
  CHECK(a.step == sa.step && a.lr == sa.lr && a.clip_scale == 1.0 && a.sync == 0);

  // Setters that do not apply to the kind are refused, naming the setter.
  CHECK_THROWS(flatopt::Config::sgd(0.1).b1(0.5), FLATOPT_ERR_INVALID_ARGUMENT, "b1");
  CHECK_THROWS(flatopt::Config::adam().momentum(0.9), FLATOPT_ERR_INVALID_ARGUMENT, "momentum");
  CHECK_THROWS(flatopt::Config::adamw().amsgrad(), FLATOPT_ERR_INVALID_ARGUMENT, "amsgrad");
  CHECK_THROWS(flatopt::Config::adam().decoupled_weight_decay(0.1),
               FLATOPT_ERR_INVALID_ARGUMENT, "decoupled_weight_decay");
  CHECK_THROWS(flatopt::Schedule::cosine(0.1, 10).patience(3), FLATOPT_ERR_INVALID_ARGUMENT,
               "patience");
  CHECK_THROWS(flatopt::Schedule::step(0.1, 10).staircase(), FLATOPT_ERR_INVALID_ARGUMENT,
               "staircase");
  CHECK_THROWS(flatopt::Schedule::cyclic(0.1, 1, 10).pct_start(0.5),
               FLATOPT_ERR_INVALID_ARGUMENT, "pct_start");
  CHECK_THROWS(flatopt::Schedule::one_cycle(0.1, 10).mode(flatopt::CyclicMode::Triangular2),
               FLATOPT_ERR_INVALID_ARGUMENT, "mode");
}

// ---------------------------------------------------------------------------------------------
// Happy paths.

/// Lookahead(Adam) on a least-squares problem: loss must drop to near zero.
void test_least_squares() {
  const std::size_t rows = 64, cols = 16;
  std::mt19937 rng(12345);
  const Vec a = random_vec(rng, rows * cols);
  const Vec x_true = random_vec(rng, cols, -2.0f, 2.0f);
  const float bias_true = 0.75f;
  Vec b(rows);
  for (std::size_t r = 0; r < rows; ++r) {
    double s = bias_true;
    for (std::size_t k = 0; k < cols; ++k) s += double(a[r * cols + k]) * x_true[k];
    b[r] = static_cast<float>(s);
  }

  Vec w(cols, 0.0f), gw(cols, 0.0f);
  std::array<float, 1> bias{{0.0f}}, gbias{{0.0f}};
  auto loss_and_grad = [&]() {
    double loss = 0;
    std::vector<double> gacc(cols, 0.0);
    double gb = 0;
    for (std::size_t r = 0; r < rows; ++r) {
      double pred = bias[0];
      for (std::size_t k = 0; k < cols; ++k) pred += double(a[r * cols + k]) * w[k];
      const double res = pred - b[r];
      loss += 0.5 * res * res / rows;
      for (std::size_t k = 0; k < cols; ++k) gacc[k] += res * a[r * cols + k] / rows;
      gb += res / rows;
    }
    for (std::size_t k = 0; k < cols; ++k) gw[k] = static_cast<float>(gacc[k]);
    gbias[0] = static_cast<float>(gb);
    return loss;
  };

  const int iters = 1500;
  flatopt::Optimizer opt(flatopt::Config::adam()
                             .lookahead(5, 0.5)
                             .clip_norm(10.0)
                             .schedule(flatopt::Schedule::cosine(0.05, iters, 1e-4)));
  CHECK(opt.add_param(w, gw) == 0);
  CHECK(opt.add_param(bias, gbias) == 1);
  CHECK(opt.num_params() == 2 && opt.total_len() == cols + 1);
  const double initial = loss_and_grad();
  double loss = initial;
  int skipped = 0;
  for (int i = 0; i < iters; ++i) {
    loss = loss_and_grad();
    if (opt.step().skipped()) ++skipped;
  }
  loss = loss_and_grad();
  std::printf("    least squares: loss %.3e -> %.3e after %d Lookahead(Adam) steps\n", initial,
              loss, iters);
  CHECK(skipped == 0);
  CHECK(initial > 1.0);
  CHECK(loss < 1e-8 * initial);
  CHECK(opt.step_count() == static_cast<uint64_t>(iters));
  // 1500 is a multiple of 5: the last update synced, so params equal the slow weights.
  CHECK(bits_equal(opt.slow_weights(0), w));
  CHECK(bits_equal(opt.slow_weights(1), Vec(bias.begin(), bias.end())));
  double max_err = 0;
  for (std::size_t k = 0; k < cols; ++k) max_err = std::max(max_err, double(std::fabs(w[k] - x_true[k])));
  CHECK(max_err < 1e-3);
}

/// step(), step(grads...), step_with_grads, split ranges from std::threads, the SplitStep guard
/// and a 2-thread pool (with a tier switch) all give the same bits.
void test_step_variants_bit_identical() {
  const std::vector<std::size_t> sizes{70000, 37, 4099, 1};
  const std::size_t nb = sizes.size();
  std::mt19937 rng(777);
  std::vector<Vec> init;
  for (std::size_t n : sizes) init.push_back(random_vec(rng, n));

  const flatopt::Config cfg = flatopt::Config::adam(1e-2)
                                  .amsgrad()
                                  .lookahead(3, 0.6)
                                  .clip_norm(5.0)
                                  .clip_value(0.05)
                                  .weight_decay(1e-3)
                                  .schedule(flatopt::Schedule::warmup_cosine(1e-2, 3, 12, 1e-3));
  constexpr int kVariants = 6;
  const char* names[kVariants] = {"step()",       "step(grads...)", "step_with_grads",
                                  "thread ranges", "SplitStep",      "2-thread pool"};
  std::vector<std::vector<Vec>> params(kVariants, init);
  std::vector<Vec> grads(nb);  // registered gradient buffers (shared by variants 0, 3, 4, 5)
  for (std::size_t i = 0; i < nb; ++i) grads[i].assign(sizes[i], 0.0f);
  // Variants 1 and 2 register gradient buffers full of NaN that step(grads) must ignore.
  std::vector<Vec> poison(nb);
  for (std::size_t i = 0; i < nb; ++i)
    poison[i].assign(sizes[i], std::numeric_limits<float>::quiet_NaN());

  std::vector<flatopt::Optimizer> opts;
  for (int k = 0; k < kVariants; ++k) {
    flatopt::Config c = cfg;
    if (k == 5) c.threads(2);
    opts.emplace_back(c);
    for (std::size_t i = 0; i < nb; ++i) {
      if (k == 1 || k == 2)
        opts[k].add_param(params[k][i], poison[i]);
      else
        opts[k].add_param(params[k][i], grads[i]);
    }
  }
  CHECK(opts[5].num_threads() == 2);
  const std::size_t total = opts[0].total_len();
  CHECK(total == 70000 + 37 + 4099 + 1);

  for (int step = 0; step < 12; ++step) {
    for (std::size_t i = 0; i < nb; ++i) refill(rng, grads[i], -0.2f, 0.2f);
    CHECK(opts[0].step().applied());
    CHECK(opts[1].step(grads[0], grads[1], grads[2], grads[3]).applied());
    if (step % 2 == 0) {
      std::vector<flatopt::Span<const float>> list(grads.begin(), grads.end());
      CHECK(opts[2].step_with_grads(list).applied());
    } else {
      CHECK(opts[2].step_with_grads({grads[0], grads[1], grads[2], grads[3]}).applied());
    }
    {
      // Manual split over 3 threads, ranges crossing buffer boundaries.
      CHECK(opts[3].begin_step().applied());
      const std::size_t cuts[4] = {0, 69999, 70040, total};
      std::vector<std::thread> pool;
      std::vector<std::exception_ptr> errors(3);
      const flatopt::Optimizer& o = opts[3];
      for (int t = 0; t < 3; ++t) {
        pool.emplace_back([&, t]() {
          try {
            // Each thread applies its range in two pieces.
            const std::size_t mid = cuts[t] + (cuts[t + 1] - cuts[t]) / 2;
            o.step_range(mid, cuts[t + 1]);
            o.step_range(cuts[t], mid);
          } catch (...) {
            errors[t] = std::current_exception();
          }
        });
      }
      for (auto& th : pool) th.join();
      for (auto& e : errors) CHECK(e == nullptr);
      opts[3].end_step();
    }
    {
      // Odd steps pass the gradients to the split step (begin_step_mixed), even ones read
      // the registered ones: the same bits.
      std::vector<const void*> given;
      for (std::size_t i = 0; i < nb; ++i) given.push_back(grads[i].data());
      flatopt::SplitStep s =
          step % 2 == 1 ? opts[4].split_step(flatopt::Span<const void* const>(given.data(), nb),
                                             0.0f)
                        : opts[4].split_step();
      CHECK(!s.skipped() && s.active() && s.total_len() == total);
      std::thread t1([&]() { s.apply(0, total / 3); });
      std::thread t2([&]() { s.apply(total / 3, total); });
      t1.join();
      t2.join();
      s.finish();
      CHECK(!s.active());
    }
    if (step == 6) opts[5].set_simd_tier(flatopt::SimdTier::Scalar);
    CHECK(opts[5].step().applied());
  }
  CHECK(opts[5].simd_tier() == flatopt::SimdTier::Scalar);
  for (int k = 1; k < kVariants; ++k) {
    bool same = opts[k].step_count() == 12;
    for (std::size_t i = 0; i < nb; ++i) {
      same = same && bits_equal(params[k][i], params[0][i]);
      same = same && bits_equal(opts[k].slow_weights(i), opts[0].copy_slow_weights(i));
    }
    if (!same) std::fprintf(stderr, "    variant %s differs from step()\n", names[k]);
    CHECK(same);
  }
  // The parameters did move.
  CHECK(!bits_equal(params[0][0], init[0]));
  // The SplitStep guard ends a step when it goes out of scope without finish().
  {
    flatopt::SplitStep s = opts[4].split_step();
    s.apply_all();
  }
  CHECK(opts[4].step_count() == 13);
  CHECK(opts[4].step().applied());  // no step left pending
}

/// The stateless kernels reproduce the optimizer bit for bit on one buffer, for every base.
void test_stateless_equals_optimizer() {
  const std::size_t n = 1000;
  const double lr = 0.01, clip_norm = 0.3, clip_value = 0.02, wd = 1e-3, alpha = 0.5;
  const uint64_t k = 3;
  const flatopt::BaseParams bases[] = {
      flatopt::BaseParams::sgd(0.9, true), flatopt::BaseParams::sgd(0.8).dampening(0.1),
      flatopt::BaseParams::adam().amsgrad(), flatopt::BaseParams::adamw(0.05),
      flatopt::BaseParams::radam(), flatopt::BaseParams::adagrad(0.01),
      flatopt::BaseParams::rmsprop(0.9, 0.9, true), flatopt::BaseParams::adamax(),
      flatopt::BaseParams::nadam(), flatopt::BaseParams::lion(0.1),
      flatopt::BaseParams::adabelief(), flatopt::BaseParams::yogi(),
      flatopt::BaseParams::adadelta(), flatopt::BaseParams::rprop(),
      flatopt::BaseParams::lamb(0.01).eps_root(1e-8),
      flatopt::BaseParams::lars(0.01, 0.8, true).trust_coefficient(0.02).eps(1e-3),
      flatopt::BaseParams::novograd(0.01).b2(0.5), flatopt::BaseParams::adafactor(0.01),
      flatopt::BaseParams::adafactor_optax(0.9, 1e-3)};
  for (const flatopt::BaseParams& hp : bases) {
    std::mt19937 rng(99);
    Vec p_opt = random_vec(rng, n);
    Vec p_free = p_opt;
    Vec g(n, 0.0f);
    Vec m(n, 0.0f), v(n, 0.0f), vmax(n, 0.0f), slow = p_free;
    // The generic update's own state, started as registration starts it.
    const uint32_t mask = flatopt::base_state_buffers(hp);
    Vec bm(mask & FLATOPT_STATE_M ? n : 0), bv(mask & FLATOPT_STATE_V ? n : 0),
        bvm(mask & FLATOPT_STATE_V_MAX ? n : 0), bslow = p_free, p_base = p_free;
    flatopt::base_state_init(hp, n, bm, bv, bvm);
    flatopt::Optimizer opt(flatopt::Config(hp, lr)
                               .lookahead(k, alpha)
                               .clip_norm(clip_norm)
                               .clip_value(clip_value)
                               .weight_decay(wd));
    opt.add_param(p_opt, g);
    bool same = true;
    int clipped = 0;
    for (uint64_t t = 1; t <= 10; ++t) {
      refill(rng, g, -0.03f, 0.03f);
      CHECK(opt.step().applied());
      const double ss = flatopt::sum_squares(g);
      const double scale = flatopt::clip_scale(ss, clip_norm);
      if (scale < 1.0) ++clipped;
      const flatopt::StepArgs args = flatopt::StepArgs()
                                         .step(t)
                                         .lr(lr)
                                         .clip_scale(scale)
                                         .clip_value(clip_value)
                                         .weight_decay(wd)
                                         .sync(t % k == 0)
                                         .alpha(alpha);
      bool specific = true;  // the rule has its own stateless function
      switch (hp.kind()) {
        case flatopt::BaseKind::Sgd: flatopt::sgd_update(hp, args, p_free, g, m, slow); break;
        case flatopt::BaseKind::Adam:
          flatopt::adam_update(hp, args, p_free, g, m, v, vmax, slow);
          break;
        case flatopt::BaseKind::AdamW: flatopt::adamw_update(hp, args, p_free, g, m, v, slow); break;
        case flatopt::BaseKind::RAdam: flatopt::radam_update(hp, args, p_free, g, m, v, slow); break;
        case flatopt::BaseKind::Adagrad:
        case flatopt::BaseKind::RmsProp:
        case flatopt::BaseKind::Adamax:
        case flatopt::BaseKind::NAdam:
        case flatopt::BaseKind::Lion:
        case flatopt::BaseKind::AdaBelief:
        case flatopt::BaseKind::Yogi:
        case flatopt::BaseKind::Adadelta:
        case flatopt::BaseKind::Rprop:
        case flatopt::BaseKind::Lamb:  // one buffer: the stateless update's norms are its own
        case flatopt::BaseKind::Lars:
        case flatopt::BaseKind::Novograd:
        case flatopt::BaseKind::Adafactor:  // unfactored: the buffer is added without a shape
          specific = false;  // only the generic update below
          break;
      }
      flatopt::base_update(hp, args, p_base, g, bm, bv, bvm, bslow);
      same = same && bits_equal(p_opt, p_base) && bits_equal(opt.slow_weights(0), bslow);
      if (specific)
        same = same && bits_equal(p_opt, p_free) && bits_equal(opt.slow_weights(0), slow);
    }
    if (!same)
      std::fprintf(stderr, "    stateless %s differs from the optimizer\n",
                   flatopt::base_kind_name(hp.kind()));
    CHECK(same);
    CHECK(clipped > 0);  // the clip path was exercised
  }

  // Sum of squares: partials add up to the total (block order), block count as documented.
  std::mt19937 rng(5);
  const std::size_t len = 3 * flatopt::sum_squares_block_size() + 17;
  const Vec x = random_vec(rng, len);
  const std::vector<double> parts = flatopt::sum_squares_partials(x);
  CHECK(parts.size() == 4 && flatopt::sum_squares_block_count(len) == 4);
  double acc = 0;
  for (double d : parts) acc += d;
  CHECK(acc == flatopt::sum_squares(x));
  double ref = 0;
  for (float f : x) ref += double(f) * f;
  CHECK(std::fabs(ref - acc) <= 1e-9 * ref);
  CHECK(flatopt::sum_squares(flatopt::Span<const float>()) == 0.0);
  CHECK(flatopt::clip_scale(4.0, 1.0) == 0.5 && flatopt::clip_scale(0.25, 1.0) == 1.0);

  // Elementwise ops.
  Vec y{-3.0f, -0.5f, 0.0f, 0.5f, 3.0f};
  flatopt::clip_by_value(y, 1.0f);
  CHECK((y == Vec{-1.0f, -0.5f, 0.0f, 0.5f, 1.0f}));
  flatopt::scale(y, 2.0f);
  CHECK((y == Vec{-2.0f, -1.0f, 0.0f, 1.0f, 2.0f}));
  Vec fast{1.0f, 2.0f, 3.0f}, sl{0.0f, 0.0f, 1.0f};
  flatopt::lookahead_sync(fast, sl, 0.5f);
  CHECK((sl == Vec{0.5f, 1.0f, 2.0f}) && bits_equal(fast, sl));
}

/// Lookahead slow weights: copy of the params at registration, unchanged between syncs,
/// `s + alpha (p - s)` at a sync with `p = s` bit-exactly.
void test_slow_weights() {
  std::mt19937 rng(3);
  Vec p = random_vec(rng, 50), g(50, 0.0f);
  const Vec p0 = p;
  flatopt::Optimizer opt(flatopt::Config::sgd(0.1).lookahead(4, 0.25));
  opt.add_param(p, g);
  CHECK(bits_equal(opt.slow_weights(0), p0));
  for (int t = 1; t <= 3; ++t) {
    refill(rng, g);
    CHECK(opt.step().applied());
    CHECK(bits_equal(opt.slow_weights(0), p0));
    CHECK(!bits_equal(p, p0));
  }
  refill(rng, g);
  // Expected: fast = p - 0.1 g (SGD in f32), then s = s + 0.25 (fast - s).
  Vec expect(50);
  for (std::size_t i = 0; i < 50; ++i) {
    const float lr = 0.1f;
    const float fast = p[i] - lr * g[i];
    expect[i] = p0[i] + 0.25f * (fast - p0[i]);
  }
  CHECK(opt.step().applied());
  const flatopt::Span<const float> s = opt.slow_weights(0);
  CHECK(s.size() == 50);
  CHECK(bits_equal(s, p));
  double max_diff = 0;
  for (std::size_t i = 0; i < 50; ++i) max_diff = std::max(max_diff, double(std::fabs(s[i] - expect[i])));
  CHECK(max_diff < 1e-6);
  Vec copy(50, -1.0f);
  opt.copy_slow_weights(0, copy);
  CHECK(bits_equal(copy, p));
  CHECK(bits_equal(opt.copy_slow_weights(0), p));

  // Errors: no Lookahead; index out of range; wrong destination size.
  Vec q(3, 1.0f), gq(3, 0.0f);
  flatopt::Optimizer plain(flatopt::Config::adam());
  plain.add_param(q, gq);
  CHECK_THROWS(plain.slow_weights(0), FLATOPT_ERR_INVALID_STATE, "Lookahead");
  CHECK_THROWS(opt.slow_weights(1), FLATOPT_ERR_INVALID_ARGUMENT, "index");
  Vec small(49);
  CHECK_THROWS(opt.copy_slow_weights(0, small), FLATOPT_ERR_LENGTH_MISMATCH, "slow weights");
  CHECK_THROWS(opt.copy_slow_weights(0, flatopt::Span<float>(nullptr, 50)),
               FLATOPT_ERR_NULL_POINTER, "dst");
}

// ---------------------------------------------------------------------------------------------
// Schedules.

/// Reads the learning rates an optimizer with `s` gives at e = 0..n-1 (manual mode).
std::vector<float> lrs_of(const flatopt::Schedule& s, int n) {
  flatopt::Optimizer opt(flatopt::Config::sgd(1.0).schedule(s).manual_schedule());
  flatopt::Optimizer at(flatopt::Config::sgd(1.0).schedule(s).manual_schedule());
  std::vector<float> out;
  for (int e = 0; e < n; ++e) {
    out.push_back(opt.current_lr());
    opt.schedule_step();
    // schedule_set_epoch(e) lands on the rate stepping gave, bit for bit (from any position).
    at.schedule_set_epoch(UINT64_MAX - std::uint64_t(e));
    at.schedule_set_epoch(std::uint64_t(e));
    CHECK(at.current_lr() == out.back());
  }
  return out;
}

bool lrs_match(const char* name, const flatopt::Schedule& s, int n,
               const std::function<double(int)>& ref) {
  const std::vector<float> got = lrs_of(s, n);
  for (int e = 0; e < n; ++e) {
    if (!lr_close(got[e], ref(e))) {
      std::fprintf(stderr, "    schedule %s: lr(%d) = %.9g, expected %.9g\n", name, e,
                   double(got[e]), ref(e));
      return false;
    }
  }
  return true;
}

void test_schedules() {
  const double pi = 3.14159265358979323846;
  using S = flatopt::Schedule;
  CHECK(lrs_match("fixed", S::fixed(0.3), 5, [](int) { return 0.3; }));
  CHECK(lrs_match("constant", S::constant(0.1, 0.5, 3), 6,
                  [](int e) { return e < 3 ? 0.05 : 0.1; }));
  CHECK(lrs_match("constant defaults", S::constant(0.1), 7,
                  [](int e) { return e < 5 ? 0.1 / 3.0 : 0.1; }));
  CHECK(lrs_match("linear", S::linear(0.1, 0.25, 1.0, 4), 7, [](int e) {
    return 0.1 * (0.25 + 0.75 * std::min(e, 4) / 4.0);
  }));
  CHECK(lrs_match("step", S::step(0.1, 3, 0.5), 10,
                  [](int e) { return 0.1 * std::pow(0.5, e / 3); }));
  CHECK(lrs_match("multi_step", S::multi_step(0.1, {2, 5}, 0.1), 8,
                  [](int e) { return 0.1 * std::pow(0.1, (e >= 2) + (e >= 5)); }));
  CHECK(lrs_match("exponential", S::exponential(0.1, 0.9), 8,
                  [](int e) { return 0.1 * std::pow(0.9, e); }));
  CHECK(lrs_match("exponential_decay", S::exponential_decay(0.1, 4, 0.5), 10,
                  [](int e) { return 0.1 * std::pow(0.5, e / 4.0); }));
  CHECK(lrs_match("exponential_decay options",
                  S::exponential_decay(0.1, 2, 0.5).transition_begin(3).staircase().end_value(0.02),
                  12, [](int e) {
                    const double v = e <= 3 ? 0.1 : 0.1 * std::pow(0.5, std::floor((e - 3) / 2.0));
                    return std::max(v, 0.02);
                  }));
  CHECK(lrs_match("cosine", S::cosine(0.1, 10, 0.01), 14, [&](int e) {
    return 0.01 + 0.09 * (1 + std::cos(pi * std::min(e, 10) / 10.0)) / 2;
  }));
  CHECK(lrs_match("cosine_warm_restarts", S::cosine_warm_restarts(0.1, 3, 2, 0.0), 22, [&](int e) {
    int t_i = 3, t_cur = e;
    while (t_cur >= t_i) {
      t_cur -= t_i;
      t_i *= 2;
    }
    return 0.1 * (1 + std::cos(pi * t_cur / t_i)) / 2;
  }));
  CHECK(lrs_match("polynomial", S::polynomial(0.1, 5, 2.0), 8, [](int e) {
    return 0.1 * std::pow(1.0 - std::min(e, 5) / 5.0, 2.0);
  }));
  CHECK(lrs_match("warmup", S::warmup(0.1, 4, 0.02), 7, [](int e) {
    return 0.02 + 0.08 * std::min(e / 4.0, 1.0);
  }));
  CHECK(lrs_match("warmup_cosine", S::warmup_cosine(0.1, 3, 10, 0.0, 0.01), 13, [&](int e) {
    if (e < 3) return 0.1 * e / 3.0;
    return 0.01 + 0.09 * (1 + std::cos(pi * std::min(e - 3, 7) / 7.0)) / 2;
  }));
  auto one_cycle_ref = [&](bool linear) {
    return [&, linear](int e) {
      const double max_lr = 0.1, total = 20, init = max_lr / 25, mn = init / 1e4;
      const double e1 = 0.3 * total - 1, e2 = total - 1;
      const double x = std::min<double>(e, e2);
      auto anneal = [&](double a, double b, double q) {
        return linear ? a + (b - a) * q : b + (a - b) * (1 + std::cos(pi * q)) / 2;
      };
      return x <= e1 ? anneal(init, max_lr, x / e1) : anneal(max_lr, mn, (x - e1) / (e2 - e1));
    };
  };
  CHECK(lrs_match("one_cycle", S::one_cycle(0.1, 20), 22, one_cycle_ref(false)));
  CHECK(lrs_match("one_cycle linear", S::one_cycle(0.1, 20).anneal(flatopt::Anneal::Linear), 22,
                  one_cycle_ref(true)));
  CHECK(lrs_match("one_cycle options",
                  S::one_cycle(0.2, 10).pct_start(0.5).div_factor(10).final_div_factor(100), 11,
                  [&](int e) {
                    const double init = 0.02, mn = 0.0002, e1 = 4, e2 = 9;
                    const double x = std::min<double>(e, e2);
                    return x <= e1 ? 0.2 + (init - 0.2) * (1 + std::cos(pi * x / e1)) / 2
                                   : mn + (0.2 - mn) * (1 + std::cos(pi * (x - e1) / (e2 - e1))) / 2;
                  }));
  auto cyclic_ref = [](int mode, double gamma, double up, double down) {
    return [=](int e) {
      const double tot = up + down, r = up / tot;
      const double cycle = std::floor(1 + e / tot), x = 1 + e / tot - cycle;
      const double h = x <= r ? x / r : (x - 1) / (r - 1);
      const double sc = mode == 0 ? 1.0 : mode == 1 ? 1.0 / std::pow(2.0, cycle - 1) : std::pow(gamma, e);
      return 0.01 + (0.1 - 0.01) * h * sc;
    };
  };
  CHECK(lrs_match("cyclic", S::cyclic(0.01, 0.1, 4), 20, cyclic_ref(0, 1, 4, 4)));
  CHECK(lrs_match("cyclic triangular2",
                  S::cyclic(0.01, 0.1, 3, 5).mode(flatopt::CyclicMode::Triangular2), 20,
                  cyclic_ref(1, 1, 3, 5)));
  CHECK(lrs_match("cyclic exp_range",
                  S::cyclic(0.01, 0.1, 2).mode(flatopt::CyclicMode::ExpRange).gamma(0.9), 20,
                  cyclic_ref(2, 0.9, 2, 2)));
  CHECK(lrs_match("piecewise_constant", S::piecewise_constant({2, 4}, {0.3, 0.2, 0.1}), 6,
                  [](int e) { return e < 2 ? 0.3 : e < 4 ? 0.2 : 0.1; }));

  // ReduceOnPlateau against PyTorch's algorithm.
  {
    const double base = 0.1, factor = 0.5, threshold = 0.01, min_lr = 0.02;
    const uint64_t patience = 2, cooldown = 1;
    flatopt::Optimizer opt(flatopt::Config::sgd(1.0).schedule(S::reduce_on_plateau(base)
                                                                  .factor(factor)
                                                                  .patience(patience)
                                                                  .threshold(threshold)
                                                                  .cooldown(cooldown)
                                                                  .min_lr(min_lr)));
    const double metrics[] = {1.0, 0.9, 0.895, 0.9, 0.9, 0.9, 0.8, 0.85, 0.85, 0.85,
                              0.85, 0.85, 0.85, 0.85, 0.85, 0.85, 0.85, 0.85, 0.85, 0.85};
    double lr = base, best = std::numeric_limits<double>::infinity();
    uint64_t bad = 0, cool = 0;
    bool ok = lr_close(opt.current_lr(), lr);
    int reductions = 0;
    for (double mtr : metrics) {
      opt.schedule_step_metric(mtr);
      if (mtr < best * (1 - threshold)) {
        best = mtr;
        bad = 0;
      } else {
        ++bad;
      }
      if (cool > 0) {
        --cool;
        bad = 0;
      }
      if (bad > patience) {
        const double nl = std::max(lr * factor, min_lr);
        if (lr - nl > 1e-8) {
          lr = nl;
          ++reductions;
        }
        cool = cooldown;
        bad = 0;
      }
      ok = ok && lr_close(opt.current_lr(), lr);
    }
    CHECK(ok);
    CHECK(reductions >= 2 && lr_close(opt.current_lr(), min_lr));
    // Max mode, absolute threshold: rising metrics never reduce.
    flatopt::Optimizer up(flatopt::Config::sgd(1.0).schedule(
        S::reduce_on_plateau(0.1).mode(flatopt::PlateauMode::Max).threshold_mode(
            flatopt::ThresholdMode::Abs).threshold(0.5).patience(0)));
    up.schedule_step_metric(1.0);
    up.schedule_step_metric(2.0);
    CHECK(lr_close(up.current_lr(), 0.1));
    up.schedule_step_metric(2.1);  // not better by 0.5: reduced (patience 0)
    CHECK(lr_close(up.current_lr(), 0.01));
    CHECK_THROWS(up.schedule_step_metric(std::nan("")), FLATOPT_ERR_INVALID_ARGUMENT, "metric");
  }

  // Per-update mode: the schedule advances once per applied update (not when skipped).
  {
    Vec p(4, 1.0f), g(4, 0.1f);
    flatopt::Optimizer opt(flatopt::Config::sgd(1.0).schedule(S::step(0.1, 2, 0.5)));
    opt.add_param(p, g);
    std::vector<float> seen;
    for (int i = 0; i < 5; ++i) {
      seen.push_back(opt.current_lr());
      opt.step();
    }
    g[0] = std::numeric_limits<float>::infinity();
    const float before = opt.current_lr();
    CHECK(opt.step().skipped());
    CHECK(opt.current_lr() == before);
    CHECK(lr_close(seen[0], 0.1) && lr_close(seen[1], 0.1) && lr_close(seen[2], 0.05) &&
          lr_close(seen[3], 0.05) && lr_close(seen[4], 0.025));
    // reset() rewinds the schedule.
    opt.reset();
    CHECK(lr_close(opt.current_lr(), 0.1) && opt.step_count() == 0 && opt.skipped_count() == 0);
  }

  // The schedule's lists live inside the Schedule: copies and moves stay valid after the
  // original and the vectors it was made from are gone.
  {
    flatopt::Config cfg = flatopt::Config::sgd(1.0).manual_schedule();
    {
      std::vector<uint64_t> b{1, 3};
      std::vector<double> v{0.5, 0.25, 0.125};
      S original = S::piecewise_constant(b, v);
      S copy = original;
      S moved = std::move(original);
      b.assign(2, 999);  // the schedule holds its own copies
      v.assign(3, -1.0);
      original = S::fixed(0.0);  // reuse the moved-from object
      cfg.schedule(copy);
      CHECK(moved.c_struct().milestones == moved.milestones().data() &&
            moved.c_struct().n_values == 3);
    }
    flatopt::Config cfg2 = cfg;  // a copy of the config re-points at its own schedule
    cfg = flatopt::Config();
    CHECK(cfg2.c_struct().schedule->milestones == cfg2.schedule()->milestones().data());
    flatopt::Optimizer opt(cfg2);
    std::vector<float> got;
    for (int e = 0; e < 5; ++e) {
      got.push_back(opt.current_lr());
      opt.schedule_step();
    }
    CHECK((got == std::vector<float>{0.5f, 0.25f, 0.25f, 0.125f, 0.125f}));
  }
  {
    flatopt::Schedule ms = S::multi_step(0.1, {2, 4}, 0.5);
    flatopt::Schedule assigned = S::fixed(1.0);
    assigned = ms;
    ms = S::fixed(2.0);
    CHECK(lrs_match("multi_step assigned", assigned, 6,
                    [](int e) { return 0.1 * std::pow(0.5, (e >= 2) + (e >= 4)); }));
  }
}

// ---------------------------------------------------------------------------------------------
// Non-finite gradients.

void test_nonfinite() {
  std::mt19937 rng(42);
  Vec p = random_vec(rng, 300), q = random_vec(rng, 20);
  Vec gp = random_vec(rng, 300), gq = random_vec(rng, 20);
  flatopt::Optimizer opt(flatopt::Config::adam(0.01).lookahead(2, 0.5));
  opt.add_param(p, gp);
  opt.add_param(q, gq);
  CHECK(opt.step().applied());
  const Vec p1 = p, q1 = q;
  const Vec s1 = opt.copy_slow_weights(0);
  const float lr1 = opt.current_lr();

  gq[7] = std::numeric_limits<float>::quiet_NaN();
  const flatopt::StepResult r = opt.step();
  CHECK(r.skipped() && !r.applied() && !r && r.outcome() == flatopt::Outcome::Skipped);
  CHECK(contains(r.message(), "non-finite") && contains(r.message(), "buffer 1") &&
        contains(r.message(), "index 7"));
  CHECK(bits_equal(p, p1) && bits_equal(q, q1));
  CHECK(bits_equal(opt.slow_weights(0), s1));
  CHECK(opt.step_count() == 1 && opt.skipped_count() == 1 && opt.current_lr() == lr1);

  // The split API reports the skip too; the guard has nothing to apply.
  gp[0] = -std::numeric_limits<float>::infinity();
  {
    flatopt::SplitStep s = opt.split_step();
    CHECK(s.skipped() && !s.active() && contains(s.result().message(), "buffer 0"));
    CHECK_THROWS(s.apply(0, 1), FLATOPT_ERR_INVALID_STATE, "skipped");
    CHECK_THROWS(s.finish(), FLATOPT_ERR_INVALID_STATE, "finish");
  }
  CHECK(opt.begin_step().skipped());
  CHECK(opt.skipped_count() == 3 && opt.step_count() == 1 && bits_equal(p, p1));
  CHECK_THROWS(opt.end_step(), FLATOPT_ERR_INVALID_STATE, "end_step");  // nothing begun

  // Per-call gradients are checked the same way.
  Vec good_p = random_vec(rng, 300), good_q = random_vec(rng, 20);
  CHECK(opt.step(gp, good_q).skipped());
  CHECK(opt.step(good_p, good_q).applied());
  CHECK(opt.step_count() == 2 && opt.skipped_count() == 4);

  // Policy Error: throws, nothing changes, still counted.
  {
    Vec x(8, 1.0f), gx(8, 0.5f);
    flatopt::Optimizer e(flatopt::Config::sgd(0.1).nonfinite(flatopt::NonFinite::Error));
    e.add_param(x, gx);
    gx[3] = std::numeric_limits<float>::infinity();
    CHECK_THROWS(e.step(), FLATOPT_ERR_NON_FINITE, "index 3");
    CHECK(bits_equal(x, Vec(8, 1.0f)) && e.step_count() == 0 && e.skipped_count() == 1);
  }
  // Policy Propagate: applied, NaN flows into the parameter.
  {
    Vec x(8, 1.0f), gx(8, 0.5f);
    flatopt::Optimizer e(flatopt::Config::sgd(0.1).nonfinite(flatopt::NonFinite::Propagate));
    e.add_param(x, gx);
    gx[2] = std::numeric_limits<float>::quiet_NaN();
    CHECK(e.step().applied());
    CHECK(std::isnan(x[2]) && x[0] == 1.0f - 0.1f * 0.5f && e.skipped_count() == 0);
  }
}

// ---------------------------------------------------------------------------------------------
// Error paths.

void test_config_errors() {
  using C = flatopt::Config;
  using S = flatopt::Schedule;
  struct Row {
    C cfg;
    flatopt_status code;
    const char* needle;
  };
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<Row> rows;
  rows.push_back({C::adam().b1(1.0), FLATOPT_ERR_INVALID_ARGUMENT, "b1"});
  rows.push_back({C::adam().b2(-0.1), FLATOPT_ERR_INVALID_ARGUMENT, "b2"});
  rows.push_back({C::radam().eps(0.0), FLATOPT_ERR_INVALID_ARGUMENT, "eps"});
  rows.push_back({C::adamw(1e-3, -1.0), FLATOPT_ERR_INVALID_ARGUMENT, "weight_decay"});
  rows.push_back({C::sgd(0.1, 1.0), FLATOPT_ERR_INVALID_ARGUMENT, "momentum"});
  rows.push_back({C::sgd(0.1, 0.5).dampening(2.0), FLATOPT_ERR_INVALID_ARGUMENT, "dampening"});
  rows.push_back({C::sgd(0.1).nesterov(), FLATOPT_ERR_INVALID_ARGUMENT, "nesterov"});
  rows.push_back({C::adam(-1.0), FLATOPT_ERR_INVALID_ARGUMENT, "lr"});
  rows.push_back({C::adam(nan), FLATOPT_ERR_INVALID_ARGUMENT, "lr"});
  rows.push_back({C::adam().weight_decay(nan), FLATOPT_ERR_INVALID_ARGUMENT, "weight_decay"});
  rows.push_back({C::adam().clip_norm(-1.0), FLATOPT_ERR_INVALID_ARGUMENT, "grad_clip_norm"});
  rows.push_back({C::adam().clip_value(inf), FLATOPT_ERR_INVALID_ARGUMENT, "grad_clip_value"});
  rows.push_back({C::adam().lookahead(0, 0.5), FLATOPT_ERR_INVALID_ARGUMENT, "sync_period"});
  rows.push_back({C::adam().lookahead(5, 1.5), FLATOPT_ERR_INVALID_ARGUMENT, "alpha"});
  rows.push_back({C::adam().lookahead(5, -0.1), FLATOPT_ERR_INVALID_ARGUMENT, "alpha"});
  rows.push_back({C::adam().threads(0), FLATOPT_ERR_INVALID_ARGUMENT, "num_threads"});
  rows.push_back({C::adam().threads(100000), FLATOPT_ERR_INVALID_ARGUMENT, "num_threads"});
  rows.push_back({C::adam().nonfinite(static_cast<flatopt::NonFinite>(7)),
                  FLATOPT_ERR_INVALID_ARGUMENT, "nonfinite"});
  rows.push_back({C::adam().simd_tier(static_cast<flatopt::SimdTier>(9)),
                  FLATOPT_ERR_INVALID_ARGUMENT, "simd_tier"});
  if (!flatopt::simd_tier_available(flatopt::SimdTier::Avx512))
    rows.push_back({C::adam().simd_tier(flatopt::SimdTier::Avx512), FLATOPT_ERR_UNSUPPORTED,
                    "avx512"});
  rows.push_back({C::adam().schedule(S::cosine(0.1, 0)), FLATOPT_ERR_INVALID_ARGUMENT, "t_max"});
  rows.push_back({C::adam().schedule(S::cosine(-0.1, 10)), FLATOPT_ERR_INVALID_ARGUMENT, "base"});
  rows.push_back({C::adam().schedule(S::step(0.1, 0)), FLATOPT_ERR_INVALID_ARGUMENT, "step_size"});
  rows.push_back({C::adam().schedule(S::multi_step(0.1, {5, 5})), FLATOPT_ERR_INVALID_ARGUMENT,
                  "milestones"});
  rows.push_back({C::adam().schedule(S::piecewise_constant({1, 2}, {0.1, 0.2})),
                  FLATOPT_ERR_INVALID_ARGUMENT, "values"});
  rows.push_back({C::adam().schedule(S::piecewise_constant({2, 1}, {0.1, 0.2, 0.3})),
                  FLATOPT_ERR_INVALID_ARGUMENT, "boundaries"});
  rows.push_back({C::adam().schedule(S::exponential(0.1, 0.0)), FLATOPT_ERR_INVALID_ARGUMENT,
                  "gamma"});
  rows.push_back({C::adam().schedule(S::exponential_decay(0.1, 0, 0.5)),
                  FLATOPT_ERR_INVALID_ARGUMENT, "decay_steps"});
  rows.push_back({C::adam().schedule(S::exponential_decay(0.1, 5, 0.5).end_value(-1)),
                  FLATOPT_ERR_INVALID_ARGUMENT, "end_value"});
  rows.push_back({C::adam().schedule(S::cosine_warm_restarts(0.1, 5, 0)),
                  FLATOPT_ERR_INVALID_ARGUMENT, "t_mult"});
  rows.push_back({C::adam().schedule(S::linear(0.1, 1.5)), FLATOPT_ERR_INVALID_ARGUMENT,
                  "start_factor"});
  rows.push_back({C::adam().schedule(S::constant(0.1, 2.0)), FLATOPT_ERR_INVALID_ARGUMENT,
                  "factor"});
  rows.push_back({C::adam().schedule(S::polynomial(0.1, 0)), FLATOPT_ERR_INVALID_ARGUMENT,
                  "total_iters"});
  rows.push_back({C::adam().schedule(S::warmup(0.1, 5, -1.0)), FLATOPT_ERR_INVALID_ARGUMENT,
                  "start_lr"});
  rows.push_back({C::adam().schedule(S::warmup_cosine(0.1, 20, 10)),
                  FLATOPT_ERR_INVALID_ARGUMENT, "warmup_steps"});
  rows.push_back({C::adam().schedule(S::one_cycle(0.1, 10).pct_start(1.0)),
                  FLATOPT_ERR_INVALID_ARGUMENT, "pct_start"});
  rows.push_back({C::adam().schedule(S::one_cycle(0.1, 0)), FLATOPT_ERR_INVALID_ARGUMENT,
                  "total_steps"});
  rows.push_back({C::adam().schedule(S::cyclic(0.1, 1.0, 0)), FLATOPT_ERR_INVALID_ARGUMENT,
                  "step_size_up"});
  rows.push_back({C::adam().schedule(
                      S::cyclic(0.1, 1.0, 5).mode(flatopt::CyclicMode::ExpRange).gamma(1.5)),
                  FLATOPT_ERR_INVALID_ARGUMENT, "gamma"});
  rows.push_back({C::adam().schedule(S::reduce_on_plateau(0.1).factor(1.0)),
                  FLATOPT_ERR_INVALID_ARGUMENT, "factor"});
  rows.push_back({C::adam().schedule(S::reduce_on_plateau(0.1).threshold(1.0)),
                  FLATOPT_ERR_INVALID_ARGUMENT, "threshold"});
  rows.push_back({C::adam().schedule(S::reduce_on_plateau(0.1).min_lr(-1.0)),
                  FLATOPT_ERR_INVALID_ARGUMENT, "min_lr"});
  rows.push_back({C::adam().state_dtype(static_cast<flatopt::StateDtype>(3)),
                  FLATOPT_ERR_INVALID_ARGUMENT, "state_dtype"});
  rows.push_back({C::adam().state_rounding(static_cast<flatopt::StateRounding>(2)),
                  FLATOPT_ERR_INVALID_ARGUMENT, "state_rounding"});
  rows.push_back({C::adam().lookahead(5, 0.5).slow_dtype(flatopt::StateDtype::Int8),
                  FLATOPT_ERR_INVALID_ARGUMENT, "slow_dtype"});
  rows.push_back({C::rprop().state_dtype(flatopt::StateDtype::Int8),
                  FLATOPT_ERR_INVALID_ARGUMENT, "state_dtype"});
  for (const Row& r : rows) {
    CHECK_THROWS(flatopt::Optimizer(r.cfg), r.code, r.needle);
  }
  std::printf("    %zu invalid configurations refused\n", rows.size());
}

void test_call_errors() {
  Vec p(10, 1.0f), g(10, 0.0f), p2(5, 1.0f), g2(5, 0.0f);
  flatopt::Optimizer opt(flatopt::Config::adam());

  // Stepping, resetting, splitting before any registration.
  CHECK_THROWS(opt.step(), FLATOPT_ERR_INVALID_STATE, "registered");
  CHECK_THROWS(opt.reset(), FLATOPT_ERR_INVALID_STATE, "reset");
  CHECK_THROWS(opt.begin_step(), FLATOPT_ERR_INVALID_STATE, "registered");

  // Registration: NULL, size mismatch, overlap. (A NULL gradient is allowed: see
  // test_register_without_grad.)
  CHECK_THROWS(opt.add_param(flatopt::Span<float>(nullptr, 10), g), FLATOPT_ERR_NULL_POINTER,
               "param");
  CHECK_THROWS(opt.add_param(p, g2), FLATOPT_ERR_LENGTH_MISMATCH, "grad of buffer 0");
  CHECK_THROWS(opt.add_param(p, p), FLATOPT_ERR_OVERLAP, "param 0");
  CHECK_THROWS(opt.add_param(flatopt::Span<float>(p.data(), 6),
                             flatopt::Span<const float>(p.data() + 4, 6)),
               FLATOPT_ERR_OVERLAP, "share memory");
  CHECK(opt.num_params() == 0);  // nothing registered by the failures
  opt.add_param(p, g);
  CHECK_THROWS(opt.add_param(flatopt::Span<float>(p.data() + 5, 5), g2), FLATOPT_ERR_OVERLAP,
               "param");
  CHECK_THROWS(opt.add_param(p2, flatopt::Span<const float>(p.data(), 5)), FLATOPT_ERR_OVERLAP,
               "param 0");
  // Misaligned float pointer.
  {
    alignas(8) unsigned char raw[64] = {};
    float* odd = reinterpret_cast<float*>(raw + 1);
    CHECK_THROWS(opt.add_param(flatopt::Span<float>(odd, 4), flatopt::Span<const float>(g2.data(), 4)),
                 FLATOPT_ERR_INVALID_ARGUMENT, "param");
  }
  opt.add_param(p2, g2);
  CHECK(opt.num_params() == 2 && opt.total_len() == 15);

  // Per-call gradients: count, sizes, overlap with a parameter, NULL.
  CHECK_THROWS(opt.step(g), FLATOPT_ERR_LENGTH_MISMATCH, "n_grads");
  CHECK_THROWS(opt.step(g, g), FLATOPT_ERR_LENGTH_MISMATCH, "grad buffer 1");
  CHECK_THROWS(opt.step(g, p2), FLATOPT_ERR_OVERLAP, "share memory");
  CHECK_THROWS(opt.step(g, flatopt::Span<const float>(nullptr, 5)), FLATOPT_ERR_NULL_POINTER,
               "grad");
  {
    std::vector<flatopt::Span<const float>> three{g, g2, g2};
    CHECK_THROWS(opt.step_with_grads(three), FLATOPT_ERR_LENGTH_MISMATCH, "n_grads");
  }

  // Split-step call order.
  CHECK_THROWS(opt.step_range(0, 1), FLATOPT_ERR_INVALID_STATE, "begin_step");
  CHECK_THROWS(opt.end_step(), FLATOPT_ERR_INVALID_STATE, "begin_step");
  CHECK(opt.begin_step().applied());
  CHECK_THROWS(opt.begin_step(), FLATOPT_ERR_INVALID_STATE, "end_step");
  CHECK_THROWS(opt.step(), FLATOPT_ERR_INVALID_STATE, "end_step");
  CHECK_THROWS(opt.step(g, g2), FLATOPT_ERR_INVALID_STATE, "end_step");
  CHECK_THROWS(opt.reset(), FLATOPT_ERR_INVALID_STATE, "end_step");
  CHECK_THROWS(opt.set_num_threads(2), FLATOPT_ERR_INVALID_STATE, "end_step");
  CHECK_THROWS(opt.set_simd_tier(flatopt::SimdTier::Scalar), FLATOPT_ERR_INVALID_STATE,
               "end_step");
  Vec p3(3, 0.0f), g3(3, 0.0f);
  CHECK_THROWS(opt.add_param(p3, g3), FLATOPT_ERR_INVALID_STATE, "registering");
  CHECK_THROWS(opt.step_range(0, 16), FLATOPT_ERR_INVALID_ARGUMENT, "range");
  CHECK_THROWS(opt.step_range(5, 4), FLATOPT_ERR_INVALID_ARGUMENT, "range");
  opt.step_range(0, 15);
  opt.end_step();
  CHECK(opt.step_count() == 1);

  // Registration after the first update needs reset().
  CHECK_THROWS(opt.add_param(p3, g3), FLATOPT_ERR_INVALID_STATE, "reset");
  opt.reset();
  CHECK(opt.add_param(p3, g3) == 2);
  CHECK(opt.num_params() == 3);
  CHECK(opt.step(g, g2, g3).applied());

  // Settings and schedule calls.
  CHECK_THROWS(opt.set_num_threads(0), FLATOPT_ERR_INVALID_ARGUMENT, "num_threads");
  CHECK_THROWS(opt.set_simd_tier(static_cast<flatopt::SimdTier>(42)), FLATOPT_ERR_INVALID_ARGUMENT,
               "tier");
  if (!flatopt::simd_tier_available(flatopt::SimdTier::Avx512)) {
    CHECK_THROWS(opt.set_simd_tier(flatopt::SimdTier::Avx512), FLATOPT_ERR_UNSUPPORTED, "avx512");
    CHECK_THROWS(flatopt::set_default_simd_tier(flatopt::SimdTier::Avx512),
                 FLATOPT_ERR_UNSUPPORTED, "avx512");
  }
  CHECK_THROWS(opt.schedule_step_metric(1.0), FLATOPT_ERR_INVALID_STATE, "ReduceOnPlateau");
  {
    flatopt::Optimizer plat(flatopt::Config::sgd(1.0).schedule(
        flatopt::Schedule::reduce_on_plateau(0.1)));
    CHECK_THROWS(plat.schedule_set_epoch(3), FLATOPT_ERR_INVALID_STATE, "ReduceOnPlateau");
    CHECK(lr_close(plat.current_lr(), 0.1));
  }
}

void test_stateless_errors() {
  using flatopt::BaseParams;
  using flatopt::StepArgs;
  Vec p(8, 1.0f), g(8, 0.1f), m(8, 0.0f), v(8, 0.0f), vm(8, 0.0f), s(8, 1.0f), short4(4, 0.0f);
  const StepArgs args = StepArgs().lr(0.01);
  // Wrong kind for the function.
  CHECK_THROWS(flatopt::adam_update(BaseParams::sgd(), args, p, g, m, v),
               FLATOPT_ERR_INVALID_ARGUMENT, "hp.kind");
  CHECK_THROWS(flatopt::sgd_update(BaseParams::adam(), args, p, g),
               FLATOPT_ERR_INVALID_ARGUMENT, "hp.kind");
  // Bad hyperparameters and step arguments.
  CHECK_THROWS(flatopt::adam_update(BaseParams::adam().b1(2.0), args, p, g, m, v),
               FLATOPT_ERR_INVALID_ARGUMENT, "b1");
  CHECK_THROWS(flatopt::adam_update(BaseParams::adam(), StepArgs().step(0), p, g, m, v),
               FLATOPT_ERR_INVALID_ARGUMENT, "step");
  CHECK_THROWS(flatopt::adam_update(BaseParams::adam(), StepArgs().lr(-1), p, g, m, v),
               FLATOPT_ERR_INVALID_ARGUMENT, "lr");
  CHECK_THROWS(flatopt::adam_update(BaseParams::adam(), StepArgs().clip_scale(2.0), p, g, m, v),
               FLATOPT_ERR_INVALID_ARGUMENT, "clip_scale");
  CHECK_THROWS(flatopt::adam_update(BaseParams::adam(), StepArgs().clip_value(-1), p, g, m, v),
               FLATOPT_ERR_INVALID_ARGUMENT, "clip_value");
  CHECK_THROWS(flatopt::adam_update(BaseParams::adam(), StepArgs().weight_decay(-1), p, g, m, v),
               FLATOPT_ERR_INVALID_ARGUMENT, "weight_decay");
  CHECK_THROWS(flatopt::adam_update(BaseParams::adam(), StepArgs().sync().alpha(1.5), p, g, m, v,
                                    {}, s),
               FLATOPT_ERR_INVALID_ARGUMENT, "alpha");
  // Missing, short and overlapping buffers.
  CHECK_THROWS(flatopt::adam_update(BaseParams::adam(), args, p, g, {}, v),
               FLATOPT_ERR_NULL_POINTER, "m");
  CHECK_THROWS(flatopt::adam_update(BaseParams::adam().amsgrad(), args, p, g, m, v),
               FLATOPT_ERR_NULL_POINTER, "v_max");
  CHECK_THROWS(flatopt::adam_update(BaseParams::adam(), StepArgs().sync(), p, g, m, v),
               FLATOPT_ERR_NULL_POINTER, "slow");
  CHECK_THROWS(flatopt::sgd_update(BaseParams::sgd(0.9), args, p, g), FLATOPT_ERR_NULL_POINTER,
               "momentum_buf");
  CHECK_THROWS(flatopt::adam_update(BaseParams::adam(), args, p, {}, m, v),
               FLATOPT_ERR_NULL_POINTER, "grad");
  CHECK_THROWS(flatopt::adam_update(BaseParams::adam(), args, p, g, short4, v),
               FLATOPT_ERR_LENGTH_MISMATCH, "m");
  CHECK_THROWS(flatopt::adamw_update(BaseParams::adamw(), args, p, short4, m, v),
               FLATOPT_ERR_LENGTH_MISMATCH, "grad");
  CHECK_THROWS(flatopt::radam_update(BaseParams::radam(), args, p, g, m, v, short4),
               FLATOPT_ERR_LENGTH_MISMATCH, "slow");
  CHECK_THROWS(flatopt::adam_update(BaseParams::adam(), args, p, g, m, m),
               FLATOPT_ERR_OVERLAP, "share memory");
  CHECK_THROWS(flatopt::adam_update(BaseParams::adam(), args, p, p, m, v), FLATOPT_ERR_OVERLAP,
               "share memory");
  CHECK_THROWS(flatopt::adamw_update(BaseParams::adamw(-1.0), args, p, g, m, v),
               FLATOPT_ERR_INVALID_ARGUMENT, "weight_decay (decoupled)");
  // The generic update and its state helpers.
  CHECK_THROWS(flatopt::base_update(BaseParams::adagrad(), args, p, g, {}, {}),
               FLATOPT_ERR_NULL_POINTER, "v");
  CHECK_THROWS(flatopt::base_update(BaseParams::rmsprop(0.99, 0.0, true), args, p, g, {}, v),
               FLATOPT_ERR_NULL_POINTER, "v_max");
  CHECK_THROWS(flatopt::base_update(BaseParams::rprop(), args, p, g, m, m),
               FLATOPT_ERR_OVERLAP, "share memory");
  CHECK_THROWS(flatopt::base_update(BaseParams::lion().b1(2.0), args, p, g, m),
               FLATOPT_ERR_INVALID_ARGUMENT, "b1");
  CHECK_THROWS(flatopt::base_update(BaseParams::adadelta(), StepArgs().lr(1e39), p, g, m, v),
               FLATOPT_ERR_INVALID_ARGUMENT, "lr");
  CHECK_THROWS(flatopt::base_update(BaseParams::yogi(), args, p, g, m, short4),
               FLATOPT_ERR_LENGTH_MISMATCH, "v");
  CHECK_THROWS(flatopt::base_state_init(BaseParams::adam(), 8, m), FLATOPT_ERR_NULL_POINTER, "v");
  CHECK_THROWS(flatopt::base_state_init(BaseParams::adam(), 8, m, short4),
               FLATOPT_ERR_LENGTH_MISMATCH, "v");
  CHECK(flatopt::base_state_buffers(BaseParams::sgd()) == 0);
  CHECK(flatopt::base_state_buffers(BaseParams::adagrad()) == FLATOPT_STATE_V);
  // Nothing was written by any of the failures.
  CHECK(bits_equal(p, Vec(8, 1.0f)) && bits_equal(m, Vec(8, 0.0f)) && bits_equal(v, Vec(8, 0.0f)));

  // Sums, scales, clips, syncs.
  std::vector<double> parts(3);
  CHECK_THROWS(flatopt::sum_squares_partials(p, parts), FLATOPT_ERR_LENGTH_MISMATCH, "n_partials");
  CHECK_THROWS(flatopt::sum_squares(flatopt::Span<const float>(nullptr, 3)),
               FLATOPT_ERR_NULL_POINTER, "x");
  CHECK_THROWS(flatopt::clip_scale(std::nan(""), 1.0), FLATOPT_ERR_INVALID_ARGUMENT,
               "sum_squares");
  CHECK_THROWS(flatopt::clip_scale(1.0, 0.0), FLATOPT_ERR_INVALID_ARGUMENT, "max_norm");
  CHECK_THROWS(flatopt::clip_by_value(p, -1.0f), FLATOPT_ERR_INVALID_ARGUMENT, "invalid c =");
  CHECK_THROWS(flatopt::scale(p, std::numeric_limits<float>::infinity()),
               FLATOPT_ERR_INVALID_ARGUMENT, "invalid s =");
  CHECK_THROWS(flatopt::lookahead_sync(p, s, 2.0f), FLATOPT_ERR_INVALID_ARGUMENT, "alpha");
  CHECK_THROWS(flatopt::lookahead_sync(p, short4, 0.5f), FLATOPT_ERR_LENGTH_MISMATCH, "slow");
  CHECK_THROWS(flatopt::lookahead_sync(flatopt::Span<float>(p.data(), 4),
                                       flatopt::Span<float>(p.data() + 2, 4), 0.5f),
               FLATOPT_ERR_OVERLAP, "share memory");
  CHECK_THROWS(flatopt::lookahead_sync(p, flatopt::Span<float>(nullptr, 8), 0.5f),
               FLATOPT_ERR_NULL_POINTER, "slow");
}

// ---------------------------------------------------------------------------------------------
// Move semantics, reset, queries.

void test_move_semantics() {
  std::mt19937 rng(8);
  Vec p = random_vec(rng, 16), g = random_vec(rng, 16);
  Vec ref_p = p;
  const Vec ref_g = g;
  flatopt::Optimizer ref(flatopt::Config::adam(0.1).lookahead(2));
  ref.add_param(ref_p, ref_g);

  flatopt::Optimizer a(flatopt::Config::adam(0.1).lookahead(2));
  a.add_param(p, g);
  CHECK(a.step().applied() && ref.step().applied());
  flatopt_optimizer* h = a.handle();
  flatopt::Optimizer b(std::move(a));
  CHECK(!a && a.handle() == nullptr && b && b.handle() == h);
  CHECK(b.step().applied() && ref.step().applied());
  CHECK(b.step(g).applied() && ref.step().applied());  // the registered lengths moved along
  CHECK(bits_equal(p, ref_p) && b.step_count() == 3);

  // Every call on the moved-from object throws, naming the missing handle.
  CHECK_THROWS(a.step(), FLATOPT_ERR_NULL_POINTER, "opt");
  CHECK_THROWS(a.step(g), FLATOPT_ERR_NULL_POINTER, "opt");
  CHECK_THROWS(a.step_count(), FLATOPT_ERR_NULL_POINTER, "opt");
  CHECK_THROWS(a.add_param(p, g), FLATOPT_ERR_NULL_POINTER, "opt");
  CHECK_THROWS(a.slow_weights(0), FLATOPT_ERR_NULL_POINTER, "opt");
  CHECK_THROWS(a.split_step(), FLATOPT_ERR_NULL_POINTER, "opt");

  // Move assignment frees the target's handle (valgrind checks) and takes the source's.
  Vec p2(4, 0.0f), g2(4, 0.0f);
  flatopt::Optimizer c(flatopt::Config::sgd(0.1));
  c.add_param(p2, g2);
  c = std::move(b);
  CHECK(c.handle() == h && !b && c.step_count() == 3 && c.num_params() == 1);
  // A moved-from object can be assigned to again, and self-move is harmless.
  a = flatopt::Optimizer(flatopt::Config::sgd(0.1));
  CHECK(a && a.num_params() == 0);
  flatopt::Optimizer& alias = c;
  c = std::move(alias);
  CHECK(c.handle() == h);
  // Moved-from objects in a container are destroyed safely.
  std::vector<flatopt::Optimizer> many;
  for (int i = 0; i < 8; ++i) many.emplace_back(flatopt::Config::adam());  // reallocations move
  flatopt::Optimizer last = std::move(many.back());
  many.clear();
  CHECK(last && last.num_params() == 0);

  // Schedule / Config copies are independent.
  flatopt::Config c1 = flatopt::Config::adam().schedule(flatopt::Schedule::multi_step(0.1, {3}));
  flatopt::Config c2 = std::move(c1);
  CHECK(c2.c_struct().schedule->n_milestones == 1);
}

void test_reset_and_queries() {
  std::mt19937 rng(11);
  Vec p = random_vec(rng, 100);
  const Vec p0 = p;
  Vec g(100);
  std::vector<Vec> grads;
  for (int i = 0; i < 6; ++i) grads.push_back(random_vec(rng, 100));
  flatopt::Optimizer opt(flatopt::Config::radam(0.05).lookahead(3).schedule(
      flatopt::Schedule::exponential(0.05, 0.9)));
  opt.add_param(p, g);
  for (const Vec& x : grads) {
    copy_into(g, x);
    opt.step();
  }
  const Vec after_first = p;
  CHECK(opt.step_count() == 6 && !lr_close(opt.current_lr(), 0.05));
  // reset: counters, schedule, moments zeroed, slow weights = current params. Running the same
  // gradients from p0 must reproduce the first run exactly.
  p = p0;
  opt.reset();
  CHECK(opt.step_count() == 0 && opt.skipped_count() == 0 && lr_close(opt.current_lr(), 0.05));
  CHECK(bits_equal(opt.slow_weights(0), p0));
  for (const Vec& x : grads) {
    copy_into(g, x);
    opt.step();
  }
  CHECK(bits_equal(p, after_first));

  // Queries and settings.
  CHECK(opt.num_threads() == 1 && opt.num_params() == 1 && opt.total_len() == 100);
  opt.set_num_threads(3);
  CHECK(opt.num_threads() == 3);
  opt.set_num_threads(1);
  opt.set_simd_tier(flatopt::SimdTier::Scalar);
  CHECK(opt.simd_tier() == flatopt::SimdTier::Scalar);
  opt.set_simd_tier(flatopt::SimdTier::Default);
  CHECK(opt.simd_tier() == flatopt::default_simd_tier());

  // SIMD helpers.
  const std::vector<flatopt::SimdTier> tiers = flatopt::available_simd_tiers();
  CHECK(!tiers.empty() && tiers.front() == flatopt::SimdTier::Scalar);
  CHECK(flatopt::simd_tier_available(flatopt::default_simd_tier()));
  CHECK(!flatopt::simd_tier_available(flatopt::SimdTier::Default));
  CHECK(std::string(flatopt::simd_tier_name(flatopt::SimdTier::Avx2)) == "avx2");
  CHECK(std::string(flatopt::simd_tier_name(flatopt::SimdTier::Default)) == "default");
  CHECK(std::string(flatopt::simd_tier_name(static_cast<flatopt::SimdTier>(77))) == "unknown");
  std::printf("    SIMD tiers available:");
  for (flatopt::SimdTier t : tiers) std::printf(" %s", flatopt::simd_tier_name(t));
  std::printf(" (default %s)\n", flatopt::simd_tier_name(flatopt::default_simd_tier()));
  // Every tier gives the same bits.
  std::vector<Vec> results;
  for (flatopt::SimdTier t : tiers) {
    Vec q = p0;
    Vec gq(100);
    flatopt::Optimizer o(flatopt::Config::adamw(0.01).clip_norm(1.0).simd_tier(t));
    o.add_param(q, gq);
    CHECK(o.simd_tier() == t);
    for (const Vec& x : grads) {
      copy_into(gq, x);
      o.step();
    }
    results.push_back(q);
  }
  for (const Vec& r : results) CHECK(bits_equal(r, results.front()));
  // The process default can be changed and restored.
  const flatopt::SimdTier before = flatopt::default_simd_tier();
  flatopt::set_default_simd_tier(flatopt::SimdTier::Scalar);
  CHECK(flatopt::default_simd_tier() == flatopt::SimdTier::Scalar);
  CHECK(flatopt::Optimizer(flatopt::Config()).simd_tier() == flatopt::SimdTier::Scalar);
  flatopt::set_default_simd_tier(before);
  CHECK(flatopt::default_simd_tier() == before);
}

// ---------------------------------------------------------------------------------------------
// Behaviour documented in the header, checked here (these once failed: regression tests).

/// include/flatopt.h: "the gradient may be NULL if every step passes gradients with
/// flatopt_optimizer_step_with_grads".
void test_register_without_grad() {
  Vec p(4, 1.0f), g(4, 0.5f);
  flatopt::Optimizer opt(flatopt::Config::sgd(0.1));
  bool registered = false;
  try {
    opt.add_param(p);
    registered = true;
  } catch (const flatopt::Error& e) {
    std::fprintf(stderr, "    add_param(param) without gradient: %s\n", e.what());
  }
  CHECK(registered);
  if (registered) {
    CHECK(opt.step(g).applied());
    CHECK(p[0] == 1.0f - 0.1f * 0.5f);
    CHECK_THROWS(opt.step(), FLATOPT_ERR_NULL_POINTER, "grad");
  }
}

/// flatopt_lookahead_sync(fast, slow, ...) should name its arguments "fast" / "slow".
void test_lookahead_sync_names_fast() {
  Vec s(4, 0.0f);
  CHECK_THROWS(flatopt::lookahead_sync(flatopt::Span<float>(nullptr, 4), s, 0.5f),
               FLATOPT_ERR_NULL_POINTER, "fast");
}

/// flatopt_schedule_init documents "PyTorch's defaults" (and docs/numerics.md lists them): CyclicLR
/// gamma = 1, PolynomialLR total_iters = 5.
void test_schedule_init_defaults() {
  flatopt_schedule s;
  CHECK(flatopt_schedule_init(&s, sizeof s, FLATOPT_SCHEDULE_CYCLIC) == FLATOPT_OK);
  if (s.gamma != 1.0) std::fprintf(stderr, "    cyclic init gamma = %g\n", s.gamma);
  CHECK(s.gamma == 1.0);
  CHECK(flatopt_schedule_init(&s, sizeof s, FLATOPT_SCHEDULE_POLYNOMIAL) == FLATOPT_OK);
  if (s.period != 5)
    std::fprintf(stderr, "    polynomial init total_iters = %llu\n",
                 static_cast<unsigned long long>(s.period));
  CHECK(s.period == 5);
}

}  // namespace

/// Checkpoints through the binding: resume bit-identically, refuse damage, files; sharded step.
void test_checkpoints_and_shards() {
  Vec p(100, 1.0f), g(100, 0.25f), q(100, 1.0f);
  auto cfg = flatopt::Config::adam(0.01).lookahead(5, 0.5).clip_norm(1.0);
  flatopt::Optimizer a(cfg), b(cfg);
  a.add_param(p, g);
  for (int t = 0; t < 7; ++t) a.step();
  std::vector<uint8_t> ck = a.save();
  CHECK(!ck.empty());
  q = p;
  b.add_param(q, g);
  b.load(ck);
  CHECK(b.step_count() == 7);
  for (int t = 0; t < 5; ++t) {
    a.step();
    b.step();
  }
  CHECK(std::memcmp(p.data(), q.data(), p.size() * sizeof(float)) == 0);
  std::vector<uint8_t> bad = ck;
  bad[bad.size() / 2] ^= 1;
  CHECK_THROWS(b.load(bad), FLATOPT_ERR_CORRUPT, "checksum");
  CHECK(b.step_count() == 12);
  const std::string path = "/tmp/flatopt-cpp-test-" + std::to_string(::getpid()) + ".ckpt";
  a.save_file(path);
  b.load_file(path);
  std::remove(path.c_str());
  CHECK_THROWS(b.load_file(path), FLATOPT_ERR_IO, "reading");
  // A path with an embedded NUL is refused, not truncated to the part before the NUL (issue
  // 11): neither "<path>" nor anything else is written or read.
  {
    const std::string nul = path + std::string(1, '\0') + ".extra";
    CHECK_THROWS(a.save_file(nul), FLATOPT_ERR_INVALID_ARGUMENT, "NUL byte at index");
    CHECK(std::fopen(path.c_str(), "rb") == nullptr);
    a.save_file(path);
    const uint64_t before = b.step_count();
    CHECK_THROWS(b.load_file(std::string("x\0", 2) + path), FLATOPT_ERR_INVALID_ARGUMENT, "index 1");
    CHECK(b.step_count() == before);
    std::remove(path.c_str());
  }
  // One shard holding everything: its own partials give its own step.
  std::vector<double> parts = a.sum_squares_partials();
  double sum = 0.0;
  for (double x : parts) sum += x;
  CHECK(a.step_with_sum_squares(sum).applied());
  CHECK(b.step().applied());
  CHECK(std::memcmp(p.data(), q.data(), p.size() * sizeof(float)) == 0);
  // LAMB (norms per buffer): one shard holding everything, its norm partials' totals in block
  // order give its own whole step; bad totals are refused.
  {
    std::vector<float> lp = p, lq = p;
    auto lcfg = flatopt::Config::lamb(0.01).clip_norm(1.0);
    flatopt::Optimizer la(lcfg), lb(lcfg);
    la.add_param(lp, g);
    lb.add_param(lq, g);
    for (int t = 0; t < 3; ++t) {
      double s = 0.0;
      for (double x : la.sum_squares_partials()) s += x;
      std::vector<double> np = la.norm_partials(s);
      double norms[2] = {0.0, 0.0};
      for (std::size_t i = 0; i + 1 < np.size(); i += 2) {
        norms[0] += np[i];
        norms[1] += np[i + 1];
      }
      CHECK(la.step_with_norms(s, flatopt::Span<const double>(norms, 2)).applied());
      CHECK(lb.step().applied());
      CHECK(std::memcmp(lp.data(), lq.data(), lp.size() * sizeof(float)) == 0);
    }
    const double bad_norms[2] = {1.0, -1.0};
    CHECK_THROWS(la.step_with_norms(1.0, flatopt::Span<const double>(bad_norms, 2)),
                 FLATOPT_ERR_INVALID_ARGUMENT, "norms");
    CHECK_THROWS(a.norm_partials(1.0), FLATOPT_ERR_INVALID_ARGUMENT, "adam");
  }
}

/// CRC-32 (IEEE 802.3, zlib's crc32): crafted checkpoints get a valid checksum.
uint32_t crc32_ieee(const uint8_t* p, std::size_t n) {
  uint32_t c = 0xFFFFFFFFu;
  for (std::size_t i = 0; i < n; ++i) {
    c ^= p[i];
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
  }
  return ~c;
}

/// Issue 11's hostile cases through the C++ API, one checked statement per row: values that
/// are finite doubles but not finite (or not nonzero) floats, a schedule growing past the f32
/// range, split-step misuse, a long file name and unbounded files. Each refusal leaves the
/// parameters and counters as they were.
void test_issue11_rows() {
  using C = flatopt::Config;
  using S = flatopt::Schedule;
  int rows = 0;
  // Configured values that do not survive rounding to f32.
  CHECK_THROWS(flatopt::Optimizer(C::adam(1e39)), FLATOPT_ERR_INVALID_ARGUMENT, "lr");
  CHECK_THROWS(flatopt::Optimizer(C::adam().weight_decay(1e39)), FLATOPT_ERR_INVALID_ARGUMENT,
               "weight_decay");
  CHECK_THROWS(flatopt::Optimizer(C::adam().eps(1e-50)), FLATOPT_ERR_INVALID_ARGUMENT, "eps");
  CHECK_THROWS(flatopt::Optimizer(C::adam().clip_norm(1e39)), FLATOPT_ERR_INVALID_ARGUMENT,
               "grad_clip_norm");
  rows += 4;
  {
    Vec p(8, 1.0f), g(8, 0.1f), m(8, 0.0f), v(8, 0.0f);
    const Vec p0 = p;
    CHECK_THROWS(flatopt::adam_update(flatopt::BaseParams::adam(), flatopt::StepArgs().lr(1e39),
                                      p, g, m, v),
                 FLATOPT_ERR_INVALID_ARGUMENT, "lr");
    CHECK_THROWS(flatopt::adam_update(flatopt::BaseParams::adam(),
                                      flatopt::StepArgs().lr(0.01).weight_decay(1e39), p, g, m, v),
                 FLATOPT_ERR_INVALID_ARGUMENT, "weight_decay");
    CHECK(p == p0);
    rows += 2;
  }
  // ExponentialLR(gamma = 1e10): 0.1, 1e9, 1e19, 1e29, then 1e39, which is +inf as f32.
  {
    Vec p(16, 1.0f), g(16, 0.25f);
    flatopt::Optimizer opt(C::sgd(0.1).schedule(S::exponential(0.1, 1e10)));
    opt.add_param(p, g);
    for (int t = 0; t < 4; ++t) CHECK(opt.step().applied());
    const Vec before = p;
    CHECK_THROWS(opt.step(), FLATOPT_ERR_INVALID_ARGUMENT, "lr");
    CHECK(p == before);
    CHECK(opt.step_count() == 4);
    rows += 1;
  }
  // Split step: the same range twice, a partial cover, no range at all.
  {
    Vec p(10, 1.0f), g(10, 0.5f);
    flatopt::Optimizer opt(C::sgd(0.1));
    opt.add_param(p, g);
    CHECK(opt.begin_step().applied());
    opt.step_range(0, 10);
    const Vec once = p;
    CHECK_THROWS(opt.step_range(0, 10), FLATOPT_ERR_OVERLAP, "overlaps");
    CHECK(p == once);
    opt.end_step();
    CHECK(opt.step_count() == 1);
    rows += 1;
  }
  {
    Vec p(10, 1.0f), g(10, 0.5f);
    flatopt::Optimizer opt(C::sgd(0.1));
    opt.add_param(p, g);
    CHECK(opt.begin_step().applied());
    opt.step_range(0, 5);
    CHECK_THROWS(opt.end_step(), FLATOPT_ERR_LENGTH_MISMATCH, "expected 10, got 5");
    opt.step_range(5, 10);
    opt.end_step();
    CHECK(opt.step_count() == 1);
    CHECK(opt.begin_step().applied());
    CHECK_THROWS(opt.end_step(), FLATOPT_ERR_LENGTH_MISMATCH, "got 0");
    rows += 2;
  }
  // A 250-character file name saves and loads (the temporary name must fit NAME_MAX).
  {
    Vec p(10, 1.0f), g(10, 0.5f), q(10, 1.0f);
    flatopt::Optimizer a(C::adam()), b(C::adam());
    a.add_param(p, g);
    b.add_param(q, g);
    a.step();
    const std::string path = "/tmp/" + std::string(250, 'n');
    a.save_file(path);
    b.load_file(path);
    CHECK(b.step_count() == 1);
    std::remove(path.c_str());
    // Files that are not checkpoints are refused after reading their header, not all of them.
    CHECK_THROWS(b.load_file("/dev/zero"), FLATOPT_ERR_CORRUPT, "");
    CHECK(b.step_count() == 1);
    rows += 2;
  }
  // Crafted checkpoints: a valid checksum around a state value no update can produce. Each is
  // refused (FLATOPT_ERR_CORRUPT naming the value) and the optimizer keeps its state.
  struct StateRow {
    const char* name;
    C config;
    std::size_t array;  // among the buffer's present arrays, in the order m, v, v_max, slow
    std::size_t index;
    float value;
    const char* named;
  };
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const StateRow state_rows[] = {
      {"Adam first moment NaN", C::adam(), 0, 1, nan, "first moment m[1]"},
      {"Adam second moment -1", C::adam(), 1, 2, -1.0f, "second moment v[2]"},
      {"Lookahead slow weight +Inf", C::adam().lookahead(2, 0.5), 2, 0, inf, "slow weight[0]"},
      {"AMSGrad maximum -0.5", C::adam().amsgrad(), 2, 3, -0.5f, "AMSGrad maximum v_max[3]"},
      {"Adadelta squared-update average -1", C::adadelta(), 0, 4, -1.0f,
       "squared-update average m[4]"},
      {"Adagrad accumulator -1", C::adagrad(0.1), 0, 0, -1.0f, "second moment v[0]"},
      {"Rprop step size NaN", C::rprop(), 1, 1, nan, "second moment v[1]"},
  };
  for (const StateRow& r : state_rows) {
    Vec p = {0.5f, -1.0f, 2.0f, 0.25f, -0.75f}, g = {0.1f, -0.2f, 0.3f, 0.0f, 1.0f};
    flatopt::Optimizer opt(r.config);
    opt.add_param(p, g);
    opt.step();
    opt.step();
    const std::vector<uint8_t> before = opt.save();
    std::vector<uint8_t> forged = before;
    uint64_t clen = 0;
    std::memcpy(&clen, forged.data() + 32, sizeof clen);
    const std::size_t at = 40 + clen + 72 + 8 + 16 + 4 * (p.size() * r.array + r.index);
    std::memcpy(forged.data() + at, &r.value, sizeof r.value);
    const uint32_t crc = crc32_ieee(forged.data(), forged.size() - 4);
    std::memcpy(forged.data() + forged.size() - 4, &crc, sizeof crc);
    std::printf("    crafted checkpoint: %s\n", r.name);
    CHECK_THROWS(opt.load(forged), FLATOPT_ERR_CORRUPT, r.named);
    CHECK(opt.save() == before);
    rows += 1;
  }
  std::printf("    %d issue-11 rows\n", rows);
}

/// The C++ enums against the C ones, value for value (tests/header.rs checks that every C
/// enumerator has its C++ member), and the C initializer macros compiled as C++ (a runtime kind
/// in a braced initializer must not narrow).
static_assert(static_cast<uint32_t>(flatopt::BaseKind::Sgd) == FLATOPT_SGD &&
                  static_cast<uint32_t>(flatopt::BaseKind::RAdam) == FLATOPT_RADAM,
              "base kinds");
static_assert(static_cast<uint32_t>(flatopt::NonFinite::Skip) == FLATOPT_NONFINITE_SKIP &&
                  static_cast<uint32_t>(flatopt::NonFinite::Propagate) ==
                      FLATOPT_NONFINITE_PROPAGATE,
              "non-finite policies");
static_assert(static_cast<uint32_t>(flatopt::SimdTier::Default) == FLATOPT_SIMD_DEFAULT &&
                  static_cast<uint32_t>(flatopt::SimdTier::Avx512) == FLATOPT_SIMD_AVX512,
              "simd tiers");
static_assert(static_cast<uint32_t>(flatopt::ScheduleKind::Fixed) == FLATOPT_SCHEDULE_FIXED &&
                  static_cast<uint32_t>(flatopt::ScheduleKind::ReduceOnPlateau) ==
                      FLATOPT_SCHEDULE_REDUCE_ON_PLATEAU,
              "schedule kinds");
static_assert(FLATOPT_ERR_POISONED == 13, "the last status code");

void test_init_macros() {
  for (uint32_t k = 0; k <= FLATOPT_RADAM; ++k) {
    const flatopt_base_params m = FLATOPT_BASE_PARAMS_INIT(k);
    flatopt_base_params f;
    CHECK(flatopt_base_params_init(&f, sizeof f, k) == FLATOPT_OK);
    CHECK(std::memcmp(&m, &f, sizeof m) == 0);
  }
  const flatopt_config c = FLATOPT_CONFIG_INIT;
  flatopt_config f;
  CHECK(flatopt_config_init(&f, sizeof f) == FLATOPT_OK);
  CHECK(std::memcmp(&c, &f, sizeof c) == 0 && c.struct_size == FLATOPT_CONFIG_SIZE_V2);
  const flatopt_schedule s = FLATOPT_SCHEDULE_INIT(FLATOPT_SCHEDULE_EXPONENTIAL_DECAY);
  CHECK(std::isnan(s.end_value) && s.kind == FLATOPT_SCHEDULE_EXPONENTIAL_DECAY &&
        s.struct_size == sizeof s);
  const flatopt_step_args a = FLATOPT_STEP_ARGS_INIT;
  CHECK(a.step == 1 && a.struct_size == FLATOPT_STEP_ARGS_SIZE_V1);
}

// Parameter groups through the RAII API: the AdamW recipe (decay on the weights, none on the
// biases, which take another learning rate and betas). Without clipping by norm the groups do
// not interact, so the biases step bit for bit as an AdamW optimizer of their own with the
// group's hyperparameters; changes apply from the next step; checkpoints carry the groups.
void test_groups() {
  std::mt19937 rng(31);
  Vec w = random_vec(rng, 300), wg(300, 0.0f), b = random_vec(rng, 17), bg(17, 0.0f);
  Vec rb = b;
  const flatopt::Config cfg = flatopt::Config::adamw(1e-2, 0.1);
  flatopt::Optimizer opt(cfg);
  flatopt::BaseParams betas = flatopt::BaseParams::adamw(0.1);
  betas.b1(0.8).b2(0.99);
  const std::size_t g =
      opt.add_group(flatopt::GroupOptions().lr(3e-2).weight_decay(0.0).base(betas));
  CHECK(g == 1);
  opt.add_param(w, wg);
  CHECK(opt.add_param_to_group(g, b, bg) == 1);
  flatopt::BaseParams rbase = flatopt::BaseParams::adamw(0.0);
  rbase.b1(0.8).b2(0.99);
  flatopt::Optimizer ref(flatopt::Config(rbase, 3e-2));
  ref.add_param(rb, bg);

  CHECK(opt.num_groups() == 2);
  CHECK(opt.param_group(0) == 0 && opt.param_group(1) == 1);
  CHECK(!opt.group_lr(0).has_value());
  CHECK(opt.group_lr(1) == std::optional<double>(3e-2));
  CHECK(opt.group_weight_decay(0) == 0.1 && opt.group_weight_decay(1) == 0.0);
  CHECK(opt.group_current_lr(1) == static_cast<float>(3e-2));
  CHECK(opt.group_current_lr_exact(1) == 3e-2);
  CHECK(static_cast<float>(opt.group_current_lr_exact(0)) == opt.group_current_lr(0));
  const flatopt::BaseParams got = opt.group_base_params(1);
  CHECK(got.c_struct().b1 == 0.8 && got.c_struct().b2 == 0.99 &&
        got.c_struct().decoupled_weight_decay == 0.0);

  for (int t = 0; t < 8; ++t) {
    refill(rng, wg, -0.3f, 0.3f);
    refill(rng, bg, -0.3f, 0.3f);
    if (t == 3) {
      opt.set_group_lr(1, 5e-3);
      ref.set_group_lr(0, 5e-3);
    }
    if (t == 5) {
      opt.set_group_weight_decay(1, 0.05);
      ref.set_group_weight_decay(0, 0.05);
    }
    if (t == 6) {  // betas (and AdamW's decoupled decay, which lives in the base rule)
      flatopt::BaseParams cycled = flatopt::BaseParams::adamw(0.02);
      cycled.b1(0.7).b2(0.95);
      opt.set_group_base_params(1, cycled);
      ref.set_group_base_params(0, cycled);
      const flatopt::BaseParams now = opt.group_base_params(1);
      CHECK(now.c_struct().b1 == 0.7);
      CHECK(opt.group_weight_decay(1) == 0.02);
    }
    CHECK(opt.step().applied());
    CHECK(ref.step().applied());
    CHECK(std::memcmp(b.data(), rb.data(), b.size() * sizeof(float)) == 0);
  }
  const std::vector<uint8_t> saved = opt.save();
  Vec w2 = w, b2 = b;
  flatopt::Optimizer again(cfg);
  again.add_group();
  again.add_param(w2, wg);
  again.add_param_to_group(1, b2, bg);
  again.load(saved);
  CHECK(again.group_lr(1) == std::optional<double>(5e-3));
  CHECK(again.group_weight_decay(1) == 0.02);
  const flatopt::BaseParams loaded = again.group_base_params(1);
  CHECK(loaded.c_struct().b2 == 0.95);
  again.set_group_lr(1, std::nullopt);
  CHECK(!again.group_lr(1).has_value());

  // Hostile rows: each refused, naming the problem, changing nothing.
  flatopt::Optimizer plain(cfg);
  Vec p(4, 1.0f), pg(4, 0.0f);
  plain.add_param(p, pg);
  const std::vector<uint8_t> before = plain.save();
  CHECK_THROWS(plain.add_group(flatopt::GroupOptions().lr(-1.0)), FLATOPT_ERR_INVALID_ARGUMENT,
               "lr");
  CHECK_THROWS(plain.add_group(flatopt::GroupOptions().weight_decay(INFINITY)),
               FLATOPT_ERR_INVALID_ARGUMENT, "weight_decay");
  CHECK_THROWS(plain.add_group(flatopt::GroupOptions().base(flatopt::BaseParams::sgd())),
               FLATOPT_ERR_INVALID_ARGUMENT, "kind");
  Vec x(3, 0.0f), xg(3, 0.0f);
  CHECK_THROWS(plain.add_param_to_group(1, x, xg), FLATOPT_ERR_INVALID_ARGUMENT, "group");
  CHECK_THROWS(plain.add_param_to_group(0, x, Vec(2)), FLATOPT_ERR_LENGTH_MISMATCH, "grad");
  CHECK_THROWS(plain.param_group(1), FLATOPT_ERR_INVALID_ARGUMENT, "index");
  CHECK_THROWS(plain.group_lr(1), FLATOPT_ERR_INVALID_ARGUMENT, "group");
  CHECK_THROWS(plain.group_current_lr(2), FLATOPT_ERR_INVALID_ARGUMENT, "group");
  CHECK_THROWS(plain.group_weight_decay(3), FLATOPT_ERR_INVALID_ARGUMENT, "group");
  CHECK_THROWS(plain.group_base_params(1), FLATOPT_ERR_INVALID_ARGUMENT, "group");
  CHECK_THROWS(plain.set_group_lr(0, 1e39), FLATOPT_ERR_INVALID_ARGUMENT, "lr");
  CHECK_THROWS(plain.set_group_lr(5, 0.1), FLATOPT_ERR_INVALID_ARGUMENT, "group");
  CHECK_THROWS(plain.set_group_weight_decay(0, std::nan("")), FLATOPT_ERR_INVALID_ARGUMENT,
               "weight_decay");
  CHECK_THROWS(plain.set_group_base_params(0, flatopt::BaseParams::sgd()),
               FLATOPT_ERR_INVALID_ARGUMENT, "kind");
  CHECK_THROWS(plain.set_group_base_params(0, flatopt::BaseParams::adamw(0.1).b1(1.0)),
               FLATOPT_ERR_INVALID_ARGUMENT, "b1");
  CHECK_THROWS(plain.set_group_base_params(2, flatopt::BaseParams::adamw(0.1)),
               FLATOPT_ERR_INVALID_ARGUMENT, "group");
  CHECK_THROWS(again.load(plain.save()), FLATOPT_ERR_INVALID_ARGUMENT, "parameter groups");
  CHECK(plain.save() == before);
  CHECK(plain.num_groups() == 1);
}

// Mixed precision: bf16 gradients and a bf16 copy step bit for bit as f32 gradients widened
// in C++; fp16 gradients with an explicit scale; the dynamic loss scaler (growth, backoff, a
// skipped step with nothing changed, its checkpoint); the stateless conversions and update;
// hostile rows (each refused, naming the problem, changing nothing).
using Half = std::vector<uint16_t>;

Half narrowed(flatopt::Dtype d, const Vec& x) {
  Half h(x.size());
  flatopt::narrow_from_f32(d, x, h);
  return h;
}

void test_mixed() {
  using flatopt::Dtype;
  std::mt19937 rng(41);
  const std::size_t n = 5000;
  Vec w = random_vec(rng, n), rw = w, rg(n, 0.0f);
  Half g(n, 0), copy(n, 0);
  const flatopt::Config cfg = flatopt::Config::adam(1e-2);
  flatopt::Optimizer opt(cfg), ref(cfg);
  opt.add_param(w, g, flatopt::ParamOptions().grad_dtype(Dtype::Bf16).copy(copy, Dtype::Bf16));
  ref.add_param(rw, rg);
  CHECK(copy == narrowed(Dtype::Bf16, w));
  for (int t = 0; t < 5; ++t) {
    const Vec f = random_vec(rng, n, -4.0f, 4.0f);
    const Half h = narrowed(Dtype::Bf16, f);
    std::copy(h.begin(), h.end(), g.begin());
    flatopt::widen_to_f32(Dtype::Bf16, g, rg);
    CHECK((t % 2 == 0 ? opt.step() : opt.step_mixed(0.0f)).applied());
    CHECK(ref.step().applied());
    CHECK(bits_equal(w, rw));
    CHECK(copy == narrowed(Dtype::Bf16, w));
  }

  // fp16 gradients divided by an explicit scale, then the dynamic loss scaler.
  Vec p = random_vec(rng, 64), rp = p, pg(64, 0.0f);
  Half h16(64, 0), c16(64, 0);
  flatopt::Optimizer mix(cfg), plain(cfg);
  mix.add_param(p, h16, flatopt::ParamOptions().grad_dtype(Dtype::F16).copy(c16, Dtype::F16));
  plain.add_param(rp, pg);
  Vec sp = p;
  Half sc16(64, 0);
  flatopt::Optimizer spl(cfg);  // split steps with the same explicit scale
  spl.add_param(sp, h16, flatopt::ParamOptions().grad_dtype(Dtype::F16).copy(sc16, Dtype::F16));
  const Vec f = random_vec(rng, 64, -100.0f, 100.0f);
  const Half fh = narrowed(Dtype::F16, f);
  std::copy(fh.begin(), fh.end(), h16.begin());
  flatopt::widen_to_f32(Dtype::F16, h16, pg);
  for (float& x : pg) x = x / 1000.0f;
  const void* given[1] = {h16.data()};
  CHECK(mix.step_mixed(flatopt::Span<const void* const>(given, 1), 1000.0f).applied());
  CHECK(plain.step().applied());
  CHECK(bits_equal(p, rp));
  CHECK(c16 == narrowed(Dtype::F16, p));
  {
    flatopt::SplitStep st = spl.split_step(1000.0f);
    CHECK(st.active());
    st.apply(40, st.total_len());
    st.apply(0, 40);
    st.finish();
  }
  CHECK(bits_equal(sp, p) && sc16 == c16);
  {
    // An fp16 overflow skips the scaled split step as the whole one, changing nothing.
    const uint16_t kept = h16[9];
    h16[9] = 0xfc00;  // -Inf
    const Vec sp_before = sp;
    const flatopt::StepResult r = spl.begin_step(1000.0f);
    CHECK(r.skipped() && contains(r.message(), "non-finite"));
    CHECK(bits_equal(sp, sp_before) && sc16 == c16);
    h16[9] = kept;
  }
  CHECK_THROWS(spl.begin_step(-1.0f), FLATOPT_ERR_INVALID_ARGUMENT, "grad_scale");

  mix.set_loss_scaler(flatopt::LossScalerOptions().init_scale(512.0f).growth_interval(1));
  CHECK(mix.loss_scaler_state().scale == 512.0f);
  CHECK(mix.step().applied());
  CHECK(mix.loss_scaler_state().scale == 1024.0f);
  h16[5] = 0x7c00;  // +Inf
  const Vec keep = p;
  const Half keepc = c16;
  const flatopt::StepResult r = mix.step();
  CHECK(r.skipped() && contains(r.message(), "non-finite"));
  CHECK(bits_equal(p, keep) && c16 == keepc);
  const flatopt::LossScalerState s = mix.loss_scaler_state();
  CHECK(s.scale == 512.0f && s.growth_tracker == 0 && s.found_inf);
  const std::vector<uint8_t> saved = mix.save();
  CHECK(saved.size() > 8 && saved[8] == 3);
  Vec p2 = p;
  Half c2(64, 0);
  flatopt::Optimizer again(cfg);
  again.add_param(p2, h16, flatopt::ParamOptions().grad_dtype(Dtype::F16).copy(c2, Dtype::F16));
  CHECK_THROWS(again.load(saved), FLATOPT_ERR_INVALID_ARGUMENT, "loss scaler");
  again.set_loss_scaler(flatopt::LossScalerOptions().growth_interval(1));
  again.load(saved);
  CHECK(again.loss_scaler_state().scale == 512.0f && again.loss_scaler_state().found_inf);
  again.set_loss_scaler_state(8.0f, 0);
  CHECK(again.loss_scaler_state().scale == 8.0f);
  again.remove_loss_scaler();
  CHECK_THROWS(again.loss_scaler_state(), FLATOPT_ERR_INVALID_STATE, "no dynamic loss scaler");

  // Stateless: the mixed update equals adam_update on the widened, divided gradients.
  Vec a = random_vec(rng, 33), b = a, m1(33, 0.0f), v1(33, 0.0f), m2(33, 0.0f), v2(33, 0.0f);
  const Half sg = narrowed(Dtype::Bf16, random_vec(rng, 33, -8.0f, 8.0f));
  Vec wide(33);
  flatopt::widen_to_f32(Dtype::Bf16, sg, wide);
  for (float& x : wide) x = x / 4.0f;
  Half sc(33, 0);
  const flatopt::BaseParams hp = flatopt::BaseParams::adam();
  const flatopt::StepArgs args;
  flatopt::mixed_update(hp, args, 4.0f, a, sg, Dtype::Bf16, m1, v1, {}, {}, sc, Dtype::Bf16);
  flatopt::adam_update(hp, args, b, wide, m2, v2);
  CHECK(bits_equal(a, b) && sc == narrowed(Dtype::Bf16, a));

  // Hostile rows.
  Vec q(8, 1.0f), qf(8, 0.0f);
  Half qh(8, 0), qc(8, 0), short_copy(7, 0), spare(8, 0), three(3, 0);
  flatopt::Optimizer host(cfg);
  host.add_param(q, qh, flatopt::ParamOptions().grad_dtype(Dtype::Bf16).copy(qc, Dtype::Bf16));
  host.set_loss_scaler();
  const std::vector<uint8_t> before = host.save();
  const Vec q_before = q;
  const Half qc_before = qc;
  Vec x(8, 0.0f);
  CHECK_THROWS(host.add_param(x, qh, flatopt::ParamOptions()), FLATOPT_ERR_INVALID_ARGUMENT,
               "grad_dtype");
  CHECK_THROWS(host.add_param(x, qf, flatopt::ParamOptions().grad_dtype(Dtype::F16)),
               FLATOPT_ERR_INVALID_ARGUMENT, "grad_dtype");
  CHECK_THROWS(host.add_param(x, Half(8), flatopt::ParamOptions().grad_dtype(Dtype::Bf16).copy(
                                              short_copy, Dtype::Bf16)),
               FLATOPT_ERR_LENGTH_MISMATCH, "copy");
  CHECK_THROWS(host.add_param(x, Half(8), flatopt::ParamOptions().grad_dtype(Dtype::Bf16).copy(
                                              qc, Dtype::Bf16)),
               FLATOPT_ERR_OVERLAP, "copy 0");
  CHECK_THROWS(host.add_param(x, Half(8), flatopt::ParamOptions()
                                              .grad_dtype(Dtype::Bf16)
                                              .copy(flatopt::Span<uint16_t>(
                                                        reinterpret_cast<uint16_t*>(q.data()), 8),
                                                    Dtype::Bf16)),
               FLATOPT_ERR_OVERLAP, "param 0");
  CHECK_THROWS(host.add_param(x, Half(8), flatopt::ParamOptions().grad_dtype(Dtype::Bf16).copy(
                                              spare, Dtype::F32)),
               FLATOPT_ERR_INVALID_ARGUMENT, "copy_dtype");
  CHECK_THROWS(host.step_mixed(2.0f), FLATOPT_ERR_INVALID_ARGUMENT, "dynamic loss scaler");
  CHECK_THROWS(host.step_mixed(std::nanf("")), FLATOPT_ERR_INVALID_ARGUMENT, "grad_scale");
  CHECK_THROWS(host.split_step(2.0f), FLATOPT_ERR_INVALID_ARGUMENT, "dynamic loss scaler");
  CHECK_THROWS(host.set_loss_scaler(flatopt::LossScalerOptions().growth_factor(0.5f)),
               FLATOPT_ERR_INVALID_ARGUMENT, "growth_factor");
  CHECK_THROWS(host.set_loss_scaler(flatopt::LossScalerOptions().init_scale(INFINITY)),
               FLATOPT_ERR_INVALID_ARGUMENT, "init_scale");
  CHECK_THROWS(host.set_loss_scaler_state(1.0f, 5000), FLATOPT_ERR_INVALID_ARGUMENT,
               "growth_tracker");
  CHECK_THROWS(flatopt::widen_to_f32(Dtype::F32, qh, x), FLATOPT_ERR_INVALID_ARGUMENT, "dtype");
  CHECK_THROWS(flatopt::narrow_from_f32(Dtype::Bf16, q, three), FLATOPT_ERR_LENGTH_MISMATCH,
               "dst");
  CHECK_THROWS(flatopt::mixed_update(hp, args, 0.0f, a, sg, Dtype::Bf16, m1, v1),
               FLATOPT_ERR_INVALID_ARGUMENT, "grad_scale");
  CHECK_THROWS(flatopt::mixed_update(hp, args, 1.0f, a, sg, Dtype::Bf16, m1, v1, {}, {}, sc,
                                     Dtype::F32),
               FLATOPT_ERR_INVALID_ARGUMENT, "copy_dtype");
  CHECK(host.save() == before);
  CHECK(bits_equal(q, q_before) && qc == qc_before);
  CHECK(host.num_params() == 1);
}

// Compressed state (docs/numerics.md, "Compressed state"): the Config setters fill the C
// struct, the optimizer holds the bytes it should, each precision gives other bits than f32,
// and stochastic rounding is a function of its seed.
void test_compressed_state() {
  using flatopt::StateDtype;
  using flatopt::StateRounding;
  {
    const flatopt::Config c = flatopt::Config::adam()
                                  .lookahead(4, 0.5)
                                  .state_dtype(StateDtype::Bfloat16)
                                  .state_rounding(StateRounding::Nearest)
                                  .state_seed(42)
                                  .state_index_offset(4096)
                                  .slow_dtype(StateDtype::Bfloat16);
    const flatopt_config cs = c.c_struct();
    CHECK(cs.state_dtype == FLATOPT_STATE_BFLOAT16 && cs.state_rounding == FLATOPT_ROUNDING_NEAREST);
    CHECK(cs.state_seed == 42 && cs.state_index_offset == 4096);
    CHECK(cs.slow_dtype == FLATOPT_STATE_BFLOAT16);
    const flatopt::Config dc = flatopt::Config::adam();
    const flatopt_config d = dc.c_struct();
    CHECK(d.state_dtype == FLATOPT_STATE_FLOAT32 && d.state_rounding == FLATOPT_ROUNDING_STOCHASTIC);
    CHECK(d.slow_dtype == FLATOPT_STATE_FLOAT32 && d.state_seed == 0);
  }
  const std::size_t n = 700;  // three 8-bit blocks, the last one partial
  auto run = [&](const flatopt::Config& cfg, uint64_t* bytes) {
    std::mt19937 rng(5);
    Vec p = random_vec(rng, n), g(n, 0.0f);
    flatopt::Optimizer opt(cfg);
    CHECK(opt.state_bytes() == 0);
    opt.add_param(p, g);
    for (int t = 0; t < 8; ++t) {
      refill(rng, g, -0.2f, 0.2f);
      CHECK(opt.step().applied());
    }
    *bytes = opt.state_bytes();
    return p;
  };
  const uint64_t held[3] = {4 * n, 2 * n, n + 4 * ((n + 255) / 256)};
  const StateDtype dtypes[3] = {StateDtype::Float32, StateDtype::Bfloat16, StateDtype::Int8};
  uint64_t bytes = 0;
  const Vec f32 = run(flatopt::Config::adam(1e-2), &bytes);
  CHECK(bytes == 2 * held[0]);
  for (int k = 0; k < 3; ++k) {
    const Vec p = run(flatopt::Config::adam(1e-2).state_dtype(dtypes[k]), &bytes);
    CHECK(bytes == 2 * held[k]);
    CHECK((std::memcmp(p.data(), f32.data(), n * sizeof(float)) == 0) == (k == 0));
    run(flatopt::Config::adam(1e-2).state_dtype(dtypes[k]).lookahead(3, 0.5), &bytes);
    CHECK(bytes == 2 * held[k] + 4 * n);
    run(flatopt::Config::adam(1e-2)
            .state_dtype(dtypes[k])
            .lookahead(3, 0.5)
            .slow_dtype(StateDtype::Bfloat16),
        &bytes);
    CHECK(bytes == 2 * held[k] + 2 * n);
  }
  auto bf16 = [&](uint64_t seed, StateRounding r) {
    uint64_t b = 0;
    return run(flatopt::Config::adam(1e-2)
                   .state_dtype(StateDtype::Bfloat16)
                   .state_rounding(r)
                   .state_seed(seed),
               &b);
  };
  const Vec s1 = bf16(1, StateRounding::Stochastic), s1b = bf16(1, StateRounding::Stochastic);
  const Vec s2 = bf16(2, StateRounding::Stochastic), n1 = bf16(1, StateRounding::Nearest);
  const Vec n2 = bf16(2, StateRounding::Nearest);
  CHECK(std::memcmp(s1.data(), s1b.data(), n * sizeof(float)) == 0);
  CHECK(std::memcmp(s1.data(), s2.data(), n * sizeof(float)) != 0);
  CHECK(std::memcmp(n1.data(), n2.data(), n * sizeof(float)) == 0);
  CHECK(std::memcmp(s1.data(), n1.data(), n * sizeof(float)) != 0);

  // The split step: ranges on 8-bit block boundaries (int8; anywhere for bf16) from two
  // threads are one whole step bit for bit; a range cutting a block throws, naming it.
  for (int k = 1; k < 3; ++k) {
    const flatopt::Config cfg =
        flatopt::Config::adam(1e-2).state_dtype(dtypes[k]).lookahead(2, 0.5).state_seed(3);
    std::mt19937 rng(9);
    Vec p1 = random_vec(rng, n), g(n, 0.0f), p2 = p1;
    flatopt::Optimizer whole(cfg), split(cfg);
    whole.add_param(p1, g);
    split.add_param(p2, g);
    const std::size_t cut = k == 2 ? 512 : 333;
    for (int t = 0; t < 6; ++t) {
      refill(rng, g, -0.2f, 0.2f);
      CHECK(whole.step().applied());
      flatopt::SplitStep s = split.split_step();
      CHECK(s.active());
      if (k == 2) CHECK_THROWS(s.apply(0, 300), FLATOPT_ERR_INVALID_ARGUMENT, "8-bit blocks");
      std::thread th([&] { s.apply(cut, n); });
      s.apply(0, cut);
      th.join();
      s.finish();
      CHECK(std::memcmp(p1.data(), p2.data(), n * sizeof(float)) == 0);
    }
  }
}

// Adafactor through ParamOptions::shape: an f64 model of docs/numerics.md, "Adafactor" (the
// formulas written out again, independently of the C test's), and the golden files' tolerance
// at every step; a buffer of several matrices; checkpoints of shaped buffers; bad shapes.
struct AdafactorRow {
  const char* name;
  std::size_t rows, cols, nmat, len;  // len: the buffer's length without a shape (rows 0)
  flatopt::BaseParams base;
  uint64_t lookahead;  // sync period (alpha 0.5), 0: none
};

// `p` after `steps` updates of the f64 model of `r` (learning rate `lr`, gradients `grad(t)`).
std::vector<double> adafactor_model(const AdafactorRow& r, double lr, const Vec& p0,
                                    const std::function<Vec(int)>& grad, int t_end,
                                    const std::function<void(int, const std::vector<double>&)>& each) {
  const flatopt_base_params& h = r.base.c_struct();
  const std::size_t n = p0.size();
  std::vector<double> p(p0.begin(), p0.end()), slow = p, m(n, 0.0), u(n);
  const std::size_t R = r.rows, C = r.cols;
  std::vector<double> row(R ? r.nmat * R : n, 0.0), col(R ? r.nmat * C : 0, 0.0);
  for (int t = 1; t <= t_end; ++t) {
    const Vec g = grad(t);
    const double w = std::pow(std::max(t - h.decay_offset, 1.0), -h.decay_rate), beta = 1.0 - w;
    const double floor2 = h.eps * h.eps;
    for (std::size_t k = 0; k < (R ? r.nmat : 0); ++k) {
      double mean = 0.0;
      for (std::size_t i = 0; i < R; ++i) {
        double s = 0.0;
        for (std::size_t j = 0; j < C; ++j) s += double(g[(k * R + i) * C + j]) * g[(k * R + i) * C + j];
        row[k * R + i] = beta * row[k * R + i] + w * (s / double(C) + h.eps_root);
        mean += row[k * R + i];
      }
      mean = std::max(mean / double(R), h.eps);
      for (std::size_t j = 0; j < C; ++j) {
        double s = 0.0;
        for (std::size_t i = 0; i < R; ++i) s += double(g[(k * R + i) * C + j]) * g[(k * R + i) * C + j];
        col[k * C + j] = beta * col[k * C + j] + w * (s / double(R) + h.eps_root);
      }
      for (std::size_t i = 0; i < R; ++i)
        for (std::size_t j = 0; j < C; ++j) {
          const std::size_t x = (k * R + i) * C + j;
          u[x] = g[x] / std::sqrt(std::max(floor2, row[k * R + i] / mean * col[k * C + j]));
        }
    }
    if (R == 0)
      for (std::size_t i = 0; i < n; ++i) {
        row[i] = beta * row[i] + w * (double(g[i]) * g[i] + h.eps_root);
        u[i] = g[i] / std::sqrt(std::max(floor2, row[i]));
      }
    double su = 0.0, sp = 0.0;
    for (std::size_t i = 0; i < n; ++i) {
      su += u[i] * u[i];
      sp += p[i] * p[i];
    }
    const double den =
        std::isnan(h.clipping_threshold) ? 1.0 : std::max(1.0, std::sqrt(su / n) / h.clipping_threshold);
    const double scale = h.multiply_by_parameter_scale ? std::max(h.eps_scale, std::sqrt(sp / n)) : 1.0;
    const double lr_t = h.relative_step ? std::min(lr, 1.0 / std::sqrt(double(t))) : lr;
    const double kd = h.weight_decay_by_lr ? lr * h.decoupled_weight_decay : h.decoupled_weight_decay;
    for (std::size_t i = 0; i < n; ++i) {
      double s = lr_t * scale / den * u[i];
      if (h.momentum > 0.0) s = m[i] = h.momentum * m[i] + (1.0 - h.momentum) * s;
      p[i] -= s + kd * p[i];
    }
    if (r.lookahead && t % r.lookahead == 0)
      for (std::size_t i = 0; i < n; ++i) p[i] = slow[i] = slow[i] + 0.5 * (p[i] - slow[i]);
    each(t, p);
  }
  return p;
}

// Step `t`'s gradients, written into the registered buffer `g` (its storage stays).
const Vec& adafactor_grad(Vec& g, int t) {
  for (std::size_t i = 0; i < g.size(); ++i)
    g[i] = float(std::cos(0.29 * double(i) + 0.7 * t) * (0.5 + 0.2 * double(i % 5)));
  return g;
}

void test_adafactor_shaped() {
  using flatopt::BaseParams;
  const AdafactorRow rows[] = {
      {"torch 4x3", 4, 3, 1, 0, BaseParams::adafactor(), 0},
      {"torch 3 matrices 5x8, decay 0.1", 5, 8, 3, 0, BaseParams::adafactor(0.1), 0},
      {"torch 1x12 and clip 1.5", 1, 12, 1, 0, BaseParams::adafactor().clipping_threshold(1.5), 0},
      {"torch 12x1", 12, 1, 1, 0, BaseParams::adafactor(), 0},
      {"optax momentum 0.8, decay 1e-3, 6x5 x2", 6, 5, 2, 0, BaseParams::adafactor_optax(0.8, 1e-3), 0},
      {"optax, no clipping, no parameter scale, 7x9", 7, 9, 1, 0,
       BaseParams::adafactor_optax().clipping_threshold(NAN).multiply_by_parameter_scale(false), 0},
      {"torch Lookahead k=4, 3x7 x2", 3, 7, 2, 0, BaseParams::adafactor(0.02), 4},
      {"unfactored torch", 0, 0, 1, 23, BaseParams::adafactor(0.1), 0},
  };
  const double lr = 0.04;
  std::mt19937 rng(71);
  for (const AdafactorRow& r : rows) {
    const std::size_t n = r.rows ? r.nmat * r.rows * r.cols : r.len;
    Vec p = random_vec(rng, n), g(n);
    flatopt::Config cfg(r.base, lr);
    if (r.lookahead) cfg.lookahead(r.lookahead, 0.5);
    flatopt::Optimizer opt(cfg);
    flatopt::ParamOptions po;
    if (r.rows) po.shape(r.rows, r.cols);
    opt.add_param(p, g, po);
    double worst = 0.0;
    adafactor_model(r, lr, p, [&](int t) {
      adafactor_grad(g, t);
      CHECK(opt.step().applied());
      return g;
    }, 25, [&](int, const std::vector<double>& want) {
      for (std::size_t i = 0; i < n; ++i)
        worst = std::max(worst, std::fabs(p[i] - want[i]) / (1e-5 + 1e-5 * std::fabs(want[i])));
    });
    if (!(worst <= 1.0))
      std::fprintf(stderr, "    %s: %.3g of the tolerance from the f64 model\n", r.name, worst);
    CHECK(worst <= 1.0);
  }

  // Without clipping and the parameter scale each matrix steps on its own: one buffer of two
  // matrices equals two buffers of one, bit for bit.
  const std::size_t R = 4, C = 9, N = 2 * R * C;
  const flatopt::Config plain(
      BaseParams::adafactor_optax(0.9).clipping_threshold(NAN).multiply_by_parameter_scale(false),
      1e-2);
  Vec a = random_vec(rng, N), b = a, g(N);
  flatopt::Optimizer one(plain), two(plain);
  one.add_param(a, g, flatopt::ParamOptions().shape(R, C));
  two.add_param(flatopt::Span<float>(b.data(), R * C), flatopt::Span<const float>(g.data(), R * C),
                flatopt::ParamOptions().shape(R, C));
  two.add_param(flatopt::Span<float>(b.data() + R * C, R * C),
                flatopt::Span<const float>(g.data() + R * C, R * C),
                flatopt::ParamOptions().shape(R, C));
  for (int t = 1; t <= 10; ++t) {
    adafactor_grad(g, t);
    CHECK(one.step().applied() && two.step().applied());
    CHECK(bits_equal(a, b));
  }

  // A checkpoint resumes bit for bit; another shape, or none, is refused naming the shapes.
  const flatopt::Config torch(BaseParams::adafactor(0.05), 2e-2);
  Vec x = random_vec(rng, N), y(N), z(N);
  flatopt::Optimizer ox(torch), oy(torch), transposed(torch), flat(torch);
  ox.add_param(x, g, flatopt::ParamOptions().shape(R, C));
  for (int t = 1; t <= 6; ++t) {
    adafactor_grad(g, t);
    ox.step();
  }
  y = x;
  z = x;
  oy.add_param(y, g, flatopt::ParamOptions().shape(R, C));
  const std::vector<uint8_t> ck = ox.save();
  oy.load(ck);
  for (int t = 7; t <= 14; ++t) {
    adafactor_grad(g, t);
    ox.step();
    oy.step();
    CHECK(bits_equal(x, y));
  }
  transposed.add_param(z, g, flatopt::ParamOptions().shape(C, R));
  flat.add_param(z, g);
  CHECK_THROWS(transposed.load(ck), FLATOPT_ERR_INVALID_ARGUMENT, "(4, 9) in the checkpoint, (9, 4)");
  CHECK_THROWS(flat.load(ck), FLATOPT_ERR_INVALID_ARGUMENT, "shape");
  CHECK(transposed.step_count() == 0 && flat.step_count() == 0);
  // Registration: a shape that does not divide the buffer, a shape with a zero.
  Vec spare(N);
  CHECK_THROWS(flat.add_param(spare, g, flatopt::ParamOptions().shape(5, 5)),
               FLATOPT_ERR_INVALID_ARGUMENT, "(5, 5)");
  CHECK_THROWS(flat.add_param(spare, g, flatopt::ParamOptions().shape(0, N)),
               FLATOPT_ERR_INVALID_ARGUMENT, "shape");
  CHECK(flat.num_params() == 1);
}

int main() {
  const TestCase tests[] = {
      {"C initializer macros", test_init_macros},
      {"version", test_version},
      {"span", test_span},
      {"builders", test_builders},
      {"least squares with Lookahead(Adam)", test_least_squares},
      {"step variants are bit-identical", test_step_variants_bit_identical},
      {"stateless kernels equal the optimizer", test_stateless_equals_optimizer},
      {"slow weights", test_slow_weights},
      {"schedules", test_schedules},
      {"non-finite gradients", test_nonfinite},
      {"config errors", test_config_errors},
      {"call errors", test_call_errors},
      {"stateless errors", test_stateless_errors},
      {"move semantics", test_move_semantics},
      {"reset and queries", test_reset_and_queries},
      {"add_param without gradient buffer", test_register_without_grad},
      {"lookahead_sync names its fast buffer", test_lookahead_sync_names_fast},
      {"flatopt_schedule_init defaults", test_schedule_init_defaults},
      {"checkpoints and sharded step", test_checkpoints_and_shards},
      {"issue 11 hostile rows", test_issue11_rows},
      {"parameter groups", test_groups},
      {"mixed precision", test_mixed},
      {"compressed state", test_compressed_state},
      {"Adafactor with shaped buffers", test_adafactor_shaped},
  };
  int passed = 0, failed = 0;
  std::printf("flatopt C++ binding tests (library %s, header %s)\n", flatopt::version(),
              FLATOPT_VERSION_STRING);
  for (const TestCase& t : tests) {
    g_test_failures = 0;
    std::printf("  %s\n", t.name);
    std::fflush(stdout);
    try {
      t.fn();
    } catch (const std::exception& e) {
      ++g_test_failures;
      std::fprintf(stderr, "    FAIL: unexpected exception: %s\n", e.what());
    }
    std::fflush(stderr);
    const bool ok = g_test_failures == 0;
    ok ? ++passed : ++failed;
    std::printf("  %s  %s\n", ok ? "ok  " : "FAIL", t.name);
  }
  std::printf("\n%d tests: %d passed, %d failed; %d checks\n", passed + failed, passed, failed,
              g_checks);
  return failed == 0 ? 0 : 1;
}
