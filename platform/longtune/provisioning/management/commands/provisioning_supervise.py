"""manage.py provisioning_supervise: the supervisor loop of dedicated instances.

Runs ``reconcile_once`` every ``PROVISIONING_SUPERVISE_SECONDS``: starts the workers of
instances being provisioned, restarts dead ones, drains and decommissions. Run ONE per
machine for the local driver (it supervises this machine's processes), one per cluster for
the kubernetes driver.
"""

import signal
import time

from django.core.management.base import BaseCommand
from django.db import close_old_connections

from longtune.provisioning.conf import provisioning_conf
from longtune.provisioning.reconcile import reconcile_once


class Command(BaseCommand):
    help = "Reconcile dedicated instances with their driver (forever, or --once)."

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true", help="one pass, then exit")
        parser.add_argument("--interval", type=float, default=None, help="seconds between passes")

    def handle(self, *args, once=False, interval=None, **options):
        every = interval if interval is not None else provisioning_conf().supervise_seconds
        stop = {"now": False}
        signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
        while True:
            close_old_connections()
            done = reconcile_once()
            if once:
                self.stdout.write(str(done))
                return
            self.stdout.write(f"{time.strftime('%H:%M:%S')} {done}")
            self.stdout.flush()
            deadline = time.monotonic() + every
            while time.monotonic() < deadline and not stop["now"]:
                time.sleep(0.2)
            if stop["now"]:
                return
