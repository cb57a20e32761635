"""Running a ``shell`` task's command so that it sees no secret of the worker's and nothing it
starts outlives it.

The command gets a scrubbed environment (a few basics plus the variables the operator passes
on with ``OMOI_SHELL_ENV``; never ``OMOI_*`` nor a value holding the database or broker URL)
and a session of its own. When it ends, times out or is cancelled, and when the pool process
running it is told to stop (a revoke, the hard time limit), its process group is killed,
SIGTERM then SIGKILL, and so is every process it started that left the group (``setsid``, a
double fork). Those are found in the process tree, sampled while the command runs and at the
end; on Linux the pool process is a child subreaper meanwhile, so such orphans are re-parented
to it instead of to init and stay in its tree until they are killed.

Its output is read as it comes: each line goes on to the task's log at once (``Lines``), and
the last 64 KiB of each stream are kept for the result.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from typing import Any

import psutil

from omoi.domain.errors import PermanentError

BASICS = frozenset({"PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR"})
OUTPUT_LIMIT = 64 * 1024  # per stream: the end of the output is what a failure needs
POLL = 0.1  # seconds between looks at the process tree
CANCEL_POLL = 0.5  # seconds between looks at the database for a cancel
KILL_GRACE = 1.0  # seconds between SIGTERM and SIGKILL
PR_SET_CHILD_SUBREAPER = 36

_pass_through: tuple[str, ...] = ()
_withheld: tuple[str, ...] = ()


def configure(pass_through: Iterable[str], withheld: Iterable[str]) -> None:
    """The worker's choice, at start: variables passed on, and values never passed (its
    database and broker URLs, whatever variable holds them)."""
    global _pass_through, _withheld
    _pass_through = tuple(pass_through)
    _withheld = tuple(w for w in withheld if w)


def environment(
    environ: Mapping[str, str], pass_through: Collection[str], withheld: Collection[str]
) -> dict[str, str]:
    """The command's environment: the basics (``PATH``, ``HOME``, ``LANG``, ``LC_*``, ``TZ``
    …) and ``pass_through``, without omoi's settings or any value holding a ``withheld``."""
    return {
        name: value
        for name, value in environ.items()
        if (name in BASICS or name.startswith("LC_") or name in pass_through)
        and not name.upper().startswith("OMOI_")
        and not any(w in value for w in withheld)
    }


def run(
    command: str | list[str],
    *,
    cwd: str | None = None,
    timeout: float | None = None,
    cancelled: Callable[[], bool] = lambda: False,
    on_line: Callable[[str, str], None] = lambda stream, line: None,
) -> tuple[int, bytes, bytes]:
    """Run ``command`` to its end: its exit code and the end of its stdout and stderr. Each
    line of its output goes to ``on_line("stdout" | "stderr", line)`` as soon as the command
    has written it (``Lines``). Raises ``subprocess.TimeoutExpired`` past ``timeout`` and
    ``PermanentError`` once ``cancelled``; either way, and whenever the command ends,
    whatever it started is killed."""
    me = psutil.Process()
    earlier = set(me.children())
    with _subreaper():
        proc = subprocess.Popen(
            command,
            shell=isinstance(command, str),
            cwd=cwd,
            env=environment(os.environ, _pass_through, _withheld),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        tree = Tree(me, proc, earlier)
        try:
            with _killed_on_sigterm(tree):
                out, err = _follow(proc, tree, timeout, cancelled, command, on_line)
        finally:
            tree.kill(KILL_GRACE)
    return proc.returncode, out, err


class Tree:
    """Every process the command started: its group, and its descendants as sampled."""

    def __init__(self, me: psutil.Process, proc: subprocess.Popen[bytes], earlier: set[Any]):
        self.me = me
        self.proc = proc
        self.earlier = earlier
        self.seen: dict[int, psutil.Process] = {}

    def sample(self) -> None:
        """Remember the command's descendants now (re-parented orphans included): one that
        leaves the group and whose parent exits is still known when the end comes."""
        with contextlib.suppress(psutil.Error):
            for p in self.me.children(recursive=True):
                if p.pid != self.proc.pid and p not in self.earlier:
                    self.seen.setdefault(p.pid, p)

    def kill(self, grace: float) -> None:
        """SIGTERM, then after ``grace`` SIGKILL (at once without one), to the group and
        every known descendant; reap the command and the orphans re-parented to this process."""
        for sig in (signal.SIGTERM, signal.SIGKILL) if grace else (signal.SIGKILL,):
            self.sample()
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, sig)  # the group outlives its leader's exit
            for p in self.seen.values():
                with contextlib.suppress(psutil.Error):
                    p.send_signal(sig)
            patience = grace or KILL_GRACE
            deadline = time.monotonic() + patience
            _, alive = psutil.wait_procs(list(self.seen.values()), timeout=patience)
            self.seen = {p.pid: p for p in alive}
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            if not alive and self.proc.returncode is not None:
                return
        self.proc.wait()  # SIGKILL was sent: it is dying


class Lines:
    """One output stream cut into lines as its bytes arrive, each handed to ``emit`` once
    its newline has come (``\r\n`` counts as one; the last line at the end of the output).
    At most ``OUTPUT_LIMIT`` bytes of an unfinished line are held: a longer line is cut
    there and the rest of it dropped. Bytes that are not UTF-8 become U+FFFD."""

    def __init__(self, name: str, emit: Callable[[str, str], None]) -> None:
        self.name = name
        self.emit = emit
        self._partial = bytearray()
        self._cut = False

    def feed(self, chunk: bytes) -> None:
        start = 0
        while (end := chunk.find(b"\n", start)) != -1:
            self._hold(chunk[start:end])
            self._end_line()
            start = end + 1
        self._hold(chunk[start:])

    def close(self) -> None:
        """The output ended: its last line, if it had no newline."""
        if self._partial or self._cut:
            self._end_line()

    def _hold(self, piece: bytes) -> None:
        room = OUTPUT_LIMIT - len(self._partial)
        self._partial += piece[:room]
        self._cut = self._cut or len(piece) > room

    def _end_line(self) -> None:
        line = bytes(self._partial)
        self._partial.clear()
        self._cut = False
        self.emit(self.name, line.removesuffix(b"\r").decode("utf-8", errors="replace"))


def _follow(
    proc: subprocess.Popen[bytes],
    tree: Tree,
    timeout: float | None,
    cancelled: Callable[[], bool],
    command: str | list[str],
    on_line: Callable[[str, str], None],
) -> tuple[bytes, bytes]:
    """Read the output until the command has ended and its streams are closed (or, once it
    ended, a moment after whatever it left behind was killed), handing on each line as it
    comes, and when it stops, however, whatever unfinished line is left."""
    assert proc.stdout is not None and proc.stderr is not None
    output = {proc.stdout: bytearray(), proc.stderr: bytearray()}
    lines = {proc.stdout: Lines("stdout", on_line), proc.stderr: Lines("stderr", on_line)}
    start = time.monotonic()
    next_cancel_check = start + CANCEL_POLL
    ended_at: float | None = None
    with selectors.DefaultSelector() as streams, _ending(lines.values()):
        for stream in output:
            streams.register(stream, selectors.EVENT_READ)
        while streams.get_map() or proc.poll() is None:
            for key, _ in streams.select(POLL) if streams.get_map() else _pause():
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    streams.unregister(key.fileobj)
                    continue
                lines[key.fileobj].feed(chunk)  # type: ignore[index]
                buffer = output[key.fileobj]  # type: ignore[index]
                buffer += chunk
                del buffer[:-OUTPUT_LIMIT]
            tree.sample()
            now = time.monotonic()
            if proc.poll() is not None:
                if ended_at is None:  # the command ended; what it left holds its output open
                    ended_at = now
                    tree.kill(KILL_GRACE)
                elif now - ended_at > 2 * KILL_GRACE:
                    break  # held by something out of reach: keep what was read
                continue
            if timeout is not None and now - start > timeout:
                raise subprocess.TimeoutExpired(command, timeout)
            if now >= next_cancel_check:
                next_cancel_check = now + CANCEL_POLL
                if cancelled():
                    raise PermanentError("cancelled while the command ran")
    for stream in output:
        stream.close()
    return bytes(output[proc.stdout]), bytes(output[proc.stderr])


@contextlib.contextmanager
def _ending(streams: Iterable[Lines]) -> Iterator[None]:
    """Hand on each stream's unfinished last line when reading stops, however it stops."""
    try:
        yield
    finally:
        for stream in streams:
            stream.close()


def _pause() -> list[Any]:
    """The command closed its output but still runs: look again in a moment."""
    time.sleep(POLL)
    return []


@contextlib.contextmanager
def _subreaper() -> Iterator[None]:
    """On Linux, orphans of the command are re-parented to this process meanwhile."""
    if not sys.platform.startswith("linux"):
        yield
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    try:
        yield
    finally:
        libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


@contextlib.contextmanager
def _killed_on_sigterm(tree: Tree) -> Iterator[None]:
    """A pool process is stopped with SIGTERM (a revoke, the hard time limit, a shutdown's
    hand-back), whose default action would leave the command's session running: kill it
    first, then die of the signal as before."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous is None:  # installed outside Python: leave it be
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        tree.kill(0)
        signal.signal(signal.SIGTERM, previous)
        os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
