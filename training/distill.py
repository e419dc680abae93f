"""Knowledge distillation for the sparse stages of `nmc sparsify --distill`: the sparse
model learns the dense model's softened predictions beside the labels.

Why: a pretrained model's own logits say more per image than a 1-of-C label (which
classes it confuses, how sure it is), and they keep a short fine-tune near the function
the dense model computes instead of re-fitting it to a few thousand labels. On DINOv2 on
Fashion-MNIST (BENCHMARKS.md), uniform 2:8 fine-tuned 378 steps with this loss reached
81 % where `nmc sparsify`'s cross-entropy flow, with as many steps, reached 72 %.

The teacher is the model as the sparse stages find it (pre-trained when the run
pre-trains, else the model given): its logits on every train image are computed once
(`teacher_logits`) and kept in the run's checkpoint, so the training is as resumable and
as deterministic as without distillation (the train images are not augmented, so a
logit per image is all a step needs).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from nmc.models.datasets import Split
from nmc.training import data_parallel

TEMPERATURE = 2.0
"""Softens both distributions (Hinton et al.); the KL term is scaled by its square so its
gradients keep their size as the temperature changes."""

CE_WEIGHT = 0.5
"""Weight of the cross-entropy with the labels beside the distillation term."""


def distillation_loss(logits: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, *,
                      ce_weight: float = CE_WEIGHT, label_smoothing: float = 0.0,
                      reduction: str = "mean") -> torch.Tensor:
    """KL(teacher || student) at TEMPERATURE, x TEMPERATURE^2, + `ce_weight` x the
    cross-entropy with `labels`; averaged over the rows ("mean") or summed ("sum", for a
    shard of a data-parallel batch)."""
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    t = TEMPERATURE
    kd = F.kl_div(F.log_softmax(logits / t, -1), F.log_softmax(teacher / t, -1),
                  log_target=True, reduction="batchmean" if reduction == "mean" else "sum")
    ce = F.cross_entropy(logits, labels, reduction=reduction, label_smoothing=label_smoothing)
    return kd * t ** 2 + ce_weight * ce


@torch.no_grad()
def teacher_logits(model: torch.nn.Module, split: Split, batch_size: int = 256) -> torch.Tensor:
    """The model's logits on every image of `split` [len(split), classes], in eval mode.
    Under data-parallel training each rank computes its part and every rank gets all."""
    part = data_parallel.shard(len(split))
    rows = [model(split.images[i:min(i + batch_size, part.stop)])
            for i in range(part.start, part.stop, batch_size)]
    # a rank with no images still sends rows of the logits' width to the gather
    mine = torch.cat(rows) if rows else model(split.images[:1])[:0]
    if data_parallel.size() > 1:
        return data_parallel.gather_rows(mine, len(split))
    return mine
