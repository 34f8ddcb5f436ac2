"""What a user gets from the wheel: the package with its types (PEP 561), so their own
`mypy --strict` checks their calls into eventstore."""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

USER_CODE = '''
from decimal import Decimal

from eventstore import Event, EventStore, RecordedEvent


async def main() -> Decimal:
    async with EventStore.open("memory://") as store:
        rec: RecordedEvent = await store.append(Event(type="message_sent", data={}))
        seq: int = rec.seq
        page = await store.list_events(conversation_id="c1", limit=10)
        assert page.next_cursor is None or isinstance(page.next_cursor, str)
        return await store.sum_cost(user_id="u1") + seq
'''

WRONG_CODE = '''
from eventstore import EventStore


async def main() -> str:
    async with EventStore.open("memory://") as store:
        return await store.head()
'''


@pytest.mark.slow
def test_mypy_strict_checks_a_user_file_against_the_installed_wheel(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = wheels.glob("eventstore-*.whl")
    env = tmp_path / "venv"
    venv.create(env, system_site_packages=True, with_pip=False)
    python = env / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, timeout=60,
    ).stdout.strip()
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", site, str(wheel)],
        capture_output=True, text=True, timeout=300,
    )
    assert installed.returncode == 0, installed.stderr
    assert (Path(site) / "eventstore" / "py.typed").exists()

    def mypy(code: str) -> subprocess.CompletedProcess[str]:
        user = tmp_path / "user.py"
        user.write_text(code)
        return subprocess.run(
            [sys.executable, "-m", "mypy", "--strict", "--no-incremental",
             "--python-executable", str(python), str(user)],
            capture_output=True, text=True, timeout=300, cwd=tmp_path,
        )

    good = mypy(USER_CODE)
    assert good.returncode == 0, good.stdout + good.stderr
    # the types really are read: a wrong annotation is caught
    bad = mypy(WRONG_CODE)
    assert bad.returncode == 1 and 'Incompatible return value type (got "int"' in bad.stdout
