// Kernels.cs: the stateless update functions and small kernels (no optimizer handle: the caller
// owns every state buffer) and the library-wide functions (version, SIMD tiers, statuses).
//
// The array overloads pin for the call only (fixed) and check that the arrays a C function
// reads with one length all have that length (LengthMismatchException); a null array is passed
// as NULL, so the library names it. The IntPtr overloads pass the pointers as they are.

using System;

namespace Flatopt
{
    /// <summary>Stateless optimizer steps and small kernels over caller-owned buffers.
    /// Nothing is written when one throws.</summary>
    public static unsafe class Kernels
    {
        private static int Len(float[] a)
        {
            return a == null ? 0 : a.Length;
        }

        // Every non-null array must have param's length (optional buffers may be null).
        private static void Same(float[] param, float[] other, string what)
        {
            if (param != null && other != null && other.Length != param.Length)
                throw Errors.Length(what + " (the length of param)", param.Length, other.Length);
        }

        /// <summary>Stateless SGD step: <paramref name="momentum"/> (null when hp.Momentum is 0)
        /// holds the momentum trace, <paramref name="slow"/> (null unless args.Sync) the
        /// Lookahead slow weights. hp.Kind must be Sgd.</summary>
        public static void SgdUpdate(BaseParams hp, StepArgs args, float[] param, float[] grad,
                                     float[] momentum, float[] slow)
        {
            Same(param, grad, "grad");
            Same(param, momentum, "momentum");
            Same(param, slow, "slow");
            fixed (float* p = param) fixed (float* g = grad) fixed (float* m = momentum) fixed (float* s = slow)
                Errors.Check(Native.flatopt_sgd_update(&hp, &args, p, g, m, s, (UIntPtr)(uint)Len(param)));
        }

        /// <summary>Stateless Adam step (AMSGrad if hp.Amsgrad: vMax required, else null).</summary>
        public static void AdamUpdate(BaseParams hp, StepArgs args, float[] param, float[] grad,
                                      float[] m, float[] v, float[] vMax, float[] slow)
        {
            Same(param, grad, "grad");
            Same(param, m, "m");
            Same(param, v, "v");
            Same(param, vMax, "v_max");
            Same(param, slow, "slow");
            fixed (float* p = param) fixed (float* g = grad) fixed (float* pm = m) fixed (float* pv = v)
            fixed (float* px = vMax) fixed (float* s = slow)
                Errors.Check(Native.flatopt_adam_update(&hp, &args, p, g, pm, pv, px, s, (UIntPtr)(uint)Len(param)));
        }

        /// <summary>Stateless AdamW step (hp.Kind must be AdamW).</summary>
        public static void AdamWUpdate(BaseParams hp, StepArgs args, float[] param, float[] grad,
                                       float[] m, float[] v, float[] slow)
        {
            TwoMoments(AdamW, hp, args, param, grad, m, v, slow);
        }

        /// <summary>Stateless RAdam step (hp.Kind must be RAdam).</summary>
        public static void RAdamUpdate(BaseParams hp, StepArgs args, float[] param, float[] grad,
                                       float[] m, float[] v, float[] slow)
        {
            TwoMoments(RAdam, hp, args, param, grad, m, v, slow);
        }

        /// <summary>Bits of <see cref="BaseStateBuffers"/>: the rule keeps m, v, v_max.</summary>
        public const uint StateM = (uint)Abi.StateM, StateV = (uint)Abi.StateV, StateVMax = (uint)Abi.StateVMax;

        /// <summary>Which state buffers the base rule hp keeps (StateM | StateV | StateVMax;
        /// 0 for plain SGD): those BaseUpdate requires.</summary>
        public static uint BaseStateBuffers(BaseParams hp)
        {
            uint mask;
            Errors.Check(Native.flatopt_base_state_buffers(&hp, out mask));
            return mask;
        }

        /// <summary>Fills the state buffers hp keeps with their values before the first step
        /// (as an optimizer's registration does); the others may be null. Each kept buffer has
        /// <paramref name="length"/> floats.</summary>
        public static void BaseStateInit(BaseParams hp, float[] m, float[] v, float[] vMax, int length)
        {
            Same(m, v, "v");
            Same(m ?? v, vMax, "v_max");
            float[] first = m ?? v ?? vMax;
            if (first != null && first.Length != length)
                throw Errors.Length("state (length)", length, first.Length);
            fixed (float* pm = m) fixed (float* pv = v) fixed (float* px = vMax)
                Errors.Check(Native.flatopt_base_state_init(&hp, pm, pv, px, (UIntPtr)(uint)length));
        }

        /// <summary>Stateless step of any base rule (hp.Kind) on caller-owned state: the
        /// buffers <see cref="BaseStateBuffers"/> names (started with BaseStateInit), slow when
        /// args.Sync. Bit-identical to an Optimizer step with the same scalars.</summary>
        public static void BaseUpdate(BaseParams hp, StepArgs args, float[] param, float[] grad,
                                      float[] m, float[] v, float[] vMax, float[] slow)
        {
            Same(param, grad, "grad");
            Same(param, m, "m");
            Same(param, v, "v");
            Same(param, vMax, "v_max");
            Same(param, slow, "slow");
            fixed (float* p = param) fixed (float* g = grad) fixed (float* pm = m) fixed (float* pv = v)
            fixed (float* px = vMax) fixed (float* s = slow)
                Errors.Check(Native.flatopt_base_update(&hp, &args, p, g, pm, pv, px, s, (UIntPtr)(uint)Len(param)));
        }

        // The C functions with the signature (hp, args, param, grad, m, v, slow, len), created
        // once (a call allocates nothing).
        private delegate Status TwoMomentRule(BaseParams* hp, StepArgs* args, float* p, float* g,
                                              float* m, float* v, float* slow, UIntPtr len);
        private static readonly TwoMomentRule AdamW = Native.flatopt_adamw_update;
        private static readonly TwoMomentRule RAdam = Native.flatopt_radam_update;

        private static void TwoMoments(TwoMomentRule rule, BaseParams hp, StepArgs args, float[] param,
                                       float[] grad, float[] m, float[] v, float[] slow)
        {
            Same(param, grad, "grad");
            Same(param, m, "m");
            Same(param, v, "v");
            Same(param, slow, "slow");
            fixed (float* p = param) fixed (float* g = grad) fixed (float* pm = m) fixed (float* pv = v)
            fixed (float* s = slow)
                Errors.Check(rule(&hp, &args, p, g, pm, pv, s, (UIntPtr)(uint)Len(param)));
        }

        /// <summary>Stateless Adam step over native buffers of <paramref name="length"/> floats
        /// (vMax and slow may be IntPtr.Zero when unused).</summary>
        public static void AdamUpdate(BaseParams hp, StepArgs args, IntPtr param, IntPtr grad,
                                      IntPtr m, IntPtr v, IntPtr vMax, IntPtr slow, long length)
        {
            Errors.Check(Native.flatopt_adam_update(&hp, &args, (float*)param, (float*)grad, (float*)m,
                (float*)v, (float*)vMax, (float*)slow, Size(length)));
        }

        /// <summary>Stateless SGD step over native buffers (momentum and slow may be IntPtr.Zero).</summary>
        public static void SgdUpdate(BaseParams hp, StepArgs args, IntPtr param, IntPtr grad,
                                     IntPtr momentum, IntPtr slow, long length)
        {
            Errors.Check(Native.flatopt_sgd_update(&hp, &args, (float*)param, (float*)grad,
                (float*)momentum, (float*)slow, Size(length)));
        }

        private static UIntPtr Size(long length)
        {
            if (length < 0)
                throw Errors.Invalid("len", length, "expected >= 0");
            return (UIntPtr)(ulong)length;
        }

        /// <summary>Sum of squares of x in f64, in the library's fixed order (NaN or Inf if x
        /// holds a non-finite value).</summary>
        public static double SumSquares(float[] x)
        {
            double r;
            fixed (float* p = x)
                Errors.Check(Native.flatopt_sum_squares(p, (UIntPtr)(uint)Len(x), out r));
            return r;
        }

        /// <summary>Elements per block of the fixed-order sum of squares.</summary>
        public static long SumSquaresBlockSize
        {
            get { return (long)(ulong)Native.flatopt_sum_squares_block_size(); }
        }

        /// <summary>Block partial sums of squares of x (partials.Length must be
        /// ceil(x.Length / SumSquaresBlockSize)).</summary>
        public static void SumSquaresPartials(float[] x, double[] partials)
        {
            fixed (float* p = x) fixed (double* d = partials)
                Errors.Check(Native.flatopt_sum_squares_partials(p, (UIntPtr)(uint)Len(x), d,
                    (UIntPtr)(uint)(partials == null ? 0 : partials.Length)));
        }

        /// <summary>The global-norm clip factor min(1, maxNorm / sqrt(sumSquares)).</summary>
        public static double ClipScale(double sumSquares, double maxNorm)
        {
            double r;
            Errors.Check(Native.flatopt_clip_scale(sumSquares, maxNorm, out r));
            return r;
        }

        /// <summary>Clamps every element of x to [-c, c] in place.</summary>
        public static void ClipByValue(float[] x, float c)
        {
            fixed (float* p = x)
                Errors.Check(Native.flatopt_clip_by_value(p, (UIntPtr)(uint)Len(x), c));
        }

        /// <summary>Multiplies every element of x by s in place.</summary>
        public static void Scale(float[] x, float s)
        {
            fixed (float* p = x)
                Errors.Check(Native.flatopt_scale(p, (UIntPtr)(uint)Len(x), s));
        }

        /// <summary>Lookahead sync: slow += alpha * (fast - slow), then fast = slow.</summary>
        public static void LookaheadSync(float[] fast, float[] slow, float alpha)
        {
            Same(fast, slow, "slow");
            fixed (float* f = fast) fixed (float* s = slow)
                Errors.Check(Native.flatopt_lookahead_sync(f, s, (UIntPtr)(uint)Len(fast), alpha));
        }
    }

    /// <summary>Library-wide functions: version, SIMD tiers, status names.</summary>
    public static class Library
    {
        /// <summary>The loaded library's version string, e.g. "0.2.0".</summary>
        public static string Version
        {
            get { return Native.Utf8(Native.flatopt_version()); }
        }

        /// <summary>The loaded library's version as major * 10000 + minor * 100 + patch.</summary>
        public static long VersionNumber
        {
            get { return Native.flatopt_version_number(); }
        }

        /// <summary>The process-wide default SIMD tier (used by optimizers created afterwards
        /// and by the stateless kernels).</summary>
        public static SimdTier DefaultSimdTier
        {
            get { return (SimdTier)Native.flatopt_default_simd_tier(); }
            set { Errors.Check(Native.flatopt_set_default_simd_tier((uint)value)); }
        }

        /// <summary>True if the tier can run in this build on this CPU.</summary>
        public static bool IsSimdTierAvailable(SimdTier tier)
        {
            return Native.flatopt_simd_tier_available((uint)tier) == 1;
        }

        /// <summary>"scalar", "portable", "avx2", "avx512", "default" for 0, else "unknown".</summary>
        public static string SimdTierName(SimdTier tier)
        {
            return Native.Utf8(Native.flatopt_simd_tier_name((uint)tier));
        }

        /// <summary>The library's short description of a status code.</summary>
        public static string StatusString(Status status)
        {
            return Native.Utf8(Native.flatopt_status_str((int)status));
        }

        /// <summary>The calling thread's last error message ("" if none).</summary>
        public static string LastErrorMessage
        {
            get { return Native.Utf8(Native.flatopt_last_error_message()); }
        }
    }
}
