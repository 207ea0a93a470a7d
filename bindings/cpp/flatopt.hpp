// flatopt.hpp: header-only C++17 binding of the flatopt C ABI (include/flatopt.h).
//
// Everything lives in namespace `flatopt`:
//
//   * `Error` (a std::runtime_error carrying the flatopt_status code and the library's message)
//     and `check()`, which turns a status into an exception;
//   * `Span<T>`: a minimal non-owning view (pointer + size), since C++17 has no std::span;
//   * configuration builders with fluent setters whose defaults are those of the C `_init`
//     functions: `BaseParams`, `Schedule`, `Config`, `StepArgs`;
//   * `Optimizer`: a move-only RAII owner of a `flatopt_optimizer*`;
//   * free functions for the stateless kernels, the version check and the SIMD tiers.
//
// Example:
//
//   std::vector<float> w(1000, 0.5f), g(1000);
//   flatopt::Optimizer opt(flatopt::Config::adam(1e-3)
//                              .lookahead(5, 0.5)
//                              .clip_norm(1.0)
//                              .schedule(flatopt::Schedule::cosine(1e-3, 10000)));
//   opt.add_param(w, g);
//   for (int i = 0; i < 100; ++i) {
//     // ... compute gradients into g ...
//     if (opt.step().skipped()) { /* a NaN/Inf gradient: nothing changed */ }
//   }
//
// Conventions:
//   * Every call that fails throws `flatopt::Error`; nothing has been changed then (the C ABI
//     validates before writing). A skipped update (a NaN/Inf gradient under the default "skip"
//     policy) is not an error: `step()` returns a `StepResult` saying `Skipped`.
//   * Hyperparameter values are validated by the library when the optimizer is created (the
//     message names the first bad field). The builders themselves only refuse setters that do
//     not apply to the chosen kind (for example `b1` on SGD), which the C structs would
//     silently ignore.
//   * Buffers passed to `Optimizer::add_param` stay owned by the caller and must outlive the
//     optimizer's use of them, exactly as in C.
//   * The binding adds length checks where the C ABI takes a single length (or none) for
//     several buffers; those errors carry FLATOPT_ERR_LENGTH_MISMATCH and a message in the
//     library's style.
//
// Compiles warning-free with -std=c++17 -Wall -Wextra -pedantic.

#ifndef FLATOPT_HPP
#define FLATOPT_HPP

#include "flatopt.h"

#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace flatopt {

// =============================================================================================
// Errors.

/// A short static description of a status code ("invalid argument", ...).
inline const char* status_str(flatopt_status code) noexcept {
  return flatopt_status_str(static_cast<int32_t>(code));
}

/// A failed flatopt call. `code()` is the `flatopt_status` the C function returned and
/// `message()` the text of `flatopt_last_error_message()` at the time of the throw (it names the
/// argument and value at fault). `what()` is "flatopt: <message>" ("flatopt: <status_str(code)>"
/// if the message is empty).
class Error : public std::runtime_error {
 public:
  /// An error with a status code and a message (normally the library's).
  Error(flatopt_status code, std::string message)
      : std::runtime_error(compose(code, message)), code_(code), message_(std::move(message)) {}

  /// The status code of the failed call (never FLATOPT_OK or FLATOPT_SKIPPED).
  flatopt_status code() const noexcept { return code_; }

  /// The library's message (without the "flatopt: " prefix of `what()`).
  const std::string& message() const noexcept { return message_; }

 private:
  static std::string compose(flatopt_status code, const std::string& message) {
    // The library's messages already start with their kind ("invalid b1 = 2: ...").
    return std::string("flatopt: ") + (message.empty() ? status_str(code) : message.c_str());
  }

  flatopt_status code_;
  std::string message_;
};

namespace detail {

/// Throws an `Error` for `code` with the calling thread's last library message.
[[noreturn]] inline void throw_last(flatopt_status code) {
  const char* msg = flatopt_last_error_message();
  throw Error(code, msg != nullptr ? std::string(msg) : std::string());
}

/// Throws an error found by the binding itself (not by the library).
[[noreturn]] inline void fail(flatopt_status code, std::string message) {
  throw Error(code, std::move(message));
}

/// Refuses a path the C ABI would see truncated: a std::string may hold a NUL, a C string ends
/// at the first one ("model\0.ckpt" would save to "model"). Nothing is read or written.
inline void check_path(const std::string& path) {
  const std::size_t at = path.find('\0');
  if (at != std::string::npos) {
    fail(FLATOPT_ERR_INVALID_ARGUMENT,
         "invalid path: holds a NUL byte at index " + std::to_string(at) + " of " +
             std::to_string(path.size()) + " (a C path would end there: \"" +
             path.substr(0, at) + "\")");
  }
}

/// "length mismatch for <what>: expected <n>, got <m>" (the library's wording).
[[noreturn]] inline void length_mismatch(const std::string& what, std::size_t expected,
                                         std::size_t got) {
  fail(FLATOPT_ERR_LENGTH_MISMATCH, "length mismatch for " + what + ": expected " +
                                        std::to_string(expected) + ", got " + std::to_string(got));
}

}  // namespace detail

/// Turns a status into an exception: returns `status` if it is FLATOPT_OK or FLATOPT_SKIPPED,
/// else throws `Error` with the calling thread's `flatopt_last_error_message()` (so call it
/// right after the failing C call, on the same thread).
inline flatopt_status check(flatopt_status status) {
  if (status != FLATOPT_OK && status != FLATOPT_SKIPPED) detail::throw_last(status);
  return status;
}

// =============================================================================================
// Span.

/// A non-owning view of `size()` contiguous elements of type `T` (a minimal std::span for
/// C++17). Constructible from pointer + length, C arrays, std::array, std::vector and spans of
/// convertible element type (`Span<float>` converts to `Span<const float>`). (No
/// initializer-list constructor: the list's array would not outlive a stored span.)
template <class T>
class Span {
  template <class U>
  using compatible = std::enable_if_t<std::is_convertible<U (*)[], T (*)[]>::value, int>;

 public:
  using element_type = T;
  using value_type = std::remove_cv_t<T>;
  using size_type = std::size_t;
  using pointer = T*;
  using reference = T&;
  using iterator = T*;

  /// An empty span (null data).
  constexpr Span() noexcept = default;
  /// `size` elements at `data`.
  constexpr Span(T* data, std::size_t size) noexcept : data_(data), size_(size) {}
  /// A C array.
  template <class U, std::size_t N, compatible<U> = 0>
  constexpr Span(U (&array)[N]) noexcept : data_(array), size_(N) {}
  /// A std::array.
  template <class U, std::size_t N, compatible<U> = 0>
  constexpr Span(std::array<U, N>& array) noexcept : data_(array.data()), size_(N) {}
  /// A const std::array (for spans of const elements).
  template <class U, std::size_t N, compatible<const U> = 0>
  constexpr Span(const std::array<U, N>& array) noexcept : data_(array.data()), size_(N) {}
  /// A std::vector.
  template <class U, class A, compatible<U> = 0>
  Span(std::vector<U, A>& vec) noexcept : data_(vec.data()), size_(vec.size()) {}
  /// A const std::vector (for spans of const elements).
  template <class U, class A, compatible<const U> = 0>
  Span(const std::vector<U, A>& vec) noexcept : data_(vec.data()), size_(vec.size()) {}
  /// A span of convertible elements (`Span<float>` to `Span<const float>`).
  template <class U, compatible<U> = 0>
  constexpr Span(const Span<U>& other) noexcept : data_(other.data()), size_(other.size()) {}

  /// First element (may be null when empty).
  constexpr T* data() const noexcept { return data_; }
  /// Number of elements.
  constexpr std::size_t size() const noexcept { return size_; }
  /// Size in bytes.
  constexpr std::size_t size_bytes() const noexcept { return size_ * sizeof(T); }
  /// True when there is no element.
  constexpr bool empty() const noexcept { return size_ == 0; }
  /// Element `i` (unchecked).
  constexpr T& operator[](std::size_t i) const noexcept { return data_[i]; }
  constexpr T* begin() const noexcept { return data_; }
  constexpr T* end() const noexcept { return data_ + size_; }
  /// The first `n` elements (unchecked: `n <= size()`).
  constexpr Span first(std::size_t n) const noexcept { return Span(data_, n); }
  /// `count` elements from `offset` (all the rest by default; unchecked bounds).
  constexpr Span subspan(std::size_t offset,
                         std::size_t count = std::numeric_limits<std::size_t>::max()) const noexcept {
    return Span(data_ + offset, count == std::numeric_limits<std::size_t>::max() ? size_ - offset
                                                                                 : count);
  }

 private:
  T* data_ = nullptr;
  std::size_t size_ = 0;
};

namespace detail {

/// The pointer to hand to C for an optional buffer: null for an empty span.
template <class T>
T* ptr_or_null(Span<T> s) noexcept {
  return s.empty() ? nullptr : s.data();
}

/// Checks that an optional companion buffer is empty or has `len` elements.
template <class T>
void check_len(const char* name, Span<T> s, std::size_t len) {
  if (!s.empty() && s.size() != len) length_mismatch(name, len, s.size());
}

}  // namespace detail

// =============================================================================================
// Enumerations (values equal to the C ones).

/// Base optimizer kinds (`flatopt_base_kind`).
enum class BaseKind : uint32_t {
  Sgd = FLATOPT_SGD,
  Adam = FLATOPT_ADAM,
  AdamW = FLATOPT_ADAMW,
  RAdam = FLATOPT_RADAM,
  Adagrad = FLATOPT_ADAGRAD,
  RmsProp = FLATOPT_RMSPROP,
  Adamax = FLATOPT_ADAMAX,
  NAdam = FLATOPT_NADAM,
  Lion = FLATOPT_LION,
  AdaBelief = FLATOPT_ADABELIEF,
  Yogi = FLATOPT_YOGI,
  Adadelta = FLATOPT_ADADELTA,
  Rprop = FLATOPT_RPROP,
  Lamb = FLATOPT_LAMB,
  Lars = FLATOPT_LARS,
  Novograd = FLATOPT_NOVOGRAD,
  Adafactor = FLATOPT_ADAFACTOR,
};

/// Non-finite gradient policies (`flatopt_nonfinite`).
enum class NonFinite : uint32_t {
  /// Skip the update, count it; `step()` returns `Outcome::Skipped` (default).
  Skip = FLATOPT_NONFINITE_SKIP,
  /// Skip the update, count it, throw `Error` with FLATOPT_ERR_NON_FINITE.
  Error = FLATOPT_NONFINITE_ERROR,
  /// No check: NaN and Inf flow into the parameters.
  Propagate = FLATOPT_NONFINITE_PROPAGATE,
};

/// SIMD tiers (`flatopt_simd_tier`). `Default` means "the process default" where a tier is an
/// input.
enum class SimdTier : uint32_t {
  Default = FLATOPT_SIMD_DEFAULT,
  Scalar = FLATOPT_SIMD_SCALAR,
  Portable = FLATOPT_SIMD_PORTABLE,
  Avx2 = FLATOPT_SIMD_AVX2,
  Avx512 = FLATOPT_SIMD_AVX512,
};

/// Element formats of gradients and parameter copies (`flatopt_dtype`); 16-bit values travel
/// as `uint16_t` bit patterns.
enum class Dtype : uint32_t {
  /// IEEE binary32; as a copy format: no copy.
  F32 = FLATOPT_DTYPE_F32,
  /// bfloat16.
  Bf16 = FLATOPT_DTYPE_BF16,
  /// IEEE binary16 (fp16).
  F16 = FLATOPT_DTYPE_F16,
};

/// How optimizer state is held (`flatopt_state_dtype`; docs/numerics.md, "Compressed state"):
/// the moments through `Config::state_dtype`, the Lookahead slow weights through
/// `Config::slow_dtype` (Float32 or Bfloat16).
enum class StateDtype : uint32_t {
  /// f32, 4 bytes per element and state buffer (the default).
  Float32 = FLATOPT_STATE_FLOAT32,
  /// bf16, 2 bytes per element and state buffer.
  Bfloat16 = FLATOPT_STATE_BFLOAT16,
  /// The 8-bit blockwise code: 1 byte per element, one f32 scale per 256 (refused for Rprop
  /// and for slow weights).
  Int8 = FLATOPT_STATE_INT8,
};

/// How f32 values are rounded into bfloat16 state (`flatopt_state_rounding`).
enum class StateRounding : uint32_t {
  /// Deterministic stochastic rounding (the default): a hash of the seed, the element's index
  /// and the step.
  Stochastic = FLATOPT_ROUNDING_STOCHASTIC,
  /// Round to nearest, ties to even.
  Nearest = FLATOPT_ROUNDING_NEAREST,
};

/// Learning-rate schedule kinds (`flatopt_schedule_kind`); build them with the named factories
/// of `Schedule`.
enum class ScheduleKind : uint32_t {
  Fixed = FLATOPT_SCHEDULE_FIXED,
  Constant = FLATOPT_SCHEDULE_CONSTANT,
  Linear = FLATOPT_SCHEDULE_LINEAR,
  Step = FLATOPT_SCHEDULE_STEP,
  MultiStep = FLATOPT_SCHEDULE_MULTI_STEP,
  Exponential = FLATOPT_SCHEDULE_EXPONENTIAL,
  ExponentialDecay = FLATOPT_SCHEDULE_EXPONENTIAL_DECAY,
  CosineAnnealing = FLATOPT_SCHEDULE_COSINE_ANNEALING,
  CosineWarmRestarts = FLATOPT_SCHEDULE_COSINE_WARM_RESTARTS,
  Polynomial = FLATOPT_SCHEDULE_POLYNOMIAL,
  Warmup = FLATOPT_SCHEDULE_WARMUP,
  WarmupCosine = FLATOPT_SCHEDULE_WARMUP_COSINE,
  OneCycle = FLATOPT_SCHEDULE_ONE_CYCLE,
  Cyclic = FLATOPT_SCHEDULE_CYCLIC,
  PiecewiseConstant = FLATOPT_SCHEDULE_PIECEWISE_CONSTANT,
  ReduceOnPlateau = FLATOPT_SCHEDULE_REDUCE_ON_PLATEAU,
};

/// OneCycle annealing between its end points.
enum class Anneal : uint32_t { Cos = 0, Linear = 1 };
/// Cyclic amplitude scaling (PyTorch `CyclicLR(mode=...)`).
enum class CyclicMode : uint32_t { Triangular = 0, Triangular2 = 1, ExpRange = 2 };
/// ReduceOnPlateau: is lower (`Min`, a loss) or higher (`Max`, an accuracy) better.
enum class PlateauMode : uint32_t { Min = 0, Max = 1 };
/// ReduceOnPlateau: relative or absolute improvement threshold.
enum class ThresholdMode : uint32_t { Rel = 0, Abs = 1 };

/// When a schedule advances: once per applied update (default) or only through
/// `Optimizer::schedule_step()` (epoch style).
enum class ScheduleMode : uint32_t { PerUpdate = 0, Manual = 1 };

/// Name of a base kind: "sgd", "adam", "adamw", "radam", "adagrad", "rmsprop", "adamax",
/// "nadam", "lion", "adabelief", "yogi", "adadelta", "rprop", "lamb", "lars", "novograd",
/// "adafactor".
inline const char* base_kind_name(BaseKind k) noexcept {
  switch (k) {
    case BaseKind::Sgd: return "sgd";
    case BaseKind::Adam: return "adam";
    case BaseKind::AdamW: return "adamw";
    case BaseKind::RAdam: return "radam";
    case BaseKind::Adagrad: return "adagrad";
    case BaseKind::RmsProp: return "rmsprop";
    case BaseKind::Adamax: return "adamax";
    case BaseKind::NAdam: return "nadam";
    case BaseKind::Lion: return "lion";
    case BaseKind::AdaBelief: return "adabelief";
    case BaseKind::Yogi: return "yogi";
    case BaseKind::Adadelta: return "adadelta";
    case BaseKind::Rprop: return "rprop";
    case BaseKind::Lamb: return "lamb";
    case BaseKind::Lars: return "lars";
    case BaseKind::Novograd: return "novograd";
    case BaseKind::Adafactor: return "adafactor";
  }
  return "unknown";
}

/// Name of a schedule kind, as its `Schedule` factory is called ("cosine_annealing", ...).
inline const char* schedule_kind_name(ScheduleKind k) noexcept {
  switch (k) {
    case ScheduleKind::Fixed: return "fixed";
    case ScheduleKind::Constant: return "constant";
    case ScheduleKind::Linear: return "linear";
    case ScheduleKind::Step: return "step";
    case ScheduleKind::MultiStep: return "multi_step";
    case ScheduleKind::Exponential: return "exponential";
    case ScheduleKind::ExponentialDecay: return "exponential_decay";
    case ScheduleKind::CosineAnnealing: return "cosine_annealing";
    case ScheduleKind::CosineWarmRestarts: return "cosine_warm_restarts";
    case ScheduleKind::Polynomial: return "polynomial";
    case ScheduleKind::Warmup: return "warmup";
    case ScheduleKind::WarmupCosine: return "warmup_cosine";
    case ScheduleKind::OneCycle: return "one_cycle";
    case ScheduleKind::Cyclic: return "cyclic";
    case ScheduleKind::PiecewiseConstant: return "piecewise_constant";
    case ScheduleKind::ReduceOnPlateau: return "reduce_on_plateau";
  }
  return "unknown";
}

// =============================================================================================
// Version.

/// The library's version string at run time (e.g. "0.1.0").
inline const char* version() noexcept { return flatopt_version(); }

/// The library's version number at run time (`major * 10000 + minor * 100 + patch`).
inline uint32_t version_number() noexcept { return flatopt_version_number(); }

/// The version of the header this binding was compiled against.
inline constexpr const char* header_version() noexcept { return FLATOPT_VERSION_STRING; }

/// The version number of the header this binding was compiled against.
inline constexpr uint32_t header_version_number() noexcept { return FLATOPT_VERSION_NUMBER; }

/// True if the loaded library is the version of the header (string and number both agree).
inline bool version_matches() noexcept {
  const char* v = flatopt_version();
  return v != nullptr && std::strcmp(v, FLATOPT_VERSION_STRING) == 0 &&
         flatopt_version_number() == FLATOPT_VERSION_NUMBER;
}

/// Throws `Error` (FLATOPT_ERR_UNSUPPORTED) if the loaded library is not the version of the
/// header. `Optimizer`'s constructor calls it (the comparison itself runs once per process).
inline void check_version() {
  static const bool ok = version_matches();
  if (!ok) {
    const char* v = flatopt_version();
    detail::fail(FLATOPT_ERR_UNSUPPORTED,
                 std::string("version mismatch: header ") + FLATOPT_VERSION_STRING + " (" +
                     std::to_string(FLATOPT_VERSION_NUMBER) + "), library " +
                     (v != nullptr ? v : "(null)") + " (" +
                     std::to_string(flatopt_version_number()) + ")");
  }
}

// =============================================================================================
// SIMD tiers.

/// The process-wide default tier (`FLATOPT_SIMD` if it names an available tier, else the best).
inline SimdTier default_simd_tier() noexcept {
  return static_cast<SimdTier>(flatopt_default_simd_tier());
}

/// Sets the process-wide default tier (`Default`: the best available). Used by optimizers
/// created afterwards and by the stateless kernels. Throws if the tier is not available.
inline void set_default_simd_tier(SimdTier tier) {
  check(flatopt_set_default_simd_tier(static_cast<uint32_t>(tier)));
}

/// True if the tier can run in this build on this CPU (`Default` is not a tier: false).
inline bool simd_tier_available(SimdTier tier) noexcept {
  return flatopt_simd_tier_available(static_cast<uint32_t>(tier)) == 1;
}

/// The tier's name ("scalar", "portable", "avx2", "avx512"; "default"; "unknown").
inline const char* simd_tier_name(SimdTier tier) noexcept {
  return flatopt_simd_tier_name(static_cast<uint32_t>(tier));
}

/// Every tier that can run here, slowest (Scalar) first.
inline std::vector<SimdTier> available_simd_tiers() {
  std::vector<SimdTier> out;
  for (SimdTier t : {SimdTier::Scalar, SimdTier::Portable, SimdTier::Avx2, SimdTier::Avx512}) {
    if (simd_tier_available(t)) out.push_back(t);
  }
  return out;
}

// =============================================================================================
// Configuration builders.
//
// Every fluent setter exists for lvalues (returns `T&`) and for rvalues (returns `T&&`), so
// that both `cfg.b1(0.8);` and `auto cfg = Config::adam(1e-3).b1(0.8);` do what they say.

/// The base optimizer and its hyperparameters (`flatopt_base_params`), defaults from
/// `flatopt_base_params_init`: b1 0.9, b2 0.999, eps 1e-8, AdamW decoupled decay 0.01, SGD
/// without momentum. A setter that does not apply to the kind throws `Error`
/// (FLATOPT_ERR_INVALID_ARGUMENT) naming it; values are validated by the library.
class BaseParams {
 public:
  /// The defaults of `kind`.
  explicit BaseParams(BaseKind kind = BaseKind::Adam) {
    check(flatopt_base_params_init(&p_, sizeof p_, static_cast<uint32_t>(kind)));
  }

  /// SGD; `momentum > 0` for heavy-ball momentum (PyTorch's definition), `nesterov` for
  /// Nesterov momentum.
  static BaseParams sgd(double momentum = 0.0, bool nesterov = false) {
    BaseParams b(BaseKind::Sgd);
    b.p_.momentum = momentum;
    b.p_.nesterov = nesterov ? 1u : 0u;
    return b;
  }
  /// Adam (b1 0.9, b2 0.999, eps 1e-8).
  static BaseParams adam() { return BaseParams(BaseKind::Adam); }
  /// AdamW with decoupled weight decay `decoupled_weight_decay` (scaled by the learning rate).
  static BaseParams adamw(double decoupled_weight_decay = 0.01) {
    BaseParams b(BaseKind::AdamW);
    b.p_.decoupled_weight_decay = decoupled_weight_decay;
    return b;
  }
  /// RAdam (rectification threshold 5).
  static BaseParams radam() { return BaseParams(BaseKind::RAdam); }
  /// Adagrad (PyTorch's: `lr_decay` 0, accumulator from 0, eps 1e-10 outside the square
  /// root; optax's: `initial_accumulator(0.1).eps(1e-7).eps_inside_sqrt()`).
  static BaseParams adagrad(double lr_decay = 0.0) {
    BaseParams b(BaseKind::Adagrad);
    b.p_.lr_decay = lr_decay;
    return b;
  }
  /// RMSprop (PyTorch's: alpha 0.99, eps 1e-8 outside the square root; optax's:
  /// `alpha(0.9).eps_inside_sqrt()`), with optional momentum and the centered form.
  static BaseParams rmsprop(double alpha = 0.99, double momentum = 0.0, bool centered = false) {
    BaseParams b(BaseKind::RmsProp);
    b.p_.alpha = alpha;
    b.p_.momentum = momentum;
    b.p_.centered = centered ? 1u : 0u;
    return b;
  }
  /// Adamax (PyTorch's: b1 0.9, b2 0.999, eps 1e-8 added to |g| inside the maximum; optax's:
  /// `eps_outside_max()`).
  static BaseParams adamax() { return BaseParams(BaseKind::Adamax); }
  /// NAdam (PyTorch's: momentum schedule with `momentum_decay` 0.004; optax's:
  /// `constant_momentum()`), optionally with decoupled weight decay (PyTorch's NAdamW).
  static BaseParams nadam(double momentum_decay = 0.004, double decoupled_weight_decay = 0.0) {
    BaseParams b(BaseKind::NAdam);
    b.p_.momentum_decay = momentum_decay;
    b.p_.decoupled_weight_decay = decoupled_weight_decay;
    return b;
  }
  /// Lion (b1 0.9, b2 0.99) with decoupled weight decay (optax's default: 1e-3).
  static BaseParams lion(double decoupled_weight_decay = 0.0) {
    BaseParams b(BaseKind::Lion);
    b.p_.decoupled_weight_decay = decoupled_weight_decay;
    return b;
  }
  /// AdaBelief (optax's: b1 0.9, b2 0.999, eps 1e-16, eps_root 1e-16).
  static BaseParams adabelief() { return BaseParams(BaseKind::AdaBelief); }
  /// Yogi (optax's: b1 0.9, b2 0.999, eps 1e-3, both moments from 1e-6).
  static BaseParams yogi() { return BaseParams(BaseKind::Yogi); }
  /// Adadelta (PyTorch's: rho 0.9, eps 1e-6).
  static BaseParams adadelta(double rho = 0.9) {
    BaseParams b(BaseKind::Adadelta);
    b.p_.rho = rho;
    return b;
  }
  /// Rprop (PyTorch's: etas (0.5, 1.2), step sizes in [1e-6, 50]; the first step's learning
  /// rate is the initial step size).
  static BaseParams rprop(double eta_minus = 0.5, double eta_plus = 1.2,
                          double min_step_size = 1e-6, double max_step_size = 50.0) {
    BaseParams b(BaseKind::Rprop);
    b.p_.eta_minus = eta_minus;
    b.p_.eta_plus = eta_plus;
    b.p_.min_step_size = min_step_size;
    b.p_.max_step_size = max_step_size;
    return b;
  }
  /// LAMB (optax's: b1 0.9, b2 0.999, eps 1e-6, eps_root 0; a trust ratio `||p|| / ||u||`
  /// per registered buffer), with weight decay added to the update before the ratio.
  static BaseParams lamb(double decoupled_weight_decay = 0.0) {
    BaseParams b(BaseKind::Lamb);
    b.p_.decoupled_weight_decay = decoupled_weight_decay;
    return b;
  }
  /// LARS (optax's: momentum 0.9, trust coefficient 0.001, eps 0; a trust ratio per
  /// registered buffer), with weight decay added to the gradient before the ratio.
  static BaseParams lars(double decoupled_weight_decay = 0.0, double momentum = 0.9,
                         bool nesterov = false) {
    BaseParams b(BaseKind::Lars);
    b.p_.decoupled_weight_decay = decoupled_weight_decay;
    b.p_.momentum = momentum;
    b.p_.nesterov = nesterov ? 1u : 0u;
    return b;
  }
  /// NovoGrad (optax's: b1 0.9, b2 0.25, eps 1e-6, eps_root 0; a second moment per
  /// registered buffer), with weight decay added to the normalized gradient.
  static BaseParams novograd(double decoupled_weight_decay = 0.0) {
    BaseParams b(BaseKind::Novograd);
    b.p_.decoupled_weight_decay = decoupled_weight_decay;
    return b;
  }
  /// Adafactor (PyTorch's `torch.optim.Adafactor`: decay rate 0.8, eps 1.19e-7 and 1e-3,
  /// clipping threshold 1, the relative step and the parameter scale on), with PyTorch's
  /// weight decay `p *= 1 - lr * weight_decay`. Factored second moments for buffers
  /// registered with a shape (`ParamOptions::shape`).
  static BaseParams adafactor(double weight_decay = 0.0) {
    BaseParams b(BaseKind::Adafactor);
    b.p_.decoupled_weight_decay = weight_decay;
    return b;
  }
  /// Adafactor as optax's `adafactor` defines it (`eps_root` 1e-30, `eps` 0, no relative
  /// step, `weight_decay_rate` not scaled by the learning rate, optional momentum).
  static BaseParams adafactor_optax(double momentum = 0.0, double weight_decay_rate = 0.0) {
    BaseParams b(BaseKind::Adafactor);
    b.p_.eps_root = 1e-30;
    b.p_.eps = 0.0;
    b.p_.relative_step = 0;
    b.p_.weight_decay_by_lr = 0;
    b.p_.momentum = momentum;
    b.p_.decoupled_weight_decay = weight_decay_rate;
    return b;
  }

  /// The kind.
  BaseKind kind() const noexcept { return static_cast<BaseKind>(p_.kind); }

  /// SGD, RMSprop, LARS: momentum in [0, 1).
  BaseParams& momentum(double v) & {
    if (kind() != BaseKind::Sgd && kind() != BaseKind::RmsProp && kind() != BaseKind::Lars &&
        kind() != BaseKind::Adafactor)
      wrong_kind("momentum", "sgd, rmsprop, lars and adafactor");
    p_.momentum = v;
    return *this;
  }
  BaseParams&& momentum(double v) && { return std::move(momentum(v)); }
  /// SGD: dampening in [0, 1].
  BaseParams& dampening(double v) & { need_sgd("dampening"); p_.dampening = v; return *this; }
  BaseParams&& dampening(double v) && { return std::move(dampening(v)); }
  /// SGD: Nesterov momentum (needs momentum > 0 and dampening 0); LARS: Nesterov momentum.
  BaseParams& nesterov(bool on = true) & {
    if (kind() != BaseKind::Sgd && kind() != BaseKind::Lars) wrong_kind("nesterov", "sgd and lars");
    p_.nesterov = on;
    return *this;
  }
  BaseParams&& nesterov(bool on = true) && { return std::move(nesterov(on)); }
  /// Adam: AMSGrad (PyTorch's definition).
  BaseParams& amsgrad(bool on = true) & {
    if (kind() != BaseKind::Adam) wrong_kind("amsgrad", "adam");
    p_.amsgrad = on ? 1u : 0u;
    return *this;
  }
  BaseParams&& amsgrad(bool on = true) && { return std::move(amsgrad(on)); }
  /// Adam family, Adamax, NAdam, Lion, LAMB, NovoGrad: first-moment decay in [0, 1).
  BaseParams& b1(double v) & { need_betas("b1"); p_.b1 = v; return *this; }
  BaseParams&& b1(double v) && { return std::move(b1(v)); }
  /// Adam family, Adamax, NAdam, Lion, LAMB, NovoGrad: second-moment decay in [0, 1).
  BaseParams& b2(double v) & { need_betas("b2"); p_.b2 = v; return *this; }
  BaseParams&& b2(double v) && { return std::move(b2(v)); }
  /// Every rule but SGD, Lion and Rprop: eps > 0, added outside the square root (inside with
  /// `eps_inside_sqrt`, Adagrad and RMSprop only; Adamax: inside the maximum unless
  /// `eps_outside_max`; Adadelta: inside both square roots).
  BaseParams& eps(double v) & {
    if (kind() == BaseKind::Sgd || kind() == BaseKind::Lion || kind() == BaseKind::Rprop)
      wrong_kind("eps", "every base optimizer but sgd, lion and rprop");
    p_.eps = v;
    return *this;
  }
  BaseParams&& eps(double v) && { return std::move(eps(v)); }
  /// AdamW, NAdam, Lion: decoupled weight decay >= 0 (`p *= 1 - lr * decay`); LAMB, LARS,
  /// NovoGrad: weight decay >= 0 added to the update (LARS: the gradient) as optax adds it.
  BaseParams& decoupled_weight_decay(double v) & {
    if (kind() != BaseKind::AdamW && kind() != BaseKind::NAdam && kind() != BaseKind::Lion &&
        kind() != BaseKind::Lamb && kind() != BaseKind::Lars && kind() != BaseKind::Novograd &&
        kind() != BaseKind::Adafactor)
      wrong_kind("decoupled_weight_decay", "adamw, nadam, lion, lamb, lars, novograd and adafactor");
    p_.decoupled_weight_decay = v;
    return *this;
  }
  BaseParams&& decoupled_weight_decay(double v) && {
    return std::move(decoupled_weight_decay(v));
  }
  /// Adagrad: learning-rate decay >= 0 (step t uses `lr / (1 + (t - 1) * lr_decay)`).
  BaseParams& lr_decay(double v) & {
    if (kind() != BaseKind::Adagrad) wrong_kind("lr_decay", "adagrad");
    p_.lr_decay = v;
    return *this;
  }
  BaseParams&& lr_decay(double v) && { return std::move(lr_decay(v)); }
  /// Adagrad, RMSprop, Yogi: the initial sum of squares / squared average / moments, >= 0.
  BaseParams& initial_accumulator(double v) & {
    if (kind() != BaseKind::Yogi) need_adaptive("initial_accumulator");
    p_.initial_accumulator = v;
    return *this;
  }
  BaseParams&& initial_accumulator(double v) && { return std::move(initial_accumulator(v)); }
  /// RMSprop: smoothing constant in [0, 1).
  BaseParams& alpha(double v) & {
    if (kind() != BaseKind::RmsProp) wrong_kind("alpha", "rmsprop");
    p_.alpha = v;
    return *this;
  }
  BaseParams&& alpha(double v) && { return std::move(alpha(v)); }
  /// RMSprop: the centered form.
  BaseParams& centered(bool on = true) & {
    if (kind() != BaseKind::RmsProp) wrong_kind("centered", "rmsprop");
    p_.centered = on ? 1u : 0u;
    return *this;
  }
  BaseParams&& centered(bool on = true) && { return std::move(centered(on)); }
  /// Adagrad, RMSprop: eps inside the square root (optax's form).
  BaseParams& eps_inside_sqrt(bool on = true) & {
    need_adaptive("eps_inside_sqrt");
    p_.eps_inside_sqrt = on ? 1u : 0u;
    return *this;
  }
  BaseParams&& eps_inside_sqrt(bool on = true) && { return std::move(eps_inside_sqrt(on)); }
  /// Adamax: eps added after the maximum, `m / (max(b2*u, |g|) + eps)` (optax's form).
  BaseParams& eps_outside_max(bool on = true) & {
    if (kind() != BaseKind::Adamax) wrong_kind("eps_outside_max", "adamax");
    p_.eps_outside_max = on ? 1u : 0u;
    return *this;
  }
  BaseParams&& eps_outside_max(bool on = true) && { return std::move(eps_outside_max(on)); }
  /// NAdam: psi >= 0 of the momentum schedule `mu_t = b1*(1 - 0.5*0.96^(t*psi))`.
  BaseParams& momentum_decay(double v) & {
    if (kind() != BaseKind::NAdam) wrong_kind("momentum_decay", "nadam");
    p_.momentum_decay = v;
    return *this;
  }
  BaseParams&& momentum_decay(double v) && { return std::move(momentum_decay(v)); }
  /// NAdam: `mu_t = b1` at every step (optax's form).
  BaseParams& constant_momentum(bool on = true) & {
    if (kind() != BaseKind::NAdam) wrong_kind("constant_momentum", "nadam");
    p_.constant_momentum = on ? 1u : 0u;
    return *this;
  }
  BaseParams&& constant_momentum(bool on = true) && { return std::move(constant_momentum(on)); }
  /// AdaBelief: added to the belief at every step, >= 0; LAMB, NovoGrad: added inside the
  /// square root, >= 0.
  BaseParams& eps_root(double v) & {
    if (kind() != BaseKind::AdaBelief && kind() != BaseKind::Lamb && kind() != BaseKind::Novograd &&
        kind() != BaseKind::Adafactor)
      wrong_kind("eps_root", "adabelief, lamb, novograd and adafactor");
    p_.eps_root = v;
    return *this;
  }
  BaseParams&& eps_root(double v) && { return std::move(eps_root(v)); }
  /// Adadelta: decay of both running averages in [0, 1).
  BaseParams& rho(double v) & {
    if (kind() != BaseKind::Adadelta) wrong_kind("rho", "adadelta");
    p_.rho = v;
    return *this;
  }
  BaseParams&& rho(double v) && { return std::move(rho(v)); }
  /// Rprop: step-size factors after a sign change (in (0, 1)) and while it holds (> 1).
  BaseParams& etas(double eta_minus, double eta_plus) & {
    if (kind() != BaseKind::Rprop) wrong_kind("etas", "rprop");
    p_.eta_minus = eta_minus;
    p_.eta_plus = eta_plus;
    return *this;
  }
  BaseParams&& etas(double eta_minus, double eta_plus) && {
    return std::move(etas(eta_minus, eta_plus));
  }
  /// Rprop: bounds of the step sizes, `0 <= min <= max`.
  BaseParams& step_sizes(double min_step_size, double max_step_size) & {
    if (kind() != BaseKind::Rprop) wrong_kind("step_sizes", "rprop");
    p_.min_step_size = min_step_size;
    p_.max_step_size = max_step_size;
    return *this;
  }
  BaseParams&& step_sizes(double min_step_size, double max_step_size) && {
    return std::move(step_sizes(min_step_size, max_step_size));
  }
  /// LARS: multiplier of the trust ratio, > 0.
  BaseParams& trust_coefficient(double v) & {
    if (kind() != BaseKind::Lars) wrong_kind("trust_coefficient", "lars");
    p_.trust_coefficient = v;
    return *this;
  }
  BaseParams&& trust_coefficient(double v) && { return std::move(trust_coefficient(v)); }
  /// Adafactor: exponent of the second-moment decay `1 - t^-decay_rate`, >= 0.
  BaseParams& decay_rate(double v) & { need_adafactor("decay_rate"); p_.decay_rate = v; return *this; }
  BaseParams&& decay_rate(double v) && { return std::move(decay_rate(v)); }
  /// Adafactor: steps subtracted from the count in the decay (a whole number >= 0).
  BaseParams& decay_offset(double v) & { need_adafactor("decay_offset"); p_.decay_offset = v; return *this; }
  BaseParams&& decay_offset(double v) && { return std::move(decay_offset(v)); }
  /// Adafactor: floor of the parameters' RMS in the parameter scale, >= 0.
  BaseParams& eps_scale(double v) & { need_adafactor("eps_scale"); p_.eps_scale = v; return *this; }
  BaseParams&& eps_scale(double v) && { return std::move(eps_scale(v)); }
  /// Adafactor: threshold of the update's RMS, > 0 (NaN: no clipping).
  BaseParams& clipping_threshold(double v) & {
    need_adafactor("clipping_threshold");
    p_.clipping_threshold = v;
    return *this;
  }
  BaseParams&& clipping_threshold(double v) && { return std::move(clipping_threshold(v)); }
  /// Adafactor: scale the step by the parameters' RMS.
  BaseParams& multiply_by_parameter_scale(bool on = true) & {
    need_adafactor("multiply_by_parameter_scale");
    p_.multiply_by_parameter_scale = on ? 1u : 0u;
    return *this;
  }
  BaseParams&& multiply_by_parameter_scale(bool on = true) && {
    return std::move(multiply_by_parameter_scale(on));
  }
  /// Adafactor: cap the learning rate at `1/sqrt(t)` (PyTorch's `rho_t`).
  BaseParams& relative_step(bool on = true) & {
    need_adafactor("relative_step");
    p_.relative_step = on ? 1u : 0u;
    return *this;
  }
  BaseParams&& relative_step(bool on = true) && { return std::move(relative_step(on)); }
  /// Adafactor: multiply the weight decay by the learning rate (PyTorch's form).
  BaseParams& weight_decay_by_lr(bool on = true) & {
    need_adafactor("weight_decay_by_lr");
    p_.weight_decay_by_lr = on ? 1u : 0u;
    return *this;
  }
  BaseParams&& weight_decay_by_lr(bool on = true) && { return std::move(weight_decay_by_lr(on)); }

  /// The C struct (lvalues only: a temporary's struct would dangle).
  const flatopt_base_params& c_struct() const& noexcept { return p_; }
  const flatopt_base_params& c_struct() const&& = delete;
  /// A copy of a C struct (for example one the library wrote, `Optimizer::group_base_params`).
  static BaseParams from_c(const flatopt_base_params& p) {
    BaseParams b(static_cast<BaseKind>(p.kind));
    b.p_ = p;
    return b;
  }

 private:
  [[noreturn]] void wrong_kind(const char* name, const char* kinds) const {
    detail::fail(FLATOPT_ERR_INVALID_ARGUMENT,
                 std::string("invalid ") + name + ": applies to " + kinds +
                     " only (this base optimizer is " + base_kind_name(kind()) + ")");
  }
  void need_adafactor(const char* name) const {
    if (kind() != BaseKind::Adafactor) wrong_kind(name, "adafactor");
  }
  void need_sgd(const char* name) const {
    if (kind() != BaseKind::Sgd) wrong_kind(name, "sgd");
  }
  void need_betas(const char* name) const {
    switch (kind()) {
      case BaseKind::Adam:
      case BaseKind::AdamW:
      case BaseKind::RAdam:
      case BaseKind::Adamax:
      case BaseKind::NAdam:
      case BaseKind::Lion:
      case BaseKind::AdaBelief:
      case BaseKind::Yogi:
      case BaseKind::Lamb:
      case BaseKind::Novograd:
        return;
      default:
        wrong_kind(name, "adam, adamw, radam, adamax, nadam, lion, adabelief and yogi");
    }
  }
  void need_adaptive(const char* name) const {
    if (kind() != BaseKind::Adagrad && kind() != BaseKind::RmsProp)
      wrong_kind(name, "adagrad and rmsprop");
  }

  flatopt_base_params p_{};
};

/// A learning-rate schedule (`flatopt_schedule`), made with the named factory of its kind;
/// defaults from `flatopt_schedule_init` (PyTorch's). Formulas: docs/numerics.md, "Schedules".
/// A schedule replaces the constant learning rate of a `Config`; its `base` is the learning rate
/// it starts from.
/// The milestone / boundary and value lists live inside the object (copies stay valid).
/// Option setters exist for the kinds with optional fields; one called on another kind throws
/// `Error` (FLATOPT_ERR_INVALID_ARGUMENT) naming it. Values are validated by the library when
/// the optimizer is created.
class Schedule {
 public:
  /// Constant learning rate `lr`.
  static Schedule fixed(double lr) {
    Schedule s(ScheduleKind::Fixed);
    s.s_.base_lr = lr;
    return s;
  }
  /// PyTorch ConstantLR: `base * factor` for `e < total_iters`, then `base`.
  static Schedule constant(double base, double factor = 1.0 / 3.0, uint64_t total_iters = 5) {
    Schedule s(ScheduleKind::Constant);
    s.s_.base_lr = base;
    s.s_.factor = factor;
    s.s_.period = total_iters;
    return s;
  }
  /// PyTorch LinearLR: factor from `start_factor` to `end_factor` over `total_iters`.
  static Schedule linear(double base, double start_factor = 1.0 / 3.0, double end_factor = 1.0,
                         uint64_t total_iters = 5) {
    Schedule s(ScheduleKind::Linear);
    s.s_.base_lr = base;
    s.s_.start_factor = start_factor;
    s.s_.end_factor = end_factor;
    s.s_.period = total_iters;
    return s;
  }
  /// PyTorch StepLR: `base * gamma^floor(e / step_size)`.
  static Schedule step(double base, uint64_t step_size, double gamma = 0.1) {
    Schedule s(ScheduleKind::Step);
    s.s_.base_lr = base;
    s.s_.period = step_size;
    s.s_.gamma = gamma;
    return s;
  }
  /// PyTorch MultiStepLR: `base * gamma^(number of milestones <= e)`; milestones strictly
  /// increasing.
  static Schedule multi_step(double base, std::vector<uint64_t> milestones, double gamma = 0.1) {
    Schedule s(ScheduleKind::MultiStep);
    s.s_.base_lr = base;
    s.s_.gamma = gamma;
    s.milestones_ = std::move(milestones);
    s.relink();
    return s;
  }
  /// PyTorch ExponentialLR: `base * gamma^e`.
  static Schedule exponential(double base, double gamma) {
    Schedule s(ScheduleKind::Exponential);
    s.s_.base_lr = base;
    s.s_.gamma = gamma;
    return s;
  }
  /// optax exponential_decay: `base * decay_rate^(max(e - transition_begin, 0) / decay_steps)`;
  /// options `transition_begin`, `staircase`, `end_value`.
  static Schedule exponential_decay(double base, uint64_t decay_steps, double decay_rate) {
    Schedule s(ScheduleKind::ExponentialDecay);
    s.s_.base_lr = base;
    s.s_.period = decay_steps;
    s.s_.decay_rate = decay_rate;
    return s;
  }
  /// Cosine annealing from `base` to `eta_min` over `t_max`, then holding at `eta_min`.
  static Schedule cosine_annealing(double base, uint64_t t_max, double eta_min = 0.0) {
    Schedule s(ScheduleKind::CosineAnnealing);
    s.s_.base_lr = base;
    s.s_.period = t_max;
    s.s_.eta_min = eta_min;
    return s;
  }
  /// Same as `cosine_annealing`.
  static Schedule cosine(double base, uint64_t t_max, double eta_min = 0.0) {
    return cosine_annealing(base, t_max, eta_min);
  }
  /// SGDR (PyTorch CosineAnnealingWarmRestarts): cycles of length `t_0`, `t_0 * t_mult`, ...
  static Schedule cosine_warm_restarts(double base, uint64_t t_0, uint64_t t_mult = 1,
                                       double eta_min = 0.0) {
    Schedule s(ScheduleKind::CosineWarmRestarts);
    s.s_.base_lr = base;
    s.s_.period = t_0;
    s.s_.t_mult = t_mult;
    s.s_.eta_min = eta_min;
    return s;
  }
  /// PyTorch PolynomialLR: `base * (1 - min(e, total_iters) / total_iters)^power`.
  static Schedule polynomial(double base, uint64_t total_iters = 5, double power = 1.0) {
    Schedule s(ScheduleKind::Polynomial);
    s.s_.base_lr = base;
    s.s_.period = total_iters;
    s.s_.power = power;
    return s;
  }
  /// Linear warmup from `start_lr` to `base` over `warmup_steps`, then `base`.
  static Schedule warmup(double base, uint64_t warmup_steps, double start_lr = 0.0) {
    Schedule s(ScheduleKind::Warmup);
    s.s_.base_lr = base;
    s.s_.warmup = warmup_steps;
    s.s_.start_lr = start_lr;
    return s;
  }
  /// Linear warmup over `warmup_steps`, then cosine to `eta_min` at `total_steps` (which
  /// counts the warmup).
  static Schedule warmup_cosine(double base, uint64_t warmup_steps, uint64_t total_steps,
                                double start_lr = 0.0, double eta_min = 0.0) {
    Schedule s(ScheduleKind::WarmupCosine);
    s.s_.base_lr = base;
    s.s_.warmup = warmup_steps;
    s.s_.period = total_steps;
    s.s_.start_lr = start_lr;
    s.s_.eta_min = eta_min;
    return s;
  }
  /// PyTorch OneCycleLR (two phases) peaking at `max_lr`; options `pct_start` (0.3),
  /// `div_factor` (25), `final_div_factor` (1e4), `anneal` (Cos).
  static Schedule one_cycle(double max_lr, uint64_t total_steps) {
    Schedule s(ScheduleKind::OneCycle);
    s.s_.base_lr = max_lr;
    s.s_.period = total_steps;
    return s;
  }
  /// PyTorch CyclicLR between `base` and `max_lr`, `step_size_up` steps up and
  /// `step_size_down` down (0: same as up); options `mode` (Triangular), `gamma` (1).
  static Schedule cyclic(double base, double max_lr, uint64_t step_size_up,
                         uint64_t step_size_down = 0) {
    Schedule s(ScheduleKind::Cyclic);
    s.s_.base_lr = base;
    s.s_.max_lr = max_lr;
    s.s_.step_size_up = step_size_up;
    s.s_.step_size_down = step_size_down;
    s.s_.gamma = 1.0;
    return s;
  }
  /// Absolute values: `values[number of boundaries <= e]`; `values.size()` must be
  /// `boundaries.size() + 1`, boundaries strictly increasing.
  static Schedule piecewise_constant(std::vector<uint64_t> boundaries,
                                     std::vector<double> values) {
    Schedule s(ScheduleKind::PiecewiseConstant);
    s.milestones_ = std::move(boundaries);
    s.values_ = std::move(values);
    s.relink();
    return s;
  }
  /// PyTorch ReduceLROnPlateau starting at `base`, driven by
  /// `Optimizer::schedule_step_metric`; options `mode`, `factor` (0.1), `patience` (10),
  /// `threshold` (1e-4), `threshold_mode` (Rel), `cooldown` (0), `min_lr` (0).
  static Schedule reduce_on_plateau(double base) {
    Schedule s(ScheduleKind::ReduceOnPlateau);
    s.s_.base_lr = base;
    return s;
  }

  /// The kind.
  ScheduleKind kind() const noexcept { return static_cast<ScheduleKind>(s_.kind); }
  /// The milestones (MultiStep) or boundaries (PiecewiseConstant).
  const std::vector<uint64_t>& milestones() const noexcept { return milestones_; }
  /// The values (PiecewiseConstant).
  const std::vector<double>& values() const noexcept { return values_; }

  // --- ExponentialDecay options.
  /// Steps before the decay starts (default 0).
  Schedule& transition_begin(uint64_t steps) & {
    need(ScheduleKind::ExponentialDecay, "transition_begin");
    s_.warmup = steps;
    return *this;
  }
  Schedule&& transition_begin(uint64_t steps) && { return std::move(transition_begin(steps)); }
  /// Floor the exponent (default off).
  Schedule& staircase(bool on = true) & {
    need(ScheduleKind::ExponentialDecay, "staircase");
    s_.staircase = on ? 1u : 0u;
    return *this;
  }
  Schedule&& staircase(bool on = true) && { return std::move(staircase(on)); }
  /// Clamp value (a floor when decaying, a ceiling when growing); default none.
  Schedule& end_value(double v) & {
    need(ScheduleKind::ExponentialDecay, "end_value");
    s_.end_value = v;
    return *this;
  }
  Schedule&& end_value(double v) && { return std::move(end_value(v)); }

  // --- OneCycle options.
  /// Fraction of the cycle spent increasing, in (0, 1) (default 0.3).
  Schedule& pct_start(double v) & {
    need(ScheduleKind::OneCycle, "pct_start");
    s_.pct_start = v;
    return *this;
  }
  Schedule&& pct_start(double v) && { return std::move(pct_start(v)); }
  /// Initial lr = max_lr / div_factor (default 25).
  Schedule& div_factor(double v) & {
    need(ScheduleKind::OneCycle, "div_factor");
    s_.div_factor = v;
    return *this;
  }
  Schedule&& div_factor(double v) && { return std::move(div_factor(v)); }
  /// Final lr = initial lr / final_div_factor (default 1e4).
  Schedule& final_div_factor(double v) & {
    need(ScheduleKind::OneCycle, "final_div_factor");
    s_.final_div_factor = v;
    return *this;
  }
  Schedule&& final_div_factor(double v) && { return std::move(final_div_factor(v)); }
  /// Cosine (default) or linear annealing.
  Schedule& anneal(Anneal a) & {
    need(ScheduleKind::OneCycle, "anneal");
    s_.anneal_linear = static_cast<uint32_t>(a);
    return *this;
  }
  Schedule&& anneal(Anneal a) && { return std::move(anneal(a)); }

  // --- Cyclic options.
  /// Amplitude scaling (default Triangular).
  Schedule& mode(CyclicMode m) & {
    need(ScheduleKind::Cyclic, "mode (cyclic)");
    s_.cyclic_mode = static_cast<uint32_t>(m);
    return *this;
  }
  Schedule&& mode(CyclicMode m) && { return std::move(mode(m)); }
  /// ExpRange decay per step in (0, 1] (default 1).
  Schedule& gamma(double g) & {
    need(ScheduleKind::Cyclic, "gamma (set it in the factory for step, multi_step, exponential)");
    s_.gamma = g;
    return *this;
  }
  Schedule&& gamma(double g) && { return std::move(gamma(g)); }

  // --- ReduceOnPlateau options.
  /// Min (a loss, default) or Max (an accuracy).
  Schedule& mode(PlateauMode m) & {
    need(ScheduleKind::ReduceOnPlateau, "mode (plateau)");
    s_.plateau_mode = static_cast<uint32_t>(m);
    return *this;
  }
  Schedule&& mode(PlateauMode m) && { return std::move(mode(m)); }
  /// Reduction factor in (0, 1) (default 0.1).
  Schedule& factor(double f) & {
    need(ScheduleKind::ReduceOnPlateau, "factor (set it in the factory for constant)");
    s_.factor = f;
    return *this;
  }
  Schedule&& factor(double f) && { return std::move(factor(f)); }
  /// Bad metrics tolerated before a reduction (default 10).
  Schedule& patience(uint64_t n) & {
    need(ScheduleKind::ReduceOnPlateau, "patience");
    s_.patience = n;
    return *this;
  }
  Schedule&& patience(uint64_t n) && { return std::move(patience(n)); }
  /// Improvement threshold (default 1e-4).
  Schedule& threshold(double t) & {
    need(ScheduleKind::ReduceOnPlateau, "threshold");
    s_.threshold = t;
    return *this;
  }
  Schedule&& threshold(double t) && { return std::move(threshold(t)); }
  /// Relative (default) or absolute threshold.
  Schedule& threshold_mode(ThresholdMode m) & {
    need(ScheduleKind::ReduceOnPlateau, "threshold_mode");
    s_.threshold_mode = static_cast<uint32_t>(m);
    return *this;
  }
  Schedule&& threshold_mode(ThresholdMode m) && { return std::move(threshold_mode(m)); }
  /// Metrics ignored after a reduction (default 0).
  Schedule& cooldown(uint64_t n) & {
    need(ScheduleKind::ReduceOnPlateau, "cooldown");
    s_.cooldown = n;
    return *this;
  }
  Schedule&& cooldown(uint64_t n) && { return std::move(cooldown(n)); }
  /// Lower bound of the learning rate (default 0).
  Schedule& min_lr(double v) & {
    need(ScheduleKind::ReduceOnPlateau, "min_lr");
    s_.min_lr = v;
    return *this;
  }
  Schedule&& min_lr(double v) && { return std::move(min_lr(v)); }

  /// The C struct; its list pointers point into this object (valid while it lives unchanged;
  /// lvalues only).
  const flatopt_schedule& c_struct() const& noexcept { return s_; }
  const flatopt_schedule& c_struct() const&& = delete;

  Schedule(const Schedule& o) : s_(o.s_), milestones_(o.milestones_), values_(o.values_) {
    relink();
  }
  Schedule(Schedule&& o) noexcept
      : s_(o.s_), milestones_(std::move(o.milestones_)), values_(std::move(o.values_)) {
    relink();
    o.relink();
  }
  Schedule& operator=(const Schedule& o) {
    if (this != &o) {
      s_ = o.s_;
      milestones_ = o.milestones_;
      values_ = o.values_;
      relink();
    }
    return *this;
  }
  Schedule& operator=(Schedule&& o) noexcept {
    if (this != &o) {
      s_ = o.s_;
      milestones_ = std::move(o.milestones_);
      values_ = std::move(o.values_);
      relink();
      o.relink();
    }
    return *this;
  }
  ~Schedule() = default;

 private:
  explicit Schedule(ScheduleKind kind) {
    check(flatopt_schedule_init(&s_, sizeof s_, static_cast<uint32_t>(kind)));
  }

  /// Points the C struct's lists at the vectors owned by this object.
  void relink() noexcept {
    s_.milestones = milestones_.empty() ? nullptr : milestones_.data();
    s_.n_milestones = milestones_.size();
    s_.values = values_.empty() ? nullptr : values_.data();
    s_.n_values = values_.size();
  }

  void need(ScheduleKind k, const char* name) const {
    if (kind() != k) {
      detail::fail(FLATOPT_ERR_INVALID_ARGUMENT,
                   std::string("invalid ") + name + ": applies to " + schedule_kind_name(k) +
                       " schedules only (this schedule is " + schedule_kind_name(kind()) + ")");
    }
  }

  flatopt_schedule s_{};
  std::vector<uint64_t> milestones_;
  std::vector<double> values_;
};

/// Optimizer configuration (`flatopt_config`), defaults from `flatopt_config_init`: Adam at lr
/// 1e-3, no Lookahead, no clipping, no coupled weight decay, skip non-finite updates, one
/// thread, the default SIMD tier. Start from a named base (`Config::adam(lr)`, ...) and chain
/// setters. Values are validated by the library in `Optimizer`'s constructor.
class Config {
 public:
  /// The C defaults (Adam, lr 1e-3).
  Config() : base_(BaseKind::Adam) {
    check(flatopt_config_init(&c_, sizeof c_));
    c_.schedule = nullptr;
  }
  /// `base` at constant learning rate `lr`.
  Config(BaseParams base, double lr) : Config() {
    base_ = std::move(base);
    c_.lr = lr;
  }

  /// SGD (optionally with momentum / Nesterov).
  static Config sgd(double lr, double momentum = 0.0, bool nesterov = false) {
    return Config(BaseParams::sgd(momentum, nesterov), lr);
  }
  /// Adam.
  static Config adam(double lr = 1e-3) { return Config(BaseParams::adam(), lr); }
  /// AdamW (decoupled weight decay 0.01 unless given).
  static Config adamw(double lr = 1e-3, double decoupled_weight_decay = 0.01) {
    return Config(BaseParams::adamw(decoupled_weight_decay), lr);
  }
  /// RAdam.
  static Config radam(double lr = 1e-3) { return Config(BaseParams::radam(), lr); }
  /// Adagrad (PyTorch's default lr 1e-2).
  static Config adagrad(double lr = 1e-2) { return Config(BaseParams::adagrad(), lr); }
  /// RMSprop (PyTorch's default lr 1e-2).
  static Config rmsprop(double lr = 1e-2, double alpha = 0.99, double momentum = 0.0,
                        bool centered = false) {
    return Config(BaseParams::rmsprop(alpha, momentum, centered), lr);
  }
  /// Adamax (PyTorch's default lr 2e-3).
  static Config adamax(double lr = 2e-3) { return Config(BaseParams::adamax(), lr); }
  /// NAdam (PyTorch's default lr 2e-3).
  static Config nadam(double lr = 2e-3, double momentum_decay = 0.004) {
    return Config(BaseParams::nadam(momentum_decay), lr);
  }
  /// Lion (optax's / the paper's usual lr 1e-4).
  static Config lion(double lr = 1e-4, double decoupled_weight_decay = 0.0) {
    return Config(BaseParams::lion(decoupled_weight_decay), lr);
  }
  /// AdaBelief (optax's usual lr 1e-3).
  static Config adabelief(double lr = 1e-3) { return Config(BaseParams::adabelief(), lr); }
  /// Yogi (optax's usual lr 1e-3).
  static Config yogi(double lr = 1e-3) { return Config(BaseParams::yogi(), lr); }
  /// Adadelta (PyTorch's default lr 1).
  static Config adadelta(double lr = 1.0, double rho = 0.9) {
    return Config(BaseParams::adadelta(rho), lr);
  }
  /// Rprop (PyTorch's default lr 1e-2: the initial step size).
  static Config rprop(double lr = 1e-2) { return Config(BaseParams::rprop(), lr); }
  /// LAMB (optax's usual lr 1e-3).
  static Config lamb(double lr = 1e-3, double decoupled_weight_decay = 0.0) {
    return Config(BaseParams::lamb(decoupled_weight_decay), lr);
  }
  /// LARS (lr 1e-1, a usual large-batch value: the trust coefficient scales it).
  static Config lars(double lr = 0.1, double decoupled_weight_decay = 0.0, double momentum = 0.9) {
    return Config(BaseParams::lars(decoupled_weight_decay, momentum), lr);
  }
  /// NovoGrad (optax's usual lr 1e-3).
  static Config novograd(double lr = 1e-3, double decoupled_weight_decay = 0.0) {
    return Config(BaseParams::novograd(decoupled_weight_decay), lr);
  }
  /// Adafactor (PyTorch's default lr 1e-2, capped at `1/sqrt(t)`).
  static Config adafactor(double lr = 1e-2, double weight_decay = 0.0) {
    return Config(BaseParams::adafactor(weight_decay), lr);
  }

  // --- Base optimizer.
  /// Replaces the base optimizer and its hyperparameters.
  Config& base(BaseParams b) & { base_ = std::move(b); return *this; }
  Config&& base(BaseParams b) && { return std::move(base(std::move(b))); }
  /// See `BaseParams::momentum` (and the other base setters below).
  Config& momentum(double v) & { base_.momentum(v); return *this; }
  Config&& momentum(double v) && { return std::move(momentum(v)); }
  Config& dampening(double v) & { base_.dampening(v); return *this; }
  Config&& dampening(double v) && { return std::move(dampening(v)); }
  Config& nesterov(bool on = true) & { base_.nesterov(on); return *this; }
  Config&& nesterov(bool on = true) && { return std::move(nesterov(on)); }
  Config& amsgrad(bool on = true) & { base_.amsgrad(on); return *this; }
  Config&& amsgrad(bool on = true) && { return std::move(amsgrad(on)); }
  Config& b1(double v) & { base_.b1(v); return *this; }
  Config&& b1(double v) && { return std::move(b1(v)); }
  Config& b2(double v) & { base_.b2(v); return *this; }
  Config&& b2(double v) && { return std::move(b2(v)); }
  Config& eps(double v) & { base_.eps(v); return *this; }
  Config&& eps(double v) && { return std::move(eps(v)); }
  Config& decoupled_weight_decay(double v) & { base_.decoupled_weight_decay(v); return *this; }
  Config&& decoupled_weight_decay(double v) && { return std::move(decoupled_weight_decay(v)); }

  // --- Learning rate.
  /// A constant learning rate (removes any schedule).
  Config& lr(double v) & { c_.lr = v; schedule_.reset(); return *this; }
  Config&& lr(double v) && { return std::move(lr(v)); }
  /// A learning-rate schedule (replaces the constant learning rate; the schedule's `base` is
  /// the starting rate). The Config keeps its own copy.
  Config& schedule(Schedule s) & { schedule_ = std::move(s); return *this; }
  Config&& schedule(Schedule s) && { return std::move(schedule(std::move(s))); }
  /// When the schedule advances (default: once per applied update).
  Config& schedule_mode(ScheduleMode m) & {
    c_.schedule_manual = static_cast<uint32_t>(m);
    return *this;
  }
  Config&& schedule_mode(ScheduleMode m) && { return std::move(schedule_mode(m)); }
  /// Shorthand for `schedule_mode(ScheduleMode::Manual)` (epoch-style `schedule_step()`).
  Config& manual_schedule(bool on = true) & {
    return schedule_mode(on ? ScheduleMode::Manual : ScheduleMode::PerUpdate);
  }
  Config&& manual_schedule(bool on = true) && { return std::move(manual_schedule(on)); }

  // --- Pipeline.
  /// Wraps the base optimizer in Lookahead: sync every `sync_period` applied updates (>= 1)
  /// with slow-weight step `alpha` in [0, 1].
  Config& lookahead(uint64_t sync_period = 5, double alpha = 0.5) & {
    c_.lookahead = 1;
    c_.sync_period = sync_period;
    c_.alpha = alpha;
    return *this;
  }
  Config&& lookahead(uint64_t sync_period = 5, double alpha = 0.5) && {
    return std::move(lookahead(sync_period, alpha));
  }
  /// Removes Lookahead.
  Config& no_lookahead() & { c_.lookahead = 0; return *this; }
  Config&& no_lookahead() && { return std::move(no_lookahead()); }
  /// Coupled (L2) weight decay `g += wd * p`, >= 0 (0: none).
  Config& weight_decay(double wd) & { c_.weight_decay = wd; return *this; }
  Config&& weight_decay(double wd) && { return std::move(weight_decay(wd)); }
  /// Clip by global norm over all buffers (0: off).
  Config& clip_norm(double c) & { c_.grad_clip_norm = c; return *this; }
  Config&& clip_norm(double c) && { return std::move(clip_norm(c)); }
  /// Clip each gradient element to [-c, c] (0: off).
  Config& clip_value(double c) & { c_.grad_clip_value = c; return *this; }
  Config&& clip_value(double c) && { return std::move(clip_value(c)); }
  /// Non-finite gradient policy (default Skip).
  Config& nonfinite(NonFinite policy) & {
    c_.nonfinite = static_cast<uint32_t>(policy);
    return *this;
  }
  Config&& nonfinite(NonFinite policy) && { return std::move(nonfinite(policy)); }
  /// Threads used by `Optimizer::step` (1: the caller's thread; more: a private pool).
  Config& threads(uint32_t n) & { c_.num_threads = n; return *this; }
  Config&& threads(uint32_t n) && { return std::move(threads(n)); }
  /// SIMD tier (Default: the process default).
  Config& simd_tier(SimdTier t) & { c_.simd_tier = static_cast<uint32_t>(t); return *this; }
  Config&& simd_tier(SimdTier t) && { return std::move(simd_tier(t)); }
  /// How the moments are held (default Float32; Int8 is refused for Rprop).
  Config& state_dtype(StateDtype d) & { c_.state_dtype = static_cast<uint32_t>(d); return *this; }
  Config&& state_dtype(StateDtype d) && { return std::move(state_dtype(d)); }
  /// How bfloat16 state is rounded (default Stochastic).
  Config& state_rounding(StateRounding r) & {
    c_.state_rounding = static_cast<uint32_t>(r);
    return *this;
  }
  Config&& state_rounding(StateRounding r) && { return std::move(state_rounding(r)); }
  /// The seed of stochastic rounding (default 0).
  Config& state_seed(uint64_t seed) & { c_.state_seed = seed; return *this; }
  Config&& state_seed(uint64_t seed) && { return std::move(state_seed(seed)); }
  /// The index of this optimizer's first element in the whole model (default 0): a shard
  /// passes its offset, so that stochastic rounding matches one process.
  Config& state_index_offset(uint64_t offset) & { c_.state_index_offset = offset; return *this; }
  Config&& state_index_offset(uint64_t offset) && {
    return std::move(state_index_offset(offset));
  }
  /// How the Lookahead slow weights are held: Float32 (default) or Bfloat16.
  Config& slow_dtype(StateDtype d) & { c_.slow_dtype = static_cast<uint32_t>(d); return *this; }
  Config&& slow_dtype(StateDtype d) && { return std::move(slow_dtype(d)); }

  // --- Access.
  /// The base optimizer.
  const BaseParams& base() const noexcept { return base_; }
  /// The schedule, if any.
  const std::optional<Schedule>& schedule() const noexcept { return schedule_; }
  /// The C struct for this configuration; its `base` and `schedule` pointers point into this
  /// object (valid while it lives unchanged; lvalues only).
  flatopt_config c_struct() const& noexcept {
    flatopt_config c = c_;
    c.base = &base_.c_struct();
    c.schedule = schedule_ ? &schedule_->c_struct() : nullptr;
    return c;
  }
  flatopt_config c_struct() const&& = delete;

 private:
  flatopt_config c_{};
  BaseParams base_;
  std::optional<Schedule> schedule_;
};

/// Per-step arguments of the stateless update functions (`flatopt_step_args`), defaults from
/// `flatopt_step_args_init`: step 1, lr 1e-3, no clipping, no decay, no sync (alpha 0.5).
class StepArgs {
 public:
  StepArgs() { check(flatopt_step_args_init(&a_, sizeof a_)); }

  /// 1-based number of this base-optimizer step (bias correction, momentum's first step).
  StepArgs& step(uint64_t t) & { a_.step = t; return *this; }
  StepArgs&& step(uint64_t t) && { return std::move(step(t)); }
  /// Learning rate of this step.
  StepArgs& lr(double v) & { a_.lr = v; return *this; }
  StepArgs&& lr(double v) && { return std::move(lr(v)); }
  /// Gradient multiplier in (0, 1] (global-norm clipping, see `clip_scale()`); 1 disables.
  StepArgs& clip_scale(double s) & { a_.clip_scale = s; return *this; }
  StepArgs&& clip_scale(double s) && { return std::move(clip_scale(s)); }
  /// Clip gradient elements to [-c, c]; 0 disables.
  StepArgs& clip_value(double c) & { a_.clip_value = c; return *this; }
  StepArgs&& clip_value(double c) && { return std::move(clip_value(c)); }
  /// Coupled weight decay (`g += wd * p`); 0 disables.
  StepArgs& weight_decay(double wd) & { a_.weight_decay = wd; return *this; }
  StepArgs&& weight_decay(double wd) && { return std::move(weight_decay(wd)); }
  /// Run the Lookahead sync after the update (needs the `slow` buffer).
  StepArgs& sync(bool on = true) & { a_.sync = on ? 1u : 0u; return *this; }
  StepArgs&& sync(bool on = true) && { return std::move(sync(on)); }
  /// Lookahead slow-weight step in [0, 1] (used when syncing).
  StepArgs& alpha(double a) & { a_.alpha = a; return *this; }
  StepArgs&& alpha(double a) && { return std::move(alpha(a)); }

  /// The C struct (lvalues only: a temporary's struct would dangle).
  const flatopt_step_args& c_struct() const& noexcept { return a_; }
  const flatopt_step_args& c_struct() const&& = delete;

 private:
  flatopt_step_args a_{};
};

// =============================================================================================
// The optimizer.

/// Whether an update was applied or skipped.
enum class Outcome { Applied, Skipped };

/// The result of `Optimizer::step` (and `begin_step`): `Applied`, or `Skipped` because a
/// gradient held NaN or Inf under the Skip policy (nothing changed; `message()` then holds the
/// library's report naming the buffer, index and value).
class StepResult {
 public:
  /// An applied update.
  StepResult() = default;
  /// A skipped update with the library's message.
  static StepResult skipped(std::string message) {
    StepResult r;
    r.outcome_ = Outcome::Skipped;
    r.message_ = std::move(message);
    return r;
  }
  Outcome outcome() const noexcept { return outcome_; }
  bool applied() const noexcept { return outcome_ == Outcome::Applied; }
  bool skipped() const noexcept { return outcome_ == Outcome::Skipped; }
  /// True when applied.
  explicit operator bool() const noexcept { return applied(); }
  /// Empty when applied; the library's report when skipped.
  const std::string& message() const noexcept { return message_; }

 private:
  Outcome outcome_ = Outcome::Applied;
  std::string message_;
};

class Optimizer;

/// The hyperparameters of a new parameter group (`flatopt_group_options`,
/// `Optimizer::add_group`): what is not set is the optimizer's. The learning rate follows
/// `lr * schedule(t) / base_lr` under a schedule; the weight decay is the base rule's (AdamW's
/// decoupled one, else the coupled one; 0 turns it off); `base` sets the base rule's
/// hyperparameters (of the optimizer's kind). Validated by the library in `add_group`.
class GroupOptions {
 public:
  GroupOptions() { check(flatopt_group_options_init(&o_, sizeof o_)); }

  GroupOptions& lr(double lr) & {
    o_.lr = lr;
    return *this;
  }
  GroupOptions&& lr(double lr) && { return std::move(this->lr(lr)); }
  GroupOptions& weight_decay(double wd) & {
    o_.weight_decay = wd;
    return *this;
  }
  GroupOptions&& weight_decay(double wd) && { return std::move(weight_decay(wd)); }
  GroupOptions& base(BaseParams b) & {
    base_ = std::move(b);
    has_base_ = true;
    return *this;
  }
  GroupOptions&& base(BaseParams b) && { return std::move(base(std::move(b))); }

  /// The C struct; its `base` points into this object (lvalues only).
  flatopt_group_options c_struct() const& noexcept {
    flatopt_group_options o = o_;
    o.base = has_base_ ? &base_.c_struct() : nullptr;
    return o;
  }
  flatopt_group_options c_struct() const&& = delete;

 private:
  flatopt_group_options o_{};
  BaseParams base_;
  bool has_base_ = false;
};

/// How a buffer is registered with `Optimizer::add_param(param, grad, options)`
/// (`flatopt_param_options`): its gradients' format, its parameter group and an optional bf16 /
/// fp16 copy of its parameters that every applied update writes (16-bit values are `uint16_t`
/// bit patterns). The copy stays owned by the caller and must stay valid while the optimizer
/// uses it.
class ParamOptions {
 public:
  ParamOptions() { check(flatopt_param_options_init(&o_, sizeof o_)); }

  ParamOptions& grad_dtype(Dtype d) & {
    o_.grad_dtype = static_cast<uint32_t>(d);
    return *this;
  }
  ParamOptions&& grad_dtype(Dtype d) && { return std::move(grad_dtype(d)); }
  ParamOptions& group(std::size_t g) & {
    o_.group = g;
    return *this;
  }
  ParamOptions&& group(std::size_t g) && { return std::move(group(g)); }
  /// The 16-bit copy of the parameters (`Dtype::Bf16` or `Dtype::F16`), of the parameters' size.
  ParamOptions& copy(Span<uint16_t> c, Dtype d) & {
    o_.copy = c.data();
    o_.copy_dtype = static_cast<uint32_t>(d);
    copy_size_ = c.size();
    has_copy_ = true;
    return *this;
  }
  ParamOptions&& copy(Span<uint16_t> c, Dtype d) && { return std::move(copy(c, d)); }
  /// The buffer's 2-D shape, `rows` x `cols` row-major (the buffer: `len / (rows * cols)`
  /// such matrices): Adafactor keeps factored second moments for it; other rules ignore it.
  ParamOptions& shape(std::size_t rows, std::size_t cols) & {
    o_.rows = rows;
    o_.cols = cols;
    return *this;
  }
  ParamOptions&& shape(std::size_t rows, std::size_t cols) && {
    return std::move(shape(rows, cols));
  }

  const flatopt_param_options& c_struct() const noexcept { return o_; }
  Dtype grad_dtype() const noexcept { return static_cast<Dtype>(o_.grad_dtype); }
  bool has_copy() const noexcept { return has_copy_; }
  std::size_t copy_size() const noexcept { return copy_size_; }

 private:
  flatopt_param_options o_{};
  std::size_t copy_size_ = 0;
  bool has_copy_ = false;
};

/// The dynamic loss scaler (`flatopt_loss_scaler_options`, `Optimizer::set_loss_scaler`):
/// PyTorch GradScaler's rules and defaults (scale 2^16, x2 after 2000 finite updates, x0.5 and
/// a skipped update on a non-finite gradient).
class LossScalerOptions {
 public:
  LossScalerOptions() { check(flatopt_loss_scaler_options_init(&o_, sizeof o_)); }
  LossScalerOptions& init_scale(float s) & {
    o_.init_scale = s;
    return *this;
  }
  LossScalerOptions&& init_scale(float s) && { return std::move(init_scale(s)); }
  LossScalerOptions& growth_factor(float f) & {
    o_.growth_factor = f;
    return *this;
  }
  LossScalerOptions&& growth_factor(float f) && { return std::move(growth_factor(f)); }
  LossScalerOptions& backoff_factor(float f) & {
    o_.backoff_factor = f;
    return *this;
  }
  LossScalerOptions&& backoff_factor(float f) && { return std::move(backoff_factor(f)); }
  LossScalerOptions& growth_interval(uint32_t n) & {
    o_.growth_interval = n;
    return *this;
  }
  LossScalerOptions&& growth_interval(uint32_t n) && { return std::move(growth_interval(n)); }
  const flatopt_loss_scaler_options& c_struct() const noexcept { return o_; }

 private:
  flatopt_loss_scaler_options o_{};
};

/// The dynamic loss scaler's state (`Optimizer::loss_scaler_state`).
struct LossScalerState {
  /// The scale the next update divides the gradients by.
  float scale = 0.0f;
  /// Finite updates in a row since the scale last changed.
  uint32_t growth_tracker = 0;
  /// Whether the last update found a non-finite gradient (and was skipped).
  bool found_inf = false;
};

/// A step split over the host's own threads (see `Optimizer::split_step`). Unless skipped,
/// call `apply(b, e)` on disjoint ranges covering `[0, total_len())` (concurrently from any
/// threads), then `finish()`. If the guard is destroyed without `finish()`, its destructor
/// ends the step (errors ignored): the C ABI cannot abandon a begun step, so the ranges
/// applied so far stay applied and the update is counted. Move-only.
class SplitStep {
 public:
  SplitStep(SplitStep&& o) noexcept
      : opt_(std::exchange(o.opt_, nullptr)), result_(std::move(o.result_)), total_(o.total_) {}
  SplitStep& operator=(SplitStep&& o) noexcept {
    if (this != &o) {
      end_quietly();
      opt_ = std::exchange(o.opt_, nullptr);
      result_ = std::move(o.result_);
      total_ = o.total_;
    }
    return *this;
  }
  SplitStep(const SplitStep&) = delete;
  SplitStep& operator=(const SplitStep&) = delete;
  ~SplitStep() { end_quietly(); }

  /// The outcome of `begin_step`: `Skipped` means there is nothing to apply (the step is over).
  const StepResult& result() const noexcept { return result_; }
  bool skipped() const noexcept { return result_.skipped(); }
  /// The element count of the index space `[0, total_len())`.
  std::size_t total_len() const noexcept { return total_; }
  /// True until `finish()` (false when skipped).
  bool active() const noexcept { return opt_ != nullptr; }
  /// Applies the step to elements `[begin, end)`; thread-safe for disjoint ranges.
  inline void apply(std::size_t begin, std::size_t end) const;
  /// Applies the step to `[0, total_len())` on the calling thread.
  void apply_all() const { apply(0, total_); }
  /// Ends the step (counts it, advances the schedule). Throws on error.
  inline void finish();

 private:
  friend class Optimizer;
  SplitStep(Optimizer* opt, StepResult result, std::size_t total) noexcept
      : opt_(opt), result_(std::move(result)), total_(total) {}
  inline void end_quietly() noexcept;

  Optimizer* opt_;
  StepResult result_;
  std::size_t total_;
};

/// An optimizer over host-owned float buffers (RAII owner of a `flatopt_optimizer*`;
/// move-only). A moved-from optimizer holds no handle: it is safe to destroy or assign to, and
/// every other call throws `Error` (FLATOPT_ERR_NULL_POINTER, "opt"). One optimizer must not be
/// used from two threads at once, except `step_range` (and `SplitStep::apply`) between
/// `begin_step` and `end_step`.
class Optimizer {
 public:
  /// Creates an optimizer (the library validates `config`; the message names the first bad
  /// field). Also checks that the library matches the header version.
  explicit Optimizer(const Config& config = Config()) {
    check_version();
    const flatopt_config c = config.c_struct();
    check(flatopt_optimizer_new(&c, &h_));
  }
  ~Optimizer() { flatopt_optimizer_free(h_); }

  Optimizer(Optimizer&& o) noexcept
      : h_(std::exchange(o.h_, nullptr)), lens_(std::move(o.lens_)), ptrs_(std::move(o.ptrs_)) {
    o.lens_.clear();
    o.ptrs_.clear();
  }
  Optimizer& operator=(Optimizer&& o) noexcept {
    if (this != &o) {
      flatopt_optimizer_free(h_);
      h_ = std::exchange(o.h_, nullptr);
      lens_ = std::move(o.lens_);
      ptrs_ = std::move(o.ptrs_);
      o.lens_.clear();
      o.ptrs_.clear();
    }
    return *this;
  }
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  /// The C handle (null when moved from); still owned by this object.
  flatopt_optimizer* handle() const noexcept { return h_; }
  /// True when holding a handle.
  explicit operator bool() const noexcept { return h_ != nullptr; }

  // --- Registration.
  /// Registers a parameter buffer and its gradient buffer (same size); returns its index.
  /// The current parameter values become the Lookahead slow weights. Both stay owned by the
  /// caller and must stay valid while the optimizer uses them. Allowed before the first update
  /// and after `reset()`. Parameters must not overlap each other or any gradient.
  /// The optimizer keeps the *pointers*: update the buffers in place. A std::vector that is
  /// resized, or assigned a new vector (`g = compute_grad();` moves another allocation in),
  /// leaves the optimizer pointing at freed memory.
  std::size_t add_param(Span<float> param, Span<const float> grad) {
    if (grad.size() != param.size()) {
      detail::length_mismatch("grad of buffer " + std::to_string(lens_.size()), param.size(),
                              grad.size());
    }
    return add(param, grad.data());
  }
  /// Registers a parameter buffer without a gradient buffer, for optimizers that always step
  /// with `step(grads...)` / `step_with_grads` (passes a NULL gradient, which the C ABI
  /// accepts). `step()` without gradients then fails with FLATOPT_ERR_NULL_POINTER naming the
  /// missing gradient, and nothing changes.
  std::size_t add_param(Span<float> param) { return add(param, nullptr); }
  /// Registers a parameter buffer with 16-bit gradients (`options.grad_dtype()` bf16 or fp16)
  /// and, if `options` has one, a 16-bit copy written by every applied update (mixed
  /// precision: `docs/numerics.md`, "16-bit floats"); returns its index.
  std::size_t add_param(Span<float> param, Span<const uint16_t> grad,
                        const ParamOptions& options) {
    if (options.grad_dtype() == Dtype::F32) {
      detail::fail(FLATOPT_ERR_INVALID_ARGUMENT,
                   "invalid grad: uint16_t gradients need options.grad_dtype(Dtype::Bf16 or "
                   "Dtype::F16)");
    }
    return add_with(param, grad.data(), grad.size(), options);
  }
  /// Registers a parameter buffer with f32 gradients and `options` (a group, a 16-bit copy).
  std::size_t add_param(Span<float> param, Span<const float> grad, const ParamOptions& options) {
    if (options.grad_dtype() != Dtype::F32) {
      detail::fail(FLATOPT_ERR_INVALID_ARGUMENT,
                   "invalid grad: float gradients need options.grad_dtype(Dtype::F32)");
    }
    return add_with(param, grad.data(), grad.size(), options);
  }

  // --- Parameter groups (docs/numerics.md, "Parameter groups").
  /// Adds a parameter group and returns its index (1, 2, ...; group 0 is the optimizer's own).
  std::size_t add_group(const GroupOptions& options = GroupOptions()) {
    const flatopt_group_options o = options.c_struct();
    std::size_t g = 0;
    check(flatopt_optimizer_add_group(h_, &o, &g));
    return g;
  }
  /// `add_param` into parameter group `group`; returns the buffer's index.
  std::size_t add_param_to_group(std::size_t group, Span<float> param, Span<const float> grad) {
    if (grad.size() != param.size()) {
      detail::length_mismatch("grad of buffer " + std::to_string(lens_.size()), param.size(),
                              grad.size());
    }
    return add(param, grad.data(), group);
  }
  /// `add_param` (without a gradient buffer) into parameter group `group`.
  std::size_t add_param_to_group(std::size_t group, Span<float> param) {
    return add(param, nullptr, group);
  }
  /// The number of parameter groups (at least 1).
  std::size_t num_groups() const { return query<std::size_t>(flatopt_optimizer_num_groups); }
  /// The parameter group of buffer `index`.
  std::size_t param_group(std::size_t index) const {
    std::size_t g = 0;
    check(flatopt_optimizer_param_group(h_, index, &g));
    return g;
  }
  /// Group `group`'s own learning rate; empty when it follows the optimizer's schedule.
  std::optional<double> group_lr(std::size_t group) const {
    double lr = 0.0;
    check(flatopt_optimizer_group_lr(h_, group, &lr));
    if (std::isnan(lr)) return std::nullopt;
    return lr;
  }
  /// The learning rate group `group` uses in the next update (as the kernels use it).
  float group_current_lr(std::size_t group) const {
    float lr = 0.0f;
    check(flatopt_optimizer_group_current_lr(h_, group, &lr));
    return lr;
  }
  /// `group_current_lr` before its rounding to f32: the schedule's value times the group's
  /// ratio in f64 (what PyTorch's and braintools' schedulers report).
  double group_current_lr_exact(std::size_t group) const {
    double lr = 0.0;
    check(flatopt_optimizer_group_current_lr_exact(h_, group, &lr));
    return lr;
  }
  /// Group `group`'s weight decay as the base rule defines it.
  double group_weight_decay(std::size_t group) const {
    double wd = 0.0;
    check(flatopt_optimizer_group_weight_decay(h_, group, &wd));
    return wd;
  }
  /// Group `group`'s base-rule hyperparameters.
  BaseParams group_base_params(std::size_t group) const {
    flatopt_base_params p{};
    check(flatopt_optimizer_group_base_params(h_, group, &p, sizeof p));
    return BaseParams::from_c(p);
  }
  /// Sets group `group`'s learning rate (empty: follow the optimizer's schedule again); the
  /// next update uses it.
  void set_group_lr(std::size_t group, std::optional<double> lr) {
    check(flatopt_optimizer_set_group_lr(h_, group,
                                         lr ? *lr : std::numeric_limits<double>::quiet_NaN()));
  }
  /// Sets group `group`'s weight decay (as the base rule defines it); the next update uses it.
  void set_group_weight_decay(std::size_t group, double wd) {
    check(flatopt_optimizer_set_group_weight_decay(h_, group, wd));
  }
  /// Replaces group `group`'s base-rule hyperparameters (of the optimizer's kind, keeping the
  /// group's state buffers: AMSGrad, momentum, centering cannot be turned on or off); the
  /// next update uses them.
  void set_group_base_params(std::size_t group, const BaseParams& base) {
    check(flatopt_optimizer_set_group_base_params(h_, group, &base.c_struct()));
  }

  // --- Updates.
  /// One update of every buffer with the registered gradients.
  StepResult step() { return result_of(flatopt_optimizer_step(h_)); }

  /// One update with the registered gradients divided by `grad_scale` inside the pass
  /// (finite, > 0; 0: the dynamic loss scaler's scale, or none); refused with a scale while
  /// a dynamic loss scaler is set.
  StepResult step_mixed(float grad_scale) {
    return result_of(flatopt_optimizer_step_mixed(h_, nullptr, 0, grad_scale));
  }
  /// `step_mixed` with gradients passed for this call: `grads[i]` points to the gradients of
  /// buffer `i` in its registered format (f32 or `uint16_t` bit patterns), as many as the
  /// buffer has (the C call takes no lengths).
  StepResult step_mixed(Span<const void* const> grads, float grad_scale) {
    return result_of(flatopt_optimizer_step_mixed(h_, grads.data(), grads.size(), grad_scale));
  }

  // --- Dynamic loss scaling (PyTorch GradScaler's rules; in checkpoints).
  /// Sets the dynamic loss scaler: every update divides the gradients by its scale, skips on a
  /// non-finite one (the scale backs off) and grows the scale after `growth_interval` finite
  /// updates.
  void set_loss_scaler(const LossScalerOptions& options = LossScalerOptions()) {
    check(flatopt_optimizer_set_loss_scaler(h_, &options.c_struct()));
  }
  /// Removes the dynamic loss scaler.
  void remove_loss_scaler() { check(flatopt_optimizer_set_loss_scaler(h_, nullptr)); }
  /// The scaler's scale, growth tracker and found-inf flag (throws without a scaler).
  LossScalerState loss_scaler_state() const {
    LossScalerState s;
    uint32_t found = 0;
    check(flatopt_optimizer_loss_scaler_state(h_, &s.scale, &s.growth_tracker, &found));
    s.found_inf = found != 0;
    return s;
  }
  /// Restores the scaler's scale and growth tracker (GradScaler.load_state_dict).
  void set_loss_scaler_state(float scale, uint32_t growth_tracker) {
    check(flatopt_optimizer_set_loss_scaler_state(h_, scale, growth_tracker));
  }

  /// One update with gradients passed for this call, one per registered buffer in order
  /// (each of its buffer's size). No allocation.
  template <class... G,
            std::enable_if_t<(sizeof...(G) >= 1) &&
                                 (std::is_convertible<const G&, Span<const float>>::value && ...),
                             int> = 0>
  StepResult step(const G&... grads) {
    const std::array<Span<const float>, sizeof...(G)> spans{{Span<const float>(grads)...}};
    std::array<const float*, sizeof...(G)> ptrs{};
    check_grads(Span<const Span<const float>>(spans.data(), spans.size()), ptrs.data());
    return result_of(flatopt_optimizer_step_with_grads(h_, ptrs.data(), ptrs.size()));
  }

  /// One update with a runtime-sized list of gradients (`grads[i]` for buffer `i`). No
  /// allocation after registration.
  StepResult step_with_grads(Span<const Span<const float>> grads) {
    ptrs_.resize(grads.size());
    check_grads(grads, ptrs_.data());
    return result_of(flatopt_optimizer_step_with_grads(h_, ptrs_.data(), ptrs_.size()));
  }

  /// `step_with_grads({g0, g1, ...})`.
  StepResult step_with_grads(std::initializer_list<Span<const float>> grads) {
    return step_with_grads(Span<const Span<const float>>(grads.begin(), grads.size()));
  }

  /// First phase of a split step: validation, norm / non-finite pass, per-step scalars.
  /// `Applied` means begun (apply `step_range` on disjoint ranges covering
  /// `[0, total_len())`, then `end_step()`); `Skipped` means the step is over.
  StepResult begin_step() { return result_of(flatopt_optimizer_begin_step(h_)); }
  /// `begin_step()` with an explicit loss scale, as `step_mixed(grad_scale)` takes it: the
  /// split step is bit for bit `step_mixed(grad_scale)` and skips on the same gradients
  /// (`grad_scale` 0: none; else finite, > 0, and refused while a dynamic loss scaler is set).
  StepResult begin_step(float grad_scale) {
    return result_of(flatopt_optimizer_begin_step_scaled(h_, grad_scale));
  }
  /// `begin_step(grad_scale)` with gradients passed for this step, as
  /// `step_mixed(grads, grad_scale)` takes them (`grads[i]` for buffer `i`, in its registered
  /// format): the step's ranges read them, so they stay valid until `end_step()`. The split
  /// step is bit for bit `step_mixed(grads, grad_scale)`.
  StepResult begin_step(Span<const void* const> grads, float grad_scale) {
    return result_of(
        flatopt_optimizer_begin_step_mixed(h_, grads.data(), grads.size(), grad_scale));
  }
  /// Applies the begun step to elements `[begin, end)` of the concatenation of the buffers.
  /// Thread-safe for disjoint ranges of one optimizer.
  void step_range(std::size_t begin, std::size_t end) const {
    check(flatopt_optimizer_step_range(h_, begin, end));
  }
  /// Last phase of a split step: counts the update and advances the schedule.
  void end_step() { check(flatopt_optimizer_end_step(h_)); }
  /// `begin_step()` wrapped in a guard that ends the step (see `SplitStep`).
  SplitStep split_step() {
    const std::size_t total = total_len();  // before the step begins: it may throw
    return guarded(total, begin_step());
  }
  /// `begin_step(grad_scale)` wrapped in a guard that ends the step (see `SplitStep`).
  SplitStep split_step(float grad_scale) {
    const std::size_t total = total_len();
    return guarded(total, begin_step(grad_scale));
  }
  /// `begin_step(grads, grad_scale)` wrapped in a guard that ends the step (see `SplitStep`).
  SplitStep split_step(Span<const void* const> grads, float grad_scale) {
    const std::size_t total = total_len();
    return guarded(total, begin_step(grads, grad_scale));
  }

  /// Back to the state right after registration: moments zeroed, counters and schedule
  /// reset, slow weights copied from the current parameter values. Registration is allowed
  /// again afterwards.
  void reset() { check(flatopt_optimizer_reset(h_)); }

  // --- Checkpoints (format: docs/checkpoint-format.md; parameters are not included).
  /// The complete optimizer state as a checkpoint.
  std::vector<uint8_t> save() const {
    size_t size = 0, written = 0;
    check(flatopt_optimizer_checkpoint_size(h_, &size));
    std::vector<uint8_t> out(size);
    check(flatopt_optimizer_save(h_, out.data(), out.size(), &written));
    out.resize(written);
    return out;
  }
  /// Restores a checkpoint of an optimizer with the same configuration and buffer lengths;
  /// validated completely first (throws, changing nothing, on any mismatch or damage).
  void load(Span<const uint8_t> bytes) { check(flatopt_optimizer_load(h_, bytes.data(), bytes.size())); }
  /// Saves to a file atomically (temporary file, fsync, rename, fsync of the directory).
  void save_file(const std::string& path) const {
    detail::check_path(path);
    check(flatopt_optimizer_save_file(h_, path.c_str()));
  }
  /// Loads a checkpoint file (see `load`).
  void load_file(const std::string& path) {
    detail::check_path(path);
    check(flatopt_optimizer_load_file(h_, path.c_str()));
  }

  // --- Sharded training (see the README): block partials, then a step with the global sum.
  /// The block partial sums of squares of the registered gradients.
  std::vector<double> sum_squares_partials() {
    size_t n = 0;
    check(flatopt_optimizer_sum_squares_block_count(h_, &n));
    std::vector<double> out(n);
    check(flatopt_optimizer_sum_squares_partials(h_, out.data(), out.size()));
    return out;
  }
  /// One update using the global sum of squares of all shards' gradients.
  StepResult step_with_sum_squares(double sum_squares) {
    return result_of(flatopt_optimizer_step_with_sum_squares(h_, sum_squares));
  }
  /// LAMB, LARS, NovoGrad (norms per buffer), phase two: the pass before the update with the
  /// global sum of squares, two sums per block of every registered buffer (exchange them; per
  /// buffer add the even and the odd values of the whole buffer's blocks in global order).
  std::vector<double> norm_partials(double sum_squares) {
    size_t n = 0;
    check(flatopt_optimizer_sum_squares_block_count(h_, &n));
    std::vector<double> out(2 * n);
    check(flatopt_optimizer_norm_partials(h_, sum_squares, out.data(), out.size()));
    return out;
  }
  /// LAMB, LARS, NovoGrad, phase three: the update with two norm totals per registered buffer.
  StepResult step_with_norms(double sum_squares, Span<const double> norms) {
    return result_of(flatopt_optimizer_step_with_norms(h_, sum_squares, norms.data(), norms.size()));
  }

  // --- Schedules.
  /// Advances the learning-rate schedule by one (epoch style; for `ScheduleMode::Manual`).
  void schedule_step() { check(flatopt_optimizer_schedule_step(h_)); }
  /// Sets the schedule's counter to `epoch`: exactly as after `epoch` calls of
  /// `schedule_step()` from the start, at once (PyTorch `last_epoch`). Throws
  /// (`FLATOPT_ERR_INVALID_STATE`, nothing changed) for ReduceOnPlateau, which moves by metrics.
  void schedule_set_epoch(std::uint64_t epoch) {
    check(flatopt_optimizer_schedule_set_epoch(h_, epoch));
  }
  /// Feeds a metric to a ReduceOnPlateau schedule.
  void schedule_step_metric(double metric) {
    check(flatopt_optimizer_schedule_step_metric(h_, metric));
  }

  // --- Queries.
  /// Applied updates.
  uint64_t step_count() const { return query<uint64_t>(flatopt_optimizer_step_count); }
  /// Updates skipped because of non-finite gradients.
  uint64_t skipped_count() const { return query<uint64_t>(flatopt_optimizer_skipped_count); }
  /// The learning rate the next update will use.
  float current_lr() const { return query<float>(flatopt_optimizer_current_lr); }
  /// The SIMD tier in use.
  SimdTier simd_tier() const {
    return static_cast<SimdTier>(query<uint32_t>(flatopt_optimizer_simd_tier));
  }
  /// Threads used by `step()`.
  uint32_t num_threads() const { return query<uint32_t>(flatopt_optimizer_num_threads); }
  /// Registered buffers.
  std::size_t num_params() const { return query<std::size_t>(flatopt_optimizer_num_params); }
  /// Total registered elements (the index space of `step_range`).
  std::size_t total_len() const { return query<std::size_t>(flatopt_optimizer_total_len); }
  /// Bytes of optimizer state held for the registered buffers, as held (`state_dtype`,
  /// `slow_dtype`; 8-bit scales included); 0 before registration.
  uint64_t state_bytes() const { return query<uint64_t>(flatopt_optimizer_state_bytes); }

  // --- Settings.
  /// Sets the thread count (results do not depend on it).
  void set_num_threads(uint32_t n) { check(flatopt_optimizer_set_num_threads(h_, n)); }
  /// Sets the SIMD tier (Default: the process default; results do not depend on it).
  void set_simd_tier(SimdTier t) {
    check(flatopt_optimizer_set_simd_tier(h_, static_cast<uint32_t>(t)));
  }

  // --- Lookahead slow weights.
  /// Borrows the slow weights of buffer `index` (owned by the optimizer; valid until the next
  /// step, reset, registration or destruction). Throws without Lookahead.
  Span<const float> slow_weights(std::size_t index) const {
    const float* p = nullptr;
    std::size_t n = 0;
    check(flatopt_optimizer_slow_weights(h_, index, &p, &n));
    return Span<const float>(p, n);
  }
  /// Copies the slow weights of buffer `index` into `dst` (of the buffer's size).
  void copy_slow_weights(std::size_t index, Span<float> dst) const {
    check(flatopt_optimizer_copy_slow_weights(h_, index, dst.data(), dst.size()));
  }
  /// A copy of the slow weights of buffer `index`.
  std::vector<float> copy_slow_weights(std::size_t index) const {
    const Span<const float> s = slow_weights(index);
    return std::vector<float>(s.begin(), s.end());
  }

 private:
  friend class SplitStep;

  std::size_t add_with(Span<float> param, const void* grad, std::size_t grad_size,
                       const ParamOptions& options) {
    if (grad_size != param.size()) {
      detail::length_mismatch("grad of buffer " + std::to_string(lens_.size()), param.size(),
                              grad_size);
    }
    if (options.has_copy() && options.copy_size() != param.size()) {
      detail::length_mismatch("copy of buffer " + std::to_string(lens_.size()), param.size(),
                              options.copy_size());
    }
    check(flatopt_optimizer_add_param_with_options(h_, param.data(), grad, param.size(),
                                                   &options.c_struct()));
    lens_.push_back(param.size());
    ptrs_.reserve(lens_.size());
    return lens_.size() - 1;
  }

  std::size_t add(Span<float> param, const float* grad, std::size_t group = 0) {
    check(flatopt_optimizer_add_param_to_group(h_, group, param.data(), grad, param.size()));
    lens_.push_back(param.size());
    ptrs_.reserve(lens_.size());
    return lens_.size() - 1;
  }

  /// Checks the sizes of per-call gradients (the C call takes no lengths) and fills `out`
  /// with their pointers. A count mismatch is left to the library (it reports it).
  void check_grads(Span<const Span<const float>> grads, const float** out) const {
    if (grads.size() == lens_.size()) {
      for (std::size_t i = 0; i < grads.size(); ++i) {
        if (grads[i].size() != lens_[i]) {
          detail::length_mismatch("grad buffer " + std::to_string(i), lens_[i], grads[i].size());
        }
      }
    }
    for (std::size_t i = 0; i < grads.size(); ++i) out[i] = grads[i].data();
  }

  /// The guard of a step of `total` elements that `begin_step` (scaled or not) returned `r` for.
  SplitStep guarded(std::size_t total, StepResult r) {
    const bool begun = r.applied();
    return SplitStep(begun ? this : nullptr, std::move(r), total);
  }

  static StepResult result_of(flatopt_status s) {
    if (s == FLATOPT_OK) return StepResult();
    if (s == FLATOPT_SKIPPED) {
      const char* msg = flatopt_last_error_message();
      return StepResult::skipped(msg != nullptr ? msg : "");
    }
    detail::throw_last(s);
  }

  template <class T, class F>
  T query(F f) const {
    T out{};
    check(f(h_, &out));
    return out;
  }

  flatopt_optimizer* h_ = nullptr;
  std::vector<std::size_t> lens_;     // registered lengths, for the per-call gradient checks
  std::vector<const float*> ptrs_;    // scratch of step_with_grads
};

inline void SplitStep::apply(std::size_t begin, std::size_t end) const {
  if (opt_ == nullptr) {
    detail::fail(FLATOPT_ERR_INVALID_STATE,
                 "invalid call order: SplitStep::apply on a step that is skipped or finished");
  }
  opt_->step_range(begin, end);
}

inline void SplitStep::finish() {
  if (opt_ == nullptr) {
    detail::fail(FLATOPT_ERR_INVALID_STATE,
                 "invalid call order: SplitStep::finish on a step that is skipped or finished");
  }
  Optimizer* o = opt_;
  opt_ = nullptr;
  o->end_step();
}

inline void SplitStep::end_quietly() noexcept {
  if (opt_ != nullptr) {
    (void)flatopt_optimizer_end_step(opt_->h_);
    opt_ = nullptr;
  }
}

// =============================================================================================
// Stateless kernels. The caller owns every buffer and passes the per-step scalars; they run on
// the process default SIMD tier and compute exactly what the optimizer does for one buffer.
// Optional buffers are empty spans; non-empty ones must have the size of `param`.

/// SGD step on one buffer: `momentum_buf` (needed when momentum > 0), `slow` (needed when
/// `args` syncs). `hp` must be an SGD `BaseParams`.
inline void sgd_update(const BaseParams& hp, const StepArgs& args, Span<float> param,
                       Span<const float> grad, Span<float> momentum_buf = {},
                       Span<float> slow = {}) {
  const std::size_t n = param.size();
  detail::check_len("grad", grad, n);
  detail::check_len("momentum_buf", momentum_buf, n);
  detail::check_len("slow", slow, n);
  check(flatopt_sgd_update(&hp.c_struct(), &args.c_struct(), param.data(),
                           detail::ptr_or_null(grad), detail::ptr_or_null(momentum_buf),
                           detail::ptr_or_null(slow), n));
}

/// Adam step (AMSGrad if `hp.amsgrad`: `v_max` needed). `hp` must be an Adam `BaseParams`.
inline void adam_update(const BaseParams& hp, const StepArgs& args, Span<float> param,
                        Span<const float> grad, Span<float> m, Span<float> v,
                        Span<float> v_max = {}, Span<float> slow = {}) {
  const std::size_t n = param.size();
  detail::check_len("grad", grad, n);
  detail::check_len("m", m, n);
  detail::check_len("v", v, n);
  detail::check_len("v_max", v_max, n);
  detail::check_len("slow", slow, n);
  check(flatopt_adam_update(&hp.c_struct(), &args.c_struct(), param.data(),
                            detail::ptr_or_null(grad), detail::ptr_or_null(m),
                            detail::ptr_or_null(v), detail::ptr_or_null(v_max),
                            detail::ptr_or_null(slow), n));
}

/// Widens 16-bit floats (`Dtype::Bf16` or `Dtype::F16` bit patterns) to float, exactly.
inline void widen_to_f32(Dtype dtype, Span<const uint16_t> src, Span<float> dst) {
  detail::check_len("dst", dst, src.size());
  check(flatopt_widen_to_f32(static_cast<uint32_t>(dtype), src.data(), dst.data(), src.size()));
}

/// Narrows floats to 16-bit floats: round to nearest even, subnormals kept, overflow to ±Inf,
/// NaN kept NaN.
inline void narrow_from_f32(Dtype dtype, Span<const float> src, Span<uint16_t> dst) {
  detail::check_len("dst", dst, src.size());
  check(flatopt_narrow_from_f32(static_cast<uint32_t>(dtype), src.data(), dst.data(),
                                src.size()));
}

/// The mixed-precision update of one buffer for any base rule (`hp`'s kind): 16-bit
/// gradients (`grad_dtype`) widened and divided by `grad_scale` (1: none), the state the rule
/// uses (empty spans for the others), and a 16-bit copy (`copy_dtype`; an empty span for none)
/// written from the new parameters.
inline void mixed_update(const BaseParams& hp, const StepArgs& args, float grad_scale,
                         Span<float> param, Span<const uint16_t> grad, Dtype grad_dtype,
                         Span<float> m, Span<float> v = {}, Span<float> v_max = {},
                         Span<float> slow = {}, Span<uint16_t> copy = {},
                         Dtype copy_dtype = Dtype::F32) {
  const std::size_t n = param.size();
  detail::check_len("grad", grad, n);
  detail::check_len("m", m, n);
  detail::check_len("v", v, n);
  detail::check_len("v_max", v_max, n);
  detail::check_len("slow", slow, n);
  detail::check_len("copy", copy, n);
  check(flatopt_mixed_update(&hp.c_struct(), &args.c_struct(), grad_scale, param.data(),
                             grad.data(), static_cast<uint32_t>(grad_dtype),
                             detail::ptr_or_null(m), detail::ptr_or_null(v),
                             detail::ptr_or_null(v_max), detail::ptr_or_null(slow),
                             detail::ptr_or_null(copy), static_cast<uint32_t>(copy_dtype), n));
}

/// AdamW step. `hp` must be an AdamW `BaseParams`.
inline void adamw_update(const BaseParams& hp, const StepArgs& args, Span<float> param,
                         Span<const float> grad, Span<float> m, Span<float> v,
                         Span<float> slow = {}) {
  const std::size_t n = param.size();
  detail::check_len("grad", grad, n);
  detail::check_len("m", m, n);
  detail::check_len("v", v, n);
  detail::check_len("slow", slow, n);
  check(flatopt_adamw_update(&hp.c_struct(), &args.c_struct(), param.data(),
                             detail::ptr_or_null(grad), detail::ptr_or_null(m),
                             detail::ptr_or_null(v), detail::ptr_or_null(slow), n));
}

/// RAdam step. `hp` must be a RAdam `BaseParams`.
inline void radam_update(const BaseParams& hp, const StepArgs& args, Span<float> param,
                         Span<const float> grad, Span<float> m, Span<float> v,
                         Span<float> slow = {}) {
  const std::size_t n = param.size();
  detail::check_len("grad", grad, n);
  detail::check_len("m", m, n);
  detail::check_len("v", v, n);
  detail::check_len("slow", slow, n);
  check(flatopt_radam_update(&hp.c_struct(), &args.c_struct(), param.data(),
                             detail::ptr_or_null(grad), detail::ptr_or_null(m),
                             detail::ptr_or_null(v), detail::ptr_or_null(slow), n));
}

/// Which state buffers the base rule `hp` keeps: a mask of `FLATOPT_STATE_M`,
/// `FLATOPT_STATE_V` and `FLATOPT_STATE_V_MAX` (0 for plain SGD); `base_update` requires these.
inline uint32_t base_state_buffers(const BaseParams& hp) {
  uint32_t mask = 0;
  check(flatopt_base_state_buffers(&hp.c_struct(), &mask));
  return mask;
}

/// Fills the state buffers that `hp` keeps with their values before the first step (zero, but
/// Adagrad's and RMSprop's initial accumulator and Rprop's initial step size), as an
/// optimizer's registration does. Each kept buffer has `n` elements; the others may be empty.
inline void base_state_init(const BaseParams& hp, std::size_t n, Span<float> m, Span<float> v = {},
                            Span<float> v_max = {}) {
  detail::check_len("m", m, n);
  detail::check_len("v", v, n);
  detail::check_len("v_max", v_max, n);
  check(flatopt_base_state_init(&hp.c_struct(), detail::ptr_or_null(m), detail::ptr_or_null(v),
                                detail::ptr_or_null(v_max), n));
}

/// One step of any base rule (`hp.kind()`) on caller-owned state: the buffers
/// `base_state_buffers(hp)` names (started with `base_state_init`), `slow` when `args` syncs.
/// Bit-identical to an optimizer's step with the same scalars.
inline void base_update(const BaseParams& hp, const StepArgs& args, Span<float> param,
                        Span<const float> grad, Span<float> m, Span<float> v = {},
                        Span<float> v_max = {}, Span<float> slow = {}) {
  const std::size_t n = param.size();
  detail::check_len("grad", grad, n);
  detail::check_len("m", m, n);
  detail::check_len("v", v, n);
  detail::check_len("v_max", v_max, n);
  detail::check_len("slow", slow, n);
  check(flatopt_base_update(&hp.c_struct(), &args.c_struct(), param.data(),
                            detail::ptr_or_null(grad), detail::ptr_or_null(m),
                            detail::ptr_or_null(v), detail::ptr_or_null(v_max),
                            detail::ptr_or_null(slow), n));
}

/// Sum of squares of `x` in f64, in the fixed order of the determinism contract (NaN or Inf if
/// `x` holds a non-finite value).
inline double sum_squares(Span<const float> x) {
  double out = 0.0;
  check(flatopt_sum_squares(x.data(), x.size(), &out));
  return out;
}

/// Elements per block of the fixed-order sum of squares.
inline std::size_t sum_squares_block_size() noexcept { return flatopt_sum_squares_block_size(); }

/// Number of block partials of `len` elements: `ceil(len / sum_squares_block_size())`.
inline std::size_t sum_squares_block_count(std::size_t len) noexcept {
  const std::size_t b = sum_squares_block_size();
  return len / b + (len % b != 0 ? 1 : 0);
}

/// Block partial sums of squares of `x` into `partials` (`sum_squares_block_count(x.size())`
/// of them). Adding the partials of all buffers in order reproduces the optimizer's sum.
inline void sum_squares_partials(Span<const float> x, Span<double> partials) {
  check(flatopt_sum_squares_partials(x.data(), x.size(), partials.data(), partials.size()));
}

/// Block partial sums of squares of `x`, as a new vector.
inline std::vector<double> sum_squares_partials(Span<const float> x) {
  std::vector<double> out(sum_squares_block_count(x.size()));
  sum_squares_partials(x, Span<double>(out));
  return out;
}

/// The global-norm clip factor: `max_norm / sqrt(sum_squares)` if below 1, else 1. Throws if
/// `sum_squares` is not finite or `max_norm` not > 0.
inline double clip_scale(double sum_squares, double max_norm) {
  double out = 0.0;
  check(flatopt_clip_scale(sum_squares, max_norm, &out));
  return out;
}

/// Clamps every element of `x` to [-c, c] in place (NaN stays NaN); `c >= 0`.
inline void clip_by_value(Span<float> x, float c) {
  check(flatopt_clip_by_value(x.data(), x.size(), c));
}

/// Multiplies every element of `x` by the finite `s` in place.
inline void scale(Span<float> x, float s) { check(flatopt_scale(x.data(), x.size(), s)); }

/// Lookahead sync: `slow = slow + alpha * (fast - slow)`, then `fast = slow` (bit-equal).
inline void lookahead_sync(Span<float> fast, Span<float> slow, float alpha) {
  if (slow.size() != fast.size()) detail::length_mismatch("slow", fast.size(), slow.size());
  check(flatopt_lookahead_sync(fast.data(), slow.data(), fast.size(), alpha));
}

// Enum values must stay those of the C header.
static_assert(static_cast<uint32_t>(ScheduleKind::ReduceOnPlateau) == 15, "schedule kinds");
static_assert(static_cast<uint32_t>(SimdTier::Avx512) == 4, "simd tiers");
static_assert(static_cast<uint32_t>(StateDtype::Int8) == 2, "state dtypes");
static_assert(static_cast<uint32_t>(StateRounding::Nearest) == 1, "state rounding");
static_assert(static_cast<uint32_t>(NonFinite::Propagate) == 2, "non-finite policies");
static_assert(static_cast<uint32_t>(BaseKind::Adafactor) == 16, "base kinds");

}  // namespace flatopt

#endif  // FLATOPT_HPP
