"""The docs that list things by hand stay true: docs/design.md's table of contents names its
sections, and its layout lists every module and tool, each of which exists."""
import glob
import itertools
import os.path as osp
import re

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def read(path: str) -> str:
    with open(osp.join(ROOT, path)) as f:
        return f.read()


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to dashes."""
    return re.sub(r'[^\w\- ]', '', heading.strip().lower()).replace(' ', '-')


def test_table_of_contents_names_every_section():
    for path in ('docs/design.md', 'docs/configs.md'):
        text = read(path)
        toc = re.findall(r'^- \[.+?\]\(#([^)]+)\)$', text, re.M)
        sections = [anchor(h) for h in re.findall(r'^## (.+)$', text, re.M)]
        assert toc == sections, (path, sorted(set(toc) ^ set(sections)))


def expand(pattern: str):
    """``a{,_b}.py`` -> ``a.py``, ``a_b.py``."""
    match = re.search(r'\{([^}]*)\}', pattern)
    if not match:
        return [pattern]
    return list(itertools.chain.from_iterable(
        expand(pattern[:match.start()] + option + pattern[match.end():])
        for option in match.group(1).split(',')))


def layout_paths():
    block = read('docs/design.md').split('## Layout of the repository')[1].split('```')[1]
    paths = []
    for line in block.splitlines():
        first = re.split(r'\s{2,}', line.strip())[0] if line and not line[0].isspace() else ''
        for token in re.findall(r'[\w./{},-]+', first):
            if '/' in token:
                paths += [p.strip(',') for p in expand(token.strip(','))]
    return paths


def test_layout_lists_existing_paths_and_every_module_and_tool():
    listed = layout_paths()
    missing = [p for p in listed if not osp.exists(osp.join(ROOT, p))]
    assert not missing, missing
    folders = [p for p in listed if p.endswith('/')]
    files = set(p for p in listed if not p.endswith('/'))
    sources = [p for pattern in ('tnt_mm/**/*.py', 'tools/**/*.py', 'tools/**/*.sh')
               for p in glob.glob(pattern, root_dir=ROOT, recursive=True)]
    unlisted = [p for p in sources
                if p not in files and not any(p.startswith(f) for f in folders)
                and not (p.endswith('__init__.py') and p != 'tnt_mm/__init__.py')]
    assert not unlisted, unlisted
