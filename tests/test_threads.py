"""Thread safety: every public function, on every engine, from several threads at once.

Each job below exercises public functions on its own objects and returns everything they
computed. The jobs first run one after the other, then all at once, ``ROUNDS`` times
(``POCKETNN_THREAD_ROUNDS``), from ``THREADS`` threads started together at a barrier (each
job twice, so that two threads run it at once); every result must be the single-threaded
one, bit for bit. Further tests share one model between threads (readers must never see
half a training step), run contexts copied into threads (``asyncio.to_thread``), and
train one trainer from two threads. ``tests/test_conformance.py`` has the first two
thread tests (whole runs; ``configure`` per thread); docs/reliability.md gives the figures.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import threading

import numpy as np
import pytest

import pocketnn
from pocketnn import Dense, Trainer, build_mlp, configure, load, load_checkpoint, save
from pocketnn.core.products import exact_matmul, matmul
from pocketnn.datasets import read_idx
from pocketnn.export import generate_c
from pocketnn.io.limits import input_limit, max_input
from pocketnn.nn.losses import one_hot
from pocketnn.train.seeding import he_init

ENGINES = [
    pytest.param("compiled", marks=pytest.mark.gcc),
    pytest.param("fused", marks=pytest.mark.numba),
    "blas",
    "int",
]
THREADS = 8
ROUNDS = int(os.environ.get("POCKETNN_THREAD_ROUNDS", "3"))


def same(a, b) -> bool:
    """Bit-for-bit equality of nested results (arrays compared with their dtypes)."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (
            isinstance(a, np.ndarray)
            and isinstance(b, np.ndarray)
            and a.dtype == b.dtype
            and np.array_equal(a, b)
        )
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def params(model):
    return [p.copy() for layer in model.layers for p in layer.parameters().values()]


def run_all_at_once(jobs, threads: int = THREADS):
    """Run ``jobs`` (callables) from ``threads`` threads started together; results by job."""
    results: dict[int, object] = {}
    barrier = threading.Barrier(threads)

    def worker(k: int) -> None:
        barrier.wait()
        for i in range(k, len(jobs), threads):
            try:
                results[i] = jobs[i]()
            except BaseException as exc:  # reported by the caller, with the job
                results[i] = exc

    pool = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return [results[i] for i in range(len(jobs))]


@pytest.fixture(scope="module")
def data(mnist):
    return mnist.train_images[:600], mnist.train_labels[:600], mnist.test_images[:700]


@pytest.fixture(scope="module")
def trained(data):
    """Three small trained models of different shapes (read-only in the jobs)."""
    x, y, _ = data
    models = []
    for seed, dims in enumerate(([784, 24, 10], [784, 16, 12, 10], [784, 40, 10])):
        model = build_mlp(dims)
        Trainer(model, seed=seed, engine="int").fit(x, y, 1)
        models.append((model, Trainer(model, seed=seed).feedback))
    return models


def make_jobs(engine: str, data, trained, tmp_path):
    """Jobs covering the public API; each touches only its own objects and files."""
    x, y, x_test = data
    idx_file = tmp_path / "images.idx"
    idx_file.write_bytes(
        bytes([0, 0, 8, 3])
        + b"".join(n.to_bytes(4, "big") for n in (50, 28, 28))
        + x_test[:50].tobytes()
    )
    jobs = []

    def fit(seed, rule, rounding, overflow):
        model = build_mlp([784, 20, 10])
        if rule == "bp":
            he_init(model, seed)
        trainer = Trainer(model, seed=seed, rule=rule, rounding=rounding, batch_size=25)
        with configure(engine=engine, overflow=overflow):
            history = trainer.fit(x, y, 2, x_test=x_test[:100], y_test=y[:100])
        return params(model), [(r.loss, r.train_correct, r.test_correct) for r in history]

    for seed, rule, rounding, overflow in (
        (1, "dfa", "trunc", "raise"),
        (2, "dfa", "stochastic", "wrap"),
        (3, "bp", "trunc", "raise"),
        (4, "dfa", "stochastic", "raise"),
    ):
        jobs.append(lambda a=(seed, rule, rounding, overflow): fit(*a))

    def steps(seed):
        """Trainer.step with labels and targets; a step that overflows changes nothing."""
        model = build_mlp([784, 16, 10], weight_clamp=2**31 - 1)
        trainer = Trainer(model, seed=seed, engine=engine)
        out = [trainer.step(x[:30], y[:30]), trainer.step(x[30:60], targets=one_hot(y[30:60], 10))]
        huge = np.full((4, 784), 255, dtype=np.uint8)
        model.layers[0].set_params(np.full((784, 16), 2**30), np.zeros(16, dtype=np.int64))
        before = params(model)
        try:
            trainer.step(huge, y[:4])
        except pocketnn.IntegerOverflowError as exc:
            out.append(str(exc))
        out.append(all(same(a, b) for a, b in zip(before, params(model))))
        with configure(engine=engine, overflow="wrap"):
            out.append(model.scores(huge))
        return out

    jobs += [lambda s=s: steps(s) for s in (5, 6)]

    def inference(i):
        model, _ = trained[i]
        with configure(engine=engine):
            return [
                model.predict(x_test),
                model.scores(x_test[:90], batch_size=17),
                model.forward(x_test[:40])[0],
                model.count_correct(x_test[:300], y[:300]),
            ]

    jobs += [lambda i=i: inference(i) for i in range(3)]

    def layer_calls(seed):
        rng = np.random.default_rng(seed)
        layer = Dense(30, 7, "pocket_tanh", name=f"d{seed}")
        layer.set_params(rng.integers(-300, 300, (30, 7)), rng.integers(-300, 300, 7))
        a = rng.integers(0, 256, (9, 30)).astype(np.uint8)
        with configure(engine=engine):
            y_out, cache = layer.forward(a)
            delta = layer.delta(rng.integers(-40, 40, (9, 7)), cache)
            return [
                y_out,
                delta,
                layer.backward(delta, cache),
                [g.value for g in layer.gradient(delta, cache)],
                matmul(a, layer.W, layer.b, where="probe"),
            ]

    jobs += [lambda s=s: layer_calls(s) for s in (7, 8)]

    def products(seed):
        """Convolution-shaped exact products, in every lane width of the compiled engine's
        product (int16 pairs, int32, int64), split over 1-3 threads by the engine."""
        rng = np.random.default_rng(seed)
        cols = rng.integers(-128, 128, (700, 90)).astype(np.int8)
        w = rng.integers(-3000, 3000, (90, 70)).astype(np.int16)
        delta = rng.integers(-(2**17), 2**17, (700, 70))
        pairs = [(cols, w), (cols.T, delta), (delta, w.T), (cols.T, delta // 8)]
        with configure(engine=engine, threads=1 + seed % 3):
            return [exact_matmul(a, b) for a, b in pairs]

    jobs += [lambda s=s: products(s) for s in (9, 10)]

    def files(i):
        model, feedback = trained[i]
        path = tmp_path / f"{engine}-{i}-{threading.get_ident()}.npz"
        save(path, model, training={"epoch": 1}, extra_arrays={"feedback0": feedback[0]})
        loaded, state, arrays = load_checkpoint(path)
        again = load(path)
        c = generate_c(model, f"m{i}")
        c_train = generate_c(model, f"t{i}", with_training=True, feedback=feedback)
        return [path.read_bytes(), params(loaded), state, arrays, params(again), c, c_train]

    jobs += [lambda i=i: files(i) for i in range(3)]
    jobs.append(lambda: read_idx(idx_file))
    return jobs


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
def test_every_public_function_gives_single_threaded_bits(engine, data, trained, tmp_path):
    jobs = make_jobs(engine, data, trained, tmp_path)
    alone = [job() for job in jobs]
    for _ in range(ROUNDS):
        together = run_all_at_once(jobs + jobs)  # each job twice, on two threads at once
        for i, result in enumerate(together):
            assert not isinstance(result, BaseException), (i % len(jobs), result)
            assert same(result, alone[i % len(jobs)]), i % len(jobs)
    print(f"{engine}: {2 * len(jobs) * ROUNDS} job runs on {THREADS} threads, all identical")


def _snapshot_scores(model, trainer, batches, x_probe):
    """Scores of ``x_probe`` before and after each step, trained one step at a time."""
    seen = [model.scores(x_probe).tobytes()]
    for xb, yb in batches:
        trainer.step(xb, yb)
        seen.append(model.scores(x_probe).tobytes())
    return seen


@pytest.mark.slow
@pytest.mark.parametrize("by", ["step", "epoch"])
@pytest.mark.parametrize("engine", ENGINES)
def test_readers_of_a_model_being_trained_never_see_half_a_step(engine, by, mnist, tmp_path):
    """Predictions and saves of a model another thread trains are those of a whole step
    (trained step by step, or by ``train_epoch``, which an engine may run in one call)."""
    x, y = mnist.train_images[:1500], mnist.train_labels[:1500]
    probe = mnist.test_images[:1000]  # two batches of 500: a torn read would mix steps

    def fresh():
        model = build_mlp([784, 64, 10])
        return model, Trainer(
            model, seed=3, engine=engine, lr_inv=50, lr_double_every=0, batch_size=50
        )

    model, trainer = fresh()
    order = trainer.order(1, len(y))  # the epoch's order, so both ways take the same steps
    batches = [(x[order[i : i + 50]], y[order[i : i + 50]]) for i in range(0, 1500, 50)]
    with configure(engine=engine):
        allowed = set(_snapshot_scores(model, trainer, batches, probe))
    final = params(model)

    model, trainer = fresh()
    done, readers = threading.Event(), 3
    ready = threading.Barrier(readers + 1)  # training starts once every reader is reading
    seen, saved = [], []

    def train():
        ready.wait()
        try:
            if by == "epoch":
                trainer.train_epoch(x, y)
            else:
                for xb, yb in batches:
                    trainer.step(xb, yb)
        finally:
            done.set()

    def read(k):
        path = tmp_path / f"r{k}.npz"
        with configure(engine=engine):
            for n in range(10**6):
                if n == 1:
                    ready.wait()
                elif done.is_set():
                    break
                seen.append(model.scores(probe).tobytes())
                save(path, model)
                saved.append(load(path).scores(probe).tobytes())

    pool = [threading.Thread(target=train)] + [
        threading.Thread(target=read, args=(k,)) for k in range(readers)
    ]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert all(same(a, b) for a, b in zip(params(model), final))
    assert len(seen) >= 2 * readers and len(saved) >= 2 * readers  # each reads on both sides
    assert set(seen) <= allowed, f"{len(set(seen) - allowed)} of {len(seen)} reads were torn"
    assert set(saved) <= allowed
    print(f"{engine}, by {by}: {len(seen)} predictions and {len(saved)} saves while training")


@pytest.mark.parametrize("engine", ENGINES)
def test_one_trainer_from_two_threads_takes_turns(engine, data):
    """Two threads fitting one trainer: the second finds the epochs done, as run in turn."""
    x, y, _ = data

    def run(together: bool):
        model = build_mlp([784, 20, 10])
        trainer = Trainer(model, seed=9, rounding="stochastic", engine=engine)
        if together:
            run_all_at_once([lambda: trainer.fit(x, y, 2)] * 2, threads=2)
        else:
            trainer.fit(x, y, 2)
        return params(model), [(r.epoch, r.loss) for r in trainer.history]

    assert same(run(True), run(False))


@pytest.mark.parametrize("engine", ENGINES)
def test_one_context_copied_into_several_threads(engine, trained, data):
    """asyncio.to_thread and copy_context().run share a context, never work buffers."""
    _, _, x_test = data
    with configure(engine=engine):
        alone = [model.predict(x_test) for model, _ in trained]  # buffers made in this context

        async def gather():
            calls = [asyncio.to_thread(model.predict, x_test) for model, _ in trained * 3]
            return await asyncio.gather(*calls)

        for _ in range(ROUNDS):
            got = asyncio.run(gather())
            assert all(same(g, alone[i % 3]) for i, g in enumerate(got))
            ctx = contextvars.copy_context()
            jobs = [
                lambda m=model, c=ctx: c.copy().run(m.predict, x_test) for model, _ in trained * 3
            ]
            got = run_all_at_once(jobs, threads=len(jobs))
            assert all(same(g, alone[i % 3]) for i, g in enumerate(got))


def test_the_input_limit_is_per_thread():
    inside, release = threading.Event(), threading.Event()
    seen = {}

    def raising():
        with input_limit(2**40):
            inside.set()
            release.wait(10)

    def reading():
        inside.wait(10)
        seen["other"] = max_input()
        release.set()

    run_all_at_once([raising, reading], threads=2)
    assert seen == {"other": pocketnn.io.limits.DEFAULT_MAX_INPUT}
