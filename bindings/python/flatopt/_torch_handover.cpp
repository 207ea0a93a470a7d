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

#include <Python.h>

#include <ATen/PythonTorchFunctionTLS.h>
#include <torch/csrc/autograd/python_variable.h>

#include <new>
#include <vector>

namespace {

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
    if (registered == nullptr) {
        Py_DECREF(seq);
        return PyErr_NoMemory();
    }
    try {
        registered->reserve(static_cast<size_t>(n));
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
            registered->push_back({data, THPVariable_Unpack(obj).scalar_type()});
        }
    } catch (...) {
        PyErr_NoMemory();
    }
    Py_DECREF(seq);
    if (PyErr_Occurred()) {
        delete registered;
        return nullptr;
    }
    HandOver* self = reinterpret_cast<HandOver*>(type->tp_alloc(type, 0));
    if (self == nullptr) {
        delete registered;
        return nullptr;
    }
    Py_INCREF(params);
    Py_INCREF(keeper);
    self->params = params;
    self->keeper = keeper;
    self->out = static_cast<void**>(out_ptr);
    self->registered = registered;
    return reinterpret_cast<PyObject*>(self);
}

void HandOver_dealloc(PyObject* obj) {
    HandOver* self = reinterpret_cast<HandOver*>(obj);
    PyTypeObject* type = Py_TYPE(obj);
    Py_XDECREF(self->params);
    Py_XDECREF(self->keeper);
    delete self->registered;
    type->tp_free(obj);
    Py_DECREF(type); // instances of a heap type own a reference to it
}

PyType_Slot handover_slots[] = {
    {Py_tp_doc, const_cast<char*>("The gradients of a cohort's parameters into its pointer "
                                  "array: True, or False for the general path.")},
    {Py_tp_new, reinterpret_cast<void*>(HandOver_new)},
    {Py_tp_dealloc, reinterpret_cast<void*>(HandOver_dealloc)},
    {Py_tp_call, reinterpret_cast<void*>(HandOver_call)},
    {0, nullptr},
};

PyType_Spec handover_spec = {
    "flatopt._torch_handover.HandOver", static_cast<int>(sizeof(HandOver)), 0,
    Py_TPFLAGS_DEFAULT, handover_slots,
};

PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    "_torch_handover",
    "flatopt.torch's per-step gradient hand-over in C++ (see _torch_handover.cpp).",
    -1,
    nullptr,
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
