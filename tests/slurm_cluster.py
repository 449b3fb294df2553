"""A single-node Slurm cluster for tests: munged, slurmctld and slurmd on 127.0.0.1, state in a temporary folder.

`SlurmCluster(folder).start()` writes a slurm.conf, starts the daemons and waits until the node is idle;
`stop()` ends the daemons it started (by their pid files). `SlurmCluster.unavailable()` says why a cluster
cannot start here (not installed: run scripts/install-slurm; not root), or None."""
from __future__ import annotations

import os, shutil, signal, socket, subprocess, time
from pathlib import Path

SBIN = ('/usr/sbin', '/usr/bin', '/sbin', '/bin')


def _which(name: str) -> str | None:
    return shutil.which(name) or next((f"{d}/{name}" for d in SBIN if os.access(f"{d}/{name}", os.X_OK)), None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


class SlurmCluster:
    def __init__(self, folder, cpus: int | None = None, partition: str = 'debug'):
        self.dir = Path(folder); self.cpus = cpus or os.cpu_count() or 1; self.partition = partition
        self.host = socket.gethostname().split('.')[0]
        self.conf = self.dir / 'slurm.conf'
        self.env = {**os.environ, 'SLURM_CONF': str(self.conf)}
        self.started: list[Path] = []          # pid files of the daemons we started

    @staticmethod
    def unavailable() -> str | None:
        "Why a cluster cannot start here, or None."
        missing = [b for b in ('munged', 'slurmctld', 'slurmd', 'sbatch', 'sinfo') if not _which(b)]
        if missing: return f"Slurm not installed ({', '.join(missing)} missing; run scripts/install-slurm)"
        if os.geteuid() != 0: return 'the single-node Slurm test cluster runs slurmd as root; not root here'
        return None

    def write_conf(self) -> Path:
        for sub in ('state', 'spool', 'log'): (self.dir / sub).mkdir(parents=True, exist_ok=True)
        d = self.dir
        self.conf.write_text('\n'.join([
            'ClusterName=patchmixtest',
            f'SlurmctldHost={self.host}(127.0.0.1)',
            f'SlurmctldPort={_free_port()}', f'SlurmdPort={_free_port()}',
            'AuthType=auth/munge', 'CryptoType=crypto/munge', 'MpiDefault=none',
            'ProctrackType=proctrack/linuxproc', 'TaskPlugin=task/none',
            'SelectType=select/cons_tres', 'SelectTypeParameters=CR_Core',
            'ReturnToService=2', 'SchedulerType=sched/backfill', 'SlurmUser=root', 'SlurmdUser=root',
            f'StateSaveLocation={d / "state"}', f'SlurmdSpoolDir={d / "spool"}',
            f'SlurmctldPidFile={d / "slurmctld.pid"}', f'SlurmdPidFile={d / "slurmd.pid"}',
            f'SlurmctldLogFile={d / "log" / "slurmctld.log"}', f'SlurmdLogFile={d / "log" / "slurmd.log"}',
            'JobCompType=jobcomp/none', 'AccountingStorageType=accounting_storage/none',
            'JobAcctGatherType=jobacct_gather/none', 'InactiveLimit=0', 'KillWait=5', 'MinJobAge=300',
            'SlurmctldTimeout=30', 'SlurmdTimeout=30', 'Waittime=0',
            f'NodeName={self.host} NodeAddr=127.0.0.1 CPUs={self.cpus} State=UNKNOWN',
            f'PartitionName={self.partition} Nodes={self.host} Default=YES MaxTime=INFINITE State=UP',
        ]) + '\n')
        return self.conf

    def _munge(self) -> None:
        "munged must be running (one per machine; reused when already up)."
        if subprocess.run([_which('munge') or 'munge', '-n'], capture_output=True).returncode == 0 and \
           subprocess.run('munge -n | unmunge', shell=True, capture_output=True).returncode == 0:
            return
        key = Path('/etc/munge/munge.key')
        if not key.exists():
            key.parent.mkdir(parents=True, exist_ok=True)
            key.write_bytes(os.urandom(1024))
            shutil.chown(key, 'munge', 'munge'); key.chmod(0o400)
        Path('/run/munge').mkdir(parents=True, exist_ok=True); shutil.chown('/run/munge', 'munge', 'munge')
        subprocess.run(['runuser', '-u', 'munge', '--', _which('munged'), '--force'], check=True, capture_output=True)
        for _ in range(50):
            if subprocess.run('munge -n | unmunge', shell=True, capture_output=True).returncode == 0: return
            time.sleep(0.1)
        raise RuntimeError('munged did not start')

    def sh(self, *cmd, check=True) -> subprocess.CompletedProcess:
        return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=self.env, check=check)

    def start(self, timeout: float = 30) -> 'SlurmCluster':
        self.write_conf(); self._munge()
        for daemon, pid in (('slurmctld', 'slurmctld.pid'), ('slurmd', 'slurmd.pid')):
            r = subprocess.run([_which(daemon), '-f', str(self.conf)], capture_output=True, text=True, env=self.env)
            if r.returncode != 0: self.stop(); raise RuntimeError(f"{daemon} did not start: {r.stderr.strip()[-300:]}")
            self.started.append(self.dir / pid)
        t0 = time.time()
        while time.time() - t0 < timeout:
            r = self.sh('sinfo', '-h', '-o', '%t', check=False)
            if r.returncode == 0 and r.stdout.strip() in ('idle', 'mix', 'alloc'): return self
            time.sleep(0.3)
        log = (self.dir / 'log' / 'slurmctld.log').read_text()[-500:] if (self.dir / 'log' / 'slurmctld.log').exists() else ''
        self.stop()
        raise RuntimeError(f"the Slurm node did not come up within {timeout:.0f}s: {log}")

    def stop(self) -> None:
        for pidfile in reversed(self.started):
            try: pid = int(pidfile.read_text().split()[0])
            except (OSError, ValueError, IndexError): continue
            try: os.kill(pid, signal.SIGTERM)
            except ProcessLookupError: continue
            for _ in range(50):
                try: os.kill(pid, 0); time.sleep(0.1)
                except ProcessLookupError: break
        self.started = []
