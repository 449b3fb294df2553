"""Shared fixtures: a single-node Slurm cluster (tests/slurm_cluster.py), skipped with the reason where it cannot start;
`once`, a folder made once per test session even when pytest-xdist runs the tests on several workers; and the order
in which `--dist loadfile` deals the files out (scripts/test runs the suite that way).

Most of the suite's wall time is waiting (interpreters and kernels starting, sweeps polling, Slurm scheduling), so
the tests run on more workers than cores. A file's tests stay together on one worker (its module-scoped fixtures are
built once); the tests that use the Slurm cluster are one file, tests/test_slurm.py, so one worker starts one
cluster. (`--dist loadgroup` would be finer, but pytest 9.2 no longer lets pytest-xdist 3.8 tag the test ids with
their group, so it silently deals tests out one by one.)"""
import os
from pathlib import Path

import pytest
from filelock import FileLock

from slurm_cluster import SlurmCluster


@pytest.fixture(scope='session')
def slurm_cluster(tmp_path_factory):
    "A running Slurm cluster on 127.0.0.1 (SLURM_CONF exported while it runs); stopped at teardown."
    why = SlurmCluster.unavailable()
    if why: pytest.skip(why)
    c = SlurmCluster(tmp_path_factory.mktemp('slurm'))
    try:
        c.start()
    except Exception as e:
        pytest.skip(f"Slurm test cluster could not start: {e}")
    old = os.environ.get('SLURM_CONF')
    os.environ['SLURM_CONF'] = str(c.conf)
    yield c
    c.stop()
    if old is None: os.environ.pop('SLURM_CONF', None)
    else: os.environ['SLURM_CONF'] = old


# the longest files first, so that no long file starts last (measured: `pytest --durations`)
LONG = ('test_slurm', 'test_sweep', 'test_train', 'test_tracking', 'test_cli', 'test_package', 'test_ddp', 'test_preempt')


def pytest_collection_modifyitems(config, items):
    "The long files first (the same order on every worker; pytest-xdist's --dist loadfile deals files in this order)."
    rank = {g: i for i, g in enumerate(LONG)}
    items.sort(key=lambda it: rank.get(Path(str(it.fspath)).stem, len(LONG)))    # stable: the order within a file kept


@pytest.fixture(scope='session')
def once(tmp_path_factory):
    """`once(name, make)`: the folder `name`, made by `make(folder)` by whichever worker asks first; the others wait
    for it and reuse it (pytest-xdist's recipe for session data: a lock in the folder all workers share)."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get('PYTEST_XDIST_WORKER'): root = root.parent      # the workers' common folder
    def get(name: str, make) -> Path:
        d = root / f'once-{name}'
        with FileLock(str(d) + '.lock'):
            if not (d / '.done').exists():
                d.mkdir(parents=True, exist_ok=True)
                make(d)
                (d / '.done').touch()
        return d
    return get
