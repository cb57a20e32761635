"""Claim tasks for one external agent from many threads until none is left; print each
claimed task id. Usage: python -m tests.support.claimer AGENT_ID THREADS"""

import sys
import threading
import uuid

from omoi.config import Settings
from omoi.persistence import Database
from omoi.services import external_agents
from omoi.services.dispatcher import NullDispatcher
from omoi.services.unit_of_work import UnitOfWork
from omoi.services.workflows import Workflows

agent_id, threads = uuid.UUID(sys.argv[1]), int(sys.argv[2])
db = Database(Settings.from_env().database_url, pool_size=threads)
uow = UnitOfWork(db, NullDispatcher(), Workflows.load())
claimed: list[str] = []
lock = threading.Lock()


def drain() -> None:
    while (ctx := external_agents.claim_next(uow, agent_id)) is not None:
        with lock:
            claimed.append(str(ctx.task_id))


workers = [threading.Thread(target=drain) for _ in range(threads)]
for w in workers:
    w.start()
for w in workers:
    w.join()
print("\n".join(claimed))
