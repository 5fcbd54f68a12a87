"""A method callable on the class with an id (``Sandbox.get_info(id)``) or on an instance.

Typed as a descriptor whose ``__get__`` is overloaded, so mypy and IDEs see
the class form's signature on the class and the instance form's on an
instance (a plain ``Callable[..., R]`` would erase both).
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Concatenate, Generic, ParamSpec, TypeVar, cast, overload

Owner = TypeVar("Owner")
ClassParams = ParamSpec("ClassParams")
InstanceParams = ParamSpec("InstanceParams")
R = TypeVar("R")


class class_or_instance(Generic[Owner, ClassParams, InstanceParams, R]):
    """``on_class`` takes the id where ``on_instance`` (a method) knows its own."""

    def __init__(
        self,
        on_class: Callable[ClassParams, R],
        on_instance: Callable[Concatenate[Owner, InstanceParams], R],
    ) -> None:
        self.on_class = on_class
        self.on_instance = on_instance
        self.__doc__ = on_instance.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.__name__ = name

    @overload
    def __get__(self, obj: None, owner: type[Owner] | None = None) -> Callable[ClassParams, R]: ...

    @overload
    def __get__(self, obj: Owner, owner: type[Owner] | None = None) -> Callable[InstanceParams, R]: ...

    def __get__(
        self, obj: Owner | None, owner: type[Owner] | None = None
    ) -> Callable[ClassParams, R] | Callable[InstanceParams, R]:
        if obj is None:
            return self.on_class
        # A bound method (not a closure) keeps the signature and docstring for help() and IDEs.
        return cast(Callable[InstanceParams, R], types.MethodType(self.on_instance, obj))
