// GameLoop.cs: a tiny game loop whose agent learns online with flatopt, one optimizer step per
// frame at 60 frames per second.
//
// The world: a target moves along a Lissajous curve in a 2-D arena; an agent chases it. The
// agent's small network (8 -> 32 tanh -> 2) looks at the target's position and last moves and
// predicts where the target will be LEAD frames later; the agent steers toward that predicted
// point (lead pursuit). Every frame the prediction made LEAD frames ago meets the truth: the
// network takes one Adam step (flatopt) on the last BATCH matured predictions. The prediction
// error falls within seconds and the agent closes in on the target.
//
// Everything the frame loop touches is allocated before it starts: the parameters and gradients
// are float[] arrays registered (pinned) once, so a frame allocates nothing on the managed heap;
// the program measures that with the runtime's allocation counter and prints a per-frame cost
// table (p50, p99, max) of the whole frame and of the flatopt step alone.
//
// Usage: mono GameLoop.exe [--seconds S] [--realtime] [--check]
//   --seconds S  simulated game time (default 60); frames are simulated back to back unless
//   --realtime   paces the loop at 60 frames per second (sleeping between frames)
//   --check      exit 1 unless the error fell (last 5 s below a quarter of the first 5 s and
//                below the no-learning baseline) and the frames allocated 0 bytes

using System;
using System.Diagnostics;
using System.Reflection;
using System.Threading;
using Flatopt;

internal static class GameLoop
{
    private const int Fps = 60, In = 8, Hidden = 32, Out = 2, Lead = 10, Batch = 8, History = 64;

    // The network's parameters and their gradients: registered with the optimizer once.
    private static readonly float[] W1 = new float[Hidden * In], B1 = new float[Hidden];
    private static readonly float[] W2 = new float[Out * Hidden], B2 = new float[Out];
    private static readonly float[] GW1 = new float[Hidden * In], GB1 = new float[Hidden];
    private static readonly float[] GW2 = new float[Out * Hidden], GB2 = new float[Out];
    // Scratch of the forward / backward pass.
    private static readonly float[] H = new float[Hidden], Y = new float[Out], DH = new float[Hidden];
    // Ring buffers: the network input of each past frame and the target's positions.
    private static readonly float[] Inputs = new float[History * In];
    private static readonly float[] Tx = new float[History], Ty = new float[History];

    private static void Forward(float[] x, int off)
    {
        for (int j = 0; j < Hidden; j++)
        {
            float s = B1[j];
            for (int i = 0; i < In; i++)
                s += W1[j * In + i] * x[off + i];
            H[j] = (float)Math.Tanh(s);
        }
        for (int k = 0; k < Out; k++)
        {
            float s = B2[k];
            for (int j = 0; j < Hidden; j++)
                s += W2[k * Hidden + j] * H[j];
            Y[k] = s;
        }
    }

    // Adds the gradient of 0.5 |y - label|^2 / Batch at the input Inputs[off..] to the
    // gradient arrays; returns the squared error.
    private static float Backward(int off, float lx, float ly)
    {
        Forward(Inputs, off);
        float ex = Y[0] - lx, ey = Y[1] - ly;
        const float scale = 1f / Batch;
        for (int j = 0; j < Hidden; j++)
        {
            GW2[j] += scale * ex * H[j];
            GW2[Hidden + j] += scale * ey * H[j];
            DH[j] = (W2[j] * ex + W2[Hidden + j] * ey) * (1f - H[j] * H[j]);
        }
        GB2[0] += scale * ex;
        GB2[1] += scale * ey;
        for (int j = 0; j < Hidden; j++)
        {
            float d = scale * DH[j];
            GB1[j] += d;
            for (int i = 0; i < In; i++)
                GW1[j * In + i] += d * Inputs[off + i];
        }
        return ex * ex + ey * ey;
    }

    private static double Percentile(double[] sorted, double q)
    {
        return sorted[Math.Min(sorted.Length - 1, (int)(q * sorted.Length))];
    }

    private static int Main(string[] args)
    {
        double seconds = 60;
        bool realtime = false, check = false;
        for (int a = 0; a < args.Length; a++)
        {
            if (args[a] == "--seconds" && a + 1 < args.Length)
                seconds = double.Parse(args[++a], System.Globalization.CultureInfo.InvariantCulture);
            else if (args[a] == "--realtime")
                realtime = true;
            else if (args[a] == "--check")
                check = true;
            else
            {
                Console.Error.WriteLine("usage: GameLoop.exe [--seconds S] [--realtime] [--check]");
                return 2;
            }
        }
        int frames = (int)(seconds * Fps);
        const int window = 5 * Fps;
        if (frames < 2 * window)
        {
            Console.Error.WriteLine("GameLoop: --seconds must be at least 10");
            return 2;
        }

        // Small random initial weights (deterministic).
        var rng = new Random(7);
        for (int i = 0; i < W1.Length; i++)
            W1[i] = (float)((rng.NextDouble() * 2 - 1) / Math.Sqrt(In));
        for (int i = 0; i < W2.Length; i++)
            W2[i] = (float)((rng.NextDouble() * 2 - 1) / Math.Sqrt(Hidden) * 0.1);

        // --- the flatopt part: an Adam optimizer over the four parameter arrays -------------
        Config config = Config.Init();
        config.Lr = 3e-3;
        config.GradClipNorm = 1.0;
        BaseParams adam = BaseParams.Init(BaseKind.Adam);
        using (var opt = new Optimizer(config, adam))
        {
            opt.AddParam(W1, GW1);
            opt.AddParam(B1, GB1);
            opt.AddParam(W2, GW2);
            opt.AddParam(B2, GB2);
            // ---------------------------------------------------------------------------------

            MethodInfo mi = typeof(GC).GetMethod("GetAllocatedBytesForCurrentThread",
                BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Static);
            Func<long> allocated = mi == null ? null : (Func<long>)Delegate.CreateDelegate(typeof(Func<long>), mi);
            var frameNs = new double[frames];
            var stepNs = new double[frames];
            int windows = frames / window;
            var winErr = new double[windows];
            var winNaive = new double[windows];
            var winDist = new double[windows];
            var winCount = new int[windows];
            double ax = 0, ay = 0, avx = 0, avy = 0;
            long tick = Stopwatch.Frequency / Fps, next = Stopwatch.GetTimestamp();
            long allocStart = 0;
            int gcStart = 0;
            var sw = new Stopwatch();
            var sws = new Stopwatch();
            Console.WriteLine("GameLoop: flatopt {0}, {1} frames at {2} fps ({3}), network {4}-{5}-{6} ({7} parameters), Adam lr {8}",
                Library.Version, frames, Fps, realtime ? "paced in real time" : "simulated back to back",
                In, Hidden, Out, W1.Length + B1.Length + W2.Length + B2.Length, config.Lr);

            for (int f = 0; f < frames; f++)
            {
                if (f == window)
                {
                    // JIT and first-touch costs are behind us: count allocations from here.
                    allocStart = allocated != null ? allocated() : 0;
                    gcStart = GC.CollectionCount(0);
                }
                sw.Restart();
                // 1. The world moves: the target on its curve.
                double t = (double)f / Fps;
                int slot = f % History;
                Tx[slot] = (float)(3.0 * Math.Sin(0.9 * t) + 0.8 * Math.Sin(2.3 * t));
                Ty[slot] = (float)(2.0 * Math.Sin(1.3 * t + 0.5));
                // 2. The network's input: where the target is (scaled to about [-1, 1]) and its
                // last three moves (scaled up: one frame's move is small).
                int ib = slot * In;
                Inputs[ib] = Tx[slot] / 4f;
                Inputs[ib + 1] = Ty[slot] / 2f;
                for (int k = 1; k <= 3; k++)
                {
                    int s = ((f - k) % History + History) % History;
                    Inputs[ib + 2 * k] = f >= k ? 20f * (Tx[slot] - Tx[s]) / k : 0f;
                    Inputs[ib + 2 * k + 1] = f >= k ? 20f * (Ty[slot] - Ty[s]) / k : 0f;
                }
                // 3. Learn: the predictions made Lead frames ago (and before) meet the truth.
                float err = 0;
                int n = 0;
                if (f >= Lead + 3 + Batch)
                {
                    Array.Clear(GW1, 0, GW1.Length);
                    Array.Clear(GB1, 0, GB1.Length);
                    Array.Clear(GW2, 0, GW2.Length);
                    Array.Clear(GB2, 0, GB2.Length);
                    for (int b = 0; b < Batch; b++)
                    {
                        int past = f - Lead - b, ps = past % History, now = (f - b) % History;
                        float e2 = Backward(ps * In, Tx[now] - Tx[ps], Ty[now] - Ty[ps]);
                        if (b == 0)
                        {
                            err = e2;
                            n = 1;
                        }
                    }
                    sws.Restart();
                    opt.Step(); // one flatopt step per frame
                    sws.Stop();
                    stepNs[f] = sws.Elapsed.TotalMilliseconds * 1e6;
                }
                // 4. Act: steer toward the predicted position of the target (PD control).
                Forward(Inputs, ib);
                double gx = Tx[slot] + Y[0], gy = Ty[slot] + Y[1];
                double accx = 40.0 * (gx - ax) - 8.0 * avx, accy = 40.0 * (gy - ay) - 8.0 * avy;
                avx += accx / Fps;
                avy += accy / Fps;
                ax += avx / Fps;
                ay += avy / Fps;
                sw.Stop();
                frameNs[f] = sw.Elapsed.TotalMilliseconds * 1e6;
                // Bookkeeping (outside the timed frame).
                int w = Math.Min(f / window, windows - 1);
                if (n > 0)
                {
                    int ps = (f - Lead) % History;
                    float nx = Tx[slot] - Tx[ps], ny = Ty[slot] - Ty[ps];
                    winErr[w] += err;
                    winNaive[w] += nx * nx + ny * ny;
                    winCount[w]++;
                }
                double dx = ax - Tx[slot], dy = ay - Ty[slot];
                winDist[w] += Math.Sqrt(dx * dx + dy * dy) / window;
                if (realtime)
                {
                    next += tick;
                    long wait = next - Stopwatch.GetTimestamp();
                    if (wait > 0)
                        Thread.Sleep((int)(wait * 1000 / Stopwatch.Frequency));
                }
            }
            long frameBytes = allocated != null ? allocated() - allocStart : -1;
            int gcs = GC.CollectionCount(0) - gcStart;

            Console.WriteLine();
            Console.WriteLine("  game time   prediction RMSE   no-learning RMSE   agent-target distance");
            for (int w = 0; w < windows; w++)
            {
                double rmse = Math.Sqrt(winErr[w] / Math.Max(1, winCount[w]));
                double naive = Math.Sqrt(winNaive[w] / Math.Max(1, winCount[w]));
                Console.WriteLine("  {0,3}-{1,3} s   {2,15:F4}   {3,16:F4}   {4,21:F4}", w * 5, w * 5 + 5, rmse, naive, winDist[w]);
            }
            var fr = new double[frames - window];
            Array.Copy(frameNs, window, fr, 0, fr.Length);
            var st = new double[frames - window];
            Array.Copy(stepNs, window, st, 0, st.Length);
            Array.Sort(fr);
            Array.Sort(st);
            Console.WriteLine();
            Console.WriteLine("  per-frame cost after the first 5 s ({0} frames)     p50          p99          max", fr.Length);
            Console.WriteLine("  whole frame (move, learn, act)              {0,9:F0} ns {1,9:F0} ns {2,9:F0} ns", Percentile(fr, 0.5), Percentile(fr, 0.99), fr[fr.Length - 1]);
            Console.WriteLine("  flatopt step (opt.Step())                   {0,9:F0} ns {1,9:F0} ns {2,9:F0} ns", Percentile(st, 0.5), Percentile(st, 0.99), st[st.Length - 1]);
            Console.WriteLine("  frame budget at {0} fps                      {1,9:F0} ns", Fps, 1e9 / Fps);
            Console.WriteLine();
            Console.WriteLine("  managed allocations over those frames: {0} bytes, {1} gen-0 collections{2}",
                frameBytes, gcs, allocated == null ? " (no allocation counter on this runtime)" : "");
            Console.WriteLine("  optimizer: {0} steps, {1} skipped", opt.StepCount, opt.SkippedCount);

            double first = Math.Sqrt(winErr[0] / Math.Max(1, winCount[0]));
            double last = Math.Sqrt(winErr[windows - 1] / Math.Max(1, winCount[windows - 1]));
            double lastNaive = Math.Sqrt(winNaive[windows - 1] / Math.Max(1, winCount[windows - 1]));
            bool learned = last < 0.25 * first && last < 0.25 * lastNaive;
            bool noAlloc = frameBytes == 0 && gcs == 0;
            Console.WriteLine("GameLoop: prediction RMSE {0:F4} -> {1:F4} (no-learning {2:F4}): {3}; {4}",
                first, last, lastNaive, learned ? "it learns" : "it did NOT learn", noAlloc ? "0 bytes allocated per frame" : "frames allocated");
            if (check && !(learned && (noAlloc || allocated == null)))
                return 1;
        }
        return 0;
    }
}
