"""Every results file describes the code as it is: written by its benchmark at today's timed code."""

import ast
from pathlib import Path

import pytest

from benchmarks.results import RESULTS_DIR, cpu_description, provenance, recorded_timed_code, timed_code, timed_files
from ultrasound_transfer.source_files import code_fingerprint

RESULTS = sorted(RESULTS_DIR.glob("*.md"))


@pytest.mark.parametrize("markdown", RESULTS, ids=[path.stem for path in RESULTS])
def test_each_results_file_was_measured_at_the_code_it_times_today(markdown):
    recorded = recorded_timed_code(markdown)
    assert recorded is not None, f"{markdown} does not say which code it timed; rerun its benchmark or remove it"
    benchmark, fingerprint = recorded
    assert fingerprint == timed_code(benchmark), (
        f"{markdown} was measured on code that has changed since ({fingerprint}); rerun python -m benchmarks."
        f"{benchmark}, or remove the file and the docs' includes of it")


def test_the_fingerprint_follows_code_not_prose(tmp_path):
    module = tmp_path / "m.py"
    module.write_text('"""Doc."""\n\ndef f(x):\n    """Says what f does."""\n    return x + 1  # a comment\n')
    before = code_fingerprint([Path("m.py")], root=tmp_path)
    module.write_text('"""Other doc."""\n\n\ndef f(x):\n    """Says it better."""\n    return x + 1\n')
    assert code_fingerprint([Path("m.py")], root=tmp_path) == before
    module.write_text('"""Doc."""\n\ndef f(x):\n    return x + 2\n')
    assert code_fingerprint([Path("m.py")], root=tmp_path) != before


def test_a_benchmark_that_runs_a_stage_in_another_process_counts_that_stages_code():
    # backends runs stages.finetune in subprocesses (its RUNS): the stage's code is timed though not imported.
    tree = ast.parse(Path("benchmarks/backends.py").read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert not any(module.startswith("stages") for module in imported)
    files = {str(path) for path in timed_files("backends")}
    assert "stages/finetune.py" in files and "ultrasound_transfer/networks/fitting.py" in files
    assert "benchmarks/results.py" not in files


def test_the_provenance_names_the_processor_and_its_matrix_instructions(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx512f avx512_bf16 sse2\n\n"
                       "processor\t: 1\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx512f avx512_bf16 sse2\n")
    assert cpu_description(cpuinfo) == "AMD EPYC; AVX-512, AVX-512 BF16, no AMX"
    cpuinfo.write_text("model name\t: Intel(R) Xeon(R) Platinum 8480+\nflags\t\t: avx512f avx512_bf16 amx_bf16\n")
    assert cpu_description(cpuinfo) == "Intel(R) Xeon(R) Platinum 8480+; AVX-512, AVX-512 BF16, AMX"
    assert cpu_description(tmp_path / "absent") == ""
    # The line each results file starts with carries this machine's description.
    assert f"CPU ({cpu_description()})" in provenance("heap") or not cpu_description()
