"""The ``laurel`` command line: thin commands that parse arguments and call one function each.

Heavy modules (TensorFlow, Qt, the servers) are imported inside the commands, never at import time.
"""

from __future__ import annotations

import typer

from dicom_node.cli.common import ConfigOption, configure_logging, load_config

__all__ = ["ConfigOption", "app", "configure_logging", "load_config", "main"]

app = typer.Typer(
    name="laurel",
    help="Laurel: AI muscle segmentation of MR studies routed from the PACS, reviewed by a person, "
    "learning continuously and federated across hospitals.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _register() -> None:
    """Attach the command groups of the other packages (their modules import nothing heavy)."""
    from dicom_node.cli import node_commands, review_commands
    from federation.cli import app as federation_app
    from models.cli import model_app, phantom
    from review_station.cli import review

    node_commands.register(app)
    review_commands.register(app, model_app)
    app.add_typer(
        model_app, name="model", help="segmentation models: list, show, train, create, evaluate, install, pin, rollback"
    )
    app.add_typer(federation_app, name="federation", help="the federation server and its sites")
    app.command("phantom", help="write a SYNTHETIC MR phantom series with ground-truth labels")(phantom)
    app.command("review", help="open the review station")(review)
    try:
        from dicom_node.demo import demo
    except ImportError:  # pragma: no cover - the demo lands with its issue
        return
    app.command("demo", help="the whole loop on embedded defaults")(demo)


def main() -> None:
    """Console-script entry point: errors a sysadmin can fix are one line and a non-zero exit, no traceback."""
    from dicom_node.core.startup import explain

    _register()
    try:
        app()
    except Exception as exc:
        message = explain(exc)
        if message is None:
            raise
        typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
        raise SystemExit(1) from None
