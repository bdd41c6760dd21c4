import asyncio
import json
import sys
import time
from pathlib import Path

from textual.app import App, ComposeResult
from textual.widgets import ProgressBar, Static
from textual_plotext import PlotextPlot

from charterm import train_events as te
from charterm.app.training_pane import MAX_POINTS, TrainingPane
from charterm.worker.jobs import TrainingJob

FAKE = [sys.executable, str(Path(__file__).with_name("fake_trainer.py"))]
START = json.loads(
    te.Start(
        params=1234, chars=30_000, train_chars=27_000, val_chars=3_000, vocab_size=60, steps_per_epoch=100,
        total_steps=200, epochs=2, step=0, resumed=False, device="cpu", processes=1, out="m.safetensors",
        max_time=0.0, config={"eval_every": 0},
    ).to_json()
)  # fmt: skip


class Host(App):
    CSS = "TrainingPane { width: 34; }"

    def compose(self) -> ComposeResult:
        yield TrainingPane(id="pane")


def step(n: int, total: int = 200, loss: float = 2.0) -> dict:
    return {
        "event": "step",
        "step": n,
        "total_steps": total,
        "epoch": 2 * n / total,
        "loss": loss,
        "lr": 0.002,
        "chars_per_sec": 45678.9,
        "elapsed": n / 10,
        "progress": n / total,
    }


def feed(pane: TrainingPane, event: dict) -> None:
    """An event as the job runner delivers it: the JSON line read back."""
    pane.handle(te.parse(event))


def shown(app: App, selector: str) -> str:
    """The text a Static actually renders (markup, if any, already applied)."""
    return app.query_one(selector, Static).render().plain


def run(test, size=(40, 30)) -> None:
    """Run `test(app, pane, pilot)` inside a headless Host app."""

    async def main():
        app = Host()
        async with app.run_test(size=size) as pilot:
            await test(app, app.query_one(TrainingPane), pilot)

    asyncio.run(main())


async def wait_until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


def test_steps_and_evals_update_status_bar_stats_and_chart():
    async def test(app, pane, pilot):
        assert shown(app, "#status") == "idle"
        feed(pane, START)
        assert shown(app, "#status") == "starting: 1,234 parameters on cpu"
        for n in range(1, 51):
            feed(pane, step(n, loss=3 - n / 50))
        feed(
            pane,
            {
                "event": "eval",
                "step": 50,
                "epoch": 0.5,
                "val_loss": 2.25,
                "train_loss": 2.0,
                "best_val_loss": 2.25,
                "improved": True,
                "seconds": 0.1,
            },
        )
        await pilot.pause()
        assert shown(app, "#status") == "training epoch 1/2 step 50/200"
        bar = app.query_one(ProgressBar)
        assert (bar.progress, bar.total) == (50, 200)
        assert shown(app, "#stats") == "45,679 chars/s  loss 2.000\nval 2.250  best 2.250"
        assert len(pane.train) == 50 and pane.train[-1] == (50, 2.0)
        assert pane.val == [(50, 2.25)]
        await wait_until(lambda: pane.redraws >= 1, 2)
        for n in range(51, 101):
            feed(pane, step(n, loss=1.5))
        assert len(pane.train) == 100
        assert shown(app, "#status") == "training epoch 2/2 step 100/200"

    run(test)


def test_done_and_final_step():
    async def test(app, pane, pilot):
        feed(pane, START)
        feed(pane, step(200))
        assert shown(app, "#status") == "evaluating at step 200"
        feed(
            pane,
            {
                "event": "done",
                "step": 200,
                "epoch": 2.0,
                "best_val_loss": 1.23456,
                "reason": "finished",
                "elapsed": 20.0,
                "out": "models/m.safetensors",
                "resume": "models/m.resume.pt",
            },
        )
        feed(pane, {"event": "exit", "returncode": 0, "stderr": "", "cancelled": False})
        await pilot.pause()
        assert shown(app, "#status") == "done: best val 1.235 at models/m.safetensors"
        assert app.query_one(ProgressBar).percentage == 1.0
        pane.reset()
        await pilot.pause()
        assert shown(app, "#status") == "idle" and pane.train == [] and app.query_one(ProgressBar).progress == 0

    run(test)


def test_error_message_is_shown_literally():
    async def test(app, pane, pilot):
        feed(pane, START)
        feed(pane, {"event": "error", "message": "[b]oops[/b] [red]x"})
        feed(pane, {"event": "exit", "returncode": 1, "stderr": "charterm: error: something else", "cancelled": False})
        await pilot.pause()
        assert shown(app, "#status") == "failed: [b]oops[/b] [red]x"

    run(test)


def test_exit_without_an_error_event_shows_stderr_or_the_signal():
    async def test(app, pane, pilot):
        pane.reset(starting=True)
        assert shown(app, "#status") == "starting…"
        feed(
            pane,
            {
                "event": "exit",
                "returncode": 1,
                "stderr": "Traceback\n  ...\nValueError: bad [i]x[/i]\n\n",
                "cancelled": False,
            },
        )
        assert shown(app, "#status") == "failed: ValueError: bad [i]x[/i]"
        pane.reset()
        feed(pane, {"event": "exit", "returncode": -9, "stderr": "", "cancelled": False})
        assert shown(app, "#status") == "failed: killed by SIGKILL"
        pane.reset()
        feed(pane, START)
        feed(pane, {"event": "exit", "returncode": 130, "stderr": "charterm: interrupted", "cancelled": True})
        assert shown(app, "#status") == "cancelled"

    run(test)


def test_unknown_and_malformed_events_are_ignored():
    async def test(app, pane, pilot):
        feed(pane, START)
        for event in (
            {"event": "mystery"},
            {"no": "event"},
            {"event": "step"},
            {"event": "eval", "step": "x"},
            {"event": 3},
            {"event": "__init__"},
            {"event": "log", "message": "hello"},
        ):
            feed(pane, event)
        assert shown(app, "#status") == "starting: 1,234 parameters on cpu"
        assert pane.train == [] and pane.val == []

    run(test)


def test_a_burst_of_steps_redraws_the_chart_a_few_times_and_keeps_few_points():
    async def test(app, pane, pilot):
        feed(pane, {**START, "total_steps": 10_000})
        await pilot.pause(0.4)
        before = pane.redraws
        for n in range(1, 1001):
            feed(pane, step(n, total=10_000, loss=3 - n / 1000))
        await pilot.pause(0.6)
        assert 1 <= pane.redraws - before <= 3
        assert len(pane.train) <= MAX_POINTS and pane.train[0] == (1, 2.999)
        steps = [s for s, _ in pane.train]
        assert steps == sorted(steps) and steps[-1] > 900
        assert app.query_one(ProgressBar).progress == 1000

    run(test)


def test_fits_a_side_column_of_an_80x24_terminal():
    async def test(app, pane, pilot):
        feed(pane, START)
        feed(pane, step(10))
        await pilot.pause()
        assert pane.size.width == 34
        chart = app.query_one(PlotextPlot)
        assert chart.size.width == 34 and chart.size.height >= 8
        assert chart.region.bottom <= 24

    run(test, size=(80, 24))


def test_pane_follows_a_real_child_process():
    async def test(app, pane, pilot):
        job = TrainingJob(
            ["--steps", "8", "--out", "x.safetensors"], lambda e: app.call_from_thread(pane.handle, e), argv=FAKE
        )
        pane.reset(starting=True)
        job.start()
        await wait_until(lambda: not job.running)
        assert job.returncode == 0
        assert shown(app, "#status") == "done: best val 1.500 at x.safetensors"
        assert [s for s, _ in pane.train] == list(range(1, 9)) and pane.val == [(8, 1.5)]
        await wait_until(lambda: pane.redraws >= 1, 2)

        failing = TrainingJob(["--fail"], lambda e: app.call_from_thread(pane.handle, e), argv=FAKE)
        pane.reset(starting=True)
        failing.start()
        await wait_until(lambda: not failing.running)
        assert shown(app, "#status") == "failed: [b]oops[/b]: the text is too short"

    run(test)
