"""What a teacher costs: a price table with its sources, token estimates for calls not yet made, and the
budget cap that refuses a call before it could overspend.

Prices are USD per 1M tokens, list prices for text input and output on the page named beside each (short
prompts: under the long-context tiers). They were written from those pages as published, NOT re-read in
this session: check the page before relying on a number. A model that is not in the table has an unknown
price: its cost is reported as unknown (None), never as 0, and a budget cannot be enforced for it.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

VERTEX_PRICING = "https://cloud.google.com/vertex-ai/generative-ai/pricing"
OPENAI_PRICING = "https://platform.openai.com/docs/pricing"


@dataclass(frozen=True)
class Price:
    input_usd_per_m: float  # USD per 1M input (prompt) tokens
    output_usd_per_m: float  # USD per 1M output tokens (thinking tokens are billed as output)
    source: str  # where the numbers come from


PRICES: dict[str, Price] = {
    "gemini-2.5-pro": Price(1.25, 10.0, VERTEX_PRICING),  # prompts <= 200k tokens
    "gemini-2.5-flash": Price(0.30, 2.50, VERTEX_PRICING),
    "gemini-2.0-flash": Price(0.15, 0.60, VERTEX_PRICING),
    "gemini-2.0-flash-lite": Price(0.075, 0.30, VERTEX_PRICING),
    "gpt-4o": Price(2.50, 10.0, OPENAI_PRICING),
    "gpt-4o-mini": Price(0.15, 0.60, OPENAI_PRICING),
}


def price_of(model: str) -> Price | None:
    """The sourced price of ``model`` (its name as the backend takes it), or None when none is known."""
    return PRICES.get(model.strip().lower())


def cost_usd(price: Price | None, input_tokens: int, output_tokens: int) -> float | None:
    """Dollars for the tokens; None when the price is unknown."""
    if price is None:
        return None
    return (input_tokens * price.input_usd_per_m + output_tokens * price.output_usd_per_m) / 1e6


# An estimate for calls not made yet (dry run, budget reservation), meant to err high: English runs ~4
# characters a token in the BPE tokenizers of these models, so 3 over-counts; plus a few tokens a message
# for the chat framing. The output side is the reply's bound, max_output_tokens, which it cannot exceed.
CHARS_PER_TOKEN = 3
TOKENS_PER_MESSAGE = 4


def estimate_input_tokens(messages: list[dict]) -> int:
    return sum(math.ceil(len(m["content"]) / CHARS_PER_TOKEN) + TOKENS_PER_MESSAGE for m in messages)


def estimate_call_usd(price: Price | None, messages: list[dict], max_output_tokens: int) -> float | None:
    """An upper estimate of one call's cost: estimated input tokens, the output bound."""
    return cost_usd(price, estimate_input_tokens(messages), max_output_tokens)


class Budget:
    """A cap on the dollars a stage spends (``max_usd``; None = no cap). ``reserve`` refuses a call whose
    estimated cost would take spent + reserved past the cap; from the first refusal on every later call is
    refused too (``stopped``), so the stage ends cleanly with what it has. Thread-safe: calls made
    concurrently reserve before they start and ``settle`` with their billed cost when they end."""

    def __init__(self, max_usd: float | None = None):
        if max_usd is not None and max_usd < 0:
            raise ValueError(f"budget max_usd={max_usd}: use a non-negative number of dollars, or None")
        self.max_usd = max_usd
        self.spent_usd = 0.0
        self.reserved_usd = 0.0
        self.stopped = False
        self._lock = threading.Lock()

    def reserve(self, estimate_usd: float | None) -> bool:
        with self._lock:
            if self.max_usd is None:
                return True
            if estimate_usd is None:
                raise ValueError("a budget needs a known price: add the model to components/augment/cost.py")
            if self.stopped or self.spent_usd + self.reserved_usd + estimate_usd > self.max_usd:
                self.stopped = True
                return False
            self.reserved_usd += estimate_usd
            return True

    def settle(self, estimate_usd: float | None, actual_usd: float | None) -> None:
        """A reserved call ended: release its estimate, count what it was billed."""
        with self._lock:
            if self.max_usd is not None:
                self.reserved_usd -= estimate_usd or 0.0
            self.spent_usd += actual_usd or 0.0
