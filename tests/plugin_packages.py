"""Build throwaway third-party plugin wheels (real wheels, installed by pip) for tests."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

ADAPTER_MODULE = '''
from connector_core import Adapter, AdapterSettings, Capability, Page, hookimpl


class {cls}(Adapter):
    """A third-party adapter used in tests."""

    name = "{adapter}"
    capabilities = frozenset({{Capability.READ}})

    def read(self, *, cursor=None, fields=None, where=None):
        yield Page([{{"id": "1", "first_name": "Ada"}}], cursor="1", snapshot=True)


@hookimpl
def {hook}():
    return [{cls}]
'''


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def build_wheel(out: Path, dist: str, module: str, source: str, ep_name: str) -> Path:
    """Write a minimal pure-Python wheel with an entry point in the group `connector`."""
    norm = dist.replace("-", "_")
    info = f"{norm}-1.0.dist-info"
    files = {
        f"{module}/__init__.py": textwrap.dedent(source).encode(),
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n".encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n",
        f"{info}/entry_points.txt": f"[connector]\n{ep_name} = {module}\n".encode(),
    }
    record = [_record_line(n, d) for n, d in files.items()] + [f"{info}/RECORD,,"]
    files[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    path = out / f"{norm}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def install(wheel: Path, site: Path) -> None:
    """Install a wheel into a private site directory with pip (no network, no deps)."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            "--disable-pip-version-check",
            "--target",
            str(site),
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )


def adapter_source(
    adapter: str, *, cls: str = "ThirdPartyAdapter", hook: str = "register_adapters"
) -> str:
    """Source of a plugin module providing one read-only adapter."""
    return ADAPTER_MODULE.format(adapter=adapter, cls=cls, hook=hook)
