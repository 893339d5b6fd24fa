"""Import official EAT checkpoints: fairseq pretraining and fine-tuned files, and the Hugging Face port.

Three upstream layouts map onto :class:`~audiossl.models.encoder.Encoder` (EAT switches) and, for
pretraining files, onto the whole :class:`~audiossl.models.eat.EAT` objective:

* **fairseq pretraining** (``cfg.model._name = data2vec_multi``): student keys
  ``modality_encoders.IMAGE.{local_encoder.proj, extra_tokens, fixed_positional_encoder.positions,
  context_encoder.norm}`` and ``blocks.N.*``; the CNN decoder under
  ``modality_encoders.IMAGE.decoder.{blocks.N.0, proj}``; the EMA teacher as a *nested* dict under
  ``_ema`` with the student's key names (fp32). With the decoder present the result is the ``eat``
  objective, so pretraining continues from it; without it, a bare encoder.
* **fairseq fine-tuned** (``mae_image_classification``): the same student keys behind ``model.``,
  plus ``fc_norm`` (LayerNorm, eps 1e-6) and ``head``. The result is an encoder, with the head in
  ``meta``.
* **Hugging Face** (``worstchan/EAT-*``, ``EATModel.model``): ``model.{local_encoder.proj,
  extra_tokens, fixed_positional_encoder.positions, pre_norm, blocks.N}``, plus ``model.fc_norm``
  (eps 1e-5, PyTorch's default) and ``model.head`` in the fine-tuned variant.

The fixed position table is checked against the sin-cos formula (it must be EAT's 2-D table on a
``(rows / W, W)`` grid, either the 512-row pre-April-2024 shape or the 6144-row one), its largest
deviation is recorded in ``meta["pos_table"]``, and the stored table itself is kept as the
encoder's ``pos_table`` buffer (``EncoderConfig.pos_table_rows``). That matters: fairseq trains EAT
as a ``.half()`` model and saves it cast back to fp32, so its files hold the table rounded to half
precision (≤ 2.4e-4 per entry), and rebuilding the exact table instead would move the final
features by about 4e-4 (measured on the tiny fixtures and on a random EAT-base). The Hugging Face port's table is EAT's
float32 formula (≤ 4e-6 from ours within 10 s, ≤ 1.1e-4 on the far rows of the 6144-row table).
"""

from __future__ import annotations

import dataclasses
import logging
import re
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from audiossl.convert.common import config_value, default_heads, strip_prefix
from audiossl.features import FbankConfig
from audiossl.models.eat import EAT, EATConfig, eat_config
from audiossl.models.encoder import Encoder, EncoderConfig, family_config
from audiossl.nn.pos_embed import sincos_2d
from audiossl.checkpoint import CheckpointError, check_state_dict, native_payload

__all__ = ["CONVERTERS", "convert_eat", "convert_eat_hf"]

logger = logging.getLogger(__name__)

_IMG = "modality_encoders.IMAGE."

# The statistics EAT's data loader and scripts write (raw_audio_dataset.py, feature_extract.py),
# rounded as upstream rounds them; (x - mean) / (2 std).
_EAT_NORMS = {
    "audioset": {"mean": -4.268, "std": 4.569},
    "esc50": {"mean": -6.627, "std": 5.359},
    "speechcommands": {"mean": -6.846, "std": 5.565},
}

# EAT's image encoder is built for 128 mel bins whatever the config says (images.py: img_size =
# (target_length, 128) when in_chans == 1).
_FAIRSEQ_MELS = 128

# A stored table further than this from the formula is not EAT's sin-cos table (fp16 rounding
# is 2.4e-4 at most, float32 arithmetic 1.1e-4).
_POS_TOLERANCE = 1e-3

# (upstream prefix, native prefix): first match wins; keys matching none keep their upstream name,
# so check_state_dict reports them as unexpected under the name the user's file has.
Rules = Sequence[Tuple[str, str]]
_FAIRSEQ_ENCODER: Rules = (
    (_IMG + "local_encoder.proj.", "patch_embed.proj."),
    (_IMG + "extra_tokens", "cls_token"),
    (_IMG + "context_encoder.norm.", "norm_pre."),
    ("blocks.", "blocks."),
)
_HF_ENCODER: Rules = (
    ("local_encoder.proj.", "patch_embed.proj."),
    ("extra_tokens", "cls_token"),
    ("pre_norm.", "norm_pre."),
    ("blocks.", "blocks."),
)
_FAIRSEQ_POS = _IMG + "fixed_positional_encoder.positions"
_HF_POS = "fixed_positional_encoder.positions"
_DECODER_BLOCK = re.compile(re.escape(_IMG + "decoder.blocks.") + r"(\d+)\.0\.(weight|bias)$")
_DECODER_PROJ = _IMG + "decoder.proj."
_HEAD_KEYS = ("fc_norm.weight", "fc_norm.bias", "head.weight", "head.bias")


# ------------------------------------------------------------------------------ config bags
def _enum_name(value: Any) -> str:
    """``PredictionMode.CLS_TOKEN`` stored as an enum, a stub object or a string → ``"CLS_TOKEN"``."""
    name = getattr(value, "name", None)
    return str(name if isinstance(name, str) else value).rsplit(".", 1)[-1]


# ------------------------------------------------------------------------------ state dicts
def _unwrap(obj: Any) -> Tuple[Dict[str, Any], Any]:
    """``(state_dict, cfg)`` of a fairseq checkpoint ``{"cfg", "model", ...}`` or a bare state dict;
    a DDP ``module.`` prefix is dropped."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(None, f"expected a checkpoint dict, got {type(obj).__name__}")
    cfg = None
    if isinstance(obj.get("model"), Mapping):
        cfg = obj.get("cfg") if obj.get("cfg") is not None else obj.get("args")
        obj = obj["model"]
    return strip_prefix(obj, "module."), cfg


def _rename(sd: Mapping[str, Any], prefix: str, rules: Rules) -> Dict[str, Any]:
    """Keys under ``prefix`` renamed by ``rules``; unmatched ones keep their full upstream name."""
    out: Dict[str, Any] = {}
    for key, value in sd.items():
        name = key
        if key.startswith(prefix):
            rest = key[len(prefix):]
            for src, dst in rules:
                if rest.startswith(src):
                    name = dst + rest[len(src):]
                    break
        out[name] = value
    return out


def _upstream_name(native: str, prefix: str, rules: Rules) -> str:
    for src, dst in rules:
        if native.startswith(dst):
            return prefix + src + native[len(dst):]
    return native


def _load(model: nn.Module, sd: Dict[str, Tensor], upstream: Callable[[str], str]) -> nn.Module:
    """Check ``sd`` against ``model`` and put its tensors in place.

    ``model`` is built on the meta device: nothing is initialised only to be overwritten (a
    two-copy EAT-large is 600M parameters), and shape-only key sets convert without memory.
    Missing keys are also named by their upstream key, so a truncated file says what it lacks in
    the names it uses."""
    try:
        check_state_dict(model, sd, what="EAT model")
    except CheckpointError as e:
        missing = sorted(set(model.state_dict()) - set(sd))
        hint = f" (upstream names of the missing keys: {[upstream(k) for k in missing[:12]]})" if missing else ""
        raise CheckpointError(None, e.reason + hint) from None
    # fp32 copies: fairseq stores fp16-rounded weights, and student and teacher must not share memory.
    fp32 = {k: v.detach().to(torch.float32).clone() for k, v in sd.items()}
    model.load_state_dict(fp32, strict=True, assign=True)
    return model


# ------------------------------------------------------------------------------ architecture
def _encoder_config(sd: Mapping[str, Tensor], *, num_heads: Optional[int], norm_eps: float, n_mels: int,
                    upstream: Callable[[str], str]) -> Tuple[EncoderConfig, List[str]]:
    """The encoder the (native-named) weights describe, and what had to be assumed: heads cannot
    be read off the weights, so ``num_heads`` None means the ViT count for the width (EAT-base 12,
    -large 16)."""
    conv = sd.get("patch_embed.proj.weight")
    if not isinstance(conv, Tensor):
        raise CheckpointError(None, f"not an EAT checkpoint: missing key {upstream('patch_embed.proj.weight')!r}")
    D, in_chans, ph, pw = conv.shape
    depth = 1 + max((int(k.split(".")[1]) for k in sd if k.startswith("blocks.")), default=-1)
    if depth == 0:
        missing = upstream("blocks.0.attn.qkv.weight")
        raise CheckpointError(None, f"not an EAT checkpoint: no transformer blocks ({missing!r} missing)")
    cls = sd.get("cls_token")
    if isinstance(cls, Tensor) and cls.shape[1] != 1:
        raise CheckpointError(None, f"EAT has one cls token; {upstream('cls_token')!r} has shape {tuple(cls.shape)}")
    fc1 = sd.get("blocks.0.mlp.fc1.weight")
    mlp_ratio = fc1.shape[0] / D if isinstance(fc1, Tensor) else 4.0
    inferred = []
    if num_heads is None:
        num_heads = default_heads(D)
        inferred.append(f"num_heads={num_heads} (ViT default for width {D}; the checkpoint stores none)")
        logger.warning("EAT checkpoint stores no head count; using ViT's default %d heads for width %d", num_heads, D)
    cfg = family_config(
        "eat", embed_dim=D, depth=depth, num_heads=int(num_heads), mlp_ratio=mlp_ratio,
        qkv_bias="blocks.0.attn.qkv.bias" in sd, patch_size=(ph, pw), in_chans=in_chans, n_mels=n_mels,
        norm_eps=float(norm_eps),
    )
    return cfg, inferred


def _check_pos_table(table: Optional[Tensor], enc: EncoderConfig, key: str) -> Dict[str, Any]:
    """Check a stored fixed table against the formula our encoder rebuilds; its size and deviation."""
    if table is None:
        raise CheckpointError(None, f"not an EAT checkpoint: missing key {key!r} (the fixed position table)")
    W = enc.n_mels // enc.patch_size[1]
    rows = table.shape[-2] if table.dim() == 3 else -1
    if table.dim() != 3 or table.shape[0] != 1 or table.shape[2] != enc.embed_dim or rows % W:
        raise CheckpointError(None, f"{key!r} has shape {tuple(table.shape)}, expected (1, rows, {enc.embed_dim}) "
                                    f"with rows a multiple of {W}")
    info: Dict[str, Any] = {"rows": rows, "grid": [rows // W, W]}
    if table.is_meta:
        return info
    dev = float((table[0].float() - sincos_2d(enc.embed_dim, (rows // W, W))).abs().max())
    if dev > _POS_TOLERANCE:
        raise CheckpointError(None, f"{key!r} is not EAT's 2-D sin-cos table "
                                    f"(max deviation {dev:.3g} from the formula)")
    info["max_abs_dev"] = dev
    return info


def _head(sd: Mapping[str, Tensor]) -> Dict[str, Tensor]:
    """The classifier's tensors under their upstream names (``fc_norm.*``, ``head.*``), fp32."""
    return {k: sd[k].detach().to(torch.float32).clone() for k in _HEAD_KEYS if k in sd}


def _head_kind(head: Mapping[str, Tensor], pooling: str) -> str:
    kinds = {"CLS_TOKEN": "cls", "MEAN_POOLING": "mean", "LIN_SOFTMAX": "linsoftmax"}
    if pooling not in kinds:
        raise CheckpointError(None, f"unknown EAT prediction_mode {pooling!r}; expected one of {sorted(kinds)}")
    return f"{kinds[pooling]}_ln_linear" if "fc_norm.weight" in head else f"{kinds[pooling]}_linear"


def _front_end(target_length: int, norm: str) -> Dict[str, Any]:
    if target_length % 16:
        raise CheckpointError(None, f"EAT target_length must be a multiple of 16, got {target_length}")
    return {"fbank": FbankConfig.preset("ast").to_dict(), "normalizer": dict(_EAT_NORMS[norm]),
            "target_length": int(target_length)}


# ------------------------------------------------------------------------------ fairseq
def _objective_problems(cfg: Any) -> List[str]:
    """Settings of the stored pretraining cfg that audiossl's EAT objective does not implement."""
    expected = {
        "model.instance_norm_target_layer": True, "model.layer_norm_targets": True,
        "model.layer_norm_target_layer": False, "model.batch_norm_target_layer": False,
        "model.instance_norm_targets": False, "model.end_of_block_targets": False,
        "model.loss_beta": 0, "model.loss_scale": None, "model.d2v_loss": 1, "model.recon_loss": 0,
        "model.utterance_level": False,
        "model.modalities.image.inverse_mask": True, "model.modalities.image.mask_dropout": 0,
        "model.modalities.image.decoder.add_positions_masked": False,
        "model.modalities.image.decoder.add_positions_all": False,
        "model.modalities.image.decoder.decoder_residual": True,
        "model.modalities.image.transformer_decoder": False,
    }
    problems = []
    for path, want in expected.items():
        got = config_value(cfg, path, want)
        if got != want:
            problems.append(f"{path.split('.', 1)[1]}={got!r}")
    if config_value(cfg, "model.shared_decoder") is not None:
        problems.append("shared_decoder is set")
    return problems


def _eat_config(enc: EncoderConfig, decoder: Mapping[str, Tensor], cfg: Any) -> EATConfig:
    """The objective's config: decoder shape from its weights, training fields from the stored
    cfg, and the paper preset of that width where the cfg is absent."""
    D = enc.embed_dim
    first = decoder["decoder.blocks.0.weight"]
    depth = 1 + max(int(k.split(".")[2]) for k in decoder if k.startswith("decoder.blocks."))
    if D % first.shape[1]:
        raise CheckpointError(None, f"decoder block 0 weight {tuple(first.shape)} does not group the width {D}")
    preset = eat_config("eat_large" if D == 1024 else "eat_base")
    m = "model."
    img = "model.modalities.image."
    top_k = int(config_value(cfg, m + "average_top_k_layers", enc.depth))
    return EATConfig(
        encoder=enc, decoder_dim=first.shape[0], decoder_depth=depth, decoder_kernel=first.shape[-1],
        decoder_groups=D // first.shape[1],
        decoder_noise_std=float(config_value(cfg, img + "mask_noise_std", preset.decoder_noise_std)),
        clone_batch=int(config_value(cfg, m + "clone_batch", preset.clone_batch)),
        mask_prob=float(config_value(cfg, img + "mask_prob", preset.mask_prob)),
        mask_prob_adjust=float(config_value(cfg, img + "mask_prob_adjust", preset.mask_prob_adjust)),
        mask_length=int(config_value(cfg, img + "mask_length", preset.mask_length)),
        average_top_k_layers=min(top_k, enc.depth),
        cls_loss=float(config_value(cfg, m + "cls_loss", preset.cls_loss)),
        ema_decay=float(config_value(cfg, m + "ema_decay", preset.ema_decay)),
        ema_end_decay=float(config_value(cfg, m + "ema_end_decay", preset.ema_end_decay)),
        ema_anneal_end_step=int(config_value(cfg, m + "ema_anneal_end_step", preset.ema_anneal_end_step)),
    )


def _fairseq_normalizer(cfg: Any) -> str:
    for path, name in (("esc50_eval", "esc50"), ("spcv2_eval", "speechcommands")):
        if config_value(cfg, "task." + path, False) or config_value(cfg, "model." + path, False):
            return name
    return "audioset"


def _pop_decoder(sd: Dict[str, Any]) -> Dict[str, Any]:
    """Move the CNN decoder's weights out of ``sd``, renamed: ``blocks.N.0`` (the conv in upstream's
    ``Sequential(conv, SamePad2d, LayerNorm, GELU)``) becomes our ``blocks.N``."""
    decoder = {}
    for key in [k for k in sd if k.startswith(_IMG + "decoder.")]:
        block = _DECODER_BLOCK.match(key)
        if block:
            decoder[f"decoder.blocks.{block.group(1)}.{block.group(2)}"] = sd.pop(key)
        elif key.startswith(_DECODER_PROJ):
            decoder["decoder.proj." + key[len(_DECODER_PROJ):]] = sd.pop(key)
    return decoder


def _teacher_state(ema: Mapping[str, Any], student: Mapping[str, Tensor]) -> Tuple[Dict[str, Tensor], str]:
    """The teacher's native state dict from ``_ema``: the full teacher model (EAT's
    ``ema_encoder_only=false``), or only its blocks (data2vec's default, where the teacher reuses
    the student's patch embedding, cls token and input norm)."""
    ema = dict(ema)
    if ema and all(k.split(".", 1)[0].isdigit() for k in ema):
        blocks = {"blocks." + k: v for k, v in ema.items()}
        shared = {k: v for k, v in student.items() if not k.startswith("blocks.")}
        return {**shared, **blocks}, "_ema (blocks; patch embedding, cls token and input norm shared with the student)"
    ema.pop(_FAIRSEQ_POS, None)  # checked and stored as the teacher's pos_table by the caller
    return _rename(ema, "", _FAIRSEQ_ENCODER), "_ema"


def _fairseq_layout(sd: Mapping[str, Any], cfg: Any) -> Tuple[str, str, Any]:
    """``(key prefix, description, cfg holding the architecture)`` of a fairseq EAT state dict."""
    if any(k.startswith("model." + _IMG) for k in sd):
        # A fine-tuned file embeds the whole pretraining cfg, so it rebuilds without the pretrained file.
        arch = config_value(cfg, "model.pretrained_model_args")
        return "model.", "fairseq mae_image_classification (fine-tuned)", arch
    if any(k.startswith(_IMG) for k in sd):
        return "", "fairseq data2vec_multi (pretraining)", cfg
    if any(k.startswith(("model.local_encoder.", "local_encoder.")) for k in sd):
        raise CheckpointError(None, "this is the Hugging Face EAT layout (model.local_encoder.*, model.pre_norm.*): "
                                    "convert it with --from eat_hf")
    raise CheckpointError(None, f"not an EAT checkpoint: no '{_IMG}*' keys (found e.g. {sorted(sd)[:5]})")


def _fairseq_upstream_names(prefix: str) -> Callable[[str], str]:
    """Native key → the key a fairseq EAT file stores it under (for error messages)."""

    def upstream(native: str) -> str:
        if native.startswith("teacher."):
            return _upstream_name(native[len("teacher."):], "_ema/", _FAIRSEQ_ENCODER)
        if native.startswith("decoder.blocks."):
            i, name = native.split(".")[2:4]
            return f"{_IMG}decoder.blocks.{i}.0.{name}"
        if native.startswith("decoder.proj."):
            return _DECODER_PROJ + native[len("decoder.proj."):]
        return _upstream_name(native.removeprefix("encoder."), prefix, _FAIRSEQ_ENCODER)

    return upstream


def _encoder_payload(enc: EncoderConfig, student: Dict[str, Tensor], upstream: Callable[[str], str],
                     meta: Dict[str, Any], front: Dict[str, Any]) -> Dict[str, Any]:
    with torch.device("meta"):
        model = Encoder(enc)
    _load(model, student, upstream)
    return native_payload(model, family="encoder", meta=meta, **front)


def convert_eat(obj: Any, *, hf_config: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """A fairseq EAT checkpoint (pretraining or fine-tuned; SSLAM's too) as a native payload.

    Pretraining files with the CNN decoder give the ``eat`` objective (student, ``_ema`` teacher,
    decoder, the stored masking/EMA/loss settings); fine-tuned ones an ``encoder`` with
    ``meta["head"]``."""
    sd, cfg = _unwrap(obj)
    prefix, layout, arch = _fairseq_layout(sd, cfg)
    if config_value(arch, "model.layer_norm_first", False):
        raise CheckpointError(None, "layer_norm_first=True is data2vec's pre-LN image model, not EAT's post-LN encoder")
    if config_value(arch, "model.modalities.image.prenet_depth", 0):
        raise CheckpointError(None, "modality prenet blocks (prenet_depth > 0) are not part of EAT")

    ema = sd.pop(prefix + "_ema", None)
    table = sd.pop(prefix + _FAIRSEQ_POS, None)
    head = _head(sd)
    for k in _HEAD_KEYS:
        sd.pop(k, None)
    decoder = _pop_decoder(sd) if prefix == "" else {}
    student = _rename(sd, prefix, _FAIRSEQ_ENCODER)
    upstream = _fairseq_upstream_names(prefix)

    # A fine-tuning run may override the pretrained norm_eps (MaeImageClassificationConfig.norm_eps).
    norm_eps = config_value(cfg, "model.norm_eps", config_value(arch, "model.norm_eps", 1e-6))
    enc, inferred = _encoder_config(student, num_heads=config_value(arch, "model.num_heads"), norm_eps=norm_eps,
                                    n_mels=_FAIRSEQ_MELS, upstream=upstream)
    meta: Dict[str, Any] = {"source": "eat", "upstream": layout,
                            "pos_table": _check_pos_table(table, enc, prefix + _FAIRSEQ_POS)}
    enc = dataclasses.replace(enc, pos_table_rows=meta["pos_table"]["rows"])
    student["pos_table"] = table
    if inferred:
        meta["inferred"] = inferred
    target_length = int(config_value(cfg, "task.target_length", config_value(cfg, "model.target_length", 1024)))
    front = _front_end(target_length, _fairseq_normalizer(cfg))

    if prefix == "model.":  # fine-tuned: the student and its classifier
        if "head.weight" not in head:
            raise CheckpointError(None, "fine-tuned EAT checkpoint without 'head.weight'")
        pooling = _enum_name(config_value(cfg, "model.prediction_mode", "CLS_TOKEN"))
        meta.update(head=head, head_kind=_head_kind(head, pooling), head_norm_eps=1e-6,
                    num_classes=int(head["head.weight"].shape[0]))
        return _encoder_payload(enc, student, upstream, meta, front)
    if head:
        raise CheckpointError(None, f"a pretraining EAT checkpoint with classifier keys {sorted(head)}")

    problems = _objective_problems(cfg)
    if problems:
        logger.warning("EAT checkpoint trained with %s, which audiossl's EAT objective does not implement; "
                       "importing the student encoder only", ", ".join(problems))
        meta["objective_unsupported"] = problems
    if not decoder or problems:
        meta.setdefault("objective_unsupported", ["no CNN decoder in the checkpoint"])
        return _encoder_payload(enc, student, upstream, meta, front)

    if isinstance(ema, Mapping):
        if _FAIRSEQ_POS in ema:
            _check_pos_table(ema[_FAIRSEQ_POS], enc, "_ema/" + _FAIRSEQ_POS)
        teacher, meta["teacher"] = _teacher_state(ema, student)
        teacher["pos_table"] = ema.get(_FAIRSEQ_POS, table)
    else:
        logger.warning("EAT checkpoint has no _ema teacher; the teacher starts as a copy of the student")
        teacher, meta["teacher"] = dict(student), "copy of the student (the checkpoint has no _ema)"
    with torch.device("meta"):
        model = EAT(_eat_config(enc, decoder, cfg))
    state = {**{"encoder." + k: v for k, v in student.items()}, **decoder,
             **{"teacher." + k: v for k, v in teacher.items()}}
    _load(model, state, upstream)
    return native_payload(model, family="eat", meta=meta, **front)


# ------------------------------------------------------------------------------ Hugging Face
def convert_eat_hf(obj: Any, *, hf_config: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """A Hugging Face EAT folder's weights (``worstchan/EAT-*``, remote code ``EATModel``) as an
    ``encoder`` payload; the fine-tuned variant's ``fc_norm`` + ``head`` go to ``meta["head"]``.
    No teacher or decoder exists in this layout, so it cannot continue pretraining."""
    sd = strip_prefix(_unwrap(obj)[0], "model.")
    if any(k.startswith(_IMG) for k in sd):
        raise CheckpointError(None, "this is the fairseq EAT layout (modality_encoders.IMAGE.*): "
                                    "convert it with --from eat")
    if "local_encoder.proj.weight" not in sd:
        raise CheckpointError(None, f"not a Hugging Face EAT checkpoint: missing key 'model.local_encoder.proj.weight' "
                                    f"(found e.g. {sorted(sd)[:5]})")
    hf = dict(hf_config or {})
    for name, want in (("layer_norm_first", False), ("norm_affine", True), ("fixed_positions", True)):
        if hf.get(name, want) != want:
            raise CheckpointError(None, f"config.json has {name}={hf[name]!r}; EAT checkpoints have {want}")
    if hf.get("stride", hf.get("patch_size", 16)) != hf.get("patch_size", 16):
        raise CheckpointError(None, f"config.json has stride {hf['stride']} != patch_size {hf['patch_size']}")

    table = sd.pop(_HF_POS, None)
    head = _head(sd)
    for k in _HEAD_KEYS:
        sd.pop(k, None)
    variant = hf.get("model_variant", "finetune" if "head.weight" in head else "pretrain")
    if (variant == "finetune") != ("head.weight" in head):
        raise CheckpointError(None, f"config.json says model_variant={variant!r} but the weights "
                                    f"{'lack' if variant == 'finetune' else 'have'} 'model.head.weight'")
    student = _rename(sd, "", _HF_ENCODER)

    def upstream(native: str) -> str:
        return "model." + _upstream_name(native, "", _HF_ENCODER)

    enc, inferred = _encoder_config(student, num_heads=hf.get("num_heads"), norm_eps=hf.get("norm_eps", 1e-6),
                                    n_mels=int(hf.get("mel_bins", 128)), upstream=upstream)
    meta: Dict[str, Any] = {"source": "eat_hf", "upstream": f"huggingface EATModel ({variant})",
                            "pos_table": _check_pos_table(table, enc, "model." + _HF_POS)}
    enc = dataclasses.replace(enc, pos_table_rows=meta["pos_table"]["rows"])
    student["pos_table"] = table
    if inferred:
        meta["inferred"] = inferred
    if head:
        # The port's fc_norm is nn.LayerNorm(D) with PyTorch's default eps, not fairseq's 1e-6.
        meta.update(head=head, head_kind=_head_kind(head, "CLS_TOKEN"), head_norm_eps=1e-5,
                    num_classes=int(head["head.weight"].shape[0]))
    img_size = hf.get("img_size") or (1024, 128)
    return _encoder_payload(enc, student, upstream, meta, _front_end(int(img_size[0]), "audioset"))


CONVERTERS: Dict[str, Callable[..., Dict[str, Any]]] = {"eat": convert_eat, "eat_hf": convert_eat_hf}
