"""A run names the code that ran it: WORKDIR/provenance.json, one record per launch."""
import subprocess

from effssl_jax import provenance


def _git(cwd, *args):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def test_code_version_names_the_commit_and_whether_it_was_changed(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "a.py").write_text("x = 1\n")
    _git(repo, "add", "a.py")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "a")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True,
                          text=True).stdout.strip()
    clean = provenance.code_version(str(repo))
    assert (clean["commit"], clean["dirty"]) == (head, False)
    assert clean["jax"] and clean["python"]
    (repo / "a.py").write_text("x = 2\n")
    assert provenance.code_version(str(repo))["dirty"] is True
    (repo / "b.py").write_text("")  # untracked files are not the code that ran
    (repo / "a.py").write_text("x = 1\n")
    assert provenance.code_version(str(repo))["dirty"] is False
    outside = tmp_path / "not_a_checkout"
    outside.mkdir()
    assert provenance.code_version(str(outside))["commit"] is None


def test_each_launch_appends_its_line(tmp_path):
    provenance.record(str(tmp_path), 0)
    provenance.record(str(tmp_path), 40)  # resumed
    lines = provenance.read(str(tmp_path))
    assert [line["start_step"] for line in lines] == [0, 40]
    assert lines[0]["commit"] == provenance.code_version()["commit"]


def test_a_run_records_its_launch(two_runs):
    for workdir in two_runs:
        (line,) = provenance.read(workdir)
        assert line["start_step"] == 0 and line["commit"] == provenance.code_version()["commit"]
