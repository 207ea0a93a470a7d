//! An independent f64 model of docs/numerics.md, run side by side with flatopt.
//!
//! The model below is written from the formulas (docs/numerics.md, "Pipeline" and "Base rules"),
//! not from `src/kernels/`: one plain loop per base optimizer, with the formulas in their textbook
//! arrangement (`m_hat = m / (1 - b1^t)`, `p = p - lr * m_hat / (sqrt(v_hat) + eps)`, ...). Its
//! state is f64; its inputs (initial parameters, gradients) are the very f32 values handed to
//! flatopt. Learning rates: an own f64 formula for `Fixed` and `Exponential`, and
//! `flatopt::ScheduleState` for every other schedule (their values are tested against
//! independent expectations in `tests/schedules.rs`).
//!
//! # Tolerance
//!
//! flatopt evaluates the same formulas in f32 (per-step scalars in f64 rounded to f32 once), so
//! it cannot match an f64 model exactly, and one fixed relative tolerance is either too loose to
//! catch small bugs or too tight where the math is ill-conditioned (Adam with a tiny second
//! moment, a coupled-decay gradient `g + wd*p` that cancels, momentum traces that cancel).
//! Instead every model value is a [`Num`]: the f64 value `x` plus a first-order bound on how far
//! *any* f32 evaluation of the same formula can be from it (running error analysis):
//!
//! * each f32 operation rounds its result once: error <= u * |result|, u = 2^-24, plus half a
//!   subnormal spacing near zero;
//! * input errors are carried through each operation by exact bounds
//!   (`|a'b' - ab| <= |a| db + |b| da + da db`, `|a'/b' - a/b| <= (da + |a/b| db) / (|b| - db)`,
//!   `|sqrt x' - sqrt x| <= min(dx / sqrt x, sqrt dx)`, clamp / max are 1-Lipschitz);
//! * per-step scalars (lr, b1, 1 - b1, bias corrections, c / n, alpha, ...) are rounded to f32
//!   once, as docs/numerics.md ("Precision") says;
//! * the error of the gradient entering the base step is one *shared* error, carried linearly
//!   (m, v and the update all depend on the same g; Adam's `m_hat / sqrt(v_hat)` cancels most
//!   of it: at t = 1 the update is `g / (|g| + eps)` whatever small error g has). Treating m and
//!   v as independent there gives absurd bounds wherever `g + wd*p` cancels.
//!
//! The check is `|flatopt - x| <= R * bound` with `R = 2^-20 = 16 u`: every rounding is charged
//! 16 times its worst case. That slack covers flatopt arranging the same math with a few more or
//! different roundings (it folds `lr / (1 - b1^t)` into one scalar, multiplies by
//! `1 / sqrt(1 - b2^t)` instead of dividing `v`, writes AdamW as `p * (1 - lr*lambda) - ...`),
//! without hiding a wrong formula: a genuine bug moves a parameter by a sizeable fraction of
//! `lr * |update|`, far above the bound. For a well-conditioned element the bound comes out as
//! roughly (2..6 roundings per step) x steps x 1e-6 x |p| plus ~1e-6..1e-5 x sum_t lr_t * |update_t|
//! (with the shape of "1e-5..1e-4 of the parameter scale plus a term tied to lr" one would pick
//! by hand), and larger exactly where the math is sensitive. The summary lines print the largest
//! `|error| / (R * bound)` seen: about 0.15, so even a 4 u charge per rounding would pass.
//!
//! Knife edges, avoided on purpose:
//! * RAdam's `rho_t >= 5` is a discontinuity: random `b2` whose `rho_t` comes within 1e-6 of 5
//!   for some step are redrawn (the table's `b2` values are asserted to be clear of it).
//! * Clip thresholds: both clips are continuous in g (`c / n -> 1` as `n -> c`), so even an
//!   `n > c` decided differently changes nothing beyond rounding; random norm thresholds are
//!   still drawn at least 15% away from the typical gradient norm so that a case binds or not
//!   clearly (per step it varies, so both happen). The value clip's bound is charged only when
//!   an element sits within rounding of it.
//! * Genuinely ill-conditioned trajectories exist: with coupled weight decay and Adam, when
//!   `|g| < lr * wd` the update feeds p's rounding errors back through `wd * p` with a gain
//!   above 1 per step (f32 and f64 trajectories really drift apart, by 3e-4 relative in one
//!   table case). The bound grows with them; once a denominator's bound reaches half its value
//!   the value is no longer first-order, gets an infinite bound and is counted as "unchecked":
//!   about 2 in a million values here, required to stay below 1 in 10,000.
//! * Inputs stay where f32 behaves like the reals: no overflow (`g^2` of 3e38), eps >= 1e-10 so
//!   that a subnormal `g^2` never matters. The hostile-value and NaN-propagation behaviour is
//!   tested elsewhere; here non-finite values are only planted to check the skip / error policy.
//!
//! Mutation check: `mutants_are_detected` runs the same harness against deliberately wrong
//! models (wrong bias correction, eps inside the sqrt, per-buffer norm, ...) and requires each
//! to be caught, so the comparison is known to have teeth.

mod common;

use std::ops::{Add, Div, Mul, Sub};

use common::{table, Rng};
use flatopt::error::Error;
use flatopt::kernels::{self, Buffers, Plan, Rule};
use flatopt::{
    Base, Config, NonFinitePolicy, Optimizer, Outcome, Schedule, ScheduleMode, ScheduleState, Tier,
};

// =============================================================================================
// Numbers with an error bound.

/// The tolerance unit: `|flatopt - x| <= R * bound`. 2^-20 = 16 times the f32 unit roundoff 2^-24.
const R: f64 = 1.0 / (1u64 << 20) as f64;
/// Half the spacing of f32 subnormals (2^-150), in units of R: the absolute error of one
/// rounding near zero.
const UNDERFLOW: f64 = 7.006_492_321_624_085e-46 / R;

/// A model value `x` with a bound on how far an f32 evaluation of the same formula can be from
/// it, in units of [`R`]: `|f32 - x| <= R * (e + |d|)`.
///
/// `e` collects independent errors. `d` is the coefficient of the one error that is *shared*
/// within the base step of an element: that of its (transformed) gradient g. m, v and the update
/// all depend on the same g, and Adam's `m_hat / sqrt(v_hat)` largely cancels it (at t = 1 the
/// update is `g / (|g| + eps)`, insensitive to a small error in g, however g was obtained);
/// treating the two as independent would give absurd bounds wherever `g + wd*p` cancels. So the
/// shared error is carried linearly (forward-mode derivative) and folded into `e` at the end of
/// the base step. An infinite `e` means "no longer first-order: do not compare".
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Num {
    x: f64,
    e: f64,
    d: f64,
}

/// `c * e`, where an exact zero coefficient contributes nothing (also when `e` is infinite).
fn times(c: f64, e: f64) -> f64 {
    if c == 0.0 {
        0.0
    } else {
        c * e
    }
}

impl Num {
    /// An f32 input (parameter, gradient, state handed in): exact.
    fn exact(x: f32) -> Num {
        Num {
            x: f64::from(x),
            e: 0.0,
            d: 0.0,
        }
    }
    /// The result `x` of one f32 operation whose inputs carry the propagated bounds `e`, `d`.
    fn rounded(x: f64, e: f64, d: f64) -> Num {
        Num {
            x,
            e: e + x.abs() + UNDERFLOW,
            d,
        }
    }
    /// The whole bound, in units of R.
    fn bound(self) -> f64 {
        self.e + self.d.abs()
    }
    /// This value's whole error becomes the shared one (the gradient entering the base step).
    fn shared(self) -> Num {
        Num {
            x: self.x,
            e: 0.0,
            d: self.bound(),
        }
    }
    /// End of the base step: the shared error becomes an independent one.
    fn settled(self) -> Num {
        Num {
            x: self.x,
            e: self.bound(),
            d: 0.0,
        }
    }
    fn sqrt(self) -> Num {
        let s = self.x.max(0.0).sqrt();
        let tot = self.bound();
        if tot == 0.0 {
            Num::rounded(s, 0.0, 0.0)
        } else if R * tot <= 0.5 * self.x {
            // sqrt(x + dx) - sqrt(x) = dx / (sqrt(x + dx) + sqrt(x)), the denominator >= 1.7 s;
            // the shared part to first order (d / 2s) plus its second-order rest.
            let e = self.e / (1.7 * s) + self.d.abs() * R * tot / (3.4 * self.x * s);
            Num::rounded(s, e, self.d / (2.0 * s))
        } else {
            // Near zero: |sqrt(x') - sqrt(x)| <= min(|x' - x| / sqrt(x), sqrt(|x' - x|)).
            let e = if s > 0.0 {
                (tot / s).min((tot / R).sqrt())
            } else {
                (tot / R).sqrt()
            };
            Num::rounded(s, e, 0.0)
        }
    }
    /// `max(self, o)`: exact in f32; 1-Lipschitz, and the clear winner keeps its derivative.
    fn max(self, o: Num) -> Num {
        if (self.x - o.x).abs() > R * (self.bound() + o.bound()) {
            if self.x > o.x {
                self
            } else {
                o
            }
        } else {
            Num {
                x: self.x.max(o.x),
                e: self.bound().max(o.bound()),
                d: 0.0,
            }
        }
    }
    /// `|self|`: exact in f32, 1-Lipschitz; the shared error keeps its sign relation where the
    /// sign of the value is clear.
    fn abs(self) -> Num {
        if self.x.abs() > R * self.bound() {
            Num {
                x: self.x.abs(),
                e: self.e,
                d: self.d * self.x.signum(),
            }
        } else {
            Num {
                x: self.x.abs(),
                e: self.bound(),
                d: 0.0,
            }
        }
    }
    /// `min(self, o)`: exact in f32; 1-Lipschitz, and the clear winner keeps its derivative.
    fn min(self, o: Num) -> Num {
        if (self.x - o.x).abs() > R * (self.bound() + o.bound()) {
            if self.x < o.x {
                self
            } else {
                o
            }
        } else {
            Num {
                x: self.x.min(o.x),
                e: self.bound().max(o.bound()),
                d: 0.0,
            }
        }
    }
    /// No longer first-order: an infinite bound, not compared.
    fn lost(self) -> Num {
        Num {
            x: self.x,
            e: f64::INFINITY,
            d: 0.0,
        }
    }
    /// The sign function (1, -1, or 0 for 0): exact where the sign is clear, and for an exact
    /// 0 whose bound is only underflow charges (a zero gradient and momentum: the f32 value is
    /// within a few subnormals of 0, so 0, as the model's inputs have no subnormals; were it
    /// not, the comparison would fail, not pass); otherwise, within rounding of 0, it is a jump
    /// of up to 1, no longer first-order (an infinite bound: not compared).
    fn sign(self) -> Num {
        let x = if self.x > 0.0 {
            1.0
        } else if self.x < 0.0 {
            -1.0
        } else {
            0.0
        };
        let clear =
            self.x.abs() > R * self.bound() || (self.x == 0.0 && self.bound() < 1e3 * UNDERFLOW);
        Num {
            x,
            e: if clear { 0.0 } else { f64::INFINITY },
            d: 0.0,
        }
    }
    /// `min(max(self, -c), c)`: exact in f32, 1-Lipschitz in both arguments; when the value is
    /// clearly inside (outside) the bounds only its own (the bound's) error matters.
    fn clamp(self, c: Num) -> Num {
        let x = self.x.clamp(-c.x, c.x);
        let (lo, hi) = (
            self.x.abs() - R * self.bound(),
            self.x.abs() + R * self.bound(),
        );
        if hi < c.x - R * c.bound() {
            self
        } else if lo > c.x + R * c.bound() {
            Num {
                x,
                e: c.bound(),
                d: 0.0,
            }
        } else {
            Num {
                x,
                e: self.bound().max(c.bound()),
                d: 0.0,
            }
        }
    }
}

/// A per-step scalar: computed in f64, rounded to f32 once (docs/numerics.md, "Precision").
fn scalar(x: f64) -> Num {
    Num::rounded(x, 0.0, 0.0)
}

/// The sum of squares of `xs` as the engine takes it: in f64 (squares exact, `n` additions
/// within `n * 2^-52` of the sum), so only the elements' own errors propagate (to first order
/// `2|x| e`, plus the second-order rest), and one f32 rounding where the result is used.
fn sum_squares_of(xs: impl Iterator<Item = Num>) -> Num {
    let (mut x, mut e, mut d, mut n) = (0.0f64, 0.0f64, 0.0f64, 0usize);
    for v in xs {
        x += v.x * v.x;
        e += times(2.0 * v.x.abs(), v.e) + R * v.bound() * v.bound();
        d += 2.0 * v.x * v.d;
        n += 1;
    }
    Num {
        x,
        e: e + n as f64 * f64::EPSILON * x / R,
        d,
    }
}

fn norm_of(xs: impl Iterator<Item = Num>) -> Num {
    sum_squares_of(xs).sqrt()
}

/// `(c, d)` of a trust-ratio update `p -= c * (u / d)`: `lr * tc * ||p||` and `||u|| + eps`, or
/// `(lr, 1)` where either norm is 0.
fn trust(lr: f64, tc: f64, eps: f64, pn: Num, un: Num) -> (Num, Num) {
    if pn.x == 0.0 || un.x == 0.0 {
        (scalar(lr), Num::exact(1.0))
    } else {
        (scalar(lr * tc) * pn, un + scalar(eps))
    }
}

impl Add for Num {
    type Output = Num;
    fn add(self, o: Num) -> Num {
        Num::rounded(self.x + o.x, self.e + o.e, self.d + o.d)
    }
}

impl Sub for Num {
    type Output = Num;
    fn sub(self, o: Num) -> Num {
        Num::rounded(self.x - o.x, self.e + o.e, self.d - o.d)
    }
}

impl Mul for Num {
    type Output = Num;
    /// `(a + da)(b + db) - ab = a db + b da + da db`.
    fn mul(self, o: Num) -> Num {
        let e = times(self.x.abs(), o.e)
            + times(o.x.abs(), self.e)
            + R * times(self.bound(), o.bound());
        Num::rounded(self.x * o.x, e, self.x * o.d + o.x * self.d)
    }
}

impl Div for Num {
    type Output = Num;
    /// `(a + da)/(b + db) - a/b = (da - q db) / (b + db)`, `|b + db| >= room = |b| - |db|`.
    fn div(self, o: Num) -> Num {
        let q = self.x / o.x;
        let room = o.x.abs() - R * o.bound();
        if room.is_nan() || room <= 0.5 * o.x.abs() {
            return Num {
                x: q,
                e: f64::INFINITY,
                d: 0.0,
            };
        }
        let d = (self.d - q * o.d) / o.x;
        let e = (self.e + times(q.abs(), o.e)) / room + d.abs() * R * o.bound() / room;
        Num::rounded(q, e, d)
    }
}

// =============================================================================================
// The model.

/// Deliberate mistakes, to prove that the comparison catches wrong math (see `mutants_are_detected`).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Mutant {
    /// Adam's first-moment bias correction with `t + 1`.
    BiasCorrectionOffByOne,
    /// `sqrt(v_hat + eps)` instead of `sqrt(v_hat) + eps`.
    EpsInsideSqrt,
    /// AMSGrad on the bias-corrected second moment (optax's choice, not flatopt's).
    AmsgradOfCorrected,
    /// Clip each buffer by its own norm.
    PerBufferNorm,
    /// Value clip before the norm clip.
    ValueClipFirst,
    /// Momentum: `b = (1 - tau) * g` on the first update.
    DampenedFirstStep,
    /// Nesterov with the previous trace.
    NesterovOldTrace,
    /// AdamW's decoupled decay not scaled by the learning rate.
    DecayNotScaledByLr,
    /// RAdam without the rectification factor `r`.
    RAdamWithoutR,
    /// Lookahead syncs at t = k-1, 2k-1, ...
    SyncOffByOne,
    /// The schedule one update ahead.
    ScheduleAhead,
    /// Skipped updates still count for t.
    SkippedCounts,
    /// Adamax with the eps of the other form (inside the maximum for optax's, after it for
    /// PyTorch's).
    AdamaxEpsSwapped,
    /// NAdam's schedule ignored (`mu_t = b1`, optax's form, for PyTorch's).
    NAdamConstantMomentum,
    /// Lion's direction from the updated momentum.
    LionNewMomentum,
}

const MUTANTS: [Mutant; 15] = [
    Mutant::AdamaxEpsSwapped,
    Mutant::NAdamConstantMomentum,
    Mutant::LionNewMomentum,
    Mutant::BiasCorrectionOffByOne,
    Mutant::EpsInsideSqrt,
    Mutant::AmsgradOfCorrected,
    Mutant::PerBufferNorm,
    Mutant::ValueClipFirst,
    Mutant::DampenedFirstStep,
    Mutant::NesterovOldTrace,
    Mutant::DecayNotScaledByLr,
    Mutant::RAdamWithoutR,
    Mutant::SyncOffByOne,
    Mutant::ScheduleAhead,
    Mutant::SkippedCounts,
];

/// The model state of one element: parameter, first moment or momentum trace, second moment,
/// AMSGrad maximum, Lookahead slow weight.
#[derive(Debug, Clone, Copy, Default)]
struct Elem {
    p: Num,
    m: Num,
    v: Num,
    v_max: Num,
    s: Num,
}

impl Elem {
    fn settled(self) -> Elem {
        Elem {
            p: self.p.settled(),
            m: self.m.settled(),
            v: self.v.settled(),
            v_max: self.v_max.settled(),
            s: self.s.settled(),
        }
    }
}

/// What one update is expected to report.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expected {
    Applied {
        step: u64,
        synced: bool,
    },
    Skipped {
        buffer: usize,
        index: usize,
        value: f32,
    },
    Failed {
        buffer: usize,
        index: usize,
        value: f32,
    },
}

/// The values one applied update uses besides the buffers. The model derives them from its
/// configuration and counters; the stateless test takes them from a `Plan`.
struct StepScalars {
    /// 1-based number of the update (bias correction, RAdam's rho_t).
    t: u64,
    lr: f64,
    /// `c / n` when the global norm n exceeded c.
    clip_scale: Option<f64>,
    clip_value: Option<f64>,
    weight_decay: f64,
    /// Lookahead alpha when this update syncs.
    sync_alpha: Option<f64>,
}

/// Counts of which branches the model took (for the summary line).
#[derive(Debug, Default, Clone, Copy)]
struct Branches {
    clip_bound: u64,
    rectified: u64,
    unrectified: u64,
    syncs: u64,
}

struct Model {
    cfg: Config,
    bufs: Vec<Vec<Elem>>,
    /// Applied updates.
    t: u64,
    skipped: u64,
    /// Schedule counter e (updates applied before this one, or manual steps).
    e: u64,
    /// For schedules other than Fixed / Exponential, advanced in step with `e`.
    sched: ScheduleState,
    /// SGD momentum: whether a trace exists (false before the first applied update).
    trace_started: bool,
    branches: Branches,
    mutant: Option<Mutant>,
}

impl Model {
    fn new(cfg: &Config, params: &[Vec<f32>], mutant: Option<Mutant>) -> Model {
        let bufs = params
            .iter()
            .map(|p| {
                p.iter()
                    .map(|&x| Elem {
                        p: Num::exact(x),
                        s: Num::exact(x),
                        v: initial_v(&cfg.base),
                        m: initial_m(&cfg.base),
                        ..Elem::default()
                    })
                    .collect()
            })
            .collect();
        Model {
            cfg: cfg.clone(),
            bufs,
            t: 0,
            skipped: 0,
            e: 0,
            sched: ScheduleState::new(&cfg.lr),
            trace_started: false,
            branches: Branches::default(),
            mutant,
        }
    }

    fn is(&self, m: Mutant) -> bool {
        self.mutant == Some(m)
    }

    /// The learning rate of the next update (docs/numerics.md, "Schedules").
    fn lr(&self) -> f64 {
        let ahead = self.is(Mutant::ScheduleAhead);
        let e = self.e + u64::from(ahead);
        match &self.cfg.lr {
            Schedule::Fixed { lr } => *lr,
            Schedule::Exponential { base, gamma } => base * gamma.powi(e as i32),
            other => {
                let mut st = self.sched.clone();
                if ahead {
                    st.advance(other);
                }
                st.lr(other)
            }
        }
    }

    fn step_schedule(&mut self) {
        self.e += 1;
        self.sched.advance(&self.cfg.lr);
    }

    /// One `update` (docs/numerics.md, "Pipeline").
    fn step(&mut self, grads: &[Vec<f32>]) -> Expected {
        // 0. Finite check: the first non-finite value by buffer, then index.
        if self.cfg.nonfinite != NonFinitePolicy::Propagate {
            let bad = grads
                .iter()
                .enumerate()
                .find_map(|(b, g)| g.iter().position(|x| !x.is_finite()).map(|i| (b, i, g[i])));
            if let Some((buffer, index, value)) = bad {
                self.skipped += 1;
                if self.is(Mutant::SkippedCounts) {
                    self.t += 1;
                }
                return match self.cfg.nonfinite {
                    NonFinitePolicy::Error => Expected::Failed {
                        buffer,
                        index,
                        value,
                    },
                    _ => Expected::Skipped {
                        buffer,
                        index,
                        value,
                    },
                };
            }
        }
        // 1. Clip by global norm: one norm over all buffers.
        let clip_scale = self.cfg.grad_clip_norm.and_then(|c| {
            let n = global_norm(grads.iter().map(Vec::as_slice));
            (n > c).then(|| c / n)
        });
        let t = self.t + 1;
        let mut sync_t = t;
        if self.is(Mutant::SyncOffByOne) {
            sync_t += 1;
        }
        let sync_alpha = self
            .cfg
            .lookahead
            .filter(|la| sync_t.is_multiple_of(la.sync_period))
            .map(|la| la.alpha);
        let scalars = StepScalars {
            t,
            lr: self.lr(),
            clip_scale,
            clip_value: self.cfg.grad_clip_value,
            weight_decay: self.cfg.weight_decay,
            sync_alpha,
        };
        self.apply(&scalars, grads);
        self.t = t;
        if self.cfg.schedule_mode == ScheduleMode::PerUpdate {
            self.step_schedule();
        }
        Expected::Applied {
            step: t,
            synced: sync_alpha.is_some(),
        }
    }

    /// Steps 1-5 of an applied update with its scalars.
    fn apply(&mut self, s: &StepScalars, grads: &[Vec<f32>]) {
        let base = self.cfg.base;
        let mutant = self.mutant;
        let is = |m: Mutant| mutant == Some(m);
        let first = !self.trace_started;
        let lr = scalar(s.lr);
        let t = s.t;
        let per_buffer_c = self
            .cfg
            .grad_clip_norm
            .filter(|_| is(Mutant::PerBufferNorm));
        if s.clip_scale.is_some() {
            self.branches.clip_bound += 1;
        }
        for (buf, grad) in self.bufs.iter_mut().zip(grads) {
            let mut clip_scale = s.clip_scale;
            if let Some(c) = per_buffer_c {
                let n = global_norm([grad.as_slice()].into_iter());
                clip_scale = (n > c).then(|| c / n);
            }
            // Steps 1-3: clip by the global norm, clip by value, coupled weight decay.
            let g: Vec<Num> = buf
                .iter()
                .zip(grad)
                .map(|(x, &g)| {
                    let mut g = Num::exact(g);
                    if is(Mutant::ValueClipFirst) {
                        if let Some(c) = s.clip_value {
                            g = g.clamp(scalar(c));
                        }
                    }
                    if let Some(k) = clip_scale {
                        g = g * scalar(k);
                    }
                    if let (Some(c), false) = (s.clip_value, is(Mutant::ValueClipFirst)) {
                        g = g.clamp(scalar(c));
                    }
                    if s.weight_decay != 0.0 {
                        g = g + scalar(s.weight_decay) * x.p;
                    }
                    g.shared()
                })
                .collect();

            // Step 4: the base optimizer.
            match base {
                Base::Sgd {
                    momentum: mu,
                    dampening: tau,
                    nesterov,
                } => {
                    for (x, &g) in buf.iter_mut().zip(&g) {
                        let d = if mu > 0.0 {
                            let old = x.m;
                            x.m = if first && is(Mutant::DampenedFirstStep) {
                                scalar(1.0 - tau) * g
                            } else if first {
                                g
                            } else {
                                scalar(mu) * x.m + scalar(1.0 - tau) * g
                            };
                            match (nesterov, is(Mutant::NesterovOldTrace)) {
                                (true, false) => g + scalar(mu) * x.m,
                                (true, true) => g + scalar(mu) * old,
                                (false, _) => x.m,
                            }
                        } else {
                            g
                        };
                        x.p = x.p - lr * d;
                    }
                }
                Base::Adam {
                    b1,
                    b2,
                    eps,
                    amsgrad,
                } => {
                    let t1 = if is(Mutant::BiasCorrectionOffByOne) {
                        t + 1
                    } else {
                        t
                    };
                    let bc1 = scalar(1.0 - b1.powi(t1 as i32));
                    let bc2 = scalar(1.0 - b2.powi(t as i32));
                    for (x, &g) in buf.iter_mut().zip(&g) {
                        x.m = scalar(b1) * x.m + scalar(1.0 - b1) * g;
                        x.v = scalar(b2) * x.v + scalar(1.0 - b2) * g * g;
                        let v_hat = if amsgrad && is(Mutant::AmsgradOfCorrected) {
                            x.v_max = x.v_max.max(x.v / bc2);
                            x.v_max
                        } else if amsgrad {
                            x.v_max = x.v_max.max(x.v);
                            x.v_max / bc2
                        } else {
                            x.v / bc2
                        };
                        let m_hat = x.m / bc1;
                        let denom = if is(Mutant::EpsInsideSqrt) {
                            (v_hat + scalar(eps)).sqrt()
                        } else {
                            v_hat.sqrt() + scalar(eps)
                        };
                        x.p = x.p - lr * (m_hat / denom);
                    }
                }
                Base::AdamW {
                    b1,
                    b2,
                    eps,
                    weight_decay: lambda,
                } => {
                    let bc1 = scalar(1.0 - b1.powi(t as i32));
                    let bc2 = scalar(1.0 - b2.powi(t as i32));
                    for (x, &g) in buf.iter_mut().zip(&g) {
                        x.m = scalar(b1) * x.m + scalar(1.0 - b1) * g;
                        x.v = scalar(b2) * x.v + scalar(1.0 - b2) * g * g;
                        let m_hat = x.m / bc1;
                        let v_hat = x.v / bc2;
                        let adam = m_hat / (v_hat.sqrt() + scalar(eps));
                        x.p = if is(Mutant::DecayNotScaledByLr) {
                            x.p - lr * adam - scalar(lambda) * x.p
                        } else {
                            x.p - lr * (adam + scalar(lambda) * x.p)
                        };
                    }
                }
                Base::RAdam { b1, b2, eps } => {
                    let tf = t as f64;
                    let b2t = b2.powi(t as i32);
                    let rho_inf = 2.0 / (1.0 - b2) - 1.0;
                    let rho_t = rho_inf - 2.0 * tf * b2t / (1.0 - b2t);
                    let r = (rho_t >= 5.0).then(|| {
                        ((rho_t - 4.0) * (rho_t - 2.0) * rho_inf
                            / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t))
                            .sqrt()
                    });
                    let r = r.map(|r| if is(Mutant::RAdamWithoutR) { 1.0 } else { r });
                    let bc1 = scalar(1.0 - b1.powi(t as i32));
                    let bc2 = scalar(1.0 - b2t);
                    for (x, &g) in buf.iter_mut().zip(&g) {
                        x.m = scalar(b1) * x.m + scalar(1.0 - b1) * g;
                        x.v = scalar(b2) * x.v + scalar(1.0 - b2) * g * g;
                        let m_hat = x.m / bc1;
                        let v_hat = x.v / bc2;
                        x.p = match r {
                            Some(r) => {
                                x.p - lr * scalar(r) * (m_hat / (v_hat.sqrt() + scalar(eps)))
                            }
                            None => x.p - lr * m_hat,
                        };
                    }
                }
                // PyTorch's Adagrad: clr = lr / (1 + (t - 1) * lr_decay), s += g^2,
                // p -= clr * g / (sqrt(s) + eps); optax's eps inside the square root.
                Base::Adagrad {
                    lr_decay,
                    eps,
                    eps_inside_sqrt,
                    ..
                } => {
                    let clr = scalar(s.lr / (1.0 + (t - 1) as f64 * lr_decay));
                    for (x, &g) in buf.iter_mut().zip(&g) {
                        x.v = x.v + g * g;
                        let denom = if eps_inside_sqrt != is(Mutant::EpsInsideSqrt) {
                            (x.v + scalar(eps)).sqrt()
                        } else {
                            x.v.sqrt() + scalar(eps)
                        };
                        x.p = x.p - clr * (g / denom);
                    }
                }
                // PyTorch's RMSprop (optax's eps inside the square root): v = alpha v +
                // (1 - alpha) g^2; centered: a = alpha a + (1 - alpha) g, v - a^2 for v;
                // u = g / (sqrt(v) + eps); momentum: b = mu b + u, p -= lr b; else p -= lr u.
                Base::RmsProp {
                    alpha,
                    eps,
                    momentum,
                    centered,
                    eps_inside_sqrt,
                    ..
                } => {
                    for (x, &g) in buf.iter_mut().zip(&g) {
                        x.v = scalar(alpha) * x.v + scalar(1.0 - alpha) * (g * g);
                        let var = if centered {
                            x.v_max = scalar(alpha) * x.v_max + scalar(1.0 - alpha) * g;
                            // Clamped at 0 like the kernel.
                            (x.v - x.v_max * x.v_max).max(scalar(0.0))
                        } else {
                            x.v
                        };
                        let denom = if eps_inside_sqrt != is(Mutant::EpsInsideSqrt) {
                            (var + scalar(eps)).sqrt()
                        } else {
                            var.sqrt() + scalar(eps)
                        };
                        let u = g / denom;
                        let d = if momentum > 0.0 {
                            x.m = scalar(momentum) * x.m + u;
                            x.m
                        } else {
                            u
                        };
                        x.p = x.p - lr * d;
                    }
                }
                // PyTorch's Adamax: m = b1 m + (1 - b1) g, u = max(b2 u, |g| + eps),
                // p -= lr / (1 - b1^t) * m / u; optax's: u = max(b2 u, |g|),
                // p -= lr * (m / (1 - b1^t)) / (u + eps).
                Base::Adamax {
                    b1,
                    b2,
                    eps,
                    eps_outside_max,
                } => {
                    let bc1 = 1.0 - b1.powi(t as i32);
                    for (x, &g) in buf.iter_mut().zip(&g) {
                        x.m = scalar(b1) * x.m + scalar(1.0 - b1) * g;
                        if eps_outside_max != is(Mutant::AdamaxEpsSwapped) {
                            x.v = (scalar(b2) * x.v).max(g.abs());
                            x.p = x.p - lr * ((x.m / scalar(bc1)) / (x.v + scalar(eps)));
                        } else {
                            x.v = (scalar(b2) * x.v).max(g.abs() + scalar(eps));
                            x.p = x.p - scalar(s.lr / bc1) * (x.m / x.v);
                        }
                    }
                }
                // PyTorch's NAdam: mu_i = b1 (1 - 0.5 * 0.96^(i psi)), P_t = mu_1 ... mu_t
                // (optax's: mu_i = b1), d = sqrt(v / (1 - b2^t)) + eps,
                // p -= lr (1 - mu_t) / (1 - P_t) g / d + lr mu_{t+1} / (1 - P_t mu_{t+1}) m / d,
                // after p *= 1 - lr * decoupled_weight_decay.
                Base::NAdam {
                    b1,
                    b2,
                    eps,
                    momentum_decay,
                    constant_momentum,
                    decoupled_weight_decay,
                } => {
                    let mu = |i: u64| {
                        if constant_momentum || is(Mutant::NAdamConstantMomentum) {
                            b1
                        } else {
                            b1 * (1.0 - 0.5 * 0.96f64.powf(i as f64 * momentum_decay))
                        }
                    };
                    let product: f64 = (1..=t).map(mu).product();
                    let (mu_t, mu_next) = (mu(t), mu(t + 1));
                    let cg = scalar(s.lr * (1.0 - mu_t) / (1.0 - product));
                    let cm = scalar(s.lr * mu_next / (1.0 - product * mu_next));
                    let bc2 = scalar(1.0 - b2.powi(t as i32));
                    for (x, &g) in buf.iter_mut().zip(&g) {
                        x.m = scalar(b1) * x.m + scalar(1.0 - b1) * g;
                        x.v = scalar(b2) * x.v + scalar(1.0 - b2) * g * g;
                        let d = (x.v / bc2).sqrt() + scalar(eps);
                        if decoupled_weight_decay > 0.0 {
                            x.p = x.p * scalar(1.0 - s.lr * decoupled_weight_decay);
                        }
                        x.p = x.p - cg * (g / d) - cm * (x.m / d);
                    }
                }
                // optax's Lion: u = sign(b1 m + (1 - b1) g), m = b2 m + (1 - b2) g,
                // p -= lr (u + wd p).
                Base::Lion {
                    b1,
                    b2,
                    weight_decay,
                } => {
                    for (x, &g) in buf.iter_mut().zip(&g) {
                        let old = x.m;
                        x.m = scalar(b2) * x.m + scalar(1.0 - b2) * g;
                        let m = if is(Mutant::LionNewMomentum) {
                            x.m
                        } else {
                            old
                        };
                        let u = (scalar(b1) * m + scalar(1.0 - b1) * g).sign();
                        x.p = x.p - lr * (u + scalar(weight_decay) * x.p);
                    }
                }
                // optax's AdaBelief: m = b1 m + (1 - b1) g, s = b2 s + (1 - b2)(g - m)^2 +
                // eps_root, p -= lr (m / (1 - b1^t)) / (sqrt(s / (1 - b2^t)) + eps).
                Base::AdaBelief {
                    b1,
                    b2,
                    eps,
                    eps_root,
                } => {
                    let bc1 = scalar(1.0 - b1.powi(t as i32));
                    let bc2 = scalar(1.0 - b2.powi(t as i32));
                    for (x, &g) in buf.iter_mut().zip(&g) {
                        x.m = scalar(b1) * x.m + scalar(1.0 - b1) * g;
                        let e = g - x.m;
                        x.v = scalar(b2) * x.v + scalar(1.0 - b2) * (e * e) + scalar(eps_root);
                        x.p = x.p - lr * ((x.m / bc1) / ((x.v / bc2).sqrt() + scalar(eps)));
                    }
                }
                // optax's Yogi: m = b1 m + (1 - b1) g, v = v - (1 - b2) sign(v - g^2) g^2,
                // p -= lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps).
                Base::Yogi { b1, b2, eps, .. } => {
                    let bc1 = scalar(1.0 - b1.powi(t as i32));
                    let bc2 = scalar(1.0 - b2.powi(t as i32));
                    for (x, &g) in buf.iter_mut().zip(&g) {
                        x.m = scalar(b1) * x.m + scalar(1.0 - b1) * g;
                        let g2 = g * g;
                        let sg = (x.v - g2).sign();
                        x.v = x.v - scalar(1.0 - b2) * sg * g2;
                        x.p = x.p - lr * ((x.m / bc1) / ((x.v / bc2).sqrt() + scalar(eps)));
                    }
                }
                // PyTorch's Adadelta: v = rho v + (1 - rho) g^2,
                // d = sqrt(u + eps) / sqrt(v + eps) g, u = rho u + (1 - rho) d^2, p -= lr d.
                Base::Adadelta { rho, eps } => {
                    for (x, &g) in buf.iter_mut().zip(&g) {
                        x.v = scalar(rho) * x.v + scalar(1.0 - rho) * (g * g);
                        let d = (x.m + scalar(eps)).sqrt() / (x.v + scalar(eps)).sqrt() * g;
                        x.m = scalar(rho) * x.m + scalar(1.0 - rho) * (d * d);
                        x.p = x.p - lr * d;
                    }
                }
                // PyTorch's Rprop: the step size from lr on the first step; s = g g_prev;
                // times eta_plus (s > 0) or eta_minus (s < 0), clamped; g = 0 after a sign
                // change; p -= sign(g) * step size; g_prev = g.
                Base::Rprop {
                    eta_minus,
                    eta_plus,
                    min_step_size,
                    max_step_size,
                } => {
                    for (x, &g) in buf.iter_mut().zip(&g) {
                        let (prev, size) = if t == 1 {
                            (Num::exact(0.0), lr)
                        } else {
                            (x.m, x.v)
                        };
                        let sg = (g * prev).sign();
                        let factor = match sg.x {
                            s if s > 0.0 => scalar(eta_plus),
                            s if s < 0.0 => scalar(eta_minus),
                            _ => Num::exact(1.0),
                        };
                        let size = (size * factor)
                            .max(scalar(min_step_size))
                            .min(scalar(max_step_size));
                        let g = if sg.x < 0.0 { Num::exact(0.0) } else { g };
                        let (size, g) = if sg.e.is_finite() {
                            (size, g)
                        } else {
                            (size.lost(), g.lost())
                        };
                        x.v = size;
                        x.m = g;
                        x.p = x.p - g.sign() * size;
                    }
                }
                // The rules with per-buffer norms (docs/numerics.md, "Per-buffer norms"): the
                // norms of this buffer's values (f32 sums here: a looser bound than the
                // engine's f64 block sums).
                Base::Lamb {
                    b1,
                    b2,
                    eps,
                    eps_root,
                    weight_decay,
                } => {
                    let bc1 = scalar(1.0 - b1.powf(t as f64));
                    let bc2 = scalar(1.0 - b2.powf(t as f64));
                    let mut u = Vec::with_capacity(buf.len());
                    for (x, &g) in buf.iter_mut().zip(&g) {
                        x.m = scalar(b1) * x.m + scalar(1.0 - b1) * g;
                        x.v = scalar(b2) * x.v + scalar(1.0 - b2) * (g * g);
                        u.push(
                            x.m / bc1 / ((x.v / bc2 + scalar(eps_root)).sqrt() + scalar(eps))
                                + scalar(weight_decay) * x.p,
                        );
                    }
                    let pn = norm_of(buf.iter().map(|x| x.p));
                    let (c, d) = trust(s.lr, 1.0, 0.0, pn, norm_of(u.iter().copied()));
                    for (x, &u) in buf.iter_mut().zip(&u) {
                        x.p = x.p - c * (u / d);
                    }
                }
                Base::Lars {
                    momentum: mu,
                    nesterov,
                    weight_decay,
                    trust_coefficient,
                    eps,
                } => {
                    let xs: Vec<Num> = buf
                        .iter()
                        .zip(&g)
                        .map(|(x, &g)| g + scalar(weight_decay) * x.p)
                        .collect();
                    let pn = norm_of(buf.iter().map(|x| x.p));
                    let xn = norm_of(xs.iter().copied());
                    let (c, d) = trust(s.lr, trust_coefficient, eps, pn, xn);
                    for (x, &v) in buf.iter_mut().zip(&xs) {
                        let st = c * (v / d);
                        x.m = scalar(mu) * x.m + st;
                        x.p = x.p - if nesterov { st + scalar(mu) * x.m } else { x.m };
                    }
                }
                Base::Novograd {
                    b1,
                    b2,
                    eps,
                    eps_root,
                    weight_decay,
                } => {
                    let ss = sum_squares_of(g.iter().copied());
                    let nu = match buf.first() {
                        Some(x0) if t > 1 => scalar(b2) * x0.v + scalar(1.0 - b2) * ss,
                        // Stored as f32: one rounding.
                        _ => Num::rounded(ss.x, ss.e, ss.d),
                    };
                    let d = (nu + scalar(eps_root)).sqrt() + scalar(eps);
                    for (x, &g) in buf.iter_mut().zip(&g) {
                        x.m = scalar(b1) * x.m + (g / d + scalar(weight_decay) * x.p);
                        x.p = x.p - lr * x.m;
                    }
                    if let Some(x0) = buf.first_mut() {
                        x0.v = nu;
                    }
                }
                // Factored second moments, per-buffer RMS clipping and scaling: its own f64
                // model in tests/adafactor.rs (`random_base` draws no Adafactor case).
                Base::Adafactor { .. } => unreachable!("tests/adafactor.rs models Adafactor"),
            }

            for x in buf.iter_mut() {
                *x = x.settled();
            }

            // Step 5: Lookahead sync, p = s exactly.
            if let Some(alpha) = s.sync_alpha {
                for x in buf.iter_mut() {
                    x.s = x.s + scalar(alpha) * (x.p - x.s);
                    x.p = x.s;
                }
            }
        }
        if let Base::RAdam { b2, .. } = base {
            if radam_rho(b2, t) >= 5.0 {
                self.branches.rectified += 1;
            } else {
                self.branches.unrectified += 1;
            }
        }
        if s.sync_alpha.is_some() {
            self.branches.syncs += 1;
        }
        self.trace_started = true;
    }
}

/// `sqrt(sum of g^2)` over every buffer, accumulated in f64.
fn global_norm<'a>(grads: impl Iterator<Item = &'a [f32]>) -> f64 {
    grads
        .flatten()
        .map(|&g| f64::from(g) * f64::from(g))
        .sum::<f64>()
        .sqrt()
}

/// The initial value of the second-moment state (Adagrad's and RMSprop's initial
/// accumulator, Yogi's, rounded to f32 once; 0 for the other rules).
fn initial_v(base: &Base) -> Num {
    match *base {
        Base::Adagrad {
            initial_accumulator_value: x,
            ..
        }
        | Base::Yogi {
            initial_accumulator_value: x,
            ..
        }
        | Base::RmsProp {
            initial_scale: x, ..
        } => scalar(x),
        _ => Num::exact(0.0),
    }
}

/// The initial value of the first-moment state (Yogi's initial accumulator, optax's; 0 for
/// the other rules).
fn initial_m(base: &Base) -> Num {
    match *base {
        Base::Yogi {
            initial_accumulator_value: x,
            ..
        } => scalar(x),
        _ => Num::exact(0.0),
    }
}

/// RAdam's rho_t (docs/numerics.md, "Base rules"), in f64.
fn radam_rho(b2: f64, t: u64) -> f64 {
    let b2t = b2.powi(t as i32);
    2.0 / (1.0 - b2) - 1.0 - 2.0 * t as f64 * b2t / (1.0 - b2t)
}

/// Whether RAdam's threshold rho_t = 5 is within reach of rounding for some step 1..=steps.
fn radam_knife_edge(b2: f64, steps: u64) -> bool {
    (1..=steps).any(|t| (radam_rho(b2, t) - 5.0).abs() < 1e-6)
}

// =============================================================================================
// Comparison.

#[derive(Debug, Default)]
struct Stats {
    cases: u64,
    applied: u64,
    skipped: u64,
    /// Parameter elements compared (summed over steps).
    param_checks: u64,
    /// All values compared: parameters, moments, maxima, slow weights.
    values: u64,
    /// Values whose bound was not first-order (not compared).
    unchecked: u64,
    /// Largest |error| / (R * e).
    max_ratio: f64,
    branches: Branches,
    /// Cases per base rule, by kind.
    per_base: [u64; 16],
    threaded: u64,
}

impl Stats {
    fn check(&mut self, what: &dyn Fn() -> String, got: f32, want: Num) -> Result<(), String> {
        self.values += 1;
        if !want.x.is_finite() {
            return Err(format!("{}: the model is not finite: {want:?}", what()));
        }
        if !want.bound().is_finite() {
            self.unchecked += 1;
            return Ok(());
        }
        let err = (f64::from(got) - want.x).abs();
        let tol = R * want.bound();
        if err <= tol {
            if tol > 0.0 {
                self.max_ratio = self.max_ratio.max(err / tol);
            }
            Ok(())
        } else {
            Err(format!(
                "{}: flatopt {got:e}, model {:e}, |diff| {err:e} > tolerance {tol:e}",
                what(),
                want.x
            ))
        }
    }

    /// Compares one state buffer of one flatopt buffer with the model (`used`: whether the rule
    /// keeps it, in which case flatopt must have one of full length).
    fn check_buf(
        &mut self,
        what: &str,
        used: bool,
        got: &[f32],
        want: impl ExactSizeIterator<Item = Num>,
        at: &dyn Fn() -> String,
    ) -> Result<(), String> {
        if !used {
            return Ok(());
        }
        if got.len() != want.len() {
            return Err(format!(
                "{}: {what} has length {}, expected {}",
                at(),
                got.len(),
                want.len()
            ));
        }
        for (i, (&g, w)) in got.iter().zip(want).enumerate() {
            self.check(&|| format!("{} {what}[{i}]", at()), g, w)?;
        }
        Ok(())
    }
}

fn outcome_matches(got: &Result<Outcome, Error>, want: &Expected) -> bool {
    match (got, *want) {
        (Ok(Outcome::Applied { step, synced }), Expected::Applied { step: s, synced: y }) => {
            *step == s && *synced == y
        }
        (
            Ok(Outcome::Skipped {
                buffer,
                index,
                value,
            }),
            Expected::Skipped {
                buffer: b,
                index: i,
                value: v,
            },
        )
        | (
            Err(Error::NonFinite {
                buffer,
                index,
                value,
            }),
            Expected::Failed {
                buffer: b,
                index: i,
                value: v,
            },
        ) => *buffer == b && *index == i && value.to_bits() == v.to_bits(),
        _ => false,
    }
}

// =============================================================================================
// Cases.

/// One side-by-side run: a configuration, buffer sizes, steps and how to draw the data.
#[derive(Debug, Clone)]
struct Case {
    label: String,
    cfg: Config,
    lens: Vec<usize>,
    steps: usize,
    p_scale: f64,
    /// Gradient scale of each buffer.
    g_scales: Vec<f64>,
    /// Probability per step of planting a non-finite gradient value.
    inject: f64,
    seed: u64,
}

const MAX_STEPS: usize = 12;

fn log_uniform(rng: &mut Rng, lo: f64, hi: f64) -> f64 {
    (rng.range(lo.ln(), hi.ln())).exp()
}

fn random_lens(rng: &mut Rng) -> Vec<usize> {
    let count = 1 + rng.below(4);
    let big = rng.unit() < 0.02;
    (0..count)
        .map(|i| {
            if big && i == 0 {
                // Several sum-of-squares blocks, above the parallel threshold.
                4096 * (17 + rng.below(18)) + rng.below(4096)
            } else {
                match rng.below(4) {
                    0 => rng.below(17),
                    _ => rng.below(301),
                }
            }
        })
        .collect()
}

/// Random sizes, steps and data for a given configuration.
fn random_case(rng: &mut Rng, label: String, cfg: Config) -> Case {
    let lens = random_lens(rng);
    let scale = log_uniform(rng, 1e-4, 3.0);
    let g_scales = lens
        .iter()
        .map(|_| scale * log_uniform(rng, 0.2, 5.0))
        .collect();
    let inject = if cfg.nonfinite == NonFinitePolicy::Propagate {
        0.0
    } else {
        0.08
    };
    Case {
        label,
        cfg,
        lens,
        steps: 1 + rng.below(MAX_STEPS),
        p_scale: log_uniform(rng, 1e-2, 3.0),
        g_scales,
        inject,
        seed: rng.next_u64(),
    }
}

fn beta(rng: &mut Rng, default: f64, lo: f64, hi: f64) -> f64 {
    match rng.below(8) {
        0 => 0.0,
        1 | 2 => default,
        _ => rng.range(lo, hi),
    }
}

fn random_base(rng: &mut Rng) -> Base {
    let eps = log_uniform(rng, 1e-10, 1e-3);
    match rng.below(20) {
        // b1 > 0: with b1 = 0 the prediction error g - m is exactly 0, the belief only
        // eps_root, and the update g / eps explodes (a knife edge, not a formula to check).
        13 => Base::AdaBelief {
            b1: [0.9, rng.range(0.5, 0.99)][rng.below(2)],
            b2: beta(rng, 0.999, 0.8, 0.9999),
            eps: log_uniform(rng, 1e-16, 1e-6),
            eps_root: [1e-16, 0.0, log_uniform(rng, 1e-16, 1e-8)][rng.below(3)],
        },
        14 => Base::Yogi {
            b1: beta(rng, 0.9, 0.5, 0.99),
            b2: beta(rng, 0.999, 0.8, 0.9999),
            eps: log_uniform(rng, 1e-6, 1e-2),
            initial_accumulator_value: [1e-6, 0.0, rng.range(0.0, 0.1)][rng.below(3)],
        },
        15 => Base::Adadelta {
            rho: beta(rng, 0.9, 0.5, 0.99),
            eps: log_uniform(rng, 1e-8, 1e-4),
        },
        17 => Base::Lamb {
            b1: beta(rng, 0.9, 0.5, 0.99),
            b2: beta(rng, 0.999, 0.8, 0.9999),
            eps: log_uniform(rng, 1e-8, 1e-4),
            eps_root: [0.0, log_uniform(rng, 1e-10, 1e-4)][rng.below(2)],
            weight_decay: [0.0, rng.range(0.0, 0.1)][rng.below(2)],
        },
        18 => Base::Lars {
            momentum: [0.9, 0.0, rng.range(0.0, 0.95)][rng.below(3)],
            nesterov: rng.unit() < 0.3,
            weight_decay: [0.0, rng.range(0.0, 0.1)][rng.below(2)],
            trust_coefficient: [0.001, log_uniform(rng, 1e-4, 1e-1)][rng.below(2)],
            eps: [0.0, log_uniform(rng, 1e-8, 1e-2)][rng.below(2)],
        },
        19 => Base::Novograd {
            b1: beta(rng, 0.9, 0.5, 0.99),
            b2: [0.25, rng.range(0.1, 0.99)][rng.below(2)],
            eps: log_uniform(rng, 1e-8, 1e-4),
            eps_root: [0.0, log_uniform(rng, 1e-10, 1e-4)][rng.below(2)],
            weight_decay: [0.0, rng.range(0.0, 0.1)][rng.below(2)],
        },
        16 => Base::Rprop {
            eta_minus: [0.5, rng.range(0.1, 0.9)][rng.below(2)],
            eta_plus: [1.2, rng.range(1.05, 2.0)][rng.below(2)],
            min_step_size: [1e-6, rng.range(0.0, 1e-3)][rng.below(2)],
            max_step_size: [50.0, rng.range(1e-2, 1.0)][rng.below(2)],
        },
        10 => Base::Adamax {
            b1: beta(rng, 0.9, 0.5, 0.99),
            b2: beta(rng, 0.999, 0.8, 0.9999),
            eps,
            eps_outside_max: rng.unit() < 0.5,
        },
        11 => Base::NAdam {
            b1: beta(rng, 0.9, 0.5, 0.99),
            b2: beta(rng, 0.999, 0.8, 0.9999),
            eps,
            momentum_decay: [0.004, 0.004, rng.range(0.0, 0.5)][rng.below(3)],
            constant_momentum: rng.unit() < 0.5,
            decoupled_weight_decay: [0.0, 0.0, rng.range(1e-3, 0.5)][rng.below(3)],
        },
        12 => Base::Lion {
            b1: beta(rng, 0.9, 0.5, 0.99),
            b2: beta(rng, 0.99, 0.8, 0.9999),
            weight_decay: [0.0, rng.range(1e-3, 0.5)][rng.below(2)],
        },
        8 => Base::Adagrad {
            lr_decay: [0.0, 0.0, rng.range(0.0, 0.5)][rng.below(3)],
            initial_accumulator_value: [0.0, 0.1, rng.range(0.0, 1.0)][rng.below(3)],
            eps,
            eps_inside_sqrt: rng.unit() < 0.5,
        },
        9 => Base::RmsProp {
            // Not 0: centered with alpha = 0 has the variance g^2 - g^2 = 0 exactly, a knife
            // edge the first-order bound cannot follow.
            alpha: [0.99, 0.9, rng.range(0.5, 0.999)][rng.below(3)],
            eps,
            momentum: [0.0, 0.0, rng.range(0.05, 0.95)][rng.below(3)],
            centered: rng.unit() < 0.5,
            eps_inside_sqrt: rng.unit() < 0.5,
            initial_scale: [0.0, 0.0, rng.range(0.0, 1.0)][rng.below(3)],
        },
        0 => Base::sgd(),
        1 | 2 => {
            let momentum = rng.range(0.05, 0.99);
            let dampening = match rng.below(4) {
                0 | 1 => 0.0,
                2 => 1.0,
                _ => rng.unit(),
            };
            Base::Sgd {
                momentum,
                dampening,
                nesterov: dampening == 0.0 && rng.unit() < 0.5,
            }
        }
        3 | 4 => Base::Adam {
            b1: beta(rng, 0.9, 0.5, 0.99),
            b2: beta(rng, 0.999, 0.8, 0.9999),
            eps,
            amsgrad: rng.unit() < 0.5,
        },
        5 => Base::AdamW {
            b1: beta(rng, 0.9, 0.5, 0.99),
            b2: beta(rng, 0.999, 0.8, 0.9999),
            eps,
            weight_decay: if rng.unit() < 0.2 {
                0.0
            } else {
                rng.range(1e-3, 0.5)
            },
        },
        _ => loop {
            // Both RAdam branches occur within 12 steps for b2 in [0.8, 0.9999].
            let b2 = beta(rng, 0.999, 0.8, 0.9999);
            if !radam_knife_edge(b2, MAX_STEPS as u64) {
                break Base::RAdam {
                    b1: beta(rng, 0.9, 0.5, 0.99),
                    b2,
                    eps,
                };
            }
        },
    }
}

fn random_schedule(rng: &mut Rng, lr: f64) -> Schedule {
    let n = |rng: &mut Rng, k: usize| 1 + rng.below(k) as u64;
    match rng.below(8) {
        0..=3 => Schedule::Fixed { lr },
        4 | 5 => Schedule::Exponential {
            base: lr,
            gamma: rng.range(0.7, 1.1),
        },
        _ => match rng.below(8) {
            0 => Schedule::warmup(lr, n(rng, 6), lr * rng.range(0.0, 0.5)),
            1 => Schedule::cosine_annealing(lr, n(rng, 15), lr * rng.range(0.0, 0.1)),
            2 => Schedule::step(lr, n(rng, 4), 0.5),
            3 => Schedule::one_cycle(lr, 12 + n(rng, 10)),
            4 => Schedule::cyclic(lr * 0.1, lr, n(rng, 4)),
            5 => Schedule::cosine_annealing_warm_restarts(lr, n(rng, 4), n(rng, 3), 0.0),
            6 => Schedule::warmup_cosine(lr, n(rng, 4), 5 + n(rng, 10), 0.0, lr * 0.01),
            _ => Schedule::multi_step(lr, vec![2, 5, 9], 0.5),
        },
    }
}

fn available_tiers() -> Vec<Tier> {
    Tier::ALL.into_iter().filter(|t| t.is_available()).collect()
}

/// A random configuration with random data.
fn random_config_case(rng: &mut Rng, i: usize) -> Case {
    let base = random_base(rng);
    let lr = log_uniform(rng, 1e-4, 0.3);
    let mut cfg = Config::with_schedule(base, random_schedule(rng, lr));
    if !matches!(cfg.lr, Schedule::Fixed { .. }) && rng.unit() < 0.2 {
        cfg.schedule_mode = ScheduleMode::Manual;
    }
    if rng.unit() < 0.5 {
        cfg.weight_decay = log_uniform(rng, 1e-4, 0.3);
    }
    if rng.unit() < 0.5 {
        let k = 1 + rng.below(6) as u64;
        let alpha = match rng.below(6) {
            0 => 0.0,
            1 => 1.0,
            _ => rng.unit(),
        };
        cfg = cfg.lookahead(k, alpha);
    }
    cfg.nonfinite = match rng.below(7) {
        0 => NonFinitePolicy::Error,
        1 => NonFinitePolicy::Propagate,
        _ => NonFinitePolicy::Skip,
    };
    let tiers = available_tiers();
    cfg.tier = Some(tiers[rng.below(tiers.len())]);
    let mut case = random_case(rng, format!("random #{i}"), cfg);
    // Clip thresholds relative to the data: the norm at least 15% away from the typical norm
    // (n^2 ~ sum of len * 0.96 * scale^2 for `Rng::normal`), the value around the scale.
    if rng.unit() < 0.4 {
        let typical = case
            .lens
            .iter()
            .zip(&case.g_scales)
            .map(|(&n, s)| n as f64 * 0.96 * s * s)
            .sum::<f64>()
            .sqrt()
            .max(1e-6);
        let f = if rng.unit() < 0.5 {
            rng.range(0.2, 0.85)
        } else {
            rng.range(1.15, 3.0)
        };
        case.cfg.grad_clip_norm = Some(typical * f);
    }
    if rng.unit() < 0.4 {
        let geo = case.g_scales.iter().map(|s| s.ln()).sum::<f64>() / case.g_scales.len() as f64;
        case.cfg.grad_clip_value = Some(geo.exp() * rng.range(0.3, 3.0));
    }
    let total: usize = case.lens.iter().sum();
    if total >= flatopt::engine::PARALLEL_MIN_ELEMENTS && rng.unit() < 0.7 {
        case.cfg.num_threads = 2 + rng.below(3);
    } else if rng.unit() < 0.05 {
        case.cfg.num_threads = 2;
    }
    case.cfg
        .validate()
        .expect("generated an invalid configuration");
    case
}

/// Runs flatopt and the model side by side over a case. `Err` describes the first disagreement.
fn run_case(case: &Case, mutant: Option<Mutant>, stats: &mut Stats) -> Result<(), String> {
    let mut rng = Rng(case.seed);
    let mut params: Vec<Vec<f32>> = case
        .lens
        .iter()
        .map(|&n| rng.vec(n, case.p_scale))
        .collect();
    let mut opt = Optimizer::new(case.cfg.clone()).map_err(|e| e.to_string())?;
    {
        let refs: Vec<&[f32]> = params.iter().map(Vec::as_slice).collect();
        opt.register(&refs).map_err(|e| e.to_string())?;
    }
    let mut model = Model::new(&case.cfg, &params, mutant);
    let (uses_m, uses_v, uses_vmax) = match case.cfg.base {
        Base::Sgd { momentum, .. } => (momentum > 0.0, false, false),
        Base::Adam { amsgrad, .. } => (true, true, amsgrad),
        Base::AdamW { .. } | Base::RAdam { .. } => (true, true, false),
        Base::Adagrad { .. } => (false, true, false),
        Base::RmsProp {
            momentum, centered, ..
        } => (momentum > 0.0, true, centered),
        Base::Adamax { .. } | Base::NAdam { .. } => (true, true, false),
        Base::Lion { .. } => (true, false, false),
        Base::AdaBelief { .. } | Base::Yogi { .. } => (true, true, false),
        Base::Adadelta { .. } | Base::Rprop { .. } => (true, true, false),
        Base::Lamb { .. } | Base::Novograd { .. } => (true, true, false),
        Base::Lars { .. } => (true, false, false),
        Base::Adafactor { momentum, .. } => (momentum > 0.0, true, false),
    };
    let lookahead = case.cfg.lookahead.is_some();
    stats.cases += 1;
    stats.per_base[case.cfg.base.kind() as usize] += 1;
    if case.cfg.num_threads > 1 && case.lens.iter().sum::<usize>() >= 1 << 16 {
        stats.threaded += 1;
    }

    for step in 1..=case.steps {
        let at = |b: usize| format!("[{}] step {step} buffer {b}", case.label);
        let mut grads: Vec<Vec<f32>> = case
            .lens
            .iter()
            .zip(&case.g_scales)
            .map(|(&n, &s)| {
                (0..n)
                    .map(|_| {
                        let g = rng.normal(s);
                        if rng.unit() < 0.1 {
                            0.0
                        } else {
                            g
                        }
                    })
                    .collect()
            })
            .collect();
        if rng.unit() < case.inject {
            let nonempty: Vec<usize> = (0..grads.len()).filter(|&b| !grads[b].is_empty()).collect();
            for _ in 0..1 + rng.below(2) {
                if nonempty.is_empty() {
                    break;
                }
                let b = nonempty[rng.below(nonempty.len())];
                let i = rng.below(grads[b].len());
                grads[b][i] = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY][rng.below(3)];
            }
        }

        let want_lr = model.lr() as f32;
        let got_lr = opt.current_lr();
        if (got_lr - want_lr).abs() > 1e-6 * want_lr.abs() {
            return Err(format!(
                "[{}] step {step}: learning rate {got_lr:e}, model {want_lr:e}",
                case.label
            ));
        }

        let before = params.clone();
        let got = {
            let mut prefs: Vec<&mut [f32]> = params.iter_mut().map(Vec::as_mut_slice).collect();
            let grefs: Vec<&[f32]> = grads.iter().map(Vec::as_slice).collect();
            opt.step(&mut prefs, &grefs)
        };
        let want = model.step(&grads);
        if !outcome_matches(&got, &want) {
            return Err(format!(
                "[{}] step {step}: flatopt returned {got:?}, model expects {want:?}",
                case.label
            ));
        }
        match want {
            Expected::Applied { .. } => stats.applied += 1,
            _ => {
                stats.skipped += 1;
                if before != params {
                    return Err(format!(
                        "[{}] step {step}: a skipped update changed the params",
                        case.label
                    ));
                }
            }
        }
        if opt.step_count() != model.t || opt.skipped_count() != model.skipped {
            return Err(format!(
                "[{}] step {step}: step_count {} / skipped_count {}, model {} / {}",
                case.label,
                opt.step_count(),
                opt.skipped_count(),
                model.t,
                model.skipped
            ));
        }

        for (b, (p, elems)) in params.iter().zip(&model.bufs).enumerate() {
            let at_b = || at(b);
            stats.param_checks += p.len() as u64;
            stats.check_buf("p", true, p, elems.iter().map(|x| x.p), &at_b)?;
            let (m, v, v_max) = opt.moments(b).ok_or("no moments")?;
            stats.check_buf("m", uses_m, m, elems.iter().map(|x| x.m), &at_b)?;
            stats.check_buf("v", uses_v, v, elems.iter().map(|x| x.v), &at_b)?;
            stats.check_buf(
                "v_max",
                uses_vmax,
                v_max,
                elems.iter().map(|x| x.v_max),
                &at_b,
            )?;
            if lookahead {
                let slow = opt.slow_weights(b).ok_or("no slow weights")?;
                stats.check_buf("slow", true, slow, elems.iter().map(|x| x.s), &at_b)?;
                if let Ok(Outcome::Applied { synced: true, .. }) = got {
                    let same = p.iter().zip(slow).all(|(a, s)| a.to_bits() == s.to_bits());
                    if !same {
                        return Err(format!("{}: after a sync p != s bitwise", at(b)));
                    }
                }
            }
        }

        if case.cfg.schedule_mode == ScheduleMode::Manual && rng.unit() < 0.5 {
            opt.step_schedule();
            model.step_schedule();
        }
    }
    let b = &mut stats.branches;
    b.clip_bound += model.branches.clip_bound;
    b.rectified += model.branches.rectified;
    b.unrectified += model.branches.unrectified;
    b.syncs += model.branches.syncs;
    Ok(())
}

fn summary(what: &str, s: &Stats) {
    println!(
        "model[{what}]: {} configurations ({}; {} threaded), \
         {} applied + {} skipped steps, {} parameter element-steps, {} values compared \
         (p, m, v, v_max, slow), {} unchecked (not first-order); branches: {} norm-clipped steps, {} syncs, \
         radam {} rectified / {} unrectified steps; max |error| / tolerance = {:.3}",
        s.cases,
        s.per_base
            .iter()
            .enumerate()
            .map(|(kind, n)| format!("{} {n}", Base::default_of(kind as u32).name()))
            .collect::<Vec<_>>()
            .join(", "),
        s.threaded,
        s.applied,
        s.skipped,
        s.param_checks,
        s.values,
        s.unchecked,
        s.branches.clip_bound,
        s.branches.syncs,
        s.branches.rectified,
        s.branches.unrectified,
        s.max_ratio
    );
}

fn finish(what: &str, stats: &Stats, failures: &[String]) {
    summary(what, stats);
    assert!(
        failures.is_empty(),
        "{} of {} cases disagree with the model; first ones:\n{}",
        failures.len(),
        stats.cases,
        failures[..failures.len().min(5)].join("\n")
    );
    // Ill-conditioned values are skipped, not hidden: there must be (almost) none.
    assert!(
        stats.unchecked * 10_000 <= stats.values,
        "too many unchecked values: {}",
        stats.unchecked
    );
}

// =============================================================================================
// Tests.

/// Every row of the shared table (each base x each pipeline), under random sizes, steps, data and
/// tiers.
#[test]
fn table_rows_match_model() {
    const PER_ROW: usize = 12;
    let mut rng = Rng(0x7AB1_E000_5EED);
    let tiers = available_tiers();
    let mut stats = Stats::default();
    let mut failures = Vec::new();
    for (name, cfg) in table() {
        if let Base::RAdam { b2, .. } = cfg.base {
            assert!(
                !radam_knife_edge(b2, MAX_STEPS as u64),
                "{name}: rho_t near 5"
            );
        }
        for j in 0..PER_ROW {
            let mut cfg = cfg.clone();
            cfg.tier = Some(tiers[rng.below(tiers.len())]);
            let case = random_case(&mut rng, format!("{name} #{j}"), cfg);
            if let Err(e) = run_case(&case, None, &mut stats) {
                failures.push(format!("{e}\n  case: {case:?}"));
            }
        }
    }
    finish("table", &stats, &failures);
}

/// Thousands of random configurations: every base with random hyperparameters, schedules,
/// clipping, weight decay, Lookahead, non-finite policies, tiers and threads.
#[test]
fn random_configs_match_model() {
    const CASES: usize = 3000;
    let mut rng = Rng(0x0DE1_F1A7_0917);
    let mut stats = Stats::default();
    let mut failures = Vec::new();
    for i in 0..CASES {
        let case = random_config_case(&mut rng, i);
        if let Err(e) = run_case(&case, None, &mut stats) {
            failures.push(format!("{e}\n  case: {case:?}"));
        }
    }
    finish("random", &stats, &failures);
}

/// The harness must reject wrong models: each mutant is caught within the random sweep.
#[test]
fn mutants_are_detected() {
    for mutant in MUTANTS {
        let mut rng = Rng(0x0DE1_F1A7_0917);
        let mut stats = Stats::default();
        let caught = (0..3000).find_map(|i| {
            let case = random_config_case(&mut rng, i);
            run_case(&case, Some(mutant), &mut stats)
                .err()
                .map(|e| (i, e))
        });
        match caught {
            Some((i, e)) => println!(
                "mutant {mutant:?} caught at random case {i}: {}",
                e.lines().next().unwrap_or("")
            ),
            None => panic!("mutant {mutant:?} was not detected in 3000 random cases"),
        }
    }
}

/// The stateless layer: `kernels::apply` with `Rule::for_step` against one model step of each
/// rule, on every available tier, with each pipeline stage on and off.
#[test]
fn stateless_kernels_match_model() {
    let rules: [(&str, Base, u64); 29] = [
        ("sgd", Base::sgd(), 3),
        ("momentum, first step", Base::momentum(0.9, false), 1),
        (
            "momentum with dampening",
            Base::Sgd {
                momentum: 0.8,
                dampening: 0.25,
                nesterov: false,
            },
            4,
        ),
        ("nesterov", Base::momentum(0.9, true), 2),
        ("adam t=1", Base::adam(), 1),
        (
            "adam t=7",
            Base::Adam {
                b1: 0.8,
                b2: 0.99,
                eps: 1e-4,
                amsgrad: false,
            },
            7,
        ),
        (
            "amsgrad",
            Base::Adam {
                b1: 0.9,
                b2: 0.99,
                eps: 1e-8,
                amsgrad: true,
            },
            5,
        ),
        ("adamw", Base::adamw(), 3),
        ("radam unrectified", Base::radam(), 2),
        ("radam rectified", Base::radam(), 9),
        (
            "radam b2=0.9 rectified",
            Base::RAdam {
                b1: 0.9,
                b2: 0.9,
                eps: 1e-6,
            },
            12,
        ),
        ("adagrad", Base::adagrad(), 1),
        (
            "adagrad optax lr_decay",
            Base::Adagrad {
                lr_decay: 0.3,
                initial_accumulator_value: 0.1,
                eps: 1e-7,
                eps_inside_sqrt: true,
            },
            6,
        ),
        ("rmsprop", Base::rmsprop(), 4),
        (
            "rmsprop centered momentum",
            Base::RmsProp {
                alpha: 0.9,
                eps: 1e-6,
                momentum: 0.8,
                centered: true,
                eps_inside_sqrt: false,
                initial_scale: 0.0,
            },
            3,
        ),
        (
            "rmsprop optax centered",
            Base::RmsProp {
                alpha: 0.9,
                eps: 1e-8,
                momentum: 0.0,
                centered: true,
                eps_inside_sqrt: true,
                initial_scale: 0.0,
            },
            2,
        ),
        ("adamax", Base::adamax(), 3),
        (
            "adamax optax",
            Base::Adamax {
                b1: 0.8,
                b2: 0.99,
                eps: 1e-6,
                eps_outside_max: true,
            },
            1,
        ),
        ("nadam", Base::nadam(), 5),
        (
            "nadam optax decoupled",
            Base::NAdam {
                b1: 0.9,
                b2: 0.99,
                eps: 1e-8,
                momentum_decay: 0.004,
                constant_momentum: true,
                decoupled_weight_decay: 0.1,
            },
            2,
        ),
        ("adabelief", Base::adabelief(), 4),
        (
            "adabelief eps_root 0",
            Base::AdaBelief {
                b1: 0.8,
                b2: 0.99,
                eps: 1e-8,
                eps_root: 0.0,
            },
            1,
        ),
        ("yogi", Base::yogi(), 3),
        ("adadelta", Base::adadelta(), 2),
        ("rprop first step", Base::rprop(), 1),
        ("rprop", Base::rprop(), 5),
        (
            "rprop tight bounds",
            Base::Rprop {
                eta_minus: 0.3,
                eta_plus: 1.5,
                min_step_size: 0.01,
                max_step_size: 0.02,
            },
            3,
        ),
        ("lion", Base::lion(), 1),
        (
            "lion decay",
            Base::Lion {
                b1: 0.95,
                b2: 0.98,
                weight_decay: 0.3,
            },
            7,
        ),
    ];
    let mut rng = Rng(0x57A7_E1E5);
    let mut stats = Stats::default();
    for (name, base, t) in rules {
        let lr = 0.03;
        let rule = Rule::for_step(&base, t, lr);
        if let (Base::RAdam { b2, .. }, Rule::RAdam { rectified, .. }) = (base, rule) {
            assert_eq!(rectified, radam_rho(b2, t) >= 5.0, "{name}: rectified flag");
        }
        for tier in available_tiers() {
            for variant in 0..4 {
                for n in [1usize, 37, 259] {
                    let at = || format!("stateless {name} on {tier} variant {variant} n={n}");
                    let mut p = rng.vec(n, 1.0);
                    let g = rng.vec(n, 0.5);
                    let mut m = rng.vec(n, 0.3);
                    let mut v: Vec<f32> = rng.vec(n, 0.2).iter().map(|x| x * x).collect();
                    let mut v_max: Vec<f32> =
                        v.iter().map(|&x| x * [0.5f32, 2.0][rng.below(2)]).collect();
                    if let Rule::Adadelta { .. } = rule {
                        // The squared-update average is an average of squares.
                        m.iter_mut().for_each(|x| *x *= *x);
                    }
                    if let Rule::RmsProp { centered: true, .. } = rule {
                        // The gradient average a of a real trajectory has a^2 <= v.
                        for (a, &x) in v_max.iter_mut().zip(&v) {
                            *a = x.sqrt() * if *a < x { -0.5 } else { 0.5 };
                        }
                    }
                    let mut slow = rng.vec(n, 1.0);
                    let (clip_scale, clip_value, wd, sync) = match variant {
                        0 => (None, None, 0.0, None),
                        1 => (Some(0.37), Some(0.4), 0.0, None),
                        2 => (None, None, 0.05, Some(0.5)),
                        _ => (Some(0.8), Some(0.3), 0.02, Some(0.25)),
                    };
                    let plan = Plan {
                        clip_scale: clip_scale.map(|c: f64| c as f32),
                        clip_value: clip_value.map(|c: f64| c as f32),
                        weight_decay: (wd != 0.0).then_some(wd as f32),
                        rule,
                        sync_alpha: sync.map(|a: f64| a as f32),
                    };
                    let elems = (0..n)
                        .map(|i| Elem {
                            p: Num::exact(p[i]),
                            m: Num::exact(m[i]),
                            v: Num::exact(v[i]),
                            v_max: Num::exact(v_max[i]),
                            s: Num::exact(slow[i]),
                        })
                        .collect();
                    let mut model = Model::new(&Config::new(base, lr), &[], None);
                    model.bufs = vec![elems];
                    model.trace_started = t > 1;
                    // Plan scalars are f32; the model gets the f64 values they were rounded from.
                    model.apply(
                        &StepScalars {
                            t,
                            lr,
                            clip_scale,
                            clip_value,
                            weight_decay: wd,
                            sync_alpha: sync,
                        },
                        std::slice::from_ref(&g),
                    );
                    kernels::apply(
                        tier,
                        &plan,
                        Buffers {
                            param: &mut p,
                            grad: &g,
                            m: &mut m,
                            v: &mut v,
                            v_max: &mut v_max,
                            slow: &mut slow,
                        },
                    )
                    .unwrap();
                    let (um, uv, uvmax) = rule.state_used();
                    let e = &model.bufs[0];
                    stats.param_checks += n as u64;
                    stats
                        .check_buf("p", true, &p, e.iter().map(|x| x.p), &at)
                        .unwrap();
                    stats
                        .check_buf("m", um, &m, e.iter().map(|x| x.m), &at)
                        .unwrap();
                    stats
                        .check_buf("v", uv, &v, e.iter().map(|x| x.v), &at)
                        .unwrap();
                    stats
                        .check_buf("v_max", uvmax, &v_max, e.iter().map(|x| x.v_max), &at)
                        .unwrap();
                    stats
                        .check_buf("slow", sync.is_some(), &slow, e.iter().map(|x| x.s), &at)
                        .unwrap();
                    if sync.is_some() {
                        assert!(
                            p.iter().zip(&slow).all(|(a, b)| a.to_bits() == b.to_bits()),
                            "{}: p != slow after a sync",
                            at()
                        );
                    }
                    stats.applied += 1;
                }
            }
        }
    }
    // A wrong length is refused before anything is written.
    let mut p = vec![1.0f32; 8];
    let mut m = vec![0.0f32; 7];
    let plan = Plan {
        clip_scale: None,
        clip_value: None,
        weight_decay: None,
        rule: Rule::for_step(&Base::adam(), 1, 0.1),
        sync_alpha: None,
    };
    let r = kernels::apply(
        Tier::Scalar,
        &plan,
        Buffers {
            param: &mut p,
            grad: &[0.5; 8],
            m: &mut m,
            v: &mut [0.0; 8],
            v_max: &mut [],
            slow: &mut [],
        },
    );
    assert!(matches!(r, Err(Error::LengthMismatch { .. })), "{r:?}");
    assert!(p.iter().all(|&x| x == 1.0) && m.iter().all(|&x| x == 0.0));
    println!(
        "model[stateless]: {} kernel calls ({} rules x {} tiers x 4 plans x 3 sizes), {} elements, \
         {} values compared, max |error| / tolerance = {:.3}",
        stats.applied,
        rules.len(),
        available_tiers().len(),
        stats.param_checks,
        stats.values,
        stats.max_ratio
    );
    assert_eq!(stats.unchecked, 0);
}

// =============================================================================================
// Parameter groups.

/// One model per parameter group (its base rule and weight decay: docs/numerics.md,
/// "Parameter groups"), stepped together: one finite check and one norm over every buffer, one
/// step counter, and each group's learning rate `g * (schedule(e) / base_lr)` in f64.
struct GroupModel {
    /// One model per group, over the group's buffers in registration order.
    models: Vec<Model>,
    /// The buffers of each group (registration indices).
    members: Vec<Vec<usize>>,
    /// Each group's own learning rate.
    own_lr: Vec<Option<f64>>,
    base_lr: f64,
    cfg: Config,
    t: u64,
    skipped: u64,
}

impl GroupModel {
    /// The learning rate of group `k` in the next update.
    fn lr(&self, k: usize) -> f64 {
        let s = self.models[0].lr();
        match self.own_lr[k] {
            Some(g) if g != self.base_lr => g * (s / self.base_lr),
            _ => s,
        }
    }

    fn step(&mut self, grads: &[Vec<f32>]) -> Expected {
        if self.cfg.nonfinite != NonFinitePolicy::Propagate {
            let bad = grads
                .iter()
                .enumerate()
                .find_map(|(b, g)| g.iter().position(|x| !x.is_finite()).map(|i| (b, i, g[i])));
            if let Some((buffer, index, value)) = bad {
                self.skipped += 1;
                return match self.cfg.nonfinite {
                    NonFinitePolicy::Error => Expected::Failed {
                        buffer,
                        index,
                        value,
                    },
                    _ => Expected::Skipped {
                        buffer,
                        index,
                        value,
                    },
                };
            }
        }
        let clip_scale = self.cfg.grad_clip_norm.and_then(|c| {
            let n = global_norm(grads.iter().map(Vec::as_slice));
            (n > c).then(|| c / n)
        });
        let t = self.t + 1;
        let sync_alpha = self
            .cfg
            .lookahead
            .filter(|la| t.is_multiple_of(la.sync_period))
            .map(|la| la.alpha);
        let lrs: Vec<f64> = (0..self.models.len()).map(|k| self.lr(k)).collect();
        for ((model, members), lr) in self.models.iter_mut().zip(&self.members).zip(lrs) {
            let g: Vec<Vec<f32>> = members.iter().map(|&b| grads[b].clone()).collect();
            let s = StepScalars {
                t,
                lr,
                clip_scale,
                clip_value: self.cfg.grad_clip_value,
                weight_decay: model.cfg.weight_decay,
                sync_alpha,
            };
            model.apply(&s, &g);
            model.t = t;
            if self.cfg.schedule_mode == ScheduleMode::PerUpdate {
                model.step_schedule();
            }
        }
        self.t = t;
        Expected::Applied {
            step: t,
            synced: sync_alpha.is_some(),
        }
    }
}

/// A random base rule of `base`'s kind (its own hyperparameters for a group).
fn random_base_of_kind(rng: &mut Rng, base: &Base) -> Base {
    loop {
        let b = random_base(rng);
        if b.kind() == base.kind() {
            return b;
        }
    }
}

/// Random configurations with 1 to 3 extra parameter groups (own learning rates, weight decays
/// and base hyperparameters, or the optimizer's), buffers placed in random groups: flatopt
/// against one model per group.
#[test]
fn random_groups_match_model() {
    use flatopt::engine::GroupOptions;
    const CASES: usize = 600;
    let mut rng = Rng(0x6209_0bad_5eed);
    let mut stats = Stats::default();
    let mut failures = Vec::new();
    for i in 0..CASES {
        let mut case = random_config_case(&mut rng, i);
        case.label = format!("groups #{i}");
        let extra = 1 + rng.below(3);
        let base_lr = case.cfg.lr.base_lr();
        let mut opts = Vec::new();
        for _ in 0..extra {
            opts.push(GroupOptions {
                lr: (rng.unit() < 0.7).then(|| base_lr * log_uniform(&mut rng, 0.1, 5.0)),
                weight_decay: match rng.below(3) {
                    0 => Some(0.0),
                    1 => Some(log_uniform(&mut rng, 1e-4, 0.3)),
                    _ => None,
                },
                base: (rng.unit() < 0.6).then(|| random_base_of_kind(&mut rng, &case.cfg.base)),
            });
        }
        let groups: Vec<usize> = case.lens.iter().map(|_| rng.below(extra + 1)).collect();
        if let Err(e) = run_group_case(&case, &opts, &groups, &mut stats) {
            failures.push(format!(
                "{e}\n  case: {case:?}\n  groups: {opts:?} {groups:?}"
            ));
        }
    }
    finish("groups", &stats, &failures);
}

fn run_group_case(
    case: &Case,
    opts: &[flatopt::engine::GroupOptions],
    groups: &[usize],
    stats: &mut Stats,
) -> Result<(), String> {
    let mut rng = Rng(case.seed);
    let mut params: Vec<Vec<f32>> = case
        .lens
        .iter()
        .map(|&n| rng.vec(n, case.p_scale))
        .collect();
    let mut opt = Optimizer::new(case.cfg.clone()).map_err(|e| e.to_string())?;
    for o in opts {
        opt.add_group(o.clone()).map_err(|e| e.to_string())?;
    }
    {
        let refs: Vec<&[f32]> = params.iter().map(Vec::as_slice).collect();
        opt.register_in_groups(&refs, groups)
            .map_err(|e| e.to_string())?;
    }
    // Each group's configuration, from the options as docs/numerics.md defines them: the
    // weight decay is the rule's own (AdamW's, Lion's, LAMB's, LARS's, NovoGrad's), else the
    // coupled one.
    let n_groups = opts.len() + 1;
    let mut cfgs = vec![case.cfg.clone()];
    for o in opts {
        let mut c = case.cfg.clone();
        if let Some(b) = o.base {
            c.base = b;
        }
        if let Some(wd) = o.weight_decay {
            match &mut c.base {
                Base::AdamW { weight_decay, .. }
                | Base::Lion { weight_decay, .. }
                | Base::Lamb { weight_decay, .. }
                | Base::Lars { weight_decay, .. }
                | Base::Novograd { weight_decay, .. } => *weight_decay = wd,
                _ => c.weight_decay = wd,
            }
        }
        cfgs.push(c);
    }
    let members: Vec<Vec<usize>> = (0..n_groups)
        .map(|k| (0..groups.len()).filter(|&b| groups[b] == k).collect())
        .collect();
    let mut model = GroupModel {
        models: (0..n_groups)
            .map(|k| {
                let p: Vec<Vec<f32>> = members[k].iter().map(|&b| params[b].clone()).collect();
                Model::new(&cfgs[k], &p, None)
            })
            .collect(),
        members: members.clone(),
        own_lr: std::iter::once(None)
            .chain(opts.iter().map(|o| o.lr))
            .collect(),
        base_lr: case.cfg.lr.base_lr(),
        cfg: case.cfg.clone(),
        t: 0,
        skipped: 0,
    };
    let lookahead = case.cfg.lookahead.is_some();
    stats.cases += 1;

    for step in 1..=case.steps {
        let mut grads: Vec<Vec<f32>> = case
            .lens
            .iter()
            .zip(&case.g_scales)
            .map(|(&n, &s)| (0..n).map(|_| rng.normal(s)).collect())
            .collect();
        if rng.unit() < case.inject {
            if let Some(b) = (0..grads.len()).find(|&b| !grads[b].is_empty()) {
                let i = rng.below(grads[b].len());
                grads[b][i] = f32::NAN;
            }
        }
        for k in 0..n_groups {
            let want = model.lr(k) as f32;
            let got = opt.group_current_lr(k).ok_or("no group")?;
            if (got - want).abs() > 1e-6 * want.abs() {
                return Err(format!(
                    "[{}] step {step}: group {k} learning rate {got:e}, model {want:e}",
                    case.label
                ));
            }
        }
        let got = {
            let mut prefs: Vec<&mut [f32]> = params.iter_mut().map(Vec::as_mut_slice).collect();
            let grefs: Vec<&[f32]> = grads.iter().map(Vec::as_slice).collect();
            opt.step(&mut prefs, &grefs)
        };
        let want = model.step(&grads);
        if !outcome_matches(&got, &want) {
            return Err(format!(
                "[{}] step {step}: flatopt returned {got:?}, model expects {want:?}",
                case.label
            ));
        }
        match want {
            Expected::Applied { .. } => stats.applied += 1,
            _ => stats.skipped += 1,
        }
        if opt.step_count() != model.t || opt.skipped_count() != model.skipped {
            return Err(format!("[{}] step {step}: counters differ", case.label));
        }
        for (k, m) in model.models.iter().enumerate() {
            let (uses_m, uses_v, uses_vmax) = m.cfg.base.state_used();
            for (j, &b) in members[k].iter().enumerate() {
                let at = || format!("[{}] step {step} group {k} buffer {b}", case.label);
                let elems = &m.bufs[j];
                stats.param_checks += params[b].len() as u64;
                stats.check_buf("p", true, &params[b], elems.iter().map(|x| x.p), &at)?;
                let (mm, v, v_max) = opt.moments(b).ok_or("no moments")?;
                stats.check_buf("m", uses_m, mm, elems.iter().map(|x| x.m), &at)?;
                stats.check_buf("v", uses_v, v, elems.iter().map(|x| x.v), &at)?;
                stats.check_buf(
                    "v_max",
                    uses_vmax,
                    v_max,
                    elems.iter().map(|x| x.v_max),
                    &at,
                )?;
                if lookahead {
                    let slow = opt.slow_weights(b).ok_or("no slow weights")?;
                    stats.check_buf("slow", true, slow, elems.iter().map(|x| x.s), &at)?;
                }
            }
        }
        if case.cfg.schedule_mode == ScheduleMode::Manual && rng.unit() < 0.5 {
            opt.step_schedule();
            for m in &mut model.models {
                m.step_schedule();
            }
        }
    }
    if let Some(n) = stats.per_base.get_mut(case.cfg.base.kind() as usize) {
        *n += 1;
    }
    let b = &mut stats.branches;
    for m in &model.models {
        b.clip_bound += m.branches.clip_bound;
        b.rectified += m.branches.rectified;
        b.unrectified += m.branches.unrectified;
        b.syncs += m.branches.syncs;
    }
    Ok(())
}
