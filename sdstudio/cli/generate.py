"""``sdstudio-cli generate``, ``rerun`` and ``info``.

``rerun ID`` trusts the history, which is sdstudio's own: its model and VAE
paths are those the user gave. So does ``rerun IMAGE`` for an image the
history lists (its entry is re-run). Settings read from any other image are
another tool's or another person's: their model and VAE are looked for only in
the model and VAE folders and the Hugging Face cache; anything else asks for
``--model`` or ``--vae``. A recorded init image or mask is used only from
sdstudio's inputs folder, where the engine keeps a copy of every one; anything
else is reported as missing. The prompts' length is checked before a model is
loaded.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdstudio.cli.control_options import (
    add_control_options,
    check_recorded_control_images,
    control_options,
    recorded_control,
)
from sdstudio.cli.detail_options import add_detail_options, detail_options, recorded_detailer
from sdstudio.cli.engine_setup import add_run_options, open_engine, progress_reporters
from sdstudio.cli.fast_options import add_fast_options, fast_options
from sdstudio.cli.hires_options import add_hires_options, hires_options
from sdstudio.cli.ip_adapter_options import (
    add_ip_adapter_options,
    check_recorded_reference_images,
    ip_adapter_options,
    recorded_image_prompts,
)
from sdstudio.cli.model_choice import ChosenModel, choose_model, settings_for
from sdstudio.cli.recorded import Recorded, recorded_model, recorded_vae
from sdstudio.cli.refiner_options import add_refiner_options, refiner_options, rerun_refiner
from sdstudio.cli.report import Reporter
from sdstudio.cli.source_options import add_source_options, source_options
from sdstudio.cli.style_options import add_style_options, styled
from sdstudio.cli.upscale import add_sd_upscale_options, sd_upscale_option
from sdstudio.cli.variation_options import add_variation_options, variation_options
from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.models.lookup import ModelFinder, is_inside
from sdstudio.engine.models.part_folders import file_names
from sdstudio.engine.request import GenerationRequest, Mode, round_to_multiple_of_8
from sdstudio.logs import quiet_third_party

if TYPE_CHECKING:
    from sdstudio.cli import Context
    from sdstudio.engine.history import HistoryEntry


def add_parsers(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``generate``, ``info`` and ``rerun``."""
    add_generate_options(
        commands.add_parser("generate", help="generate images from a prompt or an image")
    )
    _add_info_and_rerun(commands)


def add_generate_options(generate: argparse.ArgumentParser) -> None:
    """Every option of ``generate``; ``xyz`` takes them too."""
    generate.add_argument(
        "--model",
        required=True,
        help="diffusers folder, .safetensors file, or a name 'models list' shows (org/name)",
    )
    generate.add_argument("--prompt", required=True)
    generate.add_argument("--negative", default="", help="negative prompt")
    generate.add_argument(
        "--sampler", default=None, help="for example 'Euler a', 'DDIM' (default: the model's)"
    )
    generate.add_argument("--schedule", default=None, help="Automatic, Karras, Exponential, …")
    generate.add_argument("--steps", type=int, default=None, help="default: the model's")
    generate.add_argument("--cfg", type=float, default=None, help="guidance scale")
    generate.add_argument(
        "--distilled-cfg",
        type=float,
        default=3.5,
        help="Flux.1 dev's guidance embedding (Forge's Distilled CFG Scale; default 3.5)",
    )
    generate.add_argument(
        "--seed", type=int, default=-1, help="0 to 2**64-1 (64-bit seeds); -1 for a random seed"
    )
    generate.add_argument("--width", type=int, default=None)
    generate.add_argument("--height", type=int, default=None)
    generate.add_argument("--batch", type=int, default=1, help="images, with seeds s, s+1, …")
    generate.add_argument("--init-image", default=None, help="start from this image (img2img)")
    generate.add_argument("--strength", type=float, default=0.75, help="how much to change it")
    generate.add_argument("--mask", default=None, help="white = repaint (inpainting)")
    add_variation_options(generate)
    add_style_options(generate)
    add_source_options(generate)
    add_hires_options(generate)
    add_sd_upscale_options(generate)
    add_detail_options(generate)
    add_control_options(generate)
    add_ip_adapter_options(generate)
    add_refiner_options(generate)
    add_fast_options(generate)
    generate.add_argument(
        "--vae",
        default=None,
        help="VAE file or name to use instead of the model's own ('none': the model's own; "
        "default: the VAE chosen for the model with 'models vae')",
    )
    generate.add_argument(
        "--draft-decode",
        action="store_true",
        help="decode the final image with the model family's tiny VAE (TAESD, TAESDXL, "
        "TAESD3, TAEF1: fast, a little softer); refused when none is in a vae_approx folder",
    )
    generate.add_argument(
        "--text-encoder",
        action="append",
        default=None,
        metavar="FILE",
        help="a text encoder file (or its name in the text-encoder folders) for a model kept "
        "as a transformer file alone; repeat for each (default: the fitting files found)",
    )
    add_run_options(generate)


def _add_info_and_rerun(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    info = commands.add_parser(
        "info", help="show the generation settings stored in an image, or this computer's device"
    )
    info.add_argument(
        "image", nargs="?", default=None, help="without one: the device and the precision used"
    )
    info.add_argument("--json", action="store_true", help="print JSON")

    rerun = commands.add_parser("rerun", help="generate again from an image or a history id")
    rerun.add_argument("image", metavar="IMAGE_OR_ID")
    rerun.add_argument(
        "--model", default=None, help="use this model (path or name) instead of the recorded one"
    )
    rerun.add_argument("--seed", type=int, default=None, help="use this seed instead")
    rerun.add_argument(
        "--vae", default=None, help="use this VAE instead of the recorded one ('none': the model's)"
    )
    rerun.add_argument(
        "--text-encoder",
        action="append",
        default=None,
        metavar="FILE",
        help="use these text encoders instead of the recorded ones (repeat for each)",
    )
    add_refiner_options(rerun, rerun=True)
    add_run_options(rerun)


def run_generation(args: argparse.Namespace, context: Context) -> int:
    """``generate`` or ``rerun``."""
    quiet_third_party()
    finder = ModelFinder.for_catalog(context.paths, lambda: context.settings, remember=True)
    if args.command == "generate":
        request = generate_request(args, context, finder)
    else:
        request = _request_to_rerun(args, context, finder)
    request.check_prompts()
    return _run(request, args, context, finder)


def generate_request(
    args: argparse.Namespace, context: Context, finder: ModelFinder
) -> GenerationRequest:
    """The request ``generate``'s options describe (``xyz`` starts from it too)."""
    model = choose_model(args.model, finder)
    request = _request_from_arguments(args, model, context.reporter)
    request = styled(request, args.style, context.paths, context.settings.model_folders)
    request = request.replace(refiner=refiner_options(args, finder))
    if args.vae is None:
        vae = context.settings.vae_for(str(model.path)) or context.settings.vae_for(args.model)
        request = request.replace(vae=vae)
    return request


def run_request(request: GenerationRequest, args: argparse.Namespace, context: Context) -> int:
    """Run a request made by another command (``upscale``) as ``generate`` runs its own."""
    quiet_third_party()
    finder = ModelFinder.for_catalog(context.paths, lambda: context.settings, remember=True)
    return _run(request, args, context, finder)


def _request_from_arguments(
    args: argparse.Namespace, model: ChosenModel, reporter: Reporter
) -> GenerationRequest:
    from sdstudio.engine.images import open_image

    if args.mask and not args.init_image:
        raise InvalidRequest("--mask needs --init-image: the mask marks what to repaint in it.")
    source_options(args)  # refused before a model is loaded
    hires = hires_options(args)
    detailer = detail_options(args)
    control = control_options(args)
    image_prompts = ip_adapter_options(args)
    sd_upscale = sd_upscale_option(args)
    mode = Mode.TXT2IMG
    init_size = None
    if args.init_image:
        mode = Mode.INPAINT if args.mask else Mode.IMG2IMG
        init_size = open_image(args.init_image, what="init image").size
    # SD upscale's size is that of its tiles: the model's own unless given.
    chosen = settings_for(args, model, with_size=init_size is None or sd_upscale is not None)
    if sd_upscale is not None:
        init_size = None
    width, height = chosen.width, chosen.height
    if init_size is not None:
        width = init_size[0] if width is None else width
        height = init_size[1] if height is None else height
    assert width is not None and height is not None
    if chosen.notice:  # first: an error below may come from a default
        reporter.event("notice", chosen.notice, message=chosen.notice)
    return GenerationRequest(
        model=model.request_model,
        prompt=args.prompt,
        negative_prompt=args.negative,
        mode=mode,
        sampler=chosen.sampler,
        schedule=chosen.schedule,
        steps=chosen.steps,
        guidance_scale=chosen.guidance_scale,
        seed=args.seed,
        width=_multiple_of_8("width", width, reporter),
        height=_multiple_of_8("height", height, reporter),
        batch_size=args.batch,
        init_image=str(Path(args.init_image).resolve()) if args.init_image else None,
        mask=str(Path(args.mask).resolve()) if args.mask else None,
        strength=args.strength if args.init_image else 0.75,
        vae=_vae_argument(args.vae),
        draft_decode=args.draft_decode,
        distilled_guidance=args.distilled_cfg,
        text_encoders=_text_encoder_arguments(args.text_encoder),
        hires=hires,
        detailer=detailer,
        control=control,
        ip_adapters=image_prompts,
        upscale=sd_upscale,
        **source_options(args),
        **variation_options(args),
        **fast_options(args),
    )


def _text_encoder_arguments(values: list[str] | None) -> tuple[str, ...]:
    """``--text-encoder``: paths made absolute, names kept to find in the folders."""
    return tuple(
        str(Path(value).expanduser().resolve()) if os.path.exists(value) else value
        for value in values or ()
    )


def _vae_argument(value: str | None) -> str:
    """``--vae``: a path (made absolute), a name to find in the VAE folders, or none."""
    if not value or value.lower() == "none":
        return ""
    return str(Path(value).expanduser().resolve()) if os.path.exists(value) else value


def _multiple_of_8(name: str, value: int, reporter: Reporter) -> int:
    if value % 8 == 0 or value < 8:
        return value
    rounded = round_to_multiple_of_8(value)
    reporter.event(
        "notice",
        f"note: {name} {value} is not a multiple of 8; using {rounded}.",
        message=f"{name} {value} is not a multiple of 8; using {rounded}.",
    )
    return rounded


def _request_to_rerun(
    args: argparse.Namespace, context: Context, finder: ModelFinder
) -> GenerationRequest:
    from sdstudio.engine.metadata import read_image_settings
    from sdstudio.engine.metadata.record import ImageRecord

    source = args.image
    entry: HistoryEntry | None
    if source.isdigit() and not Path(source).exists():
        entry = context.library.store.get(int(source))
        source = f"history entry {source}"
    else:
        entry = context.library.store.find_path(Path(source))
        source = Path(source).name
    model_hash = ""
    if entry is not None:
        request, model_name, trusted = entry.request, entry.model_name, True
        args.recorded_device = ImageRecord.from_json(entry.record_json).device
    else:
        settings = read_image_settings(args.image)
        request, model_name, trusted = settings.request, settings.model_name, False
        model_hash = settings.model_hash
        args.recorded_device = settings.record.device if settings.record is not None else ""
        for note in settings.notes:  # what was changed, and what is kept but not applied
            context.reporter.event("notice", f"note: {note}", message=note)
    changes: dict[str, Any] = {}
    if args.model:
        changes["model"] = choose_model(args.model, finder).request_model
    elif request.mode is not Mode.UPSCALE:  # an upscale names no model
        recorded = Recorded(request.model, model_name, model_hash, request.width, request.height)
        model = recorded_model(recorded, source, finder, context, trusted)
        if model != request.model:
            changes["model"] = model
    if args.seed is not None:
        changes["seed"] = args.seed
    if args.vae is not None:
        changes["vae"] = _vae_argument(args.vae)
    elif request.vae and not trusted:
        vae = recorded_vae(request.vae, context)
        if vae != request.vae:
            changes["vae"] = vae
    if args.text_encoder is not None:
        changes["text_encoders"] = _text_encoder_arguments(args.text_encoder)
    elif not trusted and request.text_encoders:
        # A file's record names parts only by file name, looked up in the part folders.
        changes["text_encoders"] = file_names(request.text_encoders)
    if not trusted and request.detailer is not None:
        changes["detailer"] = recorded_detailer(request.detailer)
    if not trusted and request.control:
        check_recorded_control_images(request.control, source, context.paths.inputs_dir)
        changes["control"] = recorded_control(request.control)
    if not trusted and request.ip_adapters:
        check_recorded_reference_images(request.ip_adapters, source, context.paths.inputs_dir)
        changes["ip_adapters"] = recorded_image_prompts(request.ip_adapters)
    refiner = rerun_refiner(request, args, finder, trusted=trusted)
    if refiner != request.refiner:
        changes["refiner"] = refiner
    for name in ("init_image", "mask"):
        _check_source_image(getattr(request, name), name, source, context.paths.inputs_dir)
    return request.replace(**changes) if changes else request


def _check_source_image(value: str | None, name: str, source: str, inputs_dir: Path) -> None:
    """A recorded init image or mask is used only from the inputs folder, where
    sdstudio keeps a copy of every one it used: a record read from elsewhere
    could name any file on this computer."""
    if not value:
        return
    what = name.replace("_", " ")
    if not is_inside(Path(value), [inputs_dir]):
        raise InvalidRequest(
            f"The {what} of {source} is missing: sdstudio re-runs only {what}s kept in its "
            f"inputs folder ({inputs_dir}), and {value} is not there. Start again from the "
            "image with 'sdstudio-cli generate --init-image'."
        )
    if not Path(value).is_file():
        raise InvalidRequest(f"The {what} {value} of {source} is gone.")


def _run(
    request: GenerationRequest, args: argparse.Namespace, context: Context, finder: ModelFinder
) -> int:
    engine, library = open_engine(args, context, finder)
    reporter = context.reporter
    on_progress, on_status = progress_reporters(reporter, request.mode)
    for result in engine.generate(request, on_progress=on_progress, on_status=on_status):
        entry = library.save(result)
        reporter.event("image", None, path=entry.path, seed=entry.seed, id=entry.id)
        reporter.result(entry.path)
    reporter.event("done")
    return 0
