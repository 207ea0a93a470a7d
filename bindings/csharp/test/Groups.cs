// Groups.cs: parameter groups through the C# binding. Without clipping by the global norm
// nothing couples the groups, so an optimizer with two groups must move each group's buffers
// exactly as a separate optimizer configured with that group's values does (one row per base
// rule); then ids and queries, changing a group's lr and weight decay between steps, and
// checkpoints carrying the groups' live values.

using System;
using System.Linq;

namespace Flatopt.Tests
{
    internal static class Groups
    {
        private const int Steps = 6;

        // (row, base rule with its optimizer-wide weight decay, the group's own base or null)
        private static Tuple<string, BaseParams, BaseParams?>[] Rules()
        {
            BaseParams sgd = BaseParams.Init(BaseKind.Sgd);
            sgd.Momentum = 0.9;
            BaseParams sgdOwn = sgd;
            sgdOwn.Momentum = 0.5;
            sgdOwn.Nesterov = 1;
            BaseParams adam = BaseParams.Init(BaseKind.Adam);
            BaseParams adamOwn = adam;
            adamOwn.B1 = 0.8;
            adamOwn.Amsgrad = 1;
            BaseParams adamw = BaseParams.Init(BaseKind.AdamW);
            adamw.DecoupledWeightDecay = 0.05;
            BaseParams radam = BaseParams.Init(BaseKind.RAdam);
            BaseParams radamOwn = radam;
            radamOwn.B2 = 0.99;
            return new[]
            {
                Tuple.Create("SGD momentum, the group's own Nesterov momentum", sgd, (BaseParams?)sgdOwn),
                Tuple.Create("SGD momentum, the optimizer's base", sgd, (BaseParams?)null),
                Tuple.Create("Adam, the group's own b1 and AMSGrad", adam, (BaseParams?)adamOwn),
                Tuple.Create("AdamW (decoupled decay 0.05), the optimizer's base", adamw, (BaseParams?)null),
                Tuple.Create("RAdam, the group's own b2", radam, (BaseParams?)radamOwn),
            };
        }

        // The weight decay a rule's group value replaces: AdamW's decoupled one, else the
        // config's coupled one.
        private static void SetDecay(ref Config c, ref BaseParams b, double wd)
        {
            if (b.Kind == BaseKind.AdamW)
                b.DecoupledWeightDecay = wd;
            else
                c.WeightDecay = wd;
        }

        internal static void Run()
        {
            T.Section("parameter groups: a group moves its buffers as an optimizer of its values does");
            foreach (var r in Rules())
                T.Run("groups = separate optimizers, bit for bit: " + r.Item1, () => AgainstSeparate(r.Item2, r.Item3));
            T.Run("ids, NumGroups, ParamGroup, inherited values", Queries);
            T.Run("SetGroupLr between steps: 0 freezes the group, NaN follows the optimizer again", SetLrBetweenSteps);
            T.Run("SetGroupWeightDecay between steps = an optimizer built with that decay", SetDecayBetweenSteps);
            T.Run("checkpoint: the groups' live lr and weight decay round trip", Checkpoint);
        }

        private static string AgainstSeparate(BaseParams rule, BaseParams? own)
        {
            const double lr0 = 0.01, lr1 = 0.03, wd0 = 0.02, wd1 = 0.0;
            Config c = Config.Init();
            c.Lr = lr0;
            BaseParams b0 = rule;
            SetDecay(ref c, ref b0, wd0);
            float[] a = T.Filled(13, 1, 1f), ag = new float[13], z = T.Filled(37, 2, 1f), zg = new float[37];
            float[] a2 = (float[])a.Clone(), z2 = (float[])z.Clone(), ag2 = new float[13], zg2 = new float[37];
            GroupOptions go = GroupOptions.Init();
            go.Lr = lr1;
            go.WeightDecay = wd1;
            Config c1 = Config.Init();
            c1.Lr = lr1;
            BaseParams b1 = own ?? rule;
            SetDecay(ref c1, ref b1, wd1);
            using (var grouped = new Optimizer(c, b0))
            using (var sep0 = new Optimizer(c, b0))
            using (var sep1 = new Optimizer(c1, b1))
            {
                int g = grouped.AddGroup(go, own);
                grouped.AddParam(a, ag);
                grouped.AddParam(z, zg, g);
                sep0.AddParam(a2, ag2);
                sep1.AddParam(z2, zg2);
                T.Require(grouped.GroupCurrentLr(g) == sep1.CurrentLr && grouped.GroupCurrentLr(0) == sep0.CurrentLr,
                    "current lr {0} / {1}, separate {2} / {3}", grouped.GroupCurrentLr(0), grouped.GroupCurrentLr(g), sep0.CurrentLr, sep1.CurrentLr);
                for (int s = 0; s < Steps; s++)
                {
                    T.Fill(ag, 10u + (uint)s, 1f);
                    T.Fill(zg, 20u + (uint)s, 1f);
                    Array.Copy(ag, ag2, ag.Length);
                    Array.Copy(zg, zg2, zg.Length);
                    grouped.Step();
                    sep0.Step();
                    sep1.Step();
                }
                T.Require(T.SameBits(a, a2), "group 0's buffer differs from the separate optimizer's");
                T.Require(T.SameBits(z, z2), "group 1's buffer differs from the separate optimizer's");
                T.Require(!T.SameBits(a, T.Filled(13, 1, 1f)) && !T.SameBits(z, T.Filled(37, 2, 1f)), "a buffer did not move");
            }
            return Steps + " steps, both buffers bit-identical";
        }

        private static Optimizer TwoGroups(float[] a, float[] ag, float[] z, float[] zg, out int g1, out int g2)
        {
            Config c = Config.Init();
            c.Lr = 0.01;
            c.WeightDecay = 0.1;
            var o = new Optimizer(c, BaseParams.Init(BaseKind.Adam));
            GroupOptions go = GroupOptions.Init();
            go.Lr = 0.03;
            go.WeightDecay = 0;
            g1 = o.AddGroup(go);
            g2 = o.AddGroup(GroupOptions.Init());
            o.AddParam(a, ag);
            o.AddParam(z, zg, g1);
            return o;
        }

        private static string Queries()
        {
            float[] a = T.Filled(5, 3, 1f), ag = T.Filled(5, 4, 1f), z = T.Filled(7, 5, 1f), zg = T.Filled(7, 6, 1f);
            int g1, g2;
            using (Optimizer o = TwoGroups(a, ag, z, zg, out g1, out g2))
            {
                T.Require(g1 == 1 && g2 == 2 && o.NumGroups == 3, "ids {0}, {1}; NumGroups {2}", g1, g2, o.NumGroups);
                T.Require(o.ParamGroup(0) == 0 && o.ParamGroup(1) == g1, "ParamGroup {0}, {1}", o.ParamGroup(0), o.ParamGroup(1));
                T.Require(o.GroupLr(g1) == 0.03 && o.GroupCurrentLr(g1) == 0.03f, "group 1 lr {0} / {1}", o.GroupLr(g1), o.GroupCurrentLr(g1));
                T.Require(o.GroupCurrentLrExact(g1) == 0.03 && (float)o.GroupCurrentLrExact(0) == o.GroupCurrentLr(0),
                    "exact lr {0} / {1}", o.GroupCurrentLrExact(g1), o.GroupCurrentLrExact(0));
                T.Require(o.GroupWeightDecay(g1) == 0 && o.GroupWeightDecay(g2) == 0.1 && o.GroupWeightDecay(0) == 0.1,
                    "weight decay {0} / {1} / {2}", o.GroupWeightDecay(0), o.GroupWeightDecay(g1), o.GroupWeightDecay(g2));
                T.Require(double.IsNaN(o.GroupLr(g2)) && o.GroupCurrentLr(g2) == o.CurrentLr && o.GroupCurrentLr(0) == o.CurrentLr,
                    "inheriting group 2: lr {0}, current {1} (optimizer {2})", o.GroupLr(g2), o.GroupCurrentLr(g2), o.CurrentLr);
                BaseParams b = o.GroupBaseParams(g1);
                T.Require(b.Kind == BaseKind.Adam && b.B1 == 0.9 && b.B2 == 0.999 && b.StructSize == System.Runtime.InteropServices.Marshal.SizeOf(typeof(BaseParams)),
                    "GroupBaseParams: kind {0}, b1 {1}", b.Kind, b.B1);
                return "groups 1, 2 of 3; inherited lr NaN";
            }
        }

        private static string SetLrBetweenSteps()
        {
            float[] a = T.Filled(5, 3, 1f), ag = T.Filled(5, 4, 1f), z = T.Filled(7, 5, 1f), zg = T.Filled(7, 6, 1f);
            int g1, g2;
            using (Optimizer o = TwoGroups(a, ag, z, zg, out g1, out g2))
            {
                o.Step();
                o.SetGroupLr(g1, 0.0);
                T.Require(o.GroupLr(g1) == 0 && o.GroupCurrentLr(g1) == 0f, "lr after SetGroupLr(0): {0}", o.GroupLr(g1));
                float[] a0 = (float[])a.Clone(), z0 = (float[])z.Clone();
                o.Step();
                T.Require(T.SameBits(z, z0), "group 1 (lr 0, no decay) moved");
                T.Require(!T.SameBits(a, a0), "group 0 did not move");
                o.SetGroupLr(g1, 0.05);
                T.Require(o.GroupCurrentLr(g1) == 0.05f, "lr after SetGroupLr(0.05): {0}", o.GroupCurrentLr(g1));
                o.Step();
                T.Require(!T.SameBits(z, z0), "group 1 did not move at lr 0.05");
                o.SetGroupLr(g1, double.NaN);
                T.Require(double.IsNaN(o.GroupLr(g1)) && o.GroupCurrentLr(g1) == o.CurrentLr, "after NaN: {0}", o.GroupCurrentLr(g1));
                return "lr 0 -> 0.05 -> NaN (the optimizer's " + o.CurrentLr + ")";
            }
        }

        private static string SetDecayBetweenSteps()
        {
            // Two steps of plain SGD (no state but the counter) at decay 0.1, then
            // SetGroupWeightDecay(0.3): the next steps are those of an optimizer built with 0.3
            // from the same weights.
            float[] a = T.Filled(9, 7, 1f), ag = T.Filled(9, 8, 1f);
            float[] b = (float[])a.Clone(), bg = (float[])ag.Clone();
            Config c = Config.Init();
            c.Lr = 0.01;
            c.WeightDecay = 0.1;
            Config c3 = c;
            c3.WeightDecay = 0.3;
            using (var o = new Optimizer(c, BaseParams.Init(BaseKind.Sgd)))
            using (var r = new Optimizer(c3, BaseParams.Init(BaseKind.Sgd)))
            {
                int g = o.AddGroup(GroupOptions.Init());
                o.AddParam(a, ag, g);
                r.AddParam(b, bg);
                o.Step();
                o.Step();
                Array.Copy(a, b, a.Length);
                o.SetGroupWeightDecay(g, 0.3);
                T.Require(o.GroupWeightDecay(g) == 0.3, "read back {0}", o.GroupWeightDecay(g));
                for (int s = 0; s < 3; s++)
                {
                    o.Step();
                    r.Step();
                }
                T.Require(T.SameBits(a, b), "differs from plain SGD at decay 0.3");
                return "3 steps at 0.3 bit-identical";
            }
        }

        private static string Checkpoint()
        {
            float[] a = T.Filled(5, 3, 1f), ag = T.Filled(5, 4, 1f), z = T.Filled(7, 5, 1f), zg = T.Filled(7, 6, 1f);
            int g1, g2;
            using (Optimizer o = TwoGroups(a, ag, z, zg, out g1, out g2))
            {
                o.Step();
                o.SetGroupLr(g1, 0.07);
                o.SetGroupWeightDecay(g2, 0.2);
                byte[] saved = o.Save();
                float[] a0 = (float[])a.Clone(), z0 = (float[])z.Clone();
                o.Step();
                o.SetGroupLr(g1, 0.5);
                o.SetGroupWeightDecay(g2, 0.0);
                o.Load(saved);
                T.Require(o.GroupLr(g1) == 0.07 && o.GroupWeightDecay(g2) == 0.2, "after Load: lr {0}, weight decay {1}",
                    o.GroupLr(g1), o.GroupWeightDecay(g2));
                // A fresh optimizer of the same layout loaded from the checkpoint steps as the
                // original does.
                float[] a2 = (float[])a0.Clone(), z2 = (float[])z0.Clone();
                int h1, h2;
                using (Optimizer p = TwoGroups(a2, ag, z2, zg, out h1, out h2))
                {
                    Array.Copy(a0, a, a.Length);
                    Array.Copy(z0, z, z.Length);
                    p.Load(saved);
                    T.Require(p.GroupLr(h1) == 0.07 && p.GroupWeightDecay(h2) == 0.2, "fresh optimizer: lr {0}, weight decay {1}",
                        p.GroupLr(h1), p.GroupWeightDecay(h2));
                    o.Step();
                    p.Step();
                    T.Require(T.SameBits(a, a2) && T.SameBits(z, z2), "the loaded optimizer steps differently");
                }
                return saved.Length + " bytes";
            }
        }
    }
}
