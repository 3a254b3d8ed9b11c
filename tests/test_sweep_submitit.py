"""``ltrun sweep --launcher submitit-local|slurm``: every cell a submitit job running the cell's
``ltrun`` command, recorded as the local launcher records it. The SLURM job array is checked
under submitit's own mocked SLURM (``submitit.slurm.test_slurm.mocked_slurm``): the sweep submits
for real, the test plays the cluster (runs a job's pickle, or sets a job's state)."""

import contextlib
import csv
import json
import re
import shlex
import shutil
import signal
import sys
import threading
import time

import pytest

from ltcore.errors import ConfigError
from ltcore.testing import FAST, invoke_ltrun, mlflow_client


@pytest.fixture
def where(tmp_path):
    """``--output`` and ``--tracking-uri`` options in the test's folder, and the client."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    return ["--output", str(tmp_path / "out"), "--tracking-uri", uri], mlflow_client(uri)


def sweep_runs(client, sweep_id):
    """Cell key -> parent run of the sweep's cells, and the sweep's own record run."""
    experiment = client.get_experiment_by_name("ltcore").experiment_id
    tagged = client.search_runs([experiment], f"tags.`ltcore.sweep` = '{sweep_id}'")
    record = [r for r in tagged if r.data.tags.get("ltcore.kind") == "sweep"]
    cells = {r.data.tags["ltcore.sweep.cell"]: r for r in tagged
             if "mlflow.parentRunId" not in r.data.tags and r not in record}
    return cells, record


def test_submitit_local_cells_finish_as_tagged_runs_and_are_summarised(ltrun, tmp_path, where,
                                                                       tiny, monkeypatch):
    pytest.importorskip("submitit")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the cells' threads, whatever the cores
    options, client = where
    args = ["sweep", "--launcher", "submitit-local", "--seeds", "0,1", "--max-parallel", "2",
            "--sweep-id", "sl", *options, *tiny, *FAST]
    result = ltrun(*args)
    assert result.exit_code == 0, result.output + result.stderr
    assert "as submitit jobs on this machine, up to 2 at a time" in result.output
    for index, seed in ((1, 0), (2, 1)):
        assert re.search(rf"^\[{index}/2\] start  plugins=ce seed={seed}  \(log: ", result.output,
                         re.M)
        assert re.search(rf"^\[{index}/2\] done   plugins=ce seed={seed}: run [0-9a-f]{{32}} in ",
                         result.output, re.M)
    assert "sweep sl: 2 finished" in result.output
    assert "ltrun compare --sweep sl" in result.output

    cells, (record,) = sweep_runs(client, "sl")
    assert set(cells) == {"plugins=ce seed=0", "plugins=ce seed=1"}
    for key, run in cells.items():
        assert run.info.status == "FINISHED"
        assert run.data.tags["seed"] == key[-1] and "test/acc" in run.data.metrics
        assert run.data.metrics["axis/seed"] == float(key[-1])
    assert record.info.status == "FINISHED" and record.data.metrics["cells/finished"] == 2
    folder = tmp_path / "out" / "sweeps" / "sl"
    with open(folder / "summary.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["cell"], r["status"], r["run_id"]) for r in rows] == [
        (key, "FINISHED", cells[key].info.run_id) for key in ("plugins=ce seed=0",
                                                               "plugins=ce seed=1")]
    # the cell's log is the one the local launcher writes; submitit's files are beside it
    log = (folder / "cell-001.log").read_text()
    first = log.splitlines()[0]
    assert first.startswith("$ ltrun --plugin ce --epochs 1 ") and first.endswith(" --seed 1")
    assert re.search(r"^train 1/1  loss ", log, re.M)
    assert len(list((folder / "submitit").glob("*_result.pkl"))) == 2

    again = ltrun(*args)  # resumed: the finished cells are not submitted again
    assert again.exit_code == 0, again.stderr
    assert "0 to run, 2 already finished" in again.output and "sweep sl: 2 skipped" in again.output
    assert len(list((folder / "submitit").glob("*_result.pkl"))) == 2


def test_submitit_local_gives_each_running_cell_gpus_of_its_own(ltrun, tmp_path, where,
                                                                monkeypatch):
    pytest.importorskip("submitit")
    from submitit.core.utils import DelayedSubmission

    from ltcore.experiments.cluster import gpu_blocks

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "7,9,11")
    assert gpu_blocks(1) == ["7", "9", "11"] and gpu_blocks(2) == ["7,9"]
    with pytest.raises(ConfigError, match="--gpus-per-cell 4: this machine has 3 visible GPU"):
        gpu_blocks(4)
    options, client = where
    # cells that fail at once (no --data-dir): what matters is what each job was given
    result = ltrun("sweep", "--launcher", "submitit-local", "--seeds", "0,1", "--gpus-per-cell",
                   "1", "--max-parallel", "3", "--slurm-partition", "gpu", "--sweep-id", "sgpu",
                   *options, "--dataset", "imagefolder-lt", "--epochs", "1", *FAST)
    assert result.exit_code == 1, result.stderr
    assert "submitit-local ignores --slurm-partition" in result.output
    for seed in (0, 1):
        assert re.search(rf"^\[{seed + 1}/2\] FAILED plugins=ce seed={seed} \(exit 2\) after \d+ "
                         r"s: imagefolder-lt needs --data-dir", result.output, re.M)
    folder = tmp_path / "out" / "sweeps" / "sgpu" / "submitit"
    jobs = [DelayedSubmission.load(p).function for p in folder.glob("*_submitted.pkl")]
    assert sorted(job.env["CUDA_VISIBLE_DEVICES"] for job in jobs) == ["7", "9"]
    cells, _ = sweep_runs(client, "sgpu")
    assert {r.info.status for r in cells.values()} == {"FAILED"} and len(cells) == 2


@contextlib.contextmanager
def signal_handlers_kept():
    """submitit's job process installs its handlers; the test process keeps its own."""
    kept = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGCONT, signal.SIGUSR2)}
    try:
        yield
    finally:
        for sig, handler in kept.items():
            signal.signal(sig, handler)


class SweepThread(threading.Thread):
    """``ltrun ARGS`` in a thread: submitit runs a job's pickle in the main thread (signals)."""

    def __init__(self, args):
        super().__init__(daemon=True)
        self.args, self.code = args, None

    def run(self):
        self.code = invoke_ltrun(*self.args)

    def finish(self, limit_s=120):
        self.join(limit_s)
        assert not self.is_alive(), f"the sweep did not end within {limit_s} s"
        return self.code


def wait_for(condition, limit_s=60):
    deadline = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < deadline, "waited too long"
        time.sleep(0.1)


def submitted_jobs(folder, array_id, n):
    """The sbatch script of the array and the CellJob each of its ``n`` jobs runs."""
    from submitit.core.utils import DelayedSubmission, JobPaths

    script = JobPaths(folder, job_id=f"{array_id}_0").submission_file
    pickles = [JobPaths(folder, job_id=f"{array_id}_{i}").submitted_pickle for i in range(n)]
    wait_for(lambda: all(p.exists() for p in pickles))
    return script.read_text(), [DelayedSubmission.load(p).function for p in pickles]


def sbatch_lines(script):
    return {line.strip() for line in script.splitlines() if line.startswith("#SBATCH")}


def test_slurm_array_runs_each_cell_command_and_records_a_timed_out_job(ltrun, capsys, tmp_path,
                                                                        where, tiny, monkeypatch):
    pytest.importorskip("submitit")
    test_slurm = pytest.importorskip("submitit.slurm.test_slurm")
    from submitit.core import submission
    from submitit.slurm.slurm import SlurmJob

    monkeypatch.setattr(SlurmJob, "_results_timeout_s", 0)  # a job without result: at once
    monkeypatch.setenv("SUBMITIT_FOLDER", "")  # set by submitit's job process; restored
    options, client = where
    args = ["sweep", "--seeds", "0,1", "--max-parallel", "2", "--sweep-id", "sa", *options,
            *tiny, *FAST]
    dry = ltrun(*args, "--dry-run")
    assert dry.exit_code == 0, dry.stderr
    commands = [line.split(" ltrun ", 1)[1] for line in dry.output.strip().splitlines()]
    slurm = [*args[:1], "--launcher", "slurm", "--slurm-partition", "gpu", "--cpus-per-cell",
             "1", "--time-limit", "30", *args[1:]]
    folder = tmp_path / "out" / "sweeps" / "sa" / "submitit"
    with test_slurm.mocked_slurm() as cluster:
        sweep = SweepThread(slurm)
        sweep.start()
        script, jobs = submitted_jobs(folder, "12", 2)  # the mock's first job id is 12
        assert {"#SBATCH --array=0-1%2", "#SBATCH --partition=gpu", "#SBATCH --cpus-per-task=1",
                "#SBATCH --time=30", "#SBATCH --job-name=ltcore-sa", "#SBATCH --nodes=1",
                "#SBATCH --ntasks-per-node=1"} <= sbatch_lines(script)
        assert not any("gpus" in line for line in sbatch_lines(script))  # none requested
        for index, job in enumerate(jobs):
            assert shlex.join(job.args) == commands[index]
            assert job.command == [sys.executable, "-c", "from ltcore.cli import main; main()"]
            tags = json.loads(job.env["LTCORE_RUN_TAGS"])
            assert tags["ltcore.sweep"] == "sa" and tags["ltcore.sweep.index"] == str(index)
            assert job.log == str(tmp_path / "out" / "sweeps" / "sa" / f"cell-00{index}.log")
            assert job.env_defaults["OMP_NUM_THREADS"] == "1" and job.cwd == str(tmp_path)
        with cluster.job_context("12_0"), signal_handlers_kept():
            submission.process_job(folder)  # job 12_0 runs its cell
        cluster.set_job_state("12", "TIMEOUT", 2)  # job 12_1 ends without running
        code = sweep.finish()
    output = capsys.readouterr().out
    assert code == 1, output
    assert "as one SLURM job array, up to 2 at a time" in output
    assert f"submitted job 12 (2 cells); submitit files in {folder}" in output
    assert re.search(r"^\[1/2\] done   plugins=ce seed=0: run [0-9a-f]{32} ", output, re.M)
    assert re.search(r"^\[2/2\] FAILED plugins=ce seed=1 \(exit 1\) after \d+ s: submitit job "
                     r"12_1 ended TIMEOUT without a result \(submitit log: .*12_1_0_log\.err\)",
                     output, re.M)
    assert "sweep sa: 1 finished, 1 failed" in output

    cells, (record,) = sweep_runs(client, "sa")
    done, failed = cells["plugins=ce seed=0"], cells["plugins=ce seed=1"]
    assert done.info.status == "FINISHED" and "test/acc" in done.data.metrics
    assert done.data.metrics["axis/seed"] == 0.0
    assert failed.info.status == "FAILED" and failed.data.tags["ltcore.exit_code"] == "1"
    assert "ended TIMEOUT without a result" in failed.data.tags["ltcore.error"]
    assert record.data.metrics["cells/finished"] == 1 and record.data.metrics["cells/failed"] == 1
    assert (folder.parent / "cell-000.log").read_text().startswith(f"$ ltrun {commands[0]}\n")


def test_a_multi_gpu_cell_is_one_slurm_task_that_starts_its_ranks(tmp_path, capsys, where, tiny,
                                                                   monkeypatch):
    pytest.importorskip("submitit")
    test_slurm = pytest.importorskip("submitit.slurm.test_slurm")
    from submitit.slurm.slurm import SlurmJob

    monkeypatch.setattr(SlurmJob, "_results_timeout_s", 0)
    options, client = where
    args = ["sweep", "--launcher", "slurm", "--seeds", "0,1", "--nproc-per-cell", "2",
            "--gpus-per-cell", "2", "--cpus-per-cell", "8", "--time-limit", "90",
            "--array-parallelism", "1", "--slurm-partition", "p100", "--slurm-account", "vision",
            "--slurm-qos", "high", "--sweep-id", "sg", *options, *tiny, *FAST]
    folder = tmp_path / "out" / "sweeps" / "sg" / "submitit"
    with test_slurm.mocked_slurm() as cluster:
        sweep = SweepThread(args)
        sweep.start()
        script, jobs = submitted_jobs(folder, "12", 2)
        cluster.set_job_state("12", "CANCELLED", 2)
        code = sweep.finish()
    assert {"#SBATCH --array=0-1%1", "#SBATCH --partition=p100", "#SBATCH --gpus-per-node=2",
            "#SBATCH --cpus-per-task=8", "#SBATCH --time=90", "#SBATCH --account=vision",
            "#SBATCH --qos=high", "#SBATCH --nodes=1",
            "#SBATCH --ntasks-per-node=1"} <= sbatch_lines(script)  # one task: torchrun's
    assert "srun --unbuffered" in script
    for seed, job in enumerate(jobs):
        assert job.args[:4] == ["--nproc", "2", "--plugin", "ce"]
        assert job.args[-2:] == ["--seed", str(seed)]
        assert job.env_defaults["OMP_NUM_THREADS"] == "4"  # 8 CPUs over 2 ranks
    output = capsys.readouterr().out
    assert code == 1 and "sweep sg: 2 failed" in output
    cancelled = re.findall(r"^\[\d/2\] FAILED plugins=ce seed=\d \(exit 1\) after \d+ s: "
                           r"submitit job 12_\d ended CANCELLED without a result", output, re.M)
    assert len(cancelled) == 2
    cells, _ = sweep_runs(client, "sg")
    assert {k: r.info.status for k, r in cells.items()} == {"plugins=ce seed=0": "FAILED",
                                                           "plugins=ce seed=1": "FAILED"}
    assert cells["plugins=ce seed=0"].data.params["ltrun.args"].startswith(
        "--nproc 2 --plugin ce --epochs 1 ")


def test_options_that_do_not_go_with_the_launcher_are_refused(ltrun, tmp_path, monkeypatch):
    refused = {
        ("--launcher", "slurm", "--in-process"):
            "--in-process cannot be combined with --launcher slurm",
        ("--launcher", "submitit-local", "--devices", "cuda:0,cuda:1"):
            "--devices does not apply to --launcher submitit-local",
        ("--slurm-partition", "gpu", "--gpus-per-cell", "1"):
            "--slurm-partition, --gpus-per-cell only apply to --launcher submitit-local or",
        ("--in-process", "--nproc-per-cell", "2"):
            "--nproc-per-cell cannot be combined with --in-process",
    }
    for options, message in refused.items():
        result = ltrun("sweep", "--seeds", "0", *options, "--epochs", "1")
        assert result.exit_code == 2 and message in result.stderr, (options, result.stderr)
    dry = ltrun("sweep", "--seeds", "0,1", "--nproc-per-cell", "2", "--dry-run", "--epochs", "1")
    assert dry.exit_code == 0, dry.stderr
    assert dry.output.splitlines()[0].startswith("[0] ltrun --nproc 2 --plugin ce --epochs 1 ")

    monkeypatch.setitem(sys.modules, "submitit", None)  # as if it were not installed
    missing = ltrun("sweep", "--launcher", "submitit-local", "--seeds", "0", "--epochs", "1")
    assert missing.exit_code == 2 and "pip install ltcore[slurm]" in missing.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.skipif(shutil.which("srun") is not None, reason="this machine is a SLURM node")
def test_slurm_launcher_off_a_cluster_says_what_to_do(ltrun, tmp_path):
    pytest.importorskip("submitit")
    result = ltrun("sweep", "--launcher", "slurm", "--seeds", "0", "--epochs", "1",
                   "--output", str(tmp_path / "out"))
    assert result.exit_code == 2
    assert 'Could not detect "srun"' in result.stderr
    assert "--launcher submitit-local" in result.stderr
