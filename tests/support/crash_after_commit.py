"""Submit a ticket through the real API app, then die by SIGKILL between commit and publish.

Usage: python -m tests.support.crash_after_commit IDEMPOTENCY_KEY < ticket.json
"""

import json
import os
import signal
import sys
from collections.abc import Sequence

from omoi.api import create_app
from omoi.services.dispatcher import Dispatch


class DieBeforePublish:
    def publish(self, batch: Sequence[Dispatch]) -> None:
        os.kill(os.getpid(), signal.SIGKILL)


app = create_app(dispatcher=DieBeforePublish())
app.test_client().post(
    "/api/v1/tickets",
    json=json.load(sys.stdin),
    headers={"Idempotency-Key": sys.argv[1], "Authorization": f"Bearer {os.environ['OMOI_TOKEN']}"},
)
sys.exit("unreachable: the dispatcher should have killed this process")
