"""`vfusion3d` command line: image -> 3D, data tools and lineage audit."""

from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """VFusion3D: learn a 3D generator from a video diffusion model."""


from vfusion3d_core.lrm.cli import generate  # noqa: E402  (subcommands register after the group exists)

main.add_command(generate)

from vfusion3d_core.filtering.label_cli import label  # noqa: E402

main.add_command(label)

from vfusion3d_core.data.audit_cli import audit  # noqa: E402

main.add_command(audit)


if __name__ == "__main__":
    main()
