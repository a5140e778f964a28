"""The documentation agrees with the repository: links, commands and bundle config keys.

Fast checks only: no training, no subprocess; the CLI is introspected in this process.

(a) Every relative link and image (``[text](target)``, ``![alt](target)`` and reference
    definitions ``[label]: target``) in ``README.md``, ``docs/*.md`` and ``docs/research/*.md`` points to an existing
    file or folder. Links inside fenced code blocks and inline code are not links; web
    addresses (``http:``, ``https:``, ``mailto:``) are not checked. A ``#fragment`` into a
    Markdown file (or ``#fragment`` alone, into the same file) must name one of its headings,
    as GitHub makes anchors from them. ``docs/index.md`` links every other ``docs/*.md``.
(b) Every command of the Typer app ``segcft.cli.main.app``, nested groups included, is named
    by its full path (e.g. ``segcft data jsrt``) in ``docs/cli.md``.
(c) Every top-level key of every bundle's ``configs/train.json``, ``configs/evaluate.json``
    and ``configs/inference.json`` appears as inline code (`` `key` ``) in
    ``docs/bundles.md`` or in that bundle's ``docs/README.md``. Skipped: ``imports`` (the
    Python imports of the config) and keys starting with ``_`` (MONAI's reserved keys such
    as ``_meta_`` and ``_requires_``). Inline code is required so that words such as "run"
    or "train" in prose do not count as documenting the key of that name.
(d) The generated parts of ``docs/cli.md`` (option tables, from the Typer app) and of
    ``docs/bundles.md`` (config key tables, from the JSON configs), between
    ``<!-- BEGIN GENERATED name -->`` and ``<!-- END GENERATED name -->``, equal what this
    module generates now. After changing a command or a config, regenerate them with
    ``python tests/test_docs.py`` (inside the environment where segcft is installed).
(e) Every ``segcft bench cft`` command in the docs whose ``--out`` report is kept in
    ``docs/bench`` gives, parsed by the CLI under its current defaults, the settings that
    report recorded: defaults change, and a command that leaves a setting to them must still
    reproduce its figures. Commands are read from fenced ``bash`` blocks, with backslash
    continuations joined, ``NAME="..."`` assignments and ``for v in ...; do ... done`` loops
    expanded; a ``...`` stands for the previous command's inputs (``--data``, ``--generator``,
    ``--segmentors``, ``--config-file``, ``--set``).
"""

from __future__ import annotations

import inspect
import json
import re
import shlex
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
BUNDLES = REPO / "bundles"
CLI_DOC = DOCS / "cli.md"
BUNDLES_DOC = DOCS / "bundles.md"
CHECKED_CONFIGS = ("train.json", "evaluate.json", "inference.json")
SKIPPED_KEYS = ("imports",)
#: Bundles in the order docs/bundles.md presents them; any other bundle folder follows, sorted.
BUNDLE_ORDER = ("cxr_segmentor", "ccta_segmentor", "cxr_generator", "ccta_generator", "cxr_cft", "ccta_cft")


# --------------------------------------------------------------------------- (a) links

FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.M)
EXTERNAL = re.compile(r"^(?:[a-z][a-z0-9+.-]*:|//)", re.I)


def markdown_files() -> list[Path]:
    return [REPO / "README.md", *sorted(DOCS.glob("*.md")), *sorted(DOCS.glob("research/*.md"))]


def link_targets(text: str) -> list[str]:
    """Link and image targets of a Markdown text, outside code."""
    text = INLINE_CODE.sub("", FENCE.sub("", text))
    return INLINE_LINK.findall(text) + REFERENCE_DEF.findall(text)


HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.M)


def anchors(path: Path) -> set[str]:
    """GitHub's heading anchors of a Markdown file: lower case, punctuation dropped, spaces to '-', '-N' for repeats."""
    seen: dict[str, int] = {}
    out = set()
    for heading in HEADING.findall(FENCE.sub("", path.read_text(encoding="utf-8"))):
        slug = re.sub(r"[^\w\- ]", "", heading.replace("`", "").strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        out.add(slug if count == 0 else f"{slug}-{count}")
    return out


def broken_links(path: Path) -> list[str]:
    """Targets that name a missing file, or a missing heading of a Markdown file (``file.md#heading``, ``#heading``)."""
    broken = []
    for target in link_targets(path.read_text(encoding="utf-8")):
        if EXTERNAL.match(target):
            continue
        file_part, _, fragment = target.partition("#")
        dest = path.parent / file_part.split("?", 1)[0] if file_part else path
        if not dest.exists():
            broken.append(target)
        elif fragment and dest.suffix == ".md" and dest.is_file() and fragment not in anchors(dest):
            broken.append(target)
    return broken


def test_relative_links_and_images_point_to_existing_files():
    problems = {str(p.relative_to(REPO)): broken_links(p) for p in markdown_files()}
    problems = {k: v for k, v in problems.items() if v}
    assert not problems, f"links to missing files: {problems}"


def test_the_link_checker_sees_links_and_ignores_code(tmp_path):
    text = "a [x](docs/a.md#part) ![f](figures/b.png) `[no](c.md)`\n```\n[no](d.md)\n```\n[ref]: e.md\n"
    assert link_targets(text) == ["docs/a.md#part", "figures/b.png", "e.md"]
    page = tmp_path / "page.md"
    page.write_text("# Counterfactuals: abduction, action (CFT)\n## `x*` and x\n## Notes\n## Notes\n```\n# not a heading\n```\n", encoding="utf-8")
    assert anchors(page) == {"counterfactuals-abduction-action-cft", "x-and-x", "notes", "notes-1"}
    page.write_text(page.read_text(encoding="utf-8") + "[a](#notes-1) [b](#not-a-heading) [c](page.md#x-and-x) [d](missing.md)\n", encoding="utf-8")
    assert broken_links(page) == ["#not-a-heading", "missing.md"]


def test_index_links_every_doc():
    linked = {t.partition("#")[0] for t in link_targets((DOCS / "index.md").read_text(encoding="utf-8"))}
    missing = [p.name for p in sorted(DOCS.glob("*.md")) if p.name != "index.md" and p.name not in linked]
    assert not missing, f"docs/index.md does not link {missing}"


# --------------------------------------------------------------------------- (b) commands


def cli_root():
    import typer

    from segcft.cli.main import app

    return typer.main.get_command(app)


def command_paths(command=None, prefix: tuple[str, ...] = ("segcft",)) -> list[tuple[tuple[str, ...], object]]:
    """``(path, command)`` for every group and command below the root, in registration order."""
    command = cli_root() if command is None else command
    out = []
    for name, sub in getattr(command, "commands", {}).items():
        path = (*prefix, name)
        out.append((path, sub))
        out += command_paths(sub, path)
    return out


def leaf_commands() -> list[tuple[tuple[str, ...], object]]:
    return [(path, c) for path, c in command_paths() if not getattr(c, "commands", None)]


def test_every_command_is_in_cli_doc():
    doc = CLI_DOC.read_text(encoding="utf-8")
    missing = [" ".join(path) for path, _ in command_paths() if " ".join(path) not in doc]
    assert not missing, f"docs/cli.md does not mention {missing}"


# --------------------------------------------------------------------------- (c) bundle keys


def bundle_dirs() -> list[Path]:
    found = sorted(p for p in BUNDLES.iterdir() if (p / "configs").is_dir())
    order = {name: i for i, name in enumerate(BUNDLE_ORDER)}
    return sorted(found, key=lambda p: (order.get(p.name, len(order)), p.name))


def load_config(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def documented_keys(path: Path) -> list[str]:
    return [k for k in load_config(path) if k not in SKIPPED_KEYS and not k.startswith("_")]


def test_every_bundle_config_key_is_documented():
    bundles_doc = BUNDLES_DOC.read_text(encoding="utf-8")
    missing = []
    for bundle in bundle_dirs():
        readme = bundle / "docs" / "README.md"
        text = bundles_doc + (readme.read_text(encoding="utf-8") if readme.is_file() else "")
        for name in CHECKED_CONFIGS:
            config = bundle / "configs" / name
            if config.is_file():
                missing += [f"{bundle.name}/{name}: {k}" for k in documented_keys(config) if f"`{k}`" not in text]
    assert not missing, f"config keys documented neither in docs/bundles.md nor in the bundle README: {missing}"


# --------------------------------------------------------------------------- (d) generated sections


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def prose(text: str) -> str:
    """Help text as Markdown table text: no HTML tags, emphasis or column breaks by accident."""
    parts = re.split(r"(`[^`]*`)", text)  # inline code stays as it is
    for i in range(0, len(parts), 2):
        for char, escaped in (("<", "&lt;"), (">", "&gt;"), ("*", "\\*"), ("_", "\\_")):
            parts[i] = parts[i].replace(char, escaped)
    return cell("".join(parts))


def code(text: str) -> str:
    return f"`{text}`"


def annotation_of(command, param) -> str:
    """The Python annotation of ``param`` on the command's function (a string under postponed evaluation)."""
    signature = inspect.signature(command.callback)  # follows functools.wraps to the typer function
    annotation = signature.parameters[param.name].annotation
    return annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))


TYPE_NAMES = {"Path": "PATH", "str": "TEXT", "int": "INTEGER", "float": "NUMBER", "bool": "flag"}


def value_of(command, param) -> str:
    if getattr(param, "is_flag", False):
        return "flag"
    annotation = re.sub(r"^Optional\[(.*)\]$", r"\1", annotation_of(command, param))
    repeatable = annotation.startswith("list[")
    base = annotation[5:-1] if repeatable else annotation
    text = TYPE_NAMES.get(base, base)
    low = getattr(param, "min", None)
    if low is None:
        low = getattr(getattr(param, "type", None), "min", None)
    if low is not None:
        text += f" >= {low}"
    return text + (", repeatable" if repeatable else "")


def default_of(param) -> str:
    if param.required:
        return "required"
    default = param.default
    if getattr(param, "is_flag", False) and param.secondary_opts:
        return code(param.opts[0] if default else param.secondary_opts[0])
    if default is None or (param.multiple and not default):
        return "none"
    return code(str(default))


def render_cli() -> str:
    lines = ["| Command | What it does |", "|---|---|"]
    for path, command in command_paths():
        kind = "group" if getattr(command, "commands", None) else "command"
        summary = inspect.cleandoc(command.help or "").split("\n\n")[0]
        lines.append(f"| {code(' '.join(path))} | {prose(summary)}{' (group)' if kind == 'group' else ''} |")
    for path, command in leaf_commands():
        lines += ["", f"### {' '.join(path)}", "", prose(inspect.cleandoc(command.help or "")), ""]
        params = [p for p in command.params if p.name != "help" and not getattr(p, "hidden", False)]
        if not params:
            lines.append("No options besides `--help`.")
            continue
        lines += ["| Option | Value | Default | Description |", "|---|---|---|---|"]
        for p in params:
            names = " / ".join(code(o) for o in [*p.opts, *p.secondary_opts])
            lines.append(f"| {names} | {value_of(command, p)} | {default_of(p)} | {prose(p.help or '')} |")
    return "\n".join(lines)


TARGET = "_target_"
COMPONENT_EXPR = re.compile(r"bundle\.|torch\.|monai\.|pathlib\.|idist\.auto|\.to\(|\.module\b")


def has_target(value) -> bool:
    if isinstance(value, dict):
        return TARGET in value or any(has_target(v) for v in value.values())
    if isinstance(value, list):
        return any(has_target(v) for v in value)
    return False


def is_expression(value) -> bool:
    return isinstance(value, str) and value.startswith(("$", "@", "%"))


def has_expression(value) -> bool:
    if isinstance(value, dict):
        return any(has_expression(v) for v in value.values())
    if isinstance(value, list):
        return any(has_expression(v) for v in value)
    return is_expression(value)


def is_setting(value) -> bool:
    """A value users override with ``--key value``: a literal, or an expression that builds no object."""
    if isinstance(value, (dict, list)):
        return not has_target(value) and not has_expression(value)
    if is_expression(value):
        return not COMPONENT_EXPR.search(value)
    return True


def short_expression(text: str) -> str:
    """Long expressions are cut at their first call: ``$bundle.build_deep_scm(...)``."""
    if len(text) <= 60:
        return text
    return text[: text.index("(")] + "(...)" if "(" in text else text[:57] + "..."


def component_summary(value) -> str:
    if isinstance(value, dict):
        if TARGET in value:
            return code(str(value[TARGET]))
        parts = []
        for k, v in value.items():
            inner = component_summary(v) if isinstance(v, (dict, list)) and has_target(v) else ""
            parts.append(code(k) + (f" ({inner})" if inner else ""))
        return "{" + ", ".join(parts) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(component_summary(v) for v in value) + "]"
    if isinstance(value, str):
        return code(short_expression(value)) if is_expression(value) else code(json.dumps(value))
    return code(json.dumps(value))


def setting_summary(value) -> str:
    return code(value if isinstance(value, str) and is_expression(value) else json.dumps(value))


def config_table(configs: dict[str, dict], settings: bool) -> list[str]:
    """One row per key: its value (per config where they differ) and the configs that define it."""
    keys: list[str] = []
    for config in configs.values():
        keys += [k for k in config if k not in keys and k not in SKIPPED_KEYS and not k.startswith("_")]
    chosen = [k for k in keys if any(is_setting(c[k]) for c in configs.values() if k in c) == settings]
    if not chosen:
        return []
    lines = ["| Key | Default | Defined in |", "|---|---|---|"]
    for key in chosen:
        values = {name: config[key] for name, config in configs.items() if key in config}
        shown = {name: setting_summary(v) if settings and is_setting(v) else component_summary(v) for name, v in values.items()}
        if len(set(shown.values())) == 1:
            default = next(iter(shown.values()))
        else:
            groups: dict[str, list[str]] = {}
            for name, text in shown.items():
                groups.setdefault(text, []).append(name.removesuffix(".json"))
            default = "<br>".join(f"{', '.join(names)}: {text}" for text, names in groups.items())
        where = "all" if len(values) == len(configs) > 1 else ", ".join(code(n) for n in values)
        lines.append(f"| {code(key)} | {cell(default)} | {where} |")
    return lines


def render_bundle(bundle: Path) -> str:
    folder = bundle / "configs"
    main = {n: load_config(folder / n) for n in CHECKED_CONFIGS if (folder / n).is_file()}
    extra = {p.name: load_config(p) for p in sorted(folder.glob("*.json"))
             if p.name not in CHECKED_CONFIGS and p.name != "metadata.json"}
    lines = [f"Settings of `{bundle.name}` (override with `--key value`):", ""]
    lines += config_table(main, settings=True) or ["(none)"]
    lines += ["", f"Components and workflow steps of `{bundle.name}` (objects the configs build; "
              "expressions longer than 60 characters are shortened to their call):", ""]
    lines += config_table(main, settings=False) or ["(none)"]
    for name, config in extra.items():
        extends = " (a `+key` extends that config's list instead)" if any(k.startswith("+") for k in config) else ""
        lines += ["", f"Keys that `{name}` replaces when it is listed after another config in `--config_file`{extends}:", ""]
        lines += ["| Key | Value |", "|---|---|"]
        lines += [f"| {code(k)} | {cell(setting_summary(v) if is_setting(v) else component_summary(v))} |"
                  for k, v in config.items() if not k.startswith("_")]
    return "\n".join(lines)


def generated_sections() -> dict[Path, dict[str, str]]:
    sections = {CLI_DOC: {"cli": render_cli()}, BUNDLES_DOC: {}}
    for bundle in bundle_dirs():
        sections[BUNDLES_DOC][f"bundle {bundle.name}"] = render_bundle(bundle)
    return sections


def block(name: str) -> re.Pattern:
    return re.compile(rf"(<!-- BEGIN GENERATED {re.escape(name)} -->\n)(.*?)(<!-- END GENERATED {re.escape(name)} -->)", re.S)


def stale_sections() -> list[str]:
    stale = []
    for path, sections in generated_sections().items():
        text = path.read_text(encoding="utf-8")
        for name, content in sections.items():
            match = block(name).search(text)
            if match is None or match.group(2) != content + "\n":
                stale.append(f"{path.relative_to(REPO)}: {name}")
    return stale


def write_sections() -> list[str]:
    """Rewrite every generated section in place; return the sections that have no markers yet."""
    missing = []
    for path, sections in generated_sections().items():
        text = path.read_text(encoding="utf-8")
        for name, content in sections.items():
            pattern = block(name)
            if pattern.search(text) is None:
                missing.append(f"{path.relative_to(REPO)}: {name}")
                continue
            text = pattern.sub(lambda m: m.group(1) + content + "\n" + m.group(3), text)
        path.write_text(text, encoding="utf-8")
    return missing


def test_generated_sections_are_current():
    stale = stale_sections()
    assert not stale, f"generated documentation is out of date or missing: {stale}; run `python tests/test_docs.py`"


# --------------------------------------------------------------------------- (e) bench cft commands

BASH_BLOCK = re.compile(r"^```bash\n(.*?)^```", re.S | re.M)
ASSIGNMENT = re.compile(r"^([A-Za-z_]\w*)=(.*)$")
FOR_LOOP = re.compile(r"^for (\w+) in ([^;]+); do$")
INPUTS = ("--data", "--generator", "--segmentors", "--config-file", "--set")


def expand(line: str, variables: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: variables.get(m.group(1), m.group(0)), line)


def bench_cft_commands(text: str) -> list[list[str]]:
    """The argument lists (after ``segcft bench cft``) of the commands in a Markdown text's bash blocks."""
    commands: list[list[str]] = []
    for block in BASH_BLOCK.findall(text):
        variables: dict[str, str] = {}
        inputs: list[str] = []
        loop: tuple[str, list[str]] | None = None
        for raw in re.sub(r"\\\n\s*", " ", block).splitlines():
            line = raw.strip()
            if m := FOR_LOOP.match(line):
                loop = (m.group(1), m.group(2).split())
                continue
            if line == "done":
                loop = None
                continue
            if m := ASSIGNMENT.match(line):
                variables[m.group(1)] = shlex.split(expand(m.group(2), variables))[0]
                continue
            if not line.startswith("segcft bench cft "):
                continue
            for value in loop[1] if loop else [None]:
                scope = {**variables, loop[0]: value} if loop else variables
                args = shlex.split(expand(line, scope))[3:]
                if "..." in args:
                    i = args.index("...")
                    args = args[:i] + inputs + args[i + 1:]
                inputs = [a for k, v in zip(args, args[1:]) if k in INPUTS for a in (k, v)]
                commands.append(args)
    return commands


def test_bench_cft_commands_give_their_reports_settings():
    import typer.main

    from segcft.cli.main import app
    from segcft.evaluate.summary import SETTINGS, UNRECORDED

    settings = (*SETTINGS, "regressor_epochs", "seed")
    # what reports written before an option existed did: bench summary's assumptions, and neither
    # relative targets nor an EMA, which did not exist yet
    implied = {**{k: v for k, v in UNRECORDED.items() if k in settings}, "relative_targets": False, "ema_decay": 0.0}

    cft = typer.main.get_command(app).commands["bench"].commands["cft"]
    checked, wrong = 0, []
    for path in markdown_files():
        for args in bench_cft_commands(path.read_text(encoding="utf-8")):
            params = cft.make_context("cft", list(args)).params
            out = Path(params["out"])
            # reports are kept under docs/bench (commands name them there or by their file name)
            report_path = REPO / out if out.parts[:2] == ("docs", "bench") else DOCS / "bench" / out.name
            if not report_path.exists():
                continue
            report = json.loads(report_path.read_text(encoding="utf-8"))
            recorded = {**implied, **{k: report[k] for k in settings if k in report}}
            differ = {k: (params[k], v) for k, v in recorded.items() if params[k] != v}
            if set(params["methods"].split(",")) != set(report["methods"]):
                differ["methods"] = (params["methods"], sorted(report["methods"]))
            if differ:
                wrong.append(f"{path.name}: {report_path.name}: (command, report) {differ}")
            checked += 1
    assert checked >= 20, f"only {checked} bench cft commands found: is the parser still reading the docs?"
    assert not wrong, "\n".join(wrong)


def test_the_command_reader_expands_variables_loops_and_ellipses():
    text = """```bash
C="--data d.json --segmentors s.json"
for s in 1 2; do
  segcft bench cft $C --generator g$s \\
      --steps 9 --out runs/bench/x$s.json
done
segcft bench cft ... --methods seg --out y.json
```
"""
    assert bench_cft_commands(text) == [
        ["--data", "d.json", "--segmentors", "s.json", "--generator", "g1", "--steps", "9", "--out", "runs/bench/x1.json"],
        ["--data", "d.json", "--segmentors", "s.json", "--generator", "g2", "--steps", "9", "--out", "runs/bench/x2.json"],
        ["--data", "d.json", "--segmentors", "s.json", "--generator", "g2", "--methods", "seg", "--out", "y.json"],
    ]


if __name__ == "__main__":
    absent = write_sections()
    for entry in absent:
        print(f"no markers for {entry}: add <!-- BEGIN GENERATED ... --> / <!-- END GENERATED ... --> lines", file=sys.stderr)
    sys.exit(1 if absent else 0)
