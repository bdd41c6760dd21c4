"""A dropped SSH connection while the model writes: the real `charterm` behind a real (local) sshd, in tmux.

The test starts its own sshd (a throwaway config, host key and client key under tmp_path, listening on
127.0.0.1 on a free port) and its own tmux server (`tmux -L sshtest-<pid>-<n>`); it stops only those.
"""

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from conftest import stored_turns
from test_e2e import CHARTERM, Term, shown_story, squash, status_line, story_of

SSHD = Path("/usr/sbin/sshd")
REPO = Path(__file__).resolve().parent.parent
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not SSHD.exists(), reason=f"sshd is not installed ({SSHD}; apt-get install openssh-server)"),
    pytest.mark.skipif(
        shutil.which("ssh") is None or shutil.which("ssh-keygen") is None,
        reason="the ssh client (ssh, ssh-keygen) is not installed (apt-get install openssh-client)",
    ),
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (it drives the full-screen app)"),
    pytest.mark.skipif(not CHARTERM.exists(), reason=f"no console script at {CHARTERM} (pip install -e .)"),
]
HANGUP_TIMEOUT = 15.0  # from the dropped connection to no charterm left on the "remote" side


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sshd:
    def __init__(self, dir: Path, port: int, client_key: Path, proc: subprocess.Popen, log: Path):
        self.dir, self.port, self.client_key, self.proc, self.log = dir, port, client_key, proc, log

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def sshd(tmp_path):
    d = tmp_path / "sshd"
    d.mkdir()
    for name in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)], check=True, timeout=30)
    (d / "authorized_keys").write_text((d / "client_key.pub").read_text())
    port = free_port()
    config = d / "sshd_config"
    config.write_text(
        f"Port {port}\n"
        "ListenAddress 127.0.0.1\n"
        f"HostKey {d / 'host_key'}\n"
        f"AuthorizedKeysFile {d / 'authorized_keys'}\n"
        f"PidFile {d / 'sshd.pid'}\n"
        "StrictModes no\n"
        "UsePAM no\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "PermitRootLogin yes\n"  # CI runs the tests as root
        "PrintMotd no\n"
        "PrintLastLog no\n"
        "UseDNS no\n"
        "Subsystem sftp internal-sftp\n"
    )
    os.makedirs("/run/sshd", exist_ok=True)  # its privilege separation directory
    log = d / "sshd.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(config)], stdout=f, stderr=subprocess.STDOUT)
    server = Sshd(d, port, d / "client_key", proc, log)
    try:
        deadline = time.monotonic() + 10
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"sshd exited with {proc.returncode}:\n{server.log_text()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"sshd did not listen on {port} in 10 s:\n{server.log_text()}") from None
                time.sleep(0.1)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class SshTerm(Term):
    """Term whose session runs `ssh -tt ... 127.0.0.1 'charterm ...'` instead of charterm itself."""

    def __init__(self, tmp_path: Path, model: Path, server: Sshd):
        super().__init__(tmp_path, model)
        self.sock = f"sshtest-{os.getpid()}-{self.sock.rsplit('-', 1)[1]}"
        self.server = server

    def remote_command(self) -> str:
        env = [
            "TERM=xterm-256color",
            "LANG=C.UTF-8",
            "LC_ALL=C.UTF-8",
            f"CHARTERM_HOME={self.home}",
        ]
        argv = [str(CHARTERM), "--model", str(self.model)]
        return f"cd {shlex.quote(str(REPO))} && env -u COLUMNS -u LINES {shlex.join(env)} {shlex.join(argv)}"

    def launch(self, size=(80, 24)) -> None:  # type: ignore[override]
        self.runs += 1
        n = self.runs
        ssh = [
            "ssh", "-tt", "-i", str(self.server.client_key), "-p", str(self.server.port),
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
            "-o", "LogLevel=ERROR", "127.0.0.1", self.remote_command(),
        ]  # fmt: skip
        script = self.dir / f"run{n}.sh"
        script.write_text(
            "unset COLORTERM NO_COLOR TEXTUAL_COLOR_SYSTEM CHARTERM_DEBUG FORCE_COLOR COLUMNS LINES\n"
            "export TERM=xterm-256color LANG=C.UTF-8 LC_ALL=C.UTF-8\n"
            "clear\n"
            + f'sh -c \'echo $$ > "$0"; exec "$@"\' {shlex.quote(str(self.pidfile(n)))} {shlex.join(ssh)}\n'
            + f"code=$?; echo $code > {shlex.quote(str(self.dir / f'exit{n}'))}\n"
            + f'printf "\\033[?1049l\\033c"; echo "EXITED-{n} $code"\n'
            + "exec sleep 3600\n"
        )
        if n > 1:
            self.tmux("kill-session", "-t", "s", check=False)
        self.tmux("new-session", "-d", "-s", "s", "-x", str(size[0]), "-y", str(size[1]), f"sh {script}")
        self.socket_path = self.socket_path or self.tmux("display-message", "-p", "#{socket_path}").strip()
        self.pids.append(self.wait_for(lambda: self._read_pid(n), 10, "the pid file"))

    def remote_charterms(self) -> list[tuple[int, str]]:
        """charterm processes (on the sshd side) writing to this test's CHARTERM_HOME."""
        found = []
        marker = f"CHARTERM_HOME={self.home}".encode()
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    cmdline = f.read()
                with open(f"/proc/{entry}/environ", "rb") as f:
                    environ = f.read().split(b"\0")
                with open(f"/proc/{entry}/stat") as f:
                    if f.read().split(") ", 1)[1][0] == "Z":
                        continue
            except (FileNotFoundError, ProcessLookupError, PermissionError, IndexError):
                continue
            if b"charterm" in cmdline and marker in environ and b"ssh" not in cmdline.split(b"\0")[0]:
                found.append((int(entry), cmdline.replace(b"\0", b" ").decode(errors="replace")))
        return found


@pytest.fixture
def sshterm(tmp_path, tiny_model, sshd):
    t = SshTerm(tmp_path, tiny_model, sshd)
    yield t
    t.close()
    # a charterm the drop left behind (the test fails on it, but do not leave it running)
    for pid, _ in t.remote_charterms():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_dropped_ssh_connection_keeps_the_shown_text(sshterm, sshd):
    term = sshterm
    term.launch()
    term.wait_screen(lambda s: "params" in s, 60, "the model card (params)")
    term.wait_ready()
    remote = term.remote_charterms()
    # the app and its model worker run on the sshd side, not as children of our tmux
    assert sorted("charterm.worker" in cmd for _, cmd in remote) == [False, True], remote
    term.set_chars(100000)
    term.type("Anna")
    term.wait_status(r"writing\.\.\. [\d,]+ chars", 20)
    started = time.monotonic()
    term.wait_for(lambda: time.monotonic() - started > 1.5, 5)
    reference = shown_story(term.stable_capture())  # what was on screen well before the drop
    ref_time = time.monotonic()
    later = term.wait_for(lambda: time.monotonic() - ref_time > 1.0 and shown_story(term.capture()), 10)
    assert len(reference) > 50 and later != reference, "the text stopped streaming"
    last = term.capture()
    assert "writing" in status_line(last), last
    m = re.search(r"writing\.\.\. ([\d,]+) chars", status_line(last))
    shown_chars = int(m.group(1).replace(",", "")) if m else -1

    os.kill(term.pid, signal.SIGKILL)  # the ssh client: the connection drops, sshd closes the pty
    dropped = time.monotonic()
    term.wait_for(lambda: (term.dir / "exit1").exists(), 10, "the shell to see the ssh client killed")
    deadline = dropped + HANGUP_TIMEOUT
    while term.remote_charterms() and time.monotonic() < deadline:
        time.sleep(0.1)
    left = term.remote_charterms()
    assert not left, f"charterm or its worker still running {HANGUP_TIMEOUT} s after the connection dropped: {left}"
    gone_after = time.monotonic() - dropped

    turns, drafts = stored_turns(term.home)
    assert turns and turns[0] == ("person", "Anna"), turns
    assert len(turns) <= 2 and all(a == "model" for a, _ in turns[1:]), turns
    assert len(drafts) <= 1 and all(a == "model" and t for a, t in drafts), drafts
    model_text = "".join(t for _, t in turns[1:]) + "".join(t for _, t in drafts)
    assert model_text, "neither a model turn nor a draft was saved"
    saved = "".join(t for _, t in turns) + "".join(t for _, t in drafts)
    assert reference in squash(saved)
    how = "committed" if len(turns) == 2 else "draft"
    print(
        f"\ndrop: charterm gone after {gone_after:.1f} s; model text {how}: {len(model_text)} chars saved, "
        f"{shown_chars} shown ('writing... N chars') just before the drop; drafts left: {len(drafts)}"
    )

    term.launch()  # reconnect
    screen = term.wait_screen(
        lambda s: "story: untitled" in s and re.search(r"\b2 turns", status_line(s)), 60, "the story, 2 turns"
    )
    if how == "draft":
        screen = term.wait_screen(lambda s: "recovered" not in s, 15, "the 'recovered' toast to go")
    # the end of the story as saved before the drop (nothing new is written on reopening)
    screen = term.wait_screen(
        lambda s: len(shown_story(s)) > 50 and squash(saved).endswith(shown_story(s)), 15, "the end of the story"
    )
    shown = shown_story(screen)
    term.quit()  # C-q: the remote app exits 0, so does ssh
    text = squash(story_of(term.home))
    assert text.startswith("Anna") and reference in text
    assert text.startswith(squash(saved))
    assert text.endswith(shown)
