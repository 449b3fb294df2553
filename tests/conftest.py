"""Shared fixtures: a single-node Slurm cluster (tests/slurm_cluster.py), skipped with the reason where it cannot start."""
import os
import pytest

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
