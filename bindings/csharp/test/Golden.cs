// Golden.cs: the braintools golden trajectories (tests/data/, converted to text by
// tests/c/golden_to_text.py) replayed through C#, as tests/c/test_golden.c does through C:
// every parameter element at every step within |ours - ref| <= 1e-5 + 1e-5 |ref| (the
// tolerance of the other golden tests), the slow weights at the end, the learning rate before
// every update (relative 1e-7), and every variant (each available SIMD tier, StepWithGrads, a
// split BeginStep / StepRange / EndStep) bit-identical to the first. One row per case and
// variant.

using System;
using System.Collections.Generic;
using System.Globalization;
using System.IO;

namespace Flatopt.Tests
{
    internal static class Golden
    {
        private const double Atol = 1e-5, Rtol = 1e-5, LrRtol = 1e-7;

        private sealed class Case
        {
            internal string Name, Kind;
            internal double Lr, Momentum, Dampening, B1, B2, Eps, DecoupledWd;
            internal uint Nesterov;
            internal bool Scheduled;
            internal double SchedBase, SchedGamma;
            internal ulong SyncPeriod;
            internal double Alpha, WeightDecay, ClipNorm, ClipValue;
            internal string[] BufNames;
            internal int[] Lens;
            internal int Total, Steps;
            internal bool[] IsSync;
            internal float[] LrPerStep, Init, SlowFinal;
            internal float[][] Grads, Params;
        }

        private sealed class Reader
        {
            private readonly string[] tok;
            private int pos;

            internal Reader(string path)
            {
                tok = File.ReadAllText(path).Split(new[] { ' ', '\n', '\r', '\t' }, StringSplitOptions.RemoveEmptyEntries);
            }

            internal bool AtEnd { get { return pos >= tok.Length; } }

            internal string Next()
            {
                if (pos >= tok.Length)
                    throw new InvalidDataException("golden text: unexpected end of file");
                return tok[pos++];
            }

            internal void Expect(string w)
            {
                string t = Next();
                if (t != w)
                    throw new InvalidDataException("golden text: expected \"" + w + "\", got \"" + t + "\"");
            }

            internal double F64() { return double.Parse(Next(), NumberStyles.Float, CultureInfo.InvariantCulture); }
            internal float F32() { return float.Parse(Next(), NumberStyles.Float, CultureInfo.InvariantCulture); }
            internal int Int() { return int.Parse(Next(), CultureInfo.InvariantCulture); }

            internal float[] Floats(int n)
            {
                if (Int() != n)
                    throw new InvalidDataException("golden text: wrong number of values");
                var x = new float[n];
                for (int i = 0; i < n; i++)
                    x[i] = F32();
                return x;
            }
        }

        private static Case ReadCase(Reader r)
        {
            var c = new Case();
            r.Expect("case"); c.Name = r.Next();
            r.Expect("base"); c.Kind = r.Next();
            r.Expect("lr"); c.Lr = r.F64();
            r.Expect("momentum"); c.Momentum = r.F64();
            r.Expect("dampening"); c.Dampening = r.F64();
            r.Expect("nesterov"); c.Nesterov = (uint)r.Int();
            r.Expect("b1"); c.B1 = r.F64();
            r.Expect("b2"); c.B2 = r.F64();
            r.Expect("eps"); c.Eps = r.F64();
            r.Expect("decoupled_wd"); c.DecoupledWd = r.F64();
            r.Expect("schedule");
            string s = r.Next();
            if (s == "exponential")
            {
                c.Scheduled = true;
                c.SchedBase = r.F64();
                c.SchedGamma = r.F64();
            }
            else if (s != "none")
                throw new InvalidDataException("golden text: unknown schedule " + s);
            r.Expect("lookahead"); c.SyncPeriod = (ulong)r.Int(); c.Alpha = r.F64();
            r.Expect("weight_decay"); c.WeightDecay = r.F64();
            r.Expect("clip_norm"); c.ClipNorm = r.F64();
            r.Expect("clip_value"); c.ClipValue = r.F64();
            r.Expect("buffers");
            int nb = r.Int();
            c.BufNames = new string[nb];
            c.Lens = new int[nb];
            for (int i = 0; i < nb; i++)
            {
                c.BufNames[i] = r.Next();
                c.Lens[i] = r.Int();
                c.Total += c.Lens[i];
            }
            r.Expect("steps"); c.Steps = r.Int();
            c.IsSync = new bool[c.Steps + 1];
            r.Expect("sync_steps");
            int ns = r.Int();
            for (int i = 0; i < ns; i++)
                c.IsSync[r.Int()] = true;
            r.Expect("lr_per_step"); c.LrPerStep = r.Floats(c.Steps);
            r.Expect("init"); c.Init = r.Floats(c.Total);
            c.Grads = new float[c.Steps][];
            c.Params = new float[c.Steps][];
            for (int t = 0; t < c.Steps; t++)
            {
                r.Expect("step");
                if (r.Int() != t + 1)
                    throw new InvalidDataException("golden text: step number");
                r.Expect("grads"); c.Grads[t] = r.Floats(c.Total);
                r.Expect("params"); c.Params[t] = r.Floats(c.Total);
            }
            r.Expect("slow_final");
            if (r.Int() == 1)
                c.SlowFinal = r.Floats(c.Total);
            r.Expect("end");
            return c;
        }

        private enum Mode { Step, WithGrads, Split }

        private sealed class Run
        {
            internal float[][] Params;
            internal float[] Lrs, Slow;
        }

        private static Optimizer Build(Case c, SimdTier tier)
        {
            Config cfg = Config.Init();
            BaseParams b;
            if (c.Kind == "sgd" || c.Kind == "scheduled_sgd")
            {
                b = BaseParams.Init(BaseKind.Sgd);
                b.Momentum = c.Momentum;
                b.Dampening = c.Dampening;
                b.Nesterov = c.Nesterov;
            }
            else if (c.Kind == "adam" || c.Kind == "adamw")
            {
                b = BaseParams.Init(c.Kind == "adamw" ? BaseKind.AdamW : BaseKind.Adam);
                b.B1 = c.B1;
                b.B2 = c.B2;
                b.Eps = c.Eps;
                if (c.Kind == "adamw")
                    b.DecoupledWeightDecay = c.DecoupledWd;
            }
            else
                throw new RowFailure("base kind " + c.Kind + " is not mapped");
            Schedule? sched = null;
            if (c.Scheduled)
            {
                Schedule s = Schedule.Init(ScheduleKind.Exponential);
                s.BaseLr = c.SchedBase;
                s.Gamma = c.SchedGamma;
                sched = s;
                cfg.ScheduleManual = 0;
            }
            else
                cfg.Lr = c.Lr;
            if (c.SyncPeriod > 0)
            {
                cfg.Lookahead = 1;
                cfg.SyncPeriod = c.SyncPeriod;
                cfg.Alpha = c.Alpha;
            }
            cfg.WeightDecay = c.WeightDecay;
            cfg.GradClipNorm = c.ClipNorm;
            cfg.GradClipValue = c.ClipValue;
            cfg.SimdTier = tier;
            return new Optimizer(cfg, b, sched);
        }

        private static Run Replay(Case c, SimdTier tier, Mode mode)
        {
            var run = new Run { Params = new float[c.Steps][], Lrs = new float[c.Steps] };
            int nb = c.Lens.Length;
            var p = new float[nb][];
            var g = new float[nb][];
            using (Optimizer opt = Build(c, tier))
            {
                for (int b = 0, off = 0; b < nb; off += c.Lens[b], b++)
                {
                    p[b] = new float[c.Lens[b]];
                    g[b] = new float[c.Lens[b]];
                    Array.Copy(c.Init, off, p[b], 0, c.Lens[b]);
                    opt.AddParam(p[b], g[b]);
                }
                var given = new float[nb][];
                var slowBefore = new float[nb][];
                for (int b = 0; b < nb; b++)
                {
                    given[b] = new float[c.Lens[b]];
                    slowBefore[b] = new float[c.Lens[b]];
                }
                for (int t = 0; t < c.Steps; t++)
                {
                    run.Lrs[t] = opt.CurrentLr;
                    if (c.SyncPeriod > 0)
                        for (int b = 0; b < nb; b++)
                            opt.CopySlowWeights(b, slowBefore[b]);
                    for (int b = 0, off = 0; b < nb; off += c.Lens[b], b++)
                        Array.Copy(c.Grads[t], off, mode == Mode.WithGrads ? given[b] : g[b], 0, c.Lens[b]);
                    bool applied;
                    switch (mode)
                    {
                        case Mode.WithGrads:
                            for (int b = 0; b < nb; b++)
                                for (int i = 0; i < g[b].Length; i++)
                                    g[b][i] = float.NaN; // only the passed gradients may be read
                            applied = opt.StepWithGrads(given);
                            break;
                        case Mode.Split:
                        {
                            long cut = ((t + 1) * 389L) % (c.Total + 1);
                            applied = opt.BeginStep();
                            if (applied)
                            {
                                opt.StepRange(cut, c.Total);
                                opt.StepRange(0, cut);
                                opt.EndStep();
                            }
                            break;
                        }
                        default:
                            applied = opt.Step();
                            break;
                    }
                    T.Require(applied, "step {0} was skipped", t + 1);
                    run.Params[t] = new float[c.Total];
                    for (int b = 0, off = 0; b < nb; off += c.Lens[b], b++)
                        Array.Copy(p[b], 0, run.Params[t], off, c.Lens[b]);
                    if (c.SyncPeriod > 0)
                    {
                        for (int b = 0; b < nb; b++)
                        {
                            var slow = new float[c.Lens[b]];
                            opt.CopySlowWeights(b, slow);
                            if (c.IsSync[t + 1])
                                T.Require(T.SameBits(slow, p[b]), "step {0} is a sync step but {1} is not bit-equal to its slow weights", t + 1, c.BufNames[b]);
                            else
                                T.Require(T.SameBits(slow, slowBefore[b]), "step {0} is not a sync step but the slow weights of {1} changed", t + 1, c.BufNames[b]);
                        }
                    }
                }
                T.Require(opt.StepCount == c.Steps, "StepCount {0} after {1} steps", opt.StepCount, c.Steps);
                if (c.SyncPeriod > 0)
                {
                    run.Slow = new float[c.Total];
                    for (int b = 0, off = 0; b < nb; off += c.Lens[b], b++)
                    {
                        var slow = new float[c.Lens[b]];
                        opt.CopySlowWeights(b, slow);
                        Array.Copy(slow, 0, run.Slow, off, c.Lens[b]);
                    }
                }
            }
            return run;
        }

        // The worst err / tol over ours vs ref; throws on the first element out of tolerance.
        private static double Compare(Case c, string place, float[] ours, float[] reference)
        {
            double worst = 0;
            for (int i = 0; i < c.Total; i++)
            {
                double o = ours[i], r = reference[i];
                double err = Math.Abs(o - r), tol = Atol + Rtol * Math.Abs(r);
                T.Require(err <= tol, "{0} element {1}: ours {2:R} ref {3:R} |diff| {4:E3} > tol {5:E3}", place, i, o, r, err, tol);
                worst = Math.Max(worst, err / tol);
            }
            return worst;
        }

        internal static void RunAll(string path)
        {
            T.Section("golden trajectories (" + path + "): within 1e-5 + 1e-5|ref| of braintools, variants bit-identical");
            var r = new Reader(path);
            r.Expect("flatopt-golden-text");
            T.Require(r.Int() == 1, "golden text format version");
            r.Expect("cases");
            int ncases = r.Int();
            var variants = new List<Tuple<string, SimdTier, Mode>>();
            foreach (SimdTier t in new[] { SimdTier.Scalar, SimdTier.Portable, SimdTier.Avx2, SimdTier.Avx512 })
                if (Library.IsSimdTierAvailable(t))
                    variants.Add(Tuple.Create("tier=" + Library.SimdTierName(t), t, Mode.Step));
            variants.Add(Tuple.Create("StepWithGrads", SimdTier.Default, Mode.WithGrads));
            variants.Add(Tuple.Create("BeginStep/StepRange/EndStep", SimdTier.Default, Mode.Split));
            double worstAll = 0;
            for (int k = 0; k < ncases; k++)
            {
                Case c = ReadCase(r);
                Run first = null;
                T.Run(string.Format("golden {0} [{1}] vs braintools ({2} steps, {3} elements)", c.Name, variants[0].Item1, c.Steps, c.Total), () =>
                {
                    first = Replay(c, variants[0].Item2, variants[0].Item3);
                    double worst = 0;
                    for (int t = 0; t < c.Steps; t++)
                    {
                        double want = c.LrPerStep[t], got = first.Lrs[t];
                        T.Require(Math.Abs(got - want) <= LrRtol * Math.Abs(want), "step {0}: CurrentLr {1:R}, lr_per_step {2:R}", t + 1, got, want);
                        worst = Math.Max(worst, Compare(c, "step " + (t + 1), first.Params[t], c.Params[t]));
                    }
                    if (c.SlowFinal != null)
                    {
                        T.Require(first.Slow != null, "no slow weights");
                        worst = Math.Max(worst, Compare(c, "slow_final", first.Slow, c.SlowFinal));
                    }
                    worstAll = Math.Max(worstAll, worst);
                    return string.Format("worst err/tol {0:F4}", worst);
                });
                for (int v = 1; v < variants.Count; v++)
                {
                    var vr = variants[v];
                    T.Run(string.Format("golden {0} [{1}] bit-identical to [{2}]", c.Name, vr.Item1, variants[0].Item1), () =>
                    {
                        T.Require(first != null, "no first run to compare with");
                        Run other = Replay(c, vr.Item2, vr.Item3);
                        for (int t = 0; t < c.Steps; t++)
                        {
                            T.Require(T.SameBits(other.Params[t], first.Params[t]), "params differ at step {0}", t + 1);
                            T.Require(T.Bits(other.Lrs[t]) == T.Bits(first.Lrs[t]), "lr differs at step {0}", t + 1);
                        }
                        T.Require((other.Slow == null) == (first.Slow == null) && (first.Slow == null || T.SameBits(other.Slow, first.Slow)), "slow weights differ");
                        return "";
                    });
                }
            }
            T.Require(r.AtEnd, "trailing data after the last case");
            T.Row(string.Format("golden: {0} cases read", ncases), ncases > 0, string.Format("worst err/tol {0:F4} (must be <= 1)", worstAll));
        }
    }
}
