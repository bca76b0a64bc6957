#!/usr/bin/env python3
"""Drive an interactive `ssh` through a real pseudo-terminal, like an engineer would.

    pty-session.py STEPS_JSON -- ssh ARGS...

STEPS_JSON is a list of steps run in order:
  {"send": "text"}            type text
  {"expect": "text"}          wait (up to 20 s) until the output so far contains text
  {"resize": [rows, cols]}    change the terminal size (TIOCSWINSZ + SIGWINCH, as a terminal does)
  {"sleep": seconds}
Prints everything the session wrote, then exits with ssh's exit code (124 on a timeout).
"""
import fcntl, json, os, pty, select, signal, struct, sys, termios, time

steps = json.loads(sys.argv[1])
argv = sys.argv[sys.argv.index("--") + 1:]
pid, fd = pty.fork()
if pid == 0:
    os.execvp(argv[0], argv)

output = b""

def set_size(rows, cols):
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

def pump(timeout):
    global output
    ready, _, _ = select.select([fd], [], [], timeout)
    if ready:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            return False
        if not chunk:
            return False
        output += chunk
    return True

set_size(24, 80)
for step in steps:
    if "send" in step:
        os.write(fd, step["send"].encode())
    elif "resize" in step:
        set_size(*step["resize"])
        os.kill(pid, signal.SIGWINCH)
    elif "sleep" in step:
        end = time.time() + step["sleep"]
        while time.time() < end:
            pump(0.05)
    elif "expect" in step:
        want = step["expect"].encode()
        end = time.time() + 20
        while want not in output:
            if time.time() > end or not pump(0.1):
                sys.stdout.write(output.decode(errors="replace"))
                sys.stdout.write(f"\n[pty-session] did not see {step['expect']!r}\n")
                os.kill(pid, signal.SIGKILL)
                sys.exit(124)
end = time.time() + 20
while time.time() < end and pump(0.1):
    pass
_, status = os.waitpid(pid, 0)
sys.stdout.write(output.decode(errors="replace"))
sys.exit(os.waitstatus_to_exitcode(status))
