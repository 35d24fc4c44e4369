"""The README's shell examples, run exactly as printed, offline, on a small dataset made by `brainfm simulate`.

Every command in a ```bash block of README.md is either run here (RUN) or skipped with its reason (SKIPPED). A new
README command that is in neither fails ``test_every_readme_command_is_run_or_skipped_for_a_reason``, and so does an
entry that no longer matches the README.

Each command runs with ``bash -o pipefail -c '<the README text>'`` in one workspace, so pipes, globs and line
continuations work as in a terminal; ``brainfm`` on its PATH is this test's interpreter. The only text substituted
is ``/data/`` → ``<workspace>/data/`` (a test cannot write to /data). Everything else the README takes for granted
is made in the workspace under the README's own names:

- ``sim/`` and ``sim/derivatives/brainfm``: the README's own ``brainfm simulate`` and ``brainfm parcellate`` commands,
  run first (6 participants, 5 min, 6 mm MNI images, Seitzman-300 region series);
- ``bids`` → ``sim`` and ``derivatives/brainfm`` → ``sim/derivatives/brainfm`` (symbolic links);
- ``runs/lm/model.safetensors`` + ``model.yaml``: a tiny randomly initialised BrainLM saved as ``pretrain`` saves its
  model (the README's ``pretrain`` trains the full-size model for 100 epochs: far too long for a test);
- ``held_out/``: a copy of one simulated participant's region series;
- ``data/ds000030/derivatives/fmriprep``: fMRIPrep-style derivatives of three simulated participants relabelled
  10159, 10171 and 10172 (the README filters two of them), with nilearn's fMRIPrep confounds file lengthened to
  the run;
- ``sub-*/func/*_bold.nii.gz`` (links to the simulated runs) and ``visual_cortex.nii.gz`` (a box of occipital
  voxels on the images' grid).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
PATH_MAP = {"/data/": "{workspace}/data/"}

# README command (its start, after joining continuation lines) -> why it is not run here.
SKIPPED = {
    "make demo": "creates the virtual environment and runs examples/demo.sh (30 participants), minutes",
    "make test": "runs this test suite",
    "brainfm embed sub-01_task-rest_bold.nii.gz --model brainlm-vitmae-111m": "needs the authors' published "
        "weights (vitmae_111M/) and the A424 atlas files, which are not on this machine",
    "brainfm pretrain derivatives/brainfm --model brainlm -o runs/lm --epochs 100 --batch-size 64 --resume":
        "resumes the 100-epoch run below",
    "brainfm pretrain derivatives/brainfm --model brainlm -o runs/lm --epochs 100": "trains the full-size BrainLM "
        "for 100 epochs: far too long for a test (tests/test_pretrain*.py run pretrain with tiny settings)",
    "brainfm pretrain derivatives/aal --model brainlm --atlas aal --size small": "trains on real AAL data "
        "(derivatives/aal), which tests never use",
    "torchrun --nproc_per_node 4": "needs four GPUs",
    "brainfm pretrain vox/ --model sc-mbm-voxels": "trains the full-size SC-MBM (its default schedule took 13 min "
        "on 6 simulated runs here)",
    "brainfm embed sub-01_task-rest_bold.nii.gz --model runs/scmbm/model.yaml": "needs the run folder of the "
        "SC-MBM pretrain above",
    "brainfm embed sub-01_task-rest_bold.nii.gz --model sc-mbm-mindvis": "needs the authors' fmri_encoder.pth",
    "brainfm forecast fit derivatives/brainfm": "fine-tunes for minutes (tests/test_forecast.py fits tiny models)",
    "brainfm forecast evaluate runs/fc": "needs the forecast run of the fit above; --untrained-baseline trains "
        "another (tests/test_forecast.py evaluates a tiny one)",
    "brainfm forecast predict runs/fc": "needs the forecast run of the fit above (tests/test_forecast.py)",
    "brainfm perturb derivatives/brainfm --model runs/fc": "needs the forecast run above (tests/test_perturb.py)",
    "brainfm perturb sim/derivatives/brainfm --model runs/fc": "needs the forecast run above (tests/test_perturb.py "
        "runs --all-networks on simulated data against its truth)",
    "brainfm perturb optimise rest/": "needs resting-state and task runs (tests/test_perturb.py uses two groups of "
        "simulated runs)",
}

# README command (its start) -> a check of what it wrote; run in this order, after the two simulate-block commands.
SIMULATE = ("brainfm simulate -o sim ", "brainfm parcellate sim -o sim/derivatives/brainfm")
RUN = ["brainfm models", "brainfm embed derivatives/brainfm --model brainlm --weights runs/lm/model.safetensors -o "
       "embeddings.tsv", "brainfm embed derivatives/brainfm --model brainlm --weights runs/lm/model.safetensors -o - "
       "| brainfm probe -", "brainfm reconstruct held_out/", "brainfm parcellate /data/ds000030/derivatives/fmriprep",
       "brainfm voxels sub-*/func/*_bold.nii.gz", "brainfm networks derivatives/brainfm"]


def readme_commands(text: str | None = None) -> list[str]:
    """The commands of every ```bash block as printed: a command's continuation lines (ending in a backslash) stay
    with it; blank lines and comment lines are left out."""
    text = README.read_text(encoding="utf-8") if text is None else text
    commands = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M):
        lines: list[str] = []
        for line in block.splitlines():
            if not lines and (not line.strip() or line.lstrip().startswith("#")):
                continue
            lines.append(line)
            if not line.endswith("\\"):
                commands.append("\n".join(lines))
                lines = []
    return commands


def _plain(command: str) -> str:
    """The command on one line, without its trailing comment, single-spaced: for matching, never for running."""
    return " ".join(re.sub(r"\\\n", " ", command).split("  #")[0].split())


def find(start: str, commands: list[str] | None = None) -> str:
    matches = [c for c in (commands or readme_commands()) if _plain(c).startswith(start)]
    assert len(matches) == 1, f"README commands starting with {start!r}: {matches}"
    return matches[0]


def test_commands_are_read_as_printed():
    text = ("text\n```bash\n# a comment\nbrainfm a x \\\n    --y 1   # why\n\nbrainfm b -o - \\\n  | brainfm c -\n```\n"
            "```python\nnot_bash()\n```\n")
    assert readme_commands(text) == ["brainfm a x \\\n    --y 1   # why", "brainfm b -o - \\\n  | brainfm c -"]
    assert [_plain(c) for c in readme_commands(text)] == ["brainfm a x --y 1", "brainfm b -o - | brainfm c -"]


def test_every_readme_command_is_run_or_skipped_for_a_reason():
    commands = readme_commands()
    assert len(commands) >= 15, "the README's ```bash blocks were not found"
    entries = [*SIMULATE, *RUN, *SKIPPED]
    for command in commands:
        owners = [e for e in entries if _plain(command).startswith(e)]
        # the longer start wins where one entry extends another (pretrain ... and pretrain ... --resume)
        assert owners, f"README command neither run nor skipped by tests/test_readme.py: {command}"
        assert len([o for o in owners if not any(p != o and p.startswith(o) for p in owners)]) == 1, owners
    for entry in entries:
        assert any(_plain(c).startswith(entry) for c in commands), f"no README command starts with {entry!r}"


def _bash(command: str, workspace: Path) -> subprocess.CompletedProcess:
    for old, new in PATH_MAP.items():
        command = command.replace(old, new.format(workspace=workspace))
    env = dict(os.environ, BRAINFM_OFFLINE="1", PATH=f"{workspace / '.bin'}{os.pathsep}{os.environ['PATH']}")
    return subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=workspace, env=env, capture_output=True,
                          text=True)


def _tiny_brainlm_run(folder: Path) -> None:
    """A pretrain-style run folder (model.safetensors + model.yaml) holding a tiny untrained BrainLM."""
    import torch
    import yaml

    from brainfm_cli.io.provenance import sha256sum
    from brainfm_cli.models import load

    from conftest import TINY

    torch.manual_seed(0)
    model = load("brainlm", pretrained=False, architecture=TINY["brainlm"])
    folder.mkdir(parents=True)
    path = model.save(folder / "model.safetensors")
    card = model.card.to_dict()
    card["weights"] = {"file": "model.safetensors", "sha256": sha256sum(path)}
    (folder / "model.yaml").write_text(yaml.safe_dump(card, sort_keys=False), encoding="utf-8")


def _fmriprep_from_simulation(sim: Path, root: Path, labels: dict[str, str]) -> None:
    """fMRIPrep-style derivatives of simulated runs: the images renamed, nilearn's real fMRIPrep confounds file
    (30 volumes, 3 non-steady) lengthened to the run with its own later rows."""
    import nibabel as nib

    from conftest import NILEARN_CONFOUNDS

    root.mkdir(parents=True)
    (root / "dataset_description.json").write_text(json.dumps(
        {"Name": "fMRIPrep", "DatasetType": "derivative", "GeneratedBy": [{"Name": "fMRIPrep"}]}))
    confounds = pd.read_csv(NILEARN_CONFOUNDS / "test-v21_desc-confounds_timeseries.tsv", sep="\t")
    steady = confounds.iloc[3:].reset_index(drop=True)
    steady[[c for c in confounds.columns if c.startswith("non_steady_state")]] = 0
    for source, label in labels.items():
        bold = sim / f"sub-{source}" / "func" / f"sub-{source}_task-rest_bold.nii.gz"
        n = nib.load(bold).shape[-1]
        func = root / f"sub-{label}" / "func"
        func.mkdir(parents=True)
        base = f"sub-{label}_task-rest"
        shutil.copy(bold, func / f"{base}_space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz")
        shutil.copy(bold.with_name(bold.name.replace(".nii.gz", ".json")),
                    func / f"{base}_space-MNI152NLin2009cAsym_desc-preproc_bold.json")
        rows = np.resize(np.arange(len(steady)), n - len(confounds))
        table = pd.concat([confounds, steady.iloc[rows]], ignore_index=True)
        table.to_csv(func / f"{base}_desc-confounds_timeseries.tsv", sep="\t", index=False, na_rep="n/a")
        shutil.copy(NILEARN_CONFOUNDS / "test-v21_desc-confounds_timeseries.json",
                    func / f"{base}_desc-confounds_timeseries.json")


def _occipital_mask(bold: Path, out: Path) -> None:
    import nibabel as nib

    img = nib.load(bold)
    ijk = np.indices(img.shape[:3]).reshape(3, -1).T
    x, y, z = (ijk @ img.affine[:3, :3].T + img.affine[:3, 3]).T
    inside = (y < -70) & (np.abs(x) < 30) & (z > -10) & (z < 30)
    nib.save(nib.Nifti1Image(inside.reshape(img.shape[:3]).astype(np.uint8), img.affine), out)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    ws = tmp_path_factory.mktemp("readme")
    (ws / ".bin").mkdir()
    shim = ws / ".bin" / "brainfm"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m brainfm_cli "$@"\n')
    shim.chmod(0o755)
    for start in SIMULATE:
        res = _bash(find(start), ws)
        assert res.returncode == 0, (start, res.stderr)
    (ws / "bids").symlink_to("sim")
    (ws / "derivatives").mkdir()
    (ws / "derivatives" / "brainfm").symlink_to(ws / "sim" / "derivatives" / "brainfm")
    _tiny_brainlm_run(ws / "runs" / "lm")
    shutil.copytree(ws / "sim" / "derivatives" / "brainfm" / "sub-06", ws / "held_out" / "sub-06")
    _fmriprep_from_simulation(ws / "sim", ws / "data" / "ds000030" / "derivatives" / "fmriprep",
                              {"01": "10159", "02": "10171", "03": "10172"})
    for sub in sorted((ws / "sim").glob("sub-*")):
        (ws / sub.name).symlink_to(sub)
    _occipital_mask(ws / "sub-01" / "func" / "sub-01_task-rest_bold.nii.gz", ws / "visual_cortex.nii.gz")
    return ws


def _check(start: str, ws: Path, res: subprocess.CompletedProcess) -> None:
    """What each README command should have left behind."""
    if start == "brainfm models":
        assert "brainlm-sim" in res.stdout
    elif start.endswith("-o embeddings.tsv"):
        emb = pd.read_csv(ws / "embeddings.tsv", sep="\t")
        assert len(emb) == 6 and json.loads((ws / "embeddings.json").read_text())["Model"] == "brainlm"
    elif "| brainfm probe -" in start:
        metrics = pd.read_csv(ws / "reports" / "age" / "metrics.tsv", sep="\t")
        assert "fc" in set(metrics.model) and metrics.model.nunique() == 2 and (metrics.n == 6).all()
    elif start.startswith("brainfm reconstruct"):
        metrics = pd.read_csv(ws / "reports" / "recon" / "metrics.tsv", sep="\t")
        assert {"model", "ridge"} <= set(metrics.method) and set(metrics.mask_ratio) == {0.2, 0.75}
    elif start.startswith("brainfm parcellate /data/"):
        written = sorted(p.name.split("_")[0] for p in (ws / "data" / "derivatives" / "brainfm").rglob("*.tsv"))
        assert written == ["sub-10159", "sub-10171"]  # --participant-label 10159 10171 leaves 10172 out
    elif start.startswith("brainfm voxels"):
        assert len(list((ws / "vox").glob("sub-*/func/*_timeseries.tsv"))) == 6
        assert (ws / "vox" / "voxels.tsv").is_file()
    elif start.startswith("brainfm networks"):
        table = pd.read_csv(ws / "reports" / "networks" / "accuracy.tsv", sep="\t")
        assert {"attention", "embedding", "raw"} <= set(table.feature)
    else:
        raise AssertionError(f"no check for {start}")


@pytest.mark.slow
def test_the_simulate_block_made_the_dataset(workspace):
    assert len(list(workspace.glob("sim/sub-*/func/*_bold.nii.gz"))) == 6
    assert len(list(workspace.glob("sim/derivatives/brainfm/sub-*/func/*_timeseries.tsv"))) == 6


@pytest.mark.slow
@pytest.mark.parametrize("start", RUN, ids=["models", "embed", "embed-pipe-probe", "reconstruct",
                                            "parcellate-fmriprep", "voxels", "networks"])
def test_readme_command_runs_as_printed(workspace, start):
    command = find(start)
    res = _bash(command, workspace)
    assert res.returncode == 0, f"{command}\n{res.stderr[-3000:]}"
    _check(start, workspace, res)
