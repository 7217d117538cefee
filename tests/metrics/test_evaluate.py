"""The eval_metrics step as a typed request (core) and through Dagster: a tiny CLIP folder, compute settings
recorded, and the small / paper gate naming the missing CLIP folder and LPIPS weights."""

import csv
import json

import dagster as dg
import numpy as np
import pytest
import torch
from clip_folders import write_processor_folder
from pipeline_utils import materialize_renders

from vfusion3d_core.compute import ComputeSettings
from vfusion3d_core.data import ArtifactStore, Manifest, file_entries
from vfusion3d_core.data.artifacts import default_tracking_uri
from vfusion3d_core.lrm import LRM
from vfusion3d_core.lrm.presets import get_preset
from vfusion3d_core.lrm.train.losses import build_lpips, lpips_backbone_path
from vfusion3d_core.metrics import ClipScorer, load_heldout_objects, score_checkpoint
from vfusion3d_core.metrics.evaluate import EvaluateRequest, run_evaluation
from vfusion3d_core.metrics.novel_views import METRICS
from vfusion3d_core.render.dataset import RenderDatasetConfig, render_dataset
from vfusion3d_pipeline.assets.evaluation import champion_checkpoint, eval_metrics
from vfusion3d_pipeline.assets.lrm import FINETUNED, MODEL_DIR, PRETRAINED, THREE_D_ONLY
from vfusion3d_pipeline.resources import ArtifactStoreResource, ComputeResource, MLflowResource, PresetResource
from vfusion3d_pipeline.tracking import local_artifact_location, mlflow_run


@pytest.fixture(scope="module")
def heldout(tmp_path_factory):
    d = tmp_path_factory.mktemp("renders")
    render_dataset(RenderDatasetConfig.preset("tiny", num_objects=2, num_heldout=2, num_views=4, resolution=32,
                                              seed=3), d)
    return sorted(str(p) for p in d.glob("heldout/*.tar"))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpts")
    out = {}
    for i, name in enumerate(["a", "b"]):
        torch.manual_seed(10 + i)
        LRM(get_preset("tiny")).save_pretrained(d / name)
        out[name] = str(d / name)
    return out


def test_evaluate_request_round_trips_and_checks_its_fields(tmp_path, checkpoints) -> None:
    req = EvaluateRequest({"untrained": None, **checkpoints}, ["h.tar"], str(tmp_path), untrained_config_from="a",
                          clip_path="/clip", compute=ComputeSettings("cpu", "bf16"))
    wire = json.loads(json.dumps(req.to_dict()))
    again = EvaluateRequest.from_dict(wire)
    assert again == req and list(again.checkpoints) == ["untrained", "a", "b"]
    assert isinstance(again.compute, ComputeSettings) and again.compute.precision == "bf16"
    with pytest.raises(ValueError, match="untrained_config_from"):
        EvaluateRequest({"untrained": None}, ["h.tar"], str(tmp_path))
    with pytest.raises(ValueError, match="held-out shards"):
        EvaluateRequest(checkpoints, [], str(tmp_path))


def test_scores_on_the_compute_device_match_a_direct_computation(heldout, checkpoints) -> None:
    """score_checkpoint with compute settings: predictions, then PSNR / LPIPS / CLIP-text on that device."""
    from vfusion3d_core.metrics import predict_novel_views, psnr
    from vfusion3d_core.metrics.image import lpips_distance

    compute = ComputeSettings("cpu", "fp32")
    model = LRM.from_pretrained(checkpoints["a"])
    objects = load_heldout_objects(heldout, 2, 2)
    torch.manual_seed(0)
    lpips_net = build_lpips("alex", random_backbone=True).eval()
    clip = ClipScorer.random(1, compute=compute)
    scores = score_checkpoint(model, objects, 32, lpips_net, clip, compute)
    assert [r["uid"] for r in scores.rows] == [o.uid for o in objects]
    for obj, row in zip(objects, scores.rows, strict=True):
        pred, target = predict_novel_views(model, obj, 32, compute), obj.targets(32)
        assert row["psnr"] == pytest.approx(psnr(pred, target).mean().item(), rel=1e-5)
        assert row["lpips"] == pytest.approx(lpips_distance(lpips_net, pred, target).mean().item(), rel=1e-4)
        text = clip.text_similarity(pred, [obj.caption] * len(pred)).mean().item()
        assert row["clip_text"] == pytest.approx(text, rel=1e-4, abs=1e-5)
        assert set(METRICS) <= set(row)


def test_run_evaluation_with_a_clip_folder(tmp_path, heldout, checkpoints) -> None:
    clip_dir = tmp_path / "clip"
    write_processor_folder(clip_dir, shortest_edge=32, crop=32)
    req = EvaluateRequest({"untrained": None, **checkpoints}, heldout, str(tmp_path / "out"), untrained_config_from="a",
                          max_objects=2, novel_views=2, render_size=32, turntable_frames=2, clip_path=str(clip_dir),
                          compute=ComputeSettings("cpu", "fp32"))
    logs: list[str] = []
    result = run_evaluation(EvaluateRequest.from_dict(req.to_dict()), log=logs.append)
    assert result.labels["clip"] == "clip" and "RANDOM" in result.labels["lpips"]
    assert list(result.means) == ["untrained", "a", "b"] and result.objects == 2
    assert all(-1 <= result.means[c]["clip_text"] <= 1 and result.means[c]["psnr"] > 0 for c in result.means)
    assert result.means["a"] != result.means["b"]  # different weights, different scores
    rows = list(csv.DictReader((tmp_path / "out/metrics.csv").open()))
    assert [r["checkpoint"] for r in rows] == ["untrained", "a", "b"]
    assert float(rows[1]["lpips"]) == pytest.approx(result.means["a"]["lpips"])
    assert all((tmp_path / "out" / f).is_file() for f in result.files)
    assert "on cpu" in logs[0]
    again = run_evaluation(req)  # seeded: the untrained architecture and metric models are the same
    assert again.means == result.means


# ---- through Dagster ----

def _resources(root, preset: str) -> dict:
    return {"artifacts": ArtifactStoreResource(root=str(root)), "preset": PresetResource(name=preset),
            "mlflow": MLflowResource(artifact_root=str(root)),
            "compute": ComputeResource(device="cpu", precision="fp32")}


def _commit_checkpoint(store: ArtifactStore, name: str, seed: int) -> str:
    """A committed LRM version without training (eval_metrics reads only its model folder and inputs), logged and
    registered as the LRM assets do; returns its LoggedModel id."""
    with store.staging(name) as d:
        torch.manual_seed(seed)
        LRM(get_preset("tiny")).save_pretrained(d / MODEL_DIR)
        files = sorted(p.relative_to(d).as_posix() for p in (d / MODEL_DIR).rglob("*") if p.is_file())
        version = store.commit(d, Manifest(name, file_entries(d, files), {}, {}), name)
    uri = default_tracking_uri(store.root)
    with mlflow_run(uri, "vfusion3d", name, {}, local_artifact_location(uri, str(store.root))) as run:
        model_id = run.log_lrm_model(version.path / MODEL_DIR)
        run.register_model(name, model_id, version)
    return model_id


def test_eval_metrics_asset_with_a_clip_folder_and_the_paper_gate(tmp_path) -> None:
    import mlflow

    root = tmp_path / "artifacts"
    instance = dg.DagsterInstance.ephemeral()
    # paper without CLIP folder / LPIPS weights: refused before anything is read, naming both
    if not lpips_backbone_path("alex").is_file():
        with pytest.raises(dg.Failure, match=r"clip_path is not set.*from_scratch.*LPIPS backbone .*alexnet"):
            dg.materialize([eval_metrics], instance=instance, resources=_resources(root, "paper"))
    else:
        with pytest.raises(dg.Failure, match=r"clip_path is not set"):
            dg.materialize([eval_metrics], instance=instance, resources=_resources(root, "paper"))
    with pytest.raises(dg.Failure, match=r"lpips_random_backbone=True at preset 'small' needs from_scratch"):
        dg.materialize([eval_metrics], instance=instance, resources=_resources(root, "small"),
                       run_config={"ops": {"eval_metrics": {"config": {"clip_path": str(tmp_path),
                                                                       "lpips_random_backbone": True}}}})

    materialize_renders(_resources(root, "tiny"), instance)
    store = ArtifactStore(root)
    model_ids = {name: _commit_checkpoint(store, name, i)
                 for i, name in enumerate([PRETRAINED, FINETUNED, THREE_D_ONLY])}
    clip_dir = tmp_path / "clip_folder"
    write_processor_folder(clip_dir, shortest_edge=32, crop=32)
    config = {"max_objects": 2, "novel_views": 2, "render_size": 32, "turntable_frames": 2, "clip_path": str(clip_dir)}
    result = dg.materialize([eval_metrics], instance=instance, resources=_resources(root, "tiny"),
                            run_config={"ops": {"eval_metrics": {"config": config}}})
    assert result.success
    meta = result.asset_materializations_for_node("eval_metrics")[0].metadata
    assert meta["clip_model"].value == "clip_folder" and "RANDOM backbone" in meta["lpips_backbone"].value
    assert meta["compute"].value["resolved_device"] == "cpu"
    version = store.latest("eval_metrics")
    assert version.manifest.config["compute"]["resolved_precision"] == "fp32"
    assert version.manifest.config["clip"] == "clip_folder"
    assert "Computed on cpu (fp32)" in (version.path / "ablation.md").read_text()
    run = mlflow.MlflowClient(default_tracking_uri(root)).get_run(meta["mlflow_run_id"].value)
    assert run.data.params["compute.resolved_device"] == "cpu" and run.data.params["clip"] == "clip_folder"
    assert set(run.data.metrics) >= {f"{c}.{m}" for c in ("untrained", PRETRAINED) for m in METRICS}
    # @champion: the registered version of the checkpoint with the best held-out LPIPS (ties: PSNR), on one model
    client = mlflow.MlflowClient(default_tracking_uri(root))
    means = json.loads((version.path / "metrics.json").read_text())["means"]
    best = champion_checkpoint(means)
    assert meta["champion"].value == f"models:/{best}/1"
    assert str(client.get_model_version_by_alias(best, "champion").version) == "1"
    assert [n for n in model_ids if client.get_registered_model(n).aliases] == [best]
    assert {m.model_id for m in run.inputs.model_inputs} == set(model_ids.values())  # the scored models
    linked = {m.key: m.value for m in client.get_logged_model(model_ids[best]).metrics}
    assert linked[f"{best}.lpips"] == means[best]["lpips"]

    # paper with the CLIP folder and from_scratch (no LPIPS weights here): runs, LPIPS labelled RANDOM
    scratch = dg.materialize([eval_metrics], instance=instance, resources=_resources(root, "paper"),
                             run_config={"ops": {"eval_metrics": {"config": {**config, "from_scratch": True}}}})
    assert scratch.success
    smeta = scratch.asset_materializations_for_node("eval_metrics")[0].metadata
    assert smeta["clip_model"].value == "clip_folder"
    if not lpips_backbone_path("alex").is_file():
        assert "RANDOM" in smeta["lpips_backbone"].value


# ---- held-out leakage: ids and captions ----

HELD = ["a dotted yellow torus under a checkered brown capsule", "a checkered white sphere"]


def _publish(store: ArtifactStore, asset: str, files: dict[str, bytes], inputs: dict[str, str] | None = None,
             partition: str | None = None, counts: dict | None = None):
    with store.staging(asset, partition) as d:
        for rel, data in files.items():
            (d / rel).parent.mkdir(parents=True, exist_ok=True)
            (d / rel).write_bytes(data)
        return store.commit(d, Manifest(asset, file_entries(d, sorted(files)), counts or {}, {}, inputs=inputs or {}),
                            asset, partition)


def _fake_renders(store: ArtifactStore, train: list[str]):
    rows = [("held-0", "heldout", HELD[0]), ("held-1", "heldout", HELD[1])]
    rows += [(f"train-{i}", "train", c) for i, c in enumerate(train)]
    text = "uid,split,caption,elevation_deg\n" + "".join(f'{u},{s},"{c}",10.0\n' for u, s, c in rows)
    return _publish(store, "renders_3d", {"objects.csv": text.encode()}, partition="objects-000000")


def _filtered(store: ArtifactStore, key: str, prompts: dict[str, tuple[str, bool]]):
    """A filtered_multiview_dataset partition: one posed sample per kept prompt (caption = prompt), scores.csv
    listing every video (rejected ones are not training data)."""
    import io

    from vfusion3d_core.cameras import orbit_cameras
    from vfusion3d_core.data import MultiviewSample, ShardWriter

    cams = orbit_cameras(2, elevation_deg=10.0)
    with store.staging("filtered_multiview_dataset", key) as d:
        with ShardWriter(d, 8) as writer:
            for vid, (prompt, kept) in prompts.items():
                if kept:
                    writer.write(MultiviewSample(vid, prompt, np.zeros((2, 8, 8, 4), np.uint8),
                                                 cams.c2w.numpy(), cams.intrinsics.numpy()))
        buf = io.StringIO("video_key,score,kept,elevation_deg,kept_by\n")
        buf.seek(0, 2)
        buf.writelines(f"{v},0.5,{int(k)},10.0,{'threshold' if k else ''}\n" for v, (_, k) in prompts.items())
        (d / "scores.csv").write_text(buf.getvalue())
        files = [p.relative_to(d).as_posix() for p in writer.shards] + ["scores.csv"]
        manifest = Manifest("filtered_multiview_dataset", file_entries(d, files),
                            {"kept": sum(k for _, k in prompts.values())}, {})
        return store.commit(d, manifest, "filtered_multiview_dataset", key)


def _graph(store: ArtifactStore, prompts: dict[str, tuple[str, bool]], train: list[str]) -> dict:
    """renders -> lrm_3d_only; filtered -> lrm_pretrained -> lrm_finetuned (+ renders): the checkpoints by name."""
    renders = _fake_renders(store, train)
    filtered = _filtered(store, "shard-000000", prompts)
    r_in = {"renders_3d/objects-000000": renders.digest}
    pre = _publish(store, PRETRAINED, {"model/x": b"1"}, {"filtered_multiview_dataset/shard-000000": filtered.digest})
    fine = _publish(store, FINETUNED, {"model/x": b"2"}, {PRETRAINED: pre.digest, **r_in})
    only = _publish(store, THREE_D_ONLY, {"model/x": b"3"}, r_in)
    return {"renders": renders, PRETRAINED: pre, FINETUNED: fine, THREE_D_ONLY: only}


@pytest.fixture(scope="module")
def embed():
    from vfusion3d_core.prompts import minilm_embedder

    return minilm_embedder()


def test_planted_caption_leaks_are_caught_and_described(tmp_path, embed) -> None:
    from vfusion3d_pipeline.assets.evaluation import eval_heldout_disjoint, heldout_leakage, training_sources

    store = ArtifactStore(tmp_path)
    # 3D train: an attribute swap of a held-out caption (near duplicate: reported, not failing); synthetic: clean
    # kept prompts, and a held-out caption among the *rejected* videos (not training data)
    train = ["a dotted brown torus under a checkered yellow capsule", "a glossy teal cylinder"]
    clean = {"p1": ("a red box", True), "p2": ("a metallic green cone", True), "p3": (HELD[1], False)}
    g = _graph(store, clean, train)
    ckpts = {n: g[n] for n in (PRETRAINED, FINETUNED, THREE_D_ONLY)}
    sources = training_sources(store, g[FINETUNED].manifest)
    synth = f"{PRETRAINED} <- filtered_multiview_dataset/shard-000000"
    assert sorted(sources[synth].captions) == ["a metallic green cone", "a red box"]
    assert sources[synth].uids == {"p1", "p2"} and sources["renders_3d/objects-000000"].kind == "3d"
    ok = heldout_leakage(store, [g["renders"]], ckpts, embed)
    assert not ok.leaked and not ok.uids
    text = ok.describe()
    assert text.startswith("Held-out objects are disjoint") and "reported, not failing" in text
    assert "a dotted brown torus under a checkered yellow capsule" in text

    # the check reads what an eval_metrics version recorded
    inputs = {"renders_3d/objects-000000": g["renders"].digest, **{n: v.digest for n, v in ckpts.items()}}
    _publish(store, "eval_metrics", {"metrics.json": b"{}"}, inputs)
    passed = eval_heldout_disjoint(dg.build_asset_check_context(), artifacts=ArtifactStoreResource(root=str(tmp_path)))
    assert passed.passed and passed.description.startswith("Held-out objects are disjoint")
    reported = passed.metadata["caption_near_duplicates_reported"].value
    assert reported[f"{FINETUNED} <- renders_3d/objects-000000"]["near"] == 1

    # a kept synthetic sample whose prompt is a held-out caption (exact, other case) / a near duplicate of one
    for prompt, kind in [(HELD[1].title(), "exact"), (HELD[1] + ".", "near duplicate")]:
        g = _graph(store, {**clean, "p4": (prompt, True)}, train)
        ckpts = {n: g[n] for n in (PRETRAINED, FINETUNED, THREE_D_ONLY)}
        leak = heldout_leakage(store, [g["renders"]], ckpts, embed)
        assert leak.leaked and not leak.uids
        failing = leak.failing().leaking()
        assert set(failing) == {synth, f"{FINETUNED} <- {synth}"}
        text = leak.describe()
        assert text.startswith("Held-out objects leak into training data") and kind in text and repr(prompt) in text
        _publish(store, "eval_metrics", {"metrics.json": b"{}"},
                 {"renders_3d/objects-000000": g["renders"].digest, **{n: v.digest for n, v in ckpts.items()}})
        result = eval_heldout_disjoint(dg.build_asset_check_context(),
                                       artifacts=ArtifactStoreResource(root=str(tmp_path)))
        assert not result.passed and repr(prompt) in result.description
        examples = result.metadata["caption_leaks"].value[synth]
        assert (examples["exact"], examples["near"]) == ((1, 0) if kind == "exact" else (0, 1))

    # an exact held-out caption among the 3D training captions fails too (ids differ)
    g = _graph(store, clean, [*train, HELD[0]])
    leak = heldout_leakage(store, [g["renders"]], {THREE_D_ONLY: g[THREE_D_ONLY]}, embed)
    assert leak.leaked and set(leak.failing().leaking()) == {f"{THREE_D_ONLY} <- renders_3d/objects-000000"}
    # ... and a held-out id, as before
    g = _graph(store, {**clean, "held-1": ("a blue ring", True)}, train)
    leak = heldout_leakage(store, [g["renders"]], {PRETRAINED: g[PRETRAINED]}, embed)
    assert leak.uids == {synth: ["held-1"]} and "1 held-out object id(s)" in leak.describe()


def test_eval_metrics_refuses_when_a_heldout_caption_was_a_prompt(tmp_path) -> None:
    """Real renders_3d partitions (ids disjoint by construction); the synthetic data behind lrm_pretrained holds a
    held-out object's caption as a prompt: eval_metrics refuses before evaluating, naming the prompt."""
    from vfusion3d_pipeline.assets.renders import committed_renders

    root = tmp_path / "artifacts"
    instance = dg.DagsterInstance.ephemeral()
    materialize_renders(_resources(root, "tiny"), instance)
    store = ArtifactStore(root)
    renders = committed_renders(store)
    held = [r["caption"] for r in renders.object_rows() if r["split"] == "heldout"]
    filtered = _filtered(store, "shard-000000", {"p1": ("a red box", True), "p2": (held[0], True)})
    pre = _publish(store, PRETRAINED, {"model/x": b"1"}, {"filtered_multiview_dataset/shard-000000": filtered.digest})
    _publish(store, FINETUNED, {"model/x": b"2"}, {PRETRAINED: pre.digest, **renders.inputs})
    _publish(store, THREE_D_ONLY, {"model/x": b"3"}, renders.inputs)
    with pytest.raises(dg.Failure, match="refusing to evaluate: Held-out objects leak into training data") as info:
        dg.materialize([eval_metrics], instance=instance, resources=_resources(root, "tiny"))
    assert repr(held[0]) in str(info.value) and "filtered_multiview_dataset/shard-000000" in str(info.value)
    assert store.latest("eval_metrics") is None
