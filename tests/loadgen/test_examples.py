"""The Locust and wrk examples stay valid and place orders the API accepts."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.conftest import StartApp

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_locustfile_is_valid_python_with_users_that_place_and_follow_orders() -> None:
    tree = ast.parse((EXAMPLES / "locustfile.py").read_text())
    users = {
        node.name: node
        for node in tree.body
        if isinstance(node, ast.ClassDef)
        and any(isinstance(base, ast.Name) and base.id == "HttpUser" for base in node.bases)
    }
    assert set(users) == {"Shopper", "CapacityWatcher"}
    tasks = {
        item.name
        for item in users["Shopper"].body
        if isinstance(item, ast.FunctionDef)
        and any(
            isinstance(d, ast.Call) and isinstance(d.func, ast.Name) and d.func.id == "task"
            for d in item.decorator_list
        )
    }
    assert tasks == {"place_order", "follow_an_order"}
    strings = {
        n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
    }
    assert {"/orders", "Idempotency-Key", "Retry-After", "/capacity"} <= strings


async def test_wrk_script_posts_an_order_the_api_accepts(start_app: StartApp) -> None:
    script = (EXAMPLES / "wrk_post_order.lua").read_text()
    assert re.search(r'wrk\.format\("POST", "/orders", headers, body\)', script)
    assert '["Content-Type"] = "application/json"' in script
    assert '["Idempotency-Key"]' in script
    # the body is a Lua string.format pattern; %d and %s mean the same in Python
    [pattern] = re.findall(r"'(\{\"customer_id\".*?)'", script)
    body = pattern % (1, "MUG-1", 2)
    running = await start_app()
    response = await running.client.post(
        "/orders",
        content=body,
        headers={"Content-Type": "application/json", "Idempotency-Key": "wrk-1-1-1"},
    )
    assert response.status_code == 202, response.text
    assert response.json()["customer_id"] == "wrk-1"
    assert response.json()["lines"][0]["quantity"] == 2
