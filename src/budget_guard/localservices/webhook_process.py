"""The project's own webhook as a separate process, for the demo and end-to-end tests.

It is started with ports 0; the bound ports are read from its JSON start-up log
line, so there is no race for a free port.
"""

from __future__ import annotations

import json

from budget_guard.localservices.project_process import ProjectProcess


class WebhookProcess(ProjectProcess):
    command = "webhook"
    ready_message = "webhook listening"
    check_port = 0
    api_port = 0
    ext_proc_port = 0  # off unless the args give one (0 cannot mean "any free port" there)

    @property
    def check_url(self) -> str:
        return f"http://127.0.0.1:{self.check_port}"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def command_args(self) -> list[str]:
        ports = ["--check-port", "0", "--api-port", "0", "--host", "127.0.0.1"]
        if not any(arg.startswith("--ext-proc-port") for arg in self.args):
            ports += ["--ext-proc-port", "0"]
        return [*ports, *self.args]

    def on_ready(self, line: str) -> None:
        entry = json.loads(line)
        self.check_port, self.api_port = entry["check_port"], entry["api_port"]
        self.ext_proc_port = entry.get("ext_proc_port", 0)
