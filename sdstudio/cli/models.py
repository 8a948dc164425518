"""``sdstudio-cli models …``: list models where they are, add folders, download from the Hub."""

from __future__ import annotations

import argparse
import dataclasses
import threading
from typing import Any, Protocol

from sdstudio.cli.report import Reporter
from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.models.catalog import (
    ModelEntry,
    add_model_folder,
    list_models,
    network_folders,
    remove_model_folder,
)
from sdstudio.engine.paths import AppPaths
from sdstudio.engine.settings import Settings, choose_vae, model_key, save_settings
from sdstudio.engine.vae import find_vae

EXIT_CANCELLED = 130


class ModelsContext(Protocol):
    """What ``models`` needs from the CLI's context."""

    paths: AppPaths
    settings: Settings
    reporter: Reporter


def add_parser(commands: argparse._SubParsersAction) -> None:
    """Add ``models`` and its sub-commands."""
    models = commands.add_parser("models", help="list, add and download models")
    actions = models.add_subparsers(dest="action", required=True, metavar="ACTION")

    listing = actions.add_parser("list", help="every model found, where it is")
    listing.add_argument("--json", action="store_true")

    add = actions.add_parser("add-folder", help="list the models of a folder or another tool")
    add.add_argument("folder", help="a folder of models, or an A1111, ComfyUI or InvokeAI root")
    add.add_argument("--json", action="store_true")

    remove = actions.add_parser("remove-folder", help="stop listing a folder's models")
    remove.add_argument("folder")
    remove.add_argument("--json", action="store_true")

    vae = actions.add_parser("vae", help="show or choose the VAE a model uses")
    vae.add_argument("model", help="the model (path) the choice is for")
    vae.add_argument(
        "vae", nargs="?", help="VAE file or name in the VAE folders; 'none' for the model's own"
    )
    vae.add_argument("--json", action="store_true")

    from sdstudio.engine.models.download import ANNOTATOR_DOWNLOADS, TINY_VAE_DOWNLOADS

    both = {**ANNOTATOR_DOWNLOADS, **TINY_VAE_DOWNLOADS}
    offered = "\n".join(f"  {repo}: {text}" for repo, (text, _gb) in both.items())
    fetch = actions.add_parser(
        "download",
        help="download a diffusers model (or a preprocessor's network) from Hugging Face",
        description="Download a diffusers model into the Hugging Face cache, or one of the\n"
        "preprocessor networks below into sdstudio's models/annotators folder, or one of\n"
        "the tiny VAEs below (previews, draft decodes) into its models/vae_approx folder.",
        epilog=f"preprocessor networks and tiny VAEs:\n{offered}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    fetch.add_argument(
        "repo_id", help="for example stabilityai/sd-turbo, or a preprocessor network below"
    )
    fetch.add_argument("--revision", default="main")
    fetch.add_argument("--json", action="store_true")
    fetch.add_argument("--endpoint", default=None, help=argparse.SUPPRESS)


def run(args: argparse.Namespace, context: ModelsContext) -> int:
    """Run one ``models`` action."""
    reporter = context.reporter
    if args.action == "list":
        catalog = list_models(context.paths, context.settings)
        for path, reason in catalog.skipped:
            reporter.event("skipped", f"skipped {path}: {reason}", path=path, reason=reason)
        if reporter.as_json:
            reporter.data([entry.to_dict() for entry in catalog.entries])
        else:
            for entry in catalog.entries:
                reporter.result(_line(entry))
            if not catalog.entries:
                reporter.result("No models found. Add a folder with: models add-folder DIR")
        return 0
    if args.action in ("add-folder", "remove-folder"):
        change = add_model_folder if args.action == "add-folder" else remove_model_folder
        settings = change(context.settings, args.folder)
        save_settings(context.paths, settings)
        context.settings = settings
        folders = list(settings.model_folders)
        reporter.done("Model folders:\n" + "\n".join(folders or ["(none)"]), folders=folders)
        return 0
    if args.action == "vae":
        return _choose_vae(args, context)
    code = _download(args, context, getattr(context, "cancel", None))
    if code == 0 and args.repo_id not in context.settings.downloaded_models:
        # Recorded as the app's own, so that the model manager's "Delete download" may
        # remove it (it never deletes what another tool downloaded).
        downloaded = (*context.settings.downloaded_models, args.repo_id)
        context.settings = dataclasses.replace(context.settings, downloaded_models=downloaded)
        save_settings(context.paths, context.settings)
    return code


def _choose_vae(args: argparse.Namespace, context: ModelsContext) -> int:
    """Show the model's VAE, or choose one (checked to exist first)."""
    settings = context.settings
    if args.vae is not None:
        vae = ""
        if args.vae.lower() != "none":
            folders = network_folders(context.paths, settings, "vae")
            vae = str(find_vae(args.vae, folders))
        settings = choose_vae(settings, args.model, vae)
        save_settings(context.paths, settings)
        context.settings = settings
    model, chosen = model_key(args.model), settings.vae_for(args.model)
    context.reporter.done(f"{model}: {chosen or 'its own VAE'}", model=model, vae=chosen)
    return 0


def _download(
    args: argparse.Namespace, context: ModelsContext, cancel: threading.Event | None = None
) -> int:
    """Download in a worker thread, so that Ctrl+C can cancel it cleanly; a preprocessor's
    network goes into ``models/annotators``, where the preprocessors look.

    Ctrl+C sets ``cancel`` (a caller may pass its own to see when it is set).
    """
    from sdstudio.engine.control.annotators import FOLDER_NAME
    from sdstudio.engine.models.download import (
        ANNOTATOR_DOWNLOADS,
        TINY_VAE_DOWNLOADS,
        DownloadCancelled,
        download_annotator,
        download_model,
        download_tiny_vae,
        tiny_vae_folder,
    )

    reporter = context.reporter
    if args.repo_id in {**ANNOTATOR_DOWNLOADS, **TINY_VAE_DOWNLOADS} and args.revision != "main":
        raise InvalidRequest(
            f"{args.repo_id} is a preprocessor network, fetched at its main revision; "
            "leave out --revision."
        )
    cancel = cancel or threading.Event()
    finished = threading.Event()
    outcome: dict[str, Any] = {}
    shown = [-1]

    def progress(done: int, total: int) -> None:
        step = done * 100 // total if total else 100
        if step != shown[0] or done == total:
            shown[0] = step
            text = f"{done / 1e6:,.1f} / {total / 1e6:,.1f} MB ({step}%)"
            reporter.event("progress", text, done=done, total=total)

    def work() -> None:
        try:
            if args.repo_id in TINY_VAE_DOWNLOADS:
                folder = tiny_vae_folder(context.paths.models_dir, args.repo_id)
                outcome["path"] = download_tiny_vae(
                    args.repo_id, folder, progress=progress, cancel=cancel, endpoint=args.endpoint
                )
            elif args.repo_id in ANNOTATOR_DOWNLOADS:
                folder = context.paths.models_dir / FOLDER_NAME
                outcome["path"] = download_annotator(
                    args.repo_id, folder, progress=progress, cancel=cancel, endpoint=args.endpoint
                )
            else:
                outcome["path"] = download_model(
                    args.repo_id,
                    revision=args.revision,
                    progress=progress,
                    cancel=cancel,
                    endpoint=args.endpoint,
                )
        except BaseException as error:
            outcome["error"] = error
        finally:
            finished.set()

    worker = threading.Thread(target=work, name="model-download", daemon=True)
    worker.start()
    try:
        # An Event, not Thread.join: a join interrupted by Ctrl+C can wrongly report the end.
        while not finished.wait(0.2):
            pass
    except KeyboardInterrupt:
        cancel.set()
        finished.wait()
    error = outcome.get("error")
    if isinstance(error, DownloadCancelled):
        reporter.event("cancelled", "Download cancelled; run it again to continue.")
        return EXIT_CANCELLED
    if error is not None:
        raise error
    path = str(outcome["path"])
    reporter.done(f"Downloaded {args.repo_id} to {path}", repo_id=args.repo_id, path=path)
    return 0


def _line(entry: ModelEntry) -> str:
    flags = "".join(f" {flag}" for flag in entry.flags)
    return (
        f"{entry.name:<32} {entry.kind:<12} {entry.family_label:<18} {entry.format:<11} "
        f"{_size(entry.size_bytes):>9}  {entry.source:<11}{flags}  {entry.path}"
    )


def _size(size: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000  # type: ignore[assignment]
    return f"{size} B"
