"""Every relative link in the repository's Markdown files and every `docs/….md` cited in code or
documents resolves to a file in the repository (issue 30 §3): a clone never sends a reader to a
document it does not have. Reads text only."""
import os
import re

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SKIP_DIRS = {".git", ".venv", "node_modules", "__pycache__", "runs"}
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
DOC_CITATION = re.compile(r"(?<![\w/.])docs/[\w./-]+\.md")


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
