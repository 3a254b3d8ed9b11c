"""The GML student's step: teacher keys into the class-wise queues, then the loss terms.

Per step, once (whichever term asks first): the frozen teacher embeds the key view (and, for
distillation, the classifier view) without gradient; the batch is enqueued before the loss;
the contrast set is the queue (teacher features stored in the run's compute dtype), projected
by the trainable key MLP (in the run's compute precision) and L2-normalised, and the
query-bank similarities are computed once (the normalisation applied to the product). The terms
are ``L_GML`` (eq. 4/10, over the queue, ``tau_g`` detached), the temperature loss (the same
formula with detached similarities and the query's own image left out; it alone trains
``tau_g``) and ``L_KD`` (KL(teacher || student) at temperature 4 on the x30 cosine logits).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ltcore import LossTerm, Step

from .bank import Temperature, with_fresh_rows
from .loss import (gml_loss_from_similarities, similarities_to_keys,
                   temperature_loss_from_similarities)
from .queue import ClassWiseQueue

EXTRA = "gml"
"""Key of this step's GML tensors in ``step.extras``."""

TEACHER_FEATURES = "teacher-features"
KEY_EMBEDDINGS = "key-embeddings"


class MixtureTerms:
    """``L_GML`` and the loss that trains ``tau_g``, on what ``outputs(step)`` gives: the
    similarities of the queries to the mixture centres (``bank``) with their labels, the centres'
    and queries' image indices and which centres are valid. Needs ``run``, ``temperature`` and
    ``alpha``."""

    def gml_term(self, weight: float, plugin: str = "gml") -> LossTerm:
        """``L_GML`` over the centres with ``tau_g`` detached (eq. 4, eq. 10 with ``alpha``)."""
        prior = self.run.class_prior

        def fn(step: Step) -> torch.Tensor:
            o = self.outputs(step)
            loss = gml_loss_from_similarities(o["similarities"], o["labels"], o["bank_labels"],
                                              prior, o["temperature"], self.alpha,
                                              bank_valid=o["bank_valid"])
            o["losses"]["gml"] = loss.detach()
            return loss

        return LossTerm("gml", fn, plugin, weight, kind="contrastive", rebalanceable=False)

    def temperature_term(self, weight: float, plugin: str = "gml") -> LossTerm:
        """The loss that trains ``tau_g``: detached similarities, own-image centres left out."""
        prior = self.run.class_prior

        def fn(step: Step) -> torch.Tensor:
            o = self.outputs(step)
            loss = temperature_loss_from_similarities(
                o["similarities"], o["labels"], o["bank_labels"], o["bank_indices"], o["indices"],
                prior, self.temperature.log_temperature, self.alpha, bank_valid=o["bank_valid"])
            o["losses"]["gml-temperature"] = loss.detach()
            return loss

        return LossTerm("gml-temperature", fn, plugin, weight, kind="other")


class GMLStudent(MixtureTerms):
    """The pieces of one run's GML student and the loss terms that use them.

    Args:
        run: the run being assembled.
        teacher: the frozen teacher (a model bundle).
        queue: the class-wise queues (``teacher.feature_dim`` wide for ``teacher-features``,
            ``model.projection_dim`` wide for ``key-embeddings``).
        key_head: the trainable key MLP (teacher feature -> contrast space).
        temperature: the ``tau_g`` module.
        contents: ``teacher-features`` or ``key-embeddings``.
        query_role, key_role, classifier_role: the stage's view roles.
        alpha: logit-adjustment strength of eq. 10.
        distill: whether the teacher's classifier-view logits are needed.
        contrast: whether the queue and the contrast set are needed (``L_GML`` is trained).
    """

    def __init__(self, run, teacher, queue: ClassWiseQueue, key_head: torch.nn.Module,
                 temperature: Temperature, contents: str, query_role: str, key_role: str,
                 classifier_role: str, alpha: float, distill: bool, contrast: bool = True):
        self.run = run
        self.teacher = teacher
        self.queue = queue
        self.key_head = key_head
        self.temperature = temperature
        self.contents = contents
        self.query_role = query_role
        self.key_role = key_role
        self.classifier_role = classifier_role
        self.alpha = alpha
        self.distill = distill
        self.contrast = contrast
        self.momentum: tuple[float, torch.nn.Module, torch.nn.Module] | None = None
        self._last: tuple[Step, dict[str, Any]] | None = None

    def follow(self, momentum: float, backbone: torch.nn.Module,
               projection: torch.nn.Module) -> None:
        """Make ``teacher`` and ``key_head`` momentum copies of the student's ``backbone`` and
        ``projection``, updated at the start of every step's keys (the reference code's order:
        the update comes before the key encoder's forward)."""
        self.momentum = (momentum, backbone, projection)

    # -- the shared step --

    def outputs(self, step: Step) -> dict[str, Any]:
        """This step's query, contrast set and teacher logits (computed once per step)."""
        if self._last is not None and self._last[0] is step:
            return self._last[1]
        out = self._compute(step)
        self._last = (step, out)
        extras = getattr(step, "extras", None)
        if extras is not None:
            extras[EXTRA] = out
        return out

    def _compute(self, step: Step) -> dict[str, Any]:
        views = step.stage.views
        if self.momentum is not None and self.contrast:
            from .teacher import momentum_update

            m, backbone, projection = self.momentum
            momentum_update(self.teacher.backbone, backbone, m)
            momentum_update(self.key_head, projection, m)
        images = []
        if self.distill:
            images.append(step.images[self.classifier_role])
        if self.contrast:
            images.append(step.images[self.key_role])
        with torch.no_grad(), step.run.autocast():
            features = self.teacher.backbone(torch.cat(images)).float()
            # per view, the global batch's (the step's images are this rank's share)
            features = torch.cat([step.gather(f) for f in features.split(
                [len(x) for x in images])])
            teacher_logits = None
            if self.distill:
                head = features[:len(features) // len(images)]
                teacher_logits = self.teacher.classifier(head).float()
        out = {"teacher_logits": teacher_logits, "temperature": self.temperature().detach(),
               "losses": {}}
        if not self.contrast:
            return out
        key_features = features[len(features) - len(features) // len(images):]
        key_labels = step.targets(self.key_role)
        key_indices = step.indices[views[self.key_role].source]
        queue = self.queue
        query = step.embeddings[self.query_role]
        if self.contents == TEACHER_FEATURES:
            queue.enqueue(key_features, key_labels, key_indices)
            with step.run.autocast():
                projected = self.key_head(queue.features())
            similarities, bank = similarities_to_keys(query, projected)
        else:
            with step.run.autocast():
                projected = self.key_head(key_features)
            fresh = F.normalize(projected.float(), dim=1)
            slot, writer, _ = queue.slots(key_labels)
            queue.enqueue(fresh, key_labels, key_indices)
            bank = with_fresh_rows(queue.features().float(), fresh, slot, writer)
            similarities = query @ bank.T
        out.update(query=query, labels=step.targets(self.query_role),
                   indices=step.indices[views[self.query_role].source], bank=bank,
                   similarities=similarities, bank_labels=queue.labels(),
                   bank_indices=queue.indices(), bank_valid=queue.valid())
        return out

    # -- the terms (and MixtureTerms') --

    def distillation_term(self, weight: float, temperature: float, plugin: str = "gml") -> LossTerm:
        """``L_KD = T^2 KL(softmax(t/T) || softmax(s/T))`` on the classifier view's logits."""
        from ltcore.losses import distillation_kl

        def fn(step: Step) -> torch.Tensor:
            o = self.outputs(step)
            loss = distillation_kl(step.logits[self.classifier_role], o["teacher_logits"],
                                   temperature)
            o["losses"]["kd"] = loss.detach()
            return loss

        return LossTerm("kd", fn, plugin, weight, kind="other")
