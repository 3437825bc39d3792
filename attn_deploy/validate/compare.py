"""Run a reference and a candidate runner over the same input batches and keep both outputs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from attn_deploy.backends.base import Runner


@dataclass
class Comparison:
    """Outputs of a reference and a candidate runner on the same batches."""

    feeds: list[dict[str, np.ndarray]]
    reference_batches: list[dict[str, np.ndarray]]
    candidate_batches: list[dict[str, np.ndarray]]

    def reference(self) -> dict[str, np.ndarray]:
        """Reference outputs, batches concatenated."""
        return {n: np.concatenate([b[n] for b in self.reference_batches]) for n in self.reference_batches[0]}

    def candidate(self) -> dict[str, np.ndarray]:
        """Candidate outputs as float32, batches concatenated."""
        names = self.candidate_batches[0]
        return {n: np.concatenate([b[n] for b in self.candidate_batches]).astype(np.float32) for n in names}


def compare_runners(
    reference: Runner,
    candidate: Runner,
    input_name: str,
    inputs: np.ndarray,
    batch: int,
    on_batch: Callable[[int, int], None] | None = None,
) -> Comparison:
    """Run both runners over ``inputs`` in batches of ``batch``; ``on_batch(done, total)`` reports progress."""
    result = Comparison([], [], [])
    with reference, candidate:
        for i in range(0, len(inputs), batch):
            feed = {input_name: inputs[i : i + batch]}
            result.feeds.append(feed)
            result.reference_batches.append(reference.infer(feed))
            result.candidate_batches.append(candidate.infer(feed))
            if on_batch:
                on_batch(min(i + batch, len(inputs)), len(inputs))
    return result
