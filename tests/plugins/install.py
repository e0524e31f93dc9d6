"""Installing a plugin package for a test: pip into a private site folder, the project itself excluded.

Import as ``from tests.plugins.install import install_plugin`` (pytest runs with ``--import-mode=importlib``).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def install_plugin(source: Path, site: Path, dist: str) -> Path:
    """``pip install --target site source`` without dependencies or build isolation (no index needed),
    checking that the distribution ``dist`` registered its entry points. Returns ``site``."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(site),
            str(source),
        ],
        check=True,
        timeout=300,
    )
    assert list(site.glob(f"{dist}-*.dist-info/entry_points.txt")), f"{dist} registered no entry points"
    return site
