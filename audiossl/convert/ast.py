"""Import SSAST, AST and Hugging Face AST checkpoints, and export patch models to the HF AST layout.

Sources (``CONVERTERS``):

* ``ssast`` — YuanGongND/ssast pretraining files: a DataParallel state dict (``module.`` prefix)
  holding the DeiT encoder ``v.*``, ``mask_embed``, ``cpredlayer``/``gpredlayer`` and the
  pretraining input size as the scalars ``p_input_fdim``/``p_input_tdim`` → the full ``ssast``
  objective. Fine-tuned SSAST files (``v.*`` + ``mlp_head``) → a bare ``encoder`` with the head in
  ``meta`` (SSAST's default ``ft_avgtok`` pooling).
* ``ast`` — YuanGongND/ast fine-tuned files (``module.v.*`` + ``module.mlp_head``, overlapping
  stride-10 patches) → ``encoder`` + head (mean of the cls and dist outputs).
* ``ast_hf`` — transformers ``ASTForAudioClassification``/``ASTModel`` state dicts in the Hub
  layout (``encoder.layer.N.attention.attention.query``, what ``save_pretrained`` writes), or the
  in-memory layout of transformers ≥ 5 (``layers.N.attention.q_proj``), with ``config.json``.

Layout. Upstream runs its conv on ``(B, 1, F, T)``: kernels are ``(f, t)`` and tokens
frequency-major (``f·T' + t``). Ours are time-major on ``(B, 1, T, F)`` (ARCHITECTURE.md), so the
conv kernel is transposed and the positional table's grid rows are permuted from ``(F', T')`` to
``(T', F')`` order, once, here; the model has no layout flag. The two leading (cls, dist) rows
of the table are copied as they are. timm's DeiT block names already match ours; DeiT's unused
ImageNet heads ``v.head``/``v.head_dist`` are dropped, as are ``p_input_*`` once read.

Each converter first *plans* (pure key/shape work that also runs on ``device="meta"`` tensors, so
the full-size release layouts are checked without allocating them) and then builds the model and
loads the weights strictly, so a truncated or foreign file fails with a ``CheckpointError``
naming the keys.

The classifier head of fine-tuned files goes into ``meta``: ``head`` = ``{"fc_norm.weight",
"fc_norm.bias", "head.weight", "head.bias"}`` (upstream ``mlp_head.0``/``mlp_head.1``, i.e.
LayerNorm then Linear), ``head_norm_eps`` (1e-5 for upstream's ``nn.LayerNorm``, the config's
``layer_norm_eps`` for HF), ``num_classes``, ``labels`` (HF ``id2label``) and ``head_kind``:

* ``"cls_dist_mean_ln_linear"``: ``head(fc_norm((x[:, 0] + x[:, 1]) / 2))`` (AST, HF AST, SSAST
  ``ft_cls``), ``x`` the encoder output after its final norm;
* ``"mean_ln_linear"``: ``head(fc_norm(x[:, 2:].mean(1)))`` (SSAST ``ft_avgtok``).

What a file does not say and had to be assumed (heads, stride, normaliser) is listed in
``meta["assumed"]`` and logged.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from audiossl.convert.common import (
    ImportPlan,
    block_count,
    config_value,
    default_heads,
    is_state_dict,
    require_keys,
    strip_prefix,
)
from audiossl.features import FbankConfig, Normalizer
from audiossl.models.encoder import Encoder, EncoderConfig, family_config
from audiossl.models.ssast import SSASTConfig
from audiossl.checkpoint import CheckpointError
from audiossl.models.registry import model_from_checkpoint

__all__ = [
    "CONVERTERS",
    "convert_ast",
    "convert_ast_hf",
    "convert_ssast",
    "export_ast_hf",
    "export_ast_hf_preprocessor",
    "freq_to_time_major",
    "plan_ast",
    "plan_ast_hf",
    "plan_ssast",
    "time_to_freq_major",
]

logger = logging.getLogger(__name__)

StateDict = Dict[str, Tensor]
IntPair = Tuple[int, int]

# Every AST/SSAST release and recipe uses 128 mel bins (AST issue #27: other values break upstream).
N_MELS = 128
# Target lengths of the upstream recipes (AudioSet 10 s, ESC-50 5 s, Speech Commands 1 s, SUPERB).
_STANDARD_LENGTHS = (1024, 512, 128, 1000, 998, 600, 100)
# Fine-tuned files do not store their stride; AST's releases are named audioset_{10,12,14,16}_*.
_STRIDE_PREFERENCE = (10, 16, 12, 14)
# Normalisation stats of the upstream fine-tuning recipes, keyed by their class count.
_NORM_BY_CLASSES = {527: "audioset", 50: "esc50", 35: "speechcommands"}
HEAD_KINDS = ("cls_dist_mean_ln_linear", "mean_ln_linear")
# DeiT's 1000-way ImageNet heads, built by timm and saved in every file, never used on audio.
_DEIT_UNUSED = ("head.weight", "head.bias", "head_dist.weight", "head_dist.bias")


# --------------------------------------------------------------------------------- unwrapping
def _unwrap(obj: Any, source: str) -> StateDict:
    """The tensor state dict inside a file: ``{'model'|'state_dict': sd}`` nesting and the
    DataParallel ``module.`` prefix removed."""
    while isinstance(obj, Mapping) and not is_state_dict(obj):
        inner = next((obj[k] for k in ("model", "state_dict") if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not is_state_dict(obj):
        kind = type(obj).__name__ if not isinstance(obj, Mapping) else f"dict with keys {sorted(map(str, obj))[:8]}"
        raise CheckpointError(None, f"expected a {source!r} state dict of tensors, got a {kind}")
    return strip_prefix({str(k): v for k, v in obj.items()}, "module.")


def _require_blocks(sd: Mapping[str, Tensor], prefix: str, depth: int, parts: Sequence[str], source: str) -> None:
    """Name, in the file's own terms, every block tensor a release of this layout has and this
    file lacks (the native load would only name our renamed keys)."""
    require_keys(sd, [f"{prefix}{i}.{part}" for i in range(depth) for part in parts], f"{source} checkpoint")


def _heads(embed_dim: int, num_heads: Optional[int], source: str, assumed: List[str]) -> int:
    """``num_heads``, or the upstream count for the width (not stored in any AST/SSAST file),
    which is then listed in ``assumed``."""
    if num_heads is not None:
        return int(num_heads)
    heads = default_heads(embed_dim)
    assumed.append(f"num_heads={heads} (upstream DeiT/ViT for width {embed_dim})")
    logger.info("%s: number of heads not stored; using the DeiT/ViT default %d for width %d", source, heads, embed_dim)
    return heads


# --------------------------------------------------------------------------------- layout maps
def freq_to_time_major(body: Tensor, f_dim: int, t_dim: int) -> Tensor:
    """``(1, F'·T', D)`` rows in ``f·T' + t`` order → ``(1, T'·F', D)`` in ``t·F' + f`` order."""
    D = body.shape[-1]
    return body.reshape(1, f_dim, t_dim, D).transpose(1, 2).reshape(1, t_dim * f_dim, D)


def time_to_freq_major(body: Tensor, t_dim: int, f_dim: int) -> Tensor:
    """Inverse of :func:`freq_to_time_major`."""
    D = body.shape[-1]
    return body.reshape(1, t_dim, f_dim, D).transpose(1, 2).reshape(1, f_dim * t_dim, D)


def _pos_to_time_major(table: Tensor, f_dim: int, t_dim: int, prefix: int = 2) -> Tensor:
    if table.dim() != 3 or table.shape[1] != prefix + f_dim * t_dim:
        raise CheckpointError(
            None, f"positional table of shape {tuple(table.shape)} does not hold {prefix} + {f_dim}x{t_dim} rows"
        )
    return torch.cat([table[:, :prefix], freq_to_time_major(table[:, prefix:], f_dim, t_dim)], dim=1)


def _deit_encoder_state(sd: Mapping[str, Tensor], prefix: str, f_dim: int, t_dim: int) -> StateDict:
    """timm DeiT keys under ``prefix`` → our :class:`Encoder` keys, time-major."""
    out: StateDict = {}
    for k, v in sd.items():
        name = k[len(prefix):]
        if not k.startswith(prefix) or name in _DEIT_UNUSED:
            continue
        if name == "patch_embed.proj.weight":
            v = v.transpose(2, 3).contiguous()
        elif name == "pos_embed":
            v = _pos_to_time_major(v, f_dim, t_dim)
        out[name] = v
    return out


def _timm_block_parts(qkv_bias: bool) -> List[str]:
    names = ["norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2"]
    return [f"{n}.{p}" for n in names for p in ("weight", "bias") if qkv_bias or n != "attn.qkv" or p == "weight"]


def _deit_sizes(sd: Mapping[str, Tensor], prefix: str, source: str) -> Dict[str, Any]:
    """Width, depth, MLP ratio, qkv bias and (f, t) kernel of a timm DeiT under ``prefix``."""
    keys = [f"{prefix}{k}" for k in ("cls_token", "dist_token", "pos_embed", "patch_embed.proj.weight",
                                      "patch_embed.proj.bias", "norm.weight", "norm.bias")]
    require_keys(sd, keys, f"{source} checkpoint")
    D = sd[f"{prefix}cls_token"].shape[-1]
    depth = block_count(sd, f"{prefix}blocks.", f"{source} checkpoint")
    qkv_bias = f"{prefix}blocks.0.attn.qkv.bias" in sd
    _require_blocks(sd, f"{prefix}blocks.", depth, _timm_block_parts(qkv_bias), source)
    w = sd[f"{prefix}patch_embed.proj.weight"]
    if w.dim() != 4 or w.shape[1] != 1:
        raise CheckpointError(
            None, f"{prefix}patch_embed.proj.weight has shape {tuple(w.shape)}, expected (D, 1, f, t)")
    return dict(
        embed_dim=D,
        depth=depth,
        mlp_ratio=sd[f"{prefix}blocks.0.mlp.fc1.weight"].shape[0] / D,
        qkv_bias=qkv_bias,
        kernel_ft=(int(w.shape[2]), int(w.shape[3])),
    )


def _ssast_encoder_config(sizes: Mapping[str, Any], num_heads: int, stride_ft: IntPair, grid_tf: IntPair,
                          n_mels: int, norm_eps: float = 1e-6) -> EncoderConfig:
    fshape, tshape = sizes["kernel_ft"]
    frame = fshape == n_mels
    return family_config(
        "ssast",
        embed_dim=sizes["embed_dim"], depth=sizes["depth"], num_heads=num_heads, mlp_ratio=sizes["mlp_ratio"],
        qkv_bias=sizes["qkv_bias"], tokenizer="frame" if frame else "patch", patch_size=(tshape, fshape),
        patch_stride=None if stride_ft == (fshape, tshape) else (stride_ft[1], stride_ft[0]),
        n_mels=n_mels, pos_grid=grid_tf, norm_eps=norm_eps,
    )


def _conv_out(size: int, kernel: int, stride: int) -> int:
    return (size - kernel) // stride + 1


def _infer_target_length(t_dim: int, tshape: int, tstride: int) -> int:
    """A frame count giving ``t_dim`` tokens: a standard recipe length when one fits, else the
    shortest."""
    lo = (t_dim - 1) * tstride + tshape
    return next((L for L in _STANDARD_LENGTHS if lo <= L < lo + tstride), lo)


def _finetuned_grid(n_tokens: int, kernel_ft: IntPair, stride: Optional[IntPair], n_mels: int,
                    source: str) -> Tuple[IntPair, IntPair]:
    """``(stride_ft, grid_tf)`` of a fine-tuned file, which does not store its stride: with
    ``stride`` given (time, freq) it is checked; otherwise the frequency stride is the first of
    10, 16, 12, 14, then the rest whose row count divides the token count (AST releases have
    equal strides, so the time stride follows), and frame models use SSAST's time stride 1."""
    fshape, tshape = kernel_ft
    if stride is not None:
        ts, fs = int(stride[0]), int(stride[1])
        candidates = [(fs, ts)]
    elif fshape == n_mels:
        candidates = [(fshape, 1)]
    else:
        order = list(_STRIDE_PREFERENCE) + [s for s in range(fshape, 0, -1) if s not in _STRIDE_PREFERENCE]
        candidates = [(s, s) for s in order]
    for fs, ts in candidates:
        f_dim = _conv_out(n_mels, fshape, fs)
        if f_dim > 0 and n_tokens % f_dim == 0:
            if stride is None:
                logger.info("%s: stride not stored; inferred (time %d, freq %d) from %d tokens",
                            source, ts, fs, n_tokens)
            return (fs, ts), (n_tokens // f_dim, f_dim)
    given = f" with stride {tuple(stride)}" if stride is not None else ""
    raise CheckpointError(
        None, f"cannot lay out its {n_tokens} positional rows on a grid of {n_mels} mel bins and kernel "
              f"{fshape}x{tshape}{given}; pass stride=(time, freq)"
    )


def _head_meta(sd: Mapping[str, Tensor], prefix: str, head_kind: str, eps: float, source: str) -> Dict[str, Any]:
    if head_kind not in HEAD_KINDS:
        raise ValueError(f"head_kind must be one of {HEAD_KINDS}, got {head_kind!r}")
    names = {"fc_norm.weight": "0.weight", "fc_norm.bias": "0.bias", "head.weight": "1.weight", "head.bias": "1.bias"}
    require_keys(sd, [prefix + v for v in names.values()], f"{source} checkpoint")
    head = {k: sd[prefix + v] for k, v in names.items()}
    return {"head": head, "head_kind": head_kind, "head_norm_eps": eps,
            "num_classes": int(head["head.weight"].shape[0])}


def _front_end(num_classes: Optional[int] = None) -> Tuple[Dict[str, Any], Dict[str, float], str]:
    """AST-family fbank, and the stats of the recipe a class count points to (AudioSet otherwise)."""
    stats = _NORM_BY_CLASSES.get(num_classes, "audioset")
    return FbankConfig.preset("ast").to_dict(), Normalizer.preset(stats).to_dict(), stats


# --------------------------------------------------------------------------------- SSAST / AST
def _plan_finetuned(sd: StateDict, source: str, head_kind: str, num_heads: Optional[int],
                    stride: Optional[IntPair], target_length: Optional[int]) -> ImportPlan:
    sizes = _deit_sizes(sd, "v.", source)
    n_tokens = sd["v.pos_embed"].shape[1] - 2
    stride_ft, grid_tf = _finetuned_grid(n_tokens, sizes["kernel_ft"], stride, N_MELS, source)
    fshape, tshape = sizes["kernel_ft"]
    if target_length is None:
        target_length = _infer_target_length(grid_tf[0], tshape, stride_ft[1])
    elif _conv_out(target_length, tshape, stride_ft[1]) != grid_tf[0]:
        columns = _conv_out(target_length, tshape, stride_ft[1])
        raise CheckpointError(None, f"target_length {target_length} gives {columns} token columns, "
                                    f"the checkpoint has {grid_tf[0]}")
    assumed: List[str] = []
    heads = _heads(sizes["embed_dim"], num_heads, source, assumed)
    config = _ssast_encoder_config(sizes, heads, stride_ft, grid_tf, N_MELS)
    state = _deit_encoder_state(sd, "v.", grid_tf[1], grid_tf[0])
    _reject_leftovers(sd, ("v.", "mlp_head."), source)
    meta = _head_meta(sd, "mlp_head.", head_kind, 1e-5, source)  # nn.LayerNorm's default eps in mlp_head
    fbank, norm, stats = _front_end(meta["num_classes"])
    assumed.insert(0, f"{stats} normaliser (upstream recipe for {meta['num_classes']} classes)")
    assumed += [] if stride is not None else [f"stride (time, freq) = {(stride_ft[1], stride_ft[0])} from the table"]
    meta.update(source=source, assumed=assumed)
    return ImportPlan("encoder", config, state, meta, fbank, norm, int(target_length))


def _reject_leftovers(sd: Mapping[str, Tensor], prefixes: Sequence[str], source: str,
                      allowed: Sequence[str] = ()) -> None:
    extra = sorted(k for k in sd if not k.startswith(tuple(prefixes)) and k not in allowed)
    if extra:
        raise CheckpointError(None, f"has keys a {source!r} checkpoint does not: unexpected keys {extra[:12]}")


def plan_ssast(obj: Any, *, num_heads: Optional[int] = None, stride: Optional[IntPair] = None,
               target_length: Optional[int] = None, head_kind: str = "mean_ln_linear") -> ImportPlan:
    """Plan an SSAST import (see :func:`convert_ssast`)."""
    sd = _unwrap(obj, "ssast")
    if "mlp_head.0.weight" in sd:
        return _plan_finetuned(sd, "ssast", head_kind, num_heads, stride, target_length)
    require_keys(sd, ["p_input_fdim", "p_input_tdim"], "ssast checkpoint",
                 " (the pretraining input size SSAST stores; a fine-tuned file has mlp_head.* instead)")
    sizes = _deit_sizes(sd, "v.", "ssast")
    fdim, tdim = int(sd["p_input_fdim"].item()), int(sd["p_input_tdim"].item())
    fshape, tshape = sizes["kernel_ft"]
    grid_tf = (tdim // tshape, fdim // fshape)  # pretraining never overlaps: stride == kernel
    assumed: List[str] = []
    heads = _heads(sizes["embed_dim"], num_heads, "ssast", assumed)
    encoder = _ssast_encoder_config(sizes, heads, (fshape, tshape), grid_tf, fdim)
    state = {f"encoder.{k}": v for k, v in _deit_encoder_state(sd, "v.", grid_tf[1], grid_tf[0]).items()}
    pred_keys = [f"{h}.{i}.{p}" for h in ("cpredlayer", "gpredlayer") for i in (0, 2) for p in ("weight", "bias")]
    objective = ["mask_embed", *pred_keys]
    fbank, norm, _ = _front_end()
    meta: Dict[str, Any] = {"source": "ssast", "upstream_grid_freq_time": [grid_tf[1], grid_tf[0]], "assumed": assumed}
    _reject_leftovers(sd, ("v.",), "ssast", allowed=["p_input_fdim", "p_input_tdim", *objective])
    if not any(k in sd for k in objective):
        logger.info("ssast: no pretraining heads in the file; importing the encoder alone")
        return ImportPlan("encoder", encoder, {k[len("encoder."):]: v for k, v in state.items()}, meta, fbank, norm,
                          grid_tf[0] * tshape)
    require_keys(sd, objective, "ssast checkpoint")
    state.update({k: sd[k] for k in objective})
    n_tokens = grid_tf[0] * grid_tf[1]
    # 400 of 512 in every release; other grids keep the ratio.
    config = SSASTConfig(encoder=encoder, num_masked=min(n_tokens, max(1, n_tokens * 400 // 512)))
    return ImportPlan("ssast", config, state, meta, fbank, norm, grid_tf[0] * tshape)


def convert_ssast(obj: Any, *, hf_config: Optional[Mapping[str, Any]] = None, num_heads: Optional[int] = None,
                  stride: Optional[IntPair] = None, target_length: Optional[int] = None,
                  head_kind: str = "mean_ln_linear") -> Dict[str, Any]:
    """An SSAST file as a native payload.

    Pretraining files give the ``ssast`` objective on the pretraining grid (``p_input_tdim`` frames,
    AudioSet stats); fine-tuned ones (``mlp_head``) a bare ``encoder`` with the head in ``meta``,
    ``head_kind`` ``"mean_ln_linear"`` for SSAST's default ``ft_avgtok`` or
    ``"cls_dist_mean_ln_linear"`` for ``ft_cls`` (the file does not say which). ``num_heads``
    defaults to the DeiT/ViT count for the width (:func:`~audiossl.convert.common.default_heads`);
    ``stride``/``target_length`` (time first) matter only for fine-tuned files, which store
    neither (see :func:`_finetuned_grid`). ``hf_config`` is unused."""
    return plan_ssast(obj, num_heads=num_heads, stride=stride, target_length=target_length,
                      head_kind=head_kind).payload()


def plan_ast(obj: Any, *, num_heads: Optional[int] = None, stride: Optional[IntPair] = None,
             target_length: Optional[int] = None) -> ImportPlan:
    """Plan an AST import (see :func:`convert_ast`)."""
    sd = _unwrap(obj, "ast")
    if "mlp_head.0.weight" not in sd and "p_input_tdim" in sd:
        raise CheckpointError(None, "is an SSAST pretraining checkpoint (p_input_tdim, no mlp_head); use --from ssast")
    require_keys(sd, ["mlp_head.0.weight", "mlp_head.1.weight"], "ast checkpoint")
    return _plan_finetuned(sd, "ast", "cls_dist_mean_ln_linear", num_heads, stride, target_length)


def convert_ast(obj: Any, *, hf_config: Optional[Mapping[str, Any]] = None, num_heads: Optional[int] = None,
                stride: Optional[IntPair] = None, target_length: Optional[int] = None) -> Dict[str, Any]:
    """A fine-tuned AST file (``audioset_10_10_0.4593.pth`` and kin) as an ``encoder`` payload
    with its ``mlp_head`` in ``meta`` (``head_kind="cls_dist_mean_ln_linear"``).

    The stride is not stored: it is inferred from the positional table (equal strides, 10 first),
    or given as ``stride=(time, freq)``; ``target_length`` defaults to the recipe length that
    gives the table's token columns (1024 for AudioSet). The normaliser is the recipe's by class
    count (527 AudioSet, 50 ESC-50, 35 Speech Commands). ``hf_config`` is unused."""
    return plan_ast(obj, num_heads=num_heads, stride=stride, target_length=target_length).payload()


# --------------------------------------------------------------------------------- Hugging Face
_HF_PREFIX = "audio_spectrogram_transformer."
# transformers >= 5 in-memory names -> the Hub (save_pretrained) names.
_HF_V5_TO_HUB = (
    (re.compile(r"^layers\.(\d+)\."), r"encoder.layer.\1."),
    (re.compile(r"\.attention\.q_proj\."), ".attention.attention.query."),
    (re.compile(r"\.attention\.k_proj\."), ".attention.attention.key."),
    (re.compile(r"\.attention\.v_proj\."), ".attention.attention.value."),
    (re.compile(r"\.attention\.o_proj\."), ".attention.output.dense."),
    (re.compile(r"\.mlp\.fc1\."), ".intermediate.dense."),
    (re.compile(r"\.mlp\.fc2\."), ".output.dense."),
)
_HF_BLOCK = (  # Hub name inside encoder.layer.N -> ours inside blocks.N
    ("attention.output.dense", "attn.proj"),
    ("intermediate.dense", "mlp.fc1"),
    ("output.dense", "mlp.fc2"),
    ("layernorm_before", "norm1"),
    ("layernorm_after", "norm2"),
)


def _hf_hub_names(sd: Mapping[str, Tensor]) -> StateDict:
    out: StateDict = {}
    for k, v in sd.items():
        if k.startswith(_HF_PREFIX):
            k = k[len(_HF_PREFIX):]
        if k.startswith("layers."):
            for pattern, repl in _HF_V5_TO_HUB:
                k = pattern.sub(repl, k)
        out[k] = v
    return out


def _hf_encoder_config(sd: Mapping[str, Tensor], hf_config: Optional[Mapping[str, Any]], depth: int,
                       num_heads: Optional[int], assumed: List[str]) -> Tuple[EncoderConfig, int]:
    """Our encoder config and ``max_length`` from ``config.json`` (ASTConfig's defaults for what
    it leaves out), or from the weights alone when there is none."""
    w = sd["embeddings.patch_embeddings.projection.weight"]
    if w.shape[2] != w.shape[3]:
        raise CheckpointError(None, f"patch_embeddings.projection.weight {tuple(w.shape)} is not a square HF AST patch")
    p, D = int(w.shape[2]), int(w.shape[0])
    act = config_value(hf_config, "hidden_act", "gelu")
    if act != "gelu":
        raise CheckpointError(None, f"uses hidden_act={act!r}; only the exact 'gelu' of released AST models "
                                    "is supported")
    n_mels = int(config_value(hf_config, "num_mel_bins", N_MELS))
    n_tokens = sd["embeddings.position_embeddings"].shape[1] - 2
    if hf_config is not None:
        fs, ts = int(config_value(hf_config, "frequency_stride", 10)), int(config_value(hf_config, "time_stride", 10))
        max_length = int(config_value(hf_config, "max_length", 1024))
        grid_tf = (_conv_out(max_length, p, ts), _conv_out(n_mels, p, fs))
        if grid_tf[0] * grid_tf[1] != n_tokens:
            raise CheckpointError(None, f"config.json gives a {grid_tf[1]}x{grid_tf[0]} grid but position_embeddings "
                                        f"holds {n_tokens} patch rows")
    else:
        (fs, ts), grid_tf = _finetuned_grid(n_tokens, (p, p), None, n_mels, "ast_hf")
        max_length = _infer_target_length(grid_tf[0], p, ts)
        assumed += [f"no config.json: stride (time, freq) = {(ts, fs)}, max_length {max_length}, layer_norm_eps 1e-12"]
    heads = config_value(hf_config, "num_attention_heads")
    if heads is None:
        heads = _heads(D, num_heads, "ast_hf", assumed)
    hidden_drop = float(config_value(hf_config, "hidden_dropout_prob", 0.0))
    config = family_config(
        "ssast", embed_dim=D, depth=depth, num_heads=int(heads),
        mlp_ratio=sd["encoder.layer.0.intermediate.dense.weight"].shape[0] / D,
        qkv_bias="encoder.layer.0.attention.attention.query.bias" in sd, patch_size=(p, p),
        patch_stride=None if (ts, fs) == (p, p) else (ts, fs), n_mels=n_mels, pos_grid=grid_tf,
        norm_eps=float(config_value(hf_config, "layer_norm_eps", 1e-12)), drop=hidden_drop, input_drop=hidden_drop,
        attn_drop=float(config_value(hf_config, "attention_probs_dropout_prob", 0.0)), act_drop=0.0,
    )
    return config, max_length


def _hf_encoder_state(sd: Mapping[str, Tensor], config: EncoderConfig) -> Tuple[StateDict, set]:
    """Hub keys → our encoder keys (q, k, v concatenated into ``qkv``), and the Hub keys used."""
    t_dim, f_dim = config.pos_grid
    emb = "embeddings."
    renames = {"cls_token": emb + "cls_token", "dist_token": emb + "distillation_token",
               "patch_embed.proj.bias": emb + "patch_embeddings.projection.bias",
               "norm.weight": "layernorm.weight", "norm.bias": "layernorm.bias"}
    state: StateDict = {ours: sd[hub] for ours, hub in renames.items()}
    state["pos_embed"] = _pos_to_time_major(sd[emb + "position_embeddings"], f_dim, t_dim)
    state["patch_embed.proj.weight"] = sd[emb + "patch_embeddings.projection.weight"].transpose(2, 3).contiguous()
    used = {*renames.values(), emb + "position_embeddings", emb + "patch_embeddings.projection.weight"}
    for i in range(config.depth):
        src, dst = f"encoder.layer.{i}.", f"blocks.{i}."
        for part in ("weight", "bias") if config.qkv_bias else ("weight",):
            qkv = [f"{src}attention.attention.{n}.{part}" for n in ("query", "key", "value")]
            state[f"{dst}attn.qkv.{part}"] = torch.cat([sd[k] for k in qkv], dim=0)
            used.update(qkv)
        for hub, ours in _HF_BLOCK:
            for part in ("weight", "bias"):
                state[f"{dst}{ours}.{part}"] = sd[f"{src}{hub}.{part}"]
                used.add(f"{src}{hub}.{part}")
    return state, used


def plan_ast_hf(obj: Any, *, hf_config: Optional[Mapping[str, Any]] = None, num_heads: Optional[int] = None,
                hf_preprocessor: Optional[Mapping[str, Any]] = None) -> ImportPlan:
    """Plan a Hugging Face AST import (see :func:`convert_ast_hf`)."""
    sd = _hf_hub_names(_unwrap(obj, "ast_hf"))
    require_keys(sd, [f"embeddings.{k}" for k in ("cls_token", "distillation_token", "position_embeddings",
                                                  "patch_embeddings.projection.weight",
                                                  "patch_embeddings.projection.bias")]
                 + ["layernorm.weight", "layernorm.bias"], "ast_hf checkpoint")
    depth = block_count(sd, "encoder.layer.", "ast_hf checkpoint")
    if hf_config is not None and int(config_value(hf_config, "num_hidden_layers", depth)) != depth:
        raise CheckpointError(None, f"has {depth} layers but config.json says num_hidden_layers="
                                    f"{hf_config['num_hidden_layers']}")
    qkv_bias = "encoder.layer.0.attention.attention.query.bias" in sd
    hub_parts = [f"attention.attention.{n}" for n in ("query", "key", "value")] + [h for h, _ in _HF_BLOCK]
    _require_blocks(sd, "encoder.layer.", depth,
                    [f"{n}.{p}" for n in hub_parts for p in ("weight", "bias")
                     if qkv_bias or not n.startswith("attention.attention.") or p == "weight"], "ast_hf")
    assumed: List[str] = []
    config, max_length = _hf_encoder_config(sd, hf_config, depth, num_heads, assumed)
    state, used = _hf_encoder_state(sd, config)
    meta: Dict[str, Any] = {"source": "ast_hf", "assumed": assumed}
    if "classifier.dense.weight" in sd:
        head = {"fc_norm.weight": "classifier.layernorm.weight", "fc_norm.bias": "classifier.layernorm.bias",
                "head.weight": "classifier.dense.weight", "head.bias": "classifier.dense.bias"}
        require_keys(sd, list(head.values()), "ast_hf checkpoint")
        used.update(head.values())
        n_classes = int(sd["classifier.dense.weight"].shape[0])
        meta.update(head={k: sd[v] for k, v in head.items()}, head_kind="cls_dist_mean_ln_linear",
                    head_norm_eps=config.norm_eps, num_classes=n_classes)
        labels = config_value(hf_config, "id2label")
        if labels and len(labels) == n_classes:
            meta["labels"] = [str(labels.get(str(i), labels.get(i, i))) for i in range(n_classes)]
    # Keys nothing above consumed stay under their Hub names, so the strict load names them.
    state.update({k: v for k, v in sd.items() if k not in used})
    # ASTFeatureExtractor: torchaudio kaldi.fbank(hanning, 128 bins) without AST's waveform-mean
    # subtraction or htk_compat. Both are no-ops here (kaldi removes each frame's DC offset before
    # anything else, and htk_compat only moves the energy column, which is off), so this is the
    # "ast" preset. Its mean/std live in preprocessor_config.json.
    fbank, norm, stats = _front_end(meta.get("num_classes"))
    fbank["num_mel_bins"] = config.n_mels
    if hf_preprocessor is not None and "mean" in hf_preprocessor and "std" in hf_preprocessor:
        norm = Normalizer(float(hf_preprocessor["mean"]), float(hf_preprocessor["std"])).to_dict()
    else:
        assumed.append(f"{stats} normaliser (no preprocessor_config.json; upstream recipe for the class count)")
    return ImportPlan("encoder", config, state, meta, fbank, norm, max_length)


def convert_ast_hf(obj: Any, *, hf_config: Optional[Mapping[str, Any]] = None, num_heads: Optional[int] = None,
                   hf_preprocessor: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """A Hugging Face AST state dict (+ its ``config.json`` as ``hf_config``) as an ``encoder``
    payload, the ``classifier`` in ``meta`` (``head_kind="cls_dist_mean_ln_linear"``, its
    ``id2label`` as ``meta["labels"]``). HF uses one ``layer_norm_eps`` (1e-12 in the released
    configs) for every norm, the head's included. Without ``hf_config`` the sizes come from the
    weights and the strides are inferred as for :func:`convert_ast`. The normaliser is
    ``hf_preprocessor``'s (``preprocessor_config.json``) mean/std, else the upstream recipe's for
    the class count, as for :func:`convert_ast`."""
    return plan_ast_hf(obj, hf_config=hf_config, num_heads=num_heads, hf_preprocessor=hf_preprocessor).payload()


CONVERTERS = {"ssast": convert_ssast, "ast": convert_ast, "ast_hf": convert_ast_hf}


# --------------------------------------------------------------------------------- export
def _export_source(src: Union[Mapping[str, Any], nn.Module]) -> Tuple[Encoder, Mapping[str, Any], Optional[int]]:
    """The encoder to export, the payload's meta (head) and target length."""
    if isinstance(src, nn.Module):
        model, meta, target_length = src, {}, None
    elif isinstance(src, Mapping):
        model = model_from_checkpoint(src)
        meta, target_length = src.get("meta") or {}, src.get("target_length")
    else:
        raise TypeError(f"export_ast_hf takes a native payload or a model, got {type(src).__name__}")
    encoder = model if isinstance(model, Encoder) else getattr(model, "encoder", None)
    if not isinstance(encoder, Encoder):
        raise CheckpointError(None, f"a {type(model).__name__} has no .encoder to export")
    return encoder, meta, target_length


def _check_hf_expressible(cfg: EncoderConfig) -> int:
    """The HF patch size, or a ``CheckpointError`` saying which switch HF AST cannot express."""
    problems: List[str] = []
    if cfg.tokenizer != "patch":
        problems.append(f"tokenizer {cfg.tokenizer!r} (HF AST embeds with one square Conv2d patch; "
                        "a 2x128 frame is not one)")
    if cfg.patch_size[0] != cfg.patch_size[1]:
        problems.append(f"non-square patch {cfg.patch_size} (ASTConfig.patch_size is one int)")
    if cfg.in_chans != 1:
        problems.append(f"in_chans={cfg.in_chans}")
    if cfg.pos_embed != "learned" or cfg.num_prefix_tokens != 2 or not cfg.prefix_pos:
        problems.append("positions other than a learned table with cls + dist rows "
                        f"(pos_embed={cfg.pos_embed!r}, num_prefix_tokens={cfg.num_prefix_tokens}, "
                        f"prefix_pos={cfg.prefix_pos})")
    if cfg.input_norm or cfg.post_norm or not cfg.final_norm:
        problems.append("blocks other than pre-LN with a final norm and no input norm "
                        f"(input_norm={cfg.input_norm}, post_norm={cfg.post_norm}, final_norm={cfg.final_norm})")
    if problems:
        raise CheckpointError(None, "cannot be expressed as a Hugging Face AST: " + "; ".join(problems))
    return cfg.patch_size[0]


def _hub_encoder_state(encoder: Encoder) -> StateDict:
    """Inverse of :func:`_hf_encoder_state`, with the ``audio_spectrogram_transformer.`` prefix."""
    cfg, sd, pre = encoder.config, encoder.state_dict(), _HF_PREFIX
    t_dim, f_dim = cfg.pos_grid
    out: StateDict = {
        f"{pre}embeddings.cls_token": sd["cls_token"],
        f"{pre}embeddings.distillation_token": sd["dist_token"],
        f"{pre}embeddings.position_embeddings": torch.cat(
            [sd["pos_embed"][:, :2], time_to_freq_major(sd["pos_embed"][:, 2:], t_dim, f_dim)], dim=1),
        f"{pre}embeddings.patch_embeddings.projection.weight": sd["patch_embed.proj.weight"].transpose(2, 3),
        f"{pre}embeddings.patch_embeddings.projection.bias": sd["patch_embed.proj.bias"],
        f"{pre}layernorm.weight": sd["norm.weight"],
        f"{pre}layernorm.bias": sd["norm.bias"],
    }
    for i in range(cfg.depth):
        src, dst = f"blocks.{i}.", f"{pre}encoder.layer.{i}."
        for part in ("weight", "bias") if cfg.qkv_bias else ("weight",):
            for name, chunk in zip(("query", "key", "value"), sd[f"{src}attn.qkv.{part}"].chunk(3, dim=0)):
                out[f"{dst}attention.attention.{name}.{part}"] = chunk
        for hub, ours in _HF_BLOCK:
            for part in ("weight", "bias"):
                out[f"{dst}{hub}.{part}"] = sd[f"{src}{ours}.{part}"]
    return out


def export_ast_hf(src: Union[Mapping[str, Any], nn.Module], *, target_length: Optional[int] = None,
                  include_head: Optional[bool] = None) -> Tuple[StateDict, Dict[str, Any]]:
    """``(state_dict, config_dict)`` of a Hugging Face ``ASTForAudioClassification`` (Hub key
    names, what ``save_pretrained`` writes and ``from_pretrained`` reads) for a native payload or
    model whose encoder HF AST can express: square conv patches, a learned positional table with
    cls + dist rows, pre-LN blocks with a final norm — SSAST patch models, imported AST models.

    ``target_length`` (``max_length``) defaults to the payload's, else the shortest input giving
    the table's grid. ``include_head``: None exports a ``cls_dist_mean_ln_linear`` head from
    ``meta`` when there is one (without, only ``audio_spectrogram_transformer.*`` keys and an
    ``ASTModel`` config); True requires it; False leaves it out. A head HF cannot run (SSAST's
    mean pooling) is an error unless left out. Write the pair with ``save_file(state_dict,
    "model.safetensors")`` and ``json.dump(config, "config.json")``.
    """
    encoder, meta, payload_length = _export_source(src)
    cfg = encoder.config
    p = _check_hf_expressible(cfg)
    ts, fs = cfg.stride
    t_dim, f_dim = cfg.pos_grid
    if _conv_out(cfg.n_mels, p, fs) != f_dim:
        raise CheckpointError(None, f"{cfg.n_mels} mel bins with frequency stride {fs} give "
                                    f"{_conv_out(cfg.n_mels, p, fs)} HF rows, the table has {f_dim}")
    length = target_length if target_length is not None else payload_length
    if length is None or _conv_out(int(length), p, ts) != t_dim:
        if target_length is not None:
            raise CheckpointError(None, f"max_length {target_length} gives {_conv_out(target_length, p, ts)} token "
                                        f"columns, the positional table has {t_dim}")
        length = (t_dim - 1) * ts + p
    head = _export_head(meta, include_head, cfg.norm_eps)
    out = _hub_encoder_state(encoder)
    config: Dict[str, Any] = {
        "architectures": ["ASTForAudioClassification" if head else "ASTModel"],
        "model_type": "audio-spectrogram-transformer",
        "hidden_size": cfg.embed_dim,
        "num_hidden_layers": cfg.depth,
        "num_attention_heads": cfg.num_heads,
        "intermediate_size": int(cfg.embed_dim * cfg.mlp_ratio),
        "hidden_act": "gelu",
        "hidden_dropout_prob": cfg.drop,
        "attention_probs_dropout_prob": cfg.attn_drop,
        "initializer_range": 0.02,
        "layer_norm_eps": cfg.norm_eps,
        "patch_size": p,
        "qkv_bias": cfg.qkv_bias,
        "frequency_stride": fs,
        "time_stride": ts,
        "max_length": int(length),
        "num_mel_bins": cfg.n_mels,
    }
    if head:
        out.update({"classifier.layernorm.weight": head["fc_norm.weight"],
                    "classifier.layernorm.bias": head["fc_norm.bias"],
                    "classifier.dense.weight": head["head.weight"], "classifier.dense.bias": head["head.bias"]})
        n = head["head.weight"].shape[0]
        labels = meta.get("labels") or [f"LABEL_{i}" for i in range(n)]
        config["id2label"] = {str(i): str(label) for i, label in enumerate(labels)}
        config["label2id"] = {str(label): i for i, label in enumerate(labels)}
    return {k: v.detach().contiguous() for k, v in out.items()}, config


def _export_head(meta: Mapping[str, Any], include_head: Optional[bool], norm_eps: float) -> Optional[Dict[str, Tensor]]:
    head = meta.get("head")
    if include_head is False or (head is None and include_head is None):
        return None
    if head is None:
        raise CheckpointError(None, "has no classifier head in meta to export (include_head=True)")
    kind = meta.get("head_kind")
    if kind != "cls_dist_mean_ln_linear":
        raise CheckpointError(None, f"has a {kind!r} head; ASTForAudioClassification pools (cls + dist) / 2. "
                                    "Export the encoder alone with include_head=False")
    head_eps = float(meta.get("head_norm_eps", norm_eps))
    if head_eps != norm_eps:
        logger.warning("HF AST uses one layer_norm_eps (%g) for every norm; the head's was %g", norm_eps, head_eps)
    return dict(head)


def export_ast_hf_preprocessor(payload: Mapping[str, Any]) -> Dict[str, Any]:
    """The ``preprocessor_config.json`` of ``ASTFeatureExtractor`` for a payload whose front end
    it can reproduce (kaldi fbank, Hann window, 25/10 ms, AST's ``(x - mean) / (2 std)``)."""
    fbank, norm = payload.get("fbank"), payload.get("normalizer")
    if fbank is None or norm is None:
        raise CheckpointError(None, "has no fbank/normalizer to describe as an ASTFeatureExtractor")
    fb = FbankConfig.from_dict(fbank)
    hf = FbankConfig.preset("ast").replace(num_mel_bins=fb.num_mel_bins, sample_frequency=fb.sample_frequency)
    # Neither changes the features (see plan_ast_hf), so they do not block an export.
    diff = {k: v for k, v in fb.diff(hf).items() if k not in ("remove_waveform_mean", "htk_compat")}
    if diff:
        raise CheckpointError(None, f"has a front end ASTFeatureExtractor cannot compute: {diff}")
    return {
        "feature_extractor_type": "ASTFeatureExtractor",
        "feature_size": 1,
        "num_mel_bins": fb.num_mel_bins,
        "sampling_rate": int(fb.sample_frequency),
        "max_length": int(payload.get("target_length") or 1024),
        "padding_value": 0.0,
        "do_normalize": True,
        "mean": float(norm["mean"]),
        "std": float(norm["std"]),
        "return_attention_mask": False,
    }
