"""Run untrusted generated code and say whether its tests passed.

A program (solution + tests) runs in a fresh ``python -I`` process (no user site, no
``PYTHON*`` variables, the script's directory not on the path) in an empty temporary directory,
with a stripped environment, its own session (the whole process group is killed on timeout) and
``setrlimit`` caps on CPU time, address space, file size and open files. Before the program
runs, a guard replaces the socket constructors and resolvers and the process-spawning calls
(``os.system``, ``subprocess``, ``fork``, ``exec*``, ``kill``) with functions that raise, so a
completion cannot reach the network or the host by accident.

The verdict never trusts the program's output: the parent sends a random token on stdin, which
the harness reads before the program starts and prints only after the program has run to its
end without an exception; ``sys.exit(0)``, ``os._exit(0)``, a printed "passed" or a swallowed
failure of the harness all count as failures. Like human-eval's own guard this protects against
accidents of generated code, not against code written to escape; run evaluations of untrusted
models in a container or VM as well.
"""

from __future__ import annotations

import math
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

__all__ = ["ExecResult", "run_program", "run_programs", "pass_at_k"]

# The harness the child runs. It reads the token first (so the program cannot read it from
# stdin), sets its own resource limits (here rather than in a preexec_fn, which is unsafe when
# run_programs' threads start children), applies the guard, runs the program in a fresh namespace, and prints the token only if
# the program ran to its end.
_HARNESS = r'''
import sys
_token = sys.stdin.readline().strip()
sys.stdin.close()

def _refuse(*args, **kwargs):
    raise OSError("disabled in the paradecode sandbox")

def _guard():
    import os, socket, subprocess, shutil
    for name in ("socket", "create_connection", "create_server", "socketpair", "fromfd",
                 "getaddrinfo", "gethostbyname", "gethostbyname_ex", "gethostbyaddr"):
        if hasattr(socket, name):
            setattr(socket, name, _refuse)
    try:
        import _socket
        _socket.socket = _refuse
        _socket.getaddrinfo = _refuse
    except ImportError:
        pass
    for name in ("system", "popen", "fork", "forkpty", "kill", "killpg", "execv", "execve",
                 "execvp", "execvpe", "execl", "execle", "execlp", "execlpe", "spawnv", "spawnve",
                 "spawnvp", "spawnvpe", "posix_spawn", "posix_spawnp", "putenv", "setuid", "chroot"):
        if hasattr(os, name):
            setattr(os, name, _refuse)
    subprocess.Popen = _refuse
    shutil.rmtree = _refuse

def _limit(cpu, memory, file_size):
    import resource
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    if memory:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_FSIZE, (file_size, file_size))
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

def _main():
    path = sys.argv[1]
    _limit(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
    with open(path, encoding="utf-8") as f:
        source = f.read()
    code = compile(source, "solution.py", "exec")
    _guard()
    namespace = {"__name__": "__main__", "__builtins__": __builtins__}
    try:
        exec(code, namespace)
    except BaseException as e:  # SystemExit and KeyboardInterrupt too: the tests did not finish
        sys.stdout.flush()
        sys.stderr.write("program failed: %s: %s\n" % (type(e).__name__, e))
        sys.stderr.flush()
        return
    sys.stdout.flush()
    sys.stdout.write("\n" + _token + "\n")
    sys.stdout.flush()

_main()
'''

_OUTPUT_LIMIT = 1 << 20  # bytes of stdout/stderr read back; more is cut (the file cap is larger)


@dataclass(frozen=True)
class ExecResult:
    """``passed``; ``status`` one of ``passed`` / ``failed`` / ``timeout``; the tail of stderr
    (why it failed) and the run's wall seconds."""

    passed: bool
    status: str
    stderr: str = ""
    seconds: float = 0.0


def _tail(path: Path, limit: int = _OUTPUT_LIMIT) -> str:
    size = path.stat().st_size
    with path.open("rb") as f:
        if size > limit:
            f.seek(size - limit)
        return f.read().decode("utf-8", errors="replace")


def run_program(program: str, timeout: float = 10.0, memory_mb: Optional[int] = 2048,
                max_output_mb: int = 16) -> ExecResult:
    """Run ``program`` (a whole Python module: solution then tests) in the sandbox described in
    the module docstring; it passes when it runs to its end within ``timeout`` wall seconds."""
    if timeout <= 0:
        raise ValueError(f"timeout must be positive, got {timeout}.")
    token = secrets.token_hex(16)
    cpu = max(1, math.ceil(timeout)) + 1
    mem = memory_mb * (1 << 20) if memory_mb else None
    env = {"PATH": os.defpath, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "PYTHONHASHSEED": "0"}
    with tempfile.TemporaryDirectory(prefix="paradecode-exec-") as tmp:
        work = Path(tmp)
        (work / "solution.py").write_text(program, encoding="utf-8")
        (work / "harness.py").write_text(_HARNESS, encoding="utf-8")
        out, err = work / "stdout", work / "stderr"
        t0 = time.perf_counter()
        with out.open("wb") as fo, err.open("wb") as fe:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-B", str(work / "harness.py"), str(work / "solution.py"),
                 str(cpu), str(mem or 0), str(max_output_mb << 20)],
                stdin=subprocess.PIPE, stdout=fo, stderr=fe, cwd=tmp, env=env, start_new_session=True,
                close_fds=True,
            )
            status = None
            try:
                assert proc.stdin is not None
                proc.stdin.write((token + "\n").encode())
                proc.stdin.close()
            except (BrokenPipeError, OSError):
                pass
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                status = "timeout"
            finally:
                try:  # the program's children too (its session is its own)
                    os.killpg(proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                proc.wait()
        seconds = time.perf_counter() - t0
        stdout, stderr = _tail(out), _tail(err, 4000)
    if status == "timeout":
        return ExecResult(False, "timeout", stderr, seconds)
    lines = stdout.rstrip("\n").splitlines()
    passed = proc.returncode == 0 and bool(lines) and lines[-1] == token
    return ExecResult(passed, "passed" if passed else "failed", stderr, seconds)


def run_programs(programs: Sequence[str], timeout: float = 10.0, workers: Optional[int] = None,
                 memory_mb: Optional[int] = 2048) -> list[ExecResult]:
    """:func:`run_program` over many programs, ``workers`` at a time (threads that wait on child
    processes; default: the CPU count), results in input order."""
    workers = workers or min(len(programs) or 1, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda p: run_program(p, timeout=timeout, memory_mb=memory_mb), programs))


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased pass@k estimate from ``n`` samples of which ``c`` passed (Chen et al. 2021):
    1 - C(n-c, k) / C(n, k), computed as a product to stay exact for large n."""
    if not 0 <= c <= n or k < 1 or k > n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n; got n={n}, c={c}, k={k}.")
    if n - c < k:
        return 1.0
    fail = 1.0
    for i in range(n - c + 1, n + 1):
        fail *= 1.0 - k / i
    return 1.0 - fail
