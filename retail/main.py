"""The ASGI entry point for servers that import an app: `uvicorn retail.main:app`.

Settings come from the environment (`RETAIL_*`) and `.env`.
"""

from retail.app import create_app

app = create_app()
