"""A throwaway Orthanc PACS for the tests: Debian's ``Orthanc`` with its DICOMweb plugin, on free
localhost ports, with a temporary JSON configuration and storage folder; stopped and removed after.

HTTP (REST and DICOMweb) answers local clients only (``RemoteAccessAllowed`` false). Orthanc 1.10
cannot bind its DICOM port to one interface, so the port accepts C-STORE only from the listed
modalities, checked by AE title *and* host 127.0.0.1 (``DicomAlwaysAllowStore`` false,
``DicomCheckModalityHost`` true): nothing else on the network can store into it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

DICOMWEB_PLUGIN_DIRS = ("/usr/share/orthanc/plugins", "/usr/lib/orthanc")
AE_TITLE = "ORTHANCTEST"
START_TIMEOUT_S = 60


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dicomweb_plugin() -> Path | None:
    for folder in DICOMWEB_PLUGIN_DIRS:
        for path in sorted(Path(folder).glob("libOrthancDicomWeb.so*")) if Path(folder).is_dir() else []:
            return path
    return None


class Orthanc:
    """A running Orthanc; ``url`` (REST), ``dicomweb`` (DICOMweb root), ``dicom_port``, ``aet``.

    ``modalities``: AE title -> port of the DICOM peers it knows (at 127.0.0.1; named by the AE title
    in lower case); ``lua_scripts``: Lua files it runs (e.g. auto-routing)."""

    def __init__(self, folder: Path, modalities: dict[str, int] | None = None, lua_scripts: list[Path] = ()):
        binary = shutil.which("Orthanc")
        plugin = dicomweb_plugin()
        if binary is None or plugin is None:
            pytest.skip("Orthanc or its DICOMweb plugin is not installed (Debian packages orthanc, "
                        "orthanc-dicomweb; `make test` installs them)")
        self.folder = folder
        self.http_port, self.dicom_port = free_port(), free_port()
        self.aet = AE_TITLE
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.dicomweb = f"{self.url}/dicom-web"
        (folder / "db").mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "osteopano-test",
            "StorageDirectory": str(folder / "db"),
            "IndexDirectory": str(folder / "db"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": self.aet,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomServerEnabled": True,
            "DicomAlwaysAllowStore": False,
            "DicomAlwaysAllowEcho": False,
            "DicomCheckModalityHost": True,
            "DicomCheckCalledAet": True,
            "DicomModalities": {
                name.lower(): {"AET": name, "Host": "127.0.0.1", "Port": port, "AllowStore": True}
                for name, port in (modalities or {}).items()
            },
            "HttpThreadsCount": 4,
            "DicomThreadsCount": 2,
            "ConcurrentJobs": 1,
            "SaveJobs": False,
            "StableAge": 1,
            "Plugins": [str(plugin)],
            "LuaScripts": [str(p) for p in lua_scripts],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False,
                         "Host": f"127.0.0.1:{self.http_port}", "Ssl": False},
        }
        self.config_path = folder / "orthanc.json"
        self.config_path.write_text(json.dumps(config, indent=2))
        self.log_path = folder / "orthanc.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen([binary, str(self.config_path)], stdout=self._log,
                                        stderr=subprocess.STDOUT, cwd=folder, start_new_session=True)
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.stop()
                raise RuntimeError(f"Orthanc exited at start ({self.process.returncode}):\n{self.log_tail()}")
            try:
                self.get("/system")
                if self.get("/plugins") and "dicom-web" in self.get("/plugins"):
                    return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"Orthanc did not answer within {START_TIMEOUT_S} s:\n{self.log_tail()}")

    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=10) as response:
            return json.loads(response.read())

    def delete(self, path: str) -> None:
        request = urllib.request.Request(self.url + path, method="DELETE")
        with urllib.request.urlopen(request, timeout=10):
            pass

    def find_instance(self, sop_instance_uid: str) -> str:
        """Orthanc's id of the instance with this SOP Instance UID."""
        request = urllib.request.Request(
            self.url + "/tools/lookup", data=sop_instance_uid.encode(), method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            [match] = [m for m in json.loads(response.read()) if m["Type"] == "Instance"]
        return match["ID"]

    def instances(self) -> list[dict]:
        """Every stored instance's main DICOM tags (with its series' and study's)."""
        out = []
        for oid in self.get("/instances"):
            tags = self.get(f"/instances/{oid}/simplified-tags")
            out.append(tags)
        return out

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)
        self._log.close()
