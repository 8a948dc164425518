"""``sdstudio-cli history …``: list, search, show, favourite, delete, rebuild, export."""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
from pathlib import Path

from sdstudio.cli.details import entry_lines
from sdstudio.cli.report import Reporter
from sdstudio.engine.errors import InvalidRequest, StorageError
from sdstudio.engine.fileio import write_atomically
from sdstudio.engine.history import HistoryEntry, HistoryQuery
from sdstudio.engine.history.library import ImageLibrary, rebuild

_MAX_NUMBER = 10_000
"""How far ``name-2``, ``name-3``… go before an export gives up."""


def add_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``history`` and its sub-commands."""
    history = commands.add_parser("history", help="list, search and manage past images")
    actions = history.add_subparsers(dest="action", required=True, metavar="ACTION")

    listing = actions.add_parser("list", help="newest first")
    listing.add_argument("--search", default="", help="words of the prompt or negative prompt")
    listing.add_argument("--favorites", action="store_true")
    listing.add_argument(
        "--model", default="", help="only images made with this model (its name, or its path)"
    )
    listing.add_argument("--limit", type=int, default=20)
    listing.add_argument("--offset", type=int, default=0)
    listing.add_argument("--json", action="store_true")

    show = actions.add_parser("show", help="everything about one image")
    show.add_argument("id", type=int)
    show.add_argument("--json", action="store_true")

    delete = actions.add_parser("delete", help="remove an image (and its file)")
    delete.add_argument("id", type=int)
    delete.add_argument("--keep-file", action="store_true", help="keep the image file")
    delete.add_argument("--json", action="store_true")

    favorite = actions.add_parser("favorite", help="mark or unmark a favourite")
    favorite.add_argument("id", type=int)
    favorite.add_argument("--off", action="store_true", help="unmark")
    favorite.add_argument("--json", action="store_true")

    rebuild_parser = actions.add_parser("rebuild", help="re-index images from their metadata")
    rebuild_parser.add_argument("folders", nargs="*", help="default: the outputs folder")
    rebuild_parser.add_argument("--json", action="store_true")

    export = actions.add_parser("export", help="copy images and their settings to a folder")
    export.add_argument("ids", type=int, nargs="+")
    export.add_argument("--to", required=True, help="destination folder")
    export.add_argument("--format", choices=["json", "csv"], default="json")
    export.add_argument("--json", action="store_true")


def run(args: argparse.Namespace, library: ImageLibrary, reporter: Reporter) -> int:
    """Run one ``history`` action."""
    store = library.store
    if args.action == "list":
        if args.limit < 1:
            raise InvalidRequest("--limit must be at least 1.")
        query = HistoryQuery(
            search=args.search, favorites=args.favorites, model=_model_name(args.model)
        )
        entries = store.page(query, offset=max(0, args.offset), limit=args.limit)
        if reporter.as_json:
            reporter.data({"total": store.count(query), "entries": [e.to_dict() for e in entries]})
        else:
            for entry in entries:
                reporter.result(_line(entry))
            if not entries:
                reporter.result("No images match.")
        return 0
    if args.action == "show":
        entry = store.get(args.id)
        if reporter.as_json:
            reporter.data(entry.to_dict())
        else:
            reporter.result("\n".join(entry_lines(entry)))
        return 0
    if args.action == "delete":
        entry = library.delete(args.id, keep_file=args.keep_file)
        kept = " (file kept)" if args.keep_file else ""
        reporter.done(f"Deleted {entry.id}: {entry.path}{kept}", id=entry.id, path=entry.path)
        return 0
    if args.action == "favorite":
        store.set_favorite(args.id, not args.off)
        state = "no longer a favourite" if args.off else "a favourite"
        reporter.done(f"{args.id} is {state}.", id=args.id, favorite=not args.off)
        return 0
    if args.action == "rebuild":
        folders = [Path(f) for f in args.folders] or [library.writer.folder]
        for folder in folders:
            if not folder.exists():
                raise InvalidRequest(f"The folder {folder} does not exist.")
        report = rebuild(store, folders)
        for path, reason in report.skipped:
            path, reason = _printable(path), _printable(reason)
            reporter.event("skipped", f"skipped {path}: {reason}", path=path, reason=reason)
        reporter.done(
            f"{report.added} images added, {report.already} already recorded, "
            f"{len(report.skipped)} skipped.",
            added=report.added,
            already=report.already,
            skipped=len(report.skipped),
        )
        return 0
    return _export(args, library, reporter)


def _export(args: argparse.Namespace, library: ImageLibrary, reporter: Reporter) -> int:
    """Copy images and their settings; nothing already in the folder is replaced."""
    entries = [library.store.get(entry_id) for entry_id in dict.fromkeys(args.ids)]
    for entry in entries:
        if not Path(entry.path).is_file():
            raise InvalidRequest(f"The image file of {entry.id} is missing: {entry.path}.")
    destination = Path(args.to)
    try:
        destination.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise StorageError(
            f"Cannot create the folder {destination}: {error.strerror or error}."
        ) from None
    rows = []
    for entry in entries:
        source = Path(entry.path)
        target = _write_new(destination / source.name, _read(source))
        _keep_times(source, target)
        reporter.result(str(target))
        rows.append({**entry.to_dict(), "path": str(target), "original_path": entry.path})
    if args.format == "json":
        data = json.dumps(rows, indent=2, ensure_ascii=False).encode("utf-8")
    else:
        buffer = io.StringIO()
        columns = [k for k in rows[0] if k != "request"] + ["request"]
        writer = csv.DictWriter(buffer, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "request": json.dumps(row["request"], ensure_ascii=False)})
        data = buffer.getvalue().encode("utf-8")
    settings_file = _write_new(destination / f"settings.{args.format}", data)
    reporter.result(str(settings_file))
    reporter.done(
        f"Exported {len(rows)} images and {settings_file.name} to {destination}",
        count=len(rows),
        settings=str(settings_file),
        files=[row["path"] for row in rows],
    )
    return 0


def _write_new(path: Path, data: bytes) -> Path:
    """Write ``data`` under ``path``'s name, or ``name-2``, ``name-3``… if that is taken."""
    for number in range(1, _MAX_NUMBER + 1):
        name = path.name if number == 1 else f"{path.stem}-{number}{path.suffix}"
        try:
            return write_atomically(path.with_name(name), data, overwrite=False)
        except FileExistsError:
            continue
    raise StorageError(f"No free name for {path.name} in {path.parent}.")


def _read(source: Path) -> bytes:
    try:
        return source.read_bytes()
    except OSError as error:
        raise StorageError(f"Cannot read {source}: {error.strerror or error}.") from None


def _keep_times(source: Path, target: Path) -> None:
    """Give the copy the image's own times, as a file manager's copy does."""
    with contextlib.suppress(OSError):
        stat = source.stat()
        os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def _model_name(model: str) -> str:
    """The name the history records for ``model``: a path becomes the model's name."""
    from sdstudio.engine.models.lookup import display_name

    path = Path(model).expanduser()
    if model and os.path.exists(path):
        return display_name(path.resolve())
    return model


def _printable(text: str) -> str:
    """``text`` with what no terminal can print (a lone surrogate from an odd file
    name or metadata) written as an escape."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _line(entry: HistoryEntry) -> str:
    star = "★" if entry.favorite else " "
    prompt = entry.prompt.replace("\n", " ")
    if len(prompt) > 60:
        prompt = prompt[:59] + "…"
    return (
        f"{entry.id:>6} {star} {entry.created[:19].replace('T', ' ')}  seed {entry.seed:<10} "
        f"{entry.model_name}  {prompt}"
    )
