"""What several commands share: their parser preamble, flag groups and argparse types.

    p = command(sub, "eval", __doc__)       # help line from COMMANDS; defaults shown
    add_sae_dir(p); add_hook_args(p)        # SAE_DIR; --layer --hook --device
    sae, device = open_sae(args)            # the SAE those flags name, on the device

Flags from a config dataclass: one `--flag` per field, its default, its type or choices, and its
docstring as the help, so a command's options cannot drift from its config:

    add_config_arguments(parser, HarvestConfig, flags={"layers": "--layer"})
    cfg = config_from_args(HarvestConfig, args, "harvest")   # validated, one-line ConfigError

Nothing here imports torch: `sae-lab CMD --help` stays fast.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Literal, TypeVar, Union, get_args, get_origin

from sae_lab.config import field_docs, parse

if TYPE_CHECKING:
    from sae_lab.sae.base import SAE

T = TypeVar("T")
SAE_DIR_HELP = ("SAE directory (sae_lab, SAELens or sparsify layout) or hf://REPO_ID[/PATH][@REVISION]"
                " on the Hugging Face Hub")
SAE_ARGS = ("sae_dir", "sae")  # the attributes that name one SAE (positional SAE_DIR, steer --sae)


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse `type=` for integers >= minimum: bad values become a one-line usage error."""

    def check(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    check.__name__ = f"int >= {minimum}"
    return check


def checked(parse: Callable[[str], T]) -> Callable[[str], T]:
    """An argparse `type=` from a function that raises ValueError on bad text: its message
    becomes the usage error."""

    def check(text: str) -> T:
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    check.__name__ = parse.__name__
    return check


class DefaultsFormatter(argparse.HelpFormatter):
    """Help that shows each option's default, unless it is None/False or the text names it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if ("%(default)" in text or "default" in text or not action.option_strings
                or action.default in (None, False, argparse.SUPPRESS)):
            return text
        return text + " (default: %(default)s)"


def command(sub: argparse._SubParsersAction, name: str, description: str | None,
            formatter_class: type[argparse.HelpFormatter] = DefaultsFormatter, **kw: Any
            ) -> argparse.ArgumentParser:
    """A command's parser: its one-line help from sae_lab.cli.COMMANDS, its description (the
    command module's docstring), and help that shows the defaults."""
    from sae_lab.cli import COMMANDS

    text = next(t for n, t, _ in COMMANDS if n == name)
    return sub.add_parser(name, help=text, description=description,
                          formatter_class=formatter_class, **kw)


def add_sae_dir(p: argparse.ArgumentParser, shards: bool = False) -> None:
    """The positional SAE_DIR of the commands that read one SAE; with `shards`, also the
    required --shards they read it on."""
    p.add_argument("sae_dir", help=SAE_DIR_HELP)
    if shards:
        p.add_argument("--shards", required=True, help="activation shards (with token ids)")


def add_device(p: argparse.ArgumentParser, help: str = "auto, cpu, cuda, cuda:1, ...") -> None:
    p.add_argument("--device", default="auto", help=help)


def add_hook_args(p: argparse.ArgumentParser) -> None:
    """--layer, --hook and --device, shared by the commands that run the model at the SAE's hook."""
    p.add_argument("--layer", type=int, help="hook layer (default: the SAE's)")
    p.add_argument("--hook", help="hook: resid_post, mlp_out or attn_out (default: the SAE's)")
    add_device(p)


def resolve_sae_args(args: argparse.Namespace) -> None:
    """Replace an hf:// spec or a SAELens / sparsify folder in args.sae_dir / args.sae by the
    sae_lab SAE directory it resolves to (downloaded, converted), so handlers read a plain one."""
    for name in SAE_ARGS:
        value = getattr(args, name, None)
        if isinstance(value, str) and value:
            from sae_lab.share.hub import resolve_sae_dir

            setattr(args, name, str(resolve_sae_dir(value)))


def open_sae(args: argparse.Namespace, sae_dir: str | None = None) -> tuple[SAE, str]:
    """(the SAE in args.sae_dir, in eval mode, on args.device resolved) for a handler."""
    from sae_lab.lm.attach import load_sae_dir, resolve_device

    device = resolve_device(args.device)
    return load_sae_dir(sae_dir or args.sae_dir, device), device


def open_lm(args: argparse.Namespace, sae_dir: str | None = None
            ) -> tuple[SAE, str, int, str, str]:
    """(sae, device, layer, hook, model name) named by SAE_DIR, --device, --layer, --hook and
    --model: what the commands that run the model at the SAE's hook start from."""
    from sae_lab.lm.attach import hook_point, model_name

    sae, device = open_sae(args, sae_dir)
    layer, hook = hook_point(sae, args.layer, args.hook)
    return sae, device, layer, hook, model_name(sae, args.model)


def add_config_arguments(
    parser: argparse.ArgumentParser,
    cls: type,
    flags: dict[str, str] | None = None,
    skip: Iterable[str] = (),
    metavars: dict[str, str] | None = None,
) -> None:
    """Add one option per field of `cls`: `--field-name` (or `flags[name]`), required when the
    field has no default; bools get `--x / --no-x`; Literal fields get their choices; tuples take
    one or more values; list fields repeat the flag (`--set a=1 --set b=2`)."""
    flags, metavars = flags or {}, metavars or {}
    docs = field_docs(cls)
    infos = getattr(cls, "__pydantic_fields__", {})
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        tp = infos[f.name].annotation if f.name in infos else f.type
        flag = flags.get(f.name, "--" + f.name.replace("_", "-"))
        kw: dict[str, Any] = {"dest": f.name, "help": docs.get(f.name, ""), **_kind(tp)}
        if f.name in metavars:
            kw["metavar"] = metavars[f.name]
        default = _default(f)
        if default is dataclasses.MISSING:
            kw["required"] = True
        elif kw.get("action") == "append":
            kw["help"] += " (repeatable)"  # default None: config_from_args keeps the field's
        else:
            kw["default"] = list(default) if isinstance(default, tuple) else default
        parser.add_argument(flag, **kw)


def config_from_args(cls: type, args: argparse.Namespace, where: str = "") -> Any:
    """The config named by the parsed flags (fields only), validated."""
    names = {f.name for f in dataclasses.fields(cls)}
    given = {k: v for k, v in vars(args).items() if k in names}
    return parse(cls, {k: v for k, v in given.items() if v is not None or _optional(cls, k)},
                 where)


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _kind(tp: Any) -> dict[str, Any]:
    """argparse keywords for a field type: type=, choices=, nargs=, action=."""
    args = get_args(tp)
    if get_origin(tp) in (Union, types.UnionType):  # X | None: the flag takes an X
        return _kind(next(a for a in args if a is not type(None)))
    if tp is bool:
        return {"action": argparse.BooleanOptionalAction}
    if get_origin(tp) is Literal:
        return {"choices": args, "type": type(args[0])}
    if get_origin(tp) is list:
        return {**_kind(args[0]), "action": "append"}
    if get_origin(tp) is tuple:
        return {**_kind(args[0]), "nargs": "+"}
    if hasattr(tp, "__metadata__"):  # Annotated[int, Field(...)]
        return _kind(args[0])
    return {"type": tp} if tp in (int, float) else {}


def _optional(cls: type, name: str) -> bool:
    """Whether None is a value of the field (else a None from argparse means "not given")."""
    tp = cls.__pydantic_fields__[name].annotation
    return get_origin(tp) in (Union, types.UnionType) and type(None) in get_args(tp)


__all__ = ["DefaultsFormatter", "add_config_arguments", "checked", "add_device", "add_hook_args",
           "add_sae_dir", "command", "config_from_args", "int_at_least", "open_lm", "open_sae",
           "resolve_sae_args"]
