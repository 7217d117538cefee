"""Real pretrained folders in their on-disk formats (tiny random StableVideoDiffusionPipeline and
StableDiffusionPipeline saved with save_pretrained, fp32 and fp16 variants) through the core and the assets;
small/paper refuse to start without them unless from_scratch."""

import json

import dagster as dg
import pytest
import torch
from diffusers import StableDiffusionPipeline, UNet2DConditionModel, UNetSpatioTemporalConditionModel
from pipeline_utils import materialize_renders
from pretrained_folders import IMAGE_EMBED, TEXT_WIDTH, sd_folder, svd_folder
from transformers import CLIPImageProcessor
from video_micro import MICRO, micro_config

from vfusion3d_core.data import ArtifactStore
from vfusion3d_core.data.video_sample import iter_video_samples
from vfusion3d_core.pretrained import MissingPretrainedError
from vfusion3d_core.video import OrbitVideoModel, is_temporal
from vfusion3d_core.video.config import VideoModelConfig
from vfusion3d_core.video.finetune import check_pretrained
from vfusion3d_core.video.text_encoder import FrozenTextEncoder
from vfusion3d_pipeline.assets.video import synthetic_videos, video_model
from vfusion3d_pipeline.resources import ArtifactStoreResource, ComputeResource, MLflowResource, PresetResource

PROMPTS = ["a red cube", "a tall green cylinder", "a small blue ball"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("pretrained")
    return {"svd": svd_folder(root), "svd16": svd_folder(root, "fp16"), "sd": sd_folder(root),
            "sd16": sd_folder(root, "fp16")}


def test_fp16_variant_folders_hold_only_fp16_files(folders) -> None:
    for name in ("svd16", "sd16"):
        weights = sorted(p.name for p in folders[name].rglob("*.safetensors"))
        assert weights and all(w.endswith(".fp16.safetensors") for w in weights), weights


def test_pipeline_text_conditioning_equals_the_pipelines_encode_prompt(folders) -> None:
    pipe = StableDiffusionPipeline.from_pretrained(folders["sd"], local_files_only=True, safety_checker=None,
                                                   requires_safety_checker=False)
    cond, uncond = pipe.encode_prompt(PROMPTS, "cpu", 1, True, negative_prompt=None)  # [B, 77, D] each
    for path in (folders["sd"], folders["sd"] / "text_encoder"):  # the pipeline folder or its text_encoder/
        enc = FrozenTextEncoder(str(path))
        tokens, pooled = enc(PROMPTS)
        null, _ = enc([""])
        assert enc.style == "pipeline" and enc.dim == TEXT_WIDTH and tokens.shape == (3, 77, TEXT_WIDTH)
        torch.testing.assert_close(tokens, cond, rtol=0, atol=1e-6)
        torch.testing.assert_close(null.expand_as(uncond), uncond, rtol=0, atol=1e-6)
        assert float(tokens[:, -1].abs().sum()) > 0  # padding positions are real hidden states, not zeroed
        assert pooled.shape == (3, TEXT_WIDTH)
    half = FrozenTextEncoder(str(folders["sd16"]))  # fp16-only folder: loads (as fp32), same network rounded
    assert next(half.model.parameters()).dtype == torch.float32
    torch.testing.assert_close(half(PROMPTS)[0], cond, rtol=0, atol=5e-2)


def test_model_from_both_folders_uses_their_encoders_and_preprocessing(folders) -> None:
    cfg = micro_config(svd_path=str(folders["svd16"]), image_model_path=str(folders["sd"]))
    model = OrbitVideoModel.build(cfg)
    assert model.text_encoder.style == "pipeline" and model.text_encoder.dim == TEXT_WIDTH
    assert model.image_unet.config.cross_attention_dim == TEXT_WIDTH
    assert model.video_unet.config.cross_attention_dim == IMAGE_EMBED
    assert model.latent_size == 4 and model.random_components() == []  # the folders' VAE downsamples 4x
    assert all(p.dtype == torch.float32 for p in model.parameters())
    # the CLIP image embedding follows the folder's feature_extractor, exactly as the processor normalises
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    ctx = model.video_context(images, torch.zeros(2, TEXT_WIDTH))
    processor = CLIPImageProcessor.from_pretrained(folders["svd16"] / "feature_extractor")
    resized = torch.nn.functional.interpolate(images, size=(32, 32), mode="bicubic", antialias=True)
    pixels = processor(images=((resized + 1) / 2).clamp(0, 1), do_normalize=True, do_center_crop=False,
                       do_resize=False, do_rescale=False, return_tensors="pt").pixel_values
    with torch.no_grad():
        expected = model.image_encoder(pixel_values=pixels).image_embeds[:, None]
    torch.testing.assert_close(ctx, expected, rtol=0, atol=1e-5)


def test_missing_feature_extractor_is_a_clear_error(folders, tmp_path) -> None:
    import shutil

    broken = tmp_path / "svd"
    shutil.copytree(folders["svd"], broken)
    shutil.rmtree(broken / "feature_extractor")
    with pytest.raises(FileNotFoundError, match="feature_extractor"):
        OrbitVideoModel.build(micro_config(svd_path=str(broken), vae_steps=0))


def test_small_and_paper_refuse_missing_pretrained_paths(folders) -> None:
    paper = VideoModelConfig.preset("paper")
    with pytest.raises(MissingPretrainedError) as exc:
        check_pretrained(paper, "paper", from_scratch=False)
    assert "svd_path" in str(exc.value) and "image_model_path" in str(exc.value)
    with pytest.raises(MissingPretrainedError, match="image_model_path") as exc:
        check_pretrained(VideoModelConfig.preset("paper", svd_path=str(folders["svd"])), "paper", False)
    assert "svd_path" not in str(exc.value)
    with pytest.raises(MissingPretrainedError, match="svd_path"):
        check_pretrained(VideoModelConfig.preset("small"), "small", False)
    # from_scratch at paper would train the random first-frame model and VAE 0 steps: refused too
    with pytest.raises(ValueError, match="image_unet"):
        check_pretrained(VideoModelConfig.preset("paper", svd_path=str(folders["svd"])), "paper", True)
    check_pretrained(VideoModelConfig.preset("small"), "small", True)  # explicit from-scratch: allowed
    check_pretrained(VideoModelConfig.preset("tiny"), "tiny", False)  # tiny needs no paths


def _resources(root, preset: str = "paper") -> dict:
    return {"artifacts": ArtifactStoreResource(root=str(root)), "preset": PresetResource(name=preset),
            "mlflow": MLflowResource(artifact_root=str(root)),
            "compute": ComputeResource(device="cpu", precision="fp32")}


def _model_config(**fields) -> dict:
    overrides = {k: v for k, v in MICRO.items() if k != "eval_count"}
    return {"eval_count": 2, "overrides_json": json.dumps(overrides), **fields}


def test_paper_asset_without_paths_fails_before_any_work(tmp_path) -> None:
    result = dg.materialize([video_model], resources=_resources(tmp_path / "a"), raise_on_error=False,
                            run_config={"ops": {"video_model": {"config": _model_config()}}})
    assert not result.success
    message = str(result.get_step_failure_events()[0].step_failure_data.error)
    assert "svd_path" in message and "image_model_path" in message and "from_scratch" in message
    assert ArtifactStore(tmp_path / "a").latest("video_model") is None


def test_paper_assets_from_svd_and_image_pipeline_folders(folders, tmp_path) -> None:
    root = tmp_path / "artifacts"
    instance = dg.DagsterInstance.ephemeral()
    config = _model_config(svd_path=str(folders["svd"]), image_model_path=str(folders["sd16"]))
    materialize_renders(_resources(root), instance)
    result = dg.materialize([video_model], resources=_resources(root), instance=instance,
                            run_config={"ops": {"video_model": {"config": config}}})
    assert result.success
    meta = result.asset_materializations_for_node("video_model")[0].metadata
    assert meta["text_encoder"].value["width"] == TEXT_WIDTH and meta["text_encoder"].value["style"] == "pipeline"
    assert meta["random_init"].value == {"networks": []} and meta["temporal_only"].value is True
    assert meta["compute"].value["resolved_device"] == "cpu"
    version = ArtifactStore(root).latest("video_model")
    assert version.manifest.config["compute"]["resolved_precision"] == "fp32"
    assert version.manifest.counts["steps_vae"] == 0  # pretrained VAE never trained
    card = (version.path / "model" / "README.md").read_text()
    assert "randomly initialised networks: none" in card and str(folders["sd16"]) in card

    # stage 2: only the temporal layers moved away from the SVD folder's weights; stage 1 trained
    saved = UNetSpatioTemporalConditionModel.from_pretrained(version.path / "model" / "video_unet")
    source = UNetSpatioTemporalConditionModel.from_pretrained(folders["svd"], subfolder="unet")
    a, b = saved.state_dict(), source.state_dict()
    spatial = [k for k in a if not is_temporal(k)]
    temporal = [k for k in a if is_temporal(k)]
    assert spatial and temporal and all(torch.equal(a[k], b[k]) for k in spatial)
    assert any(not torch.equal(a[k], b[k]) for k in temporal)
    image = UNet2DConditionModel.from_pretrained(version.path / "model" / "image_unet").state_dict()
    image_src = UNet2DConditionModel.from_pretrained(folders["sd16"], subfolder="unet", variant="fp16",
                                                     torch_dtype=torch.float32).state_dict()
    assert any(not torch.equal(image[k], image_src[k]) for k in image)
    assert (version.path / "model" / "feature_extractor" / "preprocessor_config.json").is_file()

    from test_video_assets import _publish_prompt_set

    _publish_prompt_set(root, instance, 1)
    synth = dg.materialize([synthetic_videos], partition_key="shard-000000", instance=instance,
                           resources=_resources(root),
                           run_config={"ops": {"synthetic_videos": {"config": {"precision": "bf16"}}}})
    assert synth.success
    out = ArtifactStore(root).latest("synthetic_videos", "shard-000000")
    assert out.manifest.config["compute"]["resolved_precision"] == "bf16"  # per-asset override of the resource
    samples = list(iter_video_samples(sorted(out.path.glob("*.tar"))))
    assert len(samples) == 3 and samples[0].frames.shape == (4, 16, 16, 3)


def test_small_from_scratch_asset_labels_every_random_network(tmp_path) -> None:
    root = tmp_path / "artifacts"
    instance = dg.DagsterInstance.ephemeral()
    materialize_renders(_resources(root, "small"), instance)
    result = dg.materialize([video_model], resources=_resources(root, "small"), instance=instance,
                            run_config={"ops": {"video_model": {"config": _model_config(from_scratch=True)}}})
    assert result.success
    meta = result.asset_materializations_for_node("video_model")[0].metadata
    assert meta["random_init"].value == {"networks": ["vae", "image_unet", "video_unet"]}
    assert meta["text_encoder"].value["style"] == "sentence" and meta["text_encoder"].value["width"] == 384
    version = ArtifactStore(root).latest("video_model")
    assert version.manifest.config["random_init"] == ["vae", "image_unet", "video_unet"]
    assert "randomly initialised networks: vae, image_unet, video_unet" in (
        version.path / "model" / "README.md").read_text()
