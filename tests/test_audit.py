"""`vfusion3d audit` on a hand-built lineage: partitions, a file input (prompt shard), an external labels
file; edited manifests, changed files, missing versions and digests that no longer match are all named."""

import json

from click.testing import CliRunner

from vfusion3d_core.cli import main
from vfusion3d_core.data import ArtifactStore, Manifest, file_entries
from vfusion3d_core.data.audit import LineageAuditor, render_tree


def publish(store: ArtifactStore, asset: str, files: dict[str, str], inputs: dict[str, str] | None = None,
            partition: str | None = None, config: dict | None = None):
    with store.staging(asset, partition) as d:
        for name, text in files.items():
            (d / name).parent.mkdir(parents=True, exist_ok=True)
            (d / name).write_text(text)
        manifest = Manifest(asset, file_entries(d, list(files)), {"files": len(files)}, config or {},
                            inputs=inputs or {})
        return store.commit(d, manifest, asset, partition)


def lineage(tmp_path):
    store = ArtifactStore(tmp_path / "root")
    prompts = publish(store, "prompt_set", {"shards/shard-000000.parquet": "p0", "shards/shard-000001.parquet": "p1"})
    labels = tmp_path / "labels.csv"
    labels.write_text("video_key,label\n")
    from vfusion3d_core.data import sha256_file

    model = publish(store, "video_model", {"model.bin": "weights"})
    synth = {k: publish(store, "synthetic_videos", {"a.tar": f"videos {k}"}, partition=k,
                        inputs={"video_model": model.digest,
                                f"prompt_set/{k}": prompts.manifest.file(f"shards/{k}.parquet").sha256})
             for k in ("shard-000000", "shard-000001")}
    quality = publish(store, "quality_models", {"svm.joblib": "svm"}, inputs={"labels_csv": sha256_file(labels)},
                      config={"labels_csv": str(labels)})
    filtered = {k: publish(store, "filtered", {"kept.tar": f"kept {k}"}, partition=k,
                           inputs={"synthetic_videos/" + k: v.digest, "quality_models": quality.digest})
                for k, v in synth.items()}
    ckpt = publish(store, "lrm", {"model/model.safetensors": "ckpt"},
                   inputs={f"filtered/{k}": v.digest for k, v in filtered.items()} | {"official:w.bin": "ab" * 32})
    return store, ckpt, synth, labels


def test_clean_lineage_lists_every_input_once(tmp_path) -> None:
    store, ckpt, _, _ = lineage(tmp_path)
    tree = LineageAuditor(store.root).audit_dir(ckpt.path / "model")
    assert tree.failures() == []
    verified = [n.name for n in tree.walk() if not n.seen_before]
    assert sorted(verified) == sorted(["lrm", "filtered/shard-000000", "filtered/shard-000001", "quality_models",
                                       "labels_csv", "synthetic_videos/shard-000000", "synthetic_videos/shard-000001",
                                       "video_model", "prompt_set/shard-000000", "prompt_set/shard-000001",
                                       "official:w.bin"])
    kinds = {n.name: (n.kind, n.status) for n in tree.walk()}
    assert kinds["prompt_set/shard-000001"] == ("file", "ok") and kinds["labels_csv"] == ("external", "ok")
    assert kinds["official:w.bin"] == ("external", "external")
    assert "see above" in render_tree(tree)  # quality_models and video_model are reached twice


def test_cli_names_changed_files_edited_manifests_and_missing_versions(tmp_path) -> None:
    store, ckpt, synth, labels = lineage(tmp_path)
    runner = CliRunner()
    ok = runner.invoke(main, ["audit", str(ckpt.path), "--json"])
    assert ok.exit_code == 0 and json.loads(ok.output)["ok"]

    (synth["shard-000001"].path / "a.tar").write_text("videos shard-000001!")  # one file changed
    labels.write_text("video_key,label\nx,good\n")  # the external labels file changed
    prompt_file = store.latest("prompt_set").path / "shards/shard-000000.parquet"
    prompt_file.unlink()  # a prompt shard deleted
    bad = runner.invoke(main, ["audit", str(ckpt.path)])
    assert bad.exit_code == 1
    assert "CHANGED: synthetic_videos/shard-000001" in bad.output and "a.tar" in bad.output
    assert "CHANGED: labels_csv" in bad.output
    assert "MISSING: prompt_set/shard-000000" in bad.output
    assert "synthetic_videos/shard-000000 (" not in bad.output.split("audit FAILED")[1]

    # an edited manifest and a deleted version directory
    manifest = json.loads((synth["shard-000000"].path / "manifest.json").read_text())
    manifest["counts"]["files"] = 99
    (synth["shard-000000"].path / "manifest.json").write_text(json.dumps(manifest))
    import shutil

    shutil.rmtree(store.latest("video_model").path)
    worse = runner.invoke(main, ["audit", str(ckpt.path), "--json"])
    assert worse.exit_code == 1
    report = json.loads(worse.output[:worse.output.rindex("}") + 1])
    assert any(f.startswith("CHANGED: synthetic_videos/shard-000000") and "edited" in f for f in report["failures"])
    assert any(f.startswith("MISSING: video_model") for f in report["failures"])


def test_audit_refuses_a_path_outside_any_version(tmp_path) -> None:
    result = CliRunner().invoke(main, ["audit", str(tmp_path)])
    assert result.exit_code != 0 and "not inside a committed artifact version" in result.output
