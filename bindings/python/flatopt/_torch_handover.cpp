// flatopt.torch's per-step hand-over of the gradients in one call (docs/torch.md, "The per-step
// hand-over"): an optional CPython extension module, compiled against the installed torch on
// first use and cached by flatopt/_torch_ext.py, which also says when it is built and how it
// is turned off.
//
// Why C++: after backward() the gradients are C++ tensors with no Python object yet, and the
// first `p.grad` read from Python makes one for each (about 275 ns a tensor); then come a
// data_ptr(), an is_contiguous() and the parameter's data_ptr(), each a call into PyTorch from
// Python. Here each parameter's C++ gradient is read where autograd left it, and no Python
// object is made.
//
// One HandOver object per cohort of parameters (flatopt/torch.py, _Cohort): built with the
// cohort's parameter list, their data_ptr() at registration and the address of the ctypes
// array of gradient pointers the library's step reads. Calling it writes the gradients'
// addresses into that array and returns True when the step can go ahead: every parameter has
// a gradient that is defined, dense, on the CPU, of the parameter's dtype and contiguous, and
// no parameter's storage has moved. False sends the step to the general Python path, which
// skips the parameters without a gradient, raises the clear errors for sparse or
// non-contiguous ones and re-registers moved parameters: exactly the cases in which the
// Python hand-over (_hand_over in torch.py) returns False. No exception leaves a call; the
// GIL is held throughout (the call is a few microseconds).
//
// The parameters are read through their Python objects at every call, as the Python path
// reads them: torch.utils.swap_tensors (what module.to() may do) gives an object another C++
// tensor, and must be noticed.
//
// HandOver.step(opt, grad_scale) also runs the step itself on PyTorch's intra-op threads
// (docs/torch.md, "OpenMP interference"): the library's split step
// (flatopt_optimizer_begin_step_mixed with the handed-over gradients, then
// flatopt_optimizer_step_range over at::parallel_for, then flatopt_optimizer_end_step), so
// that the step runs on the OpenMP workers that backward() just left spinning instead of on a
// second pool competing with them. The results are those of the whole step, bit for bit (the
// library's contract for any split into ranges). The library's functions come from `bind`
// (their addresses, from ctypes): the module does not link the library.

#include <Python.h>

#include <ATen/Parallel.h>
#include <ATen/PythonTorchFunctionTLS.h>
#include <torch/csrc/autograd/python_variable.h>

#ifdef _OPENMP
#include <dlfcn.h>
#include <omp.h>
#endif

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <new>
#include <vector>

namespace {

// The library's split step, as bound by `bind` (flatopt.h; the statuses are ints here).
using BeginFn = int (*)(void* opt, void* const* grads, size_t n_grads, float grad_scale);
using RangeFn = int (*)(const void* opt, size_t begin, size_t end);
using EndFn = int (*)(void* opt);

struct Library {
    BeginFn begin = nullptr;
    RangeFn range = nullptr;
    EndFn end = nullptr;
    size_t min_elements = 0; // below this many elements a step runs on the calling thread
    size_t align = 1;        // ranges start and end on multiples of this within a buffer
};
Library g_lib;

constexpr int kOk = 0; // FLATOPT_OK

// What a parameter was registered with.
struct Registered {
    void* data;           // its data_ptr(): the library holds this address
    c10::ScalarType type; // the dtype its gradients must have
};

struct HandOver {
    PyObject_HEAD
    PyObject* params;  // the cohort's list of parameters (a strong reference)
    PyObject* keeper;  // the owner of `out`, the ctypes array (a strong reference)
    void** out;        // the gradients' addresses go here, one per parameter
    std::vector<Registered>* registered;
    std::vector<size_t>* sizes; // each parameter's number of elements, as registered
};

// True when every parameter's gradient can be handed over; its address is then in out[i].
// (Addresses may have been written when it returns false: the general path writes them all.)
bool hand_over(HandOver* self) noexcept {
    // Under a torch function mode, `p.grad` and data_ptr() from Python go through the mode:
    // the general path reads them that way.
    if (at::impl::torch_function_mode_enabled()) {
        return false;
    }
    PyObject* list = self->params;
    const std::vector<Registered>& registered = *self->registered;
    const Py_ssize_t n = PyList_GET_SIZE(list);
    if (static_cast<size_t>(n) != registered.size()) {
        return false;
    }
    try {
        for (Py_ssize_t i = 0; i < n; ++i) {
            PyObject* obj = PyList_GET_ITEM(list, i);
            // A Tensor or a Parameter, nothing else (a subclass may override what is read
            // here: swap_tensors can change an object's type)
            if (!THPVariable_CheckExact(obj)) {
                return false;
            }
            const at::Tensor& p = THPVariable_Unpack(obj);
            const Registered& r = registered[static_cast<size_t>(i)];
            // The TensorImpl's grad(), not Tensor::grad(): the latter asks autograd whether
            // the tensor is a leaf first, only to warn about an undefined gradient, which
            // the general path's `p.grad` read does.
            const at::Tensor& g = p.unsafeGetTensorImpl()->grad();
            // (A Python dispatch subclass as gradient: its C++ tensor is a wrapper whose
            // storage, if any, is not what Python's data_ptr() would answer.)
            if (!g.defined() || g.layout() != c10::kStrided || !g.device().is_cpu() ||
                g.unsafeGetTensorImpl()->is_python_dispatch() || g.scalar_type() != r.type ||
                !g.is_contiguous()) {
                return false;
            }
            // data_ptr() as Python's data_ptr() calls it (it throws where a tensor has no
            // storage: caught below)
            self->out[i] = g.data_ptr();
            if (p.data_ptr() != r.data) {
                return false; // p.data = ...: the general path re-registers the parameter
            }
        }
    } catch (...) {
        return false;
    }
    return true;
}

PyObject* HandOver_call(PyObject* self, PyObject* args, PyObject* kwargs) {
    if (PyTuple_GET_SIZE(args) != 0 || (kwargs != nullptr && PyDict_GET_SIZE(kwargs) != 0)) {
        PyErr_SetString(PyExc_TypeError, "HandOver() takes no arguments");
        return nullptr;
    }
    PyObject* result = hand_over(reinterpret_cast<HandOver*>(self)) ? Py_True : Py_False;
    Py_INCREF(result);
    return result;
}

// HandOver(params, registered, out, keeper): `params` a list of torch.Tensor or
// torch.nn.Parameter (exactly), `registered` their data_ptr() as registered with the library,
// `out` the address of an array of len(params) pointers, `keeper` the object owning it.
PyObject* HandOver_new(PyTypeObject* type, PyObject* args, PyObject* kwargs) {
    static const char* names[] = {"params", "registered", "out", "keeper", nullptr};
    PyObject *params, *addresses, *out, *keeper;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!OOO", const_cast<char**>(names),
                                     &PyList_Type, &params, &addresses, &out, &keeper)) {
        return nullptr;
    }
    void* out_ptr = PyLong_AsVoidPtr(out);
    if (out_ptr == nullptr) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_ValueError, "HandOver: the output array's address is null");
        }
        return nullptr;
    }
    PyObject* seq = PySequence_Fast(addresses, "HandOver: registered must be a sequence");
    if (seq == nullptr) {
        return nullptr;
    }
    const Py_ssize_t n = PyList_GET_SIZE(params);
    if (PySequence_Fast_GET_SIZE(seq) != n) {
        Py_DECREF(seq);
        PyErr_SetString(PyExc_ValueError, "HandOver: one registered address per parameter");
        return nullptr;
    }
    std::vector<Registered>* registered = new (std::nothrow) std::vector<Registered>();
    std::vector<size_t>* sizes = new (std::nothrow) std::vector<size_t>();
    if (registered == nullptr || sizes == nullptr) {
        Py_DECREF(seq);
        delete registered;
        delete sizes;
        return PyErr_NoMemory();
    }
    try {
        registered->reserve(static_cast<size_t>(n));
        sizes->reserve(static_cast<size_t>(n));
        for (Py_ssize_t i = 0; i < n; ++i) {
            PyObject* obj = PyList_GET_ITEM(params, i);
            if (!THPVariable_CheckExact(obj)) {
                PyErr_Format(PyExc_TypeError,
                             "HandOver: parameter %zd is a %s, not a torch.Tensor or "
                             "torch.nn.Parameter",
                             i, Py_TYPE(obj)->tp_name);
                break;
            }
            void* data = PyLong_AsVoidPtr(PySequence_Fast_GET_ITEM(seq, i));
            if (data == nullptr && PyErr_Occurred()) {
                break;
            }
            const at::Tensor& t = THPVariable_Unpack(obj);
            registered->push_back({data, t.scalar_type()});
            sizes->push_back(static_cast<size_t>(t.numel()));
        }
    } catch (...) {
        PyErr_NoMemory();
    }
    Py_DECREF(seq);
    if (PyErr_Occurred()) {
        delete registered;
        delete sizes;
        return nullptr;
    }
    HandOver* self = reinterpret_cast<HandOver*>(type->tp_alloc(type, 0));
    if (self == nullptr) {
        delete registered;
        delete sizes;
        return nullptr;
    }
    Py_INCREF(params);
    Py_INCREF(keeper);
    self->params = params;
    self->keeper = keeper;
    self->out = static_cast<void**>(out_ptr);
    self->registered = registered;
    self->sizes = sizes;
    return reinterpret_cast<PyObject*>(self);
}

void HandOver_dealloc(PyObject* obj) {
    HandOver* self = reinterpret_cast<HandOver*>(obj);
    PyTypeObject* type = Py_TYPE(obj);
    Py_XDECREF(self->params);
    Py_XDECREF(self->keeper);
    delete self->registered;
    delete self->sizes;
    type->tp_free(obj);
    Py_DECREF(type); // instances of a heap type own a reference to it
}

// Where the ranges of a step over `total` elements split for `pieces` threads: cuts[0] = 0,
// cuts[pieces] = total, each inner cut near k * total / pieces, moved down to a multiple of
// `g_lib.align` elements within the buffer it falls in (8-bit state is requantized in whole
// blocks of 256 elements from each buffer's start). Cuts never decrease; a piece may be empty.
void split_points(const std::vector<size_t>& sizes, size_t total, size_t pieces,
                  size_t* cuts) {
    cuts[0] = 0;
    size_t buffer = 0, offset = 0; // the buffer the next cut falls in, and its start
    for (size_t k = 1; k < pieces; ++k) {
        const size_t target = static_cast<size_t>(
            static_cast<unsigned __int128>(total) * k / pieces);
        while (buffer < sizes.size() && offset + sizes[buffer] <= target) {
            offset += sizes[buffer++];
        }
        const size_t within = target - offset;
        const size_t cut = offset + within - within % g_lib.align;
        cuts[k] = cut < cuts[k - 1] ? cuts[k - 1] : cut;
    }
    cuts[pieces] = total;
}

// HandOver.step(opt, grad_scale, hand_over=True): the hand-over (unless `hand_over` is false:
// the gradients' addresses are in the output array already), then the whole split step over
// PyTorch's intra-op threads. Returns None when the hand-over says no (the general path takes
// the step; nothing was begun), else (status, where): status the library's (FLATOPT_OK,
// FLATOPT_SKIPPED or an error), `where` "begin_step", "step_range" or "end_step", the call
// that returned it (a range's error is reported as it happened on a PyTorch thread, whose
// last-error message the caller cannot read).
PyObject* HandOver_step(PyObject* obj, PyObject* args) {
    HandOver* self = reinterpret_cast<HandOver*>(obj);
    PyObject* opt_obj;
    float grad_scale;
    int handing_over = 1;
    if (!PyArg_ParseTuple(args, "Of|p", &opt_obj, &grad_scale, &handing_over)) {
        return nullptr;
    }
    void* opt = PyLong_AsVoidPtr(opt_obj);
    if (opt == nullptr && PyErr_Occurred()) {
        return nullptr;
    }
    if (g_lib.begin == nullptr) {
        PyErr_SetString(PyExc_RuntimeError, "HandOver.step before bind()");
        return nullptr;
    }
    if (handing_over && !hand_over(self)) {
        Py_RETURN_NONE;
    }
    const std::vector<size_t>& sizes = *self->sizes;
    size_t total = 0;
    for (size_t n : sizes) {
        total += n;
    }
    constexpr size_t kMaxPieces = 256;
    size_t pieces = 1;
    if (total >= g_lib.min_elements && !at::in_parallel_region()) {
        const int threads = at::get_num_threads();
        pieces = threads < 1 ? 1 : static_cast<size_t>(threads);
        pieces = pieces > kMaxPieces ? kMaxPieces : pieces;
    }
    size_t cuts[kMaxPieces + 1];
    split_points(sizes, total, pieces, cuts);
    int status = kOk;
    const char* where = "begin_step";
    void* const* grads = self->out;
    const size_t n = sizes.size();
    Py_BEGIN_ALLOW_THREADS
    status = g_lib.begin(opt, grads, n, grad_scale);
    if (status == kOk) {
        std::atomic<int> failed{kOk};
        auto ranges = [&](int64_t first, int64_t last) {
            for (int64_t k = first; k < last; ++k) {
                const size_t b = cuts[k], e = cuts[k + 1];
                if (b < e) {
                    const int st = g_lib.range(opt, b, e);
                    int expected = kOk;
                    if (st != kOk) {
                        failed.compare_exchange_strong(expected, st);
                    }
                }
            }
        };
        if (pieces == 1) {
            ranges(0, 1);
        } else {
            try {
                at::parallel_for(0, static_cast<int64_t>(pieces), 1, ranges);
            } catch (...) {
                // (`ranges` throws nothing; at::parallel_for's own failure: the ranges it did
                // not run are run here, on this thread; a range it ran is refused as such)
                ranges(0, static_cast<int64_t>(pieces));
            }
        }
        status = failed.load();
        where = "step_range";
        if (status == kOk) {
            status = g_lib.end(opt);
            where = "end_step";
        }
    }
    Py_END_ALLOW_THREADS
    return Py_BuildValue("(is)", status, where);
}

PyMethodDef handover_methods[] = {
    {"step", HandOver_step, METH_VARARGS,
     "step(opt, grad_scale, hand_over=True): the hand-over and the split step on PyTorch's "
     "intra-op threads; None (the general path), or (status, the call that returned it)."},
    {nullptr, nullptr, 0, nullptr},
};

PyType_Slot handover_slots[] = {
    {Py_tp_doc, const_cast<char*>("The gradients of a cohort's parameters into its pointer "
                                  "array: True, or False for the general path.")},
    {Py_tp_new, reinterpret_cast<void*>(HandOver_new)},
    {Py_tp_dealloc, reinterpret_cast<void*>(HandOver_dealloc)},
    {Py_tp_call, reinterpret_cast<void*>(HandOver_call)},
    {Py_tp_methods, handover_methods},
    {0, nullptr},
};

PyType_Spec handover_spec = {
    "flatopt._torch_handover.HandOver", static_cast<int>(sizeof(HandOver)), 0,
    Py_TPFLAGS_DEFAULT, handover_slots,
};

// bind(begin, range, end, min_elements, align): the addresses of
// flatopt_optimizer_begin_step_mixed, _step_range and _end_step, the number of elements from
// which a step is split over PyTorch's threads, and the alignment of the cuts.
PyObject* bind(PyObject*, PyObject* args) {
    PyObject *b, *r, *e;
    Py_ssize_t min_elements, align;
    if (!PyArg_ParseTuple(args, "OOOnn", &b, &r, &e, &min_elements, &align)) {
        return nullptr;
    }
    void* addr[3] = {PyLong_AsVoidPtr(b), PyLong_AsVoidPtr(r), PyLong_AsVoidPtr(e)};
    if (PyErr_Occurred()) {
        return nullptr;
    }
    if (addr[0] == nullptr || addr[1] == nullptr || addr[2] == nullptr || min_elements < 0 ||
        align < 1) {
        PyErr_SetString(PyExc_ValueError, "bind: null function or bad sizes");
        return nullptr;
    }
    g_lib.begin = reinterpret_cast<BeginFn>(addr[0]);
    g_lib.range = reinterpret_cast<RangeFn>(addr[1]);
    g_lib.end = reinterpret_cast<EndFn>(addr[2]);
    g_lib.min_elements = static_cast<size_t>(min_elements);
    g_lib.align = static_cast<size_t>(align);
    Py_RETURN_NONE;
}

// parallel(): whether at::parallel_for here runs on PyTorch's own OpenMP team: the module was
// built with OpenMP, and its OpenMP runtime is the one libtorch_cpu uses (the same
// omp_get_num_threads, found from libtorch_cpu), so its workers are PyTorch's. Else the split
// step would start a second team (or run serially): flatopt.torch does not use it then.
PyObject* parallel(PyObject*, PyObject*) {
#ifdef _OPENMP
    void* torch_cpu = dlopen("libtorch_cpu.so", RTLD_NOW | RTLD_NOLOAD);
    if (torch_cpu == nullptr) {
        Py_RETURN_FALSE;
    }
    void* theirs = dlsym(torch_cpu, "omp_get_num_threads");
    dlclose(torch_cpu);
    void* ours = reinterpret_cast<void*>(&omp_get_num_threads);
    if (theirs != nullptr && theirs == ours) {
        Py_RETURN_TRUE;
    }
#endif
    Py_RETURN_FALSE;
}

PyMethodDef module_methods[] = {
    {"bind", bind, METH_VARARGS,
     "bind(begin, range, end, min_elements, align): the library's split-step functions."},
    {"parallel", parallel, METH_NOARGS,
     "Whether the split step runs on PyTorch's own OpenMP team."},
    {nullptr, nullptr, 0, nullptr},
};

PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    "_torch_handover",
    "flatopt.torch's per-step gradient hand-over in C++ (see _torch_handover.cpp).",
    -1,
    module_methods,
    nullptr,
    nullptr,
    nullptr,
    nullptr,
};

} // namespace

PyMODINIT_FUNC PyInit__torch_handover(void) {
    PyObject* module = PyModule_Create(&module_def);
    if (module == nullptr) {
        return nullptr;
    }
    PyObject* type = PyType_FromSpec(&handover_spec);
    if (type == nullptr || PyModule_AddObject(module, "HandOver", type) < 0) {
        Py_XDECREF(type);
        Py_DECREF(module);
        return nullptr;
    }
    return module;
}
