"""Fine-tune the package's segmentor on the datastore's labelled images (MONAI Label's ``final`` labels)."""

from __future__ import annotations

import copy

import torch
from monai.inferers import SimpleInferer
from monai.losses import DiceCELoss
from monai.transforms import AsDiscreted
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel.tasks.train.basic_train import BasicTrainTask, Context

from segcft.data.transforms import segmentation_transforms
from segcft.serve import ModelPackage

#: Request defaults; clients may override each one. mlflow is not installed in this environment.
DEFAULTS = {
    "max_epochs": 20,
    "learning_rate": 1e-4,
    "train_batch_size": 4,
    "val_batch_size": 4,
    "val_split": 0.2,
    "dataset": "CacheDataset",
    "dataloader": "DataLoader",
    "tracking": "None",
}


class SegmentorTraining(BasicTrainTask):
    """Supervised training of a copy of the package's segmentor with segcft's segmentor transforms and loss.

    Training starts from the package's weights (or from this task's last best ``model.pt``);
    the best model by validation Dice is published to ``publish_path``, which the
    segmentation infer task loads from then on.
    """

    def __init__(self, pkg: ModelPackage, model_dir: str, publish_path: str) -> None:
        super().__init__(
            model_dir,
            description=f"Fine-tune the {pkg.manifest['segmentor']['network']} segmentor on the labelled images",
            config=dict(DEFAULTS),
            amp=torch.cuda.is_available(),
            publish_path=publish_path,
            labels=list(pkg.structures),
            load_strict=True,
            tracking=None,
        )
        self.pkg = pkg
        self.size = int(pkg.manifest["segmentor"]["image_size"])

    def pre_process(self, request, datastore: Datastore):
        datalist = datastore.datalist()
        if not datalist:
            raise MONAILabelException(
                MONAILabelError.INVALID_INPUT,
                "the datastore has no labelled images (labels/final/<image id>.<ext>) to train the segmentor on",
            )
        return datalist

    def network(self, context: Context):
        return copy.deepcopy(self.pkg.segmentor)

    def optimizer(self, context: Context):
        lr = float(context.request["learning_rate"])
        return torch.optim.AdamW(context.network.parameters(), lr=lr, weight_decay=1e-4)

    def loss_function(self, context: Context):
        return DiceCELoss(to_onehot_y=True, softmax=True, squared_pred=True, batch=True)

    def lr_scheduler_handler(self, context: Context):
        return None

    def train_pre_transforms(self, context: Context):
        return segmentation_transforms(self.size, self.pkg.modality, train=True, device=context.device)

    def val_pre_transforms(self, context: Context):
        return segmentation_transforms(self.size, self.pkg.modality, train=False, device=context.device)

    def train_post_transforms(self, context: Context):
        classes = len(self.pkg.structures) + 1
        return [AsDiscreted(keys=("pred", "label"), argmax=(True, False), to_onehot=classes)]

    def val_inferer(self, context: Context):
        return SimpleInferer()
