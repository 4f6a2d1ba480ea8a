"""blade-go refusals as Chaos Toolkit failures (kept out of the activity modules)."""
from chaoslib.exceptions import ActivityFailed

from ..errors import BladeError


def activity_failed(what: str, e: BladeError) -> ActivityFailed:
    """ActivityFailed carrying blade-go's message and chaosblade code, as `chaos run` shows it."""
    return ActivityFailed(f"blade-go {what}: {e.message} (code {e.code})")
