"""Causal 3D convolution and the explicit cache that makes chunked (streaming) inference exact.

Layout everywhere: ``(B, C, T, H, W)``. "Causal" means all temporal padding sits in the past, so output
frame ``t`` depends on input frames ``<= t`` only. Spatial padding is symmetric and handled by the
convolution itself (no copy of the input).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch._subclasses.fake_tensor import is_fake

_MKLDNN = torch.backends.mkldnn.is_available()


class StreamState:
    """Per-stream cache for chunked inference: one entry per module that needs memory of the past.

    A module stores whatever it needs to continue the stream (for a convolution, the trailing input frames
    its next output window starts with). Keys are the modules themselves, so nothing depends on call order.
    One ``StreamState`` belongs to one stream (one clip, or one spatial tile of a clip); start a new one
    for the next clip.
    """

    def __init__(self) -> None:
        self._cache: dict[int, torch.Tensor] = {}
        self._started: set[int] = set()

    def get(self, module: nn.Module) -> torch.Tensor | None:
        return self._cache.get(id(module))

    def set(self, module: nn.Module, value: torch.Tensor) -> None:
        self._cache[id(module)] = value

    def has_started(self, module: nn.Module) -> bool:
        """Whether ``module`` has asked ``first_call`` in this stream (without marking it)."""
        return id(module) in self._started

    def first_call(self, module: nn.Module) -> bool:
        """True the first time ``module`` asks in this stream (then remembers it was asked)."""
        key = id(module)
        if key in self._started:
            return False
        self._started.add(key)
        return True

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self._cache.values())


def cpu_inference_dtype(x: torch.Tensor, weight: torch.Tensor) -> torch.dtype | None:
    """The dtype for calling oneDNN's convolution directly (CPU, no autograd, fp32 or bf16 compute), else None."""
    # Autograd first: training (compiled too: dynamo cannot trace is_fake, so this order keeps the graph whole).
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        return None
    if x.device.type != "cpu" or not _MKLDNN or is_fake(x):
        # Fake tensors (runtime.memory's estimates) stand in for device tensors: they take the portable path, which
        # is what CUDA runs (and oneDNN's op has no fake implementation).
        return None
    dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else x.dtype
    if dtype == torch.bfloat16:
        from pvvae_cli.runtime.device import cpu_bf16_supported  # cached: one probe per process

        # oneDNN's direct bf16 kernel needs AVX512BW/VL/DQ or AVX-NE-CONVERT; elsewhere (AMD Zen 3) the portable
        # path, whose bf16 convolution works there
        return dtype if cpu_bf16_supported() else None
    return dtype if dtype == torch.float32 else None


class CausalConv3d(nn.Conv3d):
    """``nn.Conv3d`` whose temporal padding is ``kernel_t - 1`` zero frames in the past.

    Subclassing ``nn.Conv3d`` keeps the state-dict keys standard (``weight``, ``bias``). With a temporal
    stride ``s`` the output has ``floor((T - 1) / s) + 1`` frames, so ``1 + s*k`` frames map to ``1 + k``:
    the first frame is always encoded on its own.

    In streaming mode (``state`` given) the input is one chunk of a longer clip; the frames the next output
    window needs are kept in ``state`` so that chunked output equals one-pass output. After the first chunk,
    chunk lengths must be multiples of the temporal stride.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int, int] = 3,
        stride: int | tuple[int, int, int] = 1,
        bias: bool = True,
    ) -> None:
        k = (kernel_size,) * 3 if isinstance(kernel_size, int) else tuple(kernel_size)
        s = (stride,) * 3 if isinstance(stride, int) else tuple(stride)
        super().__init__(in_channels, out_channels, k, stride=s, padding=(0, k[1] // 2, k[2] // 2), bias=bias)
        self.time_pad = k[0] - 1

    def forward(self, x: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:  # (B, C, T, H, W)
        fast = self._cpu_inference_dtype(x)
        if self.time_pad == 0 and self.stride[0] == 1:
            return self._conv(x, fast)
        past = state.get(self) if state is not None else None
        b, c, t, h, w = x.shape
        if fast is None:  # autograd, CUDA, fp16: the plain differentiable concatenation
            if past is None:
                past = x.new_zeros(b, c, self.time_pad, h, w)
            padded = torch.cat([past, x], dim=2)
        else:
            # Build the padded input directly in the dtype and layout the convolution consumes: one copy.
            # (A strided conv's cached past can be longer than time_pad: it starts at the next output window.)
            fmt = torch.channels_last_3d
            lead = self.time_pad if past is None else past.shape[2]
            padded = torch.empty((b, c, lead + t, h, w), dtype=fast, device=x.device, memory_format=fmt)
            if past is None:
                padded[:, :, :lead].zero_()
            else:
                padded[:, :, :lead].copy_(past)
            padded[:, :, lead:].copy_(x)
        if state is not None:
            # Output window j starts at padded frame j * stride; keep everything from the first window not yet
            # computed, which is exactly what the next chunk's first window starts with.
            n_out = (padded.shape[2] - self.kernel_size[0]) // self.stride[0] + 1
            state.set(self, padded[:, :, n_out * self.stride[0] :].detach().clone())
        return self._conv(padded, fast)

    def _cpu_inference_dtype(self, x: torch.Tensor) -> torch.dtype | None:
        return cpu_inference_dtype(x, self.weight)

    def _conv(self, x: torch.Tensor, fast: torch.dtype | None) -> torch.Tensor:
        if fast is None:
            return F.conv3d(x, self.weight, self.bias, self.stride, self.padding)
        # oneDNN called directly: F.conv3d picks PyTorch's slow im2col path for batch-1 inputs with
        # C * T * H < 20480, which is every chunk of streamed inference in the small models (up to 10x slower);
        # the result is the same. Autocast is applied by hand (it does not know this op). Activations are
        # channels-last: oneDNN's brgemm kernels are faster on it (10-20 % for bf16 and for narrow fp32 layers,
        # never slower; measured on the build machine) and it needs no activation reorders. The weights keep
        # their standard layout: channels-last weights gain < 1 % here and would double fp32 weight memory.
        weight, bias = self._weights_as(fast)
        x = x.to(fast).contiguous(memory_format=torch.channels_last_3d)
        return torch.ops.aten.mkldnn_convolution(x, weight, bias, self.padding, self.stride, self.dilation, self.groups)

    def _weights_as(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The parameters in ``dtype``, the converted copy cached while they are unchanged (inference only)."""
        if dtype == self.weight.dtype:
            return self.weight.detach(), None if self.bias is None else self.bias.detach()
        key = (dtype, self.weight._version, self.weight.data_ptr(),
               None if self.bias is None else (self.bias._version, self.bias.data_ptr()))
        cache = self.__dict__.get("_cast_cache")
        if cache is None or cache[0] != key:
            bias = None if self.bias is None else self.bias.detach().to(dtype)
            cache = (key, self.weight.detach().to(dtype), bias)
            self.__dict__["_cast_cache"] = cache  # a plain attribute: never part of the state dict
        return cache[1], cache[2]
