// Native.cs: the P/Invoke declarations of include/flatopt.h, one per C function, in the
// header's order. Every argument type is blittable (no marshalling allocations): pointers are
// IntPtr or typed pointers, size_t is UIntPtr, statuses come back as the Status enum (int32),
// and the optimizer handle is the OptimizerHandle SafeHandle (reference counted by the
// marshaller, so a concurrent Dispose cannot free the handle under a running call).
//
// The library is loaded as "flatopt": libflatopt.so on Linux, flatopt.dll on Windows,
// libflatopt.dylib on macOS, found next to the assembly (NuGet runtimes/<rid>/native/, Unity
// Plugins/x86_64/) or on the system library path.

using System;
using System.Runtime.InteropServices;
using System.Security;

namespace Flatopt
{
    [SuppressUnmanagedCodeSecurity]
    internal static unsafe class Native
    {
        internal const string Lib = "flatopt";
        private const CallingConvention Cdecl = CallingConvention.Cdecl;

        [DllImport(Lib, CallingConvention = Cdecl)]
        internal static extern IntPtr flatopt_status_str(int status);

        [DllImport(Lib, CallingConvention = Cdecl)]
        internal static extern IntPtr flatopt_last_error_message();

        [DllImport(Lib, CallingConvention = Cdecl)]
        internal static extern IntPtr flatopt_version();

        [DllImport(Lib, CallingConvention = Cdecl)]
        internal static extern uint flatopt_version_number();

        [DllImport(Lib, CallingConvention = Cdecl)]
        internal static extern Status flatopt_base_params_init(BaseParams* p, UIntPtr size, uint kind);

        [DllImport(Lib, CallingConvention = Cdecl)]
        internal static extern Status flatopt_schedule_init(Schedule* s, UIntPtr size, uint kind);

        [DllImport(Lib, CallingConvention = Cdecl)]
        internal static extern Status flatopt_config_init(Config* c, UIntPtr size);

        [DllImport(Lib, CallingConvention = Cdecl)]
        internal static extern Status flatopt_optimizer_new(Config* config, out OptimizerHandle opt);

        [DllImport(Lib, CallingConvention = Cdecl)]
        internal static extern void flatopt_optimizer_free(IntPtr opt);

        [DllImport(Lib, CallingConvention = Cdecl)]
        internal static extern Status flatopt_optimizer_add_param(OptimizerHandle opt, IntPtr param, IntPtr grad, UIntPtr len);

        [DllImport(Lib, CallingConvention = Cdecl)]
        internal static extern Status flatopt_optimizer_step(OptimizerHandle opt);

        [DllImport(Lib, CallingConvention = Cdecl)]
        internal static extern Status flatopt_optimizer_step_with_grads(OptimizerHandle opt, IntPtr grads, UIntPtr n);

        [DllImport(Lib, CallingConvention = Cdecl)]
        internal static extern Status flatopt_optimizer_sum_squares_block_count(OptimizerHandle opt, out UIntPtr n);

        [DllImport(Lib, CallingConvention = Cdecl)]
        internal static extern Status flatopt_optimizer_sum_squares_partials(OptimizerHandle opt, double* partials, UIntPtr n);

        [DllImport(Lib, CallingConvention = Cdecl)]
        internal static extern Status flatopt_optimizer_step_with_sum_squares(OptimizerHandle opt, double sumSquares);

        [DllImport(Lib, CallingConvention = Cdecl)]
        internal static extern Status flatopt_optimizer_norm_partials(OptimizerHandle opt, double sumSquares, double* partials, UIntPtr n);

        [DllImport(Lib, CallingConvention = Cdecl)]
        internal static extern Status flatopt_optimizer_step_with_norms(OptimizerHandle opt, double sumSquares, double* norms, UIntPtr n);

        [DllImport(Lib, CallingConvention = Cdecl)]
        internal static extern Status flatopt_optimizer_begin_step(OptimizerHandle opt);

        [DllImport(Lib, CallingConvention = Cdecl)]
        internal static extern Status flatopt_optimizer_begin_step_scaled(OptimizerHandle opt, float gradScale);

        [DllImport(Lib, CallingConvention = Cdecl)]
        internal static extern Status flatopt_optimizer_step_range(OptimizerHandle opt, UIntPtr begin, UIntPtr end);

        [DllImport(Lib, CallingConvention = Cdecl)]
        internal static extern Status flatopt_optimizer_end_step(OptimizerHandle opt);

        [DllImport(Lib, CallingConvention = Cdecl)]
        internal static extern Status flatopt_optimizer_reset(OptimizerHandle opt);

        [DllImport(Lib, CallingConvention = Cdecl)]
        internal static extern Status flatopt_optimizer_step_count(OptimizerHandle opt, out ulong n);

        [DllImport(Lib, CallingConvention = Cdecl)]
        internal static extern Status flatopt_optimizer_skipped_count(OptimizerHandle opt, out ulong n);

        [DllImport(Lib, CallingConvention = Cdecl)]
        internal static extern Status flatopt_optimizer_current_lr(OptimizerHandle opt, out float lr);

        [DllImport(Lib, CallingConvention = Cdecl)]
        internal static extern Status flatopt_optimizer_simd_tier(OptimizerHandle opt, out uint tier);

        [DllImport(Lib, CallingConvention = Cdecl)]
        internal static extern Status flatopt_optimizer_num_threads(OptimizerHandle opt, out uint n);

        [DllImport(Lib, CallingConvention = Cdecl)]
        internal static extern Status flatopt_optimizer_num_params(OptimizerHandle opt, out UIntPtr n);

        [DllImport(Lib, CallingConvention = Cdecl)]
        internal static extern Status flatopt_optimizer_total_len(OptimizerHandle opt, out UIntPtr n);

        [DllImport(Lib, CallingConvention = Cdecl)]
        internal static extern Status flatopt_optimizer_state_bytes(OptimizerHandle opt, out ulong n);

        [DllImport(Lib, CallingConvention = Cdecl)]
        internal static extern Status flatopt_optimizer_set_num_threads(OptimizerHandle opt, uint n);

        [DllImport(Lib, CallingConvention = Cdecl)]
        internal static extern Status flatopt_optimizer_set_simd_tier(OptimizerHandle opt, uint tier);

        [DllImport(Lib, CallingConvention = Cdecl)]
        internal static extern Status flatopt_optimizer_slow_weights(OptimizerHandle opt, UIntPtr index, out IntPtr ptr, out UIntPtr len);

        [DllImport(Lib, CallingConvention = Cdecl)]
        internal static extern Status flatopt_optimizer_copy_slow_weights(OptimizerHandle opt, UIntPtr index, float* dst, UIntPtr len);

        [DllImport(Lib, CallingConvention = Cdecl)]
        internal static extern Status flatopt_optimizer_schedule_step(OptimizerHandle opt);

        [DllImport(Lib, CallingConvention = Cdecl)]
        internal static extern Status flatopt_optimizer_schedule_step_metric(OptimizerHandle opt, double metric);

        [DllImport(Lib, CallingConvention = Cdecl)]
        internal static extern Status flatopt_optimizer_schedule_set_epoch(OptimizerHandle opt, ulong epoch);

        [DllImport(Lib, CallingConvention = Cdecl)]
        internal static extern Status flatopt_group_options_init(GroupOptions* options, UIntPtr size);

        [DllImport(Lib, CallingConvention = Cdecl)]
        internal static extern Status flatopt_param_options_init(ParamOptions* options, UIntPtr size);

        [DllImport(Lib, CallingConvention = Cdecl)]
        internal static extern Status flatopt_loss_scaler_options_init(LossScalerOptions* options, UIntPtr size);

        [DllImport(Lib, CallingConvention = Cdecl)]
        internal static extern Status flatopt_optimizer_add_group(OptimizerHandle opt, GroupOptions* options, out UIntPtr group);

        [DllImport(Lib, CallingConvention = Cdecl)]
        internal static extern Status flatopt_optimizer_add_param_to_group(OptimizerHandle opt, UIntPtr group, IntPtr param, IntPtr grad, UIntPtr len);

        [DllImport(Lib, CallingConvention = Cdecl)]
        internal static extern Status flatopt_optimizer_num_groups(OptimizerHandle opt, out UIntPtr n);

        [DllImport(Lib, CallingConvention = Cdecl)]
        internal static extern Status flatopt_optimizer_param_group(OptimizerHandle opt, UIntPtr index, out UIntPtr group);

        [DllImport(Lib, CallingConvention = Cdecl)]
        internal static extern Status flatopt_optimizer_group_lr(OptimizerHandle opt, UIntPtr group, out double lr);

        [DllImport(Lib, CallingConvention = Cdecl)]
        internal static extern Status flatopt_optimizer_group_current_lr(OptimizerHandle opt, UIntPtr group, out float lr);

        [DllImport(Lib, CallingConvention = Cdecl)]
        internal static extern Status flatopt_optimizer_group_current_lr_exact(OptimizerHandle opt, UIntPtr group, out double lr);

        [DllImport(Lib, CallingConvention = Cdecl)]
        internal static extern Status flatopt_optimizer_group_weight_decay(OptimizerHandle opt, UIntPtr group, out double weightDecay);

        [DllImport(Lib, CallingConvention = Cdecl)]
        internal static extern Status flatopt_optimizer_set_group_lr(OptimizerHandle opt, UIntPtr group, double lr);

        [DllImport(Lib, CallingConvention = Cdecl)]
        internal static extern Status flatopt_optimizer_set_group_weight_decay(OptimizerHandle opt, UIntPtr group, double weightDecay);

        [DllImport(Lib, CallingConvention = Cdecl)]
        internal static extern Status flatopt_optimizer_group_base_params(OptimizerHandle opt, UIntPtr group, BaseParams* output, UIntPtr size);

        [DllImport(Lib, CallingConvention = Cdecl)]
        internal static extern Status flatopt_optimizer_set_group_base_params(OptimizerHandle opt, UIntPtr group, BaseParams* bases);

        [DllImport(Lib, CallingConvention = Cdecl)]
        internal static extern uint flatopt_default_simd_tier();

        [DllImport(Lib, CallingConvention = Cdecl)]
        internal static extern Status flatopt_set_default_simd_tier(uint tier);

        [DllImport(Lib, CallingConvention = Cdecl)]
        internal static extern int flatopt_simd_tier_available(uint tier);

        [DllImport(Lib, CallingConvention = Cdecl)]
        internal static extern IntPtr flatopt_simd_tier_name(uint tier);

        [DllImport(Lib, CallingConvention = Cdecl)]
        internal static extern Status flatopt_step_args_init(StepArgs* args, UIntPtr size);

        [DllImport(Lib, CallingConvention = Cdecl)]
        internal static extern Status flatopt_sgd_update(BaseParams* hp, StepArgs* args, float* param, float* grad, float* momentum, float* slow, UIntPtr len);

        [DllImport(Lib, CallingConvention = Cdecl)]
        internal static extern Status flatopt_adam_update(BaseParams* hp, StepArgs* args, float* param, float* grad, float* m, float* v, float* vMax, float* slow, UIntPtr len);

        [DllImport(Lib, CallingConvention = Cdecl)]
        internal static extern Status flatopt_adamw_update(BaseParams* hp, StepArgs* args, float* param, float* grad, float* m, float* v, float* slow, UIntPtr len);

        [DllImport(Lib, CallingConvention = Cdecl)]
        internal static extern Status flatopt_radam_update(BaseParams* hp, StepArgs* args, float* param, float* grad, float* m, float* v, float* slow, UIntPtr len);

        [DllImport(Lib, CallingConvention = Cdecl)]
        internal static extern Status flatopt_base_update(BaseParams* hp, StepArgs* args, float* param, float* grad, float* m, float* v, float* vMax, float* slow, UIntPtr len);

        [DllImport(Lib, CallingConvention = Cdecl)]
        internal static extern Status flatopt_base_state_buffers(BaseParams* hp, out uint mask);

        [DllImport(Lib, CallingConvention = Cdecl)]
        internal static extern Status flatopt_base_state_init(BaseParams* hp, float* m, float* v, float* vMax, UIntPtr len);

        [DllImport(Lib, CallingConvention = Cdecl)]
        internal static extern Status flatopt_sum_squares(float* x, UIntPtr len, out double result);

        [DllImport(Lib, CallingConvention = Cdecl)]
        internal static extern UIntPtr flatopt_sum_squares_block_size();

        [DllImport(Lib, CallingConvention = Cdecl)]
        internal static extern Status flatopt_sum_squares_partials(float* x, UIntPtr len, double* partials, UIntPtr n);

        // Mixed precision (16-bit values as ushort bit patterns); declared for the ABI, not
        // wrapped by the managed API yet.
        [DllImport(Lib, CallingConvention = Cdecl)]
        internal static extern Status flatopt_optimizer_add_param_with_options(OptimizerHandle opt, float* param, void* grad, UIntPtr len, ParamOptions* options);

        [DllImport(Lib, CallingConvention = Cdecl)]
        internal static extern Status flatopt_optimizer_step_mixed(OptimizerHandle opt, void** grads, UIntPtr nGrads, float gradScale);

        [DllImport(Lib, CallingConvention = Cdecl)]
        internal static extern Status flatopt_optimizer_begin_step_mixed(OptimizerHandle opt, void** grads, UIntPtr nGrads, float gradScale);

        [DllImport(Lib, CallingConvention = Cdecl)]
        internal static extern Status flatopt_optimizer_set_loss_scaler(OptimizerHandle opt, LossScalerOptions* options);

        [DllImport(Lib, CallingConvention = Cdecl)]
        internal static extern Status flatopt_optimizer_loss_scaler_state(OptimizerHandle opt, float* scale, uint* growthTracker, uint* foundInf);

        [DllImport(Lib, CallingConvention = Cdecl)]
        internal static extern Status flatopt_optimizer_set_loss_scaler_state(OptimizerHandle opt, float scale, uint growthTracker);

        [DllImport(Lib, CallingConvention = Cdecl)]
        internal static extern Status flatopt_widen_to_f32(uint dtype, ushort* src, float* dst, UIntPtr len);

        [DllImport(Lib, CallingConvention = Cdecl)]
        internal static extern Status flatopt_narrow_from_f32(uint dtype, float* src, ushort* dst, UIntPtr len);

        [DllImport(Lib, CallingConvention = Cdecl)]
        internal static extern Status flatopt_sum_squares_partials_mixed(void* grad, uint gradDtype, UIntPtr len, float gradScale, double* partials, UIntPtr n);

        [DllImport(Lib, CallingConvention = Cdecl)]
        internal static extern Status flatopt_mixed_update(BaseParams* hp, StepArgs* args, float gradScale, float* param, void* grad, uint gradDtype, float* m, float* v, float* vMax, float* slow, void* copy, uint copyDtype, UIntPtr len);

        [DllImport(Lib, CallingConvention = Cdecl)]
        internal static extern Status flatopt_clip_scale(double sumSquares, double maxNorm, out double scale);

        [DllImport(Lib, CallingConvention = Cdecl)]
        internal static extern Status flatopt_clip_by_value(float* x, UIntPtr len, float c);

        [DllImport(Lib, CallingConvention = Cdecl)]
        internal static extern Status flatopt_scale(float* x, UIntPtr len, float s);

        [DllImport(Lib, CallingConvention = Cdecl)]
        internal static extern Status flatopt_lookahead_sync(float* fast, float* slow, UIntPtr len, float alpha);

        [DllImport(Lib, CallingConvention = Cdecl)]
        internal static extern Status flatopt_optimizer_checkpoint_size(OptimizerHandle opt, out UIntPtr size);

        [DllImport(Lib, CallingConvention = Cdecl)]
        internal static extern Status flatopt_optimizer_save(OptimizerHandle opt, byte* buf, UIntPtr cap, out UIntPtr written);

        [DllImport(Lib, CallingConvention = Cdecl)]
        internal static extern Status flatopt_optimizer_load(OptimizerHandle opt, byte* buf, UIntPtr len);

        [DllImport(Lib, CallingConvention = Cdecl)]
        internal static extern Status flatopt_optimizer_checkpoint_info(OptimizerHandle opt, byte* buf, UIntPtr len, out ulong stepCount, out ulong skippedCount, out float currentLr);

        [DllImport(Lib, CallingConvention = Cdecl)]
        internal static extern Status flatopt_optimizer_save_file(OptimizerHandle opt, byte* path);

        [DllImport(Lib, CallingConvention = Cdecl)]
        internal static extern Status flatopt_optimizer_load_file(OptimizerHandle opt, byte* path);

        /// <summary>A NUL-terminated UTF-8 C string as a managed string ("" for NULL).</summary>
        internal static string Utf8(IntPtr p)
        {
            if (p == IntPtr.Zero)
                return "";
            byte* b = (byte*)p;
            int n = 0;
            while (b[n] != 0)
                n++;
            return System.Text.Encoding.UTF8.GetString(b, n);
        }

        /// <summary>A managed string as NUL-terminated UTF-8 (for paths).</summary>
        internal static byte[] ToUtf8z(string s)
        {
            var enc = System.Text.Encoding.UTF8;
            var b = new byte[enc.GetByteCount(s) + 1];
            enc.GetBytes(s, 0, s.Length, b, 0);
            return b;
        }
    }
}
