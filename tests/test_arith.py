import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from pocketnn.core.arith import INT32_MAX, INT32_MIN, clamp, isqrt, stochastic_div_, trunc_div
from pocketnn.core.context import Context, configure, current
from pocketnn.core.overflow import IntegerOverflowError, guard, wrap_int32
from pocketnn.core.products import matmul


def c_div(a: int, b: int) -> int:
    """C's truncating division, from Python integers (the oracle)."""
    q = abs(a) // abs(b)
    return q if (a < 0) == (b < 0) else -q


@pytest.mark.parametrize(
    "a, b, expected",
    [
        (-75, 4, -18),
        (75, -4, -18),
        (75, 4, 18),
        (-75, -4, 18),
        (-7, 2, -3),
        (7, 2, 3),
        (0, -5, 0),
        (-1, 1000, 0),
        (-999, -1000, 0),
        (-1000, -1000, 1),
        (-(2**31), 256 * 784, -10699),
    ],
)
def test_trunc_div_examples(a, b, expected):
    assert trunc_div(a, b) == expected
    assert expected == c_div(a, b)


@given(st.integers(-(2**40), 2**40), st.integers(-(2**20), 2**20).filter(bool))
def test_trunc_div_matches_c(a, b):
    assert int(trunc_div(np.array([a]), b)[0]) == c_div(a, b)


@given(
    hnp.arrays(np.int64, st.integers(1, 30), elements=st.integers(-(2**31), 2**31)),
    hnp.arrays(np.int64, st.integers(1, 30), elements=st.integers(1, 300)),
)
def test_trunc_div_elementwise_arrays(a, b):
    b = np.resize(b, a.shape) * np.where(np.arange(a.size) % 2, 1, -1)
    out = trunc_div(a, b)
    assert out.dtype == np.int64
    assert out.tolist() == [c_div(int(x), int(y)) for x, y in zip(a, b)]


def test_trunc_div_by_zero_raises():
    with pytest.raises(ZeroDivisionError):
        trunc_div(np.array([1, 2]), np.array([1, 0]))


@given(st.integers(0, 2**62))
def test_isqrt(n):
    r = isqrt(n)
    assert r * r <= n < (r + 1) * (r + 1)


def test_isqrt_reference_ranges_and_negative():
    assert isqrt(12 * 32767 // (784 + 100)) == 21
    assert isqrt(12 * 32767 // (100 + 50)) == 51
    with pytest.raises(ValueError):
        isqrt(-1)


def test_clamp_in_place():
    x = np.array([-40000, -5, 0, 40000], dtype=np.int64)
    assert clamp(x, -32767, 32767) is x
    assert x.tolist() == [-32767, -5, 0, 32767]


@given(hnp.arrays(np.int64, 20, elements=st.integers(-(2**62), 2**62)))
def test_wrap_int32_is_twos_complement(x):
    assert np.array_equal(wrap_int32(x), x.astype(np.int32).astype(np.int64))


def test_guard_raises_with_location_and_wrap_policy_wraps():
    x = np.array([INT32_MAX, INT32_MAX + 1], dtype=np.int64)
    with pytest.raises(IntegerOverflowError, match=r"fc7: forward a @ W \+ b.*2147483648"):
        guard(x, "fc7: forward a @ W + b")
    with configure(overflow="wrap"):
        assert guard(x, "fc7").tolist() == [INT32_MAX, INT32_MIN]
    assert guard(np.array([INT32_MIN, 0]), "ok").tolist() == [INT32_MIN, 0]


def test_configure_restores_and_validates():
    before = current()
    with configure(engine="int", overflow="wrap") as ctx:
        assert current() == ctx == Context("int", "wrap")
        with configure(overflow="raise"):
            assert current() == Context("int", "raise")  # the engine is inherited
        assert current() == ctx
    assert current() == before
    with pytest.raises(ValueError, match="engine"):
        with configure(engine="gpu"):
            pass
    with pytest.raises(ValueError, match="overflow"):
        Context(overflow="saturate")


def test_matmul_guards_int32_and_names_the_operation():
    a = np.full((1, 784), 255, dtype=np.uint8)
    w = np.full((784, 1), 32767, dtype=np.int16)
    with pytest.raises(IntegerOverflowError, match="fc1: forward"):
        matmul(a, w, where="fc1: forward")
    with configure(overflow="wrap"):
        assert matmul(a, w).item() == wrap_int32(np.array([255 * 32767 * 784])).item()


def test_matmul_refuses_floats():
    with pytest.raises(TypeError, match="integer"):
        matmul(np.ones((2, 2)), np.ones((2, 2), dtype=np.int64))
    with pytest.raises(TypeError, match="integer"):
        matmul(
            np.ones((2, 2), dtype=np.int64), np.ones((2, 2), dtype=np.int64), bias=np.zeros((1, 2))
        )


@given(st.integers(-(2**31), 2**31 - 1), st.integers(1, 5000), st.integers(0, 2**32))
def test_stochastic_div_rounds_to_a_neighbour(a, d, seed):
    draws = np.random.default_rng(seed).integers(0, d, 50)
    q = stochastic_div_(np.full(50, a, dtype=np.int64), d, draws)
    floor = a // d
    assert set(q.tolist()) <= ({floor} if a % d == 0 else {floor, floor + 1})


def test_stochastic_div_is_unbiased():
    rng = np.random.default_rng(0)
    for a, d in ((-7, 1000), (7, 1000), (-2500, 1000), (123456, 2000)):
        q = stochastic_div_(np.full(200_000, a, dtype=np.int64), d, rng.integers(0, d, 200_000))
        # mean of 200k Bernoulli draws: within 5 standard errors of a / d
        assert abs(q.mean() - a / d) < 5 * 0.5 / np.sqrt(q.size), (a, d)


@given(
    hnp.arrays(np.int64, st.integers(1, 50), elements=st.integers(-(2**62), 2**62)),
    st.integers(1, 2**40),
)
def test_trunc_div_scalar_matches_c(a, d):
    from pocketnn.core.arith import trunc_div_scalar_

    expected = [abs(int(v)) // d * (1 if v >= 0 else -1) for v in a]
    assert trunc_div_scalar_(a.copy(), d).tolist() == expected
    assert trunc_div(a, d).tolist() == expected
    assert trunc_div(a, -d).tolist() == [-q for q in expected]


@given(
    hnp.arrays(np.int32, st.integers(1, 50), elements=st.integers(-(2**31), 2**31 - 1)),
    st.integers(1, 2**31 - 1),
)
def test_trunc_div_scalar_in_int32(a, d):
    from pocketnn.core.arith import trunc_div_scalar_

    expected = [abs(int(v)) // d * (1 if v >= 0 else -1) for v in a]
    assert trunc_div_scalar_(a.copy(), d).tolist() == expected


def test_active_columns():
    from pocketnn.core.products import active_columns

    x = np.zeros((3, 10), dtype=np.uint8)
    x[0, 2] = x[2, 7] = 9
    assert active_columns(x).tolist() == [2, 7]
    assert active_columns(np.ones((2, 10), dtype=np.uint8)) is None
