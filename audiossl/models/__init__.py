"""Models: one shared ViT :class:`Encoder`; MAE, MAE-AST, SSAST, EAT and JEPA are objectives
around it (decoders, predictors, teachers and losses live in their own modules)."""

from audiossl.models.encoder import (
    Encoder,
    EncoderConfig,
    EncoderOutput,
    LinearPatchTokenizer,
    family_config,
)
from audiossl.models.mae import (
    MAE,
    MAE_PRESETS,
    MAEConfig,
    MAEOutput,
    audiomae_base,
    audiomae_base_local,
    audiomae_tiny,
    mae_config,
    mae_tiny,
    mae_vit_base,
    mae_vit_huge,
    mae_vit_large,
    reconstruction_figure,
)
from audiossl.models.eat import (
    EAT,
    EAT_PRESETS,
    Decoder2d,
    EATConfig,
    EATOutput,
    eat_base,
    eat_config,
    eat_large,
    eat_tiny,
    ema_decay,
)
from audiossl.models.jepa import (
    JEPA,
    JEPA_PRESETS,
    JEPAConfig,
    JEPAOutput,
    JEPAPredictor,
    ijepa_audio_tiny,
    ijepa_tiny,
    ijepa_vit_base,
    ijepa_vit_huge,
    jepa_config,
)
from audiossl.models.maeast import (
    MAEAST,
    MAEAST_PRESETS,
    MAEASTConfig,
    MAEASTOutput,
    maeast_config,
    maeast_frame_base,
    maeast_frame_tiny,
    maeast_patch_base,
    maeast_patch_tiny,
)
from audiossl.models.masker import (
    MASKER_PRESETS,
    AdaptiveMasker,
    AdaptiveMaskerConfig,
    AdaptiveMaskerOutput,
    adversary_weight,
    masker_config,
)
from audiossl.models.ssast import (
    SSAST,
    SSAST_PRESETS,
    SSASTConfig,
    SSASTOutput,
    info_nce,
    ssast_base_frame,
    ssast_base_patch,
    ssast_config,
    ssast_mini_frame,
    ssast_mini_patch,
    ssast_small_frame,
    ssast_small_patch,
    ssast_tiny_frame,
    ssast_tiny_patch,
)

__all__ = [
    "Encoder", "EncoderConfig", "EncoderOutput", "LinearPatchTokenizer", "family_config",
    "MAE", "MAE_PRESETS", "MAEConfig", "MAEOutput", "audiomae_base", "audiomae_base_local", "audiomae_tiny", "mae_config",
    "mae_tiny", "mae_vit_base", "mae_vit_huge", "mae_vit_large", "reconstruction_figure",
    "SSAST", "SSAST_PRESETS", "SSASTConfig", "SSASTOutput", "info_nce", "ssast_config",
    "ssast_base_frame", "ssast_base_patch", "ssast_mini_frame", "ssast_mini_patch", "ssast_small_frame",
    "ssast_small_patch", "ssast_tiny_frame", "ssast_tiny_patch",
    "MAEAST", "MAEAST_PRESETS", "MAEASTConfig", "MAEASTOutput", "maeast_config", "maeast_frame_base",
    "maeast_frame_tiny", "maeast_patch_base", "maeast_patch_tiny",
    "EAT", "EAT_PRESETS", "Decoder2d", "EATConfig", "EATOutput", "eat_base", "eat_config", "eat_large",
    "eat_tiny", "ema_decay",
    "JEPA", "JEPA_PRESETS", "JEPAConfig", "JEPAOutput", "JEPAPredictor", "ijepa_audio_tiny", "ijepa_tiny",
    "ijepa_vit_base", "ijepa_vit_huge", "jepa_config",
    "AdaptiveMasker", "AdaptiveMaskerConfig", "AdaptiveMaskerOutput", "MASKER_PRESETS", "adversary_weight",
    "masker_config",
]
