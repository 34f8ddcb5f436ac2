"""The README's Python blocks run as written (each in a fresh directory, in a subprocess)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_opens_with_install_and_test_commands() -> None:
    first_block = re.search(r"```bash\n(.*?)```", README.read_text(), flags=re.S)
    assert first_block is not None
    lines = [line for line in first_block.group(1).splitlines() if line.strip()]
    assert lines == ["bash scripts/install.sh", "python -m pytest -q"]
    install = (README.parent / "scripts" / "install.sh").read_text()
    assert "apt-get install -y -qq chromium" in install
    assert "python -m pip install -e '.[dev]'" in install
    ci = (README.parent / ".ci" / "run").read_text()
    assert "bash scripts/install.sh" in ci and "\npython -m pytest -q\n" in ci


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block_runs(index: int, tmp_path: Path) -> None:
    script = tmp_path / "block.py"
    script.write_text(BLOCKS[index])
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
