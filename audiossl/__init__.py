"""audiossl: self-supervised learning on audio spectrograms.

Pipeline: ``audio.load`` -> ``features.KaldiFbank`` -> ``features.Normalizer`` ->
``data.store`` (HDF5) -> ``data.dataset`` -> ``tokenizers`` -> ``masking`` -> models.
"""

__version__ = "0.1.0"
