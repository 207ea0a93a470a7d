// Hostile.cs: bad inputs through the C# binding, one row each: (description, the call, the
// exception type it must throw, a substring its message must contain). For every row the runner
// also checks that nothing changed: the registered parameter and gradient arrays, the stateless
// buffers, the counters and the complete optimizer state (its checkpoint bytes) are compared
// bit for bit before and after; then the fixture and an identical twin that never saw the bad
// call take the same good steps and must stay bit-identical (hidden state such as Adam moments
// untouched).

using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;

namespace Flatopt.Tests
{
    internal sealed class Fixture : IDisposable
    {
        internal static readonly int[] Lens = { 5, 17, 40 };
        internal const int SLen = 11;

        // Lookahead(Adam) + clip by norm + weight decay over P / G, stepped 3 times.
        internal Optimizer Opt;
        // The same configuration, nothing registered.
        internal Optimizer Bare;
        // SGD on ReduceOnPlateau over L / LG.
        internal Optimizer Plat;
        // AdamW with a second parameter group (its own lr, no decay): Y0 in group 0, Y1 in
        // group 1, stepped once.
        internal Optimizer Grp;
        internal float[] Y0, Y0G, Y1, Y1G;
        internal float[][] P, G, GG;
        internal float[] X, XG, L, LG;
        internal float[] Sp, Sg, Sm, Sv, Svm, Ss;
        internal Config Cfg;
        internal BaseParams Hp;
        internal BaseParams HpAdam, HpSgd;
        internal StepArgs Args;
        internal bool Pending;

        internal Fixture(bool pending)
        {
            Cfg = Config.Init();
            Cfg.Lr = 0.01;
            Cfg.Lookahead = 1;
            Cfg.SyncPeriod = 2;
            Cfg.Alpha = 0.5;
            Cfg.GradClipNorm = 1.0;
            Cfg.WeightDecay = 0.01;
            Hp = BaseParams.Init(BaseKind.Adam);
            P = new float[Lens.Length][];
            G = new float[Lens.Length][];
            GG = new float[Lens.Length][];
            Opt = new Optimizer(Cfg, Hp);
            for (int i = 0; i < Lens.Length; i++)
            {
                P[i] = T.Filled(Lens[i], 10u + (uint)i, 1f);
                G[i] = T.Filled(Lens[i], 20u + (uint)i, 2f);
                GG[i] = (float[])G[i].Clone();
                Opt.AddParam(P[i], G[i]);
            }
            for (int s = 0; s < 3; s++)
                Opt.Step();
            Bare = new Optimizer(Cfg, Hp);
            X = T.Filled(8, 30, 1f);
            XG = T.Filled(8, 31, 1f);
            L = T.Filled(4, 34, 1f);
            LG = T.Filled(4, 35, 1f);
            Schedule sch = Schedule.Init(ScheduleKind.ReduceOnPlateau);
            sch.BaseLr = 0.1;
            sch.Factor = 0.5;
            sch.Patience = 1;
            Config pc = Config.Init();
            Plat = new Optimizer(pc, BaseParams.Init(BaseKind.Sgd), sch);
            Plat.AddParam(L, LG);
            Config gc = Config.Init();
            gc.Lr = 0.01;
            BaseParams aw = BaseParams.Init(BaseKind.AdamW);
            aw.DecoupledWeightDecay = 0.05;
            Grp = new Optimizer(gc, aw);
            GroupOptions go = GroupOptions.Init();
            go.Lr = 0.02;
            go.WeightDecay = 0;
            int g1 = Grp.AddGroup(go);
            Y0 = T.Filled(6, 36, 1f);
            Y0G = T.Filled(6, 37, 1f);
            Y1 = T.Filled(9, 38, 1f);
            Y1G = T.Filled(9, 39, 1f);
            Grp.AddParam(Y0, Y0G);
            Grp.AddParam(Y1, Y1G, g1);
            Grp.Step();
            Sp = T.Filled(SLen, 40, 1f);
            Sg = T.Filled(SLen, 41, 1f);
            Sm = T.Filled(SLen, 42, 0.1f);
            Sv = T.Filled(SLen, 43, 0.1f).Select(Math.Abs).ToArray();
            Svm = Sv.Select(v => v * 1.5f).ToArray();
            Ss = T.Filled(SLen, 44, 1f);
            HpAdam = BaseParams.Init(BaseKind.Adam);
            HpSgd = BaseParams.Init(BaseKind.Sgd);
            HpSgd.Momentum = 0.9;
            Args = StepArgs.Init();
            Args.Lr = 0.01;
            Args.Step = 3;
            Args.Sync = 1;
            Args.Alpha = 0.5;
            Pending = pending;
            if (pending)
                Opt.BeginStep();
        }

        /// <summary>Everything a call could change, as bytes with region names.</summary>
        internal List<KeyValuePair<string, byte[]>> Snapshot()
        {
            var s = new List<KeyValuePair<string, byte[]>>();
            Action<string, float[]> add = (n, a) =>
            {
                var b = new byte[a.Length * 4];
                Buffer.BlockCopy(a, 0, b, 0, b.Length);
                s.Add(new KeyValuePair<string, byte[]>(n, b));
            };
            // A query the optimizer refuses now (e.g. Save during a begun step) is recorded as
            // its status, which must not change either.
            Func<Func<byte[]>, byte[]> orStatus = f =>
            {
                try
                {
                    return f();
                }
                catch (FlatoptException e)
                {
                    return System.Text.Encoding.ASCII.GetBytes("error " + e.Status);
                }
            };
            for (int i = 0; i < P.Length; i++)
            {
                add("registered param " + i, P[i]);
                add("registered grad " + i, G[i]);
                add("per-call grad " + i, GG[i]);
                int k = i;
                s.Add(new KeyValuePair<string, byte[]>("slow weights " + i, orStatus(() =>
                {
                    var slow = new float[Lens[k]];
                    Opt.CopySlowWeights(k, slow);
                    var b = new byte[slow.Length * 4];
                    Buffer.BlockCopy(slow, 0, b, 0, b.Length);
                    return b;
                })));
            }
            foreach (var kv in new[] { Tuple.Create("spare", X), Tuple.Create("spare grad", XG),
                                       Tuple.Create("plateau param", L), Tuple.Create("plateau grad", LG),
                                       Tuple.Create("group 0 param", Y0), Tuple.Create("group 0 grad", Y0G),
                                       Tuple.Create("group 1 param", Y1), Tuple.Create("group 1 grad", Y1G),
                                       Tuple.Create("stateless param", Sp), Tuple.Create("stateless grad", Sg),
                                       Tuple.Create("stateless m", Sm), Tuple.Create("stateless v", Sv),
                                       Tuple.Create("stateless v_max", Svm), Tuple.Create("stateless slow", Ss) })
                add(kv.Item1, kv.Item2);
            foreach (var o in new[] { Tuple.Create("opt", Opt), Tuple.Create("bare", Bare), Tuple.Create("plat", Plat), Tuple.Create("grp", Grp) })
            {
                Optimizer opt = o.Item2;
                s.Add(new KeyValuePair<string, byte[]>("counters of " + o.Item1, orStatus(() =>
                    System.Text.Encoding.ASCII.GetBytes(string.Format("{0} {1} {2} {3} {4} {5} {6}", opt.StepCount,
                        opt.SkippedCount, T.Bits(opt.CurrentLr), opt.NumParams, opt.TotalLen, opt.NumThreads, opt.SimdTier)))));
                s.Add(new KeyValuePair<string, byte[]>("state (checkpoint) of " + o.Item1, orStatus(() => opt.Save())));
                s.Add(new KeyValuePair<string, byte[]>("groups of " + o.Item1, orStatus(() =>
                {
                    var b = new System.Text.StringBuilder();
                    for (int g = 0; g < opt.NumGroups; g++)
                        b.AppendFormat("{0}: {1} {2} {3}; ", g, BitConverter.DoubleToInt64Bits(opt.GroupLr(g)),
                            BitConverter.DoubleToInt64Bits(opt.GroupWeightDecay(g)), T.Bits(opt.GroupCurrentLr(g)));
                    return System.Text.Encoding.ASCII.GetBytes(b.ToString());
                })));
            }
            s.Add(new KeyValuePair<string, byte[]>("default simd tier", new[] { (byte)Library.DefaultSimdTier }));
            return s;
        }

        internal static string Diff(List<KeyValuePair<string, byte[]>> a, List<KeyValuePair<string, byte[]>> b)
        {
            if (a.Count != b.Count)
                return "(snapshot size)";
            for (int i = 0; i < a.Count; i++)
                if (!T.SameBytes(a[i].Value, b[i].Value))
                    return a[i].Key;
            return null;
        }

        /// <summary>Good calls after a row, the same on the fixture and its twin.</summary>
        internal void FollowUp()
        {
            if (Pending)
            {
                long n = Opt.TotalLen;
                Opt.StepRange(n / 2, n);
                Opt.StepRange(0, n / 2);
                Opt.EndStep();
                Pending = false;
            }
            for (int k = 0; k < 2; k++)
            {
                for (int i = 0; i < G.Length; i++)
                    T.Fill(G[i], 100u + (uint)(k * 7 + i), 1.5f);
                Opt.Step();
                Plat.Step();
                Plat.ScheduleStepMetric(1.0 + k);
                Grp.Step();
            }
            Opt.StepWithGrads(GG);
            var args = Args;
            Kernels.AdamUpdate(HpAdam, args, Sp, Sg, Sm, Sv, null, Ss);
        }

        public void Dispose()
        {
            Opt.Dispose();
            Bare.Dispose();
            Plat.Dispose();
            Grp.Dispose();
        }
    }

    internal sealed class HostileRow
    {
        internal string What;
        internal Action<Fixture> Call;
        internal Type Want;
        internal string Needle;
        internal bool Pending;
    }

    internal static class Hostile
    {
        /// <summary>Config rows: a new optimizer from the fixture's configuration with one edit.</summary>
        private sealed class Cfg
        {
            internal Config C;
            internal BaseParams B;
            internal Schedule? S;
            internal ulong[] Ms;
            internal double[] Vs;
        }

        private static Action<Fixture> New(Action<Cfg> edit)
        {
            return fx =>
            {
                var c = new Cfg { C = fx.Cfg, B = fx.Hp };
                edit(c);
                using (new Optimizer(c.C, c.B, c.S, c.Ms, c.Vs)) { }
            };
        }

        private static Action<Fixture> Sched(ScheduleKind kind, Action<Cfg> edit)
        {
            return New(c =>
            {
                c.S = Schedule.Init(kind);
                edit(c);
            });
        }

        private static Action<Fixture> Sgd(Action<Cfg> edit)
        {
            return New(c =>
            {
                c.B = BaseParams.Init(BaseKind.Sgd);
                c.B.Momentum = 0.9;
                edit(c);
            });
        }

        // Group options of the defaults with one edit.
        private static GroupOptions Go(Func<GroupOptions, GroupOptions> edit)
        {
            return edit(GroupOptions.Init());
        }

        private static BaseParams Bp(BaseKind kind, Func<BaseParams, BaseParams> edit)
        {
            return edit(BaseParams.Init(kind));
        }

        private static Schedule With(Schedule s, Func<Schedule, Schedule> f)
        {
            return f(s);
        }

        private static HostileRow R(string what, Action<Fixture> call, Type want, string needle, bool pending = false)
        {
            return new HostileRow { What = what, Call = call, Want = want, Needle = needle, Pending = pending };
        }

        private static readonly Type Arg = typeof(InvalidArgumentException), Len = typeof(LengthMismatchException),
            Null = typeof(NullPointerException), State = typeof(InvalidStateException),
            Unsup = typeof(UnsupportedException), Overlap = typeof(OverlapException),
            Corrupt = typeof(CorruptException), Io = typeof(CheckpointIOException);

        // A checkpoint of the fixture's optimizer, changed by f.
        private static Action<Fixture> LoadEdited(Func<byte[], byte[]> f)
        {
            return fx => fx.Opt.Load(f(fx.Opt.Save()));
        }

        // The first SIMD tier this CPU cannot run; null where it runs all four (AVX-512), and then
        // the rows that need one (their needle is NotAvailable) are skipped.
        private static readonly SimdTier? Unavailable =
            new[] { SimdTier.Scalar, SimdTier.Portable, SimdTier.Avx2, SimdTier.Avx512 }
                .Where(t => !Library.IsSimdTierAvailable(t)).Cast<SimdTier?>().FirstOrDefault();
        private const string NotAvailable = "not available";

        private static HostileRow[] Rows(string tmp)
        {
            string garbage = Path.Combine(tmp, "garbage.ckpt");
            File.WriteAllBytes(garbage, new byte[] { 1, 2, 3, 4, 5, 6, 7, 8, 9 });
            return new[]
            {
                // init functions
                R("BaseParams.Init(kind 99)", fx => BaseParams.Init((BaseKind)99), Arg, "kind"),
                R("Schedule.Init(kind 99)", fx => Schedule.Init((ScheduleKind)99), Arg, "kind"),
                // the optimizer's configuration
                R("new: lr NaN", New(c => c.C.Lr = double.NaN), Arg, "lr"),
                R("new: lr +Inf", New(c => c.C.Lr = double.PositiveInfinity), Arg, "lr"),
                R("new: lr negative", New(c => c.C.Lr = -0.01), Arg, "lr"),
                R("new: config struct_size 0", New(c => c.C.StructSize = 0), Arg, "struct_size"),
                R("new: base struct_size 0", New(c => c.B.StructSize = 0), Arg, "struct_size"),
                R("new: base kind 99", New(c => c.B.Kind = (BaseKind)99), Arg, "kind"),
                R("new: nonfinite 7", New(c => c.C.Nonfinite = (NonFinite)7), Arg, "nonfinite"),
                R("new: simd_tier 9", New(c => c.C.SimdTier = (SimdTier)9), Arg, "simd_tier"),
                R("new: simd_tier the CPU lacks", New(c => c.C.SimdTier = Unavailable.Value), Unsup, NotAvailable),
                R("new: b1 NaN", New(c => c.B.B1 = double.NaN), Arg, "b1"),
                R("new: b1 = 1", New(c => c.B.B1 = 1.0), Arg, "b1"),
                R("new: b2 negative", New(c => c.B.B2 = -0.5), Arg, "b2"),
                R("new: eps 0", New(c => c.B.Eps = 0.0), Arg, "eps"),
                R("new: eps NaN", New(c => c.B.Eps = double.NaN), Arg, "eps"),
                R("new: amsgrad 2", New(c => c.B.Amsgrad = 2), Arg, "amsgrad"),
                R("new: sgd momentum 1", Sgd(c => c.B.Momentum = 1.0), Arg, "momentum"),
                R("new: sgd dampening 1.5", Sgd(c => c.B.Dampening = 1.5), Arg, "dampening"),
                R("new: nesterov without momentum", Sgd(c => { c.B.Momentum = 0; c.B.Nesterov = 1; }), Arg, "nesterov"),
                R("new: adamw decoupled_weight_decay -1", New(c => { c.B = BaseParams.Init(BaseKind.AdamW); c.B.DecoupledWeightDecay = -1; }), Arg, "decoupled"),
                R("new: weight_decay NaN", New(c => c.C.WeightDecay = double.NaN), Arg, "weight_decay"),
                R("new: grad_clip_norm negative", New(c => c.C.GradClipNorm = -1), Arg, "grad_clip_norm"),
                R("new: grad_clip_value NaN", New(c => c.C.GradClipValue = double.NaN), Arg, "grad_clip_value"),
                R("new: sync_period 0", New(c => c.C.SyncPeriod = 0), Arg, "sync_period"),
                R("new: alpha 1.5", New(c => c.C.Alpha = 1.5), Arg, "alpha"),
                R("new: lookahead 2", New(c => c.C.Lookahead = 2), Arg, "lookahead"),
                R("new: schedule_manual 3", New(c => c.C.ScheduleManual = 3), Arg, "schedule_manual"),
                R("new: num_threads 0", New(c => c.C.NumThreads = 0), Arg, "num_threads"),
                R("new: num_threads 100000", New(c => c.C.NumThreads = 100000), Arg, "num_threads"),
                R("new: schedule struct_size 0", Sched(ScheduleKind.Exponential, c => c.S = With(c.S.Value, s => { s.StructSize = 0; return s; })), Arg, "struct_size"),
                R("new: schedule kind 99", Sched(ScheduleKind.Exponential, c => c.S = With(c.S.Value, s => { s.Kind = (ScheduleKind)99; return s; })), Arg, "kind"),
                R("new: exponential gamma NaN", Sched(ScheduleKind.Exponential, c => c.S = With(c.S.Value, s => { s.Gamma = double.NaN; return s; })), Arg, "gamma"),
                R("new: schedule base_lr -1", Sched(ScheduleKind.CosineAnnealing, c => c.S = With(c.S.Value, s => { s.BaseLr = -1; return s; })), Arg, "base"),
                R("new: multistep milestones not increasing", Sched(ScheduleKind.MultiStep, c => c.Ms = new ulong[] { 3, 6, 1 }), Arg, "milestones"),
                R("new: piecewise 2 values for 3 boundaries", Sched(ScheduleKind.PiecewiseConstant, c => { c.Ms = new ulong[] { 3, 6, 9 }; c.Vs = new[] { 0.1, 0.01 }; }), Arg, "values"),
                R("new: piecewise values null", Sched(ScheduleKind.PiecewiseConstant, c => { c.Ms = new ulong[] { 3, 6, 9 }; }), Arg, "values"),
                R("new: cyclic_mode 9", Sched(ScheduleKind.Cyclic, c => c.S = With(c.S.Value, s => { s.CyclicMode = 9; return s; })), Arg, "cyclic_mode"),
                R("new: plateau factor 1.5", Sched(ScheduleKind.ReduceOnPlateau, c => c.S = With(c.S.Value, s => { s.Factor = 1.5; return s; })), Arg, "factor"),
                R("new: one-cycle pct_start 1.5", Sched(ScheduleKind.OneCycle, c => c.S = With(c.S.Value, s => { s.PctStart = 1.5; return s; })), Arg, "pct_start"),
                R("new: warm restarts t_mult 0", Sched(ScheduleKind.CosineWarmRestarts, c => c.S = With(c.S.Value, s => { s.TMult = 0; return s; })), Arg, "t_mult"),
                R("new: warmup-cosine warmup > period", Sched(ScheduleKind.WarmupCosine, c => c.S = With(c.S.Value, s => { s.Period = 5; s.Warmup = 9; return s; })), Arg, "warmup"),
                // registration
                R("AddParam: param null", fx => fx.Bare.AddParam(null, fx.XG), Null, "param"),
                R("AddParam: grad length differs", fx => fx.Bare.AddParam(fx.X, new float[7]), Len, "grad"),
                R("AddParam: grad is the param", fx => fx.Bare.AddParam(fx.X, fx.X), Overlap, ""),
                R("AddParam: after a step", fx => fx.Opt.AddParam(fx.X, fx.XG), State, ""),
                R("AddParam(IntPtr): param NULL", fx => fx.Bare.AddParam(IntPtr.Zero, IntPtr.Zero, 8), Null, "param"),
                R("AddParam(IntPtr): length -1", fx => fx.Bare.AddParam(IntPtr.Zero, IntPtr.Zero, -1), Arg, "length"),
                // parameter groups (Grp: groups 0 and 1 of AdamW; Bare: group 0 only)
                R("AddGroup: lr -1", fx => fx.Grp.AddGroup(Go(o => { o.Lr = -1; return o; })), Arg, "lr"),
                R("AddGroup: lr +Inf", fx => fx.Grp.AddGroup(Go(o => { o.Lr = double.PositiveInfinity; return o; })), Arg, "lr"),
                R("AddGroup: lr 1e39 (not finite as f32)", fx => fx.Grp.AddGroup(Go(o => { o.Lr = 1e39; return o; })), Arg, "lr"),
                R("AddGroup: weight_decay -0.5", fx => fx.Grp.AddGroup(Go(o => { o.WeightDecay = -0.5; return o; })), Arg, "weight_decay"),
                R("AddGroup: weight_decay +Inf", fx => fx.Grp.AddGroup(Go(o => { o.WeightDecay = double.PositiveInfinity; return o; })), Arg, "weight_decay"),
                R("AddGroup: struct_size 0", fx => fx.Grp.AddGroup(Go(o => { o.StructSize = 0; return o; })), Arg, "struct_size"),
                R("AddGroup: reserved 1", fx => fx.Grp.AddGroup(Go(o => { o.Reserved = 1; return o; })), null, "reserved"),
                R("AddGroup: base of SGD for AdamW", fx => fx.Grp.AddGroup(GroupOptions.Init(), BaseParams.Init(BaseKind.Sgd)), Arg, "kind"),
                R("AddGroup: base b2 1.5", fx => fx.Grp.AddGroup(GroupOptions.Init(), Bp(BaseKind.AdamW, b => { b.B2 = 1.5; return b; })), Arg, "b2"),
                R("AddGroup: base eps 0", fx => fx.Grp.AddGroup(GroupOptions.Init(), Bp(BaseKind.AdamW, b => { b.Eps = 0; return b; })), Arg, "eps"),
                R("AddGroup: base struct_size 0", fx => fx.Grp.AddGroup(GroupOptions.Init(), Bp(BaseKind.AdamW, b => { b.StructSize = 0; return b; })), Arg, "struct_size"),
                R("AddGroup: during a begun step", fx => fx.Opt.AddGroup(GroupOptions.Init()), State, "", true),
                R("AddParam: group 1 of 1", fx => fx.Bare.AddParam(fx.X, fx.XG, 1), Arg, "group"),
                R("AddParam: group -1", fx => fx.Bare.AddParam(fx.X, fx.XG, -1), Arg, "group"),
                R("AddParam(IntPtr): group -1", fx => fx.Bare.AddParam(IntPtr.Zero, IntPtr.Zero, 8, -1), Arg, "group"),
                R("AddParam(IntPtr): param NULL into group 0", fx => fx.Bare.AddParam(IntPtr.Zero, IntPtr.Zero, 8, 0), Null, "param"),
                R("SetGroupLr: group 2 of 2", fx => fx.Grp.SetGroupLr(2, 0.1), Arg, "group"),
                R("SetGroupLr: group -1", fx => fx.Grp.SetGroupLr(-1, 0.1), Arg, "group"),
                R("SetGroupLr: lr -0.1", fx => fx.Grp.SetGroupLr(1, -0.1), Arg, "lr"),
                R("SetGroupLr: lr +Inf", fx => fx.Grp.SetGroupLr(1, double.PositiveInfinity), Arg, "lr"),
                R("SetGroupLr: lr 1e39 (not finite as f32)", fx => fx.Grp.SetGroupLr(1, 1e39), Arg, "lr"),
                R("SetGroupLr: during a begun step", fx => fx.Opt.SetGroupLr(0, 0.1), State, "", true),
                R("SetGroupWeightDecay: NaN", fx => fx.Grp.SetGroupWeightDecay(1, double.NaN), Arg, "weight_decay"),
                R("SetGroupWeightDecay: -1", fx => fx.Grp.SetGroupWeightDecay(1, -1), Arg, "weight_decay"),
                R("SetGroupWeightDecay: group 2 of 2", fx => fx.Grp.SetGroupWeightDecay(2, 0.1), Arg, "group"),
                R("SetGroupWeightDecay: during a begun step", fx => fx.Opt.SetGroupWeightDecay(0, 0.1), State, "", true),
                R("GroupLr: group 2 of 2", fx => fx.Grp.GroupLr(2), Arg, "group"),
                R("GroupCurrentLr: group 2 of 2", fx => fx.Grp.GroupCurrentLr(2), Arg, "group"),
                R("GroupCurrentLrExact: group 2 of 2", fx => fx.Grp.GroupCurrentLrExact(2), Arg, "group"),
                R("GroupWeightDecay: group 2 of 2", fx => fx.Grp.GroupWeightDecay(2), Arg, "group"),
                R("GroupBaseParams: group 2 of 2", fx => fx.Grp.GroupBaseParams(2), Arg, "group"),
                R("GroupBaseParams: group -1", fx => fx.Grp.GroupBaseParams(-1), Arg, "group"),
                R("ParamGroup: index 2 of 2", fx => fx.Grp.ParamGroup(2), Arg, "index"),
                R("ParamGroup: index -1", fx => fx.Grp.ParamGroup(-1), Arg, "index"),
                // steps
                R("Step: nothing registered", fx => fx.Bare.Step(), State, ""),
                R("Step: during a begun step", fx => fx.Opt.Step(), State, "", true),
                R("StepWithGrads: 2 arrays for 3 buffers", fx => fx.Opt.StepWithGrads(new[] { fx.GG[0], fx.GG[1] }), Len, ""),
                R("StepWithGrads: grads[1] of 16 floats", fx => fx.Opt.StepWithGrads(new[] { fx.GG[0], new float[16], fx.GG[2] }), Len, "grads[1]"),
                R("StepWithGrads: grads null", fx => fx.Opt.StepWithGrads((float[][])null), Null, "grads"),
                R("StepWithGrads: grads[1] null", fx => fx.Opt.StepWithGrads(new[] { fx.GG[0], null, fx.GG[2] }), Null, "grad"),
                R("StepWithGrads: grads[2] is a param", fx => fx.Opt.StepWithGrads(new[] { fx.GG[0], fx.GG[1], fx.P[2] }), Overlap, ""),
                R("StepWithGrads(IntPtr[]): a NULL pointer", fx => fx.Opt.StepWithGrads(new IntPtr[3]), Null, "grad"),
                // sharded and split steps
                R("SumSquaresPartials: one partial short", fx => fx.Opt.SumSquaresPartials(new double[fx.Opt.SumSquaresBlockCount - 1]), Len, ""),
                R("SumSquaresPartials: null", fx => fx.Opt.SumSquaresPartials(null), Len, ""),
                R("StepWithSumSquares: negative sum", fx => fx.Opt.StepWithSumSquares(-1.0), Arg, "sum_squares"),
                R("StepRange: no begun step", fx => fx.Opt.StepRange(0, 10), State, ""),
                R("EndStep: no begun step", fx => fx.Opt.EndStep(), State, ""),
                R("BeginStep: twice", fx => fx.Opt.BeginStep(), State, "", true),
                R("BeginStep(gradScale): twice", fx => fx.Opt.BeginStep(2f), State, "", true),
                R("BeginStep(gradScale): NaN", fx => fx.Opt.BeginStep(float.NaN), Arg, "grad_scale"),
                R("BeginStep(gradScale): -2", fx => fx.Opt.BeginStep(-2f), Arg, "grad_scale"),
                R("BeginStep(gradScale): +Inf", fx => fx.Opt.BeginStep(float.PositiveInfinity), Arg, "grad_scale"),
                R("StepRange: past the end", fx => fx.Opt.StepRange(0, fx.Opt.TotalLen + 1), null, "end", true),
                R("StepRange: reversed", fx => fx.Opt.StepRange(10, 5), null, "", true),
                R("StepRange: begin -1", fx => fx.Opt.StepRange(-1, 5), Arg, "begin", true),
                R("Reset: during a begun step", fx => fx.Opt.Reset(), State, "", true),
                R("Reset: nothing registered", fx => fx.Bare.Reset(), State, ""),
                // settings and queries
                R("NumThreads = 0", fx => fx.Opt.NumThreads = 0, Arg, "num_threads"),
                R("NumThreads = 100000", fx => fx.Opt.NumThreads = 100000, Arg, "num_threads"),
                R("SimdTier = 9", fx => fx.Opt.SimdTier = (SimdTier)9, Arg, "tier"),
                R("SimdTier = a tier the CPU lacks", fx => fx.Opt.SimdTier = Unavailable.Value, Unsup, NotAvailable),
                R("Library.DefaultSimdTier = 9", fx => Library.DefaultSimdTier = (SimdTier)9, Arg, "tier"),
                R("CopySlowWeights: index 3 of 3", fx => fx.Opt.CopySlowWeights(3, new float[5]), Arg, "index"),
                R("CopySlowWeights: index -1", fx => fx.Opt.CopySlowWeights(-1, new float[5]), Arg, "index"),
                R("CopySlowWeights: 4 floats for 5", fx => fx.Opt.CopySlowWeights(0, new float[4]), Len, ""),
                R("CopySlowWeights: destination null", fx => fx.Opt.CopySlowWeights(0, null), Len, "dst"),
                R("BorrowSlowWeights: index 7", fx => { long n; fx.Opt.BorrowSlowWeights(7, out n); }, Arg, "index"),
                R("BorrowSlowWeights: no Lookahead", fx => { long n; fx.Plat.BorrowSlowWeights(0, out n); }, null, ""),
                R("ScheduleStepMetric: NaN", fx => fx.Plat.ScheduleStepMetric(double.NaN), Arg, "metric"),
                R("ScheduleStepMetric: not a plateau schedule", fx => fx.Opt.ScheduleStepMetric(1.0), null, ""),
                R("ScheduleSetEpoch: a plateau schedule", fx => fx.Plat.ScheduleSetEpoch(3), State, "ReduceOnPlateau"),
                R("ScheduleSetEpoch: a plateau schedule, ulong.MaxValue", fx => fx.Plat.ScheduleSetEpoch(ulong.MaxValue), State, "ReduceOnPlateau"),
                // checkpoints
                R("Save: 10-byte buffer", fx => fx.Opt.Save(new byte[10]), Len, ""),
                R("Save: buffer null", fx => fx.Opt.Save(null), Null, "buf"),
                R("Load: null", fx => fx.Opt.Load(null), Null, "buf"),
                R("Load: truncated by one byte", LoadEdited(b => b.Take(b.Length - 1).ToArray()), Corrupt, ""),
                R("Load: first 16 bytes", LoadEdited(b => b.Take(16).ToArray()), Corrupt, ""),
                R("Load: a byte flipped in the middle", LoadEdited(b => { b[b.Length / 2] ^= 0x40; return b; }), Corrupt, ""),
                R("Load: bad magic", LoadEdited(b => { b[0] ^= 0xFF; return b; }), Corrupt, ""),
                R("Load: one trailing byte", LoadEdited(b => b.Concat(new byte[] { 0 }).ToArray()), null, ""),
                R("Load: range past the array", fx => fx.Opt.Load(fx.Opt.Save(), 5, 1000000), Len, "checkpoint"),
                R("Load: checkpoint of another configuration", fx =>
                {
                    using (var o = new Optimizer(Config.Init(), BaseParams.Init(BaseKind.Sgd)))
                    {
                        for (int i = 0; i < fx.P.Length; i++)
                            o.AddParam((float[])fx.P[i].Clone(), null);
                        fx.Opt.Load(o.Save());
                    }
                }, Arg, ""),
                R("Load: checkpoint of other lengths", fx =>
                {
                    using (var o = new Optimizer(fx.Cfg, fx.Hp))
                    {
                        o.AddParam(new float[5], new float[5]);
                        o.AddParam(new float[18], new float[18]);
                        o.AddParam(new float[40], new float[40]);
                        fx.Opt.Load(o.Save());
                    }
                }, Len, ""),
                R("CheckpointInfo: null", fx => fx.Opt.CheckpointInfo(null), Null, "buf"),
                R("CheckpointInfo: truncated by one byte", fx => { var b = fx.Opt.Save(); fx.Opt.CheckpointInfo(b, 0, b.Length - 1); }, Corrupt, ""),
                R("CheckpointInfo: a byte flipped", fx => { var b = fx.Opt.Save(); b[b.Length / 2] ^= 0x40; fx.Opt.CheckpointInfo(b); }, Corrupt, ""),
                R("CheckpointInfo: range past the array", fx => fx.Opt.CheckpointInfo(new byte[8], 4, 8), Len, "checkpoint"),
                R("LoadFile: no such file", fx => fx.Opt.LoadFile(Path.Combine(tmp, "missing.ckpt")), Io, "missing.ckpt"),
                R("LoadFile: garbage", fx => fx.Opt.LoadFile(garbage), Corrupt, ""),
                R("LoadFile: path null", fx => fx.Opt.LoadFile(null), Null, "path"),
                R("SaveFile: directory missing", fx => fx.Opt.SaveFile(Path.Combine(tmp, "no-dir", "x.ckpt")), Io, ""),
                // stateless kernels
                R("AdamUpdate: hp of SGD", fx => Kernels.AdamUpdate(fx.HpSgd, fx.Args, fx.Sp, fx.Sg, fx.Sm, fx.Sv, null, fx.Ss), Arg, "kind"),
                R("AdamUpdate: m of 10 floats", fx => Kernels.AdamUpdate(fx.HpAdam, fx.Args, fx.Sp, fx.Sg, new float[10], fx.Sv, null, fx.Ss), Len, "m"),
                R("AdamUpdate: grad null", fx => Kernels.AdamUpdate(fx.HpAdam, fx.Args, fx.Sp, null, fx.Sm, fx.Sv, null, fx.Ss), Null, "grad"),
                R("AdamUpdate: lr NaN", fx => { var a = fx.Args; a.Lr = double.NaN; Kernels.AdamUpdate(fx.HpAdam, a, fx.Sp, fx.Sg, fx.Sm, fx.Sv, null, fx.Ss); }, Arg, "lr"),
                R("AdamUpdate: step 0", fx => { var a = fx.Args; a.Step = 0; Kernels.AdamUpdate(fx.HpAdam, a, fx.Sp, fx.Sg, fx.Sm, fx.Sv, null, fx.Ss); }, Arg, "step"),
                R("AdamUpdate: sync without slow", fx => Kernels.AdamUpdate(fx.HpAdam, fx.Args, fx.Sp, fx.Sg, fx.Sm, fx.Sv, null, null), Null, "slow"),
                R("AdamUpdate: amsgrad without v_max", fx => { var h = fx.HpAdam; h.Amsgrad = 1; Kernels.AdamUpdate(h, fx.Args, fx.Sp, fx.Sg, fx.Sm, fx.Sv, null, fx.Ss); }, Null, "v_max"),
                R("AdamUpdate: m is the param", fx => Kernels.AdamUpdate(fx.HpAdam, fx.Args, fx.Sp, fx.Sg, fx.Sp, fx.Sv, null, fx.Ss), Overlap, ""),
                R("AdamUpdate(IntPtr): length -1", fx => Kernels.AdamUpdate(fx.HpAdam, fx.Args, IntPtr.Zero, IntPtr.Zero, IntPtr.Zero, IntPtr.Zero, IntPtr.Zero, IntPtr.Zero, -1), Arg, "len"),
                R("SgdUpdate: momentum 0.9 without buffer", fx => Kernels.SgdUpdate(fx.HpSgd, fx.Args, fx.Sp, fx.Sg, null, fx.Ss), Null, "momentum"),
                R("AdamWUpdate: hp of Adam", fx => Kernels.AdamWUpdate(fx.HpAdam, fx.Args, fx.Sp, fx.Sg, fx.Sm, fx.Sv, fx.Ss), Arg, "kind"),
                R("RAdamUpdate: hp of Adam", fx => Kernels.RAdamUpdate(fx.HpAdam, fx.Args, fx.Sp, fx.Sg, fx.Sm, fx.Sv, fx.Ss), Arg, "kind"),
                R("BaseUpdate: Adagrad without v", fx => Kernels.BaseUpdate(BaseParams.Init(BaseKind.Adagrad), fx.Args, fx.Sp, fx.Sg, null, null, null, fx.Ss), Null, "v"),
                R("BaseUpdate: Rprop, m is the param", fx => Kernels.BaseUpdate(BaseParams.Init(BaseKind.Rprop), fx.Args, fx.Sp, fx.Sg, fx.Sp, fx.Sv, null, fx.Ss), Overlap, ""),
                R("BaseUpdate: kind 99", fx => { var h = fx.HpAdam; h.Kind = (BaseKind)99; Kernels.BaseUpdate(h, fx.Args, fx.Sp, fx.Sg, fx.Sm, fx.Sv, null, fx.Ss); }, Arg, "kind"),
                R("BaseUpdate: v of 10 floats", fx => Kernels.BaseUpdate(fx.HpAdam, fx.Args, fx.Sp, fx.Sg, fx.Sm, new float[10], null, fx.Ss), Len, "v"),
                R("BaseStateInit: Adam without v", fx => Kernels.BaseStateInit(fx.HpAdam, fx.Sm, null, null, fx.Sm.Length), Null, "v"),
                R("BaseStateInit: m and v the same array", fx => Kernels.BaseStateInit(fx.HpAdam, fx.Sm, fx.Sm, null, fx.Sm.Length), Overlap, ""),
                R("SumSquaresPartials: 3 partials for 11 floats", fx => Kernels.SumSquaresPartials(fx.Sp, new double[3]), Len, ""),
                R("ClipScale: sum NaN", fx => Kernels.ClipScale(double.NaN, 1.0), null, ""),
                R("ClipScale: max_norm 0", fx => Kernels.ClipScale(4.0, 0.0), Arg, "max_norm"),
                R("ClipByValue: c = -1", fx => Kernels.ClipByValue(fx.Sp, -1f), Arg, "c"),
                R("Scale: s = +Inf", fx => Kernels.Scale(fx.Sp, float.PositiveInfinity), Arg, "s"),
                R("LookaheadSync: alpha NaN", fx => Kernels.LookaheadSync(fx.Sp, fx.Ss, float.NaN), Arg, "alpha"),
                R("LookaheadSync: slow of 10 floats", fx => Kernels.LookaheadSync(fx.Sp, new float[10], 0.5f), Len, "slow"),
                R("LookaheadSync: slow is fast", fx => Kernels.LookaheadSync(fx.Sp, fx.Sp, 0.5f), Overlap, ""),
                // a disposed optimizer
                R("Step after Dispose", fx =>
                {
                    var o = new Optimizer(fx.Cfg, fx.Hp);
                    o.AddParam(new float[4], new float[4]);
                    o.Dispose();
                    o.Step();
                }, typeof(ObjectDisposedException), ""),
            };
        }

        internal static void Run(string tmp)
        {
            T.Section("hostile inputs: each row throws its exception, names the argument, changes nothing");
            HostileRow[] rows = Rows(tmp);
            for (int i = 0; i < rows.Length; i++)
            {
                if (Unavailable == null && rows[i].Needle == NotAvailable)
                {
                    Console.WriteLine("  skipped (every SIMD tier is available here): {0}", rows[i].What);
                    continue;
                }
                RunRow(i, rows[i]);
            }
        }

        private static void RunRow(int index, HostileRow r)
        {
            string name = string.Format("row {0,3} {1}", index, r.What);
            var fx = new Fixture(r.Pending);
            var tw = new Fixture(r.Pending);
            try
            {
                var before = fx.Snapshot();
                Exception got = null;
                try
                {
                    r.Call(fx);
                }
                catch (Exception e)
                {
                    got = e;
                }
                if (got == null)
                {
                    T.Row(name, false, "no exception");
                    return;
                }
                // A null Want accepts any FlatoptException (the library decides the kind).
                bool typeOk = r.Want == null ? got is FlatoptException : got.GetType() == r.Want;
                bool msgOk = string.IsNullOrEmpty(r.Needle) || got.Message.Contains(r.Needle);
                string detail = string.Format("-> {0} \"{1}\"", got.GetType().Name, got.Message);
                if (!typeOk || !msgOk)
                {
                    T.Row(name, false, detail + (typeOk ? "" : " (expected " + (r.Want == null ? "a FlatoptException" : r.Want.Name) + ")")
                        + (msgOk ? "" : " (message lacks \"" + r.Needle + "\")"));
                    return;
                }
                var fe = got as FlatoptException;
                if (fe != null && FlatoptException.Create(fe.Status, "").GetType() != fe.GetType())
                {
                    T.Row(name, false, detail + " (status " + fe.Status + ")");
                    return;
                }
                string where = Fixture.Diff(before, fx.Snapshot());
                if (where != null)
                {
                    T.Row(name, false, detail + " but the call changed " + where);
                    return;
                }
                fx.FollowUp();
                tw.FollowUp();
                where = Fixture.Diff(fx.Snapshot(), tw.Snapshot());
                if (where != null)
                {
                    T.Row(name, false, detail + " but afterwards good steps give a different " + where + " than without it");
                    return;
                }
                T.Row(name, true, detail);
            }
            catch (Exception e)
            {
                T.Row(name, false, "the row's harness threw " + e.GetType().Name + ": " + e.Message);
            }
            finally
            {
                fx.Dispose();
                tw.Dispose();
            }
        }
    }
}
