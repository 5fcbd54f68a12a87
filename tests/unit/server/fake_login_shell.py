#!/usr/bin/env python3
"""The login shell of the control plane tests' sandboxes (stdlib only): an echo on a raw PTY.

It writes back every chunk it reads, byte for byte. A chunk ``exit N\\r``
ends it with code N; ``flood N\\r`` makes N bytes of ``y`` (written as the
terminal takes them). Each window size it is given is appended to the file
named by FAKE_SHELL_LOG, with its arguments first.
"""

import json
import os
import re
import signal
import struct
import sys
import termios
import tty
import fcntl

FLOOD_CHUNK = 64 * 1024


def note(event: object) -> None:
    path = os.environ.get("FAKE_SHELL_LOG")
    if path:
        with open(path, "a") as log:
            log.write(json.dumps(event) + "\n")


def size() -> list[int]:
    rows, cols, _x, _y = struct.unpack("HHHH", fcntl.ioctl(0, termios.TIOCGWINSZ, b"\0" * 8))
    return [cols, rows]


def write(data: bytes) -> None:
    while data:
        data = data[os.write(1, data):]


def main() -> int:
    tty.setraw(0)
    note({"pid": os.getpid(), "argv": sys.argv[1:], "size": size()})
    signal.signal(signal.SIGWINCH, lambda *_: note({"pid": os.getpid(), "resize": size()}))
    while True:
        try:
            data = os.read(0, 65536)
        except InterruptedError:
            continue
        except OSError:
            return 129  # the terminal hung up
        if not data:
            return 0
        write(data)
        text = data.decode("utf-8", "replace")
        if ended := re.fullmatch(r"exit (\d+)\r", text):
            return int(ended[1])
        if flood := re.fullmatch(r"flood (\d+)\r", text):
            left = int(flood[1])
            while left:
                chunk = min(left, FLOOD_CHUNK)
                write(b"y" * chunk)
                left -= chunk


if __name__ == "__main__":
    sys.exit(main())
