"""Offline compression of weight matrices (Banaei et al. 2023), with no fine-tuning afterwards: the procedure.

Chosen `nn.Linear` layers (by default the decoder's feed-forward layers) are replaced by smaller modules holding
`ratio` times fewer parameters, chosen by name:

- "svd": truncated SVD, the baseline. A Linear (out × in) becomes in → r → out (`LowRankLinear`).
- "ae": the paper's method. Each row of a weight matrix is a data point; rows of all chosen layers with the same
  input width are compressed together ("concatenated" across layers, which the paper found better) by one
  autoencoder trained on cosine distance plus a little L2. Each layer keeps only its rows' codes
  (`AECompressedLinear`); the group's decoder is shared and lives once in `model.weight_decoders`.

The compressed layers, and saving / rebuilding their structure, live in `shrinktune.models.weight_compression`.

    from shrinktune.models.weight_compression import compression_structure
    from shrinktune.training.weight_compression import WeightCompression, compress_weights
    report = compress_weights(model, WeightCompression(method="ae", ratio=4.0))
    structure = compression_structure(model)  # JSON: store it next to what save_pretrained wrote
    # later: fresh = type(model)(config); apply_compression_structure(fresh, structure); fresh.load_state_dict(...)
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from shrinktune.errors import ConfigError
from shrinktune.measure.params import count_parameters
from shrinktune.models.weight_compression import (
    AECompressedLinear,
    LowRankLinear,
    RowDecoder,
    replace_module,
    shared_decoders,
)

logger = logging.getLogger(__name__)

METHODS = ("svd", "ae")
AE_ENCODERS = ("linear", "mlp")
# The "little L2" next to the cosine distance in the AE loss. It is relative (MSE ÷ mean squared target), else it
# vanishes beside the cosine term for small weights and row lengths go unlearned (error 0.59 vs 0.11, rank-2 test).
L2_WEIGHT = 0.1

# The decoder's feed-forward Linear layers, attention projections excluded: BART / Pegasus / Marian (fc1, fc2),
# T5 (DenseReluDense.wi / wi_0 / wi_1 / wo) and a BERT decoder (layer.N.intermediate.dense, layer.N.output.dense;
# attention.output.dense is not directly after layer.N, so it is left alone).
DECODER_FFN_PATTERN = (
    r"decoder\..*(?:layers\.\d+\.fc[12]"
    r"|block\.\d+\.layer\.\d+\.DenseReluDense\.w(?:i|i_0|i_1|o)"
    r"|layer\.\d+\.(?:intermediate|output)\.dense)$"
)


@dataclass(frozen=True)
class WeightCompression:
    """How to compress weight matrices offline."""

    method: str = "ae"  # "svd" (truncated SVD) or "ae" (row autoencoder, Banaei et al.)
    ratio: float = 2.0  # params of the chosen Linear layers before ÷ after (biases included, kept as they are)
    modules: tuple[str, ...] = (DECODER_FFN_PATTERN,)  # regexes, re.search-ed against model.named_modules() names
    ae_epochs: int = 300  # passes over each group's rows
    ae_learning_rate: float = 3e-3  # Adam
    ae_batch_size: int = 1024  # rows per Adam step
    ae_encoder: str = "mlp"  # encoder half, discarded afterwards: "linear" or "mlp" (LeakyReLU)
    seed: int = 0  # AE initialisation and row shuffling

    def __post_init__(self):
        if self.method not in METHODS:
            raise ConfigError(f"weight compression method must be one of {METHODS}, got {self.method!r}.")
        if not isinstance(self.ratio, (int, float)) or not math.isfinite(self.ratio) or self.ratio <= 1:
            raise ConfigError(f"weight compression ratio must be a number > 1 (params before ÷ after), "
                              f"got {self.ratio!r}; e.g. 2.0 halves the chosen layers.")
        modules = (self.modules,) if isinstance(self.modules, str) else tuple(self.modules)
        if not modules:
            raise ConfigError("weight compression needs at least one module pattern, got none.")
        for pattern in modules:
            try:
                re.compile(pattern)
            except (re.error, TypeError) as error:
                raise ConfigError(f"module pattern '{pattern}' is not a valid regular expression ({error}); "
                                  f"fix the pattern.") from None
        object.__setattr__(self, "modules", modules)
        for name in ("ae_epochs", "ae_batch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigError(f"{name} must be an integer ≥ 1, got {getattr(self, name)!r}.")
        if not self.ae_learning_rate > 0:
            raise ConfigError(f"ae_learning_rate must be > 0, got {self.ae_learning_rate!r}.")
        if self.ae_encoder not in AE_ENCODERS:
            raise ConfigError(f"ae_encoder must be one of {AE_ENCODERS}, got {self.ae_encoder!r}.")


def _linear_params(linear: nn.Linear) -> int:
    return linear.weight.numel() + (linear.bias.numel() if linear.bias is not None else 0)


def _relative_error(original: torch.Tensor, approximation: torch.Tensor) -> float:
    original = original.detach().float()
    return float(torch.linalg.norm(original - approximation.detach().float()) / torch.linalg.norm(original))


def choose_linears(model: nn.Module, patterns: tuple[str, ...]) -> dict[str, nn.Linear]:
    """The `nn.Linear` modules whose names match any pattern (`re.search`), in model order.

    Raises:
        ConfigError: If a pattern matches no nn.Linear, or a chosen weight is tied to another parameter.
    """
    linears = {name: module for name, module in model.named_modules() if isinstance(module, nn.Linear)}
    chosen = {}
    for pattern in patterns:
        matched = {name: module for name, module in linears.items() if re.search(pattern, name)}
        if not matched:
            example = next(iter(linears), "none")
            raise ConfigError(f"module pattern '{pattern}' matches no nn.Linear in {type(model).__name__} "
                              f"(Linear names look like {example!r}); fix or drop the pattern.")
        chosen.update(matched)
    owners: dict[int, list[str]] = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        owners.setdefault(parameter.data_ptr(), []).append(name)
    for name, module in chosen.items():
        names = owners[module.weight.data_ptr()]
        if len(names) > 1:
            raise ConfigError(f"{name}.weight is tied to {[n for n in names if n != name + '.weight']}; "
                              f"compressing it would untie them; leave {name!r} out of the module patterns.")
    return {name: chosen[name] for name in linears if name in chosen}


def _compress_svd(model: nn.Module, chosen: dict[str, nn.Linear], settings: WeightCompression) -> dict:
    modules = {}
    for name, linear in chosen.items():
        before = _linear_params(linear)
        bias = before - linear.weight.numel()
        # The largest r with r·(in + out) + bias ≤ before / ratio.
        rank = min(int((before / settings.ratio - bias) // (linear.in_features + linear.out_features)),
                   min(linear.in_features, linear.out_features))
        if rank < 1:
            raise ConfigError(f"ratio {settings.ratio} leaves {name} ({linear.out_features}×{linear.in_features}) "
                              f"no room for even rank 1; lower the ratio.")
        replacement = LowRankLinear.from_linear(linear, rank)
        modules[name] = {"method": "svd", "rank": rank, "params_before": before,
                         "params_after": count_parameters(replacement),
                         "relative_error": _relative_error(linear.weight, replacement.weight)}
        replace_module(model, name, replacement)
    return {"modules": modules, "groups": {}}


def ae_sizes(rows: int, in_features: int, budget: float) -> tuple[int, int] | None:
    """Code size k and decoder hidden width h (= min(in, 2k)) with the largest k whose codes + decoder fit `budget`.

    Returns:
        (k, h), or None when not even k = 1 fits.
    """
    best = None
    for code_size in range(1, in_features + 1):
        hidden = min(in_features, 2 * code_size)
        cost = rows * code_size + (code_size + 1) * hidden + (hidden + 1) * in_features
        if cost > budget:
            break
        best = (code_size, hidden)
    return best


def train_row_autoencoder(rows: torch.Tensor, code_size: int, hidden: int,
                          settings: WeightCompression) -> tuple[RowDecoder, torch.Tensor, list[float]]:
    """Trains an autoencoder on weight rows (1 − cosine + 0.1 · relative MSE, Adam) and keeps its decoder half.

    Uses the global torch RNG for initialisation and shuffling: seed it (as `compress_weights` does) to repeat.

    Args:
        rows: (n, in) weight rows; trained in float32 on their device.
        code_size: k, the width of each row's code.
        hidden: h, the width of the decoder's hidden layer (and of an "mlp" encoder's).
        settings: Epochs, learning rate, batch size and encoder kind.

    Returns:
        The decoder (scale set to undo the row scaling), the rows' codes (n, k), and the mean loss of each epoch.
    """
    with torch.inference_mode(False), torch.enable_grad():  # callers may hold no_grad around a model
        in_features, device = rows.shape[1], rows.device
        scale = rows.detach().float().abs().max().clamp_min(1e-12)
        data = rows.detach().float() / scale  # (n, in), in [-1, 1] for Tanh
        if settings.ae_encoder == "linear":
            encoder = nn.Sequential(nn.Linear(in_features, code_size))
        else:
            encoder = nn.Sequential(nn.Linear(in_features, hidden), nn.LeakyReLU(), nn.Linear(hidden, code_size))
        decoder = RowDecoder(code_size, hidden, in_features)  # built on CPU so the CPU seed alone decides the init
        encoder, decoder = encoder.to(device), decoder.to(device)
        optimizer = torch.optim.Adam([*encoder.parameters(), *decoder.parameters()], lr=settings.ae_learning_rate)
        losses = [_train_epoch(encoder, decoder, optimizer, data, settings.ae_batch_size)
                  for _ in range(settings.ae_epochs)]
        with torch.no_grad():
            codes = encoder(data)  # (n, k)
            decoder.scale.fill_(scale)
    return decoder, codes, losses


def _train_epoch(encoder: nn.Module, decoder: RowDecoder, optimizer: torch.optim.Optimizer, data: torch.Tensor,
                 batch_size: int) -> float:
    total = 0.0
    for batch in torch.randperm(len(data)).to(data.device).split(batch_size):
        target = data[batch]  # (batch, in)
        output = decoder.net(encoder(target))  # (batch, in)
        angle = (1 - F.cosine_similarity(output, target, dim=1)).mean()
        size = F.mse_loss(output, target) / target.pow(2).mean().clamp_min(1e-12)  # relative: scale-free
        loss = angle + L2_WEIGHT * size
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += loss.item() * len(batch)
    return total / len(data)


def _group_name(decoders: nn.ModuleDict, in_features: int) -> str:
    name, n = f"in{in_features}", 1
    while name in decoders:
        name, n = f"in{in_features}_{n}", n + 1
    return name


def _compress_ae(model: nn.Module, chosen: dict[str, nn.Linear], settings: WeightCompression) -> dict:
    by_width: dict[int, list[str]] = {}
    for name, linear in chosen.items():
        by_width.setdefault(linear.in_features, []).append(name)
    decoders = shared_decoders(model)
    modules, groups = {}, {}
    for in_features, names in by_width.items():
        linears = [chosen[name] for name in names]
        rows = sum(linear.out_features for linear in linears)
        before = sum(_linear_params(linear) for linear in linears)
        biases = before - rows * in_features
        sizes = ae_sizes(rows, in_features, before / settings.ratio - biases)
        if sizes is None:
            raise ConfigError(f"ratio {settings.ratio} leaves too few parameters for the {rows} rows of width "
                              f"{in_features} in {names} to get even a 1-wide code; lower the ratio.")
        code_size, hidden = sizes
        weights = torch.cat([linear.weight.detach() for linear in linears])  # (rows, in)
        decoder, codes, losses = train_row_autoencoder(weights, code_size, hidden, settings)
        dtype = weights.dtype
        decoder = decoder.to(dtype)
        group = _group_name(decoders, in_features)
        decoders[group] = decoder
        for name, linear, part in zip(names, linears, codes.split([layer.out_features for layer in linears])):
            replacement = AECompressedLinear(linear.out_features, decoder, group, bias=False)
            replacement.codes = nn.Parameter(part.to(dtype).contiguous())  # (out, k)
            replacement.bias = linear.bias
            modules[name] = {"method": "ae", "code_size": code_size, "group": group, "params_before":
                             _linear_params(linear), "params_after": count_parameters(replacement),
                             "relative_error": _relative_error(linear.weight, replacement.weight)}
            replace_module(model, name, replacement)
        groups[group] = {"in_features": in_features, "rows": rows, "code_size": code_size, "hidden": hidden,
                         "decoder_params": count_parameters(decoder), "modules": names, "losses": losses}
        logger.info("weight AE %s: %d rows × %d → codes of %d, loss %.4f → %.4f", group, rows, in_features,
                    code_size, losses[0], losses[-1])
    return {"modules": {name: modules[name] for name in chosen}, "groups": groups}


_COMPRESSORS = {"svd": _compress_svd, "ae": _compress_ae}


def compress_weights(model: nn.Module, settings: WeightCompression) -> dict:
    """Replaces the chosen Linear layers of `model` in place by compressed ones; no fine-tuning.

    Args:
        model: Any torch model, e.g. a transformers seq2seq model.
        settings: Method, ratio, module patterns and AE training settings.

    Returns:
        {"modules": {name: {"method", "rank" (svd) | "code_size" and "group" (ae), "params_before",
        "params_after", "relative_error"}}, "groups": {group: {"in_features", "rows", "code_size", "hidden",
        "decoder_params", "modules", "losses"}} (ae only), "params_before", "params_after", "achieved_ratio"};
        "relative_error" is ‖W − Ŵ‖_F / ‖W‖_F, and the totals count each shared decoder once.

    Raises:
        ConfigError: If a pattern matches no nn.Linear, a chosen weight is tied, or the ratio leaves no room.
    """
    chosen = choose_linears(model, settings.modules)
    # New parameters must be ordinary tensors even if the caller is in inference mode.
    with torch.random.fork_rng(devices=[]), torch.inference_mode(False):
        torch.manual_seed(settings.seed)
        report = _COMPRESSORS[settings.method](model, chosen, settings)
    before = sum(entry["params_before"] for entry in report["modules"].values())
    after = sum(entry["params_after"] for entry in report["modules"].values())
    after += sum(group["decoder_params"] for group in report["groups"].values())
    report.update(params_before=before, params_after=after, achieved_ratio=before / after)
    logger.info("compressed %d Linear layers with %s: %d → %d params (%.2f×)", len(chosen), settings.method,
                before, after, before / after)
    return report
