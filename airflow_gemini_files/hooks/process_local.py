"""``process_cached_property``: a cached attribute that a forked child process rebuilds for itself.

HTTP clients keep connections open in a pool. A client built before a fork (Celery's prefork pool and
Airflow's task supervisor both fork) would hand the same sockets to parent and child, which then
interleave requests and read each other's responses. A value cached by this descriptor is remembered with
the id of the process that built it; any other process builds its own on first use.

The first use builds under a lock: the fan-out's threads share one hook, and two threads that each built a
``genai.Client`` would keep one and drop the other, whose ``__del__`` closes the HTTP pool that the
dropping thread's call is still using ("the client has been closed").
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar, overload

T = TypeVar("T")

_BUILDING = threading.RLock()
"""One lock for every build: a build that reads another cached attribute cannot deadlock."""


class process_cached_property(Generic[T]):  # lower case, like functools.cached_property
    """Like :func:`functools.cached_property`, but cached per process: after a fork, built anew."""

    def __init__(self, func: Callable[[Any], T]) -> None:
        self.func = func
        self.name = func.__name__
        self.__doc__ = func.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @property
    def _key(self) -> str:
        return f"_process_cached_{self.name}"

    @overload
    def __get__(self, instance: None, owner: type | None = None) -> process_cached_property[T]: ...

    @overload
    def __get__(self, instance: object, owner: type | None = None) -> T: ...

    def __get__(self, instance: object | None, owner: type | None = None) -> T | process_cached_property[T]:
        if instance is None:
            return self
        cached = self.cached(instance)
        if cached is not None:
            return cached
        with _BUILDING:
            cached = self.cached(instance)  # another thread may have built it meanwhile
            if cached is not None:
                return cached
            value = self.func(instance)
            self.__set__(instance, value)
            return value

    def __set__(self, instance: object, value: T) -> None:
        instance.__dict__[self._key] = (os.getpid(), value)

    def __delete__(self, instance: object) -> None:
        instance.__dict__.pop(self._key, None)

    def cached(self, instance: object) -> T | None:
        """The value this process cached on ``instance``, or None (not built yet, or built before a fork)."""
        entry: tuple[int, T] | None = instance.__dict__.get(self._key)
        if entry is None or entry[0] != os.getpid():
            return None
        return entry[1]
