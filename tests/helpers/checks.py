"""A fast path against its dense reference: same loss, outputs, counters and gradients."""

import torch


def assert_same(dense, fast, outs, rtol=1e-10, atol=1e-10):
    a, b = outs
    torch.testing.assert_close(b.loss, a.loss, rtol=rtol, atol=atol)
    torch.testing.assert_close(b.x_hat, a.x_hat, rtol=rtol, atol=atol)
    torch.testing.assert_close(b.l0, a.l0)
    assert torch.equal(b.fired, a.fired)
    assert a.parts.keys() == b.parts.keys()
    for key in a.parts:
        torch.testing.assert_close(b.parts[key], a.parts[key], rtol=rtol, atol=atol, msg=key)
    assert torch.equal(fast.tokens_since_fired, dense.tokens_since_fired)
    grads = dict(fast.named_parameters())
    for name, p in dense.named_parameters():
        q = grads[name]
        assert p.grad is not None and q.grad is not None, name
        scale = p.grad.abs().max().item()
        torch.testing.assert_close(q.grad, p.grad, rtol=rtol, atol=atol * max(scale, 1), msg=name)
    for name, buf in dense.named_buffers():
        torch.testing.assert_close(dict(fast.named_buffers())[name], buf, msg=name)
