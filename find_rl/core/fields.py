"""Declaring a setting once: its default, its command-line flag, its help and its check, in one ``setting(...)`` call.

A settings part is a dataclass whose fields are declared with :func:`setting`. From those declarations

- :func:`check_fields` validates an instance (called from each part's ``__post_init__``), so a value is checked
  wherever it comes from: a flag, a saved run, Python code;
- :func:`add_arguments` writes the argparse options (a new flag is one ``setting(...)`` line);
- :func:`from_args` builds the part back from parsed arguments, converting text with the field's ``parse``;
- :func:`from_dict` reads a saved part strictly: an unknown key is an error, not silence.

Errors are one-line ``ValueError``s that name the flag, e.g. ``--lr must be a finite number > 0, got nan``.
No Ray and no torch here: ``--help`` and validation stay fast.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from typing import Any, Callable

#: a check returns None when the value is fine, else what the value must be ("a finite number > 0")
Check = Callable[[Any], "str | None"]


def setting(default: Any = dataclasses.MISSING, *, help: str = "", flag: str | None = None, check: Check | None = None,
            parse: Callable[[str], Any] | None = None, cli: dict | None = None, aliases: tuple[str, ...] = (),
            extra_flags: tuple[tuple[str, dict], ...] = (), factory: Callable[[], Any] | None = None,
            only: tuple[str, ...] = ()) -> Any:
    """A dataclass field with its flag (``--name-with-dashes`` unless given; ``flag=""`` for no flag), help, check
    (applied to non-None values), ``parse`` (text -> value, for flags whose text is not a plain number), extra argparse
    keywords ``cli`` (``action``, ``nargs``, ``choices``, ``metavar``), ``aliases`` (more option strings) and
    ``extra_flags`` (other options that set this field, e.g. ``("--no-calibration", {"action": "store_const", ...})``)
    and ``only``: the variants (e.g. policy families) the setting belongs to; empty = all (see :func:`check_only`)."""
    md = {"help": help, "flag": flag, "check": check, "parse": parse, "cli": cli or {}, "aliases": aliases,
          "extra_flags": extra_flags, "only": tuple(only)}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=md)
    return dataclasses.field(default=default, metadata=md)


def flag_of(f: dataclasses.Field) -> str:
    flag = f.metadata.get("flag")
    return ("--" + f.name.replace("_", "-")) if flag is None else flag


def name_of(obj_or_cls, name: str) -> str:
    """How an error names a field: its flag, or the field name when it has none."""
    f = {g.name: g for g in dataclasses.fields(obj_or_cls)}[name]
    return flag_of(f) or f.name


# ---------------------------------------------------------------------------------------------------- checks
def at_least(low: int | float) -> Check:
    return lambda v: None if v >= low else f">= {low}"


def finite_positive(v) -> str | None:
    return None if math.isfinite(v) and v > 0 else "a finite number > 0"


def finite_nonnegative(v) -> str | None:
    return None if math.isfinite(v) and v >= 0 else "a finite number >= 0"


def finite(v) -> str | None:
    return None if math.isfinite(v) else "a finite number"


def positive(v) -> str | None:  # inf allowed (e.g. no clipping); NaN fails
    return None if v > 0 else "> 0"


def in_range(low, high, *, open_low: bool = False) -> Check:
    def check(v):
        ok = (low < v if open_low else low <= v) and v <= high
        return None if ok else f"in {'(' if open_low else '['}{low}, {high}]"
    return check


def one_of(*choices) -> Check:
    return lambda v: None if v in choices else "one of " + ", ".join(repr(c) for c in choices)


def check_fields(obj) -> None:
    """Run every field's declared check; the first failure raises a one-line ``ValueError`` naming the flag."""
    for f in dataclasses.fields(obj):
        check, value = f.metadata.get("check"), getattr(obj, f.name)
        if check is None or value is None:
            continue
        try:
            problem = check(value)
        except TypeError:
            problem = f"of type {type(f.default).__name__ if f.default is not dataclasses.MISSING else 'its declared type'}"
        if problem:
            raise ValueError(f"{flag_of(f) or f.name} must be {problem}, got {value!r}")


def default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else None


def check_only(obj, chosen: str, *, what: str, given: frozenset[str] | set[str] = frozenset(), hint: str = "") -> None:
    """Refuse a setting declared ``only=`` for other variants than ``chosen`` when it was given (its name in ``given``:
    a flag on the command line, even at its default value) or differs from its default (a saved run, Python code):
    one line naming the flag, e.g. ``--kl-coeff is a setting of the flow policy; the per-prompt policy does not use
    it: drop --kl-coeff or add --policy-type flow``."""
    for f in dataclasses.fields(obj):
        only = f.metadata.get("only", ())
        if not only or chosen in only:
            continue
        if f.name in given or getattr(obj, f.name) != default_of(f):
            flag = flag_of(f) or f.name
            owners = " / ".join(only)
            raise ValueError(f"{flag} is a setting of the {owners} {what}; the {chosen} {what} does not use it: drop {flag}"
                             + (f" or add {hint.format(owner=only[0])}" if hint else ""))


def given_names(args: argparse.Namespace) -> set[str]:
    """The settings a command line gave (argparse leaves the others None, see :func:`add_arguments`)."""
    return {name for name, value in vars(args).items() if value is not None}


# ---------------------------------------------------------------------------------------------------- argparse
def add_arguments(parser_or_group, cls) -> None:
    """One argparse option per field of ``cls`` that has a flag. Every argparse default is None ("not given"), so the
    dataclass default stays the one source (shown in the help); ``parser.set_defaults`` can still override it."""
    for f in dataclasses.fields(cls):
        flag = flag_of(f)
        if not flag:
            continue
        kw = dict(f.metadata.get("cli", {}))
        default = default_of(f)
        if "type" not in kw and "action" not in kw and not f.metadata.get("parse") and isinstance(default, (int, float)) \
                and not isinstance(default, bool):
            kw["type"] = type(default)
        help_text = f.metadata.get("help", "")
        if default not in (None, [], {}, ()) and kw.get("action") != "store_true":
            help_text += f" (default {default if not isinstance(default, float) or math.isfinite(default) else 'inf'})"
        parser_or_group.add_argument(flag, *f.metadata.get("aliases", ()), dest=f.name, default=None, help=help_text, **kw)
        for extra, extra_kw in f.metadata.get("extra_flags", ()):
            parser_or_group.add_argument(extra, dest=f.name, default=None, **extra_kw)


def from_args(cls, args: argparse.Namespace, **overrides):
    """Build ``cls`` from parsed arguments (missing or None -> the field's default), converting text with ``parse``."""
    values = {}
    for f in dataclasses.fields(cls):
        if f.name in overrides or not flag_of(f):
            continue
        v = getattr(args, f.name, None)
        if v is None:
            continue
        parse = f.metadata.get("parse")
        if parse is not None:
            v = parse(v)  # (a flag with nargs passes its whole list)
        values[f.name] = v
    return cls(**(values | overrides))


def from_dict(cls, d: dict, *, where: str = "settings"):
    """``cls(**d)`` that refuses unknown keys (a saved run written by another version says so instead of dropping them)."""
    if not isinstance(d, dict):
        raise ValueError(f"{where} must be a JSON object, got {type(d).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"{where} has unknown key(s) {', '.join(unknown)} (written by another find_rl version?); "
                         f"known: {', '.join(sorted(names))}")
    return cls(**d)
