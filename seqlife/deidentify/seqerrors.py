"""Errors of sequencing-file scrubbing (the ``deidentify`` stage).

Messages name the file (its base name only: directory names such as ``/data/<patient>/`` can
themselves identify someone) and the problem, never a sample name, read name or header value.
"""

from __future__ import annotations

from seqlife.exceptions import SeqlifeError

#: What a steward does when the input itself is damaged.
REPLACE_INPUT = "replace it with a complete copy from the raw zone and scrub again"
#: What a steward does when the surrogate map does not cover the file.
EXTEND_MAP = ("add the missing entry to the surrogate map held by the controller "
              "(GB/T 39725 §10.2 f) and scrub again")


class ScrubError(SeqlifeError):
    """A sequencing file could not be scrubbed; no output file was left behind."""

    stage = "deidentify"

    def __init__(self, file: str, file_format: str, problem: str,
                 action: str = REPLACE_INPUT) -> None:
        super().__init__(
            f"{file}: cannot de-identify this {file_format} file: {problem}. No output was "
            f"written; {action}.",
            file=file, format=file_format, problem=problem,
        )  # fmt: skip
        self.file = file
        self.file_format = file_format
        self.problem = problem
