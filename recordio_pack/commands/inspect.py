"""``recordio-pack inspect PATH``: records as a table, and a captioned contact sheet."""

from __future__ import annotations

import argparse

from recordio_pack.commands._common import add_output_options, emit, positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "inspect", help="show records as a table; write a contact sheet",
        description="List records (key, label, class name, bytes, width x height, format) of a .rec, a "
                    "NAME.manifest.json or a folder, and with --contact-sheet write a PNG grid of sample images "
                    "captioned with label and class, to see at a glance that colours and labels are right.")
    parser.add_argument("path", help=".rec, .idx, manifest or folder (a missing one exits 1)")
    parser.add_argument("--limit", type=positive_int, default=20, help="rows to show (default %(default)s)")
    parser.add_argument("--contact-sheet", metavar="PNG", help="write a contact sheet here")
    parser.add_argument("--count", type=positive_int, default=48, help="images on the contact sheet")
    parser.add_argument("--classes", help="class map (label<TAB>name) when PATH is a bare .rec")
    add_output_options(parser)
    parser.set_defaults(run=run)


def _resolve(path_text: str, classes_file: str | None):  # -> (recs, classes)
    from recordio_pack.verify import load_class_map, resolve_path

    targets = resolve_path(path_text)
    recs = [rec for target in targets for rec in target.rec_paths()]
    classes = load_class_map(classes_file) if classes_file else targets[0].classes
    return recs, classes


def run(args: argparse.Namespace) -> int:
    from recordio_pack.peek import RecordRow, contact_sheet, iter_rows

    recs, classes = _resolve(args.path, args.classes)
    rows: list[tuple[str, RecordRow]] = []
    for rec in recs:
        for row, _ in iter_rows(rec, classes, limit=args.limit - len(rows)):
            rows.append((rec.name, row))
        if len(rows) >= args.limit:
            break
    lines = [f"{'file':<28} {'key':>7} {'label':>7} {'class':<16} {'bytes':>8} {'size':>10} format"]
    lines += [f"{name:<28} {row.key:>7} {row.label:>7g} {row.class_name[:16]:<16} {row.bytes:>8} "
              f"{row.width:>4}x{row.height:<5} {row.format}" for name, row in rows]
    result: dict[str, object] = {"records": [dict(row.as_dict(), file=name) for name, row in rows]}
    if args.contact_sheet:
        shown = contact_sheet(recs, args.contact_sheet, classes, count=args.count)
        result["contact_sheet"] = {"path": args.contact_sheet, "images": shown}
        lines.append(f"contact sheet: {args.contact_sheet} ({shown} images)")
    emit(args, result, "\n".join(lines))
    return 0
