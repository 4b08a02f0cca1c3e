"""Which source position each output frame shows, for any frame-rate factor (pure Python).

Output frame ``n`` shows source position ``p = n / factor``: source frame ``k = floor(p)``
at timestep ``t = p - k`` (0: the source frame itself, else the frame at ``t`` between
``k`` and ``k + 1``). Work is done in groups of ``batch`` consecutive source frames.

>>> s = Schedule(sources=4, factor=Fraction(5, 2), batch=1)
>>> s.length, [s.position(n) for n in range(4)]
(10, [(0, Fraction(0, 1)), (0, Fraction(2, 5)), (0, Fraction(4, 5)), (1, Fraction(1, 5))])
>>> list(s.outputs(1)), s.timesteps(1)
([3, 4], [(0, Fraction(1, 5)), (0, Fraction(3, 5))])
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

__all__ = ["Schedule"]


@dataclass(frozen=True)
class Schedule:
    """``sources`` source frames, ``factor`` (> 1) output frames per source frame."""

    sources: int
    factor: Fraction
    batch: int = 1

    @property
    def length(self) -> int:
        """Output frames: ``floor(sources * factor)`` (the tail after the last source frame
        shows that frame)."""
        return math.floor(self.sources * self.factor)

    def position(self, n: int) -> tuple[int, Fraction]:
        """``(k, t)`` of output frame ``n``."""
        p = Fraction(n) / self.factor
        k = math.floor(p)
        return k, p - k

    def first_output(self, k: int) -> int:
        """The first output frame that shows source frame ``k`` (at ``t = 0``)."""
        return math.ceil(k * self.factor)

    def outputs(self, group: int) -> range:
        """The output frames of a group (those whose ``k`` lies in it)."""
        lo = group * self.batch
        hi = min(lo + self.batch, self.sources)
        return range(self.first_output(lo), min(self.first_output(hi), self.length))

    def timesteps(self, group: int) -> list[tuple[int, Fraction]]:
        """``(j, t)`` of the group's outputs with ``t > 0``: source ``group * batch + j``."""
        out = []
        for n in self.outputs(group):
            k, t = self.position(n)
            if t:
                out.append((k - group * self.batch, t))
        return out

    def source_map(self) -> tuple[int, list[int]]:
        """``SelectEvery`` cycle and offsets that repeat source frames at the output rate:
        output ``n`` of a clip at source rate becomes its frame ``k(n)`` (two periods of
        the factor: VapourSynth wants a cycle above 1).

        >>> Schedule(4, Fraction(2)).source_map(), Schedule(4, Fraction(5, 2)).source_map()
        ((2, [0, 0, 1, 1]), (4, [0, 0, 0, 1, 1, 2, 2, 2, 3, 3]))
        """
        num, den = self.factor.numerator, self.factor.denominator
        return 2 * den, [i * den // num for i in range(2 * num)]
