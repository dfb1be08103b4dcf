"""The command line answers --help without loading a framework."""

import subprocess
import sys

from tests.conftest import REPO

FRAMEWORKS = ("tensorflow", "keras")

# In a fresh interpreter: build the parser, format the help of every subcommand, name the frameworks loaded.
EVERY_HELP = """
import argparse, sys
from ultrasound_transfer.cli import parser

top = parser()
commands = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction)).choices
for name, sub in commands.items():
    assert sub.format_help().startswith(f"usage: ultrasound-transfer {name}"), name
top.format_help()
print(",".join(sorted(commands)))
print(",".join(m for m in sys.argv[1:] if m in sys.modules))
"""


def test_every_help_is_built_without_tensorflow_or_keras():
    done = subprocess.run([sys.executable, "-c", EVERY_HELP, *FRAMEWORKS], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    commands, loaded = done.stdout.splitlines()
    assert commands == "compare,explain,export,predict,protocol,sweep"
    assert loaded == "", f"building the parser imports {loaded}: import it inside the function that runs the command"


def test_the_framework_check_sees_a_framework_that_is_loaded():
    done = subprocess.run([sys.executable, "-c", "import json\n" + EVERY_HELP, "json"], cwd=REPO,
                          capture_output=True, text=True)
    assert done.stdout.splitlines()[-1] == "json"


def test_python_m_ultrasound_transfer_help_answers():
    done = subprocess.run([sys.executable, "-m", "ultrasound_transfer", "--help"], cwd=REPO, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: ultrasound-transfer ") and "protocol" in done.stdout
    assert done.stderr == ""


def test_the_export_formats_and_classifiers_offered_come_from_choices():
    from ultrasound_transfer.choices import CLASSIFIERS, EXPORT_FORMATS
    from ultrasound_transfer.cli import parser

    args = parser().parse_args(["export", "--dataset", "busi", "--model", "ResNet50"])
    assert args.formats == ",".join(EXPORT_FORMATS) == "keras,onnx"
    args = parser().parse_args(["compare", "--classifier", CLASSIFIERS[0]])
    assert args.classifier == "dense" and args.metric == "roc_auc"
