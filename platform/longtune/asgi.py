"""ASGI entry point: streaming responses (SSE, event follow) must not pin a worker."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "longtune.settings")
application = get_asgi_application()
