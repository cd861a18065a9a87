"""Pydantic models that document the wire shapes in /openapi.json (responses are rendered by usage.py and keys.py)."""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ..money import nano_to_decimal


def money(n: int) -> Decimal:
    return nano_to_decimal(n)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StandardError(BaseModel):
    error: str


class DetailedError(BaseModel):
    error: str
    details: dict = Field(description='zod format(): {"_errors": [], "<field>": {"_errors": ["<why>"]}}')


class InferenceDetails(_Strict):
    requestId: str
    inferenceExecutionTime: int | None
    promptTokens: int | None
    completionTokens: int | None


class UsageEntry(_Strict):
    timestamp: str = Field(examples=["2026-06-15T19:05:10.504Z"])
    sku: str
    pricePerUnitUsd: float
    units: float
    amount: float
    currency: Literal["USD", "VCU", "DIEM", "BUNDLED_CREDITS"]
    notes: str
    inferenceDetails: InferenceDetails | None


class Pagination(_Strict):
    page: int
    limit: int
    total: int
    totalPages: int


class UsageResponse(_Strict):
    data: list[UsageEntry]
    pagination: Pagination


class UsageHistoryResponse(_Strict):
    data: list[UsageEntry]
    nextCursor: str | None


class Balances(BaseModel):
    diem: float | None
    usd: float | None
    bundledCredits: float | None


class BalanceResponse(_Strict):
    canConsume: bool
    consumptionCurrency: Literal["USD", "DIEM", "BUNDLED_CREDITS"] | None
    balances: Balances
    diemEpochAllocation: float


class Limits(BaseModel):
    usd: float | None = None
    diem: float | None = None
    vcu: float | None = None


class TrailingUsage(BaseModel):
    usd: str
    diem: str
    vcu: str


class KeyUsage(BaseModel):
    trailingSevenDays: TrailingUsage


class ApiKeyEntry(_Strict):
    id: str
    apiKeyType: Literal["ADMIN", "INFERENCE"]
    description: str
    last6Chars: str
    createdAt: str | None
    expiresAt: str | None
    lastUsedAt: str | None
    consumptionLimits: Limits
    limitPeriod: Literal["EPOCH", "MONTH", "LIFETIME"]
    modelPrivacy: Literal["ALL", "PRIVATE_TEXT", "PRIVATE_ONLY"]
    usage: KeyUsage | None = None


class ApiKeyList(_Strict):
    object: Literal["list"]
    data: list[ApiKeyEntry]


class CreatedKey(_Strict):
    id: str
    apiKey: str = Field(description="the secret, shown once")
    apiKeyType: Literal["ADMIN", "INFERENCE"]
    description: str
    expiresAt: str | None
    consumptionLimit: Limits
    limitPeriod: Literal["EPOCH", "MONTH", "LIFETIME"]
    modelPrivacy: Literal["ALL", "PRIVATE_TEXT", "PRIVATE_ONLY"]


class CreatedKeyResponse(_Strict):
    success: bool
    data: CreatedKey


class KeyResponse(_Strict):
    success: bool
    data: ApiKeyEntry


class KeyDetail(_Strict):
    data: ApiKeyEntry


class Success(_Strict):
    success: bool


class RecordResult(BaseModel):
    index: int
    status: Literal["recorded", "duplicate", "error"]
    error: str | None = None


class RecordsResponse(_Strict):
    results: list[RecordResult]
    recorded: int
    duplicates: int
    errors: int


class CreditResponse(_Strict):
    status: Literal["recorded", "duplicate"]


class UserOut(_Strict):
    id: str
    name: str
    createdAt: str


class UserList(_Strict):
    data: list[UserOut]
    pagination: Pagination


_ERRORS = {400: {"model": DetailedError, "description": "Invalid request parameters"},
           401: {"model": StandardError, "description": "Authentication failed"},
           429: {"model": StandardError, "description": "Too many failed authentications from this address"}}


def errors(*codes: int) -> dict:
    return {code: _ERRORS.get(code, {"model": StandardError}) for code in codes}


def _csv_ok(model, headers: dict) -> dict:
    return {200: {"model": model, "headers": headers,
                  "content": {"text/csv": {"schema": {"type": "string", "description": "RFC 4180 CSV"}}}},
            **errors(400, 401, 429)}


def usage_responses() -> dict:
    number = {"schema": {"type": "integer"}}
    return _csv_ok(UsageResponse, {"x-pagination-limit": number, "x-pagination-page": number,
                                   "x-pagination-total": number, "x-pagination-total-pages": number,
                                   "Content-Disposition": {"schema": {"type": "string"},
                                                           "description": "CSV only: attachment; filename=billing_usage.csv"}})


def usage_history_responses() -> dict:
    return _csv_ok(UsageHistoryResponse, {
        "x-next-cursor": {"schema": {"type": "string"}, "description": "CSV only; absent on the last page"},
        "Content-Disposition": {"schema": {"type": "string"}, "description": "CSV only"}})


def balance_responses() -> dict:
    return {200: {"model": BalanceResponse}, **errors(401, 429)}


class ByDate(_Strict):
    date: str
    USD: float
    DIEM: float


class Breakdown(_Strict):
    type: str
    usd: float
    diem: float
    units: float


class ByModel(_Strict):
    modelName: str
    unitType: str
    modelType: str | None
    totalUsd: float
    totalDiem: float
    totalUnits: float
    breakdown: list[Breakdown] | None = Field(default=None, description="only when the model has several types")


class ByKey(_Strict):
    apiKeyId: str | None
    description: str
    totalUsd: float
    totalDiem: float
    totalUnits: float


class AnalyticsResponse(_Strict):
    lookback: str
    byDate: list[ByDate]
    byModel: list[ByModel]
    byModelDaily: list[dict[str, float]]
    topModels: list[str]
    byKey: list[ByKey]
    byKeyDaily: list[dict[str, float]]
    topKeyNames: list[str]


def analytics_responses() -> dict:
    return {200: {"model": AnalyticsResponse, "headers": {"Cache-Control": {"schema": {"type": "string"},
                                                                            "description": "private, max-age=600"}}},
            **errors(400, 401, 429)}
