"""Runs the tools for the tests without paying their imports every time.

One process imports torch, mmengine, mmcv, mmdet and mmseg once, then for
each request forks a child that runs ``python SCRIPT ARGS`` as the command
line would (``runpy`` with ``__main__``, the script's folder first on
``sys.path``, its own working directory, environment and output file), and
reports its exit status. A child starts from the imports, not from any
earlier run: every run is as fresh as a new process for what the tools do.
mmvit3 is not imported here, so a stock tool still proves that a config's
``custom_imports`` alone brings it in. The server runs no torch operation,
so the children fork from a process without threads.

Protocol (one JSON object a line): request ``{"argv": [...], "cwd": ...,
"env": {...}, "out": PATH, "timeout": SECONDS}``, reply ``{"rc": N,
"timeout": BOOL}`` (``rc`` as ``subprocess`` gives it: minus the signal for
a run killed by one).
"""
import json
import os
import sys
import time


def run_child(request: dict) -> None:
    """In the forked child: run the tool and exit with its status."""
    import atexit
    import runpy
    import traceback
    fd = os.open(request['out'], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)  # not the server's requests
    os.setsid()  # its own process group: a timeout kills its workers too
    code = 0
    try:
        os.chdir(request['cwd'])
        os.environ.clear()
        os.environ.update(request['env'])
        sys.argv = list(request['argv'])
        sys.path[0] = os.path.dirname(os.path.abspath(sys.argv[0]))
        runpy.run_path(sys.argv[0], run_name='__main__')
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        if not isinstance(exit_.code, (int, type(None))):
            print(exit_.code, file=sys.stderr)
    except BaseException:  # what Python prints for an uncaught exception
        traceback.print_exc()
        code = 1
    try:
        atexit._run_exitfuncs()  # as a normal exit would (work-dir locks, logs)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def serve() -> None:
    import mmcv.ops  # noqa: F401
    import mmdet.apis  # noqa: F401
    import mmseg.apis  # noqa: F401
    import torch  # noqa: F401
    print(json.dumps({'ready': True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            run_child(request)
        deadline = time.monotonic() + request['timeout']
        timed_out = False
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                timed_out = True
                try:
                    os.killpg(pid, 9)
                except ProcessLookupError:
                    pass
                _, status = os.waitpid(pid, 0)
                break
            time.sleep(0.02)
        print(json.dumps({'rc': os.waitstatus_to_exitcode(status), 'timeout': timed_out}),
              flush=True)


if __name__ == '__main__':
    serve()
