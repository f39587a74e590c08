"""Prints the library corpus's report (corpus.libraries.REPORT) at the end of the run, pass or fail."""

from __future__ import annotations


def pytest_terminal_summary(terminalreporter):
    from corpus import libraries

    if libraries.REPORT:
        terminalreporter.section("library corpus")
        for line in libraries.REPORT:
            terminalreporter.write_line(line)
