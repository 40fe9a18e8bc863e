"""``vlprompt data verify|prepare|export-split``: the standard datasets on disk and their split files."""

from __future__ import annotations


def register(subparsers) -> None:
    data = subparsers.add_parser("data", help="the standard datasets on disk")
    sub = data.add_subparsers(title="data commands", dest="data_command", metavar="{verify,prepare,export-split}", required=True)
    p = sub.add_parser("verify", help="report what is present, missing or unreadable, and what to do")
    p.add_argument("--root", required=True, help="folder holding the dataset folders (oxford_pets/, dtd/, ...)")
    p.add_argument("--dataset", action="append", help="a dataset name (repeatable; default: all)")
    p.add_argument("--decode", action="store_true", help="also open every image (slow on large datasets)")
    p.set_defaults(func=cmd_verify)
    p = sub.add_parser("prepare", help="lay out datasets from their official files (CoOp's DATASETS.md layout)",
                       description="Unpack each dataset's official archives (checked against their published "
                       "checksums) into the folder layout of CoOp's DATASETS.md under --root. Resumable; an "
                       "existing folder is never replaced. See docs/datasets.md for each dataset's files.")
    p.add_argument("names", nargs="+", metavar="NAME", help="dataset names (see vlprompt list datasets)")
    p.add_argument("--root", required=True, help="folder holding the dataset folders (created if absent)")
    p.add_argument("--from", dest="from_dir", metavar="DIR", help="folder holding the downloaded files")
    p.add_argument("--download", action="store_true",
                   help="download the files that have a direct address (into --from, else ROOT/downloads); resumable")
    p.set_defaults(func=cmd_prepare)
    p = sub.add_parser("export-split", help="write a dataset's split or few-shot subset as a split file",
                       description="Write the split of a dataset, or the few-shot subset a run with the same shots "
                       "and seed trains on, as CoOp's split_zhou JSON (--format coop, one file) or as "
                       "rethinking_fewshot_vlms JSONL (--format jsonl, a folder of shot_K-seed_S_{train,val}.jsonl). "
                       "A run reads either back with data.split_file=PATH.")
    p.add_argument("dataset", help="a standard name, folder:PATH, csv:PATH or world:TASK")
    p.add_argument("--root", help="folder holding the standard datasets")
    p.add_argument("--format", required=True, choices=["coop", "jsonl"], help="coop: one .json; jsonl: a folder")
    p.add_argument("--out", required=True, help="the .json file (coop) or the folder (jsonl) to write")
    p.add_argument("--shots", type=int, help="write the few-shot subset of this many images per class")
    p.add_argument("--seed", type=int, default=1, help="the seed of the few-shot subset (a run's train.seed)")
    p.add_argument("--split-file", help="start from this split file instead of the dataset's own split")
    p.set_defaults(func=cmd_export_split)


def cmd_verify(args) -> int:
    from vlprompt.data.verify import format_report, verify_datasets

    reports = verify_datasets(args.root, args.dataset, decode=args.decode)
    print(format_report(reports))
    return 0 if all(r.ok for r in reports) else 1


def cmd_prepare(args) -> int:
    from vlprompt.data.datasets import DATASETS
    from vlprompt.data.prepare import prepare_dataset

    for name in args.names:
        DATASETS.get(name)  # every name checked before the first dataset is prepared
    for name in args.names:
        print(prepare_dataset(name, args.root, args.from_dir, args.download))
    return 0


def cmd_export_split(args) -> int:
    from vlprompt.engine.split import export_dataset_split

    for path in export_dataset_split(args.dataset, args.root, args.format, args.out, args.shots, args.seed,
                                     args.split_file):
        print(f"wrote {path}")
    return 0
