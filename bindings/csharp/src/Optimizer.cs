// Optimizer.cs: the flatopt optimizer over host-owned float buffers.
//
// Buffer rule: the library keeps the addresses of registered parameter and gradient buffers and
// writes / reads them at every step, so they must not move or be freed while the optimizer holds
// them. AddParam(float[], float[]) pins both arrays (GCHandle, pinned) until the optimizer is
// disposed or finalized; AddParam(IntPtr, IntPtr, long) is for memory that does not move anyway
// (Unity NativeArray<float>, Marshal.AllocHGlobal, stackalloc'd by a caller that outlives the
// optimizer): the caller keeps it alive and in place until Dispose.
//
// Steps allocate nothing on the managed heap: Step, StepWithGrads, StepWithSumSquares,
// SumSquaresPartials, BeginStep / StepRange / EndStep and the queries return values or fill
// caller-owned arrays; only a failing call allocates (its exception).

using System;
using System.Collections.Generic;
using System.Runtime.InteropServices;

namespace Flatopt
{
    /// <summary>The counters a checkpoint holds (Optimizer.CheckpointInfo).</summary>
    public struct CheckpointInfo
    {
        /// <summary>Applied updates.</summary>
        public readonly long StepCount;
        /// <summary>Updates skipped for non-finite gradients.</summary>
        public readonly long SkippedCount;
        /// <summary>The learning rate the next update would use.</summary>
        public readonly float CurrentLr;

        public CheckpointInfo(long stepCount, long skippedCount, float currentLr)
        {
            StepCount = stepCount;
            SkippedCount = skippedCount;
            CurrentLr = currentLr;
        }
    }

    /// <summary>An optimizer (SGD / Adam / AdamW / RAdam, optionally Lookahead, clipping, weight
    /// decay, a learning-rate schedule) applying fused updates in place to registered buffers.
    /// One optimizer, one thread at a time, except StepRange between BeginStep and EndStep.</summary>
    public sealed unsafe class Optimizer : IDisposable
    {
        private readonly OptimizerHandle handle;
        // Registered lengths, for the binding's checks of per-call float[] gradients.
        private readonly List<int> lengths = new List<int>();
        private static int versionChecked;

        /// <summary>An optimizer with a constant learning rate (config.Lr).</summary>
        public Optimizer(Config config, BaseParams baseParams)
            : this(config, baseParams, null, null, null)
        {
        }

        /// <summary>An optimizer. <paramref name="schedule"/> (null: the constant config.Lr)
        /// reads <paramref name="milestones"/> (MultiStep milestones, PiecewiseConstant
        /// boundaries) and <paramref name="values"/> (PiecewiseConstant learning rates); the
        /// library copies all three. Validation errors name the first bad field.</summary>
        public Optimizer(Config config, BaseParams baseParams, Schedule? schedule,
                         ulong[] milestones = null, double[] values = null)
        {
            CheckVersion();
            config.Base = (IntPtr)(&baseParams); // a local copy: read by flatopt_optimizer_new
            Schedule s = schedule.GetValueOrDefault();
            OptimizerHandle h;
            Status st;
            fixed (ulong* ms = milestones)
            fixed (double* vs = values)
            {
                if (schedule.HasValue)
                {
                    s.Milestones = (IntPtr)ms;
                    s.NMilestones = (UIntPtr)(uint)(milestones == null ? 0 : milestones.Length);
                    s.Values = (IntPtr)vs;
                    s.NValues = (UIntPtr)(uint)(values == null ? 0 : values.Length);
                    config.Schedule = (IntPtr)(&s);
                }
                else
                {
                    config.Schedule = IntPtr.Zero;
                }
                st = Native.flatopt_optimizer_new(&config, out h);
            }
            if (st != Status.Ok)
            {
                FlatoptException e = Errors.FromLast(st);
                h.Dispose();
                throw e;
            }
            handle = h;
        }

        /// <summary>The SafeHandle (for callers passing it to their own P/Invoke declarations).</summary>
        public OptimizerHandle Handle { get { return handle; } }

        /// <summary>Frees the native optimizer and unpins the registered arrays (deferred by the
        /// runtime until no call is using the handle).</summary>
        public void Dispose()
        {
            handle.Dispose();
        }

        private static void CheckVersion()
        {
            if (versionChecked != 0)
                return;
            uint v = Native.flatopt_version_number();
            if (v / 100 != Abi.VersionNumber / 100)
                throw new UnsupportedException(string.Format(
                    "unsupported: libflatopt {0} is loaded but this binding was written for {1}.{2}.x",
                    Native.Utf8(Native.flatopt_version()), Abi.VersionMajor, Abi.VersionMinor));
            versionChecked = 1;
        }

        // ------------------------------------------------------------------------------------
        // Registration

        /// <summary>Registers a parameter array and its gradient array (null if every step
        /// passes gradients with StepWithGrads). Both are pinned until Dispose. Allowed before
        /// the first step and after Reset; resets counters and schedule like Reset.</summary>
        public void AddParam(float[] param, float[] grad)
        {
            AddPinned(param, grad, NoGroup);
        }

        /// <summary>As <see cref="AddParam(float[], float[])"/>, into parameter group
        /// <paramref name="group"/> (from <see cref="AddGroup(GroupOptions)"/>; 0 is the
        /// optimizer's own).</summary>
        public void AddParam(float[] param, float[] grad, int group)
        {
            CheckGroup(group);
            AddPinned(param, grad, group);
        }

        /// <summary>Registers native memory of <paramref name="length"/> floats that the caller
        /// keeps in place and alive until Dispose (NativeArray, AllocHGlobal). grad may be
        /// IntPtr.Zero (gradients passed per step).</summary>
        public void AddParam(IntPtr param, IntPtr grad, long length)
        {
            AddNative(param, grad, length, NoGroup);
        }

        /// <summary>As <see cref="AddParam(IntPtr, IntPtr, long)"/>, into parameter group
        /// <paramref name="group"/>.</summary>
        public void AddParam(IntPtr param, IntPtr grad, long length, int group)
        {
            CheckGroup(group);
            AddNative(param, grad, length, group);
        }

        /// <summary>As <see cref="AddParam(float[], float[], int)"/> with the array's 2-D shape
        /// <paramref name="rows"/> x <paramref name="cols"/> (row-major; the array is
        /// length / (rows * cols) such matrices; flatopt_param_options.rows / .cols): Adafactor
        /// keeps factored second moments for it (rows + cols averages per matrix), the other
        /// rules ignore the shape. Throws InvalidArgument (nothing registered) when rows or cols
        /// is 0 or rows * cols does not divide the length.</summary>
        public void AddParamShaped(float[] param, float[] grad, long rows, long cols, int group = 0)
        {
            CheckGroup(group);
            if (rows < 1 || cols < 1)
                throw Errors.Invalid("shape", "(" + rows + ", " + cols + ")", "rows and cols must be >= 1");
            AddPinned(param, grad, group, (ulong)rows, (ulong)cols);
        }

        // AddParam without a group: flatopt_optimizer_add_param.
        private const int NoGroup = -1;

        private Status Register(IntPtr param, IntPtr grad, UIntPtr length, int group)
        {
            return group == NoGroup
                ? Native.flatopt_optimizer_add_param(handle, param, grad, length)
                : Native.flatopt_optimizer_add_param_to_group(handle, (UIntPtr)(uint)group, param, grad, length);
        }

        // With a shape: flatopt_optimizer_add_param_with_options.
        private Status RegisterShaped(IntPtr param, IntPtr grad, UIntPtr length, int group,
                                      ulong rows, ulong cols)
        {
            ParamOptions o = ParamOptions.Init();
            o.Group = (UIntPtr)(uint)group;
            o.Rows = (UIntPtr)rows;
            o.Cols = (UIntPtr)cols;
            return Native.flatopt_optimizer_add_param_with_options(handle, (float*)param, (void*)grad,
                length, &o);
        }

        private void AddPinned(float[] param, float[] grad, int group, ulong rows = 0, ulong cols = 0)
        {
            if (param == null)
                throw new NullPointerException("null pointer: param must not be NULL");
            if (grad != null && grad.Length != param.Length)
                throw Errors.Length("grad of the registered param", param.Length, grad.Length);
            IntPtr p = handle.Pin(param);
            IntPtr g = handle.Pin(grad);
            int pinned = grad != null ? 2 : 1;
            Status st = rows == 0 && cols == 0
                ? Register(p, g, (UIntPtr)(uint)param.Length, group)
                : RegisterShaped(p, g, (UIntPtr)(uint)param.Length, group, rows, cols);
            if (st != Status.Ok)
            {
                FlatoptException e = Errors.FromLast(st);
                handle.UnpinLast(pinned);
                throw e;
            }
            lengths.Add(param.Length);
        }

        private void AddNative(IntPtr param, IntPtr grad, long length, int group)
        {
            if (length < 0 || length > int.MaxValue)
                throw Errors.Invalid("length", length, "expected 0 to 2^31 - 1 floats");
            Errors.Check(Register(param, grad, (UIntPtr)(ulong)length, group));
            lengths.Add((int)length);
        }

        // ------------------------------------------------------------------------------------
        // Parameter groups

        /// <summary>Adds a parameter group whose fields of <paramref name="options"/> that are
        /// not NaN replace the optimizer's (its learning rate and weight decay), and returns its
        /// id (1, 2, ...; group 0 is the optimizer's own configuration). Register buffers into
        /// it with AddParam(..., group). Clipping by global norm, the non-finite check,
        /// Lookahead and the step counter stay global. Allowed at any time but between BeginStep
        /// and EndStep.</summary>
        public int AddGroup(GroupOptions options)
        {
            return AddGroup(options, null);
        }

        /// <summary>As <see cref="AddGroup(GroupOptions)"/>, with the group's own base-rule
        /// hyperparameters (betas, eps, momentum, ...; of the optimizer's kind; null: the
        /// optimizer's). The library copies them.</summary>
        public int AddGroup(GroupOptions options, BaseParams? baseParams)
        {
            BaseParams b = baseParams.GetValueOrDefault();
            options.Base = baseParams.HasValue ? (IntPtr)(&b) : IntPtr.Zero; // read by the call only
            UIntPtr group;
            Errors.Check(Native.flatopt_optimizer_add_group(handle, &options, out group));
            return (int)(ulong)group;
        }

        /// <summary>The number of parameter groups (at least 1: group 0, the optimizer's own).</summary>
        public int NumGroups
        {
            get { UIntPtr n; Errors.Check(Native.flatopt_optimizer_num_groups(handle, out n)); return (int)(ulong)n; }
        }

        /// <summary>The parameter group of registered buffer <paramref name="index"/>
        /// (registration order).</summary>
        public int ParamGroup(int index)
        {
            if (index < 0)
                throw Errors.Invalid("index", index, "expected >= 0");
            UIntPtr g;
            Errors.Check(Native.flatopt_optimizer_param_group(handle, (UIntPtr)(uint)index, out g));
            return (int)(ulong)g;
        }

        /// <summary>Group <paramref name="group"/>'s own learning rate; NaN when it follows the
        /// optimizer's.</summary>
        public double GroupLr(int group)
        {
            CheckGroup(group);
            double lr;
            Errors.Check(Native.flatopt_optimizer_group_lr(handle, (UIntPtr)(uint)group, out lr));
            return lr;
        }

        /// <summary>Sets group <paramref name="group"/>'s learning rate (NaN: follow the
        /// optimizer's again); the next step uses it. Allocates nothing: call it between steps
        /// as PyTorch's schedulers write a group's lr.</summary>
        public void SetGroupLr(int group, double lr)
        {
            CheckGroup(group);
            Errors.Check(Native.flatopt_optimizer_set_group_lr(handle, (UIntPtr)(uint)group, lr));
        }

        /// <summary>The learning rate group <paramref name="group"/> uses in the next step (its
        /// rate scaled by the schedule, as the kernels use it).</summary>
        public float GroupCurrentLr(int group)
        {
            CheckGroup(group);
            float lr;
            Errors.Check(Native.flatopt_optimizer_group_current_lr(handle, (UIntPtr)(uint)group, out lr));
            return lr;
        }

        /// <summary><see cref="GroupCurrentLr"/> before its rounding to float: the schedule's
        /// value times the group's ratio, in double.</summary>
        public double GroupCurrentLrExact(int group)
        {
            CheckGroup(group);
            double lr;
            Errors.Check(Native.flatopt_optimizer_group_current_lr_exact(handle, (UIntPtr)(uint)group, out lr));
            return lr;
        }

        /// <summary>Group <paramref name="group"/>'s weight decay as the base rule defines it.</summary>
        public double GroupWeightDecay(int group)
        {
            CheckGroup(group);
            double wd;
            Errors.Check(Native.flatopt_optimizer_group_weight_decay(handle, (UIntPtr)(uint)group, out wd));
            return wd;
        }

        /// <summary>Sets group <paramref name="group"/>'s weight decay (>= 0, 0 for none); the
        /// next step uses it. Allocates nothing.</summary>
        public void SetGroupWeightDecay(int group, double weightDecay)
        {
            CheckGroup(group);
            Errors.Check(Native.flatopt_optimizer_set_group_weight_decay(handle, (UIntPtr)(uint)group, weightDecay));
        }

        /// <summary>Group <paramref name="group"/>'s base-rule hyperparameters.</summary>
        public BaseParams GroupBaseParams(int group)
        {
            CheckGroup(group);
            BaseParams p = default(BaseParams);
            Errors.Check(Native.flatopt_optimizer_group_base_params(handle, (UIntPtr)(uint)group, &p, (UIntPtr)sizeof(BaseParams)));
            return p;
        }

        /// <summary>Replaces group <paramref name="group"/>'s base-rule hyperparameters (of the
        /// optimizer's kind, keeping the group's state buffers: AMSGrad, momentum, centering
        /// cannot be turned on or off); the next step uses them. Allocates nothing.</summary>
        public void SetGroupBaseParams(int group, BaseParams bases)
        {
            CheckGroup(group);
            Errors.Check(Native.flatopt_optimizer_set_group_base_params(handle, (UIntPtr)(uint)group, &bases));
        }

        private static void CheckGroup(int group)
        {
            if (group < 0)
                throw Errors.Invalid("group", group, "expected >= 0");
        }

        // ------------------------------------------------------------------------------------
        // Steps

        /// <summary>One update of every registered buffer with the registered gradients.
        /// True: applied; false: skipped (a NaN/Inf gradient under NonFinite.Skip; nothing
        /// changed but the skipped counter).</summary>
        public bool Step()
        {
            Status st = Native.flatopt_optimizer_step(handle);
            if (st == Status.Ok)
                return true;
            return Errors.Check(st) == Status.Ok;
        }

        /// <summary>One update with gradients passed for this call: grads[i] is the gradient of
        /// registered buffer i (same length). Pinned for the call only.</summary>
        public bool StepWithGrads(float[][] grads)
        {
            if (grads == null)
                return Finish(Native.flatopt_optimizer_step_with_grads(handle, IntPtr.Zero, UIntPtr.Zero));
            int n = grads.Length;
            if (n == lengths.Count)
                for (int i = 0; i < n; i++)
                    if (grads[i] != null && grads[i].Length != lengths[i])
                        throw Errors.Length("grads[" + i + "]", lengths[i], grads[i].Length);
            if (n > 256)
            {
                // Native scratch (not the managed heap) for many buffers.
                IntPtr mem = Marshal.AllocHGlobal((IntPtr.Size + sizeof(GCHandle)) * n);
                try
                {
                    return StepPinned(grads, (IntPtr*)mem, (GCHandle*)((IntPtr*)mem + n));
                }
                finally
                {
                    Marshal.FreeHGlobal(mem);
                }
            }
            IntPtr* ptrs = stackalloc IntPtr[Math.Max(n, 1)];
            GCHandle* pins = stackalloc GCHandle[Math.Max(n, 1)];
            return StepPinned(grads, ptrs, pins);
        }

        private bool StepPinned(float[][] grads, IntPtr* ptrs, GCHandle* pins)
        {
            int n = grads.Length, pinned = 0;
            Status st;
            try
            {
                for (int i = 0; i < n; i++)
                {
                    if (grads[i] == null)
                    {
                        ptrs[i] = IntPtr.Zero;
                        continue;
                    }
                    // GCHandles live in the runtime's handle table, not on the managed heap.
                    pins[pinned] = GCHandle.Alloc(grads[i], GCHandleType.Pinned);
                    ptrs[i] = pins[pinned++].AddrOfPinnedObject();
                }
                st = Native.flatopt_optimizer_step_with_grads(handle, (IntPtr)ptrs, (UIntPtr)(uint)n);
            }
            finally
            {
                for (int i = 0; i < pinned; i++)
                    pins[i].Free();
            }
            return Finish(st);
        }

        /// <summary>One update with per-call gradients given as native pointers (each of its
        /// registered buffer's length; the binding cannot check those lengths).</summary>
        public bool StepWithGrads(IntPtr[] grads)
        {
            fixed (IntPtr* p = grads)
                return Finish(Native.flatopt_optimizer_step_with_grads(handle, (IntPtr)p,
                    (UIntPtr)(uint)(grads == null ? 0 : grads.Length)));
        }

        private static bool Finish(Status st)
        {
            if (st == Status.Ok)
                return true;
            return Errors.Check(st) == Status.Ok;
        }

        // ------------------------------------------------------------------------------------
        // Sharded training (two phases) and split steps

        /// <summary>The number of sum-of-squares blocks over all registered buffers: the length
        /// of the array SumSquaresPartials fills.</summary>
        public long SumSquaresBlockCount
        {
            get
            {
                UIntPtr n;
                Errors.Check(Native.flatopt_optimizer_sum_squares_block_count(handle, out n));
                return (long)(ulong)n;
            }
        }

        /// <summary>Phase one: the block partial sums of squares of the registered gradients
        /// into <paramref name="partials"/> (SumSquaresBlockCount of them). Exchange them
        /// between shards, add all in global block order starting from 0.0, then call
        /// StepWithSumSquares with the total.</summary>
        public void SumSquaresPartials(double[] partials)
        {
            fixed (double* p = partials)
                Errors.Check(Native.flatopt_optimizer_sum_squares_partials(handle, p,
                    (UIntPtr)(uint)(partials == null ? 0 : partials.Length)));
        }

        /// <summary>Phase two: one update using the global sum of squares (clipping by norm,
        /// non-finite check). False: skipped on every shard alike.</summary>
        public bool StepWithSumSquares(double sumSquares)
        {
            return Finish(Native.flatopt_optimizer_step_with_sum_squares(handle, sumSquares));
        }

        /// <summary>Sharded LAMB, LARS or NovoGrad, the exchange between the two phases: the
        /// pass before the update with the global sum of squares, two sums per sum-of-squares
        /// block of every registered buffer into <paramref name="partials"/> (nothing else is
        /// written). Refused for the other rules.</summary>
        public void NormPartials(double sumSquares, double[] partials)
        {
            fixed (double* p = partials)
                Errors.Check(Native.flatopt_optimizer_norm_partials(handle, sumSquares, p,
                    (UIntPtr)(uint)(partials == null ? 0 : partials.Length)));
        }

        /// <summary>Sharded LAMB, LARS or NovoGrad, the update: as
        /// <see cref="StepWithSumSquares"/> with each buffer's two norms totalled over all
        /// shards (two per registered buffer). False: skipped on every shard alike.</summary>
        public bool StepWithNorms(double sumSquares, double[] norms)
        {
            fixed (double* p = norms)
                return Finish(Native.flatopt_optimizer_step_with_norms(handle, sumSquares, p,
                    (UIntPtr)(uint)(norms == null ? 0 : norms.Length)));
        }

        /// <summary>First phase of a step split over the caller's threads. False: skipped (the
        /// step is over); true: call StepRange on disjoint ranges covering [0, TotalLen), then
        /// EndStep.</summary>
        public bool BeginStep()
        {
            return Finish(Native.flatopt_optimizer_begin_step(handle));
        }

        /// <summary>BeginStep with an explicit loss scale: the gradients are divided by
        /// gradScale (in float) before clipping, weight decay and the rule, in the norm /
        /// non-finite pass and in every StepRange of this step, so the split step is bit for bit
        /// the whole one with that scale and skips on the same gradients (a value the division
        /// overflows included). gradScale 0 means none (then this is BeginStep); any other value
        /// must be finite and &gt; 0 and is refused while a dynamic loss scaler is set.</summary>
        public bool BeginStep(float gradScale)
        {
            return Finish(Native.flatopt_optimizer_begin_step_scaled(handle, gradScale));
        }

        /// <summary>Applies the begun step to elements [begin, end) of the concatenated
        /// registered buffers. Concurrent calls on disjoint ranges are allowed.</summary>
        public void StepRange(long begin, long end)
        {
            if (begin < 0)
                throw Errors.Invalid("begin", begin, "expected >= 0");
            if (end < 0)
                throw Errors.Invalid("end", end, "expected >= 0");
            Errors.Check(Native.flatopt_optimizer_step_range(handle, (UIntPtr)(ulong)begin, (UIntPtr)(ulong)end));
        }

        /// <summary>Last phase of a split step: counts the update, advances the schedule.</summary>
        public void EndStep()
        {
            Errors.Check(Native.flatopt_optimizer_end_step(handle));
        }

        /// <summary>Back to the state right after registration (moments zeroed, counters and
        /// schedule reset, slow weights from the current parameters).</summary>
        public void Reset()
        {
            Errors.Check(Native.flatopt_optimizer_reset(handle));
        }

        // ------------------------------------------------------------------------------------
        // Queries and settings

        /// <summary>Number of applied updates.</summary>
        public long StepCount
        {
            get { ulong n; Errors.Check(Native.flatopt_optimizer_step_count(handle, out n)); return (long)n; }
        }

        /// <summary>Number of updates skipped for non-finite gradients.</summary>
        public long SkippedCount
        {
            get { ulong n; Errors.Check(Native.flatopt_optimizer_skipped_count(handle, out n)); return (long)n; }
        }

        /// <summary>The learning rate the next update will use.</summary>
        public float CurrentLr
        {
            get { float lr; Errors.Check(Native.flatopt_optimizer_current_lr(handle, out lr)); return lr; }
        }

        /// <summary>The SIMD tier this optimizer runs on (results do not depend on it).</summary>
        public SimdTier SimdTier
        {
            get { uint t; Errors.Check(Native.flatopt_optimizer_simd_tier(handle, out t)); return (SimdTier)t; }
            set { Errors.Check(Native.flatopt_optimizer_set_simd_tier(handle, (uint)value)); }
        }

        /// <summary>Threads used by Step (1: the caller's thread; results do not depend on it).</summary>
        public int NumThreads
        {
            get { uint n; Errors.Check(Native.flatopt_optimizer_num_threads(handle, out n)); return (int)n; }
            set
            {
                if (value < 0)
                    throw Errors.Invalid("num_threads", value, "expected >= 1");
                Errors.Check(Native.flatopt_optimizer_set_num_threads(handle, (uint)value));
            }
        }

        /// <summary>The number of registered buffers.</summary>
        public int NumParams
        {
            get { UIntPtr n; Errors.Check(Native.flatopt_optimizer_num_params(handle, out n)); return (int)(ulong)n; }
        }

        /// <summary>The total number of registered elements (the range of StepRange).</summary>
        public long TotalLen
        {
            get { UIntPtr n; Errors.Check(Native.flatopt_optimizer_total_len(handle, out n)); return (long)(ulong)n; }
        }

        /// <summary>Bytes of optimizer state held for the registered buffers: every state
        /// buffer as held (Config.StateDtype: 4, 2 or 1 byte per element, 8-bit scales
        /// included) and the Lookahead slow weights (Config.SlowDtype); 0 before
        /// registration.</summary>
        public long StateBytes
        {
            get { ulong n; Errors.Check(Native.flatopt_optimizer_state_bytes(handle, out n)); return (long)n; }
        }

        /// <summary>Copies the Lookahead slow weights of buffer <paramref name="index"/> into
        /// <paramref name="destination"/> (its length must equal the buffer's).</summary>
        public void CopySlowWeights(int index, float[] destination)
        {
            if (index < 0)
                throw Errors.Invalid("index", index, "expected >= 0");
            fixed (float* d = destination)
                Errors.Check(Native.flatopt_optimizer_copy_slow_weights(handle, (UIntPtr)(uint)index, d,
                    (UIntPtr)(uint)(destination == null ? 0 : destination.Length)));
        }

        /// <summary>Borrows the slow weights of buffer <paramref name="index"/>: read-only
        /// memory owned by the optimizer, valid until the next step, reset or Dispose.</summary>
        public IntPtr BorrowSlowWeights(int index, out long length)
        {
            if (index < 0)
                throw Errors.Invalid("index", index, "expected >= 0");
            IntPtr p;
            UIntPtr n;
            Errors.Check(Native.flatopt_optimizer_slow_weights(handle, (UIntPtr)(uint)index, out p, out n));
            length = (long)(ulong)n;
            return p;
        }

        /// <summary>Advances the schedule by one (epoch style, for Config.ScheduleManual = 1).</summary>
        public void ScheduleStep()
        {
            Errors.Check(Native.flatopt_optimizer_schedule_step(handle));
        }

        /// <summary>Sets the schedule's counter to <paramref name="epoch"/>: exactly as after that
        /// many ScheduleStep calls from the start, at once. Throws (InvalidState, nothing
        /// changed) for ReduceOnPlateau, which moves by metrics.</summary>
        public void ScheduleSetEpoch(ulong epoch)
        {
            Errors.Check(Native.flatopt_optimizer_schedule_set_epoch(handle, epoch));
        }

        /// <summary>Feeds a metric to a ReduceOnPlateau schedule.</summary>
        public void ScheduleStepMetric(double metric)
        {
            Errors.Check(Native.flatopt_optimizer_schedule_step_metric(handle, metric));
        }

        // ------------------------------------------------------------------------------------
        // Checkpoints

        /// <summary>The size in bytes of the checkpoint Save would write now.</summary>
        public long CheckpointSize
        {
            get { UIntPtr n; Errors.Check(Native.flatopt_optimizer_checkpoint_size(handle, out n)); return (long)(ulong)n; }
        }

        /// <summary>The complete optimizer state (not the parameters, which the caller owns) as
        /// a new byte array.</summary>
        public byte[] Save()
        {
            var buf = new byte[CheckpointSize];
            int n = Save(buf);
            if (n != buf.Length)
                Array.Resize(ref buf, n);
            return buf;
        }

        /// <summary>Writes the checkpoint into <paramref name="buffer"/> (at least CheckpointSize
        /// bytes) and returns the number of bytes written. Allocates nothing.</summary>
        public int Save(byte[] buffer)
        {
            UIntPtr written;
            fixed (byte* b = buffer)
                Errors.Check(Native.flatopt_optimizer_save(handle, b,
                    (UIntPtr)(uint)(buffer == null ? 0 : buffer.Length), out written));
            return (int)(ulong)written;
        }

        /// <summary>Restores a checkpoint (all of <paramref name="data"/>). Validated completely
        /// before anything changes; the optimizer must have the configuration and registered
        /// lengths it was saved with.</summary>
        public void Load(byte[] data)
        {
            Load(data, 0, data == null ? 0 : data.Length);
        }

        /// <summary>Restores a checkpoint from data[offset .. offset + count).</summary>
        public void Load(byte[] data, int offset, int count)
        {
            if (data != null && (offset < 0 || count < 0 || offset > data.Length - count))
                throw Errors.Length("checkpoint range [offset, offset + count) of data", data.Length,
                    (long)offset + count);
            fixed (byte* b = data)
                Errors.Check(Native.flatopt_optimizer_load(handle, b == null ? null : b + offset,
                    (UIntPtr)(uint)count));
        }

        /// <summary>Validates a checkpoint exactly as Load does, without loading it, and returns
        /// its counters: one consistent snapshot (read a saved checkpoint's counters here rather
        /// than from StepCount and friends, which other threads' updates may move).</summary>
        public CheckpointInfo CheckpointInfo(byte[] data)
        {
            return CheckpointInfo(data, 0, data == null ? 0 : data.Length);
        }

        /// <summary>CheckpointInfo of data[offset .. offset + count).</summary>
        public CheckpointInfo CheckpointInfo(byte[] data, int offset, int count)
        {
            if (data != null && (offset < 0 || count < 0 || offset > data.Length - count))
                throw Errors.Length("checkpoint range [offset, offset + count) of data", data.Length,
                    (long)offset + count);
            ulong steps, skipped;
            float lr;
            fixed (byte* b = data)
                Errors.Check(Native.flatopt_optimizer_checkpoint_info(handle, b == null ? null : b + offset,
                    (UIntPtr)(uint)count, out steps, out skipped, out lr));
            return new CheckpointInfo((long)steps, (long)skipped, lr);
        }

        /// <summary>Saves a checkpoint file atomically (temporary file, fsync, rename): after a
        /// crash the file holds the previous checkpoint or the new one.</summary>
        public void SaveFile(string path)
        {
            byte[] p = path == null ? null : Native.ToUtf8z(path);
            fixed (byte* b = p)
                Errors.Check(Native.flatopt_optimizer_save_file(handle, b));
        }

        /// <summary>Loads a checkpoint file (see Load).</summary>
        public void LoadFile(string path)
        {
            byte[] p = path == null ? null : Native.ToUtf8z(path);
            fixed (byte* b = p)
                Errors.Check(Native.flatopt_optimizer_load_file(handle, b));
        }
    }
}
