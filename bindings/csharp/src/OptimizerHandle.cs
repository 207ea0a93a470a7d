// OptimizerHandle.cs: the flatopt_optimizer* as a SafeHandle. It owns, besides the native
// optimizer, the pins of the float[] buffers registered with it. ReleaseHandle frees the
// optimizer first and unpins afterwards, and the runtime runs it only when no P/Invoke call
// holding this handle is in flight (the marshaller reference-counts SafeHandle arguments), so a
// buffer can never move or be collected while the library may still touch it, even when
// Dispose races a step on another thread or the handle is only finalized.

using System;
using System.Collections.Generic;
using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace Flatopt
{
    /// <summary>The native optimizer handle and the pins of the managed buffers registered with
    /// it. Use it through <see cref="Optimizer"/>.</summary>
    public sealed class OptimizerHandle : SafeHandleZeroOrMinusOneIsInvalid
    {
        private readonly List<GCHandle> pins = new List<GCHandle>();
        private static int livePins;

        /// <summary>The number of managed arrays pinned by all optimizers of the process right
        /// now (registered and not yet released by Dispose or the finalizer): a leak check.</summary>
        public static int LivePins
        {
            get { return System.Threading.Volatile.Read(ref livePins); }
        }

        /// <summary>Called by the marshaller for out parameters.</summary>
        public OptimizerHandle() : base(true) { }

        /// <summary>Pins <paramref name="array"/> until the handle is released and returns its
        /// address (IntPtr.Zero for null).</summary>
        internal IntPtr Pin(Array array)
        {
            if (array == null)
                return IntPtr.Zero;
            GCHandle h = GCHandle.Alloc(array, GCHandleType.Pinned);
            lock (pins)
                pins.Add(h);
            System.Threading.Interlocked.Increment(ref livePins);
            return h.AddrOfPinnedObject();
        }

        /// <summary>Releases the last <paramref name="count"/> pins (a registration the library
        /// refused).</summary>
        internal void UnpinLast(int count)
        {
            lock (pins)
            {
                for (int i = 0; i < count; i++)
                {
                    int last = pins.Count - 1;
                    pins[last].Free();
                    pins.RemoveAt(last);
                    System.Threading.Interlocked.Decrement(ref livePins);
                }
            }
        }

        protected override bool ReleaseHandle()
        {
            Native.flatopt_optimizer_free(handle);
            lock (pins)
            {
                foreach (GCHandle h in pins)
                {
                    h.Free();
                    System.Threading.Interlocked.Decrement(ref livePins);
                }
                pins.Clear();
            }
            return true;
        }
    }
}
