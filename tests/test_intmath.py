import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from pocketnn import intmath
from pocketnn.intmath import (
    FLOAT64_EXACT,
    INT32_MAX,
    INT32_MIN,
    IntegerOverflowError,
    clamp,
    configure,
    exact_matmul,
    guard,
    isqrt,
    matmul,
    trunc_div,
    wrap_int32,
)


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
    before = (intmath.settings.engine, intmath.settings.overflow)
    with configure(engine="int", overflow="wrap"):
        assert (intmath.settings.engine, intmath.settings.overflow) == ("int", "wrap")
    assert (intmath.settings.engine, intmath.settings.overflow) == before
    with pytest.raises(ValueError, match="engine"):
        with configure(engine="gpu"):
            pass


def oracle_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Exact product with Python integers."""
    return np.array(a.astype(object) @ b.astype(object))


matrix_dtypes = st.sampled_from([np.uint8, np.int8, np.int16, np.int32, np.int64])


@st.composite
def matmul_operands(draw):
    n, k, m = (draw(st.integers(1, 12)) for _ in range(3))
    a_dtype, b_dtype = draw(matrix_dtypes), draw(matrix_dtypes)
    a_lim = min(
        np.iinfo(a_dtype).max, draw(st.sampled_from([1, 127, 255, 2**15, 2**24, 2**31 - 1]))
    )
    b_lim = min(np.iinfo(b_dtype).max, draw(st.sampled_from([1, 127, 2**15, 2**26, 2**31 - 1])))
    a_low = 0 if a_dtype == np.uint8 else -a_lim
    b_low = 0 if b_dtype == np.uint8 else -b_lim
    a = draw(hnp.arrays(a_dtype, (n, k), elements=st.integers(a_low, a_lim)))
    b = draw(hnp.arrays(b_dtype, (k, m), elements=st.integers(b_low, b_lim)))
    return a, b


@settings(max_examples=200, deadline=None)
@given(matmul_operands())
def test_engines_are_exact_and_identical(operands):
    a, b = operands
    expected = oracle_matmul(a, b)
    for engine in intmath.ENGINES:
        with configure(engine=engine):
            try:
                got, _ = exact_matmul(a, b)
            except IntegerOverflowError:
                # only refused when the int64 accumulator could really overflow
                assert intmath.magnitude(a) * intmath.magnitude(b) * a.shape[1] > 2**63 - 1
                continue
        assert got.dtype == np.int64
        assert np.array_equal(got.astype(object), expected), engine


@pytest.mark.parametrize("offset", [-1, 0, 1])
def test_blas_switches_to_int_exactly_at_the_float64_edge(offset):
    # Choose |a| * |b| * k right at 2**53: one below it float64 is provably exact.
    k = 4
    a_val = 2**26
    b_val = (FLOAT64_EXACT + offset * k * a_val) // (k * a_val)
    a = np.full((2, k), a_val, dtype=np.int64)
    a[1, 0] = a_val - 1  # partial sums that are odd at 2**53 scale: float64 would round them
    b = np.full((k, 3), b_val, dtype=np.int64)
    b[0, 0] = b_val - 1
    with configure(engine="blas"):
        got, bound = exact_matmul(a, b)
    assert (bound < FLOAT64_EXACT) == (offset < 0)
    assert np.array_equal(got.astype(object), oracle_matmul(a, b))


def test_float64_would_be_wrong_beyond_the_edge():
    """The fallback matters: naive float64 loses the low bit above 2**53."""
    a = np.array([[2**30, 1]], dtype=np.int64)
    b = np.array([[2**24], [1]], dtype=np.int64)
    assert int((a.astype(float) @ b.astype(float))[0, 0]) != 2**54 + 1
    with configure(engine="blas"):
        assert int(exact_matmul(a, b)[0][0, 0]) == 2**54 + 1


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
    from pocketnn.intmath import stochastic_div_

    q = stochastic_div_(np.full(50, a, dtype=np.int64), d, np.random.default_rng(seed))
    floor = a // d
    assert set(q.tolist()) <= ({floor} if a % d == 0 else {floor, floor + 1})


def test_stochastic_div_is_unbiased():
    from pocketnn.intmath import stochastic_div_

    rng = np.random.default_rng(0)
    for a, d in ((-7, 1000), (7, 1000), (-2500, 1000), (123456, 2000)):
        q = stochastic_div_(np.full(200_000, a, dtype=np.int64), d, rng)
        # mean of 200k Bernoulli draws: within 5 standard errors of a / d
        assert abs(q.mean() - a / d) < 5 * 0.5 / np.sqrt(q.size), (a, d)
