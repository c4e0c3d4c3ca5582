"""How a trial's training forward passes execute: in fp32 or under bfloat16 autocast, eagerly or compiled.

`precision: bf16` runs every training forward pass under `torch.autocast(device, torch.bfloat16)` (on a CPU
too); the weights, the optimiser and the loss stay in fp32 (the logits are cast back before the loss).
`compile: default | reduce-overhead` trains through `torch.compile(model, mode=..., dynamic=False)`;
reduce-overhead adds CUDA graphs on a GPU (on a CPU it compiles as default does).

What stays eager, so that a trial compiles exactly once however many epochs it runs:
  * a batch whose size is not the trial's full batch size: at most one per epoch, the ragged last batch
    (e.g. 40 of 1,000 images at batch 64). Compiling it too would add a second graph (or, without
    dynamic=False, a dynamic-shape recompile); running it eagerly adds none.
  * the telemetry steps (step 0 and each evaluation step): their forward hooks read block outputs, which a
    compiled graph would not call.
  * every evaluation (dev, test, the scored checkpoint on train): fp32, uncompiled, so scores compare across
    settings and with what lesions and diagnostics measure on the saved weights.
Compiled and eager kernels round differently, so a compiled trial's numbers differ slightly from the eager
trial's; both are deterministic, and each setting names its own trial id.

bf16 on a CPU: torch's oneDNN bf16 convolution (torch 2.14, measured on this project's AMD EPYC with
AVX512-BF16) returns wrong results, inf or nan, mostly in the weight gradient, for a convolution whose kernel
overhangs its input by more than one pixel (kernel > input + 1: a 3x3 kernel on a 1x1 input, a 7x7 one on
1x1 or 2x2), and does so erratically. A sweep of 360 shapes (3-256 channels in, 16-256 out, 1-4 pixel
inputs, kernels 1, 3 and 7, strides 1 and 2, both memory formats, 3 tries each; outputs, input and weight
gradients against fp32) found 31 failing, every one inside that rule. So on a CPU such layers (ImageNet-family nets at image_size <= 16, the stem at tiny sizes) run in
fp32 under bf16: `TrainForward.fp32_layers` names them. CUDA (cuDNN) is not affected and keeps every layer in
bf16.
"""
from __future__ import annotations

import copy
import types

import torch

from ablate.spec import TrialConfig


def overhanging_convs(model: torch.nn.Module, input_shape: tuple[int, ...]) -> list[str]:
    """The Conv2d layers whose kernel is larger than their input plus one pixel in a spatial dimension, found by
    one forward pass of a storage-free (meta) copy of the model on an input of `input_shape`."""
    meta = copy.deepcopy(model).to("meta")
    found: list[str] = []

    def check(name: str, conv: torch.nn.Conv2d, x: torch.Tensor) -> None:
        if any(k > size + 1 for k, size in zip(conv.kernel_size, x.shape[-2:])):
            found.append(name)

    for name, module in meta.named_modules():
        if isinstance(module, torch.nn.Conv2d):
            module.register_forward_pre_hook(lambda m, args, name=name: check(name, m, args[0]))
    with torch.no_grad():
        meta(torch.empty(input_shape, device="meta"))
    return found


def _fp32_forward(self: torch.nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    with torch.autocast(x.device.type, enabled=False):
        return type(self).forward(self, x.float())


class TrainForward:
    """`forward(x)` for a training step: the model compiled or eager, under autocast or not, as the config says."""

    def __init__(self, model: torch.nn.Module, config: TrialConfig, device: torch.device,
                 input_shape: tuple[int, ...]) -> None:
        self.model = model
        self.batch = input_shape[0]  # the one batch size that runs compiled
        self.device_type = torch.device(device).type
        self.bf16 = config.precision == "bf16"
        self.fp32_layers: list[str] = []
        if self.bf16 and self.device_type == "cpu":
            self.fp32_layers = overhanging_convs(model, input_shape)
            modules = dict(model.named_modules())
            for name in self.fp32_layers:
                modules[name].forward = types.MethodType(_fp32_forward, modules[name])
        self.compiled = None
        self.cuda_graphs = config.compile == "reduce-overhead" and self.device_type == "cuda"
        if config.compile != "none":
            import torch._dynamo as dynamo

            # A fresh cache per trial: a reused worker's earlier trials (other architectures) must not count
            # against dynamo's recompile limit, past which it would silently fall back to eager.
            dynamo.reset()
            self.compiled = torch.compile(model, mode=config.compile, dynamic=False)

    def __call__(self, x: torch.Tensor, eager: bool = False) -> torch.Tensor:
        fn = self.model
        if self.compiled is not None and not eager and x.shape[0] == self.batch:
            fn = self.compiled
            if self.cuda_graphs:  # a new iteration: the graphs' previous outputs may be overwritten
                torch.compiler.cudagraph_mark_step_begin()
        if not self.bf16:
            return fn(x)
        with torch.autocast(self.device_type, dtype=torch.bfloat16):
            return fn(x).float()
