"""Run a command as its terminal's foreground job and hold back its SIGWINCH on demand (no tests here).

`python tests/winch_gate.py CMD...` runs CMD in a process group of its own, the terminal's foreground one.
On SIGUSR1 the gate takes the foreground: the kernel sends the SIGWINCH of each resize to the foreground
group, so CMD hears of none (the gate ignores them). On SIGUSR2 CMD gets the foreground back and one SIGWINCH,
so it reads the size the terminal has then: what an app too busy to follow a burst of resizes sees, without
stopping it. The gate writes "held" or "free" to the file $WINCH_GATE_STATE (if set) once each is done, and
exits with CMD's status.
"""

import os
import signal
import sys


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGTTOU, signal.SIG_IGN)  # setting the foreground from a background group
    child = os.fork()
    if child == 0:
        os.setpgid(0, 0)
        os.tcsetpgrp(0, os.getpgrp())
        signal.signal(signal.SIGTTOU, signal.SIG_DFL)
        os.execvp(argv[0], argv)
    state = os.environ.get("WINCH_GATE_STATE")

    def note(text: str) -> None:
        if state:
            with open(state + ".tmp", "w") as f:
                f.write(text)
            os.replace(state + ".tmp", state)

    def hold(*_) -> None:
        os.tcsetpgrp(0, os.getpgrp())
        note("held")

    def free(*_) -> None:
        os.tcsetpgrp(0, child)
        os.kill(child, signal.SIGWINCH)
        note("free")

    signal.signal(signal.SIGUSR1, hold)
    signal.signal(signal.SIGUSR2, free)
    _, status = os.waitpid(child, 0)
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
