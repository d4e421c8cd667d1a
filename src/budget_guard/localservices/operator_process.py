"""The project's own operator as a separate process, for end-to-end tests and the
benchmark: ready once its start-up handler has logged. ``stop`` sends SIGTERM (Kopf
cleans up and leaves the peering); ``kill`` sends SIGKILL."""

from __future__ import annotations

import json

from budget_guard.localservices.project_process import ProjectProcess


class OperatorProcess(ProjectProcess):
    command = "operator"
    ready_message = "operator started"
    metrics_port: int | None = None  # with --metrics-address HOST:0, the port it bound

    def on_ready(self, line: str) -> None:
        self.metrics_port = json.loads(line).get("metrics_port")
