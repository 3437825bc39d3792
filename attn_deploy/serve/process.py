"""Run `attn-deploy serve` as a child process (load tests, benchmarks): the server then has its own
interpreter, so client threads do not compete with it for the GIL."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Sequence

from attn_deploy.errors import AttnDeployError

_LISTENING = re.compile(r"listening on http://([\w.\-]+:\d+)")


class ServerProcess:
    """``with ServerProcess([dir], "--max-batch", "16") as srv: ... srv.url`` -- SIGTERM on exit.

    Binds 127.0.0.1 on a free port unless ``--port`` is among ``options``. ``output`` holds what the
    server printed; leaving the block raises AttnDeployError if it did not stop cleanly.
    """

    def __init__(self, artifact_dirs: Sequence[str | os.PathLike[str]], *options: str) -> None:
        self.command = [sys.executable, "-m", "attn_deploy.cli", "serve", *map(str, artifact_dirs)]
        self.command += [*options] if "--port" in options else ["--port", "0", *options]
        self.output = ""
        self.url = ""
        self._proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> ServerProcess:
        proc = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self._proc = proc
        assert proc.stdout is not None
        for line in proc.stdout:  # ends at EOF when the server exits early
            self.output += line
            found = _LISTENING.search(line)
            if found:
                self.url = found.group(1)
                return self
        proc.wait()
        raise AttnDeployError(f"attn-deploy serve exited with code {proc.returncode}: {self.output.strip()}")

    def __exit__(self, *exc: object) -> None:
        assert self._proc is not None
        self._proc.send_signal(signal.SIGTERM)
        rest, _ = self._proc.communicate(timeout=120)
        self.output += rest
        if self._proc.returncode != 0 and exc[0] is None:
            raise AttnDeployError(
                f"attn-deploy serve ended with code {self._proc.returncode}: {self.output.strip()}"
            )
