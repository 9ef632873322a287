"""The one error tree of provisioner.

    ProvisionerError                 exit 1; the root, caught once in the CLI
    ├── InputError                   the operator's files are wrong (roster, playbook, plan file)
    │   ├── RosterError              every bad roster line, as ``file:line: column: problem``
    │   ├── PlaybookError            every bad playbook key, as ``file: path.to.key: problem``
    │   └── StalePlanError           a saved plan no longer matches the world
    ├── ConfigurationError           the tenant is not what the playbook expects (group, SKU)
    ├── PreflightError               exit 5: the tenant is not ready; apply does not start
    ├── MassChangeError              exit 6: more people disabled or deleted than allowed
    ├── LockedError                  exit 7: another apply or rollback holds the state dir
    └── GraphFailure                 talking to Graph went wrong
        ├── TransportError           no answer: connection refused, timeout, TLS
        ├── AmbiguousOutcome         a write that cannot be read back got no clear answer
        ├── StepFailure              a step could not do its part (no guide without its pass)
        └── GraphError               Graph answered no: status, code, message, request-id
            ├── ThrottledError       429 or a 5xx worth asking again, optional Retry-After
            └── NotReplicatedError   404 for an object this process made moments ago

Transport failures are kept apart from Graph's answers because only the latter say for sure
whether a write happened. Exit codes live on the classes and are mapped once, in the CLI.
"""

from __future__ import annotations

from collections.abc import Sequence


class ProvisionerError(Exception):
    exit_code = 1


class InputError(ProvisionerError):
    pass


class _ProblemList(InputError):
    """An error made of many located problems, all reported together."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class RosterError(_ProblemList):
    pass


class PlaybookError(_ProblemList):
    pass


class StalePlanError(InputError):
    pass


class ConfigurationError(ProvisionerError):
    pass


class PreflightError(ProvisionerError):
    exit_code = 5


class MassChangeError(ProvisionerError):
    exit_code = 6


class LockedError(ProvisionerError):
    exit_code = 7


class GraphFailure(ProvisionerError):
    code = "TransportError"
    status = 0
    request_id: str | None = None


class TransportError(GraphFailure):
    """No usable answer came back; whether a write happened is unknown."""


class AmbiguousOutcome(GraphFailure):
    """A write whose effect cannot be read back (an e-mail, a new Temporary Access Pass) got no
    clear answer (504, 500, a lost connection): it may or may not have happened, so it is not
    sent again; a human settles it (``provisioner settle``)."""

    code = "AmbiguousOutcome"

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message
        super().__init__(message)


class StepFailure(GraphFailure):
    """A step could not do its part for a person, with no Graph error behind it."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"{code}: {message}")


class GraphError(GraphFailure):
    """Graph answered with an error status and (usually) its JSON error body."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        request_id: str | None = None,
        details: Sequence[dict[str, str]] = (),
        method: str = "",
        path: str = "",
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.request_id = request_id
        self.details = list(details)
        self.method = method
        self.path = path
        super().__init__(f"{method} {path}: {status} {code}: {message}".strip())

    def has_detail(self, code: str, target: str | None = None) -> bool:
        return any(
            d.get("code") == code and (target is None or d.get("target") == target)
            for d in self.details
        )


class NotReplicatedError(GraphError):
    """A 404 about an object this process created (or tried to) moments ago: Entra's replicas
    have not caught up yet, so the request is retried rather than failed."""


class ThrottledError(GraphError):
    def __init__(self, *args: object, retry_after: float | None = None, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.retry_after = retry_after
