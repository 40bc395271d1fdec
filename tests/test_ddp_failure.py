"""A rank that fails under torchrun ends the job: its process exits at once with a non-zero code and torchrun stops
the other ranks. Before, the failed rank never exited: at interpreter exit ``multiprocessing`` SIGTERMs the DataLoader
workers and joins them, but the workers ignore SIGTERM (``engine.stop.worker_ignore_stop_signals``) and the
traceback keeps their loader alive, so the join waited forever while the other rank waited in a collective."""

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

# Run by torchrun in each rank: rank 1 fails at its second barrier (the first of the training loop, so the other
# rank is already waiting in it and the DataLoader workers are running), through the console entry point as
# `pvvae train` would.
RANK_SCRIPT = textwrap.dedent('''
    import os
    import sys

    from pvvae_cli.runtime import distributed

    rank = int(os.environ["RANK"])
    pids, out = sys.argv[1], sys.argv[2]
    with open(os.path.join(pids, f"rank{rank}.pid"), "w") as f:
        f.write(str(os.getpid()))
    real_barrier, calls = distributed.barrier, []


    def barrier(info):
        calls.append(1)
        if rank == 1 and len(calls) == 2:
            raise RuntimeError("injected failure on rank 1")
        real_barrier(info)


    distributed.barrier = barrier
    from pvvae_cli.cli.app import main

    sys.argv = ["pvvae", "train", "--preset", "tiny", "--data", "synthetic:mix", "--size", "32", "--frames", "5",
                "--batch-size", "1", "--steps", "3", "--workers", "2", "--val-clips", "1", "--device", "cpu",
                "--precision", "fp32", "--out", out, "--quiet"]
    main()
''')


def alive(pid: int) -> bool:
    """A process that exists and is not a zombie (exited, not yet reaped)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return "\nState:\tZ" not in status


def test_a_failing_rank_ends_the_torchrun_job(tmp_path):
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
           str(tmp_path), str(tmp_path / "run")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    t0 = time.monotonic()
    # torchrun in a session of its own; it starts each rank in another (with the rank's DataLoader workers): a hang is
    # cleaned up by killing these three process groups.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path,
                            start_new_session=True)
    try:
        # Returns once every process holding the output pipe is gone: torchrun, both ranks and their workers.
        output, _ = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        for group in [proc.pid] + [int(p.read_text()) for p in tmp_path.glob("rank*.pid")]:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
        output, _ = proc.communicate()
        hang = f"torchrun still running after 90 s: the failed rank did not end the job\n{output}"
        raise AssertionError(hang) from None
    elapsed = time.monotonic() - t0
    assert proc.returncode != 0, output
    assert "injected failure on rank 1" in output, output  # it failed for the planted reason, not another
    assert elapsed < 60, f"took {elapsed:.0f} s\n{output}"
    pids = [int((tmp_path / f"rank{r}.pid").read_text()) for r in (0, 1)]
    assert not any(alive(p) for p in pids), output


def test_a_failing_command_under_torchrun_exits_at_once(tmp_path):
    """Without a process group too: a usage error in a process that torchrun started exits with its code."""
    code = "import sys; from pvvae_cli.cli.app import main; sys.argv = ['pvvae', 'info', '--no-such-option']; main()"
    env = {**os.environ, "WORLD_SIZE": "2", "RANK": "1"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "No such option" in proc.stderr and "rank 1 of 2 failed (exit code 2)" in proc.stderr
