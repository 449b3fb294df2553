"""`sweep --status` at scale: a grid of N runs (default 500) planned and submitted to the single-node test Slurm
cluster (tests/slurm_cluster.py) as one job array, held (`--hold`: nothing runs), then the status read and its squeue
calls counted. Before, every run's state asked squeue for its own jobs (N calls per status, 2N+1 per monitor poll);
now one `queue_snapshot` serves the whole sweep. The jobs are cancelled and the cluster stopped at the end.

    python bench/status.py [N]        # needs root and Slurm (scripts/install-slurm)
"""
import os, subprocess, sys, tempfile, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / 'tests'))
from slurm_cluster import SlurmCluster                                          # noqa: E402

from patchmix_nb import runs as R                                               # noqa: E402
from patchmix_nb.runs import RunFolder                                          # noqa: E402
from patchmix_nb.sweep import sweep, sweep_status                               # noqa: E402
from patchmix_nb.summary import summarize_sweep                                   # noqa: E402

N = int(sys.argv[1]) if len(sys.argv) > 1 else 500


def counted(f):
    "Run f() with squeue counted: (result, seconds, calls)."
    real, calls = R.squeue, []
    R.squeue = lambda ids: calls.append(len(ids)) or real(ids)
    try:
        t0 = time.perf_counter()
        out = f()
        return out, time.perf_counter() - t0, len(calls)
    finally:
        R.squeue = real


def main() -> None:
    why = SlurmCluster.unavailable()
    if why: sys.exit(f"bench/status.py: {why}")
    with tempfile.TemporaryDirectory() as tmp:
        cluster = SlurmCluster(Path(tmp) / 'slurm').start()
        os.environ['SLURM_CONF'] = str(cluster.conf)
        out, jobs = Path(tmp) / 'sweep', []
        try:
            t0 = time.perf_counter()
            sweep(out, grid=[f"seed={','.join(map(str, range(N)))}"], methods=['ce'], preset='smoke',
                  executor='slurm', slurm={'cpus_per_run': 1, 'time': 10, 'extra': {'hold': True}}, wait=False,
                  log=None)
            plan_submit = time.perf_counter() - t0
            jobs = sorted({(RunFolder(d).read('.job.json') or {}).get('job_id', '').split('_')[0]
                           for d in out.iterdir() if d.is_dir()} - {''})
            (runs, line), status_s, after = counted(lambda: sweep_status(out))
            dirs = [Path(r) for r in runs.run]
            _, before_s, before = counted(lambda: [RunFolder(d).state() for d in dirs])   # the former path: per run
            t0 = time.perf_counter()
            cli = subprocess.run([sys.executable, '-m', 'patchmix_nb', 'sweep', '--status', str(out)],
                                 capture_output=True, text=True, env=os.environ)
            cli_s = time.perf_counter() - t0
            groups = summarize_sweep(runs)
            print(f"{N} runs planned and submitted as Slurm array(s) {', '.join(jobs)} (held) in {plan_submit:.1f}s")
            print(f"sweep_status: {status_s:.2f}s, {after} squeue call(s) | {line}")
            print(f"states {dict(runs.status.value_counts())}; summary: {len(groups)} group(s)")
            print(f"former per-run states: {before_s:.2f}s, {before} squeue calls (a monitor poll: {2 * before + 1})")
            print(f"`patchmix sweep --status` (a new process, imports included): {cli_s:.2f}s, exit {cli.returncode}, "
                  f"last line: {cli.stdout.strip().splitlines()[-1] if cli.stdout.strip() else cli.stderr[-200:]}")
        finally:
            if jobs: cluster.sh('scancel', *jobs, check=False)
            cluster.stop()


if __name__ == '__main__':
    main()
