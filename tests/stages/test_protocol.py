from stages.protocol import PROTOCOLS, dvc_command, main


def test_paper_protocol_command():
    command = dvc_command("paper", None, queue=False, name=None)
    assert command[:5] == ["dvc", "exp", "run", "--name", "paper"]
    assert "weights=imagenet" in command and "image_size=224" in command
    assert "datasets=[busi,rodrigues,ddti,salivary]" in command


def test_datasets_override_and_queue():
    command = dvc_command("paper", ["phantom"], queue=True, name="p1")
    assert "--queue" in command and "datasets=[phantom]" in command and "p1" in command


def test_demo_protocol_matches_params_yaml():
    from tests.conftest import default_params

    params = default_params()
    for key, value in PROTOCOLS["demo"].items():
        node = params
        for part in key.split("."):
            node = node[part]
        assert node == value, key


def test_dry_run_prints_and_runs_nothing(capsys):
    assert main(["paper", "--dry-run"]) == 0
    assert capsys.readouterr().out.startswith("dvc exp run --name paper")
