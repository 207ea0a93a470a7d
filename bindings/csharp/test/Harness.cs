// Harness.cs: the row runner of the C# test program: every check is a named row, printed with
// its result; a row that throws fails (with the exception) instead of ending the program. The
// closing line is "test_csharp: N passed, N failed"; the exit code is 1 on any failure.

using System;
using System.Collections.Generic;

namespace Flatopt.Tests
{
    internal static class T
    {
        internal static int Passed, Failed;
        internal static readonly List<string> Failures = new List<string>();

        internal static void Section(string title)
        {
            Console.WriteLine();
            Console.WriteLine("== " + title);
        }

        /// <summary>Records one row: ok when <paramref name="ok"/>, printed with its detail.</summary>
        internal static bool Row(string name, bool ok, string detail = "")
        {
            if (ok)
                Passed++;
            else
            {
                Failed++;
                Failures.Add(name + (detail.Length > 0 ? ": " + detail : ""));
            }
            Console.WriteLine("{0} {1}{2}", ok ? "ok  " : "FAIL", name, detail.Length > 0 ? "  " + detail : "");
            return ok;
        }

        /// <summary>Runs <paramref name="body"/> as one row; it returns its detail text and
        /// throws RowFailure (or anything else) to fail.</summary>
        internal static void Run(string name, Func<string> body)
        {
            string detail;
            try
            {
                detail = body();
            }
            catch (RowFailure f)
            {
                Row(name, false, f.Message);
                return;
            }
            catch (Exception e)
            {
                Row(name, false, "unexpected " + e.GetType().Name + ": " + e.Message);
                return;
            }
            Row(name, true, detail ?? "");
        }

        internal static void Require(bool cond, string what, params object[] args)
        {
            if (!cond)
                throw new RowFailure(args.Length > 0 ? string.Format(what, args) : what);
        }

        internal static unsafe int Bits(float f)
        {
            return *(int*)&f;
        }

        internal static bool SameBits(float[] a, float[] b)
        {
            if (a.Length != b.Length)
                return false;
            for (int i = 0; i < a.Length; i++)
                if (Bits(a[i]) != Bits(b[i]))
                    return false;
            return true;
        }

        internal static bool SameBytes(byte[] a, byte[] b)
        {
            if (a == null || b == null)
                return a == b;
            if (a.Length != b.Length)
                return false;
            for (int i = 0; i < a.Length; i++)
                if (a[i] != b[i])
                    return false;
            return true;
        }

        /// <summary>A deterministic pseudo-random fill in [-scale, scale).</summary>
        internal static void Fill(float[] x, uint seed, float scale)
        {
            uint s = seed * 2654435761u + 12345u;
            for (int i = 0; i < x.Length; i++)
            {
                s = s * 1664525u + 1013904223u;
                x[i] = ((s >> 8) / (float)(1 << 24) * 2f - 1f) * scale;
            }
        }

        internal static float[] Filled(int n, uint seed, float scale)
        {
            var x = new float[n];
            Fill(x, seed, scale);
            return x;
        }
    }

    internal sealed class RowFailure : Exception
    {
        internal RowFailure(string message) : base(message) { }
    }
}
