"""Dataclass configs with help text and validation, loaded from YAML and saved beside outputs.

A stage declares its settings as a dataclass whose fields carry ``help`` metadata::

    @dataclass
    class TrainConfig(Config):
        lr: float = field(default=2e-4, metadata={"help": "peak learning rate"})

        def check(self):
            require(self.lr > 0, "lr", "must be positive")

Unknown keys and wrong types are errors that name the key. ``save`` writes the resolved
config (every field, defaults included) as JSON next to whatever it produced.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from aes_lib.io import write_json

C = TypeVar("C", bound="Config")


class ConfigError(ValueError):
    """A bad setting; the message names the key."""


def require(cond: bool, key: str, problem: str) -> None:
    if not cond:
        raise ConfigError(f"config key '{key}': {problem}")


def _type_ok(value: Any, annotation: Any) -> bool:
    """Loose runtime check of ``value`` against a field annotation."""
    if annotation is Any:
        return True
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if origin is typing.Literal:
        return value in typing.get_args(annotation)
    if origin in (list, tuple):
        return isinstance(value, (list, tuple))
    if origin is dict:
        return isinstance(value, dict)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True


@dataclasses.dataclass
class Config:
    """Base for stage configs."""

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any] | None = None, **overrides: Any) -> C:
        data = {**(data or {}), **overrides}
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        for key, value in data.items():
            if key not in fields:
                raise ConfigError(f"config key '{key}': unknown key for {cls.__name__} "
                                  f"(known: {', '.join(sorted(fields))})")
            if not _type_ok(value, hints[key]):
                raise ConfigError(f"config key '{key}': expected {hints[key]}, got {value!r} "
                                  f"({type(value).__name__})")
            if hints[key] is float and isinstance(value, int):
                data[key] = float(value)
        cfg = cls(**data)
        cfg.check()
        return cfg

    @classmethod
    def from_yaml(cls: type[C], path: str | Path, **overrides: Any) -> C:
        from aes_lib.io import load_yaml

        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: config file not found")
        data = load_yaml(path) or {}   # not UTF-8, alias bombs, duplicate keys: errors naming it
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of keys to values")
        return cls.from_dict(data, **overrides)

    def check(self) -> None:
        """Subclasses validate their values here (use :func:`require`)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> Path:
        return write_json(path, {"config": type(self).__name__, **self.to_dict()})

    @classmethod
    def help(cls) -> str:
        lines = []
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else "(required)"
            lines.append(f"{f.name} = {default!r}: {f.metadata.get('help', '')}")
        return "\n".join(lines)
