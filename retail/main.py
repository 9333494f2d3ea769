"""The ASGI entry point for servers that import an app: `uvicorn retail.main:app`.

Settings come from the environment (`RETAIL_*`) and `.env`. The service's log lines
go to stderr in `RETAIL_LOG_FORMAT`; the server keeps its own logging (run uvicorn
with `--no-access-log`: the service logs every request itself, with its request id).
"""

from retail.config import Settings
from retail.runtime.logs import configure_logging
from retail.web.app import create_app

settings = Settings()
configure_logging(settings.log_format, settings.log_level, logger="retail")
app = create_app(settings)
