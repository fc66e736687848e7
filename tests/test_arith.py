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


INT64_EXTREMES = st.sampled_from([-(2**63), -(2**63) + 1, -(2**31) - 1, -(2**31), -1, 0, 1])
INT64_VALUES = st.one_of(st.integers(-(2**63), 2**63 - 1), INT64_EXTREMES, st.integers(-20, 20))


def general_trunc_div(a: np.ndarray, b: int) -> np.ndarray:
    """:func:`trunc_div`'s array path (fmod, then an exact floor division): the plain formula
    the power-of-two shifts must reproduce."""
    return trunc_div(a, np.full(a.shape, b, dtype=np.int64))


@given(hnp.arrays(np.int64, st.integers(1, 40), elements=INT64_VALUES), st.integers(0, 62))
def test_trunc_div_by_a_power_of_two_shifts_exactly(a, k):
    from pocketnn.core.arith import trunc_div_scalar_

    d = 1 << k
    expected = [c_div(int(v), d) for v in a]
    assert general_trunc_div(a, d).tolist() == expected
    assert trunc_div(a, d).tolist() == expected
    if k:  # -(2**63) / -1 is beyond int64 on either path
        assert trunc_div(a, -d).tolist() == general_trunc_div(a, -d).tolist()
    assert trunc_div_scalar_(a.copy(), d).tolist() == expected
    narrow = np.clip(a, INT32_MIN, INT32_MAX).astype(np.int32)
    if k < 32:  # d - 1 must fit the dtype
        assert trunc_div_scalar_(narrow.copy(), d).tolist() == [c_div(int(v), d) for v in narrow]


@given(hnp.arrays(np.int64, st.integers(1, 8), elements=INT64_VALUES), st.integers(0, 62))
def test_trunc_div_by_a_power_of_two_keeps_layout_and_input(a, k):
    x = np.resize(a, (2, 3, 4)).transpose(2, 0, 1)  # a permuted layout, as conv outputs
    before = x.copy()
    q = trunc_div(x, 1 << k)
    assert np.array_equal(x, before)
    assert np.array_equal(q, general_trunc_div(x, 1 << k))
    assert q.strides == np.empty_like(x).strides
    assert trunc_div(np.int64(-(2**63)), 2).shape == () and trunc_div(-7, 4) == -1


@st.composite
def few_divisors(draw):
    """An error array and a divisor array whose entries come from a few values (the
    gradient inverses of an activation), with int64 extremes and int32 edges."""
    values = draw(
        st.lists(
            st.one_of(
                st.sampled_from([1, 2, 4, 5, 8, 127, 2**30, INT32_MAX, 2**31, 2**62]),
                st.integers(1, 2**63 - 1),
            ),
            min_size=1,
            max_size=4,
            unique=True,
        )
    )
    n = draw(st.integers(1, 40))
    dtype = draw(st.sampled_from([np.int64, np.int32, np.int16, np.int8]))
    info = np.iinfo(dtype)
    small = st.integers(max(info.min, -(2**31)), min(info.max, 2**31 - 1))
    wide = st.integers(int(info.min), int(info.max))
    a = draw(hnp.arrays(dtype, n, elements=draw(st.sampled_from([small, wide]))))
    b = np.array(draw(st.lists(st.sampled_from(values), min_size=n, max_size=n)), dtype=np.int64)
    b_dtype = np.int32 if max(values) <= INT32_MAX else np.int64
    return a, b.astype(b_dtype), values


@given(few_divisors(), st.booleans())
def test_trunc_div_few_matches_trunc_div(case, listed):
    from pocketnn.core.arith import trunc_div_few

    a, b, values = case
    expected = trunc_div(a, b)
    assert expected.tolist() == [c_div(int(x), int(y)) for x, y in zip(a, b)]
    # a divisor missing from the list falls back to the plain division, still exact
    known = values if listed else values[1:]
    before = a.copy()
    got = trunc_div_few(a, b, known)
    assert got.dtype == np.int64 and np.array_equal(got, expected)
    assert np.array_equal(a, before)


def test_trunc_div_few_refuses_zero_divisors_as_trunc_div_does():
    from pocketnn.core.arith import trunc_div_few

    with pytest.raises(ZeroDivisionError):
        trunc_div_few(np.array([1, 2]), np.array([1, 0]), [1, 8])
    with pytest.raises(ZeroDivisionError):
        trunc_div_few(np.array([1, 2]), np.array([1, 0]), [0, 1])


@given(
    hnp.arrays(np.int64, st.integers(1, 40), elements=INT64_VALUES),
    st.one_of(st.integers(1, 2**62), st.sampled_from([1, 3, 1000, 2**31 - 1, 2**63 - 1])),
    st.integers(0, 2**32),
    st.booleans(),
)
def test_stochastic_div_is_floor_plus_a_draw_below_the_remainder(a, d, seed, narrow):
    """The plain formula with Python integers, over int64 (and int32) extremes."""
    if narrow:
        a, d = np.clip(a, INT32_MIN, INT32_MAX).astype(np.int32), min(d, INT32_MAX)
    draws = np.random.default_rng(seed).integers(0, d, a.shape, dtype=a.dtype)
    expected = [int(v) // d + (int(u) < int(v) % d) for v, u in zip(a, draws)]
    out = a.copy()
    assert stochastic_div_(out, d, draws) is out
    assert out.tolist() == expected
