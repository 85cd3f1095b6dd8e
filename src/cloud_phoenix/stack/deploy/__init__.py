"""`phoenix deploy`: new workers on the code now on disk, blue/green on the one backend socket.

The supervisor starts a second gunicorn master (a fresh Python process: the code, templates
and dependencies now on disk) on the same backend socket with as many workers, plus a
loopback check port of its own. Once all its workers run and `/ready` answers 200 on that
port, the old master is stopped gracefully (its workers finish what they hold) and the new
one becomes the supervised gunicorn. If the new master exits, or is not ready in time, it is
stopped and the old one goes on serving: nothing changed.

What a deploy picks up is what a fresh process reads from disk: the package's code,
templates and static files, the installed dependencies, the gunicorn hooks, and the app
named by `--app` (default: the stack's PHOENIX_WORKER_APP; another app lasts until the next
deploy or the end of this `phoenix up`). It keeps the environment `phoenix up` started with:
PORT, PHOENIX_HOME, DB_CONNECTION_STRING and every PHOENIX_* variable (the app's as well as
the platform's), and it leaves HAProxy, the collector and the supervisor itself as they
run; changing those takes a restart of `phoenix up` (under systemd, `systemctl restart
phoenix`), which refuses connections for the moment the sockets are closed.

Known limits: the new workers accept on the shared socket as soon as they boot, so before
`/ready` passes they already answer a share of the requests; a check other than 200 or 503
stops them at once, but a build whose `/ready` passes while other routes fail is deployed.
The promoted master keeps listening on its loopback check port for its life.

- `protocol`: how the CLI and the supervisor talk (files under run/deploy, and SIGUSR2);
- `plan`: the pure decision, one step per tick;
- `deployer`: the shell the supervisor's loop runs.
"""

from __future__ import annotations

from cloud_phoenix.stack.deploy.deployer import Deployer
from cloud_phoenix.stack.deploy.plan import Plan
from cloud_phoenix.stack.deploy.protocol import (
    DeployFileError,
    DeployRequest,
    DeployResult,
    DeployUnanswered,
    await_result,
    mark_accepting,
    request_deploy,
    stop_accepting,
    take_requests,
)

__all__ = [
    "DeployFileError",
    "DeployRequest",
    "DeployResult",
    "DeployUnanswered",
    "Deployer",
    "Plan",
    "await_result",
    "mark_accepting",
    "request_deploy",
    "stop_accepting",
    "take_requests",
]
