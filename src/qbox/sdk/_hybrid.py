"""A method callable on the class with an id (``Sandbox.get_info(id)``) or on an instance."""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Generic, TypeVar, cast

R = TypeVar("R")


class class_or_instance(Generic[R]):
    def __init__(self, on_class: Callable[..., R], on_instance: Callable[..., R]) -> None:
        self.on_class = on_class
        self.on_instance = on_instance
        self.__doc__ = on_instance.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.__name__ = name

    def __get__(self, obj: object | None, owner: type | None = None) -> Callable[..., R]:
        if obj is None:
            return cast(Callable[..., R], types.MethodType(self.on_class, owner))
        return cast(Callable[..., R], types.MethodType(self.on_instance, obj))
