import subprocess

from ultrasound_transfer.outputs.provenance import code_revision


def git(*args, cwd):
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def test_the_revision_is_marked_uncommitted_for_changed_code_only_not_for_outputs_a_run_rewrites(tmp_path):
    git("init", "-q", cwd=tmp_path)
    for relative in ("ultrasound_transfer/module.py", "metrics/summary.json", "dvc.lock", "params.yaml"):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text("committed\n")
    git("add", ".", cwd=tmp_path)
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "start", cwd=tmp_path)
    commit = git("rev-parse", "HEAD", cwd=tmp_path)
    assert code_revision(tmp_path) == commit

    for output in ("metrics/summary.json", "dvc.lock", "params.yaml"):   # what dvc repro and dvc exp run rewrite
        (tmp_path / output).write_text("rewritten by a run\n")
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages" / "new.py").write_text("untracked\n")
    assert code_revision(tmp_path) == commit

    (tmp_path / "ultrasound_transfer/module.py").write_text("edited\n")
    assert code_revision(tmp_path) == commit + "+uncommitted"


def test_outside_git_the_revision_is_unknown(tmp_path):
    assert code_revision(tmp_path) == "unknown"              # pytest's folders are outside any repository
