"""Just enough of the Lambda runtime to call the real handlers on one machine: load a
handler module from its file, and a context object that carries the time budget."""

from __future__ import annotations

import importlib.util
import time
import uuid
from pathlib import Path
from types import ModuleType

from killstream_workstation.corpus import repo_root


def load_handler_module(function: str) -> ModuleType:
    """`functions/<function>/app.py` as module `<function>_app` (both files are named app.py)."""
    path = repo_root() / "functions" / function / "app.py"
    spec = importlib.util.spec_from_file_location(f"{function}_app", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class LambdaContext:
    """What handlers and Powertools read from Lambda's context object."""

    def __init__(self, function_name: str, timeout_seconds: float, memory_mb: int = 256, clock=time.monotonic):
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = memory_mb
        self.aws_request_id = str(uuid.uuid4())
        self.invoked_function_arn = f"arn:aws:lambda:us-east-1:000000000000:function:{function_name}"
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = "local"
        self._clock = clock
        self._deadline = clock() + timeout_seconds

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - self._clock()) * 1000))
