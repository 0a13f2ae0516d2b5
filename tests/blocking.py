"""Fail a test, rather than hang the suite, when a call blocks (a read of a pipe waits for ever)."""

from __future__ import annotations

import threading
from collections.abc import Callable


def finished_in_time(call: Callable[[], object], seconds: float = 30.0) -> None:
    """Run `call` in a thread; fail (not hang the suite) when it blocks, as a read of a pipe would."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            call()
        except BaseException as exc:  # noqa: BLE001  re-raised in the test's thread
            errors.append(exc)

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"still blocked after {seconds} s"
    if errors:
        raise errors[0]
