// Structs.cs: the enums, constants and versioned structs of include/flatopt.h, mirrored field by
// field ([StructLayout(LayoutKind.Sequential)], the C types' sizes: uint32_t -> uint,
// uint64_t -> ulong, size_t -> UIntPtr, pointers -> IntPtr). Field names are the C names in
// PascalCase (struct_size -> StructSize); enum members are the C constants without their
// prefix, in PascalCase, unless a [CName] says otherwise. The test program compares every size,
// offset, enum value and constant with a C program compiled from the header
// (bindings/csharp/test/gen_layout.py), both ways, so the mirror cannot drift silently.
//
// Create each struct with its Init function (the C _init defaults), then change fields.

using System;
using System.Runtime.InteropServices;

namespace Flatopt
{
    /// <summary>Names the C declaration a C# type or member mirrors: for an enum, the C enum
    /// name and the prefix its constants carry; for a member, its C name where the PascalCase
    /// rule does not give it.</summary>
    [AttributeUsage(AttributeTargets.All, AllowMultiple = false)]
    public sealed class CNameAttribute : Attribute
    {
        public string Name { get; private set; }
        public string Prefix { get; private set; }

        public CNameAttribute(string name, string prefix = "")
        {
            Name = name;
            Prefix = prefix;
        }
    }

    /// <summary>The #define constants of the header this binding was written against.</summary>
    public static class Abi
    {
        public const long VersionMajor = 0;
        public const long VersionMinor = 2;
        public const long VersionPatch = 0;
        public const long VersionNumber = 200;
        /// <summary>Frozen sizes of the first version of each versioned struct (the smallest
        /// struct_size the library accepts).</summary>
        public const long BaseParamsSizeV1 = 64;
        public const long BaseParamsSizeV2 = 96;
        public const long BaseParamsSizeV3 = 112;
        public const long BaseParamsSizeV4 = 160;
        public const long BaseParamsSizeV5 = 168;
        public const long BaseParamsSizeV6 = 216;
        public const long ScheduleSizeV1 = 248;
        public const long ConfigSizeV1 = 88;
        public const long ConfigSizeV2 = 120;
        public const long GroupOptionsSizeV1 = 32;
        public const long ParamOptionsSizeV1 = 32;
        public const long ParamOptionsSizeV2 = 48;
        public const long LossScalerOptionsSizeV1 = 24;
        public const long StepArgsSizeV1 = 56;
        /// <summary>Bits of flatopt_base_state_buffers' mask (see Kernels.BaseStateBuffers).</summary>
        public const long StateM = 1, StateV = 2, StateVMax = 4;
    }

    /// <summary>flatopt_base_kind: the base optimizer.</summary>
    [CName("flatopt_base_kind", "FLATOPT_")]
    public enum BaseKind : uint
    {
        /// <summary>SGD: plain, heavy-ball momentum (with dampening) or Nesterov.</summary>
        Sgd = 0,
        /// <summary>Adam, optionally AMSGrad.</summary>
        Adam = 1,
        /// <summary>AdamW: Adam with decoupled weight decay.</summary>
        [CName("FLATOPT_ADAMW")] AdamW = 2,
        /// <summary>RAdam (rectification threshold 5).</summary>
        [CName("FLATOPT_RADAM")] RAdam = 3,
        /// <summary>Adagrad (PyTorch's; optax's with InitialAccumulator 0.1, Eps 1e-7,
        /// EpsInsideSqrt 1).</summary>
        Adagrad = 4,
        /// <summary>RMSprop, optionally with momentum and centered (PyTorch's; optax's with
        /// Alpha 0.9, EpsInsideSqrt 1).</summary>
        [CName("FLATOPT_RMSPROP")] RmsProp = 5,
        /// <summary>Adamax (PyTorch's; optax's with EpsOutsideMax 1).</summary>
        Adamax = 6,
        /// <summary>NAdam with PyTorch's momentum schedule (MomentumDecay); optax's with
        /// ConstantMomentum 1.</summary>
        [CName("FLATOPT_NADAM")] NAdam = 7,
        /// <summary>Lion (optax's; DecoupledWeightDecay is its weight decay).</summary>
        Lion = 8,
        /// <summary>AdaBelief (optax's).</summary>
        [CName("FLATOPT_ADABELIEF")] AdaBelief = 9,
        /// <summary>Yogi (optax's; both moments from InitialAccumulator).</summary>
        Yogi = 10,
        /// <summary>Adadelta (PyTorch's).</summary>
        Adadelta = 11,
        /// <summary>Rprop (PyTorch's; the first step's learning rate is the initial step
        /// size).</summary>
        Rprop = 12,
        /// <summary>LAMB (optax's; a trust ratio per registered buffer).</summary>
        Lamb = 13,
        /// <summary>LARS (optax's; a trust ratio per registered buffer).</summary>
        Lars = 14,
        /// <summary>NovoGrad (optax's; a second moment per registered buffer).</summary>
        Novograd = 15,
        /// <summary>Adafactor (PyTorch's by default; factored second moments for buffers
        /// registered with a shape, ParamOptions.Rows and Cols).</summary>
        Adafactor = 16,
    }

    /// <summary>flatopt_schedule_kind: the learning-rate schedule (formulas in docs and the C
    /// header).</summary>
    [CName("flatopt_schedule_kind", "FLATOPT_SCHEDULE_")]
    public enum ScheduleKind : uint
    {
        Fixed = 0,
        Constant = 1,
        Linear = 2,
        Step = 3,
        MultiStep = 4,
        Exponential = 5,
        ExponentialDecay = 6,
        CosineAnnealing = 7,
        CosineWarmRestarts = 8,
        Polynomial = 9,
        Warmup = 10,
        WarmupCosine = 11,
        OneCycle = 12,
        Cyclic = 13,
        PiecewiseConstant = 14,
        ReduceOnPlateau = 15,
    }

    /// <summary>flatopt_nonfinite: what a NaN/Inf gradient does.</summary>
    [CName("flatopt_nonfinite", "FLATOPT_NONFINITE_")]
    public enum NonFinite : uint
    {
        /// <summary>Skip the update, count it; the step returns false (default).</summary>
        Skip = 0,
        /// <summary>Skip the update, count it, throw NonFiniteException.</summary>
        Error = 1,
        /// <summary>No check: NaN and Inf flow into the parameters.</summary>
        Propagate = 2,
    }

    /// <summary>flatopt_state_dtype: how optimizer state is held.</summary>
    [CName("flatopt_state_dtype", "FLATOPT_STATE_")]
    public enum StateDtype : uint
    {
        /// <summary>f32, 4 bytes per element and state buffer (default).</summary>
        Float32 = 0,
        /// <summary>bf16, 2 bytes per element and state buffer.</summary>
        Bfloat16 = 1,
        /// <summary>The 8-bit blockwise code: 1 byte per element, one f32 scale per 256.</summary>
        Int8 = 2,
    }

    /// <summary>flatopt_state_rounding: how f32 values are rounded into bfloat16 state.</summary>
    [CName("flatopt_state_rounding", "FLATOPT_ROUNDING_")]
    public enum StateRounding : uint
    {
        /// <summary>Deterministic stochastic rounding (default).</summary>
        Stochastic = 0,
        /// <summary>Round to nearest, ties to even.</summary>
        Nearest = 1,
    }

    /// <summary>flatopt_simd_tier. Default (0) means "the process default" where it is an input.</summary>
    [CName("flatopt_simd_tier", "FLATOPT_SIMD_")]
    public enum SimdTier : uint
    {
        Default = 0,
        Scalar = 1,
        Portable = 2,
        Avx2 = 3,
        Avx512 = 4,
    }

    /// <summary>flatopt_dtype: element formats of gradients and parameter copies (16-bit
    /// values as ushort bit patterns).</summary>
    [CName("flatopt_dtype", "FLATOPT_DTYPE_")]
    public enum Dtype : uint
    {
        /// <summary>IEEE binary32; as a copy format: no copy.</summary>
        F32 = 0,
        /// <summary>bfloat16.</summary>
        Bf16 = 1,
        /// <summary>IEEE binary16 (fp16).</summary>
        F16 = 2,
    }

    /// <summary>flatopt_param_options: a buffer's gradient format, parameter group and
    /// optional 16-bit copy of its parameters (flatopt_optimizer_add_param_with_options).</summary>
    [CName("flatopt_param_options")]
    [StructLayout(LayoutKind.Sequential)]
    public struct ParamOptions
    {
        /// <summary>Set by Init (ABI versioning); leave it.</summary>
        public uint StructSize;
        public Dtype GradDtype;
        public UIntPtr Group;
        /// <summary>The 16-bit copy (pinned by the caller), IntPtr.Zero for none.</summary>
        public IntPtr Copy;
        public Dtype CopyDtype;
        /// <summary>Reserved, must be 0.</summary>
        public uint Reserved;
        /// <summary>The buffer's 2-D shape (rows x cols, row-major; 0 and 0: none): Adafactor
        /// keeps factored second moments for it.</summary>
        public UIntPtr Rows;
        /// <summary>The shape's columns.</summary>
        public UIntPtr Cols;

        /// <summary>The defaults (flatopt_param_options_init): f32 gradients, group 0, no
        /// copy.</summary>
        public static unsafe ParamOptions Init()
        {
            ParamOptions o = default(ParamOptions);
            Errors.Check(Native.flatopt_param_options_init(&o, (UIntPtr)sizeof(ParamOptions)));
            return o;
        }
    }

    /// <summary>flatopt_loss_scaler_options: the dynamic loss scaler (PyTorch GradScaler's
    /// rules and defaults).</summary>
    [CName("flatopt_loss_scaler_options")]
    [StructLayout(LayoutKind.Sequential)]
    public struct LossScalerOptions
    {
        /// <summary>Set by Init (ABI versioning); leave it.</summary>
        public uint StructSize;
        public uint GrowthInterval;
        public float InitScale;
        public float GrowthFactor;
        public float BackoffFactor;
        /// <summary>Reserved, must be 0.</summary>
        public uint Reserved;

        /// <summary>The defaults (flatopt_loss_scaler_options_init): 65536, x2 every 2000
        /// finite updates, x0.5 on a non-finite one.</summary>
        public static unsafe LossScalerOptions Init()
        {
            LossScalerOptions o = default(LossScalerOptions);
            Errors.Check(Native.flatopt_loss_scaler_options_init(&o, (UIntPtr)sizeof(LossScalerOptions)));
            return o;
        }
    }

    /// <summary>flatopt_base_params: the base optimizer and its hyperparameters.</summary>
    [CName("flatopt_base_params")]
    [StructLayout(LayoutKind.Sequential)]
    public struct BaseParams
    {
        /// <summary>Set by Init (ABI versioning); leave it.</summary>
        public uint StructSize;
        public BaseKind Kind;
        /// <summary>SGD: momentum in [0, 1) (0: plain SGD).</summary>
        public double Momentum;
        /// <summary>SGD: dampening in [0, 1].</summary>
        public double Dampening;
        /// <summary>SGD: 1 for Nesterov momentum.</summary>
        public uint Nesterov;
        /// <summary>Adam: 1 for AMSGrad.</summary>
        public uint Amsgrad;
        public double B1;
        public double B2;
        public double Eps;
        /// <summary>AdamW: decoupled weight decay.</summary>
        public double DecoupledWeightDecay;
        /// <summary>Adagrad: learning-rate decay (step t uses lr / (1 + (t - 1) * lr_decay)).</summary>
        public double LrDecay;
        /// <summary>Adagrad, RMSprop: the initial sum of squares / squared average.</summary>
        public double InitialAccumulator;
        /// <summary>RMSprop: smoothing constant in [0, 1).</summary>
        public double Alpha;
        /// <summary>RMSprop: 1 for the centered form.</summary>
        public uint Centered;
        /// <summary>Adagrad, RMSprop: 1 for eps inside the square root (optax).</summary>
        public uint EpsInsideSqrt;
        /// <summary>NAdam: psi of the momentum schedule mu_t = b1*(1 - 0.5*0.96^(t*psi)).</summary>
        public double MomentumDecay;
        /// <summary>Adamax: 1 for eps after the maximum (optax).</summary>
        public uint EpsOutsideMax;
        /// <summary>NAdam: 1 for mu_t = b1 at every step (optax).</summary>
        public uint ConstantMomentum;
        /// <summary>AdaBelief: added to the belief at every step.</summary>
        public double EpsRoot;
        /// <summary>Adadelta: decay of both running averages.</summary>
        public double Rho;
        /// <summary>Rprop: step-size factor after a sign change, in (0, 1).</summary>
        public double EtaMinus;
        /// <summary>Rprop: step-size factor while the sign holds, &gt; 1.</summary>
        public double EtaPlus;
        /// <summary>Rprop: lower bound of the step sizes.</summary>
        public double MinStepSize;
        /// <summary>Rprop: upper bound of the step sizes.</summary>
        public double MaxStepSize;
        /// <summary>LARS: multiplier of the trust ratio, &gt; 0.</summary>
        public double TrustCoefficient;
        /// <summary>Adafactor: exponent of the second-moment decay, &gt;= 0.</summary>
        public double DecayRate;
        /// <summary>Adafactor: steps subtracted from the count in the decay.</summary>
        public double DecayOffset;
        /// <summary>Adafactor: floor of the parameters' RMS in the parameter scale.</summary>
        public double EpsScale;
        /// <summary>Adafactor: threshold of the update's RMS (NaN: no clipping).</summary>
        public double ClippingThreshold;
        /// <summary>Adafactor: 1 to scale the step by the parameters' RMS.</summary>
        public uint MultiplyByParameterScale;
        /// <summary>Adafactor: 1 to cap the learning rate at 1/sqrt(t).</summary>
        public uint RelativeStep;
        /// <summary>Adafactor: 1 to multiply the weight decay by the learning rate.</summary>
        public uint WeightDecayByLr;
        /// <summary>Reserved, must be 0.</summary>
        public uint Reserved;

        /// <summary>The defaults of <paramref name="kind"/> (flatopt_base_params_init).</summary>
        public static unsafe BaseParams Init(BaseKind kind)
        {
            BaseParams p = default(BaseParams);
            Errors.Check(Native.flatopt_base_params_init(&p, (UIntPtr)sizeof(BaseParams), (uint)kind));
            return p;
        }
    }

    /// <summary>flatopt_schedule: a learning-rate schedule; <see cref="Kind"/> picks the formula,
    /// which reads the fields it names. Milestones and values are passed to the Optimizer
    /// constructor (copied by the library).</summary>
    [CName("flatopt_schedule")]
    [StructLayout(LayoutKind.Sequential)]
    public struct Schedule
    {
        public uint StructSize;
        public ScheduleKind Kind;
        public double BaseLr;
        public double MaxLr;
        public double Gamma;
        public double Factor;
        public double StartFactor;
        public double EndFactor;
        public double EtaMin;
        public double Power;
        public double StartLr;
        public double DecayRate;
        public double EndValue;
        public double PctStart;
        public double DivFactor;
        public double FinalDivFactor;
        public double Threshold;
        public double MinLr;
        public ulong Period;
        public ulong TMult;
        public ulong Warmup;
        public ulong StepSizeUp;
        public ulong StepSizeDown;
        public ulong Patience;
        public ulong Cooldown;
        public uint Staircase;
        public uint AnnealLinear;
        public uint CyclicMode;
        public uint PlateauMode;
        public uint ThresholdMode;
        // Set by the Optimizer constructor from its milestones / values arguments.
        internal IntPtr Milestones;
        internal UIntPtr NMilestones;
        internal IntPtr Values;
        internal UIntPtr NValues;

        /// <summary>The defaults of <paramref name="kind"/> (flatopt_schedule_init).</summary>
        public static unsafe Schedule Init(ScheduleKind kind)
        {
            Schedule s = default(Schedule);
            Errors.Check(Native.flatopt_schedule_init(&s, (UIntPtr)sizeof(Schedule), (uint)kind));
            return s;
        }
    }

    /// <summary>flatopt_config: the optimizer configuration (the base optimizer and the schedule
    /// are passed to the Optimizer constructor beside it).</summary>
    [CName("flatopt_config")]
    [StructLayout(LayoutKind.Sequential)]
    public struct Config
    {
        public uint StructSize;
        public NonFinite Nonfinite;
        // Set by the Optimizer constructor from its baseParams argument (a pointer to it).
        internal IntPtr Base;
        /// <summary>Constant learning rate (used without a schedule).</summary>
        public double Lr;
        // Set by the Optimizer constructor from its schedule argument.
        internal IntPtr Schedule;
        /// <summary>1: the schedule advances only through ScheduleStep (epoch style).</summary>
        public uint ScheduleManual;
        /// <summary>1 to wrap the base optimizer in Lookahead.</summary>
        public uint Lookahead;
        public ulong SyncPeriod;
        public double Alpha;
        /// <summary>Coupled weight decay (g += wd * p).</summary>
        public double WeightDecay;
        /// <summary>Clip by global norm over all buffers; 0 disables.</summary>
        public double GradClipNorm;
        /// <summary>Clip each gradient element to [-c, c]; 0 disables.</summary>
        public double GradClipValue;
        /// <summary>1 runs on the caller's thread; more starts a private pool.</summary>
        public uint NumThreads;
        public SimdTier SimdTier;
        /// <summary>How the moments are held (default Float32).</summary>
        public StateDtype StateDtype;
        /// <summary>How bfloat16 state is rounded (default Stochastic).</summary>
        public StateRounding StateRounding;
        /// <summary>The seed of stochastic rounding.</summary>
        public ulong StateSeed;
        /// <summary>The index of this optimizer's first element in the whole model (shards).</summary>
        public ulong StateIndexOffset;
        /// <summary>How the Lookahead slow weights are held: Float32 (default) or Bfloat16.</summary>
        public StateDtype SlowDtype;
        /// <summary>Reserved, must be 0.</summary>
        public uint Reserved;

        /// <summary>The defaults (flatopt_config_init): Adam at lr 1e-3, no Lookahead, no
        /// clipping, skip non-finite updates, one thread, default SIMD tier.</summary>
        public static unsafe Config Init()
        {
            Config c = default(Config);
            Errors.Check(Native.flatopt_config_init(&c, (UIntPtr)sizeof(Config)));
            return c;
        }
    }

    /// <summary>flatopt_group_options: the hyperparameters of a parameter group
    /// (<see cref="Optimizer.AddGroup(GroupOptions)"/>). Init makes every field inherit the
    /// optimizer's; set the ones the group changes. The group's own base-rule hyperparameters
    /// (betas, eps, momentum, ...) are passed to AddGroup beside it.</summary>
    [CName("flatopt_group_options")]
    [StructLayout(LayoutKind.Sequential)]
    public struct GroupOptions
    {
        /// <summary>Set by Init (ABI versioning); leave it.</summary>
        public uint StructSize;
        /// <summary>Reserved, must be 0.</summary>
        public uint Reserved;
        /// <summary>The group's learning rate, >= 0; NaN (the default): the optimizer's. Under
        /// a schedule the group follows lr * schedule(t) / base_lr, as PyTorch's schedulers
        /// scale each group's initial learning rate.</summary>
        public double Lr;
        /// <summary>The group's weight decay as the base rule defines it (AdamW: decoupled,
        /// the others: coupled), >= 0, 0 turns it off; NaN (the default): the optimizer's.</summary>
        public double WeightDecay;
        // Set by Optimizer.AddGroup from its baseParams argument (a pointer to it).
        internal IntPtr Base;

        /// <summary>The defaults (flatopt_group_options_init): everything the optimizer's.</summary>
        public static unsafe GroupOptions Init()
        {
            GroupOptions o = default(GroupOptions);
            Errors.Check(Native.flatopt_group_options_init(&o, (UIntPtr)sizeof(GroupOptions)));
            return o;
        }
    }

    /// <summary>flatopt_step_args: per-step arguments of the stateless kernels.</summary>
    [CName("flatopt_step_args")]
    [StructLayout(LayoutKind.Sequential)]
    public struct StepArgs
    {
        public uint StructSize;
        /// <summary>1 to run the Lookahead sync after the update (needs the slow buffer).</summary>
        public uint Sync;
        /// <summary>1-based number of this base-optimizer step.</summary>
        public ulong Step;
        public double Lr;
        public double ClipScale;
        public double ClipValue;
        public double WeightDecay;
        public double Alpha;

        /// <summary>The defaults (flatopt_step_args_init): step 1, lr 1e-3, no clipping, no
        /// decay, no sync.</summary>
        public static unsafe StepArgs Init()
        {
            StepArgs a = default(StepArgs);
            Errors.Check(Native.flatopt_step_args_init(&a, (UIntPtr)sizeof(StepArgs)));
            return a;
        }
    }
}
