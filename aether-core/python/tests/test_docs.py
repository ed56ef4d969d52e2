"""The Python examples of the guide's page and the README run, in order,
as a reader would paste them, against a nats-server of the test's own
(blocks that wait for waves forever are marked `<!-- not run -->`)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest

from conftest import REPO, NatsServer

BLOCK = re.compile(r"(<!-- not run -->\s*\n)?```python\n(.*?)```", re.S)


def blocks(path: Path) -> List[str]:
    return [code for skipped, code in BLOCK.findall(path.read_text()) if not skipped]


@pytest.mark.parametrize("page", ["docs/guide/python.md", "README.md"])
def test_the_examples_of_the_docs_run(page: str, nats_js: NatsServer) -> None:
    code = "\n".join(blocks(REPO / page)).replace("nats://127.0.0.1:4222", nats_js.url)
    assert code.strip(), f"no Python example in {page}"
    env = dict(os.environ, AETHER__AETHER__NATS__URLS=nats_js.url)
    done = subprocess.run(
        [sys.executable, "-c", code + "\nimport time; time.sleep(0.3)\n"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env=env,
    )
    assert done.returncode == 0, f"{page}:\n{code}\n{done.stderr}"
