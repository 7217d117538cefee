"""``python -m vfusion3d_core.ablation export``: copy the latest committed ablation report into docs/."""

from __future__ import annotations

import argparse
import os

from vfusion3d_core.ablation.report import export_report
from vfusion3d_core.data import ArtifactStore


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m vfusion3d_core.ablation",
                                     description="Tools of the data-source ablation (docs/ablation.md).")
    sub = parser.add_subparsers(dest="command", required=True)
    export = sub.add_parser("export", help="copy the latest ablation_report version into the docs folder")
    export.add_argument("--artifact-root", default=os.environ.get("VFUSION3D_ARTIFACT_ROOT", "artifacts"),
                        help="the artifact root the ablation job wrote to (default: $VFUSION3D_ARTIFACT_ROOT or "
                             "./artifacts)")
    export.add_argument("--docs", default="docs", help="the docs folder (default: ./docs)")
    args = parser.parse_args(argv)
    version = ArtifactStore(args.artifact_root).latest("ablation_report")
    if version is None:
        parser.error(f"no ablation_report version under {args.artifact_root}: run `make ablation` first")
    for path in export_report(version.path, args.docs):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
