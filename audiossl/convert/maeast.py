"""Import MAE-AST (AlanBaade/MAE-AST-Public) fairseq checkpoints as the native ``maeast`` objective.

A release file is fairseq's ``{"cfg": {"model": ..., "task": ...}, "model": state_dict,
"optimizer_history", "extra_state", ...}`` (older fairseq: ``"args"``, a flat namespace). The
architecture is read from ``cfg.model`` (kernel, widths, heads, dropouts, which positional
embeddings are on) and ``cfg.task`` (``feature_dim``, ``mask_type``); the state dict gives depth
and widths and is checked against them.

Renames (fairseq ``TransformerSentenceEncoderLayer`` → :class:`~audiossl.nn.blocks.Block`, post-LN):
``post_extract_proj`` → ``encoder.patch_embed.proj``; ``encoder.layer_norm`` →
``encoder.norm_pre``; ``encoder.layers.N.self_attn.{q,k,v}_proj`` → one ``blocks.N.attn.qkv``
(concatenated q, k, v); ``out_proj`` → ``attn.proj``; ``self_attn_layer_norm`` → ``norm1``;
``fc1``/``fc2`` → ``mlp.fc1``/``mlp.fc2``; ``final_layer_norm`` → ``norm2``; the same under
``decoder.`` → ``decoder_norm_pre``/``decoder_blocks``. ``batch_norm``, ``decoder_mask_emb`` and
the two ``final_proj_*`` heads keep their names.

Dropped: ``encoder_mask_emb`` and ``layer_norm`` (a ``LayerNorm(feature_dim)``), which upstream
builds but never uses on the released path, and the ``enc_sine_pos_embed.pe`` /
``dec_sine_pos_embed.pe`` buffers (48000 × 768 each), which are checked against our table and
then rebuilt per sequence length. Token layout needs no change: MAE-AST's ``Unfold`` on
``(B, 1, T, F)`` is already time-major, inside and across patches.

Front end: the ``mae_ast`` fbank preset, no dataset normaliser (the model's BatchNorm running
statistics and ×0.5 are the normalisation), no fixed length (MAE-AST crops a batch to its
shortest clip).
"""

from __future__ import annotations

import logging
from typing import Any, Dict, Mapping, Optional, Tuple

import torch
from torch import Tensor

from audiossl.convert.common import ImportPlan, block_count, config_value, default_heads, is_state_dict, require_keys
from audiossl.features import FbankConfig
from audiossl.models.encoder import family_config
from audiossl.models.maeast import MAEASTConfig
from audiossl.nn.pos_embed import sincos_1d
from audiossl.checkpoint import CheckpointError

__all__ = ["CONVERTERS", "convert_maeast", "plan_maeast"]

logger = logging.getLogger(__name__)

StateDict = Dict[str, Tensor]

# MAE_AST_Config defaults overridden by config/pretrain/mae_ast.yaml, which both releases used.
_MODEL_DEFAULTS: Dict[str, Any] = {
    "ast_kernel_size_chan": 16, "ast_kernel_size_time": 16, "encoder_attention_heads": None,
    "encoder_layers": None, "decoder_layers": None,
    "activation_fn": "gelu", "layer_norm_first": False, "use_post_enc_proj": False,
    "dropout": 0.1, "attention_dropout": 0.1, "activation_dropout": 0.0, "dropout_input": 0.1,
    "encoder_layerdrop": 0.05, "decoder_layerdrop": 0.0, "random_mask_prob": 0.75,
    "enc_sine_pos": True, "dec_sine_pos": True, "enc_conv_pos": False, "dec_conv_pos": False,
}
_MASK_TYPES = {"chunk_mask": "chunk", "random_mask": "random", "random_mask_batched": "random_batched"}
_LAYER = (  # fairseq layer part -> Block part
    ("self_attn.out_proj", "attn.proj"),
    ("self_attn_layer_norm", "norm1"),
    ("fc1", "mlp.fc1"),
    ("fc2", "mlp.fc2"),
    ("final_layer_norm", "norm2"),
)
_UNUSED = ("encoder_mask_emb", "layer_norm.weight", "layer_norm.bias", "enc_sine_pos_embed.pe", "dec_sine_pos_embed.pe")
# Rows of a stored sinusoid compared with ours (the table is a closed formula; a prefix shows a
# different one).
_PE_ROWS_CHECKED = 1024


def _split(obj: Any) -> Tuple[StateDict, Any, Any]:
    """(state dict, model cfg, task cfg) of a fairseq file or a bare state dict."""
    if isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping):
        cfg = obj.get("cfg")
        if cfg is not None:
            model_cfg, task_cfg = config_value(cfg, "model"), config_value(cfg, "task")
        else:  # fairseq < 0.10: one flat argparse namespace
            model_cfg = task_cfg = obj.get("args")
        sd = obj["model"]
    else:
        sd, model_cfg, task_cfg = obj, None, None
    if not is_state_dict(sd):
        raise CheckpointError(None, "expected a fairseq MAE-AST checkpoint ({'cfg', 'model'}), "
                                    f"got {type(obj).__name__}")
    return {str(k): v for k, v in sd.items()}, model_cfg, task_cfg


def _stack(sd: Mapping[str, Tensor], src: str, dst: str, depth: int, out: StateDict, used: set) -> None:
    """fairseq layers ``src{i}.`` → Blocks ``dst{i}.`` (q, k, v concatenated into ``qkv``)."""
    for i in range(depth):
        s, d = f"{src}{i}.", f"{dst}{i}."
        for part in ("weight", "bias"):
            qkv = [f"{s}self_attn.{n}_proj.{part}" for n in ("q", "k", "v")]
            out[f"{d}attn.qkv.{part}"] = torch.cat([sd[k] for k in qkv], dim=0)
            used.update(qkv)
            for fairseq_part, block_part in _LAYER:
                k = f"{s}{fairseq_part}.{part}"
                out[f"{d}{block_part}.{part}"] = sd[k]
                used.add(k)


def _check_sinusoid(sd: Mapping[str, Tensor], key: str, dim: int) -> None:
    pe = sd.get(key)
    if pe is None or pe.is_meta:  # meta tensors (shape-only planning) hold no values
        return
    rows = min(pe.shape[-2], _PE_ROWS_CHECKED)
    ours = sincos_1d(dim, rows)
    diff = (pe.reshape(-1, pe.shape[-1])[:rows].float() - ours).abs().max().item()
    if pe.shape[-1] != dim or diff > 1e-5:
        raise CheckpointError(None, f"{key} is not MAE-AST's sinusoid (max difference {diff:.3g}); not supported")


def plan_maeast(obj: Any, *, num_heads: Optional[int] = None,
                patch_size: Optional[Tuple[int, int]] = None) -> ImportPlan:
    """Plan a MAE-AST import (see :func:`convert_maeast`)."""
    sd, mcfg, tcfg = _split(obj)

    def opt(name: str) -> Any:
        return config_value(mcfg, name, _MODEL_DEFAULTS.get(name))

    required = ["post_extract_proj.weight", "post_extract_proj.bias", "batch_norm.running_mean",
                "batch_norm.running_var", "decoder_mask_emb", "encoder.layer_norm.weight", "decoder.layer_norm.weight",
                "final_proj_reconstruction.weight", "final_proj_classification.weight"]
    require_keys(sd, required, "MAE-AST checkpoint")
    unsupported = [k for k in sd if k.startswith(("enc_conv_pos_embed.", "dec_conv_pos_embed.", "post_enc_proj."))]
    problems = [f"{name}={opt(name)!r}" for name, ok in (
        ("activation_fn", "gelu"), ("layer_norm_first", False), ("use_post_enc_proj", False),
        ("enc_conv_pos", False), ("dec_conv_pos", False), ("enc_sine_pos", True), ("dec_sine_pos", True),
    ) if opt(name) != ok]
    if unsupported or problems:
        raise CheckpointError(None, "uses MAE-AST options the native model does not have: "
                                    f"{problems + sorted(unsupported)[:6]}")

    D, patch_dim = sd["post_extract_proj.weight"].shape
    if patch_size is not None:
        k_time, k_chan = int(patch_size[0]), int(patch_size[1])
    elif mcfg is not None:
        k_time, k_chan = int(opt("ast_kernel_size_time")), int(opt("ast_kernel_size_chan"))
    else:
        raise CheckpointError(None, "has no cfg/args: pass patch_size=(time, chan); 256 inputs per token "
                                    "may be 16x16 patches or 2x128 frames")
    strides = (int(config_value(mcfg, "ast_kernel_stride_time", k_time)),
               int(config_value(mcfg, "ast_kernel_stride_chan", k_chan)))
    if k_time * k_chan != patch_dim or strides != (k_time, k_chan):
        raise CheckpointError(None, f"kernel {k_time}x{k_chan} (stride {strides}) does not fit post_extract_proj "
                                    f"of {patch_dim} inputs with non-overlapping tokens")
    n_mels = int(config_value(tcfg, "feature_dim",
                              sd["layer_norm.weight"].shape[0] if "layer_norm.weight" in sd else 128))
    heads = opt("encoder_attention_heads") or num_heads
    if heads is None:
        heads = default_heads(int(D))
        logger.info("maeast: number of heads not stored; using the ViT default %d for width %d", heads, D)
    depth = block_count(sd, "encoder.layers.", "MAE-AST checkpoint")
    dec_depth = block_count(sd, "decoder.layers.", "MAE-AST checkpoint")
    for name, found in (("encoder_layers", depth), ("decoder_layers", dec_depth)):
        if opt(name) is not None and int(opt(name)) != found:
            raise CheckpointError(None, f"has {found} {name.split('_')[0]} layers but its cfg says {name}={opt(name)}")
    parts = [f"{n}.{p}" for n in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", *(f for f, _ in _LAYER))
             for p in ("weight", "bias")]
    require_keys(sd, [f"{stack}{i}.{part}" for stack, n in (("encoder.layers.", depth), ("decoder.layers.", dec_depth))
                      for i in range(n) for part in parts], "MAE-AST layers")
    fc1 = sd["encoder.layers.0.fc1.weight"]
    encoder = family_config(
        "mae_ast", embed_dim=int(D), depth=depth, num_heads=int(heads),
        mlp_ratio=fc1.shape[0] / D,
        patch_size=(k_time, k_chan), n_mels=n_mels, pos_grid=(998 // k_time, n_mels // k_chan),
        drop=float(opt("dropout")), attn_drop=float(opt("attention_dropout")),
        act_drop=float(opt("activation_dropout")), input_drop=float(opt("dropout_input")),
    )
    mask_type = config_value(tcfg, "mask_type", "chunk_mask" if (k_time, k_chan) == (16, 16) else "random_mask")
    if mask_type not in _MASK_TYPES:
        logger.warning("maeast: mask_type %r has no native sampler; continued pretraining uses random masks", mask_type)
    config = MAEASTConfig(
        encoder=encoder, decoder_depth=dec_depth, mask_type=_MASK_TYPES.get(mask_type, "random"),
        mask_ratio=float(opt("random_mask_prob")), encoder_layerdrop=float(opt("encoder_layerdrop")),
        decoder_layerdrop=float(opt("decoder_layerdrop")),
    )

    for key in ("enc_sine_pos_embed.pe", "dec_sine_pos_embed.pe"):
        _check_sinusoid(sd, key, int(D))
    used = set(_UNUSED)
    state: StateDict = {}
    renames = {"post_extract_proj.": "encoder.patch_embed.proj.", "encoder.layer_norm.": "encoder.norm_pre.",
               "decoder.layer_norm.": "decoder_norm_pre."}
    for theirs, ours in renames.items():
        for part in ("weight", "bias"):
            if theirs + part in sd:
                state[ours + part] = sd[theirs + part]
                used.add(theirs + part)
    _stack(sd, "encoder.layers.", "encoder.blocks.", depth, state, used)
    _stack(sd, "decoder.layers.", "decoder_blocks.", dec_depth, state, used)
    # Same names on both sides (batch_norm.*, decoder_mask_emb, final_proj_*) and anything
    # unknown, which the strict load then names.
    state.update({k: v for k, v in sd.items() if k not in used})
    meta = {"source": "maeast", "upstream_mask_type": mask_type}
    return ImportPlan("maeast", config, state, meta, fbank=FbankConfig.preset("mae_ast").to_dict())


def convert_maeast(obj: Any, *, hf_config: Optional[Mapping[str, Any]] = None, num_heads: Optional[int] = None,
                   patch_size: Optional[Tuple[int, int]] = None) -> Dict[str, Any]:
    """A MAE-AST fairseq checkpoint (``chunk_patch_75_12LayerEncoder.pt``,
    ``random_frame_75_12LayerEncoder.pt``) as a native ``maeast`` payload: encoder, 2-layer
    decoder, both heads and the input BatchNorm statistics, so it embeds (``extract_features``)
    and continues pretraining. ``num_heads`` and ``patch_size`` (time, chan) are only needed for
    a bare state dict without ``cfg``. ``hf_config`` is unused."""
    return plan_maeast(obj, num_heads=num_heads, patch_size=patch_size).payload()


CONVERTERS = {"maeast": convert_maeast}
