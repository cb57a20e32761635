"""What the job that runs an attempt shows of it (in Flower): its ticket's title, clipped, and
the lineage Flower links, the ticket's first job as root and the job upstream as parent."""

# How much of a ticket's title a job carries; the database hands over one more character, so
# a longer title is known to be longer.
TITLE_CHARS = 80


def job_id(task_id: object, attempt: int) -> str:
    """The Celery id of a task's attempt, ``<task_id>:<attempt>``: lets anyone address
    (revoke, trace) one attempt."""
    return f"{task_id}:{attempt}"


def clipped(title: str) -> str:
    return title if len(title) <= TITLE_CHARS else title[: TITLE_CHARS - 1] + "…"


def lineage(job: str, root_job: str | None, parent_job: str | None) -> tuple[str, str | None]:
    """``job``'s root and parent: the ticket's first job (or ``job`` itself, for a ticket
    without one) and the job upstream of it, else that root; the root job has no parent."""
    root = root_job or job
    return root, parent_job or (None if root == job else root)
