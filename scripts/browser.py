"""Debian's chromium for the scripts that drive a real browser
(scripts/ops/status_page_check.py, scripts/ops/forward_browser_check.py):
found on PATH, or installed with apt-get when running as root."""

import os
import shutil
import subprocess


def chromium():
    for name in ("chromium", "chromium-browser"):
        if shutil.which(name):
            return shutil.which(name)
    if shutil.which("apt-get") and os.geteuid() == 0:
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], check=True,
                       env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"),
                       stdout=subprocess.DEVNULL)
        return shutil.which("chromium")
    raise SystemExit("chromium is not installed and cannot be installed here (needs root and apt-get)")
