from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.faults.stack import FaultStack, migrated_template, start_stack
from tests.live import PostgresCluster

MakeStack = Callable[..., FaultStack]


@pytest.fixture(scope="session")
def template_cluster() -> Iterator[PostgresCluster]:
    """A migrated database, made once per session and copied by each scenario's stack."""
    cluster = migrated_template()
    yield cluster
    cluster.destroy()


@pytest.fixture
def make_stack(template_cluster: PostgresCluster) -> Iterator[MakeStack]:
    """Starts a private stack (keyword arguments: see start_stack); stopped after the test."""
    started: list[FaultStack] = []

    def make(**options: str | int) -> FaultStack:
        stack = start_stack(template_cluster, **options)  # type: ignore[arg-type]
        started.append(stack)
        return stack

    yield make
    for stack in started:
        stack.stop()
