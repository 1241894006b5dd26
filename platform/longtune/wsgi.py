"""WSGI entry point (used by the API load benchmark behind a multi-worker WSGI server)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "longtune.settings")
application = get_wsgi_application()
