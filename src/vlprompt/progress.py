"""Progress of long stages, on a terminal and in logs.

On a terminal a stage shows a live tqdm bar. Without one (output piped to a file: a cluster job, a
CI log) a bar would print nothing useful, so the stage logs a line each time another ``log_every``
of it is done, with its rate and ETA, and a job's log shows where it is.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Iterable, Iterator

log = logging.getLogger("vlprompt.progress")


def format_duration(seconds: float) -> str:
    """``0.4 s``, ``42 s``, ``3 min 05 s``, ``2 h 07 min``."""
    if not math.isfinite(seconds):
        return "?"
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class Progress:
    """Iterate ``iterable`` showing progress: a bar on a terminal, else a log line per ``log_every``
    of ``total`` (``None``: no lines, for loops whose caller logs its own summary)."""

    def __init__(self, iterable: Iterable, desc: str, total: int | None = None, unit: str = "it", initial: int = 0,
                 log_every: float | None = 0.1):
        self.iterable = iterable
        self.desc, self.unit, self.initial, self.log_every = desc, unit, initial, log_every
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.postfix = ""
        self._bar = None

    def set_postfix(self, **values) -> None:
        """Values shown after the count (e.g. the current loss)."""
        self.postfix = ", ".join(f"{k} {v}" for k, v in values.items())
        if self._bar is not None:
            self._bar.set_postfix_str(self.postfix, refresh=False)

    def __iter__(self) -> Iterator:
        if sys.stderr.isatty():
            from tqdm.auto import tqdm

            self._bar = tqdm(self.iterable, desc=self.desc, total=self.total, unit=self.unit, initial=self.initial,
                             leave=False)
            yield from self._bar
            return
        yield from self._logged()

    def _logged(self) -> Iterator:
        total = self.total
        step = max(1, math.ceil(total * self.log_every)) if total and self.log_every else None
        start = time.perf_counter()
        position = self.initial
        next_line = (position // step + 1) * step if step else None
        for item in self.iterable:
            yield item
            position += 1
            if step is not None and (position >= next_line or position == total):
                self._line(position, time.perf_counter() - start)
                next_line = (position // step + 1) * step

    def _line(self, position: int, elapsed: float) -> None:
        done = position - self.initial
        rate = done / elapsed if elapsed > 0 else math.inf
        eta = (self.total - position) / rate if rate > 0 else math.inf
        text = (f"{self.desc}: {position}/{self.total} {self.unit} ({100 * position / self.total:.0f}%), "
                f"{rate:.1f} {self.unit}/s, ETA {format_duration(eta)}")
        log.info(text + (f" ({self.postfix})" if self.postfix else ""))
