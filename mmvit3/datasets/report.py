# Copyright (c) mmvit3 authors. All rights reserved.
"""What a dataset check found: per split, the counts (images,
annotations) and each kind of problem with its count and first examples
(each naming its file and annotation id). Errors stop a run; warnings are
what the libraries drop or clip themselves, so that one bad object in a
large set does not stop it."""
from typing import Dict, List, Optional

ERROR = 'error'
WARNING = 'warning'
#: Examples kept (and shown) per kind of problem; the rest are counted.
EXAMPLES = 5


class Finding:
    """One kind of problem: its severity, count, first examples and what to
    do about it."""

    def __init__(self, what: str, severity: str, hint: str = '') -> None:
        self.what = what
        self.severity = severity
        self.hint = hint
        self.count = 0
        self.examples: List[str] = []

    def line(self, limit: int = EXAMPLES) -> str:
        shown = self.examples[:limit]
        more = f'; ... ({self.count - len(shown)} more)' if self.count > len(shown) else ''
        hint = f'\n        {self.hint}' if self.hint else ''
        return f'{self.count} {self.what}: {"; ".join(shown)}{more}{hint}'


class SplitReport:
    """The findings of one dataset of a split (``source``: its annotation
    file or image folder; ``key``: where the config sets it)."""

    def __init__(self, split: str, source: str, key: str = '') -> None:
        self.split = split
        self.source = source
        self.key = key
        self.images = 0
        self.annotations: Optional[int] = None  # None: no annotation file
        self.same_as = ''  # another split's report holds the findings
        self.findings: Dict[str, Finding] = {}

    def add(self, what: str, example: str, severity: str = ERROR, hint: str = '') -> None:
        finding = self.findings.get(what)
        if finding is None:
            finding = self.findings[what] = Finding(what, severity, hint)
        finding.count += 1
        if len(finding.examples) < EXAMPLES:
            finding.examples.append(example)

    def count(self, severity: str) -> int:
        return sum(f.count for f in self.findings.values() if f.severity == severity)

    def of(self, severity: str) -> List[Finding]:
        return [f for f in self.findings.values() if f.severity == severity]

    def head(self) -> str:
        if self.same_as:
            return f'{self.split}: {self.source}: the data of {self.same_as} (checked there)'
        counts = [f'{self.images} images']
        if self.annotations is not None:
            counts.append(f'{self.annotations} annotations')
        errors, warnings = self.count(ERROR), self.count(WARNING)
        state = 'clean' if not errors + warnings else f'{errors} errors, {warnings} warnings'
        return f'{self.split}: {self.source}: {", ".join(counts)}: {state}'

    def lines(self, limit: int = EXAMPLES) -> List[str]:
        """The head line, then one line per kind of problem, errors first."""
        found = self.of(ERROR) + self.of(WARNING)
        return [self.head()] + [f'    {f.severity}: {f.line(limit)}' for f in found]


class DataReport:
    """The reports of a config's splits, in order."""

    def __init__(self) -> None:
        self.splits: List[SplitReport] = []

    def add(self, report: SplitReport) -> SplitReport:
        self.splits.append(report)
        return report

    def count(self, severity: str) -> int:
        return sum(r.count(severity) for r in self.splits)

    @property
    def errors(self) -> int:
        return self.count(ERROR)

    @property
    def warnings(self) -> int:
        return self.count(WARNING)

    def summary(self, limit: int = EXAMPLES) -> str:
        lines = [line for r in self.splits for line in r.lines(limit)]
        lines.append(f'{self.errors} errors, {self.warnings} warnings '
                     f'(errors stop a run; warnings are annotations the library drops '
                     f'or clips itself)')
        return '\n'.join(lines)

    def warning_lines(self, limit: int = EXAMPLES) -> List[str]:
        """One line per kind of warning: ``[key] source: count what: examples``."""
        return [f'[{r.key}] {r.source}: {f.line(limit)}' if r.key else
                f'{r.source}: {f.line(limit)}' for r in self.splits for f in r.of(WARNING)]

    def error_message(self, limit: int = EXAMPLES) -> str:
        """The errors, per split, for the exception that stops a run."""
        lines = ['The dataset check found data that cannot be trained or evaluated on:']
        for r in self.splits:
            errors = r.of(ERROR)
            if errors:
                lines.append(f'  {r.split}: {r.source}' + (f' [{r.key}]' if r.key else ''))
                lines += [f'    {f.line(limit)}' for f in errors]
        lines.append('(python tools/check_dataset.py CONFIG lists the warnings too; '
                     'check_annotations = False in the config skips the check)')
        return '\n'.join(lines)
