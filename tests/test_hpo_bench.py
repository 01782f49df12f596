"""The HPO bench's tables, read back from the runs several bench invocations saved (a bench
that spans sessions is judged on the seeds every method ran, paired by seed)."""

import json

import pytest

import benches


def _run(problem, method, seed, best, seen):
    return {"problem": problem, "method": method, "seed": seed, "best": best, "evals": 72, "budget": 72,
            "trials": 10, "wall": 600.0, "key": "fd_lenet2k", "seen": seen}


def test_the_report_pairs_saved_runs_by_seed_across_files(tmp_path):
    bench = benches.load("hpo_efficiency")
    watch = {5: 10.0, 6: 20.0, 7: 30.0, 8: 40.0, 9: 50.0}
    asha = {5: 20.0, 6: 40.0, 7: 60.0, 8: 80.0, 9: 100.0}
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    # the second file holds seeds 8-9, ASHA's seed 9 saved twice (the later one counts), and a
    # watch seed ASHA never ran (left out of the pairing)
    first.write_text("".join(json.dumps(_run("mnist-small", m, s, v[s], [2 * v[s], v[s]])) + "\n"
                             for s in (5, 6, 7) for m, v in (("watch", watch), ("asha", asha))))
    second.write_text("\n".join(json.dumps(r) for r in [
        _run("mnist-small", "asha", 9, 999.0, [999.0]), _run("mnist-small", "watch", 8, 40.0, [40.0]),
        _run("mnist-small", "asha", 8, 80.0, [90.0, 80.0]), _run("mnist-small", "watch", 9, 50.0, [50.0]),
        _run("mnist-small", "asha", 9, 100.0, [100.0]), _run("mnist-small", "watch", 11, 1.0, [1.0])]) + "\n")

    out = bench.report([str(first), str(second)])

    assert "seeds [5, 6, 7, 8, 9]" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines()
            if line.startswith(("watch ", "asha ")) and "ratio" not in line}
    # median, IQR (inclusive quartiles), range
    assert rows["watch"][1:8] == ["30", "20", "-", "40", "10", "-", "50"]
    assert rows["asha"][1:8] == ["60", "40", "-", "80", "20", "-", "100"]
    assert "per seed: 10, 20, 30, 40, 50" in out and "per seed: 20, 40, 60, 80, 100" in out
    # every seed halves ASHA's distance: ratio 0.5 and the smallest two-sided p five seeds allow
    paired = next(line for line in out.splitlines() if line.startswith("watch    ratio"))
    assert paired.split()[2] == "0.500" and float(paired.split()[4]) == pytest.approx(0.0625)
    # watch first saw ASHA's best at its first evaluation, where ASHA needed two (seed 5)
    compute = out.splitlines()[out.splitlines().index(paired) + 1]
    assert "per seed: 0.50, 0.50, 0.50, 0.50, 1.00" in compute
