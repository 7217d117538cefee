"""`vfusion3d audit`: print the data that produced a checkpoint (or any artifact) and re-verify it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from vfusion3d_core.data.audit import LineageAuditor, artifact_root_of, audit_json, find_version_dir, render_tree
from vfusion3d_core.data.manifest import MANIFEST_NAME, Manifest, ManifestError


def default_tracking_uri(artifact_root: str | Path) -> str:
    """The pipeline's MLflow store when MLFLOW_TRACKING_URI is unset: sqlite under the artifact root."""
    return f"sqlite:///{os.path.abspath(os.path.join(artifact_root, 'mlflow.db'))}"


def resolve_registered_model(uri: str, tracking_uri: str) -> tuple[Path, str]:
    """``models:/NAME/VERSION`` -> (committed artifact directory, manifest digest) from the version's tags."""
    import mlflow

    parts = uri[len("models:/"):].split("/")
    if len(parts) != 2 or not all(parts):
        raise click.BadParameter(f"expected models:/NAME/VERSION, got {uri!r}")
    client = mlflow.MlflowClient(tracking_uri)
    try:
        mv = client.get_model_version(*parts)
    except mlflow.exceptions.MlflowException as exc:
        raise click.ClickException(f"{uri}: not found in {tracking_uri}: {exc.message}") from exc
    path, digest = mv.tags.get("vfusion3d.artifact_path"), mv.tags.get("vfusion3d.digest")
    if not path or not digest:
        raise click.ClickException(f"{uri} was not registered by vfusion3d (no vfusion3d.artifact_path tag)")
    return Path(path), digest


@click.command()
@click.argument("target")
@click.option("--json", "as_json", is_flag=True, help="Print the tree as JSON.")
@click.option("--artifact-root", default=None,
              help="Artifact root (default: derived from TARGET's path; for models:/ URIs "
                   "$VFUSION3D_ARTIFACT_ROOT or ./artifacts).")
@click.option("--tracking-uri", default=None,
              help="MLflow tracking URI for models:/ targets (default: $MLFLOW_TRACKING_URI or the sqlite store "
                   "under the artifact root).")
def audit(target: str, as_json: bool, artifact_root: str | None, tracking_uri: str | None) -> None:
    """Print the tree of data that produced TARGET, re-verifying every digest.

    TARGET is a committed artifact directory (e.g. artifacts/lrm_finetuned/versions/<digest> or its
    model/ folder) or a registered model, models:/NAME/VERSION. Exits 1 naming every changed or
    missing artifact.
    """
    expected = None
    if target.startswith("models:/"):
        root = artifact_root or os.environ.get("VFUSION3D_ARTIFACT_ROOT", "artifacts")
        uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(root)
        path, expected = resolve_registered_model(target, uri)
    else:
        path = Path(target)
    try:
        version_dir = find_version_dir(path)
        root_path = Path(artifact_root) if artifact_root else artifact_root_of(
            version_dir, Manifest.read(version_dir / MANIFEST_NAME))
        tree = LineageAuditor(root_path).audit_dir(version_dir)
    except ManifestError as exc:
        raise click.ClickException(str(exc)) from exc
    failures = tree.failures()
    if expected is not None and tree.digest != expected:
        failures.insert(0, f"CHANGED: {target} was registered with digest {expected[:16]}, the artifact now has "
                           f"{tree.digest[:16]}")
    click.echo(audit_json(tree) if as_json else render_tree(tree))
    if failures:
        click.echo("\naudit FAILED:\n" + "\n".join(failures), err=True)
        sys.exit(1)
    if not as_json:
        click.echo(f"\naudit ok: {sum(1 for n in tree.walk() if not n.seen_before)} artifacts verified")
