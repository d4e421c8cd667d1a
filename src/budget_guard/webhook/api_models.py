"""The API listener's request and answer bodies, as pydantic models: the source of the
OpenAPI document's schemas (``webhook.openapi``), so that the document cannot say
something the code does not.

Validation of a usage report stays in ``domain.usage`` (pure, with messages that name
the field and say what to fix); ``tests/unit/test_api_models.py`` fails when the
models and that parser stop reading the same fields.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Tokens = Annotated[int, Field(ge=0)]


class _Open(BaseModel):
    """Vendors add fields; what is not read here is ignored, not refused."""

    model_config = ConfigDict(extra="allow")


class CachedTokens(_Open):
    cached_tokens: Tokens | None = None


class OpenAIUsage(_Open):
    """OpenAI chat and completions: cached tokens are part of ``prompt_tokens``."""

    prompt_tokens: Tokens | None = None
    completion_tokens: Tokens | None = None
    prompt_tokens_details: CachedTokens | None = None


class ResponsesUsage(_Open):
    """OpenAI Responses: cached tokens are part of ``input_tokens``."""

    input_tokens: Tokens | None = None
    output_tokens: Tokens | None = None
    input_tokens_details: CachedTokens | None = None


class AnthropicUsage(_Open):
    """Anthropic Messages: cache reads and writes are *not* part of ``input_tokens``."""

    input_tokens: Tokens | None = None
    output_tokens: Tokens | None = None
    cache_read_input_tokens: Tokens | None = None
    cache_creation_input_tokens: Tokens | None = None


class GeminiUsage(_Open):
    """Gemini ``usageMetadata``: cached tokens are part of ``promptTokenCount``."""

    promptTokenCount: Tokens | None = None  # noqa: N815 - Gemini's name
    candidatesTokenCount: Tokens | None = None  # noqa: N815
    thoughtsTokenCount: Tokens | None = None  # noqa: N815
    cachedContentTokenCount: Tokens | None = None  # noqa: N815


class GeminiEnvelope(_Open):
    usageMetadata: GeminiUsage  # noqa: N815


class UsageReport(BaseModel):
    """One finished call: its usage as the provider returned it, or its cost."""

    request_id: str = Field(
        description="the x-budget-request-id of the check", min_length=1, max_length=200
    )
    model: str | None = Field(None, description="the model that served the call")
    usage: OpenAIUsage | ResponsesUsage | AnthropicUsage | GeminiUsage | GeminiEnvelope | None = (
        Field(None, description="the usage object, as the provider's API returned it")
    )
    usageMetadata: GeminiUsage | None = Field(  # noqa: N815
        None, description="Gemini usage, beside usage"
    )
    cost_usd: str | float | int | None = Field(
        None, description="the call's cost in USD, instead of usage"
    )


class Settled(BaseModel):
    """What became of one usage report."""

    request_id: str
    status: Literal[
        "settled", "already_settled", "accepted", "unknown_request_id", "ledger_unavailable", "lost"
    ]
    charged_usd: str | None = None
    reserved_usd: str | None = None
    message: str | None = None


class SettledList(BaseModel):
    results: list[Settled]


class ErrorDetail(_Open):
    type: str
    code: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


class CheckCall(BaseModel):
    """``POST /v1/check``: the request the check listener would have received from Envoy."""

    method: str = Field("POST", description="the LLM request's method")
    path: str = Field("/", description="the LLM request's path (a Gemini path names its model)")
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="its headers: the identity (x-budget-tenant, ...) or a JWT, x-request-id",
    )
    body: Any = Field(None, description="its JSON body (null: no body)")


class CheckOutcome(BaseModel):
    """The check listener's answer to that request: 200 allows (with the x-budget-*
    headers), anything else denies (with its JSON body)."""

    status: int
    headers: dict[str, str]
    body: ErrorBody | None = None


# -- the read API's answers (GET /v1/spend, GET /v1/budgets/{namespace}/{name}) ------------
# Closed models: a field an answer adds and the model lacks fails the integration tests,
# which validate every answer against these.


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


Usd = Annotated[str, Field(description="USD as an exact decimal string, e.g. 12.50")]


class SpendRow(_Closed):
    """One group's spend; only the dimensions grouped by are present."""

    tenant: str | None = None
    feature: str | None = None
    model: str | None = None
    user: str | None = None
    day: str | None = Field(None, description="a UTC day, YYYY-MM-DD")
    requests: int
    costUsd: Usd  # noqa: N815 - the API's camelCase


class SpendAnswer(_Closed):
    start: str = Field(alias="from", description="the first UTC day")
    to: str = Field(description="the last UTC day (included)")
    groupBy: list[str]  # noqa: N815
    rows: list[SpendRow]
    requests: int
    totalUsd: Usd  # noqa: N815


class ForecastOut(_Closed):
    spendUsd: Usd | None  # noqa: N815
    limitDate: str | None  # noqa: N815
    basis: str | None
    message: str | None


class CommitmentOut(_Closed):
    amountUsd: Usd  # noqa: N815
    discountPercent: str  # noqa: N815
    utilizationPercent: str  # noqa: N815
    projectedUnusedUsd: Usd | None  # noqa: N815
    discountUsd: Usd  # noqa: N815


class DaySpend(_Closed):
    day: str
    spentUsd: Usd  # noqa: N815


class ReviewOut(_Closed):
    """The monthly review's row of one budget (as ``budget-guard report --format json``)."""

    budget: str
    scope: str
    period: str
    periodKey: str  # noqa: N815
    perUser: bool  # noqa: N815
    allocatedUsd: Usd  # noqa: N815
    spentUsd: Usd  # noqa: N815
    yearToDateUsd: Usd  # noqa: N815
    utilizationPercent: str | None  # noqa: N815
    trend: str
    trendPercent: int | None  # noqa: N815
    previousPeriodUsd: Usd | None  # noqa: N815
    forecast: ForecastOut | None
    action: str
    requestUsd: Usd | None  # noqa: N815
    anomaly: bool
    usersExhausted: int | None  # noqa: N815
    commitment: CommitmentOut | None
    days: list[DaySpend]


class AnomalyOut(_Closed):
    detected: bool
    message: str


class HistoryOut(_Closed):
    start: str = Field(alias="from")
    to: str
    days: list[DaySpend]


class UserSpend(_Closed):
    user: str
    spentUsd: Usd  # noqa: N815


class BudgetDetail(_Closed):
    budget: dict[str, object] = Field(description="as in GET /v1/budgets")
    review: ReviewOut
    anomaly: AnomalyOut
    history: HistoryOut = Field(description="settled spend per local day of the budget")
    users: list[UserSpend] = Field(
        description="per-user templates: the top spenders of the history's days within the "
        "per-user window"
    )
