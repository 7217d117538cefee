"""`vfusion3d audit`: print the data that produced a checkpoint (or any artifact) and re-verify it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from vfusion3d_core.data.artifacts import default_tracking_uri
from vfusion3d_core.data.audit import LineageAuditor, artifact_root_of, audit_json, find_version_dir, render_tree
from vfusion3d_core.data.latest_ref import LatestRefError, is_latest_ref, resolve_latest
from vfusion3d_core.data.manifest import MANIFEST_NAME, Manifest, ManifestError
from vfusion3d_core.redact import redact_text


def model_version(uri: str, tracking_uri: str):
    """The registered model version a ``models:/`` URI names: ``models:/NAME/VERSION``, ``models:/NAME/latest``
    (the newest version) or ``models:/NAME@ALIAS`` (e.g. ``@champion``, set by eval_metrics)."""
    import mlflow

    rest = uri[len("models:/"):]
    name, alias = rest.rsplit("@", 1) if "@" in rest and "/" not in rest else (rest, None)
    parts = [name] if alias is not None else name.split("/")
    if not all(parts) or (alias is None and len(parts) != 2) or alias == "":
        raise click.BadParameter(f"expected models:/NAME/VERSION, models:/NAME/latest or models:/NAME@ALIAS, "
                                 f"got {uri!r}")
    client = mlflow.MlflowClient(tracking_uri)
    try:
        if alias is not None:
            return client.get_model_version_by_alias(name, alias)
        if parts[1].lower() == "latest":
            versions = client.search_model_versions(f"name = '{parts[0]}'")
            if not versions:
                raise click.ClickException(f"{uri}: model {parts[0]} has no version")
            return max(versions, key=lambda mv: int(mv.version))
        return client.get_model_version(*parts)
    except mlflow.exceptions.MlflowException as exc:
        # the tracking URI (and MLflow's message, which repeats it) may hold a password: never print it
        raise click.ClickException(redact_text(f"{uri}: not found in {tracking_uri}: {exc.message}")) from exc


def resolve_registered_model(uri: str, tracking_uri: str) -> tuple[str, str]:
    """``models:/NAME/VERSION`` (or ``/latest``, ``@ALIAS``) -> (committed artifact directory or s3:// URL,
    manifest digest) from the version's tags."""
    mv = model_version(uri, tracking_uri)
    path, digest = mv.tags.get("vfusion3d.artifact_path"), mv.tags.get("vfusion3d.digest")
    if not path or not digest:
        raise click.ClickException(f"{uri} was not registered by vfusion3d (no vfusion3d.artifact_path tag)")
    return path, digest


def audit_s3(url: str):
    """Audit a version on an S3 artifact root, ``s3://BUCKET/PREFIX/ASSET[/PARTITION]/versions/<v>[/...]``:
    the lineage tree's versions are mirrored as they are into a temporary directory and verified there;
    reported paths are the s3:// URLs. The S3 endpoint and region come from VFUSION3D_S3_ENDPOINT_URL /
    VFUSION3D_S3_REGION, credentials from the environment."""
    import tempfile

    from vfusion3d_core.data.s3_store import S3ArtifactStore, client_for, split_url

    bucket, key = split_url(url)
    parts = key.strip("/").split("/")
    if "versions" not in parts[:-1]:
        raise ManifestError(f"{url} is not inside a committed artifact version (no versions/<digest>)")
    at = len(parts) - 1 - parts[::-1].index("versions")
    if at + 1 >= len(parts):
        raise ManifestError(f"{url} names no version")
    owner, version = parts[:at], parts[at + 1]
    client = client_for(bucket)
    manifest_key = "/".join([*owner, "versions", version, MANIFEST_NAME])
    try:
        data = client.get_object(Bucket=bucket, Key=manifest_key)["Body"].read()
    except Exception as exc:
        raise ManifestError(f"s3://{bucket}/{manifest_key}: no manifest ({exc})") from exc
    asset = Manifest.from_json(data, f"s3://{bucket}/{manifest_key}").asset
    if owner[-1:] == [asset]:
        prefix = owner[:-1]
    elif owner[-2:-1] == [asset]:
        prefix = owner[:-2]
    else:
        raise ManifestError(f"{url} is not laid out as PREFIX/{asset}[/PARTITION]/versions/<digest>")
    with tempfile.TemporaryDirectory(prefix="vfusion3d-audit-") as tmp_dir:
        tmp = str(Path(tmp_dir).resolve())
        remote = S3ArtifactStore(client, bucket, "/".join(prefix), tmp)
        version_dir = Path(tmp, *owner[len(prefix):], "versions", version)
        auditor = LineageAuditor(tmp, remote=remote)
        auditor._fetch(version_dir)
        tree = auditor.audit_dir(version_dir)
        base = remote.url
        for node in tree.walk():  # report where the data lives, not the temporary mirror
            node.path = node.path.replace(tmp, base, 1) if node.path else node.path
            node.problems = [p.replace(tmp, base) for p in node.problems]
    return tree


@click.command()
@click.argument("target")
@click.option("--json", "as_json", is_flag=True, help="Print the tree as JSON.")
@click.option("--artifact-root", default=None,
              help="Artifact root (default: derived from TARGET's path; for models:/ URIs and latest: references "
                   "$VFUSION3D_ARTIFACT_ROOT or ./artifacts).")
@click.option("--tracking-uri", default=None,
              help="MLflow tracking URI for models:/ targets (default: $MLFLOW_TRACKING_URI or the sqlite store "
                   "under the artifact root).")
def audit(target: str, as_json: bool, artifact_root: str | None, tracking_uri: str | None) -> None:
    """Print the tree of data that produced TARGET, re-verifying every digest.

    TARGET is a committed artifact directory (e.g. artifacts/lrm_finetuned/versions/<digest> or its
    model/ folder), the same on an S3 artifact root (s3://BUCKET/PREFIX/lrm_finetuned/versions/<digest>),
    a registered model (models:/NAME/VERSION, models:/NAME/latest or models:/NAME@ALIAS, e.g.
    models:/lrm_finetuned@champion), or latest:ASSET[/PARTITION], the current version of an asset under
    --artifact-root ($VFUSION3D_ARTIFACT_ROOT or ./artifacts), e.g. latest:lrm_finetuned. Exits 1 naming every
    changed or missing artifact.
    """
    expected = None
    if target.startswith("models:/"):
        root = artifact_root or os.environ.get("VFUSION3D_ARTIFACT_ROOT", "artifacts")
        uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(root)
        path, expected = resolve_registered_model(target, uri)
    elif is_latest_ref(target):
        try:
            path = str(resolve_latest(target, artifact_root))
        except LatestRefError as exc:
            raise click.ClickException(str(exc)) from exc
    else:
        path = target
    try:
        if str(path).startswith("s3://"):
            tree = audit_s3(str(path))
        else:
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
