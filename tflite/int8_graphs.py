"""The int8 graphs the exporter can make, and the rule that picks one by measurement.

Which graph keeps int8 accuracy best depends on the model: folding the identity branch into
the 3x3 kernel spoils that kernel's int8 scale on some models and not on others, and
equalization helps unbalanced networks and costs a little on balanced ones. So the
exporter builds the candidates, scores each on held-out inputs against the float model,
and keeps the fastest one whose error is within `TOLERANCE` of the best.

Numpy only: the rule is tested without TensorFlow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence


@dataclass(frozen=True)
class Int8Graph:
    name: str
    keep_identity: bool  # the identity branch as a per-channel scale + ADD, apart from the kernel
    equalize: bool  # cross-layer equalization before calibration
    speed_rank: int  # 0 is fastest; graphs of one rank have the same ops
    # keep_identity in the blocks where folding costs accuracy only (`keeps_identity_apart`),
    # measured on the held-out inputs; folded in the others.
    where_it_pays: bool = False
    # the fused kernels rounded with error compensation on the calibration inputs
    # (`int8_rounding`): the same ops and int8 grid, other integers.
    compensated: bool = False


# The plain graph has one CONV_2D per block; keeping the identity apart adds a
# DEPTHWISE_CONV_2D and an ADD per block with an identity branch. On LiteRT's CPU (XNNPACK)
# that costs 4-18% of the whole network (benchmarks: peers), so the plain graphs rank first,
# and the graph that keeps it apart in some blocks only before the one that keeps it in all.
INT8_GRAPHS = (
    Int8Graph("plain", keep_identity=False, equalize=False, speed_rank=0),
    Int8Graph("plain-equalized", keep_identity=False, equalize=True, speed_rank=0),
    Int8Graph("plain-compensated", keep_identity=False, equalize=False, speed_rank=0, compensated=True),
    Int8Graph("identity-where-it-pays", keep_identity=True, equalize=False, speed_rank=1, where_it_pays=True),
    Int8Graph("identity-apart", keep_identity=True, equalize=False, speed_rank=2),
    Int8Graph("identity-apart-equalized", keep_identity=True, equalize=True, speed_rank=2),
)
GRAPHS_BY_NAME = {g.name: g for g in INT8_GRAPHS}
AUTO = "auto"

# A candidate is as good as the best if its error (relative L2 of the logits on the held-out
# inputs) is at most RATIO x the best's + MARGIN. The ratio: one graph's error varies by
# 10-40% from one training seed to the next (docs/int8.md), so closer figures do not rank
# graphs. The margin: errors below a few thousandths do not change a top-1, so a faster graph
# is not refused for a difference no prediction shows.
TOLERANCE_RATIO = 1.25
TOLERANCE_MARGIN = 0.005


def tolerated_error(best: float) -> float:
    """The largest error that counts as the best's."""
    return TOLERANCE_RATIO * best + TOLERANCE_MARGIN


def candidates(form: str, equalize: Optional[bool] = None) -> list[Int8Graph]:
    """The graphs a model in `form` can give: all from the training form (the branches are
    still apart), the plain ones from a fused model, the identity-apart ones from a
    deploy-identity model (not the per-block one: its choice needs the branches).
    equalize=True/False keeps only the graphs with/without it."""
    keep = {"train": (False, True), "deploy": (False,), "deploy-identity": (True,)}[form]
    return [g for g in INT8_GRAPHS if g.keep_identity in keep and equalize in (None, g.equalize)
            and (form == "train" or not g.where_it_pays)]


# Folding the identity into a block's kernel adds a spike at each output channel's centre tap,
# which widens that channel's int8 step and so the rounding of its other weights; keeping it
# apart costs a DEPTHWISE_CONV_2D and an ADD over the block's whole activation. So each block
# is measured on the held-out inputs (`int8_search.identity_fold_errors`: the logits' change
# when that block alone is rounded as int8 rounds it, folded and apart), and the identity is
# folded first where it adds the least error per activation element saved, as long as the
# added errors, summed as independent noise (root of the sum of squares), stay within
# FOLD_BUDGET of the logits. Derivation: docs/int8.md, "Per block".
FOLD_BUDGET = 0.01


def identity_blocks_to_keep(rows: Sequence[Mapping]) -> list[str]:
    """The blocks that keep their identity apart, from per-block rows with "block", "folded"
    and "apart" (the measured errors) and "cost" (the activation elements the identity reads)."""
    def added(row: Mapping) -> float:
        error = row["folded"] - row["apart"]
        return max(error, 0.0) if math.isfinite(error) else math.inf  # NaN: never folded

    spent, folded = 0.0, set()
    for row in sorted(rows, key=lambda r: (added(r) / max(r["cost"], 1), r["block"])):
        if spent + added(row) ** 2 <= FOLD_BUDGET ** 2:
            spent += added(row) ** 2
            folded.add(row["block"])
    return [row["block"] for row in rows if row["block"] not in folded]


def competing(agreements: Mapping[str, float], samples: int) -> list[str]:
    """The graphs whose top-1 agreement is at most one of `samples` inputs below the best's
    (agreements may be rounded to 4 decimals, hence the 1e-4)."""
    best = max(agreements.values())
    slack = 1.0 / samples if samples else 0.0
    return [name for name, agreement in agreements.items() if agreement >= best - slack - 1e-4]


def choose(errors: Mapping[str, float], agreements: Optional[Mapping[str, float]] = None, samples: int = 0) -> str:
    """The fastest graph whose error is within the tolerance of the best; among graphs as
    fast, the one with the smaller error. `errors` maps graph names to held-out errors.

    `agreements` (graph name -> top-1 agreement with the float model on the `samples`
    held-out inputs), where given, come first: only the graphs that agree on all but at most
    one input more than the best does compete. The error alone can mislead: on a 4-class
    model fine-tuned on digits, the graph with the smallest relative L2 of the logits (0.42)
    agreed on top-1 for 31% of the inputs, and one with 0.94 for 97%."""
    if not errors:
        raise ValueError("choose needs at least one candidate")
    unknown = set(errors) - set(GRAPHS_BY_NAME)
    if unknown:
        raise ValueError(f"unknown int8 graphs {sorted(unknown)}; known: {sorted(GRAPHS_BY_NAME)}")
    errors = {name: error if math.isfinite(error) else math.inf for name, error in errors.items()}  # NaN: worst
    if agreements is not None:
        errors = {name: errors[name] for name in competing({n: agreements[n] for n in errors}, samples)}
    limit = tolerated_error(min(errors.values()))
    good = [name for name, error in errors.items() if error <= limit] or list(errors)
    return min(good, key=lambda name: (GRAPHS_BY_NAME[name].speed_rank, errors[name], name))
