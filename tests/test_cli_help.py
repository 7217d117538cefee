"""`vfusion3d --help` is instant: neither the group's nor any subcommand's help imports the ML stack, and every
option of every subcommand says what it does."""

from __future__ import annotations

import json
import subprocess
import sys

import click
import pytest

from vfusion3d_core.cli import main

HEAVY = ("torch", "torchvision", "diffusers", "transformers", "dagster", "mlflow", "webdataset", "trimesh")

# runs the console entry point's group in a fresh interpreter, then reports which heavy packages got imported
PROBE = """
import json, sys
from vfusion3d_core.cli import main
try:
    main(args=json.loads(sys.argv[1]), prog_name="vfusion3d")
except SystemExit as exit_:
    code = exit_.code
print(json.dumps({"code": code, "heavy": [m for m in json.loads(sys.argv[2]) if m in sys.modules]}))
"""


def subcommands() -> list[str]:
    return sorted(main.commands)


@pytest.mark.parametrize("args", [["--help"], ["-h"]] + [[name, "--help"] for name in subcommands()],
                         ids=lambda args: " ".join(args))
def test_help_imports_no_ml_stack(args):
    out = subprocess.run([sys.executable, "-c", PROBE, json.dumps(args), json.dumps(HEAVY)],
                         capture_output=True, text=True, timeout=300, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["code"] == 0, out.stdout
    assert result["heavy"] == [], f"`vfusion3d {' '.join(args)}` imported {result['heavy']}"


def test_the_group_lists_every_subcommand():
    assert {"generate", "label", "audit"} <= set(subcommands())


@pytest.mark.parametrize("name", subcommands())
def test_every_option_and_argument_is_documented(name):
    command = main.commands[name]
    assert (command.help or "").strip(), f"{name} has no docstring"
    for param in command.params:
        if isinstance(param, click.Option):
            assert (param.help or "").strip(), f"vfusion3d {name} {param.opts[0]} has no help text"
        else:  # click arguments carry no help: the command's docstring must name them (TARGET, IMAGE...)
            metavar = param.name.upper().rstrip("S") if param.nargs == -1 else param.name.upper()
            assert metavar in command.help, f"vfusion3d {name}: the help does not explain {param.name.upper()}"
