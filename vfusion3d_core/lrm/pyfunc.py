"""An LRM checkpoint as an MLflow pyfunc model: the artifact is the folder ``LRM.save_pretrained`` wrote, loaded
back with ``LRM.from_pretrained``; nothing is downloaded.

    model = mlflow.pyfunc.load_model("models:/lrm_finetuned@champion")
    planes = model.predict(["chair.png"])            # float32 [N, 3, C, H, W] triplanes, one per image
    lrm = model.unwrap_python_model().lrm            # the LRM itself (render, mesh, vfusion3d generate ...)

``predict`` takes image paths (a list of strings, the model's input schema); each image is prepared as
``vfusion3d generate`` prepares it (alpha channel, else the whole image: no background removal here) and encoded
from the default source camera.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow.pyfunc

ARTIFACT_KEY = "lrm"  # the key of the LRM folder in the pyfunc model's artifacts


class LRMPyfunc(mlflow.pyfunc.PythonModel):
    """Loads the LRM folder artifact on the CPU (or ``VFUSION3D_DEVICE``); ``predict``: images -> triplanes."""

    lrm: Any = None

    def load_context(self, context: Any) -> None:
        import os

        from vfusion3d_core.lrm import LRM

        device = os.environ.get("VFUSION3D_DEVICE", "cpu")
        self.lrm = LRM.from_pretrained(context.artifacts[ARTIFACT_KEY], "cpu" if device == "auto" else device).eval()

    def predict(self, context, model_input: list[str], params=None):
        import torch

        from vfusion3d_core.cameras import default_source_camera
        from vfusion3d_core.lrm.preprocess import prepare_image

        paths = _image_paths(model_input)
        device = next(self.lrm.parameters()).device
        size = self.lrm.config.source_size
        images = torch.stack([prepare_image(p, size, background="never").image for p in paths]).to(device)
        cameras = default_source_camera()[None].expand(len(paths), -1).to(device)
        with torch.no_grad():
            return self.lrm.encode(images, cameras).float().cpu().numpy()


def _image_paths(model_input: Any) -> list[str]:
    """Image paths from a list / array of paths, one path, or a DataFrame (its first column)."""
    if hasattr(model_input, "iloc"):  # pandas DataFrame or Series
        frame = model_input.to_frame() if hasattr(model_input, "to_frame") else model_input
        values = list(frame.iloc[:, 0])
    elif isinstance(model_input, (str, Path)):
        values = [model_input]
    else:
        values = list(model_input)
    if not values:
        raise ValueError("predict needs at least one image path")
    return [str(v) for v in values]


def lrm_folder(mlflow_model_dir: str | Path) -> Path:
    """The LRM folder inside a downloaded copy of the logged model (where its MLmodel says the artifact is)."""
    from mlflow.models import Model

    conf = Model.load(str(mlflow_model_dir)).flavors["python_function"]["artifacts"][ARTIFACT_KEY]
    return Path(mlflow_model_dir) / conf["path"]


def log_lrm_model(model_dir: str | Path, name: str = "model", **kwargs: Any) -> Any:
    """``mlflow.pyfunc.log_model`` of the LRM folder ``model_dir`` (a LoggedModel; linked to the active run as its
    output when one is active). Requirements are given, not inferred (inference would load the model in a
    subprocess). Returns the ModelInfo (``model_id``, ``model_uri``)."""
    import torch

    requirements = [f"mlflow=={mlflow.__version__}", f"torch=={torch.__version__.split('+')[0]}", "safetensors",
                    "numpy", "pillow"]
    return mlflow.pyfunc.log_model(name=name, python_model=LRMPyfunc(), artifacts={ARTIFACT_KEY: str(model_dir)},
                                   pip_requirements=requirements, **kwargs)
