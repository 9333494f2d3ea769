"""The catalogue: products, their prices and available stock."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from retail.core.errors import ProductNotFound
from retail.store.base import DEMO_CATALOGUE
from retail.store.sql.models import Product

__all__ = [
    "DEMO_CATALOGUE",
    "get_product",
    "list_products",
    "restock",
    "seed_catalogue",
    "upsert_product",
]


async def list_products(*, session: AsyncSession) -> Sequence[Product]:
    return (await session.scalars(select(Product).order_by(Product.sku))).all()


async def get_product(*, session: AsyncSession, sku: str) -> Product:
    product = await session.get(Product, sku)
    if product is None:
        raise ProductNotFound(f"No product with SKU {sku!r}.", sku=sku)
    return product


async def upsert_product(
    *,
    session: AsyncSession,
    sku: str,
    name: str,
    unit_price: int,
    stock: int,
    currency: str,
    now: datetime,
) -> tuple[Product, bool]:
    """Create or replace a product; returns it and whether it was created."""
    values = {
        "sku": sku,
        "name": name,
        "unit_price": unit_price,
        "stock": stock,
        "currency": currency,
        "updated_at": now,
    }
    existed = await session.scalar(select(func.count()).where(Product.sku == sku)) == 1
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    statement = insert(Product).values(values)
    statement = statement.on_conflict_do_update(
        index_elements=[Product.sku],
        set_={key: statement.excluded[key] for key in values if key != "sku"},
    )
    await session.execute(statement)
    product = await session.get(Product, sku, populate_existing=True)
    assert product is not None
    return product, not existed


async def seed_catalogue(*, session: AsyncSession, now: datetime) -> int:
    """Insert the demo catalogue when there are no products yet; returns rows added."""
    if await session.scalar(select(func.count()).select_from(Product)):
        return 0
    session.add_all(
        Product(sku=sku, name=name, unit_price=price, currency="EUR", stock=stock, updated_at=now)
        for sku, name, price, stock in DEMO_CATALOGUE
    )
    return len(DEMO_CATALOGUE)


async def restock(
    *, session: AsyncSession, lines: Iterable[tuple[str, int]], now: datetime
) -> None:
    """Give reserved units back (cancel, failure). Sorted by SKU: one lock order everywhere."""
    for sku, quantity in sorted(lines):
        await session.execute(
            update(Product)
            .where(Product.sku == sku)
            .values(stock=Product.stock + quantity, updated_at=now)
        )
