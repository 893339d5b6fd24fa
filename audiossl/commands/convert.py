"""Import an official checkpoint into a native audiossl one (config + front end + weights),
which every other command loads with weights_only=True:

  audiossl convert --from eat EAT-base_epoch30_pt.pt eat_base.pt --trust-checkpoint
  audiossl convert --from ast_hf ./ast-finetuned-audioset-10-10-0.4593/ ast.pt
  audiossl convert --from ijepa IN1K-vit.h.14-300e.pth.tar ijepa_h14.pt
  audiossl convert --from ast audioset_10_10_0.4593.pth ast.pt --option stride=[10,10]
  audiossl convert --export ast_hf my_model.pt ./my-ast-hf/     # the other way: to Hugging Face AST

Sources: eat, eat_hf (EAT fairseq and Hugging Face), ssast, ast, ast_hf, maeast (fairseq),
audiomae, mae (image), ijepa. Input is a .pt/.pth/.bin file, a .safetensors file, or a Hugging
Face folder with config.json. fairseq and AudioMAE files hold pickled Python objects; unpickling
can run code, so they load only with --trust-checkpoint.
"""

from __future__ import annotations

import argparse
import logging

HELP = "import an official checkpoint (EAT, SSAST, AST, MAE-AST, AudioMAE, MAE, I-JEPA)"

logger = logging.getLogger(__name__)

SOURCES = ("eat", "eat_hf", "ssast", "ast", "ast_hf", "maeast", "audiomae", "mae", "ijepa")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    how = parser.add_mutually_exclusive_group(required=True)
    how.add_argument("--from", dest="source", choices=SOURCES, help="upstream layout of IN")
    how.add_argument("--export", choices=("ast_hf",), help="write the native IN as a Hugging Face AST folder OUT")
    parser.add_argument("input", metavar="IN", help="upstream checkpoint file or Hugging Face folder")
    parser.add_argument("output", metavar="OUT", help="native checkpoint to write (.pt)")
    parser.add_argument("--trust-checkpoint", action="store_true",
                        help="allow unpickling Python objects (fairseq/AudioMAE files); only for files you trust")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="what the file cannot say, e.g. num_heads=16, stride=[10,10], target_length=512")


def run(args: argparse.Namespace) -> int:
    import yaml

    from audiossl.convert import convert, export_ast_hf_folder
    from audiossl.checkpoint import CheckpointError, load_checkpoint

    options = {}
    for item in args.option:
        key, eq, value = item.partition("=")
        if not eq:
            logger.error("--option takes KEY=VALUE, got %r", item)
            return 2
        options[key.replace("-", "_")] = yaml.safe_load(value)
    try:
        if args.export:
            out = export_ast_hf_folder(args.input, args.output, **options)
            logger.info("wrote %s (model.safetensors, config.json, preprocessor_config.json)", out)
            return 0
        out = convert(args.source, args.input, args.output, trust=args.trust_checkpoint, **options)
    except (CheckpointError, ValueError, TypeError) as e:
        logger.error("%s", e)
        return 1
    ckpt = load_checkpoint(out)
    n = sum(v.numel() for v in ckpt["model"].values())
    logger.info("wrote %s: family %s, %.2fM values%s", out, ckpt["family"], n / 1e6,
                f", head with {ckpt['meta']['num_classes']} classes" if "num_classes" in ckpt["meta"] else "")
    return 0
