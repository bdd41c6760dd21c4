"""The app process as a whole: it never imports torch, and it exits cleanly."""

import os
import subprocess
import sys
import textwrap

APP = textwrap.dedent(
    """
    import asyncio, sys, time
    from charterm.app.app import CharTermApp
    from charterm.app.story_view import StoryView

    async def main():
        app = CharTermApp(model=sys.argv[1])
        async with app.run_test(size=(80, 24)) as pilot:
            deadline = time.monotonic() + 60
            while app.snapshot is None and time.monotonic() < deadline:
                await pilot.pause(0.05)
            await pilot.press(*"/chars 80", "enter", *"Anna", "enter")
            while (app.pending or app.writing) and time.monotonic() < deadline:
                await pilot.pause(0.05)
            print("SHOWN", len(app.query_one(StoryView).text))
            await pilot.press("ctrl+q")
        print("TORCH" if "torch" in sys.modules else "NO-TORCH")

    asyncio.run(main())
    """
)


def test_the_app_process_never_imports_torch_and_exits_cleanly(tmp_path, tiny_model):
    r = subprocess.run(
        [sys.executable, "-c", APP, str(tiny_model)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "CHARTERM_HOME": str(tmp_path)},
    )
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines[-1] == "NO-TORCH"
    shown = int(lines[-2].split()[1])
    assert shown >= 84  # "Anna" and the model's turn of 80 chars or more
    assert "terminate called" not in r.stderr and "Traceback" not in r.stderr, r.stderr
