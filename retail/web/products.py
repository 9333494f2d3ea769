"""The catalogue: read by anyone, changed by an admin."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response

from retail.web.deps import AdminDep, ServicesDep
from retail.web.presenters import product_read
from retail.web.problems import responses
from retail.web.schemas import SKU_PATTERN, ProductRead, ProductUpsert

router = APIRouter(prefix="/products", tags=["products"])

SkuPath = Annotated[str, Path(pattern=SKU_PATTERN, examples=["MUG-1"])]


@router.get("", summary="List the catalogue")
async def list_products(services: ServicesDep) -> list[ProductRead]:
    return [product_read(product) for product in await services.store.list_products()]


@router.get(
    "/{sku}", summary="One product, with its available stock", responses=responses(404, 422)
)
async def get_product(sku: SkuPath, services: ServicesDep) -> ProductRead:
    return product_read(await services.store.get_product(sku))


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
    product, created = await services.store.upsert_product(
        sku=sku, now=services.clock.now(), **product_in.model_dump()
    )
    response.status_code = 201 if created else 200
    return product_read(product)
