"""The builder's configuration file: /etc/pyinit/mkinitramfs.toml, or --config FILE.

One table of settings drives both the command line and the file: the `build` command's
argparse options *are* that table. Every long option is a key of the file, spelled as on
the command line without the dashes (`--microcode-dir` -> `microcode-dir`; `microcode_dir`
is accepted too), with a value of the option's type:

    compress = "xz"                      # a choice, checked against the option's choices
    level = 9                            # an int option
    modules = ["virtio_blk", "ext4"]     # a repeatable option: a list (or one string)
    quiet = true                         # a flag
    microcode = "auto"

An option added to the parser is a key of the file at once, with the same type and
choices. The command line wins over the file, option by option (a repeatable option given
on the command line replaces the file's list). Unknown keys and wrong types are errors
that name the file and the key.

The file read by default is /etc/pyinit/mkinitramfs.toml when it exists
($PYINIT_MKINITRAMFS_CONFIG names another); `--config FILE` names one that must exist;
`--config none` reads none.
"""
from __future__ import annotations

import argparse
import os
from typing import Any

from mkinitramfs.errors import MkinitramfsError

DEFAULT_PATH = "/etc/pyinit/mkinitramfs.toml"
ENV_PATH = "PYINIT_MKINITRAMFS_CONFIG"
NOT_SETTINGS = {"help", "config"}


class ConfigError(MkinitramfsError):
    """The settings file cannot be used; the message names the file and the key."""


def settings(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """The table: file key -> the option's action."""
    out = {}
    for action in parser._actions:
        longs = [o for o in action.option_strings if o.startswith("--")]
        if not longs:
            continue
        key = longs[0][2:]
        if key in NOT_SETTINGS or action.dest in NOT_SETTINGS:
            continue
        out[key] = action
    return out


def read(path: str) -> dict[str, Any]:
    import tomllib
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such configuration file") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None


def _kind(action: argparse.Action) -> str:
    if isinstance(action, argparse._AppendAction):
        return "list"
    if action.nargs == 0:
        return "flag"
    return "value"


def coerce(action: argparse.Action, key: str, value: object, where: str) -> object:
    """A file value checked and converted as argparse would convert the option."""
    kind = _kind(action)
    if kind == "flag":
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: {key} must be true or false, not {value!r}")
        return action.const if value else action.default
    if kind == "list":
        items = value if isinstance(value, list) else [value]
        return [_one(action, key, v, where) for v in items]
    return _one(action, key, value, where)


def _one(action: argparse.Action, key: str, value: object, where: str) -> object:
    if isinstance(value, (dict, list)):
        raise ConfigError(f"{where}: {key} takes one value, not {value!r}")
    if isinstance(value, bool):
        raise ConfigError(f"{where}: {key} is not a flag: give it a value, not {value!r}")
    typ = action.type
    out: object
    try:
        if typ is None or typ is str:
            if not isinstance(value, str):
                raise ConfigError(f"{where}: {key} must be a string, not {value!r}")
            out = value
        elif typ is int:
            if not isinstance(value, (int, str)):
                raise ConfigError(f"{where}: {key} must be an integer, not {value!r}")
            out = int(value)
        elif callable(typ):  # a conversion function, as argparse applies it to the option's text
            out = typ(value if isinstance(value, str) else str(value))
        else:  # a type registered with the parser by name: the build options have none
            raise ConfigError(f"{where}: {key}: the option's type {typ!r} cannot be read from a file")
    except (TypeError, ValueError, argparse.ArgumentTypeError) as e:
        raise ConfigError(f"{where}: {key} = {value!r}: {e}") from None
    if action.choices is not None and out not in action.choices:
        raise ConfigError(f"{where}: {key} = {out!r}: choose one of {', '.join(map(str, action.choices))}")
    return out


def config_path(explicit: str | None) -> str | None:
    if explicit is not None:
        return None if explicit in ("", "none") else explicit
    path = os.environ.get(ENV_PATH) or DEFAULT_PATH
    return path if os.path.exists(path) else None


def parse_build_args(parser: argparse.ArgumentParser, sub: argparse.ArgumentParser, argv: list[str] | None,
                     config_file: str | None, file_table: argparse.ArgumentParser | None = None,
                     not_from_file: tuple[str, ...] = ()) -> argparse.Namespace:
    """Parse `argv` for the build command (or another whose options include build's, `uki`)
    with `config_file` (a path, or None) under it. The file's keys are `file_table`'s options
    (default `sub`'s); those named in `not_from_file` are accepted there but not applied
    (`output` is the image's path, not the UKI's). Precedence: the option's default < the
    file < the command line."""
    table = settings(file_table or sub)
    file_values: dict[str, object] = {}
    if config_file:
        data = read(config_file)
        by_name = dict(table.items())
        by_name.update({k.replace("-", "_"): a for k, a in table.items()})
        for key, raw in data.items():
            action = by_name.get(key)
            if action is None:
                raise ConfigError(f"{config_file}: unknown setting {key!r}; known: {', '.join(sorted(table))}")
            value = coerce(action, key, raw, config_file)
            if action.dest not in not_from_file:
                file_values[action.dest] = value
    # Which options did the command line give? Parse once with every default suppressed
    # (and nothing required: the file may give a required option).
    saved = [(a, a.default, a.required) for a in sub._actions]
    try:
        for a in sub._actions:
            if a.dest != "help":
                a.default = argparse.SUPPRESS
            if a.dest in file_values:
                a.required = False
        given = vars(parser.parse_args(argv))
    finally:
        for a, default, required in saved:
            a.default, a.required = default, required
    missing = [a for a in sub._actions
               if a.required and a.dest not in given and a.dest not in file_values]
    if missing:
        sub.error("the following arguments are required: " + ", ".join("/".join(a.option_strings) for a in missing))
    out = {a.dest: a.default for a in sub._actions if a.dest != "help"}
    out.update(file_values)
    out.update(given)
    out["config_file"] = config_file
    return argparse.Namespace(**out)
