// TestMain.cs: the C# test program of the flatopt binding (make test-csharp).
//
// Usage: FLATOPT_TEST_TFM=netstandard2.0 mono test_csharp.exe LAYOUT.txt GOLDEN.txt TMPDIR
//   FLATOPT_TEST_TFM  the package folder lib/<tfm>/ the tested Flatopt.dll comes from
//   LAYOUT.txt  the printout of the C program gen_layout.py makes from include/flatopt.h
//   GOLDEN.txt  tests/data's golden trajectories converted by tests/c/golden_to_text.py
//   TMPDIR      a scratch directory for checkpoint files
// Sections: the assembly's target framework and references, the library and status mapping,
// the struct/enum/constant mirror, the hostile-input table, non-finite policies, golden
// trajectories, checkpoints (bytes and files), stateless kernels against the optimizer, sharded
// and split steps, parameter groups (Groups.cs), Adafactor's shaped buffers and the sharded
// LAMB / LARS / NovoGrad step (Family.cs), native memory, pins released on Dispose, zero managed allocations over
// 100,000 steps, and the step's overhead over C.

using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.IO;
using System.Linq;
using System.Reflection;
using System.Runtime.InteropServices;
using System.Threading;

namespace Flatopt.Tests
{
    internal static unsafe class Program
    {
        [DllImport("flatopt_cbench", CallingConvention = CallingConvention.Cdecl)]
        private static extern double cbench_step_ns(OptimizerHandle opt, int steps);

        // The test's own declarations, to hand the library structs of other sizes than the
        // binding's (an older or a newer caller).
        [DllImport("flatopt", CallingConvention = CallingConvention.Cdecl)]
        private static extern Status flatopt_optimizer_new(IntPtr config, out IntPtr opt);

        [DllImport("flatopt", CallingConvention = CallingConvention.Cdecl)]
        private static extern void flatopt_optimizer_free(IntPtr opt);

        [DllImport("flatopt", CallingConvention = CallingConvention.Cdecl)]
        private static extern Status flatopt_config_init(IntPtr config, UIntPtr size);

        // Only in a library built with the test-only `fault-injection` feature: the next step on
        // this thread panics inside the library.
        [DllImport("flatopt", CallingConvention = CallingConvention.Cdecl)]
        private static extern void flatopt_test_panic_next_step();

        private static int Main(string[] args)
        {
            if (args.Length == 1 && args[0] == "--finalizer-check")
                return FinalizerCheck();
            if (args.Length == 1 && args[0] == "--poison")
                return PoisonRows();
            if (args.Length != 3 && args.Length != 4)
            {
                Console.Error.WriteLine("usage: test_csharp.exe LAYOUT.txt GOLDEN.txt TMPDIR [POISON_APP_DIR]");
                return 2;
            }
            Console.WriteLine("test_csharp: flatopt {0} (binding for {1}.{2}.x), {3}, {4}-bit, default tier {5}",
                Library.Version, Abi.VersionMajor, Abi.VersionMinor, RuntimeName(), IntPtr.Size * 8,
                Library.SimdTierName(Library.DefaultSimdTier));
            Section(() => TheAssembly());
            Section(() => LibraryAndStatuses());
            Section(() => Layout.Run(args[0]));
            Section(() => VersionedStructs());
            Section(() => Hostile.Run(args[2]));
            Section(() => NonFinitePolicies());
            Section(() => Golden.RunAll(args[1]));
            Section(() => Checkpoints(args[2]));
            Section(() => StatelessAgainstOptimizer());
            Section(() => ShardedAndSplit());
            Section(() => CompressedState());
            Section(() => Groups.Run());
            Section(() => Family.Run());
            Section(() => NativeMemoryAndPins());
            Section(() => Allocations());
            Section(() => Overhead());
            Section(() => Poison(args.Length == 4 ? args[3] : null));
            Console.WriteLine();
            if (T.Failed > 0)
            {
                Console.WriteLine("failed rows:");
                foreach (string f in T.Failures)
                    Console.WriteLine("  " + f);
            }
            Console.WriteLine("test_csharp: {0} passed, {1} failed", T.Passed, T.Failed);
            return T.Failed == 0 ? 0 : 1;
        }

        private static void Section(Action a)
        {
            try
            {
                a();
            }
            catch (Exception e)
            {
                T.Row("section aborted", false, e.GetType().Name + ": " + e.Message + "\n" + e.StackTrace);
            }
        }

        private static string RuntimeName()
        {
            Type mono = Type.GetType("Mono.Runtime");
            if (mono != null)
            {
                MethodInfo dn = mono.GetMethod("GetDisplayName", BindingFlags.NonPublic | BindingFlags.Static);
                return "Mono " + (dn != null ? dn.Invoke(null, null) : "");
            }
            return ".NET " + Environment.Version;
        }

        // ------------------------------------------------------------------------------------

        // The package folder (lib/<tfm>/) the tested Flatopt.dll was built for, as run.sh names
        // it, and what that framework's assembly must declare: its TargetFramework attribute and
        // the full names of the assemblies it references (nothing else: a .NET Standard 2.0
        // library that also referenced mscorlib would not load where netstandard is the only
        // framework, and would not be what Unity and Godot 4 .NET expect).
        private static readonly Dictionary<string, Tuple<string, string[]>> Frameworks =
            new Dictionary<string, Tuple<string, string[]>>
            {
                {
                    "netstandard2.0", Tuple.Create(".NETStandard,Version=v2.0", new[]
                    {
                        "netstandard, Version=2.0.0.0, Culture=neutral, PublicKeyToken=cc7b13ffcd2ddd51",
                    })
                },
                {
                    "net471", Tuple.Create(".NETFramework,Version=v4.7.1", new[]
                    {
                        "mscorlib, Version=4.0.0.0, Culture=neutral, PublicKeyToken=b77a5c561934e089",
                    })
                },
            };

        private static void TheAssembly()
        {
            string tfm = Environment.GetEnvironmentVariable("FLATOPT_TEST_TFM") ?? "";
            T.Section("the assembly: Flatopt.dll of lib/" + tfm + "/");
            Assembly asm = typeof(Optimizer).Assembly;
            Tuple<string, string[]> want;
            if (!T.Row("FLATOPT_TEST_TFM names a known package folder", Frameworks.TryGetValue(tfm, out want), "\"" + tfm + "\""))
                return;
            var attr = (System.Runtime.Versioning.TargetFrameworkAttribute)Attribute.GetCustomAttribute(asm,
                typeof(System.Runtime.Versioning.TargetFrameworkAttribute));
            T.Row("TargetFramework is " + want.Item1, attr != null && attr.FrameworkName == want.Item1,
                attr == null ? "no attribute" : attr.FrameworkName);
            string[] refs = asm.GetReferencedAssemblies().Select(a => a.FullName).OrderBy(n => n, StringComparer.Ordinal).ToArray();
            T.Row("references only " + string.Join(", ", want.Item2), refs.SequenceEqual(want.Item2), string.Join("; ", refs));
        }

        // ------------------------------------------------------------------------------------

        private static void LibraryAndStatuses()
        {
            T.Section("library and status mapping");
            T.Row("Library.VersionNumber has the binding's major.minor", Library.VersionNumber / 100 == Abi.VersionNumber / 100,
                Library.Version + " = " + Library.VersionNumber);
            T.Row("Library.Version matches VersionNumber", Library.Version == string.Format("{0}.{1}.{2}",
                Library.VersionNumber / 10000, Library.VersionNumber / 100 % 100, Library.VersionNumber % 100), Library.Version);
            T.Row("scalar and portable tiers available", Library.IsSimdTierAvailable(SimdTier.Scalar) && Library.IsSimdTierAvailable(SimdTier.Portable));
            T.Row("Library.SimdTierName(Avx2)", Library.SimdTierName(SimdTier.Avx2) == "avx2", Library.SimdTierName(SimdTier.Avx2));
            T.Row("Kernels.SumSquaresBlockSize > 0", Kernels.SumSquaresBlockSize > 0, Kernels.SumSquaresBlockSize.ToString());
            var want = new Dictionary<Status, Type>
            {
                { Status.ErrNullPointer, typeof(NullPointerException) },
                { Status.ErrInvalidArgument, typeof(InvalidArgumentException) },
                { Status.ErrLengthMismatch, typeof(LengthMismatchException) },
                { Status.ErrNonFinite, typeof(NonFiniteException) },
                { Status.ErrInvalidState, typeof(InvalidStateException) },
                { Status.ErrUnsupported, typeof(UnsupportedException) },
                { Status.ErrOverlap, typeof(OverlapException) },
                { Status.ErrIo, typeof(CheckpointIOException) },
                { Status.ErrCorrupt, typeof(CorruptException) },
                { Status.ErrInternal, typeof(InternalException) },
                { Status.ErrBusy, typeof(BusyException) },
                { Status.ErrPoisoned, typeof(PoisonedException) },
            };
            var types = new HashSet<Type>();
            foreach (Status s in Enum.GetValues(typeof(Status)))
            {
                string str = Library.StatusString(s);
                if (s == Status.Ok || s == Status.Skipped)
                {
                    T.Row("status " + s + " is not an error", !want.ContainsKey(s), "\"" + str + "\"");
                    continue;
                }
                Type wt;
                bool mapped = want.TryGetValue(s, out wt);
                FlatoptException e = FlatoptException.Create(s, "m");
                types.Add(e.GetType());
                T.Row("status " + s + " -> " + (mapped ? wt.Name : "?"), mapped && e.GetType() == wt && e.Status == s
                    && e.Message == "m" && str.Length > 0, e.GetType().Name + ", \"" + str + "\"");
            }
            T.Row("every error status has its own exception type", types.Count == want.Count, types.Count + " types");
            FlatoptException unknown = FlatoptException.Create((Status)99, "m");
            T.Row("unknown status 99 -> FlatoptException", unknown.GetType() == typeof(FlatoptException) && (int)unknown.Status == 99);
            // The message is the library's, read right after the failing call.
            T.Run("exception carries flatopt_last_error_message()", () =>
            {
                try
                {
                    Kernels.Scale(new float[3], float.NaN);
                }
                catch (InvalidArgumentException e)
                {
                    T.Require(e.Message == Library.LastErrorMessage, "message \"{0}\" != last error \"{1}\"", e.Message, Library.LastErrorMessage);
                    return "\"" + e.Message + "\"";
                }
                throw new RowFailure("no exception");
            });
            T.Run("Init defaults are the C _init defaults", () =>
            {
                Config c = Config.Init();
                BaseParams a = BaseParams.Init(BaseKind.Adam);
                StepArgs s = StepArgs.Init();
                T.Require(c.StructSize == Marshal.SizeOf(typeof(Config)) && c.Lr == 1e-3 && c.NumThreads == 1
                          && c.Nonfinite == NonFinite.Skip && c.SyncPeriod == 5 && c.Alpha == 0.5, "config defaults");
                T.Require(a.StructSize == Marshal.SizeOf(typeof(BaseParams)) && a.Kind == BaseKind.Adam && a.B1 == 0.9
                          && a.B2 == 0.999 && a.Eps == 1e-8, "Adam defaults");
                T.Require(s.StructSize == Marshal.SizeOf(typeof(StepArgs)) && s.Step == 1 && s.Lr == 1e-3 && s.ClipScale == 1.0, "step args defaults");
                Schedule o = Schedule.Init(ScheduleKind.OneCycle);
                T.Require(o.StructSize == Marshal.SizeOf(typeof(Schedule)) && o.PctStart == 0.3 && o.DivFactor == 25, "one-cycle defaults");
                return "";
            });
        }

        // ------------------------------------------------------------------------------------

        private static void VersionedStructs()
        {
            T.Section("versioned structs: the library's rules seen from C# (struct_size)");
            int size = Marshal.SizeOf(typeof(Config));
            // (row, struct_size, bytes handed over, a non-zero byte past the library's struct at,
            //  expected status, message substring)
            var rows = new[]
            {
                Tuple.Create("this binding's size", size, size, -1, Status.Ok, ""),
                Tuple.Create("FLATOPT_CONFIG_SIZE_V1", (int)Abi.ConfigSizeV1, size, -1, Status.Ok, ""),
                Tuple.Create("below FLATOPT_CONFIG_SIZE_V1", size - 4, size, -1, Status.ErrInvalidArgument, "struct_size"),
                Tuple.Create("0", 0, size, -1, Status.ErrInvalidArgument, "struct_size"),
                Tuple.Create("a newer caller's 8 more bytes, zero past the library's", size + 8, size + 8, -1, Status.Ok, ""),
                Tuple.Create("a newer caller's 8 more bytes, one set past the library's", size + 8, size + 8, size + 4, Status.ErrUnsupported, (size + 4).ToString()),
                Tuple.Create("more than 4096 bytes", 8192, 8192, -1, Status.ErrInvalidArgument, "struct_size"),
            };
            foreach (var r in rows)
            {
                T.Run("flatopt_optimizer_new, config.struct_size " + r.Item1 + " -> " + r.Item5, () =>
                {
                    IntPtr mem = Marshal.AllocHGlobal(r.Item3);
                    try
                    {
                        for (int i = 0; i < r.Item3; i++)
                            Marshal.WriteByte(mem, i, 0);
                        Status init = flatopt_config_init(mem, (UIntPtr)(uint)Math.Min(r.Item3, 4096));
                        T.Require(init == Status.Ok || r.Item3 > 4096, "flatopt_config_init({0} bytes): {1}", r.Item3, init);
                        if (init != Status.Ok)
                            Marshal.StructureToPtr(Config.Init(), mem, false);
                        Marshal.WriteInt32(mem, 0, r.Item2);
                        if (r.Item4 >= 0)
                            Marshal.WriteByte(mem, r.Item4, 1);
                        IntPtr opt;
                        Status st = flatopt_optimizer_new(mem, out opt);
                        string msg = st == Status.Ok ? "" : Library.LastErrorMessage;
                        if (st == Status.Ok)
                            flatopt_optimizer_free(opt);
                        T.Require(st == r.Item5 && msg.Contains(r.Item6), "{0} \"{1}\"", st, msg);
                        return st == Status.Ok ? "accepted" : "\"" + msg + "\"";
                    }
                    finally
                    {
                        Marshal.FreeHGlobal(mem);
                    }
                });
            }
        }

        // ------------------------------------------------------------------------------------

        private static Config AdamLookaheadConfig(NonFinite policy)
        {
            Config c = Config.Init();
            c.Lr = 0.01;
            c.Lookahead = 1;
            c.SyncPeriod = 3;
            c.Alpha = 0.5;
            c.GradClipNorm = 2.0;
            c.Nonfinite = policy;
            return c;
        }

        private static Optimizer AdamLookahead(NonFinite policy, float[][] p, float[][] g)
        {
            var o = new Optimizer(AdamLookaheadConfig(policy), BaseParams.Init(BaseKind.Adam));
            for (int i = 0; i < p.Length; i++)
                o.AddParam(p[i], g == null ? null : g[i]);
            return o;
        }

        // AdamLookahead with its last buffer in parameter group 1 (its own lr, no decay).
        private static Optimizer AdamLookaheadGrouped(float[][] p, float[][] g)
        {
            Config c = AdamLookaheadConfig(NonFinite.Skip);
            c.WeightDecay = 0.01;
            var o = new Optimizer(c, BaseParams.Init(BaseKind.Adam));
            GroupOptions go = GroupOptions.Init();
            go.Lr = 0.02;
            go.WeightDecay = 0;
            int group = o.AddGroup(go);
            for (int i = 0; i < p.Length; i++)
                o.AddParam(p[i], g[i], i == p.Length - 1 ? group : 0);
            return o;
        }

        private static float[][] Arrays(uint seed, params int[] lens)
        {
            return lens.Select((n, i) => T.Filled(n, seed + (uint)i, 1f)).ToArray();
        }

        private static void NonFinitePolicies()
        {
            T.Section("non-finite gradients: skip, error, propagate");
            var rows = new[]
            {
                Tuple.Create(NonFinite.Skip, float.NaN, 1, 7),
                Tuple.Create(NonFinite.Skip, float.PositiveInfinity, 0, 0),
                Tuple.Create(NonFinite.Error, float.NegativeInfinity, 2, 33),
                Tuple.Create(NonFinite.Error, float.NaN, 1, 16),
                Tuple.Create(NonFinite.Propagate, float.NaN, 1, 3),
            };
            foreach (var r in rows)
            {
                T.Run(string.Format("nonfinite {0}: {1} at buffer {2} index {3}", r.Item1, r.Item2, r.Item3, r.Item4), () =>
                {
                    float[][] p = Arrays(1, 5, 17, 40), g = Arrays(9, 5, 17, 40);
                    using (Optimizer o = AdamLookahead(r.Item1, p, g))
                    {
                        o.Step();
                        float[][] before = p.Select(a => (float[])a.Clone()).ToArray();
                        g[r.Item3][r.Item4] = r.Item2;
                        string what;
                        if (r.Item1 == NonFinite.Propagate)
                        {
                            T.Require(o.Step(), "Step returned false under propagate");
                            T.Require(float.IsNaN(p[r.Item3][r.Item4]), "the NaN did not reach the parameter");
                            return "applied, the parameter is NaN";
                        }
                        if (r.Item1 == NonFinite.Skip)
                        {
                            T.Require(!o.Step(), "Step returned true");
                            what = "Step() = false";
                        }
                        else
                        {
                            try
                            {
                                o.Step();
                                throw new RowFailure("no NonFiniteException");
                            }
                            catch (NonFiniteException e)
                            {
                                T.Require(e.Message.Contains("buffer " + r.Item3) && e.Message.Contains("index " + r.Item4),
                                    "message \"{0}\" does not name buffer {1} index {2}", e.Message, r.Item3, r.Item4);
                                what = "NonFiniteException \"" + e.Message + "\"";
                            }
                        }
                        for (int i = 0; i < p.Length; i++)
                            T.Require(T.SameBits(p[i], before[i]), "params of buffer {0} changed", i);
                        T.Require(o.StepCount == 1 && o.SkippedCount == 1, "counters {0} / {1}", o.StepCount, o.SkippedCount);
                        // The skipped update left Adam's state and the Lookahead timing alone: the
                        // checkpoint differs from the one before only by the skipped counter, so
                        // loading the old one and counting one skip must not be needed: the next
                        // finite step is applied as step 2.
                        g[r.Item3][r.Item4] = 0.5f;
                        T.Require(o.Step() && o.StepCount == 2, "the next finite step was not applied as step 2");
                        return what;
                    }
                });
            }
        }

        // ------------------------------------------------------------------------------------

        private static void Checkpoints(string tmp)
        {
            T.Section("checkpoints: byte arrays and files, round trip bit-identical");
            T.Run("checkpoint round trip (Save/Load bytes, SaveFile/LoadFile, Save(buffer))", () =>
            {
                const int before = 7, after = 9;
                float[][] p = Arrays(3, 33, 300, 7);
                float[][] g = Arrays(4, 33, 300, 7);
                Func<int, float[][]> grads = t => Arrays(100u + (uint)t * 3, 33, 300, 7);
                byte[] ckpt, fromBuffer;
                float[][] pAt, trajectory;
                string file = Path.Combine(tmp, "rt.ckpt");
                using (Optimizer o = AdamLookahead(NonFinite.Skip, p, g))
                {
                    for (int t = 0; t < before; t++)
                    {
                        var gt = grads(t);
                        for (int i = 0; i < g.Length; i++)
                            Array.Copy(gt[i], g[i], g[i].Length);
                        o.Step();
                    }
                    ckpt = o.Save();
                    CheckpointInfo info = o.CheckpointInfo(ckpt);
                    T.Require(info.StepCount == before && info.SkippedCount == 0 && T.Bits(info.CurrentLr) == T.Bits(o.CurrentLr),
                        "CheckpointInfo {0} / {1} / {2}", info.StepCount, info.SkippedCount, info.CurrentLr);
                    T.Require(ckpt.Length == o.CheckpointSize, "Save() length {0} != CheckpointSize {1}", ckpt.Length, o.CheckpointSize);
                    fromBuffer = new byte[ckpt.Length + 10];
                    int n = o.Save(fromBuffer);
                    T.Require(n == ckpt.Length && T.SameBytes(fromBuffer.Take(n).ToArray(), ckpt), "Save(buffer) differs from Save()");
                    o.SaveFile(file);
                    T.Require(T.SameBytes(File.ReadAllBytes(file), ckpt), "the file differs from Save()");
                    pAt = p.Select(a => (float[])a.Clone()).ToArray();
                    for (int t = before; t < before + after; t++)
                        o.StepWithGrads(grads(t));
                    trajectory = p.Select(a => (float[])a.Clone()).ToArray();
                }
                foreach (string how in new[] { "Load(bytes)", "LoadFile", "Load(buffer, offset, count)" })
                {
                    float[][] q = pAt.Select(a => (float[])a.Clone()).ToArray();
                    using (Optimizer o = AdamLookahead(NonFinite.Skip, q, null))
                    {
                        if (how == "LoadFile")
                            o.LoadFile(file);
                        else if (how == "Load(bytes)")
                            o.Load(ckpt);
                        else
                        {
                            byte[] framed = new byte[] { 9, 9, 9 }.Concat(ckpt).Concat(new byte[] { 7 }).ToArray();
                            o.Load(framed, 3, ckpt.Length);
                        }
                        T.Require(o.StepCount == before, "{0}: StepCount {1}", how, o.StepCount);
                        T.Require(T.SameBytes(o.Save(), ckpt), "{0}: Save() after Load differs", how);
                        for (int t = before; t < before + after; t++)
                            o.StepWithGrads(grads(t));
                        for (int i = 0; i < q.Length; i++)
                            T.Require(T.SameBits(q[i], trajectory[i]), "{0}: buffer {1} differs after {2} more steps", how, i, after);
                    }
                }
                return string.Format("{0} bytes; 3 restores continue bit-identically for {1} steps", ckpt.Length, after);
            });
        }

        // ------------------------------------------------------------------------------------

        private static void StatelessAgainstOptimizer()
        {
            T.Section("stateless kernels against the optimizer");
            foreach (BaseKind kind in new[] { BaseKind.Sgd, BaseKind.Adam, BaseKind.AdamW, BaseKind.RAdam })
            {
                T.Run("stateless " + kind + " with Lookahead == Optimizer (10 steps, bit-identical)", () =>
                {
                    const int n = 37, k = 3;
                    BaseParams hp = BaseParams.Init(kind);
                    if (kind == BaseKind.Sgd)
                        hp.Momentum = 0.9;
                    Config c = Config.Init();
                    c.Lr = 0.05;
                    c.Lookahead = 1;
                    c.SyncPeriod = k;
                    c.Alpha = 0.5;
                    float[] p1 = T.Filled(n, 5, 1f), g = new float[n];
                    float[] p2 = (float[])p1.Clone(), m = new float[n], v = new float[n], slow = (float[])p1.Clone();
                    using (var o = new Optimizer(c, hp))
                    {
                        o.AddParam(p1, g);
                        for (int t = 1; t <= 10; t++)
                        {
                            T.Fill(g, 50u + (uint)t, 1f);
                            o.Step();
                            StepArgs a = StepArgs.Init();
                            a.Step = (ulong)t;
                            a.Lr = 0.05;
                            a.Sync = (uint)(t % k == 0 ? 1 : 0);
                            a.Alpha = 0.5;
                            switch (kind)
                            {
                                case BaseKind.Sgd: Kernels.SgdUpdate(hp, a, p2, g, m, slow); break;
                                case BaseKind.Adam: Kernels.AdamUpdate(hp, a, p2, g, m, v, null, slow); break;
                                case BaseKind.AdamW: Kernels.AdamWUpdate(hp, a, p2, g, m, v, slow); break;
                                default: Kernels.RAdamUpdate(hp, a, p2, g, m, v, slow); break;
                            }
                            T.Require(T.SameBits(p1, p2), "differs at step {0}", t);
                        }
                    }
                    return "";
                });
            }
            foreach (BaseKind kind in (BaseKind[])Enum.GetValues(typeof(BaseKind)))
            {
                T.Run("BaseUpdate " + kind + " with Lookahead == Optimizer (10 steps, bit-identical)", () =>
                {
                    const int n = 37, k = 3;
                    BaseParams hp = BaseParams.Init(kind);
                    Config c = Config.Init();
                    c.Lr = 0.01;
                    c.WeightDecay = 0.01;
                    c.Lookahead = 1;
                    c.SyncPeriod = k;
                    c.Alpha = 0.5;
                    uint mask = Kernels.BaseStateBuffers(hp);
                    float[] p1 = T.Filled(n, 7, 1f), g = new float[n];
                    float[] p2 = (float[])p1.Clone(), slow = (float[])p1.Clone();
                    float[] m = (mask & Kernels.StateM) != 0 ? new float[n] : null;
                    float[] v = (mask & Kernels.StateV) != 0 ? new float[n] : null;
                    float[] vm = (mask & Kernels.StateVMax) != 0 ? new float[n] : null;
                    Kernels.BaseStateInit(hp, m, v, vm, n);
                    using (var o = new Optimizer(c, hp))
                    {
                        o.AddParam(p1, g);
                        for (int t = 1; t <= 10; t++)
                        {
                            T.Fill(g, 70u + (uint)t, 1f);
                            o.Step();
                            StepArgs a = StepArgs.Init();
                            a.Step = (ulong)t;
                            a.Lr = 0.01;
                            a.WeightDecay = 0.01;
                            a.Sync = (uint)(t % k == 0 ? 1 : 0);
                            a.Alpha = 0.5;
                            Kernels.BaseUpdate(hp, a, p2, g, m, v, vm, slow);
                            T.Require(T.SameBits(p1, p2), "differs at step {0}", t);
                        }
                    }
                    return "mask " + mask;
                });
            }
            T.Run("SumSquares / SumSquaresPartials / ClipScale / ClipByValue / Scale / LookaheadSync", () =>
            {
                long bs = Kernels.SumSquaresBlockSize;
                float[] x = T.Filled((int)(2 * bs + 5), 8, 3f);
                double ss = Kernels.SumSquares(x);
                var parts = new double[3];
                Kernels.SumSquaresPartials(x, parts);
                double sum = 0;
                foreach (double d in parts)
                    sum += d;
                T.Require(sum == ss, "partials add to {0:R}, SumSquares {1:R}", sum, ss);
                double scale = Kernels.ClipScale(ss, 1.0);
                T.Require(scale == Math.Min(1.0, 1.0 / Math.Sqrt(ss)), "ClipScale {0:R}", scale);
                float[] y = { -3f, -0.5f, 0f, 0.25f, 9f };
                Kernels.ClipByValue(y, 1f);
                T.Require(T.SameBits(y, new[] { -1f, -0.5f, 0f, 0.25f, 1f }), "ClipByValue");
                Kernels.Scale(y, 2f);
                T.Require(T.SameBits(y, new[] { -2f, -1f, 0f, 0.5f, 2f }), "Scale");
                float[] fast = { 1f, 2f }, slow = { 3f, 4f };
                Kernels.LookaheadSync(fast, slow, 0.5f);
                T.Require(T.SameBits(fast, new[] { 2f, 3f }) && T.SameBits(slow, fast), "LookaheadSync");
                return "";
            });
        }

        // ------------------------------------------------------------------------------------

        private static void ShardedAndSplit()
        {
            T.Section("sharded two-phase step and split steps");
            T.Run("2 shards (SumSquaresPartials + StepWithSumSquares) == 1 optimizer, 12 steps", () =>
            {
                int bs = (int)Kernels.SumSquaresBlockSize;
                int[] lens = { bs + 3, 2 * bs, 17, bs - 1 };
                float[][] whole = Arrays(11, lens), gw = Arrays(12, lens);
                float[][] shard = whole.Select(a => (float[])a.Clone()).ToArray(), gs = Arrays(12, lens);
                Config c = Config.Init();
                c.Lr = 0.01;
                c.GradClipNorm = 0.5;
                BaseParams hp = BaseParams.Init(BaseKind.AdamW);
                using (var one = new Optimizer(c, hp))
                using (var a = new Optimizer(c, hp))
                using (var b = new Optimizer(c, hp))
                {
                    for (int i = 0; i < lens.Length; i++)
                    {
                        one.AddParam(whole[i], gw[i]);
                        (i < 2 ? a : b).AddParam(shard[i], gs[i]);
                    }
                    var pa = new double[a.SumSquaresBlockCount];
                    var pb = new double[b.SumSquaresBlockCount];
                    T.Require(pa.Length + pb.Length == one.SumSquaresBlockCount, "block counts {0} + {1} != {2}", pa.Length, pb.Length, one.SumSquaresBlockCount);
                    for (int t = 0; t < 12; t++)
                    {
                        for (int i = 0; i < lens.Length; i++)
                        {
                            T.Fill(gw[i], 200u + (uint)(t * 5 + i), 2f);
                            Array.Copy(gw[i], gs[i], lens[i]);
                        }
                        one.Step();
                        a.SumSquaresPartials(pa);
                        b.SumSquaresPartials(pb);
                        double total = 0.0;
                        foreach (double d in pa.Concat(pb))
                            total += d;
                        a.StepWithSumSquares(total);
                        b.StepWithSumSquares(total);
                        for (int i = 0; i < lens.Length; i++)
                            T.Require(T.SameBits(whole[i], shard[i]), "buffer {0} differs at step {1}", i, t + 1);
                    }
                }
                return "bit-identical";
            });
            T.Run("split step: StepRange from 2 threads == Step, 10 steps", () =>
            {
                int[] lens = { 1000, 3001, 77 };
                float[][] p1 = Arrays(21, lens), g1 = Arrays(22, lens);
                float[][] p2 = p1.Select(a => (float[])a.Clone()).ToArray(), g2 = Arrays(22, lens);
                using (Optimizer o1 = AdamLookahead(NonFinite.Skip, p1, g1))
                using (Optimizer o2 = AdamLookahead(NonFinite.Skip, p2, g2))
                {
                    long n = o2.TotalLen;
                    for (int t = 0; t < 10; t++)
                    {
                        for (int i = 0; i < lens.Length; i++)
                        {
                            T.Fill(g1[i], 300u + (uint)(t * 3 + i), 1f);
                            Array.Copy(g1[i], g2[i], lens[i]);
                        }
                        o1.Step();
                        T.Require(o2.BeginStep(), "BeginStep skipped");
                        long cut = n * (t + 1) / 11;
                        Exception err = null;
                        var th = new Thread(() => { try { o2.StepRange(cut, n); } catch (Exception e) { err = e; } });
                        th.Start();
                        o2.StepRange(0, cut);
                        th.Join();
                        T.Require(err == null, "worker thread: {0}", err);
                        o2.EndStep();
                        for (int i = 0; i < lens.Length; i++)
                            T.Require(T.SameBits(p1[i], p2[i]), "buffer {0} differs at step {1}", i, t + 1);
                    }
                }
                return "bit-identical";
            });
            T.Run("split step with an explicit loss scale == Step on gradients divided in C#, skips alike", () =>
            {
                int[] lens = { 1000, 3001, 77 };
                float[] scales = { 1024f, 3f, 0.5f, 0.75f };
                float[][] p1 = Arrays(31, lens), g1 = Arrays(32, lens);
                float[][] p2 = p1.Select(a => (float[])a.Clone()).ToArray(), g2 = Arrays(32, lens);
                using (Optimizer o1 = AdamLookahead(NonFinite.Skip, p1, g1))
                using (Optimizer o2 = AdamLookahead(NonFinite.Skip, p2, g2))
                {
                    long n = o2.TotalLen;
                    for (int t = 0; t < scales.Length; t++)
                    {
                        float s = scales[t];
                        for (int i = 0; i < lens.Length; i++)
                        {
                            T.Fill(g2[i], 400u + (uint)(t * 3 + i), s);
                            if (t == 2 && i == 1)
                                g2[i][5] = float.MaxValue; // divided by 0.5: +Inf
                            for (int k = 0; k < lens[i]; k++)
                                g1[i][k] = g2[i][k] / s;
                        }
                        bool applied = o1.Step();
                        T.Require(o2.BeginStep(s) == applied, "step {0}: split {1}, whole {2}", t + 1, !applied, applied);
                        T.Require(applied == (t != 2), "step {0}: applied {1}", t + 1, applied);
                        if (applied)
                        {
                            o2.StepRange(n / 3, n);
                            o2.StepRange(0, n / 3);
                            o2.EndStep();
                        }
                        for (int i = 0; i < lens.Length; i++)
                            T.Require(T.SameBits(p1[i], p2[i]), "buffer {0} differs at step {1}", i, t + 1);
                        T.Require(o1.SkippedCount == o2.SkippedCount && o1.StepCount == o2.StepCount, "counters at step {0}", t + 1);
                    }
                }
                return "bit-identical";
            });
        }

        // Compressed state (docs/numerics.md, "Compressed state"): Config.StateDtype and friends
        // reach the library (StateBytes as held, other bits than float32), Rprop refuses int8,
        // and 2 shards with their StateIndexOffset are one optimizer bit for bit.
        private static void CompressedState()
        {
            T.Section("compressed state (StateDtype, StateRounding, StateSeed, StateIndexOffset, SlowDtype)");
            const int n = 700;
            long[] held = { 4 * n, 2 * n, n + 4 * ((n + 255) / 256) };
            StateDtype[] dtypes = { StateDtype.Float32, StateDtype.Bfloat16, StateDtype.Int8 };
            float[] f32 = null;
            for (int k = 0; k < 3; k++)
            {
                int kk = k;
                T.Run("Adam, Lookahead with bf16 slow weights, state " + dtypes[k] + ": StateBytes, 8 steps", () =>
                {
                    float[][] p = Arrays(31, n), g = Arrays(32, n);
                    Config c = Config.Init();
                    c.Lr = 0.01;
                    c.StateDtype = dtypes[kk];
                    c.StateRounding = StateRounding.Nearest;
                    c.Lookahead = 1;
                    c.SyncPeriod = 3;
                    c.Alpha = 0.5;
                    c.SlowDtype = StateDtype.Bfloat16;
                    using (var o = new Optimizer(c, BaseParams.Init(BaseKind.Adam)))
                    {
                        T.Require(o.StateBytes == 0, "StateBytes before registration {0}", o.StateBytes);
                        o.AddParam(p[0], g[0]);
                        T.Require(o.StateBytes == 2 * held[kk] + 2 * n, "StateBytes {0}, expected {1}", o.StateBytes, 2 * held[kk] + 2 * n);
                        for (int t = 0; t < 8; t++)
                        {
                            T.Fill(g[0], 500u + (uint)t, 0.2f);
                            o.Step();
                        }
                    }
                    if (kk == 0)
                        f32 = p[0];
                    else
                        T.Require(!T.SameBits(f32, p[0]), "{0} state gave the bits of float32 state", dtypes[kk]);
                    return "ok";
                });
            }
            T.Run("Int8 state: checkpoint format 4 saves the same bytes after a load, resumes bit for bit, loads into Float32 state", () =>
            {
                float[][] p1 = Arrays(61, n), g1 = Arrays(62, n);
                float[] p2 = (float[])p1[0].Clone(), p3 = (float[])p1[0].Clone();
                Config c = Config.Init();
                c.Lr = 0.01;
                c.StateDtype = StateDtype.Int8;
                Config cf = c;
                cf.StateDtype = StateDtype.Float32;
                using (var a = new Optimizer(c, BaseParams.Init(BaseKind.Adam)))
                using (var b = new Optimizer(c, BaseParams.Init(BaseKind.Adam)))
                using (var f = new Optimizer(cf, BaseParams.Init(BaseKind.Adam)))
                {
                    a.AddParam(p1[0], g1[0]);
                    for (int t = 0; t < 4; t++)
                    {
                        T.Fill(g1[0], 800u + (uint)t, 0.2f);
                        a.Step();
                    }
                    Array.Copy(p1[0], p2, n);
                    b.AddParam(p2, g1[0]);
                    f.AddParam(p3, g1[0]);
                    byte[] ck = a.Save();
                    T.Require(BitConverter.ToUInt32(ck, 8) == 4, "format version {0}", BitConverter.ToUInt32(ck, 8));
                    b.Load(ck);
                    T.Require(b.Save().SequenceEqual(ck), "a loaded checkpoint saves other bytes");
                    f.Load(ck);
                    T.Require(f.StepCount == 4, "converted step count {0}", f.StepCount);
                    for (int t = 4; t < 8; t++)
                    {
                        T.Fill(g1[0], 800u + (uint)t, 0.2f);
                        a.Step();
                        b.Step();
                    }
                    T.Require(T.SameBits(p1[0], p2), "resumed run differs");
                }
                return "bit-identical";
            });
            T.Run("Rprop with Int8 state is refused, naming state_dtype", () =>
            {
                Config c = Config.Init();
                c.StateDtype = StateDtype.Int8;
                try
                {
                    using (new Optimizer(c, BaseParams.Init(BaseKind.Rprop))) { }
                }
                catch (InvalidArgumentException e)
                {
                    T.Require(e.Message.Contains("state_dtype"), "message: {0}", e.Message);
                    return "refused";
                }
                throw new Exception("not refused");
            });
            foreach (StateDtype d in new[] { StateDtype.Bfloat16, StateDtype.Int8 })
            {
                StateDtype dd = d;
                T.Run("split step, state " + d + ": StepRange from 2 threads == Step, 6 steps; a range cutting an 8-bit block refused", () =>
                {
                    float[][] p1 = Arrays(51, n), g1 = Arrays(52, n);
                    float[] p2 = (float[])p1[0].Clone(), g2 = new float[n];
                    Config c = Config.Init();
                    c.Lr = 0.01;
                    c.StateDtype = dd;
                    c.Lookahead = 1;
                    c.SyncPeriod = 2;
                    c.Alpha = 0.5;
                    long cut = dd == StateDtype.Int8 ? 512 : 333;
                    using (var o1 = new Optimizer(c, BaseParams.Init(BaseKind.Adam)))
                    using (var o2 = new Optimizer(c, BaseParams.Init(BaseKind.Adam)))
                    {
                        o1.AddParam(p1[0], g1[0]);
                        o2.AddParam(p2, g2);
                        for (int t = 0; t < 6; t++)
                        {
                            T.Fill(g1[0], 700u + (uint)t, 0.2f);
                            Array.Copy(g1[0], g2, n);
                            o1.Step();
                            T.Require(o2.BeginStep(), "BeginStep skipped");
                            if (dd == StateDtype.Int8)
                            {
                                try
                                {
                                    o2.StepRange(0, 300);
                                    throw new Exception("a range cutting an 8-bit block was applied");
                                }
                                catch (InvalidArgumentException e)
                                {
                                    T.Require(e.Message.Contains("8-bit blocks"), "message: {0}", e.Message);
                                }
                            }
                            Exception err = null;
                            var th = new Thread(() => { try { o2.StepRange(cut, n); } catch (Exception e) { err = e; } });
                            th.Start();
                            o2.StepRange(0, cut);
                            th.Join();
                            T.Require(err == null, "worker thread: {0}", err);
                            o2.EndStep();
                            T.Require(T.SameBits(p1[0], p2), "differs at step {0}", t + 1);
                        }
                    }
                    return "bit-identical";
                });
                T.Run("2 shards with StateIndexOffset == 1 optimizer, state " + d + ", 10 steps", () =>
                {
                    int bs = (int)Kernels.SumSquaresBlockSize;
                    int len = 2 * bs + 300;
                    float[] whole = Arrays(41, len)[0], g = new float[len];
                    float[] shard = (float[])whole.Clone();
                    float[] sa = new float[bs], sb = new float[len - bs], ga = new float[bs], gb = new float[len - bs];
                    Array.Copy(shard, 0, sa, 0, bs);
                    Array.Copy(shard, bs, sb, 0, len - bs);
                    Config c = Config.Init();
                    c.Lr = 0.01;
                    c.GradClipNorm = 0.5;
                    c.StateDtype = dd;
                    c.StateSeed = 9;
                    Config cb = c;
                    cb.StateIndexOffset = (ulong)bs;
                    BaseParams hp = BaseParams.Init(BaseKind.Adam);
                    using (var one = new Optimizer(c, hp))
                    using (var a = new Optimizer(c, hp))
                    using (var b = new Optimizer(cb, hp))
                    {
                        one.AddParam(whole, g);
                        a.AddParam(sa, ga);
                        b.AddParam(sb, gb);
                        var pa = new double[a.SumSquaresBlockCount];
                        var pb = new double[b.SumSquaresBlockCount];
                        for (int t = 0; t < 10; t++)
                        {
                            T.Fill(g, 600u + (uint)t, 1f);
                            Array.Copy(g, 0, ga, 0, bs);
                            Array.Copy(g, bs, gb, 0, len - bs);
                            one.Step();
                            a.SumSquaresPartials(pa);
                            b.SumSquaresPartials(pb);
                            double total = 0.0;
                            foreach (double x in pa.Concat(pb))
                                total += x;
                            a.StepWithSumSquares(total);
                            b.StepWithSumSquares(total);
                            var joined = sa.Concat(sb).ToArray();
                            T.Require(T.SameBits(whole, joined), "differs at step {0}", t + 1);
                        }
                    }
                    return "bit-identical";
                });
            }
        }

        // ------------------------------------------------------------------------------------

        private static void NativeMemoryAndPins()
        {
            T.Section("native memory (IntPtr) and the pinning rule");
            T.Run("AddParam(IntPtr) over AllocHGlobal == AddParam(float[]), 20 steps", () =>
            {
                const int n = 300;
                float[] p = T.Filled(n, 61, 1f), g = new float[n];
                IntPtr np = Marshal.AllocHGlobal(n * 4), ng = Marshal.AllocHGlobal(n * 4);
                try
                {
                    Marshal.Copy(p, 0, np, n);
                    using (Optimizer a = AdamLookahead(NonFinite.Skip, new[] { p }, new[] { g }))
                    using (Optimizer b = AdamLookahead(NonFinite.Skip, new float[0][], null))
                    {
                        b.AddParam(np, ng, n);
                        for (int t = 0; t < 20; t++)
                        {
                            T.Fill(g, 400u + (uint)t, 1f);
                            Marshal.Copy(g, 0, ng, n);
                            a.Step();
                            b.Step();
                        }
                    }
                    var back = new float[n];
                    Marshal.Copy(np, back, 0, n);
                    T.Require(T.SameBits(back, p), "native buffer differs from the float[] run");
                }
                finally
                {
                    Marshal.FreeHGlobal(np);
                    Marshal.FreeHGlobal(ng);
                }
                return "bit-identical";
            });
            T.Run("StepWithGrads over 300 buffers (native scratch) == Step, 0 managed bytes", () =>
            {
                int[] lens = Enumerable.Range(0, 300).Select(i => 1 + i % 7).ToArray();
                float[][] p1 = Arrays(31, lens), g1 = Arrays(32, lens);
                float[][] p2 = p1.Select(a => (float[])a.Clone()).ToArray();
                Func<long> allocated = AllocatedBytes();
                long bytes = 0;
                using (Optimizer o1 = AdamLookahead(NonFinite.Skip, p1, g1))
                using (Optimizer o2 = AdamLookahead(NonFinite.Skip, p2, null))
                {
                    o2.StepWithGrads(g1);
                    o1.Step();
                    long before = allocated != null ? allocated() : 0;
                    for (int t = 0; t < 20; t++)
                    {
                        o2.StepWithGrads(g1);
                        o1.Step();
                    }
                    bytes = allocated != null ? allocated() - before : 0;
                }
                for (int i = 0; i < lens.Length; i++)
                    T.Require(T.SameBits(p1[i], p2[i]), "buffer {0} differs", i);
                T.Require(bytes == 0, "{0} managed bytes allocated", bytes);
                return "bit-identical, 0 bytes";
            });
            T.Run("registered arrays stay pinned until Dispose, then are unpinned and collectable", () =>
            {
                WeakReference wp, wg;
                int pins0 = OptimizerHandle.LivePins;
                Optimizer o = Register(out wp, out wg);
                T.Require(OptimizerHandle.LivePins == pins0 + 2, "LivePins {0} after registering 2 arrays (was {1})", OptimizerHandle.LivePins, pins0);
                for (int i = 0; i < 3; i++)
                {
                    GC.Collect();
                    GC.WaitForPendingFinalizers();
                }
                T.Require(wp.IsAlive && wg.IsAlive, "a registered array was collected while registered");
                // Garbage churn: pinned arrays must not move (the step still sees the same data).
                for (int i = 0; i < 2000; i++)
                {
                    var junk = new float[1000];
                    junk[0] = i;
                }
                GC.Collect();
                T.Require(o.Step(), "step after GC");
                o.Dispose();
                T.Require(OptimizerHandle.LivePins == pins0, "LivePins {0} after Dispose (was {1})", OptimizerHandle.LivePins, pins0);
                for (int i = 0; i < 3; i++)
                {
                    GC.Collect();
                    GC.WaitForPendingFinalizers();
                }
                T.Require(!wp.IsAlive && !wg.IsAlive, "the arrays are still alive after Dispose");
                return "";
            });
            T.Run("an optimizer never disposed is freed by its finalizer (pins released)", () =>
            {
                // In a fresh process: in a long-running one, Mono's conservative stack scanning
                // can keep an abandoned object reachable through a stale stack slot.
                var psi = new ProcessStartInfo(Process.GetCurrentProcess().MainModule.FileName,
                    "\"" + typeof(Program).Assembly.Location + "\" --finalizer-check")
                {
                    UseShellExecute = false,
                    RedirectStandardOutput = true,
                };
                using (Process child = Process.Start(psi))
                {
                    string output = child.StandardOutput.ReadToEnd().Trim();
                    child.WaitForExit();
                    T.Require(child.ExitCode == 0, "child exit {0}: {1}", child.ExitCode, output);
                    return output;
                }
            });
        }

        // Poisoned handles: the rows run in a child process over a library built with the
        // test-only fault-injection feature (POISON_APP_DIR holds it beside this program), each
        // child row becomes a row here.
        private static void Poison(string appDir)
        {
            T.Section("poisoned handles (a panic inside a step, library built with fault-injection)");
            if (appDir == null)
            {
                Console.WriteLine("  skipped: no fault-injection library given");
                return;
            }
            var psi = new ProcessStartInfo(Process.GetCurrentProcess().MainModule.FileName,
                "\"" + Path.Combine(appDir, "test_csharp.exe") + "\" --poison")
            {
                UseShellExecute = false,
                RedirectStandardOutput = true,
                RedirectStandardError = true, // the library's panic reports
            };
            using (Process child = Process.Start(psi))
            {
                child.ErrorDataReceived += (o, e) => { };
                child.BeginErrorReadLine();
                string line;
                int rows = 0;
                while ((line = child.StandardOutput.ReadLine()) != null)
                {
                    if (line.StartsWith("ok   ") || line.StartsWith("FAIL "))
                    {
                        rows++;
                        string body = line.Substring(5);
                        int sep = body.IndexOf("  ", StringComparison.Ordinal);
                        T.Row("poison: " + (sep < 0 ? body : body.Substring(0, sep)), line.StartsWith("ok"),
                            sep < 0 ? "" : body.Substring(sep + 2));
                    }
                }
                child.WaitForExit();
                T.Row("poison: child process", child.ExitCode == 0 && rows > 0, "exit " + child.ExitCode + ", " + rows + " rows");
            }
        }

        private static int PoisonRows()
        {
            var calls = new List<Tuple<string, Action<Optimizer, float[]>>>
            {
                Tuple.Create<string, Action<Optimizer, float[]>>("Step", (o, g) => o.Step()),
                Tuple.Create<string, Action<Optimizer, float[]>>("StepWithGrads", (o, g) => o.StepWithGrads(new[] { g })),
                Tuple.Create<string, Action<Optimizer, float[]>>("StepWithSumSquares", (o, g) => o.StepWithSumSquares(1.0)),
                Tuple.Create<string, Action<Optimizer, float[]>>("StepRange", (o, g) => { o.BeginStep(); o.StepRange(0, g.Length); }),
            };
            var after = new List<Tuple<string, Action<Optimizer, float[]>>>
            {
                Tuple.Create<string, Action<Optimizer, float[]>>("Step", (o, g) => o.Step()),
                Tuple.Create<string, Action<Optimizer, float[]>>("StepCount", (o, g) => { if (o.StepCount < 0) throw new InvalidOperationException(); }),
                Tuple.Create<string, Action<Optimizer, float[]>>("Save", (o, g) => o.Save()),
                Tuple.Create<string, Action<Optimizer, float[]>>("Reset", (o, g) => o.Reset()),
                Tuple.Create<string, Action<Optimizer, float[]>>("NumThreads = 1", (o, g) => o.NumThreads = 1),
                Tuple.Create<string, Action<Optimizer, float[]>>("AddGroup", (o, g) => o.AddGroup(GroupOptions.Init())),
                Tuple.Create<string, Action<Optimizer, float[]>>("NumGroups", (o, g) => { if (o.NumGroups < 0) throw new InvalidOperationException(); }),
                Tuple.Create<string, Action<Optimizer, float[]>>("SetGroupLr", (o, g) => o.SetGroupLr(0, 0.1)),
                Tuple.Create<string, Action<Optimizer, float[]>>("SetGroupWeightDecay", (o, g) => o.SetGroupWeightDecay(0, 0.0)),
                Tuple.Create<string, Action<Optimizer, float[]>>("GroupCurrentLr", (o, g) => { if (o.GroupCurrentLr(0) < 0) throw new InvalidOperationException(); }),
            };
            foreach (var c in calls)
            {
                T.Run("a panic in " + c.Item1 + " -> InternalException, then PoisonedException; Dispose frees", () =>
                {
                    int pins0 = OptimizerHandle.LivePins;
                    float[] p = T.Filled(16, 1, 1f), g = T.Filled(16, 2, 1f);
                    var o = AdamLookahead(NonFinite.Skip, new[] { p }, new[] { g });
                    o.Step();
                    flatopt_test_panic_next_step();
                    try
                    {
                        c.Item2(o, g);
                        throw new RowFailure("no exception from the panicking call");
                    }
                    catch (InternalException)
                    {
                    }
                    string msg = "";
                    foreach (var a in after)
                    {
                        try
                        {
                            a.Item2(o, g);
                            throw new RowFailure(a.Item1 + " after the panic: no exception");
                        }
                        catch (PoisonedException e)
                        {
                            msg = e.Message;
                        }
                    }
                    o.Dispose();
                    T.Require(OptimizerHandle.LivePins == pins0, "LivePins {0} after Dispose (was {1})", OptimizerHandle.LivePins, pins0);
                    return "\"" + msg + "\"";
                });
            }
            Console.WriteLine("test_csharp --poison: {0} passed, {1} failed", T.Passed, T.Failed);
            return T.Failed == 0 ? 0 : 1;
        }

        // The child of the finalizer row: abandon a registered optimizer, collect, check.
        private static int FinalizerCheck()
        {
            WeakReference wp = null, wg = null, wh = null;
            int pins0 = OptimizerHandle.LivePins;
            var th = new Thread(() => wh = Abandon(out wp, out wg));
            th.Start();
            th.Join();
            int pinsHeld = OptimizerHandle.LivePins;
            for (int i = 0; i < 5 && (wh.IsAlive || OptimizerHandle.LivePins != pins0); i++)
            {
                GC.Collect();
                GC.WaitForPendingFinalizers();
            }
            GC.Collect();
            bool ok = pinsHeld == pins0 + 2 && !wh.IsAlive && OptimizerHandle.LivePins == pins0;
            Console.WriteLine("LivePins {0} -> {1} while abandoned -> {2} after GC; handle collected {3}, arrays collected {4}",
                pins0, pinsHeld, OptimizerHandle.LivePins, !wh.IsAlive, !wp.IsAlive && !wg.IsAlive);
            return ok ? 0 : 1;
        }

        [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
        private static Optimizer Register(out WeakReference wp, out WeakReference wg)
        {
            float[] p = T.Filled(64, 70, 1f), g = T.Filled(64, 71, 1f);
            wp = new WeakReference(p);
            wg = new WeakReference(g);
            return AdamLookahead(NonFinite.Skip, new[] { p }, new[] { g });
        }

        [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
        private static WeakReference Abandon(out WeakReference wp, out WeakReference wg)
        {
            Optimizer o = Register(out wp, out wg);
            o.Step();
            return new WeakReference(o.Handle);
        }

        // ------------------------------------------------------------------------------------

        private static Func<long> AllocatedBytes()
        {
            MethodInfo m = typeof(GC).GetMethod("GetAllocatedBytesForCurrentThread",
                BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Static);
            if (m == null)
                return null;
            return (Func<long>)Delegate.CreateDelegate(typeof(Func<long>), m);
        }

        private const int AllocSteps = 100000;

        private static void Allocations()
        {
            T.Section("zero managed allocations per step (" + AllocSteps + " steps each)");
            Func<long> allocated = AllocatedBytes();
            T.Row("GC.GetAllocatedBytesForCurrentThread available", allocated != null, allocated != null ? "exact byte counter of this runtime" : "absent: GetTotalMemory and collection counts only");
            if (allocated != null)
            {
                // Negative control: the counter sees small allocations.
                long a0 = allocated();
                object keep = null;
                for (int i = 0; i < 1000; i++)
                    keep = new float[4];
                long a1 = allocated();
                T.Row("control: 1000 x new float[4] is counted", a1 - a0 >= 1000 * 16 && keep != null, (a1 - a0) + " B");
            }
            int[] lens = { 64, 128, 16 };
            float[][] p = Arrays(81, lens), g = Arrays(82, lens);
            for (int i = 0; i < lens.Length; i++)
                Kernels.Scale(g[i], 1e-3f);
            var partials = new double[0];
            var loops = new List<Tuple<string, Action<Optimizer>>>
            {
                Tuple.Create<string, Action<Optimizer>>("Step()", o => o.Step()),
                Tuple.Create<string, Action<Optimizer>>("StepWithGrads(float[][])", o => o.StepWithGrads(g)),
                Tuple.Create<string, Action<Optimizer>>("SumSquaresPartials + StepWithSumSquares", o =>
                {
                    o.SumSquaresPartials(partials);
                    double s = 0;
                    for (int i = 0; i < partials.Length; i++)
                        s += partials[i];
                    o.StepWithSumSquares(s);
                }),
                Tuple.Create<string, Action<Optimizer>>("BeginStep + StepRange + EndStep", o =>
                {
                    o.BeginStep();
                    o.StepRange(0, 100);
                    o.StepRange(100, 208);
                    o.EndStep();
                }),
                Tuple.Create<string, Action<Optimizer>>("queries (StepCount, CurrentLr, SkippedCount)", o =>
                {
                    if (o.StepCount < 0 || o.CurrentLr < 0 || o.SkippedCount < 0)
                        throw new InvalidOperationException();
                }),
                // A scheduler writing a group's lr and weight decay before every step.
                Tuple.Create<string, Action<Optimizer>>("SetGroupLr + SetGroupWeightDecay + Step()", o =>
                {
                    bool odd = (o.StepCount & 1) != 0;
                    o.SetGroupLr(1, odd ? 0.02 : 0.005);
                    o.SetGroupWeightDecay(1, odd ? 0.0 : 0.01);
                    o.Step();
                }),
                Tuple.Create<string, Action<Optimizer>>("group queries (GroupLr, GroupCurrentLr, GroupWeightDecay, ParamGroup)", o =>
                {
                    if (o.GroupLr(1) < 0 || o.GroupCurrentLr(1) < 0 || o.GroupWeightDecay(1) < 0 || o.ParamGroup(2) != 1)
                        throw new InvalidOperationException();
                }),
            };
            foreach (var loop in loops)
            {
                using (Optimizer o = AdamLookaheadGrouped(p, g))
                {
                    partials = new double[o.SumSquaresBlockCount];
                    for (int i = 0; i < 1000; i++)
                        loop.Item2(o); // JIT, first-call costs
                    int[] gcBefore = { GC.CollectionCount(0), GC.CollectionCount(1), GC.CollectionCount(2) };
                    long totalBefore = GC.GetTotalMemory(false);
                    long bytesBefore = allocated != null ? allocated() : 0;
                    for (int i = 0; i < AllocSteps; i++)
                        loop.Item2(o);
                    long bytes = allocated != null ? allocated() - bytesBefore : 0;
                    long total = GC.GetTotalMemory(false) - totalBefore;
                    int collections = GC.CollectionCount(0) - gcBefore[0] + GC.CollectionCount(1) - gcBefore[1] + GC.CollectionCount(2) - gcBefore[2];
                    T.Row(string.Format("{0} x {1}: 0 bytes allocated, 0 collections", AllocSteps, loop.Item1),
                        bytes == 0 && collections == 0,
                        string.Format("allocated {0} B, collections {1}, GetTotalMemory delta {2} B", bytes, collections, total));
                }
            }
        }

        // ------------------------------------------------------------------------------------

        private static void Overhead()
        {
            T.Section("step overhead of C# over C (same optimizer, interleaved blocks, medians)");
            foreach (int n in new[] { 16, 1024 })
            {
                T.Run(string.Format("Step() of Adam over {0} floats: C# - C < 1000 ns", n), () =>
                {
                    float[] p = T.Filled(n, 90, 1f), g = T.Filled(n, 91, 1e-3f);
                    Config c = Config.Init();
                    c.Lr = 1e-4;
                    using (var o = new Optimizer(c, BaseParams.Init(BaseKind.Adam)))
                    {
                        o.AddParam(p, g);
                        const int block = 500, blocks = 201;
                        var cs = new double[blocks];
                        var cc = new double[blocks];
                        var diff = new double[blocks];
                        var sw = new Stopwatch();
                        for (int i = 0; i < 5000; i++)
                            o.Step();
                        T.Require(cbench_step_ns(o.Handle, 100) > 0, "the C loop failed");
                        for (int b = 0; b < blocks; b++)
                        {
                            // Alternate which loop goes first, so that neither always follows the other.
                            if (b % 2 == 0)
                                cc[b] = cbench_step_ns(o.Handle, block);
                            sw.Restart();
                            for (int i = 0; i < block; i++)
                                o.Step();
                            sw.Stop();
                            cs[b] = sw.Elapsed.TotalMilliseconds * 1e6 / block;
                            if (b % 2 == 1)
                                cc[b] = cbench_step_ns(o.Handle, block);
                            diff[b] = cs[b] - cc[b];
                        }
                        Array.Sort(cs);
                        Array.Sort(cc);
                        Array.Sort(diff);
                        double mc = cc[blocks / 2], ms = cs[blocks / 2], md = diff[blocks / 2];
                        T.Require(md < 1000.0, "C# {0:F1} ns, C {1:F1} ns per step: overhead {2:F1} ns", ms, mc, md);
                        return string.Format("C {0:F1} ns, C# {1:F1} ns per step (medians of {2} blocks of {3}); overhead (median of paired block differences) {4:F1} ns",
                            mc, ms, blocks, block, md);
                    }
                });
            }
        }
    }
}
