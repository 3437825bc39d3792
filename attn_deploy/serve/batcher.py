"""Dynamic micro-batching: requests that arrive within ``max_delay`` are concatenated along dim 0
(up to ``max_batch`` items), run as one model execution in a worker thread, and split back.

Only requests whose inputs agree on names, dtypes and non-batch dimensions share an execution. The
event loop only queues and wakes futures; concatenation, inference and splitting run in the executor.
With ``max_batch <= 1`` every request runs on its own, straight away.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np

Feed = dict[str, np.ndarray]
RunFn = Callable[[Feed], Feed]
GroupKey = tuple[tuple[str, str, tuple[int, ...]], ...]


@dataclass(frozen=True)
class BatchResult:
    """One request's outputs and where its time went."""

    outputs: Feed
    queue_us: float  # from arrival to the start of its execution in a worker
    compute_us: float  # the execution it was part of (concatenate + run + split)
    exec_batch_size: int  # items in that execution


@dataclass
class _Pending:
    feed: Feed
    size: int
    future: asyncio.Future[BatchResult]
    arrived: float


def batch_size_of(feed: Feed) -> int | None:
    """The common leading dimension of all inputs, or None when they have none in common."""
    sizes = {a.shape[0] if a.ndim else None for a in feed.values()}
    return sizes.pop() if len(sizes) == 1 else None


def _group_key(feed: Feed) -> GroupKey:
    return tuple(sorted((name, a.dtype.str, tuple(a.shape[1:])) for name, a in feed.items()))


class MicroBatcher:
    """Queue requests for one model and execute them in batches on ``executor``."""

    def __init__(
        self,
        run: RunFn,
        executor: Executor,
        *,
        max_batch: int,
        max_delay_s: float,
        on_execution: Callable[[float], None] | None = None,
    ) -> None:
        self.run = run
        self.executor = executor
        self.max_batch = max_batch
        self.max_delay_s = max_delay_s
        self.on_execution = on_execution
        self._groups: dict[GroupKey, list[_Pending]] = {}
        self._timers: dict[GroupKey, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def infer(self, feed: Feed) -> BatchResult:
        """Run ``feed`` (alone or batched with concurrent requests) and return its own outputs."""
        loop = asyncio.get_running_loop()
        size = batch_size_of(feed)
        pending = _Pending(feed, size or 0, loop.create_future(), time.perf_counter())
        if size is None or size == 0 or size >= self.max_batch:
            self._launch([pending])
        else:
            key = _group_key(feed)
            group = self._groups.setdefault(key, [])
            group.append(pending)
            if sum(p.size for p in group) >= self.max_batch:
                self._flush(key)
            elif key not in self._timers:
                self._timers[key] = loop.call_later(self.max_delay_s, self._flush, key)
        return await pending.future

    def flush_all(self) -> None:
        """Start every queued request now (used when the server begins to shut down)."""
        for key in list(self._groups):
            self._flush(key)

    def _flush(self, key: GroupKey) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        group = self._groups.pop(key, [])
        batch: list[_Pending] = []
        total = 0
        while group and total + group[0].size <= self.max_batch:
            total += group[0].size
            batch.append(group.pop(0))
        if batch:
            self._launch(batch)
        if group:  # what did not fit waits for the next execution
            self._groups[key] = group
            if sum(p.size for p in group) >= self.max_batch:
                self._flush(key)
            else:
                self._timers[key] = asyncio.get_running_loop().call_later(self.max_delay_s, self._flush, key)

    def _launch(self, batch: list[_Pending]) -> None:
        task = asyncio.get_running_loop().create_task(self._execute(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _execute(self, batch: list[_Pending]) -> None:
        loop = asyncio.get_running_loop()
        feeds = [p.feed for p in batch]
        try:
            outputs, started, compute_s = await loop.run_in_executor(self.executor, self._run_batch, feeds)
        except Exception as exc:
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(exc)
            return
        if self.on_execution is not None:
            self.on_execution(compute_s * 1e6)
        total = sum(p.size for p in batch)
        for p, out in zip(batch, outputs, strict=True):
            if not p.future.done():  # a client that went away cancels its future
                p.future.set_result(BatchResult(out, (started - p.arrived) * 1e6, compute_s * 1e6, total))

    def _run_batch(self, feeds: list[Feed]) -> tuple[list[Feed], float, float]:
        started = time.perf_counter()
        if len(feeds) == 1:
            split = [self.run(feeds[0])]
        else:
            merged = {name: np.concatenate([f[name] for f in feeds]) for name in feeds[0]}
            outputs = self.run(merged)
            sizes = [next(iter(f.values())).shape[0] for f in feeds]
            total = sum(sizes)
            for name, array in outputs.items():
                if array.ndim == 0 or array.shape[0] != total:
                    raise RuntimeError(
                        f"output '{name}' has shape {list(array.shape)}, not batch-first with {total} items; "
                        "serve this model with --max-batch 1"
                    )
            bounds = np.cumsum([0, *sizes])
            split = [{n: a[lo:hi] for n, a in outputs.items()} for lo, hi in itertools.pairwise(bounds)]
        return split, started, time.perf_counter() - started
