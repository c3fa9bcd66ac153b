"""`pong-train backends`: the installed backends, and the plugins that could not be loaded."""

from __future__ import annotations

import click


@click.command("backends")
@click.pass_obj
def backends(plugins) -> None:
    """List the installed backends (name, version, distribution) and any broken plugin."""
    rows = [("NAME", "VERSION", "DISTRIBUTION", "DESCRIPTION")]
    for name, (backend, plugin_name) in sorted(plugins.backends().items()):
        dist, version = plugins.distribution(plugin_name)
        rows.append((name, version, dist, backend.description))
    for broken in plugins.broken:
        rows.append((broken.name, broken.version, broken.dist, f"BROKEN: {broken.problem}"))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[3])
