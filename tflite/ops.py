"""Reading a .tflite flatbuffer's operators, and the GPU delegate's static op table.

The table records facts of TFLite's GPU delegate (its compatibility checker,
tensorflow/lite/tools/versioning/gpu_compatibility.cc): the highest version of
each builtin op it accepts. An op missing from the table is not supported.
"""

from __future__ import annotations

import dataclasses

# Highest op version the GPU delegate takes, per builtin op (None: any version).
# Read from its model builder's IsSupported() checks; FULLY_CONNECTED v12, which
# dynamic-range int8 emits, is the case that matters for us.
GPU_MAX_VERSION = {
    "ADD": 2,
    "AVERAGE_POOL_2D": 2,
    "CAST": None,
    "CONCATENATION": 2,
    "CONV_2D": 6,
    "DEPTHWISE_CONV_2D": 6,
    "DEQUANTIZE": 3,
    "DIV": 2,
    "FULLY_CONNECTED": 9,
    "LOGISTIC": 2,
    "MAX_POOL_2D": 2,
    "MEAN": None,
    "MUL": 3,
    "PAD": 2,
    "QUANTIZE": 2,
    "RELU": 2,
    "RESHAPE": 1,
    "SOFTMAX": 2,
    "SUB": 2,
    "SUM": None,
    "TRANSPOSE": 2,
}


@dataclasses.dataclass(frozen=True)
class OpUse:
    name: str
    version: int
    count: int


def model_ops(data: bytes) -> list[OpUse]:
    """Every operator code the model uses, with its version and how often it runs."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(data, 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    codes = []
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        name = names.get(builtin, f"BUILTIN_{builtin}")
        if name == "CUSTOM":
            name = f"CUSTOM:{code.CustomCode().decode()}"
        codes.append((name, code.Version()))
    counts = [0] * len(codes)
    for s in range(model.SubgraphsLength()):
        graph = model.Subgraphs(s)
        for o in range(graph.OperatorsLength()):
            counts[graph.Operators(o).OpcodeIndex()] += 1
    return [OpUse(name, version, n) for (name, version), n in zip(codes, counts, strict=True)]


def gpu_static_problems(data: bytes) -> list[str]:
    """Ops the GPU delegate would not take, each with the reason; empty when all pass."""
    problems = []
    for op in model_ops(data):
        if op.name not in GPU_MAX_VERSION:
            problems.append(f"{op.name} v{op.version} ({op.count}x): not supported by the GPU delegate")
            continue
        limit = GPU_MAX_VERSION[op.name]
        if limit is not None and op.version > limit:
            problems.append(
                f"{op.name} v{op.version} ({op.count}x): the GPU delegate takes at most v{limit}"
            )
    return problems
