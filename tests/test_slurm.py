"""The workflow submitted to a real single-node Slurm through profiles/slurm (issue 6).

A session fixture stands the cluster up with tests/slurm/slurm_up.sh (Debian packages
slurm-wlm, slurmdbd, mariadb-server, munge; docs/design.md, Clusters) and always stops it with
tests/slurm/slurm_down.sh. Runs as root, in CI (`pytest -m slurm`) or with MTCXR_SLURM=1.

Two tests:
  * test_slurm_smoke: a generated 3-job workflow (rule names of the real GPU/CPU rules,
    so the profile's set-resources apply) -- proves cluster + plugin + profile alone.
  * test_workflow_on_slurm_matches_local: the real workflow on tests/configs/tiny.yaml
    through `snakemake --profile profiles/slurm`, then locally; every non-local job must
    be a COMPLETED Slurm job in sacct and results/metrics/summary.csv must be equal.

The test node is small (2 CPUs, no GPU), so the profile's resources are fitted to it by
command-line overrides computed from the profile itself (see slurm_overrides): CPUs and
memory are capped at the node's, `gpu` is kept when the node advertises gres/gpu
(slurm_up.sh adds one fake GPU, so `--gpus=1` is really scheduled) and set to 0
otherwise, gpu_model/qos/constraint are dropped, and the plugin's status checks are
shortened. Nothing in the plugin is patched.
"""

from __future__ import annotations

import csv
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SLURM_UP = REPO / "tests" / "slurm" / "slurm_up.sh"
SLURM_DOWN = REPO / "tests" / "slurm" / "slurm_down.sh"
PROFILE = REPO / "profiles" / "slurm"
SNAKEFILE = REPO / "Snakefile"
TINY_CONFIG = REPO / "tests" / "configs" / "tiny.yaml"


def declared_localrules(snakefile: Path) -> set[str]:
    """The rules a Snakefile lists under `localrules:` (they run on the submit host, never in Slurm)."""
    text = snakefile.read_text()
    block = re.search(r"^localrules:\s*\n?((?:[ \t]*[\w, ]+\n?)+)", text, flags=re.M)
    assert block, f"{snakefile} declares no localrules"
    return {name for name in re.split(r"[\s,]+", block.group(1)) if name}


# Rules with `gpu: 1` in the profile's set-resources.
GPU_RULES = {"train_head", "embed_images", "embed_texts", "train_xtra"}

# Shortened status checks, through the plugin's / Snakemake's own options:
#   --seconds-between-status-checks (Snakemake, default 10): the first wait;
#   --slurm-init-seconds-before-status-checks (plugin, default 40): the wait after a
#     check that saw a job finish; after a check that saw none, the plugin adds 10 s
#     (hard-coded, up to 180 s), so a wave of short jobs costs about 12 s.
STATUS_CHECK_ARGS = [
    "--seconds-between-status-checks",
    "1",
    "--slurm-init-seconds-before-status-checks",
    "1",
    "--slurm-status-attempts",
    "5",
]
SNAKEMAKE_TIMEOUT = 3600

pytestmark = pytest.mark.slurm


def _skip_reason() -> str | None:
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "needs root: installs Debian's Slurm/MariaDB/munge and starts their daemons"
    if not shutil.which("sinfo") and not shutil.which("apt-get"):
        return "Slurm is not installed and there is no apt-get to install it (Debian only)"
    return None


_REASON = _skip_reason()
if _REASON:
    pytestmark = [pytest.mark.slurm, pytest.mark.skip(reason=_REASON)]


def _snakemake() -> str:
    exe = Path(sys.executable).with_name("snakemake")
    return str(exe) if exe.exists() else (shutil.which("snakemake") or "snakemake")


def _run(cmd, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


@dataclass
class SlurmCluster:
    node: str
    partition: str
    cpus: int
    mem_mb: int
    gpus: int
    account: str
    state_dir: Path


def _read_cluster() -> SlurmCluster:
    out = _run(["sinfo", "-h", "-N", "-o", "%N|%P|%c|%m|%G"], check=True).stdout.split()
    node, partition, cpus, mem, gres = out[0].split("|")
    m = re.search(r"gpu(?::[^:,(]+)?:(\d+)", gres)
    return SlurmCluster(
        node=node,
        partition=partition.rstrip("*"),
        cpus=int(cpus),
        mem_mb=int(mem),
        gpus=int(m.group(1)) if m else 0,
        account=os.environ.get("MTCXR_SLURM_ACCOUNT", "mtcxr"),
        state_dir=Path(os.environ.get("MTCXR_SLURM_DIR", "/tmp/mtcxr-slurm")),
    )


@pytest.fixture(scope="session")
def slurm_cluster():
    """Start the single-node Slurm with slurm_up.sh; always stop it with slurm_down.sh."""
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        pytest.fail("snakemake-executor-plugin-slurm is not installed in this environment")
    try:
        t0 = time.monotonic()
        up = _run(["bash", str(SLURM_UP)], timeout=1800)
        print(up.stdout)
        if up.returncode != 0:
            pytest.fail(f"slurm_up.sh failed ({up.returncode}):\n{up.stdout}\n{up.stderr}")
        print(f"slurm_up.sh took {time.monotonic() - t0:.0f}s")
        yield _read_cluster()
    finally:
        down = _run(["bash", str(SLURM_DOWN)], timeout=300)
        print(down.stdout, down.stderr)


# --- fitting the profile to the test node ---------------------------------------------


def _fit(key: str, value, cluster: SlurmCluster):
    """The value of one resource on the test node; None drops it."""
    if key in ("gpu_model", "qos", "constraint", "slurm_extra"):
        return None  # site-specific: no such thing on the test node
    if key == "slurm_partition":
        return cluster.partition
    if key == "slurm_account":
        return cluster.account
    if key in ("cpus_per_task", "cpus_per_gpu") and isinstance(value, int):
        return min(value, cluster.cpus)
    if key == "mem_mb" and isinstance(value, int):
        return min(value, cluster.mem_mb // 2)
    if key in ("gpu", "gpus") and isinstance(value, int):
        return min(value, cluster.gpus)
    if key == "gres" and isinstance(value, str) and value.startswith("gpu") and not cluster.gpus:
        return None
    return value


def _fmt(value) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def slurm_overrides(cluster: SlurmCluster, profile: Path = PROFILE) -> list[str]:
    """Command-line arguments that fit profiles/slurm's resources to the test node.

    `--default-resources` and `--set-resources` on the command line replace the
    profile's lists, so every entry is restated here, fitted by _fit(). The account is
    always set (slurm_up.sh makes it): without it the plugin 2.8.0 tries to guess one
    with a broken `sacct ... | tail -1` call and submits without -A.
    """
    prof = yaml.safe_load((profile / "profile.yaml").read_text())
    defaults = dict(prof.get("default-resources") or {})
    defaults.setdefault("slurm_account", cluster.account)
    default_args = []
    for key, value in defaults.items():
        fitted = _fit(key, value, cluster)
        if fitted is not None:
            default_args.append(f"{key}={_fmt(fitted)}")
    set_args = []
    for rule, resources in (prof.get("set-resources") or {}).items():
        for key, value in (resources or {}).items():
            fitted = _fit(key, value, cluster)
            if fitted is not None:
                set_args.append(f"{rule}:{key}={_fmt(fitted)}")
    # rules that declare gpu=1 themselves but are not in the profile
    if not cluster.gpus:
        listed = {a.split(":")[0] for a in set_args if ":gpu=" in a}
        set_args += [f"{rule}:gpu=0" for rule in sorted(GPU_RULES - listed)]
    args = ["--default-resources", *default_args]
    if set_args:
        args += ["--set-resources", *set_args]
    # a rule's `threads` becomes --cpus-per-task when the profile sets none
    args += ["--max-threads", str(cluster.cpus)]
    return args + STATUS_CHECK_ARGS


# --- running and checking -----------------------------------------------------------


@dataclass
class SlurmRun:
    log: str
    run_uuid: str
    rule_of_job: dict[int, str]  # snakemake jobid -> rule, non-local jobs
    local_rules: set[str]
    slurm_ids: dict[int, str]  # snakemake jobid -> Slurm job id
    seconds: float


def run_on_slurm(cluster: SlurmCluster, cwd: Path, args: list[str], logdir: Path) -> SlurmRun:
    cmd = [
        _snakemake(),
        "--profile",
        str(PROFILE),
        *slurm_overrides(cluster),
        "--slurm-logdir",
        str(logdir),
        "--slurm-keep-successful-logs",
        *args,
    ]
    print("$", shlex.join(cmd))
    t0 = time.monotonic()
    proc = _run(cmd, cwd=cwd, timeout=SNAKEMAKE_TIMEOUT)
    seconds = time.monotonic() - t0
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"snakemake on Slurm failed ({proc.returncode}):\n{log[-8000:]}"
    m = re.search(r"SLURM run ID: (\S+)", log)
    assert m, f"no 'SLURM run ID' in the log: is the slurm executor in use?\n{log[-4000:]}"
    rule_of_job, local_rules = {}, set()
    for local, rule, jobid in re.findall(
        r"^(local)?rule (\S+):\n(?:[ \t]+\S.*\n)*?[ \t]+jobid: (\d+)", log, flags=re.M
    ):
        if local:
            local_rules.add(rule)
        else:
            rule_of_job[int(jobid)] = rule
    slurm_ids = {int(j): s for j, s in re.findall(r"Job (\d+) has been submitted with SLURM jobid (\d+)", log)}
    return SlurmRun(log, m.group(1), rule_of_job, local_rules, slurm_ids, seconds)


def sacct_rows(run_uuid: str) -> dict[str, dict[str, str]]:
    """sacct's rows for one run (the plugin names every job after the run's UUID)."""
    fields = ["JobIDRaw", "JobName", "Comment", "State", "ExitCode", "AllocTRES"]
    out = _run(
        [
            "sacct",
            "-X",
            "-n",
            "-P",
            "--name",
            run_uuid,
            "-S",
            "now-1days",
            "-E",
            "now",
            "--format=" + ",".join(f"{f}%300" for f in fields),
        ],
        check=True,
    ).stdout
    rows = [dict(zip(fields, line.split("|"))) for line in out.splitlines() if line.strip()]
    return {r["JobIDRaw"]: r for r in rows}


def check_ran_on_slurm(cluster: SlurmCluster, run: SlurmRun, localrules: set[str]) -> dict[str, dict[str, str]]:
    """Every non-local job is a COMPLETED Slurm job of this run; the workflow's `localrules` are not."""
    assert run.rule_of_job, "no job was submitted to Slurm"
    assert run.local_rules <= localrules, f"unexpected local rules {run.local_rules - localrules}"
    leaked = {r for r in run.rule_of_job.values() if r in localrules}
    assert not leaked, f"{leaked} ran as Slurm jobs: add them to `localrules:` in the workflow"
    assert set(run.slurm_ids) == set(run.rule_of_job), (
        f"jobs without a Slurm id: {set(run.rule_of_job) - set(run.slurm_ids)}"
    )
    rows = {}
    for _ in range(30):  # slurmdbd may lag a moment behind the final state
        rows = sacct_rows(run.run_uuid)
        if all(rows.get(s, {}).get("State") == "COMPLETED" for s in run.slurm_ids.values()):
            break
        time.sleep(1)
    for jobid, rule in sorted(run.rule_of_job.items()):
        sid = run.slurm_ids[jobid]
        assert sid in rows, f"Slurm job {sid} (rule {rule}) is not in sacct"
        row = rows[sid]
        assert row["State"] == "COMPLETED", f"Slurm job {sid} (rule {rule}): {row}"
        assert row["ExitCode"] == "0:0", row
        comment = row["Comment"]
        assert comment == f"rule_{rule}" or comment.startswith(f"rule_{rule}_wildcards_"), row
        if rule in GPU_RULES and cluster.gpus:
            assert "gres/gpu=1" in row["AllocTRES"], f"GPU rule {rule} got no GPU: {row}"
    extra = set(rows) - set(run.slurm_ids.values())
    assert not extra, f"Slurm jobs of this run snakemake did not submit: {extra}"
    return rows


# --- tests --------------------------------------------------------------------------

SMOKE_SNAKEFILE = textwrap.dedent(
    """
    localrules: all, summarize

    rule all:
        input: "out/summary.txt"

    rule ingest:
        output: "out/ingest.txt"
        threads: 1
        resources: mem_mb=500
        shell: "echo ingest $SLURM_JOB_ID > {output}"

    rule train_head:
        input: "out/ingest.txt"
        output: "out/train_head.txt"
        threads: 4
        resources: mem_mb=8000, gpu=1
        shell: "cat {input} > {output}; echo train_head $SLURM_JOB_ID gpus=${{SLURM_GPUS_ON_NODE:-0}} >> {output}"

    rule evaluate:
        input: "out/train_head.txt"
        output: "out/evaluate.txt"
        shell: "cat {input} > {output}; echo evaluate $SLURM_JOB_ID >> {output}"

    rule summarize:
        input: "out/evaluate.txt"
        output: "out/summary.txt"
        shell: "cat {input} > {output}; echo summarize ${{SLURM_JOB_ID:-local}} >> {output}"
    """
)


def test_slurm_smoke(slurm_cluster, tmp_path):
    """3 Slurm jobs + 1 local job of a generated workflow, through the repo's profile."""
    (tmp_path / "Snakefile").write_text(SMOKE_SNAKEFILE)
    run = run_on_slurm(slurm_cluster, tmp_path, [], tmp_path / "slurm_logs")
    print(f"3-job smoke workflow on Slurm: {run.seconds:.1f}s")
    rows = check_ran_on_slurm(slurm_cluster, run, {"all", "summarize"})
    assert sorted(run.rule_of_job.values()) == ["evaluate", "ingest", "train_head"]
    assert run.local_rules == {"all", "summarize"}
    lines = (tmp_path / "out" / "summary.txt").read_text().split("\n")
    ids = {line.split()[0]: line.split()[1] for line in lines if line.strip()}
    assert ids["summarize"] == "local"
    assert {ids[r] for r in ("ingest", "train_head", "evaluate")} == set(rows)


def _read_csv(path: Path) -> list[list[str]]:
    with path.open(newline="") as f:
        return list(csv.reader(f))


def _cells_equal(a: str, b: str) -> bool:
    if a == b:
        return True
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    except ValueError:
        return False


def test_workflow_on_slurm_matches_local(slurm_cluster, tmp_path):
    """The tiny study on Slurm: every non-local job in sacct, COMPLETED; same summary as locally."""
    assert SNAKEFILE.exists(), f"{SNAKEFILE} is missing"
    assert TINY_CONFIG.exists(), f"{TINY_CONFIG} is missing"
    common = ["--snakefile", str(SNAKEFILE), "--configfile", str(TINY_CONFIG)]
    slurm_results = tmp_path / "slurm_results"
    local_results = tmp_path / "local_results"

    # from the repo root, as a user runs it; every artifact goes under --config results=
    run = run_on_slurm(
        slurm_cluster,
        REPO,
        [*common, "--config", f"results={slurm_results}"],
        tmp_path / "slurm_logs",
    )
    print(f"workflow on Slurm: {len(run.rule_of_job)} Slurm jobs, {run.seconds:.0f}s")
    check_ran_on_slurm(slurm_cluster, run, declared_localrules(SNAKEFILE))

    local = _run(
        [_snakemake(), *common, "--cores", "2", "--config", f"results={local_results}"],
        cwd=REPO,
        timeout=SNAKEMAKE_TIMEOUT,
    )
    assert local.returncode == 0, f"local run failed:\n{(local.stdout + local.stderr)[-8000:]}"

    on_slurm = _read_csv(slurm_results / "metrics" / "summary.csv")
    on_host = _read_csv(local_results / "metrics" / "summary.csv")
    assert on_slurm[0] == on_host[0], "summary.csv headers differ"
    assert len(on_slurm) == len(on_host) > 1, "summary.csv row counts differ (or it is empty)"
    for row_s, row_l in zip(sorted(on_slurm[1:]), sorted(on_host[1:])):
        assert len(row_s) == len(row_l) and all(map(_cells_equal, row_s, row_l)), (
            f"summary.csv differs:\n  slurm: {row_s}\n  local: {row_l}"
        )
