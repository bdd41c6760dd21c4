"""The model worker: the process that owns the model, the story session and the store.

The app starts it (`python -m charterm.worker`) and speaks `charterm.worker.protocol` with it over
stdin and stdout. Requests run one at a time on the main thread; a reader thread takes them
off stdin, so a `Stop` reaches a running generation before its next char. When stdin closes
(the app quit, was killed, or its SSH link dropped) or on SIGTERM/SIGHUP, the worker stops the
model, commits what it wrote and exits. Only the person's story is ever written to disk.
"""

import os
import queue
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import BinaryIO

from charterm.errors import CharTermError, UsageError
from charterm.worker import protocol as p

SEND_EVERY = 1 / 30  # seconds: generated chars are sent in batches at most this often (a frame each)
SYNC_EVERY = 2.0  # seconds idle between checks for a change made in another window


class Outbox:
    """Events to the app, one line each, from any thread. A closed pipe means the app is gone:
    then `on_broken` runs once."""

    def __init__(self, out: BinaryIO, on_broken=lambda: None):
        self.out = out
        self.on_broken = on_broken
        self.lock = threading.Lock()
        self.broken = False

    def send(self, msg: p.Message) -> None:
        with self.lock:
            if self.broken:
                return
            try:
                self.out.write(msg.to_line().encode())
                self.out.flush()
            except (BrokenPipeError, OSError, ValueError):
                self.broken = True
        if self.broken and self.on_broken is not None:
            on_broken, self.on_broken = self.on_broken, None
            on_broken()


class Worker:
    def __init__(self, inp: BinaryIO, out: BinaryIO):
        self.inp = inp
        self.outbox = Outbox(out, on_broken=self.shutdown)
        self.requests: queue.Queue[p.Message | None] = queue.Queue()
        self.store = None
        self.session = None
        self.precision = "int8"
        self._lock = threading.RLock()  # guards the running continuation and the stop mark (RLock: signals)
        self._running = None  # (request id, Continuation) of the generation in progress
        self._stop_before = 0  # generations for requests below this id are stopped

    # --- the reader thread ------------------------------------------------------------------------

    def read_requests(self) -> None:
        while line := self.inp.readline():
            try:
                msg = p.decode(line.decode("utf-8", "replace"))
            except p.ProtocolError as e:
                self.outbox.send(p.Error(text=str(e)))
                continue
            if isinstance(msg, p.Stop | p.Quit):
                self.stop(msg.id)
            if isinstance(msg, p.Stop):
                self.outbox.send(p.Done(id=msg.id))
            else:
                self.requests.put(msg)
        self.shutdown()

    def stop(self, before: int) -> None:
        """Stop the generation of any request before `before` (running now or started later)."""
        with self._lock:
            self._stop_before = max(self._stop_before, before)
            if self._running is not None and self._running[0] < before:
                self._running[1].stop()

    def shutdown(self, *_signal) -> None:
        """The app is gone (or asked us to go): stop the model; the main loop commits and exits."""
        self.stop(1 << 62)
        self.requests.put(None)

    # --- the main loop -------------------------------------------------------------------------------

    def serve(self) -> int:
        self.outbox.send(p.Hello(pid=os.getpid()))
        threading.Thread(target=self.read_requests, name="charterm-requests", daemon=True).start()
        while True:
            try:
                msg = self.requests.get(timeout=SYNC_EVERY)
            except queue.Empty:
                self.run(0, self.check_for_changes)
                self.run(0, self.catch_up)
                self.run(0, self.save_adaptation)
                continue
            if msg is None or isinstance(msg, p.Quit):
                break
            self.run(msg.id, lambda m=msg: HANDLERS[type(m)](self, m))
            self.outbox.send(p.Done(id=msg.id))
            self.run(0, self.catch_up)
        self.run(0, self.save_adaptation)
        if self.store is not None:
            self.store.close()
        return 0

    def run(self, rid: int, task) -> None:
        """Run one request's work; errors become one-line `Error` events, never a dead worker."""
        reloads = self.session.reloads if self.session else 0
        try:
            task()
        except CharTermError as e:
            self.outbox.send(p.Error(id=rid, text=str(e)))
        except Exception as e:  # a bug must not take the story down with it
            traceback.print_exc(file=sys.stderr)
            self.outbox.send(p.Error(id=rid, text=f"{type(e).__name__}: {e}"))
        s = self.session
        if s is not None:
            if s.reloads != reloads:  # another window's turns came in meanwhile
                self.send_story(rid)
            while s.notices:
                self.outbox.send(p.Notice(id=rid, text=s.notices.pop(0), severity="warning"))

    def check_for_changes(self) -> None:
        """Another window (or `charterm generate --story`) may have written to the story."""
        from charterm.story.store import StoryChanged

        if self.session is None:
            return
        try:
            self.session.sync()
        except StoryChanged as e:  # deleted elsewhere: say so once, then wait for /story
            self.session = None
            raise CharTermError(f"{e}; /story NAME opens another") from None

    def catch_up(self) -> None:
        """What the last turn left for after it (`Session.catch_up`: learning the person's turn, the base
        model's states), while no request waits; the side pane then shows what was learned."""
        if self.session is not None and self.session.catch_up(lambda: not self.requests.empty()):
            self.send_snapshot(0)

    def save_adaptation(self) -> None:
        """The adapted weights go to the store when idle and on the way out, not after each turn."""
        if self.session is not None:
            self.session.save_adaptation()

    # --- what the app is told ----------------------------------------------------------------------

    def send_story(self, rid: int) -> None:
        s = self.session
        ids = [t.id or 0 for t in s.turns]
        versions = [list(s.versions(i)) for i in range(len(s.turns))]
        self.outbox.send(p.Reset(id=rid, runs=[list(r) for r in s.runs()], ids=ids, versions=versions))
        self.send_snapshot(rid)

    def send_snapshot(self, rid: int) -> None:
        from charterm.engine.checkpoint import model_card

        s = self.session
        self.outbox.send(
            p.Snapshot(
                id=rid,
                story=s.name or "",
                turns=len(s.turns),
                chars=sum(len(t.text) for t in s.turns),
                settings=s.settings.to_dict(),
                card=model_card(s.loaded),
                adaptation=s.adaptation(),
            )
        )

    def send_committed(self, rid: int, turn) -> None:
        s = self.session
        chars = sum(len(t.text) for t in s.turns)
        committed = p.Committed(
            id=rid,
            author=turn.author,
            length=len(turn.text),
            turns=len(s.turns),
            chars=chars,
            turn=turn.id or 0,
            version=list(s.versions()),
        )
        self.outbox.send(committed)

    def notice(self, rid: int, text: str) -> None:
        self.outbox.send(p.Notice(id=rid, text=text))

    # --- requests ------------------------------------------------------------------------------------

    def open(self, msg: p.Open) -> None:
        from charterm.engine.checkpoint import load_model
        from charterm.story.session import Session, model_path_for
        from charterm.story.store import Store, check_name

        if self.store is None:
            self.store = Store()
        self.precision = msg.precision
        name = check_name(msg.story or self.store.last_story() or "untitled")
        story = self.store.load(name)
        current = self.session.loaded if self.session else None
        path, notice = model_path_for(story, msg.model, fallback=current.path if current else None)
        if notice:
            self.outbox.send(p.Notice(id=msg.id, text=notice, severity="warning"))
        if not path.is_file():
            raise CharTermError(f"no model at {path}; train one (/train) or open one with /model PATH")
        self.save_adaptation()
        same = current is not None and current.path and Path(current.path).resolve() == path.resolve()
        loaded = current if same else load_model(path)
        self.session = Session(loaded, self.store, story or self.store.open(name), precision=self.precision)
        self.store.set_last_story(name)
        self.send_story(msg.id)

    def write(self, msg: p.Write) -> None:
        s = self.need_session()
        if s.sync():
            self.send_story(msg.id)
        if msg.text:
            self.outbox.send(p.Appended(id=msg.id, author="person", text=msg.text))
            report = s.append_person_turn(msg.text)
            if report:
                s.notices.append(f"not in the model's alphabet: {report.describe()}")
            self.send_committed(msg.id, s.turns[-1])
            if s.learner is not None:
                self.send_snapshot(msg.id)  # what it learned of the turn
        self.generate(msg.id)

    def typing(self, msg: p.Typing) -> None:
        """Learn what can be learned of the turn being typed, until another request comes."""
        if self.session is not None and msg.text and self.requests.empty():
            self.session.prepare(msg.text, lambda: not self.requests.empty())

    def generate(self, rid: int) -> None:
        """The model's turn: chars go to the app in batches; the turn is committed at the end."""
        s = self.need_session()
        cont = s.continue_(whole_words=True)
        with self._lock:
            self._running = (rid, cont)
            if rid < self._stop_before:
                cont.stop()
        try:
            self.outbox.send(p.Generating(id=rid))
            shown, sent = 0, 0.0  # the first char goes at once, then a batch a frame
            for _ in cont:
                if time.monotonic() - sent >= SEND_EVERY:
                    shown, sent = self.send_written(rid, cont, shown), time.monotonic()
            self.send_written(rid, cont, shown)
        finally:
            with self._lock:
                self._running = None
            turn = cont.close()
        if turn is not None:
            self.send_committed(rid, turn)

    def choices(self, msg: p.Choices) -> None:
        """K continuations at once: each row's chars go to the app in batches; all are kept as versions."""
        from charterm.story.choices import check_choices

        k = check_choices(msg.k, "/choices K: K")
        s = self.need_session()
        if s.sync():
            self.send_story(msg.id)
        written = s.choices(k, whole_words=True)
        with self._lock:
            self._running = (msg.id, written)
            if msg.id < self._stop_before:
                written.stop()
        try:
            self.outbox.send(p.Generating(id=msg.id))
            shown, sent = [0] * k, time.monotonic()
            for _ in written:
                if time.monotonic() - sent >= SEND_EVERY:
                    shown, sent = self.send_choices(msg.id, written, shown), time.monotonic()
            self.send_choices(msg.id, written, shown)
        finally:
            with self._lock:
                self._running = None
            turns = written.close()
        ids = [0] * k
        for row, turn in zip(written.rows_kept, turns, strict=True):
            ids[row] = turn.id or 0
        self.outbox.send(p.Kept(id=msg.id, turns=ids))
        self.send_story(msg.id)

    def send_choices(self, rid: int, written, shown: list[int]) -> list[int]:
        """Send what each row wrote after the first `shown[row]` chars; returns how many are shown now."""
        for row, chars in enumerate(written.chars):
            if len(chars) > shown[row]:
                probs = [round(x, 3) for x in written.probs[row][shown[row] :]]
                self.outbox.send(p.Choice(id=rid, row=row, text="".join(chars[shown[row] :]), probs=probs))
        return [len(chars) for chars in written.chars]

    def pick_choice(self, msg: p.PickChoice) -> None:
        s = self.need_session()
        if not msg.turn:
            raise UsageError("nothing to pick: that choice wrote nothing")
        s.checkout(msg.turn)
        self.send_story(msg.id)
        k, n = s.versions()
        self.notice(msg.id, f"version {k}/{n} (Alt+Left/Right: the others)")

    def send_written(self, rid: int, cont, shown: int) -> int:
        """Send the chars the model wrote after the first `shown`, with their probabilities; returns how
        many are shown now."""
        if len(cont.chars) > shown:
            probs = [round(x, 3) for x in cont.probs[shown:]]
            self.outbox.send(p.Appended(id=rid, text="".join(cont.chars[shown:]), probs=probs))
        return len(cont.chars)

    def undo(self, msg: p.Undo) -> None:
        turn = self.need_session().undo()
        self.send_story(msg.id)  # with the adaptation as it was before the turn
        what = "nothing to undo" if turn is None else f"undid the {turn.author}'s {len(turn.text):,} chars"
        self.notice(msg.id, what)

    def redo(self, msg: p.Redo) -> None:
        turn = self.need_session().redo()
        self.send_story(msg.id)
        what = "nothing to redo" if turn is None else f"redid the {turn.author}'s {len(turn.text):,} chars"
        self.notice(msg.id, what)

    def retry(self, msg: p.Retry) -> None:
        s = self.need_session()
        s.sync()
        if s.turns and s.turns[-1].author == "model":
            s.undo()
        self.send_story(msg.id)
        self.generate(msg.id)

    def version(self, msg: p.Version) -> None:
        k, n = self.need_session().switch_version(msg.step)
        self.send_story(msg.id)
        self.notice(msg.id, f"version {k}/{n}")

    def checkout(self, msg: p.Checkout) -> None:
        s = self.need_session()
        s.checkout(msg.turn or None)
        self.send_story(msg.id)
        self.notice(msg.id, f"the story now ends at turn {msg.turn}; what you write next starts a branch")

    def edit(self, msg: p.Edit) -> None:
        s = self.need_session()
        at = next((i for i, t in enumerate(s.turns) if t.id == msg.turn), None)
        if at is None:
            raise UsageError(f"turn {msg.turn} is not in the story shown (/fork lists its turns)")
        s.edit(at, msg.text)
        self.send_story(msg.id)
        self.notice(msg.id, f"turn {msg.turn} edited: a new version, the old one kept")

    def tree(self, msg: p.Tree) -> None:
        self.outbox.send(p.Turns(id=msg.id, turns=self.need_session().tree()))

    def set_setting(self, msg: p.SetSetting) -> None:
        from charterm.settings import parse_setting

        field, value = parse_setting(msg.field, msg.value)
        self.need_session().update_settings(**{field: value})
        self.send_snapshot(msg.id)

    def reset_adaptation(self, msg: p.ResetAdaptation) -> None:
        self.need_session().reset_adaptation()
        self.send_snapshot(msg.id)
        self.notice(msg.id, "forgot what the model learned of this story; it learns from here on")

    def switch_model(self, msg: p.SwitchModel) -> None:
        from charterm.engine.checkpoint import load_model

        if not msg.path:
            raise UsageError("/model needs a path: /model models/other.safetensors")
        loaded = load_model(Path(msg.path).expanduser())
        s = self.need_session()
        self.notice(msg.id, f"rebuilding the story's state with {loaded.path.name}...")
        s.switch_model(loaded)
        self.send_snapshot(msg.id)
        self.notice(msg.id, f"now writing with {loaded.path.name}")

    def list_stories(self, msg: p.ListStories) -> None:
        from charterm.story.store import Store

        if self.store is None:
            self.store = Store()
        rows = [{"name": r.name, "turns": r.turns, "chars": r.chars} for r in self.store.list_stories()]
        self.outbox.send(p.Stories(id=msg.id, stories=rows))

    def export(self, msg: p.Export) -> None:
        from charterm.files import atomic_write_bytes
        from charterm.story.store import render

        s = self.need_session()
        if msg.format not in ("txt", "md", "json"):
            raise UsageError(f"/export: format {msg.format!r}: txt, md or json")
        path = Path(msg.path).expanduser()
        if msg.format == "json":
            from charterm.engine.checkpoint import model_card
            from charterm.story import exchange

            story = s.store.load(s.story.name) or s.story  # every branch, as the store has it now
            text = exchange.export_text(s.store, story, exchange.model_from_card(model_card(s.loaded)))
        else:
            text = render(s.story.name, s.turns, msg.format)
        try:
            atomic_write_bytes(path, text.encode())
        except OSError as e:
            raise CharTermError(f"/export: cannot write {path}: {e.strerror or e}") from None
        self.notice(msg.id, f"wrote {path}")

    def next_words(self, msg: p.Next) -> None:
        s = self.need_session()
        if s.sync():
            self.send_story(msg.id)
        words = [{"text": c.text, "p": round(c.p, 4)} for c in s.next_words(msg.words)]
        self.outbox.send(p.Candidates(id=msg.id, words=words))

    def pick(self, msg: p.Pick) -> None:
        s = self.need_session()
        if not msg.text:
            raise UsageError("nothing to pick: ask for the next words first (Ctrl+N or /next)")
        if s.sync():
            self.send_story(msg.id)
        probs = s.append_model_text(msg.text)
        self.outbox.send(p.Appended(id=msg.id, text=msg.text, probs=[round(x, 3) for x in probs]))
        self.send_committed(msg.id, s.turns[-1])

    def need_session(self):
        if self.session is None:
            raise CharTermError("no story is open: the model did not load (/model PATH, or /story NAME)")
        return self.session


HANDLERS = {
    p.Open: Worker.open,
    p.Write: Worker.write,
    p.Undo: Worker.undo,
    p.Retry: Worker.retry,
    p.Redo: Worker.redo,
    p.Version: Worker.version,
    p.Checkout: Worker.checkout,
    p.Edit: Worker.edit,
    p.Tree: Worker.tree,
    p.SetSetting: Worker.set_setting,
    p.SwitchModel: Worker.switch_model,
    p.ListStories: Worker.list_stories,
    p.Export: Worker.export,
    p.ResetAdaptation: Worker.reset_adaptation,
    p.Next: Worker.next_words,
    p.Pick: Worker.pick,
    p.Choices: Worker.choices,
    p.PickChoice: Worker.pick_choice,
    p.Typing: Worker.typing,
}


def main() -> int:
    """`python -m charterm.worker`: serve the app on stdin/stdout. Stray prints go to stderr, so
    nothing but protocol lines ever reaches the app."""
    import torch

    torch.set_num_threads(1)  # one char at a time gains nothing from more; the app keeps a core
    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    worker = Worker(sys.stdin.buffer, out)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C belongs to the app
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, worker.shutdown)
    return worker.serve()


if __name__ == "__main__":
    sys.exit(main())
