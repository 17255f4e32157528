"""depth_node as a subprocess, for a replay that starts its own node (``ppd-bag-replay --start-node``,
``ppd-demo``)."""
from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections import deque

from .replayer import ReplayError

EXIT_TIMEOUT_S = 30.0
"""How long a node started here may take to exit after SIGINT, seconds."""


def parameter_text(name: str, value: object) -> str:
    """``NAME:=VALUE`` as on the ros2 command line (booleans written ``true``/``false``)."""
    return f"{name}:={str(value).lower() if isinstance(value, bool) else value}"


def node_command(parameters: dict[str, object], namespace: str = "") -> list[str]:
    """The depth_node command line in ``namespace`` ("" or "/name") with ``-p NAME:=VALUE`` per parameter."""
    command = [sys.executable, "-m", "pixel_perfect_ros.ros.depth_node", "--ros-args"]
    if namespace:
        command += ["-r", f"__ns:={namespace}"]
    for name, value in parameters.items():
        command += ["-p", parameter_text(name, value)]
    return command


class NodeProcess:
    """depth_node as a subprocess in its own session (a terminal's Ctrl-C reaches only this process, which
    then stops the node); its stderr lines are printed as ``  node: ...`` and the last kept."""

    def __init__(self, command: list[str]):
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                        start_new_session=True)
        self.tail: deque[str] = deque(maxlen=30)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stderr:
            self.tail.append(line.rstrip())
            print(f"  node: {line.rstrip()}", flush=True)

    def check_running(self) -> None:
        """Raise ReplayError with the node's stderr tail if it has exited."""
        if self.process.poll() is not None:
            self._reader.join(timeout=5)
            raise ReplayError(f"the node exited (code {self.process.returncode}):\n" + "\n".join(self.tail))

    def stop(self) -> None:
        """SIGINT, then wait for a clean exit; ReplayError if it fails or hangs."""
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=EXIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise ReplayError(f"the node did not exit within {EXIT_TIMEOUT_S:.0f} s of SIGINT") from None
        if self.process.returncode != 0:
            self.check_running()

    def close(self) -> None:
        """Kill the node if it still runs; wait for it and the reader thread."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._reader.join(timeout=5)

