// Family.cs: the rules with per-buffer reductions through the C# binding. Adafactor with
// shaped buffers (Optimizer.AddParamShaped, flatopt_param_options.rows / .cols) against an f64
// model of docs/numerics.md, "Adafactor", with the golden files' tolerance; a buffer of two
// matrices against two buffers, bit for bit; checkpoints of shaped buffers; bad shapes. And
// the sharded three-phase step of LAMB, LARS and NovoGrad (SumSquaresPartials, NormPartials,
// StepWithNorms) against one process, bit for bit.

using System;
using System.Linq;

namespace Flatopt.Tests
{
    internal static class Family
    {
        internal static void Run()
        {
            T.Section("Adafactor with shaped buffers; sharded LAMB, LARS, NovoGrad");
            foreach (AdafactorRow r in AdafactorRows)
                T.Run("Adafactor " + r.Name + " == f64 model, 25 steps", () => AdafactorAgainstModel(r));
            T.Run("Adafactor: one buffer of 2 matrices == 2 buffers (no clipping, no parameter scale)", OneBufferTwoMatrices);
            T.Run("Adafactor: a shaped checkpoint resumes bit for bit; other shapes and bad ones refused", ShapedCheckpoints);
            foreach (Tuple<string, BaseParams> r in ShardedRows())
                T.Run("sharded " + r.Item1 + " (3 shards, NormPartials + StepWithNorms) == 1 optimizer, 8 steps",
                    () => ShardedNorms(r.Item2));
        }

        private sealed class AdafactorRow
        {
            internal string Name;
            internal long Rows, Cols, Matrices, Length; // Length: without a shape (Rows 0)
            internal bool Optax;
            internal double Momentum, WeightDecay, Clip;
            internal bool ParamScale = true;
            internal ulong Lookahead;
        }

        private static readonly AdafactorRow[] AdafactorRows =
        {
            new AdafactorRow { Name = "torch 3x4", Rows = 3, Cols = 4, Matrices = 1, Clip = 1.0 },
            new AdafactorRow { Name = "torch 3 matrices 5x6, decay 0.1, clip 2", Rows = 5, Cols = 6, Matrices = 3, WeightDecay = 0.1, Clip = 2.0 },
            new AdafactorRow { Name = "torch 1x10", Rows = 1, Cols = 10, Matrices = 1, Clip = 1.0 },
            new AdafactorRow { Name = "torch 10x1", Rows = 10, Cols = 1, Matrices = 1, Clip = 1.0 },
            new AdafactorRow { Name = "optax momentum 0.9, decay 1e-3, 4x7 x2", Rows = 4, Cols = 7, Matrices = 2, Optax = true, Momentum = 0.9, WeightDecay = 1e-3, Clip = 1.0 },
            new AdafactorRow { Name = "optax no clipping, no parameter scale, 6x3", Rows = 6, Cols = 3, Matrices = 1, Optax = true, Clip = double.NaN, ParamScale = false },
            new AdafactorRow { Name = "torch Lookahead k=3, 4x5 x2", Rows = 4, Cols = 5, Matrices = 2, WeightDecay = 0.05, Clip = 1.0, Lookahead = 3 },
            new AdafactorRow { Name = "unfactored torch", Length = 19, WeightDecay = 0.1, Clip = 1.0 },
        };

        private static BaseParams Params(AdafactorRow r)
        {
            BaseParams h = BaseParams.Init(BaseKind.Adafactor);
            if (r.Optax)
            {
                h.EpsRoot = 1e-30;
                h.Eps = 0.0;
                h.RelativeStep = 0;
                h.WeightDecayByLr = 0;
            }
            h.Momentum = r.Momentum;
            h.DecoupledWeightDecay = r.WeightDecay;
            h.ClippingThreshold = r.Clip;
            h.MultiplyByParameterScale = r.ParamScale ? 1u : 0u;
            return h;
        }

        private static Optimizer New(BaseParams h, double lr, ulong lookahead)
        {
            Config c = Config.Init();
            c.Lr = lr;
            if (lookahead > 0)
            {
                c.Lookahead = 1;
                c.SyncPeriod = lookahead;
                c.Alpha = 0.5;
            }
            return new Optimizer(c, h);
        }

        private static void Grad(float[] g, int t)
        {
            for (int i = 0; i < g.Length; i++)
                g[i] = (float)(Math.Sin(0.41 * i + 0.9 * t) * (0.75 + 0.15 * (i % 6)));
        }

        // One update of the f64 model: v holds rows then cols averages per matrix (or one per
        // element without a shape).
        private static void ModelStep(AdafactorRow r, BaseParams h, double lr, double[] p, double[] v,
                                      double[] m, double[] slow, float[] g, int t)
        {
            int n = p.Length;
            var u = new double[n];
            double w = Math.Pow(Math.Max(t - h.DecayOffset, 1.0), -h.DecayRate), beta = 1.0 - w;
            double floor2 = h.Eps * h.Eps;
            if (r.Rows == 0)
            {
                for (int i = 0; i < n; i++)
                {
                    v[i] = beta * v[i] + w * ((double)g[i] * g[i] + h.EpsRoot);
                    u[i] = g[i] / Math.Sqrt(Math.Max(floor2, v[i]));
                }
            }
            else
            {
                int R = (int)r.Rows, C = (int)r.Cols;
                for (int k = 0; k < r.Matrices; k++)
                {
                    int vb = k * (R + C), gb = k * R * C;
                    double mean = 0.0;
                    for (int i = 0; i < R; i++)
                    {
                        double s = 0.0;
                        for (int j = 0; j < C; j++)
                            s += (double)g[gb + i * C + j] * g[gb + i * C + j];
                        v[vb + i] = beta * v[vb + i] + w * (s / C + h.EpsRoot);
                        mean += v[vb + i];
                    }
                    mean = Math.Max(mean / R, h.Eps);
                    for (int j = 0; j < C; j++)
                    {
                        double s = 0.0;
                        for (int i = 0; i < R; i++)
                            s += (double)g[gb + i * C + j] * g[gb + i * C + j];
                        v[vb + R + j] = beta * v[vb + R + j] + w * (s / R + h.EpsRoot);
                    }
                    for (int i = 0; i < R; i++)
                        for (int j = 0; j < C; j++)
                            u[gb + i * C + j] = g[gb + i * C + j]
                                / Math.Sqrt(Math.Max(floor2, v[vb + i] / mean * v[vb + R + j]));
                }
            }
            double su = 0.0, sp = 0.0;
            for (int i = 0; i < n; i++)
            {
                su += u[i] * u[i];
                sp += p[i] * p[i];
            }
            double den = double.IsNaN(h.ClippingThreshold) ? 1.0 : Math.Max(1.0, Math.Sqrt(su / n) / h.ClippingThreshold);
            double scale = h.MultiplyByParameterScale != 0 ? Math.Max(h.EpsScale, Math.Sqrt(sp / n)) : 1.0;
            double lrT = h.RelativeStep != 0 ? Math.Min(lr, 1.0 / Math.Sqrt(t)) : lr;
            double kd = h.WeightDecayByLr != 0 ? lr * h.DecoupledWeightDecay : h.DecoupledWeightDecay;
            for (int i = 0; i < n; i++)
            {
                double s = lrT * scale / den * u[i];
                if (h.Momentum > 0.0)
                    s = m[i] = h.Momentum * m[i] + (1.0 - h.Momentum) * s;
                p[i] -= s + kd * p[i];
            }
            if (r.Lookahead > 0 && (ulong)t % r.Lookahead == 0)
                for (int i = 0; i < n; i++)
                    p[i] = slow[i] = slow[i] + 0.5 * (p[i] - slow[i]);
        }

        private static string AdafactorAgainstModel(AdafactorRow r)
        {
            const double lr = 0.03;
            BaseParams h = Params(r);
            int n = (int)(r.Rows > 0 ? r.Matrices * r.Rows * r.Cols : r.Length);
            int nv = (int)(r.Rows > 0 ? r.Matrices * (r.Rows + r.Cols) : n);
            float[] p = T.Filled(n, 900u + (uint)n, 1f), g = new float[n];
            double[] mp = p.Select(x => (double)x).ToArray(), slow = (double[])mp.Clone();
            double[] v = new double[nv], m = new double[n];
            double worst = 0.0;
            using (Optimizer o = New(h, lr, r.Lookahead))
            {
                if (r.Rows > 0)
                    o.AddParamShaped(p, g, r.Rows, r.Cols);
                else
                    o.AddParam(p, g);
                for (int t = 1; t <= 25; t++)
                {
                    Grad(g, t);
                    T.Require(o.Step(), "step {0} skipped", t);
                    ModelStep(r, h, lr, mp, v, m, slow, g, t);
                    for (int i = 0; i < n; i++)
                        worst = Math.Max(worst, Math.Abs(p[i] - mp[i]) / (1e-5 + 1e-5 * Math.Abs(mp[i])));
                }
            }
            T.Require(worst <= 1.0, "{0:G3} of the tolerance from the f64 model", worst);
            return string.Format("{0:G3} of the tolerance", worst);
        }

        private static string OneBufferTwoMatrices()
        {
            const int R = 5, C = 7, N = 2 * R * C;
            BaseParams h = Params(new AdafactorRow { Optax = true, Momentum = 0.9, WeightDecay = 1e-3, Clip = double.NaN, ParamScale = false });
            float[] whole = T.Filled(N, 31u, 1f), g = new float[N];
            float[] a = whole.Take(R * C).ToArray(), b = whole.Skip(R * C).ToArray();
            float[] ga = new float[R * C], gb = new float[R * C];
            using (Optimizer one = New(h, 0.01, 0))
            using (Optimizer two = New(h, 0.01, 0))
            {
                one.AddParamShaped(whole, g, R, C);
                two.AddParamShaped(a, ga, R, C);
                two.AddParamShaped(b, gb, R, C);
                for (int t = 1; t <= 10; t++)
                {
                    Grad(g, t);
                    Array.Copy(g, 0, ga, 0, R * C);
                    Array.Copy(g, R * C, gb, 0, R * C);
                    one.Step();
                    two.Step();
                    T.Require(T.SameBits(whole, a.Concat(b).ToArray()), "differs at step {0}", t);
                }
            }
            return "bit-identical";
        }

        private static string ShapedCheckpoints()
        {
            const int R = 4, C = 6, N = 2 * R * C;
            BaseParams h = Params(new AdafactorRow { WeightDecay = 0.05, Clip = 1.0 });
            float[] x = T.Filled(N, 41u, 1f), g = new float[N], gy = new float[N];
            byte[] ck;
            float[] y;
            using (Optimizer ox = New(h, 0.02, 0))
            {
                ox.AddParamShaped(x, g, R, C);
                for (int t = 1; t <= 6; t++)
                {
                    Grad(g, t);
                    ox.Step();
                }
                ck = ox.Save();
                y = (float[])x.Clone();
                using (Optimizer oy = New(h, 0.02, 0))
                {
                    oy.AddParamShaped(y, gy, R, C);
                    oy.Load(ck);
                    for (int t = 7; t <= 14; t++)
                    {
                        Grad(g, t);
                        Array.Copy(g, gy, N);
                        ox.Step();
                        oy.Step();
                        T.Require(T.SameBits(x, y), "the loaded optimizer differs at step {0}", t);
                    }
                }
            }
            float[] z = new float[N], spare = new float[N];
            using (Optimizer transposed = New(h, 0.02, 0))
            using (Optimizer flat = New(h, 0.02, 0))
            {
                transposed.AddParamShaped(z, g, C, R);
                flat.AddParam(z, g);
                Expect<InvalidArgumentException>(() => transposed.Load(ck), "(4, 6) in the checkpoint, (6, 4)");
                Expect<InvalidArgumentException>(() => flat.Load(ck), "shape");
                T.Require(transposed.StepCount == 0 && flat.StepCount == 0, "a refused load counted steps");
                Expect<InvalidArgumentException>(() => flat.AddParamShaped(spare, g, 5, 5), "(5, 5)");
                Expect<InvalidArgumentException>(() => flat.AddParamShaped(spare, g, 0, N), "shape");
                T.Require(flat.NumParams == 1, "a refused shape registered a buffer ({0})", flat.NumParams);
            }
            return "bit-identical; refusals name the shapes";
        }

        private static void Expect<E>(Action a, string words) where E : FlatoptException
        {
            try
            {
                a();
            }
            catch (E e)
            {
                T.Require(e.Message.Contains(words), "message \"{0}\" lacks \"{1}\"", e.Message, words);
                return;
            }
            T.Require(false, "no {0} (\"{1}\")", typeof(E).Name, words);
        }

        private static Tuple<string, BaseParams>[] ShardedRows()
        {
            BaseParams lamb = BaseParams.Init(BaseKind.Lamb);
            lamb.DecoupledWeightDecay = 0.01;
            BaseParams lars = BaseParams.Init(BaseKind.Lars);
            lars.Momentum = 0.9;
            lars.DecoupledWeightDecay = 1e-3;
            BaseParams novograd = BaseParams.Init(BaseKind.Novograd);
            novograd.DecoupledWeightDecay = 1e-3;
            return new[]
            {
                Tuple.Create("LAMB", lamb), Tuple.Create("LARS", lars), Tuple.Create("NovoGrad", novograd),
            };
        }

        // One buffer cut into 3 shards (each a 4096-element block boundary) with clipping by the
        // global norm: the three phases (block sums of squares; per-buffer norm partials; the
        // update with the totals) give the one-process step's bits.
        private static string ShardedNorms(BaseParams h)
        {
            int bs = (int)Kernels.SumSquaresBlockSize;
            int n = 3 * bs + 77;
            int[] cut = { 0, bs, 2 * bs, n };
            float[] p = T.Filled(n, 51u, 1f), g = new float[n];
            var parts = new float[3][];
            var grads = new float[3][];
            var shards = new Optimizer[3];
            Config c = Config.Init();
            c.Lr = 0.01;
            c.GradClipNorm = 5.0;
            using (var whole = new Optimizer(c, h))
            {
                whole.AddParam(p, g);
                try
                {
                    for (int k = 0; k < 3; k++)
                    {
                        parts[k] = p.Skip(cut[k]).Take(cut[k + 1] - cut[k]).ToArray();
                        grads[k] = new float[parts[k].Length];
                        c.StateIndexOffset = (ulong)cut[k];
                        shards[k] = new Optimizer(c, h);
                        shards[k].AddParam(parts[k], grads[k]);
                    }
                    var blocks = shards.Select(s => new double[s.SumSquaresBlockCount]).ToArray();
                    var np = blocks.Select(b => new double[2 * b.Length]).ToArray();
                    var norms = new double[2];
                    for (int t = 0; t < 8; t++)
                    {
                        T.Fill(g, 600u + (uint)t, 2f);
                        for (int k = 0; k < 3; k++)
                            Array.Copy(g, cut[k], grads[k], 0, grads[k].Length);
                        double sum = 0.0;
                        for (int k = 0; k < 3; k++)
                        {
                            shards[k].SumSquaresPartials(blocks[k]);
                            foreach (double d in blocks[k])
                                sum += d;
                        }
                        norms[0] = norms[1] = 0.0;
                        for (int k = 0; k < 3; k++)
                        {
                            shards[k].NormPartials(sum, np[k]);
                            for (int j = 0; j < np[k].Length; j += 2)
                            {
                                norms[0] += np[k][j];
                                norms[1] += np[k][j + 1];
                            }
                        }
                        whole.Step();
                        for (int k = 0; k < 3; k++)
                            shards[k].StepWithNorms(sum, norms);
                        T.Require(T.SameBits(p, parts.SelectMany(x => x).ToArray()), "differs at step {0}", t + 1);
                    }
                    Expect<LengthMismatchException>(() => shards[0].StepWithNorms(1.0, new double[3]), "norms");
                    Expect<InvalidArgumentException>(() => shards[0].StepWithNorms(1.0, new[] { 1.0, -1.0 }), "norms");
                    Expect<LengthMismatchException>(() => shards[0].NormPartials(1.0, new double[3]), "2 * flatopt_optimizer_sum_squares_block_count");
                    T.Require(shards[0].StepCount == 8, "a refused call counted a step ({0})", shards[0].StepCount);
                }
                finally
                {
                    foreach (Optimizer s in shards)
                        if (s != null)
                            s.Dispose();
                }
            }
            return "bit-identical; bad norms refused";
        }
    }
}
