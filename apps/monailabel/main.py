"""MONAI Label app for segcft: structure segmentation, counterfactual images and segmentor training.

    monailabel start_server --app apps/monailabel --studies <folder> --conf models <model package>

Conf options (``--conf KEY VALUE``):

- ``models`` (required): the segcft model package folder (``segcft_model.json``, ``generator.pt``,
  ``segmentor.pt``), as written by ``segcft.serve.save_model_package``.
- ``train_dir``: where the ``segmentation`` trainer writes its runs and publishes the fine-tuned
  segmentor (``segmentor.pt``); default ``<app>/model/<package folder name>``.
- ``device``: where the models run; default ``cuda`` if available, else ``cpu``.

See docs/monailabel.md.
"""

from __future__ import annotations

import locale
import logging
import os
from pathlib import Path

import torch
from fastapi import HTTPException
from lib.infers import CounterfactualInfer, StructureSegmentation
from lib.trainers import SegmentorTraining
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.train import TrainTask

from segcft import __version__
from segcft.serve import ModelPackage, load_model_package
from segcft.utils import InputError

logger = logging.getLogger(__name__)

PUBLISHED = "segmentor.pt"


def load_package(conf: dict[str, str]) -> ModelPackage:
    """The model package named by ``--conf models``; errors name the option and the file."""
    folder = conf.get("models")
    if not folder:
        raise MONAILabelException(
            MONAILabelError.APP_INIT_ERROR,
            "--conf models <folder> is required: the segcft model package (segcft_model.json, generator.pt, segmentor.pt)",
        )
    device = conf.get("device", "cuda" if torch.cuda.is_available() else "cpu")
    try:
        return load_model_package(folder, device=device)
    except InputError as e:
        raise MONAILabelException(MONAILabelError.APP_INIT_ERROR, f"--conf models: {e}") from e


def match_task_output_encoding() -> str:
    """Make MONAI Label's task subprocesses write their output in the encoding the server reads it with.

    The server reads a training task's output through a pipe decoded with its locale's encoding
    (ASCII under ``LC_ALL=C``). A child writing UTF-8 (tqdm's bars, say, under
    ``PYTHONIOENCODING=utf-8``) kills the reading thread, and the task stays RUNNING for ever
    although training finished. Children inherit this variable: they write in the server's
    encoding and escape what it cannot hold.
    """
    encoding = locale.getpreferredencoding(False)
    os.environ["PYTHONIOENCODING"] = f"{encoding}:backslashreplace"
    return encoding


class SegcftApp(MONAILabelApp):
    """One segcft model package served as the ``segmentation`` and ``counterfactual`` models."""

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        self.package = load_package(conf)
        logger.info("task output encoding: %s", match_task_output_encoding())
        default_train_dir = Path(app_dir, "model", self.package.root.resolve().name)
        self.train_dir = Path(conf.get("train_dir", default_train_dir))
        logger.info("segcft model package %s; segmentor training in %s", self.package.root, self.train_dir)
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name=f"segcft {self.package.modality} counterfactuals",
            description="Structure segmentation and segmentor-guided counterfactual images (segcft)",
            version=__version__,
            labels=self.package.structures,
        )

    def init_infers(self) -> dict[str, InferTask]:
        return {
            "segmentation": StructureSegmentation(self.package, str(self.train_dir / PUBLISHED)),
            "counterfactual": CounterfactualInfer(self.package),
        }

    def init_trainers(self) -> dict[str, TrainTask]:
        return {"segmentation": SegmentorTraining(self.package, str(self.train_dir), str(self.train_dir / PUBLISHED))}

    def infer(self, request, datastore=None):
        """MONAI Label's infer, after refusing an image that is neither a datastore id nor a file (HTTP 404)."""
        image = request.get("image")
        store = datastore if datastore else self.datastore()
        if isinstance(image, str) and not os.path.exists(image) and not store.get_image_uri(image):
            raise HTTPException(status_code=404, detail=f"image {image!r}: no such image id in the datastore, nor a file")
        return super().infer(request, datastore)
