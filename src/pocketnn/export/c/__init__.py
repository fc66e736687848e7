"""Generate portable C99 for a model: inference, and optionally on-device DFA training.

The generated pair ``NAME.h`` / ``NAME.c`` needs nothing but ``<stdint.h>``: no malloc, no
float or double, no libm. Every buffer is static and sized here, at generation time. The C
computes exactly what :mod:`pocketnn` computes in Python, bit for bit:

* ``NAME_predict`` runs the forward pass of one input and returns the class (first index on
  ties) or a negative error code.
* With training, ``NAME_train_step`` applies one DFA step to a mini-batch (the weights live
  in RAM, the feedback matrices are baked in as constants) and returns how many samples of
  the batch were classified correctly before the update, or a negative error code. For a
  fixed-point MLP (the ``frontier`` recipe) the step is integer backprop with momentum and
  the softmax loss instead, the velocities and step count kept in RAM.

Integer widths are chosen from bounds proven here. Where a bound cannot prove that a value
fits int32 (for example layer 1's ``z = a @ W + b`` when the weights may change), the C
accumulates in int64 and checks the int32 range at run time, returning ``NAME_ERR_OVERFLOW``
exactly where Python raises :class:`~pocketnn.intmath.IntegerOverflowError`. Unlike Python,
a failing training step changes no weight: every check runs before the first update.

The package, one responsibility a module:

* :mod:`.api`: :func:`generate_c` and :func:`export_c`, the entry points;
* :mod:`.settings`: :class:`ExportSettings`, its defaults, :class:`ExportError`;
* :mod:`.ctext`: C literals, array initialisers, integer types and identifiers;
* :mod:`.activations`: each activation's C function, call and bounds, in one table;
* :mod:`.planner`: the integer widths, proven from bounds (no C text);
* :mod:`.inference`: the C of the two files and of inference;
* :mod:`.training`: the C of on-device DFA training;
* :mod:`.cnn_planner` and :mod:`.cnn_inference`: layered models (convolutions, pooling,
  scaling, dense layers, fixed-point layers of any kind), for inference: stages, proven
  intervals and their C;
* :mod:`.fixed_planner` and :mod:`.fixed_training`: on-device training of fixed-point MLPs
  (backprop, MomentumSGD, integer softmax): the backward bounds and their C.
"""

from .activations import ACTIVATIONS, activation_c_functions
from .api import export_c, generate_c
from .ctext import c_array, c_int, c_type
from .inference import params_digest
from .planner import INPUT_MAX, INT64_MAX, LayerPlan, plan_layers
from .settings import DEFAULT_MAX_BATCH, ExportError, ExportSettings

__all__ = [
    "ACTIVATIONS",
    "DEFAULT_MAX_BATCH",
    "INPUT_MAX",
    "INT64_MAX",
    "ExportError",
    "ExportSettings",
    "LayerPlan",
    "activation_c_functions",
    "c_array",
    "c_int",
    "c_type",
    "export_c",
    "generate_c",
    "params_digest",
    "plan_layers",
]
