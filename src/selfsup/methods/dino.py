"""DINO: self-distillation with no labels."""

from __future__ import annotations

import torch
from torch import nn

from selfsup.heads import DINO_OUTPUTS, DINOHead, fit_dino_outputs
from selfsup.losses import dino, dino_center
from selfsup.methods.base import SMALL_BATCH_LARS, Batch, Method, StepInfo, StepOutput, project_by_size
from selfsup.methods.momentum import MomentumEncoder
from selfsup.schedules import cosine_increase, linear_increase


class DINO(Method):
    """DINO (Caron, Touvron, Misra, Jégou, Mairal, Bojanowski, Joulin, ICCV 2021).

    Student: backbone + DINO head (MLP 2048 wide with GELU, 256-d bottleneck,
    L2-normalisation, weight-normalised last layer to K outputs, kept fixed during the first
    epoch). Teacher: an EMA of the student, momentum 0.996 -> 1 on a cosine. Loss (eq. 3,
    Algorithm 1): for every teacher global view i and student view v != i,
    H(P_t(x_i), P_s(x_v)) with P_t = softmax((t - c) / tau_t), P_s = softmax(s / tau_s),
    tau_s = 0.1, tau_t warmed up linearly from 0.04 to 0.07; the centre c follows the mean
    teacher output over the global batch with momentum 0.9. Multi-crop: the paper's 2 global
    crops (0.4-1) + 8 local crops (0.05-0.4) are the ``dino`` view recipe; the teacher sees
    only the global crops.

    Scaled for small data: ``output_dim=0`` lets ``selfsup pretrain`` fit K (one per 16
    images, a power of two, at most the paper's 65,536; built directly, 0 means 65,536). The
    teacher-temperature warm-up spans the first ``teacher_temperature_warmup`` of training
    (the paper: 30 of 100 epochs); runs set by a time budget know their length only in steps.
    The reference's gradient clipping at norm 3 stays on: the head's small initialisation
    (std 0.02) before an L2-normalisation gives the first steps huge gradients, and one
    unclipped SGD step can collapse every embedding onto the bottleneck's bias. The paper's
    ResNet-50 setting (SGD, lr 0.03 x batch/256, weight decay 1e-4; ViTs used AdamW with
    weight decay 0.04 -> 0.4) with its multi-crop is ``augment.recipe=dino
    train.optimizer=sgd train.lr=0.03``. selfsup's default, for convolutional backbones on
    small images: solo-learn's CIFAR optimiser (LARS with trust 0.02 and its step capped)
    at lr 0.2 x batch/256 (solo-learn's 0.3 collapsed a 6-epoch run on 16 px digits onto
    one prototype), weight decay 1e-4, two ``small-images`` views. After 15 minutes on
    Fashion-MNIST it reached 49.0 / 72.0 at 1 and 10 labels per class where the paper's
    setting stayed at its random init's (40.5 / 66.8; BENCHMARKS.md "Barlow Twins, SwAV,
    DeepCluster-v2 and DINO at small-batch recipes").

    Energy: F(x, y) = H(P_t(y), P_s(x)), the cross-entropy the loss minimises.
    """

    name = "dino"
    summary = "self-distillation: student matches a centred, sharpened EMA teacher (Caron et al. 2021)"
    train_recipe = {"optimizer": "lars", "lr": 0.2, "weight_decay": 1e-4, "epochs": 100, "clip_grad": 3.0,
                    **SMALL_BATCH_LARS}
    has_prototypes = True
    data_sized_options = {"output_dim": fit_dino_outputs}

    def __init__(self, backbone: nn.Module, backbone_dim: int, output_dim: int = 0, hidden_dim: int = 2048,
                 bottleneck_dim: int = 256, student_temperature: float = 0.1, teacher_temperature: float = 0.07,
                 warmup_teacher_temperature: float = 0.04, teacher_temperature_warmup: float = 0.3,
                 center_momentum: float = 0.9, base_momentum: float = 0.996, freeze_last_layer_epochs: float = 1.0,
                 head_batch_norm: bool = True):
        super().__init__(backbone)
        self.head = DINOHead(backbone_dim, output_dim or DINO_OUTPUTS, hidden_dim, bottleneck_dim, batch_norm=head_batch_norm)
        self.teacher = MomentumEncoder(backbone, self.head)
        self.student_temperature = student_temperature
        self.final_teacher_temperature, self.warmup_teacher_temperature = teacher_temperature, warmup_teacher_temperature
        self.teacher_temperature_warmup = teacher_temperature_warmup
        self.teacher_temperature = warmup_teacher_temperature
        self.center_momentum, self.base_momentum, self.momentum = center_momentum, base_momentum, base_momentum
        self.freeze_last_layer_epochs = freeze_last_layer_epochs
        self.freeze_last_layer = True
        self.register_buffer("center", torch.zeros(self.head.output_dim))
        self._step_teacher: list[torch.Tensor] | None = None  # the centre follows it in on_step_end

    def project(self, images: torch.Tensor) -> torch.Tensor:
        """The L2-normalised bottleneck of the head: the embedding the prototypes score."""
        return nn.functional.normalize(self.head.mlp(self.backbone(images)), dim=-1)

    def on_step_start(self, info: StepInfo) -> None:
        self.freeze_last_layer = info.step < self.freeze_last_layer_epochs * info.steps_per_epoch
        self.teacher_temperature = linear_increase(
            info.step, self.teacher_temperature_warmup * info.total_steps,
            self.warmup_teacher_temperature, self.final_teacher_temperature,
        )

    def forward(self, views: list[torch.Tensor], batch: Batch | None = None) -> StepOutput:
        z = project_by_size(self.project, views)
        student = [self.head.last_layer(view_z, frozen=self.freeze_last_layer) for view_z in z]
        teacher = list(self.teacher(torch.cat(views[:2])).chunk(2))
        loss = dino(student, teacher, self.center, self.student_temperature, self.teacher_temperature)
        teacher_probabilities = torch.softmax((teacher[0] - self.center) / self.teacher_temperature, dim=1)
        # In fp32, as autocast would have summed them inside the forward pass.
        self._step_teacher = [output.detach().float() for output in teacher]
        metrics = {"teacher_temperature": self.teacher_temperature, "momentum": self.momentum}
        return StepOutput(loss, metrics, embeddings=z[0].detach(), assignments=teacher_probabilities)

    @torch.no_grad()
    def prototype_probabilities(self, images: torch.Tensor) -> torch.Tensor:
        return torch.softmax((self.teacher(images) - self.center) / self.teacher_temperature, dim=1)

    @torch.no_grad()
    def energy(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        target = self.prototype_probabilities(y)
        return -(target * torch.log_softmax(self.head(self.backbone(x)) / self.student_temperature, dim=1)).sum(dim=1)

    @torch.no_grad()
    def on_step_end(self, info: StepInfo) -> None:
        if self._step_teacher is not None:  # the centre: an EMA of the teacher's mean output
            self.center.copy_(dino_center(self.center, self._step_teacher, self.center_momentum))
            self._step_teacher = None
        self.momentum = cosine_increase(info.step, info.total_steps, self.base_momentum)
        self.teacher.update(self.backbone, self.head, self.momentum)
