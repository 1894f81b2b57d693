"""Code, help text and docs cite the papers (and official code), never the project's internal working spec."""
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
INTERNAL = "SEED" + "-SPECS"  # spelt in two parts so this file does not match itself


def test_no_file_cites_the_internal_spec():
    files = [REPO / "README.md", *sorted((REPO / "src").rglob("*")), *sorted((REPO / "docs").rglob("*"))]
    texts = [p for p in files if p.is_file() and p.suffix in {".py", ".md", ".txt", ".yaml", ".yml", ".json",
                                                               ".html", ".js", ".css", ".toml", ".cfg", ""}]
    assert len(texts) > 50  # the scan really sees the package and the docs
    offenders = [f"{p.relative_to(REPO)}:{n}" for p in texts
                 for n, line in enumerate(p.read_text(errors="replace").splitlines(), 1) if INTERNAL in line]
    assert offenders == [], f"cite the paper and section instead: {', '.join(offenders[:10])}"
