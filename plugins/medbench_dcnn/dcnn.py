"""Defense ``dcnn``: the denoising CNN of Xue et al. (MICCAI 2019).

The classifier is trained with the neighbor loss and an embedded auto-encoder whose
encoder is the classifier's own first stage (see :mod:`medbench_dcnn.loss`). The decoder
is only a training device: it lives in ``DefendedModel.modules["decoder"]`` (trained and
cached with the model), and the classifier keeps classifying the original, undecoded
features, so the defended model at test time is the plain classifier.

Training uses the harness's shared loop (Adam with the matrix's learning rate, epochs and
batch size); the paper and the official code used SGD (lr 0.01, momentum 0.9 in the code,
weight decay 1e-4 in the paper / 5e-4 in the code).
"""

from __future__ import annotations

import torch

from medbench.api import DefendedModel, Defense, DefenseContext
from medbench.api.toolkit import default_loss, defended_logits
from medbench_dcnn.decoder import Decoder
from medbench_dcnn.loss import DCNNLoss
from medbench_dcnn.settings import DCNNSettings
from medbench_dcnn.taps import capture, probe_tap, resolve_tap


class DCNN(Defense):
    """Training defense: CE on clean and noisy images + λ_n·neighbor loss + λ_a·auto-encoder loss."""

    name = "dcnn"
    description = "denoising CNN (Xue et al. 2019): neighbor loss + embedded auto-encoder, λn=1, λa=10, σ=0.2"
    kind = "training"
    Settings = DCNNSettings

    def build(self, ctx: DefenseContext) -> DefendedModel:
        defended = ctx.new_model()
        path = resolve_tap(defended.model, self.settings.tap)
        shape = probe_tap(defended.model, path, tuple(ctx.dataset.input_shape), ctx.device)
        decoder = Decoder(shape.channels, ctx.dataset.in_channels).to(ctx.device)
        defended.modules["decoder"] = decoder
        return defended

    def loss(self, defended: DefendedModel, ctx: DefenseContext) -> DCNNLoss:
        """The training loss of ``defended`` (built by :meth:`build`), with noise seeded by the context."""
        model = defended.model
        return DCNNLoss(
            self.settings,
            tap=model.get_submodule(resolve_tap(model, self.settings.tap)),
            head=ctx.head(model),
            decoder=self.decoder(defended),
            criterion=default_loss(ctx.dataset),
            logits=ctx.logits,
            generator=torch.Generator(device=ctx.device).manual_seed(ctx.seed),
        )

    def fit(self, defended: DefendedModel, ctx: DefenseContext) -> None:
        ctx.train(defended, loss=self.loss(defended, ctx))

    @staticmethod
    def decoder(defended: DefendedModel) -> Decoder:
        """The embedded auto-encoder's decoder of a model built by :meth:`build`."""
        decoder = defended.modules["decoder"]
        assert isinstance(decoder, Decoder)
        return decoder

    def reconstruct(self, defended: DefendedModel, x: torch.Tensor) -> torch.Tensor:
        """The embedded auto-encoder's reconstruction of [0, 1] images ``x``, in (−1, 1)."""
        tap = defended.model.get_submodule(resolve_tap(defended.model, self.settings.tap))
        with capture(tap, None) as captured:
            defended_logits(defended, x)
        assert captured.tap is not None
        return self.decoder(defended)(captured.tap, (int(x.shape[-2]), int(x.shape[-1])))

    def visualize(self, defended: DefendedModel, x: torch.Tensor) -> dict[str, list[torch.Tensor]]:
        """The clean inputs and their reconstructions by the embedded auto-encoder (when it was trained)."""
        if x.shape[1] not in (1, 3) or self.settings.lambda_a == 0:
            return {}
        return {"dcnn-reconstruction": [x, (self.reconstruct(defended, x) + 1) / 2]}
