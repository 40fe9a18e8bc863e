"""``vlprompt data verify``: check the standard datasets under a root folder."""

from __future__ import annotations


def register(subparsers) -> None:
    data = subparsers.add_parser("data", help="the standard datasets on disk")
    sub = data.add_subparsers(title="data commands", dest="data_command", metavar="{verify}", required=True)
    p = sub.add_parser("verify", help="report what is present, missing or unreadable, and what to do")
    p.add_argument("--root", required=True, help="folder holding the dataset folders (oxford_pets/, dtd/, ...)")
    p.add_argument("--dataset", action="append", help="a dataset name (repeatable; default: all)")
    p.add_argument("--decode", action="store_true", help="also open every image (slow on large datasets)")
    p.set_defaults(func=cmd_verify)


def cmd_verify(args) -> int:
    from vlprompt.data.verify import format_report, verify_datasets

    reports = verify_datasets(args.root, args.dataset, decode=args.decode)
    print(format_report(reports))
    return 0 if all(r.ok for r in reports) else 1
