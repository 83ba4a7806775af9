"""Every relative link in the repository's Markdown files and every `docs/….md` cited in code or
documents resolves to a file in the repository, and every citation of a section by its heading
(`BENCHMARKS.md "Digits quickstart"`, `README 'What works'`, `docs/evaluation.md "FID"`) names a
heading that file has (issue 30 §3): a clone never sends a reader to a document or section it does
not have. Reads text only."""
import os
import re

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SKIP_DIRS = {".git", ".venv", "node_modules", "__pycache__", "runs", ".jax_test_cache"}
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
DOC_CITATION = re.compile(r"(?<![\w/.])docs/[\w./-]+\.md")
# A document named (README, README.md or any path ending in .md), then optional ',' or ':', space
# and '(', then a quoted heading; the quote may wrap onto the next line of a docstring or comment.
HEADING_CITATION = re.compile(
    r"(?<![\w/.-])(?P<doc>README(?:\.md)?|(?:[\w.-]+/)*[\w.-]+\.md)[,:]?[ \t]+\(?"
    r"(?:\"(?P<dq>[^\"\n]{1,160}(?:\n[^\"\n]{1,160})?)\"|'(?P<sq>[^'\n]{1,160}(?:\n[^'\n]{1,160})?)')")


def _files(suffixes):
  for root, dirs, files in os.walk(REPO):
    dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.startswith(".venv")]
    for f in files:
      if f.endswith(suffixes):
        yield os.path.join(root, f)


def test_relative_markdown_links_resolve():
  bad = []
  for path in _files((".md",)):
    text = open(path, encoding="utf-8").read()
    for link in LINK.findall(text):
      if re.match(r"[a-z][a-z0-9+.-]*:|#", link):  # URLs, mailto:, in-page anchors.
        continue
      target = os.path.normpath(os.path.join(os.path.dirname(path), link.split("#")[0]))
      if not os.path.exists(target):
        bad.append(f"{os.path.relpath(path, REPO)}: {link}")
  assert not bad, bad


def test_docs_citations_resolve():
  bad = []
  for path in _files((".py", ".md", ".sh", ".toml", ".cfg")):
    if os.path.abspath(path) == os.path.abspath(__file__):  # Its own examples of broken ones.
      continue
    text = open(path, encoding="utf-8", errors="replace").read()
    for cited in set(DOC_CITATION.findall(text)):
      if not os.path.exists(os.path.join(REPO, cited)):
        bad.append(f"{os.path.relpath(path, REPO)}: {cited}")
  assert not bad, bad


def _normal(text: str) -> str:
  """Heading text as compared: no backticks, a comment's '#' at a wrapped line's start dropped,
  runs of white space as one space."""
  text = re.sub(r"\n\s*#+\s*", " ", text.replace("`", ""))
  return " ".join(text.split())


def headings(path: str) -> list[str]:
  """The Markdown headings of the file at path, outside fenced code blocks, normalised."""
  out, fenced = [], False
  for line in open(path, encoding="utf-8"):
    if line.lstrip().startswith("```"):
      fenced = not fenced
    elif not fenced and (m := re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)):
      out.append(_normal(m.group(1)))
  return out


def missing_headings(text: str, root: str) -> list[str]:
  """Each `<doc> "<heading>"` citation in text whose document (README is root/README.md; other
  paths from root) does not exist or has no heading that starts with the quoted text."""
  bad = []
  for m in HEADING_CITATION.finditer(text):
    doc = "README.md" if m.group("doc") == "README" else m.group("doc")
    cited = _normal(m.group("dq") or m.group("sq"))
    path = os.path.join(root, doc)
    if not os.path.isfile(path):
      bad.append(f"{doc} (no such file) {cited!r}")
    elif not any(h.startswith(cited) for h in headings(path)):
      bad.append(f"{doc} has no heading {cited!r}")
  return bad


def test_cited_headings_exist():
  bad = []
  for path in _files((".py", ".md", ".sh", ".sbatch", ".toml", ".cfg", ".ini")):
    if os.path.abspath(path) == os.path.abspath(__file__):  # Its own examples of broken ones.
      continue
    text = open(path, encoding="utf-8", errors="replace").read()
    bad += [f"{os.path.relpath(path, REPO)}: {b}" for b in missing_headings(text, REPO)]
  assert not bad, bad


def test_no_citation_of_workspace_only_documents():
  """The developers' notes beside the checkout (../shared/docs, ../shared/seeds) are not part of
  a clone: code and documents cite the papers and official repositories instead."""
  pattern = re.compile(r"shared/(docs|seeds)/")
  bad = [os.path.relpath(p, REPO) for p in _files((".py", ".md"))
         if os.path.abspath(p) != os.path.abspath(__file__) and pattern.search(open(p, encoding="utf-8", errors="replace").read())]
  assert not bad, bad


def test_the_checks_see_a_broken_link_and_citation(tmp_path):
  # Built at run time, so that no scanner of this file reads them as citations.
  gone, missing = "docs" + "/nowhere.md", "docs" + "/missing_notes.md"
  text = f"see [the guide]({gone}) and {missing}"
  assert LINK.findall(text) == [gone]
  assert DOC_CITATION.findall(text) == [gone, missing]


def test_the_heading_check_sees_a_missing_heading(tmp_path):
  # Built at run time, so that no scanner of this file reads them as citations.
  q = chr(34)
  (tmp_path / "README.md").write_text("# Project\n## What works\n```\n## not a heading\n```\n")
  os.makedirs(tmp_path / "docs")
  (tmp_path / "docs" / "guide.md").write_text("# Guide\n### Running on a `TPU` pod\n")
  guide = "docs" + "/guide.md"
  good = (f"see README {q}What works{q}, {guide} ({q}Running on a TPU{q}) and {guide} 'Guide'; "
          f"see {guide}: {q}Running\n    # on a TPU pod{q}; README's own text; open({q}README.md{q}, {q}r{q})")
  assert missing_headings(good, str(tmp_path)) == []
  gone = "docs" + "/gone.md"
  bad = (f"README {q}What fails{q}, README 'not a heading', {guide} {q}Walking{q}, "
         f"{gone} {q}Guide{q}")
  assert missing_headings(bad, str(tmp_path)) == [
      "README.md has no heading 'What fails'", "README.md has no heading 'not a heading'",
      f"{guide} has no heading 'Walking'", f"{gone} (no such file) 'Guide'"]
