"""Compressed weight matrices (Banaei et al. 2023): the layers that replace `nn.Linear`, and their structure.

- `LowRankLinear`: a Linear (out × in) factored through rank r, in → r → out ("svd").
- `AECompressedLinear`: a Linear whose weight rows are decoded from per-row codes by a `RowDecoder` shared by a
  group of layers ("ae"); the group's decoder lives once in `model.weight_decoders`.

`shrinktune.training.weight_compression.compress_weights` makes them from a trained model. Here a compressed model's
structure is described (`compression_structure`) and rebuilt on a fresh model (`apply_compression_structure`):

    structure = compression_structure(model)  # JSON: store it next to what save_pretrained wrote
    # later: fresh = type(model)(config); apply_compression_structure(fresh, structure); fresh.load_state_dict(...)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from shrinktune.errors import ConfigError

DECODERS_ATTRIBUTE = "weight_decoders"  # where the shared AE decoders live on the model (an nn.ModuleDict)


class LowRankLinear(nn.Module):
    """A Linear (out × in) factored through rank r: x → x·downᵀ (r wide) → ·upᵀ + bias (out wide)."""

    bias: torch.Tensor | None  # registered in __init__ (None when bias=False)

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True, device=None, dtype=None):
        super().__init__()
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.down = nn.Parameter(torch.zeros(rank, in_features, device=device, dtype=dtype))  # (r, in)
        self.up = nn.Parameter(torch.zeros(out_features, rank, device=device, dtype=dtype))  # (out, r)
        self.register_parameter("bias", nn.Parameter(torch.zeros(out_features, device=device, dtype=dtype))
                                if bias else None)

    @classmethod
    def from_linear(cls, linear: nn.Linear, rank: int) -> LowRankLinear:
        """The best rank-`rank` approximation of `linear` (truncated SVD, √σ on each side); its bias is shared."""
        weight = linear.weight.detach()
        u, s, vh = torch.linalg.svd(weight.float(), full_matrices=False)  # (out, m), (m,), (m, in)
        root = s[:rank].sqrt()
        module = cls(linear.in_features, linear.out_features, rank, bias=False)
        module.up = nn.Parameter((u[:, :rank] * root).to(weight).contiguous())  # (out, r)
        module.down = nn.Parameter((root[:, None] * vh[:rank]).to(weight).contiguous())  # (r, in)
        module.bias = linear.bias
        return module

    @property
    def weight(self) -> torch.Tensor:
        """The (out, in) matrix this layer applies; some models read `.weight` for its dtype (T5)."""
        return self.up @ self.down

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.linear(x, self.down), self.up, self.bias)  # (..., in) → (..., r) → (..., out)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}"


class RowDecoder(nn.Module):
    """Decoder half of a row autoencoder, shared by one group: codes (rows, k) → weight rows (rows, in)."""

    scale: torch.Tensor  # a registered buffer

    def __init__(self, code_size: int, hidden: int, in_features: int, device=None, dtype=None):
        super().__init__()
        self.code_size, self.hidden, self.in_features = code_size, hidden, in_features
        self.net = nn.Sequential(nn.Linear(code_size, hidden, device=device, dtype=dtype), nn.LeakyReLU(),
                                 nn.Linear(hidden, in_features, device=device, dtype=dtype), nn.Tanh())
        # Rows were divided by this (the group's largest |weight|) to fit Tanh's range; multiplying undoes it.
        self.register_buffer("scale", torch.ones((), device=device, dtype=dtype))

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        return self.net(codes) * self.scale  # (rows, k) → (rows, in)


class AECompressedLinear(nn.Module):
    """A Linear whose weight rows are decoded from per-row codes by its group's shared `RowDecoder`.

    The decoder is referenced, not registered: the model registers it once (`model.weight_decoders`), so the
    state dict and `count_parameters` hold it once however many layers share it.
    """

    bias: torch.Tensor | None  # registered in __init__ (None when bias=False)
    row_decoder: RowDecoder  # set in __init__, deliberately not registered as a submodule

    def __init__(self, out_features: int, decoder: RowDecoder, group: str, bias: bool = True, device=None,
                 dtype=None):
        super().__init__()
        self.in_features, self.out_features, self.group = decoder.in_features, out_features, group
        self.codes = nn.Parameter(torch.zeros(out_features, decoder.code_size, device=device, dtype=dtype))
        self.register_parameter("bias", nn.Parameter(torch.zeros(out_features, device=device, dtype=dtype))
                                if bias else None)
        object.__setattr__(self, "row_decoder", decoder)  # bypasses nn.Module registration on purpose
        self._cache: tuple[list, torch.Tensor] | None = None

    def _inputs(self) -> list[torch.Tensor]:
        return [self.codes, *self.row_decoder.parameters(), *self.row_decoder.buffers()]

    @property
    def weight(self) -> torch.Tensor:
        """The (out, in) matrix this layer applies, decoded from the codes.

        Cached while nothing needs a graph (eval, no_grad), since decoding costs far more than applying the layer
        to one token. The cache follows in-place changes (optimizer steps, `load_state_dict`) by version
        counters; a change made through `.data` is not seen until the next `train()` / `eval()`.
        """
        inputs = self._inputs()
        if torch.is_grad_enabled() and any(t.requires_grad for t in inputs):
            return self.row_decoder(self.codes)
        # Holding the tensors keeps their storage alive, so a replaced tensor cannot reuse the address;
        # an in-place change (optimizer step, load_state_dict) bumps the version.
        if self._cache is not None:
            held, weight = self._cache
            if len(held) == len(inputs) and all(h.data_ptr() == t.data_ptr() and v == t._version and h.dtype == t.dtype
                                                for (h, v), t in zip(held, inputs)):
                return weight
        with torch.no_grad():
            weight = self.row_decoder(self.codes)  # (out, in)
        self._cache = ([(t.detach(), t._version) for t in inputs], weight)
        return weight

    def train(self, mode: bool = True) -> AECompressedLinear:
        self._cache = None  # also forgets changes made through `.data`, which bypass version counting
        return super().train(mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)  # (..., in) → (..., out)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"code_size={self.codes.shape[1]}, group={self.group!r}")


def replace_module(model: nn.Module, name: str, module: nn.Module) -> None:
    """Puts `module` in place of the submodule of `model` called `name` (dotted)."""
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent), child, module)


def shared_decoders(model: nn.Module) -> nn.ModuleDict:
    """The model's `weight_decoders` ModuleDict (the shared AE decoders, registered once), made when absent."""
    if not isinstance(getattr(model, DECODERS_ATTRIBUTE, None), nn.ModuleDict):
        model.add_module(DECODERS_ATTRIBUTE, nn.ModuleDict())
    return getattr(model, DECODERS_ATTRIBUTE)


def compression_structure(model: nn.Module) -> dict:
    """A JSON-serialisable description of the compressed modules of `model`, for `apply_compression_structure`."""
    modules, groups = {}, {}
    for name, module in model.named_modules():
        if isinstance(module, LowRankLinear):
            modules[name] = {"kind": "svd", "in_features": module.in_features, "out_features": module.out_features,
                             "bias": module.bias is not None, "rank": module.rank}
        elif isinstance(module, AECompressedLinear):
            decoder = module.row_decoder
            modules[name] = {"kind": "ae", "in_features": module.in_features, "out_features": module.out_features,
                             "bias": module.bias is not None, "group": module.group}
            groups[module.group] = {"in_features": decoder.in_features, "code_size": decoder.code_size,
                                    "hidden": decoder.hidden}
    return {"modules": modules, "ae_groups": groups}


def apply_compression_structure(model: nn.Module, structure: dict) -> None:
    """Rebuilds the compressed modules described by `structure` (empty) on a freshly built `model`, in place.

    Afterwards `model.load_state_dict(...)` of the compressed model's weights restores it.

    Raises:
        ConfigError: If the structure names a module the model lacks, or whose kind or shape differs.
    """
    decoders: dict[str, RowDecoder] = {}
    for group, spec in structure.get("ae_groups", {}).items():
        decoders[group] = RowDecoder(spec["code_size"], spec["hidden"], spec["in_features"])
    for name, spec in structure.get("modules", {}).items():
        try:
            linear = model.get_submodule(name)
        except AttributeError:
            linear = None
        shape = (spec.get("out_features"), spec.get("in_features"))
        if not isinstance(linear, nn.Linear) or (linear.out_features, linear.in_features) != shape:
            raise ConfigError(f"the compression structure replaces a {shape[0]}×{shape[1]} nn.Linear at {name!r}, "
                              f"but {type(model).__name__} has {type(linear).__name__} there; apply it to the "
                              f"model it was made from.")
        device, dtype = linear.weight.device, linear.weight.dtype
        replacement: nn.Module
        if spec.get("kind") == "svd":
            replacement = LowRankLinear(linear.in_features, linear.out_features, spec["rank"], spec["bias"],
                                        device=device, dtype=dtype)
        elif spec.get("kind") == "ae" and spec.get("group") in decoders:
            decoder = decoders[spec["group"]].to(device=device, dtype=dtype)
            decoders[spec["group"]] = decoder
            replacement = AECompressedLinear(linear.out_features, decoder, spec["group"], spec["bias"],
                                             device=device, dtype=dtype)
        else:
            raise ConfigError(f"compression structure entry {name!r} has kind {spec.get('kind')!r} and group "
                              f"{spec.get('group')!r}; kinds are 'svd' and 'ae' (with a group listed in ae_groups).")
        replace_module(model, name, replacement)
    if decoders:
        shared_decoders(model).update(decoders)
