"""The errors the tools raise on purpose (standard library only).

Every message is one line that names the problem and the fix. Library code (`benchmark`, `demo`,
`report`, `plan_profile`, `onnx_export`, `predict`, `nnunet_env`, `schedules`) raises them; only `cli.py` turns them into a
message on stderr and an exit status.
"""
from __future__ import annotations

import signal


class LightSegError(Exception):
    """Base class: something the user can fix; str() says what and how."""


class UsageError(LightSegError, ValueError):
    """Options or names that cannot work as given (a bad trainer name, a negative count, ...)."""


class InvalidScheduleName(UsageError):
    """A trainer name whose schedule suffix is malformed (`_0epochs`, `_007epochs`, `_1epochs`)."""


class NnUNetEnvironmentError(LightSegError):
    """nnU-Net's environment is not ready: a folder variable unset, a dataset or command not found."""


class StepFailed(LightSegError):
    """A stock nnU-Net command failed. str() is one line (exit status and the error it printed);
    `output` holds everything it printed, `details` the last lines of it."""

    TAIL_LINES = 15

    def __init__(self, message: str, output: str = ""):
        super().__init__(message)
        self.output = output

    @property
    def details(self) -> str:
        lines = [line for line in self.output.splitlines() if line.strip()]
        return "\n".join(lines[-self.TAIL_LINES:])


class ProfileError(LightSegError):
    """A trainer or plan could not be profiled."""


class ExportError(LightSegError):
    """A fold that cannot be exported as asked: no checkpoint, or ONNX Runtime disagrees with torch."""


class ReportError(LightSegError):
    """Nothing to report, or a reference or file that is not there."""


class OutputFolderError(UsageError):
    """An output folder holds files that are not ours (or is not a folder): refused, nothing touched."""


class StateFileError(LightSegError):
    """A state file of ours that is not valid JSON or not of the expected shape."""


class BenchmarkInterrupted(Exception):
    """SIGINT or SIGTERM stopped the benchmark; `signal_number` says which. Not a LightSegError, so
    that no handler of expected errors (a failed profile or report step) can take it for one."""

    def __init__(self, signal_number: int, during: str = ""):
        self.signal_number = signal_number
        where = f" during {during}" if during else ""
        super().__init__(f"stopped by {signal.Signals(signal_number).name}{where}: run the same command again to "
                         f"resume (finished folds are skipped, an interrupted one goes on from its last checkpoint).")
