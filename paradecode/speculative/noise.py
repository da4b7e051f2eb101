"""The random numbers of a sampled speculative step, drawn where a recorded step can read them.

A sampled step draws each drafted token from the draft's q, one uniform per draft for the
acceptance test, and the final token from the target's (or the residual) distribution. Two
things keep such a step out of a CUDA graph when it draws them itself: ``torch.multinomial``
checks its probabilities with a read of the device, and a graph replays the offsets of the
generator it was captured with, so a step recorded once could not follow the generator each
call passes. So a step reads its numbers from a noise source:

* :class:`DrawnNoise` draws each one when it is asked for (steps that run as they are);
* :class:`KeptNoise` holds a recorded step's numbers in kept buffers, filled from the call's
  generator before each replay, in the order :class:`DrawnNoise` would draw them.

A token is drawn as ``torch.multinomial(p, 1)`` draws it (ATen's one-sample path: the argmax of
p / E with E ~ Exp(1)), so for one generator and seed every path gives the same tokens: steps
as they are, one graph per forward, whole steps recorded.
"""

from __future__ import annotations

from typing import Optional

import torch

__all__ = ["sample_categorical", "DrawnNoise", "KeptNoise"]


def sample_categorical(probs: torch.Tensor, exponentials: torch.Tensor) -> torch.Tensor:
    """One token per row of ``probs`` (rows, V), drawn with ``exponentials`` ~ Exp(1) of its
    shape: the argmax of probs / exponentials, which is ``torch.multinomial(probs, 1)``'s own
    draw (the same token for the same numbers) without its check that reads the device."""
    return torch.argmax(probs / exponentials, dim=-1)


class DrawnNoise:
    """A step's random numbers drawn from ``generator`` (None: the default one) as they are asked for."""

    def __init__(self, generator: Optional[torch.Generator]) -> None:
        self.generator = generator

    def draft(self, i: int, probs: torch.Tensor) -> torch.Tensor:
        """Exp(1) numbers for drafted token ``i``, shaped as the draft's ``probs`` (rows, Vd)."""
        return torch.empty_like(probs).exponential_(1, generator=self.generator)

    def accept(self, like: torch.Tensor) -> torch.Tensor:
        """U(0, 1) numbers for the acceptance test, shaped as ``like`` (rows, k)."""
        return torch.rand(like.shape, device=like.device, dtype=like.dtype, generator=self.generator)

    def final(self, probs: torch.Tensor) -> torch.Tensor:
        """Exp(1) numbers for the step's last token, shaped as ``probs`` (rows, V)."""
        return torch.empty_like(probs).exponential_(1, generator=self.generator)


class KeptNoise:
    """A recorded step's random numbers in buffers that stay put (a CUDA graph keeps addresses):
    ``k`` drafted tokens over ``draft_vocab`` entries (None: no draft model), ``k`` uniforms and
    one final token over ``vocab``, for ``rows`` rows, all float32 as the warped probabilities."""

    def __init__(self, rows: int, k: int, draft_vocab: Optional[int], vocab: int, device: torch.device) -> None:
        f32 = dict(dtype=torch.float32, device=device)
        self.drafts = torch.empty(k, rows, draft_vocab, **f32) if draft_vocab is not None else None
        self.uniforms = torch.empty(rows, k, **f32)
        self.finals = torch.empty(rows, vocab, **f32)

    def fill(self, generator: Optional[torch.Generator]) -> None:
        """Draw the next step's numbers, in the order a step that runs as it is draws them."""
        if self.drafts is not None:
            for row in self.drafts:  # one draw per drafted token, as the draft loop makes them
                row.exponential_(1, generator=generator)
        self.uniforms.uniform_(generator=generator)
        self.finals.exponential_(1, generator=generator)

    def draft(self, i: int, probs: torch.Tensor) -> torch.Tensor:
        return self._checked(self.drafts[i] if self.drafts is not None else None, probs, f"draft token {i}")

    def accept(self, like: torch.Tensor) -> torch.Tensor:
        return self._checked(self.uniforms, like, "acceptance test")

    def final(self, probs: torch.Tensor) -> torch.Tensor:
        return self._checked(self.finals, probs, "final token")

    @staticmethod
    def _checked(buffer: Optional[torch.Tensor], like: torch.Tensor, what: str) -> torch.Tensor:
        if buffer is None or buffer.shape != like.shape:
            have = None if buffer is None else tuple(buffer.shape)
            raise RuntimeError(f"the kept noise for the {what} is {have}, the step needs {tuple(like.shape)}: "
                               "a recorded step must be recorded with noise of its own shape.")
        return buffer
