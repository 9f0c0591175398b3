"""What a user keeps with their account: LLM provider keys and spending limits.

Provider keys are write-only on the wire: a client sends one in
``ProviderKeySet`` and never gets it back; ``ProviderKeyInfo`` tells only
which providers have one. The runner reads a key from the environment
variable named in ``PROVIDER_KEY_VARIABLES``, which is also the list of
variables a runner never inherits from the gateway unless the admin opts in.

Prices turn a ``cost.update``'s tokens into dollars: ``DEFAULT_PRICES`` is the
one table, a user's ``UserSettings.prices`` overrides it model by model, and a
model in neither keeps the dollars its engine reported.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Final

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from .jsontypes import JSON_NUMBER, JsonFloat

__all__ = [
    "DEFAULT_PRICES",
    "MAX_PRICE_ENTRIES",
    "PROVIDER_KEY_VARIABLES",
    "PROVIDER_PATTERN",
    "MaxCostUsd",
    "MaxTokens",
    "ModelName",
    "ModelPrice",
    "ProviderKeyInfo",
    "ProviderKeyList",
    "ProviderKeySet",
    "UserSettings",
]

#: provider name → the environment variable its key travels in
PROVIDER_KEY_VARIABLES: Final[dict[str, str]] = {
    "openai": "OPENAI_API_KEY",
    "anthropic": "ANTHROPIC_API_KEY",
    "gemini": "GEMINI_API_KEY",
    "mistral": "MISTRAL_API_KEY",
    "perplexity": "PERPLEXITY_API_KEY",
}
PROVIDER_PATTERN: Final = r"^[a-z][a-z0-9_-]{0,31}$"
MAX_PRICE_ENTRIES: Final = 500
_MAX_USD: Final = 1_000_000.0
_MAX_TOKENS: Final = 10**12


ModelName = Annotated[str, StringConstraints(min_length=1, max_length=200)]
MaxCostUsd = Annotated[JsonFloat, Field(gt=0, le=_MAX_USD)]
MaxTokens = Annotated[int, Field(ge=1, le=_MAX_TOKENS), JSON_NUMBER]


class ModelPrice(BaseModel):
    """US dollars per million tokens."""

    model_config = ConfigDict(extra="forbid")

    prompt_usd_per_mtok: JsonFloat = Field(ge=0, le=_MAX_USD)
    completion_usd_per_mtok: JsonFloat = Field(ge=0, le=_MAX_USD)

    def cost_usd(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (
            prompt_tokens * self.prompt_usd_per_mtok + completion_tokens * self.completion_usd_per_mtok
        ) / 1e6


def _price(prompt: float, completion: float) -> ModelPrice:
    return ModelPrice(prompt_usd_per_mtok=prompt, completion_usd_per_mtok=completion)


#: list prices of the models cmbagent configures by default (USD per million tokens)
DEFAULT_PRICES: Final[dict[str, ModelPrice]] = {
    "gpt-4.1-2025-04-14": _price(2.0, 8.0),
    "gpt-4.1": _price(2.0, 8.0),
    "gpt-4.1-mini": _price(0.4, 1.6),
    "gpt-4.1-nano": _price(0.1, 0.4),
    "gpt-4o": _price(2.5, 10.0),
    "gpt-4o-2024-11-20": _price(2.5, 10.0),
    "gpt-4o-mini": _price(0.15, 0.6),
    "o3-mini-2025-01-31": _price(1.1, 4.4),
    "o3-mini": _price(1.1, 4.4),
    "gpt-5": _price(1.25, 10.0),
    "claude-3-7-sonnet-20250219": _price(3.0, 15.0),
    "claude-sonnet-4-20250514": _price(3.0, 15.0),
    "gemini-2.5-pro": _price(1.25, 10.0),
    "gemini-2.5-flash": _price(0.3, 2.5),
}


class ProviderKeySet(BaseModel):
    """``PUT /api/keys/{provider}``: the key itself, sent once, never returned."""

    model_config = ConfigDict(extra="forbid")

    # printable ASCII without spaces: what every provider's keys look like, and
    # nothing that could break an environment variable or a header
    value: str = Field(min_length=8, max_length=4096, pattern=r"^[!-~]+$")


class ProviderKeyInfo(BaseModel):
    provider: str
    env_var: str
    updated_at: datetime


class ProviderKeyList(BaseModel):
    items: list[ProviderKeyInfo]
    #: every provider a key can be stored for
    providers: dict[str, str]
    #: the admin lets runners fall back to the gateway's own keys
    gateway_fallback: bool


class UserSettings(BaseModel):
    """``GET/PUT /api/settings``: defaults applied to a user's new tasks."""

    model_config = ConfigDict(extra="forbid")

    #: a task without ``max_cost_usd`` of its own gets this one
    max_cost_usd: MaxCostUsd | None = None
    max_tokens: MaxTokens | None = None
    #: per-model prices replacing ``DEFAULT_PRICES`` for this user's tasks
    prices: dict[ModelName, ModelPrice] = Field(default_factory=dict, max_length=MAX_PRICE_ENTRIES)
