"""torch.library.opcheck for every torchqat operator: schema, autograd registration, fake (Meta)
kernels against the real ones, and AOT dispatch with dynamic shapes (what torch.compile and
torch.export use). Also: the Meta kernels raise the real kernels' argument errors."""
import pytest
import torch
from torch.library import opcheck

import torchqat

ops = torch.ops.torchqat

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() and torchqat.cuda_compiled() else [])


def _x(*shape, device, dtype=torch.float32, grad=False):
    x = (torch.randn(shape) * 2).to(device=device, dtype=dtype)
    return x.requires_grad_(grad)


def _amax(*shape, device, grad=False, zero_first=False):
    a = torch.rand(shape) * 2 + 0.5
    if zero_first:
        a.view(-1)[0] = 0.0  # a channel with amax 0 quantizes to 0
    return a.to(device).requires_grad_(grad)


def fake_quant_cases(d):
    """(id, args) of fake_quant(x, amax, num_bits, unsigned, narrow_range, axis)."""
    return [
        ("per_tensor", (_x(2, 3, 4, 5, device=d), _amax(device=d), 8, False, False, None)),
        ("per_channel_act_axis1", (_x(2, 3, 4, 5, device=d), _amax(1, 3, 1, 1, device=d), 8, False, False, 1)),
        ("per_channel_weight_inferred", (_x(4, 3, 3, 3, device=d), _amax(4, 1, 1, 1, device=d, zero_first=True),
                                         8, False, False, None)),
        ("per_channel_1d_axis0_4bit_narrow", (_x(6, 5, device=d), _amax(6, device=d), 4, False, True, 0)),
        ("unsigned", (_x(3, 7, device=d).abs(), _amax(device=d), 8, True, False, None)),
        ("bf16", (_x(2, 3, 4, 4, device=d, dtype=torch.bfloat16), _amax(device=d), 8, False, False, None)),
        ("bf16_per_channel", (_x(4, 3, 2, 2, device=d, dtype=torch.bfloat16), _amax(4, 1, 1, 1, device=d),
                              8, False, False, 0)),
        ("channels_last", (_x(2, 3, 4, 5, device=d).to(memory_format=torch.channels_last),
                           _amax(1, 3, 1, 1, device=d), 8, False, False, 1)),
        ("non_dense_input", (_x(4, 6, device=d)[:, ::2], _amax(device=d), 8, False, False, None)),
        ("grad_x", (_x(2, 3, 4, 5, device=d, grad=True), _amax(device=d), 8, False, False, None)),
        ("grad_x_and_amax", (_x(2, 3, 4, 5, device=d, grad=True), _amax(device=d, grad=True), 8, False, False,
                             None)),
        ("grad_amax_per_channel", (_x(4, 3, 3, 3, device=d, grad=True), _amax(4, 1, 1, 1, device=d, grad=True),
                                   8, False, False, 0)),
        ("grad_amax_bf16", (_x(3, 8, device=d, dtype=torch.bfloat16, grad=True), _amax(device=d, grad=True),
                            8, False, False, None)),
    ]


def fake_quant_backward_cases(d):
    """(id, args) of fake_quant_backward(grad, x, amax, num_bits, unsigned, narrow_range, axis, amax_grad)."""
    return [
        ("per_tensor", (_x(2, 3, 4, device=d), _x(2, 3, 4, device=d), _amax(device=d), 8, False, False, None, False)),
        ("per_tensor_amax_grad", (_x(2, 3, 4, device=d), _x(2, 3, 4, device=d), _amax(device=d), 8, False, False,
                                  None, True)),
        ("per_channel_amax_grad", (_x(4, 3, 3, device=d), _x(4, 3, 3, device=d), _amax(4, 1, 1, device=d),
                                   8, False, False, 0, True)),
        ("bf16_unsigned", (_x(5, 6, device=d, dtype=torch.bfloat16), _x(5, 6, device=d, dtype=torch.bfloat16).abs(),
                           _amax(device=d), 8, True, False, None, True)),
        ("grad_other_dtype_and_layout", (_x(3, 4, device=d).t(), _x(4, 3, device=d, dtype=torch.bfloat16),
                                         _amax(1, 3, device=d), 6, False, True, 1, True)),
    ]


def fake_quant_e4m3_cases(d):
    """(id, args) of fake_quant_e4m3(x, amax, axis); x spans past the saturation edge (x * 448 / amax > 448)."""
    return [
        ("per_tensor", (_x(2, 3, 4, 5, device=d) * 3, _amax(device=d), None)),
        ("per_channel_weight_inferred", (_x(4, 3, 3, 3, device=d), _amax(4, 1, 1, 1, device=d, zero_first=True),
                                         None)),
        ("per_channel_act_axis1_fp16", (_x(2, 3, 4, 5, device=d, dtype=torch.float16), _amax(1, 3, 1, 1, device=d),
                                        1)),
        ("bf16_channels_last", (_x(2, 3, 4, 5, device=d, dtype=torch.bfloat16).to(memory_format=torch.channels_last),
                                _amax(1, 3, 1, 1, device=d), 1)),
        ("non_dense_input", (_x(4, 6, device=d)[:, ::2], _amax(device=d), None)),
        ("grad_x_and_amax", (_x(2, 3, 4, 5, device=d, grad=True), _amax(device=d, grad=True), None)),
        ("grad_amax_per_channel", (_x(4, 3, 3, 3, device=d, grad=True), _amax(4, 1, 1, 1, device=d, grad=True), 0)),
    ]


def fake_quant_e4m3_backward_cases(d):
    """(id, args) of fake_quant_e4m3_backward(grad, x, amax, axis, amax_grad)."""
    return [
        ("per_tensor", (_x(2, 3, 4, device=d), _x(2, 3, 4, device=d), _amax(device=d), None, False)),
        ("per_channel_amax_grad", (_x(4, 3, 3, device=d), _x(4, 3, 3, device=d), _amax(4, 1, 1, device=d), 0, True)),
        ("grad_other_dtype_and_layout", (_x(3, 4, device=d).t(), _x(4, 3, device=d, dtype=torch.bfloat16),
                                         _amax(1, 3, device=d), 1, True)),
    ]


def quantize_cases(d):
    return [
        ("per_tensor", (_x(2, 3, 4, device=d), _amax(device=d), 8, False, False, None)),
        ("per_channel", (_x(4, 3, 3, 3, device=d), _amax(4, 1, 1, 1, device=d, zero_first=True), 8, False, False,
                         None)),
        ("axis1_unsigned_4bit", (_x(2, 5, 3, device=d).abs(), _amax(5, device=d), 4, True, False, 1)),
        ("12bit_bf16", (_x(3, 6, device=d, dtype=torch.bfloat16), _amax(device=d), 12, False, True, None)),
        ("channels_last", (_x(2, 3, 4, 5, device=d).to(memory_format=torch.channels_last),
                           _amax(1, 3, 1, 1, device=d), 8, False, False, 1)),
    ]


def dequantize_cases(d):
    q8 = torch.randint(-128, 128, (2, 3, 4), dtype=torch.int8, device=d)
    return [
        ("per_tensor", (q8, torch.tensor(0.02, device=d), None, None)),
        ("per_channel", (q8, torch.rand(1, 3, 1, device=d) + 0.01, 1, None)),
        ("per_channel_1d_bf16", (q8, torch.rand(2, device=d) + 0.01, 0, torch.bfloat16)),
        ("int16_fp16", (torch.randint(-2000, 2000, (5, 4), dtype=torch.int16, device=d), torch.tensor(1e-3, device=d),
                        None, torch.float16)),
    ]


def abs_max_cases(d):
    x = _x(2, 3, 4, 5, device=d)
    return [
        ("per_tensor", (x, [])),
        ("keep0", (x, [0])),
        ("keep1", (x, [1])),
        ("keep_last_negative", (x, [-1])),
        ("keep_two", (x, [0, 1])),
        ("bf16_channels_last", (_x(2, 3, 4, 5, device=d, dtype=torch.bfloat16).to(memory_format=torch.channels_last),
                                [1])),
        ("fp64_1d", (_x(17, device=d, dtype=torch.float64), [])),
    ]


def histogram_cases(d):
    return [
        ("fp32", (_x(3, 4, 5, device=d), torch.zeros(64, dtype=torch.long, device=d), 0.1, False)),
        ("skip_zeros_bf16", (_x(2, 8, device=d, dtype=torch.bfloat16).relu(), torch.zeros(16, dtype=torch.long,
                                                                                          device=d), 0.25, True)),
    ]


def _bound(*shape, device, sign=1.0, grad=False):
    return (sign * (torch.rand(shape) + 0.1)).to(device).requires_grad_(grad)


def clip_cases(d):
    """(id, args) of clip(x, min, max)."""
    return [
        ("scalar_bounds", (_x(2, 3, 4, device=d), _bound(device=d, sign=-1), _bound(device=d))),
        ("broadcast_bounds_grad", (_x(2, 3, 4, device=d, grad=True), _bound(3, 1, device=d, sign=-1, grad=True),
                                   _bound(4, device=d, grad=True))),
        ("bf16_channels_last", (_x(2, 3, 4, 5, device=d, dtype=torch.bfloat16).to(memory_format=torch.channels_last),
                                _bound(1, 3, 1, 1, device=d, sign=-1), _bound(1, 3, 1, 1, device=d))),
        ("non_dense_input", (_x(4, 6, device=d)[:, ::2], _bound(device=d, sign=-1), _bound(device=d))),
    ]


def clip_backward_cases(d):
    """(id, args) of clip_backward(grad, x, min, max, min_grad, max_grad)."""
    return [
        ("both_bounds", (_x(3, 4, device=d), _x(3, 4, device=d), _bound(device=d, sign=-1), _bound(3, 1, device=d),
                         True, True)),
        ("x_only", (_x(3, 4, device=d), _x(3, 4, device=d), _bound(device=d, sign=-1), _bound(device=d), False,
                    False)),
    ]


def fake_affine_quant_cases(d):
    """(id, args) of fake_affine_quant(x, min_range, max_range, num_bits)."""
    return [
        ("scalar_range", (_x(2, 3, 4, device=d, grad=True), _bound(device=d, sign=-1), _bound(device=d), 8)),
        ("broadcast_range_4bit", (_x(2, 3, 4, device=d), _bound(3, 1, device=d, sign=-1), _bound(4, device=d), 4)),
        ("bf16_channels_last", (_x(2, 3, 4, 5, device=d, dtype=torch.bfloat16).to(memory_format=torch.channels_last),
                                _bound(1, 3, 1, 1, device=d, sign=-1), _bound(1, 3, 1, 1, device=d), 8)),
        ("non_dense_input", (_x(4, 6, device=d)[:, ::2], _bound(device=d, sign=-1), _bound(device=d), 8)),
    ]


def fake_quant_blocked_cases(d):
    """(id, args) of fake_quant_blocked(x, amax, block_size, num_bits, unsigned, narrow_range)."""
    x = _x(6, 16, device=d, grad=True)
    amax = _bound(6, 4, device=d, grad=True)
    return [
        ("int4_learned_amax", (x, amax, 4, 4, False, False)),
        ("int8_unsigned_narrow", (_x(3, 8, device=d).abs(), _bound(3, 1, device=d), 8, 8, True, True)),
        ("bf16", (_x(4, 12, device=d, dtype=torch.bfloat16), _bound(4, 3, device=d), 4, 4, False, False)),
    ]


def abs_max_blocked_cases(d):
    return [
        ("int_blocks", (_x(6, 16, device=d), 4)),
        ("one_block_bf16", (_x(3, 8, device=d, dtype=torch.bfloat16), 8)),
    ]


CASES = {
    "fake_quant_blocked": fake_quant_blocked_cases,
    "abs_max_blocked": abs_max_blocked_cases,
    "fake_affine_quant": fake_affine_quant_cases,
    "clip": clip_cases,
    "clip_backward": clip_backward_cases,
    "fake_quant": fake_quant_cases,
    "fake_quant_backward": fake_quant_backward_cases,
    "fake_quant_e4m3": fake_quant_e4m3_cases,
    "fake_quant_e4m3_backward": fake_quant_e4m3_backward_cases,
    "quantize": quantize_cases,
    "dequantize": dequantize_cases,
    "abs_max": abs_max_cases,
    "histogram_abs": histogram_cases,
}


def _params():
    for device in DEVICES:
        for name, make in CASES.items():
            # ids only: the tensors are made inside the test (on the device, with the test's seed)
            for case_id, _ in make("cpu"):
                yield pytest.param(device, name, case_id, id=f"{device}-{name}-{case_id}")


@pytest.mark.parametrize("device,name,case_id", list(_params()))
def test_opcheck(device, name, case_id):
    args = dict(CASES[name](device))[case_id]
    opcheck(getattr(ops, name).default, args)


def test_every_torchqat_op_is_checked():
    """A new operator in the library must get cases here (and a Meta kernel)."""
    # Every schema the library registered (dir(torch.ops.torchqat) lists only the ops used so far).
    names = {n.split("::")[1].split(".")[0] for n in torch._C._dispatch_get_all_op_names() if n.startswith("torchqat::")}
    assert names == set(CASES), f"operators without opcheck cases: {sorted(names - set(CASES))}"
    for n in names:
        # A composite op decomposes into ops that have Meta kernels.
        assert any(torch._C._dispatch_has_kernel_for_dispatch_key(f"torchqat::{n}", key)
                   for key in ("Meta", "CompositeImplicitAutograd")), n


def _meta(t):
    return t.to("meta") if torch.is_tensor(t) else t


@pytest.mark.parametrize("name,args", [
    ("fake_quant", (torch.randn(2, 3), torch.ones(4), 8, False, False, 1)),
    ("fake_quant", (torch.randn(2, 3), torch.ones(2, 2), 8, False, False, None)),  # a two-axis amax of the wrong size
    ("fake_quant", (torch.randn(2, 3), torch.ones(()), 1, False, False, None)),
    ("fake_quant", (torch.randn(2, 3).int(), torch.ones(()), 8, False, False, None)),
    ("fake_quant", (torch.randn(2, 3), torch.ones(()), 8, False, False, 5)),
    ("fake_quant_backward", (torch.randn(3, 2), torch.randn(2, 3), torch.ones(()), 8, False, False, None, True)),
    ("fake_quant_e4m3", (torch.randn(2, 3), torch.ones(4), 1)),
    ("fake_quant_e4m3", (torch.randn(2, 3).int(), torch.ones(()), None)),
    ("fake_quant_e4m3_backward", (torch.randn(3, 2), torch.randn(2, 3), torch.ones(()), None, True)),
    ("quantize", (torch.randn(2, 3), torch.ones(3, 1), 8, False, False, None)),
    ("fake_affine_quant", (torch.randn(2, 3), torch.ones(4), torch.ones(()), 8)),
    ("fake_affine_quant", (torch.randn(2, 3), -torch.ones(()), torch.ones(()), 1)),
    ("dequantize", (torch.randn(2, 3), torch.ones(()), None, None)),
    ("abs_max", (torch.randn(2, 3), [2])),
    ("abs_max", (torch.randn(0, 3), [])),
    ("histogram_abs", (torch.randn(4), torch.zeros(4, dtype=torch.int32), 0.1, False)),
    ("histogram_abs", (torch.randn(4), torch.zeros(4, dtype=torch.long), -1.0, False)),
])
def test_meta_kernels_raise_the_real_errors(name, args):
    op = getattr(ops, name).default
    with pytest.raises(Exception) as real:
        op(*args)
    with pytest.raises(Exception) as meta:
        op(*[_meta(a) for a in args])
    assert type(meta.value) is type(real.value)
    assert str(meta.value).splitlines()[0] == str(real.value).splitlines()[0]


def test_amax_values_are_checked_when_the_traced_graph_runs():
    """The Meta kernel cannot see amax's values; the real kernel still refuses a negative amax."""
    f = torch.compile(lambda x, a: ops.fake_quant(x, a, 8, False, False, None), fullgraph=True, backend="eager")
    x = torch.randn(4)
    assert torch.equal(f(x, torch.tensor(1.0)), ops.fake_quant(x, torch.tensor(1.0), 8, False, False, None))
    with pytest.raises(ValueError, match="amax must be >= 0, got -1"):
        f(x, torch.tensor(-1.0))
