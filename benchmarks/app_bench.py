"""How fast the story app feels: time to the first frame and chars per second on screen.

    python benchmarks/app_bench.py [--model PATH] [--chars 5000] [--rounds 3]

first frame: the real `charterm` command in a tmux window (80x24), from launch until its title
line is on the screen, and until the model card shows the model (loaded in the background).
key echo: in that window, while the model writes a long turn, from `tmux send-keys` of one
character until it shows in the prompt (the screen is read every 5 ms).
streaming: the app headless (Textual's run_test, 100x30) with the model; one turn of --chars
chars, from Enter until the story view holds them all, i.e. as the person sees them.
"""

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def in_tmux(model: str) -> tuple[float, float, list[float]]:
    exe = Path(sys.executable).parent / "charterm"
    sock = f"bench{os.getpid()}"
    home = tempfile.mkdtemp()
    tmux = ["tmux", "-L", sock]
    start = time.perf_counter()
    subprocess.run(
        [
            *tmux,
            "new-session",
            "-d",
            "-s",
            "b",
            "-x",
            "80",
            "-y",
            "24",
            f"CHARTERM_HOME={home} TERM=xterm-256color {exe} --model {model}",
        ],
        check=True,
    )
    frame = loaded = None
    try:
        while time.perf_counter() - start < 60 and loaded is None:
            screen = subprocess.run([*tmux, "capture-pane", "-p", "-t", "b"], capture_output=True, text=True).stdout
            now = time.perf_counter() - start
            if frame is None and "charterm" in screen:
                frame = now
            if "params" in screen:
                loaded = now
            time.sleep(0.01)
        echoes = key_echoes(tmux) if loaded else []
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True)
        shutil.rmtree(home, ignore_errors=True)
    return frame or float("nan"), loaded or float("nan"), echoes


def key_echoes(tmux: list[str], keys: str = "zqzqzq") -> list[float]:
    """Seconds from sending each key of `keys` until the prompt shows it, while the model writes."""

    def send(*keys: str) -> None:
        subprocess.run([*tmux, "send-keys", "-t", "b", *keys], check=True)

    send("-l", "/chars 100000")
    send("Enter")
    send("-l", "Once")
    send("Enter")
    time.sleep(1.0)
    echoes = []
    for i in range(len(keys)):
        start = time.perf_counter()
        send("-l", keys[i])
        while (
            keys[: i + 1]
            not in subprocess.run([*tmux, "capture-pane", "-p", "-t", "b"], capture_output=True, text=True).stdout
        ):
            if time.perf_counter() - start > 10:
                return echoes
            time.sleep(0.005)
        echoes.append(time.perf_counter() - start)
        time.sleep(0.3)
    return echoes[1:]  # the first key may match text the model wrote


async def streaming(model: str, chars: int) -> float:
    from charterm.app.app import CharTermApp
    from charterm.app.story_view import StoryView

    app = CharTermApp(model=model)
    async with app.run_test(size=(100, 30)) as pilot:
        while app.session is None:
            await pilot.pause(0.05)
        app.session.update_settings(chars=chars)
        view = app.query_one(StoryView)
        await pilot.press("enter")
        t0 = time.perf_counter()
        while len(view.text) < chars:
            await pilot.pause(0.005)
        return chars / (time.perf_counter() - t0)


def main() -> None:
    from charterm.checkpoint import default_model_path

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(default_model_path()))
    ap.add_argument("--chars", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    frames, loads, echoes, rates = [], [], [], []
    for _ in range(args.rounds):
        if shutil.which("tmux"):
            f, m, e = in_tmux(args.model)
            frames.append(f)
            loads.append(m)
            echoes += e
        with tempfile.TemporaryDirectory() as home:
            os.environ["CHARTERM_HOME"] = home
            rates.append(asyncio.run(streaming(args.model, args.chars)))
    if frames:
        print(f"first frame (s, best of {len(frames)}): {min(frames):.2f}   model loaded (s): {min(loads):.2f}")
        if echoes:
            median, worst = 1000 * statistics.median(echoes), 1000 * max(echoes)
            print(f"key echo while the model writes (ms): median {median:.0f}, worst {worst:.0f}, of {len(echoes)}")
    print(f"chars/s on screen (best of {len(rates)}): {max(rates):,.0f}   all: {', '.join(f'{r:,.0f}' for r in rates)}")


if __name__ == "__main__":
    main()
