"""An order request checked before it goes to OpenD, and the ``place_order`` arguments it becomes.

Paper (``TrdEnv.SIMULATE``) accounts take only limit (``NORMAL``) and market orders (Futu OpenAPI
trade definitions, OrderType), so a stop order is refused on them here, before anything is sent.
Moomoo has no bracket orders: protective orders go separately.
"""
from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

from brokers.base import OrderRejected, OrderRequest, OrderType
from core.instruments import Market, OrderSide, is_on_tick, round_to_tick

REMARK_MAX_BYTES = 64                # place_order remark limit (SDK check)


def validate_request(request: OrderRequest, *, market: Market, stop_orders: bool, environment: str, day: date,
                     hk_phase2_date: date | None) -> None:
    """Raise ``OrderRejected`` saying what is wrong with ``request``; ``day`` is the exchange's today."""
    coid = request.client_order_id
    where = f"{request.symbol} order {coid!r}"
    if request.symbol.market is not market:
        raise OrderRejected(f"{where}: this Moomoo broker trades {market.value} only")
    if not coid or len(coid.encode("utf-8")) > REMARK_MAX_BYTES:
        raise OrderRejected(f"{where}: client order id must be 1-{REMARK_MAX_BYTES} bytes (Moomoo remark)")
    if not isinstance(request.quantity, int) or request.quantity <= 0:
        raise OrderRejected(f"{where}: quantity must be a positive whole number, got {request.quantity!r}")
    if request.take_profit_price is not None or request.stop_loss_price is not None:
        raise OrderRejected(f"{where}: Moomoo has no bracket orders; place the protective order separately")
    if request.order_type is OrderType.MARKET and (request.limit_price or request.stop_price):
        raise OrderRejected(f"{where}: a market order takes no limit or stop price")
    prices = []
    if request.order_type is OrderType.LIMIT:
        prices.append(("limit price", request.limit_price))
    if request.order_type is OrderType.STOP:
        if not stop_orders:
            raise OrderRejected(
                f"{where}: stop orders are not supported on this Moomoo {environment} account (Futu: paper "
                "trading supports only limit and market orders); no broker-side backstop was placed")
        prices.append(("stop price", request.stop_price))
        if request.limit_price is not None:
            prices.append(("limit price", request.limit_price))
    for label, price in prices:
        _check_price(where, label, price, request.side, market, day, hk_phase2_date)


def _check_price(where: str, label: str, price: Decimal | None, side: OrderSide, market: Market, day: date,
                 hk_phase2_date: date | None) -> None:
    if price is None or price <= 0:
        raise OrderRejected(f"{where}: a positive {label} is required, got {price!r}")
    if not is_on_tick(market, price, day, hk_phase2_date):
        how = "down" if side is OrderSide.BUY else "up"
        nearest = round_to_tick(market, price, day, hk_phase2_date=hk_phase2_date)
        raise OrderRejected(f"{where}: {label} {price} is off the tick grid (nearest valid {nearest}; "
                            f"round {how} for a {side.value})")


def placement_args(request: OrderRequest, sdk: Any, trade_args: dict[str, Any]) -> dict[str, Any]:
    """``place_order`` keyword arguments; the client order id travels as the order's remark."""
    args: dict[str, Any] = {"qty": request.quantity, "code": str(request.symbol), "remark": request.client_order_id,
                            "trd_side": sdk.TrdSide.BUY if request.side is OrderSide.BUY else sdk.TrdSide.SELL,
                            **trade_args}
    if request.order_type is OrderType.MARKET:
        args.update(price=0.0, order_type=sdk.OrderType.MARKET)
    elif request.order_type is OrderType.LIMIT:
        args.update(price=float(request.limit_price), order_type=sdk.OrderType.NORMAL)
    elif request.limit_price is not None:
        args.update(price=float(request.limit_price), order_type=sdk.OrderType.STOP_LIMIT,
                    aux_price=float(request.stop_price))
    else:
        args.update(price=float(request.stop_price), order_type=sdk.OrderType.STOP,
                    aux_price=float(request.stop_price))
    return args
