"""The catalogue: read by anyone, changed by an admin."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response

from retail.store.sql import products
from retail.web.deps import AdminDep, ServicesDep
from retail.web.problems import responses
from retail.web.schemas import SKU_PATTERN, ProductRead, ProductUpsert

router = APIRouter(prefix="/products", tags=["products"])

SkuPath = Annotated[str, Path(pattern=SKU_PATTERN, examples=["MUG-1"])]


@router.get("", summary="List the catalogue")
async def list_products(services: ServicesDep) -> list[ProductRead]:
    async with services.db.read() as session:
        rows = await products.list_products(session=session)
        return [ProductRead.model_validate(row, from_attributes=True) for row in rows]


@router.get(
    "/{sku}", summary="One product, with its available stock", responses=responses(404, 422)
)
async def get_product(sku: SkuPath, services: ServicesDep) -> ProductRead:
    async with services.db.read() as session:
        product = await products.get_product(session=session, sku=sku)
        return ProductRead.model_validate(product, from_attributes=True)


@router.put(
    "/{sku}",
    summary="Create or replace a product (admin)",
    description="Sets name, price and *available* stock. `201` when created, `200` when replaced.",
    dependencies=[AdminDep],
    responses={
        201: {"description": "Created", "model": ProductRead},
        **responses(400, 401, 403, 413, 422),
    },
)
async def put_product(
    sku: SkuPath, product_in: ProductUpsert, services: ServicesDep, response: Response
) -> ProductRead:
    async with services.db.write() as session:
        product, created = await products.upsert_product(
            session=session, sku=sku, now=services.clock.now(), **product_in.model_dump()
        )
        read = ProductRead.model_validate(product, from_attributes=True)
    response.status_code = 201 if created else 200
    return read
