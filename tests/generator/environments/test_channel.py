"""The offline channel's helpers: running py-rattler's coroutines safely."""

from __future__ import annotations

import asyncio
import threading

from generator.environments import channel as conda_channel


def test_run_rattler_returns_only_after_the_completing_thread_left_python() -> None:
    """py-rattler completes futures from a foreign thread through `call_soon_threadsafe`; the
    interpreter must not finalize while that thread is still inside Python (SIGABRT, exit 134)."""
    left_python = threading.Event()

    async def completed_by_another_thread() -> int:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()

        def complete() -> None:
            loop.call_soon_threadsafe(future.set_result, 42)
            # Still in Python after the callback was scheduled, as rattler's thread is while its
            # self-pipe write releases the GIL; long enough for the main thread to see the result.
            threading.Event().wait(0.3)
            left_python.set()

        threading.Thread(target=complete, name="foreign").start()
        return await future

    assert conda_channel.run_rattler(completed_by_another_thread()) == 42
    assert left_python.is_set()


def test_run_rattler_returns_the_result_of_a_plain_coroutine() -> None:
    async def answer() -> str:
        return "ok"

    assert conda_channel.run_rattler(answer()) == "ok"
