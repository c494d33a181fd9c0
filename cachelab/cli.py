"""The ``cachelab`` command (click)."""

from __future__ import annotations

import sys

import click
import yaml
from rich.console import Console
from rich.table import Table

import cachelab
from cachelab.describe import describe_config
from cachelab.errors import CachelabError

console = Console(width=160)


def parse_params(items: tuple[str, ...]) -> dict:
    """``("window.start=0.3", "interval=3")`` -> ``{"window": {"start": 0.3}, "interval": 3}`` (YAML values)."""
    params: dict = {}
    for item in items:
        if "=" not in item:
            raise click.BadParameter(f"{item!r} is not of the form key=value", param_hint="--param")
        key, raw = item.split("=", 1)
        if not key:
            raise click.BadParameter(f"{item!r} has an empty key", param_hint="--param")
        value = yaml.safe_load(raw) if raw else ""
        node = params
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise click.BadParameter(f"{key!r} sets a field inside a value that is not a mapping", param_hint="--param")
        node[parts[-1]] = value
    return params


class _Group(click.Group):
    """Turns cachelab's own errors into one clear line instead of a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except CachelabError as exc:
            raise click.ClickException(str(exc)) from None


@click.group(cls=_Group)
@click.version_option(cachelab.__version__, prog_name="cachelab")
def main() -> None:
    """cachelab: cache policies that make diffusion transformers generate faster without retraining."""


@main.command()
@click.argument("pattern", default="*")
def policies(pattern: str) -> None:
    """List registered policies with every parameter, its default, allowed range and meaning."""
    names = cachelab.list_policies(pattern)
    if not names:
        raise click.ClickException(f"no policy matches {pattern!r}; known: {', '.join(cachelab.list_policies())}")
    for name in names:
        cls = cachelab.policy_class(name)
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        table = Table(title=f"[bold]{name}[/bold] — {doc}", title_justify="left", show_lines=False)
        for column in ("parameter", "type", "default", "allowed", "meaning"):
            table.add_column(column, overflow="fold")
        for row in describe_config(cls.Config):
            table.add_row(row.name, row.type, repr(row.default), row.allowed, row.meaning)
        console.print(table)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
