"""C text helpers: integer literals, array initialisers, integer types and identifiers.

The int32 limits are those of :mod:`pocketnn.intmath`; the other modules of the exporter
take them from here.
"""

from __future__ import annotations

import re

import numpy as np

from ...core.arith import INT32_MAX, INT32_MIN, signed_dtype_for
from .settings import ExportError

C_KEYWORDS = frozenset(
    "auto break case char const continue default do double else enum extern float for goto if "
    "inline int long register restrict return short signed sizeof static struct switch typedef "
    "union unsigned void volatile while _Bool _Complex _Imaginary "
    # C11 and C23, so that the code stays valid for newer compilers
    "_Alignas _Alignof _Atomic _Generic _Noreturn _Static_assert _Thread_local alignas alignof "
    "bool constexpr false nullptr static_assert thread_local true typeof typeof_unqual".split()
)
STANDARD_HEADERS = frozenset(
    "assert complex ctype errno fenv float inttypes iso646 limits locale math setjmp signal "
    "stdalign stdarg stdatomic stdbit stdbool stdckdint stddef stdint stdio stdlib stdnoreturn "
    "string tgmath threads time uchar wchar wctype".split()
)
"""The C standard library's headers: NAME.h must not shadow one (``#include "stdint.h"``)."""
RESERVED_FILE_NAMES = frozenset(
    {"main", "runtime", "pnn_api", "footprint_main", "host_main", "mcu_main", "cortex_m"}
)
"""A firmware's own ``main.c`` and the build harness's files, which NAME.c/.h would replace."""
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


def c_type(bound: int) -> str:
    """The smallest signed C type holding every integer in ``[-bound, bound]``."""
    try:
        return f"int{8 * signed_dtype_for(bound).itemsize}_t"
    except ValueError as exc:
        raise ExportError(str(exc)) from None


def c_type_size(c_name: str) -> int:
    """Bytes of an exact-width C integer type (``int16_t``: 2, ``uint8_t``: 1)."""
    return int(c_name.removeprefix("u").removeprefix("int").removesuffix("_t")) // 8


def c_arith_type(bound: int) -> str:
    """int32_t when ``bound`` fits int32, else int64_t (the type to compute a value in)."""
    return "int32_t" if bound <= INT32_MAX else "int64_t"


def c_int(value: int) -> str:
    """An integer literal valid in C99 for every int64 value."""
    value = int(value)
    if value == INT32_MIN:
        return "INT32_MIN"
    if not INT32_MIN < value <= INT32_MAX:
        return f"INT64_C({value})" if value > -(2**63) else "INT64_MIN"
    return str(value)


def c_array(values: np.ndarray, indent: str = "    ", width: int = 100) -> str:
    """The brace initialiser of an integer array of any rank, wrapped at ``width``."""
    values = np.asarray(values)
    if values.ndim > 1:
        rows = [indent + c_array(row, indent + "    ", width) for row in values]
        return "{\n" + ",\n".join(rows) + "\n" + indent[4:] + "}"
    items = [c_int(v) for v in values.tolist()]
    one_line = "{" + ", ".join(items) + "}"
    if len(indent) + len(one_line) <= width:
        return one_line
    lines, line = [], indent
    for item in items:
        if len(line) + len(item) + 2 > width and line.strip():
            lines.append(line.rstrip())
            line = indent
        line += item + ", "
    lines.append(line.rstrip())
    return "{\n" + "\n".join(lines) + "\n" + indent[4:] + "}"


def is_c_identifier(name: str) -> bool:
    """Whether ``name`` can name a C symbol: letters, digits and _, not a keyword."""
    return bool(_IDENTIFIER.fullmatch(name)) and name not in C_KEYWORDS


def check_name(name: str) -> str:
    """``name`` if it can prefix the generated symbols and name the files, else
    :class:`ExportError` saying why not.

    A letter, then letters, digits and ``_`` (a leading ``_`` is reserved to the C
    implementation); not a C keyword; and, ignoring case (file systems that do), not the
    name of a standard header or of a file of the build harness or firmware.
    """
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
        raise ExportError(f"name {name!r} is not a C identifier (letters, digits, _)")
    if not _NAME.fullmatch(name):
        raise ExportError(f"name {name!r} starts with '_', which C reserves; start with a letter")
    if name in C_KEYWORDS:
        raise ExportError(f"name {name!r} is a C keyword")
    if name.lower() in STANDARD_HEADERS:
        raise ExportError(f"name {name!r}: {name}.h would shadow the standard <{name.lower()}.h>")
    if name.lower() in RESERVED_FILE_NAMES:
        raise ExportError(f"name {name!r}: {name}.c is a file of the firmware or the build harness")
    return name
