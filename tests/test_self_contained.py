"""The suite runs in a plain clone: no test, benchmark or CI script reads beside the checkout."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# A sibling folder by name, or a path climbing out of the repository from a file in it.
OUTSIDE = re.compile(r"\.\./shared|shared/data|REPO\.parent\b|parents\[[2-9]\]"
                     r"|\.parent\.parent\.parent|__file__\)\.resolve\(\)\.parent\.parent\b")
ROOT_OF = re.compile(r"Path\(__file__\)\.resolve\(\)\.parents\[(\d)\]")


def reads_outside(path: Path, line: str) -> bool:
    """Whether `line` of `path` names something beside the checkout; `parents[N]` of a file N
    folders below the root is the root itself."""
    depth = len(path.relative_to(REPO).parts) - 1
    line = ROOT_OF.sub(lambda m: "ROOT" if int(m.group(1)) == depth else m.group(0), line)
    return bool(OUTSIDE.search(line))


def test_no_test_or_benchmark_reads_outside_the_repository():
    files = [p for folder in ("tests", "benchmarks", ".ci", "kaggle", "notebooks")
             for p in sorted((REPO / folder).rglob("*")) if p.is_file()
             and p.suffix in {".py", ".ipynb", ".sh", ".yaml", ""} and p != Path(__file__)]
    assert any(p.name == "conftest.py" for p in files)  # the scan sees the suite itself
    hits = [f"{p.relative_to(REPO)}:{i}: {line.strip()}"
            for p in files for i, line in enumerate(p.read_text(errors="replace").splitlines(), 1)
            if reads_outside(p, line)]
    assert not hits, "reads outside the checkout:\n" + "\n".join(hits)


def test_the_scan_catches_the_old_corpus_path():
    assert OUTSIDE.search('SHAKESPEARE = REPO.parent / "shared" / "data" / "x.txt"')
    assert OUTSIDE.search("open('../shared/data/tinyshakespeare.txt')")
    assert not OUTSIDE.search("REPO = Path(__file__).resolve().parents[1]")
    root = "REPO = Path(__file__).resolve().parents[2]"
    assert not reads_outside(REPO / "tests/sweep/x.py", root)
    assert reads_outside(REPO / "tests/x.py", root)
