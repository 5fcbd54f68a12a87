"""schemathesis against the real control-plane app (a fake agent underneath), from its own document.

Every phase (explicit examples, coverage of each schema's edges, random
fuzzing, stateful sequences) as an admin and as a member, with schemathesis'
checks: no 5xx, no status or content type the document does not name,
responses matching their schemas, auth not ignored, a correct 405 with
``Allow``. Bounded: a fixed seed, few examples per operation and a time cap,
at most a minute on two cores for each key.

``positive_data_acceptance`` is off: a JSON schema cannot say that a template
must exist or that an environment name is ``[A-Za-z_][A-Za-z0-9_]*``, and the
server rightly answers such bodies 400/404 (both documented).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from schemathesis import engine
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import events
from schemathesis.python import asgi

from qbox.server.app import Startup, create_app
from qbox.server.settings import ServerSettings

from tests.unit.server.agent_host import SECRET, RunningAgent
from tests.unit.server.helpers import add_user_with_key, remember_database

MAX_EXAMPLES = 10
MAX_SECONDS = 60
# The limits are tested elsewhere; here they would only turn answers into 429s.
NO_LIMITS: dict[str, Any] = {
    "rate_limit_requests_per_second": 1e6, "rate_limit_request_burst": 1e6,
    "rate_limit_spawns_per_second": 1e6, "rate_limit_spawn_burst": 1e6,
    "rate_limit_auth_failures_per_minute": 1e9, "rate_limit_auth_failure_burst": 1e6,
}


@dataclass
class Outcome:
    requests: int = 0
    statuses: set[int] = field(default_factory=set)
    operations: set[str] = field(default_factory=set)
    failures: dict[tuple[str, str], str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    phases: list[str] = field(default_factory=list)
    transitions: int = 0


@dataclass
class Api:
    app: Any
    data_dir: Path
    admin_key: str


@pytest.fixture
def api(tmp_path: Path, database: str | None) -> Iterator[Api]:
    secrets: list[str] = []
    remember_database(tmp_path, database)
    with RunningAgent(tmp_path / "agent") as agent:
        startup = Startup(builtin_templates={"python": "oci:/nonexistent:latest"},
                          local_agent=agent.client(), run_sandbox_loops=False,
                          on_first_admin=lambda admin: secrets.append(admin.secret or ''))
        app = create_app(ServerSettings(data_dir=tmp_path, agent_secret=SECRET, database_url=database,
                                        **NO_LIMITS), startup)
        try:
            # Loading the document starts the app's lifespan (schemathesis keeps it until shut down).
            schemathesis.openapi.from_asgi("/openapi.json", app)
            yield Api(app, tmp_path, secrets[0])
        finally:
            asgi.shutdown_lifespans()


def run(api: Api, key: str) -> Outcome:
    config = SchemathesisConfig.from_dict({
        "seed": 13, "max-time": MAX_SECONDS, "workers": 1,
        "headers": {"Authorization": f"Bearer {key}"},
        # No example database: the seed alone decides what a run sends.
        "generation": {"max-examples": MAX_EXAMPLES, "database": "none"},
        "checks": {"positive_data_acceptance": {"enabled": False}},
    })
    schema = schemathesis.openapi.from_asgi("/openapi.json", api.app, config=config)
    # The shell is a WebSocket: schemathesis speaks HTTP only (test_shell_api covers it).
    schema = schema.exclude(path_regex=r"/shell$")
    outcome = Outcome()
    for event in engine.from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished | events.FuzzScenarioFinished):
            recorder = event.recorder
            for interaction in recorder.interactions.values():
                outcome.requests += 1
                if interaction.response is not None:
                    outcome.statuses.add(interaction.response.status_code)
            outcome.operations.add(recorder.label)
            for checks in recorder.checks.values():
                for check in checks:
                    if check.failure_info is not None:
                        failure = check.failure_info.failure
                        outcome.failures.setdefault(
                            (check.name, recorder.label),
                            f"{failure.title}: {failure.message}\n    {check.failure_info.code_sample}")
        elif isinstance(event, events.NonFatalError | events.FatalError):
            outcome.errors.append(f"{getattr(event, 'label', '')}: {getattr(event, 'value', event)}")
        elif isinstance(event, events.PhaseStarted):
            outcome.phases.append(event.phase.name.value)
            if isinstance(event.payload, events.StatefulPhasePayload):
                outcome.transitions = max(outcome.transitions, event.payload.transitions_total)
    return outcome


def report(outcome: Outcome) -> str:
    return "\n".join(f"{check} on {operation}: {detail}"
                     for (check, operation), detail in sorted(outcome.failures.items())) + "\n" + \
        "\n".join(outcome.errors)


@pytest.mark.timeout(300)
# PostgreSQL refuses some of what SQLite stores (integers past 32 bits, NULs): the admin, who
# reaches every route and writes the most, fuzzes it too (a minute a run; the member need not).
@pytest.mark.parametrize(("role", "database"), [("admin", "sqlite"), ("member", "sqlite"),
                                                ("admin", "postgresql")], indirect=["database"])
def test_no_server_error_and_no_undocumented_status(api: Api, role: str) -> None:
    key = api.admin_key if role == "admin" else add_user_with_key(api.data_dir)[1]
    outcome = run(api, key)
    print(f"schemathesis as {role}: {outcome.requests} requests, {len(outcome.operations)} operations, "
          f"{outcome.transitions} stateful transitions, statuses {sorted(outcome.statuses)}")
    assert not outcome.failures and not outcome.errors, report(outcome)
    assert {"examples", "coverage", "fuzzing", "stateful"} <= set(outcome.phases)
    assert outcome.transitions >= 50, "no stateful links: spawn -> exec -> kill and the like"
    # It really exercised the API: most operations, many requests, successes and refusals.
    assert len(outcome.operations) >= 40 and outcome.requests >= 500, outcome
    assert {200, 400, 404} <= outcome.statuses and not any(s >= 500 for s in outcome.statuses), outcome.statuses
