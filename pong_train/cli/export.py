"""`pong-train export`: the trained policy alone, as an ONNX or TorchScript file."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("export")
@click.argument("target", required=False, type=click.Path(path_type=Path))
@click.option("--checkpoint", "choice", metavar="best|latest|PATH",
              help="Which checkpoint of the run, as for `evaluate` [default: its best, else its latest].")
@click.option("--format", "fmt", type=click.Choice(["onnx", "torchscript"]),
              help="File format [default: by the file's suffix, .pt torchscript, else onnx].")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path),
              help="The file to write (policy.onnx, policy.pt).")
def export(target: Path | None, choice: str | None, fmt: str | None, output: Path) -> None:
    """Write a run's policy (the network from uint8 frames to action logits) to a file that onnxruntime or plain
    torch runs without Ray or RLlib, with what it needs to be used stored inside; `pong-train evaluate FILE` plays
    it."""
    from pong_train.export import export_policy

    card = export_policy(target, choice, fmt, output)
    shape = ", ".join(map(str, card.observation_shape))
    click.echo(f"wrote {output} ({card.format}, from {card.checkpoint}): {card.input_name} uint8 [batch, {shape}] -> "
               f"{card.output_name} [batch, {len(card.action_meanings)}]")
