"""Small file helpers every stage uses: atomic writes, hashes, and the one reader of JSON,
JSON lines and YAML inputs, whose every error names the file."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file and a rename: never half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual permissions
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as e:   # disk full, quota, file size limit: say which file
        Path(tmp).unlink(missing_ok=True)
        if e.filename:
            raise
        raise type(e)(e.errno, f"cannot write {path} ({e.strerror or e})") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: Any, indent: int = 2) -> Path:
    """Deterministic JSON (sorted keys, fixed indent, trailing newline), written atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=True, ensure_ascii=False,
                                              default=_json_default) + "\n")


def read_text(path: str | Path) -> str:
    """A UTF-8 text file (a leading BOM is dropped); one that is not UTF-8 is an error naming the
    file, the line and the byte."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: file not found")
    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a folder, not a file")
    data = path.read_bytes()
    return decode_text(data, str(path))


def decode_text(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise ValueError(f"{where}: not UTF-8 text (byte 0x{data[e.start]:02x} on line {line}); "
                         "re-save the file as UTF-8") from None


class _DuplicateKey(ValueError):
    pass


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _DuplicateKey(k)
        out[k] = v
    return out


def parse_json(text: str, where: str, unique_keys: bool = False) -> Any:
    """``json.loads`` whose every failure is one ValueError naming ``where``: not JSON, nested
    deeper than Python can read, and (``unique_keys``) a key given twice in one object, which
    plain JSON readers resolve silently by keeping the last."""
    try:
        return json.loads(text, object_pairs_hook=_unique_pairs if unique_keys else None)
    except json.JSONDecodeError as e:
        raise ValueError(f"{where}: not valid JSON ({e})") from None
    except RecursionError:
        raise ValueError(f"{where}: JSON nested too deeply to read (thousands of levels); "
                         "not a file this project writes or reads") from None
    except _DuplicateKey as e:
        raise ValueError(f"{where}: key {_short(str(e.args[0]))} appears twice in one JSON object; "
                         "each key must be given once (which one is meant?)") from None


def read_json(path: str | Path, unique_keys: bool = False) -> Any:
    """A JSON file; every error names it (see :func:`parse_json`)."""
    path = Path(path)
    return parse_json(read_text(path), str(path), unique_keys)


def iter_jsonl_lines(path: str | Path) -> Iterator[tuple[int, Any]]:
    """``(line number, value)`` of each non-empty line of a JSON-lines file; errors name the file
    and the line (not UTF-8, not JSON, nested too deeply)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: file not found")
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            text = decode_text(raw, f"{path}:{lineno}") if lineno > 1 else decode_text(raw, str(path))
            if text.strip():
                yield lineno, parse_json(text, f"{path}:{lineno}")


#: YAML inputs (configs, profiles, protocols) are small: more nodes than this, counting each
#: alias as the copy it stands for, is an "alias bomb" (a few lines that expand to millions)
MAX_YAML_NODES = 100_000


def load_yaml(source: str | Path, where: str | None = None) -> Any:
    """A YAML file (a path) or text (a str, with ``where`` naming it), read safely: not UTF-8,
    invalid YAML, a key given twice in one mapping, nesting too deep and aliases that expand
    beyond :data:`MAX_YAML_NODES` are each one ValueError naming the file; no value is ever
    expanded or formatted into the message."""
    import yaml

    if isinstance(source, Path) or where is None:
        where = str(source)
        text = read_text(source)
    else:
        text = source
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_yaml_node(node, where)
        return loader.construct_document(node)
    except yaml.YAMLError as e:
        raise ValueError(f"{where}: not valid YAML ({' '.join(str(e).split())[:300]})") from None
    except RecursionError:
        raise ValueError(f"{where}: YAML nested too deeply to read") from None
    finally:
        loader.dispose()


def _check_yaml_node(root: Any, where: str) -> None:
    import yaml

    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: Any) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise ValueError(f"{where}: line {node.start_mark.line + 1}: an alias refers to the node "
                             "that contains it (recursive YAML); not allowed")
        active.add(key)
        n = 1
        if isinstance(node, yaml.SequenceNode):
            n += sum(size(child) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode) and k.tag != "tag:yaml.org,2002:merge":
                    if k.value in seen:
                        raise ValueError(f"{where}: line {k.start_mark.line + 1}: key {_short(k.value)} "
                                         "appears twice in one mapping; each key must be given once")
                    seen.add(k.value)
                n += size(k) + size(v)
                if n > MAX_YAML_NODES:
                    break
        active.discard(key)
        if n > MAX_YAML_NODES:
            raise ValueError(f"{where}: YAML expands to more than {MAX_YAML_NODES:,} values through "
                             "its aliases (&anchor / *alias); refused (an 'alias bomb' or not a config)")
        sizes[key] = n
        return n

    size(root)


def _short(value: str, limit: int = 80) -> str:
    """A value for an error message, never a huge one."""
    return repr(value if len(value) <= limit else value[:limit] + "...")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def hash_tree(root: str | Path, exclude: tuple[str, ...] = ()) -> dict[str, str]:
    """sha256 of every file below ``root``, keyed by its POSIX path relative to ``root``."""
    root = Path(root)
    out: dict[str, str] = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and not any(rel == e or rel.startswith(e.rstrip("/") + "/") for e in exclude):
            out[rel] = sha256_file(p)
    return out


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return obj.as_posix()
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if hasattr(obj, "item"):  # numpy scalars
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")
