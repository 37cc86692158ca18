"""Building frozen slotted dataclasses on hot paths without their `__init__`.

A frozen dataclass's `__init__` sets each field through `object.__setattr__`; setting the slots
through their own descriptors does the same for about 60 % of the cost (PutValue, 6 fields: 0.68 ->
0.41 µs, timeit). Only for classes whose `__init__` does nothing else: no `__post_init__`, every
field a slot that `__init__` sets.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class NotPlain(TypeError):
    """The class's `__init__` does more than set its slots."""


def slot_setters(cls: type) -> dict[str, Any]:
    """Each field's slot setter, in field order; NotPlain for any other kind of class."""
    if not dataclasses.is_dataclass(cls) or hasattr(cls, "__post_init__"):
        raise NotPlain(f"{cls.__name__} is not a plain dataclass")
    setters = {}
    for field in dataclasses.fields(cls):
        slot = getattr(cls, field.name, None)
        if not isinstance(slot, types.MemberDescriptorType) or not field.init:
            raise NotPlain(f"{cls.__name__}.{field.name} is not a slot set by __init__")
        setters[field.name] = slot.__set__
    return setters


def maker(cls: type[T]) -> Callable[..., T]:
    """`cls(*fields)`, every field given positionally, built by setting the slots directly."""
    setters = slot_setters(cls)
    names = [f"_{name}" for name in setters]
    lines = [f"def make({', '.join(names)}):", "    made = _new(_cls)"]
    lines += [f"    _set{n}(made, {name})" for n, name in enumerate(names)]
    lines.append("    return made")
    namespace: dict[str, Any] = {"_new": object.__new__, "_cls": cls}
    namespace |= {f"_set{n}": setter for n, setter in enumerate(setters.values())}
    exec(compile("\n".join(lines), f"<{cls.__name__} maker>", "exec"), namespace)  # noqa: S102 - built from the class's field names only
    made: Callable[..., T] = namespace["make"]
    return made


def replacer(cls: type[T]) -> Callable[[T, dict[str, Any]], T]:
    """`dataclasses.replace(obj, **changes)` for one class, built by setting the slots directly.

    A name in `changes` that is not a field of the class raises TypeError, as replace does.
    """
    setters = slot_setters(cls)
    fields = frozenset(setters)
    lines = [
        "def replace(obj, changes):",
        "    if not changes.keys() <= _fields:",
        "        raise TypeError(f'{_cls.__name__} has no such field')",
        "    made = _new(_cls)",
        "    get = changes.get",
    ]
    lines += [f"    _set{n}(made, get({name!r}, obj.{name}))" for n, name in enumerate(setters)]
    lines.append("    return made")
    namespace: dict[str, Any] = {"_new": object.__new__, "_cls": cls, "_fields": fields}
    namespace |= {f"_set{n}": setter for n, setter in enumerate(setters.values())}
    exec(compile("\n".join(lines), f"<{cls.__name__} replacer>", "exec"), namespace)  # noqa: S102 - built from the class's field names only
    replace: Callable[[T, dict[str, Any]], T] = namespace["replace"]
    return replace
