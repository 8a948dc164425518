"""What the training window says about a run: its start (images, steps, device, files
left out), each step's figures, and how long a wait is."""

from __future__ import annotations

from typing import Any


def duration(seconds: float) -> str:
    """``1:02:03`` or ``2:03``, as a time left."""
    total = max(0, round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def start_text(event: dict[str, Any]) -> tuple[str, str]:
    """The run's summary from its ``start`` event, and the files it left out (one a line)."""
    steps, start = int(event.get("steps", 0)), int(event.get("start_step", 0))
    resumed = f", from step {start}" if start else ""
    text = (
        f"Training on {event.get('images', '?')} images, {steps} steps "
        f"({event.get('epochs', '?')} epochs) on {event.get('device', '?')}{resumed}."
    )
    skipped = event.get("skipped") or []
    if skipped:
        text += f" {len(skipped)} {'file' if len(skipped) == 1 else 'files'} left out."
    return text, "\n".join(str(line) for line in skipped)


def step_text(event: dict[str, Any]) -> str:
    """A ``step`` event's figures: step, loss, speed and time left."""
    step, steps = int(event.get("step", 0)), int(event.get("steps", 0))
    loss = float(event.get("loss", float("nan")))
    return (
        f"Step {step}/{steps} · loss {loss:.4f} · {float(event.get('it_s', 0)):.2f} it/s"
        f" · {duration(float(event.get('eta_s', 0)))} left"
    )


def waiting_text(count: int) -> str:
    """What a run waiting for its turn on the device says."""
    if not count:
        return "Freeing the memory the generations held…"
    plural = "generation" if count == 1 else "generations"
    return f"Waiting for {count} {plural} to finish… (Cancel gives the run up)"
