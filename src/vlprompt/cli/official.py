"""``vlprompt import``: an official CoOp-family checkpoint as a vlprompt prompt directory."""

from __future__ import annotations

from pathlib import Path

from vlprompt.errors import ConfigError

METHODS = ("coop", "cocoop", "prograd", "kgcoop", "nemesis", "maple", "ivlp", "promptsrc")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "import", help="turn an official checkpoint (CoOp, CoCoOp, ProGrad, KgCoOp, Nemesis, MaPLe, IVLP, PromptSRC) "
                       "into a prompt directory for eval, predict and export")
    p.add_argument("method", choices=METHODS, help="the official repository's method that saved the checkpoint")
    p.add_argument("checkpoint", help="the Dassl checkpoint file (e.g. OUTPUT/prompt_learner/model.pth.tar-50 or "
                   "model-best.pth.tar), or the Dassl output folder (its best, else last, checkpoint)")
    p.add_argument("--backbone", required=True, help="the CLIP it was trained on, e.g. ViT-B-16 (OpenAI's ViT-B/16) "
                   "or RN50")
    p.add_argument("--pretrained", help="its weights: an open_clip tag (the official code uses OpenAI's: openai) or "
                   "a local file (default: the backbone's own weights where it has one, e.g. vlprompt-tiny's)")
    p.add_argument("--classes", required=True, help="its classes, in the order of its training labels: a text file "
                   "with one class name a line, or a dataset (world:TASK, folder:PATH, csv:PATH, or a standard "
                   "name with --root)")
    p.add_argument("--root", help="folder holding the standard datasets (for --classes NAME)")
    p.add_argument("--subset", default="all", choices=["all", "base", "new"],
                   help="with a dataset: the classes it was trained on (base for base-to-new checkpoints)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="a learner option the shapes cannot tell, e.g. ctx_init='a photo of a', "
                        "ctx_init_template='itap of a {}.' (ProGrad), class_token_position=middle (repeatable)")
    p.add_argument("--out", required=True, help="the prompt directory to write (new, empty, or an earlier prompt)")
    p.set_defaults(func=cmd_import)


def cmd_import(args) -> int:
    from vlprompt.backbones import load_backbone
    from vlprompt.learners.official_import import OFFICIAL_METHODS, import_official

    options = parse_options(args.option)
    classnames = read_classes(args.classes, args.root, args.subset)
    weights = {} if args.pretrained is None else {"pretrained": args.pretrained}  # left out: the name's own weights
    backbone = load_backbone(args.backbone, **weights)
    learner, out = import_official(args.method, args.checkpoint, backbone, classnames, args.out, options)
    print(f"{OFFICIAL_METHODS[args.method].title} checkpoint imported as a {learner.name} prompt for "
          f"{len(classnames)} classes on {backbone.identity.describe()}: {out}")
    return 0


def parse_options(items: list[str]) -> dict:
    """``--option KEY=VALUE`` items; values are read as YAML (null, numbers, quoted or bare text)."""
    import yaml

    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--option {item!r} is not KEY=VALUE, e.g. --option ctx_init='a photo of a'")
        options[key.strip()] = yaml.safe_load(value) if value else None
    return options


def read_classes(source: str, root: str | None, subset: str) -> list[str]:
    """Class names from a file of one name a line, or a dataset's classes (its base or new half)."""
    path = Path(source)
    if path.is_file():
        names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        if not names:
            raise ConfigError(f"--classes {source} holds no class names; write one name a line")
        if subset != "all":
            raise ConfigError("--subset applies to a dataset; a class file lists the classes themselves")
        return names
    from vlprompt.data.sampling import subsample_classes
    from vlprompt.engine.datasets import resolve_dataset

    if ":" not in source and root is None:
        raise ConfigError(f"--classes {source}: no such file; for a standard dataset give --root too, or give a "
                          "file with one class name a line")
    return subsample_classes(resolve_dataset(source, root), subset).classnames
