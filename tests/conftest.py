"""Shared fixtures (golden vectors, real datasets) and the test tiers.

Tiers, by marker (see pyproject.toml): the fast tier runs on synthetic data alone
(``pytest -m "not real_data and not slow"``); ``real_data`` needs MNIST (``scripts/setup.sh``
fetches it), ``numba`` the fast extra, ``gcc`` a host C compiler, ``arm`` the Cortex-M
cross-compiler and qemu, ``ray`` the ray extra (its test starts a local Ray cluster). A
test whose tool is missing is skipped on a developer's machine; with
``POCKETNN_REQUIRE_ALL=1`` (set by ``.ci/run``) every skip is a failure instead, so CI never
passes by skipping.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

GOLDEN = Path(__file__).parent / "golden"
GOLDEN_SHA256 = {  # from the golden README: the files are the reference's, unchanged
    "activations.npz": "eb3e944b40594d13c84de58e08265b9bf66724d50e3d1d853245f881cb828427",
    "dfa_mnist_epoch1.npz": "1dac2e837c0d9d73bfedadfd2a83797596cc7aed8859745faf2817d4119604e6",
    "bp_tiny.npz": "fc62aa2922594f017e6b406a9e58a3d30821397cf1527f68ea6c8fa0e9978396",
}
REQUIRE_ALL = os.environ.get("POCKETNN_REQUIRE_ALL") == "1"
TOOLS = {  # marker -> what must be present, and how to get it
    "numba": (lambda: importlib.util.find_spec("numba") is not None, "pip install numba"),
    "gcc": (lambda: shutil.which("gcc") is not None, "apt-get install gcc"),
    "arm": (
        lambda: all(shutil.which(t) for t in ("arm-none-eabi-gcc", "qemu-system-arm")),
        "bash .ci/install-arm.sh",
    ),
    "ray": (lambda: importlib.util.find_spec("ray") is not None, "pip install 'pocketnn[ray]'"),
}
REAL_DATA_FIXTURES = {"mnist", "mnist_model_file"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if REAL_DATA_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.real_data)
        for marker, (present, how) in TOOLS.items():
            if item.get_closest_marker(marker) and not present():
                item.add_marker(pytest.mark.skip(reason=f"needs {marker} ({how})"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if REQUIRE_ALL and report.skipped:
        report.outcome = "failed"
        report.longrepr = f"skipped, and POCKETNN_REQUIRE_ALL=1 forbids skips: {report.longrepr}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    report = outcome.get_result()
    if REQUIRE_ALL and report.skipped:
        report.outcome = "failed"
        report.longrepr = (
            f"module skipped, and POCKETNN_REQUIRE_ALL=1 forbids skips: {report.longrepr}"
        )


def load_golden(name: str) -> dict[str, np.ndarray]:
    path = GOLDEN / name
    assert hashlib.sha256(path.read_bytes()).hexdigest() == GOLDEN_SHA256[name], name
    with np.load(path, allow_pickle=False) as npz:
        return {key: npz[key] for key in npz.files}


@pytest.fixture(scope="session")
def golden_activations() -> dict[str, np.ndarray]:
    return load_golden("activations.npz")


@pytest.fixture(scope="session")
def golden_dfa() -> dict[str, np.ndarray]:
    return load_golden("dfa_mnist_epoch1.npz")


@pytest.fixture(scope="session")
def golden_bp() -> dict[str, np.ndarray]:
    return load_golden("bp_tiny.npz")


@pytest.fixture(scope="session")
def mnist():
    """The real MNIST, through the same fetch/verify/cache chain users get."""
    from pocketnn.datasets import load_dataset

    return load_dataset("mnist")
