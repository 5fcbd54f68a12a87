"""Commands in a sandbox: ``/exec``, ``/commands``, their logs, stdin and kill."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, TypeAdapter, field_validator

from qbox.protocol.wire import Wire, WireTime

# An /exec with no timeout of its own runs at most this long (seconds).
DEFAULT_EXEC_TIMEOUT = 3600


class ExecSpec(Wire):
    """A command line and how to run it; defaults are the sandbox's user, its home."""

    OMIT_NONE = frozenset({"env", "cwd", "user"})

    cmd: str = Field(min_length=1)
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] | None = None
    cwd: str | None = None
    # A name, or a uid (some clients send it as a JSON number).
    user: str | None = None

    @field_validator("user", mode="before")
    @classmethod
    def _uid_as_text(cls, value: object) -> object:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @property
    def argv(self) -> list[str]:
        return [self.cmd, *self.args]


class CommandStart(ExecSpec):
    # Keep stdin open as a pipe (``…/commands/{pid}/stdin`` writes to it).
    stdin: bool = False


class ExecRequest(ExecSpec):
    OMIT_NONE = frozenset({"env", "cwd", "user", "stdin", "timeout_seconds"})

    # Written to the command, then closed; none: the command reads /dev/null.
    stdin: str | None = None
    timeout_seconds: float | None = Field(default=None, gt=0)


class StdinWrite(Wire):
    data: str = ""
    close: bool = False


class CommandStarted(Wire):
    pid: int
    started_at: WireTime


class CommandStatus(Wire):
    """A command the agent keeps a record of. ``exitCode``/``signal`` are 0 while it runs;
    killed by a signal: ``signal`` set and ``exitCode`` 128 + signal."""

    OMIT_NONE = frozenset({"ended_at"})

    pid: int
    command: list[str]
    started_at: WireTime
    alive: bool
    exit_code: int
    signal: int
    oom_killed: bool
    ended_at: WireTime | None = None


class ExecResult(Wire):
    """An /exec's answer (the agent writes it as it reads the output spool)."""

    OMIT_NONE = frozenset({"oom_killed"})

    stdout: str
    stderr: str
    exit_code: int
    timed_out: bool
    # Only when the OOM killer ended the command: the public /exec answer relays this shape.
    oom_killed: Literal[True] | None = None


class CommandLogs(Wire):
    """A log read: cumulative, or from the asked offsets with where to continue."""

    OMIT_NONE = frozenset({"stdout_next", "stderr_next"})

    stdout: str
    stderr: str
    stdout_next: int | None = None
    stderr_next: int | None = None


class LogOffsets(Wire):
    """The query of a log read or follow (characters): ``offset`` for both streams, or each."""

    OMIT_NONE = frozenset({"offset", "stdout_offset", "stderr_offset"})

    offset: int | None = Field(default=None, ge=0)
    stdout_offset: int | None = Field(default=None, ge=0)
    stderr_offset: int | None = Field(default=None, ge=0)

    @property
    def given(self) -> bool:
        return self.wire() != {}

    @property
    def stdout_from(self) -> int:
        return (self.offset or 0) if self.stdout_offset is None else self.stdout_offset

    @property
    def stderr_from(self) -> int:
        return (self.offset or 0) if self.stderr_offset is None else self.stderr_offset


# --- NDJSON events: followed logs and streamed /exec ---------------------------

class StartedEvent(Wire):
    type: Literal["started"] = "started"
    pid: int


class OutputEvent(Wire):
    # At most 65,536 characters an event.
    type: Literal["stdout", "stderr"]
    data: str


class ExitEvent(Wire):
    OMIT_NONE = frozenset({"timed_out"})

    type: Literal["exit"] = "exit"
    exit_code: int
    signal: int
    oom_killed: bool
    # A streamed /exec's exit only.
    timed_out: bool | None = None


CommandEvent = Annotated[StartedEvent | OutputEvent | ExitEvent, Field(discriminator="type")]
COMMAND_EVENT: TypeAdapter[StartedEvent | OutputEvent | ExitEvent] = TypeAdapter(CommandEvent)
