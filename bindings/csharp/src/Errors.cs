// Errors.cs: the status codes of include/flatopt.h and one exception type per error status.
//
// Every failing call throws a subclass of FlatoptException whose Message is the library's own
// flatopt_last_error_message() (it names the argument and the value at fault) and whose Status
// is the C status code. When an exception is thrown nothing has changed: parameters, optimizer
// state, counters and schedule are as before the call (the library validates before writing;
// the binding's own checks run before the library is called). FLATOPT_SKIPPED is not an error:
// the step methods return false for it.

using System;

namespace Flatopt
{
    /// <summary>flatopt_status: the result of every fallible C call.</summary>
    [CName("flatopt_status", "FLATOPT_")]
    public enum Status
    {
        /// <summary>Success.</summary>
        Ok = 0,
        /// <summary>The update was skipped: a gradient holds NaN or Inf and the policy is "skip".</summary>
        Skipped = 1,
        /// <summary>A required pointer argument was NULL.</summary>
        ErrNullPointer = 2,
        /// <summary>An argument or hyperparameter is outside its domain.</summary>
        ErrInvalidArgument = 3,
        /// <summary>A length differs from the registered or expected one.</summary>
        ErrLengthMismatch = 4,
        /// <summary>A gradient holds NaN or Inf and the policy is "error".</summary>
        ErrNonFinite = 5,
        /// <summary>The call is not allowed in the optimizer's current state.</summary>
        ErrInvalidState = 6,
        /// <summary>The feature is not available in this build or on this CPU.</summary>
        ErrUnsupported = 7,
        /// <summary>Buffers that must be disjoint overlap.</summary>
        ErrOverlap = 8,
        /// <summary>An input/output error (files).</summary>
        ErrIo = 9,
        /// <summary>Data failed validation (checkpoints).</summary>
        ErrCorrupt = 10,
        /// <summary>An internal error was caught at the boundary (a bug: please report it).</summary>
        ErrInternal = 11,
        /// <summary>The handle is being used by another thread at the same time.</summary>
        ErrBusy = 12,
        /// <summary>An earlier call on this handle failed with ErrInternal and may have left it
        /// half-updated: every later call is refused; only freeing it works.</summary>
        ErrPoisoned = 13,
    }

    /// <summary>Base class of every flatopt error. <see cref="Status"/> is the C status code.</summary>
    public class FlatoptException : Exception
    {
        /// <summary>The flatopt_status of the failed call.</summary>
        public Status Status { get; private set; }

        public FlatoptException(Status status, string message) : base(message)
        {
            Status = status;
        }

        /// <summary>The exception type of <paramref name="status"/> (an error status; an
        /// unknown code gives a FlatoptException), e.g. for statuses from the caller's own
        /// P/Invoke declarations.</summary>
        public static FlatoptException Create(Status status, string message)
        {
            return Errors.Make(status, message);
        }
    }

    /// <summary>FLATOPT_ERR_NULL_POINTER: a required buffer or argument was null.</summary>
    public class NullPointerException : FlatoptException
    {
        public NullPointerException(string message) : base(Status.ErrNullPointer, message) { }
    }

    /// <summary>FLATOPT_ERR_INVALID_ARGUMENT: a value outside its domain (the message names it).</summary>
    public class InvalidArgumentException : FlatoptException
    {
        public InvalidArgumentException(string message) : base(Status.ErrInvalidArgument, message) { }
    }

    /// <summary>FLATOPT_ERR_LENGTH_MISMATCH: a length differs from the registered or expected one.</summary>
    public class LengthMismatchException : FlatoptException
    {
        public LengthMismatchException(string message) : base(Status.ErrLengthMismatch, message) { }
    }

    /// <summary>FLATOPT_ERR_NON_FINITE: a NaN/Inf gradient under the "error" policy (the update
    /// was skipped and counted).</summary>
    public class NonFiniteException : FlatoptException
    {
        public NonFiniteException(string message) : base(Status.ErrNonFinite, message) { }
    }

    /// <summary>FLATOPT_ERR_INVALID_STATE: the call is not allowed now (e.g. a step before any
    /// buffer is registered).</summary>
    public class InvalidStateException : FlatoptException
    {
        public InvalidStateException(string message) : base(Status.ErrInvalidState, message) { }
    }

    /// <summary>FLATOPT_ERR_UNSUPPORTED: not available in this build or on this CPU.</summary>
    public class UnsupportedException : FlatoptException
    {
        public UnsupportedException(string message) : base(Status.ErrUnsupported, message) { }
    }

    /// <summary>FLATOPT_ERR_OVERLAP: buffers that must be disjoint share memory.</summary>
    public class OverlapException : FlatoptException
    {
        public OverlapException(string message) : base(Status.ErrOverlap, message) { }
    }

    /// <summary>FLATOPT_ERR_IO: a checkpoint file could not be read or written.</summary>
    public class CheckpointIOException : FlatoptException
    {
        public CheckpointIOException(string message) : base(Status.ErrIo, message) { }
    }

    /// <summary>FLATOPT_ERR_CORRUPT: checkpoint data failed validation.</summary>
    public class CorruptException : FlatoptException
    {
        public CorruptException(string message) : base(Status.ErrCorrupt, message) { }
    }

    /// <summary>FLATOPT_ERR_INTERNAL: a bug in flatopt caught at the boundary: please report it.</summary>
    public class InternalException : FlatoptException
    {
        public InternalException(string message) : base(Status.ErrInternal, message) { }
    }

    /// <summary>FLATOPT_ERR_BUSY: the optimizer is in use by another thread (nothing changed).</summary>
    public class BusyException : FlatoptException
    {
        public BusyException(string message) : base(Status.ErrBusy, message) { }
    }

    /// <summary>FLATOPT_ERR_POISONED: an earlier call on this optimizer failed inside flatopt
    /// (InternalException) and may have left it half-updated; only Dispose works.</summary>
    public class PoisonedException : FlatoptException
    {
        public PoisonedException(string message) : base(Status.ErrPoisoned, message) { }
    }

    internal static class Errors
    {
        /// <summary>Returns the status if it is Ok or Skipped, else throws its exception with
        /// the calling thread's flatopt_last_error_message(). Allocation-free on success.</summary>
        internal static Status Check(Status status)
        {
            if (status == Status.Ok || status == Status.Skipped)
                return status;
            throw FromLast(status);
        }

        /// <summary>The exception of an error status, with the library's message (read now:
        /// call right after the failing call, on the same thread).</summary>
        [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
        internal static FlatoptException FromLast(Status status)
        {
            string msg = Native.Utf8(Native.flatopt_last_error_message());
            if (msg.Length == 0)
                msg = Native.Utf8(Native.flatopt_status_str((int)status));
            return Make(status, msg);
        }

        /// <summary>The exception type of a status (an unknown code gives FlatoptException).</summary>
        internal static FlatoptException Make(Status status, string msg)
        {
            switch (status)
            {
                case Status.ErrNullPointer: return new NullPointerException(msg);
                case Status.ErrInvalidArgument: return new InvalidArgumentException(msg);
                case Status.ErrLengthMismatch: return new LengthMismatchException(msg);
                case Status.ErrNonFinite: return new NonFiniteException(msg);
                case Status.ErrInvalidState: return new InvalidStateException(msg);
                case Status.ErrUnsupported: return new UnsupportedException(msg);
                case Status.ErrOverlap: return new OverlapException(msg);
                case Status.ErrIo: return new CheckpointIOException(msg);
                case Status.ErrCorrupt: return new CorruptException(msg);
                case Status.ErrInternal: return new InternalException(msg);
                case Status.ErrBusy: return new BusyException(msg);
                case Status.ErrPoisoned: return new PoisonedException(msg);
                default: return new FlatoptException(status, msg);
            }
        }

        /// <summary>A length error found by the binding (where the C ABI takes one length for
        /// several buffers), in the library's wording.</summary>
        internal static LengthMismatchException Length(string what, long expected, long got)
        {
            return new LengthMismatchException(string.Format(
                "length mismatch for {0}: expected {1}, got {2}", what, expected, got));
        }

        /// <summary>A bad argument found by the binding, in the library's wording.</summary>
        internal static InvalidArgumentException Invalid(string name, object value, string expected)
        {
            return new InvalidArgumentException(string.Format(
                "invalid {0} = {1}: {2}", name, value, expected));
        }
    }
}
