"""A stand-in for `charterm train --progress jsonl`: prints a scripted run as JSON lines.

    python fake_trainer.py [--steps N] [--delay S] [--out PATH] [--val V] [--baseline PATH --baseline-loss B]
                           [--fail] [--hang] [--stubborn] [--garbage]

--val       the validation loss of its checkpoint (default 1.5)
--baseline  with --baseline-loss: what scoring the model at PATH on the run's text gave

--fail      an error event, a line on stderr, exit 1
--hang      steps until SIGINT, then a done event (reason interrupted) and exit 130
--stubborn  like --hang but ignores SIGINT and SIGTERM (only SIGKILL ends it)
--garbage   a non-JSON line among the events
Unknown arguments (e.g. --progress jsonl) are ignored. Elapsed times are the trainer's own
clock's (`charterm.pauses.clock`: stops made by the app that started it are left out).
"""

import signal
import sys
import time

from charterm import train_events as te
from charterm.pauses import clock, continue_if_orphaned

args = sys.argv[1:]


def option(name: str, default: str) -> str:
    return args[args.index(name) + 1] if name in args else default


steps = int(option("--steps", "5"))
delay = float(option("--delay", "0.01"))
out = option("--out", "models/fake.safetensors")
val = float(option("--val", "1.5"))
baseline = option("--baseline", "") or None
baseline_loss = float(option("--baseline-loss", "nan")) if baseline else None
stop = []
continue_if_orphaned()
started = clock()


def emit(event: te.Event) -> None:
    print(event.to_json(), flush=True)


def step_event(step: int, total: int) -> None:
    emit(
        te.Step(
            step=step,
            total_steps=total,
            epoch=step / total,
            loss=4.0 / (1 + 0.1 * step),
            lr=0.002,
            chars_per_sec=12345.6,
            elapsed=round(clock() - started, 3),
            progress=min(1.0, step / total),
        )
    )


if "--stubborn" in args:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
elif "--hang" in args:
    signal.signal(signal.SIGINT, lambda signum, frame: stop.append("interrupted"))

emit(
    te.Start(
        params=1234,
        chars=30000,
        train_chars=27000,
        val_chars=3000,
        vocab_size=60,
        steps_per_epoch=steps,
        total_steps=steps,
        epochs=1,
        step=0,
        device="cpu",
        out=out,
        resumed=False,
        max_time=0.0,
        config={"hidden": 32},
        processes=1,
        baseline=baseline,
        baseline_val_loss=baseline_loss,
    )
)
if "--garbage" in args:
    print("this is not JSON {", flush=True)
if "--fail" in args:
    step_event(1, steps)
    emit(te.Error(message="[b]oops[/b]: the text is too short"))
    print("charterm: error: [b]oops[/b]: the text is too short", file=sys.stderr, flush=True)
    sys.exit(1)

step = 0
while step < steps or "--hang" in args or "--stubborn" in args:
    step += 1
    step_event(step, steps)
    time.sleep(delay)
    if stop:
        emit(
            te.Done(
                step=step,
                epoch=step / steps,
                best_val_loss=float("inf"),
                reason="interrupted",
                elapsed=round(clock() - started, 3),
                out=out,
                resume=out.replace(".safetensors", ".resume.pt"),
            )
        )
        print(f"charterm: stopped at step {step}; resume state saved", file=sys.stderr, flush=True)
        sys.exit(130)

emit(te.Eval(step=step, epoch=1.0, val_loss=val, train_loss=1.4, best_val_loss=val, improved=True, seconds=0.01))
emit(
    te.Checkpoint(
        step=step, val_loss=val, path=out, baseline_val_loss=baseline_loss, compared_val_loss=val if baseline else None
    )
)
emit(
    te.Done(
        step=step,
        epoch=1.0,
        best_val_loss=val,
        reason="finished",
        elapsed=round(clock() - started, 3),
        out=out,
        resume=out.replace(".safetensors", ".resume.pt"),
    )
)
