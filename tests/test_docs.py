"""The docs cannot drift from the code: docs/configuration.md lists exactly the run config's keys with their
defaults, every relative link in README.md and docs/*.md resolves (anchors included), the README stays one screen
long, and it still holds the test commands that CI runs."""

import json
import pathlib
import re

from bitune_jax.train.run_record import flat_config
from experiments.configs import common

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
CONFIG_PAGE = ROOT / "docs" / "configuration.md"
README_MAX_LINES = 160
README_MAX_WIDTH = 120  # prose and tables; fenced code keeps commands verbatim (CI runs the README's)

# Pages the docs link to before they are written: a link to one passes while the page is absent, and is checked
# like any other once it exists.
PENDING = {"docs/architecture.md"}

FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.M | re.S)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"\[[^\]\n]*\]\(([^()\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)
URL_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def render(value) -> str:
    """A default as the page writes it: JSON, as `flat_config` gives it and `workdir/run.json` records it."""
    return json.dumps(value)


def cell(value) -> str:
    """A default as a table cell: rendered, with pipes escaped."""
    return f"`{render(value).replace('|', chr(92) + '|')}`"


def split_row(line: str) -> list[str]:
    """The cells of a markdown table row; `\\|` is a pipe inside a cell."""
    cells = re.split(r"(?<!\\)\|", line.strip())[1:-1]
    return [c.strip().replace("\\|", "|") for c in cells]


def key_rows(text: str) -> list[tuple[str, str, str]]:
    """`(key, default, meaning)` of every row of every `| key | default | meaning |` table, backticks removed."""
    rows, header = [], None
    for line in text.splitlines():
        if not line.startswith("|"):
            header = None
            continue
        cells = split_row(line)
        if header is None:
            header = cells
        elif header == ["key", "default", "meaning"] and not all(set(c) <= set("-: ") for c in cells):
            assert len(cells) == 3, f"{CONFIG_PAGE.name}: a key row needs 3 cells: {line}"
            key, default, meaning = cells
            rows.append((key.strip("`"), default.removeprefix("`").removesuffix("`"), meaning))
    return rows


def test_configuration_page_lists_every_key_with_its_default():
    flat = flat_config(common.base())  # read at test time: the page follows the config wherever it is defined
    rows = key_rows(CONFIG_PAGE.read_text())
    listed = [key for key, _, _ in rows]
    assert len(listed) == len(set(listed)), sorted(k for k in set(listed) if listed.count(k) > 1)

    missing = [f"| `{k}` | {cell(v)} | ... |" for k, v in flat.items() if k not in listed]
    stale = sorted(set(listed) - set(flat))
    assert not missing and not stale, (
        f"{CONFIG_PAGE.relative_to(ROOT)} is out of date with experiments.configs.common.base():\n"
        "add\n  " + "\n  ".join(missing) + "\nremove\n  " + "\n  ".join(stale)
    )
    wrong = [f"{k}: page {default}, base() {render(flat[k])}" for k, default, _ in rows if default != render(flat[k])]
    assert not wrong, "defaults differ:\n  " + "\n  ".join(wrong)
    assert all(meaning.strip() for _, _, meaning in rows), [key for key, _, meaning in rows if not meaning.strip()]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: pathlib.Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for heading in HEADING.findall(FENCE.sub("", path.read_text())):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def relative_links(text: str) -> list[str]:
    """Link targets outside code (fenced blocks and inline code spans), without URLs."""
    text = INLINE_CODE.sub("", FENCE.sub("", text))
    return [t for t in LINK.findall(text) if not URL_SCHEME.match(t)]


def test_relative_links_resolve():
    pages = [README, *sorted((ROOT / "docs").glob("*.md"))]
    broken = []
    for page in pages:
        for target in relative_links(page.read_text()):
            file, _, fragment = target.partition("#")
            resolved = (page.parent / file).resolve() if file else page
            rel = resolved.relative_to(ROOT).as_posix() if resolved.is_relative_to(ROOT) else str(resolved)
            if not resolved.exists():
                if rel not in PENDING:
                    broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif fragment and resolved.suffix == ".md" and fragment not in anchors(resolved):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no heading #{fragment})")
    assert not broken, "broken links:\n  " + "\n  ".join(broken)


def test_readme_is_one_screen():
    lines = README.read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail into docs/"
    outside_code = FENCE.sub("", README.read_text()).splitlines()
    wide = [line for line in outside_code if len(line) > README_MAX_WIDTH]
    assert not wide, wide


def test_readme_holds_the_commands_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    start = next(i for i, line in enumerate(ci) if "README's test commands, verbatim" in line) + 1
    commands = [line for line in ci[start:] if line.strip() and not line.startswith("#")]
    readme = README.read_text().splitlines()
    assert commands and all(c in readme for c in commands), commands


def test_the_parsers():
    table = r"""
| key | default | meaning |
| --- | --- | --- |
| `a.b` | `"x\|y"` | one \| two |

| k | v |
| - | - |
| c | d |
"""
    assert key_rows(table) == [("a.b", '"x|y"', "one | two")]
    assert slug("The papers' recipes on the authors' data") == "the-papers-recipes-on-the-authors-data"
    assert slug("`data.hf`") == "datahf"
    text = "see [a](x.md#y), `[b](nope.md)`, [c](https://e.org)\n```bash\n[d](nope.md)\n```\n"
    assert relative_links(text) == ["x.md#y"]


def test_every_test_the_docs_name_exists():
    """A guarantee that cites its test (`tests/x.py::test_name`) cites one that is there."""
    cited = 0
    for page in [README, *sorted((ROOT / "docs").glob("*.md"))]:
        for path, name in re.findall(r"(tests/[\w/]+\.py)::(\w+)", page.read_text()):
            cited += 1
            source = ROOT / path
            assert source.is_file(), f"{page.name} cites {path}, which does not exist"
            assert re.search(rf"^def {name}\(", source.read_text(), re.M), f"{page.name} cites {path}::{name}"
    assert cited
