"""Trading fees as pure ``Decimal`` arithmetic: HK (HKEX via Moomoo) and US (via Alpaca).

Rates come from the profile (``HKFees``, ``USFees``; a percentage 0.1 means 0.1 %). What is
charged per order and what per execution follows the brokers' published schedules:

HK, charged on both sides:
* stamp duty: rate x consideration, rounded UP to the whole dollar, per execution
  (HK$2.01 is charged HK$3);
* SFC levy and trading fee: rate x consideration, rounded half-up to the cent, at least one cent,
  per execution;
* AFRC levy: rate x consideration, rounded half-up to the cent (no minimum; small trades pay 0);
* commission: rate x order value rounded half-up to the cent, at least ``commission_min``, charged
  once per order however many executions it takes (an execution pays the increase);
* platform fee: flat, once per order (on its first execution).

US, per execution:
* commission: per share, rounded half-up to the cent;
* SEC fee (sells only): ``sec_fee_per_million`` per million dollars of consideration, rounded
  UP to the cent;
* FINRA TAF (sells only): per share, rounded UP to the cent, capped at ``finra_taf_max``.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal

from config.settings import HKFees, Profile, USFees
from core.instruments import Market, OrderSide

ZERO = Decimal(0)
CENT = Decimal("0.01")
DOLLAR = Decimal("1")
PERCENT = Decimal(100)
MILLION = Decimal(1_000_000)


@dataclass(frozen=True)
class FeeBreakdown:
    """What one execution costs, item by item, in the market's currency."""

    commission: Decimal = ZERO
    platform_fee: Decimal = ZERO
    stamp_duty: Decimal = ZERO
    trading_fee: Decimal = ZERO
    sfc_levy: Decimal = ZERO
    afrc_levy: Decimal = ZERO
    sec_fee: Decimal = ZERO
    finra_taf: Decimal = ZERO

    @property
    def total(self) -> Decimal:
        return sum((getattr(self, f.name) for f in fields(self)), ZERO)


def _cents(amount: Decimal) -> Decimal:
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


def _cents_up(amount: Decimal) -> Decimal:
    return amount.quantize(CENT, rounding=ROUND_CEILING)


def _dollars_up(amount: Decimal) -> Decimal:
    return amount.quantize(DOLLAR, rounding=ROUND_CEILING).quantize(CENT)


def _pct(amount: Decimal, pct: Decimal) -> Decimal:
    return amount * pct / PERCENT


def _at_least_a_cent(fee: Decimal, rate: Decimal) -> Decimal:
    return max(fee, CENT) if rate > 0 else fee


def hk_commission(order_value: Decimal, settings: HKFees) -> Decimal:
    """The commission on an order worth ``order_value`` in total (0 before anything fills)."""
    if order_value <= 0:
        return ZERO
    return max(_cents(_pct(order_value, settings.commission_pct)), _cents(settings.commission_min))


def hk_fees(consideration: Decimal, settings: HKFees, *, order_value_before: Decimal = ZERO) -> FeeBreakdown:
    """Fees on one HK execution worth ``consideration`` (buy and sell alike).

    ``order_value_before`` is what earlier executions of the same order were worth, so the
    commission minimum and the platform fee are charged once per order, not per execution.
    """
    if consideration <= 0:
        return FeeBreakdown()
    return FeeBreakdown(
        commission=hk_commission(order_value_before + consideration, settings) - hk_commission(order_value_before, settings),
        platform_fee=_cents(settings.platform_fee) if order_value_before <= 0 else ZERO,
        stamp_duty=_dollars_up(_pct(consideration, settings.stamp_duty_pct)),
        trading_fee=_at_least_a_cent(_cents(_pct(consideration, settings.trading_fee_pct)), settings.trading_fee_pct),
        sfc_levy=_at_least_a_cent(_cents(_pct(consideration, settings.sfc_levy_pct)), settings.sfc_levy_pct),
        afrc_levy=_cents(_pct(consideration, settings.afrc_levy_pct)),
    )


def us_fees(side: OrderSide, shares: int, consideration: Decimal, settings: USFees) -> FeeBreakdown:
    """Fees on one US execution of ``shares`` worth ``consideration``; the regulators' fees fall on sells."""
    if shares <= 0:
        return FeeBreakdown()
    commission = _cents(settings.commission_per_share * shares)
    if side is not OrderSide.SELL:
        return FeeBreakdown(commission=commission)
    return FeeBreakdown(
        commission=commission,
        sec_fee=_cents_up(consideration * settings.sec_fee_per_million / MILLION),
        finra_taf=min(_cents_up(settings.finra_taf_per_share * shares), settings.finra_taf_max),
    )


def execution_fees(
    market: Market,
    side: OrderSide,
    shares: int,
    consideration: Decimal,
    profile: Profile,
    *,
    order_value_before: Decimal = ZERO,
) -> FeeBreakdown:
    """Fees on one execution in ``market``, with the profile's rates."""
    if market is Market.HK:
        return hk_fees(consideration, profile.fees_hk, order_value_before=order_value_before)
    return us_fees(side, shares, consideration, profile.fees_us)
