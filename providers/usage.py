"""Usage is a fold over provider events: ``accumulate(event, snapshot) -> snapshot``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from providers.base import Finish, FinishReason, ProviderEvent, TextDelta, UsageReport


@dataclass(frozen=True, slots=True)
class UsageSnapshot:
    text_parts: int = 0
    generated_chars: int = 0
    reported_prompt: int | None = None
    reported_completion: int | None = None
    finish_reason: FinishReason | None = None


def accumulate(event: ProviderEvent, snap: UsageSnapshot) -> UsageSnapshot:
    match event:
        case TextDelta(text=text):
            return replace(
                snap,
                text_parts=snap.text_parts + 1,
                generated_chars=snap.generated_chars + len(text),
            )
        case UsageReport(prompt_tokens=p, completion_tokens=c):
            return replace(
                snap,
                reported_prompt=p if p is not None else snap.reported_prompt,
                reported_completion=c if c is not None else snap.reported_completion,
            )
        case Finish(reason=reason):
            return replace(snap, finish_reason=reason)


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def as_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


def final_usage(
    snap: UsageSnapshot,
    *,
    counted_prompt: int,
    count_completion: Callable[[], int],
) -> Usage:
    """Provider-reported figures win; whatever is missing is counted by us."""
    prompt = snap.reported_prompt if snap.reported_prompt is not None else counted_prompt
    if snap.reported_completion is not None:
        completion = snap.reported_completion
    else:
        completion = count_completion()
    return Usage(prompt_tokens=prompt, completion_tokens=completion)
