"""PyTorch CPU tensors as parameters and gradients (skipped when torch is not installed)."""

import numpy as np
import pytest

import flatopt

from conftest import needs

torch = needs("torch")


def test_torch_tensors_are_updated_in_place_like_torch_adam():
    torch.manual_seed(0)
    w = torch.randn(5, 3, requires_grad=True)
    b = torch.zeros(3, requires_grad=True)
    w_ref = w.detach().clone().requires_grad_(True)
    b_ref = b.detach().clone().requires_grad_(True)
    x = torch.randn(16, 5)

    opt = flatopt.Adam(lr=1e-2)
    opt.register_trainable_weights({"w": w, "b": b})
    ref = torch.optim.Adam([w_ref, b_ref], lr=1e-2)
    for _ in range(10):
        for p in (w, b, w_ref, b_ref):
            p.grad = None
        ((x @ w + b).tanh().sum()).backward()
        ((x @ w_ref + b_ref).tanh().sum()).backward()
        opt.update({"w": w.grad, "b": b.grad})
        ref.step()
    np.testing.assert_allclose(w.detach().numpy(), w_ref.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b.detach().numpy(), b_ref.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_torch_grads_registered_once():
    w = torch.zeros(4)
    g = torch.ones(4)
    opt = flatopt.SGD(lr=0.5)
    opt.register_trainable_weights([w], grads=[g])
    opt.update()
    g.fill_(2.0)
    opt.update()
    assert torch.equal(w, torch.full((4,), -1.5))


def test_torch_bad_tensors():
    opt = flatopt.SGD(lr=0.1)
    with pytest.raises(flatopt.DTypeError, match="torch.float64"):
        opt.register_trainable_weights([torch.zeros(3, dtype=torch.float64)])
    with pytest.raises(flatopt.LayoutError, match="not contiguous"):
        opt.register_trainable_weights([torch.zeros(4, 4).t()])
    w = torch.zeros(3)
    opt.register_trainable_weights([w])
    with pytest.raises(flatopt.DTypeError):
        opt.update([torch.zeros(3, dtype=torch.float16)])
    assert torch.equal(w, torch.zeros(3))
