import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pocketnn.core.arith import INT32_MAX, trunc_div
from pocketnn.nn.activations import ACTIVATIONS, get_activation

pocket_tanh = get_activation("pocket_tanh")
pocket_sigmoid = get_activation("pocket_sigmoid")
pocket_softmax = get_activation("pocket_softmax")
plu = get_activation("plu")


def golden_cases(golden):
    for key in sorted(golden):
        if key.endswith("_x"):
            base = key[:-2]
            m = re.fullmatch(r"(.*)_k8(?:_n(\d+))?", base)
            yield base, m.group(1), int(m.group(2) or 1)


def test_every_golden_activation_matches_bit_for_bit(golden_activations):
    seen = set()
    for base, name, fan_in in golden_cases(golden_activations):
        x = golden_activations[base + "_x"].astype(np.int64)
        y, g = get_activation(name)(x, fan_in)
        assert y.dtype.kind == "i" and g.dtype.kind == "i", base
        assert np.array_equal(y, golden_activations[base + "_y"]), base
        assert np.array_equal(g, golden_activations[base + "_g"]), base
        seen.add(name)
    assert seen == {
        "pocket_tanh",
        "pocket_sigmoid",
        "pocket_relu8bit",
        "pocket_leakyrelu",
        "pocket_softmax",
        "rescale",
        "as_is",
    }


def test_pocket_tanh_check_values_from_the_paper():
    x = np.array([-127, -74, -31, 0, 31, 32, 74, 75, 127, 128])
    y, g = pocket_tanh(x * 256, fan_in=1)
    assert y.tolist() == [-119, -106, -62, 0, 62, 64, 106, 106, 119, 127]
    assert g.tolist() == [8, 2, 1, 1, 1, 2, 2, 8, 8, 127]


def test_pocket_tanh_truncates_the_prescale_toward_zero():
    d = 256 * 784
    # -1.5 * D scales to -1 (C), not -2 (floor): output -2, not -4
    y, _ = pocket_tanh(np.array([-(3 * d) // 2, (3 * d) // 2]), fan_in=784)
    assert y.tolist() == [-2, 2]


@given(
    st.lists(st.integers(-(2**31), 2**31 - 1), min_size=2, max_size=50),
    st.sampled_from([1, 3, 50, 784]),
)
def test_tanh_and_sigmoid_are_monotone_and_bounded(values, fan_in):
    z = np.sort(np.array(values, dtype=np.int64))
    for fn, low, high in ((pocket_tanh, -127, 127), (pocket_sigmoid, 1, 127)):
        y, g = fn(z, fan_in)
        assert np.all(np.diff(y) >= 0)
        assert y.min() >= low and y.max() <= high
        assert set(g.tolist()) <= {1, 2, 8, 127}


def test_plu_follows_the_published_formula():
    x = np.array([-2000, -1271, -1261, -11, -2, -1, 0, 1, 2, 11, 21, 1261, 1271, 2000])
    y, g = plu(x, 0)
    # a(x-c)+c and a(x+c)-c with a = 1/10 (truncating), c = 1, clamped to [-127, 127]:
    # 1261 reaches 127 on the outer slope exactly, 1271 would reach 128 and is clamped.
    assert y.tolist() == [-127, -127, -127, -2, -1, -1, 0, 1, 1, 2, 3, 127, 127, 127]
    assert g.tolist() == [127, 127, 10, 10, 10, 1, 1, 1, 10, 10, 10, 10, 127, 127]


def test_plu_never_divides_by_zero_at_zero():
    y, g = plu(np.zeros(5, dtype=np.int64), 0)
    assert y.tolist() == [0] * 5 and g.tolist() == [1] * 5


def test_softmax_rows_without_positives_are_zero_with_flat_gradient():
    y, g = pocket_softmax(np.array([[-3, 0, -1], [2, 2, 0]]), 0)
    assert y.tolist() == [[0, 0, 0], [2 * (INT32_MAX // 4), 2 * (INT32_MAX // 4), 0]]
    assert g.tolist() == [[INT32_MAX] * 3, [1, 1, INT32_MAX]]


def test_unknown_activation_lists_valid_names():
    with pytest.raises(ValueError, match="pocket_tanh"):
        get_activation("tanh")
    assert "plu" in ACTIVATIONS


@given(
    st.lists(st.integers(-(2**31), 2**31 - 1), min_size=1, max_size=60),
    st.sampled_from([1, 3, 50, 784]),
)
def test_every_activation_keeps_its_declared_bounds(values, fan_in):
    """The bounds the C exporter and the fused engine rely on hold for any int32 input."""
    z = np.array(values, dtype=np.int64).reshape(1, -1)
    for activation in ACTIVATIONS.values():
        y, g = activation(z, fan_in)
        assert int(np.abs(y).max()) <= activation.out_bound, activation.name
        assert 1 <= int(g.min()) and int(g.max()) <= activation.g_max, activation.name


@given(st.lists(st.integers(-(2**31), 2**31 - 1), min_size=1, max_size=60), st.integers(1, 1000))
def test_a_table_computes_what_its_function_computes(values, fan_in):
    """The fused engine reads the table: clip(z / divisor) then look up, flat outside."""
    z = np.array(values, dtype=np.int64)
    tabulated = [a for a in ACTIVATIONS.values() if a.table is not None]
    assert {a.name for a in tabulated} == {
        "pocket_tanh",
        "pocket_sigmoid",
        "pocket_relu8bit",
        "leaky_relu8",
        "leaky_relu",
    }
    for activation in tabulated:
        t = activation.table
        x = np.clip(trunc_div(z, t.divisor(fan_in)), t.low, t.high) - t.low
        y, g = activation(z, fan_in)
        assert np.array_equal(t.y[x], y) and np.array_equal(t.g[x], g), activation.name


def test_every_element_wise_activation_carries_its_c_code():
    for activation in ACTIVATIONS.values():
        exportable = activation.c_source is not None
        assert exportable == activation.elementwise, activation.name
        if exportable:
            assert f"static int32_t {activation.name}(" in activation.c_source
            assert activation.c_call.startswith(activation.name + "(")


def test_leaky_relu8_pieces():
    leaky = get_activation("leaky_relu8")
    y, g = leaky(np.array([-1000, -128, -127, -5, -4, -1, 0, 1, 127, 128, 5000]), 1)
    assert y.tolist() == [-31, -31, -31, -1, -1, 0, 0, 1, 127, 127, 127]
    assert g.tolist() == [127, 127, 4, 4, 4, 4, 1, 1, 1, 127, 127]
