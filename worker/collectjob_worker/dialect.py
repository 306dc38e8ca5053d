"""How the source CSV is spelled: delimiter, quote character, encoding and header.

Record boundaries are found by scanning raw bytes, so the encoding must be ASCII-compatible:
the delimiter, the quote character and LF must each be one byte that never occurs inside a
multi-byte character (true for UTF-8, Latin-1, Windows code pages, Shift-JIS; not UTF-16).
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass

from collectjob_api.contract import SourceConfig
from collectjob_worker.errors import PermanentError

UTF8_BOM = codecs.BOM_UTF8
_UTF8_CODECS = {"utf-8", "utf-8-sig", "ascii"}


@dataclass(frozen=True)
class Dialect:
    delimiter: str = ","
    quote: str = '"'
    encoding: str = "utf-8"
    header: bool = True

    def __post_init__(self) -> None:
        for what, char in (("delimiter", self.delimiter), ("quote", self.quote)):
            if len(char) != 1 or not char.isascii() or char in "\r\n":
                raise PermanentError(
                    f"source {what} must be one ASCII character other than CR or LF, got {char!r}"
                )
        if self.delimiter == self.quote:
            raise PermanentError(f"source delimiter and quote are both {self.delimiter!r}")
        try:
            probe = "\n\r" + self.delimiter + self.quote
            encoded = probe.encode(self.encoding, errors="replace")
        except LookupError:
            raise PermanentError(
                f"unknown source encoding {self.encoding!r}: not a text encoding Python knows"
            ) from None
        if encoded != probe.encode("ascii"):
            raise PermanentError(
                f"source encoding {self.encoding!r} is not ASCII-compatible; "
                "use one such as utf-8, latin-1 or cp1252"
            )

    @classmethod
    def from_source(cls, source: SourceConfig) -> Dialect:
        if source.format != "csv":
            raise PermanentError(f"source format {source.format!r} is not supported (only csv)")
        return cls(source.delimiter, source.quote, source.encoding, source.header)

    @property
    def delimiter_byte(self) -> int:
        return ord(self.delimiter)

    @property
    def quote_byte(self) -> int:
        return ord(self.quote)

    @property
    def is_utf8(self) -> bool:
        return codecs.lookup(self.encoding).name in _UTF8_CODECS

    @property
    def arrow_encoding(self) -> str:
        """The encoding name to hand pyarrow; "utf8" skips its transcoding step."""
        return "utf8" if self.is_utf8 else self.encoding

    @property
    def is_rfc4180(self) -> bool:
        """Whether source bytes are already valid UTF-8 RFC 4180 CSV, copyable as they stand."""
        return self.delimiter == "," and self.quote == '"' and self.is_utf8
